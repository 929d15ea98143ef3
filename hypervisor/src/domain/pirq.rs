//! The machine's interrupt lines that Domain0 asked for (Xen's "pirqs"), as state: which
//! are level-triggered and which of those Domain0 has not finished with. Pure, so the
//! protocol is host-tested; `domain::passthrough` carries it out on the host I/O APIC and
//! on Domain0's virtual one.
//!
//! An edge-triggered line becomes an edge on Domain0's pin. A level-triggered line stays
//! asserted on the host until Domain0's driver has cleared its cause, so when it fires
//! the host pin is masked (else it would fire again at once) and Domain0's pin is raised;
//! when Domain0 EOIs the vector of that pin, its pin is lowered and the host pin
//! unmasked. If the device still asserts, the host delivers again.

/// What to do with a line that fired on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fire {
    /// Edge-triggered: an edge on Domain0's pin.
    Pulse,
    /// Level-triggered: raise Domain0's pin and keep it high (the host pin is masked).
    Raise,
    /// Level-triggered and already raised: nothing new (a stale delivery).
    AlreadyRaised,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pirqs {
    /// Lines routed to Domain0 (bit n = GSI n).
    routed: u32,
    level: u32,
    /// Level lines raised on Domain0's pin and not yet EOId.
    raised: u32,
}

impl Pirqs {
    pub const fn new() -> Self {
        Pirqs { routed: 0, level: 0, raised: 0 }
    }

    /// Domain0 routed `gsi` (below 32) with this trigger mode.
    pub fn route(&mut self, gsi: u32, level: bool) {
        let Some(bit) = 1u32.checked_shl(gsi) else { return };
        self.routed |= bit;
        self.raised &= !bit;
        if level {
            self.level |= bit;
        } else {
            self.level &= !bit;
        }
    }

    pub fn is_routed(&self, gsi: u32) -> bool {
        1u32.checked_shl(gsi).is_some_and(|bit| self.routed & bit != 0)
    }

    pub fn is_level(&self, gsi: u32) -> bool {
        1u32.checked_shl(gsi).is_some_and(|bit| self.level & bit != 0)
    }

    /// `gsi` fired on the host; `None` if it is not routed to Domain0.
    pub fn fired(&mut self, gsi: u32) -> Option<Fire> {
        let bit = 1u32.checked_shl(gsi)?;
        if self.routed & bit == 0 {
            return None;
        }
        if self.level & bit == 0 {
            return Some(Fire::Pulse);
        }
        if self.raised & bit != 0 {
            return Some(Fire::AlreadyRaised);
        }
        self.raised |= bit;
        Some(Fire::Raise)
    }

    /// Domain0 EOId a vector that its pins `pins` (bit n = pin n) are programmed with:
    /// returns the raised level lines among them, which are now lowered on Domain0's
    /// side and to be unmasked on the host.
    pub fn eoi(&mut self, pins: u32) -> u32 {
        let done = self.raised & pins;
        self.raised &= !done;
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edge_line_pulses_every_time() {
        let mut p = Pirqs::new();
        p.route(4, false);
        assert_eq!(p.fired(4), Some(Fire::Pulse));
        assert_eq!(p.fired(4), Some(Fire::Pulse));
        assert_eq!(p.eoi(1 << 4), 0, "nothing to unmask for an edge line");
    }

    #[test]
    fn a_level_line_is_raised_once_until_domain0_eois_its_vector() {
        let mut p = Pirqs::new();
        p.route(9, true);
        assert_eq!(p.fired(9), Some(Fire::Raise));
        assert_eq!(p.fired(9), Some(Fire::AlreadyRaised));
        assert_eq!(p.eoi(1 << 11), 0, "an EOI for another pin's vector");
        assert_eq!(p.eoi(1 << 9 | 1 << 11), 1 << 9, "lower and unmask line 9");
        assert_eq!(p.eoi(1 << 9), 0, "only once");
        assert_eq!(p.fired(9), Some(Fire::Raise), "fires again while the device asserts");
    }

    #[test]
    fn lines_not_routed_are_not_domain0s() {
        let mut p = Pirqs::new();
        assert_eq!(p.fired(9), None);
        assert_eq!(p.fired(40), None);
        p.route(40, true);
        assert!(!p.is_routed(40), "beyond the bitmap: ignored");
        p.route(5, true);
        p.route(5, false);
        assert!(p.is_routed(5) && !p.is_level(5), "routed again as edge");
    }
}
