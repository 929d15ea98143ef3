//! COM1, the hypervisor's console. Every log line goes out here; the integration tests
//! judge the machine by what arrives on this port.
//!
//! Output is buffered (Xen's serial transmit buffer): a line is queued and whatever the
//! UART's FIFO takes at once is written, and the rest goes out as the FIFO drains. At
//! 115200 baud one 100-character line takes about 9 ms on the wire; written
//! synchronously, every log line stalled its CPU, and the guest on it, for that long.
//!
//! Who drains it: [`poll`], called from each CPU's run loop and before every full VM
//! entry, refills the FIFO once it should have room (one atomic load when it should
//! not); [`next_poll_tsc`] makes idle CPUs wake up and running guests exit for it.
//! Nothing is dropped: when the queue is full, the writer waits for the UART, as every
//! write did before. The machine-stop paths write out what is left ([`flush`]).

use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{BaudRate, Config, Uart16550};

/// The standard I/O base of COM1.
pub const COM1: u16 = 0x3F8;

/// Bytes the console may hold back: about 1.4 s of output at 115200 baud.
const TX_BUFFER: usize = 16 * 1024;

/// A UART that stops taking bytes for this long is given up on (a machine with a
/// broken or absent COM1 must not hang its stop path on it).
const STUCK_US: u64 = 200_000;

struct Console {
    /// None until `init` found a UART (and on a machine without one).
    uart: Option<Uart16550<PioBackend>>,
    tx: crate::ring::Fifo<TX_BUFFER>,
    baud: u32,
}

/// Built in place (the queue is 16 KiB: never a temporary on a boot stack).
static CONSOLE: Mutex<Console> = Mutex::new(Console { uart: None, tx: crate::ring::Fifo::new(), baud: 115_200 });

/// When the UART's FIFO should have room again (TSC), if bytes are queued; u64::MAX
/// when nothing is.
static NEXT_POLL: AtomicU64 = AtomicU64::new(u64::MAX);

/// Programs COM1 for 8-N-1 at `baud`. Returns false (and stays silent) when no UART
/// answers at COM1: on such a machine the log is simply not visible.
pub fn init(baud: u32) -> bool {
    // SAFETY: COM1 is owned by the hypervisor from boot on; nothing else drives it.
    let Ok(mut uart) = (unsafe { Uart16550::new_port(COM1) }) else { return false };
    let config = Config { baud_rate: BaudRate::from_integer(baud), ..Config::DEFAULT };
    let mut console = CONSOLE.lock();
    // Re-programming (the configured baud rate after the boot default): what is queued
    // goes out at the old rate first.
    console.drain_all();
    if uart.init(config).is_err() {
        console.uart = None;
        return false;
    }
    console.uart = Some(uart);
    console.baud = baud.max(1);
    true
}

impl Console {
    /// TSC ticks one character takes on the wire (start, 8 data and stop bit).
    fn char_ticks(&self) -> u64 {
        (super::timer::tsc_hz() * 10 / u64::from(self.baud)).max(1)
    }

    /// Gives the FIFO what it takes now (nothing if it is still busy) and notes when to
    /// come back. Returns how many bytes went out.
    fn pump(&mut self) -> usize {
        let Some(uart) = self.uart.as_mut() else {
            self.tx.clear();
            NEXT_POLL.store(u64::MAX, Ordering::Release);
            return 0;
        };
        let n = uart.send_bytes(self.tx.peek());
        self.tx.consume(n);
        let next = if self.tx.is_empty() {
            u64::MAX
        } else {
            // Still sending: the FIFO has room again once these bytes are on the wire.
            super::cpu::rdtsc().saturating_add(self.char_ticks().saturating_mul(n.max(1) as u64))
        };
        NEXT_POLL.store(next, Ordering::Release);
        n
    }

    /// Writes out the whole queue, waiting for the UART; gives up on a UART that takes
    /// nothing for [`STUCK_US`] (the queue is then dropped).
    fn drain_all(&mut self) {
        while !self.tx.is_empty() {
            let mut sent = 0;
            if !super::timer::spin_until(STUCK_US, || {
                sent = self.pump();
                sent > 0
            }) {
                self.tx.clear();
                NEXT_POLL.store(u64::MAX, Ordering::Release);
                return;
            }
        }
    }
}

/// Queues bytes for COM1 and writes what the UART takes at once. Waits only when the
/// queue is full. Callers serialise whole lines through the logger's lock so lines
/// from different CPUs never interleave.
pub fn write_bytes(bytes: &[u8]) {
    let mut console = CONSOLE.lock();
    if console.uart.is_none() {
        return;
    }
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = console.tx.push(rest);
        rest = rest.get(n..).unwrap_or(&[]);
        if !rest.is_empty() {
            // Output outruns the wire: make room the slow way.
            let mut sent = 0;
            if !super::timer::spin_until(STUCK_US, || {
                sent = console.pump();
                sent > 0
            }) {
                console.tx.clear();
            }
        }
    }
    console.pump();
}

/// Queues `bytes` only if they fit with `keep_free` bytes of the queue still free
/// afterwards, without waiting; false when they were dropped. For output the machine
/// can lose (a guest's console lines): it never holds up a CPU, and the room kept
/// free is for the hypervisor's own lines and Domain0's console ([`GUEST_RESERVE`]).
pub fn try_write_bytes(bytes: &[u8], keep_free: usize) -> bool {
    let mut console = CONSOLE.lock();
    if console.uart.is_none() {
        return true;
    }
    if console.tx.free() < bytes.len().saturating_add(keep_free) {
        return false;
    }
    console.tx.push(bytes);
    console.pump();
    true
}

/// What guest output leaves free in the queue ([`try_write_bytes`]): room for the
/// hypervisor's own lines, which then never wait behind a guest. A guest can delay
/// them by the rest of the queue at most (about 1.2 s at 115200 baud), and only while
/// its rate limit's burst lasts (`domain::console`).
pub const GUEST_RESERVE: usize = 2048;

/// Refills the UART's FIFO if it should have room by now. One atomic load when there
/// is nothing to do; never waits (another CPU already at it is enough).
#[inline]
pub fn poll() {
    if super::cpu::rdtsc() < NEXT_POLL.load(Ordering::Acquire) {
        return;
    }
    if let Some(mut console) = CONSOLE.try_lock() {
        console.pump();
    }
}

/// When [`poll`] next has work (TSC), if output is queued: the idle loop's wake-up and
/// the running guest's timer include it so output keeps flowing.
pub fn next_poll_tsc() -> Option<u64> {
    let t = NEXT_POLL.load(Ordering::Acquire);
    (t != u64::MAX).then_some(t)
}

/// Steals the port for a last message when the lock may be held by a CPU that faulted
/// while printing. Only the machine-stop path uses this.
///
/// # Safety
/// Must only be called once no other CPU can be printing anymore (they are stopped or
/// this CPU is the only one left).
pub unsafe fn force_unlock() {
    // SAFETY: forwarded to the caller.
    unsafe { CONSOLE.force_unlock() };
}

/// Writes out everything queued, then waits until COM1 has shifted out every byte
/// (LSR.TEMT), so a message written just before the machine stops or powers off is
/// not cut short. Gives up on the last step after `timeout_us`.
pub fn flush(timeout_us: u64) {
    CONSOLE.lock().drain_all();
    // LSR bit 6: transmitter empty (FIFO and shift register).
    const LSR_TEMT: u8 = 1 << 6;
    // SAFETY: reading the line status register of our own UART has no side effects on
    // the transmit path.
    super::timer::spin_until(timeout_us, || unsafe { super::cpu::inb(COM1 + 5) } & LSR_TEMT != 0);
}
