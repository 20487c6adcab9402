//! Why a VM stops, and the one place that records it: devices (reset, power-off), vCPUs (faults)
//! and the user (escape key) all report here; the event loop wakes on the event fd.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use devices::{VmControl, VmRequest};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The guest reset or powered off the machine.
    Device(VmRequest),
    /// The guest cannot go on; the message says why (reason, RIP, mode, instruction bytes).
    Fault(String),
    /// The user quit from the console (escape key).
    Quit,
    /// The VM was saved to this file and stops (control API save-state without resume).
    Saved(std::path::PathBuf),
    /// The control API pulled the plug (power-off).
    PoweredOffByUser,
}

pub struct Control {
    reason: Mutex<Option<StopReason>>,
    stopping: AtomicBool,
    evt: EventFd,
}

impl Control {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            reason: Mutex::new(None),
            stopping: AtomicBool::new(false),
            evt: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// Records why the VM stops; the first reason wins.
    pub fn stop(&self, reason: StopReason) {
        let mut r = self.reason.lock().unwrap();
        if r.is_none() {
            *r = Some(reason);
        }
        drop(r);
        self.stopping.store(true, Ordering::Release);
        let _ = self.evt.write(1);
    }

    /// True once any stop was requested: a vCPU checks this after each exit so that the
    /// instruction after a reset or power-off write never runs, as on real hardware.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub fn reason(&self) -> Option<StopReason> {
        self.reason.lock().unwrap().clone()
    }

    pub fn event_fd(&self) -> &EventFd {
        &self.evt
    }
}

impl VmControl for Control {
    fn request(&self, req: VmRequest) {
        self.stop(StopReason::Device(req));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins_and_wakes_the_loop() {
        let c = Control::new().unwrap();
        c.request(VmRequest::PowerOff);
        c.stop(StopReason::Quit);
        assert_eq!(c.reason(), Some(StopReason::Device(VmRequest::PowerOff)));
        assert_eq!(c.event_fd().read().unwrap(), 2);
    }
}
