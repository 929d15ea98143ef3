//! The CPU a domain sees through CPUID (Xen's "CPU policy"): the host's answers, minus
//! what the hypervisor does not virtualize, with the topology of the domain's own vCPUs.
//!
//! Why each feature is hidden: a guest that finds a feature uses it, and every feature
//! here would reach hardware the hypervisor keeps for itself or does not model:
//! - VMX (no nested virtualization), SMX, SGX, Intel PT, the resource-director
//!   technology (RDT monitoring and allocation), debug store, the performance-monitoring
//!   leaf: their MSRs are refused (#GP), so advertising them only produces "unchecked
//!   MSR access" warnings in Linux.
//! - MONITOR/MWAIT: MWAIT exits and is executed as a NOP (a guest must not park the
//!   physical CPU in a deep C-state), so an idle loop built on it would spin at full
//!   speed. Without it Linux idles with HLT, which blocks the vCPU and frees the CPU.
//! - Thermal and power management (ACPI thermal monitor, TM1/TM2, Enhanced SpeedStep,
//!   leaf 6 except ARAT): host hardware, not the guest's. ARAT ("the APIC timer keeps
//!   running in deep C-states") is true of the virtual local APIC, so it is shown.
//! - XSAVEC, XSAVES and XFD: XSAVES needs a VM-execution control the hypervisor does not
//!   enable (it would #UD), and without it the compacted-format sizes are meaningless
//!   (Linux warned "XSAVE consistency problem" and turned XSAVE off).
//! - IA32_ARCH_CAPABILITIES and IA32_CORE_CAPABILITIES, and the MSRs
//!   behind SRBDS_CTRL, TSX_FORCE_ABORT and architectural LBRs: not emulated. Of the
//!   speculation controls in leaf 7 EDX, IBRS/IBPB, STIBP, SSBD, L1D_FLUSH and MD_CLEAR
//!   show when the CPU has them: each is virtualized (`crate::spec_ctrl`); the further
//!   SPEC_CTRL bits of leaf 7 sub-leaf 2 are not.
//!
//! Topology: one package whose cores are the domain's vCPUs, one thread each. The
//! initial APIC ID (leaf 1 EBX, leaf 0xB/0x1F EDX) is the vCPU's local APIC ID, so
//! Linux's "APIC id mismatch" check and the MADT agree with CPUID.

/// What CPUID must say about the vCPU asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    /// The asking vCPU's local APIC ID.
    pub apic_id: u32,
    /// How many vCPUs the domain has (at least 1).
    pub vcpus: u32,
}

impl Topology {
    /// The vCPU count, within what a domain can have (the configuration and
    /// `DomainCreate` allow 64), so that the arithmetic below cannot overflow.
    fn vcpus(self) -> u32 {
        self.vcpus.clamp(1, 128)
    }

    /// Bits of the APIC ID that number the cores in the package.
    fn core_bits(self) -> u32 {
        self.vcpus().next_power_of_two().trailing_zeros()
    }
}

mod bit {
    // Leaf 1 ECX.
    pub const DTES64: u32 = 1 << 2;
    pub const MONITOR: u32 = 1 << 3;
    pub const DS_CPL: u32 = 1 << 4;
    pub const VMX: u32 = 1 << 5;
    pub const SMX: u32 = 1 << 6;
    pub const EST: u32 = 1 << 7;
    pub const TM2: u32 = 1 << 8;
    pub const SDBG: u32 = 1 << 11;
    pub const XTPR: u32 = 1 << 14;
    pub const PDCM: u32 = 1 << 15;
    pub const HYPERVISOR: u32 = 1 << 31;
    // Leaf 1 EDX.
    pub const DS: u32 = 1 << 21;
    pub const ACPI: u32 = 1 << 22;
    pub const HTT: u32 = 1 << 28;
    pub const TM: u32 = 1 << 29;
    pub const PBE: u32 = 1 << 31;
    // Leaf 6 EAX.
    pub const ARAT: u32 = 1 << 2;
    // Leaf 7.0 EBX.
    #[cfg(test)]
    pub const TSC_ADJUST: u32 = 1 << 1;
    pub const SGX: u32 = 1 << 2;
    pub const RDT_M: u32 = 1 << 12;
    pub const RDT_A: u32 = 1 << 15;
    pub const INTEL_PT: u32 = 1 << 25;
    // Leaf 7.0 ECX.
    pub const WAITPKG: u32 = 1 << 5;
    pub const SGX_LC: u32 = 1 << 30;
    // Leaf 7.0 EDX.
    pub const SRBDS_CTRL: u32 = 1 << 9;
    pub const TSX_FORCE_ABORT: u32 = 1 << 13;
    pub const ARCH_LBR: u32 = 1 << 19;
    pub const ARCH_CAPABILITIES: u32 = 1 << 29;
    pub const CORE_CAPABILITIES: u32 = 1 << 30;
    // Leaf 0xD.1 EAX.
    pub const XSAVEC: u32 = 1 << 1;
    pub const XSAVES: u32 = 1 << 3;
    pub const XFD: u32 = 1 << 4;
}

/// Leaves 0xB and 0x1F: level types (ECX bits 15:8).
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// The leaves [`filter`] changes, as a bit mask of leaf numbers (all below 32).
const FILTERED: u32 = 1 << 1
    | 1 << 4
    | 1 << 5
    | 1 << 6
    | 1 << 7
    | 1 << 0xA
    | 1 << 0xB
    | 1 << 0xD
    | 1 << 0xF
    | 1 << 0x10
    | 1 << 0x12
    | 1 << 0x14
    | 1 << 0x1F;

/// The guest's answer for `leaf`/`subleaf`, given the host's (`host`, as EAX, EBX, ECX,
/// EDX). Leaves this policy does not mention pass through unchanged; the hypervisor's
/// own leaves (0x4000_00xx) and the TSC leaves are answered by the caller.
#[inline]
pub fn filter(leaf: u32, subleaf: u32, host: [u32; 4], topo: Topology) -> [u32; 4] {
    // Most leaves pass through: one test on the exit's fast path instead of a call.
    if leaf >= 32 || FILTERED & (1 << leaf) == 0 {
        return host;
    }
    filter_leaf(leaf, subleaf, host, topo)
}

fn filter_leaf(leaf: u32, subleaf: u32, host: [u32; 4], topo: Topology) -> [u32; 4] {
    let [mut a, mut b, mut c, mut d] = host;
    match leaf {
        1 => {
            c &= !(bit::DTES64
                | bit::MONITOR
                | bit::DS_CPL
                | bit::VMX
                | bit::SMX
                | bit::EST
                | bit::TM2
                | bit::SDBG
                | bit::XTPR
                | bit::PDCM);
            c |= bit::HYPERVISOR;
            d &= !(bit::DS | bit::ACPI | bit::TM | bit::PBE | bit::HTT);
            // EBX: initial APIC ID (31:24), addressable logical processors (23:16).
            let logical = topo.vcpus().next_power_of_two();
            b = (b & 0xFFFF) | (logical << 16) | ((topo.apic_id & 0xFF) << 24);
            if topo.vcpus > 1 {
                d |= bit::HTT;
            }
        }
        // Deterministic cache parameters: cores per package (31:26) and the processors
        // sharing the cache (25:14): caches up to L2 are per core, the last level is
        // shared by the package.
        4 if a & 0x1F != 0 => {
            let cores = (1u32 << topo.core_bits()).min(64) - 1;
            let level = (a >> 5) & 7;
            let sharing = if level >= 3 { cores } else { 0 };
            a = (a & 0x3FFF) | (sharing << 14) | (cores << 26);
        }
        4 => {}
        5 => return [0; 4],
        6 => return [a & bit::ARAT, 0, 0, 0],
        7 if subleaf == 0 => {
            b &= !(bit::SGX | bit::RDT_M | bit::RDT_A | bit::INTEL_PT);
            c &= !(bit::WAITPKG | bit::SGX_LC);
            d &= !(bit::SRBDS_CTRL
                | bit::TSX_FORCE_ABORT
                | bit::ARCH_LBR
                | bit::ARCH_CAPABILITIES
                | bit::CORE_CAPABILITIES);
        }
        // Sub-leaf 2 lists further SPEC_CTRL controls (PSFD, IPRED/RRSBA/BHI_DIS_S, ...)
        // that the hypervisor does not let guests set (`crate::spec_ctrl`).
        7 if subleaf == 2 => return [0; 4],
        // Performance monitoring, RDT monitoring and allocation, SGX, Intel PT: hidden
        // above, so their leaves are empty.
        0xA | 0xF | 0x10 | 0x12 | 0x14 => return [0; 4],
        0xB | 0x1F => {
            let (shift, count, kind) = match subleaf {
                0 => (0, 1, LEVEL_SMT),
                1 => (topo.core_bits(), topo.vcpus(), LEVEL_CORE),
                _ => (0, 0, 0),
            };
            return [shift, count, (subleaf & 0xFF) | (kind << 8), topo.apic_id];
        }
        0xD if subleaf == 1 => {
            a &= !(bit::XSAVEC | bit::XSAVES | bit::XFD);
            // No supervisor state components without XSAVES.
            c = 0;
            d = 0;
        }
        _ => {}
    }
    [a, b, c, d]
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: Topology = Topology { apic_id: 0, vcpus: 1 };

    #[test]
    fn leaf_1_names_the_asking_vcpu_and_hides_what_is_not_virtualized() {
        let host = [0x0005_0654, 0x0A10_0800, 0xFFFA_3223, 0xBFEB_FBFF];
        let [a, b, c, d] = filter(1, 0, host, Topology { apic_id: 3, vcpus: 3 });
        assert_eq!(a, host[0]);
        assert_eq!(b >> 24, 3, "initial APIC ID");
        assert_eq!((b >> 16) & 0xFF, 4, "addressable IDs: the next power of two");
        assert_eq!(b & 0xFFFF, 0x0800, "CLFLUSH size and brand index kept");
        assert_eq!(c & (bit::VMX | bit::MONITOR | bit::TM2 | bit::EST | bit::PDCM), 0);
        assert_ne!(c & bit::HYPERVISOR, 0);
        assert_eq!(d & (bit::ACPI | bit::TM | bit::DS | bit::PBE), 0);
        assert_ne!(d & bit::HTT, 0, "more than one logical processor");
        let [_, b, _, d] = filter(1, 0, host, ONE);
        assert_eq!(b >> 16, 1);
        assert_eq!(d & bit::HTT, 0);
    }

    #[test]
    fn leaf_0xb_describes_one_package_of_single_thread_cores() {
        for vcpus in 1..=64 {
            let topo = Topology { apic_id: vcpus - 1, vcpus };
            let smt = filter(0xB, 0, [0; 4], topo);
            assert_eq!(smt, [0, 1, LEVEL_SMT << 8, vcpus - 1]);
            let core = filter(0xB, 1, [0; 4], topo);
            assert_eq!(core[1], vcpus);
            assert_eq!(core[2], 1 | LEVEL_CORE << 8);
            // The core field is the narrowest that holds every APIC ID (the package
            // ID above it is 0).
            let width = core[0];
            assert!(1u32 << width >= vcpus, "{vcpus} vCPUs: shift {width}");
            assert!(width == 0 || 1u32 << (width - 1) < vcpus, "{vcpus} vCPUs: shift {width} wider than needed");
            let end = filter(0x1F, 2, [0; 4], topo);
            assert_eq!(end, [0, 0, 2, vcpus - 1], "level type 0 ends the enumeration");
        }
    }

    #[test]
    fn leaf_4_shares_only_the_last_level_cache() {
        // L1 data (level 1, type 1) and L3 unified (level 3, type 3) as a host reports
        // them with its own core counts.
        let l1 = [0x1C00_4121, 0x01C0_003F, 0x3F, 0];
        let l3 = [0x1C03_C163, 0x0340_003F, 0x2FFF, 4];
        let topo = Topology { apic_id: 1, vcpus: 2 };
        let [a, b, c, d] = filter(4, 0, l1, topo);
        assert_eq!(a & 0x3FFF, l1[0] & 0x3FFF);
        assert_eq!((a >> 14) & 0xFFF, 0, "L1 is per core");
        assert_eq!(a >> 26, 1, "two cores in the package");
        assert_eq!([b, c, d], [l1[1], l1[2], l1[3]]);
        let [a, ..] = filter(4, 3, l3, topo);
        assert_eq!((a >> 14) & 0xFFF, 1, "L3 shared by both");
        // The terminating sub-leaf (type 0) stays all zero.
        assert_eq!(filter(4, 4, [0; 4], topo), [0; 4]);
    }

    #[test]
    fn the_fast_mask_names_exactly_the_leaves_that_change() {
        let topo = Topology { apic_id: 5, vcpus: 6 };
        for leaf in 0..0x40 {
            let host = [0x1234_5678, 0x9ABC_DEF0, 0x0FED_CBA9, 0x8765_4321];
            let changed = (0..3).any(|sub| filter_leaf(leaf, sub, host, topo) != host);
            let listed = leaf < 32 && FILTERED & (1 << leaf) != 0;
            assert_eq!(changed, listed, "leaf {leaf:#x}");
            assert_eq!(filter(leaf, 0, host, topo), filter_leaf(leaf, 0, host, topo));
        }
    }

    #[test]
    fn any_leaf_and_any_count_gives_an_answer_without_overflow() {
        for vcpus in [0, 1, 63, 64, 65, 200, u32::MAX] {
            for leaf in [1, 4, 0xB, 0x1F] {
                for subleaf in [0, 1, 2, u32::MAX] {
                    let topo = Topology { apic_id: u32::MAX, vcpus };
                    let _ = filter(leaf, subleaf, [u32::MAX; 4], topo);
                }
            }
        }
    }

    #[test]
    fn power_management_monitor_and_pmu_leaves_are_empty_but_arat() {
        assert_eq!(filter(5, 0, [0x40, 0x40, 3, 0x1120], ONE), [0; 4]);
        assert_eq!(filter(6, 0, [0x77, 2, 9, 0], ONE), [bit::ARAT, 0, 0, 0]);
        assert_eq!(filter(0xA, 0, [0x0730_0404, 0, 0, 0x603], ONE), [0; 4]);
    }

    #[test]
    fn xsave_keeps_the_standard_format_only() {
        let [a, b, c, d] = filter(0xD, 1, [0xF, 0xA80, 0x100, 0], ONE);
        assert_eq!(a, 0b0101, "XSAVEOPT and XGETBV1 stay");
        assert_eq!((b, c, d), (0xA80, 0, 0));
        // Sub-leaf 0 (the XCR0 components and sizes) is the host's.
        assert_eq!(filter(0xD, 0, [0xE7, 0xA80, 0xA80, 0], ONE), [0xE7, 0xA80, 0xA80, 0]);
    }

    #[test]
    fn leaf_7_hides_the_unemulated_msrs_and_other_leaves_pass_through() {
        let [_, b, c, d] = filter(7, 0, [0, u32::MAX, u32::MAX, u32::MAX], ONE);
        assert_eq!(b & (bit::SGX | bit::RDT_M | bit::RDT_A | bit::INTEL_PT), 0);
        assert_ne!(b & bit::TSC_ADJUST, 0, "IA32_TSC_ADJUST is emulated (guest_msrs::tsc)");
        assert_eq!(c & (bit::WAITPKG | bit::SGX_LC), 0);
        assert_eq!(d & (bit::ARCH_CAPABILITIES | bit::CORE_CAPABILITIES), 0);
        assert_eq!(d & (bit::SRBDS_CTRL | bit::TSX_FORCE_ABORT | bit::ARCH_LBR), 0);
        // The virtualized speculation controls stay: IBRS/IBPB, STIBP, L1D_FLUSH, SSBD,
        // MD_CLEAR.
        assert_eq!(d & 0x9C00_0400, 0x9C00_0400);
        assert_eq!(filter(7, 2, [1, 2, 3, 4], ONE), [0; 4]);
        assert_eq!(filter(7, 1, [1, 2, 3, 4], ONE), [1, 2, 3, 4]);
        assert_eq!(filter(0x8000_0001, 0, [1, 2, 3, 4], ONE), [1, 2, 3, 4]);
    }
}
