//! Bring-up, in order. Each step logs one stable line (the integration tests match
//! them), and anything that makes the machine unusable for the hypervisor ends in a
//! clear fatal message and a clean stop.

use crate::arch::{self, apic, cpu, exceptions, gdt, smp, timer};
use crate::mm::frames::{MemoryRegion, Range};
use crate::mm::{heap, paging, phys};
use crate::percpu::{self, PerCpu};
use crate::power::{self, StopReason};
use abi::bundle::Bundle;
use abi::config::{FaultKind, HypervisorConfig};
use bootloader_api::config::Mapping;
use bootloader_api::info::MemoryRegionKind;
use bootloader_api::{BootInfo, BootloaderConfig};
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::VirtAddr;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How the bootloader maps us: the kernel where it was linked (at -2 GiB: `cargo xtask
/// build` links it there as a fixed-address executable; a position-independent build,
/// such as a plain `cargo build`, goes into the dynamic range), its dynamic mappings (the
/// direct map of physical memory, boot info, stack, ramdisk) in the first quarter of the
/// upper half, leaving `paging::WINDOW_START..` to the hypervisor and the lower half free
/// for identity mappings.
pub static BOOTLOADER_CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    config.mappings.kernel_base = Mapping::Dynamic;
    config.mappings.dynamic_range_start = Some(0xFFFF_8000_0000_0000);
    config.mappings.dynamic_range_end = Some(0xFFFF_BFFF_FFFF_F000);
    config.kernel_stack_size = 256 * 1024;
    config
};

const HEAP_SIZE: usize = 8 * 1024 * 1024;

static mut BSP_PERCPU: PerCpu = PerCpu::new(0, 0);
static mut BSP_TABLES: gdt::CpuTables = gdt::CpuTables::new();

#[repr(C, align(16))]
struct IstStack([u8; gdt::IST_STACK_SIZE]);
static mut BSP_IST: [IstStack; 3] = [const { IstStack([0; gdt::IST_STACK_SIZE]) }; 3];

/// CR0/CR4 as the BSP runs with them; APs copy them so every CPU behaves alike.
static BSP_CR0: AtomicU64 = AtomicU64::new(0);
static BSP_CR4: AtomicU64 = AtomicU64::new(0);

pub fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    // 1. This CPU's identity first: the logger reads it from GS.
    // SAFETY: kernel_main runs once, on the BSP, before any other CPU exists; this is
    // the only reference ever made to BSP_PERCPU.
    percpu::install(unsafe { &mut *core::ptr::addr_of_mut!(BSP_PERCPU) });

    // 2. Console. The baud rate may change once the configuration is read.
    let serial_ok = arch::serial::init(115_200);
    crate::logger::init();
    log::info!("Ferrovisor {VERSION} starting (serial console {})", if serial_ok { "ok" } else { "absent" });

    // 3. Descriptor tables, so that from here on a fault is reported, not a reset.
    // SAFETY: as for BSP_PERCPU: only the BSP, only once.
    let (tables, ist) = unsafe { (&mut *core::ptr::addr_of_mut!(BSP_TABLES), &*core::ptr::addr_of!(BSP_IST)) };
    let ist_tops = [0, 1, 2].map(|i| VirtAddr::from_ptr(ist[i].0.as_ptr()) + gdt::IST_STACK_SIZE as u64);
    tables.load(ist_tops);
    exceptions::set_stop_hooks(exceptions::StopHooks {
        stopping: power::stopping,
        park: power::park_this_cpu,
        fatal: || power::stop_machine(StopReason::Exception),
    });
    exceptions::load();
    record_control_registers();
    log::info!("cpu: gdt, tss (ist: #DF, NMI, #MC) and idt loaded");

    // 4. Memory.
    let Some(phys_offset) = boot_info.physical_memory_offset.into_option() else {
        fatal("the bootloader did not map physical memory; the image was built with a wrong configuration");
    };
    paging::init(phys_offset);
    let bundle_runs = ramdisk_phys_runs(boot_info);
    init_frames(boot_info, bundle_runs);
    match paging::adopt_own_pml4() {
        Ok(pml4) => {
            log::info!("paging: own PML4 at {pml4:#x}; upper half shared with the boot tables, lower half empty")
        }
        Err(e) => fatal_fmt(format_args!("cannot build the hypervisor's page tables: {e}")),
    }
    init_heap();

    // 5. The boot bundle and the configuration inside it.
    let boot_bundle = read_bundle(boot_info);
    let config = boot_bundle.config;
    crate::logger::set_level(config.log_level);
    crate::logger::set_guest_output_logged(config.guest_output_logged);
    if config.serial_baud != 115_200 {
        log::info!("serial: switching COM1 to {} baud", config.serial_baud);
        arch::serial::init(config.serial_baud);
    }
    power::set_emulator_exit(config.emulator_exit);
    log::info!(
        "config: log_level={} fault={} emulator_exit={}",
        config.log_level.as_str(),
        config.fault.map_or("none", |f| f.as_str()),
        config.emulator_exit
    );

    // 6. Time.
    let tsc_hz = timer::calibrate();
    crate::arch::cmos::init();
    log::info!(
        "timer: TSC runs at {}.{:03} MHz (calibrated against the PIT)",
        tsc_hz / 1_000_000,
        (tsc_hz / 1000) % 1000
    );

    // 7. CPUs and interrupt controllers from ACPI.
    let platform = match arch::acpi::discover(boot_info.rsdp_addr.into_option()) {
        Ok(p) => p,
        Err(e) => fatal_fmt(format_args!("{e}")),
    };
    log::info!(
        "acpi: {} CPU(s) in the MADT, {} I/O APIC(s), local APIC at {:#x}, legacy PICs {}, PM timer {}",
        platform.cpus.len(),
        platform.io_apics.len(),
        platform.local_apic_address,
        if platform.has_legacy_pics { "present" } else { "absent" },
        platform.pm_timer_port.map_or(alloc::string::String::from("absent"), |p| alloc::format!("at port {p:#x}")),
    );
    for c in &platform.cpus {
        log::info!(
            "acpi: cpu apic_id={} uid={}{}{}",
            c.apic_id,
            c.uid,
            if c.is_bsp { " (bsp)" } else { "" },
            if c.usable { "" } else { " (disabled)" }
        );
    }
    for io in &platform.io_apics {
        log::info!("acpi: ioapic id={} at {:#x} gsi_base={}", io.id, io.address, io.gsi_base);
    }

    // 8. The local APIC and the other CPUs.
    let (apic_phys, is_bsp) = apic::base_msr();
    if !is_bsp {
        log::warn!("IA32_APIC_BASE says this CPU is not the BSP");
    }
    match paging::map_mmio(apic_phys, 1) {
        Ok(virt) => apic::set_mmio_base(virt),
        Err(e) => fatal_fmt(format_args!("cannot map the local APIC at {apic_phys:#x}: {e}")),
    }
    crate::arch::pic::disable();
    let ioapics = crate::arch::ioapic::init(&platform.io_apics);
    log::info!("ioapic: {ioapics} I/O APIC(s) mapped, every line masked until routed");
    apic::enable_this_cpu();
    // SAFETY: the area was installed above; only this CPU writes its own apic_id.
    unsafe { (*core::ptr::addr_of_mut!(BSP_PERCPU)).apic_id = apic::id() };
    crate::percpu::record_apic_id(0, apic::id());
    let (version, max_lvt) = apic::version();
    let bsp_vmx = crate::vmx::probe::check_this_cpu();
    log::info!(
        "cpu0 online: apic_id={} apic_version={version:#x} lvt_entries={} {bsp_vmx}",
        apic::id(),
        u32::from(max_lvt) + 1
    );
    // An NMI nobody sent on purpose must not stop the machine: prove it on ourselves.
    if crate::arch::nmi::self_test() {
        log::info!("nmi: self-test NMI taken and survived");
    } else {
        log::warn!("nmi: self-test NMI did not arrive within 10 ms");
    }
    crate::arch::nmi::report();

    // 9. Deliberate fault, when a test asks for one.
    if let Some(kind) = config.fault {
        log::info!("fault injection: triggering {} now", kind.as_str());
        trigger_fault(kind);
    }

    // 10. Virtualization features. Without usable VMX the hypervisor has nothing to do.
    let caps = match crate::vmx::probe::report() {
        Ok(caps) => crate::vmx::set_capabilities(caps),
        Err(why) => {
            log::error!("FATAL: {why}");
            power::stop_machine(StopReason::Unsupported);
        }
    };
    let bsp_state = crate::vmx::enable_this_cpu();
    log::info!("vmx: cpu0 {bsp_state} (VMCS revision {:#x})", caps.basic().revision_id());
    if bsp_state != "vmx=on" {
        fatal("the bootstrap CPU could not enter VMX operation (see the error above)");
    }

    // 11. The other CPUs, each entering VMX operation itself.
    let online = start_application_processors(&platform.cpus);
    log::info!("smp: {online} of {} CPU(s) online", platform.cpus.iter().filter(|c| c.usable).count().max(1));

    let (used, free) = heap::usage();
    log::info!(
        "memory: {} KiB free in frames, heap {} KiB used / {} KiB free",
        phys::free_bytes() / 1024,
        used / 1024,
        free / 1024
    );
    crate::arch::spec_ctrl::init(config.spec_ctrl);
    crate::sched::configure(online, config.until_guests_exit, config.sched_slice_ms, config.sched_ratelimit_us);
    // Guest RAM zeroed ahead of the domains (mm::scrub); idle CPUs zero the rest.
    let t0 = cpu::rdtsc();
    let zeroed = crate::mm::scrub::scrub(crate::mm::scrub::BOOT_FILL);
    log::info!(
        "memory: {} MiB of guest RAM zeroed ahead in {} ms; idle CPUs zero the rest of free memory",
        zeroed >> 20,
        crate::arch::timer::tsc_to_ns(cpu::rdtsc() - t0) / 1_000_000
    );
    let domains = create_domains(&boot_bundle);
    if domains == 0 {
        log::info!("boot complete: {online} CPU(s) online, VMX ready; no domains to run");
        if config.emulator_exit || config.until_guests_exit {
            power::stop_machine(StopReason::Done);
        }
        log::info!("idle: all CPUs halted (press Ctrl-C to end the emulator)");
        idle_loop()
    }
    log::info!("boot complete: {online} CPU(s) online, VMX ready; running {domains} domain(s)");
    crate::sched::run_loop()
}

/// Per-CPU set-up that every AP repeats after the BSP (same CR0/CR4).
pub fn init_cpu_common() {
    let cr0 = BSP_CR0.load(Ordering::Acquire);
    let cr4 = BSP_CR4.load(Ordering::Acquire);
    // SAFETY: the BSP runs the same kernel with these values, so they are valid here
    // too (all CPUs in one machine share features).
    unsafe {
        core::arch::asm!("mov cr4, {}", in(reg) cr4, options(nostack));
        core::arch::asm!("mov cr0, {}", in(reg) cr0, options(nostack));
    }
}

fn record_control_registers() {
    let (cr0, cr4): (u64, u64);
    // SAFETY: reading control registers has no side effects.
    unsafe {
        core::arch::asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack));
        core::arch::asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack));
    }
    BSP_CR0.store(cr0, Ordering::Release);
    BSP_CR4.store(cr4, Ordering::Release);
}

/// What a CPU does when it has nothing to run yet.
pub fn idle_loop() -> ! {
    // Nothing will poll the buffered console from here on.
    arch::serial::flush(100_000);
    cpu::halt_forever()
}

/// Logs a fatal error in a form that says what to do, and stops.
pub fn fatal(message: &str) -> ! {
    fatal_fmt(format_args!("{message}"))
}

pub fn fatal_fmt(message: core::fmt::Arguments) -> ! {
    log::error!("FATAL: {message}");
    power::stop_machine(StopReason::Unsupported)
}

/// The most physically discontiguous runs of the bundle we track; the bootloader
/// loads it in one run in practice, and its frames are also marked as used in the
/// memory map, so this is a second line of defence.
const MAX_BUNDLE_RUNS: usize = 8;

/// The physical runs behind the bundle's virtual mapping, page by page.
fn ramdisk_phys_runs(boot_info: &BootInfo) -> ([Range; MAX_BUNDLE_RUNS], usize) {
    let mut runs = [Range { start: 0, end: 0 }; MAX_BUNDLE_RUNS];
    let mut count = 0;
    let Some(virt) = boot_info.ramdisk_addr.into_option() else { return (runs, 0) };
    let pages = boot_info.ramdisk_len.div_ceil(4096);
    for page in 0..pages {
        let Some(phys) = paging::virt_to_phys((virt & !0xFFF) + page * 4096) else { continue };
        let frame = phys & !0xFFF;
        match runs[..count].last_mut() {
            Some(last) if last.end == frame => last.end += 4096,
            _ if count < MAX_BUNDLE_RUNS => {
                runs[count] = Range { start: frame, end: frame + 4096 };
                count += 1;
            }
            _ => {
                log::warn!("bundle: more than {MAX_BUNDLE_RUNS} physical runs; relying on the memory map for the rest");
                break;
            }
        }
    }
    (runs, count)
}

fn init_frames(boot_info: &BootInfo, (bundle, runs): ([Range; MAX_BUNDLE_RUNS], usize)) {
    let regions = boot_info.memory_regions.iter().map(|r| MemoryRegion {
        start: r.start,
        end: r.end,
        usable: r.kind == MemoryRegionKind::Usable,
    });
    let usable: u64 =
        boot_info.memory_regions.iter().filter(|r| r.kind == MemoryRegionKind::Usable).map(|r| r.end - r.start).sum();
    // RAM of any kind: usable, the loader's, and what firmware keeps in RAM (e820 types
    // 1, 3-5; UEFI types 1-10 and 14). Holes, e820 "reserved" (2) and UEFI MMIO (11,
    // 12) are where device BARs live.
    phys::record_machine_ram(
        boot_info
            .memory_regions
            .iter()
            .filter(|r| match r.kind {
                MemoryRegionKind::Usable | MemoryRegionKind::Bootloader => true,
                MemoryRegionKind::UnknownBios(t) => matches!(t, 1 | 3..=5),
                MemoryRegionKind::UnknownUefi(t) => matches!(t, 1..=10 | 14),
                _ => true,
            })
            .map(|r| (r.start, r.end)),
    );
    let kernel = Range {
        start: boot_info.kernel_addr & !0xFFF,
        end: (boot_info.kernel_addr + boot_info.kernel_len).next_multiple_of(4096),
    };
    let mut reserved = [kernel; MAX_BUNDLE_RUNS + 1];
    reserved[1..=runs].copy_from_slice(&bundle[..runs]);
    let summary = phys::init(regions, &reserved[..=runs]);
    log::info!(
        "memory: {} MiB usable in {} regions; kernel at {:#x}+{:#x}; bundle at {}{}",
        usable >> 20,
        boot_info.memory_regions.len(),
        boot_info.kernel_addr,
        boot_info.kernel_len,
        FmtRange(bundle[0].start, bundle[0].end - bundle[0].start),
        if runs > 1 { " (and more runs)" } else { "" },
    );
    if summary.dropped_ranges > 0 {
        log::warn!("memory: {} free ranges did not fit the allocator's table and are unused", summary.dropped_ranges);
    }
    log::info!("memory: frame allocator ready, {} MiB free", summary.free_bytes >> 20);
}

/// Formats as `start+len` without allocating (the heap does not exist yet).
struct FmtRange(u64, u64);
impl core::fmt::Display for FmtRange {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.1 == 0 { write!(f, "none") } else { write!(f, "{:#x}+{:#x}", self.0, self.1) }
    }
}

fn init_heap() {
    let frames = (HEAP_SIZE / 4096) as u64;
    let Some(phys) = phys::allocate_contiguous(frames, 4096) else {
        fatal("not enough contiguous memory for the 8 MiB hypervisor heap; give the machine more RAM");
    };
    // SAFETY: the frames were just allocated for this purpose only and are reached
    // through the direct map, which lives forever.
    unsafe { heap::init(paging::phys_to_virt(phys), HEAP_SIZE) };
    log::info!("memory: heap of {} KiB at phys {phys:#x}", HEAP_SIZE / 1024);
}

/// The boot bundle as read at boot: the configuration and where it came from.
struct BootBundle {
    config: HypervisorConfig,
    bundle: Option<Bundle<'static>>,
    config_text: Option<&'static str>,
}

/// Parses and lists the boot bundle; returns the configuration it carries (or the
/// defaults when there is none).
fn read_bundle(boot_info: &BootInfo) -> BootBundle {
    let defaults = BootBundle { config: HypervisorConfig::default(), bundle: None, config_text: None };
    let Some(addr) = boot_info.ramdisk_addr.into_option() else {
        log::warn!(
            "bundle: no boot bundle was loaded (build the image with `cargo xtask build`); using the default configuration"
        );
        return defaults;
    };
    // SAFETY: the bootloader mapped the ramdisk at `addr` for `ramdisk_len` bytes for
    // the kernel's whole life, and its frames are reserved from the allocator, so
    // nothing else writes there.
    let bytes: &'static [u8] =
        unsafe { core::slice::from_raw_parts(addr as *const u8, boot_info.ramdisk_len as usize) };
    let bundle = match Bundle::parse(bytes) {
        Ok(b) => b,
        Err(e) => fatal_fmt(format_args!("{e}")),
    };
    log::info!(
        "bundle: version {} with {} entries ({} bytes), checksums ok",
        bundle.version(),
        bundle.len(),
        bundle.total_len()
    );
    for entry in bundle.entries() {
        log::info!(
            "bundle: entry {:<24} kind={:<14} size={:>9} crc32={:#010x}",
            entry.name,
            alloc::format!("{}", entry.kind),
            entry.data.len(),
            entry.checksum
        );
    }
    let Some(cfg) = bundle.find("hypervisor.cfg") else {
        log::warn!("bundle: no hypervisor.cfg entry; using the default configuration");
        return BootBundle { bundle: Some(bundle), ..defaults };
    };
    let Ok(text) = core::str::from_utf8(cfg.data) else {
        fatal("bundle: hypervisor.cfg is not UTF-8 text; fix the file and rebuild with `cargo xtask build`");
    };
    match abi::config::parse(text) {
        Ok(config) => BootBundle { config, bundle: Some(bundle), config_text: Some(text) },
        Err(e) => fatal_fmt(format_args!("{e}; fix the file and rebuild with `cargo xtask build`")),
    }
}

/// Creates every configured domain, Domain0 first (it must be domain 0 and should be
/// up before the others); a domain that cannot be created is reported and skipped, the
/// others still start (as xendomains does).
fn create_domains(boot: &BootBundle) -> usize {
    let (Some(bundle), Some(text)) = (boot.bundle, boot.config_text) else { return 0 };
    crate::domain::lifecycle::set_bundle(bundle);
    let mut created = 0;
    for dom0_pass in [true, false] {
        let _ = abi::config::for_each_domain(text, |d| {
            if d.dom0 != dom0_pass {
                return;
            }
            if !d.autostart {
                log::info!(
                    "domain {}: defined, not started (autostart = false); Domain0 can `create {}`",
                    d.name,
                    d.name
                );
                return;
            }
            if d.awaited {
                crate::domain::await_domain(d.name);
            }
            let spec = crate::domain::DomainSpec::from_config(&d);
            match crate::domain::lifecycle::start(d.name, &spec) {
                Ok(_) => created += 1,
                Err((_, e)) => log::error!("domain {}: not created: {e} (hypervisor.cfg line {})", d.name, d.line),
            }
        });
    }
    created
}

fn start_application_processors(cpus: &[arch::acpi::CpuEntry]) -> u32 {
    if cpus.iter().filter(|c| !c.is_bsp && c.usable).count() == 0 {
        return 1;
    }
    // The SIPI vector can only address pages below 1 MiB; the temporary page tables are
    // loaded into CR3 in 32-bit mode, so they must sit below 4 GiB.
    let code = phys::allocate_below(0x10_0000);
    let tables = [phys::allocate_below(1 << 32), phys::allocate_below(1 << 32), phys::allocate_below(1 << 32)];
    let (Some(code), [Some(a), Some(b), Some(c)]) = (code, tables) else {
        log::error!("smp: no free page below 1 MiB for the AP trampoline; running on the BSP only");
        return 1;
    };
    let tramp = match smp::prepare(code, [a, b, c]) {
        Ok(t) => t,
        Err(e) => {
            log::error!("smp: cannot map the AP trampoline at {code:#x}: {e}; running on the BSP only");
            return 1;
        }
    };
    log::info!("smp: AP trampoline at {code:#x}");
    smp::start_aps(&tramp, cpus)
}

#[inline(never)]
fn trigger_fault(kind: FaultKind) {
    use core::hint::black_box;
    match kind {
        FaultKind::DivideError => {
            // SAFETY: deliberately faults (#DE); the handler reports and stops.
            unsafe {
                core::arch::asm!("xor edx, edx", "xor eax, eax", "div ecx", in("ecx") black_box(0u32), out("eax") _, out("edx") _)
            };
        }
        FaultKind::Breakpoint => {
            // SAFETY: deliberately raises #BP.
            unsafe { core::arch::asm!("int3") };
        }
        FaultKind::InvalidOpcode => {
            // SAFETY: deliberately raises #UD.
            unsafe { core::arch::asm!("ud2") };
        }
        FaultKind::GeneralProtection => {
            // A non-canonical address: #GP.
            // SAFETY: deliberately faults.
            unsafe { core::ptr::read_volatile(black_box(0x8000_0000_0000_0000u64) as *const u64) };
        }
        FaultKind::PageFault => {
            // Canonical, lower half, never mapped: #PF with CR2 = this address.
            // SAFETY: deliberately faults.
            unsafe { core::ptr::write_volatile(black_box(0x0000_4000_dead_0000u64) as *mut u64, 0x1234) };
        }
        FaultKind::DoubleFault => {
            // Overflow the stack into its guard page: the #PF cannot push its frame, so
            // the CPU raises #DF, which runs on its own IST stack.
            recurse(black_box(0));
        }
    }
}

#[inline(never)]
#[allow(unconditional_recursion)] // the point: it ends in the guard page
fn recurse(depth: u64) -> u64 {
    let buf = core::hint::black_box([depth; 64]);
    recurse(buf[0] + 1) + buf[63]
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    log::error!("PANIC in the hypervisor: {info}");
    power::stop_machine(StopReason::Panic)
}
