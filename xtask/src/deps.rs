//! The emulators and what they need, found or installed.

use crate::step;
use std::path::Path;
use std::process::Command;

/// A program we need and the Debian package that provides it.
pub struct Need {
    pub path_or_program: &'static str,
    pub package: &'static str,
}

pub const QEMU: &[Need] = &[Need { path_or_program: "qemu-system-x86_64", package: "qemu-system-x86" }];
pub const OVMF: &[Need] = &[Need { path_or_program: "/usr/share/OVMF/OVMF_CODE.fd", package: "ovmf" }];
pub const BOCHS: &[Need] = &[
    Need { path_or_program: "bochs", package: "bochs" },
    Need { path_or_program: "/usr/share/bochs/BIOS-bochs-latest", package: "bochsbios" },
    Need { path_or_program: "/usr/share/bochs/VGABIOS-lgpl-latest", package: "vgabios" },
    Need { path_or_program: "/usr/lib/x86_64-linux-gnu/bochs/plugins/libbx_x_gui.so", package: "bochs-x" },
    Need { path_or_program: "xvfb-run", package: "xvfb" },
    Need { path_or_program: "xauth", package: "xauth" },
];

fn present(need: &Need) -> bool {
    if need.path_or_program.starts_with('/') {
        return Path::new(need.path_or_program).exists();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(need.path_or_program).is_file()))
        .unwrap_or(false)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Makes sure everything in `needs` is installed: with apt-get when we are root on
/// Debian or Ubuntu, otherwise by telling the user the exact command.
pub fn ensure(needs: &[&[Need]]) -> Result<(), String> {
    let mut missing: Vec<&str> =
        needs.iter().flat_map(|n| n.iter()).filter(|n| !present(n)).map(|n| n.package).collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    let debian = Path::new("/etc/debian_version").exists();
    if !(debian && is_root()) {
        return Err(format!(
            "missing emulator packages: {list}\n  install them with:  sudo apt-get install -y {list}\n  (on other distributions, install the equivalents of these Debian packages)"
        ));
    }
    step(&format!("installing missing packages with apt-get: {list}"));
    let update =
        Command::new("apt-get").arg("update").arg("-qq").status().map_err(|e| format!("cannot run apt-get: {e}"))?;
    if !update.success() {
        return Err("apt-get update failed; check the network or the package sources".into());
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if !status.success() {
        return Err(format!("apt-get install {list} failed; install them by hand and try again"));
    }
    let still: Vec<&str> = needs.iter().flat_map(|n| n.iter()).filter(|n| !present(n)).map(|n| n.package).collect();
    if !still.is_empty() {
        return Err(format!("installed, but still missing: {}", still.join(" ")));
    }
    Ok(())
}

/// Whether this host can run the hypervisor under KVM: /dev/kvm usable and the CPU
/// exposing VMX (nested VT-x), since our guest needs VT-x itself.
pub fn host_has_nested_vmx() -> bool {
    let kvm = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    let vmx = std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "vmx")))
        .unwrap_or(false);
    kvm && vmx
}
