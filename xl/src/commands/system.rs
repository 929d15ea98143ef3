//! The host as a whole: `info`, `dmesg` and `acpi`.

use abi::hypercall::Call;
use core::fmt::Write;

use super::{no_args, synopsis};
use crate::error::CmdError;
use crate::host::{Acpi, AcpiStatus, Host};

/// HostInfo.features bit names, bit 0 first.
const FEATURES: [&str; 2] = ["vmx-preemption-timer", "tsc-deadline"];

/// `info`: `key : value` lines, keys padded as xl pads them.
pub fn info<'a>(args: &[&'a str], host: &mut impl Host, out: &mut impl Write) -> Result<(), CmdError<'a>> {
    no_args("info", args)?;
    let version = host.version().map_err(CmdError::hv(Call::Version))?;
    let h = host.host_info().map_err(CmdError::hv(Call::HostInfo))?;
    writeln!(out, "{:<23}: ferrovisor", "host")?;
    writeln!(out, "{:<23}: {}.{}", "hypervisor_version", version >> 16, version & 0xFFFF)?;
    writeln!(out, "{:<23}: {}", "nr_cpus", h.cpus)?;
    writeln!(out, "{:<23}: {}", "total_memory", h.memory_total >> 20)?;
    writeln!(out, "{:<23}: {}", "free_memory", h.memory_free >> 20)?;
    writeln!(out, "{:<23}: {}", "tsc_khz", h.tsc_khz)?;
    write!(out, "{:<23}:", "features")?;
    if h.features == 0 {
        write!(out, " none")?;
    }
    for bit in (0..64).filter(|b| h.features >> b & 1 == 1) {
        match FEATURES.get(bit) {
            Some(name) => write!(out, " {name}")?,
            None => write!(out, " bit{bit}")?,
        }
    }
    writeln!(out)?;
    writeln!(out, "{:<23}: {}", "nr_domains", h.domains)?;
    Ok(())
}

/// Bytes read per HypervisorLogRead.
const CHUNK: usize = 512;
/// Stops a log that grows as fast as it is read (1 MiB at most).
const MAX_CHUNKS: usize = 2048;

/// `dmesg`: the hypervisor's log ring from the oldest byte it still holds.
pub fn dmesg<'a>(args: &[&'a str], host: &mut impl Host, out: &mut impl Write) -> Result<(), CmdError<'a>> {
    no_args("dmesg", args)?;
    let mut cursor = 0u64;
    let mut buf = [0u8; CHUNK];
    for _ in 0..MAX_CHUNKS {
        let n = host.hypervisor_log_read(&mut buf, &mut cursor).map_err(CmdError::hv(Call::HypervisorLogRead))?;
        if n == 0 {
            break;
        }
        write_lossy(&buf[..n.min(CHUNK)], out)?;
    }
    Ok(())
}

/// Writes bytes as text, with `?` for what is not UTF-8 (a character cut at a chunk
/// boundary shows as `?` too; the log is ASCII in practice).
fn write_lossy(mut bytes: &[u8], out: &mut impl Write) -> core::fmt::Result {
    while !bytes.is_empty() {
        match core::str::from_utf8(bytes) {
            Ok(text) => return out.write_str(text),
            Err(e) => {
                let (good, bad) = bytes.split_at(e.valid_up_to());
                out.write_str(core::str::from_utf8(good).unwrap_or(""))?;
                out.write_char('?')?;
                bytes = &bad[e.error_len().unwrap_or(bad.len()).max(1).min(bad.len())..];
            }
        }
    }
    Ok(())
}

/// `acpi`: the SCI's line and the events it has brought; `acpi timer-overflow on|off`
/// sets TMR_EN, a diagnostic: the PM timer (3.579545 MHz) then raises the SCI each time
/// its bit 23 flips, every 2^23 ticks (2.34 s).
pub fn acpi<'a>(args: &[&'a str], host: &mut impl Host, out: &mut impl Write) -> Result<(), CmdError<'a>> {
    let timer = match args {
        [] => None,
        ["timer-overflow", "on"] => Some(true),
        ["timer-overflow", "off"] => Some(false),
        ["timer-overflow", text] => {
            return Err(CmdError::BadChoice { text, setting: "timer-overflow", choices: "on or off" });
        }
        _ => return Err(CmdError::Usage(synopsis("acpi"))),
    };
    let status = match host.acpi_status() {
        Acpi::Active(status) => status,
        Acpi::Failed { call, error } => return Err(CmdError::Hypervisor { call, error }),
        Acpi::NoSci if timer.is_some() => {
            return Err(CmdError::Refused("the machine has no SCI: ACPI events cannot be delivered"));
        }
        Acpi::NoSci => {
            writeln!(out, "acpi: the machine has no SCI")?;
            return Ok(());
        }
    };
    match timer {
        Some(on) => host.acpi_timer_events(on),
        None => {
            let AcpiStatus { gsi, interrupts, timer_overflows, power_button, other, .. } = status;
            writeln!(
                out,
                "acpi: SCI GSI {gsi}, {interrupts} interrupt(s): {timer_overflows} timer overflow, \
                 {power_button} power button, {other} other"
            )?;
        }
    }
    Ok(())
}
