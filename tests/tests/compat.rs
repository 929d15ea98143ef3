//! The edges of the PC that real kernels probe (guests/hostile64's `compat` modes), each
//! beside a canary DomU and Domain0: every check must come back as hardware answers it,
//! the canary and Domain0 must keep working, and only the guest that executes from an
//! address with nothing behind it may be crashed.

use integration::{Boot, BootLog};
use std::time::Duration;

/// What every run must show: no hypervisor stop but Domain0's power-off, no domain but
/// the one meant to crash crashed, the canary intact.
fn common_checks(log: &BootLog) {
    for bad in ["PANIC", "machine halted: exception", "EXCEPTION", "CORRUPTED", "compat: BAD", "hostile64 panicked"] {
        log.expect_absent(bad);
    }
    for line in log.serial.lines().filter(|l| l.contains("crashed:")) {
        assert!(line.contains("domain fetch crashed"), "{}: a domain crashed that should not have: {line}", log.name);
    }
    log.expect_in_order(&["domain canary exited status=0"]);
}

/// Unclaimed guest-physical addresses (an absent HPET, 0xFF000000, the hole above RAM)
/// read all ones and drop writes, counted and logged; an instruction fetch from one
/// crashes the domain. Disabling the local APIC clears CPUID.1:EDX.APIC and takes its
/// page away; the MSRs a kernel touches at boot (TSC, TSC_ADJUST, MISC_ENABLE, the
/// machine-check bank) answer as the SDM says; NMIs arrive through every local-APIC
/// path (LINT1 raised by Domain0's `trigger`), blocked until IRET; a sleep state the
/// DSDT does not offer wakes at once.
#[test]
fn guests_probing_the_edges_of_the_pc_get_what_hardware_answers() {
    let log = Boot { memory_mib: 192, ..Boot::bochs("compat", 1) }
        .with_config(
            "[dom0]\nimage = dom0\nmemory = 32\n\
             script = \"sleep 2; trigger nmi nmi; sleep 6; list; poweroff\"\n\
             [domain unclaimed]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=unclaimed\"\n\
             [domain fetch]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=unclaimed-fetch\"\n\
             [domain apic-off]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=apic-off\"\n\
             [domain nmi]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=nmi\"\n\
             [domain msrs]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=cpu-msrs\"\n\
             [domain s3]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=s3\"\n\
             [domain canary]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=canary passes=20 every=10\"\n",
        )
        .run();
    common_checks(&log);
    // Each guest prints its failed checks (none) and a summary; its status says the rest.
    log.expect_in_order(&[
        "domain unclaimed vcpu0: read of unclaimed guest-physical address 0xfed00008 at rip",
        "domain unclaimed vcpu0: read of unclaimed guest-physical address 0xff000008 at rip",
        "domain unclaimed vcpu0: read of unclaimed guest-physical address 0xe0000008 at rip",
        "domain unclaimed exited status=0",
    ]);
    // 5051 accesses: one line for each of the three pages' first, then one at 1024,
    // 2048 and 4096 accesses.
    let firsts = log.serial.lines().filter(|l| l.contains("domain unclaimed vcpu0: ")).count();
    let totals = log.serial.lines().filter(|l| l.contains("accesses to unclaimed guest-physical addresses")).count();
    assert_eq!((firsts, totals), (3, 3), "{}: the unclaimed accesses' log lines are not bounded", log.name);
    log.expect_in_order(&[
        "[fetch] compat: jumping to 0xfed00000",
        "domain fetch crashed: instruction fetch from unclaimed address at 0xfed00000",
    ]);
    log.expect_in_order(&[
        "domain apic-off vcpu0: read of unclaimed guest-physical address 0xfee00030",
        "domain apic-off exited status=0",
    ]);
    log.expect_in_order(&["domain nmi: NMI line (LINT1) raised by Domain0", "domain nmi exited status=0"]);
    log.expect_in_order(&["domain msrs exited status=0"]);
    log.expect_in_order(&[
        "domain s3 asked for ACPI sleep type 3, which its DSDT does not offer (only S5); it wakes at once",
        "domain s3 exited status=0",
    ]);
    // 4097 refusals: one line for the first, then one at 1024, 2048 and 4096.
    let refusals = log.serial.lines().filter(|l| l.contains("domain s3 asked for ACPI sleep type")).count();
    let counts =
        log.serial.lines().filter(|l| l.contains("domain s3: ") && l.contains("ACPI sleep requests refused")).count();
    assert_eq!((refusals, counts), (1, 3), "{}: the refused sleeps' log lines are not bounded", log.name);
    for (name, mode, checks) in [
        ("unclaimed", "unclaimed", 34),
        ("apic-off", "apic-off", 21),
        ("nmi", "nmi", 8),
        ("msrs", "cpu-msrs", 25),
        ("s3", "s3", 4),
    ] {
        let summary = log.serial.lines().find(|l| l.contains(&format!("[{name}] compat: {mode}: ")));
        if let Some(line) = summary {
            assert!(line.ends_with(" 0 problem(s)"), "{}: {line}", log.name);
            assert!(line.contains(&format!(": {checks} checks,")), "{}: {line}", log.name);
        }
    }
}

/// The `case NAME: events` lines of guests/real16, without the log's prefixes.
fn debug_cases(log: &BootLog) -> Vec<String> {
    log.serial.lines().filter_map(|l| l.find("case ").map(|i| l[i..].trim_end().to_string())).collect()
}

/// Debug exceptions around instructions that exit to the hypervisor (single-step over
/// CPUID, IN, STI;HLT, MOV SS then CPUID; a data breakpoint deferred by MOV SS, then
/// CPUID, INT3 or INT1; DR7.GD after MOV SS) must come out exactly as on the same CPU
/// model without a hypervisor: guests/real16 runs first on bare Bochs (its BIOS boots
/// the image as a boot sector), then as a DomU, and the events each case took (#DB with
/// DR6, #BP, the timer's interrupt, each with the IP it returns to) must be equal.
#[test]
fn debug_exceptions_across_exits_match_the_same_cpu_without_a_hypervisor() {
    let image = integration::guest_image("real16");
    let bare = integration::bare_bochs("debug-bare", image, "real16: failed checks:", Duration::from_secs(120));
    let reference = debug_cases(&bare);
    assert_eq!(reference.len(), 8, "bare Bochs ran every case:\n{}", bare.serial);
    let log = Boot::bochs("debug-ferrovisor", 1)
        .with_config(
            "until_guests_exit = true\n\
             [domain rm]\nimage = real16\nmemory = 4\nload_address = 0x7c00\nentry = 0x7c00\nmode = real16\n\
             [domain canary]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=canary passes=10 every=10\"\n",
        )
        .run();
    log.expect_in_order(&["[rm] real16: failed checks: 0", "domain rm exited status=0"]);
    log.expect_in_order(&["domain canary exited status=0"]);
    let ours = debug_cases(&log);
    for (theirs, ours) in reference.iter().zip(&ours) {
        assert_eq!(ours, theirs, "under the hypervisor (left) and on bare Bochs (right)");
    }
    assert_eq!(ours.len(), reference.len(), "every case ran under the hypervisor: {ours:#?}");
    // What the SDM says beyond doubt: a single-step trap after an instruction the
    // hypervisor completed, a deferred data breakpoint delivered after CPUID.
    let step_cpuid = &reference[0];
    assert!(step_cpuid.starts_with("case step-cpuid: D@") && step_cpuid.contains("/4000"), "{step_cpuid}");
    let watch = reference.iter().find(|c| c.starts_with("case watch-movss-cpuid:")).unwrap();
    assert!(watch.contains("/0001"), "{watch}");
}
