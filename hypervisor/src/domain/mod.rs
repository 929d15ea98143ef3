//! Domains and their vCPUs: identity, memory, state, statistics.

pub mod boot_area;
#[cfg(target_os = "none")]
pub mod create;
pub mod firmware;
#[cfg(target_os = "none")]
pub mod irq;
#[cfg(target_os = "none")]
pub mod memory;
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
        pub console: LineBuffer,
        /// The emulated devices the domain's vCPUs share.
        pub devices: crate::devices::DomainDevices,
    }

    pub struct Domain {
        pub id: u32,
        pub name: String,
        pub memory: Mutex<super::memory::GuestMemory>,
        pub ept: Mutex<Ept>,
        pub eptp: u64,
        pub vcpus: Vec<Arc<Mutex<Vcpu>>>,
        /// Per vCPU (same index): interrupts, INIT and STARTUP sent to it.
        pub signals: Vec<super::signals::VcpuSignals>,
        pub runtime: Mutex<DomainRuntime>,
        /// Device interrupt state the run loop reads without the runtime lock.
        pub irq: super::irq::IrqState,
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

        /// Ends the domain: `status` for a clean exit, `None` with a crash.
        pub fn finish(&self, state: DomainState, status: Option<u8>) -> bool {
            let mut rt = self.runtime.lock();
            if rt.state.is_final() {
                return false;
            }
            rt.state = state;
            rt.exit_status = status;
            true
        }
    }

    static DOMAINS: Mutex<Vec<Arc<Domain>>> = Mutex::new(Vec::new());

    pub fn register(d: Arc<Domain>) {
        DOMAINS.lock().push(d);
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
