//! What a PC's firmware leaves in memory for the OS, built for a DomU: the e820 memory map
//! (ACPI 6.x, chapter 15 "System Address Map Interfaces") and the ACPI tables
//! (`devices::acpi_tables`) placed in the BIOS area, with the RSDP where "Finding the RSDP
//! on IA-PC Systems" makes the OS look. Pure data: the caller copies the `(gpa, bytes)`
//! pairs of [`firmware_blobs`] into guest memory and hands the map over through the boot
//! protocol (boot information v2, the multiboot `mmap`) and fw_cfg's `etc/e820`.
//!
//! Guest-physical layout (docs/guest-boot.md, "Memory map and ACPI tables"):
//!
//! | range | e820 type | what |
//! |---|---|---|
//! | `0` .. `0x9FC00` | RAM | conventional memory: 640 KiB less the 1 KiB a PC's EBDA takes |
//! | `0x9FC00` .. `0xE0040` | reserved | EBDA, VGA hole, option ROMs; the RSDP copy at `0xE0000` |
//! | `0xE0040` .. `0xE0FC0` | ACPI | the ACPI tables (RSDP, XSDT, FADT, MADT, DSDT), end-aligned |
//! | `0xE0FC0` .. `0xE1000` | NVS | the FACS (64 bytes), which the OS must never reclaim |
//! | `0xE1000` .. `0x100000` | reserved | the rest of the BIOS area |
//! | `0x100000` .. memory | RAM | up to `0xC0000000` at most |
//! | `0xFEC00000` + 4 KiB | reserved | the I/O APIC's page |
//! | `0xFEE00000` + 4 KiB | reserved | the local APIC's page |
//! | `4 GiB` .. | RAM | whatever exceeds `0xC0000000` (the MMIO hole is `0xC0000000`..4 GiB) |
//!
//! The tables are placed so that they *end* at [`ACPI_TABLES_END`], which puts the FACS
//! (always the last 64 bytes of the image) at [`ACPI_NVS_GPA`] whatever the vCPU count: the
//! map is then the same for every domain of a given size, and the FACS is NVS as the spec's
//! FACS section requires ("must not be reported as system AddressRangeMemory"), while the
//! tables proper are reclaimable ACPI memory (type 3), as OVMF reports them.
//!
//! A domain under 1 MiB has no BIOS area: it gets no tables ([`firmware_blobs`] is empty),
//! and its map is only what fits in its memory (plus the APIC pages).

use crate::devices::acpi_tables::{self, AcpiConfig, AcpiImage};
use crate::devices::{ioapic, lapic};
use alloc::vec::Vec;

/// e820 address range types (ACPI 6.x "Address Range Types"); the multiboot `mmap` types
/// 1-4 are the same numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum E820Kind {
    /// AddressRangeMemory: usable RAM.
    Ram = 1,
    /// AddressRangeReserved: not to be used by the OS.
    Reserved = 2,
    /// AddressRangeACPI: holds ACPI tables; RAM once the OS has read them.
    Acpi = 3,
    /// AddressRangeNVS: firmware state (here the FACS), never to be used by the OS.
    Nvs = 4,
}

/// One e820 range: `len` bytes from guest-physical `addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub len: u64,
    pub kind: E820Kind,
}

impl E820Entry {
    /// Bytes of [`E820Entry::to_bytes`]: the BIOS INT 15h/E820 entry without extended
    /// attributes, and the layout of QEMU's `etc/e820` and of the boot information v2 list.
    pub const SIZE: usize = 20;

    /// The first address past the range (saturating; no entry [`e820`] builds wraps).
    pub fn end(&self) -> u64 {
        self.addr.saturating_add(self.len)
    }

    /// `{u64 addr, u64 len, u32 type}`, little-endian.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0; Self::SIZE];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..16].copy_from_slice(&self.len.to_le_bytes());
        b[16..20].copy_from_slice(&(self.kind as u32).to_le_bytes());
        b
    }
}

/// End of conventional RAM: 640 KiB less the 1 KiB a PC's extended BIOS data area takes.
pub const LOW_RAM_END: u64 = 0x9_FC00;
/// Start of extended memory (1 MiB), the end of the BIOS area.
pub const UPPER_RAM_START: u64 = 0x10_0000;
/// Where the OS finds the RSDP (a copy of the one at [`ACPI_TABLES_GPA`]'s image).
pub const RSDP_GPA: u64 = acpi_tables::BIOS_RSDP_ADDRESS;
/// Start of the ACPI (type 3) range: after the 36-byte RSDP copy, 64-byte aligned.
pub const ACPI_TABLES_GPA: u64 = 0xE_0040;
/// The FACS: the last 64 bytes of the table area, typed NVS.
pub const ACPI_NVS_GPA: u64 = 0xE_0FC0;
/// End of the table area (the tables end exactly here).
pub const ACPI_TABLES_END: u64 = 0xE_1000;
/// RAM stops here below 4 GiB; `0xC0000000`..4 GiB is the MMIO hole.
pub const MMIO_HOLE_START: u64 = 0xC000_0000;
/// Where RAM beyond [`MMIO_HOLE_START`] continues.
pub const HIGH_RAM_START: u64 = 0x1_0000_0000;
/// The I/O APIC and local APIC pages, reserved in the map.
pub const IOAPIC_GPA: u64 = ioapic::IOAPIC_BASE;
pub const LAPIC_GPA: u64 = lapic::XAPIC_BASE;
pub const APIC_PAGE_LEN: u64 = 0x1000;
// The layout: the RSDP copy, then the tables, then the 64-byte FACS, all inside the BIOS
// area, 64-aligned (the FACS must be, and the image is built at 64-aligned bases).
const _: () = assert!(RSDP_GPA + acpi_tables::RSDP_LENGTH as u64 <= ACPI_TABLES_GPA);
const _: () = assert!(LOW_RAM_END < RSDP_GPA && ACPI_TABLES_END <= UPPER_RAM_START);
const _: () = assert!(
    ACPI_TABLES_GPA.is_multiple_of(64) && ACPI_NVS_GPA.is_multiple_of(64) && ACPI_TABLES_END - ACPI_NVS_GPA == 64
);
const _: () = assert!(UPPER_RAM_START < MMIO_HOLE_START && MMIO_HOLE_START < IOAPIC_GPA && IOAPIC_GPA < LAPIC_GPA);

/// Most entries [`e820`] returns (for space reservations such as the boot area's).
pub const E820_MAX_ENTRIES: usize = 9;
/// The fw_cfg file QEMU exposes the map in; [`e820_fw_cfg_file`] builds its contents.
pub const FW_CFG_E820_FILE: &str = "etc/e820";

/// Whether a domain of `memory_size` bytes has the BIOS area, hence ACPI tables: all of the
/// first MiB must be backed.
pub fn has_bios_area(memory_size: u64) -> bool {
    memory_size >= UPPER_RAM_START
}

/// Where the RSDP is for a domain of `memory_size` bytes, if it has tables at all.
pub fn rsdp_gpa(memory_size: u64) -> Option<u64> {
    has_bios_area(memory_size).then_some(RSDP_GPA)
}

/// The e820 map of a domain of `memory_size` bytes, sorted, without overlaps, empty ranges
/// left out (layout in the module documentation).
pub fn e820(memory_size: u64) -> Vec<E820Entry> {
    let mut map = Vec::with_capacity(E820_MAX_ENTRIES);
    let mut push = |addr: u64, end: u64, kind: E820Kind| {
        if end > addr {
            map.push(E820Entry { addr, len: end - addr, kind });
        }
    };
    let below_hole = memory_size.min(MMIO_HOLE_START);
    push(0, below_hole.min(LOW_RAM_END), E820Kind::Ram);
    if has_bios_area(memory_size) {
        push(LOW_RAM_END, ACPI_TABLES_GPA, E820Kind::Reserved);
        push(ACPI_TABLES_GPA, ACPI_NVS_GPA, E820Kind::Acpi);
        push(ACPI_NVS_GPA, ACPI_TABLES_END, E820Kind::Nvs);
        push(ACPI_TABLES_END, UPPER_RAM_START, E820Kind::Reserved);
    } else {
        push(LOW_RAM_END, below_hole, E820Kind::Reserved);
    }
    push(UPPER_RAM_START, below_hole, E820Kind::Ram);
    push(IOAPIC_GPA, IOAPIC_GPA + APIC_PAGE_LEN, E820Kind::Reserved);
    push(LAPIC_GPA, LAPIC_GPA + APIC_PAGE_LEN, E820Kind::Reserved);
    // Capped so the end does not wrap; only a nonsensical size reaches the cap.
    let high = memory_size.saturating_sub(MMIO_HOLE_START).min(u64::MAX - HIGH_RAM_START);
    push(HIGH_RAM_START, HIGH_RAM_START + high, E820Kind::Ram);
    map
}

/// Where a domain of `memory_size` bytes has its RAM, as `(gpa, len)` pairs, the first at
/// offset 0 of its memory and the second (if any) at offset [`MMIO_HOLE_START`]: what the
/// EPT must map for the guest to find RAM where [`e820`] says (the low reserved ranges are
/// RAM-backed too).
pub fn ram_ranges(memory_size: u64) -> Vec<(u64, u64)> {
    let mut ranges = Vec::with_capacity(2);
    let below_hole = memory_size.min(MMIO_HOLE_START);
    if below_hole > 0 {
        ranges.push((0, below_hole));
    }
    let high = memory_size.saturating_sub(MMIO_HOLE_START).min(u64::MAX - HIGH_RAM_START);
    if high > 0 {
        ranges.push((HIGH_RAM_START, high));
    }
    ranges
}

/// Contents of fw_cfg's `etc/e820` ([`FW_CFG_E820_FILE`]): the entries' 20-byte
/// little-endian forms back to back, as QEMU's `struct e820_entry`.
pub fn e820_fw_cfg_file(map: &[E820Entry]) -> Vec<u8> {
    map.iter().flat_map(|e| e.to_bytes()).collect()
}

/// The ACPI platform description of a DomU: `vcpus` local APICs, the I/O APIC with ID
/// `ioapic_id` (`DomainDevices::new` uses the vCPU count, capped at 0xFE), and the
/// addresses and ports of the device models (`AcpiConfig::default`).
pub fn acpi_config(vcpus: u32, ioapic_id: u8) -> AcpiConfig {
    AcpiConfig {
        vcpus,
        ioapic_id,
        ioapic_address: IOAPIC_GPA as u32,
        lapic_address: LAPIC_GPA as u32,
        ..AcpiConfig::default()
    }
}

/// The tables for `config` and where they go: ending at [`ACPI_TABLES_END`]. The image's
/// layout depends only on its base modulo 64, so it is built once at the 64-aligned
/// [`ACPI_TABLES_GPA`] to learn its length (a multiple of 64, the FACS being last and
/// 64-aligned), then again at the end-aligned base, which is 64-aligned too. Should the
/// image not fit (it does, with room to spare, for 255 vCPUs), it stays at
/// [`ACPI_TABLES_GPA`].
pub fn acpi_tables(config: &AcpiConfig) -> (u64, AcpiImage) {
    // The length at the lowest base decides where they go; built once, there.
    let len = acpi_tables::image_len(config, ACPI_TABLES_GPA) as u64;
    let base = match ACPI_TABLES_END.checked_sub(len) {
        Some(base) if base >= ACPI_TABLES_GPA && base.is_multiple_of(64) => base,
        _ => ACPI_TABLES_GPA,
    };
    (base, acpi_tables::build(config, base))
}

/// Everything to copy into a domain's memory before it starts, as `(gpa, bytes)`: the
/// ACPI tables (ending at [`ACPI_TABLES_END`]) and the RSDP copy at [`RSDP_GPA`]. Empty
/// for a domain under 1 MiB, which has no BIOS area.
pub fn firmware_blobs(memory_size: u64, vcpus: u32, ioapic_id: u8) -> Vec<(u64, Vec<u8>)> {
    if !has_bios_area(memory_size) {
        return Vec::new();
    }
    let (base, image) = acpi_tables(&acpi_config(vcpus, ioapic_id));
    let rsdp = image.rsdp().to_vec();
    alloc::vec![(base, image.bytes), (RSDP_GPA, rsdp)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    /// Guest memory as a sparse map of blobs: the bytes at `gpa`, `len` long.
    fn read(blobs: &[(u64, Vec<u8>)], gpa: u64, len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| {
                let a = gpa + i;
                blobs
                    .iter()
                    .find(|(at, b)| a >= *at && a < *at + b.len() as u64)
                    .map(|(at, b)| b[(a - at) as usize])
                    .unwrap_or_else(|| panic!("{a:#x} is written by no blob"))
            })
            .collect()
    }

    const SIZES: [u64; 10] =
        [0, 0x1000, 0x9_FC00, 0xA_0000, 0xF_FFFF, MIB, 16 * MIB, 0xC000_0000, 0xC000_0000 + 0x1234_5000, 64 << 30];

    #[test]
    fn every_map_is_sorted_without_overlaps_or_empty_ranges() {
        for size in SIZES.into_iter().chain([u64::MAX]) {
            let map = e820(size);
            assert!(map.len() <= E820_MAX_ENTRIES, "{size:#x}");
            for e in &map {
                assert!(e.len > 0 && e.addr.checked_add(e.len).is_some(), "{size:#x}: {e:?}");
            }
            for pair in map.windows(2) {
                assert!(pair[0].end() <= pair[1].addr, "{size:#x}: {pair:?}");
            }
        }
    }

    #[test]
    fn the_map_covers_exactly_the_memory_and_the_apic_pages() {
        for size in SIZES {
            let map = e820(size);
            // Everything but the APIC pages, gap-free from 0, is the domain's memory.
            let mut next = 0;
            let mut covered = 0;
            for e in map.iter().filter(|e| e.addr != IOAPIC_GPA && e.addr != LAPIC_GPA) {
                if e.addr != next {
                    assert_eq!((next, e.addr), (size.min(MMIO_HOLE_START), HIGH_RAM_START), "only the MMIO hole");
                }
                covered += e.len;
                next = e.end();
            }
            assert_eq!(covered, size, "{size:#x}");
            let apic: Vec<_> = map.iter().filter(|e| e.addr == IOAPIC_GPA || e.addr == LAPIC_GPA).collect();
            assert_eq!(apic.len(), 2);
            assert!(apic.iter().all(|e| e.len == 0x1000 && e.kind == E820Kind::Reserved));
            // RAM: 639 KiB below 640 KiB, everything from 1 MiB.
            let ram: u64 = map.iter().filter(|e| e.kind == E820Kind::Ram).map(|e| e.len).sum();
            let expected = size.min(LOW_RAM_END) + size.saturating_sub(MIB);
            assert_eq!(ram, expected, "{size:#x}");
        }
    }

    #[test]
    fn a_16_mib_domain_has_the_pc_layout() {
        use E820Kind::*;
        let map: Vec<_> = e820(16 * MIB).iter().map(|e| (e.addr, e.end(), e.kind)).collect();
        assert_eq!(
            map,
            vec![
                (0, 0x9_FC00, Ram),
                (0x9_FC00, 0xE_0040, Reserved),
                (0xE_0040, 0xE_0FC0, Acpi),
                (0xE_0FC0, 0xE_1000, Nvs),
                (0xE_1000, 0x10_0000, Reserved),
                (0x10_0000, 16 * MIB, Ram),
                (0xFEC0_0000, 0xFEC0_1000, Reserved),
                (0xFEE0_0000, 0xFEE0_1000, Reserved),
            ]
        );
    }

    #[test]
    fn a_1_mib_domain_has_the_bios_area_but_no_upper_ram() {
        let map = e820(MIB);
        assert_eq!(map.len(), 7);
        assert_eq!(map[4].end(), MIB);
        assert!(!map.iter().any(|e| e.kind == E820Kind::Ram && e.addr >= MIB));
        assert_eq!(firmware_blobs(MIB, 1, 1).len(), 2);
    }

    #[test]
    fn a_domain_under_1_mib_gets_what_fits_and_no_tables() {
        use E820Kind::*;
        let map = |size| e820(size).iter().map(|e| (e.addr, e.end(), e.kind)).take(2).collect::<Vec<_>>();
        assert_eq!(map(0x8_0000), vec![(0, 0x8_0000, Ram), (0xFEC0_0000, 0xFEC0_1000, Reserved)]);
        assert_eq!(map(0xC_0000), vec![(0, 0x9_FC00, Ram), (0x9_FC00, 0xC_0000, Reserved)]);
        assert!(!e820(MIB - 1).iter().any(|e| matches!(e.kind, Acpi | Nvs)));
        assert!(firmware_blobs(MIB - 1, 1, 1).is_empty());
        assert_eq!(rsdp_gpa(MIB - 1), None);
        assert_eq!(rsdp_gpa(MIB), Some(0xE_0000));
    }

    #[test]
    fn above_3_gib_ram_continues_at_4_gib_and_spares_the_apic_pages() {
        use E820Kind::*;
        let size = 3 * (1 << 30) + 256 * MIB;
        let map: Vec<_> = e820(size).iter().map(|e| (e.addr, e.end(), e.kind)).collect();
        assert_eq!(map[5], (MIB, 0xC000_0000, Ram));
        assert_eq!(map[8], (1 << 32, (1 << 32) + 256 * MIB, Ram));
        assert_eq!(map.len(), 9);
        assert_eq!(ram_ranges(size), vec![(0, 0xC000_0000), (1 << 32, 256 * MIB)]);
        assert_eq!(ram_ranges(16 * MIB), vec![(0, 16 * MIB)]);
        assert_eq!(ram_ranges(0), vec![]);
    }

    #[test]
    fn the_acpi_range_lies_in_the_reserved_bios_area_after_the_rsdp_copy() {
        // The layout itself is checked at compile time (after the constants).
        let map = e820(16 * MIB);
        let acpi = map.iter().find(|e| e.kind == E820Kind::Acpi).unwrap();
        let nvs = map.iter().find(|e| e.kind == E820Kind::Nvs).unwrap();
        assert_eq!(
            (acpi.addr, acpi.end(), nvs.addr, nvs.end()),
            (ACPI_TABLES_GPA, ACPI_NVS_GPA, ACPI_NVS_GPA, ACPI_TABLES_END)
        );
        let reserved = |gpa: u64| map.iter().any(|e| e.kind == E820Kind::Reserved && e.addr <= gpa && gpa < e.end());
        assert!(reserved(RSDP_GPA) && reserved(RSDP_GPA + 35));
    }

    #[test]
    fn the_tables_for_255_vcpus_fit_and_the_facs_is_always_the_nvs_range() {
        let biggest = acpi_tables::build(&acpi_config(255, 0xFE), ACPI_TABLES_GPA).bytes.len() as u64;
        assert!(biggest <= ACPI_TABLES_END - ACPI_TABLES_GPA, "{biggest} bytes");
        for vcpus in [0, 1, 2, 3, 8, 64, 255, 1000] {
            let (base, image) = acpi_tables(&acpi_config(vcpus, 1));
            assert!(base >= ACPI_TABLES_GPA && base % 64 == 0, "{vcpus}: {base:#x}");
            assert_eq!(base + image.bytes.len() as u64, ACPI_TABLES_END, "{vcpus}");
            // The FADT (the XSDT's first entry) points at the FACS.
            let xsdt = (u64_at(image.rsdp(), 24) - base) as usize;
            let fadt = (u64_at(&image.bytes, xsdt + 36) - base) as usize;
            assert_eq!(&image.bytes[fadt..fadt + 4], b"FACP");
            assert_eq!(u64::from(u32_at(&image.bytes, fadt + 36)), ACPI_NVS_GPA, "FIRMWARE_CTRL");
            let facs = (ACPI_NVS_GPA - base) as usize;
            assert_eq!(&image.bytes[facs..facs + 4], b"FACS");
        }
    }

    #[test]
    fn the_rsdp_at_0xe0000_is_valid_and_leads_to_the_tables() {
        for vcpus in [1, 4, 64] {
            let blobs = firmware_blobs(16 * MIB, vcpus, vcpus as u8);
            assert_eq!(blobs.len(), 2);
            for pair in [(&blobs[0], &blobs[1]), (&blobs[1], &blobs[0])] {
                let ((a, x), (b, y)) = pair;
                assert!(a + x.len() as u64 <= *b || b + y.len() as u64 <= *a, "blobs overlap");
            }
            for (gpa, bytes) in &blobs {
                assert!(*gpa >= RSDP_GPA && gpa + bytes.len() as u64 <= ACPI_TABLES_END);
            }
            let rsdp = read(&blobs, RSDP_GPA, 36);
            assert_eq!(&rsdp[..8], b"RSD PTR ");
            assert_eq!((sum(&rsdp[..20]), sum(&rsdp)), (0, 0));
            assert_eq!(rsdp[15], 2);
            let xsdt_gpa = u64_at(&rsdp, 24);
            assert!((ACPI_TABLES_GPA..ACPI_NVS_GPA).contains(&xsdt_gpa), "{xsdt_gpa:#x}");
            let xsdt = read(&blobs, xsdt_gpa, 52);
            assert_eq!((&xsdt[..4], sum(&xsdt)), (&b"XSDT"[..], 0));
            // The MADT lists the vCPUs and the I/O APIC at the addresses the map reserves.
            let madt_gpa = u64_at(&xsdt, 44);
            let madt_len = u32_at(&read(&blobs, madt_gpa, 8), 4) as usize;
            let madt = read(&blobs, madt_gpa, madt_len);
            assert_eq!((&madt[..4], sum(&madt)), (&b"APIC"[..], 0));
            assert!(madt_gpa + madt_len as u64 <= ACPI_NVS_GPA);
            assert_eq!(u64::from(u32_at(&madt, 36)), LAPIC_GPA);
            let cpus = madt[44..].chunks(8).take_while(|e| e[0] == 0).count();
            assert_eq!(cpus, vcpus as usize);
            let io = 44 + 8 * vcpus as usize;
            assert_eq!((madt[io], madt[io + 2]), (1, vcpus as u8));
            assert_eq!(u64::from(u32_at(&madt, io + 4)), IOAPIC_GPA);
        }
    }

    #[test]
    fn entries_encode_as_20_little_endian_bytes_for_fw_cfg() {
        let e = E820Entry { addr: 0x0102_0304_0506_0708, len: 0x1112_1314_1516_1718, kind: E820Kind::Nvs };
        assert_eq!(e.to_bytes(), [8, 7, 6, 5, 4, 3, 2, 1, 0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11, 4, 0, 0, 0]);
        let map = e820(16 * MIB);
        let file = e820_fw_cfg_file(&map);
        assert_eq!(file.len(), 20 * map.len());
        for (i, e) in map.iter().enumerate() {
            let b = &file[20 * i..20 * i + 20];
            assert_eq!((u64_at(b, 0), u64_at(b, 8), u32_at(b, 16)), (e.addr, e.len, e.kind as u32));
        }
        assert_eq!(&file[40..60], &E820Entry { addr: 0xE_0040, len: 0xF80, kind: E820Kind::Acpi }.to_bytes());
        assert_eq!((E820Kind::Ram as u32, E820Kind::Reserved as u32, E820Kind::Acpi as u32), (1, 2, 3));
        assert_eq!(FW_CFG_E820_FILE, "etc/e820");
    }

    #[test]
    fn the_acpi_config_matches_the_device_models() {
        let c = acpi_config(3, 3);
        let d = AcpiConfig::default();
        assert_eq!((c.vcpus, c.ioapic_id), (3, 3));
        assert_eq!((u64::from(c.ioapic_address), u64::from(c.lapic_address)), (0xFEC0_0000, 0xFEE0_0000));
        assert_eq!((c.pm1a_event_port, c.pm_timer_port, c.sci_irq), (d.pm1a_event_port, d.pm_timer_port, d.sci_irq));
    }
}
