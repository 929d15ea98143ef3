//! Starting the application processors.
//!
//! An AP wakes from INIT-SIPI-SIPI in real mode at `vector << 12`. The trampoline below
//! is copied to a page below 1 MiB, followed by three pages of temporary page tables
//! that identity-map the first 2 MiB. It climbs real mode -> protected mode -> long mode
//! on those tables, then loads the hypervisor's own CR3 (which also identity-maps the
//! trampoline page, so the next fetch still works), its stack, and calls
//! [`ap_entry`] with the CPU's logical index.
//!
//! The trampoline is position independent: it derives its base from CS and patches its
//! own far-jump pointers, so any free page below 1 MiB will do.

use super::{apic, cpu, exceptions, gdt};
use crate::mm::{paging, stack};
use crate::percpu::{self, PerCpu};
use alloc::boxed::Box;
use core::arch::global_asm;
use core::sync::atomic::{AtomicU32, Ordering};

global_asm!(
    r#"
    .section .text.ap_trampoline, "ax"
    .global ap_trampoline_start
    .global ap_trampoline_end
    .global ap_tramp_tmp_cr3
    .global ap_tramp_kernel_cr3
    .global ap_tramp_stack_top
    .global ap_tramp_entry
    .global ap_tramp_cpu_index
    .code16
ap_trampoline_start:
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    xor %ebx, %ebx
    mov %ax, %bx
    shl $4, %ebx                        # ebx = linear base of this page
    # Patch the GDTR base and the 32-bit far pointer with our real location.
    lea (tramp_gdt - ap_trampoline_start)(%ebx), %eax
    mov %eax, (tramp_gdtr - ap_trampoline_start + 2)
    lea (tramp_pm32 - ap_trampoline_start)(%ebx), %eax
    mov %eax, (tramp_pm32_ptr - ap_trampoline_start)
    lgdtl (tramp_gdtr - ap_trampoline_start)
    mov %cr0, %eax
    or $1, %eax                         # CR0.PE
    mov %eax, %cr0
    ljmpl *(tramp_pm32_ptr - ap_trampoline_start)

    .code32
tramp_pm32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %cr4, %eax
    or $(1 << 5), %eax                  # CR4.PAE
    mov %eax, %cr4
    mov (ap_tramp_tmp_cr3 - ap_trampoline_start)(%ebx), %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx               # IA32_EFER
    rdmsr
    or $((1 << 8) | (1 << 11)), %eax    # LME, and NXE: the hypervisor's tables use NX
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax                # PG | WP | PE
    mov %eax, %cr0
    lea (tramp_lm64 - ap_trampoline_start)(%ebx), %eax
    mov %eax, (tramp_lm64_ptr - ap_trampoline_start)(%ebx)
    ljmp *(tramp_lm64_ptr - ap_trampoline_start)(%ebx)

    .code64
tramp_lm64:
    mov (ap_tramp_kernel_cr3 - ap_trampoline_start)(%rbx), %rax
    mov %rax, %cr3
    mov (ap_tramp_stack_top - ap_trampoline_start)(%rbx), %rsp
    mov (ap_tramp_cpu_index - ap_trampoline_start)(%rbx), %rdi
    mov (ap_tramp_entry - ap_trampoline_start)(%rbx), %rax
    xor %ebp, %ebp
    call *%rax
    ud2

    .balign 16
tramp_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF            # 0x08: 32-bit code, flat
    .quad 0x00CF92000000FFFF            # 0x10: data, flat
    .quad 0x00AF9A000000FFFF            # 0x18: 64-bit code
tramp_gdtr:
    .word 4 * 8 - 1
    .long 0
tramp_pm32_ptr:
    .long 0
    .word 0x08
tramp_lm64_ptr:
    .long 0
    .word 0x18
    .balign 8
ap_tramp_tmp_cr3:    .quad 0
ap_tramp_kernel_cr3: .quad 0
ap_tramp_stack_top:  .quad 0
ap_tramp_entry:      .quad 0
ap_tramp_cpu_index:  .quad 0
ap_trampoline_end:
    .text
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_tramp_tmp_cr3: u8;
    static ap_tramp_kernel_cr3: u8;
    static ap_tramp_stack_top: u8;
    static ap_tramp_entry: u8;
    static ap_tramp_cpu_index: u8;
}

/// Size of each AP's kernel stack (a guard page sits below it). Whole domains are built
/// on it (a guest that resets itself is rebuilt by the CPU that retires it): 64 KiB
/// overflowed when Linux rebooted on CPU 1.
const AP_STACK_SIZE: usize = 128 * 1024;
/// How long to wait for an AP to report in after its SIPIs.
const AP_ONLINE_TIMEOUT_US: u64 = 1_000_000;

/// The number of CPUs that have reported online (the BSP counts).
static ONLINE: AtomicU32 = AtomicU32::new(1);
/// Set by the AP being started once it runs Rust code; the BSP waits for it.
static STARTED: AtomicU32 = AtomicU32::new(u32::MAX);

/// Where the trampoline lives (set up once by [`prepare`]).
pub struct Trampoline {
    phys: u64,
}

fn sym_addr(s: &u8) -> usize {
    s as *const u8 as usize
}

/// Copies the trampoline to `phys` (a page below 1 MiB: SIPI vectors address only
/// there) and builds the temporary page tables in `tables` (three pages below 4 GiB:
/// the AP loads CR3 while still in 32-bit mode). Both are reserved by the caller. The
/// code page is also identity-mapped in the hypervisor's own tables.
pub fn prepare(phys: u64, tables: [u64; 3]) -> Result<Trampoline, paging::MapError> {
    // SAFETY: taking the addresses of assembly labels; nothing is read through them here.
    let (start, end) = unsafe { (sym_addr(&ap_trampoline_start), sym_addr(&ap_trampoline_end)) };
    let len = end - start;
    assert!(len <= 4096, "AP trampoline outgrew its page");
    let virt = paging::phys_to_virt(phys) as *mut u8;
    assert!(phys < 0x10_0000 && tables.iter().all(|&t| t < 0x1_0000_0000));
    // SAFETY: the pages at `phys` and `tables` were reserved for the trampoline and are
    // reached through the direct map; the source is the trampoline's code in our image.
    unsafe {
        core::ptr::write_bytes(virt, 0, 4096);
        core::ptr::copy_nonoverlapping(start as *const u8, virt, len);
        for &t in &tables {
            core::ptr::write_bytes(paging::phys_to_virt(t) as *mut u8, 0, 4096);
        }
        // Temporary tables: PML4 -> PDPT -> PD with one 2 MiB identity page at 0, which
        // covers the trampoline page.
        let [pml4, pdpt, pd] = tables.map(|t| paging::phys_to_virt(t) as *mut u64);
        pml4.write(tables[1] | 0b11);
        pdpt.write(tables[2] | 0b11);
        pd.write(0x83); // present | writable | 2 MiB page, base 0
    }
    paging::identity_map_code_page(phys)?;
    let t = Trampoline { phys };
    // SAFETY: label address inside the copied trampoline; written before any AP runs.
    unsafe { t.patch(sym_addr(&ap_tramp_tmp_cr3), tables[0]) };
    Ok(t)
}

impl Trampoline {
    /// Writes a quadword field of the copied trampoline, named by its label.
    ///
    /// # Safety
    /// `label` must be one of the `ap_tramp_*` data labels, and no AP may be reading the
    /// trampoline concurrently.
    unsafe fn patch(&self, label: usize, value: u64) {
        // SAFETY: taking the address of the start label.
        let start = unsafe { sym_addr(&ap_trampoline_start) };
        let virt = paging::phys_to_virt(self.phys) as usize + (label - start);
        // SAFETY: inside the trampoline page, 8-byte aligned (the labels are .balign 8).
        unsafe { core::ptr::write_volatile(virt as *mut u64, value) };
    }

    fn sipi_vector(&self) -> u8 {
        (self.phys >> 12) as u8
    }
}

/// Starts every usable AP listed in `cpus` (in order), one at a time. Returns the
/// number of CPUs online afterwards, the BSP included.
pub fn start_aps(tramp: &Trampoline, cpus: &[super::acpi::CpuEntry]) -> u32 {
    let kernel_cr3 = paging::current_cr3();
    let mut index: u32 = 1;
    for entry in cpus.iter().filter(|c| !c.is_bsp) {
        if !entry.usable {
            log::info!("cpu with apic_id={} is disabled in the MADT; not starting it", entry.apic_id);
            continue;
        }
        if index as usize >= percpu::MAX_CPUS {
            log::warn!("more than {} CPUs; apic_id={} stays offline", percpu::MAX_CPUS, entry.apic_id);
            continue;
        }
        let Some(stack_top) = stack::allocate(AP_STACK_SIZE) else {
            log::error!("out of memory for cpu{index}'s stack; apic_id={} stays offline", entry.apic_id);
            continue;
        };
        let area = Box::leak(Box::new(PerCpu::new(index, entry.apic_id)));
        AP_PERCPU[index as usize].store(area as *mut PerCpu as u64, Ordering::Release);
        // SAFETY: no AP is running the trampoline now: the previous one reported in (or
        // timed out and will never be sent another SIPI).
        unsafe {
            tramp.patch(sym_addr(&ap_tramp_kernel_cr3), kernel_cr3);
            tramp.patch(sym_addr(&ap_tramp_stack_top), stack_top);
            tramp.patch(sym_addr(&ap_tramp_entry), ap_entry as *const () as u64);
            tramp.patch(sym_addr(&ap_tramp_cpu_index), u64::from(index));
        }
        STARTED.store(u32::MAX, Ordering::Release);
        log::debug!("starting cpu{index} (apic_id={})", entry.apic_id);
        if !apic::start_ap(entry.apic_id, tramp.sipi_vector()) {
            log::error!("the local APIC did not deliver INIT/SIPI to apic_id={}", entry.apic_id);
            continue;
        }
        if !super::timer::spin_until(AP_ONLINE_TIMEOUT_US, || STARTED.load(Ordering::Acquire) == index) {
            log::error!("cpu{index} (apic_id={}) did not come online within 1 s", entry.apic_id);
            continue;
        }
        // Wait until it finished its own set-up, so its log lines and ours do not mix
        // and the trampoline is free for the next one.
        super::timer::spin_until(AP_ONLINE_TIMEOUT_US, || ONLINE.load(Ordering::Acquire) > index);
        index += 1;
    }
    ONLINE.load(Ordering::Acquire)
}

static AP_PERCPU: [core::sync::atomic::AtomicU64; percpu::MAX_CPUS] =
    [const { core::sync::atomic::AtomicU64::new(0) }; percpu::MAX_CPUS];

/// Rust entry of an AP, called by the trampoline on the AP's own stack.
extern "C" fn ap_entry(index: u64) -> ! {
    let index = index as u32;
    STARTED.store(index, Ordering::Release);
    let area = AP_PERCPU[index as usize].load(Ordering::Acquire) as *mut PerCpu;
    // SAFETY: the BSP leaked this PerCpu for exactly this CPU before sending the SIPI.
    percpu::install(unsafe { &mut *area });
    crate::boot::init_cpu_common();
    let tables = Box::leak(Box::new(gdt::CpuTables::new()));
    let ist = [
        stack::allocate(gdt::IST_STACK_SIZE),
        stack::allocate(gdt::IST_STACK_SIZE),
        stack::allocate(gdt::IST_STACK_SIZE),
    ];
    let (Some(a), Some(b), Some(c)) = (ist[0], ist[1], ist[2]) else {
        log::error!("out of memory for cpu{index}'s interrupt stacks; parking it");
        cpu::halt_forever();
    };
    tables.load([x86_64::VirtAddr::new(a), x86_64::VirtAddr::new(b), x86_64::VirtAddr::new(c)]);
    exceptions::load();
    apic::enable_this_cpu();
    let vmx = crate::vmx::enable_this_cpu();
    log::info!("cpu{index} online: apic_id={} {vmx}", apic::id());
    ONLINE.fetch_add(1, Ordering::AcqRel);
    crate::sched::run_loop()
}
