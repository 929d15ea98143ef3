//! The boot bundle: the binary container in which guest images and the configuration
//! travel from `boot/` to the hypervisor (the bootloader loads it as its ramdisk).
//!
//! Little-endian, version 1 (see docs/boot-bundle.md):
//! - header (32 bytes): magic `FVBUNDLE`, version u16, header length u16, entry count
//!   u32, total length u64, table CRC-32 u32, header CRC-32 u32 (of bytes 0..28);
//! - entry table: `count` entries of 64 bytes: name [u8; 40] (printable ASCII,
//!   NUL-padded), kind u16, flags u16, data CRC-32 u32, offset u64, length u64;
//! - data areas (the writer aligns them to 4 KiB; the parser requires 8).
//!
//! The parser trusts nothing: it checks every bound with overflow-checked arithmetic,
//! every checksum and the version before handing out a single entry, and it never
//! allocates, so the hypervisor runs it before its heap exists. Fields are read with
//! [`Reader`], which splits them off the front of a slice and reports running out
//! instead of indexing, so no input can make the parser panic.

use crate::crc32::crc32;
use core::fmt;

pub const MAGIC: [u8; 8] = *b"FVBUNDLE";
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 32;
pub const ENTRY_LEN: usize = 64;
pub const NAME_LEN: usize = 40;
pub const MAX_ENTRIES: usize = 256;
/// Alignment of data areas written by `BundleBuilder`: page-aligned data can be mapped
/// into a guest without copying.
pub const DATA_ALIGN: usize = 4096;
/// Alignment the parser requires of data offsets. Weaker than [`DATA_ALIGN`] so another
/// writer may pack small entries, but enough to read 8-byte fields in place.
pub const OFFSET_ALIGN: u64 = 8;

/// The header CRC covers every header byte before the CRC itself.
const HEADER_CRC_SPAN: usize = HEADER_LEN - 4;

/// The advice every [`BundleError`] ends with: the bundle is produced by our own build,
/// so whatever is wrong, rebuilding it is the fix.
const REBUILD: &str =
    "the bundle is damaged or was made by an incompatible `boot`; rebuild the image with `cargo xtask build`";

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
    /// A Linux kernel (bzImage, x86 boot protocol 2.12 or later with the 64-bit entry).
    BzImage,
    /// A kind this build does not know; listed, not rejected, so a newer `boot` can add
    /// kinds within version 1 without breaking older hypervisors.
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
            6 => Self::BzImage,
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
            Self::BzImage => 6,
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
            Self::BzImage => f.write_str("bzimage"),
            Self::Unknown(raw) => write!(f, "unknown({raw})"),
        }
    }
}

/// An entry's name field exactly as stored: 40 bytes, NUL-padded.
///
/// Errors carry this rather than a `&str` so they can name an entry even when the name
/// itself is what is wrong, and so they do not borrow the bundle. It displays quoted,
/// with anything unprintable escaped (`"dom\x010"`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EntryName([u8; NAME_LEN]);

impl EntryName {
    /// Wraps a raw name field.
    pub const fn from_raw(field: [u8; NAME_LEN]) -> Self {
        Self(field)
    }

    /// NUL-pads `name` to a name field; `None` if it is longer than [`NAME_LEN`].
    /// Does not check the characters: see [`EntryName::as_str`].
    pub fn from_bytes(name: &[u8]) -> Option<Self> {
        let mut field = [0; NAME_LEN];
        field.get_mut(..name.len())?.copy_from_slice(name);
        Some(Self(field))
    }

    /// The raw 40-byte field.
    pub const fn raw(&self) -> &[u8; NAME_LEN] {
        &self.0
    }

    /// The name, if it follows the version 1 rules: 1 to 40 printable ASCII bytes
    /// (0x21..=0x7E, so no spaces or control characters), then only NUL padding.
    /// Printable ASCII keeps names safe to print on a serial console and to type.
    pub fn as_str(&self) -> Option<&str> {
        name_str(&self.0)
    }

    /// The field without its trailing NUL padding (interior NULs are kept, so a
    /// malformed name shows what is actually stored).
    fn trimmed(&self) -> &[u8] {
        let mut name: &[u8] = &self.0;
        while let [rest @ .., 0] = name {
            name = rest;
        }
        name
    }
}

impl fmt::Display for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.trimmed().escape_ascii())
    }
}

impl fmt::Debug for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryName({self})")
    }
}

/// Why a bundle was refused. Entry errors carry the entry's index in the table and its
/// name field; offsets and lengths are in bytes from the start of the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleError {
    /// The input cannot even hold a header.
    TooShort {
        len: usize,
        needed: usize,
    },
    /// The input does not start with [`MAGIC`]; `found` is what it starts with.
    BadMagic {
        found: [u8; 8],
    },
    UnsupportedVersion {
        found: u16,
        supported: u16,
    },
    BadHeaderLength {
        found: u16,
        expected: u16,
    },
    HeaderChecksum {
        expected: u32,
        found: u32,
    },
    /// The header's total length is more than the input holds.
    Truncated {
        total_len: u64,
        available: usize,
    },
    TooManyEntries {
        count: u32,
        max: usize,
    },
    /// The entry table does not fit inside the bundle.
    TableOutOfBounds {
        entry_count: u32,
        table_end: u64,
        total_len: u64,
    },
    TableChecksum {
        expected: u32,
        found: u32,
    },
    BadName {
        index: usize,
        name: EntryName,
    },
    ReservedFlags {
        index: usize,
        name: EntryName,
        flags: u16,
    },
    Misaligned {
        index: usize,
        name: EntryName,
        offset: u64,
    },
    /// The entry's data reaches past the bundle's end (or `offset + length` overflows).
    EntryOutOfBounds {
        index: usize,
        name: EntryName,
        offset: u64,
        length: u64,
        total_len: u64,
    },
    /// The entry's data overlaps the header or the entry table.
    OverlapsTable {
        index: usize,
        name: EntryName,
        offset: u64,
        table_end: u64,
    },
    DuplicateName {
        first: usize,
        second: usize,
        name: EntryName,
    },
    /// The data of two entries overlap; `first` comes earlier in the table.
    Overlap {
        first: usize,
        first_name: EntryName,
        second: usize,
        second_name: EntryName,
    },
    DataChecksum {
        index: usize,
        name: EntryName,
        expected: u32,
        found: u32,
    },
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooShort { len, needed } => {
                write!(f, "boot bundle is {len} bytes, shorter than its {needed}-byte header")
            }
            Self::BadMagic { found } => write!(
                f,
                "boot bundle starts with \"{}\" instead of \"FVBUNDLE\": the ramdisk is not a boot bundle",
                found.escape_ascii()
            ),
            Self::UnsupportedVersion { found, supported } => {
                write!(f, "boot bundle has format version {found}, but this hypervisor reads version {supported}")
            }
            Self::BadHeaderLength { found, expected } => {
                write!(f, "boot bundle header length is {found}, expected {expected}")
            }
            Self::HeaderChecksum { expected, found } => {
                write!(f, "boot bundle header checksum is {found:#010x}, but the header says {expected:#010x}")
            }
            Self::Truncated { total_len, available } => {
                write!(f, "boot bundle says it is {total_len} bytes, but only {available} were loaded")
            }
            Self::TooManyEntries { count, max } => {
                write!(f, "boot bundle lists {count} entries, at most {max} are allowed")
            }
            Self::TableOutOfBounds { entry_count, table_end, total_len } => write!(
                f,
                "boot bundle entry table ({entry_count} entries) ends at byte {table_end}, past the bundle's end at {total_len}"
            ),
            Self::TableChecksum { expected, found } => {
                write!(f, "boot bundle entry table checksum is {found:#010x}, but the header says {expected:#010x}")
            }
            Self::BadName { index, name } => write!(
                f,
                "boot bundle entry #{index} has the name {name}; names are 1 to {NAME_LEN} printable ASCII characters padded with NULs"
            ),
            Self::ReservedFlags { index, name, flags } => {
                write!(f, "boot bundle entry #{index} {name} sets flags {flags:#06x}, which version 1 reserves")
            }
            Self::Misaligned { index, name, offset } => write!(
                f,
                "boot bundle entry #{index} {name} starts at offset {offset}, which is not a multiple of {OFFSET_ALIGN}"
            ),
            Self::EntryOutOfBounds { index, name, offset, length, total_len } => write!(
                f,
                "boot bundle entry #{index} {name} ({length} bytes at offset {offset}) reaches past the bundle's end at {total_len}"
            ),
            Self::OverlapsTable { index, name, offset, table_end } => write!(
                f,
                "boot bundle entry #{index} {name} starts at offset {offset}, inside the header and entry table (bytes 0..{table_end})"
            ),
            Self::DuplicateName { first, second, name } => {
                write!(f, "boot bundle entries #{first} and #{second} are both named {name}")
            }
            Self::Overlap { first, first_name, second, second_name } => {
                write!(f, "boot bundle entries #{first} {first_name} and #{second} {second_name} overlap")
            }
            Self::DataChecksum { index, name, expected, found } => write!(
                f,
                "boot bundle entry #{index} {name} has checksum {found:#010x}, but the table says {expected:#010x}"
            ),
        }?;
        write!(f, "; {REBUILD}")
    }
}

impl core::error::Error for BundleError {}

/// Splits little-endian fields off the front of a byte slice, in layout order, so the
/// decoders below read like the format description and running out of bytes is a
/// `None` rather than a panic.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes<const N: usize>(&mut self) -> Option<&'a [u8; N]> {
        let (field, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(field)
    }

    fn u16(&mut self) -> Option<u16> {
        self.bytes().map(|b| u16::from_le_bytes(*b))
    }

    fn u32(&mut self) -> Option<u32> {
        self.bytes().map(|b| u32::from_le_bytes(*b))
    }

    fn u64(&mut self) -> Option<u64> {
        self.bytes().map(|b| u64::from_le_bytes(*b))
    }
}

/// The header, decoded but not yet checked.
struct Header {
    magic: [u8; 8],
    version: u16,
    header_len: u16,
    entry_count: u32,
    total_len: u64,
    table_crc: u32,
    header_crc: u32,
}

impl Header {
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        Some(Self {
            magic: *r.bytes()?,
            version: r.u16()?,
            header_len: r.u16()?,
            entry_count: r.u32()?,
            total_len: r.u64()?,
            table_crc: r.u32()?,
            header_crc: r.u32()?,
        })
    }
}

/// One table entry, decoded but not yet checked.
struct RawEntry<'a> {
    name: &'a [u8; NAME_LEN],
    kind: u16,
    flags: u16,
    checksum: u32,
    offset: u64,
    length: u64,
}

impl<'a> RawEntry<'a> {
    fn read(r: &mut Reader<'a>) -> Option<Self> {
        Some(Self {
            name: r.bytes()?,
            kind: r.u16()?,
            flags: r.u16()?,
            checksum: r.u32()?,
            offset: r.u64()?,
            length: r.u64()?,
        })
    }

    /// The checks that need only this entry and the bundle's extent; on success, the
    /// entry with its data sliced out. `bytes` is the bundle (already cut to its total
    /// length) and `table_end` where its entry table ends.
    fn check(&self, index: usize, bytes: &'a [u8], table_end: u64) -> Result<Entry<'a>, BundleError> {
        let name = EntryName(*self.name);
        let Some(text) = name_str(self.name) else {
            return Err(BundleError::BadName { index, name });
        };
        if self.flags != 0 {
            return Err(BundleError::ReservedFlags { index, name, flags: self.flags });
        }
        if !self.offset.is_multiple_of(OFFSET_ALIGN) {
            return Err(BundleError::Misaligned { index, name, offset: self.offset });
        }
        // `get` refuses an end past the bundle; the conversions and the addition refuse
        // what would not fit a usize or a u64 (a hostile length near u64::MAX).
        let start = usize::try_from(self.offset).ok();
        let end = self.offset.checked_add(self.length).and_then(|end| usize::try_from(end).ok());
        let Some(data) = start.zip(end).and_then(|(start, end)| bytes.get(start..end)) else {
            return Err(BundleError::EntryOutOfBounds {
                index,
                name,
                offset: self.offset,
                length: self.length,
                total_len: bytes.len() as u64,
            });
        };
        // An empty entry occupies no bytes, so it cannot overlap anything, wherever it
        // claims to start.
        if !data.is_empty() && self.offset < table_end {
            return Err(BundleError::OverlapsTable { index, name, offset: self.offset, table_end });
        }
        Ok(Entry {
            name: text,
            kind: EntryKind::from_raw(self.kind),
            checksum: self.checksum,
            offset: self.offset,
            data,
        })
    }
}

/// [`EntryName::as_str`], for a field borrowed from the bundle so that the `&str` lives
/// as long as the bundle.
fn name_str(field: &[u8; NAME_LEN]) -> Option<&str> {
    let len = field.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
    let (name, padding) = field.split_at_checked(len)?;
    if name.is_empty() || !name.iter().all(u8::is_ascii_graphic) || padding.iter().any(|&b| b != 0) {
        return None;
    }
    core::str::from_utf8(name).ok()
}

/// A validated boot bundle. Everything was checked by [`Bundle::parse`]; the accessors
/// cannot fail.
#[derive(Clone, Copy)]
pub struct Bundle<'a> {
    /// The bundle, cut to its total length (the loader's padding is dropped).
    bytes: &'a [u8],
    /// The entry table, exactly `entry_count * ENTRY_LEN` bytes.
    table: &'a [u8],
    /// Where the entry table ends, in bytes from the start of the bundle.
    table_end: u64,
    version: u16,
}

/// One entry of a validated bundle.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub name: &'a str,
    pub kind: EntryKind,
    /// CRC-32 of `data`, already verified.
    pub checksum: u32,
    /// Where `data` starts, in bytes from the start of the bundle.
    pub offset: u64,
    pub data: &'a [u8],
}

impl Entry<'_> {
    /// Whether the data of two entries share a byte. Both were bounds-checked, so their
    /// ends do not overflow; saturating keeps this panic-free regardless.
    fn overlaps(&self, other: &Entry<'_>) -> bool {
        let (len, other_len) = (self.data.len() as u64, other.data.len() as u64);
        len > 0
            && other_len > 0
            && self.offset < other.offset.saturating_add(other_len)
            && other.offset < self.offset.saturating_add(len)
    }
}

// By hand: the derived impls would print every byte of the data, megabytes for a kernel.
impl fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("checksum", &format_args!("{:#010x}", self.checksum))
            .field("offset", &self.offset)
            .field("len", &self.data.len())
            .finish()
    }
}

impl fmt::Debug for Bundle<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("version", &self.version)
            .field("total_len", &self.bytes.len())
            .field("entries", &self.len())
            .finish()
    }
}

impl<'a> Bundle<'a> {
    /// Validates everything before returning: header, version, checksums of header,
    /// table and every entry's data, names, flags, bounds and overlaps.
    ///
    /// `input` may be longer than the bundle (loaders pad the ramdisk to a page or
    /// sector); the bytes after the header's total length are ignored.
    pub fn parse(input: &'a [u8]) -> Result<Self, BundleError> {
        let header =
            Header::read(&mut Reader(input)).ok_or(BundleError::TooShort { len: input.len(), needed: HEADER_LEN })?;
        if header.magic != MAGIC {
            return Err(BundleError::BadMagic { found: header.magic });
        }
        // The version comes before the checksum: another version may lay its header out
        // differently, and "wrong version" is the more useful report then.
        if header.version != VERSION {
            return Err(BundleError::UnsupportedVersion { found: header.version, supported: VERSION });
        }
        if usize::from(header.header_len) != HEADER_LEN {
            return Err(BundleError::BadHeaderLength { found: header.header_len, expected: HEADER_LEN as u16 });
        }
        // Cannot be short: `Header::read` consumed HEADER_LEN bytes.
        let covered =
            input.get(..HEADER_CRC_SPAN).ok_or(BundleError::TooShort { len: input.len(), needed: HEADER_LEN })?;
        let found = crc32(covered);
        if found != header.header_crc {
            return Err(BundleError::HeaderChecksum { expected: header.header_crc, found });
        }

        let total_len = header.total_len;
        let bytes = usize::try_from(total_len)
            .ok()
            .and_then(|len| input.get(..len))
            .ok_or(BundleError::Truncated { total_len, available: input.len() })?;

        let count = usize::try_from(header.entry_count)
            .ok()
            .filter(|&count| count <= MAX_ENTRIES)
            .ok_or(BundleError::TooManyEntries { count: header.entry_count, max: MAX_ENTRIES })?;
        // At most 32 + 256 * 64: cannot overflow, but checked like every other length
        // (an overflow would become usize::MAX, which `get` then refuses).
        let table_end = count.checked_mul(ENTRY_LEN).and_then(|len| len.checked_add(HEADER_LEN)).unwrap_or(usize::MAX);
        let table = bytes.get(HEADER_LEN..table_end).ok_or(BundleError::TableOutOfBounds {
            entry_count: header.entry_count,
            table_end: table_end as u64,
            total_len,
        })?;
        let found = crc32(table);
        if found != header.table_crc {
            return Err(BundleError::TableChecksum { expected: header.table_crc, found });
        }

        let bundle = Bundle { bytes, table, table_end: table_end as u64, version: header.version };
        for (index, checked) in bundle.checked().enumerate() {
            let (field, entry) = checked?;
            // Every earlier entry passed its checks (or we would have returned), so
            // `flatten` drops none of them. Quadratic, but at most 256 * 255 / 2 cheap
            // comparisons.
            for (first, (first_field, earlier)) in bundle.checked().take(index).flatten().enumerate() {
                let (first_name, second_name) = (EntryName(*first_field), EntryName(*field));
                if earlier.name == entry.name {
                    return Err(BundleError::DuplicateName { first, second: index, name: second_name });
                }
                if earlier.overlaps(&entry) {
                    return Err(BundleError::Overlap { first, first_name, second: index, second_name });
                }
            }
            let found = crc32(entry.data);
            if found != entry.checksum {
                return Err(BundleError::DataChecksum {
                    index,
                    name: EntryName(*field),
                    expected: entry.checksum,
                    found,
                });
            }
        }
        Ok(bundle)
    }

    /// Each table entry with its own checks applied, in table order.
    fn checked(&self) -> Checked<'a> {
        Checked { reader: Reader(self.table), index: 0, bytes: self.bytes, table_end: self.table_end }
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.table.len() / ENTRY_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The format version (always [`VERSION`]: others are refused).
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The bundle's length in bytes, header included, without the loader's padding.
    pub fn total_len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The entries in table order.
    pub fn entries(&self) -> Entries<'a> {
        Entries(self.checked())
    }

    /// The entry called `name`.
    pub fn find(&self, name: &str) -> Option<Entry<'a>> {
        self.entries().find(|e| e.name == name)
    }
}

/// The table entries with [`RawEntry::check`] applied, each with its raw name field (for
/// error reports). Ends where the table ends.
struct Checked<'a> {
    reader: Reader<'a>,
    index: usize,
    bytes: &'a [u8],
    table_end: u64,
}

impl<'a> Iterator for Checked<'a> {
    type Item = Result<(&'a [u8; NAME_LEN], Entry<'a>), BundleError>;

    fn next(&mut self) -> Option<Self::Item> {
        let raw = RawEntry::read(&mut self.reader)?;
        let index = self.index;
        self.index = index.saturating_add(1);
        Some(raw.check(index, self.bytes, self.table_end).map(|entry| (raw.name, entry)))
    }
}

/// The entries of a [`Bundle`], in table order.
pub struct Entries<'a>(Checked<'a>);

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        // `Bundle::parse` accepted every entry, so this skips none; re-checking costs
        // little and keeps this path free of any way to panic.
        self.0.by_ref().flatten().next().map(|(_, entry)| entry)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.0.reader.0.len() / ENTRY_LEN))
    }
}

impl fmt::Debug for Entries<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entries").field("next_index", &self.0.index).finish_non_exhaustive()
    }
}

#[cfg(feature = "std")]
pub use writer::{BuildError, BundleBuilder};

/// The writer, used on the host by `boot/`.
#[cfg(feature = "std")]
mod writer {
    use super::*;

    /// Where data may start at the latest: after the largest table, page-aligned.
    const MAX_TABLE_END: usize = (HEADER_LEN + MAX_ENTRIES * ENTRY_LEN).next_multiple_of(DATA_ALIGN);
    /// The most data (with padding) we agree to lay out after that: a `Vec` holds at
    /// most `isize::MAX` bytes.
    const MAX_DATA: usize = isize::MAX as usize - MAX_TABLE_END;

    /// Why the builder refused an entry.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum BuildError {
        BadName { name: String },
        DuplicateName { name: String },
        TooManyEntries { name: String, max: usize },
        TooLarge { name: String, len: usize },
    }

    impl fmt::Display for BuildError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Self::BadName { name } => write!(
                    f,
                    "entry name {name:?} is not allowed: use 1 to {NAME_LEN} printable ASCII characters, without spaces"
                ),
                Self::DuplicateName { name } => {
                    write!(f, "two entries are named {name:?}; give each entry a different name")
                }
                Self::TooManyEntries { name, max } => {
                    write!(f, "cannot add {name:?}: a bundle holds at most {max} entries; combine or drop some")
                }
                Self::TooLarge { name, len } => {
                    write!(f, "cannot add {name:?} ({len} bytes): the bundle would be larger than this host can hold")
                }
            }
        }
    }

    impl std::error::Error for BuildError {}

    struct Pending {
        name: EntryName,
        kind: EntryKind,
        data: Vec<u8>,
    }

    // By hand: the derived impl would print every byte of the data.
    impl fmt::Debug for Pending {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Pending")
                .field("name", &self.name)
                .field("kind", &self.kind)
                .field("len", &self.data.len())
                .finish()
        }
    }

    /// Collects entries and writes a bundle that [`Bundle::parse`] accepts.
    #[derive(Debug, Default)]
    pub struct BundleBuilder {
        entries: Vec<Pending>,
        /// An upper bound of the data areas' size: each entry with the most padding it
        /// can need. `add` keeps it within `MAX_DATA`, so `MAX_TABLE_END + data_bound`
        /// bounds every offset `build` computes, which is what lets `build` lay out the
        /// bundle with plain arithmetic.
        data_bound: usize,
    }

    impl BundleBuilder {
        pub fn new() -> Self {
            Self::default()
        }

        /// Adds an entry. Everything the parser would refuse about it is checked here,
        /// so a bad name fails the image build, not the boot.
        pub fn add(&mut self, name: &str, kind: EntryKind, data: Vec<u8>) -> Result<&mut Self, BuildError> {
            let Some(field) = EntryName::from_bytes(name.as_bytes()).filter(|f| f.as_str() == Some(name)) else {
                return Err(BuildError::BadName { name: name.into() });
            };
            if self.entries.iter().any(|e| e.name == field) {
                return Err(BuildError::DuplicateName { name: name.into() });
            }
            if self.entries.len() >= MAX_ENTRIES {
                return Err(BuildError::TooManyEntries { name: name.into(), max: MAX_ENTRIES });
            }
            let data_bound = self
                .data_bound
                .checked_add(data.len())
                .and_then(|n| n.checked_add(DATA_ALIGN))
                .filter(|&n| n <= MAX_DATA)
                .ok_or(BuildError::TooLarge { name: name.into(), len: data.len() })?;
            self.data_bound = data_bound;
            self.entries.push(Pending { name: field, kind, data });
            Ok(self)
        }

        /// The bundle's bytes: header, table, then each entry's data at the next
        /// multiple of [`DATA_ALIGN`]. It ends with the last entry's data, unpadded.
        pub fn build(&self) -> Vec<u8> {
            // No overflow below: every offset is at most `MAX_TABLE_END + data_bound`
            // (see `add`).
            let table_end = HEADER_LEN + self.entries.len() * ENTRY_LEN;
            let mut offsets = Vec::with_capacity(self.entries.len());
            let mut next = table_end.next_multiple_of(DATA_ALIGN);
            let mut total = table_end;
            for e in &self.entries {
                offsets.push(next);
                total = next + e.data.len();
                next = total.next_multiple_of(DATA_ALIGN);
            }

            let mut table = Vec::with_capacity(table_end - HEADER_LEN);
            for (e, &offset) in self.entries.iter().zip(&offsets) {
                table.extend_from_slice(e.name.raw());
                table.extend_from_slice(&e.kind.raw().to_le_bytes());
                table.extend_from_slice(&0u16.to_le_bytes()); // flags, reserved in version 1
                table.extend_from_slice(&crc32(&e.data).to_le_bytes());
                table.extend_from_slice(&(offset as u64).to_le_bytes());
                table.extend_from_slice(&(e.data.len() as u64).to_le_bytes());
            }

            let mut out = Vec::with_capacity(total);
            out.extend_from_slice(&MAGIC);
            out.extend_from_slice(&VERSION.to_le_bytes());
            out.extend_from_slice(&(HEADER_LEN as u16).to_le_bytes());
            // At most MAX_ENTRIES, so the cast cannot truncate.
            out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
            out.extend_from_slice(&(total as u64).to_le_bytes());
            out.extend_from_slice(&crc32(&table).to_le_bytes());
            let header_crc = crc32(&out);
            out.extend_from_slice(&header_crc.to_le_bytes());
            out.extend_from_slice(&table);
            for (e, &offset) in self.entries.iter().zip(&offsets) {
                out.resize(offset, 0);
                out.extend_from_slice(&e.data);
            }
            debug_assert_eq!(out.len(), total);
            out
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    // Field offsets restated from docs/boot-bundle.md rather than taken from the code,
    // so the tests catch the writer and the parser drifting from the documented layout
    // together.
    const VERSION_AT: usize = 8;
    const HEADER_LEN_AT: usize = 10;
    const COUNT_AT: usize = 12;
    const TOTAL_LEN_AT: usize = 16;
    const TABLE_CRC_AT: usize = 24;
    const HEADER_CRC_AT: usize = 28;
    const KIND_AT: usize = 40;
    const FLAGS_AT: usize = 42;
    const CHECKSUM_AT: usize = 44;
    const OFFSET_AT: usize = 48;
    const LENGTH_AT: usize = 56;

    fn sample() -> Vec<u8> {
        let mut b = BundleBuilder::new();
        b.add("hypervisor.cfg", EntryKind::Config, b"[hypervisor]\n".to_vec()).unwrap();
        b.add("dom0", EntryKind::Elf64, vec![0x7F, b'E', b'L', b'F', 2, 1, 1]).unwrap();
        b.add("empty", EntryKind::Data, Vec::new()).unwrap();
        b.build()
    }

    fn name(s: &str) -> EntryName {
        EntryName::from_bytes(s.as_bytes()).unwrap()
    }

    /// Byte `offset` of table entry `index`.
    fn entry_at(index: usize, offset: usize) -> usize {
        HEADER_LEN + index * ENTRY_LEN + offset
    }

    fn get_u32(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    fn get_u64(bytes: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
    }

    fn set_u32(bytes: &mut [u8], at: usize, v: u32) {
        bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn set_u64(bytes: &mut [u8], at: usize, v: u64) {
        bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// Re-seals the table and header checksums after a test edited them, so the parser
    /// gets past the checksums to the check under test.
    fn reseal(bytes: &mut [u8]) {
        let count = get_u32(bytes, COUNT_AT) as usize;
        let table_crc = crc32(&bytes[HEADER_LEN..HEADER_LEN + count * ENTRY_LEN]);
        set_u32(bytes, TABLE_CRC_AT, table_crc);
        reseal_header(bytes);
    }

    fn reseal_header(bytes: &mut [u8]) {
        let header_crc = crc32(&bytes[..HEADER_CRC_AT]);
        set_u32(bytes, HEADER_CRC_AT, header_crc);
    }

    fn parse_err(bytes: &[u8]) -> BundleError {
        Bundle::parse(bytes).unwrap_err()
    }

    #[test]
    fn an_empty_bundle_is_just_a_header() {
        let bytes = BundleBuilder::new().build();
        assert_eq!(bytes.len(), HEADER_LEN);
        let b = Bundle::parse(&bytes).unwrap();
        assert!(b.is_empty());
        assert_eq!(b.entries().count(), 0);
    }

    #[test]
    fn one_entry_round_trips() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut builder = BundleBuilder::new();
        builder.add("guest.elf", EntryKind::Elf64, data.clone()).unwrap();
        let bytes = builder.build();
        let b = Bundle::parse(&bytes).unwrap();
        let e = b.entries().next().unwrap();
        assert_eq!((b.len(), e.name, e.kind, e.data), (1, "guest.elf", EntryKind::Elf64, &data[..]));
        assert_eq!(e.checksum, crc32(&data));
        assert_eq!(e.offset, DATA_ALIGN as u64);
    }

    #[test]
    fn several_entries_round_trip_in_order_and_page_aligned() {
        let bytes = sample();
        let b = Bundle::parse(&bytes).unwrap();
        assert_eq!((b.len(), b.version(), b.total_len()), (3, 1, bytes.len() as u64));
        let listed: Vec<_> = b.entries().map(|e| (e.name, e.kind, e.data.len())).collect();
        assert_eq!(
            listed,
            [("hypervisor.cfg", EntryKind::Config, 13), ("dom0", EntryKind::Elf64, 7), ("empty", EntryKind::Data, 0)]
        );
        assert!(b.entries().all(|e| e.offset % DATA_ALIGN as u64 == 0));
        assert_eq!(b.find("dom0").unwrap().data, [0x7F, b'E', b'L', b'F', 2, 1, 1]);
        assert!(b.find("nothing").is_none());
    }

    #[test]
    fn the_writer_follows_the_documented_layout() {
        let bytes = sample();
        assert_eq!(&bytes[..8], b"FVBUNDLE");
        assert_eq!(u16::from_le_bytes([bytes[VERSION_AT], bytes[VERSION_AT + 1]]), 1);
        assert_eq!(u16::from_le_bytes([bytes[HEADER_LEN_AT], bytes[HEADER_LEN_AT + 1]]), 32);
        assert_eq!(get_u32(&bytes, COUNT_AT), 3);
        assert_eq!(get_u64(&bytes, TOTAL_LEN_AT), bytes.len() as u64);
        assert_eq!(&bytes[entry_at(1, 0)..entry_at(1, 5)], b"dom0\0");
        assert_eq!(bytes[entry_at(1, KIND_AT)], 2);
        assert_eq!(get_u32(&bytes, entry_at(1, CHECKSUM_AT)), crc32(&[0x7F, b'E', b'L', b'F', 2, 1, 1]));
        assert_eq!(get_u64(&bytes, entry_at(1, LENGTH_AT)), 7);
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
        assert_eq!(parse_err(&bytes[..10]), BundleError::TooShort { len: 10, needed: 32 });
        assert_eq!(parse_err(&bytes[..100]), BundleError::Truncated { total_len: bytes.len() as u64, available: 100 });
    }

    #[test]
    fn wrong_magic_is_refused_showing_what_was_found() {
        let mut bytes = sample();
        bytes[..4].copy_from_slice(b"\x7fELF");
        assert_eq!(parse_err(&bytes), BundleError::BadMagic { found: *b"\x7fELFNDLE" });
        assert!(parse_err(&bytes).to_string().starts_with("boot bundle starts with \"\\x7fELFNDLE\""));
    }

    #[test]
    fn another_version_is_refused_with_both_numbers() {
        let mut bytes = sample();
        bytes[VERSION_AT] = 2;
        reseal_header(&mut bytes);
        assert_eq!(parse_err(&bytes), BundleError::UnsupportedVersion { found: 2, supported: 1 });
    }

    #[test]
    fn another_header_length_is_refused() {
        let mut bytes = sample();
        bytes[HEADER_LEN_AT] = 48;
        reseal_header(&mut bytes);
        assert_eq!(parse_err(&bytes), BundleError::BadHeaderLength { found: 48, expected: 32 });
    }

    #[test]
    fn a_damaged_header_fails_its_checksum() {
        let mut bytes = sample();
        bytes[TOTAL_LEN_AT + 4] ^= 0x01;
        assert!(matches!(parse_err(&bytes), BundleError::HeaderChecksum { .. }));
        let mut bytes = sample();
        bytes[HEADER_CRC_AT] ^= 0x01;
        assert!(matches!(parse_err(&bytes), BundleError::HeaderChecksum { .. }));
    }

    #[test]
    fn a_damaged_table_fails_its_checksum() {
        let mut bytes = sample();
        bytes[entry_at(1, 0)] = b'D';
        let expected = get_u32(&bytes, TABLE_CRC_AT);
        let found = crc32(&bytes[HEADER_LEN..entry_at(3, 0)]);
        assert_eq!(parse_err(&bytes), BundleError::TableChecksum { expected, found });
    }

    #[test]
    fn damaged_data_fails_the_entry_checksum() {
        let mut bytes = sample();
        let dom0 = Bundle::parse(&bytes).unwrap().find("dom0").unwrap();
        let (at, expected) = (dom0.offset as usize, dom0.checksum);
        bytes[at] ^= 0xFF;
        let found = crc32(&bytes[at..at + 7]);
        assert_eq!(parse_err(&bytes), BundleError::DataChecksum { index: 1, name: name("dom0"), expected, found });
    }

    #[test]
    fn too_many_entries_are_refused() {
        let mut bytes = sample();
        set_u32(&mut bytes, COUNT_AT, 100_000);
        reseal_header(&mut bytes);
        assert_eq!(parse_err(&bytes), BundleError::TooManyEntries { count: 100_000, max: 256 });
    }

    #[test]
    fn a_table_past_the_end_is_refused() {
        let mut bytes = BundleBuilder::new().build();
        set_u32(&mut bytes, COUNT_AT, 2);
        reseal_header(&mut bytes);
        assert_eq!(parse_err(&bytes), BundleError::TableOutOfBounds { entry_count: 2, table_end: 160, total_len: 32 });
    }

    #[test]
    fn a_total_length_shorter_than_the_header_is_refused() {
        let mut bytes = BundleBuilder::new().build();
        set_u64(&mut bytes, TOTAL_LEN_AT, 4);
        reseal_header(&mut bytes);
        assert!(matches!(parse_err(&bytes), BundleError::TableOutOfBounds { total_len: 4, .. }));
    }

    #[test]
    fn offsets_whose_end_overflows_are_out_of_bounds() {
        let mut bytes = sample();
        set_u64(&mut bytes, entry_at(1, OFFSET_AT), u64::MAX - 7);
        reseal(&mut bytes);
        assert!(matches!(
            parse_err(&bytes),
            BundleError::EntryOutOfBounds { index: 1, offset: 0xFFFF_FFFF_FFFF_FFF8, length: 7, .. }
        ));
    }

    #[test]
    fn huge_lengths_are_out_of_bounds() {
        let mut bytes = sample();
        set_u64(&mut bytes, entry_at(1, LENGTH_AT), u64::MAX);
        reseal(&mut bytes);
        assert!(matches!(parse_err(&bytes), BundleError::EntryOutOfBounds { index: 1, length: u64::MAX, .. }));
    }

    #[test]
    fn data_one_byte_past_the_end_is_out_of_bounds() {
        let mut bytes = sample();
        let total_len = bytes.len() as u64;
        // The last 8-aligned 8 bytes of the bundle, claimed as 9.
        let offset = (total_len - 8) & !7;
        let length = total_len - offset + 1;
        set_u64(&mut bytes, entry_at(1, OFFSET_AT), offset);
        set_u64(&mut bytes, entry_at(1, LENGTH_AT), length);
        reseal(&mut bytes);
        assert_eq!(
            parse_err(&bytes),
            BundleError::EntryOutOfBounds { index: 1, name: name("dom0"), offset, length, total_len }
        );
    }

    #[test]
    fn an_entry_inside_the_table_is_refused() {
        let mut bytes = sample();
        set_u64(&mut bytes, entry_at(1, OFFSET_AT), 8);
        reseal(&mut bytes);
        assert_eq!(
            parse_err(&bytes),
            BundleError::OverlapsTable { index: 1, name: name("dom0"), offset: 8, table_end: 224 }
        );
    }

    #[test]
    fn an_empty_entry_may_point_anywhere_inside_the_bundle() {
        let mut bytes = sample();
        set_u64(&mut bytes, entry_at(2, OFFSET_AT), 0);
        reseal(&mut bytes);
        assert_eq!(Bundle::parse(&bytes).unwrap().find("empty").unwrap().offset, 0);
    }

    #[test]
    fn overlapping_entries_are_refused() {
        let mut bytes = sample();
        let first = get_u64(&bytes, entry_at(0, OFFSET_AT));
        set_u64(&mut bytes, entry_at(1, OFFSET_AT), first + 8);
        reseal(&mut bytes);
        assert_eq!(
            parse_err(&bytes),
            BundleError::Overlap { first: 0, first_name: name("hypervisor.cfg"), second: 1, second_name: name("dom0") }
        );
    }

    #[test]
    fn misaligned_entries_are_refused() {
        let mut bytes = sample();
        let at = get_u64(&bytes, entry_at(1, OFFSET_AT));
        set_u64(&mut bytes, entry_at(1, OFFSET_AT), at + 1);
        reseal(&mut bytes);
        assert_eq!(parse_err(&bytes), BundleError::Misaligned { index: 1, name: name("dom0"), offset: at + 1 });
    }

    #[test]
    fn duplicate_names_are_refused() {
        let mut bytes = sample();
        let field: [u8; NAME_LEN] = bytes[entry_at(0, 0)..entry_at(0, NAME_LEN)].try_into().unwrap();
        bytes[entry_at(1, 0)..entry_at(1, NAME_LEN)].copy_from_slice(&field);
        reseal(&mut bytes);
        assert_eq!(parse_err(&bytes), BundleError::DuplicateName { first: 0, second: 1, name: name("hypervisor.cfg") });
    }

    #[test]
    fn empty_unprintable_non_ascii_or_nul_broken_names_are_refused() {
        let bad: [&[u8]; 6] = [b"", b"dom\x010", b"a b", b"caf\xc3\xa9", b"dom\x000", b"\x7f"];
        for raw in bad {
            let mut bytes = sample();
            let field = EntryName::from_bytes(raw).unwrap();
            bytes[entry_at(1, 0)..entry_at(1, NAME_LEN)].copy_from_slice(field.raw());
            reseal(&mut bytes);
            assert_eq!(parse_err(&bytes), BundleError::BadName { index: 1, name: field }, "{raw:?}");
        }
    }

    #[test]
    fn a_name_of_exactly_forty_characters_is_accepted() {
        let long = "x".repeat(NAME_LEN);
        let mut builder = BundleBuilder::new();
        builder.add(&long, EntryKind::Data, vec![1, 2, 3]).unwrap();
        let bytes = builder.build();
        assert_eq!(Bundle::parse(&bytes).unwrap().find(&long).unwrap().data, [1, 2, 3]);
    }

    #[test]
    fn reserved_flags_are_refused() {
        let mut bytes = sample();
        bytes[entry_at(2, FLAGS_AT)] = 1;
        reseal(&mut bytes);
        assert_eq!(parse_err(&bytes), BundleError::ReservedFlags { index: 2, name: name("empty"), flags: 1 });
    }

    #[test]
    fn unknown_kinds_are_listed_not_refused() {
        let mut bytes = sample();
        bytes[entry_at(2, KIND_AT)..entry_at(2, KIND_AT + 2)].copy_from_slice(&77u16.to_le_bytes());
        reseal(&mut bytes);
        let kind = Bundle::parse(&bytes).unwrap().find("empty").unwrap().kind;
        assert_eq!((kind, kind.to_string()), (EntryKind::Unknown(77), "unknown(77)".to_string()));
    }

    #[test]
    fn kinds_survive_a_round_trip_through_their_raw_values() {
        for raw in 0..=8 {
            assert_eq!(EntryKind::from_raw(raw).raw(), raw);
        }
    }

    #[test]
    fn error_messages_name_the_entry_and_say_how_to_fix_it() {
        let err = BundleError::BadName { index: 3, name: name("dom\x01") };
        assert_eq!(
            err.to_string(),
            "boot bundle entry #3 has the name \"dom\\x01\"; names are 1 to 40 printable ASCII characters padded \
             with NULs; the bundle is damaged or was made by an incompatible `boot`; rebuild the image with \
             `cargo xtask build`"
        );
        let err = BundleError::DataChecksum { index: 1, name: name("dom0"), expected: 1, found: 2 };
        assert!(err.to_string().starts_with("boot bundle entry #1 \"dom0\" has checksum 0x00000002"));
    }

    #[test]
    fn the_builder_refuses_bad_names_duplicates_and_overflow() {
        let mut b = BundleBuilder::new();
        for bad in ["", &"x".repeat(41), "with space", "nul\0inside", "tab\t", "café"] {
            assert_eq!(
                b.add(bad, EntryKind::Data, vec![]).unwrap_err(),
                BuildError::BadName { name: bad.into() },
                "{bad:?}"
            );
        }
        b.add("a", EntryKind::Data, vec![1]).unwrap();
        assert_eq!(b.add("a", EntryKind::Data, vec![]).unwrap_err(), BuildError::DuplicateName { name: "a".into() });
        for i in 1..MAX_ENTRIES {
            b.add(&format!("e{i}"), EntryKind::Data, vec![]).unwrap();
        }
        assert_eq!(
            b.add("last", EntryKind::Data, vec![]).unwrap_err(),
            BuildError::TooManyEntries { name: "last".into(), max: 256 }
        );
        assert_eq!(Bundle::parse(&b.build()).unwrap().len(), MAX_ENTRIES);
    }

    #[test]
    fn random_corruption_never_panics() {
        let good = sample();
        // xorshift64: deterministic, so a failure reproduces.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut accepted = 0;
        for _ in 0..5000 {
            let mut bytes = good.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            // Half the time, fix the checksums so the deeper checks see the damage too.
            let count = get_u32(&bytes, COUNT_AT) as usize;
            if next() % 2 == 0 && count <= MAX_ENTRIES && HEADER_LEN + count * ENTRY_LEN <= bytes.len() {
                reseal(&mut bytes);
            }
            if let Ok(b) = Bundle::parse(&bytes) {
                // Whatever was accepted must be self-consistent.
                accepted += 1;
                assert_eq!(b.entries().count(), b.len());
                assert!(b.entries().all(|e| crc32(e.data) == e.checksum));
            }
        }
        // Some mutations land in padding between data areas and are harmless.
        assert!(accepted > 0);
    }
}
