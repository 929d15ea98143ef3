//! real16: a 16-bit real-mode program started at a reset-like state (CS:IP =
//! 0x0000:0x7C00). It checks it really runs in real mode (CR0.PE = 0, segment
//! arithmetic works), then runs the debug-exception cases below and reports what it
//! saw, prints through COM1 and exits through port 0xF4.
//!
//! It is also a boot sector: the same image boots on bare Bochs (the BIOS loads the
//! first 512 bytes at 0x7C00; the first sector then reads the rest with INT 13h, which it
//! skips under Ferrovisor, where the whole image is loaded already) and ends there
//! through Bochs's shutdown port. tests/tests/compat.rs runs it both ways and compares:
//! what bare Bochs does is the reference for what the hypervisor must do (issue 15,
//! "debug exceptions across exits").
//!
//! Each case records the events it takes, in order, as `K@IP` (`D` #DB with DR6's
//! B0-B3/BD/BS bits, `B` #BP, `I` the PIT's interrupt), IP being where the handler
//! returns to, and prints `case NAME: events`:
//! - `step-cpuid`, `step-in`: single-step (RFLAGS.TF) over instructions that exit to
//!   the hypervisor: the trap after each must not be lost;
//! - `step-sti-hlt`: single-step over STI; HLT, woken by the PIT;
//! - `step-movss-cpuid`: single-step over MOV SS then CPUID (which exits inside the MOV
//!   SS shadow, where the step is deferred);
//! - `watch-movss-cpuid`, `watch-movss-int3`, `watch-movss-int1`: a data breakpoint
//!   hit by MOV SS (deferred by its shadow), then CPUID, INT3 or INT1;
//! - `gd-movss`: DR7.GD set, MOV SS, then MOV DR: the general-detect #DB (a fault).
#![no_std]
#![no_main]

// AT&T syntax with explicit operand sizes: in `.code16` the assembler must emit the
// 16-bit forms of CALL and RET (a 32-bit CALL would push 4 bytes that RET pops as 2).
core::arch::global_asm!(
    r#"
    .equ COM1, 0x3F8
    .equ EVENT_COUNT, 0x500         # word: events recorded
    .equ EVENTS, 0x502              # 8 bytes each: kind, IP, DR6 bits
    .equ MAX_EVENTS, 32
    .equ STOP_IP, 0x4F0             # the #DB handler clears TF when it returns here
    .equ REST_MAGIC, 0x5EB1

    .section .text.rm, "ax"
    .code16
    .global rm_start
rm_start:
    cli
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw $0x7000, %sp
    # Under Ferrovisor the whole image is here; on bare hardware the BIOS loaded this
    # sector only, and DL names the drive it came from.
    cmpw $REST_MAGIC, rest_magic
    je 1f
    movw $rest_sectors, %ax
    movb $2, %ah                    # read sectors
    movw $0x0002, %cx               # cylinder 0, sector 2
    xorb %dh, %dh                   # head 0
    movw $0x7E00, %bx
    int $0x13
1:  jmp main

    .section .text.rest, "ax"
rest_magic: .word REST_MAGIC
main:
    xorw %di, %di                   # failed checks
    callw com1_init
    movw $rm_hello, %si
    callw print
    smsww %ax                       # CR0 low word: PE must be 0 in real mode
    testw $1, %ax
    jz 1f
    incw %di
1:  # Segment arithmetic: 0x07C0:0x0000 is linear 0x7C00, our first byte (FAh = cli).
    movw $0x07C0, %ax
    movw %ax, %es
    cmpb $0xFA, %es:0
    je 2f
    incw %di
2:  xorw %ax, %ax
    movw %ax, %es
    callw debug_cases
    movw $rm_done, %si
    callw print
    movw %di, %ax
    addb $0x30, %al
    callw putc
    movb $10, %al
    callw putc
    movw %di, %ax
    outb %al, $0xF4                 # Ferrovisor: the domain ends here
    movw $0x8900, %dx               # bare Bochs: its shutdown port
    movw $bochs_shutdown, %si
3:  lodsb
    testb %al, %al
    jz 4f
    outb %al, %dx
    jmp 3b
4:  hlt
    jmp 4b

# ---------------------------------------------------------------------------------
# COM1: 8N1 at 115200 baud, written when the transmitter holds nothing.
com1_init:
    movw $COM1 + 3, %dx
    movb $0x80, %al
    outb %al, %dx
    movw $COM1, %dx
    movb $1, %al
    outb %al, %dx
    movw $COM1 + 1, %dx
    xorb %al, %al
    outb %al, %dx
    movw $COM1 + 3, %dx
    movb $3, %al
    outb %al, %dx
    retw

putc:
    pushw %dx
    pushw %ax
    movw $COM1 + 5, %dx
5:  inb %dx, %al
    testb $0x20, %al
    jz 5b
    popw %ax
    movw $COM1, %dx
    outb %al, %dx
    popw %dx
    retw

print:
    lodsb
    testb %al, %al
    jz 6f
    callw putc
    jmp print
6:  retw

# Prints AX as 4 hex digits.
print_hex:
    pushw %cx
    pushw %bx
    movw %ax, %bx
    movw $4, %cx
7:  rolw $4, %bx
    movw %bx, %ax
    andw $0xF, %ax
    cmpb $10, %al
    jb 8f
    addb $0x27, %al
8:  addb $0x30, %al
    callw putc
    loop 7b
    popw %bx
    popw %cx
    retw

# ---------------------------------------------------------------------------------
# Event recording: AL = kind, BX = IP, DX = detail.
record:
    pushw %si
    movw EVENT_COUNT, %si
    cmpw $MAX_EVENTS, %si
    jae 9f
    incw EVENT_COUNT
    shlw $3, %si
    addw $EVENTS, %si
    xorb %ah, %ah
    movw %ax, (%si)
    movw %bx, 2(%si)
    movw %dx, 4(%si)
9:  popw %si
    retw

# #DB: records the return IP and DR6's B0-B3, BD and BS; clears DR6; clears TF in the
# frame when the case's last instruction has been stepped.
db_handler:
    pushw %bp
    movw %sp, %bp
    pushal
    movl %dr6, %eax
    movw %ax, %dx
    andw $0x600F, %dx
    movw 2(%bp), %bx
    movb $0x44, %al
    callw record
    movl $0xFFFF0FF0, %eax
    movl %eax, %dr6
    movw 2(%bp), %bx
    cmpw STOP_IP, %bx
    jne 10f
    andw $0xFEFF, 6(%bp)
10: popal
    popw %bp
    iretw

bp_handler:
    pushw %bp
    movw %sp, %bp
    pushal
    movw 2(%bp), %bx
    xorw %dx, %dx
    movb $0x42, %al
    callw record
    popal
    popw %bp
    iretw

irq0_handler:
    pushw %bp
    movw %sp, %bp
    pushal
    movw 2(%bp), %bx
    xorw %dx, %dx
    movb $0x49, %al
    callw record
    movb $0x20, %al
    outb %al, $0x20                 # EOI
    popal
    popw %bp
    iretw

# Prints "case NAME: events" (SI = NAME) and forgets the events.
dump_case:
    pushw %si
    movw $case_prefix, %si
    callw print
    popw %si
    callw print
    movb $0x3A, %al
    callw putc
    movw $EVENTS, %si
    movw EVENT_COUNT, %cx
    jcxz 12f
11: movb $0x20, %al
    callw putc
    movb (%si), %al
    callw putc
    movb $0x40, %al
    callw putc
    movw 2(%si), %ax
    callw print_hex
    cmpb $0x44, (%si)
    jne 13f
    movb $0x2F, %al
    callw putc
    movw 4(%si), %ax
    callw print_hex
13: addw $8, %si
    loop 11b
12: movb $10, %al
    callw putc
    movw $0, EVENT_COUNT
    retw

# Turns RFLAGS.TF on: the trap comes after the instruction following the POPF.
.macro STEP_ON
    pushfw
    popw %ax
    orw $0x100, %ax
    pushw %ax
    popfw
.endm

debug_cases:
    movw $0, EVENT_COUNT
    movw $db_handler, 4
    movw $0, 6
    movw $bp_handler, 12
    movw $0, 14
    movw $irq0_handler, 0x80
    movw $0, 0x82
    movl $0x400, %eax
    movl %eax, %dr7

    movw $20f, STOP_IP
    STEP_ON
    cpuid
    nop
20: movw $name_step_cpuid, %si
    callw dump_case

    movw $21f, STOP_IP
    STEP_ON
    inb $0x80, %al
    nop
21: movw $name_step_in, %si
    callw dump_case

    # The PIT's one-shot (mode 0, about 1.7 ms) through the 8259 at vector 0x20.
    callw pic_init
    movb $0x30, %al
    outb %al, $0x43
    movb $0xD0, %al
    outb %al, $0x40
    movb $0x07, %al
    outb %al, $0x40
    movw $22f, STOP_IP
    STEP_ON
    sti
    hlt
    nop
22: cli
    movb $0xFF, %al
    outb %al, $0x21
    movw $name_step_sti_hlt, %si
    callw dump_case

    movw $23f, STOP_IP
    STEP_ON
    movw %ss, %ax
    movw %ax, %ss
    cpuid
    nop
23: movw $name_step_movss, %si
    callw dump_case

    # DR0 watches `ss_value` (2 bytes, read or write); MOV SS from it hits.
    movl $ss_value, %eax
    movl %eax, %dr0
    movl $0x00070401, %eax          # L0, R/W, 2 bytes
    movl %eax, %dr7
    movw ss_value, %ss
    cpuid
    nop
    movw $name_watch_cpuid, %si
    callw dump_case
    movw ss_value, %ss
    int3
    nop
    movw $name_watch_int3, %si
    callw dump_case
    movw ss_value, %ss
    .byte 0xF1                      # INT1 (ICEBP)
    nop
    movw $name_watch_int1, %si
    callw dump_case

    # General detect: the next MOV DR faults (#DB with BD), and the CPU clears GD.
    movl $0x2400, %eax
    movl %eax, %dr7
    movw %ss, %ax
    movw %ax, %ss
    movl $0, %eax
    movl %eax, %dr0
    nop
    movw $name_gd, %si
    callw dump_case
    movl $0x400, %eax
    movl %eax, %dr7
    retw

# Both 8259s at vectors 0x20/0x28, only IRQ 0 unmasked.
pic_init:
    movb $0x11, %al
    outb %al, $0x20
    outb %al, $0xA0
    movb $0x20, %al
    outb %al, $0x21
    movb $0x28, %al
    outb %al, $0xA1
    movb $4, %al
    outb %al, $0x21
    movb $2, %al
    outb %al, $0xA1
    movb $1, %al
    outb %al, $0x21
    outb %al, $0xA1
    movb $0xFE, %al
    outb %al, $0x21
    movb $0xFF, %al
    outb %al, $0xA1
    retw

    .balign 2
ss_value: .word 0
rm_hello: .asciz "hello from 16-bit real mode\n"
rm_done:  .asciz "real16: failed checks: "
case_prefix: .asciz "case "
name_step_cpuid: .asciz "step-cpuid"
name_step_in: .asciz "step-in"
name_step_sti_hlt: .asciz "step-sti-hlt"
name_step_movss: .asciz "step-movss-cpuid"
name_watch_cpuid: .asciz "watch-movss-cpuid"
name_watch_int3: .asciz "watch-movss-int3"
name_watch_int1: .asciz "watch-movss-int1"
name_gd: .asciz "gd-movss"
bochs_shutdown: .asciz "Shutdown"
    "#,
    options(att_syntax)
);

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
