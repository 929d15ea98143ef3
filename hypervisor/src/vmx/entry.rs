//! The world switch: enter a guest with VMLAUNCH/VMRESUME and come back on a VM exit.
//!
//! [`vmx_enter`] saves the host's callee-saved registers, records the stack pointer as
//! HOST_RSP, loads every guest general-purpose register from a [`GuestRegs`] block and
//! enters the guest. A VM exit lands at `vmx_exit_landing` (HOST_RIP) with the stack
//! exactly as it was, stores the guest registers back into the block, restores the host
//! registers and returns to the caller as if `vmx_enter` had returned normally. RSP and
//! RIP of the guest live in the VMCS, CR2 stays in the CPU for the slice; the hypervisor is soft-float, so guest x87/SSE/AVX
//! state is never touched here (see docs/architecture.md).

use core::arch::global_asm;
use core::mem::offset_of;

/// The guest registers the VMCS does not hold.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct GuestRegs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    /// CR2 is not part of the VMCS guest state (SDM Vol. 3C "Guest Register State").
    /// The CPU keeps the guest's CR2 for the whole slice (the hypervisor takes no page
    /// faults), so it is loaded when a slice starts and saved when it ends
    /// ([`load_guest_cr2`], [`guest_cr2`]), not on every entry and exit.
    pub cr2: u64,
}

/// Encoding of the HOST_RSP field (SDM Vol. 3D Appendix B.4.4), which the stub writes
/// itself because only it knows the stack pointer at entry.
const HOST_RSP: u32 = super::fields::FieldNatural::HostRsp.encoding();

global_asm!(
    ".global vmx_enter",
    "vmx_enter:",
    // rdi = *mut GuestRegs, rsi = 0 for VMLAUNCH, 1 for VMRESUME.
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rdi",
    "mov rax, {host_rsp}",
    "vmwrite rax, rsp",
    "cmp rsi, 0",
    "mov rax, [rdi + {rax}]",
    "mov rbx, [rdi + {rbx}]",
    "mov rcx, [rdi + {rcx}]",
    "mov rdx, [rdi + {rdx}]",
    "mov rsi, [rdi + {rsi}]",
    "mov rbp, [rdi + {rbp}]",
    "mov r8, [rdi + {r8}]",
    "mov r9, [rdi + {r9}]",
    "mov r10, [rdi + {r10}]",
    "mov r11, [rdi + {r11}]",
    "mov r12, [rdi + {r12}]",
    "mov r13, [rdi + {r13}]",
    "mov r14, [rdi + {r14}]",
    "mov r15, [rdi + {r15}]",
    "mov rdi, [rdi + {rdi}]",
    // MOV does not touch flags: ZF still tells launch from resume.
    "jne 2f",
    "vmlaunch",
    "jmp 3f",
    "2:",
    "vmresume",
    "3:",
    // Only reached when VM entry failed: CF=1 VMfailInvalid, ZF=1 VMfailValid.
    "pushfq",
    "pop rcx",
    "mov eax, 2",
    "test ecx, 1",
    "jz 4f",
    "mov eax, 1",
    "4:",
    "pop rdi",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    "",
    ".global vmx_exit_landing",
    "vmx_exit_landing:",
    // rsp = HOST_RSP: [rsp] holds the GuestRegs pointer.
    "push rdi",
    "mov rdi, [rsp + 8]",
    "mov [rdi + {rax}], rax",
    "mov [rdi + {rbx}], rbx",
    "mov [rdi + {rcx}], rcx",
    "mov [rdi + {rdx}], rdx",
    "mov [rdi + {rsi}], rsi",
    "mov [rdi + {rbp}], rbp",
    "mov [rdi + {r8}], r8",
    "mov [rdi + {r9}], r9",
    "mov [rdi + {r10}], r10",
    "mov [rdi + {r11}], r11",
    "mov [rdi + {r12}], r12",
    "mov [rdi + {r13}], r13",
    "mov [rdi + {r14}], r14",
    "mov [rdi + {r15}], r15",
    "pop rax",
    "mov [rdi + {rdi}], rax",
    // Overwrite the return stack buffer before the hypervisor's first RET, so that no
    // return prediction the guest left behind is followed (arch::spec_ctrl): 32 calls
    // whose return addresses are speculation traps, then the stack put back.
    "cmp byte ptr [rip + {rsb_fill}], 0",
    "je 6f",
    ".rept 32",
    "call 7f",
    "int3",
    "7:",
    ".endr",
    "add rsp, 256",
    "6:",
    "pop rdi",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "xor eax, eax",
    "ret",
    host_rsp = const HOST_RSP,
    rsb_fill = sym crate::arch::spec_ctrl::RSB_FILL_ON_EXIT,
    rax = const offset_of!(GuestRegs, rax),
    rbx = const offset_of!(GuestRegs, rbx),
    rcx = const offset_of!(GuestRegs, rcx),
    rdx = const offset_of!(GuestRegs, rdx),
    rsi = const offset_of!(GuestRegs, rsi),
    rdi = const offset_of!(GuestRegs, rdi),
    rbp = const offset_of!(GuestRegs, rbp),
    r8 = const offset_of!(GuestRegs, r8),
    r9 = const offset_of!(GuestRegs, r9),
    r10 = const offset_of!(GuestRegs, r10),
    r11 = const offset_of!(GuestRegs, r11),
    r12 = const offset_of!(GuestRegs, r12),
    r13 = const offset_of!(GuestRegs, r13),
    r14 = const offset_of!(GuestRegs, r14),
    r15 = const offset_of!(GuestRegs, r15),
);

unsafe extern "C" {
    fn vmx_enter(regs: *mut GuestRegs, resume: u64) -> u64;
    fn vmx_exit_landing();
}

/// How a world switch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// The guest ran and a VM exit brought us back.
    Exited,
    /// VM entry failed before the guest ran (SDM Vol. 3C "VM Entries"), with the VMX
    /// failure kind; the VM-instruction error field says why for `Valid`.
    Failed(super::instr::VmFail),
}

/// Makes `cr2` the CPU's CR2, for the vCPU whose slice starts.
pub fn load_guest_cr2(cr2: u64) {
    // SAFETY: CR2 only reports page-fault addresses; the hypervisor reads it nowhere
    // except to save the guest's value.
    unsafe { core::arch::asm!("mov cr2, {}", in(reg) cr2, options(nostack, nomem)) };
}

/// The CPU's CR2: the running guest's, during its slice.
pub fn guest_cr2() -> u64 {
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nostack, nomem)) };
    cr2
}

/// HOST_RIP for every VMCS.
pub fn exit_landing_address() -> u64 {
    vmx_exit_landing as *const () as u64
}

/// Runs the current VMCS's guest until the next VM exit.
///
/// # Safety
/// The current VMCS must be fully set up (host state with HOST_RIP =
/// [`exit_landing_address`]), `launched` must say whether it was launched since its last
/// VMCLEAR, and `regs` must stay valid for the call.
pub unsafe fn run(regs: &mut GuestRegs, launched: bool) -> Entry {
    // SAFETY: forwarded to the caller; the stub preserves the SysV callee-saved registers.
    match unsafe { vmx_enter(regs, u64::from(launched)) } {
        0 => Entry::Exited,
        1 => Entry::Failed(super::instr::VmFail::Invalid),
        _ => Entry::Failed(super::instr::VmFail::Valid),
    }
}
