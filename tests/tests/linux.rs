//! An unmodified Linux kernel as a DomU (issue 7): Debian's cloud kernel with an
//! initramfs around Debian's static busybox, both fetched and built by xtask, next to
//! Domain0 and another DomU, driven through Domain0's `console ID` as a person would.
//!
//! The hypervisor logs every line a domain prints as `[NAME] line`; Domain0's console
//! copies the same bytes raw. The checks below read the hypervisor's lines, which arrive
//! whole, and use Domain0's copy only for the markers Domain0 itself prints.

use integration::{Boot, Session};
use std::time::Duration;

/// Linux reaches its shell after about 0.55 G Bochs instructions (1.6 G counting the
/// machine's own boot): under a minute of wall time on an idle machine, a few on a busy
/// one.
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

/// Waits for the Linux domain with `id` to reach its shell, then attaches to it.
fn boot_and_attach(s: &mut Session, id: u32) -> String {
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
    dom0(s, &format!("console {id}"));
    s.expect(&format!("[console {id}: Ctrl-] to leave]"), T);
    // The console's history ends with the shell's prompt: ash is reading its terminal.
    s.expect("domu:/# ", T);
    release
}

#[test]
fn debian_s_kernel_runs_a_shell_on_two_vcpus_reached_from_domain0_s_console() {
    let (kernel, initramfs) = xtask::foreign::linux().unwrap_or_else(|e| panic!("fetching Linux: {e}"));
    let mut boot = Boot::bochs("linux", 2)
        .with_guest("vmlinuz", "bzimage", kernel)
        .with_guest("initramfs", "data", initramfs)
        .with_config(config());
    boot.memory_mib = 512;
    let mut s = boot.interactive();
    s.expect("dom0: Ferrovisor Domain0 shell", BOOT);
    s.expect("domain linux (id 2) created: 256 MiB, 2 vCPU(s)", BOOT);
    let release = boot_and_attach(&mut s, 2);

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

    // `reboot`: the kernel resets through the FADT's reset register; the domain is
    // built again under a new ID, and Domain0's console notices the old one is gone.
    s.type_line("reboot");
    s.expect_line(&["[linux] ", "reboot: Restarting system"], T);
    s.expect("domain linux asked for a reset", T);
    s.expect_each(&["domain linux rebooted: id 2 is now id 3", "[console left: domain 2 is gone]"], T);
    boot_and_attach(&mut s, 3);
    assert_eq!(linux(&mut s, "grep -c ^processor /proc/cpuinfo"), "2");

    // `poweroff`: ACPI S5, and with on_poweroff = destroy the domain leaves the list.
    s.type_line("poweroff");
    s.expect_line(&["[linux] ", "reboot: Power down"], T);
    s.expect("domain linux powered off (ACPI S5)", T);
    s.expect_each(&["domain linux (id 3) destroyed (on_poweroff = destroy)", "[console left: domain 3 is gone]"], T);
    dom0(&mut s, "list");
    s.expect_line(&["Name", "ID", "Mem", "VCPUs", "State"], T);
    let table = s.expect("dom0# ", T);
    let rows: Vec<&str> = table.lines().filter(|l| !l.starts_with('[')).collect();
    assert!(rows.iter().any(|r| r.starts_with("calm ")), "calm is not listed: {rows:?}");
    assert!(!rows.iter().any(|r| r.starts_with("linux")), "linux is still listed: {rows:?}");
    dom0(&mut s, "poweroff");
    s.expect("machine halted: done", T);
}
