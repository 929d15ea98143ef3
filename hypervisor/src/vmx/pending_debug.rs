//! The guest's pending debug exceptions (the VMCS field, SDM Vol. 3C "Guest
//! Non-Register State"): debug traps the guest has earned but not yet taken. The CPU
//! fills the field at a VM exit where a trap is pending (a data breakpoint or a
//! single-step deferred by MOV SS), and delivers it after the next VM entry, before the
//! guest's next instruction, unless that entry injects an event, which discards it (SDM
//! Vol. 3C "Delivery of Pending Debug Exceptions after VM Entry").
//!
//! Two things are the hypervisor's to do:
//! - an instruction it completes for the guest (CPUID, I/O, MSRs, MMIO, HLT...) under
//!   RFLAGS.TF earns the single-step trap the CPU would have raised after it: BS is set
//!   ([`after_instruction`]). KVM does the same; that some CPUs (Bochs among them) set it
//!   at the exit already makes this idempotent there, not unnecessary elsewhere;
//! - an entry that delivers pending debug exceptions must not inject an interrupt or an
//!   NMI at the same time, or the trap is lost ([`holds_back_injection`]); the trap has
//!   priority over both anyway (SDM "Priority Among Concurrent Events": traps on the
//!   previous instruction come before NMIs and interrupts), so the interrupt waits for its
//!   window. A single-step over STI; HLT is the case that showed it: the trap after HLT
//!   came after the timer's interrupt, or not at all (tests/tests/compat.rs compares with
//!   the same CPU model without a hypervisor).
//!
//! Pure logic, tested on the host.

use super::exit::Interruptibility;

/// Bits 3:0: data or I/O breakpoints B0-B3 matched.
pub const B0_B3: u64 = 0xF;
/// Bit 12: at least one matched breakpoint was enabled in DR7.
pub const ENABLED_BREAKPOINT: u64 = 1 << 12;
/// Bit 14: a single-step trap (BS).
pub const BS: u64 = 1 << 14;
/// RFLAGS.TF.
pub const RFLAGS_TF: u64 = 1 << 8;
/// IA32_DEBUGCTL.BTF: TF steps branches, not instructions.
pub const DEBUGCTL_BTF: u64 = 1 << 1;

/// The field after the hypervisor completed an instruction for the guest: with TF set
/// (and BTF clear), the single-step trap that follows it.
pub fn after_instruction(rflags: u64, debugctl: u64, pending: u64) -> u64 {
    if rflags & RFLAGS_TF != 0 && debugctl & DEBUGCTL_BTF == 0 { pending | BS } else { pending }
}

/// Whether the next entry delivers pending debug exceptions, so that it must not inject
/// an interrupt or NMI. Under MOV SS blocking they stay pending past the entry (the
/// next instruction takes them), and an injection may go ahead; but the planner never
/// injects interrupts or NMIs there anyway.
pub fn holds_back_injection(pending: u64, interruptibility: u32) -> bool {
    pending & (BS | ENABLED_BREAKPOINT) != 0
        && !Interruptibility::from_bits_retain(interruptibility).contains(Interruptibility::BLOCKING_BY_MOV_SS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instruction_completed_under_tf_earns_its_single_step_trap() {
        assert_eq!(after_instruction(0x302, 0, 0), BS);
        assert_eq!(after_instruction(0x202, 0, 0), 0, "no TF, no trap");
        assert_eq!(after_instruction(0x302, DEBUGCTL_BTF, 0), 0, "BTF: only branches step");
        assert_eq!(after_instruction(0x302, 0, ENABLED_BREAKPOINT | 1), ENABLED_BREAKPOINT | 1 | BS, "kept with B0");
    }

    #[test]
    fn pending_traps_hold_back_an_injection_unless_mov_ss_defers_them() {
        assert!(holds_back_injection(BS, 0));
        assert!(holds_back_injection(ENABLED_BREAKPOINT | 1, 0b01), "STI blocking does not defer #DB");
        assert!(!holds_back_injection(BS, 0b10), "MOV SS blocking defers them past the entry");
        assert!(!holds_back_injection(0, 0));
        assert!(!holds_back_injection(1, 0), "B0 without an enabled breakpoint is not a valid pending #DB");
    }
}
