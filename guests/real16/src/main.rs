//! real16: a 16-bit real-mode program started at a reset-like state (CS:IP =
//! 0x0000:0x7C00). It checks it really runs in real mode (CR0.PE = 0, segment
//! arithmetic works), prints through port 0xE9 and exits through port 0xF4.
#![no_std]
#![no_main]

// AT&T syntax with explicit operand sizes: in `.code16` the assembler must emit the
// 16-bit forms of CALL and RET (a 32-bit CALL would push 4 bytes that RET pops as 2).
core::arch::global_asm!(
    r#"
    .section .text.rm, "ax"
    .code16
    .global rm_start
rm_start:
    cli
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %ss
    movw $0x7000, %sp
    xorw %di, %di                   # failed checks
    movw $rm_hello, %si
    callw rm_print
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
2:  movw $rm_done, %si
    callw rm_print
    movw %di, %ax
    addb $0x30, %al
    outb %al, $0xE9
    movb $10, %al
    outb %al, $0xE9
    movw %di, %ax
    outb %al, $0xF4
3:  hlt
    jmp 3b

rm_print:
    lodsb
    testb %al, %al
    jz 4f
    outb %al, $0xE9
    jmp rm_print
4:  retw

rm_hello: .asciz "hello from 16-bit real mode\n"
rm_done:  .asciz "real16: failed checks: "
    "#,
    options(att_syntax)
);

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
