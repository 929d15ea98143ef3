//! Virtual-processor identifiers (SDM Vol. 3C "Virtual-Processor Identifiers (VPIDs)").
//!
//! The CPU tags cached linear translations with the VPID of the vCPU that made them, so
//! switching between vCPUs needs no TLB flush. VPID 0 is the host's; a vCPU must never
//! get it (VM entry fails with "enable VPID" and VPID 0). A VPID is returned to the pool
//! when its vCPU goes away and may then be handed to a new vCPU: stale translations of
//! the old owner are removed by the INVVPID a vCPU does on each CPU the first time it
//! runs there (see `sched`), so reuse is safe.

/// A VPID other than the host's 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Vpid(core::num::NonZeroU16);

impl Vpid {
    pub fn get(self) -> u16 {
        self.0.get()
    }
}

/// A free list of the 65535 guest VPIDs as a bitmap (8 KiB), searched from where the
/// last search ended so VPIDs are reused as late as possible.
pub struct VpidPool {
    used: [u64; 1024],
    cursor: usize,
}

impl Default for VpidPool {
    fn default() -> Self {
        Self::new()
    }
}

impl VpidPool {
    pub const fn new() -> Self {
        let mut used = [0; 1024];
        used[0] = 1; // VPID 0 belongs to the host.
        VpidPool { used, cursor: 0 }
    }

    /// A free VPID, or `None` when all 65535 are in use.
    pub fn allocate(&mut self) -> Option<Vpid> {
        for i in 0..self.used.len() {
            let w = (self.cursor + i) % self.used.len();
            let word = self.used[w];
            if word != u64::MAX {
                let bit = (!word).trailing_zeros() as usize;
                self.used[w] |= 1 << bit;
                self.cursor = w;
                let n = u16::try_from(w * 64 + bit).ok()?;
                return core::num::NonZeroU16::new(n).map(Vpid);
            }
        }
        None
    }

    /// Gives `vpid` back.
    pub fn release(&mut self, vpid: Vpid) {
        let n = usize::from(vpid.get());
        self.used[n / 64] &= !(1 << (n % 64));
    }

    pub fn in_use(&self) -> usize {
        self.used.iter().map(|w| w.count_ones() as usize).sum::<usize>() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vpid_zero_is_never_handed_out_and_all_others_are() {
        let mut pool = VpidPool::new();
        let mut seen = std::collections::HashSet::new();
        while let Some(v) = pool.allocate() {
            assert_ne!(v.get(), 0);
            assert!(seen.insert(v.get()));
        }
        assert_eq!(seen.len(), 65535);
        assert_eq!(pool.in_use(), 65535);
    }

    #[test]
    fn released_vpids_come_back_when_the_pool_is_full() {
        let mut pool = VpidPool::new();
        let all: Vec<Vpid> = core::iter::from_fn(|| pool.allocate()).collect();
        pool.release(all[1234]);
        assert_eq!(pool.allocate(), Some(all[1234]));
        assert_eq!(pool.allocate(), None);
    }

    #[test]
    fn in_use_counts_allocations_minus_releases() {
        let mut pool = VpidPool::new();
        let a = pool.allocate().unwrap();
        assert_eq!(a.get(), 1);
        pool.release(a);
        assert_eq!(pool.in_use(), 0);
        for _ in 0..100 {
            pool.allocate();
        }
        assert_eq!(pool.in_use(), 100);
    }
}
