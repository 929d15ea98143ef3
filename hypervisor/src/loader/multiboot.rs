//! Multiboot 1 kernels (Multiboot Specification 0.6.96). Section 3.1: the header lies in
//! the first 8192 bytes, 4-byte aligned; magic + flags + checksum = 0. With flag 16 the
//! header's address fields say where to load the file (the "a.out kludge"); otherwise
//! the image must be an ELF32 executable loaded by its program headers. Section 3.3:
//! the boot information the kernel finds at EBX.

use super::plan::{EntryMode, LoadError, LoadPlan, Segment};
use crate::mm::addr::GuestPhysAddr;
use alloc::vec::Vec;

pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// EAX at entry (section 3.2).
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
const SEARCH: usize = 8192;
const FLAG_PAGE_ALIGN: u32 = 1 << 0;
const FLAG_MEMORY_INFO: u32 = 1 << 1;
const FLAG_VIDEO: u32 = 1 << 2;
const FLAG_ADDRESS_FIELDS: u32 = 1 << 16;
/// Bits 0-15 are requirements: a loader that does not understand one must refuse.
const UNDERSTOOD_REQUIRED: u32 = FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO | FLAG_VIDEO;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

/// The multiboot header's offset in `image`, if it has one.
pub fn find_header(image: &[u8]) -> Option<usize> {
    (0..SEARCH.min(image.len()).saturating_sub(11)).step_by(4).find(|&off| {
        let (Some(magic), Some(flags), Some(sum)) =
            (u32_at(image, off), u32_at(image, off + 4), u32_at(image, off + 8))
        else {
            return false;
        };
        magic == HEADER_MAGIC && magic.wrapping_add(flags).wrapping_add(sum) == 0
    })
}

/// Parses a multiboot 1 kernel into a load plan for a domain with `memory` bytes.
pub fn load(image: &[u8], memory: u64) -> Result<LoadPlan<'_>, LoadError> {
    let off = find_header(image).ok_or(LoadError::NoMultibootHeader)?;
    let flags = u32_at(image, off + 4).ok_or(LoadError::Truncated { what: "multiboot header" })?;
    let unknown = flags & 0xFFFF & !UNDERSTOOD_REQUIRED;
    if unknown != 0 {
        return Err(LoadError::UnsupportedMultibootFlags { flags: unknown });
    }
    let plan = if flags & FLAG_ADDRESS_FIELDS != 0 { kludge(image, off)? } else { elf32(image)? };
    plan.validate(memory)?;
    Ok(plan)
}

/// The a.out kludge (section 3.1.3): load_addr..load_end_addr from the file, then zeros
/// up to bss_end_addr, entry at entry_addr.
fn kludge(image: &[u8], off: usize) -> Result<LoadPlan<'_>, LoadError> {
    let field =
        |i: usize| u32_at(image, off + 12 + 4 * i).ok_or(LoadError::Truncated { what: "multiboot address fields" });
    let (header_addr, load_addr, load_end, bss_end, entry) = (field(0)?, field(1)?, field(2)?, field(3)?, field(4)?);
    // The file offset of load_addr: the header sits at header_addr in memory and at
    // `off` in the file.
    let start = u64::from(header_addr)
        .checked_sub(u64::from(load_addr))
        .and_then(|d| (off as u64).checked_sub(d))
        .ok_or(LoadError::BadMultibootAddresses)?;
    let file_len = if load_end == 0 {
        (image.len() as u64).checked_sub(start).ok_or(LoadError::BadMultibootAddresses)?
    } else {
        u64::from(load_end).checked_sub(u64::from(load_addr)).ok_or(LoadError::BadMultibootAddresses)?
    };
    let data = usize::try_from(start)
        .ok()
        .zip(usize::try_from(file_len).ok())
        .and_then(|(s, n)| image.get(s..s.checked_add(n)?))
        .ok_or(LoadError::SegmentOutsideFile { index: 0 })?;
    let mem_size = if bss_end == 0 {
        file_len
    } else {
        u64::from(bss_end)
            .checked_sub(u64::from(load_addr))
            .filter(|&m| m >= file_len)
            .ok_or(LoadError::BadMultibootAddresses)?
    };
    Ok(LoadPlan {
        segments: alloc::vec![Segment { gpa: GuestPhysAddr(u64::from(load_addr)), data, mem_size }],
        entry: u64::from(entry),
        mode: EntryMode::Protected32,
    })
}

/// An ELF32 i386 executable, PT_LOAD segments at p_paddr.
fn elf32(image: &[u8]) -> Result<LoadPlan<'_>, LoadError> {
    let h = image.get(..52).ok_or(LoadError::Truncated { what: "ELF header" })?;
    if h[..4] != *b"\x7fELF" {
        return Err(LoadError::NotElf);
    }
    if h[4] != 1 {
        return Err(LoadError::WrongClass);
    }
    if h[5] != 1 {
        return Err(LoadError::WrongEndianness);
    }
    let kind = u16_at(h, 16).unwrap_or(0);
    let machine = u16_at(h, 18).unwrap_or(0);
    if machine != 3 {
        return Err(LoadError::WrongMachine { machine });
    }
    if kind != 2 {
        return Err(LoadError::NotExecutable { kind });
    }
    let entry = u32_at(h, 24).unwrap_or(0);
    let phoff = u32_at(h, 28).unwrap_or(0) as usize;
    let phentsize = usize::from(u16_at(h, 42).unwrap_or(0));
    let phnum = usize::from(u16_at(h, 44).unwrap_or(0));
    if phentsize < 32 || phnum > 128 {
        return Err(LoadError::BadProgramHeaders);
    }
    let mut segments = Vec::new();
    for i in 0..phnum {
        let at = phoff.checked_add(i * phentsize).ok_or(LoadError::BadProgramHeaders)?;
        let ph = image
            .get(at..at.checked_add(32).ok_or(LoadError::BadProgramHeaders)?)
            .ok_or(LoadError::BadProgramHeaders)?;
        if u32_at(ph, 0) != Some(1) {
            continue;
        }
        let index = segments.len();
        let (offset, paddr, filesz, memsz) = (
            u32_at(ph, 4).unwrap_or(0),
            u32_at(ph, 12).unwrap_or(0),
            u32_at(ph, 16).unwrap_or(0),
            u32_at(ph, 20).unwrap_or(0),
        );
        if filesz > memsz {
            return Err(LoadError::FileSizeExceedsMemSize { index });
        }
        let data = image
            .get(
                offset as usize
                    ..(offset as usize).checked_add(filesz as usize).ok_or(LoadError::SegmentOutsideFile { index })?,
            )
            .ok_or(LoadError::SegmentOutsideFile { index })?;
        segments.push(Segment { gpa: GuestPhysAddr(u64::from(paddr)), data, mem_size: u64::from(memsz) });
    }
    if segments.is_empty() {
        return Err(LoadError::NoLoadableSegment);
    }
    Ok(LoadPlan { segments, entry: u64::from(entry), mode: EntryMode::Protected32 })
}

/// Where the boot information goes: below the EBDA, above the real-mode IVT/BDA.
pub const INFO_GPA: u64 = 0x9000;
/// At most this much command line (the rest of the 4 KiB page after the structures).
pub const CMDLINE_MAX: usize = 2048;

/// The multiboot information (section 3.3) with a memory map, the command line and the
/// boot loader name, as one blob for `INFO_GPA`. All pointers are guest-physical.
pub fn build_info(memory: u64, cmdline: &str, loader_name: &str) -> Vec<u8> {
    const INFO_LEN: usize = 88;
    const MMAP_OFF: usize = INFO_LEN;
    let map: [(u64, u64, u32); 4] = [
        (0, 0x9_FC00, 1),
        (0x9_FC00, 0x400, 2),
        (0xF_0000, 0x1_0000, 2),
        (0x10_0000, memory.saturating_sub(0x10_0000), 1),
    ];
    let mmap_len = map.len() * 24;
    let cmd_off = MMAP_OFF + mmap_len;
    let cmd = &cmdline.as_bytes()[..cmdline.len().min(CMDLINE_MAX)];
    let name_off = cmd_off + cmd.len() + 1;
    let mut b = alloc::vec![0u8; name_off + loader_name.len() + 1];
    let put = |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let gpa = |off: usize| (INFO_GPA + off as u64) as u32;
    // flags: memory sizes (0), command line (2), memory map (6), boot loader name (9).
    put(&mut b, 0, (1 << 0) | (1 << 2) | (1 << 6) | (1 << 9));
    put(&mut b, 4, 640);
    put(&mut b, 8, (memory.saturating_sub(0x10_0000) / 1024) as u32);
    put(&mut b, 16, gpa(cmd_off));
    put(&mut b, 44, mmap_len as u32);
    put(&mut b, 48, gpa(MMAP_OFF));
    put(&mut b, 64, gpa(name_off));
    for (i, (base, len, kind)) in map.iter().enumerate() {
        let at = MMAP_OFF + i * 24;
        put(&mut b, at, 20);
        b[at + 4..at + 12].copy_from_slice(&base.to_le_bytes());
        b[at + 12..at + 20].copy_from_slice(&len.to_le_bytes());
        put(&mut b, at + 20, *kind);
    }
    b[cmd_off..cmd_off + cmd.len()].copy_from_slice(cmd);
    b[name_off..name_off + loader_name.len()].copy_from_slice(loader_name.as_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kludge kernel: header at `at`, loaded at 1 MiB.
    fn kludge_image(at: usize, flags: u32, entry: u32) -> Vec<u8> {
        let mut b = alloc::vec![0x90u8; at + 0x200];
        let fields = [
            HEADER_MAGIC,
            flags,
            0u32.wrapping_sub(HEADER_MAGIC.wrapping_add(flags)),
            0x10_0000 + at as u32,
            0x10_0000,
            0,
            0x10_4000,
            entry,
        ];
        for (i, f) in fields.iter().enumerate() {
            b[at + 4 * i..at + 4 * i + 4].copy_from_slice(&f.to_le_bytes());
        }
        b
    }

    #[test]
    fn the_a_out_kludge_loads_at_load_addr_with_bss() {
        let image = kludge_image(0, 0x0001_0002, 0x10_0020);
        let plan = load(&image, 16 << 20).unwrap();
        assert_eq!(plan.mode, EntryMode::Protected32);
        assert_eq!(plan.entry, 0x10_0020);
        assert_eq!(plan.segments[0].gpa, GuestPhysAddr(0x10_0000));
        assert_eq!(plan.segments[0].data.len(), image.len());
        assert_eq!(plan.segments[0].mem_size, 0x4000);
    }

    #[test]
    fn the_header_is_found_anywhere_4_aligned_in_the_first_8_kib_only() {
        assert_eq!(find_header(&kludge_image(4096 + 8, 0x0001_0000, 0x10_0000)), Some(4104));
        assert_eq!(find_header(&kludge_image(8192, 0x0001_0000, 0x10_0000)), None);
        let mut bad = kludge_image(0, 0x0001_0000, 0x10_0000);
        bad[8] ^= 1;
        assert_eq!(load(&bad, 16 << 20), Err(LoadError::NoMultibootHeader));
    }

    #[test]
    fn unknown_required_flags_are_refused() {
        let image = kludge_image(0, 0x0001_0008, 0x10_0000);
        assert_eq!(load(&image, 16 << 20), Err(LoadError::UnsupportedMultibootFlags { flags: 8 }));
    }

    #[test]
    fn entry_outside_the_image_and_truncations_are_errors() {
        assert!(matches!(
            load(&kludge_image(0, 0x0001_0000, 0x90_0000), 16 << 20),
            Err(LoadError::EntryOutsideImage { .. })
        ));
        let image = kludge_image(0, 0x0001_0000, 0x10_0000);
        // Up to the end of the address fields (32 bytes) nothing is loadable; from there
        // on a (tiny) kernel that starts at its own header is valid.
        for len in 0..32 {
            assert!(load(&image[..len], 16 << 20).is_err(), "{len}");
        }
    }

    #[test]
    fn boot_information_points_inside_itself() {
        let b = build_info(16 << 20, "console=e9", "Ferrovisor");
        let u = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        assert_eq!(u(0), 0x245);
        assert_eq!(u(4), 640);
        assert_eq!(u(8), 15 * 1024);
        assert_eq!(u(44), 96);
        assert_eq!(u(48), 0x9000 + 88);
        let cmd = (u(16) - 0x9000) as usize;
        assert_eq!(&b[cmd..cmd + 11], b"console=e9\0");
        let last = 88 + 3 * 24;
        assert_eq!(u64::from_le_bytes(b[last + 4..last + 12].try_into().unwrap()), 0x10_0000);
        assert_eq!(u64::from_le_bytes(b[last + 12..last + 20].try_into().unwrap()), (16 << 20) - 0x10_0000);
    }
}
