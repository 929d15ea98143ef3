//! `top`: one snapshot in the shape of `xentop -b -i 1`, with CPU(%) measured against the
//! previous `top` (the first one shows 0.0: nothing to compare with yet).

use abi::hypercall::{DomState, DomainInfo};
use core::fmt::Write;

use super::{Domains, display_name, no_args};
use crate::MAX_DOMAINS;
use crate::error::CmdError;
use crate::host::Host;
use crate::table::OneDecimal;

const HEADER: &str = "      NAME  STATE   CPU(sec) CPU(%)     MEM(k) VCPUS";

/// The previous sample: when it was taken and each domain's CPU time then.
pub struct TopHistory {
    taken_at_ns: Option<u64>,
    cpu_ns: [(u32, u64); MAX_DOMAINS],
    len: usize,
}

impl TopHistory {
    pub const fn new() -> Self {
        TopHistory { taken_at_ns: None, cpu_ns: [(0, 0); MAX_DOMAINS], len: 0 }
    }

    fn previous(&self, id: u32) -> Option<u64> {
        self.cpu_ns[..self.len].iter().find(|(i, _)| *i == id).map(|(_, ns)| *ns)
    }

    pub fn show<'a>(
        &mut self,
        args: &[&'a str],
        host: &mut impl Host,
        out: &mut impl Write,
    ) -> Result<(), CmdError<'a>> {
        no_args("top", args)?;
        let domains = Domains::fetch(host)?;
        let now = host.now_ns();
        let elapsed = self.taken_at_ns.map(|then| now.saturating_sub(then)).filter(|&ns| ns > 0);
        let all = domains.as_slice();
        let count = |s: DomState| all.iter().filter(|d| d.state == s as u32).count();
        writeln!(
            out,
            "top - up {} s, {} domains: {} running, {} blocked, {} paused, {} crashed, {} shutdown",
            OneDecimal::seconds(now),
            all.len(),
            count(DomState::Running),
            count(DomState::Blocked),
            count(DomState::Paused),
            count(DomState::Crashed),
            count(DomState::Shutdown)
        )?;
        writeln!(out, "{HEADER}")?;
        for d in all {
            // A domain new since the last sample, or an ID reused by a younger domain
            // (less CPU time than before), has no meaningful difference: 0.0.
            let used = self.previous(d.id).map_or(0, |before| d.cpu_time_ns.saturating_sub(before));
            let percent = match elapsed {
                Some(ns) => OneDecimal { value: used.saturating_mul(100), unit: ns },
                None => OneDecimal { value: 0, unit: 1 },
            };
            writeln!(
                out,
                "{:>10} {} {:>10} {:>6} {:>10} {:>5}",
                display_name(d),
                xentop_flags(d),
                d.cpu_time_ns / 1_000_000_000,
                percent,
                d.memory_bytes >> 10,
                d.vcpus
            )?;
        }
        self.taken_at_ns = Some(now);
        self.len = all.len();
        for (slot, d) in self.cpu_ns.iter_mut().zip(all) {
            *slot = (d.id, d.cpu_time_ns);
        }
        Ok(())
    }
}

/// xentop's state letters, in its order: d(ying) s(hutdown) b(locked) c(rashed) p(aused) r(unning).
fn xentop_flags(d: &DomainInfo) -> &'static str {
    match DomState::from_u32(d.state) {
        Some(DomState::Shutdown) => "-s----",
        Some(DomState::Blocked) => "--b---",
        Some(DomState::Crashed) => "---c--",
        Some(DomState::Paused) => "----p-",
        Some(DomState::Running) => "-----r",
        None => "------",
    }
}
