//! Address newtypes. Guest-physical and host-physical addresses are different spaces;
//! mixing them up is the classic hypervisor bug, so they are different types.

use core::fmt;

/// A guest-physical address: what a guest puts on its (virtual) address bus, translated
/// by its domain's EPT.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GuestPhysAddr(pub u64);

/// A host-physical address: a real RAM or MMIO location.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HostPhysAddr(pub u64);

impl GuestPhysAddr {
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl HostPhysAddr {
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for GuestPhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gpa:{:#x}", self.0)
    }
}

impl fmt::Display for GuestPhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::Debug for HostPhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hpa:{:#x}", self.0)
    }
}

impl fmt::Display for HostPhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}
