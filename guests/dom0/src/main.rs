//! dom0: Domain0, Ferrovisor's management domain. A shell on the serial port that runs
//! the `xl` crate's commands (`list`, `create`, `destroy`, `sched-credit`, `vcpu-pin`,
//! `dmesg`, `top`, `lspci`, `console`, ...) through hypercalls.
//!
//! Boot: Ferrovisor's 64-bit protocol (docs/guest-boot.md): long mode, the first 4 GiB
//! identity-mapped, RSP at the top of RAM, RDI at the boot information (magic
//! `FVBOOT64`, version, domain ID, memory size, vCPUs, command line length and address).
//! Linked at 2 MiB.
//!
//! Startup: prints `dom0: Ferrovisor Domain0 shell (hypercall ABI X.Y)`, then runs the
//! boot script: the command line is a `;`-separated list of commands (a `;` inside double
//! quotes does not split), each echoed as `dom0# <command>` before it runs, followed by
//! `dom0: script done (N commands)`. Then the prompt `dom0# `.
//!
//! Serial: COM1 (0x3F8) is passed through, real port I/O. The hypervisor has set the baud
//! rate; we only enable the receive interrupt. Output is buffered per line and sent in one
//! go (the hypervisor logs to the same port), `\n` as `\r\n`. Input: printable ASCII is
//! echoed, backspace (0x08, 0x7F) erases, Enter (`\r`, `\n`, `\r\n` once) runs the line,
//! Ctrl-C discards it; at most 256 characters.
//!
//! Idle: an IDT, the local APIC timer (periodic, vector 0x20, 10 ms from the APIC bus
//! frequency in CPUID leaf 0x40000010 EBX, else 1 GHz) and the UART's IRQ 4 through the
//! I/O APIC (pin 4 → vector 0x24, edge, fixed, APIC ID 0). Their handlers only EOI. The
//! idle loop is `sti; hlt; cli`, then it polls the UART (and, in console mode, the
//! domain's console): Domain0 never spins, wakes every 10 ms and at once on a received
//! byte.
//!
//! `console D`: prints `[console D: Ctrl-] to leave]`, shows the domain's console from the
//! oldest byte its ring still holds, forwards typed bytes as its input, and leaves on
//! Ctrl-] (`[console left]`) or when the domain disappears.
//!
//! ACPI (`acpi.rs`): after the interrupts, PlatformInfo and IrqRoute route the machine's
//! SCI to our I/O APIC (vector 0x29, level-triggered); the line
//! `dom0: acpi: SCI on GSI N (level, active-low), PM1 events at 0xb000` says so. The power
//! button is enabled: a press prints `dom0: power button pressed; powering the machine
//! off` and calls HostPowerOff. `acpi` shows the SCI counts; `acpi timer-overflow on|off`
//! switches the PM timer's overflow SCI (every 2.34 s), a diagnostic.
//!
//! `poweroff`: HostPowerOff.
#![no_std]
#![no_main]

mod acpi;
mod console;
mod hypervisor;
mod interrupts;
mod serial;

use core::fmt::Write;
use xl::terminal::{Edit, LineEditor};
use xl::{Host, Outcome, Shell};

use hypervisor::Hypervisor;
use serial::Serial;

const PROMPT: &str = "dom0# ";
const BOOT_MAGIC: u64 = u64::from_le_bytes(*b"FVBOOT64");
/// The boot area's command line holds at most this much (docs/guest-boot.md).
const MAX_CMDLINE: usize = 3839;

/// The boot information block; later versions only append fields.
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

// The entry: align the stack as a call would have left it, then Rust. RDI (the boot
// information) passes straight through as the first argument.
core::arch::global_asm!(
    ".section .text._start, \"ax\"",
    ".global _start",
    "_start:",
    "and rsp, -16",
    "call dom0_main",
    "ud2",
    ".text",
);

/// The command line, if the boot information is what the protocol promises.
fn boot_script(boot_info: u64) -> Option<&'static str> {
    // SAFETY: the hypervisor put the boot information at RDI, in our identity-mapped RAM.
    let info = unsafe { &*(boot_info as *const BootInfo) };
    if info.magic != BOOT_MAGIC || info.version < 1 {
        return None;
    }
    let len = (info.cmdline_len as usize).min(MAX_CMDLINE);
    // SAFETY: the command line lies in the boot area, `cmdline_len` bytes (bounded above), and
    // nothing writes it after boot.
    let bytes = unsafe { core::slice::from_raw_parts(info.cmdline as *const u8, len) };
    core::str::from_utf8(bytes).ok()
}

#[unsafe(no_mangle)]
extern "C" fn dom0_main(boot_info: u64) -> ! {
    let mut out = Serial::new();
    let mut hv = Hypervisor::new();
    let mut shell = Shell::new();
    match hv.version() {
        Ok(v) => {
            let _ = writeln!(out, "dom0: Ferrovisor Domain0 shell (hypercall ABI {}.{})", v >> 16, v & 0xFFFF);
        }
        Err(e) => {
            let _ = writeln!(out, "dom0: Ferrovisor Domain0 shell (hypercall ABI unknown: {e:?})");
        }
    }
    // After the banner, so a platform that faults on the APIC pages has said who we are.
    interrupts::init();
    serial::enable_receive_interrupt();
    hv.acpi = acpi::init(&mut hv, &mut out);
    match boot_script(boot_info) {
        Some(script) => {
            let mut count = 0;
            for command in xl::words::script(script) {
                let _ = writeln!(out, "{PROMPT}{command}");
                execute(command, &mut shell, &mut hv, &mut out);
                count += 1;
            }
            if count > 0 {
                let _ = writeln!(out, "dom0: script done ({count} commands)");
            }
        }
        None => {
            let _ = writeln!(out, "dom0: no valid boot information or command line; no script");
        }
    }
    prompt_loop(&mut shell, &mut hv, &mut out)
}

fn prompt_loop(shell: &mut Shell, hv: &mut Hypervisor, out: &mut Serial) -> ! {
    let mut editor = LineEditor::new();
    prompt(out);
    loop {
        while let Some(byte) = serial::read_byte() {
            match editor.feed(byte) {
                Edit::Nothing => continue,
                Edit::Echo(b) => out.write_bytes(&[b]),
                Edit::Erase => out.write_bytes(b"\x08 \x08"),
                Edit::Submit => {
                    out.write_bytes(b"\n");
                    execute(editor.line(), shell, hv, out);
                    editor.clear();
                    prompt(out);
                }
                Edit::Cancel => {
                    out.write_bytes(b"^C\n");
                    prompt(out);
                }
            }
            out.flush();
        }
        interrupts::idle();
        if acpi::power_button_pending() {
            // The prompt is showing: the message goes on a line of its own.
            out.write_bytes(b"\n");
            acpi::check_power_button(hv, out);
            prompt(out);
        }
    }
}

fn prompt(out: &mut Serial) {
    out.write_bytes(PROMPT.as_bytes());
    out.flush();
}

fn execute(line: &str, shell: &mut Shell, hv: &mut Hypervisor, out: &mut Serial) {
    match shell.run(line, hv, out) {
        Outcome::Done => {}
        Outcome::EnterConsole(id) => console::attach(id, hv, out),
        Outcome::PowerOff => {
            let _ = writeln!(out, "dom0: powering off");
            let e = hv.power_off();
            let _ = writeln!(out, "error: HostPowerOff: {e:?} ({})", e.code());
        }
    }
    out.flush();
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut out = Serial::new();
    let _ = writeln!(out, "\ndom0 panicked: {info}");
    out.flush();
    interrupts::halt_forever()
}
