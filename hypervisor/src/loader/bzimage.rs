//! Linux's x86 boot protocol (the kernel's Documentation/arch/x86/boot.rst): a bzImage's
//! setup header, where its protected-mode kernel goes, and the zero page (`struct
//! boot_params`) a 64-bit boot loader hands it.
//!
//! A bzImage is the real-mode setup code (`setup_sects` 512-byte sectors after the boot
//! sector; the setup header sits at offset 0x1F1 of the boot sector) followed by the
//! protected-mode kernel, which decompresses itself. We use the 64-bit entry: boot
//! protocol 2.12 or later with `XLF_KERNEL_64`, entered at the load address + 0x200 in
//! long mode with identity paging, RSI pointing at the zero page (boot.rst "64-bit Boot
//! Protocol"). The setup code is never run.
//!
//! The image is hostile input like every bundle entry: every offset and size comes from
//! it, so reads are bounds-checked and arithmetic is checked; nothing here panics.

use super::plan::{u8_at, u16_at, u32_at, u64_at};
use crate::domain::firmware::E820Entry;

/// "HdrS" at 0x202: the boot protocol's signature (version 2.00 and later).
const HEADER_MAGIC: u32 = 0x5372_6448;
/// The boot sector's 0xAA55 at 0x1FE.
const BOOT_FLAG: u16 = 0xAA55;
/// The oldest protocol with the 64-bit entry and `xloadflags`.
pub const MIN_VERSION: u16 = 0x020C;
/// Where a protocol 2.12 setup header ends, at the least.
const MIN_HEADER_END: usize = 0x268;
/// The 64-bit entry point, relative to where the protected-mode kernel is loaded.
pub const ENTRY_64_OFFSET: u64 = 0x200;
/// The zero page is one page.
pub const ZERO_PAGE_SIZE: usize = 4096;
/// `boot_params.e820_table` holds at most this many entries (E820_MAX_ENTRIES_ZEROPAGE).
pub const ZERO_PAGE_E820_MAX: usize = 128;

/// Offsets in the image / zero page (boot.rst "The real-mode kernel header", and
/// arch/x86/include/uapi/asm/bootparam.h for the fields outside the header).
mod at {
    pub const ACPI_RSDP_ADDR: usize = 0x070;
    pub const EXT_RAMDISK_IMAGE: usize = 0x0C0;
    pub const EXT_RAMDISK_SIZE: usize = 0x0C4;
    pub const EXT_CMD_LINE_PTR: usize = 0x0C8;
    pub const E820_ENTRIES: usize = 0x1E8;
    pub const SETUP_HEADER: usize = 0x1F1;
    pub const SETUP_SECTS: usize = 0x1F1;
    pub const SYSSIZE: usize = 0x1F4;
    pub const BOOT_FLAG: usize = 0x1FE;
    pub const JUMP: usize = 0x200;
    pub const HEADER: usize = 0x202;
    pub const VERSION: usize = 0x206;
    pub const TYPE_OF_LOADER: usize = 0x210;
    pub const LOADFLAGS: usize = 0x211;
    pub const RAMDISK_IMAGE: usize = 0x218;
    pub const RAMDISK_SIZE: usize = 0x21C;
    pub const CMD_LINE_PTR: usize = 0x228;
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    pub const RELOCATABLE_KERNEL: usize = 0x234;
    pub const XLOADFLAGS: usize = 0x236;
    pub const CMDLINE_SIZE: usize = 0x238;
    pub const PREF_ADDRESS: usize = 0x258;
    pub const INIT_SIZE: usize = 0x260;
    pub const E820_TABLE: usize = 0x2D0;
}

/// `loadflags` bit 0: the protected-mode kernel is loaded at 0x100000 or above.
const LOADED_HIGH: u8 = 1 << 0;
/// `xloadflags` bit 0: the kernel has the 64-bit entry at +0x200.
const XLF_KERNEL_64: u16 = 1 << 0;
/// `xloadflags` bit 1: the kernel, boot_params, command line and ramdisk may be above 4 GiB.
const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 1 << 1;
/// `type_of_loader` 0xFF: "undefined" loader (boot.rst: no assigned ID).
const LOADER_UNDEFINED: u8 = 0xFF;

/// What the setup header says, as far as a 64-bit loader needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupHeader {
    /// Sectors of real-mode setup code after the boot sector (0 means 4).
    pub setup_sects: u8,
    /// Protocol version, major in the high byte.
    pub version: u16,
    pub loadflags: u8,
    pub xloadflags: u16,
    /// The protected-mode kernel's alignment, if it is relocatable (a power of two).
    pub kernel_alignment: u32,
    pub relocatable: bool,
    /// Longest command line the kernel accepts, without the terminating zero.
    pub cmdline_size: u32,
    /// Where the kernel would like to be loaded (it runs fastest there).
    pub pref_address: u64,
    /// Memory the kernel needs from its load address while it decompresses itself.
    pub init_size: u32,
}

/// A parsed bzImage: its header, the protected-mode kernel, and the header bytes as they
/// are in the image (the zero page starts from them).
#[derive(Debug, Clone, Copy)]
pub struct BzImage<'a> {
    pub header: SetupHeader,
    /// The protected-mode kernel: everything after the setup sectors.
    pub kernel: &'a [u8],
    /// Image bytes 0x1F1 .. end of the header (0x202 + the jump's offset byte).
    header_bytes: &'a [u8],
}

/// Why a bzImage cannot be booted; each says what is wrong with the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BzError {
    /// Shorter than the boot sector and header, or than its setup sectors say.
    Truncated,
    /// No 0xAA55 boot flag or no "HdrS": not a Linux kernel image.
    NotBzImage,
    /// Boot protocol older than 2.12: no 64-bit entry.
    TooOld { version: u16 },
    /// `XLF_KERNEL_64` clear: a 32-bit kernel.
    Not64Bit,
    /// The kernel's memory needs do not fit the domain.
    TooBig { need: u64, memory: u64 },
    /// A relocatable kernel with an alignment that is not a power of two.
    BadAlignment { alignment: u32 },
    /// The command line is longer than the kernel's `cmdline_size`.
    CmdlineTooLong { len: usize, max: u32 },
}

impl core::fmt::Display for BzError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Truncated => f.write_str("the bzImage is truncated (shorter than its header says)"),
            Self::NotBzImage => f.write_str("not a Linux bzImage (no 0xAA55 boot flag or \"HdrS\" header)"),
            Self::TooOld { version } => write!(
                f,
                "boot protocol {}.{:02} is older than 2.12; this loader needs a kernel with the 64-bit entry",
                version >> 8,
                version & 0xFF
            ),
            Self::Not64Bit => {
                f.write_str("the kernel has no 64-bit entry point (XLF_KERNEL_64 clear): use a 64-bit kernel")
            }
            Self::TooBig { need, memory } => write!(
                f,
                "the kernel needs memory up to {:#x} while decompressing and the domain has {} MiB; give it more memory",
                need,
                memory >> 20
            ),
            Self::BadAlignment { alignment } => write!(f, "kernel_alignment {alignment:#x} is not a power of two"),
            Self::CmdlineTooLong { len, max } => {
                write!(f, "the command line is {len} bytes; this kernel takes at most {max}")
            }
        }
    }
}

fn read_u8(image: &[u8], offset: u64) -> Result<u8, BzError> {
    u8_at(image, offset).ok_or(BzError::Truncated)
}

fn read_u16(image: &[u8], offset: u64) -> Result<u16, BzError> {
    u16_at(image, offset).ok_or(BzError::Truncated)
}

fn read_u32(image: &[u8], offset: u64) -> Result<u32, BzError> {
    u32_at(image, offset).ok_or(BzError::Truncated)
}

fn read_u64(image: &[u8], offset: u64) -> Result<u64, BzError> {
    u64_at(image, offset).ok_or(BzError::Truncated)
}

/// Parses the setup header and splits off the protected-mode kernel.
pub fn parse(image: &[u8]) -> Result<BzImage<'_>, BzError> {
    if read_u16(image, at::BOOT_FLAG as u64)? != BOOT_FLAG || read_u32(image, at::HEADER as u64)? != HEADER_MAGIC {
        return Err(BzError::NotBzImage);
    }
    let version = read_u16(image, at::VERSION as u64)?;
    if version < MIN_VERSION {
        return Err(BzError::TooOld { version });
    }
    let xloadflags = read_u16(image, at::XLOADFLAGS as u64)?;
    if xloadflags & XLF_KERNEL_64 == 0 {
        return Err(BzError::Not64Bit);
    }
    let setup_sects = read_u8(image, at::SETUP_SECTS as u64)?;
    let relocatable = read_u8(image, at::RELOCATABLE_KERNEL as u64)? != 0;
    let kernel_alignment = read_u32(image, at::KERNEL_ALIGNMENT as u64)?;
    if relocatable && !kernel_alignment.is_power_of_two() {
        return Err(BzError::BadAlignment { alignment: kernel_alignment });
    }
    let header = SetupHeader {
        setup_sects,
        version,
        loadflags: read_u8(image, at::LOADFLAGS as u64)?,
        xloadflags,
        kernel_alignment,
        relocatable,
        cmdline_size: read_u32(image, at::CMDLINE_SIZE as u64)?,
        pref_address: read_u64(image, at::PREF_ADDRESS as u64)?,
        init_size: read_u32(image, at::INIT_SIZE as u64)?,
    };
    // boot.rst: "If this field is 0, the real value is 4."
    let sects = if setup_sects == 0 { 4 } else { usize::from(setup_sects) };
    let kernel_offset = (sects + 1) * 512;
    let kernel = image.get(kernel_offset..).filter(|k| !k.is_empty()).ok_or(BzError::Truncated)?;
    // The header ends where the jump at 0x200 lands: 0x202 + its 8-bit offset. A 2.12
    // header reaches at least 0x268 (handover_offset); one that ends before the fields
    // read above is not a kernel's.
    let header_end = at::HEADER + usize::from(read_u8(image, (at::JUMP + 1) as u64)?);
    if header_end < MIN_HEADER_END {
        return Err(BzError::NotBzImage);
    }
    let header_bytes = image.get(at::SETUP_HEADER..header_end.min(kernel_offset)).ok_or(BzError::Truncated)?;
    let _ = read_u32(image, at::SYSSIZE as u64)?;
    Ok(BzImage { header, kernel, header_bytes })
}

impl BzImage<'_> {
    /// Where the protected-mode kernel goes in a domain of `memory` bytes: its preferred
    /// address, or, when that is below `lowest` (what the hypervisor keeps for itself)
    /// and the kernel is relocatable, the first aligned address at or above `lowest`.
    /// The kernel must have `init_size` bytes from there inside RAM.
    pub fn load_address(&self, memory: u64, lowest: u64) -> Result<u64, BzError> {
        let h = &self.header;
        let mut addr = h.pref_address.max(0x10_0000);
        if addr < lowest && h.relocatable {
            let align = u64::from(h.kernel_alignment.max(1));
            addr = lowest.checked_next_multiple_of(align).ok_or(BzError::TooBig { need: u64::MAX, memory })?;
        }
        let size = u64::from(h.init_size).max(self.kernel.len() as u64);
        let need = addr.checked_add(size).ok_or(BzError::TooBig { need: u64::MAX, memory })?;
        if need > memory || (need > 1 << 32 && h.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G == 0) {
            return Err(BzError::TooBig { need, memory });
        }
        Ok(addr)
    }

    /// The zero page for this kernel: the image's setup header with what a boot loader
    /// fills in (loader type, command line, ramdisk), the e820 map, and the RSDP.
    pub fn zero_page(&self, boot: &ZeroPageInput<'_>) -> Result<[u8; ZERO_PAGE_SIZE], BzError> {
        if boot.cmdline_len > self.header.cmdline_size as usize {
            return Err(BzError::CmdlineTooLong { len: boot.cmdline_len, max: self.header.cmdline_size });
        }
        let mut page = [0u8; ZERO_PAGE_SIZE];
        if let Some(dst) = page.get_mut(at::SETUP_HEADER..at::SETUP_HEADER + self.header_bytes.len()) {
            dst.copy_from_slice(self.header_bytes);
        }
        put(&mut page, at::TYPE_OF_LOADER, &[LOADER_UNDEFINED]);
        put(&mut page, at::LOADFLAGS, &[self.header.loadflags | LOADED_HIGH]);
        put(&mut page, at::CMD_LINE_PTR, &(boot.cmdline_gpa as u32).to_le_bytes());
        put(&mut page, at::EXT_CMD_LINE_PTR, &((boot.cmdline_gpa >> 32) as u32).to_le_bytes());
        if let Some((gpa, size)) = boot.initrd {
            put(&mut page, at::RAMDISK_IMAGE, &(gpa as u32).to_le_bytes());
            put(&mut page, at::RAMDISK_SIZE, &(size as u32).to_le_bytes());
            put(&mut page, at::EXT_RAMDISK_IMAGE, &((gpa >> 32) as u32).to_le_bytes());
            put(&mut page, at::EXT_RAMDISK_SIZE, &((size >> 32) as u32).to_le_bytes());
        }
        if let Some(rsdp) = boot.rsdp {
            put(&mut page, at::ACPI_RSDP_ADDR, &rsdp.to_le_bytes());
        }
        let n = boot.e820.len().min(ZERO_PAGE_E820_MAX);
        put(&mut page, at::E820_ENTRIES, &[n as u8]);
        for (i, e) in boot.e820.iter().take(n).enumerate() {
            put(&mut page, at::E820_TABLE + i * E820Entry::SIZE, &e.to_bytes());
        }
        Ok(page)
    }
}

/// What the zero page tells the kernel besides its own header.
#[derive(Debug, Clone, Copy)]
pub struct ZeroPageInput<'a> {
    pub e820: &'a [E820Entry],
    pub cmdline_gpa: u64,
    /// Without the terminating zero.
    pub cmdline_len: usize,
    /// Guest-physical address and size of the initial ramdisk.
    pub initrd: Option<(u64, u64)>,
    /// Where the ACPI RSDP is (boot protocol 2.14 reads it from here).
    pub rsdp: Option<u64>,
}

fn put(page: &mut [u8; ZERO_PAGE_SIZE], offset: usize, bytes: &[u8]) {
    if let Some(dst) = page.get_mut(offset..offset + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::firmware::E820Kind;
    use crate::loader::test_rng::XorShift;

    const MIB: u64 = 1 << 20;

    /// A bzImage as a 64-bit distribution kernel has it: 4 setup sectors, protocol 2.15,
    /// relocatable at 2 MiB alignment, preferred at 16 MiB, 32 MiB to decompress in.
    fn image(kernel_len: usize) -> Vec<u8> {
        let mut b = vec![0u8; 5 * 512 + kernel_len];
        b[0x1F1] = 4;
        b[0x1F4..0x1F8].copy_from_slice(&((kernel_len / 16) as u32).to_le_bytes());
        b[0x1FE..0x200].copy_from_slice(&BOOT_FLAG.to_le_bytes());
        b[0x200] = 0xEB;
        b[0x201] = 0x6A; // header ends at 0x26C
        b[0x202..0x206].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
        b[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
        b[0x211] = LOADED_HIGH;
        b[0x230..0x234].copy_from_slice(&(2 * MIB as u32).to_le_bytes());
        b[0x234] = 1;
        b[0x236..0x238].copy_from_slice(&(XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G).to_le_bytes());
        b[0x238..0x23C].copy_from_slice(&2047u32.to_le_bytes());
        b[0x258..0x260].copy_from_slice(&(16 * MIB).to_le_bytes());
        b[0x260..0x264].copy_from_slice(&(32 * MIB as u32).to_le_bytes());
        for (i, byte) in b[5 * 512..].iter_mut().enumerate() {
            *byte = i as u8;
        }
        b
    }

    #[test]
    fn a_64_bit_bzimage_parses_with_its_kernel_after_the_setup_sectors() {
        let img = image(4096);
        let bz = parse(&img).unwrap();
        assert_eq!(bz.header.version, 0x020F);
        assert_eq!(bz.header.pref_address, 16 * MIB);
        assert_eq!(bz.header.init_size, 32 * MIB as u32);
        assert!(bz.header.relocatable);
        assert_eq!(bz.kernel.len(), 4096);
        assert_eq!(bz.kernel[1], 1, "the kernel starts right after sector 4");
        assert_eq!(bz.header_bytes.len(), 0x26C - 0x1F1);
    }

    #[test]
    fn zero_setup_sects_means_four() {
        let mut img = image(1024);
        img[0x1F1] = 0;
        assert_eq!(parse(&img).unwrap().kernel.len(), 1024);
    }

    #[test]
    fn what_is_not_a_bootable_64_bit_kernel_is_refused_with_the_reason() {
        assert_eq!(parse(&[0u8; 100]).err(), Some(BzError::Truncated));
        let mut img = image(1024);
        img[0x202] = b'X';
        assert_eq!(parse(&img).err(), Some(BzError::NotBzImage));
        let mut img = image(1024);
        img[0x1FE] = 0;
        assert_eq!(parse(&img).err(), Some(BzError::NotBzImage));
        let mut img = image(1024);
        img[0x206..0x208].copy_from_slice(&0x020Bu16.to_le_bytes());
        assert_eq!(parse(&img).err(), Some(BzError::TooOld { version: 0x020B }));
        let mut img = image(1024);
        img[0x236] = 0;
        assert_eq!(parse(&img).err(), Some(BzError::Not64Bit));
        let mut img = image(1024);
        img[0x230..0x234].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(parse(&img).err(), Some(BzError::BadAlignment { alignment: 3 }));
        let img = image(0);
        assert_eq!(parse(&img).err(), Some(BzError::Truncated), "no protected-mode kernel");
        let mut img = image(1024);
        img[0x201] = 2;
        assert_eq!(parse(&img).err(), Some(BzError::NotBzImage), "a header ending before the 2.12 fields");
        let msg = alloc::format!("{}", BzError::TooOld { version: 0x020B });
        assert!(msg.contains("2.11") && msg.contains("2.12"), "{msg}");
    }

    #[test]
    fn the_kernel_goes_to_its_preferred_address_or_the_first_aligned_one_above_ours() {
        let img = image(4096);
        let bz = parse(&img).unwrap();
        assert_eq!(bz.load_address(256 * MIB, MIB), Ok(16 * MIB));
        // Preferred address inside what the hypervisor keeps: relocated, 2 MiB aligned.
        assert_eq!(bz.load_address(256 * MIB, 17 * MIB + 5), Ok(18 * MIB));
        // 16 MiB + 32 MiB to decompress does not fit in 32 MiB.
        assert_eq!(bz.load_address(32 * MIB, MIB), Err(BzError::TooBig { need: 48 * MIB, memory: 32 * MIB }));
        let mut img = image(4096);
        img[0x234] = 0;
        let fixed = parse(&img).unwrap();
        assert_eq!(fixed.load_address(256 * MIB, 17 * MIB), Ok(16 * MIB), "not relocatable: stays");
    }

    #[test]
    fn the_zero_page_carries_the_header_the_command_line_the_ramdisk_and_the_map() {
        let img = image(4096);
        let bz = parse(&img).unwrap();
        let e820 = [
            E820Entry { addr: 0, len: 0x9_F000, kind: E820Kind::Ram },
            E820Entry { addr: MIB, len: 255 * MIB, kind: E820Kind::Ram },
        ];
        let input = ZeroPageInput {
            e820: &e820,
            cmdline_gpa: 0x2_0000,
            cmdline_len: 14,
            initrd: Some((0x1_2345_6000, 0x40_0000)),
            rsdp: Some(0xE_0000),
        };
        let page = bz.zero_page(&input).unwrap();
        let u32_at = |o: usize| u32::from_le_bytes(page[o..o + 4].try_into().unwrap());
        assert_eq!(&page[0x202..0x206], b"HdrS", "the header is copied");
        assert_eq!(u32_at(0x258), 16 * MIB as u32, "with the fields we do not touch");
        assert_eq!(page[0x210], 0xFF);
        assert_eq!(page[0x211] & LOADED_HIGH, LOADED_HIGH);
        assert_eq!(u32_at(0x228), 0x2_0000);
        assert_eq!(u32_at(0x0C8), 0);
        assert_eq!((u32_at(0x218), u32_at(0x0C0)), (0x2345_6000, 1), "ramdisk above 4 GiB in two halves");
        assert_eq!(u32_at(0x21C), 0x40_0000);
        assert_eq!(u64::from_le_bytes(page[0x70..0x78].try_into().unwrap()), 0xE_0000);
        assert_eq!(page[0x1E8], 2);
        assert_eq!(&page[0x2D0..0x2D0 + 20], &e820[0].to_bytes());
        assert_eq!(&page[0x2D0 + 20..0x2D0 + 40], &e820[1].to_bytes());
        assert_eq!(page[0x26C], 0, "nothing past the header's end comes from the image");
    }

    #[test]
    fn a_command_line_longer_than_the_kernel_takes_is_refused() {
        let img = image(4096);
        let bz = parse(&img).unwrap();
        let input = ZeroPageInput { e820: &[], cmdline_gpa: 0, cmdline_len: 2048, initrd: None, rsdp: None };
        assert_eq!(bz.zero_page(&input).err(), Some(BzError::CmdlineTooLong { len: 2048, max: 2047 }));
    }

    #[test]
    fn a_map_longer_than_the_zero_page_holds_is_cut_at_128_entries() {
        let img = image(4096);
        let bz = parse(&img).unwrap();
        let e820: Vec<E820Entry> =
            (0..200u64).map(|i| E820Entry { addr: i * MIB, len: MIB, kind: E820Kind::Ram }).collect();
        let input = ZeroPageInput { e820: &e820, cmdline_gpa: 0, cmdline_len: 0, initrd: None, rsdp: None };
        let page = bz.zero_page(&input).unwrap();
        assert_eq!(page[0x1E8], 128);
        assert_eq!(&page[0x2D0 + 127 * 20..0x2D0 + 128 * 20], &e820[127].to_bytes());
    }

    #[test]
    fn mutated_images_never_panic() {
        let base = image(2048);
        let mut rng = XorShift(0x00C0_FFEE);
        for _ in 0..20_000 {
            let mut img = base.clone();
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(0x270);
                img[i] = rng.next() as u8;
            }
            img.truncate(rng.below(base.len() + 1));
            if let Ok(bz) = parse(&img) {
                let _ = bz.load_address(rng.next(), rng.next());
                let input = ZeroPageInput {
                    e820: &[],
                    cmdline_gpa: rng.next(),
                    cmdline_len: rng.below(4096),
                    initrd: Some((rng.next(), rng.next())),
                    rsdp: None,
                };
                let _ = bz.zero_page(&input);
            }
        }
    }
}
