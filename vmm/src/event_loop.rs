//! The event loop: one thread (the caller's) waiting on everything asynchronous: console input,
//! device timers and the stop event. Built on `event-manager`.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};

use crate::console::{ConsoleBackend, ConsoleEvent};
use crate::control::{Control, StopReason};
use crate::timer::TimerFd;

pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

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
}

/// Stop reading the host side while this much input waits for the guest.
const PENDING_LIMIT: usize = 64 * 1024;
const RETRY: Duration = Duration::from_millis(5);

impl ConsoleInput {
    pub fn new(
        backend: Arc<Mutex<ConsoleBackend>>,
        sink: Arc<Mutex<dyn InputSink>>,
        control: Arc<Control>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            backend,
            sink,
            control,
            pending: VecDeque::new(),
            retry: TimerFd::new()?,
            watched: Vec::new(),
        })
    }

    fn flush(&mut self) {
        while !self.pending.is_empty() {
            let (a, _) = self.pending.as_slices();
            let n = self.sink.lock().unwrap().push(a);
            if n == 0 {
                break;
            }
            self.pending.drain(..n);
        }
        if !self.pending.is_empty() {
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
        self.rewatch(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.retry.as_raw_fd() {
            self.retry.consume();
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

/// Calls a device's expiry handler when its timerfd fires.
pub struct TimerWatch<F: FnMut() + Send> {
    timer: Arc<TimerFd>,
    on_expiry: F,
}

impl<F: FnMut() + Send> TimerWatch<F> {
    pub fn new(timer: Arc<TimerFd>, on_expiry: F) -> Self {
        Self { timer, on_expiry }
    }
}

impl<F: FnMut() + Send> MutEventSubscriber for TimerWatch<F> {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(&*self.timer, EventSet::IN));
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        if self.timer.consume() {
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
