//! A DomU's console output on its way to the hypervisor's log: cut into lines
//! ([`LineBuffer`]) and rate-limited per domain ([`ConsoleLimit`], a token bucket), as
//! Xen's console driver limits guest output. Pure logic, host-tested.
//!
//! Why: every line a guest prints becomes a log line on the machine's one serial port,
//! shared with the hypervisor and Domain0's shell. Unlimited, one DomU writing newlines
//! in a loop fills the port for seconds at a time and washes the log ring that `dmesg`
//! reads. Lines over a domain's budget are not shown in the log (they stay in the
//! domain's own console ring for `console ID`); the log says how many, now and then.

/// A console line buffer: bytes until a newline (or a full line), then one log line.
#[derive(Debug)]
pub struct LineBuffer {
    buf: [u8; LINE_MAX],
    len: usize,
    /// The last call handed out a line; the next byte starts a new one.
    handed_out: bool,
}

/// The longest line kept; longer ones are cut into lines this long.
pub const LINE_MAX: usize = 160;

impl Default for LineBuffer {
    fn default() -> Self {
        Self { buf: [0; LINE_MAX], len: 0, handed_out: false }
    }
}

impl LineBuffer {
    /// Adds a byte; returns a finished line when there is one. Control characters other
    /// than tab are shown as '.', so a guest cannot inject escape sequences into the
    /// hypervisor's console.
    pub fn push(&mut self, byte: u8) -> Option<&str> {
        if self.handed_out {
            self.len = 0;
            self.handed_out = false;
        }
        match byte {
            b'\n' => {}
            b'\r' => return None,
            _ => {
                let shown = if byte == b'\t' || (0x20..=0x7E).contains(&byte) { byte } else { b'.' };
                self.buf[self.len] = shown;
                self.len += 1;
                if self.len < self.buf.len() {
                    return None;
                }
            }
        }
        self.handed_out = true;
        // Only printable ASCII is stored, so this is always UTF-8.
        core::str::from_utf8(&self.buf[..self.len]).ok()
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: u64,
    last_ns: u64,
    rate: u64,
    burst: u64,
}

impl TokenBucket {
    /// A full bucket at time `now_ns`.
    pub const fn new(rate: u64, burst: u64, now_ns: u64) -> Self {
        Self { tokens: burst, last_ns: now_ns, rate, burst }
    }

    /// Takes `n` tokens if there are that many at `now_ns`.
    pub fn take(&mut self, now_ns: u64, n: u64) -> bool {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        if elapsed > 0 {
            // Whole tokens only; the remainder of the interval is kept for next time, so
            // frequent small calls refill as fast as rare large ones.
            let earned = (u128::from(elapsed) * u128::from(self.rate) / 1_000_000_000) as u64;
            if earned > 0 || self.tokens >= self.burst {
                let used_ns = if self.rate == 0 {
                    elapsed
                } else {
                    (u128::from(earned) * 1_000_000_000 / u128::from(self.rate)) as u64
                };
                self.tokens = self.tokens.saturating_add(earned).min(self.burst);
                self.last_ns = if self.tokens >= self.burst { now_ns } else { self.last_ns + used_ns };
            }
        }
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// What a log line costs beyond its text: the prefix the logger adds (time stamp,
/// level, CPU, target, domain name). Charged per line, so that a flood of empty lines
/// is not free.
pub const LINE_OVERHEAD: u64 = 48;
/// A domain may print this many bytes of log lines at once (about 3 s of the serial
/// port at 115200 baud) ...
pub const BURST_BYTES: u64 = 32 * 1024;
/// ... and this many a second after that (the serial port at 115200 baud carries about
/// 11,500): a Linux boot's messages fit, a flood takes a third of the port at most.
pub const RATE_BYTES: u64 = 4 * 1024;
/// How often the log says how many lines were not shown.
pub const NOTICE_NS: u64 = 5_000_000_000;

/// The log budget of one domain's console.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleLimit {
    bucket: TokenBucket,
    /// Lines not shown since the last notice.
    dropped: u64,
    /// Lines not shown, ever.
    pub dropped_total: u64,
    last_notice_ns: u64,
}

impl ConsoleLimit {
    pub const fn new(now_ns: u64) -> Self {
        Self {
            bucket: TokenBucket::new(RATE_BYTES, BURST_BYTES, now_ns),
            dropped: 0,
            dropped_total: 0,
            last_notice_ns: now_ns,
        }
    }

    /// Whether a line of `len` bytes may go to the log at `now_ns`; a line refused is
    /// counted.
    pub fn admit(&mut self, now_ns: u64, len: usize) -> bool {
        if self.bucket.take(now_ns, len as u64 + LINE_OVERHEAD) {
            true
        } else {
            self.dropped_rejected();
            false
        }
    }

    /// Counts a line that was admitted but could not be written (the port was full).
    pub fn dropped_rejected(&mut self) {
        self.dropped += 1;
        self.dropped_total += 1;
    }

    /// Whether lines were not shown since the last notice (no clock needed to ask).
    pub fn has_dropped(&self) -> bool {
        self.dropped != 0
    }

    /// How many lines were not shown since the last notice, once every [`NOTICE_NS`]
    /// while there are any.
    pub fn notice(&mut self, now_ns: u64) -> Option<u64> {
        if self.dropped == 0 || now_ns.saturating_sub(self.last_notice_ns) < NOTICE_NS {
            return None;
        }
        self.last_notice_ns = now_ns;
        Some(core::mem::take(&mut self.dropped))
    }

    /// The lines not shown since the last notice, whenever asked (the domain ended).
    pub fn final_notice(&mut self) -> Option<u64> {
        Some(core::mem::take(&mut self.dropped)).filter(|&n| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn console_lines_end_at_newline_and_hide_control_characters() {
        let mut b = LineBuffer::default();
        let mut lines = Vec::new();
        for &c in b"hi\x1b[2J\r\nok\n" {
            if let Some(l) = b.push(c) {
                lines.push(l.to_string());
            }
        }
        assert_eq!(lines, vec!["hi.[2J".to_string(), "ok".to_string()]);
    }

    #[test]
    fn an_endless_line_is_flushed_when_the_buffer_is_full() {
        let mut b = LineBuffer::default();
        let flushed: Vec<String> = (0..400).filter_map(|_| b.push(b'x').map(|l| l.to_string())).collect();
        assert_eq!(flushed.len(), 2);
        assert_eq!(flushed[0].len(), LINE_MAX);
    }

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let mut b = TokenBucket::new(1000, 5000, 0);
        assert!(b.take(0, 5000));
        assert!(!b.take(0, 1));
        // Half a second: 500 tokens.
        assert!(b.take(SEC / 2, 500));
        assert!(!b.take(SEC / 2, 1));
        // A long pause refills to the burst, not beyond.
        assert!(b.take(100 * SEC, 5000));
        assert!(!b.take(100 * SEC, 1));
    }

    #[test]
    fn many_small_calls_refill_as_fast_as_one_large_one() {
        let mut b = TokenBucket::new(1000, 1000, 0);
        assert!(b.take(0, 1000));
        // Every 0.1 ms for a second: each interval alone earns 0.1 token.
        let mut got = 0;
        for i in 1..=10_000u64 {
            if b.take(i * 100_000, 1) {
                got += 1;
            }
        }
        assert!((999..=1000).contains(&got), "{got} tokens in one second at 1000/s");
    }

    #[test]
    fn time_going_backwards_or_huge_gaps_do_not_break_the_bucket() {
        let mut b = TokenBucket::new(u64::MAX, u64::MAX, 10);
        assert!(b.take(5, 1));
        assert!(b.take(u64::MAX, u64::MAX - 1));
        let mut z = TokenBucket::new(0, 10, 0);
        assert!(z.take(SEC, 10));
        assert!(!z.take(1000 * SEC, 1), "rate 0 never refills");
    }

    #[test]
    fn a_flood_of_newlines_is_cut_to_the_rate_and_counted() {
        let mut limit = ConsoleLimit::new(0);
        // 4096 empty lines at once, every millisecond, for 10 s.
        let mut shown = 0u64;
        for ms in 0..10_000u64 {
            for _ in 0..4096 {
                if limit.admit(ms * 1_000_000, 0) {
                    shown += 1;
                }
            }
        }
        let budget = (BURST_BYTES + 10 * RATE_BYTES) / LINE_OVERHEAD;
        assert!(shown <= budget + 1, "{shown} lines shown, budget {budget}");
        assert!(shown >= budget - 2, "{shown} lines shown, budget {budget}");
        assert_eq!(limit.dropped_total, 10_000 * 4096 - shown);
        // Notices: one per period, with the count since the last one.
        assert_eq!(limit.notice(4 * SEC), None);
        let n = limit.notice(10 * SEC).unwrap();
        assert_eq!(n, limit.dropped_total);
        assert_eq!(limit.notice(11 * SEC), None);
        assert!(!limit.admit(11 * SEC, 10_000));
        assert_eq!(limit.final_notice(), Some(1));
        assert_eq!(limit.final_notice(), None);
    }

    #[test]
    fn a_linux_boot_fits_in_the_burst() {
        // About 250 lines of 70 characters in its first second, then more slowly.
        let mut limit = ConsoleLimit::new(0);
        assert!((0..250u64).all(|i| limit.admit(i * 4_000_000, 70)));
        assert!((0..200u64).all(|i| limit.admit(SEC + i * 25_000_000, 70)));
    }
}
