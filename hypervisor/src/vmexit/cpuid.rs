//! CPUID as a guest sees it: the host's answers, with VMX hidden (no nested
//! virtualization), the "hypervisor present" bit set, and our leaves at 0x40000000
//! (signature and maximum leaf), 0x40000001 (version) and 0x40000010 (timing).

use super::Next;
use crate::arch::cpu::cpuid;
use crate::domain::vcpu::Vcpu;

/// The hypervisor leaves (the range 0x40000000-0x400000FF is reserved for hypervisors).
pub const HV_BASE_LEAF: u32 = 0x4000_0000;
pub const HV_MAX_LEAF: u32 = 0x4000_0010;
/// The timing leaf, at the index KVM and VMware use for it: EAX = TSC frequency in kHz,
/// EBX = the local APIC timer's bus frequency in kHz. A guest needs no calibration.
pub const HV_TIMING_LEAF: u32 = 0x4000_0010;
/// 12 bytes in EBX, ECX, EDX: our own name, never another hypervisor's signature.
pub const SIGNATURE: [u8; 12] = *b"Ferrovisor\0\0";

const LEAF1_ECX_VMX: u32 = 1 << 5;
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;

/// The guest-visible values of leaf `leaf`, sub-leaf `subleaf`.
pub fn guest_view(leaf: u32, subleaf: u32) -> [u32; 4] {
    match leaf {
        HV_BASE_LEAF => {
            let w = |i: usize| u32::from_le_bytes([SIGNATURE[i], SIGNATURE[i + 1], SIGNATURE[i + 2], SIGNATURE[i + 3]]);
            [HV_MAX_LEAF, w(0), w(4), w(8)]
        }
        // Version: major in the high half, minor in the low half.
        0x4000_0001 => [0x0001_0000, 0, 0, 0],
        HV_TIMING_LEAF => {
            let tsc_khz = crate::arch::timer::tsc_hz() / 1000;
            let bus_khz = crate::devices::lapic::BUS_HZ / 1000;
            [u32::try_from(tsc_khz).unwrap_or(u32::MAX), u32::try_from(bus_khz).unwrap_or(u32::MAX), 0, 0]
        }
        0x4000_0002..=0x4000_00FF => [0; 4],
        _ => {
            let r = cpuid(leaf, subleaf);
            let mut v = [r.eax, r.ebx, r.ecx, r.edx];
            if leaf == 1 {
                v[2] = (v[2] & !LEAF1_ECX_VMX) | LEAF1_ECX_HYPERVISOR;
            }
            v
        }
    }
}

pub fn handle(vcpu: &mut Vcpu) -> Next {
    let [a, b, c, d] = guest_view(vcpu.regs.rax as u32, vcpu.regs.rcx as u32);
    vcpu.regs.rax = u64::from(a);
    vcpu.regs.rbx = u64::from(b);
    vcpu.regs.rcx = u64::from(c);
    vcpu.regs.rdx = u64::from(d);
    Next::Advance
}
