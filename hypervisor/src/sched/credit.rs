//! The credit scheduler ("credit1"): which vCPU each physical CPU runs, and for how long.
//!
//! This is the pure algorithm of `/work/shared/credit-scheduler.md` (after Xen's credit1 in
//! `xen/common/sched/credit.c`). It sees vCPU ids, domains, weights, caps, priorities,
//! credits and a nanosecond clock (`now`, passed to every call), never hardware: the
//! caller runs what [`Credit::schedule`] returns, sends an IPI to every CPU the calls
//! return, and calls back at the times they ask for. Nothing here allocates per call
//! except the small vectors that calls return, nothing panics, and the arithmetic is
//! integer only (the kernel is soft-float).
//!
//! # Model
//! - Credit: 10 credits per ms of measured run time (one credit per 100 us, the
//!   remainder kept), debited whenever the scheduler sees a runner (tick, schedule,
//!   block, accounting). Every accounting period (3 ticks, 30 ms) the pool hands out
//!   300 credits per CPU: each *active* domain gets a share proportional to its weight,
//!   limited to what its active vCPUs can burn (300 each) and to its cap; what a domain
//!   cannot use is shared among the others (water filling). A domain's grant is split
//!   evenly among its active vCPUs. Shares are per domain, as the spec says (Xen instead
//!   scales a domain's share by its number of active vCPUs).
//! - Active: as in Xen, a vCPU joins the active (earning) list when a tick finds it
//!   running, and leaves it when its credit rises above +300 (its credit is then
//!   halved). This keeps idle vCPUs from hoarding credit.
//! - Priority: BOOST > UNDER > OVER > IDLE. As in Xen, UNDER/OVER is re-derived from
//!   the sign of the credit at each accounting step (for active vCPUs); between steps a
//!   vCPU keeps its priority. A vCPU that genuinely wakes while UNDER becomes BOOST and
//!   loses it at the first tick that finds it running.
//! - Cap: a capped domain earns at most `cap * 3` credits per period; a vCPU whose
//!   credit falls below minus its share of that is parked (not runnable) until an
//!   accounting step brings its credit back to zero or above.
//! - Each CPU has one run queue ordered by priority, FIFO within a priority. A CPU runs
//!   its head; when the best it has is OVER or nothing, it steals the highest-priority
//!   vCPU that may run on it from another CPU's queue.
//!
//! # Choices where the spec is silent (Xen's behaviour unless said otherwise)
//! - A new vCPU starts blocked, with credit 0, UNDER and inactive; its first wake boosts
//!   it like any wake from blocked (Xen).
//! - UNDER/OVER is set at accounting only, for active vCPUs; credit bounds are applied
//!   there too (to every vCPU), so between two steps a runner's credit may dip below
//!   -300 by up to one period's run (Xen). BOOST survives accounting while the credit
//!   is not negative, since the spec ends it at a tick (Xen would end it there as well).
//! - Beyond Xen: an inactive vCPU whose credit falls below zero rejoins the active list
//!   (it has spent its hoard). Without this, an I/O-bound vCPU that ticks never catch
//!   running sinks to -300 unseen, and the tick that finally catches it makes it OVER
//!   (no BOOST) for several periods: a 30 ms wake-up latency in the jittered simulation.
//! - Parking is checked whenever the runner is charged, and `Decision::until` includes
//!   the moment the cap will be used up, so caps are exact (Xen checks only at
//!   accounting); un-parking happens at accounting once the credit is >= 0 (Xen), also
//!   after `set_cap` lifts a cap.
//! - A runner keeps its CPU until its slice ends unless something of strictly higher
//!   priority waits (Xen re-queues the runner on every call, so a spurious call could
//!   round-robin early); at slice end it goes behind vCPUs of its own priority.
//! - The 1 ms steal interval does not apply to a CPU that would otherwise idle (work
//!   conservation comes first). Ties between steal candidates go to the first CPU after
//!   this one.
//! - A woken vCPU goes to the CPU it last ran on if allowed, else to an idle allowed CPU,
//!   else to the allowed CPU with least work; if that CPU is busy and an allowed CPU
//!   idles, the idle one is kicked (it steals the vCPU) rather than preempting.
//! - `Decision::kick` (added) names idle CPUs that can take a vCPU left queued, so that
//!   no CPU idles while work it may run waits; the tick is 1 to 100 ms; the errors
//!   `VcpuExists`, `BadCpuCount` and `BadTick` are added.
//!
//! A vCPU is always in exactly one place: running on one CPU, queued on one CPU,
//! blocked, parked, or gone (its domain was removed). [`Credit::check`] verifies this.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::cmp::Reverse;
use core::fmt;

/// A physical CPU of the pool, `0..cpus`.
pub type CpuId = usize;

/// The most CPUs a pool may have (a [`CpuSet`] is one 64-bit word).
pub const MAX_CPUS: usize = 64;
/// The default domain weight (Xen's).
pub const DEFAULT_WEIGHT: u32 = 256;
/// The largest domain weight.
pub const MAX_WEIGHT: u32 = 65535;

/// Run time that costs one credit: 10 credits per ms.
const NS_PER_CREDIT: u64 = 100_000;
const NS_PER_US: u64 = 1_000;
const NS_PER_MS: u64 = 1_000_000;
/// Ticks in one accounting period.
const TICKS_PER_PERIOD: u64 = 3;
/// A CPU steals at most once per this long (unless it would otherwise idle).
const STEAL_INTERVAL_NS: u64 = NS_PER_MS;
/// The shortest timer for the remainder of a rate-limit window.
const MIN_RATELIMIT_TIMER_NS: u64 = 100 * NS_PER_US;
const MIN_SLICE_NS: u64 = NS_PER_MS;
const MAX_SLICE_NS: u64 = 1000 * NS_PER_MS;
const MIN_RATELIMIT_NS: u64 = 100 * NS_PER_US;
const MAX_RATELIMIT_NS: u64 = 500 * NS_PER_MS;
/// The tick is not given a range by the spec; these bounds keep a period's credit
/// (30 .. 3000) meaningful and far from overflow.
const MIN_TICK_NS: u64 = NS_PER_MS;
const MAX_TICK_NS: u64 = 100 * NS_PER_MS;
/// Accounting grants are computed in 1/1024 credit so that splitting among domains and
/// vCPUs loses (almost) nothing; each vCPU keeps the fraction for the next period.
const FRAC_BITS: u32 = 10;
const FRAC_MASK: u64 = (1 << FRAC_BITS) - 1;

/// A vCPU: its domain and its index within the domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VcpuRef {
    pub domain: u32,
    pub vcpu: u32,
}

/// A set of CPUs: bit i = CPU i.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuSet(pub u64);

impl CpuSet {
    pub const EMPTY: CpuSet = CpuSet(0);

    /// CPUs `0..cpus`.
    pub const fn all(cpus: usize) -> CpuSet {
        if cpus >= MAX_CPUS { CpuSet(u64::MAX) } else { CpuSet((1u64 << cpus) - 1) }
    }

    /// Only `cpu` (empty if `cpu` is out of range).
    pub const fn single(cpu: CpuId) -> CpuSet {
        if cpu < MAX_CPUS { CpuSet(1 << cpu) } else { CpuSet(0) }
    }

    pub const fn contains(self, cpu: CpuId) -> bool {
        cpu < MAX_CPUS && self.0 & (1 << cpu) != 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn insert(&mut self, cpu: CpuId) {
        if cpu < MAX_CPUS {
            self.0 |= 1 << cpu;
        }
    }

    /// The CPUs in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = CpuId> {
        (0..MAX_CPUS).filter(move |&c| self.contains(c))
    }
}

/// Scheduling priority, lowest first. `Idle` is what a CPU with nothing to run has; no
/// vCPU ever has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    Idle,
    Over,
    Under,
    Boost,
}

/// Timing parameters, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// The per-CPU tick (1 to 100 ms); an accounting period is 3 ticks.
    pub tick_ns: u64,
    /// The longest a vCPU runs before its CPU re-decides (1 to 1000 ms).
    pub slice_ns: u64,
    /// The least a vCPU runs before a waking vCPU may preempt it (0 = off, or 100 us
    /// to 500 ms and no more than the slice).
    pub ratelimit_ns: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params { tick_ns: 10 * NS_PER_MS, slice_ns: 30 * NS_PER_MS, ratelimit_ns: NS_PER_MS }
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedError {
    NoSuchDomain(u32),
    NoSuchVcpu(VcpuRef),
    DomainExists(u32),
    BadWeight(u32),
    BadCap(u32),
    BadSlice(u64),
    BadRateLimit(u64),
    EmptyAffinity,
    /// The vCPU is already known.
    VcpuExists(VcpuRef),
    /// The pool must have 1 to 64 CPUs.
    BadCpuCount(usize),
    /// The tick must be 1 to 100 ms.
    BadTick(u64),
}

impl fmt::Display for SchedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SchedError::NoSuchDomain(d) => write!(f, "no domain {d}"),
            SchedError::NoSuchVcpu(v) => write!(f, "no vCPU {} of domain {}", v.vcpu, v.domain),
            SchedError::DomainExists(d) => write!(f, "domain {d} already exists"),
            SchedError::BadWeight(w) => write!(f, "weight {w} is out of range (1 to {MAX_WEIGHT})"),
            SchedError::BadCap(c) => {
                write!(f, "cap {c} is out of range (0 for none, or 1 to 100 times the number of CPUs, in % of one CPU)")
            }
            SchedError::BadSlice(s) => write!(f, "time slice {s} ns is out of range (1 ms to 1000 ms)"),
            SchedError::BadRateLimit(r) => {
                write!(
                    f,
                    "rate limit {r} ns is out of range (0 for off, or 100 us to 500 ms and at most the time slice)"
                )
            }
            SchedError::EmptyAffinity => write!(f, "the affinity holds none of the pool's CPUs"),
            SchedError::VcpuExists(v) => write!(f, "vCPU {} of domain {} already exists", v.vcpu, v.domain),
            SchedError::BadCpuCount(n) => write!(f, "{n} CPUs is out of range (1 to {MAX_CPUS})"),
            SchedError::BadTick(t) => write!(f, "tick {t} ns is out of range (1 ms to 100 ms)"),
        }
    }
}

/// What a CPU does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The vCPU to run, or `None` to halt until `until` or an IPI.
    pub run: Option<VcpuRef>,
    /// When the CPU must call `schedule` again at the latest (slice end, rate-limit
    /// end, cap exhausted, or next tick), ns.
    pub until: u64,
    /// Other CPUs to kick (IPI): idle CPUs that can run a vCPU this decision left queued.
    pub kick: CpuSet,
}

/// Per-vCPU time accounting. `run_ns + wait_ns + blocked_ns` is the vCPU's lifetime
/// (waiting includes time parked by the cap).
#[derive(Debug, Default, Clone, Copy)]
pub struct VcpuStats {
    pub run_ns: u64,
    pub wait_ns: u64,
    pub blocked_ns: u64,
    /// Times it was descheduled while still runnable and not yielding (a higher
    /// priority, its slice ended with others waiting, its affinity changed, its cap).
    pub preemptions: u64,
    /// Times it started running on a CPU other than the one it last ran on.
    pub migrations: u64,
}

/// Where a vCPU is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuState {
    Running(CpuId),
    Queued(CpuId),
    Blocked,
    /// Runnable but held back by its domain's cap.
    Parked,
}

struct Vcpu {
    affinity: CpuSet,
    credit: i32,
    /// Fraction of a credit (1/1024) granted but not yet added to `credit`.
    frac: u64,
    /// Run time charged but worth less than one credit.
    rem_ns: u64,
    prio: Priority,
    place: VcpuState,
    /// On the active list: earns credit at accounting.
    active: bool,
    /// Over its cap: may not run until accounting gives it credit again.
    parked: bool,
    /// Yielded: the next `schedule` puts it behind the next lower-priority vCPU.
    yielded: bool,
    last_cpu: Option<CpuId>,
    /// When `place` last changed (for the stats).
    since: u64,
    created: u64,
    stats: VcpuStats,
}

struct Domain {
    weight: u32,
    cap: u32,
    /// Its vCPUs on the active list.
    active: u32,
}

struct Cpu {
    running: Option<VcpuRef>,
    /// Runnable vCPUs waiting here, by priority, FIFO within a priority.
    queue: VecDeque<VcpuRef>,
    /// When the runner started its current stint (for the rate limit).
    run_start: u64,
    /// Up to when the runner has been charged.
    last_charge: u64,
    slice_end: u64,
    last_tick: Option<u64>,
    last_steal: Option<u64>,
}

/// The scheduler state of one CPU pool.
pub struct Credit {
    cpus: Vec<Cpu>,
    params: Params,
    domains: BTreeMap<u32, Domain>,
    vcpus: BTreeMap<VcpuRef, Vcpu>,
    /// Ticks seen on CPU 0 (every third one is an accounting step).
    ticks0: u64,
}

fn check_slice(slice_ns: u64) -> Result<(), SchedError> {
    if (MIN_SLICE_NS..=MAX_SLICE_NS).contains(&slice_ns) { Ok(()) } else { Err(SchedError::BadSlice(slice_ns)) }
}

fn check_ratelimit(ratelimit_ns: u64, slice_ns: u64) -> Result<(), SchedError> {
    if ratelimit_ns == 0 || ((MIN_RATELIMIT_NS..=MAX_RATELIMIT_NS).contains(&ratelimit_ns) && ratelimit_ns <= slice_ns)
    {
        Ok(())
    } else {
        Err(SchedError::BadRateLimit(ratelimit_ns))
    }
}

fn check_weight(weight: u32) -> Result<(), SchedError> {
    if (1..=MAX_WEIGHT).contains(&weight) { Ok(()) } else { Err(SchedError::BadWeight(weight)) }
}

fn domain_range(domain: u32) -> core::ops::RangeInclusive<VcpuRef> {
    VcpuRef { domain, vcpu: 0 }..=VcpuRef { domain, vcpu: u32::MAX }
}

/// Moves `vc` to `place`, adding the time spent in the old place to its stats.
fn set_place(vc: &mut Vcpu, place: VcpuState, now: u64) {
    let spent = now.saturating_sub(vc.since);
    match vc.place {
        VcpuState::Running(_) => vc.stats.run_ns = vc.stats.run_ns.saturating_add(spent),
        VcpuState::Queued(_) | VcpuState::Parked => vc.stats.wait_ns = vc.stats.wait_ns.saturating_add(spent),
        VcpuState::Blocked => vc.stats.blocked_ns = vc.stats.blocked_ns.saturating_add(spent),
    }
    vc.since = vc.since.max(now);
    vc.place = place;
}

impl Credit {
    pub fn new(cpus: usize, params: Params) -> Result<Self, SchedError> {
        if !(1..=MAX_CPUS).contains(&cpus) {
            return Err(SchedError::BadCpuCount(cpus));
        }
        if !(MIN_TICK_NS..=MAX_TICK_NS).contains(&params.tick_ns) {
            return Err(SchedError::BadTick(params.tick_ns));
        }
        check_slice(params.slice_ns)?;
        check_ratelimit(params.ratelimit_ns, params.slice_ns)?;
        let cpus = (0..cpus)
            .map(|_| Cpu {
                running: None,
                queue: VecDeque::new(),
                run_start: 0,
                last_charge: 0,
                slice_end: 0,
                last_tick: None,
                last_steal: None,
            })
            .collect();
        Ok(Credit { cpus, params, domains: BTreeMap::new(), vcpus: BTreeMap::new(), ticks0: 0 })
    }

    pub fn cpus(&self) -> usize {
        self.cpus.len()
    }

    pub fn params(&self) -> Params {
        self.params
    }

    /// Credits in one accounting period (300 by default); also the bound on a vCPU's
    /// credit (-300 .. +300).
    fn period_credits(&self) -> i32 {
        let c = self.params.tick_ns.saturating_mul(TICKS_PER_PERIOD) / NS_PER_CREDIT;
        i32::try_from(c).unwrap_or(i32::MAX)
    }

    // ----- Configuration -----

    /// A new domain (no vCPUs yet). `weight` 1..=65535, `cap` 0 (none) ..= 100 * cpus.
    pub fn add_domain(&mut self, domain: u32, weight: u32, cap: u32) -> Result<(), SchedError> {
        if self.domains.contains_key(&domain) {
            return Err(SchedError::DomainExists(domain));
        }
        check_weight(weight)?;
        self.check_cap(cap)?;
        self.domains.insert(domain, Domain { weight, cap, active: 0 });
        Ok(())
    }

    fn check_cap(&self, cap: u32) -> Result<(), SchedError> {
        let max = u64::try_from(self.cpus.len()).unwrap_or(u64::MAX).saturating_mul(100);
        if u64::from(cap) <= max { Ok(()) } else { Err(SchedError::BadCap(cap)) }
    }

    /// Removes a domain and its vCPUs. They leave the queues at once; a running one stops
    /// at its CPU's next `schedule` (the caller should kick the CPUs that run them).
    pub fn remove_domain(&mut self, domain: u32, now: u64) -> Result<(), SchedError> {
        let _ = now;
        if self.domains.remove(&domain).is_none() {
            return Err(SchedError::NoSuchDomain(domain));
        }
        let gone: Vec<(VcpuRef, VcpuState)> =
            self.vcpus.range(domain_range(domain)).map(|(&v, vc)| (v, vc.place)).collect();
        for (v, place) in gone {
            match place {
                VcpuState::Queued(c) => self.unqueue(c, v),
                VcpuState::Running(c) => {
                    if let Some(cpu) = self.cpus.get_mut(c)
                        && cpu.running == Some(v)
                    {
                        cpu.running = None;
                    }
                }
                VcpuState::Blocked | VcpuState::Parked => {}
            }
            self.vcpus.remove(&v);
        }
        Ok(())
    }

    /// A new vCPU of an existing domain. It starts blocked (call `wake` to make it
    /// runnable), with no credit, UNDER, and off the active list (as in Xen: it starts
    /// earning when a tick finds it running). CPUs outside the pool are dropped from
    /// `affinity`.
    pub fn add_vcpu(&mut self, v: VcpuRef, affinity: CpuSet, now: u64) -> Result<(), SchedError> {
        if !self.domains.contains_key(&v.domain) {
            return Err(SchedError::NoSuchDomain(v.domain));
        }
        if self.vcpus.contains_key(&v) {
            return Err(SchedError::VcpuExists(v));
        }
        let affinity = self.clip(affinity)?;
        self.vcpus.insert(
            v,
            Vcpu {
                affinity,
                credit: 0,
                frac: 0,
                rem_ns: 0,
                prio: Priority::Under,
                place: VcpuState::Blocked,
                active: false,
                parked: false,
                yielded: false,
                last_cpu: None,
                since: now,
                created: now,
                stats: VcpuStats::default(),
            },
        );
        Ok(())
    }

    fn clip(&self, affinity: CpuSet) -> Result<CpuSet, SchedError> {
        let clipped = CpuSet(affinity.0 & CpuSet::all(self.cpus.len()).0);
        if clipped.is_empty() { Err(SchedError::EmptyAffinity) } else { Ok(clipped) }
    }

    /// Takes effect at the next accounting step.
    pub fn set_weight(&mut self, domain: u32, weight: u32) -> Result<(), SchedError> {
        check_weight(weight)?;
        let d = self.domains.get_mut(&domain).ok_or(SchedError::NoSuchDomain(domain))?;
        d.weight = weight;
        Ok(())
    }

    /// Takes effect at the next charge (parking) and accounting step (unparking; as in
    /// Xen, a parked vCPU is released only by accounting, even if the cap is lifted).
    pub fn set_cap(&mut self, domain: u32, cap: u32) -> Result<(), SchedError> {
        self.check_cap(cap)?;
        let d = self.domains.get_mut(&domain).ok_or(SchedError::NoSuchDomain(domain))?;
        d.cap = cap;
        Ok(())
    }

    /// Changes where `v` may run. A queued vCPU outside its new set moves at once (the
    /// returned CPU, if any, should be kicked to pick it up); a running one is moved at
    /// its CPU's next decision, and that CPU is returned to be kicked.
    pub fn set_affinity(&mut self, v: VcpuRef, affinity: CpuSet, now: u64) -> Result<Option<CpuId>, SchedError> {
        let affinity = self.clip(affinity)?;
        let vc = self.vcpus.get_mut(&v).ok_or(SchedError::NoSuchVcpu(v))?;
        vc.affinity = affinity;
        match vc.place {
            VcpuState::Running(c) if !affinity.contains(c) => Ok(Some(c)),
            VcpuState::Queued(c) if !affinity.contains(c) => {
                self.unqueue(c, v);
                Ok(self.enqueue(v, now))
            }
            _ => Ok(None),
        }
    }

    /// New slice and rate limit (the tick is fixed at creation). Slice 1..=1000 ms; rate
    /// limit 0 or 100 us..=500 ms and at most the slice. They apply from the next decision.
    pub fn set_params(&mut self, slice_ns: u64, ratelimit_ns: u64) -> Result<(), SchedError> {
        check_slice(slice_ns)?;
        check_ratelimit(ratelimit_ns, slice_ns)?;
        self.params.slice_ns = slice_ns;
        self.params.ratelimit_ns = ratelimit_ns;
        Ok(())
    }

    // ----- Events -----

    /// The vCPU became runnable (an interrupt or timer is pending after HLT). Returns the
    /// CPU to kick: the CPU it was queued on if that CPU idles or runs something of lower
    /// priority, or else an idle CPU that may run it (which will steal it).
    pub fn wake(&mut self, v: VcpuRef, now: u64) -> Option<CpuId> {
        let vc = self.vcpus.get_mut(&v)?;
        if vc.place != VcpuState::Blocked {
            // Already runnable (or running): nothing to do, as in Xen.
            return None;
        }
        if vc.parked {
            set_place(vc, VcpuState::Parked, now);
            return None;
        }
        // A genuine wake of an UNDER vCPU earns BOOST so that I/O-bound vCPUs get the
        // CPU quickly; OVER ones do not (they have used their share).
        if vc.prio == Priority::Under {
            vc.prio = Priority::Boost;
        }
        self.enqueue(v, now)
    }

    /// The vCPU running on `cpu` blocked (HLT); the caller then calls `schedule(cpu)`.
    pub fn block(&mut self, cpu: CpuId, now: u64) {
        self.charge_runner(cpu, now);
        let Some(c) = self.cpus.get_mut(cpu) else { return };
        let Some(v) = c.running.take() else { return };
        if let Some(vc) = self.vcpus.get_mut(&v) {
            vc.yielded = false;
            set_place(vc, VcpuState::Blocked, now);
        }
    }

    /// The vCPU running on `cpu` yields; the caller then calls `schedule(cpu)`, which
    /// puts it behind the next lower-priority vCPU of this CPU if there is one (Xen's
    /// yield) and ignores the rate limit for it.
    pub fn yield_cpu(&mut self, cpu: CpuId, now: u64) {
        let _ = now;
        let Some(v) = self.cpus.get(cpu).and_then(|c| c.running) else { return };
        if let Some(vc) = self.vcpus.get_mut(&v) {
            vc.yielded = true;
        }
    }

    /// The tick of `cpu`: charges its runner, ends its BOOST, puts it back on the active
    /// list; on CPU 0 every third tick is also the accounting step for the whole pool.
    /// Returns CPUs to kick (for vCPUs that accounting un-parked or parked). The caller
    /// calls `schedule(cpu)` after it.
    pub fn tick(&mut self, cpu: CpuId, now: u64) -> Vec<CpuId> {
        let mut kick = CpuSet::EMPTY;
        let Some(c) = self.cpus.get_mut(cpu) else { return Vec::new() };
        c.last_tick = Some(now);
        self.charge_runner(cpu, now);
        if let Some(v) = self.cpus[cpu].running {
            // Found running at a tick: it uses real CPU time, so BOOST ends and it earns.
            if let Some(vc) = self.vcpus.get_mut(&v)
                && vc.prio == Priority::Boost
            {
                vc.prio = Priority::Under;
            }
            self.set_active(v, true);
        }
        if cpu == 0 {
            self.ticks0 = self.ticks0.wrapping_add(1);
            if self.ticks0.is_multiple_of(TICKS_PER_PERIOD) {
                kick.0 |= self.account(now).0;
            }
        }
        kick.iter().collect()
    }

    /// Decides what `cpu` runs next. Charges the runner; keeps it unless it blocked,
    /// yielded, was parked, may no longer run here, or something of strictly higher
    /// priority waits (and the rate limit allows preemption), or its slice ended with an
    /// equal-priority vCPU waiting; steals when the local best is OVER or nothing.
    pub fn schedule(&mut self, cpu: CpuId, now: u64) -> Decision {
        let mut kick = CpuSet::EMPTY;
        if cpu >= self.cpus.len() {
            return Decision { run: None, until: now.saturating_add(self.params.tick_ns), kick };
        }
        self.charge_runner(cpu, now);

        // 1. May the runner go on?
        let mut keep: Option<(VcpuRef, Priority)> = None;
        if let Some(v) = self.cpus[cpu].running {
            let info = self.vcpus.get(&v).filter(|vc| vc.place == VcpuState::Running(cpu));
            let info = info.map(|vc| (vc.parked, vc.affinity.contains(cpu), vc.yielded, vc.prio));
            match info {
                // Its domain was removed: it just stops.
                None => self.cpus[cpu].running = None,
                Some((true, ..)) => {
                    self.cpus[cpu].running = None;
                    if let Some(vc) = self.vcpus.get_mut(&v) {
                        vc.stats.preemptions = vc.stats.preemptions.saturating_add(1);
                        set_place(vc, VcpuState::Parked, now);
                    }
                }
                Some((_, false, ..)) => {
                    self.cpus[cpu].running = None;
                    if let Some(vc) = self.vcpus.get_mut(&v) {
                        vc.stats.preemptions = vc.stats.preemptions.saturating_add(1);
                    }
                    if let Some(c) = self.enqueue(v, now) {
                        kick.insert(c);
                    }
                }
                Some((_, _, true, prio)) => {
                    self.cpus[cpu].running = None;
                    if let Some(vc) = self.vcpus.get_mut(&v) {
                        vc.yielded = false;
                    }
                    self.insert(cpu, v, prio, true, now);
                }
                Some((_, _, false, prio)) => keep = Some((v, prio)),
            }
        }

        // 2. The alternatives: the local head, else (when that is OVER or nothing) a
        // stolen vCPU of strictly higher priority.
        let c = &self.cpus[cpu];
        let ran = now.saturating_sub(c.run_start);
        let ratelimit = self.params.ratelimit_ns;
        let rate_limited = keep.is_some() && ratelimit > 0 && ran < ratelimit;
        let slice_over = keep.is_some() && now >= c.slice_end;
        let head = c.queue.front().and_then(|&v| Some((v, self.vcpus.get(&v)?.prio)));
        let local_best = keep.map(|k| k.1).max(head.map(|h| h.1));
        let steal_due = c.last_steal.is_none_or(|t| now < t || now - t >= STEAL_INTERVAL_NS);
        let may_steal = match local_best {
            // Work conservation beats the steal interval: never idle with work around.
            None => true,
            Some(p) => p <= Priority::Over && !rate_limited && steal_due,
        };
        let stolen = if may_steal { self.find_steal(cpu, local_best.unwrap_or(Priority::Idle)) } else { None };
        let candidate = stolen.or(head.map(|(v, p)| (v, p, cpu)));

        // 3. Choose.
        let mut wait_for_ratelimit = false;
        let take = match (keep, candidate) {
            (Some((_, rp)), Some(cand)) if cand.1 > rp => {
                if rate_limited {
                    wait_for_ratelimit = true;
                    None
                } else {
                    Some(cand)
                }
            }
            // Slice over and an equal-priority vCPU waits: round robin.
            (Some((_, rp)), Some(cand)) if slice_over && cand.1 == rp => Some(cand),
            (Some(_), _) => None,
            (None, cand) => cand,
        };

        if let Some((next, _, from)) = take {
            if let Some((prev, prio)) = keep.take() {
                if let Some(vc) = self.vcpus.get_mut(&prev) {
                    vc.stats.preemptions = vc.stats.preemptions.saturating_add(1);
                }
                self.cpus[cpu].running = None;
                self.insert(cpu, prev, prio, false, now);
            }
            self.unqueue(from, next);
            if from != cpu {
                self.cpus[cpu].last_steal = Some(now);
            }
            self.start(cpu, next, now);
        } else if keep.is_some() && slice_over {
            // Nothing else of its priority waits: it goes on with a new slice.
            self.cpus[cpu].slice_end = now.saturating_add(self.params.slice_ns);
        }

        // 4. Whatever waits that an idle CPU could run: kick that CPU.
        kick.0 |= self.kick_idle_for_queues(cpu).0;

        // 5. When to decide again.
        let c = &self.cpus[cpu];
        let next_tick = c.last_tick.map(|t| t.saturating_add(self.params.tick_ns)).filter(|&t| t > now);
        let next_tick = next_tick.unwrap_or_else(|| now.saturating_add(self.params.tick_ns));
        let run = c.running;
        let until = match run {
            None => next_tick,
            Some(v) => {
                let mut until = c.slice_end.min(next_tick);
                if wait_for_ratelimit {
                    let end = c.run_start.saturating_add(ratelimit).max(now.saturating_add(MIN_RATELIMIT_TIMER_NS));
                    until = until.min(end);
                }
                if let Some(t) = self.cap_deadline(v, now) {
                    until = until.min(t);
                }
                until.max(now.saturating_add(1))
            }
        };
        kick.0 &= !CpuSet::single(cpu).0;
        Decision { run, until, kick }
    }

    // ----- Queries -----

    pub fn running(&self, cpu: CpuId) -> Option<VcpuRef> {
        self.cpus.get(cpu).and_then(|c| c.running)
    }

    pub fn priority(&self, v: VcpuRef) -> Option<Priority> {
        self.vcpus.get(&v).map(|vc| vc.prio)
    }

    pub fn credit(&self, v: VcpuRef) -> Option<i32> {
        self.vcpus.get(&v).map(|vc| vc.credit)
    }

    pub fn state(&self, v: VcpuRef) -> Option<VcpuState> {
        self.vcpus.get(&v).map(|vc| vc.place)
    }

    /// A domain's weight and cap.
    pub fn domain_params(&self, domain: u32) -> Option<(u32, u32)> {
        self.domains.get(&domain).map(|d| (d.weight, d.cap))
    }

    /// The CPU a vCPU runs on or last ran on.
    pub fn last_cpu(&self, v: VcpuRef) -> Option<CpuId> {
        self.vcpus.get(&v).and_then(|vc| match vc.place {
            VcpuState::Running(cpu) => Some(cpu),
            _ => vc.last_cpu,
        })
    }

    pub fn affinity(&self, v: VcpuRef) -> Option<CpuSet> {
        self.vcpus.get(&v).map(|vc| vc.affinity)
    }

    /// Whether the vCPU is on the active (earning) list.
    pub fn is_active(&self, v: VcpuRef) -> Option<bool> {
        self.vcpus.get(&v).map(|vc| vc.active)
    }

    /// Whether any vCPU is blocked (halted, paused, waiting for STARTUP): when none is,
    /// the run loop's wake-up scan has nothing to look at.
    pub fn has_blocked(&self) -> bool {
        self.vcpus.values().any(|v| v.place == VcpuState::Blocked)
    }

    /// Whether a vCPU waits on `cpu`'s run queue.
    pub fn has_queued(&self, cpu: CpuId) -> bool {
        self.cpus.get(cpu).is_some_and(|c| !c.queue.is_empty())
    }

    /// The vCPUs waiting on `cpu`, head first.
    pub fn queue(&self, cpu: CpuId) -> Vec<VcpuRef> {
        self.cpus.get(cpu).map(|c| c.queue.iter().copied().collect()).unwrap_or_default()
    }

    pub fn vcpu_refs(&self) -> Vec<VcpuRef> {
        self.vcpus.keys().copied().collect()
    }

    /// Stats up to the vCPU's last change of state.
    pub fn stats(&self, v: VcpuRef) -> Option<VcpuStats> {
        self.vcpus.get(&v).map(|vc| vc.stats)
    }

    /// Stats up to `now`, counting the current state's time so far; with the lifetime
    /// (`now` minus the time it was added).
    pub fn stats_at(&self, v: VcpuRef, now: u64) -> Option<(VcpuStats, u64)> {
        let vc = self.vcpus.get(&v)?;
        let mut s = vc.stats;
        let spent = now.saturating_sub(vc.since);
        match vc.place {
            VcpuState::Running(_) => s.run_ns = s.run_ns.saturating_add(spent),
            VcpuState::Queued(_) | VcpuState::Parked => s.wait_ns = s.wait_ns.saturating_add(spent),
            VcpuState::Blocked => s.blocked_ns = s.blocked_ns.saturating_add(spent),
        }
        Some((s, now.saturating_sub(vc.created)))
    }

    /// Checks the internal invariants: every vCPU is in exactly one place and the
    /// places agree with the CPUs' runners and queues. For tests and debug builds.
    pub fn check(&self) -> Result<(), &'static str> {
        let mut queued = 0usize;
        for (&v, vc) in &self.vcpus {
            if !self.domains.contains_key(&v.domain) {
                return Err("a vCPU outlived its domain");
            }
            match vc.place {
                VcpuState::Running(c) => {
                    if self.cpus.get(c).and_then(|cpu| cpu.running) != Some(v) {
                        return Err("a running vCPU is not its CPU's runner");
                    }
                }
                VcpuState::Queued(c) => {
                    queued += 1;
                    let Some(cpu) = self.cpus.get(c) else { return Err("queued on a CPU that does not exist") };
                    if cpu.queue.iter().filter(|&&w| w == v).count() != 1 {
                        return Err("a queued vCPU is not exactly once in its CPU's queue");
                    }
                    if !vc.affinity.contains(c) {
                        return Err("a vCPU is queued outside its affinity");
                    }
                }
                VcpuState::Parked => {
                    if !vc.parked {
                        return Err("a vCPU is parked without the parked flag");
                    }
                }
                VcpuState::Blocked => {}
            }
            if vc.affinity.is_empty() {
                return Err("a vCPU has an empty affinity");
            }
        }
        let mut in_queues = 0usize;
        for (c, cpu) in self.cpus.iter().enumerate() {
            if let Some(v) = cpu.running
                && self.vcpus.get(&v).map(|vc| vc.place) != Some(VcpuState::Running(c))
            {
                return Err("a CPU's runner is not in the running state");
            }
            for v in &cpu.queue {
                in_queues += 1;
                if self.vcpus.get(v).map(|vc| vc.place) != Some(VcpuState::Queued(c)) {
                    return Err("a queue holds a vCPU that is not queued there");
                }
            }
        }
        if in_queues != queued {
            return Err("queue entries and queued vCPUs differ");
        }
        for (&d, dom) in &self.domains {
            let active = self.vcpus.range(domain_range(d)).filter(|(_, vc)| vc.active).count();
            if usize::try_from(dom.active).ok() != Some(active) {
                return Err("a domain's active count is wrong");
            }
        }
        Ok(())
    }

    // ----- Internals -----

    /// Debits the runner of `cpu` for the run time since it was last charged, and parks
    /// it if that takes its domain over the cap.
    fn charge_runner(&mut self, cpu: CpuId, now: u64) {
        let Some(c) = self.cpus.get_mut(cpu) else { return };
        let elapsed = now.saturating_sub(c.last_charge);
        c.last_charge = c.last_charge.max(now);
        let Some(v) = c.running else { return };
        let threshold = self.cap_threshold(v.domain);
        let Some(vc) = self.vcpus.get_mut(&v) else { return };
        let total = vc.rem_ns.saturating_add(elapsed);
        vc.rem_ns = total % NS_PER_CREDIT;
        let burn = i32::try_from(total / NS_PER_CREDIT).unwrap_or(i32::MAX);
        vc.credit = vc.credit.saturating_sub(burn);
        let spent_hoard = !vc.active && vc.credit < 0;
        if spent_hoard {
            // Beyond Xen (which re-activates only at a tick that finds it running): an
            // inactive vCPU that has used up its credit is no longer hoarding, so it earns
            // again. Otherwise an I/O-bound vCPU that ticks never catch drifts deep into
            // debt and, when a tick finally does catch it, is OVER (no BOOST) for periods.
            self.set_active(v, true);
        }
        let Some(vc) = self.vcpus.get_mut(&v) else { return };
        if let Some(t) = threshold
            && vc.credit < -t
            && !vc.parked
        {
            vc.parked = true;
            // A parked vCPU must keep earning, or nothing would ever un-park it.
            self.set_active(v, true);
        }
    }

    /// The credit below whose negative a vCPU of a capped domain is parked: the cap's
    /// worth per period, split among the domain's active vCPUs (rounded up, as Xen).
    fn cap_threshold(&self, domain: u32) -> Option<i32> {
        let d = self.domains.get(&domain)?;
        if d.cap == 0 {
            return None;
        }
        let per_period = i64::from(self.period_credits());
        let worth = (i64::from(d.cap) * per_period + 99) / 100;
        let n = i64::from(d.active.max(1));
        i32::try_from((worth + n - 1) / n).ok()
    }

    /// When the runner `v` will have used its cap (it is parked one credit past it).
    fn cap_deadline(&self, v: VcpuRef, now: u64) -> Option<u64> {
        let t = self.cap_threshold(v.domain)?;
        let vc = self.vcpus.get(&v)?;
        let left = i64::from(vc.credit) + i64::from(t) + 1;
        let left = u64::try_from(left).unwrap_or(0);
        Some(now.saturating_add(left.saturating_mul(NS_PER_CREDIT).saturating_sub(vc.rem_ns)))
    }

    fn set_active(&mut self, v: VcpuRef, active: bool) {
        let Some(vc) = self.vcpus.get_mut(&v) else { return };
        if vc.active == active {
            return;
        }
        vc.active = active;
        if let Some(d) = self.domains.get_mut(&v.domain) {
            d.active = if active { d.active.saturating_add(1) } else { d.active.saturating_sub(1) };
        }
    }

    /// Starts `v` on `cpu` (it was just taken off a queue).
    fn start(&mut self, cpu: CpuId, v: VcpuRef, now: u64) {
        let slice = self.params.slice_ns;
        let Some(vc) = self.vcpus.get_mut(&v) else { return };
        if vc.last_cpu.is_some_and(|l| l != cpu) {
            vc.stats.migrations = vc.stats.migrations.saturating_add(1);
        }
        vc.last_cpu = Some(cpu);
        set_place(vc, VcpuState::Running(cpu), now);
        if let Some(c) = self.cpus.get_mut(cpu) {
            c.running = Some(v);
            c.run_start = now;
            c.last_charge = now;
            c.slice_end = now.saturating_add(slice);
        }
    }

    /// Puts the runnable `v` on the queue of a CPU it may run on and returns the CPU to
    /// kick, if any. The CPU is the one it last ran on if its affinity allows (its cache
    /// is warm there), else an idle allowed CPU, else the allowed CPU with least work.
    fn enqueue(&mut self, v: VcpuRef, now: u64) -> Option<CpuId> {
        let vc = self.vcpus.get(&v)?;
        let (aff, prio) = (vc.affinity, vc.prio);
        let target = match vc.last_cpu {
            Some(l) if aff.contains(l) && l < self.cpus.len() => l,
            _ => {
                let load = |c: CpuId| self.cpus[c].queue.len() + usize::from(self.cpus[c].running.is_some());
                aff.iter().filter(|&c| c < self.cpus.len()).min_by_key(|&c| (load(c), c))?
            }
        };
        self.insert(target, v, prio, false, now);
        if self.cpus[target].running.is_none() {
            return Some(target);
        }
        // An idle CPU takes it sooner than a preemption would (and without one).
        if let Some(idle) = self.idle_cpu_in(aff, target) {
            return Some(idle);
        }
        let runner_prio = self.cpus[target].running.and_then(|r| self.vcpus.get(&r)).map_or(Priority::Idle, |r| r.prio);
        (prio > runner_prio).then_some(target)
    }

    /// An idle CPU (no runner) in `set`, other than `except`; one with nothing queued
    /// (so truly free) if there is one.
    fn idle_cpu_in(&self, set: CpuSet, except: CpuId) -> Option<CpuId> {
        let idle = |c: &CpuId| *c != except && self.cpus.get(*c).is_some_and(|cpu| cpu.running.is_none());
        let free = set.iter().filter(idle).find(|&c| self.cpus[c].queue.is_empty());
        free.or_else(|| set.iter().find(idle))
    }

    /// Idle CPUs (other than `cpu`) that could run something waiting on any queue: one
    /// per waiting vCPU, so that no CPU idles while work it may run is queued. Several
    /// wake-ups may have kicked the same idle CPU, which then took only one of them; the
    /// next decision anywhere sends the others to the CPUs still idle.
    fn kick_idle_for_queues(&self, cpu: CpuId) -> CpuSet {
        let mut kick = CpuSet::EMPTY;
        let mut idle = CpuSet::EMPTY;
        for (i, c) in self.cpus.iter().enumerate() {
            if i != cpu && c.running.is_none() {
                idle.insert(i);
            }
        }
        for c in &self.cpus {
            for v in &c.queue {
                if idle.is_empty() {
                    return kick;
                }
                let aff = self.vcpus.get(v).map_or(CpuSet::EMPTY, |vc| vc.affinity);
                if let Some(i) = CpuSet(aff.0 & idle.0).iter().next() {
                    kick.insert(i);
                    idle.0 &= !CpuSet::single(i).0;
                }
            }
        }
        kick
    }

    /// Inserts `v` (queued from now on) into `cpu`'s queue after all vCPUs of its
    /// priority or higher; a yielding vCPU also goes behind the next one, as in Xen.
    fn insert(&mut self, cpu: CpuId, v: VcpuRef, prio: Priority, yielded: bool, now: u64) {
        let Some(vc) = self.vcpus.get_mut(&v) else { return };
        set_place(vc, VcpuState::Queued(cpu), now);
        let vcpus = &self.vcpus;
        let Some(c) = self.cpus.get_mut(cpu) else { return };
        let prio_of = |w: &VcpuRef| vcpus.get(w).map_or(Priority::Idle, |x| x.prio);
        let mut pos = c.queue.iter().position(|w| prio_of(w) < prio).unwrap_or(c.queue.len());
        if yielded && pos < c.queue.len() {
            pos += 1;
        }
        c.queue.insert(pos, v);
    }

    /// Takes `v` off `cpu`'s queue (its new place is set by the caller).
    fn unqueue(&mut self, cpu: CpuId, v: VcpuRef) {
        if let Some(c) = self.cpus.get_mut(cpu) {
            c.queue.retain(|&w| w != v);
        }
    }

    /// The highest-priority vCPU queued on another CPU that may run on `cpu` and has a
    /// priority above `above`: (vCPU, priority, its CPU). Ties go to the first found,
    /// scanning from the next CPU round (as Xen does).
    fn find_steal(&self, cpu: CpuId, above: Priority) -> Option<(VcpuRef, Priority, CpuId)> {
        let n = self.cpus.len();
        let mut best: Option<(VcpuRef, Priority, CpuId)> = None;
        for i in 1..n {
            let c = (cpu + i) % n;
            for &v in &self.cpus[c].queue {
                let Some(vc) = self.vcpus.get(&v) else { continue };
                if vc.prio > above && vc.affinity.contains(cpu) && best.is_none_or(|b| vc.prio > b.1) {
                    best = Some((v, vc.prio, c));
                }
            }
        }
        best
    }

    /// The accounting step: hands out a period's credit to the active domains by weight
    /// and re-derives priorities, parks and un-parks. Returns CPUs to kick.
    fn account(&mut self, now: u64) -> CpuSet {
        let mut kick = CpuSet::EMPTY;
        let period = self.period_credits();
        // Charge every runner up to now so the credit seen here is exact.
        for c in 0..self.cpus.len() {
            self.charge_runner(c, now);
        }

        // Water filling: shares by weight, each domain limited to what its active vCPUs
        // can burn and to its cap; what a domain cannot take goes to the others.
        let period_fp = u64::try_from(period).unwrap_or(0) << FRAC_BITS;
        let mut doms: Vec<(u32, u64, u64, Option<u64>)> = Vec::new(); // id, weight, limit, grant
        for (&id, d) in &self.domains {
            if d.active == 0 {
                continue;
            }
            let mut limit = period_fp.saturating_mul(u64::from(d.active));
            if d.cap != 0 {
                let worth = (u64::from(d.cap) * u64::try_from(period).unwrap_or(0)).div_ceil(100);
                limit = limit.min(worth << FRAC_BITS);
            }
            doms.push((id, u64::from(d.weight), limit, None));
        }
        let mut left = period_fp.saturating_mul(u64::try_from(self.cpus.len()).unwrap_or(0));
        loop {
            let weights: u64 = doms.iter().filter(|d| d.3.is_none()).map(|d| d.1).sum();
            if weights == 0 {
                break;
            }
            let mut limited = 0u64;
            for d in doms.iter_mut().filter(|d| d.3.is_none()) {
                if left.saturating_mul(d.1) / weights >= d.2 {
                    d.3 = Some(d.2);
                    limited = limited.saturating_add(d.2);
                }
            }
            if limited == 0 {
                for d in doms.iter_mut().filter(|d| d.3.is_none()) {
                    d.3 = Some(left.saturating_mul(d.1) / weights);
                }
                break;
            }
            left = left.saturating_sub(limited);
        }
        // In domain order (`doms` comes from the ordered map), so a binary search finds
        // them; a Vec, not another map type, keeps the image small.
        let thresholds: Vec<(u32, i32)> = doms.iter().filter_map(|d| Some((d.0, self.cap_threshold(d.0)?))).collect();
        for &(id, _, _, grant) in &doms {
            let n = self.domains.get(&id).map_or(1, |d| u64::from(d.active.max(1)));
            let each = grant.unwrap_or(0) / n;
            for (_, vc) in self.vcpus.range_mut(domain_range(id)) {
                if vc.active {
                    vc.frac = vc.frac.saturating_add(each);
                    vc.credit = vc.credit.saturating_add(i32::try_from(vc.frac >> FRAC_BITS).unwrap_or(i32::MAX));
                    vc.frac &= FRAC_MASK;
                }
            }
        }

        // Bounds, priorities, parking (Xen's csched_acct).
        let active: Vec<VcpuRef> = self.vcpus.iter().filter(|(_, vc)| vc.active).map(|(&v, _)| v).collect();
        for v in active {
            let threshold =
                thresholds.binary_search_by_key(&v.domain, |t| t.0).ok().and_then(|i| thresholds.get(i)).map(|t| t.1);
            let Some(vc) = self.vcpus.get_mut(&v) else { continue };
            if vc.credit < 0 {
                let mut unqueue_from = None;
                vc.prio = Priority::Over;
                if let Some(t) = threshold
                    && vc.credit < -t
                    && !vc.parked
                {
                    vc.parked = true;
                    match vc.place {
                        VcpuState::Queued(c) => {
                            set_place(vc, VcpuState::Parked, now);
                            unqueue_from = Some(c);
                        }
                        // It stops at its CPU's next decision: make that now.
                        VcpuState::Running(c) => kick.insert(c),
                        VcpuState::Blocked | VcpuState::Parked => {}
                    }
                }
                if vc.credit < -period {
                    vc.credit = -period;
                }
                if let Some(c) = unqueue_from {
                    self.unqueue(c, v);
                }
            } else {
                // BOOST lasts until a tick finds the vCPU running (the spec); Xen would
                // also end it here.
                if vc.prio != Priority::Boost {
                    vc.prio = Priority::Under;
                }
                if vc.parked {
                    vc.parked = false;
                    if vc.place == VcpuState::Parked
                        && let Some(c) = self.enqueue(v, now)
                    {
                        kick.insert(c);
                    }
                }
                let Some(vc) = self.vcpus.get_mut(&v) else { continue };
                if vc.credit > period {
                    // Stop earning; keep half so that it starts a little ahead when a
                    // tick finds it running again.
                    vc.credit /= 2;
                    self.set_active(v, false);
                }
            }
        }

        // Inactive vCPUs earn nothing and keep their priority (as in Xen), but their
        // credit too stays within the bounds.
        for vc in self.vcpus.values_mut() {
            if vc.credit < -period {
                vc.credit = -period;
            }
        }

        // Priorities changed: re-sort the queues (stable, so FIFO within a priority is
        // kept, like Xen's runq_sort).
        let vcpus = &self.vcpus;
        for c in &mut self.cpus {
            c.queue.make_contiguous().sort_by_key(|w| Reverse(vcpus.get(w).map_or(Priority::Idle, |x| x.prio)));
        }
        kick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = NS_PER_MS;

    fn v(domain: u32, vcpu: u32) -> VcpuRef {
        VcpuRef { domain, vcpu }
    }

    #[test]
    fn validation_rejects_out_of_range_values_with_the_right_variant() {
        assert_eq!(Credit::new(0, Params::default()).err(), Some(SchedError::BadCpuCount(0)));
        assert_eq!(Credit::new(65, Params::default()).err(), Some(SchedError::BadCpuCount(65)));
        let p = Params { tick_ns: 0, ..Params::default() };
        assert_eq!(Credit::new(1, p).err(), Some(SchedError::BadTick(0)));
        let mut s = Credit::new(2, Params::default()).unwrap();
        assert_eq!(s.add_domain(1, 0, 0), Err(SchedError::BadWeight(0)));
        assert_eq!(s.add_domain(1, 65536, 0), Err(SchedError::BadWeight(65536)));
        assert_eq!(s.add_domain(1, 256, 201), Err(SchedError::BadCap(201)));
        assert_eq!(s.add_domain(1, 256, 200), Ok(()));
        assert_eq!(s.add_domain(1, 256, 0), Err(SchedError::DomainExists(1)));
        assert_eq!(s.set_weight(2, 256), Err(SchedError::NoSuchDomain(2)));
        assert_eq!(s.set_cap(1, 300), Err(SchedError::BadCap(300)));
        assert_eq!(s.add_vcpu(v(1, 0), CpuSet(0b100), 0), Err(SchedError::EmptyAffinity));
        assert_eq!(s.add_vcpu(v(2, 0), CpuSet(1), 0), Err(SchedError::NoSuchDomain(2)));
        assert_eq!(s.add_vcpu(v(1, 0), CpuSet(1), 0), Ok(()));
        assert_eq!(s.add_vcpu(v(1, 0), CpuSet(1), 0), Err(SchedError::VcpuExists(v(1, 0))));
        assert_eq!(s.set_affinity(v(1, 1), CpuSet(1), 0), Err(SchedError::NoSuchVcpu(v(1, 1))));
        assert_eq!(s.set_params(0, 0), Err(SchedError::BadSlice(0)));
        assert_eq!(s.set_params(1001 * MS, 0), Err(SchedError::BadSlice(1001 * MS)));
        assert_eq!(s.set_params(10 * MS, 50_000), Err(SchedError::BadRateLimit(50_000)));
        assert_eq!(s.set_params(10 * MS, 11 * MS), Err(SchedError::BadRateLimit(11 * MS)));
        assert_eq!(s.set_params(10 * MS, 0), Ok(()));
        assert_eq!(s.set_params(1000 * MS, 500 * MS), Ok(()));
        assert_eq!(s.remove_domain(7, 0), Err(SchedError::NoSuchDomain(7)));
        let msg = alloc::format!("{}", SchedError::BadWeight(0));
        assert!(msg.contains("1 to 65535"), "{msg}");
    }

    #[test]
    fn has_blocked_follows_blocks_and_wakes() {
        let mut s = Credit::new(1, Params::default()).unwrap();
        s.add_domain(1, 256, 0).unwrap();
        s.add_vcpu(v(1, 0), CpuSet(1), 0).unwrap();
        assert!(s.has_blocked(), "a new vCPU waits to be woken");
        s.wake(v(1, 0), 0);
        assert!(!s.has_blocked(), "queued");
        assert_eq!(s.schedule(0, 0).run, Some(v(1, 0)));
        assert!(!s.has_blocked(), "running");
        s.block(0, MS);
        assert!(s.has_blocked(), "halted");
    }

    #[test]
    fn a_woken_under_vcpu_is_boosted_and_preempts_after_the_rate_limit() {
        let mut s = Credit::new(1, Params::default()).unwrap();
        s.add_domain(1, 256, 0).unwrap();
        s.add_domain(2, 256, 0).unwrap();
        s.add_vcpu(v(1, 0), CpuSet(1), 0).unwrap();
        s.add_vcpu(v(2, 0), CpuSet(1), 0).unwrap();
        assert_eq!(s.wake(v(1, 0), 0), Some(0));
        let d = s.schedule(0, 0);
        assert_eq!(d.run, Some(v(1, 0)));
        // v(2,0) wakes 0.5 ms later: BOOST beats BOOST? No: equal, so no kick.
        assert_eq!(s.wake(v(2, 0), 500_000), None);
        assert_eq!(s.priority(v(2, 0)), Some(Priority::Boost));
        // The tick ends v(1,0)'s boost; v(2,0) now outranks it and takes the CPU.
        s.tick(0, 10 * MS);
        assert_eq!(s.priority(v(1, 0)), Some(Priority::Under));
        let d = s.schedule(0, 10 * MS);
        assert_eq!(d.run, Some(v(2, 0)));
        assert_eq!(s.stats(v(1, 0)).unwrap().preemptions, 1);
        // v(2,0) blocks; v(1,0) runs; v(2,0) wakes 0.2 ms later: rate limited until 1 ms.
        s.block(0, 11 * MS);
        assert_eq!(s.schedule(0, 11 * MS).run, Some(v(1, 0)));
        assert_eq!(s.wake(v(2, 0), 11 * MS + 200_000), Some(0));
        let d = s.schedule(0, 11 * MS + 200_000);
        assert_eq!(d.run, Some(v(1, 0)));
        assert_eq!(d.until, 12 * MS);
        assert_eq!(s.schedule(0, 12 * MS).run, Some(v(2, 0)));
        s.check().unwrap();
    }

    #[test]
    fn a_capped_vcpu_is_parked_when_over_its_cap_and_released_by_accounting() {
        let mut s = Credit::new(1, Params::default()).unwrap();
        s.add_domain(1, 256, 10).unwrap(); // 30 credits (3 ms) per 30 ms period
        s.add_vcpu(v(1, 0), CpuSet(1), 0).unwrap();
        s.wake(v(1, 0), 0);
        let d = s.schedule(0, 0);
        assert_eq!(d.run, Some(v(1, 0)));
        // Parked one credit past -30: after 3.1 ms.
        assert_eq!(d.until, 3_100_000);
        let d = s.schedule(0, d.until);
        assert_eq!(d.run, None);
        assert_eq!(s.state(v(1, 0)), Some(VcpuState::Parked));
        let mut t = 10 * MS;
        let mut released = None;
        while t <= 100 * MS {
            let kicks = s.tick(0, t);
            if !kicks.is_empty() && released.is_none() {
                released = Some(t);
            }
            t += 10 * MS;
        }
        assert!(released.is_some(), "never un-parked");
        s.check().unwrap();
    }

    #[test]
    fn a_pinned_vcpu_is_moved_when_its_affinity_changes() {
        let mut s = Credit::new(2, Params::default()).unwrap();
        s.add_domain(1, 256, 0).unwrap();
        s.add_vcpu(v(1, 0), CpuSet(0b01), 0).unwrap();
        s.wake(v(1, 0), 0);
        assert_eq!(s.schedule(0, 0).run, Some(v(1, 0)));
        assert_eq!(s.set_affinity(v(1, 0), CpuSet(0b10), MS), Ok(Some(0)));
        let d = s.schedule(0, MS);
        assert_eq!(d.run, None);
        assert_eq!(d.kick, CpuSet(0b10));
        assert_eq!(s.schedule(1, MS).run, Some(v(1, 0)));
        assert_eq!(s.stats(v(1, 0)).unwrap().migrations, 1);
        s.check().unwrap();
    }
}
