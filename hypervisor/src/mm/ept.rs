//! A domain's EPT (SDM Vol. 3C "EPT"): 4-level tables mapping guest-physical to
//! host-physical addresses, 2 MiB leaves where guest and host addresses are both 2 MiB
//! aligned and 4 KiB leaves elsewhere. Pure logic over a `TableMemory`, so the kernel
//! keeps tables in frames and the tests in a Vec.

use super::addr::{GuestPhysAddr, HostPhysAddr};
use bitflags::bitflags;
use core::fmt;

bitflags! {
    /// Leaf permissions (bits 2:0 of an EPT entry).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct EptPerms: u64 {
        const READ = 1 << 0;
        const WRITE = 1 << 1;
        const EXECUTE = 1 << 2;
    }
}

/// EPT memory types (leaf bits 5:3).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemType {
    Uncacheable = 0,
    WriteBack = 6,
}

/// Where EPT tables live.
pub trait TableMemory {
    /// A zeroed 4 KiB table; None when out of memory.
    fn alloc_table(&mut self) -> Option<HostPhysAddr>;
    /// The table at `pa` (one this memory allocated).
    fn table(&mut self, pa: HostPhysAddr) -> &mut [u64; 512];
    /// Returns a table no longer referenced.
    fn free_table(&mut self, pa: HostPhysAddr);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub gpa: GuestPhysAddr,
    pub hpa: HostPhysAddr,
    pub len: u64,
    pub perms: EptPerms,
    pub mem_type: MemType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    pub hpa: HostPhysAddr,
    pub perms: EptPerms,
    pub large: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EptError {
    Misaligned { gpa: u64, hpa: u64, len: u64 },
    OutOfRange { gpa: u64 },
    Overlap { gpa: u64 },
    BadPerms,
    OutOfTableMemory,
}

impl fmt::Display for EptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Misaligned { gpa, hpa, len } => {
                write!(f, "mapping {len:#x} bytes gpa {gpa:#x} -> hpa {hpa:#x} is not 4 KiB aligned")
            }
            Self::OutOfRange { gpa } => write!(f, "guest-physical {gpa:#x} is beyond the 512 GiB EPT range"),
            Self::Overlap { gpa } => write!(f, "guest-physical {gpa:#x} is already mapped"),
            Self::BadPerms => write!(f, "write or execute without read is an EPT misconfiguration"),
            Self::OutOfTableMemory => write!(f, "out of memory for EPT tables"),
        }
    }
}

const PAGE: u64 = 4096;
const LARGE: u64 = 2 << 20;
/// One PML4 entry's worth (512 GiB) is all a domain gets: plenty, and it keeps the
/// walk simple.
const MAX_GPA: u64 = 1 << 39;
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
const PS: u64 = 1 << 7;

pub struct Ept {
    root: HostPhysAddr,
    tables: usize,
}

fn index(gpa: u64, level: u32) -> usize {
    ((gpa >> (12 + 9 * level)) & 0x1FF) as usize
}

impl Ept {
    pub fn new(mem: &mut impl TableMemory) -> Result<Ept, EptError> {
        let root = mem.alloc_table().ok_or(EptError::OutOfTableMemory)?;
        Ok(Ept { root, tables: 1 })
    }

    pub fn table_count(&self) -> usize {
        self.tables
    }

    /// The EPT pointer: WB paging structures (6), 4-level walk (3 << 3), A/D (bit 6).
    pub fn eptp(&self, accessed_dirty: bool) -> u64 {
        self.root.0 | 6 | (3 << 3) | if accessed_dirty { 1 << 6 } else { 0 }
    }

    /// The table below `entry` of `table`, created if missing.
    fn next(
        &mut self,
        mem: &mut impl TableMemory,
        table: HostPhysAddr,
        i: usize,
        gpa: u64,
    ) -> Result<HostPhysAddr, EptError> {
        let e = mem.table(table)[i];
        if e & 7 != 0 {
            if e & PS != 0 {
                return Err(EptError::Overlap { gpa });
            }
            return Ok(HostPhysAddr(e & ADDR_MASK));
        }
        let t = mem.alloc_table().ok_or(EptError::OutOfTableMemory)?;
        self.tables += 1;
        // Non-leaf entries grant everything; the leaf decides.
        mem.table(table)[i] = t.0 | 7;
        Ok(t)
    }

    /// Maps a range; refuses overlaps. On error part of the range may be mapped; the
    /// caller then destroys the domain (domains are built once, never patched).
    pub fn map(&mut self, mem: &mut impl TableMemory, m: &Mapping) -> Result<(), EptError> {
        if !m.gpa.0.is_multiple_of(PAGE) || !m.hpa.0.is_multiple_of(PAGE) || !m.len.is_multiple_of(PAGE) {
            return Err(EptError::Misaligned { gpa: m.gpa.0, hpa: m.hpa.0, len: m.len });
        }
        if m.gpa.0.checked_add(m.len).is_none_or(|end| end > MAX_GPA) {
            return Err(EptError::OutOfRange { gpa: m.gpa.0 });
        }
        if !m.perms.contains(EptPerms::READ) && !m.perms.is_empty() {
            return Err(EptError::BadPerms);
        }
        let leaf_bits = m.perms.bits() | ((m.mem_type as u64) << 3);
        let mut off = 0;
        while off < m.len {
            let gpa = m.gpa.0 + off;
            let hpa = m.hpa.0 + off;
            let pdpt = self.next(mem, self.root, index(gpa, 3), gpa)?;
            let pd = self.next(mem, pdpt, index(gpa, 2), gpa)?;
            if gpa.is_multiple_of(LARGE) && hpa.is_multiple_of(LARGE) && m.len - off >= LARGE {
                let slot = &mut mem.table(pd)[index(gpa, 1)];
                if *slot & 7 != 0 {
                    return Err(EptError::Overlap { gpa });
                }
                *slot = hpa | leaf_bits | PS;
                off += LARGE;
            } else {
                let pt = self.next(mem, pd, index(gpa, 1), gpa)?;
                let slot = &mut mem.table(pt)[index(gpa, 0)];
                if *slot & 7 != 0 {
                    return Err(EptError::Overlap { gpa });
                }
                *slot = hpa | leaf_bits;
                off += PAGE;
            }
        }
        Ok(())
    }

    /// A software walk, as the CPU does it.
    pub fn translate(&self, mem: &mut impl TableMemory, gpa: GuestPhysAddr) -> Option<Translation> {
        if gpa.0 >= MAX_GPA {
            return None;
        }
        let mut table = self.root;
        for level in (1..=3).rev() {
            let e = mem.table(table)[index(gpa.0, level)];
            if e & 7 == 0 {
                return None;
            }
            if level == 1 && e & PS != 0 {
                let base = e & ADDR_MASK & !(LARGE - 1);
                return Some(Translation {
                    hpa: HostPhysAddr(base + gpa.0 % LARGE),
                    perms: EptPerms::from_bits_truncate(e & 7),
                    large: true,
                });
            }
            table = HostPhysAddr(e & ADDR_MASK);
        }
        let e = mem.table(table)[index(gpa.0, 0)];
        (e & 7 != 0).then(|| Translation {
            hpa: HostPhysAddr((e & ADDR_MASK) + gpa.0 % PAGE),
            perms: EptPerms::from_bits_truncate(e & 7),
            large: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::boxed::Box;
    use alloc::vec::Vec;

    struct VecTables(Vec<Box<[u64; 512]>>);

    const BASE: u64 = 0x100_0000_0000;

    impl TableMemory for VecTables {
        fn alloc_table(&mut self) -> Option<HostPhysAddr> {
            self.0.push(Box::new([0; 512]));
            Some(HostPhysAddr(BASE + (self.0.len() as u64 - 1) * PAGE))
        }
        fn table(&mut self, pa: HostPhysAddr) -> &mut [u64; 512] {
            &mut self.0[((pa.0 - BASE) / PAGE) as usize]
        }
        fn free_table(&mut self, _pa: HostPhysAddr) {}
    }

    fn ram(gpa: u64, hpa: u64, len: u64) -> Mapping {
        Mapping {
            gpa: GuestPhysAddr(gpa),
            hpa: HostPhysAddr(hpa),
            len,
            perms: EptPerms::all(),
            mem_type: MemType::WriteBack,
        }
    }

    #[test]
    fn aligned_ram_uses_2m_pages_and_three_tables() {
        let mut mem = VecTables(Vec::new());
        let mut ept = Ept::new(&mut mem).unwrap();
        ept.map(&mut mem, &ram(0, 0x4000_0000, 16 << 20)).unwrap();
        assert_eq!(ept.table_count(), 3);
        let t = ept.translate(&mut mem, GuestPhysAddr(0x12_3456)).unwrap();
        assert_eq!(t.hpa, HostPhysAddr(0x4012_3456));
        assert!(t.large);
        assert_eq!(ept.translate(&mut mem, GuestPhysAddr(16 << 20)), None);
    }

    #[test]
    fn misaligned_host_memory_falls_back_to_4k_pages() {
        let mut mem = VecTables(Vec::new());
        let mut ept = Ept::new(&mut mem).unwrap();
        ept.map(&mut mem, &ram(0, 0x4000_1000, 4 << 20)).unwrap();
        assert_eq!(ept.table_count(), 3 + 2);
        for page in 0..1024u64 {
            let t = ept.translate(&mut mem, GuestPhysAddr(page * PAGE + 8)).unwrap();
            assert_eq!(t.hpa.0, 0x4000_1000 + page * PAGE + 8);
            assert!(!t.large);
        }
    }

    #[test]
    fn overlaps_misalignment_and_bad_permissions_are_refused() {
        let mut mem = VecTables(Vec::new());
        let mut ept = Ept::new(&mut mem).unwrap();
        ept.map(&mut mem, &ram(0, 0x4000_0000, 2 << 20)).unwrap();
        assert_eq!(ept.map(&mut mem, &ram(0x1000, 0x9000_0000, PAGE)), Err(EptError::Overlap { gpa: 0x1000 }));
        assert!(matches!(ept.map(&mut mem, &ram(0x20_0001, 0, PAGE)), Err(EptError::Misaligned { .. })));
        let mut w = ram(0x40_0000, 0, PAGE);
        w.perms = EptPerms::WRITE;
        assert_eq!(ept.map(&mut mem, &w), Err(EptError::BadPerms));
        assert_eq!(ept.map(&mut mem, &ram(MAX_GPA, 0, PAGE)), Err(EptError::OutOfRange { gpa: MAX_GPA }));
    }

    #[test]
    fn the_ept_pointer_encodes_write_back_a_4_level_walk_and_ad() {
        let mut mem = VecTables(Vec::new());
        let ept = Ept::new(&mut mem).unwrap();
        assert_eq!(ept.eptp(true), BASE | 0x5E);
        assert_eq!(ept.eptp(false), BASE | 0x1E);
    }
}
