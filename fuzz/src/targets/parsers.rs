//! Parsers and decoders: the boot bundle, the configuration, the image loaders, hypercall
//! decoding, the MMIO instruction decoder and the guest page walker.

use crate::input::Input;
use abi::bundle::{self, Bundle, BundleBuilder, EntryKind};
use abi::crc32::crc32;
use abi::hypercall::{self, Call};
use hypervisor::decode::{self, CpuMode, Operation};
use hypervisor::loader::plan::{EntryMode, LIMIT_4G, LIMIT_REAL_MODE_ENTRY, LoadPlan};
use hypervisor::loader::{bzimage, elf64, flat, multiboot};
use hypervisor::mm::addr::GuestPhysAddr;
use hypervisor::mm::guest_paging::{self, Access, Context, GuestBytes, GuestRam, PagingMode};

/// The bundle parser. The first byte picks how the rest is used:
/// - 0: parsed as it is;
/// - 1: parsed after the CRCs are fixed up (entries, table, header), so the fuzzer gets
///   past the checksums to the bounds, name and overlap checks;
/// - 2: read as a list of entries, written with `BundleBuilder` and parsed back: whatever
///   the builder accepts, the parser must accept with the same entries.
pub fn bundle(data: &[u8]) {
    let mut input = Input::new(data);
    match input.u8() % 3 {
        0 => check_bundle(input.rest()),
        1 => {
            let mut bytes = input.rest().to_vec();
            fix_bundle_crcs(&mut bytes);
            check_bundle(&bytes);
        }
        _ => bundle_round_trip(&mut input),
    }
}

/// Parses `bytes`; on success checks what `Bundle` promises about its entries.
fn check_bundle(bytes: &[u8]) {
    let parsed = match Bundle::parse(bytes) {
        Ok(b) => b,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let total = usize::try_from(parsed.total_len()).unwrap();
    assert!(total <= bytes.len());
    assert_eq!(parsed.version(), bundle::VERSION);
    let mut count = 0;
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for entry in parsed.entries() {
        count += 1;
        let start = usize::try_from(entry.offset).unwrap();
        assert_eq!(bytes.get(start..start + entry.data.len()), Some(entry.data), "data is where the table says");
        assert!(start + entry.data.len() <= total);
        assert_eq!(entry.offset % bundle::OFFSET_ALIGN, 0);
        assert_eq!(crc32(entry.data), entry.checksum);
        assert!(!entry.name.is_empty() && entry.name.len() <= bundle::NAME_LEN);
        assert!(entry.name.bytes().all(|b| (0x21..=0x7E).contains(&b)), "printable names: {:?}", entry.name);
        assert_eq!(parsed.find(entry.name), Some(entry), "names are unique");
        let end = entry.offset + entry.data.len() as u64;
        if !entry.data.is_empty() {
            assert!(spans.iter().all(|&(s, e)| end <= s || e <= entry.offset), "entries overlap");
            spans.push((entry.offset, end));
        }
        let _ = format!("{entry:?} {}", entry.kind);
    }
    assert_eq!(count, parsed.len());
    assert_eq!(parsed.is_empty(), count == 0);
}

/// Rewrites every CRC the parser checks so that it matches, where the fields it covers
/// are in bounds. Offsets follow docs/boot-bundle.md.
fn fix_bundle_crcs(b: &mut [u8]) {
    if b.len() < bundle::HEADER_LEN {
        return;
    }
    let count = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
    let table_end = bundle::HEADER_LEN + count.min(bundle::MAX_ENTRIES) * bundle::ENTRY_LEN;
    let table_end = table_end.min(b.len() / bundle::ENTRY_LEN * bundle::ENTRY_LEN).max(bundle::HEADER_LEN);
    let table_end = bundle::HEADER_LEN + (table_end - bundle::HEADER_LEN) / bundle::ENTRY_LEN * bundle::ENTRY_LEN;
    for e in (bundle::HEADER_LEN..table_end).step_by(bundle::ENTRY_LEN) {
        if e + bundle::ENTRY_LEN > b.len() {
            break;
        }
        let offset = u64::from_le_bytes(b[e + 48..e + 56].try_into().unwrap());
        let len = u64::from_le_bytes(b[e + 56..e + 64].try_into().unwrap());
        let Some(end) = offset.checked_add(len) else { continue };
        if end <= b.len() as u64 {
            let crc = crc32(&b[offset as usize..end as usize]);
            b[e + 44..e + 48].copy_from_slice(&crc.to_le_bytes());
        }
    }
    if table_end <= b.len() {
        let crc = crc32(&b[bundle::HEADER_LEN..table_end]);
        b[24..28].copy_from_slice(&crc.to_le_bytes());
    }
    let crc = crc32(&b[..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
}

fn bundle_round_trip(input: &mut Input<'_>) {
    let mut builder = BundleBuilder::new();
    let mut added: Vec<(String, EntryKind, Vec<u8>)> = Vec::new();
    while !input.is_empty() && added.len() < 16 {
        let name_len = usize::from(input.u8() % 48);
        let name = String::from_utf8_lossy(input.bytes(name_len)).into_owned();
        let kind = EntryKind::from_raw(input.u16());
        let data_len = usize::from(input.u16() % 2048);
        let data = input.bytes(data_len).to_vec();
        if builder.add(&name, kind, data.clone()).is_ok() {
            added.push((name, kind, data));
        }
    }
    let bytes = builder.build();
    let parsed = Bundle::parse(&bytes).unwrap_or_else(|e| panic!("the builder wrote a bundle the parser refuses: {e}"));
    let entries: Vec<_> = parsed.entries().map(|e| (e.name.to_string(), e.kind, e.data.to_vec())).collect();
    assert_eq!(entries, added);
    check_bundle(&bytes);
}

/// The configuration parser, on the input as text (invalid UTF-8 replaced): `parse` and
/// `for_each_domain` agree, and an accepted file's values are within their documented
/// limits.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = abi::config::parse(&text);
    let mut domains = Vec::new();
    let walked = abi::config::for_each_domain(&text, |d| domains.push(d));
    match (&parsed, &walked) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("parse and for_each_domain disagree: {parsed:?} / {walked:?}"),
    }
    let Ok(config) = parsed else { return };
    assert_eq!(config.domain_count, domains.iter().filter(|d| !d.dom0).count());
    assert_eq!(config.dom0, domains.iter().any(|d| d.dom0));
    assert!((1..=1000).contains(&config.sched_slice_ms), "slice {}", config.sched_slice_ms);
    let rate = config.sched_ratelimit_us;
    assert!(rate == 0 || ((100..=500_000).contains(&rate) && rate / 1000 <= config.sched_slice_ms), "rate {rate}");
    for d in &domains {
        assert!(!d.image.is_empty());
        assert!(d.memory_mib <= abi::config::MAX_DOMAIN_MEMORY_MIB, "{d:?}");
        assert!((1..=abi::config::MAX_VCPUS).contains(&d.vcpus), "{d:?}");
        assert!(d.cmdline.len() <= abi::config::MAX_CMDLINE, "{d:?}");
        assert!(d.dom0 || (1..=abi::config::MAX_DOMAIN_NAME).contains(&d.name.len()), "{d:?}");
        assert!((1..=65_535).contains(&d.weight), "{d:?}");
        assert!(d.cpus != 0, "{d:?}");
    }
    let mut names: Vec<_> = domains.iter().map(|d| d.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), domains.len(), "domain names are unique");
}

/// The guest memory size a loader target uses: the first byte gives 1 to 128 MiB, or
/// (when its top bit is set) the next 8 bytes give any size.
fn guest_mem(input: &mut Input<'_>) -> u64 {
    let b = input.u8();
    if b & 0x80 == 0 { (u64::from(b) + 1) << 20 } else { input.u64() }
}

/// What every accepted plan must satisfy, whichever loader made it.
fn check_plan(plan: &LoadPlan<'_>, image: &[u8], guest_mem: u64) {
    plan.validate(guest_mem).expect("a loader returned a plan its own validation refuses");
    let image_range = image.as_ptr_range();
    for s in &plan.segments {
        let range = s.data.as_ptr_range();
        assert!(s.data.is_empty() || (image_range.start <= range.start && range.end <= image_range.end));
        assert!(s.data.len() as u64 <= s.mem_size);
        assert!(s.end().is_some_and(|end| end <= guest_mem));
    }
    assert!(plan.highest_gpa() <= guest_mem);
    assert!(plan.segments.iter().any(|s| plan.entry.checked_sub(s.gpa.0).is_some_and(|o| o < s.data.len() as u64)));
    if plan.mode == EntryMode::Protected32 {
        assert!(plan.highest_gpa() <= LIMIT_4G);
    }
    if plan.mode == EntryMode::Real16 {
        assert!(plan.entry < LIMIT_REAL_MODE_ENTRY);
    }
    let _ = plan.overlaps(GuestPhysAddr(plan.entry), 1);
}

/// The ELF64 loader: guest memory size, then the image.
pub fn elf64(data: &[u8]) {
    let mut input = Input::new(data);
    let mem = guest_mem(&mut input);
    let image = input.rest();
    match elf64::load(image, mem) {
        Ok(plan) => {
            check_plan(&plan, image, mem);
            assert_eq!(plan.mode, EntryMode::Long64);
            assert!(plan.multiboot.is_none());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// The multiboot loader: guest memory size, the information blob's address, a command line
/// length, the command line, then the image. An accepted kernel also gets its information
/// structure built.
pub fn multiboot(data: &[u8]) {
    let mut input = Input::new(data);
    let mem = guest_mem(&mut input);
    let at = if input.bool() { multiboot::INFO_GPA } else { GuestPhysAddr(u64::from(input.u32())) };
    let cmdline_len = usize::from(input.u8());
    let cmdline = String::from_utf8_lossy(input.bytes(cmdline_len)).into_owned();
    let image = input.rest();
    match multiboot::load(image, mem) {
        Ok(plan) => {
            check_plan(&plan, image, mem);
            assert_eq!(plan.mode, EntryMode::Protected32);
            assert!(plan.multiboot.is_some());
            if let Ok(info) = multiboot::build_info(at, mem, &cmdline, "ferrovisor") {
                assert_eq!(info.info_gpa, at);
                let end = at.0 + info.bytes.len() as u64;
                assert!(end <= mem && end <= LIMIT_4G, "blob {at:?}+{} beyond memory {mem}", info.bytes.len());
            }
            // Where the hypervisor puts it: in memory, below 4 GiB, never over the image.
            if let Ok(info) = multiboot::place_info(&plan, mem, &cmdline, "ferrovisor") {
                let len = info.bytes.len() as u64;
                let end = info.info_gpa.0 + len;
                assert!(end <= mem && end <= LIMIT_4G, "placed blob {:?}+{len} beyond memory {mem}", info.info_gpa);
                assert!(!plan.overlaps(info.info_gpa, len), "placed blob {:?}+{len} over the image", info.info_gpa);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// The bzImage parser (Linux boot protocol): guest memory size, the lowest load address,
/// a command line length, then the image. An accepted kernel gets a load address and a
/// zero page; the address must leave room for `init_size` inside memory, and the zero
/// page must carry the image's header and what was asked for.
pub fn bzimage(data: &[u8]) {
    let mut input = Input::new(data);
    let mem = guest_mem(&mut input);
    let lowest = u64::from(input.u32());
    let cmdline_len = usize::from(input.u16());
    let image = input.rest();
    let Ok(bz) = bzimage::parse(image).map_err(|e| e.to_string()) else { return };
    if let Ok(addr) = bz.load_address(mem, lowest) {
        let need = addr + u64::from(bz.header.init_size).max(bz.kernel.len() as u64);
        assert!(need <= mem, "kernel at {addr:#x} needs up to {need:#x} beyond memory {mem:#x}");
        assert!(addr >= lowest || !bz.header.relocatable || addr == bz.header.pref_address.max(0x10_0000));
    }
    let e820 = hypervisor::domain::firmware::e820(mem.min(1 << 40));
    let zp = bzimage::ZeroPageInput { e820: &e820, cmdline_gpa: 0x2_0000, cmdline_len, initrd: None, rsdp: None };
    match bz.zero_page(&zp) {
        Ok(page) => {
            assert_eq!(&page[0x202..0x206], b"HdrS", "the zero page starts from the image's header");
            assert_eq!(usize::from(page[0x1E8]), e820.len().min(bzimage::ZERO_PAGE_E820_MAX));
        }
        Err(e) => {
            assert!(cmdline_len > bz.header.cmdline_size as usize, "refused for {e}");
        }
    }
}

/// The flat loader: guest memory size, load address, entry, mode, then the image.
pub fn flat(data: &[u8]) {
    let mut input = Input::new(data);
    let mem = guest_mem(&mut input);
    let load = GuestPhysAddr(if input.bool() { u64::from(input.u32()) } else { input.u64() });
    let entry = if input.bool() { load.0.wrapping_add(u64::from(input.u16())) } else { input.u64() };
    let mode = input.pick(&[EntryMode::Real16, EntryMode::Protected32, EntryMode::Long64]);
    let image = input.rest();
    match flat::load(image, load, entry, mode, mem) {
        Ok(plan) => {
            check_plan(&plan, image, mem);
            assert_eq!(plan.mode, mode);
            assert_eq!(plan.segments.len(), 1);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// Hypercall decoding (RAX and six arguments), the error codes, and the byte layouts of
/// the structures calls exchange.
pub fn hypercall(data: &[u8]) {
    let mut input = Input::new(data);
    // Mostly existing call numbers, sometimes anything.
    let number = match input.u8() {
        b @ 0..=0xBF => u64::from(b % 32),
        _ => input.u64(),
    };
    let args = [input.u64(), input.u64(), input.u64(), input.u64(), input.u64(), input.u64()];
    match hypercall::decode(number, args) {
        Ok(request) => {
            let call = Call::from_number(number).expect("decoded a call that does not exist");
            assert_eq!(request.call(), call);
            let _ = call.privileged();
        }
        Err(e) => {
            assert_eq!(e == hypercall::Error::NoSys, Call::from_number(number).is_none());
            assert_eq!(hypercall::Error::from_code(e.code()), Some(e));
        }
    }
    let code = input.u64() as i64;
    if let Some(e) = hypercall::Error::from_code(code) {
        assert_eq!(e.code(), code);
    }
    // The structures: bytes -> struct -> bytes is the identity.
    let rest = input.rest();
    let mut b = [0u8; hypercall::DomainCreate::SIZE];
    for (slot, byte) in b.iter_mut().zip(rest.iter().cycle()) {
        *slot = *byte;
    }
    let info = hypercall::DomainInfo::from_bytes(b[..hypercall::DomainInfo::SIZE].try_into().unwrap());
    // DomainInfo's fields end at byte 88; the last 8 of its 96 bytes are written as zeros.
    let written = info.to_bytes();
    assert_eq!(written[..88], b[..88]);
    assert_eq!(written[88..], [0; 8]);
    assert_eq!(hypercall::DomainInfo::from_bytes(&written), info);
    let _ = info.name();
    let vcpu = hypercall::VcpuInfo::from_bytes(b[..hypercall::VcpuInfo::SIZE].try_into().unwrap());
    assert_eq!(vcpu.to_bytes()[..], b[..hypercall::VcpuInfo::SIZE]);
    let platform = hypercall::PlatformInfo::from_bytes(b[..hypercall::PlatformInfo::SIZE].try_into().unwrap());
    assert_eq!(platform.to_bytes()[..], b[..hypercall::PlatformInfo::SIZE]);
    let create = hypercall::DomainCreate::from_bytes(&b);
    assert_eq!(create.to_bytes(), b);
    let _ = hypercall::field_str(&create.name);
    let _ = hypercall::field_str(&create.cmdline);
}

/// The MMIO instruction decoder: the first byte picks the CPU mode, the rest are the
/// instruction bytes.
pub fn decode(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.pick(&[CpuMode::Real16, CpuMode::Protected16, CpuMode::Protected32, CpuMode::Long64]);
    let bytes = input.rest();
    let result = decode::decode(bytes, mode);
    let decoded = match result {
        Ok(d) => d,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let len = usize::from(decoded.len);
    assert!((1..=decode::MAX_INSTRUCTION_LEN).contains(&len) && len <= bytes.len(), "{decoded:?}");
    // An instruction is self-delimiting: its own bytes decode the same, without the rest.
    assert_eq!(decode::decode(&bytes[..len], mode), result, "decoding depends on bytes after the instruction");
    let valid_size = |s: u8| matches!(s, 1 | 2 | 4 | 8);
    let max_reg = if mode == CpuMode::Long64 { 16 } else { 8 };
    match decoded.op {
        Operation::Load { dest, size, dest_size, sign_extend } => {
            assert!(valid_size(size) && valid_size(dest_size) && dest_size >= size, "{decoded:?}");
            assert!(dest.number < max_reg, "{decoded:?}");
            assert!(!dest.high_byte || (dest.number < 4 && dest_size == 1), "{decoded:?}");
            let value = decode::extend(0x8081_8283_8485_8687, size, sign_extend);
            let _ = decode::merge(u64::MAX, value, dest_size, dest.high_byte);
        }
        Operation::Store { src, size } => {
            assert!(valid_size(size), "{decoded:?}");
            assert!(src.number < max_reg, "{decoded:?}");
            assert!(!src.high_byte || (src.number < 4 && size == 1), "{decoded:?}");
        }
        Operation::StoreImm { value, size } => {
            assert!(valid_size(size), "{decoded:?}");
            if size < 8 {
                assert_eq!(value >> (8 * u32::from(size)), 0, "immediate wider than the store: {decoded:?}");
            }
        }
    }
    if mode != CpuMode::Long64 {
        let is_8 = |op: Operation| match op {
            Operation::Load { size, dest_size, .. } => size == 8 || dest_size == 8,
            Operation::Store { size, .. } | Operation::StoreImm { size, .. } => size == 8,
        };
        assert!(!is_8(decoded.op), "a 64-bit operand outside long mode: {decoded:?}");
    }
}

/// Guest RAM for the page-walk target: `RAM_SIZE` bytes from the input, repeated.
const RAM_SIZE: usize = 32 * 1024;

struct Ram(Vec<u8>);

impl GuestRam for Ram {
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        assert_eq!(gpa % 8, 0, "unaligned table read at {gpa:#x}");
        let start = usize::try_from(gpa).ok()?;
        let bytes = self.0.get(start..start.checked_add(8)?)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }
}

impl GuestBytes for Ram {
    fn read_bytes(&self, gpa: u64, buf: &mut [u8]) -> Option<()> {
        let start = usize::try_from(gpa).ok()?;
        buf.copy_from_slice(self.0.get(start..start.checked_add(buf.len())?)?);
        Some(())
    }
}

/// The guest page walker: control registers and PDPTEs, an address, a length and an
/// access kind, then the contents of a 32 KiB guest RAM (the rest of the input, repeated).
pub fn guest_paging(data: &[u8]) {
    let mut input = Input::new(data);
    let (cr0, cr3, cr4, efer) = (input.u32().into(), input.u64(), input.u32().into(), input.u32().into());
    // Mostly table addresses inside the RAM.
    let cr3 = if cr3 >> 63 == 0 { cr3 % RAM_SIZE as u64 } else { cr3 };
    let pdptes = [input.u64(), input.u64(), input.u64(), input.u64()];
    let ctx = Context::from_registers(cr0, cr3, cr4, efer, pdptes);
    let linear = input.u64();
    let len = usize::from(input.u16()) * usize::from(input.u8() % 2 + 1);
    let access = input.pick(&[Access::Read, Access::Write, Access::Fetch]);
    let contents = input.rest();
    let mut ram = Ram(vec![0; RAM_SIZE]);
    if !contents.is_empty() {
        for chunk in ram.0.chunks_mut(contents.len()) {
            chunk.copy_from_slice(&contents[..chunk.len()]);
        }
    }

    for probe in [linear, linear.wrapping_add(4096), linear ^ (1 << 47), linear & 0xFFFF_FFFF] {
        match guest_paging::translate(&ram, &ctx, probe, access) {
            Ok(gpa) => {
                assert_eq!(gpa & 0xFFF, probe & 0xFFF, "the page offset is kept");
                match ctx.mode {
                    PagingMode::None => assert_eq!(gpa, probe & 0xFFFF_FFFF),
                    PagingMode::Bits32 { .. } => assert!(gpa < 1 << 40, "{gpa:#x}"),
                    PagingMode::Pae { .. } | PagingMode::Long { .. } => assert!(gpa < 1 << 52, "{gpa:#x}"),
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }

    let mut buf = vec![0u8; len.min(3 * 4096)];
    let n = guest_paging::read_linear(&ram, &ctx, linear, &mut buf, access);
    assert!(n <= buf.len());

    if let Ok(pieces) = guest_paging::buffer(&ram, RAM_SIZE as u64, &ctx, linear, len, access) {
        let mut total = 0usize;
        for (i, (gpa, n)) in pieces.iter().enumerate() {
            assert!(n > 0 && n <= 4096);
            assert!(gpa + n as u64 <= RAM_SIZE as u64, "piece outside RAM");
            assert!((gpa & 0xFFF) + n as u64 <= 4096, "piece crosses a page");
            let page = linear.wrapping_add(total as u64);
            assert_eq!(guest_paging::translate(&ram, &ctx, page, access), Ok(gpa), "piece {i}");
            total += n;
        }
        assert_eq!(total, len);
        assert!(pieces.iter().count() <= guest_paging::MAX_PIECES);
    }
}
