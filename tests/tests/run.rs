//! `cargo xtask run` as a new user runs it: the commands the README gives, with the
//! default configuration (Domain0 and two tickers that never exit).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cargo xtask ARGS` in its own process group; on timeout the group gets SIGINT,
/// which `cargo xtask run` answers by ending its emulator (as `timeout -s INT` would).
fn xtask(args: &[&str], timeout: Duration) -> (Option<i32>, String, String) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(cargo)
        .current_dir(xtask::workspace_root())
        .args(["run", "-q", "-p", "xtask", "--"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("starting cargo xtask");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for cargo xtask") {
            break status;
        }
        if start.elapsed() > timeout {
            // SAFETY: kill(2) on the process group of our own child; no memory involved.
            unsafe { libc_kill(-(child.id() as i32), 2) };
            break child.wait().expect("waiting for cargo xtask after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    (status.code(), out_reader.join().unwrap_or_default(), err_reader.join().unwrap_or_default())
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

/// `cargo xtask run --guest FILE --until-guests-exit` with the default configuration:
/// the run ends when the given guest has ended and reports its status, although
/// Domain0 and the tickers are still running.
#[test]
fn run_with_a_guest_ends_when_that_guest_ends_whatever_else_runs() {
    let hello = integration::guest_image("hello64");
    let guest = hello.to_str().expect("a UTF-8 path");
    let (code, out, err) = xtask(
        &["run", "--release", "--emulator", "bochs", "--cpus", "1", "--guest", guest, "--until-guests-exit"],
        Duration::from_secs(300),
    );
    let tail = |s: &str| s.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    assert_eq!(code, Some(0), "cargo xtask run failed\n--- stdout ---\n{}\n--- stderr ---\n{}", tail(&out), tail(&err));
    for marker in ["domain hello64 exited status=0", "domain ticker-a (id", "machine halted: done"] {
        assert!(out.contains(marker), "{marker:?} not in the run's output:\n{}", tail(&out));
    }
    assert!(
        err.contains("xtask: 1 domain(s) exited with status 0, 0 failed or crashed"),
        "no verdict for the guest:\n{}",
        tail(&err)
    );
}
