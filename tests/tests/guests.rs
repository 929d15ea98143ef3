//! Guests under VT-x in Bochs: each boots, prints through the debug port, and exits
//! with its status; the hypervisor reports the domain's end and its exit counters.

use integration::Boot;

#[test]
fn a_64_bit_guest_boots_prints_sees_the_hypervisor_leaf_and_exits_with_status_0() {
    let log = Boot::bochs("guest-hello64", 1)
        .with_config("until_guests_exit = true\n[domain hello]\nimage = hello64\nmemory = 16\n")
        .run();
    log.expect_in_order(&[
        "domain hello (id 1) created: 16 MiB, 1 vCPU(s), image hello64",
        "domain hello: vcpu0 runs on cpu0",
        "[hello] hello from a 64-bit guest (boot info at 0x8000)",
        "[hello] cpuid: vmx=false hypervisor=true signature=\"Ferrovisor\" max_leaf=0x40000001",
        "[hello] hello64: 0 check(s) failed",
        "domain hello exited status=0",
        "domain hello (id 1): shut down status=0",
        "domain hello exits:",
        "machine halted: done",
    ]);
    log.expect_absent("ERROR");
}
