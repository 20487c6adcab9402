//! The emulated PC's wiring: which device sits at which port, PCI function and interrupt line.
//! Devices own behaviour; this module only places them (DESIGN.md, "The VMM owns wiring").

use std::sync::{Arc, Mutex};

use arch::layout::{self, MemoryLayout};
use devices::dma::GuestMemory;
use devices::i440bx::I440bx;
use devices::i8042::I8042;
use devices::ide::{spec as ide_spec, IdeDrive, IdeDrives, Piix4Ide};
use devices::lpt::Lpt;
use devices::pci::{PciConfigMech1, PciRoot};
use devices::piix4::{Piix4Isa, Piix4Pm, Port92};
use devices::post::PostCode;
use devices::rtc::Rtc;
use devices::scsi::ScsiCdrom;
use devices::serial::Serial;
use devices::tulip::{Tulip, TulipConfig, TulipCore};
use devices::vga_text::{self, VgaText};
use devices::{Bus, Irq, SharedDevice, VmControl};
use kvm_ioctls::VmFd;

use crate::control::Control;
use crate::event_loop::{ConsoleInput, DeviceGate, InputSink, Subscriber, TimerWatch};
use crate::irq::{KvmIrq, SharedLevelIrq};
use crate::nic::{BackendSink, NetRx, RxReady};
use crate::storage::DriveKind;
use crate::timer::{DeviceTimer, TimerFd};
use crate::vm::HostResources;

/// PCI device numbers on bus 0.
pub const I440BX_DEVFN: (u8, u8) = (0, 0);
pub const PIIX4_ISA_DEVFN: (u8, u8) = (7, 0);
pub const PIIX4_IDE_DEVFN: (u8, u8) = (7, 1);
/// The PIIX4 IDE channels' legacy interrupt lines.
pub const IDE_IRQS: [u32; 2] = [14, 15];
pub const PIIX4_PM_DEVFN: (u8, u8) = (7, 3);
/// The network cards' PCI devices (function 0), in `--nic` order. Hyper-V generation 1 puts its
/// legacy (21140) network adapter at 00:0a.0.
pub const NIC_SLOTS: [u8; crate::nic::MAX_NICS] = [10, 11, 12, 13];
/// Where the firmware leaves NIC n's I/O BAR: NIC_IO_BASE + n * NIC_IO_STRIDE.
pub const NIC_IO_BASE: u16 = 0xc000;
pub const NIC_IO_STRIDE: u16 = 0x100;
/// Where it leaves NIC n's memory BAR: NIC_MMIO_BASE + n * NIC_MMIO_STRIDE (inside the host
/// bridge's 32-bit window, below the IOAPIC).
pub const NIC_MMIO_BASE: u32 = 0xfebf_0000;
pub const NIC_MMIO_STRIDE: u32 = 0x1000;

/// The GSI a function's INTA# reaches: the swizzle the DSDT's _PRT describes.
pub fn pci_inta_gsi(slot: u8) -> u32 {
    u32::from(layout::PIRQ_IRQS[usize::from(slot) % layout::PIRQ_IRQS.len()])
}

/// What the machine is built from.
pub struct MachineHost<'a> {
    pub vm: Arc<VmFd>,
    pub io_bus: Arc<Bus>,
    pub mmio_bus: Arc<Bus>,
    pub control: Arc<Control>,
    pub layout: &'a MemoryLayout,
    pub host: &'a HostResources,
    /// Guest RAM for bus-master DMA.
    pub mem: GuestMemory,
}

/// The platform devices of one boot of the VM.
#[derive(Clone)]
pub struct Machine {
    pub serial: [Arc<Mutex<Serial>>; 2],
    pub rtc: Arc<Mutex<Rtc>>,
    rtc_timer: Arc<TimerFd>,
    pub pci: Arc<Mutex<PciRoot>>,
    pub post: Arc<Mutex<PostCode>>,
    /// The colour text buffer at 0xB8000 (INT 10h writes there; nothing displays it yet).
    pub vga_text: Arc<Mutex<VgaText>>,
    /// QEMU's firmware configuration device, for a `--bios` image (the VM adds it).
    pub fw_cfg: Option<Arc<Mutex<devices::fw_cfg::FwCfg>>>,
    lpt: Arc<Mutex<Lpt>>,
    i8042: Arc<Mutex<I8042>>,
    port92: Arc<Mutex<Port92>>,
    pci_mech: Arc<Mutex<PciConfigMech1>>,
    i440bx: Arc<Mutex<I440bx>>,
    piix4_isa: Arc<Mutex<Piix4Isa>>,
    pub piix4_pm: Arc<Mutex<Piix4Pm>>,
    ide: Arc<Mutex<Piix4Ide>>,
    /// The CD drives' SCSI targets, in drive order.
    cdroms: Vec<Arc<Mutex<ScsiCdrom>>>,
    consoles: [Arc<Mutex<crate::console::ConsoleBackend>>; 2],
    cmos: Arc<Mutex<Option<devices::rtc::RtcState>>>,
    pub nics: Vec<NicParts>,
    /// Holds device timers, received frames and console input while the VM is paused.
    pub gate: Arc<DeviceGate>,
}

/// Every device's guest-visible state, for a saved state. New fields get `#[serde(default)]`;
/// existing ones are never renamed or renumbered.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct MachineState {
    pub serial: Vec<devices::serial::SerialState>,
    pub lpt: devices::lpt::LptState,
    pub rtc: devices::rtc::RtcState,
    pub i8042: devices::i8042::I8042State,
    pub post: devices::post::PostCodeState,
    pub port92: devices::piix4::Port92State,
    pub pci_mech: devices::pci::PciConfigMech1State,
    pub i440bx: devices::i440bx::I440bxState,
    pub piix4_isa: devices::piix4::Piix4IsaState,
    pub piix4_pm: devices::piix4::Piix4PmState,
    pub pm_io: devices::piix4::Piix4PmIoState,
    pub ide: devices::ide::Piix4IdeState,
    pub cdroms: Vec<devices::scsi::ScsiCdromState>,
    pub nics: Vec<devices::tulip::TulipState>,
    /// Absent in states saved before kettle had the text buffer (then it starts blank).
    #[serde(default)]
    pub vga_text: Option<devices::vga_text::VgaTextState>,
    /// The fw_cfg device's selector, offset and DMA address (VMs running a `--bios` image).
    #[serde(default)]
    pub fw_cfg: Option<devices::fw_cfg::FwCfgState>,
}

/// One network card of this boot and what the event loop needs of it.
#[derive(Clone)]
pub struct NicParts {
    pub tulip: Arc<Mutex<Tulip>>,
    core: Arc<Mutex<TulipCore>>,
    timer: Arc<TimerFd>,
    ready: Arc<RxReady>,
    backend: Arc<dyn crate::net::NetBackend>,
}

/// The IDE drives of this boot, from the drives the host opened once for the whole run (a CD
/// drive is new each boot: a reset powers its state up again), and the CD drives' targets.
fn ide_drives(host: &HostResources) -> (IdeDrives, Vec<Arc<Mutex<ScsiCdrom>>>) {
    let mut drives: IdeDrives = Default::default();
    let mut cdroms = Vec::new();
    for d in &host.drives {
        let drive = match d.kind {
            DriveKind::Disk => IdeDrive::disk(d.backend.clone()),
            DriveKind::Cdrom => {
                let cd = Arc::new(Mutex::new(ScsiCdrom::new(Some(d.backend.clone()))));
                cdroms.push(cd.clone());
                IdeDrive::cdrom(cd)
            }
        };
        drives[usize::from(d.slot.channel)][usize::from(d.slot.device)] = Some(drive);
    }
    (drives, cdroms)
}

impl InputSink for Serial {
    fn push(&mut self, bytes: &[u8]) -> usize {
        self.enqueue_input(bytes)
    }
}

fn place<T: devices::BusDevice + 'static>(
    bus: &Bus,
    base: u16,
    len: u16,
    dev: &Arc<Mutex<T>>,
) -> Result<(), String> {
    let shared: SharedDevice = dev.clone();
    bus.insert(u64::from(base), u64::from(len), shared)
        .map_err(|e| format!("placing a device at port {base:#x}: {e}"))
}

impl Machine {
    pub fn create(h: MachineHost) -> Result<Self, String> {
        let irq = |n: u32| -> Irq { KvmIrq::new(h.vm.clone(), n) };
        let control: Arc<dyn VmControl> = h.control.clone();
        let bus = &h.io_bus;

        let serial = [
            Arc::new(Mutex::new(Serial::new(
                irq(layout::COM1_IRQ),
                h.host.serial[0].lock().unwrap().output(),
            ))),
            Arc::new(Mutex::new(Serial::new(
                irq(layout::COM2_IRQ),
                h.host.serial[1].lock().unwrap().output(),
            ))),
        ];
        place(bus, layout::COM1_PORT, 8, &serial[0])?;
        place(bus, layout::COM2_PORT, 8, &serial[1])?;

        let lpt_out = match &h.host.lpt {
            Some(f) => Some(
                Box::new(f.try_clone().map_err(|e| format!("LPT output file: {e}"))?)
                    as Box<dyn std::io::Write + Send>,
            ),
            None => None,
        };
        let lpt = Arc::new(Mutex::new(Lpt::new(irq(layout::LPT1_IRQ), lpt_out)));
        place(bus, layout::LPT1_PORT, 3, &lpt)?;

        let rtc_timer = TimerFd::new().map_err(|e| format!("RTC timer: {e}"))?;
        let rtc = Arc::new(Mutex::new(Rtc::new(
            irq(layout::RTC_IRQ),
            Box::new(DeviceTimer(rtc_timer.clone())),
            h.layout.low_ram_end(),
            h.layout.high_ram_size(),
        )));
        let disks: Vec<usize> = h
            .host
            .drives
            .iter()
            .filter(|d| d.kind == crate::storage::DriveKind::Disk)
            .map(|d| d.slot.index())
            .collect();
        rtc.lock().unwrap().set_lba_translation(&disks);
        if let Some(saved) = h.host.cmos.lock().unwrap().as_ref() {
            // A reboot: the CMOS is battery-backed, so time and NVRAM carry over.
            rtc.lock().unwrap().restore(saved);
        }
        place(bus, layout::RTC_PORT, 2, &rtc)?;

        let i8042 = Arc::new(Mutex::new(I8042::new(
            irq(layout::KEYBOARD_IRQ),
            irq(layout::MOUSE_IRQ),
            control.clone(),
        )));
        place(bus, layout::I8042_DATA_PORT, 5, &i8042)?;

        let post = Arc::new(Mutex::new(PostCode::new()));
        place(bus, layout::POST_PORT, 1, &post)?;
        let vga_text = Arc::new(Mutex::new(VgaText::new()));
        h.mmio_bus
            .insert(
                vga_text::BASE,
                vga_text::SIZE as u64,
                vga_text.clone() as SharedDevice,
            )
            .map_err(|e| format!("VGA text memory: {e}"))?;
        let port92 = Arc::new(Mutex::new(Port92::new(control.clone())));
        place(bus, layout::PORT92, 1, &port92)?;

        let mut root = PciRoot::new();
        let i440bx = Arc::new(Mutex::new(I440bx::new(h.layout.low_ram_end())));
        root.add(I440BX_DEVFN, i440bx.clone())
            .map_err(|e| e.to_string())?;
        let piix4_isa = Arc::new(Mutex::new(Piix4Isa::new(layout::PIRQ_IRQS)));
        root.add(PIIX4_ISA_DEVFN, piix4_isa.clone())
            .map_err(|e| e.to_string())?;
        let pm = Piix4Pm::new(bus.clone(), irq(layout::SCI_IRQ), control.clone())
            .map_err(|e| format!("PIIX4 power management: {e}"))?;
        let piix4_pm = Arc::new(Mutex::new(pm));
        root.add(PIIX4_PM_DEVFN, piix4_pm.clone())
            .map_err(|e| e.to_string())?;
        let (drives, cdroms) = ide_drives(h.host);
        let ide = Arc::new(Mutex::new(
            Piix4Ide::new(
                bus.clone(),
                [irq(IDE_IRQS[0]), irq(IDE_IRQS[1])],
                h.mem.clone(),
                drives,
            )
            .map_err(|e| format!("PIIX4 IDE: {e}"))?,
        ));
        for ch in 0..2 {
            let (cmd, ctl) = ide.lock().unwrap().channel_ports(ch);
            for (base, len, dev) in [
                (
                    ide_spec::COMMAND_BLOCK[ch],
                    ide_spec::COMMAND_BLOCK_LEN,
                    cmd,
                ),
                (
                    ide_spec::CONTROL_BLOCK[ch],
                    ide_spec::CONTROL_BLOCK_LEN,
                    ctl,
                ),
            ] {
                bus.insert(u64::from(base), u64::from(len), dev)
                    .map_err(|e| format!("placing IDE channel {ch} at {base:#x}: {e}"))?;
            }
        }
        root.add(PIIX4_IDE_DEVFN, ide.clone())
            .map_err(|e| e.to_string())?;

        // PCI interrupts are level-triggered and wired-OR: cards whose INTA# reach the same PIRQ
        // share one line.
        let mut shared: std::collections::BTreeMap<u32, Arc<SharedLevelIrq>> = Default::default();
        let mut nics = Vec::new();
        for (i, nic) in h.host.nics.iter().enumerate() {
            let slot = NIC_SLOTS[i];
            let gsi = pci_inta_gsi(slot);
            let line = shared
                .entry(gsi)
                .or_insert_with(|| SharedLevelIrq::new(irq(gsi)))
                .source();
            let timer = TimerFd::new().map_err(|e| format!("NIC {i} timer: {e}"))?;
            let ready = Arc::new(RxReady(
                vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK)
                    .map_err(|e| format!("NIC {i} eventfd: {e}"))?,
            ));
            let tulip = Tulip::new(
                bus.clone(),
                h.mmio_bus.clone(),
                line,
                h.mem.clone(),
                Box::new(DeviceTimer(timer.clone())),
                Box::new(BackendSink(nic.backend.clone())),
                ready.clone(),
                TulipConfig {
                    mac: nic.mac,
                    io_base: NIC_IO_BASE + i as u16 * NIC_IO_STRIDE,
                    mmio_base: NIC_MMIO_BASE + i as u32 * NIC_MMIO_STRIDE,
                    interrupt_line: gsi as u8,
                },
            )
            .map_err(|e| format!("NIC {i}: {e}"))?;
            let core = tulip.core();
            let tulip = Arc::new(Mutex::new(tulip));
            root.add((slot, 0), tulip.clone())
                .map_err(|e| e.to_string())?;
            nics.push(NicParts {
                tulip,
                core,
                timer,
                ready,
                backend: nic.backend.clone(),
            });
        }
        let pci = Arc::new(Mutex::new(root));
        let mech = Arc::new(Mutex::new(PciConfigMech1::new(pci.clone(), control)));
        place(bus, layout::PCI_CONFIG_PORT, 8, &mech)?;

        Ok(Self {
            serial,
            rtc,
            rtc_timer,
            pci,
            post,
            vga_text,
            fw_cfg: None,
            lpt,
            i8042,
            port92,
            pci_mech: mech,
            i440bx,
            piix4_isa,
            piix4_pm,
            ide,
            cdroms,
            consoles: h.host.serial.clone(),
            cmos: h.host.cmos.clone(),
            nics,
            gate: Arc::new(DeviceGate::default()),
        })
    }

    /// The event-loop subscribers of this boot: console input into each UART and the RTC timer.
    pub fn subscribers(&self, control: &Arc<Control>) -> std::io::Result<Vec<Subscriber>> {
        let mut v: Vec<Subscriber> = Vec::new();
        for (console, serial) in self.consoles.iter().zip(&self.serial) {
            let sink: Arc<Mutex<dyn InputSink>> = serial.clone();
            v.push(Arc::new(Mutex::new(ConsoleInput::new(
                console.clone(),
                sink,
                control.clone(),
                self.gate.clone(),
            )?)));
        }
        let rtc = self.rtc.clone();
        v.push(Arc::new(Mutex::new(TimerWatch::new(
            self.rtc_timer.clone(),
            self.gate.clone(),
            move || rtc.lock().unwrap().timer_expired(),
        )?)));
        for nic in &self.nics {
            v.push(Arc::new(Mutex::new(NetRx::new(
                nic.core.clone(),
                nic.backend.clone(),
                nic.ready.clone(),
                self.gate.clone(),
            )?)));
            let core = nic.core.clone();
            v.push(Arc::new(Mutex::new(TimerWatch::new(
                nic.timer.clone(),
                self.gate.clone(),
                move || core.lock().unwrap().timer_expired(),
            )?)));
        }
        Ok(v)
    }

    /// Every device's state (the vCPUs are paused and the event loop is the caller).
    pub fn state(&self) -> MachineState {
        // Guards in a struct expression live to its end: take the PM I/O block's state first.
        let pm_io = self.piix4_pm.lock().unwrap().pm_io();
        let pm_io = pm_io.lock().unwrap().state();
        MachineState {
            serial: self
                .serial
                .iter()
                .map(|s| s.lock().unwrap().state())
                .collect(),
            lpt: self.lpt.lock().unwrap().state(),
            rtc: self.rtc.lock().unwrap().state(),
            i8042: self.i8042.lock().unwrap().state(),
            post: self.post.lock().unwrap().state(),
            port92: self.port92.lock().unwrap().state(),
            pci_mech: self.pci_mech.lock().unwrap().state(),
            i440bx: self.i440bx.lock().unwrap().state(),
            piix4_isa: self.piix4_isa.lock().unwrap().state(),
            piix4_pm: self.piix4_pm.lock().unwrap().state(),
            pm_io,
            ide: self.ide.lock().unwrap().state(),
            cdroms: self
                .cdroms
                .iter()
                .map(|c| c.lock().unwrap().state())
                .collect(),
            nics: self
                .nics
                .iter()
                .map(|n| n.tulip.lock().unwrap().state())
                .collect(),
            vga_text: Some(self.vga_text.lock().unwrap().state()),
            fw_cfg: self.fw_cfg.as_ref().map(|d| d.lock().unwrap().state()),
        }
    }

    /// Puts every device back in a saved state (before any vCPU runs).
    pub fn restore(&self, s: &MachineState) -> Result<(), String> {
        // Every count first, so that a mismatch leaves no device half restored.
        for (what, saved, here) in [
            ("serial ports", s.serial.len(), self.serial.len()),
            ("network cards", s.nics.len(), self.nics.len()),
            ("CD drives", s.cdroms.len(), self.cdroms.len()),
        ] {
            if saved != here {
                return Err(format!("{saved} {what} saved, {here} configured"));
            }
        }
        if s.fw_cfg.is_some() != self.fw_cfg.is_some() {
            return Err(
                "the firmware configuration device (--bios) differs from the saved machine's"
                    .into(),
            );
        }
        if let Some(v) = &s.vga_text {
            v.check()?;
        }
        for (dev, st) in self.serial.iter().zip(&s.serial) {
            dev.lock().unwrap().restore(st);
        }
        self.lpt.lock().unwrap().restore(&s.lpt);
        self.rtc.lock().unwrap().restore(&s.rtc);
        self.i8042.lock().unwrap().restore(&s.i8042);
        self.post.lock().unwrap().restore(&s.post);
        if let Some(v) = &s.vga_text {
            self.vga_text.lock().unwrap().restore(v)?;
        }
        if let (Some(d), Some(f)) = (&self.fw_cfg, &s.fw_cfg) {
            d.lock().unwrap().restore(f);
        }
        self.port92.lock().unwrap().restore(&s.port92);
        self.pci_mech.lock().unwrap().restore(&s.pci_mech);
        self.i440bx.lock().unwrap().restore(&s.i440bx);
        self.piix4_isa.lock().unwrap().restore(&s.piix4_isa);
        self.piix4_pm.lock().unwrap().restore(&s.piix4_pm);
        let pm_io = self.piix4_pm.lock().unwrap().pm_io();
        pm_io.lock().unwrap().restore(&s.pm_io);
        for (cd, st) in self.cdroms.iter().zip(&s.cdroms) {
            cd.lock().unwrap().restore(st);
        }
        self.ide
            .lock()
            .unwrap()
            .restore(&s.ide)
            .map_err(|e| format!("IDE: {e}"))?;
        for (i, (n, st)) in self.nics.iter().zip(&s.nics).enumerate() {
            n.tulip
                .lock()
                .unwrap()
                .restore(st)
                .map_err(|e| format!("NIC {i}: {e}"))?;
        }
        Ok(())
    }

    /// Sets NIC `n`'s link (cable plugged in or not); false if there is no such NIC.
    pub fn set_link(&self, n: usize, up: bool) -> bool {
        match self.nics.get(n) {
            Some(nic) => {
                nic.core.lock().unwrap().set_link(up);
                true
            }
            None => false,
        }
    }

    /// Called when the VM has stopped: disarm timers and keep the CMOS for the next boot.
    pub fn shutdown(&self) {
        self.rtc_timer.set(None);
        for (i, nic) in self.nics.iter().enumerate() {
            nic.timer.set(None);
            let s = nic.backend.stats();
            log::info!(
                "NIC {i} ({}): sent {} frames ({} bytes), {} dropped; received {} frames ({} bytes)",
                nic.backend.describe(),
                s.tx_frames,
                s.tx_bytes,
                s.tx_dropped,
                s.rx_frames,
                s.rx_bytes
            );
        }
        *self.cmos.lock().unwrap() = Some(self.rtc.lock().unwrap().state());
    }
}
