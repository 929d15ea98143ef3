//! The local APIC's other doors: the IA32_APIC_BASE MSR, the x2APIC MSRs, the
//! TSC-deadline MSR and CR8; and what the model asks of the rest of the machine (IPIs).
//! The xAPIC MMIO page reaches the model through `mmio`.

use crate::devices::lapic::{DeliveryMode, Destination, Effects};
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
    let now = crate::arch::timer::now_ns();
    match msr {
        IA32_APIC_BASE => MsrOutcome::Done(vcpu.lapic.apic_base()),
        // Reads 0 once the deadline has fired or was disarmed (SDM Vol. 3A "TSC-Deadline Mode").
        IA32_TSC_DEADLINE => {
            MsrOutcome::Done(if vcpu.lapic.tsc_deadline_ns().is_some() { vcpu.tsc_deadline } else { 0 })
        }
        X2APIC_FIRST..=X2APIC_LAST => outcome(vcpu.lapic.msr_read(msr, now)),
        _ => MsrOutcome::NotApic,
    }
}

/// WRMSR of an APIC MSR.
pub fn wrmsr(vcpu: &mut Vcpu, msr: u32, value: u64) -> MsrOutcome {
    let now = crate::arch::timer::now_ns();
    match msr {
        IA32_APIC_BASE => outcome(vcpu.lapic.set_apic_base(value).then_some(0)),
        IA32_TSC_DEADLINE => {
            // Outside TSC-deadline mode the write is ignored (SDM Vol. 3A "TSC-Deadline
            // Mode"); a zero disarms the timer.
            if vcpu.lapic.tsc_deadline_mode() {
                vcpu.tsc_deadline = value;
                let deadline = (value != 0).then(|| crate::arch::timer::tsc_to_ns(value));
                vcpu.lapic.set_tsc_deadline_ns(deadline);
            }
            MsrOutcome::Done(0)
        }
        X2APIC_FIRST..=X2APIC_LAST => match vcpu.lapic.msr_write(msr, value, now) {
            Some(effects) => {
                apply(vcpu, effects);
                MsrOutcome::Done(0)
            }
            None => MsrOutcome::Fault,
        },
        _ => MsrOutcome::NotApic,
    }
}

/// Carries out what a register write asked for. Interrupts to other vCPUs need
/// multi-vCPU domains (the scheduler issue): an IPI addressed only to this vCPU's own
/// APIC ID is delivered here, anything else is dropped and counted.
pub fn apply(vcpu: &mut Vcpu, effects: Effects) {
    let Some(ipi) = effects.ipi else { return };
    // Shorthands including self were already delivered locally by the model.
    let addressed = matches!(ipi.dest, Destination::Physical(_) | Destination::Logical(_));
    let fixed = matches!(ipi.delivery, DeliveryMode::Fixed | DeliveryMode::LowestPriority);
    if addressed && fixed && vcpu.lapic.is_destination(ipi.dest, true) {
        vcpu.lapic.accept(ipi.vector, false);
    } else if !matches!(ipi.dest, Destination::SelfOnly | Destination::AllIncludingSelf) || !fixed {
        vcpu.ipis_dropped = vcpu.ipis_dropped.saturating_add(1);
    }
}
