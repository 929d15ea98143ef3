//! Booting a Linux bzImage through the 64-bit boot protocol (Documentation/arch/x86/
//! boot.rst, "64-bit Boot Protocol"): where the kernel, the zero page, the command line
//! and the initial ramdisk go in a domain's memory, and the vCPU state the protocol asks
//! for. Pure: a list of (guest-physical address, bytes) to copy and the entry registers.
//!
//! The protocol's machine state: long mode with paging, an identity mapping of the
//! kernel's `init_size` from its load address, the zero page and the command line (the
//! boot area's page tables map the first 4 GiB); a GDT with flat 4 GiB descriptors at
//! `__BOOT_CS` (0x10, execute/read) and `__BOOT_DS` (0x18, read/write), CS = __BOOT_CS,
//! DS = ES = SS = __BOOT_DS; interrupts disabled; RSI = the zero page's address; entry at
//! the protected-mode kernel's load address + 0x200.

use super::boot_area;
use super::firmware;
use crate::loader::bzimage::{BzError, BzImage, ENTRY_64_OFFSET, ZERO_PAGE_SIZE, ZeroPageInput};
use alloc::vec::Vec;

/// `__BOOT_CS` and `__BOOT_DS` of arch/x86/include/asm/segment.h.
pub const BOOT_CS: u16 = 0x10;
pub const BOOT_DS: u16 = 0x18;
/// The GDT: null, unused, 64-bit code (L=1, P, DPL 0, execute/read), data (P, DPL 0,
/// read/write, 4 GiB flat), at the boot area's GDT address.
const GDT: [u64; 4] = [0, 0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF];
/// The zero page (`struct boot_params`), in the boot area after the command line (where
/// Ferrovisor's own protocol keeps its e820 map, which a Linux domain does not get).
pub const ZERO_PAGE_GPA: u64 = 0xA000;
/// The command line, NUL-terminated, inside the boot area.
pub const CMDLINE_GPA: u64 = boot_area::CMDLINE_GPA;
/// Nothing of the kernel goes below 1 MiB (the BIOS area holds the ACPI tables).
pub const LOWEST_KERNEL_GPA: u64 = 1 << 20;

/// What to copy, and how to start the boot vCPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxBoot {
    /// The GDT, the page tables, the zero page and the command line (the kernel and the
    /// ramdisk are copied from the images by the caller, at `kernel_gpa` and `initrd`).
    pub blobs: Vec<(u64, Vec<u8>)>,
    pub kernel_gpa: u64,
    /// Guest-physical address and size of the initial ramdisk.
    pub initrd: Option<(u64, u64)>,
    /// RIP: the 64-bit entry.
    pub entry: u64,
    /// RSI: the zero page.
    pub rsi: u64,
}

/// Why the kernel cannot boot in this domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinuxError {
    Kernel(BzError),
    /// The ramdisk does not fit between the decompressed kernel and the end of RAM.
    InitrdTooBig {
        len: u64,
        room: u64,
    },
    /// The command line does not fit the boot area.
    CmdlineTooLong {
        len: usize,
        max: usize,
    },
}

impl core::fmt::Display for LinuxError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Kernel(e) => write!(f, "{e}"),
            Self::InitrdTooBig { len, room } => write!(
                f,
                "the initrd is {} KiB and only {} KiB are free above the kernel; give the domain more memory",
                len >> 10,
                room >> 10
            ),
            Self::CmdlineTooLong { len, max } => write!(f, "the command line is {len} bytes; at most {max} fit"),
        }
    }
}

impl From<BzError> for LinuxError {
    fn from(e: BzError) -> Self {
        LinuxError::Kernel(e)
    }
}

/// Lays out `kernel` with `cmdline` and a ramdisk of `initrd_len` bytes (if any) in a
/// domain of `memory` bytes. The ramdisk goes at the top of RAM (page aligned), as boot
/// loaders put it, above everything the kernel needs while decompressing.
pub fn plan(
    kernel: &BzImage<'_>,
    memory: u64,
    cmdline: &str,
    initrd_len: Option<u64>,
) -> Result<LinuxBoot, LinuxError> {
    if cmdline.len() > boot_area::CMDLINE_MAX {
        return Err(LinuxError::CmdlineTooLong { len: cmdline.len(), max: boot_area::CMDLINE_MAX });
    }
    let kernel_gpa = kernel.load_address(memory, LOWEST_KERNEL_GPA)?;
    let kernel_end = kernel_gpa + u64::from(kernel.header.init_size).max(kernel.kernel.len() as u64);
    let initrd = match initrd_len {
        None | Some(0) => None,
        Some(len) => {
            let room = memory.saturating_sub(kernel_end);
            let at = memory.checked_sub(len).map(|a| a & !0xFFF).filter(|&a| a >= kernel_end);
            match at {
                Some(at) => Some((at, len)),
                None => return Err(LinuxError::InitrdTooBig { len, room }),
            }
        }
    };
    let e820 = firmware::e820(memory);
    let zero_page = kernel.zero_page(&ZeroPageInput {
        e820: &e820,
        cmdline_gpa: CMDLINE_GPA,
        cmdline_len: cmdline.len(),
        initrd,
        rsdp: firmware::rsdp_gpa(memory),
    })?;
    let mut blobs = Vec::new();
    blobs.push((boot_area::GDT_GPA, GDT.iter().flat_map(|d| d.to_le_bytes()).collect()));
    blobs.extend(boot_area::page_tables(boot_area::BootArea::USUAL));
    blobs.push((ZERO_PAGE_GPA, zero_page.to_vec()));
    let mut c = cmdline.as_bytes().to_vec();
    c.push(0);
    blobs.push((CMDLINE_GPA, c));
    Ok(LinuxBoot { blobs, kernel_gpa, initrd, entry: kernel_gpa + ENTRY_64_OFFSET, rsi: ZERO_PAGE_GPA })
}

/// The GDT's size for GDTR.limit.
pub const GDT_LIMIT: u32 = (GDT.len() * 8 - 1) as u32;

const _: () = assert!(
    ZERO_PAGE_GPA > CMDLINE_GPA + boot_area::CMDLINE_MAX as u64
        && ZERO_PAGE_GPA + ZERO_PAGE_SIZE as u64 <= boot_area::BOOT_AREA_END
        && ZERO_PAGE_GPA >= boot_area::PD_GPA + 4 * 4096
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::bzimage::parse;

    const MIB: u64 = 1 << 20;

    /// The same synthetic 64-bit bzImage as the parser's tests: preferred at 16 MiB,
    /// 32 MiB to decompress in, relocatable at 2 MiB.
    fn image() -> Vec<u8> {
        let mut b = vec![0u8; 5 * 512 + 8192];
        b[0x1F1] = 4;
        b[0x1FE..0x200].copy_from_slice(&0xAA55u16.to_le_bytes());
        b[0x200] = 0xEB;
        b[0x201] = 0x6A;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
        b[0x211] = 1;
        b[0x230..0x234].copy_from_slice(&(2 * MIB as u32).to_le_bytes());
        b[0x234] = 1;
        b[0x236..0x238].copy_from_slice(&3u16.to_le_bytes());
        b[0x238..0x23C].copy_from_slice(&2047u32.to_le_bytes());
        b[0x258..0x260].copy_from_slice(&(16 * MIB).to_le_bytes());
        b[0x260..0x264].copy_from_slice(&(32 * MIB as u32).to_le_bytes());
        b
    }

    fn blob(boot: &LinuxBoot, gpa: u64) -> &[u8] {
        &boot.blobs.iter().find(|(a, _)| *a == gpa).unwrap().1
    }

    #[test]
    fn the_kernel_zero_page_command_line_and_ramdisk_go_where_the_protocol_wants() {
        let img = image();
        let bz = parse(&img).unwrap();
        let boot = plan(&bz, 256 * MIB, "console=ttyS0", Some(3 * MIB + 5)).unwrap();
        assert_eq!(boot.kernel_gpa, 16 * MIB);
        assert_eq!(boot.entry, 16 * MIB + 0x200);
        assert_eq!(boot.rsi, ZERO_PAGE_GPA);
        let (initrd, len) = boot.initrd.unwrap();
        assert_eq!(len, 3 * MIB + 5);
        assert_eq!(initrd % 4096, 0);
        assert!(initrd + len <= 256 * MIB && initrd >= 48 * MIB, "{initrd:#x}");
        assert_eq!(blob(&boot, CMDLINE_GPA), b"console=ttyS0\0");
        let zp = blob(&boot, ZERO_PAGE_GPA);
        assert_eq!(zp.len(), 4096);
        assert_eq!(u32::from_le_bytes(zp[0x228..0x22C].try_into().unwrap()), CMDLINE_GPA as u32);
        assert_eq!(u32::from_le_bytes(zp[0x218..0x21C].try_into().unwrap()), initrd as u32);
        assert_eq!(zp[0x1E8] as usize, firmware::e820(256 * MIB).len());
        assert_eq!(u64::from_le_bytes(zp[0x70..0x78].try_into().unwrap()), firmware::rsdp_gpa(256 * MIB).unwrap());
        // __BOOT_CS at 0x10 is 64-bit code, __BOOT_DS at 0x18 flat data.
        let gdt = blob(&boot, boot_area::GDT_GPA);
        assert_eq!(u64::from_le_bytes(gdt[16..24].try_into().unwrap()), 0x00AF_9B00_0000_FFFF);
        assert_eq!(u64::from_le_bytes(gdt[24..32].try_into().unwrap()), 0x00CF_9300_0000_FFFF);
    }

    #[test]
    fn blobs_do_not_overlap_each_other_the_kernel_or_the_ramdisk() {
        let img = image();
        let bz = parse(&img).unwrap();
        let boot = plan(&bz, 128 * MIB, "quiet", Some(MIB)).unwrap();
        let mut ranges: Vec<(u64, u64)> = boot.blobs.iter().map(|(a, b)| (*a, a + b.len() as u64)).collect();
        ranges.push((boot.kernel_gpa, boot.kernel_gpa + 32 * MIB));
        let (i, n) = boot.initrd.unwrap();
        ranges.push((i, i + n));
        ranges.sort();
        for w in ranges.windows(2) {
            assert!(w[0].1 <= w[1].0, "{:x?} overlaps {:x?}", w[0], w[1]);
        }
    }

    #[test]
    fn what_does_not_fit_is_refused_with_what_to_change() {
        let img = image();
        let bz = parse(&img).unwrap();
        // 16 MiB + 32 MiB of decompression leave 16 MiB of a 64 MiB domain.
        assert_eq!(
            plan(&bz, 64 * MIB, "", Some(17 * MIB)),
            Err(LinuxError::InitrdTooBig { len: 17 * MIB, room: 16 * MIB })
        );
        assert!(plan(&bz, 64 * MIB, "", Some(15 * MIB)).is_ok());
        assert!(matches!(plan(&bz, 32 * MIB, "", None), Err(LinuxError::Kernel(BzError::TooBig { .. }))));
        let long = "x".repeat(boot_area::CMDLINE_MAX + 1);
        assert!(matches!(plan(&bz, 256 * MIB, &long, None), Err(LinuxError::CmdlineTooLong { .. })));
        let msg = alloc::format!("{}", LinuxError::InitrdTooBig { len: 17 * MIB, room: 16 * MIB });
        assert!(msg.contains("more memory"), "{msg}");
    }
}
