//! The `log` facade on COM1. Every line carries the level, the CPU and the TSC:
//!
//! ```text
//! [      88123456] INFO  cpu0 boot: Ferrovisor 0.1.0 starting
//! ```
//!
//! The TSC is printed raw: in Bochs it counts emulated instructions (a deterministic
//! clock), on hardware it is cycles (the boot log prints the measured frequency).

use crate::arch::{cpu, serial};
use crate::percpu;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use log::{Level, LevelFilter, Log, Metadata, Record};

struct SerialLogger;

static LOGGER: SerialLogger = SerialLogger;
/// Serialises whole lines across CPUs: holds the index of the CPU printing, or
/// [`FREE`]. A CPU that faults while printing re-enters without deadlocking itself, so
/// the exception report still comes out (interleaved with the cut line).
static LINE_OWNER: AtomicU32 = AtomicU32::new(FREE);
const FREE: u32 = u32::MAX;

struct LineGuard {
    reentered: bool,
}

impl LineGuard {
    fn acquire(cpu: u32) -> Self {
        if LINE_OWNER.load(Ordering::Relaxed) == cpu {
            return Self { reentered: true };
        }
        while LINE_OWNER.compare_exchange_weak(FREE, cpu, Ordering::Acquire, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
        Self { reentered: false }
    }
}

impl Drop for LineGuard {
    fn drop(&mut self) {
        if !self.reentered {
            LINE_OWNER.store(FREE, Ordering::Release);
        }
    }
}

/// A line buffer so one line is one UART transaction; long lines are flushed in pieces.
struct LineBuf {
    buf: [u8; 256],
    len: usize,
    /// Cut a longer line instead of flushing the first part early (guest lines, which
    /// must go out whole or not at all).
    cut_long: bool,
}

impl Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                if self.cut_long {
                    return Ok(());
                }
                serial::write_bytes(&self.buf);
                self.len = 0;
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

impl Log for SerialLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        let target = record.target();
        let target = target.strip_prefix("hypervisor::").unwrap_or(target);
        let cpu = percpu::current_index();
        let _guard = LineGuard::acquire(cpu);
        let mut line = LineBuf { buf: [0; 256], len: 0, cut_long: false };
        prefix(&mut line, level, cpu, target);
        let _ = writeln!(line, "{}", record.args());
        serial::write_bytes(&line.buf[..line.len]);
        keep(&line);
    }

    fn flush(&self) {}
}

/// The line's prefix, by hand: through `core::fmt` (padding, three integers) it cost
/// about as much as the rest of a typical line, on every line.
fn prefix(line: &mut LineBuf, level: &str, cpu: u32, target: &str) {
    let mut digits = [b' '; 20];
    let _ = line.write_str("[");
    let _ = line.write_str(right_aligned(cpu::rdtsc(), 14, &mut digits));
    let _ = line.write_str("] ");
    let _ = line.write_str(level);
    let _ = line.write_str(" cpu");
    let _ = line.write_str(right_aligned(u64::from(cpu), 1, &mut digits));
    let _ = line.write_str(" ");
    let _ = line.write_str(target);
    let _ = line.write_str(": ");
}

/// Also kept for Domain0's `dmesg`. A reader holding the ring (a hypercall copying it
/// out) costs this line its place in the ring, never a wait here.
fn keep(line: &LineBuf) {
    if let Some(mut ring) = LOG_RING.try_lock() {
        ring.push(&line.buf[..line.len]);
    }
}

/// `guest_output = "log"`: DomUs' console lines go to the machine's console.
static GUEST_OUTPUT_LOGGED: AtomicBool = AtomicBool::new(false);

/// Sets `guest_output` from the configuration.
pub fn set_guest_output_logged(on: bool) {
    GUEST_OUTPUT_LOGGED.store(on, Ordering::Relaxed);
}

/// Whether DomUs' console lines reach the machine's console: with `guest_output = "log"`,
/// or at `log_level = "debug"` and above. Otherwise they stay in each domain's console
/// (`console ID`), as xenconsoled keeps them, and a person typing at `dom0#` is not
/// interrupted by them.
pub fn guest_lines_shown() -> bool {
    if GUEST_OUTPUT_LOGGED.load(Ordering::Relaxed) {
        log::log_enabled!(target: "hypervisor::domain::kernel", Level::Info)
    } else {
        log::log_enabled!(target: "hypervisor::domain::kernel", Level::Debug)
    }
}

/// A line of a DomU's console, as an INFO line of `domain::kernel` prefixed with the
/// domain's name. Written only if the serial queue has room for it beside what is kept
/// for the hypervisor and Domain0 (`serial::try_write_bytes`); false when it was
/// dropped. Never waits for the port. Console lines are passed only where
/// [`guest_lines_shown`] says so; the debug port's always.
pub fn guest_line(domain: &str, text: &str) -> bool {
    if !log::log_enabled!(target: "hypervisor::domain::kernel", Level::Info) {
        return true;
    }
    let cpu = percpu::current_index();
    let _guard = LineGuard::acquire(cpu);
    // Buffered, never flushed early: a line that does not fit the buffer is cut.
    let mut line = LineBuf { buf: [0; 256], len: 0, cut_long: true };
    prefix(&mut line, "INFO ", cpu, "domain::kernel");
    let _ = write!(line, "[{domain}] {text}");
    if line.len == line.buf.len() {
        line.buf[line.len - 1] = b'\n';
    } else {
        line.buf[line.len] = b'\n';
        line.len += 1;
    }
    let written = serial::try_write_bytes(&line.buf[..line.len], serial::GUEST_RESERVE);
    if written {
        keep(&line);
    }
    written
}

/// `value` in decimal, right-aligned in at least `width` characters (spaces in front),
/// in `buf` (20 bytes hold any u64).
fn right_aligned(mut value: u64, width: usize, buf: &mut [u8; 20]) -> &str {
    let mut start = buf.len();
    loop {
        start -= 1;
        if let Some(d) = buf.get_mut(start) {
            *d = b'0' + (value % 10) as u8;
        }
        value /= 10;
        if value == 0 || start == 0 {
            break;
        }
    }
    let first = start.min(buf.len().saturating_sub(width));
    if let Some(pad) = buf.get_mut(first..start) {
        pad.fill(b' ');
    }
    core::str::from_utf8(buf.get(first..).unwrap_or(&[])).unwrap_or("")
}

/// Domain0's console output, raw, between whole log lines.
pub fn write_console(bytes: &[u8]) {
    let _guard = LineGuard::acquire(percpu::current_index());
    serial::write_bytes(bytes);
}

/// The last 64 KiB of the log, for Domain0 (`HypervisorLogRead`).
static LOG_RING: spin::Mutex<crate::ring::ByteRing<65536>> = spin::Mutex::new(crate::ring::ByteRing::new());

/// Copies the log from stream position `cursor` (see `ring::ByteRing::read`).
pub fn read_ring(cursor: u64, out: &mut [u8]) -> (u64, usize) {
    LOG_RING.lock().read(cursor, out)
}

/// Installs the logger. The level starts at `Info` and is set from the boot
/// configuration once the bundle has been read.
pub fn init() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(LevelFilter::Info);
}

pub fn set_level(level: abi::config::LogLevel) {
    use abi::config::LogLevel;
    log::set_max_level(match level {
        LogLevel::Error => LevelFilter::Error,
        LogLevel::Warn => LevelFilter::Warn,
        LogLevel::Info => LevelFilter::Info,
        LogLevel::Debug => LevelFilter::Debug,
        LogLevel::Trace => LevelFilter::Trace,
    });
}

/// For the machine-stop path: makes sure a CPU that died holding the line lock cannot
/// keep the final report from being printed.
///
/// # Safety
/// Only when every other CPU has been stopped.
pub unsafe fn force_unlock() {
    // SAFETY: forwarded to the caller.
    unsafe {
        LINE_OWNER.store(FREE, Ordering::Release);
        serial::force_unlock();
    }
}
