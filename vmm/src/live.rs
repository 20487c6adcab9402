//! The running VM as the control API sees it. API requests (from the `kettle-api` thread) go
//! through a queue to the event-loop thread, which owns the machine: it pauses the vCPUs, saves
//! state, presses the power button, toggles links. Work done there never races device work done
//! by the event loop itself (received frames, timers), so a saved state is consistent.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::api::{ApiError, VmApi};
use crate::control::{Control, StopReason};
use crate::machine::Machine;
use crate::snapshot::cpu::VmKvmState;
use crate::snapshot::{SavedConfig, SavedMachine};
use crate::vcpu::{Kicker, RunState};

/// What the API asks of the event loop.
#[derive(Debug)]
pub enum Request {
    Status,
    Screen,
    Pause,
    Resume,
    Save { path: PathBuf, resume: bool },
    Reset,
    PowerOff,
    Shutdown,
    Link { nic: usize, up: bool },
}

type Reply = Result<serde_json::Value, ApiError>;
/// Requests waiting with where to send each answer.
type Waiting = VecDeque<(Request, SyncSender<Reply>)>;

/// Requests waiting for the event loop; lives for the whole run (across guest reboots).
pub struct ApiQueue {
    /// Waiting requests; None once the VM has stopped for good.
    queue: Mutex<Option<Waiting>>,
    evt: EventFd,
    started: Instant,
    config: serde_json::Value,
}

impl ApiQueue {
    pub fn new(config: serde_json::Value, started: Instant) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            queue: Mutex::new(Some(VecDeque::new())),
            evt: EventFd::new(EFD_NONBLOCK)?,
            started,
            config,
        }))
    }

    fn ask(&self, r: Request, timeout: Duration) -> Reply {
        let (tx, rx): (SyncSender<Reply>, Receiver<Reply>) = sync_channel(1);
        match self.queue.lock().unwrap().as_mut() {
            Some(q) => q.push_back((r, tx)),
            None => return Err(ApiError::unavailable("the VM has stopped")),
        }
        let _ = self.evt.write(1);
        match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(_) => Err(ApiError::unavailable(
                "the VM did not answer (it may be stopping or rebooting); try again",
            )),
        }
    }

    /// Closes the queue and answers whatever is queued with "unavailable" (the VM is gone).
    pub fn drain_unavailable(&self) {
        let waiting = self.queue.lock().unwrap().take().unwrap_or_default();
        for (_, tx) in waiting {
            let _ = tx.send(Err(ApiError::unavailable("the VM has stopped")));
        }
    }
}

const QUICK: Duration = Duration::from_secs(10);
const SAVE: Duration = Duration::from_secs(3600);

impl VmApi for ApiQueue {
    fn status(&self) -> Result<serde_json::Value, ApiError> {
        self.ask(Request::Status, QUICK)
    }
    fn screen(&self) -> Result<serde_json::Value, ApiError> {
        self.ask(Request::Screen, QUICK)
    }
    fn pause(&self) -> Result<(), ApiError> {
        self.ask(Request::Pause, QUICK).map(drop)
    }
    fn resume(&self) -> Result<(), ApiError> {
        self.ask(Request::Resume, QUICK).map(drop)
    }
    fn save_state(&self, path: &Path, resume: bool) -> Result<serde_json::Value, ApiError> {
        self.ask(
            Request::Save {
                path: path.to_path_buf(),
                resume,
            },
            SAVE,
        )
    }
    fn reset(&self) -> Result<(), ApiError> {
        self.ask(Request::Reset, QUICK).map(drop)
    }
    fn power_off(&self) -> Result<(), ApiError> {
        self.ask(Request::PowerOff, QUICK).map(drop)
    }
    fn shutdown(&self) -> Result<(), ApiError> {
        self.ask(Request::Shutdown, QUICK).map(drop)
    }
    fn set_link(&self, nic: usize, up: bool) -> Result<(), ApiError> {
        self.ask(Request::Link { nic, up }, QUICK).map(drop)
    }
}

/// What a save needs of the running VM besides devices.
pub struct LiveVm {
    pub fd: Arc<VmFd>,
    pub mem: GuestMemoryMmap,
    pub machine: Machine,
    pub control: Arc<Control>,
    pub run_state: Arc<RunState>,
    pub kickers: Vec<Kicker>,
    /// The CPUID each vCPU was given.
    pub cpuids: Vec<Vec<kvm_bindings::kvm_cpuid_entry2>>,
    pub config: SavedConfig,
    /// Guest run time before this process (a restored VM), and when this boot started.
    pub uptime_before: Duration,
    pub boot_started: Instant,
    /// Flushes disks and reports their identities, in `config.drives` order.
    pub flush_disks:
        Box<dyn Fn() -> Result<Vec<crate::snapshot_disks::DiskIdentity>, String> + Send>,
}

/// The size of the text [`devices::vga_text::VgaText::text`] returns: page 0 of mode 3.
const SCREEN_ROWS: usize = 25;
const SCREEN_COLUMNS: usize = 80;

/// Pausing must finish within this; a vCPU stuck longer is a bug worth reporting.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

impl LiveVm {
    fn uptime(&self) -> Duration {
        self.uptime_before + self.boot_started.elapsed()
    }

    /// Stops the vCPUs and holds the devices' timers, received frames and console input.
    fn pause(&self) -> Result<(), ApiError> {
        self.machine.gate.close();
        self.run_state
            .pause(&self.kickers, PAUSE_TIMEOUT)
            .map_err(|e| {
                self.machine.gate.open();
                ApiError::internal(format!("pausing: {e}"))
            })
    }

    /// Lets the vCPUs and the held device work run again.
    fn resume(&self) {
        self.machine.gate.open();
        self.run_state.resume();
    }

    /// Saves the VM (pausing it if it runs); leaves it paused.
    pub fn save(&self, path: &Path) -> Result<serde_json::Value, ApiError> {
        let t0 = Instant::now();
        if !self.run_state.is_paused() {
            self.pause()?;
        }
        let mut vcpus = self
            .run_state
            .capture(self.kickers.len(), PAUSE_TIMEOUT)
            .map_err(ApiError::internal)?;
        for (v, c) in vcpus.iter_mut().zip(&self.cpuids) {
            v.cpuid = c.clone();
        }
        let kvm = VmKvmState::capture(&self.fd)
            .map_err(|e| ApiError::internal(format!("saving: {e}")))?;
        let devices = self.machine.state();
        let identities = (self.flush_disks)().map_err(ApiError::internal)?;
        let mut config = self.config.clone();
        for (d, id) in config.drives.iter_mut().zip(identities) {
            d.identity = id;
        }
        let machine = SavedMachine {
            vcpus,
            kvm,
            devices,
            memory: Vec::new(),
            memory_crc: 0,
            uptime_ns: self.uptime().as_nanos() as u64,
        };
        // Large guests take seconds: say how far the memory is, at most once a second.
        let total: u64 = self.mem.iter().map(|r| r.len()).sum();
        let mut last_report = Instant::now();
        let mut progress = |done: u64| {
            if last_report.elapsed() >= Duration::from_secs(1) && done < total {
                last_report = Instant::now();
                log::info!(
                    "saving to {}: {} of {} MiB of memory written",
                    path.display(),
                    done >> 20,
                    total >> 20
                );
            }
        };
        let bytes = crate::snapshot::write_state(
            path,
            &config,
            machine,
            &self.mem,
            SystemTime::now(),
            &mut progress,
        )
        .map_err(|e| ApiError::internal(e.to_string()))?;
        let millis = t0.elapsed().as_secs_f64() * 1000.0;
        log::info!(
            "saved the VM to {} ({bytes} bytes, {millis:.1} ms)",
            path.display()
        );
        Ok(serde_json::json!({
            "path": path.display().to_string(),
            "bytes": bytes,
            "millis": millis,
        }))
    }

    fn handle(&self, r: Request, queue: &ApiQueue) -> Reply {
        let ok = || Ok(serde_json::json!({"ok": true}));
        match r {
            Request::Status => Ok(serde_json::json!({
                "state": if self.run_state.is_paused() { "paused" } else { "running" },
                "uptime_secs": self.uptime().as_secs_f64(),
                "process_uptime_secs": queue.started.elapsed().as_secs_f64(),
                "config": queue.config,
            })),
            // The buffer is plain memory behind a lock: reading it needs no pause, and a
            // paused VM's screen is what it showed when it stopped.
            Request::Screen => Ok(serde_json::json!({
                "rows": SCREEN_ROWS,
                "columns": SCREEN_COLUMNS,
                "text": self.machine.vga_text.lock().unwrap().text(),
            })),
            Request::Pause => {
                if self.run_state.is_paused() {
                    return Err(ApiError::conflict("the VM is already paused"));
                }
                self.pause()?;
                ok()
            }
            Request::Resume => {
                if !self.run_state.is_paused() {
                    return Err(ApiError::conflict("the VM is not paused"));
                }
                self.resume();
                ok()
            }
            Request::Save { path, resume } => {
                let was_paused = self.run_state.is_paused();
                let r = self.save(&path);
                match (&r, resume) {
                    (Ok(_), false) => self.control.stop(StopReason::Saved(path)),
                    _ if !was_paused => self.resume(),
                    _ => {}
                }
                r
            }
            Request::Reset => {
                self.control
                    .stop(StopReason::Device(devices::VmRequest::Reset));
                ok()
            }
            Request::PowerOff => {
                self.control.stop(StopReason::PoweredOffByUser);
                ok()
            }
            Request::Shutdown => {
                if self.run_state.is_paused() {
                    return Err(ApiError::conflict(
                        "the VM is paused: resume it so that the guest can shut down",
                    ));
                }
                let io = self.machine.piix4_pm.lock().unwrap().pm_io();
                let listening = io.lock().unwrap().press_power_button();
                if listening {
                    ok()
                } else {
                    Err(ApiError::conflict(
                        "the guest has not enabled ACPI power button events (no ACPI OS running?)",
                    ))
                }
            }
            Request::Link { nic, up } => {
                if self.machine.set_link(nic, up) {
                    ok()
                } else {
                    Err(ApiError::not_found(format!(
                        "there is no NIC {nic} (the VM has {})",
                        self.machine.nics.len()
                    )))
                }
            }
        }
    }
}

/// The event-loop side: answers queued requests for one boot of the VM.
pub struct ApiBridge {
    pub queue: Arc<ApiQueue>,
    pub live: LiveVm,
}

impl MutEventSubscriber for ApiBridge {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(&self.queue.evt, EventSet::IN));
        // Requests that came in while the VM was rebooting.
        let _ = self.queue.evt.write(1);
    }

    fn process(&mut self, _: Events, _: &mut EventOps) {
        let _ = self.queue.evt.read();
        loop {
            if self.live.control.is_stopping() {
                return;
            }
            let next = self
                .queue
                .queue
                .lock()
                .unwrap()
                .as_mut()
                .and_then(VecDeque::pop_front);
            let Some((req, tx)) = next else { return };
            let reply = self.live.handle(req, &self.queue);
            let _ = tx.send(reply);
        }
    }
}
