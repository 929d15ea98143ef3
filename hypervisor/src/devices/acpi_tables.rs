//! Builds a domain's ACPI tables (ACPI 6.x, chapter 5 "ACPI Software Programming Model") into
//! one byte image that the caller copies to guest-physical memory at `base_gpa`. It touches no
//! hardware and no guest memory: every address it writes into a table is computed from
//! `base_gpa`, so the image is only valid at that address.
//!
//! Layout of the image, each table aligned on 16 bytes of guest-physical address (the FACS on
//! 64, as "Firmware ACPI Control Structure (FACS)" requires):
//! - offset 0: the RSDP (ACPI 2.0+ form, 36 bytes, revision 2) pointing at the XSDT. The OS
//!   finds it by scanning the BIOS area, so **the caller must also copy the 36 bytes of
//!   [`AcpiImage::rsdp`] to [`BIOS_RSDP_ADDRESS`] (0xE0000)**, which lies on the 16-byte
//!   boundary the "Finding the RSDP on IA-PC Systems" search needs. The copy points at the
//!   same XSDT, so both are valid. `base_gpa` itself should be 16-byte aligned for the same
//!   reason.
//! - the XSDT listing the FADT and the MADT (no RSDT: RsdtAddress is 0, which every ACPI 2.0+
//!   OS accepts because it uses the XSDT when the RSDP revision is 2 or more).
//! - the FADT (revision 6, minor 0: the ACPI 6.0 layout, 276 bytes) describing the fixed
//!   hardware of `acpi_pm` (PM1a event and control blocks, PM timer, reset register at 0xCF9).
//!   HW_REDUCED_ACPI is clear, so the platform is a classic PC; there is no SMI_CMD port,
//!   which tells the OS the machine is permanently in ACPI mode (SCI_EN always reads 1).
//! - the MADT (revision 4, ACPI 6.0 Errata A): local APICs, one I/O APIC, the ISA overrides
//!   QEMU's PC machines use, and LINT1 as NMI.
//! - the DSDT: a minimal AML body with only `\_S5_`, so that the OS can power off.
//! - the FACS (64 bytes, version 2). The brief did not ask for it, but "FIRMWARE_CTRL" in the
//!   FADT section says only hardware-reduced platforms may omit it, and OSes read the global
//!   lock and waking vector from it.
//!
//! Limits, chosen so that [`build`] never panics: the vCPU count is clamped to 1..=255, since
//! Processor Local APIC structures carry 8-bit IDs and APIC ID 0xFF is the broadcast ID. A
//! `base_gpa` so high that a table address wraps is the caller's bug; addresses wrap rather
//! than overflow.

use alloc::vec;
use alloc::vec::Vec;

/// The SLP_TYP value the DSDT's `\_S5` package announces for PM1a and PM1b; the PM1a control
/// model (`acpi_pm::S5_SLP_TYP`) must treat SLP_EN with this type as power-off.
pub const S5_SLP_TYP: u8 = 5;
/// Where the caller must copy the RSDP as well: the start of the BIOS read-only area that
/// "Finding the RSDP on IA-PC Systems" says the OS searches (0xE0000..=0xFFFFF).
pub const BIOS_RSDP_ADDRESS: u64 = 0xE0000;
/// Length of the ACPI 2.0+ RSDP.
pub const RSDP_LENGTH: usize = 36;
/// Length of the common header of every table except the RSDP and the FACS
/// ("System Description Table Header").
pub const HEADER_LENGTH: usize = 36;
/// Most vCPUs the MADT can describe with xAPIC entries (APIC IDs 0..=254).
pub const MAX_VCPUS: u32 = 255;

pub const OEM_ID: [u8; 6] = *b"FERRO ";
pub const OEM_TABLE_ID: [u8; 8] = *b"FERROVSR";
pub const OEM_REVISION: u32 = 1;
pub const CREATOR_ID: [u8; 4] = *b"FRVS";
pub const CREATOR_REVISION: u32 = 1;

/// Table alignment in guest-physical memory. The spec only asks for natural alignment of the
/// RSDP (16) and the FACS (64); 16 everywhere keeps each table's 64-bit fields aligned.
const TABLE_ALIGN: u64 = 16;
const FACS_ALIGN: u64 = 64;
const FACS_LENGTH: usize = 64;

/// Field offsets of the RSDP ("Root System Description Pointer (RSDP) Structure").
pub mod rsdp {
    pub const SIGNATURE: [u8; 8] = *b"RSD PTR ";
    /// Checksum of the first 20 bytes (the ACPI 1.0 structure).
    pub const CHECKSUM: usize = 8;
    pub const OEMID: usize = 9;
    pub const REVISION: usize = 15;
    pub const RSDT_ADDRESS: usize = 16;
    pub const LENGTH: usize = 20;
    pub const XSDT_ADDRESS: usize = 24;
    /// Checksum of the whole 36-byte structure.
    pub const EXTENDED_CHECKSUM: usize = 32;
    /// Revision 2 means the ACPI 2.0+ structure with Length and XsdtAddress.
    pub const REVISION_2: u8 = 2;
    /// Bytes covered by the first checksum.
    pub const V1_LENGTH: usize = 20;
}

/// Offsets of the System Description Table Header fields.
pub mod header {
    pub const SIGNATURE: usize = 0;
    pub const LENGTH: usize = 4;
    pub const REVISION: usize = 8;
    pub const CHECKSUM: usize = 9;
    pub const OEMID: usize = 10;
    pub const OEM_TABLE_ID: usize = 16;
    pub const OEM_REVISION: usize = 24;
    pub const CREATOR_ID: usize = 28;
    pub const CREATOR_REVISION: usize = 32;
}

/// FADT field offsets ("Fixed ACPI Description Table (FADT)", ACPI 6.0 table 5-34) and the
/// flag bits this platform uses.
pub mod fadt {
    pub const LENGTH: usize = 276;
    /// Major version 6 with minor version 0: the ACPI 6.0 layout, which added the Hypervisor
    /// Vendor Identity and made the table 276 bytes.
    pub const REVISION: u8 = 6;
    pub const MINOR_REVISION: u8 = 0;

    pub const FIRMWARE_CTRL: usize = 36;
    pub const DSDT: usize = 40;
    pub const PREFERRED_PM_PROFILE: usize = 45;
    pub const SCI_INT: usize = 46;
    pub const SMI_CMD: usize = 48;
    pub const PM1A_EVT_BLK: usize = 56;
    pub const PM1B_EVT_BLK: usize = 60;
    pub const PM1A_CNT_BLK: usize = 64;
    pub const PM1B_CNT_BLK: usize = 68;
    pub const PM2_CNT_BLK: usize = 72;
    pub const PM_TMR_BLK: usize = 76;
    pub const GPE0_BLK: usize = 80;
    pub const PM1_EVT_LEN: usize = 88;
    pub const PM1_CNT_LEN: usize = 89;
    pub const PM_TMR_LEN: usize = 91;
    pub const GPE0_BLK_LEN: usize = 92;
    pub const P_LVL2_LAT: usize = 96;
    pub const P_LVL3_LAT: usize = 98;
    pub const CENTURY: usize = 108;
    pub const IAPC_BOOT_ARCH: usize = 109;
    pub const FLAGS: usize = 112;
    pub const RESET_REG: usize = 116;
    pub const RESET_VALUE: usize = 128;
    pub const MINOR_VERSION: usize = 131;
    pub const X_FIRMWARE_CTRL: usize = 132;
    pub const X_DSDT: usize = 140;
    pub const X_PM1A_EVT_BLK: usize = 148;
    pub const X_PM1A_CNT_BLK: usize = 172;
    pub const X_PM_TMR_BLK: usize = 208;
    pub const HYPERVISOR_VENDOR_IDENTITY: usize = 268;

    /// PM1_EVT_LEN: PM1_STS and PM1_EN, 16 bits each.
    pub const PM1_EVT_BYTES: u8 = 4;
    /// PM1_CNT_LEN.
    pub const PM1_CNT_BYTES: u8 = 2;
    /// PM_TMR_LEN: "If the PM Timer is supported, this field's value must be 4".
    pub const PM_TMR_BYTES: u8 = 4;
    /// P_LVL2_LAT above 100 and P_LVL3_LAT above 1000 mean "C2/C3 not supported"; QEMU uses
    /// 0xFFF for both.
    pub const NO_C2_C3_LATENCY: u16 = 0x0FFF;
    /// RTC CMOS RAM index of the century (the value every PC uses).
    pub const CENTURY_CMOS_INDEX: u8 = 0x32;

    /// IAPC_BOOT_ARCH flags ("IA-PC Boot Architecture Flags").
    pub const LEGACY_DEVICES: u16 = 1 << 0;
    pub const IAPC_8042: u16 = 1 << 1;

    /// Fixed feature flags ("Fixed ACPI Description Table Fixed Feature Flags").
    /// WBINVD works: required of every ACPI 2.0+ platform.
    pub const WBINVD: u32 = 1 << 0;
    /// C1 (HLT) is supported on all processors.
    pub const PROC_C1: u32 = 1 << 2;
    /// 1: no fixed-feature power button. Left clear: the PM model has PWRBTN_STS/EN
    /// (Domain0's `shutdown` presses it), and an OS only installs its handler for a
    /// fixed button the FADT admits to (Linux's `button` driver: "Power Button [PWRF]").
    pub const PWR_BUTTON: u32 = 1 << 4;
    /// 1: no fixed-feature sleep button.
    pub const SLP_BUTTON: u32 = 1 << 5;
    /// 1: RTC wake status is not in the fixed register space.
    pub const FIX_RTC: u32 = 1 << 6;
    /// Clear: the PM timer is 24 bits wide.
    pub const TMR_VAL_EXT: u32 = 1 << 8;
    pub const RESET_REG_SUP: u32 = 1 << 10;
    /// Clear: this is not a hardware-reduced platform.
    pub const HW_REDUCED_ACPI: u32 = 1 << 20;

    /// The Hypervisor Vendor Identity field ("Version information should NOT be included").
    pub const HYPERVISOR_VENDOR: [u8; 8] = *b"FERROVSR";
}

/// MADT constants ("Multiple APIC Description Table (MADT)").
pub mod madt {
    /// Revision 4 is ACPI 6.0 Errata A's MADT. Revision 5 (ACPI 6.3) would make Linux honour
    /// the Online Capable bit, which nothing here needs.
    pub const REVISION: u8 = 4;
    pub const LOCAL_APIC_ADDRESS: usize = 36;
    pub const FLAGS: usize = 40;
    /// Offset of the first Interrupt Controller Structure.
    pub const ENTRIES: usize = 44;
    /// The platform also has dual 8259s, which the OS must mask before using the APICs.
    pub const PCAT_COMPAT: u32 = 1 << 0;

    pub const TYPE_LOCAL_APIC: u8 = 0;
    pub const TYPE_IO_APIC: u8 = 1;
    pub const TYPE_INTERRUPT_SOURCE_OVERRIDE: u8 = 2;
    pub const TYPE_LOCAL_APIC_NMI: u8 = 4;
    pub const LOCAL_APIC_LENGTH: u8 = 8;
    pub const IO_APIC_LENGTH: u8 = 12;
    pub const INTERRUPT_SOURCE_OVERRIDE_LENGTH: u8 = 10;
    pub const LOCAL_APIC_NMI_LENGTH: u8 = 6;

    /// Processor Local APIC flag: the processor is usable.
    pub const ENABLED: u32 = 1 << 0;
    /// MPS INTI flags ("MPS INTI Flags"): polarity in bits 1:0, trigger mode in bits 3:2.
    pub const ACTIVE_HIGH: u16 = 0b01;
    pub const EDGE: u16 = 0b01 << 2;
    pub const LEVEL: u16 = 0b11 << 2;
    /// Bus 0 is ISA for Interrupt Source Overrides.
    pub const BUS_ISA: u8 = 0;
    /// ACPI Processor UID meaning "all processors" in a Local APIC NMI structure.
    pub const ALL_PROCESSORS: u8 = 0xFF;
}

/// The DSDT's AML body: `Name(_S5_, Package() { 0x05, 0x05, 0, 0 })` in the root scope
/// (ACPI 6.x, "ACPI Machine Language (AML) Specification" and "\_Sx (System States)").
///
/// - 0x08 NameOp, then the NameSeg "_S5_" (4 bytes; a DSDT's definition block is in the root
///   scope, so this is `\_S5_`).
/// - 0x12 PackageOp, then PkgLength 0x08: one byte (bits 7:6 = 0) whose value counts itself
///   and everything after it in the package: PkgLength, NumElements and the 6 element bytes.
/// - 0x04 NumElements.
/// - 0x0A BytePrefix 0x05: SLP_TYPa, written to PM1a_CNT.SLP_TYP.
/// - 0x0A BytePrefix 0x05: SLP_TYPb (there is no PM1b block, but the package must have it).
/// - 0x00 ZeroOp twice: the reserved elements, encoded as iasl does for a literal 0.
pub const DSDT_AML: [u8; 14] =
    [0x08, b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0A, S5_SLP_TYP, 0x0A, S5_SLP_TYP, 0x00, 0x00];

/// What the tables describe. The field comments give the values the rest of the platform
/// uses (`acpi_pm`, the I/O APIC and local APIC models).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcpiConfig {
    pub vcpus: u32,
    pub ioapic_id: u8,
    pub ioapic_address: u32,
    pub lapic_address: u32,
    /// PM1a event block (PM1_STS at +0, PM1_EN at +2); 0x600.
    pub pm1a_event_port: u16,
    /// PM1a control block; 0x604.
    pub pm1a_control_port: u16,
    /// PM timer; 0x608.
    pub pm_timer_port: u16,
    /// RESET_REG, in system I/O space; 0xCF9.
    pub reset_port: u16,
    /// RESET_VALUE; 0x06.
    pub reset_value: u8,
    /// SCI_INT: the ISA IRQ of the SCI; 9. The MADT's second Interrupt Source Override maps
    /// this IRQ to the same-numbered GSI as level-triggered, active high (the SCI is a
    /// shareable level interrupt); it should be a legacy IRQ other than 0.
    pub sci_irq: u8,
}

impl Default for AcpiConfig {
    /// One vCPU and the PC addresses and ports `acpi_pm` implements; I/O APIC ID 0 as QEMU.
    fn default() -> Self {
        AcpiConfig {
            vcpus: 1,
            ioapic_id: 0,
            ioapic_address: 0xFEC0_0000,
            lapic_address: 0xFEE0_0000,
            pm1a_event_port: 0x600,
            pm1a_control_port: 0x604,
            pm_timer_port: 0x608,
            reset_port: 0xCF9,
            reset_value: 0x06,
            sci_irq: 9,
        }
    }
}

/// The built tables: `bytes` belongs at the `base_gpa` given to [`build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiImage {
    pub bytes: Vec<u8>,
    /// Offset of the RSDP in `bytes`; always 0.
    pub rsdp_offset: usize,
}

impl AcpiImage {
    /// The 36-byte RSDP, which the caller also copies to [`BIOS_RSDP_ADDRESS`].
    pub fn rsdp(&self) -> &[u8] {
        self.bytes.get(self.rsdp_offset..self.rsdp_offset.saturating_add(RSDP_LENGTH)).unwrap_or(&[])
    }
}

/// Offsets of each table in the image.
struct Layout {
    xsdt: usize,
    fadt: usize,
    madt: usize,
    madt_len: usize,
    dsdt: usize,
    facs: usize,
    total: usize,
}

const XSDT_ENTRIES: usize = 2;
const XSDT_LENGTH: usize = HEADER_LENGTH + 8 * XSDT_ENTRIES;
const DSDT_LENGTH: usize = HEADER_LENGTH + DSDT_AML.len();
/// The four interrupt controller structures besides the per-CPU ones: the I/O APIC, two
/// Interrupt Source Overrides and the Local APIC NMI.
const MADT_FIXED_ENTRIES_LENGTH: usize = madt::IO_APIC_LENGTH as usize
    + 2 * madt::INTERRUPT_SOURCE_OVERRIDE_LENGTH as usize
    + madt::LOCAL_APIC_NMI_LENGTH as usize;

/// Builds the tables for `config`, to be copied to guest-physical address `base_gpa`.
pub fn build(config: &AcpiConfig, base_gpa: u64) -> AcpiImage {
    let cpus = config.vcpus.clamp(1, MAX_VCPUS) as usize;
    let layout = layout(base_gpa, cpus);
    let mut out = Out { bytes: vec![0; layout.total] };
    let gpa = |offset: usize| base_gpa.wrapping_add(offset as u64);

    write_xsdt(&mut out, layout.xsdt, &[gpa(layout.fadt), gpa(layout.madt)]);
    write_fadt(&mut out, layout.fadt, config, gpa(layout.dsdt), gpa(layout.facs));
    write_madt(&mut out, layout.madt, layout.madt_len, config, cpus);
    write_dsdt(&mut out, layout.dsdt);
    write_facs(&mut out, layout.facs);
    // The RSDP last, although nothing it checksums depends on the other tables' contents.
    write_rsdp(&mut out, 0, gpa(layout.xsdt));

    AcpiImage { bytes: out.bytes, rsdp_offset: 0 }
}

/// How long [`build`]'s image for `config` at `base_gpa` is, without building it.
pub fn image_len(config: &AcpiConfig, base_gpa: u64) -> usize {
    layout(base_gpa, config.vcpus.clamp(1, MAX_VCPUS) as usize).total
}

fn layout(base_gpa: u64, cpus: usize) -> Layout {
    let xsdt = align(base_gpa, RSDP_LENGTH, TABLE_ALIGN);
    let fadt = align(base_gpa, xsdt + XSDT_LENGTH, TABLE_ALIGN);
    let madt = align(base_gpa, fadt + fadt::LENGTH, TABLE_ALIGN);
    let madt_len = madt::ENTRIES + cpus * madt::LOCAL_APIC_LENGTH as usize + MADT_FIXED_ENTRIES_LENGTH;
    let dsdt = align(base_gpa, madt + madt_len, TABLE_ALIGN);
    let facs = align(base_gpa, dsdt + DSDT_LENGTH, FACS_ALIGN);
    Layout { xsdt, fadt, madt, madt_len, dsdt, facs, total: facs + FACS_LENGTH }
}

/// The smallest offset >= `offset` whose guest-physical address is a multiple of `align`
/// (a power of two). With cpus <= 255 every offset stays below 4 KiB, so nothing overflows.
fn align(base_gpa: u64, offset: usize, align: u64) -> usize {
    let misalignment = base_gpa.wrapping_add(offset as u64) & (align - 1);
    if misalignment == 0 { offset } else { offset + (align - misalignment) as usize }
}

/// A little-endian writer over the pre-sized image. Writes outside the image are dropped
/// rather than panicking; the layout guarantees there are none, and the tests check every
/// table's length and checksum.
struct Out {
    bytes: Vec<u8>,
}

impl Out {
    fn put(&mut self, offset: usize, data: &[u8]) {
        if let Some(dst) = self.bytes.get_mut(offset..offset.saturating_add(data.len())) {
            dst.copy_from_slice(data);
        }
    }

    fn u8(&mut self, offset: usize, v: u8) {
        self.put(offset, &[v]);
    }

    fn u16(&mut self, offset: usize, v: u16) {
        self.put(offset, &v.to_le_bytes());
    }

    fn u32(&mut self, offset: usize, v: u32) {
        self.put(offset, &v.to_le_bytes());
    }

    fn u64(&mut self, offset: usize, v: u64) {
        self.put(offset, &v.to_le_bytes());
    }

    /// Sets the byte at `at` so that `len` bytes from `start` sum to zero (mod 256), the rule
    /// every ACPI checksum follows.
    fn checksum(&mut self, start: usize, len: usize, at: usize) {
        self.u8(at, 0);
        let sum = self
            .bytes
            .get(start..start.saturating_add(len))
            .unwrap_or(&[])
            .iter()
            .fold(0u8, |acc, b| acc.wrapping_add(*b));
        self.u8(at, 0u8.wrapping_sub(sum));
    }

    /// The System Description Table Header, without its checksum.
    fn header(&mut self, offset: usize, signature: &[u8; 4], length: usize, revision: u8) {
        self.put(offset + header::SIGNATURE, signature);
        self.u32(offset + header::LENGTH, length as u32);
        self.u8(offset + header::REVISION, revision);
        self.put(offset + header::OEMID, &OEM_ID);
        self.put(offset + header::OEM_TABLE_ID, &OEM_TABLE_ID);
        self.u32(offset + header::OEM_REVISION, OEM_REVISION);
        self.put(offset + header::CREATOR_ID, &CREATOR_ID);
        self.u32(offset + header::CREATOR_REVISION, CREATOR_REVISION);
    }

    /// A Generic Address Structure ("Generic Address Structure (GAS)") in system I/O space.
    fn gas_io(&mut self, offset: usize, port: u16, bit_width: u8, access_size: u8) {
        const SYSTEM_IO: u8 = 1;
        self.u8(offset, SYSTEM_IO);
        self.u8(offset + 1, bit_width);
        self.u8(offset + 2, 0);
        self.u8(offset + 3, access_size);
        self.u64(offset + 4, u64::from(port));
    }
}

fn write_rsdp(out: &mut Out, at: usize, xsdt_gpa: u64) {
    out.put(at, &rsdp::SIGNATURE);
    out.put(at + rsdp::OEMID, &OEM_ID);
    out.u8(at + rsdp::REVISION, rsdp::REVISION_2);
    // No RSDT: ACPI 2.0+ OSes use XsdtAddress when the revision is 2 or more.
    out.u32(at + rsdp::RSDT_ADDRESS, 0);
    out.u32(at + rsdp::LENGTH, RSDP_LENGTH as u32);
    out.u64(at + rsdp::XSDT_ADDRESS, xsdt_gpa);
    // The first checksum covers only the ACPI 1.0 part, so it must be computed first: the
    // extended checksum covers it too.
    out.checksum(at, rsdp::V1_LENGTH, at + rsdp::CHECKSUM);
    out.checksum(at, RSDP_LENGTH, at + rsdp::EXTENDED_CHECKSUM);
}

fn write_xsdt(out: &mut Out, at: usize, entries: &[u64]) {
    out.header(at, b"XSDT", XSDT_LENGTH, 1);
    for (i, address) in entries.iter().enumerate() {
        out.u64(at + HEADER_LENGTH + 8 * i, *address);
    }
    out.checksum(at, XSDT_LENGTH, at + header::CHECKSUM);
}

fn write_fadt(out: &mut Out, at: usize, c: &AcpiConfig, dsdt_gpa: u64, facs_gpa: u64) {
    out.header(at, b"FACP", fadt::LENGTH, fadt::REVISION);
    // FIRMWARE_CTRL and X_FIRMWARE_CTRL are exclusive: the spec says X_FIRMWARE_CTRL must be
    // zero when FIRMWARE_CTRL is not, and the 32-bit field can only hold a low address.
    match u32::try_from(facs_gpa) {
        Ok(low) => out.u32(at + fadt::FIRMWARE_CTRL, low),
        Err(_) => out.u64(at + fadt::X_FIRMWARE_CTRL, facs_gpa),
    }
    // DSDT may duplicate X_DSDT (OSPM ignores it when X_DSDT is usable); Linux only warns when
    // both are set and differ, so fill it whenever the address fits.
    out.u32(at + fadt::DSDT, u32::try_from(dsdt_gpa).unwrap_or(0));
    out.u64(at + fadt::X_DSDT, dsdt_gpa);
    // Offset 44 (the ACPI 1.0 INT_MODEL) and Preferred_PM_Profile (0, Unspecified) stay 0.
    out.u16(at + fadt::SCI_INT, u16::from(c.sci_irq));
    // SMI_CMD, ACPI_ENABLE and ACPI_DISABLE stay 0: no SMM, the platform is always in ACPI
    // mode.
    out.u32(at + fadt::PM1A_EVT_BLK, u32::from(c.pm1a_event_port));
    out.u32(at + fadt::PM1A_CNT_BLK, u32::from(c.pm1a_control_port));
    out.u32(at + fadt::PM_TMR_BLK, u32::from(c.pm_timer_port));
    // PM1b, PM2 and both GPE blocks are absent (address and length 0).
    out.u8(at + fadt::PM1_EVT_LEN, fadt::PM1_EVT_BYTES);
    out.u8(at + fadt::PM1_CNT_LEN, fadt::PM1_CNT_BYTES);
    out.u8(at + fadt::PM_TMR_LEN, fadt::PM_TMR_BYTES);
    out.u16(at + fadt::P_LVL2_LAT, fadt::NO_C2_C3_LATENCY);
    out.u16(at + fadt::P_LVL3_LAT, fadt::NO_C2_C3_LATENCY);
    // FLUSH_SIZE/STRIDE are ignored with WBINVD set; no duty cycle, no RTC alarm fields.
    out.u8(at + fadt::CENTURY, fadt::CENTURY_CMOS_INDEX);
    out.u16(at + fadt::IAPC_BOOT_ARCH, fadt::LEGACY_DEVICES | fadt::IAPC_8042);
    let flags = fadt::WBINVD | fadt::PROC_C1 | fadt::SLP_BUTTON | fadt::FIX_RTC | fadt::RESET_REG_SUP;
    out.u32(at + fadt::FLAGS, flags);
    // "The register bit width must be 8 and the bit offset must be 0"; access size 1 (byte).
    out.gas_io(at + fadt::RESET_REG, c.reset_port, 8, 1);
    out.u8(at + fadt::RESET_VALUE, c.reset_value);
    out.u8(at + fadt::MINOR_VERSION, fadt::MINOR_REVISION);
    // The X_ blocks repeat the 32-bit ones so that an OS preferring them sees the same ports;
    // access size 0 (undefined: use the natural width) as QEMU builds them.
    out.gas_io(at + fadt::X_PM1A_EVT_BLK, c.pm1a_event_port, fadt::PM1_EVT_BYTES * 8, 0);
    out.gas_io(at + fadt::X_PM1A_CNT_BLK, c.pm1a_control_port, fadt::PM1_CNT_BYTES * 8, 0);
    out.gas_io(at + fadt::X_PM_TMR_BLK, c.pm_timer_port, fadt::PM_TMR_BYTES * 8, 0);
    // SLEEP_CONTROL_REG and SLEEP_STATUS_REG are for hardware-reduced platforms only.
    out.put(at + fadt::HYPERVISOR_VENDOR_IDENTITY, &fadt::HYPERVISOR_VENDOR);
    out.checksum(at, fadt::LENGTH, at + header::CHECKSUM);
}

fn write_madt(out: &mut Out, at: usize, len: usize, c: &AcpiConfig, cpus: usize) {
    out.header(at, b"APIC", len, madt::REVISION);
    out.u32(at + madt::LOCAL_APIC_ADDRESS, c.lapic_address);
    out.u32(at + madt::FLAGS, madt::PCAT_COMPAT);
    let mut p = at + madt::ENTRIES;
    // Processor Local APIC: ACPI Processor UID and APIC ID are both the vCPU index, which
    // the DSDT would use if it declared processor objects (it does not need to).
    for i in 0..cpus {
        let id = u8::try_from(i).unwrap_or(u8::MAX);
        out.put(p, &[madt::TYPE_LOCAL_APIC, madt::LOCAL_APIC_LENGTH, id, id]);
        out.u32(p + 4, madt::ENABLED);
        p += madt::LOCAL_APIC_LENGTH as usize;
    }
    // I/O APIC: ID, reserved, address, Global System Interrupt Base 0 (pins 0..=23 are
    // GSIs 0..=23).
    out.put(p, &[madt::TYPE_IO_APIC, madt::IO_APIC_LENGTH, c.ioapic_id, 0]);
    out.u32(p + 4, c.ioapic_address);
    out.u32(p + 8, 0);
    p += madt::IO_APIC_LENGTH as usize;
    // Interrupt Source Overrides as QEMU's PC machines have them: the PIT's IRQ0 arrives on
    // I/O APIC pin 2, and the SCI (IRQ9) is a level-triggered, active-high PCI-style line
    // that would otherwise default to ISA's edge/high.
    for (irq, gsi, flags) in [
        (0u8, 2u32, madt::ACTIVE_HIGH | madt::EDGE),
        (c.sci_irq, u32::from(c.sci_irq), madt::ACTIVE_HIGH | madt::LEVEL),
    ] {
        out.put(p, &[madt::TYPE_INTERRUPT_SOURCE_OVERRIDE, madt::INTERRUPT_SOURCE_OVERRIDE_LENGTH, madt::BUS_ISA, irq]);
        out.u32(p + 4, gsi);
        out.u16(p + 8, flags);
        p += madt::INTERRUPT_SOURCE_OVERRIDE_LENGTH as usize;
    }
    // Local APIC NMI: LINT1 of every processor is the NMI input, as on a PC; flags 0
    // ("conforms to the bus"), as QEMU.
    out.put(p, &[madt::TYPE_LOCAL_APIC_NMI, madt::LOCAL_APIC_NMI_LENGTH, madt::ALL_PROCESSORS]);
    out.u16(p + 3, 0);
    out.u8(p + 5, 1);
    out.checksum(at, len, at + header::CHECKSUM);
}

fn write_dsdt(out: &mut Out, at: usize) {
    // Revision 2: integers in the DSDT's AML are 64 bits wide.
    out.header(at, b"DSDT", DSDT_LENGTH, 2);
    out.put(at + HEADER_LENGTH, &DSDT_AML);
    out.checksum(at, DSDT_LENGTH, at + header::CHECKSUM);
}

/// The FACS has no checksum and no standard header ("Firmware ACPI Control Structure").
/// Hardware signature, waking vectors, global lock and flags are all 0: no S4 hardware
/// signature, no S3/S4 resume, lock free, no S4BIOS and no 64-bit wake.
fn write_facs(out: &mut Out, at: usize) {
    out.put(at, b"FACS");
    out.u32(at + 4, FACS_LENGTH as u32);
    // Version 2 is the ACPI 4.0+ layout.
    out.u8(at + 32, 2);
}

#[cfg(test)]
mod tests {

    #[test]
    fn image_len_is_the_built_length() {
        for vcpus in [1, 2, 3, 8, 64, 255, 1000] {
            for base in [0xE0000u64, 0xE0040, 0xE0010, 0xDF000 + 24] {
                let config = AcpiConfig { vcpus, ..AcpiConfig::default() };
                assert_eq!(image_len(&config, base), build(&config, base).bytes.len(), "{vcpus} vCPUs at {base:#x}");
            }
        }
    }

    use super::*;
    use std::string::String;
    use std::vec::Vec;

    const BASE: u64 = 0x000F_0000;

    fn pc(vcpus: u32) -> AcpiConfig {
        AcpiConfig { vcpus, ..AcpiConfig::default() }
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    /// A table found by following pointers from the RSDP, as an OS would.
    struct Table<'a> {
        gpa: u64,
        bytes: &'a [u8],
    }

    impl Table<'_> {
        fn signature(&self) -> String {
            String::from_utf8(self.bytes[0..4].to_vec()).unwrap()
        }
    }

    /// A minimal OS-side parser: a table at `gpa` must lie inside the image, carry a length
    /// that fits, and sum to zero.
    fn table_at(image: &AcpiImage, base: u64, gpa: u64) -> Table<'_> {
        let off = usize::try_from(gpa.checked_sub(base).expect("table below base")).unwrap();
        let len = u32_at(&image.bytes, off + 4) as usize;
        assert!(len >= HEADER_LENGTH);
        let bytes = &image.bytes[off..off + len];
        assert_eq!(sum(bytes), 0, "checksum of table at {gpa:#x}");
        Table { gpa, bytes }
    }

    struct Parsed<'a> {
        xsdt: Table<'a>,
        fadt: Table<'a>,
        madt: Table<'a>,
        dsdt: Table<'a>,
        facs: &'a [u8],
    }

    fn parse(image: &AcpiImage, base: u64) -> Parsed<'_> {
        let rsdp = image.rsdp();
        assert_eq!(rsdp.len(), 36);
        assert_eq!(&rsdp[0..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[0..20]), 0);
        assert_eq!(sum(rsdp), 0);
        assert_eq!(rsdp[15], 2);
        let xsdt = table_at(image, base, u64_at(rsdp, 24));
        assert_eq!(xsdt.signature(), "XSDT");
        let entries = (xsdt.bytes.len() - 36) / 8;
        let mut fadt = None;
        let mut madt = None;
        for i in 0..entries {
            let t = table_at(image, base, u64_at(xsdt.bytes, 36 + 8 * i));
            match t.signature().as_str() {
                "FACP" => fadt = Some(t),
                "APIC" => madt = Some(t),
                other => panic!("unexpected table {other}"),
            }
        }
        let fadt = fadt.expect("FADT in XSDT");
        let dsdt = table_at(image, base, u64_at(fadt.bytes, 140));
        assert_eq!(dsdt.signature(), "DSDT");
        // X_FIRMWARE_CTRL when set, else FIRMWARE_CTRL (they are exclusive).
        let facs_gpa = match u64_at(fadt.bytes, 132) {
            0 => u64::from(u32_at(fadt.bytes, 36)),
            x => x,
        };
        let facs_off = usize::try_from(facs_gpa.checked_sub(base).expect("FACS below base")).unwrap();
        let facs = &image.bytes[facs_off..facs_off + 64];
        Parsed { xsdt, fadt, madt: madt.expect("MADT in XSDT"), dsdt, facs }
    }

    /// MADT interrupt controller structures as (type, body) pairs.
    fn madt_entries(madt: &[u8]) -> Vec<(u8, &[u8])> {
        let mut entries = Vec::new();
        let mut p = 44;
        while p < madt.len() {
            let len = madt[p + 1] as usize;
            assert!(len >= 2 && p + len <= madt.len(), "entry at {p} overruns the MADT");
            entries.push((madt[p], &madt[p..p + len]));
            p += len;
        }
        assert_eq!(p, madt.len());
        entries
    }

    #[test]
    fn every_table_sums_to_zero_and_both_rsdp_checksums_hold() {
        for vcpus in [1, 2, 7, 64, 255] {
            let image = build(&pc(vcpus), BASE);
            let t = parse(&image, BASE);
            for table in [&t.xsdt, &t.fadt, &t.madt, &t.dsdt] {
                assert_eq!(sum(table.bytes), 0, "{}", table.signature());
            }
        }
    }

    #[test]
    fn rsdp_is_at_offset_0_with_revision_2_oem_id_and_the_xsdt_address() {
        let image = build(&pc(1), BASE);
        assert_eq!(image.rsdp_offset, 0);
        let r = image.rsdp();
        assert_eq!(&r[0..8], b"RSD PTR ");
        assert_eq!(&r[9..15], b"FERRO ");
        assert_eq!(r[15], 2);
        assert_eq!(u32_at(r, 16), 0, "no RSDT");
        assert_eq!(u32_at(r, 20), 36);
        let xsdt = u64_at(r, 24);
        assert_eq!(xsdt % 16, 0);
        assert_eq!(&image.bytes[(xsdt - BASE) as usize..][..4], b"XSDT");
    }

    #[test]
    fn the_rsdp_copied_to_the_bios_area_still_points_at_the_tables() {
        let image = build(&pc(2), 0x7FF0_0000);
        let copy: Vec<u8> = image.rsdp().to_vec();
        assert_eq!(BIOS_RSDP_ADDRESS % 16, 0);
        assert_eq!(sum(&copy), 0);
        assert_eq!(u64_at(&copy, 24), 0x7FF0_0000 + 48);
    }

    #[test]
    fn every_header_carries_the_oem_and_creator_ids_and_the_spec_revisions() {
        let image = build(&pc(4), BASE);
        let t = parse(&image, BASE);
        for (table, sig, rev, len) in [
            (&t.xsdt, "XSDT", 1, 52),
            (&t.fadt, "FACP", 6, 276),
            (&t.madt, "APIC", 4, 44 + 4 * 8 + 12 + 2 * 10 + 6),
            (&t.dsdt, "DSDT", 2, 50),
        ] {
            let b = table.bytes;
            assert_eq!(table.signature(), sig);
            assert_eq!(u32_at(b, 4) as usize, len, "{sig} length");
            assert_eq!(b[8], rev, "{sig} revision");
            assert_eq!(&b[10..16], b"FERRO ");
            assert_eq!(&b[16..24], b"FERROVSR");
            assert_eq!(u32_at(b, 24), 1);
            assert_eq!(&b[28..32], b"FRVS");
            assert_eq!(u32_at(b, 32), 1);
        }
    }

    #[test]
    fn xsdt_lists_the_fadt_and_the_madt_by_guest_physical_address() {
        let image = build(&pc(1), BASE);
        let t = parse(&image, BASE);
        assert_eq!(t.xsdt.bytes.len(), 36 + 16);
        assert_eq!(u64_at(t.xsdt.bytes, 36), t.fadt.gpa);
        assert_eq!(u64_at(t.xsdt.bytes, 44), t.madt.gpa);
        for gpa in [t.xsdt.gpa, t.fadt.gpa, t.madt.gpa, t.dsdt.gpa] {
            assert_eq!(gpa % 16, 0);
        }
    }

    #[test]
    fn fadt_fields_sit_at_the_acpi_6_offsets() {
        let config = AcpiConfig {
            vcpus: 1,
            ioapic_id: 0,
            ioapic_address: 0xFEC0_0000,
            lapic_address: 0xFEE0_0000,
            pm1a_event_port: 0x600,
            pm1a_control_port: 0x604,
            pm_timer_port: 0x608,
            reset_port: 0xCF9,
            reset_value: 0x06,
            sci_irq: 9,
        };
        let image = build(&config, BASE);
        let t = parse(&image, BASE);
        let f = t.fadt.bytes;
        assert_eq!(f.len(), 276);
        assert_eq!(u32_at(f, 40) as u64, t.dsdt.gpa, "DSDT");
        assert_eq!(f[44], 0, "reserved (INT_MODEL)");
        assert_eq!(u16_at(f, 46), 9, "SCI_INT");
        assert_eq!(u32_at(f, 48), 0, "SMI_CMD: always in ACPI mode");
        assert_eq!(u32_at(f, 56), 0x600, "PM1a_EVT_BLK");
        assert_eq!(u32_at(f, 60), 0, "PM1b_EVT_BLK");
        assert_eq!(u32_at(f, 64), 0x604, "PM1a_CNT_BLK");
        assert_eq!(u32_at(f, 68), 0, "PM1b_CNT_BLK");
        assert_eq!(u32_at(f, 76), 0x608, "PM_TMR_BLK");
        assert_eq!(u32_at(f, 80), 0, "GPE0_BLK");
        assert_eq!((f[88], f[89], f[90], f[91], f[92]), (4, 2, 0, 4, 0), "PM1_EVT/PM1_CNT/PM2_CNT/PM_TMR/GPE0 lengths");
        assert!(u16_at(f, 96) > 100 && u16_at(f, 98) > 1000, "no C2/C3");
        assert_eq!(f[108], 0x32, "CENTURY");
        assert_eq!(u16_at(f, 109), 0b11, "IAPC_BOOT_ARCH: LEGACY_DEVICES | 8042");
        let flags = u32_at(f, 112);
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        assert_eq!(flags & (1 << 4), 0, "PWR_BUTTON clear: the fixed power button exists");
        assert_ne!(flags & (1 << 5), 0, "SLP_BUTTON set: there is no sleep button");
        assert_eq!(flags & (1 << 8), 0, "TMR_VAL_EXT clear: 24-bit timer");
        assert_eq!(flags & (1 << 20), 0, "HW_REDUCED_ACPI clear");
        assert_ne!(flags & 1, 0, "WBINVD");
        assert_eq!(&f[116..128], &[1, 8, 0, 1, 0xF9, 0x0C, 0, 0, 0, 0, 0, 0], "RESET_REG");
        assert_eq!(f[128], 0x06, "RESET_VALUE");
        assert_eq!(u16_at(f, 129), 0, "ARM_BOOT_ARCH");
        assert_eq!(f[131], 0, "FADT minor version");
        assert_eq!(u64_at(f, 132), 0, "X_FIRMWARE_CTRL: FIRMWARE_CTRL is used");
        assert_eq!(u64_at(f, 140), t.dsdt.gpa, "X_DSDT");
        assert_eq!(&f[148..160], &[1, 32, 0, 0, 0x00, 0x06, 0, 0, 0, 0, 0, 0], "X_PM1a_EVT_BLK");
        assert_eq!(&f[172..184], &[1, 16, 0, 0, 0x04, 0x06, 0, 0, 0, 0, 0, 0], "X_PM1a_CNT_BLK");
        assert_eq!(&f[208..220], &[1, 32, 0, 0, 0x08, 0x06, 0, 0, 0, 0, 0, 0], "X_PM_TMR_BLK");
        assert!(f[220..268].iter().all(|b| *b == 0), "X_GPE0/1, SLEEP_CONTROL/STATUS unused");
        assert_eq!(&f[268..276], b"FERROVSR");
    }

    #[test]
    fn fadt_points_at_a_64_byte_aligned_facs() {
        let image = build(&pc(3), BASE + 16);
        let t = parse(&image, BASE + 16);
        let facs_gpa = u32_at(t.fadt.bytes, 36) as u64;
        assert_eq!(facs_gpa % 64, 0);
        assert_eq!(&t.facs[0..4], b"FACS");
        assert_eq!(u32_at(t.facs, 4), 64);
        assert_eq!(t.facs[32], 2);
        assert_eq!(u32_at(t.facs, 16), 0, "global lock free");
    }

    #[test]
    fn tables_above_4gib_use_only_the_64_bit_pointers() {
        let base = 0x1_0000_0000;
        let image = build(&pc(1), base);
        let t = parse(&image, base);
        let f = t.fadt.bytes;
        assert_eq!(u32_at(f, 36), 0, "FIRMWARE_CTRL");
        assert_eq!(u32_at(f, 40), 0, "DSDT");
        assert_eq!(u64_at(f, 140), t.dsdt.gpa);
        let facs = u64_at(f, 132);
        assert_eq!(facs % 64, 0);
        assert_eq!(&image.bytes[(facs - base) as usize..][..4], b"FACS");
    }

    #[test]
    fn madt_has_one_enabled_local_apic_per_vcpu_with_uid_and_apic_id_equal_to_the_index() {
        for vcpus in [1u32, 2, 4, 16, 255] {
            let config = AcpiConfig { vcpus, ioapic_id: 0xEE, lapic_address: 0xFEE0_0000, ..AcpiConfig::default() };
            let image = build(&config, BASE);
            let t = parse(&image, BASE);
            let m = t.madt.bytes;
            assert_eq!(u32_at(m, 36), 0xFEE0_0000);
            assert_eq!(u32_at(m, 40), 1, "PCAT_COMPAT");
            let cpus: Vec<_> = madt_entries(m).into_iter().filter(|(ty, _)| *ty == 0).collect();
            assert_eq!(cpus.len(), vcpus as usize);
            for (i, (_, e)) in cpus.iter().enumerate() {
                assert_eq!(e.len(), 8);
                assert_eq!((e[2], e[3]), (i as u8, i as u8));
                assert_eq!(u32_at(e, 4), 1, "enabled");
            }
        }
    }

    #[test]
    fn madt_clamps_the_vcpu_count_to_1_through_255() {
        for (vcpus, expected) in [(0u32, 1usize), (256, 255), (u32::MAX, 255)] {
            let image = build(&pc(vcpus), BASE);
            let t = parse(&image, BASE);
            let n = madt_entries(t.madt.bytes).iter().filter(|(ty, _)| *ty == 0).count();
            assert_eq!(n, expected, "vcpus {vcpus}");
        }
    }

    #[test]
    fn madt_has_the_io_apic_the_two_overrides_and_lint1_nmi_for_all_processors() {
        let config = AcpiConfig { vcpus: 2, ioapic_id: 2, ioapic_address: 0xFEC0_0000, ..AcpiConfig::default() };
        let image = build(&config, BASE);
        let t = parse(&image, BASE);
        let entries = madt_entries(t.madt.bytes);
        let ioapics: Vec<_> = entries.iter().filter(|(ty, _)| *ty == 1).collect();
        assert_eq!(ioapics.len(), 1);
        let io = ioapics[0].1;
        assert_eq!((io.len(), io[2], io[3]), (12, 2, 0));
        assert_eq!(u32_at(io, 4), 0xFEC0_0000);
        assert_eq!(u32_at(io, 8), 0, "GSI base");

        let overrides: Vec<(u8, u8, u32, u16)> = entries
            .iter()
            .filter(|(ty, _)| *ty == 2)
            .map(|(_, e)| {
                assert_eq!(e.len(), 10);
                (e[2], e[3], u32_at(e, 4), u16_at(e, 8))
            })
            .collect();
        // Bus ISA; IRQ0 -> GSI2 edge/active high; IRQ9 -> GSI9 level/active high.
        assert_eq!(overrides, [(0, 0, 2, 0x0005), (0, 9, 9, 0x000D)]);

        let nmis: Vec<_> = entries.iter().filter(|(ty, _)| *ty == 4).collect();
        assert_eq!(nmis.len(), 1);
        let nmi = nmis[0].1;
        assert_eq!(nmi.len(), 6);
        assert_eq!(nmi[2], 0xFF, "all processors");
        assert_eq!(u16_at(nmi, 3), 0, "flags: conforming");
        assert_eq!(nmi[5], 1, "LINT1");
    }

    /// Decodes a PkgLength (AML spec "Package Length Encoding"): returns (length, bytes used).
    fn pkg_length(aml: &[u8]) -> (usize, usize) {
        let lead = aml[0];
        let follow = (lead >> 6) as usize;
        if follow == 0 {
            return ((lead & 0x3F) as usize, 1);
        }
        let mut len = (lead & 0x0F) as usize;
        for i in 0..follow {
            len |= (aml[1 + i] as usize) << (4 + 8 * i);
        }
        (len, 1 + follow)
    }

    /// Evaluates the integer-constant package elements this DSDT may use.
    fn aml_integer(aml: &[u8]) -> (u64, usize) {
        match aml[0] {
            0x00 => (0, 1),
            0x01 => (1, 1),
            0xFF => (u64::MAX, 1),
            0x0A => (aml[1] as u64, 2),
            0x0B => (u16_at(aml, 1) as u64, 3),
            0x0C => (u32_at(aml, 1) as u64, 5),
            op => panic!("unexpected AML opcode {op:#x}"),
        }
    }

    /// Finds `Name(<seg>, Package(){ integers })` at the top level of an AML body.
    fn find_named_package(aml: &[u8], seg: &[u8; 4]) -> Option<Vec<u64>> {
        let mut p = 0;
        while p < aml.len() {
            assert_eq!(aml[p], 0x08, "only NameOp at the top level");
            let name = &aml[p + 1..p + 5];
            assert_eq!(aml[p + 5], 0x12, "PackageOp");
            let (len, used) = pkg_length(&aml[p + 6..]);
            let end = p + 6 + len;
            let mut q = p + 6 + used;
            let count = aml[q] as usize;
            q += 1;
            let mut values = Vec::new();
            while q < end {
                let (v, n) = aml_integer(&aml[q..]);
                values.push(v);
                q += n;
            }
            assert_eq!(q, end, "package elements end where PkgLength says");
            assert_eq!(values.len(), count, "NumElements");
            if name == seg {
                return Some(values);
            }
            p = end;
        }
        None
    }

    #[test]
    fn dsdt_defines_s5_with_slp_typ_5_for_pm1a_and_pm1b() {
        let image = build(&pc(1), BASE);
        let t = parse(&image, BASE);
        let aml = &t.dsdt.bytes[36..];
        assert_eq!(aml, [0x08, b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00]);
        assert_eq!(find_named_package(aml, b"_S5_"), Some(std::vec![5, 5, 0, 0]));
        assert_eq!(S5_SLP_TYP, 5);
        // No other sleep state is offered: an OS never tries S3 (acpi_pm refuses it).
        for state in [b"_S1_", b"_S2_", b"_S3_", b"_S4_"] {
            assert_eq!(find_named_package(aml, state), None);
        }
    }

    #[test]
    fn pkg_length_parser_agrees_with_the_multi_byte_encoding() {
        // Self-check of the test parser: 0x4A 0x01 is 0x1A = 26 (4 low bits + 8 more).
        assert_eq!(pkg_length(&[0x4A, 0x01]), (0x1A, 2));
        assert_eq!(pkg_length(&[0x08]), (8, 1));
    }

    #[test]
    fn the_image_is_contiguous_and_ends_with_the_facs() {
        let image = build(&pc(8), BASE);
        let t = parse(&image, BASE);
        let facs_off = u32_at(t.fadt.bytes, 36) as u64 - BASE;
        assert_eq!(image.bytes.len() as u64, facs_off + 64);
        let mut spans: Vec<(u64, u64)> = [&t.xsdt, &t.fadt, &t.madt, &t.dsdt]
            .iter()
            .map(|tb| (tb.gpa - BASE, tb.gpa - BASE + tb.bytes.len() as u64))
            .collect();
        spans.push((0, 36));
        spans.push((facs_off, facs_off + 64));
        spans.sort();
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "tables overlap: {spans:?}");
        }
    }

    #[test]
    fn an_unaligned_base_still_aligns_every_table_in_guest_memory() {
        let base = 0x1234_5678 + 4;
        let image = build(&pc(5), base);
        let t = parse(&image, base);
        for gpa in [t.xsdt.gpa, t.fadt.gpa, t.madt.gpa, t.dsdt.gpa] {
            assert_eq!(gpa % 16, 0);
        }
        assert_eq!(u32_at(t.fadt.bytes, 36) % 64, 0);
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    #[test]
    fn random_configurations_and_bases_never_panic_and_always_parse() {
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        for _ in 0..2_000 {
            let r = rng.next();
            let s = rng.next();
            let config = AcpiConfig {
                vcpus: (r % 300) as u32,
                ioapic_id: (r >> 16) as u8,
                ioapic_address: (r >> 24) as u32,
                lapic_address: s as u32,
                pm1a_event_port: (s >> 32) as u16,
                pm1a_control_port: (s >> 48) as u16,
                pm_timer_port: (r >> 40) as u16,
                reset_port: (r >> 48) as u16,
                reset_value: (r >> 56) as u8,
                sci_irq: (s >> 8) as u8,
            };
            // Bases that leave room below 2^64 for the image, and some that wrap.
            let base = if s & 1 == 0 { rng.next() & 0x0000_FFFF_FFFF_FFF0 } else { u64::MAX - (s >> 56) };
            let image = build(&config, base);
            assert!(!image.bytes.is_empty());
            assert_eq!(sum(image.rsdp()), 0);
            if base < 0x0000_FFFF_FFFF_FFFF {
                let t = parse(&image, base);
                assert_eq!(u16_at(t.fadt.bytes, 46), u16::from(config.sci_irq));
            }
        }
    }
}
