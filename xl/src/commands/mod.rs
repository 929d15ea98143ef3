//! The command interpreter: one line in, its output and an [`Outcome`] out.

mod domain;
mod sched;
mod system;
#[cfg(test)]
mod tests;
mod top;
mod vcpu;

use abi::hypercall::{Call, DomainInfo};
use core::fmt::Write;

use crate::error::CmdError;
use crate::host::{DomainOp, Host};
use crate::number::parse_u32;
use crate::words;
use crate::{MAX_DOMAINS, Outcome};

/// One command: its name, its synopsis for `help` and usage errors, what it does.
struct Command {
    name: &'static str,
    synopsis: &'static str,
    summary: &'static str,
}

const COMMANDS: &[Command] = &[
    Command { name: "list", synopsis: "list [DOMAIN]", summary: "list domains" },
    Command { name: "info", synopsis: "info", summary: "show the host and the hypervisor" },
    Command {
        name: "create",
        synopsis: "create IMAGE [name=N] [memory=MiB] [vcpus=N] [weight=W] [cap=C] [cmdline=TEXT] [initrd=ENTRY]",
        summary: "start a domain from a boot bundle image",
    },
    Command { name: "destroy", synopsis: "destroy DOMAIN", summary: "end a domain at once" },
    Command { name: "shutdown", synopsis: "shutdown DOMAIN", summary: "ask a domain to shut down" },
    Command { name: "reboot", synopsis: "reboot DOMAIN", summary: "restart a domain" },
    Command { name: "pause", synopsis: "pause DOMAIN", summary: "stop scheduling a domain" },
    Command { name: "unpause", synopsis: "unpause DOMAIN", summary: "schedule a paused domain again" },
    Command { name: "console", synopsis: "console DOMAIN", summary: "attach to a domain's console (Ctrl-] leaves)" },
    Command {
        name: "trigger",
        synopsis: "trigger DOMAIN nmi [VCPU]",
        summary: "raise the NMI line (LINT1) of a domain's vCPUs",
    },
    Command {
        name: "sched-credit",
        synopsis: "sched-credit [-d DOMAIN [-w WEIGHT] [-c CAP]] | -s [-t TSLICE_MS] [-r RATELIMIT_US]",
        summary: "show or set credit scheduler parameters",
    },
    Command { name: "vcpu-list", synopsis: "vcpu-list [DOMAIN]", summary: "list virtual CPUs" },
    Command { name: "vcpu-pin", synopsis: "vcpu-pin DOMAIN VCPU|all CPUS|all", summary: "set vCPU affinity" },
    Command { name: "dmesg", synopsis: "dmesg", summary: "show the hypervisor log" },
    Command { name: "top", synopsis: "top", summary: "domain CPU usage since the last 'top'" },
    Command { name: "lspci", synopsis: "lspci", summary: "list PCI devices" },
    Command {
        name: "acpi",
        synopsis: "acpi [timer-overflow on|off]",
        summary: "ACPI events (SCIs) taken; PM timer overflow SCIs every 2.34 s",
    },
    Command { name: "help", synopsis: "help", summary: "this list" },
    Command { name: "poweroff", synopsis: "poweroff", summary: "power the host off" },
    Command { name: "sleep", synopsis: "sleep SECONDS", summary: "wait (1 to 3600 s), for boot scripts" },
];

/// The synopsis of command `name`, for usage errors.
fn synopsis(name: &str) -> &'static str {
    COMMANDS.iter().find(|c| c.name == name).map_or("", |c| c.synopsis)
}

/// The shell's state between commands (only `top`'s previous sample).
pub struct Shell {
    top: top::TopHistory,
}

impl Default for Shell {
    fn default() -> Self {
        Self::new()
    }
}

impl Shell {
    pub const fn new() -> Self {
        Shell { top: top::TopHistory::new() }
    }

    /// Runs one command line, printing its output (and any error as `error: ...`) to `out`.
    pub fn run(&mut self, line: &str, host: &mut impl Host, out: &mut impl Write) -> Outcome {
        match self.execute(line, host, out) {
            Ok(outcome) => outcome,
            Err(CmdError::Output) => Outcome::Done,
            Err(e) => {
                let _ = writeln!(out, "error: {e}");
                Outcome::Done
            }
        }
    }

    fn execute<'a>(
        &mut self,
        line: &'a str,
        host: &mut impl Host,
        out: &mut impl Write,
    ) -> Result<Outcome, CmdError<'a>> {
        let words = words::split(line)?;
        let Some((&command, args)) = words.as_slice().split_first() else {
            return Ok(Outcome::Done);
        };
        match command {
            "list" => domain::list(args, host, out)?,
            "info" => system::info(args, host, out)?,
            "create" => domain::create(args, host, out)?,
            "destroy" => domain::lifecycle(DomainOp::Destroy, args, host)?,
            "shutdown" => domain::lifecycle(DomainOp::Shutdown, args, host)?,
            "reboot" => domain::lifecycle(DomainOp::Reboot, args, host)?,
            "pause" => domain::lifecycle(DomainOp::Pause, args, host)?,
            "unpause" => domain::lifecycle(DomainOp::Unpause, args, host)?,
            "console" => return domain::console(args, host),
            "trigger" => domain::trigger(args, host)?,
            "sched-credit" => sched::sched_credit(args, host, out)?,
            "vcpu-list" => vcpu::list(args, host, out)?,
            "vcpu-pin" => vcpu::pin(args, host)?,
            "dmesg" => system::dmesg(args, host, out)?,
            "top" => self.top.show(args, host, out)?,
            "lspci" => {
                no_args("lspci", args)?;
                crate::pci::lspci(host, out)?;
            }
            "acpi" => system::acpi(args, host, out)?,
            "help" => help(out)?,
            "sleep" => sleep(args, host)?,
            "poweroff" => {
                no_args("poweroff", args)?;
                return Ok(Outcome::PowerOff);
            }
            other => return Err(CmdError::UnknownCommand(other)),
        }
        Ok(Outcome::Done)
    }
}

fn help(out: &mut impl Write) -> Result<(), CmdError<'static>> {
    for c in COMMANDS {
        writeln!(out, "{:<36}  {}", c.synopsis, c.summary)?;
    }
    Ok(())
}

/// `sleep SECONDS`: idles until that much time has passed on the host's clock.
fn sleep<'a>(args: &[&'a str], host: &mut impl Host) -> Result<(), CmdError<'a>> {
    let [text] = args else { return Err(CmdError::Usage(synopsis("sleep"))) };
    let seconds = crate::number::parse_u64(text)
        .filter(|s| (1..=3600).contains(s))
        .ok_or(CmdError::BadNumber { text, what: "SECONDS (1 to 3600)" })?;
    let end = host.now_ns().saturating_add(seconds * 1_000_000_000);
    while host.now_ns() < end {
        host.idle();
    }
    Ok(())
}

fn no_args<'a>(command: &str, args: &[&'a str]) -> Result<(), CmdError<'a>> {
    if args.is_empty() { Ok(()) } else { Err(CmdError::Usage(synopsis(command))) }
}

/// Domain0 runs this shell; the hypervisor marks it with a flag (and gives it ID 0).
fn is_dom0(d: &DomainInfo) -> bool {
    d.id == 0 || d.flags & DomainInfo::FLAG_DOM0 != 0
}

/// Domain0 is "Domain-0" in every listing, whatever the hypervisor calls it.
fn display_name(d: &DomainInfo) -> &str {
    if is_dom0(d) { "Domain-0" } else { d.name() }
}

/// A snapshot of the domain table, to resolve names and to print tables from.
struct Domains {
    list: [DomainInfo; MAX_DOMAINS],
    len: usize,
}

impl Domains {
    fn fetch<'a>(host: &mut impl Host) -> Result<Self, CmdError<'a>> {
        let mut d = Domains { list: [DomainInfo::default(); MAX_DOMAINS], len: 0 };
        d.len = host.domain_list(&mut d.list).map_err(CmdError::hv(Call::DomainList))?.min(MAX_DOMAINS);
        Ok(d)
    }

    fn as_slice(&self) -> &[DomainInfo] {
        &self.list[..self.len]
    }

    /// A domain by ID or, failing that, by name (as xl: a number is an ID first).
    fn find<'a>(&self, spec: &'a str) -> Result<&DomainInfo, CmdError<'a>> {
        let by_id = parse_u32(spec).and_then(|id| self.as_slice().iter().find(|d| d.id == id));
        let by_name = || self.as_slice().iter().find(|d| d.name() == spec || display_name(d) == spec);
        by_id.or_else(by_name).ok_or(CmdError::NoDomain(spec))
    }
}

/// The single domain argument of `command`.
fn one_domain<'a>(command: &str, args: &[&'a str], host: &mut impl Host) -> Result<DomainInfo, CmdError<'a>> {
    match args {
        [spec] => Domains::fetch(host)?.find(words::unquote(spec)).copied(),
        _ => Err(CmdError::Usage(synopsis(command))),
    }
}
