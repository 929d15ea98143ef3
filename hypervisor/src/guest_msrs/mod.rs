//! MSRs whose state a vCPU keeps and no VMCS field holds: the architectural rules of
//! each, as pure logic tested on the host. `vmexit::msr` reads and writes them for the
//! guest and applies what they change (the TSC offset, NX, CPUID).
//!
//! - [`tsc`]: IA32_TSC and IA32_TSC_ADJUST, both views of one per-vCPU offset.
//! - [`misc_enable`]: IA32_MISC_ENABLE, the bits the SDM defines for the CPUs we model.
//! - [`mca`]: the machine-check architecture's global MSRs and a few banks that read
//!   clean (no error is ever reported to a guest; the host's are the host's).
//! - [`debugctl_value`]: what a write of IA32_DEBUGCTL keeps (the VMCS holds the MSR).

pub mod mca;
pub mod misc_enable;
pub mod tsc;

/// What a guest's write of `value` to IA32_DEBUGCTL leaves in it, `None` for #GP. BTF
/// (single-step on branches) is the CPU's own and works as written; LBR, the branch
/// trace store and the freeze bits belong to features CPUID does not show, so they are
/// dropped (as KVM drops them); reserved bits (2-5, 16-63) are #GP, as on hardware.
pub fn debugctl_value(value: u64) -> Option<u64> {
    const BTF: u64 = 1 << 1;
    const DEFINED: u64 = 0b1 | BTF | 0xFFC0;
    (value & !DEFINED == 0).then_some(value & BTF)
}

#[cfg(test)]
mod tests {
    use super::debugctl_value;

    #[test]
    fn debugctl_keeps_btf_drops_unshown_features_and_refuses_reserved_bits() {
        assert_eq!(debugctl_value(0), Some(0));
        assert_eq!(debugctl_value(0b10), Some(0b10));
        assert_eq!(debugctl_value(0b11), Some(0b10), "LBR: no LBR MSRs are shown");
        assert_eq!(debugctl_value(1 << 7), Some(0), "BTS: no debug store");
        assert_eq!(debugctl_value(1 << 2), None);
        assert_eq!(debugctl_value(1 << 16), None);
    }
}
