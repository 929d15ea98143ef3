//! Decoder for the x86 instructions a guest uses to access memory-mapped I/O.
//!
//! After an EPT violation on an MMIO page the hypervisor knows the guest-physical address of the
//! access (the VMCS reports it), but not what the access was: which register is read or written,
//! how wide the access is, and how far to advance RIP. This module recovers exactly that from the
//! instruction bytes fetched at guest RIP, for the plain moves a driver compiles its MMIO
//! accessors to: `MOV` (88, 89, 8A, 8B, C6 /0, C7 /0, A0-A3), `MOVZX` (0F B6/B7), `MOVSX`
//! (0F BE/BF) and `MOVSXD` (63 in 64-bit mode). Everything else is reported as unsupported, so
//! the caller can inject a fault or stop the guest instead of guessing.
//!
//! Because the address is already known, effective addresses are never computed: the ModRM, SIB
//! and displacement bytes are only measured so they can be skipped. The encoding rules follow the
//! Intel 64 and IA-32 Architectures Software Developer's Manual, Volume 2, Chapter 2
//! "Instruction Format":
//! - 2.1.1 Instruction Prefixes: legacy prefixes (groups 1-4) precede the opcode in any order;
//! - 2.1.3 ModR/M and SIB Bytes and 2.1.5, Table 2-1 (16-bit addressing: no SIB, mod=00 rm=110
//!   is disp16) and Tables 2-2/2-3 (32-bit addressing: rm=100 adds a SIB byte, mod=00 rm=101 and
//!   SIB base=101 with mod=00 are disp32);
//! - 2.2.1 REX Prefixes: only in 64-bit mode (elsewhere 40-4F are INC/DEC), and only when it
//!   immediately precedes the opcode ("other placements are ignored"); REX.W selects a 64-bit
//!   operand and wins over 66, REX.R extends ModRM.reg, and any REX turns byte registers 4-7
//!   from AH/CH/DH/BH into SPL/BPL/SIL/DIL (2.2.1.2, and Vol. 2 3.1.1.1 Table 3-1);
//! - 2.2.1.4 Direct Memory-Offset MOVs: the A0-A3 offset is address-size wide (8 bytes in 64-bit
//!   mode); 2.2.1.5 Immediates: still at most 32 bits, sign-extended by REX.W;
//! - 2.2.1.6 RIP-Relative Addressing: mod=00 rm=101 in 64-bit mode, still a 4-byte displacement;
//! - 2.3.11: an instruction is at most 15 bytes long (longer ones raise #GP).
//!
//! `DecodeError::Truncated` covers both "the bytes given ran out" and "the instruction would be
//! longer than 15 bytes" (which hardware rejects with #GP); the caller can tell them apart by
//! whether it passed 15 bytes.
//!
//! The module is `no_std` friendly (only `core`) and never panics on any input: all byte accesses
//! go through bounds-checked reads and every error is returned as data, since the bytes are under
//! guest control.

use core::fmt;

/// Architectural upper bound on the length of one instruction (SDM Vol. 2, 2.3.11).
pub const MAX_INSTRUCTION_LEN: usize = 15;

/// The code size the guest executes in (from CS.L / CS.D and CR0.PE, known to the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuMode {
    Real16,
    Protected16,
    Protected32,
    Long64,
}

/// General-purpose registers in the hardware numbering (0 = RAX ... 15 = R15).
///
/// For 8-bit operands without a REX prefix, numbers 4..7 mean AH, CH, DH, BH: the decoder reports
/// that with `high_byte: true` and the register number of RAX/RCX/RDX/RBX (0..3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reg {
    pub number: u8,
    pub high_byte: bool,
}

/// What the instruction does with its memory operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// memory -> register. `size` = bytes read from memory (1, 2, 4, 8); `dest_size` = bytes
    /// written to the register (for MOVZX/MOVSX/MOVSXD it is the operand size; otherwise
    /// = size). Apply [`extend`] to the value read (with `sign_extend`), then [`merge`] it into
    /// the old register value with `dest_size` and `dest.high_byte`.
    Load { dest: Reg, size: u8, dest_size: u8, sign_extend: bool },
    /// register -> memory: the low `size` bytes of `src` (or bits 15:8 of it if `high_byte`).
    Store { src: Reg, size: u8 },
    /// immediate -> memory (the immediate already sign-extended to 64 bits where the encoding
    /// says so, i.e. C7 with REX.W; otherwise zero-extended from its encoded width).
    StoreImm { value: u64, size: u8 },
}

/// A decoded MMIO access and the total instruction length (to advance RIP by).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    pub op: Operation,
    pub len: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The instruction needs more bytes than were given, or would be longer than 15 bytes.
    Truncated,
    /// Not one of the supported moves. `opcode` is the one-byte opcode (0x00XX) or the escape
    /// 0x0F followed by the second opcode byte (0x0FXX).
    Unsupported { opcode: u16 },
    /// ModRM.mod == 3: the operand is a register, so this instruction cannot have caused an
    /// EPT violation on data.
    RegisterOperand,
    /// A REP/REPNE (F3/F2) prefix on a supported move. On these opcodes it is either reserved or
    /// an HLE hint (F2/F3 on the store forms are XACQUIRE/XRELEASE, which CPUs without HLE
    /// ignore); compilers emit neither for MMIO accessors, so it is reported rather than guessed.
    InvalidPrefix,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::Truncated => f.write_str("instruction truncated or longer than 15 bytes"),
            DecodeError::Unsupported { opcode } if opcode > 0xff => write!(f, "unsupported opcode {opcode:#06x}"),
            DecodeError::Unsupported { opcode } => write!(f, "unsupported opcode {opcode:#04x}"),
            DecodeError::RegisterOperand => f.write_str("register operand where memory was expected (ModRM.mod == 3)"),
            DecodeError::InvalidPrefix => f.write_str("REP/REPNE prefix on a MOV instruction"),
        }
    }
}

/// Merges `value` (already extended to `dest_size` bytes) into the old register contents `old`
/// the way hardware writes a register of that width:
/// - 1: replaces bits 7:0, or bits 15:8 if `high_byte` (AH/CH/DH/BH); the rest is kept;
/// - 2: replaces bits 15:0; the rest is kept;
/// - 4: the result is `value` zero-extended from 32 bits, as a 32-bit write does in 64-bit mode
///   (outside 64-bit mode the upper half is not visible, so zero-extending is also correct);
/// - 8 (and, so that no input can panic, any other size): the result is `value`.
pub fn merge(old: u64, value: u64, dest_size: u8, high_byte: bool) -> u64 {
    match dest_size {
        1 if high_byte => (old & !0xff00) | ((value & 0xff) << 8),
        1 => (old & !0xff) | (value & 0xff),
        2 => (old & !0xffff) | (value & 0xffff),
        4 => value & 0xffff_ffff,
        _ => value,
    }
}

/// Truncates `value` to its low `from_size` bytes and zero- or sign-extends it back to 64 bits.
/// `from_size` of 8 (or any value other than 1, 2 or 4) returns `value` unchanged.
pub fn extend(value: u64, from_size: u8, sign: bool) -> u64 {
    let bits: u32 = match from_size {
        1 => 8,
        2 => 16,
        4 => 32,
        _ => return value,
    };
    let shift = 64 - bits;
    if sign {
        // Move the operand's sign bit to bit 63, then shift back arithmetically.
        (((value << shift) as i64) >> shift) as u64
    } else {
        (value << shift) >> shift
    }
}

/// Bounds-checked reader over the fetched bytes that also enforces the 15-byte limit, so no
/// caller below needs to index the slice or worry about overflow (`pos` never exceeds 15).
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn next(&mut self) -> Result<u8, DecodeError> {
        if self.pos >= MAX_INSTRUCTION_LEN {
            return Err(DecodeError::Truncated);
        }
        let b = *self.bytes.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads an `n`-byte little-endian immediate (n <= 8), zero-extended.
    fn immediate(&mut self, n: u8) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for i in 0..n.min(8) {
            value |= u64::from(self.next()?) << (8 * u32::from(i));
        }
        Ok(value)
    }

    fn skip(&mut self, n: u8) -> Result<(), DecodeError> {
        for _ in 0..n {
            self.next()?;
        }
        Ok(())
    }
}

/// Skips the SIB byte and displacement that follow `modrm` (already consumed), rejecting the
/// register form. Only the lengths matter: the address itself comes from the VMCS.
fn skip_memory_operand(cur: &mut Cursor<'_>, modrm: u8, address_size: u8) -> Result<(), DecodeError> {
    let md = modrm >> 6;
    let rm = modrm & 7;
    if md == 3 {
        return Err(DecodeError::RegisterOperand);
    }
    let disp = if address_size == 2 {
        // SDM Table 2-1: no SIB; mod=00 rm=110 is a bare disp16 instead of [BP].
        match (md, rm) {
            (0, 6) => 2,
            (0, _) => 0,
            (1, _) => 1,
            _ => 2,
        }
    } else {
        // SDM Tables 2-2/2-3 (also used with 64-bit addressing; REX.B/X do not change lengths).
        let mut disp = match md {
            0 => 0,
            1 => 1,
            _ => 4,
        };
        if rm == 4 {
            let sib = cur.next()?;
            // SIB base=101 with mod=00 means "no base, disp32".
            if md == 0 && sib & 7 == 5 {
                disp = 4;
            }
        } else if md == 0 && rm == 5 {
            // disp32 (RIP-relative in 64-bit mode): 4 bytes either way.
            disp = 4;
        }
        disp
    };
    cur.skip(disp)
}

/// Register named by ModRM.reg (extended by REX.R) for an operand of `byte_op` width.
fn modrm_reg(modrm: u8, rex: Option<u8>, byte_op: bool) -> Reg {
    let rex_r = rex.map_or(0, |r| (r & 0b100) << 1);
    let number = ((modrm >> 3) & 7) | rex_r;
    if byte_op && rex.is_none() && (4..8).contains(&number) {
        // Without REX, byte registers 4..7 are AH/CH/DH/BH, the high bytes of registers 0..3.
        Reg { number: number - 4, high_byte: true }
    } else {
        Reg { number, high_byte: false }
    }
}

const RAX: Reg = Reg { number: 0, high_byte: false };

/// Decodes the MMIO-accessing instruction at the start of `bytes`, executed in `mode`.
///
/// `bytes` may be longer than the instruction (the rest is ignored) or shorter (then
/// `Truncated`). Only the first 15 bytes are ever looked at.
pub fn decode(bytes: &[u8], mode: CpuMode) -> Result<Decoded, DecodeError> {
    let mut cur = Cursor { bytes, pos: 0 };
    let long = mode == CpuMode::Long64;

    let mut operand_prefix = false;
    let mut address_prefix = false;
    let mut rep_prefix = false;
    // The REX prefix in force: a REX followed by any legacy prefix is ignored (SDM 2.2.1), so
    // every legacy prefix clears it and only one directly before the opcode survives.
    let mut rex: Option<u8> = None;
    let first = loop {
        let b = cur.next()?;
        match b {
            0x66 => operand_prefix = true,
            0x67 => address_prefix = true,
            // Segment overrides and LOCK do not change what is accessed: the GPA is known, and
            // LOCK on a MOV is #UD before any memory access, so it never reaches us anyway.
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0xf0 => {}
            0xf2 | 0xf3 => rep_prefix = true,
            0x40..=0x4f if long => {
                rex = Some(b);
                continue;
            }
            _ => break b,
        }
        rex = None;
    };

    let opcode: u16 = if first == 0x0f { 0x0f00 | u16::from(cur.next()?) } else { u16::from(first) };
    let supported = matches!(opcode, 0x88..=0x8b | 0xc6 | 0xc7 | 0xa0..=0xa3 | 0x0fb6 | 0x0fb7 | 0x0fbe | 0x0fbf)
        || (opcode == 0x63 && long);
    if !supported {
        return Err(DecodeError::Unsupported { opcode });
    }
    if rep_prefix {
        return Err(DecodeError::InvalidPrefix);
    }

    let rex_w = rex.is_some_and(|r| r & 0b1000 != 0);
    // SDM 2.2.1.2 / Vol. 1 3.6: REX.W takes precedence over 0x66 in 64-bit mode.
    let operand_size: u8 = match mode {
        CpuMode::Long64 if rex_w => 8,
        CpuMode::Long64 | CpuMode::Protected32 => {
            if operand_prefix {
                2
            } else {
                4
            }
        }
        CpuMode::Real16 | CpuMode::Protected16 => {
            if operand_prefix {
                4
            } else {
                2
            }
        }
    };
    let address_size: u8 = match (mode, address_prefix) {
        (CpuMode::Long64, false) => 8,
        (CpuMode::Long64, true) | (CpuMode::Protected32, false) => 4,
        (CpuMode::Protected32, true) => 2,
        (CpuMode::Real16 | CpuMode::Protected16, false) => 2,
        (CpuMode::Real16 | CpuMode::Protected16, true) => 4,
    };

    let op = match opcode {
        // MOV AL/eAX <-> moffs: no ModRM, the offset is address-size wide.
        0xa0..=0xa3 => {
            cur.skip(address_size)?;
            let size = if opcode & 1 == 0 { 1 } else { operand_size };
            if opcode < 0xa2 {
                Operation::Load { dest: RAX, size, dest_size: size, sign_extend: false }
            } else {
                Operation::Store { src: RAX, size }
            }
        }
        0xc6 | 0xc7 => {
            let modrm = cur.next()?;
            // Only /0 is MOV; C6 F8 / C7 F8 are XABORT / XBEGIN, the rest undefined.
            if (modrm >> 3) & 7 != 0 {
                return Err(DecodeError::Unsupported { opcode });
            }
            skip_memory_operand(&mut cur, modrm, address_size)?;
            if opcode == 0xc6 {
                Operation::StoreImm { value: cur.immediate(1)?, size: 1 }
            } else if operand_size == 2 {
                Operation::StoreImm { value: cur.immediate(2)?, size: 2 }
            } else {
                // imm32 in both the 32- and 64-bit forms; REX.W sign-extends it to 64 bits.
                let imm = cur.immediate(4)?;
                Operation::StoreImm { value: extend(imm, 4, operand_size == 8), size: operand_size }
            }
        }
        _ => {
            let modrm = cur.next()?;
            skip_memory_operand(&mut cur, modrm, address_size)?;
            match opcode {
                0x88 => Operation::Store { src: modrm_reg(modrm, rex, true), size: 1 },
                0x89 => Operation::Store { src: modrm_reg(modrm, rex, false), size: operand_size },
                0x8a => {
                    Operation::Load { dest: modrm_reg(modrm, rex, true), size: 1, dest_size: 1, sign_extend: false }
                }
                0x0fb6 | 0x0fb7 | 0x0fbe | 0x0fbf => Operation::Load {
                    dest: modrm_reg(modrm, rex, false),
                    size: if opcode & 1 == 0 { 1 } else { 2 },
                    dest_size: operand_size,
                    sign_extend: opcode & 0x08 != 0,
                },
                // MOVSXD r64, r/m32.
                0x63 if rex_w => {
                    Operation::Load { dest: modrm_reg(modrm, rex, false), size: 4, dest_size: 8, sign_extend: true }
                }
                // 0x8b, and 63 without REX.W: a plain load of the operand size. For 63 that follows
                // the SDM's "MOVSXD r32, r/m32" and "MOVSXD r16, r/m16" (with 66) forms.
                _ => Operation::Load {
                    dest: modrm_reg(modrm, rex, false),
                    size: operand_size,
                    dest_size: operand_size,
                    sign_extend: false,
                },
            }
        }
    };
    // `pos` is at most 15 by construction of `Cursor`, so the conversion cannot fail.
    let len = u8::try_from(cur.pos).map_err(|_| DecodeError::Truncated)?;
    Ok(Decoded { op, len })
}

/// The last instruction fetched for MMIO on a vCPU: where it was (the paging context,
/// the linear address and the code size), the page-table entries that translated it (at
/// host-physical addresses, with the values read), where its bytes are, the bytes, and
/// what they decode to. Kept in the vCPU; `vmexit::mmio` checks it before reuse and
/// fills it.
#[cfg(target_os = "none")]
#[derive(Debug, Clone, Copy)]
pub struct FetchCache {
    pub(crate) ctx: crate::mm::guest_paging::Context,
    pub(crate) linear: u64,
    pub(crate) mode: CpuMode,
    pub(crate) entries: [(u64, u64); crate::mm::guest_paging::MAX_WALK_ENTRIES],
    pub(crate) entry_count: usize,
    pub(crate) code_hpa: u64,
    pub(crate) bytes: [u8; 15],
    pub(crate) decoded: Decoded,
}

#[cfg(test)]
mod tests {
    use super::*;
    use CpuMode::*;

    const fn reg(number: u8) -> Reg {
        Reg { number, high_byte: false }
    }

    fn load(dest: Reg, size: u8, dest_size: u8, sign_extend: bool) -> Operation {
        Operation::Load { dest, size, dest_size, sign_extend }
    }

    /// Decodes a complete instruction and checks the properties every valid encoding must have:
    /// each strict prefix of it is `Truncated`, and bytes after it do not change the result.
    fn ok(bytes: &[u8], mode: CpuMode) -> Decoded {
        let d = decode(bytes, mode).unwrap_or_else(|e| panic!("{bytes:02x?} in {mode:?}: {e}"));
        assert_eq!(usize::from(d.len), bytes.len(), "{bytes:02x?} in {mode:?}");
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut], mode), Err(DecodeError::Truncated), "{:02x?}", &bytes[..cut]);
        }
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&[0x8b, 0x04, 0x25, 0xff]);
        assert_eq!(decode(&longer, mode), Ok(d));
        d
    }

    fn err(bytes: &[u8], mode: CpuMode) -> DecodeError {
        decode(bytes, mode).expect_err("decoded an invalid instruction")
    }

    // ---- 64-bit mode: loads ----

    #[test]
    fn rip_relative_load_is_a_4_byte_load_of_length_6() {
        // mov eax, [rip+0x10]
        let d = ok(&[0x8b, 0x05, 0x10, 0x00, 0x00, 0x00], Long64);
        assert_eq!(d, Decoded { op: load(reg(0), 4, 4, false), len: 6 });
    }

    #[test]
    fn rex_w_load_through_sib_with_absolute_disp32_is_8_bytes() {
        // mov rax, [0xfee00000]
        let d = ok(&[0x48, 0x8b, 0x04, 0x25, 0x00, 0x00, 0xe0, 0xfe], Long64);
        assert_eq!(d, Decoded { op: load(reg(0), 8, 8, false), len: 8 });
    }

    #[test]
    fn rex_r_extends_the_destination_register() {
        // mov r15, [0xfee00000]
        let d = ok(&[0x4c, 0x8b, 0x3c, 0x25, 0x00, 0x00, 0xe0, 0xfe], Long64);
        assert_eq!(d.op, load(reg(15), 8, 8, false));
    }

    #[test]
    fn byte_load_into_bh_without_rex_is_a_high_byte_register() {
        // mov bh, [rax]
        let d = ok(&[0x8a, 0x38], Long64);
        assert_eq!(d, Decoded { op: load(Reg { number: 3, high_byte: true }, 1, 1, false), len: 2 });
    }

    #[test]
    fn byte_load_into_dil_with_empty_rex_is_register_7() {
        // mov dil, [rax]
        let d = ok(&[0x40, 0x8a, 0x38], Long64);
        assert_eq!(d.op, load(reg(7), 1, 1, false));
    }

    #[test]
    fn movzx_byte_into_eax_zero_extends_to_4_bytes() {
        // movzx eax, byte [rax]
        let d = ok(&[0x0f, 0xb6, 0x00], Long64);
        assert_eq!(d, Decoded { op: load(reg(0), 1, 4, false), len: 3 });
    }

    #[test]
    fn movzx_word_into_ecx_with_disp8() {
        // movzx ecx, word [rdx+0x10]
        let d = ok(&[0x0f, 0xb7, 0x4a, 0x10], Long64);
        assert_eq!(d, Decoded { op: load(reg(1), 2, 4, false), len: 4 });
    }

    #[test]
    fn movzx_with_operand_size_prefix_writes_16_bits() {
        // movzx cx, byte [rax]
        let d = ok(&[0x66, 0x0f, 0xb6, 0x08], Long64);
        assert_eq!(d.op, load(reg(1), 1, 2, false));
    }

    #[test]
    fn movsx_word_into_rax_sign_extends_to_8_bytes() {
        // movsx rax, word [rax]
        let d = ok(&[0x48, 0x0f, 0xbf, 0x00], Long64);
        assert_eq!(d, Decoded { op: load(reg(0), 2, 8, true), len: 4 });
    }

    #[test]
    fn movsx_byte_into_ecx_sign_extends_to_4_bytes() {
        // movsx ecx, byte [rax+1]
        let d = ok(&[0x0f, 0xbe, 0x48, 0x01], Long64);
        assert_eq!(d, Decoded { op: load(reg(1), 1, 4, true), len: 4 });
    }

    #[test]
    fn movsxd_with_rex_w_sign_extends_a_dword_into_64_bits() {
        // movsxd rax, dword [rax]
        let d = ok(&[0x48, 0x63, 0x00], Long64);
        assert_eq!(d, Decoded { op: load(reg(0), 4, 8, true), len: 3 });
    }

    #[test]
    fn opcode_63_without_rex_w_in_long_mode_is_a_plain_dword_load() {
        // movsxd eax, dword [rax] (behaves as mov eax, [rax])
        let d = ok(&[0x63, 0x00], Long64);
        assert_eq!(d, Decoded { op: load(reg(0), 4, 4, false), len: 2 });
    }

    #[test]
    fn opcode_63_with_operand_size_prefix_is_a_word_load() {
        // movsxd cx, word [rax] (SDM "MOVSXD r16, r/m16")
        let d = ok(&[0x66, 0x63, 0x08], Long64);
        assert_eq!(d, Decoded { op: load(reg(1), 2, 2, false), len: 3 });
    }

    #[test]
    fn address_size_prefix_before_an_ignored_rex_still_applies() {
        // addr32 mov ds:[0xfee000f0], eax: the 48 is ignored because 3E follows it, the 67 is not
        let d = ok(&[0x67, 0x48, 0x3e, 0xa3, 0xf0, 0x00, 0xe0, 0xfe], Long64);
        assert_eq!(d, Decoded { op: Operation::Store { src: reg(0), size: 4 }, len: 8 });
    }

    #[test]
    fn opcode_63_outside_long_mode_is_arpl_and_unsupported() {
        // arpl [eax], ax
        for mode in [Real16, Protected16, Protected32] {
            assert_eq!(err(&[0x63, 0x00], mode), DecodeError::Unsupported { opcode: 0x63 });
        }
    }

    // ---- 64-bit mode: stores ----

    #[test]
    fn register_store_of_ebx() {
        // mov [rax], ebx
        let d = ok(&[0x89, 0x18], Long64);
        assert_eq!(d, Decoded { op: Operation::Store { src: reg(3), size: 4 }, len: 2 });
    }

    #[test]
    fn register_store_of_r9d_with_rex_r_and_disp8() {
        // mov [rax+0x20], r9d
        let d = ok(&[0x44, 0x89, 0x48, 0x20], Long64);
        assert_eq!(d, Decoded { op: Operation::Store { src: reg(9), size: 4 }, len: 4 });
    }

    #[test]
    fn operand_size_prefix_makes_a_word_store() {
        // mov [rax], cx
        let d = ok(&[0x66, 0x89, 0x08], Long64);
        assert_eq!(d, Decoded { op: Operation::Store { src: reg(1), size: 2 }, len: 3 });
    }

    #[test]
    fn rex_w_wins_over_operand_size_prefix() {
        // mov [rax], rcx
        let d = ok(&[0x66, 0x48, 0x89, 0x08], Long64);
        assert_eq!(d.op, Operation::Store { src: reg(1), size: 8 });
    }

    #[test]
    fn rex_followed_by_a_legacy_prefix_is_ignored() {
        // rex.W followed by 66: the REX is dropped, so this is mov [rax], cx
        let d = ok(&[0x48, 0x66, 0x89, 0x08], Long64);
        assert_eq!(d.op, Operation::Store { src: reg(1), size: 2 });
        // rex.R then DS override: mov ds:[rax], ecx, not r9d
        let d = ok(&[0x44, 0x3e, 0x89, 0x08], Long64);
        assert_eq!(d.op, Operation::Store { src: reg(1), size: 4 });
        // an empty REX then DS override: the byte register is AH again, not SPL
        let d = ok(&[0x40, 0x3e, 0x88, 0x20], Long64);
        assert_eq!(d.op, Operation::Store { src: Reg { number: 0, high_byte: true }, size: 1 });
    }

    #[test]
    fn byte_store_of_ah_without_rex_is_high_byte_of_rax() {
        // mov [rax], ah
        let d = ok(&[0x88, 0x20], Long64);
        assert_eq!(d, Decoded { op: Operation::Store { src: Reg { number: 0, high_byte: true }, size: 1 }, len: 2 });
    }

    #[test]
    fn byte_store_of_spl_with_empty_rex_is_register_4() {
        // mov [rax], spl
        let d = ok(&[0x40, 0x88, 0x20], Long64);
        assert_eq!(d, Decoded { op: Operation::Store { src: reg(4), size: 1 }, len: 3 });
    }

    #[test]
    fn byte_store_of_r12b() {
        // mov [rax], r12b
        let d = ok(&[0x44, 0x88, 0x20], Long64);
        assert_eq!(d.op, Operation::Store { src: reg(12), size: 1 });
    }

    #[test]
    fn dword_immediate_store_with_disp32() {
        // mov dword [rax+0xb0], 0
        let d = ok(&[0xc7, 0x80, 0xb0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], Long64);
        assert_eq!(d, Decoded { op: Operation::StoreImm { value: 0, size: 4 }, len: 10 });
    }

    #[test]
    fn qword_immediate_store_sign_extends_imm32() {
        // mov qword [rax], -1
        let d = ok(&[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff], Long64);
        assert_eq!(d, Decoded { op: Operation::StoreImm { value: u64::MAX, size: 8 }, len: 7 });
        // mov qword [rax], 0x7fffffff: positive immediates stay positive
        let d = ok(&[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0x7f], Long64);
        assert_eq!(d.op, Operation::StoreImm { value: 0x7fff_ffff, size: 8 });
    }

    #[test]
    fn dword_immediate_store_is_not_sign_extended() {
        // mov dword [rax], 0xffffffff
        let d = ok(&[0xc7, 0x00, 0xff, 0xff, 0xff, 0xff], Long64);
        assert_eq!(d, Decoded { op: Operation::StoreImm { value: 0xffff_ffff, size: 4 }, len: 6 });
    }

    #[test]
    fn word_immediate_store_has_a_2_byte_immediate() {
        // mov word [rax], 0x1234
        let d = ok(&[0x66, 0xc7, 0x00, 0x34, 0x12], Long64);
        assert_eq!(d, Decoded { op: Operation::StoreImm { value: 0x1234, size: 2 }, len: 5 });
    }

    #[test]
    fn byte_immediate_store_with_disp8() {
        // mov byte [rax+8], 0x5a
        let d = ok(&[0xc6, 0x40, 0x08, 0x5a], Long64);
        assert_eq!(d, Decoded { op: Operation::StoreImm { value: 0x5a, size: 1 }, len: 4 });
    }

    #[test]
    fn segment_override_and_lock_are_accepted_and_ignored() {
        // mov rax, gs:[0]
        let d = ok(&[0x65, 0x48, 0x8b, 0x04, 0x25, 0x00, 0x00, 0x00, 0x00], Long64);
        assert_eq!(d, Decoded { op: load(reg(0), 8, 8, false), len: 9 });
        // lock mov [rax], eax (#UD on hardware, so never seen; accepting it is harmless)
        let d = ok(&[0xf0, 0x89, 0x00], Long64);
        assert_eq!(d.op, Operation::Store { src: reg(0), size: 4 });
    }

    // ---- moffs forms ----

    #[test]
    fn moffs_load_in_long_mode_has_an_8_byte_offset() {
        // mov eax, [0xfee00000000000f0] (movabs)
        let d = ok(&[0xa1, 0xf0, 0, 0, 0, 0, 0xe0, 0xfe, 0], Long64);
        assert_eq!(d, Decoded { op: load(reg(0), 4, 4, false), len: 9 });
        // movabs rax, [...]
        let d = ok(&[0x48, 0xa1, 0xf0, 0, 0, 0, 0, 0xe0, 0xfe, 0], Long64);
        assert_eq!(d, Decoded { op: load(reg(0), 8, 8, false), len: 10 });
    }

    #[test]
    fn moffs_in_long_mode_with_address_size_prefix_has_a_4_byte_offset() {
        // addr32 mov [0xfee000f0], al
        let d = ok(&[0x67, 0xa2, 0xf0, 0x00, 0xe0, 0xfe], Long64);
        assert_eq!(d, Decoded { op: Operation::Store { src: reg(0), size: 1 }, len: 6 });
    }

    #[test]
    fn moffs_in_protected32_has_a_4_byte_offset() {
        // mov eax, [0xfee000f0]
        let d = ok(&[0xa1, 0xf0, 0x00, 0xe0, 0xfe], Protected32);
        assert_eq!(d, Decoded { op: load(reg(0), 4, 4, false), len: 5 });
        // mov al, [0xfee000f0]
        let d = ok(&[0xa0, 0xf0, 0x00, 0xe0, 0xfe], Protected32);
        assert_eq!(d, Decoded { op: load(reg(0), 1, 1, false), len: 5 });
        // mov [0xfee000f0], ax
        let d = ok(&[0x66, 0xa3, 0xf0, 0x00, 0xe0, 0xfe], Protected32);
        assert_eq!(d, Decoded { op: Operation::Store { src: reg(0), size: 2 }, len: 6 });
        // addr16 mov eax, [0x1234]
        let d = ok(&[0x67, 0xa1, 0x34, 0x12], Protected32);
        assert_eq!(d, Decoded { op: load(reg(0), 4, 4, false), len: 4 });
    }

    #[test]
    fn moffs_in_16_bit_modes_has_a_2_byte_offset_or_4_with_address_size_prefix() {
        for mode in [Real16, Protected16] {
            // mov ax, [0x1234]
            let d = ok(&[0xa1, 0x34, 0x12], mode);
            assert_eq!(d, Decoded { op: load(reg(0), 2, 2, false), len: 3 });
            // addr32 mov ax, [0x00012345]
            let d = ok(&[0x67, 0xa1, 0x45, 0x23, 0x01, 0x00], mode);
            assert_eq!(d, Decoded { op: load(reg(0), 2, 2, false), len: 6 });
        }
    }

    // ---- 16- and 32-bit modes ----

    #[test]
    fn sixteen_bit_load_through_bx() {
        for mode in [Real16, Protected16] {
            // mov ax, [bx]
            let d = ok(&[0x8b, 0x07], mode);
            assert_eq!(d, Decoded { op: load(reg(0), 2, 2, false), len: 2 });
            // mov ax, [bx+0x1234]
            let d = ok(&[0x8b, 0x87, 0x34, 0x12], mode);
            assert_eq!(d, Decoded { op: load(reg(0), 2, 2, false), len: 4 });
        }
    }

    #[test]
    fn sixteen_bit_addressing_special_cases() {
        // mov ax, [0x1000]: mod=00 rm=110 is a bare disp16
        assert_eq!(ok(&[0x8b, 0x06, 0x00, 0x10], Real16).len, 4);
        // mov al, [bx+5]: disp8
        let d = ok(&[0x8a, 0x47, 0x05], Real16);
        assert_eq!(d, Decoded { op: load(reg(0), 1, 1, false), len: 3 });
        // mov ax, [si]: rm=100 is [SI], not a SIB byte
        assert_eq!(ok(&[0x8b, 0x04], Real16).len, 2);
        // mov word [bp+di+0x10], 0xbeef
        let d = ok(&[0xc7, 0x43, 0x10, 0xef, 0xbe], Real16);
        assert_eq!(d, Decoded { op: Operation::StoreImm { value: 0xbeef, size: 2 }, len: 5 });
    }

    #[test]
    fn real_mode_with_both_size_prefixes_uses_32_bit_addressing_and_operand() {
        // mov eax, [ebx]
        let d = ok(&[0x67, 0x66, 0x8b, 0x03], Real16);
        assert_eq!(d, Decoded { op: load(reg(0), 4, 4, false), len: 4 });
        // mov eax, [esp+8]: 32-bit addressing brings the SIB byte back
        assert_eq!(ok(&[0x67, 0x66, 0x8b, 0x44, 0x24, 0x08], Real16).len, 6);
    }

    #[test]
    fn real_mode_operand_size_prefix_makes_dword_immediate_store() {
        // mov dword [bx], 0x12345678
        let d = ok(&[0x66, 0xc7, 0x07, 0x78, 0x56, 0x34, 0x12], Real16);
        assert_eq!(d, Decoded { op: Operation::StoreImm { value: 0x1234_5678, size: 4 }, len: 7 });
    }

    #[test]
    fn protected32_sib_and_displacement_forms() {
        // mov eax, [0xfee00000] through SIB with no base
        assert_eq!(ok(&[0x8b, 0x04, 0x25, 0x00, 0x00, 0xe0, 0xfe], Protected32).len, 7);
        // mov eax, [ecx*4+0]: SIB base=101 with mod=00 is disp32
        assert_eq!(ok(&[0x8b, 0x04, 0x8d, 0x00, 0x00, 0x00, 0x00], Protected32).len, 7);
        // mov eax, [esp+0x100]: SIB and disp32
        assert_eq!(ok(&[0x8b, 0x84, 0x24, 0x00, 0x01, 0x00, 0x00], Protected32).len, 7);
        // mov eax, [ebp+8]: disp8, no SIB
        assert_eq!(ok(&[0x8b, 0x45, 0x08], Protected32).len, 3);
        // mov eax, [0xfee000b0]: mod=00 rm=101 is disp32 (absolute outside 64-bit mode)
        assert_eq!(ok(&[0x8b, 0x05, 0xb0, 0x00, 0xe0, 0xfe], Protected32).len, 6);
        // mov cx, [eax]
        assert_eq!(ok(&[0x66, 0x8b, 0x08], Protected32).op, load(reg(1), 2, 2, false));
    }

    #[test]
    fn protected32_address_size_prefix_selects_16_bit_addressing() {
        // mov eax, [bx]
        assert_eq!(ok(&[0x67, 0x8b, 0x07], Protected32).len, 3);
        // mov eax, [0x1234]
        assert_eq!(ok(&[0x67, 0x8b, 0x06, 0x34, 0x12], Protected32).len, 5);
    }

    #[test]
    fn long_mode_address_size_prefix_keeps_32_bit_addressing_lengths() {
        // mov eax, [ebx+0x10]
        assert_eq!(ok(&[0x67, 0x8b, 0x43, 0x10], Long64).len, 4);
    }

    #[test]
    fn rex_bytes_outside_long_mode_are_inc_dec_and_unsupported() {
        // inc eax; then mov [eax], eax would follow
        assert_eq!(err(&[0x40, 0x89, 0x00], Protected32), DecodeError::Unsupported { opcode: 0x40 });
        // dec di
        assert_eq!(err(&[0x4f, 0x89, 0x00], Real16), DecodeError::Unsupported { opcode: 0x4f });
    }

    // ---- errors ----

    #[test]
    fn register_form_is_rejected() {
        // mov eax, eax
        assert_eq!(err(&[0x8b, 0xc0], Long64), DecodeError::RegisterOperand);
        // mov eax, 0 (C7 /0 with mod=3)
        assert_eq!(err(&[0xc7, 0xc0, 0, 0, 0, 0], Long64), DecodeError::RegisterOperand);
        // movzx eax, cl
        assert_eq!(err(&[0x0f, 0xb6, 0xc1], Protected32), DecodeError::RegisterOperand);
        // mov ax, bx
        assert_eq!(err(&[0x8b, 0xc3], Real16), DecodeError::RegisterOperand);
    }

    #[test]
    fn rep_prefixes_on_a_mov_are_invalid() {
        // rep mov [rax], eax
        assert_eq!(err(&[0xf3, 0x89, 0x00], Long64), DecodeError::InvalidPrefix);
        // repne mov eax, [rax]
        assert_eq!(err(&[0xf2, 0x8b, 0x00], Long64), DecodeError::InvalidPrefix);
    }

    #[test]
    fn c6_c7_with_reg_field_other_than_0_are_unsupported() {
        // xbegin rel32
        assert_eq!(err(&[0xc7, 0xf8, 0, 0, 0, 0], Long64), DecodeError::Unsupported { opcode: 0xc7 });
        // xabort 0
        assert_eq!(err(&[0xc6, 0xf8, 0x00], Long64), DecodeError::Unsupported { opcode: 0xc6 });
        // c6 /1 with a memory operand: undefined
        assert_eq!(err(&[0xc6, 0x08, 0x00], Long64), DecodeError::Unsupported { opcode: 0xc6 });
    }

    #[test]
    fn other_instructions_are_unsupported_with_their_opcode() {
        // cmpxchg [rax], ecx
        assert_eq!(err(&[0x0f, 0xb1, 0x08], Long64), DecodeError::Unsupported { opcode: 0x0fb1 });
        // movsd (string move), plain and with rep: unsupported rather than a bad prefix
        assert_eq!(err(&[0xa5], Long64), DecodeError::Unsupported { opcode: 0xa5 });
        assert_eq!(err(&[0xf3, 0xa5], Long64), DecodeError::Unsupported { opcode: 0xa5 });
        // stosb, lodsb
        assert_eq!(err(&[0xaa], Protected32), DecodeError::Unsupported { opcode: 0xaa });
        assert_eq!(err(&[0xac], Real16), DecodeError::Unsupported { opcode: 0xac });
        // add [rax], eax
        assert_eq!(err(&[0x01, 0x00], Long64), DecodeError::Unsupported { opcode: 0x01 });
        // movd xmm0, [rax]
        assert_eq!(err(&[0x66, 0x0f, 0x6e, 0x00], Long64), DecodeError::Unsupported { opcode: 0x0f6e });
    }

    #[test]
    fn sixteen_prefixes_are_an_error_even_with_bytes_to_spare() {
        let mut bytes = [0x3e; 20];
        bytes[16] = 0x89;
        bytes[17] = 0x00;
        assert_eq!(decode(&bytes, Long64), Err(DecodeError::Truncated));
        // Fifteen prefixes leave no room for the opcode.
        assert_eq!(decode(&bytes[1..], Long64), Err(DecodeError::Truncated));
    }

    #[test]
    fn instructions_of_exactly_15_bytes_decode_and_16_do_not() {
        // ds ds ds ds ds mov dword [rax+0xb0], 0 : 5 + 10 = 15 bytes
        let mut bytes = vec![0x3e; 5];
        bytes.extend_from_slice(&[0xc7, 0x80, 0xb0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
        assert_eq!(ok(&bytes, Long64).len, 15);
        bytes.insert(0, 0x3e);
        bytes.push(0x90);
        assert_eq!(decode(&bytes, Long64), Err(DecodeError::Truncated));
    }

    #[test]
    fn every_truncation_of_a_valid_instruction_is_truncated() {
        let valid: &[(&[u8], CpuMode)] = &[
            (&[0x8b, 0x05, 0x10, 0x00, 0x00, 0x00], Long64),
            (&[0x48, 0x8b, 0x04, 0x25, 0x00, 0x00, 0xe0, 0xfe], Long64),
            (&[0xc7, 0x80, 0xb0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], Long64),
            (&[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff], Long64),
            (&[0x66, 0x48, 0x0f, 0xbf, 0x44, 0x24, 0x08], Long64),
            (&[0x65, 0x48, 0xa1, 1, 2, 3, 4, 5, 6, 7, 8], Long64),
            (&[0x8b, 0x87, 0x34, 0x12], Real16),
            (&[0x67, 0x66, 0xc7, 0x84, 0x24, 0, 1, 0, 0, 0x78, 0x56, 0x34, 0x12], Protected16),
            (&[0xa3, 0xf0, 0x00, 0xe0, 0xfe], Protected32),
        ];
        for &(bytes, mode) in valid {
            for cut in 0..bytes.len() {
                assert_eq!(decode(&bytes[..cut], mode), Err(DecodeError::Truncated), "{:02x?}", &bytes[..cut]);
            }
            assert_eq!(decode(bytes, mode).map(|d| usize::from(d.len)), Ok(bytes.len()));
        }
    }

    #[test]
    fn error_messages_are_human_readable() {
        assert_eq!(DecodeError::Unsupported { opcode: 0x0fb0 }.to_string(), "unsupported opcode 0x0fb0");
        assert_eq!(DecodeError::Unsupported { opcode: 0xa5 }.to_string(), "unsupported opcode 0xa5");
        assert!(DecodeError::Truncated.to_string().contains("15 bytes"));
        assert!(DecodeError::RegisterOperand.to_string().contains("register"));
        assert!(DecodeError::InvalidPrefix.to_string().contains("REP"));
    }

    // ---- merge / extend ----

    #[test]
    fn merge_of_a_high_byte_replaces_bits_15_to_8_only() {
        assert_eq!(merge(0x1111_2222_3333_4444, 0xab, 1, true), 0x1111_2222_3333_ab44);
        assert_eq!(merge(0x1111_2222_3333_4444, 0xffff_ffab, 1, true), 0x1111_2222_3333_ab44);
    }

    #[test]
    fn merge_of_a_low_byte_keeps_the_upper_56_bits() {
        assert_eq!(merge(0x1111_2222_3333_4444, 0xab, 1, false), 0x1111_2222_3333_44ab);
    }

    #[test]
    fn merge_of_a_word_keeps_the_upper_48_bits() {
        assert_eq!(merge(0x1111_2222_3333_4444, 0xfedc_ba98, 2, false), 0x1111_2222_3333_ba98);
    }

    #[test]
    fn merge_of_a_dword_zero_extends_like_a_32_bit_write_in_long_mode() {
        assert_eq!(merge(0x1111_2222_3333_4444, 0xdead_beef, 4, false), 0x0000_0000_dead_beef);
        assert_eq!(merge(u64::MAX, 0xffff_ffff_0000_0001, 4, false), 1);
    }

    #[test]
    fn merge_of_a_qword_replaces_everything() {
        assert_eq!(merge(0x1111_2222_3333_4444, 0x8000_0000_0000_0001, 8, false), 0x8000_0000_0000_0001);
    }

    #[test]
    fn extend_zero_and_sign_extends_from_each_width() {
        assert_eq!(extend(0x1234_5680, 1, false), 0x80);
        assert_eq!(extend(0x1234_5680, 1, true), 0xffff_ffff_ffff_ff80);
        assert_eq!(extend(0x7f, 1, true), 0x7f);
        assert_eq!(extend(0xffff_8000, 2, false), 0x8000);
        assert_eq!(extend(0x8000, 2, true), 0xffff_ffff_ffff_8000);
        assert_eq!(extend(0xffff_ffff_8000_0000, 4, false), 0x8000_0000);
        assert_eq!(extend(0x8000_0000, 4, true), 0xffff_ffff_8000_0000);
        assert_eq!(extend(0x8000_0000_0000_0000, 8, true), 0x8000_0000_0000_0000);
        assert_eq!(extend(0x8000_0000_0000_0000, 8, false), 0x8000_0000_0000_0000);
    }

    #[test]
    fn movsx_load_then_extend_then_merge_gives_the_hardware_result() {
        // movsx rax, word [rax] reading 0x8001: rax becomes 0xffff_ffff_ffff_8001.
        let d = ok(&[0x48, 0x0f, 0xbf, 0x00], Long64);
        let Operation::Load { dest, size, dest_size, sign_extend } = d.op else { panic!("not a load") };
        let value = extend(0x8001, size, sign_extend);
        assert_eq!(merge(0x1234, value, dest_size, dest.high_byte), 0xffff_ffff_ffff_8001);
    }

    // ---- robustness ----

    /// Guest bytes are arbitrary: no input may panic, and every success must be consistent.
    #[test]
    fn a_million_random_byte_strings_never_panic_in_any_mode() {
        // Bytes that steer the decoder into its deeper paths more often than uniform noise does.
        const INTERESTING: [u8; 32] = [
            0x66, 0x67, 0xf0, 0xf2, 0xf3, 0x26, 0x3e, 0x65, 0x40, 0x44, 0x48, 0x4c, 0x4f, 0x0f, 0x88, 0x89, 0x8a, 0x8b,
            0xc6, 0xc7, 0xa0, 0xa1, 0xa2, 0xa3, 0x63, 0xb6, 0xbf, 0x04, 0x05, 0x25, 0x84, 0x44,
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut ok_count = 0u32;
        let mut buf = [0u8; 20];
        for _ in 0..1_000_000 {
            let len = (next() % 21) as usize;
            let biased = next() & 1 == 0;
            for b in buf.iter_mut().take(len) {
                let r = next();
                *b = if biased && r & 1 == 0 { INTERESTING[((r >> 8) % 32) as usize] } else { (r >> 16) as u8 };
            }
            let bytes = &buf[..len];
            for mode in [Real16, Protected16, Protected32, Long64] {
                if let Ok(d) = decode(bytes, mode) {
                    ok_count += 1;
                    let n = usize::from(d.len);
                    assert!((1..=15).contains(&n) && n <= bytes.len(), "{bytes:02x?} {mode:?} -> {d:?}");
                    // The decoder looks at exactly the instruction's bytes.
                    assert_eq!(decode(&bytes[..n], mode), Ok(d));
                    assert_eq!(decode(&bytes[..n - 1], mode), Err(DecodeError::Truncated));
                    let sizes = match d.op {
                        Operation::Load { size, dest_size, .. } => [size, dest_size],
                        Operation::Store { size, .. } | Operation::StoreImm { size, .. } => [size, size],
                    };
                    assert!(sizes.iter().all(|s| matches!(s, 1 | 2 | 4 | 8)), "{d:?}");
                }
            }
        }
        // The bias must actually exercise the success paths.
        assert!(ok_count > 10_000, "only {ok_count} successful decodes");
    }
}
