//! The IDT and the exception report.
//!
//! Every vector 0..=31 enters through a small assembly stub that pushes a uniform frame
//! (vector, error code, all general-purpose registers) and calls [`exception_dispatch`].
//! An exception in the hypervisor is a bug: the handler prints everything a person
//! needs to find it (vector, error code, RIP, CR2, registers) and stops the machine.
//! NMIs double as the "stop now" signal sent to other CPUs when the machine halts; any
//! other NMI is counted and survived (`nmi`).

use super::gdt;
use crate::percpu;
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

/// One entry stub. Vectors without an error code push a zero so the frame is uniform.
macro_rules! stub {
    ($v:literal, no_error_code) => {
        global_asm!(concat!(".global exc_stub_", $v, "\nexc_stub_", $v, ":\n push 0\n push ", $v, "\n jmp exc_common"));
    };
    ($v:literal, error_code) => {
        global_asm!(concat!(".global exc_stub_", $v, "\nexc_stub_", $v, ":\n push ", $v, "\n jmp exc_common"));
    };
}

// SDM Vol. 3A 6.13: 8, 10-14, 17, 21, 29 and 30 push an error code.
stub!(0, no_error_code);
stub!(1, no_error_code);
stub!(2, no_error_code);
stub!(3, no_error_code);
stub!(4, no_error_code);
stub!(5, no_error_code);
stub!(6, no_error_code);
stub!(7, no_error_code);
stub!(8, error_code);
stub!(9, no_error_code);
stub!(10, error_code);
stub!(11, error_code);
stub!(12, error_code);
stub!(13, error_code);
stub!(14, error_code);
stub!(16, no_error_code);
stub!(17, error_code);
stub!(18, no_error_code);
stub!(19, no_error_code);
stub!(20, no_error_code);
stub!(21, error_code);
stub!(28, no_error_code);
stub!(29, error_code);
stub!(30, error_code);

unsafe extern "C" {
    fn exc_stub_0();
    fn exc_stub_1();
    fn exc_stub_2();
    fn exc_stub_3();
    fn exc_stub_4();
    fn exc_stub_5();
    fn exc_stub_6();
    fn exc_stub_7();
    fn exc_stub_8();
    fn exc_stub_9();
    fn exc_stub_10();
    fn exc_stub_11();
    fn exc_stub_12();
    fn exc_stub_13();
    fn exc_stub_14();
    fn exc_stub_16();
    fn exc_stub_17();
    fn exc_stub_18();
    fn exc_stub_19();
    fn exc_stub_20();
    fn exc_stub_21();
    fn exc_stub_28();
    fn exc_stub_29();
    fn exc_stub_30();
}

global_asm!(
    ".global exc_common",
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

/// The machine-check exception's vector.
pub const MACHINE_CHECK: u8 = 18;

/// The spurious-interrupt vector the local APIC is programmed with; it needs no EOI.
pub const SPURIOUS_VECTOR: u8 = 0xFF;

global_asm!(".global spurious_stub", "spurious_stub:", "iretq");
unsafe extern "C" {
    fn spurious_stub();
}

/// An interrupt stub that calls the Rust function `$handler` with the registers the C
/// ABI lets a callee clobber saved and the stack 16-byte aligned, then returns with
/// IRETQ. The kernel is soft-float, so there is no vector state to save.
macro_rules! interrupt_stub {
    ($stub:ident, $handler:path) => {
        global_asm!(
            concat!(".global ", stringify!($stub)),
            concat!(stringify!($stub), ":"),
            "push rax", "push rcx", "push rdx", "push rsi", "push rdi",
            "push r8", "push r9", "push r10", "push r11",
            "cld",
            "mov rax, rsp",
            "and rsp, -16",
            "push rax",
            "sub rsp, 8",
            "call {handler}",
            "add rsp, 8",
            "pop rsp",
            "pop r11", "pop r10", "pop r9", "pop r8",
            "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rax",
            "iretq",
            handler = sym $handler,
        );
        unsafe extern "C" {
            fn $stub();
        }
    };
}

// The scheduler's kick IPI and the CPU's own timer only wake the CPU (from HLT in the
// idle loop, with interrupts enabled there and nowhere else); the run loop then looks at
// what changed. So the handler only signals end of interrupt.
interrupt_stub!(wake_stub, wake_eoi);

extern "C" fn wake_eoi() {
    super::apic::eoi();
}

// A device interrupt the hypervisor passes on (`arch::ioapic`): the vector in service is
// noted before the EOI.
interrupt_stub!(device_stub, device_interrupt);

extern "C" fn device_interrupt() {
    if let Some(vector) = super::apic::highest_in_service() {
        super::ioapic::note(vector);
    }
    super::apic::eoi();
}

static IDT: Once<InterruptDescriptorTable> = Once::new();

fn build_idt() -> InterruptDescriptorTable {
    let mut idt = InterruptDescriptorTable::new();
    let addr = |f: unsafe extern "C" fn()| VirtAddr::new(f as usize as u64);
    // SAFETY (every set_handler_addr below): each stub builds an ExceptionFrame for its
    // own vector and calls the dispatcher, a valid handler for that vector. Reserved
    // vectors (15, 22-27, 31) stay not-present: raising one becomes a reported #GP.
    unsafe {
        idt.divide_error.set_handler_addr(addr(exc_stub_0));
        idt.debug.set_handler_addr(addr(exc_stub_1));
        idt.non_maskable_interrupt.set_handler_addr(addr(exc_stub_2)).set_stack_index(gdt::IST_NMI - 1);
        idt.breakpoint.set_handler_addr(addr(exc_stub_3));
        idt.overflow.set_handler_addr(addr(exc_stub_4));
        idt.bound_range_exceeded.set_handler_addr(addr(exc_stub_5));
        idt.invalid_opcode.set_handler_addr(addr(exc_stub_6));
        idt.device_not_available.set_handler_addr(addr(exc_stub_7));
        idt.double_fault.set_handler_addr(addr(exc_stub_8)).set_stack_index(gdt::IST_DOUBLE_FAULT - 1);
        idt[9].set_handler_addr(addr(exc_stub_9));
        idt.invalid_tss.set_handler_addr(addr(exc_stub_10));
        idt.segment_not_present.set_handler_addr(addr(exc_stub_11));
        idt.stack_segment_fault.set_handler_addr(addr(exc_stub_12));
        idt.general_protection_fault.set_handler_addr(addr(exc_stub_13));
        idt.page_fault.set_handler_addr(addr(exc_stub_14));
        idt.x87_floating_point.set_handler_addr(addr(exc_stub_16));
        idt.alignment_check.set_handler_addr(addr(exc_stub_17));
        idt.machine_check.set_handler_addr(addr(exc_stub_18)).set_stack_index(gdt::IST_MACHINE_CHECK - 1);
        idt.simd_floating_point.set_handler_addr(addr(exc_stub_19));
        idt.virtualization.set_handler_addr(addr(exc_stub_20));
        idt.cp_protection_exception.set_handler_addr(addr(exc_stub_21));
        idt.hv_injection_exception.set_handler_addr(addr(exc_stub_28));
        idt.vmm_communication_exception.set_handler_addr(addr(exc_stub_29));
        idt.security_exception.set_handler_addr(addr(exc_stub_30));
        // The spurious stub is a bare IRETQ, right for a vector that takes no EOI.
        idt[SPURIOUS_VECTOR].set_handler_addr(addr(spurious_stub));
        idt[super::apic::KICK_VECTOR].set_handler_addr(addr(wake_stub));
        idt[super::apic::TIMER_VECTOR].set_handler_addr(addr(wake_stub));
        for vector in super::ioapic::DEVICE_VECTORS {
            idt[vector].set_handler_addr(addr(device_stub));
        }
    }
    idt
}

/// What the handlers do about what is not theirs to decide: whether the machine is
/// stopping (an NMI then parks this CPU), parking, and stopping the machine after a
/// fatal exception. The kernel's stop policy (`power`) installs them at boot, so this
/// module stays below it and does not import it.
pub struct StopHooks {
    pub stopping: fn() -> bool,
    pub park: fn() -> !,
    pub fatal: fn() -> !,
}

static HOOKS: Once<StopHooks> = Once::new();

/// Installs the stop policy (boot, once).
pub fn set_stop_hooks(hooks: StopHooks) {
    HOOKS.call_once(|| hooks);
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
    if frame.vector == 2 {
        if let Some(h) = HOOKS.get()
            && (h.stopping)()
        {
            // Another CPU is stopping the machine and asked us to park.
            (h.park)();
        }
        // Any other NMI: noted (and reported by the run loop), then IRETQ goes on.
        super::nmi::note();
        return;
    }
    // A fault with a fixup (restoring a vCPU's vector state): the caller sees the
    // failure and crashes that domain; the hypervisor carries on.
    if frame.vector == 13
        && let Some(resume) = super::fpu::fixup(frame.rip)
    {
        frame.rip = resume;
        return;
    }
    let cpu = percpu::current_index();
    log::error!("EXCEPTION {} (vector {}) on cpu{}", mnemonic(frame.vector), frame.vector, cpu);
    log::error!(
        "  error_code={:#x} rip={:#018x} cs={:#x} rflags={:#x} rsp={:#018x} ss={:#x}",
        frame.error_code,
        frame.rip,
        frame.cs,
        frame.rflags,
        frame.rsp,
        frame.ss
    );
    if frame.vector == 14 {
        let ec = frame.error_code;
        log::error!(
            "  cr2={:#018x} ({} {} {}{})",
            super::cpu::cr2(),
            if ec & 1 != 0 { "protection violation," } else { "page not present," },
            if ec & 0x10 != 0 {
                "instruction fetch"
            } else if ec & 2 != 0 {
                "write"
            } else {
                "read"
            },
            if ec & 4 != 0 { "from user mode" } else { "from kernel mode" },
            if ec & 8 != 0 { ", reserved bit set" } else { "" },
        );
    } else {
        log::error!("  cr2={:#018x}", super::cpu::cr2());
    }
    if frame.vector == 8 && super::cpu::cr2().abs_diff(frame.rsp) < 4096 {
        log::error!("  (cr2 is next to the faulting rsp: most likely a kernel stack overflow into its guard page)");
    }
    log::error!("  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}", frame.rax, frame.rbx, frame.rcx, frame.rdx);
    log::error!("  rsi={:#018x} rdi={:#018x} rbp={:#018x} r8 ={:#018x}", frame.rsi, frame.rdi, frame.rbp, frame.r8);
    log::error!("  r9 ={:#018x} r10={:#018x} r11={:#018x} r12={:#018x}", frame.r9, frame.r10, frame.r11, frame.r12);
    log::error!("  r13={:#018x} r14={:#018x} r15={:#018x}", frame.r13, frame.r14, frame.r15);
    match HOOKS.get() {
        Some(h) => (h.fatal)(),
        // Before the kernel installed its policy (the first steps of boot): stop here.
        None => super::cpu::halt_forever(),
    }
}
