//! Event injection decisions: when an external interrupt may be injected at VM entry,
//! and when the hypervisor must instead ask for an interrupt-window exit.
//!
//! SDM Vol. 3C "Event Injection" and "Checks on Guest Non-Register State": an external
//! interrupt may only be injected when the guest could take it itself, that is with
//! RFLAGS.IF = 1 and no blocking by STI or MOV SS. Otherwise the VM entry fails (or the
//! interrupt would arrive where the guest cannot take it), so the hypervisor sets
//! "interrupt-window exiting": the CPU exits at the first instruction boundary where the
//! guest becomes interruptible, and the interrupt is injected then.
//!
//! Only one event fits in the VM-entry interruption-information field. An event already
//! there (an exception the exit handler raised, or an event whose delivery an exit
//! interrupted and that is being re-injected) goes first; a pending interrupt then waits
//! for the window, which opens after that event has been delivered and the guest is
//! interruptible again.
//!
//! NMIs (with "virtual NMIs", SDM Vol. 3C "Virtual NMIs"): the CPU tracks the guest's
//! NMI blocking in the interruptibility state, sets it when it delivers an injected NMI
//! and clears it at the guest's IRET. An NMI waits while the guest is blocked by NMI or
//! MOV SS, and also by STI: the VM-entry check for NMI injection under STI blocking is
//! processor-dependent (KVM waits too). Waiting NMIs ask for an NMI-window exit, and an
//! NMI goes before an external interrupt (SDM "Priority Among Concurrent Events").
//!
//! This module decides; `vmexit::events` writes the VMCS. The decision is pure so every
//! case is unit-tested on the host.

use super::exit::{Interruptibility, InterruptionInfo, InterruptionType};

/// What to do about external interrupts at the next VM entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Inject this vector now (and stop asking for interrupt windows).
    Inject(u8),
    /// An interrupt waits but the guest cannot take it: exit when it can.
    OpenWindow,
    /// Nothing pending: no injection, no interrupt-window exiting.
    Nothing,
}

/// The guest state that decides whether an interrupt can be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestInterruptState {
    /// RFLAGS.IF.
    pub interrupts_enabled: bool,
    pub interruptibility: Interruptibility,
    /// The VM-entry interruption-information field already holds a valid event.
    pub event_queued: bool,
}

impl GuestInterruptState {
    pub fn from_raw(rflags: u64, interruptibility: u32, entry_interruption_info: u32) -> Self {
        GuestInterruptState {
            interrupts_enabled: rflags & (1 << 9) != 0,
            interruptibility: Interruptibility::from_bits_retain(interruptibility),
            event_queued: InterruptionInfo::from_raw(entry_interruption_info).is_valid(),
        }
    }

    /// Whether an external interrupt can be delivered at the next instruction boundary.
    pub fn accepts_interrupt(&self) -> bool {
        self.interrupts_enabled
            && !self
                .interruptibility
                .intersects(Interruptibility::BLOCKING_BY_STI | Interruptibility::BLOCKING_BY_MOV_SS)
    }
}

impl GuestInterruptState {
    /// Whether an NMI can be injected at the next entry (see the module's comment).
    pub fn accepts_nmi(&self) -> bool {
        !self.event_queued
            && !self.interruptibility.intersects(
                Interruptibility::BLOCKING_BY_STI
                    | Interruptibility::BLOCKING_BY_MOV_SS
                    | Interruptibility::BLOCKING_BY_NMI,
            )
    }
}

/// Decides what to do with a pending NMI: `Inject(2)`, or an NMI window.
pub fn plan_nmi(pending: bool, guest: &GuestInterruptState) -> Plan {
    match pending {
        false => Plan::Nothing,
        true if guest.accepts_nmi() => Plan::Inject(2),
        true => Plan::OpenWindow,
    }
}

/// The interruptibility state to enter with when an NMI whose delivery an exit
/// interrupted is re-injected: blocking by NMI clear, or the entry fails (SDM Vol. 3C
/// "Checks on Guest Non-Register State"; the delivery had not completed, so the guest
/// was never blocked). Anything else is entered as it is.
pub fn interruptibility_for_reinjection(reinject: &Reinject, interruptibility: u32) -> u32 {
    if reinject.info.kind() == Ok(InterruptionType::Nmi) {
        interruptibility & !Interruptibility::BLOCKING_BY_NMI.bits()
    } else {
        interruptibility
    }
}

/// After an exit that reports "NMI unblocking due to IRET" (the exit interrupted an IRET
/// that had already unblocked NMIs, and the guest will execute it again), blocking by
/// NMI must be set again, or an NMI could arrive before the IRET completes (SDM Vol. 3C
/// "Information for VM Exits Due to Vectored Events"; a #DF is the exception: its IRET
/// never runs again).
pub fn restore_nmi_blocking(unblocked_by_iret: bool, vector: Option<u8>, interruptibility: u32) -> u32 {
    if unblocked_by_iret && vector != Some(8) {
        interruptibility | Interruptibility::BLOCKING_BY_NMI.bits()
    } else {
        interruptibility
    }
}

/// Decides what to do with `pending`, the highest-priority interrupt the guest's
/// interrupt controller would deliver now.
pub fn plan(pending: Option<u8>, guest: &GuestInterruptState) -> Plan {
    match pending {
        None => Plan::Nothing,
        Some(_) if guest.event_queued => Plan::OpenWindow,
        Some(vector) if guest.accepts_interrupt() => Plan::Inject(vector),
        Some(_) => Plan::OpenWindow,
    }
}

/// An event whose delivery a VM exit interrupted (the IDT-vectoring information field),
/// turned into the VM-entry interruption information that delivers it again, with the
/// instruction length software events need (SDM Vol. 3C "Information for VM Exits That
/// Occur During Event Delivery"). `None` when no event was being delivered.
pub fn reinjection(idt_vectoring_info: u32, exit_instruction_length: u32) -> Option<Reinject> {
    let info = InterruptionInfo::from_raw(idt_vectoring_info);
    if !info.is_valid() {
        return None;
    }
    let kind = info.kind().ok()?;
    // Bits 30:12 are undefined in IDT-vectoring information and reserved in the entry
    // field: keep only vector, type, error-code flag and valid.
    let entry = InterruptionInfo::from_raw(idt_vectoring_info & 0x8000_0FFF);
    let software = matches!(
        kind,
        InterruptionType::SoftwareInterrupt
            | InterruptionType::PrivilegedSoftwareException
            | InterruptionType::SoftwareException
    );
    Some(Reinject { info: entry, instruction_length: software.then_some(exit_instruction_length) })
}

/// An event to deliver again at the next VM entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reinject {
    pub info: InterruptionInfo,
    /// For software interrupts and exceptions: the VM-entry instruction length.
    pub instruction_length: Option<u32>,
}

/// Whether exception `vector` is a fault (SDM Vol. 3A Table 6-1): the frame it pushes
/// carries RFLAGS.RF = 1, so that returning to the faulting instruction does not
/// raise an instruction breakpoint on it again (SDM Vol. 3A "Resume Flag"). Traps
/// (#DB as a trap, #BP, #OF), aborts (#DF, #MC), NMI and reserved vectors are not;
/// #DB is treated as a trap (the hypervisor never injects an instruction breakpoint).
pub const fn is_fault(vector: u8) -> bool {
    matches!(vector, 0 | 5 | 6 | 7 | 10..=14 | 16 | 17 | 19 | 20 | 21)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(rflags: u64, intr: u32, queued: bool) -> GuestInterruptState {
        GuestInterruptState::from_raw(rflags, intr, if queued { 0x8000_0306 } else { 0 })
    }

    #[test]
    fn an_nmi_is_injected_even_with_interrupts_off_but_waits_for_blocking_to_end() {
        assert_eq!(plan_nmi(false, &state(0x202, 0, false)), Plan::Nothing);
        assert_eq!(plan_nmi(true, &state(0x002, 0, false)), Plan::Inject(2), "IF does not mask NMIs");
        for blocked in [0b1000, 0b0010, 0b0001] {
            assert_eq!(plan_nmi(true, &state(0x202, blocked, false)), Plan::OpenWindow, "{blocked:#b}");
        }
        assert_eq!(plan_nmi(true, &state(0x202, 0, true)), Plan::OpenWindow, "a queued event goes first");
    }

    #[test]
    fn a_reinjected_nmi_enters_unblocked_and_an_interrupted_iret_blocks_again() {
        let nmi = Reinject { info: InterruptionInfo::nmi(), instruction_length: None };
        assert_eq!(interruptibility_for_reinjection(&nmi, 0b1001), 0b0001);
        let gp = Reinject { info: InterruptionInfo::hardware_exception(13, Some(0)), instruction_length: None };
        assert_eq!(interruptibility_for_reinjection(&gp, 0b1000), 0b1000);
        assert_eq!(restore_nmi_blocking(true, Some(14), 0), 0b1000);
        assert_eq!(restore_nmi_blocking(true, None, 0b10), 0b1010, "an EPT violation in IRET");
        assert_eq!(restore_nmi_blocking(true, Some(8), 0), 0, "#DF: the IRET does not run again");
        assert_eq!(restore_nmi_blocking(false, Some(14), 0), 0);
    }

    #[test]
    fn nothing_pending_means_no_injection_and_no_window() {
        assert_eq!(plan(None, &state(0x202, 0, false)), Plan::Nothing);
        assert_eq!(plan(None, &state(0x2, 0b1, true)), Plan::Nothing);
    }

    #[test]
    fn an_interruptible_guest_gets_the_interrupt_now() {
        assert_eq!(plan(Some(0x30), &state(0x202, 0, false)), Plan::Inject(0x30));
    }

    #[test]
    fn interrupts_disabled_waits_for_the_window() {
        assert_eq!(plan(Some(0x30), &state(0x002, 0, false)), Plan::OpenWindow);
    }

    #[test]
    fn sti_and_mov_ss_shadows_wait_for_the_window() {
        assert_eq!(plan(Some(0x30), &state(0x202, 0b01, false)), Plan::OpenWindow);
        assert_eq!(plan(Some(0x30), &state(0x202, 0b10, false)), Plan::OpenWindow);
    }

    #[test]
    fn nmi_or_smi_blocking_does_not_hold_back_external_interrupts() {
        assert_eq!(plan(Some(0x41), &state(0x202, 0b1100, false)), Plan::Inject(0x41));
    }

    #[test]
    fn a_queued_event_goes_first_and_the_interrupt_waits() {
        assert_eq!(plan(Some(0x30), &state(0x202, 0, true)), Plan::OpenWindow);
    }

    #[test]
    fn an_interrupted_external_interrupt_is_reinjected_unchanged() {
        // Vector 0x30, type 0 (external), valid; bit 12 (undefined here) is dropped.
        let r = reinjection(0x8000_1030, 3).unwrap();
        assert_eq!(r.info.raw(), 0x8000_0030);
        assert_eq!(r.instruction_length, None);
    }

    #[test]
    fn an_interrupted_page_fault_keeps_its_error_code_flag() {
        let r = reinjection(0x8000_0B0E, 0).unwrap();
        assert_eq!(r.info.raw(), 0x8000_0B0E);
        assert!(r.info.delivers_error_code());
    }

    #[test]
    fn an_interrupted_int_n_needs_its_instruction_length() {
        // INT 0x80: type 4 (software interrupt).
        let r = reinjection(0x8000_0480, 2).unwrap();
        assert_eq!(r.instruction_length, Some(2));
        // INT3: type 6 (software exception).
        assert_eq!(reinjection(0x8000_0603, 1).unwrap().instruction_length, Some(1));
    }

    #[test]
    fn no_event_in_delivery_means_nothing_to_reinject() {
        assert_eq!(reinjection(0x0000_0030, 0), None);
        // Type 1 is reserved: not re-injected (the caller reports it).
        assert_eq!(reinjection(0x8000_0130, 0), None);
    }

    #[test]
    fn faults_are_the_vectors_table_6_1_calls_faults() {
        let faults: Vec<u8> = (0..32).filter(|&v| is_fault(v)).collect();
        assert_eq!(faults, vec![0, 5, 6, 7, 10, 11, 12, 13, 14, 16, 17, 19, 20, 21]);
    }
}
