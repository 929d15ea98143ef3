//! Reads what this CPU offers for VT-x and reports it: CPUID.1:ECX.VMX, the firmware's
//! IA32_FEATURE_CONTROL lock, and the IA32_VMX_* capability MSRs (decoded by `caps`).

use super::caps::msr::VmxMsr;
use super::caps::{self, RawVmxMsrs, VmxCapabilities, VmxFirmwareState};
use crate::arch::cpu::{cpuid, rdmsr};
use core::fmt;

/// CPUID.1:ECX bit 5 (SDM Vol. 3C 23.6).
const CPUID_1_ECX_VMX: u32 = 1 << 5;

/// Whether this CPU can enter VMX operation, in one word for the "cpuN online" line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmxState {
    Absent,
    LockedOff,
    /// Firmware left IA32_FEATURE_CONTROL unlocked; the VMX core sets and locks it.
    Unlocked,
    Enabled,
}

impl fmt::Display for VmxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Absent => "vmx=absent",
            Self::LockedOff => "vmx=locked-off",
            Self::Unlocked => "vmx=available(feature-control unlocked)",
            Self::Enabled => "vmx=available",
        })
    }
}

pub fn check_this_cpu() -> VmxState {
    if cpuid(1, 0).ecx & CPUID_1_ECX_VMX == 0 {
        return VmxState::Absent;
    }
    // SAFETY: IA32_FEATURE_CONTROL exists whenever CPUID reports VMX (SDM Vol. 4 2.1).
    let fc = unsafe { rdmsr(VmxMsr::FeatureControl as u32) };
    match caps::vmx_status(fc) {
        VmxFirmwareState::LockedDisabled => VmxState::LockedOff,
        VmxFirmwareState::Unlocked => VmxState::Unlocked,
        VmxFirmwareState::LockedEnabled => VmxState::Enabled,
    }
}

/// Reads exactly the capability MSRs this CPU has (reading a missing one is #GP).
fn read_raw() -> RawVmxMsrs {
    // SAFETY: the caller checked CPUID.1:ECX.VMX, which guarantees the mandatory MSRs;
    // `read_with` asks for an optional one only when the SDM's rules say it exists
    // (Vol. 3D A.1, A.3.3, A.10, A.11).
    RawVmxMsrs::read_with(|m| unsafe { rdmsr(m as u32) })
}

/// A line writer for the report: `caps` formats, we log one line at a time.
struct LogLines {
    buf: [u8; 200],
    len: usize,
}

impl fmt::Write for LogLines {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if b == b'\n' {
                self.flush();
            } else if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

impl LogLines {
    fn flush(&mut self) {
        if self.len > 0 {
            log::info!("{}", core::str::from_utf8(&self.buf[..self.len]).unwrap_or("<non-UTF-8 report line>"));
            self.len = 0;
        }
    }
}

/// Logs the VMX feature report of this CPU. Err says, for a person, why this machine
/// cannot run the hypervisor.
pub fn report() -> Result<VmxCapabilities, &'static str> {
    let cpu = cpuid(0, 0);
    let mut vendor = [0u8; 12];
    vendor[..4].copy_from_slice(&cpu.ebx.to_le_bytes());
    vendor[4..8].copy_from_slice(&cpu.edx.to_le_bytes());
    vendor[8..].copy_from_slice(&cpu.ecx.to_le_bytes());
    let sig = cpuid(1, 0).eax;
    log::info!(
        "vmx: cpu vendor={} family={:#x} model={:#x} stepping={}",
        core::str::from_utf8(&vendor).unwrap_or("?"),
        ((sig >> 8) & 0xF) + ((sig >> 20) & 0xFF),
        ((sig >> 4) & 0xF) | ((sig >> 12) & 0xF0),
        sig & 0xF
    );
    match check_this_cpu() {
        VmxState::Absent => {
            return Err("this CPU does not support VT-x (CPUID.1:ECX.VMX = 0). Ferrovisor needs Intel VT-x: \
                 on QEMU use KVM with `-cpu host,+vmx` on an Intel host with nested virtualization, or run under Bochs \
                 (`cargo xtask run --emulator bochs`); on hardware use an Intel CPU with VT-x");
        }
        VmxState::LockedOff => {
            return Err("VT-x is disabled by the firmware (IA32_FEATURE_CONTROL is locked with VMX off). \
                 Enable \"Intel Virtualization Technology\" in the BIOS/UEFI setup and reboot");
        }
        VmxState::Unlocked => log::info!("vmx: IA32_FEATURE_CONTROL unlocked (the VMX core will enable and lock it)"),
        VmxState::Enabled => log::info!("vmx: IA32_FEATURE_CONTROL locked with VMX enabled outside SMX"),
    }
    let caps = VmxCapabilities::decode(&read_raw());
    let mut out = LogLines { buf: [0; 200], len: 0 };
    let _ = caps.report(&mut out);
    out.flush();
    Ok(caps)
}
