//! A deterministic discrete-event simulation of the credit scheduler, and the fairness
//! tests that run on it (`/work/shared/credit-scheduler.md`, "What to measure").
//!
//! Virtual time only: each simulated CPU has a next tick (every tick, with a per-CPU
//! phase offset, as real CPUs' timers are not aligned), a decision deadline (the last
//! `Decision::until`) and kicks; each vCPU has a workload. At every instant the
//! simulator first retires finished bursts (the vCPU blocks), then delivers wake-ups,
//! then ticks, then makes every CPU that is due decide, repeating while decisions kick
//! further CPUs; then it checks the invariants (affinity of every decision, no vCPU on
//! two CPUs, no CPU idle while a vCPU that may run there waits, and agreement between
//! the simulator's and the scheduler's view). Nothing is random except the explicit
//! xorshift generator of the last test, so every run gives the same numbers.

use super::credit::{CpuId, CpuSet, Credit, Params, Priority, SchedError, VcpuRef, VcpuState};
use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use std::println;

const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;
const NEVER: u64 = u64::MAX;

/// What a vCPU does when it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    /// Always runnable.
    Hog,
    /// Wakes at `offset + k * period`, runs `burst`, blocks until the next boundary.
    Io { period: u64, burst: u64, offset: u64 },
    /// Halts at once whenever it runs and never wakes again.
    Halt,
}

struct Task {
    work: Work,
    /// Runnable as far as the guest is concerned (woken and not yet halted).
    runnable: bool,
    /// Run time left in the current I/O burst.
    left: u64,
    next_wake: u64,
    /// When the pending wake-up happened (for the latency).
    woke_at: Option<u64>,
    run_ns: u64,
    /// CPUs it ever ran on.
    ran_on: CpuSet,
    added: u64,
}

struct Sim {
    s: Credit,
    n: usize,
    tick_ns: u64,
    now: u64,
    next_tick: Vec<u64>,
    until: Vec<u64>,
    running: Vec<Option<VcpuRef>>,
    tasks: BTreeMap<VcpuRef, Task>,
    dom_run: BTreeMap<u32, u64>,
    /// Wake-to-run latencies per vCPU.
    latency: BTreeMap<VcpuRef, Vec<u64>>,
    idle_ns: Vec<u64>,
    decisions: u64,
    checks: u64,
    /// Up to this much random delay (xorshift, fixed seed) added to each I/O wake-up.
    jitter_ns: u64,
    rng: Rng,
}

impl Sim {
    fn new(cpus: usize) -> Sim {
        Sim::with_params(cpus, Params::default())
    }

    fn with_params(cpus: usize, params: Params) -> Sim {
        let s = Credit::new(cpus, params).expect("valid parameters");
        // Tick phases: CPU c ticks at (k + c / cpus) ticks, never all at once.
        let next_tick = (0..cpus).map(|c| params.tick_ns + params.tick_ns * c as u64 / cpus as u64).collect();
        Sim {
            s,
            n: cpus,
            tick_ns: params.tick_ns,
            now: 0,
            next_tick,
            until: vec![NEVER; cpus],
            running: vec![None; cpus],
            tasks: BTreeMap::new(),
            dom_run: BTreeMap::new(),
            latency: BTreeMap::new(),
            idle_ns: vec![0; cpus],
            decisions: 0,
            checks: 0,
            jitter_ns: 0,
            rng: Rng(0x2545_f491_4f6c_dd1d),
        }
    }

    fn domain(&mut self, d: u32, weight: u32, cap: u32) {
        self.s.add_domain(d, weight, cap).expect("add_domain");
        self.dom_run.entry(d).or_insert(0);
    }

    fn vcpu(&mut self, v: VcpuRef, work: Work, affinity: CpuSet) {
        let t = self.now;
        self.s.add_vcpu(v, affinity, t).expect("add_vcpu");
        let next_wake = match work {
            Work::Hog => t,
            Work::Io { offset, .. } => t + offset,
            Work::Halt => NEVER,
        };
        let task = Task {
            work,
            runnable: false,
            left: 0,
            next_wake,
            woke_at: None,
            run_ns: 0,
            ran_on: CpuSet::EMPTY,
            added: t,
        };
        self.tasks.insert(v, task);
        self.settle(vec![false; self.n]);
    }

    /// Adds a domain of `vcpus` vCPUs all doing `work`, runnable anywhere.
    fn domain_of(&mut self, d: u32, weight: u32, cap: u32, vcpus: u32, work: Work) {
        self.domain(d, weight, cap);
        for i in 0..vcpus {
            self.vcpu(VcpuRef { domain: d, vcpu: i }, work, CpuSet::all(self.n));
        }
    }

    fn remove_domain(&mut self, d: u32) {
        let t = self.now;
        self.s.remove_domain(d, t).expect("remove_domain");
        // The hypervisor kicks the CPUs that run a dying domain's vCPUs.
        let need = self.running.iter().map(|r| r.is_some_and(|v| v.domain == d)).collect();
        self.tasks.retain(|v, _| v.domain != d);
        self.settle(need);
    }

    fn set_affinity(&mut self, v: VcpuRef, affinity: CpuSet) {
        let t = self.now;
        let kick = self.s.set_affinity(v, affinity, t).expect("set_affinity");
        let mut need = vec![false; self.n];
        if let Some(c) = kick {
            need[c] = true;
        }
        self.settle(need);
    }

    /// Changes what a vCPU does from now on; a Halt takes effect when it next runs.
    fn set_work(&mut self, v: VcpuRef, work: Work) {
        let task = self.tasks.get_mut(&v).expect("task");
        task.work = work;
        if work == Work::Halt {
            task.left = 0;
            task.next_wake = NEVER;
        }
        self.settle(vec![false; self.n]);
    }

    fn run_for(&mut self, d: u64) {
        self.run_until(self.now + d);
    }

    fn run_until(&mut self, end: u64) {
        loop {
            let t = self.next_event();
            if t > end {
                self.advance(end);
                return;
            }
            self.advance(t);
            self.step();
        }
    }

    fn next_event(&self) -> u64 {
        let mut t = NEVER;
        for c in 0..self.n {
            t = t.min(self.next_tick[c]).min(self.until[c]);
            if let Some(v) = self.running[c] {
                let task = &self.tasks[&v];
                if task.work != Work::Hog {
                    t = t.min(self.now + task.left);
                }
            }
        }
        for task in self.tasks.values() {
            if !task.runnable {
                t = t.min(task.next_wake);
            }
        }
        t
    }

    /// Moves virtual time to `t`, crediting the runners.
    fn advance(&mut self, t: u64) {
        let dt = t - self.now;
        for c in 0..self.n {
            match self.running[c] {
                Some(v) => {
                    *self.dom_run.get_mut(&v.domain).expect("domain") += dt;
                    let task = self.tasks.get_mut(&v).expect("task");
                    task.run_ns += dt;
                    task.left = task.left.saturating_sub(dt);
                }
                None => self.idle_ns[c] += dt,
            }
        }
        self.now = t;
    }

    /// Everything that happens at `self.now`.
    fn step(&mut self) {
        let t = self.now;
        let mut need = vec![false; self.n];
        // Finished bursts: the vCPU halts.
        for (c, need_c) in need.iter_mut().enumerate() {
            let Some(v) = self.running[c] else { continue };
            let task = self.tasks.get_mut(&v).expect("task");
            if task.work == Work::Hog || task.left > 0 {
                continue;
            }
            task.runnable = false;
            task.next_wake = match task.work {
                Work::Io { period, offset, .. } => {
                    let base = task.added + offset;
                    let jitter = if self.jitter_ns > 0 { self.rng.below(self.jitter_ns) } else { 0 };
                    base + ((t - base) / period + 1) * period + jitter
                }
                _ => NEVER,
            };
            self.s.block(c, t);
            self.running[c] = None;
            *need_c = true;
        }
        // Wake-ups.
        let due: Vec<VcpuRef> =
            self.tasks.iter().filter(|(_, k)| !k.runnable && k.next_wake <= t).map(|(&v, _)| v).collect();
        for v in due {
            let task = self.tasks.get_mut(&v).expect("task");
            task.runnable = true;
            task.next_wake = NEVER;
            task.woke_at = Some(t);
            task.left = match task.work {
                Work::Io { burst, .. } => burst,
                _ => 0,
            };
            if let Some(c) = self.s.wake(v, t) {
                need[c] = true;
            }
        }
        // Ticks.
        for c in 0..self.n {
            if self.next_tick[c] <= t {
                self.next_tick[c] += self.tick_ns;
                for k in self.s.tick(c, t) {
                    need[k] = true;
                }
                need[c] = true;
            }
            if self.until[c] <= t {
                need[c] = true;
            }
        }
        self.settle(need);
    }

    /// Lets every CPU in `need` (and every CPU they kick) decide, then checks.
    fn settle(&mut self, mut need: Vec<bool>) {
        let t = self.now;
        while let Some(c) = need.iter().position(|&x| x) {
            need[c] = false;
            let d = self.s.schedule(c, t);
            self.decisions += 1;
            assert!(d.until > t, "cpu{c}: until {} is not after now {t}", d.until);
            self.until[c] = d.until;
            for k in d.kick.iter() {
                need[k] = true;
            }
            if let Some(v) = d.run {
                let aff = self.s.affinity(v).expect("affinity");
                assert!(aff.contains(c), "t={t}: {v:?} runs on cpu{c} outside its affinity {aff:?}");
                for (o, r) in self.running.iter().enumerate() {
                    assert!(o == c || *r != Some(v), "t={t}: {v:?} runs on cpu{c} and cpu{o}");
                }
                let task = self.tasks.get_mut(&v).expect("task");
                assert!(task.runnable, "t={t}: {v:?} runs on cpu{c} but halted");
                task.ran_on.insert(c);
                if let Some(w) = task.woke_at.take() {
                    self.latency.entry(v).or_default().push(t - w);
                }
            }
            self.running[c] = d.run;
        }
        self.check();
    }

    /// The invariants that must hold whenever the simulation is at rest.
    fn check(&mut self) {
        let t = self.now;
        self.checks += 1;
        self.s.check().unwrap_or_else(|e| panic!("t={t}: {e}"));
        for c in 0..self.n {
            assert_eq!(self.running[c], self.s.running(c), "t={t}: cpu{c} runner differs");
        }
        let refs = self.s.vcpu_refs();
        for &v in &refs {
            let state = self.s.state(v).expect("state");
            let task = &self.tasks[&v];
            let sched_runnable = state != VcpuState::Blocked;
            assert_eq!(task.runnable, sched_runnable, "t={t}: {v:?} is {state:?} in the scheduler");
        }
        // Work conservation: an idle CPU has no queued vCPU (anywhere) that may run on it.
        for c in 0..self.n {
            if self.running[c].is_some() {
                continue;
            }
            for &v in &refs {
                if let Some(VcpuState::Queued(q)) = self.s.state(v) {
                    let aff = self.s.affinity(v).expect("affinity");
                    assert!(!aff.contains(c), "t={t}: cpu{c} idles while {v:?} waits on cpu{q} and may run on cpu{c}");
                }
            }
        }
    }

    fn dom_run(&self, d: u32) -> u64 {
        self.dom_run.get(&d).copied().unwrap_or(0)
    }

    fn max_latency(&self, v: VcpuRef) -> u64 {
        self.latency.get(&v).and_then(|l| l.iter().max().copied()).unwrap_or(0)
    }
}

fn v(domain: u32, vcpu: u32) -> VcpuRef {
    VcpuRef { domain, vcpu }
}

/// Percent of `total`.
fn pct(part: u64, total: u64) -> f64 {
    100.0 * part as f64 / total as f64
}

/// Run time of each domain between two snapshots, in percent of `cpus` CPUs.
fn shares(before: &BTreeMap<u32, u64>, after: &Sim, span: u64) -> BTreeMap<u32, f64> {
    after
        .dom_run
        .iter()
        .map(|(&d, &r)| (d, pct(r - before.get(&d).copied().unwrap_or(0), span * after.n as u64)))
        .collect()
}

#[test]
fn three_cpu_bound_domains_on_two_cpus_share_in_proportion_to_weights_256_512_1024() {
    let mut sim = Sim::new(2);
    // Two vCPUs each, so that every domain can use its share (one vCPU could not use
    // 4/7 of two CPUs); shares are per domain.
    sim.domain_of(1, 256, 0, 2, Work::Hog);
    sim.domain_of(2, 512, 0, 2, Work::Hog);
    sim.domain_of(3, 1024, 0, 2, Work::Hog);
    sim.run_for(10 * S);
    let total = 10 * S * 2;
    let expect = [(1, 100.0 / 7.0), (2, 200.0 / 7.0), (3, 400.0 / 7.0)];
    for (d, want) in expect {
        let got = pct(sim.dom_run(d), total);
        println!("weights 256/512/1024 on 2 CPUs, 10 s: domain {d} got {got:.2} % (expected {want:.2} %)");
        assert!((got - want).abs() <= 1.0, "domain {d}: {got:.2} % instead of {want:.2} %");
    }
    println!("  idle: cpu0 {} ns, cpu1 {} ns; decisions {}", sim.idle_ns[0], sim.idle_ns[1], sim.decisions);
    assert_eq!(sim.idle_ns, [0, 0]);
}

#[test]
fn a_domain_capped_at_25_percent_gets_a_quarter_of_one_cpu_against_two_hogs() {
    let mut sim = Sim::new(2);
    sim.domain_of(1, 256, 25, 1, Work::Hog);
    sim.domain_of(2, 256, 0, 1, Work::Hog);
    sim.domain_of(3, 256, 0, 1, Work::Hog);
    sim.run_for(3 * S);
    let capped = pct(sim.dom_run(1), 3 * S);
    println!(
        "cap 25 on 2 CPUs against two hogs, 3 s: capped domain got {capped:.2} % of one CPU; hogs {:.2} % and {:.2} %",
        pct(sim.dom_run(2), 3 * S),
        pct(sim.dom_run(3), 3 * S)
    );
    assert!((capped - 25.0).abs() <= 1.0, "capped domain got {capped:.2} % of one CPU");
    // The hogs take the rest of both CPUs.
    let hogs = pct(sim.dom_run(2) + sim.dom_run(3), 3 * S);
    assert!((hogs - 175.0).abs() <= 1.0, "hogs got {hogs:.2} % of one CPU");
}

#[test]
fn an_io_vcpu_waking_every_5_ms_for_100_us_runs_within_1_ms_among_four_hogs() {
    let mut sim = Sim::new(2);
    for d in 1..=4 {
        sim.domain_of(d, 256, 0, 1, Work::Hog);
    }
    // The I/O domain joins a busy system. (At time 0 every vCPU's first wake is a wake
    // from blocked, so all five would be BOOST together for their first tick; that
    // start-up transient is not what this measures.)
    sim.run_for(100 * MS);
    sim.domain_of(5, 256, 0, 1, Work::Io { period: 5 * MS, burst: 100 * US, offset: 400 * US });
    sim.run_for(2 * S);
    let lat = &sim.latency[&v(5, 0)];
    let max = sim.max_latency(v(5, 0));
    let mean = lat.iter().sum::<u64>() / lat.len() as u64;
    let mut sorted = lat.clone();
    sorted.sort_unstable();
    let p99 = sorted[sorted.len() * 99 / 100];
    println!(
        "I/O vCPU (5 ms period, 100 us burst) with 4 hogs on 2 CPUs, 2 s: {} wakes, latency mean {mean} ns, \
         p99 {p99} ns, max {max} ns; I/O domain ran {:.3} % of one CPU",
        lat.len(),
        pct(sim.dom_run(5), 2 * S)
    );
    assert!(lat.len() >= 390, "only {} wakes", lat.len());
    assert!(max < MS, "max wake-up latency {max} ns");
    // It got its whole demand (2 % of one CPU).
    assert!((pct(sim.dom_run(5), 2 * S) - 2.0).abs() < 0.05);
}

#[test]
fn pinned_vcpus_never_run_outside_their_cpu() {
    let mut sim = Sim::new(4);
    // Two pinned hogs per CPU 0 and 1, free hogs and an I/O vCPU that may go anywhere.
    sim.domain(1, 256, 0);
    sim.vcpu(v(1, 0), Work::Hog, CpuSet::single(0));
    sim.vcpu(v(1, 1), Work::Hog, CpuSet::single(0));
    sim.vcpu(v(1, 2), Work::Hog, CpuSet::single(1));
    sim.vcpu(v(1, 3), Work::Hog, CpuSet::single(1));
    sim.domain_of(2, 512, 0, 4, Work::Hog);
    sim.domain(3, 256, 0);
    sim.vcpu(v(3, 0), Work::Io { period: 3 * MS, burst: 500 * US, offset: 777 * US }, CpuSet::single(3));
    sim.run_for(S);
    // Pin a free vCPU at run time: from then on it runs on CPU 2 only.
    sim.set_affinity(v(2, 0), CpuSet::single(2));
    let mark = sim.tasks[&v(2, 0)].ran_on;
    sim.tasks.get_mut(&v(2, 0)).expect("task").ran_on = CpuSet::EMPTY;
    sim.run_for(S);
    for (vc, cpu) in [(v(1, 0), 0), (v(1, 1), 0), (v(1, 2), 1), (v(1, 3), 1), (v(3, 0), 3), (v(2, 0), 2)] {
        let ran = sim.tasks[&vc].ran_on;
        println!("{vc:?} pinned to cpu{cpu} ran on {ran:?}");
        assert_eq!(ran, CpuSet::single(cpu), "{vc:?} ran on {ran:?}");
        if vc != v(2, 0) {
            assert_eq!(sim.s.stats(vc).expect("stats").migrations, 0, "{vc:?} migrated");
        }
    }
    println!("{:?} ran on {mark:?} before it was pinned; {} decisions checked", v(2, 0), sim.decisions);
}

#[test]
fn no_cpu_idles_while_a_vcpu_that_may_run_there_is_runnable() {
    // A mix that leaves CPUs idle now and then: I/O vCPUs, a capped domain, pinned and
    // partly pinned vCPUs, and a domain that halts mid-run. The simulator checks work
    // conservation at rest after every event.
    let mut sim = Sim::new(4);
    sim.domain(1, 256, 0);
    for i in 0..4 {
        sim.vcpu(
            v(1, i),
            Work::Io { period: (2 + i as u64) * MS, burst: (300 + 200 * i as u64) * US, offset: 0 },
            CpuSet::all(4),
        );
    }
    sim.domain_of(2, 512, 50, 2, Work::Hog);
    sim.domain(3, 256, 0);
    sim.vcpu(v(3, 0), Work::Hog, CpuSet::single(2));
    sim.vcpu(v(3, 1), Work::Io { period: 7 * MS, burst: 3 * MS, offset: 100 * US }, CpuSet(0b1100));
    sim.domain_of(4, 128, 0, 2, Work::Io { period: 20 * MS, burst: 8 * MS, offset: 5 * MS });
    sim.run_for(2 * S);
    sim.set_work(v(3, 0), Work::Halt);
    sim.run_for(S);
    let idle: Vec<f64> = sim.idle_ns.iter().map(|&i| pct(i, 3 * S)).collect();
    println!(
        "work conservation held at {} checks / {} decisions; idle per CPU (%): {idle:.1?}",
        sim.checks, sim.decisions
    );
    assert!(sim.idle_ns.iter().all(|&i| i > 0), "the mix should leave every CPU idle at times");
}

#[test]
fn an_over_vcpu_with_lots_of_negative_credit_still_runs_when_nothing_else_wants_the_cpu() {
    let mut sim = Sim::new(1);
    sim.domain_of(1, 1, 0, 1, Work::Hog);
    sim.domain_of(2, 65535, 0, 2, Work::Hog);
    sim.run_for(S);
    // Domain 2 halts; domain 1 (which earned almost nothing) is alone.
    sim.set_work(v(2, 0), Work::Halt);
    sim.set_work(v(2, 1), Work::Halt);
    let before = sim.dom_run(1);
    let mut min_credit = i32::MAX;
    let mut over_seen = 0;
    for _ in 0..20 {
        sim.run_for(100 * MS);
        let c = sim.s.credit(v(1, 0)).expect("credit");
        min_credit = min_credit.min(c);
        if sim.s.priority(v(1, 0)) == Some(Priority::Over) {
            over_seen += 1;
        }
    }
    let got = pct(sim.dom_run(1) - before, 2 * S);
    println!(
        "alone after a contended second: OVER at {over_seen}/20 samples, lowest credit {min_credit}, \
         ran {got:.3} % of the CPU"
    );
    assert!(over_seen > 0 && min_credit <= -100, "the test did not make the vCPU OVER");
    assert!(got > 99.99, "an OVER vCPU alone got only {got:.3} %");
}

#[test]
fn a_weight_changed_at_run_time_takes_effect_at_once() {
    let mut sim = Sim::new(2);
    sim.domain_of(1, 256, 0, 2, Work::Hog);
    sim.domain_of(2, 256, 0, 2, Work::Hog);
    sim.run_for(3 * S);
    let a = shares(&BTreeMap::new(), &sim, 3 * S);
    println!("equal weights, 3 s: {a:.2?}");
    assert!((a[&1] - 50.0).abs() <= 1.0);
    sim.s.set_weight(1, 768).expect("set_weight");
    sim.run_for(500 * MS);
    let snap = sim.dom_run.clone();
    sim.run_for(5 * S);
    let b = shares(&snap, &sim, 5 * S);
    println!("after set_weight(1, 768): {b:.2?} (expected 75/25)");
    assert!((b[&1] - 75.0).abs() <= 1.0 && (b[&2] - 25.0).abs() <= 1.0);
}

#[test]
fn bad_weights_caps_slices_and_rate_limits_are_refused_with_the_right_error_mid_run() {
    let mut sim = Sim::new(2);
    sim.domain_of(1, 256, 0, 1, Work::Hog);
    sim.domain_of(2, 256, 0, 1, Work::Hog);
    sim.run_for(100 * MS);
    let s = &mut sim.s;
    assert_eq!(s.set_weight(1, 0), Err(SchedError::BadWeight(0)));
    assert_eq!(s.set_weight(1, 70000), Err(SchedError::BadWeight(70000)));
    assert_eq!(s.set_weight(9, 256), Err(SchedError::NoSuchDomain(9)));
    assert_eq!(s.set_cap(1, 201), Err(SchedError::BadCap(201)));
    assert_eq!(s.set_cap(9, 10), Err(SchedError::NoSuchDomain(9)));
    assert_eq!(s.add_domain(3, 256, 500), Err(SchedError::BadCap(500)));
    assert_eq!(s.add_domain(1, 256, 0), Err(SchedError::DomainExists(1)));
    assert_eq!(s.set_params(0, 0), Err(SchedError::BadSlice(0)));
    assert_eq!(s.set_params(2000 * MS, 0), Err(SchedError::BadSlice(2000 * MS)));
    assert_eq!(s.set_params(30 * MS, 99 * US), Err(SchedError::BadRateLimit(99 * US)));
    assert_eq!(s.set_params(30 * MS, 31 * MS), Err(SchedError::BadRateLimit(31 * MS)));
    assert_eq!(s.set_params(600 * MS, 501 * MS), Err(SchedError::BadRateLimit(501 * MS)));
    assert_eq!(s.set_affinity(v(1, 0), CpuSet(0b100), 0), Err(SchedError::EmptyAffinity));
    assert_eq!(s.set_affinity(v(1, 7), CpuSet(1), 0), Err(SchedError::NoSuchVcpu(v(1, 7))));
    for e in [SchedError::BadSlice(0), SchedError::BadRateLimit(1), SchedError::BadCap(999)] {
        println!("{e:?}: {e}");
    }
    // The refused calls changed nothing; valid ones work and the run goes on fairly.
    assert_eq!(s.set_params(10 * MS, 0), Ok(()));
    assert_eq!(s.set_cap(2, 150), Ok(()));
    let snap = sim.dom_run.clone();
    sim.run_for(2 * S);
    let sh = shares(&snap, &sim, 2 * S);
    println!("after a 10 ms slice, no rate limit, cap 150 on domain 2 (1 vCPU): {sh:.2?}");
    assert!((sh[&1] - 50.0).abs() <= 1.0 && (sh[&2] - 50.0).abs() <= 1.0);
}

#[test]
fn removing_a_domain_mid_run_leaves_the_others_fair() {
    let mut sim = Sim::new(2);
    sim.domain_of(1, 256, 0, 2, Work::Hog);
    sim.domain_of(2, 256, 0, 2, Work::Hog);
    sim.domain_of(3, 256, 0, 2, Work::Hog);
    sim.run_for(2 * S);
    let a = shares(&BTreeMap::new(), &sim, 2 * S);
    println!("three equal domains, 2 s: {a:.2?}");
    for d in 1..=3 {
        assert!((a[&d] - 100.0 / 3.0).abs() <= 1.0);
    }
    sim.run_for(7 * MS); // remove between ticks, with vCPUs of domain 3 probably running
    sim.remove_domain(3);
    sim.run_for(300 * MS);
    let snap = sim.dom_run.clone();
    sim.run_for(4 * S);
    let b = shares(&snap, &sim, 4 * S);
    println!("after removing domain 3: {b:.2?}");
    assert!((b[&1] - 50.0).abs() <= 1.0 && (b[&2] - 50.0).abs() <= 1.0);
    assert_eq!(sim.idle_ns.iter().sum::<u64>(), 0);
}

#[test]
fn stats_add_up_to_each_vcpus_lifetime_and_count_preemptions_and_migrations() {
    let mut sim = Sim::new(2);
    sim.domain_of(1, 256, 0, 3, Work::Hog);
    sim.domain(2, 256, 0);
    sim.vcpu(v(2, 0), Work::Hog, CpuSet::single(1));
    sim.run_for(50 * MS);
    // Added later: lifetimes differ.
    sim.domain_of(3, 256, 0, 1, Work::Io { period: 4 * MS, burst: MS, offset: 333 * US });
    sim.run_for(2 * S);
    let now = sim.now;
    let tick = sim.tick_ns;
    for (&vc, task) in &sim.tasks {
        let (st, life) = sim.s.stats_at(vc, now).expect("stats");
        let sum = st.run_ns + st.wait_ns + st.blocked_ns;
        println!(
            "{vc:?}: run {} ms, wait {} ms, blocked {} ms, lifetime {} ms, preemptions {}, migrations {}",
            st.run_ns / MS,
            st.wait_ns / MS,
            st.blocked_ns / MS,
            life / MS,
            st.preemptions,
            st.migrations
        );
        assert!(sum.abs_diff(life) <= tick, "{vc:?}: {sum} ns of stats for a {life} ns lifetime");
        assert_eq!(life, now - task.added);
        assert!(
            st.run_ns.abs_diff(task.run_ns) <= tick,
            "{vc:?}: stats say {} ns run, the simulation {}",
            st.run_ns,
            task.run_ns
        );
        if task.work == Work::Hog {
            assert!(st.preemptions > 0, "{vc:?} was never preempted");
        } else {
            assert!(st.blocked_ns > 0);
        }
    }
    assert_eq!(sim.s.stats(v(2, 0)).expect("stats").migrations, 0, "a pinned vCPU migrated");
    let moved: u64 = (0..3).map(|i| sim.s.stats(v(1, i)).expect("stats").migrations).sum();
    assert!(moved > 0, "three free hogs on two CPUs never migrated");
}

/// xorshift64: deterministic, no crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn a_hundred_thousand_random_calls_never_panic_and_keep_each_vcpu_in_one_place() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let cpus = 4usize;
    let mut s = Credit::new(cpus, Params::default()).expect("new");
    let mut now = 0u64;
    let mut ok = 0u64;
    let mut errors = 0u64;
    for i in 0..100_000u64 {
        // Mostly forward in small steps; now and then a big jump or a step back.
        now = match rng.below(100) {
            0 => now.saturating_sub(rng.below(5 * MS)),
            1 => now.saturating_add(rng.below(2 * S)),
            _ => now.saturating_add(rng.below(3 * MS)),
        };
        let vc = VcpuRef { domain: rng.below(6) as u32, vcpu: rng.below(4) as u32 };
        let cpu = rng.below(cpus as u64 + 1) as CpuId; // sometimes out of range
        let set = CpuSet(rng.next() & 0x3f); // sometimes empty or outside the pool
        let r: Result<(), SchedError> = match rng.below(16) {
            0 => s.add_domain(vc.domain, rng.below(70_000) as u32, rng.below(500) as u32),
            1 => s.remove_domain(vc.domain, now),
            2 | 3 => s.add_vcpu(vc, set, now),
            4 | 5 => {
                let _ = s.wake(vc, now);
                Ok(())
            }
            6 => {
                s.block(cpu, now);
                Ok(())
            }
            7 => {
                s.yield_cpu(cpu, now);
                Ok(())
            }
            8..=10 => {
                let d = s.schedule(cpu, now);
                if let Some(r) = d.run {
                    assert!(s.affinity(r).is_some_and(|a| a.contains(cpu)), "step {i}: {r:?} on cpu{cpu}");
                }
                Ok(())
            }
            11 | 12 => {
                let _ = s.tick(cpu, now);
                Ok(())
            }
            13 => s.set_weight(vc.domain, rng.below(70_000) as u32),
            14 => s.set_cap(vc.domain, rng.below(500) as u32),
            _ => match rng.below(2) {
                0 => s.set_affinity(vc, set, now).map(|_| ()),
                _ => s.set_params(rng.below(1100) * MS, rng.below(40) * 100 * US),
            },
        };
        if r.is_ok() {
            ok += 1
        } else {
            errors += 1
        }
        s.check().unwrap_or_else(|e| panic!("step {i}: {e}"));
        // And from the outside: each vCPU on at most one CPU or queue.
        let mut seen = BTreeMap::new();
        for c in 0..cpus {
            for w in s.running(c).into_iter().chain(s.queue(c)) {
                assert!(seen.insert(w, c).is_none(), "step {i}: {w:?} is in two places");
            }
        }
        let _ = s.priority(vc);
        let _ = s.credit(vc);
        let _ = s.stats(vc);
    }
    println!("100000 random calls: {ok} accepted, {errors} refused, {} vCPUs at the end", s.vcpu_refs().len());
}

#[test]
fn an_io_vcpu_with_jittered_wakeups_runs_within_1_ms_at_every_phase_against_the_ticks() {
    // The same load, but the I/O vCPU wakes up to 2 ms late (random) at each of 20 phases
    // relative to the tick grid, 10 s each: some runs have ticks catch it running now
    // and then (it then rejoins the active list), others never; some wakes fall inside a
    // hog's rate-limit window.
    let mut worst = 0;
    let mut wakes = 0;
    for k in 0..20u64 {
        let mut sim = Sim::new(2);
        sim.jitter_ns = 2 * MS;
        for d in 1..=4 {
            sim.domain_of(d, 256, 0, 1, Work::Hog);
        }
        sim.run_for(100 * MS);
        sim.domain_of(5, 256, 0, 1, Work::Io { period: 5 * MS, burst: 100 * US, offset: k * 250 * US });
        sim.run_for(10 * S);
        let max = sim.max_latency(v(5, 0));
        wakes += sim.latency[&v(5, 0)].len();
        assert!(max < MS, "phase {} us: max wake-up latency {max} ns", k * 250);
        worst = worst.max(max);
    }
    println!("jittered I/O vCPU, 20 phases x 10 s: {wakes} wakes, max latency {worst} ns");
}
