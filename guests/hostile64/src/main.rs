//! hostile64: a hostile DomU, and the canary that watches for its damage.
//!
//! Boot protocol: Ferrovisor's 64-bit one (docs/guest-boot.md), like hello64: long mode,
//! identity-mapped, console on port 0xE9, exit status on port 0xF4.
//!
//! Command line (`key=value`, separated by spaces):
//! - `mode=hostile` (the default): from `seed` (default 1), runs `ops` (default 20000)
//!   random operations of the survivable kinds (`Kind`), after an optional sweep of every
//!   I/O port (`sweep=1`, the default: an IN of each port, and a byte OUT of each port but
//!   the few that end, reset or power off the domain); then `danger` (default 0)
//!   operations that are expected to end the domain (random code at CPL 0, wild
//!   guest-physical accesses, MMIO the hypervisor cannot emulate), each announced first,
//!   so the log says which one ended it. Prints `hostile: seed 0x..`, progress every
//!   `every` (default 1000) ops, and a summary per kind. Exits 0 when every check held, 1
//!   when one did not (a privileged hypercall that was not refused, a register the
//!   hypercall ABI promises to preserve that changed, a VMX instruction that did not
//!   fault), 3 on an exception outside a probe.
//! - the targeted attacks of `attacks` (`mode=vector`, `xstate`, `flood`, `dr`, `leaks`,
//!   `reset`), each after one piece of state the hypervisor switches or shares.
//! - the compatibility checks of `compat` (`mode=unclaimed`, `unclaimed-fetch`,
//!   `apic-off`, `nmi`, `cpu-msrs`): the edges of the PC real kernels probe.
//! - `mode=canary`: writes a pseudo-random pattern over `mib` (default 4) MiB at 4 MiB,
//!   verifies it `passes` (default 100) times (rewriting it with the next pattern after
//!   each check), prints `canary: pass N ok` every `every` (default 10) passes and exits 0,
//!   or prints `canary: CORRUPTED` and exits 1.
//!
//! How the hostile guest keeps going: its own GDT (kernel and user segments, a TSS with
//! interrupt stacks), its own page tables (one 2 MiB user page), and an IDT whose 256
//! gates all enter one handler on an interrupt stack. Each operation runs inside `probe`,
//! a setjmp: an exception (or an interrupt) while a probe is armed makes the handler
//! restore the probe's stack and callee-saved registers and return 1 + what trapped from
//! `probe`. Random code runs from a buffer, followed by NOPs and a jump back; at CPL 3 it
//! is confined to the user page and a local APIC timer interrupt bounds it.
#![no_std]
#![no_main]

use abi::hypercall::Call;
use core::arch::{asm, global_asm};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

const DEBUG_PORT: u16 = 0xE9;
const EXIT_PORT: u16 = 0xF4;

fn outb(port: u16, value: u8) {
    // SAFETY: port output in a guest only causes a VM exit the hypervisor handles.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack)) };
}

struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(|b| outb(DEBUG_PORT, b));
        Ok(())
    }
}

macro_rules! say {
    ($($t:tt)*) => {{ let _ = writeln!(Console, $($t)*); }};
}

mod attacks;
mod compat;

fn exit(status: u8) -> ! {
    outb(EXIT_PORT, status);
    loop {
        // SAFETY: nothing to protect; the hypervisor has ended the domain by now.
        unsafe { asm!("cli", "hlt") };
    }
}

/// The boot information block (docs/guest-boot.md).
#[repr(C)]
struct BootInfo {
    magic: u64,
    version: u32,
    domain_id: u32,
    memory_size: u64,
    vcpus: u32,
    cmdline_len: u32,
    cmdline: u64,
}

/// xorshift64*: the generator of everything random here, so a seed replays a run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// A value that is often at an edge: 0, all ones, one bit, a sign bit, or random.
    fn edgy(&mut self) -> u64 {
        match self.below(8) {
            0 => 0,
            1 => u64::MAX,
            2 => 1 << self.below(64),
            3 => !(1 << self.below(64)),
            4 => self.below(256),
            5 => 0x8000_0000_0000_0000 | self.below(1 << 20),
            6 => self.next() & 0xFFFF_FFFF,
            _ => self.next(),
        }
    }
}

/// Parses a number in decimal or with a `0x` prefix.
fn parse_num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The value of `key=` on the command line.
fn arg<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline.split_ascii_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

fn num_arg(cmdline: &str, key: &str, default: u64) -> u64 {
    arg(cmdline, key).and_then(parse_num).unwrap_or(default)
}

/// Our stack, in the image: the top of RAM stays free (hypercall buffers may land there).
#[repr(C, align(4096))]
struct MainStack([u8; 65536]);
#[unsafe(no_mangle)]
static mut MAIN_STACK: MainStack = MainStack([0; 65536]);

global_asm!(
    ".section .text._start, \"ax\"",
    ".global _start",
    "_start:",
    "lea rsp, [rip + MAIN_STACK + 65536]",
    "call rust_start",
    "ud2",
    ".text",
);

#[unsafe(no_mangle)]
extern "C" fn rust_start(boot_info: u64) -> ! {
    // SAFETY: the hypervisor put the boot information at RDI (boot protocol).
    let info = unsafe { &*(boot_info as *const BootInfo) };
    // SAFETY: the command line lies in the boot area, `cmdline_len` bytes long.
    let bytes = unsafe { core::slice::from_raw_parts(info.cmdline as *const u8, info.cmdline_len as usize) };
    let cmdline = core::str::from_utf8(bytes).unwrap_or("");
    if info.magic != u64::from_le_bytes(*b"FVBOOT64") {
        say!("hostile: bad boot information");
        exit(2);
    }
    match arg(cmdline, "mode") {
        Some("canary") => canary(cmdline),
        None | Some("hostile") => hostile(cmdline, info.memory_size, info.domain_id),
        Some(mode) if compat::MODES.contains(&mode) => compat::run(mode, cmdline),
        Some(mode) => attacks::run(mode, cmdline),
    }
}

// ---------------------------------------------------------------------------------------
// The canary.

const CANARY_AT: u64 = 0x40_0000;

fn canary(cmdline: &str) -> ! {
    let mib = num_arg(cmdline, "mib", 4).clamp(1, 8);
    let passes = num_arg(cmdline, "passes", 100);
    let every = num_arg(cmdline, "every", 10).max(1);
    let words = (mib << 20) / 8;
    let base = CANARY_AT as *mut u64;
    let fill = |seed: u64| {
        let mut r = Rng::new(seed);
        for i in 0..words {
            // SAFETY: 4 MiB up to 12 MiB of our own RAM (the domain has at least 16 MiB),
            // identity-mapped, unused by the image (at 2 MiB) and the stack (at the top).
            unsafe { base.add(i as usize).write_volatile(r.next()) };
        }
    };
    say!("canary: watching {mib} MiB at {CANARY_AT:#x} for {passes} passes");
    fill(1);
    for pass in 1..=passes {
        let mut r = Rng::new(pass);
        let mut bad = 0u64;
        let mut first = None;
        for i in 0..words {
            // SAFETY: as in `fill`.
            let got = unsafe { base.add(i as usize).read_volatile() };
            if got != r.next() {
                bad += 1;
                first.get_or_insert(i);
            }
        }
        if let Some(i) = first {
            say!("canary: CORRUPTED: pass {pass}: {bad} word(s) differ, first at {:#x}", CANARY_AT + i * 8);
            exit(1);
        }
        fill(pass + 1);
        if pass % every == 0 || pass == passes {
            say!("canary: pass {pass} ok");
        }
    }
    say!("canary: all {passes} passes ok");
    exit(0)
}

// ---------------------------------------------------------------------------------------
// Descriptor tables, page tables, the trap handler and the probe (setjmp/longjmp).

/// Selectors of our GDT.
const KCODE: u16 = 0x08;
const KDATA: u16 = 0x10;
const UDATA: u16 = 0x18 | 3;
const UCODE: u16 = 0x20 | 3;
const TSS_SEL: u16 = 0x28;

#[repr(C, align(16))]
struct Gdt([u64; 8]);
static mut GDT: Gdt = Gdt([
    0,
    0x00AF_9A00_0000_FFFF, // kernel code, 64-bit
    0x00CF_9200_0000_FFFF, // kernel data
    0x00CF_F200_0000_FFFF, // user data (DPL 3)
    0x00AF_FA00_0000_FFFF, // user code, 64-bit (DPL 3)
    0,
    0, // TSS (16 bytes), filled at run time
    0,
]);

/// The 64-bit TSS: RSP0, IST1 (exceptions and interrupts), IST2 (NMI).
#[repr(C, packed)]
struct Tss {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap: u16,
}
static mut TSS: Tss =
    Tss { reserved0: 0, rsp: [0; 3], reserved1: 0, ist: [0; 7], reserved2: 0, reserved3: 0, iomap: 104 };

#[repr(C, align(16))]
struct Idt([u64; 512]);
static mut IDT: Idt = Idt([0; 512]);

#[repr(C, align(4096))]
struct Stack([u8; 16384]);
static mut TRAP_STACK: Stack = Stack([0; 16384]);
static mut NMI_STACK: Stack = Stack([0; 16384]);
static mut RING0_STACK: Stack = Stack([0; 16384]);

#[repr(C, align(4096))]
struct Table([u64; 512]);
static mut PML4: Table = Table([0; 512]);
static mut PDPT: Table = Table([0; 512]);
static mut PDS: [Table; 4] = [const { Table([0; 512]) }; 4];

/// The 2 MiB page user code may touch (U=1): code at its start, the stack at its end.
const USER_PAGE: u64 = 0x80_0000;
const USER_STACK_TOP: u64 = USER_PAGE + 0x1F_F000;
/// Scratch memory (supervisor only): its first 32 KiB hold text that console-write
/// hypercalls may print; hypercall output buffers and the pointer registers of probed
/// instructions point into the rest, `SCRATCH_RW`.
const SCRATCH: u64 = 0xA0_0000;
const SCRATCH_LEN: u64 = 0x10_0000;
const SCRATCH_TEXT: u64 = 0x8000;
const SCRATCH_RW: u64 = SCRATCH + 0x1_0000;
const SCRATCH_RW_LEN: u64 = SCRATCH_LEN - 0x1_0000;

/// Code buffer for CPL 0 probes (inside our image: supervisor, writable, executable).
#[repr(C, align(4096))]
struct CodeBuf([u8; 4096]);
static mut CODE0: CodeBuf = CodeBuf([0; 4096]);

fn setup_tables() {
    // SAFETY: single vCPU, interrupts off; the tables are statics that live forever and
    // are written before the CPU is told about them.
    unsafe {
        // Page tables: 4 GiB identity-mapped with 2 MiB pages, supervisor only, except
        // the user page. Everything beyond our RAM stays mapped, so wild accesses reach
        // the hypervisor as EPT violations.
        let pml4 = &mut *core::ptr::addr_of_mut!(PML4);
        let pdpt = &mut *core::ptr::addr_of_mut!(PDPT);
        let pds = &mut *core::ptr::addr_of_mut!(PDS);
        pml4.0[0] = pdpt.0.as_ptr() as u64 | 0x7;
        for (g, pd) in pds.iter_mut().enumerate() {
            pdpt.0[g] = pd.0.as_ptr() as u64 | 0x7;
            for (i, e) in pd.0.iter_mut().enumerate() {
                let addr = ((g as u64) << 30) | ((i as u64) << 21);
                *e = addr | 0x83 | if addr == USER_PAGE { 0x4 } else { 0 };
            }
        }
        asm!("mov cr3, {}", in(reg) pml4.0.as_ptr() as u64);

        let tss = core::ptr::addr_of_mut!(TSS);
        let top = |s: *mut Stack| s as u64 + 16384;
        (*tss).rsp[0] = top(core::ptr::addr_of_mut!(RING0_STACK));
        (*tss).ist[0] = top(core::ptr::addr_of_mut!(TRAP_STACK));
        (*tss).ist[1] = top(core::ptr::addr_of_mut!(NMI_STACK));
        let base = tss as u64;
        let limit = 103u64;
        let gdt = &mut *core::ptr::addr_of_mut!(GDT);
        gdt.0[5] = (limit & 0xFFFF)
            | (base & 0xFF_FFFF) << 16
            | 0x89 << 40
            | ((limit >> 16) & 0xF) << 48
            | ((base >> 24) & 0xFF) << 56;
        gdt.0[6] = base >> 32;
        let gdtr = Pointer { limit: (8 * 8 - 1) as u16, base: gdt.0.as_ptr() as u64 };
        asm!(
            "lgdt [{gdtr}]",
            "push {kcode}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {kdata:x}",
            "mov es, {kdata:x}",
            "mov ss, {kdata:x}",
            "ltr {tss:x}",
            gdtr = in(reg) &gdtr,
            kcode = const KCODE as u64,
            tmp = out(reg) _,
            kdata = in(reg) KDATA as u64,
            tss = in(reg) TSS_SEL as u64,
        );

        // The IDT: all 256 vectors to their stubs, interrupt gates (IF cleared), DPL 0,
        // on IST1 (IST2 for NMI), so that even a wrecked RSP does not double-fault.
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        let stubs = core::ptr::addr_of!(trap_stubs) as u64;
        for v in 0..256u64 {
            let h = stubs + 16 * v;
            let ist = if v == 2 { 2 } else { 1 };
            idt.0[2 * v as usize] =
                (h & 0xFFFF) | u64::from(KCODE) << 16 | ist << 32 | 0x8E00 << 32 | ((h >> 16) & 0xFFFF) << 48;
            idt.0[2 * v as usize + 1] = h >> 32;
        }
        let idtr = Pointer { limit: (256 * 16 - 1) as u16, base: idt.0.as_ptr() as u64 };
        asm!("lidt [{}]", in(reg) &idtr);
    }
}

#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

/// What `trap_common` saved: the registers, then the vector, the error code (0 when the
/// CPU pushes none) and the CPU's interrupt frame.
#[repr(C)]
struct Frame {
    regs: [u64; 15],
    vector: u64,
    error: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

global_asm!(
    ".section .text.traps, \"ax\"",
    ".global trap_stubs",
    ".align 16",
    "trap_stubs:",
    ".set vec, 0",
    ".rept 256",
    ".align 16",
    // Vectors 8, 10-14, 17, 21, 29 and 30 push an error code; the others get a 0.
    ".if (vec == 8) + (vec >= 10) * (vec <= 14) + (vec == 17) + (vec == 21) + (vec == 29) + (vec == 30)",
    "push vec",
    ".else",
    "push 0",
    "push vec",
    ".endif",
    "jmp trap_common",
    ".set vec, vec + 1",
    ".endr",
    "trap_common:",
    "push rax",
    "push rcx",
    "push rdx",
    "push rbx",
    "push rbp",
    "push rsi",
    "push rdi",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "cld",
    "mov rdi, rsp",
    "mov rbx, rsp",
    "and rsp, -16",
    "call hostile_trap",
    "mov rsp, rbx",
    "test rax, rax",
    "jnz probe_recover",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdi",
    "pop rsi",
    "pop rbp",
    "pop rbx",
    "pop rdx",
    "pop rcx",
    "pop rax",
    "add rsp, 16",
    "iretq",
    // probe(f, arg) -> 0 when f(arg) returned, 1 when a trap ended it (LAST_TRAP says
    // which). A setjmp: the callee-saved registers and RSP are kept for the trap handler.
    ".global probe",
    "probe:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "sub rsp, 8",
    "mov [rip + PROBE_RSP], rsp",
    "mov qword ptr [rip + PROBE_ARMED], 1",
    "mov rax, rdi",
    "mov rdi, rsi",
    "call rax",
    "mov qword ptr [rip + PROBE_ARMED], 0",
    "xor eax, eax",
    "2:",
    "add rsp, 8",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    "probe_recover:",
    "mov rsp, [rip + PROBE_RSP]",
    "mov ax, 0x10",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "cld",
    "mov eax, 1",
    "jmp 2b",
    // exec_code(exec: *const Exec): loads RAX..R15 from exec.regs (RSP excepted) and
    // jumps to exec.code at CPL 0, with IF as exec.flags bit 9 says. The code buffer
    // ends with a jump to exec_return, which restores RSP and returns.
    ".global exec_code",
    "exec_code:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov [rip + EXEC_RSP], rsp",
    "mov rax, [rdi]",
    "mov [rip + EXEC_TARGET], rax",
    "push qword ptr [rdi + 8]",
    "mov rax, [rdi + 16]",
    "mov rcx, [rdi + 24]",
    "mov rdx, [rdi + 32]",
    "mov rbx, [rdi + 40]",
    "mov rbp, [rdi + 56]",
    "mov rsi, [rdi + 64]",
    "mov r8, [rdi + 80]",
    "mov r9, [rdi + 88]",
    "mov r10, [rdi + 96]",
    "mov r11, [rdi + 104]",
    "mov r12, [rdi + 112]",
    "mov r13, [rdi + 120]",
    "mov r14, [rdi + 128]",
    "mov r15, [rdi + 136]",
    "mov rdi, [rdi + 72]",
    "popfq",
    "jmp [rip + EXEC_TARGET]",
    ".global exec_return",
    "exec_return:",
    "cli",
    "mov rsp, [rip + EXEC_RSP]",
    "mov ax, 0x10",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "cld",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    // enter_user(exec): the same registers, then IRETQ to exec.code at CPL 3 with
    // exec.flags and RSP = exec.regs[4]. It comes back only through a trap.
    ".global enter_user",
    "enter_user:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov [rip + EXEC_RSP], rsp",
    "push {udata}",
    "push qword ptr [rdi + 48]",
    "push qword ptr [rdi + 8]",
    "push {ucode}",
    "push qword ptr [rdi]",
    "mov rax, [rdi + 16]",
    "mov rcx, [rdi + 24]",
    "mov rdx, [rdi + 32]",
    "mov rbx, [rdi + 40]",
    "mov rbp, [rdi + 56]",
    "mov rsi, [rdi + 64]",
    "mov r8, [rdi + 80]",
    "mov r9, [rdi + 88]",
    "mov r10, [rdi + 96]",
    "mov r11, [rdi + 104]",
    "mov r12, [rdi + 112]",
    "mov r13, [rdi + 120]",
    "mov r14, [rdi + 128]",
    "mov r15, [rdi + 136]",
    "mov rdi, [rdi + 72]",
    "iretq",
    ".text",
    udata = const UDATA,
    ucode = const UCODE,
);

unsafe extern "C" {
    static trap_stubs: u8;
    fn probe(f: extern "C" fn(u64), arg: u64) -> u64;
    fn exec_code(exec: u64);
    fn enter_user(exec: u64);
    static exec_return: u8;
}

/// What `exec_code` and `enter_user` load: the code's address, RFLAGS, and the
/// general-purpose registers in encoding order (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI,
/// R8-R15).
#[repr(C)]
struct Exec {
    code: u64,
    flags: u64,
    regs: [u64; 16],
}

static mut EXEC: Exec = Exec { code: 0, flags: 2, regs: [0; 16] };

#[unsafe(no_mangle)]
static mut PROBE_RSP: u64 = 0;
#[unsafe(no_mangle)]
static mut PROBE_ARMED: u64 = 0;
#[unsafe(no_mangle)]
static mut EXEC_RSP: u64 = 0;
#[unsafe(no_mangle)]
static mut EXEC_TARGET: u64 = 0;

/// The trap that ended the last probe.
#[derive(Clone, Copy, Default)]
struct Trap {
    vector: u64,
    error: u64,
    rip: u64,
    cr2: u64,
    /// RFLAGS as the exception pushed it.
    rflags: u64,
}
static mut LAST_TRAP: Trap = Trap { vector: 0, error: 0, rip: 0, cr2: 0, rflags: 0 };

/// Interrupts that arrived outside probes (returned from with IRETQ).
static STRAY: AtomicU64 = AtomicU64::new(0);
/// Traps per vector that ended probes.
static mut TRAPS: [u64; 256] = [0; 256];

const IA32_APIC_BASE: u32 = 0x1B;
const APIC: u64 = 0xFEE0_0000;
const TIMER_VECTOR: u64 = 0x40;

/// Ends the interrupt being serviced at the local APIC, in whatever mode it is in now.
/// Called from the trap handler, so no probes: IA32_APIC_BASE always reads, and the
/// x2APIC EOI MSR always writes in x2APIC mode.
fn eoi() {
    let (lo, hi): (u32, u32);
    // SAFETY: the hypervisor emulates IA32_APIC_BASE; reading it never faults.
    unsafe { asm!("rdmsr", in("ecx") IA32_APIC_BASE, out("eax") lo, out("edx") hi, options(nostack)) };
    let base = u64::from(lo) | u64::from(hi) << 32;
    if base & (1 << 11) == 0 {
        return;
    }
    if base & (1 << 10) != 0 {
        // SAFETY: x2APIC mode: the EOI MSR exists and takes 0.
        unsafe { asm!("wrmsr", in("ecx") 0x80Bu32, in("eax") 0u32, in("edx") 0u32, options(nostack)) };
    } else if base & !0xFFF == APIC {
        // SAFETY: the xAPIC page, emulated by the hypervisor.
        unsafe { ((APIC + 0xB0) as *mut u32).write_volatile(0) };
    }
}

#[unsafe(no_mangle)]
extern "C" fn hostile_trap(f: &mut Frame) -> u64 {
    let vector = f.vector;
    if vector >= 32 {
        eoi();
    }
    if vector == 2 && compat::COUNTING.load(Ordering::SeqCst) {
        compat::on_nmi();
        return 0;
    }
    // SAFETY: single vCPU; the trap handler runs with interrupts off.
    unsafe {
        if PROBE_ARMED != 0 {
            PROBE_ARMED = 0;
            let cr2: u64;
            asm!("mov {}, cr2", out(reg) cr2);
            LAST_TRAP = Trap { vector, error: f.error, rip: f.rip, cr2, rflags: f.rflags };
            TRAPS[vector as usize & 0xFF] += 1;
            return 1;
        }
    }
    if vector >= 32 || vector == 2 {
        STRAY.fetch_add(1, Ordering::Relaxed);
        return 0;
    }
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) cr2) };
    say!(
        "hostile: unexpected exception {vector} error={:#x} rip={:#x} cs={:#x} rsp={:#x} cr2={cr2:#x} outside a probe",
        f.error,
        f.rip,
        f.cs,
        f.rsp
    );
    exit(3)
}

/// Runs `f(arg)` under the trap handler: `Ok(())` or the trap that ended it.
fn guarded(f: extern "C" fn(u64), arg: u64) -> Result<(), Trap> {
    // SAFETY: `probe` calls `f` with a saved context the trap handler returns to; `f`
    // only touches what it is written to touch (or traps, which the handler catches).
    if unsafe { probe(f, arg) } == 0 {
        Ok(())
    } else {
        // SAFETY: written by the trap handler before it returned here.
        Err(unsafe { LAST_TRAP })
    }
}

extern "C" fn op_rdmsr(msr: u64) {
    let (lo, hi): (u32, u32);
    // SAFETY: RDMSR exits; the hypervisor answers or injects #GP (caught).
    unsafe { asm!("rdmsr", in("ecx") msr as u32, out("eax") lo, out("edx") hi, options(nostack)) };
    // SAFETY: single vCPU; a static for the result.
    unsafe { ARG[1] = u64::from(lo) | u64::from(hi) << 32 };
}

extern "C" fn op_wrmsr(msr: u64) {
    // SAFETY: single vCPU; ARG[1] was set by the caller.
    let value = unsafe { ARG[1] };
    // SAFETY: WRMSR exits; the hypervisor performs it on the vCPU's state or injects #GP.
    unsafe {
        asm!("wrmsr", in("ecx") msr as u32, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack))
    };
}

/// Arguments for probed operations that take more than one.
static mut ARG: [u64; 8] = [0; 8];

fn rdmsr_raw(msr: u32) -> Result<u64, Trap> {
    guarded(op_rdmsr, u64::from(msr))?;
    // SAFETY: set by op_rdmsr.
    Ok(unsafe { ARG[1] })
}

fn wrmsr_raw(msr: u32, value: u64) -> Result<(), Trap> {
    // SAFETY: single vCPU.
    unsafe { ARG[1] = value };
    guarded(op_wrmsr, u64::from(msr))
}

// ---------------------------------------------------------------------------------------
// The hostile run.

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
enum Kind {
    PortIn,
    PortOut,
    Rdmsr,
    Wrmsr,
    Hypercall,
    Cr0,
    Cr3,
    Cr4,
    Cr8,
    Xsetbv,
    Lapic,
    IoApic,
    Ram,
    IntN,
    Privileged,
    Vmx,
    HltTimer,
    UserCode,
    ApicBase,
}

const KINDS: [(Kind, &str, u64); 19] = [
    (Kind::PortIn, "port-in", 10),
    (Kind::PortOut, "port-out", 10),
    (Kind::Rdmsr, "rdmsr", 8),
    (Kind::Wrmsr, "wrmsr", 8),
    (Kind::Hypercall, "hypercall", 10),
    (Kind::Cr0, "cr0", 3),
    (Kind::Cr3, "cr3", 2),
    (Kind::Cr4, "cr4", 3),
    (Kind::Cr8, "cr8", 3),
    (Kind::Xsetbv, "xsetbv", 3),
    (Kind::Lapic, "lapic-mmio", 6),
    (Kind::IoApic, "ioapic-mmio", 4),
    (Kind::Ram, "ram", 3),
    (Kind::IntN, "int-n", 3),
    (Kind::Privileged, "privileged", 8),
    (Kind::Vmx, "vmx", 4),
    (Kind::HltTimer, "hlt-timer", 1),
    (Kind::UserCode, "user-code", 10),
    (Kind::ApicBase, "apic-base", 1),
];

struct Stats {
    ops: [u64; KINDS.len()],
    trapped: [u64; KINDS.len()],
    violations: u64,
}

struct Run {
    rng: Rng,
    memory: u64,
    stats: Stats,
    ioapic_dirty: bool,
    /// Console bytes sent by ConsoleWrite since the last newline we printed.
    console_dirty: bool,
}

impl Run {
    fn violation(&mut self, what: fmt::Arguments) {
        self.stats.violations += 1;
        if self.console_dirty {
            say!();
            self.console_dirty = false;
        }
        say!("hostile: VIOLATION: {what}");
    }
}

fn hostile(cmdline: &str, memory: u64, domain: u32) -> ! {
    setup_tables();
    let seed = num_arg(cmdline, "seed", 1);
    let ops = num_arg(cmdline, "ops", 20_000);
    let danger = num_arg(cmdline, "danger", 0);
    let every = num_arg(cmdline, "every", 1000).max(1);
    let sweep = num_arg(cmdline, "sweep", 1) != 0;
    say!("hostile: seed {seed:#x} ops={ops} danger={danger} sweep={sweep} domain={domain} memory={} MiB", memory >> 20);
    if memory < (16 << 20) {
        say!("hostile: needs at least 16 MiB");
        exit(2);
    }
    // Readable scratch, so console writes from it are text.
    for i in 0..SCRATCH_TEXT {
        // SAFETY: our own RAM at 10-11 MiB, identity-mapped, used for nothing else.
        unsafe { ((SCRATCH + i) as *mut u8).write_volatile(b"hostile-scratch-"[(i % 16) as usize]) };
    }
    let mut run = Run {
        rng: Rng::new(seed),
        memory,
        stats: Stats { ops: [0; KINDS.len()], trapped: [0; KINDS.len()], violations: 0 },
        ioapic_dirty: false,
        console_dirty: false,
    };
    if sweep {
        port_sweep();
    }
    let total_weight: u64 = KINDS.iter().map(|k| k.2).sum();
    for n in 1..=ops {
        let mut pick = run.rng.below(total_weight);
        let mut index = 0;
        while pick >= KINDS[index].2 {
            pick -= KINDS[index].2;
            index += 1;
        }
        let kind = KINDS[index].0;
        run.stats.ops[index] += 1;
        if one_op(&mut run, kind).is_err() {
            run.stats.trapped[index] += 1;
        }
        if n % every == 0 {
            if run.console_dirty {
                say!();
                run.console_dirty = false;
            }
            say!("hostile: {n} ops");
        }
    }
    if run.console_dirty {
        say!();
    }
    summary(&run, ops);
    if danger > 0 {
        say!("hostile: survived {ops} ops; now {danger} dangerous op(s)");
        for n in 1..=danger {
            dangerous(&mut run, n, danger);
        }
        say!("hostile: survived the dangerous ops too");
    }
    let status = if run.stats.violations == 0 { 0 } else { 1 };
    say!("hostile: done, {} violation(s)", run.stats.violations);
    exit(status)
}

fn summary(run: &Run, ops: u64) {
    say!("hostile: {ops} ops done");
    for (i, k) in KINDS.iter().enumerate() {
        say!("hostile:   {:<12} {:>6} ops, {:>6} trapped", k.1, run.stats.ops[i], run.stats.trapped[i]);
    }
    let mut line = [0u8; 256];
    let mut w = Buf { buf: &mut line, len: 0 };
    // SAFETY: single vCPU; read after the run.
    let traps = unsafe { &*core::ptr::addr_of!(TRAPS) };
    for (v, &c) in traps.iter().enumerate().take(32) {
        if c != 0 {
            let _ = write!(w, " {v}:{c}");
        }
    }
    let len = w.len;
    let above: u64 = traps[32..].iter().sum();
    say!("hostile:   traps by vector:{} 32-255:{above}", core::str::from_utf8(&line[..len]).unwrap_or("?"));
    say!("hostile:   stray interrupts {}, violations {}", STRAY.load(Ordering::Relaxed), run.stats.violations);
}

struct Buf<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Whether an OUT of `width` bytes at `port` could end, reset or power off the domain,
/// or print to its console.
fn port_ends_domain(port: u16, width: u16) -> bool {
    let end = u32::from(port) + u32::from(width);
    let hits = |p: u16| (u32::from(port)..end).contains(&u32::from(p));
    hits(EXIT_PORT) || hits(0x92) || hits(0xCF9) || hits(0x604) || hits(0x605) || hits(DEBUG_PORT) || hits(0x3F8)
}

/// An IN from every port, then a byte OUT to every port but those that end the domain.
fn port_sweep() {
    for port in 0..=u16::MAX {
        let _v: u8;
        // SAFETY: port input exits; every port reads something (all ones if unclaimed).
        unsafe { asm!("in al, dx", in("dx") port, out("al") _v, options(nomem, nostack)) };
    }
    say!("hostile: swept IN over all 65536 ports");
    let mut skipped = 0;
    for port in 0..=u16::MAX {
        if port_ends_domain(port, 1) {
            skipped += 1;
            continue;
        }
        // A value that leaves PIC/PIT/RTC programming sane enough: 0.
        // SAFETY: port output exits; the hypervisor's models take any byte.
        unsafe { asm!("out dx, al", in("dx") port, in("al") 0u8, options(nomem, nostack)) };
    }
    say!("hostile: swept OUT over all ports but {skipped}");
}

/// Known MSR indices: the ones the hypervisor emulates, and some it should refuse.
const MSRS: [u32; 40] = [
    0x10,
    0x1B,
    0x3A,
    0x48,
    0x49,
    0x79,
    0x8B,
    0xE7,
    0xE8,
    0xFE,
    0x10A,
    0x174,
    0x175,
    0x176,
    0x179,
    0x17A,
    0x1A0,
    0x1D9,
    0x277,
    0x2FF,
    0x480,
    0x481,
    0x482,
    0x485,
    0x48B,
    0x48D,
    0x491,
    0x6E0,
    0x802,
    0x803,
    0x808,
    0x80B,
    0x830,
    0x838,
    0xC000_0080,
    0xC000_0081,
    0xC000_0082,
    0xC000_0100,
    0xC000_0101,
    0xC000_0102,
];

fn pick_msr(rng: &mut Rng) -> u32 {
    match rng.below(4) {
        0 => rng.next() as u32,
        1 => (rng.below(0x2000)) as u32,
        2 => 0xC000_0000 | rng.below(0x200) as u32,
        _ => MSRS[rng.below(MSRS.len() as u64) as usize],
    }
}

fn read_cr0() -> u64 {
    let v: u64;
    // SAFETY: reading CR0 does not exit (reads come from the read shadow).
    unsafe { asm!("mov {}, cr0", out(reg) v) };
    v
}

fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: as read_cr0.
    unsafe { asm!("mov {}, cr4", out(reg) v) };
    v
}

fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: as read_cr0.
    unsafe { asm!("mov {}, cr3", out(reg) v) };
    v
}

extern "C" fn op_write_cr0(v: u64) {
    // SAFETY: probed; CR0 bits we toggle leave paging and protection as they are or fault.
    unsafe { asm!("mov cr0, {}", in(reg) v) };
}

extern "C" fn op_write_cr3(v: u64) {
    // SAFETY: probed; only a copy of our own page tables or the same root is loaded.
    unsafe { asm!("mov cr3, {}", in(reg) v) };
}

extern "C" fn op_write_cr4(v: u64) {
    // SAFETY: probed; restored afterwards.
    unsafe { asm!("mov cr4, {}", in(reg) v) };
}

extern "C" fn op_write_cr8(v: u64) {
    // SAFETY: probed; CR8 is virtual (the vCPU's TPR).
    unsafe { asm!("mov cr8, {}", in(reg) v) };
}

extern "C" fn op_read_cr8(_: u64) {
    let v: u64;
    // SAFETY: probed; CR8 reads exit to the hypervisor.
    unsafe { asm!("mov {}, cr8", out(reg) v) };
    // SAFETY: single vCPU.
    unsafe { ARG[1] = v };
}

extern "C" fn op_xsetbv(index: u64) {
    // SAFETY: single vCPU.
    let value = unsafe { ARG[1] };
    // SAFETY: probed; XSETBV exits and is validated by the hypervisor (#GP otherwise).
    unsafe { asm!("xsetbv", in("ecx") index as u32, in("eax") value as u32, in("edx") (value >> 32) as u32) };
}

extern "C" fn op_xgetbv(index: u64) {
    let (lo, hi): (u32, u32);
    // SAFETY: probed; XGETBV does not exit.
    unsafe { asm!("xgetbv", in("ecx") index as u32, out("eax") lo, out("edx") hi) };
    // SAFETY: single vCPU.
    unsafe { ARG[1] = u64::from(lo) | u64::from(hi) << 32 };
}

/// MMIO through the instruction forms the hypervisor's decoder knows: ARG[1] = address,
/// ARG[2] = value; `form` picks the instruction.
extern "C" fn op_mmio(form: u64) {
    // SAFETY: single vCPU.
    let (addr, value) = unsafe { (ARG[1], ARG[2]) };
    let mut out: u64 = 0;
    // SAFETY: probed; the address is an APIC page the hypervisor emulates (or RAM).
    unsafe {
        match form % 10 {
            0 => asm!("mov {o:e}, dword ptr [{a}]", a = in(reg) addr, o = out(reg) out),
            1 => asm!("mov dword ptr [{a}], {v:e}", a = in(reg) addr, v = in(reg) value),
            2 => asm!("movzx {o:e}, byte ptr [{a}]", a = in(reg) addr, o = out(reg) out),
            3 => asm!("movzx {o:e}, word ptr [{a}]", a = in(reg) addr, o = out(reg) out),
            4 => asm!("mov {o}, qword ptr [{a}]", a = in(reg) addr, o = out(reg) out),
            5 => asm!("mov qword ptr [{a}], {v}", a = in(reg) addr, v = in(reg) value),
            6 => asm!("mov byte ptr [{a}], {v:l}", a = in(reg) addr, v = in(reg) value),
            7 => asm!("mov word ptr [{a}], {v:x}", a = in(reg) addr, v = in(reg) value),
            8 => asm!("mov dword ptr [{a}], 0x12345678", a = in(reg) addr),
            _ => asm!("movsx {o}, word ptr [{a}]", a = in(reg) addr, o = out(reg) out),
        }
        ARG[3] = out;
    }
}

fn mmio(form: u64, addr: u64, value: u64) -> Result<(), Trap> {
    // SAFETY: single vCPU.
    unsafe {
        ARG[1] = addr;
        ARG[2] = value;
    }
    guarded(op_mmio, form)
}

/// Puts the local APIC back to an enabled xAPIC at its usual address with LINT0/LINT1
/// masked and the TPR at 0, so that a timer interrupt can be relied upon.
fn fix_apic(run: &mut Run) {
    let base = rdmsr_raw(IA32_APIC_BASE).unwrap_or(0);
    if base & (1 << 10) != 0 {
        // x2APIC cannot go straight back to xAPIC: disable first.
        let _ = wrmsr_raw(IA32_APIC_BASE, APIC | (1 << 8));
    }
    if base != APIC | (1 << 8) | (1 << 11) {
        let _ = wrmsr_raw(IA32_APIC_BASE, APIC | (1 << 8) | (1 << 11));
    }
    let _ = guarded(op_write_cr8, 0);
    for (offset, value) in [(0xF0u64, 0x1FFu64), (0x350, 0x1_0000), (0x360, 0x1_0000), (0x370, 0x1_0000), (0x80, 0)] {
        let _ = mmio(1, APIC + offset, value);
    }
    if run.ioapic_dirty {
        for pin in 0..24u64 {
            let _ = mmio(1, 0xFEC0_0000, 0x10 + 2 * pin);
            let _ = mmio(1, 0xFEC0_0010, 0x1_0000);
        }
        run.ioapic_dirty = false;
    }
}

/// Arms the local APIC timer: one-shot, `TIMER_VECTOR`, `count` bus clocks (1 ns each).
fn arm_timer(count: u32) {
    let _ = mmio(1, APIC + 0x3E0, 0xB);
    let _ = mmio(1, APIC + 0x320, TIMER_VECTOR);
    let _ = mmio(1, APIC + 0x380, u64::from(count));
}

fn disarm_timer() {
    let _ = mmio(1, APIC + 0x380, 0);
    let _ = mmio(1, APIC + 0x320, 0x1_0000);
}

/// Writes `bytes`, 32 NOPs and a jump to `exec_return` into the CPL 0 buffer.
fn load_code0(bytes: &[u8]) -> u64 {
    // SAFETY: single vCPU; the buffer is ours and not executing now.
    let buf = unsafe { &mut (*core::ptr::addr_of_mut!(CODE0)).0 };
    let n = bytes.len().min(4000);
    buf[..n].copy_from_slice(&bytes[..n]);
    buf[n..n + 32].fill(0x90);
    let t = n + 32;
    buf[t..t + 6].copy_from_slice(&[0xFF, 0x25, 0, 0, 0, 0]);
    let ret = core::ptr::addr_of!(exec_return) as u64;
    buf[t + 6..t + 14].copy_from_slice(&ret.to_le_bytes());
    buf.as_ptr() as u64
}

extern "C" fn op_exec0(_: u64) {
    // SAFETY: the code buffer ends in a jump to exec_return; probed.
    unsafe { exec_code(core::ptr::addr_of!(EXEC) as u64) };
}

extern "C" fn op_user(_: u64) {
    // SAFETY: enters CPL 3 at EXEC.code; returns through a trap (probed).
    unsafe { enter_user(core::ptr::addr_of!(EXEC) as u64) };
}

/// Registers for probed code: pointers into scratch, small numbers, random values.
fn preset_regs(rng: &mut Rng, user: bool) {
    // SAFETY: single vCPU.
    let exec = unsafe { &mut *core::ptr::addr_of_mut!(EXEC) };
    for (i, r) in exec.regs.iter_mut().enumerate() {
        *r = match rng.below(4) {
            _ if i == 4 => 0,
            0 if user => USER_PAGE + 0x1000 + (rng.below(0x1F_0000) & !7),
            0 => SCRATCH_RW + (rng.below(SCRATCH_RW_LEN - 0x2000) & !0xFFF),
            1 => rng.below(64),
            // Kernel code must not be pointed at our image or outside RAM (that comes
            // with the dangerous ops): addresses below 4 GiB go to scratch.
            2 if user => rng.edgy(),
            2 => match rng.edgy() {
                v if v < 1 << 32 => SCRATCH_RW + (v % (SCRATCH_RW_LEN - 0x2000)),
                v => v,
            },
            _ if user => USER_PAGE + 0x10_0000,
            _ => SCRATCH_RW + 0x8000,
        };
    }
    exec.regs[4] = if user { USER_STACK_TOP } else { 0 };
}

fn run_code0(rng: &mut Rng, bytes: &[u8], interrupts: bool) -> Result<(), Trap> {
    preset_regs(rng, false);
    let code = load_code0(bytes);
    // SAFETY: single vCPU.
    unsafe {
        let exec = &mut *core::ptr::addr_of_mut!(EXEC);
        exec.code = code;
        exec.flags = if interrupts { 0x202 } else { 0x2 };
    }
    guarded(op_exec0, 0)
}

/// The VMX instructions, each with its memory operand at [RAX] or registers RAX/RCX.
const VMX_OPS: [&[u8]; 16] = [
    &[0xF3, 0x0F, 0xC7, 0x30],       // vmxon [rax]
    &[0x0F, 0x01, 0xC4],             // vmxoff
    &[0x66, 0x0F, 0xC7, 0x30],       // vmclear [rax]
    &[0x0F, 0xC7, 0x30],             // vmptrld [rax]
    &[0x0F, 0xC7, 0x38],             // vmptrst [rax]
    &[0x0F, 0x78, 0xC1],             // vmread rcx, rax
    &[0x0F, 0x79, 0xC1],             // vmwrite rax, rcx
    &[0x0F, 0x01, 0xC2],             // vmlaunch
    &[0x0F, 0x01, 0xC3],             // vmresume
    &[0x66, 0x0F, 0x38, 0x80, 0x01], // invept rax, [rcx]
    &[0x66, 0x0F, 0x38, 0x81, 0x01], // invvpid rax, [rcx]
    &[0x0F, 0x01, 0xD4],             // vmfunc
    &[0x0F, 0x37],                   // getsec
    &[0x0F, 0x01, 0xCF],             // encls
    &[0x0F, 0x01, 0xD7],             // enclu
    &[0x0F, 0x01, 0xC0],             // enclv
];

/// Privileged and exiting instructions other than VMX ones (and never HLT, which is
/// its own kind, nor SYSCALL/SYSENTER, whose targets random MSR writes may have set).
const PRIV_OPS: [&[u8]; 40] = [
    &[0x0F, 0x08],                                     // invd
    &[0x0F, 0x09],                                     // wbinvd
    &[0xF3, 0x0F, 0x09],                               // wbnoinvd
    &[0x0F, 0xA2],                                     // cpuid
    &[0x0F, 0x31],                                     // rdtsc
    &[0x0F, 0x01, 0xF9],                               // rdtscp
    &[0x0F, 0x33],                                     // rdpmc
    &[0x0F, 0xC7, 0xF0],                               // rdrand eax
    &[0x0F, 0xC7, 0xF8],                               // rdseed eax
    &[0x0F, 0x01, 0xC8],                               // monitor
    &[0x0F, 0x01, 0xC9],                               // mwait
    &[0xF3, 0x90],                                     // pause
    &[0x0F, 0x01, 0x38],                               // invlpg [rax]
    &[0x66, 0x0F, 0x38, 0x82, 0x01],                   // invpcid rax, [rcx]
    &[0x0F, 0x06],                                     // clts
    &[0x0F, 0x01, 0xF0],                               // lmsw ax
    &[0x0F, 0x01, 0x00],                               // sgdt [rax]
    &[0x0F, 0x01, 0x08],                               // sidt [rax]
    &[0x0F, 0x01, 0x00, 0x0F, 0x01, 0x10],             // sgdt [rax]; lgdt [rax]
    &[0x0F, 0x01, 0x08, 0x0F, 0x01, 0x18],             // sidt [rax]; lidt [rax]
    &[0x0F, 0x00, 0xC8],                               // str eax
    &[0x0F, 0x00, 0xC0],                               // sldt eax
    &[0x31, 0xC0, 0x0F, 0x00, 0xD0],                   // xor eax, eax; lldt ax
    &[0x0F, 0x00, 0xD8],                               // ltr ax
    &[0x0F, 0xAA],                                     // rsm
    &[0x0F, 0x0B],                                     // ud2
    &[0xCC],                                           // int3
    &[0xF1],                                           // int1
    &[0xCE],                                           // into (#UD in 64-bit mode)
    &[0x0F, 0x01, 0xF8, 0x0F, 0x01, 0xF8],             // swapgs twice
    &[0x0F, 0x23, 0xF8, 0x31, 0xC0, 0x0F, 0x23, 0xF8], // mov dr7, rax; xor eax, eax; mov dr7, rax
    &[0x0F, 0x21, 0xF0],                               // mov rax, dr6
    &[0x0F, 0xAE, 0x20],                               // xsave [rax]
    &[0x0F, 0xAE, 0x28],                               // xrstor [rax]
    &[0x0F, 0xAE, 0x38],                               // clflush [rax]
    &[0x0F, 0x01, 0xD0],                               // xgetbv
    &[0xEC],                                           // in al, dx
    &[0x6C],                                           // insb
    &[0xF3, 0x6E],                                     // rep outsb
    &[0x0F, 0x01, 0xD9],                               // vmmcall (AMD)
];

fn one_op(run: &mut Run, kind: Kind) -> Result<(), Trap> {
    let rng = &mut run.rng;
    match kind {
        Kind::PortIn => {
            let port = rng.below(0x1_0000) as u16;
            let width = rng.below(3);
            // SAFETY: port input exits; any port answers.
            unsafe {
                match width {
                    0 => asm!("in al, dx", in("dx") port, out("al") _, options(nomem, nostack)),
                    1 => asm!("in ax, dx", in("dx") port, out("ax") _, options(nomem, nostack)),
                    _ => asm!("in eax, dx", in("dx") port, out("eax") _, options(nomem, nostack)),
                }
            }
            Ok(())
        }
        Kind::PortOut => {
            // Half the time one of the emulated devices' ports, else any port.
            const DEVICE_PORTS: [u16; 24] = [
                0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1, 0x40, 0x41, 0x42, 0x43, 0x61, 0x70, 0x71, 0xCF8, 0xCFC, 0xCFD,
                0xCFE, 0x510, 0x511, 0x600, 0x602, 0x608, 0x3F9, 0x3FB,
            ];
            let port = if rng.chance(50) { DEVICE_PORTS[rng.below(24) as usize] } else { rng.below(0x1_0000) as u16 };
            let width = rng.below(3);
            let value = rng.edgy() as u32;
            if port_ends_domain(port, 1 << width) {
                return Ok(());
            }
            // SAFETY: port output exits; the models take any value.
            unsafe {
                match width {
                    0 => asm!("out dx, al", in("dx") port, in("al") value as u8, options(nomem, nostack)),
                    1 => asm!("out dx, ax", in("dx") port, in("ax") value as u16, options(nomem, nostack)),
                    _ => asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack)),
                }
            }
            Ok(())
        }
        Kind::Rdmsr => {
            let msr = pick_msr(rng);
            rdmsr_raw(msr).map(|_| ())
        }
        Kind::Wrmsr => {
            let msr = pick_msr(rng);
            // The APIC base has its own kind (it must be put back).
            if msr == IA32_APIC_BASE {
                return Ok(());
            }
            let value = match rng.below(3) {
                0 => rng.edgy(),
                _ => match rdmsr_raw(msr) {
                    Ok(v) => v ^ (1 << rng.below(64)),
                    Err(_) => rng.edgy(),
                },
            };
            let r = wrmsr_raw(msr, value);
            // SYSENTER must keep faulting (SYSENTER_CS = 0), or user code would enter
            // CPL 0 wherever SYSENTER_EIP says.
            if (0x174..=0x176).contains(&msr) {
                let _ = wrmsr_raw(0x174, 0);
            }
            // EFER must keep long mode on; anything else written stays (FS/GS bases,
            // PAT, SYSENTER MSRs: nothing here depends on them).
            if msr == 0xC000_0080 {
                let _ = wrmsr_raw(msr, (1 << 8) | (1 << 10) | (1 << 11));
            }
            r
        }
        Kind::Hypercall => hypercall_op(run),
        Kind::Cr0 => {
            // Bits that leave protection and paging alone: MP, EM, TS, ET, NE, WP, AM,
            // NW, CD; sometimes a reserved bit above 31.
            const BITS: [u32; 10] = [1, 2, 3, 4, 5, 16, 18, 29, 30, 40];
            let old = read_cr0();
            let bit = BITS[rng.below(BITS.len() as u64) as usize];
            let bit2 = BITS[rng.below(BITS.len() as u64) as usize];
            let r = guarded(op_write_cr0, old ^ (1 << bit) ^ if rng.chance(30) { 1 << bit2 } else { 0 });
            let _ = guarded(op_write_cr0, old);
            r
        }
        Kind::Cr3 => {
            let old = read_cr3();
            let new = match rng.below(3) {
                0 => old,
                1 => old | 0x18,      // PWT/PCD
                _ => old | (1 << 63), // no-flush bit (only with PCIDE)
            };
            let r = guarded(op_write_cr3, new);
            let _ = guarded(op_write_cr3, old);
            r
        }
        Kind::Cr4 => {
            // VME, PVI, TSD, DE, PSE, PGE, PCE, OSXMMEXCPT, UMIP, LA57, VMXE, SMXE,
            // FSGSBASE, PCIDE, OSXSAVE, SMEP, SMAP, PKE, CET; and a reserved bit.
            const BITS: [u32; 20] = [0, 1, 2, 3, 4, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 20, 21, 22, 23, 40];
            let old = read_cr4();
            let bit = BITS[rng.below(BITS.len() as u64) as usize];
            let r = guarded(op_write_cr4, old ^ (1 << bit));
            let _ = guarded(op_write_cr4, old);
            r
        }
        Kind::Cr8 => {
            let v = if rng.chance(80) { rng.below(16) } else { rng.edgy() };
            let r = guarded(op_write_cr8, v);
            let _ = guarded(op_read_cr8, 0);
            // SAFETY: set by op_read_cr8.
            let back = unsafe { ARG[1] };
            if r.is_ok() && back != v {
                run.violation(format_args!("CR8: wrote {v:#x}, read back {back:#x}"));
            }
            let _ = guarded(op_write_cr8, 0);
            r
        }
        Kind::Xsetbv => {
            let old4 = read_cr4();
            let _ = guarded(op_write_cr4, old4 | (1 << 18));
            let _ = guarded(op_xgetbv, 0);
            // SAFETY: set by op_xgetbv.
            let old = unsafe { ARG[1] };
            let index = if rng.chance(80) { 0 } else { rng.edgy() };
            let value = match rng.below(6) {
                0 => 1,
                1 => 3,
                2 => 7,
                3 => 5,
                4 => 0,
                _ => rng.edgy(),
            };
            // SAFETY: single vCPU.
            unsafe { ARG[1] = value };
            let r = guarded(op_xsetbv, index);
            // SAFETY: single vCPU.
            unsafe { ARG[1] = old };
            let _ = guarded(op_xsetbv, 0);
            let _ = guarded(op_write_cr4, old4);
            r
        }
        Kind::Lapic => {
            fix_apic_base();
            let offset = if rng.chance(70) { rng.below(0x40) * 0x10 } else { rng.below(0xFF8) };
            let form = rng.below(10);
            // Any register, the ICR too (self-IPIs of every delivery mode: fixed ones
            // wait in IRR until an interrupt window). SVR and LVT state is put back
            // before the next op that needs the timer.
            let value = rng.edgy();
            mmio(form, APIC + offset, value)
        }
        Kind::IoApic => {
            run.ioapic_dirty = true;
            let form = rng.below(10);
            match rng.below(4) {
                0 => mmio(form, 0xFEC0_0000 + rng.below(0x1000 - 8), rng.edgy()),
                _ => {
                    let _ = mmio(1, 0xFEC0_0000, rng.below(0x40));
                    mmio(form, 0xFEC0_0010, rng.edgy())
                }
            }
        }
        Kind::Ram => {
            // Anywhere in our RAM but the image and our stack: read; in scratch: write.
            let addr = rng.below(run.memory - 8);
            let form = if rng.chance(50) { 0 } else { 4 };
            let r = mmio(form, addr, 0);
            let w = SCRATCH_RW + rng.below(SCRATCH_RW_LEN - 8);
            let _ = mmio(1, w, rng.next());
            r
        }
        Kind::IntN => {
            let n = rng.below(256) as u8;
            run_code0(rng, &[0xCD, n], false)
        }
        Kind::Privileged => {
            let op = PRIV_OPS[rng.below(PRIV_OPS.len() as u64) as usize];
            let cr0 = read_cr0();
            let cr4 = read_cr4();
            let r = run_code0(rng, op, false);
            let _ = guarded(op_write_cr0, cr0);
            let _ = guarded(op_write_cr4, cr4);
            let _ = guarded(op_write_cr8, 0);
            r
        }
        Kind::Vmx => {
            let which = rng.below(VMX_OPS.len() as u64) as usize;
            let r = run_code0(rng, VMX_OPS[which], false);
            // Every VMX instruction must fault in a guest without VMX: #UD.
            if r.is_ok() {
                run.violation(format_args!("VMX instruction #{which} did not fault"));
            }
            r
        }
        Kind::HltTimer => {
            fix_apic(run);
            arm_timer(20_000);
            let r = run_code0(&mut run.rng, &[0xF4], true);
            disarm_timer();
            r
        }
        Kind::UserCode => user_code(run),
        Kind::ApicBase => {
            let value = match rng.below(4) {
                0 => APIC | (1 << 8) | (3 << 10),                         // x2APIC
                1 => APIC | (1 << 8),                                     // disabled
                2 => (rng.next() & 0xF_FFFF_F000) | (1 << 11) | (1 << 8), // moved
                _ => rng.edgy(),
            };
            let r = wrmsr_raw(IA32_APIC_BASE, value);
            // Read back through both doors while it is like that, then restore.
            let _ = rdmsr_raw(0x802);
            fix_apic(run);
            r
        }
    }
}

/// Puts IA32_APIC_BASE back to an enabled xAPIC at 0xFEE00000 (so its page is MMIO).
fn fix_apic_base() {
    let base = rdmsr_raw(IA32_APIC_BASE).unwrap_or(0);
    if base & !(1 << 8) != APIC | (1 << 11) {
        let _ = wrmsr_raw(IA32_APIC_BASE, APIC | (1 << 8));
        let _ = wrmsr_raw(IA32_APIC_BASE, APIC | (1 << 8) | (1 << 11));
    }
}

/// Random bytes at CPL 3 in the user page, bounded by a local APIC timer interrupt.
fn user_code(run: &mut Run) -> Result<(), Trap> {
    fix_apic(run);
    let rng = &mut run.rng;
    let len = 1 + rng.below(64) as usize;
    // SAFETY: the user page is our RAM; nothing of ours lives there.
    let code = unsafe { core::slice::from_raw_parts_mut(USER_PAGE as *mut u8, len + 64) };
    for b in code[..len].iter_mut() {
        *b = rng.next() as u8;
    }
    code[len..len + 32].fill(0x90);
    for pair in code[len + 32..].chunks_mut(2) {
        pair.copy_from_slice(&[0x0F, 0x0B][..pair.len()]);
    }
    preset_regs(rng, true);
    // SAFETY: single vCPU.
    unsafe {
        let exec = &mut *core::ptr::addr_of_mut!(EXEC);
        exec.code = USER_PAGE;
        exec.flags = 0x202;
    }
    arm_timer(300_000);
    let r = guarded(op_user, 0);
    disarm_timer();
    match r {
        Ok(()) => {
            run.violation(format_args!("user code returned without a trap"));
            Ok(())
        }
        Err(t) => Err(t),
    }
}

/// One random hypercall: a number in 0..40, random arguments (pointers mostly into
/// scratch or nowhere). Privileged calls must fail with EPERM, unknown ones with
/// ENOSYS, and the registers other than RAX must survive.
fn hypercall_op(run: &mut Run) -> Result<(), Trap> {
    let rng = &mut run.rng;
    let number = if rng.chance(95) { rng.below(41) } else { rng.edgy() };
    let mut args = [0u64; 6];
    for a in args.iter_mut() {
        *a = match rng.below(7) {
            0 => SCRATCH_RW + rng.below(SCRATCH_RW_LEN),
            1 => rng.below(16),
            2 => rng.below(5000),
            3 => run.memory - rng.below(64),
            4 => 0x8000_0000_0000_0000 | rng.next(),
            5 => rng.edgy(),
            _ => rng.next(),
        };
    }
    // Console writes come from the text (or from nowhere), and are mostly short.
    if number == 1 && args[0] < run.memory {
        args[0] = SCRATCH + args[0] % (SCRATCH_TEXT / 2);
        if args[1] > 64 && rng.chance(98) {
            args[1] %= 64;
        }
    }
    let keep = [rng.next(), rng.next(), rng.next(), rng.next(), rng.next(), rng.next(), rng.next()];
    let ret: i64;
    let after: [u64; 7];
    // SAFETY: VMCALL at CPL 0 exits; the hypervisor checks every pointer against our
    // RAM (writes can land only in our scratch or nowhere: no argument points at our
    // image or stack).
    unsafe {
        let (mut b, mut c, mut r11, mut r12, mut r13, mut r14, mut r15) =
            (keep[0], keep[1], keep[2], keep[3], keep[4], keep[5], keep[6]);
        asm!(
            "xchg rbx, {b}",
            "vmcall",
            "xchg rbx, {b}",
            b = inout(reg) b,
            inlateout("rax") number => ret,
            in("rdi") args[0], in("rsi") args[1], in("rdx") args[2],
            in("r10") args[3], in("r8") args[4], in("r9") args[5],
            inout("rcx") c, inout("r11") r11, inout("r12") r12, inout("r13") r13, inout("r14") r14, inout("r15") r15,
        );
        after = [b, c, r11, r12, r13, r14, r15];
    }
    if after != keep {
        run.violation(format_args!("hypercall {number}: registers changed"));
    }
    if number == 1 && ret > 0 {
        run.console_dirty = true;
    }
    match Call::from_number(number) {
        Some(call) if call.privileged() && ret != -1 => {
            run.violation(format_args!("privileged hypercall {number} ({call:?}) returned {ret}, not EPERM"));
        }
        None if ret != -38 => run.violation(format_args!("unknown hypercall {number:#x} returned {ret}, not ENOSYS")),
        Some(Call::Version) if ret != 0x1_0000 => run.violation(format_args!("version returned {ret:#x}")),
        _ => {}
    }
    Ok(())
}

/// The dangerous ops: announced, then run; one of them probably ends the domain.
fn dangerous(run: &mut Run, n: u64, of: u64) {
    // Random code at CPL 0 first (it mostly traps and goes on), then MMIO the decoder
    // cannot handle (the last fifth), then wild accesses (the last tenth).
    let kind = if n * 10 > of * 9 {
        3
    } else if n * 10 > of * 8 {
        2
    } else {
        0
    };
    match kind {
        0 => {
            let len = 1 + run.rng.below(32) as usize;
            let mut bytes = [0u8; 32];
            for b in bytes[..len].iter_mut() {
                *b = run.rng.next() as u8;
            }
            say!("hostile: danger {n}: cpl0-code {:02x?}", &bytes[..len]);
            fix_apic(run);
            arm_timer(300_000);
            let r = run_code0(&mut run.rng, &bytes[..len], true);
            disarm_timer();
            if let Err(t) = r {
                say!(
                    "hostile: danger {n}: trapped: vector {} error {:#x} at {:#x} cr2 {:#x}",
                    t.vector,
                    t.error,
                    t.rip,
                    t.cr2
                );
            }
        }
        2 => {
            // An instruction outside the decoder's MOV family on the local APIC.
            const FORMS: [&[u8]; 4] = [
                &[0x83, 0x00, 0x01],       // add dword [rax], 1
                &[0xF0, 0x0F, 0xC1, 0x08], // lock xadd [rax], ecx
                &[0x87, 0x08],             // xchg [rax], ecx
                &[0xA5],                   // movsd
            ];
            let which = run.rng.below(4) as usize;
            say!("hostile: danger {n}: lapic-mmio-unsupported form {which}");
            fix_apic_base();
            // SAFETY: single vCPU.
            unsafe {
                let exec = &mut *core::ptr::addr_of_mut!(EXEC);
                exec.code = load_code0(FORMS[which]);
                exec.flags = 2;
                exec.regs = [SCRATCH; 16];
                exec.regs[0] = APIC + 0x80;
                exec.regs[6] = APIC + 0x30;
                exec.regs[7] = SCRATCH;
            }
            let _ = guarded(op_exec0, 0);
        }
        _ => {
            let rng = &mut run.rng;
            let addr = match rng.below(6) {
                0 => run.memory + rng.below(1 << 30),
                1 => 0xFEC0_1000 + rng.below(0x1000),
                2 => 0xFED0_0000 + rng.below(0x1000), // where an HPET would be
                3 => 0xC000_0000 + rng.below(0x1000_0000),
                4 => 0xFFFF_F000 + rng.below(0x1000),
                _ => 0x1_0000_0000 + rng.below(1 << 30), // beyond the identity map: #PF
            } & !7;
            let write = rng.chance(50);
            say!("hostile: danger {n}: wild {} at {addr:#x}", if write { "write" } else { "read" });
            let r = mmio(if write { 5 } else { 4 }, addr, 0xDEAD_BEEF);
            say!("hostile: danger {n}: wild access went {}", if r.is_ok() { "through" } else { "to a trap" });
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    say!("hostile64 panicked: {info}");
    exit(0xFF)
}
