//! What a loader produces: what to copy where in guest-physical memory, and how the
//! first vCPU starts. Checked against the domain's memory before anything is copied.

use crate::mm::addr::GuestPhysAddr;
use alloc::vec::Vec;
use core::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    Long64,
    Protected32,
    Real16,
}

/// Copy `data` to `gpa`, then zero up to `mem_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    pub gpa: GuestPhysAddr,
    pub data: &'a [u8],
    pub mem_size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadPlan<'a> {
    pub segments: Vec<Segment<'a>>,
    pub entry: u64,
    pub mode: EntryMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadError {
    Truncated { what: &'static str },
    NotElf,
    WrongClass,
    WrongEndianness,
    WrongMachine { machine: u16 },
    NotExecutable { kind: u16 },
    BadProgramHeaders,
    NoLoadableSegment,
    FileSizeExceedsMemSize { index: usize },
    SegmentOutsideFile { index: usize },
    SegmentOutsideMemory { index: usize, gpa: u64, size: u64, memory: u64 },
    SegmentsOverlap { first: usize, second: usize },
    EntryOutsideImage { entry: u64 },
    NoMultibootHeader,
    UnsupportedMultibootFlags { flags: u32 },
    BadMultibootAddresses,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated { what } => write!(f, "the image ends inside its {what}"),
            Self::NotElf => write!(f, "not an ELF file (no \\x7fELF magic)"),
            Self::WrongClass => write!(f, "not a 64-bit ELF file"),
            Self::WrongEndianness => write!(f, "not a little-endian ELF file"),
            Self::WrongMachine { machine } => write!(f, "ELF machine {machine} is not x86-64 (62)"),
            Self::NotExecutable { kind: 3 } => {
                write!(f, "position-independent guests (ET_DYN) are not supported; link with a fixed address")
            }
            Self::NotExecutable { kind } => write!(f, "ELF type {kind} is not an executable (ET_EXEC)"),
            Self::BadProgramHeaders => write!(f, "the program header table is malformed or lies outside the file"),
            Self::NoLoadableSegment => write!(f, "the image has no PT_LOAD segment"),
            Self::FileSizeExceedsMemSize { index } => write!(f, "segment {index} has p_filesz > p_memsz"),
            Self::SegmentOutsideFile { index } => write!(f, "segment {index} reaches past the end of the file"),
            Self::SegmentOutsideMemory { index, gpa, size, memory } => write!(
                f,
                "segment {index} ({size:#x} bytes at {gpa:#x}) does not fit in the domain's {} MiB of memory",
                memory >> 20
            ),
            Self::SegmentsOverlap { first, second } => write!(f, "segments {first} and {second} overlap"),
            Self::EntryOutsideImage { entry } => {
                write!(f, "the entry point {entry:#x} lies outside every loaded segment")
            }
            Self::NoMultibootHeader => {
                write!(f, "no multiboot 1 header (magic 0x1BADB002 with a valid checksum) in the first 8 KiB")
            }
            Self::UnsupportedMultibootFlags { flags } => {
                write!(f, "the multiboot header requires features {flags:#x} this loader does not provide")
            }
            Self::BadMultibootAddresses => write!(f, "the multiboot header's address fields are inconsistent"),
        }
    }
}

impl LoadPlan<'_> {
    /// The checks every loader shares: segments inside guest memory, disjoint, and the
    /// entry point inside one of them.
    pub fn validate(&self, memory: u64) -> Result<(), LoadError> {
        for (i, s) in self.segments.iter().enumerate() {
            if s.data.len() as u64 > s.mem_size {
                return Err(LoadError::FileSizeExceedsMemSize { index: i });
            }
            if s.gpa.0.checked_add(s.mem_size).is_none_or(|end| end > memory) {
                return Err(LoadError::SegmentOutsideMemory { index: i, gpa: s.gpa.0, size: s.mem_size, memory });
            }
            for (j, o) in self.segments.iter().enumerate().take(i) {
                if s.mem_size > 0 && o.mem_size > 0 && s.gpa.0 < o.gpa.0 + o.mem_size && o.gpa.0 < s.gpa.0 + s.mem_size
                {
                    return Err(LoadError::SegmentsOverlap { first: j, second: i });
                }
            }
        }
        if !self.segments.iter().any(|s| self.entry >= s.gpa.0 && self.entry - s.gpa.0 < s.mem_size) {
            return Err(LoadError::EntryOutsideImage { entry: self.entry });
        }
        Ok(())
    }
}
