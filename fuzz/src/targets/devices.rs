//! Device models, each driven by a sequence of steps decoded from the input. A step is
//! one opcode byte (bit 7: advance the clock first, see [`Clock::advance`]; the low bits
//! pick the operation) followed by its operands (register or port, access size, value).
//! After every step the target checks the model's documented invariants that are cheap
//! to observe.

use crate::input::{Clock, Input, size_mask};
use hypervisor::devices::{acpi_pm, fw_cfg, ioapic, lapic, pci, pic8259, pit8254, rtc, uart16550};

/// Most steps one input runs: keeps each execution short, so the fuzzer tries many.
const MAX_STEPS: usize = 512;

/// Runs `step` for each opcode in the input, advancing `clock` first when bit 7 says so.
fn steps(input: &mut Input<'_>, clock: &mut Clock, mut step: impl FnMut(u8, &mut Input<'_>, u64)) {
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        let op = input.u8();
        if op & 0x80 != 0 {
            clock.advance(input);
        }
        step(op & 0x7F, input, clock.now);
    }
}

/// The 16550 UART: register reads and writes at offsets 0-7 (and beyond), host input.
pub fn uart16550(data: &[u8]) {
    use uart16550::{iir, lsr, mcr, reg};
    let mut input = Input::new(data);
    let mut u = uart16550::Uart16550::new();
    let mut clock = Clock::new(0);
    steps(&mut input, &mut clock, |op, input, _| {
        let offset = if op & 0x40 != 0 { input.u8() } else { input.u8() % 8 };
        match op % 4 {
            0 => {
                let value = u.read(offset);
                if offset == reg::IIR_FCR && u.read(reg::LCR) & uart16550::lcr::DLAB == 0 {
                    assert_eq!(value & 0x30, 0, "IIR bits 5:4 are 0: {value:#x}");
                    assert_eq!(value & iir::FIFOS_ENABLED != 0, u.fifo_enabled(), "IIR bits 7:6: {value:#x}");
                }
                if offset > 7 {
                    assert_eq!(value, 0xFF);
                }
            }
            1 => {
                let value = input.u8();
                let fx = u.write(offset, value);
                if fx.tx.is_some() {
                    assert_eq!(fx.tx, Some(value));
                    assert_eq!(u.read(reg::MCR) & mcr::LOOP, 0, "nothing leaves the UART in loopback");
                }
            }
            2 => {
                let before = u.rx_len();
                let space = u.rx_space();
                let accepted = u.receive(input.u8());
                assert_eq!(accepted, space > 0, "receive accepts exactly when rx_space says so");
                assert_eq!(u.rx_len(), before + usize::from(accepted));
            }
            _ => {
                let lsr = u.read(reg::LSR);
                assert_eq!(lsr & (lsr::THRE | lsr::TEMT), lsr::THRE | lsr::TEMT, "transmitter always empty");
                assert_eq!(lsr & lsr::DR != 0, u.rx_len() > 0, "LSR.DR: {lsr:#x}");
                assert_eq!(lsr & (lsr::PE | lsr::FE | lsr::BI | lsr::RCVR_FIFO_ERROR), 0);
            }
        }
        let capacity = if u.fifo_enabled() { uart16550::RX_FIFO_SIZE } else { 1 };
        assert!(u.rx_len() <= capacity, "{} bytes in a receiver of {capacity}", u.rx_len());
        assert!(u.rx_space() + u.rx_len() <= capacity);
        if u.irq_line() {
            assert_ne!(u.read(reg::MCR) & mcr::OUT2, 0, "IRQ 4 is gated by OUT2");
        }
        let _ = u.baud();
    });
}

/// The 8259A pair: port accesses, IRQ lines and INTA cycles.
pub fn pic8259(data: &[u8]) {
    use pic8259::*;
    const PORTS: &[u16] = &[MASTER_CMD, MASTER_DATA, SLAVE_CMD, SLAVE_DATA, ELCR_MASTER, ELCR_SLAVE];
    let mut input = Input::new(data);
    let mut p = Pic8259Pair::new();
    let mut clock = Clock::new(0);
    steps(&mut input, &mut clock, |op, input, _| {
        match op % 5 {
            0 => {
                let port = input.port(PORTS);
                let value = p.read(port);
                if port == ELCR_MASTER {
                    assert_eq!(value & !elcr::MASTER_MASK, 0, "reserved ELCR bits read 0");
                }
                if port == ELCR_SLAVE {
                    assert_eq!(value & !elcr::SLAVE_MASK, 0, "reserved ELCR bits read 0");
                }
            }
            1 | 2 => {
                let port = input.port(PORTS);
                p.write(port, input.u8());
            }
            3 => p.set_irq(input.u8() % 18, input.bool()),
            _ => {
                let expected = p.pending_vector();
                let acked = p.acknowledge();
                if expected.is_some() {
                    assert_eq!(acked, expected, "INTA returns the vector pending_vector announced");
                }
            }
        }
        assert_eq!(p.output(), p.pending_vector().is_some());
    });
}

/// The 8254 PIT: port accesses at monotonic times, IRQ 0 edges and the next deadline.
pub fn pit8254(data: &[u8]) {
    use pit8254::*;
    const PORTS: &[u16] = &[COUNTER0_PORT, COUNTER1_PORT, COUNTER2_PORT, CONTROL_PORT, PORT_B];
    let mut input = Input::new(data);
    let mut p = Pit8254::new();
    let mut clock = Clock::new(u64::from(input.u32()));
    steps(&mut input, &mut clock, |op, input, now| {
        match op % 4 {
            0 => {
                let port = input.port(PORTS);
                let value = p.read(port, now);
                if port == CONTROL_PORT {
                    assert_eq!(value, 0xFF, "the control word cannot be read");
                }
                if port == PORT_B {
                    assert_eq!(value & 0xC0, 0, "port 0x61 bits 7:6 read 0");
                }
            }
            1 | 2 => {
                let port = input.port(PORTS);
                p.write(port, input.u8(), now);
            }
            _ => {
                let _ = p.irq0_ticks(now);
                if let Some(next) = p.next_irq0_ns() {
                    assert!(next > now, "the next IRQ 0 edge ({next}) is not after now ({now}) with none pending");
                }
            }
        }
        let _ = p.next_irq0_ns();
    });
    let tick = ns_to_ticks(clock.now);
    assert_eq!(ns_to_ticks(ticks_to_ns(tick)), tick, "ticks_to_ns gives the first ns of a tick");
}

/// The CMOS RTC: index/data port accesses, interrupt polling and the next event.
pub fn rtc(data: &[u8]) {
    use rtc::*;
    let mut input = Input::new(data);
    // The host's clock at boot: anything up to 2^40 s (some 34,000 years).
    let unix = input.u64() & ((1 << 40) - 1);
    let start = u64::from(input.u32());
    let below_4g = u64::from(input.u32());
    let above_4g = input.u64() & ((1 << 48) - 1);
    let mut r = Rtc::new(unix, start, below_4g, above_4g);
    let mut clock = Clock::new(start);
    steps(&mut input, &mut clock, |op, input, now| {
        match op % 6 {
            0 => {
                let port = input.port(&[INDEX_PORT, DATA_PORT]);
                let _ = r.read(port, now);
            }
            1 | 2 => {
                let port = input.port(&[INDEX_PORT, DATA_PORT, INDEX_PORT]);
                r.write(port, input.u8(), now);
            }
            3 => {
                let _ = r.poll_irq(now);
                if let Some(next) = r.next_event_ns() {
                    assert!(next >= now, "the next RTC event ({next}) is before now ({now})");
                }
            }
            4 => {
                // Registers C and D through the ports (the index write is a step of its own).
                let which = if input.bool() { reg::C } else { reg::D };
                r.write(INDEX_PORT, which, now);
                let value = r.read(DATA_PORT, now);
                if which == reg::D {
                    assert_eq!(value, REG_D_VRT, "register D: VRT only");
                } else {
                    assert_eq!(value & 0x0F, 0, "register C bits 3:0 read 0");
                    assert_eq!(r.read(DATA_PORT, now) & reg_c::FLAGS, 0, "reading C clears its flags");
                }
            }
            _ => {
                let _ = r.set_cmos_byte(input.u8(), input.u8());
            }
        }
    });
}

/// The I/O APIC: MMIO reads and writes, pin levels and EOIs.
pub fn ioapic(data: &[u8]) {
    use ioapic::*;
    const OFFSETS: &[u16] = &[IOREGSEL as u16, IOWIN as u16, IOEOI as u16];
    let mut input = Input::new(data);
    let mut io = IoApic::new(input.u8());
    let mut clock = Clock::new(0);
    steps(&mut input, &mut clock, |op, input, _| {
        let delivered = match op % 6 {
            0 => {
                let offset = u64::from(input.port(OFFSETS));
                let value = io.mmio_read(offset);
                if offset == IOREGSEL {
                    assert_eq!(value & !0xFF, 0, "IOREGSEL bits 31:8 read 0");
                }
                None
            }
            1 => {
                // Select a register (mostly a defined one), then write it through IOWIN.
                let select = u32::from(input.u8() % 0x40);
                let _ = io.mmio_write(IOREGSEL, select);
                io.mmio_write(IOWIN, input.u32())
            }
            2 => {
                let offset = u64::from(input.port(OFFSETS));
                io.mmio_write(offset, input.u32())
            }
            3 | 4 => {
                let pin = input.u8() % 26;
                let d = io.set_irq(pin, input.bool());
                if let Some(d) = d {
                    let entry = io.entry(pin).expect("a pin beyond the table delivered");
                    assert_eq!(u64::from(d.vector), entry & rte::VECTOR);
                    assert_eq!(entry & rte::MASKED, 0, "a masked pin delivered");
                    if d.level {
                        assert_ne!(entry & rte::REMOTE_IRR, 0, "a level delivery sets Remote IRR");
                    }
                }
                d
            }
            _ => {
                let vector = input.u8();
                let d = io.eoi(vector);
                if let Some(d) = d {
                    assert_eq!(d.vector, vector, "an EOI re-delivers its own vector");
                }
                d
            }
        };
        if let Some(d) = delivered {
            assert!(d.delivery_mode < 8);
        }
        assert!(io.id() < 16);
        for pin in 0..PINS as u8 {
            let entry = io.entry(pin).unwrap();
            assert_eq!(entry & !(rte::WRITABLE | rte::REMOTE_IRR), 0, "pin {pin}: reserved bits {entry:#x}");
        }
        assert_eq!(io.entry(PINS as u8), None);
    });
}

/// The local APIC: xAPIC MMIO, x2APIC MSRs, IA32_APIC_BASE, interrupt acceptance,
/// delivery and EOI, the timer in its three modes.
pub fn lapic(data: &[u8]) {
    use lapic::*;
    let mut input = Input::new(data);
    let id = u32::from(input.u8());
    let mut apic = LocalApic::new(id, input.bool());
    let mut clock = Clock::new(u64::from(input.u32()));
    let registers: Vec<u16> = [
        REG_ID,
        REG_VERSION,
        REG_TPR,
        REG_PPR,
        REG_EOI,
        REG_LDR,
        REG_DFR,
        REG_SVR,
        REG_ISR0,
        REG_TMR0,
        REG_IRR0,
        REG_ESR,
        REG_ICR_LOW,
        REG_ICR_HIGH,
        REG_LVT_TIMER,
        REG_LVT_LINT0,
        REG_LVT_LINT1,
        REG_LVT_ERROR,
        REG_TIMER_INITIAL,
        REG_TIMER_CURRENT,
        REG_TIMER_DIVIDE,
        REG_SELF_IPI,
    ]
    .iter()
    .map(|&r| r as u16)
    .collect();
    steps(&mut input, &mut clock, |op, input, now| {
        match op % 12 {
            0 => {
                let offset = u32::from(input.port(&registers));
                let value = apic.mmio_read(offset, now);
                if offset == REG_VERSION && apic.xapic() {
                    assert_eq!(value, APIC_VERSION);
                }
            }
            1 | 2 => {
                let offset = u32::from(input.port(&registers));
                let fx = apic.mmio_write(offset, input.u32(), now);
                check_effects(&fx);
            }
            3 => {
                let msr = X2APIC_MSR_FIRST + u32::from(input.port(&registers)) / 16;
                let _ = apic.msr_read(msr, now);
            }
            4 => {
                let msr = X2APIC_MSR_FIRST + u32::from(input.port(&registers)) / 16;
                let value = if input.bool() { u64::from(input.u32()) } else { input.u64() };
                if let Some(fx) = apic.msr_write(msr, value, now) {
                    check_effects(&fx);
                }
            }
            5 => {
                // Mostly valid IA32_APIC_BASE values: the default base with EN and EXTD from the input.
                let value = if input.bool() { XAPIC_BASE | (u64::from(input.u8() & 0b1101) << 8) } else { input.u64() };
                let _ = apic.set_apic_base(value);
            }
            6 | 7 => apic.accept(input.u8(), input.bool()),
            8 => {
                apic.tick(now);
                if let Some(v) = apic.pending(now) {
                    assert!(v >= 16, "pending illegal vector {v}");
                    assert!(v >> 4 > apic.ppr() >> 4, "pending {v:#x} not above PPR {:#x}", apic.ppr());
                    apic.ack(v);
                    assert!(apic.ppr() >= v & 0xF0, "PPR after taking {v:#x}: {:#x}", apic.ppr());
                }
            }
            9 => {
                apic.tick(now);
                if let Some(deadline) = apic.next_deadline() {
                    assert!(deadline > now, "armed timer deadline {deadline} not after now {now}");
                }
            }
            10 => {
                let deadline = if input.bool() { None } else { Some(now.saturating_add(u64::from(input.u32()))) };
                apic.set_tsc_deadline_ns(deadline);
            }
            _ => apic.set_tpr(input.u8()),
        }
        assert!(!(apic.xapic() && apic.x2apic()), "xAPIC and x2APIC at once");
        assert!(apic.ppr() >= apic.tpr(), "PPR {:#x} below TPR {:#x}", apic.ppr(), apic.tpr());
        assert_eq!(apic.apic_base() & 0xFF, 0, "reserved IA32_APIC_BASE bits");
        let _ = apic.accepts_pic_interrupts();
        let _ = apic.is_destination(Destination::Logical(u32::from(op) << 24), false);
    });
}

fn check_effects(fx: &lapic::Effects) {
    if let Some(ipi) = fx.ipi {
        use lapic::{DeliveryMode, Destination};
        if matches!(ipi.delivery, DeliveryMode::Fixed | DeliveryMode::LowestPriority) {
            assert!(ipi.vector >= 16, "an illegal vector was sent: {ipi:?}");
            assert_ne!(ipi.dest, Destination::SelfOnly, "a self IPI left the APIC: {ipi:?}");
        }
    }
}

/// PCI configuration mechanism #1.
pub fn pci(data: &[u8]) {
    use pci::*;
    const PORTS: &[u16] = &[CONFIG_ADDRESS, CONFIG_DATA, CONFIG_DATA + 1, CONFIG_DATA + 2, CONFIG_DATA + 3, 0xCF9];
    let mut input = Input::new(data);
    let mut p = PciHost::new();
    let mut clock = Clock::new(0);
    steps(&mut input, &mut clock, |op, input, _| {
        let port = input.port(PORTS);
        let size = input.size();
        match op % 4 {
            0 | 1 => {
                let value = p.read(port, size);
                if matches!(size, 1 | 2 | 4) {
                    assert_eq!(value & !size_mask(size), 0, "{size}-byte read of {port:#x}: {value:#x}");
                }
                if port == CONFIG_ADDRESS && size == 4 {
                    assert_eq!(value, p.address());
                }
            }
            2 => {
                // Point at a register of 00:00.0 (or anywhere, with the top bit of the op).
                let value = if input.bool() { ENABLE | u32::from(input.u8()) } else { input.u32() };
                p.write(CONFIG_ADDRESS, 4, value);
            }
            _ => p.write(port, size, input.u32()),
        }
        assert_eq!(p.address() & !ADDRESS_MASK, 0);
        assert_eq!(p.command() & !command::WRITABLE, 0);
        assert_eq!(
            PciHost::claims(port, size),
            (port == CONFIG_ADDRESS && size == 4) || (0xCFC..=0xCFF).contains(&port)
        );
    });
}

/// fw_cfg: files added by the host, then selector writes and data reads.
pub fn fw_cfg(data: &[u8]) {
    use fw_cfg::*;
    const PORTS: &[u16] = &[SELECTOR_PORT, DATA_PORT];
    let mut input = Input::new(data);
    let mut f = FwCfg::new(input.u16(), input.u64());
    let mut files: Vec<Vec<u8>> = Vec::new();
    for _ in 0..usize::from(input.u8() % 40) {
        let name_len = usize::from(input.u8() % 64);
        let name = String::from_utf8_lossy(input.bytes(name_len)).into_owned();
        let len = usize::from(input.u8());
        let contents = input.bytes(len).to_vec();
        if f.add_file(&name, contents.clone()) {
            files.push(contents);
        }
    }
    assert_eq!(f.file_count(), files.len());
    assert!(files.len() <= MAX_FILES);
    let mut clock = Clock::new(0);
    steps(&mut input, &mut clock, |op, input, _| match op % 4 {
        0 => {
            let port = input.port(PORTS);
            let size = input.size();
            let value = f.read(port, size);
            if matches!(size, 1 | 2 | 4) {
                assert_eq!(value & !size_mask(size), 0);
            }
        }
        1 => {
            let port = input.port(PORTS);
            let size = input.size();
            let value = input.u32();
            let before = f.selector();
            f.write(port, size, value);
            let expected = if port == SELECTOR_PORT && size == 2 { value as u16 } else { before };
            assert_eq!(f.selector(), expected);
        }
        2 => {
            // Select a file and read it back whole: the bytes the host added, then zeros.
            let Some(index) = (!files.is_empty()).then(|| usize::from(input.u8()) % files.len()) else { return };
            f.write(SELECTOR_PORT, 2, u32::from(key::FILE_FIRST) + index as u32);
            let contents: Vec<u8> = (0..files[index].len() + 2).map(|_| f.read(DATA_PORT, 1) as u8).collect();
            assert_eq!(&contents[..files[index].len()], &files[index][..]);
            assert_eq!(&contents[files[index].len()..], &[0, 0]);
        }
        _ => {
            // The directory's count, big-endian.
            f.write(SELECTOR_PORT, 2, u32::from(key::FILE_DIR));
            let count: Vec<u8> = (0..4).map(|_| f.read(DATA_PORT, 1) as u8).collect();
            assert_eq!(count, (files.len() as u32).to_be_bytes());
        }
    });
}

/// The ACPI PM1 event and control blocks, the PM timer and the reset register.
pub fn acpi_pm(data: &[u8]) {
    use acpi_pm::*;
    const PORTS: &[u16] = &[
        PM1A_EVENT,
        PM1A_EVENT + 1,
        PM1A_EVENT + 2,
        PM1A_EVENT + 3,
        PM1A_CONTROL,
        PM1A_CONTROL + 1,
        PM_TIMER,
        PM_TIMER + 1,
        PM_TIMER + 2,
        PM_TIMER + 3,
        RESET_PORT,
    ];
    let mut input = Input::new(data);
    let mut pm = AcpiPm::new();
    let mut clock = Clock::new(u64::from(input.u32()));
    steps(&mut input, &mut clock, |op, input, now| {
        match op % 4 {
            0 => {
                let port = input.port(PORTS);
                let size = input.size();
                let value = pm.read(port, size, now);
                if matches!(size, 1 | 2 | 4) {
                    assert_eq!(value & !size_mask(size), 0);
                }
                if !AcpiPm::claims(port) {
                    assert_eq!(value, size_mask(size), "an unclaimed port reads all ones");
                }
            }
            1 | 2 => {
                let port = input.port(PORTS);
                let size = input.size();
                let value = input.u32();
                let request = pm.write(port, size, value);
                if request == Some(PowerRequest::Reset) {
                    assert_eq!(port, RESET_PORT);
                }
                if request == Some(PowerRequest::PowerOff) {
                    assert_eq!(port, PM1A_CONTROL);
                }
            }
            _ => {
                if pm.press_power_button() {
                    assert!(pm.sci_level(), "a pressed, enabled power button raises the SCI");
                }
            }
        }
        assert_eq!(pm.read(PM1A_CONTROL, 2, now) & 1, 1, "SCI_EN reads 1");
        assert_eq!(pm.read(PM1A_CONTROL, 2, now) & (1 << 13), 0, "SLP_EN reads 0");
        assert!(AcpiPm::timer(now) <= 0xFF_FFFF);
    });
}
