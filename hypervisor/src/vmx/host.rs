//! The host state every VMCS carries (SDM Vol. 3C "Host-State Area"): what the CPU
//! loads on a VM exit. Read from the running CPU, so each vCPU's VMCS matches the CPU
//! it runs on.

use super::fields::{Field16, Field32, Field64, FieldNatural};
use super::vmcs::Current;
use crate::arch::cpu::rdmsr;
use core::arch::asm;

const IA32_PAT: u32 = 0x277;
const IA32_EFER: u32 = 0xC000_0080;
const IA32_FS_BASE: u32 = 0xC000_0100;
const IA32_GS_BASE: u32 = 0xC000_0101;

#[repr(C, packed)]
struct DescriptorTablePointer {
    limit: u16,
    base: u64,
}

fn sgdt() -> DescriptorTablePointer {
    let mut p = DescriptorTablePointer { limit: 0, base: 0 };
    // SAFETY: SGDT stores 10 bytes into `p`.
    unsafe { asm!("sgdt [{}]", in(reg) &mut p, options(nostack)) };
    p
}

fn sidt() -> DescriptorTablePointer {
    let mut p = DescriptorTablePointer { limit: 0, base: 0 };
    // SAFETY: SIDT stores 10 bytes into `p`.
    unsafe { asm!("sidt [{}]", in(reg) &mut p, options(nostack)) };
    p
}

fn selectors() -> [u16; 7] {
    let (cs, ss, ds, es, fs, gs, tr): (u16, u16, u16, u16, u16, u16, u16);
    // SAFETY: reading segment registers and TR has no side effects.
    unsafe {
        asm!("mov {:x}, cs", out(reg) cs, options(nomem, nostack));
        asm!("mov {:x}, ss", out(reg) ss, options(nomem, nostack));
        asm!("mov {:x}, ds", out(reg) ds, options(nomem, nostack));
        asm!("mov {:x}, es", out(reg) es, options(nomem, nostack));
        asm!("mov {:x}, fs", out(reg) fs, options(nomem, nostack));
        asm!("mov {:x}, gs", out(reg) gs, options(nomem, nostack));
        asm!("str {:x}", out(reg) tr, options(nomem, nostack));
    }
    [cs, ss, ds, es, fs, gs, tr]
}

/// The base of the TSS that `tr` selects, read from the 16-byte system descriptor.
fn tss_base(gdt_base: u64, tr: u16) -> u64 {
    let at = gdt_base + u64::from(tr & !7);
    // SAFETY: TR selects a valid 16-byte TSS descriptor in the loaded GDT.
    let (low, high) = unsafe { ((at as *const u64).read_unaligned(), ((at + 8) as *const u64).read_unaligned()) };
    ((low >> 16) & 0xFF_FFFF) | (((low >> 56) & 0xFF) << 24) | ((high & 0xFFFF_FFFF) << 32)
}

fn control_registers() -> (u64, u64, u64) {
    let (cr0, cr3, cr4): (u64, u64, u64);
    // SAFETY: reading control registers has no side effects.
    unsafe {
        asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack));
        asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack));
        asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack));
    }
    (cr0, cr3, cr4)
}

/// Writes the host-state area from the running CPU. HOST_RSP is written by the entry
/// stub on every entry; HOST_RIP is the stub's exit landing.
pub fn write(vmcs: &Current) {
    let (cr0, cr3, cr4) = control_registers();
    vmcs.write_natural(FieldNatural::HostCr0, cr0);
    vmcs.write_natural(FieldNatural::HostCr3, cr3);
    vmcs.write_natural(FieldNatural::HostCr4, cr4);
    let [cs, ss, ds, es, fs, gs, tr] = selectors();
    // SDM Vol. 3C "Checks on Host Segment and Descriptor-Table Registers": RPL and TI
    // must be 0 (ours are), CS and TR must not be null.
    vmcs.write16(Field16::HostCsSelector, cs & !7);
    vmcs.write16(Field16::HostSsSelector, ss & !7);
    vmcs.write16(Field16::HostDsSelector, ds & !7);
    vmcs.write16(Field16::HostEsSelector, es & !7);
    vmcs.write16(Field16::HostFsSelector, fs & !7);
    vmcs.write16(Field16::HostGsSelector, gs & !7);
    vmcs.write16(Field16::HostTrSelector, tr & !7);
    let gdt = sgdt();
    let idt = sidt();
    vmcs.write_natural(FieldNatural::HostGdtrBase, gdt.base);
    vmcs.write_natural(FieldNatural::HostIdtrBase, idt.base);
    vmcs.write_natural(FieldNatural::HostTrBase, tss_base(gdt.base, tr));
    // SAFETY: these MSRs exist on every x86_64 CPU.
    unsafe {
        vmcs.write_natural(FieldNatural::HostFsBase, rdmsr(IA32_FS_BASE));
        // The per-CPU pointer lives in GS base: a VM exit must restore it.
        vmcs.write_natural(FieldNatural::HostGsBase, rdmsr(IA32_GS_BASE));
        vmcs.write64(Field64::HostIa32Pat, rdmsr(IA32_PAT));
        vmcs.write64(Field64::HostIa32Efer, rdmsr(IA32_EFER));
    }
    vmcs.write32(Field32::HostSysenterCs, 0);
    vmcs.write_natural(FieldNatural::HostSysenterEsp, 0);
    vmcs.write_natural(FieldNatural::HostSysenterEip, 0);
    vmcs.write_natural(FieldNatural::HostRip, super::entry::exit_landing_address());
}
