//! hello64: the smallest 64-bit guest. It follows Ferrovisor's 64-bit boot protocol
//! (docs/guest-boot.md): long mode, identity-mapped, RSP at the top of RAM, RDI pointing
//! at the boot information. It prints through the debug port 0xE9, checks what CPUID
//! shows a guest, and exits through port 0xF4 with status 0 when all checks passed.
//!
//! The command line picks a test:
//! - (empty): the CPUID checks;
//! - `pattern`: fills 1 MiB of its RAM with a pseudo-random pattern and lingers;
//! - `scan`: looks for that pattern in all of its own RAM (isolation: it must not);
//! - `wild`: writes beyond its memory (the hypervisor must crash it, nobody else);
//! - `vmxon`: executes VMXON (the hypervisor must answer #UD);
//! - `triple`: triple-faults (the hypervisor must crash it, nobody else).
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
    let _ = writeln!(Console, "scan: {} MiB searched, pattern {}", memory >> 20, if found == 0 { "not found" } else { "FOUND" });
    exit(if found == 0 { 0 } else { 1 })
}

fn wild(memory: u64) -> ! {
    let target = memory + (16 << 20);
    let _ = writeln!(Console, "wild: writing to {target:#x}, beyond my memory");
    // SAFETY: deliberately outside our RAM: the hypervisor must stop us here.
    unsafe { (target as *mut u64).write_volatile(0xDEAD) };
    let _ = writeln!(Console, "wild: the write went through");
    exit(1)
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
