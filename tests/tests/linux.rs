//! An unmodified Linux kernel as a DomU (issue 7): Debian's cloud kernel with an
//! initramfs around Debian's static busybox, both fetched and built by xtask, next to
//! Domain0 and another DomU, driven through Domain0's `console ID` as a person would.
//!
//! The hypervisor logs every line a domain prints as `[NAME] line`; Domain0's console
//! copies the same bytes raw. The checks below read the hypervisor's lines, which arrive
//! whole, and use Domain0's copy only for the markers Domain0 itself prints.

use integration::{Boot, Session};
use std::time::Duration;

/// Linux reaches its shell about 0.55 G Bochs instructions after `create` (1.3 G
/// counting the machine's own boot): half a minute of wall time on an idle machine, a
/// few minutes on a busy one. The test boots it three times.
const BOOT: Duration = Duration::from_secs(600);
/// One command's answer.
const T: Duration = Duration::from_secs(180);

fn config() -> &'static str {
    let text = format!(
        "[dom0]\nimage = dom0\nmemory = 32\n\
         [domain calm]\nimage = hello64\nmemory = 8\ncmdline = ticker\n\
         [domain linux]\nimage = vmlinuz\ninitrd = initramfs\nmemory = {}\nvcpus = 2\n\
         cmdline = \"{}\"\non_poweroff = destroy\n",
        xtask::foreign::LINUX_MEMORY_MIB,
        xtask::foreign::LINUX_CMDLINE
    );
    Box::leak(text.into_boxed_str())
}

/// Types into Domain0's shell and waits for its echo.
fn dom0(s: &mut Session, line: &str) {
    s.type_line(line);
    s.expect(line, T);
}

/// Types `line` into the Linux shell (through Domain0's console) and returns the first
/// line the kernel's console prints after the echo, as the hypervisor logged it.
fn linux(s: &mut Session, line: &str) -> String {
    s.type_line(line);
    // The echo: the prompt and the command, one logged line.
    s.expect_line(&["[linux] domu:/# ", line], T);
    let answer = s.expect_line(&["domain::kernel: [linux] "], T);
    answer.split_once("domain::kernel: [linux] ").map(|(_, a)| a.trim_end().to_string()).unwrap_or_default()
}

/// Waits for the Linux domain to reach its shell; returns the kernel's release.
fn boot_to_shell(s: &mut Session) -> String {
    s.expect("[linux] [    0.000000] Linux version 6.", BOOT);
    // What Linux found on its own, in the order it reports it: the ACPI PM timer, the
    // TSC-deadline local APIC timer, the second vCPU (MADT, INIT/STARTUP), the I/O APIC
    // for device interrupts, the TSC as its clock (rate from CPUID 0x15), the 16550.
    s.expect("ACPI: PM-Timer IO Port: 0x608", BOOT);
    s.expect("TSC deadline timer available", BOOT);
    s.expect_line(&["[linux] [", "smp: Brought up 1 node, 2 CPUs"], BOOT);
    s.expect("ACPI: Using IOAPIC for interrupt routing", BOOT);
    s.expect("clocksource: acpi_pm: mask", BOOT);
    let clock = s.expect_line(&["[linux] [", "clocksource: Switched to clocksource tsc"], BOOT);
    assert!(clock.ends_with("clocksource tsc"), "Linux settled on another clock: {clock:?}");
    s.expect_line(&["serial8250: ttyS0 at I/O 0x3f8 (irq = 4", "is a 16550A"], BOOT);
    s.expect("Run /init as init process", BOOT);
    let up = s.expect_line(&["[linux] ferrovisor-initramfs: up, kernel "], BOOT);
    let release = up.rsplit(' ').next().unwrap_or_default().trim().to_string();
    assert!(release.ends_with("-cloud-amd64"), "not Debian's cloud kernel: {up:?}");
    s.expect("built-in shell (ash)", BOOT);
    release
}

/// Attaches Domain0's console to domain `id`, whose shell is up.
fn attach(s: &mut Session, id: u32) {
    dom0(s, &format!("console {id}"));
    s.expect(&format!("[console {id}: Ctrl-] to leave]"), T);
    // The console's history ends with the shell's prompt: ash is reading its terminal.
    s.expect("domu:/# ", T);
}

#[test]
fn debian_s_kernel_on_two_vcpus_answers_domain0_s_console_reboots_powers_off_and_shuts_down() {
    let (kernel, initramfs) = xtask::foreign::linux().unwrap_or_else(|e| panic!("fetching Linux: {e}"));
    let mut boot = Boot::bochs("linux", 2)
        .with_guest("vmlinuz", "bzimage", kernel)
        .with_guest("initramfs", "data", initramfs)
        .with_config(config());
    boot.memory_mib = 512;
    let mut s = boot.interactive();
    s.expect("dom0: Ferrovisor Domain0 shell", BOOT);
    s.expect("domain linux (id 2) created: 256 MiB, 2 vCPU(s)", BOOT);
    let release = boot_to_shell(&mut s);
    attach(&mut s, 2);

    // Linux found both vCPUs (ACPI MADT, INIT/STARTUP through the local APIC).
    assert_eq!(linux(&mut s, "grep -c ^processor /proc/cpuinfo"), "2");
    assert_eq!(linux(&mut s, "uname -r"), release);
    // Both vCPUs take local APIC timer interrupts; the console's IRQ 4 comes through
    // the I/O APIC.
    let loc = linux(&mut s, "grep LOC: /proc/interrupts");
    let counts: Vec<u64> = loc.split_whitespace().skip(1).take(2).filter_map(|n| n.parse().ok()).collect();
    assert!(counts.len() == 2 && counts.iter().all(|&n| n > 0), "local timer interrupts per CPU: {loc:?}");
    let com = linux(&mut s, "grep ttyS0 /proc/interrupts");
    assert!(com.contains("IO-APIC") && com.trim_start().starts_with("4:"), "the console's interrupt: {com:?}");
    // NMI IPIs between vCPUs: sysrq 'l' asks the other CPU for a backtrace by NMI (no
    // NMI watchdog runs without a PMU, so the count starts at 0).
    s.type_line("echo l > /proc/sysrq-trigger; sleep 2; grep NMI: /proc/interrupts");
    let nmi = s.expect_line(&["[linux] ", "NMI:", "Non-maskable interrupts"], T);
    let nmis: Vec<u64> = nmi
        .split_once("NMI:")
        .map(|(_, counts)| counts.split_whitespace().take(2).filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default();
    assert!(nmis.len() == 2 && nmis[1] > 0, "NMIs taken per CPU after sysrq-l: {nmi:?}");

    // `reboot`: the kernel resets through the FADT's reset register; the domain is
    // built again under a new ID, and Domain0's console notices the old one is gone.
    s.type_line("reboot");
    s.expect_line(&["[linux] ", "reboot: Restarting system"], T);
    s.expect("domain linux asked for a reset", T);
    s.expect_each(&["domain linux rebooted: id 2 is now id 3", "[console left: domain 2 is gone]"], T);
    boot_to_shell(&mut s);
    attach(&mut s, 3);
    assert_eq!(linux(&mut s, "grep -c ^processor /proc/cpuinfo"), "2");

    // `poweroff`: ACPI S5, and with on_poweroff = destroy the domain leaves the list.
    s.type_line("poweroff");
    s.expect_line(&["[linux] ", "reboot: Power down"], T);
    s.expect("domain linux powered off (ACPI S5)", T);
    s.expect_each(&["domain linux (id 3) destroyed (on_poweroff = destroy)", "[console left: domain 3 is gone]"], T);
    let rows = list(&mut s);
    assert!(rows.iter().any(|r| r.starts_with("calm ")), "calm is not listed: {rows:?}");
    assert!(!rows.iter().any(|r| r.starts_with("linux")), "linux is still listed: {rows:?}");

    // Created again from Domain0 (the DomainCreate hypercall names the initrd), then
    // shut down from Domain0: the ACPI power button, which the kernel's button driver
    // turns into an input event and busybox's acpid into `poweroff`. Created by
    // hypercall it keeps the default on_poweroff = preserve, so it stays listed.
    // (Its echo is long enough for a log line to land in the middle: not waited for.)
    s.type_line(&format!(
        "create vmlinuz name=linux memory={} vcpus=2 initrd=initramfs cmdline=\"{}\"",
        xtask::foreign::LINUX_MEMORY_MIB,
        xtask::foreign::LINUX_CMDLINE
    ));
    s.expect("domain linux (id 4) created: 256 MiB, 2 vCPU(s), image vmlinuz", T);
    s.expect("Created domain linux (id 4)", T);
    boot_to_shell(&mut s);
    attach(&mut s, 4);
    let acpid = linux(&mut s, "pidof acpid");
    assert!(acpid.parse::<u32>().is_ok(), "acpid is not running: {acpid:?}");
    s.send_bytes(&[0x1D]);
    s.expect("[console left]", T);
    // The NMI line: the MADT's LAPIC NMI entry tells Linux that LINT1 is NMI, it
    // programs it so, and Domain0's trigger reaches CPU 0 as an NMI nobody claimed.
    dom0(&mut s, "trigger linux nmi 0");
    s.expect("domain linux: NMI line (LINT1) raised by Domain0", T);
    s.expect_line(&["[linux] ", "NMI received for unknown reason", "on CPU 0"], T);
    dom0(&mut s, "shutdown linux");
    s.expect("domain linux: ACPI power button pressed (shutdown requested by Domain0)", T);
    // (After the prompt the shell left on the console line.)
    s.expect_line(&["[linux] ", "ferrovisor-initramfs: power button pressed"], T);
    s.expect_line(&["[linux] ", "reboot: Power down"], T);
    s.expect("domain linux powered off (ACPI S5)", T);
    let rows = list(&mut s);
    let row = rows.iter().find(|r| r.starts_with("linux ")).unwrap_or_else(|| panic!("linux is not listed: {rows:?}"));
    assert!(row.contains(" 4 ") && row.contains("---s--"), "linux is not listed as shut down: {row:?}");
    dom0(&mut s, "destroy linux");
    s.expect("domain linux (id 4) destroyed", T);
    dom0(&mut s, "poweroff");
    s.expect("machine halted: done", T);
}

/// Domain0's `list`: the table's rows (the hypervisor's own log lines left out).
fn list(s: &mut Session) -> Vec<String> {
    dom0(s, "list");
    s.expect_line(&["Name", "ID", "Mem", "VCPUs", "State"], T);
    let table = s.expect("dom0# ", T);
    table.lines().filter(|l| !l.starts_with('[') && !l.trim().is_empty()).map(str::to_string).collect()
}
