//! Extended processor state (x87, SSE, AVX, ...) as XCR0 describes it: the rules a
//! guest's XSETBV must follow, and the mask the host saves and restores with. Pure
//! logic, host-tested; `arch::fpu` and `vmexit` use it.
//!
//! Why the hypervisor is strict here: the guest's XCR0 ends up in the CPU through the
//! host's own XSETBV. A value the CPU refuses would fault in the hypervisor, not in the
//! guest, and stop the machine.

/// XCR0 state components (SDM Vol. 1 "XSAVE-Supported Features and State-Component
/// Bitmaps").
pub mod component {
    pub const X87: u64 = 1 << 0;
    pub const SSE: u64 = 1 << 1;
    pub const AVX: u64 = 1 << 2;
    pub const BNDREGS: u64 = 1 << 3;
    pub const BNDCSR: u64 = 1 << 4;
    pub const OPMASK: u64 = 1 << 5;
    pub const ZMM_HI256: u64 = 1 << 6;
    pub const HI16_ZMM: u64 = 1 << 7;
    pub const PKRU: u64 = 1 << 9;
    pub const XTILECFG: u64 = 1 << 17;
    pub const XTILEDATA: u64 = 1 << 18;
    /// The three AVX-512 components, which XCR0 enables all together or not at all.
    pub const AVX512: u64 = OPMASK | ZMM_HI256 | HI16_ZMM;
    /// MPX's two components, likewise.
    pub const MPX: u64 = BNDREGS | BNDCSR;
    /// AMX's two components, likewise.
    pub const AMX: u64 = XTILECFG | XTILEDATA;
}

/// Why an XSETBV is refused (#GP in the guest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XsetbvError {
    /// Only XCR0 (ECX = 0) exists.
    NotXcr0,
    /// XSETBV at CPL > 0.
    Privilege,
    /// x87 state cannot be disabled.
    NoX87,
    /// A component the domain's CPU does not offer.
    Unsupported(u64),
    /// AVX without SSE.
    AvxWithoutSse,
    /// AVX-512 components not all set or all clear, or set without AVX.
    Avx512,
    /// BNDREGS and BNDCSR differ.
    Mpx,
    /// XTILECFG and XTILEDATA differ.
    Amx,
}

/// Checks a guest's XSETBV of `value` into XCR`index` at privilege level `cpl`, where
/// the domain's CPU offers the components in `allowed` (its CPUID.(0DH,0):EDX:EAX).
/// The rules are the CPU's own (SDM Vol. 2C "XSETBV"; KVM's `__kvm_set_xcr` applies
/// the same): what passes here can be loaded with the host's XSETBV without faulting.
pub fn check_xsetbv(index: u32, value: u64, cpl: u8, allowed: u64) -> Result<(), XsetbvError> {
    use component::*;
    if cpl != 0 {
        return Err(XsetbvError::Privilege);
    }
    if index != 0 {
        return Err(XsetbvError::NotXcr0);
    }
    if value & X87 == 0 {
        return Err(XsetbvError::NoX87);
    }
    let extra = value & !(allowed | X87);
    if extra != 0 {
        return Err(XsetbvError::Unsupported(extra));
    }
    if value & AVX != 0 && value & SSE == 0 {
        return Err(XsetbvError::AvxWithoutSse);
    }
    let avx512 = value & AVX512;
    if avx512 != 0 && (avx512 != AVX512 || value & AVX == 0) {
        return Err(XsetbvError::Avx512);
    }
    let mpx = value & MPX;
    if mpx != 0 && mpx != MPX {
        return Err(XsetbvError::Mpx);
    }
    let amx = value & AMX;
    if amx != 0 && amx != AMX {
        return Err(XsetbvError::Amx);
    }
    Ok(())
}

/// The XCR0 the host runs with while it saves and restores guest state: every user
/// component the CPU supports (`supported` is CPUID.(0DH,0):EDX:EAX), always including
/// x87. XSAVE and XRSTOR under this mask move every register a guest could have used,
/// whatever its own XCR0 says, so nothing of one guest is left for the next.
pub fn host_mask(supported: u64) -> u64 {
    // A CPU that lists a component of a group without the rest would be refused by its
    // own XSETBV; keep only complete groups (never seen, but cheap to be sure of).
    let mut mask = supported | component::X87;
    for group in [component::AVX512, component::MPX, component::AMX] {
        if mask & group != group {
            mask &= !group;
        }
    }
    if mask & component::SSE == 0 {
        mask &= !component::AVX;
    }
    if mask & component::AVX == 0 {
        mask &= !component::AVX512;
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::component::*;
    use super::*;

    /// A Skylake server: x87, SSE, AVX, MPX, AVX-512, PKRU.
    const SKX: u64 = 0x2FF;

    #[test]
    fn xsetbv_follows_the_cpus_rules() {
        let ok = |v| check_xsetbv(0, v, 0, SKX);
        assert_eq!(ok(X87), Ok(()));
        assert_eq!(ok(X87 | SSE), Ok(()));
        assert_eq!(ok(X87 | SSE | AVX), Ok(()));
        assert_eq!(ok(X87 | SSE | AVX | AVX512), Ok(()));
        assert_eq!(ok(X87 | MPX), Ok(()));
        assert_eq!(ok(SKX), Ok(()));
        assert_eq!(ok(0), Err(XsetbvError::NoX87));
        assert_eq!(ok(SSE), Err(XsetbvError::NoX87));
        assert_eq!(ok(X87 | AVX), Err(XsetbvError::AvxWithoutSse));
        assert_eq!(ok(X87 | SSE | AVX | OPMASK), Err(XsetbvError::Avx512));
        assert_eq!(ok(X87 | SSE | AVX | OPMASK | ZMM_HI256), Err(XsetbvError::Avx512));
        assert_eq!(ok(X87 | SSE | AVX512), Err(XsetbvError::Avx512), "AVX-512 without AVX");
        assert_eq!(ok(X87 | BNDREGS), Err(XsetbvError::Mpx));
        assert_eq!(ok(X87 | BNDCSR), Err(XsetbvError::Mpx));
        assert_eq!(ok(X87 | 1 << 8), Err(XsetbvError::Unsupported(1 << 8)), "PT is a supervisor component");
        assert_eq!(ok(X87 | 1 << 63), Err(XsetbvError::Unsupported(1 << 63)));
        assert_eq!(check_xsetbv(1, X87, 0, SKX), Err(XsetbvError::NotXcr0));
        assert_eq!(check_xsetbv(0, X87, 3, SKX), Err(XsetbvError::Privilege));
    }

    #[test]
    fn xsetbv_refuses_what_the_domains_cpu_hides() {
        // A policy that hides AVX-512 and MPX.
        let allowed = X87 | SSE | AVX | PKRU;
        assert_eq!(check_xsetbv(0, X87 | SSE | AVX | AVX512, 0, allowed), Err(XsetbvError::Unsupported(AVX512)));
        assert_eq!(check_xsetbv(0, X87 | MPX, 0, allowed), Err(XsetbvError::Unsupported(MPX)));
        assert_eq!(check_xsetbv(0, X87 | SSE | AVX | PKRU, 0, allowed), Ok(()));
        // AMX where offered: both or neither.
        let amx = X87 | SSE | AVX | AMX;
        assert_eq!(check_xsetbv(0, X87 | XTILECFG, 0, amx), Err(XsetbvError::Amx));
        assert_eq!(check_xsetbv(0, X87 | XTILEDATA, 0, amx), Err(XsetbvError::Amx));
        assert_eq!(check_xsetbv(0, amx, 0, amx), Ok(()));
    }

    #[test]
    fn every_value_that_passes_is_one_the_cpu_accepts() {
        // Exhaustively over the low 10 bits with a host that has all of them: whatever
        // passes is a subset of the host mask with complete groups.
        let host = host_mask(0x3FF);
        for v in 0..1024u64 {
            if check_xsetbv(0, v, 0, host).is_ok() {
                assert_eq!(v & !host, 0);
                assert!(v & X87 != 0);
                assert!(v & AVX == 0 || v & SSE != 0);
                assert!(v & AVX512 == 0 || (v & AVX512 == AVX512 && v & AVX != 0));
                assert!(v & MPX == 0 || v & MPX == MPX);
            }
        }
    }

    #[test]
    fn the_host_mask_keeps_complete_groups_only() {
        assert_eq!(host_mask(SKX), SKX);
        assert_eq!(host_mask(SSE), X87 | SSE);
        assert_eq!(host_mask(X87 | SSE | AVX | OPMASK), X87 | SSE | AVX);
        assert_eq!(host_mask(X87 | AVX | AVX512), X87);
        assert_eq!(host_mask(X87 | SSE | BNDREGS), X87 | SSE);
    }
}
