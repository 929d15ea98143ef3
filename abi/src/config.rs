//! The boot configuration: `hypervisor.cfg`, a text entry of the boot bundle.
//!
//! ```text
//! # comment
//! [hypervisor]
//! log_level = "info"          # error | warn | info | debug | trace
//! serial_baud = 115200        # 9600 | 19200 | 38400 | 57600 | 115200
//! emulator_exit = false       # also end Bochs/QEMU when the hypervisor stops
//! fault = none                # a deliberate exception, for testing the report
//! spec_ctrl = on              # speculation mitigations (off only to measure them)
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
    /// Power the machine off once every domain has ended (tests, `--until-guests-exit`).
    pub until_guests_exit: bool,
    /// The credit scheduler's time slice (1 to 1000 ms).
    pub sched_slice_ms: u32,
    /// The credit scheduler's rate limit: 0 (off) or 100 us to 500 ms, at most the slice.
    pub sched_ratelimit_us: u32,
    /// The hypervisor's own speculative-execution mitigations (IBPB on domain switch,
    /// RSB filling, L1D flush or VERW before entry, host IBRS); `false` only for
    /// measuring their cost (docs/security.md). Guests keep their MSRs either way.
    pub spec_ctrl: bool,
    /// `guest_output = "log"`: DomUs' console lines also go to the machine's console
    /// (and the log ring), prefixed with the domain's name. `"quiet"` (the default):
    /// they stay in each domain's console (Domain0's `console ID`), and reach the
    /// machine's console only at `log_level = "debug"` or `"trace"`.
    pub guest_output_logged: bool,
    /// How many `[domain NAME]` sections the file has.
    pub domain_count: usize,
    /// Whether the file has a `[dom0]` section.
    pub dom0: bool,
}

impl Default for HypervisorConfig {
    fn default() -> Self {
        Self {
            log_level: LogLevel::Info,
            fault: None,
            emulator_exit: false,
            serial_baud: 115_200,
            until_guests_exit: false,
            sched_slice_ms: 30,
            sched_ratelimit_us: 1000,
            spec_ctrl: true,
            guest_output_logged: false,
            domain_count: 0,
            dom0: false,
        }
    }
}

/// How a vCPU of a domain starts when its image does not decide (flat binaries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestMode {
    /// 16-bit real mode at a reset-like state (needs unrestricted guest).
    Real16,
    /// 32-bit flat protected mode, paging off.
    Protected32,
    /// 64-bit long mode with identity page tables (docs/guest-boot.md).
    Long64,
}

impl GuestMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Real16 => "real16",
            Self::Protected32 => "protected32",
            Self::Long64 => "long64",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Self::Real16, Self::Protected32, Self::Long64].into_iter().find(|m| m.as_str() == name)
    }
}

/// One `[domain NAME]` section: a guest to create at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainConfig<'a> {
    pub name: &'a str,
    /// The boot bundle entry holding the guest image.
    pub image: &'a str,
    /// The boot bundle entry holding an initial ramdisk for a Linux kernel ("" for none).
    pub initrd: &'a str,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub cmdline: &'a str,
    /// For flat images: where to load them and where to start.
    pub load_address: Option<u64>,
    pub entry: Option<u64>,
    pub mode: Option<GuestMode>,
    /// Credit-scheduler weight, 1 to 65535 (default 256).
    pub weight: u32,
    /// Credit-scheduler cap in percent of one CPU; 0 = none.
    pub cap: u32,
    /// The CPUs the domain's vCPUs may run on (bit i = CPU i); all by default.
    pub cpus: u64,
    /// The line of the section header, for messages about this domain.
    pub line: usize,
    /// The `[dom0]` section: the management domain (its `script` is its command line).
    pub dom0: bool,
    /// Created at boot (the default); `false` only defines it, for Domain0's
    /// `create NAME`.
    pub autostart: bool,
    /// What happens when the guest powers itself off (`on_poweroff`, as in xl).
    pub on_poweroff: OnPoweroff,
    /// With `until_guests_exit`, the machine stops once every awaited domain has ended,
    /// whatever else still runs (Domain0, other guests); without any awaited domain it
    /// waits for all of them. `cargo xtask run --guest` marks the guests it adds.
    pub awaited: bool,
}

/// `on_poweroff`: what becomes of a domain that powered itself off (ACPI S5 or the exit
/// port). xl's default is `destroy`; ours is `preserve`, because without a toolstack
/// daemon in Domain0 the ended domain's listing and exit status are the only record of
/// how it ended (and the final report shows them). A domain Domain0 destroys is gone
/// either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnPoweroff {
    /// Stays listed, state `---s--`, with its exit status, until Domain0 destroys it.
    Preserve,
    /// Leaves the domain list at once (its memory is released either way).
    Destroy,
}

impl<'a> DomainConfig<'a> {
    fn new(name: &'a str, line: usize) -> Self {
        Self {
            name,
            image: "",
            initrd: "",
            memory_mib: 16,
            vcpus: 1,
            cmdline: "",
            load_address: None,
            entry: None,
            mode: None,
            weight: 256,
            cap: 0,
            cpus: u64::MAX,
            line,
            dom0: false,
            autostart: true,
            on_poweroff: OnPoweroff::Preserve,
            awaited: false,
        }
    }

    /// The name Domain0 has in listings, as in Xen.
    pub const DOM0_NAME: &'static str = "Domain-0";
}

/// Limits a domain section is checked against.
pub const MAX_DOMAIN_MEMORY_MIB: u32 = 65_536;
pub const MAX_VCPUS: u32 = 64;
pub const MAX_CMDLINE: usize = 1024;
pub const MAX_DOMAIN_NAME: usize = 32;

/// The keys of `[hypervisor]`, in the order error messages list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    LogLevel,
    Fault,
    EmulatorExit,
    SerialBaud,
    UntilGuestsExit,
    SchedSlice,
    SchedRatelimit,
    SpecCtrl,
    GuestOutput,
}

impl Key {
    const ALL: [Key; 9] = [
        Self::LogLevel,
        Self::Fault,
        Self::EmulatorExit,
        Self::SerialBaud,
        Self::UntilGuestsExit,
        Self::SchedSlice,
        Self::SchedRatelimit,
        Self::SpecCtrl,
        Self::GuestOutput,
    ];

    const fn as_str(self) -> &'static str {
        match self {
            Self::LogLevel => "log_level",
            Self::Fault => "fault",
            Self::EmulatorExit => "emulator_exit",
            Self::SerialBaud => "serial_baud",
            Self::UntilGuestsExit => "until_guests_exit",
            Self::SchedSlice => "sched_slice_ms",
            Self::SchedRatelimit => "sched_ratelimit_us",
            Self::SpecCtrl => "spec_ctrl",
            Self::GuestOutput => "guest_output",
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
const ON_OFF: &str = "on or off";
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
    /// `[domain NAME]` with a missing or malformed NAME.
    BadDomainName {
        line: usize,
        name: &'a str,
    },
    /// Two `[domain NAME]` sections with the same NAME, or `[domain Domain-0]` and `[dom0]`.
    DuplicateDomain {
        line: usize,
        name: &'a str,
        first_line: usize,
    },
    /// A domain section without `image = ...`.
    MissingImage {
        line: usize,
        name: &'a str,
    },
    UnknownDomainKey {
        line: usize,
        key: &'a str,
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
    /// `sched_ratelimit_us` above `sched_slice_ms` (the scheduler would refuse both).
    RateLimitAboveSlice {
        line: usize,
        ratelimit_us: u32,
        slice_ms: u32,
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
            Self::UnknownSection { line, name } => write!(
                f,
                "hypervisor.cfg line {line}: unknown section [{name}]; the known sections are [hypervisor], [dom0] and [domain NAME]"
            ),
            Self::BadDomainName { line, name } => write!(
                f,
                "hypervisor.cfg line {line}: [{name}]: a domain needs a name of 1 to {MAX_DOMAIN_NAME} letters, digits, \
                 '-', '_' or '.', as in [domain web-1]"
            ),
            Self::DuplicateDomain { line, name, first_line } => write!(
                f,
                "hypervisor.cfg line {line}: domain {name:?} is declared again (first on line {first_line}); names must be unique"
            ),
            Self::MissingImage { line, name } => write!(
                f,
                "hypervisor.cfg line {line}: domain {name:?} has no `image = \"...\"` naming its boot bundle entry"
            ),
            Self::UnknownDomainKey { line, key } => write!(
                f,
                "hypervisor.cfg line {line}: unknown key {key:?} in a [domain] section; known keys: {DOMAIN_KEYS} \
                 (and `script` in [dom0])"
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
            Self::RateLimitAboveSlice { line, ratelimit_us, slice_ms } => write!(
                f,
                "hypervisor.cfg line {line}: sched_ratelimit_us = {ratelimit_us} is longer than the time slice \
                 (sched_slice_ms = {slice_ms}); lower the rate limit or raise the slice"
            ),
        }
    }
}

impl core::error::Error for ConfigError<'_> {}

/// What a `[...]` line opens.
enum Section<'a> {
    Hypervisor,
    /// `[domain NAME]`: the text after `domain`, trimmed (may be empty or malformed).
    Domain(&'a str),
    /// `[dom0]`: the management domain.
    Dom0,
    Unknown(&'a str),
}

impl<'a> Section<'a> {
    /// Classifies the text between the brackets (already trimmed).
    fn from_header(name: &'a str) -> Self {
        if name == "hypervisor" {
            return Self::Hypervisor;
        }
        if name == "dom0" {
            return Self::Dom0;
        }
        // `domain` alone or followed by whitespace and a name; `domains` is not one.
        match name.strip_prefix("domain") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => Self::Domain(rest.trim()),
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

const DOMAIN_KEYS: &str = "image, initrd, memory, vcpus, cmdline, load_address, entry, mode, weight, cap, cpus, \
                           autostart, on_poweroff, awaited";

fn valid_domain_name(name: &str) -> bool {
    (1..=MAX_DOMAIN_NAME).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A number in decimal or `0x` hexadecimal.
fn parse_u64(v: &str) -> Option<u64> {
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => u64::from_str_radix(hex, 16).ok(),
        Some(_) => None,
        None if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => v.parse().ok(),
        None => None,
    }
}

/// Where the walker is. (One value per parse, so the size of the domain variant does
/// not matter; boxing it would need an allocator the hypervisor may not have yet.)
#[allow(clippy::large_enum_variant)]
enum Current<'a> {
    Nowhere,
    Hypervisor,
    Domain(DomainConfig<'a>, [Option<usize>; 15]),
}

/// Reads the whole file, handing each finished domain to `on_domain`. The single
/// parser behind [`parse`] and [`for_each_domain`], so both see the same rules. The
/// callback is `dyn` so the parser exists once in the hypervisor image, not once per
/// caller's closure (three copies were 8 KiB).
fn walk<'a>(text: &'a str, on_domain: &mut dyn FnMut(DomainConfig<'a>)) -> Result<HypervisorConfig, ConfigError<'a>> {
    let mut config = HypervisorConfig::default();
    // The line that opened [hypervisor], and the line each key was set on: both for
    // refusing repeats with a pointer to the first one.
    let mut section_line: Option<usize> = None;
    let mut dom0_line: Option<usize> = None;
    let mut key_lines: [Option<usize>; Key::ALL.len()] = [None; Key::ALL.len()];
    let mut current = Current::Nowhere;
    let mut finish = |current: &mut Current<'a>, config: &mut HypervisorConfig| -> Result<(), ConfigError<'a>> {
        if let Current::Domain(d, _) = core::mem::replace(current, Current::Nowhere) {
            if d.image.is_empty() {
                return Err(ConfigError::MissingImage { line: d.line, name: d.name });
            }
            if d.dom0 {
                config.dom0 = true;
            } else {
                config.domain_count += 1;
            }
            on_domain(d);
        }
        Ok(())
    };
    // `lines` splits on LF and drops a CR before it, so CRLF files read the same.
    for (line, raw) in (1..).zip(text.lines()) {
        let content = strip_comment(raw).trim();
        if content.is_empty() {
            continue;
        }
        if let Some(header) = content.strip_prefix('[') {
            let name = header.strip_suffix(']').ok_or(ConfigError::Syntax { line })?.trim();
            finish(&mut current, &mut config)?;
            match Section::from_header(name) {
                Section::Hypervisor => {
                    if let Some(first_line) = section_line {
                        return Err(ConfigError::DuplicateSection { line, name, first_line });
                    }
                    section_line = Some(line);
                    current = Current::Hypervisor;
                }
                Section::Domain(domain) => {
                    if !valid_domain_name(domain) {
                        return Err(ConfigError::BadDomainName { line, name });
                    }
                    if let Some(first_line) = earlier_domain(text, line, domain) {
                        return Err(ConfigError::DuplicateDomain { line, name: domain, first_line });
                    }
                    // `[dom0]` is the domain called Domain-0: a DomU may not take its name.
                    if let Some(first_line) = dom0_line.filter(|_| domain == DomainConfig::DOM0_NAME) {
                        return Err(ConfigError::DuplicateDomain { line, name: domain, first_line });
                    }
                    current = Current::Domain(DomainConfig::new(domain, line), [None; 15]);
                }
                Section::Dom0 => {
                    if let Some(first_line) = dom0_line {
                        return Err(ConfigError::DuplicateSection { line, name, first_line });
                    }
                    if let Some(first_line) = earlier_domain(text, line, DomainConfig::DOM0_NAME) {
                        return Err(ConfigError::DuplicateDomain { line, name: DomainConfig::DOM0_NAME, first_line });
                    }
                    dom0_line = Some(line);
                    let d = DomainConfig { dom0: true, ..DomainConfig::new(DomainConfig::DOM0_NAME, line) };
                    current = Current::Domain(d, [None; 15]);
                }
                Section::Unknown(name) => return Err(ConfigError::UnknownSection { line, name }),
            }
            continue;
        }

        let (key, value) = content.split_once('=').ok_or(ConfigError::Syntax { line })?;
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(ConfigError::Syntax { line });
        }
        let bad = |expected| ConfigError::BadValue { line, key, value, expected };
        let v = unquote(value).ok_or(bad(QUOTING))?;
        match &mut current {
            Current::Nowhere => return Err(ConfigError::KeyOutsideSection { line, key }),
            Current::Hypervisor => hypervisor_key(&mut config, &mut key_lines, line, key, value, v)?,
            Current::Domain(d, seen) => domain_key(d, seen, line, key, value, v)?,
        }
    }
    finish(&mut current, &mut config)?;
    // The rate limit may not exceed the slice (the scheduler refuses it): checked once
    // both are known, whichever line came first.
    if u64::from(config.sched_ratelimit_us) > u64::from(config.sched_slice_ms) * 1000 {
        let line = key_lines[Key::SchedRatelimit as usize].or(key_lines[Key::SchedSlice as usize]).unwrap_or(0);
        return Err(ConfigError::RateLimitAboveSlice {
            line,
            ratelimit_us: config.sched_ratelimit_us,
            slice_ms: config.sched_slice_ms,
        });
    }
    Ok(config)
}

/// The line of an earlier `[domain NAME]` header with the same name, if any.
fn earlier_domain(text: &str, before: usize, name: &str) -> Option<usize> {
    (1..).zip(text.lines()).take_while(|(l, _)| *l < before).find_map(|(l, raw)| {
        let header = strip_comment(raw).trim().strip_prefix('[')?.strip_suffix(']')?.trim();
        match Section::from_header(header) {
            Section::Domain(other) if other == name => Some(l),
            _ => None,
        }
    })
}

fn hypervisor_key<'a>(
    config: &mut HypervisorConfig,
    key_lines: &mut [Option<usize>; Key::ALL.len()],
    line: usize,
    key: &'a str,
    value: &'a str,
    v: &'a str,
) -> Result<(), ConfigError<'a>> {
    let bad = |expected| ConfigError::BadValue { line, key, value, expected };
    let known = Key::from_name(key).ok_or(ConfigError::UnknownKey { line, key })?;
    // `known` comes from `Key::ALL`, so the slot always exists.
    if let Some(seen) = key_lines.get_mut(known as usize) {
        if let Some(first_line) = *seen {
            return Err(ConfigError::DuplicateKey { line, key, first_line });
        }
        *seen = Some(line);
    }
    let boolean = |v: &str| match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad(BOOLS)),
    };
    let on_off = |v: &str| match v {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(bad(ON_OFF)),
    };
    match known {
        Key::LogLevel => config.log_level = LogLevel::from_name(v).ok_or(bad(LOG_LEVELS))?,
        Key::Fault => {
            config.fault = match v {
                "none" => None,
                _ => Some(FaultKind::from_name(v).ok_or(bad(FAULTS))?),
            }
        }
        Key::EmulatorExit => config.emulator_exit = boolean(v)?,
        Key::UntilGuestsExit => config.until_guests_exit = boolean(v)?,
        Key::SpecCtrl => config.spec_ctrl = on_off(v)?,
        Key::GuestOutput => {
            config.guest_output_logged = match v {
                "log" => true,
                "quiet" => false,
                _ => return Err(bad("log or quiet")),
            }
        }
        Key::SchedSlice => {
            config.sched_slice_ms = parse_u64(v)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| (1..=1000).contains(n))
                .ok_or(bad("a time slice in ms from 1 to 1000"))?
        }
        Key::SchedRatelimit => {
            config.sched_ratelimit_us = parse_u64(v)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n == 0 || (100..=500_000).contains(n))
                .ok_or(bad("0 (off) or a rate limit in us from 100 to 500000"))?
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
    Ok(())
}

fn domain_key<'a>(
    d: &mut DomainConfig<'a>,
    seen: &mut [Option<usize>; 15],
    line: usize,
    key: &'a str,
    value: &'a str,
    v: &'a str,
) -> Result<(), ConfigError<'a>> {
    let bad = |expected| ConfigError::BadValue { line, key, value, expected };
    let slot = match key {
        "image" => 0,
        "memory" => 1,
        "vcpus" => 2,
        "cmdline" => 3,
        "load_address" => 4,
        "entry" => 5,
        "mode" => 6,
        "weight" => 7,
        "cap" => 8,
        "cpus" => 9,
        // Domain0's boot script: `;`-separated shell commands, passed as its command line.
        "script" if d.dom0 => 10,
        "autostart" if !d.dom0 => 11,
        "initrd" => 12,
        "on_poweroff" if !d.dom0 => 13,
        "awaited" if !d.dom0 => 14,
        _ => return Err(ConfigError::UnknownDomainKey { line, key }),
    };
    if let Some(entry) = seen.get_mut(slot) {
        if let Some(first_line) = *entry {
            return Err(ConfigError::DuplicateKey { line, key, first_line });
        }
        *entry = Some(line);
    }
    match slot {
        0 => {
            if v.is_empty() || v.len() > 40 {
                return Err(bad("the name of a boot bundle entry (1 to 40 characters)"));
            }
            d.image = v;
        }
        1 => {
            d.memory_mib = parse_u64(v)
                .and_then(|m| u32::try_from(m).ok())
                .filter(|m| (1..=MAX_DOMAIN_MEMORY_MIB).contains(m))
                .ok_or(bad("a size in MiB from 1 to 65536"))?
        }
        2 => {
            d.vcpus = parse_u64(v)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| (1..=MAX_VCPUS).contains(n))
                .ok_or(bad("a vCPU count from 1 to 64"))?
        }
        3 | 10 => {
            if v.len() > MAX_CMDLINE {
                return Err(bad("a command line (or script) of at most 1024 bytes"));
            }
            if slot == 10 && seen[3].is_some() || slot == 3 && seen[10].is_some() {
                return Err(bad("either `cmdline` or `script`, not both: Domain0's script is its command line"));
            }
            d.cmdline = v;
        }
        4 => d.load_address = Some(parse_u64(v).ok_or(bad("an address, decimal or 0x-hexadecimal"))?),
        5 => d.entry = Some(parse_u64(v).ok_or(bad("an address, decimal or 0x-hexadecimal"))?),
        6 => d.mode = Some(GuestMode::from_name(v).ok_or(bad("real16, protected32 or long64"))?),
        7 => {
            d.weight = parse_u64(v)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| (1..=65_535).contains(n))
                .ok_or(bad("a weight from 1 to 65535"))?
        }
        8 => {
            d.cap = parse_u64(v)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n <= 6400)
                .ok_or(bad("a cap in percent of one CPU, 0 (none) to 6400"))?
        }
        11 | 14 => {
            let value = match v {
                "true" => true,
                "false" => false,
                _ => return Err(bad(BOOLS)),
            };
            if slot == 11 {
                d.autostart = value;
            } else {
                d.awaited = value;
            }
        }
        12 => {
            if v.is_empty() || v.len() > 40 {
                return Err(bad("the name of a boot bundle entry (1 to 40 characters)"));
            }
            d.initrd = v;
        }
        13 => {
            d.on_poweroff = match v {
                "preserve" => OnPoweroff::Preserve,
                "destroy" => OnPoweroff::Destroy,
                _ => return Err(bad("destroy or preserve")),
            }
        }
        9 => {
            d.cpus = parse_cpu_list(v).ok_or(bad("CPU numbers 0 to 63 as a list of numbers and ranges, e.g. 0-1,3"))?
        }
        _ => {}
    }
    Ok(())
}

/// `0-1,3` -> bits 0, 1 and 3; `all` -> every CPU. Empty sets are refused.
fn parse_cpu_list(v: &str) -> Option<u64> {
    if v == "all" {
        return Some(u64::MAX);
    }
    let mut set = 0u64;
    for part in v.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?),
            None => {
                let n = part.parse::<u32>().ok()?;
                (n, n)
            }
        };
        if lo > hi || hi > 63 {
            return None;
        }
        for cpu in lo..=hi {
            set |= 1 << cpu;
        }
    }
    (set != 0).then_some(set)
}

/// Parses the whole file. Keys that are not set keep their [`Default`] values; every
/// domain section is checked too (see [`for_each_domain`] to read them).
pub fn parse(text: &str) -> Result<HypervisorConfig, ConfigError<'_>> {
    walk(text, &mut |_| {})
}

/// Parses the whole file and hands each `[domain NAME]` section to `f`, in file order.
/// Nothing is handed out unless the whole file is valid... except that `f` may already
/// have seen earlier domains when a later line turns out bad: call [`parse`] first.
pub fn for_each_domain<'a>(
    text: &'a str,
    mut f: impl FnMut(DomainConfig<'a>),
) -> Result<HypervisorConfig, ConfigError<'a>> {
    walk(text, &mut f)
}

// The tests build their inputs with `format!`, so they need std.
#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    #[test]
    fn dom0_is_its_own_section_with_a_script() {
        let text = "[domain web]\nimage = hello64\n[dom0]\nimage = dom0\nmemory = 32\nscript = \"list; info\"\n";
        let mut seen = Vec::new();
        let config = for_each_domain(text, |d| seen.push(d)).unwrap();
        assert!(config.dom0);
        assert_eq!(config.domain_count, 1);
        assert_eq!(seen[1].name, "Domain-0");
        assert!(seen[1].dom0 && !seen[0].dom0);
        assert_eq!(seen[1].cmdline, "list; info");
        assert_eq!(seen[1].memory_mib, 32);
        let twice = "[dom0]\nimage = a\n[dom0]\nimage = b\n";
        assert!(matches!(parse(twice), Err(ConfigError::DuplicateSection { line: 3, first_line: 1, .. })));
        let script_in_domu = "[domain x]\nimage = a\nscript = list\n";
        assert!(matches!(parse(script_in_domu), Err(ConfigError::UnknownDomainKey { line: 3, .. })));
        let both = "[dom0]\nimage = a\ncmdline = x\nscript = y\n";
        assert!(matches!(parse(both), Err(ConfigError::BadValue { line: 4, .. })));
    }

    #[test]
    fn a_linux_domain_names_its_initrd() {
        let text = "[domain linux]\nimage = vmlinuz\ninitrd = initramfs\nmemory = 256\ncmdline = console=ttyS0\n";
        let mut seen = Vec::new();
        for_each_domain(text, |d| seen.push(d)).unwrap();
        assert_eq!((seen[0].image, seen[0].initrd), ("vmlinuz", "initramfs"));
        let mut seen = Vec::new();
        for_each_domain("[domain x]\nimage = a\n", |d| seen.push(d)).unwrap();
        assert_eq!(seen[0].initrd, "", "none by default");
        assert!(matches!(parse("[domain x]\nimage = a\ninitrd = \"\"\n"), Err(ConfigError::BadValue { line: 3, .. })));
        assert!(matches!(
            parse("[domain x]\nimage = a\ninitrd = b\ninitrd = c\n"),
            Err(ConfigError::DuplicateKey { line: 4, first_line: 3, .. })
        ));
    }

    #[test]
    fn a_rate_limit_above_the_slice_is_refused_in_either_order() {
        let e = parse("[hypervisor]\nsched_ratelimit_us = 115200\n").unwrap_err();
        assert!(
            matches!(e, ConfigError::RateLimitAboveSlice { line: 2, ratelimit_us: 115_200, slice_ms: 30 }),
            "{e:?}"
        );
        assert!(e.to_string().contains("lower the rate limit or raise the slice"));
        let e = parse("[hypervisor]\nsched_ratelimit_us = 20000\nsched_slice_ms = 10\n").unwrap_err();
        assert!(matches!(e, ConfigError::RateLimitAboveSlice { line: 2, .. }), "{e:?}");
        assert!(parse("[hypervisor]\nsched_ratelimit_us = 20000\nsched_slice_ms = 20\n").is_ok());
        assert!(parse("[hypervisor]\nsched_ratelimit_us = 0\nsched_slice_ms = 1\n").is_ok());
    }

    #[test]
    fn autostart_false_only_defines_a_domain() {
        let text = "[domain later]\nimage = hello64\nautostart = false\n[domain now]\nimage = hello64\n";
        let mut seen = Vec::new();
        for_each_domain(text, |d| seen.push(d)).unwrap();
        assert!(!seen[0].autostart && seen[1].autostart);
        assert!(matches!(
            parse("[domain x]\nimage = a\nautostart = maybe\n"),
            Err(ConfigError::BadValue { line: 3, .. })
        ));
        assert!(matches!(parse("[dom0]\nimage = a\nautostart = false\n"), Err(ConfigError::UnknownDomainKey { .. })));
    }

    #[test]
    fn on_poweroff_destroys_or_preserves() {
        let text = "[domain a]\nimage = x\non_poweroff = destroy\n[domain b]\nimage = x\non_poweroff = \"preserve\"\n\
                    [domain c]\nimage = x\n";
        let mut seen = Vec::new();
        for_each_domain(text, |d| seen.push(d.on_poweroff)).unwrap();
        assert_eq!(seen, [OnPoweroff::Destroy, OnPoweroff::Preserve, OnPoweroff::Preserve]);
        let e = parse("[domain x]\nimage = a\non_poweroff = restart\n").unwrap_err();
        assert!(matches!(e, ConfigError::BadValue { line: 3, .. }), "{e:?}");
        assert!(e.to_string().contains("destroy or preserve"), "{e}");
        assert!(matches!(
            parse("[domain x]\nimage = a\non_poweroff = destroy\non_poweroff = destroy\n"),
            Err(ConfigError::DuplicateKey { line: 4, first_line: 3, .. })
        ));
        // Domain0's power-off is the machine's.
        assert!(matches!(
            parse("[dom0]\nimage = a\non_poweroff = destroy\n"),
            Err(ConfigError::UnknownDomainKey { .. })
        ));
    }

    #[test]
    fn empty_input_gives_the_defaults() {
        let defaults = HypervisorConfig {
            log_level: LogLevel::Info,
            fault: None,
            emulator_exit: false,
            serial_baud: 115_200,
            until_guests_exit: false,
            sched_slice_ms: 30,
            sched_ratelimit_us: 1000,
            spec_ctrl: true,
            guest_output_logged: false,
            domain_count: 0,
            dom0: false,
        };
        assert_eq!(HypervisorConfig::default(), defaults);
        assert_eq!(parse("").unwrap(), defaults);
        assert_eq!(parse("# only a comment\n\n[hypervisor]\n").unwrap(), defaults);
    }

    #[test]
    fn every_key_is_read() {
        let c = parse(
            "[hypervisor]\nlog_level = debug\nserial_baud = 9600\nemulator_exit = true\nfault = page-fault\n\
             guest_output = log\n",
        )
        .unwrap();
        assert_eq!(
            c,
            HypervisorConfig {
                log_level: LogLevel::Debug,
                fault: Some(FaultKind::PageFault),
                emulator_exit: true,
                serial_baud: 9600,
                until_guests_exit: false,
                sched_slice_ms: 30,
                sched_ratelimit_us: 1000,
                spec_ctrl: true,
                guest_output_logged: true,
                domain_count: 0,
                dom0: false,
            }
        );
        assert!(parse("[hypervisor]\nguest_output = loud\n").is_err());
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
        assert!(parse("[hypervisor]\n").unwrap().spec_ctrl, "mitigations on by default");
        assert!(!parse("[hypervisor]\nspec_ctrl = off\n").unwrap().spec_ctrl);
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
             emulator_exit, serial_baud, until_guests_exit, sched_slice_ms, sched_ratelimit_us, spec_ctrl, \
             guest_output"
        );
    }

    #[test]
    fn bad_values_say_what_is_expected() {
        let cases = [
            ("log_level = loud", "log_level", "loud", LOG_LEVELS),
            ("fault = segfault", "fault", "segfault", FAULTS),
            ("emulator_exit = yes", "emulator_exit", "yes", BOOLS),
            ("spec_ctrl = false", "spec_ctrl", "false", ON_OFF),
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

    fn domains_of(text: &str) -> Vec<DomainConfig<'_>> {
        let mut out = Vec::new();
        for_each_domain(text, |d| out.push(d)).unwrap();
        out
    }

    #[test]
    fn domain_sections_are_read_with_defaults_and_every_key() {
        let text = "[hypervisor]\nuntil_guests_exit = true\n\n[domain web]\nimage = web.elf\n\n\
                    [domain rm-1]\nimage = \"real.bin\"\nmemory = 4\nvcpus = 2\ncmdline = \"console=ttyS0 quiet\"\n\
                    load_address = 0x7c00\nentry = 31744\nmode = real16\n";
        let c = parse(text).unwrap();
        assert!(c.until_guests_exit);
        assert_eq!(c.domain_count, 2);
        let d = domains_of(text);
        assert_eq!(d[0], DomainConfig { name: "web", image: "web.elf", ..DomainConfig::new("web", 4) });
        assert_eq!(d[0].memory_mib, 16);
        assert_eq!(d[0].vcpus, 1);
        assert_eq!(
            d[1],
            DomainConfig {
                name: "rm-1",
                image: "real.bin",
                initrd: "",
                memory_mib: 4,
                vcpus: 2,
                cmdline: "console=ttyS0 quiet",
                load_address: Some(0x7c00),
                entry: Some(0x7c00),
                mode: Some(GuestMode::Real16),
                weight: 256,
                cap: 0,
                cpus: u64::MAX,
                line: 7,
                dom0: false,
                autostart: true,
                on_poweroff: OnPoweroff::Preserve,
                awaited: false,
            }
        );
    }

    #[test]
    fn awaited_marks_the_domains_until_guests_exit_waits_for() {
        let text = "[hypervisor]\nuntil_guests_exit = true\n[dom0]\nimage = dom0\n\
                    [domain t]\nimage = x\n[domain g]\nimage = y\nawaited = true\n";
        let d = domains_of(text);
        assert_eq!(
            d.iter().map(|d| (d.name, d.awaited)).collect::<std::vec::Vec<_>>(),
            [("Domain-0", false), ("t", false), ("g", true)]
        );
        assert!(parse("[dom0]\nimage = dom0\nawaited = true\n").is_err(), "Domain0 is never awaited");
        assert!(parse("[domain g]\nimage = y\nawaited = yes\n").is_err());
    }

    #[test]
    fn scheduler_keys_are_read_and_checked() {
        let text = "[hypervisor]\nsched_slice_ms = 10\nsched_ratelimit_us = 0\n\
                    [domain a]\nimage = x\nweight = 512\ncap = 25\ncpus = 0-1,3\n";
        let c = parse(text).unwrap();
        assert_eq!((c.sched_slice_ms, c.sched_ratelimit_us), (10, 0));
        let mut d = Vec::new();
        for_each_domain(text, |x| d.push(x)).unwrap();
        assert_eq!((d[0].weight, d[0].cap, d[0].cpus), (512, 25, 0b1011));
        for (line, expected) in [
            ("weight = 0", "a weight from 1 to 65535"),
            ("weight = 65536", "a weight from 1 to 65535"),
            ("cap = 6401", "a cap in percent of one CPU, 0 (none) to 6400"),
            ("cpus = 64", "CPU numbers 0 to 63 as a list of numbers and ranges, e.g. 0-1,3"),
            ("cpus = 3-1", "CPU numbers 0 to 63 as a list of numbers and ranges, e.g. 0-1,3"),
            ("cpus = ", "CPU numbers 0 to 63 as a list of numbers and ranges, e.g. 0-1,3"),
        ] {
            let text = format!("[domain a]\nimage = x\n{line}\n");
            match parse(&text) {
                Err(ConfigError::BadValue { expected: e, .. }) => assert_eq!(e, expected, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        for (line, ok) in
            [("sched_slice_ms = 0", false), ("sched_slice_ms = 1000", true), ("sched_ratelimit_us = 99", false)]
        {
            assert_eq!(parse(&format!("[hypervisor]\n{line}\n")).is_ok(), ok, "{line}");
        }
    }

    #[test]
    fn a_domain_without_an_image_is_refused_at_its_header_line() {
        let err = parse("[domain web]\nmemory = 8\n[hypervisor]\n").unwrap_err();
        assert_eq!(err, ConfigError::MissingImage { line: 1, name: "web" });
        assert!(err.to_string().contains("has no `image"));
    }

    #[test]
    fn bad_domain_names_and_duplicates_are_refused() {
        assert_eq!(parse("[domain]\n").unwrap_err(), ConfigError::BadDomainName { line: 1, name: "domain" });
        assert_eq!(parse("[domain a b]\n").unwrap_err(), ConfigError::BadDomainName { line: 1, name: "domain a b" });
        let long = format!("[domain {}]\nimage = x\n", "a".repeat(33));
        assert!(matches!(parse(&long), Err(ConfigError::BadDomainName { line: 1, .. })));
        let err = parse("[domain web]\nimage = a\n[domain web]\nimage = b\n").unwrap_err();
        assert_eq!(err, ConfigError::DuplicateDomain { line: 3, name: "web", first_line: 1 });
    }

    /// Found by the `config` fuzz target: `[dom0]` is named Domain-0, so a DomU of that
    /// name made two domains with one name (which `xl` commands could not tell apart).
    #[test]
    fn a_domu_may_not_be_called_domain_0_next_to_dom0() {
        let after = parse("[dom0]\nimage = a\n[domain Domain-0]\nimage = b\n").unwrap_err();
        assert_eq!(after, ConfigError::DuplicateDomain { line: 3, name: "Domain-0", first_line: 1 });
        let before = parse("[domain Domain-0]\nimage = b\n[dom0]\nimage = a\n").unwrap_err();
        assert_eq!(before, ConfigError::DuplicateDomain { line: 3, name: "Domain-0", first_line: 1 });
        // Without a Domain0 the name is free.
        assert_eq!(parse("[domain Domain-0]\nimage = b\n").unwrap().domain_count, 1);
    }

    #[test]
    fn domain_values_are_checked_against_their_limits() {
        for (line, expected) in [
            ("memory = 0", "a size in MiB from 1 to 65536"),
            ("memory = 65537", "a size in MiB from 1 to 65536"),
            ("memory = lots", "a size in MiB from 1 to 65536"),
            ("vcpus = 0", "a vCPU count from 1 to 64"),
            ("vcpus = 65", "a vCPU count from 1 to 64"),
            ("load_address = 0xZZ", "an address, decimal or 0x-hexadecimal"),
            ("entry = 0x", "an address, decimal or 0x-hexadecimal"),
            ("entry = 99999999999999999999999", "an address, decimal or 0x-hexadecimal"),
            ("mode = vm86", "real16, protected32 or long64"),
        ] {
            let text = format!("[domain d]\nimage = x\n{line}\n");
            match parse(&text) {
                Err(ConfigError::BadValue { line: 3, expected: e, .. }) => assert_eq!(e, expected, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        let cmdline = format!("[domain d]\nimage = x\ncmdline = \"{}\"\n", "c".repeat(1025));
        assert!(matches!(parse(&cmdline), Err(ConfigError::BadValue { line: 3, .. })));
    }

    #[test]
    fn unknown_and_repeated_domain_keys_are_refused() {
        assert_eq!(
            parse("[domain d]\nimage = x\nkernel = y\n").unwrap_err(),
            ConfigError::UnknownDomainKey { line: 3, key: "kernel" }
        );
        assert_eq!(
            parse("[domain d]\nimage = x\nimage = y\n").unwrap_err(),
            ConfigError::DuplicateKey { line: 3, key: "image", first_line: 2 }
        );
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
