//! Booting an image in QEMU or Bochs with the serial port captured to a file.
//!
//! Two ways to wire COM1: `Machine::launch` has the emulator write it to `serial.log`
//! (output only); `Machine::launch_interactive` opens a serial channel instead: we listen
//! on a TCP port of 127.0.0.1, the emulator connects to it as a client (Bochs
//! `mode=socket-client`, QEMU `-serial tcp:`), a thread copies everything the machine
//! sends into the same `serial.log`, and `Running::send` types bytes into COM1.
//!
//! QEMU's TCG emulates no VMX, so on hosts without nested VT-x Bochs (which emulates
//! VMX with EPT, VPID and unrestricted guest) is the engine that runs the hypervisor.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
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
    /// The Bochs CPU model ([`BOCHS_CPU_MODEL`] unless a test needs another).
    pub cpu_model: &'static str,
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
    /// only us, and we end the emulator and its helpers together). COM1 output goes to
    /// `serial_log()`; the machine gets no serial input.
    pub fn launch(&self) -> Result<Running, String> {
        self.start(None)
    }

    /// Like `launch`, but COM1 is a serial channel: output still lands in `serial_log()`,
    /// and `Running::send` (or a `SerialInput` from `Running::serial_input`) types into
    /// the machine. Returns once the emulator has connected to the channel.
    pub fn launch_interactive(&self) -> Result<Running, String> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .map_err(|e| format!("cannot open the serial channel on 127.0.0.1: {e}"))?;
        self.start(Some(listener))
    }

    fn start(&self, channel: Option<TcpListener>) -> Result<Running, String> {
        self.check()?;
        std::fs::create_dir_all(&self.work_dir)
            .map_err(|e| format!("cannot create {}: {e}", self.work_dir.display()))?;
        let serial = self.serial_log();
        File::create(&serial).map_err(|e| format!("cannot create {}: {e}", serial.display()))?;
        let log = File::create(self.emulator_log()).map_err(|e| format!("cannot create the emulator log: {e}"))?;
        let com1 = match &channel {
            Some(l) => Com1::Channel(l.local_addr().map_err(|e| format!("serial channel: {e}"))?.port()),
            None => Com1::File,
        };
        let mut cmd = match self.engine {
            Engine::Qemu { kvm } => self.qemu_command(kvm, com1),
            Engine::Bochs => self.bochs_command(com1)?,
        };
        cmd.stdin(Stdio::null()).stdout(log.try_clone().map_err(|e| e.to_string())?).stderr(log).process_group(0);
        let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", self.engine.name()))?;
        let mut running = Running { child, serial, started: Instant::now(), finished: None, input: None, pump: None };
        if let Some(listener) = channel {
            // On failure `running` is dropped here, which ends the emulator.
            let stream = running.accept(&listener, self)?;
            let writer = stream.try_clone().map_err(|e| format!("serial channel: {e}"))?;
            let log = std::fs::OpenOptions::new()
                .append(true)
                .open(&running.serial)
                .map_err(|e| format!("cannot open {}: {e}", running.serial.display()))?;
            running.pump = Some(pump_serial(stream, log));
            running.input = Some(writer);
        }
        Ok(running)
    }

    fn qemu_command(&self, kvm: bool, com1: Com1) -> Command {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-display", "none", "-no-reboot", "-m"])
            .arg(self.memory_mib.to_string())
            .arg("-smp")
            .arg(self.cpus.to_string())
            .arg("-drive")
            .arg(format!("format=raw,file={}", self.image.display()))
            .arg("-serial")
            .arg(match com1 {
                Com1::File => format!("file:{}", self.serial_log().display()),
                // Client mode: QEMU connects at startup and fails if nobody listens.
                Com1::Channel(port) => format!("tcp:127.0.0.1:{port}"),
            })
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

    fn bochs_command(&self, com1: Com1) -> Result<Command, String> {
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
             com1: enabled=1, {com1}\n\
             port_e9_hack: enabled=1\n\
             log: \"{log}\"\n\
             panic: action=fatal\n\
             error: action=report\n\
             info: action=report\n\
             debug: action=ignore\n\
             mouse: enabled=0\n",
            mem = self.memory_mib,
            model = self.cpu_model,
            cpus = self.cpus,
            ips = BOCHS_IPS,
            disk = disk.display(),
            com1 = match com1 {
                Com1::File => format!("mode=file, dev=\"{}\"", self.serial_log().display()),
                // Bochs connects while it sets up its devices, before the simulation starts.
                Com1::Channel(port) => format!("mode=socket-client, dev=127.0.0.1:{port}"),
            },
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

/// How COM1 is wired.
#[derive(Debug, Clone, Copy)]
enum Com1 {
    /// Output to `serial.log`, no input.
    File,
    /// The emulator connects to this port of 127.0.0.1.
    Channel(u16),
}

/// How long an emulator may take to connect to the serial channel (Bochs starts Xvfb first).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// A running emulator.
pub struct Running {
    child: Child,
    serial: PathBuf,
    started: Instant,
    finished: Option<ExitStatus>,
    /// The serial channel's sending side (`launch_interactive` only).
    input: Option<TcpStream>,
    /// The thread copying the channel into `serial`.
    pump: Option<JoinHandle<()>>,
}

/// Copies what the machine sends on COM1 into the serial log, until the emulator closes
/// the connection.
fn pump_serial(mut stream: TcpStream, mut log: File) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if log.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    })
}

/// A handle that types into a running machine's COM1; it can move to another thread.
pub struct SerialInput(TcpStream);

impl SerialInput {
    /// Sends `bytes` to COM1 as they are.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.0.write_all(bytes).and_then(|_| self.0.flush()).map_err(|e| format!("serial channel: {e}"))
    }
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

    /// Waits for the emulator to connect to the serial channel.
    fn accept(&mut self, listener: &TcpListener, machine: &Machine) -> Result<TcpStream, String> {
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        listener.set_nonblocking(true).map_err(|e| format!("serial channel: {e}"))?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).map_err(|e| format!("serial channel: {e}"))?;
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("serial channel on 127.0.0.1:{port}: {e}")),
            }
            let why = if let Some(status) = self.poll() {
                format!("exited ({status})")
            } else if Instant::now() >= deadline {
                format!("did not connect within {} s", CONNECT_TIMEOUT.as_secs())
            } else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            self.kill();
            return Err(format!(
                "{} {why} before connecting its COM1 to the serial channel on 127.0.0.1:{port}; its log: {}",
                machine.engine.name(),
                machine.emulator_log().display()
            ));
        }
    }

    /// Types `bytes` into COM1. Only for a machine from `launch_interactive`.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        match &mut self.input {
            Some(stream) => stream.write_all(bytes).map_err(|e| format!("serial channel: {e}")),
            None => Err("no serial input: the machine was not started with launch_interactive, or it has ended".into()),
        }
    }

    /// A second handle on COM1's input, for another thread (`launch_interactive` only).
    pub fn serial_input(&self) -> Option<SerialInput> {
        self.input.as_ref().and_then(|s| s.try_clone().ok()).map(SerialInput)
    }

    /// The emulator's exit status once it has ended (and, with a serial channel, once
    /// everything it sent is in the serial log).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.poll()?;
        self.finish_pump();
        Some(status)
    }

    /// After the emulator has ended: lets the pump copy the last bytes, then stops it.
    fn finish_pump(&mut self) {
        let Some(pump) = self.pump.take() else { return };
        // The connection closes with the emulator; a helper that inherited it could
        // keep it open, so wait a little, then close it from our side.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !pump.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(stream) = self.input.take() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let _ = pump.join();
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
            if let Some(status) = self.exited() {
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
            self.finish_pump();
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
        if let Ok(status) = self.child.wait() {
            self.finished = Some(status);
        }
        self.finish_pump();
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

/// Copies this process's stdin to `input` (COM1), byte for byte, until stdin ends or the
/// channel closes. Run it on a terminal in `KeyboardMode` so keys go out as they are typed.
pub fn forward_stdin(mut input: SerialInput) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        loop {
            match std::io::stdin().lock().read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if input.send(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    })
}

/// Whether this process may read stdin: not when stdin is a terminal whose foreground
/// process group is not ours (`cargo xtask run &`, `timeout` without `--foreground`),
/// where reading it or changing its mode would stop us (SIGTTIN, SIGTTOU).
pub fn stdin_is_ours() -> bool {
    // SAFETY: isatty, tcgetpgrp and getpgrp only inspect fd 0 and our process.
    unsafe { libc::isatty(0) != 1 || libc::tcgetpgrp(0) == libc::getpgrp() }
}

/// While alive, the terminal on stdin (if it is one) hands over each key as it is typed,
/// without echoing it: ICANON and ECHO are off, ISIG stays on so Ctrl-C still reaches us.
/// Dropping it restores the terminal as it was.
pub struct KeyboardMode {
    saved: Option<libc::termios>,
}

impl KeyboardMode {
    /// Does nothing when stdin is not a terminal (a pipe, a file, CI).
    pub fn enter() -> Self {
        // SAFETY: isatty, tcgetattr and tcsetattr on fd 0 with a termios we own; a
        // zeroed termios is a valid value of this plain C struct.
        unsafe {
            if libc::isatty(0) != 1 {
                return KeyboardMode { saved: None };
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return KeyboardMode { saved: None };
            }
            let mut raw = saved;
            raw.c_lflag &= !(libc::ICANON | libc::ECHO);
            raw.c_lflag |= libc::ISIG;
            raw.c_cc[libc::VMIN] = 1;
            raw.c_cc[libc::VTIME] = 0;
            if libc::tcsetattr(0, libc::TCSANOW, &raw) != 0 {
                return KeyboardMode { saved: None };
            }
            KeyboardMode { saved: Some(saved) }
        }
    }
}

impl Drop for KeyboardMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            // SAFETY: restores the settings tcgetattr gave us for the same fd.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, saved) };
        }
    }
}

/// The last `lines` lines of `text`, for failure reports.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
