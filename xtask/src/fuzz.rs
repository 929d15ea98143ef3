//! `cargo xtask fuzz`, and the fuzzing step at the end of `cargo xtask test`: the
//! cargo-fuzz targets in fuzz/ (see docs/fuzzing.md).
//!
//! Three stages: replay the saved inputs (`fuzz/regressions/`, `fuzz/seeds/`) with plain
//! `cargo test` on the fuzz crate, build every target once, then run the targets for a
//! bounded time each, as many at once as the machine has cores. Each run's libFuzzer
//! output goes to `fuzz/target/logs/TARGET.log`; a crash input lands in
//! `fuzz/artifacts/TARGET/` and is reported with the log's end.

use crate::Tally;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use xtask::deps::{self, Need};
use xtask::{step, workspace_root};

/// Seconds each target runs when nothing else is asked for.
pub const DEFAULT_SECONDS: u64 = 60;

/// No instrumentation beyond coverage: the code under test is safe Rust, so AddressSanitizer
/// would only halve the speed. Debug assertions (overflow checks) stay on, cargo-fuzz's
/// default. `build` and `run` must agree, or `run` rebuilds.
const FUZZ_FLAGS: &[&str] = &["--sanitizer", "none"];

const CXX: &[Need] = &[Need { path_or_program: "c++", package: "g++" }];

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn fuzz_dir() -> PathBuf {
    workspace_root().join("fuzz")
}

/// The target names: the `[[bin]]` names of fuzz/Cargo.toml, in file order.
pub fn targets() -> Result<Vec<String>, String> {
    let manifest = fuzz_dir().join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(v) = line.strip_prefix("name") {
            names.push(v.trim_start().trim_start_matches('=').trim().trim_matches('"').to_string());
        }
    }
    Ok(names)
}

/// Makes sure `cargo fuzz` works: installs cargo-fuzz with `cargo install --locked` when it
/// is missing (libFuzzer also needs a C++ compiler, installed like the emulators).
fn ensure_cargo_fuzz() -> Result<(), String> {
    deps::ensure(&[CXX]).map_err(|e| format!("{e}\n  (libFuzzer is compiled from C++ sources)"))?;
    let works = |c: &mut Command| c.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if works(Command::new(cargo()).args(["fuzz", "--version"])) {
        return Ok(());
    }
    step("installing cargo-fuzz (cargo install cargo-fuzz --locked), once");
    let status = Command::new(cargo())
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .map_err(|e| format!("cannot run cargo install: {e}"))?;
    if !status.success() || !works(Command::new(cargo()).args(["fuzz", "--version"])) {
        return Err("cargo-fuzz is missing and could not be installed; install it with \
                    `cargo install cargo-fuzz --locked` and try again"
            .into());
    }
    Ok(())
}

/// Replays every saved input through its target (fuzz/tests/regressions.rs).
pub fn replay(tally: &mut Tally) -> Result<(), String> {
    step("fuzz: replaying saved inputs (fuzz/regressions, fuzz/seeds) with cargo test");
    let mut test = Command::new(cargo());
    test.current_dir(workspace_root()).args(["test", "--manifest-path", "fuzz/Cargo.toml"]);
    if !tally.run(&mut test)? {
        return Err("a saved fuzz input fails (see above)".into());
    }
    Ok(())
}

/// How one target's run ended.
struct Outcome {
    name: String,
    ok: bool,
    line: String,
}

fn run_one(name: &str, seconds: u64, log_dir: &Path) -> Outcome {
    let fuzz = fuzz_dir();
    let corpus = fuzz.join("corpus").join(name);
    let _ = std::fs::create_dir_all(&corpus);
    let log = log_dir.join(format!("{name}.log"));
    let Ok(file) = std::fs::File::create(&log) else {
        return Outcome { name: name.into(), ok: false, line: format!("cannot create {}", log.display()) };
    };
    let Ok(file2) = file.try_clone() else {
        return Outcome { name: name.into(), ok: false, line: "cannot duplicate the log handle".into() };
    };
    // New inputs go to corpus/NAME (ignored by git); seeds/NAME is read only.
    let status = Command::new(cargo())
        .current_dir(workspace_root())
        .args(["fuzz", "run"])
        .args(FUZZ_FLAGS)
        .arg(name)
        .arg(&corpus)
        .arg(fuzz.join("seeds").join(name))
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        // A fixed seed: a run from the same corpus mutates the same way, so a crash found
        // in CI can be repeated. New ground comes from the corpus under fuzz/corpus,
        // which keeps growing on a developer's machine.
        .arg("-seed=1")
        .arg("-timeout=10")
        .arg("-print_final_stats=1")
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file2)
        .status();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let stats = text.lines().rev().find(|l| l.starts_with('#') && l.contains("cov:")).unwrap_or("");
    let runs = stats.split_whitespace().next().unwrap_or("#0").trim_start_matches('#');
    let cov = stats.split("cov: ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap_or("?");
    match status {
        Ok(s) if s.success() => {
            Outcome { name: name.into(), ok: true, line: format!("{runs} runs, coverage {cov}, no crash") }
        }
        other => {
            // The panic message (with a few lines of context) and the crash file; the
            // whole output is in the log.
            let lines: Vec<&str> = text.lines().collect();
            let panic = lines.iter().position(|l| l.contains("panicked at") || l.contains("ERROR: libFuzzer"));
            let mut tail: Vec<&str> = match panic {
                Some(i) => lines.iter().skip(i).take(8).copied().collect(),
                None => lines.iter().rev().take(20).rev().copied().collect(),
            };
            tail.extend(lines.iter().filter(|l| l.contains("Test unit written to")).copied());
            let why = match other {
                Ok(s) => s.to_string(),
                Err(e) => format!("cannot run cargo fuzz: {e}"),
            };
            Outcome {
                name: name.into(),
                ok: false,
                line: format!(
                    "FAILED ({why}) after {runs} runs; the end of {}:\n{}\n  \
                     The crash input is in fuzz/artifacts/{name}/: reproduce it with `cargo fuzz run {} {name} FILE`,\n  \
                     then move it to fuzz/regressions/{name}/ (a test replays it) and fix the bug.",
                    log.display(),
                    tail.join("\n"),
                    FUZZ_FLAGS.join(" "),
                ),
            }
        }
    }
}

/// Builds the targets once, then runs `names` for `seconds` each, as many at once as
/// there are cores. Counts each target as a passed or failed test in `tally`.
pub fn run(names: &[String], seconds: u64, tally: &mut Tally) -> Result<(), String> {
    ensure_cargo_fuzz()?;
    step("fuzz: building the targets (cargo fuzz build --sanitizer none)");
    let built = Command::new(cargo())
        .current_dir(workspace_root())
        .args(["fuzz", "build"])
        .args(FUZZ_FLAGS)
        .status()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    if !built.success() {
        return Err("cargo fuzz build failed (see above)".into());
    }
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get()).min(names.len()).max(1);
    let rounds = names.len().div_ceil(jobs) as u64;
    step(&format!(
        "fuzz: {} target(s), {seconds} s each, {jobs} at a time (about {} min); logs in fuzz/target/logs",
        names.len(),
        (rounds * seconds).div_ceil(60)
    ));
    let log_dir = fuzz_dir().join("target").join("logs");
    std::fs::create_dir_all(&log_dir).map_err(|e| format!("cannot create {}: {e}", log_dir.display()))?;
    let queue = Mutex::new(names.iter());
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                while let Some(name) = queue.lock().ok().and_then(|mut q| q.next()) {
                    let outcome = run_one(name, seconds, &log_dir);
                    let mark = if outcome.ok { "ok" } else { "FAILED" };
                    eprintln!("fuzz {} ... {mark}", outcome.name);
                    if let Ok(mut o) = outcomes.lock() {
                        o.push(outcome);
                    }
                }
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap_or_default();
    outcomes.sort_by_key(|o| names.iter().position(|n| *n == o.name));
    let mut failed = Vec::new();
    for o in &outcomes {
        println!("fuzz {:<14} {}", o.name, o.line);
        if o.ok {
            tally.passed += 1;
        } else {
            tally.failed += 1;
            failed.push(o.name.as_str());
        }
    }
    if failed.is_empty() { Ok(()) } else { Err(format!("fuzz target(s) crashed: {}", failed.join(", "))) }
}

/// `cargo xtask fuzz [--seconds N] [--replay] [TARGET]`.
pub fn command(target: Option<&str>, seconds: Option<u64>, replay_only: bool, tally: &mut Tally) -> Result<(), String> {
    let all = targets()?;
    let names: Vec<String> = match target {
        Some(t) if all.iter().any(|n| n == t) => vec![t.to_string()],
        Some(t) => return Err(format!("no fuzz target {t:?}; the targets are: {}", all.join(", "))),
        None => all,
    };
    replay(tally)?;
    if replay_only {
        return Ok(());
    }
    run(&names, seconds.unwrap_or(DEFAULT_SECONDS), tally)
}

/// The last step of `cargo xtask test`: replay, then every target for `seconds`.
pub fn test_step(seconds: Option<u64>, tally: &mut Tally) -> Result<(), String> {
    command(None, seconds, false, tally)
}
