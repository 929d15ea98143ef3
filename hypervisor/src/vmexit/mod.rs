//! Handling VM exits. `handle` reads the exit information from the current VMCS and
//! dispatches on the exit reason; each handler returns what happens next, and RIP is
//! advanced in exactly one place (by the VM-exit instruction length, never a guess).

use crate::domain::vcpu::Vcpu;
use crate::domain::{Domain, DomainState};
use crate::vmx::exit::{
    CrAccess, CrAccessType, EptViolation, ExitReason, Gpr, InterruptionInfo, IoQualification, RawExitReason,
};
use crate::vmx::fields::{Field32, FieldNatural, ReadOnly32, ReadOnly64, ReadOnlyNatural};
use crate::vmx::vmcs::Current;

pub mod apic;
pub mod cpuid;
pub mod debug;
pub mod events;
pub mod hypercall;
pub mod io;
pub mod mmio;
pub mod msr;

/// What to do after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Skip the exiting instruction and resume.
    Advance,
    /// Skip this many bytes and resume: an instruction the hypervisor decoded and
    /// emulated itself (EPT violations report no instruction length).
    Skip(u8),
    /// Resume at the same RIP (event injected, or nothing to skip).
    Resume,
    /// Skip the exiting instruction (HLT) and stop running this vCPU until an
    /// interrupt is deliverable to it.
    Block,
    /// Give the CPU to the next vCPU (preemption timer).
    Yield,
    /// The domain has ended (exited or crashed); never run it again.
    Ended,
}

/// Injects a hardware exception at the next VM entry. A fault's frame gets RFLAGS.RF
/// set, as the CPU's own faults push it (`vmx::inject::is_fault`; KVM does the same).
pub fn inject_exception(vmcs: &Current, vector: u8, error_code: Option<u32>) {
    if crate::vmx::inject::is_fault(vector) {
        let rflags = vmcs.read_natural(FieldNatural::GuestRflags);
        vmcs.write_natural(FieldNatural::GuestRflags, rflags | RFLAGS_RF);
    }
    let info = InterruptionInfo::hardware_exception(vector, error_code);
    vmcs.write32(Field32::EntryInterruptionInfo, info.raw());
    if let Some(code) = error_code {
        vmcs.write32(Field32::EntryExceptionErrorCode, code);
    }
}

pub const UD: u8 = 6;
pub const GP: u8 = 13;
pub const MC: u8 = crate::arch::exceptions::MACHINE_CHECK;
/// RFLAGS.RF, the resume flag.
const RFLAGS_RF: u64 = 1 << 16;

/// Crashes the domain with a report: why, then the guest state.
pub fn crash(vmcs: &Current, domain: &Domain, vcpu: &Vcpu, why: core::fmt::Arguments) -> Next {
    if domain.finish(DomainState::Crashed, None) {
        log::error!("domain {} crashed: {why}", domain.name);
        dump_state(vmcs, domain, vcpu);
    }
    Next::Ended
}

fn dump_state(vmcs: &Current, domain: &Domain, vcpu: &Vcpu) {
    let r = &vcpu.regs;
    log::error!(
        "  {} vcpu{}: rip={:#018x} rsp={:#018x} rflags={:#x}",
        domain.name,
        vcpu.id,
        vmcs.read_natural(FieldNatural::GuestRip),
        vmcs.read_natural(FieldNatural::GuestRsp),
        vmcs.read_natural(FieldNatural::GuestRflags)
    );
    log::error!(
        "  cr0={:#x} cr3={:#x} cr4={:#x} cr2={:#x}",
        vmcs.read_natural(FieldNatural::GuestCr0),
        vmcs.read_natural(FieldNatural::GuestCr3),
        vmcs.read_natural(FieldNatural::GuestCr4),
        // The CPU holds the guest's CR2 while its slice runs (see vmx::entry).
        crate::vmx::entry::guest_cr2()
    );
    log::error!("  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}", r.rax, r.rbx, r.rcx, r.rdx);
    log::error!("  rsi={:#018x} rdi={:#018x} rbp={:#018x} r8 ={:#018x}", r.rsi, r.rdi, r.rbp, r.r8);
    log::error!("  r9 ={:#018x} r10={:#018x} r11={:#018x} r12={:#018x}", r.r9, r.r10, r.r11, r.r12);
    log::error!("  r13={:#018x} r14={:#018x} r15={:#018x}", r.r13, r.r14, r.r15);
}

/// The exit reason of the exit that just happened.
#[inline]
pub fn exit_reason(vmcs: &Current) -> RawExitReason {
    RawExitReason(vmcs.read_ro32(ReadOnly32::ExitReason))
}

/// The fast path: exits whose handling cannot change what the vCPU's next entry must
/// deliver (its local APIC, its domain's devices and their timers, its mailbox), so
/// the run loop may re-enter without its per-entry work (`sched::runloop`). `None`
/// means "not one of those": call [`handle`]. Some(next) has the same meaning as
/// [`handle`]'s result, RIP already advanced.
///
/// Which exits qualify: CPUID; RDMSR (reads change no model state: the APIC's timer
/// count is computed, not advanced); VMCALL of the calls [`hypercall::is_fast`] lists;
/// a read of the local APIC's page (`mmio::handle_fast`). None of them happens while an
/// event is being delivered (the MMIO read checks), so there is no IDT-vectoring
/// information to re-inject either. A timer a read finds expired is latched in the
/// local APIC; the preemption timer, armed for it, ends the next run at once and the
/// full path injects it.
#[inline]
pub fn handle_fast(vmcs: &Current, domain: &Domain, vcpu: &mut Vcpu, raw: RawExitReason) -> Option<Next> {
    // The entry-failure bit (31) and the others keep the raw value away from these.
    let next = match raw.0 {
        r if r == ExitReason::Cpuid as u32 => cpuid::handle(vmcs, domain, vcpu),
        r if r == ExitReason::Rdmsr as u32 => msr::rdmsr(vmcs, vcpu),
        r if r == ExitReason::Vmcall as u32 && hypercall::is_fast(vcpu.regs.rax) => {
            hypercall::handle(vmcs, domain, vcpu)
        }
        r if r == ExitReason::EptViolation as u32 => mmio::handle_fast(vmcs, domain, vcpu)?,
        _ => return None,
    };
    if let Some(c) = vcpu.exit_counts.get_mut(raw.0 as usize) {
        *c += 1;
    }
    Some(finish(vmcs, next))
}

/// Handles the exit that just happened on `vcpu` (`raw` is [`exit_reason`]).
pub fn handle(vmcs: &Current, domain: &Domain, vcpu: &mut Vcpu, raw: RawExitReason) -> Next {
    let reason = match raw.basic() {
        Ok(r) => r,
        Err(n) => return crash(vmcs, domain, vcpu, format_args!("unknown VM exit reason {n}")),
    };
    if let Some(c) = vcpu.exit_counts.get_mut(reason as usize) {
        *c += 1;
    }
    if raw.entry_failure() {
        return crash(
            vmcs,
            domain,
            vcpu,
            format_args!("VM entry failed: {} (exit reason {})", reason.name(), reason as u16),
        );
    }
    events::reinject_interrupted(vmcs);
    let qualification = vmcs.read_ro_natural(ReadOnlyNatural::ExitQualification);
    let next = match reason {
        ExitReason::Cpuid => cpuid::handle(vmcs, domain, vcpu),
        ExitReason::IoInstruction => match IoQualification::from_raw(qualification) {
            Ok(q) => io::handle(domain, vcpu, q),
            Err(_) => crash(vmcs, domain, vcpu, format_args!("undecodable I/O exit qualification {qualification:#x}")),
        },
        ExitReason::Rdmsr => msr::rdmsr(vmcs, vcpu),
        ExitReason::Wrmsr => msr::wrmsr(vmcs, domain, vcpu),
        ExitReason::Hlt => {
            let rflags = vmcs.read_natural(FieldNatural::GuestRflags);
            vcpu.halted_if_clear = false;
            if vcpu.nmi_pending || rflags & (1 << 9) != 0 && vcpu.lapic.pending(crate::arch::timer::now_ns()).is_some()
            {
                // An NMI or a deliverable interrupt waits: HLT ends at once.
                Next::Advance
            } else if rflags & (1 << 9) == 0 && domain.vcpus.len() > 1 {
                // Only INIT from a sibling can wake it (how operating systems park CPUs).
                vcpu.halted_if_clear = true;
                Next::Block
            } else if rflags & (1 << 9) == 0 {
                // HLT with interrupts off and no interrupt sources yet: nothing can ever
                // wake it. Xen calls this a dead vCPU; we end the domain and say so.
                if domain.finish(DomainState::ShutDown, None) {
                    log::warn!("domain {} halted with interrupts disabled; shutting it down", domain.name);
                }
                Next::Ended
            } else {
                Next::Block
            }
        }
        ExitReason::Vmcall => hypercall::handle(vmcs, domain, vcpu),
        ExitReason::CrAccess => match CrAccess::from_raw(qualification) {
            Ok(cr) => control_register(vmcs, domain, vcpu, cr),
            Err(_) => crash(vmcs, domain, vcpu, format_args!("undecodable CR-access qualification {qualification:#x}")),
        },
        ExitReason::Xsetbv => xsetbv(vmcs, domain, vcpu),
        ExitReason::DrAccess => debug::first_access(vmcs, vcpu),
        // The PMU is hidden (CPU policy) and its counters are the host's: #GP, as a CPU
        // without that counter answers.
        ExitReason::Rdpmc => {
            inject_exception(vmcs, GP, Some(0));
            Next::Resume
        }
        // MONITOR/MWAIT exit so a guest cannot park the physical CPU in a deep C-state;
        // treated as NOPs (as KVM does): MWAIT then returns at once, which is allowed.
        ExitReason::Monitor | ExitReason::Mwait => Next::Advance,
        ExitReason::Invd | ExitReason::Wbinvd => {
            // Guest RAM is write-back and coherent; there is nothing a guest's cache flush
            // must achieve that would justify stalling the host. (INVD without write-back
            // would lose data, so it is never executed for real.)
            Next::Advance
        }
        r if r.is_vmx_instruction() => {
            inject_exception(vmcs, UD, None);
            Next::Resume
        }
        ExitReason::TripleFault => crash(vmcs, domain, vcpu, format_args!("triple fault")),
        ExitReason::InvalidGuestState => crash(vmcs, domain, vcpu, format_args!("invalid guest state")),
        ExitReason::EptViolation => {
            let gpa = vmcs.read_ro64(ReadOnly64::GuestPhysicalAddress);
            let v = EptViolation::from_raw(qualification);
            if v.nmi_unblocking {
                events::restore_nmi_blocking(vmcs, None);
            }
            mmio::handle(vmcs, domain, vcpu, gpa, v)
        }
        ExitReason::EptMisconfig => {
            let gpa = vmcs.read_ro64(ReadOnly64::GuestPhysicalAddress);
            crash(vmcs, domain, vcpu, format_args!("EPT misconfiguration at {gpa:#x} (a hypervisor bug)"))
        }
        ExitReason::ExternalInterrupt => {
            // "Acknowledge interrupt on exit" took the vector from the local APIC: complete
            // it (EOI). The scheduler's kick and the CPU's own timer mean "look at the run
            // queue again"; nothing else is routed to the host yet.
            let vector = InterruptionInfo::from_raw(vmcs.read_ro32(ReadOnly32::ExitInterruptionInfo)).vector();
            crate::arch::apic::eoi();
            if crate::arch::ioapic::DEVICE_VECTORS.contains(&vector) {
                // A device Domain0 owns: pass it on, and let the scheduler look again
                // (Domain0 waking with BOOST may preempt whoever runs here).
                crate::arch::ioapic::note(vector);
                crate::domain::passthrough::deliver_pending();
                Next::Yield
            } else if vector == crate::arch::apic::KICK_VECTOR || vector == crate::arch::apic::TIMER_VECTOR {
                Next::Yield
            } else {
                Next::Resume
            }
        }
        // The timer ends the slice, or was set early for the vCPU's own APIC timer,
        // which `events::before_entry` then delivers.
        ExitReason::PreemptionTimer if crate::arch::cpu::rdtsc() >= vcpu.slice_end_tsc => Next::Yield,
        ExitReason::PreemptionTimer => Next::Resume,
        // The guest became interruptible (or able to take an NMI):
        // `events::before_entry` injects now.
        ExitReason::InterruptWindow | ExitReason::NmiWindow => Next::Resume,
        ExitReason::ExceptionOrNmi => {
            let info = InterruptionInfo::from_raw(vmcs.read_ro32(ReadOnly32::ExitInterruptionInfo));
            if crate::power::stopping() {
                crate::power::park_this_cpu();
            }
            if info.vector() == MC {
                // The exception bitmap takes only #MC: the host's hardware error, which
                // the guest must not see or handle. Whatever the guest was using may be
                // corrupted: it is crashed with the banks' story; the host goes on.
                let (banks, status) = crate::arch::nmi::machine_check_summary();
                crash(
                    vmcs,
                    domain,
                    vcpu,
                    format_args!("machine check while it ran (MCG_STATUS {status:#x}, valid banks {banks:#x?})"),
                )
            } else {
                // An NMI (NMI exiting): the host's, noted for the run loop's report; the
                // CPU blocks NMIs after such an exit until an IRET.
                crate::arch::nmi::note();
                crate::arch::nmi::unblock();
                Next::Resume
            }
        }
        other => crash(vmcs, domain, vcpu, format_args!("unhandled VM exit {} ({})", other.name(), other as u16)),
    };
    finish(vmcs, next)
}

/// Moves RIP where `next` says; the result is what the run loop acts on.
#[inline]
fn finish(vmcs: &Current, next: Next) -> Next {
    match next {
        Next::Advance => {
            skip(vmcs, vmcs.read_ro32(ReadOnly32::ExitInstructionLength));
            Next::Advance
        }
        Next::Skip(len) => {
            skip(vmcs, u32::from(len));
            Next::Advance
        }
        // HLT is complete when the vCPU wakes: the interrupt handler must return to the
        // instruction after it, as on hardware.
        Next::Block => {
            skip(vmcs, vmcs.read_ro32(ReadOnly32::ExitInstructionLength));
            Next::Block
        }
        other => other,
    }
}

/// Moves RIP past an instruction the hypervisor completed for the guest.
#[inline]
fn skip(vmcs: &Current, len: u32) {
    let rip = vmcs.read_natural(FieldNatural::GuestRip);
    let mut next = rip.wrapping_add(u64::from(len));
    // Outside 64-bit code, EIP wraps at 4 GiB (and IP at 64 KiB, which real-mode code
    // never relies on across an emulated instruction). Only a result beyond 4 GiB can
    // need it, which spares most exits the CS read.
    if next >> 32 != 0 && vmcs.read32(Field32::GuestCsAccessRights) & (1 << 13) == 0 {
        next &= 0xFFFF_FFFF;
    }
    vmcs.write_natural(FieldNatural::GuestRip, next);
    // Skipping an instruction ends STI/MOV SS blocking (SDM Vol. 3C "Interruptibility State").
    let intr = vmcs.read32(Field32::GuestInterruptibilityState);
    if intr & 0b11 != 0 {
        vmcs.write32(Field32::GuestInterruptibilityState, intr & !0b11);
    }
    // Under RFLAGS.TF the completed instruction earns its single-step trap.
    let rflags = vmcs.read_natural(FieldNatural::GuestRflags);
    if rflags & crate::vmx::pending_debug::RFLAGS_TF != 0 {
        let debugctl = vmcs.read64(crate::vmx::fields::Field64::GuestIa32Debugctl);
        let pending = vmcs.read_natural(FieldNatural::GuestPendingDebugExceptions);
        let updated = crate::vmx::pending_debug::after_instruction(rflags, debugctl, pending);
        vmcs.write_natural(FieldNatural::GuestPendingDebugExceptions, updated);
    }
}

/// How the guest translates linear addresses now (control registers as the CPU sees
/// them, and the PDPTEs the CPU holds for PAE paging), for walking its page tables.
fn guest_paging_context(vmcs: &Current) -> crate::mm::guest_paging::Context {
    let cr0 = vmcs.read_natural(FieldNatural::GuestCr0);
    let cr4 = vmcs.read_natural(FieldNatural::GuestCr4);
    let efer = vmcs.read64(crate::vmx::fields::Field64::GuestIa32Efer);
    // The PDPTEs matter only under PAE paging (paging on, CR4.PAE, not IA-32e mode).
    let pae = cr0 & (1 << 31) != 0 && cr4 & (1 << 5) != 0 && efer & (1 << 10) == 0;
    let pdptes = if pae {
        [
            vmcs.read64(crate::vmx::fields::Field64::GuestPdpte0),
            vmcs.read64(crate::vmx::fields::Field64::GuestPdpte1),
            vmcs.read64(crate::vmx::fields::Field64::GuestPdpte2),
            vmcs.read64(crate::vmx::fields::Field64::GuestPdpte3),
        ]
    } else {
        [0; 4]
    };
    crate::mm::guest_paging::Context::from_registers(cr0, vmcs.read_natural(FieldNatural::GuestCr3), cr4, efer, pdptes)
}

/// The saved guest register `g`; `None` for RSP, which lives in the VMCS.
fn gpr(vcpu: &mut Vcpu, g: Gpr) -> Option<&mut u64> {
    let r = &mut vcpu.regs;
    Some(match g {
        Gpr::Rax => &mut r.rax,
        Gpr::Rcx => &mut r.rcx,
        Gpr::Rdx => &mut r.rdx,
        Gpr::Rbx => &mut r.rbx,
        Gpr::Rsp => return None,
        Gpr::Rbp => &mut r.rbp,
        Gpr::Rsi => &mut r.rsi,
        Gpr::Rdi => &mut r.rdi,
        Gpr::R8 => &mut r.r8,
        Gpr::R9 => &mut r.r9,
        Gpr::R10 => &mut r.r10,
        Gpr::R11 => &mut r.r11,
        Gpr::R12 => &mut r.r12,
        Gpr::R13 => &mut r.r13,
        Gpr::R14 => &mut r.r14,
        Gpr::R15 => &mut r.r15,
    })
}

fn read_gpr(vmcs: &Current, vcpu: &mut Vcpu, g: Gpr) -> u64 {
    match gpr(vcpu, g) {
        Some(r) => *r,
        None => vmcs.read_natural(FieldNatural::GuestRsp),
    }
}

fn write_gpr(vmcs: &Current, vcpu: &mut Vcpu, g: Gpr, value: u64) {
    match gpr(vcpu, g) {
        Some(r) => *r = value,
        None => vmcs.write_natural(FieldNatural::GuestRsp, value),
    }
}

/// MOV to/from CR0/CR4 of bits we own (guest/host mask), CLTS, LMSW.
fn control_register(vmcs: &Current, domain: &Domain, vcpu: &mut Vcpu, cr: CrAccess) -> Next {
    let _ = domain;
    match cr.access {
        CrAccessType::MovToCr { gpr } => {
            let value = read_gpr(vmcs, vcpu, gpr);
            // What the CPU would refuse with #GP (SDM Vol. 2B "MOV—Move to/from Control
            // Registers"); written to the VMCS, it would fail the next VM entry instead.
            if cr.cr <= 4 && !cr_write_allowed(vmcs, cr.cr, value) {
                inject_exception(vmcs, GP, Some(0));
                return Next::Resume;
            }
            match cr.cr {
                0 => {
                    vcpu.cr.cr0_shadow = value;
                    vmcs.write_natural(FieldNatural::Cr0ReadShadow, value);
                    let actual = value | vcpu.cr.cr0_mask;
                    vmcs.write_natural(FieldNatural::GuestCr0, actual);
                }
                4 => {
                    vcpu.cr.cr4_shadow = value;
                    vmcs.write_natural(FieldNatural::Cr4ReadShadow, value);
                    vmcs.write_natural(FieldNatural::GuestCr4, value | vcpu.cr.cr4_mask);
                }
                // CR8 is the task-priority register's class (TPR bits 7:4); bits 63:4
                // are reserved (SDM Vol. 3A "Control Registers": #GP).
                8 if value > 0xF => {
                    inject_exception(vmcs, GP, Some(0));
                    return Next::Resume;
                }
                8 => vcpu.lapic.set_tpr((value as u8) << 4),
                _ => {
                    inject_exception(vmcs, UD, None);
                    return Next::Resume;
                }
            }
            Next::Advance
        }
        CrAccessType::MovFromCr { gpr } => {
            // With EPT and no CR3-store exiting, only CR8 stores exit.
            let value = if cr.cr == 8 { u64::from(vcpu.lapic.tpr() >> 4) } else { 0 };
            write_gpr(vmcs, vcpu, gpr, value);
            Next::Advance
        }
        CrAccessType::Clts => {
            vcpu.cr.cr0_shadow &= !(1 << 3);
            vmcs.write_natural(FieldNatural::Cr0ReadShadow, vcpu.cr.cr0_shadow);
            let cr0 = vmcs.read_natural(FieldNatural::GuestCr0);
            vmcs.write_natural(FieldNatural::GuestCr0, cr0 & !(1 << 3));
            Next::Advance
        }
        CrAccessType::Lmsw { source_data, .. } => {
            // LMSW changes PE, MP, EM, TS only, and cannot clear PE.
            let low = u64::from(source_data) & 0xF;
            let shadow = (vcpu.cr.cr0_shadow & !0xE) | low | (vcpu.cr.cr0_shadow & 1);
            vcpu.cr.cr0_shadow = shadow;
            vmcs.write_natural(FieldNatural::Cr0ReadShadow, shadow);
            vmcs.write_natural(FieldNatural::GuestCr0, shadow | vcpu.cr.cr0_mask);
            Next::Advance
        }
    }
}

/// Whether MOV to CR0/CR4 of `value` is valid now: no reserved bit (the CPU's
/// IA32_VMX_CR*_FIXED1 says which bits exist), not PG without PE or NW without CD, and in
/// IA-32e mode not leaving paging or PAE, nor changing LA57.
fn cr_write_allowed(vmcs: &Current, cr: u8, value: u64) -> bool {
    let lma = vmcs.read64(crate::vmx::fields::Field64::GuestIa32Efer) & (1 << 10) != 0;
    // The capabilities read at bring-up (IA32_VMX_CR0_FIXED1 / IA32_VMX_CR4_FIXED1).
    let fixed1 = crate::vmx::capabilities()
        .map_or(u64::MAX, |c| if cr == 0 { c.cr0_fixed().fixed1 } else { c.cr4_fixed().fixed1 });
    if value & !fixed1 != 0 {
        return false;
    }
    match cr {
        0 => {
            let (pe, pg, nw, cd) =
                (value & 1 != 0, value & (1 << 31) != 0, value & (1 << 29) != 0, value & (1 << 30) != 0);
            !(pg && !pe) && !(nw && !cd) && !(lma && !pg)
        }
        4 => {
            let old = vmcs.read_natural(FieldNatural::GuestCr4);
            !(lma && (value & (1 << 5) == 0 || (value ^ old) & (1 << 12) != 0))
        }
        _ => true,
    }
}

/// XSETBV: the CPU's rules (`xstate::check_xsetbv`: only XCR0, at CPL 0, x87 always,
/// AVX with SSE, AVX-512, MPX and AMX as whole groups) against the components the
/// domain's CPU policy shows in CPUID.(0DH,0), which the host's XCR0 covers; anything
/// else is #GP in the guest, never a fault of the host's own XSETBV.
fn xsetbv(vmcs: &Current, domain: &Domain, vcpu: &mut Vcpu) -> Next {
    let index = vcpu.regs.rcx as u32;
    let value = (vcpu.regs.rdx << 32) | (vcpu.regs.rax & 0xFFFF_FFFF);
    let cpl = ((vmcs.read32(Field32::GuestSsAccessRights) >> 5) & 3) as u8;
    let host = crate::arch::cpu::cpuid(0xD, 0);
    let topo = crate::domain::cpu_policy::Topology { apic_id: vcpu.id, vcpus: domain.vcpus.len() as u32 };
    let [eax, _, _, edx] = crate::domain::cpu_policy::filter(0xD, 0, [host.eax, host.ebx, host.ecx, host.edx], topo);
    let allowed = ((u64::from(edx) << 32) | u64::from(eax)) & crate::arch::fpu::host_xcr0();
    if let Err(e) = crate::xstate::check_xsetbv(index, value, cpl, allowed) {
        log::debug!("domain {}: XSETBV {index:#x} <- {value:#x} refused: {e:?}", domain.name);
        inject_exception(vmcs, GP, Some(0));
        return Next::Resume;
    }
    vcpu.xcr0 = value;
    crate::arch::fpu::load_xcr0(value);
    Next::Advance
}
