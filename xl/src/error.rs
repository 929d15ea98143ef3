//! Everything a command can fail with, and the one sentence the shell prints for each.

use abi::hypercall::{Call, Error};
use core::fmt;

use crate::cpulist::CpuListError;
use crate::words::WordsError;

/// A failed command. The shell prints it as `error: {self}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdError<'a> {
    Words(WordsError),
    UnknownCommand(&'a str),
    /// Wrong arguments: the command's synopsis.
    Usage(&'static str),
    NoDomain(&'a str),
    /// `destroy`, `pause`, ... on Domain0, which runs this shell.
    Dom0(&'static str),
    BadNumber {
        text: &'a str,
        what: &'static str,
    },
    UnknownOption {
        option: &'a str,
        known: &'static str,
    },
    /// A word that is not one of the choices `setting` takes.
    BadChoice {
        text: &'a str,
        setting: &'static str,
        choices: &'static str,
    },
    MissingValue(&'a str),
    NoImage(&'a str),
    TooLong {
        what: &'static str,
        max: usize,
    },
    NameTaken(&'a str),
    NameIsNumber(&'a str),
    CpuList(CpuListError<'a>),
    NoCpu {
        cpu: u32,
        host_cpus: u32,
    },
    NoVcpu {
        domain: u32,
        vcpu: u32,
    },
    /// A refusal explained in full (the allowed ranges after an EINVAL, ...).
    Refused(&'static str),
    /// Any other hypercall failure.
    Hypervisor {
        call: Call,
        error: Error,
    },
    /// The output sink failed; nothing more can be printed.
    Output,
}

impl From<fmt::Error> for CmdError<'_> {
    fn from(_: fmt::Error) -> Self {
        CmdError::Output
    }
}

impl From<WordsError> for CmdError<'_> {
    fn from(e: WordsError) -> Self {
        CmdError::Words(e)
    }
}

impl<'a> From<CpuListError<'a>> for CmdError<'a> {
    fn from(e: CpuListError<'a>) -> Self {
        CmdError::CpuList(e)
    }
}

impl CmdError<'_> {
    /// Wraps a hypercall error; shorthand for `map_err`.
    pub fn hv(call: Call) -> impl Fn(Error) -> Self {
        move |error| CmdError::Hypervisor { call, error }
    }
}

/// What a hypercall error code means to a person.
pub fn describe(error: Error) -> &'static str {
    match error {
        Error::NotPermitted => "not permitted (only Domain0 may do this)",
        Error::NoEntry => "no such domain or vCPU",
        Error::TooBig => "argument too long",
        Error::Fault => "bad buffer address",
        Error::Invalid => "invalid argument",
        Error::NoMemory => "out of host memory",
        Error::NoSys => "not supported by this hypervisor",
    }
}

impl fmt::Display for CmdError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CmdError::Words(e) => write!(f, "{e}"),
            CmdError::UnknownCommand(c) => write!(f, "unknown command '{c}'; type 'help'"),
            CmdError::Usage(synopsis) => write!(f, "usage: {synopsis}"),
            CmdError::NoDomain(d) => write!(f, "no domain '{d}'"),
            CmdError::Dom0(op) => {
                write!(f, "refusing to {op} Domain-0: it runs this shell (use 'poweroff' to stop the host)")
            }
            CmdError::BadNumber { text, what } => write!(f, "bad number '{text}' for {what}"),
            CmdError::UnknownOption { option, known } => write!(f, "unknown option '{option}' (known: {known})"),
            CmdError::BadChoice { text, setting, choices } => {
                write!(f, "bad value '{text}' for {setting} (choose {choices})")
            }
            CmdError::MissingValue(option) => write!(f, "option '{option}' needs a value"),
            CmdError::NoImage(image) => write!(f, "no image '{image}' in the boot bundle"),
            CmdError::TooLong { what, max } => write!(f, "{what} is longer than {max} bytes"),
            CmdError::NameTaken(name) => write!(f, "a domain named '{name}' exists already"),
            CmdError::NameIsNumber(name) => {
                write!(f, "domain name '{name}' is a number (it would read as a domain ID)")
            }
            CmdError::CpuList(e) => write!(f, "{e}"),
            CmdError::NoCpu { cpu, host_cpus } => {
                write!(f, "no CPU {cpu}: the host has {host_cpus} (0-{})", host_cpus.saturating_sub(1))
            }
            CmdError::NoVcpu { domain, vcpu } => write!(f, "domain {domain} has no vCPU {vcpu}"),
            CmdError::Refused(why) => f.write_str(why),
            CmdError::Hypervisor { call, error } => write!(f, "{call:?}: {} ({})", describe(error), error.code()),
            CmdError::Output => f.write_str("output failed"),
        }
    }
}
