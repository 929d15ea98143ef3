//! Kernels nobody here wrote, fetched from Debian's archive (never committed): the
//! proof that our loaders and platform follow the standards rather than our own guests.
//!
//! - `tboot` (package `tboot`): Intel's Trusted Boot, a multiboot 1 ELF32 kernel that
//!   loads at 8 MiB, logs to COM1 and, on a machine without TXT, reads the TXT
//!   configuration registers at 0xFED30000, which our DomUs do not have.
//! - `linux-image-cloud-amd64`: Debian's kernel for virtual machines (a bzImage), with an
//!   initramfs built here from `busybox-static` (`crate::initramfs`).

use crate::{step, workspace_root};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The unpacked multiboot kernel from Debian's `tboot` package, fetched once into
/// `target/foreign/tboot/`.
pub fn tboot() -> Result<PathBuf, String> {
    let dir = workspace_root().join("target").join("foreign").join("tboot");
    let elf = dir.join("tboot.elf");
    if elf.exists() {
        return Ok(elf);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    step("fetching Debian's tboot package (a multiboot kernel nobody here wrote)");
    let deb = download(&dir, "tboot")?;
    let root = dir.join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root), "unpacking the tboot package")?;
    let gz = root.join("boot").join("tboot.gz");
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(&gz)
        .output()
        .map_err(|e| format!("running gzip on {}: {e} (install gzip)", gz.display()))?;
    if !out.status.success() || out.stdout.is_empty() {
        return Err(format!("gzip could not unpack {}: {}", gz.display(), String::from_utf8_lossy(&out.stderr)));
    }
    let partial = dir.join("tboot.elf.partial");
    std::fs::write(&partial, &out.stdout).map_err(|e| format!("writing {}: {e}", partial.display()))?;
    std::fs::rename(&partial, &elf).map_err(|e| format!("renaming {}: {e}", partial.display()))?;
    Ok(elf)
}

/// The Linux DomU's command line (`cargo xtask run --linux` and the integration test).
/// Linux finds the rest itself (ACPI: the MADT's two CPUs, the I/O APIC, the PM timer;
/// the TSC's rate from CPUID). `cryptomgr.notests` skips the crypto self-tests: RSA
/// signing with 2048- and 4096-bit test keys costs about 8 s of guest time in Bochs,
/// where the guest runs about a hundred million instructions a second; a third of the
/// boot, for tests of the kernel rather than of the platform.
pub const LINUX_CMDLINE: &str = "console=ttyS0 cryptomgr.notests";

/// Guest memory for the Linux DomU: the kernel wants 51 MiB (`init_size`) from 16 MiB
/// up, plus its page cache and the unpacked initramfs.
pub const LINUX_MEMORY_MIB: u32 = 256;

/// Debian's cloud kernel and an initramfs around Debian's static busybox, fetched and
/// built once into `target/foreign/linux/`: (bzImage, initramfs).
pub fn linux() -> Result<(PathBuf, PathBuf), String> {
    let dir = workspace_root().join("target").join("foreign").join("linux");
    let kernel = dir.join("vmlinuz");
    let initramfs = dir.join("initramfs.cpio");
    let busybox_path = dir.join("root").join("bin").join("busybox");
    if kernel.exists() && busybox_path.exists() {
        // The packages are cached; the archive is rebuilt when its recipe changed.
        let busybox = std::fs::read(&busybox_path).map_err(|e| format!("{}: {e}", busybox_path.display()))?;
        let modules = modules(&dir.join("root"))?;
        write_if_changed(&initramfs, &crate::initramfs::cpio(&crate::initramfs::members(busybox, modules)))?;
        return Ok((kernel, initramfs));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    step("fetching Debian's cloud kernel and static busybox (a Linux DomU nobody here built)");
    // The metapackage names the current kernel package.
    let out = Command::new("apt-cache")
        .args(["depends", "linux-image-cloud-amd64"])
        .output()
        .map_err(|e| format!("running apt-cache: {e}; this needs a Debian or Ubuntu host with apt"))?;
    let depends = String::from_utf8_lossy(&out.stdout);
    let package = depends
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: ").filter(|p| p.starts_with("linux-image-")))
        .ok_or_else(|| format!("apt-cache depends linux-image-cloud-amd64 named no kernel package:\n{depends}"))?
        .to_string();
    let root = dir.join("root");
    let deb = download(&dir, &package)?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root), "unpacking the kernel package")?;
    let vmlinuz = std::fs::read_dir(root.join("boot"))
        .map_err(|e| format!("reading the kernel package's boot/: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz-")))
        .ok_or_else(|| format!("{package} has no boot/vmlinuz-*"))?;
    let bb_deb = download(&dir, "busybox-static")?;
    run(Command::new("dpkg-deb").arg("-x").arg(&bb_deb).arg(&root), "unpacking busybox-static")?;
    let busybox = std::fs::read(&busybox_path).map_err(|e| format!("busybox-static: {e}"))?;
    let modules = modules(&root)?;
    write_if_changed(&initramfs, &crate::initramfs::cpio(&crate::initramfs::members(busybox, modules)))?;
    std::fs::copy(&vmlinuz, &kernel).map_err(|e| format!("copying {}: {e}", vmlinuz.display()))?;
    Ok((kernel, initramfs))
}

/// The kernel modules the initramfs carries (`crate::initramfs::MODULES`), read from the
/// unpacked kernel package under `root`: (file name, contents).
fn modules(root: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    // Debian 12 ships them in /lib/modules; later releases in /usr/lib/modules.
    let lib = [root.join("lib").join("modules"), root.join("usr").join("lib").join("modules")]
        .into_iter()
        .find(|p| p.is_dir())
        .unwrap_or_else(|| root.join("lib").join("modules"));
    let release = std::fs::read_dir(&lib)
        .map_err(|e| format!("reading {}: {e}", lib.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.join("kernel").is_dir())
        .ok_or_else(|| format!("the kernel package has no modules under {}", lib.display()))?;
    crate::initramfs::MODULES
        .iter()
        .map(|(path, what)| {
            let file = release.join("kernel").join(path);
            let data = std::fs::read(&file).map_err(|e| format!("{} ({what}): {e}", file.display()))?;
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            Ok((name, data))
        })
        .collect()
}

/// Writes `data` to `path` unless it already holds exactly that (tests running side by
/// side may read it meanwhile).
fn write_if_changed(path: &Path, data: &[u8]) -> Result<(), String> {
    if std::fs::read(path).is_ok_and(|old| old == data) {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("renaming {} to {}: {e}", tmp.display(), path.display()))
}

/// `apt-get download PACKAGE` into `dir`; returns the .deb.
fn download(dir: &Path, package: &str) -> Result<PathBuf, String> {
    let status = Command::new("apt-get").arg("download").arg(package).current_dir(dir).status().map_err(|e| {
        format!("running apt-get to fetch Debian's {package} package: {e}; this needs a Debian or Ubuntu host with apt")
    })?;
    if !status.success() {
        return Err(format!(
            "apt-get download {package} failed ({status}); check that the host reaches a Debian mirror \
             (try `apt-get update`)"
        ));
    }
    std::fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.extension().is_some_and(|x| x == "deb")
                && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("{package}_")))
        })
        .ok_or_else(|| format!("apt-get download {package} left no .deb in {}", dir.display()))
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let status = cmd.status().map_err(|e| format!("{what}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{what} failed ({status})")) }
}
