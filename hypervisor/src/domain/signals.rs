//! What reaches a vCPU from outside while it may be running on another CPU: fixed
//! interrupts (IPIs from its siblings, device interrupts), NMIs, LINT1 edges, INIT and
//! STARTUP.
//!
//! The vCPU's own state (its local APIC among it) sits behind its lock, which the CPU
//! running it holds for a whole slice. Senders therefore never take that lock: they set
//! bits here, lock-free, and kick the CPU the vCPU runs on (`running_on`). The vCPU
//! drains the bits into its local APIC before every VM entry; while it is blocked, the
//! scheduler's wake-up scan drains them. Each vCPU also publishes its APIC addressing
//! (ID, logical destination) here, so a sender can tell whom an IPI is for.

use crate::devices::lapic::Addressing;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

pub struct VcpuSignals {
    irr: [AtomicU64; 4],
    /// Which posted vectors are level-triggered (I/O APIC level entries): the local APIC
    /// sets their TMR bit so that their EOI goes back to the I/O APIC.
    level: [AtomicU64; 4],
    /// An NMI (NMI IPI, I/O APIC entry in NMI mode, LINT1): like the CPU's NMI latch,
    /// any number of them before the vCPU looks count as one.
    nmi: AtomicBool,
    /// A rising edge on LINT1 (Domain0's `trigger ID nmi`), which the vCPU's local APIC
    /// turns into what its LVT LINT1 entry says.
    lint1: AtomicBool,
    init: AtomicBool,
    /// `0x100 | vector` while a STARTUP IPI waits, 0 otherwise.
    sipi: AtomicU32,
    /// The CPU running the vCPU, plus one (0: not running).
    running_on: AtomicU32,
    addressing: spin::Mutex<Addressing>,
}

/// Everything that was posted since the last drain.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Posted {
    pub vectors: [u64; 4],
    pub level: [u64; 4],
    pub nmi: bool,
    pub lint1: bool,
    pub init: bool,
    pub sipi: Option<u8>,
}

impl Posted {
    pub fn vectors(&self) -> impl Iterator<Item = u8> + '_ {
        (0u16..256).filter(|v| self.vectors[usize::from(v / 64)] & (1 << (v % 64)) != 0).map(|v| v as u8)
    }

    /// Whether `vector` was posted level-triggered.
    pub fn is_level(&self, vector: u8) -> bool {
        self.level[usize::from(vector / 64)] & (1 << (vector % 64)) != 0
    }
}

impl VcpuSignals {
    pub fn new(addressing: Addressing) -> Self {
        VcpuSignals {
            irr: [const { AtomicU64::new(0) }; 4],
            level: [const { AtomicU64::new(0) }; 4],
            nmi: AtomicBool::new(false),
            lint1: AtomicBool::new(false),
            init: AtomicBool::new(false),
            sipi: AtomicU32::new(0),
            running_on: AtomicU32::new(0),
            addressing: spin::Mutex::new(addressing),
        }
    }

    /// A fixed interrupt with `vector` (16..=255; lower vectors are illegal and dropped).
    pub fn post_interrupt(&self, vector: u8) {
        self.post(vector, false);
    }

    /// A fixed interrupt, level- or edge-triggered. The trigger mode is written before
    /// the request bit, so whoever sees the request sees its mode.
    pub fn post(&self, vector: u8, level: bool) {
        if vector < 16 {
            return;
        }
        let (word, bit) = (usize::from(vector / 64), 1u64 << (vector % 64));
        if level {
            self.level[word].fetch_or(bit, Ordering::AcqRel);
        } else {
            self.level[word].fetch_and(!bit, Ordering::AcqRel);
        }
        self.irr[word].fetch_or(bit, Ordering::AcqRel);
    }

    pub fn post_nmi(&self) {
        self.nmi.store(true, Ordering::Release);
    }

    pub fn post_lint1(&self) {
        self.lint1.store(true, Ordering::Release);
    }

    pub fn post_init(&self) {
        self.init.store(true, Ordering::Release);
    }

    /// A STARTUP IPI; a later one before the vCPU started replaces it (the vector is the same
    /// in practice: operating systems send two for robustness).
    pub fn post_sipi(&self, vector: u8) {
        self.sipi.store(0x100 | u32::from(vector), Ordering::Release);
    }

    /// Takes everything posted so far.
    pub fn take(&self) -> Posted {
        let mut p = Posted::default();
        for (i, (out, bits)) in p.vectors.iter_mut().zip(&self.irr).enumerate() {
            *out = bits.swap(0, Ordering::AcqRel);
            p.level[i] = self.level[i].load(Ordering::Acquire) & *out;
        }
        p.nmi = self.nmi.swap(false, Ordering::AcqRel);
        p.lint1 = self.lint1.swap(false, Ordering::AcqRel);
        p.init = self.init.swap(false, Ordering::AcqRel);
        let s = self.sipi.swap(0, Ordering::AcqRel);
        p.sipi = (s & 0x100 != 0).then_some(s as u8);
        p
    }

    /// Whether anything waits (cheap: no draining).
    pub fn any(&self) -> bool {
        self.irr.iter().any(|w| w.load(Ordering::Acquire) != 0)
            || self.nmi.load(Ordering::Acquire)
            || self.lint1.load(Ordering::Acquire)
            || self.init.load(Ordering::Acquire)
            || self.sipi.load(Ordering::Acquire) != 0
    }

    pub fn set_running_on(&self, cpu: Option<u32>) {
        self.running_on.store(cpu.map_or(0, |c| c + 1), Ordering::Release);
    }

    pub fn running_on(&self) -> Option<u32> {
        self.running_on.load(Ordering::Acquire).checked_sub(1)
    }

    pub fn publish(&self, addressing: Addressing) {
        *self.addressing.lock() = addressing;
    }

    pub fn addressing(&self) -> Addressing {
        *self.addressing.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posted_interrupts_init_and_sipi_are_taken_once() {
        let s = VcpuSignals::new(Addressing::default());
        assert!(!s.any());
        s.post_interrupt(0x40);
        s.post_interrupt(0xFF);
        s.post_interrupt(0x40);
        s.post_init();
        s.post_sipi(0x07);
        assert!(s.any());
        let p = s.take();
        assert_eq!(p.vectors().collect::<Vec<_>>(), vec![0x40, 0xFF]);
        assert!(p.init);
        assert_eq!(p.sipi, Some(0x07));
        assert_eq!(s.take(), Posted::default());
        assert!(!s.any());
    }

    #[test]
    fn nmis_latch_like_the_cpus_nmi_line() {
        let s = VcpuSignals::new(Addressing::default());
        s.post_nmi();
        s.post_nmi();
        s.post_lint1();
        assert!(s.any());
        let p = s.take();
        assert!(p.nmi && p.lint1 && p.vectors().next().is_none());
        assert!(!s.any(), "two NMIs before the vCPU looked are one");
    }

    #[test]
    fn the_trigger_mode_travels_with_the_vector() {
        let s = VcpuSignals::new(Addressing::default());
        s.post(0x41, true);
        s.post(0x42, false);
        let p = s.take();
        assert!(p.is_level(0x41));
        assert!(!p.is_level(0x42));
        s.post(0x41, false);
        assert!(!s.take().is_level(0x41), "a later edge-triggered post clears the mode");
    }

    #[test]
    fn illegal_vectors_are_dropped() {
        let s = VcpuSignals::new(Addressing::default());
        s.post_interrupt(15);
        assert!(!s.any());
    }

    #[test]
    fn running_on_round_trips_cpu_zero() {
        let s = VcpuSignals::new(Addressing::default());
        assert_eq!(s.running_on(), None);
        s.set_running_on(Some(0));
        assert_eq!(s.running_on(), Some(0));
        s.set_running_on(None);
        assert_eq!(s.running_on(), None);
    }
}
