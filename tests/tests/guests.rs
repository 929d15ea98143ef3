//! Guests under VT-x in Bochs: each boots, prints through the debug port, and exits
//! with its status; the hypervisor reports the domain's end and its exit counters.

use integration::Boot;

#[test]
fn a_64_bit_guest_boots_prints_sees_the_hypervisor_leaf_and_exits_with_status_0() {
    let log = Boot::bochs("guest-hello64", 1)
        .with_config("until_guests_exit = true\n[domain hello]\nimage = hello64\nmemory = 16\n")
        .run();
    log.expect_in_order(&[
        "domain hello (id 1) created: 16 MiB, 1 vCPU(s), image hello64",
        "domain hello: weight 256, cap 0%, cpus 0x1",
        "[hello] hello from a 64-bit guest (boot info at 0x8000)",
        "[hello] cpuid: vmx=false hypervisor=true signature=\"Ferrovisor\" max_leaf=0x40000010",
        "[hello] cr8: wrote 5, read 5",
        "[hello] hello64: 0 check(s) failed",
        "domain hello exited status=0",
        "domain hello: 16 MiB of guest memory released",
        "domain hello (id 1): shut down status=0",
        "domain hello exits:",
        "sched: hello vcpu0: run ",
        "machine halted: done",
    ]);
    log.expect_absent("ERROR");
}

#[test]
fn two_domains_cannot_see_each_others_memory() {
    let log = Boot::bochs("guest-isolation", 1)
        .with_config(
            "until_guests_exit = true\n\
             [domain writer]\nimage = hello64\nmemory = 16\ncmdline = pattern\n\
             [domain scanner]\nimage = hello64\nmemory = 16\ncmdline = scan\n",
        )
        .run();
    log.expect_in_order(&[
        "domain writer (id 1) created",
        "domain scanner (id 2) created",
        "[writer] pattern: 1 MiB written at 0x400000",
    ]);
    log.expect_in_order(&["[scanner] scan: 16 MiB searched, pattern not found", "domain scanner exited status=0"]);
    log.expect_in_order(&["domain writer exited status=0", "machine halted: done"]);
    log.expect_absent("pattern found");
}

#[test]
fn a_guest_writing_outside_its_memory_changes_nothing_and_one_executing_there_is_crashed() {
    let log = Boot::bochs("guest-wild", 1)
        .with_config(
            "until_guests_exit = true\n\
             [domain wild]\nimage = hello64\nmemory = 16\ncmdline = wild\n\
             [domain calm]\nimage = hello64\nmemory = 16\n",
        )
        .run();
    log.expect_in_order(&[
        "[wild] wild: writing to 0x2000000, beyond my memory",
        "domain wild vcpu0: write to unclaimed guest-physical address 0x2000000 at rip",
        "[wild] wild: the write went nowhere; it reads all ones",
        "[wild] wild: executing at 0x2000000",
        "domain wild crashed: instruction fetch from unclaimed address at 0x2000000",
        "wild vcpu0: rip=0x0000000002000000",
    ]);
    log.expect_in_order(&["[calm] hello64: 0 check(s) failed", "domain calm exited status=0"]);
    log.expect_in_order(&[
        "domain wild (id 1): crashed status=-",
        "domain calm (id 2): shut down status=0",
        "machine halted: done",
    ]);
    log.expect_absent("wild: the write went through");
    log.expect_in_order(&["domain wild unclaimed guest-physical addresses: 1 reads, 1 writes; pages: 0x2000000=2"]);
}

#[test]
fn vmxon_in_a_guest_raises_ud_in_that_guest() {
    let log = Boot::bochs("guest-vmxon", 1)
        .with_config("until_guests_exit = true\n[domain vmx]\nimage = hello64\nmemory = 16\ncmdline = vmxon\n")
        .run();
    log.expect_in_order(&["[vmx] vmxon: raised #UD, as it should in a guest", "domain vmx exited status=0", "vmxon=1"]);
    log.expect_absent("did not fault");
}

#[test]
fn a_triple_fault_crashes_only_its_domain() {
    let log = Boot::bochs("guest-triple", 1)
        .with_config(
            "until_guests_exit = true\n\
             [domain triple]\nimage = hello64\nmemory = 16\ncmdline = triple\n\
             [domain calm]\nimage = hello64\nmemory = 16\n",
        )
        .run();
    log.expect_in_order(&["[triple] triple: loading an empty IDT and faulting", "domain triple crashed: triple fault"]);
    log.expect_in_order(&[
        "domain calm exited status=0",
        "domain triple (id 1): crashed",
        "triple_fault=1",
        "machine halted: done",
    ]);
}

#[test]
fn a_multiboot_kernel_gets_the_multiboot_hand_off_in_32_bit_protected_mode() {
    let log = Boot::bochs("guest-multiboot", 1)
        .with_config(
            "until_guests_exit = true\n[domain mb]\nimage = multiboot32\nmemory = 16\ncmdline = \"hello multiboot\"\n\
             [domain canary]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=canary passes=10 every=10\"\n",
        )
        .run();
    log.expect_in_order(&[
        "domain mb (id 1) created: 16 MiB, 1 vCPU(s), image multiboot32",
        "[mb] hello from a multiboot kernel in 32-bit protected mode",
        // It loads at 0x8000, over the usual 0x9000: the information goes to low memory.
        "[mb] boot information at 0x00001000",
        "[mb] mem_upper=0x00003c00 KiB",
        // GRUB's and QEMU's convention: the image's name first, as argv[0].
        "[mb] cmdline: multiboot32 hello multiboot",
        "[mb] mmap_length=0x000000c0",
        "[mb] multiboot32: failed checks: 0",
        "domain mb exited status=0",
        "machine halted: done",
    ]);
    log.expect_in_order(&["domain canary exited status=0"]);
    log.expect_absent("ERROR");
}

#[test]
fn a_real_mode_program_starts_at_a_reset_like_state() {
    let log = Boot::bochs("guest-real16", 1)
        .with_config(
            "until_guests_exit = true\n\
             [domain rm]\nimage = real16\nmemory = 4\nload_address = 0x7c00\nentry = 0x7c00\nmode = real16\n",
        )
        .run();
    log.expect_in_order(&[
        "domain rm (id 1) created: 4 MiB, 1 vCPU(s), image real16",
        "[rm] hello from 16-bit real mode",
        "[rm] real16: failed checks: 0",
        "domain rm exited status=0",
        "machine halted: done",
    ]);
    log.expect_absent("ERROR");
}

#[test]
fn the_local_apic_timer_interrupts_a_halted_guest_through_emulated_mmio() {
    let log = Boot::bochs("guest-apic", 1)
        .with_config("until_guests_exit = true\n[domain apic]\nimage = hello64\nmemory = 16\ncmdline = apic\n")
        .run();
    log.expect_in_order(&[
        "domain apic (id 1) created",
        "[apic] apic: ok   id=0 version=0x",
        "[apic] apic: ok   byte=0x14 qword=0x",
        "[apic] apic: ok   10 periodic interrupts while halting",
        "[apic] apic: ok   cli held the timer back",
        "[apic] apic: ok   cr8=5 held vector 0x40 back",
        "[apic] apic: ok   one-shot fired once",
        "[apic] apic: 0 check(s) failed",
        "domain apic exited status=0",
        "domain apic exits:",
        "machine halted: done",
    ]);
    // The path each check took: MMIO as EPT violations, HLT, interrupt windows, CR8.
    let exits = log.line_with("domain apic exits:");
    for kind in ["ept_violation=", "hlt=", "interrupt_window=", "cr_access=", "preemption_timer="] {
        assert!(exits.contains(kind), "expected {kind} in {exits:?}");
    }
    log.expect_absent("ERROR");
}

#[test]
fn hypercalls_answer_refuse_privileged_calls_and_never_trust_guest_pointers() {
    let log = Boot::bochs("guest-hypercall", 1)
        .with_config("until_guests_exit = true\n[domain hc]\nimage = hello64\nmemory = 16\ncmdline = hypercall\n")
        .run();
    log.expect_in_order(&[
        "[hc] hypercall: ok   version: Ok(65536)",
        "[hc] hello through the hypercall console",
        "[hc] hypercall: ok   console write: Ok(36)",
        "[hc] hypercall: ok   host info: Ok(0)",
        "[hc] hypercall: host has 1 CPU(s), 0 domain(s), 0 MiB free of 16 MiB",
        "[hc] hypercall: ok   host info is plausible",
        "[hc] hypercall: ok   domain destroy is privileged: Err(-1)",
        "[hc] hypercall: ok   host power-off is privileged: Err(-1)",
        "[hc] hypercall: ok   a buffer outside guest RAM: Err(-14)",
        "[hc] hypercall: ok   a non-canonical output pointer: Err(-14)",
        "[hc] hypercall: ok   a 1 MiB console write: Err(-7)",
        "[hc] hypercall: ok   an unknown call: Err(-38)",
        "[hc] hypercall: 0 check(s) failed",
        "domain hc exited status=0",
        "machine halted: done",
    ]);
    log.expect_absent("ERROR");
}

#[test]
fn a_guest_powers_itself_off_through_acpi_s5_after_reading_the_pm_timer_and_only_it_ends() {
    let log = Boot::bochs("guest-poweroff", 1)
        .with_config(
            "until_guests_exit = true\n[domain off]\nimage = hello64\nmemory = 16\ncmdline = poweroff\n\
             [domain on]\nimage = hello64\nmemory = 8\ncmdline = spin\n",
        )
        .run();
    log.expect_in_order(&[
        "[off] poweroff: pm timer advanced ",
        "[off] poweroff: entering S5",
        "domain off powered off (ACPI S5)",
        // The other domain keeps running to the end of its own 2 s measurement.
        "[on] spin: share=",
        "domain on exited status=0",
        "domain off (id 1): shut down status=0",
        "domain on (id 2): shut down status=0",
        "machine halted: done",
    ]);
    log.expect_absent("still running");
    log.expect_absent("ERROR");
}

#[test]
fn a_guest_finds_the_pic_pit_rtc_pci_host_bridge_fw_cfg_and_io_apic() {
    let log = Boot::bochs("guest-platform", 1)
        .with_config("until_guests_exit = true\n[domain pc]\nimage = hello64\nmemory = 16\ncmdline = platform\n")
        .run();
    log.expect_in_order(&[
        "[pc] platform: ok   pic masks read back 0xfb 0xff",
        "[pc] platform: ok   pit channel 2 counted 10 ms in ",
        "[pc] platform: ok   rtc date 20",
        "[pc] platform: ok   pci 00:00.0 0x12378086, 00:01.0 0xffffffff",
        "[pc] platform: ok   pci bus 0 has 1 device(s)",
        "[pc] platform: ok   fw_cfg signature \"QEMU\", 1 CPU(s)",
        "[pc] platform: ok   ioapic version 0x170020",
        "[pc] platform: 0 check(s) failed",
        "domain pc exited status=0",
        "machine halted: done",
    ]);
    log.expect_absent("ERROR");
}

#[test]
fn device_timers_interrupt_a_halted_guest_through_the_io_apic_and_the_8259() {
    let log = Boot::bochs("guest-timer", 1)
        .with_config("until_guests_exit = true\n[domain clock]\nimage = hello64\nmemory = 16\ncmdline = timer\n")
        .run();
    log.expect_in_order(&[
        "[clock] timer: ok   pit via ioapic pin 2: ",
        "[clock] timer: ok   pit via 8259 irq 0: ",
        "[clock] timer: ok   masked ioapic pin sent nothing more",
        "[clock] timer: ok   rtc periodic via ioapic pin 8: ",
        "[clock] timer: 0 check(s) failed",
        "domain clock exited status=0",
        "machine halted: done",
    ]);
    log.expect_absent("ERROR");
}

/// Faults the hypervisor injects push RFLAGS with RF set, as the CPU's own faults do
/// (issue 15: a return to the faulting instruction must not trip an instruction
/// breakpoint again): #GP for an unknown MSR (WRMSR and RDMSR) and a refused XSETBV,
/// #UD for VMXON.
#[test]
fn injected_faults_push_rflags_with_the_resume_flag() {
    let log = Boot::bochs("guest-rf", 1)
        .with_config(
            "until_guests_exit = true\n[domain rf]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=rf\"\n\
             [domain canary]\nimage = hostile64\nmemory = 16\ncmdline = \"mode=canary passes=10 every=10\"\n",
        )
        .run();
    log.expect_in_order(&[
        "[rf] rf: WRMSR of an unknown MSR: vector 13 with RF set",
        "[rf] rf: RDMSR of an unknown MSR: vector 13 with RF set",
        "[rf] rf: XSETBV of XCR1: vector 13 with RF set",
        "[rf] rf: VMXON: vector 6 with RF set",
        "[rf] rf: done, 0 problem(s)",
        "domain rf exited status=0",
    ]);
    log.expect_in_order(&["domain canary exited status=0"]);
}

/// A guest writing each character to both port 0xE9 and COM1 with "\r\n" line ends
/// (hobby and test kernels do): each stream has its own lines, so each line shows once
/// per stream, whole, and no empty line comes from the "\r".
#[test]
fn a_guest_writing_to_both_the_debug_port_and_com1_gets_clean_lines() {
    let log = Boot::bochs("guest-twin", 1)
        .with_config("until_guests_exit = true\n[domain twin]\nimage = hello64\nmemory = 16\ncmdline = twin\n")
        .run();
    log.expect_in_order(&[
        "[twin] twin: first line",
        "[twin] twin: second line",
        "[twin] twin: done",
        "domain twin exited status=0",
    ]);
    for line in ["twin: first line", "twin: second line", "twin: done"] {
        let n = log.serial.lines().filter(|l| l.ends_with(&format!("[twin] {line}"))).count();
        assert_eq!(n, 2, "{line:?}: once from port 0xE9, once from COM1 (guest_output = log)");
    }
    let guest_lines: Vec<&str> = log.serial.lines().filter(|l| l.contains("[twin] ")).collect();
    assert!(guest_lines.iter().all(|l| l.contains("[twin] twin: ")), "a broken or empty line: {guest_lines:#?}");
    log.expect_absent("ttwwiinn");
}
