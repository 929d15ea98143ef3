//! PCI configuration mechanism #1 (PCI Local Bus Specification 3.0, 3.2.2.3.2 "Software
//! Generation of Configuration Transactions", "Configuration Mechanism #1") with a single
//! device on it: the host bridge at bus 0, device 0, function 0. It identifies itself as an
//! Intel 82441FX (i440FX) PMC, vendor 0x8086 device 0x1237 revision 0x02, as QEMU's `pc`
//! machine does, so that guests probing the bus find a familiar, driver-less host bridge.
//! It touches no hardware: the exit handler passes port accesses to [`PciHost::read`] and
//! [`PciHost::write`].
//!
//! Modelled:
//! - CONFIG_ADDRESS (0xCF8): latched by 32-bit writes only. Bit 31 is the enable bit, bits
//!   23:16 the bus, 15:11 the device, 10:8 the function and 7:2 the dword register. Bits 30:24
//!   are reserved and bits 1:0 are read-only; both read as 0 (section 3.2.2.3.2: "must return
//!   0's when read"). A 32-bit read returns the latched value.
//! - CONFIG_DATA (0xCFC..=0xCFF): 1, 2 and 4-byte accesses; byte lane `port - 0xCFC` selects
//!   the byte of the addressed dword, so a byte read of 0xCFE returns register byte 2.
//!   Bytes of an access that run past 0xCFF are not config data and read 0xFF.
//! - Type 0 configuration space of the host bridge (section 6.1 "Configuration Space
//!   Organization"): vendor, device, class 06/00/00 (host bridge), header type 0
//!   (single-function), no BARs, no capabilities, no interrupt.
//!
//! Choices where the specification leaves room:
//! - Only the Command register is writable, and only its I/O Space, Memory Space, Bus Master,
//!   Parity Error Response, SERR# Enable and Interrupt Disable bits (the set QEMU makes
//!   writable on every device); it resets to 0. Everything else, including the i440FX's
//!   device-specific registers (PAM, SMRAM) at 0x40..=0xFF which read 0, ignores writes:
//!   firmware that programs shadow RAM has no effect, which suits a guest that boots without
//!   a BIOS. Status bits are never set, so its write-one-to-clear bits have nothing to clear.
//! - Any bus other than 0, any device other than 0, and functions 1..=7 of device 0 do not
//!   exist: reads return all ones, which is how the spec has software detect an empty slot
//!   ("Vendor ID ... 0FFFFh"), and writes are dropped.
//! - With the enable bit clear, CONFIG_DATA accesses are "passed through as normal I/O
//!   transactions" that no device claims: reads return all ones, writes are dropped.
//! - Accesses to 0xCF8..=0xCFB other than a 32-bit access at 0xCF8 are, per the spec, passed
//!   through to the I/O bus rather than taken by the bridge. This model answers them as an
//!   empty bus (all ones, writes ignored) and [`PciHost::claims`] reports them as not its own:
//!   the reset control register at 0xCF9 (byte accesses) belongs to the `acpi_pm` model, and
//!   the exit handler should route it there first.

/// The CONFIG_ADDRESS register (32-bit accesses only).
pub const CONFIG_ADDRESS: u16 = 0xCF8;
/// The first port of the CONFIG_DATA window (0xCFC..=0xCFF).
pub const CONFIG_DATA: u16 = 0xCFC;
/// CONFIG_ADDRESS bit 31: configuration cycles enabled.
pub const ENABLE: u32 = 1 << 31;
/// The CONFIG_ADDRESS bits that hold state: enable, bus, device, function, register.
/// Bits 30:24 (reserved) and 1:0 read as 0.
pub const ADDRESS_MASK: u32 = 0x80FF_FFFC;

/// The host bridge's identity, as QEMU's i440FX.
pub const VENDOR_ID: u16 = 0x8086;
pub const DEVICE_ID: u16 = 0x1237;
pub const REVISION_ID: u8 = 0x02;
/// Base class 06h (bridge), sub-class 00h (host bridge), programming interface 00h.
pub const CLASS_BRIDGE: u8 = 0x06;
pub const SUBCLASS_HOST: u8 = 0x00;

/// Offsets in the type 0 configuration space header.
pub mod reg {
    pub const VENDOR_ID: u8 = 0x00;
    pub const DEVICE_ID: u8 = 0x02;
    pub const COMMAND: u8 = 0x04;
    pub const STATUS: u8 = 0x06;
    pub const REVISION_ID: u8 = 0x08;
    pub const PROG_IF: u8 = 0x09;
    pub const SUBCLASS: u8 = 0x0A;
    pub const CLASS: u8 = 0x0B;
    pub const HEADER_TYPE: u8 = 0x0E;
    pub const BAR0: u8 = 0x10;
    pub const INTERRUPT_LINE: u8 = 0x3C;
}

/// Command register bits (section 6.2.2 "Device Control").
pub mod command {
    pub const IO_SPACE: u16 = 1 << 0;
    pub const MEMORY_SPACE: u16 = 1 << 1;
    pub const BUS_MASTER: u16 = 1 << 2;
    pub const PARITY_ERROR_RESPONSE: u16 = 1 << 6;
    pub const SERR_ENABLE: u16 = 1 << 8;
    pub const INTERRUPT_DISABLE: u16 = 1 << 10;
    /// The bits a guest can change; the others are hardwired to 0.
    pub const WRITABLE: u16 =
        IO_SPACE | MEMORY_SPACE | BUS_MASTER | PARITY_ERROR_RESPONSE | SERR_ENABLE | INTERRUPT_DISABLE;
}

/// Status: fast back-to-back capable (bit 7) and medium DEVSEL# timing (bits 10:9 = 01), the
/// values of a conventional PCI device without capabilities. Read-only here.
pub const STATUS: u16 = 0x0280;

/// Size of the conventional configuration space reachable through mechanism #1.
const CONFIG_SPACE_SIZE: usize = 256;

/// The read-only image of the host bridge's configuration space; the Command register bytes
/// are overlaid from [`PciHost::command`]. Evaluated at compile time, so its constant indices
/// are checked by the compiler and cannot panic at run time.
const fn host_bridge_config() -> [u8; CONFIG_SPACE_SIZE] {
    let mut c = [0u8; CONFIG_SPACE_SIZE];
    let vendor = VENDOR_ID.to_le_bytes();
    let device = DEVICE_ID.to_le_bytes();
    let status = STATUS.to_le_bytes();
    c[reg::VENDOR_ID as usize] = vendor[0];
    c[reg::VENDOR_ID as usize + 1] = vendor[1];
    c[reg::DEVICE_ID as usize] = device[0];
    c[reg::DEVICE_ID as usize + 1] = device[1];
    c[reg::STATUS as usize] = status[0];
    c[reg::STATUS as usize + 1] = status[1];
    c[reg::REVISION_ID as usize] = REVISION_ID;
    c[reg::PROG_IF as usize] = 0x00;
    c[reg::SUBCLASS as usize] = SUBCLASS_HOST;
    c[reg::CLASS as usize] = CLASS_BRIDGE;
    // Header type 0, bit 7 clear: single-function, so software need not probe functions 1-7.
    c[reg::HEADER_TYPE as usize] = 0x00;
    c
}

const HOST_BRIDGE_CONFIG: [u8; CONFIG_SPACE_SIZE] = host_bridge_config();

/// The host side of configuration mechanism #1 and the host bridge behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciHost {
    /// CONFIG_ADDRESS as latched, already masked with [`ADDRESS_MASK`].
    address: u32,
    /// The host bridge's Command register (only [`command::WRITABLE`] bits can be set).
    command: u16,
}

impl Default for PciHost {
    fn default() -> Self {
        Self::new()
    }
}

impl PciHost {
    /// The reset state: CONFIG_ADDRESS 0 (disabled), Command 0.
    pub const fn new() -> Self {
        PciHost { address: 0, command: 0 }
    }

    /// Whether an access of `size` bytes at `port` is this model's: a 32-bit access to
    /// CONFIG_ADDRESS, or any access starting in CONFIG_DATA. Everything else in 0xCF8..=0xCFB
    /// (notably the byte-wide reset register at 0xCF9) passes through to other devices.
    pub fn claims(port: u16, size: u8) -> bool {
        (port == CONFIG_ADDRESS && size == 4) || (CONFIG_DATA..=CONFIG_DATA + 3).contains(&port)
    }

    /// Guest read of `size` bytes (1, 2 or 4) at `port`.
    pub fn read(&mut self, port: u16, size: u8) -> u32 {
        match port {
            CONFIG_ADDRESS if size == 4 => self.address,
            p if (CONFIG_DATA..=CONFIG_DATA + 3).contains(&p) => {
                let mut value = 0u32;
                for i in 0..bytes(size) {
                    let byte = match data_lane(p, i) {
                        Some(lane) => self.config_read_byte(lane),
                        // Past 0xCFF: not a CONFIG_DATA byte, nothing answers.
                        None => 0xFF,
                    };
                    value |= u32::from(byte) << (8 * i);
                }
                value
            }
            _ => mask(u32::MAX, size),
        }
    }

    /// Guest write of `size` bytes (1, 2 or 4) at `port`.
    pub fn write(&mut self, port: u16, size: u8, value: u32) {
        match port {
            CONFIG_ADDRESS if size == 4 => self.address = value & ADDRESS_MASK,
            p if (CONFIG_DATA..=CONFIG_DATA + 3).contains(&p) => {
                for i in 0..bytes(size) {
                    if let Some(lane) = data_lane(p, i) {
                        self.config_write_byte(lane, (value >> (8 * i)) as u8);
                    }
                }
            }
            // Narrow accesses to 0xCF8..=0xCFB are not CONFIG_ADDRESS cycles (see module doc).
            _ => {}
        }
    }

    /// The latched CONFIG_ADDRESS.
    pub fn address(&self) -> u32 {
        self.address
    }

    /// The host bridge's Command register.
    pub fn command(&self) -> u16 {
        self.command
    }

    /// Offset in the host bridge's configuration space that byte lane `lane` of the current
    /// CONFIG_ADDRESS reaches, or None when no function answers: enable bit clear, or a
    /// bus/device/function other than 00:00.0.
    fn target(&self, lane: u8) -> Option<usize> {
        if self.address & ENABLE == 0 {
            return None;
        }
        // Bus (23:16), device (15:11) and function (10:8) must all be 0.
        if self.address & 0x00FF_FF00 != 0 {
            return None;
        }
        Some((self.address & 0xFC) as usize + usize::from(lane & 3))
    }

    fn config_read_byte(&self, lane: u8) -> u8 {
        let Some(offset) = self.target(lane) else { return 0xFF };
        let command = self.command.to_le_bytes();
        match offset {
            0x04 => command[0],
            0x05 => command[1],
            _ => HOST_BRIDGE_CONFIG.get(offset).copied().unwrap_or(0xFF),
        }
    }

    fn config_write_byte(&mut self, lane: u8, byte: u8) {
        let Some(offset) = self.target(lane) else { return };
        let [mut low, mut high] = self.command.to_le_bytes();
        let [writable_low, writable_high] = command::WRITABLE.to_le_bytes();
        match offset {
            0x04 => low = byte & writable_low,
            0x05 => high = byte & writable_high,
            // Every other register of the host bridge is read-only.
            _ => return,
        }
        self.command = u16::from_le_bytes([low, high]);
    }
}

/// Byte lane (0..=3) of CONFIG_DATA that byte `i` of an access starting at `port` hits, or
/// None if that byte lies beyond 0xCFF.
fn data_lane(port: u16, i: u32) -> Option<u8> {
    let lane = u32::from(port.checked_sub(CONFIG_DATA)?).checked_add(i)?;
    if lane < 4 { Some(lane as u8) } else { None }
}

/// Bytes in an access of `size`; sizes other than 1 and 2 are treated as 4.
fn bytes(size: u8) -> u32 {
    match size {
        1 => 1,
        2 => 2,
        _ => 4,
    }
}

fn mask(v: u32, size: u8) -> u32 {
    match size {
        1 => v & 0xFF,
        2 => v & 0xFFFF,
        _ => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CONFIG_ADDRESS value for a register of bus:device.function.
    fn address(bus: u32, device: u32, function: u32, register: u32) -> u32 {
        ENABLE | bus << 16 | device << 11 | function << 8 | (register & 0xFC)
    }

    fn read32(p: &mut PciHost, bus: u32, device: u32, function: u32, register: u32) -> u32 {
        p.write(CONFIG_ADDRESS, 4, address(bus, device, function, register));
        p.read(CONFIG_DATA, 4)
    }

    #[test]
    fn host_bridge_00_00_0_is_an_intel_440fx() {
        let mut p = PciHost::new();
        assert_eq!(read32(&mut p, 0, 0, 0, 0x00), 0x1237_8086);
        // Class 06, subclass 00, prog-if 00, revision 02.
        assert_eq!(read32(&mut p, 0, 0, 0, 0x08), 0x0600_0002);
        // BIST 0, header type 0 (single function), latency timer 0, cache line size 0.
        assert_eq!(read32(&mut p, 0, 0, 0, 0x0C), 0x0000_0000);
        assert_eq!(read32(&mut p, 0, 0, 0, 0x04), 0x0280_0000, "status 0x0280, command 0");
    }

    #[test]
    fn the_host_bridge_has_no_bars_no_capabilities_and_no_interrupt() {
        let mut p = PciHost::new();
        for register in (0x10..=0x24).step_by(4) {
            assert_eq!(read32(&mut p, 0, 0, 0, register), 0, "BAR at {register:#x}");
        }
        assert_eq!(read32(&mut p, 0, 0, 0, 0x34), 0, "capabilities pointer");
        assert_eq!(read32(&mut p, 0, 0, 0, 0x3C), 0, "interrupt line/pin");
    }

    #[test]
    fn nonexistent_functions_devices_and_buses_read_all_ones() {
        let mut p = PciHost::new();
        for (bus, device, function) in [(0, 1, 0), (0, 0, 1), (0, 0, 7), (0, 31, 0), (1, 0, 0), (255, 31, 7)] {
            assert_eq!(read32(&mut p, bus, device, function, 0), 0xFFFF_FFFF, "{bus:02x}:{device:02x}.{function}");
            assert_eq!(p.read(CONFIG_DATA, 2), 0xFFFF);
            assert_eq!(p.read(CONFIG_DATA + 3, 1), 0xFF);
        }
    }

    #[test]
    fn config_data_reads_all_ones_while_the_enable_bit_is_clear() {
        let mut p = PciHost::new();
        assert_eq!(p.read(CONFIG_DATA, 4), 0xFFFF_FFFF, "at reset");
        p.write(CONFIG_ADDRESS, 4, address(0, 0, 0, 0) & !ENABLE);
        assert_eq!(p.read(CONFIG_DATA, 4), 0xFFFF_FFFF);
        assert_eq!(p.read(CONFIG_DATA + 1, 1), 0xFF);
        p.write(CONFIG_DATA, 2, 0x0007);
        p.write(CONFIG_ADDRESS, 4, address(0, 0, 0, 4));
        assert_eq!(p.read(CONFIG_DATA, 2), 0, "the disabled write did not reach the command register");
    }

    #[test]
    fn config_address_reads_back_with_reserved_bits_as_zero() {
        let mut p = PciHost::new();
        p.write(CONFIG_ADDRESS, 4, 0xFFFF_FFFF);
        assert_eq!(p.read(CONFIG_ADDRESS, 4), 0x80FF_FFFC);
        p.write(CONFIG_ADDRESS, 4, 0x8000_0810);
        assert_eq!(p.read(CONFIG_ADDRESS, 4), 0x8000_0810);
        assert_eq!(p.address(), 0x8000_0810);
    }

    #[test]
    fn only_dword_accesses_reach_config_address() {
        let mut p = PciHost::new();
        p.write(CONFIG_ADDRESS, 4, address(0, 0, 0, 0));
        p.write(CONFIG_ADDRESS, 1, 0x08);
        p.write(CONFIG_ADDRESS, 2, 0x0008);
        p.write(CONFIG_ADDRESS + 1, 1, 0x06);
        assert_eq!(p.address(), 0x8000_0000);
        assert_eq!(p.read(CONFIG_ADDRESS, 1), 0xFF);
        assert_eq!(p.read(CONFIG_ADDRESS, 2), 0xFFFF);
        assert_eq!(p.read(CONFIG_ADDRESS + 1, 1), 0xFF, "0xCF9 is the reset register, not ours");
        assert!(PciHost::claims(CONFIG_ADDRESS, 4));
        assert!(!PciHost::claims(CONFIG_ADDRESS, 1));
        assert!(!PciHost::claims(0xCF9, 1));
        assert!(!PciHost::claims(0xCFA, 2));
        for port in 0xCFC..=0xCFF {
            assert!(PciHost::claims(port, 1));
        }
        assert!(!PciHost::claims(0xD00, 1));
    }

    #[test]
    fn byte_and_word_accesses_pick_the_byte_lane_of_their_port() {
        let mut p = PciHost::new();
        p.write(CONFIG_ADDRESS, 4, address(0, 0, 0, 0x00));
        assert_eq!(p.read(0xCFC, 1), 0x86);
        assert_eq!(p.read(0xCFD, 1), 0x80);
        assert_eq!(p.read(0xCFE, 1), 0x37);
        assert_eq!(p.read(0xCFF, 1), 0x12);
        assert_eq!(p.read(0xCFC, 2), 0x8086);
        assert_eq!(p.read(0xCFE, 2), 0x1237);
        assert_eq!(p.read(0xCFD, 2), 0x3780, "an unaligned word inside the dword");
        p.write(CONFIG_ADDRESS, 4, address(0, 0, 0, 0x08));
        assert_eq!(p.read(0xCFF, 1), 0x06, "class code");
        assert_eq!(p.read(0xCFE, 1), 0x00, "subclass");
        assert_eq!(p.read(0xCFC, 1), 0x02, "revision");
    }

    #[test]
    fn bytes_of_an_access_past_0xcff_read_as_an_empty_bus() {
        let mut p = PciHost::new();
        p.write(CONFIG_ADDRESS, 4, address(0, 0, 0, 0x00));
        assert_eq!(p.read(0xCFE, 4), 0xFFFF_1237);
        assert_eq!(p.read(0xCFF, 2), 0xFF12);
    }

    #[test]
    fn the_low_address_bits_of_config_address_do_not_shift_the_lane() {
        let mut p = PciHost::new();
        // Bits 1:0 are ignored; the lane comes from the data port alone.
        p.write(CONFIG_ADDRESS, 4, address(0, 0, 0, 0x00) | 0x3);
        assert_eq!(p.read(0xCFC, 1), 0x86);
    }

    #[test]
    fn the_command_register_keeps_only_its_writable_bits() {
        let mut p = PciHost::new();
        p.write(CONFIG_ADDRESS, 4, address(0, 0, 0, 0x04));
        p.write(CONFIG_DATA, 2, 0xFFFF);
        assert_eq!(p.command(), 0x0547);
        assert_eq!(p.read(CONFIG_DATA, 4), 0x0280_0547, "status unchanged");
        p.write(CONFIG_DATA, 1, 0x02);
        assert_eq!(p.command(), 0x0502, "a byte write replaces only the low byte");
        p.write(0xCFD, 1, 0x00);
        assert_eq!(p.command(), 0x0002);
        p.write(CONFIG_DATA, 4, 0xFFFF_0006);
        assert_eq!(p.read(CONFIG_DATA, 4), 0x0280_0006, "status ignores the dword write's upper half");
    }

    #[test]
    fn read_only_registers_ignore_writes() {
        let mut p = PciHost::new();
        for register in (0x00..0x100).step_by(4) {
            p.write(CONFIG_ADDRESS, 4, address(0, 0, 0, register));
            let before = p.read(CONFIG_DATA, 4);
            p.write(CONFIG_DATA, 4, 0xFFFF_FFFF);
            p.write(CONFIG_DATA + 1, 1, 0x5A);
            p.write(CONFIG_DATA + 2, 2, 0xA5A5);
            let after = p.read(CONFIG_DATA, 4);
            if register == 0x04 {
                // 0xFFFF, then 0x5A into the high byte keeps only SERR# Enable's and Interrupt
                // Disable's positions, both 0 in 0x5A.
                assert_eq!(after, 0x0280_0047);
            } else {
                assert_eq!(after, before, "register {register:#x}");
            }
        }
        // A BAR sizing write reads back 0: no BAR implemented.
        assert_eq!(read32(&mut p, 0, 0, 0, 0x10), 0);
    }

    #[test]
    fn writes_to_nonexistent_functions_change_nothing() {
        let mut p = PciHost::new();
        let before = p.clone();
        p.write(CONFIG_ADDRESS, 4, address(0, 1, 0, 0x04));
        p.write(CONFIG_DATA, 4, 0xFFFF_FFFF);
        p.write(CONFIG_ADDRESS, 4, address(1, 0, 0, 0x04));
        p.write(CONFIG_DATA, 4, 0xFFFF_FFFF);
        assert_eq!(p.command(), before.command());
    }

    #[test]
    fn unrelated_ports_read_all_ones_masked_to_the_size() {
        let mut p = PciHost::new();
        for port in [0x0000u16, 0xCF7, 0xCFA, 0xCFB, 0xD00, 0xFFFF] {
            assert_eq!(p.read(port, 1), 0xFF);
            assert_eq!(p.read(port, 2), 0xFFFF);
            assert_eq!(p.read(port, 4), 0xFFFF_FFFF);
            p.write(port, 4, 0);
        }
        assert_eq!(p, PciHost::new());
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    #[test]
    fn random_accesses_never_panic_and_keep_the_identity_and_the_reserved_bits() {
        let mut rng = XorShift(0x0123_4567_89AB_CDEF);
        let mut p = PciHost::new();
        for _ in 0..200_000 {
            let r = rng.next();
            let port = 0xCF6 + (r >> 8) as u16 % 12;
            let size = [1u8, 2, 4, 3, 0][(r >> 16) as usize % 5];
            let value = (r >> 32) as u32;
            match r % 3 {
                0 => {
                    let v = p.read(port, size);
                    assert!(matches!(size, 3 | 0 | 4) || v < 1 << (8 * u32::from(size)));
                }
                1 => p.write(port, size, value),
                _ => {
                    // Aim at the host bridge often enough to hit every register.
                    p.write(CONFIG_ADDRESS, 4, (value & !0x00FF_FF00) | ENABLE);
                    p.write(CONFIG_DATA + (r >> 24) as u16 % 4, size, (r >> 40) as u32);
                }
            }
            assert_eq!(p.address() & !ADDRESS_MASK, 0);
            assert_eq!(p.command() & !command::WRITABLE, 0);
        }
        assert_eq!(read32(&mut p, 0, 0, 0, 0), 0x1237_8086);
        assert_eq!(read32(&mut p, 0, 0, 0, 8), 0x0600_0002);
    }
}
