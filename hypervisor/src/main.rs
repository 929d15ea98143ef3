//! The kernel image's entry point. Bring-up order lives in `hypervisor::boot`; this file
//! only tells the bootloader how to map us and where to jump.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
bootloader_api::entry_point!(kernel_entry, config = &hypervisor::boot::BOOTLOADER_CONFIG);

#[cfg(target_os = "none")]
fn kernel_entry(boot_info: &'static mut bootloader_api::BootInfo) -> ! {
    hypervisor::boot::kernel_main(boot_info)
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the hypervisor runs on bare metal: build and boot it with `cargo xtask run`");
    std::process::exit(2);
}
