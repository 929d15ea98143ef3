//! Guest x87/SSE/AVX state across vCPU switches. The hypervisor never touches these
//! registers itself (soft-float), so a guest's state only needs saving when another
//! guest is about to run on the same CPU: XSAVE/XRSTOR where the CPU has them (with the
//! running guest's XCR0 selecting the components), FXSAVE/FXRSTOR otherwise.

use super::cpu::cpuid;
use alloc::alloc::{Layout, alloc_zeroed};
use core::arch::asm;
use spin::Once;

struct Support {
    xsave: bool,
    size: usize,
}

static SUPPORT: Once<Support> = Once::new();

fn support() -> &'static Support {
    SUPPORT.call_once(|| {
        let xsave = cpuid(1, 0).ecx & (1 << 26) != 0;
        // CPUID.(EAX=0DH,ECX=0):ECX is the size for every component the CPU supports.
        let size = if xsave { cpuid(0xD, 0).ecx as usize } else { 512 };
        Support { xsave, size: size.max(512 + 64) }
    })
}

/// One vCPU's saved state, 64-byte aligned as XSAVE requires.
pub struct FpuState {
    area: *mut u8,
}

// SAFETY: the area is owned by exactly one vCPU, which is behind a lock.
unsafe impl Send for FpuState {}

impl FpuState {
    /// The architectural initial state: an XSAVE header with XSTATE_BV = 0 (XRSTOR then
    /// loads the init values), or an FXSAVE image with the reset FCW and MXCSR.
    pub fn new() -> Option<Self> {
        let layout = Layout::from_size_align(support().size, 64).ok()?;
        // SAFETY: non-zero size, valid alignment.
        let area = unsafe { alloc_zeroed(layout) };
        if area.is_null() {
            return None;
        }
        // SAFETY: the area is at least 512 bytes; FCW at 0, MXCSR at 24 (SDM Vol. 1
        // "FXSAVE Area"), also valid as the legacy region of an XSAVE area.
        unsafe {
            (area as *mut u16).write(0x037F);
            (area.add(24) as *mut u32).write(0x1F80);
        }
        Some(Self { area })
    }

    /// Saves the CPU's current guest state here.
    pub fn save(&mut self) {
        // SAFETY: the area is large enough and aligned for the instruction used; the
        // registers saved belong to the guest that just ran on this CPU.
        unsafe {
            if support().xsave {
                asm!("xsave64 [{}]", in(reg) self.area, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack));
            } else {
                asm!("fxsave64 [{}]", in(reg) self.area, options(nostack));
            }
        }
    }

    /// Loads the state saved here (the guest's XCR0 must already be loaded).
    pub fn restore(&self) {
        // SAFETY: as in `save`; the area holds a valid image (initial or saved).
        unsafe {
            if support().xsave {
                asm!("xrstor64 [{}]", in(reg) self.area, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack));
            } else {
                asm!("fxrstor64 [{}]", in(reg) self.area, options(nostack));
            }
        }
    }
}

impl Drop for FpuState {
    fn drop(&mut self) {
        if let Ok(layout) = Layout::from_size_align(support().size, 64) {
            // SAFETY: allocated in `new` with this layout.
            unsafe { alloc::alloc::dealloc(self.area, layout) };
        }
    }
}
