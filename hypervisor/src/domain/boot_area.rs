//! The boot area Ferrovisor builds in low guest memory for 64-bit guests (the boot
//! protocol in docs/guest-boot.md): a GDT, identity page tables and the boot
//! information block. Pure data: a list of (guest-physical address, bytes) to copy.

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
/// Images must load at or above this address so they cannot overwrite the boot area.
pub const BOOT_AREA_END: u64 = 0x1_0000;

/// GDT selectors a 64-bit guest starts with.
pub const CODE64_SELECTOR: u16 = 0x08;
pub const DATA_SELECTOR: u16 = 0x10;

/// "FVBOOT64" little-endian: the first quadword of the boot information block.
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"FVBOOT64");
pub const BOOT_INFO_VERSION: u32 = 1;

/// Descriptors: null, 64-bit code (L=1, P, DPL0, exec/read), data (P, DPL0, read/write).
const GDT: [u64; 3] = [0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF];

/// Everything to copy into the guest before its first instruction.
pub fn build(memory_size: u64, domain_id: u32, vcpus: u32, cmdline: &str) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    out.push((GDT_GPA, GDT.iter().flat_map(|d| d.to_le_bytes()).collect()));
    // PML4[0] -> PDPT; PDPT[0..4] -> PD i; PD entries: 2 MiB identity pages
    // (present | writable | page size). Mapping all 4 GiB keeps the rule simple; an
    // access beyond RAM is an EPT violation the hypervisor reports.
    let mut pml4 = vec![0u8; 4096];
    pml4[..8].copy_from_slice(&(PDPT_GPA | 0b11).to_le_bytes());
    out.push((PML4_GPA, pml4));
    let mut pdpt = vec![0u8; 4096];
    for i in 0..4u64 {
        let at = (i * 8) as usize;
        pdpt[at..at + 8].copy_from_slice(&((PD_GPA + i * 4096) | 0b11).to_le_bytes());
    }
    out.push((PDPT_GPA, pdpt));
    let mut pds = vec![0u8; 4 * 4096];
    for i in 0..2048u64 {
        let at = (i * 8) as usize;
        pds[at..at + 8].copy_from_slice(&((i << 21) | 0x83).to_le_bytes());
    }
    out.push((PD_GPA, pds));
    let cmd = &cmdline.as_bytes()[..cmdline.len().min(CMDLINE_MAX)];
    let mut info = Vec::with_capacity(48);
    info.extend_from_slice(&BOOT_INFO_MAGIC.to_le_bytes());
    info.extend_from_slice(&BOOT_INFO_VERSION.to_le_bytes());
    info.extend_from_slice(&domain_id.to_le_bytes());
    info.extend_from_slice(&memory_size.to_le_bytes());
    info.extend_from_slice(&vcpus.to_le_bytes());
    info.extend_from_slice(&(cmd.len() as u32).to_le_bytes());
    info.extend_from_slice(&CMDLINE_GPA.to_le_bytes());
    out.push((BOOT_INFO_GPA, info));
    let mut c = cmd.to_vec();
    c.push(0);
    out.push((CMDLINE_GPA, c));
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

    #[test]
    fn page_tables_identity_map_the_first_4_gib_with_2m_pages() {
        let area = build(16 << 20, 1, 1, "");
        assert_eq!(qword(find(&area, PML4_GPA), 0), 0x3003);
        assert_eq!(qword(find(&area, PDPT_GPA), 3 * 8), 0x7003);
        let pds = find(&area, PD_GPA);
        assert_eq!(qword(pds, 0), 0x83);
        assert_eq!(qword(pds, 8), 0x20_0083);
        assert_eq!(qword(pds, 2047 * 8), 0xFFE0_0083);
    }

    #[test]
    fn boot_info_carries_magic_memory_and_command_line() {
        let area = build(32 << 20, 7, 2, "console=e9 verbose");
        let info = find(&area, BOOT_INFO_GPA);
        assert_eq!(&info[..8], b"FVBOOT64");
        assert_eq!(u32::from_le_bytes(info[8..12].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(info[12..16].try_into().unwrap()), 7);
        assert_eq!(qword(info, 16), 32 << 20);
        assert_eq!(u32::from_le_bytes(info[24..28].try_into().unwrap()), 2);
        assert_eq!(u32::from_le_bytes(info[28..32].try_into().unwrap()), 18);
        assert_eq!(qword(info, 32), CMDLINE_GPA);
        assert_eq!(find(&area, CMDLINE_GPA), b"console=e9 verbose\0");
    }

    #[test]
    fn an_overlong_command_line_is_cut_to_fit_its_slot() {
        let long = "x".repeat(10_000);
        let area = build(16 << 20, 1, 1, &long);
        assert_eq!(find(&area, CMDLINE_GPA).len(), CMDLINE_MAX + 1);
        assert!(CMDLINE_GPA + (CMDLINE_MAX as u64) < BOOT_AREA_END);
    }

    #[test]
    fn the_boot_area_stays_below_the_image_limit() {
        for (gpa, bytes) in build(16 << 20, 1, 1, "abc") {
            assert!(gpa + bytes.len() as u64 <= BOOT_AREA_END, "{gpa:#x}");
        }
    }
}
