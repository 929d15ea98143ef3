//! Entering and leaving VMX operation on each CPU (SDM Vol. 3C "Enabling and Entering
//! VMX Operation"): IA32_FEATURE_CONTROL, the CR0/CR4 fixed bits, a VMXON region.

use super::caps::msr::VmxMsr;
use super::caps::{self, VmxCapabilities, VmxFirmwareState};
use super::instr::{self, VmFail};
use crate::arch::cpu::{rdmsr, wrmsr};
use crate::mm::{paging, phys};
use core::arch::asm;
use core::fmt;

const CR4_VMXE: u64 = 1 << 13;
const CR4_OSXSAVE: u64 = 1 << 18;

#[derive(Debug)]
pub enum EnableError {
    LockedOff,
    OutOfMemory,
    Vmxon(VmFail),
}

impl fmt::Display for EnableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LockedOff => write!(
                f,
                "VT-x is disabled by the firmware (IA32_FEATURE_CONTROL locked with VMX off); enable \"Intel Virtualization Technology\" in the firmware setup"
            ),
            Self::OutOfMemory => write!(f, "no free frame for the VMXON region"),
            Self::Vmxon(e) => write!(f, "VMXON failed ({e:?}); the CPU refused VMX operation"),
        }
    }
}

fn read_cr0() -> u64 {
    let v: u64;
    // SAFETY: reading CR0 has no side effects.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack)) };
    v
}

fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: reading CR4 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack)) };
    v
}

/// Puts this CPU into VMX root operation. Returns the VMXON region's physical address.
pub fn enable_this_cpu(caps: &VmxCapabilities) -> Result<u64, EnableError> {
    // SAFETY: IA32_FEATURE_CONTROL exists on every CPU with VMX (checked at boot).
    let fc = unsafe { rdmsr(VmxMsr::FeatureControl as u32) };
    match caps::vmx_status(fc) {
        VmxFirmwareState::LockedDisabled => return Err(EnableError::LockedOff),
        VmxFirmwareState::Unlocked => {
            if let Some(value) = caps::feature_control_enabling_vmx(fc) {
                // SAFETY: the MSR is unlocked, so this write (VMX outside SMX + lock) is
                // allowed; locking it is what the SDM requires before VMXON.
                unsafe { wrmsr(VmxMsr::FeatureControl as u32, value) };
            }
        }
        VmxFirmwareState::LockedEnabled => {}
    }
    let region = phys::allocate().ok_or(EnableError::OutOfMemory)?;
    let virt = paging::phys_to_virt(region) as *mut u32;
    // SAFETY: a fresh frame owned by this CPU, reached through the direct map.
    unsafe {
        core::ptr::write_bytes(virt as *mut u8, 0, 4096);
        virt.write_volatile(caps.basic().revision_id());
    }
    // SDM Vol. 3C "VMX-Fixed Bits in CR0/CR4": the bits fixed to 1 (PE, NE, PG, VMXE)
    // must be set and those fixed to 0 cleared before VMXON.
    let cr0 = caps.cr0_fixed().apply(read_cr0());
    // CR4.OSXSAVE lets guests use XSETBV/XSAVE state (the CPU carries their XCR0 in
    // their slices, the host's full mask outside them).
    let osxsave = if crate::arch::cpu::cpuid(1, 0).ecx & (1 << 26) != 0 { CR4_OSXSAVE } else { 0 };
    let cr4 = caps.cr4_fixed().apply(read_cr4() | CR4_VMXE | osxsave);
    // SAFETY: the fixed-bit rules only set bits the hypervisor already runs with
    // (PE, PG, NE) plus VMXE, which changes nothing until VMXON.
    unsafe {
        asm!("mov cr0, {}", in(reg) cr0, options(nostack));
        asm!("mov cr4, {}", in(reg) cr4, options(nostack));
    }
    // With OSXSAVE on, the CPU holds the host's XCR0 outside guest slices (arch::fpu).
    crate::arch::fpu::init_this_cpu();
    // No debug register of any guest in the CPU outside its slices (vmexit::debug).
    crate::arch::debugreg::init_this_cpu();
    // SAFETY: all preconditions of VMXON were established above.
    unsafe { instr::vmxon(region) }.map_err(EnableError::Vmxon)?;
    Ok(region)
}

/// Leaves VMX operation on this CPU (on the way down).
pub fn disable_this_cpu() {
    // SAFETY: only called on CPUs that entered VMX operation; no VMCS is used after it.
    if unsafe { instr::vmxoff() }.is_ok() {
        // SAFETY: clearing VMXE after VMXOFF is allowed and has no other effect.
        unsafe { asm!("mov cr4, {}", in(reg) read_cr4() & !CR4_VMXE, options(nostack)) };
    }
}
