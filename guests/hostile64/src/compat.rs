//! The edges of the PC that kernels nobody here wrote probe (issue 15): each mode checks
//! that the hypervisor answers as hardware does, says `compat: BAD ...` for each check
//! that failed (`verbose=1`: `compat: ... ok` for the others too), then `compat: MODE: N
//! checks, K problem(s)`, and exits 0 when every check held, 1 otherwise. The tests in
//! tests/tests/compat.rs run them beside a canary and Domain0.
//!
//! - `mode=unclaimed`: reads of guest-physical addresses with no RAM and no device (where
//!   an HPET would be, 0xFF000000, the hole above RAM) return all ones at every access
//!   size, writes there are dropped, and the domain goes on; 5000 more reads must not
//!   flood the log.
//! - `mode=unclaimed-fetch`: jumps to 0xFED00000, which must crash the domain (there is
//!   no instruction to complete).
//! - `mode=apic-off`: IA32_APIC_BASE.EN = 0 clears CPUID.1:EDX.APIC and takes the xAPIC
//!   page away (reads all ones); enabling it brings both back, in xAPIC and x2APIC
//!   modes; the transitions the SDM forbids raise #GP.
//! - `mode=nmi`: NMIs through the local APIC (self-NMI by shorthand and by ID, with
//!   interrupts disabled too), an NMI sent from inside the NMI handler held until IRET,
//!   LINT0 programmed as NMI with the 8259 behind it, an I/O APIC entry in NMI mode, and
//!   LINT1 programmed as NMI, which it then waits (up to 20 s) for Domain0 to raise
//!   (`trigger DOMAIN nmi`).
//! - `mode=cpu-msrs`: IA32_TSC and IA32_TSC_ADJUST, IA32_MISC_ENABLE's bits,
//!   IA32_FEATURE_CONTROL, IA32_PLATFORM_ID, IA32_DEBUGCTL, the machine-check MSRs.
//! - `mode=s3`: SLP_EN with the S3 sleep type, which the DSDT does not offer: the domain
//!   must wake at once (WAK_STS set) rather than hang, and go on; then 4096 more, which
//!   must not flood the log.

use crate::{APIC, Console, IA32_APIC_BASE, Trap, exit, mmio, outb, rdmsr_raw, setup_tables, wrmsr_raw};
use core::arch::asm;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The modes this module runs.
pub const MODES: [&str; 6] = ["unclaimed", "unclaimed-fetch", "apic-off", "nmi", "cpu-msrs", "s3"];

pub fn run(mode: &str, cmdline: &str) -> ! {
    setup_tables();
    let mut c = Checks { done: 0, failed: 0, verbose: crate::num_arg(cmdline, "verbose", 0) != 0 };
    match mode {
        "unclaimed" => unclaimed(&mut c),
        "unclaimed-fetch" => {
            say!("compat: jumping to 0xfed00000");
            // SAFETY: deliberately fatal: the hypervisor must end the domain here.
            unsafe { asm!("jmp {}", in(reg) 0xFED0_0000u64, options(noreturn)) }
        }
        "apic-off" => apic_off(&mut c),
        "nmi" => nmi(&mut c),
        "cpu-msrs" => cpu_msrs(&mut c),
        "s3" => s3(&mut c),
        _ => {
            say!("compat: unknown mode {mode}");
            exit(2)
        }
    }
    say!("compat: {mode}: {} checks, {} problem(s)", c.done, c.failed);
    exit(if c.failed == 0 { 0 } else { 1 })
}

/// Counts checks and failed checks; prints the failed ones (and, with `verbose=1`, the
/// others: the console's rate limit would drop lines of six guests printing at once).
struct Checks {
    done: u32,
    failed: u32,
    verbose: bool,
}

impl Checks {
    fn check(&mut self, ok: bool, what: core::fmt::Arguments) {
        self.done += 1;
        if !ok {
            say!("compat: BAD {what}");
            self.failed += 1;
        } else if self.verbose {
            say!("compat: {what} ok");
        }
    }
}

macro_rules! check {
    ($c:expr, $ok:expr, $($t:tt)*) => { $c.check($ok, format_args!($($t)*)) };
}

fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    crate::attacks::cpuid(leaf, sub)
}

fn rdtsc() -> u64 {
    crate::attacks::rdtsc()
}

/// A read through the MMIO forms of `crate::op_mmio` (0 dword, 2 byte, 3 word, 4 qword,
/// 9 sign-extended word).
fn read(form: u64, addr: u64) -> Result<u64, Trap> {
    mmio(form, addr, 0)?;
    // SAFETY: single vCPU; set by op_mmio.
    Ok(unsafe { crate::ARG[3] })
}

fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: port input in a guest exits to the hypervisor.
    unsafe { asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack)) };
    v
}

// ---------------------------------------------------------------------------------------

fn unclaimed(c: &mut Checks) {
    let places = [(0xFED0_0000u64, "the HPET's ID register"), (0xFF00_0000, "0xff000000"), (0xE000_0000, "the hole")];
    for (addr, what) in places {
        for (form, size, all_ones) in [
            (0u64, "dword", 0xFFFF_FFFFu64),
            (2, "byte", 0xFF),
            (3, "word", 0xFFFF),
            (4, "qword", u64::MAX),
            (9, "movsx word", u64::MAX),
        ] {
            let r = read(form, addr + 8);
            check!(
                c,
                r.as_ref().is_ok_and(|&v| v == all_ones),
                "{size} read of {what} at {:#x} reads all ones ({:x?})",
                addr + 8,
                r.map_err(|t| t.vector)
            );
        }
        for form in [1u64, 5, 6, 7, 8] {
            let r = mmio(form, addr + 0x10, 0x1234_5678_9ABC_DEF0);
            check!(c, r.is_ok(), "write (form {form}) to {what} at {:#x} is dropped", addr + 0x10);
        }
        let r = read(4, addr + 0x10);
        check!(c, r.as_ref().is_ok_and(|&v| v == u64::MAX), "{what} reads all ones after the writes");
    }
    // A guest polling nothing in a loop must not flood the hypervisor's log.
    let polled = (0..5000).all(|_| read(0, 0xFED0_00F0).is_ok_and(|v| v == 0xFFFF_FFFF));
    check!(c, polled, "5000 more reads of the HPET's counter read all ones");
}

// ---------------------------------------------------------------------------------------

const APIC_BSP: u64 = 1 << 8;
const APIC_EXTD: u64 = 1 << 10;
const APIC_EN: u64 = 1 << 11;

fn cpuid_apic() -> bool {
    cpuid(1, 0)[3] & (1 << 9) != 0
}

fn apic_off(c: &mut Checks) {
    let base = rdmsr_raw(IA32_APIC_BASE).unwrap_or(0);
    check!(c, base == APIC | APIC_BSP | APIC_EN, "IA32_APIC_BASE reads {base:#x} at boot");
    check!(c, cpuid_apic(), "CPUID.1:EDX.APIC is set while enabled");
    check!(c, wrmsr_raw(IA32_APIC_BASE, APIC | APIC_BSP).is_ok(), "disabling the local APIC");
    check!(c, !cpuid_apic(), "CPUID.1:EDX.APIC is clear while disabled");
    let v = read(0, APIC + 0x30);
    check!(
        c,
        v.as_ref().is_ok_and(|&v| v == 0xFFFF_FFFF),
        "the disabled APIC's page reads all ones ({v:x?})",
        v = v.map_err(|t| t.vector)
    );
    check!(c, mmio(1, APIC + 0xB0, 0).is_ok(), "a write to the disabled APIC's page is dropped");
    check!(c, rdmsr_raw(0x803).is_err_and(|t| t.vector == 13), "x2APIC MSRs #GP while disabled");
    let refused = [
        (APIC | APIC_BSP | APIC_EXTD, "EN=0 with EXTD=1"),
        (APIC | APIC_BSP | APIC_EN | APIC_EXTD, "disabled -> x2APIC"),
    ];
    for (value, what) in refused {
        check!(c, wrmsr_raw(IA32_APIC_BASE, value).is_err_and(|t| t.vector == 13), "{what} raises #GP");
    }
    check!(c, wrmsr_raw(IA32_APIC_BASE, APIC | APIC_BSP | APIC_EN).is_ok(), "enabling it again in xAPIC mode");
    check!(c, cpuid_apic(), "CPUID.1:EDX.APIC is back");
    let v = read(0, APIC + 0x30).unwrap_or(0);
    check!(c, v & 0xFF == 0x14, "the version register reads {v:#x} again");
    if cpuid(1, 0)[2] & (1 << 21) == 0 {
        say!("compat: no x2APIC in CPUID; x2APIC transitions skipped");
        return;
    }
    check!(c, wrmsr_raw(IA32_APIC_BASE, APIC | APIC_BSP | APIC_EN | APIC_EXTD).is_ok(), "xAPIC -> x2APIC");
    let v = rdmsr_raw(0x803).unwrap_or(0);
    check!(c, v & 0xFF == 0x14, "the x2APIC version MSR reads {v:#x}");
    let page = read(0, APIC + 0x30);
    check!(c, page.as_ref().is_ok_and(|&v| v == 0xFFFF_FFFF), "the xAPIC page reads all ones in x2APIC mode");
    check!(c, cpuid_apic(), "CPUID.1:EDX.APIC is set in x2APIC mode");
    let back = wrmsr_raw(IA32_APIC_BASE, APIC | APIC_BSP | APIC_EN);
    check!(c, back.is_err_and(|t| t.vector == 13), "x2APIC -> xAPIC directly raises #GP");
    check!(c, wrmsr_raw(IA32_APIC_BASE, APIC | APIC_BSP).is_ok(), "x2APIC -> disabled");
    check!(c, !cpuid_apic(), "CPUID.1:EDX.APIC is clear again");
    check!(c, wrmsr_raw(IA32_APIC_BASE, APIC | APIC_BSP | APIC_EN).is_ok(), "disabled -> xAPIC");
    let v = read(0, APIC + 0x30).unwrap_or(0);
    check!(c, v & 0xFF == 0x14 && cpuid_apic(), "the xAPIC is back ({v:#x})");
}

// ---------------------------------------------------------------------------------------

/// NMIs taken (the trap handler calls [`on_nmi`] while `COUNTING`).
pub static COUNTING: AtomicBool = AtomicBool::new(false);
static NMIS: AtomicU64 = AtomicU64::new(0);
/// When set, the first NMI handler sends itself another NMI and records what the count
/// was when it returned (the second must wait for its IRET).
static NEST: AtomicBool = AtomicBool::new(false);
static COUNT_AT_IRET: AtomicU64 = AtomicU64::new(u64::MAX);

const ICR_LOW: u64 = APIC + 0x300;
const ICR_HIGH: u64 = APIC + 0x310;
const NMI_SELF: u32 = 0x0004_0400;

fn apic_write(offset: u64, value: u32) {
    // SAFETY: the xAPIC page, emulated by the hypervisor (called with it enabled).
    unsafe { (offset as *mut u32).write_volatile(value) };
}

/// Called from the trap handler for vector 2 while [`COUNTING`]; the handler returns
/// with IRETQ, which ends the NMI's blocking.
pub fn on_nmi() {
    let n = NMIS.fetch_add(1, Ordering::SeqCst) + 1;
    if n == 1 && NEST.load(Ordering::SeqCst) {
        apic_write(ICR_LOW, NMI_SELF);
        // Exits (each an entry where the hypervisor could inject the second NMI).
        for _ in 0..3 {
            let _ = inb(0x80);
        }
        COUNT_AT_IRET.store(NMIS.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// Waits up to `ms` milliseconds of TSC time for the NMI count to reach `n`.
fn wait_for(n: u64, ms: u64) -> bool {
    let end = rdtsc().saturating_add(ms.saturating_mul(crate::attacks::tsc_per_us()) * 1000);
    while rdtsc() < end {
        if NMIS.load(Ordering::SeqCst) >= n {
            return true;
        }
        core::hint::spin_loop();
    }
    NMIS.load(Ordering::SeqCst) >= n
}

fn nmi(c: &mut Checks) {
    // The xAPIC enabled, LINT0/LINT1 and the timer masked.
    let _ = wrmsr_raw(IA32_APIC_BASE, APIC | APIC_BSP | APIC_EN);
    for (offset, value) in [(0xF0u64, 0x1FFu32), (0x350, 0x1_0000), (0x360, 0x1_0000), (0x320, 0x1_0000)] {
        apic_write(APIC + offset, value);
    }
    COUNTING.store(true, Ordering::SeqCst);

    apic_write(ICR_LOW, NMI_SELF);
    check!(c, wait_for(1, 100), "a self-NMI (shorthand self) arrives");
    apic_write(ICR_HIGH, 0);
    apic_write(ICR_LOW, 0x400);
    check!(c, wait_for(2, 100), "an NMI IPI to our own APIC ID arrives");
    // SAFETY: interrupts off around the send; NMIs are not masked by IF.
    unsafe { asm!("cli") };
    apic_write(ICR_LOW, NMI_SELF);
    let with_if_clear = wait_for(3, 100);
    check!(c, with_if_clear, "an NMI arrives with RFLAGS.IF clear");

    NEST.store(true, Ordering::SeqCst);
    NMIS.store(0, Ordering::SeqCst);
    apic_write(ICR_LOW, NMI_SELF);
    let both = wait_for(2, 100);
    let at_iret = COUNT_AT_IRET.load(Ordering::SeqCst);
    NEST.store(false, Ordering::SeqCst);
    check!(c, at_iret == 1, "an NMI sent inside the NMI handler waits for its IRET (count {at_iret} there)");
    check!(c, both, "and arrives after the IRET");

    // LINT0 as NMI, the 8259 behind it: the PIT's IRQ 0 raises the 8259's output, whose
    // rising edge is the NMI (no INTA cycle: it stays up, one NMI).
    NMIS.store(0, Ordering::SeqCst);
    init_pic(0xFE);
    start_pit(1193); // about 1 ms
    apic_write(APIC + 0x350, 0x400);
    check!(c, wait_for(1, 200), "LINT0 programmed as NMI delivers the 8259's request as an NMI");
    apic_write(APIC + 0x350, 0x1_0000);
    init_pic(0xFF);

    // The I/O APIC: pin 2 (the PIT) in NMI mode to APIC ID 0; every tick is an NMI.
    NMIS.store(0, Ordering::SeqCst);
    ioapic_write(0x10 + 2 * 2 + 1, 0);
    ioapic_write(0x10 + 2 * 2, 0x400);
    check!(c, wait_for(3, 500), "an I/O APIC entry in NMI mode delivers NMIs ({} so far)", NMIS.load(Ordering::SeqCst));
    ioapic_write(0x10 + 2 * 2, 0x1_0000);
    stop_pit();

    // LINT1, the PC's NMI line, programmed as NMI: Domain0's `trigger nmi` raises it
    // (tests/tests/compat.rs does, two seconds after boot).
    NMIS.store(0, Ordering::SeqCst);
    apic_write(APIC + 0x360, 0x400);
    let triggered = wait_for(1, 20_000);
    check!(c, triggered, "LINT1 programmed as NMI delivers Domain0's trigger as an NMI");
    apic_write(APIC + 0x360, 0x1_0000);
    COUNTING.store(false, Ordering::SeqCst);
    // SAFETY: back to normal.
    unsafe { asm!("sti") };
}

/// Both 8259s initialized (vectors 0x20 and 0x28), the master's mask as given.
fn init_pic(master_mask: u8) {
    for (port, value) in [
        (0x20u16, 0x11u8),
        (0x21, 0x20),
        (0x21, 0x04),
        (0x21, 0x01),
        (0xA0, 0x11),
        (0xA1, 0x28),
        (0xA1, 0x02),
        (0xA1, 0x01),
    ] {
        outb(port, value);
    }
    outb(0x21, master_mask);
    outb(0xA1, 0xFF);
}

/// PIT channel 0 in mode 2 (rate generator) with `count`.
fn start_pit(count: u16) {
    outb(0x43, 0x34);
    outb(0x40, count as u8);
    outb(0x40, (count >> 8) as u8);
}

fn stop_pit() {
    // Mode 0 with a zero count stops after one long period; masked anyway.
    outb(0x43, 0x30);
    outb(0x40, 0);
    outb(0x40, 0);
}

fn ioapic_write(register: u32, value: u32) {
    let _ = mmio(1, 0xFEC0_0000, u64::from(register));
    let _ = mmio(1, 0xFEC0_0010, u64::from(value));
}

// ---------------------------------------------------------------------------------------

const IA32_TSC: u32 = 0x10;
const IA32_TSC_ADJUST: u32 = 0x3B;
const IA32_MISC_ENABLE: u32 = 0x1A0;
const IA32_MCG_CAP: u32 = 0x179;
const IA32_MCG_STATUS: u32 = 0x17A;
const IA32_MCG_CTL: u32 = 0x17B;

fn cpu_msrs(c: &mut Checks) {
    let second = crate::attacks::tsc_per_us() * 1_000_000;
    // IA32_TSC sets the counter; IA32_TSC_ADJUST moves by the same amount.
    let before = rdtsc();
    check!(c, wrmsr_raw(IA32_TSC, 0x1000).is_ok(), "WRMSR IA32_TSC");
    let after = rdtsc();
    check!(c, (0x1000..0x1000 + second).contains(&after), "RDTSC counts from the value written ({after:#x})");
    let adjust = rdmsr_raw(IA32_TSC_ADJUST).unwrap_or(0) as i64;
    check!(
        c,
        adjust < 0 && (adjust + before as i64).unsigned_abs() < second,
        "IA32_TSC_ADJUST moved with it ({adjust})"
    );
    let msr = rdmsr_raw(IA32_TSC).unwrap_or(0);
    check!(c, msr >= after && msr - after < second, "RDMSR IA32_TSC agrees with RDTSC ({msr:#x})");
    check!(c, wrmsr_raw(IA32_TSC_ADJUST, 0).is_ok(), "WRMSR IA32_TSC_ADJUST 0");
    let now = rdtsc();
    check!(c, now >= before && now - before < second, "the counter is the host's again ({now:#x})");
    let _ = wrmsr_raw(IA32_TSC_ADJUST, 1 << 50);
    check!(c, rdtsc() >= 1 << 50, "IA32_TSC_ADJUST moves the counter");
    let _ = wrmsr_raw(IA32_TSC_ADJUST, 0);

    // IA32_MISC_ENABLE.
    let misc = rdmsr_raw(IA32_MISC_ENABLE).unwrap_or(0);
    let monitor = cpuid(1, 0)[2] & (1 << 3) != 0;
    check!(
        c,
        misc & 1 != 0 && misc & (3 << 11) == 3 << 11 && misc & (1 << 7) == 0 && (misc & (1 << 18) != 0) == monitor,
        "IA32_MISC_ENABLE reads {misc:#x}: fast strings, no BTS/PEBS, no PMU, MONITOR as CPUID says"
    );
    let max = cpuid(0, 0)[0];
    check!(
        c,
        wrmsr_raw(IA32_MISC_ENABLE, misc | 1 << 22).is_ok() && cpuid(0, 0)[0] <= 2,
        "limit CPUID maxval caps leaf 0 at 2"
    );
    check!(c, wrmsr_raw(IA32_MISC_ENABLE, misc).is_ok() && cpuid(0, 0)[0] == max, "and lifting it restores {max:#x}");
    if cpuid(0x8000_0001, 0)[3] & (1 << 20) != 0 {
        let hidden = wrmsr_raw(IA32_MISC_ENABLE, misc | 1 << 34).is_ok() && cpuid(0x8000_0001, 0)[3] & (1 << 20) == 0;
        check!(c, hidden, "XD disable hides NX");
        check!(
            c,
            wrmsr_raw(IA32_MISC_ENABLE, misc).is_ok() && cpuid(0x8000_0001, 0)[3] & (1 << 20) != 0,
            "and NX is back"
        );
    }
    check!(
        c,
        wrmsr_raw(IA32_MISC_ENABLE, misc & !(1 << 11)).is_err_and(|t| t.vector == 13),
        "a read-only bit raises #GP"
    );
    let ignored = wrmsr_raw(IA32_MISC_ENABLE, misc | 1 << 18).is_ok();
    let after = rdmsr_raw(IA32_MISC_ENABLE).unwrap_or(0);
    check!(c, ignored && after == misc, "the MONITOR enable bit is ignored, as CPUID shows no MONITOR");

    // What kernels read at boot besides: locked feature control, the platform ID, the
    // branch single-step bit of DEBUGCTL.
    check!(c, rdmsr_raw(0x3A).is_ok_and(|v| v == 1), "IA32_FEATURE_CONTROL reads locked, nothing enabled");
    check!(c, wrmsr_raw(0x3A, 5).is_err_and(|t| t.vector == 13), "IA32_FEATURE_CONTROL is locked");
    check!(c, rdmsr_raw(0x17).is_ok_and(|v| v == 0), "IA32_PLATFORM_ID reads 0");
    let btf = wrmsr_raw(0x1D9, 0b11).is_ok() && rdmsr_raw(0x1D9).is_ok_and(|v| v == 0b10);
    check!(c, btf, "IA32_DEBUGCTL keeps BTF and drops LBR");
    let reserved = wrmsr_raw(0x1D9, 1 << 2).is_err_and(|t| t.vector == 13);
    check!(c, reserved && wrmsr_raw(0x1D9, 0).is_ok(), "IA32_DEBUGCTL's reserved bits raise #GP");

    // Machine check: a few banks that read clean.
    if cpuid(1, 0)[3] & (1 << 14) == 0 {
        say!("compat: no MCA in CPUID; machine-check MSRs skipped");
        return;
    }
    let cap = rdmsr_raw(IA32_MCG_CAP);
    check!(c, cap.is_ok(), "IA32_MCG_CAP reads {cap:x?}", cap = cap.map_err(|t| t.vector));
    let banks = cap.unwrap_or(0) & 0xFF;
    check!(c, rdmsr_raw(IA32_MCG_STATUS).is_ok_and(|v| v == 0), "IA32_MCG_STATUS reads 0");
    check!(c, wrmsr_raw(IA32_MCG_CTL, u64::MAX).is_ok(), "IA32_MCG_CTL takes all ones");
    let mut clean = true;
    for b in 0..banks as u32 {
        clean &= wrmsr_raw(0x400 + 4 * b, u64::MAX).is_ok();
        clean &= wrmsr_raw(0x401 + 4 * b, 0).is_ok();
        clean &= rdmsr_raw(0x401 + 4 * b).is_ok_and(|v| v == 0);
    }
    check!(c, clean && banks > 0, "{banks} banks enabled and clean");
    check!(c, wrmsr_raw(IA32_MCG_CAP, 0).is_err_and(|t| t.vector == 13), "IA32_MCG_CAP is read-only");
    check!(
        c,
        rdmsr_raw(0x400 + 4 * banks as u32).is_err_and(|t| t.vector == 13),
        "the bank beyond the count raises #GP"
    );
}

// ---------------------------------------------------------------------------------------

const PM1A_STATUS: u16 = 0x600;
const PM1A_CONTROL: u16 = 0x604;
const WAK_STS: u16 = 1 << 15;

fn inw(port: u16) -> u16 {
    let v: u16;
    // SAFETY: port input in a guest exits to the hypervisor.
    unsafe { asm!("in ax, dx", in("dx") port, out("ax") v, options(nomem, nostack)) };
    v
}

fn outw(port: u16, value: u16) {
    // SAFETY: port output in a guest exits to the hypervisor.
    unsafe { asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack)) };
}

fn s3(c: &mut Checks) {
    check!(c, inw(PM1A_STATUS) & WAK_STS == 0, "WAK_STS is clear before sleeping");
    // SLP_TYP 3 (what hard-coded S3 paths write) with SLP_EN, as an OS enters a sleep
    // state; then the OS's wait for the wake-up.
    outw(PM1A_CONTROL, 3 << 10 | 1 << 13);
    let end = rdtsc().saturating_add(crate::attacks::tsc_per_us() * 100_000);
    let mut woke = false;
    while !woke && rdtsc() < end {
        woke = inw(PM1A_STATUS) & WAK_STS != 0;
    }
    check!(c, woke, "the refused S3 wakes at once (WAK_STS set)");
    outw(PM1A_STATUS, WAK_STS);
    check!(c, inw(PM1A_STATUS) & WAK_STS == 0, "WAK_STS clears when written with one");
    // A guest asking again and again must not flood the hypervisor's log.
    let mut all_woke = true;
    for _ in 0..4096 {
        outw(PM1A_CONTROL, 3 << 10 | 1 << 13);
        all_woke &= inw(PM1A_STATUS) & WAK_STS != 0;
        outw(PM1A_STATUS, WAK_STS);
    }
    check!(c, all_woke, "4096 more refused S3 requests each wake at once");
}
