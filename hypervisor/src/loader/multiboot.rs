//! Multiboot 1 kernels (Multiboot Specification version 0.6.96): finding and checking the
//! OS image header (section 3.1 "OS image format"), loading the image by the header's
//! address fields or as ELF32, and building the boot information structure the kernel
//! finds in EBX (section 3.3 "Boot information format"). The vCPU state at entry is
//! section 3.2 "Machine state": [`EntryMode::Protected32`] with EAX =
//! [`MULTIBOOT_BOOTLOADER_MAGIC`] and EBX = the information's guest-physical address.
//!
//! No boot modules are loaded, so the module-related parts of the spec (flag 0's page
//! alignment, `mods_*` fields) are trivially satisfied.

use super::elf64::{self, ELF_MAGIC, ELF32_I386};
use super::plan::{self, EntryMode, LoadError, LoadPlan, MultibootRequest, Placement, Segment};
use crate::domain::firmware;
use crate::mm::addr::GuestPhysAddr;
use alloc::vec;
use alloc::vec::Vec;

/// The OS image header's `magic` field (spec 3.1.2).
pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// What EAX holds when the kernel starts: proof that a Multiboot loader started it
/// (spec 3.2).
pub const MULTIBOOT_BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// The header must lie completely within the image's first 8192 bytes (spec 3.1.1).
pub const HEADER_SEARCH_LIMIT: u64 = 8192;
/// Where Ferrovisor puts the boot information when the image leaves it free
/// (docs/guest-boot.md: EBX = 0x9000, where QEMU's multiboot loader puts it too); see
/// [`place_info`] for where it goes otherwise.
pub const INFO_GPA: GuestPhysAddr = GuestPhysAddr(0x9000);
/// Longest command line passed to the guest, without its NUL. Longer ones are refused,
/// not cut: a silently shortened command line makes a guest misbehave in ways nobody
/// traces back to the configuration. 4 KiB in all keeps the blob within a page.
pub const MAX_CMDLINE_LEN: usize = 4095;
/// Longest boot loader name, without its NUL.
pub const MAX_BOOT_LOADER_NAME_LEN: usize = 255;

// Header flags (spec 3.1.2). Bits 0-15 are requirements: a loader that does not
// understand one must refuse the image. Bits 16-31 are optional: unknown ones may be
// ignored.
const FLAG_PAGE_ALIGN: u32 = 1 << 0;
const FLAG_MEMORY_INFO: u32 = 1 << 1;
const FLAG_VIDEO_MODE: u32 = 1 << 2;
const FLAG_AOUT_KLUDGE: u32 = 1 << 16;
const REQUIRED_FLAGS: u32 = 0xFFFF;
/// Bit 0: nothing to align since no modules are loaded. Bit 1: always provided. Bit 2:
/// accepted although no video information can be given; the request is passed on in
/// [`MultibootRequest::want_video`] for the caller to report.
const UNDERSTOOD_REQUIRED_FLAGS: u32 = FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO | FLAG_VIDEO_MODE;

/// magic, flags, checksum.
const HEADER_SIZE: u64 = 12;
/// ... plus header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr (flag 16).
const HEADER_SIZE_WITH_ADDRESSES: u64 = 32;

/// The Multiboot header as found in the image.
struct Header {
    /// File offset of `magic`.
    offset: u64,
    flags: u32,
}

/// Loads a Multiboot 1 kernel into a domain with `guest_mem` bytes of RAM, to be entered
/// in 32-bit protected mode (spec 3.2). With header flag 16 the header's address fields
/// say where the file goes (the "a.out kludge", spec 3.1.3), even for ELF files, as the
/// spec prescribes; otherwise the image must be an ELF32 i386 executable, loaded by its
/// PT_LOAD program headers at `p_paddr`.
pub fn load<'a>(image: &'a [u8], guest_mem: u64) -> Result<LoadPlan<'a>, LoadError> {
    let header = find_header(image)?;
    let unknown = header.flags & REQUIRED_FLAGS & !UNDERSTOOD_REQUIRED_FLAGS;
    if unknown != 0 {
        return Err(LoadError::MultibootUnsupportedFlags { flags: header.flags, unknown });
    }
    let request = MultibootRequest {
        want_mem_info: header.flags & FLAG_MEMORY_INFO != 0,
        want_mmap: header.flags & FLAG_MEMORY_INFO != 0,
        want_video: header.flags & FLAG_VIDEO_MODE != 0,
    };
    let (segments, entry) = if header.flags & FLAG_AOUT_KLUDGE != 0 {
        let (segment, entry) = load_by_address_fields(image, &header)?;
        (vec![segment], entry)
    } else if image.starts_with(&ELF_MAGIC) {
        let elf = elf64::parse(image, &ELF32_I386)?;
        (elf.segments, elf.entry)
    } else {
        return Err(LoadError::MultibootNotElf);
    };
    let plan = LoadPlan { segments, entry, mode: EntryMode::Protected32, multiboot: Some(request) };
    plan.validate(guest_mem)?;
    Ok(plan)
}

/// The first header in the first 8192 bytes: `magic` at a multiple of 4 with all 12 bytes
/// of magic, flags and checksum inside the limit, and `magic + flags + checksum == 0`
/// (mod 2^32) (spec 3.1.1, 3.1.2). A magic value with a bad checksum may be chance data,
/// so the search goes on; if nothing valid follows, the bad checksum is what gets
/// reported, since it is the likelier mistake.
fn find_header(image: &[u8]) -> Result<Header, LoadError> {
    let limit = plan::len_u64(image).min(HEADER_SEARCH_LIMIT);
    let mut bad_checksum = None;
    let mut offset = 0u64;
    while offset.checked_add(HEADER_SIZE).is_some_and(|end| end <= limit) {
        if plan::u32_at(image, offset) == Some(HEADER_MAGIC) {
            let flags = offset.checked_add(4).and_then(|at| plan::u32_at(image, at));
            let checksum = offset.checked_add(8).and_then(|at| plan::u32_at(image, at));
            if let (Some(flags), Some(checksum)) = (flags, checksum) {
                if HEADER_MAGIC.wrapping_add(flags).wrapping_add(checksum) == 0 {
                    return Ok(Header { offset, flags });
                }
                bad_checksum.get_or_insert(LoadError::MultibootBadChecksum { offset, flags, checksum });
            }
        }
        offset = offset.saturating_add(4);
    }
    Err(bad_checksum.unwrap_or(LoadError::MultibootHeaderNotFound))
}

/// The single segment the a.out kludge describes (spec 3.1.3), and its entry point.
///
/// `header_addr` is where the header's magic lands in memory, which ties file offsets to
/// addresses: loading starts at file offset `header_offset - (header_addr - load_addr)`
/// and covers `load_end_addr - load_addr` bytes (to the end of the file when
/// `load_end_addr` is 0); memory up to `bss_end_addr` is zeroed (no bss when 0).
fn load_by_address_fields<'a>(image: &'a [u8], header: &Header) -> Result<(Segment<'a>, u64), LoadError> {
    let image_size = plan::len_u64(image);
    let truncated = LoadError::MultibootHeaderTruncated { offset: header.offset, needed: HEADER_SIZE_WITH_ADDRESSES };
    let limit = image_size.min(HEADER_SEARCH_LIMIT);
    if header.offset.checked_add(HEADER_SIZE_WITH_ADDRESSES).is_none_or(|end| end > limit) {
        return Err(truncated);
    }
    let field = |index: u64| {
        header.offset.checked_add(HEADER_SIZE + 4 * index).and_then(|at| plan::u32_at(image, at)).ok_or(truncated)
    };
    let (header_addr, load_addr, load_end_addr) = (field(0)?, field(1)?, field(2)?);
    let (bss_end_addr, entry_addr) = (field(3)?, field(4)?);

    // "load_addr must be less than or equal to header_addr."
    let header_delta =
        header_addr.checked_sub(load_addr).ok_or(LoadError::AoutHeaderBelowLoad { header_addr, load_addr })?;
    let load_offset = header.offset.checked_sub(u64::from(header_delta)).ok_or(LoadError::AoutLoadBeforeFile {
        header_offset: header.offset,
        header_addr,
        load_addr,
    })?;
    let load_size = if load_end_addr == 0 {
        // "The text and data segments occupy the whole OS image file" from load_offset on.
        image_size.saturating_sub(load_offset)
    } else {
        u64::from(
            load_end_addr
                .checked_sub(load_addr)
                .ok_or(LoadError::AoutLoadEndBeforeLoad { load_addr, load_end_addr })?,
        )
    };
    let beyond_file = LoadError::AoutLoadBeyondFile { load_offset, load_size, image_size };
    let data = plan::slice_at(image, load_offset, load_size).ok_or(beyond_file)?;
    // Computed in 64 bits: with load_end_addr = 0 the end can pass 4 GiB, which the plan
    // check then reports.
    let load_end = u64::from(load_addr).checked_add(load_size).ok_or(beyond_file)?;
    let mem_size = if bss_end_addr == 0 {
        load_size
    } else {
        u64::from(bss_end_addr)
            .checked_sub(u64::from(load_addr))
            .filter(|&size| size >= load_size)
            .ok_or(LoadError::AoutBssEndBeforeLoadEnd { load_end, bss_end_addr })?
    };
    Ok((Segment { gpa: GuestPhysAddr(u64::from(load_addr)), data, mem_size }, u64::from(entry_addr)))
}

/// The Multiboot information blob and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootInfoLayout {
    /// Guest-physical address to copy `bytes` to, and the value of EBX at entry.
    pub info_gpa: GuestPhysAddr,
    pub bytes: Vec<u8>,
}

// Boot information (spec 3.3): the structure, then the memory map, then the strings.
/// Through the framebuffer fields (`color_info` ends at offset 116), so kernels that
/// declare the whole structure read zeroes, not our memory map, in fields whose flags
/// (11, 12) are clear.
const INFO_SIZE: usize = 116;
/// The memory map follows at the next 8-byte boundary (its entries hold 64-bit fields).
const MMAP_OFFSET: usize = 120;
/// The `size` field of each memory map entry: the 20 bytes of base_addr, length and type
/// that follow it. Entries are `size + 4` bytes apart.
const MMAP_ENTRY_SIZE: u32 = 20;
const MMAP_ENTRY_STRIDE: usize = 24;
// `flags` bits of the information structure: which fields are valid.
const INFO_MEMORY: u32 = 1 << 0;
const INFO_CMDLINE: u32 = 1 << 2;
const INFO_MMAP: u32 = 1 << 6;
const INFO_BOOT_LOADER_NAME: u32 = 1 << 9;

/// The blob must not touch `LOW_RAM_END..HIGH_RAM_START` (EBDA, VGA hole, BIOS area with
/// the ACPI tables), which the memory map does not call RAM.
const LOW_RAM_END: u64 = firmware::LOW_RAM_END;
const HIGH_RAM_START: u64 = firmware::UPPER_RAM_START;

/// `(base_addr, length, type)` of each memory map entry for a domain of `guest_mem` bytes:
/// the domain's e820 map ([`firmware::e820`]: RAM below 0x9FC00, the reserved EBDA, VGA
/// hole and BIOS area with the ACPI tables typed 3 and the FACS typed 4, RAM from 1 MiB,
/// the APIC pages reserved, RAM above 4 GiB past 3 GiB). The e820 types are the ones
/// multiboot's `mmap` uses: 1 available, 3 ACPI, 4 preserve on hibernation, others
/// reserved.
fn memory_map(guest_mem: u64) -> Vec<(u64, u64, u32)> {
    firmware::e820(guest_mem).iter().map(|e| (e.addr, e.len, e.kind as u32)).collect()
}

/// Builds the multiboot information structure (spec 3.3) plus its memory map and command
/// line as one blob to be copied at `at` (the caller picks a free spot below 1 MiB, e.g.
/// [`INFO_GPA`], and checks it does not overlap the image, see [`LoadPlan::overlaps`]);
/// all pointers inside are guest-physical.
///
/// Valid fields (flags 0x245): `mem_lower`/`mem_upper` (flag 0), `cmdline` (flag 2), the
/// memory map (flag 6) and `boot_loader_name` (flag 9). `mem_lower` is 639 KiB, the RAM
/// the memory map shows below 640 KiB, so the two never disagree; `mem_upper` is the RAM
/// from 1 MiB to the first hole (spec 3.3: "maximally the address of the first upper
/// memory hole minus 1 megabyte"), in KiB: up to 0xC0000000 at most, where the MMIO hole
/// begins. No video information is given, whatever the kernel asked for.
///
/// Refuses a domain under 1 MiB, strings over their limits ([`MAX_CMDLINE_LEN`],
/// [`MAX_BOOT_LOADER_NAME_LEN`]) or containing NUL, and a placement that is not 4-byte
/// aligned, ends beyond the domain's memory or 4 GiB, or touches 0x9FC00-0x100000.
pub fn build_info(
    at: GuestPhysAddr,
    guest_mem: u64,
    cmdline: &str,
    boot_loader_name: &str,
) -> Result<BootInfoLayout, LoadError> {
    if guest_mem < HIGH_RAM_START {
        return Err(LoadError::GuestMemoryTooSmall { guest_mem, min: HIGH_RAM_START });
    }
    check_string("command line", cmdline, MAX_CMDLINE_LEN)?;
    check_string("boot loader name", boot_loader_name, MAX_BOOT_LOADER_NAME_LEN)?;
    let map = memory_map(guest_mem);
    // Small numbers (both strings are bounded above), but checked all the same.
    let mmap_length = map.len().checked_mul(MMAP_ENTRY_STRIDE);
    let cmdline_offset = mmap_length.and_then(|l| MMAP_OFFSET.checked_add(l));
    let name_offset = cmdline_offset.and_then(|o| o.checked_add(cmdline.len())).and_then(|o| o.checked_add(1));
    let total = name_offset.and_then(|o| o.checked_add(boot_loader_name.len())).and_then(|o| o.checked_add(1));
    let (Some(mmap_length), Some(cmdline_offset), Some(name_offset), Some(total)) =
        (mmap_length, cmdline_offset, name_offset, total)
    else {
        // Unreachable with both strings bounded as checked above; refuse rather than panic.
        return Err(LoadError::StringTooLong { what: "command line", len: cmdline.len(), max: MAX_CMDLINE_LEN });
    };
    let len = total as u64;
    let misplaced = |problem| LoadError::BootInfoMisplaced { at, len, problem };
    if !at.0.is_multiple_of(4) {
        return Err(misplaced(Placement::Misaligned));
    }
    let end = at.0.checked_add(len).ok_or(misplaced(Placement::BeyondMemory { guest_mem }))?;
    if end > guest_mem {
        return Err(misplaced(Placement::BeyondMemory { guest_mem }));
    }
    if end > plan::LIMIT_4G {
        return Err(misplaced(Placement::Above4GiB));
    }
    if at.0 < HIGH_RAM_START && end > LOW_RAM_END {
        return Err(misplaced(Placement::InReservedArea));
    }
    // 32-bit guest-physical pointer to `offset` within the blob; below 4 GiB as checked.
    let pointer = |offset: usize| {
        (offset as u64).checked_add(at.0).and_then(|gpa| u32::try_from(gpa).ok()).ok_or(misplaced(Placement::Above4GiB))
    };
    let mem_lower = u32::try_from(LOW_RAM_END / 1024).unwrap_or(u32::MAX);
    let mem_upper = u32::try_from(guest_mem.min(firmware::MMIO_HOLE_START).saturating_sub(HIGH_RAM_START) / 1024)
        .unwrap_or(u32::MAX);

    let mut b = Vec::with_capacity(total);
    let push32 = |b: &mut Vec<u8>, v: u32| b.extend_from_slice(&v.to_le_bytes());
    push32(&mut b, INFO_MEMORY | INFO_CMDLINE | INFO_MMAP | INFO_BOOT_LOADER_NAME); // 0: flags
    push32(&mut b, mem_lower); // 4
    push32(&mut b, mem_upper); // 8
    push32(&mut b, 0); // 12: boot_device (flag 1 clear: no BIOS disk)
    push32(&mut b, pointer(cmdline_offset)?); // 16: cmdline
    push32(&mut b, 0); // 20: mods_count
    push32(&mut b, 0); // 24: mods_addr
    b.resize(44, 0); // 28: syms (flags 4, 5 clear)
    push32(&mut b, u32::try_from(mmap_length).unwrap_or(u32::MAX)); // 44: mmap_length
    push32(&mut b, pointer(MMAP_OFFSET)?); // 48: mmap_addr
    push32(&mut b, 0); // 52: drives_length
    push32(&mut b, 0); // 56: drives_addr
    push32(&mut b, 0); // 60: config_table
    push32(&mut b, pointer(name_offset)?); // 64: boot_loader_name
    b.resize(INFO_SIZE, 0); // 68: apm_table, VBE and framebuffer fields (flags 10-12 clear)
    b.resize(MMAP_OFFSET, 0);
    for (base, length, kind) in map {
        push32(&mut b, MMAP_ENTRY_SIZE);
        b.extend_from_slice(&base.to_le_bytes());
        b.extend_from_slice(&length.to_le_bytes());
        push32(&mut b, kind);
    }
    for s in [cmdline, boot_loader_name] {
        b.extend_from_slice(s.as_bytes());
        b.push(0);
    }
    Ok(BootInfoLayout { info_gpa: at, bytes: b })
}

/// Builds the information structure where it overlaps neither the image (`plan`) nor
/// the areas the memory map does not call RAM: at [`INFO_GPA`] if the image leaves it
/// free; else in the first free page of low memory (an image may load at 0x7C00 or
/// 0x8000, or keep real-mode code there); else on the first page boundary above the
/// image. The spec leaves the place to the loader ("anywhere in memory"), and kernels
/// find it through EBX.
///
/// `cmdline` is what the kernel gets: by convention (GRUB, QEMU) the image's name, then
/// the arguments, which kernels parse as argv[0], argv[1], ... ([`kernel_cmdline`]).
pub fn place_info(
    plan: &LoadPlan,
    guest_mem: u64,
    cmdline: &str,
    boot_loader_name: &str,
) -> Result<BootInfoLayout, LoadError> {
    let first = build_info(INFO_GPA, guest_mem, cmdline, boot_loader_name)?;
    let len = first.bytes.len() as u64;
    if !plan.overlaps(INFO_GPA, len) {
        return Ok(first);
    }
    let low = (0x1000..LOW_RAM_END).step_by(0x1000);
    let above = plan.highest_gpa().checked_next_multiple_of(0x1000).map(|a| a.max(HIGH_RAM_START));
    for at in low.chain(above).map(GuestPhysAddr) {
        if at.0.checked_add(len).is_some_and(|end| end <= LOW_RAM_END || at.0 >= HIGH_RAM_START)
            && !plan.overlaps(at, len)
            && let Ok(info) = build_info(at, guest_mem, cmdline, boot_loader_name)
        {
            return Ok(info);
        }
    }
    Err(LoadError::BootInfoMisplaced { at: INFO_GPA, len, problem: Placement::BeyondMemory { guest_mem } })
}

/// The command line a multiboot kernel gets: the image's name, then the configured
/// arguments, as GRUB (`multiboot /boot/kernel args`) and QEMU (`-kernel` and `-append`)
/// pass it.
pub fn kernel_cmdline(image_name: &str, args: &str) -> alloc::string::String {
    let args = args.trim();
    if args.is_empty() { image_name.into() } else { alloc::format!("{image_name} {args}") }
}

/// The guest reads these as NUL-terminated C strings (spec 3.3).
fn check_string(what: &'static str, s: &str, max: usize) -> Result<(), LoadError> {
    if s.len() > max {
        return Err(LoadError::StringTooLong { what, len: s.len(), max });
    }
    match s.bytes().position(|c| c == 0) {
        Some(at) => Err(LoadError::StringContainsNul { what, at }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn plan_with(segments: &[(u64, u64)]) -> LoadPlan<'static> {
        plan::test_plan(EntryMode::Protected32, segments)
    }

    #[test]
    fn the_information_goes_to_0x9000_unless_the_image_is_there() {
        let usual = plan_with(&[(0x10_0000, 0x10_0000)]);
        assert_eq!(place_info(&usual, MEM_16M, "k", "F").unwrap().info_gpa, INFO_GPA);
        // Real-mode code at 0x7C00 and a kernel at 0x8000 (issue 15): the first free page
        // of low memory instead.
        let low = plan_with(&[(0x7C00, 0x400), (0x8000, 0x2_0000)]);
        let info = place_info(&low, MEM_16M, "k", "F").unwrap();
        assert_eq!(info.info_gpa, GuestPhysAddr(0x1000));
        assert!(!low.overlaps(info.info_gpa, info.bytes.len() as u64));
        // Low memory all taken: the first page boundary above the image.
        let all_low = plan_with(&[(0x1000, 0x9_EC00), (0x10_0000, 0x1234)]);
        assert_eq!(place_info(&all_low, MEM_16M, "k", "F").unwrap().info_gpa, GuestPhysAddr(0x10_2000));
    }

    #[test]
    fn an_image_filling_memory_leaves_no_place_and_says_so() {
        let full = plan_with(&[(0x1000, 0x9_EC00), (0x10_0000, MEM_16M - 0x10_0000)]);
        assert!(matches!(place_info(&full, MEM_16M, "k", "F"), Err(LoadError::BootInfoMisplaced { .. })));
    }

    #[test]
    fn the_command_line_starts_with_the_image_name() {
        assert_eq!(kernel_cmdline("tboot", "logging=serial"), "tboot logging=serial");
        assert_eq!(kernel_cmdline("tboot", "  "), "tboot");
    }

    const MEM_16M: u64 = 16 << 20;
    const AOUT_FLAGS: u32 = FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO | FLAG_AOUT_KLUDGE;

    fn put(v: &mut [u8], at: usize, bytes: &[u8]) {
        v[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// magic, flags, a matching checksum, then the five address fields if given.
    fn header(flags: u32, addresses: Option<[u32; 5]>) -> Vec<u8> {
        let checksum = 0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags);
        let mut h: Vec<u8> = [HEADER_MAGIC, flags, checksum].iter().flat_map(|v| v.to_le_bytes()).collect();
        for a in addresses.iter().flatten() {
            h.extend_from_slice(&a.to_le_bytes());
        }
        h
    }

    /// `len` bytes of a pattern that never forms the magic, with `header` at `offset`.
    fn image_with(offset: usize, len: usize, header: &[u8]) -> Vec<u8> {
        let mut v: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
        put(&mut v, offset, header);
        v
    }

    /// 8 KiB a.out-style kernel, header at offset 0: 4 KiB of text and data at 1 MiB,
    /// bss to 1 MiB + 12 KiB, entry at 1 MiB + 0x20.
    fn aout() -> Vec<u8> {
        image_with(0, 0x2000, &header(AOUT_FLAGS, Some([0x10_0000, 0x10_0000, 0x10_1000, 0x10_3000, 0x10_0020])))
    }

    const REQUEST: MultibootRequest = MultibootRequest { want_mem_info: true, want_mmap: true, want_video: false };

    #[test]
    fn an_aout_kludge_kernel_with_bss_gives_the_exact_plan() {
        let image = aout();
        assert_eq!(
            load(&image, MEM_16M),
            Ok(LoadPlan {
                segments: vec![Segment { gpa: GuestPhysAddr(0x10_0000), data: &image[..0x1000], mem_size: 0x3000 }],
                entry: 0x10_0020,
                mode: EntryMode::Protected32,
                multiboot: Some(REQUEST),
            })
        );
    }

    #[test]
    fn a_header_at_4096_plus_8_is_found_and_maps_the_file_from_its_start() {
        // The header lands at 0x101008, so the load at 0x100000 starts at file offset 0.
        let h = header(AOUT_FLAGS, Some([0x10_1008, 0x10_0000, 0, 0, 0x10_0000]));
        let image = image_with(4096 + 8, 0x3000, &h);
        let plan = load(&image, MEM_16M).unwrap();
        assert_eq!(plan.segments, vec![Segment { gpa: GuestPhysAddr(0x10_0000), data: &image[..], mem_size: 0x3000 }]);
    }

    #[test]
    fn load_end_addr_zero_loads_to_the_end_of_the_file() {
        // The header starts the text at 0x200000; everything from its offset on is loaded.
        let h = header(AOUT_FLAGS, Some([0x20_0000, 0x20_0000, 0, 0x20_4000, 0x20_0020]));
        let image = image_with(0x1008, 0x3000, &h);
        let plan = load(&image, MEM_16M).unwrap();
        assert_eq!(
            plan.segments,
            vec![Segment { gpa: GuestPhysAddr(0x20_0000), data: &image[0x1008..], mem_size: 0x4000 }]
        );
    }

    #[test]
    fn bss_end_addr_zero_means_no_bss() {
        let h = header(AOUT_FLAGS, Some([0x10_0000, 0x10_0000, 0x10_1000, 0, 0x10_0020]));
        let image = image_with(0, 0x2000, &h);
        assert_eq!(load(&image, MEM_16M).unwrap().segments[0].mem_size, 0x1000);
    }

    #[test]
    fn a_header_ending_exactly_at_8192_bytes_is_found() {
        let image = image_with(8180, 0x3000, &header(FLAG_MEMORY_INFO, None));
        // Found: with no flag 16, loading then needs an ELF file.
        assert_eq!(load(&image, MEM_16M), Err(LoadError::MultibootNotElf));
    }

    #[test]
    fn a_header_not_completely_within_8192_bytes_is_not_found() {
        for offset in [8184, 8188, 8192, 0x2800] {
            let image = image_with(offset, 0x3000, &header(AOUT_FLAGS, Some([0x10_0000; 5])));
            assert_eq!(load(&image, MEM_16M), Err(LoadError::MultibootHeaderNotFound), "offset {offset}");
        }
    }

    #[test]
    fn address_fields_crossing_8192_bytes_are_refused() {
        let image = image_with(8180, 0x3000, &header(AOUT_FLAGS, Some([0x10_0000; 5])));
        assert_eq!(load(&image, MEM_16M), Err(LoadError::MultibootHeaderTruncated { offset: 8180, needed: 32 }));
        let short = image_with(0, 20, &header(AOUT_FLAGS, None));
        assert_eq!(load(&short, MEM_16M), Err(LoadError::MultibootHeaderTruncated { offset: 0, needed: 32 }));
    }

    #[test]
    fn a_header_at_an_unaligned_offset_is_not_found() {
        let image = image_with(2, 0x2000, &header(AOUT_FLAGS, Some([0x10_0000; 5])));
        assert_eq!(load(&image, MEM_16M), Err(LoadError::MultibootHeaderNotFound));
    }

    #[test]
    fn images_too_short_for_a_header_have_none() {
        for len in 0..12 {
            assert_eq!(load(&aout()[..len], MEM_16M), Err(LoadError::MultibootHeaderNotFound), "length {len}");
        }
    }

    #[test]
    fn a_bad_checksum_is_reported_when_no_valid_header_follows() {
        let mut image = aout();
        put(&mut image, 8, &0u32.to_le_bytes());
        assert_eq!(
            load(&image, MEM_16M),
            Err(LoadError::MultibootBadChecksum { offset: 0, flags: AOUT_FLAGS, checksum: 0 })
        );
    }

    #[test]
    fn a_magic_with_a_bad_checksum_is_skipped_for_a_valid_header_after_it() {
        let mut image = image_with(0x100, 0x2000, &header(AOUT_FLAGS, Some([0x10_0100, 0x10_0000, 0, 0, 0x10_0000])));
        put(&mut image, 0x40, &[HEADER_MAGIC.to_le_bytes(), [0; 4], [0; 4]].concat());
        assert_eq!(load(&image, MEM_16M).unwrap().segments[0].gpa, GuestPhysAddr(0x10_0000));
    }

    #[test]
    fn every_unknown_required_flag_from_bit_3_to_15_is_refused() {
        for bit in 3..16 {
            let flags = AOUT_FLAGS | 1 << bit;
            let image = image_with(0, 0x2000, &header(flags, Some([0x10_0000, 0x10_0000, 0, 0, 0x10_0000])));
            assert_eq!(
                load(&image, MEM_16M),
                Err(LoadError::MultibootUnsupportedFlags { flags, unknown: 1 << bit }),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn unknown_optional_flags_from_bit_17_are_ignored() {
        let flags = AOUT_FLAGS | 0xFFFE_0000;
        let image = image_with(0, 0x2000, &header(flags, Some([0x10_0000, 0x10_0000, 0, 0, 0x10_0000])));
        assert_eq!(load(&image, MEM_16M).unwrap().multiboot, Some(REQUEST));
    }

    #[test]
    fn the_flags_become_the_request() {
        let image = image_with(
            0,
            0x2000,
            &header(FLAG_AOUT_KLUDGE | FLAG_VIDEO_MODE, Some([0x10_0000, 0x10_0000, 0, 0, 0x10_0000])),
        );
        assert_eq!(
            load(&image, MEM_16M).unwrap().multiboot,
            Some(MultibootRequest { want_mem_info: false, want_mmap: false, want_video: true })
        );
    }

    #[test]
    fn aout_address_fields_that_contradict_each_other_are_refused() {
        // The error alone: it borrows nothing from the image.
        let case = |offset: usize, a: [u32; 5]| {
            load(&image_with(offset, 0x2000, &header(AOUT_FLAGS, Some(a))), MEM_16M).map(|plan| plan.entry)
        };
        assert_eq!(
            case(0, [0x10_0000, 0x10_0001, 0, 0, 0x10_0001]),
            Err(LoadError::AoutHeaderBelowLoad { header_addr: 0x10_0000, load_addr: 0x10_0001 })
        );
        assert_eq!(
            case(0x10, [0x10_0100, 0x10_0000, 0, 0, 0x10_0000]),
            Err(LoadError::AoutLoadBeforeFile { header_offset: 0x10, header_addr: 0x10_0100, load_addr: 0x10_0000 })
        );
        assert_eq!(
            case(0, [0x10_0000, 0x10_0000, 0xF_0000, 0, 0x10_0000]),
            Err(LoadError::AoutLoadEndBeforeLoad { load_addr: 0x10_0000, load_end_addr: 0xF_0000 })
        );
        assert_eq!(
            case(0, [0x10_0000, 0x10_0000, 0x10_2001, 0, 0x10_0000]),
            Err(LoadError::AoutLoadBeyondFile { load_offset: 0, load_size: 0x2001, image_size: 0x2000 })
        );
        assert_eq!(
            case(0, [0x10_0000, 0x10_0000, 0x10_1000, 0x10_0FFF, 0x10_0000]),
            Err(LoadError::AoutBssEndBeforeLoadEnd { load_end: 0x10_1000, bss_end_addr: 0x10_0FFF })
        );
    }

    #[test]
    fn an_aout_entry_outside_the_loaded_bytes_is_refused() {
        for entry in [0xF_FFFF, 0x10_1000, 0x10_2FFF] {
            let h = header(AOUT_FLAGS, Some([0x10_0000, 0x10_0000, 0x10_1000, 0x10_3000, entry]));
            let image = image_with(0, 0x2000, &h);
            assert_eq!(load(&image, MEM_16M), Err(LoadError::EntryOutsideImage { entry: u64::from(entry) }));
        }
    }

    #[test]
    fn an_aout_kernel_beyond_guest_memory_is_refused() {
        let h = header(AOUT_FLAGS, Some([0xFF_F000, 0xFF_F000, 0, 0x100_1000, 0xFF_F000]));
        let image = image_with(0, 0x2000, &h);
        assert_eq!(
            load(&image, MEM_16M),
            Err(LoadError::SegmentBeyondMemory {
                index: 0,
                gpa: GuestPhysAddr(0xFF_F000),
                mem_size: 0x2000,
                guest_mem: MEM_16M
            })
        );
    }

    #[test]
    fn an_aout_load_to_end_of_file_reaching_past_4_gib_is_refused() {
        let h = header(AOUT_FLAGS, Some([0xFFFF_F000, 0xFFFF_F000, 0, 0, 0xFFFF_F000]));
        let image = image_with(0, 0x2000, &h);
        assert_eq!(
            load(&image, 8 << 30),
            Err(LoadError::SegmentAbove4GiB { index: 0, gpa: GuestPhysAddr(0xFFFF_F000), mem_size: 0x2000 })
        );
    }

    #[test]
    fn without_flag_16_a_non_elf_image_is_refused() {
        let image = image_with(0, 0x2000, &header(FLAG_MEMORY_INFO, None));
        let err = load(&image, MEM_16M).unwrap_err();
        assert_eq!(err, LoadError::MultibootNotElf);
        assert!(err.to_string().starts_with("the Multiboot header does not set flag 16"));
    }

    // --- ELF32 ---

    /// An ELF32 i386 ET_EXEC: header, program headers at 52, file of `len` bytes, with a
    /// Multiboot header (flags 0x3) at offset 0x100.
    fn elf32(entry: u32, phdrs: &[[u32; 6]], len: usize) -> Vec<u8> {
        let mut v = image_with(0x100, len, &header(FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO, None));
        put(&mut v, 0, &[0x7F, b'E', b'L', b'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        put(&mut v, 16, &2u16.to_le_bytes()); // ET_EXEC
        put(&mut v, 18, &3u16.to_le_bytes()); // EM_386
        put(&mut v, 20, &1u32.to_le_bytes());
        put(&mut v, 24, &entry.to_le_bytes());
        put(&mut v, 28, &52u32.to_le_bytes()); // e_phoff
        put(&mut v, 32, &[0; 8]); // e_shoff, e_flags
        put(&mut v, 40, &52u16.to_le_bytes());
        put(&mut v, 42, &32u16.to_le_bytes());
        put(&mut v, 44, &(phdrs.len() as u16).to_le_bytes());
        put(&mut v, 46, &[0; 6]);
        for (i, [p_type, offset, vaddr, paddr, filesz, memsz]) in phdrs.iter().enumerate() {
            let fields = [*p_type, *offset, *vaddr, *paddr, *filesz, *memsz, 5, 0x1000];
            put(&mut v, 52 + 32 * i, &fields.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>());
        }
        v
    }

    fn elf32_kernel() -> Vec<u8> {
        elf32(0x10_000C, &[[1, 0x100, 0x10_0000, 0x10_0000, 0x100, 0x2000]], 0x200)
    }

    #[test]
    fn an_elf32_kernel_loads_by_program_headers() {
        let image = elf32_kernel();
        assert_eq!(
            load(&image, MEM_16M),
            Ok(LoadPlan {
                segments: vec![Segment { gpa: GuestPhysAddr(0x10_0000), data: &image[0x100..0x200], mem_size: 0x2000 }],
                entry: 0x10_000C,
                mode: EntryMode::Protected32,
                multiboot: Some(REQUEST),
            })
        );
    }

    #[test]
    fn a_higher_half_elf32_kernel_loads_at_p_paddr_with_its_entry_translated() {
        let image = elf32(0xC010_000C, &[[1, 0x100, 0xC010_0000, 0x10_0000, 0x100, 0x100]], 0x200);
        let plan = load(&image, MEM_16M).unwrap();
        assert_eq!(plan.segments[0].gpa, GuestPhysAddr(0x10_0000));
        assert_eq!(plan.entry, 0x10_000C);
    }

    #[test]
    fn an_elf64_file_with_a_multiboot_header_is_refused_by_class() {
        let mut image = elf32_kernel();
        image[4] = 2;
        assert_eq!(load(&image, MEM_16M), Err(LoadError::WrongElfClass { found: 2, expected: 1 }));
    }

    #[test]
    fn an_elf32_file_for_another_machine_is_refused() {
        let mut image = elf32_kernel();
        put(&mut image, 18, &40u16.to_le_bytes());
        assert_eq!(load(&image, MEM_16M), Err(LoadError::WrongMachine { found: 40, expected: 3 }));
    }

    #[test]
    fn elf32_program_header_errors_name_the_header() {
        let image = elf32(0x10_000C, &[[1, 0x100, 0x10_0000, 0x10_0000, 0x101, 0x2000]], 0x200);
        assert_eq!(
            load(&image, MEM_16M),
            Err(LoadError::SegmentDataOutsideFile { phdr: 0, offset: 0x100, file_size: 0x101, image_size: 0x200 })
        );
        let image = elf32(0x10_000C, &[[1, 0x100, 0x10_0000, 0x10_0000, 0x100, 0xFF]], 0x200);
        assert_eq!(
            load(&image, MEM_16M),
            Err(LoadError::FileSizeExceedsMemSize { phdr: 0, file_size: 0x100, mem_size: 0xFF })
        );
    }

    #[test]
    fn an_elf32_segment_reaching_past_4_gib_is_refused() {
        let image = elf32(0xFFFF_F000, &[[1, 0x100, 0xFFFF_F000, 0xFFFF_F000, 0x100, 0x2000]], 0x200);
        assert_eq!(
            load(&image, 8 << 30),
            Err(LoadError::SegmentAbove4GiB { index: 0, gpa: GuestPhysAddr(0xFFFF_F000), mem_size: 0x2000 })
        );
    }

    #[test]
    fn an_elf32_entry_outside_the_segments_is_refused() {
        let image = elf32(0x20_0000, &[[1, 0x100, 0x10_0000, 0x10_0000, 0x100, 0x2000]], 0x200);
        assert_eq!(load(&image, MEM_16M), Err(LoadError::EntryOutsideImage { entry: 0x20_0000 }));
    }

    #[test]
    fn every_truncation_of_an_elf32_kernel_is_an_error() {
        let image = elf32_kernel();
        for len in 0..image.len() {
            assert!(load(&image[..len], MEM_16M).is_err(), "length {len}");
        }
    }

    use crate::loader::test_rng::XorShift;

    #[test]
    fn random_mutations_of_valid_kernels_never_panic_and_accepted_plans_are_valid() {
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        let mut accepted = 0;
        for original in [aout(), elf32_kernel()] {
            for _ in 0..10_000 {
                let mut image = original.clone();
                for _ in 0..1 + rng.below(4) {
                    // Mostly the ELF and Multiboot headers (0..0x120).
                    let at = if rng.below(4) == 0 { rng.below(image.len()) } else { rng.below(0x120) };
                    match rng.below(3) {
                        0 => image[at] = rng.next() as u8,
                        1 => image[at] ^= 1 << rng.below(8),
                        _ => {
                            let value = [0, u32::MAX, 1 << 31, 0x10_0000, rng.next() as u32][rng.below(5)];
                            let end = (at + 4).min(image.len());
                            image[at..end].copy_from_slice(&value.to_le_bytes()[..end - at]);
                        }
                    }
                }
                if rng.below(8) == 0 {
                    image.truncate(rng.below(image.len() + 1));
                }
                match load(&image, MEM_16M) {
                    Ok(plan) => {
                        accepted += 1;
                        assert_eq!(plan.validate(MEM_16M), Ok(()));
                        assert_eq!(plan.mode, EntryMode::Protected32);
                    }
                    Err(e) => assert!(!e.to_string().is_empty()),
                }
            }
        }
        assert!(accepted > 100, "{accepted}");
    }

    // --- boot information ---

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn the_boot_information_of_a_16_mib_guest_has_this_exact_layout() {
        let info = build_info(INFO_GPA, MEM_16M, "console=e9", "Ferrovisor").unwrap();
        assert_eq!(info.info_gpa, GuestPhysAddr(0x9000));
        let b = &info.bytes;
        // 120 bytes of structure (116 + padding), 8 map entries of 24, "console=e9\0", "Ferrovisor\0".
        assert_eq!(b.len(), 120 + 192 + 11 + 11);
        assert_eq!(u32_at(b, 0), 0x245, "flags: memory, cmdline, mmap, boot loader name");
        assert_eq!(u32_at(b, 4), 639, "mem_lower in KiB");
        assert_eq!(u32_at(b, 8), 15 * 1024, "mem_upper in KiB");
        assert_eq!(u32_at(b, 16), 0x9000 + 312, "cmdline");
        assert_eq!(u32_at(b, 44), 192, "mmap_length");
        assert_eq!(u32_at(b, 48), 0x9000 + 120, "mmap_addr");
        assert_eq!(u32_at(b, 64), 0x9000 + 323, "boot_loader_name");
        for unused in [12, 20, 24, 28, 32, 36, 40, 52, 56, 60, 68, 72, 76, 80, 84, 88, 92, 96, 100, 104, 108, 112] {
            assert_eq!(u32_at(b, unused), 0, "offset {unused}");
        }
        assert_eq!(&b[116..120], &[0; 4]);
        let entries: Vec<(u32, u64, u64, u32)> = (0..8)
            .map(|i| 120 + 24 * i)
            .map(|e| (u32_at(b, e), u64_at(b, e + 4), u64_at(b, e + 12), u32_at(b, e + 20)))
            .collect();
        assert_eq!(
            entries,
            vec![
                (20, 0, 0x9_FC00, 1),
                (20, 0x9_FC00, 0x4_0440, 2),
                (20, 0xE_0040, 0xF80, 3),
                (20, 0xE_0FC0, 0x40, 4),
                (20, 0xE_1000, 0x1_F000, 2),
                (20, 0x10_0000, 0xF0_0000, 1),
                (20, 0xFEC0_0000, 0x1000, 2),
                (20, 0xFEE0_0000, 0x1000, 2),
            ]
        );
        assert_eq!(&b[312..323], b"console=e9\0");
        assert_eq!(&b[323..334], b"Ferrovisor\0");
    }

    #[test]
    fn the_memory_map_is_the_e820_map_and_agrees_with_mem_lower_and_mem_upper() {
        for guest_mem in [1 << 20, (1 << 20) + 1, 16 << 20, 0x1234_5678, 8 << 30] {
            let map = memory_map(guest_mem);
            let e820 = firmware::e820(guest_mem);
            assert_eq!(map.len(), e820.len());
            for (&(base, length, kind), e) in map.iter().zip(&e820) {
                assert_eq!((base, length, kind), (e.addr, e.len, e.kind as u32));
            }
            let mut next = 0;
            let mut available = 0;
            for &(base, length, kind) in &map {
                assert!(base >= next, "sorted and disjoint");
                if kind == 1 {
                    available += length;
                }
                next = base + length;
            }
            let below_hole = guest_mem.min(0xC000_0000);
            assert_eq!(available, 0x9_FC00 + (below_hole - (1 << 20)) + (guest_mem - below_hole));
            // mem_lower is the RAM at 0, mem_upper the RAM at 1 MiB, both in the map.
            let info = build_info(INFO_GPA, guest_mem, "", "F").unwrap();
            let ram_at = |at: u64| map.iter().find(|&&(b, _, k)| b == at && k == 1).map_or(0, |&(_, l, _)| l);
            assert_eq!(u64::from(u32_at(&info.bytes, 4)) * 1024, ram_at(0));
            assert_eq!(u64::from(u32_at(&info.bytes, 8)) * 1024, ram_at(1 << 20) & !0x3FF);
        }
    }

    #[test]
    fn a_1_mib_guest_has_no_upper_memory() {
        let info = build_info(INFO_GPA, 1 << 20, "", "Ferrovisor").unwrap();
        assert_eq!(u32_at(&info.bytes, 8), 0);
        assert_eq!(u32_at(&info.bytes, 44), 7 * 24);
        assert_eq!(
            build_info(INFO_GPA, (1 << 20) - 4096, "", "x"),
            Err(LoadError::GuestMemoryTooSmall { guest_mem: (1 << 20) - 4096, min: 1 << 20 })
        );
    }

    #[test]
    fn a_command_line_over_4095_bytes_is_refused_not_cut() {
        let longest = "x".repeat(MAX_CMDLINE_LEN);
        let info = build_info(INFO_GPA, MEM_16M, &longest, "F").unwrap();
        assert_eq!(info.bytes.len(), 312 + 4096 + 2);
        let long = "x".repeat(4096);
        let err = build_info(INFO_GPA, MEM_16M, &long, "F").unwrap_err();
        assert_eq!(err, LoadError::StringTooLong { what: "command line", len: 4096, max: 4095 });
        assert_eq!(err.to_string(), "the command line is 4096 bytes long; at most 4095 bytes are passed to the guest");
    }

    #[test]
    fn strings_with_nul_bytes_are_refused() {
        assert_eq!(
            build_info(INFO_GPA, MEM_16M, "a\0b", "F"),
            Err(LoadError::StringContainsNul { what: "command line", at: 1 })
        );
        assert_eq!(
            build_info(INFO_GPA, MEM_16M, "", "\0"),
            Err(LoadError::StringContainsNul { what: "boot loader name", at: 0 })
        );
        assert_eq!(
            build_info(INFO_GPA, MEM_16M, "", &"n".repeat(256)),
            Err(LoadError::StringTooLong { what: "boot loader name", len: 256, max: 255 })
        );
    }

    #[test]
    fn the_blob_must_be_aligned_in_memory_below_4_gib_and_outside_the_reserved_area() {
        let misplaced = |at: u64, mem: u64, problem| {
            // 8 map entries, 9 with RAM above 4 GiB.
            let len = (120 + 24 * memory_map(mem).len() + 3) as u64;
            assert_eq!(
                build_info(GuestPhysAddr(at), mem, "", "F"),
                Err(LoadError::BootInfoMisplaced { at: GuestPhysAddr(at), len, problem }),
                "{at:#x}"
            );
        };
        misplaced(0x9002, MEM_16M, Placement::Misaligned);
        misplaced(MEM_16M - 312, MEM_16M, Placement::BeyondMemory { guest_mem: MEM_16M });
        misplaced(u64::MAX - 3, MEM_16M, Placement::BeyondMemory { guest_mem: MEM_16M });
        misplaced(0xFFFF_FF40, 8 << 30, Placement::Above4GiB);
        misplaced(0x9_FB40, MEM_16M, Placement::InReservedArea);
        misplaced(0xF_FF00, MEM_16M, Placement::InReservedArea);
        assert!(build_info(GuestPhysAddr(0x9_FC00 - 316), MEM_16M, "", "F").is_ok());
        assert!(build_info(GuestPhysAddr(0x10_0000), MEM_16M, "", "F").is_ok());
        assert!(build_info(GuestPhysAddr(MEM_16M - 316), MEM_16M, "", "F").is_ok());
    }

    #[test]
    fn the_blob_can_be_checked_against_the_image() {
        let image = aout();
        let plan = load(&image, MEM_16M).unwrap();
        let info = build_info(INFO_GPA, MEM_16M, "", "Ferrovisor").unwrap();
        assert!(!plan.overlaps(info.info_gpa, info.bytes.len() as u64));
        assert!(plan.overlaps(GuestPhysAddr(0x10_2F00), 0x200), "the bss counts");
    }
}
