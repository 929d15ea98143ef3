//! A domain's life after boot, as Domain0 drives it: create from the boot bundle,
//! pause, unpause, shut down, reboot, destroy; and what Domain0's listings show.
//!
//! - **create**: the image comes from the boot bundle (kept here for the machine's
//!   life), built by `create`, handed to the scheduler, registered.
//! - **pause / unpause**: a flag every vCPU checks before each entry; the CPUs running
//!   them are kicked, so a paused domain is off the CPUs within one exit.
//! - **shutdown**: the guest's ACPI power button is pressed (an SCI on IRQ 9) if it
//!   listens to it; otherwise the domain ends as if it had powered itself off. Either way
//!   it stays listed, state `s`, once ended, until destroyed.
//! - **reboot**: the domain ends and a new one is built from the same specification and
//!   name, with a new ID (as Xen does). A guest's own reset (0xCF9, port 0x92) does the
//!   same.
//! - **destroy**: the domain ends and leaves the registry; its memory goes back at once
//!   if no CPU is inside it, else when that CPU's slice ends; the EPT, VMCSs and VPIDs
//!   when the last reference goes.

use super::{Domain, DomainSpec, DomainState};
use abi::bundle::Bundle;
use abi::hypercall::{DomState, DomainInfo, Error, fixed_str};
use alloc::string::String;
use alloc::sync::Arc;
use spin::Once;

static BUNDLE: Once<Bundle<'static>> = Once::new();

/// Keeps the boot bundle for creating domains later.
pub fn set_bundle(bundle: Bundle<'static>) {
    BUNDLE.call_once(|| bundle);
}

/// A domain the boot configuration defines without starting it (`autostart = false`).
pub fn defined(name: &str) -> Option<DomainSpec> {
    let text = core::str::from_utf8(BUNDLE.get()?.find("hypervisor.cfg")?.data).ok()?;
    let mut found = None;
    let _ = abi::config::for_each_domain(text, |d| {
        if !d.autostart && d.name == name {
            found = Some(DomainSpec::from_config(&d));
        }
    });
    found
}

/// Builds a domain from `spec` and starts it. Errors are sentences for logs and
/// Domain0; `Error` says which ABI code fits.
pub fn start(name: &str, spec: &DomainSpec) -> Result<Arc<Domain>, (Error, String)> {
    log::info!(
        "domain {name}: create start: frames free {} bytes, heap used {} bytes",
        crate::mm::phys::free_bytes(),
        crate::mm::heap::usage().0
    );
    let bundle = BUNDLE.get().ok_or((Error::NoEntry, String::from("there is no boot bundle")))?;
    let Some(image) = bundle.find(&spec.image) else {
        return Err((Error::NoEntry, alloc::format!("the boot bundle has no entry {:?}", spec.image)));
    };
    let initrd = match spec.initrd.as_str() {
        "" => None,
        entry => Some(bundle.find(entry).ok_or_else(|| {
            (Error::NoEntry, alloc::format!("the boot bundle has no entry {entry:?} (the domain's initrd)"))
        })?),
    };
    let domain = super::create::create(name, spec, image, initrd).map_err(|e| (Error::Invalid, e))?;
    log::info!(
        "domain {} (id {}) created: {} MiB, {} vCPU(s), image {} ({} bytes)",
        domain.name,
        domain.id,
        spec.memory_mib,
        spec.vcpus,
        spec.image,
        image.data.len()
    );
    crate::sched::place(&domain, spec.weight, spec.cap, spec.cpus).map_err(|e| (Error::Invalid, e))?;
    super::register(domain.clone());
    if spec.dom0 {
        super::passthrough::setup(&domain);
    }
    Ok(domain)
}

/// Kicks every CPU running one of the domain's vCPUs, so that it looks at the domain's
/// state before entering again.
fn kick_vcpus(domain: &Domain) {
    for s in &domain.signals {
        if let Some(cpu) = s.running_on() {
            crate::sched::notify(Some(cpu));
        }
    }
}

pub fn pause(domain: &Domain) -> Result<(), Error> {
    let mut rt = domain.runtime.lock();
    if rt.state.is_final() {
        return Err(Error::Invalid);
    }
    rt.state = DomainState::Paused;
    domain.paused.store(true, core::sync::atomic::Ordering::Release);
    drop(rt);
    kick_vcpus(domain);
    log::info!("domain {} paused", domain.name);
    Ok(())
}

pub fn unpause(domain: &Domain) -> Result<(), Error> {
    let mut rt = domain.runtime.lock();
    if rt.state.is_final() {
        return Err(Error::Invalid);
    }
    if rt.state == DomainState::Paused {
        rt.state = DomainState::Running;
    }
    domain.paused.store(false, core::sync::atomic::Ordering::Release);
    drop(rt);
    crate::sched::control::resume_paused(domain);
    log::info!("domain {} unpaused", domain.name);
    Ok(())
}

/// Ends the domain (`state`, `status`) and gets it off the CPUs.
fn end(domain: &Arc<Domain>, state: DomainState, status: Option<u8>) -> bool {
    let ended = domain.finish(state, status);
    domain.paused.store(false, core::sync::atomic::Ordering::Release);
    kick_vcpus(domain);
    crate::sched::release(domain);
    ended
}

/// Asks the guest to shut down by pressing its ACPI power button, as `xl shutdown` does
/// for a guest without paravirtual drivers; a guest that does not listen (PWRBTN_EN
/// clear) is powered off at once, as if it had done it itself.
pub fn shutdown(domain: &Arc<Domain>) -> Result<(), Error> {
    if domain.state().is_final() {
        return Ok(());
    }
    if domain.devices(|d, _| d.pm.press_power_button()) {
        log::info!("domain {}: ACPI power button pressed (shutdown requested by Domain0)", domain.name);
        return Ok(());
    }
    if end(domain, DomainState::ShutDown, Some(0)) {
        log::info!("domain {} does not listen to its ACPI power button; powered off by Domain0", domain.name);
    }
    Ok(())
}

pub fn destroy(domain: &Arc<Domain>) -> Result<(), Error> {
    end(domain, DomainState::ShutDown, None);
    super::unregister(domain.id);
    log::info!("domain {} (id {}) destroyed", domain.name, domain.id);
    Ok(())
}

/// The guest powered itself off (its vCPU's exit path, after `finish`): with
/// `on_poweroff = "destroy"` it leaves the domain list now, as `destroy` would; its CPU
/// retires it (memory, scheduler) after this exit either way.
pub fn after_poweroff(domain: &Domain) {
    if domain.spec.on_poweroff == abi::config::OnPoweroff::Destroy {
        super::unregister(domain.id);
        log::info!("domain {} (id {}) destroyed (on_poweroff = destroy)", domain.name, domain.id);
    }
}

/// How long `reboot` waits for the old domain's vCPUs to leave their CPUs.
const REBOOT_RELEASE_WAIT_NS: u64 = 10_000_000;

/// Ends the domain and starts a new one like it; returns the new domain's ID.
///
/// The old domain's memory is released first, so that a machine with room for one copy
/// of the domain can reboot it: a vCPU still in the guest on another CPU was kicked by
/// `end` and leaves within microseconds; this waits for that (up to
/// [`REBOOT_RELEASE_WAIT_NS`]), then builds the new domain either way.
pub fn reboot(domain: &Arc<Domain>) -> Result<u32, (Error, String)> {
    end(domain, DomainState::ShutDown, None);
    super::unregister(domain.id);
    let give_up = crate::arch::timer::now_ns().saturating_add(REBOOT_RELEASE_WAIT_NS);
    while domain.memory.lock().size() > 0 && crate::arch::timer::now_ns() < give_up {
        core::hint::spin_loop();
        crate::sched::release(domain);
    }
    let new = start(&domain.name, &domain.spec)?;
    log::info!("domain {} rebooted: id {} is now id {}", domain.name, domain.id, new.id);
    Ok(new.id)
}

/// The guest reset itself (0xCF9, port 0x92), from its own vCPU's exit path: it ends
/// now, and a new domain like it starts once the old one's memory is back
/// ([`restart_if_asked`], from the CPU that retires it). Not sooner: its other vCPUs may
/// still be in the guest on other CPUs, and a machine sized for one copy of the domain
/// has no room for two.
pub fn reboot_self(domain: &Domain) {
    if !domain.restarts.lock().allow(crate::arch::timer::now_ns()) {
        if domain.finish(DomainState::Crashed, None) {
            log::error!(
                "domain {} crashed: it reset itself {} times within {} s; not restarting it again (a reset loop)",
                domain.name,
                super::RestartHistory::LIMIT,
                super::RestartHistory::WINDOW_NS / 1_000_000_000
            );
        }
        return;
    }
    if !domain.finish(DomainState::ShutDown, None) {
        return;
    }
    RESTARTS_PENDING.fetch_add(1, core::sync::atomic::Ordering::AcqRel);
    domain.restart.store(true, core::sync::atomic::Ordering::Release);
    super::unregister(domain.id);
}

/// Domains that reset themselves and whose successors have yet to start: until they
/// have, "every domain has ended" is not true yet.
static RESTARTS_PENDING: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// Whether a guest reset is waiting for its domain's memory ([`reboot_self`]).
pub fn restart_pending() -> bool {
    RESTARTS_PENDING.load(core::sync::atomic::Ordering::Acquire) != 0
}

/// Called once a domain's memory has been released: starts its successor if the guest
/// asked for a reset.
pub fn restart_if_asked(domain: &Domain) {
    if !domain.restart.swap(false, core::sync::atomic::Ordering::AcqRel) {
        return;
    }
    match start(&domain.name, &domain.spec) {
        Ok(new) => {
            *new.restarts.lock() = *domain.restarts.lock();
            log::info!("domain {} rebooted: id {} is now id {}", domain.name, domain.id, new.id)
        }
        Err((_, why)) => log::error!("domain {}: reboot failed: {why}", domain.name),
    }
    RESTARTS_PENDING.fetch_sub(1, core::sync::atomic::Ordering::AcqRel);
}

/// What `DomainInfo` reports about `domain`.
pub fn info(domain: &Domain) -> DomainInfo {
    let (state, exit_status, console_bytes) = {
        let rt = domain.runtime.lock();
        (rt.state, rt.exit_status, rt.console_ring.written())
    };
    let running = domain.signals.iter().any(|s| s.running_on().is_some());
    let state = match state {
        DomainState::Paused => DomState::Paused,
        DomainState::Crashed => DomState::Crashed,
        DomainState::ShutDown => DomState::Shutdown,
        DomainState::Running | DomainState::Blocked if running => DomState::Running,
        DomainState::Running | DomainState::Blocked => DomState::Blocked,
    };
    let (weight, cap) =
        crate::sched::control::domain_params(domain.id).unwrap_or((domain.spec.weight, domain.spec.cap));
    let cpu_time_ns = crate::sched::control::domain_cpu_time(domain.id);
    DomainInfo {
        id: domain.id,
        state: state as u32,
        name: fixed_str(&domain.name),
        memory_bytes: u64::from(domain.spec.memory_mib) << 20,
        vcpus: domain.vcpus.len() as u32,
        weight,
        cap,
        exit_status: exit_status.map_or(u32::MAX, u32::from),
        cpu_time_ns,
        console_bytes,
        flags: if domain.is_dom0() { DomainInfo::FLAG_DOM0 } else { 0 },
        reserved: 0,
    }
}
