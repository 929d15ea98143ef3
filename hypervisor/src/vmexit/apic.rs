//! The local APIC's other doors: the IA32_APIC_BASE MSR, the x2APIC MSRs, the
//! TSC-deadline MSR and CR8; and what the model asks of the rest of the machine (IPIs).
//! The xAPIC MMIO page reaches the model through `mmio`.

use crate::devices::lapic::{DeliveryMode, Destination, Effects};
use crate::domain::Domain;
use crate::domain::vcpu::Vcpu;

pub const IA32_APIC_BASE: u32 = 0x1B;
pub const IA32_TSC_DEADLINE: u32 = 0x6E0;
pub const X2APIC_FIRST: u32 = 0x800;
pub const X2APIC_LAST: u32 = 0x8FF;

/// How an MSR access went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsrOutcome {
    /// Not an APIC MSR.
    NotApic,
    /// Done; for a read, the value.
    Done(u64),
    /// The guest gets #GP.
    Fault,
}

fn outcome(v: Option<u64>) -> MsrOutcome {
    v.map_or(MsrOutcome::Fault, MsrOutcome::Done)
}

/// RDMSR of an APIC MSR.
pub fn rdmsr(vcpu: &mut Vcpu, msr: u32) -> MsrOutcome {
    match msr {
        IA32_APIC_BASE => MsrOutcome::Done(vcpu.lapic.apic_base()),
        // Reads 0 once the deadline has fired or was disarmed (SDM Vol. 3A "TSC-Deadline Mode").
        IA32_TSC_DEADLINE => {
            MsrOutcome::Done(if vcpu.lapic.tsc_deadline_ns().is_some() { vcpu.tsc_deadline } else { 0 })
        }
        X2APIC_FIRST..=X2APIC_LAST => outcome(vcpu.lapic.msr_read(msr, crate::arch::timer::now_ns())),
        _ => MsrOutcome::NotApic,
    }
}

/// WRMSR of an APIC MSR.
pub fn wrmsr(domain: &Domain, vcpu: &mut Vcpu, msr: u32, value: u64) -> MsrOutcome {
    let now = crate::arch::timer::now_ns();
    match msr {
        IA32_APIC_BASE => {
            let ok = vcpu.lapic.set_apic_base(value);
            publish(domain, vcpu);
            outcome(ok.then_some(0))
        }
        IA32_TSC_DEADLINE => {
            // Outside TSC-deadline mode the write is ignored (SDM Vol. 3A "TSC-Deadline
            // Mode"); a zero disarms the timer.
            if vcpu.lapic.tsc_deadline_mode() {
                vcpu.tsc_deadline = value;
                arm_tsc_deadline(vcpu, value);
            }
            MsrOutcome::Done(0)
        }
        X2APIC_FIRST..=X2APIC_LAST => match vcpu.lapic.msr_write(msr, value, now) {
            Some(effects) => {
                apply(domain, vcpu, effects);
                MsrOutcome::Done(0)
            }
            None => MsrOutcome::Fault,
        },
        _ => MsrOutcome::NotApic,
    }
}

/// Arms the APIC timer for the guest's TSC reaching `value` (in the guest's TSC, which
/// is the host's plus the vCPU's offset); 0 disarms it.
fn arm_tsc_deadline(vcpu: &mut Vcpu, value: u64) {
    let deadline = (value != 0).then(|| crate::arch::timer::tsc_to_ns(vcpu.tsc.to_host(value)));
    vcpu.lapic.set_tsc_deadline_ns(deadline);
}

/// The guest moved its TSC (IA32_TSC or IA32_TSC_ADJUST): an armed TSC deadline now
/// falls at another host time, as on hardware, where the deadline is compared with the
/// counter itself.
pub fn retime_tsc_deadline(vcpu: &mut Vcpu) {
    if vcpu.lapic.tsc_deadline_ns().is_some() {
        arm_tsc_deadline(vcpu, vcpu.tsc_deadline);
    }
}

/// Makes this vCPU's APIC addressing (ID, LDR, DFR, mode) visible to IPI senders.
fn publish(domain: &Domain, vcpu: &Vcpu) {
    if let Some(sig) = domain.signals.get(vcpu.id as usize) {
        sig.publish(vcpu.lapic.addressing());
    }
}

/// Carries out what a register write asked for: IPIs go to the addressed vCPUs of the
/// same domain through their signals (fixed, lowest priority to the first match, NMI,
/// INIT, STARTUP); SMI IPIs are not modelled and are counted as dropped. The CPU running
/// a target is kicked so the interrupt arrives now, not at its next exit.
pub fn apply(domain: &Domain, vcpu: &mut Vcpu, effects: Effects) {
    publish(domain, vcpu);
    if let Some(vector) = effects.eoi_vector {
        // A level-triggered interrupt retired: the I/O APIC may deliver it again. For
        // Domain0, a machine line it was handling is lowered and unmasked first.
        let dom0 = domain.is_dom0();
        domain.devices(|d, out| {
            if dom0 {
                crate::domain::passthrough::before_eoi(d, vector, out);
            }
            d.eoi(vector, out)
        });
    }
    let Some(ipi) = effects.ipi else { return };
    let own = vcpu.id as usize;
    let mut delivered = false;
    for (index, target) in domain.signals.iter().enumerate() {
        let is_self = index == own;
        if !target.addressing().accepts(ipi.dest, is_self) {
            continue;
        }
        match ipi.delivery {
            // The model already latched fixed self-IPIs (shorthands self / all-including-self).
            DeliveryMode::Fixed | DeliveryMode::LowestPriority if is_self => {
                if matches!(ipi.dest, Destination::Physical(_) | Destination::Logical(_)) {
                    vcpu.lapic.accept(ipi.vector, false);
                }
            }
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => target.post_interrupt(ipi.vector),
            // A self-NMI (shorthand self, or an all-including-self broadcast) is taken
            // at this vCPU's next entry.
            DeliveryMode::Nmi if is_self => vcpu.nmi_pending = true,
            DeliveryMode::Nmi => target.post_nmi(),
            DeliveryMode::Init if !is_self => target.post_init(),
            DeliveryMode::StartUp if !is_self => target.post_sipi(ipi.vector),
            _ => continue,
        }
        delivered = true;
        if !is_self {
            crate::sched::notify(target.running_on());
        }
        if ipi.delivery == DeliveryMode::LowestPriority {
            break;
        }
    }
    if !delivered {
        vcpu.ipis_dropped = vcpu.ipis_dropped.saturating_add(1);
    }
}
