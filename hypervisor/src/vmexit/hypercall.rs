//! VMCALL: the hypercall ABI (`abi::hypercall`, docs/hypercalls.md).
//!
//! The registers are decoded and range-checked by `abi::hypercall::decode` (host-tested);
//! this module checks privilege (only Domain0 may make privileged calls), translates
//! every guest pointer through the caller's own page tables and its memory (never
//! trusting an address: an unmapped, read-only or out-of-RAM buffer is `EFAULT`, checked
//! for the whole buffer before anything is copied), and performs the call.

use super::Next;
use crate::domain::Domain;
use crate::domain::vcpu::Vcpu;
use crate::mm::guest_paging::{self, Access};
use crate::vmx::fields::{Field32, FieldNatural};
use crate::vmx::vmcs::Current;
use abi::hypercall::{self, Error, HostInfo, Request};

/// Domain0's ID. No domain has it until Domain0 exists, so today every privileged call
/// is refused with `EPERM`.
pub const DOM0: u32 = 0;

pub fn handle(vmcs: &Current, domain: &Domain, vcpu: &mut Vcpu) -> Next {
    // Hypercalls are for the guest kernel: at CPL > 0 VMCALL raises #UD, as on a CPU
    // without a hypervisor (CPL is SS.DPL; real mode is CPL 0).
    let cpl = (vmcs.read32(Field32::GuestSsAccessRights) >> 5) & 3;
    if vmcs.read_natural(FieldNatural::GuestCr0) & 1 != 0 && cpl != 0 {
        super::inject_exception(vmcs, super::UD, None);
        return Next::Resume;
    }
    let r = &vcpu.regs;
    let result = match hypercall::decode(r.rax, [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9]) {
        Err(e) => Err(e),
        Ok(req) if req.call().privileged() && domain.id != DOM0 => Err(Error::NotPermitted),
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
            let mut rt = domain.runtime.lock();
            for &b in data.iter() {
                if let Some(line) = rt.console.push(b) {
                    log::info!("[{}] {}", domain.name, line);
                }
            }
            Ok(len)
        }
        // Console input comes from Domain0's `console` command; nothing can send any yet,
        // so there is never anything waiting.
        Request::ConsoleRead { .. } => Ok(0),
        Request::HostInfo { out } => {
            let info = host_info();
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
        // Privileged calls: reachable only from Domain0, which does not exist yet.
        _ => Err(Error::NoSys),
    }
}

fn host_info() -> HostInfo {
    let caps = crate::vmx::capabilities();
    let features = u64::from(caps.is_some_and(|c| c.has_preemption_timer()))
        | u64::from(crate::arch::apic::has_tsc_deadline()) << 1;
    HostInfo {
        cpus: crate::sched::online_cpus(),
        domains: crate::domain::all().len() as u32,
        memory_total: crate::mm::phys::total_bytes(),
        memory_free: crate::mm::phys::free_bytes(),
        tsc_khz: crate::arch::timer::tsc_hz() / 1000,
        features,
    }
}

/// The guest-physical pieces of the linear range `[addr, addr + len)`, each inside one
/// page and inside guest RAM, or `EFAULT`. At most 17 pieces (64 KiB + one).
fn pieces(
    vmcs: &Current,
    memory: &crate::domain::memory::GuestMemory,
    addr: u64,
    len: usize,
    access: Access,
) -> Result<heapless_pieces::Pieces, Error> {
    let ctx = super::guest_paging_context(vmcs);
    let mut out = heapless_pieces::Pieces::default();
    let mut done = 0usize;
    while done < len {
        let linear = addr.checked_add(done as u64).ok_or(Error::Fault)?;
        let n = ((4096 - (linear & 0xFFF)) as usize).min(len - done);
        let gpa = guest_paging::translate(memory, &ctx, linear, access).map_err(|_| Error::Fault)?;
        if gpa.checked_add(n as u64).is_none_or(|end| end > memory.size()) {
            return Err(Error::Fault);
        }
        out.push(gpa, n).ok_or(Error::TooBig)?;
        done += n;
    }
    Ok(out)
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

/// A fixed-capacity list of (gpa, length) pieces: no allocation on the hypercall path.
mod heapless_pieces {
    const MAX: usize = 17;

    #[derive(Default)]
    pub struct Pieces {
        items: [(u64, usize); MAX],
        len: usize,
    }

    impl Pieces {
        pub fn push(&mut self, gpa: u64, n: usize) -> Option<()> {
            *self.items.get_mut(self.len)? = (gpa, n);
            self.len += 1;
            Some(())
        }

        pub fn iter(&self) -> impl Iterator<Item = (u64, usize)> + '_ {
            self.items.iter().take(self.len).copied()
        }
    }
}
