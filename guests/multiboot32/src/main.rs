//! multiboot32: a multiboot 1 kernel (Multiboot Specification 0.6.96) in 32-bit
//! protected mode, written in assembly so it is independent of any 32-bit Rust target.
//! It checks the hand-off of section 3.2 (EAX = 0x2BADB002, EBX = boot information
//! with memory sizes, a memory map and the command line, outside the image), prints what
//! it got through the debug port 0xE9, and exits through port 0xF4 with the number of
//! failed checks. It loads at 0x8000 (link.ld), low, as some kernels do.
#![no_std]
#![no_main]

core::arch::global_asm!(
    r#"
    .section .multiboot, "ax"
    .code32
    .balign 4
mb_header:
    .long 0x1BADB002                        # magic
    .long 0x00010002                        # flags: memory info (1), address fields (16)
    .long -(0x1BADB002 + 0x00010002)        # checksum
    .long mb_header                         # header_addr
    .long 0x8000                            # load_addr
    .long mb_load_end                       # load_end_addr
    .long mb_bss_end                        # bss_end_addr
    .long mb_start                          # entry_addr

    .text
    .code32
    .global mb_start
mb_start:
    mov esp, offset mb_stack_top
    xor edi, edi                            # failed checks
    cmp eax, 0x2BADB002
    je 1f
    inc edi
    mov esi, offset msg_bad_magic
    call print
1:  mov esi, offset msg_hello
    call print
    # The information must not lie inside the image (mb_header..mb_bss_end).
    mov esi, offset msg_info
    call print
    mov eax, ebx
    call print_hex
    mov esi, offset msg_nl
    call print
    cmp ebx, offset mb_bss_end
    jae 11f
    lea eax, [ebx + 88]
    cmp eax, offset mb_header
    jbe 11f
    inc edi
    mov esi, offset msg_info_inside
    call print
11:
    # Boot information flags: bit 0 memory sizes, bit 2 command line, bit 6 memory map.
    mov ecx, [ebx]
    test ecx, 1
    jnz 2f
    inc edi
2:  mov esi, offset msg_mem
    call print
    mov eax, [ebx + 8]                      # mem_upper in KiB
    call print_hex
    mov esi, offset msg_kib
    call print
    test ecx, 4
    jz 3f
    mov esi, offset msg_cmdline
    call print
    mov esi, [ebx + 16]
    call print
    mov esi, offset msg_nl
    call print
3:  test ecx, 0x40
    jnz 4f
    inc edi
4:  mov esi, offset msg_mmap
    call print
    mov eax, [ebx + 44]                     # mmap_length
    call print_hex
    mov esi, offset msg_nl
    call print
    # Protected mode with paging off, as section 3.2 prescribes.
    mov eax, cr0
    test eax, 0x80000000
    jz 5f
    inc edi
5:  mov esi, offset msg_done
    call print
    mov eax, edi
    add al, '0'
    out 0xE9, al
    mov al, 10
    out 0xE9, al
    mov eax, edi
    out 0xF4, al
6:  cli
    hlt
    jmp 6b

# Prints the NUL-terminated string at ESI.
print:
    push eax
7:  lodsb
    test al, al
    jz 8f
    out 0xE9, al
    jmp 7b
8:  pop eax
    ret

# Prints EAX as 8 hex digits.
print_hex:
    push ecx
    push edx
    mov ecx, 8
9:  rol eax, 4
    mov edx, eax
    and edx, 0xF
    mov dl, [hex_digits + edx]
    push eax
    mov al, dl
    out 0xE9, al
    pop eax
    dec ecx
    jnz 9b
    pop edx
    pop ecx
    ret

    .section .rodata
hex_digits:     .ascii "0123456789abcdef"
msg_hello:      .asciz "hello from a multiboot kernel in 32-bit protected mode\n"
msg_bad_magic:  .asciz "EAX does not hold the multiboot magic\n"
msg_mem:        .asciz "mem_upper=0x"
msg_kib:        .asciz " KiB\n"
msg_cmdline:    .asciz "cmdline: "
msg_mmap:       .asciz "mmap_length=0x"
msg_nl:         .asciz "\n"
msg_done:       .asciz "multiboot32: failed checks: "
msg_info:       .asciz "boot information at 0x"
msg_info_inside: .asciz "the boot information overlaps the image\n"

    .section .bss
    .balign 16
    .skip 4096
mb_stack_top:
    "#
);

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
