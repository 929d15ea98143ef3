//! `sched-credit`: per-domain weight and cap, and the scheduler's time slice and rate limit.

use abi::hypercall::{Call, Error};
use core::fmt::Write;

use super::{Domains, display_name, synopsis};
use crate::error::CmdError;
use crate::host::{Host, SchedParams};
use crate::number::parse_u32;
use crate::words;

const HEADER: &str = "Name                                ID Weight  Cap";
const OPTIONS: &str = "-d DOMAIN, -w WEIGHT, -c CAP, -s, -t TSLICE_MS, -r RATELIMIT_US";

const WEIGHT_RANGE: &str = "weight must be 1-65535";
const CAP_RANGE: &str = "cap must be 0-6400 (percent of one CPU; 0 = no cap)";
const PARAMS_RANGE: &str = "tslice must be 1-1000 ms, and ratelimit 0 or 100-500000 us and not above the tslice";

/// The options given, each at most once (a repeated option: the last one counts, as getopt).
#[derive(Default)]
struct Options<'a> {
    domain: Option<&'a str>,
    weight: Option<u32>,
    cap: Option<u32>,
    /// `-s`: the pool-wide parameters rather than a domain's.
    scheduler: bool,
    tslice_ms: Option<u32>,
    ratelimit_us: Option<u32>,
}

fn parse<'a>(args: &[&'a str]) -> Result<Options<'a>, CmdError<'a>> {
    let mut o = Options::default();
    let mut rest = args.iter().copied();
    while let Some(option) = rest.next() {
        if option == "-s" {
            o.scheduler = true;
            continue;
        }
        // A 'static copy of the option's name for the error below.
        let name = match option {
            "-d" => "-d",
            "-w" => "-w",
            "-c" => "-c",
            "-t" => "-t",
            "-r" => "-r",
            _ => return Err(CmdError::UnknownOption { option, known: OPTIONS }),
        };
        let value = words::unquote(rest.next().ok_or(CmdError::MissingValue(option))?);
        let number = || parse_u32(value).ok_or(CmdError::BadNumber { text: value, what: name });
        match name {
            "-d" => o.domain = Some(value),
            "-w" => o.weight = Some(number()?),
            "-c" => o.cap = Some(number()?),
            "-t" => o.tslice_ms = Some(number()?),
            _ => o.ratelimit_us = Some(number()?),
        }
    }
    Ok(o)
}

pub fn sched_credit<'a>(args: &[&'a str], host: &mut impl Host, out: &mut impl Write) -> Result<(), CmdError<'a>> {
    let o = parse(args)?;
    let domain_options = o.domain.is_some() || o.weight.is_some() || o.cap.is_some();
    let pool_options = o.tslice_ms.is_some() || o.ratelimit_us.is_some();
    if (o.scheduler && domain_options) || (!o.scheduler && pool_options) {
        return Err(CmdError::Usage(synopsis("sched-credit")));
    }
    if o.scheduler {
        return pool(&o, host, out);
    }
    let domains = Domains::fetch(host)?;
    let Some(spec) = o.domain else {
        if o.weight.is_some() || o.cap.is_some() {
            return Err(CmdError::Usage(synopsis("sched-credit")));
        }
        print_params(host.sched_get_params().map_err(CmdError::hv(Call::SchedGetParams))?, out)?;
        writeln!(out, "{HEADER}")?;
        for d in domains.as_slice() {
            print_row(d, out)?;
        }
        return Ok(());
    };
    let d = domains.find(spec)?;
    if o.weight.is_none() && o.cap.is_none() {
        writeln!(out, "{HEADER}")?;
        return print_row(d, out);
    }
    let refused = |range: &'static str, call| {
        move |e| match e {
            Error::Invalid => CmdError::Refused(range),
            Error::NoEntry => CmdError::NoDomain(spec),
            error => CmdError::Hypervisor { call, error },
        }
    };
    if let Some(w) = o.weight {
        host.sched_set_weight(d.id, w).map_err(refused(WEIGHT_RANGE, Call::SchedSetWeight))?;
    }
    if let Some(c) = o.cap {
        host.sched_set_cap(d.id, c).map_err(refused(CAP_RANGE, Call::SchedSetCap))?;
    }
    Ok(())
}

/// `-s`: show, or change what was given and keep the rest.
fn pool<'a>(o: &Options<'a>, host: &mut impl Host, out: &mut impl Write) -> Result<(), CmdError<'a>> {
    let current = host.sched_get_params().map_err(CmdError::hv(Call::SchedGetParams))?;
    if o.tslice_ms.is_none() && o.ratelimit_us.is_none() {
        return Ok(print_params(current, out)?);
    }
    let wanted = SchedParams {
        slice_ms: o.tslice_ms.unwrap_or(current.slice_ms),
        ratelimit_us: o.ratelimit_us.unwrap_or(current.ratelimit_us),
    };
    host.sched_set_params(wanted).map_err(|e| match e {
        Error::Invalid => CmdError::Refused(PARAMS_RANGE),
        error => CmdError::Hypervisor { call: Call::SchedSetParams, error },
    })
}

fn print_params(p: SchedParams, out: &mut impl Write) -> core::fmt::Result {
    writeln!(out, "Cpupool Pool-0: tslice={}ms ratelimit={}us", p.slice_ms, p.ratelimit_us)
}

fn print_row<'a>(d: &abi::hypercall::DomainInfo, out: &mut impl Write) -> Result<(), CmdError<'a>> {
    writeln!(out, "{:<33} {:>4} {:>6} {:>4}", display_name(d), d.id, d.weight, d.cap)?;
    Ok(())
}
