//! ELF64 executables (ELF-64 Object File Format 1.5): every PT_LOAD segment is loaded
//! at its physical address (p_paddr), as multiboot loaders do, since our guests start
//! with paging set up by the hypervisor (identity map, docs/guest-boot.md).

use super::plan::{EntryMode, LoadError, LoadPlan, Segment};
use crate::mm::addr::GuestPhysAddr;
use alloc::vec::Vec;

const EHDR_LEN: usize = 64;
const PHDR_LEN: usize = 56;
const MAX_PHDRS: usize = 128;
const PT_LOAD: u32 = 1;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// Parses `image` into a load plan for a domain with `memory` bytes of RAM.
pub fn load(image: &[u8], memory: u64) -> Result<LoadPlan<'_>, LoadError> {
    let header = image.get(..EHDR_LEN).ok_or(LoadError::Truncated { what: "ELF header" })?;
    if header[..4] != *b"\x7fELF" {
        return Err(LoadError::NotElf);
    }
    if header[4] != 2 {
        return Err(LoadError::WrongClass);
    }
    if header[5] != 1 {
        return Err(LoadError::WrongEndianness);
    }
    let kind = u16_at(header, 16).unwrap_or(0);
    let machine = u16_at(header, 18).unwrap_or(0);
    if machine != 62 {
        return Err(LoadError::WrongMachine { machine });
    }
    if kind != 2 {
        return Err(LoadError::NotExecutable { kind });
    }
    let entry = u64_at(header, 24).unwrap_or(0);
    let phoff = u64_at(header, 32).unwrap_or(0);
    let phentsize = usize::from(u16_at(header, 54).unwrap_or(0));
    let phnum = usize::from(u16_at(header, 56).unwrap_or(0));
    if phentsize < PHDR_LEN || phnum > MAX_PHDRS {
        return Err(LoadError::BadProgramHeaders);
    }
    let mut segments = Vec::new();
    for i in 0..phnum {
        let at = usize::try_from(phoff)
            .ok()
            .and_then(|o| o.checked_add(i * phentsize))
            .ok_or(LoadError::BadProgramHeaders)?;
        let ph = image
            .get(at..at.checked_add(PHDR_LEN).ok_or(LoadError::BadProgramHeaders)?)
            .ok_or(LoadError::BadProgramHeaders)?;
        if u32_at(ph, 0) != Some(PT_LOAD) {
            continue;
        }
        let index = segments.len();
        let offset = u64_at(ph, 8).unwrap_or(0);
        let paddr = u64_at(ph, 24).unwrap_or(0);
        let filesz = u64_at(ph, 32).unwrap_or(0);
        let memsz = u64_at(ph, 40).unwrap_or(0);
        if filesz > memsz {
            return Err(LoadError::FileSizeExceedsMemSize { index });
        }
        let data = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(filesz).ok())
            .and_then(|(o, n)| image.get(o..o.checked_add(n)?))
            .ok_or(LoadError::SegmentOutsideFile { index })?;
        segments.push(Segment { gpa: GuestPhysAddr(paddr), data, mem_size: memsz });
    }
    if segments.is_empty() {
        return Err(LoadError::NoLoadableSegment);
    }
    let plan = LoadPlan { segments, entry, mode: EntryMode::Long64 };
    plan.validate(memory)?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// An ELF64 executable with the given (offset, paddr, filesz, memsz) PT_LOADs.
    fn elf(entry: u64, segs: &[(u64, u64, u64, u64)]) -> Vec<u8> {
        let mut b = vec![0u8; 0x2000];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[6] = 1;
        b[16..18].copy_from_slice(&2u16.to_le_bytes());
        b[18..20].copy_from_slice(&62u16.to_le_bytes());
        b[24..32].copy_from_slice(&entry.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        for (i, &(off, paddr, filesz, memsz)) in segs.iter().enumerate() {
            let p = 64 + i * 56;
            b[p..p + 4].copy_from_slice(&1u32.to_le_bytes());
            b[p + 8..p + 16].copy_from_slice(&off.to_le_bytes());
            b[p + 16..p + 24].copy_from_slice(&paddr.to_le_bytes());
            b[p + 24..p + 32].copy_from_slice(&paddr.to_le_bytes());
            b[p + 32..p + 40].copy_from_slice(&filesz.to_le_bytes());
            b[p + 40..p + 48].copy_from_slice(&memsz.to_le_bytes());
        }
        b
    }

    const MEM: u64 = 16 << 20;

    #[test]
    fn two_segments_become_an_exact_plan() {
        let image = elf(0x20_0010, &[(0x1000, 0x20_0000, 0x100, 0x100), (0x1800, 0x20_1000, 0x10, 0x2000)]);
        let plan = load(&image, MEM).unwrap();
        assert_eq!(plan.entry, 0x20_0010);
        assert_eq!(plan.mode, EntryMode::Long64);
        assert_eq!(plan.segments.len(), 2);
        assert_eq!(plan.segments[1].gpa, GuestPhysAddr(0x20_1000));
        assert_eq!(plan.segments[1].data.len(), 0x10);
        assert_eq!(plan.segments[1].mem_size, 0x2000);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let image = elf(0x20_0000, &[(0x1000, 0x20_0000, 0x100, 0x100)]);
        for len in 0..0x1100 {
            assert!(load(&image[..len], MEM).is_err(), "{len}");
        }
    }

    #[test]
    fn malformed_images_get_specific_errors() {
        let good = elf(0x20_0000, &[(0x1000, 0x20_0000, 0x100, 0x100)]);
        let mut b = good.clone();
        b[4] = 1;
        assert_eq!(load(&b, MEM), Err(LoadError::WrongClass));
        let mut b = good.clone();
        b[18] = 3;
        assert_eq!(load(&b, MEM), Err(LoadError::WrongMachine { machine: 3 }));
        let mut b = good.clone();
        b[16] = 3;
        assert_eq!(load(&b, MEM), Err(LoadError::NotExecutable { kind: 3 }));
        assert_eq!(load(&elf(0x20_0000, &[]), MEM), Err(LoadError::NoLoadableSegment));
        assert_eq!(
            load(&elf(0x20_0000, &[(0x1000, 0x20_0000, 0x200, 0x100)]), MEM),
            Err(LoadError::FileSizeExceedsMemSize { index: 0 })
        );
        assert_eq!(
            load(&elf(0x20_0000, &[(0x1F00, 0x20_0000, 0x200, 0x200)]), MEM),
            Err(LoadError::SegmentOutsideFile { index: 0 })
        );
        assert!(matches!(
            load(&elf(0x20_0000, &[(0x1000, u64::MAX - 10, 0x10, 100)]), MEM),
            Err(LoadError::SegmentOutsideMemory { index: 0, .. })
        ));
        assert_eq!(
            load(&elf(0x20_0000, &[(0x1000, 0x20_0000, 0x10, 0x1000), (0x1000, 0x20_0800, 0x10, 0x10)]), MEM),
            Err(LoadError::SegmentsOverlap { first: 0, second: 1 })
        );
        assert_eq!(
            load(&elf(0x90_0000, &[(0x1000, 0x20_0000, 0x10, 0x10)]), MEM),
            Err(LoadError::EntryOutsideImage { entry: 0x90_0000 })
        );
        assert!(matches!(
            load(&elf(0x20_0000, &[(0x1000, 0x20_0000, 0x10, u64::MAX)]), MEM),
            Err(LoadError::SegmentOutsideMemory { .. })
        ));
    }
}
