//! hello64: the smallest 64-bit guest. It follows Ferrovisor's 64-bit boot protocol
//! (docs/guest-boot.md): long mode, identity-mapped, RSP at the top of RAM, RDI pointing
//! at the boot information. It prints through the debug port 0xE9, checks what CPUID
//! shows a guest, and exits through port 0xF4 with status 0 when all checks passed.
//!
//! The command line picks a test:
//! - (empty): the CPUID checks;
//! - `pattern`: fills 1 MiB of its RAM with a pseudo-random pattern and lingers;
//! - `scan`: looks for that pattern in all of its own RAM (isolation: it must not);
//! - `wild`: writes beyond its memory (the write must go nowhere and read back all
//!   ones), then jumps there (the hypervisor must crash it, nobody else);
//! - `vmxon`: executes VMXON (the hypervisor must answer #UD);
//! - `triple`: triple-faults (the hypervisor must crash it, nobody else);
//! - `apic`: drives its local APIC through the xAPIC MMIO page (EPT violations that
//!   the hypervisor emulates): periodic timer interrupts while halted, an interrupt held
//!   back by CLI and taken right after STI (interrupt-window exiting), CR8 holding back
//!   a lower class, and a one-shot timer;
//! - `spin`: a CPU hog that measures the CPU share it got (the scheduler tests): after a
//!   200 ms warm-up it spins for 2 s of TSC time and counts as "ran" every gap between
//!   two TSC reads shorter than 50 us; longer gaps are time another vCPU had the CPU;
//! - `spin2` (2 vCPUs): the same measurement on both vCPUs (vCPU 1 runs a real-mode
//!   version), reported as one share of one CPU for the domain (up to 200 %);
//! - `hypercall`: exercises the hypercall ABI: version, console write, host information,
//!   and the refusals (privileged call, bad pointer, read-only output, too long, unknown);
//! - `poweroff`: reads the ACPI PM timer and port 0x92, then powers off through the PM1a
//!   control register (S5), as an OS's `poweroff` does;
//! - `platform`: probes the emulated PC: PIC initialisation and mask read-back, PIT
//!   channel 2 timing through port 0x61, the CMOS clock, the PCI host bridge, fw_cfg and
//!   the I/O APIC's version register;
//! - `timer`: device interrupts: the PIT's IRQ 0 through the I/O APIC (pin 2), the
//!   same through the 8259 and LINT0 (virtual wire), and the RTC's periodic IRQ 8
//!   through the I/O APIC, each counted while the vCPU halts between interrupts;
//! - `button`: listens to its ACPI power button (PWRBTN_EN, the SCI on I/O APIC pin 9,
//!   level-triggered) and powers off through S5 when it is pressed (Domain0's
//!   `shutdown`), as an OS does;
//! - `ticker`: a demonstration domain that never ends: prints a line every 5 s on COM1,
//!   its console, from its local APIC timer and halts in between (what `cargo xtask run`
//!   starts by default; Domain0's `console ID` shows it);
//! - `twin`: writes every character to both port 0xE9 and COM1, "\r\n" line ends;
//! - `smp`: starts vCPU 1 with INIT-SIPI-SIPI through the local APIC; vCPU 1 runs a
//!   real-mode program at 0xA000 that prints and counts while vCPU 0 watches it count,
//!   then leaves protected mode on and parks; vCPU 0 starts it again the same way
//!   (INIT must reset it) and watches it count again.
#![no_std]
#![no_main]

use core::arch::asm;
use core::fmt::{self, Write};

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

/// COM1, the domain's console (what Domain0's `console ID` shows): 8N1, written when the
/// transmitter holds nothing, "\n" sent as "\r\n" as a terminal wants it.
struct Com1;

const COM1: u16 = 0x3F8;

impl Com1 {
    fn init() -> Self {
        for (offset, value) in [(3u16, 0x80u8), (0, 1), (1, 0), (3, 3), (2, 0xC7), (4, 0x03)] {
            outb(COM1 + offset, value);
        }
        Com1
    }

    fn put(&self, byte: u8) {
        while inb(COM1 + 5) & 0x20 == 0 {}
        outb(COM1, byte);
    }
}

impl Write for Com1 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
        Ok(())
    }
}

fn exit(status: u8) -> ! {
    outb(EXIT_PORT, status);
    loop {
        // SAFETY: nothing to protect; the hypervisor has ended the domain by now.
        unsafe { asm!("cli", "hlt") };
    }
}

fn cpuid(leaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    [r.eax, r.ebx, r.ecx, r.edx]
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

/// xorshift64: the pattern generator; the scanner regenerates it from the seed instead
/// of keeping a copy, so the only place the pattern can exist is where it was written.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

const PATTERN_SEED: u64 = 0x2545_F491_4F6C_DD1D;
const PATTERN_AT: u64 = 0x40_0000;
const PATTERN_BYTES: u64 = 1 << 20;

fn pattern() -> ! {
    let mut s = PATTERN_SEED;
    for i in 0..PATTERN_BYTES / 8 {
        // SAFETY: 4..5 MiB of our own RAM, identity-mapped, unused by the image.
        unsafe { ((PATTERN_AT + i * 8) as *mut u64).write_volatile(next(&mut s)) };
    }
    let _ = writeln!(Console, "pattern: 1 MiB written at {PATTERN_AT:#x}");
    // Linger so the other domain runs while the pattern is in memory.
    for _ in 0..2_000_000u64 {
        core::hint::spin_loop();
    }
    exit(0)
}

fn scan(memory: u64) -> ! {
    let first = {
        let mut s = PATTERN_SEED;
        next(&mut s)
    };
    let mut found = 0u64;
    let mut addr = 0x1_0000u64;
    while addr + PATTERN_BYTES <= memory {
        // SAFETY: inside our own RAM (below memory_size), identity-mapped.
        if unsafe { (addr as *const u64).read_volatile() } == first {
            let mut s = PATTERN_SEED;
            let whole = (0..512u64).all(|i| unsafe { ((addr + i * 8) as *const u64).read_volatile() } == next(&mut s));
            if whole {
                found += 1;
                let _ = writeln!(Console, "scan: pattern found at {addr:#x}");
            }
        }
        addr += 8;
    }
    let _ = writeln!(
        Console,
        "scan: {} MiB searched, pattern {}",
        memory >> 20,
        if found == 0 { "not found" } else { "FOUND" }
    );
    exit(if found == 0 { 0 } else { 1 })
}

fn wild(memory: u64) -> ! {
    let target = memory + (16 << 20);
    let _ = writeln!(Console, "wild: writing to {target:#x}, beyond my memory");
    // SAFETY: deliberately outside our RAM: nothing is there, so the write goes nowhere
    // (as on a PC) and the read floats to all ones.
    let back = unsafe {
        (target as *mut u64).write_volatile(0xDEAD);
        (target as *const u64).read_volatile()
    };
    if back == u64::MAX {
        let _ = writeln!(Console, "wild: the write went nowhere; it reads all ones");
    } else {
        let _ = writeln!(Console, "wild: the write went through: it reads {back:#x}");
        exit(1)
    }
    let _ = writeln!(Console, "wild: executing at {target:#x}");
    // SAFETY: deliberately fatal: there is no instruction there, so the hypervisor must
    // end the domain.
    unsafe { core::arch::asm!("jmp {}", in(reg) target, options(noreturn)) }
}

/// An IDT whose #UD entry reports and exits 0; every other vector is absent.
#[repr(C, align(16))]
struct Idt([u64; 2 * 32]);
static mut IDT: Idt = Idt([0; 64]);

core::arch::global_asm!(".global ud_entry", "ud_entry:", "and rsp, -16", "call on_ud", "ud2");
unsafe extern "C" {
    fn ud_entry();
}

#[unsafe(no_mangle)]
extern "C" fn on_ud() -> ! {
    let _ = writeln!(Console, "vmxon: raised #UD, as it should in a guest");
    exit(0)
}

fn vmxon() -> ! {
    let handler = ud_entry as *const () as u64;
    // Interrupt gate, present, DPL0, selector 0x08 (SDM Vol. 3A "64-Bit IDT Gate Descriptors").
    let low = (handler & 0xFFFF) | (0x08 << 16) | (0x8E00 << 32) | ((handler >> 16) & 0xFFFF) << 48;
    let high = handler >> 32;
    // SAFETY: single-threaded guest; the IDT is static and lives forever.
    unsafe {
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        idt.0[12] = low;
        idt.0[13] = high;
        let pointer: [u16; 5] = {
            let base = idt.0.as_ptr() as u64;
            [(64 * 8 - 1) as u16, base as u16, (base >> 16) as u16, (base >> 32) as u16, (base >> 48) as u16]
        };
        asm!("lidt [{}]", in(reg) &pointer);
        let region: u64 = 0x1_0000;
        asm!("vmxon [{}]", in(reg) &region);
    }
    let _ = writeln!(Console, "vmxon: did not fault");
    exit(1)
}

const APIC: u64 = 0xFEE0_0000;
const TIMER_VECTOR: u8 = 0x40;

fn apic_read(offset: u64) -> u32 {
    // SAFETY: the xAPIC page: an EPT violation the hypervisor emulates.
    unsafe { ((APIC + offset) as *const u32).read_volatile() }
}

fn apic_write(offset: u64, value: u32) {
    // SAFETY: as in `apic_read`.
    unsafe { ((APIC + offset) as *mut u32).write_volatile(value) }
}

static TICKS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

// The timer interrupt: save the caller-saved registers (the frame leaves RSP 16-byte
// aligned after nine pushes), count, EOI, return.
core::arch::global_asm!(
    ".global timer_entry",
    "timer_entry:",
    "push rax",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "cld",
    "call on_timer",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rax",
    "iretq",
);
unsafe extern "C" {
    fn timer_entry();
}

#[unsafe(no_mangle)]
extern "C" fn on_timer() {
    TICKS.fetch_add(1, core::sync::atomic::Ordering::SeqCst);
    apic_write(0xB0, 0); // EOI
}

/// Puts `handler` in IDT entry `vector` (64-bit interrupt gate, DPL 0) and loads the IDT.
fn set_gate(vector: usize, handler: u64) {
    // Interrupt gate, present, DPL0, selector 0x08 (SDM Vol. 3A "64-Bit IDT Gate Descriptors").
    let low = (handler & 0xFFFF) | (0x08 << 16) | (0x8E00 << 32) | ((handler >> 16) & 0xFFFF) << 48;
    let high = handler >> 32;
    // SAFETY: single-threaded guest; the IDT is static and lives forever.
    unsafe {
        let idt = &mut *core::ptr::addr_of_mut!(APIC_IDT);
        idt.0[vector * 2] = low;
        idt.0[vector * 2 + 1] = high;
        let base = idt.0.as_ptr() as u64;
        let pointer: [u16; 5] =
            [(256 * 16 - 1) as u16, base as u16, (base >> 16) as u16, (base >> 32) as u16, (base >> 48) as u16];
        asm!("lidt [{}]", in(reg) &pointer);
    }
}

#[repr(C, align(16))]
struct FullIdt([u64; 512]);
static mut APIC_IDT: FullIdt = FullIdt([0; 512]);

fn ticks() -> u64 {
    TICKS.load(core::sync::atomic::Ordering::SeqCst)
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Spins for `tsc` ticks with interrupts as they are.
fn spin(tsc: u64) {
    let end = rdtsc() + tsc;
    while rdtsc() < end {
        core::hint::spin_loop();
    }
}

fn check(out: &mut Console, failures: &mut u8, ok: bool, what: core::fmt::Arguments) {
    let _ = writeln!(out, "apic: {} {}", if ok { "ok  " } else { "FAIL" }, what);
    if !ok {
        *failures += 1;
    }
}

fn apic() -> ! {
    let mut out = Console;
    let mut failures = 0u8;
    let id = apic_read(0x20) >> 24;
    let version = apic_read(0x30);
    check(&mut out, &mut failures, id == 0 && version & 0xFF == 0x14, format_args!("id={id} version={version:#x}"));
    // Other instruction forms the hypervisor must decode: a byte load and a 64-bit load.
    let (byte, wide): (u8, u64);
    // SAFETY: reads of the xAPIC page (version register at +0x30).
    unsafe {
        asm!("mov {b}, byte ptr [{p}]", "mov {w}, qword ptr [{p}]", p = in(reg) APIC + 0x30, b = out(reg_byte) byte, w = out(reg) wide)
    };
    check(
        &mut out,
        &mut failures,
        byte == 0x14 && wide == u64::from(version),
        format_args!("byte={byte:#x} qword={wide:#x}"),
    );

    set_gate(TIMER_VECTOR as usize, timer_entry as *const () as u64);
    apic_write(0xF0, 0x1FF); // SVR: software-enable, spurious vector 0xFF
    apic_write(0x3E0, 0b1011); // divide by 1
    apic_write(0x320, u32::from(TIMER_VECTOR) | (1 << 17)); // periodic
    apic_write(0x380, 1_000_000); // 1 ms at the 1 GHz APIC bus
    // 1. Periodic interrupts wake a halted vCPU.
    let start = rdtsc();
    // SAFETY: STI then HLT in a loop; the handler is installed.
    unsafe { asm!("sti") };
    while ticks() < 10 {
        // SAFETY: halts until the next interrupt.
        unsafe { asm!("hlt") };
    }
    let elapsed = rdtsc() - start;
    check(&mut out, &mut failures, true, format_args!("10 periodic interrupts while halting ({elapsed} TSC ticks)"));
    // 2. Held back by CLI, taken at once after STI (interrupt-window exiting).
    // SAFETY: masking interrupts in our own guest.
    unsafe { asm!("cli") };
    let before = ticks();
    spin(elapsed / 2); // about 5 timer periods
    let during = ticks();
    // SAFETY: the one-instruction STI shadow ends after the NOP.
    unsafe { asm!("sti", "nop") };
    let after = ticks();
    check(
        &mut out,
        &mut failures,
        during == before && after > before,
        format_args!("cli held the timer back ({before}->{during}), sti+nop took it ({after})"),
    );
    // 3. CR8 (TPR class 5) holds back vector 0x40 (class 4).
    // SAFETY: raising our own task priority.
    unsafe { asm!("mov cr8, {}", in(reg) 5u64) };
    let before = ticks();
    spin(elapsed / 2);
    let during = ticks();
    // SAFETY: lowering it again.
    unsafe { asm!("mov cr8, {}", in(reg) 0u64) };
    spin(elapsed / 10);
    let after = ticks();
    check(
        &mut out,
        &mut failures,
        during == before && after > before,
        format_args!("cr8=5 held vector 0x40 back ({before}->{during}), cr8=0 let it in ({after})"),
    );
    // 4. One-shot: exactly one more interrupt.
    apic_write(0x320, u32::from(TIMER_VECTOR)); // one-shot (changing mode disarms)
    apic_write(0x380, 500_000);
    let before = ticks();
    // SAFETY: halts until the one-shot fires.
    unsafe { asm!("hlt") };
    spin(elapsed / 2);
    let after = ticks();
    let current = apic_read(0x390);
    check(
        &mut out,
        &mut failures,
        after == before + 1 && current == 0,
        format_args!("one-shot fired once ({before}->{after}), current count {current}"),
    );
    // SAFETY: no more interrupts wanted.
    unsafe { asm!("cli") };
    let _ = writeln!(out, "apic: {failures} check(s) failed");
    exit(failures)
}

fn hog() -> ! {
    hog_with(false)
}

// vCPU 1's half of `spin2`: waits for the go flag at 0xAF0C, then adds every gap between
// two TSC reads below the threshold at 0xAF10 to the 64-bit sum at 0xAF18, until the
// stop flag at 0xAF08; then parks.
core::arch::global_asm!(
    ".section .rodata.ap_spin, \"a\"",
    ".global ap_spin_start",
    ".global ap_spin_end",
    ".code16",
    "ap_spin_start:",
    "cli",
    "xor ax, ax",
    "mov ds, ax",
    "lock inc dword ptr [0xAF00]",
    "ap_spin_wait:",
    "cmp byte ptr [0xAF0C], 0",
    "je ap_spin_wait",
    "rdtsc",
    "mov esi, eax",
    "ap_spin_measure:",
    "rdtsc",
    "mov ebx, eax",
    "sub ebx, esi",
    "mov esi, eax",
    "cmp ebx, dword ptr [0xAF10]",
    "jae ap_spin_gap",
    "add dword ptr [0xAF18], ebx",
    "adc dword ptr [0xAF1C], 0",
    "ap_spin_gap:",
    "cmp byte ptr [0xAF08], 0",
    "je ap_spin_measure",
    "ap_spin_park:",
    "hlt",
    "jmp ap_spin_park",
    "ap_spin_end:",
    ".code64",
    ".text",
);
unsafe extern "C" {
    static ap_spin_start: u8;
    static ap_spin_end: u8;
}

const AP_GO: u64 = 0xAF0C;
const AP_THRESHOLD: u64 = 0xAF10;
const AP_RAN: u64 = 0xAF18;

/// Copies a vCPU 1 program to 0xA000, clears its mailbox and starts vCPU 1 there with
/// INIT-SIPI-SIPI; returns whether it came alive within a second.
fn start_vcpu1(start: u64, end: u64, per_ms: u64) -> bool {
    for i in 0..(end - start) {
        // SAFETY: copying our own rodata into free RAM at 0xA000 (below the image, above the boot area).
        unsafe { ((AP_BASE + i) as *mut u8).write_volatile(((start + i) as *const u8).read()) };
    }
    for a in (AP_ALIVE..AP_RAN + 8).step_by(4) {
        // SAFETY: the mailbox at 0xAF00, in our own RAM.
        unsafe { (a as *mut u32).write_volatile(0) };
    }
    // INIT, then two STARTUPs (SDM Vol. 3A "MP Initialization": INIT-SIPI-SIPI) to APIC ID 1.
    apic_write(0x310, 1 << 24);
    apic_write(0x300, 0x0000_4500);
    for _ in 0..2 {
        apic_write(0x310, 1 << 24);
        apic_write(0x300, 0x0000_4600 | (AP_BASE >> 12) as u32);
    }
    let deadline = rdtsc() + 1000 * per_ms;
    while peek(AP_ALIVE) == 0 && rdtsc() < deadline {
        core::hint::spin_loop();
    }
    peek(AP_ALIVE) == 1
}

fn hog_with(two_vcpus: bool) -> ! {
    let mut out = Console;
    // TSC ticks per ms from the hypervisor's timing leaf.
    let per_ms = u64::from(cpuid(0x4000_0010)[0]);
    if per_ms == 0 {
        let _ = writeln!(out, "spin: no timing leaf");
        exit(1);
    }
    let threshold = per_ms / 20; // 50 us
    if two_vcpus {
        let (start, end) = (&raw const ap_spin_start as u64, &raw const ap_spin_end as u64);
        if !start_vcpu1(start, end, per_ms) {
            let _ = writeln!(out, "spin: vcpu1 did not start");
            exit(1);
        }
        // SAFETY: the mailbox in our own RAM; vCPU 1 reads it once measuring.
        unsafe { (AP_THRESHOLD as *mut u32).write_volatile(threshold as u32) };
    }
    let warm_end = rdtsc() + 200 * per_ms;
    while rdtsc() < warm_end {
        core::hint::spin_loop();
    }
    // SAFETY: tells vCPU 1 to start measuring.
    unsafe { (AP_GO as *mut u8).write_volatile(1) };
    let window = 2000 * per_ms;
    let end = warm_end + window;
    let (mut last, mut ran, mut iterations) = (rdtsc(), 0u64, 0u64);
    loop {
        let t = rdtsc();
        let dt = t - last;
        if dt < threshold {
            ran += dt;
        }
        last = t;
        iterations += 1;
        if t >= end {
            break;
        }
    }
    if two_vcpus {
        // SAFETY: tells vCPU 1 to stop, then reads its sum (it stops within one loop).
        unsafe { (AP_STOP as *mut u8).write_volatile(1) };
        spin(per_ms);
        ran += u64::from(peek(AP_RAN)) | u64::from(peek(AP_RAN + 4)) << 32;
    }
    let permille = ran * 1000 / window;
    let _ = writeln!(
        out,
        "spin: share={}.{}% of one CPU over 2000 ms ({iterations} iterations)",
        permille / 10,
        permille % 10
    );
    exit(0)
}

// vCPU 1's program, copied to 0xA000 and started there by STARTUP vector 0x0A
// (CS = 0x0A00, IP = 0). It announces itself, counts at 0xAF04 until vCPU 0 sets the
// byte at 0xAF08, then halts with interrupts off (a parked CPU).
core::arch::global_asm!(
    ".section .rodata.ap_program, \"a\"",
    ".global ap_program_start",
    ".global ap_program_end",
    ".code16",
    "ap_program_start:",
    // A two-byte short jump over the message, so the message sits at 0xA002.
    "jmp ap_code",
    ".asciz \"smp: hello from vcpu1 in real mode\\n\"",
    "ap_code:",
    "cli",
    "xor ax, ax",
    "mov ds, ax",
    "lock inc dword ptr [0xAF00]",
    "mov si, 0xA002",
    "mov dx, 0xE9",
    "ap_print:",
    "lodsb",
    "test al, al",
    "jz ap_count",
    "out dx, al",
    "jmp ap_print",
    "ap_count:",
    "inc dword ptr [0xAF04]",
    "cmp byte ptr [0xAF08], 0",
    "je ap_count",
    // Leave the CPU in a state only INIT undoes (SDM Vol. 3A "Processor State After
    // Reset"): protected mode on, the direction flag set. Started again with
    // INIT-SIPI-SIPI, it must begin in real mode with DF clear, or it prints garbage
    // (LODSB backwards) or never runs.
    "std",
    "mov eax, cr0",
    "or al, 1",
    "mov cr0, eax",
    "ap_park:",
    "hlt",
    "jmp ap_park",
    "ap_program_end:",
    ".code64",
    ".text",
);
unsafe extern "C" {
    static ap_program_start: u8;
    static ap_program_end: u8;
}

const AP_BASE: u64 = 0xA000;
const AP_ALIVE: u64 = 0xAF00;
const AP_COUNT: u64 = 0xAF04;
const AP_STOP: u64 = 0xAF08;

fn peek(addr: u64) -> u32 {
    // SAFETY: our own RAM below 64 KiB, identity-mapped; vCPU 1 writes it concurrently.
    unsafe { (addr as *const u32).read_volatile() }
}

fn smp() -> ! {
    let mut out = Console;
    // The linker places both symbols around the program's bytes.
    let (start, end) = (&raw const ap_program_start as u64, &raw const ap_program_end as u64);
    let per_ms = u64::from(cpuid(0x4000_0010)[0]).max(1);
    start_vcpu1(start, end, per_ms);
    let alive = peek(AP_ALIVE);
    let before = peek(AP_COUNT);
    spin(50 * per_ms);
    let after = peek(AP_COUNT);
    // SAFETY: tells vCPU 1 to stop counting.
    unsafe { (AP_STOP as *mut u8).write_volatile(1) };
    let _ = writeln!(out, "smp: vcpu1 alive={alive}, counted {before} -> {after} while vcpu0 waited 50 ms");
    let mut ok = alive == 1 && after > before;
    // Online it again, as an OS does after CPU hot-unplug or kexec: INIT must reset it.
    spin(10 * per_ms);
    let again = start_vcpu1(start, end, per_ms);
    let before = peek(AP_COUNT);
    spin(50 * per_ms);
    let after = peek(AP_COUNT);
    // SAFETY: as above.
    unsafe { (AP_STOP as *mut u8).write_volatile(1) };
    let _ = writeln!(out, "smp: vcpu1 started again after INIT: alive={again}, counted {before} -> {after}");
    ok &= again && after > before;
    let _ = writeln!(out, "smp: {}", if ok { "both vCPUs ran" } else { "FAILED" });
    exit(if ok { 0 } else { 1 })
}

fn hypercalls(memory: u64) -> ! {
    use abi::hypercall::{Call, Error, HostInfo, VERSION};
    let mut out = Console;
    let mut failures = 0u8;
    let mut expect = |what: &str, got: Result<u64, i64>, want: Result<u64, i64>| {
        let ok = got == want;
        let _ = writeln!(out, "hypercall: {} {what}: {got:?}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            failures += 1;
        }
    };
    let version = hv(Call::Version, [0; 6]);
    expect("version", version, Ok(u64::from(VERSION)));
    let msg = b"hello through the hypercall console\n";
    let written = hv(Call::ConsoleWrite, [msg.as_ptr() as u64, msg.len() as u64, 0, 0, 0, 0]);
    expect("console write", written, Ok(msg.len() as u64));
    let mut info = HostInfo::default();
    let r = hv(Call::HostInfo, [&raw mut info as u64, 0, 0, 0, 0, 0]);
    expect("host info", r, Ok(0));
    let _ = writeln!(
        Console,
        "hypercall: host has {} CPU(s), {} domain(s), {} MiB free of {} MiB, TSC {} kHz",
        info.cpus,
        info.domains,
        info.memory_free >> 20,
        info.memory_total >> 20,
        info.tsc_khz
    );
    // A DomU sees no other domain and no host memory: its own RAM is the total.
    let info_ok =
        info.cpus >= 1 && info.domains == 0 && info.memory_free == 0 && info.memory_total == memory && info.tsc_khz > 0;
    expect("host info is plausible", Ok(u64::from(info_ok)), Ok(1));
    let eperm = Err(Error::NotPermitted.code());
    expect("domain destroy is privileged", hv(Call::DomainDestroy, [1, 0, 0, 0, 0, 0]), eperm);
    expect("host power-off is privileged", hv(Call::HostPowerOff, [0; 6]), eperm);
    // 1 GiB: beyond our 16 MiB, mapped by our page tables but not RAM. Non-canonical next.
    let far = hv(Call::ConsoleWrite, [0x4000_0000, 16, 0, 0, 0, 0]);
    expect("a buffer outside guest RAM", far, Err(Error::Fault.code()));
    let bad = hv(Call::HostInfo, [0x8000_0000_0000_0000, 0, 0, 0, 0, 0]);
    expect("a non-canonical output pointer", bad, Err(Error::Fault.code()));
    let long = hv(Call::ConsoleWrite, [msg.as_ptr() as u64, 1 << 20, 0, 0, 0, 0]);
    expect("a 1 MiB console write", long, Err(Error::TooBig.code()));
    expect("an unknown call", vmcall_raw(1000), Err(Error::NoSys.code()));
    let _ = writeln!(Console, "hypercall: {failures} check(s) failed");
    exit(failures)
}

/// A hypercall from this guest. Safe here: VMCALL changes only RAX, and the hypervisor
/// checks every pointer (the tests pass ours, or deliberately bad ones it must refuse).
fn hv(call: abi::hypercall::Call, args: [u64; 6]) -> Result<u64, i64> {
    // SAFETY: CPL 0 under Ferrovisor; see above for the pointers.
    unsafe { abi::hypercall::client::vmcall(call, args) }
}

/// A VMCALL with a number no `Call` has.
fn vmcall_raw(number: u64) -> Result<u64, i64> {
    let ret: i64;
    // SAFETY: VMCALL under Ferrovisor changes only RAX.
    unsafe { asm!("vmcall", inlateout("rax") number as i64 => ret, options(nostack)) };
    if ret < 0 { Err(ret) } else { Ok(ret as u64) }
}

fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: port input in a guest only causes a VM exit the hypervisor handles.
    unsafe { asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack)) };
    v
}

fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as in `inl`.
    unsafe { asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack)) };
    v
}

fn outl(port: u16, value: u32) {
    // SAFETY: port output in a guest only causes a VM exit the hypervisor handles.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack)) };
}

fn outw(port: u16, value: u16) {
    // SAFETY: as in `outl`.
    unsafe { asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack)) };
}

fn cmos(index: u8) -> u8 {
    outb(0x70, index);
    inb(0x71)
}

fn platform() -> ! {
    let mut out = Console;
    let mut failures = 0u8;
    let mut check = |ok: bool, what: core::fmt::Arguments| {
        let _ = writeln!(out, "platform: {} {what}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            failures += 1;
        }
    };
    // PIC: the BIOS/Linux initialisation, then the mask reads back.
    for (port, v) in
        [(0x20, 0x11), (0xA0, 0x11), (0x21, 0x20), (0xA1, 0x28), (0x21, 4), (0xA1, 2), (0x21, 1), (0xA1, 1)]
    {
        outb(port, v);
    }
    outb(0x21, 0xFB);
    outb(0xA1, 0xFF);
    let (m, sl) = (inb(0x21), inb(0xA1));
    check(m == 0xFB && sl == 0xFF, format_args!("pic masks read back {m:#x} {sl:#x}"));
    // PIT channel 2, mode 0, 11932 counts (10 ms), gated by port 0x61 bit 0; OUT2 in bit 5:
    // the calibration Linux and our own hypervisor do.
    let gate = inb(0x61);
    outb(0x61, (gate & !0x02) | 0x01);
    outb(0x43, 0b1011_0000);
    outb(0x42, (11932u16 & 0xFF) as u8);
    outb(0x42, (11932u16 >> 8) as u8);
    let start = rdtsc();
    let mut polls = 0u64;
    while inb(0x61) & 0x20 == 0 && polls < 10_000_000 {
        polls += 1;
    }
    let per_ms = u64::from(cpuid(0x4000_0010)[0]).max(1);
    let us = (rdtsc() - start) * 1000 / per_ms;
    check((9_000..11_500).contains(&us), format_args!("pit channel 2 counted 10 ms in {us} us"));
    // CMOS clock (BCD): a plausible date.
    let (year, century, month, day) = (cmos(0x09), cmos(0x32), cmos(0x08), cmos(0x07));
    let bcd = |v: u8| (v >> 4) * 10 + (v & 0xF);
    let full_year = u32::from(bcd(century)) * 100 + u32::from(bcd(year));
    check(
        full_year >= 2024 && (1..=12).contains(&bcd(month)) && (1..=31).contains(&bcd(day)),
        format_args!("rtc date {full_year}-{:02}-{:02}", bcd(month), bcd(day)),
    );
    // PCI configuration mechanism #1: the i440FX host bridge at 00:00.0, nothing at 00:01.0.
    outl(0xCF8, 0x8000_0000);
    let id = inl(0xCFC);
    outl(0xCF8, 0x8000_0800);
    let none = inl(0xCFC);
    check(id == 0x1237_8086 && none == 0xFFFF_FFFF, format_args!("pci 00:00.0 {id:#x}, 00:01.0 {none:#x}"));
    // The whole of bus 0: the host bridge is the only device a DomU sees.
    let present = (0..32u32)
        .filter(|dev| {
            outl(0xCF8, 0x8000_0000 | dev << 11);
            inl(0xCFC) & 0xFFFF != 0xFFFF
        })
        .count();
    check(present == 1, format_args!("pci bus 0 has {present} device(s)"));
    // fw_cfg: signature and CPU count.
    outw(0x510, 0);
    let sig = [inb(0x511), inb(0x511), inb(0x511), inb(0x511)];
    outw(0x510, 5);
    let cpus = u16::from(inb(0x511)) | u16::from(inb(0x511)) << 8;
    check(
        &sig == b"QEMU" && cpus == 1,
        format_args!("fw_cfg signature {:?}, {cpus} CPU(s)", core::str::from_utf8(&sig).unwrap_or("?")),
    );
    // I/O APIC version through IOREGSEL/IOWIN (MMIO, emulated).
    // SAFETY: the I/O APIC page at 0xFEC00000: EPT violations the hypervisor emulates.
    let version = unsafe {
        (0xFEC0_0000 as *mut u32).write_volatile(1);
        (0xFEC0_0010 as *const u32).read_volatile()
    };
    check(version == 0x0017_0020, format_args!("ioapic version {version:#x}"));
    let _ = writeln!(Console, "platform: {failures} check(s) failed");
    exit(failures)
}

// Device interrupt handlers for `timer`: the same register-saving frame as
// `timer_entry`, each calling its own counter.
macro_rules! irq_stub {
    ($entry:literal, $handler:literal) => {
        core::arch::global_asm!(
            concat!(".global ", $entry),
            concat!($entry, ":"),
            "push rax",
            "push rcx",
            "push rdx",
            "push rsi",
            "push rdi",
            "push r8",
            "push r9",
            "push r10",
            "push r11",
            "cld",
            concat!("call ", $handler),
            "pop r11",
            "pop r10",
            "pop r9",
            "pop r8",
            "pop rdi",
            "pop rsi",
            "pop rdx",
            "pop rcx",
            "pop rax",
            "iretq",
        );
    };
}
irq_stub!("pit_ioapic_entry", "on_pit_ioapic");
irq_stub!("pit_pic_entry", "on_pit_pic");
irq_stub!("rtc_entry", "on_rtc");
irq_stub!("sci_entry", "on_sci");
unsafe extern "C" {
    fn pit_ioapic_entry();
    fn pit_pic_entry();
    fn rtc_entry();
    fn sci_entry();
}

static PIT_IOAPIC: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
static PIT_PIC: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
static RTC: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

#[unsafe(no_mangle)]
extern "C" fn on_pit_ioapic() {
    PIT_IOAPIC.fetch_add(1, core::sync::atomic::Ordering::SeqCst);
    apic_write(0xB0, 0);
}

#[unsafe(no_mangle)]
extern "C" fn on_pit_pic() {
    PIT_PIC.fetch_add(1, core::sync::atomic::Ordering::SeqCst);
    outb(0x20, 0x20); // non-specific EOI to the master 8259
}

static BUTTON: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

#[unsafe(no_mangle)]
extern "C" fn on_sci() {
    let status = inw(0x600);
    if status & (1 << 8) != 0 {
        BUTTON.fetch_add(1, core::sync::atomic::Ordering::SeqCst);
    }
    outw(0x600, status); // write one to clear: the SCI goes low
    apic_write(0xB0, 0);
}

fn inw(port: u16) -> u16 {
    let v: u16;
    // SAFETY: port input in a guest only causes a VM exit the hypervisor handles.
    unsafe { asm!("in ax, dx", in("dx") port, out("ax") v, options(nomem, nostack)) };
    v
}

/// Waits for the ACPI power button, then powers off as an OS would.
fn button() -> ! {
    set_gate(0x49, sci_entry as *const () as u64);
    // I/O APIC pin 9: the SCI, level-triggered, active high (the MADT's override).
    // SAFETY: the I/O APIC page: EPT violations the hypervisor emulates.
    unsafe {
        (IOAPIC as *mut u32).write_volatile(0x10 + 2 * 9 + 1);
        ((IOAPIC + 0x10) as *mut u32).write_volatile(0);
        (IOAPIC as *mut u32).write_volatile(0x10 + 2 * 9);
        ((IOAPIC + 0x10) as *mut u32).write_volatile(0x49 | 1 << 15);
    }
    outw(0x602, 1 << 8); // PM1_EN: PWRBTN_EN
    let _ = writeln!(Console, "button: waiting for the ACPI power button");
    while BUTTON.load(core::sync::atomic::Ordering::SeqCst) == 0 {
        // SAFETY: halts until the next interrupt; the handler is installed.
        unsafe { asm!("sti", "hlt", "cli") };
    }
    let _ = writeln!(Console, "button: power button pressed; powering off");
    // SAFETY: PM1a_CNT (FADT): SLP_TYP = 5 (the DSDT's \_S5), SLP_EN.
    unsafe { asm!("out dx, ax", in("dx") 0x604u16, in("ax") (5u16 << 10) | (1 << 13), options(nomem, nostack)) };
    exit(1)
}

#[unsafe(no_mangle)]
extern "C" fn on_rtc() {
    RTC.fetch_add(1, core::sync::atomic::Ordering::SeqCst);
    cmos(0x0C); // reading register C acknowledges the RTC's interrupt
    apic_write(0xB0, 0);
}

const IOAPIC: u64 = 0xFEC0_0000;

/// Sets I/O APIC redirection entry `pin` (edge, active high, fixed, physical APIC 0).
fn ioapic_route(pin: u32, vector: u8, masked: bool) {
    let low = u32::from(vector) | if masked { 1 << 16 } else { 0 };
    // SAFETY: the I/O APIC page: EPT violations the hypervisor emulates.
    unsafe {
        (IOAPIC as *mut u32).write_volatile(0x10 + 2 * pin + 1);
        ((IOAPIC + 0x10) as *mut u32).write_volatile(0);
        (IOAPIC as *mut u32).write_volatile(0x10 + 2 * pin);
        ((IOAPIC + 0x10) as *mut u32).write_volatile(low);
    }
}

/// Halts with interrupts on until `counter` reaches `n` (or 5 s of TSC time pass);
/// returns the microseconds it took.
fn halt_until(counter: &core::sync::atomic::AtomicU64, n: u64) -> u64 {
    let per_ms = u64::from(cpuid(0x4000_0010)[0]).max(1);
    let start = rdtsc();
    while counter.load(core::sync::atomic::Ordering::SeqCst) < n && rdtsc() - start < 5000 * per_ms {
        // SAFETY: halts until the next interrupt; the handlers are installed.
        unsafe { asm!("sti", "hlt", "cli") };
    }
    (rdtsc() - start) * 1000 / per_ms
}

fn timer() -> ! {
    use core::sync::atomic::Ordering::SeqCst;
    let mut out = Console;
    let mut failures = 0u8;
    let mut check = |ok: bool, what: core::fmt::Arguments| {
        let _ = writeln!(out, "timer: {} {what}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            failures += 1;
        }
    };
    set_gate(0x20, pit_pic_entry as *const () as u64);
    set_gate(0x41, pit_ioapic_entry as *const () as u64);
    set_gate(0x48, rtc_entry as *const () as u64);
    // The 8259 pair at 0x20/0x28, everything masked for now.
    for (port, v) in
        [(0x20, 0x11), (0xA0, 0x11), (0x21, 0x20), (0xA1, 0x28), (0x21, 4), (0xA1, 2), (0x21, 1), (0xA1, 1)]
    {
        outb(port, v);
    }
    outb(0x21, 0xFF);
    outb(0xA1, 0xFF);
    // The PIT at 100 Hz (mode 2, 11932 counts).
    outb(0x43, 0x34);
    outb(0x40, (11932u16 & 0xFF) as u8);
    outb(0x40, (11932u16 >> 8) as u8);
    // 1. IRQ 0 through the I/O APIC: the MADT's override puts it on pin 2.
    ioapic_route(2, 0x41, false);
    let us = halt_until(&PIT_IOAPIC, 20);
    let n = PIT_IOAPIC.load(SeqCst);
    check(n >= 20 && (150_000..400_000).contains(&us), format_args!("pit via ioapic pin 2: {n} interrupts in {us} us"));
    ioapic_route(2, 0x41, true);
    // 2. The same line through the 8259 and LINT0 (virtual wire, as firmware leaves it).
    outb(0x21, 0xFE);
    let us = halt_until(&PIT_PIC, 20);
    let n = PIT_PIC.load(SeqCst);
    check(n >= 20 && (150_000..400_000).contains(&us), format_args!("pit via 8259 irq 0: {n} interrupts in {us} us"));
    outb(0x21, 0xFF);
    let stray = PIT_IOAPIC.load(SeqCst);
    check(stray == 20 || stray == 21, format_args!("masked ioapic pin sent nothing more ({stray})"));
    // 3. The RTC's periodic interrupt (rate 6: 1024 Hz) on pin 8.
    ioapic_route(8, 0x48, false);
    outb(0x70, 0x0A);
    outb(0x71, 0x26);
    outb(0x70, 0x0B);
    let b = inb(0x71);
    outb(0x70, 0x0B);
    outb(0x71, b | 0x40); // PIE
    let us = halt_until(&RTC, 64);
    let n = RTC.load(SeqCst);
    check(
        n >= 64 && (40_000..200_000).contains(&us),
        format_args!("rtc periodic via ioapic pin 8: {n} interrupts in {us} us"),
    );
    outb(0x70, 0x0B);
    outb(0x71, b & !0x40);
    let _ = writeln!(Console, "timer: {failures} check(s) failed");
    exit(failures)
}

fn ticker() -> ! {
    let mut com1 = Com1::init();
    set_gate(TIMER_VECTOR as usize, timer_entry as *const () as u64);
    apic_write(0xF0, 0x1FF);
    apic_write(0x3E0, 0b1011); // divide by 1
    apic_write(0x320, u32::from(TIMER_VECTOR) | (1 << 17)); // periodic
    apic_write(0x380, 100_000_000); // 100 ms at the 1 GHz APIC bus
    let mut next = 50;
    loop {
        // SAFETY: halts until the next timer interrupt; the handler is installed.
        unsafe { asm!("sti", "hlt", "cli") };
        if ticks() >= next {
            let _ = writeln!(com1, "ticker: {} s", ticks() / 10);
            next += 50;
        }
    }
}

/// Writes each character to both port 0xE9 and COM1, lines ending in "\r\n", as many
/// hobby and test kernels do: the hypervisor must log one clean line per line in each
/// stream, never a character twice nor an empty line for the "\r".
fn twin() -> ! {
    let com1 = Com1::init();
    for line in ["twin: first line", "twin: second line", "twin: done"] {
        for b in line.bytes().chain(*b"\r\n") {
            outb(DEBUG_PORT, b);
            com1.put(b);
        }
    }
    exit(0)
}

fn poweroff() -> ! {
    let mut out = Console;
    let t0 = inl(0x608) & 0xFF_FFFF;
    spin(u64::from(cpuid(0x4000_0010)[0]));
    let t1 = inl(0x608) & 0xFF_FFFF;
    let ticks = t1.wrapping_sub(t0) & 0xFF_FFFF;
    let a20 = inb(0x92) & 2 != 0;
    outb(0x80, 0x55);
    let _ = writeln!(out, "poweroff: pm timer advanced {ticks} ticks in 1 ms, a20={a20}");
    if !(3000..4200).contains(&ticks) || !a20 {
        exit(1);
    }
    let _ = writeln!(out, "poweroff: entering S5");
    // SAFETY: PM1a_CNT (FADT): SLP_TYP = 5 (the DSDT's \_S5), SLP_EN.
    unsafe { asm!("out dx, ax", in("dx") 0x604u16, in("ax") (5u16 << 10) | (1 << 13), options(nomem, nostack)) };
    let _ = writeln!(out, "poweroff: still running");
    exit(1)
}

fn triple() -> ! {
    let _ = writeln!(Console, "triple: loading an empty IDT and faulting");
    let pointer: [u16; 5] = [0; 5];
    // SAFETY: deliberately fatal for this guest: #UD with no IDT -> #DF -> triple fault.
    unsafe { asm!("lidt [{}]", "ud2", in(reg) &pointer) };
    exit(1)
}

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(boot_info: u64) -> ! {
    let mut out = Console;
    // SAFETY: the hypervisor put the boot information at RDI (boot protocol).
    let info = unsafe { &*(boot_info as *const BootInfo) };
    // SAFETY: the command line lies in the boot area, `cmdline_len` bytes long.
    let cmdline = unsafe { core::slice::from_raw_parts(info.cmdline as *const u8, info.cmdline_len as usize) };
    match cmdline {
        b"pattern" => pattern(),
        b"scan" => scan(info.memory_size),
        b"wild" => wild(info.memory_size),
        b"vmxon" => vmxon(),
        b"triple" => triple(),
        b"apic" => apic(),
        b"spin" => hog(),
        b"spin2" => hog_with(true),
        b"smp" => smp(),
        b"poweroff" => poweroff(),
        b"platform" => platform(),
        b"timer" => timer(),
        b"ticker" => ticker(),
        b"twin" => twin(),
        b"button" => button(),
        b"hypercall" => hypercalls(info.memory_size),
        _ => {}
    }
    let _ = writeln!(out, "hello from a 64-bit guest (boot info at {boot_info:#x})");
    let mut failures = 0u8;
    let leaf1 = cpuid(1);
    let vmx = leaf1[2] & (1 << 5) != 0;
    let hv = leaf1[2] & (1 << 31) != 0;
    let base = cpuid(0x4000_0000);
    let mut sig = [0u8; 12];
    sig[..4].copy_from_slice(&base[1].to_le_bytes());
    sig[4..8].copy_from_slice(&base[2].to_le_bytes());
    sig[8..].copy_from_slice(&base[3].to_le_bytes());
    let sig = core::str::from_utf8(&sig).unwrap_or("?").trim_end_matches('\0');
    let _ = writeln!(out, "cpuid: vmx={vmx} hypervisor={hv} signature={sig:?} max_leaf={:#x}", base[0]);
    if vmx || !hv || sig != "Ferrovisor" {
        failures += 1;
    }
    // CR8 is virtual: what the guest writes it reads back, and the host's TPR is untouched.
    let cr8: u64;
    // SAFETY: CR8 only sets which interrupt classes this vCPU accepts; restored to 0 at once.
    unsafe { asm!("mov cr8, {0}", "mov {1}, cr8", "mov cr8, {2}", in(reg) 5u64, out(reg) cr8, in(reg) 0u64) };
    let _ = writeln!(out, "cr8: wrote 5, read {cr8}");
    if cr8 != 5 {
        failures += 1;
    }
    let _ = writeln!(out, "hello64: {} check(s) failed", failures);
    exit(failures)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let _ = writeln!(Console, "hello64 panicked: {info}");
    exit(0xFF)
}
