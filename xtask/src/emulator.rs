//! Booting an image in QEMU or Bochs with the serial port captured to a file.
//!
//! QEMU's TCG emulates no VMX, so on hosts without nested VT-x Bochs (which emulates
//! VMX with EPT, VPID and unrestricted guest) is the engine that runs the hypervisor.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// QEMU; with `kvm` the host's nested VT-x runs the hypervisor for real.
    Qemu {
        kvm: bool,
    },
    Bochs,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Qemu { kvm: true } => "QEMU with KVM",
            Engine::Qemu { kvm: false } => "QEMU (TCG, no VMX)",
            Engine::Bochs => "Bochs",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    Bios,
    Uefi,
}

/// One emulated machine.
#[derive(Debug, Clone)]
pub struct Machine {
    pub engine: Engine,
    pub firmware: Firmware,
    pub cpus: u32,
    pub memory_mib: u32,
    pub image: PathBuf,
    /// Where the serial log, the emulator's log and generated configuration go.
    pub work_dir: PathBuf,
}

/// The Bochs CPU model: Skylake-X emulates VMX with EPT (4-level, 2M/1G, A/D), VPID,
/// unrestricted guest and the preemption timer.
pub const BOCHS_CPU_MODEL: &str = "corei7_skylake_x";
/// Bochs instructions per emulated second. It also sets the TSC rate the hypervisor
/// measures against the emulated PIT.
pub const BOCHS_IPS: u64 = 100_000_000;

impl Machine {
    pub fn serial_log(&self) -> PathBuf {
        self.work_dir.join("serial.log")
    }

    pub fn emulator_log(&self) -> PathBuf {
        self.work_dir.join(match self.engine {
            Engine::Bochs => "bochs.log",
            Engine::Qemu { .. } => "qemu.log",
        })
    }

    fn check(&self) -> Result<(), String> {
        if self.engine == Engine::Bochs && self.firmware == Firmware::Uefi {
            return Err("Bochs has no UEFI firmware; boot the UEFI image with --emulator qemu".into());
        }
        if !(1..=64).contains(&self.cpus) {
            return Err(format!("--cpus {} is out of range: choose 1 to 64", self.cpus));
        }
        if !(32..=65536).contains(&self.memory_mib) {
            return Err(format!(
                "--memory {} MiB is out of range: the hypervisor needs at least 32 MiB (at most 65536)",
                self.memory_mib
            ));
        }
        if !self.image.exists() {
            return Err(format!("{} does not exist; build it with `cargo xtask build`", self.image.display()));
        }
        Ok(())
    }

    /// Starts the emulator in its own process group (so a terminal's Ctrl-C reaches
    /// only us, and we end the emulator and its helpers together).
    pub fn launch(&self) -> Result<Running, String> {
        self.check()?;
        std::fs::create_dir_all(&self.work_dir)
            .map_err(|e| format!("cannot create {}: {e}", self.work_dir.display()))?;
        let serial = self.serial_log();
        File::create(&serial).map_err(|e| format!("cannot create {}: {e}", serial.display()))?;
        let log = File::create(self.emulator_log()).map_err(|e| format!("cannot create the emulator log: {e}"))?;
        let mut cmd = match self.engine {
            Engine::Qemu { kvm } => self.qemu_command(kvm),
            Engine::Bochs => self.bochs_command()?,
        };
        cmd.stdin(Stdio::null()).stdout(log.try_clone().map_err(|e| e.to_string())?).stderr(log).process_group(0);
        let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", self.engine.name()))?;
        Ok(Running { child, serial, started: Instant::now(), finished: None })
    }

    fn qemu_command(&self, kvm: bool) -> Command {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-display", "none", "-no-reboot", "-m"])
            .arg(self.memory_mib.to_string())
            .arg("-smp")
            .arg(self.cpus.to_string())
            .arg("-drive")
            .arg(format!("format=raw,file={}", self.image.display()))
            .arg("-serial")
            .arg(format!("file:{}", self.serial_log().display()))
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
        if kvm {
            cmd.args(["-enable-kvm", "-cpu", "host,+vmx"]);
        } else {
            cmd.args(["-cpu", "max"]);
        }
        if self.firmware == Firmware::Uefi {
            cmd.args(["-bios", "/usr/share/OVMF/OVMF_CODE.fd"]);
        }
        cmd
    }

    fn bochs_command(&self) -> Result<Command, String> {
        // Bochs wants flat disk images to fill whole cylinders (16 heads x 63 sectors).
        let disk = self.work_dir.join("disk.img");
        let mut data = std::fs::read(&self.image).map_err(|e| format!("cannot read {}: {e}", self.image.display()))?;
        let cylinder = 16 * 63 * 512;
        data.resize(data.len().div_ceil(cylinder) * cylinder, 0);
        std::fs::write(&disk, &data).map_err(|e| format!("cannot write {}: {e}", disk.display()))?;
        // Bochs locks its disk with a side file; one left by a killed run would make
        // this run refuse the image.
        let _ = std::fs::remove_file(self.work_dir.join("disk.img.lock"));
        let cylinders = data.len() / cylinder;

        let rc = self.work_dir.join("bochsrc.txt");
        let config = format!(
            "# Generated by cargo xtask; see xtask/src/emulator.rs.\n\
             megs: {mem}\n\
             romimage: file=/usr/share/bochs/BIOS-bochs-latest\n\
             vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest\n\
             cpu: model={model}, count={cpus}, ips={ips}, reset_on_triple_fault=0\n\
             pci: enabled=1, chipset=i440fx\n\
             ata0-master: type=disk, path=\"{disk}\", mode=flat, cylinders={cylinders}, heads=16, spt=63\n\
             boot: disk\n\
             clock: sync=none, time0=local\n\
             display_library: x\n\
             com1: enabled=1, mode=file, dev=\"{serial}\"\n\
             port_e9_hack: enabled=1\n\
             log: \"{log}\"\n\
             panic: action=fatal\n\
             error: action=report\n\
             info: action=report\n\
             debug: action=ignore\n\
             mouse: enabled=0\n",
            mem = self.memory_mib,
            model = BOCHS_CPU_MODEL,
            cpus = self.cpus,
            ips = BOCHS_IPS,
            disk = disk.display(),
            serial = self.serial_log().display(),
            log = self.work_dir.join("bochs-internal.log").display(),
        );
        std::fs::write(&rc, config).map_err(|e| format!("cannot write {}: {e}", rc.display()))?;
        // Bochs has its debugger compiled in: without a command file it stops at a prompt.
        let cmds = self.work_dir.join("bochs-debugger.rc");
        std::fs::write(&cmds, "c\n").map_err(|e| format!("cannot write {}: {e}", cmds.display()))?;
        // No headless display exists in Debian's Bochs; the X display under a virtual
        // framebuffer works everywhere.
        let mut cmd = Command::new("xvfb-run");
        cmd.args(["-a", "bochs", "-q", "-f"]).arg(&rc).arg("-rc").arg(&cmds);
        Ok(cmd)
    }
}

/// A running emulator.
pub struct Running {
    child: Child,
    serial: PathBuf,
    started: Instant,
    finished: Option<ExitStatus>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Exited(Option<i32>),
    TimedOut,
    /// `stop_when` said the log had everything it needed.
    Stopped,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The serial output so far.
    pub fn serial(&self) -> String {
        std::fs::read(&self.serial).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    fn poll(&mut self) -> Option<ExitStatus> {
        if self.finished.is_none() {
            self.finished = self.child.try_wait().ok().flatten();
        }
        self.finished
    }

    /// Waits until the emulator exits, `timeout` passes, or `stop_when(serial)` is true.
    /// The emulator is ended in the last two cases.
    pub fn wait(&mut self, timeout: Duration, mut stop_when: impl FnMut(&str) -> bool) -> Outcome {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.poll() {
                return Outcome::Exited(status.code());
            }
            if stop_when(&self.serial()) {
                self.kill();
                return Outcome::Stopped;
            }
            if Instant::now() >= deadline {
                self.kill();
                return Outcome::TimedOut;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ends the emulator and everything it started (Xvfb, for Bochs).
    pub fn kill(&mut self) {
        if self.poll().is_some() {
            return;
        }
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child's process group; no memory is involved.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if self.poll().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above; SIGKILL makes sure nothing is left behind.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Copies new bytes of `path` to stdout until `stop` is set.
pub fn stream_file(path: &Path, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let mut pos = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let done = stop.load(Ordering::Relaxed);
            if let Ok(mut f) = File::open(&path)
                && f.seek(SeekFrom::Start(pos)).is_ok()
            {
                while let Ok(n) = f.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    pos += n as u64;
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&buf[..n]);
                    let _ = out.flush();
                }
            }
            if done {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

/// The last `lines` lines of `text`, for failure reports.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
