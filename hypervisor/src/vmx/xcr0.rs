//! The guest's XCR0. The hypervisor itself uses no XSAVE state (it is soft-float), so
//! the host value does not matter: the CPU simply carries the running guest's XCR0,
//! written with XSETBV when the next guest's value differs.

use core::arch::asm;

fn osxsave() -> bool {
    let cr4: u64;
    // SAFETY: reading CR4 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack)) };
    cr4 & (1 << 18) != 0
}

fn current() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: XGETBV with ECX=0 is valid whenever CR4.OSXSAVE is set (checked by callers).
    unsafe { asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Whether `xcr0` differs from what the CPU holds.
pub fn differs(xcr0: u64) -> bool {
    osxsave() && current() != xcr0
}

/// Makes `xcr0` the CPU's XCR0 (validated by the XSETBV exit handler).
pub fn load(xcr0: u64) {
    if differs(xcr0) {
        // SAFETY: CR4.OSXSAVE is set and the value was validated against CPUID.0xD when
        // the guest set it (or is the reset value 1).
        unsafe {
            asm!("xsetbv", in("ecx") 0, in("eax") xcr0 as u32, in("edx") (xcr0 >> 32) as u32, options(nomem, nostack))
        };
    }
}
