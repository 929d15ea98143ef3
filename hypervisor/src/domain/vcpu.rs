//! A virtual CPU: its VMCS, the registers the VMCS does not hold, and its statistics.

use super::boot_area;
use crate::devices::lapic::LocalApic;
use crate::vmx::controls::Controls;
use crate::vmx::entry::GuestRegs;
use crate::vmx::fields::{Field16, Field32, Field64, FieldNatural};
use crate::vmx::vmcs::{Current, VmcsRegion};
use crate::vmx::vpid::{Vpid, VpidPool};

/// Each vCPU gets its own VPID so the TLB keeps guests apart without flushing on every
/// switch; VPIDs return to the pool when their vCPU goes away.
static VPIDS: spin::Mutex<VpidPool> = spin::Mutex::new(VpidPool::new());

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_VMXE: u64 = 1 << 13;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
/// The power-on PAT (SDM Vol. 3A "PAT Initialization").
const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

/// Segment access rights (SDM Vol. 3C "Guest Segment Registers"): type, S, DPL, P,
/// L, D/B, G; bit 16 marks the segment unusable.
const AR_CODE64: u32 = 0xA09B;
const AR_CODE32: u32 = 0xC09B;
const AR_REAL_CODE: u32 = 0x009B;
const AR_REAL_DATA: u32 = 0x0093;
const AR_DATA: u32 = 0xC093;
const AR_TSS64_BUSY: u32 = 0x008B;
const AR_UNUSABLE: u32 = 1 << 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuState {
    Runnable,
    /// In HLT: waits for an interrupt (or, halted with interrupts disabled, for INIT).
    Blocked,
    /// An application processor before its STARTUP IPI (SDM Vol. 3A "MP Initialization").
    WaitForSipi,
    /// Its domain is paused: off the scheduler until unpaused.
    Paused,
    /// The domain ended; this vCPU never runs again.
    Done,
}

/// The CR0/CR4 bits the hypervisor owns (guest/host masks) and what the guest believes.
#[derive(Debug, Clone, Copy, Default)]
pub struct CrShadows {
    pub cr0_mask: u64,
    pub cr0_shadow: u64,
    pub cr4_mask: u64,
    pub cr4_shadow: u64,
}

pub struct Vcpu {
    pub id: u32,
    pub vpid: Vpid,
    pub vmcs: VmcsRegion,
    pub regs: GuestRegs,
    pub launched: bool,
    pub state: VcpuState,
    pub cr: CrShadows,
    /// The vCPU's local APIC (CR8 is its TPR's priority class).
    pub lapic: LocalApic,
    /// IA32_TSC_DEADLINE as the guest wrote it (TSC ticks; 0 = disarmed).
    pub tsc_deadline: u64,
    /// Interrupt-window exiting is on: an interrupt waits for the guest to accept it.
    pub window_exiting: bool,
    pub interrupts_injected: u64,
    /// IPIs to other vCPUs, which single-vCPU domains cannot deliver yet.
    pub ipis_dropped: u64,
    /// When the current time slice ends (TSC); the scheduler sets it.
    pub slice_end_tsc: u64,
    /// When the VMX preemption timer armed before the last full entry fires (TSC): the
    /// earliest of the slice's end and the guest's timers. Exits on the fast path
    /// re-arm it for the same moment.
    pub timer_until_tsc: u64,
    /// The STARTUP vector to begin at (CS = vector << 8, IP = 0) on the next entry.
    pub start_vector: Option<u8>,
    /// Halted with RFLAGS.IF clear: only INIT (or NMI) can wake it.
    pub halted_if_clear: bool,
    /// The guest's XCR0 (loaded when its vCPU starts a slice, and by its own XSETBV).
    pub xcr0: u64,
    /// Exits handled, per basic exit reason (the domain report sums its vCPUs).
    pub exit_counts: [u64; super::EXIT_REASONS],
    /// The CPU whose host state this VMCS holds (None: not yet run anywhere).
    pub host_cpu: Option<u32>,
    /// x87/SSE/AVX state while another vCPU uses the CPU.
    pub fpu: crate::arch::fpu::FpuState,
    /// The SYSCALL/SWAPGS MSRs as the guest wrote them (STAR, LSTAR, CSTAR, SFMASK,
    /// KERNEL_GS_BASE): the VMCS does not switch them, so they are loaded into the CPU
    /// when the vCPU starts a slice (the hypervisor never uses them itself).
    pub syscall_msrs: [u64; 5],
    /// IA32_TSC_AUX as the guest wrote it (what RDTSCP and RDPID return), loaded into
    /// the CPU's MSR when the vCPU starts a slice.
    pub tsc_aux: u32,
    /// IA32_SPEC_CTRL as the guest wrote it (in the CPU while the vCPU runs, see
    /// `arch::spec_ctrl`).
    pub spec_ctrl: u64,
    /// Whether entries need `arch::spec_ctrl::before_entry`/`after_exit` (set at slice
    /// start and when the guest writes SPEC_CTRL).
    pub spec_ctrl_switch: bool,
    /// DR0-3 and DR6 (`vmexit::debug`, switched lazily).
    pub debug: crate::arch::debugreg::DebugRegs,
    /// The last instruction the MMIO path fetched and decoded, re-checked before reuse.
    pub mmio_fetch: Option<crate::decode::FetchCache>,
    /// The guest's TSC: offset from the host's, and IA32_TSC_ADJUST.
    pub tsc: crate::guest_msrs::tsc::GuestTsc,
    /// IA32_MISC_ENABLE.
    pub misc_enable: crate::guest_msrs::misc_enable::MiscEnable,
    /// The machine-check MSRs (they never report an error).
    pub mca: crate::guest_msrs::mca::MachineCheck,
    /// An NMI waits for the guest to be able to take it (the CPU's NMI latch).
    pub nmi_pending: bool,
    /// NMI-window exiting is on (mirrors the VMCS control).
    pub nmi_window_exiting: bool,
    pub nmis_injected: u64,
    /// The 8259's output as LINT0 last saw it (vCPU 0), for its rising edges.
    pub lint0_high: bool,
}

impl Vcpu {
    /// `None` when the machine is out of memory for the VMCS or the XSAVE area, or all
    /// 65535 VPIDs are taken.
    pub fn new(id: u32, revision_id: u32) -> Option<Self> {
        let vmcs = VmcsRegion::allocate(revision_id)?;
        let fpu = crate::arch::fpu::FpuState::new()?;
        Some(Self {
            id,
            vpid: VPIDS.lock().allocate()?,
            vmcs,
            regs: GuestRegs::default(),
            launched: false,
            state: VcpuState::Runnable,
            cr: CrShadows::default(),
            lapic: LocalApic::new(id, id == 0),
            tsc_deadline: 0,
            window_exiting: false,
            interrupts_injected: 0,
            ipis_dropped: 0,
            slice_end_tsc: u64::MAX,
            timer_until_tsc: u64::MAX,
            start_vector: None,
            halted_if_clear: false,
            xcr0: 1,
            exit_counts: [0; super::EXIT_REASONS],
            host_cpu: None,
            fpu,
            tsc_aux: 0,
            syscall_msrs: [0; 5],
            spec_ctrl: 0,
            spec_ctrl_switch: false,
            debug: Default::default(),
            mmio_fetch: None,
            tsc: Default::default(),
            misc_enable: Default::default(),
            mca: Default::default(),
            nmi_pending: false,
            nmi_window_exiting: false,
            nmis_injected: 0,
            lint0_high: false,
        })
    }
}

impl Drop for Vcpu {
    fn drop(&mut self) {
        VPIDS.lock().release(self.vpid);
    }
}

/// Everything a VMCS needs besides the host state.
pub struct VmcsSetup<'a> {
    pub controls: &'a Controls,
    pub eptp: u64,
    pub io_bitmaps: (u64, u64),
    pub msr_bitmap: u64,
    pub cr0_fixed: (u64, u64),
    pub cr4_fixed: (u64, u64),
    pub unrestricted_guest: bool,
    pub ia32e_mode_entry_bit: u32,
}

/// The control fields every vCPU shares; `long_mode` sets "IA-32e mode guest".
fn write_controls(vmcs: &Current, vcpu: &Vcpu, s: &VmcsSetup, long_mode: bool) {
    let c = s.controls;
    vmcs.write32(Field32::PinBasedControls, c.pin);
    vmcs.write32(Field32::PrimaryProcBasedControls, c.proc);
    vmcs.write32(Field32::SecondaryProcBasedControls, c.proc2);
    vmcs.write32(Field32::ExitControls, c.exit);
    vmcs.write32(Field32::EntryControls, c.entry | if long_mode { s.ia32e_mode_entry_bit } else { 0 });
    // Only #MC exits: a machine check is the host's to handle, never the guest's.
    vmcs.write32(Field32::ExceptionBitmap, 1 << crate::arch::exceptions::MACHINE_CHECK);
    vmcs.write32(Field32::Cr3TargetCount, 0);
    vmcs.write32(Field32::ExitMsrStoreCount, 0);
    vmcs.write32(Field32::ExitMsrLoadCount, 0);
    vmcs.write32(Field32::EntryMsrLoadCount, 0);
    vmcs.write32(Field32::EntryInterruptionInfo, 0);
    vmcs.write16(Field16::VirtualProcessorId, vcpu.vpid.get());
    vmcs.write64(Field64::EptPointer, s.eptp);
    vmcs.write64(Field64::IoBitmapA, s.io_bitmaps.0);
    vmcs.write64(Field64::IoBitmapB, s.io_bitmaps.1);
    vmcs.write64(Field64::MsrBitmaps, s.msr_bitmap);
    vmcs.write64(Field64::VmcsLinkPointer, u64::MAX);
    vmcs.write64(Field64::TscOffset, vcpu.tsc.offset);
    // With "enable XSAVES/XRSTORS", XSAVES exits for any IA32_XSS bit set here; none
    // of the supervisor state it manages is ours, so nothing exits.
    if c.proc2 & crate::vmx::caps::SecondaryProcBased::ENABLE_XSAVES.bits() != 0 {
        vmcs.write64(Field64::XssExitingBitmap, 0);
    }
}

/// Sets CR0/CR4 to what the guest should believe (`cr0`, `cr4`), with the bits VMX
/// forces kept set underneath and owned by us through the guest/host masks.
fn write_control_registers(vmcs: &Current, vcpu: &mut Vcpu, s: &VmcsSetup, cr0: u64, cr4: u64) {
    let mut cr0_fixed0 = s.cr0_fixed.0;
    if s.unrestricted_guest {
        cr0_fixed0 &= !(CR0_PE | CR0_PG);
    }
    let cr4_fixed0 = s.cr4_fixed.0 | CR4_VMXE;
    vcpu.cr = CrShadows { cr0_mask: cr0_fixed0, cr0_shadow: cr0, cr4_mask: cr4_fixed0, cr4_shadow: cr4 };
    vmcs.write_natural(FieldNatural::Cr0GuestHostMask, vcpu.cr.cr0_mask);
    vmcs.write_natural(FieldNatural::Cr0ReadShadow, vcpu.cr.cr0_shadow);
    vmcs.write_natural(FieldNatural::Cr4GuestHostMask, vcpu.cr.cr4_mask);
    vmcs.write_natural(FieldNatural::Cr4ReadShadow, vcpu.cr.cr4_shadow);
    vmcs.write_natural(FieldNatural::GuestCr0, (cr0 | cr0_fixed0) & s.cr0_fixed.1);
    vmcs.write_natural(FieldNatural::GuestCr4, (cr4 | cr4_fixed0) & s.cr4_fixed.1);
}

/// Flat segments: CS with `code_ar`, the data segments with `data_ar`, a busy TSS and
/// an unusable LDTR (SDM Vol. 3C "Checks on Guest Segment Registers").
fn write_flat_segments(vmcs: &Current, code: u16, code_ar: u32, data: u16) {
    vmcs.write16(Field16::GuestCsSelector, code);
    vmcs.write_natural(FieldNatural::GuestCsBase, 0);
    vmcs.write32(Field32::GuestCsLimit, u32::MAX);
    vmcs.write32(Field32::GuestCsAccessRights, code_ar);
    for (sel, base, limit, ar) in [
        (Field16::GuestSsSelector, FieldNatural::GuestSsBase, Field32::GuestSsLimit, Field32::GuestSsAccessRights),
        (Field16::GuestDsSelector, FieldNatural::GuestDsBase, Field32::GuestDsLimit, Field32::GuestDsAccessRights),
        (Field16::GuestEsSelector, FieldNatural::GuestEsBase, Field32::GuestEsLimit, Field32::GuestEsAccessRights),
        (Field16::GuestFsSelector, FieldNatural::GuestFsBase, Field32::GuestFsLimit, Field32::GuestFsAccessRights),
        (Field16::GuestGsSelector, FieldNatural::GuestGsBase, Field32::GuestGsLimit, Field32::GuestGsAccessRights),
    ] {
        vmcs.write16(sel, data);
        vmcs.write_natural(base, 0);
        vmcs.write32(limit, u32::MAX);
        vmcs.write32(ar, AR_DATA);
    }
    vmcs.write16(Field16::GuestTrSelector, 0);
    vmcs.write_natural(FieldNatural::GuestTrBase, 0);
    vmcs.write32(Field32::GuestTrLimit, 0x67);
    vmcs.write32(Field32::GuestTrAccessRights, AR_TSS64_BUSY);
    vmcs.write16(Field16::GuestLdtrSelector, 0);
    vmcs.write_natural(FieldNatural::GuestLdtrBase, 0);
    vmcs.write32(Field32::GuestLdtrLimit, 0);
    vmcs.write32(Field32::GuestLdtrAccessRights, AR_UNUSABLE);
}

/// Registers every entry mode starts with.
fn write_common_state(vmcs: &Current, entry: u64, rsp: u64) {
    vmcs.write_natural(FieldNatural::GuestDr7, 0x400);
    vmcs.write_natural(FieldNatural::GuestRsp, rsp);
    vmcs.write_natural(FieldNatural::GuestRip, entry);
    vmcs.write_natural(FieldNatural::GuestRflags, 0x2);
    vmcs.write64(Field64::GuestIa32Pat, PAT_DEFAULT);
    vmcs.write64(Field64::GuestIa32Debugctl, 0);
    vmcs.write32(Field32::GuestInterruptibilityState, 0);
    vmcs.write32(Field32::GuestActivityState, 0);
    vmcs.write_natural(FieldNatural::GuestPendingDebugExceptions, 0);
    vmcs.write32(Field32::GuestSysenterCs, 0);
    vmcs.write_natural(FieldNatural::GuestSysenterEsp, 0);
    vmcs.write_natural(FieldNatural::GuestSysenterEip, 0);
    vmcs.write_natural(FieldNatural::GuestIdtrBase, 0);
    vmcs.write32(Field32::GuestIdtrLimit, 0);
}

/// Linux's 64-bit boot protocol (boot.rst "64-bit Boot Protocol"): long mode with the
/// boot area's identity paging, a GDT with __BOOT_CS (0x10) and __BOOT_DS (0x18), CS =
/// __BOOT_CS, DS = ES = SS = __BOOT_DS, interrupts off, RSI = the zero page.
pub fn setup_linux64(vmcs: &Current, vcpu: &mut Vcpu, s: &VmcsSetup, entry: u64, zero_page: u64) {
    use super::linux::{BOOT_CS, BOOT_DS, GDT_LIMIT};
    write_long_mode_state(vmcs, vcpu, s, boot_area::BootArea::USUAL, (BOOT_CS, BOOT_DS), GDT_LIMIT);
    // The kernel sets up its own stack before using one; RSP points below the zero page.
    write_common_state(vmcs, entry, zero_page);
    vcpu.regs.rsi = zero_page;
}

/// Long mode with the identity paging and GDT (`gdt_limit` bytes of it) of the boot
/// area at `area`, flat segments with the (code, data) selectors.
fn write_long_mode_state(
    vmcs: &Current,
    vcpu: &mut Vcpu,
    s: &VmcsSetup,
    area: boot_area::BootArea,
    (code, data): (u16, u16),
    gdt_limit: u32,
) {
    write_controls(vmcs, vcpu, s, true);
    let cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    write_control_registers(vmcs, vcpu, s, cr0, CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT);
    vmcs.write_natural(FieldNatural::GuestCr3, area.pml4());
    vmcs.write64(Field64::GuestIa32Efer, EFER_LME | EFER_LMA | EFER_NXE);
    write_flat_segments(vmcs, code, AR_CODE64, data);
    vmcs.write_natural(FieldNatural::GuestGdtrBase, area.gdt());
    vmcs.write32(Field32::GuestGdtrLimit, gdt_limit);
}

/// 32-bit flat protected mode, paging off, as Multiboot 0.6.96 section 3.2 prescribes:
/// EAX = 0x2BADB002, EBX = the boot information, CS/DS flat 4 GiB, interrupts off.
/// The guest must load its own GDT before reloading a segment register, so GDTR is 0.
pub fn setup_protected32(vmcs: &Current, vcpu: &mut Vcpu, s: &VmcsSetup, entry: u64, eax: u32, ebx: u32) {
    write_controls(vmcs, vcpu, s, false);
    write_control_registers(vmcs, vcpu, s, CR0_PE | CR0_ET | CR0_NE, 0);
    vmcs.write_natural(FieldNatural::GuestCr3, 0);
    vmcs.write64(Field64::GuestIa32Efer, 0);
    write_flat_segments(vmcs, 0x08, AR_CODE32, 0x10);
    vmcs.write_natural(FieldNatural::GuestGdtrBase, 0);
    vmcs.write32(Field32::GuestGdtrLimit, 0);
    write_common_state(vmcs, entry, 0);
    vcpu.regs.rax = u64::from(eax);
    vcpu.regs.rbx = u64::from(ebx);
}

/// 16-bit real mode at a reset-like state (needs unrestricted guest: CR0.PE = 0 under
/// VMX). CS:IP = 0000:entry below 64 KiB, else (entry >> 4):(entry & 0xF); data
/// segments at 0 with 64 KiB limits; the IVT at 0; interrupts off.
pub fn setup_real16(vmcs: &Current, vcpu: &mut Vcpu, s: &VmcsSetup, entry: u64) {
    write_controls(vmcs, vcpu, s, false);
    write_control_registers(vmcs, vcpu, s, CR0_ET, 0);
    let (cs, ip) = if entry < 0x1_0000 { (0u16, entry) } else { ((entry >> 4) as u16, entry & 0xF) };
    write_real_mode_state(vmcs, cs, ip);
}

/// Real-mode guest state with CS:IP = `cs`:`ip` (SDM Vol. 3A "Processor State After
/// Reset"): CR3 and EFER 0; segments with base = selector << 4, 64 KiB limits, present
/// read/write (code: execute/read), accessed (SDM Vol. 3C "Checks on Guest Segment
/// Registers", unrestricted-guest rules); GDTR and IDTR at 0 with 64 KiB limits.
fn write_real_mode_state(vmcs: &Current, cs: u16, ip: u64) {
    vmcs.write_natural(FieldNatural::GuestCr3, 0);
    vmcs.write64(Field64::GuestIa32Efer, 0);
    write_flat_segments(vmcs, cs, AR_REAL_CODE, 0);
    vmcs.write_natural(FieldNatural::GuestCsBase, u64::from(cs) << 4);
    for limit in [
        Field32::GuestCsLimit,
        Field32::GuestSsLimit,
        Field32::GuestDsLimit,
        Field32::GuestEsLimit,
        Field32::GuestFsLimit,
        Field32::GuestGsLimit,
    ] {
        vmcs.write32(limit, 0xFFFF);
    }
    for ar in [
        Field32::GuestSsAccessRights,
        Field32::GuestDsAccessRights,
        Field32::GuestEsAccessRights,
        Field32::GuestFsAccessRights,
        Field32::GuestGsAccessRights,
    ] {
        vmcs.write32(ar, AR_REAL_DATA);
    }
    vmcs.write_natural(FieldNatural::GuestGdtrBase, 0);
    vmcs.write32(Field32::GuestGdtrLimit, 0xFFFF);
    write_common_state(vmcs, ip, 0);
    vmcs.write32(Field32::GuestIdtrLimit, 0xFFFF);
}

/// INIT (SDM Vol. 3A "Processor State After Reset", the INIT column), for a vCPU that
/// a STARTUP IPI is about to start: real mode, general-purpose registers cleared (EDX
/// the processor signature), RFLAGS 2, CR0 with ET only, CR2/CR3/CR4 and EFER 0, XCR0
/// 1, DR0-3 cleared, DR6 and DR7 at their initial values, no pending event. x87/SSE
/// state and most MSRs are left alone, as INIT leaves them. The STARTUP vector then
/// sets CS:IP (the caller). Without this, an AP that an OS onlines a second time
/// (CPU hot-plug, kexec) would start in whatever mode it was left in.
pub fn reset_for_startup(vmcs: &Current, vcpu: &mut Vcpu) {
    use crate::vmx::caps::{EntryControls, PrimaryProcBased};
    let entry = vmcs.read32(Field32::EntryControls) & !EntryControls::IA32E_MODE_GUEST.bits();
    vmcs.write32(Field32::EntryControls, entry);
    let windows = PrimaryProcBased::INTERRUPT_WINDOW_EXITING | PrimaryProcBased::NMI_WINDOW_EXITING;
    let proc = vmcs.read32(Field32::PrimaryProcBasedControls) & !windows.bits();
    vmcs.write32(Field32::PrimaryProcBasedControls, proc);
    vcpu.window_exiting = false;
    vcpu.nmi_window_exiting = false;
    // None waiting: NMIs are held off in wait-for-SIPI (the run loop does not look at
    // them then). The real-mode state below clears NMI blocking.
    vcpu.nmi_pending = false;
    vmcs.write32(Field32::EntryInterruptionInfo, 0);
    vcpu.cr.cr0_shadow = CR0_ET;
    vcpu.cr.cr4_shadow = 0;
    vmcs.write_natural(FieldNatural::Cr0ReadShadow, CR0_ET);
    vmcs.write_natural(FieldNatural::Cr4ReadShadow, 0);
    vmcs.write_natural(FieldNatural::GuestCr0, CR0_ET | vcpu.cr.cr0_mask);
    vmcs.write_natural(FieldNatural::GuestCr4, vcpu.cr.cr4_mask);
    // INIT leaves IA32_PAT as it was.
    let pat = vmcs.read64(Field64::GuestIa32Pat);
    write_real_mode_state(vmcs, 0, 0);
    vmcs.write64(Field64::GuestIa32Pat, pat);
    vcpu.regs = GuestRegs { rdx: u64::from(crate::arch::cpu::cpuid(1, 0).eax), ..GuestRegs::default() };
    vcpu.xcr0 = 1;
    vcpu.debug.dr = [0; 4];
    vcpu.debug.dr6 = crate::arch::debugreg::DR6_INIT;
    vcpu.halted_if_clear = false;
    vcpu.mmio_fetch = None;
}

/// Fills the control fields and the 64-bit guest state of `vcpu`'s VMCS (current), for
/// the boot area at `area`.
pub fn setup_long_mode(
    vmcs: &Current,
    vcpu: &mut Vcpu,
    s: &VmcsSetup,
    area: boot_area::BootArea,
    entry: u64,
    stack_top: u64,
) {
    let selectors = (boot_area::CODE64_SELECTOR, boot_area::DATA_SELECTOR);
    write_long_mode_state(vmcs, vcpu, s, area, selectors, 3 * 8 - 1);
    write_common_state(vmcs, entry, stack_top);
    vcpu.regs.rdi = area.boot_info();
}
