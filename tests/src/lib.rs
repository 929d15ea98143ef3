//! The integration-test harness: build an image with a given configuration, boot it in
//! an emulator with a timeout, and judge the serial log by ordered markers.
//!
//! A failure names the missing marker and prints the tail of the serial log and of the
//! emulator's own log. The emulator is always ended (on success, failure or timeout):
//! `Running` kills its whole process group when dropped.
//!
//! Interactive tests (`Boot::interactive`) get a `Session` instead: COM1 is a serial
//! channel, the test types into it and waits for answers with `Session::expect`, while
//! the output still lands in the same serial log file.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use xtask::build::{self, Profile};
use xtask::emulator::{self, Engine, Firmware, Machine, Outcome, Running};

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
    /// The Bochs CPU model (`emulator::BOCHS_CPU_MODEL` unless a test needs another).
    pub cpu_model: &'static str,
    /// Extra `[hypervisor]` lines of the boot configuration.
    pub config: &'static str,
    /// `guest_output = "log"`: DomUs' console lines (COM1) in the serial log, where the
    /// tests read them (the default here); false keeps the product's default, `quiet`.
    pub guest_output_logged: bool,
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
            cpu_model: emulator::BOCHS_CPU_MODEL,
            config: "",
            guest_output_logged: true,
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
            cpu_model: emulator::BOCHS_CPU_MODEL,
            config: "",
            guest_output_logged: true,
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

    /// Builds the image for this boot: the machine to launch.
    fn machine(&self) -> Machine {
        let (kernel, boot, guest_dir) = tools();
        let output = if self.guest_output_logged { "log" } else { "quiet" };
        let config = format!(
            "[hypervisor]\nlog_level = \"info\"\nemulator_exit = true\nguest_output = {output}\n{}\n",
            self.config
        );
        let mut guests = build::guests_in(guest_dir, false).unwrap_or_else(|e| panic!("{}: {e}", self.name));
        guests.extend(self.extra_guests.iter().cloned());
        let dir = xtask::workspace_root().join("target").join("integration").join(self.name);
        let fw = build::Firmware { bios: self.firmware == Firmware::Bios, uefi: self.firmware == Firmware::Uefi };
        let images =
            build::images(boot, kernel, &config, &guests, &dir, fw).unwrap_or_else(|e| panic!("{}: {e}", self.name));
        Machine {
            engine: self.engine,
            firmware: self.firmware,
            cpus: self.cpus,
            memory_mib: self.memory_mib,
            cpu_model: self.cpu_model,
            image: if self.firmware == Firmware::Bios { images.bios } else { images.uefi },
            work_dir: dir.join("run"),
        }
    }

    /// Builds the image for this boot and runs it until the hypervisor halts the
    /// machine, the emulator exits, or the timeout passes.
    pub fn run(&self) -> BootLog {
        let machine = self.machine();
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

    /// Builds the image for this boot and starts it with COM1 as a serial channel, for a
    /// test that types into the machine. `self.timeout` does not apply: each
    /// `Session::expect` has its own.
    pub fn interactive(&self) -> Session {
        let machine = self.machine();
        let running = machine.launch_interactive().unwrap_or_else(|e| panic!("{}: {e}", self.name));
        Session { name: self.name, machine, running, from: 0 }
    }
}

/// One of our guests' images as the bundle holds it (flat binaries flattened).
pub fn guest_image(name: &str) -> PathBuf {
    let (_, _, guest_dir) = tools();
    let guests = build::guests_in(guest_dir, false).unwrap_or_else(|e| panic!("{name}: {e}"));
    guests.into_iter().find(|g| g.name == name).map(|g| g.path).unwrap_or_else(|| panic!("no guest named {name}"))
}

/// Boots `image` as the disk of a bare Bochs (no hypervisor: the BIOS starts its boot
/// sector), with COM1 in the serial log, until the emulator exits (the program may end
/// it through Bochs's shutdown port), a complete line containing `until` is logged, or
/// `timeout` passes. The reference run for behaviour the hypervisor must reproduce.
pub fn bare_bochs(name: &'static str, image: PathBuf, until: &str, timeout: Duration) -> BootLog {
    let machine = Machine {
        engine: Engine::Bochs,
        firmware: Firmware::Bios,
        cpus: 1,
        memory_mib: 32,
        cpu_model: emulator::BOCHS_CPU_MODEL,
        image,
        work_dir: xtask::workspace_root().join("target").join("integration").join(name).join("run"),
    };
    let _ = std::fs::create_dir_all(&machine.work_dir);
    let _ = std::fs::remove_file(machine.serial_log());
    let mut running = machine.launch().unwrap_or_else(|e| panic!("{name}: {e}"));
    let outcome = running.wait(timeout, |serial| serial.ends_with('\n') && serial.lines().any(|l| l.contains(until)));
    drop(running);
    let read = |p: PathBuf| std::fs::read(p).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let (serial, emulator_log) = (read(machine.serial_log()), read(machine.emulator_log()));
    eprintln!("[{name}] bare Bochs ended ({outcome:?})");
    BootLog { name, serial, emulator_log, outcome, timeout }
}

/// A running machine a test types into. Dropping it (also when a test panics) ends the
/// emulator.
pub struct Session {
    pub name: &'static str,
    machine: Machine,
    running: Running,
    /// Byte offset in the serial log just past the previous match.
    from: usize,
}

impl Session {
    /// The serial output so far.
    pub fn serial(&self) -> String {
        String::from_utf8_lossy(&self.serial_bytes()).into_owned()
    }

    fn serial_bytes(&self) -> Vec<u8> {
        std::fs::read(self.machine.serial_log()).unwrap_or_default()
    }

    fn fail(&mut self, why: &str) -> ! {
        self.running.kill();
        let serial = self.serial();
        let emulator_log = std::fs::read(self.machine.emulator_log())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        panic!(
            "{}: {why}\n--- last 40 lines of the serial log ---\n{}\n--- last 15 lines of the emulator's log ---\n{}\n",
            self.name,
            emulator::tail(&serial, 40),
            emulator::tail(&emulator_log, 15),
        );
    }

    /// Waits until `marker` appears in the serial log after the previous match, and
    /// returns the output from there up to and including it. Panics (naming the marker,
    /// with the tail of the log) if it has not appeared within `timeout` or the emulator
    /// ended without printing it.
    pub fn expect(&mut self, marker: &str, timeout: Duration) -> String {
        self.wait_for(marker, timeout, |text| {
            let at = find(text, marker.as_bytes())?;
            Some(at + marker.len())
        })
    }

    /// Waits until every one of `markers` has appeared after the previous match, in any
    /// order (output of two sources, such as the hypervisor's log and Domain0's console,
    /// that race each other); the next match starts after the last of them.
    pub fn expect_each(&mut self, markers: &[&str], timeout: Duration) {
        let what = format!("each of {markers:?}");
        self.wait_for(&what, timeout, |text| {
            markers
                .iter()
                .map(|m| find(text, m.as_bytes()).map(|at| at + m.len()))
                .try_fold(0, |end, e| Some(end.max(e?)))
        });
    }

    /// Waits until a whole line after the previous match contains every one of `parts`,
    /// and returns that line. Panics like `expect`.
    pub fn expect_line(&mut self, parts: &[&str], timeout: Duration) -> String {
        let what = format!("a line with {parts:?}");
        let text = self.wait_for(&what, timeout, |text| {
            let mut start = 0;
            while let Some(len) = text[start..].iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&text[start..start + len]);
                if parts.iter().all(|p| line.contains(p)) {
                    return Some(start + len + 1);
                }
                start += len + 1;
            }
            None
        });
        let line = text.trim_end_matches(['\r', '\n']);
        line.rsplit('\n').next().unwrap_or(line).trim_end_matches('\r').to_string()
    }

    /// Polls the serial log: `found(text after the previous match)` gives the length of
    /// the text the match consumes.
    fn wait_for(&mut self, what: &str, timeout: Duration, found: impl Fn(&[u8]) -> Option<usize>) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            // Checked before reading, so the final read sees everything a finished run wrote.
            let ended = self.running.exited();
            let serial = self.serial_bytes();
            let text = &serial[self.from.min(serial.len())..];
            if let Some(len) = found(text) {
                self.from += len;
                return String::from_utf8_lossy(&text[..len]).into_owned();
            }
            if let Some(status) = ended {
                self.fail(&format!("the emulator ended ({status}) before {what:?} appeared in the serial log"));
            }
            if Instant::now() >= deadline {
                self.fail(&format!("{what:?} did not appear in the serial log within {} s", timeout.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `text` into COM1 as it is.
    pub fn send(&mut self, text: &str) {
        self.send_bytes(text.as_bytes());
    }

    /// Sends raw bytes to COM1 (control keys such as Ctrl-] = 0x1D).
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        if let Err(e) = self.running.send(bytes) {
            self.fail(&format!("cannot type {:?}: {e}", String::from_utf8_lossy(bytes)));
        }
    }

    /// Types `line` and Enter (`\r`).
    pub fn type_line(&mut self, line: &str) {
        self.send(line);
        self.send("\r");
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.running.kill();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
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
