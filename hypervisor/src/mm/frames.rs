//! Physical frame allocator: pure bookkeeping over the firmware's memory map.
//!
//! The allocator backs the kernel heap, so it cannot use one. All state lives in
//! fixed-capacity arrays of [`MAX_RANGES`] ranges. When a firmware map is too fragmented
//! for them, the allocator gives up *usable* memory and counts each loss in
//! [`FrameAllocator::dropped_ranges`]; it never hands out memory that is not usable and
//! never panics.
//!
//! A frame is handed out only if
//! - it lies entirely inside a region the map calls usable,
//! - no byte of it is covered by a region the map calls non-usable (on overlap, the
//!   non-usable region wins: firmware maps overlap and the cautious reading is the safe one),
//! - it does not intersect any reserved range (kernel image, boot bundle, AP trampoline...),
//! - it is not frame 0 (the real-mode IVT/BIOS data area, and a physical address of 0 is
//!   too easily confused with "none").

/// Size of a frame: the 4 KiB base page of IA-32e paging.
pub const FRAME_SIZE: u64 = 4096;

/// Capacity of each fixed range table (free ranges, usable ranges, exclusions). 128 holds
/// the usable part of typical BIOS (E820) and UEFI maps with room to spare: adjacent
/// usable entries merge into one range. Each table costs 2 KiB.
pub const MAX_RANGES: usize = 128;

const FRAME_MASK: u64 = FRAME_SIZE - 1;

/// A 4 KiB-aligned physical frame, identified by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhysFrame {
    start: u64,
}

impl PhysFrame {
    /// The frame that contains `addr`.
    pub const fn containing(addr: u64) -> PhysFrame {
        PhysFrame { start: addr & !FRAME_MASK }
    }

    /// The frame that starts at `addr`, or `None` if `addr` is not 4 KiB aligned.
    pub const fn from_start(addr: u64) -> Option<PhysFrame> {
        if addr & FRAME_MASK == 0 { Some(PhysFrame { start: addr }) } else { None }
    }

    /// Physical address of the frame's first byte.
    pub const fn start(self) -> u64 {
        self.start
    }
}

/// A half-open physical address range `[start, end)`. A range with `start >= end` is
/// empty (and is how callers may spell "nothing" without an `Option`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

impl Range {
    pub const fn new(start: u64, end: u64) -> Range {
        Range { start, end }
    }

    pub const fn is_empty(&self) -> bool {
        self.start >= self.end
    }

    /// Length in bytes (0 when empty).
    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whole frames the range holds, assuming it is frame aligned.
    pub const fn frames(&self) -> u64 {
        self.len() / FRAME_SIZE
    }

    /// Whether the two ranges share at least one byte.
    pub const fn intersects(&self, other: &Range) -> bool {
        !self.is_empty() && !other.is_empty() && self.start < other.end && other.start < self.end
    }

    /// Whether `other` lies inside `self` (an empty `other` lies anywhere).
    pub const fn contains(&self, other: &Range) -> bool {
        other.is_empty() || (self.start <= other.start && other.end <= self.end)
    }

    /// The largest frame-aligned range inside `self`: what a usable region really offers.
    const fn shrink_to_frames(self) -> Range {
        match self.start.checked_next_multiple_of(FRAME_SIZE) {
            Some(start) => Range { start, end: self.end & !FRAME_MASK },
            None => Range { start: 0, end: 0 },
        }
    }

    /// The smallest frame-aligned range covering `self`: every frame a non-usable region
    /// or reservation touches. An end beyond the last frame saturates, which still covers
    /// everything (the top frame cannot be handed out anyway: its end is not a `u64`).
    const fn grow_to_frames(self) -> Range {
        if self.is_empty() {
            return Range { start: 0, end: 0 };
        }
        let end = match self.end.checked_next_multiple_of(FRAME_SIZE) {
            Some(end) => end,
            None => u64::MAX,
        };
        Range { start: self.start & !FRAME_MASK, end }
    }

    /// Whether the two ranges overlap or touch, i.e. their union is one range.
    const fn touches(&self, other: &Range) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    const fn hull(self, other: Range) -> Range {
        Range {
            start: if self.start < other.start { self.start } else { other.start },
            end: if self.end > other.end { self.end } else { other.end },
        }
    }
}

/// One entry of the firmware memory map, as the boot code translates it. `end` is
/// exclusive; nothing need be aligned, sorted or disjoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemoryRegion {
    pub start: u64,
    pub end: u64,
    pub usable: bool,
}

/// Why [`FrameAllocator::deallocate`] refused a frame. In every case the allocator is
/// unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeallocError {
    /// The frame was never allocatable (reserved, non-usable, frame 0, outside RAM):
    /// accepting it would let it be handed out.
    NotAllocatable,
    /// The frame is already free: a double free.
    AlreadyFree,
    /// Freeing it would need one more free range than [`MAX_RANGES`]. The frame stays
    /// allocated (leaked), and the caller knows it.
    OutOfRanges,
}

/// A fixed-capacity table of ranges. "Normalized" means sorted by start, non-empty,
/// and neither overlapping nor touching (touching ranges are merged).
#[derive(Debug, Clone, Copy)]
struct RangeTable {
    ranges: [Range; MAX_RANGES],
    len: usize,
}

impl RangeTable {
    const fn new() -> RangeTable {
        RangeTable { ranges: [Range { start: 0, end: 0 }; MAX_RANGES], len: 0 }
    }

    fn as_slice(&self) -> &[Range] {
        self.ranges.get(..self.len).unwrap_or(&[])
    }

    fn as_mut_slice(&mut self) -> &mut [Range] {
        self.ranges.get_mut(..self.len).unwrap_or(&mut [])
    }

    /// Appends `r`; false when full.
    fn push(&mut self, r: Range) -> bool {
        match self.ranges.get_mut(self.len) {
            Some(slot) => {
                *slot = r;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// Inserts `r` at `index`, shifting the tail up; false when full or out of bounds.
    fn insert_at(&mut self, index: usize, r: Range) -> bool {
        if self.len >= MAX_RANGES || index > self.len {
            return false;
        }
        self.ranges.copy_within(index..self.len, index + 1);
        self.ranges[index] = r;
        self.len += 1;
        true
    }

    /// Removes the range at `index`, shifting the tail down.
    fn remove(&mut self, index: usize) {
        if index < self.len {
            self.ranges.copy_within(index + 1..self.len, index);
            self.len -= 1;
        }
    }

    /// Sorts, drops empty ranges and merges overlapping or touching ones.
    fn normalize(&mut self) {
        let slice = self.as_mut_slice();
        slice.sort_unstable_by_key(|r| r.start);
        let mut merged: usize = 0;
        for i in 0..slice.len() {
            let r = slice[i];
            if r.is_empty() {
                continue;
            }
            match merged.checked_sub(1).and_then(|last| slice.get_mut(last)) {
                Some(last) if r.start <= last.end => *last = last.hull(r),
                _ => {
                    slice[merged] = r;
                    merged += 1;
                }
            }
        }
        self.len = merged;
    }

    /// Makes room for `r` without a new slot if it overlaps or touches an existing range.
    fn absorb(&mut self, r: Range) -> bool {
        match self.as_mut_slice().iter_mut().find(|e| e.touches(&r)) {
            Some(e) => {
                *e = e.hull(r);
                self.normalize();
                true
            }
            None => false,
        }
    }

    /// Adds a range whose loss only costs memory (a usable range). When the table is full
    /// even after merging, the smaller of `r` and the smallest stored range is dropped.
    /// Returns whether a range was dropped.
    fn insert_lossy(&mut self, r: Range) -> bool {
        if r.is_empty() || self.push(r) {
            return false;
        }
        self.normalize();
        if self.absorb(r) || self.push(r) {
            return false;
        }
        let smallest = self.as_mut_slice().iter_mut().min_by_key(|e| e.len());
        if let Some(smallest) = smallest
            && smallest.len() < r.len()
        {
            *smallest = r;
        }
        true
    }

    /// Adds a range that must never be lost (an exclusion). When the table is full even
    /// after merging, the two nearest neighbours among the stored ranges and `r` are
    /// merged into one, excluding the gap between them too: coarser, never unsafe.
    /// Returns whether such a gap was sacrificed.
    fn insert_covering(&mut self, r: Range) -> bool {
        if r.is_empty() || self.push(r) {
            return false;
        }
        self.normalize();
        if self.absorb(r) || self.push(r) {
            return false;
        }
        // Full, and `r` is disjoint from (and not touching) every stored range. Of the
        // sorted sequence "stored ranges plus `r`", merge the two neighbours with the
        // smallest gap: that sacrifices the least usable memory.
        enum Merge {
            /// Widen stored range `i` to cover `r`.
            IntoStored(usize),
            /// Merge stored ranges `i` and `i + 1`, then store `r` in the freed slot.
            StoredPair(usize),
        }
        let slice = self.as_slice();
        let pos = slice.partition_point(|e| e.end < r.start);
        let lower = pos.checked_sub(1).and_then(|i| Some((r.start - slice.get(i)?.end, Merge::IntoStored(i))));
        let upper = slice.get(pos).map(|e| (e.start - r.end, Merge::IntoStored(pos)));
        let pairs = slice.windows(2).enumerate().map(|(i, w)| (w[1].start - w[0].end, Merge::StoredPair(i)));
        // `min_by_key` keeps the first minimum, so ties favour merging with `r` (one step).
        let best = lower.into_iter().chain(upper).chain(pairs).min_by_key(|(gap, _)| *gap);
        match best {
            Some((_, Merge::IntoStored(i))) => {
                if let Some(e) = self.as_mut_slice().get_mut(i) {
                    *e = e.hull(r);
                }
            }
            Some((_, Merge::StoredPair(i))) => {
                if let [a, b, ..] = self.as_mut_slice().get_mut(i..).unwrap_or(&mut []) {
                    *a = a.hull(*b);
                }
                self.remove(i + 1);
                self.push(r);
            }
            // Unreachable: a full table has a neighbour for `r`.
            None => {}
        }
        self.normalize();
        true
    }

    /// Whether some range contains all of `r`. Requires a normalized table.
    fn covers(&self, r: &Range) -> bool {
        let slice = self.as_slice();
        let i = slice.partition_point(|e| e.end <= r.start);
        slice.get(i).is_some_and(|e| e.contains(r))
    }

    fn frames(&self) -> u64 {
        self.as_slice().iter().map(Range::frames).sum()
    }
}

/// Writes `usable` minus `excluded` (both normalized) into `out`; returns how many ranges
/// `out` had to drop for lack of capacity.
fn subtract_into(usable: &[Range], excluded: &[Range], out: &mut RangeTable) -> usize {
    let mut dropped = 0;
    // Exclusions ending at or before the current usable range never matter again.
    let mut first = 0;
    for u in usable {
        while excluded.get(first).is_some_and(|e| e.end <= u.start) {
            first += 1;
        }
        let mut cursor = u.start;
        let mut next = first;
        while cursor < u.end {
            match excluded.get(next) {
                Some(e) if e.start < u.end => {
                    if e.start > cursor {
                        dropped += usize::from(out.insert_lossy(Range::new(cursor, e.start)));
                    }
                    cursor = cursor.max(e.end);
                    next += 1;
                }
                _ => {
                    dropped += usize::from(out.insert_lossy(Range::new(cursor, u.end)));
                    cursor = u.end;
                }
            }
        }
    }
    dropped
}

/// The physical frame allocator.
///
/// Policy: frames are handed out from the top of memory down, so the scarce low frames
/// stay available to [`Self::allocate_below`] callers (the AP trampoline must sit below
/// 1 MiB because the STARTUP IPI vector names a 4 KiB page in the first megabyte, SDM Vol.
/// 3A "MP Initialization"; 32-bit page tables must sit below 4 GiB).
///
/// Not `Clone`: two copies would hand out the same frames.
#[derive(Debug)]
pub struct FrameAllocator {
    /// Free frames, normalized.
    free: RangeTable,
    /// Every allocatable frame as computed at construction, normalized; the reference
    /// that [`Self::deallocate`] validates against.
    usable: RangeTable,
    dropped: usize,
}

impl FrameAllocator {
    /// Builds the allocator from the firmware map and the ranges that must never be handed
    /// out. Needs roughly 10 KiB of stack (three working tables plus the result).
    ///
    /// Usable regions are trimmed inward to whole frames; non-usable regions and `reserved`
    /// ranges are widened outward to whole frames, then subtracted. Empty or inverted
    /// ranges are ignored.
    pub fn new(regions: impl IntoIterator<Item = MemoryRegion>, reserved: &[Range]) -> FrameAllocator {
        let mut dropped = 0;
        let mut usable = RangeTable::new();
        let mut excluded = RangeTable::new();
        dropped += usize::from(excluded.insert_covering(Range::new(0, FRAME_SIZE)));
        for region in regions {
            let r = Range::new(region.start, region.end);
            dropped += usize::from(if region.usable {
                usable.insert_lossy(r.shrink_to_frames())
            } else {
                excluded.insert_covering(r.grow_to_frames())
            });
        }
        for r in reserved {
            dropped += usize::from(excluded.insert_covering(r.grow_to_frames()));
        }
        usable.normalize();
        excluded.normalize();

        let mut free = RangeTable::new();
        dropped += subtract_into(usable.as_slice(), excluded.as_slice(), &mut free);
        free.normalize();
        FrameAllocator { free, usable: free, dropped }
    }

    /// How many ranges the fixed capacity could not hold: usable ranges dropped, plus
    /// exclusions merged with a neighbour (which excludes the usable gap between them).
    /// Non-zero means some usable memory is not used; worth a boot-log line.
    pub fn dropped_ranges(&self) -> usize {
        self.dropped
    }

    /// Number of free frames.
    pub fn free_frames(&self) -> u64 {
        self.free.frames()
    }

    /// Number of frames this allocator manages, free or allocated (in frames, like
    /// [`Self::free_frames`]).
    pub fn total_usable(&self) -> u64 {
        self.usable.frames()
    }

    /// The free ranges, ascending, frame aligned, disjoint and non-touching.
    pub fn free_ranges(&self) -> impl Iterator<Item = Range> + '_ {
        self.free.as_slice().iter().copied()
    }

    /// All frames this allocator manages (as at construction), ascending.
    pub fn usable_ranges(&self) -> impl Iterator<Item = Range> + '_ {
        self.usable.as_slice().iter().copied()
    }

    /// One frame: the highest free one.
    pub fn allocate(&mut self) -> Option<PhysFrame> {
        let index = self.free.len.checked_sub(1)?;
        let top = self.free.as_slice().get(index)?.end;
        let start = top - FRAME_SIZE;
        // Taking the top of a range never splits it, so this cannot fail.
        self.carve(index, Range::new(start, top)).then_some(PhysFrame { start })
    }

    /// One frame lying entirely below `limit`: the highest such free frame (or, in the rare
    /// case that taking it would need a range slot the table does not have, the lowest
    /// free frame of the same range).
    pub fn allocate_below(&mut self, limit: u64) -> Option<PhysFrame> {
        let limit = limit & !FRAME_MASK;
        let index = self.free.as_slice().iter().rposition(|r| r.start < limit)?;
        let r = *self.free.as_slice().get(index)?;
        let top = r.end.min(limit);
        let start = top - FRAME_SIZE;
        if self.carve(index, Range::new(start, top)) {
            return Some(PhysFrame { start });
        }
        let start = r.start;
        self.carve(index, Range::new(start, start + FRAME_SIZE)).then_some(PhysFrame { start })
    }

    /// `count` physically contiguous frames whose first address is a multiple of `align`
    /// bytes (e.g. 512 frames at 2 MiB alignment for a large page): the highest such run.
    /// Returns the first frame.
    ///
    /// `None` when no run fits, when `count` is 0, or when `align` is not a power of two
    /// (alignments below [`FRAME_SIZE`] mean [`FRAME_SIZE`]).
    pub fn allocate_contiguous(&mut self, count: u64, align: u64) -> Option<PhysFrame> {
        if count == 0 || !align.is_power_of_two() {
            return None;
        }
        let align_mask = align.max(FRAME_SIZE) - 1;
        let size = count.checked_mul(FRAME_SIZE)?;
        for index in (0..self.free.len).rev() {
            let Some(&r) = self.free.as_slice().get(index) else { continue };
            let Some(highest) = r.end.checked_sub(size) else { continue };
            let start = highest & !align_mask;
            if start < r.start {
                continue;
            }
            if self.carve(index, Range::new(start, start + size)) {
                return Some(PhysFrame { start });
            }
            // The run would split the range and the table is full; a run at the very
            // bottom of the range does not split it.
            if r.start & align_mask == 0 && self.carve(index, Range::new(r.start, r.start + size)) {
                return Some(PhysFrame { start: r.start });
            }
        }
        None
    }

    /// Returns a frame to the free pool. The frame must be one this allocator could have
    /// handed out and must not be free already; see [`DeallocError`].
    pub fn deallocate(&mut self, frame: PhysFrame) -> Result<(), DeallocError> {
        let Some(end) = frame.start.checked_add(FRAME_SIZE) else {
            return Err(DeallocError::NotAllocatable);
        };
        let f = Range::new(frame.start, end);
        if !self.usable.covers(&f) {
            return Err(DeallocError::NotAllocatable);
        }
        let free = self.free.as_slice();
        let index = free.partition_point(|r| r.end <= f.start);
        if free.get(index).is_some_and(|r| r.intersects(&f)) {
            return Err(DeallocError::AlreadyFree);
        }
        let lower = index.checked_sub(1).filter(|&i| free.get(i).is_some_and(|r| r.end == f.start));
        let upper = Some(index).filter(|&i| free.get(i).is_some_and(|r| r.start == f.end));
        let slice = self.free.as_mut_slice();
        match (lower, upper) {
            (Some(l), Some(u)) => {
                slice[l].end = slice[u].end;
                self.free.remove(u);
            }
            (Some(l), None) => slice[l].end = f.end,
            (None, Some(u)) => slice[u].start = f.start,
            (None, None) => {
                if !self.free.insert_at(index, f) {
                    return Err(DeallocError::OutOfRanges);
                }
            }
        }
        Ok(())
    }

    /// Removes `taken`, a frame-aligned part of free range `index`, from the free set.
    /// Returns false, changing nothing, if the remainder would need a slot the table
    /// does not have (taking from the middle splits the range in two).
    fn carve(&mut self, index: usize, taken: Range) -> bool {
        let Some(&r) = self.free.as_slice().get(index) else { return false };
        if !r.contains(&taken) || taken.is_empty() {
            return false;
        }
        let below = Range::new(r.start, taken.start);
        let above = Range::new(taken.end, r.end);
        match (below.is_empty(), above.is_empty()) {
            (true, true) => self.free.remove(index),
            (false, true) => self.free.ranges[index] = below,
            (true, false) => self.free.ranges[index] = above,
            (false, false) => {
                if !self.free.insert_at(index + 1, above) {
                    return false;
                }
                self.free.ranges[index] = below;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;
    use alloc::vec::Vec;

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;

    fn usable(start: u64, end: u64) -> MemoryRegion {
        MemoryRegion { start, end, usable: true }
    }

    fn reserved(start: u64, end: u64) -> MemoryRegion {
        MemoryRegion { start, end, usable: false }
    }

    fn ranges(alloc: &FrameAllocator) -> Vec<(u64, u64)> {
        alloc.free_ranges().map(|r| (r.start, r.end)).collect()
    }

    /// Allocates until exhaustion; returns the frames in allocation order.
    fn drain(alloc: &mut FrameAllocator) -> Vec<u64> {
        core::iter::from_fn(|| alloc.allocate()).map(PhysFrame::start).collect()
    }

    /// A messy PC-like map: unsorted, overlapping, unaligned.
    fn messy_map() -> Vec<MemoryRegion> {
        alloc::vec![
            usable(0x7000_1234, 0x7001_0000), // unaligned start: 0x7000_2000..
            usable(0x0, 0xA_0000),            // conventional memory, includes frame 0
            reserved(0x4F_F000, 0x60_0000),   // overlaps the end of the next one
            usable(0x10_0000, 0x40_0000),
            reserved(0x9_FC00, 0xA_0000),   // EBDA, unaligned: kills frame 0x9F000
            usable(0x38_0000, 0x50_0000),   // overlaps the usable one above
            reserved(0x20_0800, 0x20_1000), // hole inside usable: kills frame 0x200000
        ]
    }

    fn messy_reserved() -> Vec<Range> {
        alloc::vec![
            Range::new(0x10_0000, 0x18_0000), // kernel image
            Range::new(0x8000, 0x9000),       // AP trampoline
            Range::new(0x30_0010, 0x30_0020), // tiny boot bundle: kills frame 0x300000
        ]
    }

    const MESSY_FREE: [(u64, u64); 6] = [
        (0x1000, 0x8000),           // 7 frames
        (0x9000, 0x9_F000),         // 150 frames
        (0x18_0000, 0x20_0000),     // 128 frames
        (0x20_1000, 0x30_0000),     // 255 frames
        (0x30_1000, 0x4F_F000),     // 510 frames
        (0x7000_2000, 0x7001_0000), // 14 frames
    ];

    #[test]
    fn phys_frame_constructors_align_or_refuse() {
        assert_eq!(PhysFrame::containing(0x1234_5678).start(), 0x1234_5000);
        assert_eq!(PhysFrame::containing(0x1000).start(), 0x1000);
        assert_eq!(PhysFrame::from_start(0x2000).map(PhysFrame::start), Some(0x2000));
        assert_eq!(PhysFrame::from_start(0x2001), None);
        assert_eq!(PhysFrame::containing(u64::MAX).start(), 0xFFFF_FFFF_FFFF_F000);
    }

    #[test]
    fn messy_map_normalizes_to_exact_free_ranges() {
        let alloc = FrameAllocator::new(messy_map(), &messy_reserved());
        assert_eq!(ranges(&alloc), MESSY_FREE);
        assert_eq!(alloc.free_frames(), 1064);
        assert_eq!(alloc.total_usable(), 1064);
        assert_eq!(alloc.dropped_ranges(), 0);
    }

    #[test]
    fn region_order_does_not_matter() {
        let mut map = messy_map();
        map.reverse();
        let alloc = FrameAllocator::new(map, &messy_reserved());
        assert_eq!(ranges(&alloc), MESSY_FREE);
    }

    #[test]
    fn never_hands_out_reserved_non_usable_or_duplicate_frames() {
        let map = messy_map();
        let reserved_ranges = messy_reserved();
        let mut alloc = FrameAllocator::new(map.clone(), &reserved_ranges);
        let frames = drain(&mut alloc);

        assert_eq!(frames.len(), 1064);
        let unique: BTreeSet<u64> = frames.iter().copied().collect();
        assert_eq!(unique.len(), frames.len(), "a frame was handed out twice");
        for &start in &frames {
            let frame = Range::new(start, start + FRAME_SIZE);
            assert_ne!(start, 0);
            assert!(map.iter().any(|r| r.usable && Range::new(r.start, r.end).contains(&frame)));
            assert!(!map.iter().any(|r| !r.usable && Range::new(r.start, r.end).intersects(&frame)));
            assert!(!reserved_ranges.iter().any(|r| r.intersects(&frame)));
        }
        assert_eq!(alloc.free_frames(), 0);
        assert_eq!(alloc.allocate(), None);
        assert_eq!(alloc.total_usable(), 1064);
    }

    #[test]
    fn allocate_goes_top_down() {
        let mut alloc = FrameAllocator::new(messy_map(), &messy_reserved());
        let first: Vec<u64> = (0..3).filter_map(|_| alloc.allocate()).map(PhysFrame::start).collect();
        assert_eq!(first, [0x7000_F000, 0x7000_E000, 0x7000_D000]);
    }

    #[test]
    fn unaligned_regions_are_trimmed_to_whole_frames() {
        let mut alloc = FrameAllocator::new([usable(0x1001, 0x5FFF)], &[]);
        assert_eq!(ranges(&alloc), [(0x2000, 0x5000)]);
        assert_eq!(drain(&mut alloc), [0x4000, 0x3000, 0x2000]);
    }

    #[test]
    fn region_smaller_than_a_frame_after_trimming_yields_nothing() {
        let alloc = FrameAllocator::new([usable(0x1001, 0x2FFF), usable(0x5000, 0x5000), usable(0x9000, 0x8000)], &[]);
        assert_eq!(ranges(&alloc), []);
        assert_eq!(alloc.free_frames(), 0);
    }

    #[test]
    fn non_usable_region_wins_over_overlapping_usable_ones_in_any_order() {
        let expected = [(0x1_0000, 0x1_4000), (0x1_5000, 0x2_0000)];
        let hole = reserved(0x1_4800, 0x1_4900);
        let a = FrameAllocator::new([usable(0x1_0000, 0x2_0000), hole], &[]);
        let b = FrameAllocator::new([hole, usable(0x1_0000, 0x2_0000)], &[]);
        assert_eq!(ranges(&a), expected);
        assert_eq!(ranges(&b), expected);
    }

    #[test]
    fn overlapping_usable_regions_are_counted_once() {
        let alloc = FrameAllocator::new(
            [usable(0x1_0000, 0x3_0000), usable(0x2_0000, 0x4_0000), usable(0x1_8000, 0x1_9000)],
            &[],
        );
        assert_eq!(ranges(&alloc), [(0x1_0000, 0x4_0000)]);
        assert_eq!(alloc.free_frames(), 48);
    }

    #[test]
    fn frame_zero_is_never_handed_out() {
        let mut alloc = FrameAllocator::new([usable(0, 0x3000)], &[]);
        assert_eq!(drain(&mut alloc), [0x2000, 0x1000]);
        let alloc = FrameAllocator::new([usable(0, 0x1000)], &[]);
        assert_eq!(alloc.free_frames(), 0);
    }

    #[test]
    fn allocate_below_returns_highest_frame_under_the_limit() {
        let mut alloc = FrameAllocator::new(messy_map(), &messy_reserved());
        assert_eq!(alloc.allocate_below(MIB).map(PhysFrame::start), Some(0x9_E000));
        // Unaligned limit: only frames ending at or below 0x9000 qualify.
        assert_eq!(alloc.allocate_below(0x9800).map(PhysFrame::start), Some(0x7000));
        assert_eq!(alloc.allocate_below(0x1000), None);
        assert_eq!(alloc.allocate_below(0), None);
    }

    #[test]
    fn allocate_below_splits_a_range_straddling_the_limit() {
        let mut alloc = FrameAllocator::new([usable(0x1000, 2 * MIB)], &[]);
        assert_eq!(alloc.allocate_below(MIB).map(PhysFrame::start), Some(0xF_F000));
        assert_eq!(ranges(&alloc), [(0x1000, 0xF_F000), (0x10_0000, 0x20_0000)]);
    }

    #[test]
    fn allocate_below_drains_only_low_memory() {
        let mut alloc = FrameAllocator::new(messy_map(), &messy_reserved());
        let low: Vec<u64> = core::iter::from_fn(|| alloc.allocate_below(MIB)).map(PhysFrame::start).collect();
        assert_eq!(low.len(), 7 + 150);
        assert!(low.iter().all(|&f| f + FRAME_SIZE <= MIB));
        assert_eq!(alloc.free_frames(), 1064 - 157);
        assert_eq!(alloc.allocate().map(PhysFrame::start), Some(0x7000_F000));
    }

    #[test]
    fn allocate_contiguous_returns_aligned_runs() {
        let mut alloc = FrameAllocator::new([usable(0x1000, 8 * MIB)], &[]);
        assert_eq!(alloc.allocate_contiguous(512, 2 * MIB).map(PhysFrame::start), Some(6 * MIB));
        assert_eq!(ranges(&alloc), [(0x1000, 6 * MIB)]);
        assert_eq!(alloc.allocate().map(PhysFrame::start), Some(0x5F_F000));
        // The highest 2 MiB-aligned run left starts at 2 MiB and splits the range.
        assert_eq!(alloc.allocate_contiguous(512, 2 * MIB).map(PhysFrame::start), Some(2 * MIB));
        assert_eq!(ranges(&alloc), [(0x1000, 2 * MIB), (4 * MIB, 0x5F_F000)]);
        // No aligned 2 MiB run remains: [0x1000, 2M) starts past 0, the other is too short.
        assert_eq!(alloc.allocate_contiguous(512, 2 * MIB), None);
        assert_eq!(alloc.allocate_contiguous(16, 64 * KIB).map(PhysFrame::start), Some(0x5E_0000));
        assert_eq!(ranges(&alloc), [(0x1000, 2 * MIB), (4 * MIB, 0x5E_0000), (0x5F_0000, 0x5F_F000)]);
        assert_eq!(alloc.free_frames(), 511 + 480 + 15);
    }

    #[test]
    fn allocate_contiguous_rejects_invalid_requests() {
        let mut alloc = FrameAllocator::new([usable(0x1000, 8 * MIB)], &[]);
        assert_eq!(alloc.allocate_contiguous(0, FRAME_SIZE), None);
        assert_eq!(alloc.allocate_contiguous(1, 3 * FRAME_SIZE), None);
        assert_eq!(alloc.allocate_contiguous(1, 0), None);
        assert_eq!(alloc.allocate_contiguous(u64::MAX, FRAME_SIZE), None);
        assert_eq!(alloc.allocate_contiguous(2048, FRAME_SIZE), None);
        assert_eq!(alloc.free_frames(), 2047);
        // Sub-frame alignment means frame alignment.
        assert_eq!(alloc.allocate_contiguous(2, 8).map(PhysFrame::start), Some(8 * MIB - 0x2000));
    }

    #[test]
    fn counts_track_every_operation_exactly() {
        let mut alloc = FrameAllocator::new(messy_map(), &messy_reserved());
        assert_eq!(alloc.free_frames(), 1064);
        let a = alloc.allocate().unwrap();
        let b = alloc.allocate_below(MIB).unwrap();
        let c = alloc.allocate_contiguous(8, 32 * KIB).unwrap();
        assert_eq!(alloc.free_frames(), 1064 - 10);
        assert_eq!(alloc.total_usable(), 1064);
        alloc.deallocate(a).unwrap();
        alloc.deallocate(b).unwrap();
        // `c` names the first frame of the run; each frame is returned on its own.
        for i in 0..8 {
            alloc.deallocate(PhysFrame::containing(c.start() + i * FRAME_SIZE)).unwrap();
            assert_eq!(alloc.free_frames(), 1064 - 8 + i + 1);
        }
        assert_eq!(ranges(&alloc), MESSY_FREE);
        assert_eq!(alloc.total_usable(), 1064);
    }

    #[test]
    fn deallocate_restores_the_original_ranges() {
        let mut alloc = FrameAllocator::new(messy_map(), &messy_reserved());
        let frames = drain(&mut alloc);
        // Every other frame of the first 200 first (100 isolated ranges), then the frames
        // between them (each merging both neighbours), then the rest.
        let isolated = frames.iter().take(200).step_by(2);
        let bridges = frames.iter().skip(1).take(200).step_by(2);
        for &start in isolated.chain(bridges).chain(frames.iter().skip(200)) {
            alloc.deallocate(PhysFrame::from_start(start).unwrap()).unwrap();
        }
        assert_eq!(ranges(&alloc), MESSY_FREE);
    }

    #[test]
    fn deallocate_refuses_double_frees_and_foreign_frames() {
        let mut alloc = FrameAllocator::new(messy_map(), &messy_reserved());
        let frame = alloc.allocate().unwrap();
        assert_eq!(alloc.deallocate(frame), Ok(()));
        assert_eq!(alloc.deallocate(frame), Err(DeallocError::AlreadyFree));
        for foreign in
            [0, 0x8000, 0x9_F000, 0x10_0000, 0x20_0000, 0x30_0000, 0x4F_F000, 0x7001_0000, 0xFFFF_FFFF_FFFF_F000]
        {
            assert_eq!(
                alloc.deallocate(PhysFrame::containing(foreign)),
                Err(DeallocError::NotAllocatable),
                "{foreign:#x}"
            );
        }
        assert_eq!(alloc.free_frames(), 1064);
    }

    #[test]
    fn deallocate_reports_a_full_table_instead_of_leaking_silently() {
        // 128 disjoint three-frame ranges fill the table.
        let map: Vec<MemoryRegion> = (1..=MAX_RANGES as u64).map(|i| usable(i * MIB, i * MIB + 0x3000)).collect();
        let mut alloc = FrameAllocator::new(map, &[]);
        assert_eq!(alloc.free_ranges().count(), MAX_RANGES);
        let top = 128 * MIB;
        let taken: Vec<u64> = (0..3).filter_map(|_| alloc.allocate()).map(PhysFrame::start).collect();
        assert_eq!(taken, [top + 0x2000, top + 0x1000, top]);
        // Freeing the top frame refills the table; the bottom one would need a 129th range.
        assert_eq!(alloc.deallocate(PhysFrame::containing(top + 0x2000)), Ok(()));
        assert_eq!(alloc.deallocate(PhysFrame::containing(top)), Err(DeallocError::OutOfRanges));
        assert_eq!(alloc.free_frames(), 3 * 127 + 1);
        // Once the middle frame bridges the gap, everything fits again.
        assert_eq!(alloc.deallocate(PhysFrame::containing(top + 0x1000)), Ok(()));
        assert_eq!(alloc.deallocate(PhysFrame::containing(top)), Ok(()));
        assert_eq!(alloc.free_frames(), 3 * 128);
        assert_eq!(alloc.free_ranges().count(), MAX_RANGES);
    }

    #[test]
    fn full_table_allocate_contiguous_takes_an_aligned_range_bottom_instead_of_splitting() {
        // 128 four-frame ranges starting on 1 MiB boundaries fill the table.
        let map: Vec<MemoryRegion> = (1..=MAX_RANGES as u64).map(|i| usable(i * MIB, i * MIB + 0x4000)).collect();
        let mut alloc = FrameAllocator::new(map, &[]);
        // The highest 8 KiB-aligned frame, +0x2000, would split the top range in two and
        // the table has no slot left, so the range's aligned bottom frame is taken instead.
        assert_eq!(alloc.allocate_contiguous(1, 8 * KIB).map(PhysFrame::start), Some(128 * MIB));
        assert_eq!(alloc.free_ranges().last(), Some(Range::new(128 * MIB + 0x1000, 128 * MIB + 0x4000)));
        assert_eq!(alloc.free_frames(), 4 * 128 - 1);
    }

    #[test]
    fn full_table_allocate_contiguous_fails_rather_than_losing_track_of_memory() {
        // 128 three-frame ranges at +0x1000 of each MiB: an 8 KiB-aligned frame exists only
        // in the middle of each, and taking it would need a 129th range.
        let map: Vec<MemoryRegion> =
            (1..=MAX_RANGES as u64).map(|i| usable(i * MIB + 0x1000, i * MIB + 0x4000)).collect();
        let mut alloc = FrameAllocator::new(map, &[]);
        assert_eq!(alloc.allocate_contiguous(1, 8 * KIB), None);
        assert_eq!(alloc.free_frames(), 3 * 128);
        assert_eq!(alloc.dropped_ranges(), 0);
        // Unaligned requests are served from the top without splitting.
        assert_eq!(alloc.allocate_contiguous(1, 4 * KIB).map(PhysFrame::start), Some(128 * MIB + 0x3000));
    }

    #[test]
    fn more_usable_regions_than_capacity_keep_the_largest_and_count_the_rest() {
        // 300 disjoint regions of 1..=300 frames.
        let map: Vec<MemoryRegion> =
            (0..300u64).map(|i| usable((i + 1) * 16 * MIB, (i + 1) * 16 * MIB + (i + 1) * FRAME_SIZE)).collect();
        let alloc = FrameAllocator::new(map, &[]);
        assert_eq!(alloc.free_ranges().count(), MAX_RANGES);
        assert_eq!(alloc.dropped_ranges(), 300 - MAX_RANGES);
        // Regions 172..300 (173..=300 frames) survive.
        assert_eq!(alloc.free_frames(), (173..=300).sum::<u64>());
        assert_eq!(alloc.free_ranges().next(), Some(Range::new(173 * 16 * MIB, 173 * 16 * MIB + 173 * FRAME_SIZE)));
    }

    #[test]
    fn many_adjacent_usable_regions_merge_without_loss() {
        let map: Vec<MemoryRegion> =
            (0..1000u64).map(|i| usable(MIB + i * FRAME_SIZE, MIB + (i + 1) * FRAME_SIZE)).collect();
        let alloc = FrameAllocator::new(map, &[]);
        assert_eq!(ranges(&alloc), [(MIB, MIB + 1000 * FRAME_SIZE)]);
        assert_eq!(alloc.dropped_ranges(), 0);
    }

    #[test]
    fn more_exclusions_than_capacity_lose_memory_but_never_hand_out_excluded_frames() {
        // 300 single-frame holes, one every other frame, in 3 MiB of usable memory.
        let holes: Vec<u64> = (0..300u64).map(|k| MIB + 2 * k * FRAME_SIZE).collect();
        let mut map: Vec<MemoryRegion> = holes.iter().map(|&h| reserved(h, h + FRAME_SIZE)).collect();
        map.push(usable(MIB, 4 * MIB));
        let mut alloc = FrameAllocator::new(map, &[]);
        // Frame 0 plus 300 holes is 301 exclusions: 173 merges, each costing the one-frame
        // gap between two holes.
        assert_eq!(alloc.dropped_ranges(), 173);
        assert_eq!(alloc.free_frames(), (768 - 300) - 173);
        let frames = drain(&mut alloc);
        assert_eq!(frames.len(), 295);
        let holes: BTreeSet<u64> = holes.into_iter().collect();
        assert!(frames.iter().all(|f| !holes.contains(f) && (MIB..4 * MIB).contains(f)));
        let unique: BTreeSet<u64> = frames.iter().copied().collect();
        assert_eq!(unique.len(), frames.len());
    }

    /// A full table of one-frame ranges at 64 KiB steps.
    fn full_table() -> RangeTable {
        let mut t = RangeTable::new();
        for i in 0..MAX_RANGES as u64 {
            assert!(t.push(Range::new(i * 0x1_0000, i * 0x1_0000 + FRAME_SIZE)));
        }
        t
    }

    #[test]
    fn covering_insert_into_a_full_table_merges_the_closest_pair() {
        let mut t = full_table();
        // Range 5 now ends one frame short of range 6: the smallest gap anywhere.
        t.ranges[5].end = 0x6_0000 - FRAME_SIZE;
        let far = Range::new(0x1000_0000, 0x1000_1000);
        assert!(t.insert_covering(far));
        assert_eq!(t.len, MAX_RANGES);
        assert_eq!(t.as_slice()[5], Range::new(0x5_0000, 0x6_1000));
        assert_eq!(t.as_slice().last(), Some(&far));
    }

    #[test]
    fn covering_insert_into_a_full_table_widens_the_nearest_range_when_that_is_cheapest() {
        let mut t = full_table();
        // 4 KiB above range 3's end, while stored ranges are 60 KiB apart.
        let near = Range::new(0x3_2000, 0x3_3000);
        assert!(t.insert_covering(near));
        assert_eq!(t.len, MAX_RANGES);
        assert_eq!(t.as_slice()[3], Range::new(0x3_0000, 0x3_3000));
    }

    #[test]
    fn inserting_a_touching_range_into_a_full_table_loses_nothing() {
        let mut t = full_table();
        assert!(!t.insert_covering(Range::new(0x7_1000, 0x7_2000)));
        assert!(!t.insert_lossy(Range::new(0x8_1000, 0x8_3000)));
        assert_eq!(t.as_slice()[7], Range::new(0x7_0000, 0x7_2000));
        assert_eq!(t.as_slice()[8], Range::new(0x8_0000, 0x8_3000));
        assert_eq!(t.frames(), MAX_RANGES as u64 + 3);
    }

    #[test]
    fn lossy_insert_into_a_full_table_keeps_the_larger_range() {
        let mut t = full_table();
        let big = Range::new(0x1000_0000, 0x1000_2000);
        assert!(t.insert_lossy(big));
        assert_eq!(t.frames(), MAX_RANGES as u64 - 1 + 2);
        assert!(t.as_slice().contains(&big));
        // A range no larger than the smallest stored one is the one dropped.
        let small = Range::new(0x2000_0000, 0x2000_1000);
        assert!(t.insert_lossy(small));
        assert!(!t.as_slice().contains(&small));
        assert_eq!(t.frames(), MAX_RANGES as u64 + 1);
    }

    #[test]
    fn reserved_ranges_win_even_if_given_as_huge_or_inverted() {
        let alloc = FrameAllocator::new(
            [usable(0, 16 * MIB)],
            &[Range::new(5 * MIB, 4 * MIB), Range::new(15 * MIB, u64::MAX), Range::new(0x1234, 0x1235)],
        );
        assert_eq!(ranges(&alloc), [(0x2000, 15 * MIB)]);
    }

    #[test]
    fn empty_map_yields_an_empty_allocator() {
        let mut alloc = FrameAllocator::new([], &[]);
        assert_eq!(alloc.allocate(), None);
        assert_eq!(alloc.allocate_below(u64::MAX), None);
        assert_eq!(alloc.allocate_contiguous(1, FRAME_SIZE), None);
        assert_eq!(alloc.free_frames(), 0);
        assert_eq!(alloc.total_usable(), 0);
        assert_eq!(alloc.deallocate(PhysFrame::containing(0x5000)), Err(DeallocError::NotAllocatable));
    }
}
