//! `cargo xtask bench`: boots the `bench64` guest (and a pair of them for the vCPU
//! switch) in an emulator, collects what they print and what the hypervisor logs, and
//! writes a table to the terminal and `results.json` and `benchmarks.md` to `target/bench/`
//! (with `--record`, the committed `bench/results.json` and `docs/benchmarks.md`).
//!
//! Five boots, each with one CPU:
//! - **micro**: one `bench64` domain with an empty command line: the exit round trips
//!   and interrupt latencies it measures itself (`bench: NAME median=.. min=.. max=..
//!   n=..` lines), and the TSC of its first instruction, which is set against the
//!   hypervisor's `domain bench: create start` log line (both are TSC values).
//! - **switch**: two `bench64` domains (`cmdline = switch`) with a 1 ms slice take turns
//!   on the CPU; each prints the gaps in its own TSC stream, and `switch_times` pairs a
//!   gap of one with the resumption of the other. The same boot's `create start` lines
//!   give the memory the first domain's creation took (frames and heap).
//!
//! - **share**: three `bench64` domains (`cmdline = share`) of weights 256/512/1024 each
//!   count their own CPU time over the same 3 s; `share_error` compares the shares with
//!   the weights.
//! - **dom0**: `bench64` as Domain0 (`cmdline = passthrough`) times a read of a port its
//!   I/O bitmap passes through.
//! - **concurrent**: 64 domains of 4 MiB on a 512 MiB machine, each stepping three times.
//!
//! The hypervisor image's size is read from the release ELF's program headers.
//!
//! The parsing and the statistics are pure functions, tested on the host below.

use crate::build::{self, Profile};
use crate::emulator::{BOCHS_CPU_MODEL, BOCHS_IPS, Engine, Firmware, Machine, Outcome};
use crate::{deps, step, workspace_root};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// One measured quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub median: u64,
    pub min: u64,
    pub max: u64,
    pub n: u64,
}

/// A row of the results: a goal, and what was measured (or why nothing was).
#[derive(Debug, Clone)]
pub struct Row {
    pub name: &'static str,
    pub what: &'static str,
    pub unit: &'static str,
    pub goal: Option<u64>,
    pub result: Result<Stat, String>,
}

/// Rows whose goal is a minimum (more is better); every other goal is a maximum.
const AT_LEAST: &[&str] = &["concurrent-domains"];

impl Row {
    /// `Some(true)` when the median meets the goal.
    pub fn met(&self) -> Option<bool> {
        match (&self.result, self.goal) {
            (Ok(s), Some(g)) if self.at_least() => Some(s.median >= g),
            (Ok(s), Some(g)) => Some(s.median <= g),
            _ => None,
        }
    }

    fn at_least(&self) -> bool {
        AT_LEAST.contains(&self.name)
    }

    fn verdict(&self) -> String {
        match (&self.result, self.goal) {
            (Err(_), _) => "not measured".into(),
            (Ok(_), None) => "-".into(),
            (Ok(s), Some(g)) if self.at_least() && s.median >= g => format!("met ({} over)", s.median - g),
            (Ok(s), Some(g)) if self.at_least() => format!("MISSED by {}", g - s.median),
            (Ok(s), Some(g)) if s.median <= g => format!("met ({} under)", g - s.median),
            (Ok(s), Some(g)) => format!("MISSED by {} ({:.1}x)", s.median - g, s.median as f64 / g.max(1) as f64),
        }
    }
}

const TICKS: &str = "tsc ticks";
const BYTES: &str = "bytes";

/// The rows, in the order of the goals (priority), with the guest's benchmark names.
/// `(name, description, unit, goal)`.
const GOALS: &[(&str, &str, &str, Option<u64>)] = &[
    (
        "overhead",
        "empty timed region (lfence; rdtsc; lfence .. lfence; rdtsc), subtracted from the exit rows",
        TICKS,
        None,
    ),
    ("cpuid", "CPUID (leaf 0) exit round trip", TICKS, Some(150)),
    ("vmcall-version", "null hypercall: VMCALL Version round trip", TICKS, Some(150)),
    (
        "cpuid-spec-ctrl-off",
        "CPUID (leaf 0) with `spec_ctrl = off`: the difference to `cpuid` is what the speculation mitigations Bochs runs (RSB filling after every exit) cost per exit",
        TICKS,
        None,
    ),
    ("vmcall-version-spec-ctrl-off", "VMCALL Version with `spec_ctrl = off` (as above)", TICKS, None),
    ("pio-read-uart-lsr", "port read of an emulated register: IN from the UART's LSR (0x3FD)", TICKS, Some(250)),
    (
        "pio-read-passthrough-dom0",
        "port read of a passthrough port from Domain0: IN from the machine's UART LSR (0x3FD), open in its I/O bitmap; the goal is no exit (an exit round trip is over 150)",
        TICKS,
        Some(10),
    ),
    ("rdmsr-apic-base", "RDMSR of an emulated MSR: IA32_APIC_BASE (0x1B)", TICKS, Some(200)),
    ("rdmsr-tsc-deadline", "RDMSR of an emulated MSR: IA32_TSC_DEADLINE (0x6E0)", TICKS, Some(200)),
    ("mmio-read-lapic-version", "MMIO read of the xAPIC version register (0xFEE00030)", TICKS, Some(400)),
    (
        "irq-apic-timer-running",
        "APIC timer (TSC-deadline mode) expiry to the handler's RDTSC, vCPU running with IF=1",
        TICKS,
        Some(1000),
    ),
    (
        "irq-apic-timer-halted",
        "APIC timer (TSC-deadline mode) expiry to the handler's RDTSC, vCPU halted in HLT",
        TICKS,
        Some(1000),
    ),
    ("vcpu-switch", "vCPU switch on one CPU: one domain's last TSC read to the other's first", TICKS, Some(2000)),
    (
        "sched-preempt-no-switch",
        "slice end or tick that gives the CPU back to the same vCPU: a gap with no switch in it",
        TICKS,
        None,
    ),
    (
        "scheduler-share-error",
        "3 CPU-bound domains of weights 256/512/1024 on one CPU: largest gap between a domain's share of the CPU time and its weight's share (ideal 14.29/28.57/57.14 %), over 3 s",
        HUNDREDTHS,
        Some(100),
    ),
    (
        "domain-create-to-first-instruction",
        "hypervisor's `create start` log line to the guest's first instruction (RDTSC)",
        TICKS,
        Some(100_000),
    ),
    ("hypervisor-image-loaded-size", "release kernel ELF: sum of PT_LOAD p_memsz", BYTES, Some(512 * 1024)),
    (
        "memory-per-idle-domain",
        "hypervisor memory per 16 MiB 1-vCPU domain beyond its RAM: frames (EPT tables, VMCS, ...) + heap",
        BYTES,
        Some(64 * 1024),
    ),
    (
        "concurrent-domains",
        "4 MiB domains started together on a 512 MiB machine (1 CPU) that all ran to the end: three steps of 5 ms of CPU each, exit 0",
        DOMAINS,
        Some(CONCURRENT_DOMAINS as u64),
    ),
];

/// Unit of the share-error row: hundredths of a percentage point.
const HUNDREDTHS: &str = "0.01 points";
/// The weights of the share boot's three domains.
pub const SHARE_WEIGHTS: [u32; 3] = [256, 512, 1024];

/// The configuration of the share boot.
pub fn share_config() -> String {
    let mut out = String::new();
    for w in SHARE_WEIGHTS {
        let _ = write!(out, "[domain share-{w}]\nimage = bench64\nmemory = 16\ncmdline = share\nweight = {w}\n");
    }
    out
}

/// Each share domain's own CPU time (`bench-share: ran=R`), in `SHARE_WEIGHTS` order.
pub fn share_ran(serial: &str) -> Option<Vec<u64>> {
    SHARE_WEIGHTS
        .iter()
        .map(|w| {
            let name = format!("share-{w}");
            serial.lines().find_map(|l| {
                let rest = console_text(l, &name)?.strip_prefix("bench-share: ran=")?;
                rest.split_whitespace().next()?.parse().ok()
            })
        })
        .collect()
}

/// The largest |share - weight share| over the domains, in hundredths of a percentage
/// point, and each domain's share in percent (for the notes).
pub fn share_error(ran: &[u64], weights: &[u32]) -> Option<(u64, Vec<f64>)> {
    let total: u64 = ran.iter().sum();
    let total_w: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 || total_w == 0 || ran.len() != weights.len() {
        return None;
    }
    let shares: Vec<f64> = ran.iter().map(|&r| 100.0 * r as f64 / total as f64).collect();
    let worst = shares
        .iter()
        .zip(weights)
        .map(|(s, &w)| (s - 100.0 * f64::from(w) / total_w as f64).abs())
        .fold(0.0f64, f64::max);
    Some(((worst * 100.0).round() as u64, shares))
}

/// Unit of the concurrent-domains row.
const DOMAINS: &str = "domains";
/// How many domains the concurrent-domains boot starts.
pub const CONCURRENT_DOMAINS: usize = 64;

/// The configuration of the concurrent-domains boot.
pub fn concurrent_config(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let _ = write!(out, "[domain c{i:02}]\nimage = bench64\nmemory = 4\ncmdline = progress\n");
    }
    out
}

/// How many of the `n` concurrent domains were created and exited 0, which a `progress`
/// guest does only after all three steps. (Its `progress: N/3` lines are guest console
/// output, which the hypervisor may leave out of the log when 64 domains print at once:
/// `domain::console`; the exit line is the hypervisor's own.)
pub fn concurrent_progress(serial: &str, n: usize) -> u64 {
    (0..n)
        .filter(|i| {
            let name = format!("c{i:02}");
            serial.contains(&format!("domain {name} (id "))
                && serial.contains(&format!("domain {name} exited status=0"))
        })
        .count() as u64
}

/// Median (mean of the middle two for an even count), minimum and maximum.
pub fn summarise(values: &[u64]) -> Option<Stat> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2 };
    Some(Stat { median, min: v[0], max: v[n - 1], n: n as u64 })
}

/// The text a domain printed on its console: `[NAME] text` at the end of a log line.
fn console_text<'a>(line: &'a str, domain: &str) -> Option<&'a str> {
    let tag = format!("[{domain}] ");
    let at = line.find(&tag)?;
    Some(&line[at + tag.len()..])
}

/// The `bench: NAME median=X min=Y max=Z n=N` lines `domain` printed.
pub fn parse_bench_lines(serial: &str, domain: &str) -> Vec<(String, Stat)> {
    serial
        .lines()
        .filter_map(|l| console_text(l, domain))
        .filter_map(|t| t.trim_end().strip_prefix("bench: "))
        .filter_map(|rest| {
            let mut words = rest.split_whitespace();
            let name = words.next()?.to_string();
            let (mut median, mut min, mut max, mut n) = (None, None, None, None);
            for w in words {
                let (k, v) = w.split_once('=')?;
                let v: u64 = v.parse().ok()?;
                match k {
                    "median" => median = Some(v),
                    "min" => min = Some(v),
                    "max" => max = Some(v),
                    "n" => n = Some(v),
                    _ => return None,
                }
            }
            Some((name, Stat { median: median?, min: min?, max: max?, n: n? }))
        })
        .collect()
}

/// The TSC at the start of a hypervisor log line: `[     123456] INFO  cpu0 ...`.
pub fn log_tsc(line: &str) -> Option<u64> {
    let rest = line.trim_start().strip_prefix('[')?;
    rest[..rest.find(']')?].trim().parse().ok()
}

/// What the hypervisor's `domain NAME: create start` line says: (TSC, free frame bytes,
/// heap bytes used).
pub fn create_start(serial: &str, domain: &str) -> Option<(u64, u64, u64)> {
    let marker = format!("domain {domain}: create start: frames free ");
    serial.lines().find_map(|l| {
        let at = l.find(&marker)?;
        let rest = &l[at + marker.len()..];
        let (free, rest) = rest.split_once(" bytes, heap used ")?;
        let used = rest.trim_end().strip_suffix(" bytes")?;
        Some((log_tsc(l)?, free.parse().ok()?, used.parse().ok()?))
    })
}

/// The TSC of `domain`'s first instruction (`bench-first: tsc=T`).
pub fn first_instruction(serial: &str, domain: &str) -> Option<u64> {
    serial
        .lines()
        .filter_map(|l| console_text(l, domain))
        .find_map(|t| t.trim_end().strip_prefix("bench-first: tsc=")?.parse().ok())
}

/// The gaps `domain` saw in its TSC stream (`bench-switch: gaps LAST FIRST LAST FIRST
/// ...`). A line with a malformed number is skipped whole.
pub fn parse_gaps(serial: &str, domain: &str) -> Vec<(u64, u64)> {
    serial
        .lines()
        .filter_map(|l| console_text(l, domain))
        .filter_map(|t| {
            let numbers: Option<Vec<u64>> =
                t.trim_end().strip_prefix("bench-switch: gaps ")?.split_whitespace().map(|w| w.parse().ok()).collect();
            let numbers = numbers.filter(|n| n.len() % 2 == 0)?;
            Some(numbers.chunks(2).map(|p| (p[0], p[1])).collect::<Vec<_>>())
        })
        .flatten()
        .collect()
}

/// The loop step `domain` reported (`bench-switch: step=S gaps=N`).
pub fn switch_step(serial: &str, domain: &str) -> Option<u64> {
    serial.lines().filter_map(|l| console_text(l, domain)).find_map(|t| {
        let rest = t.strip_prefix("bench-switch: step=")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Switches between two domains on one CPU, from their gaps: X's gap `(sx, rx)` and Y's
/// gap `(sy, ry)` with `sy < sx < ry < rx` mean X stopped at `sx` and Y went on at `ry`:
/// a switch X -> Y of `ry - sx`. A gap of X with no resumption of Y inside it (a
/// scheduler tick that gave the CPU back to X) is no switch.
pub fn switch_times(x: &[(u64, u64)], y: &[(u64, u64)]) -> Vec<u64> {
    let one_way = |from: &[(u64, u64)], to: &[(u64, u64)]| -> Vec<u64> {
        from.iter()
            .filter_map(|&(sx, rx)| {
                to.iter().filter(|&&(sy, ry)| sy < sx && sx < ry && ry < rx).map(|&(_, ry)| ry - sx).min()
            })
            .collect()
    };
    let mut all = one_way(x, y);
    all.extend(one_way(y, x));
    all
}

/// Gaps of either domain during which the other did not resume: the hypervisor took the
/// CPU and gave it back to the same vCPU. Only while both were recording (from the later
/// first gap to the earlier last one): outside that, the other may have run unrecorded.
pub fn unswitched_gaps(x: &[(u64, u64)], y: &[(u64, u64)]) -> Vec<u64> {
    let (Some(fx), Some(fy), Some(lx), Some(ly)) = (x.first(), y.first(), x.last(), y.last()) else {
        return Vec::new();
    };
    let (from_tsc, to_tsc) = (fx.0.max(fy.0), lx.1.min(ly.1));
    let one_way = |from: &[(u64, u64)], to: &[(u64, u64)]| -> Vec<u64> {
        from.iter()
            .filter(|&&(sx, rx)| from_tsc <= sx && rx <= to_tsc)
            .filter(|&&(sx, rx)| !to.iter().any(|&(_, ry)| sx < ry && ry < rx))
            .map(|&(sx, rx)| rx - sx)
            .collect()
    };
    let mut all = one_way(x, y);
    all.extend(one_way(y, x));
    all
}

/// The bytes an ELF64 image occupies once loaded: the sum of its PT_LOAD segments' p_memsz.
pub fn loaded_size(elf: &[u8]) -> Result<u64, String> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| elf.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()));
    let u64_at = |o: usize| elf.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
    if !elf.starts_with(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not a little-endian ELF64 file".into());
    }
    let short = || "truncated ELF header".to_string();
    let phoff = u64_at(0x20).ok_or_else(short)? as usize;
    let phentsize = usize::from(u16_at(0x36).ok_or_else(short)?);
    let phnum = usize::from(u16_at(0x38).ok_or_else(short)?);
    if phentsize < 56 {
        return Err(format!("program header entries of {phentsize} bytes (ELF64 needs 56)"));
    }
    let mut total = 0;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let kind = u32_at(ph).ok_or_else(|| format!("program header {i} lies beyond the file"))?;
        if kind == 1 {
            total += u64_at(ph + 0x28).ok_or_else(|| format!("program header {i} lies beyond the file"))?;
        }
    }
    Ok(total)
}

/// Memory a domain's creation took beyond its RAM: free frames before its creation minus
/// free frames before the next one's, less its RAM, plus the heap's growth.
pub fn domain_overhead(before: (u64, u64), after: (u64, u64), ram_bytes: u64) -> Result<u64, String> {
    let frames = before.0 as i128 - after.0 as i128 - ram_bytes as i128;
    let heap = after.1 as i128 - before.1 as i128;
    u64::try_from(frames + heap).map_err(|_| format!("negative overhead: frames {frames} bytes, heap {heap} bytes"))
}

/// `YYYY-MM-DD HH:MM UTC` for seconds since the Unix epoch (civil-from-days).
pub fn utc_date(unix: u64) -> String {
    let days = (unix / 86400) as i64;
    let secs = unix % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", secs / 3600, secs / 60 % 60)
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Where and when the numbers were taken.
#[derive(Debug, Clone)]
pub struct Context {
    pub emulator: String,
    pub cpu_model: String,
    pub date: String,
    pub commit: String,
    pub command: String,
}

/// `bench/results.json`: one object per row.
pub fn to_json(rows: &[Row], ctx: &Context) -> String {
    let mut out = String::from("{\n");
    let _ = writeln!(out, "  \"emulator\": {},", json_string(&ctx.emulator));
    let _ = writeln!(out, "  \"cpu_model\": {},", json_string(&ctx.cpu_model));
    let _ = writeln!(out, "  \"date\": {},", json_string(&ctx.date));
    let _ = writeln!(out, "  \"commit\": {},", json_string(&ctx.commit));
    let _ = writeln!(out, "  \"command\": {},", json_string(&ctx.command));
    out.push_str("  \"results\": [\n");
    for (i, r) in rows.iter().enumerate() {
        let goal = r.goal.map_or("null".to_string(), |g| g.to_string());
        let met = r.met().map_or("null".to_string(), |m| m.to_string());
        let _ = write!(
            out,
            "    {{\"name\": {}, \"what\": {}, \"unit\": {}, ",
            json_string(r.name),
            json_string(r.what),
            json_string(r.unit)
        );
        match &r.result {
            Ok(s) => {
                let _ =
                    write!(out, "\"median\": {}, \"min\": {}, \"max\": {}, \"n\": {}, ", s.median, s.min, s.max, s.n);
            }
            Err(why) => {
                let _ = write!(out, "\"not_measured\": {}, ", json_string(why));
            }
        }
        let _ = write!(
            out,
            "\"goal\": {goal}, \"met\": {met}, \"emulator\": {}, \"cpu_model\": {}, \"date\": {}, \"commit\": {}}}",
            json_string(&ctx.emulator),
            json_string(&ctx.cpu_model),
            json_string(&ctx.date),
            json_string(&ctx.commit)
        );
        out.push_str(if i + 1 < rows.len() { ",\n" } else { "\n" });
    }
    out.push_str("  ]\n}\n");
    out
}

fn fmt_goal(r: &Row) -> String {
    match r.goal {
        None => "-".into(),
        Some(g) if r.at_least() => format!(">= {g}"),
        Some(g) if r.unit == BYTES => format!("<= {} KiB", g / 1024),
        Some(g) => format!("<= {g}"),
    }
}

/// The terminal table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<36} {:>9} {:>9} {:>9} {:>5} {:<9} {:>12}  verdict",
        "benchmark", "median", "min", "max", "n", "unit", "goal"
    );
    for r in rows {
        match &r.result {
            Ok(s) => {
                let _ = writeln!(
                    out,
                    "{:<36} {:>9} {:>9} {:>9} {:>5} {:<9} {:>12}  {}",
                    r.name,
                    s.median,
                    s.min,
                    s.max,
                    s.n,
                    r.unit,
                    fmt_goal(r),
                    r.verdict()
                );
            }
            Err(why) => {
                let _ = writeln!(out, "{:<36} not measured: {why}", r.name);
            }
        }
    }
    out
}

/// `docs/benchmarks.md`, written whole on every run.
pub fn markdown(rows: &[Row], ctx: &Context, notes: &[String]) -> String {
    let mut out = String::new();
    out.push_str(
        "# Benchmarks\n\n\
         Written by `cargo xtask bench --record` (do not edit by hand; change\n\
         `xtask/src/bench.rs`). The same numbers are in `bench/results.json`; a run without\n\
         `--record` writes both to `target/bench/` instead.\n\n",
    );
    let _ = writeln!(out, "- command: `{}`", ctx.command);
    let _ = writeln!(out, "- emulator: {}", ctx.emulator);
    let _ = writeln!(out, "- CPU model: {}", ctx.cpu_model);
    let _ = writeln!(out, "- date: {}", ctx.date);
    let _ = writeln!(out, "- commit: {}\n", ctx.commit);
    out.push_str("## Results\n\n");
    out.push_str("| benchmark | median | min | max | n | unit | goal | verdict |\n");
    out.push_str("|---|---:|---:|---:|---:|---|---:|---|\n");
    for r in rows {
        match &r.result {
            Ok(s) => {
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {} | {} | {} | {} | {} | {} |",
                    r.name,
                    s.median,
                    s.min,
                    s.max,
                    s.n,
                    r.unit,
                    fmt_goal(r),
                    r.verdict()
                );
            }
            Err(why) => {
                let _ = writeln!(out, "| `{}` | not measured: {why} | | | | | {} | |", r.name, fmt_goal(r));
            }
        }
    }
    out.push_str("\n| benchmark | what it measures |\n|---|---|\n");
    for r in rows {
        let _ = writeln!(out, "| `{}` | {} |", r.name, r.what);
    }
    if !notes.is_empty() {
        out.push_str("\nThis run:\n\n");
        for n in notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out.push_str(METHOD);
    out
}

const METHOD: &str = "
## Method

`cargo xtask bench` builds the release hypervisor and guests, then boots the BIOS image
six times with one CPU (micro, dom0, switch, share and spec-ctrl-off with 128 MiB,
concurrent with 512 MiB),
each time with `until_guests_exit = true` and `emulator_exit = true`, and reads the
serial log. The results go to `target/bench/` unless `--record` asks for the committed
`bench/results.json` and this file, so measuring leaves a checkout clean. `cargo xtask
bench --quick` boots only the first (the exit, interrupt and create rows) and writes
nothing: the loop for working on a path.

**Time.** Every number in ticks is a TSC difference. Inside Bochs (`ips=100000000`)
the TSC advances by one per emulated instruction, so the numbers are path lengths in
instructions, identical from run to run on the same code; VM entries and exits count as
the instructions that cause them. Under QEMU with KVM they are real cycles and vary. The
goals are set in Bochs ticks.

**Exit round trips** (`guests/bench64`, empty command line). Each benchmark runs its
operation 100 times untimed, then 1000 times, each alone in a timed region:
`lfence; rdtsc; lfence`, the operation, `lfence; rdtsc`. The median of an empty region
(`overhead`) is subtracted from every sample; median, minimum and maximum follow. The
operations are CPUID leaf 0, VMCALL `Version` (through `abi::hypercall::client::vmcall`),
`in al, dx` from port 0x3FD (the emulated 16550's line status register), RDMSR of 0x1B
and of 0x6E0 (both emulated by the vCPU's local APIC model), and a 32-bit load from the
xAPIC page at 0xFEE00030 (an EPT violation the hypervisor decodes and emulates).

**Mitigation cost.** The `spec-ctrl-off` boot runs the micro guest again with
`spec_ctrl = off` (docs/security.md): the `-spec-ctrl-off` rows against `cpuid` and
`vmcall-version` are the per-exit cost of the speculation mitigations that apply on
this CPU model (on `corei7_skylake_x`: RSB filling, 32 calls and a stack adjustment).

**Passthrough port.** A `bench64` runs as Domain0 (`cmdline = passthrough`), whose I/O
bitmap passes the machine's COM1 through, and times `in al, dx` from 0x3FD the same way
(against its own `overhead-dom0`). Without an exit this is the instruction's own cost
(one tick in Bochs); the goal of 10 ticks could not be met by any exit, whose round
trip is over 150.

**Interrupt delivery.** The local APIC timer in TSC-deadline mode (LVT timer mode 10b,
vector 0x40). Each of 200 rounds (after 10 untimed) writes IA32_TSC_DEADLINE = now +
50,000 and waits, either running with interrupts enabled (`sti`, then a loop reading
the handler's flag: the hypervisor's VMX preemption timer ends the guest's run at the
deadline and the interrupt is injected at the next entry) or halted (`sti; hlt`: with
nothing else to run and the deadline under a millisecond away, the CPU sleeps with the
vCPU still loaded and resumes it directly, `sched::runloop::halt_in_place`). The handler's first
instructions are `lfence; rdtsc`; the latency is that TSC minus the deadline. The EOI
comes after the timestamp.

**vCPU switch.** Two `bench64` domains (`cmdline = switch`, 16 MiB, 1 vCPU each) share
the one CPU under the credit scheduler with `sched_slice_ms = 1`. Each spins for 300 ms
of its TSC, reading the TSC in a loop, and records every gap longer than 300 ticks as
(last read before, first read after). A gap of domain X during which domain Y resumed
(Y's own gap began before X's and ends inside it) is a switch X -> Y; its cost is Y's
first read after minus X's last read before: the preemption-timer exit, the scheduler's
decision, saving and restoring the FPU/SSE/AVX state, VMCLEAR/VMPTRLD and the entry.
It includes up to one iteration of the guests' reading loop (the `step` in the notes).
Gaps during which nobody else ran (a slice end or tick after which the scheduler keeps
the same vCPU) are not switches; they are reported apart as `sched-preempt-no-switch`.
With two equal domains the credit scheduler alternates them for a few slices and then
lets one run out its accounting period, so only part of the gaps are switches.

**Scheduler share.** Three `bench64` domains (`cmdline = share`, weights 256, 512 and
1024, 16 MiB each) on one CPU with the default 30 ms slice. Each spins reading the TSC;
after 300 ms it counts, for 3 s of wall time, the TSC steps no longer than 300 ticks
(its own CPU time: a longer step is time another domain or the hypervisor had). A
domain's share is its count over the three counts; the row is the largest difference
between a share and the weight's share (1/7, 2/7, 4/7), in hundredths of a percentage
point.

**Domain create to first instruction.** The hypervisor logs `domain NAME: create start`
as `lifecycle::start` begins (the log line's TSC is read when the line starts); the
guest's entry point's first instruction is RDTSC. The difference covers building the
domain (RAM, EPT, VMCS, devices, ACPI tables, loading the ELF), placing it on the
scheduler, the log lines on the way, the run loop's first decision and VMLAUNCH. The
hypervisor and the guest read the same TSC (no TSC offsetting). The log lines on the
way (`create start`, `created`, the scheduler's placement, `boot complete`) are queued
for COM1, not waited for (`arch::serial`). The guest's RAM comes zeroed from the
scrubber's pool (`mm::scrub`): boot zeroes 64 MiB ahead, idle CPUs the rest of free
memory; a domain whose RAM the pool cannot cover zeroes the remainder on this path
(about 1 tick per 8 bytes in Bochs).

**Hypervisor image.** The sum of `p_memsz` of the `PT_LOAD` program headers of the
release kernel ELF (`target/x86_64-unknown-none/release/hypervisor`), i.e. what the
bootloader maps: code, read-only data, data and BSS (the 8 MiB heap is not in the image;
it is taken from free frames at boot).

**Memory per domain.** The `create start` line also prints the free frame memory and
the heap bytes in use. In the switch boot the first domain's line comes before its
creation and the second's right after it, so (free frames before - free frames after -
16 MiB of guest RAM) + (heap after - heap before) is what the hypervisor keeps for one
16 MiB 1-vCPU domain: EPT tables, VMCS, the domain's and vCPU's structures, device
models and console ring. It is measured at creation, before the domain first runs.
";

/// Everything one boot left in the serial log.
struct BootResult {
    serial: String,
}

fn boot(
    engine: Engine,
    kernel: &Path,
    boot_tool: &Path,
    name: &str,
    memory_mib: u32,
    domains: &str,
) -> Result<BootResult, String> {
    let guests = build::guests_in(&guest_dir(), false)?;
    let guests: Vec<_> = guests.into_iter().filter(|g| g.name == "bench64").collect();
    let config =
        format!("[hypervisor]\nlog_level = \"info\"\nemulator_exit = true\nuntil_guests_exit = true\n{domains}");
    let dir = workspace_root().join("target").join("bench").join(name);
    let images = build::images(boot_tool, kernel, &config, &guests, &dir, build::Firmware { bios: true, uefi: false })?;
    let machine = Machine {
        engine,
        firmware: Firmware::Bios,
        cpus: 1,
        memory_mib,
        cpu_model: crate::emulator::BOCHS_CPU_MODEL,
        image: images.bios,
        work_dir: dir.join("run"),
    };
    step(&format!("booting the {name} benchmarks in {} (1 CPU, {memory_mib} MiB)", engine.name()));
    let mut running = machine.launch()?;
    let timeout = Duration::from_secs(900);
    // A panic (the bootloader's or ours) ends the boot too: no use waiting for the timeout.
    let outcome =
        running.wait(timeout, |s| (s.contains("machine halted:") || s.contains("panicked at")) && s.ends_with('\n'));
    drop(running);
    let serial =
        std::fs::read(machine.serial_log()).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    if outcome == Outcome::TimedOut {
        return Err(format!(
            "the {name} boot did not finish within {} s; serial log: {}",
            timeout.as_secs(),
            machine.serial_log().display()
        ));
    }
    if !serial.contains("machine halted: done") {
        return Err(format!(
            "the {name} boot did not end normally ({outcome:?}); last lines of {}:\n{}",
            machine.serial_log().display(),
            crate::emulator::tail(&serial, 30)
        ));
    }
    Ok(BootResult { serial })
}

fn guest_dir() -> std::path::PathBuf {
    workspace_root().join("target").join("guests").join(build::KERNEL_TARGET).join(Profile::Release.dir())
}

/// Builds only `bench64` (release), as `build::guests` builds all of them.
fn build_bench_guest() -> Result<(), String> {
    step("building the bench64 guest (release)");
    let root = workspace_root();
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .arg("build")
        .arg("--manifest-path")
        .arg(root.join("guests").join("Cargo.toml"))
        .args(["--target", build::KERNEL_TARGET, "--target-dir"])
        .arg(root.join("target").join("guests"))
        .args(["-Zbuild-std=core,compiler_builtins", "-Zbuild-std-features=compiler-builtins-mem"])
        .args(["--bin", "bench64", "--release"])
        .env("RUSTFLAGS", "-C relocation-model=static")
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() { Ok(()) } else { Err("building bench64 failed; see the compiler output above".into()) }
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").current_dir(workspace_root()).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn host_cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The rows from the two boots' serial logs and the kernel ELF.
pub fn collect(
    micro: &str,
    dom0: &str,
    switch: &str,
    share: &str,
    spec_off: &str,
    kernel_elf: Option<&[u8]>,
    notes: &mut Vec<String>,
) -> Vec<Row> {
    let mut measured = parse_bench_lines(micro, "bench");
    measured.extend(parse_bench_lines(dom0, "Domain-0"));
    measured.extend(
        parse_bench_lines(spec_off, "bench")
            .into_iter()
            .filter(|(n, _)| n == "cpuid" || n == "vmcall-version")
            .map(|(n, s)| (format!("{n}-spec-ctrl-off"), s)),
    );
    let lookup =
        |name: &str| -> Result<Stat, String> {
            measured.iter().find(|(n, _)| n == name).map(|(_, s)| s.clone()).ok_or_else(|| {
                format!("the guest printed no `bench: {name}` line (see target/bench/micro/run/serial.log)")
            })
        };
    let (a, b) = ("switch-a", "switch-b");
    let gaps_a = parse_gaps(switch, a);
    let gaps_b = parse_gaps(switch, b);
    for d in [a, b] {
        if let Some(step) = switch_step(switch, d) {
            notes.push(format!("vcpu-switch: the {d} guest's TSC reading loop takes {step} ticks per iteration"));
        }
    }
    let switches = switch_times(&gaps_a, &gaps_b);
    let unswitched = unswitched_gaps(&gaps_a, &gaps_b);
    notes.push(format!(
        "vcpu-switch: {} and {} gaps recorded, {} of them paired as switches",
        gaps_a.len(),
        gaps_b.len(),
        switches.len()
    ));
    if let (Some((t0, _, _)), Some(t1)) = (create_start(micro, "bench"), first_instruction(micro, "bench")) {
        let logged: Vec<u64> = micro.lines().filter_map(log_tsc).filter(|t| (t0..t1).contains(t)).collect();
        let created = micro.lines().find(|l| l.contains("domain bench (id ") && l.contains(") created:"));
        if let Some(created) = created.and_then(log_tsc) {
            notes.push(format!(
                "domain-create-to-first-instruction: {} hypervisor log lines on the way (queued for COM1); \
                 `create start` to `created` (building the domain and \
                 printing the first line) took {} ticks, `created` to the first instruction {} ticks",
                logged.len(),
                created - t0,
                t1 - created
            ));
        }
    }
    let create = match (create_start(micro, "bench"), first_instruction(micro, "bench")) {
        (Some((t0, _, _)), Some(t1)) if t1 > t0 => Ok(Stat { median: t1 - t0, min: t1 - t0, max: t1 - t0, n: 1 }),
        (Some(_), Some(_)) => Err("the guest's first TSC is before the create line's".to_string()),
        (None, _) => Err("no `domain bench: create start` line in the hypervisor's log".to_string()),
        (_, None) => Err("the guest printed no `bench-first:` line".to_string()),
    };
    let memory = match (create_start(switch, a), create_start(switch, b)) {
        (Some((_, f0, h0)), Some((_, f1, h1))) => {
            notes.push(format!(
                "memory-per-idle-domain: frames {} bytes (RAM excluded), heap {} bytes",
                f0 as i128 - f1 as i128 - (16 << 20),
                h1 as i128 - h0 as i128
            ));
            domain_overhead((f0, h0), (f1, h1), 16 << 20).map(|v| Stat { median: v, min: v, max: v, n: 1 })
        }
        _ => Err("no `create start` lines for switch-a and switch-b".to_string()),
    };
    let share_row = match share_ran(share) {
        Some(ran) => match share_error(&ran, &SHARE_WEIGHTS) {
            Some((err, shares)) => {
                notes.push(format!(
                    "scheduler-share-error: CPU time shares {:.2} / {:.2} / {:.2} % for weights 256 / 512 / 1024 \
                     (ideal 14.29 / 28.57 / 57.14 %)",
                    shares[0], shares[1], shares[2]
                ));
                Ok(Stat { median: err, min: err, max: err, n: 1 })
            }
            None => Err("the share domains ran for no time".to_string()),
        },
        None => Err("not every share domain printed a `bench-share: ran=` line".to_string()),
    };
    let image = match kernel_elf {
        Some(elf) => loaded_size(elf).map(|v| Stat { median: v, min: v, max: v, n: 1 }),
        None => Err("the release kernel ELF could not be read".to_string()),
    };
    GOALS
        .iter()
        .map(|&(name, what, unit, goal)| {
            let result = match name {
                "vcpu-switch" => summarise(&switches).ok_or_else(|| {
                    "no switch could be paired from the two domains' gaps (see target/bench/switch/run/serial.log)"
                        .to_string()
                }),
                "sched-preempt-no-switch" => summarise(&unswitched).ok_or_else(|| "every gap was a switch".to_string()),
                "domain-create-to-first-instruction" => create.clone(),
                "scheduler-share-error" => share_row.clone(),
                "hypervisor-image-loaded-size" => image.clone(),
                "memory-per-idle-domain" => memory.clone(),
                "concurrent-domains" => Err("measured by its own boot (`run`)".to_string()),
                _ => lookup(name),
            };
            Row { name, what, unit, goal, result }
        })
        .collect()
}

/// Rows the first boot (one `bench` domain) measures.
fn measured_by_micro(name: &str) -> bool {
    !matches!(
        name,
        "vcpu-switch"
            | "sched-preempt-no-switch"
            | "hypervisor-image-loaded-size"
            | "memory-per-idle-domain"
            | "concurrent-domains"
            | "scheduler-share-error"
            | "pio-read-passthrough-dom0"
            | "cpuid-spec-ctrl-off"
            | "vmcall-version-spec-ctrl-off"
    )
}

/// Where a run writes its results: `target/bench/` by default, so that measuring leaves
/// a checkout clean; the committed `bench/results.json` and `docs/benchmarks.md` with
/// `--record` (`record`), for the numbers the repository keeps.
pub fn output_paths(root: &std::path::Path, record: bool) -> (std::path::PathBuf, std::path::PathBuf) {
    if record {
        (root.join("bench").join("results.json"), root.join("docs").join("benchmarks.md"))
    } else {
        let dir = root.join("target").join("bench");
        (dir.join("results.json"), dir.join("benchmarks.md"))
    }
}

/// `cargo xtask bench [--emulator auto|bochs|qemu] [--quick] [--record]`. `quick` boots
/// only the exit and interrupt benchmarks and writes nothing: the loop for working on a
/// path. `record` writes the committed files ([`output_paths`]).
pub fn run(emulator: &str, quick: bool, record: bool) -> Result<(), String> {
    let engine = match emulator {
        "qemu" if deps::host_has_nested_vmx() => Engine::Qemu { kvm: true },
        "qemu" => {
            return Err("--emulator qemu benchmarks need QEMU with KVM and nested VT-x (/dev/kvm and the `vmx` \
                        CPU flag), which this host does not offer; QEMU's TCG emulates no VMX. Use --emulator \
                        bochs (the default)"
                .into());
        }
        // The goals are defined in Bochs ticks, so `auto` means Bochs here.
        _ => Engine::Bochs,
    };
    match engine {
        Engine::Bochs => deps::ensure(&[deps::BOCHS])?,
        Engine::Qemu { .. } => deps::ensure(&[deps::QEMU])?,
    }
    let kernel = build::kernel(Profile::Release)?;
    let boot_tool = build::boot_tool()?;
    build_bench_guest()?;
    let micro = boot(engine, &kernel, &boot_tool, "micro", 128, "[domain bench]\nimage = bench64\nmemory = 16\n")?;
    if quick {
        let mut notes = Vec::new();
        let rows: Vec<Row> = collect(&micro.serial, "", "", "", "", None, &mut notes)
            .into_iter()
            .filter(|r| measured_by_micro(r.name))
            .collect();
        println!("\n{}", table(&rows));
        println!("(--quick: the switch, concurrent and size rows were not measured; nothing was written)");
        return Ok(());
    }
    let switch = boot(
        engine,
        &kernel,
        &boot_tool,
        "switch",
        128,
        "sched_slice_ms = 1\n\
         [domain switch-a]\nimage = bench64\nmemory = 16\ncmdline = switch\n\
         [domain switch-b]\nimage = bench64\nmemory = 16\ncmdline = switch\n",
    )?;
    let dom0 = boot(
        engine,
        &kernel,
        &boot_tool,
        "dom0",
        128,
        "[dom0]\nimage = bench64\nmemory = 16\ncmdline = passthrough\n",
    )?;
    let share = boot(engine, &kernel, &boot_tool, "share", 128, &share_config())?;
    // The exit rows again without the hypervisor's speculation mitigations: their cost.
    let spec_off = boot(
        engine,
        &kernel,
        &boot_tool,
        "spec-ctrl-off",
        128,
        "spec_ctrl = off\n[domain bench]\nimage = bench64\nmemory = 16\n",
    )?;
    let concurrent = boot(engine, &kernel, &boot_tool, "concurrent", 512, &concurrent_config(CONCURRENT_DOMAINS))?;
    let elf = std::fs::read(&kernel).ok();
    let mut notes = Vec::new();
    for line in micro.serial.lines().filter_map(|l| console_text(l, "bench")) {
        if let Some(note) = line.strip_prefix("bench-note: ") {
            notes.push(note.trim_end().to_string());
        }
    }
    let mut rows = collect(
        &micro.serial,
        &dom0.serial,
        &switch.serial,
        &share.serial,
        &spec_off.serial,
        elf.as_deref(),
        &mut notes,
    );
    let progressed = concurrent_progress(&concurrent.serial, CONCURRENT_DOMAINS);
    if let Some(row) = rows.iter_mut().find(|r| r.name == "concurrent-domains") {
        row.result = Ok(Stat { median: progressed, min: progressed, max: progressed, n: 1 });
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let ctx = Context {
        emulator: match engine {
            Engine::Bochs => format!("Bochs 2.7, 1 CPU, ips={BOCHS_IPS} (TSC = emulated instructions)"),
            Engine::Qemu { .. } => "QEMU with KVM (nested VT-x), 1 CPU (TSC = real cycles)".to_string(),
        },
        cpu_model: match engine {
            Engine::Bochs => format!("{BOCHS_CPU_MODEL} at {} M ips", BOCHS_IPS / 1_000_000),
            Engine::Qemu { .. } => format!("host: {}", host_cpu_model()),
        },
        date: utc_date(now),
        commit: if dirty { format!("{commit} with uncommitted changes") } else { commit },
        command: match engine {
            Engine::Bochs => "cargo xtask bench --record".to_string(),
            Engine::Qemu { .. } => "cargo xtask bench --emulator qemu --record".to_string(),
        },
    };
    println!("\n{}", table(&rows));
    for n in &notes {
        println!("note: {n}");
    }
    let (json, md) = output_paths(&workspace_root(), record);
    for dir in [json.parent(), md.parent()].into_iter().flatten() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(&json, to_json(&rows, &ctx)).map_err(|e| format!("cannot write {}: {e}", json.display()))?;
    std::fs::write(&md, markdown(&rows, &ctx, &notes)).map_err(|e| format!("cannot write {}: {e}", md.display()))?;
    println!("wrote {} and {}", json.display(), md.display());
    if !record {
        println!("(to keep these numbers in the repository: cargo xtask bench --record, then commit)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_run_writes_under_target_and_only_record_touches_tracked_files() {
        let root = std::path::Path::new("/repo");
        let (json, md) = output_paths(root, false);
        assert!(json.starts_with("/repo/target") && md.starts_with("/repo/target"), "{json:?} {md:?}");
        assert_eq!(output_paths(root, true), (root.join("bench/results.json"), root.join("docs/benchmarks.md")));
    }

    const MICRO: &str = "\
[     1000] INFO  cpu0 domain::lifecycle: domain bench: create start: frames free 100000000 bytes, heap used 5000 bytes
[     2000] INFO  cpu0 domain::lifecycle: domain bench (id 1) created: 16 MiB, 1 vCPU(s), image bench64 (1 bytes)
[     9000] INFO  cpu0 vmexit::io: [bench] bench-first: tsc=8500
[     9100] INFO  cpu0 vmexit::io: [bench] bench: overhead median=30 min=29 max=41 n=1000
[     9200] INFO  cpu0 vmexit::io: [bench] bench: cpuid median=900 min=880 max=2000 n=1000
[     9300] INFO  cpu0 vmexit::io: [other] bench: cpuid median=1 min=1 max=1 n=1
[     9400] INFO  cpu0 vmexit::io: [bench] bench: broken median=x min=1 max=1 n=1
[     9500] INFO  cpu0 vmexit::io: [bench] bench-note: irq: 0 interrupt(s) lost, 1 before the deadline
";

    #[test]
    fn bench_lines_are_parsed_per_domain_and_bad_ones_skipped() {
        let got = parse_bench_lines(MICRO, "bench");
        assert_eq!(
            got,
            vec![
                ("overhead".to_string(), Stat { median: 30, min: 29, max: 41, n: 1000 }),
                ("cpuid".to_string(), Stat { median: 900, min: 880, max: 2000, n: 1000 }),
            ]
        );
        assert_eq!(parse_bench_lines(MICRO, "other").len(), 1);
    }

    #[test]
    fn log_lines_give_their_tsc_and_the_create_line_its_numbers() {
        assert_eq!(log_tsc("[     1234] INFO  cpu0 x: y"), Some(1234));
        assert_eq!(log_tsc("no bracket"), None);
        assert_eq!(create_start(MICRO, "bench"), Some((1000, 100_000_000, 5000)));
        assert_eq!(create_start(MICRO, "nobody"), None);
        assert_eq!(first_instruction(MICRO, "bench"), Some(8500));
    }

    #[test]
    fn summaries_take_the_middle_and_the_extremes() {
        assert_eq!(summarise(&[]), None);
        assert_eq!(summarise(&[5, 1, 3]), Some(Stat { median: 3, min: 1, max: 5, n: 3 }));
        assert_eq!(summarise(&[4, 1, 2, 10]), Some(Stat { median: 3, min: 1, max: 10, n: 4 }));
    }

    #[test]
    fn switches_pair_a_gap_with_the_other_domains_resumption() {
        // A runs 0..100, B 150..300, A 340..500, B 560..; A's gap (100, 340) holds B's
        // resumption at 150; B's gap (300, 560) holds A's at 340. A's gap (500, 520)
        // is a tick that gave the CPU back to A: no switch.
        let a = [(100, 340), (500, 520)];
        let b = [(0, 150), (300, 560)];
        let mut got = switch_times(&a, &b);
        got.sort_unstable();
        assert_eq!(got, vec![40, 50]);
        assert!(switch_times(&a, &[]).is_empty());
        assert_eq!(unswitched_gaps(&a, &b), vec![20]);
    }

    #[test]
    fn gaps_and_steps_are_read_from_the_console() {
        let log = "[1] INFO  cpu0 vmexit::io: [switch-a] bench-switch: step=12 gaps=3\n\
                   [2] INFO  cpu0 vmexit::io: [switch-a] bench-switch: gaps 10 20 25 27\n\
                   [3] INFO  cpu0 vmexit::io: [switch-b] bench-switch: gaps 30 40\n\
                   [4] INFO  cpu0 vmexit::io: [switch-a] bench-switch: gaps 50 x\n\
                   [5] INFO  cpu0 vmexit::io: [switch-a] bench-switch: gaps 60 70 80\n\
                   [6] INFO  cpu0 vmexit::io: [switch-a] bench-switch: gaps 90 95\n";
        assert_eq!(parse_gaps(log, "switch-a"), vec![(10, 20), (25, 27), (90, 95)]);
        assert_eq!(parse_gaps(log, "switch-b"), vec![(30, 40)]);
        assert_eq!(switch_step(log, "switch-a"), Some(12));
        assert_eq!(switch_step(log, "switch-b"), None);
    }

    fn elf_with(segments: &[(u32, u64)]) -> Vec<u8> {
        let mut elf = vec![0u8; 64 + 56 * segments.len()];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3A].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for (i, (kind, memsz)) in segments.iter().enumerate() {
            let ph = 64 + 56 * i;
            elf[ph..ph + 4].copy_from_slice(&kind.to_le_bytes());
            elf[ph + 0x28..ph + 0x30].copy_from_slice(&memsz.to_le_bytes());
        }
        elf
    }

    #[test]
    fn loaded_size_sums_only_pt_load_memsz() {
        assert_eq!(loaded_size(&elf_with(&[(1, 0x1000), (2, 0x50), (1, 0x2345), (6, 7)])), Ok(0x3345));
        assert!(loaded_size(b"not an elf").is_err());
        let mut truncated = elf_with(&[(1, 0x1000)]);
        truncated.truncate(80);
        assert!(loaded_size(&truncated).is_err());
    }

    #[test]
    fn domain_overhead_counts_frames_beyond_ram_and_heap_growth() {
        let ram = 16 << 20;
        assert_eq!(domain_overhead((100 << 20, 1000), ((100 << 20) - ram - 8192, 5096), ram), Ok(8192 + 4096));
        assert!(domain_overhead((100, 0), (100, 0), ram).is_err());
    }

    #[test]
    fn concurrent_domains_count_only_those_that_finished() {
        let serial = "\
[1] INFO  cpu0 domain::lifecycle: domain c00 (id 1) created: 4 MiB
[2] INFO  cpu0 domain::lifecycle: domain c01 (id 2) created: 4 MiB
[3] INFO  cpu0 vmexit::io: [c00] progress: 3/3
[4] INFO  cpu0 vmexit::io: domain c00 exited status=0
[5] INFO  cpu0 vmexit::io: [c01] progress: 2/3
[6] INFO  cpu0 vmexit::io: domain c01 exited status=1
";
        assert_eq!(concurrent_progress(serial, 2), 1);
        assert!(concurrent_config(2).contains("[domain c01]\nimage = bench64\nmemory = 4\ncmdline = progress\n"));
        let row = |v| Row {
            name: "concurrent-domains",
            what: "",
            unit: DOMAINS,
            goal: Some(64),
            result: Ok(Stat { median: v, min: v, max: v, n: 1 }),
        };
        assert_eq!(row(64).met(), Some(true));
        assert_eq!(row(63).met(), Some(false), "a minimum, not a maximum");
        assert_eq!(fmt_goal(&row(64)), ">= 64");
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_date(1_700_000_000), "2023-11-14 22:13 UTC");
    }

    #[test]
    fn share_error_is_the_worst_domain_in_hundredths_of_a_point() {
        let serial = "\
[1] INFO  cpu0 x: [share-256] bench-share: ran=1500 window=10000
[2] INFO  cpu0 x: [share-512] bench-share: ran=2850 window=10000
[3] INFO  cpu0 x: [share-1024] bench-share: ran=5650 window=10000
";
        let ran = share_ran(serial).unwrap();
        assert_eq!(ran, vec![1500, 2850, 5650]);
        // Shares 15.00 / 28.50 / 56.50 against 14.29 / 28.57 / 57.14: the worst is 0.71.
        let (err, shares) = share_error(&ran, &SHARE_WEIGHTS).unwrap();
        assert_eq!(err, 71);
        assert!((shares[0] - 15.0).abs() < 1e-9);
        assert_eq!(share_error(&[1, 2, 4], &SHARE_WEIGHTS).unwrap().0, 0, "exactly proportional");
        assert!(share_error(&[0, 0, 0], &SHARE_WEIGHTS).is_none());
        assert!(share_ran("[share-256] bench-share: ran=1").is_none(), "a domain missing");
        assert!(share_config().contains("[domain share-1024]") && share_config().contains("weight = 512"));
    }

    #[test]
    fn rows_judge_goals_and_json_carries_every_field() {
        let mut notes = Vec::new();
        let rows = collect(MICRO, "", "", "", "", Some(&elf_with(&[(1, 4096)])), &mut notes);
        let cpuid = rows.iter().find(|r| r.name == "cpuid").unwrap();
        assert_eq!(cpuid.met(), Some(false));
        assert!(cpuid.verdict().starts_with("MISSED by 750"));
        let create = rows.iter().find(|r| r.name == "domain-create-to-first-instruction").unwrap();
        assert_eq!(create.result, Ok(Stat { median: 7500, min: 7500, max: 7500, n: 1 }));
        assert_eq!(create.met(), Some(true));
        let image = rows.iter().find(|r| r.name == "hypervisor-image-loaded-size").unwrap();
        assert_eq!(image.result.as_ref().map(|s| s.median), Ok(4096));
        assert!(rows.iter().find(|r| r.name == "vcpu-switch").unwrap().result.is_err());
        let ctx = Context {
            emulator: "Bochs".into(),
            cpu_model: "corei7_skylake_x".into(),
            date: "d".into(),
            commit: "c\"1".into(),
            command: "cargo xtask bench".into(),
        };
        let json = to_json(&rows, &ctx);
        assert!(json.contains("\"name\": \"cpuid\", "));
        assert!(
            json.contains("\"median\": 900, \"min\": 880, \"max\": 2000, \"n\": 1000, \"goal\": 150, \"met\": false")
        );
        assert!(json.contains("\"unit\": \"tsc ticks\""));
        assert!(json.contains("\"not_measured\": "));
        assert!(json.contains("\"commit\": \"c\\\"1\""));
        let md = markdown(&rows, &ctx, &notes);
        assert!(md.contains("cargo xtask bench") && md.contains("corei7_skylake_x"));
        assert!(table(&rows).contains("not measured: "));
    }
}
