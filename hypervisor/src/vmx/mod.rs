//! VT-x. `caps` decodes the capability MSRs (pure, host-tested); `probe` reads them.

pub mod caps;
pub mod controls;
pub mod exit;
pub mod fields;
pub mod inject;
pub mod pending_debug;
pub mod vpid;

#[cfg(target_os = "none")]
pub mod entry;
#[cfg(target_os = "none")]
pub mod host;
#[cfg(target_os = "none")]
pub mod instr;
#[cfg(target_os = "none")]
pub mod probe;
#[cfg(target_os = "none")]
pub mod tlb;
#[cfg(target_os = "none")]
pub mod vmcs;
#[cfg(target_os = "none")]
pub mod vmxon;

#[cfg(target_os = "none")]
static CAPS: spin::Once<caps::VmxCapabilities> = spin::Once::new();

/// The BSP's decoded VMX capabilities (set once the boot report accepted them).
#[cfg(target_os = "none")]
pub fn capabilities() -> Option<&'static caps::VmxCapabilities> {
    CAPS.get()
}

#[cfg(target_os = "none")]
pub fn set_capabilities(c: caps::VmxCapabilities) -> &'static caps::VmxCapabilities {
    CAPS.call_once(|| c)
}

/// Enters VMX operation on this CPU with the shared capabilities; returns a word for
/// the "cpuN online" line.
#[cfg(target_os = "none")]
pub fn enable_this_cpu() -> &'static str {
    let Some(caps) = capabilities() else { return "vmx=unavailable" };
    match vmxon::enable_this_cpu(caps) {
        Ok(region) => {
            crate::percpu::current().vmxon_region = region;
            "vmx=on"
        }
        Err(e) => {
            log::error!("cannot enter VMX operation: {e}");
            "vmx=failed"
        }
    }
}

/// Leaves VMX operation if this CPU is in it (machine stop path).
#[cfg(target_os = "none")]
pub fn disable_this_cpu() {
    let cpu = crate::percpu::current();
    // Mark first, then VMXOFF: an NMI arriving in between (the stop path sends them)
    // must not execute a second VMXOFF, which would be #UD outside VMX operation.
    if core::mem::replace(&mut cpu.vmxon_region, 0) != 0 {
        vmxon::disable_this_cpu();
    }
}
