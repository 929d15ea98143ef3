//! The machinery behind `cargo xtask`: building the kernel and the disk images,
//! installing and driving the emulators. The integration tests use it too, so a test
//! boots exactly what `cargo xtask run` boots.

pub mod bench;
pub mod build;
pub mod deps;
pub mod emulator;
pub mod foreign;
pub mod initramfs;

use std::path::PathBuf;

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Prints a progress line for a step that takes a while.
pub fn step(message: &str) {
    eprintln!("\x1b[1;32m==>\x1b[0m {message}");
}
