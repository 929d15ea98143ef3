//! Stopping the machine: on a fatal error, on an exception in the hypervisor, or when a
//! test run is over. The stopping CPU parks every other CPU with an NMI, prints the
//! final line, and (when the boot configuration asks for it) ends the emulator.

use crate::arch::{apic, cpu};
use core::sync::atomic::{AtomicBool, Ordering};

static STOPPING: AtomicBool = AtomicBool::new(false);
static EMULATOR_EXIT: AtomicBool = AtomicBool::new(false);

/// Why the machine stops; printed in the final line and mapped to the emulator's exit
/// status so a test harness can tell a clean end from a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Bring-up finished and there is nothing else to do yet.
    Done,
    /// The machine cannot run the hypervisor (no VMX, VMX locked off, ...).
    Unsupported,
    /// An exception in the hypervisor itself.
    Exception,
    /// A Rust panic in the hypervisor.
    Panic,
}

impl StopReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Unsupported => "unsupported machine",
            Self::Exception => "exception",
            Self::Panic => "panic",
        }
    }

    /// QEMU's isa-debug-exit turns the value v into exit status (v << 1) | 1.
    fn debug_exit_code(self) -> u8 {
        match self {
            Self::Done => 0x10,
            Self::Unsupported => 0x11,
            Self::Exception => 0x12,
            Self::Panic => 0x13,
        }
    }
}

/// Set from the boot configuration (`emulator_exit = true`): the test harness and
/// `cargo xtask run` want the emulator to end with the machine. Off by default because
/// on real hardware those ports belong to whatever device decodes them.
pub fn set_emulator_exit(enabled: bool) {
    EMULATOR_EXIT.store(enabled, Ordering::Relaxed);
}

pub fn stopping() -> bool {
    STOPPING.load(Ordering::Acquire)
}

/// Parks the calling CPU forever (an NMI from the stopping CPU ends up here), leaving
/// VMX operation first.
pub fn park_this_cpu() -> ! {
    crate::vmx::disable_this_cpu();
    cpu::halt_forever()
}

/// Stops the whole machine. The first CPU to get here wins; any other CPU that also
/// tries (a second fault while stopping) just parks.
pub fn stop_machine(reason: StopReason) -> ! {
    if STOPPING.swap(true, Ordering::AcqRel) {
        park_this_cpu();
    }
    // Other CPUs may be anywhere, including inside the logger; NMIs get them out of the
    // way (the NMI handler sees STOPPING and parks).
    apic::stop_other_cpus();
    // SAFETY: every other CPU has been sent an NMI and parks; nobody else prints now.
    // A CPU that had NMIs blocked might still print a line, which at worst interleaves.
    unsafe { crate::logger::force_unlock() };
    crate::vmx::disable_this_cpu();
    log::info!("machine halted: {}", reason.as_str());
    // The console is buffered: what is still queued is the end of the story.
    crate::arch::serial::flush(100_000);
    if EMULATOR_EXIT.load(Ordering::Relaxed) {
        emulator_exit(reason);
    }
    cpu::halt_forever()
}

/// Resets the machine (Domain0's `HostReboot`): parks the other CPUs, leaves VMX, then
/// asks the chipset for a reset through the reset control register (0xCF9, a hard reset)
/// and, where that port does nothing, the keyboard controller's reset line (0x64).
pub fn reboot_machine() -> ! {
    if STOPPING.swap(true, Ordering::AcqRel) {
        park_this_cpu();
    }
    apic::stop_other_cpus();
    // SAFETY: as in `stop_machine`.
    unsafe { crate::logger::force_unlock() };
    crate::vmx::disable_this_cpu();
    log::info!("machine rebooting");
    crate::arch::serial::flush(100_000);
    // SAFETY: the documented PC reset mechanisms; nothing runs after them.
    unsafe {
        cpu::outb(0xCF9, 0x02);
        cpu::outb(0xCF9, 0x06);
        cpu::outb(0x64, 0xFE);
    }
    log::error!("machine reset did not happen; halted instead");
    cpu::halt_forever()
}

/// Ends the emulator: Bochs's shutdown port takes the string "Shutdown"; QEMU's
/// isa-debug-exit device (when configured at 0xF4) takes one byte.
fn emulator_exit(reason: StopReason) {
    // SAFETY: only reached when the boot configuration says we run in an emulator that
    // the harness configured with these ports.
    unsafe {
        cpu::outb(0xF4, reason.debug_exit_code());
        for &b in b"Shutdown" {
            cpu::outb(0x8900, b);
        }
    }
}
