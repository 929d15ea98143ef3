//! Device models: one file per device, each a plain Rust type with a register-level
//! interface (`read(offset)`, `write(offset, value) -> Effects`) that touches no
//! hardware, so every state transition is unit-tested on the host. The exit handlers
//! (`vmexit::io`, `vmexit::mmio`, `vmexit::apic`) route guest accesses to them and carry
//! out their effects.
//!
//! Per domain: the COM1 UART, the 8259A PIC pair, the 8254 PIT, the ACPI
//! power-management block, port 0x92, the CMOS RTC,
//! the I/O APIC, the PCI host bridge and fw_cfg (`acpi_tables` builds the tables that
//! describe them). Per vCPU: the local APIC.

pub mod acpi_pm;
pub mod acpi_tables;
pub mod fw_cfg;
pub mod ioapic;
pub mod lapic;
pub mod pci;
pub mod pic8259;
pub mod pit8254;
pub mod rtc;
pub mod uart16550;

/// The devices a domain's vCPUs share.
pub struct DomainDevices {
    pub com1: uart16550::Uart16550,
    pub pm: acpi_pm::AcpiPm,
    /// System control port A (0x92): bit 1 is the A20 gate, which reads as set.
    pub port92: u8,
    /// Private, like `pit`: every access goes through [`Self::rtc_read`] and friends,
    /// which note that the timers' next event must be computed again.
    rtc: rtc::Rtc,
    /// Guest writes go through [`Self::ioapic_mmio_write`] (it may unmask a timer).
    pub ioapic: ioapic::IoApic,
    pub pci: pci::PciHost,
    pub fw_cfg: fw_cfg::FwCfg,
    /// Guest writes go through [`Self::pic_write`] (it may unmask a timer).
    pub pic: pic8259::Pic8259Pair,
    pit: pit8254::Pit8254,
    /// When the PIT or the RTC next raises its line (ns; u64::MAX never), as computed at
    /// the last [`Self::sync`] that ran them. Running them costs 128-bit arithmetic, so
    /// `sync` (after every device access) only does when this is due or `timers_touched`.
    timers_next: u64,
    /// A PIT or RTC register was accessed since `timers_next` was computed.
    timers_touched: bool,
    /// Which timer lines could reach a vCPU when `timers_next` was computed
    /// ([`Self::timer_lines_open`]); a change means computing it again.
    timer_lines: u8,
    /// The PICs or the I/O APIC were written since `timer_lines` was taken (a mask may
    /// have changed): [`Self::pic_write`] and [`Self::ioapic_mmio_write`] set it, so
    /// that `sync` looks at the masks only then.
    masks_touched: bool,
    /// When the PIT last raised IRQ 0 (ns), for [`MIN_IRQ0_PERIOD_NS`].
    last_irq0_ns: u64,
    /// COM1's interrupt output as last driven onto IRQ 4.
    com1_line: bool,
    /// The ACPI SCI as last driven onto IRQ 9.
    sci_line: bool,
    /// The guest has programmed COM1 (written a register): console input goes to its
    /// receiver from then on, instead of waiting for `ConsoleRead`.
    pub com1_in_use: bool,
    /// Console input (from Domain0) not yet taken by the guest.
    console_input: alloc::collections::VecDeque<u8>,
}

/// The PIT raises IRQ 0 at most this often (10 kHz), whatever its reload value (as KVM
/// bounds its PIT's period): at the hardware's fastest, a halted guest could otherwise
/// wake its CPU every microsecond. Missed edges collapse into one, as they do when an
/// interrupt is held off.
pub const MIN_IRQ0_PERIOD_NS: u64 = 100_000;

/// Most console input bytes waiting for a guest; more are refused.
pub const CONSOLE_INPUT_MAX: usize = 4096;

/// The I/O APIC pin an ISA interrupt is wired to: IRQ 0 (the PIT) to pin 2, as on every
/// PC since the 8259's cascade input took pin 2's place (the MADT says so with an
/// interrupt source override); the others to the pin of the same number.
pub const fn isa_pin(irq: u8) -> u8 {
    if irq == 0 { 2 } else { irq }
}

/// Interrupt messages from the I/O APIC that a device event produced, for the caller to
/// deliver to the local APICs they address. A fixed list, no allocation: one event
/// raises at most a few lines.
#[derive(Debug, Default)]
pub struct Messages {
    items: [Option<ioapic::Delivery>; 8],
    len: usize,
}

impl Messages {
    pub fn push(&mut self, d: ioapic::Delivery) {
        // Eight lines changing in one event does not happen (three device sources plus an
        // EOI); were it to, a later message is dropped like an interrupt lost on a busy bus.
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = Some(d);
            self.len += 1;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = ioapic::Delivery> + '_ {
        self.items[..self.len].iter().flatten().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl DomainDevices {
    /// The devices of a domain with `vcpus` vCPUs and `ram_bytes` of RAM; the RTC starts
    /// at `unix_time` (the host's clock) at `now_ns`.
    pub fn new(vcpus: u32, ram_bytes: u64, unix_time: u64, now_ns: u64) -> Self {
        let below_4g = ram_bytes.min(1 << 32);
        DomainDevices {
            com1: uart16550::Uart16550::new(),
            pm: acpi_pm::AcpiPm::new(),
            port92: 0x02,
            rtc: rtc::Rtc::new(unix_time, now_ns, below_4g, ram_bytes - below_4g),
            // I/O APIC ID: after the vCPUs' local APIC IDs, as on a PC.
            ioapic: ioapic::IoApic::new(u8::try_from(vcpus).unwrap_or(0xFE).min(0xFE)),
            pci: pci::PciHost::new(),
            fw_cfg: fw_cfg::FwCfg::new(u16::try_from(vcpus).unwrap_or(u16::MAX), ram_bytes),
            pic: pic8259::Pic8259Pair::new(),
            pit: pit8254::Pit8254::new(),
            timers_next: u64::MAX,
            timers_touched: true,
            timer_lines: 0,
            masks_touched: false,
            last_irq0_ns: 0,
            com1_line: false,
            sci_line: false,
            com1_in_use: false,
            console_input: alloc::collections::VecDeque::new(),
        }
    }

    /// Queues console input for the guest; returns how many bytes fit.
    pub fn queue_input(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(CONSOLE_INPUT_MAX - self.console_input.len().min(CONSOLE_INPUT_MAX));
        self.console_input.extend(&bytes[..n]);
        n
    }

    /// Waiting console input, without taking it (for `ConsoleRead`, which takes it with
    /// [`Self::consume_input`] once the copy to the guest has worked).
    pub fn peek_input(&self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.console_input.len());
        for (slot, b) in out.iter_mut().zip(self.console_input.iter()) {
            *slot = *b;
        }
        n
    }

    pub fn consume_input(&mut self, n: usize) {
        self.console_input.drain(..n.min(self.console_input.len()));
    }

    /// Drives ISA interrupt line `irq` to both interrupt controllers, as the board wires
    /// it: the 8259 pair and the I/O APIC (through [`isa_pin`]).
    pub fn set_isa_irq(&mut self, irq: u8, level: bool, out: &mut Messages) {
        self.pic.set_irq(irq, level);
        if let Some(d) = self.ioapic.set_irq(isa_pin(irq), level) {
            out.push(d);
        }
    }

    /// An edge on an edge-triggered ISA line: high, then low.
    fn pulse(&mut self, irq: u8, out: &mut Messages) {
        self.set_isa_irq(irq, true, out);
        self.set_isa_irq(irq, false, out);
    }

    /// Brings the interrupt lines up to date at `now_ns`: the PIT's channel 0 edges become
    /// IRQ 0, the RTC's IRQ 8, and COM1's output level IRQ 4. Run after every guest access
    /// to a device and whenever [`Self::next_event_ns`] has passed. Several timer periods
    /// missed at once give one interrupt, as a real PIC's edge latch would.
    pub fn sync(&mut self, now_ns: u64, out: &mut Messages) {
        // Console input into COM1's receiver as it makes room.
        while self.com1_in_use && self.com1.rx_space() > 0 {
            let Some(b) = self.console_input.pop_front() else { break };
            self.com1.receive(b);
        }
        // The models promise no edge before their next event without an access, so
        // skipping them until then changes nothing.
        let masks_changed = core::mem::take(&mut self.masks_touched) && self.timer_lines_open() != self.timer_lines;
        if self.timers_touched || now_ns >= self.timers_next || masks_changed {
            if now_ns >= self.last_irq0_ns.saturating_add(MIN_IRQ0_PERIOD_NS) && self.pit.irq0_ticks(now_ns) > 0 {
                self.pulse(pit8254::PIT_IRQ, out);
                self.last_irq0_ns = now_ns;
            }
            if self.rtc.poll_irq(now_ns) {
                self.pulse(rtc::RTC_IRQ, out);
            }
            self.timer_lines = self.timer_lines_open();
            self.timers_next = self.timers_next_event().unwrap_or(u64::MAX);
            self.timers_touched = false;
        }
        let line = self.com1.irq_line();
        if line != self.com1_line {
            self.com1_line = line;
            self.set_isa_irq(uart16550::COM1_IRQ, line, out);
        }
        // The SCI is level-triggered: high while an enabled PM1 event is pending.
        let sci = self.pm.sci_level();
        if sci != self.sci_line {
            self.sci_line = sci;
            self.set_isa_irq(acpi_pm::SCI_IRQ, sci, out);
        }
    }

    /// When a device timer next changes an interrupt line (ns), for the hypervisor's
    /// timers; `None` when none will without a guest access.
    pub fn next_event_ns(&self) -> Option<u64> {
        if self.timers_touched {
            return self.timers_next_event();
        }
        (self.timers_next != u64::MAX).then_some(self.timers_next)
    }

    /// The timers' next edge that can reach a vCPU: a line masked at both the PICs and
    /// the I/O APIC gets no deadline (its edges are caught up on when it is unmasked,
    /// as an edge latched in the IRR would be), and IRQ 0 keeps its minimum period.
    fn timers_next_event(&self) -> Option<u64> {
        let lines = self.timer_lines_open();
        let pit = self
            .pit
            .next_irq0_ns()
            .filter(|_| lines & 1 != 0)
            .map(|t| t.max(self.last_irq0_ns.saturating_add(MIN_IRQ0_PERIOD_NS)));
        let rtc = self.rtc.next_event_ns().filter(|_| lines & 2 != 0);
        match (pit, rtc) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Which timer lines can reach a vCPU now: bit 0 the PIT's IRQ 0, bit 1 the RTC's
    /// IRQ 8 (open when unmasked at the PICs or at their I/O APIC pin).
    fn timer_lines_open(&self) -> u8 {
        let open = |irq: u8| {
            !self.pic.masked(irq) || self.ioapic.entry(isa_pin(irq)).is_some_and(|e| e & ioapic::rte::MASKED == 0)
        };
        u8::from(open(pit8254::PIT_IRQ)) | u8::from(open(rtc::RTC_IRQ)) << 1
    }

    /// A guest write to a PIC port (0x20/0x21, 0xA0/0xA1, ELCR).
    pub fn pic_write(&mut self, port: u16, value: u8) {
        self.pic.write(port, value);
        self.masks_touched = true;
    }

    /// A guest write to the I/O APIC's page; the message it sends, if any.
    pub fn ioapic_mmio_write(&mut self, offset: u64, value: u32) -> Option<ioapic::Delivery> {
        self.masks_touched = true;
        self.ioapic.mmio_write(offset, value)
    }

    /// A read of a PIT port (0x40-0x43, 0x61).
    pub fn pit_read(&mut self, port: u16, now_ns: u64) -> u8 {
        self.timers_touched = true;
        self.pit.read(port, now_ns)
    }

    /// A write to a PIT port (0x40-0x43, 0x61).
    pub fn pit_write(&mut self, port: u16, value: u8, now_ns: u64) {
        self.timers_touched = true;
        self.pit.write(port, value, now_ns);
    }

    /// A read of an RTC port (0x70, 0x71).
    pub fn rtc_read(&mut self, port: u16, now_ns: u64) -> u8 {
        self.timers_touched = true;
        self.rtc.read(port, now_ns)
    }

    /// A write to an RTC port (0x70, 0x71).
    pub fn rtc_write(&mut self, port: u16, value: u8, now_ns: u64) {
        self.timers_touched = true;
        self.rtc.write(port, value, now_ns);
    }

    /// A local APIC retired level-triggered `vector`: the I/O APIC clears Remote IRR and
    /// may deliver again if the line is still asserted.
    pub fn eoi(&mut self, vector: u8, out: &mut Messages) {
        if let Some(d) = self.ioapic.eoi(vector) {
            out.push(d);
        }
    }

    /// Whether the 8259 pair asks the CPU for an interrupt (its INT output).
    pub fn pic_output(&self) -> bool {
        self.pic.output()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS_PER_MS: u64 = 1_000_000;

    fn devices() -> DomainDevices {
        DomainDevices::new(1, 16 << 20, 1_700_000_000, 0)
    }

    /// ICW1-4 for the master at vector base 0x20, slave at 0x28, all lines unmasked
    /// except `mask`.
    fn init_pic(d: &mut DomainDevices, mask: u8) {
        for (port, v) in [(0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01), (0x21, mask)] {
            d.pic_write(port, v);
        }
        for (port, v) in [(0xA0, 0x11), (0xA1, 0x28), (0xA1, 0x02), (0xA1, 0x01), (0xA1, 0x00)] {
            d.pic_write(port, v);
        }
    }

    /// PIT channel 0 in mode 2 with `count`.
    fn start_pit(d: &mut DomainDevices, count: u16, now: u64) {
        d.pit_write(0x43, 0x34, now);
        d.pit_write(0x40, count as u8, now);
        d.pit_write(0x40, (count >> 8) as u8, now);
    }

    fn ioapic_route(d: &mut DomainDevices, pin: u8, vector: u8) {
        let reg = 0x10 + 2 * u32::from(pin);
        let _ = d.ioapic_mmio_write(ioapic::IOREGSEL, reg);
        let _ = d.ioapic_mmio_write(ioapic::IOWIN, u32::from(vector));
        let _ = d.ioapic_mmio_write(ioapic::IOREGSEL, reg + 1);
        let _ = d.ioapic_mmio_write(ioapic::IOWIN, 0);
    }

    #[test]
    fn the_pit_drives_irq0_on_the_pic_and_pin_2_of_the_io_apic() {
        let mut d = devices();
        init_pic(&mut d, 0xFE);
        ioapic_route(&mut d, 2, 0x30);
        // 11932 ticks of 1.193182 MHz: 10 ms.
        start_pit(&mut d, 11_932, 0);
        let first = d.next_event_ns().expect("a running PIT has a next edge");
        assert!((9 * NS_PER_MS..=11 * NS_PER_MS).contains(&first), "first edge after ~10 ms: {first}");
        let mut out = Messages::default();
        d.sync(first - 1, &mut out);
        assert!(out.is_empty() && !d.pic_output(), "nothing before the edge");
        d.sync(first, &mut out);
        assert!(d.pic_output(), "IRQ 0 requested at the PIC");
        assert_eq!(d.pic.acknowledge(), Some(0x20));
        let msgs: Vec<_> = out.iter().collect();
        assert_eq!(msgs.len(), 1, "one message from the I/O APIC");
        assert_eq!(msgs[0].vector, 0x30);
        assert!(!msgs[0].level);
        let second = d.next_event_ns().unwrap();
        assert!(second > first && second - first <= 11 * NS_PER_MS, "periodic: {first} then {second}");
    }

    #[test]
    fn missed_periods_give_one_interrupt() {
        let mut d = devices();
        ioapic_route(&mut d, 2, 0x30);
        start_pit(&mut d, 1193, 0); // 1 ms
        let mut out = Messages::default();
        d.sync(50 * NS_PER_MS, &mut out);
        assert_eq!(out.iter().count(), 1);
        assert!(d.next_event_ns().unwrap() > 50 * NS_PER_MS);
    }

    #[test]
    fn masked_lines_send_nothing_and_a_quiet_platform_has_no_deadline() {
        let mut d = devices();
        assert_eq!(d.next_event_ns(), None, "nothing programmed");
        start_pit(&mut d, 1193, 0);
        let mut out = Messages::default();
        d.sync(5 * NS_PER_MS, &mut out);
        assert!(out.is_empty(), "the I/O APIC entry is masked at reset");
        assert!(!d.pic_output(), "the PIC is not initialised");
    }

    #[test]
    fn the_uart_line_follows_its_interrupt_output_gated_by_out2() {
        let mut d = devices();
        init_pic(&mut d, 0xEF);
        ioapic_route(&mut d, 4, 0x34);
        let _ = d.com1.write(uart16550::reg::IER_DLM, uart16550::ier::ERBFI);
        let mut out = Messages::default();
        assert!(d.com1.receive(b'x'));
        d.sync(0, &mut out);
        assert!(out.is_empty(), "OUT2 clear: the UART is cut off from IRQ 4");
        let _ = d.com1.write(uart16550::reg::MCR, uart16550::mcr::OUT2);
        d.sync(0, &mut out);
        assert_eq!(out.iter().map(|m| m.vector).collect::<Vec<_>>(), vec![0x34]);
        assert_eq!(d.pic.acknowledge(), Some(0x24));
        let mut again = Messages::default();
        d.sync(0, &mut again);
        assert!(again.is_empty(), "a steady line is not a new edge");
        let _ = d.com1.read(uart16550::reg::RBR_THR_DLL);
        d.sync(0, &mut again);
        assert!(again.is_empty(), "the line falls");
        assert!(d.com1.receive(b'y'));
        d.sync(0, &mut again);
        assert_eq!(again.iter().count(), 1, "and rises again with new data");
    }

    #[test]
    fn timers_run_when_due_or_touched_and_not_in_between() {
        let mut d = devices();
        init_pic(&mut d, 0xFE);
        start_pit(&mut d, 11932, 0); // ~10 ms
        let first = d.next_event_ns().expect("the PIT counts");
        let mut out = Messages::default();
        d.sync(first - 1, &mut out);
        assert!(!d.pic_output(), "no edge before the event");
        assert_eq!(d.next_event_ns(), Some(first), "cached, unchanged");
        // Reprogrammed to a much shorter period: the new event counts at once.
        start_pit(&mut d, 2, first - 1);
        let sooner = d.next_event_ns().expect("still counting");
        assert!(sooner < first, "{sooner} < {first}");
        d.sync(sooner, &mut out);
        assert!(d.pic_output(), "IRQ 0 at the new event");
        assert_eq!(d.pic.acknowledge(), Some(0x20));
    }

    #[test]
    fn the_rtc_periodic_interrupt_reaches_irq8() {
        let mut d = devices();
        init_pic(&mut d, 0xFB);
        ioapic_route(&mut d, 8, 0x38);
        // Register B: PIE; register A keeps the 1024 Hz default rate (0x26).
        d.rtc_write(rtc::INDEX_PORT, rtc::reg::B, 0);
        d.rtc_write(rtc::DATA_PORT, rtc::reg_b::PIE | rtc::reg_b::HOURS_24, 0);
        let next = d.next_event_ns().expect("periodic interrupt armed");
        assert!(next <= 1_000_000, "1024 Hz: within ~1 ms, got {next}");
        let mut out = Messages::default();
        d.sync(next, &mut out);
        assert_eq!(out.iter().map(|m| m.vector).collect::<Vec<_>>(), vec![0x38]);
        assert_eq!(d.pic.acknowledge(), Some(0x28), "IRQ 8 through the slave");
    }

    #[test]
    fn console_input_waits_until_the_guest_uses_its_uart_then_fills_the_fifo() {
        let mut d = devices();
        let mut out = Messages::default();
        assert_eq!(d.queue_input(&[b'a'; 20]), 20);
        d.sync(0, &mut out);
        assert_eq!(d.com1.rx_len(), 0, "not in use yet: kept for ConsoleRead");
        let mut peek = [0u8; 4];
        assert_eq!(d.peek_input(&mut peek), 4);
        d.consume_input(2);
        d.com1_in_use = true;
        let _ = d.com1.write(uart16550::reg::IIR_FCR, uart16550::fcr::FIFO_ENABLE);
        d.sync(0, &mut out);
        assert_eq!(d.com1.rx_len(), 16, "the FIFO fills");
        let _ = d.com1.read(uart16550::reg::RBR_THR_DLL);
        d.sync(0, &mut out);
        assert_eq!(d.com1.rx_len(), 16, "and refills as the guest reads");
        assert_eq!(d.queue_input(&[0; CONSOLE_INPUT_MAX + 10]), CONSOLE_INPUT_MAX - 1, "bounded");
    }

    #[test]
    fn isa_irq0_is_wired_to_pin_2() {
        assert_eq!(isa_pin(0), 2);
        assert_eq!(isa_pin(4), 4);
        assert_eq!(isa_pin(8), 8);
    }

    #[test]
    fn a_timer_masked_everywhere_sets_no_deadline_until_it_is_unmasked() {
        let mut d = devices();
        init_pic(&mut d, 0xFF);
        let mut out = Messages::default();
        // The fastest the PIT goes: a deadline every 1.7 us, if anyone could see it.
        start_pit(&mut d, 2, 0);
        d.sync(1_000, &mut out);
        assert_eq!(d.next_event_ns(), None, "IRQ 0 masked at the PIC and the I/O APIC");
        // Unmasked at the PIC: the next sync notices and the deadline comes back.
        d.pic_write(0x21, 0xFE);
        d.sync(2_000_000, &mut out);
        assert!(d.pic.pending_vector().is_some(), "edges while masked are caught up on");
        let next = d.next_event_ns().expect("IRQ 0 open again");
        assert!(next >= 2_000_000 + MIN_IRQ0_PERIOD_NS - 1, "{next}");
    }

    #[test]
    fn irq0_keeps_its_minimum_period_however_short_the_count() {
        let mut d = devices();
        init_pic(&mut d, 0xFE);
        ioapic_route(&mut d, 2, 0x30);
        start_pit(&mut d, 2, 0);
        let mut pulses = 0;
        // 10 ms, looked at every microsecond, each interrupt acknowledged at once.
        for us in 1..=10_000u64 {
            let now = us * 1000;
            let mut out = Messages::default();
            d.sync(now, &mut out);
            if !out.is_empty() {
                pulses += 1;
                let _ = d.pic.acknowledge();
                d.eoi(0x20, &mut out);
                let deadline = d.next_event_ns().unwrap();
                assert!(deadline >= now + MIN_IRQ0_PERIOD_NS, "the next edge comes no sooner");
            }
        }
        assert!((99..=100).contains(&pulses), "{pulses} interrupts in 10 ms");
    }
}
