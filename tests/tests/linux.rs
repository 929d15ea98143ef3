//! An unmodified Linux kernel as a DomU (issue 7): Debian's cloud kernel with an
//! initramfs around Debian's static busybox, both fetched and built by xtask.

use integration::Boot;
use std::time::Duration;

/// Linux reaches /init after about 2.6 G Bochs instructions: half a minute of wall time
/// on an idle machine, minutes on a busy one.
const BOOT: Duration = Duration::from_secs(600);

const CONFIG: &str = "[domain linux]\nimage = vmlinuz\ninitrd = initramfs\nmemory = 256\n\
                      cmdline = \"console=ttyS0 noapic nolapic_timer\"\n";

#[test]
fn debian_s_kernel_boots_to_the_busybox_shell() {
    let (kernel, initramfs) = xtask::foreign::linux().unwrap_or_else(|e| panic!("fetching Linux: {e}"));
    let mut boot = Boot::bochs("linux-boot", 1)
        .with_guest("vmlinuz", "bzimage", kernel)
        .with_guest("initramfs", "data", initramfs)
        .with_config(CONFIG);
    boot.memory_mib = 512;
    let mut s = boot.interactive();
    s.expect("domain linux (id 1) created: 256 MiB", BOOT);
    s.expect("[linux] [    0.000000] Linux version 6.", BOOT);
    s.expect("Run /init as init process", BOOT);
    let up = s.expect_line(&["[linux] ferrovisor-initramfs: up, kernel "], BOOT);
    assert!(up.contains("-cloud-amd64"), "not Debian's cloud kernel: {up:?}");
    s.expect("built-in shell (ash)", BOOT);
}
