//! The hypercall ABI, version 1.0 (docs/hypercalls.md).
//!
//! A guest executes `VMCALL` with the call number in RAX and up to six arguments in RDI,
//! RSI, RDX, R10, R8, R9 (the System V syscall order). The result comes back in RAX: zero
//! or a positive value on success, a negative error code (Linux errno values) on failure.
//! All other registers are preserved. Guest pointers are guest-virtual addresses in the
//! caller's current address space; the hypervisor translates them through the caller's
//! page tables and its EPT, and refuses what it cannot reach with `EFAULT`.
//!
//! This module is shared by the hypervisor and our guests: [`decode`] is what the
//! hypervisor does with the registers (every range and length checked here, so the
//! dispatcher only sees well-formed requests), and [`Call`] numbers are what guests pass.

/// ABI version: major in bits 31:16, minor in bits 15:0 (returned by [`Call::Version`]).
pub const VERSION: u32 = 1 << 16;

/// Longest console write accepted in one call (longer writes fail with `E2BIG`).
pub const MAX_CONSOLE_WRITE: u64 = 4096;
/// Longest read (console rings, the hypervisor log) in one call.
pub const MAX_READ: u64 = 64 * 1024;

/// Call numbers (RAX).
#[repr(u64)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// () -> VERSION. Also answers which calls exist: see `Features`.
    Version = 0,
    /// (buf, len) -> bytes written. The caller's own console.
    ConsoleWrite = 1,
    /// (buf, len) -> bytes read (0: nothing waiting). The caller's own console input.
    ConsoleRead = 2,
    /// (out: *mut HostInfo) -> 0.
    HostInfo = 3,
    /// Privileged. (out: *mut DomainInfo, max_entries) -> number of domains written.
    DomainList = 4,
    /// Privileged. (domain, out: *mut DomainInfo) -> 0.
    DomainInfo = 5,
    /// Privileged. (spec: *const DomainCreate) -> new domain id.
    DomainCreate = 6,
    /// Privileged. (domain) -> 0.
    DomainDestroy = 7,
    /// Privileged. (domain) -> 0.
    DomainPause = 8,
    /// Privileged. (domain) -> 0.
    DomainUnpause = 9,
    /// Privileged. (domain) -> 0.
    DomainShutdown = 10,
    /// Privileged. (domain) -> 0.
    DomainReboot = 11,
    /// Privileged. (domain, weight 1..=65535) -> 0.
    SchedSetWeight = 12,
    /// Privileged. (domain, cap in % of one CPU, 0 = none) -> 0.
    SchedSetCap = 13,
    /// Privileged. (slice_ms 1..=1000, ratelimit_us 0 or 100..=500000) -> 0.
    SchedSetParams = 14,
    /// Privileged. (domain, vcpu, cpu mask) -> 0.
    VcpuPin = 15,
    /// Privileged. (domain, vcpu, out: *mut VcpuInfo) -> 0.
    VcpuInfo = 16,
    /// Privileged. (domain, buf, len, cursor: *mut u64) -> bytes read from that domain's
    /// console output, starting at stream position `*cursor` (or the oldest byte the ring
    /// still holds, if that is later); `*cursor` is advanced past what was read.
    ConsoleReadOther = 17,
    /// Privileged. (buf, len, cursor: *mut u64) -> bytes read from the hypervisor's log
    /// ring, with the same cursor rule as `ConsoleReadOther`.
    HypervisorLogRead = 18,
    /// Privileged. () -> does not return.
    HostPowerOff = 19,
    /// Privileged. () -> does not return.
    HostReboot = 20,
    /// Privileged. () -> `slice_ms << 32 | ratelimit_us`.
    SchedGetParams = 21,
    /// Privileged. (domain, buf, len) -> bytes queued as that domain's console input.
    ConsoleWriteOther = 22,
    /// Privileged. (gsi 0..=23, flags: bit 0 level-triggered, bit 1 active-low) -> 0.
    /// The machine's interrupt line `gsi` is delivered to Domain0's virtual I/O APIC pin
    /// `gsi` (Xen's map-pirq): Domain0's driver, which knows the device, asks for it. A
    /// level-triggered line is masked on the host when it fires and unmasked when
    /// Domain0 EOIs the vector its pin is programmed with.
    IrqRoute = 23,
    /// Privileged. (out: *mut PlatformInfo) -> 0. The machine's ACPI fixed hardware.
    PlatformInfo = 24,
    /// Privileged. (domain, trigger: [`Trigger`], vcpu or `u32::MAX` for all) -> 0.
    /// Raises a hardware signal in a DomU (`xl trigger`): `Trigger::Nmi` is a rising
    /// edge on the vCPUs' LINT1, the PC's NMI line, which each local APIC delivers as its
    /// LVT LINT1 entry says (an NMI when programmed so, as firmware leaves it).
    DomainTrigger = 25,
}

/// What [`Call::DomainTrigger`] raises.
#[repr(u64)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The NMI line (LINT1): Xen's `xl trigger DOMAIN nmi`, QEMU's `nmi`.
    Nmi = 0,
}

impl Trigger {
    pub fn from_number(n: u64) -> Option<Trigger> {
        (n == 0).then_some(Trigger::Nmi)
    }
}

impl Call {
    pub const ALL: [Call; 26] = [
        Call::Version,
        Call::ConsoleWrite,
        Call::ConsoleRead,
        Call::HostInfo,
        Call::DomainList,
        Call::DomainInfo,
        Call::DomainCreate,
        Call::DomainDestroy,
        Call::DomainPause,
        Call::DomainUnpause,
        Call::DomainShutdown,
        Call::DomainReboot,
        Call::SchedSetWeight,
        Call::SchedSetCap,
        Call::SchedSetParams,
        Call::VcpuPin,
        Call::VcpuInfo,
        Call::ConsoleReadOther,
        Call::HypervisorLogRead,
        Call::HostPowerOff,
        Call::HostReboot,
        Call::SchedGetParams,
        Call::ConsoleWriteOther,
        Call::IrqRoute,
        Call::PlatformInfo,
        Call::DomainTrigger,
    ];

    pub fn from_number(n: u64) -> Option<Call> {
        // `ALL` is in number order (a test checks), so the number is the index: this
        // runs on every VMCALL.
        Self::ALL.get(usize::try_from(n).ok()?).copied()
    }

    /// Only Domain0 may make these calls; anyone else gets `EPERM`.
    pub fn privileged(self) -> bool {
        !matches!(self, Call::Version | Call::ConsoleWrite | Call::ConsoleRead | Call::HostInfo)
    }
}

/// Error codes (negated in RAX), Linux errno values so guest C code can use its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Privileged call from a domain other than Domain0.
    NotPermitted,
    /// No such domain or vCPU.
    NoEntry,
    /// A length above the call's limit.
    TooBig,
    /// A guest pointer the hypervisor cannot reach (unmapped, outside RAM, read-only for an output).
    Fault,
    /// An argument out of range.
    Invalid,
    /// Out of host memory.
    NoMemory,
    /// The call number does not exist (in this version).
    NoSys,
}

impl Error {
    pub const fn code(self) -> i64 {
        match self {
            Error::NotPermitted => -1,
            Error::NoEntry => -2,
            Error::TooBig => -7,
            Error::NoMemory => -12,
            Error::Fault => -14,
            Error::Invalid => -22,
            Error::NoSys => -38,
        }
    }

    pub fn from_code(code: i64) -> Option<Error> {
        [
            Error::NotPermitted,
            Error::NoEntry,
            Error::TooBig,
            Error::NoMemory,
            Error::Fault,
            Error::Invalid,
            Error::NoSys,
        ]
        .into_iter()
        .find(|e| e.code() == code)
    }
}

/// What [`Call::HostInfo`] writes (little-endian, `repr(C)`, 40 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostInfo {
    pub cpus: u32,
    pub domains: u32,
    pub memory_total: u64,
    pub memory_free: u64,
    pub tsc_khz: u64,
    /// Bit 0: VMX preemption timer; bit 1: TSC-deadline host timer.
    pub features: u64,
}

/// Longest domain name (bytes, NUL-padded in the structures below).
pub const NAME_LEN: usize = 32;
/// Longest bundle image name in [`DomainCreate`].
pub const IMAGE_LEN: usize = 64;
/// Longest command line in [`DomainCreate`].
pub const CMDLINE_LEN: usize = 1024;

/// A domain's state as [`DomainInfo::state`] reports it (`xl list`'s letters).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomState {
    /// A vCPU is on a CPU right now.
    Running = 0,
    /// Runnable or waiting for an interrupt.
    Blocked = 1,
    Paused = 2,
    /// Ended by a guest fault or by the hypervisor.
    Crashed = 3,
    /// Ended by the guest (power-off, exit port) or by `shutdown`/`destroy`.
    Shutdown = 4,
}

impl DomState {
    pub fn from_u32(v: u32) -> Option<DomState> {
        [DomState::Running, DomState::Blocked, DomState::Paused, DomState::Crashed, DomState::Shutdown]
            .into_iter()
            .find(|s| *s as u32 == v)
    }

    /// `xl list`'s six-column state: r b p s c d.
    pub fn xl_flags(self) -> &'static str {
        match self {
            DomState::Running => "r-----",
            DomState::Blocked => "-b----",
            DomState::Paused => "--p---",
            DomState::Shutdown => "---s--",
            DomState::Crashed => "----c-",
        }
    }
}

/// Little-endian field writer and reader for the fixed layouts below: no transmutes, so
/// a guest's bytes are only ever parsed, never reinterpreted.
struct Le<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Le<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
}

struct Rd<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Rd<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.at..self.at + N]);
        self.at += N;
        out
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}

/// Copies `s` into a NUL-padded field (cut at the field's size).
pub fn fixed_str<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let n = s.len().min(N);
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out
}

/// The text of a NUL-padded field: up to the first NUL; `None` if not UTF-8.
pub fn field_str(field: &[u8]) -> Option<&str> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    core::str::from_utf8(&field[..end]).ok()
}

/// One domain, as [`Call::DomainList`] and [`Call::DomainInfo`] write it (96 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DomainInfo {
    pub id: u32,
    /// A [`DomState`] value.
    pub state: u32,
    pub name: [u8; NAME_LEN],
    pub memory_bytes: u64,
    pub vcpus: u32,
    pub weight: u32,
    /// Percent of one CPU; 0 = none.
    pub cap: u32,
    /// The guest's exit status once it has shut down; `u32::MAX` otherwise.
    pub exit_status: u32,
    /// CPU time used by all of its vCPUs.
    pub cpu_time_ns: u64,
    /// Bytes its console has written since it started.
    pub console_bytes: u64,
    /// Bit 0: this is Domain0.
    pub flags: u32,
    pub reserved: u32,
}

impl DomainInfo {
    /// The record's size: the fields above take 88 bytes; the last 8 are reserved (zero)
    /// for later fields.
    pub const SIZE: usize = 96;
    pub const FLAG_DOM0: u32 = 1;

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        let mut w = Le { buf: &mut b, at: 0 };
        w.put(&self.id.to_le_bytes());
        w.put(&self.state.to_le_bytes());
        w.put(&self.name);
        w.put(&self.memory_bytes.to_le_bytes());
        w.put(&self.vcpus.to_le_bytes());
        w.put(&self.weight.to_le_bytes());
        w.put(&self.cap.to_le_bytes());
        w.put(&self.exit_status.to_le_bytes());
        w.put(&self.cpu_time_ns.to_le_bytes());
        w.put(&self.console_bytes.to_le_bytes());
        w.put(&self.flags.to_le_bytes());
        w.put(&self.reserved.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let mut r = Rd { buf: b, at: 0 };
        DomainInfo {
            id: r.u32(),
            state: r.u32(),
            name: r.take(),
            memory_bytes: r.u64(),
            vcpus: r.u32(),
            weight: r.u32(),
            cap: r.u32(),
            exit_status: r.u32(),
            cpu_time_ns: r.u64(),
            console_bytes: r.u64(),
            flags: r.u32(),
            reserved: r.u32(),
        }
    }

    pub fn name(&self) -> &str {
        field_str(&self.name).unwrap_or("?")
    }
}

/// A vCPU's scheduling state in [`VcpuInfo::state`].
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuState {
    Running = 0,
    Runnable = 1,
    Blocked = 2,
    /// Not started yet (waiting for INIT-SIPI) or its domain is paused.
    Offline = 3,
    /// Its domain has ended.
    Dead = 4,
}

impl VcpuState {
    pub fn from_u32(v: u32) -> Option<VcpuState> {
        [VcpuState::Running, VcpuState::Runnable, VcpuState::Blocked, VcpuState::Offline, VcpuState::Dead]
            .into_iter()
            .find(|s| *s as u32 == v)
    }
}

/// One vCPU, as [`Call::VcpuInfo`] writes it (64 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VcpuInfo {
    pub domain: u32,
    pub vcpu: u32,
    /// A [`VcpuState`] value.
    pub state: u32,
    /// The CPU it runs on or last ran on; `u32::MAX` if it never ran.
    pub cpu: u32,
    /// CPUs it may run on (bit i = CPU i).
    pub affinity: u64,
    pub cpu_time_ns: u64,
    /// Time runnable but not running.
    pub wait_ns: u64,
    pub preemptions: u64,
    pub migrations: u64,
    pub reserved: u64,
}

impl VcpuInfo {
    pub const SIZE: usize = 64;

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        let mut w = Le { buf: &mut b, at: 0 };
        for v in [self.domain, self.vcpu, self.state, self.cpu] {
            w.put(&v.to_le_bytes());
        }
        for v in [self.affinity, self.cpu_time_ns, self.wait_ns, self.preemptions, self.migrations, self.reserved] {
            w.put(&v.to_le_bytes());
        }
        b
    }

    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let mut r = Rd { buf: b, at: 0 };
        VcpuInfo {
            domain: r.u32(),
            vcpu: r.u32(),
            state: r.u32(),
            cpu: r.u32(),
            affinity: r.u64(),
            cpu_time_ns: r.u64(),
            wait_ns: r.u64(),
            preemptions: r.u64(),
            migrations: r.u64(),
            reserved: r.u64(),
        }
    }
}

/// What [`Call::DomainCreate`] reads (1208 bytes): a domain like a `[domain]` section of
/// the boot configuration. Zero for `memory_mib`, `vcpus`, `weight` or `cpus` means the
/// default (16 MiB, 1, 256, all CPUs); an empty name means the image's name; an empty
/// initrd means none (or the one a defined domain of that name has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainCreate {
    /// The boot bundle entry holding the image.
    pub image: [u8; IMAGE_LEN],
    pub name: [u8; NAME_LEN],
    pub cmdline: [u8; CMDLINE_LEN],
    pub memory_mib: u32,
    pub vcpus: u32,
    pub weight: u32,
    pub cap: u32,
    pub cpus: u64,
    /// The boot bundle entry holding a Linux kernel's initial ramdisk.
    pub initrd: [u8; IMAGE_LEN],
}

impl Default for DomainCreate {
    fn default() -> Self {
        DomainCreate {
            image: [0; IMAGE_LEN],
            name: [0; NAME_LEN],
            cmdline: [0; CMDLINE_LEN],
            memory_mib: 0,
            vcpus: 0,
            weight: 0,
            cap: 0,
            cpus: 0,
            initrd: [0; IMAGE_LEN],
        }
    }
}

impl DomainCreate {
    pub const SIZE: usize = IMAGE_LEN + NAME_LEN + CMDLINE_LEN + 24 + IMAGE_LEN;

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        let mut w = Le { buf: &mut b, at: 0 };
        w.put(&self.image);
        w.put(&self.name);
        w.put(&self.cmdline);
        for v in [self.memory_mib, self.vcpus, self.weight, self.cap] {
            w.put(&v.to_le_bytes());
        }
        w.put(&self.cpus.to_le_bytes());
        w.put(&self.initrd);
        b
    }

    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let mut r = Rd { buf: b, at: 0 };
        DomainCreate {
            image: r.take(),
            name: r.take(),
            cmdline: r.take(),
            memory_mib: r.u32(),
            vcpus: r.u32(),
            weight: r.u32(),
            cap: r.u32(),
            cpus: r.u64(),
            initrd: r.take(),
        }
    }
}

/// `IrqRoute` flags.
pub const IRQ_LEVEL: u64 = 1 << 0;
pub const IRQ_ACTIVE_LOW: u64 = 1 << 1;
/// GSIs `IrqRoute` can route: the pins of Domain0's virtual I/O APIC.
pub const IRQ_ROUTE_GSIS: u32 = 24;

/// What [`Call::PlatformInfo`] writes (24 bytes): the machine's ACPI fixed hardware, from
/// its FADT and MADT. Ports are 0 and the SCI is `u32::MAX` where the machine has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlatformInfo {
    /// The SCI's global system interrupt.
    pub sci_gsi: u32,
    /// `IRQ_LEVEL | IRQ_ACTIVE_LOW` as the MADT (or the ACPI default for the SCI) says.
    pub sci_flags: u32,
    pub pm1a_event: u32,
    pub pm1a_control: u32,
    pub pm_timer: u32,
    pub reserved: u32,
}

impl PlatformInfo {
    pub const SIZE: usize = 24;

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        let mut w = Le { buf: &mut b, at: 0 };
        for v in [self.sci_gsi, self.sci_flags, self.pm1a_event, self.pm1a_control, self.pm_timer, self.reserved] {
            w.put(&v.to_le_bytes());
        }
        b
    }

    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let mut r = Rd { buf: b, at: 0 };
        PlatformInfo {
            sci_gsi: r.u32(),
            sci_flags: r.u32(),
            pm1a_event: r.u32(),
            pm1a_control: r.u32(),
            pm_timer: r.u32(),
            reserved: r.u32(),
        }
    }
}

/// A decoded, range-checked request. Pointers are still guest-virtual and unchecked:
/// the dispatcher translates them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Version,
    ConsoleWrite { buf: u64, len: u64 },
    ConsoleRead { buf: u64, len: u64 },
    HostInfo { out: u64 },
    DomainList { out: u64, max: u32 },
    DomainInfo { domain: u32, out: u64 },
    DomainCreate { spec: u64 },
    DomainDestroy { domain: u32 },
    DomainPause { domain: u32 },
    DomainUnpause { domain: u32 },
    DomainShutdown { domain: u32 },
    DomainReboot { domain: u32 },
    SchedSetWeight { domain: u32, weight: u32 },
    SchedSetCap { domain: u32, cap: u32 },
    SchedSetParams { slice_ms: u32, ratelimit_us: u32 },
    VcpuPin { domain: u32, vcpu: u32, cpus: u64 },
    VcpuInfo { domain: u32, vcpu: u32, out: u64 },
    ConsoleReadOther { domain: u32, buf: u64, len: u64, cursor: u64 },
    HypervisorLogRead { buf: u64, len: u64, cursor: u64 },
    HostPowerOff,
    HostReboot,
    SchedGetParams,
    ConsoleWriteOther { domain: u32, buf: u64, len: u64 },
    IrqRoute { gsi: u32, level: bool, active_low: bool },
    PlatformInfo { out: u64 },
    DomainTrigger { domain: u32, trigger: Trigger, vcpu: Option<u32> },
}

impl Request {
    pub fn call(&self) -> Call {
        match self {
            Request::Version => Call::Version,
            Request::ConsoleWrite { .. } => Call::ConsoleWrite,
            Request::ConsoleRead { .. } => Call::ConsoleRead,
            Request::HostInfo { .. } => Call::HostInfo,
            Request::DomainList { .. } => Call::DomainList,
            Request::DomainInfo { .. } => Call::DomainInfo,
            Request::DomainCreate { .. } => Call::DomainCreate,
            Request::DomainDestroy { .. } => Call::DomainDestroy,
            Request::DomainPause { .. } => Call::DomainPause,
            Request::DomainUnpause { .. } => Call::DomainUnpause,
            Request::DomainShutdown { .. } => Call::DomainShutdown,
            Request::DomainReboot { .. } => Call::DomainReboot,
            Request::SchedSetWeight { .. } => Call::SchedSetWeight,
            Request::SchedSetCap { .. } => Call::SchedSetCap,
            Request::SchedSetParams { .. } => Call::SchedSetParams,
            Request::VcpuPin { .. } => Call::VcpuPin,
            Request::VcpuInfo { .. } => Call::VcpuInfo,
            Request::ConsoleReadOther { .. } => Call::ConsoleReadOther,
            Request::HypervisorLogRead { .. } => Call::HypervisorLogRead,
            Request::HostPowerOff => Call::HostPowerOff,
            Request::HostReboot => Call::HostReboot,
            Request::SchedGetParams => Call::SchedGetParams,
            Request::ConsoleWriteOther { .. } => Call::ConsoleWriteOther,
            Request::IrqRoute { .. } => Call::IrqRoute,
            Request::PlatformInfo { .. } => Call::PlatformInfo,
            Request::DomainTrigger { .. } => Call::DomainTrigger,
        }
    }
}

/// A 32-bit ID argument: the upper half must be zero.
fn id(v: u64) -> Result<u32, Error> {
    u32::try_from(v).map_err(|_| Error::Invalid)
}

fn length(v: u64, max: u64) -> Result<u64, Error> {
    if v > max { Err(Error::TooBig) } else { Ok(v) }
}

/// Decodes RAX and the six argument registers into a checked request. Never panics.
pub fn decode(number: u64, a: [u64; 6]) -> Result<Request, Error> {
    let call = Call::from_number(number).ok_or(Error::NoSys)?;
    Ok(match call {
        Call::Version => Request::Version,
        Call::ConsoleWrite => Request::ConsoleWrite { buf: a[0], len: length(a[1], MAX_CONSOLE_WRITE)? },
        Call::ConsoleRead => Request::ConsoleRead { buf: a[0], len: length(a[1], MAX_READ)? },
        Call::HostInfo => Request::HostInfo { out: a[0] },
        Call::DomainList => {
            Request::DomainList { out: a[0], max: id(a[1]).and_then(|m| length(m.into(), 1024))? as u32 }
        }
        Call::DomainInfo => Request::DomainInfo { domain: id(a[0])?, out: a[1] },
        Call::DomainCreate => Request::DomainCreate { spec: a[0] },
        Call::DomainDestroy => Request::DomainDestroy { domain: id(a[0])? },
        Call::DomainPause => Request::DomainPause { domain: id(a[0])? },
        Call::DomainUnpause => Request::DomainUnpause { domain: id(a[0])? },
        Call::DomainShutdown => Request::DomainShutdown { domain: id(a[0])? },
        Call::DomainReboot => Request::DomainReboot { domain: id(a[0])? },
        Call::SchedSetWeight => {
            let weight = id(a[1])?;
            if !(1..=65_535).contains(&weight) {
                return Err(Error::Invalid);
            }
            Request::SchedSetWeight { domain: id(a[0])?, weight }
        }
        Call::SchedSetCap => {
            let cap = id(a[1])?;
            if cap > 6400 {
                return Err(Error::Invalid);
            }
            Request::SchedSetCap { domain: id(a[0])?, cap }
        }
        Call::SchedSetParams => {
            let (slice_ms, ratelimit_us) = (id(a[0])?, id(a[1])?);
            let rate_ok =
                ratelimit_us == 0 || ((100..=500_000).contains(&ratelimit_us) && ratelimit_us / 1000 <= slice_ms);
            if !(1..=1000).contains(&slice_ms) || !rate_ok {
                return Err(Error::Invalid);
            }
            Request::SchedSetParams { slice_ms, ratelimit_us }
        }
        Call::VcpuPin => {
            if a[2] == 0 {
                return Err(Error::Invalid);
            }
            Request::VcpuPin { domain: id(a[0])?, vcpu: id(a[1])?, cpus: a[2] }
        }
        Call::VcpuInfo => Request::VcpuInfo { domain: id(a[0])?, vcpu: id(a[1])?, out: a[2] },
        Call::ConsoleReadOther => {
            Request::ConsoleReadOther { domain: id(a[0])?, buf: a[1], len: length(a[2], MAX_READ)?, cursor: a[3] }
        }
        Call::HypervisorLogRead => Request::HypervisorLogRead { buf: a[0], len: length(a[1], MAX_READ)?, cursor: a[2] },
        Call::HostPowerOff => Request::HostPowerOff,
        Call::HostReboot => Request::HostReboot,
        Call::SchedGetParams => Request::SchedGetParams,
        Call::IrqRoute => {
            let (gsi, flags) = (id(a[0])?, a[1]);
            if gsi >= IRQ_ROUTE_GSIS || flags & !(IRQ_LEVEL | IRQ_ACTIVE_LOW) != 0 {
                return Err(Error::Invalid);
            }
            Request::IrqRoute { gsi, level: flags & IRQ_LEVEL != 0, active_low: flags & IRQ_ACTIVE_LOW != 0 }
        }
        Call::PlatformInfo => Request::PlatformInfo { out: a[0] },
        Call::DomainTrigger => Request::DomainTrigger {
            domain: id(a[0])?,
            trigger: Trigger::from_number(a[1]).ok_or(Error::Invalid)?,
            vcpu: if a[2] == u64::from(u32::MAX) { None } else { Some(id(a[2])?) },
        },
        Call::ConsoleWriteOther => {
            Request::ConsoleWriteOther { domain: id(a[0])?, buf: a[1], len: length(a[2], MAX_CONSOLE_WRITE)? }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_number_round_trips() {
        for (i, c) in Call::ALL.iter().enumerate() {
            assert_eq!(*c as u64, i as u64);
            assert_eq!(Call::from_number(i as u64), Some(*c));
        }
        assert_eq!(Call::from_number(26), None);
        assert_eq!(Call::from_number(u64::MAX), None);
    }

    #[test]
    fn only_version_console_and_host_info_are_unprivileged() {
        let open: Vec<Call> = Call::ALL.into_iter().filter(|c| !c.privileged()).collect();
        assert_eq!(open, vec![Call::Version, Call::ConsoleWrite, Call::ConsoleRead, Call::HostInfo]);
    }

    #[test]
    fn unknown_numbers_are_nosys() {
        assert_eq!(decode(99, [0; 6]), Err(Error::NoSys));
        assert_eq!(Error::NoSys.code(), -38);
    }

    #[test]
    fn lengths_above_the_limits_are_too_big() {
        assert_eq!(decode(1, [0x1000, 4096, 0, 0, 0, 0]), Ok(Request::ConsoleWrite { buf: 0x1000, len: 4096 }));
        assert_eq!(decode(1, [0x1000, 4097, 0, 0, 0, 0]), Err(Error::TooBig));
        assert_eq!(decode(18, [0, u64::MAX, 0, 0, 0, 0]), Err(Error::TooBig));
    }

    #[test]
    fn ids_with_upper_bits_and_out_of_range_parameters_are_invalid() {
        assert_eq!(decode(7, [1 << 32, 0, 0, 0, 0, 0]), Err(Error::Invalid));
        assert_eq!(decode(12, [1, 0, 0, 0, 0, 0]), Err(Error::Invalid));
        assert_eq!(decode(12, [1, 65_536, 0, 0, 0, 0]), Err(Error::Invalid));
        assert_eq!(decode(12, [1, 512, 0, 0, 0, 0]), Ok(Request::SchedSetWeight { domain: 1, weight: 512 }));
        assert_eq!(decode(13, [1, 6401, 0, 0, 0, 0]), Err(Error::Invalid));
        assert_eq!(decode(14, [0, 0, 0, 0, 0, 0]), Err(Error::Invalid));
        assert_eq!(decode(14, [10, 99, 0, 0, 0, 0]), Err(Error::Invalid));
        assert_eq!(decode(14, [10, 20_000, 0, 0, 0, 0]), Err(Error::Invalid), "rate limit above the slice");
        assert_eq!(
            decode(14, [30, 1000, 0, 0, 0, 0]),
            Ok(Request::SchedSetParams { slice_ms: 30, ratelimit_us: 1000 })
        );
        assert_eq!(decode(15, [1, 0, 0, 0, 0, 0]), Err(Error::Invalid), "an empty CPU mask");
    }

    #[test]
    fn a_trigger_names_its_kind_and_one_vcpu_or_all() {
        assert_eq!(
            decode(25, [3, 0, u64::from(u32::MAX), 0, 0, 0]),
            Ok(Request::DomainTrigger { domain: 3, trigger: Trigger::Nmi, vcpu: None })
        );
        assert_eq!(
            decode(25, [3, 0, 1, 0, 0, 0]),
            Ok(Request::DomainTrigger { domain: 3, trigger: Trigger::Nmi, vcpu: Some(1) })
        );
        assert_eq!(decode(25, [3, 1, 0, 0, 0, 0]), Err(Error::Invalid), "no such trigger");
        assert_eq!(decode(25, [3, 0, 1 << 32, 0, 0, 0]), Err(Error::Invalid));
        assert!(Call::DomainTrigger.privileged());
    }

    #[test]
    fn error_codes_round_trip() {
        for e in [Error::NotPermitted, Error::NoEntry, Error::TooBig, Error::NoMemory, Error::Fault, Error::Invalid] {
            assert_eq!(Error::from_code(e.code()), Some(e));
        }
        assert_eq!(Error::from_code(-999), None);
    }

    #[test]
    fn random_registers_never_panic_and_requests_match_their_call() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200_000 {
            let n = next() % 24;
            let mut a = [0u64; 6];
            for v in a.iter_mut() {
                *v = if next() % 2 == 0 { next() % 70_000 } else { next() };
            }
            if let Ok(r) = decode(n, a) {
                assert_eq!(r.call() as u64, n);
            }
        }
    }

    #[test]
    fn structures_round_trip_through_their_byte_layouts() {
        let d = DomainInfo {
            id: 3,
            state: DomState::Paused as u32,
            name: fixed_str("web"),
            memory_bytes: 64 << 20,
            vcpus: 2,
            weight: 512,
            cap: 50,
            exit_status: u32::MAX,
            cpu_time_ns: 123_456_789,
            console_bytes: 42,
            flags: 0,
            reserved: 0,
        };
        let b = d.to_bytes();
        assert_eq!(&b[..4], &3u32.to_le_bytes());
        assert_eq!(&b[8..11], b"web");
        assert_eq!(DomainInfo::from_bytes(&b), d);
        assert_eq!(d.name(), "web");
        let v = VcpuInfo { domain: 1, vcpu: 1, state: 2, cpu: 0, affinity: 3, cpu_time_ns: 9, ..Default::default() };
        assert_eq!(VcpuInfo::from_bytes(&v.to_bytes()), v);
        let c = DomainCreate {
            image: fixed_str("hello64"),
            name: fixed_str("demo"),
            cmdline: fixed_str("spin"),
            memory_mib: 16,
            vcpus: 1,
            weight: 256,
            cap: 0,
            cpus: u64::MAX,
            initrd: fixed_str("rd"),
        };
        let cb = c.to_bytes();
        assert_eq!(cb.len(), 1208);
        assert_eq!(&cb[1144..1146], b"rd", "the initrd comes last");
        assert_eq!(DomainCreate::from_bytes(&cb), c);
        assert_eq!(field_str(&c.cmdline), Some("spin"));
        assert_eq!(field_str(&[0xFF, 0]), None);
        assert_eq!(DomState::from_u32(4), Some(DomState::Shutdown));
        assert_eq!(DomState::from_u32(5), None);
    }

    #[test]
    fn irq_route_checks_the_line_and_the_flags() {
        assert_eq!(decode(23, [9, 3, 0, 0, 0, 0]), Ok(Request::IrqRoute { gsi: 9, level: true, active_low: true }));
        assert_eq!(decode(23, [4, 0, 0, 0, 0, 0]), Ok(Request::IrqRoute { gsi: 4, level: false, active_low: false }));
        assert_eq!(decode(23, [24, 1, 0, 0, 0, 0]), Err(Error::Invalid), "beyond the 24 pins");
        assert_eq!(decode(23, [9, 4, 0, 0, 0, 0]), Err(Error::Invalid), "unknown flag");
        assert_eq!(decode(23, [1 << 32, 0, 0, 0, 0, 0]), Err(Error::Invalid));
        let p = PlatformInfo {
            sci_gsi: 9,
            sci_flags: 3,
            pm1a_event: 0xB000,
            pm1a_control: 0xB004,
            pm_timer: 0xB008,
            reserved: 0,
        };
        assert_eq!(PlatformInfo::from_bytes(&p.to_bytes()), p);
    }

    #[test]
    fn host_info_is_40_bytes() {
        assert_eq!(core::mem::size_of::<HostInfo>(), 40);
    }
}

/// The guest side: issuing hypercalls (our guests use this; docs/hypercalls.md shows the
/// same in assembly).
#[cfg(target_arch = "x86_64")]
pub mod client {
    use super::{Call, Error};

    /// VMCALL `call` with up to six arguments; `Ok(result)` or the decoded error.
    ///
    /// # Safety
    /// Only in a guest kernel (CPL 0) under Ferrovisor; pointer arguments must point to
    /// memory the call may read or write as documented for it.
    pub unsafe fn vmcall(call: Call, args: [u64; 6]) -> Result<u64, i64> {
        let ret: i64;
        // SAFETY: forwarded to the caller; VMCALL changes only RAX (the ABI).
        unsafe {
            core::arch::asm!(
                "vmcall",
                inlateout("rax") call as u64 => ret,
                in("rdi") args[0], in("rsi") args[1], in("rdx") args[2],
                in("r10") args[3], in("r8") args[4], in("r9") args[5],
                options(nostack),
            )
        };
        if ret < 0 { Err(ret) } else { Ok(ret as u64) }
    }

    /// The error a negative result stands for.
    pub fn error(code: i64) -> Option<Error> {
        Error::from_code(code)
    }
}
