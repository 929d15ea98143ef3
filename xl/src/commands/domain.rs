//! Domain lifecycle: `list`, `create`, `destroy`/`shutdown`/`reboot`/`pause`/`unpause`,
//! `trigger`, `console`.

use abi::hypercall::{self as hc, Call, DomState, DomainCreate, DomainInfo, Error, Trigger};
use core::fmt::Write;

use super::{Domains, display_name, is_dom0, one_domain, synopsis};
use crate::error::CmdError;
use crate::host::{DomainOp, Host};
use crate::number::{parse_u32, parse_u64};
use crate::table::OneDecimal;
use crate::{Outcome, words};

const LIST_HEADER: &str = "Name                                        ID   Mem VCPUs      State   Time(s)";

/// `list [DOMAIN]`: xl's table.
pub fn list<'a>(args: &[&'a str], host: &mut impl Host, out: &mut impl Write) -> Result<(), CmdError<'a>> {
    let domains = Domains::fetch(host)?;
    let only = match args {
        [] => None,
        [spec] => Some(domains.find(words::unquote(spec))?.id),
        _ => return Err(CmdError::Usage(synopsis("list"))),
    };
    writeln!(out, "{LIST_HEADER}")?;
    for d in domains.as_slice().iter().filter(|d| only.is_none_or(|id| id == d.id)) {
        writeln!(
            out,
            "{:<40} {:>5} {:>5} {:>5}     {}  {:>8}",
            display_name(d),
            d.id,
            d.memory_bytes >> 20,
            d.vcpus,
            state_flags(d),
            OneDecimal::seconds(d.cpu_time_ns)
        )?;
    }
    Ok(())
}

fn state_flags(d: &DomainInfo) -> &'static str {
    DomState::from_u32(d.state).map_or("------", DomState::xl_flags)
}

const CREATE_OPTIONS: &str = "name, memory, vcpus, weight, cap, cmdline, initrd";

/// `create IMAGE [key=value ...]`.
pub fn create<'a>(args: &[&'a str], host: &mut impl Host, out: &mut impl Write) -> Result<(), CmdError<'a>> {
    let Some((image, options)) = args.split_first() else {
        return Err(CmdError::Usage(synopsis("create")));
    };
    let image = words::unquote(image);
    let mut spec = DomainCreate::default();
    let mut name = image;
    let mut cmdline = "";
    let mut initrd = "";
    for &word in options {
        let Some((key, value)) = words::key_value(word) else {
            return Err(CmdError::UnknownOption { option: word, known: CREATE_OPTIONS });
        };
        let number = |what| parse_u32(value).ok_or(CmdError::BadNumber { text: value, what });
        match key {
            "name" => name = value,
            "memory" => spec.memory_mib = number("memory")?,
            "vcpus" => spec.vcpus = number("vcpus")?,
            "weight" => spec.weight = number("weight")?,
            "cap" => spec.cap = number("cap")?,
            "cmdline" => cmdline = value,
            "initrd" => initrd = value,
            _ => return Err(CmdError::UnknownOption { option: key, known: CREATE_OPTIONS }),
        }
    }
    if image.len() > hc::IMAGE_LEN {
        return Err(CmdError::TooLong { what: "the image name", max: hc::IMAGE_LEN });
    }
    if initrd.len() > hc::IMAGE_LEN {
        return Err(CmdError::TooLong { what: "the initrd name", max: hc::IMAGE_LEN });
    }
    if name.is_empty() {
        return Err(CmdError::Refused("a domain name cannot be empty"));
    }
    if name.len() > hc::NAME_LEN {
        return Err(CmdError::TooLong { what: "the domain name", max: hc::NAME_LEN });
    }
    if cmdline.len() > hc::CMDLINE_LEN {
        return Err(CmdError::TooLong { what: "the command line", max: hc::CMDLINE_LEN });
    }
    // Names must stay usable as domain arguments: unique, and not readable as an ID.
    if parse_u64(name).is_some() {
        return Err(CmdError::NameIsNumber(name));
    }
    if Domains::fetch(host)?.as_slice().iter().any(|d| d.name() == name || display_name(d) == name) {
        return Err(CmdError::NameTaken(name));
    }
    spec.image = hc::fixed_str(image);
    spec.name = hc::fixed_str(name);
    spec.cmdline = hc::fixed_str(cmdline);
    spec.initrd = hc::fixed_str(initrd);
    let id = host.domain_create(&spec).map_err(|e| match e {
        Error::NoEntry => CmdError::NoImage(image),
        Error::Invalid => CmdError::Refused(
            "the hypervisor refused these parameters (weight 1-65535, cap 0-6400, \
             memory and vcpus within what the host has)",
        ),
        Error::NoMemory => CmdError::Refused("not enough free host memory for this domain (see 'info')"),
        error => CmdError::Hypervisor { call: Call::DomainCreate, error },
    })?;
    writeln!(out, "Created domain {name} (id {id})")?;
    Ok(())
}

/// `destroy`, `shutdown`, `reboot`, `pause`, `unpause`: silent on success, as xl.
pub fn lifecycle<'a>(op: DomainOp, args: &[&'a str], host: &mut impl Host) -> Result<(), CmdError<'a>> {
    let d = one_domain(op.command(), args, host)?;
    if is_dom0(&d) {
        return Err(CmdError::Dom0(op.command()));
    }
    host.domain_op(op, d.id).map_err(|e| match e {
        // Gone between the listing and the call.
        Error::NoEntry => CmdError::NoDomain(args.first().map_or("", |s| words::unquote(s))),
        error => CmdError::Hypervisor { call: op.call(), error },
    })
}

/// `trigger DOMAIN nmi [VCPU]`: a rising edge on the NMI line (LINT1) of every vCPU of
/// the domain, or of one (Xen's `xl trigger`; the other triggers Xen has are not).
pub fn trigger<'a>(args: &[&'a str], host: &mut impl Host) -> Result<(), CmdError<'a>> {
    let (spec, kind, vcpu) = match args {
        [spec, kind] => (*spec, *kind, None),
        [spec, kind, vcpu] => (*spec, *kind, Some(*vcpu)),
        _ => return Err(CmdError::Usage(synopsis("trigger"))),
    };
    if words::unquote(kind) != "nmi" {
        return Err(CmdError::BadChoice { text: kind, setting: "the trigger", choices: "nmi" });
    }
    let vcpu = match vcpu {
        Some(text) => Some(parse_u32(text).ok_or(CmdError::BadNumber { text, what: "VCPU" })?),
        None => None,
    };
    let d = one_domain("trigger", &[spec], host)?;
    if is_dom0(&d) {
        return Err(CmdError::Dom0("trigger an NMI in"));
    }
    host.domain_trigger(d.id, Trigger::Nmi, vcpu).map_err(|e| match e {
        Error::NoEntry if vcpu.is_some() => CmdError::Refused("no such vCPU in that domain"),
        Error::NoEntry => CmdError::NoDomain(words::unquote(spec)),
        error => CmdError::Hypervisor { call: Call::DomainTrigger, error },
    })
}

/// `console DOMAIN`: the caller attaches the terminal.
pub fn console<'a>(args: &[&'a str], host: &mut impl Host) -> Result<Outcome, CmdError<'a>> {
    let d = one_domain("console", args, host)?;
    if is_dom0(&d) {
        return Err(CmdError::Refused("Domain-0's console is this shell"));
    }
    Ok(Outcome::EnterConsole(d.id))
}
