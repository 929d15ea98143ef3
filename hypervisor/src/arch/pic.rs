//! The legacy 8259A pair: remapped away from the exception vectors and fully masked.
//!
//! Firmware leaves the PICs programmed for real mode, with IRQ 0 (the PIT) at vector 8.
//! The hypervisor uses the local APICs only, but the PICs still exist: if one raised an
//! interrupt while a CPU had interrupts enabled (the idle loop does), it would arrive as
//! "vector 8" and look like a double fault. So they are re-initialised (ICW1-ICW4) to
//! vectors 0x20-0x2F and every line is masked (OCW1).

use super::cpu::outb;

const MASTER_CMD: u16 = 0x20;
const MASTER_DATA: u16 = 0x21;
const SLAVE_CMD: u16 = 0xA0;
const SLAVE_DATA: u16 = 0xA1;

/// Remaps both PICs to vectors 0x20-0x2F and masks all their lines.
pub fn disable() {
    // SAFETY: the PIC ports belong to the hypervisor (no guest has port access to them);
    // the sequence is the 8259A initialisation from its datasheet: ICW1 (edge, cascade,
    // ICW4 needed), ICW2 (vector base), ICW3 (cascade on IRQ 2), ICW4 (8086 mode), then
    // OCW1 masking every line.
    unsafe {
        outb(MASTER_CMD, 0x11);
        outb(SLAVE_CMD, 0x11);
        outb(MASTER_DATA, 0x20);
        outb(SLAVE_DATA, 0x28);
        outb(MASTER_DATA, 0x04);
        outb(SLAVE_DATA, 0x02);
        outb(MASTER_DATA, 0x01);
        outb(SLAVE_DATA, 0x01);
        outb(MASTER_DATA, 0xFF);
        outb(SLAVE_DATA, 0xFF);
    }
}
