//! The initial ramdisk for a Linux DomU (issue 7): a cpio archive in the "newc" format
//! (the kernel's Documentation/driver-api/early-userspace/buffer-format.rst), which the
//! kernel unpacks into its rootfs before running `/init`. Uncompressed: every kernel
//! reads that, whatever decompressors it was built with.
//!
//! Each member is a 110-byte ASCII header ("070701" and thirteen 8-digit hex fields),
//! the NUL-terminated name, padding to a multiple of 4, the data, padding to a multiple
//! of 4; the archive ends with a member called "TRAILER!!!".

/// One member of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
    /// A character device node (`/dev/console` must exist before `/init` runs for it to
    /// have a console).
    CharDev {
        path: String,
        mode: u32,
        major: u32,
        minor: u32,
    },
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// The archive holding `members`, in order (a directory must come before what is in it).
pub fn cpio(members: &[Member]) -> Vec<u8> {
    let mut out = Vec::new();
    for (ino, m) in (1u32..).zip(members) {
        let (path, mode, data, rdev): (&str, u32, &[u8], (u32, u32)) = match m {
            Member::Dir { path, mode } => (path, S_IFDIR | (mode & 0o7777), &[], (0, 0)),
            Member::File { path, mode, data } => (path, S_IFREG | (mode & 0o7777), data, (0, 0)),
            Member::Symlink { path, target } => (path, S_IFLNK | 0o777, target.as_bytes(), (0, 0)),
            Member::CharDev { path, mode, major, minor } => (path, S_IFCHR | (mode & 0o7777), &[], (*major, *minor)),
        };
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        entry(&mut out, ino, path, mode, nlink, data, rdev);
    }
    entry(&mut out, 0, "TRAILER!!!", 0, 1, &[], (0, 0));
    out
}

fn entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, nlink: u32, data: &[u8], rdev: (u32, u32)) {
    // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
    // rdevminor, namesize (with the NUL), check (0 for newc).
    let fields = [ino, mode, 0, 0, nlink, 0, data.len() as u32, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// The `/init` the Linux DomU runs: mount the kernel's filesystems, load the kernel
/// modules the initramfs carries, say it is up, then become busybox's init (still
/// PID 1), which runs [`INITTAB`]. An init proper rather than a shell as PID 1:
/// `poweroff` and `reboot` signal PID 1, which stops the processes and asks the kernel
/// to power off (ACPI S5) or reset (the FADT's reset register).
pub const INIT_SCRIPT: &str = "#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
for m in /lib/modules/*.ko; do [ -e \"$m\" ] && insmod \"$m\"; done
acpid -l /tmp/acpid.log
echo \"ferrovisor-initramfs: up, kernel $(uname -r)\"
export PS1='domu:\\w# '
exec /bin/init
";

/// busybox init's table: a shell on the console (`cttyhack` makes the serial port its
/// controlling terminal, so job control and Ctrl-C work), started again when it exits;
/// a line before the power-off or reset. (busybox's `acpid`, which turns the ACPI power
/// button, Domain0's `shutdown`, into a `poweroff`, is started by `/init` as a daemon:
/// init resets the console's terminal settings for every process it starts on it,
/// which would take the running shell out of its raw mode.)
pub const INITTAB: &str = "::respawn:/bin/cttyhack /bin/sh
::shutdown:/bin/echo ferrovisor-initramfs: going down
";

/// What `acpid` runs for the power button (its event `PWRF/00000080`); acpid's own
/// output goes to its log file, so the line is written to the console.
pub const POWER_BUTTON: &str = "#!/bin/sh
echo ferrovisor-initramfs: power button pressed > /dev/console
exec poweroff
";

/// Kernel modules the init script loads, as (file name in the kernel package's
/// `lib/modules/RELEASE/kernel/`, what for). Debian builds both as modules.
pub const MODULES: [(&str, &str); 2] = [
    ("drivers/acpi/button.ko", "the ACPI power button (fixed event, SCI)"),
    ("drivers/input/evdev.ko", "/dev/input/event*, where acpid reads the button"),
];

/// The members of the DomU's initramfs around a statically linked `busybox` and the
/// kernel `modules` (file name, contents).
pub fn members(busybox: Vec<u8>, modules: Vec<(String, Vec<u8>)>) -> Vec<Member> {
    let dir = |p: &str| Member::Dir { path: p.into(), mode: 0o755 };
    let mut m = vec![
        dir("bin"),
        dir("dev"),
        dir("etc"),
        dir("etc/acpi"),
        dir("etc/acpi/PWRF"),
        dir("lib"),
        dir("lib/modules"),
        dir("proc"),
        dir("sys"),
        dir("tmp"),
        Member::CharDev { path: "dev/console".into(), mode: 0o600, major: 5, minor: 1 },
        Member::CharDev { path: "dev/ttyS0".into(), mode: 0o660, major: 4, minor: 64 },
        Member::File { path: "bin/busybox".into(), mode: 0o755, data: busybox },
        Member::Symlink { path: "bin/sh".into(), target: "busybox".into() },
        Member::File { path: "etc/inittab".into(), mode: 0o644, data: INITTAB.as_bytes().to_vec() },
        Member::File { path: "etc/acpi/PWRF/00000080".into(), mode: 0o755, data: POWER_BUTTON.as_bytes().to_vec() },
        Member::File { path: "init".into(), mode: 0o755, data: INIT_SCRIPT.as_bytes().to_vec() },
    ];
    for (name, data) in modules {
        m.push(Member::File { path: format!("lib/modules/{name}"), mode: 0o644, data });
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member as the reader sees it: name, mode, rdev (major, minor), data.
    type Read = (String, u32, (u32, u32), Vec<u8>);

    /// A reader for what `cpio` writes.
    fn read(mut b: &[u8]) -> Vec<Read> {
        let mut out = Vec::new();
        let start = b.as_ptr() as usize;
        let align = |b: &mut &[u8]| {
            let off = b.as_ptr() as usize - start;
            *b = &b[(4 - off % 4) % 4..];
        };
        loop {
            assert_eq!(&b[..6], b"070701");
            let field =
                |i: usize| u32::from_str_radix(std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap(), 16).unwrap();
            let (mode, size, rdev, namesize) = (field(1), field(6) as usize, (field(9), field(10)), field(11) as usize);
            let name = std::str::from_utf8(&b[110..110 + namesize - 1]).unwrap().to_string();
            assert_eq!(b[110 + namesize - 1], 0, "names end in NUL");
            b = &b[110 + namesize..];
            align(&mut b);
            let data = b[..size].to_vec();
            b = &b[size..];
            align(&mut b);
            if name == "TRAILER!!!" {
                assert!(b.is_empty(), "nothing after the trailer");
                return out;
            }
            out.push((name, mode, rdev, data));
        }
    }

    #[test]
    fn members_round_trip_with_their_types_modes_and_padding() {
        let archive = cpio(&[
            Member::Dir { path: "bin".into(), mode: 0o755 },
            Member::File { path: "bin/x".into(), mode: 0o644, data: b"hello".to_vec() },
            Member::Symlink { path: "bin/sh".into(), target: "x".into() },
            Member::CharDev { path: "console".into(), mode: 0o600, major: 5, minor: 1 },
        ]);
        assert_eq!(archive.len() % 4, 0);
        let m = read(&archive);
        assert_eq!(m.len(), 4);
        assert_eq!((m[0].0.as_str(), m[0].1), ("bin", 0o040755));
        assert_eq!((m[1].0.as_str(), m[1].1, m[1].3.as_slice()), ("bin/x", 0o100644, &b"hello"[..]));
        assert_eq!((m[2].1, m[2].3.as_slice()), (0o120777, &b"x"[..]));
        assert_eq!((m[3].1, m[3].2), (0o020600, (5, 1)));
    }

    #[test]
    fn the_domu_initramfs_has_init_a_console_and_busybox() {
        let archive = cpio(&members(b"\x7fELF-not-really".to_vec(), vec![("button.ko".into(), b"mod".to_vec())]));
        let m = read(&archive);
        let names: Vec<&str> = m.iter().map(|e| e.0.as_str()).collect();
        for want in [
            "init",
            "etc/inittab",
            "etc/acpi/PWRF/00000080",
            "lib/modules/button.ko",
            "bin/busybox",
            "bin/sh",
            "dev/console",
            "dev/ttyS0",
            "proc",
            "sys",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let init = m.iter().find(|e| e.0 == "init").unwrap();
        assert_eq!(init.1 & 0o111, 0o111, "init is executable");
        assert!(init.3.starts_with(b"#!/bin/sh\n"));
        assert!(init.3.ends_with(b"exec /bin/init\n"), "busybox init stays PID 1");
        // Directories come before what they hold.
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert!(pos("bin") < pos("bin/busybox") && pos("dev") < pos("dev/console") && pos("etc") < pos("etc/inittab"));
    }
}
