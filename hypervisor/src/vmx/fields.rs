//! Typed VMCS field encodings (SDM Vol. 3D Appendix B "Field Encoding in VMCS").
//!
//! One enum per width, so a value of the wrong width cannot be written; the read-only
//! data fields (Appendix B type "VM-exit information") live in enums of their own that
//! the write functions do not accept. Encoding bits: 14:13 width (0 = 16-bit, 1 =
//! 64-bit, 2 = 32-bit, 3 = natural), 11:10 type (0 control, 1 read-only data, 2 guest
//! state, 3 host state), 0 access type (0 = full).

/// 16-bit fields (Appendix B.1).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field16 {
    VirtualProcessorId = 0x0000,
    GuestEsSelector = 0x0800,
    GuestCsSelector = 0x0802,
    GuestSsSelector = 0x0804,
    GuestDsSelector = 0x0806,
    GuestFsSelector = 0x0808,
    GuestGsSelector = 0x080A,
    GuestLdtrSelector = 0x080C,
    GuestTrSelector = 0x080E,
    HostEsSelector = 0x0C00,
    HostCsSelector = 0x0C02,
    HostSsSelector = 0x0C04,
    HostDsSelector = 0x0C06,
    HostFsSelector = 0x0C08,
    HostGsSelector = 0x0C0A,
    HostTrSelector = 0x0C0C,
}

/// 64-bit fields, full access (Appendix B.2).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field64 {
    IoBitmapA = 0x2000,
    IoBitmapB = 0x2002,
    MsrBitmaps = 0x2004,
    ExitMsrStoreAddress = 0x2006,
    ExitMsrLoadAddress = 0x2008,
    EntryMsrLoadAddress = 0x200A,
    TscOffset = 0x2010,
    VirtualApicAddress = 0x2012,
    ApicAccessAddress = 0x2014,
    EptPointer = 0x201A,
    VmcsLinkPointer = 0x2800,
    GuestIa32Debugctl = 0x2802,
    GuestIa32Pat = 0x2804,
    GuestIa32Efer = 0x2806,
    GuestPdpte0 = 0x280A,
    GuestPdpte1 = 0x280C,
    GuestPdpte2 = 0x280E,
    GuestPdpte3 = 0x2810,
    HostIa32Pat = 0x2C00,
    HostIa32Efer = 0x2C02,
}

/// 32-bit fields (Appendix B.3).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field32 {
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
    EntryInterruptionInfo = 0x4016,
    EntryExceptionErrorCode = 0x4018,
    EntryInstructionLength = 0x401A,
    TprThreshold = 0x401C,
    SecondaryProcBasedControls = 0x401E,
    PleGap = 0x4020,
    PleWindow = 0x4022,
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
    GuestInterruptibilityState = 0x4824,
    GuestActivityState = 0x4826,
    GuestSmbase = 0x4828,
    GuestSysenterCs = 0x482A,
    PreemptionTimerValue = 0x482E,
    HostSysenterCs = 0x4C00,
}

/// Natural-width fields (Appendix B.4).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldNatural {
    Cr0GuestHostMask = 0x6000,
    Cr4GuestHostMask = 0x6002,
    Cr0ReadShadow = 0x6004,
    Cr4ReadShadow = 0x6006,
    Cr3Target0 = 0x6008,
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

/// Read-only 32-bit data fields (Appendix B.3.2).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOnly32 {
    VmInstructionError = 0x4400,
    ExitReason = 0x4402,
    ExitInterruptionInfo = 0x4404,
    ExitInterruptionErrorCode = 0x4406,
    IdtVectoringInfo = 0x4408,
    IdtVectoringErrorCode = 0x440A,
    ExitInstructionLength = 0x440C,
    ExitInstructionInfo = 0x440E,
}

/// Read-only 64-bit data fields (Appendix B.2.2).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOnly64 {
    GuestPhysicalAddress = 0x2400,
}

/// Read-only natural-width data fields (Appendix B.4.2).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOnlyNatural {
    ExitQualification = 0x6400,
    IoRcx = 0x6402,
    IoRsi = 0x6404,
    IoRdi = 0x6406,
    IoRip = 0x6408,
    GuestLinearAddress = 0x640A,
}

macro_rules! encoding {
    ($($t:ty),*) => {$(
        impl $t {
            /// The VMREAD/VMWRITE encoding.
            pub const fn encoding(self) -> u32 {
                self as u32
            }
        }
    )*};
}
encoding!(Field16, Field32, Field64, FieldNatural, ReadOnly32, ReadOnly64, ReadOnlyNatural);

#[cfg(test)]
mod tests {
    use super::*;

    fn width(e: u32) -> u32 {
        (e >> 13) & 3
    }

    fn kind(e: u32) -> u32 {
        (e >> 10) & 3
    }

    #[test]
    fn well_known_encodings_match_the_sdm() {
        assert_eq!(FieldNatural::GuestRip.encoding(), 0x681E);
        assert_eq!(FieldNatural::HostRsp.encoding(), 0x6C14);
        assert_eq!(ReadOnly32::ExitReason.encoding(), 0x4402);
        assert_eq!(ReadOnly32::VmInstructionError.encoding(), 0x4400);
        assert_eq!(Field64::EptPointer.encoding(), 0x201A);
        assert_eq!(Field64::VmcsLinkPointer.encoding(), 0x2800);
        assert_eq!(ReadOnly64::GuestPhysicalAddress.encoding(), 0x2400);
        assert_eq!(ReadOnlyNatural::ExitQualification.encoding(), 0x6400);
        assert_eq!(Field32::PreemptionTimerValue.encoding(), 0x482E);
        assert_eq!(Field16::VirtualProcessorId.encoding(), 0x0000);
    }

    #[test]
    fn every_field_sits_in_the_enum_of_its_width_and_access() {
        use Field16 as F16;
        for f in [F16::GuestEsSelector, F16::GuestTrSelector, F16::HostCsSelector, F16::HostTrSelector] {
            assert_eq!(width(f.encoding()), 0);
        }
        for f in [Field64::IoBitmapA, Field64::EptPointer, Field64::GuestIa32Efer, Field64::HostIa32Efer] {
            assert_eq!(width(f.encoding()), 1);
            assert_ne!(kind(f.encoding()), 1, "{f:?} is writable");
        }
        for f in [Field32::PinBasedControls, Field32::GuestTrAccessRights, Field32::HostSysenterCs] {
            assert_eq!(width(f.encoding()), 2);
            assert_ne!(kind(f.encoding()), 1, "{f:?} is writable");
        }
        for f in [FieldNatural::Cr0GuestHostMask, FieldNatural::GuestRip, FieldNatural::HostRip] {
            assert_eq!(width(f.encoding()), 3);
            assert_ne!(kind(f.encoding()), 1, "{f:?} is writable");
        }
        for e in [
            ReadOnly32::ExitReason.encoding(),
            ReadOnly64::GuestPhysicalAddress.encoding(),
            ReadOnlyNatural::ExitQualification.encoding(),
        ] {
            assert_eq!(kind(e), 1, "{e:#x} is read-only data");
        }
    }
}
