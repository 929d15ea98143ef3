//! A fake machine for the tests: a domain table the calls really change, a hypervisor log,
//! a PCI configuration space, and a record of every call that changes something.

use abi::hypercall::{self as hc, Call, DomState, DomainCreate, DomainInfo, Error, HostInfo, Trigger, VcpuInfo};
use std::collections::BTreeMap;
use std::format;
use std::string::String;
use std::vec::Vec;

use crate::host::{Acpi, AcpiStatus, DomainOp, Host, PciAddress, SchedParams};

pub struct Mock {
    pub domains: Vec<DomainInfo>,
    pub vcpus: Vec<VcpuInfo>,
    pub host: HostInfo,
    pub params: SchedParams,
    pub log: Vec<u8>,
    pub images: Vec<&'static str>,
    /// Configuration space per function, as 64 dwords.
    pub pci: BTreeMap<PciAddress, [u32; 64]>,
    pub now_ns: u64,
    /// The changing calls, as text (`pause 1`, `weight 1 512`, ...).
    pub calls: Vec<String>,
    /// Every PCI read, to check what the scan probes.
    pub pci_reads: Vec<(PciAddress, u8)>,
    /// The next call that changes something fails with this.
    pub fail_next: Option<Error>,
    /// Domain0's ACPI driver: a PIIX4-like SCI on GSI 9 that has seen 3 timer overflows.
    pub acpi: Acpi,
}

pub fn domain(id: u32, name: &str, state: DomState, mib: u64, vcpus: u32, cpu_ms: u64) -> DomainInfo {
    DomainInfo {
        id,
        state: state as u32,
        name: hc::fixed_str(name),
        memory_bytes: mib << 20,
        vcpus,
        weight: 256,
        cap: 0,
        exit_status: u32::MAX,
        cpu_time_ns: cpu_ms * 1_000_000,
        console_bytes: 0,
        flags: if id == 0 { DomainInfo::FLAG_DOM0 } else { 0 },
        reserved: 0,
    }
}

pub fn vcpu(domain: u32, vcpu: u32, state: hc::VcpuState, cpu: u32, affinity: u64, cpu_ms: u64) -> VcpuInfo {
    VcpuInfo { domain, vcpu, state: state as u32, cpu, affinity, cpu_time_ns: cpu_ms * 1_000_000, ..Default::default() }
}

impl Mock {
    /// Domain0 (named "dom0" by the hypervisor) and two guests on a 2-CPU host.
    pub fn new() -> Self {
        let domains = std::vec![
            domain(0, "dom0", DomState::Running, 32, 1, 1_234),
            domain(1, "web", DomState::Blocked, 64, 2, 56_780),
            domain(2, "db", DomState::Paused, 128, 1, 0),
        ];
        let vcpus = std::vec![
            vcpu(0, 0, hc::VcpuState::Running, 0, u64::MAX, 1_234),
            vcpu(1, 0, hc::VcpuState::Blocked, 1, 0b11, 30_000),
            vcpu(1, 1, hc::VcpuState::Runnable, 0, 0b01, 26_780),
            vcpu(2, 0, hc::VcpuState::Offline, u32::MAX, 0b10, 0),
        ];
        Mock {
            domains,
            vcpus,
            host: HostInfo {
                cpus: 2,
                domains: 3,
                memory_total: 1024 << 20,
                memory_free: 800 << 20,
                tsc_khz: 2_000_000,
                features: 0b11,
            },
            params: SchedParams { slice_ms: 30, ratelimit_us: 1000 },
            log: Vec::new(),
            images: std::vec!["hello64", "dom0"],
            pci: BTreeMap::new(),
            now_ns: 10_000_000_000,
            calls: Vec::new(),
            pci_reads: Vec::new(),
            fail_next: None,
            acpi: Acpi::Active(AcpiStatus {
                gsi: 9,
                level: true,
                active_low: true,
                pm1a_event: 0xB000,
                interrupts: 3,
                timer_overflows: 3,
                power_button: 0,
                other: 0,
                timer_events: false,
            }),
        }
    }

    fn domain_mut(&mut self, id: u32) -> Result<&mut DomainInfo, Error> {
        self.domains.iter_mut().find(|d| d.id == id).ok_or(Error::NoEntry)
    }

    /// Checks the arguments as the hypervisor does (the ABI's own decoder), then records the call.
    fn change(&mut self, call: Call, args: [u64; 6], text: String) -> Result<(), Error> {
        if let Some(e) = self.fail_next.take() {
            return Err(e);
        }
        hc::decode(call as u64, args)?;
        self.calls.push(text);
        Ok(())
    }

    /// Adds a function's header: IDs, class, header type; for bridges the secondary bus.
    pub fn add_pci(&mut self, at: (u8, u8, u8), id: (u16, u16), class: (u8, u8), header_type: u8, secondary: u8) {
        let mut space = [0u32; 64];
        space[0] = u32::from(id.1) << 16 | u32::from(id.0);
        space[2] = u32::from(class.0) << 24 | u32::from(class.1) << 16 | 0x02;
        space[3] = u32::from(header_type) << 16;
        space[6] = u32::from(secondary) << 8 | u32::from(at.0);
        self.pci.insert(PciAddress { bus: at.0, device: at.1, function: at.2 }, space);
    }
}

impl Host for Mock {
    fn version(&mut self) -> Result<u32, Error> {
        Ok(hc::VERSION)
    }

    fn host_info(&mut self) -> Result<HostInfo, Error> {
        Ok(self.host)
    }

    fn domain_list(&mut self, out: &mut [DomainInfo]) -> Result<usize, Error> {
        let n = self.domains.len().min(out.len());
        out[..n].copy_from_slice(&self.domains[..n]);
        Ok(n)
    }

    fn domain_info(&mut self, id: u32) -> Result<DomainInfo, Error> {
        self.domains.iter().find(|d| d.id == id).copied().ok_or(Error::NoEntry)
    }

    fn domain_create(&mut self, spec: &DomainCreate) -> Result<u32, Error> {
        // The spec travels as bytes, as through the real call.
        let spec = DomainCreate::from_bytes(&spec.to_bytes());
        let image = hc::field_str(&spec.image).ok_or(Error::Invalid)?;
        let name = hc::field_str(&spec.name).ok_or(Error::Invalid)?;
        let cmdline = hc::field_str(&spec.cmdline).ok_or(Error::Invalid)?;
        let initrd = match hc::field_str(&spec.initrd).ok_or(Error::Invalid)? {
            "" => String::new(),
            rd => format!(" initrd={rd}"),
        };
        self.change(
            Call::DomainCreate,
            [0; 6],
            format!(
                "create {image} name={name} memory={} vcpus={} weight={} cap={} cmdline={cmdline}{initrd}",
                spec.memory_mib, spec.vcpus, spec.weight, spec.cap
            ),
        )?;
        if !self.images.contains(&image) {
            return Err(Error::NoEntry);
        }
        if spec.weight > 65_535 || spec.cap > 6400 {
            return Err(Error::Invalid);
        }
        if u64::from(spec.memory_mib) << 20 > self.host.memory_free {
            return Err(Error::NoMemory);
        }
        let id = self.domains.iter().map(|d| d.id).max().unwrap_or(0) + 1;
        let mib = if spec.memory_mib == 0 { 16 } else { spec.memory_mib };
        let name = if name.is_empty() { image } else { name };
        self.domains.push(domain(id, name, DomState::Running, mib.into(), spec.vcpus.max(1), 0));
        Ok(id)
    }

    fn domain_op(&mut self, op: DomainOp, id: u32) -> Result<(), Error> {
        self.change(op.call(), [id.into(), 0, 0, 0, 0, 0], format!("{} {id}", op.command()))?;
        let d = self.domain_mut(id)?;
        match op {
            DomainOp::Pause => d.state = DomState::Paused as u32,
            DomainOp::Unpause | DomainOp::Reboot => d.state = DomState::Running as u32,
            DomainOp::Shutdown => d.state = DomState::Shutdown as u32,
            DomainOp::Destroy => self.domains.retain(|d| d.id != id),
        }
        Ok(())
    }

    fn domain_trigger(&mut self, id: u32, trigger: Trigger, vcpu: Option<u32>) -> Result<(), Error> {
        let target = vcpu.map_or(u64::from(u32::MAX), u64::from);
        self.change(
            Call::DomainTrigger,
            [id.into(), trigger as u64, target, 0, 0, 0],
            format!("trigger {id} {trigger:?} {vcpu:?}"),
        )?;
        let d = self.domain_mut(id)?;
        if vcpu.is_some_and(|v| v >= d.vcpus) {
            return Err(Error::NoEntry);
        }
        Ok(())
    }

    fn sched_set_weight(&mut self, id: u32, weight: u32) -> Result<(), Error> {
        self.change(Call::SchedSetWeight, [id.into(), weight.into(), 0, 0, 0, 0], format!("weight {id} {weight}"))?;
        self.domain_mut(id)?.weight = weight;
        Ok(())
    }

    fn sched_set_cap(&mut self, id: u32, cap: u32) -> Result<(), Error> {
        self.change(Call::SchedSetCap, [id.into(), cap.into(), 0, 0, 0, 0], format!("cap {id} {cap}"))?;
        self.domain_mut(id)?.cap = cap;
        Ok(())
    }

    fn sched_get_params(&mut self) -> Result<SchedParams, Error> {
        Ok(SchedParams::from_packed(u64::from(self.params.slice_ms) << 32 | u64::from(self.params.ratelimit_us)))
    }

    fn sched_set_params(&mut self, p: SchedParams) -> Result<(), Error> {
        let args = [p.slice_ms.into(), p.ratelimit_us.into(), 0, 0, 0, 0];
        self.change(Call::SchedSetParams, args, format!("params {} {}", p.slice_ms, p.ratelimit_us))?;
        self.params = p;
        Ok(())
    }

    fn vcpu_info(&mut self, id: u32, vcpu: u32) -> Result<VcpuInfo, Error> {
        self.vcpus.iter().find(|v| v.domain == id && v.vcpu == vcpu).copied().ok_or(Error::NoEntry)
    }

    fn vcpu_pin(&mut self, id: u32, vcpu: u32, cpus: u64) -> Result<(), Error> {
        self.change(Call::VcpuPin, [id.into(), vcpu.into(), cpus, 0, 0, 0], format!("pin {id} {vcpu} {cpus:#x}"))?;
        let v = self.vcpus.iter_mut().find(|v| v.domain == id && v.vcpu == vcpu).ok_or(Error::NoEntry)?;
        v.affinity = cpus;
        Ok(())
    }

    fn hypervisor_log_read(&mut self, buf: &mut [u8], cursor: &mut u64) -> Result<usize, Error> {
        let at = (*cursor as usize).min(self.log.len());
        let n = (self.log.len() - at).min(buf.len());
        buf[..n].copy_from_slice(&self.log[at..at + n]);
        *cursor = (at + n) as u64;
        Ok(n)
    }

    fn pci_read32(&mut self, at: PciAddress, offset: u8) -> u32 {
        self.pci_reads.push((at, offset));
        self.pci.get(&at).map_or(0xFFFF_FFFF, |space| space[usize::from(offset / 4)])
    }

    fn now_ns(&mut self) -> u64 {
        self.now_ns
    }

    fn idle(&mut self) {
        // One tick of Domain0's 10 ms timer.
        self.now_ns += 10_000_000;
    }

    fn acpi_status(&mut self) -> Acpi {
        self.acpi
    }

    fn acpi_timer_events(&mut self, on: bool) {
        self.calls.push(format!("acpi timer-overflow {}", if on { "on" } else { "off" }));
        if let Acpi::Active(status) = &mut self.acpi {
            status.timer_events = on;
        }
    }
}
