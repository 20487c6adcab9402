//! vCPU threads: one named thread per vCPU running `KVM_RUN`, port and MMIO exits dispatched
//! synchronously to the buses, and a kick (signal + `immediate_exit`) that makes a vCPU leave
//! the guest promptly so the VMM can stop, pause or save it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use devices::{Bus, VmRequest};
use kvm_bindings::{kvm_regs, kvm_sregs};
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::os::unix::thread::JoinHandleExt;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::signal::{register_signal_handler, Killable};

use crate::control::{Control, StopReason};
use crate::snapshot::cpu::VcpuState;

/// The signal that kicks a vCPU out of `KVM_RUN` (the first real-time signal after libc's).
pub fn kick_signal() -> i32 {
    libc::SIGRTMIN()
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        register_signal_handler(kick_signal(), kick_handler)
            .expect("installing the vCPU kick signal handler");
    });
}

/// What the rest of the VMM holds for a running vCPU.
pub struct VcpuHandle {
    pub index: u32,
    thread: Option<JoinHandle<()>>,
    kicker: Kicker,
}

/// Kicks one vCPU out of `KVM_RUN`; clonable, for whoever pauses the VM.
#[derive(Clone)]
pub struct Kicker {
    /// Address of this vCPU's `kvm_run` page (for `immediate_exit`), 0 until the thread starts
    /// and again after it ends.
    run_page: Arc<AtomicU64>,
    pthread: libc::pthread_t,
}

impl Kicker {
    /// Makes the vCPU leave `KVM_RUN` as soon as possible: sets `immediate_exit` (covers a kick
    /// that lands just before the thread enters the guest) and signals the thread (covers one
    /// already inside).
    pub fn kick(&self) {
        let page = self.run_page.load(Ordering::Acquire);
        if page != 0 {
            // SAFETY: the kvm_run page stays mapped while the VcpuFd lives, which is until the
            // thread clears `run_page` on its way out; `immediate_exit` is a single byte written
            // atomically by the CPU, the same cross-thread write QEMU does.
            unsafe {
                let run = page as *mut kvm_bindings::kvm_run;
                std::ptr::write_volatile(std::ptr::addr_of_mut!((*run).immediate_exit), 1);
            }
            // SAFETY: the thread is alive while run_page is set (it clears it before exiting
            // and is joined only after); the signal's handler does nothing.
            unsafe {
                libc::pthread_kill(self.pthread, kick_signal());
            }
        }
    }
}

impl VcpuHandle {
    pub fn kick(&self) {
        self.kicker.kick();
        if self.kicker.run_page.load(Ordering::Acquire) == 0 {
            // Not started yet, or on its way out: a signal is harmless either way.
            if let Some(t) = &self.thread {
                let _ = t.kill(kick_signal());
            }
        }
    }

    pub fn kicker(&self) -> Kicker {
        self.kicker.clone()
    }

    pub fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("vCPU {} thread panicked", self.index);
            }
        }
    }
}

/// Everything a vCPU thread needs.
pub struct VcpuContext {
    pub index: u32,
    pub fd: VcpuFd,
    pub io_bus: Arc<Bus>,
    pub mmio_bus: Arc<Bus>,
    pub mem: GuestMemoryMmap,
    pub control: Arc<Control>,
    pub stop: Arc<AtomicBool>,
    /// Pause requests and state capture (save-state).
    pub run_state: Arc<RunState>,
    /// The MSRs a capture saves.
    pub msrs: Arc<Vec<u32>>,
    /// kettle's BIOS, when the VM runs it: writes to its trap port are BIOS calls.
    pub bios: Option<Arc<crate::bios::BiosRuntime>>,
}

/// Pausing the vCPUs: a request flag every vCPU checks after each exit, a count of parked
/// vCPUs, and state capture done by each parked vCPU on its own thread (it owns its fd).
pub struct RunState {
    pause: AtomicBool,
    inner: Mutex<RunInner>,
    cv: Condvar,
}

struct RunInner {
    parked: usize,
    capture_gen: u64,
    captured: Vec<Option<Result<VcpuState, String>>>,
}

impl RunState {
    pub fn new(vcpus: usize) -> Self {
        Self {
            pause: AtomicBool::new(false),
            inner: Mutex::new(RunInner {
                parked: 0,
                capture_gen: 0,
                captured: (0..vcpus).map(|_| None).collect(),
            }),
            cv: Condvar::new(),
        }
    }

    pub fn is_paused(&self) -> bool {
        self.pause.load(Ordering::Acquire)
    }

    /// Asks every vCPU to park, kicks them, and waits until `vcpus` are parked.
    pub fn pause(&self, kickers: &[Kicker], timeout: Duration) -> Result<(), String> {
        self.pause.store(true, Ordering::Release);
        let deadline = Instant::now() + timeout;
        let mut g = self.inner.lock().unwrap();
        while g.parked < kickers.len() {
            for k in kickers {
                k.kick();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let parked = g.parked;
                drop(g);
                self.resume();
                return Err(format!(
                    "only {parked} of {} vCPUs stopped within {timeout:?}",
                    kickers.len()
                ));
            }
            g = self
                .cv
                .wait_timeout(g, left.min(Duration::from_millis(20)))
                .unwrap()
                .0;
        }
        Ok(())
    }

    /// Lets parked vCPUs run again.
    pub fn resume(&self) {
        self.pause.store(false, Ordering::Release);
        let _g = self.inner.lock().unwrap();
        self.cv.notify_all();
    }

    /// Wakes parked vCPUs so that they notice a stop.
    pub fn wake_all(&self) {
        let _g = self.inner.lock().unwrap();
        self.cv.notify_all();
    }

    /// Has every parked vCPU read its state (the VM must be paused).
    pub fn capture(&self, vcpus: usize, timeout: Duration) -> Result<Vec<VcpuState>, String> {
        let deadline = Instant::now() + timeout;
        let mut g = self.inner.lock().unwrap();
        g.capture_gen += 1;
        for c in g.captured.iter_mut() {
            *c = None;
        }
        self.cv.notify_all();
        while g.captured.iter().take(vcpus).any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("the vCPUs did not report their state in time".into());
            }
            g = self.cv.wait_timeout(g, left).unwrap().0;
        }
        g.captured
            .iter_mut()
            .take(vcpus)
            .enumerate()
            .map(|(i, c)| c.take().unwrap().map_err(|e| format!("vCPU {i}: {e}")))
            .collect()
    }

    /// On a vCPU thread: stay parked while a pause is requested, capturing state on request.
    fn park(&self, ctx: &mut VcpuContext) {
        // Finish an I/O exit in flight (KVM completes it on the next KVM_RUN, which returns at
        // once with immediate_exit set): the saved registers then include its result.
        ctx.fd.set_kvm_immediate_exit(1);
        let _ = ctx.fd.run();
        ctx.fd.set_kvm_immediate_exit(0);
        // Tell a guest using kvmclock that it was paused (no soft-lockup reports on resume).
        let _ = ctx.fd.kvmclock_ctrl();
        let mut g = self.inner.lock().unwrap();
        g.parked += 1;
        self.cv.notify_all();
        let mut seen = g.capture_gen;
        while self.is_paused() && !ctx.stop.load(Ordering::Acquire) && !ctx.control.is_stopping() {
            if g.capture_gen != seen {
                seen = g.capture_gen;
                let r = VcpuState::capture(&ctx.fd, &ctx.msrs).map_err(|e| e.to_string());
                g.captured[ctx.index as usize] = Some(r);
                self.cv.notify_all();
            }
            g = self
                .cv
                .wait_timeout(g, Duration::from_millis(100))
                .unwrap()
                .0;
        }
        g.parked -= 1;
        drop(g);
        let _ = ctx.fd.kvmclock_ctrl();
    }
}

/// Starts the vCPU thread, named `kettle-vcpu<N>`.
pub fn spawn(ctx: VcpuContext) -> std::io::Result<VcpuHandle> {
    install_kick_handler();
    let index = ctx.index;
    let run_page = Arc::new(AtomicU64::new(0));
    let page = run_page.clone();
    let thread = std::thread::Builder::new()
        .name(format!("kettle-vcpu{index}"))
        .spawn(move || run(ctx, page))?;
    let pthread = thread.as_pthread_t();
    Ok(VcpuHandle {
        index,
        thread: Some(thread),
        kicker: Kicker { run_page, pthread },
    })
}

fn run(mut ctx: VcpuContext, page: Arc<AtomicU64>) {
    let run_ptr = ctx.fd.get_kvm_run() as *mut kvm_bindings::kvm_run as u64;
    page.store(run_ptr, Ordering::Release);
    let mut unhandled = RateLimit::default();
    while !ctx.stop.load(Ordering::Acquire) && !ctx.control.is_stopping() {
        if ctx.run_state.is_paused() {
            let rs = ctx.run_state.clone();
            rs.park(&mut ctx);
            continue;
        }
        let exit = ctx.fd.run();
        let bios_port = u16::from(firmware::bios::rom::BIOS_PORT);
        if let (Some(bios), Ok(VcpuExit::IoOut(port, _))) = (&ctx.bios, &exit) {
            if *port == bios_port {
                match bios.trap(&ctx.fd, &ctx.mem) {
                    // Not a BIOS call: nothing decodes the port, so the write goes nowhere.
                    Ok(_) => continue,
                    Err(e) => {
                        let r = fault(&mut ctx, &format!("BIOS call: {e}"), None);
                        ctx.control.stop(r);
                        break;
                    }
                }
            }
        }
        match exit {
            Ok(VcpuExit::IoIn(port, data)) => {
                if !ctx.io_bus.read(u64::from(port), data) && unhandled.allow() {
                    log::debug!("vCPU {}: read of unassigned port {port:#x}", ctx.index);
                }
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                if !ctx.io_bus.write(u64::from(port), data) && unhandled.allow() {
                    log::debug!("vCPU {}: write to unassigned port {port:#x}", ctx.index);
                }
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !ctx.mmio_bus.read(addr, data) && unhandled.allow() {
                    log::debug!("vCPU {}: read of unassigned MMIO {addr:#x}", ctx.index);
                }
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if !ctx.mmio_bus.write(addr, data) && unhandled.allow() {
                    log::debug!("vCPU {}: write to unassigned MMIO {addr:#x}", ctx.index);
                }
            }
            Ok(VcpuExit::Intr) => {}
            // With the in-kernel irqchip HLT is handled by KVM; an exit here means the guest
            // halted with interrupts that can never wake it. Stay halted: re-enter.
            Ok(VcpuExit::Hlt) => {}
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                let reason = match kind {
                    kvm_bindings::KVM_SYSTEM_EVENT_RESET => StopReason::Device(VmRequest::Reset),
                    kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => {
                        StopReason::Device(VmRequest::PowerOff)
                    }
                    other => fault(&mut ctx, &format!("system event {other}"), None),
                };
                ctx.control.stop(reason);
                break;
            }
            Ok(VcpuExit::Shutdown) => {
                let r = fault(&mut ctx, "shutdown (triple fault)", None);
                ctx.control.stop(r);
                break;
            }
            Ok(VcpuExit::InternalError) => {
                let detail = internal_error_detail(&mut ctx.fd);
                let r = fault(&mut ctx, "KVM internal error", Some(detail));
                ctx.control.stop(r);
                break;
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                let detail = format!("hardware entry failure reason {reason:#x} on host CPU {cpu}");
                let r = fault(&mut ctx, "VM entry failed", Some(detail));
                ctx.control.stop(r);
                break;
            }
            Ok(other) => {
                let what = format!("unexpected exit {other:?}");
                let r = fault(&mut ctx, &what, None);
                ctx.control.stop(r);
                break;
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                ctx.fd.set_kvm_immediate_exit(0);
            }
            Err(e) => {
                let r = fault(&mut ctx, &format!("KVM_RUN failed: {e}"), None);
                ctx.control.stop(r);
                break;
            }
        }
    }
    page.store(0, Ordering::Release);
}

/// The `internal` part of kvm_run after `KVM_EXIT_INTERNAL_ERROR`.
fn internal_error_detail(fd: &mut VcpuFd) -> String {
    let run = fd.get_kvm_run();
    // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the active member.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let what = match internal.suberror {
        kvm_bindings::KVM_INTERNAL_ERROR_EMULATION => "instruction emulation failed",
        kvm_bindings::KVM_INTERNAL_ERROR_SIMUL_EX => "exception while delivering an exception",
        kvm_bindings::KVM_INTERNAL_ERROR_DELIVERY_EV => "event delivery failed",
        _ => "suberror",
    };
    let n = (internal.ndata as usize).min(internal.data.len());
    format!(
        "{what} (suberror {}, data {:x?})",
        internal.suberror,
        &internal.data[..n]
    )
}

/// Builds the one clear message for a guest that cannot go on: reason, RIP, mode and the bytes
/// at RIP.
fn fault(ctx: &mut VcpuContext, reason: &str, detail: Option<String>) -> StopReason {
    let state = describe_cpu(&ctx.fd, &ctx.mem);
    let mut msg = format!("vCPU {}: {reason}", ctx.index);
    if let Some(d) = detail {
        msg.push_str(&format!(": {d}"));
    }
    msg.push_str(&format!("; {state}"));
    StopReason::Fault(msg)
}

/// "RIP 0x...(mode), instruction bytes ..." for a vCPU, as far as it can be read.
pub fn describe_cpu(fd: &VcpuFd, mem: &GuestMemoryMmap) -> String {
    let (regs, sregs) = match (fd.get_regs(), fd.get_sregs()) {
        (Ok(r), Ok(s)) => (r, s),
        (Err(e), _) | (_, Err(e)) => return format!("registers unreadable: {e}"),
    };
    let mode = cpu_mode(&sregs);
    let linear = if mode == "64-bit long mode" {
        regs.rip
    } else {
        sregs.cs.base.wrapping_add(regs.rip)
    };
    let bytes = match fd.translate_gva(linear) {
        Ok(t) if t.valid != 0 => {
            let mut b = [0u8; 16];
            match mem.read_slice(&mut b, GuestAddress(t.physical_address)) {
                Ok(()) => format!("{b:02x?}"),
                Err(_) => format!("not in RAM (physical {:#x})", t.physical_address),
            }
        }
        _ => "unmapped".to_string(),
    };
    format!(
        "RIP {:#x} CS {:#x} ({mode}), instruction bytes at RIP: {bytes}; {}",
        regs.rip,
        sregs.cs.selector,
        short_regs(&regs)
    )
}

fn short_regs(r: &kvm_regs) -> String {
    format!(
        "RAX {:#x} RBX {:#x} RCX {:#x} RDX {:#x} RSP {:#x} RFLAGS {:#x}",
        r.rax, r.rbx, r.rcx, r.rdx, r.rsp, r.rflags
    )
}

/// The CPU's operating mode in words.
pub fn cpu_mode(s: &kvm_sregs) -> &'static str {
    const CR0_PE: u64 = 1;
    const CR0_PG: u64 = 1 << 31;
    const EFER_LMA: u64 = 1 << 10;
    if s.cr0 & CR0_PE == 0 {
        "real mode"
    } else if s.efer & EFER_LMA != 0 {
        if s.cs.l != 0 {
            "64-bit long mode"
        } else {
            "compatibility mode"
        }
    } else if s.cr0 & CR0_PG != 0 {
        "protected mode with paging"
    } else {
        "protected mode"
    }
}

/// Allows the first 10 messages, then one per 1000.
#[derive(Default)]
struct RateLimit(u64);

impl RateLimit {
    fn allow(&mut self) -> bool {
        self.0 += 1;
        self.0 <= 10 || self.0.is_multiple_of(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_named() {
        let mut s = kvm_sregs::default();
        assert_eq!(cpu_mode(&s), "real mode");
        s.cr0 = 1;
        assert_eq!(cpu_mode(&s), "protected mode");
        s.cr0 |= 1 << 31;
        assert_eq!(cpu_mode(&s), "protected mode with paging");
        s.efer = 1 << 10;
        assert_eq!(cpu_mode(&s), "compatibility mode");
        s.cs.l = 1;
        assert_eq!(cpu_mode(&s), "64-bit long mode");
    }

    #[test]
    fn rate_limit_lets_a_few_through() {
        let mut r = RateLimit::default();
        let n = (0..5000).filter(|_| r.allow()).count();
        assert_eq!(n, 10 + 5);
    }
}
