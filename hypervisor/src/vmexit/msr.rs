//! RDMSR/WRMSR from a DomU. Every MSR access exits (the MSR bitmap is all ones); the
//! MSRs a guest kernel needs are emulated from VMCS guest state, constants or the
//! vCPU's own models (`guest_msrs`: TSC, MISC_ENABLE, machine check), the APIC's MSRs
//! go to the vCPU's local APIC model (`apic`), and everything else raises #GP in the
//! guest, as a CPU without that MSR would. docs/guest-boot.md lists each MSR and why.

use super::apic::MsrOutcome;
use super::{GP, Next, inject_exception};
use crate::domain::vcpu::Vcpu;
use crate::guest_msrs::{mca, misc_enable::IA32_MISC_ENABLE, tsc::IA32_TSC_ADJUST};
use crate::spec_ctrl::{IA32_FLUSH_CMD, IA32_PRED_CMD, IA32_SPEC_CTRL};
use crate::vmx::fields::{Field64, FieldNatural};
use crate::vmx::vmcs::Current;

const IA32_TSC: u32 = 0x10;
/// IA32_PLATFORM_ID: which microcode a CPU takes (Windows' microcode loader reads it);
/// a guest loads none, so it reads 0.
const IA32_PLATFORM_ID: u32 = 0x17;
/// MSR_EBL_CR_POWERON: the bus configuration some kernels read for the FSB; 0, as KVM.
const MSR_EBL_CR_POWERON: u32 = 0x2A;
/// IA32_FEATURE_CONTROL: locked with nothing enabled (no VMX, SMX, SGX, LMCE to offer,
/// as CPUID says), so that no OS tries to set it; a write is #GP, as to a locked MSR.
const IA32_FEATURE_CONTROL: u32 = 0x3A;
const FEATURE_CONTROL_LOCKED: u64 = 1;
/// IA32_DEBUGCTL, from the VMCS ("load/save debug controls").
const IA32_DEBUGCTL: u32 = 0x1D9;
const IA32_MTRRCAP: u32 = 0xFE;
/// IA32_BIOS_SIGN_ID: the microcode revision (high half after a write of 0 and CPUID.1);
/// a guest has none to report, so it reads 0.
const IA32_BIOS_SIGN_ID: u32 = 0x8B;
const IA32_SYSENTER_CS: u32 = 0x174;
const IA32_SYSENTER_ESP: u32 = 0x175;
const IA32_SYSENTER_EIP: u32 = 0x176;
const IA32_PAT: u32 = 0x277;
const IA32_MTRR_DEF_TYPE: u32 = 0x2FF;
const IA32_EFER: u32 = 0xC000_0080;
const IA32_FS_BASE: u32 = 0xC000_0100;
const IA32_TSC_AUX: u32 = 0xC000_0103;
/// The MSRs of SYSCALL/SYSRET and SWAPGS, in `Vcpu::syscall_msrs` order.
pub const SYSCALL_MSRS: [u32; 5] = [
    0xC000_0081, // IA32_STAR
    0xC000_0082, // IA32_LSTAR
    0xC000_0083, // IA32_CSTAR
    0xC000_0084, // IA32_FMASK
    0xC000_0102, // IA32_KERNEL_GS_BASE
];
const IA32_GS_BASE: u32 = 0xC000_0101;

const EFER_LME: u64 = 1 << 8;
const EFER_NXE: u64 = 1 << 11;

/// EFER bits a guest may set: SCE, LME, LMA (read-only, derived), NXE.
const EFER_WRITABLE: u64 = (1 << 0) | (1 << 8) | (1 << 11);

fn split(vcpu: &mut Vcpu, value: u64) {
    vcpu.regs.rax = value & 0xFFFF_FFFF;
    vcpu.regs.rdx = value >> 32;
}

/// Whether the CPU has IA32_TSC_AUX (RDTSCP or RDPID), read once.
fn has_tsc_aux() -> bool {
    static HAS: spin::Once<bool> = spin::Once::new();
    *HAS.call_once(|| {
        let ext = crate::arch::cpu::cpuid(0x8000_0001, 0);
        let l7 = crate::arch::cpu::cpuid(7, 0);
        ext.edx & (1 << 27) != 0 || l7.ecx & (1 << 22) != 0
    })
}

/// Makes `value` the CPU's IA32_TSC_AUX, for the vCPU that runs next (the hypervisor
/// itself never reads it). Nothing where the MSR does not exist.
pub fn load_tsc_aux(value: u32) {
    if has_tsc_aux() {
        // SAFETY: the MSR exists (checked above); bits 63:32 are zero as required.
        unsafe { crate::arch::cpu::wrmsr(IA32_TSC_AUX, u64::from(value)) };
    }
}

const IA32_KERNEL_GS_BASE: u32 = 0xC000_0102;

/// The CPU's IA32_KERNEL_GS_BASE: the running guest's (its SWAPGS changes it).
pub fn current_kernel_gs_base() -> u64 {
    // SAFETY: the MSR exists on every 64-bit CPU; reading it has no side effect.
    unsafe { crate::arch::cpu::rdmsr(IA32_KERNEL_GS_BASE) }
}

/// Makes the vCPU's SYSCALL/SWAPGS MSRs the CPU's, for the slice that starts.
pub fn load_syscall_msrs(values: &[u64; 5]) {
    for (&msr, &value) in SYSCALL_MSRS.iter().zip(values) {
        // SAFETY: these MSRs exist on every 64-bit CPU; values were checked when the
        // guest wrote them (canonical addresses), and the hypervisor never uses them.
        unsafe { crate::arch::cpu::wrmsr(msr, value) };
    }
}

/// Whether `value` may go into syscall MSR number `index` of [`SYSCALL_MSRS`]: the
/// addresses (LSTAR, CSTAR, KERNEL_GS_BASE) must be canonical (#GP otherwise); STAR and
/// FMASK take any value (FMASK's upper half is reserved but ignored by CPUs we know,
/// so it is kept to its low half).
fn syscall_msr_value(index: usize, value: u64) -> Option<u64> {
    match index {
        1 | 2 | 4 => canonical(value).then_some(value),
        3 => Some(value & 0xFFFF_FFFF),
        _ => Some(value),
    }
}

pub fn rdmsr(vmcs: &Current, vcpu: &mut Vcpu) -> Next {
    let msr = vcpu.regs.rcx as u32;
    match super::apic::rdmsr(vcpu, msr) {
        MsrOutcome::NotApic => {}
        MsrOutcome::Done(value) => {
            split(vcpu, value);
            return Next::Advance;
        }
        MsrOutcome::Fault => {
            inject_exception(vmcs, GP, Some(0));
            return Next::Resume;
        }
    }
    let value = match msr {
        IA32_TSC => vcpu.tsc.guest(crate::arch::cpu::rdtsc()),
        IA32_TSC_ADJUST => vcpu.tsc.adjust,
        IA32_MISC_ENABLE => vcpu.misc_enable.0,
        m if mca::is_mca(m) => match vcpu.mca.read(m) {
            Some(v) => v,
            None => {
                inject_exception(vmcs, GP, Some(0));
                return Next::Resume;
            }
        },
        IA32_TSC_AUX if has_tsc_aux() => u64::from(vcpu.tsc_aux),
        // SWAPGS exchanges GS base and KERNEL_GS_BASE without an exit: the CPU's MSR
        // holds the guest's current value during its slice.
        IA32_KERNEL_GS_BASE => current_kernel_gs_base(),
        m if SYSCALL_MSRS.contains(&m) => {
            let i = SYSCALL_MSRS.iter().position(|&x| x == m).unwrap_or(0);
            vcpu.syscall_msrs.get(i).copied().unwrap_or(0)
        }
        // The vCPU's own value (the policy decides whether the MSR exists for guests).
        IA32_SPEC_CTRL if crate::arch::spec_ctrl::mitigations().guest_spec_ctrl != 0 => vcpu.spec_ctrl,
        IA32_MTRRCAP | IA32_MTRR_DEF_TYPE | IA32_BIOS_SIGN_ID | IA32_PLATFORM_ID | MSR_EBL_CR_POWERON => 0,
        IA32_FEATURE_CONTROL => FEATURE_CONTROL_LOCKED,
        IA32_DEBUGCTL => vmcs.read64(Field64::GuestIa32Debugctl),
        IA32_PAT => vmcs.read64(Field64::GuestIa32Pat),
        IA32_EFER => vmcs.read64(Field64::GuestIa32Efer),
        IA32_FS_BASE => vmcs.read_natural(FieldNatural::GuestFsBase),
        IA32_GS_BASE => vmcs.read_natural(FieldNatural::GuestGsBase),
        IA32_SYSENTER_CS => u64::from(vmcs.read32(crate::vmx::fields::Field32::GuestSysenterCs)),
        IA32_SYSENTER_ESP => vmcs.read_natural(FieldNatural::GuestSysenterEsp),
        IA32_SYSENTER_EIP => vmcs.read_natural(FieldNatural::GuestSysenterEip),
        _ => {
            inject_exception(vmcs, GP, Some(0));
            return Next::Resume;
        }
    };
    split(vcpu, value);
    Next::Advance
}

fn canonical(v: u64) -> bool {
    ((v as i64) << 16 >> 16) as u64 == v
}

/// Whether `pat` holds only valid memory types (0, 1, 4, 5, 6, 7) in its eight bytes.
fn valid_pat(pat: u64) -> bool {
    pat.to_le_bytes().iter().all(|&t| matches!(t, 0 | 1 | 4..=7))
}

pub fn wrmsr(vmcs: &Current, domain: &crate::domain::Domain, vcpu: &mut Vcpu) -> Next {
    let value = (vcpu.regs.rdx << 32) | (vcpu.regs.rax & 0xFFFF_FFFF);
    let msr = vcpu.regs.rcx as u32;
    let ok = match super::apic::wrmsr(domain, vcpu, msr, value) {
        MsrOutcome::Done(_) => true,
        MsrOutcome::Fault => false,
        // Bits 63:32 are reserved (#GP).
        MsrOutcome::NotApic if msr == IA32_TSC_AUX => {
            let ok = has_tsc_aux() && value >> 32 == 0;
            if ok {
                vcpu.tsc_aux = value as u32;
                load_tsc_aux(vcpu.tsc_aux);
            }
            ok
        }
        MsrOutcome::NotApic if SYSCALL_MSRS.contains(&msr) => {
            let i = SYSCALL_MSRS.iter().position(|&x| x == msr).unwrap_or(0);
            match (syscall_msr_value(i, value), vcpu.syscall_msrs.get_mut(i)) {
                (Some(v), Some(slot)) => {
                    *slot = v;
                    // SAFETY: as in `load_syscall_msrs`; the value was just checked.
                    unsafe { crate::arch::cpu::wrmsr(msr, v) };
                    true
                }
                _ => false,
            }
        }
        MsrOutcome::NotApic if matches!(msr, IA32_SPEC_CTRL | IA32_PRED_CMD | IA32_FLUSH_CMD) => {
            speculation_wrmsr(vcpu, msr, value)
        }
        MsrOutcome::NotApic if msr == IA32_TSC || msr == IA32_TSC_ADJUST => {
            if msr == IA32_TSC {
                vcpu.tsc.write_tsc(value, crate::arch::cpu::rdtsc());
            } else {
                vcpu.tsc.write_adjust(value);
            }
            vmcs.write64(Field64::TscOffset, vcpu.tsc.offset);
            super::apic::retime_tsc_deadline(vcpu);
            true
        }
        MsrOutcome::NotApic if msr == IA32_MISC_ENABLE => vcpu.misc_enable.write(value),
        MsrOutcome::NotApic if mca::is_mca(msr) => vcpu.mca.write(msr, value),
        MsrOutcome::NotApic => plain_wrmsr(vmcs, vcpu, msr, value),
    };
    if ok {
        Next::Advance
    } else {
        inject_exception(vmcs, GP, Some(0));
        Next::Resume
    }
}

/// The speculation-control MSRs, where the CPU has them (`crate::spec_ctrl`): the
/// vCPU's SPEC_CTRL (loaded before each entry), and the two commands, carried out at
/// once. False means #GP, as on a CPU without them.
fn speculation_wrmsr(vcpu: &mut Vcpu, msr: u32, value: u64) -> bool {
    let m = crate::arch::spec_ctrl::mitigations();
    match msr {
        IA32_SPEC_CTRL if m.guest_spec_ctrl_ok(value) => {
            vcpu.spec_ctrl = value;
            vcpu.spec_ctrl_switch = m.entry_work(value);
            true
        }
        IA32_PRED_CMD if m.pred_cmd_ok(value) => {
            if value != 0 {
                crate::arch::spec_ctrl::ibpb();
            }
            true
        }
        IA32_FLUSH_CMD if m.flush_cmd_ok(value) => {
            if value != 0 {
                crate::arch::spec_ctrl::flush_l1d();
            }
            true
        }
        _ => false,
    }
}

/// The non-APIC MSRs; false means #GP.
fn plain_wrmsr(vmcs: &Current, vcpu: &Vcpu, msr: u32, value: u64) -> bool {
    match msr {
        // NXE is reserved while IA32_MISC_ENABLE's XD-disable bit is set.
        IA32_EFER if value & EFER_NXE != 0 && vcpu.misc_enable.xd_disabled() => false,
        IA32_EFER if value & !(EFER_WRITABLE | (1 << 10)) == 0 => {
            let current = vmcs.read64(Field64::GuestIa32Efer);
            // LME cannot change while paging is on (SDM Vol. 3A "IA-32e Mode
            // Initialization": #GP); let through, LME = 0 under LMA = 1 would fail the
            // next VM entry instead of faulting in the guest.
            let paging = vmcs.read_natural(FieldNatural::GuestCr0) & (1 << 31) != 0;
            if paging && (value ^ current) & EFER_LME != 0 {
                return false;
            }
            // LMA follows LME once paging is on; keep what the VMCS says for LMA.
            vmcs.write64(Field64::GuestIa32Efer, (value & EFER_WRITABLE) | (current & (1 << 10)));
            true
        }
        IA32_PAT if valid_pat(value) => {
            vmcs.write64(Field64::GuestIa32Pat, value);
            true
        }
        IA32_FS_BASE if canonical(value) => {
            vmcs.write_natural(FieldNatural::GuestFsBase, value);
            true
        }
        IA32_GS_BASE if canonical(value) => {
            vmcs.write_natural(FieldNatural::GuestGsBase, value);
            true
        }
        IA32_SYSENTER_CS => {
            vmcs.write32(crate::vmx::fields::Field32::GuestSysenterCs, value as u32);
            true
        }
        IA32_SYSENTER_ESP if canonical(value) => {
            vmcs.write_natural(FieldNatural::GuestSysenterEsp, value);
            true
        }
        IA32_SYSENTER_EIP if canonical(value) => {
            vmcs.write_natural(FieldNatural::GuestSysenterEip, value);
            true
        }
        // Writes the platform ignores (the microcode revision latch among them).
        IA32_MTRR_DEF_TYPE | IA32_BIOS_SIGN_ID | MSR_EBL_CR_POWERON => true,
        IA32_DEBUGCTL => match crate::guest_msrs::debugctl_value(value) {
            Some(v) => {
                vmcs.write64(Field64::GuestIa32Debugctl, v);
                true
            }
            None => false,
        },
        _ => false,
    }
}
