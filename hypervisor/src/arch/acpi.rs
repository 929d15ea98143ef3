//! Machine discovery from ACPI: the CPUs and interrupt controllers in the MADT.
//!
//! The `acpi` crate parses the tables; we only tell it how to see physical memory (the
//! bootloader's direct map) and keep the facts the hypervisor needs in plain types.

use crate::mm::paging;
use acpi::InterruptModel;
use acpi::platform::ProcessorState;
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
use alloc::vec::Vec;
use core::ptr::NonNull;

/// Maps ACPI tables through the direct map of physical memory; nothing to undo.
#[derive(Clone, Copy)]
struct DirectMap;

impl AcpiHandler for DirectMap {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        let virt = paging::phys_to_virt(physical_address as u64);
        // SAFETY: the bootloader maps all physical memory (at least the first 4 GiB, where
        // firmware keeps ACPI tables) at the direct-map offset; `virt` is non-null.
        unsafe { PhysicalMapping::new(physical_address, NonNull::new_unchecked(virt as *mut T), size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// One processor from the MADT.
#[derive(Debug, Clone, Copy)]
pub struct CpuEntry {
    pub apic_id: u32,
    pub uid: u32,
    pub is_bsp: bool,
    /// Disabled processors are listed by firmware but must not be started.
    pub usable: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct IoApicEntry {
    pub id: u8,
    pub address: u32,
    pub gsi_base: u32,
}

/// What the hypervisor learned from ACPI.
#[derive(Debug)]
pub struct Platform {
    pub cpus: Vec<CpuEntry>,
    pub io_apics: Vec<IoApicEntry>,
    pub local_apic_address: u64,
    pub has_legacy_pics: bool,
    /// I/O port of the ACPI PM timer, if the FADT describes one.
    pub pm_timer_port: Option<u64>,
    /// The machine's power ports (PM1a/PM1b event and control blocks, from the FADT),
    /// which Domain0 gets.
    pub power_ports: Vec<core::ops::RangeInclusive<u16>>,
}

/// Errors a person can act on.
#[derive(Debug)]
pub enum DiscoveryError {
    NoRsdp,
    Tables(acpi::AcpiError),
    NotApic,
}

impl core::fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoRsdp => {
                write!(f, "the firmware reported no ACPI RSDP; Ferrovisor needs ACPI (MADT) to find the CPUs")
            }
            Self::Tables(e) => {
                write!(f, "the ACPI tables could not be parsed ({e:?}); check the firmware's ACPI support")
            }
            Self::NotApic => write!(f, "the MADT does not describe an APIC system; Ferrovisor needs local APICs"),
        }
    }
}

static POWER_PORTS: spin::Once<Vec<core::ops::RangeInclusive<u16>>> = spin::Once::new();
static FIXED_HARDWARE: spin::Once<abi::hypercall::PlatformInfo> = spin::Once::new();

/// The machine's ACPI fixed hardware for Domain0 (`PlatformInfo`); no SCI and no ports
/// before discovery or without a FADT.
pub fn fixed_hardware() -> abi::hypercall::PlatformInfo {
    FIXED_HARDWARE.get().copied().unwrap_or(abi::hypercall::PlatformInfo { sci_gsi: u32::MAX, ..Default::default() })
}

/// The machine's power ports as discovered (empty before discovery).
pub fn power_ports() -> &'static [core::ops::RangeInclusive<u16>] {
    POWER_PORTS.get().map_or(&[], |v| v.as_slice())
}

/// Reads the MADT (and FADT) reachable from the RSDP at `rsdp_phys`.
pub fn discover(rsdp_phys: Option<u64>) -> Result<Platform, DiscoveryError> {
    let rsdp = rsdp_phys.ok_or(DiscoveryError::NoRsdp)?;
    // SAFETY: the bootloader found the RSDP at this physical address (it validated the
    // signature and checksum), and the crate validates it again.
    let tables = unsafe { AcpiTables::from_rsdp(DirectMap, rsdp as usize) }.map_err(DiscoveryError::Tables)?;
    let info = tables.platform_info().map_err(DiscoveryError::Tables)?;
    let mut power_ports = Vec::new();
    let mut fixed = abi::hypercall::PlatformInfo { sci_gsi: u32::MAX, ..Default::default() };
    if let Ok(fadt) = tables.find_table::<acpi::fadt::Fadt>() {
        let io_port = |b: Option<acpi::address::GenericAddress>| {
            b.filter(|b| b.address_space == acpi::address::AddressSpace::SystemIo)
                .and_then(|b| u32::try_from(b.address).ok())
                .unwrap_or(0)
        };
        fixed.pm1a_event = io_port(fadt.pm1a_event_block().ok());
        fixed.pm1a_control = io_port(fadt.pm1a_control_block().ok());
        fixed.pm_timer = io_port(fadt.pm_timer_block().ok().flatten());
        // The SCI is an ISA interrupt number: an interrupt source override may move it to
        // another GSI and give its polarity and trigger mode; without one, ACPI says
        // "sharable, level, active low".
        let sci = fadt.sci_interrupt;
        if sci != 0
            && let InterruptModel::Apic(ref apic) = info.interrupt_model
        {
            use acpi::platform::interrupt::{Polarity, TriggerMode};
            let iso = apic.interrupt_source_overrides.iter().find(|o| u16::from(o.isa_source) == sci);
            let gsi = iso.map_or(u32::from(sci), |o| o.global_system_interrupt);
            let level = !matches!(iso.map(|o| o.trigger_mode), Some(TriggerMode::Edge));
            let low = !matches!(iso.map(|o| o.polarity), Some(Polarity::ActiveHigh));
            fixed.sci_gsi = gsi;
            fixed.sci_flags = (if level { abi::hypercall::IRQ_LEVEL as u32 } else { 0 })
                | if low { abi::hypercall::IRQ_ACTIVE_LOW as u32 } else { 0 };
        }
        let blocks = [
            fadt.pm1a_event_block().ok(),
            fadt.pm1b_event_block().ok().flatten(),
            fadt.pm1a_control_block().ok(),
            fadt.pm1b_control_block().ok().flatten(),
        ];
        for b in blocks.into_iter().flatten() {
            let bytes = u64::from(b.bit_width / 8);
            if b.address_space == acpi::address::AddressSpace::SystemIo
                && b.address != 0
                && bytes > 0
                && let (Ok(start), Ok(end)) = (u16::try_from(b.address), u16::try_from(b.address + bytes - 1))
            {
                power_ports.push(start..=end);
            }
        }
    }
    let InterruptModel::Apic(apic) = info.interrupt_model else { return Err(DiscoveryError::NotApic) };
    let mut cpus = Vec::new();
    if let Some(p) = info.processor_info {
        let bsp = p.boot_processor;
        cpus.push(CpuEntry { apic_id: bsp.local_apic_id, uid: bsp.processor_uid, is_bsp: true, usable: true });
        for ap in p.application_processors.iter() {
            let usable = !matches!(ap.state, ProcessorState::Disabled);
            cpus.push(CpuEntry { apic_id: ap.local_apic_id, uid: ap.processor_uid, is_bsp: false, usable });
        }
    }
    let io_apics = apic
        .io_apics
        .iter()
        .map(|io| IoApicEntry { id: io.id, address: io.address, gsi_base: io.global_system_interrupt_base })
        .collect();
    POWER_PORTS.call_once(|| power_ports.clone());
    FIXED_HARDWARE.call_once(|| fixed);
    Ok(Platform {
        cpus,
        io_apics,
        local_apic_address: apic.local_apic_address,
        has_legacy_pics: apic.also_has_legacy_pics,
        pm_timer_port: info.pm_timer.map(|t| t.base.address),
        power_ports,
    })
}
