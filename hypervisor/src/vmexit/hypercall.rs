//! VMCALL: the hypercall ABI (`abi::hypercall`, docs/hypercalls.md).
//!
//! The registers are decoded and range-checked by `abi::hypercall::decode` (host-tested);
//! this module checks privilege (only Domain0 may make privileged calls), translates
//! every guest pointer through the caller's own page tables and its memory (never
//! trusting an address: an unmapped, read-only or out-of-RAM buffer is `EFAULT`, checked
//! for the whole buffer before anything is copied), and performs the call.

use super::Next;
use crate::domain::Domain;
use crate::domain::lifecycle;
use crate::domain::vcpu::Vcpu;
use crate::mm::guest_paging::{self, Access};
use crate::sched;
use crate::vmx::fields::{Field32, FieldNatural};
use crate::vmx::vmcs::Current;
use abi::hypercall::{self, DomainCreate, DomainInfo, Error, HostInfo, Request, VcpuInfo, VcpuState};

/// Domain0's ID: only the `[dom0]` domain gets it.
pub const DOM0: u32 = 0;

/// Whether call number `rax` may take the run loop's fast path (`vmexit::handle_fast`):
/// calls that only read, or write output, and so cannot change the caller's own local
/// APIC, devices or mailbox. Calls that can (ConsoleRead consumes the caller's UART
/// input; shutdown presses its power button; ConsoleWriteOther may name the caller;
/// pause, destroy, pin may name it) take the full path.
pub fn is_fast(rax: u64) -> bool {
    use hypercall::Call;
    matches!(
        Call::from_number(rax),
        Some(
            Call::Version
                | Call::ConsoleWrite
                | Call::HostInfo
                | Call::DomainList
                | Call::DomainInfo
                | Call::VcpuInfo
                | Call::ConsoleReadOther
                | Call::HypervisorLogRead
                | Call::SchedGetParams
                | Call::PlatformInfo
        )
    )
}

pub fn handle(vmcs: &Current, domain: &Domain, vcpu: &mut Vcpu) -> Next {
    // Hypercalls are for the guest kernel: at CPL > 0 VMCALL raises #UD, as on a CPU
    // without a hypervisor (CPL is SS.DPL; real mode is CPL 0).
    let cpl = (vmcs.read32(Field32::GuestSsAccessRights) >> 5) & 3;
    if vmcs.read_natural(FieldNatural::GuestCr0) & 1 != 0 && cpl != 0 {
        super::inject_exception(vmcs, super::UD, None);
        return Next::Resume;
    }
    let r = &vcpu.regs;
    // Privilege first: a DomU gets EPERM for a privileged call whatever its arguments
    // (decoding first would answer EINVAL or E2BIG, and tell it what Domain0 may pass).
    let privileged = hypercall::Call::from_number(r.rax).is_some_and(|c| c.privileged());
    let result = match hypercall::decode(r.rax, [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9]) {
        // The Domain0 flag, not the ID, is the privilege (an ID is just a number).
        _ if privileged && !domain.is_dom0() => Err(Error::NotPermitted),
        Err(e) => Err(e),
        Ok(req) => perform(vmcs, domain, req),
    };
    vcpu.regs.rax = match result {
        Ok(v) => v,
        Err(e) => e.code() as u64,
    };
    Next::Advance
}

fn perform(vmcs: &Current, domain: &Domain, req: Request) -> Result<u64, Error> {
    match req {
        Request::Version => Ok(u64::from(hypercall::VERSION)),
        Request::ConsoleWrite { buf, len } => {
            let mut bytes = [0u8; hypercall::MAX_CONSOLE_WRITE as usize];
            let data = &mut bytes[..len as usize];
            copy_from_guest(vmcs, domain, buf, data)?;
            if domain.is_dom0() {
                // Domain0's console is the machine's: its bytes go out as they are, under
                // the log's line lock so that neither cuts the other's lines.
                crate::logger::write_console(data);
                domain.runtime.lock().console_ring.push(data);
            } else {
                domain.console_output(data);
            }
            Ok(len)
        }
        // Input Domain0 typed into this domain's console (`ConsoleWriteOther`).
        Request::ConsoleRead { buf, len } => {
            let mut bytes = zeroed(len)?;
            let n = domain.runtime.lock().devices.peek_input(&mut bytes);
            // Copied out first, consumed after: a bad buffer loses no input.
            copy_to_guest(vmcs, domain, buf, &bytes[..n])?;
            domain.runtime.lock().devices.consume_input(n);
            Ok(n as u64)
        }
        Request::HostInfo { out } => {
            let info = host_info(domain);
            // Serialised field by field (little-endian, the repr(C) layout), no transmute.
            let mut bytes = [0u8; core::mem::size_of::<HostInfo>()];
            let fields = [
                u64::from(info.cpus) | u64::from(info.domains) << 32,
                info.memory_total,
                info.memory_free,
                info.tsc_khz,
                info.features,
            ];
            for (chunk, f) in bytes.as_chunks_mut::<8>().0.iter_mut().zip(fields) {
                *chunk = f.to_le_bytes();
            }
            copy_to_guest(vmcs, domain, out, &bytes)?;
            Ok(0)
        }
        Request::DomainList { out, max } => {
            let domains = crate::domain::all();
            let mut written = 0u64;
            // One record at a time: a list never needs a large buffer on this path.
            for (i, d) in domains.iter().take(max as usize).enumerate() {
                let at = out.checked_add(i as u64 * DomainInfo::SIZE as u64).ok_or(Error::Fault)?;
                copy_to_guest(vmcs, domain, at, &lifecycle::info(d).to_bytes())?;
                written += 1;
            }
            Ok(written)
        }
        Request::DomainInfo { domain: id, out } => {
            let d = find(id)?;
            copy_to_guest(vmcs, domain, out, &lifecycle::info(&d).to_bytes())?;
            Ok(0)
        }
        Request::DomainCreate { spec } => {
            let mut bytes = [0u8; DomainCreate::SIZE];
            copy_from_guest(vmcs, domain, spec, &mut bytes)?;
            create(&DomainCreate::from_bytes(&bytes))
        }
        Request::DomainDestroy { domain: id } => domu(id).and_then(|d| lifecycle::destroy(&d)).map(|_| 0),
        Request::DomainPause { domain: id } => domu(id).and_then(|d| lifecycle::pause(&d)).map(|_| 0),
        // Domain0 is never paused, and unpausing it would wait for the very vCPU making
        // the call: refused like pause.
        Request::DomainUnpause { domain: id } => domu(id).and_then(|d| lifecycle::unpause(&d)).map(|_| 0),
        Request::DomainShutdown { domain: id } => domu(id).and_then(|d| lifecycle::shutdown(&d)).map(|_| 0),
        Request::DomainReboot { domain: id } => {
            let d = domu(id)?;
            lifecycle::reboot(&d).map(u64::from).map_err(|(e, why)| {
                log::warn!("domain {}: reboot failed: {why}", d.name);
                e
            })
        }
        Request::SchedSetWeight { domain: id, weight } => {
            find(id)?;
            sched::control::set_weight(id, weight).map(|_| 0).map_err(sched_error)
        }
        Request::SchedSetCap { domain: id, cap } => {
            find(id)?;
            sched::control::set_cap(id, cap).map(|_| 0).map_err(sched_error)
        }
        Request::SchedSetParams { slice_ms, ratelimit_us } => {
            sched::control::set_params(slice_ms, ratelimit_us).map(|_| 0).map_err(sched_error)
        }
        Request::SchedGetParams => {
            let (slice_ms, ratelimit_us) = sched::control::params();
            Ok(u64::from(slice_ms) << 32 | u64::from(ratelimit_us))
        }
        Request::VcpuPin { domain: id, vcpu, cpus } => {
            let d = find(id)?;
            if vcpu as usize >= d.vcpus.len() {
                return Err(Error::NoEntry);
            }
            sched::control::pin(id, vcpu, cpus).map(|_| 0).map_err(sched_error)
        }
        Request::VcpuInfo { domain: id, vcpu, out } => {
            let d = find(id)?;
            let v = d.vcpus.get(vcpu as usize).ok_or(Error::NoEntry)?;
            copy_to_guest(vmcs, domain, out, &vcpu_info(&d, vcpu, v).to_bytes())?;
            Ok(0)
        }
        Request::ConsoleReadOther { domain: id, buf, len, cursor } => {
            let d = find(id)?;
            read_ring(vmcs, domain, buf, len, cursor, |at, out| d.runtime.lock().console_ring.read(at, out))
        }
        Request::HypervisorLogRead { buf, len, cursor } => {
            read_ring(vmcs, domain, buf, len, cursor, crate::logger::read_ring)
        }
        Request::ConsoleWriteOther { domain: id, buf, len } => {
            let d = domu(id)?;
            let mut bytes = [0u8; hypercall::MAX_CONSOLE_WRITE as usize];
            let data = &mut bytes[..len as usize];
            copy_from_guest(vmcs, domain, buf, data)?;
            // Through `devices`, whose sync moves what fits into the guest's UART and
            // raises its receive interrupt.
            Ok(d.devices(|dev, _| dev.queue_input(data)) as u64)
        }
        Request::IrqRoute { gsi, level, active_low } => {
            crate::domain::passthrough::route(gsi, level, active_low).map(|_| 0)
        }
        Request::DomainTrigger { domain: id, trigger: hypercall::Trigger::Nmi, vcpu } => {
            let d = domu(id)?;
            let targets = match vcpu {
                Some(v) => core::slice::from_ref(d.signals.get(v as usize).ok_or(Error::NoEntry)?),
                None => &d.signals[..],
            };
            for target in targets {
                target.post_lint1();
                crate::sched::notify(target.running_on());
            }
            log::info!("domain {}: NMI line (LINT1) raised by Domain0", d.name);
            Ok(0)
        }
        Request::PlatformInfo { out } => {
            copy_to_guest(vmcs, domain, out, &crate::arch::acpi::fixed_hardware().to_bytes())?;
            Ok(0)
        }
        Request::HostPowerOff => {
            log::info!("Domain0 powered the machine off");
            crate::power::stop_machine(crate::power::StopReason::Done)
        }
        Request::HostReboot => {
            log::info!("Domain0 rebooted the machine");
            crate::power::reboot_machine()
        }
    }
}

/// A domain by ID, or `ENOENT`.
fn find(id: u32) -> Result<alloc::sync::Arc<Domain>, Error> {
    crate::domain::find(id).ok_or(Error::NoEntry)
}

/// A domain other than Domain0 (which cannot pause, stop or destroy itself this way).
fn domu(id: u32) -> Result<alloc::sync::Arc<Domain>, Error> {
    if id == DOM0 {
        return Err(Error::Invalid);
    }
    find(id)
}

fn sched_error(e: crate::sched::credit::SchedError) -> Error {
    use crate::sched::credit::SchedError;
    match e {
        SchedError::NoSuchDomain(_) | SchedError::NoSuchVcpu(_) => Error::NoEntry,
        _ => Error::Invalid,
    }
}

/// `DomainCreate`: checks the request like a `[domain]` section, then builds the domain.
/// `image` names a boot bundle entry, or a domain the configuration defines with
/// `autostart = false` (whose settings the request's non-zero fields override).
fn create(req: &DomainCreate) -> Result<u64, Error> {
    use abi::config::{MAX_DOMAIN_MEMORY_MIB, MAX_VCPUS};
    fn text(f: &[u8]) -> Result<&str, Error> {
        hypercall::field_str(f).ok_or(Error::Invalid)
    }
    let image = text(&req.image)?;
    let cmdline = text(&req.cmdline)?;
    let initrd = text(&req.initrd)?;
    let defined = lifecycle::defined(image);
    let base = defined.clone().unwrap_or(crate::domain::DomainSpec {
        image: image.into(),
        initrd: alloc::string::String::new(),
        memory_mib: 16,
        vcpus: 1,
        cmdline: alloc::string::String::new(),
        weight: 256,
        cap: 0,
        cpus: u64::MAX,
        mode: None,
        load_address: None,
        entry: None,
        dom0: false,
        on_poweroff: abi::config::OnPoweroff::Preserve,
    });
    let name = match text(&req.name)? {
        "" => image,
        n => n,
    };
    let or = |v: u32, d: u32| if v == 0 { d } else { v };
    let spec = crate::domain::DomainSpec {
        memory_mib: or(req.memory_mib, base.memory_mib),
        vcpus: or(req.vcpus, base.vcpus),
        weight: or(req.weight, base.weight),
        cap: if req.cap == 0 { base.cap } else { req.cap },
        cpus: if req.cpus == 0 { base.cpus } else { req.cpus },
        cmdline: if cmdline.is_empty() { base.cmdline.clone() } else { cmdline.into() },
        initrd: if initrd.is_empty() { base.initrd.clone() } else { initrd.into() },
        ..base
    };
    let valid_name = !name.is_empty()
        && name.len() <= abi::config::MAX_DOMAIN_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if image.is_empty()
        || !valid_name
        || spec.memory_mib > MAX_DOMAIN_MEMORY_MIB
        || spec.vcpus > MAX_VCPUS
        || spec.weight > 65_535
        || spec.cap > 6400
        || crate::domain::all().iter().any(|d| d.name == name)
    {
        return Err(Error::Invalid);
    }
    match lifecycle::start(name, &spec) {
        Ok(d) => Ok(u64::from(d.id)),
        Err((e, why)) => {
            log::warn!("domain {name}: not created: {why}");
            Err(if why.contains("out of memory") || why.contains("not enough") { Error::NoMemory } else { e })
        }
    }
}

fn vcpu_info(d: &Domain, index: u32, v: &spin::Mutex<crate::domain::vcpu::Vcpu>) -> VcpuInfo {
    use crate::domain::vcpu::VcpuState as V;
    let sched = sched::control::vcpu(d.id, index);
    // The vCPU's own state, if nobody is running it right now (then it is running).
    let own = v.try_lock().map(|g| g.state);
    let running = sched.as_ref().is_some_and(|s| s.3);
    let state = if d.state().is_final() {
        VcpuState::Dead
    } else if running || own.is_none() {
        VcpuState::Running
    } else {
        match own {
            Some(V::Blocked) => VcpuState::Blocked,
            Some(V::WaitForSipi | V::Paused) => VcpuState::Offline,
            Some(V::Done) => VcpuState::Dead,
            _ => VcpuState::Runnable,
        }
    };
    let (stats, affinity, cpu) = match sched {
        Some((st, aff, cpu, _)) => (Some(st), aff, cpu),
        None => (None, 0, None),
    };
    VcpuInfo {
        domain: d.id,
        vcpu: index,
        state: state as u32,
        cpu: cpu.map_or(u32::MAX, |c| c as u32),
        affinity,
        cpu_time_ns: stats.map_or(0, |s| s.run_ns),
        wait_ns: stats.map_or(0, |s| s.wait_ns),
        preemptions: stats.map_or(0, |s| s.preemptions),
        migrations: stats.map_or(0, |s| s.migrations),
        reserved: 0,
    }
}

/// A ring read for the guest: `len` bytes at most from the stream position in the
/// guest's `*cursor`, into `buf`; the cursor is moved past what was read. The cursor is
/// read and both outputs are checked before anything is written.
fn read_ring(
    vmcs: &Current,
    domain: &Domain,
    buf: u64,
    len: u64,
    cursor: u64,
    read: impl FnOnce(u64, &mut [u8]) -> (u64, usize),
) -> Result<u64, Error> {
    let mut pos = [0u8; 8];
    copy_from_guest(vmcs, domain, cursor, &mut pos)?;
    let mut bytes = zeroed(len)?;
    let (start, n) = read(u64::from_le_bytes(pos), &mut bytes);
    copy_to_guest(vmcs, domain, buf, &bytes[..n])?;
    copy_to_guest(vmcs, domain, cursor, &(start + n as u64).to_le_bytes())?;
    Ok(n as u64)
}

/// The host as `caller` may see it: Domain0 gets the machine; a DomU gets what
/// concerns itself only (its own RAM as the total, no free memory, no domain count),
/// so that it cannot watch other domains come and go or size their memory.
/// A zeroed buffer of `len` bytes (the ABI bounds `len`), or ENOMEM when the heap cannot
/// give it: a guest's call never makes the hypervisor panic on an allocation.
fn zeroed(len: u64) -> Result<alloc::vec::Vec<u8>, Error> {
    let len = usize::try_from(len).map_err(|_| Error::TooBig)?;
    let mut v = alloc::vec::Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::NoMemory)?;
    v.resize(len, 0);
    Ok(v)
}

fn host_info(caller: &Domain) -> HostInfo {
    let caps = crate::vmx::capabilities();
    let features = u64::from(caps.is_some_and(|c| c.has_preemption_timer()))
        | u64::from(crate::arch::apic::has_tsc_deadline()) << 1;
    let dom0 = caller.is_dom0();
    HostInfo {
        cpus: crate::sched::online_cpus(),
        domains: if dom0 { crate::domain::all().len() as u32 } else { 0 },
        memory_total: if dom0 { crate::mm::phys::total_bytes() } else { caller.memory.lock().size() },
        memory_free: if dom0 { crate::mm::phys::free_bytes() } else { 0 },
        tsc_khz: crate::arch::timer::tsc_hz() / 1000,
        features,
    }
}

/// The guest-physical pieces of the caller's buffer (`guest_paging::buffer`, which
/// checks every page before anything is copied).
fn pieces(
    vmcs: &Current,
    memory: &crate::domain::memory::GuestMemory,
    addr: u64,
    len: usize,
    access: Access,
) -> Result<guest_paging::Pieces, Error> {
    let ctx = super::guest_paging_context(vmcs);
    guest_paging::buffer(memory, memory.size(), &ctx, addr, len, access).map_err(|e| match e {
        guest_paging::BufferError::Fault => Error::Fault,
        guest_paging::BufferError::TooLong => Error::TooBig,
    })
}

fn copy_from_guest(vmcs: &Current, domain: &Domain, addr: u64, buf: &mut [u8]) -> Result<(), Error> {
    let memory = domain.memory.lock();
    let parts = pieces(vmcs, &memory, addr, buf.len(), Access::Read)?;
    let mut off = 0;
    for (gpa, n) in parts.iter() {
        memory.read(gpa, &mut buf[off..off + n]).map_err(|_| Error::Fault)?;
        off += n;
    }
    Ok(())
}

fn copy_to_guest(vmcs: &Current, domain: &Domain, addr: u64, data: &[u8]) -> Result<(), Error> {
    let mut memory = domain.memory.lock();
    // Every page is checked (present, writable, in RAM) before the first byte is written.
    let parts = pieces(vmcs, &memory, addr, data.len(), Access::Write)?;
    let mut off = 0;
    for (gpa, n) in parts.iter() {
        memory.write(gpa, &data[off..off + n]).map_err(|_| Error::Fault)?;
        off += n;
    }
    Ok(())
}
