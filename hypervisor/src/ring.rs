//! A byte ring that remembers the last `N` bytes of a stream and where they sit in it:
//! each domain's console output and the hypervisor's log. Readers keep their own cursor
//! (a stream position), so any number of them can follow the same ring, and one that fell
//! behind by more than `N` bytes resumes at the oldest byte still kept.
//!
//! [`Fifo`] is the other kind: bytes queued for one consumer (the serial transmit
//! buffer), which never overwrites what was not taken yet.

pub struct ByteRing<const N: usize> {
    buf: [u8; N],
    /// Bytes written since the start: the stream position of the next byte.
    written: u64,
}

impl<const N: usize> Default for ByteRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> ByteRing<N> {
    pub const fn new() -> Self {
        ByteRing { buf: [0; N], written: 0 }
    }

    /// An empty ring on the heap, built in place: a ring is often too large to pass
    /// through a small kernel stack as a temporary. `None` when the heap is full.
    pub fn boxed() -> Option<alloc::boxed::Box<Self>> {
        let layout = core::alloc::Layout::new::<Self>();
        if layout.size() == 0 {
            return Some(alloc::boxed::Box::new(Self::new()));
        }
        // SAFETY: a non-zero layout; all-zero bytes are a valid empty ring (an array of
        // bytes and a count), and the pointer comes from the global allocator with this
        // type's layout, as `Box::from_raw` requires.
        unsafe {
            let p = alloc::alloc::alloc_zeroed(layout) as *mut Self;
            (!p.is_null()).then(|| alloc::boxed::Box::from_raw(p))
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if N == 0 {
            return;
        }
        for &b in bytes {
            self.buf[(self.written % N as u64) as usize] = b;
            self.written += 1;
        }
    }

    /// The stream position after the last byte written.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The stream position of the oldest byte still kept.
    pub fn oldest(&self) -> u64 {
        self.written.saturating_sub(N as u64)
    }

    /// Copies bytes starting at stream position `cursor` (or the oldest one kept, if that
    /// is later) into `out`; returns where they started and how many were copied. A cursor
    /// beyond the end reads nothing from the end.
    pub fn read(&self, cursor: u64, out: &mut [u8]) -> (u64, usize) {
        let start = cursor.clamp(self.oldest(), self.written);
        let n = usize::try_from(self.written - start).unwrap_or(usize::MAX).min(out.len());
        for (i, slot) in out[..n].iter_mut().enumerate() {
            *slot = self.buf[((start + i as u64) % N as u64) as usize];
        }
        (start, n)
    }
}

/// A first-in first-out byte queue of at most `N` bytes. `push` takes what fits;
/// the consumer looks at the oldest bytes with `peek` (one contiguous piece, so it
/// can be handed to a device as it is) and removes them with `consume`.
pub struct Fifo<const N: usize> {
    buf: [u8; N],
    /// Index of the oldest byte.
    head: usize,
    len: usize,
}

impl<const N: usize> Default for Fifo<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Fifo<N> {
    pub const fn new() -> Self {
        Fifo { buf: [0; N], head: 0, len: 0 }
    }

    /// Appends as much of `bytes` as fits; returns how many bytes that was.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(N - self.len);
        for (i, &b) in bytes.iter().take(n).enumerate() {
            let at = (self.head + self.len + i) % N;
            if let Some(slot) = self.buf.get_mut(at) {
                *slot = b;
            }
        }
        self.len += n;
        n
    }

    /// The oldest bytes, up to the end of the buffer (the rest, after a wrap, comes in
    /// the next `peek` once these are consumed).
    pub fn peek(&self) -> &[u8] {
        let end = (self.head + self.len).min(N);
        self.buf.get(self.head..end).unwrap_or(&[])
    }

    /// Removes the `n` oldest bytes (at most all of them).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.len -= n;
        self.head = if self.len == 0 { 0 } else { (self.head + n) % N };
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// How many more bytes `push` would take.
    pub fn free(&self) -> usize {
        N - self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boxed_ring_starts_empty_and_works_like_one_built_in_place() {
        let mut r = ByteRing::<64>::boxed().unwrap();
        assert_eq!((r.written(), r.oldest()), (0, 0));
        r.push(b"hello");
        let mut out = [0u8; 8];
        assert_eq!(r.read(0, &mut out), (0, 5));
        assert_eq!(&out[..5], b"hello");
    }

    #[test]
    fn a_reader_follows_the_stream_with_its_cursor() {
        let mut r = ByteRing::<8>::new();
        r.push(b"abc");
        let mut out = [0u8; 16];
        assert_eq!(r.read(0, &mut out), (0, 3));
        assert_eq!(&out[..3], b"abc");
        r.push(b"de");
        assert_eq!(r.read(3, &mut out), (3, 2));
        assert_eq!(&out[..2], b"de");
        assert_eq!(r.read(5, &mut out), (5, 0), "nothing new");
        assert_eq!(r.read(99, &mut out), (5, 0), "a cursor past the end reads nothing");
    }

    #[test]
    fn a_reader_that_fell_behind_resumes_at_the_oldest_byte_kept() {
        let mut r = ByteRing::<8>::new();
        r.push(b"0123456789");
        let mut out = [0u8; 16];
        assert_eq!(r.oldest(), 2);
        assert_eq!(r.read(0, &mut out), (2, 8));
        assert_eq!(&out[..8], b"23456789");
    }

    #[test]
    fn a_small_buffer_reads_in_pieces() {
        let mut r = ByteRing::<8>::new();
        r.push(b"hello");
        let mut out = [0u8; 2];
        let mut cursor = 0;
        let mut got = Vec::new();
        loop {
            let (start, n) = r.read(cursor, &mut out);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&out[..n]);
            cursor = start + n as u64;
        }
        assert_eq!(got, b"hello");
    }
    #[test]
    fn fifo_keeps_order_across_the_wrap_and_refuses_what_does_not_fit() {
        let mut f: Fifo<8> = Fifo::new();
        assert_eq!(f.push(b"abcdef"), 6);
        assert_eq!(f.peek(), b"abcdef");
        f.consume(4);
        assert_eq!(f.push(b"ghijklmn"), 6, "two left + six = eight");
        assert_eq!(f.len(), 8);
        let mut out = Vec::new();
        while !f.is_empty() {
            let piece = f.peek().to_vec();
            assert!(!piece.is_empty());
            out.extend_from_slice(&piece[..piece.len().min(3)]);
            f.consume(piece.len().min(3));
        }
        assert_eq!(out, b"efghijkl");
        assert_eq!(f.push(b"mn"), 2);
        assert_eq!(f.peek(), b"mn");
        f.consume(99);
        assert!(f.is_empty() && f.peek().is_empty());
    }

    #[test]
    fn fifo_matches_a_model_queue() {
        let mut f: Fifo<13> = Fifo::new();
        let mut model = std::collections::VecDeque::new();
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..10_000u64 {
            if next() % 2 == 0 {
                let bytes: Vec<u8> = (0..next() % 9).map(|i| (round + i) as u8).collect();
                let n = f.push(&bytes);
                assert_eq!(n, bytes.len().min(13 - model.len()));
                model.extend(&bytes[..n]);
            } else {
                let piece = f.peek();
                let want: Vec<u8> = model.iter().take(piece.len()).copied().collect();
                assert_eq!(piece, &want[..]);
                let n = (next() % 6) as usize;
                f.consume(n);
                for _ in 0..n.min(model.len()) {
                    model.pop_front();
                }
            }
            assert_eq!(f.len(), model.len());
        }
    }
}
