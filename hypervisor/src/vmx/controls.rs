//! Computing the five VMX control words (pin-based, primary and secondary
//! processor-based, VM-exit, VM-entry) from what Ferrovisor wants and what the CPU allows.
//!
//! # The algorithm
//!
//! SDM Vol. 3D Appendix A.3-A.5 give, per control word, the *allowed 0-settings* (bits
//! that must be 1) and the *allowed 1-settings* (bits that may be 1); [`AllowedBits`]
//! holds them, from the TRUE capability MSRs where they exist. SDM Vol. 3C "Algorithms for
//! Determining VMX Capabilities" describes how software that knows the controls it wants
//! should pick a value; [`compute`] does this for each word:
//!
//! - value = wanted | must-be-1 bits ([`AllowedBits::adjust`]);
//! - a wanted bit that may not be 1 is refused, by name ([`ControlsError::Unsupported`]),
//!   never silently dropped;
//! - every bit neither wanted nor required stays 0 ("default0 unless wanted"). This is
//!   right for the default1 controls too: with the TRUE MSRs, a default1 control that may
//!   be 0 is simply one more control we do not want (e.g. CR3-load exiting under EPT),
//!   and without them the legacy MSRs report every default1 bit as must-be-1, so it is
//!   set.
//!
//! "Activate secondary controls" is added automatically whenever a secondary control is
//! wanted; a CPU without secondary controls then gets
//! [`ControlsError::SecondaryControlsUnavailable`]. Before any capability is consulted,
//! the words (wanted plus required bits) are checked against the consistency rules of
//! SDM Vol. 3C "Checks on VMX Controls" ([`Controls::check`]), so a request VM entry
//! would reject with "invalid control field" never leaves this module.
//!
//! What Ferrovisor asks for, and why, is [`default_request`].

use core::fmt;

use super::caps::{
    AllowedBits, ControlError, EntryControls, ExitControls, PinBased, PrimaryProcBased, SecondaryProcBased,
    VmxCapabilities,
};
use super::fields::Field32;

/// The controls wanted, per word. Bits the CPU requires are added by [`compute`]; they
/// need not (but may) be listed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlRequest {
    pub pin: PinBased,
    pub proc: PrimaryProcBased,
    pub proc2: SecondaryProcBased,
    pub exit: ExitControls,
    pub entry: EntryControls,
}

impl ControlRequest {
    /// Nothing wanted: [`compute`] then yields exactly the CPU's must-be-1 bits.
    pub const NONE: ControlRequest = ControlRequest {
        pin: PinBased::empty(),
        proc: PrimaryProcBased::empty(),
        proc2: SecondaryProcBased::empty(),
        exit: ExitControls::empty(),
        entry: EntryControls::empty(),
    };
}

/// The values to write into the five control fields of the VMCS (see
/// [`ControlWord::field`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Controls {
    pub pin: u32,
    pub proc: u32,
    pub proc2: u32,
    pub exit: u32,
    pub entry: u32,
}

impl Controls {
    /// The value of `word`.
    pub const fn get(&self, word: ControlWord) -> u32 {
        match word {
            ControlWord::Pin => self.pin,
            ControlWord::Primary => self.proc,
            ControlWord::Secondary => self.proc2,
            ControlWord::Exit => self.exit,
            ControlWord::Entry => self.entry,
        }
    }

    /// Checks the combinations SDM Vol. 3C "Checks on VMX Controls" forbids between
    /// controls (VM entry fails "invalid control field" on any of them). The secondary
    /// word counts only when "activate secondary controls" is set, as for the CPU.
    ///
    /// [`compute`] runs this; code that toggles controls at run time (e.g. NMI-window
    /// exiting) can run it again. Returns the first rule broken, in the order of
    /// [`Inconsistency`].
    pub fn check(&self) -> Result<(), Inconsistency> {
        let pin = PinBased::from_bits_retain(self.pin);
        let proc = PrimaryProcBased::from_bits_retain(self.proc);
        let proc2 = if proc.contains(PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS) {
            SecondaryProcBased::from_bits_retain(self.proc2)
        } else {
            SecondaryProcBased::empty()
        };
        let exit = ExitControls::from_bits_retain(self.exit);
        let ept = proc2.contains(SecondaryProcBased::ENABLE_EPT);
        let apic_virtualization = SecondaryProcBased::VIRTUALIZE_X2APIC
            | SecondaryProcBased::APIC_REGISTER_VIRTUALIZATION
            | SecondaryProcBased::VIRTUAL_INTERRUPT_DELIVERY;

        let broken = [
            (
                !pin.contains(PinBased::NMI_EXITING) && pin.contains(PinBased::VIRTUAL_NMIS),
                Inconsistency::VirtualNmisWithoutNmiExiting,
            ),
            (
                !pin.contains(PinBased::VIRTUAL_NMIS) && proc.contains(PrimaryProcBased::NMI_WINDOW_EXITING),
                Inconsistency::NmiWindowExitingWithoutVirtualNmis,
            ),
            (
                !proc.contains(PrimaryProcBased::USE_TPR_SHADOW) && proc2.intersects(apic_virtualization),
                Inconsistency::ApicVirtualizationWithoutTprShadow,
            ),
            (
                proc2.contains(SecondaryProcBased::VIRTUALIZE_X2APIC | SecondaryProcBased::VIRTUALIZE_APIC_ACCESSES),
                Inconsistency::X2apicAndApicAccessVirtualization,
            ),
            (
                proc2.contains(SecondaryProcBased::VIRTUAL_INTERRUPT_DELIVERY)
                    && !pin.contains(PinBased::EXTERNAL_INTERRUPT_EXITING),
                Inconsistency::InterruptDeliveryWithoutExternalInterruptExiting,
            ),
            (
                pin.contains(PinBased::POSTED_INTERRUPTS)
                    && !(proc2.contains(SecondaryProcBased::VIRTUAL_INTERRUPT_DELIVERY)
                        && exit.contains(ExitControls::ACK_INTERRUPT_ON_EXIT)),
                Inconsistency::PostedInterruptsWithoutDeliveryAndAck,
            ),
            (
                proc2.contains(SecondaryProcBased::UNRESTRICTED_GUEST) && !ept,
                Inconsistency::UnrestrictedGuestWithoutEpt,
            ),
            (proc2.contains(SecondaryProcBased::ENABLE_PML) && !ept, Inconsistency::PmlWithoutEpt),
            (
                exit.contains(ExitControls::SAVE_PREEMPTION_TIMER) && !pin.contains(PinBased::PREEMPTION_TIMER),
                Inconsistency::SavePreemptionTimerWithoutTimer,
            ),
        ];
        match broken.into_iter().find(|&(is_broken, _)| is_broken) {
            Some((_, rule)) => Err(rule),
            None => Ok(()),
        }
    }
}

/// One of the five control words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlWord {
    Pin,
    Primary,
    Secondary,
    Exit,
    Entry,
}

impl ControlWord {
    /// In VMCS (and SDM) order.
    pub const ALL: [ControlWord; 5] =
        [ControlWord::Pin, ControlWord::Primary, ControlWord::Secondary, ControlWord::Exit, ControlWord::Entry];

    /// The SDM's name of the word.
    pub const fn name(self) -> &'static str {
        match self {
            ControlWord::Pin => "pin-based VM-execution controls",
            ControlWord::Primary => "primary processor-based VM-execution controls",
            ControlWord::Secondary => "secondary processor-based VM-execution controls",
            ControlWord::Exit => "VM-exit controls",
            ControlWord::Entry => "VM-entry controls",
        }
    }

    /// The short form used before "bit N" in messages.
    const fn short(self) -> &'static str {
        match self {
            ControlWord::Pin => "pin-based control",
            ControlWord::Primary => "primary control",
            ControlWord::Secondary => "secondary control",
            ControlWord::Exit => "VM-exit control",
            ControlWord::Entry => "VM-entry control",
        }
    }

    /// The VMCS field the word is written to.
    pub const fn field(self) -> Field32 {
        match self {
            ControlWord::Pin => Field32::PinBasedControls,
            ControlWord::Primary => Field32::PrimaryProcBasedControls,
            ControlWord::Secondary => Field32::SecondaryProcBasedControls,
            ControlWord::Exit => Field32::ExitControls,
            ControlWord::Entry => Field32::EntryControls,
        }
    }

    /// The name of control `bit` of this word (SDM Vol. 3C "VM-Execution Control Fields",
    /// "VM-Exit Control Fields", "VM-Entry Control Fields"), or `None` for a reserved or
    /// not-yet-named bit.
    pub const fn bit_name(self, bit: u32) -> Option<&'static str> {
        let name = match (self, bit) {
            (ControlWord::Pin, 0) => "external-interrupt exiting",
            (ControlWord::Pin, 3) => "NMI exiting",
            (ControlWord::Pin, 5) => "virtual NMIs",
            (ControlWord::Pin, 6) => "VMX-preemption timer",
            (ControlWord::Pin, 7) => "posted-interrupt processing",
            (ControlWord::Primary, 2) => "interrupt-window exiting",
            (ControlWord::Primary, 3) => "TSC offsetting",
            (ControlWord::Primary, 7) => "HLT exiting",
            (ControlWord::Primary, 9) => "INVLPG exiting",
            (ControlWord::Primary, 10) => "MWAIT exiting",
            (ControlWord::Primary, 11) => "RDPMC exiting",
            (ControlWord::Primary, 12) => "RDTSC exiting",
            (ControlWord::Primary, 15) => "CR3-load exiting",
            (ControlWord::Primary, 16) => "CR3-store exiting",
            (ControlWord::Primary, 17) => "tertiary controls",
            (ControlWord::Primary, 19) => "CR8-load exiting",
            (ControlWord::Primary, 20) => "CR8-store exiting",
            (ControlWord::Primary, 21) => "TPR shadow",
            (ControlWord::Primary, 22) => "NMI-window exiting",
            (ControlWord::Primary, 23) => "MOV-DR exiting",
            (ControlWord::Primary, 24) => "unconditional I/O exiting",
            (ControlWord::Primary, 25) => "I/O bitmaps",
            (ControlWord::Primary, 27) => "monitor trap flag",
            (ControlWord::Primary, 28) => "MSR bitmaps",
            (ControlWord::Primary, 29) => "MONITOR exiting",
            (ControlWord::Primary, 30) => "PAUSE exiting",
            (ControlWord::Primary, 31) => "secondary controls",
            (ControlWord::Secondary, 0) => "APIC-access virtualization",
            (ControlWord::Secondary, 1) => "EPT",
            (ControlWord::Secondary, 2) => "descriptor-table exiting",
            (ControlWord::Secondary, 3) => "RDTSCP",
            (ControlWord::Secondary, 4) => "x2APIC virtualization",
            (ControlWord::Secondary, 5) => "VPID",
            (ControlWord::Secondary, 6) => "WBINVD exiting",
            (ControlWord::Secondary, 7) => "unrestricted guest",
            (ControlWord::Secondary, 8) => "APIC-register virtualization",
            (ControlWord::Secondary, 9) => "virtual-interrupt delivery",
            (ControlWord::Secondary, 10) => "PAUSE-loop exiting",
            (ControlWord::Secondary, 11) => "RDRAND exiting",
            (ControlWord::Secondary, 12) => "INVPCID",
            (ControlWord::Secondary, 13) => "VM functions",
            (ControlWord::Secondary, 14) => "VMCS shadowing",
            (ControlWord::Secondary, 15) => "ENCLS exiting",
            (ControlWord::Secondary, 16) => "RDSEED exiting",
            (ControlWord::Secondary, 17) => "PML",
            (ControlWord::Secondary, 18) => "EPT-violation #VE",
            (ControlWord::Secondary, 19) => "concealing VMX from Intel PT",
            (ControlWord::Secondary, 20) => "XSAVES/XRSTORS",
            (ControlWord::Secondary, 22) => "mode-based execute control for EPT",
            (ControlWord::Secondary, 23) => "sub-page write permissions for EPT",
            (ControlWord::Secondary, 24) => "Intel PT using guest-physical addresses",
            (ControlWord::Secondary, 25) => "TSC scaling",
            (ControlWord::Secondary, 26) => "user wait and pause",
            (ControlWord::Secondary, 28) => "ENCLV exiting",
            (ControlWord::Exit, 2) => "save debug controls",
            (ControlWord::Exit, 9) => "64-bit host (host address-space size)",
            (ControlWord::Exit, 12) => "load IA32_PERF_GLOBAL_CTRL on exit",
            (ControlWord::Exit, 15) => "acknowledge interrupt on exit",
            (ControlWord::Exit, 18) => "save IA32_PAT",
            (ControlWord::Exit, 19) => "load host IA32_PAT",
            (ControlWord::Exit, 20) => "save IA32_EFER",
            (ControlWord::Exit, 21) => "load host IA32_EFER",
            (ControlWord::Exit, 22) => "save VMX-preemption timer value",
            (ControlWord::Exit, 23) => "clear IA32_BNDCFGS",
            (ControlWord::Exit, 24) => "concealing VMX from Intel PT",
            (ControlWord::Exit, 25) => "clear IA32_RTIT_CTL",
            (ControlWord::Exit, 28) => "load host CET state",
            (ControlWord::Entry, 2) => "load debug controls",
            (ControlWord::Entry, 9) => "IA-32e mode guest",
            (ControlWord::Entry, 10) => "entry to SMM",
            (ControlWord::Entry, 11) => "deactivate dual-monitor treatment",
            (ControlWord::Entry, 13) => "load IA32_PERF_GLOBAL_CTRL on entry",
            (ControlWord::Entry, 14) => "load guest IA32_PAT",
            (ControlWord::Entry, 15) => "load guest IA32_EFER",
            (ControlWord::Entry, 16) => "load IA32_BNDCFGS",
            (ControlWord::Entry, 17) => "concealing VMX from Intel PT",
            (ControlWord::Entry, 18) => "load IA32_RTIT_CTL",
            (ControlWord::Entry, 20) => "load guest CET state",
            _ => return None,
        };
        Some(name)
    }
}

impl fmt::Display for ControlWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The named features behind some bits of one control word. Displays as
/// `EPT (secondary control bit 1), unrestricted guest (bit 7)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureNames {
    word: ControlWord,
    bits: u32,
}

impl FeatureNames {
    pub const fn new(word: ControlWord, bits: u32) -> Self {
        FeatureNames { word, bits }
    }

    pub const fn word(&self) -> ControlWord {
        self.word
    }

    pub const fn bits(&self) -> u32 {
        self.bits
    }

    /// `(bit, name)` for each bit, lowest first; reserved bits are named "reserved bit".
    pub fn iter(&self) -> impl Iterator<Item = (u32, &'static str)> + '_ {
        (0..32)
            .filter(|bit| self.bits & (1 << bit) != 0)
            .map(|bit| (bit, self.word.bit_name(bit).unwrap_or("reserved bit")))
    }
}

impl fmt::Display for FeatureNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (bit, name)) in self.iter().enumerate() {
            if i == 0 {
                write!(f, "{name} ({} bit {bit})", self.word.short())?;
            } else {
                write!(f, ", {name} (bit {bit})")?;
            }
        }
        Ok(())
    }
}

/// A combination of controls that SDM Vol. 3C "Checks on VMX Controls" forbids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Inconsistency {
    /// "Virtual NMIs" without "NMI exiting".
    VirtualNmisWithoutNmiExiting,
    /// "NMI-window exiting" without "virtual NMIs".
    NmiWindowExitingWithoutVirtualNmis,
    /// "Virtualize x2APIC mode", "APIC-register virtualization" or "virtual-interrupt
    /// delivery" without "use TPR shadow".
    ApicVirtualizationWithoutTprShadow,
    /// "Virtualize x2APIC mode" together with "virtualize APIC accesses".
    X2apicAndApicAccessVirtualization,
    /// "Virtual-interrupt delivery" without "external-interrupt exiting".
    InterruptDeliveryWithoutExternalInterruptExiting,
    /// "Process posted interrupts" without both "virtual-interrupt delivery" and
    /// "acknowledge interrupt on exit".
    PostedInterruptsWithoutDeliveryAndAck,
    /// "Unrestricted guest" without "enable EPT".
    UnrestrictedGuestWithoutEpt,
    /// "Enable PML" without "enable EPT".
    PmlWithoutEpt,
    /// "Save VMX-preemption timer value" without "activate VMX-preemption timer".
    SavePreemptionTimerWithoutTimer,
}

impl Inconsistency {
    /// The rule, in the SDM's control names.
    pub const fn rule(self) -> &'static str {
        match self {
            Inconsistency::VirtualNmisWithoutNmiExiting => "\"virtual NMIs\" requires \"NMI exiting\"",
            Inconsistency::NmiWindowExitingWithoutVirtualNmis => "\"NMI-window exiting\" requires \"virtual NMIs\"",
            Inconsistency::ApicVirtualizationWithoutTprShadow => {
                "\"virtualize x2APIC mode\", \"APIC-register virtualization\" and \"virtual-interrupt delivery\" \
                 require \"use TPR shadow\""
            }
            Inconsistency::X2apicAndApicAccessVirtualization => {
                "\"virtualize x2APIC mode\" excludes \"virtualize APIC accesses\""
            }
            Inconsistency::InterruptDeliveryWithoutExternalInterruptExiting => {
                "\"virtual-interrupt delivery\" requires \"external-interrupt exiting\""
            }
            Inconsistency::PostedInterruptsWithoutDeliveryAndAck => {
                "\"process posted interrupts\" requires \"virtual-interrupt delivery\" and \"acknowledge interrupt on exit\""
            }
            Inconsistency::UnrestrictedGuestWithoutEpt => "\"unrestricted guest\" requires \"enable EPT\"",
            Inconsistency::PmlWithoutEpt => "\"enable PML\" requires \"enable EPT\"",
            Inconsistency::SavePreemptionTimerWithoutTimer => {
                "\"save VMX-preemption timer value\" requires \"activate VMX-preemption timer\""
            }
        }
    }
}

impl fmt::Display for Inconsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.rule())
    }
}

/// Why [`compute`] refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlsError {
    /// `bits` of `word` would have to be 1 but the CPU does not allow it: wanted bits the
    /// CPU lacks (or, with an inconsistent capability MSR, a required bit it forbids).
    /// `features` names them.
    Unsupported { word: ControlWord, bits: u32, features: FeatureNames },
    /// Secondary controls were wanted but the CPU cannot activate them.
    SecondaryControlsUnavailable { wanted: SecondaryProcBased },
    /// The request breaks a rule of SDM Vol. 3C "Checks on VMX Controls" (a bug in the
    /// request, whatever the CPU).
    Inconsistent(Inconsistency),
}

impl ControlsError {
    fn unsupported(word: ControlWord, bits: u32) -> Self {
        ControlsError::Unsupported { word, bits, features: FeatureNames::new(word, bits) }
    }
}

/// What the user can do about a missing feature.
const WHAT_TO_DO: &str = "Ferrovisor needs a CPU with these VT-x features; in Bochs use cpu model corei7_skylake_x";

impl fmt::Display for ControlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlsError::Unsupported { features, .. } => {
                write!(f, "the CPU cannot enable: {features}; {WHAT_TO_DO}")
            }
            ControlsError::SecondaryControlsUnavailable { wanted } => write!(
                f,
                "the CPU has no secondary processor-based controls, so it cannot enable: {}; {WHAT_TO_DO}",
                FeatureNames::new(ControlWord::Secondary, wanted.bits())
            ),
            ControlsError::Inconsistent(rule) => write!(
                f,
                "inconsistent VMX controls: {rule} (SDM Vol. 3C \"Checks on VMX Controls\"); \
                 VM entry would fail, this is a Ferrovisor bug"
            ),
        }
    }
}

/// The five control words for `req` on a CPU with `caps` (algorithm: module docs).
///
/// Errors, in this order: [`ControlsError::Inconsistent`] (checked on wanted plus
/// required bits, before asking whether the CPU allows them),
/// [`ControlsError::SecondaryControlsUnavailable`], then [`ControlsError::Unsupported`]
/// for the first word, in [`ControlWord::ALL`] order, with a bit the CPU does not allow.
pub fn compute(caps: &VmxCapabilities, req: &ControlRequest) -> Result<Controls, ControlsError> {
    let mut proc = req.proc;
    if !req.proc2.is_empty() {
        proc |= PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS;
    }
    let proc2_allowed = if caps.has_secondary_controls() { caps.proc2() } else { None };

    // The values `adjust` yields when the CPU allows them.
    let with_required = Controls {
        pin: req.pin.bits() | caps.pin().allowed0,
        proc: proc.bits() | caps.proc().allowed0,
        proc2: req.proc2.bits() | proc2_allowed.map_or(0, |a| a.allowed0),
        exit: req.exit.bits() | caps.exit().allowed0,
        entry: req.entry.bits() | caps.entry().allowed0,
    };
    with_required.check().map_err(ControlsError::Inconsistent)?;

    let proc2_allowed = match proc2_allowed {
        Some(allowed) => allowed,
        None if req.proc2.is_empty() => AllowedBits { allowed0: 0, allowed1: 0 },
        None => return Err(ControlsError::SecondaryControlsUnavailable { wanted: req.proc2 }),
    };
    let adjust = |word: ControlWord, allowed: AllowedBits, wanted: u32| {
        allowed.adjust(wanted).map_err(|ControlError::Unsupported { bits }| ControlsError::unsupported(word, bits))
    };
    Ok(Controls {
        pin: adjust(ControlWord::Pin, caps.pin(), req.pin.bits())?,
        proc: adjust(ControlWord::Primary, caps.proc(), proc.bits())?,
        proc2: adjust(ControlWord::Secondary, proc2_allowed, req.proc2.bits())?,
        exit: adjust(ControlWord::Exit, caps.exit(), req.exit.bits())?,
        entry: adjust(ControlWord::Entry, caps.entry(), req.entry.bits())?,
    })
}

/// What Ferrovisor asks of every vCPU on a CPU with `caps`. Required features are asked
/// for unconditionally (a CPU without them is refused by [`compute`], by name); optional
/// ones only where `caps` allows them, which is also exactly when the CPU has the
/// instruction at all.
///
/// Pin-based:
/// - external-interrupt exiting: host interrupts always reach the host;
/// - NMI exiting and virtual NMIs: NMIs are the host's (the stop path uses them); virtual
///   NMIs track the guest's NMI blocking for injected NMIs and allow NMI-window exiting;
/// - VMX-preemption timer: the scheduler's time slice, and the only thing that bounds
///   a guest that never exits (it is required: a CPU without it is refused).
///
/// Primary processor-based:
/// - HLT exiting (an idle guest yields its CPU), I/O bitmaps and MSR bitmaps (which
///   ports and MSRs exit is decided per port/MSR), activate secondary controls (added by
///   [`compute`]);
/// - use TSC offsetting: each vCPU's TSC is the host's plus its own offset, which a
///   guest's write of IA32_TSC or IA32_TSC_ADJUST moves (`guest_msrs::tsc`); RDTSC and
///   RDTSCP stay exit-free;
/// - RDPMC exiting: the performance counters are the host's (the CPU policy shows no
///   PMU), and RDPMC at CPL 0 would read them;
/// - MOV-DR exiting: DR0-3 and DR6 are not in the VMCS, so they are switched lazily
///   (`vmexit::debug`): a vCPU's first MOV DR exits, loads its own debug registers and
///   turns this control off for the rest of its slices;
/// - CR8-load and CR8-store exiting: without a TPR shadow, a guest MOV to CR8 would write
///   the *physical* local APIC's TPR (SDM Vol. 3C "Changes to Instruction Behavior in VMX
///   Non-Root Operation") and could mask the host's interrupts. The TRUE MSRs let these
///   default-1 bits be 0, so they are asked for explicitly; CR8 is the virtual TPR;
/// - MWAIT exiting and MONITOR exiting *(if available)*: a guest must not put the
///   physical CPU into a deep C-state, where the preemption timer may stop and wake-up
///   latency is the guest's choice. The exit handler decides what the guest sees
///   (executing MWAIT as a NOP is what KVM does);
/// - not wanted: INVLPG exiting and CR3-load/store exiting (EPT and VPID make guest
///   paging safe to run natively; the TRUE MSRs let CR3 exiting be 0, legacy CPUs force
///   it to 1), interrupt-window exiting (toggled at run time while an interrupt waits to
///   be injected), RDTSC exiting.
///
/// Secondary processor-based:
/// - enable EPT, enable VPID, unrestricted guest (real-mode guests run natively) and
///   WBINVD exiting (a guest cache flush must not stall the host; INVD always exits);
/// - enable RDTSCP, enable INVPCID, enable XSAVES/XRSTORS *(if available)*: without them
///   these instructions raise #UD in the guest even though CPUID advertises them. With
///   XSAVES enabled the XSS-exiting bitmap field must be written (0: no exits).
///
/// VM-exit:
/// - host address-space size (the host is 64-bit), acknowledge interrupt on exit (the
///   exit reports the vector, which the host must then dispatch), save/load IA32_PAT
///   and IA32_EFER, save debug controls (guest DR7/IA32_DEBUGCTL survive exits),
///   save VMX-preemption timer value *(with the timer, if available)*.
///
/// VM-entry:
/// - load IA32_PAT, load IA32_EFER, load debug controls (the guest's DR7 and
///   IA32_DEBUGCTL come from the VMCS). "IA-32e mode guest" is set per vCPU.
///
/// Debug controls are default1: legacy MSRs force them on, TRUE MSRs let them be 0. They
/// are asked for so that every CPU behaves the same.
pub fn default_request(caps: &VmxCapabilities) -> ControlRequest {
    let mut pin = PinBased::EXTERNAL_INTERRUPT_EXITING | PinBased::NMI_EXITING | PinBased::VIRTUAL_NMIS;
    let mut proc = PrimaryProcBased::HLT_EXITING
        | PrimaryProcBased::USE_TSC_OFFSETTING
        | PrimaryProcBased::RDPMC_EXITING
        | PrimaryProcBased::MOV_DR_EXITING
        | PrimaryProcBased::USE_IO_BITMAPS
        | PrimaryProcBased::USE_MSR_BITMAPS
        | PrimaryProcBased::CR8_LOAD_EXITING
        | PrimaryProcBased::CR8_STORE_EXITING;
    let mut proc2 = SecondaryProcBased::ENABLE_EPT
        | SecondaryProcBased::ENABLE_VPID
        | SecondaryProcBased::UNRESTRICTED_GUEST
        | SecondaryProcBased::WBINVD_EXITING;
    let mut exit = ExitControls::SAVE_DEBUG_CONTROLS
        | ExitControls::HOST_ADDRESS_SPACE_SIZE
        | ExitControls::ACK_INTERRUPT_ON_EXIT
        | ExitControls::SAVE_PAT
        | ExitControls::LOAD_PAT
        | ExitControls::SAVE_EFER
        | ExitControls::LOAD_EFER;
    let entry = EntryControls::LOAD_DEBUG_CONTROLS | EntryControls::LOAD_PAT | EntryControls::LOAD_EFER;

    pin |= PinBased::PREEMPTION_TIMER;
    if caps.exit_allows(ExitControls::SAVE_PREEMPTION_TIMER) {
        exit |= ExitControls::SAVE_PREEMPTION_TIMER;
    }
    for optional in [PrimaryProcBased::MWAIT_EXITING, PrimaryProcBased::MONITOR_EXITING] {
        if caps.proc_allows(optional) {
            proc |= optional;
        }
    }
    for optional in
        [SecondaryProcBased::ENABLE_RDTSCP, SecondaryProcBased::ENABLE_INVPCID, SecondaryProcBased::ENABLE_XSAVES]
    {
        if caps.proc2_allows(optional) {
            proc2 |= optional;
        }
    }
    ControlRequest { pin, proc, proc2, exit, entry }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmx::caps::RawVmxMsrs;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    /// A Skylake server (the shared fixture of caps.rs): TRUE controls, EPT, VPID,
    /// unrestricted guest, preemption timer, XSAVES.
    use crate::vmx::caps::test_fixtures::skylake as skylake_msrs;

    fn skylake() -> VmxCapabilities {
        VmxCapabilities::decode(&skylake_msrs())
    }

    /// A Core 2: no TRUE MSRs, no secondary controls, no preemption timer, no PAT/EFER
    /// loading.
    fn core2() -> VmxCapabilities {
        VmxCapabilities::decode(&RawVmxMsrs {
            basic: 0x005a_0800_0000_000d,
            pinbased: 0x0000_003f_0000_0016,
            procbased: 0x7ff9_fffe_0401_e172,
            exit: 0x0003_ffff_0003_6dff,
            entry: 0x0000_3fff_0000_11ff,
            misc: 0x0000_0000_0004_01c0,
            cr0_fixed0: 0x8000_0021,
            cr0_fixed1: 0xffff_ffff,
            cr4_fixed0: 0x0000_2000,
            cr4_fixed1: 0x0000_27ff,
            ..RawVmxMsrs::default()
        })
    }

    /// Skylake values with the secondary allowed-1 bits replaced.
    fn skylake_with_proc2_allowed1(allowed1: u32) -> VmxCapabilities {
        VmxCapabilities::decode(&RawVmxMsrs { procbased2: Some(u64::from(allowed1) << 32), ..skylake_msrs() })
    }

    #[test]
    fn skylake_default_request_yields_exact_control_words() {
        let controls = compute(&skylake(), &default_request(&skylake())).unwrap();
        assert_eq!(
            controls,
            Controls {
                // Wanted 0, 3, 5, 6; required (reserved) 1, 2, 4.
                pin: 0x0000_007f,
                // Wanted 3, 7, 10, 11, 19, 20, 23, 25, 28, 29, 31; required 1, 4-6, 8,
                // 13, 14, 26. CR3-load/store exiting (15, 16) stay 0.
                proc: 0xb698_6dfa,
                // EPT 1, RDTSCP 3, VPID 5, WBINVD 6, UG 7, INVPCID 12, XSAVES 20.
                proc2: 0x0010_10ea,
                // Wanted 2, 9, 15, 18-22; required 0, 1, 3-8, 10, 11, 13, 14, 16, 17.
                exit: 0x007f_efff,
                // Wanted 2, 14, 15; required 0, 1, 3-8, 12.
                entry: 0x0000_d1ff,
            }
        );
        assert_eq!(controls.check(), Ok(()));
    }

    #[test]
    fn skylake_default_request_lists_exactly_what_ferrovisor_wants() {
        let req = default_request(&skylake());
        assert_eq!(
            req.pin,
            PinBased::EXTERNAL_INTERRUPT_EXITING
                | PinBased::NMI_EXITING
                | PinBased::VIRTUAL_NMIS
                | PinBased::PREEMPTION_TIMER
        );
        assert_eq!(
            req.proc,
            PrimaryProcBased::HLT_EXITING
                | PrimaryProcBased::USE_TSC_OFFSETTING
                | PrimaryProcBased::RDPMC_EXITING
                | PrimaryProcBased::MOV_DR_EXITING
                | PrimaryProcBased::MWAIT_EXITING
                | PrimaryProcBased::USE_IO_BITMAPS
                | PrimaryProcBased::USE_MSR_BITMAPS
                | PrimaryProcBased::MONITOR_EXITING
                | PrimaryProcBased::CR8_LOAD_EXITING
                | PrimaryProcBased::CR8_STORE_EXITING
        );
        assert!(!req.proc.intersects(
            PrimaryProcBased::INVLPG_EXITING
                | PrimaryProcBased::CR3_LOAD_EXITING
                | PrimaryProcBased::CR3_STORE_EXITING
                | PrimaryProcBased::INTERRUPT_WINDOW_EXITING
        ));
        assert_eq!(req.proc2.bits(), 0x0010_10ea);
        assert_eq!(req.exit.bits(), 0x007c_8204);
        assert_eq!(req.entry, EntryControls::LOAD_DEBUG_CONTROLS | EntryControls::LOAD_PAT | EntryControls::LOAD_EFER);
        assert!(!req.entry.contains(EntryControls::IA32E_MODE_GUEST));
    }

    #[test]
    fn optional_features_are_left_out_where_the_cpu_lacks_them() {
        // No XSAVES/INVPCID/RDTSCP.
        let caps = VmxCapabilities::decode(&RawVmxMsrs { procbased2: Some(0x0000_00e2_0000_0000), ..skylake_msrs() });
        let req = default_request(&caps);
        assert_eq!(
            req.proc2,
            SecondaryProcBased::ENABLE_EPT
                | SecondaryProcBased::ENABLE_VPID
                | SecondaryProcBased::WBINVD_EXITING
                | SecondaryProcBased::UNRESTRICTED_GUEST
        );
        let controls = compute(&caps, &req).unwrap();
        assert_eq!(controls.proc2, 0x0000_00e2);
    }

    #[test]
    fn a_cpu_without_the_preemption_timer_is_refused_by_name() {
        // Nothing else bounds a guest that never exits.
        let caps =
            VmxCapabilities::decode(&RawVmxMsrs { true_pinbased: Some(0x0000_003f_0000_0016), ..skylake_msrs() });
        let err = compute(&caps, &default_request(&caps)).unwrap_err();
        assert_eq!(
            err,
            ControlsError::Unsupported {
                word: ControlWord::Pin,
                bits: 0x40,
                features: FeatureNames::new(ControlWord::Pin, 0x40)
            }
        );
    }

    #[test]
    fn a_cpu_without_unrestricted_guest_is_refused_by_name() {
        let caps = skylake_with_proc2_allowed1(0x021f_fc7f);
        let err = compute(&caps, &default_request(&caps)).unwrap_err();
        assert_eq!(
            err,
            ControlsError::Unsupported {
                word: ControlWord::Secondary,
                bits: 0x80,
                features: FeatureNames::new(ControlWord::Secondary, 0x80)
            }
        );
        assert_eq!(
            err.to_string(),
            "the CPU cannot enable: unrestricted guest (secondary control bit 7); Ferrovisor needs a CPU with \
             these VT-x features; in Bochs use cpu model corei7_skylake_x"
        );
    }

    #[test]
    fn every_missing_feature_of_a_word_is_named() {
        // Neither EPT (1) nor unrestricted guest (7).
        let caps = skylake_with_proc2_allowed1(0x021f_fc7d);
        let err = compute(&caps, &default_request(&caps)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the CPU cannot enable: EPT (secondary control bit 1), unrestricted guest (bit 7); Ferrovisor needs \
             a CPU with these VT-x features; in Bochs use cpu model corei7_skylake_x"
        );
    }

    #[test]
    fn a_wanted_bit_the_cpu_forbids_is_reported_with_its_exact_bits() {
        // Skylake's pin-based allowed-1 is 0x7f: posted interrupts (7) may not be 1.
        let req = ControlRequest {
            pin: PinBased::EXTERNAL_INTERRUPT_EXITING | PinBased::POSTED_INTERRUPTS,
            proc2: SecondaryProcBased::VIRTUAL_INTERRUPT_DELIVERY,
            proc: PrimaryProcBased::USE_TPR_SHADOW,
            exit: ExitControls::ACK_INTERRUPT_ON_EXIT,
            ..ControlRequest::NONE
        };
        let err = compute(&skylake(), &req).unwrap_err();
        assert_eq!(err, ControlsError::unsupported(ControlWord::Pin, 0x80));
        assert_eq!(
            err.to_string(),
            "the CPU cannot enable: posted-interrupt processing (pin-based control bit 7); Ferrovisor needs a \
             CPU with these VT-x features; in Bochs use cpu model corei7_skylake_x"
        );
        // Bits outside any named control are reported too.
        let exit = ControlRequest { exit: ExitControls::from_bits_retain(0x8000_0000), ..ControlRequest::NONE };
        assert_eq!(compute(&skylake(), &exit), Err(ControlsError::unsupported(ControlWord::Exit, 0x8000_0000)));
        assert_eq!(
            FeatureNames::new(ControlWord::Exit, 0x8000_0000).to_string(),
            "reserved bit (VM-exit control bit 31)"
        );
    }

    #[test]
    fn the_first_word_in_vmcs_order_is_reported() {
        // Skylake allows neither VM-entry control 31 nor primary control 17 (tertiary).
        let req = ControlRequest { entry: EntryControls::from_bits_retain(1 << 31), ..ControlRequest::NONE };
        assert_eq!(compute(&skylake(), &req), Err(ControlsError::unsupported(ControlWord::Entry, 1 << 31)));
        let req = ControlRequest { proc: PrimaryProcBased::from_bits_retain(1 << 17), ..req };
        assert_eq!(compute(&skylake(), &req), Err(ControlsError::unsupported(ControlWord::Primary, 1 << 17)));
    }

    #[test]
    fn a_cpu_without_secondary_controls_is_refused_naming_the_features() {
        let err = compute(&core2(), &default_request(&core2())).unwrap_err();
        let wanted = SecondaryProcBased::ENABLE_EPT
            | SecondaryProcBased::ENABLE_VPID
            | SecondaryProcBased::WBINVD_EXITING
            | SecondaryProcBased::UNRESTRICTED_GUEST;
        assert_eq!(err, ControlsError::SecondaryControlsUnavailable { wanted });
        assert_eq!(
            err.to_string(),
            "the CPU has no secondary processor-based controls, so it cannot enable: EPT (secondary control bit \
             1), VPID (bit 5), WBINVD exiting (bit 6), unrestricted guest (bit 7); Ferrovisor needs a CPU with \
             these VT-x features; in Bochs use cpu model corei7_skylake_x"
        );
    }

    #[test]
    fn without_secondary_controls_the_secondary_word_is_zero_and_not_activated() {
        let req = ControlRequest { proc: PrimaryProcBased::HLT_EXITING, ..ControlRequest::NONE };
        let controls = compute(&core2(), &req).unwrap();
        assert_eq!(controls.proc2, 0);
        assert_eq!(controls.proc & PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS.bits(), 0);
    }

    #[test]
    fn legacy_default1_bits_are_forced_on() {
        // Core 2 has no TRUE MSRs: CR3-load/store exiting (15, 16), save/load debug
        // controls (2) and the reserved default1 bits must be 1 whether wanted or not.
        let req = ControlRequest {
            pin: PinBased::EXTERNAL_INTERRUPT_EXITING | PinBased::NMI_EXITING | PinBased::VIRTUAL_NMIS,
            proc: PrimaryProcBased::HLT_EXITING | PrimaryProcBased::USE_IO_BITMAPS | PrimaryProcBased::USE_MSR_BITMAPS,
            exit: ExitControls::HOST_ADDRESS_SPACE_SIZE | ExitControls::ACK_INTERRUPT_ON_EXIT,
            ..ControlRequest::NONE
        };
        assert_eq!(
            compute(&core2(), &req),
            Ok(Controls { pin: 0x0000_003f, proc: 0x1601_e1f2, proc2: 0, exit: 0x0003_efff, entry: 0x0000_11ff })
        );
        assert_eq!(
            compute(&core2(), &ControlRequest::NONE),
            Ok(Controls { pin: 0x0000_0016, proc: 0x0401_e172, proc2: 0, exit: 0x0003_6dff, entry: 0x0000_11ff })
        );
    }

    #[test]
    fn true_controls_let_unwanted_default1_bits_be_zero() {
        assert_eq!(
            compute(&skylake(), &ControlRequest::NONE),
            Ok(Controls { pin: 0x0000_0016, proc: 0x0400_6172, proc2: 0, exit: 0x0003_6dfb, entry: 0x0000_11fb })
        );
    }

    #[test]
    fn secondary_controls_activate_themselves() {
        let req = ControlRequest { proc2: SecondaryProcBased::ENABLE_EPT, ..ControlRequest::NONE };
        let controls = compute(&skylake(), &req).unwrap();
        assert_eq!(controls.proc, 0x8400_6172);
        assert_eq!(controls.proc2, 0x0000_0002);
    }

    #[test]
    fn forbidden_combinations_are_refused_before_asking_the_cpu() {
        let base = default_request(&skylake());
        let cases: Vec<(ControlRequest, Inconsistency)> = alloc::vec![
            (
                ControlRequest { proc2: base.proc2 - SecondaryProcBased::ENABLE_EPT, ..base },
                Inconsistency::UnrestrictedGuestWithoutEpt,
            ),
            (
                ControlRequest { pin: base.pin - PinBased::NMI_EXITING, ..base },
                Inconsistency::VirtualNmisWithoutNmiExiting
            ),
            (
                ControlRequest { pin: base.pin - PinBased::PREEMPTION_TIMER, ..base },
                Inconsistency::SavePreemptionTimerWithoutTimer,
            ),
            (
                ControlRequest {
                    pin: base.pin - PinBased::VIRTUAL_NMIS,
                    proc: base.proc | PrimaryProcBased::NMI_WINDOW_EXITING,
                    ..base
                },
                Inconsistency::NmiWindowExitingWithoutVirtualNmis,
            ),
            (
                ControlRequest { proc2: base.proc2 | SecondaryProcBased::VIRTUALIZE_X2APIC, ..base },
                Inconsistency::ApicVirtualizationWithoutTprShadow,
            ),
            (
                ControlRequest {
                    proc: base.proc | PrimaryProcBased::USE_TPR_SHADOW,
                    proc2: base.proc2
                        | SecondaryProcBased::VIRTUALIZE_X2APIC
                        | SecondaryProcBased::VIRTUALIZE_APIC_ACCESSES,
                    ..base
                },
                Inconsistency::X2apicAndApicAccessVirtualization,
            ),
            (
                ControlRequest {
                    pin: base.pin - PinBased::EXTERNAL_INTERRUPT_EXITING,
                    proc: base.proc | PrimaryProcBased::USE_TPR_SHADOW,
                    proc2: base.proc2 | SecondaryProcBased::VIRTUAL_INTERRUPT_DELIVERY,
                    ..base
                },
                Inconsistency::InterruptDeliveryWithoutExternalInterruptExiting,
            ),
            (
                ControlRequest { pin: base.pin | PinBased::POSTED_INTERRUPTS, ..base },
                Inconsistency::PostedInterruptsWithoutDeliveryAndAck,
            ),
            (
                ControlRequest {
                    proc2: (base.proc2 | SecondaryProcBased::ENABLE_PML)
                        - SecondaryProcBased::ENABLE_EPT
                        - SecondaryProcBased::UNRESTRICTED_GUEST,
                    ..base
                },
                Inconsistency::PmlWithoutEpt,
            ),
        ];
        for (req, rule) in cases {
            assert_eq!(compute(&skylake(), &req), Err(ControlsError::Inconsistent(rule)), "{rule:?}");
            // The same on a CPU that could not even run the request.
            assert_eq!(compute(&core2(), &req), Err(ControlsError::Inconsistent(rule)), "{rule:?}");
        }
    }

    #[test]
    fn an_inconsistency_names_the_rule_and_the_sdm_section() {
        assert_eq!(
            ControlsError::Inconsistent(Inconsistency::UnrestrictedGuestWithoutEpt).to_string(),
            "inconsistent VMX controls: \"unrestricted guest\" requires \"enable EPT\" (SDM Vol. 3C \"Checks on \
             VMX Controls\"); VM entry would fail, this is a Ferrovisor bug"
        );
    }

    #[test]
    fn secondary_controls_are_ignored_by_the_check_unless_activated() {
        // Unrestricted guest without EPT, but secondary controls not activated.
        let controls = Controls { pin: 0, proc: 0, proc2: 0x80, exit: 0, entry: 0 };
        assert_eq!(controls.check(), Ok(()));
        let activated = Controls { proc: 1 << 31, ..controls };
        assert_eq!(activated.check(), Err(Inconsistency::UnrestrictedGuestWithoutEpt));
    }

    #[test]
    fn control_words_go_to_their_vmcs_fields() {
        let encodings: Vec<u32> = ControlWord::ALL.iter().map(|w| w.field().encoding()).collect();
        assert_eq!(encodings, [0x4000, 0x4002, 0x401E, 0x400C, 0x4012]);
        let c = Controls { pin: 1, proc: 2, proc2: 3, exit: 4, entry: 5 };
        let values: Vec<u32> = ControlWord::ALL.iter().map(|&w| c.get(w)).collect();
        assert_eq!(values, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn feature_names_list_bits_lowest_first() {
        let names = FeatureNames::new(ControlWord::Secondary, 0x0010_00a2);
        let listed: Vec<(u32, &str)> = names.iter().collect();
        assert_eq!(listed, [(1, "EPT"), (5, "VPID"), (7, "unrestricted guest"), (20, "XSAVES/XRSTORS")]);
        assert_eq!(FeatureNames::new(ControlWord::Pin, 0).to_string(), "");
        assert_eq!(ControlWord::Exit.bit_name(22), Some("save VMX-preemption timer value"));
        assert_eq!(ControlWord::Entry.bit_name(31), None);
    }
}
