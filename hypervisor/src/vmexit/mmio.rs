//! MMIO: an EPT violation on a guest-physical address that is not RAM.
//!
//! Guest RAM is mapped in the EPT; everything else is absent, so any access to it exits
//! here. If a device model claims the address, the faulting instruction is fetched
//! (through the guest's own page tables), decoded (`crate::decode`: the MOV family),
//! performed against the model, and skipped. Nothing claims the address: the access is
//! completed as a PC's buses complete it, a read returning all ones and a write going
//! nowhere (Xen and KVM+QEMU do the same; guests probe for an HPET, a disabled local
//! APIC's page or ROM this way), counted per domain and logged at a bounded rate
//! (`domain::unclaimed`).
//!
//! Fetching means walking the guest's page tables, and a walk, the byte copy and the
//! decode cost over a thousand instructions; a driver polls the same few instructions.
//! So each vCPU keeps the last one ([`FetchCache`]): its translation with the page-table
//! entries the walk read, its bytes and their decoding. Before reuse, those entries are
//! read again (at their host addresses) and the bytes compared: if the guest changed a
//! table or the code, the cache misses and the full path runs. Reads of the local APIC
//! also skip the run loop's per-entry work (`vmexit::handle_fast`): they change
//! nothing an entry must deliver.
//!
//! What is refused, with a crash report rather than a guess (SDM Vol. 3C "EPT
//! Violations" tells these apart):
//! - an access made while delivering an event (the IDT or the stack in MMIO): there is
//!   no instruction to emulate, and no real OS does this;
//! - an access by the guest's page walk (page tables in MMIO), and an instruction fetch
//!   from MMIO: there is no instruction to complete;
//! - instructions outside the decoder's set, and a decoded direction that contradicts the
//!   exit qualification (another vCPU rewrote the instruction after the exit).

use super::{Next, crash};
use crate::decode::{self, CpuMode, FetchCache, Operation, Reg};
use crate::devices::lapic::LocalApic;
use crate::domain::Domain;
use crate::domain::vcpu::Vcpu;
use crate::mm::guest_paging::{self, Access, MAX_WALK_ENTRIES};
use crate::vmx::exit::{EptViolation, Gpr, InterruptionInfo};
use crate::vmx::fields::{Field32, Field64, FieldNatural, ReadOnly32, Segment};
use crate::vmx::vmcs::Current;

/// The device behind a guest-physical address, with the offset into its window.
enum Target {
    Lapic {
        offset: u32,
    },
    IoApic {
        offset: u64,
    },
    /// No RAM and no device: reads float to all ones, writes are dropped.
    Nothing,
}

/// Which model claims `gpa` for this vCPU.
fn claim(vcpu: &Vcpu, gpa: u64) -> Option<Target> {
    use crate::devices::ioapic::IOAPIC_BASE;
    if (IOAPIC_BASE..IOAPIC_BASE + 4096).contains(&gpa) {
        return Some(Target::IoApic { offset: gpa - IOAPIC_BASE });
    }
    let lapic: &LocalApic = &vcpu.lapic;
    // The xAPIC page is decoded only while the APIC is enabled in xAPIC mode (SDM Vol. 3A
    // "Local APIC Status and Location"; in x2APIC mode the MMIO interface is gone).
    if lapic.apic_base() & (1 << 11) != 0 && !lapic.x2apic() {
        let base = lapic.mmio_base();
        if (base..base + 4096).contains(&gpa) {
            return Some(Target::Lapic { offset: (gpa - base) as u32 });
        }
    }
    None
}

impl FetchCache {
    /// Whether the guest still has the same instruction there: the same entries in its
    /// tables and the same bytes.
    fn still_valid(&self) -> bool {
        let entries = self.entries.iter().take(self.entry_count);
        entries.clone().all(|&(hpa, value)| read_host_u64(hpa) == value) && {
            let mut now = [0u8; 15];
            read_host_bytes(self.code_hpa, &mut now);
            now == self.bytes
        }
    }
}

/// Eight bytes of guest RAM by host-physical address (8-aligned, inside the domain's
/// RAM: the addresses come from `GuestMemory::host_address` for the running vCPU's own
/// domain, whose RAM stays allocated while any of its vCPUs runs).
fn read_host_u64(hpa: u64) -> u64 {
    // SAFETY: as above; a concurrent guest write makes the value stale, not the read
    // unsound, and a stale value only makes the cache miss.
    unsafe { core::ptr::read_volatile(crate::mm::paging::phys_to_virt(hpa) as *const u64) }
}

/// 15 bytes of guest RAM by host-physical address (inside one chunk of the domain's RAM,
/// checked when the address was cached).
fn read_host_bytes(hpa: u64, out: &mut [u8; 15]) {
    // SAFETY: as in `read_host_u64`; the 15 bytes lie in one chunk (see `fetch`).
    unsafe { core::ptr::copy_nonoverlapping(crate::mm::paging::phys_to_virt(hpa) as *const u8, out.as_mut_ptr(), 15) };
}

/// The fast path's share: a read of the local APIC's page, with nothing else going on
/// (no event being delivered). `None`: take the full path (`handle`).
pub fn handle_fast(vmcs: &Current, domain: &Domain, vcpu: &mut Vcpu) -> Option<Next> {
    let v = EptViolation::from_raw(vmcs.read_ro_natural(crate::vmx::fields::ReadOnlyNatural::ExitQualification));
    if !v.read || v.write || v.fetch || (v.gla_valid && !v.gla_is_translation) {
        return None;
    }
    let gpa = vmcs.read_ro64(crate::vmx::fields::ReadOnly64::GuestPhysicalAddress);
    let target @ Target::Lapic { .. } = claim(vcpu, gpa)? else { return None };
    if InterruptionInfo::from_raw(vmcs.read_ro32(ReadOnly32::IdtVectoringInfo)).is_valid() {
        return None;
    }
    Some(emulate(vmcs, domain, vcpu, gpa, v, target))
}

pub fn handle(vmcs: &Current, domain: &Domain, vcpu: &mut Vcpu, gpa: u64, v: EptViolation) -> Next {
    let target = claim(vcpu, gpa);
    let what = if target.is_some() { "MMIO" } else { "unclaimed address" };
    if InterruptionInfo::from_raw(vmcs.read_ro32(ReadOnly32::IdtVectoringInfo)).is_valid() {
        return crash(vmcs, domain, vcpu, format_args!("event delivery touched {what} at {gpa:#x}"));
    }
    if v.gla_valid && !v.gla_is_translation || v.fetch {
        let how = if v.fetch { "instruction fetch from" } else { "guest page walk through" };
        return crash(vmcs, domain, vcpu, format_args!("{how} {what} at {gpa:#x}"));
    }
    emulate(vmcs, domain, vcpu, gpa, v, target.unwrap_or(Target::Nothing))
}

/// Counts an access to an unclaimed address and says so, at the rate
/// `domain::unclaimed::Tally` allows.
fn note_unclaimed(domain: &Domain, vcpu: &Vcpu, gpa: u64, write: bool, rip: u64) {
    use crate::domain::unclaimed::Report;
    let report = domain.runtime.lock().unclaimed_mmio.count(gpa, write);
    let access = if write { "write to" } else { "read of" };
    match report {
        Report::First => log::warn!(
            "domain {} vcpu{}: {access} unclaimed guest-physical address {gpa:#x} at rip {rip:#x} ({})",
            domain.name,
            vcpu.id,
            if write { "dropped" } else { "reads all ones" }
        ),
        Report::Total(n) => log::warn!("domain {}: {n} accesses to unclaimed guest-physical addresses", domain.name),
        Report::Quiet => {}
    }
}

/// Fetches, decodes and performs the access at RIP against `target`.
fn emulate(vmcs: &Current, domain: &Domain, vcpu: &mut Vcpu, gpa: u64, v: EptViolation, target: Target) -> Next {
    let decoded = match instruction(vmcs, domain, vcpu) {
        Ok(d) => d,
        Err((e, bytes, fetched)) => {
            return crash(
                vmcs,
                domain,
                vcpu,
                format_args!("cannot emulate the MMIO access at {gpa:#x}: {e} (bytes {:02x?})", &bytes[..fetched]),
            );
        }
    };
    let is_load = matches!(decoded.op, Operation::Load { .. });
    if is_load != v.read || !is_load != v.write {
        return crash(
            vmcs,
            domain,
            vcpu,
            format_args!("the instruction at RIP does not match the {} access at {gpa:#x}", v.access_str()),
        );
    }
    if matches!(target, Target::Nothing) {
        note_unclaimed(domain, vcpu, gpa, v.write, vmcs.read_natural(FieldNatural::GuestRip));
    }
    let now = crate::arch::timer::now_ns();
    match decoded.op {
        Operation::Load { dest, size, dest_size, sign_extend } => {
            let raw = read(domain, vcpu, &target, size, now);
            let value = decode::extend(raw, size, sign_extend);
            let old = read_reg(vmcs, vcpu, dest);
            write_reg(vmcs, vcpu, dest, decode::merge(old, value, dest_size, dest.high_byte));
        }
        Operation::Store { src, size } => {
            let mut value = read_reg(vmcs, vcpu, src);
            if src.high_byte {
                value >>= 8;
            }
            write(domain, vcpu, &target, size, value, now);
        }
        Operation::StoreImm { value, size } => write(domain, vcpu, &target, size, value, now),
    }
    Next::Skip(decoded.len)
}

/// The instruction at CS:RIP, decoded: from the vCPU's [`FetchCache`] when it still
/// holds, else fetched through the guest's page tables (and cached when its 15 bytes lie
/// in one chunk of RAM). On failure, the error with the bytes that were fetched.
fn instruction(
    vmcs: &Current,
    domain: &Domain,
    vcpu: &mut Vcpu,
) -> Result<decode::Decoded, (decode::DecodeError, [u8; 15], usize)> {
    let mode = cpu_mode(vmcs);
    let rip = vmcs.read_natural(FieldNatural::GuestRip);
    let linear = match mode {
        CpuMode::Long64 => rip,
        // Outside long mode the linear address wraps at 4 GiB.
        _ => vmcs.read_natural(Segment::Cs.base()).wrapping_add(rip) & 0xFFFF_FFFF,
    };
    let ctx = super::guest_paging_context(vmcs);
    if let Some(c) = &vcpu.mmio_fetch
        && c.linear == linear
        && c.mode == mode
        && c.ctx == ctx
        && c.still_valid()
    {
        return Ok(c.decoded);
    }
    let mut bytes = [0u8; 15];
    let memory = domain.memory.lock();
    let traced = guest_paging::Traced::new(&*memory);
    let fetched = guest_paging::read_linear(&traced, &ctx, linear, &mut bytes, Access::Fetch);
    let decoded = decode::decode(&bytes[..fetched], mode).map_err(|e| (e, bytes, fetched))?;
    // Cacheable when one walk covered all 15 bytes (no page crossing) and they, and every
    // entry the walk read, sit in RAM at known host addresses.
    let trace = traced.trace();
    let same_page = (linear & 0xFFF) <= 0x1000 - 15;
    let code = guest_paging::translate(&*memory, &ctx, linear, Access::Fetch)
        .ok()
        .and_then(|gpa| memory.host_address(gpa).filter(|&(_, contiguous)| contiguous >= 15));
    let mut entries = [(0u64, 0u64); MAX_WALK_ENTRIES];
    let mut ok = fetched == 15 && same_page && trace.len <= MAX_WALK_ENTRIES && code.is_some();
    for (slot, (entry_gpa, value)) in entries.iter_mut().zip(trace.iter()) {
        match memory.host_address(entry_gpa) {
            Some((hpa, contiguous)) if contiguous >= 8 && hpa % 8 == 0 => *slot = (hpa, value),
            _ => ok = false,
        }
    }
    drop(memory);
    vcpu.mmio_fetch = match (ok, code) {
        (true, Some((code_hpa, _))) => Some(FetchCache {
            ctx,
            linear,
            mode,
            entries,
            // One walk (the bytes lie in one page). `translate` above walked again for
            // the code's address: were the tables changed in between, the entries or
            // the bytes no longer match at the next check and the cache misses.
            entry_count: trace.len,
            code_hpa,
            bytes,
            decoded,
        }),
        _ => None,
    };
    Ok(decoded)
}

/// Reads `size` bytes from the device. The local APIC's registers are 32 bits wide at
/// 16-byte strides; narrower reads return the addressed bytes of the register, wider
/// ones the register zero-extended (the SDM leaves both undefined; this is what a
/// compiler's byte access to a register expects).
fn read(domain: &Domain, vcpu: &mut Vcpu, target: &Target, size: u8, now: u64) -> u64 {
    match *target {
        // I/O APIC registers are 32 bits at IOREGSEL (0x00), IOWIN (0x10) and EOI (0x40).
        Target::IoApic { offset } => {
            narrow(domain.devices(|d, _| d.ioapic.mmio_read(offset & !3)), offset as u32, size)
        }
        Target::Lapic { offset } => narrow(vcpu.lapic.mmio_read(offset & !3, now), offset, size),
        Target::Nothing => crate::domain::unclaimed::floating(size),
    }
}

/// The `size` bytes of a 32-bit register that an access at `offset` addresses (a wider
/// access gets the register zero-extended).
fn narrow(reg: u32, offset: u32, size: u8) -> u64 {
    let shifted = u64::from(reg) >> ((offset & 3) * 8);
    if size >= 8 { shifted } else { shifted & ((1u64 << (size * 8)) - 1) }
}

/// Writes `size` bytes to the device. Local APIC registers take only aligned 32-bit
/// writes (SDM Vol. 3A "Local APIC Register Address Map": other sizes are undefined);
/// narrower or misaligned writes are dropped, wider ones write the low 32 bits.
fn write(domain: &Domain, vcpu: &mut Vcpu, target: &Target, size: u8, value: u64, now: u64) {
    match *target {
        Target::IoApic { offset } => {
            if size >= 4 && offset & 3 == 0 {
                // A write can deliver at once: a level line unmasked while high.
                domain.devices(|d, out| {
                    if let Some(m) = d.ioapic_mmio_write(offset, value as u32) {
                        out.push(m);
                    }
                });
            }
        }
        Target::Lapic { offset } => {
            if size >= 4 && offset & 3 == 0 {
                let effects = vcpu.lapic.mmio_write(offset, value as u32, now);
                super::apic::apply(domain, vcpu, effects);
            }
        }
        Target::Nothing => {}
    }
}

fn read_reg(vmcs: &Current, vcpu: &mut Vcpu, r: Reg) -> u64 {
    let g = Gpr::ALL[usize::from(r.number & 0xF)];
    super::read_gpr(vmcs, vcpu, g)
}

fn write_reg(vmcs: &Current, vcpu: &mut Vcpu, r: Reg, value: u64) {
    super::write_gpr(vmcs, vcpu, Gpr::ALL[usize::from(r.number & 0xF)], value);
}

/// The code size from CS and CR0 (SDM Vol. 3A "Segment Descriptors": L and D/B bits).
fn cpu_mode(vmcs: &Current) -> CpuMode {
    let cr0 = vmcs.read_natural(FieldNatural::GuestCr0);
    let rflags = vmcs.read_natural(FieldNatural::GuestRflags);
    let cs = vmcs.read32(Field32::GuestCsAccessRights);
    if cr0 & 1 == 0 || rflags & (1 << 17) != 0 {
        CpuMode::Real16
    } else if cs & (1 << 13) != 0 && vmcs.read64(Field64::GuestIa32Efer) & (1 << 10) != 0 {
        CpuMode::Long64
    } else if cs & (1 << 14) != 0 {
        CpuMode::Protected32
    } else {
        CpuMode::Protected16
    }
}
