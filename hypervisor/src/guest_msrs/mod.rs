//! MSRs whose state a vCPU keeps and no VMCS field holds: the architectural rules of
//! each, as pure logic tested on the host. `vmexit::msr` reads and writes them for the
//! guest and applies what they change (the TSC offset, NX, CPUID).
//!
//! - [`tsc`]: IA32_TSC and IA32_TSC_ADJUST, both views of one per-vCPU offset.
//! - [`misc_enable`]: IA32_MISC_ENABLE, the bits the SDM defines for the CPUs we model.
//! - [`mca`]: the machine-check architecture's global MSRs and a few banks that read
//!   clean (no error is ever reported to a guest; the host's are the host's).

pub mod mca;
pub mod misc_enable;
pub mod tsc;
