//! `xl`: Domain0's management shell, as a library.
//!
//! Commands in the style of Xen's `xl` (`list`, `create`, `destroy`, `sched-credit`,
//! `vcpu-pin`, `dmesg`, `top`, `lspci`, `acpi`, ...) parsed and formatted here, with
//! everything the machine must do behind the [`Host`] trait: guests/dom0 implements it
//! with hypercalls and port I/O, the tests with a fake domain table. No heap (Domain0 has
//! none): every table is a fixed array, every text is a slice of the input line.
//!
//! ```text
//! let mut shell = Shell::new();
//! match shell.run("list", &mut host, &mut out) {
//!     Outcome::Done => {}
//!     Outcome::EnterConsole(id) => /* the guest's console loop */,
//!     Outcome::PowerOff => /* HostPowerOff */,
//! }
//! ```
//!
//! The serial-terminal pieces the guest needs and the host can test live here too:
//! [`terminal::LineEditor`], [`terminal::CrLf`] and [`words::script`].
#![no_std]

#[cfg(test)]
extern crate std;

mod commands;
pub mod cpulist;
mod error;
mod host;
pub mod number;
mod pci;
mod pci_ids;
mod table;
pub mod terminal;
pub mod words;

#[cfg(test)]
mod mock;

pub use commands::Shell;
pub use cpulist::CpuSet;
pub use error::CmdError;
pub use host::{Acpi, AcpiStatus, DomainOp, Host, PciAddress, SchedParams};

/// At most this many domains are listed (the hypervisor's DomainList would give up to 1024;
/// Domain0's stack holds 64 records of 96 bytes comfortably).
pub const MAX_DOMAINS: usize = 64;

/// What the caller must do after a command: the shell itself never blocks or halts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The command has finished (successfully or with an error it printed).
    Done,
    /// `console D`: attach the serial port to this domain's console until Ctrl-].
    EnterConsole(u32),
    /// `poweroff`: call HostPowerOff.
    PowerOff,
}
