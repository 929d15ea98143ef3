//! Domain0: the management domain's shell drives the hypervisor through privileged
//! hypercalls, from a boot script in the configuration.
//!
//! Domain0 writes to the physical serial port itself while the hypervisor logs to it
//! too, so a line of either can be cut by the other when Domain0 is preempted mid-line.
//! The DomUs here stay quiet while the script runs (`spin` reports only after 2 s), so
//! the shell's lines come out whole.

use integration::Boot;

#[test]
fn dom0_runs_its_boot_script_list_create_pause_unpause_sched_credit_destroy() {
    let log = Boot::bochs("dom0-script", 1)
        .with_config(
            "[dom0]\nimage = dom0\nmemory = 32\n\
             script = \"list; create hello64 name=demo memory=8 cmdline=spin; list; pause demo; list; unpause demo; \
             sched-credit -d demo -w 512 -c 50; sched-credit; vcpu-list demo; destroy demo; create later; reboot later; list; info; poweroff\"\n\
             [domain calm]\nimage = hello64\nmemory = 8\ncmdline = spin\n\
             [domain later]\nimage = hello64\nmemory = 4\ncmdline = spin\nautostart = false\n",
        )
        .run();
    log.expect_in_order(&[
        "domain Domain-0 (id 0) created: 32 MiB, 1 vCPU(s), image dom0",
        "domain calm (id 1) created",
        "domain later: defined, not started (autostart = false)",
        "dom0: Ferrovisor Domain0 shell (hypercall ABI 1.0)",
        "dom0# list",
        "Name                                        ID   Mem VCPUs      State   Time(s)",
        "Domain-0                                     0    32     1     r-----",
        "calm                                         1     8     1     ",
        "dom0# create hello64 name=demo memory=8 cmdline=spin",
        "domain demo (id 2) created: 8 MiB, 1 vCPU(s), image hello64",
        "dom0# pause demo",
        "domain demo paused",
        "dom0# list",
        "demo                                         2     8     1     --p---",
        "dom0# unpause demo",
        "domain demo unpaused",
        "dom0# sched-credit -d demo -w 512 -c 50",
        "dom0# sched-credit",
        "demo                                 2    512   50",
        "dom0# vcpu-list demo",
        "dom0# destroy demo",
        "domain demo (id 2) destroyed",
        // Defined in the configuration with autostart = false: created by name.
        "dom0# create later",
        "domain later (id 3) created: 4 MiB, 1 vCPU(s), image hello64",
        // Rebuilt under a new ID once the old one's memory is back.
        "dom0# reboot later",
        "domain later: 4 MiB of guest memory released",
        "domain later (id 4) created: 4 MiB, 1 vCPU(s), image hello64",
        "domain later rebooted: id 3 is now id 4",
        "dom0# list",
        "later                                        4     4     1",
        "dom0# info",
        "nr_cpus",
        "dom0# poweroff",
        "Domain0 powered the machine off",
        "machine halted: done",
    ]);
    log.expect_absent("ERROR");
    log.expect_absent("error:");
}

#[test]
fn dom0_lspci_sees_the_machines_devices_through_passthrough() {
    let log = Boot::bochs("dom0-lspci", 1)
        .with_config("[dom0]\nimage = dom0\nmemory = 32\nscript = \"lspci; poweroff\"\n")
        .run();
    log.expect_in_order(&[
        // The IDE controller's bus-master I/O BAR is opened in Domain0's I/O bitmap.
        "passthrough: 00:01.1 8086:7010 I/O 0xc000+0x10 to Domain-0",
        "passthrough: IRQ 4 of the machine goes to Domain-0",
        "dom0# lspci",
        // Bochs's i440FX board: the host bridge and the PIIX3 south bridge, which the
        // hypervisor leaves to Domain0 (a DomU's bus has the host bridge only: the
        // `platform` guest test).
        "00:00.0 Host bridge [0600]: Intel Corporation 440FX - 82441FX PMC [8086:1237]",
        "00:01.0 ISA bridge [0601]: Intel Corporation 82371SB PIIX3 ISA [8086:7000]",
        "dom0# poweroff",
        "machine halted: done",
    ]);
    log.expect_absent("ERROR");
}

#[test]
fn a_domu_calling_privileged_hypercalls_gets_eperm_and_keeps_running_beside_dom0() {
    let log = Boot::bochs("dom0-eperm", 1)
        .with_config(
            "[dom0]\nimage = dom0\nmemory = 32\nscript = \"sleep 1; list; top; dmesg; poweroff\"\n\
             [domain probe]\nimage = hello64\nmemory = 16\ncmdline = hypercall\n",
        )
        .run();
    log.expect_in_order(&[
        // It names itself (domain 1) for destroy, and asks to power the host off.
        "[probe] hypercall: ok   domain destroy is privileged: Err(-1)",
        "[probe] hypercall: ok   host power-off is privileged: Err(-1)",
        "[probe] hypercall: 0 check(s) failed",
        "domain probe exited status=0",
        "dom0# list",
        "probe                                        1    16     1     ---s--",
        "dom0# top",
        "      NAME  STATE   CPU(sec) CPU(%)     MEM(k) VCPUS",
        "dom0# dmesg",
        // The hypervisor's log from its first line, read back through the log ring.
        "boot: Ferrovisor 0.1.0 starting",
        "dom0# poweroff",
        "machine halted: done",
    ]);
    log.expect_absent("ERROR");
}

#[test]
fn dom0_shutdown_presses_the_acpi_power_button_of_a_listening_guest_and_powers_off_a_deaf_one() {
    let log = Boot::bochs("dom0-shutdown", 1)
        .with_config(
            "[dom0]\nimage = dom0\nmemory = 32\nscript = \"sleep 1; shutdown polite; shutdown deaf; sleep 1; list; poweroff\"\n\
             [domain polite]\nimage = hello64\nmemory = 8\ncmdline = button\n\
             [domain deaf]\nimage = hello64\nmemory = 8\ncmdline = ticker\n",
        )
        .run();
    log.expect_in_order(&[
        "[polite] button: waiting for the ACPI power button",
        "dom0# shutdown polite",
        "domain polite: ACPI power button pressed (shutdown requested by Domain0)",
        "dom0# shutdown deaf",
        "domain deaf does not listen to its ACPI power button; powered off by Domain0",
        "dom0# list",
        "dom0# poweroff",
    ]);
    log.expect_in_order(&[
        "[polite] button: power button pressed; powering off",
        "domain polite powered off (ACPI S5)",
    ]);
    log.expect_in_order(&["polite                                       1     8     1     ---s--"]);
    log.expect_absent("ERROR");
}
