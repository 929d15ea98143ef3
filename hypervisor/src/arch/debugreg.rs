//! The CPU's debug registers DR0-3 and DR6 (the hypervisor sets no breakpoints of its
//! own: they hold a guest's values during its slices, see `vmexit::debug`).

use core::arch::asm;

/// DR6 after reset (SDM Vol. 3B "Debug Status Register"): reserved bits set.
pub const DR6_INIT: u64 = 0xFFFF_0FF0;

/// One vCPU's DR0-3 and DR6.
#[derive(Debug, Clone, Copy)]
pub struct DebugRegs {
    pub dr: [u64; 4],
    pub dr6: u64,
    /// The vCPU has accessed its debug registers: they are switched with it.
    pub used: bool,
}

impl Default for DebugRegs {
    fn default() -> Self {
        Self { dr: [0; 4], dr6: DR6_INIT, used: false }
    }
}

/// The CPU's DR0-3 and DR6.
pub fn read_hw() -> ([u64; 4], u64) {
    let (d0, d1, d2, d3, d6): (u64, u64, u64, u64, u64);
    // SAFETY: reading debug registers at CPL 0 has no side effects.
    unsafe {
        asm!("mov {}, dr0", out(reg) d0, options(nomem, nostack));
        asm!("mov {}, dr1", out(reg) d1, options(nomem, nostack));
        asm!("mov {}, dr2", out(reg) d2, options(nomem, nostack));
        asm!("mov {}, dr3", out(reg) d3, options(nomem, nostack));
        asm!("mov {}, dr6", out(reg) d6, options(nomem, nostack));
    }
    ([d0, d1, d2, d3], d6)
}

/// Loads DR0-3 and DR6.
pub fn write_hw(dr: &[u64; 4], dr6: u64) {
    // SAFETY: the host runs with DR7 = 0x400 (VM exit loads it), so no address here
    // can trigger a breakpoint in the hypervisor; DR6's upper half must be zero, which
    // holds for values the CPU produced and for DR6_INIT.
    unsafe {
        asm!("mov dr0, {}", in(reg) dr[0], options(nomem, nostack));
        asm!("mov dr1, {}", in(reg) dr[1], options(nomem, nostack));
        asm!("mov dr2, {}", in(reg) dr[2], options(nomem, nostack));
        asm!("mov dr3, {}", in(reg) dr[3], options(nomem, nostack));
        asm!("mov dr6, {}", in(reg) dr6 & 0xFFFF_FFFF, options(nomem, nostack));
    }
}

/// The CPU's DR6.
pub fn read_dr6() -> u64 {
    let d6: u64;
    // SAFETY: reading DR6 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, dr6", out(reg) d6, options(nomem, nostack)) };
    d6
}

/// Loads DR6 (its upper half must be zero: the low 32 bits are taken).
pub fn write_dr6(dr6: u64) {
    // SAFETY: DR6 only reports; writing it arms nothing.
    unsafe { asm!("mov dr6, {}", in(reg) dr6 & 0xFFFF_FFFF, options(nomem, nostack)) };
}

/// Clears DR0-3 and DR6 on this CPU (bring-up): no guest's values are left in the CPU
/// outside its slices (`vmexit::debug`).
pub fn init_this_cpu() {
    write_hw(&[0; 4], DR6_INIT);
}
