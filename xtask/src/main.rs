//! `cargo xtask build | run | test`. See README.md for what each does.

mod fuzz;

use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use xtask::build::{self, Profile};
use xtask::emulator::{self, Engine, Firmware, Machine, Outcome};
use xtask::{deps, step, workspace_root};

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  build [--release]                 build the hypervisor and its BIOS and UEFI disk images
  run   [--release] [--emulator auto|qemu|bochs] [--uefi] [--cpus N] [--memory MiB]
        [--log-level error|warn|info|debug|trace] [--until-guests-exit]
        [--guest FILE[,memory=MiB][,vcpus=N][,initrd=FILE][,cmdline=TEXT]]... [--linux]
                                    build, then boot in an emulator with the serial console
                                    on this terminal (Ctrl-C ends it). auto = QEMU+KVM where
                                    the host has nested VT-x, Bochs otherwise. Each --guest
                                    FILE (Linux bzImage, ELF64, multiboot 1 or flat real-mode) becomes a
                                    DomU (32 MiB unless memory= says otherwise; cmdline=
                                    must come last and takes the rest of the argument).
                                    --linux adds Debian's cloud kernel with a busybox
                                    initramfs as DomU `linux` (256 MiB, 2 vCPUs; fetched
                                    with apt-get download; the machine gets 512 MiB unless
                                    --memory says otherwise); reach its shell from Domain0
                                    with `console ID`
  test  [--no-integration] [--no-fuzz] [--fuzz-seconds N] [FILTER]
                                    host unit tests, then the integration tests that boot
                                    the image in Bochs and QEMU and judge the serial log,
                                    then every fuzz target for N seconds (default 60)
  fuzz  [--seconds N] [--replay] [TARGET]
                                    replay the saved fuzz inputs, then run each cargo-fuzz
                                    target (or TARGET) for N seconds (default 60); --replay
                                    only replays (docs/fuzzing.md)
  bench [--emulator bochs|qemu] [--quick] [--record]
                                    benchmarks measured by guests with RDTSC: a table here,
                                    results.json and benchmarks.md in target/bench/ (Bochs by
                                    default; qemu needs KVM with nested VT-x). --record writes
                                    the committed bench/results.json and docs/benchmarks.md
                                    instead; --quick boots only the exit/interrupt benchmarks
                                    and writes no files";

struct Opts {
    release: bool,
    emulator: String,
    uefi: bool,
    cpus: u32,
    memory: u32,
    log_level: Option<String>,
    no_integration: bool,
    filter: Option<String>,
    guests: Vec<GuestArg>,
    until_guests_exit: bool,
    no_fuzz: bool,
    fuzz_seconds: Option<u64>,
    replay: bool,
    quick: bool,
    record: bool,
    linux: bool,
    memory_given: bool,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        release: false,
        emulator: "auto".into(),
        uefi: false,
        cpus: 2,
        memory: 256,
        log_level: None,
        no_integration: false,
        filter: None,
        guests: Vec::new(),
        until_guests_exit: false,
        no_fuzz: false,
        fuzz_seconds: None,
        replay: false,
        quick: false,
        record: false,
        linux: false,
        memory_given: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--release" => o.release = true,
            "--uefi" => o.uefi = true,
            "--emulator" => o.emulator = val("--emulator")?,
            "--cpus" => o.cpus = val("--cpus")?.parse().map_err(|_| "--cpus takes a number".to_string())?,
            "--memory" => {
                o.memory = val("--memory")?.parse().map_err(|_| "--memory takes a number of MiB".to_string())?;
                o.memory_given = true;
            }
            "--linux" => o.linux = true,
            "--log-level" => o.log_level = Some(val("--log-level")?),
            "--no-integration" => o.no_integration = true,
            "--guest" => o.guests.push(GuestArg::parse(&val("--guest")?)?),
            "--until-guests-exit" => o.until_guests_exit = true,
            "--no-fuzz" => o.no_fuzz = true,
            "--replay" => o.replay = true,
            "--quick" => o.quick = true,
            "--record" => o.record = true,
            "--seconds" | "--fuzz-seconds" => {
                o.fuzz_seconds = Some(val(a)?.parse().map_err(|_| format!("{a} takes a number of seconds"))?)
            }
            f if !f.starts_with('-') && o.filter.is_none() => o.filter = Some(f.to_string()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if !["auto", "qemu", "bochs"].contains(&o.emulator.as_str()) {
        return Err(format!("--emulator {:?}: choose auto, qemu or bochs", o.emulator));
    }
    Ok(o)
}

fn profile(o: &Opts) -> Profile {
    if o.release { Profile::Release } else { Profile::Debug }
}

fn config_text(log_level: Option<&str>) -> Result<String, String> {
    let path = build::default_config_path();
    let mut text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if let Some(level) = log_level {
        text = text.lines().filter(|l| !l.trim_start().starts_with("log_level")).collect::<Vec<_>>().join("\n");
        text = text.replacen("[hypervisor]", &format!("[hypervisor]\nlog_level = \"{level}\""), 1);
    }
    Ok(text)
}

/// One `--guest FILE[,memory=MiB][,vcpus=N][,initrd=FILE][,cmdline=TEXT]`.
struct GuestArg {
    path: std::path::PathBuf,
    /// The domain's name (default: from the file name).
    name: Option<String>,
    memory_mib: u32,
    vcpus: u32,
    /// A Linux kernel's initial ramdisk.
    initrd: Option<std::path::PathBuf>,
    /// `on_poweroff = destroy`: gone from the list when it powers off, as under xl.
    destroy_on_poweroff: bool,
    cmdline: Option<String>,
}

impl GuestArg {
    fn parse(arg: &str) -> Result<GuestArg, String> {
        // cmdline= swallows the rest, so a kernel command line may itself hold commas.
        let (head, cmdline) = match arg.find(",cmdline=") {
            Some(i) => (&arg[..i], Some(arg[i + ",cmdline=".len()..].to_string())),
            None => (arg, None),
        };
        let mut parts = head.split(',');
        let path = std::path::PathBuf::from(parts.next().unwrap_or_default());
        let mut g =
            GuestArg { path, name: None, memory_mib: 32, vcpus: 1, initrd: None, destroy_on_poweroff: false, cmdline };
        for opt in parts {
            match opt.split_once('=') {
                Some(("memory", v)) => {
                    g.memory_mib = v.trim_end_matches("M").parse().ok().filter(|m| *m >= 1).ok_or_else(|| {
                        format!("--guest {arg}: memory={v} is not a number of MiB (for example memory=64)")
                    })?
                }
                Some(("vcpus", v)) => {
                    g.vcpus = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=64).contains(n))
                        .ok_or_else(|| format!("--guest {arg}: vcpus={v} is not a vCPU count from 1 to 64"))?
                }
                Some(("initrd", v)) if !v.is_empty() => g.initrd = Some(std::path::PathBuf::from(v)),
                _ => {
                    return Err(format!(
                        "--guest {arg}: unknown option {opt:?}; use --guest FILE[,memory=MiB][,vcpus=N][,initrd=FILE][,cmdline=TEXT]"
                    ));
                }
            }
        }
        if let Some(c) = &g.cmdline
            && (c.contains('"') || c.contains('\n'))
        {
            return Err(format!("--guest {arg}: the command line may not contain quotes or newlines"));
        }
        Ok(g)
    }
}

/// The DomUs given with `--guest FILE`: a bundle entry and a `[domain]` section each.
/// The kind comes from the file: a Linux bzImage ("HdrS" at 0x202), ELF64 (our 64-bit
/// protocol), ELF32 or a multiboot header in the first 8 KiB (multiboot 1), anything
/// else a flat real-mode binary loaded at 0x7C00 like a boot sector.
fn command_line_guests(o: &Opts) -> Result<(Vec<build::BuiltGuest>, String), String> {
    let mut guests = Vec::new();
    let mut config = String::new();
    for (i, arg) in o.guests.iter().enumerate() {
        let path = &arg.path;
        let data = std::fs::read(path).map_err(|e| format!("--guest {}: {e}", path.display()))?;
        let stem = arg.name.as_deref().or_else(|| path.file_stem().and_then(|s| s.to_str())).unwrap_or("guest");
        let mut name: String = stem
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
            .take(24)
            .collect();
        if guests.iter().any(|g: &build::BuiltGuest| g.name == name) || name.is_empty() {
            name = format!("{name}{i}");
        }
        let multiboot = data.windows(4).take(8192).step_by(4).any(|w| w == 0x1BAD_B002u32.to_le_bytes());
        let bzimage = data.get(0x202..0x206) == Some(&b"HdrS"[..]) && data.get(0x1FE..0x200) == Some(&[0x55, 0xAA][..]);
        let (kind, extra) = if bzimage {
            ("bzimage", "")
        } else if data.starts_with(b"\x7fELF") && data.get(4) == Some(&2) {
            ("elf64", "")
        } else if multiboot || (data.starts_with(b"\x7fELF") && data.get(4) == Some(&1)) {
            ("multiboot", "")
        } else {
            ("flat", "load_address = 0x7c00\nentry = 0x7c00\nmode = real16\n")
        };
        let (memory, vcpus) = (arg.memory_mib, arg.vcpus);
        config.push_str(&format!("\n[domain {name}]\nimage = \"{name}\"\nmemory = {memory}\nvcpus = {vcpus}\n{extra}"));
        if let Some(c) = &arg.cmdline {
            config.push_str(&format!("cmdline = \"{c}\"\n"));
        }
        if arg.destroy_on_poweroff {
            config.push_str("on_poweroff = destroy\n");
        }
        // `--until-guests-exit` ends the run when these have ended, whatever else the
        // configuration runs (Domain0 and its tickers never exit).
        if o.until_guests_exit {
            config.push_str("awaited = true\n");
        }
        if let Some(initrd) = &arg.initrd {
            if kind != "bzimage" {
                return Err(format!("--guest {}: initrd= is for Linux kernels (bzImage)", path.display()));
            }
            let rd = format!("{name}-initrd");
            config.push_str(&format!("initrd = \"{rd}\"\n"));
            guests.push(build::BuiltGuest { name: rd, kind: "data".to_string(), path: initrd.clone() });
        }
        guests.push(build::BuiltGuest { name, kind: kind.to_string(), path: path.clone() });
    }
    Ok((guests, config))
}

/// Builds the images. `in_emulator`: for `run`, whose emulator should end when the
/// machine powers off (Domain0's `poweroff`); images from `build` may go to real
/// hardware, where the emulators' exit ports belong to whatever decodes them.
fn cmd_build(o: &Opts, in_emulator: bool) -> Result<build::Images, String> {
    let kernel = build::kernel(profile(o))?;
    let boot = build::boot_tool()?;
    let mut guests = build::guests(profile(o))?;
    let (extra, domains) = command_line_guests(o)?;
    // A guest named like one of ours replaces it.
    guests.retain(|g| !extra.iter().any(|e| e.name == g.name));
    guests.extend(extra);
    let mut config = config_text(o.log_level.as_deref())?;
    if o.until_guests_exit {
        // Nobody types at Domain0's prompt in such a run: the guests' consoles go to the
        // terminal too.
        config = config.replacen(
            "[hypervisor]",
            "[hypervisor]\nuntil_guests_exit = true\nemulator_exit = true\nguest_output = log",
            1,
        );
    } else if in_emulator {
        config = config.replacen("[hypervisor]", "[hypervisor]\nemulator_exit = true", 1);
    }
    config.push_str(&domains);
    step("making the BIOS and UEFI disk images");
    let images = build::images(
        &boot,
        &kernel,
        &config,
        &guests,
        &build::image_dir(profile(o), "default"),
        build::Firmware { bios: true, uefi: true },
    )?;
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    println!("kernel: {} ({} KiB)", kernel.display(), size(&kernel) / 1024);
    println!("bios:   {} ({} KiB)", images.bios.display(), size(&images.bios) / 1024);
    println!("uefi:   {} ({} KiB)", images.uefi.display(), size(&images.uefi) / 1024);
    Ok(images)
}

fn cmd_run(o: &Opts) -> Result<ExitCode, String> {
    let engine = match o.emulator.as_str() {
        "qemu" => Engine::Qemu { kvm: deps::host_has_nested_vmx() },
        "bochs" => Engine::Bochs,
        _ if deps::host_has_nested_vmx() => Engine::Qemu { kvm: true },
        _ if o.uefi => {
            eprintln!("note: this host has no nested VT-x, and Bochs cannot boot UEFI: using QEMU without VMX");
            Engine::Qemu { kvm: false }
        }
        _ => Engine::Bochs,
    };
    match engine {
        Engine::Bochs => deps::ensure(&[deps::BOCHS])?,
        Engine::Qemu { .. } if o.uefi => deps::ensure(&[deps::QEMU, deps::OVMF])?,
        Engine::Qemu { .. } => deps::ensure(&[deps::QEMU])?,
    }
    if engine == (Engine::Qemu { kvm: false }) {
        eprintln!("note: QEMU without KVM emulates no VMX; the hypervisor will stop after its feature report");
    }
    let images = cmd_build(o, true)?;
    let machine = Machine {
        engine,
        firmware: if o.uefi { Firmware::Uefi } else { Firmware::Bios },
        cpus: o.cpus,
        memory_mib: o.memory,
        cpu_model: crate::emulator::BOCHS_CPU_MODEL,
        image: if o.uefi { images.uefi.clone() } else { images.bios.clone() },
        work_dir: workspace_root().join("target").join("run"),
    };
    step(&format!(
        "booting in {} with {} CPU(s) and {} MiB; serial console follows, keys go to COM1 (Ctrl-C ends)",
        engine.name(),
        o.cpus,
        o.memory
    ));
    // COM1 is a serial channel: its output lands in serial.log as with a plain file, and
    // what is typed here goes to the machine (the Domain0 shell's `dom0# ` prompt).
    let mut running = machine.launch_interactive()?;
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
            .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    }
    let stop_stream = Arc::new(AtomicBool::new(false));
    let streamer = emulator::stream_file(&machine.serial_log(), stop_stream.clone());
    let outcome = {
        // Keys go out as they are typed, unechoed (Domain0 echoes them), until this
        // scope ends: on every way out, as Ctrl-C only sets `interrupted`.
        let forward = emulator::stdin_is_ours();
        if !forward {
            eprintln!("xtask: running in the background of this terminal: keys are not forwarded to COM1");
        }
        let _keyboard = forward.then(emulator::KeyboardMode::enter);
        if let Some(input) = running.serial_input().filter(|_| forward) {
            // Not joined: it may be blocked reading stdin when the machine ends.
            emulator::forward_stdin(input);
        }
        running.wait(Duration::from_secs(u64::MAX / 4), |_| interrupted.load(Ordering::SeqCst))
    };
    stop_stream.store(true, Ordering::SeqCst);
    let _ = streamer.join();
    match outcome {
        Outcome::Stopped => {
            eprintln!("\nxtask: emulator ended by Ctrl-C (logs in {})", machine.work_dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Exited(_) if !o.until_guests_exit && running.serial().contains("machine halted: done") => {
            eprintln!("\nxtask: the machine powered off (logs in {})", machine.work_dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Exited(code) => {
            eprintln!(
                "\nxtask: {} exited ({}); its log: {}",
                engine.name(),
                code.map_or("signal".into(), |c| c.to_string()),
                machine.emulator_log().display()
            );
            if o.until_guests_exit {
                return Ok(guest_verdict(&running.serial(), o.guests.len()));
            }
            Ok(ExitCode::SUCCESS)
        }
        Outcome::TimedOut => Ok(ExitCode::FAILURE),
    }
}

/// Passed and failed test counts, summed over the `test result:` lines of cargo test.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

impl Tally {
    /// Runs `cmd` with its output passed through, counting results on the way.
    fn run(&mut self, cmd: &mut Command) -> Result<bool, String> {
        use std::io::{BufRead, BufReader, Write};
        let mut child =
            cmd.stdout(std::process::Stdio::piped()).spawn().map_err(|e| format!("cannot run cargo: {e}"))?;
        if let Some(out) = child.stdout.take() {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("test result: ") {
                    let count = |word: &str| {
                        rest.split(';').find_map(|part| {
                            part.trim().strip_suffix(word)?.trim().rsplit(' ').next()?.parse::<u64>().ok()
                        })
                    };
                    self.passed += count("passed").unwrap_or(0);
                    self.failed += count("failed").unwrap_or(0);
                }
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "{line}");
            }
        }
        Ok(child.wait().map_err(|e| e.to_string())?.success())
    }

    fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed, self.failed)
    }
}

/// With `--until-guests-exit`: success only if every domain that ended exited with
/// status 0 (the `--guest` ones are `awaited`, so the run ends with them).
fn guest_verdict(serial: &str, given: usize) -> ExitCode {
    let (good, bad) = guest_outcomes(serial);
    eprintln!("xtask: {good} domain(s) exited with status 0, {bad} failed or crashed");
    if bad == 0 && good > 0 && (given == 0 || good >= given) { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Domains that exited with status 0, and those that exited otherwise, crashed or were
/// not created, from the hypervisor's log.
fn guest_outcomes(serial: &str) -> (usize, usize) {
    let exited: Vec<&str> = serial.lines().filter(|l| l.contains(" exited status=")).collect();
    let crashed = serial.lines().filter(|l| l.contains(" crashed: ") || l.contains(": not created: ")).count();
    let failed = exited.iter().filter(|l| !l.trim_end().ends_with("status=0")).count();
    (exited.len() - failed, failed + crashed)
}

fn cmd_test(o: &Opts) -> Result<ExitCode, String> {
    let mut tally = Tally::default();
    let mut result = run_tests(o, &mut tally);
    if result.is_ok() && !o.no_fuzz {
        result = fuzz::test_step(o.fuzz_seconds, &mut tally).map(|()| ExitCode::SUCCESS);
    }
    // One plain closing line for people and CI: the sum over every test binary.
    println!("\nsummary: {}", tally.summary());
    result
}

fn run_tests(o: &Opts, tally: &mut Tally) -> Result<ExitCode, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    step("host unit tests (cargo test --workspace --exclude integration)");
    let mut unit = Command::new(&cargo);
    unit.current_dir(workspace_root()).args(["test", "--workspace", "--exclude", "integration"]);
    if !tally.run(&mut unit)? {
        return Err("host unit tests failed (see above)".into());
    }
    if o.no_integration {
        return Ok(ExitCode::SUCCESS);
    }
    deps::ensure(&[deps::BOCHS, deps::QEMU, deps::OVMF])?;
    // Integration tests boot the release build: it is what users boot, and Bochs runs it
    // several times faster than the debug build.
    let kernel = build::kernel(Profile::Release)?;
    let boot = build::boot_tool()?;
    let guests = build::guests(Profile::Release)?;
    let guest_dir = guests.first().and_then(|g| g.path.parent()).map(|p| p.to_path_buf()).unwrap_or_default();
    step("integration tests: booting the image in emulators (about a minute)");
    let mut it = Command::new(&cargo);
    it.current_dir(workspace_root())
        .args(["test", "--package", "integration", "--", "--test-threads=2", "--show-output"])
        .env("FERROVISOR_KERNEL", &kernel)
        .env("FERROVISOR_BOOT_TOOL", &boot)
        .env("FERROVISOR_GUESTS", &guest_dir);
    if let Some(f) = &o.filter {
        it.arg(f);
    }
    if !tally.run(&mut it)? {
        return Err("integration tests failed (see above)".into());
    }
    Ok(ExitCode::SUCCESS)
}

/// `--linux`: Debian's cloud kernel and the busybox initramfs as DomU `linux`, with the
/// machine memory it needs unless `--memory` was given.
fn add_linux(o: &mut Opts) -> Result<(), String> {
    let (kernel, initramfs) = xtask::foreign::linux()?;
    o.guests.push(GuestArg {
        path: kernel,
        name: Some("linux".into()),
        memory_mib: xtask::foreign::LINUX_MEMORY_MIB,
        vcpus: 2,
        initrd: Some(initramfs),
        destroy_on_poweroff: true,
        cmdline: Some(xtask::foreign::LINUX_CMDLINE.into()),
    });
    if !o.memory_given {
        o.memory = o.memory.max(512);
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    let mut opts = match parse(&args[1..]) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("xtask: {e}\n\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    if opts.linux
        && let Err(e) = add_linux(&mut opts)
    {
        eprintln!("xtask: error: {e}");
        return ExitCode::FAILURE;
    }
    let result = match command.as_str() {
        "build" => cmd_build(&opts, false).map(|_| ExitCode::SUCCESS),
        "run" => cmd_run(&opts),
        "test" => cmd_test(&opts),
        "fuzz" => {
            let mut tally = Tally::default();
            let result = fuzz::command(opts.filter.as_deref(), opts.fuzz_seconds, opts.replay, &mut tally);
            println!("\nsummary: {}", tally.summary());
            result.map(|()| ExitCode::SUCCESS)
        }
        "bench" => xtask::bench::run(&opts.emulator, opts.quick, opts.record).map(|_| ExitCode::SUCCESS),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => Err(format!("unknown command {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}
