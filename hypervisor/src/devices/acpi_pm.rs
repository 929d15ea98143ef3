//! The ACPI fixed-hardware power-management registers a guest's OS uses (ACPI 6.x,
//! "ACPI Hardware Specification"): the PM1a event block (PM1_STS and PM1_EN), the PM1a
//! control block (SCI_EN, SLP_TYP, SLP_EN), the PM timer, and the reset register at
//! 0xCF9. Port numbers match the FADT the domain's ACPI tables describe.
//!
//! Sleep states: only S5 (soft off) exists. Writing SLP_EN with the SLP_TYP that the
//! DSDT's `\_S5` announces powers the domain off. The DSDT announces no other state
//! (no `\_S1`-`\_S4`), so an OS that reads it never tries S3; one that writes another
//! sleep type anyway (hard-coded values) is refused the way an OS notices: the domain
//! wakes at once, WAK_STS set, instead of leaving it to wait for a wake-up that would
//! never come (Linux polls WAK_STS after SLP_EN, then takes its resume path). The reset
//! register (value 0x06 or 0x0E, as Linux and the FADT's RESET_VALUE use) asks for a
//! reset.

/// PM1a event block: PM1_STS at +0, PM1_EN at +2 (16 bits each).
pub const PM1A_EVENT: u16 = 0x600;
/// PM1a control block (16 bits).
pub const PM1A_CONTROL: u16 = 0x604;
/// PM timer (32-bit reads; 24 bits of count).
pub const PM_TIMER: u16 = 0x608;
/// The reset control register (the FADT's RESET_REG, also the PCI reset port).
pub const RESET_PORT: u16 = 0xCF9;
/// The SLP_TYP value of S5 in the DSDT's `\_S5` package.
pub const S5_SLP_TYP: u16 = 5;
/// The PM timer's frequency (ACPI: 3.579545 MHz).
pub const PM_TIMER_HZ: u64 = 3_579_545;

const SCI_EN: u16 = 1 << 0;
const SLP_TYP_SHIFT: u16 = 10;
const SLP_TYP_MASK: u16 = 0b111 << SLP_TYP_SHIFT;
const SLP_EN: u16 = 1 << 13;
/// PM1_STS bits are write-one-to-clear; TMR_STS (bit 0) is the only one we set.
const TMR_STS: u16 = 1 << 0;
/// PM1_STS / PM1_EN bit 8: the power button.
const PWRBTN: u16 = 1 << 8;
const WAK_STS: u16 = 1 << 15;
/// The ISA IRQ of the SCI (the FADT's SCI_INT; `acpi_tables` says 9).
pub const SCI_IRQ: u8 = 9;

/// What a register write asks of the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerRequest {
    /// S5: the guest powered itself off.
    PowerOff,
    /// The reset register: the guest asked for a reset.
    Reset,
    /// SLP_EN with a sleep type the DSDT does not offer (this SLP_TYP): refused, the
    /// domain woke at once (for the log).
    SleepRefused(u16),
}

#[derive(Debug, Clone, Default)]
pub struct AcpiPm {
    status: u16,
    enable: u16,
    control: u16,
}

impl AcpiPm {
    /// Power-on state. SCI_EN is set and stays set: the FADT has no SMI_CMD port, so the
    /// platform is always in ACPI mode, and the spec then has SCI_EN read as 1.
    pub const fn new() -> Self {
        AcpiPm { status: 0, enable: 0, control: SCI_EN }
    }

    /// Whether `port` belongs to this block.
    pub fn claims(port: u16) -> bool {
        (PM1A_EVENT..PM1A_EVENT + 4).contains(&port)
            || (PM1A_CONTROL..PM1A_CONTROL + 2).contains(&port)
            || (PM_TIMER..PM_TIMER + 4).contains(&port)
            || port == RESET_PORT
    }

    /// The PM timer's count at `now_ns` (24 bits, wrapping).
    pub fn timer(now_ns: u64) -> u32 {
        ((u128::from(now_ns) * u128::from(PM_TIMER_HZ) / 1_000_000_000) & 0xFF_FFFF) as u32
    }

    /// Reads `size` bytes (1, 2 or 4) at `port`; bytes beyond a register read as zero.
    pub fn read(&self, port: u16, size: u8, now_ns: u64) -> u32 {
        let (base, value) = if (PM_TIMER..PM_TIMER + 4).contains(&port) {
            (PM_TIMER, Self::timer(now_ns))
        } else if (PM1A_EVENT..PM1A_EVENT + 2).contains(&port) {
            (PM1A_EVENT, u32::from(self.status))
        } else if (PM1A_EVENT + 2..PM1A_EVENT + 4).contains(&port) {
            (PM1A_EVENT + 2, u32::from(self.enable))
        } else if (PM1A_CONTROL..PM1A_CONTROL + 2).contains(&port) {
            // SLP_EN is write-only and reads as zero.
            (PM1A_CONTROL, u32::from(self.control & !SLP_EN))
        } else if port == RESET_PORT {
            (RESET_PORT, 0)
        } else {
            return mask(u32::MAX, size);
        };
        let shifted = value.checked_shr(u32::from(port - base) * 8).unwrap_or(0);
        mask(shifted, size)
    }

    /// Writes `size` bytes at `port`; returns a power request when the write is one.
    pub fn write(&mut self, port: u16, size: u8, value: u32) -> Option<PowerRequest> {
        let value = mask(value, size);
        match port {
            PM1A_EVENT if size >= 2 => {
                // Write one to clear; the status bits we model.
                self.status &= !(value as u16 & (TMR_STS | PWRBTN | WAK_STS));
                if size == 4 {
                    self.enable = (value >> 16) as u16;
                }
                None
            }
            p if p == PM1A_EVENT + 2 && size >= 2 => {
                self.enable = value as u16;
                None
            }
            PM1A_CONTROL if size >= 2 => {
                let v = value as u16;
                self.control = (v & !SLP_EN) | SCI_EN;
                let sleep_type = (v & SLP_TYP_MASK) >> SLP_TYP_SHIFT;
                match (v & SLP_EN != 0, sleep_type) {
                    (false, _) => None,
                    (true, S5_SLP_TYP) => Some(PowerRequest::PowerOff),
                    (true, other) => {
                        self.status |= WAK_STS;
                        Some(PowerRequest::SleepRefused(other))
                    }
                }
            }
            // 0xCF9: bit 2 starts the reset, bit 1 picks a hard one (both mean reset here).
            RESET_PORT if value & 0x04 != 0 => Some(PowerRequest::Reset),
            _ => None,
        }
    }
}

impl AcpiPm {
    /// The power button is pressed (Domain0's `shutdown`): PWRBTN_STS is set. Returns
    /// whether the guest listens, i.e. has PWRBTN_EN set, so that the SCI tells it.
    pub fn press_power_button(&mut self) -> bool {
        self.status |= PWRBTN;
        self.enable & PWRBTN != 0
    }

    /// The SCI's level: an enabled status bit is set (ACPI "SCI interrupt logic").
    pub fn sci_level(&self) -> bool {
        self.status & self.enable & (TMR_STS | PWRBTN) != 0
    }
}

fn mask(v: u32, size: u8) -> u32 {
    match size {
        1 => v & 0xFF,
        2 => v & 0xFFFF,
        _ => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pm_timer_counts_at_3_579545_mhz_and_wraps_at_24_bits() {
        assert_eq!(AcpiPm::timer(0), 0);
        assert_eq!(AcpiPm::timer(1_000_000_000), 3_579_545);
        let wrap_ns = (1u64 << 24) * 1_000_000_000 / PM_TIMER_HZ + 1;
        assert!(AcpiPm::timer(wrap_ns) < 10);
        let pm = AcpiPm::new();
        assert_eq!(pm.read(PM_TIMER, 4, 1_000_000_000), 3_579_545);
    }

    #[test]
    fn writing_slp_en_with_the_s5_type_powers_off() {
        let mut pm = AcpiPm::new();
        assert_eq!(pm.write(PM1A_CONTROL, 2, u32::from(S5_SLP_TYP << 10)), None, "SLP_TYP alone does nothing");
        assert_eq!(pm.write(PM1A_CONTROL, 2, u32::from(S5_SLP_TYP << 10 | SLP_EN)), Some(PowerRequest::PowerOff));
    }

    #[test]
    fn other_sleep_types_are_refused_by_waking_at_once() {
        let mut pm = AcpiPm::new();
        assert_eq!(pm.write(PM1A_CONTROL, 2, 3 << 10), None, "SLP_TYP alone does nothing");
        assert_eq!(pm.read(PM1A_EVENT, 2, 0) & u32::from(WAK_STS), 0);
        assert_eq!(pm.write(PM1A_CONTROL, 2, 3 << 10 | u32::from(SLP_EN)), Some(PowerRequest::SleepRefused(3)));
        assert_ne!(pm.read(PM1A_EVENT, 2, 0) & u32::from(WAK_STS), 0, "the wake-up an OS waits for");
        pm.write(PM1A_EVENT, 2, u32::from(WAK_STS));
        assert_eq!(pm.read(PM1A_EVENT, 2, 0) & u32::from(WAK_STS), 0, "write one to clear");
    }

    #[test]
    fn sci_en_reads_set_and_slp_en_reads_zero() {
        let mut pm = AcpiPm::new();
        assert_eq!(pm.read(PM1A_CONTROL, 2, 0), 1);
        pm.write(PM1A_CONTROL, 2, u32::from(2 << 10 | SLP_EN));
        assert_eq!(pm.read(PM1A_CONTROL, 2, 0), u32::from(2 << 10 | SCI_EN));
    }

    #[test]
    fn the_reset_register_asks_for_a_reset() {
        let mut pm = AcpiPm::new();
        assert_eq!(pm.write(RESET_PORT, 1, 0x02), None);
        assert_eq!(pm.write(RESET_PORT, 1, 0x06), Some(PowerRequest::Reset));
        assert_eq!(pm.write(RESET_PORT, 1, 0x0E), Some(PowerRequest::Reset));
    }

    #[test]
    fn pm1_enable_is_readable_and_status_is_write_one_to_clear() {
        let mut pm = AcpiPm::new();
        pm.write(PM1A_EVENT + 2, 2, 0x0120);
        assert_eq!(pm.read(PM1A_EVENT + 2, 2, 0), 0x0120);
        pm.status = TMR_STS | WAK_STS;
        pm.write(PM1A_EVENT, 2, u32::from(TMR_STS));
        assert_eq!(pm.read(PM1A_EVENT, 2, 0), u32::from(WAK_STS));
    }

    #[test]
    fn the_power_button_raises_the_sci_while_enabled_until_its_status_is_cleared() {
        let mut pm = AcpiPm::new();
        assert!(!pm.press_power_button(), "not enabled: nobody listens");
        assert!(!pm.sci_level());
        pm.write(PM1A_EVENT + 2, 2, u32::from(PWRBTN));
        assert!(pm.sci_level(), "enabling with the status already set raises it");
        pm.write(PM1A_EVENT, 2, u32::from(PWRBTN));
        assert!(!pm.sci_level(), "write one to clear");
        assert!(pm.press_power_button());
        assert!(pm.sci_level());
        assert_eq!(pm.read(PM1A_EVENT, 2, 0) & u32::from(PWRBTN), u32::from(PWRBTN));
    }

    #[test]
    fn byte_reads_pick_the_addressed_byte() {
        let pm = AcpiPm::new();
        let t = AcpiPm::timer(123_456_789);
        assert_eq!(pm.read(PM_TIMER + 1, 1, 123_456_789), (t >> 8) & 0xFF);
        assert_eq!(pm.read(PM_TIMER + 3, 1, 123_456_789), 0);
    }

    #[test]
    fn random_accesses_never_panic() {
        let mut pm = AcpiPm::new();
        let mut x = 0x1234_5678_9abc_def1u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let port = 0x5F0 + (x % 0x30) as u16;
            let size = [1u8, 2, 4][(x >> 20) as usize % 3];
            if x & 1 == 0 {
                let _ = pm.read(port, size, x >> 8);
            } else {
                let _ = pm.write(port, size, (x >> 32) as u32);
            }
            assert!(AcpiPm::claims(port) || pm.read(port, size, 0) == mask(u32::MAX, size));
        }
    }
}
