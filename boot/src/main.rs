//! `boot`: turns a kernel ELF and the files that travel with it into bootable images.
//!
//! ```text
//! boot --kernel hypervisor.elf --out DIR [--config hypervisor.cfg]
//!      [--entry NAME=KIND:PATH]... [--bios] [--uefi]
//! ```
//!
//! Writes `DIR/bundle.bin` (the boot bundle: configuration and guest images) and
//! `DIR/bios.img` and/or `DIR/uefi.img`, disk images on which the `bootloader` crate's
//! stages load the kernel and the bundle (as its ramdisk). `cargo xtask build` is the
//! usual way to call this.

use abi::bundle::{BundleBuilder, EntryKind};
use bootloader::{BootConfig, DiskImageBuilder};
use std::path::PathBuf;
use std::process::ExitCode;

struct Args {
    kernel: PathBuf,
    out: PathBuf,
    config: Option<PathBuf>,
    entries: Vec<(String, EntryKind, PathBuf)>,
    bios: bool,
    uefi: bool,
}

const USAGE: &str = "usage: boot --kernel FILE --out DIR [--config FILE] [--entry NAME=KIND:PATH]... [--bios] [--uefi]
  KIND is one of: config, elf64, multiboot, flat, data, bzimage";

fn parse_kind(kind: &str) -> Option<EntryKind> {
    Some(match kind {
        "config" => EntryKind::Config,
        "elf64" => EntryKind::Elf64,
        "multiboot" => EntryKind::MultibootElf32,
        "flat" => EntryKind::Flat,
        "data" => EntryKind::Data,
        "bzimage" => EntryKind::BzImage,
        _ => return None,
    })
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut kernel, mut out, mut config) = (None, None, None);
    let (mut entries, mut bios, mut uefi) = (Vec::new(), false, false);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--kernel" => kernel = Some(PathBuf::from(value("--kernel")?)),
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "--config" => config = Some(PathBuf::from(value("--config")?)),
            "--entry" => {
                let spec = value("--entry")?;
                let (name, rest) =
                    spec.split_once('=').ok_or_else(|| format!("--entry {spec}: expected NAME=KIND:PATH"))?;
                let (kind, path) =
                    rest.split_once(':').ok_or_else(|| format!("--entry {spec}: expected NAME=KIND:PATH"))?;
                let kind = parse_kind(kind).ok_or_else(|| format!("--entry {spec}: unknown kind {kind:?}\n{USAGE}"))?;
                entries.push((name.to_string(), kind, PathBuf::from(path)));
            }
            "--bios" => bios = true,
            "--uefi" => uefi = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if !bios && !uefi {
        bios = true;
        uefi = true;
    }
    Ok(Args {
        kernel: kernel.ok_or_else(|| format!("--kernel is required\n{USAGE}"))?,
        out: out.ok_or_else(|| format!("--out is required\n{USAGE}"))?,
        config,
        entries,
        bios,
        uefi,
    })
}

fn run(args: Args) -> Result<(), String> {
    std::fs::create_dir_all(&args.out).map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));

    let mut bundle = BundleBuilder::new();
    if let Some(cfg) = &args.config {
        let text = read(cfg)?;
        // Reject a bad configuration here, where the user can fix it, not at boot.
        let s = std::str::from_utf8(&text).map_err(|_| format!("{}: not UTF-8 text", cfg.display()))?;
        abi::config::parse(s).map_err(|e| format!("{}: {e}", cfg.display()))?;
        bundle.add("hypervisor.cfg", EntryKind::Config, text).map_err(|e| format!("bundle: {e}"))?;
    }
    for (name, kind, path) in &args.entries {
        bundle.add(name, *kind, read(path)?).map_err(|e| format!("bundle entry {name}: {e}"))?;
    }
    let bundle_bytes = bundle.build();
    let bundle_path = args.out.join("bundle.bin");
    std::fs::write(&bundle_path, &bundle_bytes).map_err(|e| format!("cannot write {}: {e}", bundle_path.display()))?;

    let mut builder = DiskImageBuilder::new(args.kernel.clone());
    builder.set_ramdisk(bundle_path.clone());
    // The bootloader logs to the serial port too; keep it to warnings so the console
    // starts with the hypervisor's own banner, and skip the slow framebuffer logger.
    let mut boot_config = BootConfig::default();
    boot_config.frame_buffer_logging = false;
    boot_config.serial_logging = true;
    boot_config.log_level = bootloader_boot_config::LevelFilter::Warn;
    builder.set_boot_config(&boot_config);
    if args.bios {
        let path = args.out.join("bios.img");
        builder.create_bios_image(&path).map_err(|e| format!("creating the BIOS image: {e:#}"))?;
        println!("boot: wrote {} ({} KiB)", path.display(), size_kib(&path));
    }
    if args.uefi {
        let path = args.out.join("uefi.img");
        builder.create_uefi_image(&path).map_err(|e| format!("creating the UEFI image: {e:#}"))?;
        println!("boot: wrote {} ({} KiB)", path.display(), size_kib(&path));
    }
    println!(
        "boot: wrote {} ({} bytes, {} entries)",
        bundle_path.display(),
        bundle_bytes.len(),
        args.entries.len() + usize::from(args.config.is_some())
    );
    Ok(())
}

fn size_kib(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len() / 1024).unwrap_or(0)
}

fn main() -> ExitCode {
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("boot: {e}");
            ExitCode::FAILURE
        }
    }
}
