//! The VMX instructions, each behind one small function. VMX instructions report
//! failure in RFLAGS (SDM Vol. 3C "Conventions"): CF=1 is VMfailInvalid (no current
//! VMCS), ZF=1 is VMfailValid (the VM-instruction error field says why).

use core::arch::asm;

/// How a VMX instruction failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmFail {
    /// CF=1: there was no valid current VMCS (or VMXON itself was refused).
    Invalid,
    /// ZF=1: the VM-instruction error field of the current VMCS holds the number.
    Valid,
}

fn check(rflags: u64) -> Result<(), VmFail> {
    if rflags & 1 != 0 {
        Err(VmFail::Invalid)
    } else if rflags & (1 << 6) != 0 {
        Err(VmFail::Valid)
    } else {
        Ok(())
    }
}

/// Enters VMX operation with the VMXON region at physical address `region`.
///
/// # Safety
/// CR4.VMXE set, CR0/CR4 fixed bits applied, IA32_FEATURE_CONTROL allows VMX, and
/// `region` is a 4 KiB-aligned zeroed frame whose first dword is the VMCS revision id,
/// owned by this CPU for as long as it stays in VMX operation.
pub unsafe fn vmxon(region: u64) -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: forwarded to the caller; the operand is a pointer to the 64-bit address.
    unsafe { asm!("vmxon [{0}]", "pushfq", "pop {1}", in(reg) &region, out(reg) rflags) };
    check(rflags)
}

/// Leaves VMX operation.
///
/// # Safety
/// The CPU must be in VMX root operation; no VMCS of this CPU may be used afterwards.
pub unsafe fn vmxoff() -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: forwarded to the caller.
    unsafe { asm!("vmxoff", "pushfq", "pop {0}", out(reg) rflags) };
    check(rflags)
}

/// Flushes a VMCS to memory and marks it clear (inactive, not launched).
///
/// # Safety
/// `vmcs` must be the physical address of a VMCS region owned by the caller.
pub unsafe fn vmclear(vmcs: u64) -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: forwarded to the caller.
    unsafe { asm!("vmclear [{0}]", "pushfq", "pop {1}", in(reg) &vmcs, out(reg) rflags) };
    check(rflags)
}

/// Makes `vmcs` the current VMCS of this CPU.
///
/// # Safety
/// `vmcs` must be a VMCS region (revision id written) that is not current on another CPU.
pub unsafe fn vmptrld(vmcs: u64) -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: forwarded to the caller.
    unsafe { asm!("vmptrld [{0}]", "pushfq", "pop {1}", in(reg) &vmcs, out(reg) rflags) };
    check(rflags)
}

/// The current VMCS pointer of this CPU (all ones when there is none).
pub fn vmptrst() -> u64 {
    let mut pointer: u64 = u64::MAX;
    // SAFETY: VMPTRST only stores the current-VMCS pointer into `pointer`; in VMX root
    // operation it cannot fault with a valid memory operand.
    unsafe { asm!("vmptrst [{0}]", in(reg) &mut pointer, options(nostack)) };
    pointer
}

/// Why VMREAD or VMWRITE failed, off the hot path: with no current VMCS it is
/// VMfailInvalid, otherwise VMfailValid (SDM Vol. 3C "VMREAD", "VMWRITE").
#[cold]
fn field_access_failure() -> VmFail {
    if vmptrst() == u64::MAX { VmFail::Invalid } else { VmFail::Valid }
}

/// Reads a field of the current VMCS by its encoding.
///
/// # Safety
/// A VMCS must be current on this CPU. (An unsupported encoding fails, it does not fault.)
#[inline(always)]
pub unsafe fn vmread(encoding: u32) -> Result<u64, VmFail> {
    let value: u64;
    let failed: u8;
    // SAFETY: forwarded to the caller. SETNA is CF=1 or ZF=1, the two failure kinds.
    unsafe {
        asm!("vmread {0}, {1}", "setna {2}", out(reg) value, in(reg) u64::from(encoding), out(reg_byte) failed,
             options(nostack))
    };
    if failed == 0 { Ok(value) } else { Err(field_access_failure()) }
}

/// Reads a field of the current VMCS, 0 if the read fails (the destination is left
/// alone on failure, and it starts as 0): two instructions, for the exit path, where
/// every field read is one this CPU was checked to have.
///
/// # Safety
/// A VMCS must be current on this CPU.
#[inline(always)]
pub unsafe fn vmread_or_zero(encoding: u32) -> u64 {
    let mut value: u64 = 0;
    // SAFETY: forwarded to the caller; a failing VMREAD writes nothing.
    unsafe { asm!("vmread {0}, {1}", inout(reg) value, in(reg) u64::from(encoding), options(nostack)) };
    value
}

/// Writes a field of the current VMCS by its encoding.
///
/// # Safety
/// A VMCS must be current on this CPU, and `value` must be valid for the field in the
/// sense that matters to the caller (VM entry checks the rest).
#[inline(always)]
pub unsafe fn vmwrite(encoding: u32, value: u64) -> Result<(), VmFail> {
    // SAFETY: forwarded to the caller. JBE is taken on CF=1 or ZF=1, the two failure
    // kinds: one instruction on the success path.
    unsafe {
        asm!("vmwrite {0}, {1}", "jbe {2}", in(reg) u64::from(encoding), in(reg) value,
             label { return Err(field_access_failure()) }, options(nostack))
    };
    Ok(())
}

/// INVEPT types (SDM Vol. 3C "INVEPT").
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub enum InveptType {
    SingleContext = 1,
    AllContexts = 2,
}

/// Invalidates cached EPT translations.
///
/// # Safety
/// VMX root operation; the type must be supported (IA32_VMX_EPT_VPID_CAP).
pub unsafe fn invept(kind: InveptType, eptp: u64) -> Result<(), VmFail> {
    let descriptor: [u64; 2] = [eptp, 0];
    let rflags: u64;
    // SAFETY: forwarded to the caller; the descriptor is 128 bits in memory.
    unsafe {
        asm!("invept {0}, [{1}]", "pushfq", "pop {2}", in(reg) kind as u64, in(reg) &descriptor, out(reg) rflags)
    };
    check(rflags)
}

/// INVVPID types (SDM Vol. 3C "INVVPID").
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub enum InvvpidType {
    IndividualAddress = 0,
    SingleContext = 1,
    AllContexts = 2,
}

/// Invalidates cached linear translations tagged with `vpid`.
///
/// # Safety
/// VMX root operation; the type must be supported.
pub unsafe fn invvpid(kind: InvvpidType, vpid: u16, address: u64) -> Result<(), VmFail> {
    let descriptor: [u64; 2] = [u64::from(vpid), address];
    let rflags: u64;
    // SAFETY: forwarded to the caller.
    unsafe {
        asm!("invvpid {0}, [{1}]", "pushfq", "pop {2}", in(reg) kind as u64, in(reg) &descriptor, out(reg) rflags)
    };
    check(rflags)
}
