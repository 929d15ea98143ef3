//! A register-level model of the National Semiconductor / TI PC16550D UART as a guest sees it
//! at COM1 (I/O ports 0x3F8..=0x3FF, IRQ 4). It touches no hardware: the exit handler feeds
//! it port accesses and host input bytes, and applies the returned [`Effects`].
//!
//! Modelled, with the datasheet's register names:
//! - RBR/THR (offset 0), IER (1), IIR/FCR (2), LCR (3), MCR (4), LSR (5), MSR (6), SCR (7),
//!   and the divisor latch DLL/DLM at offsets 0/1 while LCR.DLAB is set.
//! - The 16-byte receiver FIFO (FCR.FIFO enable, RCVR FIFO reset, RCVR trigger level
//!   1/4/8/14) and the single-byte receiver holding register of 16450 mode.
//! - The interrupt identification priority of the datasheet: receiver line status, received
//!   data available, character timeout, THR empty, modem status.
//! - Overrun (LSR.OE), loopback (MCR.LOOP) with MSR mirroring MCR and the delta bits.
//!
//! Simplifications, chosen because nothing in the guest can observe a difference that matters:
//! - The transmitter is drained instantly by the host, so LSR.THRE and LSR.TEMT are always
//!   set and there is no transmitter FIFO to hold anything.
//! - The character timeout (four character times without FIFO activity) is modelled as
//!   "data present in the FIFO but below the trigger level": with no line timing, that is the
//!   state in which real hardware would eventually report the timeout.
//! - Parity, framing and break errors never occur (there is no physical line), so LSR.PE,
//!   LSR.FE, LSR.BI and LSR bit 7 (error in RCVR FIFO) read 0.
//! - Outside loopback a terminal is always connected: MSR reports CTS, DSR and DCD asserted
//!   and RI clear.

/// Base I/O port of the first PC serial port.
pub const COM1_BASE: u16 = 0x3F8;
/// ISA IRQ line COM1 drives (through MCR.OUT2) on a PC.
pub const COM1_IRQ: u8 = 4;
/// Depth of the receiver FIFO when FIFOs are enabled.
pub const RX_FIFO_SIZE: usize = 16;
/// Input clock divided by 16: the baud rate produced by a divisor of 1 on a PC (1.8432 MHz).
pub const BAUD_BASE: u32 = 115_200;
/// Divisor the model powers on with (9600 baud), so `baud()` is meaningful before the guest
/// programs the latch.
pub const RESET_DIVISOR: u16 = 12;

/// Register offsets from the base port (DLAB=0 name / DLAB=1 name).
pub mod reg {
    /// RBR (read) / THR (write); DLL while DLAB=1.
    pub const RBR_THR_DLL: u8 = 0;
    /// IER; DLM while DLAB=1.
    pub const IER_DLM: u8 = 1;
    /// IIR (read) / FCR (write), independent of DLAB.
    pub const IIR_FCR: u8 = 2;
    pub const LCR: u8 = 3;
    pub const MCR: u8 = 4;
    pub const LSR: u8 = 5;
    pub const MSR: u8 = 6;
    pub const SCR: u8 = 7;
}

/// IER bits.
pub mod ier {
    /// Enable Received Data Available Interrupt (and the character timeout).
    pub const ERBFI: u8 = 0x01;
    /// Enable Transmitter Holding Register Empty Interrupt.
    pub const ETBEI: u8 = 0x02;
    /// Enable Receiver Line Status Interrupt.
    pub const ELSI: u8 = 0x04;
    /// Enable Modem Status Interrupt.
    pub const EDSSI: u8 = 0x08;
    /// Bits 7:4 are always 0 on the 16550.
    pub const MASK: u8 = 0x0F;
}

/// IIR values (interrupt identification in bits 3:0, FIFO status in bits 7:6).
pub mod iir {
    /// Bit 0 set: no interrupt pending.
    pub const NO_INT: u8 = 0x01;
    pub const RECEIVER_LINE_STATUS: u8 = 0x06;
    pub const RECEIVED_DATA_AVAILABLE: u8 = 0x04;
    pub const CHARACTER_TIMEOUT: u8 = 0x0C;
    pub const THR_EMPTY: u8 = 0x02;
    pub const MODEM_STATUS: u8 = 0x00;
    /// Bits 7:6 read 0b11 while FCR.0 has the FIFOs enabled.
    pub const FIFOS_ENABLED: u8 = 0xC0;
}

/// FCR bits.
pub mod fcr {
    pub const FIFO_ENABLE: u8 = 0x01;
    pub const RCVR_FIFO_RESET: u8 = 0x02;
    pub const XMIT_FIFO_RESET: u8 = 0x04;
    pub const TRIGGER_SHIFT: u8 = 6;
}

/// LCR bits.
pub mod lcr {
    /// Divisor Latch Access Bit.
    pub const DLAB: u8 = 0x80;
}

/// MCR bits.
pub mod mcr {
    pub const DTR: u8 = 0x01;
    pub const RTS: u8 = 0x02;
    pub const OUT1: u8 = 0x04;
    /// On a PC, OUT2 enables the buffer between INTR and the PIC.
    pub const OUT2: u8 = 0x08;
    pub const LOOP: u8 = 0x10;
    /// Bits 7:5 are always 0 on the 16550.
    pub const MASK: u8 = 0x1F;
}

/// LSR bits.
pub mod lsr {
    pub const DR: u8 = 0x01;
    pub const OE: u8 = 0x02;
    pub const PE: u8 = 0x04;
    pub const FE: u8 = 0x08;
    pub const BI: u8 = 0x10;
    pub const THRE: u8 = 0x20;
    pub const TEMT: u8 = 0x40;
    pub const RCVR_FIFO_ERROR: u8 = 0x80;
    /// The conditions that raise the receiver line status interrupt.
    pub const ERRORS: u8 = OE | PE | FE | BI;
}

/// MSR bits.
pub mod msr {
    pub const DCTS: u8 = 0x01;
    pub const DDSR: u8 = 0x02;
    /// Trailing Edge Ring Indicator: RI went from asserted to deasserted.
    pub const TERI: u8 = 0x04;
    pub const DDCD: u8 = 0x08;
    pub const CTS: u8 = 0x10;
    pub const DSR: u8 = 0x20;
    pub const RI: u8 = 0x40;
    pub const DCD: u8 = 0x80;
    pub const DELTAS: u8 = DCTS | DDSR | TERI | DDCD;
}

/// Effects of one register access, applied by the caller.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Effects {
    /// A byte the guest transmitted (goes to the domain console).
    pub tx: Option<u8>,
}

/// One COM1 UART. All state is plain data with no pointers, so `new` can be `const` and the
/// model can sit in a `static` or a lock-protected domain structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uart16550 {
    /// Receiver FIFO as a ring; in 16450 mode only one slot is used (the RBR).
    rx: [u8; RX_FIFO_SIZE],
    /// Index of the oldest byte in `rx`; always < RX_FIFO_SIZE.
    rx_head: usize,
    /// Bytes held in `rx`; always <= `rx_capacity()`.
    rx_len: usize,
    /// The byte RBR last presented: reading an empty RBR returns it again, as the hardware
    /// register keeps its contents after the read.
    rbr: u8,
    ier: u8,
    lcr: u8,
    mcr: u8,
    /// LSR error bits latched until the guest reads LSR (only OE can be set by this model).
    lsr_errors: u8,
    /// MSR bits 3:0, latched until the guest reads MSR.
    msr_deltas: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    fifo_enabled: bool,
    /// RCVR trigger level in bytes (1, 4, 8 or 14); only consulted in FIFO mode.
    rx_trigger: usize,
    /// The THRE interrupt is an edge-like source: it is pending until IIR identifies it or
    /// THR is written, not whenever THRE is set, so it must be remembered separately.
    thre_pending: bool,
}

impl Default for Uart16550 {
    fn default() -> Self {
        Self::new()
    }
}

impl Uart16550 {
    /// The power-on (MR) state.
    pub const fn new() -> Self {
        Uart16550 {
            rx: [0; RX_FIFO_SIZE],
            rx_head: 0,
            rx_len: 0,
            rbr: 0,
            ier: 0,
            lcr: 0,
            mcr: 0,
            lsr_errors: 0,
            msr_deltas: 0,
            scr: 0,
            dll: (RESET_DIVISOR & 0xFF) as u8,
            dlm: (RESET_DIVISOR >> 8) as u8,
            fifo_enabled: false,
            rx_trigger: 1,
            thre_pending: false,
        }
    }

    /// Guest read of the register at `offset` from the base port. Reads have side effects
    /// (RBR pops, IIR acknowledges THRE, LSR and MSR clear latched bits), hence `&mut self`.
    pub fn read(&mut self, offset: u8) -> u8 {
        let dlab = self.lcr & lcr::DLAB != 0;
        match offset {
            reg::RBR_THR_DLL if dlab => self.dll,
            reg::RBR_THR_DLL => self.read_rbr(),
            reg::IER_DLM if dlab => self.dlm,
            reg::IER_DLM => self.ier,
            reg::IIR_FCR => self.read_iir(),
            reg::LCR => self.lcr,
            reg::MCR => self.mcr,
            reg::LSR => self.read_lsr(),
            reg::MSR => self.read_msr(),
            reg::SCR => self.scr,
            // Not one of our ports: behave like an empty ISA bus.
            _ => 0xFF,
        }
    }

    /// Guest write of `value` to the register at `offset` from the base port.
    pub fn write(&mut self, offset: u8, value: u8) -> Effects {
        let dlab = self.lcr & lcr::DLAB != 0;
        match offset {
            reg::RBR_THR_DLL if dlab => self.dll = value,
            reg::RBR_THR_DLL => return self.write_thr(value),
            reg::IER_DLM if dlab => self.dlm = value,
            reg::IER_DLM => self.write_ier(value),
            reg::IIR_FCR => self.write_fcr(value),
            reg::LCR => self.lcr = value,
            reg::MCR => self.write_mcr(value),
            // LSR writes are a factory-test feature and MSR is read-only; ignoring them keeps
            // the guest from faking line errors or modem changes.
            reg::LSR | reg::MSR => {}
            reg::SCR => self.scr = value,
            _ => {}
        }
        Effects::default()
    }

    /// Host-to-guest input: puts `byte` into the receiver. Returns false if it was not
    /// accepted: when the receiver is full the byte is lost and LSR.OE is set, as on the
    /// line; in loopback the serial input is disconnected (datasheet: SIN is cut off), so the
    /// byte is refused without an overrun and the host should keep it (`rx_space()` is 0).
    pub fn receive(&mut self, byte: u8) -> bool {
        if self.loopback() {
            return false;
        }
        self.push_rx(byte)
    }

    /// Level of INTR as the PIC sees it: on a PC, MCR.OUT2 gates the UART's interrupt output
    /// onto IRQ 4, and drivers rely on it to mask the UART.
    pub fn irq_line(&self) -> bool {
        self.mcr & mcr::OUT2 != 0 && self.interrupt_id() != iir::NO_INT
    }

    /// Free receiver slots the host may fill with `receive()` without causing an overrun.
    pub fn rx_space(&self) -> usize {
        if self.loopback() {
            return 0;
        }
        self.rx_capacity().saturating_sub(self.rx_len)
    }

    /// Bytes waiting in the receiver for the guest.
    pub fn rx_len(&self) -> usize {
        self.rx_len
    }

    /// The 16-bit divisor latch (DLM:DLL).
    pub fn divisor(&self) -> u16 {
        u16::from(self.dlm) << 8 | u16::from(self.dll)
    }

    /// Baud rate the guest programmed; 0 for divisor 0, which the datasheet leaves undefined.
    pub fn baud(&self) -> u32 {
        match self.divisor() {
            0 => 0,
            d => BAUD_BASE / u32::from(d),
        }
    }

    /// Whether FCR.0 currently has the FIFOs enabled.
    pub fn fifo_enabled(&self) -> bool {
        self.fifo_enabled
    }

    fn loopback(&self) -> bool {
        self.mcr & mcr::LOOP != 0
    }

    fn rx_capacity(&self) -> usize {
        if self.fifo_enabled { RX_FIFO_SIZE } else { 1 }
    }

    /// Receiver input from the line or from loopback. On overrun the new byte is dropped and
    /// the FIFO contents kept, as the datasheet specifies for FIFO mode; in 16450 mode we
    /// do the same (hardware would overwrite RBR) so that the oldest input is never lost.
    fn push_rx(&mut self, byte: u8) -> bool {
        if self.rx_len >= self.rx_capacity() {
            self.lsr_errors |= lsr::OE;
            return false;
        }
        let tail = self.rx_head.wrapping_add(self.rx_len) % RX_FIFO_SIZE;
        if let Some(slot) = self.rx.get_mut(tail) {
            *slot = byte;
            self.rx_len = self.rx_len.wrapping_add(1);
            true
        } else {
            false
        }
    }

    fn pop_rx(&mut self) -> Option<u8> {
        if self.rx_len == 0 {
            return None;
        }
        let byte = self.rx.get(self.rx_head).copied()?;
        self.rx_head = self.rx_head.wrapping_add(1) % RX_FIFO_SIZE;
        self.rx_len = self.rx_len.saturating_sub(1);
        Some(byte)
    }

    fn clear_rx(&mut self) {
        self.rx_head = 0;
        self.rx_len = 0;
    }

    fn read_rbr(&mut self) -> u8 {
        if let Some(byte) = self.pop_rx() {
            self.rbr = byte;
        }
        self.rbr
    }

    fn write_thr(&mut self, value: u8) -> Effects {
        // Writing THR acknowledges the THRE interrupt; the host then sends the byte at once,
        // so THR is empty again and the interrupt re-arms if still enabled.
        self.thre_pending = false;
        let tx = if self.loopback() {
            // The transmitter shift register feeds the receiver; a full receiver overruns.
            self.push_rx(value);
            None
        } else {
            Some(value)
        };
        self.thre_pending = self.ier & ier::ETBEI != 0;
        Effects { tx }
    }

    fn write_ier(&mut self, value: u8) {
        let old = self.ier;
        self.ier = value & ier::MASK;
        if self.ier & ier::ETBEI == 0 {
            // A disabled source must not fire later just because it was once armed.
            self.thre_pending = false;
        } else if old & ier::ETBEI == 0 {
            // Enabling ETBEI while THR is empty (always, here) raises THRE immediately; Linux's
            // 8250 driver starts transmission by relying on this.
            self.thre_pending = true;
        }
    }

    fn write_fcr(&mut self, value: u8) {
        let enable = value & fcr::FIFO_ENABLE != 0;
        if enable != self.fifo_enabled {
            // Switching between 16450 and FIFO mode resets both FIFOs.
            self.clear_rx();
            self.fifo_enabled = enable;
        }
        // The datasheet: FCR0 must be 1 for the other FCR bits to be programmed.
        if !enable {
            return;
        }
        if value & fcr::RCVR_FIFO_RESET != 0 {
            self.clear_rx();
        }
        // XMIT FIFO reset has nothing to discard: the transmitter is drained instantly.
        self.rx_trigger = match value >> fcr::TRIGGER_SHIFT {
            0 => 1,
            1 => 4,
            2 => 8,
            _ => 14,
        };
    }

    /// CTS, DSR, RI and DCD (MSR bits 7:4) as the UART's inputs currently see them.
    fn modem_inputs(&self) -> u8 {
        if self.loopback() {
            let mut lines = 0;
            if self.mcr & mcr::RTS != 0 {
                lines |= msr::CTS;
            }
            if self.mcr & mcr::DTR != 0 {
                lines |= msr::DSR;
            }
            if self.mcr & mcr::OUT1 != 0 {
                lines |= msr::RI;
            }
            if self.mcr & mcr::OUT2 != 0 {
                lines |= msr::DCD;
            }
            lines
        } else {
            msr::CTS | msr::DSR | msr::DCD
        }
    }

    fn write_mcr(&mut self, value: u8) {
        // Compare the inputs before and after rather than the MCR bits, so that entering and
        // leaving loopback also reports the lines that change, as the hardware would.
        let before = self.modem_inputs();
        self.mcr = value & mcr::MASK;
        let after = self.modem_inputs();
        let changed = before ^ after;
        if changed & msr::CTS != 0 {
            self.msr_deltas |= msr::DCTS;
        }
        if changed & msr::DSR != 0 {
            self.msr_deltas |= msr::DDSR;
        }
        if changed & msr::DCD != 0 {
            self.msr_deltas |= msr::DDCD;
        }
        // TERI only reports the trailing edge of RI (asserted -> deasserted).
        if before & msr::RI != 0 && after & msr::RI == 0 {
            self.msr_deltas |= msr::TERI;
        }
    }

    /// The highest-priority pending, enabled interrupt as IIR bits 3:0.
    fn interrupt_id(&self) -> u8 {
        if self.ier & ier::ELSI != 0 && self.lsr_errors & lsr::ERRORS != 0 {
            return iir::RECEIVER_LINE_STATUS;
        }
        if self.ier & ier::ERBFI != 0 && self.rx_len > 0 {
            let trigger = if self.fifo_enabled { self.rx_trigger } else { 1 };
            return if self.rx_len >= trigger { iir::RECEIVED_DATA_AVAILABLE } else { iir::CHARACTER_TIMEOUT };
        }
        if self.ier & ier::ETBEI != 0 && self.thre_pending {
            return iir::THR_EMPTY;
        }
        if self.ier & ier::EDSSI != 0 && self.msr_deltas != 0 {
            return iir::MODEM_STATUS;
        }
        iir::NO_INT
    }

    fn read_iir(&mut self) -> u8 {
        let id = self.interrupt_id();
        // Of all sources only THRE is acknowledged by the IIR read itself.
        if id == iir::THR_EMPTY {
            self.thre_pending = false;
        }
        if self.fifo_enabled { id | iir::FIFOS_ENABLED } else { id }
    }

    fn read_lsr(&mut self) -> u8 {
        let mut value = lsr::THRE | lsr::TEMT | self.lsr_errors;
        if self.rx_len > 0 {
            value |= lsr::DR;
        }
        self.lsr_errors = 0;
        value
    }

    fn read_msr(&mut self) -> u8 {
        let value = self.modem_inputs() | self.msr_deltas;
        self.msr_deltas = 0;
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UART with the modem-control setup every PC driver uses: DTR, RTS and OUT2, so that
    /// interrupts reach the PIC.
    fn pc_uart() -> Uart16550 {
        let mut u = Uart16550::new();
        u.write(reg::MCR, mcr::DTR | mcr::RTS | mcr::OUT2);
        u.read(reg::MSR);
        u
    }

    #[test]
    fn power_on_registers_have_reset_values() {
        let mut u = Uart16550::new();
        assert_eq!(u.read(reg::IER_DLM), 0x00);
        assert_eq!(u.read(reg::IIR_FCR), 0x01);
        assert_eq!(u.read(reg::LCR), 0x00);
        assert_eq!(u.read(reg::MCR), 0x00);
        assert_eq!(u.read(reg::LSR), 0x60);
        assert_eq!(u.read(reg::MSR), 0xB0);
        assert_eq!(u.read(reg::SCR), 0x00);
        assert_eq!(u.divisor(), 12);
        assert_eq!(u.baud(), 9600);
        assert_eq!(u.rx_space(), 1);
        assert!(!u.irq_line());
        assert_eq!(Uart16550::default(), Uart16550::new());
    }

    #[test]
    fn writing_thr_emits_the_byte_and_leaves_the_transmitter_empty() {
        let mut u = Uart16550::new();
        assert_eq!(u.write(reg::RBR_THR_DLL, b'A'), Effects { tx: Some(b'A') });
        assert_eq!(u.read(reg::LSR), 0x60);
    }

    #[test]
    fn writes_to_other_registers_emit_nothing() {
        let mut u = Uart16550::new();
        for offset in 1..=7 {
            assert_eq!(u.write(offset, 0x00), Effects::default());
        }
    }

    #[test]
    fn dlab_maps_offsets_0_and_1_to_the_divisor_latch_and_baud_follows() {
        let mut u = Uart16550::new();
        u.write(reg::IER_DLM, 0x05);
        u.write(reg::LCR, 0x83);
        assert_eq!(u.read(reg::RBR_THR_DLL), 12);
        assert_eq!(u.read(reg::IER_DLM), 0);
        assert_eq!(u.write(reg::RBR_THR_DLL, 0x01), Effects::default());
        u.write(reg::IER_DLM, 0x00);
        assert_eq!(u.baud(), 115_200);
        u.write(reg::RBR_THR_DLL, 0x80);
        u.write(reg::IER_DLM, 0x01);
        assert_eq!(u.read(reg::RBR_THR_DLL), 0x80);
        assert_eq!(u.read(reg::IER_DLM), 0x01);
        assert_eq!(u.divisor(), 0x180);
        assert_eq!(u.baud(), 300);
        u.write(reg::RBR_THR_DLL, 0);
        u.write(reg::IER_DLM, 0);
        assert_eq!(u.baud(), 0);
        u.write(reg::LCR, 0x03);
        assert_eq!(u.read(reg::LCR), 0x03);
        // IER kept its value while hidden behind DLM.
        assert_eq!(u.read(reg::IER_DLM), 0x05);
    }

    #[test]
    fn iir_is_readable_at_offset_2_while_dlab_is_set() {
        let mut u = Uart16550::new();
        u.write(reg::LCR, lcr::DLAB);
        assert_eq!(u.read(reg::IIR_FCR), 0x01);
    }

    #[test]
    fn lcr_reads_back_all_eight_bits() {
        let mut u = Uart16550::new();
        u.write(reg::LCR, 0x7F);
        assert_eq!(u.read(reg::LCR), 0x7F);
    }

    #[test]
    fn ier_keeps_only_its_low_four_bits() {
        let mut u = Uart16550::new();
        u.write(reg::IER_DLM, 0xFF);
        assert_eq!(u.read(reg::IER_DLM), 0x0F);
    }

    #[test]
    fn mcr_keeps_only_its_low_five_bits() {
        let mut u = Uart16550::new();
        u.write(reg::MCR, 0xEB);
        assert_eq!(u.read(reg::MCR), 0x0B);
    }

    #[test]
    fn enabling_fifos_shows_0xc0_in_iir_and_disabling_removes_it() {
        let mut u = Uart16550::new();
        u.write(reg::IIR_FCR, 0x01);
        assert!(u.fifo_enabled());
        assert_eq!(u.read(reg::IIR_FCR), 0xC1);
        u.write(reg::IIR_FCR, 0x00);
        assert_eq!(u.read(reg::IIR_FCR), 0x01);
    }

    #[test]
    fn rbr_returns_received_bytes_in_order_and_sets_dr_while_data_remains() {
        let mut u = Uart16550::new();
        u.write(reg::IIR_FCR, 0x07);
        for b in [1, 2, 3] {
            assert!(u.receive(b));
        }
        assert_eq!(u.read(reg::LSR), 0x61);
        assert_eq!(u.read(reg::RBR_THR_DLL), 1);
        assert_eq!(u.read(reg::RBR_THR_DLL), 2);
        assert_eq!(u.read(reg::RBR_THR_DLL), 3);
        assert_eq!(u.read(reg::LSR), 0x60);
        // An empty RBR keeps presenting its last byte.
        assert_eq!(u.read(reg::RBR_THR_DLL), 3);
    }

    #[test]
    fn rx_fifo_holds_16_bytes_and_the_17th_sets_oe_and_is_dropped() {
        let mut u = Uart16550::new();
        u.write(reg::IIR_FCR, 0x01);
        assert_eq!(u.rx_space(), 16);
        for b in 0..16u8 {
            assert!(u.receive(b));
        }
        assert_eq!(u.rx_space(), 0);
        assert!(!u.receive(0xAA));
        assert_eq!(u.rx_len(), 16);
        assert_eq!(u.read(reg::LSR), 0x63);
        // Reading LSR cleared OE.
        assert_eq!(u.read(reg::LSR), 0x61);
        for b in 0..16u8 {
            assert_eq!(u.read(reg::RBR_THR_DLL), b);
        }
        assert_eq!(u.read(reg::LSR), 0x60);
        assert_eq!(u.rx_space(), 16);
    }

    #[test]
    fn without_fifos_the_receiver_holds_one_byte() {
        let mut u = Uart16550::new();
        assert!(u.receive(b'x'));
        assert_eq!(u.rx_space(), 0);
        assert!(!u.receive(b'y'));
        assert_eq!(u.read(reg::LSR), 0x63);
        assert_eq!(u.read(reg::RBR_THR_DLL), b'x');
        assert_eq!(u.rx_space(), 1);
    }

    #[test]
    fn toggling_fcr_fifo_enable_clears_the_receiver_and_fcr_bit1_clears_it_too() {
        let mut u = Uart16550::new();
        u.write(reg::IIR_FCR, 0x01);
        u.receive(1);
        u.receive(2);
        u.write(reg::IIR_FCR, 0x01);
        assert_eq!(u.rx_len(), 2);
        u.write(reg::IIR_FCR, 0x03);
        assert_eq!(u.rx_len(), 0);
        u.receive(3);
        u.write(reg::IIR_FCR, 0x00);
        assert_eq!(u.rx_len(), 0);
        u.receive(4);
        u.write(reg::IIR_FCR, 0x01);
        assert_eq!(u.rx_len(), 0);
        assert_eq!(u.read(reg::LSR), 0x60);
    }

    #[test]
    fn trigger_level_4_raises_data_available_only_at_4_bytes_and_timeout_below_it() {
        let mut u = pc_uart();
        u.write(reg::IIR_FCR, 0x41);
        u.write(reg::IER_DLM, ier::ERBFI);
        assert_eq!(u.read(reg::IIR_FCR), 0xC1);
        for (i, b) in (1..=3u8).enumerate() {
            u.receive(b);
            assert_eq!(u.read(reg::IIR_FCR), 0xCC, "after {} bytes", i + 1);
            assert!(u.irq_line());
        }
        u.receive(4);
        assert_eq!(u.read(reg::IIR_FCR), 0xC4);
        u.read(reg::RBR_THR_DLL);
        assert_eq!(u.read(reg::IIR_FCR), 0xCC);
        for _ in 0..3 {
            u.read(reg::RBR_THR_DLL);
        }
        assert_eq!(u.read(reg::IIR_FCR), 0xC1);
        assert!(!u.irq_line());
    }

    #[test]
    fn trigger_levels_8_and_14_follow_fcr_bits_7_6() {
        for (fcr_value, level) in [(0x81u8, 8usize), (0xC1, 14), (0x01, 1)] {
            let mut u = Uart16550::new();
            u.write(reg::IIR_FCR, fcr_value);
            u.write(reg::IER_DLM, ier::ERBFI);
            for _ in 1..level {
                u.receive(0);
            }
            if level > 1 {
                assert_eq!(u.read(reg::IIR_FCR), 0xCC);
            }
            u.receive(0);
            assert_eq!(u.read(reg::IIR_FCR), 0xC4);
        }
    }

    #[test]
    fn without_fifos_one_byte_raises_data_available() {
        let mut u = Uart16550::new();
        u.write(reg::IER_DLM, ier::ERBFI);
        u.receive(7);
        assert_eq!(u.read(reg::IIR_FCR), 0x04);
    }

    #[test]
    fn thre_interrupt_is_raised_by_enabling_etbei_cleared_by_iir_read_and_rearmed_by_thr_write() {
        let mut u = pc_uart();
        assert!(!u.irq_line());
        u.write(reg::IER_DLM, ier::ETBEI);
        assert!(u.irq_line());
        assert_eq!(u.read(reg::IIR_FCR), 0x02);
        assert!(!u.irq_line());
        assert_eq!(u.read(reg::IIR_FCR), 0x01);
        assert_eq!(u.write(reg::RBR_THR_DLL, b'z'), Effects { tx: Some(b'z') });
        assert!(u.irq_line());
        assert_eq!(u.read(reg::IIR_FCR), 0x02);
        assert_eq!(u.read(reg::IIR_FCR), 0x01);
    }

    #[test]
    fn rewriting_ier_with_etbei_already_set_does_not_rearm_thre() {
        let mut u = pc_uart();
        u.write(reg::IER_DLM, ier::ETBEI);
        u.read(reg::IIR_FCR);
        u.write(reg::IER_DLM, ier::ETBEI | ier::ERBFI);
        assert_eq!(u.read(reg::IIR_FCR), 0x01);
    }

    #[test]
    fn disabling_etbei_drops_a_pending_thre_interrupt() {
        let mut u = pc_uart();
        u.write(reg::IER_DLM, ier::ETBEI);
        u.write(reg::IER_DLM, 0);
        assert!(!u.irq_line());
        assert_eq!(u.read(reg::IIR_FCR), 0x01);
    }

    #[test]
    fn thr_write_without_etbei_raises_no_interrupt() {
        let mut u = pc_uart();
        u.write(reg::RBR_THR_DLL, b'a');
        assert_eq!(u.read(reg::IIR_FCR), 0x01);
    }

    #[test]
    fn interrupt_priority_is_line_status_then_data_then_thre() {
        let mut u = pc_uart();
        u.write(reg::IER_DLM, ier::ERBFI | ier::ETBEI | ier::ELSI);
        u.receive(1);
        assert!(!u.receive(2));
        assert_eq!(u.read(reg::IIR_FCR), 0x06);
        // An IIR read identifying something else leaves THRE pending.
        assert_eq!(u.read(reg::IIR_FCR), 0x06);
        assert_eq!(u.read(reg::LSR), 0x63);
        assert_eq!(u.read(reg::IIR_FCR), 0x04);
        assert_eq!(u.read(reg::RBR_THR_DLL), 1);
        assert_eq!(u.read(reg::IIR_FCR), 0x02);
        assert_eq!(u.read(reg::IIR_FCR), 0x01);
    }

    #[test]
    fn modem_status_interrupt_has_lowest_priority_and_clears_on_msr_read() {
        let mut u = pc_uart();
        u.write(reg::IER_DLM, ier::EDSSI | ier::ETBEI);
        u.write(reg::MCR, mcr::LOOP | mcr::OUT2);
        assert_eq!(u.read(reg::IIR_FCR), 0x02);
        assert_eq!(u.read(reg::IIR_FCR), 0x00);
        assert!(u.irq_line());
        u.read(reg::MSR);
        assert_eq!(u.read(reg::IIR_FCR), 0x01);
        assert!(!u.irq_line());
    }

    #[test]
    fn irq_line_is_low_while_out2_is_clear_even_with_an_interrupt_pending() {
        let mut u = Uart16550::new();
        u.write(reg::IER_DLM, ier::ETBEI);
        assert!(!u.irq_line());
        u.write(reg::MCR, mcr::OUT2);
        assert!(u.irq_line());
        u.write(reg::MCR, 0);
        assert!(!u.irq_line());
        // Still pending behind the gate.
        assert_eq!(u.read(reg::IIR_FCR), 0x02);
    }

    #[test]
    fn loopback_sends_bytes_to_rx_not_tx() {
        let mut u = Uart16550::new();
        u.write(reg::IIR_FCR, 0x01);
        u.write(reg::MCR, mcr::LOOP);
        assert_eq!(u.write(reg::RBR_THR_DLL, 0x5A), Effects { tx: None });
        assert_eq!(u.read(reg::LSR), 0x61);
        assert_eq!(u.read(reg::RBR_THR_DLL), 0x5A);
        // The line input is disconnected while looping back.
        assert_eq!(u.rx_space(), 0);
        assert!(!u.receive(1));
        assert_eq!(u.read(reg::LSR), 0x60);
        u.write(reg::MCR, 0);
        assert_eq!(u.rx_space(), 16);
        assert_eq!(u.write(reg::RBR_THR_DLL, 0x5A), Effects { tx: Some(0x5A) });
    }

    #[test]
    fn loopback_overrun_drops_the_byte_and_sets_oe() {
        let mut u = Uart16550::new();
        u.write(reg::MCR, mcr::LOOP);
        u.write(reg::RBR_THR_DLL, 1);
        u.write(reg::RBR_THR_DLL, 2);
        assert_eq!(u.read(reg::LSR), 0x63);
        assert_eq!(u.read(reg::RBR_THR_DLL), 1);
    }

    #[test]
    fn loopback_mirrors_mcr_into_msr_with_delta_bits() {
        let mut u = Uart16550::new();
        u.write(reg::MCR, mcr::LOOP);
        // Entering loopback drops the terminal's CTS, DSR and DCD.
        assert_eq!(u.read(reg::MSR), 0x0B);
        assert_eq!(u.read(reg::MSR), 0x00);
        u.write(reg::MCR, mcr::LOOP | mcr::RTS);
        assert_eq!(u.read(reg::MSR), 0x11);
        u.write(reg::MCR, mcr::LOOP | mcr::RTS | mcr::DTR);
        assert_eq!(u.read(reg::MSR), 0x32);
        u.write(reg::MCR, mcr::LOOP | mcr::RTS | mcr::DTR | mcr::OUT1);
        // RI rising edge: no TERI.
        assert_eq!(u.read(reg::MSR), 0x70);
        u.write(reg::MCR, mcr::LOOP | mcr::RTS | mcr::DTR | mcr::OUT1 | mcr::OUT2);
        assert_eq!(u.read(reg::MSR), 0xF8);
        u.write(reg::MCR, mcr::LOOP | mcr::RTS | mcr::DTR | mcr::OUT2);
        assert_eq!(u.read(reg::MSR), 0xB4);
        u.write(reg::MCR, mcr::LOOP);
        assert_eq!(u.read(reg::MSR), 0x0B);
        u.write(reg::MCR, 0);
        assert_eq!(u.read(reg::MSR), 0xBB);
        assert_eq!(u.read(reg::MSR), 0xB0);
    }

    #[test]
    fn msr_outside_loopback_reports_a_connected_terminal_and_ignores_writes() {
        let mut u = Uart16550::new();
        u.write(reg::MSR, 0x4F);
        u.write(reg::MCR, mcr::DTR | mcr::RTS | mcr::OUT1 | mcr::OUT2);
        assert_eq!(u.read(reg::MSR), 0xB0);
    }

    #[test]
    fn lsr_writes_are_ignored() {
        let mut u = Uart16550::new();
        u.write(reg::LSR, 0xFF);
        assert_eq!(u.read(reg::LSR), 0x60);
    }

    #[test]
    fn scr_round_trips_any_byte() {
        let mut u = Uart16550::new();
        for v in [0x00u8, 0x55, 0xAA, 0xFF] {
            u.write(reg::SCR, v);
            assert_eq!(u.read(reg::SCR), v);
        }
    }

    #[test]
    fn offsets_above_7_read_0xff_and_ignore_writes() {
        let mut u = Uart16550::new();
        let before = u.clone();
        for offset in 8..=255u8 {
            assert_eq!(u.write(offset, 0x5A), Effects::default());
            assert_eq!(u.read(offset), 0xFF);
        }
        assert_eq!(u, before);
    }

    #[test]
    fn com1_constants_match_the_pc() {
        assert_eq!(COM1_BASE, 0x3F8);
        assert_eq!(COM1_IRQ, 4);
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
    fn random_accesses_never_panic_and_keep_the_rx_count_within_16() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut u = Uart16550::new();
        let valid_ids = [0x00u8, 0x01, 0x02, 0x04, 0x06, 0x0C];
        for _ in 0..100_000 {
            let r = rng.next();
            let offset = (r >> 8) as u8 % 10;
            let value = (r >> 16) as u8;
            match r % 3 {
                0 => {
                    let v = u.read(offset);
                    if offset == reg::IIR_FCR {
                        assert!(valid_ids.contains(&(v & 0x0F)), "IIR {v:#x}");
                        assert!(v & 0x30 == 0);
                    }
                    if offset > 7 {
                        assert_eq!(v, 0xFF);
                    }
                }
                1 => {
                    let e = u.write(offset, value);
                    assert!(e.tx.is_none() || offset == 0);
                }
                _ => {
                    let space = u.rx_space();
                    let accepted = u.receive(value);
                    assert_eq!(accepted, space > 0);
                }
            }
            assert!(u.rx_len() <= RX_FIFO_SIZE);
            assert!(u.rx_space() <= RX_FIFO_SIZE);
            assert!(u.rx_len() + u.rx_space() <= RX_FIFO_SIZE);
            let _ = u.irq_line();
            let _ = u.baud();
        }
    }
}
