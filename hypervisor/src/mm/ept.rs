//! A domain's extended page tables (SDM Vol. 3C 29.3 "The Extended Page Table Mechanism
//! (EPT)"): the 4-level PML4 -> PDPT -> PD -> PT tree that maps guest-physical to
//! host-physical addresses.
//!
//! The builder is pure logic over a [`TableMemory`], so the kernel keeps tables in frames it
//! reaches through its direct map and the host tests keep them in a `Vec`. Leaves are as large
//! as the alignment of *both* addresses allows (1 GiB when enabled, 2 MiB, else 4 KiB): a large
//! leaf costs one TLB entry and no lower table, but it maps a naturally aligned guest block onto
//! a naturally aligned host block, so both addresses must be aligned to its size.
//!
//! Invariants kept by every operation:
//! - every entry this module writes is valid (SDM Vol. 3C 29.3.3.1 "EPT Misconfigurations");
//! - no table but the root is empty: a table whose last entry goes away is freed at once, so
//!   "a table is present" implies "something below it is mapped";
//! - `tables` is exactly the number of tables reachable from the root, root included.
//!
//! Nothing here executes INVEPT: after [`Ept::unmap`], [`Ept::protect`] or [`Ept::destroy`] the
//! caller must invalidate the cached translations (SDM Vol. 3C 29.4 "Caching Translation
//! Information") before relying on the change.

use super::addr::{GuestPhysAddr, HostPhysAddr};
use alloc::vec::Vec;
use bitflags::bitflags;
use core::fmt;

/// Where EPT tables live. The kernel implements it with frames reached through its direct map;
/// tests implement it with a `Vec` of boxed tables.
///
/// Freed tables may still sit in a CPU's paging-structure caches until the caller's INVEPT
/// (SDM Vol. 3C 29.4.3 "Invalidating Cached Translation Information"): an implementation used
/// while vCPUs of the domain run must not hand a freed frame out again before that INVEPT, or a
/// CPU could walk whatever the frame's next owner writes into it.
pub trait TableMemory {
    /// A zeroed 4 KiB table; None when out of memory.
    fn alloc_table(&mut self) -> Option<HostPhysAddr>;
    /// The table at `pa` (must be one this memory allocated).
    fn table(&mut self, pa: HostPhysAddr) -> &mut [u64; 512];
    /// Returns a table no longer referenced (emptied by an unmap or a failed map, or on
    /// teardown).
    fn free_table(&mut self, pa: HostPhysAddr);
}

bitflags! {
    /// Access rights of a leaf, bits 2:0 of every EPT entry (the "Format of an EPT ..." tables
    /// of SDM Vol. 3C 29.3.2 "EPT Translation Mechanism").
    /// EXECUTE is supervisor-mode execute: mode-based execute control is not used, so it
    /// governs all instruction fetches.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct EptPerms: u64 {
        const READ = 1 << 0;
        const WRITE = 1 << 1;
        const EXECUTE = 1 << 2;
    }
}

/// EPT memory type of a leaf, bits 5:3 (SDM Vol. 3C 29.3.7 "EPT and Memory Typing"). The
/// encodings are the PAT/MTRR ones; 2, 3 and 7 are reserved and would make the entry an EPT
/// misconfiguration, which is why this is an enum and not a raw number.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemType {
    /// For MMIO. Mapped with "ignore PAT" set, see [`MemType::ignores_guest_pat`].
    Uncacheable = 0,
    WriteCombining = 1,
    WriteThrough = 4,
    WriteProtected = 5,
    /// For RAM.
    WriteBack = 6,
}

impl MemType {
    /// Decodes bits 5:3 of a leaf; None for the reserved encodings.
    const fn from_bits(bits: u64) -> Option<MemType> {
        match bits {
            0 => Some(MemType::Uncacheable),
            1 => Some(MemType::WriteCombining),
            4 => Some(MemType::WriteThrough),
            5 => Some(MemType::WriteProtected),
            6 => Some(MemType::WriteBack),
            _ => None,
        }
    }

    /// Whether leaves of this type set bit 6, "ignore PAT" (SDM Vol. 3C 29.3.7.2 "Memory Type
    /// Used for Translated Guest-Physical Addresses").
    ///
    /// With IPAT=0 the effective type combines the EPT type with the guest's PAT type the way
    /// an MTRR type combines with PAT (SDM Vol. 3A "Selecting Memory Types for Pentium III and
    /// More Recent Processor Families"); there UC combined with a guest PAT of WC gives WC. A
    /// guest mapping a device's registers WC (by mistake or malice) would then get combined,
    /// weakly ordered, speculatively readable MMIO. So UC sets IPAT: device memory is UC
    /// whatever the guest's PAT says.
    ///
    /// Every other type leaves IPAT=0 so the guest's PAT applies, exactly as on bare metal: a
    /// guest that makes some of its RAM UC or WC gets what it asked for, and since it can only
    /// name its own memory that costs nobody else anything. The hypervisor's own WB accesses to
    /// such a page (image loading, hypercall buffers) alias it with another type, which stays
    /// coherent because Intel CPUs snoop caches on UC accesses. (KVM instead sets IPAT=1 with
    /// WB when no device does non-coherent DMA, trading that fidelity for immunity to guest
    /// cache-attribute mistakes; we have no assigned devices yet, so fidelity wins.)
    pub const fn ignores_guest_pat(self) -> bool {
        matches!(self, MemType::Uncacheable)
    }
}

/// The size of a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageSize {
    /// A PTE (SDM Vol. 3C "Format of an EPT Page-Table Entry that Maps a 4-KByte Page").
    Size4K,
    /// A PDE with bit 7 set (SDM Vol. 3C "Format of an EPT Page-Directory Entry (PDE) that
    /// Maps a 2-MByte Page").
    Size2M,
    /// A PDPTE with bit 7 set (SDM Vol. 3C "Format of an EPT Page-Directory-Pointer-Table Entry
    /// (PDPTE) that Maps a 1-GByte Page"); needs IA32_VMX_EPT_VPID_CAP bit 17.
    Size1G,
}

impl PageSize {
    pub const fn bytes(self) -> u64 {
        1 << span_shift(self.level())
    }

    /// The level of the table holding such a leaf: 0 = PT, 1 = PD, 2 = PDPT.
    const fn level(self) -> u32 {
        match self {
            PageSize::Size4K => 0,
            PageSize::Size2M => 1,
            PageSize::Size1G => 2,
        }
    }

    const fn of_level(level: u32) -> Option<PageSize> {
        match level {
            0 => Some(PageSize::Size4K),
            1 => Some(PageSize::Size2M),
            2 => Some(PageSize::Size1G),
            _ => None,
        }
    }
}

/// One contiguous range to map: `len` bytes of guest-physical `gpa` onto host-physical `hpa`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub gpa: GuestPhysAddr,
    pub hpa: HostPhysAddr,
    pub len: u64,
    pub perms: EptPerms,
    pub mem_type: MemType,
}

/// What the EPT makes of one guest-physical address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// The host-physical address of the translated address itself (page offset included).
    pub hpa: HostPhysAddr,
    pub perms: EptPerms,
    pub mem_type: MemType,
    /// The leaf that maps it.
    pub page_size: PageSize,
}

/// How many leaves of each size one [`Ept::map`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MapStats {
    pub pages_4k: u64,
    pub pages_2m: u64,
    pub pages_1g: u64,
}

impl MapStats {
    fn count(&mut self, size: PageSize) {
        match size {
            PageSize::Size4K => self.pages_4k += 1,
            PageSize::Size2M => self.pages_2m += 1,
            PageSize::Size1G => self.pages_1g += 1,
        }
    }
}

/// Which optional EPT features the builder may use. Each must be backed by the CPU's
/// IA32_VMX_EPT_VPID_CAP (SDM Vol. 3D A.10): a leaf the CPU does not support is an EPT
/// misconfiguration on the first guest access (`vmx::caps`: `ept_2m`, `ept_1g`,
/// `ept_execute_only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EptOptions {
    /// 2 MiB leaves (bit 16 of the capability MSR).
    pub allow_2m: bool,
    /// 1 GiB leaves (bit 17).
    pub allow_1g: bool,
    /// Execute-only leaves, X without R (bit 0). Without it such leaves are misconfigurations.
    pub allow_execute_only: bool,
}

impl Default for EptOptions {
    /// 2 MiB leaves on (every VT-x CPU with EPT in practice has them), 1 GiB and execute-only
    /// off until the caller has checked the CPU.
    fn default() -> Self {
        EptOptions { allow_2m: true, allow_1g: false, allow_execute_only: false }
    }
}

/// Why an EPT operation was refused. Every refusal leaves the EPT as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EptError {
    /// An address or the length is not a multiple of 4 KiB. `hpa` is None for operations that
    /// take no host address (unmap, protect).
    Misaligned { gpa: GuestPhysAddr, hpa: Option<HostPhysAddr>, len: u64 },
    /// `gpa..gpa+len` reaches beyond [`GUEST_PHYS_LIMIT`].
    OutOfRange { gpa: GuestPhysAddr, len: u64 },
    /// `hpa..hpa+len` reaches beyond 2^52, where EPT entries have no address bits left.
    HostOutOfRange { hpa: HostPhysAddr, len: u64 },
    /// `gpa`, the first already-mapped address of the range, is mapped.
    Overlap { gpa: GuestPhysAddr },
    /// `gpa`, the first unmapped address of the range, is not mapped.
    NotMapped { gpa: GuestPhysAddr },
    /// The table memory ran out.
    OutOfTableMemory,
    /// A permission set the hardware would reject or that maps nothing.
    InvalidPerms { perms: EptPerms },
    /// The table memory handed out an address no EPT entry can hold.
    BadTableAddress { pa: HostPhysAddr },
}

impl fmt::Display for EptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EptError::Misaligned { gpa, hpa: Some(hpa), len } => write!(
                f,
                "cannot map {len:#x} bytes from guest-physical {gpa} to host-physical {hpa}: \
                 EPT maps whole 4 KiB pages, so both addresses and the length must be multiples of 0x1000"
            ),
            EptError::Misaligned { gpa, hpa: None, len } => write!(
                f,
                "range of {len:#x} bytes at guest-physical {gpa} is not 4 KiB aligned: \
                 EPT changes whole 4 KiB pages, so the address and the length must be multiples of 0x1000"
            ),
            EptError::OutOfRange { gpa, len } => write!(
                f,
                "guest-physical range {gpa} + {len:#x} reaches beyond {GUEST_PHYS_LIMIT:#x} (512 GiB), \
                 the most a domain's EPT maps; give the domain less memory or place it lower"
            ),
            EptError::HostOutOfRange { hpa, len } => write!(
                f,
                "host-physical range {hpa} + {len:#x} reaches beyond 2^52, more than any CPU can address; \
                 the host address is corrupt"
            ),
            EptError::Overlap { gpa } => {
                write!(f, "guest-physical {gpa} is already mapped; unmap it first or fix the overlapping memory layout")
            }
            EptError::NotMapped { gpa } => {
                write!(f, "guest-physical {gpa} is not mapped; unmap and protect only work on fully mapped ranges")
            }
            EptError::OutOfTableMemory => {
                write!(f, "out of memory for EPT tables (nothing was changed); free memory or map less")
            }
            EptError::InvalidPerms { perms } => {
                let bits = perms.bits();
                let rwx = Rwx(perms);
                if bits & !EptPerms::all().bits() != 0 {
                    write!(f, "EPT permissions {bits:#x} have bits beyond read/write/execute (0x7)")
                } else if perms.is_empty() {
                    write!(f, "EPT permissions grant no access, which is not a mapping; unmap the range instead")
                } else if perms.contains(EptPerms::WRITE) {
                    write!(f, "EPT permissions {rwx} grant write without read, an EPT misconfiguration; add READ")
                } else {
                    write!(
                        f,
                        "EPT permissions {rwx} are execute-only, which needs CPU support \
                         (IA32_VMX_EPT_VPID_CAP bit 0) and EptOptions::allow_execute_only; add READ"
                    )
                }
            }
            EptError::BadTableAddress { pa } => write!(
                f,
                "the EPT table memory returned {pa}, not a 4 KiB-aligned address below 2^52; \
                 its TableMemory implementation is broken"
            ),
        }
    }
}

impl core::error::Error for EptError {}

/// Permissions as `RWX` with `-` for each missing right, as in `R-X`.
struct Rwx(EptPerms);

impl fmt::Display for Rwx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (flag, c) in [(EptPerms::READ, 'R'), (EptPerms::WRITE, 'W'), (EptPerms::EXECUTE, 'X')] {
            fmt::Write::write_char(f, if self.0.contains(flag) { c } else { '-' })?;
        }
        Ok(())
    }
}

/// The guest-physical addresses a domain can have mapped: 2^39 = 512 GiB, which is one PML4
/// entry. Far more than any domain gets, and it matches the 39-bit physical-address width many
/// Intel client CPUs report in CPUID.80000008H:EAX[7:0], so a guest told that width can reach
/// every address we could map.
pub const GUEST_PHYS_LIMIT: u64 = 1 << 39;

/// Host-physical addresses end at 2^52: EPT entries hold address bits 51:12 (SDM Vol. 3C, the
/// "Format of an EPT ..." tables), the architectural maximum MAXPHYADDR. A CPU's own, smaller
/// width is the caller's to respect: its frames come from real memory.
const HOST_PHYS_LIMIT: u64 = 1 << 52;

const PAGE: u64 = 4096;
const ENTRIES: usize = 512;
/// The level of the PML4. Levels count down to the PT at 0.
const ROOT_LEVEL: u32 = 3;

/// Bits 51:12: the next table's or the page's address.
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
/// Bits 2:0, read/write/execute. Any set means present (SDM Vol. 3C 29.3.2).
const RWX: u64 = 0b111;
/// Bits 5:3 of a leaf: the memory type. Reserved (must be 0) in a non-leaf entry.
const MEM_TYPE_SHIFT: u32 = 3;
const MEM_TYPE_MASK: u64 = 0b111 << MEM_TYPE_SHIFT;
/// Bit 6 of a leaf: ignore PAT. Reserved in a non-leaf entry.
const IGNORE_PAT: u64 = 1 << 6;
/// Bit 7: this PDPTE/PDE maps a page instead of referencing a table. Reserved in a PML4E,
/// ignored in a PTE.
const PAGE_SIZE: u64 = 1 << 7;

/// EPTP bits 2:0: the memory type the CPU uses to read the EPT itself. WB, because tables are
/// ordinary RAM that the builder writes through a WB mapping (SDM Vol. 3C "Extended-Page-Table
/// Pointer (EPTP)").
const EPTP_WB: u64 = 6;
/// EPTP bits 5:3: page-walk length minus one; 3 for our 4-level walk.
const EPTP_WALK_4: u64 = 3 << 3;
/// EPTP bit 6: the CPU sets accessed/dirty flags (bits 8/9) in EPT entries.
const EPTP_AD: u64 = 1 << 6;

/// log2 of the bytes one entry of a level-`level` table covers.
const fn span_shift(level: u32) -> u32 {
    12 + 9 * level
}

/// The bytes one entry of a level-`level` table covers.
const fn span(level: u32) -> u64 {
    1 << span_shift(level)
}

/// The entry of a level-`level` table that `gpa` selects (bits 47:39, 38:30, 29:21, 20:12).
const fn index(gpa: u64, level: u32) -> usize {
    ((gpa >> span_shift(level)) & (ENTRIES as u64 - 1)) as usize
}

/// A non-empty guest-physical range `start..end` that passed [`check_range`]: 4 KiB aligned
/// and below [`GUEST_PHYS_LIMIT`], so no arithmetic on it overflows.
#[derive(Clone, Copy)]
struct GpaRange {
    start: u64,
    end: u64,
}

impl GpaRange {
    /// Whether the range holds all of `base..base + size`.
    const fn covers(self, base: u64, size: u64) -> bool {
        self.start <= base && base + size <= self.end
    }
}

/// The entries of the level-`level` table covering from `base` that overlap `range` (which
/// must overlap the table), as an inclusive index range.
fn overlapping(level: u32, base: u64, range: GpaRange) -> core::ops::RangeInclusive<usize> {
    let shift = span_shift(level);
    let first = (range.start.saturating_sub(base) >> shift).min(ENTRIES as u64 - 1);
    let last = (range.end.saturating_sub(1).saturating_sub(base) >> shift).min(ENTRIES as u64 - 1);
    first as usize..=last as usize
}

/// A non-leaf entry referencing `table`. All of R/W/X are set so that the leaf alone decides
/// the access rights: the CPU grants the intersection of the rights along the walk (SDM Vol.
/// 3C 29.3.3.2 "EPT Violations").
const fn table_entry(table: HostPhysAddr) -> u64 {
    table.0 | RWX
}

/// A leaf entry (SDM Vol. 3C, the "Format of an EPT ... that Maps a ...-Byte Page" tables).
fn leaf_entry(hpa: u64, size: PageSize, perms: EptPerms, mem_type: MemType) -> u64 {
    let ps = if size == PageSize::Size4K { 0 } else { PAGE_SIZE };
    let ipat = if mem_type.ignores_guest_pat() { IGNORE_PAT } else { 0 };
    hpa | ps | ipat | ((mem_type as u64) << MEM_TYPE_SHIFT) | perms.bits()
}

/// A leaf as the CPU sees it.
#[derive(Clone, Copy)]
struct Leaf {
    /// The host-physical base of the page.
    hpa: u64,
    perms: EptPerms,
    mem_type: MemType,
    size: PageSize,
}

/// An EPT entry as the CPU would interpret it at a given level.
enum Decoded {
    /// Bits 2:0 clear: the walk stops with an EPT violation.
    Absent,
    Table(HostPhysAddr),
    Leaf(Leaf),
    /// An entry the CPU would refuse (SDM Vol. 3C 29.3.3.1 "EPT Misconfigurations"). This
    /// builder never writes one; decoding them keeps the walk honest about foreign entries.
    Misconfigured,
}

/// Interprets the entry `e` of a level-`level` table (3 = PML4 .. 0 = PT) per the "Format of an
/// EPT ..." tables of SDM Vol. 3C 29.3.2 and 29.3.3.1 "EPT Misconfigurations". Bits the CPU
/// ignores or sets itself (A/D flags, 11:8, 63:52) are ignored.
fn decode(e: u64, level: u32) -> Decoded {
    let perms = EptPerms::from_bits_truncate(e & RWX);
    if perms.is_empty() {
        return Decoded::Absent;
    }
    // Write without read is a misconfiguration at every level.
    if perms.contains(EptPerms::WRITE) && !perms.contains(EptPerms::READ) {
        return Decoded::Misconfigured;
    }
    let size = match PageSize::of_level(level) {
        Some(PageSize::Size4K) => Some(PageSize::Size4K),
        Some(large) if e & PAGE_SIZE != 0 => Some(large),
        // A PML4E's bit 7 is reserved.
        None if e & PAGE_SIZE != 0 => return Decoded::Misconfigured,
        _ => None,
    };
    match size {
        None => {
            // Bits 6:3 are reserved in entries that reference a table.
            if e & (MEM_TYPE_MASK | IGNORE_PAT) != 0 {
                return Decoded::Misconfigured;
            }
            Decoded::Table(HostPhysAddr(e & ADDR_MASK))
        }
        Some(size) => {
            let hpa = e & ADDR_MASK;
            // Address bits below the page size are reserved in a large leaf.
            if hpa & (size.bytes() - 1) != 0 {
                return Decoded::Misconfigured;
            }
            match MemType::from_bits((e & MEM_TYPE_MASK) >> MEM_TYPE_SHIFT) {
                Some(mem_type) => Decoded::Leaf(Leaf { hpa, perms, mem_type, size }),
                None => Decoded::Misconfigured,
            }
        }
    }
}

/// What [`Ept::modify`] does to the leaves of a range.
#[derive(Clone, Copy)]
enum Op {
    Unmap,
    Protect(EptPerms),
}

/// Splitting the large leaves at the two ends of a range takes at most 4 tables: at each end a
/// 1 GiB leaf becomes a PD and the 2 MiB leaf at that end then becomes a PT.
const MAX_SPLITS: usize = 4;

/// Tables allocated before an unmap or protect starts, so that once it starts it cannot fail
/// halfway: running out of memory is discovered before anything changed.
struct Reserve {
    tables: [HostPhysAddr; MAX_SPLITS],
    len: usize,
}

impl Reserve {
    const fn empty() -> Reserve {
        Reserve { tables: [HostPhysAddr(0); MAX_SPLITS], len: 0 }
    }

    /// Adds `pa`; false (and `pa` not kept) when full.
    fn push(&mut self, pa: HostPhysAddr) -> bool {
        match self.tables.get_mut(self.len) {
            Some(slot) => {
                *slot = pa;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    fn take(&mut self) -> Option<HostPhysAddr> {
        self.len = self.len.checked_sub(1)?;
        self.tables.get(self.len).copied()
    }
}

/// A domain's EPT. Dropping it leaks its tables: give them back with [`Ept::destroy`].
#[derive(Debug)]
pub struct Ept {
    root: HostPhysAddr,
    /// Tables reachable from the root, root included, for memory accounting.
    tables: usize,
    options: EptOptions,
}

impl Ept {
    /// An empty EPT using 2 MiB but not 1 GiB leaves ([`EptOptions::default`]).
    pub fn new(mem: &mut impl TableMemory) -> Result<Ept, EptError> {
        Ept::new_with(mem, EptOptions::default())
    }

    /// An empty EPT (just the PML4) using the leaves `options` allows.
    pub fn new_with(mem: &mut impl TableMemory, options: EptOptions) -> Result<Ept, EptError> {
        let mut ept = Ept { root: HostPhysAddr(0), tables: 0, options };
        ept.root = ept.alloc_table(mem)?;
        Ok(ept)
    }

    pub fn options(&self) -> EptOptions {
        self.options
    }

    /// Number of tables, the PML4 included.
    pub fn table_count(&self) -> usize {
        self.tables
    }

    /// Bytes of table memory in use.
    pub fn memory_bytes(&self) -> u64 {
        self.tables as u64 * PAGE
    }

    /// The EPT pointer for the VMCS (SDM Vol. 3C "Extended-Page-Table Pointer (EPTP)"): WB
    /// paging structures, a 4-level walk, the PML4 address in bits 51:12 and, when
    /// `accessed_dirty` (which needs IA32_VMX_EPT_VPID_CAP bit 21), bit 6 so the CPU maintains
    /// accessed and dirty flags.
    pub fn eptp(&self, accessed_dirty: bool) -> u64 {
        let ad = if accessed_dirty { EPTP_AD } else { 0 };
        self.root.0 | EPTP_WALK_4 | EPTP_WB | ad
    }

    /// Maps `m.len` bytes of `m.gpa` onto `m.hpa`. All three must be 4 KiB aligned. Each leaf
    /// is the largest allowed size to which both addresses are aligned and which fits in what
    /// remains, so an unaligned head and tail get 4 KiB pages and the middle large ones.
    ///
    /// Refuses any overlap with what is already mapped. All or nothing: on error the EPT is as
    /// before, table count included. A zero length maps nothing. Mapping where nothing was
    /// mapped needs no INVEPT: the CPU caches no translation for an absent entry (SDM Vol. 3C
    /// 29.4.1 "Information That May Be Cached").
    pub fn map(&mut self, mem: &mut impl TableMemory, m: &Mapping) -> Result<MapStats, EptError> {
        let range = check_range(m.gpa, m.len, Some(m.hpa))?;
        self.check_perms(m.perms)?;
        let Some(range) = range else { return Ok(MapStats::default()) };
        if let Some(gpa) = self.find(mem, self.root, ROOT_LEVEL, 0, range, true) {
            return Err(EptError::Overlap { gpa: GuestPhysAddr(gpa) });
        }
        let mut stats = MapStats::default();
        let mut off = 0;
        while off < m.len {
            // Cannot overflow: check_range bounded both ends.
            let (gpa, hpa) = (range.start + off, m.hpa.0 + off);
            let size = self.leaf_size(gpa, hpa, m.len - off);
            if let Err(e) = self.install(mem, gpa, leaf_entry(hpa, size, m.perms, m.mem_type), size) {
                // Every leaf in the range is this call's (it was empty), so clearing it restores
                // the EPT and frees the tables this call added; that splits nothing, hence needs
                // no table, so it cannot fail.
                let undo = self.modify(mem, self.root, ROOT_LEVEL, 0, range, Op::Unmap, &mut Reserve::empty());
                if let Err(undo) = undo {
                    log::error!("EPT: undoing a failed map at {} failed: {undo}", m.gpa);
                }
                return Err(e);
            }
            stats.count(size);
            off += size.bytes();
        }
        Ok(stats)
    }

    /// Unmaps `len` bytes at `gpa`, which must be 4 KiB aligned and entirely mapped. A large
    /// leaf only partly in the range is first split into a table of smaller leaves with the
    /// same permissions and memory type, so the rest stays mapped; tables left empty are freed.
    ///
    /// All or nothing. The caller must INVEPT (single-context, this EPTP) before assuming the
    /// guest lost access and before reusing the unmapped memory or the freed tables: CPUs cache
    /// EPT translations and paging structures (SDM Vol. 3C 29.4 "Caching Translation
    /// Information").
    pub fn unmap(&mut self, mem: &mut impl TableMemory, gpa: GuestPhysAddr, len: u64) -> Result<(), EptError> {
        match check_range(gpa, len, None)? {
            Some(range) => self.change(mem, range, Op::Unmap),
            None => Ok(()),
        }
    }

    /// Sets the permissions of `len` bytes at `gpa`, which must be 4 KiB aligned and entirely
    /// mapped, keeping addresses and memory types. Large leaves only partly in the range are
    /// split first.
    ///
    /// All or nothing. The caller must INVEPT (single-context, this EPTP) before relying on a
    /// removed right (SDM Vol. 3C 29.4); an added right takes effect at the latest on the EPT
    /// violation the stale translation causes.
    pub fn protect(
        &mut self,
        mem: &mut impl TableMemory,
        gpa: GuestPhysAddr,
        len: u64,
        perms: EptPerms,
    ) -> Result<(), EptError> {
        let range = check_range(gpa, len, None)?;
        self.check_perms(perms)?;
        match range {
            Some(range) => self.change(mem, range, Op::Protect(perms)),
            None => Ok(()),
        }
    }

    /// Walks the EPT for `gpa` the way the CPU does (SDM Vol. 3C 29.3.2 "EPT Translation
    /// Mechanism"): None where the CPU would take an EPT violation for every access (nothing
    /// mapped) or an EPT misconfiguration.
    pub fn translate(&self, mem: &mut impl TableMemory, gpa: GuestPhysAddr) -> Option<Translation> {
        if gpa.0 >= GUEST_PHYS_LIMIT {
            return None;
        }
        let mut table = self.root;
        for level in (0..=ROOT_LEVEL).rev() {
            match decode(mem.table(table)[index(gpa.0, level)], level) {
                Decoded::Table(next) => table = next,
                Decoded::Leaf(leaf) => {
                    return Some(Translation {
                        hpa: HostPhysAddr(leaf.hpa | (gpa.0 & (leaf.size.bytes() - 1))),
                        perms: leaf.perms,
                        mem_type: leaf.mem_type,
                        page_size: leaf.size,
                    });
                }
                Decoded::Absent | Decoded::Misconfigured => return None,
            }
        }
        // A PT entry decodes as a leaf, absent or misconfigured: the loop has returned.
        None
    }

    /// Every leaf, in guest-physical order, as (its first address, its translation). Adjacent
    /// leaves are not coalesced. For debugging and tests.
    pub fn mappings(&self, mem: &mut impl TableMemory) -> Vec<(GuestPhysAddr, Translation)> {
        let mut out = Vec::new();
        collect(mem, self.root, ROOT_LEVEL, 0, &mut out);
        out
    }

    /// Frees every table, the PML4 last. The caller must first make sure no CPU can use this
    /// EPT any more: no VMCS holds the EPTP and an INVEPT has dropped what CPUs cached.
    pub fn destroy(self, mem: &mut impl TableMemory) {
        free_tree(mem, self.root, ROOT_LEVEL);
    }

    /// Refuses permissions that are not a valid leaf (SDM Vol. 3C 29.3.3.1: write without read
    /// is a misconfiguration, and so is execute-only unless the CPU supports it) or that map
    /// nothing (an entry with bits 2:0 clear is not present, so it would not be a mapping).
    fn check_perms(&self, perms: EptPerms) -> Result<(), EptError> {
        let unknown = perms.bits() & !EptPerms::all().bits() != 0;
        let readable = perms.contains(EptPerms::READ);
        let execute_only = perms == EptPerms::EXECUTE && self.options.allow_execute_only;
        if unknown || !(readable || execute_only) {
            return Err(EptError::InvalidPerms { perms });
        }
        Ok(())
    }

    /// The largest allowed leaf that starts at `gpa` and `hpa` and fits in `remaining`.
    fn leaf_size(&self, gpa: u64, hpa: u64, remaining: u64) -> PageSize {
        let fits = |size: PageSize| {
            let bytes = size.bytes();
            gpa.is_multiple_of(bytes) && hpa.is_multiple_of(bytes) && remaining >= bytes
        };
        if self.options.allow_1g && fits(PageSize::Size1G) {
            PageSize::Size1G
        } else if self.options.allow_2m && fits(PageSize::Size2M) {
            PageSize::Size2M
        } else {
            PageSize::Size4K
        }
    }

    /// A table from `mem`, counted, checked to fit an entry and zeroed.
    fn alloc_table<M: TableMemory + ?Sized>(&mut self, mem: &mut M) -> Result<HostPhysAddr, EptError> {
        let pa = mem.alloc_table().ok_or(EptError::OutOfTableMemory)?;
        if pa.0 & !ADDR_MASK != 0 {
            mem.free_table(pa);
            return Err(EptError::BadTableAddress { pa });
        }
        // The trait promises zeroes; clearing again is cheap next to what one stale entry
        // would do (map arbitrary host memory into the guest).
        mem.table(pa).fill(0);
        self.tables += 1;
        Ok(pa)
    }

    fn free_table<M: TableMemory + ?Sized>(&mut self, mem: &mut M, pa: HostPhysAddr) {
        mem.free_table(pa);
        self.tables = self.tables.saturating_sub(1);
    }

    /// Writes the leaf `entry` of `size` for `gpa`, creating the tables above it. The slot and
    /// the walk to it must be free of leaves (`map` checked the whole range).
    fn install<M: TableMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        gpa: u64,
        entry: u64,
        size: PageSize,
    ) -> Result<(), EptError> {
        let overlap = EptError::Overlap { gpa: GuestPhysAddr(gpa) };
        let mut table = self.root;
        for level in (size.level() + 1..=ROOT_LEVEL).rev() {
            let i = index(gpa, level);
            table = match decode(mem.table(table)[i], level) {
                Decoded::Table(next) => next,
                Decoded::Absent => {
                    let next = self.alloc_table(mem)?;
                    mem.table(table)[i] = table_entry(next);
                    next
                }
                Decoded::Leaf(_) | Decoded::Misconfigured => return Err(overlap),
            };
        }
        let slot = &mut mem.table(table)[index(gpa, size.level())];
        // Anything here is unexpected, even a table: it would have to be empty, which the
        // no-empty-tables invariant rules out.
        if *slot != 0 {
            return Err(overlap);
        }
        *slot = entry;
        Ok(())
    }

    /// The first address of `range` (within the level-`level` table at `table`, covering from
    /// `base`) that is mapped (`want_mapped`) or unmapped (`!want_mapped`). Misconfigured
    /// entries count as both: they neither translate nor may be overwritten.
    fn find<M: TableMemory + ?Sized>(
        &self,
        mem: &mut M,
        table: HostPhysAddr,
        level: u32,
        base: u64,
        range: GpaRange,
        want_mapped: bool,
    ) -> Option<u64> {
        for i in overlapping(level, base, range) {
            let entry_base = base + i as u64 * span(level);
            let hit = Some(range.start.max(entry_base));
            match decode(mem.table(table)[i], level) {
                Decoded::Absent if !want_mapped => return hit,
                Decoded::Leaf(_) if want_mapped => return hit,
                Decoded::Misconfigured => return hit,
                Decoded::Table(next) => {
                    let found = level
                        .checked_sub(1)
                        .and_then(|child_level| self.find(mem, next, child_level, entry_base, range, want_mapped));
                    if found.is_some() {
                        return found;
                    }
                }
                Decoded::Absent | Decoded::Leaf(_) => {}
            }
        }
        None
    }

    /// Unmap or protect `range`: check it is all mapped, reserve the tables splits need, then
    /// change it, which can no longer fail.
    fn change<M: TableMemory + ?Sized>(&mut self, mem: &mut M, range: GpaRange, op: Op) -> Result<(), EptError> {
        if let Some(gpa) = self.find(mem, self.root, ROOT_LEVEL, 0, range, false) {
            return Err(EptError::NotMapped { gpa: GuestPhysAddr(gpa) });
        }
        let mut reserve = Reserve::empty();
        for _ in 0..splits_needed(mem, self.root, ROOT_LEVEL, 0, range) {
            let pushed = self.alloc_table(mem).map(|pa| (pa, reserve.push(pa)));
            let error = match pushed {
                Ok((_, true)) => continue,
                // More than MAX_SPLITS: cannot happen, but must not leak.
                Ok((pa, false)) => {
                    self.free_table(mem, pa);
                    EptError::OutOfTableMemory
                }
                Err(e) => e,
            };
            self.release(mem, &mut reserve);
            return Err(error);
        }
        let result = self.modify(mem, self.root, ROOT_LEVEL, 0, range, op, &mut reserve);
        // Empty unless splits_needed overcounted.
        self.release(mem, &mut reserve);
        result
    }

    fn release<M: TableMemory + ?Sized>(&mut self, mem: &mut M, reserve: &mut Reserve) {
        while let Some(pa) = reserve.take() {
            self.free_table(mem, pa);
        }
    }

    /// Applies `op` to every leaf of `range` below the level-`level` table at `table` (covering
    /// from `base`). Large leaves only partly inside are split with tables from `reserve`;
    /// tables emptied by an unmap are freed.
    #[allow(clippy::too_many_arguments)] // A recursion step: the table, where it is, and what to do.
    fn modify<M: TableMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        table: HostPhysAddr,
        level: u32,
        base: u64,
        range: GpaRange,
        op: Op,
        reserve: &mut Reserve,
    ) -> Result<(), EptError> {
        for i in overlapping(level, base, range) {
            let entry_base = base + i as u64 * span(level);
            // A 4 KiB leaf that overlaps the (4 KiB aligned) range lies inside it.
            let covered = level == 0 || range.covers(entry_base, span(level));
            let e = mem.table(table)[i];
            let child = match decode(e, level) {
                Decoded::Absent | Decoded::Misconfigured => continue,
                Decoded::Leaf(_) if covered => {
                    mem.table(table)[i] = match op {
                        Op::Unmap => 0,
                        // Keeps type, IPAT, page size, address and the A/D flags.
                        Op::Protect(perms) => (e & !RWX) | perms.bits(),
                    };
                    continue;
                }
                Decoded::Leaf(leaf) => {
                    // Partly covered, hence large. The new table replaces the leaf in one
                    // store, and maps exactly what it did, so a CPU walking concurrently sees
                    // the same translation either way.
                    let next = reserve.take().ok_or(EptError::OutOfTableMemory)?;
                    split(mem, next, e, leaf);
                    mem.table(table)[i] = table_entry(next);
                    next
                }
                Decoded::Table(next) => next,
            };
            let Some(child_level) = level.checked_sub(1) else { continue };
            self.modify(mem, child, child_level, entry_base, range, op, reserve)?;
            if mem.table(child).iter().all(|&e| e == 0) {
                mem.table(table)[i] = 0;
                self.free_table(mem, child);
            }
        }
        Ok(())
    }
}

/// Checks `gpa..gpa+len` (and `hpa..hpa+len` when given): 4 KiB aligned (EPT entries have no
/// address bits below 12, SDM Vol. 3C 29.3.2) and within what the tables can hold.
/// Returns the guest range, None when empty.
fn check_range(gpa: GuestPhysAddr, len: u64, hpa: Option<HostPhysAddr>) -> Result<Option<GpaRange>, EptError> {
    let aligned = |a: u64| a.is_multiple_of(PAGE);
    if !aligned(gpa.0) || !aligned(len) || hpa.is_some_and(|h| !aligned(h.0)) {
        return Err(EptError::Misaligned { gpa, hpa, len });
    }
    let end = match gpa.0.checked_add(len) {
        Some(end) if end <= GUEST_PHYS_LIMIT => end,
        _ => return Err(EptError::OutOfRange { gpa, len }),
    };
    if let Some(hpa) = hpa
        && hpa.0.checked_add(len).is_none_or(|end| end > HOST_PHYS_LIMIT)
    {
        return Err(EptError::HostOutOfRange { hpa, len });
    }
    Ok((len != 0).then_some(GpaRange { start: gpa.0, end }))
}

/// Fills the fresh table `next` with the 512 next-smaller leaves that together map what the
/// large leaf `e` (decoded as `leaf`) mapped, with the same attributes.
fn split<M: TableMemory + ?Sized>(mem: &mut M, next: HostPhysAddr, e: u64, leaf: Leaf) {
    // Rights, type, IPAT, and also the A/D flags and suppress-#VE: everything but the address
    // and the page-size bit.
    let attrs = e & !(ADDR_MASK | PAGE_SIZE);
    let (child_bytes, ps) = match leaf.size {
        PageSize::Size1G => (PageSize::Size2M.bytes(), PAGE_SIZE),
        PageSize::Size2M | PageSize::Size4K => (PAGE, 0),
    };
    for (i, slot) in mem.table(next).iter_mut().enumerate() {
        *slot = (leaf.hpa + i as u64 * child_bytes) | ps | attrs;
    }
}

/// How many tables splitting the large leaves that straddle an end of `range`, below the
/// level-`level` table at `table` (covering from `base`), takes; [`Ept::modify`] then splits
/// exactly those. At most [`MAX_SPLITS`].
fn splits_needed<M: TableMemory + ?Sized>(
    mem: &mut M,
    table: HostPhysAddr,
    level: u32,
    base: u64,
    range: GpaRange,
) -> usize {
    let mut n = 0;
    for i in overlapping(level, base, range) {
        let entry_base = base + i as u64 * span(level);
        match decode(mem.table(table)[i], level) {
            Decoded::Table(next) => {
                if let Some(child_level) = level.checked_sub(1) {
                    n += splits_needed(mem, next, child_level, entry_base, range);
                }
            }
            Decoded::Leaf(_) => n += leaf_splits(level, entry_base, range),
            Decoded::Absent | Decoded::Misconfigured => {}
        }
    }
    n
}

/// How many tables a leaf at `level` covering from `base` takes to split so that no leaf
/// straddles an end of `range`: one if partly covered, plus what its partly covered children
/// take in turn.
fn leaf_splits(level: u32, base: u64, range: GpaRange) -> usize {
    let Some(child_level) = level.checked_sub(1) else { return 0 };
    if range.covers(base, span(level)) {
        return 0;
    }
    let children = overlapping(child_level, base, range);
    1 + children.map(|i| leaf_splits(child_level, base + i as u64 * span(child_level), range)).sum::<usize>()
}

/// Appends the leaves below the level-`level` table at `table` (covering from `base`).
fn collect<M: TableMemory + ?Sized>(
    mem: &mut M,
    table: HostPhysAddr,
    level: u32,
    base: u64,
    out: &mut Vec<(GuestPhysAddr, Translation)>,
) {
    for i in 0..ENTRIES {
        let entry_base = base + i as u64 * span(level);
        match decode(mem.table(table)[i], level) {
            Decoded::Table(next) => {
                if let Some(child_level) = level.checked_sub(1) {
                    collect(mem, next, child_level, entry_base, out);
                }
            }
            Decoded::Leaf(leaf) => out.push((
                GuestPhysAddr(entry_base),
                Translation {
                    hpa: HostPhysAddr(leaf.hpa),
                    perms: leaf.perms,
                    mem_type: leaf.mem_type,
                    page_size: leaf.size,
                },
            )),
            Decoded::Absent | Decoded::Misconfigured => {}
        }
    }
}

/// Frees `table` and every table below it.
fn free_tree<M: TableMemory + ?Sized>(mem: &mut M, table: HostPhysAddr, level: u32) {
    if let Some(child_level) = level.checked_sub(1) {
        for i in 0..ENTRIES {
            if let Decoded::Table(next) = decode(mem.table(table)[i], level) {
                free_tree(mem, next, child_level);
            }
        }
    }
    mem.free_table(table);
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::boxed::Box;
    use alloc::collections::BTreeMap;
    use alloc::format;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    /// Fake table addresses: the i-th allocation (from 0) lives at BASE + 0x1000 * (i + 1), so
    /// the first table, the PML4, is at 0x5000.
    const BASE: u64 = 0x4000;

    /// Tables in a Vec, never reused, so a use after free or a double free panics.
    #[derive(Default)]
    struct FakeMemory {
        slots: Vec<Option<Box<[u64; 512]>>>,
        allocs: usize,
        frees: usize,
        /// Allocations still granted; None is unlimited.
        budget: Option<usize>,
        /// Hand out the next table at this misaligned offset from its real address.
        skew_next: u64,
    }

    impl FakeMemory {
        fn live(&self) -> usize {
            self.allocs - self.frees
        }

        fn slot(pa: HostPhysAddr) -> usize {
            ((pa.0 - BASE) / PAGE - 1) as usize
        }
    }

    impl TableMemory for FakeMemory {
        fn alloc_table(&mut self) -> Option<HostPhysAddr> {
            if let Some(budget) = &mut self.budget {
                *budget = budget.checked_sub(1)?;
            }
            self.slots.push(Some(Box::new([0; 512])));
            self.allocs += 1;
            let skew = core::mem::take(&mut self.skew_next);
            Some(HostPhysAddr(BASE + PAGE * self.slots.len() as u64 + skew))
        }

        fn table(&mut self, pa: HostPhysAddr) -> &mut [u64; 512] {
            assert_eq!(pa.0 % PAGE, 0, "table at a misaligned {pa:?}");
            self.slots[Self::slot(pa)].as_deref_mut().expect("table used after free")
        }

        fn free_table(&mut self, pa: HostPhysAddr) {
            assert!(self.slots[Self::slot(pa)].take().is_some(), "double free of {pa:?}");
            self.frees += 1;
        }
    }

    fn new_ept(options: EptOptions) -> (FakeMemory, Ept) {
        let mut mem = FakeMemory::default();
        let ept = Ept::new_with(&mut mem, options).unwrap();
        (mem, ept)
    }

    fn with_1g() -> EptOptions {
        EptOptions { allow_1g: true, ..EptOptions::default() }
    }

    fn mapping(gpa: u64, hpa: u64, len: u64, perms: EptPerms, mem_type: MemType) -> Mapping {
        Mapping { gpa: GuestPhysAddr(gpa), hpa: HostPhysAddr(hpa), len, perms, mem_type }
    }

    fn ram(gpa: u64, hpa: u64, len: u64) -> Mapping {
        mapping(gpa, hpa, len, EptPerms::all(), MemType::WriteBack)
    }

    fn stats(pages_4k: u64, pages_2m: u64, pages_1g: u64) -> MapStats {
        MapStats { pages_4k, pages_2m, pages_1g }
    }

    fn tr(mem: &mut FakeMemory, ept: &Ept, gpa: u64) -> Option<Translation> {
        ept.translate(mem, GuestPhysAddr(gpa))
    }

    /// Translates an address inside every 4 KiB page of `m` and checks it against `m`.
    fn assert_maps(mem: &mut FakeMemory, ept: &Ept, m: &Mapping) {
        for off in (0..m.len).step_by(PAGE as usize) {
            let inside = (off / PAGE * 8) % PAGE; // a different offset in each page
            let t = tr(mem, ept, m.gpa.0 + off + inside).unwrap_or_else(|| panic!("{:#x} unmapped", m.gpa.0 + off));
            assert_eq!(t.hpa, HostPhysAddr(m.hpa.0 + off + inside));
            assert_eq!((t.perms, t.mem_type), (m.perms, m.mem_type));
        }
    }

    /// The raw entry of the leaf mapping `gpa`.
    fn raw_leaf(mem: &mut FakeMemory, ept: &Ept, gpa: u64) -> u64 {
        let mut table = ept.root;
        for level in (0..=ROOT_LEVEL).rev() {
            let e = mem.table(table)[index(gpa, level)];
            match decode(e, level) {
                Decoded::Table(next) => table = next,
                _ => return e,
            }
        }
        unreachable!()
    }

    /// Checks the module invariants: every table reachable from the root is counted, the fake
    /// memory holds exactly those, no table but the root is empty, no entry is misconfigured.
    fn assert_invariants(mem: &mut FakeMemory, ept: &Ept) {
        fn walk(mem: &mut FakeMemory, table: HostPhysAddr, level: u32, root: bool) -> usize {
            let entries = *mem.table(table);
            assert!(root || entries.iter().any(|&e| e != 0), "empty table {table:?} at level {level} kept");
            let mut n = 1;
            for e in entries {
                match decode(e, level) {
                    Decoded::Table(next) => n += walk(mem, next, level - 1, false),
                    Decoded::Misconfigured => panic!("misconfigured entry {e:#x} at level {level}"),
                    Decoded::Absent => assert_eq!(e, 0, "stale bits in an absent entry"),
                    Decoded::Leaf(_) => {}
                }
            }
            n
        }
        assert_eq!(walk(mem, ept.root, ROOT_LEVEL, true), ept.table_count());
        assert_eq!(mem.live(), ept.table_count());
    }

    #[test]
    fn aligned_16m_maps_as_eight_2m_pages_in_three_tables() {
        let (mut mem, mut ept) = new_ept(EptOptions::default());
        let m = ram(0, 0x4000_0000, 16 * MIB);
        assert_eq!(ept.map(&mut mem, &m), Ok(stats(0, 8, 0)));
        assert_eq!(ept.table_count(), 3); // PML4, PDPT, PD
        assert_eq!(ept.memory_bytes(), 3 * 4096);
        assert_eq!(mem.allocs, 3);
        let t = tr(&mut mem, &ept, 0x12_3456).unwrap();
        assert_eq!(t.hpa, HostPhysAddr(0x4012_3456));
        assert_eq!(t.page_size, PageSize::Size2M);
        assert_maps(&mut mem, &ept, &m);
        assert_invariants(&mut mem, &ept);
    }

    #[test]
    fn a_host_address_4k_off_2m_alignment_forces_4k_pages_everywhere() {
        let (mut mem, mut ept) = new_ept(EptOptions::default());
        let m = ram(0, 0x4000_1000, 16 * MIB);
        assert_eq!(ept.map(&mut mem, &m), Ok(stats(4096, 0, 0)));
        // PML4, PDPT, PD and one PT per 2 MiB.
        assert_eq!(ept.table_count(), 3 + 8);
        assert_eq!(tr(&mut mem, &ept, 0x20_0000).unwrap().page_size, PageSize::Size4K);
        assert_maps(&mut mem, &ept, &m);
        assert_invariants(&mut mem, &ept);
    }

    #[test]
    fn a_gpa_4k_below_a_2m_boundary_gets_a_4k_head_then_2m_pages_then_a_4k_tail() {
        let (mut mem, mut ept) = new_ept(EptOptions::default());
        let m = ram(0x1F_F000, 0x401F_F000, PAGE + 4 * MIB + 3 * PAGE);
        assert_eq!(ept.map(&mut mem, &m), Ok(stats(4, 2, 0)));
        // PML4, PDPT, PD, and a PT each for the head and the tail.
        assert_eq!(ept.table_count(), 5);
        let leaves: Vec<(u64, u64, PageSize)> =
            ept.mappings(&mut mem).iter().map(|(g, t)| (g.0, t.hpa.0, t.page_size)).collect();
        assert_eq!(
            leaves,
            [
                (0x1F_F000, 0x401F_F000, PageSize::Size4K),
                (0x20_0000, 0x4020_0000, PageSize::Size2M),
                (0x40_0000, 0x4040_0000, PageSize::Size2M),
                (0x60_0000, 0x4060_0000, PageSize::Size4K),
                (0x60_1000, 0x4060_1000, PageSize::Size4K),
                (0x60_2000, 0x4060_2000, PageSize::Size4K),
            ]
        );
        assert_maps(&mut mem, &ept, &m);
    }

    #[test]
    fn disabling_2m_pages_maps_aligned_memory_with_4k_pages() {
        let (mut mem, mut ept) = new_ept(EptOptions { allow_2m: false, ..EptOptions::default() });
        assert_eq!(ept.map(&mut mem, &ram(0, 0x4000_0000, 4 * MIB)), Ok(stats(1024, 0, 0)));
        assert_eq!(ept.table_count(), 5);
    }

    #[test]
    fn translate_gives_offset_permissions_and_type_of_every_mapped_page() {
        let (mut mem, mut ept) = new_ept(EptOptions::default());
        let code =
            mapping(0x10_0000, 0x7_0010_0000, 6 * MIB, EptPerms::READ | EptPerms::EXECUTE, MemType::WriteThrough);
        let data = mapping(0x80_0000, 0x9_0000_3000, 3 * MIB, EptPerms::READ | EptPerms::WRITE, MemType::WriteBack);
        ept.map(&mut mem, &code).unwrap();
        ept.map(&mut mem, &data).unwrap();
        assert_maps(&mut mem, &ept, &code);
        assert_maps(&mut mem, &ept, &data);
        assert_invariants(&mut mem, &ept);
    }

    #[test]
    fn translate_of_unmapped_or_out_of_range_addresses_is_none() {
        let (mut mem, mut ept) = new_ept(EptOptions::default());
        assert_eq!(tr(&mut mem, &ept, 0), None);
        ept.map(&mut mem, &ram(0x20_0000, 0x4000_0000, 2 * MIB)).unwrap();
        assert_eq!(tr(&mut mem, &ept, 0x1F_FFFF), None);
        assert_eq!(tr(&mut mem, &ept, 0x40_0000), None);
        assert_eq!(tr(&mut mem, &ept, 0x4000_0000), None); // another PD entry, another PDPT slot
        assert_eq!(tr(&mut mem, &ept, GUEST_PHYS_LIMIT), None);
        assert_eq!(tr(&mut mem, &ept, u64::MAX), None);
    }

    #[test]
    fn an_overlapping_map_is_refused_and_changes_nothing() {
        let (mut mem, mut ept) = new_ept(EptOptions::default());
        ept.map(&mut mem, &ram(0x20_0000, 0x4000_0000, 2 * MIB)).unwrap();
        ept.map(&mut mem, &ram(0x50_0000, 0x5000_1000, 0x3000)).unwrap();
        let before = ept.mappings(&mut mem);
        let (tables, allocs) = (ept.table_count(), mem.allocs);

        // Starts in unmapped memory; the first mapped address is reported.
        assert_eq!(
            ept.map(&mut mem, &ram(0, 0x6000_0000, 3 * MIB)),
            Err(EptError::Overlap { gpa: GuestPhysAddr(0x20_0000) })
        );
        // Lands on the middle 4 KiB page only.
        assert_eq!(
            ept.map(&mut mem, &ram(0x50_1000, 0x6000_0000, PAGE)),
            Err(EptError::Overlap { gpa: GuestPhysAddr(0x50_1000) })
        );
        // Inside a 2 MiB page.
        assert_eq!(
            ept.map(&mut mem, &ram(0x30_0000, 0x6000_0000, MIB)),
            Err(EptError::Overlap { gpa: GuestPhysAddr(0x30_0000) })
        );
        assert_eq!(ept.mappings(&mut mem), before);
        assert_eq!((ept.table_count(), mem.allocs), (tables, allocs));
        // The gaps around the 4 KiB pages are still free.
        assert_eq!(ept.map(&mut mem, &ram(0x4F_F000, 0x6000_0000, PAGE)), Ok(stats(1, 0, 0)));
        assert_eq!(ept.map(&mut mem, &ram(0x50_3000, 0x6000_1000, PAGE)), Ok(stats(1, 0, 0)));
    }

    #[test]
    fn misaligned_inputs_are_refused() {
        let (mut mem, mut ept) = new_ept(EptOptions::default());
        let misaligned =
            |gpa, hpa, len| EptError::Misaligned { gpa: GuestPhysAddr(gpa), hpa: Some(HostPhysAddr(hpa)), len };
        assert_eq!(ept.map(&mut mem, &ram(0x800, 0x1000, PAGE)), Err(misaligned(0x800, 0x1000, PAGE)));
        assert_eq!(ept.map(&mut mem, &ram(0x1000, 0x1010, PAGE)), Err(misaligned(0x1000, 0x1010, PAGE)));
        assert_eq!(ept.map(&mut mem, &ram(0x1000, 0x1000, 0x1800)), Err(misaligned(0x1000, 0x1000, 0x1800)));
        let unaligned = EptError::Misaligned { gpa: GuestPhysAddr(0x10), hpa: None, len: PAGE };
        assert_eq!(ept.unmap(&mut mem, GuestPhysAddr(0x10), PAGE), Err(unaligned));
        assert_eq!(ept.protect(&mut mem, GuestPhysAddr(0x10), PAGE, EptPerms::READ), Err(unaligned));
        assert_eq!(ept.table_count(), 1);
    }

    #[test]
    fn unmapping_4k_inside_a_2m_page_splits_it_and_keeps_the_neighbours() {
        let (mut mem, mut ept) = new_ept(EptOptions::default());
        let perms = EptPerms::READ | EptPerms::EXECUTE;
        ept.map(&mut mem, &mapping(0, 0x4000_0000, 4 * MIB, perms, MemType::WriteThrough)).unwrap();
        assert_eq!(ept.unmap(&mut mem, GuestPhysAddr(0x10_0000), PAGE), Ok(()));

        assert_eq!(tr(&mut mem, &ept, 0x10_0000), None);
        assert_eq!(tr(&mut mem, &ept, 0x10_0FFF), None);
        let below = Translation {
            hpa: HostPhysAddr(0x400F_F008),
            perms,
            mem_type: MemType::WriteThrough,
            page_size: PageSize::Size4K,
        };
        assert_eq!(tr(&mut mem, &ept, 0xF_F008), Some(below));
        assert_eq!(tr(&mut mem, &ept, 0x10_1000), Some(Translation { hpa: HostPhysAddr(0x4010_1000), ..below }));
        assert_eq!(tr(&mut mem, &ept, 0), Some(Translation { hpa: HostPhysAddr(0x4000_0000), ..below }));
        // The other 2 MiB page is untouched.
        assert_eq!(tr(&mut mem, &ept, 0x20_0000).unwrap().page_size, PageSize::Size2M);
        assert_eq!(ept.table_count(), 4);
        assert_eq!(ept.mappings(&mut mem).len(), 511 + 1);
        assert_invariants(&mut mem, &ept);
    }

    #[test]
    fn unmapping_4k_inside_a_1g_page_splits_it_twice() {
        let (mut mem, mut ept) = new_ept(with_1g());
        assert_eq!(ept.map(&mut mem, &ram(GIB, 0x1_4000_0000, GIB)), Ok(stats(0, 0, 1)));
        assert_eq!(ept.table_count(), 2);
        ept.unmap(&mut mem, GuestPhysAddr(GIB + 0x1234_5000), PAGE).unwrap();
        // PML4, PDPT, the PD that replaced the 1 GiB page, the PT that replaced a 2 MiB one.
        assert_eq!(ept.table_count(), 4);
        assert_eq!(tr(&mut mem, &ept, GIB + 0x1234_5000), None);
        let at = |mem: &mut FakeMemory, gpa| tr(mem, &ept, gpa).map(|t| (t.hpa.0, t.page_size));
        assert_eq!(at(&mut mem, GIB + 0x1234_4000), Some((0x1_5234_4000, PageSize::Size4K)));
        assert_eq!(at(&mut mem, GIB + 0x1234_6000), Some((0x1_5234_6000, PageSize::Size4K)));
        assert_eq!(at(&mut mem, GIB + 0x1200_0000), Some((0x1_5200_0000, PageSize::Size2M)));
        assert_eq!(at(&mut mem, 2 * GIB - PAGE), Some((0x1_7FFF_F000, PageSize::Size2M)));
        assert_eq!(ept.mappings(&mut mem).len(), 511 + 511);
        assert_invariants(&mut mem, &ept);
    }

    #[test]
    fn unmapping_everything_frees_all_tables_but_the_pml4() {
        let (mut mem, mut ept) = new_ept(with_1g());
        ept.map(&mut mem, &ram(0x1F_F000, 0x401F_F000, 5 * MIB)).unwrap();
        ept.map(&mut mem, &ram(GIB, 0x8000_0000, GIB + 2 * MIB)).unwrap();
        ept.map(&mut mem, &ram(300 * GIB, 0x1000, PAGE)).unwrap();
        // A hole first, so the later unmaps also meet split tables.
        ept.unmap(&mut mem, GuestPhysAddr(GIB + 0x3000), PAGE).unwrap();
        ept.unmap(&mut mem, GuestPhysAddr(0x1F_F000), 5 * MIB).unwrap();
        ept.unmap(&mut mem, GuestPhysAddr(GIB), 0x3000).unwrap();
        ept.unmap(&mut mem, GuestPhysAddr(GIB + 0x4000), GIB + 2 * MIB - 0x4000).unwrap();
        ept.unmap(&mut mem, GuestPhysAddr(300 * GIB), PAGE).unwrap();
        assert_eq!(ept.table_count(), 1);
        assert_eq!(mem.live(), 1);
        assert!(ept.mappings(&mut mem).is_empty());
    }

    #[test]
    fn unmapping_a_range_with_a_hole_is_refused_and_changes_nothing() {
        let (mut mem, mut ept) = new_ept(EptOptions::default());
        ept.map(&mut mem, &ram(0, 0x4000_0000, 2 * MIB)).unwrap();
        ept.map(&mut mem, &ram(0x20_1000, 0x4020_1000, PAGE)).unwrap();
        let before = ept.mappings(&mut mem);
        assert_eq!(
            ept.unmap(&mut mem, GuestPhysAddr(0x10_0000), 2 * MIB),
            Err(EptError::NotMapped { gpa: GuestPhysAddr(0x20_0000) })
        );
        assert_eq!(
            ept.protect(&mut mem, GuestPhysAddr(0x20_1000), 2 * PAGE, EptPerms::READ),
            Err(EptError::NotMapped { gpa: GuestPhysAddr(0x20_2000) })
        );
        assert_eq!(ept.mappings(&mut mem), before);
        assert_eq!(ept.table_count(), 4);
    }

    #[test]
    fn protect_to_read_only_splits_only_the_straddled_2m_pages() {
        let (mut mem, mut ept) = new_ept(EptOptions::default());
        ept.map(&mut mem, &ram(0, 0x4000_0000, 6 * MIB)).unwrap();
        ept.protect(&mut mem, GuestPhysAddr(0x1F_F000), 2 * PAGE, EptPerms::READ).unwrap();
        let perms = |mem: &mut FakeMemory, ept: &Ept, gpa| tr(mem, ept, gpa).map(|t| (t.perms, t.page_size, t.hpa.0));
        assert_eq!(perms(&mut mem, &ept, 0x1F_E000), Some((EptPerms::all(), PageSize::Size4K, 0x401F_E000)));
        assert_eq!(perms(&mut mem, &ept, 0x1F_F000), Some((EptPerms::READ, PageSize::Size4K, 0x401F_F000)));
        assert_eq!(perms(&mut mem, &ept, 0x20_0000), Some((EptPerms::READ, PageSize::Size4K, 0x4020_0000)));
        assert_eq!(perms(&mut mem, &ept, 0x20_1000), Some((EptPerms::all(), PageSize::Size4K, 0x4020_1000)));
        assert_eq!(ept.table_count(), 5);
        // A whole 2 MiB page changes in place.
        ept.protect(&mut mem, GuestPhysAddr(0x40_0000), 2 * MIB, EptPerms::READ).unwrap();
        assert_eq!(perms(&mut mem, &ept, 0x5F_FFFF), Some((EptPerms::READ, PageSize::Size2M, 0x405F_FFFF)));
        assert_eq!(ept.table_count(), 5);
        assert_eq!(raw_leaf(&mut mem, &ept, 0x40_0000), 0x4040_0000 | PAGE_SIZE | (6 << 3) | 1);
        assert_invariants(&mut mem, &ept);
    }

    #[test]
    fn the_ept_pointer_encodes_wb_a_4_level_walk_and_optional_ad() {
        let (_mem, ept) = new_ept(EptOptions::default());
        assert_eq!(ept.root, HostPhysAddr(0x5000));
        assert_eq!(ept.eptp(true), 0x505E);
        assert_eq!(ept.eptp(false), 0x501E);
    }

    #[test]
    fn mmio_is_uncacheable_and_ignores_the_guest_pat_while_ram_honours_it() {
        let (mut mem, mut ept) = new_ept(EptOptions::default());
        let lapic = mapping(0xFEE0_0000, 0xFEE0_0000, PAGE, EptPerms::READ | EptPerms::WRITE, MemType::Uncacheable);
        ept.map(&mut mem, &lapic).unwrap();
        ept.map(&mut mem, &ram(0, 0x4000_0000, 2 * MIB)).unwrap();
        assert_eq!(tr(&mut mem, &ept, 0xFEE0_0030).unwrap().mem_type, MemType::Uncacheable);
        // UC (bits 5:3 = 0), IPAT (bit 6), RW.
        assert_eq!(raw_leaf(&mut mem, &ept, 0xFEE0_0000), 0xFEE0_0043);
        // WB (6 << 3), no IPAT, page size (bit 7), RWX.
        assert_eq!(raw_leaf(&mut mem, &ept, 0), 0x4000_00B7);
    }

    #[test]
    fn write_without_read_empty_and_unsupported_execute_only_permissions_are_refused() {
        let (mut mem, mut ept) = new_ept(EptOptions::default());
        for perms in [
            EptPerms::WRITE,
            EptPerms::WRITE | EptPerms::EXECUTE,
            EptPerms::EXECUTE,
            EptPerms::empty(),
            EptPerms::from_bits_retain(0b1001),
        ] {
            let m = mapping(0, 0x1000, PAGE, perms, MemType::WriteBack);
            assert_eq!(ept.map(&mut mem, &m), Err(EptError::InvalidPerms { perms }));
        }
        assert_eq!(ept.table_count(), 1);
        ept.map(&mut mem, &ram(0, 0x1000, PAGE)).unwrap();
        assert_eq!(
            ept.protect(&mut mem, GuestPhysAddr(0), PAGE, EptPerms::WRITE),
            Err(EptError::InvalidPerms { perms: EptPerms::WRITE })
        );
        assert_eq!(tr(&mut mem, &ept, 0).unwrap().perms, EptPerms::all());
    }

    #[test]
    fn execute_only_is_accepted_when_the_cpu_supports_it() {
        let (mut mem, mut ept) = new_ept(EptOptions { allow_execute_only: true, ..EptOptions::default() });
        ept.map(&mut mem, &mapping(0, 0x1000, PAGE, EptPerms::EXECUTE, MemType::WriteBack)).unwrap();
        assert_eq!(tr(&mut mem, &ept, 0).unwrap().perms, EptPerms::EXECUTE);
        let wx = EptPerms::WRITE | EptPerms::EXECUTE;
        assert_eq!(ept.protect(&mut mem, GuestPhysAddr(0), PAGE, wx), Err(EptError::InvalidPerms { perms: wx }));
    }

    #[test]
    fn addresses_beyond_the_supported_widths_are_refused() {
        let (mut mem, mut ept) = new_ept(EptOptions::default());
        let out = |gpa, len| EptError::OutOfRange { gpa: GuestPhysAddr(gpa), len };
        assert_eq!(ept.map(&mut mem, &ram(GUEST_PHYS_LIMIT, 0, PAGE)), Err(out(GUEST_PHYS_LIMIT, PAGE)));
        assert_eq!(
            ept.map(&mut mem, &ram(GUEST_PHYS_LIMIT - PAGE, 0, 2 * PAGE)),
            Err(out(GUEST_PHYS_LIMIT - PAGE, 2 * PAGE))
        );
        assert_eq!(ept.map(&mut mem, &ram(u64::MAX - 0xFFF, 0, 2 * PAGE)), Err(out(u64::MAX - 0xFFF, 2 * PAGE)));
        assert_eq!(ept.unmap(&mut mem, GuestPhysAddr(GUEST_PHYS_LIMIT), PAGE), Err(out(GUEST_PHYS_LIMIT, PAGE)));
        assert_eq!(
            ept.map(&mut mem, &ram(0, (1 << 52) - PAGE, 2 * PAGE)),
            Err(EptError::HostOutOfRange { hpa: HostPhysAddr((1 << 52) - PAGE), len: 2 * PAGE })
        );
        assert_eq!(ept.table_count(), 1);
        // The last page below the limit is fine.
        ept.map(&mut mem, &ram(GUEST_PHYS_LIMIT - PAGE, (1 << 52) - PAGE, PAGE)).unwrap();
        assert_eq!(tr(&mut mem, &ept, GUEST_PHYS_LIMIT - 1).unwrap().hpa, HostPhysAddr((1 << 52) - 1));
    }

    #[test]
    fn one_gib_pages_are_used_when_enabled_and_aligned() {
        let (mut mem, mut ept) = new_ept(with_1g());
        let m = ram(GIB, 4 * GIB, 2 * GIB + 2 * MIB);
        assert_eq!(ept.map(&mut mem, &m), Ok(stats(0, 1, 2)));
        // PML4, PDPT, and a PD for the 2 MiB tail.
        assert_eq!(ept.table_count(), 3);
        let t = tr(&mut mem, &ept, GIB + 0x1234_5678).unwrap();
        assert_eq!((t.hpa, t.page_size), (HostPhysAddr(4 * GIB + 0x1234_5678), PageSize::Size1G));
        assert_eq!(raw_leaf(&mut mem, &ept, GIB), 0x1_0000_00B7);

        // Off by 2 MiB on the host side: 2 MiB pages instead.
        let (mut mem, mut ept) = new_ept(with_1g());
        assert_eq!(ept.map(&mut mem, &ram(GIB, 4 * GIB + 2 * MIB, GIB)), Ok(stats(0, 512, 0)));
        // Disabled: 2 MiB pages, one PD per GiB.
        let (mut mem, mut ept) = new_ept(EptOptions::default());
        assert_eq!(ept.map(&mut mem, &m), Ok(stats(0, 1025, 0)));
        assert_eq!(ept.table_count(), 5);
    }

    #[test]
    fn running_out_of_table_memory_while_mapping_changes_nothing() {
        let (mut mem, mut ept) = new_ept(EptOptions::default());
        ept.map(&mut mem, &ram(0, 0x4000_0000, 2 * MIB)).unwrap();
        let before = ept.mappings(&mut mem);
        // Needs one PT per 2 MiB: 2 are granted, the third is refused.
        mem.budget = Some(2);
        assert_eq!(ept.map(&mut mem, &ram(2 * MIB, 0x5000_1000, 6 * MIB)), Err(EptError::OutOfTableMemory));
        assert_eq!(ept.mappings(&mut mem), before);
        assert_eq!(ept.table_count(), 3);
        assert_eq!(mem.frees, 2);
        assert_invariants(&mut mem, &ept);
        mem.budget = None;
        assert_eq!(ept.map(&mut mem, &ram(2 * MIB, 0x5000_1000, 6 * MIB)), Ok(stats(1536, 0, 0)));
    }

    #[test]
    fn a_map_that_gets_a_pdpt_but_no_pd_frees_the_pdpt() {
        let (mut mem, mut ept) = new_ept(EptOptions::default());
        mem.budget = Some(1);
        assert_eq!(ept.map(&mut mem, &ram(0, 0x4000_0000, 2 * MIB)), Err(EptError::OutOfTableMemory));
        assert_eq!((ept.table_count(), mem.live(), mem.frees), (1, 1, 1));
        assert_eq!(mem.table(ept.root)[0], 0);
    }

    #[test]
    fn running_out_of_table_memory_while_splitting_changes_nothing() {
        let (mut mem, mut ept) = new_ept(with_1g());
        ept.map(&mut mem, &ram(0, 0x4000_0000, 2 * GIB)).unwrap();
        let before = ept.mappings(&mut mem);
        // Straddles the two 1 GiB pages at a 4 KiB offset: a PD and a PT on each side.
        let (gpa, len) = (GuestPhysAddr(GIB - PAGE), 2 * PAGE);
        mem.budget = Some(3);
        assert_eq!(ept.unmap(&mut mem, gpa, len), Err(EptError::OutOfTableMemory));
        assert_eq!(ept.protect(&mut mem, gpa, len, EptPerms::READ), Err(EptError::OutOfTableMemory));
        assert_eq!(ept.mappings(&mut mem), before);
        assert_eq!(ept.table_count(), 2);
        assert_invariants(&mut mem, &ept);
        mem.budget = Some(4);
        assert_eq!(ept.unmap(&mut mem, gpa, len), Ok(()));
        assert_eq!(ept.table_count(), 6);
        assert_eq!(tr(&mut mem, &ept, GIB - 2 * PAGE).unwrap().hpa, HostPhysAddr(0x7FFF_E000));
        assert_eq!(tr(&mut mem, &ept, GIB + PAGE).unwrap().hpa, HostPhysAddr(0x8000_1000));
        assert_invariants(&mut mem, &ept);
    }

    #[test]
    fn zero_length_requests_change_nothing() {
        let (mut mem, mut ept) = new_ept(EptOptions::default());
        assert_eq!(ept.map(&mut mem, &ram(0, 0x1000, 0)), Ok(stats(0, 0, 0)));
        assert_eq!(ept.unmap(&mut mem, GuestPhysAddr(0), 0), Ok(()));
        assert_eq!(ept.protect(&mut mem, GuestPhysAddr(0), 0, EptPerms::READ), Ok(()));
        assert_eq!(ept.table_count(), 1);
    }

    #[test]
    fn destroy_frees_every_table() {
        let (mut mem, mut ept) = new_ept(with_1g());
        ept.map(&mut mem, &ram(0x1000, 0x1000, 5 * MIB)).unwrap();
        ept.map(&mut mem, &ram(GIB, GIB, GIB)).unwrap();
        ept.map(&mut mem, &ram(100 * GIB, 0x1000, PAGE)).unwrap();
        // PML4, PDPT, a PD with a PT for each unaligned end, and a PD and PT at 100 GiB.
        assert_eq!(mem.live(), 7);
        ept.destroy(&mut mem);
        assert_eq!(mem.live(), 0);
        assert_eq!(mem.frees, mem.allocs);
    }

    #[test]
    fn a_table_memory_returning_a_misaligned_table_is_reported() {
        let mut mem = FakeMemory { skew_next: 0x800, ..FakeMemory::default() };
        assert_eq!(Ept::new(&mut mem).unwrap_err(), EptError::BadTableAddress { pa: HostPhysAddr(0x5800) });
        assert_eq!(mem.live(), 0);
        let mut ept = Ept::new(&mut mem).unwrap();
        mem.skew_next = 0x10;
        assert_eq!(ept.map(&mut mem, &ram(0, 0, PAGE)), Err(EptError::BadTableAddress { pa: HostPhysAddr(0x7010) }));
        assert_eq!((ept.table_count(), mem.live()), (1, 1));
    }

    #[test]
    fn translate_refuses_entries_the_cpu_would_find_misconfigured() {
        let (mut mem, mut ept) = new_ept(EptOptions::default());
        ept.map(&mut mem, &ram(0, 0x4000_0000, 2 * MIB)).unwrap();
        ept.map(&mut mem, &ram(2 * MIB, 0x5000_0000, PAGE)).unwrap();
        let pdpt = HostPhysAddr(mem.table(ept.root)[0] & ADDR_MASK);
        let pd = HostPhysAddr(mem.table(pdpt)[0] & ADDR_MASK);
        let pt = HostPhysAddr(mem.table(pd)[1] & ADDR_MASK);
        let good = mem.table(pt)[0];
        for bad in [
            (good & !RWX) | 0b010,              // write-only
            (good & !MEM_TYPE_MASK) | (2 << 3), // reserved memory type
        ] {
            mem.table(pt)[0] = bad;
            assert_eq!(tr(&mut mem, &ept, 2 * MIB), None, "{bad:#x}");
            // Neither mapped (unmap refuses) nor free (map refuses).
            assert!(ept.unmap(&mut mem, GuestPhysAddr(2 * MIB), PAGE).is_err());
            assert!(ept.map(&mut mem, &ram(2 * MIB, 0, PAGE)).is_err());
        }
        // A 2 MiB leaf with address bits 20:12 set.
        let big = mem.table(pd)[0];
        mem.table(pd)[0] = big | 0x1000;
        assert_eq!(tr(&mut mem, &ept, 0), None);
        // A page-size bit in the PML4E.
        mem.table(pd)[0] = big;
        let pml4e = mem.table(ept.root)[0];
        mem.table(ept.root)[0] = pml4e | PAGE_SIZE;
        assert_eq!(tr(&mut mem, &ept, 0), None);
        mem.table(ept.root)[0] = pml4e;
        assert_eq!(tr(&mut mem, &ept, 0).unwrap().hpa, HostPhysAddr(0x4000_0000));
    }

    #[test]
    fn errors_say_what_to_do() {
        assert_eq!(
            format!("{}", EptError::Overlap { gpa: GuestPhysAddr(0x1000) }),
            "guest-physical 0x1000 is already mapped; unmap it first or fix the overlapping memory layout"
        );
        assert_eq!(
            format!("{}", EptError::InvalidPerms { perms: EptPerms::WRITE }),
            "EPT permissions -W- grant write without read, an EPT misconfiguration; add READ"
        );
        assert_eq!(
            format!("{}", EptError::Misaligned { gpa: GuestPhysAddr(0x800), hpa: None, len: 0x1000 }),
            "range of 0x1000 bytes at guest-physical 0x800 is not 4 KiB aligned: EPT changes whole 4 KiB pages, \
             so the address and the length must be multiples of 0x1000"
        );
    }

    /// xorshift64: deterministic, dependency-free randomness.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn one_in(&mut self, n: u64) -> bool {
            self.below(n) == 0
        }
    }

    /// The reference model: what each mapped 4 KiB page maps to.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Page {
        hpa: u64,
        perms: EptPerms,
        mem_type: MemType,
    }

    fn expand(mem: &mut FakeMemory, ept: &Ept) -> BTreeMap<u64, Page> {
        let mut pages = BTreeMap::new();
        for (gpa, t) in ept.mappings(mem) {
            for k in 0..t.page_size.bytes() / PAGE {
                let page = Page { hpa: t.hpa.0 + k * PAGE, perms: t.perms, mem_type: t.mem_type };
                pages.insert(gpa.0 + k * PAGE, page);
            }
        }
        pages
    }

    /// Random map/unmap/protect/translate calls, some invalid and some starved of table memory,
    /// checked against a page-by-page model.
    #[test]
    fn random_operations_agree_with_a_page_model_and_never_panic() {
        const PAGES: u64 = 8192; // 32 MiB of guest-physical space
        let valid_perms =
            [EptPerms::READ, EptPerms::READ | EptPerms::WRITE, EptPerms::READ | EptPerms::EXECUTE, EptPerms::all()];
        let invalid_perms = [EptPerms::WRITE, EptPerms::EXECUTE, EptPerms::empty()];
        let types = [
            MemType::Uncacheable,
            MemType::WriteCombining,
            MemType::WriteThrough,
            MemType::WriteProtected,
            MemType::WriteBack,
        ];
        for seed in [0x9E37_79B9_7F4A_7C15, 1, 0xDEAD_BEEF, 42] {
            let mut rng = Rng(seed);
            let (mut mem, mut ept) = new_ept(EptOptions::default());
            let mut model: BTreeMap<u64, Page> = BTreeMap::new();
            for step in 0..2500 {
                // 0, 1: map, 2: unmap, 3: protect; maps get rarer as the space fills, which keeps
                // it about a third full, leaving room for 2 MiB pages.
                let op = if rng.below(PAGES) >= 2 * model.len() as u64 { rng.below(2) } else { 2 + rng.below(2) };
                let mut gpa = rng.below(PAGES) * PAGE;
                // A third of the maps are whole 2 MiB blocks with a matching host address in the
                // lower half, which small maps leave alone so that blocks there come free again:
                // 2 MiB pages, which later unmaps and protects split.
                let big = op < 2 && rng.one_in(3);
                if big {
                    gpa = rng.below(PAGES / 2 / 512) * 2 * MIB;
                } else if op < 2 {
                    gpa = (PAGES / 2 + rng.below(PAGES / 2)) * PAGE;
                }
                if op >= 2 && !model.is_empty() && !rng.one_in(4) {
                    // Mostly aim unmap and protect at mapped memory, or they only meet holes.
                    // Half the time in the lower half, where the 2 MiB pages are.
                    let half = (PAGES / 2) * PAGE;
                    let mut keys = if rng.one_in(2) { model.range(..half) } else { model.range(half..) };
                    let count = keys.clone().count() as u64;
                    gpa = keys.nth(rng.below(count.max(1)) as usize).map_or(gpa, |(&k, _)| k);
                }
                // Some unmaps take a whole mapped run, so that 2 MiB blocks come free again.
                let whole_run = op == 2 && rng.one_in(3);
                while whole_run && gpa > 0 && model.contains_key(&(gpa - PAGE)) {
                    gpa -= PAGE;
                }
                let mut pages = match rng.below(4) {
                    _ if whole_run => PAGES,
                    0 => 1 + rng.below(4),
                    1 => 1 + rng.below(64),
                    2 => 512 * (1 + rng.below(3)),
                    _ => 1 + rng.below(2048),
                }
                .min(PAGES - gpa / PAGE);
                if big {
                    pages = 512;
                } else if !rng.one_in(4) {
                    // Mostly stay within the free (map) or mapped (unmap, protect) run at gpa,
                    // so that most requests succeed and the space neither fills nor empties.
                    let want_mapped = op >= 2;
                    let run = (0..pages).take_while(|k| model.contains_key(&(gpa + k * PAGE)) == want_mapped).count();
                    pages = (run as u64).max(1);
                }
                let mut len = pages * PAGE;
                let perms = if rng.one_in(12) {
                    invalid_perms[rng.below(3) as usize]
                } else {
                    valid_perms[rng.below(4) as usize]
                };
                // Some requests are malformed on purpose.
                let mut expect_err = None;
                if rng.one_in(40) {
                    gpa += 0x800;
                } else if rng.one_in(40) {
                    len += 0x10;
                } else if rng.one_in(40) {
                    gpa = GUEST_PHYS_LIMIT - rng.below(3) * PAGE;
                    len = 4 * PAGE;
                    expect_err = Some(EptError::OutOfRange { gpa: GuestPhysAddr(gpa), len });
                }
                let misaligned = !gpa.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE);
                let range: Vec<u64> = if misaligned || expect_err.is_some() {
                    Vec::new()
                } else {
                    (gpa..gpa + len).step_by(PAGE as usize).collect()
                };
                let starved = rng.one_in(6);
                if starved {
                    mem.budget = Some(rng.below(2) as usize);
                }
                let snapshot = (ept.mappings(&mut mem), ept.table_count());

                let (result, expected) = match op {
                    0 | 1 => {
                        // Host addresses: sometimes 2 MiB-compatible with the guest's.
                        let base = 0x1_0000_0000 + rng.below(64) * 2 * MIB;
                        let hpa =
                            if big || rng.one_in(3) { base + gpa % (2 * MIB) } else { base + rng.below(512) * PAGE };
                        let m = mapping(gpa, hpa, len, perms, types[rng.below(5) as usize]);
                        let expected = if misaligned {
                            Err(EptError::Misaligned { gpa: GuestPhysAddr(gpa), hpa: Some(HostPhysAddr(hpa)), len })
                        } else if let Some(e) = expect_err {
                            Err(e)
                        } else if !perms.contains(EptPerms::READ) {
                            Err(EptError::InvalidPerms { perms })
                        } else if let Some(&p) = range.iter().find(|p| model.contains_key(p)) {
                            Err(EptError::Overlap { gpa: GuestPhysAddr(p) })
                        } else {
                            Ok(())
                        };
                        let result = ept.map(&mut mem, &m);
                        if let Ok(s) = result {
                            let bytes = s.pages_4k * PAGE + s.pages_2m * 2 * MIB + s.pages_1g * GIB;
                            assert_eq!(bytes, len, "seed {seed:#x} step {step}: {s:?}");
                            for (k, &p) in range.iter().enumerate() {
                                model.insert(p, Page { hpa: hpa + k as u64 * PAGE, perms, mem_type: m.mem_type });
                            }
                        }
                        (result.map(|_| ()), expected)
                    }
                    2 => {
                        let expected = if misaligned {
                            Err(EptError::Misaligned { gpa: GuestPhysAddr(gpa), hpa: None, len })
                        } else if let Some(e) = expect_err {
                            Err(e)
                        } else if let Some(&p) = range.iter().find(|p| !model.contains_key(p)) {
                            Err(EptError::NotMapped { gpa: GuestPhysAddr(p) })
                        } else {
                            Ok(())
                        };
                        let result = ept.unmap(&mut mem, GuestPhysAddr(gpa), len);
                        if result.is_ok() {
                            for p in &range {
                                model.remove(p);
                            }
                        }
                        (result, expected)
                    }
                    _ => {
                        let expected = if misaligned {
                            Err(EptError::Misaligned { gpa: GuestPhysAddr(gpa), hpa: None, len })
                        } else if let Some(e) = expect_err {
                            Err(e)
                        } else if !perms.contains(EptPerms::READ) {
                            Err(EptError::InvalidPerms { perms })
                        } else if let Some(&p) = range.iter().find(|p| !model.contains_key(p)) {
                            Err(EptError::NotMapped { gpa: GuestPhysAddr(p) })
                        } else {
                            Ok(())
                        };
                        let result = ept.protect(&mut mem, GuestPhysAddr(gpa), len, perms);
                        if result.is_ok() {
                            for p in &range {
                                if let Some(page) = model.get_mut(p) {
                                    page.perms = perms;
                                }
                            }
                        }
                        (result, expected)
                    }
                };
                mem.budget = None;
                if result == Err(EptError::OutOfTableMemory) {
                    assert!(starved && expected.is_ok(), "seed {seed:#x} step {step}: unexpected OOM");
                    assert_eq!((ept.mappings(&mut mem), ept.table_count()), snapshot, "seed {seed:#x} step {step}");
                } else {
                    assert_eq!(result, expected, "seed {seed:#x} step {step}");
                }
                assert_eq!(ept.table_count(), mem.live(), "seed {seed:#x} step {step}");

                for _ in 0..4 {
                    let probe = rng.below(PAGES * PAGE);
                    let page = probe & !(PAGE - 1);
                    let want = model.get(&page).map(|p| (p.hpa + probe % PAGE, p.perms, p.mem_type));
                    let got = tr(&mut mem, &ept, probe).map(|t| (t.hpa.0, t.perms, t.mem_type));
                    assert_eq!(got, want, "seed {seed:#x} step {step} probe {probe:#x}");
                }
                if step % 100 == 0 {
                    assert_eq!(expand(&mut mem, &ept), model, "seed {seed:#x} step {step}");
                    assert_invariants(&mut mem, &ept);
                }
            }
            assert_eq!(expand(&mut mem, &ept), model, "seed {seed:#x}");
            assert_invariants(&mut mem, &ept);
            // Unmap what is left, run by run: only the PML4 remains.
            let pages: Vec<u64> = model.keys().copied().collect();
            let mut runs: Vec<(u64, u64)> = Vec::new();
            for p in pages {
                match runs.last_mut() {
                    Some((start, len)) if *start + *len == p => *len += PAGE,
                    _ => runs.push((p, PAGE)),
                }
            }
            for (start, len) in runs {
                ept.unmap(&mut mem, GuestPhysAddr(start), len).unwrap();
            }
            assert_eq!((ept.table_count(), mem.live()), (1, 1), "seed {seed:#x}");
            ept.destroy(&mut mem);
            assert_eq!(mem.live(), 0);
        }
    }
}
