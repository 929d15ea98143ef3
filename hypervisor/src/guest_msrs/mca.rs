//! The machine-check architecture as a guest sees it (SDM Vol. 3B "Machine-Check
//! Architecture"): CPUID shows MCE and MCA where the host has them, so the global MSRs
//! and a few banks exist, and they never report an error. A machine check on the host
//! is the host's: the domain that was running is crashed with the banks' story
//! (`vmexit`), never given a #MC to handle.
//!
//! - IA32_MCG_CAP (0x179): [`BANKS`] banks, MCG_CTL present; no CMCI, no extended
//!   state, no software-error recovery (so no MCi_CTL2).
//! - IA32_MCG_STATUS (0x17A): reads what was written (0 unless the guest writes), as
//!   KVM keeps it.
//! - IA32_MCG_CTL (0x17B): 0 or all ones, anything else #GP.
//! - MCi_CTL (0x400 + 4i): 0 or all ones, or all ones with bit 10 clear (which Linux
//!   writes to bank 4 of some CPUs, KVM allows it too).
//! - MCi_STATUS, MCi_ADDR, MCi_MISC: read 0; a write of 0 is how software clears a bank
//!   and is accepted, any other value is #GP (SDM: writing non-zero may cause #GP).

pub const IA32_MCG_CAP: u32 = 0x179;
pub const IA32_MCG_STATUS: u32 = 0x17A;
pub const IA32_MCG_CTL: u32 = 0x17B;
/// IA32_MC0_CTL; bank i's four MSRs are CTL, STATUS, ADDR, MISC at 0x400 + 4i.
pub const IA32_MC0_CTL: u32 = 0x400;

/// Banks a guest sees.
pub const BANKS: usize = 4;
/// MCG_CAP bit 8: IA32_MCG_CTL is present.
const MCG_CTL_P: u64 = 1 << 8;

/// One vCPU's machine-check MSRs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineCheck {
    status: u64,
    ctl: u64,
    bank_ctl: [u64; BANKS],
}

/// Whether `msr` is one of the machine-check MSRs modelled here.
pub fn is_mca(msr: u32) -> bool {
    matches!(msr, IA32_MCG_CAP | IA32_MCG_STATUS | IA32_MCG_CTL) || bank(msr).is_some()
}

/// Bank number and register (0 CTL, 1 STATUS, 2 ADDR, 3 MISC) of a bank MSR.
fn bank(msr: u32) -> Option<(usize, u32)> {
    let i = msr.checked_sub(IA32_MC0_CTL)?;
    let n = (i / 4) as usize;
    (n < BANKS).then_some((n, i % 4))
}

impl MachineCheck {
    /// RDMSR; `None` means #GP.
    pub fn read(&self, msr: u32) -> Option<u64> {
        match msr {
            IA32_MCG_CAP => Some(MCG_CTL_P | BANKS as u64),
            IA32_MCG_STATUS => Some(self.status),
            IA32_MCG_CTL => Some(self.ctl),
            _ => match bank(msr)? {
                (n, 0) => self.bank_ctl.get(n).copied(),
                _ => Some(0),
            },
        }
    }

    /// WRMSR; false means #GP.
    pub fn write(&mut self, msr: u32, value: u64) -> bool {
        match msr {
            IA32_MCG_CAP => false,
            IA32_MCG_STATUS => {
                self.status = value;
                true
            }
            IA32_MCG_CTL if value == 0 || value == u64::MAX => {
                self.ctl = value;
                true
            }
            IA32_MCG_CTL => false,
            _ => match (bank(msr), value) {
                (Some((n, 0)), 0 | u64::MAX | 0xFFFF_FFFF_FFFF_FBFF) => match self.bank_ctl.get_mut(n) {
                    Some(slot) => {
                        *slot = value;
                        true
                    }
                    None => false,
                },
                (Some((_, 1..=3)), 0) => true,
                _ => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_an_os_does_at_boot_works_and_reads_clean() {
        let mut m = MachineCheck::default();
        assert_eq!(m.read(IA32_MCG_CAP), Some(0x104));
        assert!(m.write(IA32_MCG_CTL, u64::MAX));
        assert!(m.write(IA32_MCG_STATUS, 0));
        for b in 0..BANKS as u32 {
            assert!(m.write(IA32_MC0_CTL + 4 * b, u64::MAX));
            assert!(m.write(IA32_MC0_CTL + 4 * b + 1, 0), "clearing the status");
            assert_eq!(m.read(IA32_MC0_CTL + 4 * b), Some(u64::MAX));
            for r in 1..4 {
                assert_eq!(m.read(IA32_MC0_CTL + 4 * b + r), Some(0));
            }
        }
        assert_eq!(m.read(IA32_MCG_CTL), Some(u64::MAX));
    }

    #[test]
    fn values_hardware_refuses_and_banks_beyond_the_count_fault() {
        let mut m = MachineCheck::default();
        assert!(!m.write(IA32_MCG_CAP, 0), "read-only");
        assert!(!m.write(IA32_MCG_CTL, 1));
        assert!(!m.write(IA32_MC0_CTL, 0x5));
        assert!(m.write(IA32_MC0_CTL + 12, 0xFFFF_FFFF_FFFF_FBFF), "all ones minus bit 10, as Linux writes it");
        assert!(!m.write(IA32_MC0_CTL + 1, 0xBAD), "a status cannot be made up");
        let beyond = IA32_MC0_CTL + 4 * BANKS as u32;
        assert!(!is_mca(beyond));
        assert_eq!(m.read(beyond), None);
        assert!(!m.write(beyond, 0));
        assert!(is_mca(IA32_MCG_STATUS) && is_mca(IA32_MC0_CTL + 3));
    }
}
