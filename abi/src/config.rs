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
//! Parsed without allocating (the hypervisor reads it before its heap is large), and
//! strictly: an unknown key or section is an error naming the line, so a typo never
//! silently changes nothing. `boot` parses the file before building the image, so
//! mistakes are caught on the developer's machine.

use core::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "error" => Self::Error,
            "warn" => Self::Warn,
            "info" => Self::Info,
            "debug" => Self::Debug,
            "trace" => Self::Trace,
            _ => return None,
        })
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
}

/// The `[hypervisor]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HypervisorConfig {
    pub log_level: LogLevel,
    pub fault: Option<FaultKind>,
    pub emulator_exit: bool,
    pub serial_baud: u32,
}

impl Default for HypervisorConfig {
    fn default() -> Self {
        Self { log_level: LogLevel::Info, fault: None, emulator_exit: false, serial_baud: 115_200 }
    }
}

pub const KNOWN_KEYS: &str = "log_level, serial_baud, emulator_exit, fault";

/// A mistake in the configuration, with its 1-based line number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError<'a> {
    Syntax { line: usize },
    KeyOutsideSection { line: usize },
    UnknownSection { line: usize, name: &'a str },
    UnsupportedSection { line: usize, name: &'a str },
    UnknownKey { line: usize, key: &'a str },
    DuplicateKey { line: usize, key: &'a str },
    BadValue { line: usize, key: &'a str, value: &'a str, expected: &'static str },
}

impl fmt::Display for ConfigError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Syntax { line } => write!(f, "hypervisor.cfg line {line}: expected `[section]` or `key = value`"),
            Self::KeyOutsideSection { line } => {
                write!(f, "hypervisor.cfg line {line}: a key before any section; put it under [hypervisor]")
            }
            Self::UnknownSection { line, name } => {
                write!(f, "hypervisor.cfg line {line}: unknown section [{name}]; the known section is [hypervisor]")
            }
            Self::UnsupportedSection { line, name } => {
                write!(f, "hypervisor.cfg line {line}: [{name}]: domain sections are not supported by this build yet")
            }
            Self::UnknownKey { line, key } => {
                write!(f, "hypervisor.cfg line {line}: unknown key {key:?} in [hypervisor]; known keys: {KNOWN_KEYS}")
            }
            Self::DuplicateKey { line, key } => write!(f, "hypervisor.cfg line {line}: {key:?} is set twice"),
            Self::BadValue { line, key, value, expected } => {
                write!(f, "hypervisor.cfg line {line}: {key} = {value:?} is not valid; expected {expected}")
            }
        }
    }
}

/// Strips one pair of double quotes, if present.
fn unquote(v: &str) -> Option<&str> {
    match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"').filter(|inner| !inner.contains('"')),
        None => (!v.contains('"')).then_some(v),
    }
}

/// Removes a trailing `# comment` that is not inside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

/// Parses the whole file.
pub fn parse(text: &str) -> Result<HypervisorConfig, ConfigError<'_>> {
    let mut config = HypervisorConfig::default();
    let mut in_section = false;
    let mut seen = [false; 4];
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = strip_comment(raw).trim();
        if content.is_empty() {
            continue;
        }
        if let Some(rest) = content.strip_prefix('[') {
            let name = rest.strip_suffix(']').ok_or(ConfigError::Syntax { line })?.trim();
            if name == "hypervisor" {
                in_section = true;
            } else if name.split_whitespace().next() == Some("domain") {
                return Err(ConfigError::UnsupportedSection { line, name });
            } else {
                return Err(ConfigError::UnknownSection { line, name });
            }
            continue;
        }
        let (key, value) = content.split_once('=').ok_or(ConfigError::Syntax { line })?;
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(ConfigError::Syntax { line });
        }
        if !in_section {
            return Err(ConfigError::KeyOutsideSection { line });
        }
        let bad = |expected| ConfigError::BadValue { line, key, value, expected };
        let v = unquote(value).ok_or(bad("a bare word, a number, true/false or a \"quoted string\""))?;
        let slot = match key {
            "log_level" => {
                config.log_level = LogLevel::parse(v).ok_or(bad("error, warn, info, debug or trace"))?;
                0
            }
            "serial_baud" => {
                config.serial_baud = match v.parse::<u32>() {
                    Ok(b @ (9600 | 19200 | 38400 | 57600 | 115_200)) => b,
                    _ => return Err(bad("9600, 19200, 38400, 57600 or 115200")),
                };
                1
            }
            "emulator_exit" => {
                config.emulator_exit = match v {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad("true or false")),
                };
                2
            }
            "fault" => {
                config.fault = match v {
                    "none" => None,
                    _ => Some(FaultKind::ALL.into_iter().find(|f| f.as_str() == v).ok_or(bad(
                        "none, divide-error, breakpoint, invalid-opcode, general-protection, page-fault or double-fault",
                    ))?),
                };
                3
            }
            _ => return Err(ConfigError::UnknownKey { line, key }),
        };
        if core::mem::replace(&mut seen[slot], true) {
            return Err(ConfigError::DuplicateKey { line, key });
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_gives_the_defaults() {
        assert_eq!(parse("").unwrap(), HypervisorConfig::default());
        assert_eq!(parse("# only a comment\n\n[hypervisor]\n").unwrap(), HypervisorConfig::default());
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(
            "[hypervisor]\nlog_level = debug\nserial_baud = 9600\nemulator_exit = true\nfault = \"page-fault\"\n",
        )
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
    fn comments_whitespace_quotes_and_crlf_are_accepted() {
        let c = parse("  [ hypervisor ]  # main\r\n\tlog_level=\"trace\"   # loud\r\nfault = none\r\n").unwrap();
        assert_eq!(c.log_level, LogLevel::Trace);
        assert_eq!(c.fault, None);
    }

    #[test]
    fn every_fault_name_round_trips() {
        for f in FaultKind::ALL {
            let text = format!("[hypervisor]\nfault = {}\n", f.as_str());
            assert_eq!(parse(&text).unwrap().fault, Some(f));
        }
    }

    #[test]
    fn an_unknown_key_names_its_line_and_the_known_keys() {
        let err = parse("[hypervisor]\n\nlog_lvl = info\n").unwrap_err();
        assert_eq!(err, ConfigError::UnknownKey { line: 3, key: "log_lvl" });
        assert_eq!(
            err.to_string(),
            "hypervisor.cfg line 3: unknown key \"log_lvl\" in [hypervisor]; known keys: log_level, serial_baud, emulator_exit, fault"
        );
    }

    #[test]
    fn bad_values_say_what_is_expected() {
        assert_eq!(
            parse("[hypervisor]\nlog_level = loud\n").unwrap_err(),
            ConfigError::BadValue {
                line: 2,
                key: "log_level",
                value: "loud",
                expected: "error, warn, info, debug or trace"
            }
        );
        assert!(matches!(parse("[hypervisor]\nserial_baud = 1234\n"), Err(ConfigError::BadValue { line: 2, .. })));
        assert!(matches!(parse("[hypervisor]\nemulator_exit = yes\n"), Err(ConfigError::BadValue { line: 2, .. })));
        assert!(matches!(parse("[hypervisor]\nfault = segfault\n"), Err(ConfigError::BadValue { line: 2, .. })));
        assert!(matches!(parse("[hypervisor]\nlog_level = \"info\n"), Err(ConfigError::BadValue { line: 2, .. })));
    }

    #[test]
    fn structural_mistakes_are_errors_with_line_numbers() {
        assert_eq!(parse("log_level = info\n").unwrap_err(), ConfigError::KeyOutsideSection { line: 1 });
        assert_eq!(parse("[hypervisor]\njust words\n").unwrap_err(), ConfigError::Syntax { line: 2 });
        assert_eq!(parse("[hypervisor\n").unwrap_err(), ConfigError::Syntax { line: 1 });
        assert_eq!(parse("[hypervisor]\nlog level = info\n").unwrap_err(), ConfigError::Syntax { line: 2 });
        assert_eq!(parse("\n[network]\n").unwrap_err(), ConfigError::UnknownSection { line: 2, name: "network" });
        assert_eq!(
            parse("[domain web]\n").unwrap_err(),
            ConfigError::UnsupportedSection { line: 1, name: "domain web" }
        );
    }

    #[test]
    fn a_key_set_twice_is_refused() {
        assert_eq!(
            parse("[hypervisor]\nlog_level = info\nlog_level = warn\n").unwrap_err(),
            ConfigError::DuplicateKey { line: 3, key: "log_level" }
        );
    }

    #[test]
    fn a_hash_inside_quotes_is_not_a_comment() {
        assert!(matches!(
            parse("[hypervisor]\nlog_level = \"in#fo\"\n"),
            Err(ConfigError::BadValue { value: "\"in#fo\"", .. })
        ));
    }
}
