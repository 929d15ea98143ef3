//! Carrying out the speculation mitigations `crate::spec_ctrl` chose for this CPU: the
//! MSR writes around VM entries and exits, IBPB on a domain switch, L1D flush or VERW
//! before entry. RSB filling is in the exit stub (`vmx::entry`), switched by
//! [`RSB_FILL_ON_EXIT`].
//!
//! The choices are read on every entry and exit, so they live in atomics: a relaxed
//! load each, nothing else when a mitigation does not apply.

use super::cpu::{cpuid, rdmsr, wrmsr};
use crate::percpu::MAX_CPUS;
use crate::spec_ctrl::{self as policy, IA32_FLUSH_CMD, IA32_PRED_CMD, IA32_SPEC_CTRL, Mitigations};
use core::arch::asm;
use core::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use spin::Once;

static CHOICE: Once<Mitigations> = Once::new();

/// What applies before [`init`] ran: nothing offered to guests, RSB filling on.
const BEFORE_INIT: Mitigations = policy::choose(0, 0, true);

/// Read by the VM-exit stub: 1 to overwrite the return stack buffer after every exit
/// (the decision's `rsb_fill_on_exit`, as a byte the assembly can test).
#[unsafe(no_mangle)]
pub static RSB_FILL_ON_EXIT: AtomicU8 = AtomicU8::new(1);
/// The domain whose vCPU each CPU ran last (u32::MAX: none yet), for IBPB.
static LAST_DOMAIN: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_CPUS];

/// Decides from this CPU's CPUID and ARCH_CAPABILITIES (boot CPU, after the
/// configuration is read) and logs the decision.
pub fn init(enabled: bool) -> &'static Mitigations {
    CHOICE.call_once(|| {
        let edx = cpuid(7, 0).edx;
        let caps = if cpuid(0, 0).eax >= 7 && edx & policy::edx::ARCH_CAPABILITIES != 0 {
            // SAFETY: CPUID says the MSR exists; reading it has no side effect.
            unsafe { rdmsr(policy::IA32_ARCH_CAPABILITIES) }
        } else {
            0
        };
        let m = policy::choose(edx, caps, enabled);
        RSB_FILL_ON_EXIT.store(u8::from(m.rsb_fill_on_exit), Ordering::Relaxed);
        log::info!("spec_ctrl: CPUID.7 EDX {edx:#x}, ARCH_CAPABILITIES {caps:#x}: {m}");
        m
    })
}

/// The decision ([`init`] must have run; before it, nothing is offered to guests).
#[inline]
pub fn mitigations() -> &'static Mitigations {
    CHOICE.get().unwrap_or(&BEFORE_INIT)
}

/// Each CPU before it runs guests: the host's SPEC_CTRL.
pub fn init_this_cpu() {
    let host = mitigations().host_spec_ctrl;
    if host != 0 {
        // SAFETY: only bits the CPU has (the policy sets IBRS only where CPUID lists it).
        unsafe { wrmsr(IA32_SPEC_CTRL, host) };
    }
}

/// Just before VM entry, for a vCPU whose `Mitigations::entry_work` is true: the
/// guest's SPEC_CTRL (`guest`, a value the policy allows), then the L1D flush or VERW
/// where they apply.
#[inline]
pub fn before_entry(guest: u64) {
    let m = mitigations();
    if guest != m.host_spec_ctrl {
        // SAFETY: `guest` passed `Mitigations::guest_spec_ctrl_ok` when it was written.
        unsafe { wrmsr(IA32_SPEC_CTRL, guest) };
    }
    if m.l1d_flush_on_entry {
        flush_l1d();
    } else if m.verw_on_entry {
        verw();
    }
}

/// Right after a VM exit, likewise: the host's SPEC_CTRL back when it must be
/// (`Mitigations::restore_host_spec_ctrl`).
#[inline]
pub fn after_exit(guest: u64) {
    let m = mitigations();
    if m.restore_host_spec_ctrl(guest) {
        // SAFETY: the host value was chosen from what the CPU has.
        unsafe { wrmsr(IA32_SPEC_CTRL, m.host_spec_ctrl) };
    }
}

/// A vCPU of `domain` is about to run on `cpu`: IBPB if the last one there belonged to
/// another domain.
#[inline]
pub fn switch_to(cpu: usize, domain: u32) {
    let Some(last) = LAST_DOMAIN.get(cpu) else { return };
    if last.swap(domain, Ordering::Relaxed) != domain && mitigations().ibpb_on_switch {
        ibpb();
    }
}

/// An indirect branch prediction barrier.
pub fn ibpb() {
    // SAFETY: only called where CPUID lists IBPB (the policy's `ibpb`).
    unsafe { wrmsr(IA32_PRED_CMD, 1) };
}

/// An L1 data cache flush (a guest's FLUSH_CMD).
pub fn flush_l1d() {
    // SAFETY: only called where CPUID lists L1D_FLUSH (the policy's `flush_cmd`).
    unsafe { wrmsr(IA32_FLUSH_CMD, 1) };
}

/// VERW of a memory operand: on CPUs with MD_CLEAR it overwrites the buffers MDS leaks
/// from (Intel's MDS guidance: the memory form, any selector; the stack's, a valid
/// writable data segment, is the fast case).
fn verw() {
    let selector: u16;
    // SAFETY: reading SS has no side effects.
    unsafe { asm!("mov {:x}, ss", out(reg) selector, options(nomem, nostack)) };
    // SAFETY: VERW only reads the selector and sets ZF.
    unsafe { asm!("verw [{}]", in(reg) &selector, options(nostack, readonly)) };
}
