//! VM-exit information, decoded: exit reasons (SDM Vol. 3D Appendix C "VMX Basic Exit
//! Reasons"), the exit qualifications of I/O instructions, control-register accesses and
//! EPT violations (SDM Vol. 3C "Exit Qualification for ..." tables), the interruption
//! information of VM exits and VM entries, the guest interruptibility state, and the
//! VM-instruction error numbers (SDM Vol. 3C "VM-Instruction Error Numbers").
//!
//! Everything here decodes plain numbers read from the VMCS; nothing panics. Numbers the
//! SDM does not define are returned as data (`Err(n)`, [`QualificationError`]) for the
//! caller to report.

use core::fmt;

use bitflags::bitflags;

// ---------------------------------------------------------------------------------------
// Exit reasons
// ---------------------------------------------------------------------------------------

/// Declares [`ExitReason`] with `ALL`, `from_number` and `name` from one table, so the
/// three can never disagree.
macro_rules! exit_reasons {
    ( $( $(#[$meta:meta])* $variant:ident = $number:literal => $name:literal, )+ ) => {
        /// A basic exit reason: bits 15:0 of the exit-reason field (SDM Vol. 3D Appendix C
        /// "VMX Basic Exit Reasons"). The discriminant is the SDM's number.
        #[repr(u16)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ExitReason {
            $( $(#[$meta])* $variant = $number, )+
        }

        impl ExitReason {
            /// Every exit reason, by number.
            pub const ALL: &'static [ExitReason] = &[$(ExitReason::$variant),+];

            /// The exit reason numbered `n`, or `None` for a number Appendix C does not
            /// define (or that this table does not know yet).
            pub const fn from_number(n: u16) -> Option<ExitReason> {
                match n {
                    $( $number => Some(ExitReason::$variant), )+
                    _ => None,
                }
            }

            /// A short lower-case name for logs and exit counters, e.g. `"cpuid"`.
            pub const fn name(self) -> &'static str {
                match self {
                    $( ExitReason::$variant => $name, )+
                }
            }
        }
    };
}

exit_reasons! {
    /// An exception (with its bit set in the exception bitmap) or an NMI (with "NMI
    /// exiting").
    ExceptionOrNmi = 0 => "exception",
    ExternalInterrupt = 1 => "external_interrupt",
    TripleFault = 2 => "triple_fault",
    InitSignal = 3 => "init",
    StartupIpi = 4 => "sipi",
    IoSmi = 5 => "io_smi",
    OtherSmi = 6 => "other_smi",
    InterruptWindow = 7 => "interrupt_window",
    NmiWindow = 8 => "nmi_window",
    TaskSwitch = 9 => "task_switch",
    Cpuid = 10 => "cpuid",
    Getsec = 11 => "getsec",
    Hlt = 12 => "hlt",
    Invd = 13 => "invd",
    Invlpg = 14 => "invlpg",
    Rdpmc = 15 => "rdpmc",
    Rdtsc = 16 => "rdtsc",
    Rsm = 17 => "rsm",
    Vmcall = 18 => "vmcall",
    Vmclear = 19 => "vmclear",
    Vmlaunch = 20 => "vmlaunch",
    Vmptrld = 21 => "vmptrld",
    Vmptrst = 22 => "vmptrst",
    Vmread = 23 => "vmread",
    Vmresume = 24 => "vmresume",
    Vmwrite = 25 => "vmwrite",
    Vmxoff = 26 => "vmxoff",
    Vmxon = 27 => "vmxon",
    /// See [`CrAccess`].
    CrAccess = 28 => "cr_access",
    DrAccess = 29 => "dr_access",
    /// See [`IoQualification`].
    IoInstruction = 30 => "io",
    Rdmsr = 31 => "rdmsr",
    Wrmsr = 32 => "wrmsr",
    /// VM-entry failure (bit 31 of the exit-reason field is set).
    InvalidGuestState = 33 => "invalid_guest_state",
    /// VM-entry failure (bit 31 of the exit-reason field is set).
    MsrLoading = 34 => "msr_loading",
    Mwait = 36 => "mwait",
    MonitorTrapFlag = 37 => "monitor_trap_flag",
    Monitor = 39 => "monitor",
    Pause = 40 => "pause",
    /// VM-entry failure due to a machine-check event.
    MachineCheck = 41 => "machine_check",
    TprBelowThreshold = 43 => "tpr_below_threshold",
    ApicAccess = 44 => "apic_access",
    VirtualizedEoi = 45 => "virtualized_eoi",
    GdtrIdtrAccess = 46 => "gdtr_idtr_access",
    LdtrTrAccess = 47 => "ldtr_tr_access",
    /// See [`EptViolation`].
    EptViolation = 48 => "ept_violation",
    EptMisconfig = 49 => "ept_misconfig",
    Invept = 50 => "invept",
    Rdtscp = 51 => "rdtscp",
    /// The VMX-preemption timer counted down to zero.
    PreemptionTimer = 52 => "preemption_timer",
    Invvpid = 53 => "invvpid",
    /// WBINVD or WBNOINVD.
    Wbinvd = 54 => "wbinvd",
    Xsetbv = 55 => "xsetbv",
    ApicWrite = 56 => "apic_write",
    Rdrand = 57 => "rdrand",
    Invpcid = 58 => "invpcid",
    Vmfunc = 59 => "vmfunc",
    Encls = 60 => "encls",
    Rdseed = 61 => "rdseed",
    /// Page-modification log full.
    PmlFull = 62 => "pml_full",
    Xsaves = 63 => "xsaves",
    Xrstors = 64 => "xrstors",
    /// Sub-page-permission related event.
    SppEvent = 66 => "spp_event",
    Umwait = 67 => "umwait",
    Tpause = 68 => "tpause",
    Loadiwkey = 69 => "loadiwkey",
    BusLock = 74 => "bus_lock",
    /// "Instruction timeout" (notify VM exit).
    InstructionTimeout = 75 => "instruction_timeout",
    Seamcall = 76 => "seamcall",
    Tdcall = 77 => "tdcall",
    Rdmsrlist = 78 => "rdmsrlist",
    Wrmsrlist = 79 => "wrmsrlist",
}

impl ExitReason {
    /// The SDM's number.
    pub const fn number(self) -> u16 {
        self as u16
    }

    /// The VMX instructions (VMCLEAR, VMLAUNCH, VMPTRLD, VMPTRST, VMREAD, VMRESUME,
    /// VMWRITE, VMXOFF, VMXON, INVEPT, INVVPID, VMFUNC): they exit unconditionally in VMX
    /// non-root operation, and a guest without nested virtualization gets #UD. VMCALL is
    /// not among them: it is the hypercall instruction.
    pub const fn is_vmx_instruction(self) -> bool {
        matches!(
            self,
            ExitReason::Vmclear
                | ExitReason::Vmlaunch
                | ExitReason::Vmptrld
                | ExitReason::Vmptrst
                | ExitReason::Vmread
                | ExitReason::Vmresume
                | ExitReason::Vmwrite
                | ExitReason::Vmxoff
                | ExitReason::Vmxon
                | ExitReason::Invept
                | ExitReason::Invvpid
                | ExitReason::Vmfunc
        )
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The exit-reason field as read (SDM Vol. 3C "Basic VM-Exit Information", table
/// "Format of Exit Reason"): bits 15:0 basic reason, 27 exit from enclave mode,
/// 28 pending MTF VM exit, 29 exit from VMX root operation (SMM), 31 VM-entry failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawExitReason(pub u32);

impl RawExitReason {
    /// Bits 15:0, whether or not Appendix C defines them.
    pub const fn basic_number(self) -> u16 {
        self.0 as u16
    }

    /// The basic reason, or its number when it is unknown.
    pub const fn basic(self) -> Result<ExitReason, u16> {
        match ExitReason::from_number(self.basic_number()) {
            Some(reason) => Ok(reason),
            None => Err(self.basic_number()),
        }
    }

    /// Bit 27: the exit happened from enclave mode.
    pub const fn enclave_mode(self) -> bool {
        self.0 & (1 << 27) != 0
    }

    /// Bit 28: a monitor-trap-flag VM exit was pending.
    pub const fn pending_mtf(self) -> bool {
        self.0 & (1 << 28) != 0
    }

    /// Bit 29: the exit was from VMX root operation (an SMM VM exit).
    pub const fn from_vmx_root(self) -> bool {
        self.0 & (1 << 29) != 0
    }

    /// Bit 31: VM entry failed (then the basic reason is 33, 34 or 41 and only the
    /// exit-reason and exit-qualification fields are valid).
    pub const fn entry_failure(self) -> bool {
        self.0 & (1 << 31) != 0
    }
}

impl fmt::Display for RawExitReason {
    /// `cpuid (10)`, `invalid_guest_state (33, VM-entry failure)`, `unknown (35)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.basic() {
            Ok(reason) => reason.name(),
            Err(_) => "unknown",
        };
        write!(f, "{name} ({}", self.basic_number())?;
        if self.entry_failure() {
            f.write_str(", VM-entry failure")?;
        }
        f.write_str(")")
    }
}

// ---------------------------------------------------------------------------------------
// Exit qualifications
// ---------------------------------------------------------------------------------------

/// An exit qualification holding a value the SDM does not define.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QualificationError {
    /// I/O "size of access" encoding (bits 2:0) other than 0, 1 or 3.
    IoSize(u8),
    /// A control-register number (bits 3:0) that cannot cause this exit: MOV to/from CR
    /// exits only for CR0, CR3, CR4 and CR8; CLTS and LMSW report 0.
    ControlRegister(u8),
}

impl fmt::Display for QualificationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QualificationError::IoSize(n) => write!(f, "reserved I/O access-size encoding {n}"),
            QualificationError::ControlRegister(n) => write!(f, "CR{n} cannot cause this control-register exit"),
        }
    }
}

/// Size of an I/O access; the discriminant is the number of bytes.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoSize {
    Byte = 1,
    Word = 2,
    Dword = 4,
}

impl IoSize {
    /// 1, 2 or 4.
    pub const fn bytes(self) -> u32 {
        self as u32
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoDirection {
    /// OUT, OUTS: the guest writes the port.
    Out,
    /// IN, INS: the guest reads the port.
    In,
}

/// How the instruction named the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOperand {
    /// In DX (`in al, dx`; every string instruction).
    Dx,
    /// As an immediate byte (`out 0xE9, al`).
    Immediate,
}

/// Exit qualification of an I/O instruction (SDM Vol. 3C table "Exit Qualification for
/// I/O Instructions"): bits 2:0 size (0 = 1 byte, 1 = 2 bytes, 3 = 4 bytes), 3 direction
/// (0 = OUT, 1 = IN), 4 string instruction, 5 REP prefix, 6 operand encoding
/// (0 = DX, 1 = immediate), 31:16 port. Other bits are reserved and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoQualification {
    pub port: u16,
    pub size: IoSize,
    pub direction: IoDirection,
    /// INS/OUTS.
    pub string: bool,
    /// REP prefix (string instructions only).
    pub rep: bool,
    pub operand: IoOperand,
}

impl IoQualification {
    pub const fn from_raw(q: u64) -> Result<Self, QualificationError> {
        let size = match q & 7 {
            0 => IoSize::Byte,
            1 => IoSize::Word,
            3 => IoSize::Dword,
            other => return Err(QualificationError::IoSize(other as u8)),
        };
        Ok(IoQualification {
            port: (q >> 16) as u16,
            size,
            direction: if q & (1 << 3) != 0 { IoDirection::In } else { IoDirection::Out },
            string: q & (1 << 4) != 0,
            rep: q & (1 << 5) != 0,
            operand: if q & (1 << 6) != 0 { IoOperand::Immediate } else { IoOperand::Dx },
        })
    }
}

/// A general-purpose register, numbered as in the exit qualifications and
/// VM-exit instruction information (SDM Vol. 3C table "Exit Qualification for
/// Control-Register Accesses": 0 RAX, 1 RCX, 2 RDX, 3 RBX, 4 RSP, 5 RBP, 6 RSI, 7 RDI,
/// 8-15 R8-R15). RSP lives in the VMCS (guest RSP field), the others in the saved
/// register block.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gpr {
    Rax = 0,
    Rcx = 1,
    Rdx = 2,
    Rbx = 3,
    Rsp = 4,
    Rbp = 5,
    Rsi = 6,
    Rdi = 7,
    R8 = 8,
    R9 = 9,
    R10 = 10,
    R11 = 11,
    R12 = 12,
    R13 = 13,
    R14 = 14,
    R15 = 15,
}

impl Gpr {
    /// All sixteen, by number.
    pub const ALL: [Gpr; 16] = [
        Gpr::Rax,
        Gpr::Rcx,
        Gpr::Rdx,
        Gpr::Rbx,
        Gpr::Rsp,
        Gpr::Rbp,
        Gpr::Rsi,
        Gpr::Rdi,
        Gpr::R8,
        Gpr::R9,
        Gpr::R10,
        Gpr::R11,
        Gpr::R12,
        Gpr::R13,
        Gpr::R14,
        Gpr::R15,
    ];

    /// The register numbered `n` (0..=15).
    pub const fn from_number(n: u8) -> Option<Gpr> {
        if (n as usize) < Gpr::ALL.len() { Some(Gpr::ALL[n as usize]) } else { None }
    }

    /// The register in the low four bits of `n` (a 4-bit qualification field).
    const fn from_low_bits(n: u64) -> Gpr {
        Gpr::ALL[(n & 0xF) as usize]
    }

    pub const fn number(self) -> u8 {
        self as u8
    }

    /// The assembler name, e.g. `"rbx"`.
    pub const fn name(self) -> &'static str {
        match self {
            Gpr::Rax => "rax",
            Gpr::Rcx => "rcx",
            Gpr::Rdx => "rdx",
            Gpr::Rbx => "rbx",
            Gpr::Rsp => "rsp",
            Gpr::Rbp => "rbp",
            Gpr::Rsi => "rsi",
            Gpr::Rdi => "rdi",
            Gpr::R8 => "r8",
            Gpr::R9 => "r9",
            Gpr::R10 => "r10",
            Gpr::R11 => "r11",
            Gpr::R12 => "r12",
            Gpr::R13 => "r13",
            Gpr::R14 => "r14",
            Gpr::R15 => "r15",
        }
    }
}

/// What a control-register exit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrAccessType {
    /// MOV to CR from `gpr`.
    MovToCr { gpr: Gpr },
    /// MOV from CR to `gpr`.
    MovFromCr { gpr: Gpr },
    /// CLTS (CR 0).
    Clts,
    /// LMSW (CR 0) with `source_data`; `memory_operand` when the operand was in memory
    /// (then the guest-linear-address field holds its address).
    Lmsw { source_data: u16, memory_operand: bool },
}

/// Exit qualification of a control-register access (SDM Vol. 3C table "Exit
/// Qualification for Control-Register Accesses"): bits 3:0 control register, 5:4 access
/// type (0 MOV to CR, 1 MOV from CR, 2 CLTS, 3 LMSW), 6 LMSW operand type (0 register,
/// 1 memory), 11:8 general-purpose register of a MOV, 31:16 LMSW source data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrAccess {
    /// 0, 3, 4 or 8 (always 0 for CLTS and LMSW).
    pub cr: u8,
    pub access: CrAccessType,
}

impl CrAccess {
    pub const fn from_raw(q: u64) -> Result<Self, QualificationError> {
        let cr = (q & 0xF) as u8;
        let gpr = Gpr::from_low_bits(q >> 8);
        let access = match (q >> 4) & 3 {
            0 => CrAccessType::MovToCr { gpr },
            1 => CrAccessType::MovFromCr { gpr },
            2 => CrAccessType::Clts,
            _ => CrAccessType::Lmsw { source_data: (q >> 16) as u16, memory_operand: q & (1 << 6) != 0 },
        };
        let cr_ok = match access {
            CrAccessType::MovToCr { .. } | CrAccessType::MovFromCr { .. } => matches!(cr, 0 | 3 | 4 | 8),
            CrAccessType::Clts | CrAccessType::Lmsw { .. } => cr == 0,
        };
        if cr_ok { Ok(CrAccess { cr, access }) } else { Err(QualificationError::ControlRegister(cr)) }
    }
}

/// Exit qualification of an EPT violation (SDM Vol. 3C table "Exit Qualification for EPT
/// Violations"), the bits Ferrovisor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EptViolation {
    /// Bit 0: the access was a data read.
    pub read: bool,
    /// Bit 1: the access was a data write.
    pub write: bool,
    /// Bit 2: the access was an instruction fetch.
    pub fetch: bool,
    /// Bit 3: the guest-physical address was readable (AND of the R bits of the EPT
    /// entries walked); all three permission bits are 0 for an unmapped address.
    pub readable: bool,
    /// Bit 4: ... writable.
    pub writable: bool,
    /// Bit 5: ... executable (for supervisor-mode linear addresses, with mode-based
    /// execute control).
    pub executable: bool,
    /// Bit 7: the guest-linear-address field is valid.
    pub gla_valid: bool,
    /// Bit 8 (meaningful only with bit 7): the access was to the translation of the
    /// linear address; false means to a guest paging-structure entry during the walk.
    /// Reported false when bit 7 is clear.
    pub gla_is_translation: bool,
    /// Bit 12: NMI unblocking due to IRET (the guest's NMI blocking must be restored
    /// before re-entry).
    pub nmi_unblocking: bool,
}

impl EptViolation {
    pub const fn from_raw(q: u64) -> Self {
        const fn bit(q: u64, n: u32) -> bool {
            q & (1 << n) != 0
        }
        EptViolation {
            read: bit(q, 0),
            write: bit(q, 1),
            fetch: bit(q, 2),
            readable: bit(q, 3),
            writable: bit(q, 4),
            executable: bit(q, 5),
            gla_valid: bit(q, 7),
            gla_is_translation: bit(q, 7) && bit(q, 8),
            nmi_unblocking: bit(q, 12),
        }
    }

    /// `"execute"`, `"write"` or `"read"` for the access (in that priority: an
    /// instruction that reads and writes reports both bits), or `"unknown"` if the
    /// qualification names no access at all.
    pub const fn access_str(&self) -> &'static str {
        if self.fetch {
            "execute"
        } else if self.write {
            "write"
        } else if self.read {
            "read"
        } else {
            "unknown"
        }
    }
}

// ---------------------------------------------------------------------------------------
// Interruption information and interruptibility
// ---------------------------------------------------------------------------------------

/// Interruption type, bits 10:8 of the interruption-information fields (SDM Vol. 3C
/// "VM-Entry Controls for Event Injection"; type 1 is reserved).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptionType {
    ExternalInterrupt = 0,
    Nmi = 2,
    HardwareException = 3,
    /// INT n.
    SoftwareInterrupt = 4,
    /// INT1 (ICEBP).
    PrivilegedSoftwareException = 5,
    /// INT3, INTO.
    SoftwareException = 6,
    /// Other event (VM entry only: a pending MTF VM exit, vector 0).
    Other = 7,
}

/// Hardware exceptions that push an error code: #DF 8, #TS 10, #NP 11, #SS 12, #GP 13,
/// #PF 14, #AC 17, #CP 21 (SDM Vol. 3A "Exception and Interrupt Reference"). In protected
/// mode, VM entry requires "deliver error code" to be set exactly for these (SDM Vol. 3C
/// "Checks on VM-Entry Control Fields"); for a real-mode guest it must be clear.
pub const fn exception_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21)
}

/// The VM-entry interruption-information field (event injection) and the VM-exit
/// interruption-information and IDT-vectoring information fields, which share one
/// format (SDM Vol. 3C "VM-Entry Controls for Event Injection", "Information for VM
/// Exits Due to Vectored Events"): bits 7:0 vector, 10:8 type, 11 deliver error code /
/// error code valid, 12 NMI unblocking due to IRET (exit information only; must be 0 on
/// entry), 31 valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterruptionInfo(u32);

impl InterruptionInfo {
    /// No event (valid bit clear): write this to cancel an injection.
    pub const NONE: InterruptionInfo = InterruptionInfo(0);

    const VALID: u32 = 1 << 31;
    const ERROR_CODE: u32 = 1 << 11;
    const NMI_UNBLOCKING: u32 = 1 << 12;

    pub const fn from_raw(raw: u32) -> Self {
        InterruptionInfo(raw)
    }

    pub const fn raw(self) -> u32 {
        self.0
    }

    /// A valid event.
    pub const fn new(vector: u8, kind: InterruptionType, deliver_error_code: bool) -> Self {
        let error_code = if deliver_error_code { Self::ERROR_CODE } else { 0 };
        InterruptionInfo(vector as u32 | (kind as u32) << 8 | error_code | Self::VALID)
    }

    /// A hardware exception. "Deliver error code" is set when `error_code` is given; the
    /// caller writes the code itself to the VM-entry exception error-code field, and
    /// should give one exactly when [`exception_has_error_code`] (protected mode).
    pub const fn hardware_exception(vector: u8, error_code: Option<u32>) -> Self {
        Self::new(vector, InterruptionType::HardwareException, error_code.is_some())
    }

    pub const fn external_interrupt(vector: u8) -> Self {
        Self::new(vector, InterruptionType::ExternalInterrupt, false)
    }

    /// An NMI (the SDM requires vector 2 for this type).
    pub const fn nmi() -> Self {
        Self::new(2, InterruptionType::Nmi, false)
    }

    /// Bit 31.
    pub const fn is_valid(self) -> bool {
        self.0 & Self::VALID != 0
    }

    pub const fn vector(self) -> u8 {
        self.0 as u8
    }

    /// The type, or the reserved encoding 1.
    pub const fn kind(self) -> Result<InterruptionType, u8> {
        match (self.0 >> 8) & 7 {
            0 => Ok(InterruptionType::ExternalInterrupt),
            2 => Ok(InterruptionType::Nmi),
            3 => Ok(InterruptionType::HardwareException),
            4 => Ok(InterruptionType::SoftwareInterrupt),
            5 => Ok(InterruptionType::PrivilegedSoftwareException),
            6 => Ok(InterruptionType::SoftwareException),
            7 => Ok(InterruptionType::Other),
            reserved => Err(reserved as u8),
        }
    }

    /// Bit 11: an error code is delivered (entry) / was pushed (exit).
    pub const fn delivers_error_code(self) -> bool {
        self.0 & Self::ERROR_CODE != 0
    }

    /// Bit 12 (VM-exit interruption information only): the exit happened after an IRET
    /// had unblocked NMIs.
    pub const fn nmi_unblocking(self) -> bool {
        self.0 & Self::NMI_UNBLOCKING != 0
    }
}

bitflags! {
    /// The guest interruptibility-state field (SDM Vol. 3C "Guest Non-Register State").
    /// Unknown bits are retained, so read-modify-write keeps them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Interruptibility: u32 {
        /// Bit 0: blocking by STI (the instruction after STI).
        const BLOCKING_BY_STI = 1 << 0;
        /// Bit 1: blocking by MOV SS / POP SS.
        const BLOCKING_BY_MOV_SS = 1 << 1;
        /// Bit 2: blocking by SMI.
        const BLOCKING_BY_SMI = 1 << 2;
        /// Bit 3: blocking by NMI.
        const BLOCKING_BY_NMI = 1 << 3;
        /// Bit 4: enclave interruption.
        const ENCLAVE_INTERRUPTION = 1 << 4;

        const _ = !0;
    }
}

// ---------------------------------------------------------------------------------------
// VM-instruction errors
// ---------------------------------------------------------------------------------------

/// The meaning of VM-instruction error number `n` (SDM Vol. 3C "VM-Instruction Error
/// Numbers"), or `"unknown"` for 0, the reserved numbers 14, 21 and 27, and anything
/// above 28.
pub const fn vm_instruction_error_str(n: u32) -> &'static str {
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
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    #[test]
    fn exit_reason_numbers_match_appendix_c() {
        let spot_checks = [
            (ExitReason::ExceptionOrNmi, 0),
            (ExitReason::TripleFault, 2),
            (ExitReason::Cpuid, 10),
            (ExitReason::Hlt, 12),
            (ExitReason::Vmcall, 18),
            (ExitReason::CrAccess, 28),
            (ExitReason::IoInstruction, 30),
            (ExitReason::InvalidGuestState, 33),
            (ExitReason::Mwait, 36),
            (ExitReason::MachineCheck, 41),
            (ExitReason::EptViolation, 48),
            (ExitReason::EptMisconfig, 49),
            (ExitReason::PreemptionTimer, 52),
            (ExitReason::Wbinvd, 54),
            (ExitReason::Xsetbv, 55),
            (ExitReason::Xrstors, 64),
            (ExitReason::Loadiwkey, 69),
            (ExitReason::BusLock, 74),
            (ExitReason::Wrmsrlist, 79),
        ];
        for (reason, n) in spot_checks {
            assert_eq!(reason.number(), n, "{reason:?}");
        }
    }

    #[test]
    fn every_exit_reason_round_trips_through_its_number() {
        for &reason in ExitReason::ALL {
            assert_eq!(ExitReason::from_number(reason.number()), Some(reason));
            assert_eq!(RawExitReason(u32::from(reason.number())).basic(), Ok(reason));
        }
        assert_eq!(ExitReason::ALL.len(), 72);
        assert!(ExitReason::ALL.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn undefined_exit_reason_numbers_are_returned_as_data() {
        for n in [35, 38, 42, 65, 70, 71, 72, 73, 80, 0xFFFF] {
            assert_eq!(ExitReason::from_number(n), None, "{n}");
            assert_eq!(RawExitReason(u32::from(n)).basic(), Err(n));
        }
    }

    #[test]
    fn entry_failure_bit_is_separate_from_the_basic_reason() {
        let failed = RawExitReason(0x8000_0021);
        assert_eq!(failed.basic(), Ok(ExitReason::InvalidGuestState));
        assert!(failed.entry_failure());
        assert_eq!(failed.to_string(), "invalid_guest_state (33, VM-entry failure)");
        let ok = RawExitReason(10);
        assert!(!ok.entry_failure());
        assert_eq!(ok.to_string(), "cpuid (10)");
        assert_eq!(RawExitReason(35).to_string(), "unknown (35)");
        assert_eq!(RawExitReason(0x8000_0022).basic(), Ok(ExitReason::MsrLoading));
    }

    #[test]
    fn exit_reason_flag_bits_decode() {
        let r = RawExitReason((1 << 27) | (1 << 28) | (1 << 29) | 48);
        assert!(r.enclave_mode() && r.pending_mtf() && r.from_vmx_root());
        assert!(!r.entry_failure());
        assert_eq!(r.basic(), Ok(ExitReason::EptViolation));
        let plain = RawExitReason(48);
        assert!(!plain.enclave_mode() && !plain.pending_mtf() && !plain.from_vmx_root());
    }

    #[test]
    fn vmx_instructions_are_exactly_the_twelve() {
        let vmx: Vec<u16> = ExitReason::ALL.iter().filter(|r| r.is_vmx_instruction()).map(|r| r.number()).collect();
        assert_eq!(vmx, [19, 20, 21, 22, 23, 24, 25, 26, 27, 50, 53, 59]);
        assert!(!ExitReason::Vmcall.is_vmx_instruction());
    }

    #[test]
    fn exit_reason_names_are_log_keys() {
        assert_eq!(ExitReason::Cpuid.name(), "cpuid");
        assert_eq!(ExitReason::IoInstruction.name(), "io");
        assert_eq!(ExitReason::ExceptionOrNmi.to_string(), "exception");
        // Names are unique, so per-reason counters never merge.
        let mut names: Vec<&str> = ExitReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ExitReason::ALL.len());
    }

    #[test]
    fn out_to_port_f4_of_one_byte() {
        // `out dx, al` with DX = 0xF4.
        assert_eq!(
            IoQualification::from_raw(0x00F4_0000),
            Ok(IoQualification {
                port: 0xF4,
                size: IoSize::Byte,
                direction: IoDirection::Out,
                string: false,
                rep: false,
                operand: IoOperand::Dx,
            })
        );
    }

    #[test]
    fn in_from_port_3f8_of_one_byte() {
        // Bit 3 set: IN.
        assert_eq!(
            IoQualification::from_raw(0x03F8_0008),
            Ok(IoQualification {
                port: 0x3F8,
                size: IoSize::Byte,
                direction: IoDirection::In,
                string: false,
                rep: false,
                operand: IoOperand::Dx,
            })
        );
    }

    #[test]
    fn io_sizes_string_rep_and_immediate_decode() {
        // `out 0xE9, al`: immediate operand.
        let imm = IoQualification::from_raw(0x00E9_0040).unwrap();
        assert_eq!((imm.port, imm.operand, imm.direction), (0xE9, IoOperand::Immediate, IoDirection::Out));
        // `in eax, dx` from 0xCFC.
        let dword = IoQualification::from_raw(0x0CFC_000B).unwrap();
        assert_eq!(
            (dword.port, dword.size, dword.size.bytes(), dword.direction),
            (0xCFC, IoSize::Dword, 4, IoDirection::In)
        );
        // `out dx, ax`.
        assert_eq!(IoQualification::from_raw(0x0070_0001).unwrap().size, IoSize::Word);
        // `rep outsb` to 0x3F8.
        let rep = IoQualification::from_raw(0x03F8_0030).unwrap();
        assert_eq!((rep.string, rep.rep, rep.direction, rep.size), (true, true, IoDirection::Out, IoSize::Byte));
        // `insw` without REP.
        let ins = IoQualification::from_raw(0x0060_0019).unwrap();
        assert_eq!((ins.string, ins.rep, ins.direction, ins.size), (true, false, IoDirection::In, IoSize::Word));
    }

    #[test]
    fn reserved_io_size_encodings_are_errors_not_panics() {
        assert_eq!(IoQualification::from_raw(0x00F4_0002), Err(QualificationError::IoSize(2)));
        for size in 4..8 {
            assert_eq!(IoQualification::from_raw(size), Err(QualificationError::IoSize(size as u8)));
        }
        assert_eq!(QualificationError::IoSize(2).to_string(), "reserved I/O access-size encoding 2");
    }

    #[test]
    fn mov_to_cr0_from_rax() {
        assert_eq!(CrAccess::from_raw(0x0000), Ok(CrAccess { cr: 0, access: CrAccessType::MovToCr { gpr: Gpr::Rax } }));
    }

    #[test]
    fn mov_from_cr3_to_rbx() {
        assert_eq!(
            CrAccess::from_raw(0x0313),
            Ok(CrAccess { cr: 3, access: CrAccessType::MovFromCr { gpr: Gpr::Rbx } })
        );
    }

    #[test]
    fn cr_access_decodes_every_register_and_kind() {
        assert_eq!(CrAccess::from_raw(0x0F04), Ok(CrAccess { cr: 4, access: CrAccessType::MovToCr { gpr: Gpr::R15 } }));
        assert_eq!(CrAccess::from_raw(0x0408), Ok(CrAccess { cr: 8, access: CrAccessType::MovToCr { gpr: Gpr::Rsp } }));
        assert_eq!(CrAccess::from_raw(0x0020), Ok(CrAccess { cr: 0, access: CrAccessType::Clts }));
        assert_eq!(
            CrAccess::from_raw(0x0001_0030),
            Ok(CrAccess { cr: 0, access: CrAccessType::Lmsw { source_data: 1, memory_operand: false } })
        );
        assert_eq!(
            CrAccess::from_raw(0x000F_0070),
            Ok(CrAccess { cr: 0, access: CrAccessType::Lmsw { source_data: 0xF, memory_operand: true } })
        );
    }

    #[test]
    fn impossible_control_registers_are_errors() {
        assert_eq!(CrAccess::from_raw(0x0002), Err(QualificationError::ControlRegister(2)));
        assert_eq!(CrAccess::from_raw(0x0023), Err(QualificationError::ControlRegister(3)), "CLTS names CR0");
        assert_eq!(CrAccess::from_raw(0x003F), Err(QualificationError::ControlRegister(15)));
        assert_eq!(QualificationError::ControlRegister(2).to_string(), "CR2 cannot cause this control-register exit");
    }

    #[test]
    fn gprs_are_numbered_as_in_the_sdm_table() {
        for (n, gpr) in Gpr::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(gpr.number()), n);
            assert_eq!(Gpr::from_number(n as u8), Some(gpr));
        }
        assert_eq!(Gpr::from_number(16), None);
        assert_eq!((Gpr::Rbx.name(), Gpr::Rsp.number(), Gpr::R8.number()), ("rbx", 4, 8));
    }

    #[test]
    fn write_to_a_read_only_page_through_a_linear_address() {
        // Write; page readable and executable; GLA valid, access to the translation.
        let v = EptViolation::from_raw(0x1AA);
        assert_eq!(
            v,
            EptViolation {
                read: false,
                write: true,
                fetch: false,
                readable: true,
                writable: false,
                executable: true,
                gla_valid: true,
                gla_is_translation: true,
                nmi_unblocking: false,
            }
        );
        assert_eq!(v.access_str(), "write");
    }

    #[test]
    fn ept_violation_accesses_and_flags() {
        // Read of an unmapped GPA during a guest page walk.
        let walk = EptViolation::from_raw(0x81);
        assert_eq!((walk.read, walk.readable, walk.gla_valid, walk.gla_is_translation), (true, false, true, false));
        assert_eq!(walk.access_str(), "read");
        // Fetch from a readable, writable, non-executable page.
        let fetch = EptViolation::from_raw(0x19C);
        assert_eq!((fetch.fetch, fetch.readable, fetch.writable, fetch.executable), (true, true, true, false));
        assert_eq!(fetch.access_str(), "execute");
        // Bit 8 without bit 7 means nothing.
        assert!(!EptViolation::from_raw(0x101).gla_is_translation);
        assert!(EptViolation::from_raw(0x1001).nmi_unblocking);
        assert_eq!(EptViolation::from_raw(0).access_str(), "unknown");
        // A read-modify-write reports both; it is a write.
        assert_eq!(EptViolation::from_raw(0x3).access_str(), "write");
    }

    #[test]
    fn general_protection_fault_with_error_code_zero_is_0x80000b0d() {
        let gp = InterruptionInfo::hardware_exception(13, Some(0));
        assert_eq!(gp.raw(), 0x8000_0B0D);
        assert_eq!(InterruptionInfo::from_raw(0x8000_0B0D), gp);
    }

    #[test]
    fn interruption_info_encodes_each_constructor() {
        assert_eq!(InterruptionInfo::hardware_exception(6, None).raw(), 0x8000_0306);
        assert_eq!(InterruptionInfo::hardware_exception(14, Some(2)).raw(), 0x8000_0B0E);
        assert_eq!(InterruptionInfo::external_interrupt(0x20).raw(), 0x8000_0020);
        assert_eq!(InterruptionInfo::nmi().raw(), 0x8000_0202);
        assert_eq!(InterruptionInfo::new(0x80, InterruptionType::SoftwareInterrupt, false).raw(), 0x8000_0480);
        assert_eq!(InterruptionInfo::new(3, InterruptionType::SoftwareException, false).raw(), 0x8000_0603);
        assert_eq!(InterruptionInfo::NONE.raw(), 0);
    }

    #[test]
    fn interruption_info_decodes_exit_information() {
        // #PF with error code, exit after an IRET unblocked NMIs.
        let pf = InterruptionInfo::from_raw(0x8000_1B0E);
        assert!(pf.is_valid());
        assert_eq!(pf.vector(), 14);
        assert_eq!(pf.kind(), Ok(InterruptionType::HardwareException));
        assert!(pf.delivers_error_code());
        assert!(pf.nmi_unblocking());
        let nmi = InterruptionInfo::from_raw(0x8000_0202);
        assert_eq!((nmi.vector(), nmi.kind(), nmi.delivers_error_code()), (2, Ok(InterruptionType::Nmi), false));
        assert!(!InterruptionInfo::from_raw(0x0000_0B0D).is_valid());
        assert_eq!(InterruptionInfo::from_raw(0x8000_0100).kind(), Err(1));
        assert_eq!(InterruptionInfo::from_raw(0x8000_0700).kind(), Ok(InterruptionType::Other));
    }

    #[test]
    fn interruption_info_round_trips() {
        for raw in [0x8000_0B0D, 0x8000_0306, 0x8000_0020, 0x8000_0202, 0x8000_1B0E, 0] {
            assert_eq!(InterruptionInfo::from_raw(raw).raw(), raw);
        }
        for vector in [0u8, 8, 13, 32, 255] {
            let info = InterruptionInfo::new(vector, InterruptionType::ExternalInterrupt, false);
            assert_eq!((info.vector(), info.kind()), (vector, Ok(InterruptionType::ExternalInterrupt)));
        }
    }

    #[test]
    fn exceptions_with_error_codes() {
        let with: Vec<u8> = (0..32).filter(|&v| exception_has_error_code(v)).collect();
        assert_eq!(with, [8, 10, 11, 12, 13, 14, 17, 21]);
    }

    #[test]
    fn interruptibility_bits() {
        assert_eq!(Interruptibility::BLOCKING_BY_STI.bits(), 1);
        assert_eq!(Interruptibility::BLOCKING_BY_MOV_SS.bits(), 2);
        assert_eq!(Interruptibility::BLOCKING_BY_SMI.bits(), 4);
        assert_eq!(Interruptibility::BLOCKING_BY_NMI.bits(), 8);
        // Skipping an instruction ends STI/MOV SS blocking and keeps everything else,
        // including bits this table does not name.
        let state = Interruptibility::from_bits_retain(0x8000_000B);
        let after = state - (Interruptibility::BLOCKING_BY_STI | Interruptibility::BLOCKING_BY_MOV_SS);
        assert_eq!(after.bits(), 0x8000_0008);
    }

    #[test]
    fn vm_instruction_errors_are_named() {
        assert_eq!(vm_instruction_error_str(7), "VM entry with invalid control field(s)");
        assert_eq!(vm_instruction_error_str(8), "VM entry with invalid host-state field(s)");
        assert_eq!(vm_instruction_error_str(12), "VMREAD/VMWRITE from/to unsupported VMCS component");
        assert_eq!(vm_instruction_error_str(28), "invalid operand to INVEPT/INVVPID");
        let unknown: Vec<u32> = (0..40).filter(|&n| vm_instruction_error_str(n) == "unknown").collect();
        assert_eq!(unknown, [0, 14, 21, 27, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39]);
    }
}
