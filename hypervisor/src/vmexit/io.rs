//! Port I/O from a DomU. Every port exits (the I/O bitmaps are all ones). Claimed here:
//! 0xE9, the debug console (bytes become log lines prefixed with the domain's name);
//! 0xF4, the exit port (QEMU's isa-debug-exit convention); and 0x3F8-0x3FF, the domain's
//! emulated COM1 (`devices::uart16550`), whose output joins the same console. Any other
//! port reads all ones and drops writes, as an empty ISA bus does, and is counted per
//! port.

use super::Next;
use crate::domain::vcpu::Vcpu;
use crate::domain::{Domain, DomainState};
use crate::vmx::exit::{IoDirection, IoQualification};

pub const DEBUG_CONSOLE: u16 = 0xE9;
pub const EXIT_PORT: u16 = 0xF4;
pub const COM1: u16 = crate::devices::uart16550::COM1_BASE;

pub fn handle(domain: &Domain, vcpu: &mut Vcpu, q: IoQualification) -> Next {
    let bytes = q.size.bytes();
    if q.string {
        // INS/OUTS need guest-linear address translation; no port we emulate supports
        // them yet, so they get the empty-bus treatment without touching memory.
        count(domain, q.port);
        return Next::Advance;
    }
    match (q.direction, q.port) {
        (IoDirection::Out, DEBUG_CONSOLE) => {
            console(domain, vcpu.regs.rax as u8);
            Next::Advance
        }
        // COM1 registers are 8 bits wide; a wider access reaches the first register only
        // (like an ISA device decoding one byte), and the upper bytes read all ones.
        (direction, port) if (COM1..COM1 + 8).contains(&port) => {
            let offset = (port - COM1) as u8;
            match direction {
                IoDirection::In => {
                    let value = domain.runtime.lock().devices.com1.read(offset);
                    let upper = if bytes == 4 { 0xFFFF_FF00 } else { (1u64 << (8 * bytes)) - 1 - 0xFF };
                    let mask = if bytes == 4 { 0xFFFF_FFFF } else { (1u64 << (8 * bytes)) - 1 };
                    let merged = (vcpu.regs.rax & !mask) | upper | u64::from(value);
                    vcpu.regs.rax = if bytes == 4 { merged & 0xFFFF_FFFF } else { merged };
                }
                IoDirection::Out => {
                    let effects = domain.runtime.lock().devices.com1.write(offset, vcpu.regs.rax as u8);
                    if let Some(byte) = effects.tx {
                        console(domain, byte);
                    }
                }
            }
            Next::Advance
        }
        (IoDirection::Out, EXIT_PORT) => {
            let status = vcpu.regs.rax as u8;
            if domain.finish(DomainState::ShutDown, Some(status)) {
                log::info!("domain {} exited status={status}", domain.name);
            }
            Next::Ended
        }
        (IoDirection::In, _) => {
            count(domain, q.port);
            let mask = if bytes == 4 { 0xFFFF_FFFF } else { (1u64 << (8 * bytes)) - 1 };
            vcpu.regs.rax |= mask;
            if bytes == 4 {
                // A 32-bit IN zero-extends into RAX, like any 32-bit register write.
                vcpu.regs.rax &= 0xFFFF_FFFF;
            }
            Next::Advance
        }
        (IoDirection::Out, _) => {
            count(domain, q.port);
            Next::Advance
        }
    }
}

/// One byte of the domain's console output; whole lines go to the log.
fn console(domain: &Domain, byte: u8) {
    let mut rt = domain.runtime.lock();
    if let Some(line) = rt.console.push(byte) {
        log::info!("[{}] {}", domain.name, line);
    }
}

fn count(domain: &Domain, port: u16) {
    *domain.runtime.lock().unclaimed_ports.entry(port).or_insert(0) += 1;
}
