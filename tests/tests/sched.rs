//! The credit scheduler in Bochs, judged by what the guests measured: each `spin` guest
//! reports the share of one CPU it got over a 2 s window (gaps in its own TSC reads
//! are the time other vCPUs had the CPU).

use integration::{Boot, BootLog};

/// "spin: share=28.5% of one CPU" -> 28.5
fn share(log: &BootLog, domain: &str) -> f64 {
    let line = log.line_with(&format!("[{domain}] spin: share="));
    line.split("share=")
        .nth(1)
        .and_then(|r| r.split('%').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no share in {line:?}"))
}

fn within_10_percent(got: f64, want: f64) -> bool {
    within(got, want, 0.10)
}

fn within(got: f64, want: f64, tolerance: f64) -> bool {
    (got / want - 1.0).abs() <= tolerance
}

#[test]
fn weights_256_512_1024_share_one_cpu_1_2_4() {
    let log = Boot::bochs("sched-weights-1cpu", 1)
        .with_config(
            "until_guests_exit = true\n\
             [domain w256]\nimage = hello64\nmemory = 4\ncmdline = spin\nweight = 256\n\
             [domain w512]\nimage = hello64\nmemory = 4\ncmdline = spin\nweight = 512\n\
             [domain w1024]\nimage = hello64\nmemory = 4\ncmdline = spin\nweight = 1024\n",
        )
        .run();
    for d in ["w256", "w512", "w1024"] {
        log.expect_in_order(&[&format!("domain {d} exited status=0")]);
    }
    log.expect_in_order(&["sched: w256 vcpu0: run", "machine halted: done"]);
    let (a, b, c) = (share(&log, "w256"), share(&log, "w512"), share(&log, "w1024"));
    eprintln!("shares of one CPU: w256 {a}%, w512 {b}%, w1024 {c}% (ideal 14.3, 28.6, 57.1)");
    // A ratio of two shares, over 2 s of 30 ms slices on two CPUs: one slice more or less
    // for the lightest domain (28.6 % of a CPU) moves c/a by about 5 %, so the bound is
    // 15 % here where the one-CPU tests use 10 %.
    assert!(within(b / a, 2.0, 0.15) && within(c / a, 4.0, 0.15), "weights 1:2:4 gave {a}:{b}:{c}");
    log.expect_absent("ERROR");
}

#[test]
fn a_domain_capped_at_25_percent_gets_25_percent_while_another_competes() {
    // Two CPUs, both contended: the capped domain and two uncapped hogs.
    let log = Boot::bochs("sched-cap", 2)
        .with_config(
            "until_guests_exit = true\n\
             [domain capped]\nimage = hello64\nmemory = 4\ncmdline = spin\ncap = 25\n\
             [domain free1]\nimage = hello64\nmemory = 4\ncmdline = spin\n\
             [domain free2]\nimage = hello64\nmemory = 4\ncmdline = spin\n",
        )
        .run();
    log.expect_in_order(&["domain capped: weight 256, cap 25%, cpus 0x3"]);
    for d in ["capped", "free1", "free2"] {
        log.expect_in_order(&[&format!("domain {d} exited status=0")]);
    }
    let (cap, f1, f2) = (share(&log, "capped"), share(&log, "free1"), share(&log, "free2"));
    eprintln!("shares of one CPU on 2 CPUs: capped {cap}% (cap 25), free {f1}% and {f2}%");
    assert!(within_10_percent(cap, 25.0), "the 25 % cap gave {cap}%");
    log.expect_absent("ERROR");
}

#[test]
fn on_two_cpus_three_single_vcpu_domains_get_their_weight_limited_to_one_cpu_each() {
    // Per-domain shares of 2 CPUs: 256/512/1024 of 200 % would be 28.6/57.1/114.3 %, but
    // a 1-vCPU domain can use at most one CPU; its surplus goes to the others by weight:
    // 33.3/66.7/100 %.
    let log = Boot::bochs("sched-weights-2cpu", 2)
        .with_config(
            "until_guests_exit = true\n\
             [domain w256]\nimage = hello64\nmemory = 4\ncmdline = spin\nweight = 256\n\
             [domain w512]\nimage = hello64\nmemory = 4\ncmdline = spin\nweight = 512\n\
             [domain w1024]\nimage = hello64\nmemory = 4\ncmdline = spin\nweight = 1024\n",
        )
        .run();
    for d in ["w256", "w512", "w1024"] {
        log.expect_in_order(&[&format!("domain {d} exited status=0")]);
    }
    let (a, b, c) = (share(&log, "w256"), share(&log, "w512"), share(&log, "w1024"));
    eprintln!("shares of one CPU on 2 CPUs: w256 {a}%, w512 {b}%, w1024 {c}% (ideal 33.3, 66.7, 100)");
    assert!(
        within_10_percent(a, 33.3) && within_10_percent(b, 66.7) && within_10_percent(c, 100.0),
        "gave {a}/{b}/{c}"
    );
    log.expect_absent("ERROR");
}

#[test]
fn on_two_cpus_two_vcpu_domains_with_weights_256_512_1024_share_1_2_4() {
    let log = Boot::bochs("sched-weights-2vcpu", 2)
        .with_config(
            "until_guests_exit = true\n\
             [domain w256]\nimage = hello64\nmemory = 4\nvcpus = 2\ncmdline = spin2\nweight = 256\n\
             [domain w512]\nimage = hello64\nmemory = 4\nvcpus = 2\ncmdline = spin2\nweight = 512\n\
             [domain w1024]\nimage = hello64\nmemory = 4\nvcpus = 2\ncmdline = spin2\nweight = 1024\n",
        )
        .run();
    for d in ["w256", "w512", "w1024"] {
        log.expect_in_order(&[&format!("domain {d} exited status=0")]);
    }
    let (a, b, c) = (share(&log, "w256"), share(&log, "w512"), share(&log, "w1024"));
    eprintln!("shares of one CPU, 2 vCPUs each on 2 CPUs: w256 {a}%, w512 {b}%, w1024 {c}% (ideal 28.6, 57.1, 114.3)");
    // A ratio of two shares, over 2 s of 30 ms slices on two CPUs: one slice more or less
    // for the lightest domain (28.6 % of a CPU) moves c/a by about 5 %, so the bound is
    // 15 % here where the one-CPU tests use 10 %.
    assert!(within(b / a, 2.0, 0.15) && within(c / a, 4.0, 0.15), "weights 1:2:4 gave {a}:{b}:{c}");
    log.expect_absent("ERROR");
}

#[test]
fn a_two_vcpu_guest_starts_its_second_vcpu_with_init_sipi_and_both_run() {
    let log = Boot::bochs("sched-smp", 2)
        .with_config("until_guests_exit = true\n[domain smp]\nimage = hello64\nmemory = 16\nvcpus = 2\ncmdline = smp\n")
        .run();
    log.expect_in_order(&[
        "domain smp (id 1) created: 16 MiB, 2 vCPU(s)",
        "[smp] smp: hello from vcpu1 in real mode",
        "[smp] smp: vcpu1 alive=1, counted",
        "[smp] smp: hello from vcpu1 in real mode",
        "[smp] smp: vcpu1 started again after INIT: alive=true",
        "[smp] smp: both vCPUs ran",
        "domain smp exited status=0",
        "domain smp: 16 MiB of guest memory released",
        "sched: smp vcpu0: run",
        "sched: smp vcpu1: run",
        "machine halted: done",
    ]);
    log.expect_absent("ERROR");
}
