//! A domain's RAM: host frames behind guest-physical 0..size, in 2 MiB chunks where
//! the frame allocator has them (so the EPT can use 2 MiB pages) and 4 KiB frames
//! otherwise. The hypervisor reaches guest RAM through the direct map; every access
//! from here is bounds-checked against the domain's size, never trusting a guest value.

use crate::mm::addr::{GuestPhysAddr, HostPhysAddr};
use crate::mm::{paging, phys};
use alloc::vec::Vec;

const CHUNK_2M: u64 = 2 * 1024 * 1024;
const PAGE: u64 = 4096;

/// One physically contiguous piece of guest RAM.
#[derive(Debug, Clone, Copy)]
pub struct Chunk {
    pub gpa: GuestPhysAddr,
    pub hpa: HostPhysAddr,
    pub len: u64,
}

#[derive(Debug)]
pub struct GuestMemory {
    size: u64,
    chunks: Vec<Chunk>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryError {
    /// The machine has no frames left for this domain.
    OutOfMemory { wanted: u64, got: u64 },
    /// An access outside 0..size.
    OutOfBounds { gpa: u64, len: u64 },
}

impl core::fmt::Display for MemoryError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::OutOfMemory { wanted, got } => write!(
                f,
                "out of host memory: the domain needs {} MiB and only {} MiB could be allocated; give the machine more RAM or the domain less",
                wanted >> 20,
                got >> 20
            ),
            Self::OutOfBounds { gpa, len } => {
                write!(f, "{len:#x} bytes at guest-physical {gpa:#x} lie outside the domain's memory")
            }
        }
    }
}

impl GuestMemory {
    /// Allocates and zeroes `size` bytes (a multiple of 4 KiB) of guest RAM.
    pub fn allocate(size: u64) -> Result<Self, MemoryError> {
        let size = size.next_multiple_of(PAGE);
        let mut mem = GuestMemory { size, chunks: Vec::new() };
        let mut gpa = 0;
        while gpa < size {
            let remaining = size - gpa;
            let big = gpa % CHUNK_2M == 0 && remaining >= CHUNK_2M;
            // Zeroed ahead of time when the scrubber has a chunk ready (`mm::scrub`).
            if big && let Some(hpa) = crate::mm::scrub::take_chunk() {
                mem.push(Chunk { gpa: GuestPhysAddr(gpa), hpa: HostPhysAddr(hpa), len: CHUNK_2M });
                gpa += CHUNK_2M;
                continue;
            }
            let (hpa, len) = match big.then(|| phys::allocate_contiguous(CHUNK_2M / PAGE, CHUNK_2M)).flatten() {
                Some(hpa) => (hpa, CHUNK_2M),
                None => match phys::allocate() {
                    Some(hpa) => (hpa, PAGE),
                    None => {
                        mem.free();
                        return Err(MemoryError::OutOfMemory { wanted: size, got: gpa });
                    }
                },
            };
            // SAFETY: freshly allocated frames owned by this domain, through the direct map.
            unsafe { core::ptr::write_bytes(paging::phys_to_virt(hpa) as *mut u8, 0, len as usize) };
            mem.push(Chunk { gpa: GuestPhysAddr(gpa), hpa: HostPhysAddr(hpa), len });
            gpa += len;
        }
        Ok(mem)
    }

    /// Appends a chunk, merging it with the previous one when both are contiguous.
    fn push(&mut self, c: Chunk) {
        if let Some(last) = self.chunks.last_mut() {
            let contiguous = last.gpa.0 + last.len == c.gpa.0 && last.hpa.0 + last.len == c.hpa.0;
            if contiguous && c.len == PAGE && last.len % CHUNK_2M != 0 {
                last.len += c.len;
                return;
            }
        }
        self.chunks.push(c);
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    /// The host-physical address behind `gpa` and how many bytes are contiguous from
    /// there; `None` outside the domain's RAM.
    pub fn host_address(&self, gpa: u64) -> Option<(u64, u64)> {
        self.locate(gpa)
    }

    /// The host-physical address behind `gpa`, and how many bytes are contiguous from there.
    fn locate(&self, gpa: u64) -> Option<(u64, u64)> {
        let i = self.chunks.partition_point(|c| c.gpa.0 + c.len <= gpa);
        let c = self.chunks.get(i)?;
        let off = gpa.checked_sub(c.gpa.0)?;
        (off < c.len).then(|| (c.hpa.0 + off, c.len - off))
    }

    fn check(&self, gpa: u64, len: u64) -> Result<(), MemoryError> {
        match gpa.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(MemoryError::OutOfBounds { gpa, len }),
        }
    }

    /// Copies `data` into guest RAM at `gpa`.
    pub fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.check(gpa, data.len() as u64)?;
        let mut done = 0usize;
        while done < data.len() {
            let (hpa, contiguous) =
                self.locate(gpa + done as u64).ok_or(MemoryError::OutOfBounds { gpa, len: data.len() as u64 })?;
            let n = (contiguous as usize).min(data.len() - done);
            // SAFETY: the range lies inside a chunk of this domain's RAM (checked above),
            // reached through the direct map; `data` cannot alias guest RAM mutably.
            unsafe { core::ptr::copy_nonoverlapping(data[done..].as_ptr(), paging::phys_to_virt(hpa) as *mut u8, n) };
            done += n;
        }
        Ok(())
    }

    /// Fills `len` bytes at `gpa` with zeroes.
    pub fn zero(&mut self, gpa: u64, len: u64) -> Result<(), MemoryError> {
        self.check(gpa, len)?;
        let mut done = 0u64;
        while done < len {
            let (hpa, contiguous) = self.locate(gpa + done).ok_or(MemoryError::OutOfBounds { gpa, len })?;
            let n = contiguous.min(len - done);
            // SAFETY: as in `write`.
            unsafe { core::ptr::write_bytes(paging::phys_to_virt(hpa) as *mut u8, 0, n as usize) };
            done += n;
        }
        Ok(())
    }

    /// Copies guest RAM at `gpa` into `buf`.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.check(gpa, buf.len() as u64)?;
        let mut done = 0usize;
        while done < buf.len() {
            let (hpa, contiguous) =
                self.locate(gpa + done as u64).ok_or(MemoryError::OutOfBounds { gpa, len: buf.len() as u64 })?;
            let n = (contiguous as usize).min(buf.len() - done);
            // SAFETY: as in `write`; the guest may change the bytes concurrently, which
            // only makes the copy stale, never unsound for plain bytes.
            unsafe {
                core::ptr::copy_nonoverlapping(paging::phys_to_virt(hpa) as *const u8, buf[done..].as_mut_ptr(), n)
            };
            done += n;
        }
        Ok(())
    }

    /// Gives the memory back to the frame allocator once the domain can never run again
    /// (no vCPU inside it, none to be scheduled); returns how many bytes were released.
    /// Later accesses find an empty domain: every read or write is out of bounds.
    pub fn release(&mut self) -> u64 {
        let size = self.size;
        self.free();
        size
    }

    /// Returns every frame to the allocator.
    fn free(&mut self) {
        for c in self.chunks.drain(..) {
            for off in (0..c.len).step_by(PAGE as usize) {
                phys::deallocate(c.hpa.0 + off);
            }
        }
        self.size = 0;
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        self.free();
    }
}

/// The guest page walker reads page tables and instruction bytes through this: always
/// bounds-checked, so a guest page table pointing outside RAM ends the walk.
impl crate::mm::guest_paging::GuestRam for GuestMemory {
    /// One load for an aligned entry (page-table walks, on every emulated MMIO access),
    /// instead of a byte copy through `read`.
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        if gpa.is_multiple_of(8)
            && let Some((hpa, contiguous)) = self.locate(gpa)
            && contiguous >= 8
        {
            // SAFETY: eight bytes inside a chunk of this domain's RAM, 8-aligned, through
            // the direct map; the guest may change them concurrently, which makes the
            // value stale, never the read unsound for a plain integer.
            return Some(unsafe { core::ptr::read_volatile(paging::phys_to_virt(hpa) as *const u64) });
        }
        let mut b = [0u8; 8];
        self.read(gpa, &mut b).ok()?;
        Some(u64::from_le_bytes(b))
    }
}

impl crate::mm::guest_paging::GuestBytes for GuestMemory {
    fn read_bytes(&self, gpa: u64, buf: &mut [u8]) -> Option<()> {
        self.read(gpa, buf).ok()
    }
}
