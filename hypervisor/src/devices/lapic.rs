//! Virtual local APIC, one per guest vCPU: a register-level model that touches no hardware and never reads a
//! clock, so every state transition is unit-tested on the host.
//!
//! Reference: Intel SDM Vol. 3A, chapter "Advanced Programmable Interrupt Controller (APIC)" (chapter 11 in
//! current editions, chapter 10 in older ones). Sections relied on, by title:
//! - table "Local APIC Register Address Map" (xAPIC MMIO offsets) and, in "x2APIC Register Address Space",
//!   table "Local APIC Register Address Map Supported by x2APIC" (MSR = 0x800 + offset / 16, which accesses
//!   #GP, which bits are reserved);
//! - "Interrupt, Task, and Processor Priority" (TPR, ISRV, PPR and the priority-class rule used by `pending`);
//! - "APIC Timer" (one-shot, periodic and TSC-deadline modes, divide configuration, mode changes disarm);
//! - "Error Handling" (ESR bits are latched into the visible register by a write, then read);
//! - "Local APIC State After Power-Up or Reset", "... After an INIT Reset", "... After It Has Been Software
//!   Disabled" (LVT masks forced while SVR bit 8 is clear);
//! - "State Changes From xAPIC Mode to x2APIC Mode" / "x2APIC State Transitions" (valid IA32_APIC_BASE writes);
//! - "Logical Destination Mode in x2APIC Mode" (LDR derived from the x2APIC ID);
//! - "Issuing Interrupts" / "Interrupt Command Register (ICR)" and "SELF IPI Register".
//!
//! Time: the caller passes `now_ns`, monotonic nanoseconds. The timer counts APIC bus cycles at [`BUS_HZ`]
//! (1 GHz, one cycle per nanosecond, as KVM does), so `initial count * divisor` is the period in nanoseconds.
//! Every register access first runs [`LocalApic::tick`] so that a read after an unserviced deadline already sees
//! the fired timer, exactly as on hardware where the interrupt would have latched in the meantime.
//!
//! Choices where the SDM leaves room (documented once here, referred to below):
//! - Accesses: MMIO is decoded only in xAPIC mode; only 16-byte-aligned offsets inside the 4 KiB page name a
//!   register. Any other offset, a reserved register, or any MMIO while the APIC is in x2APIC mode or globally
//!   disabled reads 0 and ignores writes (the caller forwards only 32-bit accesses). ESR bit 7 "illegal register
//!   address" is not raised, as in KVM. The MSR interface exists only in x2APIC mode; everything else is #GP.
//! - Read-only registers: in xAPIC mode writes are ignored (including the ID register, which some processors
//!   let software change: the hypervisor routes IPIs by the ID it assigned). In x2APIC mode they #GP.
//! - Reserved bits: in x2APIC mode a non-zero reserved bit in a WRMSR is #GP ("Reserved Bit Checking"); in
//!   xAPIC mode reserved bits are dropped. SVR bit 9 (focus checking) is kept writable as KVM does; SVR bit 12
//!   (EOI-broadcast suppression) is reserved because the version register does not advertise it. The reserved
//!   timer mode 11b is #GP in x2APIC mode and leaves the previous mode unchanged in xAPIC mode.
//! - Software disable (SVR bit 8 clear): LVT masks are forced set, `accept` still latches into IRR, and
//!   `pending` reports nothing; held requests are delivered once software enables the APIC again. With the
//!   APIC globally disabled (IA32_APIC_BASE bit 11 clear) the APIC does not exist: `accept` drops everything.
//!   Clearing bit 11 returns the registers to their power-on state ("prior initialization may be lost").
//! - APR and RRD read 0 (no bus arbitration is modelled). Delivery status (ICR bit 12) always reads 0 (idle).
//! - EOI clears the highest ISR bit and, if its TMR bit was set, clears that too and reports the vector in
//!   [`Effects::eoi_vector`] so the caller can send the EOI to the I/O APIC.
//! - The divide configuration is sampled when the initial count is written; a later divide change takes effect
//!   at the next initial-count write (the SDM does not define a mid-count change).
//! - IPIs (ICR): IPIs are edge-triggered (the ICR trigger bit only matters for INIT level de-assert). An INIT
//!   level de-assert (INIT, trigger level, level de-assert), which Linux sends after every INIT, and reserved
//!   delivery modes (011b, 111b) are dropped. A Fixed/LowestPriority IPI with a vector below 16 sets ESR "send
//!   illegal vector" (and "receive illegal vector" when it targets self) and is not sent. Fixed/LowestPriority
//!   IPIs that include self are latched here; other delivery modes (NMI, INIT, SMI, SIPI) have no local state in
//!   this model and are always reported, including to self. See [`Effects::ipi`] for the routing contract.
//! - An error with LVT Error unmasked raises the error vector; if that vector is itself illegal (< 16) only
//!   "receive illegal vector" is latched, to avoid an error loop.
//! - `set_apic_base`: MAXPHYADDR is taken to be 52, the architectural maximum; the caller may check a smaller
//!   guest MAXPHYADDR before calling. The BSP bit is writable (the SDM marks it R/W).

/// Default physical base of the xAPIC MMIO page (4 KiB).
pub const XAPIC_BASE: u64 = 0xFEE0_0000;
/// APIC bus / timer input frequency: one cycle per nanosecond (KVM's choice), so counts map directly to ns.
pub const BUS_HZ: u64 = 1_000_000_000;
const NS_PER_SEC: u128 = 1_000_000_000;
// Conversions divide by BUS_HZ; make a zero frequency a build error rather than a runtime division by zero.
const _: () = assert!(BUS_HZ > 0);

/// IA32_APIC_BASE bit 8: this processor is the bootstrap processor.
pub const APIC_BASE_BSP: u64 = 1 << 8;
/// IA32_APIC_BASE bit 10: x2APIC mode enable (EXTD).
pub const APIC_BASE_EXTD: u64 = 1 << 10;
/// IA32_APIC_BASE bit 11: APIC global enable (EN).
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
/// IA32_APIC_BASE bits 51:12: the MMIO page frame (MAXPHYADDR taken as 52).
pub const APIC_BASE_ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// Version register: integrated APIC version 0x14, max LVT entry 6 (seven entries, including CMCI), bit 24
/// (EOI-broadcast suppression supported) clear.
pub const APIC_VERSION: u32 = 0x0006_0014;

/// First and last x2APIC MSR (MSR = 0x800 + xAPIC offset / 16).
pub const X2APIC_MSR_FIRST: u32 = 0x800;
pub const X2APIC_MSR_LAST: u32 = 0x8FF;

// xAPIC MMIO offsets (SDM table "Local APIC Register Address Map").
pub const REG_ID: u32 = 0x020;
pub const REG_VERSION: u32 = 0x030;
pub const REG_TPR: u32 = 0x080;
pub const REG_APR: u32 = 0x090;
pub const REG_PPR: u32 = 0x0A0;
pub const REG_EOI: u32 = 0x0B0;
pub const REG_RRD: u32 = 0x0C0;
pub const REG_LDR: u32 = 0x0D0;
pub const REG_DFR: u32 = 0x0E0;
pub const REG_SVR: u32 = 0x0F0;
pub const REG_ISR0: u32 = 0x100;
pub const REG_TMR0: u32 = 0x180;
pub const REG_IRR0: u32 = 0x200;
pub const REG_ESR: u32 = 0x280;
pub const REG_LVT_CMCI: u32 = 0x2F0;
pub const REG_ICR_LOW: u32 = 0x300;
pub const REG_ICR_HIGH: u32 = 0x310;
pub const REG_LVT_TIMER: u32 = 0x320;
pub const REG_LVT_THERMAL: u32 = 0x330;
pub const REG_LVT_PMC: u32 = 0x340;
pub const REG_LVT_LINT0: u32 = 0x350;
pub const REG_LVT_LINT1: u32 = 0x360;
pub const REG_LVT_ERROR: u32 = 0x370;
pub const REG_TIMER_INITIAL: u32 = 0x380;
pub const REG_TIMER_CURRENT: u32 = 0x390;
pub const REG_TIMER_DIVIDE: u32 = 0x3E0;
/// x2APIC only (MSR 0x83F); reserved in the xAPIC page.
pub const REG_SELF_IPI: u32 = 0x3F0;

/// ESR bit 5: the APIC tried to send an IPI with a vector below 16.
pub const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
/// ESR bit 6: the APIC received (or generated locally) an interrupt with a vector below 16.
pub const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;

/// LVT bit 16: the entry is masked.
pub const LVT_MASKED: u32 = 1 << 16;
/// SVR bit 8: APIC software enable.
pub const SVR_ENABLE: u32 = 1 << 8;

// Register indexes (xAPIC offset / 16 == x2APIC MSR - 0x800), the key both interfaces decode with.
const I_ID: u32 = REG_ID >> 4;
const I_VERSION: u32 = REG_VERSION >> 4;
const I_TPR: u32 = REG_TPR >> 4;
const I_APR: u32 = REG_APR >> 4;
const I_PPR: u32 = REG_PPR >> 4;
const I_EOI: u32 = REG_EOI >> 4;
const I_RRD: u32 = REG_RRD >> 4;
const I_LDR: u32 = REG_LDR >> 4;
const I_DFR: u32 = REG_DFR >> 4;
const I_SVR: u32 = REG_SVR >> 4;
const I_ISR0: u32 = REG_ISR0 >> 4;
const I_ISR7: u32 = I_ISR0 + 7;
const I_TMR0: u32 = REG_TMR0 >> 4;
const I_TMR7: u32 = I_TMR0 + 7;
const I_IRR0: u32 = REG_IRR0 >> 4;
const I_IRR7: u32 = I_IRR0 + 7;
const I_ESR: u32 = REG_ESR >> 4;
const I_LVT_CMCI: u32 = REG_LVT_CMCI >> 4;
const I_ICR_LOW: u32 = REG_ICR_LOW >> 4;
const I_ICR_HIGH: u32 = REG_ICR_HIGH >> 4;
const I_LVT_TIMER: u32 = REG_LVT_TIMER >> 4;
const I_LVT_THERMAL: u32 = REG_LVT_THERMAL >> 4;
const I_LVT_PMC: u32 = REG_LVT_PMC >> 4;
const I_LVT_LINT0: u32 = REG_LVT_LINT0 >> 4;
const I_LVT_LINT1: u32 = REG_LVT_LINT1 >> 4;
const I_LVT_ERROR: u32 = REG_LVT_ERROR >> 4;
const I_TIMER_INITIAL: u32 = REG_TIMER_INITIAL >> 4;
const I_TIMER_CURRENT: u32 = REG_TIMER_CURRENT >> 4;
const I_TIMER_DIVIDE: u32 = REG_TIMER_DIVIDE >> 4;
const I_SELF_IPI: u32 = REG_SELF_IPI >> 4;

// Slots of the LVT array.
const LVT_CMCI: usize = 0;
const LVT_TIMER: usize = 1;
const LVT_THERMAL: usize = 2;
const LVT_PMC: usize = 3;
const LVT_LINT0: usize = 4;
const LVT_LINT1: usize = 5;
const LVT_ERROR: usize = 6;
const LVT_COUNT: usize = 7;

// Writable bits per register; everything else is reserved or read-only (delivery status bit 12, remote IRR
// bit 14), so it can never be stored and always reads 0.
const LVT_TIMER_WRITABLE: u32 = 0x0007_00FF; // vector, mask, mode 18:17
const LVT_DM_WRITABLE: u32 = 0x0001_07FF; // CMCI, thermal, PMC: vector, delivery mode, mask
const LVT_LINT_WRITABLE: u32 = 0x0001_A7FF; // + pin polarity (13), trigger mode (15)
const LVT_ERROR_WRITABLE: u32 = 0x0001_00FF; // vector, mask
const SVR_WRITABLE: u32 = 0x0000_03FF; // vector, enable, focus checking
const DCR_WRITABLE: u32 = 0x0000_000B; // bits 0, 1, 3
const ICR_LOW_WRITABLE: u64 = 0x000C_CFFF; // vector, delivery + dest mode, level, trigger, shorthand
const ICR_X2APIC_WRITABLE: u64 = 0xFFFF_FFFF_0000_0000 | ICR_LOW_WRITABLE;
const ICR_XAPIC_DEST: u64 = 0xFF00_0000_0000_0000; // ICR high bits 31:24
const DFR_RESET: u32 = 0xFFFF_FFFF;
const DFR_WRITABLE: u32 = 0xF000_0000; // model bits; 27:0 read as ones
const SVR_RESET: u32 = 0xFF;

const TIMER_MODE_SHIFT: u32 = 17;
const TIMER_MODE_MASK: u32 = 3 << TIMER_MODE_SHIFT;
// Timer modes (LVT Timer bits 18:17): 00b one-shot, 01b periodic, 10b TSC-deadline, 11b reserved.
const TIMER_PERIODIC: u32 = 1;
const TIMER_TSC_DEADLINE: u32 = 2;
const TIMER_RESERVED: u32 = 3;

/// What a register write asks the caller to do outside this vCPU's APIC.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Effects {
    /// An IPI the guest sent through ICR, for the caller to route to other vCPUs of the domain.
    ///
    /// Contract: a Fixed/LowestPriority vector that includes this vCPU (`SelfOnly` never appears for those,
    /// `AllIncludingSelf` does) has already been latched here, so the caller delivers it to the other vCPUs
    /// only. Any other delivery mode is delivered by the caller to every target, this vCPU included.
    /// `Physical`/`Logical` are matched by the caller against every vCPU (see [`LocalApic::is_destination`]).
    pub ipi: Option<Ipi>,
    /// The vector an EOI retired whose TMR bit was set (level-triggered): forward the EOI to the I/O APIC.
    pub eoi_vector: Option<u8>,
}

/// An inter-processor interrupt decoded from ICR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipi {
    /// Vector (Fixed/LowestPriority), start page (StartUp); 0 for the others.
    pub vector: u8,
    pub delivery: DeliveryMode,
    pub dest: Destination,
}

/// The local interrupt pins: on a PC, LINT0 is wired to the 8259's INTR output and LINT1
/// to the chipset's NMI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lint {
    Lint0,
    Lint1,
}

/// What an edge on a local interrupt pin did ([`LocalApic::lint_edge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LintEffect {
    /// The CPU must take an NMI.
    Nmi,
    /// A fixed vector was latched in IRR (`pending` reports it).
    Latched,
    /// The CPU takes an external interrupt whose vector the 8259 supplies.
    ExtInt,
    /// Masked, or a mode with no effect here.
    Nothing,
}

/// Delivery mode field (bits 10:8) of ICR and LVT entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    Fixed,
    LowestPriority,
    Smi,
    Nmi,
    Init,
    StartUp,
    /// LVT only (LINT0 wired to the 8259); reserved in ICR.
    ExtInt,
}

impl DeliveryMode {
    /// Decodes delivery-mode bits 10:8; None for the reserved encoding 011b.
    pub const fn from_bits(bits: u32) -> Option<Self> {
        match bits & 7 {
            0 => Some(DeliveryMode::Fixed),
            1 => Some(DeliveryMode::LowestPriority),
            2 => Some(DeliveryMode::Smi),
            4 => Some(DeliveryMode::Nmi),
            5 => Some(DeliveryMode::Init),
            6 => Some(DeliveryMode::StartUp),
            7 => Some(DeliveryMode::ExtInt),
            _ => None,
        }
    }
}

/// Where an IPI goes. `Physical`/`Logical` carry the ICR destination field: 8 bits (ICR bits 63:56) in xAPIC
/// mode, 32 bits (ICR bits 63:32) in x2APIC mode; all-ones is the broadcast address in either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Physical(u32),
    Logical(u32),
    SelfOnly,
    AllIncludingSelf,
    AllExcludingSelf,
}

/// The addressing state of a local APIC (ID, logical destination, destination format,
/// mode): enough to decide whether an IPI is for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Addressing {
    pub enabled: bool,
    pub x2apic: bool,
    pub id: u32,
    pub ldr: u32,
    pub dfr: u32,
}

impl Addressing {
    /// Whether an APIC with this addressing is a target of `dest`, `is_source` being true for the
    /// sender. Physical: ID match or broadcast (0xFF xAPIC, 0xFFFF_FFFF x2APIC). Logical: xAPIC flat model
    /// (DFR 0xF) ANDs the MDA with LDR[31:24]; cluster model (DFR 0x0) matches cluster nibble and member bits;
    /// x2APIC matches cluster ID (bits 31:16) and member bits ("Logical Destination Mode in x2APIC Mode").
    pub fn accepts(&self, dest: Destination, is_source: bool) -> bool {
        if !self.enabled {
            return false;
        }
        match dest {
            Destination::SelfOnly => is_source,
            Destination::AllIncludingSelf => true,
            Destination::AllExcludingSelf => !is_source,
            Destination::Physical(id) if self.x2apic => id == u32::MAX || id == self.id,
            Destination::Physical(id) => id & 0xFF == 0xFF || id & 0xFF == self.id & 0xFF,
            Destination::Logical(mda) if self.x2apic => {
                let ldr = x2apic_ldr(self.id);
                mda == u32::MAX || (mda >> 16 == ldr >> 16 && mda & ldr & 0xFFFF != 0)
            }
            Destination::Logical(mda) => {
                let (mda, ldr) = (mda & 0xFF, self.ldr >> 24);
                if mda == 0xFF {
                    true
                } else if self.dfr >> 28 == 0xF {
                    mda & ldr != 0
                } else {
                    mda >> 4 == ldr >> 4 && mda & ldr & 0xF != 0
                }
            }
        }
    }
}

/// The local APIC of one vCPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalApic {
    /// Hypervisor-assigned APIC ID (the x2APIC ID; its low 8 bits are the xAPIC ID).
    id: u32,
    /// IA32_APIC_BASE.
    base: u64,
    tpr: u8,
    /// xAPIC LDR (bits 31:24 meaningful); in x2APIC mode LDR is derived from `id` instead.
    ldr: u32,
    dfr: u32,
    svr: u32,
    isr: [u32; 8],
    tmr: [u32; 8],
    irr: [u32; 8],
    /// Bit i set when `irr[i]` is non-zero, so that "anything requested?", asked before
    /// every VM entry, is one test instead of a scan of eight words. Only
    /// [`Self::set_irr`] changes `irr`, and it keeps this in step.
    irr_words: u8,
    /// Visible ESR: the errors latched by the last ESR write.
    esr: u32,
    /// Errors detected since the last ESR write ("Error Handling": a write latches them into `esr`).
    esr_pending: u32,
    /// ICR as the 64-bit x2APIC layout; in xAPIC mode the high dword is ICR high (bits 31:24 used).
    icr: u64,
    lvt: [u32; LVT_COUNT],
    initial_count: u32,
    dcr: u32,
    /// One-shot/periodic: when the timer next fires (ns); None when stopped.
    timer_deadline: Option<u64>,
    /// Period in ns sampled when armed (count * divisor bus cycles), at least 1.
    timer_period_ns: u64,
    /// Divisor sampled when armed, for the current-count computation.
    timer_divisor: u64,
    /// TSC-deadline mode: the armed deadline converted to ns by the caller; None when disarmed.
    tsc_deadline_ns: Option<u64>,
}

impl LocalApic {
    /// Power-on state ("Local APIC State After Power-Up or Reset"): xAPIC mode at the default base, globally
    /// enabled, software disabled (SVR 0xFF), all LVTs masked, DFR all ones, everything else zero.
    pub const fn new(apic_id: u32, bsp: bool) -> Self {
        let mut base = XAPIC_BASE | APIC_BASE_ENABLE;
        if bsp {
            base |= APIC_BASE_BSP;
        }
        LocalApic {
            id: apic_id,
            base,
            tpr: 0,
            ldr: 0,
            dfr: DFR_RESET,
            svr: SVR_RESET,
            isr: [0; 8],
            tmr: [0; 8],
            irr: [0; 8],
            irr_words: 0,
            esr: 0,
            esr_pending: 0,
            icr: 0,
            lvt: [LVT_MASKED; LVT_COUNT],
            initial_count: 0,
            dcr: 0,
            timer_deadline: None,
            timer_period_ns: 1,
            timer_divisor: 2,
            tsc_deadline_ns: None,
        }
    }

    /// INIT ("Local APIC State After an INIT Reset"): power-on state except the APIC ID and IA32_APIC_BASE,
    /// so an APIC in x2APIC mode stays in x2APIC mode.
    pub fn reset(&mut self) {
        let (id, base) = (self.id, self.base);
        *self = Self::new(id, false);
        self.base = base;
    }

    /// The hypervisor-assigned APIC ID.
    pub fn apic_id(&self) -> u32 {
        self.id
    }

    /// IA32_APIC_BASE MSR value.
    pub fn apic_base(&self) -> u64 {
        self.base
    }

    /// Physical address of the xAPIC MMIO page.
    pub fn mmio_base(&self) -> u64 {
        self.base & APIC_BASE_ADDR_MASK
    }

    /// x2APIC mode (EN and EXTD both set).
    pub fn x2apic(&self) -> bool {
        self.hw_enabled() && self.base & APIC_BASE_EXTD != 0
    }

    /// xAPIC mode: the MMIO page is decoded.
    pub fn xapic(&self) -> bool {
        self.hw_enabled() && self.base & APIC_BASE_EXTD == 0
    }

    fn hw_enabled(&self) -> bool {
        self.base & APIC_BASE_ENABLE != 0
    }

    /// SVR bit 8.
    pub fn software_enabled(&self) -> bool {
        self.svr & SVR_ENABLE != 0
    }

    /// WRMSR IA32_APIC_BASE. Returns false when the caller must inject #GP: reserved bits (7:0, 9, 63:52), the
    /// invalid state EN=0/EXTD=1, x2APIC -> xAPIC without going through disabled, and disabled -> x2APIC
    /// ("x2APIC State Transitions"). Moving the base is allowed; see [`Self::mmio_base`].
    pub fn set_apic_base(&mut self, value: u64) -> bool {
        const RESERVED: u64 = !(APIC_BASE_ADDR_MASK | APIC_BASE_ENABLE | APIC_BASE_EXTD | APIC_BASE_BSP);
        if value & RESERVED != 0 {
            return false;
        }
        let (new_en, new_extd) = (value & APIC_BASE_ENABLE != 0, value & APIC_BASE_EXTD != 0);
        let (old_en, old_x2) = (self.hw_enabled(), self.x2apic());
        let valid = match (new_en, new_extd) {
            (false, true) => false,
            (true, false) => !old_x2,
            (true, true) => old_en,
            (false, false) => true,
        };
        if !valid {
            return false;
        }
        self.base = value;
        if old_en && !new_en {
            // SDM "Enabling or Disabling the Local APIC": prior initialization may be lost; returning to the
            // power-on register state makes disabled -> xAPIC start clean, as after reset.
            self.reset();
        }
        true
    }

    /// xAPIC MMIO read. `offset` is within the 4 KiB page; only 16-byte-aligned offsets name registers, every
    /// other offset, reserved register or write-only register reads 0, as does any access outside xAPIC mode.
    pub fn mmio_read(&mut self, offset: u32, now_ns: u64) -> u32 {
        self.tick(now_ns);
        let Some(idx) = self.mmio_index(offset) else { return 0 };
        self.read_reg(idx, now_ns, false).unwrap_or(0) as u32
    }

    /// xAPIC MMIO write (32-bit). Offsets that name no writable register are ignored, as are all writes
    /// outside xAPIC mode.
    pub fn mmio_write(&mut self, offset: u32, value: u32, now_ns: u64) -> Effects {
        self.tick(now_ns);
        let Some(idx) = self.mmio_index(offset) else { return Effects::default() };
        self.write_reg(idx, u64::from(value), now_ns, false).unwrap_or_default()
    }

    /// Register index of an MMIO offset: only 16-byte-aligned offsets inside the page, only in xAPIC mode.
    fn mmio_index(&self, offset: u32) -> Option<u32> {
        (self.xapic() && offset & 0xF == 0 && offset < 0x1000).then_some(offset >> 4)
    }

    /// RDMSR of an x2APIC register (0x800..=0x8FF). None means #GP: not in x2APIC mode, reserved register, or
    /// write-only register (EOI, SELF IPI). ICR (0x830) is read as one 64-bit value.
    pub fn msr_read(&mut self, msr: u32, now_ns: u64) -> Option<u64> {
        self.tick(now_ns);
        if !self.x2apic() || !(X2APIC_MSR_FIRST..=X2APIC_MSR_LAST).contains(&msr) {
            return None;
        }
        self.read_reg(msr.wrapping_sub(X2APIC_MSR_FIRST), now_ns, true)
    }

    /// WRMSR of an x2APIC register. None means #GP: not in x2APIC mode, reserved or read-only register,
    /// non-zero reserved bits, non-zero EOI or ESR value, timer mode 11b.
    pub fn msr_write(&mut self, msr: u32, value: u64, now_ns: u64) -> Option<Effects> {
        self.tick(now_ns);
        if !self.x2apic() || !(X2APIC_MSR_FIRST..=X2APIC_MSR_LAST).contains(&msr) {
            return None;
        }
        self.write_reg(msr.wrapping_sub(X2APIC_MSR_FIRST), value, now_ns, true)
    }

    /// Task priority (TPR[7:0]); CR8 is TPR[7:4].
    pub fn tpr(&self) -> u8 {
        self.tpr
    }

    pub fn set_tpr(&mut self, tpr: u8) {
        self.tpr = tpr;
    }

    /// Processor priority ("Interrupt, Task, and Processor Priority"): if TPR[7:4] >= ISRV[7:4] then TPR,
    /// else ISRV[7:4] with the low nibble 0. ISRV is the highest in-service vector, 0 if none.
    pub fn ppr(&self) -> u8 {
        let isrv = highest(&self.isr).unwrap_or(0);
        if self.tpr >> 4 >= isrv >> 4 { self.tpr } else { isrv & 0xF0 }
    }

    /// An interrupt arrives (I/O APIC, IPI, device layer). Vectors 0..=15 are illegal: ESR "receive illegal
    /// vector" is set and the interrupt dropped. Level-triggered sets the TMR bit, edge clears it (the TMR
    /// records the trigger mode of the latest acceptance). Latches while software-disabled; dropped while
    /// globally disabled.
    pub fn accept(&mut self, vector: u8, level_triggered: bool) {
        if !self.hw_enabled() {
            return;
        }
        if vector < 16 {
            self.record_error(ESR_RECEIVE_ILLEGAL_VECTOR);
            return;
        }
        self.latch(vector, level_triggered);
    }

    /// The vector to deliver now: the highest IRR vector, if its priority class is above PPR's class. None
    /// while software- or globally disabled. `now_ns` is not consulted: this is a query (`&self`), so the
    /// caller runs [`Self::tick`] first to latch an expired timer.
    pub fn pending(&self, _now_ns: u64) -> Option<u8> {
        if !self.hw_enabled() || !self.software_enabled() {
            return None;
        }
        let vector = self.highest_irr()?;
        (vector >= 16 && vector >> 4 > self.ppr() >> 4).then_some(vector)
    }

    /// The CPU takes `vector` (as returned by `pending`): its IRR bit moves to ISR. Ignored when the vector is
    /// not requested, so a stale caller cannot create an in-service vector out of nothing.
    pub fn ack(&mut self, vector: u8) {
        if vector >= 16 && test_bit(&self.irr, vector) {
            self.set_irr(vector, false);
            set_bit(&mut self.isr, vector, true);
        }
    }

    /// Runs the timer: if it has expired by `now_ns`, latch its vector (unless masked) and re-arm (periodic,
    /// from the missed deadline so there is no drift; a late call fires once and skips the missed periods) or
    /// stop (one-shot, TSC-deadline).
    pub fn tick(&mut self, now_ns: u64) {
        let mode = self.timer_mode();
        if mode == TIMER_TSC_DEADLINE {
            if let Some(deadline) = self.tsc_deadline_ns
                && now_ns >= deadline
            {
                // SDM "TSC-Deadline Mode": firing disarms the timer and clears IA32_TSC_DEADLINE.
                self.tsc_deadline_ns = None;
                self.fire_timer();
            }
            return;
        }
        let Some(deadline) = self.timer_deadline else { return };
        if now_ns < deadline {
            return;
        }
        self.timer_deadline = if mode == TIMER_PERIODIC {
            let period = self.timer_period_ns.max(1);
            let missed = now_ns.saturating_sub(deadline).checked_div(period).unwrap_or(0);
            let next = u128::from(missed).saturating_add(1).saturating_mul(u128::from(period));
            let next = next.saturating_add(u128::from(deadline));
            Some(u64::try_from(next).unwrap_or(u64::MAX))
        } else {
            None
        };
        self.fire_timer();
    }

    /// When the timer next fires (ns), for the hypervisor's own timer; None when not armed. Reported even if
    /// the LVT entry is masked, because expiry still changes state (a one-shot stops, a periodic re-arms).
    pub fn next_deadline(&self) -> Option<u64> {
        if self.timer_mode() == TIMER_TSC_DEADLINE { self.tsc_deadline_ns } else { self.timer_deadline }
    }

    /// WRMSR IA32_TSC_DEADLINE, converted to ns by the caller (guest value 0 = None = disarm). Ignored unless
    /// the timer is in TSC-deadline mode ("in other timer modes ... writes are ignored").
    pub fn set_tsc_deadline_ns(&mut self, deadline_ns: Option<u64>) {
        if self.tsc_deadline_mode() {
            self.tsc_deadline_ns = deadline_ns;
        }
    }

    /// The armed TSC deadline (ns) for RDMSR IA32_TSC_DEADLINE (None reads as 0).
    pub fn tsc_deadline_ns(&self) -> Option<u64> {
        self.tsc_deadline_ns
    }

    /// LVT Timer bits 18:17 == 10b.
    pub fn tsc_deadline_mode(&self) -> bool {
        self.timer_mode() == TIMER_TSC_DEADLINE
    }

    /// Whether this APIC is a target of `dest` (for the caller's IPI routing), `is_source` being true for the
    /// sender. Physical: ID match or broadcast (0xFF xAPIC, 0xFFFF_FFFF x2APIC). Logical: xAPIC flat model
    /// (DFR 0xF) ANDs the MDA with LDR[31:24]; cluster model (DFR 0x0) matches cluster nibble and member bits;
    /// x2APIC matches cluster ID (bits 31:16) and member bits ("Logical Destination Mode in x2APIC Mode").
    pub fn is_destination(&self, dest: Destination, is_source: bool) -> bool {
        self.addressing().accepts(dest, is_source)
    }

    /// Whether the 8259's INT output reaches this CPU: with the APIC globally disabled the
    /// INTR pin goes straight to the core; otherwise LINT0 must be an unmasked ExtINT entry
    /// (the "virtual wire" mode firmware leaves, "Local Vector Table"). A software-disabled
    /// APIC masks every LVT entry, LINT0 included.
    pub fn accepts_pic_interrupts(&self) -> bool {
        if !self.hw_enabled() {
            return true;
        }
        let lint0 = self.lvt[LVT_LINT0];
        self.software_enabled()
            && lint0 & LVT_MASKED == 0
            && DeliveryMode::from_bits(lint0 >> 8) == Some(DeliveryMode::ExtInt)
    }

    /// A rising edge on local interrupt pin LINT0 or LINT1 (`Lint`), as its LVT entry says
    /// ("Local Vector Table"): NMI mode gives an NMI, fixed mode latches the entry's
    /// vector, ExtINT hands the CPU the 8259's vector (the caller's INTA cycle). With the
    /// APIC globally disabled the pins go straight to the core, LINT0 as INTR and LINT1
    /// as NMI (SDM "Local APIC Status and Location"). Masked entries (all of them while
    /// software-disabled) and the SMI/INIT modes, which this model has no use for, do
    /// nothing.
    pub fn lint_edge(&mut self, pin: Lint) -> LintEffect {
        if !self.hw_enabled() {
            return match pin {
                Lint::Lint0 => LintEffect::ExtInt,
                Lint::Lint1 => LintEffect::Nmi,
            };
        }
        let entry = self.lvt[match pin {
            Lint::Lint0 => LVT_LINT0,
            Lint::Lint1 => LVT_LINT1,
        }];
        if !self.software_enabled() || entry & LVT_MASKED != 0 {
            return LintEffect::Nothing;
        }
        match DeliveryMode::from_bits(entry >> 8) {
            Some(DeliveryMode::Nmi) => LintEffect::Nmi,
            Some(DeliveryMode::ExtInt) => LintEffect::ExtInt,
            Some(DeliveryMode::Fixed) => {
                self.accept(entry as u8, false);
                LintEffect::Latched
            }
            _ => LintEffect::Nothing,
        }
    }

    /// What other vCPUs need to know to address IPIs to this APIC, as a copy that can be
    /// published without holding the vCPU.
    pub fn addressing(&self) -> Addressing {
        Addressing { enabled: self.hw_enabled(), x2apic: self.x2apic(), id: self.id, ldr: self.ldr, dfr: self.dfr }
    }

    fn timer_mode(&self) -> u32 {
        (self.lvt[LVT_TIMER] & TIMER_MODE_MASK) >> TIMER_MODE_SHIFT
    }

    fn set_irr(&mut self, vector: u8, on: bool) {
        set_bit(&mut self.irr, vector, on);
        let w = usize::from(vector >> 5);
        let nonzero = self.irr.get(w).is_some_and(|word| *word != 0);
        self.irr_words = (self.irr_words & !(1 << w)) | (u8::from(nonzero) << w);
    }

    /// The highest requested vector: [`highest`] of the IRR, through `irr_words`.
    fn highest_irr(&self) -> Option<u8> {
        debug_assert_eq!(
            self.irr_words,
            self.irr.iter().enumerate().fold(0u8, |m, (i, w)| m | (u8::from(*w != 0) << i)),
            "irr_words out of step with the IRR"
        );
        if self.irr_words == 0 {
            return None;
        }
        let w = 7 - self.irr_words.leading_zeros() as usize;
        let word = *self.irr.get(w)?;
        // word != 0 (its summary bit is set), so leading_zeros <= 31.
        Some((w as u32 * 32 + (31 - word.leading_zeros())) as u8)
    }

    fn latch(&mut self, vector: u8, level_triggered: bool) {
        self.set_irr(vector, true);
        set_bit(&mut self.tmr, vector, level_triggered);
    }

    /// Records errors for the next ESR latch and raises the LVT Error interrupt if it is unmasked.
    fn record_error(&mut self, bits: u32) {
        self.esr_pending |= bits;
        let lvt = self.lvt[LVT_ERROR];
        if lvt & LVT_MASKED != 0 || !self.hw_enabled() {
            return;
        }
        let vector = (lvt & 0xFF) as u8;
        if vector < 16 {
            // Delivering an illegal error vector would be another error: record it without recursing.
            self.esr_pending |= ESR_RECEIVE_ILLEGAL_VECTOR;
        } else {
            self.latch(vector, false);
        }
    }

    fn fire_timer(&mut self) {
        let lvt = self.lvt[LVT_TIMER];
        if lvt & LVT_MASKED == 0 {
            self.accept((lvt & 0xFF) as u8, false);
        }
    }

    /// Initial-count write in one-shot/periodic mode: 0 stops the timer, anything else (re)starts it now.
    fn arm_timer(&mut self, now_ns: u64) {
        if self.initial_count == 0 {
            self.timer_deadline = None;
            return;
        }
        let divisor = divisor(self.dcr);
        let period = cycles_to_ns(u128::from(self.initial_count).saturating_mul(u128::from(divisor))).max(1);
        self.timer_divisor = divisor;
        self.timer_period_ns = period;
        self.timer_deadline = Some(now_ns.saturating_add(period));
    }

    /// Current count: remaining bus cycles / divisor, rounded up so it reaches 0 exactly at the deadline.
    fn current_count(&self, now_ns: u64) -> u32 {
        let mode = self.timer_mode();
        if mode == TIMER_TSC_DEADLINE {
            return 0;
        }
        let Some(deadline) = self.timer_deadline else { return 0 };
        let period = self.timer_period_ns.max(1);
        let remaining_ns = if now_ns < deadline {
            deadline.saturating_sub(now_ns)
        } else if mode == TIMER_PERIODIC {
            // Not ticked yet: the count has already reloaded and keeps going within the current period.
            period.saturating_sub(now_ns.saturating_sub(deadline).checked_rem(period).unwrap_or(0))
        } else {
            0
        };
        let count = ns_to_cycles_ceil(remaining_ns).div_ceil(u128::from(self.timer_divisor.max(1)));
        // A clock that went backwards must not show more than was loaded.
        u32::try_from(count).unwrap_or(u32::MAX).min(self.initial_count)
    }

    fn eoi(&mut self) -> Option<u8> {
        let vector = highest(&self.isr)?;
        set_bit(&mut self.isr, vector, false);
        if test_bit(&self.tmr, vector) {
            set_bit(&mut self.tmr, vector, false);
            Some(vector)
        } else {
            None
        }
    }

    /// Decodes the ICR just written and sends the IPI (see the module doc for the choices).
    fn send_ipi(&mut self, x2: bool) -> Effects {
        let low = self.icr as u32;
        let vector = (low & 0xFF) as u8;
        let Some(delivery) = DeliveryMode::from_bits(low >> 8) else { return Effects::default() };
        let level_assert = low & (1 << 14) != 0;
        let level_trigger = low & (1 << 15) != 0;
        if delivery == DeliveryMode::ExtInt || (delivery == DeliveryMode::Init && level_trigger && !level_assert) {
            return Effects::default();
        }
        let field = if x2 { (self.icr >> 32) as u32 } else { (self.icr >> 56) as u32 };
        let dest = match (low >> 18) & 3 {
            0 if low & (1 << 11) != 0 => Destination::Logical(field),
            0 => Destination::Physical(field),
            1 => Destination::SelfOnly,
            2 => Destination::AllIncludingSelf,
            _ => Destination::AllExcludingSelf,
        };
        let vectored = matches!(delivery, DeliveryMode::Fixed | DeliveryMode::LowestPriority);
        let includes_self = matches!(dest, Destination::SelfOnly | Destination::AllIncludingSelf);
        if vectored {
            if vector < 16 {
                let received = if includes_self { ESR_RECEIVE_ILLEGAL_VECTOR } else { 0 };
                self.record_error(ESR_SEND_ILLEGAL_VECTOR | received);
                return Effects::default();
            }
            if includes_self {
                self.latch(vector, false);
            }
            if dest == Destination::SelfOnly {
                return Effects::default();
            }
        }
        let vector =
            if matches!(delivery, DeliveryMode::Smi | DeliveryMode::Nmi | DeliveryMode::Init) { 0 } else { vector };
        Effects { ipi: Some(Ipi { vector, delivery, dest }), eoi_vector: None }
    }

    /// Reads register index `idx` (offset / 16). None: reserved, or write-only, in the given mode.
    fn read_reg(&self, idx: u32, now_ns: u64, x2: bool) -> Option<u64> {
        let value = match idx {
            I_ID if x2 => u64::from(self.id),
            I_ID => u64::from(self.id & 0xFF) << 24,
            I_VERSION => u64::from(APIC_VERSION),
            I_TPR => u64::from(self.tpr),
            I_APR | I_EOI | I_RRD if !x2 => 0,
            I_PPR => u64::from(self.ppr()),
            I_LDR if x2 => u64::from(x2apic_ldr(self.id)),
            I_LDR => u64::from(self.ldr),
            I_DFR if !x2 => u64::from(self.dfr),
            I_SVR => u64::from(self.svr),
            I_ISR0..=I_ISR7 => word(&self.isr, idx.wrapping_sub(I_ISR0)),
            I_TMR0..=I_TMR7 => word(&self.tmr, idx.wrapping_sub(I_TMR0)),
            I_IRR0..=I_IRR7 => word(&self.irr, idx.wrapping_sub(I_IRR0)),
            I_ESR => u64::from(self.esr),
            I_ICR_LOW if x2 => self.icr,
            I_ICR_LOW => self.icr & 0xFFFF_FFFF,
            I_ICR_HIGH if !x2 => self.icr >> 32,
            I_LVT_CMCI | I_LVT_TIMER..=I_LVT_ERROR => u64::from(self.lvt.get(lvt_slot(idx)?.0).copied().unwrap_or(0)),
            I_TIMER_INITIAL => u64::from(self.initial_count),
            I_TIMER_CURRENT => u64::from(self.current_count(now_ns)),
            I_TIMER_DIVIDE => u64::from(self.dcr),
            _ => return None,
        };
        Some(value)
    }

    /// Writes register index `idx`. None: #GP in x2APIC mode (the xAPIC caller ignores it).
    fn write_reg(&mut self, idx: u32, value: u64, now_ns: u64, x2: bool) -> Option<Effects> {
        let mut effects = Effects::default();
        match idx {
            I_TPR => self.tpr = writable(x2, value, 0xFF)? as u8,
            I_EOI => {
                if x2 && value != 0 {
                    return None;
                }
                effects.eoi_vector = self.eoi();
            }
            I_LDR if !x2 => self.ldr = writable(x2, value, 0xFF00_0000)?,
            I_DFR if !x2 => self.dfr = (value as u32 & DFR_WRITABLE) | !DFR_WRITABLE,
            I_SVR => {
                self.svr = writable(x2, value, SVR_WRITABLE)?;
                if !self.software_enabled() {
                    // "Software Disabled": every LVT mask bit is set.
                    for entry in &mut self.lvt {
                        *entry |= LVT_MASKED;
                    }
                }
            }
            I_ESR => {
                if x2 && value != 0 {
                    return None;
                }
                self.esr = self.esr_pending;
                self.esr_pending = 0;
            }
            I_ICR_LOW if x2 => {
                if value & !ICR_X2APIC_WRITABLE != 0 {
                    return None;
                }
                self.icr = value;
                effects = self.send_ipi(true);
            }
            I_ICR_LOW => {
                self.icr = (self.icr & !0xFFFF_FFFF) | (value & ICR_LOW_WRITABLE);
                effects = self.send_ipi(false);
            }
            I_ICR_HIGH if !x2 => self.icr = (self.icr & 0xFFFF_FFFF) | ((value << 32) & ICR_XAPIC_DEST),
            I_LVT_TIMER => self.write_lvt_timer(value, x2)?,
            I_LVT_CMCI | I_LVT_THERMAL..=I_LVT_ERROR => {
                let (slot, mask) = lvt_slot(idx)?;
                let mut entry = writable(x2, value, mask)?;
                if !self.software_enabled() {
                    entry |= LVT_MASKED;
                }
                if let Some(stored) = self.lvt.get_mut(slot) {
                    *stored = entry;
                }
            }
            I_TIMER_INITIAL => {
                let count = writable(x2, value, u32::MAX)?;
                // "TSC-Deadline Mode": writes to the initial-count register are ignored.
                if !self.tsc_deadline_mode() {
                    self.initial_count = count;
                    self.arm_timer(now_ns);
                }
            }
            I_TIMER_DIVIDE => self.dcr = writable(x2, value, DCR_WRITABLE)?,
            I_SELF_IPI if x2 => {
                let vector = writable(x2, value, 0xFF)? as u8;
                if vector < 16 {
                    self.record_error(ESR_SEND_ILLEGAL_VECTOR | ESR_RECEIVE_ILLEGAL_VECTOR);
                } else {
                    self.latch(vector, false);
                }
            }
            // Read-only, write-only-elsewhere and reserved registers: #GP in x2APIC mode; the xAPIC caller
            // turns None into an ignored write.
            _ => return None,
        }
        Some(effects)
    }

    fn write_lvt_timer(&mut self, value: u64, x2: bool) -> Option<()> {
        let mut entry = writable(x2, value, LVT_TIMER_WRITABLE)?;
        let old_mode = self.timer_mode();
        let mut new_mode = (entry & TIMER_MODE_MASK) >> TIMER_MODE_SHIFT;
        if new_mode == TIMER_RESERVED {
            if x2 {
                return None;
            }
            new_mode = old_mode;
            entry = (entry & !TIMER_MODE_MASK) | (old_mode << TIMER_MODE_SHIFT);
        }
        if !self.software_enabled() {
            entry |= LVT_MASKED;
        }
        self.lvt[LVT_TIMER] = entry;
        if (old_mode == TIMER_TSC_DEADLINE) != (new_mode == TIMER_TSC_DEADLINE) {
            // "APIC Timer": changing between TSC-deadline and the count modes disarms the timer (KVM also
            // clears the initial count, so the count modes restart only on a new initial-count write).
            self.timer_deadline = None;
            self.initial_count = 0;
            self.tsc_deadline_ns = None;
        }
        Some(())
    }
}

/// x2APIC LDR: cluster ID = x2APIC ID[19:4] in bits 31:16, member bit 1 << ID[3:0] in bits 15:0.
const fn x2apic_ldr(id: u32) -> u32 {
    ((id >> 4) << 16) | (1 << (id & 0xF))
}

/// Register slot and writable bits of an LVT register index.
const fn lvt_slot(idx: u32) -> Option<(usize, u32)> {
    match idx {
        I_LVT_CMCI => Some((LVT_CMCI, LVT_DM_WRITABLE)),
        I_LVT_TIMER => Some((LVT_TIMER, LVT_TIMER_WRITABLE)),
        I_LVT_THERMAL => Some((LVT_THERMAL, LVT_DM_WRITABLE)),
        I_LVT_PMC => Some((LVT_PMC, LVT_DM_WRITABLE)),
        I_LVT_LINT0 => Some((LVT_LINT0, LVT_LINT_WRITABLE)),
        I_LVT_LINT1 => Some((LVT_LINT1, LVT_LINT_WRITABLE)),
        I_LVT_ERROR => Some((LVT_ERROR, LVT_ERROR_WRITABLE)),
        _ => None,
    }
}

/// Keeps the writable bits of a write. x2APIC: non-zero reserved bits are #GP (None) ("Reserved Bit
/// Checking"); xAPIC: they are dropped.
fn writable(x2: bool, value: u64, mask: u32) -> Option<u32> {
    if x2 && value & !u64::from(mask) != 0 { None } else { Some(value as u32 & mask) }
}

/// Divide configuration bits 3,1,0: 000 -> 2, 001 -> 4, ..., 110 -> 128, 111 -> 1.
const fn divisor(dcr: u32) -> u64 {
    let code = ((dcr >> 1) & 4) | (dcr & 3);
    1 << (code.wrapping_add(1) & 7)
}

fn cycles_to_ns(cycles: u128) -> u64 {
    u64::try_from(cycles.saturating_mul(NS_PER_SEC).checked_div(u128::from(BUS_HZ)).unwrap_or(0)).unwrap_or(u64::MAX)
}

fn ns_to_cycles_ceil(ns: u64) -> u128 {
    u128::from(ns).saturating_mul(u128::from(BUS_HZ)).div_ceil(NS_PER_SEC)
}

fn highest(bits: &[u32; 8]) -> Option<u8> {
    let (index, word) = bits.iter().enumerate().rev().find(|(_, word)| **word != 0)?;
    // index <= 7 and a non-zero word has leading_zeros <= 31, so this is at most 255.
    Some(((index as u32).wrapping_mul(32).wrapping_add(31u32.wrapping_sub(word.leading_zeros()))) as u8)
}

fn test_bit(bits: &[u32; 8], vector: u8) -> bool {
    bits.get(usize::from(vector >> 5)).is_some_and(|word| word & (1 << (vector & 31)) != 0)
}

fn set_bit(bits: &mut [u32; 8], vector: u8, on: bool) {
    if let Some(word) = bits.get_mut(usize::from(vector >> 5)) {
        if on {
            *word |= 1 << (vector & 31);
        } else {
            *word &= !(1 << (vector & 31));
        }
    }
}

fn word(bits: &[u32; 8], index: u32) -> u64 {
    u64::from(bits.get(index as usize).copied().unwrap_or(0))
}

#[cfg(test)]
mod pic_wire_tests {
    use super::*;

    #[test]
    fn pic_interrupts_need_an_unmasked_extint_lint0_or_a_disabled_apic() {
        let mut a = LocalApic::new(0, true);
        assert!(!a.accepts_pic_interrupts(), "software-disabled at reset: LVTs masked");
        a.mmio_write(REG_SVR, 0x1FF, 0);
        assert!(!a.accepts_pic_interrupts(), "LINT0 still masked");
        a.mmio_write(REG_LVT_LINT0, 0x700, 0);
        assert!(a.accepts_pic_interrupts(), "virtual wire: ExtINT");
        a.mmio_write(REG_LVT_LINT0, 0x700 | LVT_MASKED, 0);
        assert!(!a.accepts_pic_interrupts());
        a.mmio_write(REG_LVT_LINT0, 0x000, 0);
        assert!(!a.accepts_pic_interrupts(), "fixed mode is not the 8259");
        assert!(a.set_apic_base(XAPIC_BASE | APIC_BASE_BSP));
        assert!(a.accepts_pic_interrupts(), "globally disabled: INTR goes straight in");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EN: u64 = APIC_BASE_ENABLE;
    const XAPIC_MODE: u64 = XAPIC_BASE | APIC_BASE_ENABLE | APIC_BASE_BSP;
    const X2APIC_MODE: u64 = XAPIC_MODE | APIC_BASE_EXTD;
    const DISABLED: u64 = XAPIC_BASE | APIC_BASE_BSP;
    const LVTS: [u32; 7] =
        [REG_LVT_CMCI, REG_LVT_TIMER, REG_LVT_THERMAL, REG_LVT_PMC, REG_LVT_LINT0, REG_LVT_LINT1, REG_LVT_ERROR];

    /// xAPIC mode, software-enabled.
    fn enabled(id: u32) -> LocalApic {
        let mut apic = LocalApic::new(id, true);
        apic.mmio_write(REG_SVR, 0x1FF, 0);
        apic
    }

    /// x2APIC mode, software-enabled.
    fn enabled_x2(id: u32) -> LocalApic {
        let mut apic = LocalApic::new(id, true);
        assert!(apic.set_apic_base(X2APIC_MODE));
        assert_eq!(apic.msr_write(0x80F, 0x1FF, 0), Some(Effects::default()));
        apic
    }

    fn ipi(vector: u8, delivery: DeliveryMode, dest: Destination) -> Effects {
        Effects { ipi: Some(Ipi { vector, delivery, dest }), eoi_vector: None }
    }

    /// Accepts and acknowledges `vector`, leaving it in service.
    fn in_service(apic: &mut LocalApic, vector: u8) {
        apic.accept(vector, false);
        assert_eq!(apic.pending(0), Some(vector));
        apic.ack(vector);
    }

    #[test]
    fn power_on_state_matches_the_sdm_reset_values() {
        let mut apic = LocalApic::new(3, true);
        assert_eq!(apic.apic_base(), 0xFEE0_0900);
        assert_eq!(LocalApic::new(1, false).apic_base(), 0xFEE0_0800);
        assert_eq!(apic.mmio_base(), 0xFEE0_0000);
        assert!(apic.xapic() && !apic.x2apic() && !apic.software_enabled());
        assert_eq!(apic.mmio_read(REG_ID, 0), 0x0300_0000);
        assert_eq!(apic.mmio_read(REG_VERSION, 0), 0x0006_0014);
        assert_eq!(apic.mmio_read(REG_TPR, 0), 0);
        assert_eq!(apic.mmio_read(REG_APR, 0), 0);
        assert_eq!(apic.mmio_read(REG_PPR, 0), 0);
        assert_eq!(apic.mmio_read(REG_RRD, 0), 0);
        assert_eq!(apic.mmio_read(REG_LDR, 0), 0);
        assert_eq!(apic.mmio_read(REG_DFR, 0), 0xFFFF_FFFF);
        assert_eq!(apic.mmio_read(REG_SVR, 0), 0xFF);
        for reg in LVTS {
            assert_eq!(apic.mmio_read(reg, 0), 0x0001_0000, "LVT {reg:#x}");
        }
        for i in 0..8 {
            assert_eq!(apic.mmio_read(REG_ISR0 + i * 16, 0), 0);
            assert_eq!(apic.mmio_read(REG_TMR0 + i * 16, 0), 0);
            assert_eq!(apic.mmio_read(REG_IRR0 + i * 16, 0), 0);
        }
        for reg in [REG_ESR, REG_ICR_LOW, REG_ICR_HIGH, REG_TIMER_INITIAL, REG_TIMER_CURRENT, REG_TIMER_DIVIDE] {
            assert_eq!(apic.mmio_read(reg, 0), 0, "register {reg:#x}");
        }
        assert_eq!(apic.tpr(), 0);
        assert_eq!(apic.pending(0), None);
        assert_eq!(apic.next_deadline(), None);
        assert!(!apic.tsc_deadline_mode());
    }

    #[test]
    fn lvt_masks_stay_forced_while_software_disabled_and_can_be_cleared_after_svr_enable() {
        let mut apic = LocalApic::new(0, true);
        apic.mmio_write(REG_LVT_TIMER, 0x30, 0);
        assert_eq!(apic.mmio_read(REG_LVT_TIMER, 0), 0x0001_0030);
        // Bit 12 (EOI-broadcast suppression) is not offered, so it reads 0.
        apic.mmio_write(REG_SVR, 0x11FF, 0);
        assert_eq!(apic.mmio_read(REG_SVR, 0), 0x1FF);
        assert_eq!(apic.mmio_read(REG_LVT_TIMER, 0), 0x0001_0030, "enabling does not unmask");
        apic.mmio_write(REG_LVT_TIMER, 0x30, 0);
        apic.mmio_write(REG_LVT_LINT0, 0x700, 0);
        assert_eq!(apic.mmio_read(REG_LVT_TIMER, 0), 0x30);
        assert_eq!(apic.mmio_read(REG_LVT_LINT0, 0), 0x700);
        apic.mmio_write(REG_SVR, 0xFF, 0);
        assert_eq!(apic.mmio_read(REG_LVT_TIMER, 0), 0x0001_0030);
        assert_eq!(apic.mmio_read(REG_LVT_LINT0, 0), 0x0001_0700);
    }

    #[test]
    fn lvt_read_only_and_reserved_bits_read_zero() {
        let mut apic = enabled(0);
        apic.mmio_write(REG_LVT_LINT1, 0xFFFF_FFFF, 0);
        assert_eq!(apic.mmio_read(REG_LVT_LINT1, 0), 0x0001_A7FF, "delivery status and remote IRR stay 0");
        apic.mmio_write(REG_LVT_ERROR, 0xFFFF_FFFF, 0);
        assert_eq!(apic.mmio_read(REG_LVT_ERROR, 0), 0x0001_00FF);
        apic.mmio_write(REG_LVT_THERMAL, 0xFFFF_FFFF, 0);
        assert_eq!(apic.mmio_read(REG_LVT_THERMAL, 0), 0x0001_07FF);
    }

    #[test]
    fn software_disabled_apic_latches_irr_but_delivers_nothing_until_enabled() {
        let mut apic = LocalApic::new(0, true);
        apic.accept(0x40, false);
        assert_eq!(apic.mmio_read(REG_IRR0 + 0x20, 0), 0x0000_0001);
        assert_eq!(apic.pending(0), None);
        apic.mmio_write(REG_SVR, 0x1FF, 0);
        assert_eq!(apic.pending(0), Some(0x40));
    }

    #[test]
    fn accept_pending_ack_eoi_cycle_moves_the_vector_from_irr_to_isr_and_retires_it() {
        let mut apic = enabled(0);
        apic.accept(0x31, false);
        assert_eq!(apic.mmio_read(REG_IRR0 + 0x10, 0), 0x0002_0000);
        assert_eq!(apic.mmio_read(REG_TMR0 + 0x10, 0), 0);
        assert_eq!(apic.pending(0), Some(0x31));
        apic.ack(0x31);
        assert_eq!(apic.mmio_read(REG_IRR0 + 0x10, 0), 0);
        assert_eq!(apic.mmio_read(REG_ISR0 + 0x10, 0), 0x0002_0000);
        assert_eq!(apic.mmio_read(REG_PPR, 0), 0x30);
        assert_eq!(apic.pending(0), None);
        assert_eq!(apic.mmio_write(REG_EOI, 0, 0), Effects::default());
        assert_eq!(apic.mmio_read(REG_ISR0 + 0x10, 0), 0);
        assert_eq!(apic.mmio_read(REG_PPR, 0), 0);
    }

    #[test]
    fn ack_of_a_vector_that_is_not_requested_is_ignored() {
        let mut apic = enabled(0);
        apic.ack(0x50);
        apic.ack(3);
        assert_eq!(apic.mmio_read(REG_ISR0 + 0x20, 0), 0);
        assert_eq!(apic.mmio_read(REG_ISR0, 0), 0);
    }

    #[test]
    fn higher_priority_class_preempts_the_in_service_vector() {
        let mut apic = enabled(0);
        in_service(&mut apic, 0x41);
        apic.accept(0x51, false);
        assert_eq!(apic.pending(0), Some(0x51));
        apic.ack(0x51);
        assert_eq!(apic.mmio_read(REG_ISR0 + 0x20, 0), 0x0002_0002);
        assert_eq!(apic.mmio_read(REG_PPR, 0), 0x50);
        apic.mmio_write(REG_EOI, 0, 0);
        assert_eq!(apic.mmio_read(REG_ISR0 + 0x20, 0), 0x0000_0002, "the nested (highest) vector retires first");
        assert_eq!(apic.mmio_read(REG_PPR, 0), 0x40);
    }

    #[test]
    fn same_class_vector_waits_until_the_in_service_vector_is_retired() {
        let mut apic = enabled(0);
        in_service(&mut apic, 0x45);
        apic.accept(0x4A, false);
        assert_eq!(apic.pending(0), None);
        apic.mmio_write(REG_EOI, 0, 0);
        assert_eq!(apic.pending(0), Some(0x4A));
    }

    #[test]
    fn tpr_blocks_its_own_and_lower_priority_classes() {
        let mut apic = enabled(0);
        apic.mmio_write(REG_TPR, 0x150, 0);
        assert_eq!(apic.tpr(), 0x50, "TPR bits 31:8 are reserved");
        apic.accept(0x5F, false);
        assert_eq!(apic.pending(0), None);
        apic.accept(0x61, false);
        assert_eq!(apic.pending(0), Some(0x61));
        apic.set_tpr(0x60);
        assert_eq!(apic.mmio_read(REG_TPR, 0), 0x60);
        assert_eq!(apic.pending(0), None);
        apic.set_tpr(0);
        assert_eq!(apic.pending(0), Some(0x61));
    }

    #[test]
    fn ppr_is_tpr_when_its_class_is_at_least_the_isrv_class_else_the_isrv_class() {
        let mut apic = enabled(0);
        apic.set_tpr(0x0F);
        assert_eq!(apic.ppr(), 0x0F, "no vector in service");
        in_service(&mut apic, 0x31);
        apic.set_tpr(0x25);
        assert_eq!(apic.mmio_read(REG_PPR, 0), 0x30);
        apic.set_tpr(0x35);
        assert_eq!(apic.mmio_read(REG_PPR, 0), 0x35);
        apic.set_tpr(0x45);
        assert_eq!(apic.mmio_read(REG_PPR, 0), 0x45);
    }

    #[test]
    fn eoi_retires_only_the_highest_isr_vector_and_reports_level_triggered_ones() {
        let mut apic = enabled(0);
        apic.accept(0x30, true);
        assert_eq!(apic.mmio_read(REG_TMR0 + 0x10, 0), 0x0001_0000);
        apic.ack(0x30);
        in_service(&mut apic, 0x80);
        assert_eq!(apic.mmio_write(REG_EOI, 0, 0), Effects::default(), "0x80 was edge-triggered");
        assert_eq!(apic.mmio_read(REG_ISR0 + 0x40, 0), 0);
        assert_eq!(apic.mmio_read(REG_ISR0 + 0x10, 0), 0x0001_0000);
        assert_eq!(apic.mmio_write(REG_EOI, 0, 0), Effects { ipi: None, eoi_vector: Some(0x30) });
        assert_eq!(apic.mmio_read(REG_ISR0 + 0x10, 0), 0);
        assert_eq!(apic.mmio_read(REG_TMR0 + 0x10, 0), 0);
        assert_eq!(apic.mmio_write(REG_EOI, 0, 0), Effects::default(), "EOI with nothing in service");
    }

    #[test]
    fn illegal_vector_is_dropped_and_esr_shows_receive_illegal_vector_after_an_esr_write() {
        let mut apic = enabled(0);
        apic.accept(5, false);
        assert_eq!(apic.mmio_read(REG_IRR0, 0), 0);
        assert_eq!(apic.mmio_read(REG_ESR, 0), 0, "errors are visible only after a write to ESR");
        apic.mmio_write(REG_ESR, 0, 0);
        assert_eq!(apic.mmio_read(REG_ESR, 0), 0x40);
        apic.mmio_write(REG_ESR, 0, 0);
        assert_eq!(apic.mmio_read(REG_ESR, 0), 0, "no new error since the last latch");
    }

    #[test]
    fn an_error_raises_the_unmasked_lvt_error_vector() {
        let mut apic = enabled(0);
        apic.mmio_write(REG_LVT_ERROR, 0xFE, 0);
        apic.accept(3, false);
        assert_eq!(apic.pending(0), Some(0xFE));
        // An illegal error vector only records another error (no recursion).
        let mut apic = enabled(0);
        apic.mmio_write(REG_LVT_ERROR, 0x02, 0);
        apic.accept(3, false);
        assert_eq!(apic.pending(0), None);
        apic.mmio_write(REG_ESR, 0, 0);
        assert_eq!(apic.mmio_read(REG_ESR, 0), 0x40);
    }

    #[test]
    fn one_shot_timer_fires_once_exactly_at_now_plus_count_times_divide() {
        let mut apic = enabled(0);
        apic.mmio_write(REG_TIMER_DIVIDE, 0x3, 0); // divide by 16
        apic.mmio_write(REG_LVT_TIMER, 0x30, 0);
        apic.mmio_write(REG_TIMER_INITIAL, 1000, 500);
        assert_eq!(apic.next_deadline(), Some(16_500));
        apic.tick(16_499);
        assert_eq!(apic.mmio_read(REG_IRR0 + 0x10, 16_499), 0);
        apic.tick(16_500);
        assert_eq!(apic.mmio_read(REG_IRR0 + 0x10, 16_500), 0x0001_0000);
        assert_eq!(apic.next_deadline(), None);
        assert_eq!(apic.pending(16_500), Some(0x30));
        apic.ack(0x30);
        apic.mmio_write(REG_EOI, 0, 16_600);
        apic.tick(1_000_000);
        assert_eq!(apic.pending(1_000_000), None, "a one-shot timer fires only once");
        assert_eq!(apic.mmio_read(REG_TIMER_INITIAL, 1_000_000), 1000);
    }

    #[test]
    fn divide_configuration_encodes_2_4_8_16_32_64_128_1() {
        for (dcr, divisor) in [(0x0, 2), (0x1, 4), (0x2, 8), (0x3, 16), (0x8, 32), (0x9, 64), (0xA, 128), (0xB, 1)] {
            let mut apic = enabled(0);
            apic.mmio_write(REG_TIMER_DIVIDE, dcr, 0);
            apic.mmio_write(REG_TIMER_INITIAL, 10, 0);
            assert_eq!(apic.next_deadline(), Some(10 * divisor), "DCR {dcr:#x}");
        }
    }

    #[test]
    fn writing_initial_count_zero_stops_the_timer() {
        let mut apic = enabled(0);
        apic.mmio_write(REG_LVT_TIMER, 0x30, 0);
        apic.mmio_write(REG_TIMER_INITIAL, 100, 0);
        apic.mmio_write(REG_TIMER_INITIAL, 0, 50);
        assert_eq!(apic.next_deadline(), None);
        apic.tick(1000);
        assert_eq!(apic.pending(1000), None);
    }

    #[test]
    fn periodic_timer_rearms_from_the_previous_deadline_without_drift() {
        let mut apic = enabled(0);
        apic.mmio_write(REG_TIMER_DIVIDE, 0xB, 0); // divide by 1
        apic.mmio_write(REG_LVT_TIMER, 0x0002_0030, 0);
        apic.mmio_write(REG_TIMER_INITIAL, 100, 0);
        assert_eq!(apic.next_deadline(), Some(100));
        apic.tick(130);
        assert_eq!(apic.pending(130), Some(0x30));
        assert_eq!(apic.next_deadline(), Some(200), "from the deadline, not from the late tick");
        apic.ack(0x30);
        apic.mmio_write(REG_EOI, 0, 140);
        assert_eq!(apic.mmio_read(REG_TIMER_CURRENT, 150), 50);
        apic.tick(199);
        assert_eq!(apic.pending(199), None);
        apic.tick(200);
        assert_eq!(apic.pending(200), Some(0x30));
        assert_eq!(apic.next_deadline(), Some(300));
    }

    #[test]
    fn periodic_timer_ticked_very_late_fires_once_and_schedules_the_next_deadline_after_now() {
        let mut apic = enabled(0);
        apic.mmio_write(REG_TIMER_DIVIDE, 0xB, 0);
        apic.mmio_write(REG_LVT_TIMER, 0x0002_0030, 0);
        apic.mmio_write(REG_TIMER_INITIAL, 100, 0);
        apic.tick(1050);
        assert_eq!(apic.next_deadline(), Some(1100));
        assert_eq!(apic.pending(1050), Some(0x30));
        apic.ack(0x30);
        assert_eq!(apic.pending(1050), None, "one interrupt for all the missed periods");
        assert_eq!(apic.mmio_read(REG_TIMER_CURRENT, 1060), 40);
    }

    #[test]
    fn current_count_decreases_with_time_and_reads_zero_after_one_shot_expiry() {
        let mut apic = enabled(0);
        apic.mmio_write(REG_TIMER_DIVIDE, 0x0, 0); // divide by 2
        apic.mmio_write(REG_TIMER_INITIAL, 1000, 0);
        assert_eq!(apic.mmio_read(REG_TIMER_CURRENT, 0), 1000);
        assert_eq!(apic.mmio_read(REG_TIMER_CURRENT, 1000), 500);
        assert_eq!(apic.mmio_read(REG_TIMER_CURRENT, 1999), 1);
        assert_eq!(apic.mmio_read(REG_TIMER_CURRENT, 2000), 0);
        assert_eq!(apic.mmio_read(REG_TIMER_CURRENT, 5000), 0);
        assert_eq!(apic.mmio_read(REG_TIMER_INITIAL, 5000), 1000);
    }

    #[test]
    fn masked_timer_does_not_latch_but_a_one_shot_still_stops() {
        let mut apic = enabled(0);
        apic.mmio_write(REG_TIMER_DIVIDE, 0xB, 0);
        apic.mmio_write(REG_LVT_TIMER, 0x0001_0030, 0);
        apic.mmio_write(REG_TIMER_INITIAL, 10, 0);
        assert_eq!(apic.next_deadline(), Some(10));
        apic.tick(10);
        assert_eq!(apic.mmio_read(REG_IRR0 + 0x10, 10), 0);
        assert_eq!(apic.next_deadline(), None);
        assert_eq!(apic.mmio_read(REG_TIMER_CURRENT, 10), 0);
    }

    #[test]
    fn tsc_deadline_mode_fires_at_the_deadline_then_disarms() {
        let mut apic = enabled(0);
        apic.set_tsc_deadline_ns(Some(50));
        assert_eq!(apic.tsc_deadline_ns(), None, "ignored outside TSC-deadline mode");
        apic.mmio_write(REG_LVT_TIMER, 0x0004_0030, 0);
        assert!(apic.tsc_deadline_mode());
        apic.mmio_write(REG_TIMER_INITIAL, 1000, 0);
        assert_eq!(apic.mmio_read(REG_TIMER_INITIAL, 0), 0, "initial count is ignored in TSC-deadline mode");
        assert_eq!(apic.next_deadline(), None);
        apic.set_tsc_deadline_ns(Some(5000));
        assert_eq!(apic.next_deadline(), Some(5000));
        apic.tick(4999);
        assert_eq!(apic.pending(4999), None);
        apic.tick(5000);
        assert_eq!(apic.pending(5000), Some(0x30));
        assert_eq!(apic.next_deadline(), None);
        assert_eq!(apic.tsc_deadline_ns(), None);
        assert_eq!(apic.mmio_read(REG_TIMER_CURRENT, 5000), 0);
        apic.ack(0x30);
        apic.set_tsc_deadline_ns(Some(7000));
        apic.set_tsc_deadline_ns(None);
        apic.tick(8000);
        assert_eq!(apic.pending(8000), None, "a zero write disarms");
    }

    #[test]
    fn changing_the_timer_mode_to_or_from_tsc_deadline_disarms_the_timer() {
        let mut apic = enabled(0);
        apic.mmio_write(REG_LVT_TIMER, 0x30, 0);
        apic.mmio_write(REG_TIMER_INITIAL, 1000, 0);
        apic.mmio_write(REG_LVT_TIMER, 0x0004_0030, 10);
        assert_eq!(apic.next_deadline(), None);
        assert_eq!(apic.mmio_read(REG_TIMER_INITIAL, 10), 0);
        apic.set_tsc_deadline_ns(Some(500));
        apic.mmio_write(REG_LVT_TIMER, 0x30, 20);
        assert_eq!(apic.next_deadline(), None);
        assert_eq!(apic.tsc_deadline_ns(), None);
        apic.tick(10_000);
        assert_eq!(apic.pending(10_000), None);
        // One-shot <-> periodic is not a disarming change: the count keeps running.
        apic.mmio_write(REG_TIMER_DIVIDE, 0xB, 10_000);
        apic.mmio_write(REG_TIMER_INITIAL, 100, 10_000);
        apic.mmio_write(REG_LVT_TIMER, 0x0002_0030, 10_010);
        assert_eq!(apic.next_deadline(), Some(10_100));
    }

    #[test]
    fn reserved_timer_mode_keeps_the_previous_mode_in_xapic_mode() {
        let mut apic = enabled(0);
        apic.mmio_write(REG_LVT_TIMER, 0x0002_0030, 0);
        apic.mmio_write(REG_LVT_TIMER, 0x0006_0031, 0);
        assert_eq!(apic.mmio_read(REG_LVT_TIMER, 0), 0x0002_0031);
    }

    #[test]
    fn timer_arithmetic_saturates_near_the_end_of_time() {
        let mut apic = enabled(0);
        apic.mmio_write(REG_TIMER_DIVIDE, 0xA, 0); // divide by 128
        apic.mmio_write(REG_LVT_TIMER, 0x0002_0030, 0);
        apic.mmio_write(REG_TIMER_INITIAL, u32::MAX, u64::MAX - 5);
        assert_eq!(apic.next_deadline(), Some(u64::MAX));
        assert_eq!(apic.mmio_read(REG_TIMER_CURRENT, u64::MAX - 5), 1); // 5 ns left, rounded up
        apic.tick(u64::MAX);
        assert_eq!(apic.pending(u64::MAX), Some(0x30));
        assert_eq!(apic.next_deadline(), Some(u64::MAX));
    }

    #[test]
    fn icr_write_in_xapic_mode_reports_an_ipi_to_the_id_in_icr_high_bits_31_24() {
        let mut apic = enabled(0);
        apic.mmio_write(REG_ICR_HIGH, 0x0512_3456, 0);
        assert_eq!(apic.mmio_read(REG_ICR_HIGH, 0), 0x0500_0000);
        let effects = apic.mmio_write(REG_ICR_LOW, 0x0000_1041, 0);
        assert_eq!(effects, ipi(0x41, DeliveryMode::Fixed, Destination::Physical(5)));
        assert_eq!(apic.mmio_read(REG_ICR_LOW, 0), 0x41, "delivery status always reads idle");
        assert_eq!(apic.pending(0), None, "not latched locally");
        let effects = apic.mmio_write(REG_ICR_LOW, 0x0000_0941, 0);
        assert_eq!(effects, ipi(0x41, DeliveryMode::LowestPriority, Destination::Logical(5)));
        let effects = apic.mmio_write(REG_ICR_LOW, 0x000C_0041, 0);
        assert_eq!(effects, ipi(0x41, DeliveryMode::Fixed, Destination::AllExcludingSelf));
        assert_eq!(apic.pending(0), None);
    }

    #[test]
    fn self_ipi_shorthand_is_latched_locally_without_an_effect() {
        let mut apic = enabled(0);
        assert_eq!(apic.mmio_write(REG_ICR_LOW, 0x0004_0051, 0), Effects::default());
        assert_eq!(apic.pending(0), Some(0x51));
        assert_eq!(apic.mmio_read(REG_TMR0 + 0x20, 0), 0, "IPIs are edge-triggered");
    }

    #[test]
    fn non_fixed_self_ipi_is_reported_for_the_caller_to_deliver() {
        let mut apic = enabled(0);
        assert_eq!(apic.mmio_write(REG_ICR_LOW, 0x0004_0402, 0), ipi(0, DeliveryMode::Nmi, Destination::SelfOnly));
        assert_eq!(apic.pending(0), None);
    }

    #[test]
    fn all_including_self_is_latched_locally_and_reported() {
        let mut apic = enabled(0);
        let effects = apic.mmio_write(REG_ICR_LOW, 0x0008_0061, 0);
        assert_eq!(effects, ipi(0x61, DeliveryMode::Fixed, Destination::AllIncludingSelf));
        assert_eq!(apic.pending(0), Some(0x61));
    }

    #[test]
    fn local_interrupt_pins_follow_their_lvt_entries() {
        let mut apic = LocalApic::new(0, true);
        assert!(apic.set_apic_base(XAPIC_BASE | APIC_BASE_BSP));
        assert_eq!(apic.lint_edge(Lint::Lint0), LintEffect::ExtInt, "globally disabled: LINT0 is INTR");
        assert_eq!(apic.lint_edge(Lint::Lint1), LintEffect::Nmi, "globally disabled: LINT1 is NMI");
        let mut apic = enabled(0);
        assert_eq!(apic.lint_edge(Lint::Lint1), LintEffect::Nothing, "masked at reset");
        apic.mmio_write(REG_LVT_LINT1, 0x400, 0);
        assert_eq!(apic.lint_edge(Lint::Lint1), LintEffect::Nmi);
        apic.mmio_write(REG_LVT_LINT0, 0x700, 0);
        assert_eq!(apic.lint_edge(Lint::Lint0), LintEffect::ExtInt);
        apic.mmio_write(REG_LVT_LINT0, 0x0051, 0);
        assert_eq!(apic.lint_edge(Lint::Lint0), LintEffect::Latched);
        assert_eq!(apic.pending(0), Some(0x51));
        apic.mmio_write(REG_LVT_LINT0, 0x1_0400, 0);
        assert_eq!(apic.lint_edge(Lint::Lint0), LintEffect::Nothing, "masked NMI entry");
        apic.mmio_write(REG_SVR, 0xFF, 0);
        assert_eq!(apic.lint_edge(Lint::Lint1), LintEffect::Nothing, "software-disabled masks every entry");
    }

    #[test]
    fn init_startup_nmi_and_smi_ipis_decode_and_init_level_deassert_is_dropped() {
        let mut apic = enabled(0);
        apic.mmio_write(REG_ICR_HIGH, 0x0200_0000, 0);
        let to_2 = Destination::Physical(2);
        assert_eq!(apic.mmio_write(REG_ICR_LOW, 0x0000_C500, 0), ipi(0, DeliveryMode::Init, to_2));
        assert_eq!(apic.mmio_write(REG_ICR_LOW, 0x0000_8500, 0), Effects::default(), "INIT level de-assert");
        assert_eq!(apic.mmio_write(REG_ICR_LOW, 0x0000_0500, 0), ipi(0, DeliveryMode::Init, to_2));
        assert_eq!(apic.mmio_write(REG_ICR_LOW, 0x0000_0608, 0), ipi(0x08, DeliveryMode::StartUp, to_2));
        assert_eq!(apic.mmio_write(REG_ICR_LOW, 0x0000_0400, 0), ipi(0, DeliveryMode::Nmi, to_2));
        assert_eq!(apic.mmio_write(REG_ICR_LOW, 0x0000_0200, 0), ipi(0, DeliveryMode::Smi, to_2));
        assert_eq!(apic.mmio_write(REG_ICR_LOW, 0x0000_0300, 0), Effects::default(), "reserved mode 011b");
        assert_eq!(apic.mmio_write(REG_ICR_LOW, 0x0000_0700, 0), Effects::default(), "reserved mode 111b");
        let all_but_me = apic.mmio_write(REG_ICR_LOW, 0x000C_4500, 0);
        assert_eq!(all_but_me, ipi(0, DeliveryMode::Init, Destination::AllExcludingSelf));
    }

    #[test]
    fn icr_with_an_illegal_vector_is_not_sent_and_sets_esr_send_illegal_vector() {
        let mut apic = enabled(0);
        assert_eq!(apic.mmio_write(REG_ICR_LOW, 0x0000_000F, 0), Effects::default());
        apic.mmio_write(REG_ESR, 0, 0);
        assert_eq!(apic.mmio_read(REG_ESR, 0), 0x20);
        assert_eq!(apic.mmio_write(REG_ICR_LOW, 0x0004_0005, 0), Effects::default());
        apic.mmio_write(REG_ESR, 0, 0);
        assert_eq!(apic.mmio_read(REG_ESR, 0), 0x60, "a self IPI is also received");
        assert_eq!(apic.mmio_read(REG_IRR0, 0), 0);
    }

    #[test]
    fn x2apic_enable_follows_the_sdm_state_transitions() {
        let mut apic = LocalApic::new(0, true);
        assert!(!apic.set_apic_base(DISABLED | APIC_BASE_EXTD), "EN=0 with EXTD=1 is invalid");
        assert!(apic.set_apic_base(X2APIC_MODE));
        assert!(apic.x2apic());
        assert_eq!(apic.apic_base(), 0xFEE0_0D00);
        assert!(!apic.set_apic_base(XAPIC_MODE), "x2APIC -> xAPIC directly");
        assert!(apic.x2apic());
        assert!(apic.set_apic_base(DISABLED));
        assert!(!apic.x2apic() && !apic.xapic());
        assert!(!apic.set_apic_base(X2APIC_MODE), "disabled -> x2APIC directly");
        assert!(apic.set_apic_base(XAPIC_MODE));
        assert!(apic.xapic());
        for reserved in [1, 1 << 7, 1 << 9, 1 << 52, 1 << 63] {
            assert!(!apic.set_apic_base(XAPIC_MODE | reserved), "reserved bit {reserved:#x}");
        }
        assert!(apic.set_apic_base(0xFED0_0000 | EN));
        assert_eq!(apic.mmio_base(), 0xFED0_0000);
        assert_eq!(apic.apic_base(), 0xFED0_0800);
    }

    #[test]
    fn global_disable_drops_interrupts_and_returns_registers_to_power_on_state() {
        let mut apic = enabled(0);
        apic.mmio_write(REG_TPR, 0x20, 0);
        apic.accept(0x40, false);
        assert!(apic.set_apic_base(DISABLED));
        apic.accept(0x50, false);
        assert_eq!(apic.pending(0), None);
        assert_eq!(apic.mmio_read(REG_SVR, 0), 0, "no MMIO decode while disabled");
        assert!(apic.set_apic_base(XAPIC_MODE));
        assert_eq!(apic.mmio_read(REG_SVR, 0), 0xFF);
        assert_eq!(apic.mmio_read(REG_TPR, 0), 0);
        assert_eq!(apic.mmio_read(REG_IRR0 + 0x20, 0), 0);
        assert!(!apic.is_destination(Destination::AllIncludingSelf, false) || apic.xapic());
    }

    #[test]
    fn x2apic_msrs_expose_the_full_id_and_an_ldr_derived_from_it() {
        let mut apic = enabled_x2(0x23);
        assert_eq!(apic.msr_read(0x802, 0), Some(0x23));
        assert_eq!(apic.msr_read(0x803, 0), Some(0x0006_0014));
        assert_eq!(apic.msr_read(0x80D, 0), Some(0x0002_0008));
        assert_eq!(apic.msr_write(0x802, 0, 0), None, "ID is read-only");
        assert_eq!(apic.msr_write(0x80D, 0, 0), None, "LDR is read-only");
        let mut big = enabled_x2(0x1_2345);
        assert_eq!(big.msr_read(0x802, 0), Some(0x1_2345));
        assert_eq!(big.msr_read(0x80D, 0), Some(0x1234_0020));
    }

    #[test]
    fn x2apic_icr_is_one_64_bit_msr_with_a_32_bit_destination() {
        let mut apic = enabled_x2(0);
        let effects = apic.msr_write(0x830, 0x0000_0105_0000_4041, 0);
        assert_eq!(effects, Some(ipi(0x41, DeliveryMode::Fixed, Destination::Physical(0x105))));
        assert_eq!(apic.msr_read(0x830, 0), Some(0x0000_0105_0000_4041));
        let effects = apic.msr_write(0x830, 0xFFFF_FFFF_0000_0841, 0);
        assert_eq!(effects, Some(ipi(0x41, DeliveryMode::Fixed, Destination::Logical(0xFFFF_FFFF))));
        assert_eq!(apic.msr_read(0x831, 0), None, "ICR high does not exist in x2APIC mode");
        assert_eq!(apic.msr_write(0x831, 0, 0), None);
        assert_eq!(apic.msr_write(0x830, 0x1041, 0), None, "bit 12 is reserved in x2APIC mode");
        assert_eq!(apic.msr_write(0x830, 0x1_0041, 0), None, "bit 16 is reserved");
    }

    #[test]
    fn x2apic_self_ipi_msr_latches_locally_and_is_write_only() {
        let mut apic = enabled_x2(0);
        assert_eq!(apic.msr_write(0x83F, 0x55, 0), Some(Effects::default()));
        assert_eq!(apic.pending(0), Some(0x55));
        assert_eq!(apic.msr_read(0x83F, 0), None);
        assert_eq!(apic.msr_write(0x83F, 0x155, 0), None, "bits 31:8 are reserved");
        assert_eq!(apic.msr_write(0x83F, 0x05, 0), Some(Effects::default()));
        assert_eq!(apic.msr_write(0x828, 0, 0), Some(Effects::default()));
        assert_eq!(apic.msr_read(0x828, 0), Some(0x60));
    }

    #[test]
    fn x2apic_faults_on_nonzero_eoi_dfr_reserved_registers_and_reserved_bits() {
        let mut apic = enabled_x2(0);
        in_service(&mut apic, 0x70);
        assert_eq!(apic.msr_write(0x80B, 1, 0), None);
        assert_eq!(apic.msr_read(0x80B, 0), None, "EOI is write-only");
        assert_eq!(apic.msr_write(0x80B, 0, 0), Some(Effects::default()));
        assert_eq!(apic.msr_read(0x810 + 3, 0), Some(0));
        assert_eq!(apic.msr_read(0x80E, 0), None, "DFR does not exist");
        assert_eq!(apic.msr_write(0x80E, 0xFFFF_FFFF, 0), None);
        for reserved in [0x800, 0x801, 0x804, 0x809, 0x80C, 0x829, 0x831, 0x83A, 0x840, 0x8FF] {
            assert_eq!(apic.msr_read(reserved, 0), None, "MSR {reserved:#x}");
            assert_eq!(apic.msr_write(reserved, 0, 0), None, "MSR {reserved:#x}");
        }
        assert_eq!(apic.msr_write(0x808, 0x100, 0), None, "TPR bits 31:8");
        assert_eq!(apic.msr_write(0x808, 1 << 32, 0), None, "bits 63:32 of a 32-bit register");
        assert_eq!(apic.msr_write(0x828, 1, 0), None, "ESR accepts only 0");
        assert_eq!(apic.msr_write(0x80F, 0x11FF, 0), None, "EOI-broadcast suppression is not offered");
        assert_eq!(apic.msr_write(0x832, 0x0006_0030, 0), None, "timer mode 11b");
        assert_eq!(apic.msr_write(0x839, 0, 0), None, "current count is read-only");
        assert_eq!(apic.msr_write(0x83E, 0x4, 0), None, "divide bit 2 is reserved");
        assert_eq!(apic.msr_write(0x808, 0x20, 0), Some(Effects::default()));
        assert_eq!(apic.tpr(), 0x20);
        assert_eq!(apic.msr_read(0x7FF, 0), None);
        assert_eq!(apic.msr_read(0x900, 0), None);
    }

    #[test]
    fn x2apic_timer_msrs_arm_the_same_timer() {
        let mut apic = enabled_x2(0);
        assert_eq!(apic.msr_write(0x83E, 0xB, 0), Some(Effects::default()));
        assert_eq!(apic.msr_write(0x832, 0x30, 0), Some(Effects::default()));
        assert_eq!(apic.msr_write(0x838, 300, 0), Some(Effects::default()));
        assert_eq!(apic.msr_read(0x839, 100), Some(200));
        apic.tick(300);
        assert_eq!(apic.pending(300), Some(0x30));
    }

    #[test]
    fn msrs_fault_in_xapic_mode_and_mmio_is_not_decoded_in_x2apic_mode() {
        let mut apic = enabled(0);
        assert_eq!(apic.msr_read(0x802, 0), None);
        assert_eq!(apic.msr_write(0x808, 0, 0), None);
        let mut apic = enabled_x2(7);
        assert_eq!(apic.mmio_read(REG_SVR, 0), 0);
        assert_eq!(apic.mmio_write(REG_ICR_LOW, 0x0004_0051, 0), Effects::default());
        assert_eq!(apic.pending(0), None);
    }

    #[test]
    fn unaligned_out_of_page_and_reserved_offsets_read_zero_and_ignore_writes() {
        let mut apic = enabled(9);
        for offset in [0x24, 0x21, 0x2C, 0xF4, 0x1000, 0x1020, u32::MAX, 0x000, 0x010, 0x040, 0x2A0, 0x3A0, 0xFF0] {
            assert_eq!(apic.mmio_read(offset, 0), 0, "offset {offset:#x}");
            assert_eq!(apic.mmio_write(offset, 0xFFFF_FFFF, 0), Effects::default(), "offset {offset:#x}");
        }
        assert_eq!(apic.mmio_write(REG_SELF_IPI, 0x55, 0), Effects::default(), "SELF IPI is x2APIC-only");
        assert_eq!(apic.pending(0), None);
        apic.mmio_write(REG_ID, 0x0100_0000, 0);
        apic.mmio_write(REG_VERSION, 0, 0);
        assert_eq!(apic.mmio_read(REG_ID, 0), 0x0900_0000, "ID is read-only in this model");
        assert_eq!(apic.mmio_read(REG_VERSION, 0), 0x0006_0014);
        assert_eq!(apic.mmio_read(REG_SVR, 0), 0x1FF, "nothing above changed SVR");
    }

    #[test]
    fn xapic_ldr_and_dfr_keep_only_their_defined_bits() {
        let mut apic = enabled(0);
        apic.mmio_write(REG_LDR, 0x0312_3456, 0);
        assert_eq!(apic.mmio_read(REG_LDR, 0), 0x0300_0000);
        apic.mmio_write(REG_DFR, 0x0000_0000, 0);
        assert_eq!(apic.mmio_read(REG_DFR, 0), 0x0FFF_FFFF);
    }

    #[test]
    fn init_reset_keeps_the_apic_id_and_base_msr_and_clears_everything_else() {
        let mut apic = enabled_x2(0x42);
        apic.msr_write(0x808, 0x30, 0);
        apic.msr_write(0x832, 0x30, 0);
        apic.msr_write(0x838, 100, 0);
        apic.accept(0x90, true);
        apic.reset();
        assert!(apic.x2apic());
        assert_eq!(apic.apic_base(), X2APIC_MODE);
        assert_eq!(apic.msr_read(0x802, 0), Some(0x42));
        assert_eq!(apic.msr_read(0x80F, 0), Some(0xFF));
        assert_eq!(apic.msr_read(0x808, 0), Some(0));
        assert_eq!(apic.msr_read(0x832, 0), Some(0x0001_0000));
        assert_eq!(apic.msr_read(0x824, 0), Some(0));
        assert_eq!(apic.msr_read(0x81C, 0), Some(0));
        assert_eq!(apic.next_deadline(), None);
        let mut apic = enabled(4);
        apic.mmio_write(REG_LDR, 0x0100_0000, 0);
        apic.mmio_write(REG_DFR, 0x0FFF_FFFF, 0);
        apic.reset();
        assert_eq!(apic.mmio_read(REG_ID, 0), 0x0400_0000);
        assert_eq!(apic.mmio_read(REG_LDR, 0), 0);
        assert_eq!(apic.mmio_read(REG_DFR, 0), 0xFFFF_FFFF);
        assert_eq!(apic.apic_base(), XAPIC_MODE);
    }

    #[test]
    fn is_destination_matches_physical_flat_cluster_and_x2apic_logical_addresses() {
        let mut apic = enabled(3);
        assert!(apic.is_destination(Destination::Physical(3), false));
        assert!(apic.is_destination(Destination::Physical(0xFF), false));
        assert!(!apic.is_destination(Destination::Physical(4), false));
        assert!(apic.is_destination(Destination::SelfOnly, true));
        assert!(!apic.is_destination(Destination::SelfOnly, false));
        assert!(!apic.is_destination(Destination::AllExcludingSelf, true));
        apic.mmio_write(REG_LDR, 0x0400_0000, 0); // flat: bit 2
        assert!(apic.is_destination(Destination::Logical(0x06), false));
        assert!(!apic.is_destination(Destination::Logical(0x03), false));
        apic.mmio_write(REG_DFR, 0x0FFF_FFFF, 0); // cluster model
        apic.mmio_write(REG_LDR, 0x2400_0000, 0); // cluster 2, member bit 2
        assert!(apic.is_destination(Destination::Logical(0x26), false));
        assert!(!apic.is_destination(Destination::Logical(0x16), false));
        assert!(!apic.is_destination(Destination::Logical(0x23), false));
        let x2 = enabled_x2(0x23); // cluster 2, member bit 3
        assert!(x2.is_destination(Destination::Logical(0x0002_0008), false));
        assert!(!x2.is_destination(Destination::Logical(0x0001_0008), false));
        assert!(x2.is_destination(Destination::Physical(0x23), false));
        assert!(x2.is_destination(Destination::Physical(u32::MAX), false));
        assert!(!x2.is_destination(Destination::Physical(0x123), false));
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn assert_invariants(apic: &LocalApic, now: u64) {
        assert_eq!(apic.isr[0] & 0xFFFF, 0, "no in-service vector below 16");
        assert_eq!(apic.irr[0] & 0xFFFF, 0, "no requested vector below 16");
        assert_eq!(apic.tmr[0] & 0xFFFF, 0);
        if let Some(vector) = apic.pending(now) {
            assert!(vector >= 16);
            assert!(vector >> 4 > apic.ppr() >> 4);
        }
        if !apic.software_enabled() {
            assert!(apic.lvt.iter().all(|entry| entry & LVT_MASKED != 0), "LVTs masked while disabled");
        }
        assert!(apic.current_count(now) <= apic.initial_count);
        assert!(!(apic.base & APIC_BASE_ENABLE == 0 && apic.base & APIC_BASE_EXTD != 0));
    }

    #[test]
    fn random_guest_activity_never_panics_and_keeps_vector_invariants() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut apics = [LocalApic::new(0, true), LocalApic::new(u32::MAX, false)];
        let (mut now, mut delivered, mut x2_steps, mut enabled_steps, mut ipis) = (0u64, 0u32, 0u32, 0u32, 0u32);
        for _ in 0..200_000 {
            let r = rng.next();
            let v = rng.next();
            now = match (r >> 1) % 32 {
                0 => rng.next(),
                1 => now.saturating_sub(v % 1000), // a clock that goes backwards must not panic either
                _ => now.saturating_add(v % 3000),
            };
            // Bias values towards the interesting: small counts, LVT-like words, SVR enable.
            let value = match (v >> 60) % 4 {
                0 => rng.next(),
                1 => (v >> 8) & 0xFFF,
                2 => (v >> 8) & 0x000F_CFFF,
                _ => 0x100 | ((v >> 8) & 0xFF),
            };
            let offset = match v & 3 {
                0 => REG_ICR_LOW,
                1 => (v >> 4) as u32,
                _ => ((v >> 4) as u32 & 0x3F) << 4,
            };
            let msr = match (v >> 2) & 3 {
                0 => 0x830,
                1 => (v >> 12) as u32,
                _ => 0x800 + ((v >> 12) as u32 & 0x3F),
            };
            let apic = &mut apics[(r & 1) as usize];
            match (r >> 8) % 16 {
                0 | 1 => {
                    apic.mmio_read(offset, now);
                }
                2 | 3 => {
                    ipis += u32::from(apic.mmio_write(offset, value as u32, now).ipi.is_some());
                }
                4 => {
                    apic.msr_read(msr, now);
                }
                5 | 6 => {
                    ipis += u32::from(apic.msr_write(msr, value, now).and_then(|e| e.ipi).is_some());
                }
                7 => apic.accept(v as u8, v & 0x100 != 0),
                8 => match apic.pending(now) {
                    Some(vector) if v & 1 == 0 => {
                        delivered += 1;
                        apic.ack(vector);
                    }
                    _ => apic.ack(v as u8),
                },
                9 => apic.tick(now),
                10 => {
                    let base = [XAPIC_MODE, X2APIC_MODE, DISABLED, v, XAPIC_MODE, X2APIC_MODE][(v % 6) as usize];
                    apic.set_apic_base(base);
                }
                11 => apic.set_tsc_deadline_ns(if v & 1 == 0 { None } else { Some(now.wrapping_add(v % 10_000)) }),
                12 if v & 0x3F == 0 => apic.reset(),
                12 => {
                    // Retire in-service vectors often enough that delivery keeps going.
                    apic.mmio_write(REG_EOI, 0, now);
                    apic.msr_write(0x80B, 0, now);
                }
                13 => apic.set_tpr(v as u8),
                14 => {
                    let dest = [
                        Destination::Physical(v as u32),
                        Destination::Logical(v as u32),
                        Destination::SelfOnly,
                        Destination::AllIncludingSelf,
                        Destination::AllExcludingSelf,
                    ][(v % 5) as usize];
                    apic.is_destination(dest, v & 8 != 0);
                }
                _ => {
                    // What a guest does first: software-enable the APIC (in whichever mode it is in).
                    let svr = 0x100 | (v & 0xFF);
                    apic.mmio_write(REG_SVR, svr as u32, now);
                    apic.msr_write(0x80F, svr, now);
                    let _ = (apic.next_deadline(), apic.tsc_deadline_mode());
                }
            }
            x2_steps += u32::from(apic.x2apic());
            enabled_steps += u32::from(apic.software_enabled() && apic.hw_enabled());
            assert_invariants(apic, now);
        }
        // The run must actually reach the interesting states, or it proves little.
        assert!(delivered > 1000, "delivered {delivered}");
        assert!(enabled_steps > 50_000, "software-enabled steps {enabled_steps}");
        assert!(x2_steps > 10_000, "x2APIC steps {x2_steps}");
        assert!(ipis > 100, "IPIs {ipis}");
    }
}
