//! Pieces for fixed-width tables without a heap: a stack string and one-decimal numbers.

use core::fmt;

/// A string built on the stack; writes past its capacity are cut (and reported as an error).
pub struct StrBuf<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> StrBuf<N> {
    pub const fn new() -> Self {
        StrBuf { bytes: [0; N], len: 0 }
    }

    pub fn as_str(&self) -> &str {
        // Only whole `str`s are appended (see write_str), so the bytes are UTF-8.
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> fmt::Write for StrBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.len + s.len() > N {
            return Err(fmt::Error);
        }
        self.bytes[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

/// `value / unit` with one decimal, rounded (no floating point: the guest has no FPU set up).
/// Honours width and alignment like a number would (`{:>8}`).
#[derive(Debug, Clone, Copy)]
pub struct OneDecimal {
    pub value: u64,
    pub unit: u64,
}

impl OneDecimal {
    /// Nanoseconds as seconds.
    pub fn seconds(ns: u64) -> Self {
        OneDecimal { value: ns, unit: 1_000_000_000 }
    }
}

impl fmt::Display for OneDecimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = u128::from(self.unit.max(1));
        let tenths = (u128::from(self.value) * 10 + unit / 2) / unit;
        let mut text = StrBuf::<48>::new();
        let _ = fmt::Write::write_fmt(&mut text, format_args!("{}.{}", tenths / 10, tenths % 10));
        f.pad_integral(true, "", text.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn one_decimal_rounds_and_pads_like_a_number() {
        assert_eq!(format!("{:>8}", OneDecimal::seconds(1_234_567_890)), "     1.2");
        assert_eq!(format!("{}", OneDecimal::seconds(1_250_000_000)), "1.3");
        assert_eq!(format!("{}", OneDecimal::seconds(0)), "0.0");
        assert_eq!(format!("{:6}", OneDecimal { value: 1, unit: 3 }), "   0.3");
        assert_eq!(format!("{}", OneDecimal { value: u64::MAX, unit: 1 }), "18446744073709551615.0");
    }

    #[test]
    fn a_full_buffer_refuses_more() {
        let mut b = StrBuf::<4>::new();
        assert!(fmt::Write::write_str(&mut b, "abc").is_ok());
        assert!(fmt::Write::write_str(&mut b, "de").is_err());
        assert_eq!(b.as_str(), "abc");
    }
}
