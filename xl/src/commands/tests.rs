//! Every command against the mock machine: exact output, exact errors, exact calls made.

use abi::hypercall::{DomState, Error, VcpuState};
use std::format;
use std::string::String;
use std::vec::Vec;

use crate::host::{Acpi, AcpiStatus};
use crate::mock::{Mock, vcpu};
use crate::{Outcome, Shell};

/// Runs `line` on a fresh shell; returns what it printed and its outcome.
fn run(m: &mut Mock, line: &str) -> (String, Outcome) {
    run_in(&mut Shell::new(), m, line)
}

fn run_in(shell: &mut Shell, m: &mut Mock, line: &str) -> (String, Outcome) {
    let mut out = String::new();
    let outcome = shell.run(line, m, &mut out);
    (out, outcome)
}

/// The output of `line`, which must finish with `Outcome::Done`.
fn output(m: &mut Mock, line: &str) -> String {
    let (out, outcome) = run(m, line);
    assert_eq!(outcome, Outcome::Done, "{line}");
    out
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn list_prints_xls_table_with_domain0_by_its_xl_name() {
    let mut m = Mock::new();
    assert_eq!(
        lines(&output(&mut m, "list")),
        [
            "Name                                        ID   Mem VCPUs      State   Time(s)",
            "Domain-0                                     0    32     1     r-----       1.2",
            "web                                          1    64     2     -b----      56.8",
            "db                                           2   128     1     --p---       0.0",
        ]
    );
    assert_eq!(lines(&output(&mut m, "list web")).len(), 2);
    assert_eq!(output(&mut m, "list nothere"), "error: no domain 'nothere'\n");
    assert_eq!(output(&mut m, "list a b"), "error: usage: list [DOMAIN]\n");
}

#[test]
fn blank_lines_and_comments_do_nothing() {
    let mut m = Mock::new();
    for line in ["", "   ", "\t", "# just a comment", "  # indented comment"] {
        assert_eq!(run(&mut m, line), (String::new(), Outcome::Done), "{line:?}");
    }
    assert_eq!(lines(&output(&mut m, "   list   # with a comment")).len(), 4);
}

#[test]
fn unknown_commands_point_to_help_and_help_lists_every_command() {
    let mut m = Mock::new();
    assert_eq!(output(&mut m, "frobnicate 1"), "error: unknown command 'frobnicate'; type 'help'\n");
    let help = output(&mut m, "help");
    for command in [
        "list",
        "info",
        "create IMAGE",
        "destroy DOMAIN",
        "shutdown",
        "reboot",
        "pause",
        "unpause",
        "console DOMAIN",
        "sched-credit",
        "vcpu-list",
        "vcpu-pin",
        "dmesg",
        "top",
        "lspci",
        "acpi",
        "help",
        "poweroff",
    ] {
        assert!(help.lines().any(|l| l.starts_with(command)), "help lacks {command}:\n{help}");
    }
    assert_eq!(help.lines().count(), super::COMMANDS.len(), "one line per command");
}

#[test]
fn info_shows_the_host_in_key_value_lines() {
    let mut m = Mock::new();
    assert_eq!(
        lines(&output(&mut m, "info")),
        [
            "host                   : ferrovisor",
            "hypervisor_version     : 1.0",
            "nr_cpus                : 2",
            "total_memory           : 1024",
            "free_memory            : 800",
            "tsc_khz                : 2000000",
            "features               : vmx-preemption-timer tsc-deadline",
            "nr_domains             : 3",
        ]
    );
    m.host.features = 0;
    assert!(output(&mut m, "info").contains("features               : none\n"));
    m.host.features = 0b110;
    assert!(output(&mut m, "info").contains("features               : tsc-deadline bit2\n"));
}

#[test]
fn create_passes_every_option_and_reports_the_new_domain() {
    let mut m = Mock::new();
    let out = output(&mut m, r#"create hello64 name=demo memory=0x40 vcpus=2 weight=512 cap=50 cmdline="spin fast""#);
    assert_eq!(out, "Created domain demo (id 3)\n");
    assert_eq!(m.calls, ["create hello64 name=demo memory=64 vcpus=2 weight=512 cap=50 cmdline=spin fast"]);
    assert!(output(&mut m, "list demo").contains("demo                                         3    64     2"));
}

#[test]
fn create_names_a_linux_kernel_s_initrd() {
    let mut m = Mock::new();
    m.images.push("vmlinuz");
    let out = output(&mut m, "create vmlinuz name=linux memory=256 vcpus=2 initrd=initramfs cmdline=console=ttyS0");
    assert_eq!(out, "Created domain linux (id 3)\n");
    assert_eq!(
        m.calls,
        ["create vmlinuz name=linux memory=256 vcpus=2 weight=0 cap=0 cmdline=console=ttyS0 initrd=initramfs"]
    );
    let long = format!("create vmlinuz initrd={}", "r".repeat(65));
    assert_eq!(output(&mut m, &long), "error: the initrd name is longer than 64 bytes\n");
}

#[test]
fn create_without_a_name_uses_the_image_name() {
    let mut m = Mock::new();
    assert_eq!(output(&mut m, "create hello64"), "Created domain hello64 (id 3)\n");
    assert_eq!(m.calls, ["create hello64 name=hello64 memory=0 vcpus=0 weight=0 cap=0 cmdline="]);
    assert_eq!(output(&mut m, "create hello64"), "error: a domain named 'hello64' exists already\n");
}

#[test]
fn create_refuses_bad_options_before_calling_the_hypervisor() {
    let mut m = Mock::new();
    let cases = [
        (
            "create",
            "error: usage: create IMAGE [name=N] [memory=MiB] [vcpus=N] [weight=W] [cap=C] [cmdline=TEXT] [initrd=ENTRY]\n",
        ),
        (
            "create hello64 foo=1",
            "error: unknown option 'foo' (known: name, memory, vcpus, weight, cap, cmdline, initrd)\n",
        ),
        (
            "create hello64 verbose",
            "error: unknown option 'verbose' (known: name, memory, vcpus, weight, cap, cmdline, initrd)\n",
        ),
        ("create hello64 memory=lots", "error: bad number 'lots' for memory\n"),
        ("create hello64 vcpus=4294967296", "error: bad number '4294967296' for vcpus\n"),
        ("create hello64 weight=-1", "error: bad number '-1' for weight\n"),
        ("create hello64 name=web", "error: a domain named 'web' exists already\n"),
        ("create hello64 name=Domain-0", "error: a domain named 'Domain-0' exists already\n"),
        ("create hello64 name=42", "error: domain name '42' is a number (it would read as a domain ID)\n"),
        ("create hello64 name=", "error: a domain name cannot be empty\n"),
        ("create hello64 name=abcdefghijklmnopqrstuvwxyz0123456", "error: the domain name is longer than 32 bytes\n"),
        (r#"create hello64 cmdline="open"#, "error: unterminated quote\n"),
    ];
    for (line, expected) in cases {
        assert_eq!(output(&mut m, line), expected, "{line}");
    }
    assert!(m.calls.is_empty(), "{:?}", m.calls);
}

#[test]
fn create_explains_the_hypervisors_refusals() {
    let mut m = Mock::new();
    assert_eq!(output(&mut m, "create nosuch"), "error: no image 'nosuch' in the boot bundle\n");
    assert_eq!(
        output(&mut m, "create hello64 name=big memory=4096"),
        "error: not enough free host memory for this domain (see 'info')\n"
    );
    assert!(
        output(&mut m, "create hello64 name=w weight=70000")
            .starts_with("error: the hypervisor refused these parameters (weight 1-65535, cap 0-6400")
    );
    m.fail_next = Some(Error::Fault);
    assert_eq!(output(&mut m, "create hello64"), "error: DomainCreate: bad buffer address (-14)\n");
}

#[test]
fn lifecycle_commands_take_an_id_or_a_name_and_print_nothing() {
    let mut m = Mock::new();
    assert_eq!(output(&mut m, "pause web"), "");
    assert_eq!(output(&mut m, "unpause 1"), "");
    assert_eq!(output(&mut m, "shutdown \"db\""), "");
    assert_eq!(output(&mut m, "reboot 2"), "");
    assert_eq!(output(&mut m, "destroy web"), "");
    assert_eq!(m.calls, ["pause 1", "unpause 1", "shutdown 2", "reboot 2", "destroy 1"]);
    assert_eq!(output(&mut m, "destroy web"), "error: no domain 'web'\n");
    assert_eq!(output(&mut m, "pause 7"), "error: no domain '7'\n");
    assert_eq!(output(&mut m, "pause"), "error: usage: pause DOMAIN\n");
    assert_eq!(output(&mut m, "pause 1 2"), "error: usage: pause DOMAIN\n");
}

#[test]
fn a_number_is_an_id_first_and_a_name_second() {
    let mut m = Mock::new();
    // A domain whose name looks like another one's ID (created before names were checked).
    m.domains.push(crate::mock::domain(9, "1", DomState::Blocked, 16, 1, 0));
    assert_eq!(output(&mut m, "pause 1"), "");
    assert_eq!(output(&mut m, "pause 9"), "");
    assert_eq!(m.calls, ["pause 1", "pause 9"]);
    m.domains.retain(|d| d.id != 1);
    assert_eq!(output(&mut m, "unpause 1"), "");
    assert_eq!(m.calls.last().unwrap(), "unpause 9", "no domain has ID 1 now: the name matches");
}

#[test]
fn domain0_cannot_be_destroyed_paused_unpaused_shut_down_or_rebooted() {
    let mut m = Mock::new();
    // `unpause 0` too: Domain0 is never paused, and the hypervisor refuses it (the call
    // would wait for the vCPU making it).
    for op in ["destroy", "pause", "unpause", "shutdown", "reboot"] {
        for target in ["0", "Domain-0", "dom0"] {
            assert_eq!(
                output(&mut m, &std::format!("{op} {target}")),
                std::format!(
                    "error: refusing to {op} Domain-0: it runs this shell (use 'poweroff' to stop the host)\n"
                )
            );
        }
    }
    assert!(m.calls.is_empty());
}

#[test]
fn a_domain_that_vanishes_during_the_call_is_reported_as_gone() {
    let mut m = Mock::new();
    m.fail_next = Some(Error::NoEntry);
    assert_eq!(output(&mut m, "pause web"), "error: no domain 'web'\n");
    m.fail_next = Some(Error::NotPermitted);
    assert_eq!(output(&mut m, "pause web"), "error: DomainPause: not permitted (only Domain0 may do this) (-1)\n");
}

#[test]
fn trigger_raises_the_nmi_line_of_all_vcpus_or_one() {
    let mut m = Mock::new();
    assert_eq!(output(&mut m, "trigger web nmi"), "");
    assert_eq!(output(&mut m, "trigger 1 nmi 0"), "");
    assert_eq!(m.calls, ["trigger 1 Nmi None", "trigger 1 Nmi Some(0)"]);
    assert_eq!(output(&mut m, "trigger web nmi 7"), "error: no such vCPU in that domain\n");
    assert_eq!(output(&mut m, "trigger web reset"), "error: bad value 'reset' for the trigger (choose nmi)\n");
    assert_eq!(output(&mut m, "trigger web nmi x"), "error: bad number 'x' for VCPU\n");
    assert_eq!(output(&mut m, "trigger web"), "error: usage: trigger DOMAIN nmi [VCPU]\n");
    assert_eq!(output(&mut m, "trigger nobody nmi"), "error: no domain 'nobody'\n");
    assert_eq!(
        output(&mut m, "trigger 0 nmi"),
        "error: refusing to trigger an NMI in Domain-0: it runs this shell (use 'poweroff' to stop the host)\n"
    );
}

#[test]
fn console_resolves_the_domain_and_hands_over() {
    let mut m = Mock::new();
    assert_eq!(run(&mut m, "console web"), (String::new(), Outcome::EnterConsole(1)));
    assert_eq!(run(&mut m, "console 2"), (String::new(), Outcome::EnterConsole(2)));
    assert_eq!(run(&mut m, "console x"), (String::from("error: no domain 'x'\n"), Outcome::Done));
    assert_eq!(run(&mut m, "console 0"), (String::from("error: Domain-0's console is this shell\n"), Outcome::Done));
    assert_eq!(run(&mut m, "console"), (String::from("error: usage: console DOMAIN\n"), Outcome::Done));
}

#[test]
fn poweroff_asks_the_caller_to_power_off() {
    let mut m = Mock::new();
    assert_eq!(run(&mut m, "poweroff"), (String::new(), Outcome::PowerOff));
    let before = m.now_ns;
    assert_eq!(run(&mut m, "sleep 2"), (String::new(), Outcome::Done));
    assert!(m.now_ns >= before + 2_000_000_000, "slept on the host clock");
    assert_eq!(output(&mut m, "sleep 0"), "error: bad number '0' for SECONDS (1 to 3600)\n");
    assert_eq!(output(&mut m, "sleep"), "error: usage: sleep SECONDS\n");
    assert_eq!(run(&mut m, "poweroff now"), (String::from("error: usage: poweroff\n"), Outcome::Done));
}

#[test]
fn sched_credit_lists_weights_and_caps() {
    let mut m = Mock::new();
    m.domains[1].weight = 512;
    m.domains[1].cap = 50;
    assert_eq!(
        lines(&output(&mut m, "sched-credit")),
        [
            "Cpupool Pool-0: tslice=30ms ratelimit=1000us",
            "Name                                ID Weight  Cap",
            "Domain-0                             0    256    0",
            "web                                  1    512   50",
            "db                                   2    256    0",
        ]
    );
    assert_eq!(
        lines(&output(&mut m, "sched-credit -d web")),
        ["Name                                ID Weight  Cap", "web                                  1    512   50",]
    );
}

#[test]
fn sched_credit_sets_weight_and_cap() {
    let mut m = Mock::new();
    assert_eq!(output(&mut m, "sched-credit -d web -w 0x200 -c 25"), "");
    assert_eq!(output(&mut m, "sched-credit -d 0 -w 1024"), "");
    assert_eq!(m.calls, ["weight 1 512", "cap 1 25", "weight 0 1024"]);
    assert_eq!(output(&mut m, "sched-credit -d web -w 0"), "error: weight must be 1-65535\n");
    assert_eq!(
        output(&mut m, "sched-credit -d web -c 6401"),
        "error: cap must be 0-6400 (percent of one CPU; 0 = no cap)\n"
    );
    assert_eq!(output(&mut m, "sched-credit -d web -w x"), "error: bad number 'x' for -w\n");
    assert_eq!(output(&mut m, "sched-credit -d web -w 99999999999"), "error: bad number '99999999999' for -w\n");
    assert_eq!(output(&mut m, "sched-credit -d nope -w 5"), "error: no domain 'nope'\n");
    assert_eq!(output(&mut m, "sched-credit -d web -w"), "error: option '-w' needs a value\n");
    assert_eq!(
        output(&mut m, "sched-credit -x"),
        "error: unknown option '-x' (known: -d DOMAIN, -w WEIGHT, -c CAP, -s, -t TSLICE_MS, -r RATELIMIT_US)\n"
    );
    let usage = "error: usage: sched-credit [-d DOMAIN [-w WEIGHT] [-c CAP]] | -s [-t TSLICE_MS] [-r RATELIMIT_US]\n";
    assert_eq!(output(&mut m, "sched-credit -w 5"), usage);
    assert_eq!(output(&mut m, "sched-credit -s -d web"), usage);
    assert_eq!(output(&mut m, "sched-credit -t 5"), usage);
    assert_eq!(m.calls.len(), 3);
}

#[test]
fn sched_credit_s_shows_and_sets_the_pool_parameters_keeping_the_unspecified_one() {
    let mut m = Mock::new();
    assert_eq!(output(&mut m, "sched-credit -s"), "Cpupool Pool-0: tslice=30ms ratelimit=1000us\n");
    assert_eq!(output(&mut m, "sched-credit -s -t 10"), "");
    assert_eq!(output(&mut m, "sched-credit -s -r 500"), "");
    assert_eq!(output(&mut m, "sched-credit -s -t 5 -r 0"), "");
    assert_eq!(m.calls, ["params 10 1000", "params 10 500", "params 5 0"]);
    assert_eq!(output(&mut m, "sched-credit -s"), "Cpupool Pool-0: tslice=5ms ratelimit=0us\n");
    let range = "error: tslice must be 1-1000 ms, and ratelimit 0 or 100-500000 us and not above the tslice\n";
    assert_eq!(output(&mut m, "sched-credit -s -t 0"), range);
    assert_eq!(output(&mut m, "sched-credit -s -r 50"), range);
    assert_eq!(output(&mut m, "sched-credit -s -r 20000"), range, "20 ms is above the 5 ms slice");
    assert_eq!(output(&mut m, "sched-credit -s -t 1001"), range);
    assert_eq!(m.calls.len(), 3);
}

#[test]
fn vcpu_list_shows_state_cpu_time_and_affinity() {
    let mut m = Mock::new();
    assert_eq!(
        lines(&output(&mut m, "vcpu-list")),
        [
            "Name                                ID  VCPU   CPU State   Time(s) Affinity",
            "Domain-0                             0     0    0  r--         1.2 all",
            "web                                  1     0    1  -b-        30.0 all",
            "web                                  1     1    0  ---        26.8 0",
            "db                                   2     0    -  --p         0.0 1",
        ]
    );
    assert_eq!(lines(&output(&mut m, "vcpu-list web")).len(), 3);
    assert_eq!(output(&mut m, "vcpu-list zzz"), "error: no domain 'zzz'\n");
}

#[test]
fn vcpu_list_shows_affinity_ranges_and_dead_vcpus() {
    let mut m = Mock::new();
    m.host.cpus = 8;
    m.vcpus = std::vec![vcpu(1, 0, VcpuState::Blocked, 3, 0b1011, 0), vcpu(1, 1, VcpuState::Dead, 2, 0xFF, 0),];
    let out = output(&mut m, "vcpu-list 1");
    assert_eq!(lines(&out)[1], "web                                  1     0    3  -b-         0.0 0-1,3");
    assert_eq!(lines(&out)[2], "web                                  1     1    -  ---         0.0 all");
}

#[test]
fn vcpu_pin_parses_vcpus_and_cpu_lists() {
    let mut m = Mock::new();
    assert_eq!(output(&mut m, "vcpu-pin web 1 1"), "");
    assert_eq!(output(&mut m, "vcpu-pin web all 0-1"), "");
    assert_eq!(output(&mut m, "vcpu-pin 2 0 all"), "");
    assert_eq!(m.calls, ["pin 1 1 0x2", "pin 1 0 0x3", "pin 1 1 0x3", "pin 2 0 0x3"]);
    let cases = [
        ("vcpu-pin web 1", "error: usage: vcpu-pin DOMAIN VCPU|all CPUS|all\n"),
        ("vcpu-pin web x 0", "error: bad number 'x' for VCPU\n"),
        ("vcpu-pin web 2 0", "error: domain 1 has no vCPU 2\n"),
        ("vcpu-pin web 0 3-1", "error: CPU range 3-1 runs backwards\n"),
        ("vcpu-pin web 0 2", "error: no CPU 2: the host has 2 (0-1)\n"),
        ("vcpu-pin web 0 64", "error: CPU 64 is above the highest possible (63)\n"),
        ("vcpu-pin web 0 0,,1", "error: empty CPU list element\n"),
        ("vcpu-pin nope 0 0", "error: no domain 'nope'\n"),
    ];
    for (line, expected) in cases {
        assert_eq!(output(&mut m, line), expected, "{line}");
    }
    assert_eq!(m.calls.len(), 4);
}

#[test]
fn dmesg_reads_the_whole_log_ring_in_chunks() {
    let mut m = Mock::new();
    let mut log = String::new();
    for i in 0..100 {
        log += &std::format!("[{i:3}] hypervisor log line number {i}\n");
    }
    m.log = log.clone().into_bytes();
    assert!(log.len() > 2 * 512, "more than one chunk");
    assert_eq!(output(&mut m, "dmesg"), log);
    m.log = std::vec![b'o', b'k', 0xFF, b'\n'];
    assert_eq!(output(&mut m, "dmesg"), "ok?\n");
    m.log.clear();
    assert_eq!(output(&mut m, "dmesg"), "");
}

#[test]
fn top_shows_cpu_percent_since_the_previous_top() {
    let mut m = Mock::new();
    let mut shell = Shell::new();
    let (first, _) = run_in(&mut shell, &mut m, "top");
    assert_eq!(
        lines(&first),
        [
            "top - up 10.0 s, 3 domains: 1 running, 1 blocked, 1 paused, 0 crashed, 0 shutdown",
            "      NAME  STATE   CPU(sec) CPU(%)     MEM(k) VCPUS",
            "  Domain-0 -----r          1    0.0      32768     1",
            "       web --b---         56    0.0      65536     2",
            "        db ----p-          0    0.0     131072     1",
        ]
    );
    // Two seconds later web has used 3 s of CPU (150 %), Domain-0 10 ms (0.5 %).
    m.now_ns += 2_000_000_000;
    m.domains[1].cpu_time_ns += 3_000_000_000;
    m.domains[0].cpu_time_ns += 10_000_000;
    output(&mut m, "create hello64 name=new");
    let (second, _) = run_in(&mut shell, &mut m, "top");
    assert_eq!(
        lines(&second)[2..],
        [
            "  Domain-0 -----r          1    0.5      32768     1",
            "       web --b---         59  150.0      65536     2",
            "        db ----p-          0    0.0     131072     1",
            "       new -----r          0    0.0      16384     1",
        ]
    );
}

/// The configuration space of QEMU's i440FX machine, plus a bridge with a device behind it.
fn qemu_pc() -> Mock {
    let mut m = Mock::new();
    m.add_pci((0, 0, 0), (0x8086, 0x1237), (0x06, 0x00), 0x00, 0);
    m.add_pci((0, 1, 0), (0x8086, 0x7000), (0x06, 0x01), 0x80, 0);
    m.add_pci((0, 1, 1), (0x8086, 0x7010), (0x01, 0x01), 0x00, 0);
    m.add_pci((0, 1, 3), (0x8086, 0x7113), (0x06, 0x80), 0x00, 0);
    m.add_pci((0, 2, 0), (0x1234, 0x1111), (0x03, 0x00), 0x00, 0);
    m.add_pci((0, 3, 0), (0x8086, 0x100e), (0x02, 0x00), 0x00, 0);
    // Not multifunction: function 1 must not even be looked at.
    m.add_pci((0, 3, 1), (0x8086, 0x7020), (0x0c, 0x03), 0x00, 0);
    m.add_pci((0, 5, 0), (0x1b36, 0x0001), (0x06, 0x04), 0x01, 1);
    m.add_pci((1, 0, 0), (0x1af4, 0x1041), (0x02, 0x00), 0x00, 0);
    m.add_pci((1, 1, 0), (0xabcd, 0x0001), (0x12, 0x34), 0x00, 0);
    m.add_pci((1, 2, 0), (0x8086, 0xffee), (0x0c, 0x99), 0x00, 0);
    m
}

#[test]
fn lspci_walks_bus_0_multifunction_devices_and_bridges() {
    let mut m = qemu_pc();
    assert_eq!(
        lines(&output(&mut m, "lspci")),
        [
            "00:00.0 Host bridge [0600]: Intel Corporation 440FX - 82441FX PMC [8086:1237]",
            "00:01.0 ISA bridge [0601]: Intel Corporation 82371SB PIIX3 ISA [8086:7000]",
            "00:01.1 IDE interface [0101]: Intel Corporation 82371SB PIIX3 IDE [8086:7010]",
            "00:01.3 Bridge [0680]: Intel Corporation 82371AB/EB/MB PIIX4 ACPI [8086:7113]",
            "00:02.0 VGA compatible controller [0300]: Bochs/QEMU standard VGA [1234:1111]",
            "00:03.0 Ethernet controller [0200]: Intel Corporation 82540EM Gigabit Ethernet Controller [8086:100e]",
            "00:05.0 PCI bridge [0604]: Red Hat, Inc. QEMU PCI device [1b36:0001]",
            "01:00.0 Ethernet controller [0200]: Red Hat, Inc. Virtio device [1af4:1041]",
            "01:01.0 Class [1234]: Device [abcd:0001]",
            "01:02.0 Serial bus controller [0c99]: Intel Corporation Device [8086:ffee]",
        ]
    );
    let probed = |bus, device, function| m.pci_reads.contains(&(crate::PciAddress { bus, device, function }, 0));
    assert!(!probed(0, 3, 1), "function 1 of a single-function device");
    assert!(probed(0, 1, 7), "every function of a multifunction device");
    assert!(!probed(0, 4, 1), "functions of an absent device");
    assert!(probed(0, 31, 0) && probed(1, 31, 0) && !probed(2, 0, 0), "all 32 devices of each reachable bus only");
}

#[test]
fn lspci_survives_bridges_that_loop_or_are_unnumbered() {
    let mut m = Mock::new();
    m.add_pci((0, 1, 0), (0x8086, 0x1111), (0x06, 0x04), 0x01, 0);
    m.add_pci((0, 2, 0), (0x8086, 0x2222), (0x06, 0x04), 0x01, 3);
    m.add_pci((3, 0, 0), (0x8086, 0x3333), (0x06, 0x04), 0x01, 3);
    let out = output(&mut m, "lspci");
    assert_eq!(lines(&out).len(), 3, "{out}");
    assert!(lines(&out)[2].starts_with("03:00.0 PCI bridge [0604]"));
    assert_eq!(output(&mut Mock::new(), "lspci"), "", "an empty bus");
}

#[test]
fn acpi_counts_the_sci_and_its_events() {
    let mut m = Mock::new();
    assert_eq!(output(&mut m, "acpi"), "acpi: SCI GSI 9, 3 interrupt(s): 3 timer overflow, 0 power button, 0 other\n");
    m.acpi = Acpi::Active(AcpiStatus {
        gsi: 20,
        interrupts: 7,
        timer_overflows: 4,
        power_button: 1,
        other: 2,
        ..Default::default()
    });
    assert_eq!(output(&mut m, "acpi"), "acpi: SCI GSI 20, 7 interrupt(s): 4 timer overflow, 1 power button, 2 other\n");
    assert!(m.calls.is_empty(), "showing changes nothing: {:?}", m.calls);
}

#[test]
fn acpi_timer_overflow_switches_tmr_en_silently() {
    let mut m = Mock::new();
    assert_eq!(output(&mut m, "acpi timer-overflow on"), "");
    assert!(matches!(m.acpi, Acpi::Active(AcpiStatus { timer_events: true, .. })));
    assert_eq!(output(&mut m, "acpi timer-overflow off"), "");
    assert!(matches!(m.acpi, Acpi::Active(AcpiStatus { timer_events: false, .. })));
    assert_eq!(m.calls, ["acpi timer-overflow on", "acpi timer-overflow off"]);
}

#[test]
fn acpi_refuses_bad_arguments_before_touching_the_machine() {
    let mut m = Mock::new();
    assert_eq!(
        output(&mut m, "acpi timer-overflow maybe"),
        "error: bad value 'maybe' for timer-overflow (choose on or off)\n"
    );
    for line in ["acpi timer-overflow", "acpi on", "acpi status", "acpi timer-overflow on now"] {
        assert_eq!(output(&mut m, line), "error: usage: acpi [timer-overflow on|off]\n", "{line}");
    }
    assert!(m.calls.is_empty(), "{:?}", m.calls);
}

#[test]
fn acpi_without_an_sci_or_after_a_failed_setup_says_so() {
    let mut m = Mock::new();
    m.acpi = Acpi::NoSci;
    assert_eq!(output(&mut m, "acpi"), "acpi: the machine has no SCI\n");
    assert_eq!(
        output(&mut m, "acpi timer-overflow on"),
        "error: the machine has no SCI: ACPI events cannot be delivered\n"
    );
    m.acpi = Acpi::Failed { call: abi::hypercall::Call::PlatformInfo, error: Error::NoSys };
    assert_eq!(output(&mut m, "acpi"), "error: PlatformInfo: not supported by this hypervisor (-38)\n");
    m.acpi = Acpi::Failed { call: abi::hypercall::Call::IrqRoute, error: Error::Invalid };
    assert_eq!(output(&mut m, "acpi timer-overflow off"), "error: IrqRoute: invalid argument (-22)\n");
    assert!(m.calls.is_empty(), "{:?}", m.calls);
}

#[test]
fn too_many_words_and_unterminated_quotes_are_errors() {
    let mut m = Mock::new();
    assert_eq!(output(&mut m, &"list ".repeat(30)), "error: too many words (at most 24)\n");
    assert_eq!(output(&mut m, "pause \"web"), "error: unterminated quote\n");
}

#[test]
fn output_that_fails_stops_the_command_quietly() {
    struct Full;
    impl core::fmt::Write for Full {
        fn write_str(&mut self, _: &str) -> core::fmt::Result {
            Err(core::fmt::Error)
        }
    }
    let mut m = Mock::new();
    assert_eq!(Shell::new().run("list", &mut m, &mut Full), Outcome::Done);
}
