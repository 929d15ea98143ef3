//! Targeted attacks on what the hypervisor switches or shares between domains
//! (guests/hostile64's `attacks` modes), each beside a canary DomU and Domain0: the
//! canary and Domain0 must keep working, the machine must never stop, and every attack
//! must come back refused, or find only its own state, never another domain's.
//!
//! One CPU everywhere: the domains take turns on it, so every switch is a chance for
//! state to leak from one to the next.

use integration::{Boot, BootLog};

/// What every run must show: no hypervisor stop but Domain0's power-off, no domain but
/// an attacker crashed, the canary intact.
fn common_checks(log: &BootLog) {
    for bad in [
        "PANIC",
        "machine halted: exception",
        "machine halted: panic",
        "EXCEPTION",
        "CORRUPTED",
        "LEAK",
        "LOST",
        "ACCEPTED",
        "unexpected exception",
        "hostile64 panicked",
    ] {
        log.expect_absent(bad);
    }
    for line in log.serial.lines().filter(|l| l.contains("crashed:")) {
        assert!(line.contains("domain attack-"), "{}: a domain other than an attacker crashed: {line}", log.name);
    }
    // Status 0: every pass found its pattern intact (its progress lines are guest
    // output, which a flood beside it may keep out of the log).
    log.expect_in_order(&["domain canary exited status=0"]);
}

/// Vector registers (x87/SSE/AVX/AVX-512), debug registers and the MSRs the CPU holds
/// for a guest (TSC_AUX, KERNEL_GS_BASE) across preemptions: each
/// domain keeps a pattern and checks it after every switch; each starts by checking
/// that it sees only zeros, including one Domain0 creates after the others have filled
/// their registers. XSETBV values the CPU refuses, and the XCR0-lowering attack that
/// made the host's own XRSTOR fault.
#[test]
fn vector_and_debug_registers_stay_with_their_domain() {
    let log = Boot { memory_mib: 256, ..Boot::bochs("isolation-registers", 1) }
        .with_config(
            "[dom0]\nimage = dom0\nmemory = 32\n\
             script = \"sleep 1; create attack-late; sleep 10; list; poweroff\"\n\
             [domain attack-late]\nimage = hostile64\nmemory = 16\nautostart = false\ncmdline = \"mode=vector xcr0=0xe7 rounds=4 seed=9\"\n\
             [domain attack-sse-a]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=vector xcr0=1 rounds=8 seed=1\"\n\
             [domain attack-sse-b]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=vector xcr0=1 rounds=8 seed=2\"\n\
             [domain attack-avx]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=vector xcr0=7 rounds=8 seed=3\"\n\
             [domain attack-avx512]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=vector xcr0=0xe7 rounds=8 seed=4\"\n\
             [domain attack-xstate]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=xstate rounds=3\"\n\
             [domain attack-step]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=step rounds=4\"\n\
             [domain attack-dr-a]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=dr rounds=6 seed=5\"\n\
             [domain attack-dr-b]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=dr rounds=6 seed=6\"\n\
             [domain attack-msrs-a]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=msrs rounds=6 seed=7\"\n\
             [domain attack-msrs-b]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=msrs rounds=6 seed=8\"\n\
             [domain canary]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=canary passes=20 every=10\"\n",
        )
        .run();
    for (name, xcr0) in
        [("attack-sse-a", "0x1"), ("attack-sse-b", "0x1"), ("attack-avx", "0x7"), ("attack-avx512", "0xe7")]
    {
        log.expect_in_order(&[
            &format!("[{name}] vector: fresh registers are zero (xcr0={xcr0})"),
            &format!("[{name}] vector: 8 preemptions, registers intact (xcr0={xcr0})"),
            &format!("domain {name} exited status=0"),
        ]);
    }
    log.expect_in_order(&[
        "[attack-late] vector: fresh registers are zero (xcr0=0xe7)",
        "[attack-late] vector: 4 preemptions, registers intact (xcr0=0xe7)",
        "domain attack-late exited status=0",
    ]);
    log.expect_in_order(&[
        "[attack-xstate] xstate: XSETBV 0x0 (no x87) refused with #GP",
        "[attack-xstate] xstate: XSETBV 0x5 (AVX without SSE) refused with #GP",
        "[attack-xstate] xstate: XSETBV 0x27 (opmask alone) refused with #GP",
        "[attack-xstate] xstate: XSETBV 0x67 (AVX-512 incomplete) refused with #GP",
        "[attack-xstate] xstate: XSETBV 0xe3 (AVX-512 without AVX) refused with #GP",
        "[attack-xstate] xstate: XSETBV 0x9 (BNDREGS without BNDCSR) refused with #GP",
        "[attack-xstate] xstate: XSETBV 0x101 (a supervisor component) refused with #GP",
        "[attack-xstate] xstate: XSETBV 0x4000000000000001 (a reserved bit) refused with #GP",
        "[attack-xstate] xstate: round 3: AVX live then XCR0 lowered to 1 across preemptions (true, true)",
        "[attack-xstate] xstate: survived; done",
        "domain attack-xstate exited status=0",
    ]);
    log.expect_in_order(&["[attack-step] step: 4 single-steps taken", "domain attack-step exited status=0"]);
    for name in ["attack-dr-a", "attack-dr-b"] {
        log.expect_in_order(&[
            &format!("[{name}] dr: fresh debug registers are clear"),
            &format!("[{name}] dr: 6 preemptions, debug registers intact"),
            &format!("domain {name} exited status=0"),
        ]);
    }
    for name in ["attack-msrs-a", "attack-msrs-b"] {
        log.expect_in_order(&[
            &format!("[{name}] msrs: fresh TSC_AUX and KERNEL_GS_BASE are zero"),
            &format!("[{name}] msrs: 6 preemptions, TSC_AUX and KERNEL_GS_BASE intact"),
            &format!("domain {name} exited status=0"),
        ]);
    }
    log.expect_in_order(&[
        "dom0# list",
        "Domain-0                                     0",
        "dom0# poweroff",
        "machine halted: done",
    ]);
    common_checks(&log);
}

/// Console floods, the host's counters and memory, the speculation-control MSRs, a
/// reset loop, and `unpause 0` from Domain0's own shell: Domain0 keeps answering its
/// script on time while a DomU writes newlines as fast as it can.
#[test]
fn floods_leaks_and_reset_loops_do_not_reach_other_domains() {
    let log = Boot { memory_mib: 192, ..Boot::bochs("isolation-floods", 1) }
        .with_config(
            "[dom0]\nimage = dom0\nmemory = 32\n\
             script = \"unpause 0; list; sleep 2; list; sleep 2; list; sleep 4; list; poweroff\"\n\
             [domain attack-flood]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=flood calls=64 port=16384\"\n\
             [domain attack-leaks]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=leaks rounds=3 spec=7\"\n\
             [domain attack-reset]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=reset\"\n\
             [domain canary]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=canary passes=20 every=10\"\n",
        )
        .run();
    // The flood: every call returns at once (the guest checks: status 1 if one took
    // 50 ms or more); what did not fit is counted and said.
    log.expect_in_order(&[
        "domain attack-flood: ",
        "console line(s) not logged (over its rate limit, or the serial port was full); its console output is all kept for `console 1`",
    ]);
    log.expect_in_order(&["domain attack-flood exited status=0"]);
    if let Some(done) = log.serial.lines().find(|l| l.contains("[attack-flood] flood: done")) {
        eprintln!("[{}] {done}", log.name);
    }
    // Domain0's shell answered every command of its script.
    log.expect_in_order(&[
        "dom0# unpause 0",
        "error: refusing to unpause Domain-0",
        "dom0# list",
        "dom0# list",
        "dom0# list",
        "dom0# list",
        "Domain-0                                     0",
        "dom0# poweroff",
        "machine halted: done",
    ]);
    log.expect_absent("Domain-0 unpaused");
    // RDPMC refused, HostInfo without other domains or host memory, the speculation
    // MSRs as CPUID says, SPEC_CTRL kept: status 0 (its lines may be lost in the flood,
    // which runs beside it; the status line is the hypervisor's own).
    log.expect_in_order(&["domain attack-leaks exited status=0"]);
    // The reset loop: five rebuilds, then the domain is left crashed.
    log.expect_in_order(&[
        "domain attack-reset asked for a reset",
        "domain attack-reset rebooted:",
        "domain attack-reset crashed: it reset itself 5 times within 60 s; not restarting it again (a reset loop)",
    ]);
    assert_eq!(log.serial.matches("domain attack-reset rebooted:").count(), 5, "{}: five restarts", log.name);
    common_checks(&log);
}

/// Bochs's `tigerlake` model has the speculation controls Skylake-X lacks (IBRS/IBPB,
/// STIBP, SSBD, L1D_FLUSH, MD_CLEAR, ARCH_CAPABILITIES): the guests get SPEC_CTRL,
/// PRED_CMD and FLUSH_CMD, each vCPU keeps its own SPEC_CTRL across switches, and the
/// hypervisor applies the host side (IBPB between domains, VERW before entry).
#[test]
fn speculation_controls_are_virtualized_where_the_cpu_has_them() {
    let log = Boot { memory_mib: 128, cpu_model: "tigerlake", ..Boot::bochs("isolation-spec-ctrl", 1) }
        .with_config(
            "until_guests_exit = true\n\
             [domain attack-spec-a]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=leaks rounds=4 spec=7\"\n\
             [domain attack-spec-b]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=leaks rounds=4 spec=2\"\n\
             [domain canary]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=canary passes=20 every=10\"\n",
        )
        .run();
    let choice = log.line_with("spec_ctrl: CPUID.7 EDX");
    assert!(choice.contains("guest SPEC_CTRL bits 0x7, PRED_CMD yes, FLUSH_CMD yes"), "{choice}");
    assert!(choice.contains("IBPB on domain switch yes, RSB fill on exit yes"), "{choice}");
    for (name, value) in [("attack-spec-a", "0x7"), ("attack-spec-b", "0x2")] {
        log.expect_in_order(&[
            &format!("[{name}] leaks: CPUID ibrs=true stibp=true ssbd=true l1d_flush=true"),
            &format!("[{name}] leaks: speculation MSRs match CPUID"),
            &format!("[{name}] leaks: SPEC_CTRL {value} kept across 4 preemptions"),
            &format!("[{name}] leaks: done, 0 problem(s)"),
            &format!("domain {name} exited status=0"),
        ]);
    }
    common_checks(&log);
}
