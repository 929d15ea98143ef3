//! Per-CPU data, reached through the GS base so the hot paths never take a lock or
//! search a table to find "this CPU".

use crate::arch::cpu::{msr, wrmsr};
use core::arch::asm;
use core::sync::atomic::{AtomicBool, Ordering};

/// The most CPUs the hypervisor brings up. MADT entries beyond this are reported and
/// left offline.
pub const MAX_CPUS: usize = 64;

/// What every CPU keeps for itself. `repr(C)` because assembly reads fields at fixed
/// offsets (see [`current_index`]).
#[repr(C)]
pub struct PerCpu {
    /// Points at this structure, so `gs:[0]` yields a normal pointer to it.
    self_ptr: *const PerCpu,
    /// Logical CPU index: 0 is the bootstrap processor, APs follow MADT order.
    pub index: u32,
    /// The local APIC ID, as the MADT and the APIC report it.
    pub apic_id: u32,
    /// Physical address of this CPU's VMXON region; 0 while not in VMX operation.
    pub vmxon_region: u64,
}

impl PerCpu {
    pub const fn new(index: u32, apic_id: u32) -> Self {
        Self { self_ptr: core::ptr::null(), index, apic_id, vmxon_region: 0 }
    }
}

const _: () = assert!(core::mem::offset_of!(PerCpu, index) == 8);

/// Whether any CPU has installed its per-CPU area yet; until then the logger says cpu0.
static READY: AtomicBool = AtomicBool::new(false);

/// Each CPU's APIC ID by logical index, for IPIs to a CPU by index.
static APIC_IDS: [core::sync::atomic::AtomicU32; MAX_CPUS] =
    [const { core::sync::atomic::AtomicU32::new(u32::MAX) }; MAX_CPUS];

/// The APIC ID of the CPU with logical index `cpu` (None before it installed its area).
pub fn apic_id_of(cpu: usize) -> Option<u32> {
    let id = APIC_IDS.get(cpu)?.load(Ordering::Acquire);
    (id != u32::MAX).then_some(id)
}

/// Records `apic_id` for CPU `cpu` (for the BSP, whose APIC is mapped after `install`).
pub fn record_apic_id(cpu: usize, apic_id: u32) {
    if let Some(slot) = APIC_IDS.get(cpu) {
        slot.store(apic_id, Ordering::Release);
    }
}

/// Installs `area` as this CPU's per-CPU data. Called first thing on every CPU.
pub fn install(area: &'static mut PerCpu) {
    area.self_ptr = area as *const PerCpu;
    if let Some(slot) = APIC_IDS.get(area.index as usize) {
        slot.store(area.apic_id, Ordering::Release);
    }
    // SAFETY: IA32_GS_BASE exists on every x86_64 CPU; `area` is 'static, so gs-relative
    // accesses stay valid for the rest of the CPU's life.
    unsafe { wrmsr(msr::IA32_GS_BASE, area as *const PerCpu as u64) };
    READY.store(true, Ordering::Release);
}

/// The running CPU's own area.
pub fn current() -> &'static mut PerCpu {
    let ptr: *mut PerCpu;
    // SAFETY: gs:[0] is the self pointer installed by `install`, which every CPU runs
    // before anything calls this; each CPU only ever touches its own area.
    unsafe {
        asm!("mov {}, gs:[0]", out(reg) ptr, options(nostack, readonly, preserves_flags));
        &mut *ptr
    }
}

/// The running CPU's logical index.
#[inline]
pub fn current_index() -> u32 {
    if !READY.load(Ordering::Acquire) {
        return 0;
    }
    let index: u32;
    // SAFETY: once READY is set, every CPU that runs kernel code has installed its area
    // (the BSP before anything else, each AP before it sets READY-dependent state), and
    // offset 8 is `index` (asserted above).
    unsafe { asm!("mov {:e}, gs:[8]", out(reg) index, options(nostack, readonly, preserves_flags)) };
    index
}
