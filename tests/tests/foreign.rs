//! Kernels nobody here wrote, from Debian's archive (fetched by xtask, never committed).

use integration::Boot;

/// Intel's tboot is a multiboot 1 ELF32 kernel that loads at 8 MiB with a 34 MiB image.
/// It finds our multiboot hand-off, parses its command line (its own name first, as
/// GRUB passes it), logs through COM1 (our 16550 model) and, since the DomU has no TXT
/// chipset and no TPM, reads all ones where their registers would be (0xFED30000,
/// 0xFED40000), as on a PC without them: it finds no SINIT module and no TPM, and halts
/// the way it does on such a machine, which ends the domain.
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
        "[tboot] TBOOT: command line: tboot logging=serial",
        "[tboot] TBOOT: BSP is cpu 0",
        "[tboot] TBOOT: original e820 map:",
        "[tboot] TBOOT: \t0000000000000000 - 000000000009fc00  (1)",
        "[tboot] TBOOT: \t0000000000100000 - 0000000004000000  (1)",
        "[tboot] TBOOT: no module info",
        // The TXT registers and the TPM: not part of a DomU's platform, so they read as
        // absent, and tboot gives up as on a machine without them.
        "domain tboot vcpu0: read of unclaimed guest-physical address 0xfed30",
        "[tboot] TBOOT: TXT.SINIT.BASE: 0xffffffff",
        "[tboot] TBOOT: SINIT ACM not provided.",
        "[tboot] TBOOT: shutdown_system() called for shutdown_type: TB_SHUTDOWN_HALT",
        "domain tboot halted with interrupts disabled; shutting it down",
        "domain tboot (id 1): shut down",
        "domain tboot unclaimed guest-physical addresses:",
        "machine halted: done",
    ]);
    log.expect_absent("crashed");
}
