//! The event loop: one thread (the caller's) waiting on everything asynchronous: console input,
//! device timers and the stop event. Built on `event-manager`.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::eventfd::EventFd;

use crate::console::{ConsoleBackend, ConsoleEvent};
use crate::control::{Control, StopReason};
use crate::timer::TimerFd;

pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Holds the devices' event-loop work while the VM is paused: device timers do not fire into
/// the guest, received frames wait in their backends and console input waits in kettle, so a
/// paused VM's devices stay as they were (the control API's pause). Opening the gate wakes every
/// gated subscriber through its own eventfd, and the held work runs then.
#[derive(Default)]
pub struct DeviceGate {
    closed: AtomicBool,
    wakers: Mutex<Vec<Arc<EventFd>>>,
}

impl DeviceGate {
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Holds device work from now on.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Lets device work run again and wakes every gated subscriber.
    pub fn open(&self) {
        self.closed.store(false, Ordering::Release);
        for w in self.wakers.lock().unwrap().iter() {
            let _ = w.write(1);
        }
    }

    /// A new eventfd that [`DeviceGate::open`] writes to.
    pub fn waker(&self) -> std::io::Result<Arc<EventFd>> {
        let w = Arc::new(EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?);
        self.wakers.lock().unwrap().push(w.clone());
        Ok(w)
    }
}

/// Where console input goes: a UART's receive side.
pub trait InputSink: Send {
    /// Accepts as many bytes as there is room for; returns how many.
    fn push(&mut self, bytes: &[u8]) -> usize;
}

/// Feeds one console backend into one serial port, holding back input while the UART is full
/// (a retry timer drains the rest) and turning the escape key into a stop.
pub struct ConsoleInput {
    backend: Arc<Mutex<ConsoleBackend>>,
    sink: Arc<Mutex<dyn InputSink>>,
    control: Arc<Control>,
    pending: VecDeque<u8>,
    retry: Arc<TimerFd>,
    watched: Vec<RawFd>,
    gate: Arc<DeviceGate>,
    woken: Arc<EventFd>,
}

/// Stop reading the host side while this much input waits for the guest.
const PENDING_LIMIT: usize = 64 * 1024;
const RETRY: Duration = Duration::from_millis(5);

impl ConsoleInput {
    pub fn new(
        backend: Arc<Mutex<ConsoleBackend>>,
        sink: Arc<Mutex<dyn InputSink>>,
        control: Arc<Control>,
        gate: Arc<DeviceGate>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            backend,
            sink,
            control,
            pending: VecDeque::new(),
            retry: TimerFd::new()?,
            watched: Vec::new(),
            woken: gate.waker()?,
            gate,
        })
    }

    /// Hands pending input to the UART; while the gate is closed it waits (the gate's waker
    /// brings it back).
    fn flush(&mut self) {
        while !self.pending.is_empty() && !self.gate.is_closed() {
            let (a, _) = self.pending.as_slices();
            let n = self.sink.lock().unwrap().push(a);
            if n == 0 {
                break;
            }
            self.pending.drain(..n);
        }
        if !self.pending.is_empty() && !self.gate.is_closed() {
            self.retry.set(Some(RETRY));
        }
    }

    fn rewatch(&mut self, ops: &mut EventOps) {
        for fd in self.watched.drain(..) {
            let _ = ops.remove(Events::empty_raw(fd));
        }
        if self.pending.len() >= PENDING_LIMIT {
            return;
        }
        let fds = self.backend.lock().unwrap().input_fds();
        for fd in fds {
            if ops.add(Events::new_raw(fd, EventSet::IN)).is_ok() {
                self.watched.push(fd);
            }
        }
    }
}

impl MutEventSubscriber for ConsoleInput {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(&*self.retry, EventSet::IN));
        let _ = ops.add(Events::new(&*self.woken, EventSet::IN));
        self.rewatch(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.retry.as_raw_fd() || fd == self.woken.as_raw_fd() {
            if fd == self.woken.as_raw_fd() {
                let _ = self.woken.read();
            } else {
                self.retry.consume();
            }
            let was_full = self.pending.len() >= PENDING_LIMIT;
            self.flush();
            if was_full && self.pending.len() < PENDING_LIMIT {
                self.rewatch(ops);
            }
            return;
        }
        let mut buf = Vec::new();
        let ev = self.backend.lock().unwrap().on_readable(fd, &mut buf);
        self.pending.extend(buf);
        self.flush();
        match ev {
            ConsoleEvent::Input => {
                if self.pending.len() >= PENDING_LIMIT {
                    self.rewatch(ops);
                }
            }
            ConsoleEvent::Quit => self.control.stop(StopReason::Quit),
            ConsoleEvent::FdsChanged => self.rewatch(ops),
            ConsoleEvent::Closed => {
                let _ = ops.remove(Events::empty_raw(fd));
                self.watched.retain(|&w| w != fd);
            }
        }
    }
}

/// Calls a device's expiry handler when its timerfd fires; an expiry while the gate is closed
/// is kept and handled when it opens (once: the devices re-arm from the current time).
pub struct TimerWatch<F: FnMut() + Send> {
    timer: Arc<TimerFd>,
    on_expiry: F,
    gate: Arc<DeviceGate>,
    woken: Arc<EventFd>,
    held: bool,
}

impl<F: FnMut() + Send> TimerWatch<F> {
    pub fn new(timer: Arc<TimerFd>, gate: Arc<DeviceGate>, on_expiry: F) -> std::io::Result<Self> {
        Ok(Self {
            timer,
            on_expiry,
            woken: gate.waker()?,
            gate,
            held: false,
        })
    }
}

impl<F: FnMut() + Send> MutEventSubscriber for TimerWatch<F> {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(&*self.timer, EventSet::IN));
        let _ = ops.add(Events::new(&*self.woken, EventSet::IN));
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.woken.as_raw_fd() {
            let _ = self.woken.read();
        } else if self.timer.consume() {
            self.held = true;
        }
        if self.held && !self.gate.is_closed() {
            self.held = false;
            (self.on_expiry)();
        }
    }
}

/// Runs the loop until the control says the VM stops.
pub fn run_until_stopped(
    subscribers: Vec<Subscriber>,
    control: &Control,
) -> Result<StopReason, event_manager::Error> {
    let mut em: EventManager<Subscriber> = EventManager::new()?;
    for s in subscribers {
        em.add_subscriber(s);
    }
    let stop_fd = control.event_fd().as_raw_fd();
    struct StopWatch(RawFd);
    impl MutEventSubscriber for StopWatch {
        fn init(&mut self, ops: &mut EventOps) {
            let _ = ops.add(Events::new_raw(self.0, EventSet::IN));
        }
        fn process(&mut self, _: Events, _: &mut EventOps) {}
    }
    em.add_subscriber(Arc::new(Mutex::new(StopWatch(stop_fd))));
    loop {
        if let Some(r) = control.reason() {
            return Ok(r);
        }
        match em.run_with_timeout(1000) {
            Ok(_) => {}
            Err(event_manager::Error::Epoll(e)) if e.errno() == libc::EINTR => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Runs the loop for about `ms` milliseconds.
    fn spin(em: &mut EventManager<Subscriber>, ms: u64) {
        let end = std::time::Instant::now() + Duration::from_millis(ms);
        while std::time::Instant::now() < end {
            let _ = em.run_with_timeout(5);
        }
    }

    #[test]
    fn a_timer_that_fires_while_the_gate_is_closed_is_handled_once_when_it_opens() {
        let gate = Arc::new(DeviceGate::default());
        let timer = TimerFd::new().unwrap();
        let fired = Arc::new(AtomicUsize::new(0));
        let f = fired.clone();
        let watch = TimerWatch::new(timer.clone(), gate.clone(), move || {
            f.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        let mut em: EventManager<Subscriber> = EventManager::new().unwrap();
        em.add_subscriber(Arc::new(Mutex::new(watch)));

        // Open: the expiry is handled at once.
        timer.set(Some(Duration::from_millis(1)));
        spin(&mut em, 30);
        assert_eq!(fired.load(Ordering::SeqCst), 1);

        // Closed: the expiry waits; it stays one even if the timer fires again meanwhile.
        gate.close();
        timer.set(Some(Duration::from_millis(1)));
        spin(&mut em, 30);
        timer.set(Some(Duration::from_millis(1)));
        spin(&mut em, 30);
        assert_eq!(
            fired.load(Ordering::SeqCst),
            1,
            "a device timer fired while paused"
        );
        gate.open();
        spin(&mut em, 30);
        assert_eq!(fired.load(Ordering::SeqCst), 2);

        // Opening again with nothing held handles nothing.
        gate.close();
        gate.open();
        spin(&mut em, 30);
        assert_eq!(fired.load(Ordering::SeqCst), 2);
    }
}
