//! Invalidating what the CPU caches about a guest's address translation.
//!
//! Two caches matter (SDM Vol. 3C "Caching Translation Information"): guest-physical
//! mappings, tagged by the EPTP (INVEPT), and combined linear mappings, tagged by VPID
//! and EPTP (INVVPID). They go stale when
//! - a vCPU arrives on a CPU where another vCPU once had its VPID (VPIDs are reused),
//!   or where this vCPU ran before while the guest changed its page tables elsewhere
//!   (a guest's INVLPG only invalidates on the CPU it ran on);
//! - a new domain's EPT root lands on a frame an old domain's root used;
//! - the domain's EPT changes while it runs.
//!
//! The first two are handled by [`flush_on_arrival`], which the scheduler calls whenever
//! a vCPU starts running on a CPU other than the one it last ran on (or for the first
//! time). EPT changes bump the domain's EPT generation; each vCPU compares it before
//! entry and calls [`flush_ept`] when it moved on.

use super::instr::{InveptType, InvvpidType, invept, invvpid};

/// Flushes the translations tagged with `eptp` and `vpid` on this CPU, with the
/// narrowest INVEPT/INVVPID type the CPU supports.
pub fn flush_on_arrival(eptp: u64, vpid: u16) {
    flush_ept(eptp);
    let Some(caps) = super::capabilities() else { return };
    if !caps.invvpid() {
        return;
    }
    let kind = if caps.invvpid_single() { InvvpidType::SingleContext } else { InvvpidType::AllContexts };
    // SAFETY: VMX root operation on this CPU (the scheduler runs only there), and the
    // type was checked against IA32_VMX_EPT_VPID_CAP.
    if let Err(e) = unsafe { invvpid(kind, vpid, 0) } {
        log::error!("INVVPID {kind:?} for vpid {vpid} failed: {e:?}");
    }
}

/// Flushes the guest-physical (and combined) translations derived from `eptp` on this CPU.
pub fn flush_ept(eptp: u64) {
    let Some(caps) = super::capabilities() else { return };
    if !caps.invept() {
        return;
    }
    let kind = if caps.invept_single() { InveptType::SingleContext } else { InveptType::AllContexts };
    // SAFETY: VMX root operation; the type was checked against IA32_VMX_EPT_VPID_CAP.
    if let Err(e) = unsafe { invept(kind, eptp) } {
        log::error!("INVEPT {kind:?} for eptp {eptp:#x} failed: {e:?}");
    }
}
