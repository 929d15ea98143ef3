//! Targeted attacks: each mode goes after one piece of state the hypervisor switches or
//! shares between domains, and says plainly whether it got anything (`LEAK`, `LOST`) or
//! was refused. The tests in tests/tests/isolation.rs run them beside a canary and
//! Domain0.
//!
//! - `mode=vector xcr0=1|7|0xe7 rounds=N seed=S`: vector registers across preemptions.
//!   First reads every register it is about to use: a fresh domain must see zeros, never
//!   another domain's values. Then fills XMM0-15 (with `xcr0=7` also the upper halves of
//!   YMM0-15, with `0xe7` all of ZMM0-31 and k0-7) with a pattern from its seed, spins,
//!   and after each preemption (a gap in the TSC) checks that the pattern is still
//!   there. `xcr0=1` is an SSE guest that never turns on XSAVE (the reset XCR0).
//! - `mode=xstate rounds=N`: XSETBV values the CPU refuses must raise #GP in the guest
//!   (they must never reach the host's own XSETBV); then the XCR0-lowering attack: AVX
//!   state live under XCR0 = 7, preempted, XCR0 lowered to 1, preempted again.
//! - `mode=flood calls=N`: ConsoleWrite hypercalls of 4096 newlines and a port 0xE9
//!   flood; reports the longest call in microseconds of guest time.
//! - `mode=dr rounds=N seed=S`: DR0-3 across preemptions: fresh zeros (after the others
//!   ran, `step` among them), then its own values.
//! - `mode=step rounds=N`: single-steps without ever reading a debug register, so that
//!   its #DBs' DR6 bits are in the CPU when the hypervisor switches domains.
//! - `mode=msrs rounds=N seed=S`: the MSRs the VMCS does not switch but the CPU uses
//!   while the guest runs, read the way the guest's own instructions see them: TSC_AUX
//!   through RDTSCP, KERNEL_GS_BASE through SWAPGS. Fresh: zero; then its own values
//!   across preemptions.
//! - `mode=leaks`: RDPMC must fault; HostInfo must not describe other domains; the
//!   speculation-control MSRs must exist exactly when CPUID says so, and SPEC_CTRL must
//!   be the vCPU's own across preemptions.
//! - `mode=rf`: faults the hypervisor injects (#GP for an unknown MSR, a refused
//!   XSETBV, #UD for VMXON) must push RFLAGS with RF set, as the CPU's own faults do, so
//!   that returning to the instruction does not trip an instruction breakpoint again.
//! - `mode=reset`: resets itself through port 0xCF9 at once, every time it starts.

use crate::{Console, exit, guarded, num_arg, outb, setup_tables};
use abi::hypercall::Call;
use core::arch::asm;
use core::fmt::Write;

pub fn run(mode: &str, cmdline: &str) -> ! {
    setup_tables();
    match mode {
        "vector" => vector(cmdline),
        "xstate" => xstate(cmdline),
        "flood" => flood(cmdline),
        "dr" => debug_registers(cmdline),
        "step" => single_steps(cmdline),
        "msrs" => msrs(cmdline),
        "leaks" => leaks(cmdline),
        "rf" => resume_flag(),
        "reset" => {
            say!("reset: resetting through 0xCF9");
            outb(0xCF9, 0x06);
            say!("reset: still here after the reset");
            exit(1)
        }
        _ => {
            say!("attack: unknown mode {mode}");
            exit(2)
        }
    }
}

pub(crate) fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC has no side effects.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    u64::from(hi) << 32 | u64::from(lo)
}

pub(crate) fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let (a, b, c, d): (u32, u32, u32, u32);
    // SAFETY: CPUID exits to the hypervisor, which answers; RBX is saved around it.
    unsafe {
        asm!("mov {t:r}, rbx", "cpuid", "xchg {t:r}, rbx", t = out(reg) b, inout("eax") leaf => a,
             inout("ecx") sub => c, out("edx") d, options(nostack))
    };
    [a, b, c, d]
}

/// TSC ticks per microsecond, from HostInfo (a DomU may ask).
pub(crate) fn tsc_per_us() -> u64 {
    let mut info = abi::hypercall::HostInfo::default();
    // SAFETY: VMCALL at CPL 0; the hypervisor writes the record into our variable.
    let r = unsafe { abi::hypercall::client::vmcall(Call::HostInfo, [&raw mut info as u64, 0, 0, 0, 0, 0]) };
    if r.is_err() || info.tsc_khz == 0 {
        say!("attack: HostInfo failed ({r:?})");
        exit(2);
    }
    (info.tsc_khz / 1000).max(1)
}

/// Spins until the vCPU has been off its CPU (a TSC gap of at least 1 ms), calling
/// `check` every so often meanwhile; gives up after `limit_ms` of TSC time.
fn until_preempted(per_us: u64, limit_ms: u64, mut check: impl FnMut()) -> bool {
    let start = rdtsc();
    let mut last = start;
    let mut n = 0u64;
    loop {
        let now = rdtsc();
        if now - last > 1000 * per_us {
            return true;
        }
        if now - start > limit_ms * 1000 * per_us {
            return false;
        }
        last = now;
        n += 1;
        if n.is_multiple_of(4096) {
            check();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Vector registers.

/// The state this guest keeps in vector registers, as stored to memory.
#[repr(C, align(64))]
struct Vectors {
    /// ZMM0-31 (64 bytes each; XMM and YMM are their low parts).
    zmm: [[u64; 8]; 32],
    k: [u64; 8],
}

static mut SEEN: Vectors = Vectors { zmm: [[0; 8]; 32], k: [0; 8] };
static mut WANT: Vectors = Vectors { zmm: [[0; 8]; 32], k: [0; 8] };

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Sse,
    Avx,
    Avx512,
}

fn store(level: Level, v: *mut Vectors) {
    // SAFETY: stores only into `v`; the vector registers are not the compiler's (this
    // guest is soft-float), which is why no clobbers are declared: they must survive.
    unsafe {
        match level {
            Level::Sse => asm!(
                "movdqu [{p}], xmm0", "movdqu [{p} + 64], xmm1", "movdqu [{p} + 128], xmm2",
                "movdqu [{p} + 192], xmm3", "movdqu [{p} + 256], xmm4", "movdqu [{p} + 320], xmm5",
                "movdqu [{p} + 384], xmm6", "movdqu [{p} + 448], xmm7", "movdqu [{p} + 512], xmm8",
                "movdqu [{p} + 576], xmm9", "movdqu [{p} + 640], xmm10", "movdqu [{p} + 704], xmm11",
                "movdqu [{p} + 768], xmm12", "movdqu [{p} + 832], xmm13", "movdqu [{p} + 896], xmm14",
                "movdqu [{p} + 960], xmm15",
                p = in(reg) v, options(nostack)),
            Level::Avx => asm!(
                "vmovdqu [{p}], ymm0", "vmovdqu [{p} + 64], ymm1", "vmovdqu [{p} + 128], ymm2",
                "vmovdqu [{p} + 192], ymm3", "vmovdqu [{p} + 256], ymm4", "vmovdqu [{p} + 320], ymm5",
                "vmovdqu [{p} + 384], ymm6", "vmovdqu [{p} + 448], ymm7", "vmovdqu [{p} + 512], ymm8",
                "vmovdqu [{p} + 576], ymm9", "vmovdqu [{p} + 640], ymm10", "vmovdqu [{p} + 704], ymm11",
                "vmovdqu [{p} + 768], ymm12", "vmovdqu [{p} + 832], ymm13", "vmovdqu [{p} + 896], ymm14",
                "vmovdqu [{p} + 960], ymm15",
                p = in(reg) v, options(nostack)),
            Level::Avx512 => asm!(
                "vmovdqu64 [{p}], zmm0", "vmovdqu64 [{p} + 64], zmm1", "vmovdqu64 [{p} + 128], zmm2",
                "vmovdqu64 [{p} + 192], zmm3", "vmovdqu64 [{p} + 256], zmm4", "vmovdqu64 [{p} + 320], zmm5",
                "vmovdqu64 [{p} + 384], zmm6", "vmovdqu64 [{p} + 448], zmm7", "vmovdqu64 [{p} + 512], zmm8",
                "vmovdqu64 [{p} + 576], zmm9", "vmovdqu64 [{p} + 640], zmm10", "vmovdqu64 [{p} + 704], zmm11",
                "vmovdqu64 [{p} + 768], zmm12", "vmovdqu64 [{p} + 832], zmm13", "vmovdqu64 [{p} + 896], zmm14",
                "vmovdqu64 [{p} + 960], zmm15", "vmovdqu64 [{p} + 1024], zmm16", "vmovdqu64 [{p} + 1088], zmm17",
                "vmovdqu64 [{p} + 1152], zmm18", "vmovdqu64 [{p} + 1216], zmm19", "vmovdqu64 [{p} + 1280], zmm20",
                "vmovdqu64 [{p} + 1344], zmm21", "vmovdqu64 [{p} + 1408], zmm22", "vmovdqu64 [{p} + 1472], zmm23",
                "vmovdqu64 [{p} + 1536], zmm24", "vmovdqu64 [{p} + 1600], zmm25", "vmovdqu64 [{p} + 1664], zmm26",
                "vmovdqu64 [{p} + 1728], zmm27", "vmovdqu64 [{p} + 1792], zmm28", "vmovdqu64 [{p} + 1856], zmm29",
                "vmovdqu64 [{p} + 1920], zmm30", "vmovdqu64 [{p} + 1984], zmm31",
                "kmovq [{p} + 2048], k0", "kmovq [{p} + 2056], k1", "kmovq [{p} + 2064], k2", "kmovq [{p} + 2072], k3",
                "kmovq [{p} + 2080], k4", "kmovq [{p} + 2088], k5", "kmovq [{p} + 2096], k6", "kmovq [{p} + 2104], k7",
                p = in(reg) v, options(nostack)),
        }
    }
}

fn load(level: Level, v: *const Vectors) {
    // SAFETY: as in `store`: loads the registers from `v` on purpose.
    unsafe {
        match level {
            Level::Sse => asm!(
                "movdqu xmm0, [{p}]", "movdqu xmm1, [{p} + 64]", "movdqu xmm2, [{p} + 128]",
                "movdqu xmm3, [{p} + 192]", "movdqu xmm4, [{p} + 256]", "movdqu xmm5, [{p} + 320]",
                "movdqu xmm6, [{p} + 384]", "movdqu xmm7, [{p} + 448]", "movdqu xmm8, [{p} + 512]",
                "movdqu xmm9, [{p} + 576]", "movdqu xmm10, [{p} + 640]", "movdqu xmm11, [{p} + 704]",
                "movdqu xmm12, [{p} + 768]", "movdqu xmm13, [{p} + 832]", "movdqu xmm14, [{p} + 896]",
                "movdqu xmm15, [{p} + 960]",
                p = in(reg) v, options(nostack)),
            Level::Avx => asm!(
                "vmovdqu ymm0, [{p}]", "vmovdqu ymm1, [{p} + 64]", "vmovdqu ymm2, [{p} + 128]",
                "vmovdqu ymm3, [{p} + 192]", "vmovdqu ymm4, [{p} + 256]", "vmovdqu ymm5, [{p} + 320]",
                "vmovdqu ymm6, [{p} + 384]", "vmovdqu ymm7, [{p} + 448]", "vmovdqu ymm8, [{p} + 512]",
                "vmovdqu ymm9, [{p} + 576]", "vmovdqu ymm10, [{p} + 640]", "vmovdqu ymm11, [{p} + 704]",
                "vmovdqu ymm12, [{p} + 768]", "vmovdqu ymm13, [{p} + 832]", "vmovdqu ymm14, [{p} + 896]",
                "vmovdqu ymm15, [{p} + 960]",
                p = in(reg) v, options(nostack)),
            Level::Avx512 => asm!(
                "vmovdqu64 zmm0, [{p}]", "vmovdqu64 zmm1, [{p} + 64]", "vmovdqu64 zmm2, [{p} + 128]",
                "vmovdqu64 zmm3, [{p} + 192]", "vmovdqu64 zmm4, [{p} + 256]", "vmovdqu64 zmm5, [{p} + 320]",
                "vmovdqu64 zmm6, [{p} + 384]", "vmovdqu64 zmm7, [{p} + 448]", "vmovdqu64 zmm8, [{p} + 512]",
                "vmovdqu64 zmm9, [{p} + 576]", "vmovdqu64 zmm10, [{p} + 640]", "vmovdqu64 zmm11, [{p} + 704]",
                "vmovdqu64 zmm12, [{p} + 768]", "vmovdqu64 zmm13, [{p} + 832]", "vmovdqu64 zmm14, [{p} + 896]",
                "vmovdqu64 zmm15, [{p} + 960]", "vmovdqu64 zmm16, [{p} + 1024]", "vmovdqu64 zmm17, [{p} + 1088]",
                "vmovdqu64 zmm18, [{p} + 1152]", "vmovdqu64 zmm19, [{p} + 1216]", "vmovdqu64 zmm20, [{p} + 1280]",
                "vmovdqu64 zmm21, [{p} + 1344]", "vmovdqu64 zmm22, [{p} + 1408]", "vmovdqu64 zmm23, [{p} + 1472]",
                "vmovdqu64 zmm24, [{p} + 1536]", "vmovdqu64 zmm25, [{p} + 1600]", "vmovdqu64 zmm26, [{p} + 1664]",
                "vmovdqu64 zmm27, [{p} + 1728]", "vmovdqu64 zmm28, [{p} + 1792]", "vmovdqu64 zmm29, [{p} + 1856]",
                "vmovdqu64 zmm30, [{p} + 1920]", "vmovdqu64 zmm31, [{p} + 1984]",
                "kmovq k0, [{p} + 2048]", "kmovq k1, [{p} + 2056]", "kmovq k2, [{p} + 2064]", "kmovq k3, [{p} + 2072]",
                "kmovq k4, [{p} + 2080]", "kmovq k5, [{p} + 2088]", "kmovq k6, [{p} + 2096]", "kmovq k7, [{p} + 2104]",
                p = in(reg) v, options(nostack)),
        }
    }
}

/// How many registers and bytes of each a level uses: (registers, quadwords each,
/// opmask registers).
fn shape(level: Level) -> (usize, usize, usize) {
    match level {
        Level::Sse => (16, 2, 0),
        Level::Avx => (16, 4, 0),
        Level::Avx512 => (32, 8, 8),
    }
}

/// The first register of `level` whose bits differ between SEEN and `want` (all zero
/// when `want` is None): (name, index, quadword, value seen).
fn differs(level: Level, want: Option<&Vectors>) -> Option<(&'static str, usize, usize, u64)> {
    let (regs, words, ks) = shape(level);
    let name = match level {
        Level::Sse => "xmm",
        Level::Avx => "ymm",
        Level::Avx512 => "zmm",
    };
    // SAFETY: single vCPU; SEEN was just stored.
    let seen = unsafe { &*core::ptr::addr_of!(SEEN) };
    for r in 0..regs {
        for w in 0..words {
            let expect = want.map_or(0, |v| v.zmm[r][w]);
            if seen.zmm[r][w] != expect {
                return Some((name, r, w, seen.zmm[r][w]));
            }
        }
    }
    for k in 0..ks {
        let expect = want.map_or(0, |v| v.k[k]);
        if seen.k[k] != expect {
            return Some(("k", k, 0, seen.k[k]));
        }
    }
    None
}

fn set_cr4_bits(bits: u64) {
    // SAFETY: CR4 bits the CPU has (OSFXSR, OSXMMEXCPT, OSXSAVE; checked by the caller).
    unsafe {
        let cr4: u64;
        asm!("mov {}, cr4", out(reg) cr4);
        asm!("mov cr4, {}", in(reg) cr4 | bits);
    }
}

const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_OSXSAVE: u64 = 1 << 18;

fn xsetbv(value: u64) -> Result<(), crate::Trap> {
    // SAFETY: single vCPU; the argument slot of the probed operation.
    unsafe { crate::ARG[1] = value };
    guarded(crate::op_xsetbv, 0)
}

fn vector(cmdline: &str) -> ! {
    let xcr0 = num_arg(cmdline, "xcr0", 1);
    let rounds = num_arg(cmdline, "rounds", 10);
    let seed = num_arg(cmdline, "seed", 1);
    let per_us = tsc_per_us();
    let leaf_d = cpuid(0xD, 0);
    let supported = u64::from(leaf_d[3]) << 32 | u64::from(leaf_d[0]);
    let level = match xcr0 {
        1 | 3 => Level::Sse,
        7 => Level::Avx,
        0xE7 => Level::Avx512,
        _ => {
            say!("vector: xcr0={xcr0:#x} is not one of 1, 7, 0xe7");
            exit(2)
        }
    };
    if xcr0 & !supported != 0 || (level > Level::Sse && cpuid(1, 0)[2] & (1 << 26) == 0) {
        say!("vector: the CPU offers XCR0 {supported:#x}, not {xcr0:#x}; skipped");
        exit(0);
    }
    set_cr4_bits(CR4_OSFXSR | CR4_OSXMMEXCPT);
    if level > Level::Sse {
        set_cr4_bits(CR4_OSXSAVE);
        if let Err(t) = xsetbv(xcr0) {
            say!("vector: XSETBV {xcr0:#x} refused (vector {})", t.vector);
            exit(1);
        }
    }
    // A fresh domain: every register it can see must be in its initial state (zero).
    store(level, &raw mut SEEN);
    if let Some((name, r, w, v)) = differs(level, None) {
        say!("vector: LEAK: fresh {name}{r} quadword {w} holds {v:#018x}, not 0");
        exit(1);
    }
    say!("vector: fresh registers are zero (xcr0={xcr0:#x})");
    // SAFETY: single vCPU; our own pattern.
    let want = unsafe { &mut *core::ptr::addr_of_mut!(WANT) };
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for q in want.zmm.iter_mut().flatten().chain(want.k.iter_mut()) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *q = x;
    }
    load(level, want);
    let check = |when: &str| {
        store(level, &raw mut SEEN);
        if let Some((name, r, w, v)) = differs(level, Some(want)) {
            say!("vector: LOST: {name}{r} quadword {w} is {v:#018x}, not {:#018x} ({when})", want.zmm[r][w]);
            exit(1);
        }
    };
    for round in 1..=rounds {
        let preempted = until_preempted(per_us, 5_000, || {});
        check(if preempted { "after a preemption" } else { "without a preemption" });
        if !preempted {
            say!("vector: no preemption within 5 s in round {round}");
            exit(1);
        }
    }
    say!("vector: {rounds} preemptions, registers intact (xcr0={xcr0:#x})");
    exit(0)
}

fn xstate(cmdline: &str) -> ! {
    let rounds = num_arg(cmdline, "rounds", 3);
    let per_us = tsc_per_us();
    let leaf_d = cpuid(0xD, 0);
    let supported = u64::from(leaf_d[3]) << 32 | u64::from(leaf_d[0]);
    if cpuid(1, 0)[2] & (1 << 26) == 0 || supported & 7 != 7 {
        say!("xstate: no XSAVE with AVX here; skipped");
        exit(0);
    }
    set_cr4_bits(CR4_OSFXSR | CR4_OSXMMEXCPT | CR4_OSXSAVE);
    // Values the CPU's own XSETBV refuses: each must come back as #GP in the guest.
    let bad: [(u64, &str); 8] = [
        (0, "no x87"),
        (0b101, "AVX without SSE"),
        (0b111 | 1 << 5, "opmask alone"),
        (0b111 | 1 << 5 | 1 << 6, "AVX-512 incomplete"),
        (0b11 | 0xE0, "AVX-512 without AVX"),
        (1 | 1 << 3, "BNDREGS without BNDCSR"),
        (1 | 1 << 8, "a supervisor component"),
        (1 | 1 << 62, "a reserved bit"),
    ];
    for (value, what) in bad {
        match xsetbv(value) {
            Err(t) if t.vector == 13 => say!("xstate: XSETBV {value:#x} ({what}) refused with #GP"),
            Err(t) => {
                say!("xstate: XSETBV {value:#x} ({what}) gave vector {}, not #GP", t.vector);
                exit(1);
            }
            Ok(()) => {
                say!("xstate: XSETBV {value:#x} ({what}) was ACCEPTED");
                exit(1);
            }
        }
    }
    // The lowering attack: AVX state live, switched out, XCR0 lowered, switched out.
    for round in 1..=rounds {
        if xsetbv(7).is_err() {
            say!("xstate: XSETBV 7 refused");
            exit(1);
        }
        // SAFETY: AVX is enabled; ymm0's upper half gets a non-zero value.
        unsafe { asm!("vpcmpeqd ymm0, ymm0, ymm0", options(nostack, nomem)) };
        let a = until_preempted(per_us, 5_000, || {});
        if xsetbv(1).is_err() {
            say!("xstate: XSETBV 1 refused");
            exit(1);
        }
        let b = until_preempted(per_us, 5_000, || {});
        say!("xstate: round {round}: AVX live then XCR0 lowered to 1 across preemptions ({a}, {b})");
    }
    say!("xstate: survived; done");
    exit(0)
}

fn flood(cmdline: &str) -> ! {
    let calls = num_arg(cmdline, "calls", 32);
    let port_bytes = num_arg(cmdline, "port", 16384);
    let per_us = tsc_per_us();
    static NEWLINES: [u8; 4096] = [b'\n'; 4096];
    say!("flood: {calls} ConsoleWrite calls of 4096 newlines, then {port_bytes} newlines on port 0xE9");
    let mut longest = 0u64;
    for _ in 0..calls {
        let t = rdtsc();
        // SAFETY: VMCALL at CPL 0; the buffer is ours and readable.
        let r =
            unsafe { abi::hypercall::client::vmcall(Call::ConsoleWrite, [NEWLINES.as_ptr() as u64, 4096, 0, 0, 0, 0]) };
        longest = longest.max(rdtsc() - t);
        if r != Ok(4096) {
            say!("flood: ConsoleWrite returned {r:?}");
            exit(1);
        }
    }
    let t = rdtsc();
    for _ in 0..port_bytes {
        outb(0xE9, b'\n');
    }
    let port_us = (rdtsc() - t) / per_us;
    // Our own rate limit is spent: wait for it to refill a little, so this line shows.
    let t = rdtsc();
    while rdtsc() - t < 2_000_000 * per_us {
        core::hint::spin_loop();
    }
    let longest_us = longest / per_us;
    // The old console waited for the UART: about 17 s of guest time for one call of
    // 4096 newlines at 115200 baud. Now a call must return within 50 ms.
    let ok = longest_us < 50_000;
    say!(
        "flood: done; longest ConsoleWrite {longest_us} us, port flood {port_us} us: {}",
        if ok { "ok" } else { "TOO SLOW" }
    );
    exit(if ok { 0 } else { 1 })
}

fn read_dr(n: u8) -> u64 {
    let v: u64;
    // SAFETY: MOV from a debug register at CPL 0 (it may exit to the hypervisor).
    unsafe {
        match n {
            0 => asm!("mov {}, dr0", out(reg) v),
            1 => asm!("mov {}, dr1", out(reg) v),
            2 => asm!("mov {}, dr2", out(reg) v),
            3 => asm!("mov {}, dr3", out(reg) v),
            _ => asm!("mov {}, dr6", out(reg) v),
        }
    }
    v
}

fn write_dr(n: u8, v: u64) {
    // SAFETY: MOV to a debug register at CPL 0; DR7 stays clear, so nothing fires.
    unsafe {
        match n {
            0 => asm!("mov dr0, {}", in(reg) v),
            1 => asm!("mov dr1, {}", in(reg) v),
            2 => asm!("mov dr2, {}", in(reg) v),
            3 => asm!("mov dr3, {}", in(reg) v),
            _ => asm!("mov dr6, {}", in(reg) v),
        }
    }
}

/// Single-steps (RFLAGS.TF) one instruction `rounds` times, each time taking the #DB,
/// which sets DR6.BS in the CPU, and never reads a debug register: the hypervisor must
/// not leave that bit for the next domain (`mode=dr` checks it finds DR6 clean).
fn single_steps(cmdline: &str) -> ! {
    let rounds = num_arg(cmdline, "rounds", 4);
    let per_us = tsc_per_us();
    for round in 1..=rounds {
        match guarded(op_single_step, 0) {
            Err(t) if t.vector == 1 => {}
            other => {
                say!("step: round {round}: no #DB from the single-step ({:?})", other.map_err(|t| t.vector));
                exit(1);
            }
        }
        until_preempted(per_us, 5_000, || {});
    }
    say!("step: {rounds} single-steps taken, debug registers never read");
    exit(0)
}

extern "C" fn op_single_step(_: u64) {
    // SAFETY: probed: TF set by POPFQ traps after the next instruction, and the trap
    // handler ends the probe (it returns with TF clear, from its saved context).
    unsafe { asm!("pushfq", "or qword ptr [rsp], 0x100", "popfq", "nop", "nop", options(nomem)) };
}

fn debug_registers(cmdline: &str) -> ! {
    let rounds = num_arg(cmdline, "rounds", 10);
    let seed = num_arg(cmdline, "seed", 1);
    let per_us = tsc_per_us();
    // Let the others run first (the `step` attacker leaves its single-step traps in
    // DR6), then look at what this vCPU finds.
    until_preempted(per_us, 5_000, || {});
    for n in 0..4 {
        let v = read_dr(n);
        if v != 0 {
            say!("dr: LEAK: fresh dr{n} holds {v:#x}, not 0");
            exit(1);
        }
    }
    // DR6's defined bits (B0-B3, BD, BS, BT) are ours to set; the reserved bits read as
    // ones.
    let dr6 = read_dr(6) & 0xE00F;
    if dr6 != 0 {
        say!("dr: LEAK: fresh dr6 has status bits {dr6:#x}");
        exit(1);
    }
    say!("dr: fresh debug registers are clear");
    let want: [u64; 4] = core::array::from_fn(|i| 0x7000_0000_0000 | (seed & 0xFFFF) << 20 | (i as u64) << 12);
    for (n, &v) in want.iter().enumerate() {
        write_dr(n as u8, v);
    }
    let b = seed & 0xF;
    write_dr(6, 0xFFFF_0FF0 | b);
    for round in 1..=rounds {
        let preempted = until_preempted(per_us, 5_000, || {});
        for (n, &v) in want.iter().enumerate() {
            let seen = read_dr(n as u8);
            if seen != v {
                say!("dr: LOST: dr{n} is {seen:#x}, not {v:#x} (round {round})");
                exit(1);
            }
        }
        if read_dr(6) & 0xF != b {
            say!("dr: LOST: dr6 B0-B3 are {:#x}, not {b:#x} (round {round})", read_dr(6) & 0xF);
            exit(1);
        }
        if !preempted {
            say!("dr: no preemption within 5 s");
            exit(1);
        }
    }
    say!("dr: {rounds} preemptions, debug registers intact");
    exit(0)
}

fn tsc_aux() -> u32 {
    let aux: u32;
    // SAFETY: RDTSCP reads the TSC and IA32_TSC_AUX; no side effects.
    unsafe { asm!("rdtscp", out("eax") _, out("edx") _, out("ecx") aux, options(nomem, nostack)) };
    aux
}

/// KERNEL_GS_BASE as SWAPGS sees it: swapped in, read through the GS base MSR, swapped
/// back (RDMSR of GS_BASE exits, but SWAPGS itself runs on the CPU's register).
fn kernel_gs_base() -> u64 {
    // SAFETY: SWAPGS twice leaves GS as it was; this guest uses no GS base meanwhile.
    unsafe { asm!("swapgs", options(nomem, nostack)) };
    let v = crate::rdmsr_raw(0xC000_0101).unwrap_or(u64::MAX);
    // SAFETY: as above.
    unsafe { asm!("swapgs", options(nomem, nostack)) };
    v
}

fn msrs(cmdline: &str) -> ! {
    let rounds = num_arg(cmdline, "rounds", 6);
    let seed = num_arg(cmdline, "seed", 1);
    let per_us = tsc_per_us();
    let (aux, kgs) = (tsc_aux(), kernel_gs_base());
    if aux != 0 || kgs != 0 {
        say!("msrs: LEAK: fresh TSC_AUX {aux:#x}, KERNEL_GS_BASE {kgs:#x}");
        exit(1);
    }
    say!("msrs: fresh TSC_AUX and KERNEL_GS_BASE are zero");
    let want_aux = (seed as u32).wrapping_mul(0x9E37_79B9) | 1;
    let want_kgs = 0x0000_7000_0000_0000 | (seed & 0xFFFF) << 16;
    if crate::wrmsr_raw(0xC000_0103, u64::from(want_aux)).is_err() || crate::wrmsr_raw(0xC000_0102, want_kgs).is_err() {
        say!("msrs: a write was refused");
        exit(1);
    }
    for round in 1..=rounds {
        let preempted = until_preempted(per_us, 5_000, || {});
        let (aux, kgs) = (tsc_aux(), kernel_gs_base());
        if aux != want_aux || kgs != want_kgs {
            say!(
                "msrs: LOST: TSC_AUX {aux:#x} (want {want_aux:#x}), KERNEL_GS_BASE {kgs:#x} (want {want_kgs:#x}), round {round}"
            );
            exit(1);
        }
        if !preempted {
            say!("msrs: no preemption within 5 s");
            exit(1);
        }
    }
    say!("msrs: {rounds} preemptions, TSC_AUX and KERNEL_GS_BASE intact");
    exit(0)
}

extern "C" fn op_vmxon(_: u64) {
    // SAFETY: probed; VMXON exits and the hypervisor injects #UD.
    unsafe { asm!("vmxon [{}]", in(reg) &0u64, options(nostack)) };
}

fn resume_flag() -> ! {
    const RF: u64 = 1 << 16;
    let cases: [(&str, u64, Result<(), crate::Trap>); 4] = [
        ("WRMSR of an unknown MSR", 13, crate::wrmsr_raw(0x1234_5678, 0)),
        ("RDMSR of an unknown MSR", 13, crate::rdmsr_raw(0x1234_5678).map(|_| ())),
        ("XSETBV of XCR1", 13, {
            set_cr4_bits(CR4_OSXSAVE);
            // SAFETY: single vCPU; the argument slot of the probed operation.
            unsafe { crate::ARG[1] = 1 };
            guarded(crate::op_xsetbv, 1)
        }),
        ("VMXON", 6, guarded(op_vmxon, 0)),
    ];
    let mut bad = 0;
    for (what, vector, result) in cases {
        match result {
            Err(t) if t.vector == vector && t.rflags & RF != 0 => say!("rf: {what}: vector {vector} with RF set"),
            Err(t) => {
                say!("rf: {what}: vector {} with RFLAGS {:#x} (RF clear)", t.vector, t.rflags);
                bad += 1;
            }
            Ok(()) => {
                say!("rf: {what}: no fault");
                bad += 1;
            }
        }
    }
    say!("rf: done, {bad} problem(s)");
    exit(if bad == 0 { 0 } else { 1 })
}

extern "C" fn op_rdpmc(counter: u64) {
    let (lo, hi): (u32, u32);
    // SAFETY: probed; RDPMC either exits (and faults) or reads a counter.
    unsafe { asm!("rdpmc", in("ecx") counter as u32, out("eax") lo, out("edx") hi, options(nostack)) };
    // SAFETY: single vCPU.
    unsafe { crate::ARG[1] = u64::from(lo) | u64::from(hi) << 32 };
}

const IA32_SPEC_CTRL: u32 = 0x48;
const IA32_PRED_CMD: u32 = 0x49;
const IA32_FLUSH_CMD: u32 = 0x10B;

fn leaks(cmdline: &str) -> ! {
    let rounds = num_arg(cmdline, "rounds", 3);
    let value = num_arg(cmdline, "spec", 1);
    let mut bad = 0;
    // The host's performance counters are not the guest's to read.
    for counter in [0u64, 1, 1 << 30] {
        match guarded(op_rdpmc, counter) {
            Err(t) if t.vector == 13 => {}
            // SAFETY: written by op_rdpmc.
            Ok(()) => {
                say!("leaks: RDPMC {counter:#x} READ {:#x}", unsafe { crate::ARG[1] });
                bad += 1;
            }
            Err(t) => {
                say!("leaks: RDPMC {counter:#x} gave vector {}, not #GP", t.vector);
                bad += 1;
            }
        }
    }
    say!("leaks: RDPMC refused");
    // HostInfo: this domain's view, not the machine's.
    let mut info = abi::hypercall::HostInfo::default();
    // SAFETY: VMCALL at CPL 0; the hypervisor writes the record into our variable.
    let _ = unsafe { abi::hypercall::client::vmcall(Call::HostInfo, [&raw mut info as u64, 0, 0, 0, 0, 0]) };
    if info.domains != 0 || info.memory_free != 0 {
        say!("leaks: HostInfo shows {} domains and {} bytes free on the host", info.domains, info.memory_free);
        bad += 1;
    } else {
        say!("leaks: HostInfo shows no other domains and no host memory");
    }
    // Speculation controls: the MSRs exist exactly when CPUID says so.
    let edx = cpuid(7, 0)[3];
    let ibrs = edx & (1 << 26) != 0;
    let stibp = edx & (1 << 27) != 0;
    let l1d = edx & (1 << 28) != 0;
    let ssbd = edx & (1 << 31) != 0;
    let md_clear = edx & (1 << 10) != 0;
    say!("leaks: CPUID ibrs={ibrs} stibp={stibp} ssbd={ssbd} l1d_flush={l1d} md_clear={md_clear}");
    let spec_ok = crate::rdmsr_raw(IA32_SPEC_CTRL).is_ok();
    let pred_ok = crate::wrmsr_raw(IA32_PRED_CMD, 1).is_ok();
    let flush_ok = crate::wrmsr_raw(IA32_FLUSH_CMD, 1).is_ok();
    if spec_ok != (ibrs || ssbd || stibp) || pred_ok != ibrs || flush_ok != l1d {
        say!("leaks: MSRs disagree with CPUID: SPEC_CTRL {spec_ok}, PRED_CMD {pred_ok}, FLUSH_CMD {flush_ok}");
        bad += 1;
    } else {
        say!("leaks: speculation MSRs match CPUID");
    }
    if spec_ok {
        let allowed = u64::from(ibrs) | u64::from(stibp) << 1 | u64::from(ssbd) << 2;
        let mine = value & allowed;
        if crate::wrmsr_raw(IA32_SPEC_CTRL, mine).is_err() {
            say!("leaks: SPEC_CTRL {mine:#x} refused");
            bad += 1;
        }
        if crate::wrmsr_raw(IA32_SPEC_CTRL, 1 << 40).is_ok() {
            say!("leaks: SPEC_CTRL accepted a reserved bit");
            bad += 1;
        }
        let per_us = tsc_per_us();
        for _ in 0..rounds {
            until_preempted(per_us, 5_000, || {});
            match crate::rdmsr_raw(IA32_SPEC_CTRL) {
                Ok(v) if v == mine => {}
                other => {
                    let seen = other.map_err(|t| t.vector);
                    say!("leaks: SPEC_CTRL is {seen:x?} after a preemption, not {mine:#x}");
                    bad += 1;
                    break;
                }
            }
        }
        say!("leaks: SPEC_CTRL {mine:#x} kept across {rounds} preemptions");
    }
    say!("leaks: done, {bad} problem(s)");
    exit(if bad == 0 { 0 } else { 1 })
}
