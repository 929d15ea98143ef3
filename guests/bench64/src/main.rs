//! bench64: micro-benchmarks of the hypervisor as a 64-bit guest sees them, for
//! `cargo xtask bench` (docs/benchmarks.md). It follows Ferrovisor's 64-bit boot protocol
//! (docs/guest-boot.md) like `hello64`, prints through the debug port 0xE9 and exits
//! through port 0xF4.
//!
//! Every timed region is `lfence; rdtsc; lfence` .. operation .. `lfence; rdtsc`. Each
//! benchmark warms up, then times `ITERATIONS` operations one by one, subtracts the
//! median cost of an empty timed region (reported as `overhead`) and prints
//!
//! ```text
//! bench: NAME median=X min=Y max=Z n=N
//! ```
//!
//! The command line picks the mode:
//! - (empty): the exit round trips (CPUID, VMCALL, port read, RDMSR, MMIO read), the
//!   local APIC timer's interrupt delivery, and `bench-first: tsc=T`, the TSC of the
//!   guest's very first instruction (for domain create to first instruction);
//! - `switch`: spins reading the TSC for `SWITCH_WINDOW_MS` and prints every gap longer
//!   than `GAP_TICKS` as a pair `LAST FIRST` (the last TSC read before the gap, the first
//!   after it), several to a `bench-switch: gaps ...` line. Two such domains on one CPU take turns, and `cargo xtask
//!   bench` pairs one domain's gaps with the other's to get the vCPU switch time.
//! - `share`: one of three CPU-bound domains of different weights on one CPU. After
//!   `SHARE_WARMUP_MS` of wall time it counts its own CPU time for `SHARE_WINDOW_MS`
//!   (TSC steps shorter than `GAP_TICKS`: a longer step is time it did not have) and
//!   prints `bench-share: ran=R window=W` in TSC ticks; `cargo xtask bench` compares
//!   the three domains' shares with their weights.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use core::fmt::{self, Write};
use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};

const DEBUG_PORT: u16 = 0xE9;
const EXIT_PORT: u16 = 0xF4;
/// COM1's line status register: an emulated 16550 register.
const UART_LSR: u16 = 0x3FD;
const IA32_APIC_BASE: u32 = 0x1B;
const IA32_TSC_DEADLINE: u32 = 0x6E0;
/// The xAPIC page and the registers used here.
const APIC: u64 = 0xFEE0_0000;
const APIC_VERSION: u64 = 0x30;
const APIC_SVR: u64 = 0xF0;
const APIC_LVT_TIMER: u64 = 0x320;
/// LVT timer mode field (bits 18:17) = 10b: TSC-deadline.
const LVT_TSC_DEADLINE: u32 = 0b10 << 17;
const TIMER_VECTOR: usize = 0x40;

const WARMUP: usize = 100;
const ITERATIONS: usize = 1000;
const IRQ_ITERATIONS: usize = 200;
/// How far ahead each TSC deadline is set: well beyond the cost of the WRMSR exit.
const IRQ_LEAD_TICKS: u64 = 50_000;
/// An interrupt that has not arrived after this many ticks past its deadline is lost.
const IRQ_TIMEOUT_TICKS: u64 = 100_000_000;

const SWITCH_WINDOW_MS: u64 = 300;
const GAP_TICKS: u64 = 300;
/// `share`: time to let the scheduler settle, then the measured window (wall time).
const SHARE_WARMUP_MS: u64 = 300;
const SHARE_WINDOW_MS: u64 = 3000;
const MAX_GAPS: usize = 512;
/// Gaps per console line (a line holds at most 160 characters).
const GAPS_PER_LINE: usize = 4;

fn outb(port: u16, value: u8) {
    // SAFETY: port output in a guest only causes a VM exit the hypervisor handles.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) };
}

fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: port input in a guest only causes a VM exit the hypervisor handles.
    unsafe { asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags)) };
    v
}

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the MSRs read here are ones the hypervisor emulates; reading has no side effects.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    u64::from(hi) << 32 | u64::from(lo)
}

fn wrmsr(msr: u32, value: u64) {
    // SAFETY: only IA32_TSC_DEADLINE is written, which arms our own local APIC timer.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nomem, nostack, preserves_flags))
    };
}

fn apic_read(offset: u64) -> u32 {
    // SAFETY: the xAPIC page: an EPT violation the hypervisor emulates.
    unsafe { ((APIC + offset) as *const u32).read_volatile() }
}

fn apic_write(offset: u64, value: u32) {
    // SAFETY: as in `apic_read`.
    unsafe { ((APIC + offset) as *mut u32).write_volatile(value) }
}

/// The start of a timed region: earlier instructions finish before the TSC is read, and
/// later ones start after.
#[inline(always)]
fn tsc_start() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: LFENCE and RDTSC only order instructions and read the time-stamp counter.
    unsafe {
        asm!("lfence", "rdtsc", "lfence", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    u64::from(hi) << 32 | u64::from(lo)
}

/// The end of a timed region: the operation has finished before the TSC is read.
#[inline(always)]
fn tsc_stop() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: as in `tsc_start`.
    unsafe { asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    u64::from(hi) << 32 | u64::from(lo)
}

struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(|b| outb(DEBUG_PORT, b));
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

/// Median (the mean of the middle two for an even count), minimum and maximum; sorts.
fn summarise(samples: &mut [u64]) -> (u64, u64, u64) {
    samples.sort_unstable();
    let n = samples.len();
    if n == 0 {
        return (0, 0, 0);
    }
    let median = if n % 2 == 1 { samples[n / 2] } else { (samples[n / 2 - 1] + samples[n / 2]) / 2 };
    (median, samples[0], samples[n - 1])
}

fn report(name: &str, samples: &mut [u64]) {
    let (median, min, max) = summarise(samples);
    let _ = writeln!(Console, "bench: {name} median={median} min={min} max={max} n={}", samples.len());
}

/// Times `op` ITERATIONS times after WARMUP untimed runs; each sample less `overhead`.
#[inline(always)]
fn measure(name: &str, overhead: u64, mut op: impl FnMut()) -> u64 {
    for _ in 0..WARMUP {
        op();
    }
    let mut samples = [0u64; ITERATIONS];
    for s in samples.iter_mut() {
        let t0 = tsc_start();
        op();
        let t1 = tsc_stop();
        *s = (t1 - t0).saturating_sub(overhead);
    }
    report(name, &mut samples);
    samples[ITERATIONS / 2]
}

/// The TSC the timer handler read; 0 while no interrupt has come.
static IRQ_TSC: AtomicU64 = AtomicU64::new(0);

// The timer interrupt: read the TSC first (LFENCE so nothing earlier is pending), store
// it, EOI through the xAPIC page (after the timestamp, so its exit is not counted).
global_asm!(
    ".global bench_timer_entry",
    "bench_timer_entry:",
    "push rax",
    "push rdx",
    "lfence",
    "rdtsc",
    "shl rdx, 32",
    "or rax, rdx",
    "mov qword ptr [rip + {irq_tsc}], rax",
    "mov rax, 0xFEE000B0",
    "xor edx, edx",
    "mov dword ptr [rax], edx",
    "pop rdx",
    "pop rax",
    "iretq",
    irq_tsc = sym IRQ_TSC,
);
unsafe extern "C" {
    fn bench_timer_entry();
}

#[repr(C, align(16))]
struct Idt([u64; 512]);
static mut IDT: Idt = Idt([0; 512]);

/// Puts `handler` in IDT entry `vector` (64-bit interrupt gate, DPL 0) and loads the IDT.
fn set_gate(vector: usize, handler: u64) {
    // Interrupt gate, present, DPL0, selector 0x08 (SDM Vol. 3A "64-Bit IDT Gate Descriptors").
    let low = (handler & 0xFFFF) | (0x08 << 16) | (0x8E00 << 32) | ((handler >> 16) & 0xFFFF) << 48;
    let high = handler >> 32;
    // SAFETY: single-threaded guest with interrupts off; the IDT is static and lives forever.
    unsafe {
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        idt.0[vector * 2] = low;
        idt.0[vector * 2 + 1] = high;
        let base = idt.0.as_ptr() as u64;
        let pointer: [u16; 5] =
            [(256 * 16 - 1) as u16, base as u16, (base >> 16) as u16, (base >> 32) as u16, (base >> 48) as u16];
        asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack, preserves_flags));
    }
}

/// How the vCPU waits for the timer interrupt.
#[derive(Clone, Copy)]
enum Wait {
    /// Running with interrupts enabled: the hypervisor's preemption timer catches the
    /// deadline while the guest runs.
    Spin,
    /// Halted: the vCPU is blocked and the hypervisor wakes it.
    Halt,
}

/// APIC timer in TSC-deadline mode: the latency from the deadline to the first
/// instruction of the handler (its RDTSC). Returns the number of lost interrupts.
fn interrupt_latency(name: &str, wait: Wait) -> u32 {
    let mut samples = [0u64; IRQ_ITERATIONS];
    let mut lost = 0;
    let mut early = 0;
    for i in 0..WARMUP / 10 + IRQ_ITERATIONS {
        IRQ_TSC.store(0, Ordering::SeqCst);
        let deadline = tsc_start() + IRQ_LEAD_TICKS;
        wrmsr(IA32_TSC_DEADLINE, deadline);
        let pending = || IRQ_TSC.load(Ordering::SeqCst) == 0 && tsc_start() <= deadline + IRQ_TIMEOUT_TICKS;
        match wait {
            Wait::Spin => {
                // SAFETY: the handler is installed; interrupts stay enabled while we spin.
                unsafe { asm!("sti", options(nomem, nostack)) };
                while pending() {
                    core::hint::spin_loop();
                }
                // SAFETY: masking interrupts in our own guest again.
                unsafe { asm!("cli", options(nomem, nostack)) };
            }
            Wait::Halt => {
                while pending() {
                    // SAFETY: STI's shadow covers HLT, so the interrupt wakes the HLT; CLI after.
                    unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) };
                }
            }
        }
        let at = IRQ_TSC.load(Ordering::SeqCst);
        if at == 0 {
            lost += 1;
            continue;
        }
        if at < deadline {
            early += 1;
        }
        if let Some(s) = i.checked_sub(WARMUP / 10) {
            samples[s] = at.saturating_sub(deadline);
        }
    }
    if lost == 0 {
        report(name, &mut samples);
    }
    if lost != 0 || early != 0 {
        let _ = writeln!(Console, "bench-note: {name}: {lost} interrupt(s) lost, {early} before the deadline");
    }
    lost
}

fn benchmarks(first_tsc: u64) -> ! {
    let _ = writeln!(Console, "bench-first: tsc={first_tsc}");
    let overhead = measure("overhead", 0, || {});
    measure("cpuid", overhead, || {
        black_box(core::arch::x86_64::__cpuid_count(black_box(0), 0));
    });
    measure("vmcall-version", overhead, || {
        // SAFETY: CPL 0 under Ferrovisor; `Version` takes no pointers.
        let r = unsafe { abi::hypercall::client::vmcall(abi::hypercall::Call::Version, [0; 6]) };
        black_box(r).ok();
    });
    measure("pio-read-uart-lsr", overhead, || {
        black_box(inb(UART_LSR));
    });
    measure("rdmsr-apic-base", overhead, || {
        black_box(rdmsr(IA32_APIC_BASE));
    });
    measure("rdmsr-tsc-deadline", overhead, || {
        black_box(rdmsr(IA32_TSC_DEADLINE));
    });
    measure("mmio-read-lapic-version", overhead, || {
        black_box(apic_read(APIC_VERSION));
    });
    set_gate(TIMER_VECTOR, bench_timer_entry as *const () as u64);
    apic_write(APIC_SVR, 0x1FF); // software-enable, spurious vector 0xFF
    apic_write(APIC_LVT_TIMER, TIMER_VECTOR as u32 | LVT_TSC_DEADLINE);
    let lost = interrupt_latency("irq-apic-timer-running", Wait::Spin)
        + interrupt_latency("irq-apic-timer-halted", Wait::Halt);
    let _ = writeln!(Console, "bench-done: {lost} interrupt(s) lost");
    exit(if lost == 0 { 0 } else { 1 })
}

/// One of many small domains side by side (`concurrent-domains`): three steps of 5 ms
/// of its own CPU time each (counted from TSC reads whose gaps are short, so time other
/// domains had does not count), a line after each, then exit 0.
fn progress() -> ! {
    // The hypervisor's timing leaf (0x40000010): TSC ticks per ms.
    let per_ms = u64::from(core::arch::x86_64::__cpuid_count(0x4000_0010, 0).eax).max(1);
    for step in 1..=3 {
        let mut ran = 0u64;
        let mut last = tsc_start();
        while ran < 5 * per_ms {
            let now = tsc_start();
            let gap = now - last;
            if gap < per_ms / 20 {
                ran += gap;
            }
            last = now;
        }
        let _ = writeln!(Console, "progress: {step}/3");
    }
    exit(0)
}

fn switch() -> ! {
    // TSC ticks per ms from the hypervisor's timing leaf.
    let per_ms = u64::from(core::arch::x86_64::__cpuid_count(0x4000_0010, 0).eax);
    if per_ms == 0 {
        let _ = writeln!(Console, "bench-switch: no timing leaf");
        exit(1);
    }
    let mut gaps = [(0u64, 0u64); MAX_GAPS];
    let mut count = 0;
    let (mut ran, mut steps) = (0u64, 0u64);
    let mut last = tsc_stop();
    let end = last + SWITCH_WINDOW_MS * per_ms;
    while count < MAX_GAPS && last < end {
        let t = tsc_stop();
        let dt = t - last;
        if dt > GAP_TICKS {
            gaps[count] = (last, t);
            count += 1;
        } else {
            ran += dt;
            steps += 1;
        }
        last = t;
    }
    let _ = writeln!(Console, "bench-switch: step={} gaps={count}", ran / steps.max(1));
    for line in gaps[..count].chunks(GAPS_PER_LINE) {
        let _ = write!(Console, "bench-switch: gaps");
        for (before, after) in line {
            let _ = write!(Console, " {before} {after}");
        }
        let _ = writeln!(Console);
    }
    exit(0)
}

fn share() -> ! {
    let per_ms = u64::from(core::arch::x86_64::__cpuid_count(0x4000_0010, 0).eax);
    if per_ms == 0 {
        let _ = writeln!(Console, "bench-share: no timing leaf");
        exit(1);
    }
    let mut last = tsc_stop();
    let start = last + SHARE_WARMUP_MS * per_ms;
    let end = start + SHARE_WINDOW_MS * per_ms;
    let mut ran = 0u64;
    while last < end {
        let t = tsc_stop();
        if t - last <= GAP_TICKS && last >= start {
            ran += t - last;
        }
        last = t;
    }
    let _ = writeln!(Console, "bench-share: ran={ran} window={}", end - start);
    exit(0)
}

fn passthrough() -> ! {
    let overhead = measure("overhead-dom0", 0, || {});
    measure("pio-read-passthrough-dom0", overhead, || {
        black_box(inb(UART_LSR));
    });
    exit(0)
}

/// The boot information block (docs/guest-boot.md); only the fields used here.
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

// The entry point: the very first instruction reads the TSC (domain create to first
// instruction), then Rust takes over with RDI = boot information, RSI = that TSC. The
// CALL leaves RSP as the ABI wants it at a function's entry (RSP + 8 16-byte aligned).
global_asm!(
    ".section .text._start, \"ax\"",
    ".global _start",
    "_start:",
    "rdtsc",
    "shl rdx, 32",
    "or rax, rdx",
    "mov rsi, rax",
    "call {main}",
    "ud2",
    ".text",
    main = sym bench_main,
);

extern "C" fn bench_main(boot_info: u64, first_tsc: u64) -> ! {
    // SAFETY: the hypervisor put the boot information at RDI (boot protocol).
    let info = unsafe { &*(boot_info as *const BootInfo) };
    // SAFETY: the command line lies in the boot area, `cmdline_len` bytes long.
    let cmdline = unsafe { core::slice::from_raw_parts(info.cmdline as *const u8, info.cmdline_len as usize) };
    match cmdline {
        b"switch" => switch(),
        b"progress" => progress(),
        b"share" => share(),
        b"passthrough" => passthrough(),
        b"" => benchmarks(first_tsc),
        _ => {
            let _ = writeln!(
                Console,
                "bench64: unknown command line (empty, `switch`, `progress`, `share` or `passthrough`)"
            );
            exit(2)
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let _ = writeln!(Console, "bench64 panicked: {info}");
    exit(0xFF)
}
