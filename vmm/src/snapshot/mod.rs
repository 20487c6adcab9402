//! Saved states ("Save State", Virtual Server's .vsv): one file holding the VM's configuration,
//! every vCPU, the in-kernel irqchip, PIT and clock, every device and guest memory (see
//! [`format`](mod@format) for the layout). Saving pauses the VM, writes `PATH.tmp-PID`, syncs it and
//! renames it over PATH, so a crash never leaves a half-written state under the real name.

pub mod cpu;
pub mod format;
pub mod memory;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use vm_memory::GuestMemoryMmap;

use self::cpu::{VcpuState, VmKvmState};
use self::format::{FormatError, Header, SectionKind};
use self::memory::{MemoryRegionEntry, RestoreMode};
use crate::machine::MachineState;

/// The configuration a state was saved with: the machine's shape (fixed by the state) and the
/// host backends it used (the defaults when restoring).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedConfig {
    pub memory: u64,
    pub cpus: u32,
    #[serde(default)]
    pub name: Option<String>,
    /// The kernel kettle loaded itself; none for a VM booted through a BIOS (format 1 states
    /// always have one).
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    /// The BIOS image the VM runs (`--bios`); none for kettle's BIOS or a kernel boot.
    #[serde(default)]
    pub bios: Option<PathBuf>,
    /// The BIOS boot order, as `--boot` takes it.
    #[serde(default)]
    pub boot: Option<String>,
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub serial: String,
    pub serial2: String,
    #[serde(default)]
    pub lpt: Option<PathBuf>,
    pub no_reboot: bool,
    pub drives: Vec<SavedDrive>,
    pub nics: Vec<SavedNic>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedDrive {
    /// "ide0:0" .. "ide1:1".
    pub slot: String,
    /// "disk" or "cdrom".
    pub kind: String,
    pub path: PathBuf,
    pub read_only: bool,
    pub undo: bool,
    /// What the image was when saved (refuse a different or changed one on restore); left
    /// out while unknown (a running VM's configuration, as the API's status shows it).
    #[serde(
        default,
        skip_serializing_if = "crate::snapshot_disks::DiskIdentity::is_unknown"
    )]
    pub identity: crate::snapshot_disks::DiskIdentity,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedNic {
    pub mac: String,
    pub backend: String,
    #[serde(default)]
    pub pcap: Option<PathBuf>,
}

/// Everything but memory and configuration.
#[derive(Serialize, Deserialize)]
pub struct SavedMachine {
    pub vcpus: Vec<VcpuState>,
    pub kvm: VmKvmState,
    pub devices: MachineState,
    pub memory: Vec<MemoryRegionEntry>,
    pub memory_crc: u32,
    /// How long the guest had run (for status after restore).
    pub uptime_ns: u64,
}

/// Saved-state trouble, with the file named.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The largest configuration and machine sections a file may claim (guards allocation).
const MAX_CONFIG: u64 = 1 << 20;
const MAX_MACHINE: u64 = 64 << 20;

/// A temporary name beside `path` for writing.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Writes a complete saved state to `path` (atomically: temporary file, fsync, rename, fsync
/// of the directory). `machine.memory`/`memory_crc` are filled in here. Returns the file size.
pub fn write_state(
    path: &Path,
    config: &SavedConfig,
    mut machine: SavedMachine,
    mem: &GuestMemoryMmap,
    saved_at: SystemTime,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, StateError> {
    let tmp = temp_path(path);
    let werr = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let result = (|| -> Result<u64, StateError> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(werr)?;
        let config_bytes =
            serde_json::to_vec_pretty(config).map_err(|e| werr(io::Error::other(e)))?;
        let cfg = format::write_section(
            &mut file,
            SectionKind::Config,
            format::HEADER_SIZE,
            &config_bytes,
        )
        .map_err(werr)?;
        let mem_start = format::page_align(cfg.offset + cfg.length);
        let (entries, mem_len, crc) =
            memory::write_memory(&file, mem, mem_start, progress).map_err(werr)?;
        machine.memory = entries;
        machine.memory_crc = crc;
        let memsec = format::Section {
            kind: SectionKind::Memory,
            offset: mem_start,
            length: mem_len,
            crc,
        };
        let mut machine_bytes = Vec::new();
        ciborium::into_writer(&machine, &mut machine_bytes)
            .map_err(|e| werr(io::Error::other(e.to_string())))?;
        let mach_start = format::page_align(mem_start + mem_len);
        let mach =
            format::write_section(&mut file, SectionKind::Machine, mach_start, &machine_bytes)
                .map_err(werr)?;
        let since = saved_at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let header = Header {
            version: format::FORMAT_VERSION,
            writer: env!("CARGO_PKG_VERSION").to_string(),
            saved_secs: since.as_secs(),
            saved_nanos: since.subsec_nanos(),
            sections: vec![cfg, memsec, mach],
        };
        let end = mach.offset + mach.length;
        file.set_len(end).map_err(werr)?;
        std::os::unix::fs::FileExt::write_all_at(&file, &format::encode_header(&header), 0)
            .map_err(werr)?;
        file.sync_all().map_err(werr)?;
        Ok(end)
    })();
    match result {
        Ok(len) => {
            std::fs::rename(&tmp, path).map_err(werr)?;
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(len)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// A saved state read and checked, memory not yet brought in.
pub struct LoadedState {
    pub path: PathBuf,
    pub header: Header,
    pub config: SavedConfig,
    pub machine: SavedMachine,
    file: File,
}

impl LoadedState {
    /// Opens `path`: header, checksums of configuration and machine state, consistency of the
    /// memory table with the saved memory size.
    pub fn open(path: &Path) -> Result<LoadedState, StateError> {
        let io_err = |source| FormatError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let header = format::read_header(path, &mut file, len)?;
        let invalid = |what: String| StateError::Invalid {
            path: path.to_path_buf(),
            what,
        };
        let section = |k| *header.section(k).expect("read_header checks every section");
        let cfg_bytes =
            format::read_section(path, &mut file, &section(SectionKind::Config), MAX_CONFIG)?;
        let config: SavedConfig = serde_json::from_slice(&cfg_bytes)
            .map_err(|e| invalid(format!("its configuration does not parse: {e}")))?;
        let mach_bytes =
            format::read_section(path, &mut file, &section(SectionKind::Machine), MAX_MACHINE)?;
        let machine: SavedMachine = ciborium::from_reader(&mach_bytes[..])
            .map_err(|e| invalid(format!("its machine state does not parse: {e}")))?;
        if machine.vcpus.len() != config.cpus as usize || config.cpus == 0 {
            return Err(invalid(format!(
                "{} vCPU states for {} vCPUs",
                machine.vcpus.len(),
                config.cpus
            )));
        }
        let mem = section(SectionKind::Memory);
        if mem.crc != machine.memory_crc {
            return Err(invalid(
                "its memory checksum is recorded twice, differently".into(),
            ));
        }
        let layout = arch::layout::MemoryLayout::new(config.memory)
            .map_err(|e| invalid(format!("saved memory size: {e}")))?;
        let image_firmware = matches!(
            crate::config::Firmware::of(config.kernel.as_deref(), config.bios.as_deref()),
            crate::config::Firmware::Image(_)
        );
        memory::check_regions(
            &machine.memory,
            mem.offset,
            mem.length,
            &crate::vm::ram_spans(&layout, image_firmware),
        )
        .map_err(invalid)?;
        Ok(LoadedState {
            path: path.to_path_buf(),
            header,
            config,
            machine,
            file,
        })
    }

    /// When the state was saved.
    pub fn saved_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::new(self.header.saved_secs, self.header.saved_nanos)
    }

    /// Guest memory, mapped from the file or copied (and checked).
    pub fn memory(&self, mode: RestoreMode) -> Result<GuestMemoryMmap, StateError> {
        let invalid = |what: String| StateError::Invalid {
            path: self.path.clone(),
            what,
        };
        match mode {
            RestoreMode::Map => memory::map_memory(&self.file, &self.machine.memory)
                .map_err(|e| invalid(format!("mapping guest memory: {e}"))),
            RestoreMode::Copy => {
                let (mem, crc) = memory::copy_memory(&self.file, &self.machine.memory)
                    .map_err(|e| invalid(format!("reading guest memory: {e}")))?;
                self.check_memory_crc(crc)?;
                Ok(mem)
            }
        }
    }

    fn check_memory_crc(&self, computed: u32) -> Result<(), StateError> {
        if computed != self.machine.memory_crc {
            return Err(FormatError::Checksum {
                path: self.path.clone(),
                what: "guest memory".into(),
                stored: self.machine.memory_crc,
                computed,
            }
            .into());
        }
        Ok(())
    }

    /// Reads all of memory once to check its checksum.
    pub fn verify_memory(&self) -> Result<(), StateError> {
        let (_, crc) = memory::copy_memory(&self.file, &self.machine.memory).map_err(|e| {
            StateError::Invalid {
                path: self.path.clone(),
                what: format!("reading guest memory: {e}"),
            }
        })?;
        self.check_memory_crc(crc)
    }
}
