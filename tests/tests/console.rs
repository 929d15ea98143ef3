//! Interactive: a test types into Domain0's shell over the serial channel (COM1) and
//! checks its answers.
//!
//! The hypervisor logs to COM1 too, and `calm` (hello64 `ticker`) reports every 5 s of
//! guest time, so other lines can come between a command and its answer: markers are
//! waited for in order, never as whole-log snapshots.

use integration::{Boot, Session};
use std::time::Duration;

/// Generous for Bochs (a boot takes 5-20 s of wall time), but bounded.
const T: Duration = Duration::from_secs(120);

const CONFIG: &str =
    "[dom0]\nimage = dom0\nmemory = 32\n[domain calm]\nimage = hello64\nmemory = 8\ncmdline = ticker\n";

/// Boots and waits for the shell's first prompt.
fn shell(name: &'static str) -> Session {
    let mut s = Boot::bochs(name, 1).with_config(CONFIG).interactive();
    s.expect("dom0: Ferrovisor Domain0 shell", T);
    s.expect("dom0# ", T);
    s
}

/// Types a command and waits for its echo (Domain0's line editor echoes what it reads).
fn command(s: &mut Session, line: &str) {
    s.type_line(line);
    s.expect(line, T);
}

#[test]
fn dom0_shell_answers_typed_commands() {
    let mut s = shell("console-shell");

    command(&mut s, "list");
    s.expect_line(&["Name", "ID", "Mem", "VCPUs", "State"], T);
    s.expect_line(&["Domain-0", " 0 ", " 32 "], T);
    s.expect_line(&["calm ", " 1 ", " 8 "], T);
    s.expect("dom0# ", T);

    command(&mut s, "sched-credit -d calm -w 512");
    s.expect("dom0# ", T);
    command(&mut s, "sched-credit");
    let row = s.expect_line(&["calm ", " 512 "], T);
    assert!(row.split_whitespace().any(|w| w == "512"), "calm's weight is not 512: {row:?}");
    s.expect("dom0# ", T);

    command(&mut s, "bogus");
    s.expect("error: unknown command 'bogus'", T);
    s.expect("dom0# ", T);

    command(&mut s, "poweroff");
    s.expect("Domain0 powered the machine off", T);
    s.expect("machine halted: done", T);
}

#[test]
fn dom0_console_shows_a_domain_until_ctrl_bracket() {
    let mut s = shell("console-attach");

    command(&mut s, "console 1");
    s.expect("[console 1: Ctrl-] to leave]", T);
    // The ring's history shows first, then new lines every 5 s of guest time. The
    // hypervisor logs the same text as `[calm] ticker: ...`; the console's copy starts a line.
    s.expect("\nticker: ", T);
    s.send_bytes(&[0x1D]);
    s.expect("[console left]", T);
    s.expect("dom0# ", T);

    command(&mut s, "poweroff");
    s.expect("machine halted: done", T);
}

/// With the product's default (`guest_output = quiet`), a DomU's console stays in that
/// domain's console: the prompt gets no ticker lines while a person waits at it, and
/// `console 1` shows them.
#[test]
fn a_domains_console_output_stays_off_the_prompt_and_in_its_console() {
    let mut s =
        Boot { guest_output_logged: false, ..Boot::bochs("console-quiet", 1) }.with_config(CONFIG).interactive();
    s.expect("dom0: Ferrovisor Domain0 shell", T);
    s.expect("dom0# ", T);
    // Two of the ticker's 5-second periods at the prompt.
    command(&mut s, "sleep 11");
    s.expect("dom0# ", T);
    let at_prompt = s.serial();
    assert!(!at_prompt.contains("[calm]"), "the ticker's lines reached the prompt:\n{at_prompt}");
    command(&mut s, "console 1");
    s.expect("[console 1: Ctrl-] to leave]", T);
    s.expect("\nticker: 5 s", T);
    s.send_bytes(&[0x1D]);
    s.expect("[console left]", T);
    command(&mut s, "poweroff");
    s.expect("machine halted: done", T);
}
