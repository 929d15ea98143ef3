//! A model of QEMU's firmware configuration device (fw_cfg) on its x86 I/O ports, as QEMU's
//! "docs/specs/fw_cfg.rst" ("QEMU Firmware Configuration (fw_cfg) Device") describes the
//! guest-side interface. Firmware and the Linux `qemu_fw_cfg` driver use it to learn the CPU
//! count, the RAM size and named blobs ("files"). It touches no hardware: the exit handler
//! passes port accesses to [`FwCfg::read`] and [`FwCfg::write`].
//!
//! Modelled:
//! - The selector register at 0x510 (16-bit, little-endian on I/O ports): writing it selects
//!   an item and resets the data offset to 0.
//! - The data register at 0x511 (8-bit): each byte read returns the byte at the data offset
//!   and advances it; "if the offset is past the end of the item, 0x00 is returned".
//! - The items FW_CFG_SIGNATURE (0x0000, "QEMU"), FW_CFG_ID (0x0001, feature bitmap),
//!   FW_CFG_RAM_SIZE (0x0003), FW_CFG_NB_CPUS (0x0005), FW_CFG_MAX_CPUS (0x000F), and
//!   FW_CFG_FILE_DIR (0x0019) with the files added by [`FwCfg::add_file`] at selectors
//!   0x0020 and up. Integer items are little-endian; the file directory is big-endian, as
//!   the spec says.
//!
//! Choices where the spec leaves room, following QEMU's `hw/nvram/fw_cfg.c` where it decides:
//! - FW_CFG_ID reports only the traditional interface (bit 0). DMA (bit 1, ports 0x514..)
//!   is not offered, so a guest never uses the DMA address register.
//! - Writes to the data register are ignored: every item is read-only ("As of QEMU v2.4,
//!   writes to the fw_cfg data register are no longer supported"), so bit 14 of the selector
//!   (the write channel) is simply masked off, as QEMU does when it looks an item up.
//! - Bit 15 of the selector picks the architecture-local items (ACPI tables, E820 and so on
//!   on x86 QEMU). There are none here: such selectors read zeros, like any selector without
//!   an item ("unknown selector": zero-length item).
//! - Only 16-bit writes to 0x510 select (QEMU accepts only that width); 8- and 32-bit writes
//!   there are ignored.
//! - Only 8-bit reads of 0x511 read data. Wider reads of 0x511 return all ones and do not
//!   advance the offset (QEMU rejects them as invalid accesses).
//! - The selector register is write-only in the spec; reading 0x510 returns the current
//!   selector (masked to the access size) without side effects, which helps debugging and
//!   cannot confuse a guest that never reads it.
//! - Any other port reads all ones (masked to the access size) and ignores writes.

use alloc::vec::Vec;

/// The selector (control) register: 16-bit writes select an item.
pub const SELECTOR_PORT: u16 = 0x510;
/// The data register: 8-bit reads return the selected item's bytes.
pub const DATA_PORT: u16 = 0x511;

/// Well-known selector keys (QEMU's `include/standard-headers/linux/qemu_fw_cfg.h`).
pub mod key {
    pub const SIGNATURE: u16 = 0x0000;
    pub const ID: u16 = 0x0001;
    pub const RAM_SIZE: u16 = 0x0003;
    pub const NB_CPUS: u16 = 0x0005;
    pub const MAX_CPUS: u16 = 0x000F;
    pub const FILE_DIR: u16 = 0x0019;
    /// Selector of the first named file.
    pub const FILE_FIRST: u16 = 0x0020;
    /// Selector bit 14: write channel (ignored; all items are read-only).
    pub const WRITE_CHANNEL: u16 = 0x4000;
    /// Selector bit 15: architecture-local items (none here).
    pub const ARCH_LOCAL: u16 = 0x8000;
    /// The bits that index an item.
    pub const ENTRY_MASK: u16 = !(WRITE_CHANNEL | ARCH_LOCAL);
}

/// FW_CFG_ID bit 0: the traditional (selector/data port) interface.
pub const ID_TRADITIONAL: u32 = 1 << 0;
/// FW_CFG_ID bit 1: the DMA interface (not offered).
pub const ID_DMA: u32 = 1 << 1;
/// The signature item's contents.
pub const SIGNATURE: [u8; 4] = *b"QEMU";
/// A file name is at most 55 bytes: the directory's 56-byte field keeps a terminating NUL.
pub const MAX_FILE_NAME: usize = 55;
/// Number of file selectors (0x0020..=0x003F), QEMU's default FW_CFG_FILE_SLOTS (0x20).
pub const MAX_FILES: usize = 32;
/// Size of one `FWCfgFile` directory entry: be32 size, be16 select, be16 reserved,
/// char name[56].
pub const DIR_ENTRY_SIZE: usize = 64;
const DIR_NAME_OFFSET: usize = 8;
const DIR_NAME_SIZE: usize = 56;

struct File {
    /// NUL-padded, as it appears in the directory.
    name: [u8; DIR_NAME_SIZE],
    data: Vec<u8>,
}

/// One fw_cfg device.
pub struct FwCfg {
    cpus: u16,
    ram_bytes: u64,
    files: Vec<File>,
    /// The last value written to the selector, as the guest wrote it.
    selector: u16,
    /// Offset of the next data byte within the selected item. Stops at the item's end, as
    /// in QEMU, so it never overflows however often the guest reads.
    offset: u32,
}

impl FwCfg {
    /// A device reporting `cpus` CPUs (both present and maximum: there is no CPU hotplug) and
    /// `ram_bytes` of RAM, with an empty file directory. The selector starts at 0, the
    /// signature.
    pub fn new(cpus: u16, ram_bytes: u64) -> Self {
        FwCfg { cpus, ram_bytes, files: Vec::new(), selector: key::SIGNATURE, offset: 0 }
    }

    /// Adds a named file at the next selector (0x0020, 0x0021, ...), listed in the file
    /// directory in the order added. Returns false, adding nothing, when the name is empty,
    /// longer than [`MAX_FILE_NAME`] bytes, contains a NUL, is already present, when all
    /// [`MAX_FILES`] slots are used, or when `data` is larger than the directory's 32-bit size
    /// field can describe.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> bool {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() > MAX_FILE_NAME || bytes.contains(&0) {
            return false;
        }
        if self.files.len() >= MAX_FILES || u32::try_from(data.len()).is_err() {
            return false;
        }
        let mut padded = [0u8; DIR_NAME_SIZE];
        if let Some(dst) = padded.get_mut(..bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        if self.files.iter().any(|f| f.name == padded) {
            return false;
        }
        self.files.push(File { name: padded, data });
        true
    }

    /// Guest read of `size` bytes (1, 2 or 4) at `port`.
    pub fn read(&mut self, port: u16, size: u8) -> u32 {
        match port {
            SELECTOR_PORT => mask(u32::from(self.selector), size),
            DATA_PORT if size == 1 => u32::from(self.read_data_byte()),
            _ => mask(u32::MAX, size),
        }
    }

    /// Guest write of `size` bytes (1, 2 or 4) at `port`.
    pub fn write(&mut self, port: u16, size: u8, value: u32) {
        if port == SELECTOR_PORT && size == 2 {
            self.selector = value as u16;
            self.offset = 0;
        }
        // Data writes and every other width or port: ignored (read-only items).
    }

    /// The currently selected key.
    pub fn selector(&self) -> u16 {
        self.selector
    }

    /// The number of named files.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    fn read_data_byte(&mut self) -> u8 {
        let Ok(offset) = usize::try_from(self.offset) else { return 0 };
        match self.item_byte(self.selector, offset) {
            Some(byte) => {
                // Only advance inside the item; past its end the offset stays put.
                self.offset = self.offset.saturating_add(1);
                byte
            }
            None => 0,
        }
    }

    /// Byte `offset` of the item selected by `selector`, or None past its end (or for an item
    /// that does not exist, which has length 0). Computed on the fly so that no item needs to
    /// be materialized, not even the directory.
    fn item_byte(&self, selector: u16, offset: usize) -> Option<u8> {
        if selector & key::ARCH_LOCAL != 0 {
            return None;
        }
        match selector & key::ENTRY_MASK {
            key::SIGNATURE => SIGNATURE.get(offset).copied(),
            key::ID => ID_TRADITIONAL.to_le_bytes().get(offset).copied(),
            key::RAM_SIZE => self.ram_bytes.to_le_bytes().get(offset).copied(),
            key::NB_CPUS | key::MAX_CPUS => self.cpus.to_le_bytes().get(offset).copied(),
            key::FILE_DIR => self.directory_byte(offset),
            k if k >= key::FILE_FIRST => {
                let index = usize::from(k - key::FILE_FIRST);
                self.files.get(index)?.data.get(offset).copied()
            }
            _ => None,
        }
    }

    /// Byte `offset` of `struct FWCfgFiles { be32 count; struct FWCfgFile f[count]; }`.
    fn directory_byte(&self, offset: usize) -> Option<u8> {
        let count = self.files.len() as u32;
        if offset < 4 {
            return count.to_be_bytes().get(offset).copied();
        }
        let rel = offset - 4;
        let index = rel / DIR_ENTRY_SIZE;
        let within = rel % DIR_ENTRY_SIZE;
        let file = self.files.get(index)?;
        let select = key::FILE_FIRST.wrapping_add(index as u16);
        match within {
            0..=3 => (file.data.len() as u32).to_be_bytes().get(within).copied(),
            4..=5 => select.to_be_bytes().get(within - 4).copied(),
            // The reserved be16.
            6..=7 => Some(0),
            _ => file.name.get(within - DIR_NAME_OFFSET).copied(),
        }
    }
}

fn mask(v: u32, size: u8) -> u32 {
    match size {
        1 => v & 0xFF,
        2 => v & 0xFFFF,
        _ => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn select(f: &mut FwCfg, k: u16) {
        f.write(SELECTOR_PORT, 2, u32::from(k));
    }

    fn read_bytes(f: &mut FwCfg, n: usize) -> Vec<u8> {
        (0..n).map(|_| f.read(DATA_PORT, 1) as u8).collect()
    }

    #[test]
    fn signature_reads_qemu_byte_by_byte_after_selecting_0() {
        let mut f = FwCfg::new(1, 0);
        select(&mut f, 0x0000);
        assert_eq!(f.read(DATA_PORT, 1), u32::from(b'Q'));
        assert_eq!(f.read(DATA_PORT, 1), u32::from(b'E'));
        assert_eq!(f.read(DATA_PORT, 1), u32::from(b'M'));
        assert_eq!(f.read(DATA_PORT, 1), u32::from(b'U'));
        assert_eq!(f.read(DATA_PORT, 1), 0);
    }

    #[test]
    fn the_signature_is_selected_at_power_on() {
        let mut f = FwCfg::new(1, 0);
        assert_eq!(read_bytes(&mut f, 4), b"QEMU");
    }

    #[test]
    fn reselecting_an_item_restarts_it_from_offset_0() {
        let mut f = FwCfg::new(1, 0);
        select(&mut f, 0);
        read_bytes(&mut f, 2);
        select(&mut f, 0);
        assert_eq!(read_bytes(&mut f, 4), b"QEMU");
    }

    #[test]
    fn id_reports_the_traditional_interface_without_dma() {
        let mut f = FwCfg::new(1, 0);
        select(&mut f, 0x0001);
        assert_eq!(read_bytes(&mut f, 5), [0x01, 0, 0, 0, 0]);
    }

    #[test]
    fn cpu_counts_are_16_bit_little_endian() {
        let mut f = FwCfg::new(0x0102, 0);
        select(&mut f, 0x0005);
        assert_eq!(read_bytes(&mut f, 3), [0x02, 0x01, 0x00]);
        select(&mut f, 0x000F);
        assert_eq!(read_bytes(&mut f, 3), [0x02, 0x01, 0x00]);
    }

    #[test]
    fn ram_size_is_64_bit_little_endian() {
        let mut f = FwCfg::new(1, 0x0000_0001_2345_6789);
        select(&mut f, 0x0003);
        assert_eq!(read_bytes(&mut f, 9), [0x89, 0x67, 0x45, 0x23, 0x01, 0, 0, 0, 0]);
    }

    #[test]
    fn an_empty_file_directory_is_a_big_endian_count_of_zero() {
        let mut f = FwCfg::new(1, 0);
        select(&mut f, 0x0019);
        assert_eq!(read_bytes(&mut f, 6), [0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn file_directory_lists_files_in_big_endian_with_nul_padded_names() {
        let mut f = FwCfg::new(1, 0);
        assert!(f.add_file("etc/boot-fail-wait", vec![1, 2, 3]));
        assert!(f.add_file("opt/x", vec![0xAA; 0x0102]));
        select(&mut f, 0x0019);
        let dir = read_bytes(&mut f, 4 + 2 * 64 + 4);
        assert_eq!(dir[0..4], [0, 0, 0, 2]);
        let e0 = &dir[4..68];
        assert_eq!(e0[0..4], [0, 0, 0, 3], "size");
        assert_eq!(e0[4..6], [0x00, 0x20], "select");
        assert_eq!(e0[6..8], [0, 0], "reserved");
        assert_eq!(&e0[8..8 + 18], b"etc/boot-fail-wait");
        assert!(e0[8 + 18..64].iter().all(|b| *b == 0));
        let e1 = &dir[68..132];
        assert_eq!(e1[0..4], [0, 0, 0x01, 0x02]);
        assert_eq!(e1[4..6], [0x00, 0x21]);
        assert_eq!(&e1[8..13], b"opt/x");
        assert_eq!(dir[132..], [0, 0, 0, 0], "past the end");
    }

    #[test]
    fn files_are_read_through_their_directory_selector() {
        let mut f = FwCfg::new(1, 0);
        f.add_file("a", vec![9, 8]);
        f.add_file("b", vec![7, 6, 5]);
        select(&mut f, 0x0021);
        assert_eq!(read_bytes(&mut f, 4), [7, 6, 5, 0]);
        select(&mut f, 0x0020);
        assert_eq!(read_bytes(&mut f, 3), [9, 8, 0]);
        select(&mut f, 0x0022);
        assert_eq!(read_bytes(&mut f, 2), [0, 0]);
    }

    #[test]
    fn add_file_rejects_bad_names_duplicates_and_a_full_directory() {
        let mut f = FwCfg::new(1, 0);
        assert!(!f.add_file("", vec![]));
        assert!(!f.add_file(&"n".repeat(56), vec![]));
        assert!(f.add_file(&"n".repeat(55), vec![]));
        assert!(!f.add_file("nul\0inside", vec![]));
        assert!(!f.add_file(&"n".repeat(55), vec![1]), "duplicate");
        for i in 1..MAX_FILES {
            assert!(f.add_file(&std::format!("f{i}"), vec![]));
        }
        assert!(!f.add_file("one-too-many", vec![]));
        assert_eq!(f.file_count(), 32);
    }

    #[test]
    fn a_55_byte_name_keeps_its_terminating_nul_in_the_directory() {
        let mut f = FwCfg::new(1, 0);
        let name = "x".repeat(55);
        f.add_file(&name, vec![]);
        select(&mut f, 0x0019);
        let dir = read_bytes(&mut f, 68);
        assert_eq!(&dir[12..67], name.as_bytes());
        assert_eq!(dir[67], 0);
    }

    #[test]
    fn reading_past_the_end_gives_zeros_indefinitely() {
        let mut f = FwCfg::new(4, 1 << 30);
        select(&mut f, 0x0005);
        read_bytes(&mut f, 2);
        assert!(read_bytes(&mut f, 1000).iter().all(|b| *b == 0));
        // The offset stopped at the end: reselecting is still the only way back.
        select(&mut f, 0x0005);
        assert_eq!(read_bytes(&mut f, 2), [4, 0]);
    }

    #[test]
    fn unknown_and_arch_local_selectors_read_zeros() {
        let mut f = FwCfg::new(2, 1 << 30);
        for k in [0x0002u16, 0x0004, 0x0010, 0x001F, 0x0020, 0x3FFF, 0x8000, 0x8003, 0xFFFF] {
            select(&mut f, k);
            assert_eq!(read_bytes(&mut f, 8), [0; 8], "selector {k:#x}");
        }
    }

    #[test]
    fn the_write_channel_bit_is_ignored_for_reads_and_data_writes_change_nothing() {
        let mut f = FwCfg::new(3, 0);
        select(&mut f, 0x4005);
        f.write(DATA_PORT, 1, 0x77);
        assert_eq!(read_bytes(&mut f, 2), [3, 0]);
    }

    #[test]
    fn only_16_bit_selector_writes_select() {
        let mut f = FwCfg::new(3, 0);
        select(&mut f, 0x0005);
        f.write(SELECTOR_PORT, 1, 0x00);
        f.write(SELECTOR_PORT, 4, 0x0000_0000);
        assert_eq!(f.selector(), 0x0005);
        assert_eq!(read_bytes(&mut f, 1), [3]);
    }

    #[test]
    fn selector_reads_return_the_selector_without_side_effects() {
        let mut f = FwCfg::new(3, 0);
        select(&mut f, 0x1234);
        assert_eq!(f.read(SELECTOR_PORT, 2), 0x1234);
        assert_eq!(f.read(SELECTOR_PORT, 1), 0x34);
        select(&mut f, 0x0000);
        f.read(SELECTOR_PORT, 4);
        assert_eq!(read_bytes(&mut f, 1), [b'Q']);
    }

    #[test]
    fn wide_data_reads_return_all_ones_and_do_not_advance() {
        let mut f = FwCfg::new(1, 0);
        select(&mut f, 0);
        assert_eq!(f.read(DATA_PORT, 2), 0xFFFF);
        assert_eq!(f.read(DATA_PORT, 4), 0xFFFF_FFFF);
        assert_eq!(read_bytes(&mut f, 1), [b'Q']);
    }

    #[test]
    fn other_ports_read_all_ones_masked_to_the_size_and_ignore_writes() {
        let mut f = FwCfg::new(1, 0);
        for port in [0x50Fu16, 0x512, 0x514, 0x518, 0x0000, 0xFFFF] {
            assert_eq!(f.read(port, 1), 0xFF);
            assert_eq!(f.read(port, 2), 0xFFFF);
            assert_eq!(f.read(port, 4), 0xFFFF_FFFF);
            f.write(port, 2, 0x0005);
        }
        assert_eq!(f.selector(), 0);
    }

    #[test]
    fn port_constants_match_qemu_on_x86() {
        assert_eq!(SELECTOR_PORT, 0x510);
        assert_eq!(DATA_PORT, 0x511);
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    #[test]
    fn random_accesses_never_panic_and_data_matches_the_selected_item() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut f = FwCfg::new(8, 0x8000_0000);
        f.add_file("etc/a", vec![0x11; 100]);
        f.add_file("etc/b", Vec::new());
        let mut expected_offset = 0usize;
        for _ in 0..200_000 {
            let r = rng.next();
            let port = 0x50E + (r >> 8) as u16 % 8;
            let size = [1u8, 2, 4, 0, 3][(r >> 16) as usize % 5];
            let value = (r >> 32) as u32;
            match r % 4 {
                0 => {
                    // Biased towards the keys that exist, so that real items are walked.
                    let k = [0x0000u16, 0x0001, 0x0003, 0x0005, 0x000F, 0x0019, 0x0020, 0x0021, value as u16]
                        [(r >> 24) as usize % 9];
                    f.write(SELECTOR_PORT, 2, u32::from(k));
                    expected_offset = 0;
                }
                1 => {
                    let sel = f.selector();
                    let v = f.read(DATA_PORT, 1);
                    assert!(v <= 0xFF);
                    let want = f.item_byte(sel, expected_offset);
                    assert_eq!(v, u32::from(want.unwrap_or(0)));
                    if want.is_some() {
                        expected_offset += 1;
                    }
                }
                2 => {
                    let advances =
                        port == DATA_PORT && size == 1 && f.item_byte(f.selector(), expected_offset).is_some();
                    let v = f.read(port, size);
                    assert!(matches!(size, 0 | 3 | 4) || v < 1 << (8 * u32::from(size)));
                    if advances {
                        expected_offset += 1;
                    }
                }
                _ => {
                    f.write(port, size, value);
                    if port == SELECTOR_PORT && size == 2 {
                        expected_offset = 0;
                    }
                }
            }
        }
    }
}
