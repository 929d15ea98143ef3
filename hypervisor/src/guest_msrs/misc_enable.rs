//! IA32_MISC_ENABLE (0x1A0), as the SDM defines it for the Core and Xeon families (Vol.
//! 4, "Architectural MSRs"), for a CPU with the features the domain's CPU policy shows:
//!
//! | bit | name | here |
//! |----:|------|------|
//! | 0 | fast-strings enable | read/write, set at reset |
//! | 3 | automatic thermal control | read/write (no thermal monitor to control) |
//! | 7 | performance monitoring available | reads 0: the PMU is hidden |
//! | 11 | branch trace storage unavailable | reads 1: no debug store |
//! | 12 | PEBS unavailable | reads 1 |
//! | 16 | Enhanced SpeedStep enable | reads 0, writes ignored: EST is hidden |
//! | 18 | MONITOR/MWAIT enable | reads 0, writes ignored: CPUID shows no MONITOR, and the two must agree |
//! | 22 | limit CPUID maxval | read/write: CPUID.0:EAX reads at most 2 while set |
//! | 23 | xTPR message disable | read/write |
//! | 34 | XD bit disable | read/write: while set, CPUID hides NX and EFER.NXE cannot be set |
//! | 38 | turbo mode disable | reads 0, writes ignored |
//!
//! A write that changes any other bit is #GP, as on hardware (Linux and Windows write
//! back what they read with single bits changed).

pub const IA32_MISC_ENABLE: u32 = 0x1A0;

pub const FAST_STRINGS: u64 = 1 << 0;
pub const AUTO_THERMAL: u64 = 1 << 3;
pub const BTS_UNAVAILABLE: u64 = 1 << 11;
pub const PEBS_UNAVAILABLE: u64 = 1 << 12;
pub const EST_ENABLE: u64 = 1 << 16;
pub const MONITOR_ENABLE: u64 = 1 << 18;
pub const LIMIT_CPUID: u64 = 1 << 22;
pub const XTPR_DISABLE: u64 = 1 << 23;
pub const XD_DISABLE: u64 = 1 << 34;
pub const TURBO_DISABLE: u64 = 1 << 38;

/// The bits software may change.
const WRITABLE: u64 = FAST_STRINGS | AUTO_THERMAL | LIMIT_CPUID | XTPR_DISABLE | XD_DISABLE;
/// Bits a write may set or clear without effect: they read 0.
const IGNORED: u64 = EST_ENABLE | MONITOR_ENABLE | TURBO_DISABLE;

/// The value at reset.
pub const RESET: u64 = FAST_STRINGS | BTS_UNAVAILABLE | PEBS_UNAVAILABLE;

/// One vCPU's IA32_MISC_ENABLE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MiscEnable(pub u64);

impl Default for MiscEnable {
    fn default() -> Self {
        MiscEnable(RESET)
    }
}

impl MiscEnable {
    /// WRMSR: false means #GP (a read-only or reserved bit changed).
    pub fn write(&mut self, value: u64) -> bool {
        let fixed = !(WRITABLE | IGNORED);
        if (value ^ self.0) & fixed != 0 {
            return false;
        }
        self.0 = (self.0 & !WRITABLE) | (value & WRITABLE);
        true
    }

    /// Whether CPUID.0:EAX is limited to 2.
    pub fn limit_cpuid(self) -> bool {
        self.0 & LIMIT_CPUID != 0
    }

    /// Whether the execute-disable bit is turned off (CPUID hides NX, EFER.NXE is #GP).
    pub fn xd_disabled(self) -> bool {
        self.0 & XD_DISABLE != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_value_is_one_an_intel_cpu_without_pmu_or_debug_store_has() {
        let m = MiscEnable::default();
        assert_eq!(m.0, 0x1801);
        assert!(!m.limit_cpuid() && !m.xd_disabled());
    }

    #[test]
    fn what_linux_does_at_boot_is_accepted() {
        // early_init_intel: clear "limit CPUID" and "XD disable" if set; the
        // fast-strings check reads bit 0.
        let mut m = MiscEnable::default();
        assert!(m.write(m.0 | LIMIT_CPUID | XD_DISABLE));
        assert!(m.limit_cpuid() && m.xd_disabled());
        assert!(m.write(m.0 & !LIMIT_CPUID));
        assert!(m.write(m.0 & !XD_DISABLE));
        assert_eq!(m, MiscEnable::default());
        assert!(m.write(m.0 & !FAST_STRINGS));
        assert_eq!(m.0 & FAST_STRINGS, 0);
    }

    #[test]
    fn read_only_and_reserved_bits_fault_and_ignored_ones_stay_clear() {
        let mut m = MiscEnable::default();
        assert!(!m.write(m.0 & !BTS_UNAVAILABLE), "BTS unavailable is read-only");
        assert!(!m.write(m.0 | (1 << 7)), "no PMU to announce");
        assert!(!m.write(m.0 | (1 << 63)), "reserved");
        assert!(m.write(m.0 | MONITOR_ENABLE | EST_ENABLE | TURBO_DISABLE));
        assert_eq!(m, MiscEnable::default(), "ignored bits read 0, CPUID still shows no MONITOR");
    }
}
