//! The boot area Ferrovisor builds in low guest memory for 64-bit guests (the boot
//! protocol in docs/guest-boot.md): a GDT, identity page tables and the boot
//! information block with the e820 memory map. Pure data: a list of (guest-physical
//! address, bytes) to copy. The ACPI tables the block points at are `firmware`'s
//! (`firmware::firmware_blobs`), which the caller copies as well.

use super::firmware::{self, E820Entry};
use alloc::vec;
use alloc::vec::Vec;

/// Layout of the boot area (all guest-physical).
pub const GDT_GPA: u64 = 0x1000;
pub const PML4_GPA: u64 = 0x2000;
pub const PDPT_GPA: u64 = 0x3000;
/// Four page directories: 2 MiB pages for the first 4 GiB.
pub const PD_GPA: u64 = 0x4000;
pub const BOOT_INFO_GPA: u64 = 0x8000;
pub const CMDLINE_GPA: u64 = 0x8100;
pub const CMDLINE_MAX: usize = 0x0F00 - 1;
/// The e820 map: [`firmware::e820`]'s entries, 20 bytes each (version 2).
pub const E820_GPA: u64 = 0x9000;
/// The end of the boot area at its usual place (Linux kernels get it there; other
/// 64-bit images get it there unless they load inside it, see [`place`]).
pub const BOOT_AREA_END: u64 = 0x1_0000;

/// Where one domain's boot area lies: the layout above, moved as a whole. At
/// [`BootArea::USUAL`] the addresses are the constants above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootArea {
    base: u64,
}

impl BootArea {
    /// The layout documented in docs/guest-boot.md: GDT at 0x1000, boot information at 0x8000.
    pub const USUAL: BootArea = BootArea { base: GDT_GPA };
    /// Bytes the area spans, from its GDT to the end of its e820 map's slot.
    pub const SIZE: u64 = BOOT_AREA_END - GDT_GPA;

    const fn at(&self, usual: u64) -> u64 {
        self.base + (usual - GDT_GPA)
    }
    pub const fn gdt(&self) -> u64 {
        self.base
    }
    pub const fn pml4(&self) -> u64 {
        self.at(PML4_GPA)
    }
    pub const fn boot_info(&self) -> u64 {
        self.at(BOOT_INFO_GPA)
    }
    pub const fn cmdline(&self) -> u64 {
        self.at(CMDLINE_GPA)
    }
    pub const fn e820(&self) -> u64 {
        self.at(E820_GPA)
    }
    pub const fn end(&self) -> u64 {
        self.base + Self::SIZE
    }
}

/// Where a 64-bit image's boot area goes: [`BootArea::USUAL`] unless the image loads
/// inside it; then the first free place in low memory (a flat binary may load at
/// 0x8000, say); else the first page boundary at or above 1 MiB past the image. Always
/// in RAM below the MMIO hole and outside the BIOS area. `None`: no room anywhere.
pub fn place(plan: &crate::loader::plan::LoadPlan, guest_mem: u64) -> Option<BootArea> {
    use crate::mm::addr::GuestPhysAddr;
    let ram_end = guest_mem.min(firmware::MMIO_HOLE_START);
    let low = (GDT_GPA..=firmware::LOW_RAM_END.saturating_sub(BootArea::SIZE)).step_by(0x1000);
    let above = plan.highest_gpa().checked_next_multiple_of(0x1000).map(|a| a.max(firmware::UPPER_RAM_START));
    low.chain(above).map(|base| BootArea { base }).find(|area| {
        area.end() <= ram_end
            && (area.end() <= firmware::LOW_RAM_END || area.base >= firmware::UPPER_RAM_START)
            && !plan.overlaps(GuestPhysAddr(area.base), BootArea::SIZE)
    })
}

/// GDT selectors a 64-bit guest starts with.
pub const CODE64_SELECTOR: u16 = 0x08;
pub const DATA_SELECTOR: u16 = 0x10;

/// "FVBOOT64" little-endian: the first quadword of the boot information block.
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"FVBOOT64");
/// Version 2 appends the e820 map and the RSDP address to version 1's fields, which keep
/// their offsets.
pub const BOOT_INFO_VERSION: u32 = 2;
/// Bytes of the version 2 block.
pub const BOOT_INFO_LEN: usize = 64;

/// Descriptors: null, 64-bit code (L=1, P, DPL0, exec/read), data (P, DPL0, read/write).
const GDT: [u64; 3] = [0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF];

/// The identity page tables at the area's [`PML4_GPA`], [`PDPT_GPA`] and [`PD_GPA`]:
/// PML4[0] -> PDPT; PDPT[0..4] -> PD i; PD entries: 2 MiB identity pages (present |
/// writable | page size). Mapping all 4 GiB keeps the rule simple; an access beyond RAM
/// reads all ones or is an EPT violation the hypervisor reports.
pub fn page_tables(area: BootArea) -> [(u64, Vec<u8>); 3] {
    let (pml4_gpa, pdpt_gpa, pd_gpa) = (area.pml4(), area.at(PDPT_GPA), area.at(PD_GPA));
    let mut pml4 = vec![0u8; 4096];
    pml4[..8].copy_from_slice(&(pdpt_gpa | 0b11).to_le_bytes());
    let mut pdpt = vec![0u8; 4096];
    for i in 0..4u64 {
        let at = (i * 8) as usize;
        pdpt[at..at + 8].copy_from_slice(&((pd_gpa + i * 4096) | 0b11).to_le_bytes());
    }
    // Whole 8-byte array stores: a slice copy per entry is a call to memcpy, and these
    // 2048 entries are on every domain's creation path (65,000 Bochs ticks that way).
    let mut pds = vec![0u8; 4 * 4096];
    let (entries, _) = pds.as_chunks_mut::<8>();
    for (i, entry) in (0u64..).zip(entries.iter_mut()) {
        *entry = ((i << 21) | 0x83).to_le_bytes();
    }
    [(pml4_gpa, pml4), (pdpt_gpa, pdpt), (pd_gpa, pds)]
}

/// Everything to copy into the guest before its first instruction, for a boot area at
/// `area`.
pub fn build(area: BootArea, memory_size: u64, domain_id: u32, vcpus: u32, cmdline: &str) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    out.push((area.gdt(), GDT.iter().flat_map(|d| d.to_le_bytes()).collect()));
    out.extend(page_tables(area));
    let cmd = &cmdline.as_bytes()[..cmdline.len().min(CMDLINE_MAX)];
    let map = firmware::e820(memory_size);
    let mut info = Vec::with_capacity(BOOT_INFO_LEN);
    info.extend_from_slice(&BOOT_INFO_MAGIC.to_le_bytes());
    info.extend_from_slice(&BOOT_INFO_VERSION.to_le_bytes());
    info.extend_from_slice(&domain_id.to_le_bytes());
    info.extend_from_slice(&memory_size.to_le_bytes());
    info.extend_from_slice(&vcpus.to_le_bytes());
    info.extend_from_slice(&(cmd.len() as u32).to_le_bytes());
    info.extend_from_slice(&area.cmdline().to_le_bytes());
    // Version 2: entry count, reserved (0), map address, RSDP address (0 without tables).
    info.extend_from_slice(&u32::try_from(map.len()).unwrap_or(0).to_le_bytes());
    info.extend_from_slice(&0u32.to_le_bytes());
    info.extend_from_slice(&area.e820().to_le_bytes());
    info.extend_from_slice(&firmware::rsdp_gpa(memory_size).unwrap_or(0).to_le_bytes());
    out.push((area.boot_info(), info));
    out.push((area.e820(), map.iter().flat_map(E820Entry::to_bytes).collect()));
    let mut c = cmd.to_vec();
    c.push(0);
    out.push((area.cmdline(), c));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(area: &[(u64, Vec<u8>)], gpa: u64) -> &[u8] {
        &area.iter().find(|(a, _)| *a == gpa).unwrap().1
    }

    fn qword(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    fn plan_at(segments: &[(u64, u64)]) -> crate::loader::plan::LoadPlan<'static> {
        crate::loader::plan::test_plan(crate::loader::plan::EntryMode::Long64, segments)
    }

    #[test]
    fn the_area_moves_out_of_an_image_that_loads_low() {
        assert_eq!(place(&plan_at(&[(0x10_0000, 0x1000)]), 16 << 20), Some(BootArea::USUAL));
        let low = place(&plan_at(&[(0x8000, 0x1000)]), 16 << 20).unwrap();
        assert_eq!(low.gdt(), 0x9000, "the first free 60 KiB of low memory");
        let everywhere_low = place(&plan_at(&[(0x1000, 0x9_0000), (0x10_0000, 0x2345)]), 16 << 20).unwrap();
        assert_eq!(everywhere_low.gdt(), 0x10_3000, "above the image");
        assert_eq!(place(&plan_at(&[(0x1000, 0x9_E000), (0x10_0000, (16 << 20) - 0x10_0000)]), 16 << 20), None);
        // A moved area is the same layout: every piece inside it, pointers to its own parts.
        let bytes = build(low, 16 << 20, 1, 1, "x");
        assert!(bytes.iter().all(|(gpa, b)| *gpa >= low.gdt() && gpa + b.len() as u64 <= low.end()));
        let info = find(&bytes, low.boot_info());
        assert_eq!(qword(info, 32), low.cmdline());
        assert_eq!(qword(info, 48), low.e820());
        assert_eq!(qword(find(&bytes, low.pml4()), 0), (low.pml4() + 0x1000) | 3);
    }

    #[test]
    fn page_tables_identity_map_the_first_4_gib_with_2m_pages() {
        let area = build(BootArea::USUAL, 16 << 20, 1, 1, "");
        assert_eq!(qword(find(&area, PML4_GPA), 0), 0x3003);
        assert_eq!(qword(find(&area, PDPT_GPA), 3 * 8), 0x7003);
        let pds = find(&area, PD_GPA);
        assert_eq!(qword(pds, 0), 0x83);
        assert_eq!(qword(pds, 8), 0x20_0083);
        assert_eq!(qword(pds, 2047 * 8), 0xFFE0_0083);
    }

    #[test]
    fn boot_info_carries_magic_memory_and_command_line() {
        let area = build(BootArea::USUAL, 32 << 20, 7, 2, "console=e9 verbose");
        let info = find(&area, BOOT_INFO_GPA);
        assert_eq!(&info[..8], b"FVBOOT64");
        assert_eq!(info.len(), BOOT_INFO_LEN);
        assert_eq!(u32::from_le_bytes(info[8..12].try_into().unwrap()), 2);
        assert_eq!(u32::from_le_bytes(info[12..16].try_into().unwrap()), 7);
        assert_eq!(qword(info, 16), 32 << 20);
        assert_eq!(u32::from_le_bytes(info[24..28].try_into().unwrap()), 2);
        assert_eq!(u32::from_le_bytes(info[28..32].try_into().unwrap()), 18);
        assert_eq!(qword(info, 32), CMDLINE_GPA);
        assert_eq!(find(&area, CMDLINE_GPA), b"console=e9 verbose\0");
    }

    fn dword(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn boot_info_v2_points_at_the_e820_map_and_the_rsdp() {
        let area = build(BootArea::USUAL, 32 << 20, 7, 2, "");
        let info = find(&area, BOOT_INFO_GPA);
        let map = firmware::e820(32 << 20);
        assert_eq!(dword(info, 40) as usize, map.len());
        assert_eq!(dword(info, 44), 0, "reserved");
        assert_eq!(qword(info, 48), E820_GPA);
        assert_eq!(qword(info, 56), 0xE_0000);
        let entries = find(&area, E820_GPA);
        assert_eq!(entries.len(), 20 * map.len());
        for (i, e) in map.iter().enumerate() {
            let b = &entries[20 * i..];
            assert_eq!((qword(b, 0), qword(b, 8), dword(b, 16)), (e.addr, e.len, e.kind as u32));
        }
        // RAM from 0 to 639 KiB and from 1 MiB to the end of memory.
        assert_eq!((qword(entries, 0), qword(entries, 8), dword(entries, 16)), (0, 0x9_FC00, 1));
        assert!(map.iter().any(|e| (e.addr, e.end(), e.kind as u32) == (1 << 20, 32 << 20, 1)));
    }

    #[test]
    fn a_domain_without_a_bios_area_has_no_rsdp_address() {
        let area = build(BootArea::USUAL, 0x8_0000, 1, 1, "");
        let info = find(&area, BOOT_INFO_GPA);
        assert_eq!(qword(info, 56), 0);
        assert_eq!(qword(find(&area, E820_GPA), 8), 0x8_0000, "RAM up to the end of memory");
    }

    #[test]
    fn an_overlong_command_line_is_cut_to_fit_its_slot() {
        let long = "x".repeat(10_000);
        let area = build(BootArea::USUAL, 16 << 20, 1, 1, &long);
        assert_eq!(find(&area, CMDLINE_GPA).len(), CMDLINE_MAX + 1);
        assert!(CMDLINE_GPA + (CMDLINE_MAX as u64) < BOOT_AREA_END);
    }

    #[test]
    fn the_boot_area_stays_below_the_image_limit_without_overlaps() {
        let longest = "x".repeat(CMDLINE_MAX);
        for size in [1 << 20, 16 << 20, 0xC000_0000 + (1 << 30)] {
            let mut area = build(BootArea::USUAL, size, 1, 1, &longest);
            assert!(E820_GPA + (20 * firmware::E820_MAX_ENTRIES) as u64 <= BOOT_AREA_END);
            for (gpa, bytes) in &area {
                assert!(gpa + bytes.len() as u64 <= BOOT_AREA_END, "{gpa:#x}");
            }
            area.sort_by_key(|(gpa, _)| *gpa);
            for pair in area.windows(2) {
                assert!(pair[0].0 + pair[0].1.len() as u64 <= pair[1].0, "{:#x} overlaps", pair[0].0);
            }
        }
    }
}
