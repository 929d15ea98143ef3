//! The boot configuration: `hypervisor.cfg`, a text entry of the boot bundle.
//!
//! ```text
//! # comment
//! [hypervisor]
//! log_level = "info"          # error | warn | info | debug | trace
//! serial_baud = 115200        # 9600 | 19200 | 38400 | 57600 | 115200
//! emulator_exit = false       # also end Bochs/QEMU when the hypervisor stops
//! fault = none                # a deliberate exception, for testing the report
//! ```
//!
//! Lines are `[section]`, `key = value`, blank, or `# comment` (a `#` outside double
//! quotes starts a comment anywhere). Values are bare words or double-quoted strings
//! without escapes; the quotes are dropped before the value is read, so `"info"` and
//! `info` mean the same. Line endings may be LF or CRLF.
//!
//! Parsed without allocating (the hypervisor reads it before its heap is large), and
//! strictly: an unknown key or section is an error naming the line, so a typo never
//! silently changes nothing. `boot` parses the file before building the image, so
//! mistakes are caught on the developer's machine. Errors borrow the offending text
//! from the input instead of copying it.

use core::fmt;

/// How much the hypervisor logs; ordered from least to most verbose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub const ALL: [LogLevel; 5] = [Self::Error, Self::Warn, Self::Info, Self::Debug, Self::Trace];

    /// The name used in the configuration.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }

    /// The level called `name` in the configuration.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == name)
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A deliberate exception the hypervisor raises at the end of bring-up, so tests can
/// check the exception report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    DivideError,
    Breakpoint,
    InvalidOpcode,
    GeneralProtection,
    PageFault,
    DoubleFault,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        Self::DivideError,
        Self::Breakpoint,
        Self::InvalidOpcode,
        Self::GeneralProtection,
        Self::PageFault,
        Self::DoubleFault,
    ];

    /// The name used in the configuration.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::DivideError => "divide-error",
            Self::Breakpoint => "breakpoint",
            Self::InvalidOpcode => "invalid-opcode",
            Self::GeneralProtection => "general-protection",
            Self::PageFault => "page-fault",
            Self::DoubleFault => "double-fault",
        }
    }

    /// The fault called `name` in the configuration.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `[hypervisor]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HypervisorConfig {
    pub log_level: LogLevel,
    /// A fault to raise deliberately after bring-up; `None` in normal use.
    pub fault: Option<FaultKind>,
    /// When the hypervisor stops, also write to the Bochs/QEMU debug-exit ports so the
    /// emulator ends (for automated tests).
    pub emulator_exit: bool,
    pub serial_baud: u32,
}

impl Default for HypervisorConfig {
    fn default() -> Self {
        Self { log_level: LogLevel::Info, fault: None, emulator_exit: false, serial_baud: 115_200 }
    }
}

/// The keys of `[hypervisor]`, in the order error messages list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    LogLevel,
    Fault,
    EmulatorExit,
    SerialBaud,
}

impl Key {
    const ALL: [Key; 4] = [Self::LogLevel, Self::Fault, Self::EmulatorExit, Self::SerialBaud];

    const fn as_str(self) -> &'static str {
        match self {
            Self::LogLevel => "log_level",
            Self::Fault => "fault",
            Self::EmulatorExit => "emulator_exit",
            Self::SerialBaud => "serial_baud",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// Shows [`Key::ALL`] as `log_level, fault, ...`, so the list in messages cannot go
/// stale when a key is added.
struct KnownKeys;

impl fmt::Display for KnownKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, key) in Key::ALL.into_iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(key.as_str())?;
        }
        Ok(())
    }
}

const LOG_LEVELS: &str = "error, warn, info, debug or trace";
const FAULTS: &str = "none, divide-error, breakpoint, invalid-opcode, general-protection, page-fault or double-fault";
const BOOLS: &str = "true or false";
const BAUD_RATES: &str = "9600, 19200, 38400, 57600 or 115200";
const QUOTING: &str = "a bare word or a string in double quotes (\"...\") with no quote inside";

/// A mistake in the configuration. `line` is 1-based; the `&str`s borrow the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError<'a> {
    /// Neither `[section]`, `key = value`, a comment nor blank.
    Syntax {
        line: usize,
    },
    /// A `key = value` before the first section header.
    KeyOutsideSection {
        line: usize,
        key: &'a str,
    },
    UnknownSection {
        line: usize,
        name: &'a str,
    },
    /// A section this build recognises but cannot run yet (`[domain NAME]`).
    UnsupportedSection {
        line: usize,
        name: &'a str,
    },
    /// A section header that appeared before, on `first_line`.
    DuplicateSection {
        line: usize,
        name: &'a str,
        first_line: usize,
    },
    UnknownKey {
        line: usize,
        key: &'a str,
    },
    /// A key set before, on `first_line`.
    DuplicateKey {
        line: usize,
        key: &'a str,
        first_line: usize,
    },
    /// `value` is the value as written (quotes included); `expected` lists what the
    /// key accepts.
    BadValue {
        line: usize,
        key: &'a str,
        value: &'a str,
        expected: &'static str,
    },
}

impl fmt::Display for ConfigError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Syntax { line } => write!(
                f,
                "hypervisor.cfg line {line}: cannot read this line; expected `[section]`, `key = value` or a `# comment`"
            ),
            Self::KeyOutsideSection { line, key } => write!(
                f,
                "hypervisor.cfg line {line}: {key:?} is set before any section; put it under a [hypervisor] line"
            ),
            Self::UnknownSection { line, name } => {
                write!(f, "hypervisor.cfg line {line}: unknown section [{name}]; the known section is [hypervisor]")
            }
            Self::UnsupportedSection { line, name } => write!(
                f,
                "hypervisor.cfg line {line}: [{name}] declares a domain, but domains are not supported by this build \
                 yet; remove the section"
            ),
            Self::DuplicateSection { line, name, first_line } => write!(
                f,
                "hypervisor.cfg line {line}: [{name}] appears again (first on line {first_line}); merge the two sections"
            ),
            Self::UnknownKey { line, key } => {
                write!(f, "hypervisor.cfg line {line}: unknown key {key:?} in [hypervisor]; known keys: {KnownKeys}")
            }
            Self::DuplicateKey { line, key, first_line } => write!(
                f,
                "hypervisor.cfg line {line}: {key:?} is set again (first on line {first_line}); keep one of the two"
            ),
            Self::BadValue { line, key, value, expected } => {
                write!(f, "hypervisor.cfg line {line}: {key} = {value} is not valid; expected {expected}")
            }
        }
    }
}

impl core::error::Error for ConfigError<'_> {}

/// What a `[...]` line opens.
enum Section<'a> {
    Hypervisor,
    /// `[domain NAME]`, reserved for the domain configuration of later builds.
    Domain,
    Unknown(&'a str),
}

impl<'a> Section<'a> {
    /// Classifies the text between the brackets (already trimmed).
    fn from_header(name: &'a str) -> Self {
        if name == "hypervisor" {
            return Self::Hypervisor;
        }
        // `domain` alone or followed by whitespace and a name; `domains` is not one.
        match name.strip_prefix("domain") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => Self::Domain,
            _ => Self::Unknown(name),
        }
    }
}

/// Removes a trailing `# comment` that is not inside double quotes.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return line.get(..i).unwrap_or(line),
            _ => {}
        }
    }
    line
}

/// The value without its double quotes; `None` for a stray or unbalanced quote.
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"').filter(|inner| !inner.contains('"')),
        None => (!value.contains('"')).then_some(value),
    }
}

/// Parses the whole file. Keys that are not set keep their [`Default`] values.
pub fn parse(text: &str) -> Result<HypervisorConfig, ConfigError<'_>> {
    let mut config = HypervisorConfig::default();
    // The line that opened [hypervisor], and the line each key was set on: both for
    // refusing repeats with a pointer to the first one.
    let mut section_line: Option<usize> = None;
    let mut key_lines: [Option<usize>; Key::ALL.len()] = [None; Key::ALL.len()];
    // `lines` splits on LF and drops a CR before it, so CRLF files read the same.
    for (line, raw) in (1..).zip(text.lines()) {
        let content = strip_comment(raw).trim();
        if content.is_empty() {
            continue;
        }
        if let Some(header) = content.strip_prefix('[') {
            let name = header.strip_suffix(']').ok_or(ConfigError::Syntax { line })?.trim();
            match Section::from_header(name) {
                Section::Hypervisor => {
                    if let Some(first_line) = section_line {
                        return Err(ConfigError::DuplicateSection { line, name, first_line });
                    }
                    section_line = Some(line);
                }
                Section::Domain => return Err(ConfigError::UnsupportedSection { line, name }),
                Section::Unknown(name) => return Err(ConfigError::UnknownSection { line, name }),
            }
            continue;
        }

        let (key, value) = content.split_once('=').ok_or(ConfigError::Syntax { line })?;
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(ConfigError::Syntax { line });
        }
        if section_line.is_none() {
            return Err(ConfigError::KeyOutsideSection { line, key });
        }
        let known = Key::from_name(key).ok_or(ConfigError::UnknownKey { line, key })?;
        // `known` comes from `Key::ALL`, so the slot always exists.
        if let Some(seen) = key_lines.get_mut(known as usize) {
            if let Some(first_line) = *seen {
                return Err(ConfigError::DuplicateKey { line, key, first_line });
            }
            *seen = Some(line);
        }

        let bad = |expected| ConfigError::BadValue { line, key, value, expected };
        let v = unquote(value).ok_or(bad(QUOTING))?;
        match known {
            Key::LogLevel => config.log_level = LogLevel::from_name(v).ok_or(bad(LOG_LEVELS))?,
            Key::Fault => {
                config.fault = match v {
                    "none" => None,
                    _ => Some(FaultKind::from_name(v).ok_or(bad(FAULTS))?),
                }
            }
            Key::EmulatorExit => {
                config.emulator_exit = match v {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad(BOOLS)),
                }
            }
            // Matched as text rather than parsed as a number, so spellings such as
            // `+9600` or `09600` are refused instead of being read as a rate.
            Key::SerialBaud => {
                config.serial_baud = match v {
                    "9600" => 9600,
                    "19200" => 19_200,
                    "38400" => 38_400,
                    "57600" => 57_600,
                    "115200" => 115_200,
                    _ => return Err(bad(BAUD_RATES)),
                }
            }
        }
    }
    Ok(config)
}

// The tests build their inputs with `format!`, so they need std.
#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    #[test]
    fn empty_input_gives_the_defaults() {
        let defaults =
            HypervisorConfig { log_level: LogLevel::Info, fault: None, emulator_exit: false, serial_baud: 115_200 };
        assert_eq!(HypervisorConfig::default(), defaults);
        assert_eq!(parse("").unwrap(), defaults);
        assert_eq!(parse("# only a comment\n\n[hypervisor]\n").unwrap(), defaults);
    }

    #[test]
    fn every_key_is_read() {
        let c =
            parse("[hypervisor]\nlog_level = debug\nserial_baud = 9600\nemulator_exit = true\nfault = page-fault\n")
                .unwrap();
        assert_eq!(
            c,
            HypervisorConfig {
                log_level: LogLevel::Debug,
                fault: Some(FaultKind::PageFault),
                emulator_exit: true,
                serial_baud: 9600
            }
        );
    }

    #[test]
    fn every_log_level_is_read() {
        for level in LogLevel::ALL {
            let text = format!("[hypervisor]\nlog_level = {level}\n");
            assert_eq!(parse(&text).unwrap().log_level, level);
        }
    }

    #[test]
    fn every_fault_name_is_read_and_none_means_no_fault() {
        for fault in FaultKind::ALL {
            let text = format!("[hypervisor]\nfault = {}\n", fault.as_str());
            assert_eq!(parse(&text).unwrap().fault, Some(fault));
        }
        assert_eq!(parse("[hypervisor]\nfault = none\n").unwrap().fault, None);
    }

    #[test]
    fn every_supported_baud_rate_is_read() {
        for baud in [9600, 19_200, 38_400, 57_600, 115_200] {
            let text = format!("[hypervisor]\nserial_baud = {baud}\n");
            assert_eq!(parse(&text).unwrap().serial_baud, baud);
        }
    }

    #[test]
    fn both_booleans_are_read() {
        assert!(parse("[hypervisor]\nemulator_exit = true\n").unwrap().emulator_exit);
        assert!(!parse("[hypervisor]\nemulator_exit = false\n").unwrap().emulator_exit);
    }

    #[test]
    fn comments_whitespace_and_quotes_are_accepted() {
        let text = "  [ hypervisor ]  # main\n\tlog_level=\"trace\"   # loud\n# fault = page-fault\nfault = \"none\"\n";
        let c = parse(text).unwrap();
        assert_eq!((c.log_level, c.fault), (LogLevel::Trace, None));
    }

    #[test]
    fn crlf_line_endings_are_accepted() {
        let c = parse("[hypervisor]\r\nlog_level = warn\r\nserial_baud = 38400\r\n").unwrap();
        assert_eq!((c.log_level, c.serial_baud), (LogLevel::Warn, 38_400));
        // Line numbers count CRLF lines the same as LF lines.
        assert_eq!(
            parse("[hypervisor]\r\n\r\nlog_lvl = info\r\n").unwrap_err(),
            ConfigError::UnknownKey { line: 3, key: "log_lvl" }
        );
    }

    #[test]
    fn the_shipped_configuration_parses() {
        let c = parse("[hypervisor]\n# error | warn | info | debug | trace\nlog_level = \"info\"\n").unwrap();
        assert_eq!(c, HypervisorConfig::default());
    }

    #[test]
    fn an_unknown_key_names_its_line_and_the_known_keys() {
        let err = parse("[hypervisor]\n\nlog_lvl = info\n").unwrap_err();
        assert_eq!(err, ConfigError::UnknownKey { line: 3, key: "log_lvl" });
        assert_eq!(
            err.to_string(),
            "hypervisor.cfg line 3: unknown key \"log_lvl\" in [hypervisor]; known keys: log_level, fault, \
             emulator_exit, serial_baud"
        );
    }

    #[test]
    fn bad_values_say_what_is_expected() {
        let cases = [
            ("log_level = loud", "log_level", "loud", LOG_LEVELS),
            ("fault = segfault", "fault", "segfault", FAULTS),
            ("emulator_exit = yes", "emulator_exit", "yes", BOOLS),
            ("serial_baud = 1234", "serial_baud", "1234", BAUD_RATES),
            ("serial_baud = +9600", "serial_baud", "+9600", BAUD_RATES),
            ("log_level =", "log_level", "", LOG_LEVELS),
            ("log_level = \"info", "log_level", "\"info", QUOTING),
            ("log_level = in\"fo", "log_level", "in\"fo", QUOTING),
        ];
        for (line_text, key, value, expected) in cases {
            let text = format!("[hypervisor]\n{line_text}\n");
            assert_eq!(
                parse(&text).unwrap_err(),
                ConfigError::BadValue { line: 2, key, value, expected },
                "{line_text}"
            );
        }
        assert_eq!(
            parse("[hypervisor]\nlog_level = loud\n").unwrap_err().to_string(),
            "hypervisor.cfg line 2: log_level = loud is not valid; expected error, warn, info, debug or trace"
        );
    }

    #[test]
    fn a_hash_inside_quotes_is_not_a_comment() {
        assert_eq!(
            parse("[hypervisor]\nlog_level = \"in#fo\"\n").unwrap_err(),
            ConfigError::BadValue { line: 2, key: "log_level", value: "\"in#fo\"", expected: LOG_LEVELS }
        );
    }

    #[test]
    fn a_key_before_any_section_is_refused() {
        assert_eq!(
            parse("# settings\nlog_level = info\n").unwrap_err(),
            ConfigError::KeyOutsideSection { line: 2, key: "log_level" }
        );
    }

    #[test]
    fn lines_that_are_neither_sections_nor_keys_are_syntax_errors() {
        assert_eq!(parse("[hypervisor]\njust words\n").unwrap_err(), ConfigError::Syntax { line: 2 });
        assert_eq!(parse("\n[hypervisor\n").unwrap_err(), ConfigError::Syntax { line: 2 });
        assert_eq!(parse("[hypervisor]\nlog level = info\n").unwrap_err(), ConfigError::Syntax { line: 2 });
        assert_eq!(parse("[hypervisor]\n = info\n").unwrap_err(), ConfigError::Syntax { line: 2 });
    }

    #[test]
    fn an_unknown_section_is_refused() {
        assert_eq!(parse("\n[network]\n").unwrap_err(), ConfigError::UnknownSection { line: 2, name: "network" });
        assert_eq!(parse("[domains]\n").unwrap_err(), ConfigError::UnknownSection { line: 1, name: "domains" });
    }

    #[test]
    fn a_domain_section_is_recognised_but_not_supported_yet() {
        let err = parse("[hypervisor]\n\n[domain web]\nkernel = web.elf\n").unwrap_err();
        assert_eq!(err, ConfigError::UnsupportedSection { line: 3, name: "domain web" });
        assert!(err.to_string().contains("domains are not supported by this build yet"));
        assert_eq!(parse("[domain]\n").unwrap_err(), ConfigError::UnsupportedSection { line: 1, name: "domain" });
    }

    #[test]
    fn a_key_set_twice_is_refused_naming_both_lines() {
        let err = parse("[hypervisor]\nlog_level = info\n\nlog_level = warn\n").unwrap_err();
        assert_eq!(err, ConfigError::DuplicateKey { line: 4, key: "log_level", first_line: 2 });
        assert_eq!(
            err.to_string(),
            "hypervisor.cfg line 4: \"log_level\" is set again (first on line 2); keep one of the two"
        );
    }

    #[test]
    fn a_section_opened_twice_is_refused() {
        assert_eq!(
            parse("[hypervisor]\nfault = none\n[hypervisor]\n").unwrap_err(),
            ConfigError::DuplicateSection { line: 3, name: "hypervisor", first_line: 1 }
        );
    }

    #[test]
    fn names_round_trip_through_as_str() {
        for level in LogLevel::ALL {
            assert_eq!(LogLevel::from_name(level.as_str()), Some(level));
        }
        for fault in FaultKind::ALL {
            assert_eq!(FaultKind::from_name(fault.as_str()), Some(fault));
        }
        assert_eq!(LogLevel::from_name("INFO"), None);
    }
}
