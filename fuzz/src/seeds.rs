//! Starting inputs for each target: valid images, bundles, configurations and register
//! sequences, so the fuzzer starts past the magic numbers and checksums. Written to
//! `seeds/TARGET/` by `cargo run --example seeds` (see docs/fuzzing.md); the regression
//! test replays them too.

use abi::bundle::{BundleBuilder, EntryKind};

/// `(target, seed name, bytes)` for every seed.
pub fn all() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let mut add = |target, name, bytes: Vec<u8>| out.push((target, name, bytes));

    // Boot bundles: raw (mode 0), CRC-fixing (mode 1) and the builder round trip (mode 2).
    let built = sample_bundle();
    add("bundle", "valid", [&[0u8][..], &built].concat());
    add("bundle", "valid-fixup", [&[1u8][..], &built].concat());
    let mut entries = vec![2u8];
    for (name, kind, data) in [("hypervisor.cfg", 1u16, &b"[hypervisor]\n"[..]), ("hello64", 2, &elf64_image()[..])] {
        entries.push(name.len() as u8);
        entries.extend_from_slice(name.as_bytes());
        entries.extend_from_slice(&kind.to_le_bytes());
        entries.extend_from_slice(&(data.len() as u16).to_le_bytes());
        entries.extend_from_slice(data);
    }
    add("bundle", "builder", entries);

    add("config", "default", SAMPLE_CONFIG.as_bytes().to_vec());
    add(
        "config",
        "flat-domain",
        b"[hypervisor]\nsched_slice_ms = 10\nsched_ratelimit_us = 0\n[domain boot]\nimage = \"sector\"\n\
          memory = 1\nload_address = 0x7c00\nentry = 0x7c00\nmode = real16\nweight = 512\ncap = 50\ncpus = 0-1,3\n\
          autostart = false\n"
            .to_vec(),
    );

    // Guest memory byte 0x0F: 16 MiB.
    add("elf64", "minimal", [&[0x0Fu8][..], &elf64_image()].concat());
    // Memory 16 MiB, the default information address, a command line, then the kernel.
    let mb_prefix = [&[0x0Fu8, 1, 5][..], b"quiet"].concat();
    add("multiboot", "elf32", [&mb_prefix[..], &multiboot_elf32()].concat());
    add("multiboot", "aout-kludge", [&mb_prefix[..], &multiboot_aout()].concat());
    // 64 MiB, lowest load address 1 MiB, a 20-byte command line, then a bzImage.
    add("bzimage", "x86_64", [&[0x3Fu8, 0, 0, 0x10, 0, 20, 0][..], &bzimage_x86_64()].concat());
    // 1 MiB, loaded at 0x7C00 (u32), entry at its first byte, real mode: a boot sector.
    let mut sector = vec![0u8, 1, 0x00, 0x7C, 0, 0, 1, 0, 0, 0];
    sector.extend_from_slice(&[0xEB, 0xFE]);
    sector.resize(10 + 512, 0);
    add("flat", "boot-sector", sector);

    // ConsoleWrite (1), then the six arguments.
    let mut call = vec![1u8];
    for a in [0x1000u64, 64, 0, 0, 0, 0, (-22i64) as u64] {
        call.extend_from_slice(&a.to_le_bytes());
    }
    add("hypercall", "console-write", call);
    let mut route = vec![23u8];
    for a in [9u64, 3, 0, 0, 0, 0] {
        route.extend_from_slice(&a.to_le_bytes());
    }
    add("hypercall", "irq-route", route);

    // CPU mode byte (0 real, 1 protected 16, 2 protected 32, 3 long), then the bytes.
    add("decode", "mov-load", vec![3, 0x8B, 0x07]);
    add("decode", "rex-store", vec![3, 0x48, 0x89, 0x48, 0x10]);
    add("decode", "store-imm-sib", vec![2, 0xC7, 0x44, 0x24, 0x08, 0x78, 0x56, 0x34, 0x12]);
    add("decode", "movzx-16", vec![1, 0x66, 0x0F, 0xB7, 0x06, 0x34, 0x12]);
    add("decode", "moffs", vec![3, 0xA1, 1, 2, 3, 4, 5, 6, 7, 8]);

    add("guest_paging", "long-2m", long_mode_tables());
    add("guest_paging", "bits32-4k", bits32_tables());

    // Device steps: opcode (bit 7 advances the clock), then operands; see devices.rs.
    let mut pic = Vec::new();
    for (port, value) in [(0u8, 0x11u8), (1, 0x20), (1, 0x04), (1, 0x01), (1, 0x00)] {
        pic.extend_from_slice(&[1, port, value]);
    }
    for (port, value) in [(2u8, 0x11u8), (3, 0x28), (3, 0x02), (3, 0x01), (3, 0x00)] {
        pic.extend_from_slice(&[1, port, value]);
    }
    pic.extend_from_slice(&[3, 0, 1, 3, 0, 0, 4, 3, 9, 1, 4, 1, 0, 0x20, 1, 2, 0x20]);
    add("pic8259", "init-and-ack", pic);

    let mut pit = 0u32.to_le_bytes().to_vec();
    pit.extend_from_slice(&[1, 3, 0x34, 1, 0, 0x9C, 1, 0, 0x2E, 0x83, 10, 0xFF, 0xFF, 0, 0, 0x83, 20, 1, 0]);
    pit.extend_from_slice(&[1, 3, 0xB0, 1, 4, 0x01, 1, 2, 0x10, 1, 2, 0x00, 0x80, 8, 0x40, 0, 0, 2, 0, 4]);
    add("pit8254", "channel0-and-2", pit);

    add("uart16550", "fifo-irq", vec![1, 1, 0x01, 1, 4, 0x08, 1, 2, 0xC7, 2, b'a', 2, b'b', 0, 2, 0, 0, 3, 0, 5]);
    add(
        "uart16550",
        "divisor-loopback",
        vec![1, 3, 0x80, 1, 0, 0x01, 1, 1, 0x00, 1, 3, 0x03, 1, 4, 0x10, 1, 0, b'x', 0, 0],
    );

    let mut rtc = 1_700_000_000u64.to_le_bytes().to_vec();
    rtc.extend_from_slice(&0u32.to_le_bytes());
    rtc.extend_from_slice(&(16u32 << 20).to_le_bytes());
    rtc.extend_from_slice(&0u64.to_le_bytes());
    rtc.extend_from_slice(&[1, 0, 0x0B, 1, 1, 0x72, 0x83, 20, 0xFF, 0x0F, 4, 0, 1, 0, 0x01, 1, 1, 0x30]);
    rtc.extend_from_slice(&[1, 0, 0x0B, 1, 1, 0x80, 1, 0, 0x09, 1, 1, 0x99, 0x83, 30, 0x01, 0x00, 0, 1]);
    add("rtc", "periodic-alarm-set", rtc);

    let mut io = vec![2u8];
    io.extend_from_slice(&[1, 0x10]);
    io.extend_from_slice(&0x0000_8030u32.to_le_bytes());
    io.extend_from_slice(&[1, 0x11]);
    io.extend_from_slice(&0u32.to_le_bytes());
    io.extend_from_slice(&[3, 0, 1, 5, 0x30, 3, 0, 0, 5, 0x30]);
    add("ioapic", "level-pin0", io);

    let mut apic = vec![0u8, 1];
    apic.extend_from_slice(&0u32.to_le_bytes());
    // Register indices in the target's table: 7 SVR, 14 LVT timer, 20 divide, 18 initial, 4 EOI.
    for (reg, value) in [(7u8, 0x1FFu32), (14, 0x2_0030), (20, 0x0B), (18, 1000)] {
        apic.extend_from_slice(&[1, reg]);
        apic.extend_from_slice(&value.to_le_bytes());
    }
    apic.extend_from_slice(&[0x89, 4, 0x10, 0x00, 8, 6, 0x40, 0, 8, 1, 4, 0, 0, 0, 0, 0, 19]);
    apic.extend_from_slice(&[5, 1, 0x0C, 4, 0x08]);
    apic.extend_from_slice(&0x1FFu64.to_le_bytes());
    add("lapic", "timer-and-x2apic", apic);

    add("pci", "probe", vec![2, 0, 12, 1, 0x00, 0, 1, 12, 2, 0, 12, 1, 0x04, 3, 1, 6, 0x07, 0, 0, 0, 0, 1, 6]);

    let mut fw = 2u16.to_le_bytes().to_vec();
    fw.extend_from_slice(&(64u64 << 20).to_le_bytes());
    fw.extend_from_slice(&[2, 9]);
    fw.extend_from_slice(b"opt/hello");
    fw.extend_from_slice(&[5]);
    fw.extend_from_slice(b"world");
    fw.extend_from_slice(&[8]);
    fw.extend_from_slice(b"etc/acpi");
    fw.extend_from_slice(&[0]);
    fw.extend_from_slice(&[2, 0, 3, 1, 0, 6, 0x19, 0, 0, 0, 0, 1, 0]);
    add("fw_cfg", "files", fw);

    let mut pm = 0u32.to_le_bytes().to_vec();
    pm.extend_from_slice(&[1, 2, 6, 0, 1, 0, 0, 3, 0, 0, 6, 1, 0, 6, 0, 1, 0, 0, 0x80, 30, 1, 0, 0, 6, 0, 12]);
    add("acpi_pm", "button-and-timer", pm);

    out
}

/// The configuration `cargo xtask build` puts in the image, in short.
const SAMPLE_CONFIG: &str = "\
# comment
[hypervisor]
log_level = \"info\"
serial_baud = 115200
emulator_exit = true

[dom0]
image = \"dom0\"
memory = 32
script = \"list; info\"

[domain ticker-a]
image = \"hello64\"
memory = 16
vcpus = 2
cmdline = \"ticker\"
";

fn sample_bundle() -> Vec<u8> {
    let mut b = BundleBuilder::new();
    b.add("hypervisor.cfg", EntryKind::Config, SAMPLE_CONFIG.as_bytes().to_vec()).unwrap();
    b.add("hello64", EntryKind::Elf64, elf64_image()).unwrap();
    b.add("empty", EntryKind::Data, Vec::new()).unwrap();
    b.build()
}

fn put(buf: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    if buf.len() < at + bytes.len() {
        buf.resize(at + bytes.len(), 0);
    }
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// An ELF64 x86-64 executable: one PT_LOAD at 1 MiB holding the headers and a `hlt; jmp`.
pub fn elf64_image() -> Vec<u8> {
    const BASE: u64 = 0x10_0000;
    let code_at = 64 + 56;
    let mut e = Vec::new();
    put(&mut e, 0, &[0x7F, b'E', b'L', b'F', 2, 1, 1]);
    put(&mut e, 16, &2u16.to_le_bytes()); // ET_EXEC
    put(&mut e, 18, &62u16.to_le_bytes()); // EM_X86_64
    put(&mut e, 20, &1u32.to_le_bytes());
    put(&mut e, 24, &(BASE + code_at as u64).to_le_bytes());
    put(&mut e, 32, &64u64.to_le_bytes()); // e_phoff
    put(&mut e, 52, &64u16.to_le_bytes()); // e_ehsize
    put(&mut e, 54, &56u16.to_le_bytes()); // e_phentsize
    put(&mut e, 56, &1u16.to_le_bytes()); // e_phnum
    put(&mut e, code_at, &[0xF4, 0xEB, 0xFD]);
    let size = e.len() as u64;
    put(&mut e, 64, &1u32.to_le_bytes()); // PT_LOAD
    put(&mut e, 68, &5u32.to_le_bytes()); // R X
    put(&mut e, 64 + 8, &0u64.to_le_bytes()); // p_offset
    put(&mut e, 64 + 16, &BASE.to_le_bytes()); // p_vaddr
    put(&mut e, 64 + 24, &BASE.to_le_bytes()); // p_paddr
    put(&mut e, 64 + 32, &size.to_le_bytes()); // p_filesz
    put(&mut e, 64 + 40, &(size + 0x1000).to_le_bytes()); // p_memsz (with bss)
    put(&mut e, 64 + 48, &0x1000u64.to_le_bytes());
    e
}

fn multiboot_header(flags: u32) -> [u8; 12] {
    let magic = 0x1BAD_B002u32;
    let checksum = 0u32.wrapping_sub(magic).wrapping_sub(flags);
    let mut h = [0u8; 12];
    h[..4].copy_from_slice(&magic.to_le_bytes());
    h[4..8].copy_from_slice(&flags.to_le_bytes());
    h[8..].copy_from_slice(&checksum.to_le_bytes());
    h
}

/// A bzImage as a 64-bit distribution kernel has it: protocol 2.15, 4 setup sectors,
/// relocatable (2 MiB), preferred at 16 MiB, 32 MiB to decompress in, a 4 KiB kernel.
fn bzimage_x86_64() -> Vec<u8> {
    let mut b = vec![0u8; 5 * 512 + 4096];
    b[0x1F1] = 4;
    put(&mut b, 0x1FE, &0xAA55u16.to_le_bytes());
    b[0x200] = 0xEB;
    b[0x201] = 0x6A;
    put(&mut b, 0x202, b"HdrS");
    put(&mut b, 0x206, &0x020Fu16.to_le_bytes());
    b[0x211] = 1;
    put(&mut b, 0x230, &(2u32 << 20).to_le_bytes());
    b[0x234] = 1;
    put(&mut b, 0x236, &3u16.to_le_bytes());
    put(&mut b, 0x238, &2047u32.to_le_bytes());
    put(&mut b, 0x258, &(16u64 << 20).to_le_bytes());
    put(&mut b, 0x260, &(32u32 << 20).to_le_bytes());
    b
}

/// An ELF32 i386 kernel with a multiboot header (flags: page align, memory info).
fn multiboot_elf32() -> Vec<u8> {
    const BASE: u32 = 0x10_0000;
    let mut e = Vec::new();
    put(&mut e, 0, &[0x7F, b'E', b'L', b'F', 1, 1, 1]);
    put(&mut e, 16, &2u16.to_le_bytes());
    put(&mut e, 18, &3u16.to_le_bytes()); // EM_386
    put(&mut e, 20, &1u32.to_le_bytes());
    put(&mut e, 24, &(BASE + 96).to_le_bytes()); // e_entry
    put(&mut e, 28, &52u32.to_le_bytes()); // e_phoff
    put(&mut e, 40, &52u16.to_le_bytes());
    put(&mut e, 42, &32u16.to_le_bytes());
    put(&mut e, 44, &1u16.to_le_bytes());
    put(&mut e, 84, &multiboot_header(0x3));
    put(&mut e, 96, &[0xF4, 0xEB, 0xFD]);
    let size = e.len() as u32;
    put(&mut e, 52, &1u32.to_le_bytes()); // PT_LOAD
    put(&mut e, 52 + 4, &0u32.to_le_bytes());
    put(&mut e, 52 + 8, &BASE.to_le_bytes());
    put(&mut e, 52 + 12, &BASE.to_le_bytes());
    put(&mut e, 52 + 16, &size.to_le_bytes());
    put(&mut e, 52 + 20, &(size + 0x2000).to_le_bytes());
    put(&mut e, 52 + 24, &5u32.to_le_bytes());
    put(&mut e, 52 + 28, &0x1000u32.to_le_bytes());
    e
}

/// A flat multiboot kernel loaded by the header's address fields (flag 16).
fn multiboot_aout() -> Vec<u8> {
    const BASE: u32 = 0x10_0000;
    let mut k = multiboot_header(0x1_0003).to_vec();
    for field in [BASE, BASE, 0, BASE + 0x4000, BASE + 32] {
        k.extend_from_slice(&field.to_le_bytes());
    }
    k.extend_from_slice(&[0xF4, 0xEB, 0xFD]);
    k
}

/// Registers for the page-walk target, then 16 KiB of RAM (repeated to 32 KiB).
fn paging_input(cr0: u32, cr3: u64, cr4: u32, efer: u32, linear: u64, tables: &[(usize, u64)]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&cr0.to_le_bytes());
    v.extend_from_slice(&cr3.to_le_bytes());
    v.extend_from_slice(&cr4.to_le_bytes());
    v.extend_from_slice(&efer.to_le_bytes());
    v.extend_from_slice(&[0u8; 32]); // PDPTEs
    v.extend_from_slice(&linear.to_le_bytes());
    v.extend_from_slice(&300u16.to_le_bytes());
    v.extend_from_slice(&[0, 0]); // length multiplier, access (read)
    let mut ram = vec![0u8; 16 * 1024];
    for &(at, entry) in tables {
        ram[at..at + 8].copy_from_slice(&entry.to_le_bytes());
    }
    v.extend_from_slice(&ram);
    v
}

/// 4-level paging: PML4 at 0x1000, PDPT at 0x2000, a 2 MiB page at 0 from the PD at 0x3000.
fn long_mode_tables() -> Vec<u8> {
    paging_input(0x8001_0001, 0x1000, 0x20, 0xD00, 0x1F80, &[(0x1000, 0x2003), (0x2000, 0x3003), (0x3000, 0x83)])
}

/// 32-bit paging: the page directory at 0x1000, a page table at 0x2000 mapping page 1 to
/// frame 3.
fn bits32_tables() -> Vec<u8> {
    paging_input(0x8000_0001, 0x1000, 0, 0, 0x1F80, &[(0x1000, 0x2003), (0x2008, 0x3003)])
}
