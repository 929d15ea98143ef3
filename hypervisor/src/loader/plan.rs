//! The common output of every loader: what to copy where in guest-physical memory and how
//! to enter it, the error type all loaders share, and the checks every plan must pass
//! whichever format it came from ([`LoadPlan::validate`]).
//!
//! Everything here treats the image as hostile: it is guest-supplied data that reached
//! us through the boot bundle. Offsets and sizes read from it are `u64`s that may be
//! anything, so all arithmetic on them is checked and all reads go through the
//! bounds-checked helpers at the end of this file (never slice indexing).

use crate::mm::addr::GuestPhysAddr;
use alloc::vec::Vec;
use core::fmt;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// 4 GiB: the first address a 32-bit protected-mode guest cannot reach with paging off.
pub const LIMIT_4G: u64 = 1 << 32;

/// 1 MiB: real-mode CS:IP (with CS = entry >> 4, docs/guest-boot.md) reaches only below it.
pub const LIMIT_REAL_MODE_ENTRY: u64 = 1 << 20;

/// How the vCPU starts. The loader only picks the mode; the vCPU setup builds the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// 64-bit long mode with the identity paging Ferrovisor builds (docs/guest-boot.md);
    /// the entry is the RIP, a guest-physical address (identity mapped).
    Long64,
    /// 32-bit protected mode, paging off, flat 4 GiB segments: the state Multiboot
    /// Specification 0.6.96 section 3.2 "Machine state" prescribes. The entry is the EIP.
    Protected32,
    /// 16-bit real mode; the entry is a linear address below 1 MiB that the vCPU setup
    /// turns into CS:IP.
    Real16,
}

impl fmt::Display for EntryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Long64 => "64-bit long mode",
            Self::Protected32 => "32-bit protected mode",
            Self::Real16 => "16-bit real mode",
        })
    }
}

/// One piece of the image: copy `data` to `gpa`, then zero-fill up to `mem_size` bytes
/// (ELF `p_filesz` / `p_memsz`, the a.out kludge's load and bss ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    pub gpa: GuestPhysAddr,
    pub data: &'a [u8],
    pub mem_size: u64,
}

impl Segment<'_> {
    /// The first guest-physical address after the segment, `None` if it would wrap past
    /// 2^64 (a validated plan has none of those).
    pub fn end(&self) -> Option<u64> {
        self.gpa.0.checked_add(self.mem_size)
    }

    /// Bytes of `data`, as a guest-physical length.
    fn data_len(&self) -> u64 {
        len_u64(self.data)
    }
}

/// What the kernel asked for in its Multiboot header flags (spec 3.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultibootRequest {
    /// Flag bit 1: `mem_lower`/`mem_upper` must be provided.
    pub want_mem_info: bool,
    /// Also flag bit 1: the spec lets a loader that has a memory map pass it along with
    /// the memory sizes (there is no separate header bit for the map), so this mirrors
    /// `want_mem_info`. [`super::multiboot::build_info`] always provides both.
    pub want_mmap: bool,
    /// Flag bit 2: the kernel wants a video mode table. Ferrovisor has no display, so the
    /// information structure never carries one (flags 11 and 12 stay clear); the caller
    /// should tell the person the request cannot be honoured.
    pub want_video: bool,
}

/// Everything needed to put an image into a domain and start it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadPlan<'a> {
    pub segments: Vec<Segment<'a>>,
    /// Guest-physical address of the first instruction (also the RIP/EIP: guests start with
    /// paging off or identity mapped).
    pub entry: u64,
    pub mode: EntryMode,
    /// `Some` for Multiboot kernels: they expect the information structure (spec 3.3).
    pub multiboot: Option<MultibootRequest>,
}

impl LoadPlan<'_> {
    /// The first guest-physical address above every segment (the exclusive end of the
    /// highest one), 0 for a plan without segments. Saturates instead of wrapping for an
    /// unvalidated plan.
    pub fn highest_gpa(&self) -> u64 {
        self.segments.iter().map(|s| s.gpa.0.saturating_add(s.mem_size)).max().unwrap_or(0)
    }

    /// Whether any segment shares a byte with `start..start + len` (for callers that place
    /// their own data, such as the Multiboot information, next to the image). A range that
    /// wraps past 2^64 counts as reaching the top of the address space.
    pub fn overlaps(&self, start: GuestPhysAddr, len: u64) -> bool {
        let end = start.0.saturating_add(len);
        len != 0
            && self
                .segments
                .iter()
                .any(|s| s.mem_size != 0 && s.gpa.0 < end && start.0 < s.gpa.0.saturating_add(s.mem_size))
    }

    /// The checks every loader applies to its result, whatever the image format:
    /// - each segment's data fits its memory size, and the segment lies inside the
    ///   domain's `guest_mem` bytes of RAM (guest-physical `0..guest_mem`), computed without
    ///   wrapping: this is also what bounds a hostile `p_memsz` of 2^63;
    /// - in 32-bit protected mode, below 4 GiB, since paging is off at entry (Multiboot 3.2);
    /// - no two segments overlap (a later copy would silently clobber an earlier one);
    /// - the entry point lies in the bytes copied from the image (not in the zero fill,
    ///   where the first instruction would be `00 00`, an `add [rax], al` on garbage);
    /// - a real-mode entry lies below 1 MiB, where a CS:IP can point.
    pub fn validate(&self, guest_mem: u64) -> Result<(), LoadError> {
        for (index, s) in self.segments.iter().enumerate() {
            if s.data_len() > s.mem_size {
                return Err(LoadError::DataLargerThanSegment { index, data_len: s.data_len(), mem_size: s.mem_size });
            }
            let end = s.end();
            if end.is_none_or(|end| end > guest_mem) {
                return Err(LoadError::SegmentBeyondMemory { index, gpa: s.gpa, mem_size: s.mem_size, guest_mem });
            }
            if self.mode == EntryMode::Protected32 && end.is_none_or(|end| end > LIMIT_4G) {
                return Err(LoadError::SegmentAbove4GiB { index, gpa: s.gpa, mem_size: s.mem_size });
            }
        }
        self.check_overlaps()?;
        let entry_loaded = self.segments.iter().any(|s| {
            // `entry - gpa < data_len` instead of `entry < gpa + data_len`: no addition to wrap.
            self.entry.checked_sub(s.gpa.0).is_some_and(|offset| offset < s.data_len())
        });
        if !entry_loaded {
            return Err(LoadError::EntryOutsideImage { entry: self.entry });
        }
        if self.mode == EntryMode::Real16 && self.entry >= LIMIT_REAL_MODE_ENTRY {
            return Err(LoadError::RealModeEntryTooHigh { entry: self.entry });
        }
        Ok(())
    }

    /// Sorting by start makes any overlap show up between neighbours: if every segment
    /// starts at or after the end of the one before it, all of them are disjoint. Empty
    /// segments occupy no byte and overlap nothing. Needs validated (non-wrapping) ends.
    fn check_overlaps(&self) -> Result<(), LoadError> {
        let mut order: Vec<(u64, u64, usize)> = self
            .segments
            .iter()
            .enumerate()
            .filter(|(_, s)| s.mem_size != 0)
            .map(|(i, s)| (s.gpa.0, s.gpa.0.saturating_add(s.mem_size), i))
            .collect();
        order.sort_unstable();
        for pair in order.windows(2) {
            if let [(_, prev_end, a), (next_start, _, b)] = *pair
                && next_start < prev_end
            {
                let (first, second) = (a.min(b), a.max(b));
                let (Some(x), Some(y)) = (self.segments.get(first), self.segments.get(second)) else { continue };
                return Err(LoadError::SegmentsOverlap {
                    first,
                    first_gpa: x.gpa,
                    first_size: x.mem_size,
                    second,
                    second_gpa: y.gpa,
                    second_size: y.mem_size,
                });
            }
        }
        Ok(())
    }
}

/// A plan of `segments` (guest-physical address, size) in `mode`, each backed by 16
/// NOPs, entered at the first: for the tests of code that places things beside an image.
#[cfg(test)]
pub(crate) fn test_plan(mode: EntryMode, segments: &[(u64, u64)]) -> LoadPlan<'static> {
    static CODE: [u8; 16] = [0x90; 16];
    LoadPlan {
        segments: segments
            .iter()
            .map(|&(gpa, size)| Segment { gpa: GuestPhysAddr(gpa), data: &CODE[..], mem_size: size })
            .collect(),
        entry: segments.first().map_or(0, |s| s.0),
        mode,
        multiboot: None,
    }
}

/// Where [`super::multiboot::build_info`] was asked to put the information blob and why it
/// cannot go there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Not a multiple of 4: the structure is made of 32-bit fields.
    Misaligned,
    /// Reaches beyond the domain's RAM.
    BeyondMemory { guest_mem: u64 },
    /// Reaches beyond 4 GiB, where the structure's 32-bit pointers cannot point.
    Above4GiB,
    /// Overlaps `0x9FC00..0x100000`, which the memory map we hand over calls reserved or
    /// leaves out: the kernel would be told its boot information is not RAM.
    InReservedArea,
}

/// Why an image cannot be loaded (or its boot information built). Shared by all loaders.
///
/// `Display` describes the problem in a sentence fragment meant to follow
/// "guest image NAME: ", which the caller adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadError {
    // --- any format ---
    /// The image ends before a structure that must be there.
    ImageTooSmall { size: u64, needed: u64, what: &'static str },
    /// A flat image of zero bytes.
    EmptyImage,

    // --- ELF (both classes) ---
    /// The first bytes are not `7F 'E' 'L' 'F'`.
    NotElf,
    /// `e_ident[EI_CLASS]` is not the class this loader reads (1 = 32-bit, 2 = 64-bit).
    WrongElfClass { found: u8, expected: u8 },
    /// `e_ident[EI_DATA]` is not 1 (ELFDATA2LSB): x86 images are little-endian.
    NotLittleEndian { found: u8 },
    /// `e_ident[EI_VERSION]` or `e_version` is not 1 (EV_CURRENT), the only version.
    UnsupportedElfVersion { ident: u8, header: u32 },
    /// `e_machine` is not the one this loader runs.
    WrongMachine { found: u16, expected: u16 },
    /// `e_type` is ET_DYN: a position-independent executable or shared object.
    PositionIndependent,
    /// `e_type` is neither ET_EXEC nor ET_DYN.
    NotExecutable { e_type: u16 },
    /// `e_phentsize` is smaller than a program header of this class.
    ProgramHeaderSizeTooSmall { found: u16, min: u16 },
    /// `e_phnum` is above our limit (this includes PN_XNUM, 0xFFFF).
    TooManyProgramHeaders { count: u16, max: u16 },
    /// `e_phoff + e_phnum * e_phentsize` is beyond the end of the file (or wraps).
    ProgramHeadersOutsideFile { offset: u64, count: u16, entry_size: u16, image_size: u64 },
    /// Program header `phdr` has `p_filesz > p_memsz`.
    FileSizeExceedsMemSize { phdr: u16, file_size: u64, mem_size: u64 },
    /// Program header `phdr`'s `p_offset + p_filesz` is beyond the end of the file.
    SegmentDataOutsideFile { phdr: u16, offset: u64, file_size: u64, image_size: u64 },
    /// No PT_LOAD program header with a non-zero `p_memsz`.
    NoLoadSegments,

    // --- Multiboot ---
    /// No valid header in the first 8192 bytes (spec 3.1.1).
    MultibootHeaderNotFound,
    /// A header magic at `offset` whose checksum does not add up, and no valid header.
    MultibootBadChecksum { offset: u64, flags: u32, checksum: u32 },
    /// The header sets required flag bits (0-15) this loader does not understand.
    MultibootUnsupportedFlags { flags: u32, unknown: u32 },
    /// The header at `offset` needs `needed` bytes (address fields) that are not within the
    /// image or its first 8192 bytes.
    MultibootHeaderTruncated { offset: u64, needed: u64 },
    /// Neither the a.out kludge (flag bit 16) nor an ELF file.
    MultibootNotElf,
    /// a.out kludge: `load_addr > header_addr`.
    AoutHeaderBelowLoad { header_addr: u32, load_addr: u32 },
    /// a.out kludge: `header_addr - load_addr` is more than the header's file offset, so
    /// loading would start before the file.
    AoutLoadBeforeFile { header_offset: u64, header_addr: u32, load_addr: u32 },
    /// a.out kludge: `load_end_addr < load_addr` (and not 0).
    AoutLoadEndBeforeLoad { load_addr: u32, load_end_addr: u32 },
    /// a.out kludge: the text and data to load run past the end of the file.
    AoutLoadBeyondFile { load_offset: u64, load_size: u64, image_size: u64 },
    /// a.out kludge: `bss_end_addr` is below the end of the loaded data (and not 0).
    AoutBssEndBeforeLoadEnd { load_end: u64, bss_end_addr: u32 },

    // --- plan checks (LoadPlan::validate) ---
    /// Segment `index` of the plan holds more data than its memory size.
    DataLargerThanSegment { index: usize, data_len: u64, mem_size: u64 },
    /// Segment `index` reaches beyond the domain's memory (or past 2^64).
    SegmentBeyondMemory { index: usize, gpa: GuestPhysAddr, mem_size: u64, guest_mem: u64 },
    /// Segment `index` of a 32-bit plan reaches beyond 4 GiB.
    SegmentAbove4GiB { index: usize, gpa: GuestPhysAddr, mem_size: u64 },
    /// Two segments share bytes (`first < second`, plan indices).
    SegmentsOverlap {
        first: usize,
        first_gpa: GuestPhysAddr,
        first_size: u64,
        second: usize,
        second_gpa: GuestPhysAddr,
        second_size: u64,
    },
    /// The entry point is not in the image data of any segment.
    EntryOutsideImage { entry: u64 },
    /// A real-mode entry at or above 1 MiB.
    RealModeEntryTooHigh { entry: u64 },

    // --- Multiboot information (build_info) ---
    /// The domain has less memory than the Multiboot layout assumes.
    GuestMemoryTooSmall { guest_mem: u64, min: u64 },
    /// A string for the guest is longer than its limit.
    StringTooLong { what: &'static str, len: usize, max: usize },
    /// A string for the guest contains a NUL byte, which would cut it short as a C string.
    StringContainsNul { what: &'static str, at: usize },
    /// The information blob (`len` bytes) cannot be placed at `at`.
    BootInfoMisplaced { at: GuestPhysAddr, len: u64, problem: Placement },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ImageTooSmall { size, needed, what } => {
                write!(f, "the image is {size} bytes, too short for the {what} ({needed} bytes); it is truncated")
            }
            Self::EmptyImage => f.write_str("the image is empty; there is nothing to load"),
            Self::NotElf => {
                f.write_str("the image does not start with the ELF magic 7F 'E' 'L' 'F'; it is not an ELF file")
            }
            Self::WrongElfClass { found, expected } => write!(
                f,
                "the ELF file is {} but this loader needs {}{}",
                ElfClassName(found),
                ElfClassName(expected),
                if expected == 2 {
                    "; boot 32-bit kernels through a Multiboot header"
                } else {
                    "; Multiboot 1 loads 32-bit ELF files only (other formats need the a.out kludge, header flag 16)"
                }
            ),
            Self::NotLittleEndian { found: 2 } => {
                f.write_str("the ELF file is big-endian (EI_DATA = 2); x86 images must be little-endian")
            }
            Self::NotLittleEndian { found } => {
                write!(
                    f,
                    "the ELF file has an invalid data encoding (EI_DATA = {found}); x86 images must be little-endian (1)"
                )
            }
            Self::UnsupportedElfVersion { ident, header } => write!(
                f,
                "the ELF version is {ident} in e_ident and {header} in e_version; the only version is 1 (EV_CURRENT), \
                 so the header is corrupt"
            ),
            Self::WrongMachine { found, expected } => write!(
                f,
                "the ELF file is for machine {found} ({}), not {expected} ({})",
                machine_name(found),
                machine_name(expected)
            ),
            Self::PositionIndependent => f.write_str(
                "the ELF file is position-independent (ET_DYN); position-independent guests are not supported; \
                 link with a fixed address",
            ),
            Self::NotExecutable { e_type } => {
                write!(
                    f,
                    "the ELF file is {}, not an executable (ET_EXEC); link it into an executable",
                    type_name(e_type)
                )
            }
            Self::ProgramHeaderSizeTooSmall { found, min } => write!(
                f,
                "the ELF program headers are {found} bytes each (e_phentsize), smaller than the {min} bytes of one \
                 program header; the header is corrupt"
            ),
            Self::TooManyProgramHeaders { count, max } => {
                write!(f, "the ELF file has {count} program headers (e_phnum); at most {max} are accepted")
            }
            Self::ProgramHeadersOutsideFile { offset, count, entry_size, image_size } => write!(
                f,
                "the ELF program header table ({count} entries of {entry_size} bytes at offset {offset:#x}) does not fit \
                 in the {image_size}-byte file; it is truncated or corrupt"
            ),
            Self::FileSizeExceedsMemSize { phdr, file_size, mem_size } => write!(
                f,
                "ELF program header {phdr} has {file_size:#x} bytes in the file (p_filesz) but only {mem_size:#x} in \
                 memory (p_memsz); a segment cannot hold more than its memory size"
            ),
            Self::SegmentDataOutsideFile { phdr, offset, file_size, image_size } => write!(
                f,
                "ELF program header {phdr} takes {file_size:#x} bytes from file offset {offset:#x}, past the end of \
                 the {image_size}-byte file; it is truncated or corrupt"
            ),
            Self::NoLoadSegments => {
                f.write_str("the ELF file has no loadable segment (no PT_LOAD program header with a non-zero p_memsz)")
            }
            Self::MultibootHeaderNotFound => write!(
                f,
                "no Multiboot header (magic {:#010x} at a 4-byte-aligned offset, with a valid checksum) in the first \
                 {} bytes (Multiboot spec 3.1.1)",
                super::multiboot::HEADER_MAGIC,
                super::multiboot::HEADER_SEARCH_LIMIT
            ),
            Self::MultibootBadChecksum { offset, flags, checksum } => write!(
                f,
                "the Multiboot header at offset {offset:#x} has a bad checksum {checksum:#010x}: magic + flags + \
                 checksum must be 0 mod 2^32, which needs {:#010x} for flags {flags:#010x} (Multiboot spec 3.1.2)",
                0u32.wrapping_sub(super::multiboot::HEADER_MAGIC).wrapping_sub(flags)
            ),
            Self::MultibootUnsupportedFlags { flags, unknown } => write!(
                f,
                "the Multiboot header flags {flags:#010x} require features {unknown:#06x} (bits {}) this loader does \
                 not understand; Multiboot spec 3.1.2 says the boot loader must then fail",
                BitList(unknown)
            ),
            Self::MultibootHeaderTruncated { offset, needed } => write!(
                f,
                "the Multiboot header at offset {offset:#x} sets flag 16 (address fields) but its {needed} bytes do \
                 not fit in the image's first {} bytes (Multiboot spec 3.1.1)",
                super::multiboot::HEADER_SEARCH_LIMIT
            ),
            Self::MultibootNotElf => f.write_str(
                "the Multiboot header does not set flag 16 (a.out kludge address fields) and the image is not an ELF \
                 file; without one of them there is no way to know where to load it (Multiboot spec 3.1.3)",
            ),
            Self::AoutHeaderBelowLoad { header_addr, load_addr } => write!(
                f,
                "the Multiboot load_addr {load_addr:#x} is above header_addr {header_addr:#x}; the header must be part \
                 of the loaded text (Multiboot spec 3.1.3)"
            ),
            Self::AoutLoadBeforeFile { header_offset, header_addr, load_addr } => write!(
                f,
                "the Multiboot header at file offset {header_offset:#x} says it loads at {header_addr:#x}, so loading \
                 from load_addr {load_addr:#x} would start {:#x} bytes before the file",
                u64::from(header_addr).saturating_sub(u64::from(load_addr)).saturating_sub(header_offset)
            ),
            Self::AoutLoadEndBeforeLoad { load_addr, load_end_addr } => write!(
                f,
                "the Multiboot load_end_addr {load_end_addr:#x} is below load_addr {load_addr:#x} \
                 (use 0 to load the whole file)"
            ),
            Self::AoutLoadBeyondFile { load_offset, load_size, image_size } => write!(
                f,
                "the Multiboot address fields load {load_size:#x} bytes from file offset {load_offset:#x}, past the \
                 end of the {image_size}-byte file"
            ),
            Self::AoutBssEndBeforeLoadEnd { load_end, bss_end_addr } => write!(
                f,
                "the Multiboot bss_end_addr {bss_end_addr:#x} is below the end of the loaded data {load_end:#x} \
                 (use 0 for no bss)"
            ),
            Self::DataLargerThanSegment { index, data_len, mem_size } => {
                write!(f, "segment {index} has {data_len:#x} bytes of data but only {mem_size:#x} bytes of memory")
            }
            Self::SegmentBeyondMemory { index, gpa, mem_size, guest_mem } => write!(
                f,
                "segment {index} (guest-physical {gpa}, {mem_size:#x} bytes) ends beyond the domain's {} of memory",
                Size(guest_mem)
            ),
            Self::SegmentAbove4GiB { index, gpa, mem_size } => write!(
                f,
                "segment {index} (guest-physical {gpa}, {mem_size:#x} bytes) ends above 4 GiB, out of reach of a \
                 32-bit kernel started with paging off"
            ),
            Self::SegmentsOverlap { first, first_gpa, first_size, second, second_gpa, second_size } => write!(
                f,
                "segment {first} (guest-physical {first_gpa}, {first_size:#x} bytes) overlaps segment {second} \
                 (guest-physical {second_gpa}, {second_size:#x} bytes)"
            ),
            Self::EntryOutsideImage { entry } => {
                write!(f, "the entry point {entry:#x} does not lie in the bytes any segment loads from the image")
            }
            Self::RealModeEntryTooHigh { entry } => {
                write!(f, "the real-mode entry point {entry:#x} is at or above 1 MiB, where no CS:IP can point")
            }
            Self::GuestMemoryTooSmall { guest_mem, min } => write!(
                f,
                "the domain has {} of memory; a Multiboot kernel needs at least {}",
                Size(guest_mem),
                Size(min)
            ),
            Self::StringTooLong { what, len, max } => {
                write!(f, "the {what} is {len} bytes long; at most {max} bytes are passed to the guest")
            }
            Self::StringContainsNul { what, at } => write!(
                f,
                "the {what} contains a NUL byte at position {at}; the guest reads it as a C string and would see it \
                 cut short"
            ),
            Self::BootInfoMisplaced { at, len, problem } => {
                write!(f, "the Multiboot information ({len:#x} bytes) cannot go at guest-physical {at}: ")?;
                match problem {
                    Placement::Misaligned => f.write_str("the address is not a multiple of 4"),
                    Placement::BeyondMemory { guest_mem } => {
                        write!(f, "it would end beyond the domain's {} of memory", Size(guest_mem))
                    }
                    Placement::Above4GiB => f.write_str("it would reach above 4 GiB, where its 32-bit pointers end"),
                    Placement::InReservedArea => f.write_str(
                        "it would overlap 0x9fc00..0x100000, which the memory map given to the kernel does not call RAM",
                    ),
                }
            }
        }
    }
}

/// A memory size for people: "16 MiB", "640 KiB", or hex bytes when not a whole unit.
struct Size(u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("0 bytes"),
            n if n.is_multiple_of(MIB) => write!(f, "{} MiB", n / MIB),
            n if n.is_multiple_of(KIB) => write!(f, "{} KiB", n / KIB),
            n => write!(f, "{n:#x} bytes"),
        }
    }
}

/// `EI_CLASS` values (ELF-64 Object File Format, "ELF Identification").
struct ElfClassName(u8);

impl fmt::Display for ElfClassName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            1 => f.write_str("32-bit (ELFCLASS32)"),
            2 => f.write_str("64-bit (ELFCLASS64)"),
            other => write!(f, "of invalid class {other}"),
        }
    }
}

/// Set bit numbers, "3, 5".
struct BitList(u32);

impl fmt::Display for BitList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for bit in (0..32).filter(|b| self.0 & (1 << b) != 0) {
            if !first {
                f.write_str(", ")?;
            }
            write!(f, "{bit}")?;
            first = false;
        }
        Ok(())
    }
}

/// `e_machine` values people are likely to hand us by mistake.
fn machine_name(machine: u16) -> &'static str {
    match machine {
        0 => "EM_NONE",
        3 => "EM_386, 32-bit x86",
        8 => "EM_MIPS",
        20 => "EM_PPC",
        21 => "EM_PPC64",
        40 => "EM_ARM",
        62 => "EM_X86_64, 64-bit x86",
        183 => "EM_AARCH64",
        243 => "EM_RISCV",
        _ => "unknown machine",
    }
}

/// `e_type` values (ELF-64 Object File Format, "ELF Header").
fn type_name(e_type: u16) -> &'static str {
    match e_type {
        0 => "of no file type (ET_NONE)",
        1 => "a relocatable object (ET_REL)",
        2 => "an executable (ET_EXEC)",
        3 => "a shared object (ET_DYN)",
        4 => "a core dump (ET_CORE)",
        _ => "of an unknown file type",
    }
}

// --- Bounds-checked access to image bytes, shared by the loaders. ---

/// A slice's length as a 64-bit size. `usize` is at most 64 bits on every Rust target
/// (and 64 bits on both targets this crate builds for), so this never truncates.
pub(super) fn len_u64(bytes: &[u8]) -> u64 {
    bytes.len() as u64
}

/// `len` bytes at `offset`, or `None` if any of them lies outside `image` or the range
/// does not even fit the address space.
pub(super) fn slice_at(image: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    image.get(start..end)
}

fn array_at<const N: usize>(image: &[u8], offset: u64) -> Option<[u8; N]> {
    slice_at(image, offset, N as u64)?.try_into().ok()
}

pub(super) fn u8_at(image: &[u8], offset: u64) -> Option<u8> {
    array_at::<1>(image, offset).map(|[b]| b)
}

pub(super) fn u16_at(image: &[u8], offset: u64) -> Option<u16> {
    array_at(image, offset).map(u16::from_le_bytes)
}

pub(super) fn u32_at(image: &[u8], offset: u64) -> Option<u32> {
    array_at(image, offset).map(u32::from_le_bytes)
}

pub(super) fn u64_at(image: &[u8], offset: u64) -> Option<u64> {
    array_at(image, offset).map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    const MEM_16M: u64 = 16 << 20;
    static CODE: [u8; 0x100] = [0x90; 0x100];

    fn seg(gpa: u64, data: &[u8], mem_size: u64) -> Segment<'_> {
        Segment { gpa: GuestPhysAddr(gpa), data, mem_size }
    }

    fn plan(segments: Vec<Segment<'_>>, entry: u64, mode: EntryMode) -> LoadPlan<'_> {
        LoadPlan { segments, entry, mode, multiboot: None }
    }

    #[test]
    fn a_plan_with_disjoint_segments_in_memory_and_entry_in_data_is_valid() {
        let p = plan(vec![seg(0x20_0000, &CODE, 0x1000), seg(0x10_0000, &CODE, 0x100)], 0x10_00FF, EntryMode::Long64);
        assert_eq!(p.validate(MEM_16M), Ok(()));
    }

    #[test]
    fn highest_gpa_is_the_exclusive_end_of_the_highest_segment() {
        let p = plan(vec![seg(0x20_0000, &CODE, 0x1000), seg(0x10_0000, &CODE, 0x100)], 0x10_0000, EntryMode::Long64);
        assert_eq!(p.highest_gpa(), 0x20_1000);
        assert_eq!(plan(vec![], 0, EntryMode::Long64).highest_gpa(), 0);
    }

    #[test]
    fn overlaps_reports_ranges_sharing_a_byte_with_a_segment() {
        let p = plan(vec![seg(0x10_0000, &CODE, 0x1000)], 0x10_0000, EntryMode::Long64);
        assert!(p.overlaps(GuestPhysAddr(0x10_0FFF), 1));
        assert!(p.overlaps(GuestPhysAddr(0xF_F000), 0x1001));
        assert!(!p.overlaps(GuestPhysAddr(0x10_1000), 0x1000));
        assert!(!p.overlaps(GuestPhysAddr(0xF_F000), 0x1000));
        assert!(!p.overlaps(GuestPhysAddr(0x10_0000), 0));
        assert!(p.overlaps(GuestPhysAddr(0xF_0000), u64::MAX));
    }

    #[test]
    fn a_segment_ending_exactly_at_the_end_of_memory_fits() {
        let p = plan(vec![seg(MEM_16M - 0x1000, &CODE, 0x1000)], MEM_16M - 0x1000, EntryMode::Long64);
        assert_eq!(p.validate(MEM_16M), Ok(()));
    }

    #[test]
    fn a_segment_one_byte_beyond_memory_is_refused_with_a_readable_message() {
        let p = plan(
            vec![seg(0x10_0000, &CODE, 0x100), seg(MEM_16M - 0x1000, &CODE, 0x1001)],
            0x10_0000,
            EntryMode::Long64,
        );
        let err = p.validate(MEM_16M).unwrap_err();
        assert_eq!(
            err,
            LoadError::SegmentBeyondMemory {
                index: 1,
                gpa: GuestPhysAddr(0xFF_F000),
                mem_size: 0x1001,
                guest_mem: MEM_16M
            }
        );
        assert_eq!(
            err.to_string(),
            "segment 1 (guest-physical 0xfff000, 0x1001 bytes) ends beyond the domain's 16 MiB of memory"
        );
    }

    #[test]
    fn a_segment_wrapping_past_2_pow_64_is_beyond_memory_not_a_panic() {
        let p = plan(vec![seg(u64::MAX - 10, &CODE[..1], 100)], u64::MAX - 10, EntryMode::Long64);
        assert_eq!(
            p.validate(u64::MAX),
            Err(LoadError::SegmentBeyondMemory {
                index: 0,
                gpa: GuestPhysAddr(u64::MAX - 10),
                mem_size: 100,
                guest_mem: u64::MAX
            })
        );
    }

    #[test]
    fn data_larger_than_the_memory_size_is_refused() {
        let p = plan(vec![seg(0x10_0000, &CODE, 0xFF)], 0x10_0000, EntryMode::Long64);
        assert_eq!(
            p.validate(MEM_16M),
            Err(LoadError::DataLargerThanSegment { index: 0, data_len: 0x100, mem_size: 0xFF })
        );
    }

    #[test]
    fn overlapping_segments_are_named_by_plan_index_whatever_their_order() {
        let p = plan(
            vec![seg(0x30_0000, &CODE, 0x100), seg(0x10_0800, &CODE, 0x1000), seg(0x10_0000, &CODE, 0x1000)],
            0x30_0000,
            EntryMode::Long64,
        );
        assert_eq!(
            p.validate(MEM_16M),
            Err(LoadError::SegmentsOverlap {
                first: 1,
                first_gpa: GuestPhysAddr(0x10_0800),
                first_size: 0x1000,
                second: 2,
                second_gpa: GuestPhysAddr(0x10_0000),
                second_size: 0x1000,
            })
        );
    }

    #[test]
    fn a_segment_inside_another_overlaps_it() {
        // [0x1000, 0x9000) contains both [0x2000, 0x3000) and [0x4000, 0x5000).
        let p = plan(
            vec![seg(0x1000, &CODE, 0x8000), seg(0x2000, &[], 0x1000), seg(0x4000, &[], 0x1000)],
            0x1000,
            EntryMode::Long64,
        );
        assert!(matches!(p.validate(MEM_16M), Err(LoadError::SegmentsOverlap { first: 0, second: 1, .. })));
    }

    #[test]
    fn touching_and_empty_segments_do_not_overlap() {
        let p = plan(
            vec![seg(0x10_0000, &CODE, 0x1000), seg(0x10_1000, &CODE, 0x1000), seg(0x10_0800, &[], 0)],
            0x10_1000,
            EntryMode::Long64,
        );
        assert_eq!(p.validate(MEM_16M), Ok(()));
    }

    #[test]
    fn an_entry_in_the_zero_fill_or_outside_every_segment_is_refused() {
        for entry in [0x10_0100, 0x10_0FFF, 0xF_FFFF, 0x50_0000] {
            let p = plan(vec![seg(0x10_0000, &CODE, 0x1000)], entry, EntryMode::Long64);
            assert_eq!(p.validate(MEM_16M), Err(LoadError::EntryOutsideImage { entry }), "{entry:#x}");
        }
    }

    #[test]
    fn a_plan_without_segments_has_its_entry_outside_the_image() {
        assert_eq!(
            plan(vec![], 0x7C00, EntryMode::Real16).validate(MEM_16M),
            Err(LoadError::EntryOutsideImage { entry: 0x7C00 })
        );
    }

    #[test]
    fn a_protected_mode_segment_must_end_at_or_below_4_gib() {
        let mem = 8 << 30;
        let ok = plan(vec![seg(LIMIT_4G - 0x100, &CODE, 0x100)], LIMIT_4G - 0x100, EntryMode::Protected32);
        assert_eq!(ok.validate(mem), Ok(()));
        let high = plan(vec![seg(LIMIT_4G - 0x100, &CODE, 0x101)], LIMIT_4G - 0x100, EntryMode::Protected32);
        assert_eq!(
            high.validate(mem),
            Err(LoadError::SegmentAbove4GiB { index: 0, gpa: GuestPhysAddr(LIMIT_4G - 0x100), mem_size: 0x101 })
        );
        let long = plan(vec![seg(LIMIT_4G - 0x100, &CODE, 0x101)], LIMIT_4G - 0x100, EntryMode::Long64);
        assert_eq!(long.validate(mem), Ok(()));
    }

    #[test]
    fn a_real_mode_entry_must_be_below_1_mib() {
        let ok = plan(vec![seg(0xF_FF00, &CODE, 0x100)], 0xF_FFFF, EntryMode::Real16);
        assert_eq!(ok.validate(MEM_16M), Ok(()));
        let high = plan(vec![seg(0x10_0000, &CODE, 0x100)], 0x10_0000, EntryMode::Real16);
        assert_eq!(high.validate(MEM_16M), Err(LoadError::RealModeEntryTooHigh { entry: 0x10_0000 }));
    }

    #[test]
    fn sizes_print_in_the_largest_whole_unit() {
        assert_eq!(Size(16 << 20).to_string(), "16 MiB");
        assert_eq!(Size(640 << 10).to_string(), "640 KiB");
        assert_eq!(Size(0x1234).to_string(), "0x1234 bytes");
        assert_eq!(Size(0).to_string(), "0 bytes");
    }

    #[test]
    fn byte_readers_refuse_out_of_range_and_wrapping_offsets() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(u16_at(&b, 7), Some(0x0908));
        assert_eq!(u16_at(&b, 8), None);
        assert_eq!(u32_at(&b, 5), Some(0x0908_0706));
        assert_eq!(u64_at(&b, 1), Some(0x0908_0706_0504_0302));
        assert_eq!(u64_at(&b, 2), None);
        assert_eq!(u8_at(&b, u64::MAX), None);
        assert_eq!(slice_at(&b, 9, 0), Some(&[][..]));
        assert_eq!(slice_at(&b, 10, 0), None);
        assert_eq!(slice_at(&b, 1, u64::MAX), None);
        assert_eq!(slice_at(&b, u64::MAX, 2), None);
    }

    #[test]
    fn error_messages_name_the_problem() {
        assert_eq!(
            LoadError::MultibootUnsupportedFlags { flags: 0x0001_0028, unknown: 0x28 }.to_string(),
            "the Multiboot header flags 0x00010028 require features 0x0028 (bits 3, 5) this loader does not \
             understand; Multiboot spec 3.1.2 says the boot loader must then fail"
        );
        assert_eq!(
            LoadError::MultibootBadChecksum { offset: 0, flags: 3, checksum: 0 }.to_string(),
            "the Multiboot header at offset 0x0 has a bad checksum 0x00000000: magic + flags + checksum must be 0 \
             mod 2^32, which needs 0xe4524ffb for flags 0x00000003 (Multiboot spec 3.1.2)"
        );
        assert_eq!(
            LoadError::WrongElfClass { found: 1, expected: 2 }.to_string(),
            "the ELF file is 32-bit (ELFCLASS32) but this loader needs 64-bit (ELFCLASS64); boot 32-bit kernels \
             through a Multiboot header"
        );
        assert_eq!(
            LoadError::WrongMachine { found: 183, expected: 62 }.to_string(),
            "the ELF file is for machine 183 (EM_AARCH64), not 62 (EM_X86_64, 64-bit x86)"
        );
    }
}
