//! Speculative-execution mitigations (Xen's `spec_ctrl`): which ones this CPU needs and
//! offers, decided from CPUID.(7,0):EDX and IA32_ARCH_CAPABILITIES. Pure logic,
//! host-tested; `arch::spec_ctrl` carries the decision out.
//!
//! What is done where it applies (docs/security.md has the why of each):
//! - **SPEC_CTRL per vCPU** (IBRS, STIBP, SSBD, as the CPU has them): the guest's value
//!   is in the CPU while it runs, the host's while the hypervisor does.
//! - **Host IBRS**: where IBRS exists the hypervisor runs with IBRS set (always on with
//!   enhanced IBRS, set again after every exit otherwise).
//! - **PRED_CMD and FLUSH_CMD** for guests, where the CPU has IBPB and L1D_FLUSH.
//! - **IBPB when a CPU switches to another domain's vCPU**: branch predictions trained
//!   by one domain do not steer the next.
//! - **RSB filling after every VM exit**: return predictions the guest left behind are
//!   overwritten before the hypervisor's first RET.
//! - **L1D flush before VM entry** where the CPU is open to L1TF (not RDCL_NO, not
//!   SKIP_L1DFL_VMENTRY) and has L1D_FLUSH; otherwise **VERW before VM entry** where
//!   MDS applies (MD_CLEAR, not MDS_NO). The flush clears the same buffers VERW does.
//!
//! Guests see the mitigation bits the CPU has (each is virtualized), never
//! ARCH_CAPABILITIES (not emulated: a guest then assumes the worst).

/// CPUID.(EAX=7,ECX=0):EDX bits.
pub mod edx {
    pub const MD_CLEAR: u32 = 1 << 10;
    pub const IBRS_IBPB: u32 = 1 << 26;
    pub const STIBP: u32 = 1 << 27;
    pub const L1D_FLUSH: u32 = 1 << 28;
    pub const ARCH_CAPABILITIES: u32 = 1 << 29;
    pub const SSBD: u32 = 1 << 31;
}

/// IA32_ARCH_CAPABILITIES (0x10A) bits.
pub mod arch_caps {
    pub const RDCL_NO: u64 = 1 << 0;
    pub const IBRS_ALL: u64 = 1 << 1;
    pub const SKIP_L1DFL_VMENTRY: u64 = 1 << 3;
    pub const MDS_NO: u64 = 1 << 5;
}

/// IA32_SPEC_CTRL (0x48) bits.
pub mod bits {
    pub const IBRS: u64 = 1 << 0;
    pub const STIBP: u64 = 1 << 1;
    pub const SSBD: u64 = 1 << 2;
}

pub const IA32_SPEC_CTRL: u32 = 0x48;
pub const IA32_PRED_CMD: u32 = 0x49;
pub const IA32_ARCH_CAPABILITIES: u32 = 0x10A;
pub const IA32_FLUSH_CMD: u32 = 0x10B;

/// What the hypervisor does about speculation on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mitigations {
    /// SPEC_CTRL bits a guest may set; 0: the MSR does not exist for guests (#GP).
    pub guest_spec_ctrl: u64,
    /// The SPEC_CTRL value the hypervisor runs with.
    pub host_spec_ctrl: u64,
    /// IBRS is "always on" (enhanced IBRS): the host value needs no refresh after exits.
    pub eibrs: bool,
    /// Guests may write IBPB to PRED_CMD; the hypervisor issues one when a CPU switches
    /// between domains (with `enabled`).
    pub ibpb: bool,
    /// Guests may write L1D_FLUSH to FLUSH_CMD.
    pub flush_cmd: bool,
    /// Host-side mitigations on (the `spec_ctrl` key of hypervisor.cfg).
    pub enabled: bool,
    pub ibpb_on_switch: bool,
    pub rsb_fill_on_exit: bool,
    pub l1d_flush_on_entry: bool,
    pub verw_on_entry: bool,
}

/// The decision for a CPU with leaf 7 EDX `edx` and IA32_ARCH_CAPABILITIES `caps`
/// (0 when the CPU has none); `enabled` false (`spec_ctrl = off`) keeps what guests
/// are offered but turns the hypervisor's own measures off, for benchmarking.
pub const fn choose(edx: u32, caps: u64, enabled: bool) -> Mitigations {
    let caps = if edx & edx::ARCH_CAPABILITIES != 0 { caps } else { 0 };
    let ibrs = edx & edx::IBRS_IBPB != 0;
    let mut guest_spec_ctrl = 0;
    if ibrs {
        guest_spec_ctrl |= bits::IBRS;
    }
    if edx & edx::STIBP != 0 {
        guest_spec_ctrl |= bits::STIBP;
    }
    if edx & edx::SSBD != 0 {
        guest_spec_ctrl |= bits::SSBD;
    }
    let eibrs = ibrs && caps & arch_caps::IBRS_ALL != 0;
    let l1d = edx & edx::L1D_FLUSH != 0;
    let l1tf = caps & (arch_caps::RDCL_NO | arch_caps::SKIP_L1DFL_VMENTRY) == 0;
    let l1d_flush_on_entry = enabled && l1d && l1tf;
    let mds = edx & edx::MD_CLEAR != 0 && caps & arch_caps::MDS_NO == 0;
    Mitigations {
        guest_spec_ctrl,
        host_spec_ctrl: if enabled && ibrs { bits::IBRS } else { 0 },
        eibrs,
        ibpb: ibrs,
        flush_cmd: l1d,
        enabled,
        ibpb_on_switch: enabled && ibrs,
        // Every Intel CPU predicts returns from the RSB; none says it cannot be
        // poisoned across a VM exit, so it is always refilled (as Xen and KVM do).
        rsb_fill_on_exit: enabled,
        l1d_flush_on_entry,
        verw_on_entry: enabled && mds && !l1d_flush_on_entry,
    }
}

impl Mitigations {
    /// Whether a vCPU whose SPEC_CTRL is `guest` needs work around its VM entries at
    /// all (`arch::spec_ctrl::before_entry`/`after_exit`): decided when its slice starts
    /// and when it writes the MSR, so that where nothing applies an entry pays one test.
    pub fn entry_work(&self, guest: u64) -> bool {
        self.restore_host_spec_ctrl(guest) || self.l1d_flush_on_entry || self.verw_on_entry
    }

    /// Whether the host's SPEC_CTRL must be written after an exit from a guest whose
    /// value is `guest`: it differs, or IBRS (without the enhanced form) must be set
    /// again after every transition to the more privileged mode.
    pub fn restore_host_spec_ctrl(&self, guest: u64) -> bool {
        guest != self.host_spec_ctrl || (self.host_spec_ctrl & bits::IBRS != 0 && !self.eibrs)
    }

    /// Whether a guest's WRMSR of `value` to SPEC_CTRL is valid.
    pub fn guest_spec_ctrl_ok(&self, value: u64) -> bool {
        self.guest_spec_ctrl != 0 && value & !self.guest_spec_ctrl == 0
    }

    /// Whether a guest's WRMSR of `value` to PRED_CMD is valid (only IBPB, bit 0).
    pub fn pred_cmd_ok(&self, value: u64) -> bool {
        self.ibpb && value & !1 == 0
    }

    /// Whether a guest's WRMSR of `value` to FLUSH_CMD is valid (only L1D_FLUSH, bit 0).
    pub fn flush_cmd_ok(&self, value: u64) -> bool {
        self.flush_cmd && value & !1 == 0
    }
}

impl core::fmt::Display for Mitigations {
    /// One line for the boot log.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let yn = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "{}; guest SPEC_CTRL bits {:#x}, PRED_CMD {}, FLUSH_CMD {}; host IBRS {}; IBPB on domain switch {}, \
             RSB fill on exit {}, L1D flush on entry {}, VERW on entry {}",
            if self.enabled { "on" } else { "OFF (spec_ctrl = off)" },
            self.guest_spec_ctrl,
            yn(self.ibpb),
            yn(self.flush_cmd),
            if self.host_spec_ctrl & bits::IBRS == 0 {
                "no"
            } else if self.eibrs {
                "enhanced (always on)"
            } else {
                "set after every exit"
            },
            yn(self.ibpb_on_switch),
            yn(self.rsb_fill_on_exit),
            yn(self.l1d_flush_on_entry),
            yn(self.verw_on_entry),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_without_any_mitigation_bits_gets_rsb_filling_only() {
        // Bochs's corei7_skylake_x: leaf 7 EDX = 0.
        let m = choose(0, 0, true);
        assert_eq!(m.guest_spec_ctrl, 0);
        assert!(!m.ibpb && !m.flush_cmd && !m.ibpb_on_switch && !m.l1d_flush_on_entry && !m.verw_on_entry);
        assert!(m.rsb_fill_on_exit);
        assert_eq!(m.host_spec_ctrl, 0);
        assert!(!m.guest_spec_ctrl_ok(0), "no SPEC_CTRL MSR for guests");
        assert!(!m.pred_cmd_ok(1) && !m.flush_cmd_ok(1));
    }

    #[test]
    fn skylake_with_microcode_flushes_l1d_and_uses_ibrs_around_guests() {
        let edx = edx::MD_CLEAR | edx::IBRS_IBPB | edx::STIBP | edx::L1D_FLUSH | edx::SSBD;
        let m = choose(edx, 0, true);
        assert_eq!(m.guest_spec_ctrl, 0b111);
        assert_eq!(m.host_spec_ctrl, bits::IBRS);
        assert!(!m.eibrs);
        assert!(m.ibpb_on_switch && m.rsb_fill_on_exit && m.l1d_flush_on_entry);
        assert!(!m.verw_on_entry, "the L1D flush also clears the buffers VERW would");
        assert!(m.guest_spec_ctrl_ok(0) && m.guest_spec_ctrl_ok(0b101) && !m.guest_spec_ctrl_ok(1 << 3));
        assert!(m.pred_cmd_ok(1) && m.pred_cmd_ok(0) && !m.pred_cmd_ok(2));
        assert!(m.flush_cmd_ok(1) && !m.flush_cmd_ok(1 << 8));
    }

    #[test]
    fn a_cpu_that_is_not_open_to_l1tf_uses_verw_where_mds_applies() {
        let edx = edx::MD_CLEAR | edx::IBRS_IBPB | edx::L1D_FLUSH | edx::ARCH_CAPABILITIES;
        // Cascade Lake-like: RDCL_NO, IBRS_ALL, SKIP_L1DFL, but MDS (no MDS_NO).
        let m = choose(edx, 0b1011, true);
        assert!(m.eibrs && !m.l1d_flush_on_entry && m.verw_on_entry);
        // MDS_NO too: neither.
        let m = choose(edx, 0b10_1011, true);
        assert!(!m.l1d_flush_on_entry && !m.verw_on_entry);
        // ARCH_CAPABILITIES bits count only when CPUID says the MSR exists.
        let m = choose(edx & !edx::ARCH_CAPABILITIES, 0b10_1011, true);
        assert!(m.l1d_flush_on_entry && !m.eibrs);
    }

    #[test]
    fn off_keeps_what_guests_see_and_drops_the_hosts_measures() {
        let edx = edx::MD_CLEAR | edx::IBRS_IBPB | edx::STIBP | edx::L1D_FLUSH | edx::SSBD;
        let on = choose(edx, 0, true);
        let off = choose(edx, 0, false);
        assert_eq!((off.guest_spec_ctrl, off.ibpb, off.flush_cmd), (on.guest_spec_ctrl, on.ibpb, on.flush_cmd));
        assert!(!off.ibpb_on_switch && !off.rsb_fill_on_exit && !off.l1d_flush_on_entry && !off.verw_on_entry);
        assert_eq!(off.host_spec_ctrl, 0);
    }

    #[test]
    fn entries_need_work_only_where_something_applies() {
        // Skylake-X in Bochs: nothing around the entries.
        let none = choose(0, 0, true);
        assert!(!none.entry_work(0));
        // IBRS without the enhanced form: the host's value after every exit.
        let ibrs = choose(edx::IBRS_IBPB, 0, true);
        assert!(ibrs.entry_work(bits::IBRS) && ibrs.restore_host_spec_ctrl(bits::IBRS));
        // Enhanced IBRS: only when the guest's value differs.
        let eibrs = choose(edx::IBRS_IBPB | edx::ARCH_CAPABILITIES, arch_caps::IBRS_ALL | arch_caps::RDCL_NO, true);
        assert!(!eibrs.entry_work(bits::IBRS));
        assert!(eibrs.entry_work(0) && eibrs.restore_host_spec_ctrl(0));
        // VERW before entry: always.
        let mds = choose(edx::MD_CLEAR | edx::ARCH_CAPABILITIES, arch_caps::RDCL_NO, true);
        assert!(mds.verw_on_entry && mds.entry_work(0));
    }

    #[test]
    fn the_boot_line_names_every_decision() {
        let line = choose(edx::IBRS_IBPB | edx::ARCH_CAPABILITIES, arch_caps::IBRS_ALL, true).to_string();
        assert!(line.starts_with("on; guest SPEC_CTRL bits 0x1, PRED_CMD yes, FLUSH_CMD no; host IBRS enhanced"));
        assert!(line.contains("IBPB on domain switch yes, RSB fill on exit yes, L1D flush on entry no"));
    }
}
