//! `console D`: the serial port attached to another domain's console until Ctrl-].

use abi::hypercall::Error;
use core::fmt::Write;

use crate::hypervisor::Hypervisor;
use crate::interrupts;
use crate::serial::{self, Serial};

/// Ctrl-]: leaves the console, as in xl.
const ESCAPE: u8 = 0x1D;
/// Reads per round before looking at the keyboard again, so Ctrl-] works under a flood.
const READS_PER_ROUND: usize = 16;

/// Why the console loop ended.
enum Leave {
    Escape,
    DomainGone,
    Failed(Error),
}

pub fn attach(id: u32, hv: &mut Hypervisor, out: &mut Serial) {
    let _ = writeln!(out, "[console {id}: Ctrl-] to leave]");
    // Cursor 0: the ring's oldest byte, so the domain's recent history shows first.
    let mut cursor = 0u64;
    let leave = loop {
        match pump(id, hv, out, &mut cursor) {
            Ok(Activity::Busy) => {}
            Ok(Activity::Quiet) => {
                interrupts::idle();
                crate::acpi::check_power_button(hv, out);
            }
            Err(leave) => break leave,
        }
    };
    let _ = match leave {
        Leave::Escape => writeln!(out, "\n[console left]"),
        Leave::DomainGone => writeln!(out, "\n[console left: domain {id} is gone]"),
        Leave::Failed(e) => writeln!(out, "\n[console left: {e:?} ({})]", e.code()),
    };
}

enum Activity {
    Busy,
    Quiet,
}

/// One round: the domain's output to the serial port, then typed bytes to the domain.
fn pump(id: u32, hv: &mut Hypervisor, out: &mut Serial, cursor: &mut u64) -> Result<Activity, Leave> {
    let gone = |e| if e == Error::NoEntry { Leave::DomainGone } else { Leave::Failed(e) };
    let mut activity = Activity::Quiet;
    let mut buf = [0u8; 512];
    for _ in 0..READS_PER_ROUND {
        let n = hv.console_read_other(id, &mut buf, cursor).map_err(gone)?;
        if n == 0 {
            break;
        }
        out.write_bytes(&buf[..n]);
        activity = Activity::Busy;
    }
    out.flush();
    let mut typed = [0u8; 64];
    let mut n = 0;
    let mut escaped = false;
    while n < typed.len() {
        match serial::read_byte() {
            Some(ESCAPE) => {
                escaped = true;
                break;
            }
            Some(b) => {
                typed[n] = b;
                n += 1;
            }
            None => break,
        }
    }
    // What was typed before Ctrl-] still goes to the domain.
    if n > 0 {
        hv.console_write_other(id, &typed[..n]).map_err(gone)?;
        activity = Activity::Busy;
    }
    if escaped {
        return Err(Leave::Escape);
    }
    Ok(activity)
}
