//! Scheduling vCPUs on CPUs. Until the credit scheduler (sched/credit) exists this is a
//! plain round robin: each vCPU is placed on one CPU when its domain is created and
//! never migrates (so its VMCS never needs to move); each CPU cycles through its own
//! vCPUs, giving each a slice bounded by the VMX preemption timer.
//!
//! The loop is shaped for the scheduler to plug in: `pick` chooses, `run_slice` runs
//! until the vCPU blocks, yields or ends, and the outcome goes back to `pick`.

use crate::domain::vcpu::{Vcpu, VcpuState};
use crate::domain::{self, Domain};
use crate::percpu::{self, MAX_CPUS};
use crate::power::{self, StopReason};
use crate::vmexit::{self, Next};
use crate::vmx::entry::{self, Entry};
use crate::vmx::exit::vm_instruction_error_str;
use crate::vmx::fields::{Field32, ReadOnly32};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use spin::Mutex;

/// One vCPU placed on a CPU.
#[derive(Clone)]
pub struct Placement {
    pub domain: Arc<Domain>,
    pub vcpu: Arc<Mutex<Vcpu>>,
}

static RUN_QUEUES: [Mutex<Vec<Placement>>; MAX_CPUS] = [const { Mutex::new(Vec::new()) }; MAX_CPUS];
static ONLINE_CPUS: AtomicU32 = AtomicU32::new(1);
static NEXT_CPU: AtomicU32 = AtomicU32::new(0);
static UNTIL_GUESTS_EXIT: AtomicBool = AtomicBool::new(false);
/// Preemption-timer ticks in one time slice (0: no preemption timer).
static SLICE_TICKS: AtomicU64 = AtomicU64::new(0);

/// The default time slice, as Xen's credit scheduler's default (30 ms).
pub const SLICE_MS: u64 = 30;

pub fn configure(online_cpus: u32, until_guests_exit: bool, tsc_hz: u64) {
    ONLINE_CPUS.store(online_cpus.max(1), Ordering::Relaxed);
    UNTIL_GUESTS_EXIT.store(until_guests_exit, Ordering::Relaxed);
    if let Some(caps) = crate::vmx::capabilities()
        && caps.has_preemption_timer()
    {
        // The timer counts down once every 2^rate TSC ticks (SDM Vol. 3C "VMX-Preemption Timer").
        let rate = caps.misc().preemption_timer_rate();
        let ticks = (tsc_hz / 1000 * SLICE_MS) >> rate;
        SLICE_TICKS.store(ticks.min(u64::from(u32::MAX)), Ordering::Relaxed);
    }
}

/// Places every vCPU of `domain` on a CPU, round robin over the online CPUs.
pub fn place(domain: &Arc<Domain>) {
    let cpus = ONLINE_CPUS.load(Ordering::Relaxed);
    for vcpu in &domain.vcpus {
        let cpu = NEXT_CPU.fetch_add(1, Ordering::Relaxed) % cpus;
        log::info!("domain {}: vcpu{} runs on cpu{cpu}", domain.name, vcpu.lock().id);
        RUN_QUEUES[cpu as usize].lock().push(Placement { domain: domain.clone(), vcpu: vcpu.clone() });
    }
}

/// The next runnable vCPU of this CPU after position `from`.
fn pick(cpu: usize, from: &mut usize) -> Option<Placement> {
    let q = RUN_QUEUES[cpu].lock();
    let n = q.len();
    for i in 0..n {
        let idx = (*from + i) % n;
        let p = &q[idx];
        if p.domain.state().is_final() {
            continue;
        }
        let mut v = p.vcpu.lock();
        if v.state == VcpuState::Blocked {
            // A halted vCPU wakes when its local APIC has an interrupt to deliver.
            let now = crate::arch::timer::now_ns();
            v.lapic.tick(now);
            if v.lapic.pending(now).is_some() {
                v.state = VcpuState::Runnable;
            }
        }
        if v.state == VcpuState::Runnable {
            *from = idx + 1;
            return Some(p.clone());
        }
    }
    None
}

/// Each CPU's life after bring-up.
pub fn run_loop() -> ! {
    let cpu = percpu::current_index() as usize;
    let mut cursor = 0;
    let mut reported = false;
    loop {
        if power::stopping() {
            power::park_this_cpu();
        }
        match pick(cpu, &mut cursor) {
            Some(p) => run_slice(cpu as u32, &p),
            None => {
                if cpu == 0 && !reported && domain::all_ended() {
                    reported = true;
                    report();
                    if UNTIL_GUESTS_EXIT.load(Ordering::Relaxed) {
                        power::stop_machine(StopReason::Done);
                    }
                }
                core::hint::spin_loop();
            }
        }
    }
}

fn run_slice(cpu: u32, p: &Placement) {
    let mut vcpu = p.vcpu.lock();
    // SAFETY: a vCPU only ever runs on the CPU it was placed on, so its VMCS is never
    // current on another CPU.
    let current = match unsafe { vcpu.vmcs.load() } {
        Ok(c) => c,
        Err(e) => {
            log::error!("domain {}: VMPTRLD failed ({e:?}); crashing it", p.domain.name);
            p.domain.finish(domain::DomainState::Crashed, None);
            return;
        }
    };
    if vcpu.host_cpu != Some(cpu) {
        crate::vmx::host::write(&current);
        // New to this CPU: whatever it caches under this VPID or EPTP is someone
        // else's or out of date (see vmx::tlb).
        crate::vmx::tlb::flush_on_arrival(p.domain.eptp, vcpu.vpid.get());
        vcpu.host_cpu = Some(cpu);
    }
    let slice = SLICE_TICKS.load(Ordering::Relaxed);
    vcpu.slice_end_tsc =
        if slice != 0 { crate::arch::cpu::rdtsc().saturating_add(slice << preemption_rate()) } else { u64::MAX };
    crate::vmx::xcr0::load(vcpu.xcr0);
    vcpu.fpu.restore();
    run_until_switch(&current, p, &mut vcpu);
    // Another vCPU may run here next: keep this guest's vector state with it.
    vcpu.fpu.save();
}

/// The shortest run a guest timer may cut a vCPU's entry down to.
const MIN_TIMER_NS: u64 = 20_000;

/// log2 of TSC ticks per preemption-timer tick.
fn preemption_rate() -> u32 {
    crate::vmx::capabilities().map_or(0, |c| c.misc().preemption_timer_rate().into())
}

/// Arms the preemption timer for the earlier of the slice's end and the vCPU's next
/// APIC timer deadline, so a guest timer fires on time even in a long slice.
fn arm_preemption_timer(current: &crate::vmx::vmcs::Current, vcpu: &Vcpu) {
    if vcpu.slice_end_tsc == u64::MAX {
        return;
    }
    let now = crate::arch::cpu::rdtsc();
    let mut until = vcpu.slice_end_tsc;
    if let Some(deadline) = vcpu.lapic.next_deadline() {
        // A guest timer programmed for (almost) now still lets the guest run a little:
        // a one-nanosecond periodic timer must not stop it from making progress (KVM
        // enforces a minimum period for the same reason).
        let earliest = now.saturating_add(crate::arch::timer::ns_to_tsc(MIN_TIMER_NS));
        until = until.min(crate::arch::timer::ns_to_tsc(deadline).max(earliest));
    }
    let ticks = (until.saturating_sub(now) >> preemption_rate()).min(u64::from(u32::MAX));
    current.write32(Field32::PreemptionTimerValue, ticks as u32);
}

fn run_until_switch(current: &crate::vmx::vmcs::Current, p: &Placement, vcpu: &mut Vcpu) {
    loop {
        vmexit::events::before_entry(current, vcpu, crate::arch::timer::now_ns());
        arm_preemption_timer(current, vcpu);
        let launched = vcpu.launched;
        // SAFETY: the VMCS is current and complete (guest state at creation, host
        // state above); `launched` tracks VMLAUNCH vs VMRESUME since the last VMCLEAR.
        match unsafe { entry::run(&mut vcpu.regs, launched) } {
            Entry::Exited => {
                vcpu.launched = true;
                let next = vmexit::handle(current, &p.domain, vcpu);
                match next {
                    Next::Advance | Next::Resume | Next::Skip(_) => {
                        if crate::vmx::xcr0::differs(vcpu.xcr0) {
                            crate::vmx::xcr0::load(vcpu.xcr0);
                        }
                    }
                    Next::Block => {
                        vcpu.state = VcpuState::Blocked;
                        return;
                    }
                    Next::Yield => return,
                    Next::Ended => {
                        vcpu.state = VcpuState::Done;
                        return;
                    }
                }
            }
            Entry::Failed(kind) => {
                let code = current.read_ro32(ReadOnly32::VmInstructionError);
                let why = match kind {
                    crate::vmx::instr::VmFail::Valid => vm_instruction_error_str(code),
                    crate::vmx::instr::VmFail::Invalid => "no current VMCS",
                };
                vmexit::crash(current, &p.domain, vcpu, format_args!("VM entry failed: {why} (error {code})"));
                vcpu.state = VcpuState::Done;
                return;
            }
        }
    }
}

/// The end-of-run report: each domain's state and exit counters.
pub fn report() {
    for d in domain::all() {
        let counts = d.exit_counts();
        let rt = d.runtime.lock();
        let status = rt.exit_status.map_or(alloc::string::String::from("-"), |s| alloc::format!("{s}"));
        log::info!("domain {} (id {}): {} status={status}", d.name, d.id, rt.state.as_str());
        let mut line = alloc::string::String::new();
        for (reason, &count) in counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let name = crate::vmx::exit::RawExitReason(reason as u32).basic().map_or("unknown", |r| r.name());
            line.push_str(&alloc::format!(" {name}={count}"));
        }
        log::info!("domain {} exits:{line}", d.name);
        if !rt.unclaimed_ports.is_empty() {
            let mut ports = alloc::string::String::new();
            for (port, count) in rt.unclaimed_ports.iter().take(16) {
                ports.push_str(&alloc::format!(" {port:#x}={count}"));
            }
            log::info!("domain {} unclaimed ports:{ports}", d.name);
        }
    }
}
