//! Device timers backed by a `timerfd`, watched by the event loop.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

/// A one-shot monotonic timerfd that may be armed from any thread.
pub struct TimerFd(OwnedFd);

impl TimerFd {
    pub fn new() -> std::io::Result<Arc<Self>> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Arc::new(Self(unsafe { OwnedFd::from_raw_fd(fd) })))
    }

    /// Arms the timer to fire once after `after` (a zero duration fires at once), or disarms it.
    pub fn set(&self, after: Option<Duration>) {
        let mut spec: libc::itimerspec = unsafe { std::mem::zeroed() };
        if let Some(d) = after {
            let d = d.max(Duration::from_nanos(1));
            spec.it_value.tv_sec = d.as_secs() as libc::time_t;
            spec.it_value.tv_nsec = d.subsec_nanos() as libc::c_long;
        }
        // SAFETY: valid fd and a properly initialised itimerspec.
        let r =
            unsafe { libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if r < 0 {
            log::warn!(
                "timerfd_settime failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }

    /// Consumes an expiry; true if the timer had fired.
    pub fn consume(&self) -> bool {
        let mut n = 0u64;
        // SAFETY: reading 8 bytes into a u64 from a valid timerfd.
        let r = unsafe {
            libc::read(
                self.0.as_raw_fd(),
                &mut n as *mut u64 as *mut libc::c_void,
                8,
            )
        };
        r == 8 && n > 0
    }
}

impl AsRawFd for TimerFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// The [`devices::Timer`] handed to a device.
pub struct DeviceTimer(pub Arc<TimerFd>);

impl devices::Timer for DeviceTimer {
    fn arm(&mut self, after: Option<Duration>) {
        self.0.set(after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_and_disarms() {
        let t = TimerFd::new().unwrap();
        assert!(!t.consume());
        t.set(Some(Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(20));
        assert!(t.consume());
        assert!(!t.consume());
        t.set(Some(Duration::from_millis(1)));
        t.set(None);
        std::thread::sleep(Duration::from_millis(10));
        assert!(!t.consume());
    }
}
