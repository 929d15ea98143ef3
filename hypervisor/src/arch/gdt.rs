//! Per-CPU GDT and TSS. The TSS exists for its interrupt stack table: #DF, NMI and #MC
//! run on stacks of their own so a kernel stack overflow or an NMI that lands anywhere
//! still produces a report instead of a triple fault.

use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;

/// IST slots (1-based in the IDT, 0-based in the TSS array).
pub const IST_DOUBLE_FAULT: u16 = 1;
pub const IST_NMI: u16 = 2;
pub const IST_MACHINE_CHECK: u16 = 3;

pub const IST_STACK_SIZE: usize = 16 * 1024;

/// One CPU's descriptor tables. The BSP keeps its own in `.bss` (before the heap
/// exists); each AP gets one from the heap. The IST stacks are separate allocations
/// (with guard pages on APs) whose tops are handed to [`CpuTables::load`].
pub struct CpuTables {
    gdt: GlobalDescriptorTable,
    tss: TaskStateSegment,
}

/// The selectors the hypervisor (and later, the VMCS host state) uses.
#[derive(Debug, Clone, Copy)]
pub struct Selectors {
    pub code: SegmentSelector,
    pub data: SegmentSelector,
    pub tss: SegmentSelector,
}

impl CpuTables {
    pub const fn new() -> Self {
        Self { gdt: GlobalDescriptorTable::new(), tss: TaskStateSegment::new() }
    }

    /// Builds and loads this CPU's GDT and TSS. `self` must live forever: the CPU keeps
    /// pointing at it.
    /// `ist_tops` are the top addresses of the #DF, NMI and #MC stacks, in IST order.
    pub fn load(&'static mut self, ist_tops: [VirtAddr; 3]) -> Selectors {
        for (slot, top) in ist_tops.into_iter().enumerate() {
            // Stacks grow down; 16-byte alignment is what the SysV ABI expects at entry.
            self.tss.interrupt_stack_table[slot] = top.align_down(16u64);
        }
        let tss: &'static TaskStateSegment = &self.tss;
        let code = self.gdt.append(Descriptor::kernel_code_segment());
        let data = self.gdt.append(Descriptor::kernel_data_segment());
        let tss_sel = self.gdt.append(Descriptor::tss_segment(tss));
        let gdt: &'static GlobalDescriptorTable = &self.gdt;
        gdt.load();
        // SAFETY: the selectors index descriptors of the GDT just loaded, which lives
        // forever; reloading CS/SS/DS/ES with them keeps executing the same flat space.
        unsafe {
            CS::set_reg(code);
            SS::set_reg(data);
            DS::set_reg(data);
            ES::set_reg(data);
            load_tss(tss_sel);
        }
        Selectors { code, data, tss: tss_sel }
    }
}

impl Default for CpuTables {
    fn default() -> Self {
        Self::new()
    }
}
