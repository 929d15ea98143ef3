//! Time for bring-up: the TSC, calibrated once against the 8254 PIT.
//!
//! Channel 2 of the PIT is gated by port 0x61 and its output can be polled there, so
//! the calibration needs no interrupts. In Bochs both the PIT and the TSC advance with
//! emulated instructions, so the result is consistent there too.

use super::cpu::{inb, outb, rdtsc};
use crate::clock::Scale;
use core::sync::atomic::{AtomicU64, Ordering};

/// The PIT's input clock (Hz).
const PIT_HZ: u64 = 1_193_182;
/// Calibration window: long enough for a stable reading, short enough for Bochs.
const CALIBRATION_MS: u64 = 10;

/// Measured TSC ticks per microsecond (0 = not calibrated; delays then assume 1 GHz).
static TSC_PER_US: AtomicU64 = AtomicU64::new(0);
/// Measured TSC frequency in Hz (0 = not calibrated: 1 GHz is assumed).
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// TSC ticks -> ns and ns -> ticks, as [`Scale::parts`] (1 GHz until calibrated).
/// Written once at calibration, before any other CPU starts; read on every VM entry,
/// so plain loads rather than a lock.
static TO_NS: [AtomicU64; 2] = [AtomicU64::new(1), AtomicU64::new(0)];
static TO_TSC: [AtomicU64; 2] = [AtomicU64::new(1), AtomicU64::new(0)];

fn load(s: &[AtomicU64; 2]) -> Scale {
    Scale::from_parts(s[0].load(Ordering::Relaxed), s[1].load(Ordering::Relaxed))
}

fn store(s: &[AtomicU64; 2], scale: Scale) {
    let (whole, frac) = scale.parts();
    s[0].store(whole, Ordering::Relaxed);
    s[1].store(frac, Ordering::Relaxed);
}

/// Calibrates the TSC against PIT channel 2 and returns the frequency in Hz.
pub fn calibrate() -> u64 {
    let count = (PIT_HZ * CALIBRATION_MS / 1000) as u16;
    // SAFETY: the PIT and port 0x61 are owned by the hypervisor during bring-up; channel
    // 2 drives only the speaker gate, which we keep disconnected (bit 1 clear).
    let (start, end) = unsafe {
        let gate = inb(0x61);
        outb(0x61, (gate & !0x02) | 0x01); // gate on, speaker off
        outb(0x43, 0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
        outb(0x42, count as u8);
        outb(0x42, (count >> 8) as u8);
        // Restart the count: toggle the gate low then high.
        let g = inb(0x61);
        outb(0x61, g & !0x01);
        outb(0x61, g | 0x01);
        let start = rdtsc();
        // OUT2 (bit 5) goes high when the count reaches zero.
        let mut spins: u64 = 0;
        while inb(0x61) & 0x20 == 0 {
            spins += 1;
            if spins > 100_000_000 {
                break; // no PIT: give up rather than hang the boot
            }
        }
        let end = rdtsc();
        outb(0x61, gate);
        (start, end)
    };
    let hz = (end - start) * 1000 / CALIBRATION_MS;
    TSC_PER_US.store((hz / 1_000_000).max(1), Ordering::Relaxed);
    TSC_HZ.store(hz.max(1), Ordering::Relaxed);
    store(&TO_NS, Scale::new(1_000_000_000, hz.max(1)));
    store(&TO_TSC, Scale::new(hz.max(1), 1_000_000_000));
    hz
}

/// The TSC frequency in Hz (1 GHz assumed before calibration).
pub fn tsc_hz() -> u64 {
    match TSC_HZ.load(Ordering::Relaxed) {
        0 => 1_000_000_000,
        n => n,
    }
}

/// Monotonic nanoseconds since reset, from the TSC (the clock of every virtual timer).
/// The TSC is invariant and the same on every CPU of the machines we support.
pub fn now_ns() -> u64 {
    tsc_to_ns(rdtsc())
}

pub fn tsc_to_ns(tsc: u64) -> u64 {
    load(&TO_NS).apply(tsc)
}

pub fn ns_to_tsc(ns: u64) -> u64 {
    load(&TO_TSC).apply(ns)
}

fn ticks_per_us() -> u64 {
    match TSC_PER_US.load(Ordering::Relaxed) {
        0 => 1000,
        n => n,
    }
}

/// Busy-waits at least `us` microseconds.
pub fn delay_us(us: u64) {
    let end = rdtsc() + us * ticks_per_us();
    while rdtsc() < end {
        core::hint::spin_loop();
    }
}

/// Polls `done` until it returns true or `timeout_us` elapses; returns whether it did.
pub fn spin_until(timeout_us: u64, mut done: impl FnMut() -> bool) -> bool {
    let end = rdtsc() + timeout_us * ticks_per_us();
    loop {
        if done() {
            return true;
        }
        if rdtsc() >= end {
            return false;
        }
        core::hint::spin_loop();
    }
}
