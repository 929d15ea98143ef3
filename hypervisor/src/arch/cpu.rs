//! Small doors to privileged instructions. Each `unsafe` block is one instruction whose
//! soundness argument is local; the rest of the kernel calls these safe wrappers only
//! where the argument holds (ring 0, indices that exist on this CPU).

use core::arch::asm;

/// The result of one CPUID leaf.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuidResult {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Executes CPUID. Unprivileged and side-effect free, so it is safe.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    CpuidResult { eax: r.eax, ebx: r.ebx, ecx: r.ecx, edx: r.edx }
}

/// Reads a model-specific register.
///
/// # Safety
/// `index` must name an MSR that exists on this CPU (otherwise #GP).
pub unsafe fn rdmsr(index: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists; we run in ring 0.
    unsafe { asm!("rdmsr", in("ecx") index, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes a model-specific register.
///
/// # Safety
/// `index` must name a writable MSR and `value` must be valid for it; the caller owns
/// the consequences of the write (e.g. changing GS base or EFER).
pub unsafe fn wrmsr(index: u32, value: u64) {
    // SAFETY: forwarded to the caller.
    unsafe {
        asm!("wrmsr", in("ecx") index, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags))
    };
}

/// Reads the time-stamp counter. Inside Bochs it counts emulated instructions.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC is allowed at CPL0 (and CR4.TSD only restricts CPL>0).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Port output. Ports are a machine-global resource; callers must own the device.
///
/// # Safety
/// Writing a port can have any effect the device behind it implements.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: forwarded to the caller.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) };
}

/// # Safety
/// As [`outb`].
pub unsafe fn outw(port: u16, value: u16) {
    // SAFETY: forwarded to the caller.
    unsafe { asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags)) };
}

/// # Safety
/// Reading a port can have side effects (e.g. acknowledging a device).
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: forwarded to the caller.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags)) };
    value
}

/// # Safety
/// As [`inb`].
pub unsafe fn inw(port: u16) -> u16 {
    let value: u16;
    // SAFETY: forwarded to the caller.
    unsafe { asm!("in ax, dx", in("dx") port, out("ax") value, options(nomem, nostack, preserves_flags)) };
    value
}

/// # Safety
/// As [`outb`].
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: forwarded to the caller.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags)) };
}

/// # Safety
/// As [`outb`].
pub unsafe fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: forwarded to the caller.
    unsafe { asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads CR2 (the faulting linear address of the last page fault).
pub fn cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects at CPL0.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Stops this CPU for good: interrupts off, then HLT forever (an NMI only re-enters HLT).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: disabling interrupts and halting cannot violate memory safety.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Well-known MSR indices used outside the VMX code.
pub mod msr {
    pub const IA32_APIC_BASE: u32 = 0x1B;
    pub const IA32_EFER: u32 = 0xC000_0080;
    pub const IA32_GS_BASE: u32 = 0xC000_0101;
}
