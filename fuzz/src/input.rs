//! Turning fuzz bytes into values: a little-endian reader that never fails (missing bytes
//! read as zero), and a monotonic clock for the device models.

/// Reads values off the front of the fuzz input. Once the input is used up, every read
/// returns zero, so a target never has to handle "out of input" in the middle of a step.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    /// Everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.data)
    }

    fn le<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let src = self.bytes(N);
        out[..src.len()].copy_from_slice(src);
        out
    }

    pub fn u8(&mut self) -> u8 {
        self.le::<1>()[0]
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.le())
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.le())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.le())
    }

    /// One of `choices`, picked by one byte.
    pub fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[usize::from(self.u8()) % choices.len()]
    }

    /// A value that is usually one of `interesting` (the registers or ports a device
    /// decodes) and sometimes anything: one byte picks, and an out-of-range pick reads
    /// an arbitrary u16 instead.
    pub fn port(&mut self, interesting: &[u16]) -> u16 {
        let i = usize::from(self.u8());
        match interesting.get(i) {
            Some(&p) => p,
            None if i % 2 == 0 => self.u16(),
            // Near the interesting ones: off-by-one decoding.
            None => interesting[i % interesting.len()].wrapping_add(u16::from(self.u8() % 8)),
        }
    }

    /// An access size: 1, 2 or 4 bytes, and now and then an invalid one.
    pub fn size(&mut self) -> u8 {
        match self.u8() % 16 {
            0..=4 => 1,
            5..=9 => 2,
            10..=14 => 4,
            _ => self.u8(),
        }
    }
}

/// The latest time the device targets reach: 2^62 ns is 146 years of uptime. The models'
/// clocks are the hypervisor's monotonic nanoseconds since boot, which never get near
/// 2^64; the bound keeps the fuzzer from reporting sums that only overflow there.
pub const MAX_NS: u64 = 1 << 62;

/// Monotonic nanoseconds for the device models, advanced by the input.
pub struct Clock {
    pub now: u64,
}

impl Clock {
    pub fn new(start: u64) -> Self {
        Clock { now: start.min(MAX_NS) }
    }

    /// Advances by a delta read from the input: a 16-bit count scaled by 2^0 .. 2^47, so
    /// that both nanosecond-close events and day-long gaps occur.
    pub fn advance(&mut self, input: &mut Input<'_>) {
        let shift = u32::from(input.u8() % 48);
        let delta = u64::from(input.u16()) << shift;
        self.now = self.now.saturating_add(delta).min(MAX_NS);
    }
}

/// The mask of an access of `size` bytes (all ones for an invalid size, which the models
/// treat as 4).
pub fn size_mask(size: u8) -> u32 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => u32::MAX,
    }
}
