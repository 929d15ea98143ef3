//! Domains and their vCPUs: identity, memory, state, statistics.

pub mod boot_area;
pub mod cpu_policy;
#[cfg(target_os = "none")]
pub mod create;
pub mod firmware;
#[cfg(target_os = "none")]
pub mod irq;
#[cfg(target_os = "none")]
pub mod lifecycle;
pub mod linux;
#[cfg(target_os = "none")]
pub mod memory;
#[cfg(target_os = "none")]
pub mod passthrough;
pub mod pirq;
pub mod signals;
#[cfg(target_os = "none")]
pub mod vcpu;

#[cfg(target_os = "none")]
pub use kernel::*;

/// A domain's life (Xen's states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainState {
    Running,
    Blocked,
    Paused,
    Crashed,
    ShutDown,
}

impl DomainState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Blocked => "blocked",
            Self::Paused => "paused",
            Self::Crashed => "crashed",
            Self::ShutDown => "shut down",
        }
    }

    /// Whether the domain has ended for good.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Crashed | Self::ShutDown)
    }
}

/// A console line buffer: bytes until a newline (or a full line), then one log line.
#[derive(Debug)]
pub struct LineBuffer {
    buf: [u8; 160],
    len: usize,
    /// The last call handed out a line; the next byte starts a new one.
    handed_out: bool,
}

impl Default for LineBuffer {
    fn default() -> Self {
        Self { buf: [0; 160], len: 0, handed_out: false }
    }
}

impl LineBuffer {
    /// Adds a byte; returns a finished line when there is one. Control characters other
    /// than tab are shown as '.', so a guest cannot inject escape sequences into the
    /// hypervisor's console.
    pub fn push(&mut self, byte: u8) -> Option<&str> {
        if self.handed_out {
            self.len = 0;
            self.handed_out = false;
        }
        match byte {
            b'\n' => {}
            b'\r' => return None,
            _ => {
                let shown = if byte == b'\t' || (0x20..=0x7E).contains(&byte) { byte } else { b'.' };
                self.buf[self.len] = shown;
                self.len += 1;
                if self.len < self.buf.len() {
                    return None;
                }
            }
        }
        self.handed_out = true;
        // Only printable ASCII is stored, so this is always UTF-8.
        core::str::from_utf8(&self.buf[..self.len]).ok()
    }
}

#[cfg(target_os = "none")]
mod kernel {
    use super::vcpu::Vcpu;
    use super::{DomainState, LineBuffer};
    use crate::mm::ept::Ept;
    use alloc::collections::BTreeMap;
    use alloc::string::String;
    use alloc::sync::Arc;
    use alloc::vec::Vec;
    use spin::Mutex;

    /// Per-exit-reason counters (indexed by the basic exit reason number).
    pub const EXIT_REASONS: usize = 80;

    /// What changes while the domain runs, behind one lock.
    pub struct DomainRuntime {
        pub state: DomainState,
        pub exit_status: Option<u8>,
        /// Reads and writes of ports nobody claims, per port.
        pub unclaimed_ports: BTreeMap<u16, u64>,
        /// Console output cut into log lines.
        pub console: LineBuffer,
        /// Console output as written, for Domain0's `console` (`ConsoleReadOther`).
        pub console_ring: crate::ring::ByteRing<CONSOLE_RING>,
        /// The emulated devices the domain's vCPUs share.
        pub devices: crate::devices::DomainDevices,
    }

    /// Bytes of console output each domain keeps.
    pub const CONSOLE_RING: usize = 16 * 1024;

    /// What a domain was made from, kept for `reboot` (which builds it again) and for
    /// Domain0's listings.
    #[derive(Debug, Clone)]
    pub struct DomainSpec {
        pub image: String,
        /// The bundle entry with a Linux kernel's initial ramdisk ("" for none).
        pub initrd: String,
        pub memory_mib: u32,
        pub vcpus: u32,
        pub cmdline: String,
        pub weight: u32,
        pub cap: u32,
        pub cpus: u64,
        pub mode: Option<abi::config::GuestMode>,
        pub load_address: Option<u64>,
        pub entry: Option<u64>,
        pub dom0: bool,
        pub on_poweroff: abi::config::OnPoweroff,
    }

    impl DomainSpec {
        pub fn from_config(c: &abi::config::DomainConfig<'_>) -> Self {
            DomainSpec {
                image: c.image.into(),
                initrd: c.initrd.into(),
                memory_mib: c.memory_mib,
                vcpus: c.vcpus.max(1),
                cmdline: c.cmdline.into(),
                weight: c.weight,
                cap: c.cap,
                cpus: c.cpus,
                mode: c.mode,
                load_address: c.load_address,
                entry: c.entry,
                dom0: c.dom0,
                on_poweroff: c.on_poweroff,
            }
        }
    }

    pub struct Domain {
        pub id: u32,
        pub name: String,
        pub spec: DomainSpec,
        pub memory: Mutex<super::memory::GuestMemory>,
        /// `None` once released.
        pub ept: Mutex<Option<Ept>>,
        pub eptp: u64,
        pub vcpus: Vec<Arc<Mutex<Vcpu>>>,
        /// Per vCPU (same index): interrupts, INIT and STARTUP sent to it.
        pub signals: Vec<super::signals::VcpuSignals>,
        pub runtime: Mutex<DomainRuntime>,
        /// Device interrupt state the run loop reads without the runtime lock.
        pub irq: super::irq::IrqState,
        /// Paused by Domain0: its vCPUs stay off the CPUs (checked before every entry).
        pub paused: core::sync::atomic::AtomicBool,
        /// `runtime.state` is final: a copy the run loop reads before every entry
        /// without taking the runtime lock. Set only by [`Domain::finish`].
        pub ended: core::sync::atomic::AtomicBool,
        /// The guest reset itself: a domain like it starts once this one's memory is
        /// released (`lifecycle::restart_if_asked`).
        pub restart: core::sync::atomic::AtomicBool,
    }

    impl Drop for Domain {
        /// The last reference is gone (the registry and the scheduler let go after
        /// `destroy`): the EPT's table frames go back to the allocator. Guest RAM, the
        /// VMCSs and the VPIDs are returned by their own `Drop`s.
        fn drop(&mut self) {
            if let Some(ept) = self.ept.get_mut().take() {
                ept.destroy(&mut super::create::FrameTables);
            }
        }
    }

    impl Domain {
        /// Exit counts summed over the domain's vCPUs (each counts its own, lock-free on
        /// the exit path).
        pub fn exit_counts(&self) -> [u64; EXIT_REASONS] {
            let mut total = [0; EXIT_REASONS];
            for v in &self.vcpus {
                for (t, c) in total.iter_mut().zip(v.lock().exit_counts.iter()) {
                    *t += c;
                }
            }
            total
        }

        pub fn state(&self) -> DomainState {
            self.runtime.lock().state
        }

        pub fn is_paused(&self) -> bool {
            self.paused.load(core::sync::atomic::Ordering::Acquire)
        }

        pub fn is_dom0(&self) -> bool {
            self.spec.dom0
        }

        /// Console output from the guest: kept in the ring, and whole lines go to the log
        /// prefixed with the domain's name.
        pub fn console_output(&self, bytes: &[u8]) {
            let mut rt = self.runtime.lock();
            rt.console_ring.push(bytes);
            for &b in bytes {
                if let Some(line) = rt.console.push(b) {
                    log::info!("[{}] {}", self.name, line);
                }
            }
        }

        /// Ends the domain: `status` for a clean exit, `None` with a crash.
        pub fn finish(&self, state: DomainState, status: Option<u8>) -> bool {
            let mut rt = self.runtime.lock();
            if rt.state.is_final() {
                return false;
            }
            rt.state = state;
            rt.exit_status = status;
            self.ended.store(true, core::sync::atomic::Ordering::Release);
            true
        }

        /// Whether the domain has ended (lock-free; see `ended`).
        pub fn is_ended(&self) -> bool {
            self.ended.load(core::sync::atomic::Ordering::Acquire)
        }
    }

    static DOMAINS: Mutex<Vec<Arc<Domain>>> = Mutex::new(Vec::new());

    pub fn register(d: Arc<Domain>) {
        DOMAINS.lock().push(d);
    }

    /// Takes a destroyed domain out of the registry; it goes away once the scheduler lets
    /// go of it too.
    pub fn unregister(id: u32) {
        DOMAINS.lock().retain(|d| d.id != id);
    }

    pub fn find(id: u32) -> Option<Arc<Domain>> {
        DOMAINS.lock().iter().find(|d| d.id == id).cloned()
    }

    pub fn all() -> Vec<Arc<Domain>> {
        DOMAINS.lock().clone()
    }

    /// Whether every domain has ended (false when there are none).
    pub fn all_ended() -> bool {
        let d = DOMAINS.lock();
        !d.is_empty() && d.iter().all(|d| d.state().is_final())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_end_at_newline_and_hide_control_characters() {
        let mut b = LineBuffer::default();
        let mut lines = Vec::new();
        for &c in b"hi\x1b[2J\r\nok\n" {
            if let Some(l) = b.push(c) {
                lines.push(l.to_string());
            }
        }
        assert_eq!(lines, vec!["hi.[2J".to_string(), "ok".to_string()]);
    }

    #[test]
    fn an_endless_line_is_flushed_when_the_buffer_is_full() {
        let mut b = LineBuffer::default();
        let flushed: Vec<String> = (0..400).filter_map(|_| b.push(b'x').map(|l| l.to_string())).collect();
        assert_eq!(flushed.len(), 2);
        assert_eq!(flushed[0].len(), 160);
    }
}
