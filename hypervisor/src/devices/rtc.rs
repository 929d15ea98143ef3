//! A register-level model of the PC's CMOS real-time clock, the Motorola MC146818A (and its compatibles, the
//! Dallas DS12887 and the RTC inside every PC chipset), as a guest sees it through the index port 0x70 and the
//! data port 0x71, raising ISA IRQ 8. It touches no hardware and never reads a clock: every call takes the
//! monotonic time `now_ns`, and the wall-clock time is given once, at creation, as Unix seconds.
//!
//! Reference: Motorola MC146818A datasheet, "Address Map", "Time, Calendar and Alarm Locations", "Update
//! Cycle", "Interrupts" and "Registers" (A, B, C, D), including table "Periodic Interrupt Rate and Square-Wave
//! Output Frequency" for the 32.768 kHz time base. The memory-size bytes follow the IBM PC/AT CMOS map as
//! SeaBIOS and QEMU use it.
//!
//! Modelled:
//! - Time, calendar and alarm registers in BCD or binary (register B bit 2) and 12- or 24-hour mode (bit 1,
//!   PM in bit 7 of the hour), the century at 0x32, alarm "don't care" values 0xC0..=0xFF.
//! - The update cycle once per second: UIP (register A bit 7) reads 1 during the last [`UIP_NS`] before each
//!   update, at the end of which the registers change at once.
//! - Periodic, alarm and update-ended flags in register C, IRQF and the IRQ 8 line, register C cleared by a
//!   read, register D's VRT bit always 1.
//! - SET (register B bit 7) freezing the registers so the guest can write a new time, which then keeps running
//!   from where the guest set it; the divider chain held in reset by DV2..DV0 = 11x.
//! - 114 bytes of general CMOS RAM (0x0E..=0x7F; the century byte 0x32 among them is a time register here),
//!   with the memory-size bytes and the PC/AT checksum filled in at creation.
//!
//! Choices where the datasheet leaves room (documented once here, referred to below):
//! - The clock holds whatever time base `unix_seconds_at_boot` uses (normally UTC, which Linux expects; a host
//!   that wants local time passes local seconds). Daylight saving (register B bit 0) is stored but never
//!   applied. The day of the week is derived from the date (1 = Sunday); a guest-written value is kept as an
//!   offset from the derived one, so it also advances at midnight as on the chip.
//! - The century byte (0x32) is part of the time here, as in QEMU: it rolls over with the year and is set by
//!   the guest like the other time registers.
//! - Time is kept as seconds, not as register bytes. While the clock runs, the time registers read the
//!   current time in the format register B selects *now* (the chip would keep the old bytes after a format
//!   change until the guest reinitialises them). A write to a time register while the clock runs takes effect
//!   at once, as in QEMU. A value that is not a valid time is clamped into range (seconds to 59, day to the
//!   month's length, ...) when the time is taken from the registers, so it does not read back while running.
//!   While the registers are frozen (SET or divider reset) they hold exactly the bytes written.
//! - Setting the time keeps the phase of the divider chain: SET does not stop the chain, so the first update
//!   after SET is cleared comes at the next second boundary of the old timing, and the periodic interrupt runs
//!   on undisturbed.
//! - Register A: the divider bits DV2..DV0 are stored and read back but only 11x (divider chain reset) has an
//!   effect: it freezes the time, stops the periodic interrupt and UIP; every other value runs the clock at the
//!   PC's 32.768 kHz time base (PCs only ever program 010). On release from reset the first update comes
//!   500 ms later, as the datasheet specifies. Rates 1 and 2 give 256 Hz and 128 Hz, the datasheet's values
//!   for the 32.768 kHz time base (the same as rates 8 and 9); rates 3..=15 give `32768 >> (rate - 1)` Hz.
//! - Setting SET clears UIE, as the datasheet specifies for the MC146818A, and clears UIP.
//! - IRQF is combinational (PF & PIE | AF & AIE | UF & UIE), as on the chip; IRQ 8 follows it and is reported
//!   by [`Rtc::poll_irq`] on each rising edge. A guest that never reads register C therefore gets one
//!   interrupt, as on hardware.
//! - The index port is write-only on PCs; reading it returns 0xFF. Bit 7 of an index write is the NMI mask,
//!   which is stored ([`Rtc::nmi_masked`]) and has no effect here.
//! - A monotonic clock that goes backwards is treated as standing still.

/// Index (address) port; bit 7 of a write is the NMI mask.
pub const INDEX_PORT: u16 = 0x70;
/// Data port for the register the index selects.
pub const DATA_PORT: u16 = 0x71;
/// ISA IRQ line of the RTC on a PC.
pub const RTC_IRQ: u8 = 8;
/// How long before each update UIP reads 1 (datasheet tBUC for the 32.768 kHz time base).
pub const UIP_NS: u64 = 244_000;

/// Register indexes (the value written to the index port, bit 7 aside).
pub mod reg {
    pub const SECONDS: u8 = 0x00;
    pub const SECONDS_ALARM: u8 = 0x01;
    pub const MINUTES: u8 = 0x02;
    pub const MINUTES_ALARM: u8 = 0x03;
    pub const HOURS: u8 = 0x04;
    pub const HOURS_ALARM: u8 = 0x05;
    pub const DAY_OF_WEEK: u8 = 0x06;
    pub const DAY_OF_MONTH: u8 = 0x07;
    pub const MONTH: u8 = 0x08;
    pub const YEAR: u8 = 0x09;
    pub const A: u8 = 0x0A;
    pub const B: u8 = 0x0B;
    pub const C: u8 = 0x0C;
    pub const D: u8 = 0x0D;
    /// First byte of general CMOS RAM.
    pub const RAM_FIRST: u8 = 0x0E;
    pub const CENTURY: u8 = 0x32;
    /// PC/AT CMOS layout: base memory in KiB (low, high).
    pub const BASE_MEM_LOW: u8 = 0x15;
    /// Extended memory above 1 MiB in KiB (low at 0x17, high at 0x18), at most 0xFFFF.
    pub const EXT_MEM_LOW: u8 = 0x17;
    /// The same value again, as the POST reported it (low at 0x30, high at 0x31).
    pub const EXT_MEM2_LOW: u8 = 0x30;
    /// Checksum of 0x10..=0x2D, high byte at 0x2E, low byte at 0x2F.
    pub const CHECKSUM_HIGH: u8 = 0x2E;
    /// Memory above 16 MiB below 4 GiB in 64 KiB units (low at 0x34, high at 0x35), at most 0xFFFF.
    pub const MEM_ABOVE_16M_LOW: u8 = 0x34;
    /// Memory above 4 GiB in 64 KiB units, 24 bits at 0x5B (low), 0x5C, 0x5D (high).
    pub const MEM_ABOVE_4G_LOW: u8 = 0x5B;
}

/// Register A bits.
pub mod reg_a {
    /// Update in progress (read-only).
    pub const UIP: u8 = 0x80;
    /// Divider control DV2..DV0.
    pub const DV_MASK: u8 = 0x70;
    /// DV2..DV0 = 11x holds the divider chain in reset.
    pub const DV_RESET: u8 = 0x60;
    /// Rate select RS3..RS0.
    pub const RS_MASK: u8 = 0x0F;
    /// What PC firmware programs: 32.768 kHz time base, 1024 Hz periodic rate.
    pub const DEFAULT: u8 = 0x26;
}

/// Register B bits.
pub mod reg_b {
    pub const SET: u8 = 0x80;
    pub const PIE: u8 = 0x40;
    pub const AIE: u8 = 0x20;
    pub const UIE: u8 = 0x10;
    pub const SQWE: u8 = 0x08;
    /// Data mode: binary (1) or BCD (0).
    pub const DM_BINARY: u8 = 0x04;
    pub const HOURS_24: u8 = 0x02;
    pub const DSE: u8 = 0x01;
    /// What PC firmware programs: BCD, 24-hour mode, no interrupts.
    pub const DEFAULT: u8 = HOURS_24;
}

/// Register C bits; PF, AF and UF sit at the bit positions of their enables in register B.
pub mod reg_c {
    pub const IRQF: u8 = 0x80;
    pub const PF: u8 = 0x40;
    pub const AF: u8 = 0x20;
    pub const UF: u8 = 0x10;
    pub const FLAGS: u8 = PF | AF | UF;
}

/// Register D bit 7: valid RAM and time (the battery is good).
pub const REG_D_VRT: u8 = 0x80;

/// Bit 7 of an hour register in 12-hour mode.
const HOUR_PM: u8 = 0x80;
/// Alarm bytes with both top bits set match any value.
const ALARM_DONT_CARE: u8 = 0xC0;

const NS_PER_SEC: i128 = 1_000_000_000;
const SECS_PER_DAY: u32 = 86_400;
/// The periodic interrupt and the update cycle are taps of a divider chain fed at 32.768 kHz.
const TIME_BASE_HZ: i128 = 32_768;
/// Releasing the divider chain from reset schedules the first update half a second later.
const RELEASE_TO_UPDATE_NS: i128 = NS_PER_SEC / 2;

/// Time registers in the order of [`TimeFields`]: the register index of each field.
const TIME_REGS: [u8; 8] =
    [reg::SECONDS, reg::MINUTES, reg::HOURS, reg::DAY_OF_WEEK, reg::DAY_OF_MONTH, reg::MONTH, reg::YEAR, reg::CENTURY];

/// The time registers' bytes, indexed like [`TIME_REGS`].
type TimeFields = [u8; 8];

/// The CMOS RTC of one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtc {
    /// Register index selected through the index port (bits 6:0).
    index: u8,
    nmi_masked: bool,
    /// CMOS bytes: general RAM and alarms always; the time registers only while frozen (SET or divider
    /// reset), when they hold exactly what the guest sees. Registers A..D live in the fields below.
    ram: [u8; 128],
    /// Register A bits 6:0 (UIP is computed).
    reg_a: u8,
    reg_b: u8,
    /// Register C flags PF/AF/UF (IRQF is computed).
    flags: u8,
    /// Time (ns, monotonic) at which the divider chain was at the start of a second: updates happen at
    /// `anchor_ns + k * 1 s` for k >= 1, periodic ticks at multiples of the period after it. i128 so that a
    /// release just after time 0 (anchor 500 ms earlier) and every sum below stay exact without overflow.
    anchor_ns: i128,
    /// Seconds (in the Unix timeline) the clock showed at `anchor_ns`; it shows `secs_at_anchor + k` after the
    /// k-th update. Meaningless while frozen.
    secs_at_anchor: i128,
    /// Guest-written day of the week minus the derived one, modulo 7.
    dow_offset: u8,
    /// Events are accounted up to this time; also the latest `now_ns` seen, so time never runs backwards.
    processed_ns: u64,
    /// IRQ 8 level (IRQF) after the last evaluation.
    line: bool,
    /// A rising edge of IRQ 8 not yet reported by `poll_irq`.
    edge_pending: bool,
}

impl Rtc {
    /// The RTC as firmware leaves it: running at `unix_seconds_at_boot` as of `now_ns`, register A 0x26,
    /// register B 0x02 (BCD, 24-hour), no flags, and the CMOS memory-size bytes describing the guest's RAM.
    pub fn new(unix_seconds_at_boot: u64, now_ns: u64, memory_below_4g_bytes: u64, memory_above_4g_bytes: u64) -> Self {
        let mut rtc = Rtc {
            index: 0,
            nmi_masked: false,
            ram: [0; 128],
            reg_a: reg_a::DEFAULT,
            reg_b: reg_b::DEFAULT,
            flags: 0,
            anchor_ns: i128::from(now_ns),
            secs_at_anchor: i128::from(unix_seconds_at_boot),
            dow_offset: 0,
            processed_ns: now_ns,
            line: false,
            edge_pending: false,
        };
        rtc.fill_memory_size(memory_below_4g_bytes, memory_above_4g_bytes);
        rtc
    }

    /// Guest read of `port`. Reading register C clears it, hence `&mut self`.
    pub fn read(&mut self, port: u16, now_ns: u64) -> u8 {
        match port {
            DATA_PORT => {
                self.advance(now_ns);
                self.read_register(self.index)
            }
            // INDEX_PORT is write-only on PCs; anything else is not ours.
            _ => 0xFF,
        }
    }

    /// Guest write of `value` to `port`.
    pub fn write(&mut self, port: u16, value: u8, now_ns: u64) {
        match port {
            INDEX_PORT => {
                self.index = value & 0x7F;
                self.nmi_masked = value & 0x80 != 0;
            }
            DATA_PORT => {
                self.advance(now_ns);
                self.write_register(self.index, value);
            }
            _ => {}
        }
    }

    /// Accounts for the periodic, alarm and update events due by `now_ns` and returns true if IRQ 8 had a
    /// rising edge since the last call (including edges caused by guest accesses in between): the caller
    /// then raises IRQ 8 (an edge on the PIC, or `set_irq` high then low on an edge-triggered I/O APIC pin).
    pub fn poll_irq(&mut self, now_ns: u64) -> bool {
        self.advance(now_ns);
        core::mem::take(&mut self.edge_pending)
    }

    /// When the next event that can raise IRQ 8 is due, for the hypervisor's timer; None if nothing can (no
    /// enabled source, or IRQ 8 is already high and only a guest access to register B or C can lower it). The
    /// answer changes with guest accesses, so ask again after each one. An unreported edge is due at once.
    pub fn next_event_ns(&self) -> Option<u64> {
        if self.edge_pending {
            return Some(self.processed_ns);
        }
        if self.line || self.divider_reset() {
            return None;
        }
        let now = i128::from(self.processed_ns);
        let mut next: Option<i128> = None;
        let mut consider = |t: i128| next = Some(next.map_or(t, |n: i128| n.min(t)));
        if self.reg_b & reg_b::PIE != 0
            && let Some(shift) = self.periodic_shift()
        {
            let tick = self.ticks(now, shift).saturating_add(1);
            // Tick j is due at the first whole ns at or after anchor + j * period.
            let num = tick.saturating_mul(NS_PER_SEC << shift);
            consider(self.anchor_ns.saturating_add(num.saturating_add(TIME_BASE_HZ - 1).div_euclid(TIME_BASE_HZ)));
        }
        if self.reg_b & reg_b::SET == 0 {
            let k = self.boundaries(now);
            if self.reg_b & reg_b::UIE != 0 {
                consider(self.boundary_ns(k.saturating_add(1)));
            }
            if self.reg_b & reg_b::AIE != 0
                && let Some(delta) = self.next_alarm_delta(self.secs_at_anchor.saturating_add(k))
            {
                consider(self.boundary_ns(k.saturating_add(i128::from(delta))));
            }
        }
        next.and_then(|t| u64::try_from(t).ok())
    }

    /// Bit 7 of the last index-port write.
    pub fn nmi_masked(&self) -> bool {
        self.nmi_masked
    }

    /// Host-side write of a general CMOS RAM byte (e.g. the CPU count SeaBIOS reads at 0x5F), keeping the
    /// PC/AT checksum valid. Returns false, writing nothing, for an index that is not general RAM.
    pub fn set_cmos_byte(&mut self, index: u8, value: u8) -> bool {
        if !is_general_ram(index) {
            return false;
        }
        if let Some(slot) = self.ram.get_mut(usize::from(index)) {
            *slot = value;
        }
        self.update_checksum();
        true
    }

    fn fill_memory_size(&mut self, below_4g: u64, above_4g: u64) {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        const UNIT_64K: u64 = 64 * KIB;
        let base_kib = (below_4g / KIB).min(640);
        let ext_kib = (below_4g.saturating_sub(MIB) / KIB).min(0xFFFF);
        let above_16m = (below_4g.saturating_sub(16 * MIB) / UNIT_64K).min(0xFFFF);
        let above_4g = (above_4g / UNIT_64K).min(0xFF_FFFF);
        let bytes = [
            (reg::BASE_MEM_LOW, base_kib, 2),
            (reg::EXT_MEM_LOW, ext_kib, 2),
            (reg::EXT_MEM2_LOW, ext_kib, 2),
            (reg::MEM_ABOVE_16M_LOW, above_16m, 2),
            (reg::MEM_ABOVE_4G_LOW, above_4g, 3),
        ];
        for (first, value, len) in bytes {
            for i in 0..len {
                let index = usize::from(first).saturating_add(i);
                if let Some(slot) = self.ram.get_mut(index) {
                    *slot = (value >> (8 * i)) as u8;
                }
            }
        }
        self.update_checksum();
    }

    /// PC/AT checksum: the 16-bit sum of bytes 0x10..=0x2D, stored big-endian at 0x2E/0x2F.
    fn update_checksum(&mut self) {
        let sum = self
            .ram
            .get(0x10..=0x2D)
            .map_or(0u16, |bytes| bytes.iter().fold(0u16, |sum, &byte| sum.wrapping_add(u16::from(byte))));
        let [high, low] = sum.to_be_bytes();
        let at = usize::from(reg::CHECKSUM_HIGH);
        if let Some(slot) = self.ram.get_mut(at) {
            *slot = high;
        }
        if let Some(slot) = self.ram.get_mut(at.saturating_add(1)) {
            *slot = low;
        }
    }

    fn read_register(&mut self, index: u8) -> u8 {
        match index {
            reg::A => self.reg_a | if self.uip() { reg_a::UIP } else { 0 },
            reg::B => self.reg_b,
            reg::C => {
                let value = self.reg_c();
                self.flags = 0;
                self.update_line();
                value
            }
            reg::D => REG_D_VRT,
            _ => match time_field(index) {
                Some(field) if !self.frozen() => self.encode_time(self.current_secs()).get(field).copied().unwrap_or(0),
                _ => self.ram.get(usize::from(index)).copied().unwrap_or(0xFF),
            },
        }
    }

    fn write_register(&mut self, index: u8, value: u8) {
        match index {
            reg::A => self.write_a(value),
            reg::B => self.write_b(value),
            // C and D are read-only.
            reg::C | reg::D => {}
            _ => {
                let is_time = time_field(index).is_some();
                if is_time && !self.frozen() {
                    // Running: apply the write to the current time at once (module docs).
                    self.snapshot();
                    self.set_ram(index, value);
                    self.load_time();
                } else {
                    self.set_ram(index, value);
                }
            }
        }
    }

    fn write_a(&mut self, value: u8) {
        let (was_frozen, was_reset) = (self.frozen(), self.divider_reset());
        if !was_frozen && value & reg_a::DV_RESET == reg_a::DV_RESET {
            self.snapshot();
        }
        self.reg_a = value & !reg_a::UIP;
        if was_reset && !self.divider_reset() {
            // The chain restarts now, so the first update comes half a second later.
            self.anchor_ns = i128::from(self.processed_ns) - RELEASE_TO_UPDATE_NS;
            if !self.frozen() {
                self.load_time();
            }
        }
    }

    fn write_b(&mut self, value: u8) {
        let was_frozen = self.frozen();
        let mut value = value;
        if value & reg_b::SET != 0 {
            value &= !reg_b::UIE;
            if !was_frozen {
                // Freeze the bytes in the format they were in when the updates stopped.
                self.snapshot();
            }
        }
        self.reg_b = value;
        if was_frozen && !self.frozen() {
            self.load_time();
        }
        self.update_line();
    }

    /// Register C as read: the flags and IRQF.
    fn reg_c(&self) -> u8 {
        self.flags | if self.irqf() { reg_c::IRQF } else { 0 }
    }

    fn irqf(&self) -> bool {
        self.flags & self.reg_b & reg_c::FLAGS != 0
    }

    fn update_line(&mut self) {
        let line = self.irqf();
        if line && !self.line {
            self.edge_pending = true;
        }
        self.line = line;
    }

    fn frozen(&self) -> bool {
        self.reg_b & reg_b::SET != 0 || self.divider_reset()
    }

    fn divider_reset(&self) -> bool {
        self.reg_a & reg_a::DV_RESET == reg_a::DV_RESET
    }

    fn uip(&self) -> bool {
        if self.frozen() {
            return false;
        }
        let phase = (i128::from(self.processed_ns) - self.anchor_ns).rem_euclid(NS_PER_SEC);
        phase >= NS_PER_SEC - i128::from(UIP_NS)
    }

    /// Periodic rate as a power of two: the frequency is `32768 >> shift` Hz; None for rate 0 (no interrupt).
    fn periodic_shift(&self) -> Option<u32> {
        match self.reg_a & reg_a::RS_MASK {
            0 => None,
            // Datasheet, 32.768 kHz time base: rate 1 is 256 Hz and rate 2 is 128 Hz.
            1 => Some(7),
            2 => Some(8),
            rate => Some(u32::from(rate) - 1),
        }
    }

    /// Periodic ticks since the anchor by time `t` (ns) at frequency `32768 >> shift` Hz.
    fn ticks(&self, t: i128, shift: u32) -> i128 {
        // (t - anchor) / period with period = 1e9 * 2^shift / 32768 ns, exact in integers. shift <= 14, and
        // |t - anchor| < 2^66, so the product stays far below i128::MAX.
        (t - self.anchor_ns).saturating_mul(TIME_BASE_HZ).div_euclid(NS_PER_SEC << shift)
    }

    /// Update boundaries passed by time `t` (ns): the k of the last update at or before `t`.
    fn boundaries(&self, t: i128) -> i128 {
        (t - self.anchor_ns).div_euclid(NS_PER_SEC)
    }

    fn boundary_ns(&self, k: i128) -> i128 {
        self.anchor_ns.saturating_add(k.saturating_mul(NS_PER_SEC))
    }

    fn current_secs(&self) -> i128 {
        self.secs_at_anchor.saturating_add(self.boundaries(i128::from(self.processed_ns)))
    }

    /// Brings the flags up to `now_ns`: periodic ticks, updates and alarms in (processed_ns, now_ns].
    fn advance(&mut self, now_ns: u64) {
        let now_ns = now_ns.max(self.processed_ns);
        if !self.divider_reset() {
            let (from, to) = (i128::from(self.processed_ns), i128::from(now_ns));
            let mut flags = 0;
            if let Some(shift) = self.periodic_shift()
                && self.ticks(to, shift) > self.ticks(from, shift)
            {
                flags |= reg_c::PF;
            }
            if self.reg_b & reg_b::SET == 0 {
                let (k0, k1) = (self.boundaries(from), self.boundaries(to));
                if k1 > k0 {
                    flags |= reg_c::UF;
                    let due = self.next_alarm_delta(self.secs_at_anchor.saturating_add(k0));
                    if due.is_some_and(|delta| i128::from(delta) <= k1 - k0) {
                        flags |= reg_c::AF;
                    }
                }
            }
            self.flags |= flags;
        }
        self.processed_ns = now_ns;
        self.update_line();
    }

    /// Seconds from time `secs` to the next second (strictly later) whose seconds, minutes and hours match the
    /// alarm registers, comparing register bytes in the current format as the chip does; None if no time
    /// ever matches (e.g. an alarm byte that is not a valid time in this format).
    fn next_alarm_delta(&self, secs: i128) -> Option<u32> {
        let alarm = |index: u8| self.ram.get(usize::from(index)).copied().unwrap_or(0);
        let (alarm_s, alarm_m, alarm_h) =
            (alarm(reg::SECONDS_ALARM), alarm(reg::MINUTES_ALARM), alarm(reg::HOURS_ALARM));
        let matches = |alarm: u8, value: u8| alarm & ALARM_DONT_CARE == ALARM_DONT_CARE || alarm == value;
        let sec_ok = |s: u32| matches(alarm_s, self.encode(s));
        let min_ok = |m: u32| matches(alarm_m, self.encode(m));
        let hour_ok = |h: u32| matches(alarm_h, self.encode_hour(h));
        if !(0..60).any(sec_ok) || !(0..60).any(min_ok) || !(0..24).any(hour_ok) {
            return None;
        }
        let start = secs.rem_euclid(i128::from(SECS_PER_DAY)) as u32;
        // The alarm repeats daily, so the answer lies within a day. Skipping whole hours and minutes that
        // cannot match bounds the loop to a few thousand steps, since every minute has a matching second.
        let mut t = start + 1;
        while t <= start + SECS_PER_DAY {
            let sod = t % SECS_PER_DAY;
            let (h, m, s) = (sod / 3600, sod / 60 % 60, sod % 60);
            if !hour_ok(h) {
                t += 3600 - sod % 3600;
            } else if !min_ok(m) {
                t += 60 - s;
            } else if !sec_ok(s) {
                t += 1;
            } else {
                return Some(t - start);
            }
        }
        None
    }

    /// A value 0..=99 in the current data mode.
    fn encode(&self, value: u32) -> u8 {
        let value = (value % 100) as u8;
        if self.reg_b & reg_b::DM_BINARY != 0 { value } else { ((value / 10) << 4) | (value % 10) }
    }

    fn decode(&self, byte: u8) -> u32 {
        if self.reg_b & reg_b::DM_BINARY != 0 {
            u32::from(byte)
        } else {
            // Digits above 9 are not BCD; weighting them anyway keeps the result bounded (<= 165).
            u32::from(byte >> 4) * 10 + u32::from(byte & 0x0F)
        }
    }

    /// Hour 0..=23 in the current data mode and 12/24-hour mode.
    fn encode_hour(&self, hour: u32) -> u8 {
        if self.reg_b & reg_b::HOURS_24 != 0 {
            return self.encode(hour);
        }
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        self.encode(h12) | if hour >= 12 { HOUR_PM } else { 0 }
    }

    fn decode_hour(&self, byte: u8) -> u32 {
        if self.reg_b & reg_b::HOURS_24 != 0 {
            return self.decode(byte).min(23);
        }
        let h12 = self.decode(byte & !HOUR_PM).clamp(1, 12);
        h12 % 12 + if byte & HOUR_PM != 0 { 12 } else { 0 }
    }

    /// The time registers showing `secs` in the current format.
    fn encode_time(&self, secs: i128) -> TimeFields {
        let days = secs.div_euclid(i128::from(SECS_PER_DAY));
        let sod = secs.rem_euclid(i128::from(SECS_PER_DAY)) as u32;
        let (year, month, day) = civil_from_days(days);
        let dow = (days + 4).rem_euclid(7) as u32; // 1970-01-01 was a Thursday; 0 = Sunday.
        let dow = (dow + u32::from(self.dow_offset)) % 7 + 1;
        [
            self.encode(sod % 60),
            self.encode(sod / 60 % 60),
            self.encode_hour(sod / 3600),
            self.encode(dow),
            self.encode(day),
            self.encode(month),
            self.encode(year.rem_euclid(100) as u32),
            self.encode(year.div_euclid(100).rem_euclid(100) as u32),
        ]
    }

    /// Freezes the current time into the time registers in RAM.
    fn snapshot(&mut self) {
        let fields = self.encode_time(self.current_secs());
        for (&index, value) in TIME_REGS.iter().zip(fields) {
            self.set_ram(index, value);
        }
    }

    /// Takes the time from the time registers in RAM (clamping invalid values) and runs on from it.
    fn load_time(&mut self) {
        let byte = |index: u8| self.ram.get(usize::from(index)).copied().unwrap_or(0);
        let century = self.decode(byte(reg::CENTURY)).min(99);
        let year = i128::from(century * 100 + self.decode(byte(reg::YEAR)).min(99));
        let month = self.decode(byte(reg::MONTH)).clamp(1, 12);
        let day = self.decode(byte(reg::DAY_OF_MONTH)).clamp(1, days_in_month(year, month));
        let hour = self.decode_hour(byte(reg::HOURS));
        let minute = self.decode(byte(reg::MINUTES)).min(59);
        let second = self.decode(byte(reg::SECONDS)).min(59);
        let guest_dow = self.decode(byte(reg::DAY_OF_WEEK)).clamp(1, 7);
        let days = days_from_civil(year, month, day);
        let derived_dow = (days + 4).rem_euclid(7) as u32 + 1;
        self.dow_offset = ((guest_dow + 7 - derived_dow) % 7) as u8;
        let secs = days * i128::from(SECS_PER_DAY) + i128::from(hour * 3600 + minute * 60 + second);
        // Keep the chain's phase: the clock shows `secs` until the next update boundary.
        self.secs_at_anchor = secs - self.boundaries(i128::from(self.processed_ns));
    }

    fn set_ram(&mut self, index: u8, value: u8) {
        if let Some(slot) = self.ram.get_mut(usize::from(index)) {
            *slot = value;
        }
    }
}

/// Position of `index` in [`TIME_REGS`], if it is a time register.
fn time_field(index: u8) -> Option<usize> {
    TIME_REGS.iter().position(|&r| r == index)
}

fn is_general_ram(index: u8) -> bool {
    (reg::RAM_FIRST..=0x7F).contains(&index) && index != reg::CENTURY
}

fn is_leap(year: i128) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i128, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i128, month: u32, day: u32) -> i128 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i128::from((month + 9) % 12); // March = 0
    let doy = (153 * mp + 2) / 5 + i128::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i128) -> (i128, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i128::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn rtc_at(unix: u64) -> Rtc {
        Rtc::new(unix, 0, 256 * MIB, 0)
    }

    fn read_reg(rtc: &mut Rtc, index: u8, now: u64) -> u8 {
        rtc.write(INDEX_PORT, index, now);
        rtc.read(DATA_PORT, now)
    }

    fn write_reg(rtc: &mut Rtc, index: u8, value: u8, now: u64) {
        rtc.write(INDEX_PORT, index, now);
        rtc.write(DATA_PORT, value, now);
    }

    /// (century, year, month, day, hours, minutes, seconds, day of week) as raw register bytes.
    fn clock(rtc: &mut Rtc, now: u64) -> [u8; 8] {
        [
            reg::CENTURY,
            reg::YEAR,
            reg::MONTH,
            reg::DAY_OF_MONTH,
            reg::HOURS,
            reg::MINUTES,
            reg::SECONDS,
            reg::DAY_OF_WEEK,
        ]
        .map(|index| read_reg(rtc, index, now))
    }

    #[test]
    fn time_reads_in_bcd_by_default() {
        // 2024-03-15 13:45:07 UTC, a Friday.
        let mut rtc = rtc_at(1_710_510_307);
        assert_eq!(clock(&mut rtc, 0), [0x20, 0x24, 0x03, 0x15, 0x13, 0x45, 0x07, 0x06]);
        assert_eq!(read_reg(&mut rtc, reg::B, 0), 0x02);
        assert_eq!(read_reg(&mut rtc, reg::A, 0), 0x26);
        assert_eq!(read_reg(&mut rtc, reg::D, 0), 0x80);
    }

    #[test]
    fn time_reads_in_binary_when_register_b_selects_it() {
        let mut rtc = rtc_at(1_710_510_307);
        write_reg(&mut rtc, reg::B, reg_b::HOURS_24 | reg_b::DM_BINARY, 0);
        assert_eq!(clock(&mut rtc, 0), [20, 24, 3, 15, 13, 45, 7, 6]);
    }

    #[test]
    fn twelve_hour_mode_sets_the_pm_bit_and_shows_midnight_and_noon_as_12() {
        let mut rtc = rtc_at(1_710_510_307);
        write_reg(&mut rtc, reg::B, 0, 0);
        assert_eq!(read_reg(&mut rtc, reg::HOURS, 0), 0x81, "13:45 is 1 PM");
        write_reg(&mut rtc, reg::B, reg_b::DM_BINARY, 0);
        assert_eq!(read_reg(&mut rtc, reg::HOURS, 0), 0x81);
        let mut rtc = rtc_at(1_710_462_600); // 00:30
        write_reg(&mut rtc, reg::B, 0, 0);
        assert_eq!(read_reg(&mut rtc, reg::HOURS, 0), 0x12, "half past midnight is 12 AM");
        let mut rtc = rtc_at(1_751_630_400); // 12:00
        write_reg(&mut rtc, reg::B, 0, 0);
        assert_eq!(read_reg(&mut rtc, reg::HOURS, 0), 0x92, "noon is 12 PM");
    }

    #[test]
    fn time_advances_61_seconds_across_minute_hour_and_day_boundaries() {
        // 2024-03-15 23:59:30, Friday.
        let mut rtc = rtc_at(1_710_547_170);
        assert_eq!(clock(&mut rtc, 0), [0x20, 0x24, 0x03, 0x15, 0x23, 0x59, 0x30, 0x06]);
        assert_eq!(clock(&mut rtc, 29 * SEC + SEC / 2), [0x20, 0x24, 0x03, 0x15, 0x23, 0x59, 0x59, 0x06]);
        assert_eq!(clock(&mut rtc, 30 * SEC), [0x20, 0x24, 0x03, 0x16, 0x00, 0x00, 0x00, 0x07]);
        assert_eq!(clock(&mut rtc, 61 * SEC), [0x20, 0x24, 0x03, 0x16, 0x00, 0x00, 0x31, 0x07]);
        assert_eq!(clock(&mut rtc, 91 * SEC), [0x20, 0x24, 0x03, 0x16, 0x00, 0x01, 0x01, 0x07]);
    }

    #[test]
    fn date_rolls_over_at_month_ends_leap_years_and_centuries() {
        // (unix time of 23:59:59 on the last-but-one day, date one second later: century, year, month, day)
        let cases = [
            (1_709_164_799u64, [0x20, 0x24, 0x02, 0x29]), // 2024-02-28: leap year
            (1_677_628_799, [0x20, 0x23, 0x03, 0x01]),    // 2023-02-28: common year
            (951_782_399, [0x20, 0x00, 0x02, 0x29]),      // 2000-02-28: leap (divisible by 400)
            (4_107_542_399, [0x21, 0x00, 0x03, 0x01]),    // 2100-02-28: not leap (divisible by 100)
            (1_714_521_599, [0x20, 0x24, 0x05, 0x01]),    // 2024-04-30: 30-day month
            (946_684_799, [0x20, 0x00, 0x01, 0x01]),      // 1999-12-31: new year and century
        ];
        for (unix, date) in cases {
            let mut rtc = rtc_at(unix);
            let before = clock(&mut rtc, 0);
            assert_eq!(&before[4..7], &[0x23, 0x59, 0x59], "{unix}");
            let after = clock(&mut rtc, SEC);
            assert_eq!(&after[..4], &date, "{unix}");
            assert_eq!(&after[4..7], &[0, 0, 0], "{unix}");
            assert_eq!(after[7], before[7] % 7 + 1, "day of week advances, {unix}");
        }
        let mut rtc = rtc_at(946_684_799);
        assert_eq!(clock(&mut rtc, 0)[..4], [0x19, 0x99, 0x12, 0x31]);
    }

    #[test]
    fn uip_is_set_only_in_the_last_244_us_before_each_update() {
        let mut rtc = rtc_at(1_710_510_307);
        assert_eq!(read_reg(&mut rtc, reg::A, 0), 0x26);
        assert_eq!(read_reg(&mut rtc, reg::A, SEC - UIP_NS - 1), 0x26);
        assert_eq!(read_reg(&mut rtc, reg::A, SEC - UIP_NS), 0xA6);
        assert_eq!(read_reg(&mut rtc, reg::SECONDS, SEC - 1), 0x07, "registers change only at the update");
        assert_eq!(read_reg(&mut rtc, reg::A, SEC - 1), 0xA6);
        assert_eq!(read_reg(&mut rtc, reg::A, SEC), 0x26);
        assert_eq!(read_reg(&mut rtc, reg::SECONDS, SEC), 0x08);
        assert_eq!(read_reg(&mut rtc, reg::A, 5 * SEC - 100_000), 0xA6);
        write_reg(&mut rtc, reg::B, reg_b::SET | reg_b::HOURS_24, 5 * SEC - 100_000);
        assert_eq!(read_reg(&mut rtc, reg::A, 5 * SEC - 50_000), 0x26, "SET clears UIP");
    }

    #[test]
    fn register_a_keeps_bits_6_to_0_and_ignores_writes_to_uip() {
        let mut rtc = rtc_at(0);
        write_reg(&mut rtc, reg::A, 0xAF, 0);
        assert_eq!(read_reg(&mut rtc, reg::A, 0), 0x2F);
        write_reg(&mut rtc, reg::C, 0xFF, 0);
        write_reg(&mut rtc, reg::D, 0x00, 0);
        assert_eq!(read_reg(&mut rtc, reg::C, 0), 0);
        assert_eq!(read_reg(&mut rtc, reg::D, 0), 0x80, "C and D are read-only");
    }

    #[test]
    fn set_freezes_the_clock_and_the_written_time_runs_on_after_set_is_cleared() {
        let mut rtc = rtc_at(1_710_510_307);
        let t = 10 * SEC + SEC / 4;
        write_reg(&mut rtc, reg::B, reg_b::SET | reg_b::HOURS_24, t);
        assert_eq!(read_reg(&mut rtc, reg::SECONDS, t + 5 * SEC), 0x17, "frozen at 13:45:17");
        // Linux-style: write 1999-12-31 23:59:58 (a Friday) in BCD.
        for (index, value) in [
            (reg::SECONDS, 0x58),
            (reg::MINUTES, 0x59),
            (reg::HOURS, 0x23),
            (reg::DAY_OF_WEEK, 0x06),
            (reg::DAY_OF_MONTH, 0x31),
            (reg::MONTH, 0x12),
            (reg::YEAR, 0x99),
            (reg::CENTURY, 0x19),
        ] {
            write_reg(&mut rtc, index, value, t + 6 * SEC);
        }
        assert_eq!(clock(&mut rtc, t + 7 * SEC), [0x19, 0x99, 0x12, 0x31, 0x23, 0x59, 0x58, 0x06]);
        write_reg(&mut rtc, reg::B, reg_b::HOURS_24, t + 8 * SEC);
        assert_eq!(read_reg(&mut rtc, reg::SECONDS, 19 * SEC - 1), 0x58);
        // The chain kept its phase: the next update is at the next whole second since creation.
        assert_eq!(read_reg(&mut rtc, reg::SECONDS, 19 * SEC), 0x59);
        assert_eq!(clock(&mut rtc, 20 * SEC), [0x20, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x07]);
        assert_eq!(clock(&mut rtc, 3620 * SEC), [0x20, 0x00, 0x01, 0x01, 0x01, 0x00, 0x00, 0x07]);
    }

    #[test]
    fn setting_set_clears_uie() {
        let mut rtc = rtc_at(0);
        write_reg(&mut rtc, reg::B, reg_b::SET | reg_b::UIE | reg_b::PIE | reg_b::HOURS_24, 0);
        assert_eq!(read_reg(&mut rtc, reg::B, 0), reg_b::SET | reg_b::PIE | reg_b::HOURS_24);
    }

    #[test]
    fn set_suppresses_update_and_alarm_flags_but_not_the_periodic_flag() {
        let mut rtc = rtc_at(0);
        write_reg(&mut rtc, reg::SECONDS_ALARM, 0xC0, 0);
        write_reg(&mut rtc, reg::MINUTES_ALARM, 0xC0, 0);
        write_reg(&mut rtc, reg::HOURS_ALARM, 0xC0, 0);
        write_reg(&mut rtc, reg::B, reg_b::SET | reg_b::HOURS_24, 0);
        assert_eq!(read_reg(&mut rtc, reg::C, 3 * SEC), reg_c::PF);
    }

    #[test]
    fn a_time_register_written_while_running_takes_effect_at_once() {
        let mut rtc = rtc_at(1_710_510_307);
        write_reg(&mut rtc, reg::MINUTES, 0x10, SEC / 2);
        assert_eq!(clock(&mut rtc, SEC / 2), [0x20, 0x24, 0x03, 0x15, 0x13, 0x10, 0x07, 0x06]);
        assert_eq!(read_reg(&mut rtc, reg::SECONDS, SEC), 0x08);
        // An invalid value is clamped: 0x7A BCD seconds becomes 59.
        write_reg(&mut rtc, reg::SECONDS, 0x7A, SEC);
        assert_eq!(read_reg(&mut rtc, reg::SECONDS, SEC), 0x59);
    }

    #[test]
    fn divider_reset_freezes_the_clock_and_release_updates_half_a_second_later() {
        let mut rtc = rtc_at(1_710_510_307);
        write_reg(&mut rtc, reg::A, 0x66, SEC / 4);
        assert_eq!(read_reg(&mut rtc, reg::SECONDS, 10 * SEC), 0x07);
        assert_eq!(read_reg(&mut rtc, reg::A, 10 * SEC - 1), 0x66, "no UIP in reset");
        write_reg(&mut rtc, reg::SECONDS, 0x30, 10 * SEC);
        write_reg(&mut rtc, reg::A, 0x26, 10 * SEC);
        assert_eq!(read_reg(&mut rtc, reg::SECONDS, 10 * SEC + SEC / 2 - 1), 0x30);
        assert_eq!(read_reg(&mut rtc, reg::SECONDS, 10 * SEC + SEC / 2), 0x31);
        assert_eq!(read_reg(&mut rtc, reg::C, 10 * SEC + SEC / 2) & reg_c::UF, reg_c::UF);
    }

    #[test]
    fn periodic_interrupt_at_rate_6_raises_1024_flags_per_second() {
        let mut rtc = rtc_at(0);
        write_reg(&mut rtc, reg::A, 0x26, 0);
        write_reg(&mut rtc, reg::B, reg_b::PIE | reg_b::HOURS_24, 0);
        let (mut irqs, mut flags) = (0u32, 0u32);
        let mut now = 0;
        while now < SEC {
            now += 50_000;
            if rtc.poll_irq(now) {
                irqs += 1;
                let c = read_reg(&mut rtc, reg::C, now);
                assert_eq!(c & (reg_c::IRQF | reg_c::PF), reg_c::IRQF | reg_c::PF);
                flags += 1;
            }
        }
        assert!((1023..=1025).contains(&flags), "flags {flags}");
        assert_eq!(irqs, flags);
    }

    #[test]
    fn next_event_ns_names_the_next_periodic_tick() {
        let mut rtc = rtc_at(0);
        assert_eq!(rtc.next_event_ns(), None, "no interrupt enabled");
        write_reg(&mut rtc, reg::B, reg_b::PIE | reg_b::HOURS_24, 0);
        assert_eq!(rtc.next_event_ns(), Some(976_563), "1024 Hz: 976562.5 ns, rounded up");
        assert!(!rtc.poll_irq(976_562));
        assert!(rtc.poll_irq(976_563));
        assert_eq!(rtc.next_event_ns(), None, "IRQ 8 stays high until register C is read");
        read_reg(&mut rtc, reg::C, 976_563);
        assert_eq!(rtc.next_event_ns(), Some(1_953_125));
        write_reg(&mut rtc, reg::B, reg_b::UIE | reg_b::HOURS_24, 1_953_124);
        assert_eq!(rtc.next_event_ns(), Some(SEC));
    }

    #[test]
    fn rates_1_and_2_run_at_256_and_128_hz_as_the_datasheet_specifies() {
        for (rate, hz) in [(1u8, 256u32), (2, 128), (3, 8192), (15, 2)] {
            let mut rtc = rtc_at(0);
            write_reg(&mut rtc, reg::A, 0x20 | rate, 0);
            write_reg(&mut rtc, reg::B, reg_b::PIE | reg_b::HOURS_24, 0);
            let mut count = 0;
            while let Some(t) = rtc.next_event_ns().filter(|&t| t <= SEC) {
                assert!(rtc.poll_irq(t));
                read_reg(&mut rtc, reg::C, t);
                count += 1;
            }
            assert_eq!(count, hz, "rate {rate}");
        }
    }

    #[test]
    fn register_c_reports_flags_with_irqf_and_clears_on_read() {
        let mut rtc = rtc_at(0);
        write_reg(&mut rtc, reg::B, reg_b::UIE | reg_b::HOURS_24, 0);
        let c = read_reg(&mut rtc, reg::C, SEC);
        assert_eq!(c, reg_c::IRQF | reg_c::PF | reg_c::UF, "PF is set even with PIE clear");
        assert_eq!(read_reg(&mut rtc, reg::C, SEC), 0);
        assert!(rtc.poll_irq(SEC), "the edge happened before the read");
        assert!(!rtc.poll_irq(SEC));
    }

    #[test]
    fn flags_without_their_enable_do_not_raise_irq8_until_enabled() {
        let mut rtc = rtc_at(0);
        assert!(!rtc.poll_irq(2 * SEC));
        write_reg(&mut rtc, reg::B, reg_b::UIE | reg_b::HOURS_24, 2 * SEC);
        assert!(rtc.poll_irq(2 * SEC), "enabling a source whose flag is set raises IRQ 8");
    }

    #[test]
    fn one_edge_per_interrupt_until_register_c_is_read() {
        let mut rtc = rtc_at(0);
        write_reg(&mut rtc, reg::B, reg_b::UIE | reg_b::HOURS_24, 0);
        assert!(rtc.poll_irq(SEC));
        assert!(!rtc.poll_irq(2 * SEC), "IRQF still set: no new edge");
        read_reg(&mut rtc, reg::C, 2 * SEC);
        assert!(rtc.poll_irq(3 * SEC));
    }

    #[test]
    fn alarm_with_dont_care_hours_fires_every_hour_at_the_given_minute_and_second() {
        // 2024-03-15 13:45:07.
        let mut rtc = rtc_at(1_710_510_307);
        write_reg(&mut rtc, reg::SECONDS_ALARM, 0x30, 0);
        write_reg(&mut rtc, reg::MINUTES_ALARM, 0x15, 0);
        write_reg(&mut rtc, reg::HOURS_ALARM, 0xFF, 0);
        write_reg(&mut rtc, reg::B, reg_b::AIE | reg_b::HOURS_24, 0);
        // Next 14:15:30 is 30 min 23 s away.
        let due = (30 * 60 + 23) * SEC;
        assert_eq!(rtc.next_event_ns(), Some(due));
        assert!(!rtc.poll_irq(due - 1));
        assert_eq!(read_reg(&mut rtc, reg::C, due - 1) & reg_c::AF, 0);
        assert!(rtc.poll_irq(due));
        assert_eq!(read_reg(&mut rtc, reg::C, due), reg_c::IRQF | reg_c::PF | reg_c::AF | reg_c::UF);
        assert_eq!(rtc.next_event_ns(), Some(due + 3600 * SEC));
        // A poll that comes late still sees an alarm that matched in between.
        assert!(rtc.poll_irq(due + 3700 * SEC));
        assert_ne!(read_reg(&mut rtc, reg::C, due + 3700 * SEC) & reg_c::AF, 0);
    }

    #[test]
    fn alarm_that_can_never_match_never_fires() {
        let mut rtc = rtc_at(0);
        write_reg(&mut rtc, reg::SECONDS_ALARM, 0x60, 0); // not a BCD second
        write_reg(&mut rtc, reg::B, reg_b::AIE | reg_b::HOURS_24, 0);
        assert_eq!(rtc.next_event_ns(), None);
        assert!(!rtc.poll_irq(200_000 * SEC));
    }

    #[test]
    fn alarm_compares_hours_in_12_hour_format_with_the_pm_bit() {
        // 2024-03-15 13:45:07; alarm 1:45:10 PM in 12-hour BCD.
        let mut rtc = rtc_at(1_710_510_307);
        write_reg(&mut rtc, reg::B, 0, 0);
        write_reg(&mut rtc, reg::SECONDS_ALARM, 0x10, 0);
        write_reg(&mut rtc, reg::MINUTES_ALARM, 0x45, 0);
        write_reg(&mut rtc, reg::HOURS_ALARM, 0x81, 0);
        write_reg(&mut rtc, reg::B, reg_b::AIE, 0);
        assert_eq!(rtc.next_event_ns(), Some(3 * SEC));
    }

    #[test]
    fn cmos_memory_bytes_describe_256_mib() {
        let mut rtc = Rtc::new(0, 0, 256 * MIB, 0);
        let bytes =
            [0x15, 0x16, 0x17, 0x18, 0x30, 0x31, 0x34, 0x35, 0x5B, 0x5C, 0x5D].map(|i| read_reg(&mut rtc, i, 0));
        // 640 KiB base; 255 MiB extended capped at 0xFFFF KiB; (256 - 16) MiB / 64 KiB = 0x0F00; none above 4 GiB.
        assert_eq!(bytes, [0x80, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x0F, 0x00, 0x00, 0x00]);
    }

    #[test]
    fn cmos_memory_bytes_describe_6_gib_split_around_the_pci_hole() {
        let mut rtc = Rtc::new(0, 0, 3 * GIB, 3 * GIB);
        let bytes =
            [0x15, 0x16, 0x17, 0x18, 0x30, 0x31, 0x34, 0x35, 0x5B, 0x5C, 0x5D].map(|i| read_reg(&mut rtc, i, 0));
        // (3072 - 16) MiB / 64 KiB = 0xBF00; 3 GiB / 64 KiB = 0xC000.
        assert_eq!(bytes, [0x80, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0xBF, 0x00, 0xC0, 0x00]);
    }

    #[test]
    fn cmos_memory_bytes_saturate_and_small_memory_does_not_underflow() {
        let mut rtc = Rtc::new(0, 0, 512 * 1024, u64::MAX);
        let bytes = [0x15, 0x16, 0x17, 0x18, 0x34, 0x35, 0x5B, 0x5C, 0x5D].map(|i| read_reg(&mut rtc, i, 0));
        assert_eq!(bytes, [0x00, 0x02, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF]);
        let mut rtc = Rtc::new(0, 0, 8 * MIB, 0);
        assert_eq!([0x17, 0x18].map(|i| read_reg(&mut rtc, i, 0)), [0x00, 0x1C], "7 MiB = 7168 KiB");
    }

    #[test]
    fn pc_at_checksum_covers_bytes_0x10_to_0x2d_and_follows_host_writes() {
        let mut rtc = Rtc::new(0, 0, 256 * MIB, 0);
        let sum = |rtc: &mut Rtc| (0x10..=0x2D).map(|i| u16::from(read_reg(rtc, i, 0))).sum::<u16>();
        let stored = |rtc: &mut Rtc| u16::from_be_bytes([read_reg(rtc, 0x2E, 0), read_reg(rtc, 0x2F, 0)]);
        assert_eq!(stored(&mut rtc), sum(&mut rtc));
        assert!(rtc.set_cmos_byte(0x10, 0x40));
        assert_eq!(stored(&mut rtc), sum(&mut rtc));
        assert!(rtc.set_cmos_byte(0x5F, 3));
        assert_eq!(read_reg(&mut rtc, 0x5F, 0), 3);
        assert!(!rtc.set_cmos_byte(reg::CENTURY, 0));
        assert!(!rtc.set_cmos_byte(reg::A, 0));
        assert!(!rtc.set_cmos_byte(0x80, 0));
    }

    #[test]
    fn general_ram_round_trips_and_index_bit_7_is_the_nmi_mask() {
        let mut rtc = rtc_at(0);
        for index in (0x0Eu8..=0x7F).filter(|&i| i != reg::CENTURY) {
            write_reg(&mut rtc, index, index ^ 0xA5, 0);
        }
        for index in (0x0Eu8..=0x7F).filter(|&i| i != reg::CENTURY) {
            assert_eq!(read_reg(&mut rtc, index, 0), index ^ 0xA5, "index {index:#x}");
        }
        rtc.write(INDEX_PORT, 0x80 | 0x40, 0);
        assert!(rtc.nmi_masked());
        assert_eq!(rtc.read(DATA_PORT, 0), 0x40 ^ 0xA5, "index 0xC0 wraps to 0x40");
        rtc.write(INDEX_PORT, 0x40, 0);
        assert!(!rtc.nmi_masked());
        assert_eq!(rtc.read(INDEX_PORT, 0), 0xFF, "the index port is write-only");
        assert_eq!(rtc.read(0x72, 0), 0xFF);
    }

    #[test]
    fn alarm_registers_read_back_what_was_written() {
        let mut rtc = rtc_at(0);
        for (index, value) in [(reg::SECONDS_ALARM, 0x12), (reg::MINUTES_ALARM, 0xC3), (reg::HOURS_ALARM, 0xFF)] {
            write_reg(&mut rtc, index, value, 0);
            assert_eq!(read_reg(&mut rtc, index, 0), value);
        }
    }

    #[test]
    fn a_clock_that_goes_backwards_stands_still() {
        let mut rtc = rtc_at(1_710_510_307);
        assert_eq!(read_reg(&mut rtc, reg::SECONDS, 5 * SEC), 0x12);
        assert_eq!(read_reg(&mut rtc, reg::SECONDS, SEC), 0x12);
    }

    #[test]
    fn civil_date_conversion_round_trips() {
        for days in (-800_000i128..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_797), (2024, 3, 15));
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

    #[test]
    fn random_accesses_never_panic_and_keep_register_invariants() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut rtc = Rtc::new(u64::MAX, 0, u64::MAX, u64::MAX);
        let mut rtc2 = Rtc::new(0, 0, 0, 0);
        let (mut now, mut irqs) = (0u64, 0u32);
        for step in 0..200_000u32 {
            let r = rng.next();
            let v = rng.next();
            now = match r % 1024 {
                // Rare jumps anywhere (the clock then stands still until it catches up) and small steps back.
                0 => rng.next() >> 1,
                1..=64 => now.saturating_sub(v % SEC),
                _ => now.saturating_add(v % (SEC / 100)),
            };
            let rtc = if step % 2 == 0 { &mut rtc } else { &mut rtc2 };
            let value = (v >> 8) as u8;
            // Bias the index towards the registers (0x00..=0x0D) and the century.
            let index = match (v >> 16) % 4 {
                0 => (v >> 24) as u8,
                1 => reg::CENTURY,
                _ => ((v >> 24) % 14) as u8,
            };
            let port = [INDEX_PORT, DATA_PORT, (v >> 32) as u16][((v >> 40) % 3) as usize];
            match (r >> 8) % 6 {
                0 => rtc.write(port, index, now),
                1 => rtc.write(port, value, now),
                2 => {
                    let got = rtc.read(port, now);
                    if port == INDEX_PORT {
                        assert_eq!(got, 0xFF);
                    }
                }
                3 => irqs += u32::from(rtc.poll_irq(now)),
                4 => write_reg(rtc, reg::B, value, now),
                _ => {
                    if let Some(t) = rtc.next_event_ns() {
                        assert!(t >= rtc.processed_ns);
                    }
                }
            }
            // Inspect without guest accesses, which would move the index the random writes rely on.
            assert_eq!(rtc.read_register(reg::D), 0x80);
            assert_eq!(rtc.reg_c() & 0x0F, 0);
            assert_eq!(rtc.reg_a & reg_a::UIP, 0);
            assert!(rtc.dow_offset < 7);
            let fields = rtc.encode_time(rtc.current_secs());
            assert!(fields.iter().all(|&byte| byte <= 0x99), "{fields:x?}");
        }
        assert!(irqs > 100, "irqs {irqs}");
    }
}
