//! A hostile DomU (guests/hostile64) beside a canary DomU and Domain0.
//!
//! The hostile guest runs, from a seed on its command line, thousands of random
//! operations: an IN and an OUT on every I/O port, then random port I/O, MSRs, random
//! hypercalls (privileged ones must be refused with EPERM, unknown ones with ENOSYS,
//! registers preserved), control-register and XCR0 writes, local and I/O APIC MMIO, RAM
//! probes, INT n, privileged and VMX instructions (VMX ones must raise #UD), HLT woken by
//! its APIC timer, random code at CPL 3, and IA32_APIC_BASE games, all under its own
//! exception handlers; then dangerous operations (random code at CPL 0, MMIO the
//! hypervisor cannot emulate, wild guest-physical accesses), each announced, one of which
//! usually ends it. Meanwhile the canary checksums 4 MiB of its memory pass after pass,
//! and Domain0 lists the domains. The hypervisor must neither stop nor hang, the canary
//! must stay intact, Domain0 must keep answering, and the hostile domain must be alive,
//! exited, or crashed with a report.
//!
//! Bochs is deterministic: the same seed replays the same run (the second test runs one
//! seed twice, side by side, and compares what the two domains report).

use integration::{Boot, BootLog};

/// What every run must show: no hypervisor stop but Domain0's power-off, no broken
/// check in any guest.
fn common_checks(log: &BootLog) {
    log.expect_absent("PANIC");
    log.expect_absent("machine halted: exception");
    log.expect_absent("machine halted: panic");
    log.expect_absent("CORRUPTED");
    log.expect_absent("VIOLATION");
    log.expect_absent("unexpected exception");
    log.expect_absent("hostile64 panicked");
    // Only hostile domains may crash.
    for line in log.serial.lines().filter(|l| l.contains("crashed:")) {
        assert!(line.contains("domain hostile"), "{}: a domain other than a hostile one crashed: {line}", log.name);
    }
}

/// How the hostile domain `name` ended, for the test's output.
fn report_end(log: &BootLog, name: &str) {
    let ended = log.serial.lines().find(|l| {
        l.contains(&format!("domain {name} crashed:")) || l.contains(&format!("domain {name} exited status="))
    });
    let last_danger = log.serial.lines().rfind(|l| l.contains(&format!("[{name}] hostile: danger ")));
    eprintln!("[{}] {name}: ended by: {}", log.name, ended.unwrap_or("(still running at power-off)"));
    if let Some(d) = last_danger {
        eprintln!("[{}] {name}: last dangerous op announced: {d}", log.name);
    }
}

#[test]
fn a_hostile_domu_cannot_hurt_the_hypervisor_a_canary_or_domain0() {
    let log = Boot::bochs("hostile-1cpu", 1)
        .with_config(
            "[dom0]\nimage = dom0\nmemory = 32\n\
             script = \"sleep 4; list; sleep 4; list; sleep 4; list; poweroff\"\n\
             [domain hostile]\nimage = hostile64\nmemory = 16\ncmdline = \"seed=0x1234 ops=20000 every=5000 danger=200\"\n\
             [domain canary]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=canary passes=30 every=10\"\n",
        )
        .run();
    log.expect_in_order(&[
        "domain Domain-0 (id 0) created",
        "domain hostile (id 1) created: 16 MiB",
        "domain canary (id 2) created: 16 MiB",
        "[hostile] hostile: seed 0x1234 ops=20000 danger=200",
        "[hostile] hostile: swept IN over all 65536 ports",
        "[hostile] hostile: swept OUT over all ports but 7",
        "[hostile] hostile: 5000 ops",
        "[hostile] hostile: 20000 ops done",
        "[hostile] hostile:   stray interrupts 0, violations 0",
        "[hostile] hostile: survived 20000 ops; now 200 dangerous op(s)",
        "[hostile] hostile: danger 1: cpl0-code",
    ]);
    // Domain0 answers throughout: three lists, its own line in the last one, then the
    // power-off it asked for.
    log.expect_in_order(&[
        "dom0# list",
        "dom0# list",
        "dom0# list",
        "Domain-0                                     0    32     1     r-----",
        "hostile                                      1    16     1",
        "canary                                       2    16     1     ---s--",
        "dom0# poweroff",
        "machine halted: done",
    ]);
    log.expect_in_order(&[
        "[canary] canary: watching 4 MiB at 0x400000 for 30 passes",
        "[canary] canary: pass 10 ok",
        "[canary] canary: pass 20 ok",
        "[canary] canary: pass 30 ok",
        "[canary] canary: all 30 passes ok",
        "domain canary exited status=0",
        "dom0# poweroff",
    ]);
    // The hostile domain is either still listed as running, exited, or crashed with a
    // report by then; the last list shows it in one of those states.
    common_checks(&log);
    report_end(&log, "hostile");
}

#[test]
fn three_hostile_seeds_on_two_cpus_and_the_same_seed_replays_the_same_run() {
    let log = Boot::bochs("hostile-2cpu", 2)
        .with_config(
            "[dom0]\nimage = dom0\nmemory = 32\n\
             script = \"sleep 3; list; sleep 3; list; poweroff\"\n\
             [domain hostile-a]\nimage = hostile64\nmemory = 16\ncmdline = \"seed=0xC0FFEE ops=6000 every=2000 sweep=0\"\n\
             [domain hostile-b]\nimage = hostile64\nmemory = 16\ncmdline = \"seed=0xC0FFEE ops=6000 every=2000 sweep=0\"\n\
             [domain hostile-c]\nimage = hostile64\nmemory = 16\ncmdline = \"seed=0x5EED ops=6000 every=2000 sweep=0 danger=100\"\n\
             [domain canary]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=canary passes=20 every=10\"\n",
        )
        .run();
    log.expect_in_order(&["[hostile-a] hostile: 6000 ops done", "domain hostile-a exited status=0"]);
    log.expect_in_order(&["[hostile-b] hostile: 6000 ops done", "domain hostile-b exited status=0"]);
    log.expect_in_order(&["[hostile-c] hostile: 6000 ops done", "[hostile-c] hostile: survived 6000 ops"]);
    log.expect_in_order(&["[canary] canary: all 20 passes ok", "domain canary exited status=0"]);
    log.expect_in_order(&["dom0# list", "dom0# list", "dom0# poweroff", "machine halted: done"]);
    common_checks(&log);
    // Same seed, same run: the per-kind summaries of a and b agree line for line.
    let summary = |name: &str| -> Vec<String> {
        let tag = format!("[{name}] hostile:   ");
        log.serial
            .lines()
            .filter_map(|l| l.split_once(&tag).map(|(_, rest)| rest.to_string()))
            .filter(|l| l.contains(" ops, "))
            .collect()
    };
    let (a, b) = (summary("hostile-a"), summary("hostile-b"));
    assert!(a.len() >= 19, "hostile-a printed no summary: {a:?}");
    assert_eq!(a, b, "the same seed gave different runs");
    report_end(&log, "hostile-c");
}
