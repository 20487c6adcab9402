//! One VM from configuration to exit: KVM VM with the in-kernel irqchip and PIT, guest RAM laid
//! out as a PC, the platform devices, the boot payload and firmware tables, vCPU threads and the
//! event loop. [`run`] restarts the VM when the guest reboots.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arch::layout::{MemoryLayout, RegionKind};
use devices::{Bus, VmRequest};
use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress,
};

use crate::boot::{self, EntryPoint};
use crate::config::{Firmware, VmConfig};
use crate::console::ConsoleBackend;
use crate::control::{Control, StopReason};
use crate::machine::{Machine, MachineHost};
use crate::vcpu::{self, VcpuContext, VcpuHandle};

/// Where KVM keeps its private TSS and identity-map pages (Intel VMX needs them): three pages
/// just below the BIOS alias at the top of the 4 GiB hole, reserved in e820.
const KVM_TSS_ADDR: u64 = 0xfffb_d000;
const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm: {0} (is the kvm module loaded and are you in the kvm group?)")]
    OpenKvm(kvm_ioctls::Error),
    #[error("KVM {what} failed: {err}")]
    Kvm {
        what: &'static str,
        err: kvm_ioctls::Error,
    },
    #[error("--cpus {asked} is more than this host's KVM allows ({max})")]
    TooManyCpus { asked: u32, max: usize },
    #[error("this host's KVM lacks {0}, which kettle needs")]
    MissingCap(&'static str),
    #[error("guest memory: {0}")]
    Memory(String),
    #[error(transparent)]
    Layout(#[from] arch::layout::LayoutError),
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error("setting up devices: {0}")]
    Devices(String),
    #[error("starting vCPU thread: {0}")]
    Thread(std::io::Error),
    #[error("event loop: {0}")]
    EventLoop(String),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |err| VmError::Kvm { what, err }
}

/// How a run of `kettle run` ended, when it ended well.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The guest powered the machine off.
    PowerOff,
    /// The guest rebooted and `--no-reboot` was given.
    Reboot,
    /// The user quit from the console.
    Quit,
    /// The VM was saved to this file (control API) and stopped.
    Saved(std::path::PathBuf),
    /// The control API turned the VM off.
    PoweredOffByUser,
}

/// How to run: the control API socket, and a saved state to start from.
#[derive(Default)]
pub struct RunOptions {
    pub api_socket: Option<std::path::PathBuf>,
    pub restore: Option<Restore>,
}

/// A saved state to start from instead of booting.
pub struct Restore {
    pub state: crate::snapshot::LoadedState,
    pub mode: crate::snapshot::memory::RestoreMode,
}

/// A run that ended with the guest unable to go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("the guest stopped: {0}")]
    GuestFault(String),
    #[error("{0}")]
    Console(String),
    #[error("{0}")]
    Storage(String),
    #[error("{0}")]
    Network(String),
    #[error("{0}")]
    Api(String),
    #[error("{0}")]
    Restore(String),
}

/// Host-side resources that outlive guest reboots: console backends and the LPT output file.
pub struct HostResources {
    pub serial: [Arc<Mutex<ConsoleBackend>>; 2],
    pub lpt: Option<std::fs::File>,
    /// The battery-backed CMOS (RTC and its RAM) as the last boot left it.
    pub cmos: Arc<Mutex<Option<devices::rtc::RtcState>>>,
    /// IDE drives, opened (and locked) once for the whole run.
    pub drives: Vec<crate::storage::OpenDrive>,
    /// Network backends with their cards' MAC addresses, in PCI slot order.
    pub nics: Vec<OpenNic>,
}

/// A NIC's host side, opened once for the whole run (a guest reboot keeps the TAP, the passt
/// process and the hub socket).
pub struct OpenNic {
    pub mac: [u8; 6],
    pub backend: Arc<dyn crate::net::NetBackend>,
}

impl HostResources {
    pub fn open(cfg: &VmConfig) -> Result<Self, RunError> {
        let open = |spec| {
            ConsoleBackend::open(spec)
                .map(|b| Arc::new(Mutex::new(b)))
                .map_err(|e| RunError::Console(format!("serial port {spec}: {e}")))
        };
        let serial = [open(&cfg.serial)?, open(&cfg.serial2)?];
        let lpt = match &cfg.lpt {
            Some(crate::config::LptSpec::File(p)) => Some(
                std::fs::File::create(p)
                    .map_err(|e| RunError::Console(format!("LPT output {}: {e}", p.display())))?,
            ),
            None => None,
        };
        let drives = crate::storage::open_drives(&cfg.drives).map_err(RunError::Storage)?;
        let mut nics = Vec::new();
        for (i, (spec, mac)) in cfg.nics.iter().zip(cfg.nic_macs()).enumerate() {
            let backend = crate::net::open(&spec.backend, mac, spec.pcap.as_deref())
                .map_err(|e| RunError::Network(format!("NIC {i} ({spec}): {e}")))?;
            log::info!(
                "NIC {i}: DEC 21140, MAC {}, backend {}",
                crate::nic::format_mac(&mac),
                backend.describe()
            );
            nics.push(OpenNic { mac, backend });
        }
        Ok(Self {
            serial,
            lpt,
            cmos: Arc::new(Mutex::new(None)),
            drives,
            nics,
        })
    }
}

/// Runs the VM described by `cfg` until the guest powers off (or reboots with `no_reboot`).
pub fn run(cfg: &VmConfig, opts: RunOptions) -> Result<Outcome, RunError> {
    let host = HostResources::open(cfg)?;
    let api = match &opts.api_socket {
        Some(path) => {
            let queue = crate::live::ApiQueue::new(
                serde_json::to_value(saved_config(cfg)).unwrap_or_default(),
                std::time::Instant::now(),
            )
            .map_err(|e| RunError::Api(format!("control API: {e}")))?;
            let server = crate::api::ApiServer::start(path, queue.clone())
                .map_err(|e| RunError::Api(e.to_string()))?;
            log::info!("control API on {}", path.display());
            Some((queue, server))
        }
        None => None,
    };
    let outcome = run_boots(cfg, &host, opts.restore, api.as_ref().map(|a| &a.0));
    if let Some((queue, server)) = api {
        // Close the queue first: a request still waiting is answered, and the API thread that
        // waits for it can then stop.
        queue.drain_unavailable();
        drop(server);
    }
    // Close every image (flushing it and dropping its lock) before touching undo files.
    let undo_files: Vec<_> = host.drives.iter().filter_map(|d| d.undo.clone()).collect();
    let flushed = host.flush_drives();
    drop(host);
    let outcome = outcome?;
    flushed?;
    crate::storage::finish_undo(&undo_files, cfg.undo_action).map_err(RunError::Storage)?;
    Ok(outcome)
}

fn run_boots(
    cfg: &VmConfig,
    host: &HostResources,
    mut restore: Option<Restore>,
    api: Option<&Arc<crate::live::ApiQueue>>,
) -> Result<Outcome, RunError> {
    let mut boots = 0u64;
    loop {
        boots += 1;
        let vm = match restore.take() {
            Some(r) => Vm::restore(cfg, host, &r)?,
            None => Vm::build(cfg, host)?,
        };
        match vm.run(api)? {
            StopReason::Saved(p) => return Ok(Outcome::Saved(p)),
            StopReason::PoweredOffByUser => return Ok(Outcome::PoweredOffByUser),
            StopReason::Device(VmRequest::PowerOff) => return Ok(Outcome::PowerOff),
            StopReason::Device(VmRequest::Reset) if cfg.no_reboot => return Ok(Outcome::Reboot),
            StopReason::Device(VmRequest::Reset) => {
                log::info!("guest rebooted (boot {boots}); restarting the VM");
            }
            StopReason::Quit => return Ok(Outcome::Quit),
            StopReason::Fault(msg) => return Err(RunError::GuestFault(msg)),
        }
    }
}

impl HostResources {
    /// Makes everything the guest wrote durable on the host.
    fn flush_drives(&self) -> Result<(), RunError> {
        for d in self.drives.iter().filter(|d| !d.backend.read_only()) {
            d.backend.flush().map_err(|e| {
                RunError::Storage(format!(
                    "{} {}: flushing at exit: {e}",
                    d.slot,
                    d.spec.path.display()
                ))
            })?;
        }
        Ok(())
    }
}

/// A built VM, ready to run.
pub struct Vm {
    _kvm: Kvm,
    fd: Arc<VmFd>,
    mem: GuestMemoryMmap,
    io_bus: Arc<Bus>,
    mmio_bus: Arc<Bus>,
    control: Arc<Control>,
    machine: Machine,
    vcpus: Vec<VcpuFd>,
    msrs: Arc<Vec<u32>>,
    /// What this host's KVM offers (read before any vCPU exists).
    supported_cpuid: kvm_bindings::CpuId,
    /// The CPUID each vCPU was given.
    cpuids: Vec<Vec<kvm_bindings::kvm_cpuid_entry2>>,
    config: crate::snapshot::SavedConfig,
    uptime_before: std::time::Duration,
    /// The images the VM writes, for flushing and identifying them when saving.
    disks: Vec<(Arc<dyn vhd::BlockDevice>, std::path::PathBuf)>,
    /// kettle's BIOS, when the VM runs it.
    bios: Option<Arc<crate::bios::BiosRuntime>>,
    /// Firmware memory outside guest RAM: the system ROM below 4 GiB, option ROM space (after
    /// `fd`: the slots go before the memory).
    rom: Vec<crate::bios::RomMapping>,
}

/// The configuration as a saved state records it.
pub fn saved_config(cfg: &VmConfig) -> crate::snapshot::SavedConfig {
    let slots = crate::storage::assign_slots(&cfg.drives).unwrap_or_default();
    crate::snapshot::SavedConfig {
        memory: cfg.memory,
        cpus: cfg.cpus,
        name: cfg.name.clone(),
        kernel: cfg.kernel.clone(),
        bios: cfg.bios.clone(),
        boot: Some(cfg.boot_order.to_string()),
        initrd: cfg.initrd.clone(),
        cmdline: cfg.cmdline.clone(),
        serial: cfg.serial.to_string(),
        serial2: cfg.serial2.to_string(),
        lpt: cfg
            .lpt
            .as_ref()
            .map(|crate::config::LptSpec::File(p)| p.clone()),
        no_reboot: cfg.no_reboot,
        drives: slots
            .into_iter()
            .map(|(slot, d)| crate::snapshot::SavedDrive {
                slot: slot.to_string(),
                kind: match d.kind {
                    crate::storage::DriveKind::Disk => "disk".into(),
                    crate::storage::DriveKind::Cdrom => "cdrom".into(),
                },
                path: d.path.clone(),
                read_only: d.read_only,
                undo: d.undo,
                identity: Default::default(),
            })
            .collect(),
        nics: cfg
            .nics
            .iter()
            .zip(cfg.nic_macs())
            .map(|(n, mac)| crate::snapshot::SavedNic {
                mac: crate::nic::format_mac(&mac),
                backend: n.backend.to_string(),
                pcap: n.pcap.clone(),
            })
            .collect(),
    }
}

/// Guest memory as contiguous spans backed by host memory (one KVM slot each): the memory
/// map's RAM, and for a BIOS image (`--bios`, `image_firmware`) also 0xC0000-0xDFFFF, where
/// such a BIOS puts option ROMs, upper memory blocks and its own runtime data (QEMU's PAM
/// makes that range RAM). Everything here is saved with the VM and comes back on restore; the
/// memory map the guest is told of does not change.
pub fn ram_spans(layout: &MemoryLayout, image_firmware: bool) -> Vec<(u64, u64)> {
    let mut regions = layout.regions.clone();
    if image_firmware {
        regions.push(arch::layout::Region {
            start: arch::layout::VGA_END,
            size: arch::layout::BIOS_AREA_START - arch::layout::VGA_END,
            kind: RegionKind::Reserved,
        });
        regions.sort_by_key(|r| r.start);
    }
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for r in &regions {
        debug_assert!(matches!(r.kind, RegionKind::Ram | RegionKind::Reserved));
        match spans.last_mut() {
            Some((start, size)) if *start + *size == r.start => *size += r.size,
            _ => spans.push((r.start, r.size)),
        }
    }
    spans
}

impl Vm {
    /// A fresh VM that boots `cfg`'s kernel.
    pub fn build(cfg: &VmConfig, host: &HostResources) -> Result<Self, VmError> {
        let layout = MemoryLayout::new(cfg.memory)?;
        let image_firmware = matches!(cfg.firmware(), Firmware::Image(_));
        let ranges: Vec<(GuestAddress, usize)> = ram_spans(&layout, image_firmware)
            .into_iter()
            .map(|(s, n)| (GuestAddress(s), n as usize))
            .collect();
        let mem = GuestMemoryMmap::from_ranges(&ranges)
            .map_err(|e| VmError::Memory(format!("allocating {} bytes: {e}", cfg.memory)))?;
        let vm = Self::create(cfg, host, mem)?;
        let tables = firmware::acpi::build(&firmware::acpi::AcpiConfig {
            cpus: cfg.cpus as u8,
            layout: &layout,
            lpt: cfg.lpt.is_some(),
        })
        .map_err(|e| boot::BootError::Acpi(e.to_string()))?;
        // Another BIOS image builds its own copy from fw_cfg, where this one would lie under its
        // shadow.
        if !matches!(cfg.firmware(), Firmware::Image(_)) {
            vm.mem
                .write_slice(&tables.bytes, GuestAddress(tables.base))
                .map_err(|e| boot::BootError::Acpi(e.to_string()))?;
        }

        let entry = match cfg.firmware() {
            Firmware::Kernel(kernel) => {
                let e820 = arch::e820::entries(&layout);
                Some(boot::load(
                    &vm.mem,
                    &layout,
                    kernel,
                    cfg.initrd.as_deref(),
                    &cfg.cmdline,
                    &e820,
                    tables.rsdp_addr,
                )?)
            }
            Firmware::Bios | Firmware::Image(_) => {
                // The ROM's copy below 1 MiB, where real-mode code runs it (the 440BX's PAM
                // registers shadow the BIOS in RAM the same way).
                let rom = vm.rom.first().map(|r| r.bytes()).unwrap_or_default();
                let low = rom.len().min(arch::layout::BIOS_AREA_SIZE as usize);
                vm.mem
                    .write_slice(
                        &rom[rom.len() - low..],
                        GuestAddress(arch::layout::HIGH_MEMORY_START - low as u64),
                    )
                    .map_err(|e| VmError::Memory(format!("copying the BIOS below 1 MiB: {e}")))?;
                None
            }
        };
        // The MP, $PIR and SMBIOS tables in the BIOS area, for kettle's BIOS and for a kernel
        // kettle loads (both find them by scanning 0xF0000-0xFFFFF); another BIOS image
        // builds its own.
        if !matches!(cfg.firmware(), Firmware::Image(_)) {
            let legacy = firmware::LegacyConfig {
                cpus: cfg.cpus as u8,
                layout: &layout,
                nic_slots: &crate::machine::NIC_SLOTS[..cfg.nics.len()],
                lpt: cfg.lpt.is_some(),
                uuid: vm_uuid(&cfg.identity()),
            };
            for (addr, bytes) in firmware::legacy_tables(&legacy) {
                vm.mem
                    .write_slice(&bytes, GuestAddress(addr))
                    .map_err(|e| VmError::Memory(format!("writing the MP/SMBIOS tables: {e}")))?;
            }
        }
        for (i, vcpu) in vm.vcpus.iter().enumerate() {
            setup_lapic(vcpu)?;
            if i == 0 {
                match entry {
                    Some(entry) => setup_boot_cpu(vcpu, &vm.mem, entry)?,
                    None => setup_reset_cpu(vcpu)?,
                }
            }
        }
        Ok(vm)
    }

    /// A VM continuing from a saved state.
    pub fn restore(cfg: &VmConfig, host: &HostResources, r: &Restore) -> Result<Self, RunError> {
        let t0 = std::time::Instant::now();
        let st = &r.state;
        let rerr = |e: String| RunError::Restore(format!("{}: {e}", st.path.display()));
        let mem = st
            .memory(r.mode)
            .map_err(|e| RunError::Restore(e.to_string()))?;
        let mut vm = Self::create(cfg, host, mem)?;
        let missing = crate::snapshot::cpu::missing_features(
            &st.machine.vcpus[0].cpuid,
            vm.supported_cpuid.as_slice(),
        );
        if !missing.is_empty() {
            let l1 = |v: &[kvm_bindings::kvm_cpuid_entry2]| {
                v.iter()
                    .filter(|e| e.function == 1)
                    .map(|e| format!("{:x}/{:x}/{:x}", e.index, e.ecx, e.edx))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            log::debug!(
                "CPUID leaf 1: saved {} host {}",
                l1(&st.machine.vcpus[0].cpuid),
                l1(vm.supported_cpuid.as_slice())
            );
            return Err(rerr(format!(
                "the guest was saved on a CPU with features this host lacks: {}",
                missing.join(", ")
            )));
        }
        // The guest's clocks move on by the time the state spent on disk (wall clock right).
        let elapsed = std::time::SystemTime::now()
            .duration_since(st.saved_at())
            .unwrap_or_default();
        let elapsed_ns = elapsed.as_nanos() as u64;
        st.machine
            .kvm
            .restore(&vm.fd, elapsed_ns)
            .map_err(|e| rerr(e.to_string()))?;
        for (i, (vcpu, state)) in vm.vcpus.iter().zip(&st.machine.vcpus).enumerate() {
            let khz = state.tsc_khz.unwrap_or(0) as u128;
            let ticks = (elapsed.as_nanos() * khz / 1_000_000) as u64;
            state
                .restore(vcpu, ticks)
                .map_err(|e| rerr(format!("vCPU {i}: {e}")))?;
        }
        vm.machine.restore(&st.machine.devices).map_err(rerr)?;
        vm.uptime_before = std::time::Duration::from_nanos(st.machine.uptime_ns);
        log::info!(
            "restored {} in {:.1} ms ({} memory; saved {:.1} s ago)",
            st.path.display(),
            t0.elapsed().as_secs_f64() * 1000.0,
            match r.mode {
                crate::snapshot::memory::RestoreMode::Map => "mapped",
                crate::snapshot::memory::RestoreMode::Copy => "copied",
            },
            elapsed.as_secs_f64()
        );
        Ok(vm)
    }

    /// The KVM VM, memory slots, devices and vCPUs (with CPUID), but no CPU or memory contents.
    fn create(cfg: &VmConfig, host: &HostResources, mem: GuestMemoryMmap) -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        for (cap, name) in [
            (Cap::Irqchip, "the in-kernel irqchip"),
            (Cap::Pit2, "the in-kernel PIT"),
            (Cap::ImmediateExit, "immediate_exit"),
            (Cap::IrqRouting, "IRQ routing"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(VmError::MissingCap(name));
            }
        }
        let max = kvm.get_max_vcpus();
        if cfg.cpus as usize > max {
            return Err(VmError::TooManyCpus {
                asked: cfg.cpus,
                max,
            });
        }
        let recommended = kvm.get_nr_vcpus();
        if cfg.cpus as usize > recommended {
            log::warn!(
                "--cpus {} is more than this host's KVM recommends ({recommended}); it may be slow",
                cfg.cpus
            );
        }

        let fd = Arc::new(kvm.create_vm().map_err(kvm_err("creating the VM"))?);
        fd.set_tss_address(KVM_TSS_ADDR as usize)
            .map_err(kvm_err("setting the TSS address"))?;
        fd.set_identity_map_address(KVM_IDENTITY_MAP_ADDR)
            .map_err(kvm_err("setting the identity map address"))?;
        fd.create_irq_chip()
            .map_err(kvm_err("creating the irqchip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(kvm_err("creating the PIT"))?;
        crate::irq::set_pc_routing(&fd).map_err(kvm_err("setting GSI routing"))?;
        // The MADT numbers the IOAPIC after the CPUs; KVM's starts with ID 0.
        crate::irq::set_ioapic_id(&fd, cfg.cpus).map_err(kvm_err("setting the IOAPIC ID"))?;

        let layout = MemoryLayout::new(cfg.memory)?;
        for (slot, region) in mem.iter().enumerate() {
            let host_addr = region
                .get_host_address(MemoryRegionAddress(0))
                .map_err(|e| VmError::Memory(e.to_string()))?;
            let r = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: host_addr as u64,
            };
            // SAFETY: the region stays mapped as long as `mem` lives; `Vm` declares the VM fd
            // before `mem`, so the fd (and with it the slot) is dropped first, and vCPU threads,
            // which hold clones of `mem`, are joined before `Vm` is dropped.
            unsafe { fd.set_user_memory_region(r) }.map_err(kvm_err("registering guest memory"))?;
        }

        let mut rom = Vec::new();
        if let Some(image) = rom_image(cfg)? {
            let at = arch::layout::FOUR_GIB - image.len() as u64;
            let slot = mem.num_regions() as u32;
            rom.push(map_firmware(&kvm, &fd, slot, &image, at)?);
        }

        let control = Arc::new(Control::new().map_err(|e| VmError::Devices(e.to_string()))?);
        let io_bus = Arc::new(Bus::new());
        let mmio_bus = Arc::new(Bus::new());
        let mut machine = Machine::create(MachineHost {
            vm: fd.clone(),
            io_bus: io_bus.clone(),
            mmio_bus: mmio_bus.clone(),
            control: control.clone(),
            layout: &layout,
            host,
            mem: Arc::new(crate::guest_dma::GuestRam(mem.clone())),
        })
        .map_err(VmError::Devices)?;

        if let Firmware::Image(_) = cfg.firmware() {
            machine.fw_cfg = Some(add_fw_cfg(cfg, host, &layout, &io_bus, &mem)?);
        }

        let mut vcpus = Vec::new();
        let mut cpuids = Vec::new();
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("reading supported CPUID"))?;
        for i in 0..cfg.cpus {
            let vcpu = fd
                .create_vcpu(u64::from(i))
                .map_err(kvm_err("creating a vCPU"))?;
            let mut cpuid = supported.clone();
            arch::cpuid::configure(&mut cpuid, i, cfg.cpus);
            vcpu.set_cpuid2(&cpuid).map_err(kvm_err("setting CPUID"))?;
            cpuids.push(cpuid.as_slice().to_vec());
            vcpus.push(vcpu);
        }
        let msrs =
            crate::snapshot::cpu::saveable_msrs(&kvm, &vcpus[0]).map_err(|e| VmError::Kvm {
                what: "listing saveable MSRs",
                err: e.err,
            })?;
        let disks = host
            .drives
            .iter()
            .map(|d| {
                (
                    d.backend.clone(),
                    d.undo.clone().unwrap_or(d.spec.path.clone()),
                )
            })
            .collect();

        let bios = match cfg.firmware() {
            Firmware::Bios => {
                let mut bc = firmware::bios::BiosConfig::new(&layout);
                bc.lpt = cfg.lpt.is_some();
                bc.boot_order = cfg
                    .boot_order
                    .0
                    .iter()
                    .map(|d| match d {
                        crate::config::BootDevice::Disk => firmware::bios::BootDevice::Disk,
                        crate::config::BootDevice::Cdrom => firmware::bios::BootDevice::Cdrom,
                    })
                    .collect();
                let cmos = crate::bios::BusCmos(io_bus.clone());
                let disks = crate::bios::bios_disks(&host.drives);
                let b = firmware::bios::Bios::new(bc, Box::new(cmos), disks);
                Some(Arc::new(crate::bios::BiosRuntime::new(
                    b,
                    io_bus.clone(),
                    mmio_bus.clone(),
                )))
            }
            _ => None,
        };

        Ok(Self {
            _kvm: kvm,
            fd,
            mem,
            io_bus,
            mmio_bus,
            control,
            machine,
            vcpus,
            msrs: Arc::new(msrs),
            supported_cpuid: supported,
            cpuids,
            config: saved_config(cfg),
            uptime_before: std::time::Duration::ZERO,
            disks,
            bios,
            rom,
        })
    }

    /// Runs until the VM stops and says why; `api` requests are answered meanwhile.
    pub fn run(mut self, api: Option<&Arc<crate::live::ApiQueue>>) -> Result<StopReason, VmError> {
        let stop = Arc::new(AtomicBool::new(false));
        let run_state = Arc::new(crate::vcpu::RunState::new(self.vcpus.len()));
        let mut handles: Vec<VcpuHandle> = Vec::new();
        for (i, fd) in self.vcpus.drain(..).enumerate() {
            let ctx = VcpuContext {
                index: i as u32,
                fd,
                io_bus: self.io_bus.clone(),
                mmio_bus: self.mmio_bus.clone(),
                mem: self.mem.clone(),
                control: self.control.clone(),
                stop: stop.clone(),
                run_state: run_state.clone(),
                msrs: self.msrs.clone(),
                bios: self.bios.clone(),
            };
            match vcpu::spawn(ctx) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    stop_vcpus(&stop, &run_state, &mut handles);
                    return Err(VmError::Thread(e));
                }
            }
        }
        let subscribers = self
            .machine
            .subscribers(&self.control)
            .map_err(|e| VmError::EventLoop(e.to_string()));
        let result = subscribers.and_then(|mut s| {
            if let Some(queue) = api {
                let disks = self.disks.clone();
                let live = crate::live::LiveVm {
                    fd: self.fd.clone(),
                    mem: self.mem.clone(),
                    machine: self.machine.clone(),
                    control: self.control.clone(),
                    run_state: run_state.clone(),
                    kickers: handles.iter().map(VcpuHandle::kicker).collect(),
                    cpuids: self.cpuids.clone(),
                    config: self.config.clone(),
                    uptime_before: self.uptime_before,
                    boot_started: std::time::Instant::now(),
                    flush_disks: Box::new(move || {
                        disks
                            .iter()
                            .map(|(dev, path)| {
                                if !dev.read_only() {
                                    dev.flush()
                                        .map_err(|e| format!("flushing {}: {e}", path.display()))?;
                                }
                                crate::snapshot_disks::DiskIdentity::of(path)
                                    .map_err(|e| format!("{}: {e}", path.display()))
                            })
                            .collect()
                    }),
                };
                s.push(Arc::new(Mutex::new(crate::live::ApiBridge {
                    queue: queue.clone(),
                    live,
                })));
            }
            crate::event_loop::run_until_stopped(s, &self.control)
                .map_err(|e| VmError::EventLoop(e.to_string()))
        });
        stop_vcpus(&stop, &run_state, &mut handles);
        self.machine.shutdown();
        // Devices that remap their BARs hold the bus; clearing it frees them (and closes the
        // disk images) now rather than never.
        self.io_bus.clear();
        self.mmio_bus.clear();
        result
    }
}

fn stop_vcpus(stop: &AtomicBool, run_state: &crate::vcpu::RunState, handles: &mut [VcpuHandle]) {
    stop.store(true, Ordering::Release);
    run_state.wake_all();
    for h in handles.iter() {
        h.kick();
    }
    for h in handles.iter_mut() {
        h.join();
    }
}

/// LAPIC local vector table as a BIOS leaves it: LINT0 in ExtINT mode (the PIC's output, for
/// virtual-wire mode) and LINT1 as NMI.
fn setup_lapic(vcpu: &VcpuFd) -> Result<(), VmError> {
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const MODE_EXTINT: u32 = 0x7 << 8;
    const MODE_NMI: u32 = 0x4 << 8;
    let mut lapic = vcpu.get_lapic().map_err(kvm_err("reading the LAPIC"))?;
    let mut set = |reg: usize, mode: u32| {
        let bytes: &mut [u8] =
            // SAFETY: `regs` is a plain byte array of 1024 bytes, viewed as u8.
            unsafe { std::slice::from_raw_parts_mut(lapic.regs.as_mut_ptr() as *mut u8, lapic.regs.len()) };
        let old = u32::from_le_bytes(bytes[reg..reg + 4].try_into().unwrap());
        let new = (old & !0x700) | mode;
        bytes[reg..reg + 4].copy_from_slice(&new.to_le_bytes());
    };
    set(APIC_LVT0, MODE_EXTINT);
    set(APIC_LVT1, MODE_NMI);
    vcpu.set_lapic(&lapic).map_err(kvm_err("setting the LAPIC"))
}

/// Maps `image` at guest-physical `at` in memory slot `slot` (one after guest RAM's), read-only
/// where KVM can.
fn map_firmware(
    kvm: &Kvm,
    fd: &VmFd,
    slot: u32,
    image: &[u8],
    at: u64,
) -> Result<crate::bios::RomMapping, VmError> {
    let rom = crate::bios::RomMapping::new(image, at)
        .map_err(|e| VmError::Memory(format!("mapping firmware memory at {at:#x}: {e}")))?;
    let readonly = kvm.check_extension(Cap::ReadonlyMem);
    let r = kvm_userspace_memory_region {
        slot,
        flags: if readonly {
            kvm_bindings::KVM_MEM_READONLY
        } else {
            0
        },
        guest_phys_addr: at,
        memory_size: rom.len() as u64,
        userspace_addr: rom.host_addr(),
    };
    // SAFETY: the mapping lives in `Vm` after `fd`, so the slot goes before the memory.
    unsafe { fd.set_user_memory_region(r) }.map_err(kvm_err("registering firmware memory"))?;
    Ok(rom)
}

/// The VM's SMBIOS UUID: stable for the same VM (derived from its identity, as its default MAC
/// addresses are), marked as a version 4 (random-looking) RFC 4122 UUID.
pub fn vm_uuid(identity: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (half, salt) in out.chunks_mut(8).zip([b"smbios-a", b"smbios-b"]) {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in identity.bytes().chain(salt.iter().copied()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        half.copy_from_slice(&h.to_be_bytes());
    }
    out[6] = (out[6] & 0x0f) | 0x40;
    out[8] = (out[8] & 0x3f) | 0x80;
    out
}

/// The system ROM image the VM maps below 4 GiB: kettle's BIOS, the `--bios` image, or none
/// for a kernel kettle loads itself.
fn rom_image(cfg: &VmConfig) -> Result<Option<Vec<u8>>, VmError> {
    match cfg.firmware() {
        Firmware::Kernel(_) => Ok(None),
        Firmware::Bios => Ok(Some(firmware::bios::rom::build())),
        Firmware::Image(path) => crate::seabios::load_image(path)
            .map(Some)
            .map_err(VmError::Memory),
    }
}

/// The QEMU firmware configuration device another BIOS image (SeaBIOS) reads the machine from:
/// memory map, ACPI tables, CPU count and boot order (see [`crate::seabios`]).
fn add_fw_cfg(
    cfg: &VmConfig,
    host: &HostResources,
    layout: &MemoryLayout,
    io_bus: &Bus,
    mem: &GuestMemoryMmap,
) -> Result<Arc<Mutex<devices::fw_cfg::FwCfg>>, VmError> {
    use crate::config::BootDevice;
    use crate::seabios::{IdePosition, SeabiosConfig};
    let mut drives: Vec<_> = host.drives.iter().collect();
    drives.sort_by_key(|d| (d.slot.channel, d.slot.device));
    let position = |d: &crate::storage::OpenDrive| IdePosition {
        channel: d.slot.channel,
        device: d.slot.device,
    };
    let boot_order: Vec<IdePosition> = cfg
        .boot_order
        .0
        .iter()
        .filter_map(|want| {
            let kind = match want {
                BootDevice::Disk => crate::storage::DriveKind::Disk,
                BootDevice::Cdrom => crate::storage::DriveKind::Cdrom,
            };
            drives.iter().find(|d| d.kind == kind).map(|d| position(d))
        })
        .collect();
    // The logical geometry kettle's own BIOS gives each hard disk, so that a disk partitioned
    // by CHS under one BIOS reads the same under the other.
    let geometry: Vec<(IdePosition, crate::seabios::LogicalChs)> = drives
        .iter()
        .filter(|d| d.kind == crate::storage::DriveKind::Disk)
        .map(|d| {
            let g = firmware::bios::Geometry::of(d.backend.sectors());
            (
                position(d),
                crate::seabios::LogicalChs {
                    cylinders: g.cylinders as u32,
                    heads: g.heads as u32,
                    sectors: g.sectors as u32,
                },
            )
        })
        .collect();
    let sc = SeabiosConfig {
        layout,
        cpus: cfg.cpus as u8,
        lpt: cfg.lpt.is_some(),
        boot_order: &boot_order,
        serial_console: true,
        boot_fail_reboot_ms: None,
        geometry: &geometry,
    };
    let files = crate::seabios::fw_cfg_files(&sc)
        .map_err(|e| VmError::Devices(format!("fw_cfg files: {e}")))?;
    let dev = devices::fw_cfg::FwCfg::new(
        Arc::new(crate::guest_dma::GuestRam(mem.clone())),
        crate::seabios::fw_cfg_items(&sc),
        files,
    )
    .map_err(|e| VmError::Devices(format!("fw_cfg: {e}")))?;
    let dev = Arc::new(Mutex::new(dev));
    io_bus
        .insert(
            u64::from(devices::fw_cfg::spec::IO_BASE),
            devices::fw_cfg::spec::IO_LEN,
            dev.clone(),
        )
        .map_err(|e| VmError::Devices(format!("fw_cfg: {e}")))?;
    io_bus
        .insert(
            u64::from(crate::seabios::DEBUG_PORT),
            1,
            Arc::new(Mutex::new(crate::seabios::DebugConsole::default())),
        )
        .map_err(|e| VmError::Devices(format!("firmware debug port: {e}")))?;
    Ok(dev)
}

/// The boot vCPU as a PC's processor leaves reset: real mode at F000:FFF0 with the code segment
/// based just below 4 GiB, where the ROM's reset vector is.
fn setup_reset_cpu(vcpu: &VcpuFd) -> Result<(), VmError> {
    let mut sregs = vcpu.get_sregs().map_err(kvm_err("reading sregs"))?;
    sregs.cs.selector = firmware::bios::rom::ROM_SEGMENT;
    sregs.cs.base = 0xffff_0000;
    sregs.cr0 &= !1;
    vcpu.set_sregs(&sregs).map_err(kvm_err("setting sregs"))?;
    let regs = kvm_bindings::kvm_regs {
        rip: 0xfff0,
        rflags: 0x2,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm_err("setting registers"))
}

fn setup_boot_cpu(vcpu: &VcpuFd, mem: &GuestMemoryMmap, entry: EntryPoint) -> Result<(), VmError> {
    let mut sregs = vcpu.get_sregs().map_err(kvm_err("reading sregs"))?;
    arch::boot::setup_sregs(mem, &mut sregs, entry.long_mode)
        .map_err(|e| VmError::Boot(e.into()))?;
    vcpu.set_sregs(&sregs).map_err(kvm_err("setting sregs"))?;
    vcpu.set_regs(&arch::boot::entry_regs(entry.addr, entry.long_mode))
        .map_err(kvm_err("setting registers"))?;
    vcpu.set_fpu(&arch::boot::reset_fpu())
        .map_err(kvm_err("setting the FPU"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smbios_uuid_is_stable_per_vm_and_rfc4122_shaped() {
        let a = vm_uuid("name:web01");
        assert_eq!(a, vm_uuid("name:web01"));
        assert_ne!(a, vm_uuid("name:web02"));
        assert_eq!(a[6] >> 4, 4, "version 4");
        assert_eq!(a[8] >> 6, 2, "RFC 4122 variant");
    }

    #[test]
    fn spans_merge_adjacent_regions() {
        let l = MemoryLayout::new(5 << 30).unwrap();
        let s = ram_spans(&l, false);
        assert_eq!(
            s,
            vec![
                (0, arch::layout::LEGACY_WINDOW_START),
                (
                    arch::layout::BIOS_AREA_START,
                    arch::layout::PCI_HOLE_START - arch::layout::BIOS_AREA_START
                ),
                (
                    arch::layout::FOUR_GIB,
                    (5 << 30) - arch::layout::PCI_HOLE_START
                ),
            ]
        );
    }

    #[test]
    fn a_bios_image_gets_ram_from_0xc0000() {
        let l = MemoryLayout::new(64 << 20).unwrap();
        assert_eq!(
            ram_spans(&l, true),
            vec![
                (0, arch::layout::LEGACY_WINDOW_START),
                (arch::layout::VGA_END, (64 << 20) - arch::layout::VGA_END),
            ]
        );
        // What the guest is told stays the same.
        assert!(arch::e820::entries(&l)
            .iter()
            .all(|e| e.addr + e.size <= arch::layout::LEGACY_WINDOW_START
                || e.addr >= arch::layout::BIOS_AREA_START));
    }
}
