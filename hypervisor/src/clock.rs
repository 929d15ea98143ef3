//! Converting between clocks without dividing: `x * num / den` as a multiplication by a
//! 64.64 fixed-point factor computed once. The hypervisor converts TSC ticks to
//! nanoseconds (and back) on every VM entry; a 128-bit division there is a software
//! loop of dozens of instructions, this is two multiplications.

/// `x -> x * num / den`, precomputed. The factor is `num / den` in 64.64 fixed point,
/// so the result is within one unit of the exact quotient (rounded down) for every
/// `x`, and saturates at `u64::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    /// Integer part of `num / den`.
    whole: u64,
    /// Fractional part of `num / den`, in units of 2^-64 (rounded down).
    frac: u64,
}

impl Scale {
    /// The factor `num / den`; `den` of zero is treated as one.
    pub const fn new(num: u64, den: u64) -> Scale {
        let den = if den == 0 { 1 } else { den as u128 };
        let whole = num as u128 / den;
        let rem = num as u128 % den;
        // rem < den <= 2^64, so rem << 64 fits in 128 bits and the quotient in 64.
        let frac = (rem << 64) / den;
        Scale { whole: if whole > u64::MAX as u128 { u64::MAX } else { whole as u64 }, frac: frac as u64 }
    }

    /// The two halves, for keeping a scale in atomics; [`Self::from_parts`] undoes it.
    pub const fn parts(self) -> (u64, u64) {
        (self.whole, self.frac)
    }

    pub const fn from_parts(whole: u64, frac: u64) -> Scale {
        Scale { whole, frac }
    }

    /// `x * num / den`, rounded down (possibly one below the exact quotient), saturating.
    #[inline]
    pub fn apply(self, x: u64) -> u64 {
        let whole = u128::from(x) * u128::from(self.whole);
        let frac = (u128::from(x) * u128::from(self.frac)) >> 64;
        u64::try_from(whole + frac).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(x: u64, num: u64, den: u64) -> u64 {
        u64::try_from(u128::from(x) * u128::from(num) / u128::from(den)).unwrap_or(u64::MAX)
    }

    #[test]
    fn within_one_of_the_exact_quotient() {
        // TSC frequencies from a slow emulator to a fast CPU, both directions.
        let rates = [1_000_000, 100_000_000, 1_000_000_000, 2_893_401_117, 3_000_000_000, 5_700_000_123];
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for &hz in &rates {
            for (num, den) in [(1_000_000_000, hz), (hz, 1_000_000_000)] {
                let s = Scale::new(num, den);
                let check = |x: u64| {
                    let want = exact(x, num, den);
                    let got = s.apply(x);
                    assert!(got <= want && want - got <= 1, "{x} * {num} / {den}: got {got}, want {want}");
                };
                for x in [0, 1, 2, 999, 1_000_000_000, hz, u64::from(u32::MAX), 1 << 50] {
                    check(x);
                }
                for _ in 0..10_000 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    check(seed >> (seed % 40));
                }
            }
        }
    }

    #[test]
    fn saturates_instead_of_wrapping() {
        let s = Scale::new(3_000_000_000, 1_000_000_000);
        assert_eq!(s.apply(u64::MAX), u64::MAX);
        assert_eq!(s.apply(u64::MAX / 3 + 1), u64::MAX);
        assert_eq!(Scale::new(5, 0).apply(7), 35);
        let s = Scale::new(1_000_000_000, 2_893_401_117);
        assert_eq!(Scale::from_parts(s.parts().0, s.parts().1), s);
    }

    #[test]
    fn monotonic() {
        let s = Scale::new(1_000_000_000, 2_893_401_117);
        let mut last = 0;
        for x in (0..10_000_000u64).step_by(997) {
            let y = s.apply(x);
            assert!(y >= last);
            last = y;
        }
    }
}
