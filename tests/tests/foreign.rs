//! Kernels nobody here wrote, from Debian's archive (fetched by xtask, never committed).

use integration::Boot;

/// Intel's tboot is a multiboot 1 ELF32 kernel that loads at 8 MiB with a 34 MiB image.
/// It finds our multiboot hand-off, parses its command line, logs through COM1 (our
/// 16550 model) and, since the DomU has no TXT chipset, its read of the TXT registers at
/// 0xFED30000 is an access to unmapped guest-physical memory: the domain is crashed with
/// a report, exactly as the platform promises.
#[test]
fn tboot_a_foreign_multiboot_kernel_boots_and_logs_through_the_emulated_uart() {
    let tboot = xtask::foreign::tboot().unwrap_or_else(|e| panic!("fetching tboot: {e}"));
    let log = Boot::bochs("foreign-tboot", 1)
        .with_guest("tboot", "multiboot", tboot)
        .with_config(
            "until_guests_exit = true\n[domain tboot]\nimage = tboot\nmemory = 64\ncmdline = \"logging=serial\"\n",
        )
        .run();
    // Its view of our hand-off: the command line, and the multiboot memory map turned
    // into an e820 map (type 1 RAM below 0x9FC00 and from 1 MiB to 64 MiB).
    log.expect_in_order(&[
        "domain tboot (id 1) created: 64 MiB",
        "[tboot] TBOOT: *********************** TBOOT ***********************",
        "[tboot] TBOOT: command line: logging=serial",
        "[tboot] TBOOT: BSP is cpu 0",
        "[tboot] TBOOT: original e820 map:",
        "[tboot] TBOOT: \t0000000000000000 - 000000000009fc00  (1)",
        "[tboot] TBOOT: \t0000000000100000 - 0000000004000000  (1)",
        "[tboot] TBOOT: no module info",
        // The TXT heap/SINIT registers: not part of a DomU's platform.
        "domain tboot crashed: read access to unmapped guest-physical address 0xfed30",
        "domain tboot (id 1): crashed",
        "machine halted: done",
    ]);
}
