//! The host's CMOS real-time clock, read once at boot so that every domain's emulated
//! RTC starts at the wall-clock time (MC146818 registers 0x00-0x09, 0x0B, 0x32).

use super::cpu::{inb, outb};

fn read(index: u8) -> u8 {
    // SAFETY: the CMOS index/data ports belong to the hypervisor (no guest reaches them:
    // a DomU's 0x70/0x71 exit to its emulated RTC). Bit 7 of the index keeps NMIs enabled.
    unsafe {
        outb(0x70, index & 0x7F);
        inb(0x71)
    }
}

fn update_in_progress() -> bool {
    read(0x0A) & 0x80 != 0
}

/// Seconds since 1970-01-01 00:00 UTC, assuming the CMOS clock keeps UTC (as Linux
/// and most servers set it). None if the clock reads as nonsense.
pub fn unix_time() -> Option<u64> {
    // Wait out an update (at most ~2 ms), then read until two reads agree.
    let mut spins = 0u32;
    while update_in_progress() && spins < 1_000_000 {
        spins += 1;
        core::hint::spin_loop();
    }
    let snapshot = || [read(0x00), read(0x02), read(0x04), read(0x07), read(0x08), read(0x09), read(0x32)];
    let mut a = snapshot();
    for _ in 0..5 {
        let b = snapshot();
        if a == b {
            break;
        }
        a = b;
    }
    let status_b = read(0x0B);
    let bcd = status_b & 0x04 == 0;
    let conv = |v: u8| if bcd { (v >> 4) * 10 + (v & 0x0F) } else { v };
    let [sec, min, hour_raw, day, month, year, century] = a;
    let pm = status_b & 0x02 == 0 && hour_raw & 0x80 != 0;
    let mut hour = conv(hour_raw & 0x7F);
    if status_b & 0x02 == 0 {
        hour = hour % 12 + if pm { 12 } else { 0 };
    }
    let century = match conv(century) {
        19..=21 => u64::from(conv(century)),
        _ => 20,
    };
    let (sec, min, day, month) = (conv(sec), conv(min), conv(day), conv(month));
    if sec > 59 || min > 59 || hour > 23 || !(1..=31).contains(&day) || !(1..=12).contains(&month) {
        return None;
    }
    let year = century * 100 + u64::from(conv(year));
    Some(
        days_from_civil(year, u64::from(month), u64::from(day)) * 86_400
            + u64::from(hour) * 3600
            + u64::from(min) * 60
            + u64::from(sec),
    )
}

/// Days since 1970-01-01 of a Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// The host's time at boot (read once, then kept): the start of every domain's clock,
/// advanced by the time since boot.
static BOOT_TIME: spin::Once<(u64, u64)> = spin::Once::new();

/// Reads the host clock once (call during bring-up); later calls keep the first reading.
pub fn init() {
    BOOT_TIME.call_once(|| (unix_time().unwrap_or(0), super::timer::now_ns()));
}

/// The wall-clock time now, in Unix seconds, from the boot reading and the TSC.
pub fn boot_unix_time() -> u64 {
    match BOOT_TIME.get() {
        Some(&(unix, at_ns)) => unix + super::timer::now_ns().saturating_sub(at_ns) / 1_000_000_000,
        None => 0,
    }
}
