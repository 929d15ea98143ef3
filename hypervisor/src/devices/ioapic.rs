//! A register-level model of the I/O APIC as a guest sees it at [`IOAPIC_BASE`]: 24 interrupt input pins, each
//! routed by a redirection table entry to a local APIC. It touches no hardware: the MMIO exit handler forwards
//! the guest's 32-bit accesses, device models drive the pins through [`IoApic::set_irq`], the local APIC's EOI
//! of a level-triggered vector comes back through [`IoApic::eoi`], and every call returns the interrupt (if
//! any) the caller must deliver to the local APIC(s) named by the returned [`Delivery`].
//!
//! Reference: Intel 82093AA I/O Advanced Programmable Interrupt Controller (IOAPIC) datasheet, section 3
//! "Register Description" (IOREGSEL, IOWIN, IOAPICID, IOAPICVER, IOAPICARB, IOREDTBL[0:23]), and, for the
//! version-0x20 EOI register at offset 0x40, the I/O APIC chapter of the Intel ICH/PCH datasheets.
//!
//! Choices where the datasheets leave room (documented once here, referred to below):
//! - MMIO decode: only offsets 0x00 (IOREGSEL), 0x10 (IOWIN) and 0x40 (EOI, write-only) are registers. Any
//!   other offset reads 0 and ignores writes; so do IOREGSEL values that name no register (0x03..=0x0F and
//!   0x40..=0xFF), as in QEMU's model.
//! - IOREGSEL keeps bits 7:0 (the register address); bits 31:8 are reserved and read 0.
//! - The ID register keeps bits 27:24 only (4-bit ID, as on the 82093AA); [`IoApic::new`] masks its argument
//!   the same way. The arbitration ID register reads the ID (it is loaded from it on reset) and is read-only.
//! - Redirection entries keep only their defined bits: low dword bits 16:0 without the read-only delivery
//!   status (12) and Remote IRR (14), high dword bits 31:24 (destination, RTE bits 63:56). Reserved bits,
//!   including the chipset-specific extended destination ID (RTE bits 55:48), are dropped and read 0.
//! - Delivery status (bit 12) always reads 0 (idle): delivery to the local APIC is immediate here, so nothing
//!   is ever "send pending".
//! - Pin levels are electrical: [`IoApic::set_irq`]'s `level` is the voltage on the pin (true = high). An entry
//!   with polarity active-high (bit 13 = 0) sees the interrupt asserted while the pin is high; active-low
//!   (bit 13 = 1) sees it asserted while the pin is low. All pins start low, so a caller that describes a line as
//!   active-low to the guest (ACPI MADT/_PRT) must drive it high (idle) at setup and low to assert it.
//! - Only Fixed and LowestPriority entries can be level-triggered. The datasheet has SMI, NMI, INIT and ExtINT
//!   treated as (or required to be) edge-triggered, and they carry no EOI-able vector, so for those delivery
//!   modes bit 15 is stored and read back but the entry behaves as edge-triggered and never sets Remote IRR.
//! - Masked edges are lost ("edge-sensitive interrupts signaled on a masked interrupt pin are ignored"). A
//!   level-triggered pin that is asserted when it is unmasked (or when its entry is rewritten) with Remote IRR
//!   clear is delivered at once, as KVM and QEMU do, so that a line raised while masked is not lost forever.
//!   Register writes never create an edge for edge-triggered entries (e.g. by flipping the polarity).
//! - Switching an entry to edge-triggered clears its Remote IRR, which the datasheet leaves undefined for edge
//!   mode; a stale bit would otherwise block the entry if it is later switched back to level.
//! - An EOI clears Remote IRR of every level-triggered entry with that vector whose line is no longer asserted,
//!   and re-delivers the first (lowest pin) entry whose line is still asserted and unmasked. Further entries
//!   that share the vector and are still asserted keep Remote IRR set: their interrupt is considered in
//!   service with the re-delivered one, and the EOI of that delivery clears them in turn, so sharing a vector
//!   never loses an interrupt although each call can only return one delivery.
//! - Vectors below 16 are delivered as programmed; the local APIC flags them as illegal.

/// Physical base address of the I/O APIC's MMIO window on a PC.
pub const IOAPIC_BASE: u64 = 0xFEC0_0000;
/// Number of interrupt input pins and redirection table entries.
pub const PINS: usize = 24;

/// MMIO offsets from [`IOAPIC_BASE`].
pub const IOREGSEL: u64 = 0x00;
pub const IOWIN: u64 = 0x10;
/// EOI register (version 0x20 I/O APICs): writing a vector acts like [`IoApic::eoi`].
pub const IOEOI: u64 = 0x40;

/// Indirect register addresses written to IOREGSEL.
pub mod reg {
    pub const ID: u32 = 0x00;
    pub const VERSION: u32 = 0x01;
    pub const ARBITRATION: u32 = 0x02;
    /// Redirection entry n occupies `REDTBL + 2n` (low dword) and `REDTBL + 2n + 1` (high dword).
    pub const REDTBL: u32 = 0x10;
}

/// Version register: maximum redirection entry 23 (bits 23:16), version 0x20 (bits 7:0).
pub const VERSION: u32 = ((PINS as u32 - 1) << 16) | 0x20;

/// Redirection entry bits (64-bit entry; the low dword is bits 31:0).
pub mod rte {
    pub const VECTOR: u64 = 0xFF;
    pub const DELIVERY_MODE_SHIFT: u32 = 8;
    pub const DELIVERY_MODE: u64 = 0x7 << DELIVERY_MODE_SHIFT;
    /// Destination mode: 0 physical, 1 logical.
    pub const DEST_LOGICAL: u64 = 1 << 11;
    /// Delivery status (read-only); always 0 in this model.
    pub const DELIVERY_STATUS: u64 = 1 << 12;
    /// Interrupt input pin polarity: 0 active high, 1 active low.
    pub const ACTIVE_LOW: u64 = 1 << 13;
    /// Remote IRR (read-only): a level-triggered interrupt was accepted and awaits its EOI.
    pub const REMOTE_IRR: u64 = 1 << 14;
    /// Trigger mode: 0 edge, 1 level.
    pub const LEVEL: u64 = 1 << 15;
    pub const MASKED: u64 = 1 << 16;
    pub const DEST_SHIFT: u32 = 56;
    pub const DEST: u64 = 0xFF << DEST_SHIFT;
    /// Bits the guest can write: everything defined except the read-only status bits.
    pub const WRITABLE: u64 = DEST | MASKED | LEVEL | ACTIVE_LOW | DEST_LOGICAL | DELIVERY_MODE | VECTOR;
}

/// Delivery modes (RTE bits 10:8) that can be level-triggered; the others behave as edge-triggered.
const DELIVERY_FIXED: u8 = 0;
const DELIVERY_LOWEST_PRIORITY: u8 = 1;

/// An interrupt message for the caller to send to the local APIC(s) it addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub vector: u8,
    /// RTE bits 10:8: 0 Fixed, 1 LowestPriority, 2 SMI, 4 NMI, 5 INIT, 7 ExtINT (3 and 6 reserved).
    pub delivery_mode: u8,
    /// Destination mode: logical (true) or physical APIC ID (false).
    pub dest_logical: bool,
    /// RTE bits 63:56: an APIC ID (physical) or a logical destination set.
    pub dest: u8,
    /// Level-triggered: the local APIC sets the vector's TMR bit and reports its EOI back to [`IoApic::eoi`].
    pub level: bool,
}

/// One I/O APIC. Plain data, so it can sit in a `static` or a lock-protected domain structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoApic {
    /// Bits 3:0 of the ID register (register bits 27:24).
    id: u8,
    /// IOREGSEL bits 7:0.
    ioregsel: u8,
    /// Redirection table; only `rte::WRITABLE | rte::REMOTE_IRR` bits are ever set.
    redtbl: [u64; PINS],
    /// Electrical level of each input pin (bit n = pin n high).
    pin_high: u32,
}

impl IoApic {
    /// Reset state: ID `id & 0xF`, every entry masked (all other entry bits 0), all pins low.
    pub const fn new(id: u8) -> Self {
        IoApic { id: id & 0x0F, ioregsel: 0, redtbl: [rte::MASKED; PINS], pin_high: 0 }
    }

    /// The I/O APIC ID (4 bits) the guest currently sees.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// The 64-bit redirection entry of `pin` as the guest reads it; None for a pin beyond [`PINS`].
    pub fn entry(&self, pin: u8) -> Option<u64> {
        self.redtbl.get(usize::from(pin)).copied()
    }

    /// Guest 32-bit read at `offset` from [`IOAPIC_BASE`]. See the module documentation for undecoded offsets.
    pub fn mmio_read(&mut self, offset: u64) -> u32 {
        match offset {
            IOREGSEL => u32::from(self.ioregsel),
            IOWIN => self.read_register(u32::from(self.ioregsel)),
            // IOEOI is write-only.
            _ => 0,
        }
    }

    /// Guest 32-bit write at `offset` from [`IOAPIC_BASE`]. Returns an interrupt to deliver when the write
    /// makes one due: unmasking (or rewriting) an asserted level-triggered entry, or an EOI that re-delivers.
    pub fn mmio_write(&mut self, offset: u64, value: u32) -> Option<Delivery> {
        match offset {
            IOREGSEL => {
                self.ioregsel = (value & 0xFF) as u8;
                None
            }
            IOWIN => self.write_register(u32::from(self.ioregsel), value),
            IOEOI => self.eoi((value & 0xFF) as u8),
            _ => None,
        }
    }

    /// Drives input `pin` to the electrical `level` (see the module documentation for polarity). An
    /// edge-triggered entry delivers on the rising edge of its asserted state when unmasked; a level-triggered
    /// entry delivers while asserted, unmasked and with Remote IRR clear, and then sets Remote IRR. Pins beyond
    /// [`PINS`] are ignored.
    pub fn set_irq(&mut self, pin: u8, level: bool) -> Option<Delivery> {
        let index = usize::from(pin);
        if index >= PINS {
            return None;
        }
        let was_asserted = self.asserted(index);
        let bit = 1u32 << index;
        if level {
            self.pin_high |= bit;
        } else {
            self.pin_high &= !bit;
        }
        let entry = self.redtbl.get(index).copied()?;
        if effective_level(entry) {
            self.service_level(index)
        } else if !was_asserted && self.asserted(index) && entry & rte::MASKED == 0 {
            Some(delivery(entry))
        } else {
            None
        }
    }

    /// EOI of `vector` from a local APIC (or the EOI register): clears Remote IRR of level-triggered entries
    /// with that vector and re-delivers one whose line is still asserted (see the module documentation).
    pub fn eoi(&mut self, vector: u8) -> Option<Delivery> {
        let mut redelivery = None;
        for index in 0..PINS {
            let Some(entry) = self.redtbl.get(index).copied() else { continue };
            if entry & rte::REMOTE_IRR == 0 || entry & rte::VECTOR != u64::from(vector) {
                continue;
            }
            if redelivery.is_some() && self.asserted(index) && entry & rte::MASKED == 0 {
                // Shared vector: stays in service until the EOI of the interrupt delivered below.
                continue;
            }
            if let Some(slot) = self.redtbl.get_mut(index) {
                *slot &= !rte::REMOTE_IRR;
            }
            if redelivery.is_none() {
                redelivery = self.service_level(index);
            }
        }
        redelivery
    }

    fn read_register(&self, address: u32) -> u32 {
        match address {
            reg::ID | reg::ARBITRATION => u32::from(self.id) << 24,
            reg::VERSION => VERSION,
            _ => match rte_slot(address) {
                Some((index, high)) => {
                    let entry = self.redtbl.get(index).copied().unwrap_or(0);
                    if high { (entry >> 32) as u32 } else { entry as u32 }
                }
                None => 0,
            },
        }
    }

    fn write_register(&mut self, address: u32, value: u32) -> Option<Delivery> {
        match address {
            reg::ID => {
                self.id = ((value >> 24) & 0x0F) as u8;
                None
            }
            // Version and arbitration ID are read-only.
            reg::VERSION | reg::ARBITRATION => None,
            _ => {
                let (index, high) = rte_slot(address)?;
                let slot = self.redtbl.get_mut(index)?;
                let old = *slot;
                let written = if high {
                    (u64::from(value) << 32) | (old & 0xFFFF_FFFF)
                } else {
                    (old & 0xFFFF_FFFF_0000_0000) | u64::from(value)
                };
                let mut entry = (written & rte::WRITABLE) | (old & rte::REMOTE_IRR);
                if !effective_level(entry) {
                    entry &= !rte::REMOTE_IRR;
                }
                *slot = entry;
                self.service_level(index)
            }
        }
    }

    /// Whether the interrupt on `index` is asserted: the pin level seen through the entry's polarity.
    fn asserted(&self, index: usize) -> bool {
        let high = self.pin_high.checked_shr(index as u32).unwrap_or(0) & 1 != 0;
        let active_low = self.redtbl.get(index).is_some_and(|entry| entry & rte::ACTIVE_LOW != 0);
        high != active_low
    }

    /// Delivers a level-triggered entry that is asserted, unmasked and not awaiting an EOI, setting Remote IRR.
    fn service_level(&mut self, index: usize) -> Option<Delivery> {
        let asserted = self.asserted(index);
        let slot = self.redtbl.get_mut(index)?;
        let entry = *slot;
        if !effective_level(entry) || !asserted || entry & (rte::MASKED | rte::REMOTE_IRR) != 0 {
            return None;
        }
        *slot = entry | rte::REMOTE_IRR;
        Some(delivery(entry))
    }
}

/// Maps an IOREGSEL address to (entry index, high dword), or None if it names no redirection entry.
fn rte_slot(address: u32) -> Option<(usize, bool)> {
    let offset = address.checked_sub(reg::REDTBL)?;
    let index = (offset / 2) as usize;
    (index < PINS).then_some((index, offset % 2 == 1))
}

fn delivery_mode(entry: u64) -> u8 {
    ((entry & rte::DELIVERY_MODE) >> rte::DELIVERY_MODE_SHIFT) as u8
}

/// Level-triggered in effect: trigger mode level and a delivery mode that has an EOI (see module docs).
fn effective_level(entry: u64) -> bool {
    let mode = delivery_mode(entry);
    entry & rte::LEVEL != 0 && (mode == DELIVERY_FIXED || mode == DELIVERY_LOWEST_PRIORITY)
}

fn delivery(entry: u64) -> Delivery {
    Delivery {
        vector: (entry & rte::VECTOR) as u8,
        delivery_mode: delivery_mode(entry),
        dest_logical: entry & rte::DEST_LOGICAL != 0,
        dest: (entry >> rte::DEST_SHIFT) as u8,
        level: effective_level(entry),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select_read(io: &mut IoApic, address: u32) -> u32 {
        io.mmio_write(IOREGSEL, address);
        io.mmio_read(IOWIN)
    }

    fn select_write(io: &mut IoApic, address: u32, value: u32) -> Option<Delivery> {
        io.mmio_write(IOREGSEL, address);
        io.mmio_write(IOWIN, value)
    }

    /// Programs entry `pin` with low dword `low` and destination `dest`, writing the high dword first as
    /// Linux does so that the entry is complete before it is unmasked.
    fn program(io: &mut IoApic, pin: u8, low: u32, dest: u8) -> Option<Delivery> {
        let base = reg::REDTBL + 2 * u32::from(pin);
        assert_eq!(select_write(io, base + 1, u32::from(dest) << 24), None);
        select_write(io, base, low)
    }

    const LEVEL: u32 = rte::LEVEL as u32;
    const MASKED: u32 = rte::MASKED as u32;
    const ACTIVE_LOW: u32 = rte::ACTIVE_LOW as u32;
    const REMOTE_IRR: u32 = rte::REMOTE_IRR as u32;

    fn fixed(vector: u8, dest: u8, level: bool) -> Delivery {
        Delivery { vector, delivery_mode: 0, dest_logical: false, dest, level }
    }

    #[test]
    fn version_id_and_arbitration_registers_read_as_specified() {
        let mut io = IoApic::new(2);
        assert_eq!(select_read(&mut io, reg::VERSION), 0x0017_0020);
        assert_eq!(select_read(&mut io, reg::ID), 0x0200_0000);
        assert_eq!(select_read(&mut io, reg::ARBITRATION), 0x0200_0000);
        select_write(&mut io, reg::ID, 0xFFFF_FFFF);
        assert_eq!(select_read(&mut io, reg::ID), 0x0F00_0000, "only bits 27:24 are kept");
        assert_eq!(io.id(), 0xF);
        select_write(&mut io, reg::ID, 0x0500_0000);
        select_write(&mut io, reg::VERSION, 0);
        select_write(&mut io, reg::ARBITRATION, 0);
        assert_eq!(select_read(&mut io, reg::VERSION), 0x0017_0020, "version is read-only");
        assert_eq!(select_read(&mut io, reg::ARBITRATION), 0x0500_0000, "arbitration ID follows the ID");
        assert_eq!(IoApic::new(0x13).id(), 3, "the ID is four bits");
    }

    #[test]
    fn ioregsel_reads_back_its_low_eight_bits() {
        let mut io = IoApic::new(0);
        io.mmio_write(IOREGSEL, 0x1234_5617);
        assert_eq!(io.mmio_read(IOREGSEL), 0x17);
    }

    #[test]
    fn all_entries_start_masked_with_everything_else_zero() {
        let mut io = IoApic::new(0);
        for pin in 0..PINS as u32 {
            assert_eq!(select_read(&mut io, reg::REDTBL + 2 * pin), 0x0001_0000);
            assert_eq!(select_read(&mut io, reg::REDTBL + 2 * pin + 1), 0);
        }
        assert_eq!(io.entry(0), Some(rte::MASKED));
        assert_eq!(io.entry(24), None);
    }

    #[test]
    fn a_programmed_edge_entry_delivers_its_vector_and_destination_on_a_rising_edge() {
        let mut io = IoApic::new(0);
        // Vector 0x31, LowestPriority, logical destination 0x03.
        assert_eq!(program(&mut io, 4, 0x0000_0931, 0x03), None);
        assert_eq!(select_read(&mut io, reg::REDTBL + 8), 0x0000_0931);
        assert_eq!(select_read(&mut io, reg::REDTBL + 9), 0x0300_0000);
        let expected = Delivery { vector: 0x31, delivery_mode: 1, dest_logical: true, dest: 0x03, level: false };
        assert_eq!(io.set_irq(4, true), Some(expected));
        assert_eq!(io.set_irq(4, false), None, "the falling edge delivers nothing");
        assert_eq!(io.set_irq(4, true), Some(expected), "every rising edge delivers");
    }

    #[test]
    fn edge_entry_does_not_redeliver_while_the_line_is_held_high() {
        let mut io = IoApic::new(0);
        program(&mut io, 2, 0x30, 0);
        assert_eq!(io.set_irq(2, true), Some(fixed(0x30, 0, false)));
        assert_eq!(io.set_irq(2, true), None);
        assert_eq!(io.eoi(0x30), None, "edge entries ignore EOI");
        assert_eq!(io.entry(2).map(|e| e & rte::REMOTE_IRR), Some(0));
    }

    #[test]
    fn masked_edge_pins_lose_the_edge_and_unmasking_while_high_delivers_nothing() {
        let mut io = IoApic::new(0);
        program(&mut io, 1, MASKED | 0x21, 0);
        assert_eq!(io.set_irq(1, true), None);
        assert_eq!(program(&mut io, 1, 0x21, 0), None);
        assert_eq!(io.set_irq(1, true), None, "still high: no new edge");
        io.set_irq(1, false);
        assert_eq!(io.set_irq(1, true), Some(fixed(0x21, 0, false)));
    }

    #[test]
    fn masked_level_pins_do_not_deliver_but_deliver_when_unmasked_while_high() {
        let mut io = IoApic::new(0);
        program(&mut io, 9, MASKED | LEVEL | 0x29, 1);
        assert_eq!(io.set_irq(9, true), None);
        assert_eq!(select_read(&mut io, reg::REDTBL + 18) & REMOTE_IRR, 0);
        assert_eq!(program(&mut io, 9, LEVEL | 0x29, 1), Some(fixed(0x29, 1, true)));
        assert_ne!(select_read(&mut io, reg::REDTBL + 18) & REMOTE_IRR, 0);
    }

    #[test]
    fn masked_level_pin_that_went_low_again_delivers_nothing_when_unmasked() {
        let mut io = IoApic::new(0);
        program(&mut io, 9, MASKED | LEVEL | 0x29, 1);
        io.set_irq(9, true);
        io.set_irq(9, false);
        assert_eq!(program(&mut io, 9, LEVEL | 0x29, 1), None);
    }

    #[test]
    fn level_entry_sets_remote_irr_and_does_not_redeliver_until_eoi() {
        let mut io = IoApic::new(0);
        program(&mut io, 16, LEVEL | 0x41, 0);
        assert_eq!(io.set_irq(16, true), Some(fixed(0x41, 0, true)));
        assert_ne!(select_read(&mut io, reg::REDTBL + 32) & REMOTE_IRR, 0);
        assert_eq!(io.set_irq(16, true), None);
        io.set_irq(16, false);
        assert_eq!(io.set_irq(16, true), None, "a new assertion waits for the EOI too");
        assert_eq!(io.eoi(0x42), None, "another vector's EOI changes nothing");
        assert_ne!(select_read(&mut io, reg::REDTBL + 32) & REMOTE_IRR, 0);
        assert_eq!(io.eoi(0x41), Some(fixed(0x41, 0, true)), "still high after the EOI: delivered again");
        assert_ne!(select_read(&mut io, reg::REDTBL + 32) & REMOTE_IRR, 0);
    }

    #[test]
    fn eoi_of_a_level_entry_whose_line_dropped_clears_remote_irr_without_redelivery() {
        let mut io = IoApic::new(0);
        program(&mut io, 16, LEVEL | 0x41, 0);
        io.set_irq(16, true);
        io.set_irq(16, false);
        assert_eq!(io.eoi(0x41), None);
        assert_eq!(select_read(&mut io, reg::REDTBL + 32) & REMOTE_IRR, 0);
        assert_eq!(io.set_irq(16, true), Some(fixed(0x41, 0, true)));
    }

    #[test]
    fn eoi_register_at_0x40_acts_like_an_eoi_and_reads_zero() {
        let mut io = IoApic::new(0);
        program(&mut io, 17, LEVEL | 0x51, 0);
        io.set_irq(17, true);
        assert_eq!(io.mmio_write(IOEOI, 0xFFFF_FF51), Some(fixed(0x51, 0, true)), "bits 31:8 are ignored");
        assert_eq!(io.mmio_read(IOEOI), 0);
    }

    #[test]
    fn eoi_of_a_shared_vector_redelivers_one_entry_at_a_time() {
        let mut io = IoApic::new(0);
        program(&mut io, 18, LEVEL | 0x60, 0);
        program(&mut io, 19, LEVEL | 0x60, 0);
        assert!(io.set_irq(18, true).is_some());
        assert!(io.set_irq(19, true).is_some());
        assert_eq!(io.eoi(0x60), Some(fixed(0x60, 0, true)));
        io.set_irq(18, false);
        // Pin 19 was kept in service by the previous EOI and is re-delivered by this one.
        assert_eq!(io.eoi(0x60), Some(fixed(0x60, 0, true)));
        io.set_irq(19, false);
        assert_eq!(io.eoi(0x60), None);
        assert_eq!(io.entry(18).map(|e| e & rte::REMOTE_IRR), Some(0));
        assert_eq!(io.entry(19).map(|e| e & rte::REMOTE_IRR), Some(0));
    }

    #[test]
    fn active_low_polarity_asserts_the_interrupt_while_the_pin_is_low() {
        let mut io = IoApic::new(0);
        io.set_irq(20, true); // idle level of an active-low line
        program(&mut io, 20, ACTIVE_LOW | LEVEL | 0x70, 0);
        assert_eq!(io.set_irq(20, true), None);
        assert_eq!(io.set_irq(20, false), Some(fixed(0x70, 0, true)));
        io.set_irq(20, true);
        assert_eq!(io.eoi(0x70), None, "released (high) before the EOI");
        let mut io = IoApic::new(0);
        io.set_irq(5, true);
        program(&mut io, 5, ACTIVE_LOW | 0x35, 0);
        assert_eq!(io.set_irq(5, false), Some(fixed(0x35, 0, false)), "falling pin = rising interrupt");
        assert_eq!(io.set_irq(5, true), None);
    }

    #[test]
    fn read_only_delivery_status_and_remote_irr_cannot_be_written() {
        let mut io = IoApic::new(0);
        select_write(&mut io, reg::REDTBL, 0xFFFF_FFFF);
        assert_eq!(select_read(&mut io, reg::REDTBL), 0x0001_AFFF, "bits 12, 14 and 31:17 read 0");
        select_write(&mut io, reg::REDTBL + 1, 0xFFFF_FFFF);
        assert_eq!(select_read(&mut io, reg::REDTBL + 1), 0xFF00_0000, "only the destination is kept");
        // A set Remote IRR survives a write of 0 to it.
        program(&mut io, 3, LEVEL | 0x40, 0);
        io.set_irq(3, true);
        select_write(&mut io, reg::REDTBL + 6, LEVEL | 0x40);
        assert_eq!(select_read(&mut io, reg::REDTBL + 6), REMOTE_IRR | LEVEL | 0x40);
    }

    #[test]
    fn switching_an_entry_to_edge_clears_remote_irr() {
        let mut io = IoApic::new(0);
        program(&mut io, 3, LEVEL | 0x40, 0);
        io.set_irq(3, true);
        select_write(&mut io, reg::REDTBL + 6, 0x40);
        assert_eq!(select_read(&mut io, reg::REDTBL + 6), 0x40);
    }

    #[test]
    fn nmi_entries_programmed_level_behave_as_edge_and_never_set_remote_irr() {
        let mut io = IoApic::new(0);
        program(&mut io, 7, LEVEL | (4 << 8), 0);
        let nmi = Delivery { vector: 0, delivery_mode: 4, dest_logical: false, dest: 0, level: false };
        assert_eq!(io.set_irq(7, true), Some(nmi));
        assert_eq!(io.set_irq(7, true), None);
        assert_eq!(select_read(&mut io, reg::REDTBL + 14), LEVEL | (4 << 8));
    }

    #[test]
    fn out_of_range_ioregsel_and_undecoded_offsets_read_zero_and_ignore_writes() {
        let mut io = IoApic::new(1);
        let before = io.clone();
        for address in (0x03..=0x0F).chain(0x40..=0xFF) {
            assert_eq!(select_write(&mut io, address, 0xFFFF_FFFF), None);
            assert_eq!(select_read(&mut io, address), 0, "register {address:#x}");
        }
        io.mmio_write(IOREGSEL, 0);
        for offset in [0x04, 0x08, 0x0C, 0x14, 0x20, 0x30, 0x44, 0x100, 0xFFF, u64::MAX] {
            assert_eq!(io.mmio_write(offset, 0xFFFF_FFFF), None);
            assert_eq!(io.mmio_read(offset), 0, "offset {offset:#x}");
        }
        assert_eq!(io, before);
        assert_eq!(io.set_irq(24, true), None);
        assert_eq!(io.set_irq(255, true), None);
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn random_accesses_never_panic_and_keep_entries_within_their_defined_bits() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut io = IoApic::new(0);
        let mut delivered = 0u32;
        for _ in 0..200_000 {
            let r = rng.next();
            let v = rng.next();
            let result = match r % 6 {
                0 => io.mmio_write(IOREGSEL, if v & 1 == 0 { (v >> 8) as u32 } else { ((v >> 8) % 64) as u32 }),
                1 => io.mmio_write([IOWIN, IOEOI, v >> 8][(v % 3) as usize], (v >> 16) as u32),
                2 => {
                    io.mmio_read([IOREGSEL, IOWIN, v >> 8][(v % 3) as usize]);
                    None
                }
                3 | 4 => io.set_irq(((v >> 8) % 30) as u8, v & 1 != 0),
                _ => io.eoi((v >> 8) as u8),
            };
            if let Some(d) = result {
                delivered += 1;
                assert!(d.delivery_mode < 8);
            }
            for pin in 0..PINS as u8 {
                let entry = io.entry(pin).unwrap_or(0);
                assert_eq!(entry & !(rte::WRITABLE | rte::REMOTE_IRR), 0);
                if !effective_level(entry) {
                    assert_eq!(entry & rte::REMOTE_IRR, 0);
                }
            }
        }
        assert!(delivered > 1000, "delivered {delivered}");
    }
}
