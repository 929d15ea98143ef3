//! Replays every saved fuzz input through its target, with plain `cargo test`:
//! - `regressions/TARGET/*`: inputs that once crashed a target (kept after the fix);
//! - `seeds/TARGET/*`: the starting corpus (see `src/seeds.rs`);
//! - the seeds as `src/seeds.rs` makes them, in case the files are stale.
//!
//! A folder that names no target fails the test, so a renamed target cannot silently
//! stop replaying its regressions.

use ferrovisor_fuzz::{TARGETS, seeds, target};
use std::path::Path;

fn replay_dir(dir: &Path) -> usize {
    let Ok(targets) = std::fs::read_dir(dir) else { return 0 };
    let mut count = 0;
    for t in targets {
        let t = t.unwrap();
        if !t.file_type().unwrap().is_dir() {
            continue;
        }
        let name = t.file_name().into_string().unwrap();
        let Some(target) = target(&name) else {
            panic!("{}: no fuzz target is called {name:?} (known: {})", dir.display(), names());
        };
        let mut files: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|f| f.unwrap().path()).collect();
        files.sort();
        for file in files.iter().filter(|f| f.is_file()) {
            let data = std::fs::read(file).unwrap();
            eprintln!("replaying {}", file.display());
            (target.run)(&data);
            count += 1;
        }
    }
    count
}

fn names() -> String {
    TARGETS.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
}

#[test]
fn regression_inputs_pass() {
    let n = replay_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions"));
    eprintln!("{n} regression inputs replayed");
}

#[test]
fn seed_files_pass() {
    let n = replay_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds"));
    eprintln!("{n} seed files replayed");
}

#[test]
fn generated_seeds_pass_and_every_target_has_one() {
    let all = seeds::all();
    for (name, seed, data) in &all {
        let t = target(name).unwrap_or_else(|| panic!("seed {seed} for unknown target {name}"));
        (t.run)(data);
    }
    for t in TARGETS {
        assert!(all.iter().any(|(name, _, _)| *name == t.name), "no seed for {}", t.name);
    }
}

#[test]
fn empty_and_tiny_inputs_pass() {
    for t in TARGETS {
        for data in [&[][..], &[0], &[0xFF; 7], &[0x80; 64]] {
            (t.run)(data);
        }
    }
}

/// The valid seeds are valid: otherwise the fuzzer starts at the first error path.
#[test]
fn valid_seeds_are_accepted() {
    use hypervisor::loader::{elf64, flat, multiboot};
    let all = seeds::all();
    let seed = |target: &str, name: &str| {
        all.iter().find(|(t, n, _)| *t == target && *n == name).map(|(_, _, d)| d.clone()).unwrap()
    };
    abi::bundle::Bundle::parse(&seed("bundle", "valid")[1..]).unwrap();
    for name in ["default", "flat-domain"] {
        abi::config::parse(std::str::from_utf8(&seed("config", name)).unwrap()).unwrap();
    }
    elf64::load(&seed("elf64", "minimal")[1..], 16 << 20).unwrap();
    for name in ["elf32", "aout-kludge"] {
        multiboot::load(&seed("multiboot", name)[8..], 16 << 20).unwrap();
    }
    let sector = seed("flat", "boot-sector");
    let mode = hypervisor::loader::plan::EntryMode::Real16;
    flat::load(&sector[10..], hypervisor::mm::addr::GuestPhysAddr(0x7C00), 0x7C00, mode, 1 << 20).unwrap();
    for name in ["mov-load", "rex-store", "store-imm-sib", "movzx-16", "moffs"] {
        let s = seed("decode", name);
        let mode = [
            hypervisor::decode::CpuMode::Real16,
            hypervisor::decode::CpuMode::Protected16,
            hypervisor::decode::CpuMode::Protected32,
            hypervisor::decode::CpuMode::Long64,
        ][usize::from(s[0])];
        hypervisor::decode::decode(&s[1..], mode).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
