//! Walking a guest's own page tables in software: guest-linear to guest-physical.
//!
//! The hypervisor needs this whenever a guest hands it a linear address: the bytes of an
//! instruction that touched MMIO (fetched at CS:RIP), and later hypercall buffers. The
//! walk follows SDM Vol. 3A chapter "Paging": no paging (CR0.PG = 0), 32-bit paging (4 KiB
//! pages and, with CR4.PSE, 4 MiB pages with PSE-36 high bits), PAE paging (the four
//! PDPTEs come from the VMCS, as the CPU loaded them at the last CR3 write, SDM Vol. 3C
//! "Guest Non-Register State"), and 4- or 5-level paging (CR4.LA57).
//!
//! Checks: present bits, reserved physical-address bits above 52, canonical addresses,
//! write permission for supervisor writes when CR0.WP is set, and execute-disable for
//! fetches when EFER.NXE is set. The walk never sets accessed or dirty bits: the hardware
//! walk that faulted, or the access the hypervisor performs on the guest's behalf, is the
//! guest's business, and no OS we know of depends on A/D bits of memory only the
//! hypervisor wrote (KVM's emulator does set them; document it if that ever matters).
//!
//! Guest RAM is read through [`GuestRam`], which refuses anything outside the domain's
//! memory, so a page table pointing at MMIO or beyond RAM ends the walk with an error
//! rather than a host access.

/// Reads guest-physical memory for the walker.
pub trait GuestRam {
    /// The 8 bytes at `gpa` (8-byte aligned), or `None` outside guest RAM.
    fn read_u64(&self, gpa: u64) -> Option<u64>;
    /// The 4 bytes at `gpa` (4-byte aligned), or `None` outside guest RAM.
    fn read_u32(&self, gpa: u64) -> Option<u32> {
        let q = self.read_u64(gpa & !7)?;
        Some((q >> ((gpa & 4) * 8)) as u32)
    }
}

/// Most entries one walk reads: five levels of 5-level paging.
pub const MAX_WALK_ENTRIES: usize = 5;

/// The paging-structure entries a walk read, as (guest-physical address, value): with
/// the same context, the same entries at the same addresses give the same result, so a
/// caller can keep a translation and re-check it by reading these few entries again
/// instead of walking (the MMIO path's instruction fetch does, `vmexit::mmio`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trace {
    pub entries: [(u64, u64); MAX_WALK_ENTRIES],
    pub len: usize,
}

impl Trace {
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.entries.iter().take(self.len).copied()
    }
}

/// A [`GuestRam`] that records what the walk read into a [`Trace`].
pub struct Traced<'a, R: GuestRam> {
    ram: &'a R,
    trace: core::cell::Cell<Trace>,
}

impl<'a, R: GuestRam> Traced<'a, R> {
    pub fn new(ram: &'a R) -> Self {
        Traced { ram, trace: core::cell::Cell::new(Trace::default()) }
    }

    pub fn trace(&self) -> Trace {
        self.trace.get()
    }
}

impl<R: GuestRam> GuestRam for Traced<'_, R> {
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        let value = self.ram.read_u64(gpa)?;
        let mut t = self.trace.get();
        if let Some(slot) = t.entries.get_mut(t.len) {
            *slot = (gpa, value);
        }
        // One past the capacity marks a trace that cannot be trusted.
        t.len = (t.len + 1).min(MAX_WALK_ENTRIES + 1);
        self.trace.set(t);
        Some(value)
    }
}

impl<R: GuestBytes> GuestBytes for Traced<'_, R> {
    fn read_bytes(&self, gpa: u64, buf: &mut [u8]) -> Option<()> {
        self.ram.read_bytes(gpa, buf)
    }
}

/// Which translation the guest has on (from CR0, CR4 and EFER).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagingMode {
    /// CR0.PG = 0: linear = physical (truncated to 32 bits outside long mode).
    None,
    /// 32-bit paging; `pse` allows 4 MiB pages.
    Bits32 { pse: bool },
    /// PAE paging with the PDPTEs the CPU holds.
    Pae { pdptes: [u64; 4] },
    /// 4-level (or, with `la57`, 5-level) paging.
    Long { la57: bool },
}

/// What the guest state says about paging and permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub mode: PagingMode,
    pub cr3: u64,
    /// CR0.WP: supervisor writes honour read-only pages.
    pub write_protect: bool,
    /// EFER.NXE: the XD bit is honoured.
    pub nxe: bool,
}

const CR0_PG: u64 = 1 << 31;
const CR0_WP: u64 = 1 << 16;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

impl Context {
    /// The context from the guest's control registers (as the CPU sees them, not the read
    /// shadows) and, for PAE paging, the PDPTEs from the VMCS.
    pub fn from_registers(cr0: u64, cr3: u64, cr4: u64, efer: u64, pdptes: [u64; 4]) -> Context {
        let mode = if cr0 & CR0_PG == 0 {
            PagingMode::None
        } else if efer & EFER_LMA != 0 {
            PagingMode::Long { la57: cr4 & CR4_LA57 != 0 }
        } else if cr4 & CR4_PAE != 0 {
            PagingMode::Pae { pdptes }
        } else {
            PagingMode::Bits32 { pse: cr4 & CR4_PSE != 0 }
        };
        Context { mode, cr3, write_protect: cr0 & CR0_WP != 0, nxe: efer & EFER_NXE != 0 }
    }
}

/// The kind of access the hypervisor performs for the guest (always at CPL 0: user-mode
/// guest code never reaches the hypervisor with a pointer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Fetch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkError {
    /// A paging-structure entry on the way is not present (the guest would see #PF).
    NotPresent { linear: u64 },
    /// The page forbids the access (read-only with CR0.WP, or XD for a fetch).
    Protection { linear: u64 },
    /// A reserved bit is set in an entry (#PF with RSVD on hardware).
    Reserved { linear: u64 },
    /// A non-canonical address in long mode (#GP on hardware).
    NonCanonical { linear: u64 },
    /// A paging structure lies outside guest RAM (in MMIO or beyond memory).
    TableOutsideRam { gpa: u64 },
}

impl core::fmt::Display for WalkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::NotPresent { linear } => write!(f, "linear address {linear:#x} is not mapped by the guest"),
            Self::Protection { linear } => write!(f, "the guest's page tables forbid this access at {linear:#x}"),
            Self::Reserved { linear } => write!(f, "reserved bit set in a guest page-table entry for {linear:#x}"),
            Self::NonCanonical { linear } => write!(f, "non-canonical address {linear:#x}"),
            Self::TableOutsideRam { gpa } => write!(f, "a guest page table at {gpa:#x} lies outside guest RAM"),
        }
    }
}

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const PS: u64 = 1 << 7;
const XD: u64 = 1 << 63;
/// Physical-address bits of an entry in PAE and long-mode tables (bits 51:12).
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
/// Bits 62:52 are ignored (or protection keys) and bit 63 is XD; with NXE off, XD is reserved.
const fn is_canonical(linear: u64, bits: u32) -> bool {
    let shift = 64 - bits;
    (((linear << shift) as i64) >> shift) as u64 == linear
}

/// Translates `linear` for `access`; returns the guest-physical address.
pub fn translate(ram: &impl GuestRam, ctx: &Context, linear: u64, access: Access) -> Result<u64, WalkError> {
    match ctx.mode {
        PagingMode::None => Ok(linear & 0xFFFF_FFFF),
        PagingMode::Bits32 { pse } => walk32(ram, ctx, linear & 0xFFFF_FFFF, pse, access),
        PagingMode::Pae { pdptes } => {
            let linear = linear & 0xFFFF_FFFF;
            let pdpte = pdptes[(linear >> 30) as usize & 3];
            if pdpte & P == 0 {
                return Err(WalkError::NotPresent { linear });
            }
            // PDPTEs have no R/W, U/S or XD bits; bits 2:1 and 8:5 are reserved (SDM Vol. 3A "PAE Paging").
            if pdpte & 0x1E6 != 0 || pdpte & !ADDR_MASK & !0xE19 != 0 {
                return Err(WalkError::Reserved { linear });
            }
            walk_levels(ram, ctx, linear, pdpte & ADDR_MASK, 2, access)
        }
        PagingMode::Long { la57 } => {
            let bits = if la57 { 57 } else { 48 };
            if !is_canonical(linear, bits) {
                return Err(WalkError::NonCanonical { linear });
            }
            let levels = if la57 { 5 } else { 4 };
            walk_levels(ram, ctx, linear, ctx.cr3 & ADDR_MASK, levels, access)
        }
    }
}

/// Checks one entry's permission bits for the access.
fn permitted(ctx: &Context, entry: u64, access: Access) -> bool {
    match access {
        Access::Read => true,
        Access::Write => entry & RW != 0 || !ctx.write_protect,
        Access::Fetch => !(ctx.nxe && entry & XD != 0),
    }
}

/// PAE and long-mode tables: 512 eight-byte entries per level, 9 bits of the address each.
fn walk_levels(
    ram: &impl GuestRam,
    ctx: &Context,
    linear: u64,
    mut table: u64,
    levels: u32,
    access: Access,
) -> Result<u64, WalkError> {
    let mut allowed = true;
    for level in (1..=levels).rev() {
        let shift = 12 + 9 * (level - 1);
        let entry_gpa = table + ((linear >> shift) & 0x1FF) * 8;
        let entry = ram.read_u64(entry_gpa).ok_or(WalkError::TableOutsideRam { gpa: entry_gpa })?;
        if entry & P == 0 {
            return Err(WalkError::NotPresent { linear });
        }
        if !ctx.nxe && entry & XD != 0 {
            return Err(WalkError::Reserved { linear });
        }
        allowed &= permitted(ctx, entry, access);
        let large = entry & PS != 0;
        match (level, large) {
            // PS is reserved in PML5/PML4 entries.
            (4 | 5, true) => return Err(WalkError::Reserved { linear }),
            // 1 GiB (level 3) or 2 MiB (level 2) page: bits 12.. up to the page size are PAT/reserved.
            (2 | 3, true) => {
                let page = 1u64 << shift;
                // Bit 12 is PAT; the bits between it and the page size must be zero.
                if entry & ADDR_MASK & (page - 1) & !(1 << 12) != 0 {
                    return Err(WalkError::Reserved { linear });
                }
                if !allowed {
                    return Err(WalkError::Protection { linear });
                }
                return Ok((entry & ADDR_MASK & !(page - 1)) | (linear & (page - 1)));
            }
            (1, _) => {
                if !allowed {
                    return Err(WalkError::Protection { linear });
                }
                return Ok((entry & ADDR_MASK) | (linear & 0xFFF));
            }
            _ => table = entry & ADDR_MASK,
        }
    }
    // `levels` is at least 2, so the loop always returns; this is unreachable in practice
    // but reported as an error rather than a panic.
    Err(WalkError::NotPresent { linear })
}

/// 32-bit paging: two levels of 1024 four-byte entries; no XD bit.
fn walk32(ram: &impl GuestRam, ctx: &Context, linear: u64, pse: bool, access: Access) -> Result<u64, WalkError> {
    let pde_gpa = (ctx.cr3 & 0xFFFF_F000) + ((linear >> 22) & 0x3FF) * 4;
    let pde = u64::from(ram.read_u32(pde_gpa).ok_or(WalkError::TableOutsideRam { gpa: pde_gpa })?);
    if pde & P == 0 {
        return Err(WalkError::NotPresent { linear });
    }
    let mut allowed = permitted(ctx, pde, access);
    if pse && pde & PS != 0 {
        if !allowed {
            return Err(WalkError::Protection { linear });
        }
        // PSE-36: bits 20:13 of the PDE are physical-address bits 39:32; bit 21 is reserved.
        if pde & (1 << 21) != 0 {
            return Err(WalkError::Reserved { linear });
        }
        let high = ((pde >> 13) & 0xFF) << 32;
        return Ok(high | (pde & 0xFFC0_0000) | (linear & 0x3F_FFFF));
    }
    let pte_gpa = (pde & 0xFFFF_F000) + ((linear >> 12) & 0x3FF) * 4;
    let pte = u64::from(ram.read_u32(pte_gpa).ok_or(WalkError::TableOutsideRam { gpa: pte_gpa })?);
    if pte & P == 0 {
        return Err(WalkError::NotPresent { linear });
    }
    allowed &= permitted(ctx, pte, access);
    if !allowed {
        return Err(WalkError::Protection { linear });
    }
    Ok((pte & 0xFFFF_F000) | (linear & 0xFFF))
}

/// Guest RAM that can also be copied from, byte-wise, for [`read_linear`].
pub trait GuestBytes: GuestRam {
    /// Copies guest-physical bytes at `gpa` into `buf`; `None` if any lies outside RAM.
    fn read_bytes(&self, gpa: u64, buf: &mut [u8]) -> Option<()>;
}

/// Reads `buf.len()` bytes at guest-linear `linear`, translating each page separately
/// (consecutive linear pages need not be consecutive physically). Returns how many bytes
/// were read before the first page that could not be translated or read, so that an
/// instruction fetch near the end of a mapping gets what exists.
pub fn read_linear(ram: &impl GuestBytes, ctx: &Context, linear: u64, buf: &mut [u8], access: Access) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let addr = linear.wrapping_add(done as u64);
        let in_page = (4096 - (addr & 0xFFF)) as usize;
        let n = in_page.min(buf.len() - done);
        let Ok(gpa) = translate(ram, ctx, addr, access) else { break };
        if ram.read_bytes(gpa, &mut buf[done..done + n]).is_none() {
            break;
        }
        done += n;
    }
    done
}

/// Most pieces a guest buffer may have: 64 KiB plus one partial page.
pub const MAX_PIECES: usize = 17;

/// A guest buffer as guest-physical pieces, each inside one page and inside guest RAM.
/// Fixed capacity: no allocation on the hypercall path.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pieces {
    items: [(u64, usize); MAX_PIECES],
    len: usize,
}

impl Pieces {
    fn push(&mut self, gpa: u64, n: usize) -> Option<()> {
        *self.items.get_mut(self.len)? = (gpa, n);
        self.len += 1;
        Some(())
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, usize)> + '_ {
        self.items.iter().take(self.len).copied()
    }
}

/// Why a guest buffer cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferError {
    /// Some byte is unmapped, forbidden for the access, non-canonical, wraps around the
    /// address space, or lies outside guest RAM (in MMIO or beyond memory).
    Fault,
    /// More than [`MAX_PIECES`] pages.
    TooLong,
}

/// The guest-physical pieces of the linear buffer `[addr, addr + len)` for `access`:
/// every page translated through the guest's own tables (`ctx`) and checked to lie in
/// its RAM (`[0, ram_size)`), all before anything is copied.
pub fn buffer(
    ram: &impl GuestRam,
    ram_size: u64,
    ctx: &Context,
    addr: u64,
    len: usize,
    access: Access,
) -> Result<Pieces, BufferError> {
    let mut out = Pieces::default();
    let mut done = 0usize;
    while done < len {
        let linear = addr.checked_add(done as u64).ok_or(BufferError::Fault)?;
        let n = ((4096 - (linear & 0xFFF)) as usize).min(len - done);
        let gpa = translate(ram, ctx, linear, access).map_err(|_| BufferError::Fault)?;
        if gpa.checked_add(n as u64).is_none_or(|end| end > ram_size) {
            return Err(BufferError::Fault);
        }
        out.push(gpa, n).ok_or(BufferError::TooLong)?;
        done += n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Sparse guest RAM of `size` bytes.
    struct Ram {
        size: u64,
        bytes: HashMap<u64, u8>,
    }

    impl Ram {
        fn new(size: u64) -> Self {
            Ram { size, bytes: HashMap::new() }
        }
        fn put64(&mut self, gpa: u64, v: u64) {
            for (i, b) in v.to_le_bytes().iter().enumerate() {
                self.bytes.insert(gpa + i as u64, *b);
            }
        }
        fn put32(&mut self, gpa: u64, v: u32) {
            for (i, b) in v.to_le_bytes().iter().enumerate() {
                self.bytes.insert(gpa + i as u64, *b);
            }
        }
        fn byte(&self, gpa: u64) -> u8 {
            self.bytes.get(&gpa).copied().unwrap_or(0)
        }
    }

    impl GuestRam for Ram {
        fn read_u64(&self, gpa: u64) -> Option<u64> {
            if gpa.checked_add(8)? > self.size {
                return None;
            }
            Some(u64::from_le_bytes(core::array::from_fn(|i| self.byte(gpa + i as u64))))
        }
    }

    impl GuestBytes for Ram {
        fn read_bytes(&self, gpa: u64, buf: &mut [u8]) -> Option<()> {
            if gpa.checked_add(buf.len() as u64)? > self.size {
                return None;
            }
            for (i, b) in buf.iter_mut().enumerate() {
                *b = self.byte(gpa + i as u64);
            }
            Some(())
        }
    }

    fn long(cr3: u64) -> Context {
        Context { mode: PagingMode::Long { la57: false }, cr3, write_protect: true, nxe: true }
    }

    /// 4-level tables at 0x1000 (PML4), 0x2000 (PDPT), 0x3000 (PD), 0x4000 (PT).
    fn four_level() -> Ram {
        let mut ram = Ram::new(16 << 20);
        ram.put64(0x1000, 0x2000 | P | RW);
        ram.put64(0x2000, 0x3000 | P | RW);
        // PD[0] -> PT; PD[1]: a 2 MiB page at 0x60_0000, read-only, XD.
        ram.put64(0x3000, 0x4000 | P | RW);
        ram.put64(0x3008, 0x60_0000 | P | PS | XD);
        // PT[5] -> 0x9000 writable; PT[6] not present.
        ram.put64(0x4000 + 5 * 8, 0x9000 | P | RW);
        // PDPT[1]: a 1 GiB page at 0x4000_0000 (beyond RAM: translation is still fine).
        ram.put64(0x2008, 0x4000_0000 | P | RW | PS);
        ram
    }

    #[test]
    fn no_paging_is_identity_truncated_to_32_bits() {
        let ram = Ram::new(4096);
        let ctx = Context::from_registers(0x11, 0, 0, 0, [0; 4]);
        assert_eq!(ctx.mode, PagingMode::None);
        assert_eq!(translate(&ram, &ctx, 0x1_0000_1234, Access::Read), Ok(0x1234));
    }

    #[test]
    fn four_level_walk_maps_4k_2m_and_1g_pages() {
        let ram = four_level();
        let ctx = long(0x1000);
        assert_eq!(translate(&ram, &ctx, 0x5123, Access::Write), Ok(0x9123));
        assert_eq!(translate(&ram, &ctx, 0x20_0000 + 0x1_2345, Access::Read), Ok(0x61_2345));
        assert_eq!(translate(&ram, &ctx, 0x4000_0000 + 0x77, Access::Read), Ok(0x4000_0077));
    }

    #[test]
    fn missing_entries_and_permissions_are_reported() {
        let ram = four_level();
        let ctx = long(0x1000);
        assert_eq!(translate(&ram, &ctx, 0x6000, Access::Read), Err(WalkError::NotPresent { linear: 0x6000 }));
        assert_eq!(translate(&ram, &ctx, 0x20_0000, Access::Write), Err(WalkError::Protection { linear: 0x20_0000 }));
        assert_eq!(translate(&ram, &ctx, 0x20_0000, Access::Fetch), Err(WalkError::Protection { linear: 0x20_0000 }));
        // Without CR0.WP a supervisor write to a read-only page is allowed.
        let no_wp = Context { write_protect: false, ..ctx };
        assert_eq!(translate(&ram, &no_wp, 0x20_0000, Access::Write), Ok(0x60_0000));
        // With NXE off the XD bit is reserved.
        let no_nx = Context { nxe: false, ..ctx };
        assert_eq!(translate(&ram, &no_nx, 0x20_0000, Access::Read), Err(WalkError::Reserved { linear: 0x20_0000 }));
    }

    #[test]
    fn non_canonical_addresses_are_refused_in_long_mode() {
        let ram = four_level();
        let ctx = long(0x1000);
        assert_eq!(
            translate(&ram, &ctx, 0x0000_8000_0000_0000, Access::Read),
            Err(WalkError::NonCanonical { linear: 0x0000_8000_0000_0000 })
        );
        // 57-bit addresses are canonical with LA57 (and then walk five levels).
        let la57 = Context { mode: PagingMode::Long { la57: true }, ..ctx };
        assert!(!matches!(
            translate(&ram, &la57, 0x0000_8000_0000_0000, Access::Read),
            Err(WalkError::NonCanonical { .. })
        ));
    }

    #[test]
    fn tables_outside_guest_ram_end_the_walk() {
        let mut ram = four_level();
        ram.put64(0x3010, 0x7FFF_F000 | P | RW); // PD[2] -> a "table" far beyond RAM
        let ctx = long(0x1000);
        assert_eq!(
            translate(&ram, &ctx, 0x40_0000, Access::Read),
            Err(WalkError::TableOutsideRam { gpa: 0x7FFF_F000 })
        );
        let ctx = long(0x7FFF_F000);
        assert_eq!(translate(&ram, &ctx, 0, Access::Read), Err(WalkError::TableOutsideRam { gpa: 0x7FFF_F000 }));
    }

    #[test]
    fn pml4_entries_with_ps_are_reserved() {
        let mut ram = four_level();
        ram.put64(0x1008, P | PS);
        let ctx = long(0x1000);
        let linear = 1 << 39;
        assert_eq!(translate(&ram, &ctx, linear, Access::Read), Err(WalkError::Reserved { linear }));
    }

    #[test]
    fn misaligned_large_page_addresses_are_reserved() {
        let mut ram = four_level();
        ram.put64(0x3008, 0x60_1000 | P | PS); // bit 12 is PAT, allowed
        ram.put64(0x3010, 0x60_2000 | P | PS); // bit 13 inside a 2 MiB page: reserved
        let ctx = long(0x1000);
        assert_eq!(translate(&ram, &ctx, 0x20_0010, Access::Read), Ok(0x60_0010));
        assert_eq!(translate(&ram, &ctx, 0x40_0000, Access::Read), Err(WalkError::Reserved { linear: 0x40_0000 }));
    }

    #[test]
    fn thirty_two_bit_paging_with_4k_and_4m_pages() {
        let mut ram = Ram::new(16 << 20);
        ram.put32(0x1000, 0x2000 | P as u32 | RW as u32); // PDE[0] -> PT
        ram.put32(0x2000 + 3 * 4, 0x7000 | P as u32); // PTE[3]: read-only
        ram.put32(0x1000 + 4, 0x0040_0000 | (0x3 << 13) | (P | PS | RW) as u32); // 4 MiB at 0x3_0040_0000
        let ctx = Context::from_registers(CR0_PG | CR0_WP | 1, 0x1000, CR4_PSE, 0, [0; 4]);
        assert_eq!(ctx.mode, PagingMode::Bits32 { pse: true });
        assert_eq!(translate(&ram, &ctx, 0x3abc, Access::Read), Ok(0x7abc));
        assert_eq!(translate(&ram, &ctx, 0x3abc, Access::Write), Err(WalkError::Protection { linear: 0x3abc }));
        assert_eq!(translate(&ram, &ctx, 0x0045_6789, Access::Write), Ok(0x3_0045_6789));
        // Without CR4.PSE the PS bit is ignored and the PDE points to a page table.
        let no_pse = Context { mode: PagingMode::Bits32 { pse: false }, ..ctx };
        assert_eq!(
            translate(&ram, &no_pse, 0x0040_0000, Access::Read),
            Err(WalkError::NotPresent { linear: 0x40_0000 })
        );
    }

    #[test]
    fn pae_paging_uses_the_pdptes_from_the_vmcs() {
        let mut ram = Ram::new(16 << 20);
        ram.put64(0x3000, 0x4000 | P | RW); // PD[0] -> PT
        ram.put64(0x4000 + 8, 0xA000 | P | RW); // PT[1]
        ram.put64(0x3008, 0x80_0000 | P | RW | PS); // PD[1]: 2 MiB
        let pdptes = [0x3000 | P, 0, 0, 0];
        let ctx = Context::from_registers(CR0_PG | 1, 0xdead_0000, CR4_PAE, 0, pdptes);
        assert_eq!(translate(&ram, &ctx, 0x1010, Access::Write), Ok(0xA010));
        assert_eq!(translate(&ram, &ctx, 0x20_0004, Access::Read), Ok(0x80_0004));
        assert_eq!(
            translate(&ram, &ctx, 0x4000_0000, Access::Read),
            Err(WalkError::NotPresent { linear: 0x4000_0000 })
        );
        let bad = Context { mode: PagingMode::Pae { pdptes: [0x3000 | P | RW, 0, 0, 0] }, ..ctx };
        assert_eq!(translate(&ram, &bad, 0x1010, Access::Read), Err(WalkError::Reserved { linear: 0x1010 }));
    }

    #[test]
    fn reads_cross_pages_and_stop_at_the_first_unmapped_one() {
        let mut ram = four_level();
        ram.put64(0x4000 + 4 * 8, 0xC000 | P | RW); // PT[4] -> 0xC000, PT[5] -> 0x9000
        for i in 0..8u64 {
            ram.bytes.insert(0xCFFC + i, 0x10 + i as u8);
            ram.bytes.insert(0x9000 + i, 0x20 + i as u8);
        }
        let ctx = long(0x1000);
        let mut buf = [0u8; 8];
        assert_eq!(read_linear(&ram, &ctx, 0x4FFC, &mut buf, Access::Fetch), 8);
        assert_eq!(buf, [0x10, 0x11, 0x12, 0x13, 0x20, 0x21, 0x22, 0x23]);
        let mut buf = [0u8; 8];
        assert_eq!(read_linear(&ram, &ctx, 0x5FFD, &mut buf, Access::Fetch), 3);
    }

    #[test]
    fn random_tables_never_panic() {
        let mut rng = crate::loader::test_rng::XorShift(0x5eed_cafe);
        for _ in 0..200 {
            let mut ram = Ram::new(64 * 1024);
            for _ in 0..200 {
                ram.put64((rng.next() % 8192) * 8, rng.next());
            }
            for _ in 0..200 {
                let mode = match rng.next() % 5 {
                    0 => PagingMode::None,
                    1 => PagingMode::Bits32 { pse: true },
                    2 => PagingMode::Pae { pdptes: [rng.next(), rng.next(), rng.next(), rng.next()] },
                    3 => PagingMode::Long { la57: false },
                    _ => PagingMode::Long { la57: true },
                };
                let ctx =
                    Context { mode, cr3: rng.next() % 65536, write_protect: true, nxe: rng.next().is_multiple_of(2) };
                let _ = translate(&ram, &ctx, rng.next(), Access::Write);
                let mut buf = [0u8; 15];
                let n = read_linear(&ram, &ctx, rng.next(), &mut buf, Access::Fetch);
                assert!(n <= 15);
            }
        }
    }

    #[test]
    fn hostile_hypercall_buffers_are_refused_before_anything_is_copied() {
        let ram = four_level();
        let ctx = long(0x1000);
        let size = ram.size;
        // Linear 0x20_0000.. is a read-only 2 MiB page at 0x60_0000 (see `four_level`).
        let ok = buffer(&ram, size, &ctx, 0x20_0FF0, 32, Access::Read).expect("a mapped buffer");
        assert_eq!(ok.iter().collect::<Vec<_>>(), vec![(0x60_0FF0, 16), (0x60_1000, 16)], "unaligned, across a page");
        assert_eq!(buffer(&ram, size, &ctx, 0x5000, 0, Access::Write), Ok(Pieces::default()), "empty");
        assert_eq!(buffer(&ram, size, &ctx, 0x20_0000, 8, Access::Write), Err(BufferError::Fault), "read-only output");
        assert_eq!(
            buffer(&ram, size, &ctx, 0x8000_0000_0000_0000, 8, Access::Read),
            Err(BufferError::Fault),
            "non-canonical"
        );
        assert_eq!(buffer(&ram, size, &ctx, u64::MAX - 3, 8, Access::Read), Err(BufferError::Fault), "wraps");
        assert_eq!(buffer(&ram, size, &ctx, 0x6000, 8, Access::Read), Err(BufferError::Fault), "unmapped by the guest");
        assert_eq!(
            buffer(&ram, size, &ctx, 0x4000_0000, 8, Access::Read),
            Err(BufferError::Fault),
            "mapped by the guest to an address beyond its RAM"
        );
        assert_eq!(buffer(&ram, size, &ctx, 0x20_0000, 20 * 4096, Access::Read), Err(BufferError::TooLong), "huge");
        // The same tables, but RAM ends at 0x60_1000: the second page is past RAM (MMIO).
        assert_eq!(buffer(&ram, 0x60_1000, &ctx, 0x20_0FF0, 32, Access::Read), Err(BufferError::Fault), "into MMIO");
    }

    #[test]
    fn a_traced_walk_records_each_entry_it_read_and_replays_to_the_same_result() {
        let ram = four_level();
        let traced = Traced::new(&ram);
        let gpa = translate(&traced, &long(0x1000), 0x5123, Access::Read).unwrap();
        assert_eq!(gpa, translate(&ram, &long(0x1000), 0x5123, Access::Read).unwrap());
        let trace = traced.trace();
        assert!(trace.len >= 3 && trace.len <= MAX_WALK_ENTRIES, "one entry per level: {trace:?}");
        for (entry_gpa, value) in trace.iter() {
            assert_eq!(ram.read_u64(entry_gpa), Some(value), "recorded as read");
        }
        // Entries are read top-down: the first is in the table CR3 points at.
        assert_eq!(trace.entries[0].0 & !0xFFF, 0x1000);
    }
}
