//! Flat binaries: the image is copied as is to `load_address` and started at `entry`
//! in the mode the domain configuration names (real-mode programs, raw 64-bit code).

use super::plan::LoadError;
use super::plan::{EntryMode, LoadPlan, Segment};
use crate::mm::addr::GuestPhysAddr;
use alloc::vec;

pub fn load(
    image: &[u8],
    load_gpa: GuestPhysAddr,
    entry: u64,
    mode: EntryMode,
    memory: u64,
) -> Result<LoadPlan<'_>, LoadError> {
    let plan =
        LoadPlan { segments: vec![Segment { gpa: load_gpa, data: image, mem_size: image.len() as u64 }], entry, mode };
    plan.validate(memory)?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boot_sector_like_program_loads_at_7c00() {
        let image = [0xFAu8; 512];
        let plan = load(&image, GuestPhysAddr(0x7C00), 0x7C00, EntryMode::Real16, 1 << 20).unwrap();
        assert_eq!(plan.segments[0].gpa, GuestPhysAddr(0x7C00));
        assert_eq!(plan.segments[0].mem_size, 512);
    }

    #[test]
    fn entry_outside_or_image_beyond_memory_is_refused() {
        let image = [0u8; 512];
        assert_eq!(
            load(&image, GuestPhysAddr(0x7C00), 0x9000, EntryMode::Real16, 1 << 20),
            Err(LoadError::EntryOutsideImage { entry: 0x9000 })
        );
        assert!(matches!(
            load(&image, GuestPhysAddr(u64::MAX - 100), u64::MAX - 100, EntryMode::Real16, 1 << 20),
            Err(LoadError::SegmentOutsideMemory { .. })
        ));
    }
}
