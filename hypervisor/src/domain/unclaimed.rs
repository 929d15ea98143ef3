//! Accesses nobody claims: I/O ports and guest-physical addresses with no device behind
//! them. A PC answers them the way its buses do (reads float to all ones, writes go
//! nowhere), and so do we; what is left to decide is how they are remembered and told.
//!
//! [`Tally`] keeps the first `N` distinct keys (ports, or 4 KiB pages) with a count each
//! and every other access in one sum: fixed size on purpose, so a guest sweeping all
//! 65,536 ports or a whole address range cannot grow the hypervisor's heap.
//! [`Tally::count`] also says whether this access deserves a log line: the first one to
//! each tracked key, then one at every power of two of the total from 1024 on. That
//! bounds the log to about `N` + 54 lines per domain, whatever the guest does, without
//! reading a clock, and still shows that a flood goes on.

/// A bounded count of accesses per key (see the module's comment).
#[derive(Debug, Clone)]
pub struct Tally<K, const N: usize> {
    keys: [(K, u64); N],
    len: usize,
    /// Accesses to keys beyond the tracked ones.
    pub others: u64,
    /// Every access counted.
    pub total: u64,
}

impl<K: Copy + Default + PartialEq, const N: usize> Default for Tally<K, N> {
    fn default() -> Self {
        Tally { keys: [(K::default(), 0); N], len: 0, others: 0, total: 0 }
    }
}

/// Whether an access should be logged, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The first access to this key.
    First,
    /// The total reached this power of two (from 1024 on).
    Total(u64),
    /// Nothing to say.
    Quiet,
}

/// The total from which every power of two is reported.
const LOUD_FROM: u64 = 1024;

impl<K: Copy + PartialEq, const N: usize> Tally<K, N> {
    pub const TRACKED: usize = N;

    /// Counts one access to `key`.
    pub fn count(&mut self, key: K) -> Report {
        self.total = self.total.saturating_add(1);
        let first = if let Some(e) = self.keys[..self.len].iter_mut().find(|e| e.0 == key) {
            e.1 = e.1.saturating_add(1);
            false
        } else if let Some(slot) = self.keys.get_mut(self.len) {
            *slot = (key, 1);
            self.len += 1;
            true
        } else {
            self.others = self.others.saturating_add(1);
            false
        };
        if first {
            Report::First
        } else if self.total >= LOUD_FROM && self.total.is_power_of_two() {
            Report::Total(self.total)
        } else {
            Report::Quiet
        }
    }

    /// The tracked keys and their counts, in the order they were first seen.
    pub fn tracked(&self) -> &[(K, u64)] {
        &self.keys[..self.len]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Reads and writes of I/O ports nobody claims, per port.
pub type UnclaimedPorts = Tally<u16, 32>;

/// Accesses to guest-physical addresses with no RAM and no device, per 4 KiB page.
#[derive(Debug, Clone, Default)]
pub struct UnclaimedMmio {
    pub pages: Tally<u64, 16>,
    pub reads: u64,
    pub writes: u64,
}

impl UnclaimedMmio {
    /// Counts an access to `gpa`; the answer says whether to log it.
    pub fn count(&mut self, gpa: u64, write: bool) -> Report {
        if write {
            self.writes = self.writes.saturating_add(1);
        } else {
            self.reads = self.reads.saturating_add(1);
        }
        self.pages.count(gpa & !0xFFF)
    }
}

/// What a read of `size` bytes (1, 2, 4 or 8) of nothing returns: all ones, as a PC's
/// buses float (Xen and QEMU answer the same).
pub fn floating(size: u8) -> u64 {
    if size >= 8 { u64::MAX } else { (1u64 << (u32::from(size) * 8)) - 1 }
}

#[cfg(test)]
mod tests {
    use super::{Report, UnclaimedMmio, UnclaimedPorts, floating};

    #[test]
    fn a_sweep_of_every_port_keeps_the_tally_bounded() {
        let mut t = UnclaimedPorts::default();
        for _ in 0..2 {
            for port in 0..=u16::MAX {
                t.count(port);
            }
        }
        assert_eq!(t.tracked().len(), UnclaimedPorts::TRACKED);
        assert!(t.tracked().iter().all(|&(_, n)| n == 2));
        assert_eq!(t.others, 2 * 65536 - 2 * UnclaimedPorts::TRACKED as u64);
        assert_eq!(t.total, 2 * 65536);
    }

    #[test]
    fn logging_is_bounded_whatever_the_guest_does() {
        let mut m = UnclaimedMmio::default();
        let mut lines = 0;
        for i in 0..1_000_000u64 {
            if m.count(0xFED0_0000 + i * 8, i % 3 == 0) != Report::Quiet {
                lines += 1;
            }
        }
        // 16 first pages, then powers of two 1024..=524288 (10 of them).
        assert_eq!(lines, 16 + 10);
        assert_eq!(m.reads + m.writes, 1_000_000);
        assert_eq!(m.pages.tracked()[0], (0xFED0_0000, 512));
    }

    #[test]
    fn the_first_access_to_a_page_is_told_and_repeats_are_not() {
        let mut m = UnclaimedMmio::default();
        assert_eq!(m.count(0xFED0_0010, true), Report::First);
        assert_eq!(m.count(0xFED0_0F00, false), Report::Quiet, "same page");
        assert_eq!(m.count(0xFF00_0000, false), Report::First);
        for _ in 3..1023 {
            assert_eq!(m.count(0xFF00_0000, false), Report::Quiet);
        }
        assert_eq!(m.count(0xFF00_0000, false), Report::Total(1024));
        assert_eq!((m.reads, m.writes), (1023, 1));
    }

    #[test]
    fn nothing_reads_as_all_ones_of_the_access_size() {
        assert_eq!(floating(1), 0xFF);
        assert_eq!(floating(2), 0xFFFF);
        assert_eq!(floating(4), 0xFFFF_FFFF);
        assert_eq!(floating(8), u64::MAX);
    }
}
