//! The bodies of Ferrovisor's fuzz targets, one function per target in [`targets`].
//!
//! Each `fuzz_targets/NAME.rs` is a one-line libFuzzer wrapper around `targets::NAME`, and
//! `tests/regressions.rs` replays every saved input (`regressions/NAME/*`, `seeds/NAME/*`)
//! through the same function with plain `cargo test`, so a crash found once stays a test
//! without a fuzzer or a nightly sanitizer. A target panics (through `assert!`) when the
//! code under test panics or breaks one of its documented invariants.
//!
//! See docs/fuzzing.md for how to run them and where crashes go.

pub mod input;
pub mod seeds;
pub mod targets;

/// A fuzz target: its name (the `fuzz_targets/NAME.rs` binary and the folder name under
/// `regressions/` and `seeds/`) and its body.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order `cargo xtask fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target { name: "bundle", run: targets::bundle },
    Target { name: "config", run: targets::config },
    Target { name: "hypercall", run: targets::hypercall },
    Target { name: "elf64", run: targets::elf64 },
    Target { name: "multiboot", run: targets::multiboot },
    Target { name: "flat", run: targets::flat },
    Target { name: "bzimage", run: targets::bzimage },
    Target { name: "decode", run: targets::decode },
    Target { name: "guest_paging", run: targets::guest_paging },
    Target { name: "uart16550", run: targets::uart16550 },
    Target { name: "pic8259", run: targets::pic8259 },
    Target { name: "pit8254", run: targets::pit8254 },
    Target { name: "rtc", run: targets::rtc },
    Target { name: "ioapic", run: targets::ioapic },
    Target { name: "lapic", run: targets::lapic },
    Target { name: "pci", run: targets::pci },
    Target { name: "fw_cfg", run: targets::fw_cfg },
    Target { name: "acpi_pm", run: targets::acpi_pm },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
