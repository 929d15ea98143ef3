//! The boot bundle: the binary container in which guest images and the configuration
//! travel from `boot/` to the hypervisor (the bootloader loads it as its ramdisk).
//!
//! Little-endian, version 1 (see docs/boot-bundle.md):
//! - header (32 bytes): magic `FVBUNDLE`, version u16, header length u16, entry count
//!   u32, total length u64, table CRC-32 u32, header CRC-32 u32 (of bytes 0..28);
//! - entry table: `count` entries of 64 bytes: name [u8; 40] (printable ASCII,
//!   NUL-padded), kind u16, flags u16, data CRC-32 u32, offset u64, length u64;
//! - data areas (the writer aligns them to 4 KiB).
//!
//! The parser trusts nothing: it checks every bound with overflow-checked arithmetic,
//! every checksum and the version before handing out a single entry, and it never
//! allocates, so the hypervisor runs it before its heap exists.

use crate::crc32::crc32;
use core::fmt;

pub const MAGIC: [u8; 8] = *b"FVBUNDLE";
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 32;
pub const ENTRY_LEN: usize = 64;
pub const NAME_LEN: usize = 40;
pub const MAX_ENTRIES: usize = 256;
/// Alignment of data areas written by [`BundleBuilder`].
pub const DATA_ALIGN: usize = 4096;

/// What an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// The boot configuration (text, see `crate::config`).
    Config,
    /// An ELF64 kernel image.
    Elf64,
    /// An ELF32 kernel with a multiboot 1 header.
    MultibootElf32,
    /// A flat binary loaded at an address given by its domain configuration.
    Flat,
    /// Anything else a domain needs (an initrd, a disk image).
    Data,
    /// A kind this build does not know; listed, not rejected (forward compatibility).
    Unknown(u16),
}

impl EntryKind {
    pub const fn from_raw(raw: u16) -> Self {
        match raw {
            1 => Self::Config,
            2 => Self::Elf64,
            3 => Self::MultibootElf32,
            4 => Self::Flat,
            5 => Self::Data,
            other => Self::Unknown(other),
        }
    }

    pub const fn raw(self) -> u16 {
        match self {
            Self::Config => 1,
            Self::Elf64 => 2,
            Self::MultibootElf32 => 3,
            Self::Flat => 4,
            Self::Data => 5,
            Self::Unknown(other) => other,
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config => f.write_str("config"),
            Self::Elf64 => f.write_str("elf64"),
            Self::MultibootElf32 => f.write_str("multiboot-elf32"),
            Self::Flat => f.write_str("flat"),
            Self::Data => f.write_str("data"),
            Self::Unknown(raw) => write!(f, "unknown({raw})"),
        }
    }
}

/// Why a bundle was refused. Entry errors carry the entry's index in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleError {
    TooShort { len: usize, needed: usize },
    BadMagic,
    UnsupportedVersion { found: u16, supported: u16 },
    BadHeaderLength { found: u16 },
    HeaderChecksum { expected: u32, found: u32 },
    Truncated { total_len: u64, available: usize },
    TooManyEntries { count: u32, max: usize },
    TableOutOfBounds { table_end: u64, total_len: u64 },
    TableChecksum { expected: u32, found: u32 },
    BadName { index: usize },
    DuplicateName { first: usize, second: usize },
    ReservedFlags { index: usize, flags: u16 },
    Misaligned { index: usize, offset: u64 },
    EntryOutOfBounds { index: usize, offset: u64, length: u64, total_len: u64 },
    OverlapsTable { index: usize },
    Overlap { first: usize, second: usize },
    DataChecksum { index: usize, expected: u32, found: u32 },
}

const REBUILD: &str =
    "the bundle is damaged or was made by an incompatible `boot`; rebuild the image with `cargo xtask build`";

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooShort { len, needed } => {
                write!(f, "boot bundle is {len} bytes, shorter than its {needed}-byte header; {REBUILD}")
            }
            Self::BadMagic => {
                write!(f, "boot bundle does not start with \"FVBUNDLE\" (this ramdisk is not a bundle); {REBUILD}")
            }
            Self::UnsupportedVersion { found, supported } => {
                write!(
                    f,
                    "boot bundle has format version {found}, this hypervisor reads version {supported}; {REBUILD}"
                )
            }
            Self::BadHeaderLength { found } => {
                write!(f, "boot bundle header length is {found}, expected {HEADER_LEN}; {REBUILD}")
            }
            Self::HeaderChecksum { expected, found } => {
                write!(f, "boot bundle header checksum is {found:#010x}, expected {expected:#010x}; {REBUILD}")
            }
            Self::Truncated { total_len, available } => {
                write!(f, "boot bundle says it is {total_len} bytes but only {available} were loaded; {REBUILD}")
            }
            Self::TooManyEntries { count, max } => {
                write!(f, "boot bundle lists {count} entries, at most {max} are allowed; {REBUILD}")
            }
            Self::TableOutOfBounds { table_end, total_len } => {
                write!(
                    f,
                    "boot bundle entry table ends at {table_end}, past the bundle's end at {total_len}; {REBUILD}"
                )
            }
            Self::TableChecksum { expected, found } => {
                write!(f, "boot bundle entry table checksum is {found:#010x}, expected {expected:#010x}; {REBUILD}")
            }
            Self::BadName { index } => {
                write!(f, "boot bundle entry #{index} has an empty or non-printable name; {REBUILD}")
            }
            Self::DuplicateName { first, second } => {
                write!(f, "boot bundle entries #{first} and #{second} have the same name; {REBUILD}")
            }
            Self::ReservedFlags { index, flags } => {
                write!(f, "boot bundle entry #{index} sets reserved flags {flags:#06x}; {REBUILD}")
            }
            Self::Misaligned { index, offset } => {
                write!(f, "boot bundle entry #{index} starts at {offset}, not 8-byte aligned; {REBUILD}")
            }
            Self::EntryOutOfBounds { index, offset, length, total_len } => write!(
                f,
                "boot bundle entry #{index} ({length} bytes at offset {offset}) reaches past the bundle's end at {total_len}; {REBUILD}"
            ),
            Self::OverlapsTable { index } => {
                write!(f, "boot bundle entry #{index} overlaps the header or entry table; {REBUILD}")
            }
            Self::Overlap { first, second } => {
                write!(f, "boot bundle entries #{first} and #{second} overlap; {REBUILD}")
            }
            Self::DataChecksum { index, expected, found } => {
                write!(f, "boot bundle entry #{index} has checksum {found:#010x}, expected {expected:#010x}; {REBUILD}")
            }
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    let mut v = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        v.copy_from_slice(s);
    }
    u16::from_le_bytes(v)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        v.copy_from_slice(s);
    }
    u32::from_le_bytes(v)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        v.copy_from_slice(s);
    }
    u64::from_le_bytes(v)
}

/// One table entry, decoded but not yet validated against the others.
#[derive(Debug, Clone, Copy)]
struct RawEntry<'a> {
    name: &'a str,
    kind: u16,
    flags: u16,
    checksum: u32,
    offset: u64,
    length: u64,
}

/// Validates a name field: 1..=40 printable ASCII bytes, then only NUL padding.
fn decode_name(field: &[u8]) -> Option<&str> {
    let len = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    let (name, pad) = field.split_at(len);
    if name.is_empty() || !name.iter().all(|b| (0x21..=0x7E).contains(b)) || pad.iter().any(|&b| b != 0) {
        return None;
    }
    core::str::from_utf8(name).ok()
}

/// A validated boot bundle.
#[derive(Debug, Clone, Copy)]
pub struct Bundle<'a> {
    bytes: &'a [u8],
    count: usize,
    version: u16,
}

/// One entry of a validated bundle.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub name: &'a str,
    pub kind: EntryKind,
    pub checksum: u32,
    pub offset: u64,
    pub data: &'a [u8],
}

impl<'a> Bundle<'a> {
    /// Validates everything: header, version, checksums, bounds, overlaps, names.
    /// `bytes` may be longer than the bundle (loaders pad); the rest is ignored.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BundleError> {
        let header = bytes.get(..HEADER_LEN).ok_or(BundleError::TooShort { len: bytes.len(), needed: HEADER_LEN })?;
        if header[..8] != MAGIC {
            return Err(BundleError::BadMagic);
        }
        let version = u16_at(header, 8);
        if version != VERSION {
            return Err(BundleError::UnsupportedVersion { found: version, supported: VERSION });
        }
        let header_len = u16_at(header, 10);
        if usize::from(header_len) != HEADER_LEN {
            return Err(BundleError::BadHeaderLength { found: header_len });
        }
        let expected = u32_at(header, 28);
        let found = crc32(&header[..28]);
        if expected != found {
            return Err(BundleError::HeaderChecksum { expected, found });
        }
        let count_raw = u32_at(header, 12);
        let total_len = u64_at(header, 16);
        if total_len > bytes.len() as u64 {
            return Err(BundleError::Truncated { total_len, available: bytes.len() });
        }
        // total_len <= bytes.len(), so it fits usize.
        let bytes = &bytes[..total_len as usize];
        let count = count_raw as usize;
        if count > MAX_ENTRIES {
            return Err(BundleError::TooManyEntries { count: count_raw, max: MAX_ENTRIES });
        }
        // count <= 256: no overflow possible.
        let table_end = HEADER_LEN + count * ENTRY_LEN;
        let table = bytes
            .get(HEADER_LEN..table_end)
            .ok_or(BundleError::TableOutOfBounds { table_end: table_end as u64, total_len })?;
        let expected = u32_at(header, 24);
        let found = crc32(table);
        if expected != found {
            return Err(BundleError::TableChecksum { expected, found });
        }
        let bundle = Bundle { bytes, count, version };
        for i in 0..count {
            let e = bundle.raw_entry(i)?;
            if e.flags != 0 {
                return Err(BundleError::ReservedFlags { index: i, flags: e.flags });
            }
            if e.offset % 8 != 0 {
                return Err(BundleError::Misaligned { index: i, offset: e.offset });
            }
            let end = e.offset.checked_add(e.length);
            if end.is_none_or(|end| end > total_len) {
                return Err(BundleError::EntryOutOfBounds { index: i, offset: e.offset, length: e.length, total_len });
            }
            if e.length > 0 && e.offset < table_end as u64 {
                return Err(BundleError::OverlapsTable { index: i });
            }
            for j in 0..i {
                let other = bundle.raw_entry(j)?;
                if other.name == e.name {
                    return Err(BundleError::DuplicateName { first: j, second: i });
                }
                let overlap = e.length > 0
                    && other.length > 0
                    && e.offset < other.offset + other.length
                    && other.offset < e.offset + e.length;
                if overlap {
                    return Err(BundleError::Overlap { first: j, second: i });
                }
            }
            // In bounds, checked above: the casts cannot truncate.
            let data = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            let found = crc32(data);
            if found != e.checksum {
                return Err(BundleError::DataChecksum { index: i, expected: e.checksum, found });
            }
        }
        Ok(bundle)
    }

    fn raw_entry(&self, index: usize) -> Result<RawEntry<'a>, BundleError> {
        let at = HEADER_LEN + index * ENTRY_LEN;
        let field = self.bytes.get(at..at + ENTRY_LEN).ok_or(BundleError::TableOutOfBounds {
            table_end: (at + ENTRY_LEN) as u64,
            total_len: self.bytes.len() as u64,
        })?;
        let name = decode_name(&field[..NAME_LEN]).ok_or(BundleError::BadName { index })?;
        Ok(RawEntry {
            name,
            kind: u16_at(field, 40),
            flags: u16_at(field, 42),
            checksum: u32_at(field, 44),
            offset: u64_at(field, 48),
            length: u64_at(field, 56),
        })
    }

    fn entry(&self, index: usize) -> Option<Entry<'a>> {
        let e = self.raw_entry(index).ok()?;
        let start = usize::try_from(e.offset).ok()?;
        let end = start.checked_add(usize::try_from(e.length).ok()?)?;
        Some(Entry {
            name: e.name,
            kind: EntryKind::from_raw(e.kind),
            checksum: e.checksum,
            offset: e.offset,
            data: self.bytes.get(start..end)?,
        })
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn version(&self) -> u16 {
        self.version
    }

    /// The bundle's length in bytes, header included.
    pub fn total_len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The entries in table order.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'a>> + '_ {
        (0..self.count).filter_map(|i| self.entry(i))
    }

    /// The entry called `name`.
    pub fn find(&self, name: &str) -> Option<Entry<'a>> {
        self.entries().find(|e| e.name == name)
    }
}

/// Why the builder refused an entry.
#[cfg(feature = "std")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    BadName { name: String },
    DuplicateName { name: String },
    TooManyEntries,
}

#[cfg(feature = "std")]
impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadName { name } => {
                write!(f, "entry name {name:?} must be 1 to {NAME_LEN} printable ASCII characters without spaces")
            }
            Self::DuplicateName { name } => write!(f, "two entries are named {name:?}; names must be unique"),
            Self::TooManyEntries => write!(f, "a bundle holds at most {MAX_ENTRIES} entries"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for BuildError {}

/// Writes bundles (host side, used by `boot/`).
#[cfg(feature = "std")]
#[derive(Debug, Default)]
pub struct BundleBuilder {
    entries: Vec<(String, EntryKind, Vec<u8>)>,
}

#[cfg(feature = "std")]
impl BundleBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry; the name is checked here so a bad one fails the build, not the boot.
    pub fn add(&mut self, name: &str, kind: EntryKind, data: Vec<u8>) -> Result<&mut Self, BuildError> {
        let mut field = [0u8; NAME_LEN];
        if name.len() > NAME_LEN {
            return Err(BuildError::BadName { name: name.into() });
        }
        field[..name.len()].copy_from_slice(name.as_bytes());
        if decode_name(&field).is_none() {
            return Err(BuildError::BadName { name: name.into() });
        }
        if self.entries.iter().any(|(n, _, _)| n == name) {
            return Err(BuildError::DuplicateName { name: name.into() });
        }
        if self.entries.len() == MAX_ENTRIES {
            return Err(BuildError::TooManyEntries);
        }
        self.entries.push((name.into(), kind, data));
        Ok(self)
    }

    /// The bundle's bytes.
    pub fn build(&self) -> Vec<u8> {
        let table_end = HEADER_LEN + self.entries.len() * ENTRY_LEN;
        let mut offset = table_end.next_multiple_of(DATA_ALIGN);
        let mut table = Vec::with_capacity(table_end - HEADER_LEN);
        let mut placed = Vec::new();
        for (name, kind, data) in &self.entries {
            let mut field = [0u8; NAME_LEN];
            field[..name.len()].copy_from_slice(name.as_bytes());
            table.extend_from_slice(&field);
            table.extend_from_slice(&kind.raw().to_le_bytes());
            table.extend_from_slice(&0u16.to_le_bytes());
            table.extend_from_slice(&crc32(data).to_le_bytes());
            table.extend_from_slice(&(offset as u64).to_le_bytes());
            table.extend_from_slice(&(data.len() as u64).to_le_bytes());
            placed.push(offset);
            offset = (offset + data.len()).next_multiple_of(DATA_ALIGN);
        }
        let total = placed.last().zip(self.entries.last()).map_or(table_end, |(&o, (_, _, d))| o + d.len());
        let mut out = vec![0u8; total];
        out[..8].copy_from_slice(&MAGIC);
        out[8..10].copy_from_slice(&VERSION.to_le_bytes());
        out[10..12].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        out[12..16].copy_from_slice(&(self.entries.len() as u32).to_le_bytes());
        out[16..24].copy_from_slice(&(total as u64).to_le_bytes());
        out[24..28].copy_from_slice(&crc32(&table).to_le_bytes());
        let header_crc = crc32(&out[..28]);
        out[28..32].copy_from_slice(&header_crc.to_le_bytes());
        out[HEADER_LEN..table_end].copy_from_slice(&table);
        for ((_, _, data), &at) in self.entries.iter().zip(&placed) {
            out[at..at + data.len()].copy_from_slice(data);
        }
        out
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut b = BundleBuilder::new();
        b.add("hypervisor.cfg", EntryKind::Config, b"[hypervisor]\n".to_vec()).unwrap();
        b.add("dom0", EntryKind::Elf64, vec![0x7F, b'E', b'L', b'F', 2, 1, 1]).unwrap();
        b.add("empty", EntryKind::Data, Vec::new()).unwrap();
        b.build()
    }

    /// Re-seals the header and table checksums after a test edited the table.
    fn reseal(bytes: &mut [u8]) {
        let count = u32_at(bytes, 12) as usize;
        let table_crc = crc32(&bytes[HEADER_LEN..HEADER_LEN + count * ENTRY_LEN]);
        bytes[24..28].copy_from_slice(&table_crc.to_le_bytes());
        let header_crc = crc32(&bytes[..28]);
        bytes[28..32].copy_from_slice(&header_crc.to_le_bytes());
    }

    fn entry_field(index: usize, offset: usize) -> usize {
        HEADER_LEN + index * ENTRY_LEN + offset
    }

    fn set_u64(bytes: &mut [u8], at: usize, v: u64) {
        bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn round_trips_entries_in_order() {
        let bytes = sample();
        let b = Bundle::parse(&bytes).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(b.version(), 1);
        assert_eq!(b.total_len(), bytes.len() as u64);
        let names: Vec<_> = b.entries().map(|e| (e.name, e.kind, e.data.len())).collect();
        assert_eq!(
            names,
            vec![
                ("hypervisor.cfg", EntryKind::Config, 13),
                ("dom0", EntryKind::Elf64, 7),
                ("empty", EntryKind::Data, 0)
            ]
        );
        assert_eq!(b.find("dom0").unwrap().data, &[0x7F, b'E', b'L', b'F', 2, 1, 1]);
        assert_eq!(b.find("dom0").unwrap().offset % DATA_ALIGN as u64, 0);
        assert!(b.find("nothing").is_none());
    }

    #[test]
    fn an_empty_bundle_is_valid() {
        let bytes = BundleBuilder::new().build();
        assert_eq!(bytes.len(), HEADER_LEN);
        assert!(Bundle::parse(&bytes).unwrap().is_empty());
    }

    #[test]
    fn padding_after_the_bundle_is_ignored() {
        let mut bytes = sample();
        let len = bytes.len();
        bytes.extend_from_slice(&[0xAA; 4096]);
        assert_eq!(Bundle::parse(&bytes).unwrap().total_len(), len as u64);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = sample();
        for len in 0..bytes.len() {
            assert!(Bundle::parse(&bytes[..len]).is_err(), "truncated to {len} bytes was accepted");
        }
        assert!(matches!(Bundle::parse(&bytes[..10]), Err(BundleError::TooShort { len: 10, needed: 32 })));
        assert!(matches!(Bundle::parse(&bytes[..100]), Err(BundleError::Truncated { available: 100, .. })));
    }

    #[test]
    fn wrong_magic_is_refused() {
        let mut bytes = sample();
        bytes[0] = b'X';
        assert_eq!(Bundle::parse(&bytes).unwrap_err(), BundleError::BadMagic);
    }

    #[test]
    fn another_version_is_refused_with_both_numbers() {
        let mut bytes = sample();
        bytes[8] = 2;
        reseal(&mut bytes);
        assert_eq!(Bundle::parse(&bytes).unwrap_err(), BundleError::UnsupportedVersion { found: 2, supported: 1 });
    }

    #[test]
    fn a_damaged_header_fails_its_checksum() {
        let mut bytes = sample();
        bytes[20] ^= 0x01; // inside total_len, covered by the header CRC
        assert!(matches!(Bundle::parse(&bytes), Err(BundleError::HeaderChecksum { .. })));
    }

    #[test]
    fn a_damaged_table_fails_its_checksum() {
        let mut bytes = sample();
        bytes[entry_field(1, 0)] = b'D';
        assert!(matches!(Bundle::parse(&bytes), Err(BundleError::TableChecksum { .. })));
    }

    #[test]
    fn damaged_data_fails_the_entry_checksum() {
        let mut bytes = sample();
        let at = Bundle::parse(&bytes).unwrap().find("dom0").unwrap().offset as usize;
        bytes[at] ^= 0xFF;
        assert!(matches!(Bundle::parse(&bytes), Err(BundleError::DataChecksum { index: 1, .. })));
    }

    #[test]
    fn too_many_entries_are_refused() {
        let mut bytes = sample();
        bytes[12..16].copy_from_slice(&100_000u32.to_le_bytes());
        let crc = crc32(&bytes[..28]);
        bytes[28..32].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Bundle::parse(&bytes).unwrap_err(), BundleError::TooManyEntries { count: 100_000, max: 256 });
    }

    #[test]
    fn offsets_that_overflow_are_out_of_bounds() {
        let mut bytes = sample();
        set_u64(&mut bytes, entry_field(1, 48), u64::MAX - 7);
        reseal(&mut bytes);
        assert!(matches!(Bundle::parse(&bytes), Err(BundleError::EntryOutOfBounds { index: 1, .. })));
    }

    #[test]
    fn huge_lengths_are_out_of_bounds() {
        let mut bytes = sample();
        set_u64(&mut bytes, entry_field(1, 56), u64::MAX);
        reseal(&mut bytes);
        assert!(matches!(Bundle::parse(&bytes), Err(BundleError::EntryOutOfBounds { index: 1, length: u64::MAX, .. })));
    }

    #[test]
    fn an_entry_inside_the_table_is_refused() {
        let mut bytes = sample();
        set_u64(&mut bytes, entry_field(1, 48), 8);
        reseal(&mut bytes);
        assert_eq!(Bundle::parse(&bytes).unwrap_err(), BundleError::OverlapsTable { index: 1 });
    }

    #[test]
    fn overlapping_entries_are_refused() {
        let mut bytes = sample();
        let first = u64_at(&bytes, entry_field(0, 48));
        set_u64(&mut bytes, entry_field(1, 48), first + 8);
        reseal(&mut bytes);
        assert_eq!(Bundle::parse(&bytes).unwrap_err(), BundleError::Overlap { first: 0, second: 1 });
    }

    #[test]
    fn misaligned_entries_are_refused() {
        let mut bytes = sample();
        let at = u64_at(&bytes, entry_field(1, 48));
        set_u64(&mut bytes, entry_field(1, 48), at + 1);
        reseal(&mut bytes);
        assert!(matches!(Bundle::parse(&bytes), Err(BundleError::Misaligned { index: 1, .. })));
    }

    #[test]
    fn duplicate_names_are_refused() {
        let mut bytes = sample();
        let name: [u8; NAME_LEN] = bytes[entry_field(0, 0)..entry_field(0, NAME_LEN)].try_into().unwrap();
        bytes[entry_field(1, 0)..entry_field(1, NAME_LEN)].copy_from_slice(&name);
        reseal(&mut bytes);
        assert_eq!(Bundle::parse(&bytes).unwrap_err(), BundleError::DuplicateName { first: 0, second: 1 });
    }

    #[test]
    fn unprintable_or_empty_names_are_refused() {
        for bad in [&b"dom\x010"[..], &b""[..], &b"a b"[..]] {
            let mut bytes = sample();
            let mut field = [0u8; NAME_LEN];
            field[..bad.len()].copy_from_slice(bad);
            bytes[entry_field(1, 0)..entry_field(1, NAME_LEN)].copy_from_slice(&field);
            reseal(&mut bytes);
            assert_eq!(Bundle::parse(&bytes).unwrap_err(), BundleError::BadName { index: 1 }, "{bad:?}");
        }
    }

    #[test]
    fn reserved_flags_are_refused() {
        let mut bytes = sample();
        bytes[entry_field(2, 42)] = 1;
        reseal(&mut bytes);
        assert_eq!(Bundle::parse(&bytes).unwrap_err(), BundleError::ReservedFlags { index: 2, flags: 1 });
    }

    #[test]
    fn unknown_kinds_are_listed_not_refused() {
        let mut bytes = sample();
        bytes[entry_field(2, 40)..entry_field(2, 42)].copy_from_slice(&77u16.to_le_bytes());
        reseal(&mut bytes);
        assert_eq!(Bundle::parse(&bytes).unwrap().find("empty").unwrap().kind, EntryKind::Unknown(77));
    }

    #[test]
    fn the_builder_refuses_bad_names_duplicates_and_overflow() {
        let mut b = BundleBuilder::new();
        assert!(matches!(b.add("", EntryKind::Data, vec![]), Err(BuildError::BadName { .. })));
        assert!(matches!(b.add(&"x".repeat(41), EntryKind::Data, vec![]), Err(BuildError::BadName { .. })));
        assert!(matches!(b.add("with space", EntryKind::Data, vec![]), Err(BuildError::BadName { .. })));
        b.add("a", EntryKind::Data, vec![1]).unwrap();
        assert!(matches!(b.add("a", EntryKind::Data, vec![]), Err(BuildError::DuplicateName { .. })));
        for i in 1..MAX_ENTRIES {
            b.add(&format!("e{i}"), EntryKind::Data, vec![]).unwrap();
        }
        assert_eq!(b.add("last", EntryKind::Data, vec![]).unwrap_err(), BuildError::TooManyEntries);
        assert_eq!(Bundle::parse(&b.build()).unwrap().len(), MAX_ENTRIES);
    }

    #[test]
    fn random_corruption_never_panics() {
        let good = sample();
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..5000 {
            let mut bytes = good.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            let count = u32_at(&bytes, 12) as usize;
            if next() % 2 == 0 && count <= MAX_ENTRIES && HEADER_LEN + count * ENTRY_LEN <= bytes.len() {
                reseal(&mut bytes); // get past the checksums to reach the deeper checks
            }
            let _ = Bundle::parse(&bytes);
        }
    }
}
