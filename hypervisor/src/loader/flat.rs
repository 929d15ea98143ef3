//! Flat binaries: the file is copied as it is to an address the domain's configuration
//! gives, and started at a configured entry point. For 16-bit real-mode programs (a boot
//! sector at 0x7C00, a small program at 0x1000) and raw 64-bit binaries. There is no
//! header to check, so the configured addresses are what gets validated: the same plan
//! checks as for the other formats (inside the domain's memory, entry inside the image,
//! a real-mode entry below 1 MiB, a 32-bit image below 4 GiB).

use super::plan::{self, EntryMode, LoadError, LoadPlan, Segment};
use crate::mm::addr::GuestPhysAddr;
use alloc::vec;

/// Plans copying all of `image` to `load_gpa` in a domain with `guest_mem` bytes of RAM
/// and entering it at the guest-physical `entry` in `mode`. A flat image has no bss: the
/// segment's memory size is the file size.
pub fn load<'a>(
    image: &'a [u8],
    load_gpa: GuestPhysAddr,
    entry: u64,
    mode: EntryMode,
    guest_mem: u64,
) -> Result<LoadPlan<'a>, LoadError> {
    if image.is_empty() {
        return Err(LoadError::EmptyImage);
    }
    let segment = Segment { gpa: load_gpa, data: image, mem_size: plan::len_u64(image) };
    let plan = LoadPlan { segments: vec![segment], entry, mode, multiboot: None };
    plan.validate(guest_mem)?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    const MEM_16M: u64 = 16 << 20;

    fn boot_sector() -> [u8; 512] {
        let mut s = [0xF4u8; 512]; // hlt
        s[510] = 0x55;
        s[511] = 0xAA;
        s
    }

    #[test]
    fn a_boot_sector_at_0x7c00_gives_the_exact_plan() {
        let sector = boot_sector();
        assert_eq!(
            load(&sector, GuestPhysAddr(0x7C00), 0x7C00, EntryMode::Real16, MEM_16M),
            Ok(LoadPlan {
                segments: vec![Segment { gpa: GuestPhysAddr(0x7C00), data: &sector[..], mem_size: 512 }],
                entry: 0x7C00,
                mode: EntryMode::Real16,
                multiboot: None,
            })
        );
    }

    #[test]
    fn the_entry_may_be_anywhere_in_the_image() {
        let program = [0x90u8; 0x100];
        let plan = load(&program, GuestPhysAddr(0x1000), 0x10FF, EntryMode::Real16, MEM_16M).unwrap();
        assert_eq!(plan.entry, 0x10FF);
        assert_eq!(plan.highest_gpa(), 0x1100);
    }

    #[test]
    fn an_entry_outside_the_image_is_refused() {
        let sector = boot_sector();
        for entry in [0x7BFF, 0x7E00, 0] {
            assert_eq!(
                load(&sector, GuestPhysAddr(0x7C00), entry, EntryMode::Real16, MEM_16M),
                Err(LoadError::EntryOutsideImage { entry }),
                "{entry:#x}"
            );
        }
    }

    #[test]
    fn an_empty_image_is_refused() {
        let err = load(&[], GuestPhysAddr(0x7C00), 0x7C00, EntryMode::Real16, MEM_16M).unwrap_err();
        assert_eq!(err, LoadError::EmptyImage);
        assert_eq!(err.to_string(), "the image is empty; there is nothing to load");
    }

    #[test]
    fn an_image_beyond_guest_memory_is_refused() {
        let image = [0x90u8; 0x2000];
        assert_eq!(
            load(&image, GuestPhysAddr(MEM_16M - 0x1000), MEM_16M - 0x1000, EntryMode::Long64, MEM_16M),
            Err(LoadError::SegmentBeyondMemory {
                index: 0,
                gpa: GuestPhysAddr(MEM_16M - 0x1000),
                mem_size: 0x2000,
                guest_mem: MEM_16M
            })
        );
    }

    #[test]
    fn a_load_address_near_2_pow_64_is_an_error_not_a_panic() {
        let image = [0x90u8; 100];
        assert!(matches!(
            load(&image, GuestPhysAddr(u64::MAX - 10), u64::MAX - 10, EntryMode::Long64, u64::MAX),
            Err(LoadError::SegmentBeyondMemory { .. })
        ));
    }

    #[test]
    fn a_real_mode_entry_at_or_above_1_mib_is_refused() {
        let image = [0x90u8; 0x100];
        assert_eq!(
            load(&image, GuestPhysAddr(0x10_0000), 0x10_0000, EntryMode::Real16, MEM_16M),
            Err(LoadError::RealModeEntryTooHigh { entry: 0x10_0000 })
        );
    }

    #[test]
    fn a_raw_64_bit_binary_loads_anywhere_in_memory() {
        let image = [0x90u8; 0x100];
        let plan = load(&image, GuestPhysAddr(0x20_0000), 0x20_0000, EntryMode::Long64, MEM_16M).unwrap();
        assert_eq!(plan.mode, EntryMode::Long64);
        assert_eq!(plan.segments[0].gpa, GuestPhysAddr(0x20_0000));
    }

    #[test]
    fn a_32_bit_flat_image_must_stay_below_4_gib() {
        let image = [0x90u8; 0x100];
        assert_eq!(
            load(&image, GuestPhysAddr(0xFFFF_FF80), 0xFFFF_FF80, EntryMode::Protected32, 8 << 30),
            Err(LoadError::SegmentAbove4GiB { index: 0, gpa: GuestPhysAddr(0xFFFF_FF80), mem_size: 0x100 })
        );
    }
}
