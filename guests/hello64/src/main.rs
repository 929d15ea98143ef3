//! hello64: the smallest 64-bit guest. It follows Ferrovisor's 64-bit boot protocol
//! (docs/guest-boot.md): long mode, identity-mapped, RSP at the top of RAM, RDI pointing
//! at the boot information. It prints through the debug port 0xE9, checks what CPUID
//! shows a guest, and exits through port 0xF4 with status 0 when all checks passed.
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

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start(boot_info: u64) -> ! {
    let mut out = Console;
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
    let _ = writeln!(out, "hello64: {} check(s) failed", failures);
    exit(failures)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let _ = writeln!(Console, "hello64 panicked: {info}");
    exit(0xFF)
}
