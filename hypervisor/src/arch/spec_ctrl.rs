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
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use spin::Once;

static CHOICE: Once<Mitigations> = Once::new();

/// Read by the VM-exit stub: 1 to overwrite the return stack buffer after every exit.
#[unsafe(no_mangle)]
pub static RSB_FILL_ON_EXIT: AtomicU8 = AtomicU8::new(1);
static HOST_SPEC_CTRL: AtomicU64 = AtomicU64::new(0);
/// Host IBRS must be written again after every exit (IBRS without "enhanced IBRS").
static IBRS_EVERY_EXIT: AtomicBool = AtomicBool::new(false);
static L1D_FLUSH: AtomicBool = AtomicBool::new(false);
static VERW: AtomicBool = AtomicBool::new(false);
static IBPB_ON_SWITCH: AtomicBool = AtomicBool::new(false);
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
        HOST_SPEC_CTRL.store(m.host_spec_ctrl, Ordering::Relaxed);
        IBRS_EVERY_EXIT.store(m.host_spec_ctrl != 0 && !m.eibrs, Ordering::Relaxed);
        L1D_FLUSH.store(m.l1d_flush_on_entry, Ordering::Relaxed);
        VERW.store(m.verw_on_entry, Ordering::Relaxed);
        IBPB_ON_SWITCH.store(m.ibpb_on_switch, Ordering::Relaxed);
        log::info!("spec_ctrl: CPUID.7 EDX {edx:#x}, ARCH_CAPABILITIES {caps:#x}: {m}");
        m
    })
}

/// The decision ([`init`] must have run; before it, nothing is offered to guests).
pub fn mitigations() -> Mitigations {
    CHOICE.get().copied().unwrap_or_else(|| policy::choose(0, 0, true))
}

/// Each CPU before it runs guests: the host's SPEC_CTRL.
pub fn init_this_cpu() {
    let host = HOST_SPEC_CTRL.load(Ordering::Relaxed);
    if host != 0 {
        // SAFETY: only bits the CPU has (the policy sets IBRS only where CPUID lists it).
        unsafe { wrmsr(IA32_SPEC_CTRL, host) };
    }
}

/// Whether a vCPU whose SPEC_CTRL is `guest` needs [`before_entry`] and [`after_exit`]
/// around its entries at all: decided when its slice starts and when it writes the MSR,
/// so that on CPUs where nothing applies the entry path pays one test.
pub fn needs_entry_work(guest: u64) -> bool {
    guest != HOST_SPEC_CTRL.load(Ordering::Relaxed)
        || IBRS_EVERY_EXIT.load(Ordering::Relaxed)
        || L1D_FLUSH.load(Ordering::Relaxed)
        || VERW.load(Ordering::Relaxed)
}

/// Just before VM entry: the guest's SPEC_CTRL (`guest`, a value the policy allows),
/// then the L1D flush or VERW where they apply.
#[inline]
pub fn before_entry(guest: u64) {
    if guest != HOST_SPEC_CTRL.load(Ordering::Relaxed) {
        // SAFETY: `guest` passed `Mitigations::guest_spec_ctrl_ok` when it was written.
        unsafe { wrmsr(IA32_SPEC_CTRL, guest) };
    }
    if L1D_FLUSH.load(Ordering::Relaxed) {
        // SAFETY: L1D_FLUSH (bit 0) where CPUID lists the command.
        unsafe { wrmsr(IA32_FLUSH_CMD, 1) };
    } else if VERW.load(Ordering::Relaxed) {
        verw();
    }
}

/// Right after a VM exit: the host's SPEC_CTRL back, when the guest's differed or IBRS
/// must be set again after each transition (IBRS without the enhanced form).
#[inline]
pub fn after_exit(guest: u64) {
    let host = HOST_SPEC_CTRL.load(Ordering::Relaxed);
    if guest != host || IBRS_EVERY_EXIT.load(Ordering::Relaxed) {
        // SAFETY: the host value was chosen from what the CPU has.
        unsafe { wrmsr(IA32_SPEC_CTRL, host) };
    }
}

/// A vCPU of `domain` is about to run on `cpu`: IBPB if the last one there belonged to
/// another domain.
#[inline]
pub fn switch_to(cpu: usize, domain: u32) {
    let Some(last) = LAST_DOMAIN.get(cpu) else { return };
    if last.swap(domain, Ordering::Relaxed) != domain && IBPB_ON_SWITCH.load(Ordering::Relaxed) {
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
