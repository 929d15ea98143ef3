//! Writes the seeds of `src/seeds.rs` to `seeds/TARGET/NAME` (next to Cargo.toml), the
//! corpus `cargo xtask fuzz` starts from: `cargo run --manifest-path fuzz/Cargo.toml
//! --example seeds`.

use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (target, name, bytes) in ferrovisor_fuzz::seeds::all() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    println!("seeds written to {}", root.display());
}
