//! Computing the five VM-execution, exit and entry control words from the (TRUE)
//! capability MSRs (SDM Vol. 3D A.3-A.5; Vol. 3C "Algorithms for Determining VMX
//! Capabilities"): each word is what we want plus the bits the CPU requires to be 1;
//! a wanted bit the CPU cannot set is refused by name, never silently dropped.

use super::caps::{
    AllowedBits, EntryControls, ExitControls, PinBased, PrimaryProcBased, SecondaryProcBased, VmxCapabilities,
};
use core::fmt;

/// What Ferrovisor asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlRequest {
    pub pin: PinBased,
    pub proc: PrimaryProcBased,
    pub proc2: SecondaryProcBased,
    pub exit: ExitControls,
    pub entry: EntryControls,
}

/// The values to write into the VMCS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Controls {
    pub pin: u32,
    pub proc: u32,
    pub proc2: u32,
    pub exit: u32,
    pub entry: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlWord {
    Pin,
    Primary,
    Secondary,
    Exit,
    Entry,
}

impl ControlWord {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pin => "pin-based",
            Self::Primary => "primary processor-based",
            Self::Secondary => "secondary processor-based",
            Self::Exit => "VM-exit",
            Self::Entry => "VM-entry",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlsError {
    /// `bits` of `word` were wanted but the CPU cannot set them.
    Unsupported { word: ControlWord, bits: u32 },
    /// Secondary controls were wanted but the CPU has none.
    SecondaryControlsUnavailable { wanted: u32 },
    /// A combination the SDM forbids ("Checks on VMX Controls").
    Inconsistent(&'static str),
}

/// Human names of the control bits we may ask for.
fn bit_name(word: ControlWord, bit: u32) -> &'static str {
    match (word, bit) {
        (ControlWord::Pin, 0) => "external-interrupt exiting",
        (ControlWord::Pin, 3) => "NMI exiting",
        (ControlWord::Pin, 5) => "virtual NMIs",
        (ControlWord::Pin, 6) => "VMX preemption timer",
        (ControlWord::Primary, 7) => "HLT exiting",
        (ControlWord::Primary, 25) => "I/O bitmaps",
        (ControlWord::Primary, 28) => "MSR bitmaps",
        (ControlWord::Primary, 31) => "secondary controls",
        (ControlWord::Secondary, 1) => "EPT",
        (ControlWord::Secondary, 3) => "RDTSCP",
        (ControlWord::Secondary, 5) => "VPID",
        (ControlWord::Secondary, 6) => "WBINVD exiting",
        (ControlWord::Secondary, 7) => "unrestricted guest",
        (ControlWord::Secondary, 12) => "INVPCID",
        (ControlWord::Secondary, 20) => "XSAVES/XRSTORS",
        (ControlWord::Exit, 9) => "64-bit host",
        (ControlWord::Exit, 15) => "acknowledge interrupt on exit",
        (ControlWord::Exit, 18) | (ControlWord::Exit, 19) => "save/load IA32_PAT",
        (ControlWord::Exit, 20) | (ControlWord::Exit, 21) => "save/load IA32_EFER",
        (ControlWord::Exit, 22) => "save preemption timer",
        (ControlWord::Entry, 9) => "IA-32e mode guest",
        (ControlWord::Entry, 14) => "load IA32_PAT",
        (ControlWord::Entry, 15) => "load IA32_EFER",
        _ => "an unnamed control",
    }
}

impl fmt::Display for ControlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Unsupported { word, bits } => {
                write!(f, "the CPU cannot enable these {} controls:", word.as_str())?;
                for bit in (0..32).filter(|b| bits & (1 << b) != 0) {
                    write!(f, " {} (bit {bit})", bit_name(word, bit))?;
                }
                write!(f, "; Ferrovisor needs them (in Bochs use cpu model corei7_skylake_x)")
            }
            Self::SecondaryControlsUnavailable { wanted } => write!(
                f,
                "the CPU has no secondary processor-based controls but Ferrovisor needs some ({wanted:#x}: EPT, VPID, unrestricted guest)"
            ),
            Self::Inconsistent(why) => write!(f, "inconsistent VMX controls: {why}"),
        }
    }
}

fn adjust(word: ControlWord, allowed: AllowedBits, wanted: u32) -> Result<u32, ControlsError> {
    allowed.adjust(wanted).map_err(|_| ControlsError::Unsupported { word, bits: wanted & !allowed.allowed1 })
}

/// The five control words for `req` on a CPU with `caps`.
pub fn compute(caps: &VmxCapabilities, req: &ControlRequest) -> Result<Controls, ControlsError> {
    let mut primary = req.proc;
    if !req.proc2.is_empty() {
        primary |= PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS;
    }
    if req.proc2.contains(SecondaryProcBased::UNRESTRICTED_GUEST) && !req.proc2.contains(SecondaryProcBased::ENABLE_EPT)
    {
        return Err(ControlsError::Inconsistent("unrestricted guest requires EPT"));
    }
    if req.pin.contains(PinBased::VIRTUAL_NMIS) && !req.pin.contains(PinBased::NMI_EXITING) {
        return Err(ControlsError::Inconsistent("virtual NMIs require NMI exiting"));
    }
    if req.exit.contains(ExitControls::SAVE_PREEMPTION_TIMER) && !req.pin.contains(PinBased::PREEMPTION_TIMER) {
        return Err(ControlsError::Inconsistent("saving the preemption timer requires activating it"));
    }
    let proc2 = match caps.proc2() {
        Some(allowed) => adjust(ControlWord::Secondary, allowed, req.proc2.bits())?,
        None if req.proc2.is_empty() => 0,
        None => return Err(ControlsError::SecondaryControlsUnavailable { wanted: req.proc2.bits() }),
    };
    Ok(Controls {
        pin: adjust(ControlWord::Pin, caps.pin(), req.pin.bits())?,
        proc: adjust(ControlWord::Primary, caps.proc(), primary.bits())?,
        proc2,
        exit: adjust(ControlWord::Exit, caps.exit(), req.exit.bits())?,
        entry: adjust(ControlWord::Entry, caps.entry(), req.entry.bits())?,
    })
}

/// What Ferrovisor asks of every vCPU. Optional features (preemption timer, INVPCID,
/// XSAVES, RDTSCP) are asked for only where the CPU has them; EPT, VPID, unrestricted
/// guest and the bitmaps are required. IA-32e mode guest is set per vCPU.
pub fn default_request(caps: &VmxCapabilities) -> ControlRequest {
    let timer = caps.has_preemption_timer();
    let mut pin = PinBased::EXTERNAL_INTERRUPT_EXITING | PinBased::NMI_EXITING | PinBased::VIRTUAL_NMIS;
    let mut exit = ExitControls::HOST_ADDRESS_SPACE_SIZE
        | ExitControls::ACK_INTERRUPT_ON_EXIT
        | ExitControls::SAVE_PAT
        | ExitControls::LOAD_PAT
        | ExitControls::SAVE_EFER
        | ExitControls::LOAD_EFER;
    if timer {
        pin |= PinBased::PREEMPTION_TIMER;
        exit |= ExitControls::SAVE_PREEMPTION_TIMER;
    }
    let mut proc2 = SecondaryProcBased::ENABLE_EPT
        | SecondaryProcBased::ENABLE_VPID
        | SecondaryProcBased::UNRESTRICTED_GUEST
        | SecondaryProcBased::WBINVD_EXITING;
    for optional in
        [SecondaryProcBased::ENABLE_RDTSCP, SecondaryProcBased::ENABLE_INVPCID, SecondaryProcBased::ENABLE_XSAVES]
    {
        if caps.proc2_allows(optional) {
            proc2 |= optional;
        }
    }
    ControlRequest {
        pin,
        proc: PrimaryProcBased::HLT_EXITING | PrimaryProcBased::USE_IO_BITMAPS | PrimaryProcBased::USE_MSR_BITMAPS,
        proc2,
        exit,
        entry: EntryControls::LOAD_PAT | EntryControls::LOAD_EFER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmx::caps::RawVmxMsrs;

    /// A Skylake-like CPU with TRUE controls.
    fn skylake() -> VmxCapabilities {
        VmxCapabilities::decode(&RawVmxMsrs {
            basic: 0x00DA_0400_0000_0004,
            pinbased: 0x0000_007F_0000_0016,
            procbased: 0xFFF9_FFFE_0401_E172,
            exit: 0x01FF_FFFF_0003_6DFF,
            entry: 0x0003_FFFF_0000_11FF,
            misc: 0x7004_C1E7,
            cr0_fixed0: 0x8000_0021,
            cr0_fixed1: 0xFFFF_FFFF,
            cr4_fixed0: 0x2000,
            cr4_fixed1: 0x0037_67FF,
            procbased2: Some(0x0051_5CEF_0000_0000 | (1 << 39) | (1 << 44)),
            ept_vpid_cap: Some(0x0000_0F01_0673_4141),
            true_pinbased: Some(0x0000_007F_0000_0016),
            true_procbased: Some(0xFFF9_FFFE_0400_6172),
            true_exit: Some(0x01FF_FFFF_0003_6DFB),
            true_entry: Some(0x0003_FFFF_0000_11FB),
            vmfunc: None,
        })
    }

    #[test]
    fn the_default_request_on_skylake_gives_exact_words_with_required_bits() {
        let caps = skylake();
        let c = compute(&caps, &default_request(&caps)).unwrap();
        // pin: required 0x16 | ext-int, NMI, vNMI, timer (0x69).
        assert_eq!(c.pin, 0x16 | 0x69);
        // primary: required 0x04006172 | HLT, I/O bitmaps, MSR bitmaps, secondary.
        assert_eq!(c.proc, 0x0400_6172 | (1 << 7) | (1 << 25) | (1 << 28) | (1 << 31));
        assert_ne!(c.proc2 & (1 << 1), 0, "EPT");
        assert_ne!(c.proc2 & (1 << 7), 0, "unrestricted guest");
        assert_eq!(c.entry & 0x11FB, 0x11FB);
    }

    #[test]
    fn a_cpu_without_unrestricted_guest_is_refused_by_name() {
        let mut caps_raw_proc2 = 0x0051_5CEF_0000_0000u64 & !(1 << 39);
        caps_raw_proc2 |= 1 << 33;
        let caps = VmxCapabilities::decode(&RawVmxMsrs {
            procbased2: Some(caps_raw_proc2),
            ..RawVmxMsrs { basic: 0x00DA_0400_0000_0004, procbased: 0xFFF9_FFFE_0401_E172, ..Default::default() }
        });
        let mut req = default_request(&skylake());
        req.pin = PinBased::empty();
        req.exit = ExitControls::empty();
        req.entry = EntryControls::empty();
        let err = compute(&caps, &req).unwrap_err();
        assert!(
            matches!(err, ControlsError::Unsupported { word: ControlWord::Secondary, bits } if bits & (1 << 7) != 0)
        );
        assert!(err.to_string().contains("unrestricted guest (bit 7)"));
    }

    #[test]
    fn impossible_combinations_are_refused() {
        let caps = skylake();
        let mut req = default_request(&caps);
        req.proc2 = SecondaryProcBased::UNRESTRICTED_GUEST;
        assert_eq!(compute(&caps, &req), Err(ControlsError::Inconsistent("unrestricted guest requires EPT")));
        let mut req = default_request(&caps);
        req.pin = PinBased::VIRTUAL_NMIS;
        assert!(matches!(compute(&caps, &req), Err(ControlsError::Inconsistent(_))));
    }
}
