//! The integration-test harness: build an image with a given configuration, boot it in
//! an emulator with a timeout, and judge the serial log by ordered markers.
//!
//! A failure names the missing marker and prints the tail of the serial log and of the
//! emulator's own log. The emulator is always ended (on success, failure or timeout):
//! `Running` kills its whole process group when dropped.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;
use xtask::build::{self, Profile};
use xtask::emulator::{self, Engine, Firmware, Machine, Outcome};

pub use xtask::emulator::{Engine as EmulatorEngine, Firmware as BootFirmware};

/// The line the hypervisor prints last, whatever the reason it stopped.
pub const HALTED: &str = "machine halted:";

/// The kernel ELF and the image tool, built once per test process (or handed over by
/// `cargo xtask test` through the environment).
fn tools() -> &'static (PathBuf, PathBuf, PathBuf) {
    static TOOLS: OnceLock<(PathBuf, PathBuf, PathBuf)> = OnceLock::new();
    TOOLS.get_or_init(|| {
        // Relative paths are taken from the workspace root, where `cargo xtask` runs.
        let absolute = |p: PathBuf| if p.is_absolute() { p } else { xtask::workspace_root().join(p) };
        let kernel = std::env::var_os("FERROVISOR_KERNEL")
            .map(PathBuf::from)
            .map(absolute)
            .unwrap_or_else(|| build::kernel(Profile::Release).expect("building the hypervisor"));
        let boot = std::env::var_os("FERROVISOR_BOOT_TOOL")
            .map(PathBuf::from)
            .map(absolute)
            .unwrap_or_else(|| build::boot_tool().expect("building the image tool"));
        let guests = std::env::var_os("FERROVISOR_GUESTS").map(PathBuf::from).map(absolute).unwrap_or_else(|| {
            let built = build::guests(Profile::Release).expect("building the guests");
            built.first().and_then(|g| g.path.parent()).map(PathBuf::from).unwrap_or_default()
        });
        (kernel, boot, guests)
    })
}

/// One boot of the hypervisor in an emulator.
pub struct Boot {
    pub name: &'static str,
    pub engine: Engine,
    pub firmware: Firmware,
    pub cpus: u32,
    pub memory_mib: u32,
    /// Extra `[hypervisor]` lines of the boot configuration.
    pub config: &'static str,
    pub timeout: Duration,
    /// Images beyond our own guests (foreign kernels), as bundle entries.
    pub extra_guests: Vec<build::BuiltGuest>,
}

impl Boot {
    pub fn bochs(name: &'static str, cpus: u32) -> Self {
        Self {
            name,
            engine: Engine::Bochs,
            firmware: Firmware::Bios,
            cpus,
            memory_mib: 128,
            config: "",
            timeout: Duration::from_secs(240),
            extra_guests: Vec::new(),
        }
    }

    pub fn qemu(name: &'static str, firmware: Firmware) -> Self {
        Self {
            name,
            engine: Engine::Qemu { kvm: false },
            firmware,
            cpus: 1,
            memory_mib: 128,
            config: "",
            timeout: Duration::from_secs(120),
            extra_guests: Vec::new(),
        }
    }

    /// Adds an image to the bundle under `name` (`kind` as in `boot --entry`).
    pub fn with_guest(mut self, name: &str, kind: &str, path: PathBuf) -> Self {
        self.extra_guests.push(build::BuiltGuest { name: name.into(), kind: kind.into(), path });
        self
    }

    pub fn with_config(mut self, lines: &'static str) -> Self {
        self.config = lines;
        self
    }

    /// Builds the image for this boot and runs it until the hypervisor halts the
    /// machine, the emulator exits, or the timeout passes.
    pub fn run(&self) -> BootLog {
        let (kernel, boot, guest_dir) = tools();
        let config = format!("[hypervisor]\nlog_level = \"info\"\nemulator_exit = true\n{}\n", self.config);
        let mut guests = build::guests_in(guest_dir, false).unwrap_or_else(|e| panic!("{}: {e}", self.name));
        guests.extend(self.extra_guests.iter().cloned());
        let dir = xtask::workspace_root().join("target").join("integration").join(self.name);
        let fw = build::Firmware { bios: self.firmware == Firmware::Bios, uefi: self.firmware == Firmware::Uefi };
        let images =
            build::images(boot, kernel, &config, &guests, &dir, fw).unwrap_or_else(|e| panic!("{}: {e}", self.name));
        let machine = Machine {
            engine: self.engine,
            firmware: self.firmware,
            cpus: self.cpus,
            memory_mib: self.memory_mib,
            image: if self.firmware == Firmware::Bios { images.bios } else { images.uefi },
            work_dir: dir.join("run"),
        };
        let mut running = machine.launch().unwrap_or_else(|e| panic!("{}: {e}", self.name));
        // The hypervisor ends the emulator itself (emulator_exit = true); the marker
        // check is a second way out in case the exit port is not wired.
        let outcome =
            running.wait(self.timeout, |serial| serial.lines().any(|l| l.contains(HALTED)) && serial.ends_with('\n'));
        let elapsed = running.elapsed();
        drop(running);
        let serial =
            std::fs::read(machine.serial_log()).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let emulator_log =
            std::fs::read(machine.emulator_log()).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        eprintln!(
            "[{}] {} booted and halted in {:.1} s ({:?})",
            self.name,
            self.engine.name(),
            elapsed.as_secs_f64(),
            outcome
        );
        BootLog { name: self.name, serial, emulator_log, outcome, timeout: self.timeout }
    }
}

/// What a boot left behind.
pub struct BootLog {
    pub name: &'static str,
    pub serial: String,
    pub emulator_log: String,
    pub outcome: Outcome,
    timeout: Duration,
}

impl BootLog {
    fn fail(&self, why: &str) -> ! {
        panic!(
            "{}: {why}\n--- last 40 lines of the serial log ---\n{}\n--- last 15 lines of the emulator's log ---\n{}\n",
            self.name,
            emulator::tail(&self.serial, 40),
            emulator::tail(&self.emulator_log, 15),
        );
    }

    /// Asserts that each marker appears, in this order, each on a later line than the
    /// previous one.
    pub fn expect_in_order(&self, markers: &[&str]) -> &Self {
        if self.outcome == Outcome::TimedOut {
            self.fail(&format!("timed out after {} s before the machine halted", self.timeout.as_secs()));
        }
        let lines: Vec<&str> = self.serial.lines().collect();
        let mut from = 0;
        for marker in markers {
            match lines[from..].iter().position(|l| l.contains(marker)) {
                Some(i) => from += i + 1,
                None => {
                    let earlier = lines[..from].iter().any(|l| l.contains(marker));
                    self.fail(&format!(
                        "expected {marker:?}{}",
                        if earlier { " (it appears, but before the previous marker)" } else { " in the serial log" }
                    ));
                }
            }
        }
        self
    }

    /// Asserts that no line contains `text`.
    pub fn expect_absent(&self, text: &str) -> &Self {
        if let Some(line) = self.serial.lines().find(|l| l.contains(text)) {
            self.fail(&format!("unexpected {text:?} in line {line:?}"));
        }
        self
    }

    /// The first line containing `text`.
    pub fn line_with(&self, text: &str) -> &str {
        self.serial
            .lines()
            .find(|l| l.contains(text))
            .unwrap_or_else(|| self.fail(&format!("no line contains {text:?}")))
    }
}
