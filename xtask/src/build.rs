//! Building the hypervisor (no_std, build-std) and the disk images around it.

use crate::{step, workspace_root};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The kernel's target. Its prebuilt `core` is not shipped for our pinned nightly, so
/// `core`, `alloc` and `compiler_builtins` are built from `rust-src` (build-std).
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    pub fn dir(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let status = cmd.current_dir(workspace_root()).status().map_err(|e| format!("{what}: cannot start cargo: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{what} failed ({status}); see the compiler output above")) }
}

/// How the kernel is compiled and linked (see `kernel`).
pub const KERNEL_RUSTFLAGS: &str =
    "-C relocation-model=static -C code-model=kernel -C link-arg=--image-base=0xffffffff80000000";

/// Builds the hypervisor ELF and returns its path.
pub fn kernel(profile: Profile) -> Result<PathBuf, String> {
    step(&format!("building the hypervisor ({KERNEL_TARGET}, {}, build-std)", profile.dir()));
    let mut cmd = cargo();
    cmd.args(["build", "--package", "hypervisor", "--bin", "hypervisor", "--target", KERNEL_TARGET])
        .args(["-Zbuild-std=core,alloc,compiler_builtins", "-Zbuild-std-features=compiler-builtins-mem"]);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    // Linked at -2 GiB, where the bootloader maps an executable (ET_EXEC) as linked,
    // instead of position-independent: no relocation table or GOT in the image (40 KB
    // of the loaded size), and direct calls. The kernel code model is the one for code
    // in the top 2 GiB.
    cmd.env("RUSTFLAGS", KERNEL_RUSTFLAGS);
    run(&mut cmd, "building the hypervisor")?;
    Ok(workspace_root().join("target").join(KERNEL_TARGET).join(profile.dir()).join("hypervisor"))
}

/// A guest from `guests/` and how it goes into the bundle.
pub struct GuestSpec {
    pub name: &'static str,
    /// The `boot --entry` kind: elf64, multiboot or flat.
    pub kind: &'static str,
    /// Flattened with `objcopy -O binary` (assembly guests whose ELF wrapper is only a
    /// build artefact: the multiboot a.out-kludge kernel and the real-mode program).
    pub flat: bool,
}

/// The guests in `guests/` (their own workspace), built as static x86_64 executables.
pub const GUESTS: &[GuestSpec] = &[
    GuestSpec { name: "hello64", kind: "elf64", flat: false },
    GuestSpec { name: "dom0", kind: "elf64", flat: false },
    GuestSpec { name: "multiboot32", kind: "multiboot", flat: true },
    GuestSpec { name: "real16", kind: "flat", flat: true },
    GuestSpec { name: "bench64", kind: "elf64", flat: false },
    GuestSpec { name: "hostile64", kind: "elf64", flat: false },
];

/// A built guest: bundle entry name, kind and file.
#[derive(Debug, Clone)]
pub struct BuiltGuest {
    pub name: String,
    pub kind: String,
    pub path: PathBuf,
}

/// Builds our guests.
pub fn guests(profile: Profile) -> Result<Vec<BuiltGuest>, String> {
    let names: Vec<&str> = GUESTS.iter().map(|g| g.name).collect();
    step(&format!("building the guests ({})", names.join(", ")));
    let root = workspace_root();
    let target_dir = root.join("target").join("guests");
    let mut cmd = cargo();
    cmd.arg("build").arg("--manifest-path").arg(root.join("guests").join("Cargo.toml"));
    cmd.args(["--target", KERNEL_TARGET, "--target-dir"]).arg(&target_dir);
    cmd.args(["-Zbuild-std=core,compiler_builtins", "-Zbuild-std-features=compiler-builtins-mem"]);
    for g in GUESTS {
        cmd.args(["--bin", g.name]);
    }
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    // Guests are loaded at fixed addresses (ET_EXEC), not relocated like the kernel.
    cmd.env("RUSTFLAGS", "-C relocation-model=static");
    run(&mut cmd, "building the guests")?;
    let dir = target_dir.join(KERNEL_TARGET).join(profile.dir());
    guests_in(&dir, true)
}

/// The guests as built in `dir`; with `flatten`, (re)makes the flat binaries.
pub fn guests_in(dir: &Path, flatten: bool) -> Result<Vec<BuiltGuest>, String> {
    let mut out = Vec::new();
    for g in GUESTS {
        let elf = dir.join(g.name);
        let path = if g.flat {
            let bin = dir.join(format!("{}.bin", g.name));
            if flatten {
                let status = Command::new(objcopy()?)
                    .args(["-O", "binary"])
                    .arg(&elf)
                    .arg(&bin)
                    .status()
                    .map_err(|e| format!("cannot run llvm-objcopy: {e}"))?;
                if !status.success() {
                    return Err(format!("llvm-objcopy -O binary {} failed", elf.display()));
                }
            }
            bin
        } else {
            elf
        };
        out.push(BuiltGuest { name: g.name.to_string(), kind: g.kind.to_string(), path });
    }
    Ok(out)
}

/// Which disk images to make.
#[derive(Debug, Clone, Copy)]
pub struct Firmware {
    pub bios: bool,
    pub uefi: bool,
}

/// The images made for one configuration.
#[derive(Debug, Clone)]
pub struct Images {
    pub dir: PathBuf,
    pub bios: PathBuf,
    pub uefi: PathBuf,
    pub bundle: PathBuf,
}

/// Builds the `boot` tool once (its first build compiles the bootloader's stages and
/// takes about a minute) and returns its path.
pub fn boot_tool() -> Result<PathBuf, String> {
    let exe = workspace_root().join("target").join("release").join("boot");
    step("building the image builder (the first build compiles the bootloader: about a minute)");
    run(cargo().args(["build", "--release", "--package", "boot"]), "building the image builder")?;
    Ok(exe)
}

/// `llvm-objcopy` from the toolchain's `llvm-tools` component.
fn objcopy() -> Result<PathBuf, String> {
    let out = Command::new("rustc")
        .current_dir(workspace_root())
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let tool = Path::new(&sysroot).join("lib/rustlib/x86_64-unknown-linux-gnu/bin/llvm-objcopy");
    if tool.exists() {
        Ok(tool)
    } else {
        Err(format!("{} is missing; install it with `rustup component add llvm-tools`", tool.display()))
    }
}

/// Writes `config` as the bundle's `hypervisor.cfg` and makes the images in `dir`.
///
/// The image gets a copy of the kernel without debug information (the bootloader
/// reads the whole file, and in Bochs every byte costs); the unstripped ELF stays
/// next to it for `addr2line` on the RIPs of an exception report.
pub fn images(
    boot: &Path,
    kernel: &Path,
    config: &str,
    guests: &[BuiltGuest],
    dir: &Path,
    firmware: Firmware,
) -> Result<Images, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let stripped = dir.join("hypervisor.stripped");
    let status = Command::new(objcopy()?)
        .arg("--strip-debug")
        .arg(kernel)
        .arg(&stripped)
        .status()
        .map_err(|e| format!("cannot run llvm-objcopy: {e}"))?;
    if !status.success() {
        return Err(format!("llvm-objcopy --strip-debug {} failed", kernel.display()));
    }
    let kernel = stripped.as_path();
    let cfg = dir.join("hypervisor.cfg");
    std::fs::write(&cfg, config).map_err(|e| format!("cannot write {}: {e}", cfg.display()))?;
    let mut cmd = Command::new(boot);
    cmd.arg("--kernel").arg(kernel).arg("--out").arg(dir).arg("--config").arg(&cfg);
    for g in guests {
        cmd.arg("--entry").arg(format!("{}={}:{}", g.name, g.kind, g.path.display()));
    }
    if firmware.bios {
        cmd.arg("--bios");
    }
    if firmware.uefi {
        cmd.arg("--uefi");
    }
    let out = cmd.output().map_err(|e| format!("cannot run {}: {e}", boot.display()))?;
    if !out.status.success() {
        return Err(format!("making the disk images failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(Images {
        dir: dir.to_path_buf(),
        bios: dir.join("bios.img"),
        uefi: dir.join("uefi.img"),
        bundle: dir.join("bundle.bin"),
    })
}

/// The default configuration `cargo xtask build` puts in the image.
pub fn default_config_path() -> PathBuf {
    workspace_root().join("boot").join("hypervisor.cfg")
}

/// Where images for a named variant go.
pub fn image_dir(profile: Profile, variant: &str) -> PathBuf {
    workspace_root().join("target").join("images").join(profile.dir()).join(variant)
}
