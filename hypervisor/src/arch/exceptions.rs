//! The IDT and the exception report.
//!
//! Every vector 0..=31 enters through a small assembly stub that pushes a uniform frame
//! (vector, error code, all general-purpose registers) and calls [`exception_dispatch`].
//! An exception in the hypervisor is a bug: the handler prints everything a person
//! needs to find it (vector, error code, RIP, CR2, registers) and stops the machine.
//! NMIs double as the "stop now" signal sent to other CPUs when the machine halts.

use super::gdt;
use crate::{percpu, power};
use core::arch::global_asm;
use spin::Once;
use x86_64::VirtAddr;
use x86_64::structures::idt::InterruptDescriptorTable;

/// The register block the stubs build on the stack, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct ExceptionFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    // Pushed by the CPU.
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// The stub layout above is what the assembly pushes; 22 quadwords keeps the stack
// 16-byte aligned at the call (the CPU aligns RSP before pushing its 5 quadwords).
const _: () = assert!(core::mem::size_of::<ExceptionFrame>() == 22 * 8);

/// Vectors whose entry pushes an error code (SDM Vol. 3A 6.13).
const fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

macro_rules! stubs {
    ($($v:literal),*) => {
        global_asm!(
            $(
                concat!(".global exc_stub_", $v),
                concat!("exc_stub_", $v, ":"),
                // Vectors without an error code push a zero so the frame is uniform.
                if_no_error!($v),
                concat!("push ", $v),
                "jmp exc_common",
            )*
            ".section .data.rel.ro.exc_stub_table, \"aw\"",
            ".balign 8",
            ".global exc_stub_table",
            "exc_stub_table:",
            $( concat!(".quad exc_stub_", $v), )*
            ".text",
        );
    };
}
macro_rules! if_no_error {
    (8) => { "" };
    (10) => { "" };
    (11) => { "" };
    (12) => { "" };
    (13) => { "" };
    (14) => { "" };
    (17) => { "" };
    (21) => { "" };
    (29) => { "" };
    (30) => { "" };
    ($v:literal) => { "push 0" };
}

stubs!(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31);

global_asm!(
    "exc_common:",
    "push rax", "push rbx", "push rcx", "push rdx", "push rsi", "push rdi", "push rbp",
    "push r8", "push r9", "push r10", "push r11", "push r12", "push r13", "push r14", "push r15",
    "mov rdi, rsp",
    "cld",
    "call {dispatch}",
    "pop r15", "pop r14", "pop r13", "pop r12", "pop r11", "pop r10", "pop r9", "pop r8",
    "pop rbp", "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rbx", "pop rax",
    // Drop vector and error code.
    "add rsp, 16",
    "iretq",
    dispatch = sym exception_dispatch,
);

unsafe extern "C" {
    static exc_stub_table: [u64; 32];
}

/// The spurious-interrupt vector the local APIC is programmed with; it needs no EOI.
pub const SPURIOUS_VECTOR: u8 = 0xFF;

global_asm!(".global spurious_stub", "spurious_stub:", "iretq");
unsafe extern "C" {
    fn spurious_stub();
}

static IDT: Once<InterruptDescriptorTable> = Once::new();

fn build_idt() -> InterruptDescriptorTable {
    let mut idt = InterruptDescriptorTable::new();
    // SAFETY: reading the stub table, an immutable array of code addresses emitted above.
    let stubs = unsafe { &*core::ptr::addr_of!(exc_stub_table) };
    for (vector, &addr) in stubs.iter().enumerate() {
        let addr = VirtAddr::new(addr);
        // SAFETY: each address is the entry of a stub that builds an ExceptionFrame and
        // calls the dispatcher, which is a valid handler for that vector.
        unsafe {
            let entry = match vector {
                8 => idt.double_fault.set_handler_addr(addr),
                2 => idt.non_maskable_interrupt.set_handler_addr(addr),
                18 => idt.machine_check.set_handler_addr(addr),
                0 => idt.divide_error.set_handler_addr(addr),
                1 => idt.debug.set_handler_addr(addr),
                3 => idt.breakpoint.set_handler_addr(addr),
                4 => idt.overflow.set_handler_addr(addr),
                5 => idt.bound_range_exceeded.set_handler_addr(addr),
                6 => idt.invalid_opcode.set_handler_addr(addr),
                7 => idt.device_not_available.set_handler_addr(addr),
                10 => idt.invalid_tss.set_handler_addr(addr),
                11 => idt.segment_not_present.set_handler_addr(addr),
                12 => idt.stack_segment_fault.set_handler_addr(addr),
                13 => idt.general_protection_fault.set_handler_addr(addr),
                14 => idt.page_fault.set_handler_addr(addr),
                16 => idt.x87_floating_point.set_handler_addr(addr),
                17 => idt.alignment_check.set_handler_addr(addr),
                19 => idt.simd_floating_point.set_handler_addr(addr),
                20 => idt.virtualization.set_handler_addr(addr),
                21 => idt.cp_protection_exception.set_handler_addr(addr),
                28 => idt.hv_injection_exception.set_handler_addr(addr),
                29 => idt.vmm_communication_exception.set_handler_addr(addr),
                30 => idt.security_exception.set_handler_addr(addr),
                // Reserved vectors (9, 15, 22-27, 31): still routed to the report, since
                // a stray INT n or a buggy device could raise them.
                _ => idt[vector as u8].set_handler_addr(addr),
            };
            match vector {
                8 => {
                    entry.set_stack_index(gdt::IST_DOUBLE_FAULT - 1);
                }
                2 => {
                    entry.set_stack_index(gdt::IST_NMI - 1);
                }
                18 => {
                    entry.set_stack_index(gdt::IST_MACHINE_CHECK - 1);
                }
                _ => {}
            }
        }
    }
    // SAFETY: the spurious stub is a bare IRETQ, correct for a vector without EOI.
    unsafe { idt[SPURIOUS_VECTOR].set_handler_addr(VirtAddr::new(spurious_stub as usize as u64)) };
    idt
}

/// Loads the shared IDT on this CPU (built once, on first use).
pub fn load() {
    IDT.call_once(build_idt).load();
}

/// Mnemonics from SDM Vol. 3A Table 6-1.
pub fn mnemonic(vector: u64) -> &'static str {
    match vector {
        0 => "#DE divide error",
        1 => "#DB debug",
        2 => "NMI",
        3 => "#BP breakpoint",
        4 => "#OF overflow",
        5 => "#BR bound range exceeded",
        6 => "#UD invalid opcode",
        7 => "#NM device not available",
        8 => "#DF double fault",
        10 => "#TS invalid TSS",
        11 => "#NP segment not present",
        12 => "#SS stack-segment fault",
        13 => "#GP general protection",
        14 => "#PF page fault",
        16 => "#MF x87 floating-point error",
        17 => "#AC alignment check",
        18 => "#MC machine check",
        19 => "#XM SIMD floating-point",
        20 => "#VE virtualization exception",
        21 => "#CP control protection",
        28 => "#HV hypervisor injection",
        29 => "#VC VMM communication",
        30 => "#SX security exception",
        _ => "reserved vector",
    }
}

extern "C" fn exception_dispatch(frame: &mut ExceptionFrame) {
    if frame.vector == 2 && power::stopping() {
        // Another CPU is stopping the machine and asked us to park.
        power::park_this_cpu();
    }
    let cpu = percpu::current_index();
    log::error!("EXCEPTION {} (vector {}) on cpu{}", mnemonic(frame.vector), frame.vector, cpu);
    log::error!(
        "  error_code={:#x} rip={:#018x} cs={:#x} rflags={:#x} rsp={:#018x} ss={:#x}",
        frame.error_code, frame.rip, frame.cs, frame.rflags, frame.rsp, frame.ss
    );
    if frame.vector == 14 {
        let ec = frame.error_code;
        log::error!(
            "  cr2={:#018x} ({} {} {}{})",
            super::cpu::cr2(),
            if ec & 1 != 0 { "protection violation," } else { "page not present," },
            if ec & 0x10 != 0 { "instruction fetch" } else if ec & 2 != 0 { "write" } else { "read" },
            if ec & 4 != 0 { "from user mode" } else { "from kernel mode" },
            if ec & 8 != 0 { ", reserved bit set" } else { "" },
        );
    } else {
        log::error!("  cr2={:#018x}", super::cpu::cr2());
    }
    log::error!("  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}", frame.rax, frame.rbx, frame.rcx, frame.rdx);
    log::error!("  rsi={:#018x} rdi={:#018x} rbp={:#018x} r8 ={:#018x}", frame.rsi, frame.rdi, frame.rbp, frame.r8);
    log::error!("  r9 ={:#018x} r10={:#018x} r11={:#018x} r12={:#018x}", frame.r9, frame.r10, frame.r11, frame.r12);
    log::error!("  r13={:#018x} r14={:#018x} r15={:#018x}", frame.r13, frame.r14, frame.r15);
    power::stop_machine(power::StopReason::Exception);
}
