//! Domains and their vCPUs: identity, memory, state, statistics.

pub mod boot_area;
pub mod console;
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
pub mod unclaimed;
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

pub use console::LineBuffer;

pub use unclaimed::{UnclaimedMmio, UnclaimedPorts};

#[cfg(target_os = "none")]
mod kernel {
    use super::vcpu::Vcpu;
    use super::{DomainState, LineBuffer};
    use crate::mm::ept::Ept;
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
        pub unclaimed_ports: super::UnclaimedPorts,
        /// Accesses to guest-physical addresses with no RAM and no device, per page.
        pub unclaimed_mmio: super::UnclaimedMmio,
        /// ACPI sleep requests refused (a sleep type the DSDT does not offer), per
        /// type: what bounds their log lines.
        pub sleeps_refused: super::unclaimed::Tally<u16, 8>,
        /// Console output cut into log lines.
        pub console: LineBuffer,
        /// Port 0xE9's output cut into log lines (`Domain::debug_port_output`).
        pub debug_port: LineBuffer,
        /// How much of it may reach the log (`console::ConsoleLimit`).
        pub console_limit: super::console::ConsoleLimit,
        /// Console output as written, for Domain0's `console` (`ConsoleReadOther`).
        pub console_ring: alloc::boxed::Box<crate::ring::ByteRing<CONSOLE_RING>>,
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

    /// A domain's two streams of text: its console (COM1, ConsoleWrite) and the
    /// hypervisor's debug port (0xE9).
    #[derive(Clone, Copy)]
    enum Stream {
        Console,
        DebugPort,
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
        /// Its own resets, and those of the domains it replaced (`super::RestartHistory`).
        pub restarts: Mutex<super::RestartHistory>,
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

        /// Bytes of the domain's console (COM1, or the ConsoleWrite hypercall): kept in
        /// its console ring for Domain0's `console ID`, and as log lines on the machine's
        /// console only where that is asked for (`logger::guest_lines_shown`).
        pub fn console_output(&self, bytes: &[u8]) {
            self.runtime.lock().console_ring.push(bytes);
            if crate::logger::guest_lines_shown() {
                self.log_lines(Stream::Console, bytes);
            }
        }

        /// Bytes written to port 0xE9, the hypervisor's debug port (Xen's HVM debug
        /// port): their own stream of lines, in the hypervisor's log with the domain's
        /// name, not in the domain's console. A guest that writes each character both
        /// there and to COM1 gets one clean line in each place, never each character
        /// twice in one.
        pub fn debug_port_output(&self, bytes: &[u8]) {
            self.log_lines(Stream::DebugPort, bytes);
        }

        /// Cuts `bytes` into lines with the stream's own buffer and logs each whole line,
        /// prefixed with the domain's name, within the domain's budget
        /// (`console::ConsoleLimit`, shared by both streams) and only when the serial port
        /// has room: a guest's output never makes a CPU wait. Lines are logged with the
        /// runtime lock released.
        fn log_lines(&self, stream: Stream, bytes: &[u8]) {
            let mut rest = bytes;
            let mut rt = self.runtime.lock();
            loop {
                // The next line the budget admits; the clock is read only for a line.
                let mut line = [0u8; super::console::LINE_MAX];
                let mut len = None;
                while let Some((&b, tail)) = rest.split_first() {
                    rest = tail;
                    let DomainRuntime { console, debug_port, console_limit, .. } = &mut *rt;
                    let buffer = match stream {
                        Stream::Console => console,
                        Stream::DebugPort => debug_port,
                    };
                    if let Some(l) = buffer.push(b)
                        && console_limit.admit(crate::arch::timer::now_ns(), l.len())
                    {
                        line[..l.len()].copy_from_slice(l.as_bytes());
                        len = Some(l.len());
                        break;
                    }
                }
                let notice =
                    rt.console_limit.has_dropped().then(|| rt.console_limit.notice(crate::arch::timer::now_ns()));
                drop(rt);
                if let Some(n) = notice.flatten() {
                    self.console_notice(n);
                }
                let Some(len) = len else { return };
                let text = core::str::from_utf8(&line[..len]).unwrap_or("");
                // Logged with the lock released; the lock is taken again for the rest.
                let written = crate::logger::guest_line(&self.name, text);
                rt = self.runtime.lock();
                if !written {
                    rt.console_limit.dropped_rejected();
                }
            }
        }

        fn console_notice(&self, lines: u64) {
            log::warn!(
                "domain {}: {lines} console line(s) not logged (over its rate limit, or the serial port was full); \
                 its console output is all kept for `console {}`",
                self.name,
                self.id
            );
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
            let dropped = rt.console_limit.final_notice();
            drop(rt);
            if let Some(n) = dropped {
                self.console_notice(n);
            }
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

    /// The names of the domains `until_guests_exit` waits for (`awaited = true` in the
    /// boot configuration); empty: it waits for every domain.
    static AWAITED: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// `until_guests_exit` waits for the domain called `name` (and whatever is rebuilt
    /// under that name after a reset).
    pub fn await_domain(name: &str) {
        AWAITED.lock().push(name.into());
    }

    /// Whether every domain has ended (false when there are none).
    pub fn all_ended() -> bool {
        let d = DOMAINS.lock();
        !d.is_empty() && d.iter().all(|d| d.state().is_final())
    }

    /// Whether `until_guests_exit` may stop the machine: every awaited domain has ended
    /// (one that never got created, or was destroyed, counts as ended), or, with none
    /// awaited, every domain has.
    pub fn guests_done() -> bool {
        let awaited = AWAITED.lock();
        if awaited.is_empty() {
            return all_ended();
        }
        let d = DOMAINS.lock();
        awaited.iter().all(|name| !d.iter().any(|x| x.name == *name && !x.state().is_final()))
    }
}

/// When a domain's guest last reset itself, to stop a reset loop: each reset rebuilds
/// the domain (image, memory, tables), work the hypervisor does for the guest without
/// charging it to its CPU time.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestartHistory {
    /// The latest restarts' times (ns), oldest first; 0 = none.
    times: [u64; Self::LIMIT],
}

impl RestartHistory {
    /// At most this many restarts ...
    pub const LIMIT: usize = 5;
    /// ... within this long.
    pub const WINDOW_NS: u64 = 60_000_000_000;

    /// Records a restart at `now` if the limit allows one; false if the domain has
    /// already restarted [`Self::LIMIT`] times within [`Self::WINDOW_NS`].
    pub fn allow(&mut self, now: u64) -> bool {
        let oldest = self.times[0];
        if oldest != 0 && now.saturating_sub(oldest) < Self::WINDOW_NS {
            return false;
        }
        self.times.rotate_left(1);
        self.times[Self::LIMIT - 1] = now.max(1);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::RestartHistory;

    #[test]
    fn a_reset_loop_is_stopped_and_a_rare_reset_never_is() {
        let mut h = RestartHistory::default();
        let s = 1_000_000_000;
        for i in 0..RestartHistory::LIMIT as u64 {
            assert!(h.allow(i * s), "restart {i}");
        }
        assert!(!h.allow(5 * s), "the sixth within a minute");
        assert!(!h.allow(59 * s));
        assert!(h.allow(61 * s), "the oldest left the window");
        let mut rare = RestartHistory::default();
        assert!((0..100u64).all(|i| rare.allow(i * 20 * s)), "one restart every 20 s is fine forever");
    }
}
