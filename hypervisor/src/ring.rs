//! A byte ring that remembers the last `N` bytes of a stream and where they sit in it:
//! each domain's console output and the hypervisor's log. Readers keep their own cursor
//! (a stream position), so any number of them can follow the same ring, and one that fell
//! behind by more than `N` bytes resumes at the oldest byte still kept.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
