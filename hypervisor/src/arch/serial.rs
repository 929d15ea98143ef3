//! COM1, the hypervisor's console. Every log line goes out here; the integration tests
//! judge the machine by what arrives on this port.

use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{BaudRate, Config, Uart16550};

/// The standard I/O base of COM1.
pub const COM1: u16 = 0x3F8;

static PORT: Mutex<Option<Uart16550<PioBackend>>> = Mutex::new(None);

/// Programs COM1 for 8-N-1 at `baud`. Returns false (and stays silent) when no UART
/// answers at COM1: on such a machine the log is simply not visible.
pub fn init(baud: u32) -> bool {
    // SAFETY: COM1 is owned by the hypervisor from boot on; nothing else drives it.
    let Ok(mut uart) = (unsafe { Uart16550::new_port(COM1) }) else { return false };
    let config = Config { baud_rate: BaudRate::from_integer(baud), ..Config::DEFAULT };
    if uart.init(config).is_err() {
        return false;
    }
    *PORT.lock() = Some(uart);
    true
}

/// Writes bytes to COM1, blocking until the UART took them all. Callers serialise
/// whole lines through the logger's lock so lines from different CPUs never interleave.
pub fn write_bytes(bytes: &[u8]) {
    if let Some(uart) = PORT.lock().as_mut() {
        uart.send_bytes_exact(bytes);
    }
}

/// Steals the port for a last message when the lock may be held by a CPU that faulted
/// while printing. Only the machine-stop path uses this.
///
/// # Safety
/// Must only be called once no other CPU can be printing anymore (they are stopped or
/// this CPU is the only one left).
pub unsafe fn force_unlock() {
    // SAFETY: forwarded to the caller.
    unsafe { PORT.force_unlock() };
}

/// Waits until COM1 has shifted out every byte (LSR.TEMT), so a message written just
/// before the machine powers off is not cut short. Gives up after `timeout_us`.
pub fn flush(timeout_us: u64) {
    // LSR bit 6: transmitter empty (FIFO and shift register).
    const LSR_TEMT: u8 = 1 << 6;
    // SAFETY: reading the line status register of our own UART has no side effects on
    // the transmit path.
    super::timer::spin_until(timeout_us, || unsafe { super::cpu::inb(COM1 + 5) } & LSR_TEMT != 0);
}
