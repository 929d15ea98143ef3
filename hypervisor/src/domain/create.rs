//! Building a domain from its configuration and its image in the boot bundle: memory,
//! EPT, image, boot area, vCPUs with their VMCS.

use super::boot_area;
use super::firmware;
use super::memory::GuestMemory;
use super::vcpu::{self, Vcpu, VmcsSetup};
use super::{Domain, DomainRuntime, DomainSpec, DomainState, LineBuffer};
use crate::loader::multiboot;
use crate::loader::plan::{EntryMode, LoadPlan};
use crate::mm::addr::{GuestPhysAddr, HostPhysAddr};
use crate::mm::ept::{Ept, EptPerms, Mapping, MemType, TableMemory};
use crate::mm::{paging, phys};
use crate::vmx;
use abi::bundle::{Entry, EntryKind};
use abi::config::GuestMode;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};
use spin::{Mutex, Once};

static NEXT_DOMAIN_ID: AtomicU32 = AtomicU32::new(1);

/// A DomU's ID: the next one, never 0 (Domain0's) and never one a registered domain
/// has, also once the counter wraps after 2^32 domains (guests that reset themselves
/// get a new ID each time).
fn new_domu_id() -> u32 {
    loop {
        let id = NEXT_DOMAIN_ID.fetch_add(1, Ordering::Relaxed);
        if id != 0 && super::find(id).is_none() {
            return id;
        }
    }
}

/// EPT tables live in frames reached through the direct map.
pub struct FrameTables;

impl TableMemory for FrameTables {
    fn alloc_table(&mut self) -> Option<HostPhysAddr> {
        let pa = phys::allocate()?;
        // SAFETY: a fresh frame, ours alone, through the direct map.
        unsafe { core::ptr::write_bytes(paging::phys_to_virt(pa) as *mut u8, 0, 4096) };
        Some(HostPhysAddr(pa))
    }

    fn table(&mut self, pa: HostPhysAddr) -> &mut [u64; 512] {
        // SAFETY: `pa` is a table frame this memory allocated (the EPT only passes
        // those), 4 KiB, aligned, reached through the direct map.
        unsafe { &mut *(paging::phys_to_virt(pa.0) as *mut [u64; 512]) }
    }

    fn free_table(&mut self, pa: HostPhysAddr) {
        phys::deallocate(pa.0);
    }
}

/// I/O and MSR bitmaps shared by every DomU: all ones, so every port and every MSR
/// access exits and is decided by the hypervisor (SDM Vol. 3C "I/O-Bitmap Addresses",
/// "MSR-Bitmap Address").
struct Bitmaps {
    io_a: u64,
    io_b: u64,
    msr: u64,
}

static BITMAPS: Once<Option<Bitmaps>> = Once::new();

fn bitmaps() -> Option<&'static Bitmaps> {
    BITMAPS
        .call_once(|| {
            let frame = || {
                let pa = phys::allocate()?;
                // SAFETY: fresh frame through the direct map.
                unsafe { core::ptr::write_bytes(paging::phys_to_virt(pa) as *mut u8, 0xFF, 4096) };
                Some(pa)
            };
            Some(Bitmaps { io_a: frame()?, io_b: frame()?, msr: frame()? })
        })
        .as_ref()
}

/// The boot processor's local APIC as PC firmware leaves it: software-enabled, LINT0
/// wired to the 8259 (ExtINT) and LINT1 to NMI, the "virtual wire" mode in which an OS
/// that never touches its APIC still gets the PIC's interrupts (SeaBIOS does the same).
fn virtual_wire(lapic: &mut crate::devices::lapic::LocalApic) {
    use crate::devices::lapic::{REG_LVT_LINT0, REG_LVT_LINT1, REG_SVR, SVR_ENABLE};
    const EXTINT: u32 = 7 << 8;
    const NMI: u32 = 4 << 8;
    let _ = lapic.mmio_write(REG_SVR, SVR_ENABLE | 0xFF, 0);
    let _ = lapic.mmio_write(REG_LVT_LINT0, EXTINT, 0);
    let _ = lapic.mmio_write(REG_LVT_LINT1, NMI, 0);
}

/// The machine's PCI devices go to Domain0, as in Xen: their configuration space through
/// the ports (`DOM0_PORTS`), their memory BARs mapped 1:1 (uncacheable) into its EPT and
/// their I/O BARs opened in its I/O bitmap. The host bridge stays the hypervisor's.
/// Returns the I/O ranges to open. A BAR that would overlap Domain0's RAM or its
/// emulated APIC pages is left out, saying so.
fn pci_passthrough(
    name: &str,
    ept: &mut Ept,
    tables: &mut FrameTables,
    ram: u64,
) -> Vec<core::ops::RangeInclusive<u16>> {
    use crate::pci_bars::Bar;
    let mut io = Vec::new();
    let machine_ram = phys::machine_ram();
    let (lapic, _) = crate::arch::apic::base_msr();
    let mut kept: Vec<(u64, u64)> = crate::arch::ioapic::pages().into_iter().map(|p| (p, p + 4096)).collect();
    kept.push((lapic, lapic + 4096));
    let functions = crate::arch::pci::enumerate();
    // The host bridges stay the hypervisor's: Domain0's writes to their address
    // registers are dropped (`arch::pci::dom0_config`).
    crate::arch::pci::keep(functions.iter().filter(|f| f.class == 0x06 && f.subclass == 0x00));
    for f in functions {
        if f.class == 0x06 && f.subclass == 0x00 {
            continue;
        }
        let at = format!("{:02x}:{:02x}.{} {:04x}:{:04x}", f.bus, f.dev, f.func, f.vendor, f.device);
        for bar in f.bars.iter().filter(|b| b.is_assigned()) {
            match *bar {
                Bar::Io { base, size } => {
                    io.push(base..=base.saturating_add(size - 1));
                    log::info!("passthrough: {at} I/O {base:#x}+{size:#x} to {name}");
                }
                Bar::Memory { base, size, .. } => {
                    let end = base.saturating_add(size);
                    let apic_pages = [firmware::IOAPIC_GPA, firmware::LAPIC_GPA];
                    if base < ram || apic_pages.iter().any(|&p| p < end && base < p + 4096) {
                        log::warn!(
                            "passthrough: {at} memory {base:#x}+{size:#x} overlaps {name}'s RAM or APIC pages; not mapped"
                        );
                        continue;
                    }
                    if !crate::pci_bars::dom0_may_map(base, size, &machine_ram, &kept) {
                        log::warn!(
                            "passthrough: {at} memory {base:#x}+{size:#x} is not in a hole of the machine's memory map \
                             (it overlaps RAM or the hypervisor's APICs); not mapped"
                        );
                        continue;
                    }
                    let m = Mapping {
                        gpa: GuestPhysAddr(base),
                        hpa: HostPhysAddr(base),
                        len: size,
                        perms: EptPerms::READ | EptPerms::WRITE,
                        mem_type: MemType::Uncacheable,
                    };
                    match ept.map(tables, &m) {
                        Ok(_) => log::info!("passthrough: {at} memory {base:#x}+{size:#x} to {name}"),
                        Err(e) => log::warn!("passthrough: {at} memory {base:#x}+{size:#x} not mapped: {e}"),
                    }
                }
            }
        }
    }
    io
}

/// Makes the VMCS that was current when `create` began current again, on every way out.
struct RestoreVmcs(u64);

impl Drop for RestoreVmcs {
    fn drop(&mut self) {
        if self.0 != u64::MAX {
            // SAFETY: it was current on this CPU when `create` began, so it is a valid VMCS
            // current nowhere else (its vCPU's lock is held by our caller).
            if let Err(e) = unsafe { vmx::instr::vmptrld(self.0) } {
                log::error!("VMPTRLD of the creating vCPU's VMCS failed: {e:?}");
            }
        }
    }
}

/// The ports Domain0 reaches directly, without exits: the machine's first serial port
/// (its console). PCI configuration mechanism #1 and the reset control register
/// (0xCF8-0xCFF) are its too, but exit, so that the host bridges' address registers
/// stay the hypervisor's (`arch::pci::dom0_config`).
pub const DOM0_PORTS: [core::ops::RangeInclusive<u16>; 1] = [0x3F8..=0x3FF];

/// Domain0's I/O bitmaps: every port exits except [`DOM0_PORTS`] and `extra` (the I/O
/// BARs of the PCI devices it gets). Made once.
fn dom0_io_bitmaps(extra: &[core::ops::RangeInclusive<u16>]) -> Option<(u64, u64)> {
    static DOM0: Once<Option<(u64, u64)>> = Once::new();
    *DOM0.call_once(|| {
        let a = phys::allocate()?;
        let b = phys::allocate()?;
        for pa in [a, b] {
            // SAFETY: fresh frames, ours alone, through the direct map.
            unsafe { core::ptr::write_bytes(paging::phys_to_virt(pa) as *mut u8, 0xFF, 4096) };
        }
        for port in DOM0_PORTS.iter().chain(extra).flat_map(|r| r.clone()) {
            // Bitmap A covers ports 0x0000-0x7FFF, B 0x8000-0xFFFF; a clear bit lets the
            // access through (SDM Vol. 3C "I/O-Bitmap Addresses").
            let (frame, bit) = if port < 0x8000 { (a, port) } else { (b, port - 0x8000) };
            let byte = paging::phys_to_virt(frame) + u64::from(bit / 8);
            // SAFETY: inside the frame just allocated (bit / 8 < 4096).
            unsafe { *(byte as *mut u8) &= !(1 << (bit % 8)) };
        }
        Some((a, b))
    })
}

/// Creates the domain described by `config` from `image`. Errors are sentences for the
/// boot log.
pub fn create(name: &str, spec: &DomainSpec, image: Entry, initrd: Option<Entry>) -> Result<Arc<Domain>, String> {
    let caps = vmx::capabilities().ok_or("VMX is not available")?;
    let controls = vmx::controls::compute(caps, &vmx::controls::default_request(caps)).map_err(|e| e.to_string())?;
    let size = u64::from(spec.memory_mib) << 20;
    if size > firmware::MMIO_HOLE_START {
        // Guest RAM is mapped in one run from address 0; above 3 GiB it would cover the
        // PCI hole and the APIC pages the e820 map reserves.
        return Err(format!(
            "domain {}: memory = {} MiB is more than the {} MiB this version maps below the PCI hole; use at most that",
            name,
            spec.memory_mib,
            firmware::MMIO_HOLE_START >> 20
        ));
    }
    if initrd.is_some() && image.kind != EntryKind::BzImage {
        return Err(format!(
            "domain {name}: `initrd` is for Linux kernels (bzImage); image {} is of kind {}",
            image.name, image.kind
        ));
    }
    // A Linux kernel: the boot protocol's layout (domain::linux), loaded like the others
    // as segments (the kernel, the ramdisk) with the zero page among the boot blobs.
    let mut linux = None;
    let plan: LoadPlan = match image.kind {
        EntryKind::BzImage => {
            let bz = crate::loader::bzimage::parse(image.data).map_err(|e| format!("image {}: {e}", image.name))?;
            let boot = super::linux::plan(&bz, size, &spec.cmdline, initrd.as_ref().map(|e| e.data.len() as u64))
                .map_err(|e| format!("domain {name}: {e}"))?;
            let mut segments = alloc::vec![crate::loader::plan::Segment {
                gpa: GuestPhysAddr(boot.kernel_gpa),
                data: bz.kernel,
                mem_size: bz.kernel.len() as u64,
            }];
            if let (Some((gpa, _)), Some(rd)) = (boot.initrd, initrd.as_ref()) {
                segments.push(crate::loader::plan::Segment {
                    gpa: GuestPhysAddr(gpa),
                    data: rd.data,
                    mem_size: rd.data.len() as u64,
                });
            }
            let plan = LoadPlan { segments, entry: boot.entry, mode: EntryMode::Long64, multiboot: None };
            plan.validate(size).map_err(|e| format!("image {}: {e}", image.name))?;
            linux = Some(boot);
            Ok(plan)
        }
        EntryKind::Elf64 => crate::loader::elf64::load(image.data, size),
        EntryKind::MultibootElf32 => crate::loader::multiboot::load(image.data, size),
        EntryKind::Flat => {
            let mode = match spec.mode {
                None | Some(GuestMode::Real16) => EntryMode::Real16,
                Some(GuestMode::Long64) => EntryMode::Long64,
                Some(GuestMode::Protected32) => {
                    return Err(format!(
                        "image {}: 32-bit flat images are not supported; give the kernel a multiboot header",
                        image.name
                    ));
                }
            };
            let Some(load_address) = spec.load_address else {
                return Err(format!("domain {}: a flat image needs `load_address` (and `entry`)", name));
            };
            let entry = spec.entry.unwrap_or(load_address);
            crate::loader::flat::load(image.data, GuestPhysAddr(load_address), entry, mode, size)
        }
        other => {
            return Err(format!(
                "image {} is of kind {other}; this build boots ELF64 and multiboot 1 images",
                image.name
            ));
        }
    }
    .map_err(|e| format!("image {}: {e}", image.name))?;
    // What the hypervisor writes for the guest goes where the image leaves room: the
    // boot area of a 64-bit image (`boot_area::place`), the multiboot information
    // (`multiboot::place_info`, below). A Linux kernel loads at 1 MiB or above and gets
    // the usual area; nothing is written for a real-mode program: all of low memory is
    // its own.
    let area = match plan.mode {
        EntryMode::Long64 if linux.is_none() => boot_area::place(&plan, size).ok_or_else(|| {
            format!(
                "image {}: no room for the 60 KiB boot area beside the image; give the domain more memory",
                image.name
            )
        })?,
        _ => boot_area::BootArea::USUAL,
    };
    let reserved_end = if plan.mode == EntryMode::Long64 && linux.is_some() { boot_area::BOOT_AREA_END } else { 0 };
    // What firmware leaves in memory (ACPI tables in the BIOS area) for the protected-
    // and long-mode guests we boot; a real-mode program owns all of low memory.
    let vcpus = spec.vcpus.max(1);
    let ioapic_id = u8::try_from(vcpus).unwrap_or(0xFE).min(0xFE);
    let blobs = match plan.mode {
        EntryMode::Real16 => Vec::new(),
        EntryMode::Long64 | EntryMode::Protected32 => firmware::firmware_blobs(size, vcpus, ioapic_id),
    };
    for (gpa, bytes) in &blobs {
        if plan.overlaps(GuestPhysAddr(*gpa), bytes.len() as u64) {
            return Err(format!(
                "image {}: a segment overlaps the ACPI tables at {gpa:#x} in the BIOS area; link the guest at or above 1 MiB",
                image.name
            ));
        }
    }
    for seg in &plan.segments {
        if seg.gpa.0 < reserved_end {
            return Err(format!(
                "image {}: a segment loads at {:#x}, inside the boot area below {:#x}; link the guest higher (e.g. 1 MiB)",
                image.name, seg.gpa.0, reserved_end
            ));
        }
    }
    let mut memory = GuestMemory::allocate(size).map_err(|e| e.to_string())?;
    for (gpa, bytes) in &blobs {
        memory.write(*gpa, bytes).map_err(|e| e.to_string())?;
    }
    let mut tables = FrameTables;
    let mut ept = Ept::new(&mut tables).map_err(|e| format!("EPT: {e}"))?;
    for chunk in memory.chunks() {
        let m = Mapping {
            gpa: chunk.gpa,
            hpa: chunk.hpa,
            len: chunk.len,
            perms: EptPerms::all(),
            mem_type: MemType::WriteBack,
        };
        ept.map(&mut tables, &m).map_err(|e| format!("EPT: {e}"))?;
    }
    for seg in &plan.segments {
        memory.write(seg.gpa.0, seg.data).map_err(|e| format!("image {}: {e}", image.name))?;
    }
    // Domain0 is domain 0, as in Xen; DomUs count up from 1 and IDs are never reused.
    let id = if spec.dom0 { 0 } else { new_domu_id() };
    // EBX for a multiboot kernel: where its information went.
    let mut multiboot_info = 0;
    match plan.mode {
        EntryMode::Long64 if linux.is_some() => {
            for (gpa, bytes) in linux.iter().flat_map(|l| l.blobs.iter()) {
                memory.write(*gpa, bytes).map_err(|e| e.to_string())?;
            }
        }
        EntryMode::Long64 => {
            if area != boot_area::BootArea::USUAL {
                log::info!("domain {name}: the image loads inside the usual boot area; it is at {:#x}", area.gdt());
            }
            for (gpa, bytes) in boot_area::build(area, size, id, spec.vcpus, &spec.cmdline) {
                memory.write(gpa, &bytes).map_err(|e| e.to_string())?;
            }
        }
        EntryMode::Protected32 => {
            let cmdline = multiboot::kernel_cmdline(&image.name, &spec.cmdline);
            let info = multiboot::place_info(&plan, size, &cmdline, "Ferrovisor")
                .map_err(|e| format!("image {}: {e}", image.name))?;
            memory.write(info.info_gpa.0, &info.bytes).map_err(|e| e.to_string())?;
            multiboot_info = info.info_gpa.0 as u32;
        }
        EntryMode::Real16 => {}
    }
    let eptp = ept.eptp(caps.ept_ad());
    let bitmaps = bitmaps().ok_or("out of memory for the I/O and MSR bitmaps")?;
    let io_bitmaps = if spec.dom0 {
        let mut io = pci_passthrough(name, &mut ept, &mut tables, size);
        // The machine's ACPI power ports (PM1 event and control blocks): Domain0 owns
        // power management, as in Xen.
        for ports in crate::arch::acpi::power_ports() {
            log::info!("passthrough: ACPI power ports {:#x}-{:#x} to {name}", ports.start(), ports.end());
            io.push(ports.clone());
        }
        dom0_io_bitmaps(&io).ok_or("out of memory for Domain0's I/O bitmaps")?
    } else {
        (bitmaps.io_a, bitmaps.io_b)
    };
    let ia32e = vmx::caps::EntryControls::IA32E_MODE_GUEST.bits();
    let setup = VmcsSetup {
        controls: &controls,
        eptp,
        io_bitmaps,
        msr_bitmap: bitmaps.msr,
        cr0_fixed: (caps.cr0_fixed().fixed0, caps.cr0_fixed().fixed1),
        cr4_fixed: (caps.cr4_fixed().fixed0, caps.cr4_fixed().fixed1),
        unrestricted_guest: caps.has_unrestricted_guest(),
        ia32e_mode_entry_bit: ia32e,
    };
    // Domain0 creates domains from its own exit path, with its VMCS current on this CPU:
    // setting up the new VMCSs below changes the current one, so it is put back after.
    let _restore = RestoreVmcs(vmx::instr::vmptrst());
    let mut vcpus = Vec::new();
    let mut signals = Vec::new();
    for index in 0..spec.vcpus.max(1) {
        let mut v = Vcpu::new(index, caps.basic().revision_id())
            .ok_or("out of memory for a VMCS or XSAVE area, or out of VPIDs")?;
        if index == 0 {
            virtual_wire(&mut v.lapic);
        }
        {
            // SAFETY: the VMCS was just created and is current nowhere else.
            let current = unsafe { v.vmcs.load() }.map_err(|e| format!("VMPTRLD failed: {e:?}"))?;
            if index > 0 {
                // Secondary vCPUs wait for INIT-SIPI-SIPI from the guest, as application
                // processors do; the STARTUP vector then sets CS (see sched::runloop).
                vcpu::setup_real16(&current, &mut v, &setup, 0);
                v.state = vcpu::VcpuState::WaitForSipi;
            } else {
                match plan.mode {
                    EntryMode::Long64 if let Some(l) = &linux => {
                        vcpu::setup_linux64(&current, &mut v, &setup, l.entry, l.rsi)
                    }
                    EntryMode::Long64 => vcpu::setup_long_mode(&current, &mut v, &setup, area, plan.entry, size & !0xF),
                    EntryMode::Real16 => vcpu::setup_real16(&current, &mut v, &setup, plan.entry),
                    EntryMode::Protected32 => vcpu::setup_protected32(
                        &current,
                        &mut v,
                        &setup,
                        plan.entry,
                        multiboot::MULTIBOOT_BOOTLOADER_MAGIC,
                        multiboot_info,
                    ),
                }
            }
        }
        // SAFETY: the VMCS is loaded on this CPU only; clearing it lets any CPU load it.
        let _ = unsafe { vmx::instr::vmclear(v.vmcs.phys()) };
        signals.push(crate::domain::signals::VcpuSignals::new(v.lapic.addressing()));
        vcpus.push(Arc::new(Mutex::new(v)));
    }
    let console_ring = crate::ring::ByteRing::boxed().ok_or("out of heap memory for the console ring")?;
    let domain = Arc::new(Domain {
        id,
        name: name.to_string(),
        spec: spec.clone(),
        memory: Mutex::new(memory),
        ept: Mutex::new(Some(ept)),
        eptp,
        vcpus,
        signals,
        runtime: Mutex::new(DomainRuntime {
            state: DomainState::Running,
            exit_status: None,
            unclaimed_ports: Default::default(),
            unclaimed_mmio: Default::default(),
            sleeps_refused: Default::default(),
            debug_port: Default::default(),
            console: LineBuffer::default(),
            console_limit: super::console::ConsoleLimit::new(crate::arch::timer::now_ns()),
            console_ring,
            devices: crate::devices::DomainDevices::new(
                spec.vcpus.max(1),
                u64::from(spec.memory_mib) << 20,
                crate::arch::cmos::boot_unix_time(),
                crate::arch::timer::now_ns(),
            ),
        }),
        irq: super::irq::IrqState::new(),
        paused: core::sync::atomic::AtomicBool::new(false),
        ended: core::sync::atomic::AtomicBool::new(false),
        restart: core::sync::atomic::AtomicBool::new(false),
        restarts: Mutex::new(Default::default()),
    });
    // QEMU's fw_cfg carries the e820 map too; test kernels and firmware read it there.
    domain
        .runtime
        .lock()
        .devices
        .fw_cfg
        .add_file(firmware::FW_CFG_E820_FILE, firmware::e820_fw_cfg_file(&firmware::e820(size)));
    Ok(domain)
}
