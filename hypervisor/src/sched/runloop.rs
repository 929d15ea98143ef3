//! Each CPU's loop: ask the credit scheduler (`credit`) what to run, enter it, handle
//! its exits until it blocks, its time is up or a kick arrives, and tell the scheduler.
//!
//! - Time: every CPU runs the scheduler's 10 ms tick itself (checked each time round the
//!   loop); a running vCPU is bounded by the VMX preemption timer (the decision's
//!   `until`, or the vCPU's own APIC timer if earlier).
//! - Wake-ups: a vCPU blocked in HLT becomes runnable when its local APIC has a
//!   deliverable interrupt; every CPU scans the blocked vCPUs each time round the loop
//!   (`wake_blocked`) and the scheduler says which CPU to kick.
//! - Idle: a CPU with nothing to run arms its TSC-deadline timer for the next thing that
//!   can change that (tick, decision deadline, a blocked vCPU's timer) and halts with
//!   interrupts enabled; a kick IPI or the timer wakes it.
//! - Migration: a vCPU's VMCS is VMCLEARed whenever it leaves a CPU, so any CPU may
//!   load it next; arriving on a new CPU also flushes that CPU's TLB for it (`vmx::tlb`).
//!
//! Lock order: a vCPU's lock, then the scheduler's. The scheduler lock is never held
//! while a guest runs.

use super::credit::{CpuSet, Credit, Params, VcpuRef};
use crate::domain::vcpu::{Vcpu, VcpuState};
use crate::domain::{self, Domain};
use crate::percpu::{self, MAX_CPUS};
use crate::power::{self, StopReason};
use crate::vmexit::{self, Next};
use crate::vmx::entry::{self, Entry};
use crate::vmx::exit::vm_instruction_error_str;
use crate::vmx::fields::{Field16, Field32, FieldNatural, ReadOnly32};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use spin::Mutex;

/// A vCPU and its domain, as the run loop needs them.
#[derive(Clone)]
pub struct Placement {
    pub domain: Arc<Domain>,
    pub vcpu: Arc<Mutex<Vcpu>>,
}

struct Sched {
    credit: Credit,
    vcpus: Placements,
}

/// Where each scheduled vCPU lives, sorted by `VcpuRef` (a domain's vCPUs are
/// consecutive): a binary search on the switch path. A sorted Vec rather than a map:
/// the same lookups in a fraction of the code.
#[derive(Default)]
struct Placements(Vec<(VcpuRef, Placement)>);

impl Placements {
    fn get(&self, r: &VcpuRef) -> Option<&Placement> {
        self.0.binary_search_by(|(k, _)| k.cmp(r)).ok().and_then(|i| self.0.get(i)).map(|(_, p)| p)
    }

    fn insert(&mut self, r: VcpuRef, p: Placement) {
        match self.0.binary_search_by(|(k, _)| k.cmp(&r)) {
            Ok(i) => {
                if let Some(slot) = self.0.get_mut(i) {
                    slot.1 = p;
                }
            }
            Err(i) => self.0.insert(i, (r, p)),
        }
    }

    fn remove(&mut self, r: &VcpuRef) {
        if let Ok(i) = self.0.binary_search_by(|(k, _)| k.cmp(r)) {
            self.0.remove(i);
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&VcpuRef, &Placement)> {
        self.0.iter().map(|(r, p)| (r, p))
    }

    fn keys(&self) -> impl Iterator<Item = &VcpuRef> {
        self.0.iter().map(|(r, _)| r)
    }
}

static SCHED: Mutex<Option<Sched>> = Mutex::new(None);
static ONLINE_CPUS: AtomicU32 = AtomicU32::new(1);
static UNTIL_GUESTS_EXIT: AtomicBool = AtomicBool::new(false);
/// Whether idle CPUs can sleep on their TSC-deadline timer (else they poll).
static HOST_TIMER: AtomicBool = AtomicBool::new(false);
static TICK_NS: AtomicU64 = AtomicU64::new(10_000_000);
/// Each CPU's next scheduler tick (ns).
static NEXT_TICK: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Sets the scheduler up for `online_cpus` CPUs with the configured slice and rate limit.
pub fn configure(online_cpus: u32, until_guests_exit: bool, slice_ms: u32, ratelimit_us: u32) {
    let cpus = online_cpus.clamp(1, MAX_CPUS as u32);
    ONLINE_CPUS.store(cpus, Ordering::Relaxed);
    UNTIL_GUESTS_EXIT.store(until_guests_exit, Ordering::Relaxed);
    let host_timer = crate::arch::apic::has_tsc_deadline();
    HOST_TIMER.store(host_timer, Ordering::Relaxed);
    let defaults = Params::default();
    let params =
        Params { slice_ns: u64::from(slice_ms) * 1_000_000, ratelimit_ns: u64::from(ratelimit_us) * 1000, ..defaults };
    TICK_NS.store(params.tick_ns, Ordering::Relaxed);
    configure_preemption_timer();
    let credit = match Credit::new(cpus as usize, params) {
        Ok(c) => c,
        Err(e) => {
            log::error!("sched: {e}; using the defaults (30 ms slice, 1 ms rate limit)");
            match Credit::new(cpus as usize, defaults) {
                Ok(c) => c,
                Err(e) => {
                    log::error!("sched: {e}");
                    return;
                }
            }
        }
    };
    let p = credit.params();
    log::info!(
        "sched: credit scheduler on {cpus} CPU(s): tick {} ms, slice {} ms, rate limit {} us; idle CPUs {}",
        p.tick_ns / 1_000_000,
        p.slice_ns / 1_000_000,
        p.ratelimit_ns / 1000,
        if host_timer { "halt until a TSC-deadline timer or a kick" } else { "poll (no TSC-deadline timer)" }
    );
    *SCHED.lock() = Some(Sched { credit, vcpus: Placements::default() });
}

/// How many CPUs the scheduler runs on.
pub fn online_cpus() -> u32 {
    ONLINE_CPUS.load(Ordering::Relaxed)
}

fn online_mask() -> u64 {
    let n = ONLINE_CPUS.load(Ordering::Relaxed);
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

/// Hands `domain` to the scheduler with its weight, cap and CPU set; its vCPU 0 becomes
/// runnable (secondary vCPUs wait for a start signal).
pub fn place(domain: &Arc<Domain>, weight: u32, cap: u32, cpus: u64) -> Result<(), alloc::string::String> {
    let affinity = cpus & online_mask();
    if affinity == 0 {
        return Err(alloc::format!(
            "cpus = {cpus:#x} names no online CPU (online: {:#x}); fix the domain's cpus key",
            online_mask()
        ));
    }
    let now = crate::arch::timer::now_ns();
    let mut kicks = Vec::new();
    {
        let mut guard = SCHED.lock();
        let s = guard.as_mut().ok_or("the scheduler is not configured")?;
        s.credit.add_domain(domain.id, weight, cap).map_err(|e| alloc::format!("{e}"))?;
        for vcpu in &domain.vcpus {
            let id = vcpu.lock().id;
            let r = VcpuRef { domain: domain.id, vcpu: id };
            s.credit.add_vcpu(r, CpuSet(affinity), now).map_err(|e| alloc::format!("{e}"))?;
            s.vcpus.insert(r, Placement { domain: domain.clone(), vcpu: vcpu.clone() });
            if id == 0
                && let Some(cpu) = s.credit.wake(r, now)
            {
                kicks.push(cpu);
            }
        }
    }
    log::info!("domain {}: weight {weight}, cap {cap}%, cpus {affinity:#x}", domain.name);
    kicks.into_iter().for_each(kick);
    Ok(())
}

/// Sends the scheduler's IPI to `cpu` (nothing for this CPU, which is already looking).
fn kick(cpu: usize) {
    if cpu == percpu::current_index() as usize {
        return;
    }
    if let Some(apic_id) = percpu::apic_id_of(cpu) {
        crate::arch::apic::kick(apic_id);
    }
}

/// How far away the next event must be for an idle CPU to zero memory first.
const SCRUB_IDLE_NS: u64 = 1_000_000;

/// CPUs halted in `idle`, one bit each.
static IDLE: AtomicU64 = AtomicU64::new(0);

/// Something was posted to a vCPU (an IPI): kick the CPU running it, or, when it runs
/// nowhere, an idle CPU, whose wake-up scan will find it.
pub fn notify(running_on: Option<u32>) {
    match running_on {
        Some(cpu) => kick(cpu as usize),
        None => {
            let idle = IDLE.load(Ordering::Acquire);
            if idle != 0 {
                kick(idle.trailing_zeros() as usize);
            }
        }
    }
}

fn kick_set(set: CpuSet) {
    set.iter().for_each(kick);
}

/// Makes runnable every blocked vCPU whose local APIC now has a deliverable interrupt;
/// returns the earliest APIC timer deadline among those still blocked.
fn wake_blocked(now: u64) -> Option<u64> {
    let all: Vec<(VcpuRef, Placement)> = {
        let guard = SCHED.lock();
        let s = guard.as_ref()?;
        // Nobody blocked (every vCPU runs or waits for a CPU): nothing to scan. Their
        // device timers and mailboxes are handled before their next entry.
        if !s.credit.has_blocked() {
            return None;
        }
        s.vcpus.iter().map(|(r, p)| (*r, p.clone())).collect()
    };
    let mut earliest: Option<u64> = None;
    // Device timers first, so that the interrupts they raise are in the mailboxes the
    // loop below drains. Each domain once (its vCPUs are consecutive in the map).
    let mut last_domain = None;
    for (r, p) in &all {
        if last_domain != Some(r.domain) {
            last_domain = Some(r.domain);
            p.domain.poll_devices(now);
        }
    }
    for (r, p) in all {
        // A vCPU somebody holds is running or being looked at: not blocked for us.
        let Some(mut v) = p.vcpu.try_lock() else { continue };
        if !matches!(v.state, VcpuState::Blocked | VcpuState::WaitForSipi) {
            continue;
        }
        if let Some(sig) = p.domain.signals.get(v.id as usize)
            && sig.any()
        {
            let posted = sig.take();
            for vector in posted.vectors() {
                v.lapic.accept(vector, posted.is_level(vector));
            }
            // In wait-for-SIPI an NMI is held off and lost with the INIT that follows.
            if v.state == VcpuState::Blocked {
                take_nmis(&posted, &mut v);
            }
            if posted.init {
                // INIT: back to waiting for STARTUP (SDM Vol. 3A "INIT Reset").
                v.lapic.reset();
                v.state = VcpuState::WaitForSipi;
                v.halted_if_clear = false;
            }
            if let Some(vector) = posted.sipi
                && v.state == VcpuState::WaitForSipi
            {
                v.start_vector = Some(vector);
                v.state = VcpuState::Runnable;
                drop(v);
                if let Some(cpu) = SCHED.lock().as_mut().and_then(|s| s.credit.wake(r, now)) {
                    kick(cpu);
                }
                continue;
            }
        }
        if v.state != VcpuState::Blocked {
            continue;
        }
        v.lapic.tick(now);
        // An NMI wakes even a vCPU halted with interrupts off; only INIT wakes it otherwise.
        if v.nmi_pending || !v.halted_if_clear && vmexit::events::has_interrupt(&p.domain, &v, now) {
            v.state = VcpuState::Runnable;
            v.halted_if_clear = false;
            drop(v);
            let cpu = SCHED.lock().as_mut().and_then(|s| s.credit.wake(r, now));
            if let Some(cpu) = cpu {
                kick(cpu);
            }
        } else {
            // Its own timer, and the devices' timers whose interrupts may be for it.
            for d in [v.lapic.next_deadline(), p.domain.device_deadline()].into_iter().flatten() {
                earliest = Some(earliest.map_or(d, |e| e.min(d)));
            }
        }
    }
    earliest
}

/// What ended a vCPU's turn.
enum Outcome {
    /// Time is up, or a kick asked the scheduler to look again.
    Preempted,
    Blocked,
    Ended,
}

/// Each CPU's life after bring-up.
pub fn run_loop() -> ! {
    let cpu = percpu::current_index() as usize;
    crate::arch::spec_ctrl::init_this_cpu();
    let tick_ns = TICK_NS.load(Ordering::Relaxed);
    // Spread the CPUs' ticks over the tick period, as Xen does, so they do not all
    // account at the same instant.
    let cpus = u64::from(ONLINE_CPUS.load(Ordering::Relaxed));
    NEXT_TICK[cpu].store(crate::arch::timer::now_ns() + tick_ns * (cpu as u64 + 1) / cpus, Ordering::Relaxed);
    let mut reported = false;
    loop {
        if power::stopping() {
            power::park_this_cpu();
        }
        // Device interrupts that arrived while idle, for Domain0.
        crate::domain::passthrough::deliver_pending();
        crate::arch::nmi::report();
        crate::arch::serial::poll();
        let mut now = crate::arch::timer::now_ns();
        let next_tick = NEXT_TICK[cpu].load(Ordering::Relaxed);
        if now >= next_tick {
            let kicks = SCHED.lock().as_mut().map(|s| s.credit.tick(cpu, now)).unwrap_or_default();
            // Catch up without replaying missed ticks one by one.
            let behind = (now - next_tick) / tick_ns;
            NEXT_TICK[cpu].store(next_tick + (behind + 1) * tick_ns, Ordering::Relaxed);
            kicks.into_iter().for_each(kick);
        }
        let blocked_deadline = wake_blocked(now);
        now = crate::arch::timer::now_ns();
        let (decision, placement) = {
            let mut guard = SCHED.lock();
            let Some(s) = guard.as_mut() else {
                drop(guard);
                idle(u64::MAX);
                continue;
            };
            let d = s.credit.schedule(cpu, now);
            let p = d.run.and_then(|r| s.vcpus.get(&r).cloned());
            (d, p)
        };
        kick_set(decision.kick);
        let until = decision.until.min(NEXT_TICK[cpu].load(Ordering::Relaxed));
        match placement {
            Some(p) => {
                let outcome = run_slice(cpu as u32, &p, until);
                let now = crate::arch::timer::now_ns();
                let mut guard = SCHED.lock();
                if let Some(s) = guard.as_mut() {
                    match outcome {
                        Outcome::Preempted => {}
                        Outcome::Blocked => s.credit.block(cpu, now),
                        Outcome::Ended => s.credit.block(cpu, now),
                    }
                }
                drop(guard);
                if p.domain.is_ended() {
                    retire(&p.domain, now);
                }
            }
            None => {
                // The end: every domain ended, or with `until_guests_exit` every awaited
                // one (`awaited = true`), whatever else still runs.
                let done = || {
                    if UNTIL_GUESTS_EXIT.load(Ordering::Relaxed) { domain::guests_done() } else { domain::all_ended() }
                };
                if cpu == 0 && !reported && done() && !domain::lifecycle::restart_pending() && all_released(now) {
                    reported = true;
                    report();
                    if UNTIL_GUESTS_EXIT.load(Ordering::Relaxed) {
                        power::stop_machine(StopReason::Done);
                    }
                }
                let wake_at = blocked_deadline.map_or(until, |d| d.min(until));
                idle(wake_at);
            }
        }
    }
}

/// Whether every ended domain's memory is back with the allocator. A domain whose last
/// vCPU was still held by another CPU when it ended is retired from here, so the final
/// report never comes before a release another CPU has yet to log.
fn all_released(now: u64) -> bool {
    let mut all = true;
    for d in domain::all() {
        if d.memory.lock().size() > 0 {
            retire(&d, now);
            all &= d.memory.lock().size() == 0;
        }
    }
    all
}

/// A domain ended: its vCPUs leave the scheduler (the report keeps their statistics),
/// and once none of them runs anywhere its guest RAM goes back to the frame allocator.
/// Every CPU that ran one of its vCPUs calls this after the vCPU's last slice, so the
/// last one to stop releases the memory.
/// A domain ended outside its own vCPUs (Domain0 destroyed or shut it down): retire it
/// now. A vCPU some CPU is running comes back through `run_loop`, which retires it again.
pub fn release(domain: &Arc<Domain>) {
    retire(domain, crate::arch::timer::now_ns());
}

fn retire(domain: &Arc<Domain>, now: u64) {
    if let Some(s) = SCHED.lock().as_mut() {
        let refs: Vec<VcpuRef> = s.vcpus.keys().filter(|r| r.domain == domain.id).copied().collect();
        if !refs.is_empty() {
            for r in refs {
                if let Some(st) = s.credit.stats_at(r, now) {
                    FINAL_STATS.lock().push((domain.name.clone(), r.vcpu, st.0));
                }
                s.vcpus.remove(&r);
            }
            let _ = s.credit.remove_domain(domain.id, now);
        }
    }
    // A vCPU somebody holds may still be inside the guest: its CPU retires the domain
    // again when that slice ends.
    let mut guards = Vec::new();
    for v in &domain.vcpus {
        match v.try_lock() {
            Some(g) => guards.push(g),
            None => return,
        }
    }
    for g in guards.iter_mut() {
        g.state = VcpuState::Done;
    }
    let released = domain.memory.lock().release();
    if released > 0 {
        log::info!("domain {}: {} MiB of guest memory released", domain.name, released >> 20);
    }
    drop(guards);
    crate::domain::lifecycle::restart_if_asked(domain);
}

/// Statistics of vCPUs whose domain ended, for the final report.
static FINAL_STATS: Mutex<Vec<(alloc::string::String, u32, super::credit::VcpuStats)>> = Mutex::new(Vec::new());

/// Waits for something to do: halts until `wake_at` (ns) or an interrupt (a kick) where
/// the CPU has a TSC-deadline timer, else returns at once (the loop polls).
fn idle(wake_at: u64) {
    if !HOST_TIMER.load(Ordering::Relaxed) {
        core::hint::spin_loop();
        return;
    }
    // Queued console output: back when the UART has room for more.
    let wake_at = match crate::arch::serial::next_poll_tsc() {
        Some(tsc) => wake_at.min(crate::arch::timer::tsc_to_ns(tsc)),
        None => wake_at,
    };
    let now = crate::arch::timer::now_ns();
    if wake_at <= now {
        return;
    }
    // Nothing due for a while: zero some free memory for future domains (mm::scrub),
    // a small step at a time so whoever wakes next waits microseconds at most.
    if wake_at - now >= SCRUB_IDLE_NS
        && crate::mm::scrub::wanted()
        && crate::mm::scrub::scrub(crate::mm::scrub::STEP) > 0
    {
        return;
    }
    crate::arch::apic::arm_timer(crate::arch::timer::ns_to_tsc(wake_at).max(1));
    let bit = 1u64 << (percpu::current_index() % 64);
    IDLE.fetch_or(bit, Ordering::AcqRel);
    // SAFETY: STI's one-instruction shadow covers HLT, so an interrupt that became
    // pending before this point wakes the HLT instead of being taken before it; the
    // handlers (kick, timer) only EOI. Interrupts are off again right after.
    unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
    IDLE.fetch_and(!bit, Ordering::AcqRel);
    crate::arch::apic::arm_timer(0);
}

fn run_slice(cpu: u32, p: &Placement, until_ns: u64) -> Outcome {
    let mut vcpu = p.vcpu.lock();
    if vcpu.state == VcpuState::Done || p.domain.is_ended() {
        vcpu.state = VcpuState::Done;
        return Outcome::Ended;
    }
    if p.domain.is_paused() {
        vcpu.state = VcpuState::Paused;
        return Outcome::Blocked;
    }
    // SAFETY: the VMCS was VMCLEARed when the vCPU last left a CPU (or never loaded),
    // so it is current nowhere else; the vCPU lock keeps other CPUs away meanwhile.
    let current = match unsafe { vcpu.vmcs.load() } {
        Ok(c) => c,
        Err(e) => {
            log::error!("domain {}: VMPTRLD failed ({e:?}); crashing it", p.domain.name);
            p.domain.finish(domain::DomainState::Crashed, None);
            vcpu.state = VcpuState::Done;
            return Outcome::Ended;
        }
    };
    if vcpu.host_cpu != Some(cpu) {
        crate::vmx::host::write(&current);
        // New to this CPU: whatever it caches under this VPID or EPTP is someone
        // else's or out of date (see vmx::tlb).
        crate::vmx::tlb::flush_on_arrival(p.domain.eptp, vcpu.vpid.get());
        vcpu.host_cpu = Some(cpu);
    }
    vcpu.slice_end_tsc = crate::arch::timer::ns_to_tsc(until_ns);
    if let Some(vector) = vcpu.start_vector.take() {
        // STARTUP after INIT: the INIT state (a vCPU may have run before), then real
        // mode at vector:0000, i.e. CS = vector << 8, base = vector << 12.
        crate::domain::vcpu::reset_for_startup(&current, &mut vcpu);
        current.write16(Field16::GuestCsSelector, u16::from(vector) << 8);
        current.write_natural(FieldNatural::GuestCsBase, u64::from(vector) << 12);
        current.write_natural(FieldNatural::GuestRip, 0);
    }
    let signals = p.domain.signals.get(vcpu.id as usize);
    if let Some(sig) = signals {
        sig.set_running_on(Some(cpu));
    }
    // Branch predictions another domain trained stay with it (IBPB where it applies).
    crate::arch::spec_ctrl::switch_to(cpu as usize, p.domain.id);
    vcpu.spec_ctrl_switch = crate::arch::spec_ctrl::mitigations().entry_work(vcpu.spec_ctrl);
    crate::vmexit::msr::load_tsc_aux(vcpu.tsc_aux);
    crate::vmexit::msr::load_syscall_msrs(&vcpu.syscall_msrs);
    if vcpu.fpu.switch_in(vcpu.xcr0).is_err() {
        // XRSTOR refused an image XSAVE wrote (never seen); whatever the CPU holds now
        // is the next vCPU's to overwrite in full.
        if p.domain.finish(domain::DomainState::Crashed, None) {
            log::error!("domain {} crashed: XRSTOR faulted on its vector state", p.domain.name);
        }
        if let Some(sig) = signals {
            sig.set_running_on(None);
        }
        // SAFETY: as below: the VMCS is current here and must be written back.
        let _ = unsafe { vcpu.vmcs.clear() };
        vcpu.launched = false;
        vcpu.state = VcpuState::Done;
        return Outcome::Ended;
    }
    crate::vmexit::debug::slice_start(&vcpu);
    crate::vmx::entry::load_guest_cr2(vcpu.regs.cr2);
    let outcome = run_until_switch(&current, p, &mut vcpu);
    crate::vmexit::debug::slice_end(&mut vcpu);
    vcpu.regs.cr2 = crate::vmx::entry::guest_cr2();
    // The guest's SWAPGS may have changed it since it last wrote it.
    if let Some(k) = vcpu.syscall_msrs.get_mut(4) {
        *k = crate::vmexit::msr::current_kernel_gs_base();
    }
    if let Some(sig) = signals {
        sig.set_running_on(None);
    }
    // Another vCPU may run here next: keep this guest's vector state with it (every
    // component, under the host's XCR0, which stays loaded between slices).
    let xcr0 = vcpu.xcr0;
    vcpu.fpu.switch_out(xcr0);
    // SAFETY: the VMCS is current on this CPU; clearing it writes it back to memory so
    // that another CPU may load it (SDM Vol. 3C "VMCLEAR").
    if let Err(e) = unsafe { vcpu.vmcs.clear() } {
        log::error!("domain {}: VMCLEAR failed ({e:?})", p.domain.name);
    }
    vcpu.launched = false;
    outcome
}

/// The shortest run a guest timer may cut a vCPU's entry down to.
const MIN_TIMER_NS: u64 = 20_000;
/// The same in TSC ticks (set at configuration, after the TSC is calibrated).
static MIN_TIMER_TSC: AtomicU64 = AtomicU64::new(20_000);

/// log2 of TSC ticks per preemption-timer tick, and whether VM exits save the timer's
/// remaining count (so a fast-path re-entry need not write it); read at configuration.
static PREEMPTION_RATE: AtomicU32 = AtomicU32::new(0);
static PREEMPTION_SAVED: AtomicBool = AtomicBool::new(false);

/// Reads the preemption timer's rate and save control from the VMX capabilities.
fn configure_preemption_timer() {
    MIN_TIMER_TSC.store(crate::arch::timer::ns_to_tsc(MIN_TIMER_NS), Ordering::Relaxed);
    if let Some(c) = crate::vmx::capabilities() {
        PREEMPTION_RATE.store(c.misc().preemption_timer_rate().into(), Ordering::Relaxed);
        PREEMPTION_SAVED.store(c.exit_allows(crate::vmx::caps::ExitControls::SAVE_PREEMPTION_TIMER), Ordering::Relaxed);
    }
}

/// Arms the preemption timer for the earliest of the slice's end, the vCPU's next APIC
/// timer deadline and its domain's device timers, so a guest timer fires on time even in
/// a long slice.
fn arm_preemption_timer(current: &crate::vmx::vmcs::Current, domain: &Domain, vcpu: &mut Vcpu) {
    if vcpu.slice_end_tsc == u64::MAX {
        vcpu.timer_until_tsc = u64::MAX;
        return;
    }
    let now = crate::arch::cpu::rdtsc();
    let mut until = vcpu.slice_end_tsc;
    let deadline = match (vcpu.lapic.next_deadline(), domain.device_deadline()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(deadline) = deadline {
        // A guest timer programmed for (almost) now still lets the guest run a little:
        // a one-nanosecond periodic timer must not stop it from making progress (KVM
        // enforces a minimum period for the same reason).
        let earliest = now.saturating_add(MIN_TIMER_TSC.load(Ordering::Relaxed));
        until = until.min(crate::arch::timer::ns_to_tsc(deadline).max(earliest));
    }
    // Queued console output keeps flowing while guests compute (see arch::serial).
    if let Some(tsc) = crate::arch::serial::next_poll_tsc() {
        until = until.min(tsc.max(now.saturating_add(MIN_TIMER_TSC.load(Ordering::Relaxed))));
    }
    vcpu.timer_until_tsc = until;
    write_preemption_timer(current, until, now);
}

#[inline]
fn write_preemption_timer(current: &crate::vmx::vmcs::Current, until: u64, now: u64) {
    let ticks = (until.saturating_sub(now) >> PREEMPTION_RATE.load(Ordering::Relaxed)).min(u64::from(u32::MAX));
    current.write32(Field32::PreemptionTimerValue, ticks as u32);
}

/// Before re-entering after a fast-path exit: the timer must fire at the moment the
/// last full entry chose. Exits that save the timer's count already keep it.
#[inline]
fn rearm_preemption_timer(current: &crate::vmx::vmcs::Current, vcpu: &Vcpu) {
    if vcpu.timer_until_tsc != u64::MAX && !PREEMPTION_SAVED.load(Ordering::Relaxed) {
        write_preemption_timer(current, vcpu.timer_until_tsc, crate::arch::cpu::rdtsc());
    }
}

/// Moves what was posted to a running vCPU (interrupts from siblings and devices) into
/// its local APIC; true when an INIT came, which the caller handles. A STARTUP outside
/// wait-for-SIPI is ignored (SDM Vol. 3A "MP Initialization").
fn drain_mailbox(signals: Option<&crate::domain::signals::VcpuSignals>, vcpu: &mut Vcpu) -> bool {
    let Some(sig) = signals.filter(|s| s.any()) else { return false };
    let posted = sig.take();
    for vector in posted.vectors() {
        vcpu.lapic.accept(vector, posted.is_level(vector));
    }
    take_nmis(&posted, vcpu);
    posted.init
}

/// An NMI posted to the vCPU, or a LINT1 edge its local APIC turns into one (or into
/// the fixed vector its LVT entry names, which the APIC latches).
fn take_nmis(posted: &crate::domain::signals::Posted, vcpu: &mut Vcpu) {
    use crate::devices::lapic::{Lint, LintEffect};
    let lint1_nmi = posted.lint1 && vcpu.lapic.lint_edge(Lint::Lint1) == LintEffect::Nmi;
    vcpu.nmi_pending |= posted.nmi || lint1_nmi;
}

/// How a wait in place ([`halt_in_place`]) ended.
enum HaltWait {
    Resume,
    Block,
    Init,
}

/// How soon a halted vCPU's own next event must be for its CPU to wait for it in place.
const HALT_IN_PLACE_NS: u64 = 1_000_000;

/// HLT with nothing else for this CPU to do and the vCPU's next timer at most
/// [`HALT_IN_PLACE_NS`] away: the CPU sleeps with the vCPU still loaded (its VMCS
/// current, its FPU state in the registers) and resumes it directly when its interrupt
/// comes, instead of giving it back to the scheduler and loading it again (KVM's halt
/// polling, with the CPU halted rather than spinning). `Resume` when the vCPU has an
/// interrupt; `Block` to block it the usual way: another vCPU is queued for this CPU,
/// the slice or the tick is due, the wait would be long, or the domain was paused or
/// ended; `Init` when a sibling sent INIT.
///
/// The scheduler sees the vCPU running meanwhile, so up to a millisecond per HLT is
/// charged to it as CPU time; the bound keeps that small. Other CPUs skip a vCPU whose
/// lock is held, and a post to it kicks this CPU (its mailbox says it runs here).
fn halt_in_place(p: &Placement, vcpu: &mut Vcpu, signals: Option<&crate::domain::signals::VcpuSignals>) -> HaltWait {
    if !HOST_TIMER.load(Ordering::Relaxed) || vcpu.halted_if_clear {
        return HaltWait::Block;
    }
    let cpu = percpu::current_index() as usize;
    loop {
        if power::stopping() || p.domain.is_paused() || p.domain.is_ended() {
            return HaltWait::Block;
        }
        if SCHED.lock().as_ref().is_none_or(|s| s.credit.has_queued(cpu)) {
            return HaltWait::Block;
        }
        crate::domain::passthrough::deliver_pending();
        crate::arch::serial::poll();
        let now = crate::arch::timer::now_ns();
        p.domain.poll_devices(now);
        if drain_mailbox(signals, vcpu) {
            return HaltWait::Init;
        }
        vcpu.lapic.tick(now);
        if vmexit::events::has_interrupt(&p.domain, vcpu, now) {
            return HaltWait::Resume;
        }
        let own = match (vcpu.lapic.next_deadline(), p.domain.device_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Some(own) = own.filter(|&t| t <= now.saturating_add(HALT_IN_PLACE_NS)) else { return HaltWait::Block };
        let slice_end = crate::arch::timer::tsc_to_ns(vcpu.slice_end_tsc);
        let tick = NEXT_TICK.get(cpu).map_or(0, |t| t.load(Ordering::Relaxed));
        if now >= slice_end || now >= tick {
            return HaltWait::Block;
        }
        let mut wake_at = own.min(slice_end).min(tick);
        if let Some(tsc) = crate::arch::serial::next_poll_tsc() {
            wake_at = wake_at.min(crate::arch::timer::tsc_to_ns(tsc));
        }
        if wake_at > now {
            crate::arch::apic::arm_timer(crate::arch::timer::ns_to_tsc(wake_at).max(1));
            // SAFETY: as in `idle`: STI's shadow covers HLT, so a pending interrupt
            // (kick, timer, device) ends the HLT; the handlers only EOI or note.
            unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
            crate::arch::apic::arm_timer(0);
        }
    }
}

/// Runs the vCPU until it blocks, its time is up, a kick arrives or its domain ends.
///
/// Two ways round the loop. The full one, before every entry after an ordinary exit:
/// device timers, the mailbox, interrupt injection, the preemption timer. The fast one,
/// after exits `vmexit::handle_fast` completed (CPUID, RDMSR, read-only hypercalls):
/// nothing those exits do can change what the full one would decide, so it only
/// re-arms the timer. What arrives from elsewhere meanwhile still gets in: another
/// CPU's post comes with a kick IPI, which exits the guest at once (external-interrupt
/// exiting); timers end the run through the preemption timer; a post to this vCPU
/// from itself (no IPI) is seen by the mailbox check below.
fn run_until_switch(current: &crate::vmx::vmcs::Current, p: &Placement, vcpu: &mut Vcpu) -> Outcome {
    let signals = p.domain.signals.get(vcpu.id as usize);
    let mut fast = false;
    loop {
        // Paused or ended by Domain0 (which kicked this CPU to get here quickly).
        if p.domain.is_paused() {
            vcpu.state = VcpuState::Paused;
            return Outcome::Blocked;
        }
        if p.domain.is_ended() {
            vcpu.state = VcpuState::Done;
            return Outcome::Ended;
        }
        if fast && !signals.is_some_and(|s| s.any()) {
            rearm_preemption_timer(current, vcpu);
        } else {
            crate::arch::serial::poll();
            // Device timers due (PIT, RTC): their interrupts join the mailboxes drained next.
            let now = crate::arch::timer::now_ns();
            p.domain.poll_devices(now);
            // What siblings and devices sent since the last entry.
            if drain_mailbox(signals, vcpu) {
                vcpu.lapic.reset();
                vcpu.state = VcpuState::WaitForSipi;
                return Outcome::Blocked;
            }
            vmexit::events::before_entry(current, &p.domain, vcpu, now);
            arm_preemption_timer(current, &p.domain, vcpu);
        }
        let launched = vcpu.launched;
        // Speculation controls around the entry, where any apply (`arch::spec_ctrl`).
        let spec_ctrl = vcpu.spec_ctrl_switch.then_some(vcpu.spec_ctrl);
        if let Some(guest) = spec_ctrl {
            crate::arch::spec_ctrl::before_entry(guest);
        }
        // SAFETY: the VMCS is current and complete (guest state at creation, host
        // state above); `launched` tracks VMLAUNCH vs VMRESUME since the last VMCLEAR.
        let entered = unsafe { entry::run(&mut vcpu.regs, launched) };
        if let Some(guest) = spec_ctrl {
            crate::arch::spec_ctrl::after_exit(guest);
        }
        match entered {
            Entry::Exited => {
                vcpu.launched = true;
                let raw = vmexit::exit_reason(current);
                let next = match vmexit::handle_fast(current, &p.domain, vcpu, raw) {
                    Some(next) => {
                        fast = true;
                        next
                    }
                    None => {
                        fast = false;
                        vmexit::handle(current, &p.domain, vcpu, raw)
                    }
                };
                match next {
                    Next::Advance | Next::Resume | Next::Skip(_) => {}
                    Next::Block => match halt_in_place(p, vcpu, signals) {
                        HaltWait::Resume => {
                            fast = false;
                            continue;
                        }
                        HaltWait::Block => {
                            vcpu.state = VcpuState::Blocked;
                            return Outcome::Blocked;
                        }
                        HaltWait::Init => {
                            vcpu.lapic.reset();
                            vcpu.state = VcpuState::WaitForSipi;
                            return Outcome::Blocked;
                        }
                    },
                    Next::Yield => return Outcome::Preempted,
                    Next::Ended => {
                        vcpu.state = VcpuState::Done;
                        return Outcome::Ended;
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
                return Outcome::Ended;
            }
        }
    }
}

/// The end-of-run report: each domain's state and exit counters, then each vCPU's
/// scheduling statistics.
pub fn report() {
    report_domains();
    for (name, vcpu, st) in control::stats() {
        log::info!(
            "sched: {name} vcpu{vcpu}: run {} ms, waiting {} ms, blocked {} ms, preemptions {}, migrations {}",
            st.run_ns / 1_000_000,
            st.wait_ns / 1_000_000,
            st.blocked_ns / 1_000_000,
            st.preemptions,
            st.migrations
        );
    }
}

fn report_domains() {
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
            for (port, count) in rt.unclaimed_ports.tracked().iter().take(16) {
                ports.push_str(&alloc::format!(" {port:#x}={count}"));
            }
            if rt.unclaimed_ports.others > 0 {
                ports.push_str(&alloc::format!(" (and {} accesses to other ports)", rt.unclaimed_ports.others));
            }
            log::info!("domain {} unclaimed ports:{ports}", d.name);
        }
        let mmio = &rt.unclaimed_mmio;
        if !mmio.pages.is_empty() {
            let mut pages = alloc::string::String::new();
            for (page, count) in mmio.pages.tracked() {
                pages.push_str(&alloc::format!(" {page:#x}={count}"));
            }
            if mmio.pages.others > 0 {
                pages.push_str(&alloc::format!(" (and {} accesses to other pages)", mmio.pages.others));
            }
            log::info!(
                "domain {} unclaimed guest-physical addresses: {} reads, {} writes; pages:{pages}",
                d.name,
                mmio.reads,
                mmio.writes
            );
        }
    }
}

/// Run-time control, for the management domain's calls (and the configuration at boot).
/// Each returns the scheduler's own error, whose text says what is allowed.
pub mod control {
    use super::super::credit::{CpuSet, SchedError, VcpuRef};
    use super::{SCHED, kick, online_mask};

    fn with<T>(f: impl FnOnce(&mut super::Sched) -> Result<T, SchedError>) -> Result<T, SchedError> {
        match SCHED.lock().as_mut() {
            Some(s) => f(s),
            None => Err(SchedError::NoSuchDomain(0)),
        }
    }

    /// Every vCPU's statistics, by domain name and vCPU number (ended domains included).
    pub fn stats() -> alloc::vec::Vec<(alloc::string::String, u32, super::super::credit::VcpuStats)> {
        let now = crate::arch::timer::now_ns();
        let mut rows = super::FINAL_STATS.lock().clone();
        if let Some(s) = SCHED.lock().as_ref() {
            for (r, p) in s.vcpus.iter() {
                if let Some((st, _)) = s.credit.stats_at(*r, now) {
                    rows.push((p.domain.name.clone(), r.vcpu, st));
                }
            }
        }
        rows
    }

    /// A domain's weight and cap.
    pub fn domain_params(domain: u32) -> Option<(u32, u32)> {
        SCHED.lock().as_ref()?.credit.domain_params(domain)
    }

    /// CPU time used by the domain's vCPUs so far.
    pub fn domain_cpu_time(domain: u32) -> u64 {
        let now = crate::arch::timer::now_ns();
        let guard = SCHED.lock();
        let Some(s) = guard.as_ref() else { return 0 };
        s.vcpus
            .keys()
            .filter(|r| r.domain == domain)
            .filter_map(|r| s.credit.stats_at(*r, now))
            .map(|(st, _)| st.run_ns)
            .sum()
    }

    /// The global time slice (ms) and rate limit (us).
    pub fn params() -> (u32, u32) {
        SCHED.lock().as_ref().map_or((0, 0), |s| {
            let p = s.credit.params();
            ((p.slice_ns / 1_000_000) as u32, (p.ratelimit_ns / 1000) as u32)
        })
    }

    /// A vCPU as the scheduler sees it: (statistics, affinity, CPU it runs or last ran
    /// on, running now).
    pub fn vcpu(domain: u32, vcpu: u32) -> Option<(super::super::credit::VcpuStats, u64, Option<usize>, bool)> {
        let now = crate::arch::timer::now_ns();
        let guard = SCHED.lock();
        let s = guard.as_ref()?;
        let r = VcpuRef { domain, vcpu };
        let (st, _) = s.credit.stats_at(r, now)?;
        let running = matches!(s.credit.state(r), Some(super::super::credit::VcpuState::Running(_)));
        Some((st, s.credit.affinity(r)?.0, s.credit.last_cpu(r), running))
    }

    /// Unpause: the domain's vCPUs that were parked by the pause become runnable again.
    pub fn resume_paused(domain: &crate::domain::Domain) {
        let now = crate::arch::timer::now_ns();
        for v in &domain.vcpus {
            let mut g = v.lock();
            if g.state != crate::domain::vcpu::VcpuState::Paused {
                continue;
            }
            g.state = crate::domain::vcpu::VcpuState::Runnable;
            let r = VcpuRef { domain: domain.id, vcpu: g.id };
            drop(g);
            let cpu = SCHED.lock().as_mut().and_then(|s| s.credit.wake(r, now));
            if let Some(cpu) = cpu {
                kick(cpu);
            }
        }
    }

    pub fn set_weight(domain: u32, weight: u32) -> Result<(), SchedError> {
        with(|s| s.credit.set_weight(domain, weight))
    }

    pub fn set_cap(domain: u32, cap: u32) -> Result<(), SchedError> {
        with(|s| s.credit.set_cap(domain, cap))
    }

    /// Time slice and rate limit for every CPU.
    pub fn set_params(slice_ms: u32, ratelimit_us: u32) -> Result<(), SchedError> {
        with(|s| s.credit.set_params(u64::from(slice_ms) * 1_000_000, u64::from(ratelimit_us) * 1000))
    }

    /// Pins vCPU `vcpu` of `domain` to `cpus` (bit i = CPU i, offline CPUs ignored); a vCPU
    /// running outside its new set is moved at once.
    pub fn pin(domain: u32, vcpu: u32, cpus: u64) -> Result<(), SchedError> {
        let set = cpus & online_mask();
        if set == 0 {
            return Err(SchedError::EmptyAffinity);
        }
        let now = crate::arch::timer::now_ns();
        let kick_cpu = with(|s| s.credit.set_affinity(VcpuRef { domain, vcpu }, CpuSet(set), now))?;
        if let Some(cpu) = kick_cpu {
            kick(cpu);
        }
        Ok(())
    }
}
