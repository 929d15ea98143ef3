//! The hypervisor's own address space, managed through the `x86_64` crate.
//!
//! The bootloader hands over page tables with the kernel at -2 GiB and all physical
//! memory mapped at a dynamic offset (the "direct map"). We keep those tables and add
//! our own mappings in a window of the upper half that the bootloader never uses:
//! uncacheable MMIO, kernel stacks with guard pages, and the AP trampoline's identity
//! page.

use super::phys;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::mapper::{MapToError, Translate};
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags, PhysFrame, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

/// Start of the window for the hypervisor's own mappings. The bootloader's dynamic
/// range ends below it (see `boot::BOOTLOADER_CONFIG`).
pub const WINDOW_START: u64 = 0xFFFF_C000_0000_0000;
pub const WINDOW_END: u64 = 0xFFFF_D000_0000_0000;

static PHYS_OFFSET: AtomicU64 = AtomicU64::new(0);
static NEXT_VIRT: AtomicU64 = AtomicU64::new(WINDOW_START);
/// Serialises changes to the page tables (all CPUs share them).
static TABLES: Mutex<()> = Mutex::new(());

#[derive(Debug)]
pub enum MapError {
    OutOfFrames,
    WindowFull,
    AlreadyMapped { virt: u64 },
    HugePageInTheWay { virt: u64 },
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::OutOfFrames => write!(f, "out of physical memory for page tables"),
            Self::WindowFull => write!(f, "the hypervisor's virtual mapping window is full"),
            Self::AlreadyMapped { virt } => write!(f, "virtual address {virt:#x} is already mapped elsewhere"),
            Self::HugePageInTheWay { virt } => write!(f, "virtual address {virt:#x} lies inside a huge page"),
        }
    }
}

/// Records the direct-map offset the bootloader chose.
pub fn init(phys_offset: u64) {
    PHYS_OFFSET.store(phys_offset, Ordering::Relaxed);
}

/// Switches to a level-4 table of our own: the upper half (kernel, direct map, boot
/// info, stacks) is shared with the bootloader's tables, the lower half starts empty, so
/// no identity mapping the bootloader left for its own hand-off survives. Returns the
/// new table's physical address.
pub fn adopt_own_pml4() -> Result<u64, MapError> {
    let _guard = TABLES.lock();
    let frame = phys::allocate_below(1 << 32).ok_or(MapError::OutOfFrames)?;
    let offset = PHYS_OFFSET.load(Ordering::Relaxed);
    let (old_frame, flags) = Cr3::read();
    // SAFETY: both tables are reached through the direct map: the old one is the live
    // level-4 table, the new frame was just allocated for us alone. The upper half
    // holds everything this kernel runs on, so switching keeps every address valid.
    unsafe {
        let old = &*((offset + old_frame.start_address().as_u64()) as *const PageTable);
        let new = &mut *((offset + frame) as *mut PageTable);
        new.zero();
        for i in 256..512 {
            new[i] = old[i].clone();
        }
        Cr3::write(PhysFrame::containing_address(PhysAddr::new(frame)), flags);
    }
    Ok(frame)
}

/// The direct-map virtual address of physical address `phys`.
pub fn phys_to_virt(phys: u64) -> u64 {
    PHYS_OFFSET.load(Ordering::Relaxed) + phys
}

/// The physical address behind `virt` in the current tables, if mapped.
pub fn virt_to_phys(virt: u64) -> Option<u64> {
    let _guard = TABLES.lock();
    // SAFETY: the tables are only changed under TABLES, which we hold.
    let mapper = unsafe { active_mapper() };
    mapper.translate_addr(VirtAddr::new(virt)).map(|p| p.as_u64())
}

/// CR3 of the hypervisor's tables (the value the APs load).
pub fn current_cr3() -> u64 {
    let (frame, flags) = Cr3::read_raw();
    frame.start_address().as_u64() | u64::from(flags)
}

/// # Safety
/// The caller must hold `TABLES` (or be the only CPU) for as long as the mapper lives.
unsafe fn active_mapper() -> OffsetPageTable<'static> {
    let offset = PHYS_OFFSET.load(Ordering::Relaxed);
    let (frame, _) = Cr3::read();
    let table = (offset + frame.start_address().as_u64()) as *mut PageTable;
    // SAFETY: CR3 points at a valid level-4 table, reached through the direct map; the
    // caller serialises access.
    unsafe { OffsetPageTable::new(&mut *table, VirtAddr::new(offset)) }
}

/// Frames for new page tables come from the kernel's frame allocator.
struct TableFrames;

// SAFETY: `phys::allocate` returns frames that nobody else owns.
unsafe impl FrameAllocator<Size4KiB> for TableFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        phys::allocate().map(|p| PhysFrame::containing_address(PhysAddr::new(p)))
    }
}

fn map_one(mapper: &mut OffsetPageTable<'static>, virt: u64, phys: u64, flags: PageTableFlags) -> Result<(), MapError> {
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virt));
    let frame = PhysFrame::<Size4KiB>::containing_address(PhysAddr::new(phys));
    // SAFETY: the page lies in our private window (or is the trampoline's identity
    // page), so no existing Rust reference covers it; the frame is owned by the caller.
    match unsafe { mapper.map_to(page, frame, flags, &mut TableFrames) } {
        Ok(flush) => {
            flush.flush();
            Ok(())
        }
        Err(MapToError::FrameAllocationFailed) => Err(MapError::OutOfFrames),
        Err(MapToError::PageAlreadyMapped(existing)) if existing == frame => Ok(()),
        Err(MapToError::PageAlreadyMapped(_)) => Err(MapError::AlreadyMapped { virt }),
        Err(MapToError::ParentEntryHugePage) => Err(MapError::HugePageInTheWay { virt }),
    }
}

fn reserve_virt(bytes: u64) -> Result<u64, MapError> {
    let bytes = bytes.div_ceil(4096) * 4096;
    let start = NEXT_VIRT.fetch_add(bytes, Ordering::Relaxed);
    if start.checked_add(bytes).is_none_or(|end| end > WINDOW_END) {
        return Err(MapError::WindowFull);
    }
    Ok(start)
}

/// Maps `pages` pages of device memory at `phys` uncacheable and non-executable.
pub fn map_mmio(phys: u64, pages: u64) -> Result<u64, MapError> {
    let virt = reserve_virt(pages * 4096)?;
    let flags = PageTableFlags::PRESENT
        | PageTableFlags::WRITABLE
        | PageTableFlags::NO_CACHE
        | PageTableFlags::WRITE_THROUGH
        | PageTableFlags::NO_EXECUTE;
    let _guard = TABLES.lock();
    // SAFETY: TABLES is held.
    let mut mapper = unsafe { active_mapper() };
    for i in 0..pages {
        map_one(&mut mapper, virt + i * 4096, phys + i * 4096, flags)?;
    }
    Ok(virt)
}

/// Maps fresh frames at a new address with one unmapped guard page below them.
/// Returns the address just past the last mapped byte (a stack's top).
pub fn map_guarded(bytes: u64) -> Result<u64, MapError> {
    let pages = bytes.div_ceil(4096);
    let base = reserve_virt((pages + 1) * 4096)? + 4096;
    let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE;
    let _guard = TABLES.lock();
    // SAFETY: TABLES is held.
    let mut mapper = unsafe { active_mapper() };
    for i in 0..pages {
        let frame = phys::allocate().ok_or(MapError::OutOfFrames)?;
        map_one(&mut mapper, base + i * 4096, frame, flags)?;
    }
    Ok(base + pages * 4096)
}

/// Identity-maps one executable page (the AP trampoline must keep running across the
/// switch from its temporary tables to ours).
pub fn identity_map_code_page(phys: u64) -> Result<(), MapError> {
    let _guard = TABLES.lock();
    // SAFETY: TABLES is held.
    let mut mapper = unsafe { active_mapper() };
    map_one(&mut mapper, phys, phys, PageTableFlags::PRESENT | PageTableFlags::WRITABLE)
}
