//! Interrupts into a vCPU: re-injecting an event an exit interrupted, and at VM entry
//! injecting a waiting NMI, else the local APIC's highest pending interrupt (or the
//! 8259's, through vCPU 0's LINT0), or asking for an NMI or interrupt window when the
//! guest cannot take it yet. The decisions are `vmx::inject`'s (host-tested); this
//! module reads and writes the VMCS.

use crate::devices::lapic::{Lint, LintEffect};
use crate::domain::Domain;
use crate::domain::vcpu::Vcpu;
use crate::vmx::caps::PrimaryProcBased;
use crate::vmx::exit::InterruptionInfo;
use crate::vmx::fields::{Field32, FieldNatural, ReadOnly32};
use crate::vmx::inject::{self, GuestInterruptState, Plan};
use crate::vmx::vmcs::Current;

/// After every exit: an event whose delivery the exit interrupted (IDT-vectoring
/// information valid) is delivered again at the next entry, so nothing is lost.
pub fn reinject_interrupted(vmcs: &Current) {
    let idt = vmcs.read_ro32(ReadOnly32::IdtVectoringInfo);
    if idt & (1 << 31) == 0 {
        return;
    }
    let len = vmcs.read_ro32(ReadOnly32::ExitInstructionLength);
    if let Some(r) = inject::reinjection(idt, len) {
        let intr = vmcs.read32(Field32::GuestInterruptibilityState);
        let entered = inject::interruptibility_for_reinjection(&r, intr);
        if entered != intr {
            vmcs.write32(Field32::GuestInterruptibilityState, entered);
        }
        vmcs.write32(Field32::EntryInterruptionInfo, r.info.raw());
        if r.info.delivers_error_code() {
            vmcs.write32(Field32::EntryExceptionErrorCode, vmcs.read_ro32(ReadOnly32::IdtVectoringErrorCode));
        }
        if let Some(len) = r.instruction_length {
            vmcs.write32(Field32::EntryInstructionLength, len);
        }
    }
}

/// The exit interrupted an IRET that had unblocked NMIs and the guest will run it again:
/// block NMIs again until it does (`inject::restore_nmi_blocking`). `vector` is the
/// exception the exit reports, if any.
pub fn restore_nmi_blocking(vmcs: &Current, vector: Option<u8>) {
    let intr = vmcs.read32(Field32::GuestInterruptibilityState);
    let blocked = inject::restore_nmi_blocking(true, vector, intr);
    if blocked != intr {
        vmcs.write32(Field32::GuestInterruptibilityState, blocked);
    }
}

/// Where the interrupt to deliver next comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The local APIC's highest deliverable vector.
    Apic(u8),
    /// The 8259 pair through LINT0 (vCPU 0 only); its vector is known at the INTA cycle.
    Pic,
}

/// The interrupt `vcpu` would take now, if any: its local APIC's first, then the 8259's
/// (the PIC's request is not in the APIC's IRR, so it does not compete on priority; an
/// OS uses one or the other).
fn source(domain: &Domain, vcpu: &Vcpu, now: u64) -> Option<Source> {
    if let Some(v) = vcpu.lapic.pending(now) {
        return Some(Source::Apic(v));
    }
    (vcpu.id == 0 && domain.pic_output() && vcpu.lapic.accepts_pic_interrupts()).then_some(Source::Pic)
}

/// Whether a vCPU waiting in HLT has an interrupt (or an NMI) to wake up for (run its
/// timers first).
pub fn has_interrupt(domain: &Domain, vcpu: &Vcpu, now: u64) -> bool {
    vcpu.nmi_pending || source(domain, vcpu, now).is_some()
}

/// vCPU 0's LINT0 follows the 8259's output: a rising edge, with LINT0 programmed for
/// NMI (or a fixed vector), is an NMI (or that vector). In the usual ExtINT mode the
/// 8259's vector is taken at injection instead (`source`).
fn watch_lint0(domain: &Domain, vcpu: &mut Vcpu) {
    if vcpu.id != 0 {
        return;
    }
    let high = domain.pic_output();
    let rising = high && !vcpu.lint0_high;
    vcpu.lint0_high = high;
    if rising && vcpu.lapic.lint_edge(Lint::Lint0) == LintEffect::Nmi {
        vcpu.nmi_pending = true;
    }
}

/// Before every entry: run the vCPU's timers up to `now`, then inject a waiting NMI or
/// its highest deliverable interrupt, or open the window each waits for.
pub fn before_entry(vmcs: &Current, domain: &Domain, vcpu: &mut Vcpu, now: u64) {
    vcpu.lapic.tick(now);
    watch_lint0(domain, vcpu);
    let source = source(domain, vcpu, now);
    if source.is_none() && !vcpu.window_exiting && !vcpu.nmi_pending && !vcpu.nmi_window_exiting {
        return; // the common case: nothing to do, no VMREADs
    }
    let interruptibility = vmcs.read32(Field32::GuestInterruptibilityState);
    let mut state = GuestInterruptState::from_raw(
        vmcs.read_natural(FieldNatural::GuestRflags),
        interruptibility,
        vmcs.read32(Field32::EntryInterruptionInfo),
    );
    // A debug trap the guest earned goes first: injecting now would discard it
    // (`vmx::pending_debug`), so whatever waits opens its window instead.
    let pending_debug = vmcs.read_natural(FieldNatural::GuestPendingDebugExceptions);
    if crate::vmx::pending_debug::holds_back_injection(pending_debug, interruptibility) {
        state.event_queued = true;
    }
    match inject::plan_nmi(vcpu.nmi_pending, &state) {
        Plan::Inject(_) => {
            vmcs.write32(Field32::EntryInterruptionInfo, InterruptionInfo::nmi().raw());
            vcpu.nmi_pending = false;
            vcpu.nmis_injected = vcpu.nmis_injected.wrapping_add(1);
            state.event_queued = true;
            set_nmi_window(vmcs, vcpu, false);
        }
        Plan::OpenWindow => set_nmi_window(vmcs, vcpu, true),
        Plan::Nothing => set_nmi_window(vmcs, vcpu, false),
    }
    // The plan only needs to know that something is pending; the PIC's vector is read
    // by the INTA cycle below, once the guest can take it.
    let pending = source.map(|s| match s {
        Source::Apic(v) => v,
        Source::Pic => 0,
    });
    match inject::plan(pending, &state) {
        Plan::Inject(vector) => {
            let vector = match source {
                Some(Source::Pic) => match domain.devices(|d, _| d.pic.acknowledge()) {
                    Some(v) => v,
                    None => {
                        set_window(vmcs, vcpu, false);
                        return;
                    }
                },
                _ => {
                    vcpu.lapic.ack(vector);
                    vector
                }
            };
            vmcs.write32(Field32::EntryInterruptionInfo, InterruptionInfo::external_interrupt(vector).raw());
            vcpu.interrupts_injected = vcpu.interrupts_injected.wrapping_add(1);
            set_window(vmcs, vcpu, false);
        }
        Plan::OpenWindow => set_window(vmcs, vcpu, true),
        Plan::Nothing => set_window(vmcs, vcpu, false),
    }
}

/// Turns NMI-window exiting on or off (only VMCS traffic when it changes). Where the
/// CPU lacks the control, a waiting NMI is looked at again at every entry instead.
fn set_nmi_window(vmcs: &Current, vcpu: &mut Vcpu, on: bool) {
    let bit = PrimaryProcBased::NMI_WINDOW_EXITING;
    if vcpu.nmi_window_exiting == on || !crate::vmx::capabilities().is_some_and(|c| c.proc_allows(bit)) {
        return;
    }
    let controls = vmcs.read32(Field32::PrimaryProcBasedControls);
    vmcs.write32(Field32::PrimaryProcBasedControls, if on { controls | bit.bits() } else { controls & !bit.bits() });
    vcpu.nmi_window_exiting = on;
}

/// Turns interrupt-window exiting on or off (only VMCS traffic when it changes).
fn set_window(vmcs: &Current, vcpu: &mut Vcpu, on: bool) {
    if vcpu.window_exiting == on {
        return;
    }
    let bit = PrimaryProcBased::INTERRUPT_WINDOW_EXITING.bits();
    let controls = vmcs.read32(Field32::PrimaryProcBasedControls);
    vmcs.write32(Field32::PrimaryProcBasedControls, if on { controls | bit } else { controls & !bit });
    vcpu.window_exiting = on;
}
