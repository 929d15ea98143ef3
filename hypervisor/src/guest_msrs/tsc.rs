//! The guest's time-stamp counter: the host's plus a per-vCPU offset (the VMCS's TSC
//! offset, which RDTSC and RDTSCP apply in hardware). Writing IA32_TSC sets the counter
//! by moving the offset, and IA32_TSC_ADJUST moves with it by the same amount; writing
//! IA32_TSC_ADJUST moves the counter by the change (SDM Vol. 3B "Time-Stamp Counter
//! Adjustment"). Both start at zero: a fresh domain's TSC is the host's.

/// IA32_TSC_ADJUST.
pub const IA32_TSC_ADJUST: u32 = 0x3B;

/// One vCPU's TSC state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestTsc {
    /// Added to the host's TSC (two's complement, as the VMCS field).
    pub offset: u64,
    /// IA32_TSC_ADJUST as the guest reads it.
    pub adjust: u64,
}

impl GuestTsc {
    /// The guest's counter when the host's reads `host`.
    pub fn guest(&self, host: u64) -> u64 {
        host.wrapping_add(self.offset)
    }

    /// The host's counter value at which the guest's reads `guest` (for deadlines the
    /// guest sets in its own time); 0 when that moment is before the host's zero.
    pub fn to_host(&self, guest: u64) -> u64 {
        let host = i128::from(guest) - i128::from(self.offset as i64);
        u64::try_from(host.max(0)).unwrap_or(u64::MAX)
    }

    /// WRMSR IA32_TSC of `value` when the host's counter reads `host`.
    pub fn write_tsc(&mut self, value: u64, host: u64) {
        let delta = value.wrapping_sub(self.guest(host));
        self.offset = self.offset.wrapping_add(delta);
        self.adjust = self.adjust.wrapping_add(delta);
    }

    /// WRMSR IA32_TSC_ADJUST of `value`.
    pub fn write_adjust(&mut self, value: u64) {
        let delta = value.wrapping_sub(self.adjust);
        self.offset = self.offset.wrapping_add(delta);
        self.adjust = value;
    }
}

#[cfg(test)]
mod tests {
    use super::GuestTsc;

    #[test]
    fn writing_the_tsc_sets_the_counter_and_moves_tsc_adjust_with_it() {
        let mut t = GuestTsc::default();
        assert_eq!(t.guest(1_000_000), 1_000_000, "a fresh vCPU sees the host's counter");
        t.write_tsc(0, 1_000_000);
        assert_eq!(t.guest(1_000_000), 0);
        assert_eq!(t.guest(1_000_500), 500, "it goes on counting");
        assert_eq!(t.adjust as i64, -1_000_000);
        t.write_tsc(5_000_000, 2_000_000);
        assert_eq!(t.guest(2_000_000), 5_000_000);
        assert_eq!(t.adjust, 3_000_000);
    }

    #[test]
    fn writing_tsc_adjust_moves_the_counter_by_the_change() {
        let mut t = GuestTsc::default();
        t.write_adjust(100);
        assert_eq!(t.guest(1000), 1100);
        t.write_adjust(40);
        assert_eq!(t.guest(1000), 1040);
        t.write_adjust(0);
        assert_eq!(t, GuestTsc::default(), "back to the host's counter");
    }

    #[test]
    fn deadlines_convert_to_host_time_and_never_wrap_below_zero() {
        let mut t = GuestTsc::default();
        t.write_tsc(0, 1_000_000);
        assert_eq!(t.to_host(500), 1_000_500);
        t.write_tsc(10_000_000, 1_000_000);
        assert_eq!(t.to_host(9_500_000), 500_000);
        assert_eq!(t.to_host(1), 0, "before the host's zero: already due");
        assert_eq!(t.guest(t.to_host(12_345_678)), 12_345_678);
    }
}
