//! A register-level model of the Intel 8254 Programmable Interval Timer of a PC as a guest
//! sees it: counters 0-2 at I/O ports 0x40-0x42, the control word register at 0x43, and the
//! bits of system control port B (0x61) that belong to counter 2 (GATE2 in, OUT2 out). Counter
//! 0's OUT drives IRQ 0; counter 2 feeds the speaker and is what Linux (and this hypervisor)
//! use to calibrate the TSC. It touches no hardware and reads no clock: every call gets the
//! current monotonic time in nanoseconds, and counts are derived from it.
//!
//! Modelled, with the datasheet's names (Intel 8254, order no. 231164):
//! - Control words: SC (counter select), RW (counter latch command, LSB, MSB, LSB then MSB),
//!   M2-M0 (modes 0-5, with 6 and 7 aliasing 2 and 3), BCD; the read-back command (SC = 11)
//!   latching count and/or status of any set of counters, status byte with OUTPUT and NULL
//!   COUNT; the count latch holding its value until read; the LSB/MSB read and write
//!   flip-flops.
//! - Mode 0 (interrupt on terminal count), mode 2 (rate generator) and mode 3 (square wave) as
//!   the datasheet's waveforms describe them, including GATE (counting disabled while low;
//!   in modes 2 and 3 a low GATE forces OUT high and a rising GATE reloads), a new count in
//!   modes 2 and 3 taking effect only at the end of the current period, and mode 0's "writing
//!   the first byte of a two-byte count stops counting and sets OUT low".
//! - Modes 1 (hardware retriggerable one-shot), 4 (software triggered strobe) and 5 (hardware
//!   triggered strobe) in their waveform: 1 and 5 start on a rising GATE (so only counter 2,
//!   whose gate software controls, can ever trigger; counters 0 and 1 have GATE tied high).
//! - A count of 0 means 65536 (binary).
//!
//! Time: the counters tick at [`PIT_HZ`] on an absolute tick scale, tick(t) = floor(t * PIT_HZ
//! / 1e9) in 128-bit arithmetic, so a count and its rising edges are exact functions of time
//! with no accumulated rounding. Times that go backwards are treated as the latest time seen.
//!
//! IRQ 0: rather than an `Effects { irq0_edge }` per access (OUT0 changes with time, not
//! with accesses), [`Pit8254::irq0_ticks`] reports how many rising edges OUT0 made since the
//! previous call, including any made by a control word (e.g. mode 0's low OUT going high when
//! the guest switches to mode 2), and [`Pit8254::next_irq0_ns`] says when the next one is due
//! so the hypervisor can arm a host timer. The caller pulses IRQ 0 on the PIC per edge or once.
//!
//! Simplifications, and why:
//! - Power-on state: the datasheet leaves mode, count and OUT undefined. Each counter starts
//!   as if programmed with mode 3, LSB then MSB, and no count yet: nothing counts, OUT is
//!   high, NULL COUNT is set. So no IRQ 0 arrives until the guest (or its firmware) programs
//!   counter 0, where QEMU would start an 18.2 Hz tick.
//! - A count is loaded when written, not on the next CLK pulse (at most one 838 ns tick early),
//!   and a GATE edge acts at once rather than on the next CLK.
//! - BCD counting is not implemented: the BCD bit is stored and reported in the status byte,
//!   but counters count in binary. No PC operating system uses BCD.
//! - Mode 3 with an odd count: the count read back follows QEMU's formula (N minus 2t mod N)
//!   rather than the datasheet's N-1 load; OUT is high for (N+1)/2 ticks and low for (N-1)/2,
//!   as specified. Counts of 1 in modes 2 and 3 are illegal per the datasheet; here OUT then
//!   stays low (mode 2) or high (mode 3) and produces no edges.
//! - Port 0x61: bits 0-3 read back as written (bit 0 is GATE2, bit 1 the speaker data
//!   enable, bits 2-3 the parity/channel check disables); bit 4 is the DRAM refresh request
//!   toggle, which here flips on every read rather than every 15.09 us, so that any loop
//!   polling it for a change makes progress (many BIOS and OS delay loops do); bit 5 is OUT2;
//!   bits 6 and 7 (channel check, parity error) read 0. Port 0x43 reads as 0xFF (the control
//!   word register cannot be read on the 8254).

/// Input clock of the PC's PIT: 14.31818 MHz / 12.
pub const PIT_HZ: u64 = 1_193_182;
/// Counter 0 (IRQ 0).
pub const COUNTER0_PORT: u16 = 0x40;
/// Counter 1 (DRAM refresh on the original PC; free for guests here).
pub const COUNTER1_PORT: u16 = 0x41;
/// Counter 2 (speaker, TSC calibration).
pub const COUNTER2_PORT: u16 = 0x42;
/// Control word register (write only).
pub const CONTROL_PORT: u16 = 0x43;
/// System control port B, whose GATE2/OUT2 bits belong to counter 2.
pub const PORT_B: u16 = 0x61;
/// The ISA IRQ counter 0's OUT drives.
pub const PIT_IRQ: u8 = 0;

use core::num::NonZeroU64;

const NS_PER_SEC: u128 = 1_000_000_000;
/// A count of 0 is the maximum, 2^16 (binary counting).
const MAX_COUNT: u32 = 0x1_0000;

/// Control word fields (port 0x43).
pub mod control {
    /// SC1:SC0 in bits 7:6; 3 selects the read-back command.
    pub const SC_SHIFT: u8 = 6;
    pub const SC_READ_BACK: u8 = 3;
    /// RW1:RW0 in bits 5:4.
    pub const RW_SHIFT: u8 = 4;
    pub const RW_LATCH: u8 = 0;
    pub const RW_LSB: u8 = 1;
    pub const RW_MSB: u8 = 2;
    pub const RW_LSB_MSB: u8 = 3;
    /// M2:M0 in bits 3:1.
    pub const MODE_SHIFT: u8 = 1;
    pub const BCD: u8 = 0x01;
    /// Read-back command: bit 5 clear latches counts, bit 4 clear latches status, bits 3:1
    /// select counters 2, 1, 0.
    pub const RB_NO_COUNT: u8 = 0x20;
    pub const RB_NO_STATUS: u8 = 0x10;
    pub const RB_COUNTER0: u8 = 0x02;
}

/// Status byte bits (read-back command); bits 5:0 repeat the control word.
pub mod status {
    pub const OUTPUT: u8 = 0x80;
    pub const NULL_COUNT: u8 = 0x40;
}

/// Port 0x61 bits.
pub mod port_b {
    pub const GATE2: u8 = 0x01;
    pub const SPEAKER_DATA: u8 = 0x02;
    /// The bits a write stores (3:0).
    pub const WRITABLE: u8 = 0x0F;
    pub const REFRESH: u8 = 0x10;
    pub const OUT2: u8 = 0x20;
}

/// Absolute PIT tick at `ns`: the number of whole input clocks since time 0.
pub fn ns_to_ticks(ns: u64) -> u64 {
    // u64 * 1_193_182 < 2^85: no overflow in u128.
    let ticks = u128::from(ns).saturating_mul(u128::from(PIT_HZ)) / NS_PER_SEC;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// The first nanosecond at which `ns_to_ticks` reaches `tick` (saturating at u64::MAX).
pub fn ticks_to_ns(tick: u64) -> u64 {
    let hz = u128::from(PIT_HZ);
    let ns = u128::from(tick).saturating_mul(NS_PER_SEC).div_ceil(hz);
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// The low 16 bits of `value`: what a 16-bit counting element holds.
const fn low16(value: u64) -> u16 {
    (value & 0xFFFF) as u16
}

/// One counter. Its counting element runs in "segments": from absolute tick `start`, having
/// already counted `base` ticks before (modes 0 and 4 pause while GATE is low), with count `n`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Counter {
    /// M2:M0 as written (0..=7); `mode()` folds 6 and 7 onto 2 and 3.
    mode_bits: u8,
    /// RW1:RW0 as written (1..=3).
    access: u8,
    bcd: bool,
    /// Count register (CR): the last count written, 1..=65536.
    cr: u32,
    /// The count the counting element is running with, 1..=65536.
    n: u32,
    /// A count has been written since the control word.
    armed: bool,
    /// Modes 1 and 5: a GATE rising edge has loaded the count and started it.
    triggered: bool,
    /// Modes 2 and 3: `cr` waits for the end of the current period, at elapsed tick
    /// `switch_at`.
    pending: bool,
    switch_at: u64,
    /// The counting element is counting.
    running: bool,
    start: u64,
    base: u64,
    /// What a read returns while the counting element holds still (no count yet, GATE low in
    /// modes 2 and 3, or modes 1 and 5 before a trigger).
    idle_value: u16,
    gate: bool,
    null_count: bool,
    write_msb_next: bool,
    write_lsb: u8,
    read_msb_next: bool,
    /// Output latch from a counter latch command, and how many bytes of it are left to read.
    latch: Option<u16>,
    latch_left: u8,
    status_latch: Option<u8>,
}

impl Counter {
    const fn new(gate: bool) -> Self {
        Counter {
            mode_bits: 3,
            access: control::RW_LSB_MSB,
            bcd: false,
            cr: MAX_COUNT,
            n: MAX_COUNT,
            armed: false,
            triggered: false,
            pending: false,
            switch_at: 0,
            running: false,
            start: 0,
            base: 0,
            idle_value: 0,
            gate,
            null_count: true,
            write_msb_next: false,
            write_lsb: 0,
            read_msb_next: false,
            latch: None,
            latch_left: 0,
            status_latch: None,
        }
    }

    /// The mode in effect: M2 is "don't care" for modes 2 and 3 (datasheet: X10, X11).
    fn mode(&self) -> u8 {
        match self.mode_bits & 7 {
            6 => 2,
            7 => 3,
            m => m,
        }
    }

    /// The running count as a divisor the type system knows is not 0 (`n` is 1..=65536).
    fn count(&self) -> NonZeroU64 {
        NonZeroU64::new(u64::from(self.n)).unwrap_or(NonZeroU64::MIN)
    }

    /// Ticks counted by the counting element at absolute tick `t`.
    fn elapsed(&self, t: u64) -> u64 {
        if self.running { self.base.saturating_add(t.saturating_sub(self.start)) } else { self.base }
    }

    /// Modes 2 and 3: loads a waiting count once the period in which it was written is over.
    fn settle(&mut self, t: u64) {
        if self.pending && self.running && self.elapsed(t) >= self.switch_at {
            self.start = self.start.saturating_add(self.switch_at);
            self.base = 0;
            self.n = self.cr;
            self.pending = false;
            self.null_count = false;
        }
    }

    /// Absolute tick at which a waiting count is loaded.
    fn switch_tick(&self) -> Option<u64> {
        (self.pending && self.running).then(|| self.start.saturating_add(self.switch_at))
    }

    /// The counting element at `t` (settled).
    fn value(&self, t: u64) -> u16 {
        let k = self.elapsed(t);
        let nz = self.count();
        let n = nz.get();
        // The counting element is 16 bits wide: 65536 reads as 0, and modes 0, 1, 4 and 5
        // wrap through 0 to 0xFFFF and keep counting, as the datasheet says.
        match self.mode() {
            0 | 4 if self.armed => low16(n.wrapping_sub(k)),
            1 | 5 if self.triggered => low16(n.wrapping_sub(k)),
            2 if self.armed && self.running => low16(n.saturating_sub(k % nz)),
            3 if self.armed && self.running => low16(n.saturating_sub((k % nz).saturating_mul(2) % nz)),
            _ => self.idle_value,
        }
    }

    /// OUT at `t` (settled).
    fn out(&self, t: u64) -> bool {
        let k = self.elapsed(t);
        let nz = self.count();
        let n = nz.get();
        match self.mode() {
            // Low from the control word until terminal count.
            0 => self.armed && k >= n,
            // Low from the trigger until terminal count.
            1 => !self.triggered || k >= n,
            // Low for the one clock at count 1 of each period.
            2 => !(self.armed && self.running) || k % nz != n.saturating_sub(1),
            // High for the first ceil(N/2) clocks of each period.
            3 => !(self.armed && self.running) || k % nz < n.div_ceil(2),
            // Low for the one clock after terminal count.
            4 => !self.armed || k != n,
            _ => !self.triggered || k != n,
        }
    }

    /// Rising edges of OUT in (a, b], absolute ticks, within the current segment.
    fn edges(&self, a: u64, b: u64) -> u64 {
        let (ka, kb) = (self.elapsed(a), self.elapsed(b));
        let nz = self.count();
        let n = nz.get();
        let once = |at: u64| u64::from(ka < at && at <= kb);
        match self.mode() {
            0 if self.armed => once(n),
            1 if self.triggered => once(n),
            2 | 3 if self.armed && self.running && n >= 2 => (kb / nz).saturating_sub(ka / nz),
            4 if self.armed => once(n.saturating_add(1)),
            5 if self.triggered => once(n.saturating_add(1)),
            _ => 0,
        }
    }

    /// The absolute tick of the first rising edge of OUT after tick `t` (settled).
    fn next_edge(&self, t: u64) -> Option<u64> {
        if !self.running {
            return None;
        }
        let k = self.elapsed(t);
        let nz = self.count();
        let n = nz.get();
        let at = match self.mode() {
            0 if self.armed => n,
            1 if self.triggered => n,
            2 | 3 if self.armed && n >= 2 => (k / nz).saturating_add(1).saturating_mul(n),
            4 if self.armed => n.saturating_add(1),
            5 if self.triggered => n.saturating_add(1),
            _ => return None,
        };
        (at > k).then(|| self.start.saturating_add(at.saturating_sub(self.base)))
    }

    fn status(&self, t: u64) -> u8 {
        let mut s = (self.access & 3) << control::RW_SHIFT | (self.mode_bits & 7) << control::MODE_SHIFT;
        if self.bcd {
            s |= control::BCD;
        }
        if self.out(t) {
            s |= status::OUTPUT;
        }
        if self.null_count {
            s |= status::NULL_COUNT;
        }
        s
    }

    /// A control word for this counter: counting stops until a count is written, OUT goes
    /// to its initial state (low in mode 0, high otherwise), and the flip-flops and latches
    /// reset (datasheet: "all Control Logic is reset").
    fn program(&mut self, value: u8, t: u64) {
        self.idle_value = self.value(t);
        self.mode_bits = (value >> control::MODE_SHIFT) & 7;
        self.access = (value >> control::RW_SHIFT) & 3;
        self.bcd = value & control::BCD != 0;
        self.armed = false;
        self.triggered = false;
        self.pending = false;
        self.running = false;
        self.base = 0;
        self.start = t;
        self.null_count = true;
        self.write_msb_next = false;
        self.read_msb_next = false;
        self.latch = None;
        self.latch_left = 0;
        self.status_latch = None;
    }

    fn write_count_byte(&mut self, value: u8, t: u64) {
        match self.access {
            control::RW_LSB => self.load(u32::from(value), t),
            control::RW_MSB => self.load(u32::from(value) << 8, t),
            _ if !self.write_msb_next => {
                self.write_lsb = value;
                self.write_msb_next = true;
                if self.mode() == 0 {
                    // Mode 0: the first byte stops counting and sets OUT low at once.
                    self.idle_value = self.value(t);
                    self.armed = false;
                    self.running = false;
                }
            }
            _ => {
                self.write_msb_next = false;
                self.load(u32::from(self.write_lsb) | u32::from(value) << 8, t);
            }
        }
    }

    /// A complete count written to CR.
    fn load(&mut self, count: u32, t: u64) {
        self.cr = if count == 0 { MAX_COUNT } else { count.min(MAX_COUNT) };
        match self.mode() {
            // Software triggered: the count is loaded and counting (re)starts, GATE permitting.
            0 | 4 => {
                self.n = self.cr;
                self.armed = true;
                self.base = 0;
                self.start = t;
                self.running = self.gate;
                self.null_count = false;
            }
            // Hardware triggered: armed; the count is loaded by the next GATE rising edge.
            1 | 5 => {
                self.armed = true;
                self.null_count = true;
            }
            // Modes 2 and 3: the first count starts at once; a new count while counting
            // waits for the end of the current period (datasheet: "does not affect the current
            // period").
            _ => {
                if self.armed && self.running {
                    if !self.pending {
                        let k = self.elapsed(t);
                        let nz = self.count();
                        self.switch_at = (k / nz).saturating_add(1).saturating_mul(nz.get());
                        self.pending = true;
                    }
                    self.null_count = true;
                } else {
                    self.n = self.cr;
                    self.armed = true;
                    self.pending = false;
                    self.base = 0;
                    self.start = t;
                    self.running = self.gate;
                    self.idle_value = low16(u64::from(self.n));
                    self.null_count = false;
                }
            }
        }
    }

    fn set_gate(&mut self, high: bool, t: u64) {
        if high == self.gate {
            return;
        }
        match self.mode() {
            0 | 4 => {
                // GATE low suspends counting; high resumes it where it was.
                if high {
                    self.start = t;
                    self.running = self.armed;
                } else {
                    self.base = self.elapsed(t);
                    self.running = false;
                }
            }
            1 | 5 => {
                // A rising edge (re)triggers: CR is loaded and counting starts over.
                if high && self.armed {
                    self.n = self.cr;
                    self.triggered = true;
                    self.base = 0;
                    self.start = t;
                    self.running = true;
                    self.null_count = false;
                }
            }
            _ => {
                // Modes 2, 3: low stops counting (OUT high); a rising edge reloads from CR.
                if high {
                    if self.armed {
                        self.n = self.cr;
                        self.pending = false;
                        self.base = 0;
                        self.start = t;
                        self.running = true;
                        self.null_count = false;
                    }
                } else {
                    self.idle_value = self.value(t);
                    self.running = false;
                }
            }
        }
        self.gate = high;
    }

    fn latch_count(&mut self, t: u64) {
        // A second latch command before the first value is read is ignored.
        if self.latch.is_none() {
            self.latch = Some(self.value(t));
            self.latch_left = if self.access == control::RW_LSB_MSB { 2 } else { 1 };
        }
    }

    fn latch_status(&mut self, t: u64) {
        if self.status_latch.is_none() {
            self.status_latch = Some(self.status(t));
        }
    }

    /// A guest read: a latched status first, then a latched count, else the live count, in
    /// the byte order the RW field selects.
    fn read(&mut self, t: u64) -> u8 {
        if let Some(s) = self.status_latch.take() {
            return s;
        }
        if let Some(latched) = self.latch {
            self.latch_left = self.latch_left.saturating_sub(1);
            if self.latch_left == 0 {
                self.latch = None;
            }
            return self.pick_byte(latched);
        }
        let live = self.value(t);
        self.pick_byte(live)
    }

    fn pick_byte(&mut self, value: u16) -> u8 {
        let [lsb, msb] = value.to_le_bytes();
        match self.access {
            control::RW_LSB => lsb,
            control::RW_MSB => msb,
            _ => {
                let msb_now = self.read_msb_next;
                self.read_msb_next = !msb_now;
                if msb_now { msb } else { lsb }
            }
        }
    }
}

/// The PIT and the counter 2 bits of port 0x61. Plain data, so `new` is `const`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pit8254 {
    counters: [Counter; 3],
    /// The latest absolute tick seen (time never runs backwards inside the model).
    clock: u64,
    /// Counter 0's rising edges have been counted up to this tick ...
    irq0_until: u64,
    /// ... and this many are waiting for `irq0_ticks`.
    irq0_pending: u64,
    /// Port 0x61 bits 3:0 as last written.
    port_b: u8,
    refresh: bool,
}

impl Default for Pit8254 {
    fn default() -> Self {
        Self::new()
    }
}

impl Pit8254 {
    /// Power-on state (see the module documentation): nothing counting, GATE2 low.
    pub const fn new() -> Self {
        Pit8254 {
            counters: [Counter::new(true), Counter::new(true), Counter::new(false)],
            clock: 0,
            irq0_until: 0,
            irq0_pending: 0,
            port_b: 0,
            refresh: false,
        }
    }

    /// Guest read of `port` at time `now_ns`; ports that are not ours read 0xFF.
    pub fn read(&mut self, port: u16, now_ns: u64) -> u8 {
        let t = self.sync(now_ns);
        match port {
            COUNTER0_PORT..=COUNTER2_PORT => {
                let index = usize::from(port.wrapping_sub(COUNTER0_PORT));
                match self.counters.get_mut(index) {
                    Some(c) => {
                        c.settle(t);
                        c.read(t)
                    }
                    None => 0xFF,
                }
            }
            PORT_B => {
                self.refresh = !self.refresh;
                let mut value = self.port_b & port_b::WRITABLE;
                if self.refresh {
                    value |= port_b::REFRESH;
                }
                if let Some(c) = self.counters.get_mut(2) {
                    c.settle(t);
                    if c.out(t) {
                        value |= port_b::OUT2;
                    }
                }
                value
            }
            _ => 0xFF,
        }
    }

    /// Guest write of `value` to `port` at time `now_ns`; other ports are ignored.
    pub fn write(&mut self, port: u16, value: u8, now_ns: u64) {
        let t = self.sync(now_ns);
        match port {
            COUNTER0_PORT..=COUNTER2_PORT => {
                let index = usize::from(port.wrapping_sub(COUNTER0_PORT));
                self.change(index, t, |c| c.write_count_byte(value, t));
            }
            CONTROL_PORT => self.write_control(value, t),
            PORT_B => {
                self.port_b = value & port_b::WRITABLE;
                let gate = value & port_b::GATE2 != 0;
                self.change(2, t, |c| c.set_gate(gate, t));
            }
            _ => {}
        }
    }

    /// Rising edges of counter 0's OUT since the previous call (or power-on), up to `now_ns`.
    pub fn irq0_ticks(&mut self, now_ns: u64) -> u64 {
        self.sync(now_ns);
        core::mem::take(&mut self.irq0_pending)
    }

    /// When counter 0's OUT next rises, for the hypervisor's timer; `None` if it never will
    /// without a guest access (not counting, or a one-shot already past terminal count). If
    /// edges are waiting for `irq0_ticks`, the time they were last counted up to, which is in
    /// the past: the timer should fire at once.
    pub fn next_irq0_ns(&self) -> Option<u64> {
        if self.irq0_pending > 0 {
            return Some(ticks_to_ns(self.irq0_until));
        }
        self.counters.first()?.next_edge(self.irq0_until).map(ticks_to_ns)
    }

    fn write_control(&mut self, value: u8, t: u64) {
        let select = value >> control::SC_SHIFT;
        if select == control::SC_READ_BACK {
            for (index, c) in self.counters.iter_mut().enumerate() {
                if value & (control::RB_COUNTER0 << index) == 0 {
                    continue;
                }
                c.settle(t);
                if value & control::RB_NO_COUNT == 0 {
                    c.latch_count(t);
                }
                if value & control::RB_NO_STATUS == 0 {
                    c.latch_status(t);
                }
            }
            return;
        }
        let index = usize::from(select);
        if (value >> control::RW_SHIFT) & 3 == control::RW_LATCH {
            if let Some(c) = self.counters.get_mut(index) {
                c.settle(t);
                c.latch_count(t);
            }
        } else {
            self.change(index, t, |c| c.program(value, t));
        }
    }

    /// Applies a state change to counter `index` at tick `t`, recording a rising edge of OUT0
    /// that the change itself causes.
    fn change(&mut self, index: usize, t: u64, f: impl FnOnce(&mut Counter)) {
        let Some(c) = self.counters.get_mut(index) else {
            return;
        };
        c.settle(t);
        let before = c.out(t);
        f(c);
        c.settle(t);
        if index == 0 && !before && c.out(t) {
            self.irq0_pending = self.irq0_pending.saturating_add(1);
        }
    }

    /// Advances the model's clock to `now_ns` (never backwards) and counts counter 0's rising
    /// edges up to it; every entry point starts here, so edges are counted under the state
    /// that produced them, before any change.
    fn sync(&mut self, now_ns: u64) -> u64 {
        let t = ns_to_ticks(now_ns).max(self.clock);
        self.clock = t;
        if t <= self.irq0_until {
            return t;
        }
        let mut from = self.irq0_until;
        let mut edges = 0u64;
        if let Some(c) = self.counters.first_mut() {
            c.settle(from);
            if let Some(switch) = c.switch_tick().filter(|&s| s <= t) {
                edges = edges.saturating_add(c.edges(from, switch));
                c.settle(switch);
                from = switch;
            }
            edges = edges.saturating_add(c.edges(from, t));
        }
        self.irq0_pending = self.irq0_pending.saturating_add(edges);
        self.irq0_until = t;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const SEC: u64 = 1_000_000_000;

    /// Counter 0 programmed the way Linux sets up its periodic tick: control word, LSB, MSB.
    fn program(p: &mut Pit8254, counter: u8, mode: u8, count: u16, now: u64) {
        p.write(CONTROL_PORT, counter << 6 | 0x30 | mode << 1, now);
        let [lsb, msb] = count.to_le_bytes();
        p.write(COUNTER0_PORT + u16::from(counter), lsb, now);
        p.write(COUNTER0_PORT + u16::from(counter), msb, now);
    }

    fn read_count(p: &mut Pit8254, counter: u8, now: u64) -> u16 {
        let port = COUNTER0_PORT + u16::from(counter);
        let lsb = p.read(port, now);
        let msb = p.read(port, now);
        u16::from_le_bytes([lsb, msb])
    }

    fn latched_count(p: &mut Pit8254, counter: u8, now: u64) -> u16 {
        p.write(CONTROL_PORT, counter << 6, now);
        read_count(p, counter, now)
    }

    /// Edges of IRQ 0 collected every `step` ns over (from, to].
    fn collect(p: &mut Pit8254, from: u64, to: u64, step: u64) -> u64 {
        let mut total = 0;
        let mut now = from;
        while now < to {
            now = (now + step).min(to);
            total += p.irq0_ticks(now);
        }
        total
    }

    #[test]
    fn power_on_counters_are_idle_and_raise_no_irq0() {
        let mut p = Pit8254::new();
        assert_eq!(p, Pit8254::default());
        assert_eq!(p.irq0_ticks(10 * SEC), 0);
        assert_eq!(p.next_irq0_ns(), None);
        // Status: OUT high, NULL COUNT, LSB/MSB, mode 3.
        p.write(CONTROL_PORT, 0xE2, 10 * SEC);
        assert_eq!(p.read(COUNTER0_PORT, 10 * SEC), 0xF6);
        assert_eq!(p.read(PORT_B, 10 * SEC) & 0x2F, 0x20);
    }

    #[test]
    fn tick_conversions_round_so_that_ticks_to_ns_is_the_first_ns_of_a_tick() {
        assert_eq!(ns_to_ticks(SEC), PIT_HZ);
        assert_eq!(ns_to_ticks(0), 0);
        assert_eq!(ns_to_ticks(838), 0);
        assert_eq!(ns_to_ticks(839), 1);
        for tick in [1u64, 2, 11_932, 65_536, PIT_HZ, 123_456_789] {
            let ns = ticks_to_ns(tick);
            assert_eq!(ns_to_ticks(ns), tick);
            assert_eq!(ns_to_ticks(ns - 1), tick - 1);
        }
        assert_eq!(ticks_to_ns(u64::MAX), u64::MAX);
        assert_eq!(ns_to_ticks(u64::MAX), 22_010_322_987_356_910);
    }

    #[test]
    fn mode2_with_count_11932_gives_100_hz_irq0_over_one_second() {
        let mut p = Pit8254::new();
        program(&mut p, 0, 2, 11_932, 0);
        let edges = collect(&mut p, 0, SEC, MS);
        assert!((99..=101).contains(&edges), "{edges} edges");
        // Collected in one call, the count is the same.
        let mut q = Pit8254::new();
        program(&mut q, 0, 2, 11_932, 0);
        assert_eq!(q.irq0_ticks(SEC), edges);
    }

    #[test]
    fn mode2_edges_fall_exactly_on_multiples_of_the_count() {
        let mut p = Pit8254::new();
        program(&mut p, 0, 2, 1000, 0);
        assert_eq!(p.irq0_ticks(ticks_to_ns(1000) - 1), 0);
        assert_eq!(p.irq0_ticks(ticks_to_ns(1000)), 1);
        assert_eq!(p.irq0_ticks(ticks_to_ns(5000) - 1), 3);
        assert_eq!(p.irq0_ticks(ticks_to_ns(5000)), 1);
    }

    #[test]
    fn mode2_counter_reads_decrease_from_the_count_and_reload() {
        let mut p = Pit8254::new();
        program(&mut p, 0, 2, 1000, 0);
        assert_eq!(latched_count(&mut p, 0, 0), 1000);
        assert_eq!(latched_count(&mut p, 0, ticks_to_ns(1)), 999);
        let mut last = 1000;
        for tick in (10..1000).step_by(10) {
            let v = latched_count(&mut p, 0, ticks_to_ns(tick));
            assert!(v < last, "{v} after {last}");
            assert_eq!(v, 1000 - tick as u16);
            last = v;
        }
        // Count 1 is the tick with OUT low; then the reload.
        assert_eq!(latched_count(&mut p, 0, ticks_to_ns(999)), 1);
        assert_eq!(latched_count(&mut p, 0, ticks_to_ns(1000)), 1000);
    }

    #[test]
    fn mode2_out_is_low_for_exactly_one_clock_per_period() {
        let mut p = Pit8254::new();
        program(&mut p, 0, 2, 100, 0);
        let status_at = |p: &mut Pit8254, tick: u64| {
            p.write(CONTROL_PORT, 0xE2, ticks_to_ns(tick));
            p.read(COUNTER0_PORT, ticks_to_ns(tick)) & status::OUTPUT != 0
        };
        assert!(status_at(&mut p, 0));
        assert!(status_at(&mut p, 98));
        assert!(!status_at(&mut p, 99));
        assert!(status_at(&mut p, 100));
        assert!(!status_at(&mut p, 199));
    }

    #[test]
    fn mode3_square_wave_is_high_half_low_half_and_edges_once_per_period() {
        let mut p = Pit8254::new();
        program(&mut p, 2, 3, 100, 0);
        p.write(PORT_B, port_b::GATE2, 0);
        let out2 = |p: &mut Pit8254, tick: u64| p.read(PORT_B, ticks_to_ns(tick)) & port_b::OUT2 != 0;
        assert!(out2(&mut p, 0));
        assert!(out2(&mut p, 49));
        assert!(!out2(&mut p, 50));
        assert!(!out2(&mut p, 99));
        assert!(out2(&mut p, 100));
        // Odd count: high (N+1)/2, low (N-1)/2.
        let mut q = Pit8254::new();
        program(&mut q, 2, 3, 5, 0);
        q.write(PORT_B, port_b::GATE2, 0);
        let pattern: Vec<bool> = (0..10).map(|t| out2(&mut q, t)).collect();
        assert_eq!(pattern, [true, true, true, false, false, true, true, true, false, false]);
        // Counter 0 in mode 3 with count 0 (65536): the PC BIOS's 18.2 Hz tick.
        let mut r = Pit8254::new();
        program(&mut r, 0, 3, 0, 0);
        assert_eq!(collect(&mut r, 0, SEC, 7 * MS), 18);
    }

    #[test]
    fn mode3_counts_down_by_two() {
        let mut p = Pit8254::new();
        program(&mut p, 0, 3, 100, 0);
        assert_eq!(latched_count(&mut p, 0, ticks_to_ns(1)), 98);
        assert_eq!(latched_count(&mut p, 0, ticks_to_ns(10)), 80);
        assert_eq!(latched_count(&mut p, 0, ticks_to_ns(60)), 80);
    }

    #[test]
    fn mode0_one_shot_raises_out_at_terminal_count_with_exactly_one_edge() {
        let mut p = Pit8254::new();
        p.write(CONTROL_PORT, 0x30, 0);
        p.write(CONTROL_PORT, 0xE2, 0);
        // Mode 0: OUT low right after the control word.
        assert_eq!(p.read(COUNTER0_PORT, 0) & (status::OUTPUT | status::NULL_COUNT), status::NULL_COUNT);
        p.write(COUNTER0_PORT, 0x10, 0);
        p.write(COUNTER0_PORT, 0x27, 0); // 10000
        assert_eq!(p.next_irq0_ns(), Some(ticks_to_ns(10_000)));
        assert_eq!(p.irq0_ticks(ticks_to_ns(10_000) - 1), 0);
        assert_eq!(p.irq0_ticks(ticks_to_ns(10_000)), 1);
        assert_eq!(p.next_irq0_ns(), None);
        // The counter wraps and keeps counting; OUT stays high.
        assert_eq!(latched_count(&mut p, 0, ticks_to_ns(10_001)), 0xFFFF);
        assert_eq!(collect(&mut p, ticks_to_ns(10_001), 5 * SEC, 3 * MS), 0);
    }

    #[test]
    fn mode0_first_byte_of_a_new_count_stops_counting_and_drops_out() {
        let mut p = Pit8254::new();
        program(&mut p, 0, 0, 100, 0);
        assert_eq!(p.irq0_ticks(ticks_to_ns(200)), 1);
        p.write(COUNTER0_PORT, 50, ticks_to_ns(200));
        p.write(CONTROL_PORT, 0xE2, ticks_to_ns(300));
        assert_eq!(p.read(COUNTER0_PORT, ticks_to_ns(300)) & status::OUTPUT, 0);
        p.write(COUNTER0_PORT, 0, ticks_to_ns(300));
        assert_eq!(p.irq0_ticks(ticks_to_ns(349)), 0);
        assert_eq!(p.irq0_ticks(ticks_to_ns(350)), 1);
    }

    #[test]
    fn a_control_word_that_raises_a_low_out0_counts_as_an_edge() {
        let mut p = Pit8254::new();
        program(&mut p, 0, 0, 1000, 0);
        // OUT0 is low (mode 0, counting); switching to mode 2 sets it high.
        p.write(CONTROL_PORT, 0x34, ticks_to_ns(10));
        assert_eq!(p.next_irq0_ns(), Some(ticks_to_ns(10)));
        assert_eq!(p.irq0_ticks(ticks_to_ns(10)), 1);
        assert_eq!(p.next_irq0_ns(), None);
    }

    #[test]
    fn latch_command_freezes_the_count_until_both_bytes_are_read() {
        let mut p = Pit8254::new();
        program(&mut p, 0, 2, 50_000, 0);
        p.write(CONTROL_PORT, 0x00, ticks_to_ns(1234));
        // A second latch before reading is ignored.
        p.write(CONTROL_PORT, 0x00, ticks_to_ns(2000));
        assert_eq!(read_count(&mut p, 0, ticks_to_ns(30_000)), 50_000 - 1234);
        // Released: reads are live again.
        assert_eq!(read_count(&mut p, 0, ticks_to_ns(30_000)), 20_000);
    }

    #[test]
    fn lsb_msb_access_alternates_for_writes_and_reads_and_lsb_or_msb_only_use_one_byte() {
        let mut p = Pit8254::new();
        p.write(CONTROL_PORT, 0x74, 0); // counter 1, LSB then MSB, mode 2
        p.write(COUNTER1_PORT, 0x34, 0);
        p.write(COUNTER1_PORT, 0x12, 0);
        assert_eq!(p.read(COUNTER1_PORT, 0), 0x34);
        assert_eq!(p.read(COUNTER1_PORT, 0), 0x12);
        p.write(CONTROL_PORT, 0x54, 0); // LSB only
        p.write(COUNTER1_PORT, 0x80, 0);
        assert_eq!(p.read(COUNTER1_PORT, 0), 0x80);
        assert_eq!(p.read(COUNTER1_PORT, ticks_to_ns(1)), 0x7F);
        let t = ticks_to_ns(10);
        p.write(CONTROL_PORT, 0x64, t); // MSB only: count 0x0200
        p.write(COUNTER1_PORT, 0x02, t);
        assert_eq!(p.read(COUNTER1_PORT, t), 0x02);
        p.write(CONTROL_PORT, 0x40, ticks_to_ns(11));
        assert_eq!(p.read(COUNTER1_PORT, ticks_to_ns(50)), 0x01);
        // A control word resets the write flip-flop mid-sequence.
        let t = ticks_to_ns(100);
        p.write(CONTROL_PORT, 0x74, t);
        p.write(COUNTER1_PORT, 0xAA, t);
        p.write(CONTROL_PORT, 0x74, t);
        p.write(COUNTER1_PORT, 0x00, t);
        p.write(COUNTER1_PORT, 0x01, t);
        assert_eq!(read_count(&mut p, 1, t), 0x0100);
        // Reads alternate LSB, MSB even when the count changes in between.
        assert_eq!(p.read(COUNTER1_PORT, ticks_to_ns(101)), 0xFF);
        assert_eq!(p.read(COUNTER1_PORT, ticks_to_ns(102)), 0x00);
    }

    #[test]
    fn channel2_calibration_via_port_0x61_sees_out2_rise_after_count_over_pit_hz() {
        // Linux's pit_calibrate_tsc / native_pit_calibrate: gate high and speaker off, counter
        // 2 in mode 0 with LSB/MSB, then poll port 0x61 bit 5.
        let mut p = Pit8254::new();
        let t0 = 5 * SEC;
        let b = p.read(PORT_B, t0);
        p.write(PORT_B, (b & !port_b::SPEAKER_DATA) | port_b::GATE2, t0);
        p.write(CONTROL_PORT, 0xB0, t0);
        let count: u16 = 11_932; // ~10 ms
        p.write(COUNTER2_PORT, count as u8, t0);
        p.write(COUNTER2_PORT, (count >> 8) as u8, t0);
        let due = t0 + u64::from(count) * SEC / PIT_HZ;
        let mut now = t0;
        let mut polls = 0;
        while p.read(PORT_B, now) & port_b::OUT2 == 0 {
            now += 1_000;
            polls += 1;
            assert!(polls < 1_000_000);
        }
        assert!(now >= due && now <= due + 2_000, "rose at {now}, due {due}");
        // Counter 2 raises no IRQ 0.
        assert_eq!(p.irq0_ticks(now), 0);
        assert_eq!(p.read(PORT_B, now) & port_b::GATE2, port_b::GATE2);
    }

    #[test]
    fn gate2_low_holds_mode0_counting_and_high_resumes_it() {
        let mut p = Pit8254::new();
        program(&mut p, 2, 0, 1000, 0);
        // GATE2 is low after power-on: the count is loaded but does not run.
        assert_eq!(latched_count(&mut p, 2, ticks_to_ns(500)), 1000);
        p.write(PORT_B, port_b::GATE2, ticks_to_ns(500));
        assert_eq!(latched_count(&mut p, 2, ticks_to_ns(800)), 700);
        p.write(PORT_B, 0, ticks_to_ns(800));
        assert_eq!(latched_count(&mut p, 2, ticks_to_ns(5000)), 700);
        p.write(PORT_B, port_b::GATE2, ticks_to_ns(5000));
        assert_eq!(p.read(PORT_B, ticks_to_ns(5699)) & port_b::OUT2, 0);
        assert_ne!(p.read(PORT_B, ticks_to_ns(5700)) & port_b::OUT2, 0);
    }

    #[test]
    fn gate2_low_forces_mode2_out_high_and_a_rising_gate_reloads() {
        let mut p = Pit8254::new();
        p.write(PORT_B, port_b::GATE2, 0);
        program(&mut p, 2, 2, 100, 0);
        assert_eq!(latched_count(&mut p, 2, ticks_to_ns(40)), 60);
        p.write(PORT_B, 0, ticks_to_ns(40));
        assert_eq!(latched_count(&mut p, 2, ticks_to_ns(99)), 60);
        assert_ne!(p.read(PORT_B, ticks_to_ns(99)) & port_b::OUT2, 0);
        p.write(PORT_B, port_b::GATE2, ticks_to_ns(200));
        assert_eq!(latched_count(&mut p, 2, ticks_to_ns(200)), 100);
        assert_eq!(latched_count(&mut p, 2, ticks_to_ns(210)), 90);
    }

    #[test]
    fn mode1_one_shot_starts_on_a_gate2_rising_edge() {
        let mut p = Pit8254::new();
        program(&mut p, 2, 1, 100, 0);
        assert_ne!(p.read(PORT_B, ticks_to_ns(500)) & port_b::OUT2, 0);
        p.write(PORT_B, port_b::GATE2, ticks_to_ns(500));
        assert_eq!(p.read(PORT_B, ticks_to_ns(599)) & port_b::OUT2, 0);
        assert_ne!(p.read(PORT_B, ticks_to_ns(600)) & port_b::OUT2, 0);
        // Retrigger.
        p.write(PORT_B, 0, ticks_to_ns(700));
        p.write(PORT_B, port_b::GATE2, ticks_to_ns(700));
        assert_eq!(p.read(PORT_B, ticks_to_ns(750)) & port_b::OUT2, 0);
    }

    #[test]
    fn mode4_strobes_out0_low_for_one_clock_after_terminal_count() {
        let mut p = Pit8254::new();
        program(&mut p, 0, 4, 100, 0);
        assert_eq!(p.next_irq0_ns(), Some(ticks_to_ns(101)));
        assert_eq!(p.irq0_ticks(ticks_to_ns(100)), 0);
        assert_eq!(p.irq0_ticks(ticks_to_ns(101)), 1);
        assert_eq!(p.irq0_ticks(10 * SEC), 0);
    }

    #[test]
    fn modes_1_and_5_never_trigger_on_counter0_whose_gate_is_tied_high() {
        for mode in [1u8, 5] {
            let mut p = Pit8254::new();
            program(&mut p, 0, mode, 100, 0);
            assert_eq!(p.irq0_ticks(SEC), 0);
            assert_eq!(p.next_irq0_ns(), None);
        }
    }

    #[test]
    fn read_back_latches_status_and_count_and_status_is_read_first() {
        let mut p = Pit8254::new();
        program(&mut p, 0, 2, 1000, 0);
        program(&mut p, 1, 3, 500, 0);
        // Counters 0 and 1, count and status.
        p.write(CONTROL_PORT, 0xC6, ticks_to_ns(10));
        assert_eq!(p.read(COUNTER0_PORT, ticks_to_ns(400)), 0xB4);
        assert_eq!(read_count(&mut p, 0, ticks_to_ns(400)), 990);
        assert_eq!(p.read(COUNTER1_PORT, ticks_to_ns(400)), 0xB6);
        assert_eq!(read_count(&mut p, 1, ticks_to_ns(400)), 480);
        // Count only, counter 2 not selected: counter 2's reads stay live.
        p.write(CONTROL_PORT, 0xD2, ticks_to_ns(500));
        assert_eq!(read_count(&mut p, 0, ticks_to_ns(600)), 500);
    }

    #[test]
    fn a_new_mode2_count_waits_for_the_end_of_the_current_period() {
        let mut p = Pit8254::new();
        program(&mut p, 0, 2, 1000, 0);
        p.write(COUNTER0_PORT, 0xF4, ticks_to_ns(300));
        p.write(COUNTER0_PORT, 0x01, ticks_to_ns(300)); // 500
        p.write(CONTROL_PORT, 0xE2, ticks_to_ns(300));
        assert_ne!(p.read(COUNTER0_PORT, ticks_to_ns(300)) & status::NULL_COUNT, 0);
        assert_eq!(latched_count(&mut p, 0, ticks_to_ns(400)), 600);
        assert_eq!(p.next_irq0_ns(), Some(ticks_to_ns(1000)));
        assert_eq!(p.irq0_ticks(ticks_to_ns(1000)), 1);
        assert_eq!(p.next_irq0_ns(), Some(ticks_to_ns(1500)));
        assert_eq!(latched_count(&mut p, 0, ticks_to_ns(1100)), 400);
        assert_eq!(p.irq0_ticks(ticks_to_ns(3000)), 4);
    }

    #[test]
    fn a_pending_mode2_count_is_counted_correctly_when_irq0_is_collected_late() {
        let mut p = Pit8254::new();
        program(&mut p, 0, 2, 1000, 0);
        p.write(CONTROL_PORT, 0x14, ticks_to_ns(300)); // LSB only from now on, mode 2
        p.write(COUNTER0_PORT, 200, ticks_to_ns(300));
        // The control word restarted counting with 200 at tick 300.
        assert_eq!(p.irq0_ticks(ticks_to_ns(1300)), 5);
        let mut q = Pit8254::new();
        program(&mut q, 0, 2, 1000, 0);
        q.write(COUNTER0_PORT, 0xC8, ticks_to_ns(300));
        q.write(COUNTER0_PORT, 0x00, ticks_to_ns(300)); // 200, waiting for tick 1000
        assert_eq!(q.irq0_ticks(ticks_to_ns(2000)), 1 + 5);
    }

    #[test]
    fn refresh_bit_toggles_on_each_port_0x61_read_and_written_bits_read_back() {
        let mut p = Pit8254::new();
        let a = p.read(PORT_B, 0);
        let b = p.read(PORT_B, 0);
        assert_eq!((a ^ b) & port_b::REFRESH, port_b::REFRESH);
        let c = p.read(PORT_B, 0);
        assert_eq!(a & port_b::REFRESH, c & port_b::REFRESH);
        p.write(PORT_B, 0xFF, 0);
        assert_eq!(p.read(PORT_B, 0) & 0xCF, 0x0F);
        p.write(PORT_B, 0x02, 0);
        assert_eq!(p.read(PORT_B, 0) & 0x0F, port_b::SPEAKER_DATA);
    }

    #[test]
    fn count_zero_means_65536() {
        let mut p = Pit8254::new();
        program(&mut p, 0, 2, 0, 0);
        assert_eq!(latched_count(&mut p, 0, 0), 0);
        assert_eq!(latched_count(&mut p, 0, ticks_to_ns(1)), 0xFFFF);
        assert_eq!(p.next_irq0_ns(), Some(ticks_to_ns(65_536)));
        assert_eq!(p.irq0_ticks(ticks_to_ns(65_535)), 0);
        assert_eq!(p.irq0_ticks(ticks_to_ns(65_536)), 1);
        let mut q = Pit8254::new();
        program(&mut q, 0, 0, 0, 0);
        assert_eq!(q.next_irq0_ns(), Some(ticks_to_ns(65_536)));
    }

    #[test]
    fn next_irq0_ns_predicts_each_edge_of_a_periodic_tick() {
        let mut p = Pit8254::new();
        let t0 = 3 * SEC + 123;
        program(&mut p, 0, 2, 11_932, t0);
        let mut edges = 0;
        while edges < 50 {
            let next = p.next_irq0_ns().expect("periodic");
            assert_eq!(p.irq0_ticks(next - 1), 0);
            assert_eq!(p.irq0_ticks(next), 1);
            edges += 1;
        }
        let expected = ticks_to_ns(ns_to_ticks(t0) + 51 * 11_932);
        assert_eq!(p.next_irq0_ns(), Some(expected));
        // ~10 ms apart.
        assert!((expected - t0).abs_diff(510 * MS) < MS);
    }

    #[test]
    fn time_going_backwards_is_treated_as_no_time_passing() {
        let mut p = Pit8254::new();
        program(&mut p, 0, 2, 1000, SEC);
        assert!(p.irq0_ticks(2 * SEC) > 0);
        let v = latched_count(&mut p, 0, 2 * SEC);
        assert_eq!(p.irq0_ticks(SEC), 0);
        assert_eq!(latched_count(&mut p, 0, SEC), v);
    }

    #[test]
    fn other_ports_read_0xff_and_ignore_writes() {
        let mut p = Pit8254::new();
        program(&mut p, 0, 2, 1000, 0);
        let before = p.clone();
        for port in [0x3Fu16, 0x44, 0x60, 0x62, 0xFFFF] {
            p.write(port, 0x5A, 0);
            assert_eq!(p.read(port, 0), 0xFF);
        }
        assert_eq!(p.read(CONTROL_PORT, 0), 0xFF);
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
    fn random_accesses_and_times_never_panic_and_next_irq0_is_never_early() {
        let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
        let mut p = Pit8254::new();
        let ports = [COUNTER0_PORT, COUNTER1_PORT, COUNTER2_PORT, CONTROL_PORT, PORT_B, 0x44];
        let mut now: u64 = 0;
        for _ in 0..100_000 {
            let r = rng.next();
            now = match r % 97 {
                0 => now.wrapping_sub(r >> 40),
                1 => u64::MAX - (r >> 50),
                2 => 0,
                _ => now.saturating_add((r >> 32) % 50_000),
            };
            let port = ports.get((r >> 8) as usize % ports.len()).copied().unwrap_or(0);
            let value = (r >> 16) as u8;
            match (r >> 4) % 4 {
                0 => {
                    let _ = p.read(port, now);
                }
                1 | 2 => p.write(port, value, now),
                _ => {
                    let next = p.next_irq0_ns();
                    let got = p.irq0_ticks(now);
                    if got > 0 {
                        assert!(next.is_some_and(|n| n <= now.max(ticks_to_ns(p.clock))));
                    }
                }
            }
            for c in &p.counters {
                assert!((1..=MAX_COUNT).contains(&c.cr) && (1..=MAX_COUNT).contains(&c.n));
                assert!(c.latch_left <= 2);
            }
        }
    }
}
