//! CPU lists as `xl vcpu-pin` takes and `xl vcpu-list` shows them: `all`, `2`, `0-3,5`.

use crate::number::parse_u32;

/// Highest CPU a mask can name (the ABI's masks are 64 bits).
pub const MAX_CPU: u32 = 63;

/// A set of physical CPUs, bit i = CPU i (the ABI's affinity mask).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSet(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuListError<'a> {
    /// An empty list or an empty element (`1,,2`).
    Empty,
    /// An element that is not a number or range.
    BadNumber(&'a str),
    /// `3-1`.
    Reversed { first: u32, last: u32 },
    /// A CPU above [`MAX_CPU`].
    TooHigh(u32),
}

impl core::fmt::Display for CpuListError<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CpuListError::Empty => f.write_str("empty CPU list element"),
            CpuListError::BadNumber(s) => write!(f, "bad CPU number '{s}'"),
            CpuListError::Reversed { first, last } => write!(f, "CPU range {first}-{last} runs backwards"),
            CpuListError::TooHigh(cpu) => write!(f, "CPU {cpu} is above the highest possible ({MAX_CPU})"),
        }
    }
}

impl CpuSet {
    /// Every CPU there can be; the caller narrows it to the host's.
    pub const ALL: CpuSet = CpuSet(u64::MAX);

    /// The first `count` CPUs.
    pub fn first(count: u32) -> CpuSet {
        CpuSet(if count >= 64 { u64::MAX } else { (1u64 << count) - 1 })
    }

    /// Parses `all` or comma-separated CPUs and inclusive ranges.
    pub fn parse(text: &str) -> Result<CpuSet, CpuListError<'_>> {
        if text == "all" {
            return Ok(CpuSet::ALL);
        }
        let mut mask = 0u64;
        for element in text.split(',') {
            if element.is_empty() {
                return Err(CpuListError::Empty);
            }
            let (first, last) = match element.split_once('-') {
                Some((a, b)) => (cpu(a)?, cpu(b)?),
                None => (cpu(element)?, cpu(element)?),
            };
            if first > last {
                return Err(CpuListError::Reversed { first, last });
            }
            for c in first..=last {
                mask |= 1 << c;
            }
        }
        Ok(CpuSet(mask))
    }

    pub fn intersect(self, other: CpuSet) -> CpuSet {
        CpuSet(self.0 & other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Shows the set as a list; `all` when it holds every one of the host's `host_cpus`.
    pub fn display(self, host_cpus: u32) -> CpuSetDisplay {
        CpuSetDisplay { set: self, host_cpus }
    }
}

fn cpu(text: &str) -> Result<u32, CpuListError<'_>> {
    let n = parse_u32(text).ok_or(if text.is_empty() { CpuListError::Empty } else { CpuListError::BadNumber(text) })?;
    if n > MAX_CPU { Err(CpuListError::TooHigh(n)) } else { Ok(n) }
}

/// Returned by [`CpuSet::display`].
pub struct CpuSetDisplay {
    set: CpuSet,
    host_cpus: u32,
}

impl core::fmt::Display for CpuSetDisplay {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let host = CpuSet::first(self.host_cpus.max(1));
        if self.set.intersect(host) == host {
            return f.pad("all");
        }
        if self.set.is_empty() {
            return f.pad("none");
        }
        // Ranges into a small buffer first, so that width and alignment apply to the whole list.
        let mut text = crate::table::StrBuf::<192>::new();
        let mask = self.set.0;
        let mut c = 0u32;
        let mut first = true;
        while c < 64 {
            if mask >> c & 1 == 0 {
                c += 1;
                continue;
            }
            let start = c;
            while c < 64 && mask >> c & 1 == 1 {
                c += 1;
            }
            let sep = if first { "" } else { "," };
            first = false;
            let _ = match c - 1 - start {
                0 => core::fmt::Write::write_fmt(&mut text, format_args!("{sep}{start}")),
                _ => core::fmt::Write::write_fmt(&mut text, format_args!("{sep}{start}-{}", c - 1)),
            };
        }
        f.pad(text.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn lists_and_ranges_parse_to_masks() {
        assert_eq!(CpuSet::parse("0"), Ok(CpuSet(1)));
        assert_eq!(CpuSet::parse("0-3,5"), Ok(CpuSet(0b10_1111)));
        assert_eq!(CpuSet::parse("2-2"), Ok(CpuSet(0b100)));
        assert_eq!(CpuSet::parse("63"), Ok(CpuSet(1 << 63)));
        assert_eq!(CpuSet::parse("0x3"), Ok(CpuSet(0b1000)));
        assert_eq!(CpuSet::parse("all"), Ok(CpuSet::ALL));
    }

    #[test]
    fn bad_lists_are_refused_with_the_reason() {
        assert_eq!(CpuSet::parse("3-1"), Err(CpuListError::Reversed { first: 3, last: 1 }));
        assert_eq!(CpuSet::parse("64"), Err(CpuListError::TooHigh(64)));
        assert_eq!(CpuSet::parse(""), Err(CpuListError::Empty));
        assert_eq!(CpuSet::parse("1,,2"), Err(CpuListError::Empty));
        assert_eq!(CpuSet::parse("1-"), Err(CpuListError::Empty));
        assert_eq!(CpuSet::parse("x"), Err(CpuListError::BadNumber("x")));
        assert_eq!(CpuSet::parse("1-2-3"), Err(CpuListError::BadNumber("2-3")));
        assert_eq!(CpuSet::parse("99999999999"), Err(CpuListError::BadNumber("99999999999")));
        assert_eq!(format!("{}", CpuListError::Reversed { first: 3, last: 1 }), "CPU range 3-1 runs backwards");
    }

    #[test]
    fn sets_show_as_ranges_or_all() {
        assert_eq!(format!("{}", CpuSet(0b1011).display(8)), "0-1,3");
        assert_eq!(format!("{}", CpuSet(0b11).display(2)), "all");
        assert_eq!(format!("{}", CpuSet::ALL.display(4)), "all");
        assert_eq!(format!("{}", CpuSet(0b101).display(4)), "0,2");
        assert_eq!(format!("{}", CpuSet(1 << 63 | 1 << 62).display(64)), "62-63");
        assert_eq!(format!("{}", CpuSet(0).display(4)), "none");
        assert_eq!(format!("[{:<6}]", CpuSet(0b110).display(4)), "[1-2   ]");
    }
}
