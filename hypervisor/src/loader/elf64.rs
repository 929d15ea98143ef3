//! ELF64 x86-64 executables (Ferrovisor's own 64-bit boot protocol, docs/guest-boot.md),
//! and the ELF reading the Multiboot loader shares for its ELF32 images.
//!
//! References: "ELF-64 Object File Format", version 1.5 (sections "ELF Header" and
//! "Program Header Table"), and for the 32-bit layout the Tool Interface Standard "ELF"
//! specification 1.2, Book I ("ELF Header", "Program Header"). Only what loading needs is
//! read: the identification, type, machine, version, entry point and the program header
//! table. Section headers, symbols and relocations are ignored.
//!
//! Segments are loaded at their *physical* address `p_paddr`, as Multiboot loaders do:
//! a guest starts with paging off or with Ferrovisor's identity mapping, so there is no
//! virtual address space to honour yet. Higher-half kernels link `p_vaddr` high and
//! `p_paddr` low; their entry point `e_entry` is a virtual address, which is translated
//! through the PT_LOAD segment containing it (`e_entry - p_vaddr + p_paddr`, what GRUB 2
//! does for Multiboot ELF kernels). Alignment (`p_align`) is irrelevant: the image says
//! where each byte goes.

use super::plan::{self, EntryMode, LoadError, LoadPlan, Segment};
use crate::mm::addr::GuestPhysAddr;
use alloc::vec::Vec;

/// `e_ident[EI_MAG0..=EI_MAG3]`.
pub const ELF_MAGIC: [u8; 4] = *b"\x7fELF";
/// `e_machine` of 32-bit x86.
pub const EM_386: u16 = 3;
/// `e_machine` of x86-64.
pub const EM_X86_64: u16 = 62;
/// Program headers accepted per image. Real kernels have a handful; the cap bounds the
/// work a hostile `e_phnum` can cause and also refuses PN_XNUM (0xFFFF, "the count is in
/// section header 0"), which no loadable kernel needs.
pub const MAX_PROGRAM_HEADERS: u16 = 128;

// e_ident indices and values ("ELF Identification").
const EI_CLASS: u64 = 4;
const EI_DATA: u64 = 5;
const EI_VERSION: u64 = 6;
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EV_CURRENT: u32 = 1;
// Fields at the same offset in both classes ("ELF Header").
const E_TYPE: u64 = 16;
const E_MACHINE: u64 = 18;
const E_VERSION: u64 = 20;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
/// `p_type` of a loadable segment; every other type is ignored.
const PT_LOAD: u32 = 1;

/// Where the fields loading needs sit in one ELF class; the classes differ in the width
/// of addresses and offsets (Elf32_Addr/Off vs Elf64_Addr/Off) and in the field order of
/// program headers.
pub(super) struct ElfLayout {
    class: u8,
    machine: u16,
    header_size: u64,
    /// 4 or 8: the width of e_entry, e_phoff and the p_* address and size fields.
    word: u64,
    e_entry: u64,
    e_phoff: u64,
    e_phentsize: u64,
    e_phnum: u64,
    /// Size of one program header, the least `e_phentsize` may say.
    phdr_size: u16,
    p_offset: u64,
    p_vaddr: u64,
    p_paddr: u64,
    p_filesz: u64,
    p_memsz: u64,
}

/// ELF-64 Object File Format, Figure 2 (Elf64_Ehdr, 64 bytes) and Figure 6 (Elf64_Phdr,
/// 56 bytes: p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align).
pub(super) const ELF64_X86_64: ElfLayout = ElfLayout {
    class: ELFCLASS64,
    machine: EM_X86_64,
    header_size: 64,
    word: 8,
    e_entry: 24,
    e_phoff: 32,
    e_phentsize: 54,
    e_phnum: 56,
    phdr_size: 56,
    p_offset: 8,
    p_vaddr: 16,
    p_paddr: 24,
    p_filesz: 32,
    p_memsz: 40,
};

/// TIS ELF 1.2, Figure 1-3 (Elf32_Ehdr, 52 bytes) and Figure 2-1 (Elf32_Phdr, 32 bytes:
/// p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags, p_align).
pub(super) const ELF32_I386: ElfLayout = ElfLayout {
    class: ELFCLASS32,
    machine: EM_386,
    header_size: 52,
    word: 4,
    e_entry: 24,
    e_phoff: 28,
    e_phentsize: 42,
    e_phnum: 44,
    phdr_size: 32,
    p_offset: 4,
    p_vaddr: 8,
    p_paddr: 12,
    p_filesz: 16,
    p_memsz: 20,
};

/// The loadable part of an ELF file.
pub(super) struct ElfImage<'a> {
    /// PT_LOAD segments with a non-zero `p_memsz`, in program header order, at `p_paddr`.
    pub segments: Vec<Segment<'a>>,
    /// `e_entry` translated to a physical address (see the module documentation).
    pub entry: u64,
}

/// Loads an ELF64 x86-64 executable (ET_EXEC) into a domain with `guest_mem` bytes of
/// RAM, to be entered in 64-bit long mode.
pub fn load<'a>(image: &'a [u8], guest_mem: u64) -> Result<LoadPlan<'a>, LoadError> {
    let elf = parse(image, &ELF64_X86_64)?;
    let plan = LoadPlan { segments: elf.segments, entry: elf.entry, mode: EntryMode::Long64, multiboot: None };
    plan.validate(guest_mem)?;
    Ok(plan)
}

/// Reads an ELF executable of `layout`'s class and machine: checks the identification and
/// header, then collects the PT_LOAD segments. Memory placement (guest size, overlaps,
/// entry inside the data) is left to [`LoadPlan::validate`].
pub(super) fn parse<'a>(image: &'a [u8], layout: &ElfLayout) -> Result<ElfImage<'a>, LoadError> {
    let image_size = plan::len_u64(image);
    // Check the magic over the bytes there are first, so a short text file is "not ELF"
    // rather than "truncated ELF".
    let magic_len = image.len().min(ELF_MAGIC.len());
    if image.get(..magic_len) != ELF_MAGIC.get(..magic_len) {
        return Err(LoadError::NotElf);
    }
    let short = LoadError::ImageTooSmall { size: image_size, needed: layout.header_size, what: "ELF header" };
    if image_size < layout.header_size {
        return Err(short);
    }
    let class = plan::u8_at(image, EI_CLASS).ok_or(short)?;
    if class != layout.class {
        return Err(LoadError::WrongElfClass { found: class, expected: layout.class });
    }
    // Everything below is little-endian; refuse before reading multi-byte fields.
    let data = plan::u8_at(image, EI_DATA).ok_or(short)?;
    if data != ELFDATA2LSB {
        return Err(LoadError::NotLittleEndian { found: data });
    }
    let ident_version = plan::u8_at(image, EI_VERSION).ok_or(short)?;
    let version = plan::u32_at(image, E_VERSION).ok_or(short)?;
    if u32::from(ident_version) != EV_CURRENT || version != EV_CURRENT {
        return Err(LoadError::UnsupportedElfVersion { ident: ident_version, header: version });
    }
    // Machine before type: an ARM shared library is foremost "not x86".
    let machine = plan::u16_at(image, E_MACHINE).ok_or(short)?;
    if machine != layout.machine {
        return Err(LoadError::WrongMachine { found: machine, expected: layout.machine });
    }
    match plan::u16_at(image, E_TYPE).ok_or(short)? {
        ET_EXEC => {}
        ET_DYN => return Err(LoadError::PositionIndependent),
        e_type => return Err(LoadError::NotExecutable { e_type }),
    }
    let e_entry = word(image, layout, layout.e_entry).ok_or(short)?;
    let phoff = word(image, layout, layout.e_phoff).ok_or(short)?;
    let phentsize = plan::u16_at(image, layout.e_phentsize).ok_or(short)?;
    let phnum = plan::u16_at(image, layout.e_phnum).ok_or(short)?;
    // A larger e_phentsize is allowed (the spec gives the size so headers can grow); we
    // read the fields we know at the start of each entry.
    if phentsize < layout.phdr_size {
        return Err(LoadError::ProgramHeaderSizeTooSmall { found: phentsize, min: layout.phdr_size });
    }
    if phnum > MAX_PROGRAM_HEADERS {
        return Err(LoadError::TooManyProgramHeaders { count: phnum, max: MAX_PROGRAM_HEADERS });
    }
    let outside =
        LoadError::ProgramHeadersOutsideFile { offset: phoff, count: phnum, entry_size: phentsize, image_size };
    let table_end = u64::from(phnum).checked_mul(u64::from(phentsize)).and_then(|size| phoff.checked_add(size));
    if table_end.is_none_or(|end| end > image_size) {
        return Err(outside);
    }

    let mut segments = Vec::new();
    // (p_vaddr, p_paddr, p_memsz) of each kept segment, to translate the entry point.
    let mut windows: Vec<(u64, u64, u64)> = Vec::new();
    for index in 0..phnum {
        // In the file (checked above), so the reads cannot fail; `outside` keeps them
        // panic-free regardless.
        let base =
            u64::from(index).checked_mul(u64::from(phentsize)).and_then(|o| phoff.checked_add(o)).ok_or(outside)?;
        let field = |offset: u64| base.checked_add(offset).and_then(|at| word(image, layout, at)).ok_or(outside);
        if plan::u32_at(image, base).ok_or(outside)? != PT_LOAD {
            continue;
        }
        let (offset, vaddr, paddr) = (field(layout.p_offset)?, field(layout.p_vaddr)?, field(layout.p_paddr)?);
        let (file_size, mem_size) = (field(layout.p_filesz)?, field(layout.p_memsz)?);
        if file_size > mem_size {
            return Err(LoadError::FileSizeExceedsMemSize { phdr: index, file_size, mem_size });
        }
        // A segment with no file bytes (pure bss) takes nothing from the file, so its
        // p_offset is not checked: linkers may point it at or past the end of the file.
        let data = if file_size == 0 {
            &[][..]
        } else {
            plan::slice_at(image, offset, file_size).ok_or(LoadError::SegmentDataOutsideFile {
                phdr: index,
                offset,
                file_size,
                image_size,
            })?
        };
        // An empty PT_LOAD occupies no memory; keeping it would only create zero-length
        // segments for the later stages to step around.
        if mem_size == 0 {
            continue;
        }
        segments.push(Segment { gpa: GuestPhysAddr(paddr), data, mem_size });
        windows.push((vaddr, paddr, mem_size));
    }
    if segments.is_empty() {
        return Err(LoadError::NoLoadSegments);
    }
    let entry = windows
        .iter()
        .find_map(|&(vaddr, paddr, mem_size)| {
            let offset = e_entry.checked_sub(vaddr).filter(|&o| o < mem_size)?;
            paddr.checked_add(offset)
        })
        .ok_or(LoadError::EntryOutsideImage { entry: e_entry })?;
    Ok(ElfImage { segments, entry })
}

/// An address or offset field: 32 or 64 bits depending on the class.
fn word(image: &[u8], layout: &ElfLayout, offset: u64) -> Option<u64> {
    if layout.word == 8 { plan::u64_at(image, offset) } else { plan::u32_at(image, offset).map(u64::from) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    const MEM_16M: u64 = 16 << 20;
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    const PT_NOTE: u32 = 4;
    const PT_GNU_STACK: u32 = 0x6474_E551;

    #[derive(Clone, Copy, Default)]
    struct Ph {
        p_type: u32,
        offset: u64,
        vaddr: u64,
        paddr: u64,
        filesz: u64,
        memsz: u64,
    }

    impl Ph {
        fn load(offset: u64, addr: u64, filesz: u64, memsz: u64) -> Ph {
            Ph { p_type: PT_LOAD, offset, vaddr: addr, paddr: addr, filesz, memsz }
        }
    }

    fn put(v: &mut [u8], at: usize, bytes: &[u8]) {
        v[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// An ELF64 x86-64 ET_EXEC with `phdrs` right after the header and `file_len` bytes in
    /// all; the bytes after the headers hold a recognisable pattern.
    fn elf64(entry: u64, phdrs: &[Ph], file_len: usize) -> Vec<u8> {
        let mut v: Vec<u8> = (0..file_len.max(EHDR + PHDR * phdrs.len())).map(|i| (i * 7 + 1) as u8).collect();
        put(&mut v, 0, &[0x7F, b'E', b'L', b'F', ELFCLASS64, ELFDATA2LSB, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        put(&mut v, 16, &ET_EXEC.to_le_bytes());
        put(&mut v, 18, &EM_X86_64.to_le_bytes());
        put(&mut v, 20, &1u32.to_le_bytes());
        put(&mut v, 24, &entry.to_le_bytes());
        put(&mut v, 32, &(EHDR as u64).to_le_bytes()); // e_phoff
        put(&mut v, 40, &0u64.to_le_bytes()); // e_shoff
        put(&mut v, 48, &0u32.to_le_bytes()); // e_flags
        put(&mut v, 52, &(EHDR as u16).to_le_bytes());
        put(&mut v, 54, &(PHDR as u16).to_le_bytes());
        put(&mut v, 56, &(phdrs.len() as u16).to_le_bytes());
        put(&mut v, 58, &[0; 6]); // e_shentsize, e_shnum, e_shstrndx
        for (i, ph) in phdrs.iter().enumerate() {
            let b = EHDR + i * PHDR;
            put(&mut v, b, &ph.p_type.to_le_bytes());
            put(&mut v, b + 4, &5u32.to_le_bytes()); // PF_R | PF_X
            put(&mut v, b + 8, &ph.offset.to_le_bytes());
            put(&mut v, b + 16, &ph.vaddr.to_le_bytes());
            put(&mut v, b + 24, &ph.paddr.to_le_bytes());
            put(&mut v, b + 32, &ph.filesz.to_le_bytes());
            put(&mut v, b + 40, &ph.memsz.to_le_bytes());
            put(&mut v, b + 48, &0x1000u64.to_le_bytes());
        }
        v
    }

    /// Text at 1 MiB (0x80 bytes from offset 0x100), a GNU_STACK header to ignore, and
    /// data + bss at 2 MiB (0x40 bytes from offset 0x180, 0x1000 in memory).
    const VALID_LEN: usize = 0x1C0;
    fn valid() -> Vec<u8> {
        elf64(
            0x10_0010,
            &[
                Ph::load(0x100, 0x10_0000, 0x80, 0x80),
                Ph { p_type: PT_GNU_STACK, ..Ph::default() },
                Ph::load(0x180, 0x20_0000, 0x40, 0x1000),
            ],
            VALID_LEN,
        )
    }

    fn with(mut v: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
        put(&mut v, at, bytes);
        v
    }

    #[test]
    fn a_valid_elf64_with_two_loads_gives_the_exact_plan() {
        let image = valid();
        let plan = load(&image, MEM_16M).unwrap();
        assert_eq!(
            plan,
            LoadPlan {
                segments: vec![
                    Segment { gpa: GuestPhysAddr(0x10_0000), data: &image[0x100..0x180], mem_size: 0x80 },
                    Segment { gpa: GuestPhysAddr(0x20_0000), data: &image[0x180..0x1C0], mem_size: 0x1000 },
                ],
                entry: 0x10_0010,
                mode: EntryMode::Long64,
                multiboot: None,
            }
        );
        assert_eq!(plan.highest_gpa(), 0x20_1000);
    }

    #[test]
    fn segments_load_at_p_paddr_and_a_higher_half_entry_is_translated() {
        let image = elf64(
            0xFFFF_FFFF_8010_0020,
            &[Ph { vaddr: 0xFFFF_FFFF_8010_0000, ..Ph::load(0x100, 0x10_0000, 0x80, 0x80) }],
            0x180,
        );
        let plan = load(&image, MEM_16M).unwrap();
        assert_eq!(plan.segments[0].gpa, GuestPhysAddr(0x10_0000));
        assert_eq!(plan.entry, 0x10_0020);
    }

    #[test]
    fn every_truncation_of_a_valid_image_is_refused_with_the_matching_error() {
        let image = valid();
        for len in 0..VALID_LEN {
            let size = len as u64;
            let expected = match len {
                0..EHDR => LoadError::ImageTooSmall { size, needed: 64, what: "ELF header" },
                // The header is there, the table of three program headers (to 0xE8) is not.
                EHDR..0xE8 => {
                    LoadError::ProgramHeadersOutsideFile { offset: 64, count: 3, entry_size: 56, image_size: size }
                }
                0xE8..0x180 => {
                    LoadError::SegmentDataOutsideFile { phdr: 0, offset: 0x100, file_size: 0x80, image_size: size }
                }
                _ => LoadError::SegmentDataOutsideFile { phdr: 2, offset: 0x180, file_size: 0x40, image_size: size },
            };
            assert_eq!(load(&image[..len], MEM_16M), Err(expected), "length {len:#x}");
        }
    }

    #[test]
    fn a_file_without_the_elf_magic_is_not_elf() {
        assert_eq!(load(b"MZ\x90\x00 this is a PE file", MEM_16M), Err(LoadError::NotElf));
        assert_eq!(load(b"\x7fEL", MEM_16M), Err(LoadError::ImageTooSmall { size: 3, needed: 64, what: "ELF header" }));
        assert_eq!(load(b"\x7fEx", MEM_16M), Err(LoadError::NotElf));
    }

    #[test]
    fn a_32_bit_elf_is_refused_by_class() {
        let image = with(valid(), 4, &[ELFCLASS32]);
        assert_eq!(load(&image, MEM_16M), Err(LoadError::WrongElfClass { found: 1, expected: 2 }));
        let image = with(valid(), 4, &[0]);
        assert_eq!(load(&image, MEM_16M), Err(LoadError::WrongElfClass { found: 0, expected: 2 }));
    }

    #[test]
    fn a_big_endian_elf_is_refused() {
        let image = with(valid(), 5, &[2]);
        assert_eq!(load(&image, MEM_16M), Err(LoadError::NotLittleEndian { found: 2 }));
        assert_eq!(
            LoadError::NotLittleEndian { found: 2 }.to_string(),
            "the ELF file is big-endian (EI_DATA = 2); x86 images must be little-endian"
        );
    }

    #[test]
    fn an_elf_version_other_than_1_is_refused() {
        let image = with(valid(), 6, &[2]);
        assert_eq!(load(&image, MEM_16M), Err(LoadError::UnsupportedElfVersion { ident: 2, header: 1 }));
        let image = with(valid(), 20, &0u32.to_le_bytes());
        assert_eq!(load(&image, MEM_16M), Err(LoadError::UnsupportedElfVersion { ident: 1, header: 0 }));
    }

    #[test]
    fn an_elf_for_another_machine_is_refused() {
        let image = with(valid(), 18, &183u16.to_le_bytes());
        assert_eq!(load(&image, MEM_16M), Err(LoadError::WrongMachine { found: 183, expected: 62 }));
        let image = with(valid(), 18, &EM_386.to_le_bytes());
        assert_eq!(load(&image, MEM_16M), Err(LoadError::WrongMachine { found: 3, expected: 62 }));
    }

    #[test]
    fn a_position_independent_executable_is_refused_with_a_hint() {
        let image = with(valid(), 16, &ET_DYN.to_le_bytes());
        let err = load(&image, MEM_16M).unwrap_err();
        assert_eq!(err, LoadError::PositionIndependent);
        assert_eq!(
            err.to_string(),
            "the ELF file is position-independent (ET_DYN); position-independent guests are not supported; \
             link with a fixed address"
        );
    }

    #[test]
    fn relocatable_objects_and_core_dumps_are_not_executables() {
        for e_type in [0u16, 1, 4, 0xFE00] {
            let image = with(valid(), 16, &e_type.to_le_bytes());
            assert_eq!(load(&image, MEM_16M), Err(LoadError::NotExecutable { e_type }));
        }
        assert_eq!(
            LoadError::NotExecutable { e_type: 1 }.to_string(),
            "the ELF file is a relocatable object (ET_REL), not an executable (ET_EXEC); link it into an executable"
        );
    }

    #[test]
    fn a_program_header_size_below_56_is_refused() {
        let image = with(valid(), 54, &55u16.to_le_bytes());
        assert_eq!(load(&image, MEM_16M), Err(LoadError::ProgramHeaderSizeTooSmall { found: 55, min: 56 }));
    }

    #[test]
    fn larger_program_header_entries_are_read_at_their_stride() {
        // Two entries of 64 bytes: the 8 extra bytes per entry are skipped.
        let mut image = vec![0u8; 0x200];
        let old = elf64(0x10_0000, &[Ph::load(0x100, 0x10_0000, 0x10, 0x10)], 0x200);
        put(&mut image, 0, &old[..EHDR + PHDR]);
        put(&mut image, 54, &64u16.to_le_bytes());
        put(&mut image, 56, &2u16.to_le_bytes());
        put(&mut image, EHDR + 64, &old[EHDR..EHDR + PHDR]);
        put(&mut image, EHDR + 64 + 24, &0x20_0000u64.to_le_bytes()); // p_paddr of the second
        let plan = load(&image, MEM_16M).unwrap();
        assert_eq!(plan.segments.len(), 2);
        assert_eq!(plan.segments[1].gpa, GuestPhysAddr(0x20_0000));
    }

    #[test]
    fn more_than_128_program_headers_are_refused() {
        for count in [129u16, 0xFFFF] {
            let image = with(valid(), 56, &count.to_le_bytes());
            assert_eq!(load(&image, MEM_16M), Err(LoadError::TooManyProgramHeaders { count, max: 128 }));
        }
    }

    #[test]
    fn a_program_header_table_beyond_the_file_is_refused() {
        let image = with(valid(), 32, &0x1A0u64.to_le_bytes());
        assert_eq!(
            load(&image, MEM_16M),
            Err(LoadError::ProgramHeadersOutsideFile { offset: 0x1A0, count: 3, entry_size: 56, image_size: 0x1C0 })
        );
        // An offset that makes `e_phoff + size` wrap.
        let image = with(valid(), 32, &(u64::MAX - 8).to_le_bytes());
        assert_eq!(
            load(&image, MEM_16M),
            Err(LoadError::ProgramHeadersOutsideFile {
                offset: u64::MAX - 8,
                count: 3,
                entry_size: 56,
                image_size: 0x1C0
            })
        );
    }

    #[test]
    fn file_size_above_memory_size_is_refused() {
        let image = elf64(0x10_0000, &[Ph::load(0x100, 0x10_0000, 0x80, 0x7F)], 0x180);
        assert_eq!(
            load(&image, MEM_16M),
            Err(LoadError::FileSizeExceedsMemSize { phdr: 0, file_size: 0x80, mem_size: 0x7F })
        );
    }

    #[test]
    fn segment_data_past_the_end_of_the_file_is_refused() {
        let image = elf64(0x10_0000, &[Ph::load(0x100, 0x10_0000, 0x81, 0x100)], 0x180);
        assert_eq!(
            load(&image, MEM_16M),
            Err(LoadError::SegmentDataOutsideFile { phdr: 0, offset: 0x100, file_size: 0x81, image_size: 0x180 })
        );
        let image = elf64(0x10_0000, &[Ph::load(u64::MAX, 0x10_0000, 1, 1)], 0x180);
        assert_eq!(
            load(&image, MEM_16M),
            Err(LoadError::SegmentDataOutsideFile { phdr: 0, offset: u64::MAX, file_size: 1, image_size: 0x180 })
        );
    }

    #[test]
    fn a_bss_only_segment_ignores_its_file_offset() {
        let image = elf64(
            0x10_0000,
            &[Ph::load(0x100, 0x10_0000, 0x80, 0x80), Ph::load(u64::MAX, 0x20_0000, 0, 0x4000)],
            0x180,
        );
        let plan = load(&image, MEM_16M).unwrap();
        assert_eq!(plan.segments[1], Segment { gpa: GuestPhysAddr(0x20_0000), data: &[], mem_size: 0x4000 });
    }

    #[test]
    fn a_segment_beyond_guest_memory_is_refused() {
        let image = elf64(
            0x10_0000,
            &[Ph::load(0x100, 0x10_0000, 0x40, 0x40), Ph::load(0x140, 0xFF_F000, 0x40, 0x2000)],
            0x180,
        );
        let err = load(&image, MEM_16M).unwrap_err();
        assert_eq!(
            err,
            LoadError::SegmentBeyondMemory {
                index: 1,
                gpa: GuestPhysAddr(0xFF_F000),
                mem_size: 0x2000,
                guest_mem: MEM_16M
            }
        );
        assert_eq!(
            err.to_string(),
            "segment 1 (guest-physical 0xfff000, 0x2000 bytes) ends beyond the domain's 16 MiB of memory"
        );
    }

    #[test]
    fn a_segment_wrapping_the_address_space_is_an_error_not_a_panic() {
        let image = elf64(u64::MAX - 10, &[Ph::load(0x100, u64::MAX - 10, 0x10, 100)], 0x180);
        assert_eq!(
            load(&image, u64::MAX),
            Err(LoadError::SegmentBeyondMemory {
                index: 0,
                gpa: GuestPhysAddr(u64::MAX - 10),
                mem_size: 100,
                guest_mem: u64::MAX
            })
        );
    }

    #[test]
    fn a_huge_memory_size_is_bounded_by_guest_memory() {
        let image = elf64(0x10_0000, &[Ph::load(0x100, 0x10_0000, 0x10, 1 << 63)], 0x180);
        assert!(matches!(
            load(&image, MEM_16M),
            Err(LoadError::SegmentBeyondMemory { mem_size: 0x8000_0000_0000_0000, .. })
        ));
    }

    #[test]
    fn overlapping_segments_are_refused() {
        let image = elf64(
            0x10_0000,
            &[Ph::load(0x100, 0x10_0000, 0x40, 0x1000), Ph::load(0x140, 0x10_0FFF, 0x40, 0x40)],
            0x180,
        );
        assert_eq!(
            load(&image, MEM_16M),
            Err(LoadError::SegmentsOverlap {
                first: 0,
                first_gpa: GuestPhysAddr(0x10_0000),
                first_size: 0x1000,
                second: 1,
                second_gpa: GuestPhysAddr(0x10_0FFF),
                second_size: 0x40,
            })
        );
    }

    #[test]
    fn an_entry_outside_every_segment_is_refused() {
        let image = with(valid(), 24, &0x50_0000u64.to_le_bytes());
        assert_eq!(load(&image, MEM_16M), Err(LoadError::EntryOutsideImage { entry: 0x50_0000 }));
    }

    #[test]
    fn an_entry_in_the_bss_is_refused() {
        let image = with(valid(), 24, &0x20_0800u64.to_le_bytes());
        assert_eq!(load(&image, MEM_16M), Err(LoadError::EntryOutsideImage { entry: 0x20_0800 }));
    }

    #[test]
    fn an_image_without_pt_load_is_refused() {
        let notes = elf64(0x10_0000, &[Ph { p_type: PT_NOTE, ..Ph::load(0x100, 0x10_0000, 0x10, 0x10) }], 0x180);
        assert_eq!(load(&notes, MEM_16M), Err(LoadError::NoLoadSegments));
        let none = elf64(0x10_0000, &[], 0x180);
        assert_eq!(load(&none, MEM_16M), Err(LoadError::NoLoadSegments));
        let empty = elf64(0x10_0000, &[Ph::load(0x100, 0x10_0000, 0, 0)], 0x180);
        assert_eq!(load(&empty, MEM_16M), Err(LoadError::NoLoadSegments));
    }

    use crate::loader::test_rng::XorShift;

    #[test]
    fn random_mutations_of_a_valid_image_never_panic_and_accepted_plans_are_valid() {
        let original = valid();
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut accepted = 0;
        for _ in 0..20_000 {
            let mut image = original.clone();
            for _ in 0..1 + rng.below(4) {
                // Mostly the headers, where the interesting fields are.
                let at = if rng.below(4) == 0 { rng.below(image.len()) } else { rng.below(EHDR + 3 * PHDR) };
                match rng.below(3) {
                    0 => image[at] = rng.next() as u8,
                    1 => image[at] ^= 1 << rng.below(8),
                    _ => {
                        let value = [0, u64::MAX, 1 << 63, u64::MAX - 10, rng.next()][rng.below(5)];
                        let end = (at + 8).min(image.len());
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
                    let range = image.as_ptr_range();
                    for s in &plan.segments {
                        assert!(s.data.is_empty() || range.contains(&s.data.as_ptr()));
                    }
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
        // The mutations are not all fatal: the loop also exercises the accepting path.
        assert!(accepted > 100, "{accepted}");
    }
}
