//! PCI base address registers: what a device decodes, from the values a BAR reads back
//! before and after writing all ones to it (PCI Local Bus Specification 3.0, 6.2.5.1
//! "Address Maps"). Pure, so the arithmetic is host-tested; `arch::pci` does the port
//! I/O and hands Domain0 the ranges.

/// One decoded BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bar {
    Memory { base: u64, size: u64, prefetchable: bool, is_64: bool },
    Io { base: u16, size: u16 },
}

impl Bar {
    /// Whether the BAR has an address assigned (firmware left it at zero otherwise).
    pub fn is_assigned(&self) -> bool {
        match *self {
            Bar::Memory { base, .. } => base != 0,
            Bar::Io { base, .. } => base != 0,
        }
    }
}

/// Decodes BAR `original` (with `upper_original` the next BAR for a 64-bit memory BAR)
/// from what it read after writing all ones: `probe` (and `upper_probe`). `None` for an
/// unimplemented BAR (reads back zero) or a nonsensical answer. The caller skips the
/// next BAR when the result is a 64-bit memory BAR.
pub fn decode(original: u32, probe: u32, upper_original: u32, upper_probe: u32) -> Option<Bar> {
    if original & 1 == 1 {
        // I/O: bits 31:2 address (16 bits used on x86), bit 1 reserved.
        let mask = probe & 0xFFFF_FFFC & 0xFFFF;
        if mask == 0 {
            return None;
        }
        let size = (!mask & 0xFFFF).wrapping_add(1) & 0xFFFF;
        let size = u16::try_from(size).ok().filter(|s| *s != 0 && s.is_power_of_two())?;
        return Some(Bar::Io { base: (original & 0xFFFC) as u16, size });
    }
    let kind = (original >> 1) & 0b11;
    let prefetchable = original & 0b1000 != 0;
    let (base, mask) = match kind {
        0b00 => (u64::from(original & 0xFFFF_FFF0), u64::from(probe & 0xFFFF_FFF0) | 0xFFFF_FFFF_0000_0000),
        0b10 => (
            u64::from(original & 0xFFFF_FFF0) | u64::from(upper_original) << 32,
            u64::from(probe & 0xFFFF_FFF0) | u64::from(upper_probe) << 32,
        ),
        _ => return None,
    };
    if mask & 0xFFFF_FFF0 == 0 && kind == 0 {
        return None;
    }
    if mask == 0 {
        return None;
    }
    let size = (!mask).wrapping_add(1);
    if size == 0 || !size.is_power_of_two() {
        return None;
    }
    Some(Bar::Memory { base, size, prefetchable, is_64: kind == 0b10 })
}

/// Whether Domain0 may have the memory BAR `base..base + size` mapped 1:1 (Xen's rule):
/// it must lie wholly in a hole of the machine's memory map, outside every range in
/// `ram` (what the map calls RAM, usable or not: the hypervisor's, other domains',
/// firmware tables) and in `kept` (MMIO the hypervisor drives itself: its local APIC,
/// its I/O APICs). A BAR that wraps the address space is refused too.
pub fn dom0_may_map(base: u64, size: u64, ram: &[(u64, u64)], kept: &[(u64, u64)]) -> bool {
    let Some(end) = base.checked_add(size) else { return false };
    size != 0 && ram.iter().chain(kept).all(|&(start, stop)| end <= start || stop <= base)
}

/// Whether configuration-space offset `offset` (a dword's, 0..=0xFC) of a function with
/// header type `header` (bits 6:0) holds an address decoder: a BAR or the expansion ROM
/// BAR (PCI Local Bus Specification 3.0, 6.1; the bridge header's two BARs and ROM BAR).
pub fn is_address_register(header: u8, offset: u8) -> bool {
    let offset = offset & 0xFC;
    match header & 0x7F {
        0 => (0x10..=0x24).contains(&offset) || offset == 0x30,
        1 => offset == 0x10 || offset == 0x14 || offset == 0x38,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain0_maps_bars_only_in_holes_of_the_memory_map() {
        let ram = [(0, 0x9_F000), (0x10_0000, 0x800_0000), (0x1_0000_0000, 0x1_4000_0000)];
        let kept = [(0xFEC0_0000, 0xFEC0_1000), (0xFEE0_0000, 0xFEE0_1000)];
        assert!(dom0_may_map(0xE000_0000, 16 << 20, &ram, &kept));
        assert!(dom0_may_map(0xFEBF_0000, 0x1_0000, &ram, &kept), "ends exactly where the I/O APIC starts");
        assert!(!dom0_may_map(0x7F0_0000, 0x20_0000, &ram, &kept), "into RAM");
        assert!(!dom0_may_map(0x1_3000_0000, 0x1000, &ram, &kept), "RAM above 4 GiB");
        assert!(!dom0_may_map(0xFEE0_0000, 0x1000, &ram, &kept), "the hypervisor's local APIC");
        assert!(!dom0_may_map(0xFE00_0000, 0x100_0000, &ram, &kept), "covers the I/O APIC");
        assert!(!dom0_may_map(u64::MAX - 0xFFF, 0x2000, &ram, &kept), "wraps");
        assert!(!dom0_may_map(0xE000_0000, 0, &ram, &kept));
    }

    #[test]
    fn the_address_registers_of_both_header_types() {
        let type0: Vec<u8> = (0..=0xFCu8).step_by(4).filter(|&o| is_address_register(0, o)).collect();
        assert_eq!(type0, vec![0x10, 0x14, 0x18, 0x1C, 0x20, 0x24, 0x30]);
        let type1: Vec<u8> = (0..=0xFCu8).step_by(4).filter(|&o| is_address_register(0x81, o)).collect();
        assert_eq!(type1, vec![0x10, 0x14, 0x38]);
        assert!(is_address_register(0, 0x13), "any byte of a BAR");
        assert!(!is_address_register(2, 0x10), "CardBus: not handled, nothing matched");
    }

    #[test]
    fn a_32_bit_memory_bar_of_16_mib() {
        // Base 0xE0000000, prefetchable; 16 MiB: the low 24 bits read back zero.
        let bar = decode(0xE000_0008, 0xFF00_0008, 0, 0).unwrap();
        assert_eq!(bar, Bar::Memory { base: 0xE000_0000, size: 16 << 20, prefetchable: true, is_64: false });
        assert!(bar.is_assigned());
    }

    #[test]
    fn a_64_bit_memory_bar_spans_two_registers() {
        let bar = decode(0x0000_000C, 0xFFFF_C00C, 0x0000_0001, 0xFFFF_FFFF).unwrap();
        assert_eq!(bar, Bar::Memory { base: 0x1_0000_0000, size: 16 << 10, prefetchable: true, is_64: true });
    }

    #[test]
    fn an_io_bar_of_16_ports() {
        let bar = decode(0xC001, 0xFFFF_FFF1, 0, 0).unwrap();
        assert_eq!(bar, Bar::Io { base: 0xC000, size: 16 });
    }

    #[test]
    fn unimplemented_and_nonsense_bars_are_none() {
        assert_eq!(decode(0, 0, 0, 0), None, "reads back zero: not implemented");
        assert_eq!(decode(0x1, 0x1, 0, 0), None, "an I/O BAR with no writable bits");
        assert_eq!(decode(0x4, 0xFFFF_0004, 0, 0), None, "a 64-bit BAR whose upper half is read-only zero");
        assert_eq!(decode(0x2, 0xFFFF_0002, 0, 0), None, "type 01b (below 1 MiB) is reserved in PCI 3.0");
        assert_eq!(decode(0x0, 0xF0F0_0000, 0, 0), None, "a size that is not a power of two");
    }

    #[test]
    fn an_unassigned_bar_is_reported_as_such() {
        assert!(!decode(0x0, 0xFFFF_F000, 0, 0).unwrap().is_assigned());
    }
}
