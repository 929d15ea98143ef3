//! CRC-32 (IEEE 802.3: reflected, polynomial 0xEDB88320, initial value and final XOR
//! 0xFFFFFFFF): the checksum of the boot bundle's header, table and entries. The same
//! CRC as zlib, Ethernet and PNG, so `boot`'s output can be checked with common tools.

/// The CRC of every byte value, built at compile time so the hypervisor needs neither
/// a heap nor an initialisation step before it can check the bundle.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// An incremental CRC-32, for data that arrives in pieces: feeding the pieces to
/// [`Crc32::update`] in order gives the same result as [`crc32`] of the whole.
#[derive(Debug, Clone, Copy)]
pub struct Crc32(u32);

impl Crc32 {
    pub const fn new() -> Self {
        Self(0xFFFF_FFFF)
    }

    pub fn update(&mut self, data: &[u8]) {
        let mut c = self.0;
        for &b in data {
            // The index is masked to 0..=255, so it is always inside the table.
            c = TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
        }
        self.0 = c;
    }

    /// The CRC of everything passed to [`Crc32::update`].
    pub const fn finish(self) -> u32 {
        self.0 ^ 0xFFFF_FFFF
    }
}

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

/// CRC-32 of `data` in one call.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(data);
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn matches_a_known_sentence() {
        assert_eq!(crc32(b"The quick brown fox jumps over the lazy dog"), 0x414F_A339);
    }

    #[test]
    fn empty_input_is_zero() {
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn incremental_equals_one_shot() {
        let mut c = Crc32::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.finish(), crc32(b"123456789"));
    }

    #[test]
    fn byte_at_a_time_equals_one_shot() {
        let data: [u8; 256] = core::array::from_fn(|i| i as u8);
        let mut c = Crc32::default();
        for b in &data {
            c.update(core::slice::from_ref(b));
        }
        assert_eq!(c.finish(), crc32(&data));
    }
}
