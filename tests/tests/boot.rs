//! Booting the hypervisor: BIOS under Bochs (which emulates VMX), UEFI under QEMU (which
//! here does not), and the exception report.

use integration::{Boot, BootFirmware, BootLog};

/// The bring-up markers every boot passes before the CPUs are started.
const BRING_UP: &[&str] = &[
    "Ferrovisor 0.1.0 starting",
    "cpu: gdt, tss (ist: #DF, NMI, #MC) and idt loaded",
    "memory: frame allocator ready",
    "memory: heap of",
    "bundle: version 1 with",
    "bundle: entry hypervisor.cfg",
    "config: log_level=info",
    "timer: TSC runs at",
];

const VMX_REPORT: &[&str] = &[
    "vmx: cpu vendor=GenuineIntel",
    "vmx: revision=",
    "vmx: ept=yes",
    "vmx: vpid=yes",
    "vmx: unrestricted_guest=yes",
    "vmx: preemption_timer=yes",
];

fn expect(log: &BootLog, groups: &[&[&str]]) {
    let all: Vec<&str> = groups.iter().flat_map(|g| g.iter().copied()).collect();
    log.expect_in_order(&all);
}

#[test]
fn bios_boot_in_bochs_with_one_cpu_reaches_the_vmx_report() {
    let log = Boot::bochs("bochs-1cpu", 1).run();
    expect(
        &log,
        &[
            BRING_UP,
            &["acpi: 1 CPU(s) in the MADT", "cpu0 online: apic_id=0"],
            VMX_REPORT,
            &[
                "vmx: cpu0 vmx=on",
                "smp: 1 of 1 CPU(s) online",
                "boot complete: 1 CPU(s) online",
                "machine halted: done",
            ],
        ],
    );
    log.expect_absent("ERROR");
}

#[test]
fn bios_boot_in_bochs_with_two_cpus_brings_every_cpu_online_in_vmx_operation() {
    let log = Boot::bochs("bochs-2cpu", 2).run();
    expect(
        &log,
        &[
            BRING_UP,
            &["acpi: 2 CPU(s) in the MADT", "cpu0 online"],
            VMX_REPORT,
            &[
                "vmx: cpu0 vmx=on",
                "smp: AP trampoline at",
                "cpu1 online: apic_id=1 vmx=on",
                "smp: 2 of 2 CPU(s) online",
                "boot complete: 2 CPU(s) online",
                "machine halted: done",
            ],
        ],
    );
    log.expect_absent("ERROR");
}

#[test]
fn uefi_boot_in_qemu_without_vmx_stops_with_a_clear_message() {
    let log = Boot::qemu("qemu-uefi", BootFirmware::Uefi).run();
    expect(
        &log,
        &[BRING_UP, &["cpu0 online", "FATAL: this CPU does not support VT-x", "machine halted: unsupported machine"]],
    );
}

#[test]
fn a_page_fault_in_the_hypervisor_is_reported_with_registers() {
    let log = Boot::bochs("bochs-page-fault", 1).with_config("fault = \"page-fault\"").run();
    log.expect_in_order(&[
        "config: log_level=info fault=page-fault",
        "fault injection: triggering page-fault",
        "EXCEPTION #PF page fault (vector 14) on cpu0",
        "error_code=0x2 rip=0xffffffff8",
        "cr2=0x00004000dead0000 (page not present, write from kernel mode)",
        "rax=",
        "r13=",
        "machine halted: exception",
    ]);
}

#[test]
fn a_stack_overflow_becomes_a_double_fault_on_its_own_stack() {
    let log = Boot::qemu("qemu-double-fault", BootFirmware::Bios).with_config("fault = \"double-fault\"").run();
    log.expect_in_order(&[
        "fault injection: triggering double-fault",
        "EXCEPTION #DF double fault (vector 8) on cpu0",
        "rip=",
        "machine halted: exception",
    ]);
}
