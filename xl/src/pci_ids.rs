//! Names for what `lspci` finds: the devices QEMU and Bochs emulate, and the PCI class
//! codes (names as in pci.ids, shortened where pci.ids adds marketing brackets).

/// Matches any device ID of a vendor.
const ANY: Option<u16> = None;

const VENDORS: &[(u16, &str)] = &[
    (0x8086, "Intel Corporation"),
    (0x1af4, "Red Hat, Inc."),
    (0x1b36, "Red Hat, Inc."),
    (0x1234, "Bochs/QEMU"),
    (0x10ec, "Realtek Semiconductor Co., Ltd."),
    (0x15ad, "VMware"),
];

const DEVICES: &[(u16, Option<u16>, &str)] = &[
    (0x8086, Some(0x1237), "440FX - 82441FX PMC"),
    (0x8086, Some(0x7000), "82371SB PIIX3 ISA"),
    (0x8086, Some(0x7010), "82371SB PIIX3 IDE"),
    (0x8086, Some(0x7020), "82371SB PIIX3 USB"),
    (0x8086, Some(0x7110), "82371AB/EB/MB PIIX4 ISA"),
    (0x8086, Some(0x7111), "82371AB/EB/MB PIIX4 IDE"),
    (0x8086, Some(0x7112), "82371AB/EB/MB PIIX4 USB"),
    (0x8086, Some(0x7113), "82371AB/EB/MB PIIX4 ACPI"),
    (0x8086, Some(0x29c0), "82G33/G31/P35/P31 Express DRAM Controller"),
    (0x8086, Some(0x2918), "82801IB (ICH9) LPC Interface Controller"),
    (0x8086, Some(0x2922), "82801IR/IO/IH (ICH9R/DO/DH) 6 port SATA Controller [AHCI mode]"),
    (0x8086, Some(0x2930), "82801I (ICH9 Family) SMBus Controller"),
    (0x8086, Some(0x100e), "82540EM Gigabit Ethernet Controller"),
    (0x1234, Some(0x1111), "standard VGA"),
    (0x1af4, ANY, "Virtio device"),
    (0x1b36, ANY, "QEMU PCI device"),
];

/// The vendor's name, if we know it.
pub fn vendor(vendor: u16) -> Option<&'static str> {
    VENDORS.iter().find(|(v, _)| *v == vendor).map(|(_, name)| *name)
}

/// The device's name (without the vendor), if we know it.
pub fn device(vendor: u16, device: u16) -> Option<&'static str> {
    DEVICES.iter().find(|(v, d, _)| *v == vendor && d.is_none_or(|d| d == device)).map(|(_, _, name)| *name)
}

const SUBCLASSES: &[(u8, u8, &str)] = &[
    (0x00, 0x00, "Non-VGA unclassified device"),
    (0x00, 0x01, "VGA compatible unclassified device"),
    (0x01, 0x00, "SCSI storage controller"),
    (0x01, 0x01, "IDE interface"),
    (0x01, 0x05, "ATA controller"),
    (0x01, 0x06, "SATA controller"),
    (0x01, 0x08, "Non-Volatile memory controller"),
    (0x02, 0x00, "Ethernet controller"),
    (0x03, 0x00, "VGA compatible controller"),
    (0x04, 0x01, "Multimedia audio controller"),
    (0x04, 0x03, "Audio device"),
    (0x05, 0x00, "RAM memory"),
    (0x06, 0x00, "Host bridge"),
    (0x06, 0x01, "ISA bridge"),
    (0x06, 0x04, "PCI bridge"),
    (0x06, 0x80, "Bridge"),
    (0x07, 0x00, "Serial controller"),
    (0x07, 0x80, "Communication controller"),
    (0x08, 0x80, "System peripheral"),
    (0x0c, 0x03, "USB controller"),
    (0x0c, 0x05, "SMBus"),
];

const CLASSES: &[(u8, &str)] = &[
    (0x00, "Unclassified device"),
    (0x01, "Mass storage controller"),
    (0x02, "Network controller"),
    (0x03, "Display controller"),
    (0x04, "Multimedia controller"),
    (0x05, "Memory controller"),
    (0x06, "Bridge"),
    (0x07, "Communication controller"),
    (0x08, "Generic system peripheral"),
    (0x09, "Input device controller"),
    (0x0c, "Serial bus controller"),
    (0x0d, "Wireless controller"),
    (0xff, "Unassigned class"),
];

/// The class's name: the subclass's if known, else the base class's, else "Class".
pub fn class(class: u8, subclass: u8) -> &'static str {
    SUBCLASSES
        .iter()
        .find(|(c, s, _)| *c == class && *s == subclass)
        .map(|(_, _, name)| *name)
        .or_else(|| CLASSES.iter().find(|(c, _)| *c == class).map(|(_, name)| *name))
        .unwrap_or("Class")
}
