//! A register-level model of the two cascaded Intel 8259A Programmable Interrupt Controllers
//! of the PC/AT as a guest sees them: the master at I/O ports 0x20/0x21 delivering to the CPU,
//! the slave at 0xA0/0xA1 wired to the master's IR2, plus the PIIX edge/level control
//! registers (ELCR) at 0x4D0/0x4D1. It touches no hardware: device models call `set_irq`, the
//! exit handler feeds it port accesses, and the vCPU's injection logic asks `output()` and
//! runs the INTA cycle with `acknowledge()`. Nothing a port access does reaches outside the
//! pair, so unlike the UART there is no `Effects` value: the caller re-reads `output()`.
//!
//! Modelled, with the datasheet's names (Intel 8259A, order no. 231468):
//! - The initialisation sequence ICW1 (IC4, SNGL, LTIM), ICW2 (T7-T3; the low three bits
//!   come from the interrupt level), ICW3 and ICW4 (uPM, AEOI, SFNM), and the datasheet's list
//!   of what ICW1 resets (edge sense, IMR, priority, special mask, status read select).
//! - OCW1 (IMR); OCW2 non-specific EOI, specific EOI, rotate on non-specific / specific EOI,
//!   rotate in automatic EOI mode (set/clear), set priority; OCW3 read IRR / read ISR, poll
//!   command and special mask mode.
//! - Fully nested priority with rotation, kept as the "lowest priority" level that OCW2 sets;
//!   the special fully nested mode of the master (a slave in service does not lock out
//!   higher-priority requests from that same slave).
//! - Edge- and level-triggered inputs: LTIM for a whole chip, or per line through the ELCR.
//! - The default IR7 ("spurious interrupt") when a request goes away before INTA: vector
//!   base+7 of the master (IRQ 7), or of the slave (IRQ 15, with the master's IR2 in service,
//!   as the OS expects when it sends the master its EOI for a spurious IRQ 15).
//!
//! Choices where the datasheet leaves room, and why:
//! - Reset state. The 8259A has no reset pin and the datasheet calls its state undefined until
//!   ICW1. We power on uninitialised with every line masked (IMR 0xFF, vector base 0), and an
//!   uninitialised chip (or one in the middle of its ICW sequence) requests nothing, so no
//!   vector computed from a base the guest never wrote can be injected. QEMU instead resets
//!   IMR to 0 with base 0; a guest that masks first (Linux writes 0xFF to both IMRs before
//!   ICW1) cannot tell the difference. ICW1 clears IMR, as the datasheet says.
//! - Edge-triggered requests stay latched in IRR after the line falls again, until INTA (or
//!   ICW1). The datasheet asks that IR stay high until the first INTA; the hypervisor's
//!   emulated devices pulse their lines (raise then lower at once), and QEMU and KVM latch the
//!   same way. A level-triggered request follows its line, so a level line that drops before
//!   INTA gets the datasheet's default IR7.
//! - The master's IR2 is the slave's INT output. A rising edge of it latches like any edge
//!   input, so a slave request that vanishes after the master saw it ends as the slave's
//!   default IR7 (IRQ 15) exactly as on hardware; in addition IR2 requests while the slave's
//!   INT is high, so nothing misses a request the slave keeps asserting without a new edge
//!   (e.g. a second pending IRQ with the slave in AEOI mode). `set_irq(2, ..)` is ignored: on
//!   the PC/AT the bus's IRQ 2 pin is routed to IRQ 9.
//! - Vectors are always formed the 8086 way (ICW2 T7-T3 plus the level); the 8080/8085 CALL
//!   sequence (uPM = 0) makes no sense for an x86 guest, and ADI and the A7-A5 bits are kept
//!   but unused. Buffered mode (BUF, M/S) changes only pins and is likewise ignored.
//! - The cascade follows the master's programming: IR2 hands the INTA to the slave only if
//!   ICW1.SNGL is clear and ICW3 bit 2 is set; otherwise IR2 is an ordinary input.
//! - Special mask mode: in-service levels that are also masked do not inhibit other levels
//!   (the datasheet's "enables interrupts from all other levels, lower as well as higher").
//! - ELCR (Intel PIIX/PIIX3 datasheet): the bits for IRQ 0, 1, 2, 8 and 13 are reserved and
//!   read 0, because the timer, keyboard, cascade, RTC and FPU error lines must be edge
//!   triggered on a PC. Writes to them are ignored.

/// Master command port (A0 = 0): ICW1, OCW2, OCW3 on write; IRR/ISR/poll on read.
pub const MASTER_CMD: u16 = 0x20;
/// Master data port (A0 = 1): ICW2-4 during initialisation, OCW1 (IMR) after.
pub const MASTER_DATA: u16 = 0x21;
pub const SLAVE_CMD: u16 = 0xA0;
pub const SLAVE_DATA: u16 = 0xA1;
/// PIIX edge/level control register for IRQ 0-7 (bit set = level triggered).
pub const ELCR_MASTER: u16 = 0x4D0;
/// PIIX edge/level control register for IRQ 8-15.
pub const ELCR_SLAVE: u16 = 0x4D1;
/// The master input the slave's INT drives on the PC/AT.
pub const CASCADE_IRQ: u8 = 2;
/// The level whose vector a chip returns for a request that vanished before INTA.
pub const SPURIOUS_LEVEL: u8 = 7;

/// ICW1 bits (written to the command port with bit 4 set).
pub mod icw1 {
    /// ICW4 will follow.
    pub const IC4: u8 = 0x01;
    /// Single 8259A: no ICW3.
    pub const SNGL: u8 = 0x02;
    /// Call address interval (8080 mode only).
    pub const ADI: u8 = 0x04;
    /// Level triggered mode for all eight inputs.
    pub const LTIM: u8 = 0x08;
    /// Distinguishes ICW1 from OCW2/OCW3 on the command port.
    pub const INIT: u8 = 0x10;
}

/// ICW4 bits.
pub mod icw4 {
    /// 8086/8088 mode (1) rather than MCS-80/85.
    pub const UPM: u8 = 0x01;
    /// Automatic end of interrupt.
    pub const AEOI: u8 = 0x02;
    /// Master/slave in buffered mode.
    pub const MS: u8 = 0x04;
    /// Buffered mode.
    pub const BUF: u8 = 0x08;
    /// Special fully nested mode.
    pub const SFNM: u8 = 0x10;
    /// Bits 7:5 of ICW4 are 0 on the 8259A.
    pub const MASK: u8 = 0x1F;
}

/// OCW2 commands: bits 7:5 are R, SL, EOI; bits 2:0 the level for the specific forms.
pub mod ocw2 {
    pub const CLEAR_ROTATE_AEOI: u8 = 0x00;
    pub const NON_SPECIFIC_EOI: u8 = 0x20;
    pub const NOP: u8 = 0x40;
    pub const SPECIFIC_EOI: u8 = 0x60;
    pub const SET_ROTATE_AEOI: u8 = 0x80;
    pub const ROTATE_NON_SPECIFIC_EOI: u8 = 0xA0;
    pub const SET_PRIORITY: u8 = 0xC0;
    pub const ROTATE_SPECIFIC_EOI: u8 = 0xE0;
    pub const COMMAND_MASK: u8 = 0xE0;
    pub const LEVEL_MASK: u8 = 0x07;
}

/// OCW3 bits (command port, bit 4 clear, bit 3 set).
pub mod ocw3 {
    /// Read in-service register (with RR).
    pub const RIS: u8 = 0x01;
    /// Read register command: RIS selects IRR or ISR.
    pub const RR: u8 = 0x02;
    /// Poll command: the next read is an interrupt acknowledge.
    pub const POLL: u8 = 0x04;
    /// Distinguishes OCW3 from OCW2.
    pub const SELECT: u8 = 0x08;
    /// Special mask mode (with ESMM).
    pub const SMM: u8 = 0x20;
    /// Enable special mask mode command: SMM sets or resets it.
    pub const ESMM: u8 = 0x40;
    /// The two status reads operating systems use.
    pub const READ_IRR: u8 = SELECT | RR;
    pub const READ_ISR: u8 = SELECT | RR | RIS;
}

/// Writable ELCR bits on PIIX: IRQ 0, 1, 2 (master) and IRQ 8, 13 (slave) are reserved.
pub mod elcr {
    pub const MASTER_MASK: u8 = 0xF8;
    pub const SLAVE_MASK: u8 = 0xDE;
}

/// Poll word (OCW3 poll command): bit 7 is set if a level requests service, bits 2:0 name it.
pub const POLL_INTERRUPT: u8 = 0x80;

/// Where a chip is in its initialisation sequence; ICW2-4 arrive on the data port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InitStep {
    /// Never initialised: requests nothing until ICW1.
    Uninitialised,
    Icw2,
    Icw3,
    Icw4,
    Ready,
}

/// One 8259A.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Chip {
    /// Whether IR2 of this chip is the cascade input (the master).
    is_master: bool,
    /// Current levels of the IR inputs as the devices drive them.
    lines: u8,
    /// Edge-triggered requests latched by a rising edge; bits of level-triggered inputs are
    /// never set, since their IRR bit follows the line instead.
    edge_irr: u8,
    isr: u8,
    imr: u8,
    /// ELCR bits (1 = level triggered), already masked to the writable bits.
    elcr: u8,
    elcr_mask: u8,
    /// The level with the lowest priority; the next one up (mod 8) has the highest. 7 after
    /// ICW1, so IR0 is highest as in the fully nested mode.
    lowest: u8,
    /// ICW2 with bits 2:0 cleared.
    base: u8,
    step: InitStep,
    icw1: u8,
    icw3: u8,
    icw4: u8,
    rotate_on_aeoi: bool,
    special_mask: bool,
    /// OCW3 status read select: ISR (true) or IRR (false) on the command port.
    read_isr: bool,
    /// OCW3 poll command armed: the next read of either port is a poll (an INTA).
    poll: bool,
}

impl Chip {
    const fn new(is_master: bool, elcr_mask: u8) -> Self {
        Chip {
            is_master,
            lines: 0,
            edge_irr: 0,
            isr: 0,
            imr: 0xFF,
            elcr: 0,
            elcr_mask,
            lowest: 7,
            base: 0,
            step: InitStep::Uninitialised,
            icw1: 0,
            icw3: 0,
            icw4: 0,
            rotate_on_aeoi: false,
            special_mask: false,
            read_isr: false,
            poll: false,
        }
    }

    fn ready(&self) -> bool {
        self.step == InitStep::Ready
    }

    /// Inputs currently level triggered: all of them under ICW1.LTIM, else the ELCR's choice.
    fn level_mask(&self) -> u8 {
        if self.icw1 & icw1::LTIM != 0 { 0xFF } else { self.elcr }
    }

    /// The interrupt request register. On the master, IR2 also requests while the slave's INT
    /// (kept in `lines` bit 2) is high; see the module documentation.
    fn irr(&self) -> u8 {
        let level = self.level_mask();
        let mut irr = (self.edge_irr & !level) | (self.lines & level);
        if self.is_master {
            irr |= (self.edge_irr | self.lines) & bit(CASCADE_IRQ);
        }
        irr
    }

    /// Drives input `level_bit` (one bit set). IRR and its edge latch are independent of the
    /// mask: the datasheet masks at the priority resolver, so a masked request is remembered.
    fn set_line(&mut self, level_bit: u8, high: bool) {
        if high {
            if self.lines & level_bit == 0 && self.level_mask() & level_bit == 0 {
                self.edge_irr |= level_bit;
            }
            self.lines |= level_bit;
        } else {
            self.lines &= !level_bit;
        }
    }

    /// Priority rank of `level`, 0 being the highest, under the current rotation.
    fn rank(&self, level: u8) -> u8 {
        level.wrapping_sub(self.lowest).wrapping_sub(1) & 7
    }

    /// The highest-priority level whose bit is set in `bits`.
    fn highest(&self, bits: u8) -> Option<u8> {
        (0..8u8).map(|rank| rank.wrapping_add(self.lowest).wrapping_add(1) & 7).find(|&level| bits & bit(level) != 0)
    }

    /// Whether IR2 hands the INTA sequence to a slave (master, not single, ICW3 bit 2).
    fn cascaded(&self) -> bool {
        self.is_master && self.icw1 & icw1::SNGL == 0 && self.icw3 & bit(CASCADE_IRQ) != 0
    }

    /// The level this chip would acknowledge now, if its INT output is asserted: the highest
    /// unmasked request with a better rank than the highest level in service.
    fn request(&self) -> Option<u8> {
        if !self.ready() {
            return None;
        }
        let req = self.highest(self.irr() & !self.imr)?;
        let mut blocking = self.isr;
        if self.special_mask {
            blocking &= !self.imr;
        }
        let Some(current) = self.highest(blocking) else {
            return Some(req);
        };
        let (req_rank, current_rank) = (self.rank(req), self.rank(current));
        // Special fully nested mode: the slave in service may interrupt again through the
        // same master level, for its own higher-priority requests (which it alone resolves).
        let sfnm = self.icw4 & icw4::SFNM != 0 && req == CASCADE_IRQ && self.cascaded();
        if req_rank < current_rank || (sfnm && req_rank == current_rank) { Some(req) } else { None }
    }

    /// The INTA (or poll) side of accepting `level`: the edge latch clears and ISR is set,
    /// except in AEOI mode, which performs a non-specific EOI at the end of INTA, with the
    /// optional rotation of "rotate in automatic EOI mode".
    fn accept(&mut self, level: u8) {
        let b = bit(level);
        self.edge_irr &= !b;
        if self.icw4 & icw4::AEOI != 0 {
            if self.rotate_on_aeoi {
                self.lowest = level & 7;
            }
        } else {
            self.isr |= b;
        }
    }

    fn read(&mut self, data_port: bool) -> u8 {
        if self.poll {
            // Poll command: the read is the acknowledge, on either port (datasheet: the next
            // RD pulse). It is per chip: polling the master for IR2 does not touch the slave.
            self.poll = false;
            return match self.request() {
                Some(level) => {
                    self.accept(level);
                    POLL_INTERRUPT | level
                }
                None => 0,
            };
        }
        if data_port {
            self.imr
        } else if self.read_isr {
            self.isr
        } else {
            self.irr()
        }
    }

    fn write_cmd(&mut self, value: u8) {
        if value & icw1::INIT != 0 {
            self.write_icw1(value);
        } else if value & ocw3::SELECT != 0 {
            self.write_ocw3(value);
        } else {
            self.write_ocw2(value);
        }
    }

    fn write_data(&mut self, value: u8) {
        match self.step {
            InitStep::Icw2 => {
                // 8086 mode: T7-T3 give the vector, the level supplies bits 2:0.
                self.base = value & 0xF8;
                self.step = if self.icw1 & icw1::SNGL == 0 {
                    InitStep::Icw3
                } else if self.icw1 & icw1::IC4 != 0 {
                    InitStep::Icw4
                } else {
                    InitStep::Ready
                };
            }
            InitStep::Icw3 => {
                self.icw3 = value;
                self.step = if self.icw1 & icw1::IC4 != 0 { InitStep::Icw4 } else { InitStep::Ready };
            }
            InitStep::Icw4 => {
                self.icw4 = value & icw4::MASK;
                self.step = InitStep::Ready;
            }
            // OCW1. Accepted before initialisation too, so a guest can mask everything first.
            InitStep::Uninitialised | InitStep::Ready => self.imr = value,
        }
    }

    /// ICW1 resets what the datasheet lists: the edge sense circuit (an input must go low to
    /// high again; a line held high does not count), IMR, priorities (IR7 lowest), special
    /// mask mode, the status read (back to IRR) and, with IC4 = 0, every ICW4 function. ISR
    /// and the rotate-in-AEOI flag are cleared as well, as QEMU and KVM do, so that a guest
    /// re-initialising a wedged PIC gets a clean one.
    fn write_icw1(&mut self, value: u8) {
        self.icw1 = value;
        self.step = InitStep::Icw2;
        self.edge_irr = 0;
        self.isr = 0;
        self.imr = 0;
        self.lowest = 7;
        self.icw3 = 0;
        self.icw4 = 0;
        self.rotate_on_aeoi = false;
        self.special_mask = false;
        self.read_isr = false;
        self.poll = false;
    }

    fn write_ocw2(&mut self, value: u8) {
        let level = value & ocw2::LEVEL_MASK;
        match value & ocw2::COMMAND_MASK {
            ocw2::NON_SPECIFIC_EOI => {
                if let Some(top) = self.highest(self.isr) {
                    self.isr &= !bit(top);
                }
            }
            ocw2::ROTATE_NON_SPECIFIC_EOI => {
                // The level just serviced becomes the lowest priority (equal-priority devices).
                if let Some(top) = self.highest(self.isr) {
                    self.isr &= !bit(top);
                    self.lowest = top;
                }
            }
            ocw2::SPECIFIC_EOI => self.isr &= !bit(level),
            ocw2::ROTATE_SPECIFIC_EOI => {
                self.isr &= !bit(level);
                self.lowest = level;
            }
            ocw2::SET_PRIORITY => self.lowest = level,
            ocw2::SET_ROTATE_AEOI => self.rotate_on_aeoi = true,
            ocw2::CLEAR_ROTATE_AEOI => self.rotate_on_aeoi = false,
            // ocw2::NOP
            _ => {}
        }
    }

    fn write_ocw3(&mut self, value: u8) {
        if value & ocw3::ESMM != 0 {
            self.special_mask = value & ocw3::SMM != 0;
        }
        // The datasheet: RR = 0 leaves the status read select unchanged.
        if value & ocw3::RR != 0 {
            self.read_isr = value & ocw3::RIS != 0;
        }
        if value & ocw3::POLL != 0 {
            self.poll = true;
        }
    }

    fn write_elcr(&mut self, value: u8) {
        let new = value & self.elcr_mask;
        // An input changing trigger mode starts afresh: a stale edge latch must not survive
        // into edge mode from before the line was level triggered.
        self.edge_irr &= !(self.elcr ^ new);
        self.elcr = new;
    }
}

/// The bit of IR `level` (taken mod 8, so it can never shift out of range).
const fn bit(level: u8) -> u8 {
    1u8 << (level & 7)
}

/// The master/slave 8259A pair of a PC/AT with its PIIX ELCRs. All state is plain data, so
/// `new` is `const` and the pair can sit in a lock-protected domain structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pic8259Pair {
    master: Chip,
    slave: Chip,
}

impl Default for Pic8259Pair {
    fn default() -> Self {
        Self::new()
    }
}

impl Pic8259Pair {
    /// Power-on state: both chips uninitialised, IMR 0xFF, all inputs edge triggered (ELCR 0,
    /// the PIIX reset value). See the module documentation for why.
    pub const fn new() -> Self {
        Pic8259Pair { master: Chip::new(true, elcr::MASTER_MASK), slave: Chip::new(false, elcr::SLAVE_MASK) }
    }

    /// Guest read of `port`. Reads have side effects (a pending poll command acknowledges),
    /// hence `&mut self`. Ports that are not ours read as an empty ISA bus.
    pub fn read(&mut self, port: u16) -> u8 {
        let value = match port {
            MASTER_CMD => self.master.read(false),
            MASTER_DATA => self.master.read(true),
            SLAVE_CMD => self.slave.read(false),
            SLAVE_DATA => self.slave.read(true),
            ELCR_MASTER => self.master.elcr,
            ELCR_SLAVE => self.slave.elcr,
            _ => 0xFF,
        };
        self.update_cascade();
        value
    }

    /// Guest write of `value` to `port`; other ports are ignored.
    pub fn write(&mut self, port: u16, value: u8) {
        match port {
            MASTER_CMD => self.master.write_cmd(value),
            MASTER_DATA => self.master.write_data(value),
            SLAVE_CMD => self.slave.write_cmd(value),
            SLAVE_DATA => self.slave.write_data(value),
            ELCR_MASTER => self.master.write_elcr(value),
            ELCR_SLAVE => self.slave.write_elcr(value),
            _ => {}
        }
        self.update_cascade();
    }

    /// Whether the mask keeps ISA line `irq` from the CPU: its IMR bit, and for the slave's
    /// lines also the cascade input's on the master.
    pub fn masked(&self, irq: u8) -> bool {
        match irq {
            0..=7 => self.master.imr & bit(irq) != 0,
            8..=15 => self.slave.imr & bit(irq - 8) != 0 || self.master.imr & bit(CASCADE_IRQ) != 0,
            _ => true,
        }
    }

    /// Drives ISA interrupt line `irq` (0..=15). Edge-triggered inputs latch a request on a
    /// rising edge; level-triggered ones (ELCR or LTIM) request while high. IRQ 2 and
    /// numbers above 15 are ignored (IRQ 2 is the cascade; see the module documentation).
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        match irq {
            CASCADE_IRQ => {}
            0..=7 => self.master.set_line(bit(irq), level),
            8..=15 => self.slave.set_line(bit(irq.wrapping_sub(8)), level),
            _ => {}
        }
        self.update_cascade();
    }

    /// The vector an INTA cycle would return now, or `None` while the master's INT output is
    /// low. It goes through the cascade when the master's winner is IR2.
    pub fn pending_vector(&self) -> Option<u8> {
        let level = self.master.request()?;
        if level == CASCADE_IRQ && self.master.cascaded() {
            let slave_level = self.slave.request().unwrap_or(SPURIOUS_LEVEL);
            Some(self.slave.base | slave_level)
        } else {
            Some(self.master.base | level)
        }
    }

    /// The INTA cycle: the winning request moves from IRR to ISR (not in AEOI mode) on the
    /// master and, through IR2, on the slave, and its vector is returned. A request that
    /// vanished since INT was raised yields the datasheet's default IR7: the master's base+7,
    /// or, when the master had latched IR2, the slave's base+7 (IRQ 15) with the master's IR2
    /// taken into service; no ISR bit is set for the default IR7 itself. `None` only while the
    /// master is not initialised, when hardware would put an undefined vector on the bus and
    /// nothing should be injected.
    pub fn acknowledge(&mut self) -> Option<u8> {
        if !self.master.ready() {
            return None;
        }
        let Some(level) = self.master.request() else {
            return Some(self.master.base | SPURIOUS_LEVEL);
        };
        self.master.accept(level);
        let vector = if level != CASCADE_IRQ || !self.master.cascaded() {
            self.master.base | level
        } else if let Some(slave_level) = self.slave.request() {
            self.slave.accept(slave_level);
            self.slave.base | slave_level
        } else {
            self.slave.base | SPURIOUS_LEVEL
        };
        self.update_cascade();
        Some(vector)
    }

    /// The master's INT output to the CPU.
    pub fn output(&self) -> bool {
        self.master.request().is_some()
    }

    /// Carries the slave's INT output to the master's IR2 after anything that may change it;
    /// every `&mut self` entry point ends here, so the master always sees the current level.
    fn update_cascade(&mut self) {
        let int = self.slave.request().is_some();
        self.master.set_line(bit(CASCADE_IRQ), int);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sequence Linux's `init_8259A` and PC BIOSes use: mask, ICW1 edge/cascade/ICW4,
    /// vector bases 0x20 and 0x28, slave on IR2 with ID 2, 8086 mode; then unmask.
    fn pc_pics() -> Pic8259Pair {
        let mut p = Pic8259Pair::new();
        p.write(MASTER_DATA, 0xFF);
        p.write(SLAVE_DATA, 0xFF);
        p.write(MASTER_CMD, 0x11);
        p.write(MASTER_DATA, 0x20);
        p.write(MASTER_DATA, 0x04);
        p.write(MASTER_DATA, 0x01);
        p.write(SLAVE_CMD, 0x11);
        p.write(SLAVE_DATA, 0x28);
        p.write(SLAVE_DATA, 0x02);
        p.write(SLAVE_DATA, 0x01);
        p.write(MASTER_DATA, 0x00);
        p.write(SLAVE_DATA, 0x00);
        p
    }

    fn pulse(p: &mut Pic8259Pair, irq: u8) {
        p.set_irq(irq, true);
        p.set_irq(irq, false);
    }

    fn irr(p: &mut Pic8259Pair, cmd: u16) -> u8 {
        p.write(cmd, ocw3::READ_IRR);
        p.read(cmd)
    }

    fn isr(p: &mut Pic8259Pair, cmd: u16) -> u8 {
        p.write(cmd, ocw3::READ_ISR);
        p.read(cmd)
    }

    #[test]
    fn power_on_pair_is_masked_uninitialised_and_requests_nothing() {
        let mut p = Pic8259Pair::new();
        assert_eq!(p, Pic8259Pair::default());
        assert_eq!(p.read(MASTER_DATA), 0xFF);
        assert_eq!(p.read(SLAVE_DATA), 0xFF);
        assert_eq!(p.read(ELCR_MASTER), 0);
        assert_eq!(p.read(ELCR_SLAVE), 0);
        for irq in 0..16 {
            p.set_irq(irq, true);
        }
        assert!(!p.output());
        assert_eq!(p.pending_vector(), None);
        assert_eq!(p.acknowledge(), None);
        // Unmasking alone does not make an uninitialised chip deliver.
        p.write(MASTER_DATA, 0);
        assert!(!p.output());
    }

    #[test]
    fn linux_init_sequence_programs_bases_0x20_and_0x28_and_icw1_clears_imr() {
        let mut p = Pic8259Pair::new();
        p.write(MASTER_DATA, 0xFF);
        p.write(MASTER_CMD, 0x11);
        assert_eq!(p.read(MASTER_DATA), 0x00);
        p.write(MASTER_DATA, 0x20);
        p.write(MASTER_DATA, 0x04);
        // Mid-sequence the chip is not ready.
        p.set_irq(1, true);
        assert!(!p.output());
        p.write(MASTER_DATA, 0x01);
        assert_eq!(p.pending_vector(), Some(0x21));
        let mut p = pc_pics();
        p.set_irq(0, true);
        assert_eq!(p.pending_vector(), Some(0x20));
        let mut p = pc_pics();
        p.set_irq(8, true);
        assert_eq!(p.pending_vector(), Some(0x28));
    }

    #[test]
    fn icw2_low_three_bits_are_ignored() {
        let mut p = Pic8259Pair::new();
        p.write(MASTER_CMD, 0x13); // single, IC4
        p.write(MASTER_DATA, 0x47);
        p.write(MASTER_DATA, 0x01);
        p.set_irq(3, true);
        assert_eq!(p.pending_vector(), Some(0x43));
    }

    #[test]
    fn init_without_icw4_is_ready_after_icw3_and_without_icw3_in_single_mode() {
        let mut p = Pic8259Pair::new();
        p.write(MASTER_CMD, 0x10);
        p.write(MASTER_DATA, 0x30);
        assert!(!p.output());
        p.write(MASTER_DATA, 0x04);
        p.set_irq(5, true);
        assert_eq!(p.pending_vector(), Some(0x35));
        let mut p = Pic8259Pair::new();
        p.write(MASTER_CMD, 0x12);
        p.write(MASTER_DATA, 0x30);
        p.set_irq(5, true);
        assert_eq!(p.acknowledge(), Some(0x35));
        // The next data write is OCW1, not an ICW.
        p.write(MASTER_DATA, 0xAA);
        assert_eq!(p.read(MASTER_DATA), 0xAA);
    }

    #[test]
    fn raised_irq_is_pending_then_acknowledged_into_isr_then_cleared_by_eoi() {
        let mut p = pc_pics();
        pulse(&mut p, 4);
        assert!(p.output());
        assert_eq!(irr(&mut p, MASTER_CMD), 0x10);
        assert_eq!(p.pending_vector(), Some(0x24));
        assert_eq!(p.acknowledge(), Some(0x24));
        assert_eq!(irr(&mut p, MASTER_CMD), 0x00);
        assert_eq!(isr(&mut p, MASTER_CMD), 0x10);
        assert!(!p.output());
        p.write(MASTER_CMD, ocw2::NON_SPECIFIC_EOI);
        assert_eq!(isr(&mut p, MASTER_CMD), 0x00);
        assert!(!p.output());
    }

    #[test]
    fn irq0_beats_irq3_when_both_request() {
        let mut p = pc_pics();
        pulse(&mut p, 3);
        pulse(&mut p, 0);
        assert_eq!(p.acknowledge(), Some(0x20));
        // IRQ 3 waits behind IRQ 0 in service.
        assert!(!p.output());
        p.write(MASTER_CMD, ocw2::NON_SPECIFIC_EOI);
        assert_eq!(p.acknowledge(), Some(0x23));
    }

    #[test]
    fn irq1_in_service_blocks_irq3_but_not_irq0() {
        let mut p = pc_pics();
        pulse(&mut p, 1);
        assert_eq!(p.acknowledge(), Some(0x21));
        pulse(&mut p, 3);
        assert!(!p.output());
        assert_eq!(p.pending_vector(), None);
        pulse(&mut p, 0);
        assert_eq!(p.acknowledge(), Some(0x20));
        assert_eq!(isr(&mut p, MASTER_CMD), 0x03);
        // A non-specific EOI ends the highest level in service (IRQ 0), then IRQ 1.
        p.write(MASTER_CMD, ocw2::NON_SPECIFIC_EOI);
        assert_eq!(isr(&mut p, MASTER_CMD), 0x02);
        assert!(!p.output());
        p.write(MASTER_CMD, ocw2::NON_SPECIFIC_EOI);
        assert_eq!(p.acknowledge(), Some(0x23));
    }

    #[test]
    fn same_level_in_service_blocks_a_new_request_on_it() {
        let mut p = pc_pics();
        pulse(&mut p, 5);
        assert_eq!(p.acknowledge(), Some(0x25));
        pulse(&mut p, 5);
        assert!(!p.output());
        p.write(MASTER_CMD, ocw2::SPECIFIC_EOI | 5);
        assert_eq!(p.acknowledge(), Some(0x25));
    }

    #[test]
    fn slave_irq_goes_through_master_ir2_with_vectors_from_0x28() {
        let mut p = pc_pics();
        pulse(&mut p, 12);
        assert!(p.output());
        assert_eq!(irr(&mut p, MASTER_CMD), 0x04);
        assert_eq!(irr(&mut p, SLAVE_CMD), 0x10);
        assert_eq!(p.pending_vector(), Some(0x2C));
        assert_eq!(p.acknowledge(), Some(0x2C));
        assert_eq!(isr(&mut p, MASTER_CMD), 0x04);
        assert_eq!(isr(&mut p, SLAVE_CMD), 0x10);
        // IRQ 3 is below IR2 on the master, so it waits for the cascade's EOI.
        pulse(&mut p, 3);
        assert!(!p.output());
        // Linux's order: specific EOI to the slave, then to the master's IR2.
        p.write(SLAVE_CMD, ocw2::SPECIFIC_EOI | 4);
        p.write(MASTER_CMD, ocw2::SPECIFIC_EOI | 2);
        assert_eq!(isr(&mut p, SLAVE_CMD), 0);
        assert_eq!(isr(&mut p, MASTER_CMD), 0);
        assert_eq!(p.acknowledge(), Some(0x23));
    }

    #[test]
    fn slave_priority_orders_its_own_levels_and_irq15_is_lowest_of_all_slave_levels() {
        let mut p = pc_pics();
        pulse(&mut p, 15);
        pulse(&mut p, 8);
        pulse(&mut p, 1);
        assert_eq!(p.acknowledge(), Some(0x21));
        p.write(MASTER_CMD, ocw2::NON_SPECIFIC_EOI);
        assert_eq!(p.acknowledge(), Some(0x28));
        p.write(SLAVE_CMD, ocw2::NON_SPECIFIC_EOI);
        p.write(MASTER_CMD, ocw2::NON_SPECIFIC_EOI);
        assert_eq!(p.acknowledge(), Some(0x2F));
        assert_eq!(isr(&mut p, SLAVE_CMD), 0x80);
    }

    #[test]
    fn set_irq_2_is_ignored_because_ir2_is_the_cascade() {
        let mut p = pc_pics();
        pulse(&mut p, 2);
        assert!(!p.output());
        assert_eq!(irr(&mut p, MASTER_CMD), 0);
    }

    #[test]
    fn masked_irq_stays_in_irr_and_is_delivered_when_unmasked() {
        let mut p = pc_pics();
        p.write(MASTER_DATA, 0x10);
        assert_eq!(p.read(MASTER_DATA), 0x10);
        pulse(&mut p, 4);
        assert!(!p.output());
        assert_eq!(irr(&mut p, MASTER_CMD), 0x10);
        p.write(MASTER_DATA, 0x00);
        assert_eq!(p.acknowledge(), Some(0x24));
    }

    #[test]
    fn masking_ir2_on_the_master_hides_slave_irqs_until_unmasked() {
        let mut p = pc_pics();
        p.write(MASTER_DATA, 0x04);
        pulse(&mut p, 9);
        assert!(!p.output());
        assert_eq!(irr(&mut p, MASTER_CMD), 0x04);
        p.write(MASTER_DATA, 0x00);
        assert_eq!(p.acknowledge(), Some(0x29));
    }

    #[test]
    fn masking_a_slave_line_before_its_edge_keeps_it_off_the_master() {
        let mut p = pc_pics();
        p.write(SLAVE_DATA, 0x02);
        pulse(&mut p, 9);
        assert!(!p.output());
        assert_eq!(irr(&mut p, MASTER_CMD), 0x00);
        assert_eq!(irr(&mut p, SLAVE_CMD), 0x02);
        p.write(SLAVE_DATA, 0x00);
        assert_eq!(p.acknowledge(), Some(0x29));
    }

    #[test]
    fn ocw3_selects_irr_or_isr_and_rr_clear_keeps_the_selection() {
        let mut p = pc_pics();
        pulse(&mut p, 6);
        pulse(&mut p, 7);
        assert_eq!(p.acknowledge(), Some(0x26));
        // After ICW1 the command port reads IRR.
        assert_eq!(p.read(MASTER_CMD), 0x80);
        p.write(MASTER_CMD, ocw3::READ_ISR);
        assert_eq!(p.read(MASTER_CMD), 0x40);
        assert_eq!(p.read(MASTER_CMD), 0x40);
        // OCW3 with RR = 0 (here: only special mask bits, ESMM clear) changes nothing.
        p.write(MASTER_CMD, ocw3::SELECT);
        assert_eq!(p.read(MASTER_CMD), 0x40);
        p.write(MASTER_CMD, ocw3::READ_IRR);
        assert_eq!(p.read(MASTER_CMD), 0x80);
        // The data port still reads IMR.
        assert_eq!(p.read(MASTER_DATA), 0x00);
    }

    #[test]
    fn auto_eoi_leaves_isr_clear_and_allows_the_next_request_at_once() {
        let mut p = pc_pics();
        p.write(MASTER_CMD, 0x11);
        p.write(MASTER_DATA, 0x20);
        p.write(MASTER_DATA, 0x04);
        p.write(MASTER_DATA, icw4::UPM | icw4::AEOI);
        pulse(&mut p, 3);
        assert_eq!(p.acknowledge(), Some(0x23));
        assert_eq!(isr(&mut p, MASTER_CMD), 0x00);
        pulse(&mut p, 5);
        assert_eq!(p.acknowledge(), Some(0x25));
        // Priorities do not rotate unless rotate-in-AEOI is set.
        pulse(&mut p, 4);
        pulse(&mut p, 6);
        assert_eq!(p.acknowledge(), Some(0x24));
    }

    #[test]
    fn rotate_in_auto_eoi_makes_the_serviced_level_lowest() {
        let mut p = pc_pics();
        p.write(MASTER_CMD, 0x11);
        p.write(MASTER_DATA, 0x20);
        p.write(MASTER_DATA, 0x04);
        p.write(MASTER_DATA, icw4::UPM | icw4::AEOI);
        p.write(MASTER_CMD, ocw2::SET_ROTATE_AEOI);
        pulse(&mut p, 1);
        assert_eq!(p.acknowledge(), Some(0x21));
        pulse(&mut p, 0);
        pulse(&mut p, 3);
        // IRQ 1 is now lowest, so IRQ 3 (rank 1) outranks IRQ 0 (rank 6).
        assert_eq!(p.acknowledge(), Some(0x23));
        assert_eq!(p.acknowledge(), Some(0x20));
        p.write(MASTER_CMD, ocw2::CLEAR_ROTATE_AEOI);
        pulse(&mut p, 5);
        pulse(&mut p, 1);
        assert_eq!(p.acknowledge(), Some(0x21));
        pulse(&mut p, 5);
        assert_eq!(p.acknowledge(), Some(0x25));
    }

    #[test]
    fn rotate_on_non_specific_eoi_gives_equal_priority_round_robin() {
        let mut p = pc_pics();
        pulse(&mut p, 0);
        assert_eq!(p.acknowledge(), Some(0x20));
        pulse(&mut p, 0);
        pulse(&mut p, 4);
        p.write(MASTER_CMD, ocw2::ROTATE_NON_SPECIFIC_EOI);
        assert_eq!(isr(&mut p, MASTER_CMD), 0);
        // IRQ 0 just served is now lowest: IRQ 4 wins.
        assert_eq!(p.acknowledge(), Some(0x24));
        p.write(MASTER_CMD, ocw2::ROTATE_NON_SPECIFIC_EOI);
        // Now IRQ 4 is lowest and IRQ 5 highest; IRQ 0 is the only request.
        assert_eq!(p.acknowledge(), Some(0x20));
    }

    #[test]
    fn set_priority_and_rotate_on_specific_eoi_move_the_lowest_level() {
        let mut p = pc_pics();
        p.write(MASTER_CMD, ocw2::SET_PRIORITY | 4);
        pulse(&mut p, 0);
        pulse(&mut p, 5);
        assert_eq!(p.acknowledge(), Some(0x25));
        // In-service IRQ 5 is now highest; IRQ 0 waits.
        assert!(!p.output());
        p.write(MASTER_CMD, ocw2::ROTATE_SPECIFIC_EOI | 5);
        assert_eq!(isr(&mut p, MASTER_CMD), 0);
        pulse(&mut p, 5);
        pulse(&mut p, 6);
        // Lowest is 5, so 6 is highest, then 0, then 5.
        assert_eq!(p.acknowledge(), Some(0x26));
        p.write(MASTER_CMD, ocw2::SPECIFIC_EOI | 6);
        assert_eq!(p.acknowledge(), Some(0x20));
        p.write(MASTER_CMD, ocw2::NON_SPECIFIC_EOI);
        assert_eq!(p.acknowledge(), Some(0x25));
    }

    #[test]
    fn ocw2_nop_and_specific_eoi_for_a_level_not_in_service_change_nothing() {
        let mut p = pc_pics();
        pulse(&mut p, 3);
        p.acknowledge();
        let before = p.clone();
        p.write(MASTER_CMD, ocw2::NOP | 3);
        p.write(MASTER_CMD, ocw2::SPECIFIC_EOI | 6);
        assert_eq!(p, before);
    }

    #[test]
    fn spurious_irq7_when_a_level_line_drops_before_inta() {
        let mut p = pc_pics();
        p.write(ELCR_MASTER, 0x20);
        p.set_irq(5, true);
        assert!(p.output());
        p.set_irq(5, false);
        assert!(!p.output());
        assert_eq!(p.acknowledge(), Some(0x27));
        // The default IR7 sets no ISR bit, so the handler sees a spurious interrupt.
        assert_eq!(isr(&mut p, MASTER_CMD), 0x00);
    }

    #[test]
    fn spurious_irq7_when_the_guest_masks_the_request_before_inta() {
        let mut p = pc_pics();
        pulse(&mut p, 3);
        assert!(p.output());
        p.write(MASTER_DATA, 0x08);
        assert_eq!(p.acknowledge(), Some(0x27));
        assert_eq!(isr(&mut p, MASTER_CMD), 0x00);
        // The request is still latched for later.
        p.write(MASTER_DATA, 0x00);
        assert_eq!(p.acknowledge(), Some(0x23));
    }

    #[test]
    fn spurious_irq15_when_a_slave_level_line_drops_after_the_master_latched_ir2() {
        let mut p = pc_pics();
        p.write(ELCR_SLAVE, 0x08);
        p.set_irq(11, true);
        assert_eq!(p.pending_vector(), Some(0x2B));
        p.set_irq(11, false);
        // The master latched the edge of the slave's INT; the slave has nothing left.
        assert!(p.output());
        assert_eq!(p.pending_vector(), Some(0x2F));
        assert_eq!(p.acknowledge(), Some(0x2F));
        // As Linux expects: the slave has no ISR bit, the master's IR2 needs an EOI.
        assert_eq!(isr(&mut p, SLAVE_CMD), 0x00);
        assert_eq!(isr(&mut p, MASTER_CMD), 0x04);
        p.write(MASTER_CMD, ocw2::SPECIFIC_EOI | 2);
        assert!(!p.output());
        assert_eq!(isr(&mut p, MASTER_CMD), 0x00);
    }

    #[test]
    fn masking_a_slave_irq_after_the_master_latched_ir2_gives_spurious_irq15() {
        let mut p = pc_pics();
        pulse(&mut p, 9);
        p.write(SLAVE_DATA, 0x02);
        assert_eq!(p.acknowledge(), Some(0x2F));
        p.write(MASTER_CMD, ocw2::NON_SPECIFIC_EOI);
        // The request stays in the slave's IRR; unmasking raises INT again.
        p.write(SLAVE_DATA, 0x00);
        assert_eq!(p.acknowledge(), Some(0x29));
    }

    #[test]
    fn slave_in_aeoi_with_two_requests_delivers_both_without_a_new_edge_on_ir2() {
        let mut p = pc_pics();
        p.write(SLAVE_CMD, 0x11);
        p.write(SLAVE_DATA, 0x28);
        p.write(SLAVE_DATA, 0x02);
        p.write(SLAVE_DATA, icw4::UPM | icw4::AEOI);
        pulse(&mut p, 9);
        pulse(&mut p, 10);
        assert_eq!(p.acknowledge(), Some(0x29));
        p.write(MASTER_CMD, ocw2::NON_SPECIFIC_EOI);
        assert_eq!(p.acknowledge(), Some(0x2A));
    }

    #[test]
    fn level_triggered_line_via_elcr_reasserts_after_eoi_while_high() {
        let mut p = pc_pics();
        p.write(ELCR_SLAVE, 0x08); // IRQ 11 level triggered
        assert_eq!(p.read(ELCR_SLAVE), 0x08);
        p.set_irq(11, true);
        assert_eq!(p.acknowledge(), Some(0x2B));
        // Still high: IRR shows it, ISR blocks it.
        assert_eq!(irr(&mut p, SLAVE_CMD), 0x08);
        assert!(!p.output());
        p.write(SLAVE_CMD, ocw2::NON_SPECIFIC_EOI);
        p.write(MASTER_CMD, ocw2::NON_SPECIFIC_EOI);
        assert_eq!(p.acknowledge(), Some(0x2B));
        p.set_irq(11, false);
        p.write(SLAVE_CMD, ocw2::NON_SPECIFIC_EOI);
        p.write(MASTER_CMD, ocw2::NON_SPECIFIC_EOI);
        assert!(!p.output());
        assert_eq!(irr(&mut p, SLAVE_CMD), 0x00);
    }

    #[test]
    fn ltim_makes_every_input_of_a_chip_level_triggered() {
        let mut p = Pic8259Pair::new();
        p.write(MASTER_CMD, 0x1B); // LTIM, single, IC4
        p.write(MASTER_DATA, 0x08);
        p.write(MASTER_DATA, 0x01);
        p.set_irq(0, true);
        assert_eq!(p.acknowledge(), Some(0x08));
        p.write(MASTER_CMD, ocw2::NON_SPECIFIC_EOI);
        assert_eq!(p.acknowledge(), Some(0x08));
    }

    #[test]
    fn edge_triggered_line_needs_a_new_rising_edge_after_eoi() {
        let mut p = pc_pics();
        p.set_irq(4, true);
        assert_eq!(p.acknowledge(), Some(0x24));
        p.write(MASTER_CMD, ocw2::NON_SPECIFIC_EOI);
        // Held high: no new request.
        p.set_irq(4, true);
        assert!(!p.output());
        p.set_irq(4, false);
        assert!(!p.output());
        p.set_irq(4, true);
        assert_eq!(p.acknowledge(), Some(0x24));
    }

    #[test]
    fn edge_request_latches_even_if_the_line_falls_before_inta() {
        let mut p = pc_pics();
        p.set_irq(6, true);
        p.set_irq(6, false);
        assert_eq!(p.acknowledge(), Some(0x26));
    }

    #[test]
    fn two_edges_before_inta_give_one_interrupt() {
        let mut p = pc_pics();
        pulse(&mut p, 1);
        pulse(&mut p, 1);
        assert_eq!(p.acknowledge(), Some(0x21));
        p.write(MASTER_CMD, ocw2::NON_SPECIFIC_EOI);
        assert!(!p.output());
    }

    #[test]
    fn elcr_reserved_bits_for_irq_0_1_2_8_13_read_zero() {
        let mut p = pc_pics();
        p.write(ELCR_MASTER, 0xFF);
        p.write(ELCR_SLAVE, 0xFF);
        assert_eq!(p.read(ELCR_MASTER), 0xF8);
        assert_eq!(p.read(ELCR_SLAVE), 0xDE);
        // IRQ 0 stays edge triggered.
        p.set_irq(0, true);
        assert_eq!(p.acknowledge(), Some(0x20));
        p.write(MASTER_CMD, ocw2::NON_SPECIFIC_EOI);
        assert!(!p.output());
    }

    #[test]
    fn switching_a_line_from_level_to_edge_drops_its_request_until_a_new_edge() {
        let mut p = pc_pics();
        p.write(ELCR_MASTER, 0x08);
        p.set_irq(3, true);
        assert!(p.output());
        p.write(ELCR_MASTER, 0x00);
        assert!(!p.output());
        p.set_irq(3, false);
        p.set_irq(3, true);
        assert_eq!(p.acknowledge(), Some(0x23));
    }

    #[test]
    fn poll_command_returns_the_level_and_acknowledges_it() {
        let mut p = pc_pics();
        pulse(&mut p, 5);
        pulse(&mut p, 6);
        p.write(MASTER_CMD, ocw3::SELECT | ocw3::POLL);
        assert_eq!(p.read(MASTER_CMD), 0x85);
        assert_eq!(isr(&mut p, MASTER_CMD), 0x20);
        // Only the next read was a poll; without EOI, IRQ 6 is blocked.
        p.write(MASTER_CMD, ocw3::SELECT | ocw3::POLL);
        assert_eq!(p.read(MASTER_DATA), 0x00);
        p.write(MASTER_CMD, ocw2::NON_SPECIFIC_EOI);
        p.write(MASTER_CMD, ocw3::SELECT | ocw3::POLL);
        assert_eq!(p.read(MASTER_DATA), 0x86);
        assert_eq!(p.read(MASTER_DATA), 0x00);
    }

    #[test]
    fn polling_the_master_for_a_slave_irq_reports_ir2_then_the_slave_reports_its_level() {
        let mut p = pc_pics();
        pulse(&mut p, 14);
        p.write(MASTER_CMD, ocw3::SELECT | ocw3::POLL);
        assert_eq!(p.read(MASTER_CMD), 0x82);
        p.write(SLAVE_CMD, ocw3::SELECT | ocw3::POLL);
        assert_eq!(p.read(SLAVE_CMD), 0x86);
        assert_eq!(isr(&mut p, MASTER_CMD), 0x04);
        assert_eq!(isr(&mut p, SLAVE_CMD), 0x40);
    }

    #[test]
    fn special_mask_mode_lets_lower_levels_in_while_the_masked_level_is_in_service() {
        let mut p = pc_pics();
        pulse(&mut p, 1);
        assert_eq!(p.acknowledge(), Some(0x21));
        pulse(&mut p, 4);
        assert!(!p.output());
        // The handler masks its own level and enters special mask mode.
        p.write(MASTER_DATA, 0x02);
        p.write(MASTER_CMD, ocw3::SELECT | ocw3::ESMM | ocw3::SMM);
        assert_eq!(p.acknowledge(), Some(0x24));
        p.write(MASTER_CMD, ocw3::SELECT | ocw3::ESMM);
        p.write(MASTER_CMD, ocw2::SPECIFIC_EOI | 4);
        pulse(&mut p, 4);
        assert!(!p.output());
    }

    #[test]
    fn special_fully_nested_master_accepts_a_higher_slave_irq_while_ir2_is_in_service() {
        let mut p = pc_pics();
        p.write(MASTER_CMD, 0x11);
        p.write(MASTER_DATA, 0x20);
        p.write(MASTER_DATA, 0x04);
        p.write(MASTER_DATA, icw4::UPM | icw4::SFNM);
        pulse(&mut p, 12);
        assert_eq!(p.acknowledge(), Some(0x2C));
        pulse(&mut p, 9);
        assert_eq!(p.acknowledge(), Some(0x29));
        // A lower slave level is still blocked by the slave's own ISR, and IRQ 3 by IR2.
        pulse(&mut p, 13);
        pulse(&mut p, 3);
        assert!(!p.output());
        // Without SFNM the same higher slave IRQ waits.
        let mut q = pc_pics();
        pulse(&mut q, 12);
        q.acknowledge();
        pulse(&mut q, 9);
        assert!(!q.output());
    }

    #[test]
    fn single_mode_master_treats_ir2_as_an_ordinary_input() {
        let mut p = Pic8259Pair::new();
        p.write(MASTER_CMD, 0x13);
        p.write(MASTER_DATA, 0x40);
        p.write(MASTER_DATA, 0x01);
        p.write(SLAVE_CMD, 0x13);
        p.write(SLAVE_DATA, 0x70);
        p.write(SLAVE_DATA, 0x01);
        pulse(&mut p, 8);
        assert_eq!(p.acknowledge(), Some(0x42));
        // The slave was not asked.
        assert_eq!(isr(&mut p, SLAVE_CMD), 0x00);
    }

    #[test]
    fn icw1_resets_isr_priority_and_the_edge_sense_of_a_held_line() {
        let mut p = pc_pics();
        p.write(MASTER_CMD, ocw2::SET_PRIORITY | 2);
        p.set_irq(5, true);
        p.acknowledge();
        pulse(&mut p, 6);
        p.write(MASTER_CMD, 0x11);
        p.write(MASTER_DATA, 0x20);
        p.write(MASTER_DATA, 0x04);
        p.write(MASTER_DATA, 0x01);
        assert_eq!(isr(&mut p, MASTER_CMD), 0);
        assert_eq!(irr(&mut p, MASTER_CMD), 0);
        assert!(!p.output());
        // IRQ 5 is still held high: it must go low and high again.
        p.set_irq(5, true);
        assert!(!p.output());
        p.set_irq(5, false);
        p.set_irq(5, true);
        pulse(&mut p, 0);
        // Fully nested again: IR0 highest.
        assert_eq!(p.acknowledge(), Some(0x20));
    }

    #[test]
    fn other_ports_read_0xff_and_ignore_writes_and_irqs_above_15_are_ignored() {
        let mut p = pc_pics();
        let before = p.clone();
        for port in [0x00u16, 0x1F, 0x22, 0x9F, 0xA2, 0x4CF, 0x4D2, 0xFFFF] {
            p.write(port, 0x5A);
            assert_eq!(p.read(port), 0xFF);
        }
        for irq in 16..=255u8 {
            p.set_irq(irq, true);
        }
        assert_eq!(p, before);
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    #[test]
    fn random_accesses_never_panic_and_pending_vector_predicts_inta() {
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        let mut p = pc_pics();
        let ports = [MASTER_CMD, MASTER_DATA, SLAVE_CMD, SLAVE_DATA, ELCR_MASTER, ELCR_SLAVE, 0x22, 0x4D2];
        for _ in 0..100_000 {
            let r = rng.next();
            let port = ports.get((r >> 8) as usize % ports.len()).copied().unwrap_or(0);
            let value = (r >> 16) as u8;
            match r % 64 {
                0..=14 => {
                    let v = p.read(port);
                    if port == ELCR_MASTER {
                        assert_eq!(v & !elcr::MASTER_MASK, 0);
                    }
                    if port == ELCR_SLAVE {
                        assert_eq!(v & !elcr::SLAVE_MASK, 0);
                    }
                    if port == 0x22 || port == 0x4D2 {
                        assert_eq!(v, 0xFF);
                    }
                }
                15..=34 => {
                    // Most ICW1s become OCWs, so the pair spends most of its time initialised.
                    let value = if value & icw1::INIT != 0 && r & 0x7000 != 0 { value & !icw1::INIT } else { value };
                    p.write(port, value);
                }
                35..=49 => p.set_irq((r >> 24) as u8 % 20, r & 0x8000_0000 != 0),
                50..=62 => {
                    let pending = p.pending_vector();
                    assert_eq!(pending.is_some(), p.output());
                    let acked = p.acknowledge();
                    if pending.is_some() {
                        assert_eq!(acked, pending);
                    }
                }
                _ => p = pc_pics(),
            }
            assert_eq!(p.pending_vector().is_some(), p.output());
        }
    }
}
