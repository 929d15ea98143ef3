//! Numbers typed by a person: decimal, or hexadecimal with `0x`; never silently wrapped.

/// Parses a decimal or `0x` hexadecimal number that fits in `u64`.
pub fn parse_u64(text: &str) -> Option<u64> {
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (text, 10),
    };
    // from_str_radix alone would accept a leading '+'.
    if digits.is_empty() || !digits.bytes().all(|b| (b as char).is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// As [`parse_u64`], for values that must fit in `u32`.
pub fn parse_u32(text: &str) -> Option<u32> {
    parse_u64(text).and_then(|v| u32::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_and_hex_numbers_parse() {
        assert_eq!(parse_u64("0"), Some(0));
        assert_eq!(parse_u64("512"), Some(512));
        assert_eq!(parse_u64("0x200"), Some(512));
        assert_eq!(parse_u64("0XfF"), Some(255));
        assert_eq!(parse_u64("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u32("4294967295"), Some(u32::MAX));
    }

    #[test]
    fn overflow_signs_blanks_and_junk_are_refused() {
        for bad in ["", "0x", "18446744073709551616", "-1", "+1", " 1", "1 ", "12a", "0x1g", "1_000", "١"] {
            assert_eq!(parse_u64(bad), None, "{bad:?}");
        }
        assert_eq!(parse_u32("4294967296"), None);
        assert_eq!(parse_u32("0x100000000"), None);
    }
}
