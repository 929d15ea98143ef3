//! Decoding of the VMX capability MSRs (Intel SDM Vol. 3D, Appendix A).
//!
//! Pure logic, no hardware access: the boot code reads the MSRs (preferably through
//! [`RawVmxMsrs::read_with`], which reads exactly the MSRs that exist) and hands the raw
//! values to [`VmxCapabilities::decode`]. The result answers "may this control be 1?",
//! computes the value of a VMCS control field ([`AllowedBits::adjust`]) and renders a stable
//! `vmx: key=value` report for the boot log.
//!
//! Appendix A section numbers are cited exactly. Sections of Vol. 3C are cited by title
//! because their numbers differ between SDM editions.

use core::fmt;

use bitflags::bitflags;

pub mod msr {
    //! Indices of the MSRs this module decodes (SDM Vol. 4, Table 2-2 "IA-32 Architectural
    //! MSRs"; their meaning is SDM Vol. 3D Appendix A).
    //!
    //! An enum rather than loose `u32` constants: a function that takes a [`VmxMsr`] can
    //! only be asked for one of these MSRs, never a mistyped index.

    /// One VMX-related MSR. The discriminant is the MSR index (the ECX value of RDMSR).
    #[repr(u32)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum VmxMsr {
        /// IA32_FEATURE_CONTROL: the firmware's lock and VMX enables (exists when
        /// CPUID.01H:ECX.VMX\[5\] or .SMX\[6\] is 1).
        FeatureControl = 0x3A,
        /// IA32_VMX_BASIC (Appendix A.1).
        Basic = 0x480,
        /// IA32_VMX_PINBASED_CTLS (A.3.1).
        PinbasedCtls = 0x481,
        /// IA32_VMX_PROCBASED_CTLS (A.3.2).
        ProcbasedCtls = 0x482,
        /// IA32_VMX_EXIT_CTLS (A.4).
        ExitCtls = 0x483,
        /// IA32_VMX_ENTRY_CTLS (A.5).
        EntryCtls = 0x484,
        /// IA32_VMX_MISC (A.6).
        Misc = 0x485,
        /// IA32_VMX_CR0_FIXED0 (A.7).
        Cr0Fixed0 = 0x486,
        /// IA32_VMX_CR0_FIXED1 (A.7).
        Cr0Fixed1 = 0x487,
        /// IA32_VMX_CR4_FIXED0 (A.8).
        Cr4Fixed0 = 0x488,
        /// IA32_VMX_CR4_FIXED1 (A.8).
        Cr4Fixed1 = 0x489,
        /// IA32_VMX_VMCS_ENUM (A.9).
        VmcsEnum = 0x48A,
        /// IA32_VMX_PROCBASED_CTLS2 (A.3.3); optional.
        ProcbasedCtls2 = 0x48B,
        /// IA32_VMX_EPT_VPID_CAP (A.10); optional.
        EptVpidCap = 0x48C,
        /// IA32_VMX_TRUE_PINBASED_CTLS (A.3.1); optional.
        TruePinbasedCtls = 0x48D,
        /// IA32_VMX_TRUE_PROCBASED_CTLS (A.3.2); optional.
        TrueProcbasedCtls = 0x48E,
        /// IA32_VMX_TRUE_EXIT_CTLS (A.4); optional.
        TrueExitCtls = 0x48F,
        /// IA32_VMX_TRUE_ENTRY_CTLS (A.5); optional.
        TrueEntryCtls = 0x490,
        /// IA32_VMX_VMFUNC (A.11); optional.
        Vmfunc = 0x491,
    }

    impl VmxMsr {
        /// Every MSR of this enum, in index order.
        pub const ALL: [VmxMsr; 19] = [
            VmxMsr::FeatureControl,
            VmxMsr::Basic,
            VmxMsr::PinbasedCtls,
            VmxMsr::ProcbasedCtls,
            VmxMsr::ExitCtls,
            VmxMsr::EntryCtls,
            VmxMsr::Misc,
            VmxMsr::Cr0Fixed0,
            VmxMsr::Cr0Fixed1,
            VmxMsr::Cr4Fixed0,
            VmxMsr::Cr4Fixed1,
            VmxMsr::VmcsEnum,
            VmxMsr::ProcbasedCtls2,
            VmxMsr::EptVpidCap,
            VmxMsr::TruePinbasedCtls,
            VmxMsr::TrueProcbasedCtls,
            VmxMsr::TrueExitCtls,
            VmxMsr::TrueEntryCtls,
            VmxMsr::Vmfunc,
        ];

        /// The MSR index to put in ECX for RDMSR/WRMSR.
        pub const fn index(self) -> u32 {
            self as u32
        }
    }
}

use msr::VmxMsr;

// ---------------------------------------------------------------------------------------
// Control bits
// ---------------------------------------------------------------------------------------

bitflags! {
    /// Pin-based VM-execution controls (SDM Vol. 3C, "Pin-Based VM-Execution Controls";
    /// capabilities in Appendix A.3.1).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct PinBased: u32 {
        const EXTERNAL_INTERRUPT_EXITING = 1 << 0;
        const NMI_EXITING = 1 << 3;
        const VIRTUAL_NMIS = 1 << 5;
        const PREEMPTION_TIMER = 1 << 6;
        const POSTED_INTERRUPTS = 1 << 7;
    }
}

bitflags! {
    /// Primary processor-based VM-execution controls (SDM Vol. 3C, "Processor-Based
    /// VM-Execution Controls"; capabilities in Appendix A.3.2).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct PrimaryProcBased: u32 {
        const INTERRUPT_WINDOW_EXITING = 1 << 2;
        const USE_TSC_OFFSETTING = 1 << 3;
        const HLT_EXITING = 1 << 7;
        const INVLPG_EXITING = 1 << 9;
        const MWAIT_EXITING = 1 << 10;
        const RDPMC_EXITING = 1 << 11;
        const CR3_LOAD_EXITING = 1 << 15;
        const CR3_STORE_EXITING = 1 << 16;
        const CR8_LOAD_EXITING = 1 << 19;
        const CR8_STORE_EXITING = 1 << 20;
        const USE_TPR_SHADOW = 1 << 21;
        const NMI_WINDOW_EXITING = 1 << 22;
        const MOV_DR_EXITING = 1 << 23;
        const UNCONDITIONAL_IO_EXITING = 1 << 24;
        const USE_IO_BITMAPS = 1 << 25;
        const MONITOR_TRAP_FLAG = 1 << 27;
        const USE_MSR_BITMAPS = 1 << 28;
        const MONITOR_EXITING = 1 << 29;
        const ACTIVATE_SECONDARY_CONTROLS = 1 << 31;
    }
}

bitflags! {
    /// Secondary processor-based VM-execution controls (SDM Vol. 3C, "Processor-Based
    /// VM-Execution Controls"; capabilities in Appendix A.3.3).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct SecondaryProcBased: u32 {
        const VIRTUALIZE_APIC_ACCESSES = 1 << 0;
        const ENABLE_EPT = 1 << 1;
        const DESCRIPTOR_TABLE_EXITING = 1 << 2;
        const ENABLE_RDTSCP = 1 << 3;
        const VIRTUALIZE_X2APIC = 1 << 4;
        const ENABLE_VPID = 1 << 5;
        const WBINVD_EXITING = 1 << 6;
        const UNRESTRICTED_GUEST = 1 << 7;
        const APIC_REGISTER_VIRTUALIZATION = 1 << 8;
        const VIRTUAL_INTERRUPT_DELIVERY = 1 << 9;
        const PAUSE_LOOP_EXITING = 1 << 10;
        const ENABLE_INVPCID = 1 << 12;
        const ENABLE_VM_FUNCTIONS = 1 << 13;
        const VMCS_SHADOWING = 1 << 14;
        const ENABLE_PML = 1 << 17;
        const EPT_VIOLATION_VE = 1 << 18;
        const ENABLE_XSAVES = 1 << 20;
        const MODE_BASED_EXECUTE_CONTROL = 1 << 22;
        const TSC_SCALING = 1 << 25;
    }
}

bitflags! {
    /// Primary VM-exit controls (SDM Vol. 3C, "VM-Exit Controls"; capabilities in
    /// Appendix A.4).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct ExitControls: u32 {
        /// Default1 bit that only the TRUE MSR lets software clear (A.2, A.4).
        const SAVE_DEBUG_CONTROLS = 1 << 2;
        const HOST_ADDRESS_SPACE_SIZE = 1 << 9;
        const ACK_INTERRUPT_ON_EXIT = 1 << 15;
        const SAVE_PAT = 1 << 18;
        const LOAD_PAT = 1 << 19;
        const SAVE_EFER = 1 << 20;
        const LOAD_EFER = 1 << 21;
        const SAVE_PREEMPTION_TIMER = 1 << 22;
    }
}

bitflags! {
    /// VM-entry controls (SDM Vol. 3C, "VM-Entry Controls"; capabilities in Appendix A.5).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct EntryControls: u32 {
        /// Default1 bit that only the TRUE MSR lets software clear (A.2, A.5).
        const LOAD_DEBUG_CONTROLS = 1 << 2;
        const IA32E_MODE_GUEST = 1 << 9;
        const LOAD_PAT = 1 << 14;
        const LOAD_EFER = 1 << 15;
    }
}

// ---------------------------------------------------------------------------------------
// Allowed settings of one control field
// ---------------------------------------------------------------------------------------

/// A control field's value asked for bits the CPU does not allow to be 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlError {
    /// `bits` may not be 1 on this CPU; VM entry would fail with them set.
    Unsupported { bits: u32 },
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::Unsupported { bits } => {
                write!(f, "VMX control bits {bits:#010x} are not supported by this CPU")
            }
        }
    }
}

/// The allowed settings of one 32-bit VMX control field, as one capability MSR reports
/// them (SDM Vol. 3D Appendix A.3-A.5):
/// - bits 31:0 are the *allowed 0-settings*: bit X set means control X must be 1;
/// - bits 63:32 are the *allowed 1-settings*: bit 32+X set means control X may be 1.
///
/// A consistent MSR has `allowed0 ⊆ allowed1`. The fields are public so tests and the
/// VMCS code can state values directly; [`AllowedBits::adjust`] stays exact even for an
/// inconsistent pair (a bit that must be 1 but may not be is reported as unsupported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AllowedBits {
    /// Bits that must be 1 (the MSR's low half).
    pub allowed0: u32,
    /// Bits that may be 1 (the MSR's high half).
    pub allowed1: u32,
}

impl AllowedBits {
    /// Splits a capability MSR value into its two halves.
    pub const fn from_msr(value: u64) -> Self {
        AllowedBits { allowed0: value as u32, allowed1: (value >> 32) as u32 }
    }

    /// Whether control `bit` (0..=31) must be 1. Out-of-range bits are never required.
    pub const fn must_be_one(&self, bit: u32) -> bool {
        match 1u32.checked_shl(bit) {
            Some(mask) => self.allowed0 & mask != 0,
            None => false,
        }
    }

    /// Whether control `bit` (0..=31) may be 1. Out-of-range bits are never allowed.
    pub const fn may_be_one(&self, bit: u32) -> bool {
        match 1u32.checked_shl(bit) {
            Some(mask) => self.allowed1 & mask != 0,
            None => false,
        }
    }

    /// Whether every bit of `controls` may be 1.
    pub const fn allows(&self, controls: u32) -> bool {
        controls & !self.allowed1 == 0
    }

    /// The field value to write for the controls in `wanted`: `wanted` plus every bit the
    /// CPU requires to be 1. This is the algorithm of SDM Vol. 3D Appendix A.2 for
    /// software that knows which controls it wants: reserved and unwanted bits are 0
    /// unless their allowed 0-setting is "must be 1".
    ///
    /// Fails with the offending bits if any wanted (or required) bit may not be 1, since
    /// VM entry would then fail "invalid control field" (SDM Vol. 3C, "Checks on VMX
    /// Controls").
    pub const fn adjust(&self, wanted: u32) -> Result<u32, ControlError> {
        let value = wanted | self.allowed0;
        let unsupported = value & !self.allowed1;
        if unsupported == 0 { Ok(value) } else { Err(ControlError::Unsupported { bits: unsupported }) }
    }
}

/// VMX-fixed bits of CR0 or CR4 (SDM Vol. 3D Appendix A.7, A.8): a bit set in `fixed0`
/// must be 1 while in VMX operation, a bit clear in `fixed1` must be 0.
///
/// With "unrestricted guest", a *guest's* CR0.PE and CR0.PG are exempt from `fixed0`
/// (SDM Vol. 3C, "Checks on Guest Control Registers, Debug Registers, and MSRs"); that
/// exemption is the VMCS code's business, not this type's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FixedBits {
    pub fixed0: u64,
    pub fixed1: u64,
}

impl FixedBits {
    /// `value` with every fixed bit forced to its fixed value.
    pub const fn apply(&self, value: u64) -> u64 {
        (value | self.fixed0) & self.fixed1
    }

    /// The bits of `value` that differ from their fixed value (0 when `value` is legal).
    pub const fn violations(&self, value: u64) -> u64 {
        (!value & self.fixed0) | (value & !self.fixed1)
    }
}

// ---------------------------------------------------------------------------------------
// Which MSRs exist, and reading them
// ---------------------------------------------------------------------------------------

/// IA32_VMX_BASIC bit 55: the IA32_VMX_TRUE_* MSRs exist (SDM Vol. 3D Appendix A.1).
const BASIC_TRUE_CONTROLS: u64 = 1 << 55;

/// Which optional VMX capability MSRs exist. RDMSR of a missing MSR raises #GP, so the
/// caller must consult this before reading any of them.
///
/// All other MSRs of [`VmxMsr`] exist on every CPU that reports VMX in
/// CPUID.01H:ECX\[5\], which is the precondition for reading any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalMsrs {
    /// IA32_VMX_PROCBASED_CTLS2.
    pub procbased2: bool,
    /// IA32_VMX_EPT_VPID_CAP.
    pub ept_vpid_cap: bool,
    /// The four IA32_VMX_TRUE_*_CTLS MSRs.
    pub true_controls: bool,
    /// IA32_VMX_VMFUNC.
    pub vmfunc: bool,
}

impl OptionalMsrs {
    /// Whether `msr` exists according to these rules.
    pub const fn exists(&self, msr: VmxMsr) -> bool {
        match msr {
            VmxMsr::ProcbasedCtls2 => self.procbased2,
            VmxMsr::EptVpidCap => self.ept_vpid_cap,
            VmxMsr::TruePinbasedCtls | VmxMsr::TrueProcbasedCtls | VmxMsr::TrueExitCtls | VmxMsr::TrueEntryCtls => {
                self.true_controls
            }
            VmxMsr::Vmfunc => self.vmfunc,
            VmxMsr::FeatureControl
            | VmxMsr::Basic
            | VmxMsr::PinbasedCtls
            | VmxMsr::ProcbasedCtls
            | VmxMsr::ExitCtls
            | VmxMsr::EntryCtls
            | VmxMsr::Misc
            | VmxMsr::Cr0Fixed0
            | VmxMsr::Cr0Fixed1
            | VmxMsr::Cr4Fixed0
            | VmxMsr::Cr4Fixed1
            | VmxMsr::VmcsEnum => true,
        }
    }
}

/// The SDM's existence rules for the optional VMX MSRs:
/// - IA32_VMX_PROCBASED_CTLS2 iff IA32_VMX_PROCBASED_CTLS bit 63 (secondary controls may
///   be activated) — Appendix A.3.3;
/// - IA32_VMX_EPT_VPID_CAP iff, additionally, PROCBASED_CTLS2 bit 33 ("enable EPT") or
///   bit 37 ("enable VPID") — Appendix A.10;
/// - IA32_VMX_VMFUNC iff, additionally, PROCBASED_CTLS2 bit 45 ("enable VM functions") —
///   Appendix A.11;
/// - the TRUE control MSRs iff IA32_VMX_BASIC bit 55 — Appendix A.1, A.3.1, A.3.2, A.4, A.5.
///
/// `procbased2` is the value of IA32_VMX_PROCBASED_CTLS2 once it has been read (pass
/// `None` before): the MSRs that depend on it are reported missing until it is known, and
/// it is ignored when `procbased` says it does not exist.
pub fn which_msrs_exist(basic: u64, procbased: u64, procbased2: Option<u64>) -> OptionalMsrs {
    let has_secondary = AllowedBits::from_msr(procbased).allows(PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS.bits());
    let secondary = procbased2.filter(|_| has_secondary).map(AllowedBits::from_msr);
    let secondary_allows = |c: SecondaryProcBased| secondary.is_some_and(|s| s.allows(c.bits()));
    OptionalMsrs {
        procbased2: has_secondary,
        ept_vpid_cap: secondary_allows(SecondaryProcBased::ENABLE_EPT)
            || secondary_allows(SecondaryProcBased::ENABLE_VPID),
        true_controls: basic & BASIC_TRUE_CONTROLS != 0,
        vmfunc: secondary_allows(SecondaryProcBased::ENABLE_VM_FUNCTIONS),
    }
}

/// The raw values of the VMX capability MSRs. The `Option` fields are `Some` exactly when
/// the MSR exists (see [`which_msrs_exist`]); [`VmxCapabilities::decode`] ignores values
/// given for MSRs that the rules say are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawVmxMsrs {
    pub basic: u64,
    pub pinbased: u64,
    pub procbased: u64,
    pub exit: u64,
    pub entry: u64,
    pub misc: u64,
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
    pub procbased2: Option<u64>,
    pub ept_vpid_cap: Option<u64>,
    pub true_pinbased: Option<u64>,
    pub true_procbased: Option<u64>,
    pub true_exit: Option<u64>,
    pub true_entry: Option<u64>,
    pub vmfunc: Option<u64>,
}

impl RawVmxMsrs {
    /// Reads every capability MSR that exists, and no other, through `read` (the caller's
    /// RDMSR). Order: the ten mandatory MSRs by index, then PROCBASED_CTLS2 if it exists,
    /// then EPT_VPID_CAP, the TRUE MSRs and VMFUNC as the rules allow.
    ///
    /// The caller must have checked CPUID.01H:ECX.VMX\[5\] = 1, without which even
    /// IA32_VMX_BASIC does not exist.
    pub fn read_with(mut read: impl FnMut(VmxMsr) -> u64) -> RawVmxMsrs {
        let basic = read(VmxMsr::Basic);
        let pinbased = read(VmxMsr::PinbasedCtls);
        let procbased = read(VmxMsr::ProcbasedCtls);
        let exit = read(VmxMsr::ExitCtls);
        let entry = read(VmxMsr::EntryCtls);
        let misc = read(VmxMsr::Misc);
        let cr0_fixed0 = read(VmxMsr::Cr0Fixed0);
        let cr0_fixed1 = read(VmxMsr::Cr0Fixed1);
        let cr4_fixed0 = read(VmxMsr::Cr4Fixed0);
        let cr4_fixed1 = read(VmxMsr::Cr4Fixed1);

        // PROCBASED_CTLS2 decides whether EPT_VPID_CAP and VMFUNC exist, so it is read first.
        let procbased2 = which_msrs_exist(basic, procbased, None).procbased2.then(|| read(VmxMsr::ProcbasedCtls2));
        let present = which_msrs_exist(basic, procbased, procbased2);
        let mut read_if = |exists: bool, msr: VmxMsr| exists.then(|| read(msr));

        let ept_vpid_cap = read_if(present.ept_vpid_cap, VmxMsr::EptVpidCap);
        let true_pinbased = read_if(present.true_controls, VmxMsr::TruePinbasedCtls);
        let true_procbased = read_if(present.true_controls, VmxMsr::TrueProcbasedCtls);
        let true_exit = read_if(present.true_controls, VmxMsr::TrueExitCtls);
        let true_entry = read_if(present.true_controls, VmxMsr::TrueEntryCtls);
        let vmfunc = read_if(present.vmfunc, VmxMsr::Vmfunc);

        RawVmxMsrs {
            basic,
            pinbased,
            procbased,
            exit,
            entry,
            misc,
            cr0_fixed0,
            cr0_fixed1,
            cr4_fixed0,
            cr4_fixed1,
            procbased2,
            ept_vpid_cap,
            true_pinbased,
            true_procbased,
            true_exit,
            true_entry,
            vmfunc,
        }
    }
}

// ---------------------------------------------------------------------------------------
// IA32_VMX_BASIC, IA32_VMX_MISC, IA32_VMX_EPT_VPID_CAP, IA32_VMX_VMFUNC
// ---------------------------------------------------------------------------------------

/// Memory type the CPU uses to access the VMCS and the structures it points to
/// (IA32_VMX_BASIC bits 53:50, SDM Vol. 3D Appendix A.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmcsMemoryType {
    /// Encoding 0.
    Uncacheable,
    /// Encoding 6, what every current CPU reports.
    WriteBack,
    /// Any other encoding (1-5, 7-15): "not used" per the SDM. Never 0 or 6.
    Reserved(u8),
}

impl fmt::Display for VmcsMemoryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmcsMemoryType::Uncacheable => f.write_str("UC"),
            VmcsMemoryType::WriteBack => f.write_str("WB"),
            VmcsMemoryType::Reserved(t) => write!(f, "reserved({t})"),
        }
    }
}

/// IA32_VMX_BASIC (SDM Vol. 3D Appendix A.1). Wraps the raw value; every accessor
/// decodes one field, so no decoded state can disagree with the MSR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmxBasic(u64);

impl VmxBasic {
    pub const fn from_raw(raw: u64) -> Self {
        VmxBasic(raw)
    }

    pub const fn raw(self) -> u64 {
        self.0
    }

    /// VMCS revision identifier (bits 30:0), written to the first dword of the VMXON region
    /// and of every VMCS. Bit 31 of the MSR is always 0; in a VMCS it is the shadow-VMCS flag.
    pub const fn revision_id(self) -> u32 {
        (self.0 & 0x7FFF_FFFF) as u32
    }

    /// Bytes to allocate for the VMXON region and each VMCS (bits 44:32; at most 4096).
    pub const fn vmcs_size(self) -> u16 {
        ((self.0 >> 32) & 0x1FFF) as u16
    }

    /// Bit 48: VMXON/VMCS and the structures they reference must lie below 4 GiB.
    /// Always 0 on CPUs supporting Intel 64.
    pub const fn physical_address_width_32(self) -> bool {
        self.0 & (1 << 48) != 0
    }

    /// Bit 49: dual-monitor treatment of SMIs and SMM is supported.
    pub const fn dual_monitor_smm(self) -> bool {
        self.0 & (1 << 49) != 0
    }

    /// Bits 53:50: memory type for VMCS accesses.
    pub const fn memory_type(self) -> VmcsMemoryType {
        match ((self.0 >> 50) & 0xF) as u8 {
            0 => VmcsMemoryType::Uncacheable,
            6 => VmcsMemoryType::WriteBack,
            other => VmcsMemoryType::Reserved(other),
        }
    }

    /// Bit 54: VM exits caused by INS/OUTS report instruction information.
    pub const fn ins_outs_exit_info(self) -> bool {
        self.0 & (1 << 54) != 0
    }

    /// Bit 55: default1 controls may be 0; the IA32_VMX_TRUE_*_CTLS MSRs exist.
    pub const fn true_controls(self) -> bool {
        self.0 & BASIC_TRUE_CONTROLS != 0
    }

    /// Bit 56: VM entry may deliver a hardware exception with or without an error code
    /// regardless of vector.
    pub const fn any_exception_error_code(self) -> bool {
        self.0 & (1 << 56) != 0
    }
}

bitflags! {
    /// Activity states a guest may be put in besides "active" (IA32_VMX_MISC bits 8:6,
    /// SDM Vol. 3D Appendix A.6). The flag values are the MSR bit positions.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct ActivityStates: u64 {
        const HLT = 1 << 6;
        const SHUTDOWN = 1 << 7;
        const WAIT_FOR_SIPI = 1 << 8;
    }
}

/// IA32_VMX_MISC (SDM Vol. 3D Appendix A.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmxMisc(u64);

impl VmxMisc {
    pub const fn from_raw(raw: u64) -> Self {
        VmxMisc(raw)
    }

    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Bits 4:0, X: the VMX-preemption timer counts down by 1 every time bit X of the TSC
    /// changes, i.e. once every 2^X TSC cycles.
    pub const fn preemption_timer_rate(self) -> u8 {
        (self.0 & 0x1F) as u8
    }

    /// TSC cycles per preemption-timer tick: 2^[`Self::preemption_timer_rate`].
    pub const fn tsc_cycles_per_timer_tick(self) -> u64 {
        1 << self.preemption_timer_rate()
    }

    /// Bit 5: VM exits store IA32_EFER.LMA into the "IA-32e mode guest" entry control.
    pub const fn stores_efer_lma(self) -> bool {
        self.0 & (1 << 5) != 0
    }

    /// Bits 8:6: supported guest activity states.
    pub const fn activity_states(self) -> ActivityStates {
        ActivityStates::from_bits_truncate(self.0)
    }

    /// Bit 14: Intel PT may be used in VMX operation.
    pub const fn intel_pt_in_vmx(self) -> bool {
        self.0 & (1 << 14) != 0
    }

    /// Bits 24:16: number of CR3-target values (0..=511; the SDM promises at least 4).
    pub const fn cr3_target_count(self) -> u16 {
        ((self.0 >> 16) & 0x1FF) as u16
    }

    /// Bits 27:25, N: recommended maximum entries in each VM-exit/VM-entry MSR list,
    /// 512 * (N + 1).
    pub const fn max_msr_list_entries(self) -> u32 {
        512 * ((((self.0 >> 25) & 0x7) as u32) + 1)
    }

    /// Bit 29: VMWRITE may write any supported VMCS field, including the VM-exit
    /// information fields.
    pub const fn vmwrite_any_field(self) -> bool {
        self.0 & (1 << 29) != 0
    }

    /// Bit 30: VM entry may inject a software interrupt/exception with instruction
    /// length 0.
    pub const fn zero_length_injection(self) -> bool {
        self.0 & (1 << 30) != 0
    }

    /// Bits 63:32: MSEG revision identifier (dual-monitor SMM).
    pub const fn mseg_revision(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

bitflags! {
    /// IA32_VMX_EPT_VPID_CAP (SDM Vol. 3D Appendix A.10). Unknown bits are retained.
    ///
    /// The INVEPT/INVVPID type bits only mean something when the instruction bit (20 or 32)
    /// is set; [`VmxCapabilities`]' queries check both.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct EptVpidCap: u64 {
        /// Bit 0: EPT entries may be execute-only.
        const EXECUTE_ONLY = 1 << 0;
        /// Bit 6: page-walk length 4 (the EPTP encoding 3).
        const PAGE_WALK_4 = 1 << 6;
        /// Bit 7: page-walk length 5.
        const PAGE_WALK_5 = 1 << 7;
        /// Bit 8: EPT paging structures may be uncacheable (EPTP memory type 0).
        const MEMTYPE_UC = 1 << 8;
        /// Bit 14: EPT paging structures may be write-back (EPTP memory type 6).
        const MEMTYPE_WB = 1 << 14;
        /// Bit 16: an EPT PDE may map a 2 MiB page.
        const PAGE_2M = 1 << 16;
        /// Bit 17: an EPT PDPTE may map a 1 GiB page.
        const PAGE_1G = 1 << 17;
        /// Bit 20: INVEPT is supported.
        const INVEPT = 1 << 20;
        /// Bit 21: EPT accessed and dirty flags.
        const ACCESSED_DIRTY = 1 << 21;
        /// Bit 22: advanced VM-exit information for EPT violations.
        const ADVANCED_VIOLATION_INFO = 1 << 22;
        /// Bit 23: supervisor shadow-stack control.
        const SUPERVISOR_SHADOW_STACK = 1 << 23;
        /// Bit 25: single-context INVEPT.
        const INVEPT_SINGLE_CONTEXT = 1 << 25;
        /// Bit 26: all-context INVEPT.
        const INVEPT_ALL_CONTEXT = 1 << 26;
        /// Bit 32: INVVPID is supported.
        const INVVPID = 1 << 32;
        /// Bit 40: individual-address INVVPID.
        const INVVPID_INDIVIDUAL_ADDRESS = 1 << 40;
        /// Bit 41: single-context INVVPID.
        const INVVPID_SINGLE_CONTEXT = 1 << 41;
        /// Bit 42: all-context INVVPID.
        const INVVPID_ALL_CONTEXT = 1 << 42;
        /// Bit 43: single-context-retaining-globals INVVPID.
        const INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS = 1 << 43;

        const _ = !0;
    }
}

bitflags! {
    /// IA32_VMX_VMFUNC: VM functions that may be enabled (SDM Vol. 3D Appendix A.11).
    /// Unknown bits are retained.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct VmFunctions: u64 {
        /// VM function 0, EPTP switching.
        const EPTP_SWITCHING = 1 << 0;

        const _ = !0;
    }
}

// ---------------------------------------------------------------------------------------
// The decoded capabilities
// ---------------------------------------------------------------------------------------

/// Everything the hypervisor needs to know about this CPU's VMX implementation.
///
/// Built only by [`VmxCapabilities::decode`], which enforces the existence rules: e.g.
/// [`Self::ept_vpid`] is `None` unless secondary controls exist and allow EPT or VPID,
/// whatever the raw input said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmxCapabilities {
    basic: VmxBasic,
    pin: AllowedBits,
    proc: AllowedBits,
    proc2: Option<AllowedBits>,
    exit: AllowedBits,
    entry: AllowedBits,
    misc: VmxMisc,
    ept_vpid: Option<EptVpidCap>,
    vmfunc: Option<VmFunctions>,
    cr0: FixedBits,
    cr4: FixedBits,
    uses_true_controls: bool,
}

impl VmxCapabilities {
    /// Decodes raw MSR values.
    ///
    /// When IA32_VMX_BASIC bit 55 is set and all four TRUE MSRs are given, the pin-based,
    /// primary processor-based, exit and entry settings come from the TRUE MSRs, as SDM
    /// Vol. 3D Appendix A.3.1, A.3.2, A.4 and A.5 prescribe (they additionally allow
    /// clearing default1 controls such as CR3-load exiting). Otherwise the legacy MSRs are
    /// used for all four; they only ever require *more* bits to be 1, so this fallback is
    /// safe, never wrong. Values for MSRs that do not exist are ignored.
    pub fn decode(raw: &RawVmxMsrs) -> VmxCapabilities {
        let present = which_msrs_exist(raw.basic, raw.procbased, raw.procbased2);

        let true_msrs = match (raw.true_pinbased, raw.true_procbased, raw.true_exit, raw.true_entry) {
            (Some(pin), Some(proc), Some(exit), Some(entry)) if present.true_controls => Some([pin, proc, exit, entry]),
            _ => None,
        };
        let uses_true_controls = true_msrs.is_some();
        let [pin, proc, exit, entry] = true_msrs.unwrap_or([raw.pinbased, raw.procbased, raw.exit, raw.entry]);

        VmxCapabilities {
            basic: VmxBasic::from_raw(raw.basic),
            pin: AllowedBits::from_msr(pin),
            proc: AllowedBits::from_msr(proc),
            proc2: raw.procbased2.filter(|_| present.procbased2).map(AllowedBits::from_msr),
            exit: AllowedBits::from_msr(exit),
            entry: AllowedBits::from_msr(entry),
            misc: VmxMisc::from_raw(raw.misc),
            ept_vpid: raw.ept_vpid_cap.filter(|_| present.ept_vpid_cap).map(EptVpidCap::from_bits_retain),
            vmfunc: raw.vmfunc.filter(|_| present.vmfunc).map(VmFunctions::from_bits_retain),
            cr0: FixedBits { fixed0: raw.cr0_fixed0, fixed1: raw.cr0_fixed1 },
            cr4: FixedBits { fixed0: raw.cr4_fixed0, fixed1: raw.cr4_fixed1 },
            uses_true_controls,
        }
    }

    pub const fn basic(&self) -> VmxBasic {
        self.basic
    }

    /// Allowed pin-based controls (from the TRUE MSR when [`Self::uses_true_controls`]).
    pub const fn pin(&self) -> AllowedBits {
        self.pin
    }

    /// Allowed primary processor-based controls (TRUE MSR when available).
    pub const fn proc(&self) -> AllowedBits {
        self.proc
    }

    /// Allowed secondary processor-based controls; `None` when the CPU cannot activate them.
    pub const fn proc2(&self) -> Option<AllowedBits> {
        self.proc2
    }

    /// Allowed VM-exit controls (TRUE MSR when available).
    pub const fn exit(&self) -> AllowedBits {
        self.exit
    }

    /// Allowed VM-entry controls (TRUE MSR when available).
    pub const fn entry(&self) -> AllowedBits {
        self.entry
    }

    pub const fn misc(&self) -> VmxMisc {
        self.misc
    }

    /// IA32_VMX_EPT_VPID_CAP, when it exists.
    pub const fn ept_vpid(&self) -> Option<EptVpidCap> {
        self.ept_vpid
    }

    /// IA32_VMX_VMFUNC, when it exists.
    pub const fn vm_functions(&self) -> Option<VmFunctions> {
        self.vmfunc
    }

    /// CR0 bits fixed in VMX operation (IA32_VMX_CR0_FIXED0/1).
    pub const fn cr0_fixed(&self) -> FixedBits {
        self.cr0
    }

    /// CR4 bits fixed in VMX operation (IA32_VMX_CR4_FIXED0/1).
    pub const fn cr4_fixed(&self) -> FixedBits {
        self.cr4
    }

    /// Whether pin/proc/exit/entry were decoded from the IA32_VMX_TRUE_*_CTLS MSRs.
    pub const fn uses_true_controls(&self) -> bool {
        self.uses_true_controls
    }

    pub fn pin_allows(&self, controls: PinBased) -> bool {
        self.pin.allows(controls.bits())
    }

    pub fn proc_allows(&self, controls: PrimaryProcBased) -> bool {
        self.proc.allows(controls.bits())
    }

    /// False when secondary controls cannot be activated at all.
    pub fn proc2_allows(&self, controls: SecondaryProcBased) -> bool {
        self.has_secondary_controls() && self.proc2.is_some_and(|p| p.allows(controls.bits()))
    }

    pub fn exit_allows(&self, controls: ExitControls) -> bool {
        self.exit.allows(controls.bits())
    }

    pub fn entry_allows(&self, controls: EntryControls) -> bool {
        self.entry.allows(controls.bits())
    }

    /// The "activate secondary controls" control may be 1 and PROCBASED_CTLS2 was read.
    pub fn has_secondary_controls(&self) -> bool {
        self.proc.allows(PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS.bits()) && self.proc2.is_some()
    }

    pub fn has_ept(&self) -> bool {
        self.proc2_allows(SecondaryProcBased::ENABLE_EPT)
    }

    pub fn has_vpid(&self) -> bool {
        self.proc2_allows(SecondaryProcBased::ENABLE_VPID)
    }

    /// "Unrestricted guest" may be 1. It also requires EPT: VM entry fails when
    /// unrestricted guest is 1 and "enable EPT" is 0 (SDM Vol. 3C, "Checks on VMX Controls").
    pub fn has_unrestricted_guest(&self) -> bool {
        self.proc2_allows(SecondaryProcBased::UNRESTRICTED_GUEST) && self.has_ept()
    }

    pub fn has_preemption_timer(&self) -> bool {
        self.pin_allows(PinBased::PREEMPTION_TIMER)
    }

    pub fn has_io_bitmaps(&self) -> bool {
        self.proc_allows(PrimaryProcBased::USE_IO_BITMAPS)
    }

    pub fn has_msr_bitmaps(&self) -> bool {
        self.proc_allows(PrimaryProcBased::USE_MSR_BITMAPS)
    }

    /// An EPT capability bit, false unless EPT itself is usable (the EPT bits of
    /// IA32_VMX_EPT_VPID_CAP carry no promise on a CPU that only has VPID).
    fn ept_cap(&self, cap: EptVpidCap) -> bool {
        self.has_ept() && self.ept_vpid.is_some_and(|c| c.contains(cap))
    }

    /// A VPID capability bit, false unless VPID itself is usable.
    fn vpid_cap(&self, cap: EptVpidCap) -> bool {
        self.has_vpid() && self.ept_vpid.is_some_and(|c| c.contains(cap))
    }

    pub fn ept_execute_only(&self) -> bool {
        self.ept_cap(EptVpidCap::EXECUTE_ONLY)
    }

    pub fn ept_4level(&self) -> bool {
        self.ept_cap(EptVpidCap::PAGE_WALK_4)
    }

    pub fn ept_5level(&self) -> bool {
        self.ept_cap(EptVpidCap::PAGE_WALK_5)
    }

    /// EPT paging structures may be write-back (the EPTP memory type we want).
    pub fn ept_wb(&self) -> bool {
        self.ept_cap(EptVpidCap::MEMTYPE_WB)
    }

    pub fn ept_uc(&self) -> bool {
        self.ept_cap(EptVpidCap::MEMTYPE_UC)
    }

    pub fn ept_2m(&self) -> bool {
        self.ept_cap(EptVpidCap::PAGE_2M)
    }

    pub fn ept_1g(&self) -> bool {
        self.ept_cap(EptVpidCap::PAGE_1G)
    }

    pub fn ept_ad(&self) -> bool {
        self.ept_cap(EptVpidCap::ACCESSED_DIRTY)
    }

    pub fn invept(&self) -> bool {
        self.ept_cap(EptVpidCap::INVEPT)
    }

    pub fn invept_single(&self) -> bool {
        self.ept_cap(EptVpidCap::INVEPT | EptVpidCap::INVEPT_SINGLE_CONTEXT)
    }

    pub fn invept_all(&self) -> bool {
        self.ept_cap(EptVpidCap::INVEPT | EptVpidCap::INVEPT_ALL_CONTEXT)
    }

    pub fn invvpid(&self) -> bool {
        self.vpid_cap(EptVpidCap::INVVPID)
    }

    pub fn invvpid_individual(&self) -> bool {
        self.vpid_cap(EptVpidCap::INVVPID | EptVpidCap::INVVPID_INDIVIDUAL_ADDRESS)
    }

    pub fn invvpid_single(&self) -> bool {
        self.vpid_cap(EptVpidCap::INVVPID | EptVpidCap::INVVPID_SINGLE_CONTEXT)
    }

    pub fn invvpid_all(&self) -> bool {
        self.vpid_cap(EptVpidCap::INVVPID | EptVpidCap::INVVPID_ALL_CONTEXT)
    }

    pub fn invvpid_single_retaining_globals(&self) -> bool {
        self.vpid_cap(EptVpidCap::INVVPID | EptVpidCap::INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS)
    }

    /// The boot-log report, one [`ReportLine`] per topic, in a fixed order. Each line
    /// displays as `vmx: key=value ...`; the shape is stable so logs can be grepped.
    pub fn report_lines(&self) -> impl Iterator<Item = ReportLine<'_>> {
        ReportTopic::ALL.into_iter().map(move |topic| ReportLine { caps: self, topic })
    }

    /// Writes [`Self::report_lines`] to `out`, each followed by `\n`.
    pub fn report(&self, out: &mut impl fmt::Write) -> fmt::Result {
        self.report_lines().try_for_each(|line| writeln!(out, "{line}"))
    }
}

// ---------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReportTopic {
    Basic,
    Ept,
    Vpid,
    UnrestrictedGuest,
    PreemptionTimer,
    Controls,
    Misc,
}

impl ReportTopic {
    const ALL: [ReportTopic; 7] = [
        ReportTopic::Basic,
        ReportTopic::Ept,
        ReportTopic::Vpid,
        ReportTopic::UnrestrictedGuest,
        ReportTopic::PreemptionTimer,
        ReportTopic::Controls,
        ReportTopic::Misc,
    ];
}

/// One line of the capability report; format it with `{}`. Needs no allocation, so it
/// can be logged before the heap exists.
#[derive(Debug, Clone, Copy)]
pub struct ReportLine<'a> {
    caps: &'a VmxCapabilities,
    topic: ReportTopic,
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Writes the names whose flag is set, comma-separated, or `none`.
fn write_list(f: &mut fmt::Formatter<'_>, items: &[(bool, &str)]) -> fmt::Result {
    let mut first = true;
    for &(_, name) in items.iter().filter(|(on, _)| *on) {
        if !first {
            f.write_str(",")?;
        }
        f.write_str(name)?;
        first = false;
    }
    if first { f.write_str("none") } else { Ok(()) }
}

impl fmt::Display for ReportLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.caps;
        f.write_str("vmx: ")?;
        match self.topic {
            ReportTopic::Basic => {
                let basic = c.basic();
                write!(
                    f,
                    "revision={:#010x} vmcs_size={} true_controls={} memtype={}",
                    basic.revision_id(),
                    basic.vmcs_size(),
                    yes_no(c.uses_true_controls()),
                    basic.memory_type()
                )
            }
            ReportTopic::Ept if !c.has_ept() => f.write_str("ept=no"),
            ReportTopic::Ept => {
                write!(
                    f,
                    "ept=yes 4-level={} 2M={} 1G={} ad={} invept=",
                    yes_no(c.ept_4level()),
                    yes_no(c.ept_2m()),
                    yes_no(c.ept_1g()),
                    yes_no(c.ept_ad())
                )?;
                write_list(f, &[(c.invept_single(), "single"), (c.invept_all(), "all")])
            }
            ReportTopic::Vpid if !c.has_vpid() => f.write_str("vpid=no"),
            ReportTopic::Vpid => {
                f.write_str("vpid=yes invvpid=")?;
                write_list(
                    f,
                    &[
                        (c.invvpid_individual(), "individual"),
                        (c.invvpid_single(), "single"),
                        (c.invvpid_all(), "all"),
                        (c.invvpid_single_retaining_globals(), "single-globals"),
                    ],
                )
            }
            ReportTopic::UnrestrictedGuest => {
                write!(f, "unrestricted_guest={}", yes_no(c.has_unrestricted_guest()))
            }
            ReportTopic::PreemptionTimer if !c.has_preemption_timer() => f.write_str("preemption_timer=no"),
            ReportTopic::PreemptionTimer => {
                write!(f, "preemption_timer=yes rate=tsc/{}", c.misc().tsc_cycles_per_timer_tick())
            }
            ReportTopic::Controls => write!(
                f,
                "io_bitmaps={} msr_bitmaps={} secondary_controls={}",
                yes_no(c.has_io_bitmaps()),
                yes_no(c.has_msr_bitmaps()),
                yes_no(c.has_secondary_controls())
            ),
            ReportTopic::Misc => {
                let misc = c.misc();
                let states = misc.activity_states();
                f.write_str("activity_states=")?;
                write_list(
                    f,
                    &[
                        (states.contains(ActivityStates::HLT), "hlt"),
                        (states.contains(ActivityStates::SHUTDOWN), "shutdown"),
                        (states.contains(ActivityStates::WAIT_FOR_SIPI), "wait-for-sipi"),
                    ],
                )?;
                write!(f, " cr3_targets={} msr_list_max={}", misc.cr3_target_count(), misc.max_msr_list_entries())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// IA32_FEATURE_CONTROL
// ---------------------------------------------------------------------------------------

bitflags! {
    /// IA32_FEATURE_CONTROL bits that gate VMXON (SDM Vol. 3C, "Enabling and Entering VMX
    /// Operation"; SDM Vol. 4 Table 2-2). Other bits (SGX, LMCE, SENTER) are retained.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct FeatureControl: u64 {
        /// Bit 0: the MSR is locked until reset; WRMSR to it raises #GP.
        const LOCKED = 1 << 0;
        /// Bit 1: VMXON allowed inside SMX operation (after GETSEC\[SENTER\]).
        const VMX_INSIDE_SMX = 1 << 1;
        /// Bit 2: VMXON allowed outside SMX operation.
        const VMX_OUTSIDE_SMX = 1 << 2;

        const _ = !0;
    }
}

/// What the firmware left in IA32_FEATURE_CONTROL, as far as VMXON outside SMX goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmxFirmwareState {
    /// Not locked: VMXON would #GP, but we may set bit 2 and the lock ourselves
    /// ([`feature_control_enabling_vmx`]).
    Unlocked,
    /// Locked with VMX outside SMX enabled: VMXON may proceed.
    LockedEnabled,
    /// Locked with VMX outside SMX disabled (disabled in the firmware setup): VMXON
    /// raises #GP until the next reset, so boot must stop.
    LockedDisabled,
}

/// Classifies an IA32_FEATURE_CONTROL value. Only bit 2 matters for enabling: the
/// hypervisor never runs inside SMX, so bit 1 alone does not allow VMXON.
pub fn vmx_status(value: u64) -> VmxFirmwareState {
    let fc = FeatureControl::from_bits_retain(value);
    if !fc.contains(FeatureControl::LOCKED) {
        VmxFirmwareState::Unlocked
    } else if fc.contains(FeatureControl::VMX_OUTSIDE_SMX) {
        VmxFirmwareState::LockedEnabled
    } else {
        VmxFirmwareState::LockedDisabled
    }
}

/// The value to write to an unlocked IA32_FEATURE_CONTROL to allow VMXON outside SMX:
/// `value` with bit 2 and the lock bit set and every other bit preserved (so firmware
/// choices such as SGX or LMCE enables survive). `None` when the MSR is already locked,
/// because writing it then raises #GP.
pub fn feature_control_enabling_vmx(value: u64) -> Option<u64> {
    match vmx_status(value) {
        VmxFirmwareState::Unlocked => Some(
            (FeatureControl::from_bits_retain(value) | FeatureControl::LOCKED | FeatureControl::VMX_OUTSIDE_SMX).bits(),
        ),
        VmxFirmwareState::LockedEnabled | VmxFirmwareState::LockedDisabled => None,
    }
}

/// Capability values the tests of this module and of `controls` share.
#[cfg(test)]
pub(crate) mod test_fixtures {
    use super::RawVmxMsrs;

    /// A Skylake-class CPU with TRUE controls, EPT and VPID. BASIC, PINBASED, PROCBASED,
    /// EXIT, ENTRY, MISC and EPT_VPID_CAP are Skylake-class values; each TRUE MSR clears
    /// exactly the default1 bits that A.3.2/A.4/A.5 allow to be cleared; PROCBASED_CTLS2
    /// is modelled on a client part (no APIC-register virtualization, virtual-interrupt
    /// delivery or mode-based execute control).
    pub(crate) fn skylake() -> RawVmxMsrs {
        RawVmxMsrs {
            basic: 0x00da_0400_0000_0004,
            pinbased: 0x0000_007f_0000_0016,
            procbased: 0xfff9_fffe_0401_e172,
            exit: 0x01ff_ffff_0003_6dff,
            entry: 0x0003_ffff_0000_11ff,
            misc: 0x0000_0000_7004_c1e7,
            cr0_fixed0: 0x8000_0021,
            cr0_fixed1: 0xffff_ffff,
            cr4_fixed0: 0x0000_2000,
            cr4_fixed1: 0x0037_67ff,
            // Allowed-1: bits 0-7, 10-20, 25.
            procbased2: Some(0x021f_fcff_0000_0000),
            ept_vpid_cap: Some(0x0000_0f01_0673_4141),
            true_pinbased: Some(0x0000_007f_0000_0016),
            // Bits 15/16 (CR3-load/store exiting) become clearable.
            true_procbased: Some(0xfff9_fffe_0400_6172),
            // Bit 2 (save debug controls) becomes clearable.
            true_exit: Some(0x01ff_ffff_0003_6dfb),
            // Bit 2 (load debug controls) becomes clearable.
            true_entry: Some(0x0003_ffff_0000_11fb),
            vmfunc: Some(0x1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;

    use super::test_fixtures::skylake;

    /// An early (Core 2 era) CPU: no TRUE MSRs, no secondary controls, no preemption timer.
    fn core2() -> RawVmxMsrs {
        RawVmxMsrs {
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
        }
    }

    fn report_of(caps: &VmxCapabilities) -> Vec<String> {
        caps.report_lines().map(|l| l.to_string()).collect()
    }

    #[test]
    fn msr_indices_match_the_sdm() {
        let indices: Vec<u32> = VmxMsr::ALL.iter().map(|m| m.index()).collect();
        let mut expected = alloc::vec![0x3A];
        expected.extend(0x480..=0x491);
        assert_eq!(indices, expected);
        assert_eq!(VmxMsr::EptVpidCap.index(), 0x48C);
        assert_eq!(VmxMsr::Vmfunc.index(), 0x491);
    }

    #[test]
    fn basic_fields_decode_from_skylake_value() {
        let basic = VmxBasic::from_raw(0x00da_0400_0000_0004);
        assert_eq!(basic.revision_id(), 4);
        assert_eq!(basic.vmcs_size(), 1024);
        assert!(!basic.physical_address_width_32());
        assert!(basic.dual_monitor_smm());
        assert_eq!(basic.memory_type(), VmcsMemoryType::WriteBack);
        assert!(basic.ins_outs_exit_info());
        assert!(basic.true_controls());
        assert!(!basic.any_exception_error_code());
    }

    #[test]
    fn basic_revision_excludes_bit_31_and_odd_memory_types_are_reserved() {
        let basic = VmxBasic::from_raw((1 << 56) | (1 << 48) | (0x5 << 50) | (0x1000 << 32) | 0xffff_ffff);
        assert_eq!(basic.revision_id(), 0x7fff_ffff);
        assert_eq!(basic.vmcs_size(), 4096);
        assert!(basic.physical_address_width_32());
        assert_eq!(basic.memory_type(), VmcsMemoryType::Reserved(5));
        assert!(basic.any_exception_error_code());
        assert_eq!(VmxBasic::from_raw(0).memory_type(), VmcsMemoryType::Uncacheable);
        assert_eq!(VmcsMemoryType::Reserved(5).to_string(), "reserved(5)");
    }

    #[test]
    fn misc_fields_decode_from_skylake_value() {
        let misc = VmxMisc::from_raw(0x0000_0000_7004_c1e7);
        assert_eq!(misc.preemption_timer_rate(), 7);
        assert_eq!(misc.tsc_cycles_per_timer_tick(), 128);
        assert!(misc.stores_efer_lma());
        assert_eq!(
            misc.activity_states(),
            ActivityStates::HLT | ActivityStates::SHUTDOWN | ActivityStates::WAIT_FOR_SIPI
        );
        assert!(misc.intel_pt_in_vmx());
        assert_eq!(misc.cr3_target_count(), 4);
        assert_eq!(misc.max_msr_list_entries(), 512);
        assert!(misc.vmwrite_any_field());
        assert!(misc.zero_length_injection());
        assert_eq!(misc.mseg_revision(), 0);
    }

    #[test]
    fn misc_msr_list_size_and_cr3_targets_use_their_full_fields() {
        // N = 7 (bits 27:25), 511 CR3 targets (bits 24:16), rate 31, MSEG revision 0x1234.
        let misc = VmxMisc::from_raw(0x0000_1234_0fff_001f);
        assert_eq!(misc.max_msr_list_entries(), 4096);
        assert_eq!(misc.cr3_target_count(), 511);
        assert_eq!(misc.preemption_timer_rate(), 31);
        assert_eq!(misc.tsc_cycles_per_timer_tick(), 1 << 31);
        assert_eq!(misc.activity_states(), ActivityStates::empty());
        assert_eq!(misc.mseg_revision(), 0x1234);
    }

    #[test]
    fn ept_vpid_cap_bits_decode_from_skylake_value() {
        let cap = EptVpidCap::from_bits_retain(0x0000_0f01_0673_4141);
        let expected = EptVpidCap::EXECUTE_ONLY
            | EptVpidCap::PAGE_WALK_4
            | EptVpidCap::MEMTYPE_UC
            | EptVpidCap::MEMTYPE_WB
            | EptVpidCap::PAGE_2M
            | EptVpidCap::PAGE_1G
            | EptVpidCap::INVEPT
            | EptVpidCap::ACCESSED_DIRTY
            | EptVpidCap::ADVANCED_VIOLATION_INFO
            | EptVpidCap::INVEPT_SINGLE_CONTEXT
            | EptVpidCap::INVEPT_ALL_CONTEXT
            | EptVpidCap::INVVPID
            | EptVpidCap::INVVPID_INDIVIDUAL_ADDRESS
            | EptVpidCap::INVVPID_SINGLE_CONTEXT
            | EptVpidCap::INVVPID_ALL_CONTEXT
            | EptVpidCap::INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS;
        assert_eq!(cap, expected);
        assert!(!cap.contains(EptVpidCap::PAGE_WALK_5));
        assert!(!cap.contains(EptVpidCap::SUPERVISOR_SHADOW_STACK));
    }

    #[test]
    fn skylake_uses_true_controls_for_all_four_fields() {
        let caps = VmxCapabilities::decode(&skylake());
        assert!(caps.uses_true_controls());
        assert_eq!(caps.pin(), AllowedBits { allowed0: 0x0000_0016, allowed1: 0x0000_007f });
        assert_eq!(caps.proc(), AllowedBits { allowed0: 0x0400_6172, allowed1: 0xfff9_fffe });
        assert_eq!(caps.proc2(), Some(AllowedBits { allowed0: 0, allowed1: 0x021f_fcff }));
        assert_eq!(caps.exit(), AllowedBits { allowed0: 0x0003_6dfb, allowed1: 0x01ff_ffff });
        assert_eq!(caps.entry(), AllowedBits { allowed0: 0x0000_11fb, allowed1: 0x0003_ffff });
        assert_eq!(caps.vm_functions(), Some(VmFunctions::EPTP_SWITCHING));
        assert_eq!(caps.ept_vpid(), Some(EptVpidCap::from_bits_retain(0x0000_0f01_0673_4141)));
        // TRUE controls let CR3-load/store exiting be 0.
        assert!(!caps.proc().must_be_one(15));
        assert!(!caps.proc().must_be_one(16));
    }

    #[test]
    fn skylake_feature_queries() {
        let caps = VmxCapabilities::decode(&skylake());
        assert!(caps.has_secondary_controls());
        assert!(caps.has_ept());
        assert!(caps.has_vpid());
        assert!(caps.has_unrestricted_guest());
        assert!(caps.has_preemption_timer());
        assert!(caps.has_io_bitmaps());
        assert!(caps.has_msr_bitmaps());
        assert!(caps.ept_execute_only());
        assert!(caps.ept_4level());
        assert!(!caps.ept_5level());
        assert!(caps.ept_wb());
        assert!(caps.ept_uc());
        assert!(caps.ept_2m());
        assert!(caps.ept_1g());
        assert!(caps.ept_ad());
        assert!(caps.invept());
        assert!(caps.invept_single());
        assert!(caps.invept_all());
        assert!(caps.invvpid());
        assert!(caps.invvpid_individual());
        assert!(caps.invvpid_single());
        assert!(caps.invvpid_all());
        assert!(caps.invvpid_single_retaining_globals());
        assert!(!caps.pin_allows(PinBased::POSTED_INTERRUPTS));
        assert!(!caps.proc2_allows(SecondaryProcBased::APIC_REGISTER_VIRTUALIZATION));
        assert!(caps.proc2_allows(SecondaryProcBased::ENABLE_PML | SecondaryProcBased::TSC_SCALING));
        assert!(caps.exit_allows(ExitControls::SAVE_PREEMPTION_TIMER | ExitControls::LOAD_EFER));
        assert!(caps.entry_allows(EntryControls::IA32E_MODE_GUEST | EntryControls::LOAD_PAT));
    }

    #[test]
    fn skylake_report_lines_are_exact() {
        let caps = VmxCapabilities::decode(&skylake());
        assert_eq!(
            report_of(&caps),
            [
                "vmx: revision=0x00000004 vmcs_size=1024 true_controls=yes memtype=WB",
                "vmx: ept=yes 4-level=yes 2M=yes 1G=yes ad=yes invept=single,all",
                "vmx: vpid=yes invvpid=individual,single,all,single-globals",
                "vmx: unrestricted_guest=yes",
                "vmx: preemption_timer=yes rate=tsc/128",
                "vmx: io_bitmaps=yes msr_bitmaps=yes secondary_controls=yes",
                "vmx: activity_states=hlt,shutdown,wait-for-sipi cr3_targets=4 msr_list_max=512",
            ]
        );
    }

    #[test]
    fn report_writes_every_line_newline_terminated() {
        let caps = VmxCapabilities::decode(&core2());
        let mut out = String::new();
        caps.report(&mut out).unwrap();
        assert_eq!(
            out,
            "vmx: revision=0x0000000d vmcs_size=2048 true_controls=no memtype=WB\n\
             vmx: ept=no\n\
             vmx: vpid=no\n\
             vmx: unrestricted_guest=no\n\
             vmx: preemption_timer=no\n\
             vmx: io_bitmaps=yes msr_bitmaps=yes secondary_controls=no\n\
             vmx: activity_states=hlt,shutdown,wait-for-sipi cr3_targets=4 msr_list_max=512\n"
        );
    }

    #[test]
    fn cpu_without_secondary_controls_has_no_ept_or_vpid() {
        let caps = VmxCapabilities::decode(&core2());
        assert!(!caps.uses_true_controls());
        assert_eq!(caps.proc(), AllowedBits { allowed0: 0x0401_e172, allowed1: 0x7ff9_fffe });
        assert_eq!(caps.proc2(), None);
        assert_eq!(caps.ept_vpid(), None);
        assert!(!caps.has_secondary_controls());
        assert!(!caps.has_ept());
        assert!(!caps.has_vpid());
        assert!(!caps.has_unrestricted_guest());
        assert!(!caps.has_preemption_timer());
        assert!(!caps.ept_4level());
        assert!(!caps.invvpid());
    }

    #[test]
    fn values_for_msrs_that_do_not_exist_are_ignored() {
        // Garbage in every optional field of a CPU on which none of them exists.
        let raw = RawVmxMsrs {
            procbased2: Some(u64::MAX),
            ept_vpid_cap: Some(u64::MAX),
            true_pinbased: Some(0),
            true_procbased: Some(0),
            true_exit: Some(0),
            true_entry: Some(0),
            vmfunc: Some(u64::MAX),
            ..core2()
        };
        assert_eq!(VmxCapabilities::decode(&raw), VmxCapabilities::decode(&core2()));
    }

    #[test]
    fn missing_true_msr_falls_back_to_legacy_controls_for_all_four() {
        let raw = RawVmxMsrs { true_entry: None, ..skylake() };
        let caps = VmxCapabilities::decode(&raw);
        assert!(!caps.uses_true_controls());
        assert_eq!(caps.proc().allowed0, 0x0401_e172);
        assert_eq!(caps.exit().allowed0, 0x0003_6dff);
        assert_eq!(caps.entry().allowed0, 0x0000_11ff);
        assert_eq!(report_of(&caps)[0], "vmx: revision=0x00000004 vmcs_size=1024 true_controls=no memtype=WB");
    }

    #[test]
    fn vpid_only_cpu_reports_no_ept_capabilities_and_no_unrestricted_guest() {
        // Secondary controls allow VPID (5) and unrestricted guest (7) but not EPT (1); the
        // EPT bits in EPT_VPID_CAP must not leak through.
        let raw = RawVmxMsrs { procbased2: Some(0x0000_00a0_0000_0000), vmfunc: None, ..skylake() };
        let caps = VmxCapabilities::decode(&raw);
        assert!(caps.has_vpid());
        assert!(!caps.has_ept());
        assert!(!caps.has_unrestricted_guest());
        assert!(!caps.ept_4level());
        assert!(!caps.invept_all());
        assert!(caps.invvpid_all());
        assert_eq!(caps.vm_functions(), None);
        let lines = report_of(&caps);
        assert_eq!(lines[1], "vmx: ept=no");
        assert_eq!(lines[2], "vmx: vpid=yes invvpid=individual,single,all,single-globals");
        assert_eq!(lines[3], "vmx: unrestricted_guest=no");
    }

    #[test]
    fn report_lists_none_when_no_invalidation_type_is_supported() {
        // EPT and VPID allowed, but the capability MSR offers only the 4-level walk and WB.
        let raw = RawVmxMsrs { ept_vpid_cap: Some(0x4040), ..skylake() };
        let lines = report_of(&VmxCapabilities::decode(&raw));
        assert_eq!(lines[1], "vmx: ept=yes 4-level=yes 2M=no 1G=no ad=no invept=none");
        assert_eq!(lines[2], "vmx: vpid=yes invvpid=none");
    }

    #[test]
    fn invept_types_require_the_invept_bit() {
        // Types 25/26 set, instruction bit 20 clear.
        let raw = RawVmxMsrs { ept_vpid_cap: Some(0x0600_4040), ..skylake() };
        let caps = VmxCapabilities::decode(&raw);
        assert!(!caps.invept());
        assert!(!caps.invept_single());
        assert!(!caps.invept_all());
    }

    #[test]
    fn which_msrs_exist_follows_the_sdm_rules() {
        let sky = skylake();
        assert_eq!(
            which_msrs_exist(sky.basic, sky.procbased, None),
            OptionalMsrs { procbased2: true, ept_vpid_cap: false, true_controls: true, vmfunc: false }
        );
        assert_eq!(
            which_msrs_exist(sky.basic, sky.procbased, sky.procbased2),
            OptionalMsrs { procbased2: true, ept_vpid_cap: true, true_controls: true, vmfunc: true }
        );
        // EPT only (bit 33), no VPID or VM functions.
        assert_eq!(
            which_msrs_exist(sky.basic, sky.procbased, Some(0x2 << 32)),
            OptionalMsrs { procbased2: true, ept_vpid_cap: true, true_controls: true, vmfunc: false }
        );
        // PROCBASED_CTLS2 ignored when the primary controls say it does not exist.
        let old = core2();
        assert_eq!(
            which_msrs_exist(old.basic, old.procbased, Some(u64::MAX)),
            OptionalMsrs { procbased2: false, ept_vpid_cap: false, true_controls: false, vmfunc: false }
        );
    }

    #[test]
    fn optional_msrs_exists_answers_per_msr() {
        let none = OptionalMsrs { procbased2: false, ept_vpid_cap: false, true_controls: false, vmfunc: false };
        let present: Vec<VmxMsr> = VmxMsr::ALL.into_iter().filter(|m| none.exists(*m)).collect();
        assert_eq!(present.len(), 12);
        assert!(present.iter().all(|m| m.index() <= 0x48A));
        let only_true = OptionalMsrs { true_controls: true, ..none };
        assert!(only_true.exists(VmxMsr::TrueEntryCtls));
        assert!(!only_true.exists(VmxMsr::ProcbasedCtls2));
    }

    /// Runs `read_with` against a table of MSR values, recording which MSRs were read and
    /// failing (like the #GP would) on any MSR missing from the table.
    fn read_from(table: &[(VmxMsr, u64)]) -> (RawVmxMsrs, Vec<VmxMsr>) {
        let mut reads = Vec::new();
        let raw = RawVmxMsrs::read_with(|msr| {
            reads.push(msr);
            match table.iter().find(|(m, _)| *m == msr) {
                Some(&(_, v)) => v,
                None => panic!("#GP: read of missing MSR {msr:?}"),
            }
        });
        (raw, reads)
    }

    fn mandatory(raw: &RawVmxMsrs) -> Vec<(VmxMsr, u64)> {
        alloc::vec![
            (VmxMsr::Basic, raw.basic),
            (VmxMsr::PinbasedCtls, raw.pinbased),
            (VmxMsr::ProcbasedCtls, raw.procbased),
            (VmxMsr::ExitCtls, raw.exit),
            (VmxMsr::EntryCtls, raw.entry),
            (VmxMsr::Misc, raw.misc),
            (VmxMsr::Cr0Fixed0, raw.cr0_fixed0),
            (VmxMsr::Cr0Fixed1, raw.cr0_fixed1),
            (VmxMsr::Cr4Fixed0, raw.cr4_fixed0),
            (VmxMsr::Cr4Fixed1, raw.cr4_fixed1),
        ]
    }

    #[test]
    fn read_with_reads_only_existing_msrs_on_an_old_cpu() {
        let old = core2();
        let (raw, reads) = read_from(&mandatory(&old));
        assert_eq!(raw, old);
        assert_eq!(reads, mandatory(&old).into_iter().map(|(m, _)| m).collect::<Vec<_>>());
    }

    #[test]
    fn read_with_reads_every_optional_msr_that_exists() {
        let sky = skylake();
        let mut table = mandatory(&sky);
        let optional = [
            (VmxMsr::ProcbasedCtls2, sky.procbased2),
            (VmxMsr::EptVpidCap, sky.ept_vpid_cap),
            (VmxMsr::TruePinbasedCtls, sky.true_pinbased),
            (VmxMsr::TrueProcbasedCtls, sky.true_procbased),
            (VmxMsr::TrueExitCtls, sky.true_exit),
            (VmxMsr::TrueEntryCtls, sky.true_entry),
            (VmxMsr::Vmfunc, sky.vmfunc),
        ];
        table.extend(optional.iter().filter_map(|&(m, v)| v.map(|v| (m, v))));
        let (raw, reads) = read_from(&table);
        assert_eq!(raw, sky);
        assert_eq!(reads, table.iter().map(|&(m, _)| m).collect::<Vec<_>>());
    }

    #[test]
    fn adjust_adds_required_bits_to_wanted_ones() {
        let caps = VmxCapabilities::decode(&skylake());
        let pin = PinBased::NMI_EXITING | PinBased::VIRTUAL_NMIS | PinBased::PREEMPTION_TIMER;
        assert_eq!(caps.pin().adjust(pin.bits()), Ok(0x0000_007e));
        let proc = PrimaryProcBased::HLT_EXITING
            | PrimaryProcBased::USE_MSR_BITMAPS
            | PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS;
        assert_eq!(caps.proc().adjust(proc.bits()), Ok(0x9400_61f2));
        let exit = ExitControls::HOST_ADDRESS_SPACE_SIZE
            | ExitControls::ACK_INTERRUPT_ON_EXIT
            | ExitControls::SAVE_EFER
            | ExitControls::LOAD_EFER;
        assert_eq!(caps.exit().adjust(exit.bits()), Ok(0x0033_effb));
        let entry = EntryControls::IA32E_MODE_GUEST | EntryControls::LOAD_EFER;
        assert_eq!(caps.entry().adjust(entry.bits()), Ok(0x0000_93fb));
        assert_eq!(caps.proc2().map(|p| p.adjust(0)), Some(Ok(0)));
    }

    #[test]
    fn adjust_of_nothing_yields_exactly_the_required_bits() {
        let legacy = AllowedBits::from_msr(0xfff9_fffe_0401_e172);
        assert_eq!(legacy.adjust(0), Ok(0x0401_e172));
        let true_ctls = AllowedBits::from_msr(0xfff9_fffe_0400_6172);
        assert_eq!(true_ctls.adjust(0), Ok(0x0400_6172));
    }

    #[test]
    fn adjust_names_only_the_disallowed_bits() {
        let pin = AllowedBits::from_msr(0x0000_007f_0000_0016);
        let wanted = PinBased::POSTED_INTERRUPTS | PinBased::EXTERNAL_INTERRUPT_EXITING;
        assert_eq!(pin.adjust(wanted.bits()), Err(ControlError::Unsupported { bits: 0x80 }));
        assert_eq!(pin.adjust(0xffff_ff00), Err(ControlError::Unsupported { bits: 0xffff_ff00 }));
        assert_eq!(
            ControlError::Unsupported { bits: 0x80 }.to_string(),
            "VMX control bits 0x00000080 are not supported by this CPU"
        );
    }

    #[test]
    fn adjust_rejects_a_required_bit_that_may_not_be_one() {
        // An inconsistent MSR: bit 0 must be 1 but may not be.
        let broken = AllowedBits { allowed0: 0x1, allowed1: 0x6 };
        assert_eq!(broken.adjust(0x2), Err(ControlError::Unsupported { bits: 0x1 }));
    }

    #[test]
    fn must_and_may_be_one_test_single_bits() {
        let pin = AllowedBits::from_msr(0x0000_007f_0000_0016);
        assert!(pin.must_be_one(1));
        assert!(!pin.must_be_one(0));
        assert!(pin.may_be_one(6));
        assert!(!pin.may_be_one(7));
        assert!(!pin.may_be_one(32));
        assert!(!pin.must_be_one(u32::MAX));
    }

    #[test]
    fn fixed_bits_force_and_report_cr_values() {
        let caps = VmxCapabilities::decode(&skylake());
        let cr0 = caps.cr0_fixed();
        assert_eq!(cr0.apply(0), 0x8000_0021);
        assert_eq!(cr0.violations(0x8000_0031), 0);
        assert_eq!(cr0.violations(0x0000_0031), 0x8000_0000);
        let cr4 = caps.cr4_fixed();
        // PKE (bit 22) is not allowed; VMXE (bit 13) is required.
        assert_eq!(cr4.apply(1 << 22), 0x2000);
        assert_eq!(cr4.violations(1 << 22), (1 << 22) | (1 << 13));
    }

    #[test]
    fn feature_control_states() {
        assert_eq!(vmx_status(0x0), VmxFirmwareState::Unlocked);
        assert_eq!(vmx_status(0x4), VmxFirmwareState::Unlocked);
        assert_eq!(vmx_status(0x5), VmxFirmwareState::LockedEnabled);
        assert_eq!(vmx_status(0x7), VmxFirmwareState::LockedEnabled);
        assert_eq!(vmx_status(0x1), VmxFirmwareState::LockedDisabled);
        // VMX only inside SMX does not let us run VMXON.
        assert_eq!(vmx_status(0x3), VmxFirmwareState::LockedDisabled);
        // SGX/LMCE bits do not matter.
        assert_eq!(vmx_status(0x0010_0005), VmxFirmwareState::LockedEnabled);
    }

    #[test]
    fn enabling_vmx_sets_lock_and_outside_smx_and_keeps_other_bits() {
        assert_eq!(feature_control_enabling_vmx(0x0), Some(0x5));
        assert_eq!(feature_control_enabling_vmx(0x0010_0002), Some(0x0010_0007));
        assert_eq!(feature_control_enabling_vmx(0x5), None);
        assert_eq!(feature_control_enabling_vmx(0x1), None);
    }
}
