//! COM1, which the hypervisor passes through to Domain0: input is real port I/O (no VM
//! exits) with the UART's IRQ 4.
//!
//! Output goes through the hypervisor's console (`ConsoleWrite`), as Xen's Domain0
//! writes through Xen's: the hypervisor logs to the same port from every CPU, and only
//! its line lock keeps our lines and its lines whole. Output is buffered per line (or
//! up to a prompt) and sent in one call. `\n` goes out as `\r\n`.

use core::arch::asm;
use core::fmt;
use xl::terminal::CrLf;

const COM1: u16 = 0x3F8;
const DATA: u16 = COM1;
const IER: u16 = COM1 + 1;
const MCR: u16 = COM1 + 4;
const LSR: u16 = COM1 + 5;

/// LSR bit 0: a received byte is waiting.
const LSR_DATA_READY: u8 = 1 << 0;
/// LSR bit 5: the transmit holding register can take a byte.
const LSR_THR_EMPTY: u8 = 1 << 5;
/// IER bit 0: interrupt when a byte arrives.
const IER_RX: u8 = 1 << 0;
/// MCR: DTR | RTS | OUT2 (OUT2 gates the UART's interrupt line on a PC).
const MCR_DTR_RTS_OUT2: u8 = 0x0B;

fn outb(port: u16, value: u8) {
    // SAFETY: COM1's registers, passed through to Domain0; writing them touches no memory.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) };
}

fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as in `outb`; reading the data register consumes a received byte, which is what we want.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Makes a received byte raise IRQ 4 (routed to our I/O APIC pin 4 by `interrupts::init`).
pub fn enable_receive_interrupt() {
    outb(IER, IER_RX);
    outb(MCR, MCR_DTR_RTS_OUT2);
}

/// A received byte, if one is waiting.
pub fn read_byte() -> Option<u8> {
    if inb(LSR) & LSR_DATA_READY != 0 { Some(inb(DATA)) } else { None }
}

fn send(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let args = [bytes.as_ptr() as u64, bytes.len() as u64, 0, 0, 0, 0];
    // SAFETY: CPL 0 under Ferrovisor; the buffer is ours and `len` bytes long.
    if unsafe { abi::hypercall::client::vmcall(abi::hypercall::Call::ConsoleWrite, args) }.is_ok() {
        return;
    }
    // The hypervisor refused (it should not): write the port ourselves.
    for &b in bytes {
        while inb(LSR) & LSR_THR_EMPTY == 0 {
            core::hint::spin_loop();
        }
        outb(DATA, b);
    }
}

/// Line-buffered output to COM1.
pub struct Serial {
    line: [u8; 256],
    len: usize,
    crlf: CrLf,
}

impl Serial {
    pub const fn new() -> Self {
        Serial { line: [0; 256], len: 0, crlf: CrLf::new() }
    }

    /// Queues bytes (a lone `\n` becomes `\r\n`); complete lines go out at once.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let (mut pending, mut n) = ([0u8; 2], 0);
            self.crlf.push(b, |x| {
                pending[n] = x;
                n += 1;
            });
            for &x in &pending[..n] {
                self.push(x);
            }
        }
    }

    fn push(&mut self, b: u8) {
        if self.len == self.line.len() {
            self.flush();
        }
        self.line[self.len] = b;
        self.len += 1;
        if b == b'\n' {
            self.flush();
        }
    }

    /// Sends what is buffered (a prompt, an echoed key: output without a newline).
    pub fn flush(&mut self) {
        send(&self.line[..self.len]);
        self.len = 0;
    }
}

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}
