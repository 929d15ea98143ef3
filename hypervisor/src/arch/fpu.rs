//! Guest x87/SSE/AVX state across vCPU switches, and the CPU's XCR0.
//!
//! The hypervisor never touches vector registers itself (it is soft-float), so during a
//! slice the CPU simply holds the running guest's registers and its XCR0. Between
//! slices the state moves with XSAVE/XRSTOR (FXSAVE/FXRSTOR on CPUs without XSAVE) under
//! the *host's* XCR0, which enables every user component the CPU has (KVM and Xen do
//! the same): a guest whose own XCR0 is 1 still has its XMM registers saved, restored
//! and never shown to another guest, and an image saved while a guest had AVX on is
//! restored whatever that guest's XCR0 is by then. The guest's XCR0 is loaded last,
//! just before its first entry ([`FpuState::switch_in`]).
//!
//! Images are written only by XSAVE under that same mask (or are the initial image),
//! so XRSTOR cannot refuse them; should it fault anyway, a fixup turns the #GP into a
//! failed switch (its domain is crashed), never a fault of the hypervisor.

use super::cpu::cpuid;
use crate::xstate;
use alloc::alloc::{Layout, alloc_zeroed};
use core::arch::{asm, global_asm};
use spin::Once;

struct Support {
    xsave: bool,
    /// The XCR0 the host saves and restores with ([`xstate::host_mask`]).
    host_xcr0: u64,
    size: usize,
}

static SUPPORT: Once<Support> = Once::new();

fn support() -> &'static Support {
    SUPPORT.call_once(|| {
        let xsave = cpuid(1, 0).ecx & (1 << 26) != 0;
        let leaf = cpuid(0xD, 0);
        let host_xcr0 = if xsave { xstate::host_mask(u64::from(leaf.edx) << 32 | u64::from(leaf.eax)) } else { 0 };
        // CPUID.(EAX=0DH,ECX=0):ECX is the size for every component the CPU supports.
        let size = if xsave { leaf.ecx as usize } else { 512 };
        Support { xsave, host_xcr0, size: size.max(512 + 64) }
    })
}

fn osxsave() -> bool {
    let cr4: u64;
    // SAFETY: reading CR4 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack)) };
    cr4 & (1 << 18) != 0
}

fn current_xcr0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: XGETBV with ECX=0 is valid whenever CR4.OSXSAVE is set (checked by callers).
    unsafe { asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// XSETBV of XCR0.
///
/// # Safety
/// CR4.OSXSAVE must be set and `xcr0` valid for this CPU.
unsafe fn xsetbv(xcr0: u64) {
    // SAFETY: forwarded to the caller.
    unsafe {
        asm!("xsetbv", in("ecx") 0, in("eax") xcr0 as u32, in("edx") (xcr0 >> 32) as u32, options(nomem, nostack))
    };
}

/// Makes `xcr0` the CPU's XCR0 when it differs. Callers pass the host mask or a guest
/// value that passed [`xstate::check_xsetbv`] against a subset of it, so XSETBV cannot
/// fault.
pub fn load_xcr0(xcr0: u64) {
    if osxsave() && current_xcr0() != xcr0 {
        // SAFETY: CR4.OSXSAVE is set and the value is valid for this CPU (see above).
        unsafe { xsetbv(xcr0) };
    }
}

/// The host's XCR0 (0 without XSAVE): what the CPU holds outside guest slices.
pub fn host_xcr0() -> u64 {
    support().host_xcr0
}

/// Loads the host's XCR0 on this CPU (bring-up, once CR4.OSXSAVE is on).
pub fn init_this_cpu() {
    if support().xsave {
        load_xcr0(support().host_xcr0);
    }
}

// XRSTOR/FXRSTOR with a fault fixup: on #GP the handler ([`fixup`]) resumes at
// `fpu_restore_fault`, which returns 1 instead of 0. SysV: rdi = area, esi:edx = mask.
global_asm!(
    ".global fpu_xrstor",
    "fpu_xrstor:",
    "mov eax, esi",
    ".global fpu_xrstor_insn",
    "fpu_xrstor_insn:",
    "xrstor64 [rdi]",
    "xor eax, eax",
    "ret",
    ".global fpu_fxrstor",
    "fpu_fxrstor:",
    ".global fpu_fxrstor_insn",
    "fpu_fxrstor_insn:",
    "fxrstor64 [rdi]",
    "xor eax, eax",
    "ret",
    ".global fpu_restore_fault",
    "fpu_restore_fault:",
    "mov eax, 1",
    "ret",
);

unsafe extern "C" {
    fn fpu_xrstor(area: *const u8, lo: u32, hi: u32) -> u32;
    fn fpu_fxrstor(area: *const u8) -> u32;
    fn fpu_xrstor_insn();
    fn fpu_fxrstor_insn();
    fn fpu_restore_fault();
}

/// Where a fault at `rip` continues, when `rip` is one of the restore instructions
/// (called by the #GP handler).
pub fn fixup(rip: u64) -> Option<u64> {
    let insns = [fpu_xrstor_insn as *const () as u64, fpu_fxrstor_insn as *const () as u64];
    insns.contains(&rip).then_some(fpu_restore_fault as *const () as u64)
}

/// A vCPU's vector state could not be loaded: XRSTOR faulted (caught by the fixup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreFault;

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

    /// Ends the vCPU's slice (its XCR0 is `guest_xcr0`): the host's XCR0 back, then
    /// every component saved here.
    pub fn switch_out(&mut self, guest_xcr0: u64) {
        let s = support();
        // SAFETY: the area is large enough and aligned for the instruction used; the
        // registers saved belong to the guest that just ran on this CPU. With the host
        // XCR0 loaded, XSAVE's requested-feature bitmap covers every user component.
        unsafe {
            if s.xsave {
                if guest_xcr0 != s.host_xcr0 {
                    xsetbv(s.host_xcr0);
                }
                asm!("xsave64 [{}]", in(reg) self.area, in("eax") s.host_xcr0 as u32, in("edx") (s.host_xcr0 >> 32) as u32, options(nostack));
            } else {
                asm!("fxsave64 [{}]", in(reg) self.area, options(nostack));
            }
        }
    }

    /// Starts the vCPU's slice: every component loaded from here under the host's
    /// XCR0, then the guest's own `guest_xcr0` (valid for this CPU: it passed
    /// [`xstate::check_xsetbv`], or is the reset value 1).
    pub fn switch_in(&self, guest_xcr0: u64) -> Result<(), RestoreFault> {
        let s = support();
        let mask = s.host_xcr0;
        // SAFETY: the area is valid and aligned; a fault is caught by the fixup. Between
        // slices the CPU holds the host's XCR0 (`switch_out`, `init_this_cpu`).
        let faulted = unsafe {
            if s.xsave { fpu_xrstor(self.area, mask as u32, (mask >> 32) as u32) } else { fpu_fxrstor(self.area) }
        };
        if faulted != 0 {
            return Err(RestoreFault);
        }
        if s.xsave && guest_xcr0 != s.host_xcr0 {
            // SAFETY: a valid XCR0 for this CPU (see the doc comment).
            unsafe { xsetbv(guest_xcr0) };
        }
        Ok(())
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
