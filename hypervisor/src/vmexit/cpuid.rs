//! CPUID as a guest sees it: the host's answers filtered by the domain's CPU policy
//! (`domain::cpu_policy`: what is not virtualized hidden, the vCPU's own topology, the
//! "hypervisor present" bit set), and our leaves at 0x40000000
//! (signature and maximum leaf), 0x40000001 (version) and 0x40000010 (timing).

use super::Next;
use crate::arch::cpu::cpuid;
use crate::domain::Domain;
use crate::domain::cpu_policy::{self, Topology};
use crate::domain::vcpu::Vcpu;
use crate::vmx::fields::FieldNatural;
use crate::vmx::vmcs::Current;

/// The hypervisor leaves (the range 0x40000000-0x400000FF is reserved for hypervisors).
pub const HV_BASE_LEAF: u32 = 0x4000_0000;
pub const HV_MAX_LEAF: u32 = 0x4000_0010;
/// The timing leaf, at the index KVM and VMware use for it: EAX = TSC frequency in kHz,
/// EBX = the local APIC timer's bus frequency in kHz. A guest needs no calibration.
pub const HV_TIMING_LEAF: u32 = 0x4000_0010;
/// 12 bytes in EBX, ECX, EDX: our own name, never another hypervisor's signature.
pub const SIGNATURE: [u8; 12] = *b"Ferrovisor\0\0";

/// The guest-visible values of leaf `leaf`, sub-leaf `subleaf` for the vCPU `topo` describes.
pub fn guest_view(leaf: u32, subleaf: u32, topo: Topology) -> [u32; 4] {
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
        // The TSC's frequency as measured at boot, in the leaves operating systems read
        // it from (Linux: "tsc: Detected ... MHz"): the guest's TSC is the host's, neither
        // offset nor scaled, and the CPU's own answer can be wrong (Bochs reports the
        // model's nominal 3.5 GHz while its TSC counts instructions at 100 MHz).
        0x15 => {
            let hz = crate::arch::timer::tsc_hz();
            // TSC = crystal * EBX / EAX, the crystal in ECX (32 bits): divide the rate
            // down until it fits.
            let k = hz.div_ceil(u64::from(u32::MAX)).max(1);
            [1, u32::try_from(k).unwrap_or(u32::MAX), u32::try_from(hz / k).unwrap_or(u32::MAX), 0]
        }
        0x16 => {
            let mhz = u32::try_from(crate::arch::timer::tsc_hz() / 1_000_000).unwrap_or(u32::MAX) & 0xFFFF;
            [mhz, mhz, 100, 0]
        }
        _ => {
            let r = cpuid(leaf, subleaf);
            cpu_policy::filter(leaf, subleaf, [r.eax, r.ebx, r.ecx, r.edx], topo)
        }
    }
}

/// CPUID.1:ECX.OSXSAVE and CPUID.7.0:ECX.OSPKE reflect CR4.OSXSAVE and CR4.PKE (SDM Vol.
/// 2A "CPUID"): the guest's, not the host's the CPUID instruction here reports.
const LEAF1_ECX_OSXSAVE: u32 = 1 << 27;
/// CPUID.1:EDX.APIC is clear while the local APIC is disabled in IA32_APIC_BASE (SDM
/// Vol. 3A "Local APIC Status and Location"): the vCPU's, as its MSR says.
const LEAF1_EDX_APIC: u32 = 1 << 9;
/// IA32_MISC_ENABLE's "limit CPUID maxval" caps CPUID.0:EAX at 2, and its "XD bit
/// disable" hides NX in CPUID.80000001H:EDX (`guest_msrs::misc_enable`).
const LEAF_80000001_EDX_NX: u32 = 1 << 20;
const LEAF7_ECX_OSPKE: u32 = 1 << 4;
const CR4_OSXSAVE: u64 = 1 << 18;
const CR4_PKE: u64 = 1 << 22;

/// Sets `bit` of `reg` when `on`, clears it otherwise.
fn mirror(reg: u32, bit: u32, on: bool) -> u32 {
    if on { reg | bit } else { reg & !bit }
}

/// Inlined into the fast path on purpose, and the leaves the policy answers from the
/// host's CPUID (all but the hypervisor's and the TSC leaves) go straight there without
/// the call to [`guest_view`]: at opt-level "s" the compiler's inlining choices came
/// and went with unrelated changes elsewhere (CPUID 250, 322, 261, 281 ticks).
#[inline(always)]
pub fn handle(vmcs: &Current, domain: &Domain, vcpu: &mut Vcpu) -> Next {
    let (leaf, subleaf) = (vcpu.regs.rax as u32, vcpu.regs.rcx as u32);
    let topo = Topology { apic_id: vcpu.lapic.apic_id(), vcpus: domain.vcpus.len() as u32 };
    let [mut a, b, mut c, mut d] = if leaf < 0x15 {
        let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
        cpu_policy::filter(leaf, subleaf, [r.eax, r.ebx, r.ecx, r.edx], topo)
    } else {
        guest_view(leaf, subleaf, topo)
    };
    if leaf == 1 {
        let cr4 = vmcs.read_natural(FieldNatural::GuestCr4);
        c = mirror(c, LEAF1_ECX_OSXSAVE, cr4 & CR4_OSXSAVE != 0);
        d = mirror(d, LEAF1_EDX_APIC, vcpu.lapic.apic_base() & crate::devices::lapic::APIC_BASE_ENABLE != 0);
    } else if leaf == 7 && subleaf == 0 {
        let cr4 = vmcs.read_natural(FieldNatural::GuestCr4);
        c = mirror(c, LEAF7_ECX_OSPKE, cr4 & CR4_PKE != 0);
    } else if leaf == 0 && vcpu.misc_enable.limit_cpuid() {
        a = a.min(2);
    } else if leaf == 0x8000_0001 && vcpu.misc_enable.xd_disabled() {
        d &= !LEAF_80000001_EDX_NX;
    }
    vcpu.regs.rax = u64::from(a);
    vcpu.regs.rbx = u64::from(b);
    vcpu.regs.rcx = u64::from(c);
    vcpu.regs.rdx = u64::from(d);
    Next::Advance
}
