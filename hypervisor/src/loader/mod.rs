//! Guest image loaders: turn an image from the boot bundle into a load plan (what to
//! copy where in guest-physical memory, and how to enter it). Pure parsing, host-tested.

pub mod bzimage;
pub mod elf64;
pub mod flat;
pub mod multiboot;
pub mod plan;

/// xorshift64 (Marsaglia 2003): the deterministic generator of the loaders' mutation
/// tests, no dependency.
#[cfg(test)]
pub(crate) mod test_rng {
    pub struct XorShift(pub u64);

    impl XorShift {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }
}
