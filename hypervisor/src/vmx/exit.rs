//! VM-exit information: exit reasons (SDM Vol. 3D Appendix C "VMX Basic Exit Reasons"),
//! exit qualifications (SDM Vol. 3C "Exit Qualification" tables), interruption
//! information and VM-instruction error numbers. Unknown values are data, never panics.

/// Basic exit reasons (Appendix C).
#[repr(u16)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    ExceptionOrNmi = 0,
    ExternalInterrupt = 1,
    TripleFault = 2,
    InitSignal = 3,
    StartupIpi = 4,
    IoSmi = 5,
    OtherSmi = 6,
    InterruptWindow = 7,
    NmiWindow = 8,
    TaskSwitch = 9,
    Cpuid = 10,
    Getsec = 11,
    Hlt = 12,
    Invd = 13,
    Invlpg = 14,
    Rdpmc = 15,
    Rdtsc = 16,
    Rsm = 17,
    Vmcall = 18,
    Vmclear = 19,
    Vmlaunch = 20,
    Vmptrld = 21,
    Vmptrst = 22,
    Vmread = 23,
    Vmresume = 24,
    Vmwrite = 25,
    Vmxoff = 26,
    Vmxon = 27,
    CrAccess = 28,
    DrAccess = 29,
    IoInstruction = 30,
    Rdmsr = 31,
    Wrmsr = 32,
    InvalidGuestState = 33,
    MsrLoading = 34,
    Mwait = 36,
    MonitorTrapFlag = 37,
    Monitor = 39,
    Pause = 40,
    MachineCheck = 41,
    TprBelowThreshold = 43,
    ApicAccess = 44,
    VirtualizedEoi = 45,
    GdtrIdtrAccess = 46,
    LdtrTrAccess = 47,
    EptViolation = 48,
    EptMisconfig = 49,
    Invept = 50,
    Rdtscp = 51,
    PreemptionTimer = 52,
    Invvpid = 53,
    Wbinvd = 54,
    Xsetbv = 55,
    ApicWrite = 56,
    Rdrand = 57,
    Invpcid = 58,
    Vmfunc = 59,
    Encls = 60,
    Rdseed = 61,
    PmlFull = 62,
    Xsaves = 63,
    Xrstors = 64,
}

impl ExitReason {
    const ALL: [ExitReason; 62] = {
        use ExitReason::*;
        [
            ExceptionOrNmi,
            ExternalInterrupt,
            TripleFault,
            InitSignal,
            StartupIpi,
            IoSmi,
            OtherSmi,
            InterruptWindow,
            NmiWindow,
            TaskSwitch,
            Cpuid,
            Getsec,
            Hlt,
            Invd,
            Invlpg,
            Rdpmc,
            Rdtsc,
            Rsm,
            Vmcall,
            Vmclear,
            Vmlaunch,
            Vmptrld,
            Vmptrst,
            Vmread,
            Vmresume,
            Vmwrite,
            Vmxoff,
            Vmxon,
            CrAccess,
            DrAccess,
            IoInstruction,
            Rdmsr,
            Wrmsr,
            InvalidGuestState,
            MsrLoading,
            Mwait,
            MonitorTrapFlag,
            Monitor,
            Pause,
            MachineCheck,
            TprBelowThreshold,
            ApicAccess,
            VirtualizedEoi,
            GdtrIdtrAccess,
            LdtrTrAccess,
            EptViolation,
            EptMisconfig,
            Invept,
            Rdtscp,
            PreemptionTimer,
            Invvpid,
            Wbinvd,
            Xsetbv,
            ApicWrite,
            Rdrand,
            Invpcid,
            Vmfunc,
            Encls,
            Rdseed,
            PmlFull,
            Xsaves,
            Xrstors,
        ]
    };

    pub fn from_number(n: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|r| *r as u16 == n)
    }

    /// A short lower-case name for logs and counters.
    pub fn name(self) -> &'static str {
        use ExitReason::*;
        match self {
            ExceptionOrNmi => "exception",
            ExternalInterrupt => "external_interrupt",
            TripleFault => "triple_fault",
            InitSignal => "init",
            StartupIpi => "sipi",
            IoSmi => "io_smi",
            OtherSmi => "other_smi",
            InterruptWindow => "interrupt_window",
            NmiWindow => "nmi_window",
            TaskSwitch => "task_switch",
            Cpuid => "cpuid",
            Getsec => "getsec",
            Hlt => "hlt",
            Invd => "invd",
            Invlpg => "invlpg",
            Rdpmc => "rdpmc",
            Rdtsc => "rdtsc",
            Rsm => "rsm",
            Vmcall => "vmcall",
            Vmclear => "vmclear",
            Vmlaunch => "vmlaunch",
            Vmptrld => "vmptrld",
            Vmptrst => "vmptrst",
            Vmread => "vmread",
            Vmresume => "vmresume",
            Vmwrite => "vmwrite",
            Vmxoff => "vmxoff",
            Vmxon => "vmxon",
            CrAccess => "cr_access",
            DrAccess => "dr_access",
            IoInstruction => "io",
            Rdmsr => "rdmsr",
            Wrmsr => "wrmsr",
            InvalidGuestState => "invalid_guest_state",
            MsrLoading => "msr_loading",
            Mwait => "mwait",
            MonitorTrapFlag => "monitor_trap_flag",
            Monitor => "monitor",
            Pause => "pause",
            MachineCheck => "machine_check",
            TprBelowThreshold => "tpr_below_threshold",
            ApicAccess => "apic_access",
            VirtualizedEoi => "virtualized_eoi",
            GdtrIdtrAccess => "gdtr_idtr_access",
            LdtrTrAccess => "ldtr_tr_access",
            EptViolation => "ept_violation",
            EptMisconfig => "ept_misconfig",
            Invept => "invept",
            Rdtscp => "rdtscp",
            PreemptionTimer => "preemption_timer",
            Invvpid => "invvpid",
            Wbinvd => "wbinvd",
            Xsetbv => "xsetbv",
            ApicWrite => "apic_write",
            Rdrand => "rdrand",
            Invpcid => "invpcid",
            Vmfunc => "vmfunc",
            Encls => "encls",
            Rdseed => "rdseed",
            PmlFull => "pml_full",
            Xsaves => "xsaves",
            Xrstors => "xrstors",
        }
    }

    /// The VMX instructions a guest may try (they exit unconditionally; we answer #UD).
    pub fn is_vmx_instruction(self) -> bool {
        use ExitReason::*;
        matches!(
            self,
            Vmclear
                | Vmlaunch
                | Vmptrld
                | Vmptrst
                | Vmread
                | Vmresume
                | Vmwrite
                | Vmxoff
                | Vmxon
                | Invept
                | Invvpid
                | Vmfunc
        )
    }
}

/// The exit-reason field as read (SDM Vol. 3C "Basic VM-Exit Information"): bits 15:0
/// basic reason, bit 31 VM-entry failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawExitReason(pub u32);

impl RawExitReason {
    /// The basic reason, or the unknown number.
    pub fn basic(self) -> Result<ExitReason, u16> {
        let n = self.0 as u16;
        ExitReason::from_number(n).ok_or(n)
    }

    pub fn entry_failure(self) -> bool {
        self.0 & (1 << 31) != 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoSize {
    Byte,
    Word,
    Dword,
}

impl IoSize {
    pub fn bytes(self) -> u32 {
        match self {
            Self::Byte => 1,
            Self::Word => 2,
            Self::Dword => 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoDirection {
    Out,
    In,
}

/// Exit qualification of an I/O instruction (SDM Vol. 3C Table "Exit Qualification for
/// I/O Instructions"): size 2:0, direction 3, string 4, REP 5, immediate operand 6,
/// port 31:16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoQualification {
    pub port: u16,
    pub size: IoSize,
    pub direction: IoDirection,
    pub string: bool,
    pub rep: bool,
    pub immediate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadQualification(pub u64);

impl IoQualification {
    pub fn from_raw(q: u64) -> Result<Self, BadQualification> {
        let size = match q & 7 {
            0 => IoSize::Byte,
            1 => IoSize::Word,
            3 => IoSize::Dword,
            _ => return Err(BadQualification(q)),
        };
        Ok(Self {
            port: (q >> 16) as u16,
            size,
            direction: if q & (1 << 3) != 0 { IoDirection::In } else { IoDirection::Out },
            string: q & (1 << 4) != 0,
            rep: q & (1 << 5) != 0,
            immediate: q & (1 << 6) != 0,
        })
    }
}

/// What a control-register exit did (SDM Vol. 3C Table "Exit Qualification for
/// Control-Register Accesses"). `gpr` numbers follow the table: 0 RAX, 1 RCX, 2 RDX,
/// 3 RBX, 4 RSP, 5 RBP, 6 RSI, 7 RDI, 8-15 R8-R15.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrAccessType {
    MovToCr { gpr: u8 },
    MovFromCr { gpr: u8 },
    Clts,
    Lmsw { source_data: u16, memory_operand: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrAccess {
    pub cr: u8,
    pub access: CrAccessType,
}

impl CrAccess {
    pub fn from_raw(q: u64) -> Result<Self, BadQualification> {
        let cr = (q & 0xF) as u8;
        let gpr = ((q >> 8) & 0xF) as u8;
        let access = match (q >> 4) & 3 {
            0 => CrAccessType::MovToCr { gpr },
            1 => CrAccessType::MovFromCr { gpr },
            2 => CrAccessType::Clts,
            _ => CrAccessType::Lmsw { source_data: (q >> 16) as u16, memory_operand: q & (1 << 6) != 0 },
        };
        Ok(Self { cr, access })
    }
}

/// Exit qualification of an EPT violation (SDM Vol. 3C Table "Exit Qualification for
/// EPT Violations"), the bits we report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EptViolation {
    pub read: bool,
    pub write: bool,
    pub fetch: bool,
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
    pub gla_valid: bool,
}

impl EptViolation {
    pub fn from_raw(q: u64) -> Self {
        let b = |n: u32| q & (1 << n) != 0;
        Self { read: b(0), write: b(1), fetch: b(2), readable: b(3), writable: b(4), executable: b(5), gla_valid: b(7) }
    }

    pub fn access_str(&self) -> &'static str {
        if self.fetch {
            "execute"
        } else if self.write {
            "write"
        } else {
            "read"
        }
    }
}

/// Interruption types (SDM Vol. 3C "VM-Entry Controls for Event Injection").
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptionType {
    ExternalInterrupt = 0,
    Nmi = 2,
    HardwareException = 3,
    SoftwareInterrupt = 4,
    PrivilegedSoftwareException = 5,
    SoftwareException = 6,
}

/// VM-entry interruption information: vector 7:0, type 10:8, deliver error code 11,
/// valid 31.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterruptionInfo(u32);

impl InterruptionInfo {
    pub fn new(vector: u8, kind: InterruptionType, error_code: bool) -> Self {
        Self(u32::from(vector) | ((kind as u32) << 8) | (u32::from(error_code) << 11) | (1 << 31))
    }

    pub fn hardware_exception(vector: u8, error_code: Option<u32>) -> Self {
        Self::new(vector, InterruptionType::HardwareException, error_code.is_some())
    }

    pub fn external_interrupt(vector: u8) -> Self {
        Self::new(vector, InterruptionType::ExternalInterrupt, false)
    }

    pub fn raw(self) -> u32 {
        self.0
    }
}

/// VM-instruction error numbers (SDM Vol. 3C "VM-Instruction Error Numbers").
pub fn vm_instruction_error_str(n: u32) -> &'static str {
    match n {
        1 => "VMCALL executed in VMX root operation",
        2 => "VMCLEAR with invalid physical address",
        3 => "VMCLEAR with VMXON pointer",
        4 => "VMLAUNCH with non-clear VMCS",
        5 => "VMRESUME with non-launched VMCS",
        6 => "VMRESUME after VMXOFF",
        7 => "VM entry with invalid control field(s)",
        8 => "VM entry with invalid host-state field(s)",
        9 => "VMPTRLD with invalid physical address",
        10 => "VMPTRLD with VMXON pointer",
        11 => "VMPTRLD with incorrect VMCS revision identifier",
        12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
        13 => "VMWRITE to read-only VMCS component",
        15 => "VMXON executed in VMX root operation",
        16 => "VM entry with invalid executive-VMCS pointer",
        17 => "VM entry with non-launched executive VMCS",
        18 => "VM entry with executive-VMCS pointer not VMXON pointer",
        19 => "VMCALL with non-clear VMCS",
        20 => "VMCALL with invalid VM-exit control fields",
        22 => "VMCALL with incorrect MSEG revision identifier",
        23 => "VMXOFF under dual-monitor treatment of SMIs and SMM",
        24 => "VMCALL with invalid SMM-monitor features",
        25 => "VM entry with invalid VM-execution control fields in executive VMCS",
        26 => "VM entry with events blocked by MOV SS",
        28 => "invalid operand to INVEPT/INVVPID",
        _ => "unknown VM-instruction error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_qualifications_decode_port_size_and_direction() {
        let out = IoQualification::from_raw(0x00F4_0000).unwrap();
        assert_eq!((out.port, out.size, out.direction, out.string), (0xF4, IoSize::Byte, IoDirection::Out, false));
        let inp = IoQualification::from_raw(0x03F8_0008 | 3).unwrap();
        assert_eq!((inp.port, inp.size, inp.direction), (0x3F8, IoSize::Dword, IoDirection::In));
        assert_eq!(IoQualification::from_raw(2), Err(BadQualification(2)));
    }

    #[test]
    fn cr_access_decodes_register_and_kind() {
        assert_eq!(CrAccess::from_raw(0x0000).unwrap(), CrAccess { cr: 0, access: CrAccessType::MovToCr { gpr: 0 } });
        assert_eq!(CrAccess::from_raw(0x0313).unwrap(), CrAccess { cr: 3, access: CrAccessType::MovFromCr { gpr: 3 } });
        assert_eq!(CrAccess::from_raw(0x20).unwrap().access, CrAccessType::Clts);
    }

    #[test]
    fn exit_reasons_round_trip_and_unknown_numbers_are_data() {
        assert_eq!(RawExitReason(10).basic(), Ok(ExitReason::Cpuid));
        let failed = RawExitReason(0x8000_0021);
        assert_eq!(failed.basic(), Ok(ExitReason::InvalidGuestState));
        assert!(failed.entry_failure());
        assert_eq!(RawExitReason(35).basic(), Err(35));
        assert_eq!(RawExitReason(0xFFFF).basic(), Err(0xFFFF));
        assert!(ExitReason::Vmxon.is_vmx_instruction());
        assert!(!ExitReason::Cpuid.is_vmx_instruction());
    }

    #[test]
    fn a_general_protection_fault_with_error_code_encodes_as_the_sdm_says() {
        assert_eq!(InterruptionInfo::hardware_exception(13, Some(0)).raw(), 0x8000_0B0D);
        assert_eq!(InterruptionInfo::hardware_exception(6, None).raw(), 0x8000_0306);
    }

    #[test]
    fn ept_violation_names_the_access() {
        assert_eq!(EptViolation::from_raw(0b010).access_str(), "write");
        assert_eq!(EptViolation::from_raw(0b100).access_str(), "execute");
        assert_eq!(EptViolation::from_raw(0b001).access_str(), "read");
    }
}
