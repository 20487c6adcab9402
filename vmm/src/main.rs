//! `kettle`: the command line over the vmm library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use vmm::config::{FileConfig, LptSpec, MemSize, Overrides, VmConfig};
use vmm::console::SerialSpec;
use vmm::nic::NicSpec;
use vmm::storage::{DriveKind, DriveSpec, UndoAction};
use vmm::vm::Outcome;

#[derive(Parser)]
#[command(
    name = "kettle",
    version,
    about = "A KVM virtual machine monitor for Virtual Server 2005 / Virtual PC / Hyper-V gen-1 appliances",
    long_about = None
)]
struct Cli {
    /// Log level for kettle's own messages on stderr: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "warn", value_name = "LEVEL")]
    log_level: log::LevelFilter,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a VM on the i440BX/PIIX4 machine: its disks or CD through the BIOS (kettle's own, or
    /// --bios), or a Linux kernel (bzImage, or ELF with a PVH note) kettle loads itself with
    /// --kernel. Exits 0 when the guest powers off.
    Run(Box<RunArgs>),
    /// Create, inspect, check, convert, merge, compact and resize VHD disk images; commit or
    /// discard undo disks; make differencing clones.
    Vhd(vmm::vhd_cmd::VhdArgs),
    /// Control a running kettle through its --api-socket: status, screen, pause, resume,
    /// save-state, reset, power-off, shutdown, link (docs/api.md).
    Ctl(vmm::ctl::CtlArgs),
}

#[derive(Args)]
#[command(after_help = "\
Serial backends: stdio (the terminal; press Ctrl-A then x to quit, Ctrl-A Ctrl-A sends Ctrl-A), \
file:PATH (output only), unix:PATH (kettle listens on PATH; one client at a time), none.

Network backends (--nic tulip,backend=...): tap:NAME (a TAP interface: an existing one, e.g. made \
with `ip tuntap add dev NAME mode tap user $USER`, or created by kettle when it has \
CAP_NET_ADMIN, brought up, and gone when kettle exits); passt (user-mode networking without \
root: kettle starts the passt program, which gives the guest DHCP and reaches the host's \
services and network); passt:SOCKET (a passt you started with `passt -s SOCKET`); socket:DIR (an \
Ethernet hub between VMs: every NIC naming the same directory sees every other's frames); \
udp:LOCAL@PEER (frames as UDP datagrams between two kettles, e.g. \
udp:127.0.0.1:5000@127.0.0.1:5001); none (a card with no cable plugged in to anything). \
mac=XX:XX:XX:XX:XX:XX sets the address [default: 00:03:FF and three bytes derived from the VM's \
--name, else its config file, first disk or kernel: stable across runs]. pcap=PATH records \
every frame both ways in a pcap file (tcpdump -r, wireshark).

Without --kernel the machine starts in its BIOS, as a PC does: kettle's BIOS (or --bios) loads \
the boot sector of the first hard disk, or the El Torito boot image of the CD, in the --boot \
order, and the appliance's own boot loader (syslinux, GRUB, ISOLINUX, ...) takes over. BIOS \
messages and text written through INT 10h appear on COM1.

A TOML file takes the same settings: kernel, initrd, cmdline, bios, boot, memory (\"512M\" or bytes), cpus, \
serial, serial2, lpt, no_reboot, disk, cdrom, undo_action, name, nic (a string or a list). \
Paths in it are relative to the file. Flags override the file.

Exit status: 0 when the guest powers off, or reboots under --no-reboot; 1 on any error, \
including a guest that stops on a fault (the message says why, with RIP and CPU mode); 2 for \
invalid flags.")]
struct RunArgs {
    /// A VM configuration file (TOML).
    #[arg(value_name = "CONFIG.toml")]
    config: Option<PathBuf>,
    /// A kernel kettle loads and starts itself, skipping the BIOS: a Linux bzImage, or an ELF
    /// kernel with a PVH entry note [default: none; the BIOS boots the drives].
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Run this BIOS image instead of kettle's own BIOS, e.g. Debian's SeaBIOS
    /// (/usr/share/seabios/bios.bin); it gets the machine's memory map, ACPI tables and boot
    /// order through the QEMU firmware configuration interface (fw_cfg).
    #[arg(long, value_name = "PATH")]
    bios: Option<PathBuf>,
    /// The order the BIOS tries drives in: a comma-separated list of disk (the first IDE hard
    /// disk) and cdrom (the first CD, El Torito) [default: disk,cdrom].
    #[arg(long, value_name = "ORDER")]
    boot: Option<vmm::config::BootOrder>,
    /// An initial RAM disk loaded high in low memory (with --kernel).
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// The kernel command line, with --kernel [default: console=ttyS0].
    #[arg(long, value_name = "STR")]
    cmdline: Option<String>,
    /// Guest RAM, e.g. 512M or 2G [default: 256M]. RAM past 3.5 GiB goes above 4 GiB.
    #[arg(long, value_name = "SIZE")]
    memory: Option<MemSize>,
    /// Number of vCPUs [default: 1].
    #[arg(long, value_name = "N")]
    cpus: Option<u32>,
    /// COM1 (0x3F8, IRQ 4): stdio, file:PATH, unix:PATH or none [default: stdio].
    #[arg(long, value_name = "BACKEND")]
    serial: Option<SerialSpec>,
    /// COM2 (0x2F8, IRQ 3): stdio, file:PATH, unix:PATH or none [default: none].
    #[arg(long, value_name = "BACKEND")]
    serial2: Option<SerialSpec>,
    /// LPT1 (0x378, IRQ 7) output: file:PATH [default: no parallel port].
    #[arg(long, value_name = "file:PATH")]
    lpt: Option<LptSpec>,
    /// When the guest reboots, exit (status 0) instead of restarting the VM.
    #[arg(long)]
    no_reboot: bool,
    /// An IDE hard disk: `[ideC:D=]PATH[,readonly][,undo]`, VHD (fixed, dynamic or
    /// differencing) or raw, told apart by content. Without a position it takes the first free
    /// one of ide0:0, ide0:1, ide1:0, ide1:1 (ide1:0 is kept for a CD). `undo` runs the disk
    /// with an undo file PATH.vud that holds all changes. Repeatable, up to 4 drives in all.
    #[arg(long, value_name = "DRIVE", value_parser = |s: &str| DriveSpec::parse(DriveKind::Disk, s))]
    disk: Vec<DriveSpec>,
    /// An ATAPI CD/DVD drive with an ISO image: `[ideC:D=]PATH.iso` [default position ide1:0].
    #[arg(long, value_name = "ISO", value_parser = |s: &str| DriveSpec::parse(DriveKind::Cdrom, s))]
    cdrom: Vec<DriveSpec>,
    /// What to do with undo disks when the VM stops: keep (commit or discard later with
    /// `kettle vhd commit|discard`), commit, or discard [default: keep].
    #[arg(long, value_name = "ACTION")]
    undo_action: Option<UndoAction>,
    /// A name for the VM; default MAC addresses are derived from it.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// A DEC 21140 network card (PCI, slots 00:0a-00:0d):
    /// `tulip,backend=tap:NAME|passt[:SOCKET]|socket:DIR|udp:LOCAL@PEER|none[,mac=..][,pcap=PATH]`.
    /// Repeatable, up to 4. See the backends below.
    #[arg(long, value_name = "NIC")]
    nic: Vec<NicSpec>,
    /// Serve the control API (HTTP/1.1 + JSON) on this unix socket: status, text screen, pause,
    /// resume, save-state, reset, power-off, shutdown, NIC link (docs/api.md; `kettle ctl`).
    #[arg(long, value_name = "PATH")]
    api_socket: Option<PathBuf>,
    /// Continue a VM from a saved state (made with the API's save-state) instead of booting.
    /// Memory, vCPUs, drives and NICs come from the state; --disk, --cdrom, --nic and --serial
    /// re-attach host backends (default: the ones it was saved with).
    #[arg(long, value_name = "FILE")]
    restore: Option<PathBuf>,
    /// How --restore brings memory back: map (copy-on-write from the file, fastest; the file
    /// must stay) or copy (read into fresh memory, checksum checked; the file may go)
    /// [default: map].
    #[arg(long, value_name = "MODE", requires = "restore")]
    restore_mode: Option<vmm::snapshot::memory::RestoreMode>,
    /// With --restore, accept disks that changed since the state was saved (the guest's file
    /// systems may then be corrupted).
    #[arg(long, requires = "restore")]
    force_disks: bool,
}

struct StderrLogger(log::LevelFilter);

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.0
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            // In raw terminal mode a bare \n does not return the carriage.
            eprint!(
                "kettle: {}: {}\r\n",
                r.level().as_str().to_lowercase(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // One line: clap's first line, without its "error: " prefix and usage block.
            let text = e.to_string();
            let mut lines = text.lines();
            let first = lines.next().unwrap_or("invalid arguments");
            let mut first = first.strip_prefix("error: ").unwrap_or(first).to_string();
            // "the following required arguments were not provided:" lists them below.
            if first.ends_with(':') {
                let listed: Vec<&str> = lines
                    .take_while(|l| l.starts_with("  "))
                    .map(str::trim)
                    .collect();
                first = format!("{} {}", first.trim_end_matches(':'), listed.join(", "));
            }
            eprintln!("kettle: {first} (see kettle --help)");
            return ExitCode::from(2);
        }
    };
    let logger = Box::leak(Box::new(StderrLogger(cli.log_level)));
    let _ = log::set_logger(logger);
    log::set_max_level(cli.log_level);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        vmm::console::restore_terminal();
        default_hook(info);
    }));

    let result = match cli.command {
        Command::Run(args) => run(*args),
        Command::Ctl(args) => return vmm::ctl::main(args),
        Command::Vhd(args) => {
            return match vmm::vhd_cmd::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("kettle: {e}");
                    ExitCode::from(e.status)
                }
            }
        }
    };
    vmm::console::restore_terminal();
    match result {
        Ok(msg) => {
            if let Some(m) = msg {
                eprintln!("kettle: {m}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kettle: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(a: RunArgs) -> Result<Option<String>, String> {
    let overrides = Overrides {
        kernel: a.kernel,
        bios: a.bios,
        boot_order: a.boot,
        initrd: a.initrd,
        cmdline: a.cmdline,
        memory: a.memory,
        cpus: a.cpus,
        serial: a.serial,
        serial2: a.serial2,
        lpt: a.lpt,
        no_reboot: a.no_reboot,
        disks: a.disk,
        cdroms: a.cdrom,
        undo_action: a.undo_action,
        name: a.name,
        nics: a.nic,
    };
    let (cfg, restore) = match &a.restore {
        Some(path) => {
            if a.config.is_some() {
                return Err("a configuration file cannot be given with --restore: the saved state holds the configuration".into());
            }
            let state = vmm::snapshot::LoadedState::open(path).map_err(|e| e.to_string())?;
            let cfg = vmm::restore::restore_config(&state.config, overrides, a.force_disks)
                .map_err(|e| format!("cannot restore {}: {e}", path.display()))?;
            let restore = vmm::vm::Restore {
                state,
                mode: a.restore_mode.unwrap_or_default(),
            };
            (cfg, Some(restore))
        }
        None => {
            let file = match &a.config {
                Some(p) => Some(FileConfig::load(p).map_err(|e| e.to_string())?),
                None => None,
            };
            let cfg = VmConfig::resolve(file, overrides).map_err(|e| e.to_string())?;
            (cfg, None)
        }
    };
    let opts = vmm::vm::RunOptions {
        api_socket: a.api_socket,
        restore,
    };
    match vmm::vm::run(&cfg, opts).map_err(|e| e.to_string())? {
        Outcome::PowerOff => Ok(None),
        Outcome::Reboot => Ok(Some(
            "the guest rebooted; exiting instead of restarting (--no-reboot)".into(),
        )),
        Outcome::Quit => Ok(Some("quit from the console".into())),
        Outcome::Saved(p) => Ok(Some(format!("the VM was saved to {}", p.display()))),
        Outcome::PoweredOffByUser => Ok(Some("powered off through the control API".into())),
    }
}
