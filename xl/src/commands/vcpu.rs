//! `vcpu-list` and `vcpu-pin`.
//!
//! The State column uses xl's three letters r (running), b (blocked), p (paused or
//! offline): Running `r--`, Blocked `-b-`, Offline `--p`; Runnable (waiting for a CPU)
//! shows `---` as in xl, and so does Dead (its domain has ended; `list` says how).

use abi::hypercall::{Call, DomainInfo, Error, VcpuInfo, VcpuState};
use core::fmt::Write;

use super::{Domains, display_name, synopsis};
use crate::cpulist::CpuSet;
use crate::error::CmdError;
use crate::host::Host;
use crate::number::parse_u32;
use crate::table::OneDecimal;
use crate::words;

const HEADER: &str = "Name                                ID  VCPU   CPU State   Time(s) Affinity";

/// Upper bound on vCPUs enumerated per domain, in case the hypervisor never says ENOENT.
const MAX_VCPUS: u32 = 1024;

fn state_flags(state: u32) -> &'static str {
    match VcpuState::from_u32(state) {
        Some(VcpuState::Running) => "r--",
        Some(VcpuState::Blocked) => "-b-",
        Some(VcpuState::Offline) => "--p",
        Some(VcpuState::Runnable) | Some(VcpuState::Dead) => "---",
        None => "???",
    }
}

fn host_cpus<'a>(host: &mut impl Host) -> Result<u32, CmdError<'a>> {
    Ok(host.host_info().map_err(CmdError::hv(Call::HostInfo))?.cpus)
}

/// `vcpu-list [DOMAIN]`.
pub fn list<'a>(args: &[&'a str], host: &mut impl Host, out: &mut impl Write) -> Result<(), CmdError<'a>> {
    let domains = Domains::fetch(host)?;
    let only = match args {
        [] => None,
        [spec] => Some(domains.find(words::unquote(spec))?.id),
        _ => return Err(CmdError::Usage(synopsis("vcpu-list"))),
    };
    let cpus = host_cpus(host)?;
    writeln!(out, "{HEADER}")?;
    for d in domains.as_slice().iter().filter(|d| only.is_none_or(|id| id == d.id)) {
        for vcpu in 0..MAX_VCPUS {
            match host.vcpu_info(d.id, vcpu) {
                Ok(v) => print_row(d, &v, cpus, out)?,
                // Past the last vCPU (or the domain has just gone).
                Err(Error::NoEntry) => break,
                Err(error) => return Err(CmdError::Hypervisor { call: Call::VcpuInfo, error }),
            }
        }
    }
    Ok(())
}

fn print_row(d: &DomainInfo, v: &VcpuInfo, host_cpus: u32, out: &mut impl Write) -> core::fmt::Result {
    write!(out, "{:<32} {:>5} {:>5} ", display_name(d), d.id, v.vcpu)?;
    let never_ran = v.cpu == u32::MAX;
    let offline = matches!(VcpuState::from_u32(v.state), Some(VcpuState::Offline | VcpuState::Dead));
    if never_ran || offline {
        write!(out, "{:>4}", "-")?;
    } else {
        write!(out, "{:>4}", v.cpu)?;
    }
    writeln!(
        out,
        "  {}{:>12} {}",
        state_flags(v.state),
        OneDecimal::seconds(v.cpu_time_ns),
        CpuSet(v.affinity).display(host_cpus)
    )
}

/// Which vCPUs `vcpu-pin` applies to.
enum Vcpus {
    One(u32),
    All,
}

/// `vcpu-pin DOMAIN VCPU|all CPUS|all`.
pub fn pin<'a>(args: &[&'a str], host: &mut impl Host) -> Result<(), CmdError<'a>> {
    let [spec, vcpu, cpus] = args else {
        return Err(CmdError::Usage(synopsis("vcpu-pin")));
    };
    let spec = words::unquote(spec);
    let vcpus = match *vcpu {
        "all" => Vcpus::All,
        text => Vcpus::One(parse_u32(text).ok_or(CmdError::BadNumber { text, what: "VCPU" })?),
    };
    let wanted = CpuSet::parse(cpus)?;
    let d = *Domains::fetch(host)?.find(spec)?;
    let host_cpus = host_cpus(host)?;
    let present = CpuSet::first(host_cpus);
    // A named CPU the host lacks is a mistake worth reporting; `all` means all there are.
    let missing = (0..64).find(|&c| wanted.0 >> c & 1 == 1 && present.0 >> c & 1 == 0);
    if let (true, Some(cpu)) = (wanted != CpuSet::ALL, missing) {
        return Err(CmdError::NoCpu { cpu, host_cpus });
    }
    let mask = wanted.intersect(present).0;
    let (first, last) = match vcpus {
        Vcpus::One(v) if v >= d.vcpus => return Err(CmdError::NoVcpu { domain: d.id, vcpu: v }),
        Vcpus::One(v) => (v, v),
        Vcpus::All => (0, d.vcpus.saturating_sub(1)),
    };
    for v in first..=last {
        host.vcpu_pin(d.id, v, mask).map_err(|e| match e {
            Error::NoEntry => CmdError::NoVcpu { domain: d.id, vcpu: v },
            Error::Invalid => CmdError::Refused("the hypervisor refused this CPU set"),
            error => CmdError::Hypervisor { call: Call::VcpuPin, error },
        })?;
    }
    Ok(())
}
