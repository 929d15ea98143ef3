//! What the shell needs from the machine: typed hypercalls and PCI configuration reads.

use abi::hypercall::{Call, DomainCreate, DomainInfo, Error, HostInfo, Trigger, VcpuInfo};

/// One lifecycle operation on a domain (the calls that take only a domain ID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainOp {
    Destroy,
    Pause,
    Unpause,
    Shutdown,
    Reboot,
}

impl DomainOp {
    pub fn call(self) -> Call {
        match self {
            DomainOp::Destroy => Call::DomainDestroy,
            DomainOp::Pause => Call::DomainPause,
            DomainOp::Unpause => Call::DomainUnpause,
            DomainOp::Shutdown => Call::DomainShutdown,
            DomainOp::Reboot => Call::DomainReboot,
        }
    }

    /// The shell command (and the verb in messages).
    pub fn command(self) -> &'static str {
        match self {
            DomainOp::Destroy => "destroy",
            DomainOp::Pause => "pause",
            DomainOp::Unpause => "unpause",
            DomainOp::Shutdown => "shutdown",
            DomainOp::Reboot => "reboot",
        }
    }
}

/// The credit scheduler's global parameters (SchedGetParams / SchedSetParams).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedParams {
    pub slice_ms: u32,
    pub ratelimit_us: u32,
}

impl SchedParams {
    /// SchedGetParams packs both into one result: `slice_ms << 32 | ratelimit_us`.
    pub fn from_packed(v: u64) -> Self {
        SchedParams { slice_ms: (v >> 32) as u32, ratelimit_us: v as u32 }
    }
}

/// A PCI function (configuration mechanism #1 addresses up to 256 buses, 32 devices, 8 functions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl PciAddress {
    /// The CONFIG_ADDRESS value (port 0xCF8) for the dword at `offset`.
    pub fn config_address(self, offset: u8) -> u32 {
        1 << 31
            | u32::from(self.bus) << 16
            | u32::from(self.device & 0x1F) << 11
            | u32::from(self.function & 7) << 8
            | u32::from(offset & 0xFC)
    }
}

impl core::fmt::Display for PciAddress {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// Domain0's ACPI event driver as the `acpi` command sees it: set up at boot from
/// `PlatformInfo` and `IrqRoute`, then counting SCIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acpi {
    /// The machine has no SCI (or no PM1 event block to take its events from).
    NoSci,
    /// Setting it up failed: this call refused.
    Failed { call: Call, error: Error },
    /// The SCI is routed to Domain0 and handled.
    Active(AcpiStatus),
}

/// The SCI's line and what it has delivered so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcpiStatus {
    /// The SCI's global system interrupt.
    pub gsi: u32,
    /// Level-triggered (else edge).
    pub level: bool,
    pub active_low: bool,
    /// The PM1a event block's I/O port (PM1_STS; PM1_EN at +2).
    pub pm1a_event: u16,
    /// SCIs taken.
    pub interrupts: u64,
    /// SCIs with TMR_STS set: the PM timer's bit 23 flipped.
    pub timer_overflows: u64,
    /// SCIs with PWRBTN_STS set.
    pub power_button: u64,
    /// SCIs with neither (another status bit, a GPE, or nothing).
    pub other: u64,
    /// TMR_EN is set: the PM timer's overflow raises the SCI.
    pub timer_events: bool,
}

/// Everything the shell asks of the machine. Each method is one hypercall (or one PCI
/// configuration read); errors are the hypervisor's documented codes.
pub trait Host {
    /// [`Call::Version`]: major in bits 31:16, minor in 15:0.
    fn version(&mut self) -> Result<u32, Error>;
    fn host_info(&mut self) -> Result<HostInfo, Error>;
    /// Fills the front of `out`; returns how many records were written.
    fn domain_list(&mut self, out: &mut [DomainInfo]) -> Result<usize, Error>;
    fn domain_info(&mut self, id: u32) -> Result<DomainInfo, Error>;
    /// Returns the new domain's ID.
    fn domain_create(&mut self, spec: &DomainCreate) -> Result<u32, Error>;
    fn domain_op(&mut self, op: DomainOp, id: u32) -> Result<(), Error>;
    /// [`Call::DomainTrigger`]: raises `trigger` on one vCPU, or all of them (`None`).
    fn domain_trigger(&mut self, id: u32, trigger: Trigger, vcpu: Option<u32>) -> Result<(), Error>;
    fn sched_set_weight(&mut self, id: u32, weight: u32) -> Result<(), Error>;
    fn sched_set_cap(&mut self, id: u32, cap: u32) -> Result<(), Error>;
    fn sched_get_params(&mut self) -> Result<SchedParams, Error>;
    fn sched_set_params(&mut self, params: SchedParams) -> Result<(), Error>;
    /// `NoEntry` past the domain's last vCPU.
    fn vcpu_info(&mut self, id: u32, vcpu: u32) -> Result<VcpuInfo, Error>;
    fn vcpu_pin(&mut self, id: u32, vcpu: u32, cpus: u64) -> Result<(), Error>;
    /// Reads the hypervisor log from stream position `*cursor` (or the oldest byte still
    /// kept) into `buf`, advancing `*cursor`; 0 when there is nothing more.
    fn hypervisor_log_read(&mut self, buf: &mut [u8], cursor: &mut u64) -> Result<usize, Error>;
    /// A configuration-space dword; `0xFFFF_FFFF` where no function answers.
    fn pci_read32(&mut self, at: PciAddress, offset: u8) -> u32;
    /// A monotonic clock (nanoseconds since the host started, or any fixed origin).
    fn now_ns(&mut self) -> u64;
    /// Waits a little (until the next interrupt or timer tick) without spinning.
    fn idle(&mut self);
    /// Domain0's ACPI event driver: its setup and its counters.
    fn acpi_status(&mut self) -> Acpi;
    /// Sets or clears TMR_EN (PM1_EN bit 0), clearing a stale TMR_STS first. Only
    /// meaningful when [`Host::acpi_status`] is [`Acpi::Active`]; does nothing otherwise.
    fn acpi_timer_events(&mut self, on: bool);
}
