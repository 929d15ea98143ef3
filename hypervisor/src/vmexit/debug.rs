//! The debug registers DR0-3 and DR6, which the VMCS does not hold (DR7 and
//! IA32_DEBUGCTL it does): switched lazily, as KVM does.
//!
//! Invariant: outside the slice of a vCPU that has used them, the CPU's DR0-3 are 0
//! and DR6 has its initial value (a vCPU whose own #DBs changed DR6 counts as using
//! them, see `slice_end`). So a vCPU that never touched its debug registers
//! needs nothing at a switch, and its first MOV DR (which exits: "MOV-DR exiting" is
//! on in every new VMCS) finds its own state in the CPU: the initial values plus
//! whatever its own #DB exceptions set in DR6. That first exit adopts what the CPU
//! holds, turns MOV-DR exiting off in the vCPU's VMCS and re-executes the instruction
//! natively. From then on its registers are loaded at every slice start and saved (and
//! the CPU's cleared again) at every slice end, so no breakpoint address or DR6 bit of
//! one vCPU is ever seen by another.

use super::Next;
use crate::arch::debugreg::{DR6_INIT, DebugRegs, read_dr6, read_hw, write_dr6, write_hw};
use crate::domain::vcpu::Vcpu;
use crate::vmx::caps::PrimaryProcBased;
use crate::vmx::fields::Field32;
use crate::vmx::vmcs::Current;

/// A slice starts: a vCPU that uses its debug registers gets them back.
#[inline]
pub fn slice_start(vcpu: &Vcpu) {
    if vcpu.debug.used {
        write_hw(&vcpu.debug.dr, vcpu.debug.dr6);
    }
}

/// A slice ends: a vCPU that uses its debug registers keeps them, and the CPU's are
/// cleared for whoever runs next. One that never touched them may still have had #DBs
/// of its own (single-step, INT1, the hypervisor's pending single-step traps), which
/// set DR6 bits in the CPU: those are its own too, so from then on its DR6 is switched
/// with it, and the next vCPU finds DR6 at its initial value.
#[inline]
pub fn slice_end(vcpu: &mut Vcpu) {
    if vcpu.debug.used {
        let (dr, dr6) = read_hw();
        vcpu.debug.dr = dr;
        vcpu.debug.dr6 = dr6;
        write_hw(&[0; 4], DR6_INIT);
    } else {
        let dr6 = read_dr6();
        if dr6 != DR6_INIT {
            vcpu.debug.dr6 = dr6;
            vcpu.debug.used = true;
            write_dr6(DR6_INIT);
        }
    }
}

/// The vCPU's first MOV to or from a debug register: from now on they are its own in
/// the CPU during its slices (see the module's comment); the instruction runs again,
/// natively.
pub fn first_access(vmcs: &Current, vcpu: &mut Vcpu) -> Next {
    let (dr, dr6) = read_hw();
    vcpu.debug = DebugRegs { dr, dr6, used: true };
    let proc = vmcs.read32(Field32::PrimaryProcBasedControls);
    vmcs.write32(Field32::PrimaryProcBasedControls, proc & !PrimaryProcBased::MOV_DR_EXITING.bits());
    Next::Resume
}
