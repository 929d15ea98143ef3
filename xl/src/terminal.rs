//! The serial terminal's logic, without the serial port: line editing for the prompt and
//! newline translation for a domain's console output.

/// Longest command line the prompt accepts.
pub const MAX_LINE: usize = 256;

const BACKSPACE: u8 = 0x08;
const DELETE: u8 = 0x7F;
const CTRL_C: u8 = 0x03;

/// What the terminal must show for one typed byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    /// Nothing (an unprintable byte, a full line, the `\n` of `\r\n`).
    Nothing,
    /// Echo this byte.
    Echo(u8),
    /// Erase the last character on screen (`\x08 \x08`).
    Erase,
    /// Enter: the line is complete; take it with [`LineEditor::line`], then [`LineEditor::clear`].
    Submit,
    /// Ctrl-C: the line was discarded; show `^C` and a new prompt.
    Cancel,
}

/// A one-line editor: printable ASCII, backspace, Enter, Ctrl-C.
pub struct LineEditor {
    bytes: [u8; MAX_LINE],
    len: usize,
    /// The previous byte was `\r`: a `\n` right after it belongs to the same Enter.
    after_cr: bool,
}

impl Default for LineEditor {
    fn default() -> Self {
        Self::new()
    }
}

impl LineEditor {
    pub const fn new() -> Self {
        LineEditor { bytes: [0; MAX_LINE], len: 0, after_cr: false }
    }

    pub fn feed(&mut self, byte: u8) -> Edit {
        let after_cr = core::mem::replace(&mut self.after_cr, byte == b'\r');
        match byte {
            b'\n' if after_cr => Edit::Nothing,
            b'\r' | b'\n' => Edit::Submit,
            BACKSPACE | DELETE if self.len > 0 => {
                self.len -= 1;
                Edit::Erase
            }
            CTRL_C => {
                self.len = 0;
                Edit::Cancel
            }
            b' '..=b'~' if self.len < MAX_LINE => {
                self.bytes[self.len] = byte;
                self.len += 1;
                Edit::Echo(byte)
            }
            _ => Edit::Nothing,
        }
    }

    /// The line typed so far.
    pub fn line(&self) -> &str {
        // Only printable ASCII is ever stored.
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// Turns lone `\n` into `\r\n` for a serial terminal, leaving `\r\n` as it is.
#[derive(Debug, Default)]
pub struct CrLf {
    after_cr: bool,
}

impl CrLf {
    pub const fn new() -> Self {
        CrLf { after_cr: false }
    }

    /// Passes `byte` on to `emit`, preceded by `\r` where a lone `\n` needs one.
    pub fn push(&mut self, byte: u8, mut emit: impl FnMut(u8)) {
        if byte == b'\n' && !self.after_cr {
            emit(b'\r');
        }
        self.after_cr = byte == b'\r';
        emit(byte);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn type_in(e: &mut LineEditor, bytes: &[u8]) -> Vec<Edit> {
        bytes.iter().map(|&b| e.feed(b)).collect()
    }

    #[test]
    fn printable_bytes_echo_and_enter_submits() {
        let mut e = LineEditor::new();
        assert_eq!(type_in(&mut e, b"ls"), [Edit::Echo(b'l'), Edit::Echo(b's')]);
        assert_eq!(e.feed(b'\r'), Edit::Submit);
        assert_eq!(e.line(), "ls");
        e.clear();
        assert_eq!(e.feed(b'\n'), Edit::Nothing, "the \\n of \\r\\n is part of the same Enter");
        assert_eq!(e.feed(b'\n'), Edit::Submit, "a second \\n is an empty line");
        assert_eq!(e.line(), "");
    }

    #[test]
    fn backspace_and_delete_erase_and_stop_at_the_start() {
        let mut e = LineEditor::new();
        assert_eq!(
            type_in(&mut e, b"ab\x08\x7f\x08x"),
            [Edit::Echo(b'a'), Edit::Echo(b'b'), Edit::Erase, Edit::Erase, Edit::Nothing, Edit::Echo(b'x')]
        );
        assert_eq!(e.line(), "x");
    }

    #[test]
    fn ctrl_c_discards_the_line_and_control_bytes_are_ignored() {
        let mut e = LineEditor::new();
        type_in(&mut e, b"destroy 1");
        assert_eq!(e.feed(0x03), Edit::Cancel);
        assert_eq!(e.line(), "");
        assert_eq!(type_in(&mut e, b"\x1b\x00\t\xff"), [Edit::Nothing; 4]);
        assert_eq!(e.line(), "");
    }

    #[test]
    fn the_line_stops_growing_at_its_limit() {
        let mut e = LineEditor::new();
        for _ in 0..MAX_LINE {
            assert_eq!(e.feed(b'a'), Edit::Echo(b'a'));
        }
        assert_eq!(e.feed(b'b'), Edit::Nothing);
        assert_eq!(e.line().len(), MAX_LINE);
    }

    #[test]
    fn lone_newlines_get_a_carriage_return() {
        let mut c = CrLf::new();
        let mut out = Vec::new();
        for &b in b"a\nb\r\nc\n\n" {
            c.push(b, |x| out.push(x));
        }
        assert_eq!(out, b"a\r\nb\r\nc\r\n\r\n");
    }
}
