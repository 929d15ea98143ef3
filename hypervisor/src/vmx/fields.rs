//! Typed VMCS field encodings (Intel SDM Vol. 3D Appendix B "Field Encoding in VMCS").
//!
//! # The scheme
//!
//! Every field is a variant of exactly one enum, chosen by its width and by whether
//! software may write it:
//!
//! | width   | writable (control, guest-state, host-state) | read-only (VM-exit information) |
//! |---------|---------------------------------------------|---------------------------------|
//! | 16-bit  | [`Field16`]                                 | (none exist)                    |
//! | 32-bit  | [`Field32`]                                 | [`ReadOnly32`]                  |
//! | 64-bit  | [`Field64`]                                 | [`ReadOnly64`]                  |
//! | natural | [`FieldNatural`]                            | [`ReadOnlyNatural`]             |
//!
//! The kernel's VMWRITE wrappers accept only the four writable enums, so writing a
//! read-only field, or writing a value of the wrong width, does not compile. (VMWRITE to
//! a read-only field fails with VM-instruction error 13 unless IA32_VMX_MISC bit 29 is
//! set; this hypervisor never needs that.) Reads accept every enum.
//!
//! # Encoding layout
//!
//! SDM Vol. 3C "VMREAD, VMWRITE, and Encodings of VMCS Fields", table "Structure of VMCS
//! Component Encoding":
//!
//! - bit 0: access type, 0 = full (every encoding here is "full"; the "high" halves of
//!   64-bit fields, encoding + 1, exist only for 32-bit software and are not used);
//! - bits 9:1: index;
//! - bits 11:10: type, 0 = control, 1 = VM-exit information (read-only data),
//!   2 = guest state, 3 = host state ([`FieldType`]);
//! - bit 12: reserved, 0;
//! - bits 14:13: width, 0 = 16-bit, 1 = 64-bit, 2 = 32-bit, 3 = natural ([`Width`]);
//! - bits 31:15: reserved, 0.
//!
//! A compile-time check (the `const _` items below) proves that every variant's encoding
//! has the width bits of its enum, a type its enum allows (writable enums never hold
//! type 1, read-only enums only type 1), access type "full" and no reserved bit set; a
//! misfiled or mistyped encoding fails the build on every target.
//!
//! [`Segment`] and [`DescriptorTable`] name the four fields of each guest segment
//! register (and the host's), so setup code can loop over registers instead of spelling
//! out 32 field names.

/// Width of a VMCS field: bits 14:13 of its encoding.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Width {
    Bits16 = 0,
    Bits64 = 1,
    Bits32 = 2,
    /// 64 bits on processors that support Intel 64 (32 bits otherwise).
    Natural = 3,
}

impl Width {
    /// The width encoded in bits 14:13 of `encoding`.
    pub const fn of(encoding: u32) -> Width {
        match (encoding >> 13) & 3 {
            0 => Width::Bits16,
            1 => Width::Bits64,
            2 => Width::Bits32,
            _ => Width::Natural,
        }
    }
}

/// Type of a VMCS field: bits 11:10 of its encoding.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    Control = 0,
    /// "VM-exit information" (read-only data) fields.
    ReadOnlyData = 1,
    GuestState = 2,
    HostState = 3,
}

impl FieldType {
    /// The type encoded in bits 11:10 of `encoding`.
    pub const fn of(encoding: u32) -> FieldType {
        match (encoding >> 10) & 3 {
            0 => FieldType::Control,
            1 => FieldType::ReadOnlyData,
            2 => FieldType::GuestState,
            _ => FieldType::HostState,
        }
    }
}

/// Bits that may be set in a "full" field encoding: index (9:1), type (11:10) and width
/// (14:13). Bit 0 (access type) and bits 12 and 31:15 (reserved) are 0.
const FULL_ENCODING_BITS: u32 = 0x6FFE;

/// Whether every encoding in `encodings` is a full-access encoding of width `width` whose
/// type is allowed: type 1 (read-only data) exactly when `read_only`.
const fn encodings_are_consistent(encodings: &[u32], width: Width, read_only: bool) -> bool {
    let mut i = 0;
    while i < encodings.len() {
        let e = encodings[i];
        let is_read_only = matches!(FieldType::of(e), FieldType::ReadOnlyData);
        if e & !FULL_ENCODING_BITS != 0 || Width::of(e) as u32 != width as u32 || is_read_only != read_only {
            return false;
        }
        i += 1;
    }
    true
}

/// Declares one field enum: the enum itself (discriminant = encoding), `ALL`, `WIDTH`,
/// `READ_ONLY`, `encoding()` and `name()`, and the compile-time consistency check.
macro_rules! vmcs_fields {
    (
        $(#[$meta:meta])*
        pub enum $name:ident : width $width:ident, read_only $ro:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $enc:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $enc, )+
        }

        impl $name {
            /// Every field of this enum, in declaration (= encoding) order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The width of every field of this enum.
            pub const WIDTH: Width = Width::$width;
            /// Whether the fields of this enum are read-only (VM-exit information).
            pub const READ_ONLY: bool = $ro;

            /// The encoding to pass to VMREAD/VMWRITE (SDM Vol. 3D Appendix B).
            pub const fn encoding(self) -> u32 {
                self as u32
            }

            /// The variant's name, e.g. `"GuestRip"`, for VMCS dumps.
            pub const fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => stringify!($variant), )+
                }
            }

            /// The type bits (11:10) of this field's encoding.
            pub const fn field_type(self) -> FieldType {
                FieldType::of(self as u32)
            }
        }

        const _: () = assert!(
            encodings_are_consistent(&[$($enc),+], Width::$width, $ro),
            concat!(stringify!($name), ": an encoding has the wrong width, type or reserved bits"),
        );
    };
}

vmcs_fields! {
    /// Writable 16-bit fields (SDM Vol. 3D Appendix B.1).
    pub enum Field16: width Bits16, read_only false {
        // B.1.1 16-bit control fields.
        /// Virtual-processor identifier (VPID); requires "enable VPID".
        VirtualProcessorId = 0x0000,
        /// Posted-interrupt notification vector; requires "process posted interrupts".
        PostedInterruptNotificationVector = 0x0002,
        /// EPTP index; requires "EPT-violation #VE".
        EptpIndex = 0x0004,
        // B.1.2 16-bit guest-state fields.
        GuestEsSelector = 0x0800,
        GuestCsSelector = 0x0802,
        GuestSsSelector = 0x0804,
        GuestDsSelector = 0x0806,
        GuestFsSelector = 0x0808,
        GuestGsSelector = 0x080A,
        GuestLdtrSelector = 0x080C,
        GuestTrSelector = 0x080E,
        /// Guest interrupt status; requires "virtual-interrupt delivery".
        GuestInterruptStatus = 0x0810,
        /// PML index; requires "enable PML".
        PmlIndex = 0x0812,
        // B.1.3 16-bit host-state fields.
        HostEsSelector = 0x0C00,
        HostCsSelector = 0x0C02,
        HostSsSelector = 0x0C04,
        HostDsSelector = 0x0C06,
        HostFsSelector = 0x0C08,
        HostGsSelector = 0x0C0A,
        HostTrSelector = 0x0C0C,
    }
}

vmcs_fields! {
    /// Writable 64-bit fields, full access (SDM Vol. 3D Appendix B.2).
    pub enum Field64: width Bits64, read_only false {
        // B.2.1 64-bit control fields.
        IoBitmapA = 0x2000,
        IoBitmapB = 0x2002,
        MsrBitmaps = 0x2004,
        ExitMsrStoreAddress = 0x2006,
        ExitMsrLoadAddress = 0x2008,
        EntryMsrLoadAddress = 0x200A,
        ExecutiveVmcsPointer = 0x200C,
        PmlAddress = 0x200E,
        TscOffset = 0x2010,
        /// Virtual-APIC address; requires "use TPR shadow".
        VirtualApicPage = 0x2012,
        /// APIC-access address; requires "virtualize APIC accesses".
        ApicAccessAddress = 0x2014,
        PostedInterruptDescriptor = 0x2016,
        VmFunctionControls = 0x2018,
        EptPointer = 0x201A,
        EoiExitBitmap0 = 0x201C,
        EoiExitBitmap1 = 0x201E,
        EoiExitBitmap2 = 0x2020,
        EoiExitBitmap3 = 0x2022,
        EptpListAddress = 0x2024,
        VmreadBitmap = 0x2026,
        VmwriteBitmap = 0x2028,
        VirtualizationExceptionInfoAddress = 0x202A,
        /// XSS-exiting bitmap; consulted by XSAVES/XRSTORS when "enable XSAVES/XRSTORS" is 1.
        XssExitingBitmap = 0x202C,
        EnclsExitingBitmap = 0x202E,
        TscMultiplier = 0x2032,
        // B.2.3 64-bit guest-state fields.
        /// Must be all ones (u64::MAX) unless VMCS shadowing is used.
        VmcsLinkPointer = 0x2800,
        GuestIa32Debugctl = 0x2802,
        GuestIa32Pat = 0x2804,
        GuestIa32Efer = 0x2806,
        GuestIa32PerfGlobalCtrl = 0x2808,
        GuestPdpte0 = 0x280A,
        GuestPdpte1 = 0x280C,
        GuestPdpte2 = 0x280E,
        GuestPdpte3 = 0x2810,
        // B.2.4 64-bit host-state fields.
        HostIa32Pat = 0x2C00,
        HostIa32Efer = 0x2C02,
        HostIa32PerfGlobalCtrl = 0x2C04,
    }
}

vmcs_fields! {
    /// Writable 32-bit fields (SDM Vol. 3D Appendix B.3).
    pub enum Field32: width Bits32, read_only false {
        // B.3.1 32-bit control fields.
        PinBasedControls = 0x4000,
        PrimaryProcBasedControls = 0x4002,
        ExceptionBitmap = 0x4004,
        PageFaultErrorCodeMask = 0x4006,
        PageFaultErrorCodeMatch = 0x4008,
        Cr3TargetCount = 0x400A,
        ExitControls = 0x400C,
        ExitMsrStoreCount = 0x400E,
        ExitMsrLoadCount = 0x4010,
        EntryControls = 0x4012,
        EntryMsrLoadCount = 0x4014,
        /// VM-entry interruption-information field (event injection); see
        /// [`super::exit::InterruptionInfo`].
        EntryInterruptionInfo = 0x4016,
        EntryExceptionErrorCode = 0x4018,
        EntryInstructionLength = 0x401A,
        TprThreshold = 0x401C,
        SecondaryProcBasedControls = 0x401E,
        PleGap = 0x4020,
        PleWindow = 0x4022,
        // B.3.3 32-bit guest-state fields.
        GuestEsLimit = 0x4800,
        GuestCsLimit = 0x4802,
        GuestSsLimit = 0x4804,
        GuestDsLimit = 0x4806,
        GuestFsLimit = 0x4808,
        GuestGsLimit = 0x480A,
        GuestLdtrLimit = 0x480C,
        GuestTrLimit = 0x480E,
        GuestGdtrLimit = 0x4810,
        GuestIdtrLimit = 0x4812,
        GuestEsAccessRights = 0x4814,
        GuestCsAccessRights = 0x4816,
        GuestSsAccessRights = 0x4818,
        GuestDsAccessRights = 0x481A,
        GuestFsAccessRights = 0x481C,
        GuestGsAccessRights = 0x481E,
        GuestLdtrAccessRights = 0x4820,
        GuestTrAccessRights = 0x4822,
        /// See [`super::exit::Interruptibility`].
        GuestInterruptibilityState = 0x4824,
        /// 0 active, 1 HLT, 2 shutdown, 3 wait-for-SIPI.
        GuestActivityState = 0x4826,
        GuestSmbase = 0x4828,
        GuestSysenterCs = 0x482A,
        /// Requires "activate VMX-preemption timer".
        PreemptionTimerValue = 0x482E,
        // B.3.4 32-bit host-state field.
        HostSysenterCs = 0x4C00,
    }
}

vmcs_fields! {
    /// Writable natural-width fields (SDM Vol. 3D Appendix B.4).
    pub enum FieldNatural: width Natural, read_only false {
        // B.4.1 natural-width control fields.
        Cr0GuestHostMask = 0x6000,
        Cr4GuestHostMask = 0x6002,
        Cr0ReadShadow = 0x6004,
        Cr4ReadShadow = 0x6006,
        Cr3Target0 = 0x6008,
        Cr3Target1 = 0x600A,
        Cr3Target2 = 0x600C,
        Cr3Target3 = 0x600E,
        // B.4.3 natural-width guest-state fields.
        GuestCr0 = 0x6800,
        GuestCr3 = 0x6802,
        GuestCr4 = 0x6804,
        GuestEsBase = 0x6806,
        GuestCsBase = 0x6808,
        GuestSsBase = 0x680A,
        GuestDsBase = 0x680C,
        GuestFsBase = 0x680E,
        GuestGsBase = 0x6810,
        GuestLdtrBase = 0x6812,
        GuestTrBase = 0x6814,
        GuestGdtrBase = 0x6816,
        GuestIdtrBase = 0x6818,
        GuestDr7 = 0x681A,
        GuestRsp = 0x681C,
        GuestRip = 0x681E,
        GuestRflags = 0x6820,
        GuestPendingDebugExceptions = 0x6822,
        GuestSysenterEsp = 0x6824,
        GuestSysenterEip = 0x6826,
        // B.4.4 natural-width host-state fields.
        HostCr0 = 0x6C00,
        HostCr3 = 0x6C02,
        HostCr4 = 0x6C04,
        HostFsBase = 0x6C06,
        HostGsBase = 0x6C08,
        HostTrBase = 0x6C0A,
        HostGdtrBase = 0x6C0C,
        HostIdtrBase = 0x6C0E,
        HostSysenterEsp = 0x6C10,
        HostSysenterEip = 0x6C12,
        HostRsp = 0x6C14,
        HostRip = 0x6C16,
    }
}

vmcs_fields! {
    /// Read-only 32-bit data fields (SDM Vol. 3D Appendix B.3.2); their meaning is SDM
    /// Vol. 3C "Basic VM-Exit Information" and "Information for VM Exits Due to Vectored
    /// Events".
    pub enum ReadOnly32: width Bits32, read_only true {
        /// VM-instruction error; see [`super::exit::vm_instruction_error_str`].
        VmInstructionError = 0x4400,
        /// See [`super::exit::RawExitReason`].
        ExitReason = 0x4402,
        /// See [`super::exit::InterruptionInfo`].
        ExitInterruptionInfo = 0x4404,
        ExitInterruptionErrorCode = 0x4406,
        /// Same format as [`Self::ExitInterruptionInfo`] (bit 12 undefined).
        IdtVectoringInfo = 0x4408,
        IdtVectoringErrorCode = 0x440A,
        ExitInstructionLength = 0x440C,
        ExitInstructionInfo = 0x440E,
    }
}

vmcs_fields! {
    /// Read-only 64-bit data fields (SDM Vol. 3D Appendix B.2.2).
    pub enum ReadOnly64: width Bits64, read_only true {
        /// Guest-physical address of an EPT violation or misconfiguration.
        GuestPhysicalAddress = 0x2400,
    }
}

vmcs_fields! {
    /// Read-only natural-width data fields (SDM Vol. 3D Appendix B.4.2).
    pub enum ReadOnlyNatural: width Natural, read_only true {
        /// See the decoders in [`super::exit`].
        ExitQualification = 0x6400,
        IoRcx = 0x6402,
        IoRsi = 0x6404,
        IoRdi = 0x6406,
        IoRip = 0x6408,
        GuestLinearAddress = 0x640A,
    }
}

/// A segment register, naming its guest-state fields (SDM Vol. 3C "Guest Register
/// State": selector, base address, segment limit, access rights) and its host-state
/// fields (SDM Vol. 3C "Host-State Area").
///
/// The order is the SDM's (ES, CS, SS, DS, FS, GS, LDTR, TR), which is also the order of
/// the encodings: field *n* of each kind is the kind's first encoding + 2n.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Segment {
    Es,
    Cs,
    Ss,
    Ds,
    Fs,
    Gs,
    Ldtr,
    Tr,
}

impl Segment {
    /// All eight, in SDM order.
    pub const ALL: [Segment; 8] =
        [Segment::Es, Segment::Cs, Segment::Ss, Segment::Ds, Segment::Fs, Segment::Gs, Segment::Ldtr, Segment::Tr];

    /// Guest selector (16-bit).
    pub const fn selector(self) -> Field16 {
        match self {
            Segment::Es => Field16::GuestEsSelector,
            Segment::Cs => Field16::GuestCsSelector,
            Segment::Ss => Field16::GuestSsSelector,
            Segment::Ds => Field16::GuestDsSelector,
            Segment::Fs => Field16::GuestFsSelector,
            Segment::Gs => Field16::GuestGsSelector,
            Segment::Ldtr => Field16::GuestLdtrSelector,
            Segment::Tr => Field16::GuestTrSelector,
        }
    }

    /// Guest base address (natural width).
    pub const fn base(self) -> FieldNatural {
        match self {
            Segment::Es => FieldNatural::GuestEsBase,
            Segment::Cs => FieldNatural::GuestCsBase,
            Segment::Ss => FieldNatural::GuestSsBase,
            Segment::Ds => FieldNatural::GuestDsBase,
            Segment::Fs => FieldNatural::GuestFsBase,
            Segment::Gs => FieldNatural::GuestGsBase,
            Segment::Ldtr => FieldNatural::GuestLdtrBase,
            Segment::Tr => FieldNatural::GuestTrBase,
        }
    }

    /// Guest segment limit (32-bit, in bytes).
    pub const fn limit(self) -> Field32 {
        match self {
            Segment::Es => Field32::GuestEsLimit,
            Segment::Cs => Field32::GuestCsLimit,
            Segment::Ss => Field32::GuestSsLimit,
            Segment::Ds => Field32::GuestDsLimit,
            Segment::Fs => Field32::GuestFsLimit,
            Segment::Gs => Field32::GuestGsLimit,
            Segment::Ldtr => Field32::GuestLdtrLimit,
            Segment::Tr => Field32::GuestTrLimit,
        }
    }

    /// Guest access rights (32-bit; bit 16 = unusable).
    pub const fn access_rights(self) -> Field32 {
        match self {
            Segment::Es => Field32::GuestEsAccessRights,
            Segment::Cs => Field32::GuestCsAccessRights,
            Segment::Ss => Field32::GuestSsAccessRights,
            Segment::Ds => Field32::GuestDsAccessRights,
            Segment::Fs => Field32::GuestFsAccessRights,
            Segment::Gs => Field32::GuestGsAccessRights,
            Segment::Ldtr => Field32::GuestLdtrAccessRights,
            Segment::Tr => Field32::GuestTrAccessRights,
        }
    }

    /// Host selector; the host state has none for LDTR.
    pub const fn host_selector(self) -> Option<Field16> {
        match self {
            Segment::Es => Some(Field16::HostEsSelector),
            Segment::Cs => Some(Field16::HostCsSelector),
            Segment::Ss => Some(Field16::HostSsSelector),
            Segment::Ds => Some(Field16::HostDsSelector),
            Segment::Fs => Some(Field16::HostFsSelector),
            Segment::Gs => Some(Field16::HostGsSelector),
            Segment::Tr => Some(Field16::HostTrSelector),
            Segment::Ldtr => None,
        }
    }

    /// Host base address; the host state has one only for FS, GS and TR.
    pub const fn host_base(self) -> Option<FieldNatural> {
        match self {
            Segment::Fs => Some(FieldNatural::HostFsBase),
            Segment::Gs => Some(FieldNatural::HostGsBase),
            Segment::Tr => Some(FieldNatural::HostTrBase),
            Segment::Es | Segment::Cs | Segment::Ss | Segment::Ds | Segment::Ldtr => None,
        }
    }
}

/// GDTR or IDTR, naming their guest-state fields (base and limit) and host base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DescriptorTable {
    Gdtr,
    Idtr,
}

impl DescriptorTable {
    pub const ALL: [DescriptorTable; 2] = [DescriptorTable::Gdtr, DescriptorTable::Idtr];

    /// Guest base address (natural width).
    pub const fn base(self) -> FieldNatural {
        match self {
            DescriptorTable::Gdtr => FieldNatural::GuestGdtrBase,
            DescriptorTable::Idtr => FieldNatural::GuestIdtrBase,
        }
    }

    /// Guest limit (32-bit field; only bits 15:0 may be set).
    pub const fn limit(self) -> Field32 {
        match self {
            DescriptorTable::Gdtr => Field32::GuestGdtrLimit,
            DescriptorTable::Idtr => Field32::GuestIdtrLimit,
        }
    }

    /// Host base address (the host state has no limits: VM exit sets both to 0xFFFF).
    pub const fn host_base(self) -> FieldNatural {
        match self {
            DescriptorTable::Gdtr => FieldNatural::HostGdtrBase,
            DescriptorTable::Idtr => FieldNatural::HostIdtrBase,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;
    use alloc::vec::Vec;

    /// Every encoding of every enum, with its enum's width and read-only flag.
    fn every_encoding() -> Vec<(u32, Width, bool)> {
        let mut all = Vec::new();
        all.extend(Field16::ALL.iter().map(|f| (f.encoding(), Field16::WIDTH, Field16::READ_ONLY)));
        all.extend(Field32::ALL.iter().map(|f| (f.encoding(), Field32::WIDTH, Field32::READ_ONLY)));
        all.extend(Field64::ALL.iter().map(|f| (f.encoding(), Field64::WIDTH, Field64::READ_ONLY)));
        all.extend(FieldNatural::ALL.iter().map(|f| (f.encoding(), FieldNatural::WIDTH, FieldNatural::READ_ONLY)));
        all.extend(ReadOnly32::ALL.iter().map(|f| (f.encoding(), ReadOnly32::WIDTH, ReadOnly32::READ_ONLY)));
        all.extend(ReadOnly64::ALL.iter().map(|f| (f.encoding(), ReadOnly64::WIDTH, ReadOnly64::READ_ONLY)));
        all.extend(
            ReadOnlyNatural::ALL.iter().map(|f| (f.encoding(), ReadOnlyNatural::WIDTH, ReadOnlyNatural::READ_ONLY)),
        );
        all
    }

    #[test]
    fn well_known_encodings_match_the_sdm() {
        assert_eq!(Field16::VirtualProcessorId.encoding(), 0x0000);
        assert_eq!(Field16::GuestEsSelector.encoding(), 0x0800);
        assert_eq!(Field16::HostTrSelector.encoding(), 0x0C0C);
        assert_eq!(Field64::IoBitmapA.encoding(), 0x2000);
        assert_eq!(Field64::MsrBitmaps.encoding(), 0x2004);
        assert_eq!(Field64::EptPointer.encoding(), 0x201A);
        assert_eq!(Field64::VmcsLinkPointer.encoding(), 0x2800);
        assert_eq!(Field64::GuestIa32Efer.encoding(), 0x2806);
        assert_eq!(Field64::HostIa32Efer.encoding(), 0x2C02);
        assert_eq!(ReadOnly64::GuestPhysicalAddress.encoding(), 0x2400);
        assert_eq!(Field32::PinBasedControls.encoding(), 0x4000);
        assert_eq!(Field32::PrimaryProcBasedControls.encoding(), 0x4002);
        assert_eq!(Field32::ExitControls.encoding(), 0x400C);
        assert_eq!(Field32::EntryControls.encoding(), 0x4012);
        assert_eq!(Field32::EntryInterruptionInfo.encoding(), 0x4016);
        assert_eq!(Field32::SecondaryProcBasedControls.encoding(), 0x401E);
        assert_eq!(Field32::GuestInterruptibilityState.encoding(), 0x4824);
        assert_eq!(Field32::PreemptionTimerValue.encoding(), 0x482E);
        assert_eq!(Field32::HostSysenterCs.encoding(), 0x4C00);
        assert_eq!(ReadOnly32::VmInstructionError.encoding(), 0x4400);
        assert_eq!(ReadOnly32::ExitReason.encoding(), 0x4402);
        assert_eq!(ReadOnly32::ExitInstructionLength.encoding(), 0x440C);
        assert_eq!(FieldNatural::Cr0GuestHostMask.encoding(), 0x6000);
        assert_eq!(FieldNatural::GuestCr3.encoding(), 0x6802);
        assert_eq!(FieldNatural::GuestRip.encoding(), 0x681E);
        assert_eq!(FieldNatural::GuestRflags.encoding(), 0x6820);
        assert_eq!(FieldNatural::HostRsp.encoding(), 0x6C14);
        assert_eq!(FieldNatural::HostRip.encoding(), 0x6C16);
        assert_eq!(ReadOnlyNatural::ExitQualification.encoding(), 0x6400);
        assert_eq!(ReadOnlyNatural::GuestLinearAddress.encoding(), 0x640A);
    }

    #[test]
    fn every_encoding_has_its_enums_width_and_an_allowed_type() {
        for (e, width, read_only) in every_encoding() {
            assert_eq!(Width::of(e), width, "{e:#06x}");
            assert_eq!(FieldType::of(e) == FieldType::ReadOnlyData, read_only, "{e:#06x}");
            assert_eq!(e & 1, 0, "{e:#06x} is not a full-access encoding");
            assert_eq!(e & !0x6FFE, 0, "{e:#06x} sets a reserved bit");
        }
    }

    #[test]
    fn the_consistency_check_rejects_misfiled_encodings() {
        // The check run at compile time, fed deliberately wrong tables.
        assert!(encodings_are_consistent(&[0x681E, 0x6C16], Width::Natural, false));
        assert!(!encodings_are_consistent(&[0x681E], Width::Bits64, false), "natural field in a 64-bit enum");
        assert!(!encodings_are_consistent(&[0x4402], Width::Bits32, false), "read-only field in a writable enum");
        assert!(!encodings_are_consistent(&[0x4002], Width::Bits32, true), "control field in a read-only enum");
        assert!(!encodings_are_consistent(&[0x2001], Width::Bits64, false), "high access type");
        assert!(!encodings_are_consistent(&[0x1_0000], Width::Bits16, false), "reserved bit 16");
    }

    #[test]
    fn field_types_decode_from_the_encoding() {
        assert_eq!(Field32::ExitControls.field_type(), FieldType::Control);
        assert_eq!(ReadOnly32::ExitReason.field_type(), FieldType::ReadOnlyData);
        assert_eq!(FieldNatural::GuestRip.field_type(), FieldType::GuestState);
        assert_eq!(Field16::HostCsSelector.field_type(), FieldType::HostState);
        assert_eq!(Width::of(0x2400), Width::Bits64);
        assert_eq!(Width::of(0x0C00), Width::Bits16);
    }

    #[test]
    fn no_two_fields_share_an_encoding() {
        let all = every_encoding();
        let unique: BTreeSet<u32> = all.iter().map(|&(e, _, _)| e).collect();
        assert_eq!(unique.len(), all.len());
    }

    #[test]
    fn all_lists_every_variant_in_encoding_order() {
        assert_eq!(Field16::ALL.len(), 20);
        assert_eq!(Field64::ALL.len(), 37);
        assert_eq!(Field32::ALL.len(), 42);
        assert_eq!(FieldNatural::ALL.len(), 40);
        assert_eq!(ReadOnly32::ALL.len(), 8);
        assert_eq!(ReadOnly64::ALL.len(), 1);
        assert_eq!(ReadOnlyNatural::ALL.len(), 6);
        let sorted = |v: Vec<u32>| v.windows(2).all(|w| w[0] < w[1]);
        assert!(sorted(FieldNatural::ALL.iter().map(|f| f.encoding()).collect()));
        assert!(sorted(Field32::ALL.iter().map(|f| f.encoding()).collect()));
    }

    #[test]
    fn names_are_the_variant_names() {
        assert_eq!(FieldNatural::GuestRip.name(), "GuestRip");
        assert_eq!(ReadOnly32::ExitReason.name(), "ExitReason");
        assert_eq!(Field64::EptPointer.name(), "EptPointer");
    }

    #[test]
    fn segment_fields_follow_the_sdm_layout() {
        for (n, seg) in Segment::ALL.into_iter().enumerate() {
            let n = n as u32;
            assert_eq!(seg.selector().encoding(), 0x0800 + 2 * n, "{seg:?}");
            assert_eq!(seg.limit().encoding(), 0x4800 + 2 * n, "{seg:?}");
            assert_eq!(seg.access_rights().encoding(), 0x4814 + 2 * n, "{seg:?}");
            assert_eq!(seg.base().encoding(), 0x6806 + 2 * n, "{seg:?}");
        }
        assert_eq!(Segment::Cs.selector(), Field16::GuestCsSelector);
        assert_eq!(Segment::Tr.access_rights(), Field32::GuestTrAccessRights);
        assert_eq!(Segment::Ldtr.base(), FieldNatural::GuestLdtrBase);
    }

    #[test]
    fn host_segment_fields_exist_only_where_the_sdm_defines_them() {
        let selectors: Vec<u32> = Segment::ALL.iter().filter_map(|s| s.host_selector()).map(|f| f.encoding()).collect();
        assert_eq!(selectors, [0x0C00, 0x0C02, 0x0C04, 0x0C06, 0x0C08, 0x0C0A, 0x0C0C]);
        assert_eq!(Segment::Ldtr.host_selector(), None);
        let bases: Vec<FieldNatural> = Segment::ALL.iter().filter_map(|s| s.host_base()).collect();
        assert_eq!(bases, [FieldNatural::HostFsBase, FieldNatural::HostGsBase, FieldNatural::HostTrBase]);
    }

    #[test]
    fn descriptor_table_fields() {
        assert_eq!(DescriptorTable::Gdtr.base().encoding(), 0x6816);
        assert_eq!(DescriptorTable::Idtr.base().encoding(), 0x6818);
        assert_eq!(DescriptorTable::Gdtr.limit().encoding(), 0x4810);
        assert_eq!(DescriptorTable::Idtr.limit().encoding(), 0x4812);
        assert_eq!(DescriptorTable::Gdtr.host_base().encoding(), 0x6C0C);
        assert_eq!(DescriptorTable::Idtr.host_base().encoding(), 0x6C0E);
    }
}
