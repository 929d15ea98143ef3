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

#[cfg(test)]
mod tests {
    use super::*;

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
