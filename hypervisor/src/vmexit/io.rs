//! Port I/O from a DomU. Every port exits (the I/O bitmaps are all ones). Claimed here:
//! 0xE9, the hypervisor's debug port (lines in its log, prefixed with the domain's name:
//! `Domain::debug_port_output`); 0xF4, the exit port (QEMU's isa-debug-exit convention);
//! and 0x3F8-0x3FF, the domain's emulated COM1 (`devices::uart16550`), the domain's
//! console (`Domain::console_output`). Any other
//! port reads all ones and drops writes, as an empty ISA bus does, and is counted per
//! port. Also claimed: 0x80 and 0xED (I/O delay ports, silently accepted), 0x92 (A20
//! always on; bit 0 resets), the PIC pair (0x20/0x21, 0xA0/0xA1, ELCR 0x4D0/0x4D1), the
//! PIT (0x40-0x43, with port 0x61's gate and OUT2), the CMOS RTC (0x70/0x71), PCI configuration mechanism #1
//! (0xCF8/0xCFC, 32-bit address accesses; 0xCF9 byte writes stay the reset register),
//! fw_cfg (0x510/0x511), and the ACPI PM block (`devices::acpi_pm`: PM timer, S5
//! power-off, the 0xCF9 reset register).

use super::Next;
use crate::devices::DomainDevices;
use crate::devices::acpi_pm::{AcpiPm, PowerRequest};
use crate::devices::pci::PciHost;
use crate::domain::unclaimed::Report;
use crate::domain::vcpu::Vcpu;
use crate::domain::{Domain, DomainState};
use crate::vmx::exit::{IoDirection, IoQualification};

pub const DEBUG_CONSOLE: u16 = 0xE9;
pub const EXIT_PORT: u16 = 0xF4;
pub const COM1: u16 = crate::devices::uart16550::COM1_BASE;
pub const POST_PORT: u16 = 0x80;
pub const DELAY_PORT: u16 = 0xED;
pub const PORT92: u16 = 0x92;
const RTC_INDEX: u16 = crate::devices::rtc::INDEX_PORT;
const RTC_DATA: u16 = crate::devices::rtc::DATA_PORT;
const FW_CFG_SELECTOR: u16 = crate::devices::fw_cfg::SELECTOR_PORT;
const FW_CFG_DATA: u16 = crate::devices::fw_cfg::DATA_PORT;

pub fn handle(domain: &Domain, vcpu: &mut Vcpu, q: IoQualification) -> Next {
    let bytes = q.size.bytes();
    if q.string {
        // INS/OUTS need guest-linear address translation; no port we emulate supports
        // them yet, so they get the empty-bus treatment without touching memory.
        count(domain, q.port);
        return Next::Advance;
    }
    match (q.direction, q.port) {
        // Domain0 owns the machine's PCI configuration space and reset register; its
        // accesses go to the hardware, filtered (`arch::pci::dom0_config`).
        (direction, 0xCF8..=0xCFF) if domain.is_dom0() => {
            let write = (direction == IoDirection::Out).then_some(vcpu.regs.rax as u32);
            let value = crate::arch::pci::dom0_config(q.port, bytes as u8, write);
            if write.is_none() {
                set_in(vcpu, bytes, value);
            }
            Next::Advance
        }
        (IoDirection::Out, DEBUG_CONSOLE) => {
            domain.debug_port_output(&[vcpu.regs.rax as u8]);
            Next::Advance
        }
        // COM1 registers are 8 bits wide; a wider access reaches the first register only
        // (like an ISA device decoding one byte), and the upper bytes read all ones.
        (direction, port) if (COM1..COM1 + 8).contains(&port) => {
            let offset = (port - COM1) as u8;
            let mut tx = None;
            device(
                domain,
                vcpu,
                direction,
                bytes,
                |d| byte_reg(d.com1.read(offset)),
                |d, v| {
                    d.com1_in_use = true;
                    tx = d.com1.write(offset, v as u8).tx;
                },
            );
            if let Some(byte) = tx {
                console(domain, byte);
            }
            Next::Advance
        }
        // POST codes (0x80) and the delay port (0xED) exist on every PC and are written
        // by firmware and kernels as I/O delays: accepted silently, read as all ones.
        (IoDirection::Out, POST_PORT | DELAY_PORT) => Next::Advance,
        (IoDirection::In, POST_PORT | DELAY_PORT) => {
            set_in(vcpu, bytes, u32::MAX);
            Next::Advance
        }
        (IoDirection::In, PORT92) => {
            let v = domain.runtime.lock().devices.port92;
            set_in(vcpu, bytes, u32::from(v) | 0xFFFF_FF00);
            Next::Advance
        }
        (IoDirection::Out, PORT92) => {
            let v = vcpu.regs.rax as u8;
            // A20 (bit 1) stays enabled: guest RAM is never wrapped at 1 MiB.
            domain.runtime.lock().devices.port92 = (v & !1) | 0x02;
            if v & 1 != 0 {
                return power(domain, PowerRequest::Reset);
            }
            Next::Advance
        }
        // 8-bit devices: a wider access reaches the addressed register only.
        (direction, port) if matches!(port, 0x20 | 0x21 | 0xA0 | 0xA1 | 0x4D0 | 0x4D1) => {
            device(domain, vcpu, direction, bytes, |d| byte_reg(d.pic.read(port)), |d, v| d.pic_write(port, v as u8))
        }
        (direction, port) if matches!(port, 0x40..=0x43 | 0x61) => {
            let now = crate::arch::timer::now_ns();
            device(
                domain,
                vcpu,
                direction,
                bytes,
                |d| byte_reg(d.pit_read(port, now)),
                |d, v| d.pit_write(port, v as u8, now),
            )
        }
        (direction, port) if port == RTC_INDEX || port == RTC_DATA => {
            let now = crate::arch::timer::now_ns();
            device(
                domain,
                vcpu,
                direction,
                bytes,
                |d| byte_reg(d.rtc_read(port, now)),
                |d, v| d.rtc_write(port, v as u8, now),
            )
        }
        (direction, port) if PciHost::claims(port, bytes as u8) => {
            let size = bytes as u8;
            device(domain, vcpu, direction, bytes, |d| d.pci.read(port, size), |d, v| d.pci.write(port, size, v))
        }
        (direction, port) if port == FW_CFG_SELECTOR || port == FW_CFG_DATA => {
            let size = bytes as u8;
            device(domain, vcpu, direction, bytes, |d| d.fw_cfg.read(port, size), |d, v| d.fw_cfg.write(port, size, v))
        }
        (direction, port) if AcpiPm::claims(port) => {
            let now = crate::arch::timer::now_ns();
            match direction {
                IoDirection::In => {
                    let v = domain.devices(|d, _| d.pm.read(port, bytes as u8, now));
                    set_in(vcpu, bytes, v);
                    Next::Advance
                }
                IoDirection::Out => {
                    // Through `devices`: a PM1 status or enable write moves the SCI.
                    let value = vcpu.regs.rax as u32;
                    let request = domain.devices(|d, _| d.pm.write(port, bytes as u8, value));
                    match request {
                        Some(r) => power(domain, r),
                        None => Next::Advance,
                    }
                }
            }
        }
        (IoDirection::Out, EXIT_PORT) => {
            let status = vcpu.regs.rax as u8;
            if domain.finish(DomainState::ShutDown, Some(status)) {
                log::info!("domain {} exited status={status}", domain.name);
                crate::domain::lifecycle::after_poweroff(domain);
            }
            Next::Ended
        }
        (IoDirection::In, _) => {
            count(domain, q.port);
            set_in(vcpu, bytes, u32::MAX);
            Next::Advance
        }
        (IoDirection::Out, _) => {
            count(domain, q.port);
            Next::Advance
        }
    }
}

/// One port access to a device model of the domain: `read` or `write` runs on the
/// domain's devices under their lock; an IN's value goes to AL/AX/EAX.
fn device(
    domain: &Domain,
    vcpu: &mut Vcpu,
    direction: IoDirection,
    bytes: u32,
    read: impl FnOnce(&mut DomainDevices) -> u32,
    write: impl FnOnce(&mut DomainDevices, u32),
) -> Next {
    // Through `Domain::devices`, so that what the access changed on an interrupt line
    // (a UART interrupt enabled, a PIT reprogrammed, a PIC unmasked) takes effect now.
    match direction {
        IoDirection::In => {
            let v = domain.devices(|d, _| read(d));
            set_in(vcpu, bytes, v);
        }
        IoDirection::Out => {
            let value = vcpu.regs.rax as u32;
            domain.devices(|d, _| write(d, value));
        }
    }
    Next::Advance
}

/// An 8-bit register's value for an access of any width: the bytes above it read as
/// all ones, like an ISA device decoding one byte.
fn byte_reg(v: u8) -> u32 {
    u32::from(v) | 0xFFFF_FF00
}

/// An IN's result: `bytes` of `value` into AL/AX/EAX (a 32-bit IN zero-extends into RAX).
fn set_in(vcpu: &mut Vcpu, bytes: u32, value: u32) {
    vcpu.regs.rax = match bytes {
        1 => (vcpu.regs.rax & !0xFF) | u64::from(value & 0xFF),
        2 => (vcpu.regs.rax & !0xFFFF) | u64::from(value & 0xFFFF),
        _ => u64::from(value),
    };
}

/// The guest powered itself off, asked for a reset, or for a sleep state it lacks.
fn power(domain: &Domain, request: PowerRequest) -> Next {
    match request {
        PowerRequest::PowerOff => {
            if domain.finish(DomainState::ShutDown, Some(0)) {
                log::info!("domain {} powered off (ACPI S5)", domain.name);
                crate::domain::lifecycle::after_poweroff(domain);
            }
        }
        PowerRequest::SleepRefused(sleep_type) => {
            // A guest may ask in a loop: the first request of each type is told, then
            // the count now and then (`domain::unclaimed::Tally`).
            match domain.runtime.lock().sleeps_refused.count(sleep_type) {
                Report::First => log::warn!(
                    "domain {} asked for ACPI sleep type {sleep_type}, which its DSDT does not offer (only S5); \
                     it wakes at once",
                    domain.name
                ),
                Report::Total(n) => log::warn!("domain {}: {n} ACPI sleep requests refused", domain.name),
                Report::Quiet => {}
            }
            return Next::Advance;
        }
        PowerRequest::Reset => {
            // The guest reset itself: the domain is rebuilt from its image (as Xen's
            // on_reboot = "restart"), from this vCPU's exit path.
            log::info!("domain {} asked for a reset", domain.name);
            crate::domain::lifecycle::reboot_self(domain);
        }
    }
    Next::Ended
}

/// One byte of the domain's console output.
fn console(domain: &Domain, byte: u8) {
    domain.console_output(&[byte]);
}

fn count(domain: &Domain, port: u16) {
    domain.runtime.lock().unclaimed_ports.count(port);
}
