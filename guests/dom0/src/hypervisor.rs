//! [`xl::Host`] for real: each method one VMCALL with buffers on our stack (Domain0 is
//! identity-mapped, so their addresses are the guest-virtual pointers the ABI wants), and
//! PCI configuration mechanism #1 through ports 0xCF8/0xCFC.

use abi::hypercall::{self as hc, Call, DomainCreate, DomainInfo, Error, HostInfo, PlatformInfo, Trigger, VcpuInfo};
use core::arch::asm;
use xl::{Acpi, DomainOp, Host, MAX_DOMAINS, PciAddress, SchedParams};

use crate::serial::Serial;

const PCI_CONFIG_ADDRESS: u16 = 0xCF8;
const PCI_CONFIG_DATA: u16 = 0xCFC;

/// One hypercall. Every pointer we pass is to a live buffer of the size the call expects.
fn call(call: Call, args: [u64; 6]) -> Result<u64, Error> {
    // SAFETY: CPL 0 under Ferrovisor; callers pass pointers to buffers they own, sized as
    // the call documents (the hypervisor checks them again and answers EFAULT otherwise).
    let result = unsafe { hc::client::vmcall(call, args) };
    // A code this ABI version does not define cannot be told apart from a missing call.
    result.map_err(|code| Error::from_code(code).unwrap_or(Error::NoSys))
}

fn ptr<T: ?Sized>(value: &T) -> u64 {
    value as *const T as *const u8 as u64
}

fn mut_ptr<T: ?Sized>(value: &mut T) -> u64 {
    value as *mut T as *mut u8 as u64
}

fn outl(port: u16, value: u32) {
    // SAFETY: the PCI configuration address port; a write touches no memory of ours.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags)) };
}

fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: the PCI configuration data port; a read touches no memory of ours.
    unsafe { asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack, preserves_flags)) };
    value
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

pub struct Hypervisor {
    tsc_khz: u64,
    /// The ACPI driver's setup (`acpi::init`), for the `acpi` command.
    pub acpi: Acpi,
}

impl Hypervisor {
    pub fn new() -> Self {
        let from_cpuid = crate::interrupts::timing_leaf().map_or(0, |(tsc, _)| tsc);
        let tsc_khz = if from_cpuid != 0 {
            from_cpuid
        } else {
            let mut info = HostInfo::default();
            let _ = call(Call::HostInfo, [mut_ptr(&mut info), 0, 0, 0, 0, 0]);
            info.tsc_khz
        };
        Hypervisor { tsc_khz: tsc_khz.max(1), acpi: Acpi::NoSci }
    }

    /// That domain's console output from stream position `*cursor` on.
    pub fn console_read_other(&mut self, id: u32, buf: &mut [u8], cursor: &mut u64) -> Result<usize, Error> {
        let len = (buf.len() as u64).min(hc::MAX_READ);
        let n = call(Call::ConsoleReadOther, [id.into(), mut_ptr(buf), len, mut_ptr(cursor), 0, 0])?;
        Ok((n as usize).min(buf.len()))
    }

    /// Queues `bytes` as that domain's console input; returns how many were taken.
    pub fn console_write_other(&mut self, id: u32, bytes: &[u8]) -> Result<usize, Error> {
        let len = (bytes.len() as u64).min(hc::MAX_CONSOLE_WRITE);
        Ok(call(Call::ConsoleWriteOther, [id.into(), ptr(bytes), len, 0, 0, 0])? as usize)
    }

    /// The machine's ACPI fixed hardware: the SCI and the PM1 ports.
    pub fn platform_info(&mut self) -> Result<PlatformInfo, Error> {
        let mut bytes = [0u8; PlatformInfo::SIZE];
        call(Call::PlatformInfo, [mut_ptr(&mut bytes), 0, 0, 0, 0, 0])?;
        Ok(PlatformInfo::from_bytes(&bytes))
    }

    /// Routes the machine's line `gsi` to our virtual I/O APIC pin `gsi` (`IRQ_LEVEL`,
    /// `IRQ_ACTIVE_LOW` flags: the host line's trigger and polarity).
    pub fn irq_route(&mut self, gsi: u32, flags: u64) -> Result<(), Error> {
        call(Call::IrqRoute, [gsi.into(), flags, 0, 0, 0, 0]).map(drop)
    }

    /// Returns only if the hypervisor refuses.
    pub fn power_off(&mut self) -> Error {
        match call(Call::HostPowerOff, [0; 6]) {
            Err(e) => e,
            Ok(_) => Error::NoSys,
        }
    }
}

impl Host for Hypervisor {
    fn version(&mut self) -> Result<u32, Error> {
        Ok(call(Call::Version, [0; 6])? as u32)
    }

    fn host_info(&mut self) -> Result<HostInfo, Error> {
        let mut info = HostInfo::default();
        call(Call::HostInfo, [mut_ptr(&mut info), 0, 0, 0, 0, 0])?;
        Ok(info)
    }

    fn domain_list(&mut self, out: &mut [DomainInfo]) -> Result<usize, Error> {
        let mut bytes = [0u8; DomainInfo::SIZE * MAX_DOMAINS];
        let max = out.len().min(MAX_DOMAINS);
        let n = call(Call::DomainList, [mut_ptr(&mut bytes[..]), max as u64, 0, 0, 0, 0])? as usize;
        let (records, _) = bytes.as_chunks::<{ DomainInfo::SIZE }>();
        let mut written = 0;
        for (slot, record) in out.iter_mut().zip(records.iter()).take(n.min(max)) {
            *slot = DomainInfo::from_bytes(record);
            written += 1;
        }
        Ok(written)
    }

    fn domain_info(&mut self, id: u32) -> Result<DomainInfo, Error> {
        let mut bytes = [0u8; DomainInfo::SIZE];
        call(Call::DomainInfo, [id.into(), mut_ptr(&mut bytes), 0, 0, 0, 0])?;
        Ok(DomainInfo::from_bytes(&bytes))
    }

    fn domain_create(&mut self, spec: &DomainCreate) -> Result<u32, Error> {
        let bytes = spec.to_bytes();
        let id = call(Call::DomainCreate, [ptr(&bytes), 0, 0, 0, 0, 0])?;
        u32::try_from(id).map_err(|_| Error::Invalid)
    }

    fn domain_op(&mut self, op: DomainOp, id: u32) -> Result<(), Error> {
        call(op.call(), [id.into(), 0, 0, 0, 0, 0]).map(drop)
    }

    fn domain_trigger(&mut self, id: u32, trigger: Trigger, vcpu: Option<u32>) -> Result<(), Error> {
        let target = vcpu.map_or(u64::from(u32::MAX), u64::from);
        call(Call::DomainTrigger, [id.into(), trigger as u64, target, 0, 0, 0]).map(drop)
    }

    fn sched_set_weight(&mut self, id: u32, weight: u32) -> Result<(), Error> {
        call(Call::SchedSetWeight, [id.into(), weight.into(), 0, 0, 0, 0]).map(drop)
    }

    fn sched_set_cap(&mut self, id: u32, cap: u32) -> Result<(), Error> {
        call(Call::SchedSetCap, [id.into(), cap.into(), 0, 0, 0, 0]).map(drop)
    }

    fn sched_get_params(&mut self) -> Result<SchedParams, Error> {
        call(Call::SchedGetParams, [0; 6]).map(SchedParams::from_packed)
    }

    fn sched_set_params(&mut self, p: SchedParams) -> Result<(), Error> {
        call(Call::SchedSetParams, [p.slice_ms.into(), p.ratelimit_us.into(), 0, 0, 0, 0]).map(drop)
    }

    fn vcpu_info(&mut self, id: u32, vcpu: u32) -> Result<VcpuInfo, Error> {
        let mut bytes = [0u8; VcpuInfo::SIZE];
        call(Call::VcpuInfo, [id.into(), vcpu.into(), mut_ptr(&mut bytes), 0, 0, 0])?;
        Ok(VcpuInfo::from_bytes(&bytes))
    }

    fn vcpu_pin(&mut self, id: u32, vcpu: u32, cpus: u64) -> Result<(), Error> {
        call(Call::VcpuPin, [id.into(), vcpu.into(), cpus, 0, 0, 0]).map(drop)
    }

    fn hypervisor_log_read(&mut self, buf: &mut [u8], cursor: &mut u64) -> Result<usize, Error> {
        let len = (buf.len() as u64).min(hc::MAX_READ);
        let n = call(Call::HypervisorLogRead, [mut_ptr(buf), len, mut_ptr(cursor), 0, 0, 0])?;
        Ok((n as usize).min(buf.len()))
    }

    fn pci_read32(&mut self, at: PciAddress, offset: u8) -> u32 {
        outl(PCI_CONFIG_ADDRESS, at.config_address(offset));
        inl(PCI_CONFIG_DATA)
    }

    fn idle(&mut self) {
        crate::interrupts::idle();
        crate::acpi::check_power_button(self, &mut Serial::new());
    }

    fn acpi_status(&mut self) -> Acpi {
        crate::acpi::status(self.acpi)
    }

    fn acpi_timer_events(&mut self, on: bool) {
        if let Acpi::Active(_) = self.acpi {
            crate::acpi::set_timer_events(on);
        }
    }

    fn now_ns(&mut self) -> u64 {
        (u128::from(rdtsc()) * 1_000_000 / u128::from(self.tsc_khz)) as u64
    }
}
