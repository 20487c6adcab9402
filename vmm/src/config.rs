//! The VM configuration: what `kettle run` flags and `vm.toml` files say, merged into one
//! [`VmConfig`] (flags override the file), validated before anything is built.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::console::SerialSpec;
use crate::nic::{NicSpec, MAX_NICS};
use crate::storage::{assign_slots, DriveKind, DriveSpec, UndoAction};

/// Default guest RAM: 256 MiB.
pub const DEFAULT_MEMORY: u64 = 256 << 20;
/// Default kernel command line: the serial console on COM1.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0";
/// APIC IDs in the MADT and the xAPIC are 8 bits; 255 is the broadcast ID.
pub const MAX_CPUS: u32 = 254;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {err}")]
    ReadFile { path: PathBuf, err: std::io::Error },
    #[error("config file {path}: {err}")]
    Parse { path: PathBuf, err: String },
    #[error("{0} needs --kernel: without a kernel the BIOS boots the drives, and their boot loader chooses the kernel and its command line")]
    NeedsKernel(&'static str),
    #[error(
        "nothing to boot: give a --disk or --cdrom (the BIOS boots its boot loader) or a --kernel"
    )]
    NothingToBoot,
    #[error("--bios and --kernel exclude each other: kettle either loads the kernel itself or runs the BIOS image, which boots the drives")]
    BiosWithKernel,
    #[error(
        "invalid --boot {0:?}: give a comma-separated list of disk and cdrom, e.g. cdrom,disk"
    )]
    BadBootOrder(String),
    #[error("{what} {path}: {err}")]
    Unreadable {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("{what} {path} is not a regular file")]
    NotAFile { what: &'static str, path: PathBuf },
    #[error("--cpus must be at least 1")]
    ZeroCpus,
    #[error("--cpus {0} is more than kettle supports ({MAX_CPUS})")]
    TooManyCpus(u32),
    #[error(
        "invalid memory size {0:?}: use a number with an optional K, M, G or T suffix (e.g. 512M)"
    )]
    BadSize(String),
    #[error("--memory {0} is less than the 16 MiB kettle needs")]
    MemoryTooSmall(MemSize),
    #[error("--memory {0} is more than this host's {1} of RAM")]
    MemoryTooLarge(MemSize, MemSize),
    #[error("--memory {0} is not a multiple of 4 KiB")]
    MemoryUnaligned(MemSize),
    #[error("invalid {what} {value:?}: {err}")]
    BadValue {
        what: &'static str,
        value: String,
        err: String,
    },
    #[error("{0}")]
    Drives(String),
    #[error("--serial and --serial2 both use {0}; give each port its own backend")]
    SharedSerialBackend(String),
    #[error("kernel command line is {0} bytes; Linux accepts at most 2047")]
    CmdlineTooLong(usize),
    #[error("{0} NICs given; the machine has room for at most {MAX_NICS}")]
    TooManyNics(usize),
    #[error("NICs {0} and {1} both have MAC address {2}; give one of them mac=... (or give the VM a --name)")]
    DuplicateMac(usize, usize, String),
}

/// A memory size in bytes, written and parsed as `512M`, `2G`, `1048576`, ...
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemSize(pub u64);

impl FromStr for MemSize {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let t = s.trim();
        let bad = || ConfigError::BadSize(s.to_string());
        let (digits, shift) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            None => (t, 0),
            Some((i, _)) => {
                let unit = t[i..]
                    .trim_end_matches(['b', 'B', 'i'])
                    .to_ascii_uppercase();
                let shift = match unit.as_str() {
                    "K" => 10,
                    "M" => 20,
                    "G" => 30,
                    "T" => 40,
                    _ => return Err(bad()),
                };
                (&t[..i], shift)
            }
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        n.checked_mul(1u64 << shift).map(MemSize).ok_or_else(bad)
    }
}

impl fmt::Display for MemSize {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let b = self.0;
        for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
            if b >= 1 << shift && b.is_multiple_of(1 << shift) {
                return write!(f, "{}{}", b >> shift, unit);
            }
        }
        if b >= 1 << 30 {
            write!(f, "{:.1}G", b as f64 / (1u64 << 30) as f64)
        } else {
            write!(f, "{b}")
        }
    }
}

/// A kind of drive the BIOS tries to boot from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootDevice {
    /// The first IDE hard disk: its master boot record.
    Disk,
    /// The first ATAPI CD-ROM: its El Torito boot image.
    Cdrom,
}

/// The order the BIOS tries drives in: `disk,cdrom` (the default), `cdrom,disk`, `cdrom`, ...
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootOrder(pub Vec<BootDevice>);

impl Default for BootOrder {
    fn default() -> Self {
        Self(vec![BootDevice::Disk, BootDevice::Cdrom])
    }
}

impl FromStr for BootOrder {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::BadBootOrder(s.to_string());
        let mut order = Vec::new();
        for item in s.split(',').map(str::trim) {
            let dev = match item {
                "disk" | "hd" => BootDevice::Disk,
                "cdrom" | "cd" => BootDevice::Cdrom,
                _ => return Err(bad()),
            };
            if order.contains(&dev) {
                return Err(bad());
            }
            order.push(dev);
        }
        Ok(Self(order))
    }
}

impl fmt::Display for BootOrder {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<&str> = self
            .0
            .iter()
            .map(|d| match d {
                BootDevice::Disk => "disk",
                BootDevice::Cdrom => "cdrom",
            })
            .collect();
        f.write_str(&names.join(","))
    }
}

/// What the boot vCPU runs first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware<'a> {
    /// kettle loads this Linux kernel itself and starts it in long or protected mode.
    Kernel(&'a Path),
    /// kettle's own BIOS, which boots the drives in the boot order.
    Bios,
    /// Another BIOS image (SeaBIOS), mapped below 4 GiB.
    Image(&'a Path),
}

impl<'a> Firmware<'a> {
    /// What runs first for a configuration with these: the kernel, when there is one; else the
    /// BIOS image; else kettle's BIOS.
    pub fn of(kernel: Option<&'a Path>, bios: Option<&'a Path>) -> Self {
        match (kernel, bios) {
            (Some(k), _) => Firmware::Kernel(k),
            (None, Some(b)) => Firmware::Image(b),
            (None, None) => Firmware::Bios,
        }
    }
}

/// Where the parallel port's output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LptSpec {
    File(PathBuf),
}

impl FromStr for LptSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("file:") {
            Some(p) if !p.is_empty() => Ok(LptSpec::File(PathBuf::from(p))),
            _ => Err("expected file:PATH".into()),
        }
    }
}

/// Everything needed to build and run one VM.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// The kernel kettle loads itself; without one the BIOS boots the drives.
    pub kernel: Option<PathBuf>,
    /// A BIOS image to run instead of kettle's own BIOS (`--bios`).
    pub bios: Option<PathBuf>,
    /// The order the BIOS tries drives in (`--boot`).
    pub boot_order: BootOrder,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub memory: u64,
    pub cpus: u32,
    pub serial: SerialSpec,
    pub serial2: SerialSpec,
    pub lpt: Option<LptSpec>,
    pub no_reboot: bool,
    /// IDE drives: disks and CD-ROMs, positions resolved at start.
    pub drives: Vec<DriveSpec>,
    /// What happens to undo disks when the VM stops.
    pub undo_action: UndoAction,
    /// The VM's name, if given: default MAC addresses derive from it.
    pub name: Option<String>,
    /// The configuration file this came from, if any (another source of the VM's identity).
    pub config_file: Option<PathBuf>,
    /// Network cards, in PCI slot order.
    pub nics: Vec<NicSpec>,
}

/// The same settings as the flags, as they appear in a TOML file. Every field is optional; paths
/// are relative to the file's directory.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub kernel: Option<PathBuf>,
    pub bios: Option<PathBuf>,
    /// The BIOS boot order, `disk,cdrom` as for `--boot`.
    pub boot: Option<String>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub memory: Option<TomlSize>,
    pub cpus: Option<u32>,
    pub serial: Option<String>,
    pub serial2: Option<String>,
    pub lpt: Option<String>,
    pub no_reboot: Option<bool>,
    /// Disks, each `[ideC:D=]PATH[,readonly][,undo]` as for `--disk`.
    pub disk: Option<OneOrMany>,
    /// CD images, each `[ideC:D=]PATH` as for `--cdrom`.
    pub cdrom: Option<OneOrMany>,
    pub undo_action: Option<String>,
    /// The VM's name (default MAC addresses derive from it).
    pub name: Option<String>,
    /// Network cards, each `tulip,backend=...` as for `--nic`.
    pub nic: Option<OneOrMany>,
    /// The file's directory, for relative image paths.
    #[serde(skip)]
    pub dir: PathBuf,
    /// The file itself.
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// A TOML value that is one string or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A size in a TOML file: a number of bytes or a string like "512M".
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum TomlSize {
    Bytes(u64),
    Text(String),
}

/// Settings from the command line, each overriding the file's.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub kernel: Option<PathBuf>,
    pub bios: Option<PathBuf>,
    pub boot_order: Option<BootOrder>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub memory: Option<MemSize>,
    pub cpus: Option<u32>,
    pub serial: Option<SerialSpec>,
    pub serial2: Option<SerialSpec>,
    pub lpt: Option<LptSpec>,
    pub no_reboot: bool,
    /// `--disk` values; when any are given they replace the file's disks.
    pub disks: Vec<DriveSpec>,
    /// `--cdrom` values; when any are given they replace the file's CDs.
    pub cdroms: Vec<DriveSpec>,
    pub undo_action: Option<UndoAction>,
    pub name: Option<String>,
    /// `--nic` values; when any are given they replace the file's NICs.
    pub nics: Vec<NicSpec>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::ReadFile {
            path: path.to_path_buf(),
            err,
        })?;
        let mut cfg: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            err: e.message().to_string(),
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for p in [&mut cfg.kernel, &mut cfg.initrd, &mut cfg.bios]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
        cfg.dir = dir.to_path_buf();
        cfg.path = Some(path.canonicalize().unwrap_or_else(|_| path.to_path_buf()));
        Ok(cfg)
    }
}

fn parse_value<T: FromStr>(what: &'static str, value: &str) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    value.parse().map_err(|e: T::Err| ConfigError::BadValue {
        what,
        value: value.to_string(),
        err: e.to_string(),
    })
}

impl VmConfig {
    /// Merges the file (if any) with the flags and validates the result.
    pub fn resolve(file: Option<FileConfig>, o: Overrides) -> Result<Self, ConfigError> {
        let f = file.unwrap_or_default();
        let memory = match (o.memory, f.memory) {
            (Some(m), _) => m,
            (None, Some(TomlSize::Bytes(b))) => MemSize(b),
            (None, Some(TomlSize::Text(t))) => t.parse()?,
            (None, None) => MemSize(DEFAULT_MEMORY),
        };
        let serial = match (o.serial, f.serial) {
            (Some(s), _) => s,
            (None, Some(s)) => parse_value("serial", &s)?,
            (None, None) => SerialSpec::Stdio,
        };
        let serial2 = match (o.serial2, f.serial2) {
            (Some(s), _) => s,
            (None, Some(s)) => parse_value("serial2", &s)?,
            (None, None) => SerialSpec::None,
        };
        let lpt = match (o.lpt, f.lpt) {
            (Some(l), _) => Some(l),
            (None, Some(l)) => Some(parse_value("lpt", &l)?),
            (None, None) => None,
        };
        let parse_drives =
            |kind, list: Option<OneOrMany>, what| -> Result<Vec<DriveSpec>, ConfigError> {
                list.map(OneOrMany::into_vec)
                    .unwrap_or_default()
                    .iter()
                    .map(|s| {
                        DriveSpec::parse(kind, s)
                            .map(|d| d.relative_to(&f.dir))
                            .map_err(|err| ConfigError::BadValue {
                                what,
                                value: s.clone(),
                                err,
                            })
                    })
                    .collect()
            };
        let file_disks = parse_drives(DriveKind::Disk, f.disk, "disk")?;
        let file_cdroms = parse_drives(DriveKind::Cdrom, f.cdrom, "cdrom")?;
        let mut drives = if o.disks.is_empty() {
            file_disks
        } else {
            o.disks
        };
        drives.extend(if o.cdroms.is_empty() {
            file_cdroms
        } else {
            o.cdroms
        });
        let undo_action = match (o.undo_action, f.undo_action) {
            (Some(a), _) => a,
            (None, Some(a)) => parse_value("undo_action", &a)?,
            (None, None) => UndoAction::Keep,
        };
        let nics = if o.nics.is_empty() {
            f.nic
                .map(OneOrMany::into_vec)
                .unwrap_or_default()
                .iter()
                .map(|s| parse_value::<NicSpec>("nic", s))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            o.nics
        };
        let cfg = VmConfig {
            name: o.name.or(f.name),
            config_file: f.path,
            nics,
            kernel: o.kernel.or(f.kernel),
            bios: o.bios.or(f.bios),
            boot_order: match (o.boot_order, f.boot) {
                (Some(b), _) => b,
                (None, Some(b)) => b.parse()?,
                (None, None) => BootOrder::default(),
            },
            initrd: o.initrd.or(f.initrd),
            cmdline: o
                .cmdline
                .or(f.cmdline)
                .unwrap_or_else(|| DEFAULT_CMDLINE.to_string()),
            memory: memory.0,
            cpus: o.cpus.or(f.cpus).unwrap_or(1),
            serial,
            serial2,
            lpt,
            no_reboot: o.no_reboot || f.no_reboot.unwrap_or(false),
            drives,
            undo_action,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks everything that can be checked before touching KVM: files readable, sizes sane.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.kernel {
            Some(k) => {
                check_file("kernel", k)?;
                if self.bios.is_some() {
                    return Err(ConfigError::BiosWithKernel);
                }
            }
            None if self.initrd.is_some() => return Err(ConfigError::NeedsKernel("--initrd")),
            None if self.cmdline != DEFAULT_CMDLINE => {
                return Err(ConfigError::NeedsKernel("--cmdline"))
            }
            None if self.drives.is_empty() => return Err(ConfigError::NothingToBoot),
            None => {}
        }
        if let Some(i) = &self.initrd {
            check_file("initrd", i)?;
        }
        if let Some(b) = &self.bios {
            check_file("BIOS image", b)?;
        }
        if self.cpus == 0 {
            return Err(ConfigError::ZeroCpus);
        }
        if self.cpus > MAX_CPUS {
            return Err(ConfigError::TooManyCpus(self.cpus));
        }
        let mem = MemSize(self.memory);
        if self.memory < arch::layout::MIN_RAM {
            return Err(ConfigError::MemoryTooSmall(mem));
        }
        if !self.memory.is_multiple_of(4096) {
            return Err(ConfigError::MemoryUnaligned(mem));
        }
        if let Some(host) = host_memory() {
            if self.memory > host {
                return Err(ConfigError::MemoryTooLarge(mem, MemSize(host)));
            }
        }
        assign_slots(&self.drives).map_err(ConfigError::Drives)?;
        for d in &self.drives {
            check_file(
                if d.kind == DriveKind::Disk {
                    "disk"
                } else {
                    "CD image"
                },
                &d.path,
            )?;
        }
        if self.serial == self.serial2 && self.serial != SerialSpec::None {
            return Err(ConfigError::SharedSerialBackend(self.serial.to_string()));
        }
        if self.cmdline.len() >= arch::boot::CMDLINE_MAX {
            return Err(ConfigError::CmdlineTooLong(self.cmdline.len()));
        }
        if self.nics.len() > MAX_NICS {
            return Err(ConfigError::TooManyNics(self.nics.len()));
        }
        let macs = self.nic_macs();
        for (i, a) in macs.iter().enumerate() {
            if let Some(j) = macs[..i].iter().position(|b| b == a) {
                return Err(ConfigError::DuplicateMac(j, i, crate::nic::format_mac(a)));
            }
        }
        Ok(())
    }

    /// What the boot vCPU runs first: the kernel, a BIOS image, or kettle's BIOS.
    pub fn firmware(&self) -> Firmware<'_> {
        Firmware::of(self.kernel.as_deref(), self.bios.as_deref())
    }

    /// What identifies this VM for default MAC addresses: its name, else its configuration
    /// file, else its first disk, else its kernel (absolute paths when they resolve).
    pub fn identity(&self) -> String {
        if let Some(n) = &self.name {
            return format!("name:{n}");
        }
        let path = self
            .config_file
            .as_deref()
            .or(self.drives.first().map(|d| d.path.as_path()))
            .or(self.kernel.as_deref())
            .unwrap_or(Path::new("kettle"));
        let abs = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        format!("path:{}", abs.display())
    }

    /// Each NIC's MAC address: the one given, else the default derived from [`Self::identity`].
    pub fn nic_macs(&self) -> Vec<[u8; 6]> {
        let id = self.identity();
        self.nics
            .iter()
            .enumerate()
            .map(|(i, n)| n.mac.unwrap_or_else(|| crate::nic::default_mac(&id, i)))
            .collect()
    }
}

fn check_file(what: &'static str, path: &Path) -> Result<(), ConfigError> {
    let unreadable = |err| ConfigError::Unreadable {
        what,
        path: path.to_path_buf(),
        err,
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if !meta.is_file() {
        return Err(ConfigError::NotAFile {
            what,
            path: path.to_path_buf(),
        });
    }
    std::fs::File::open(path).map_err(unreadable)?;
    Ok(())
}

/// The host's physical RAM (MemTotal), if it can be read.
pub fn host_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!("512M".parse::<MemSize>().unwrap(), MemSize(512 << 20));
        assert_eq!("2g".parse::<MemSize>().unwrap(), MemSize(2 << 30));
        assert_eq!("1GiB".parse::<MemSize>().unwrap(), MemSize(1 << 30));
        assert_eq!("4096".parse::<MemSize>().unwrap(), MemSize(4096));
        assert!("12Q".parse::<MemSize>().is_err());
        assert!("".parse::<MemSize>().is_err());
        assert!("99999999999T".parse::<MemSize>().is_err());
        assert_eq!(MemSize(512 << 20).to_string(), "512M");
        assert_eq!(MemSize(3 << 30).to_string(), "3G");
    }

    fn kernel_file() -> tempfile_path::TempPath {
        tempfile_path::TempPath::new(b"not really a kernel")
    }

    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);
        impl TempPath {
            pub fn new(contents: &[u8]) -> Self {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let p = std::env::temp_dir().join(format!(
                    "kettle-config-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                std::fs::write(&p, contents).unwrap();
                TempPath(p)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn flags_override_file_and_paths_are_relative_to_it() {
        let k = kernel_file();
        let dir = k.0.parent().unwrap();
        let name = k.0.file_name().unwrap().to_str().unwrap();
        let toml = kernel_file();
        std::fs::write(
            &toml.0,
            format!("kernel = \"{name}\"\nmemory = \"64M\"\ncpus = 2\nserial = \"none\"\nno_reboot = true\n"),
        )
        .unwrap();
        let f = FileConfig::load(&toml.0).unwrap();
        assert_eq!(f.kernel.as_deref(), Some(dir.join(name).as_path()));
        let cfg = VmConfig::resolve(
            Some(f),
            Overrides {
                cpus: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(cfg.cpus, 3);
        assert_eq!(cfg.memory, 64 << 20);
        assert_eq!(cfg.serial, SerialSpec::None);
        assert!(cfg.no_reboot);
        assert_eq!(cfg.cmdline, DEFAULT_CMDLINE);
    }

    #[test]
    fn bad_settings_give_clear_errors() {
        let k = kernel_file();
        let base = || Overrides {
            kernel: Some(k.0.clone()),
            ..Default::default()
        };
        let err = |o| VmConfig::resolve(None, o).unwrap_err().to_string();
        assert_eq!(
            err(Overrides {
                cpus: Some(0),
                ..base()
            }),
            "--cpus must be at least 1"
        );
        assert!(err(Overrides {
            memory: Some(MemSize(1 << 50)),
            ..base()
        })
        .contains("more than this host"));
        assert!(err(Overrides {
            memory: Some(MemSize(1 << 20)),
            ..base()
        })
        .contains("less than the 16 MiB"));
        assert!(err(Overrides {
            kernel: Some("/nonexistent/vmlinuz".into()),
            ..Default::default()
        })
        .starts_with("kernel /nonexistent/vmlinuz: No such file"));
        assert!(err(Overrides {
            kernel: Some("/".into()),
            ..Default::default()
        })
        .contains("is not a regular file"));
        assert!(err(Overrides {
            initrd: Some(k.0.clone()),
            ..Default::default()
        })
        .starts_with("--initrd needs --kernel"));
        assert!(err(Overrides {
            cmdline: Some("quiet".into()),
            ..Default::default()
        })
        .starts_with("--cmdline needs --kernel"));
        assert!(err(Overrides {
            bios: Some(k.0.clone()),
            ..base()
        })
        .starts_with("--bios and --kernel exclude each other"));
        assert!(err(Overrides {
            bios: Some("/nonexistent/bios.bin".into()),
            cdroms: vec![DriveSpec::parse(DriveKind::Cdrom, k.0.to_str().unwrap()).unwrap()],
            ..Default::default()
        })
        .starts_with("BIOS image /nonexistent/bios.bin: No such file"));
        assert_eq!(
            err(Overrides {
                serial: Some(SerialSpec::Stdio),
                serial2: Some(SerialSpec::Stdio),
                ..base()
            }),
            "--serial and --serial2 both use stdio; give each port its own backend"
        );
    }

    #[test]
    fn without_a_kernel_the_bios_boots_in_the_boot_order() {
        let e = VmConfig::resolve(None, Overrides::default()).unwrap_err();
        assert!(e.to_string().starts_with("nothing to boot"), "{e}");
        let disk = kernel_file();
        let with_disk = || Overrides {
            disks: vec![DriveSpec::parse(DriveKind::Disk, disk.0.to_str().unwrap()).unwrap()],
            ..Default::default()
        };
        let cfg = VmConfig::resolve(None, with_disk()).unwrap();
        assert_eq!(cfg.firmware(), Firmware::Bios);
        assert_eq!(cfg.boot_order.to_string(), "disk,cdrom");
        let order: BootOrder = "cdrom, disk".parse().unwrap();
        assert_eq!(order.0, vec![BootDevice::Cdrom, BootDevice::Disk]);
        assert_eq!(
            "cd".parse::<BootOrder>().unwrap().0,
            vec![BootDevice::Cdrom]
        );
        for bad in ["", "floppy", "disk,disk", "disk,,cdrom"] {
            let e = bad.parse::<BootOrder>().unwrap_err().to_string();
            assert!(e.starts_with("invalid --boot"), "{bad}: {e}");
        }
        let toml = kernel_file();
        std::fs::write(&toml.0, "boot = \"cdrom\"\nbios = \"seabios.bin\"\n").unwrap();
        let f = FileConfig::load(&toml.0).unwrap();
        assert_eq!(
            f.bios.as_deref(),
            Some(toml.0.parent().unwrap().join("seabios.bin").as_path())
        );
        let cfg = VmConfig {
            bios: None,
            ..VmConfig::resolve(
                Some(f),
                Overrides {
                    bios: Some(toml.0.clone()),
                    ..with_disk()
                },
            )
            .unwrap()
        };
        assert_eq!(cfg.boot_order.0, vec![BootDevice::Cdrom]);
    }

    #[test]
    fn drives_from_the_file_are_relative_to_it_and_flags_replace_them() {
        let k = kernel_file();
        let d1 = kernel_file();
        let iso = kernel_file();
        let dir = k.0.parent().unwrap();
        let name =
            |t: &tempfile_path::TempPath| t.0.file_name().unwrap().to_str().unwrap().to_string();
        let toml = kernel_file();
        std::fs::write(
            &toml.0,
            format!(
                "kernel = \"{}\"\ndisk = [\"ide0:1={},undo\"]\ncdrom = \"{}\"\nundo_action = \"discard\"\n",
                name(&k),
                name(&d1),
                name(&iso)
            ),
        )
        .unwrap();
        let cfg = VmConfig::resolve(
            Some(FileConfig::load(&toml.0).unwrap()),
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(cfg.drives.len(), 2);
        assert_eq!(cfg.drives[0].path, dir.join(name(&d1)));
        assert!(cfg.drives[0].undo);
        assert_eq!(cfg.drives[0].slot.unwrap().to_string(), "ide0:1");
        assert_eq!(cfg.drives[1].kind, DriveKind::Cdrom);
        assert_eq!(cfg.undo_action, UndoAction::Discard);
        // --disk on the command line replaces the file's disks but keeps its CD.
        let flag = DriveSpec::parse(DriveKind::Disk, d1.0.to_str().unwrap()).unwrap();
        let cfg = VmConfig::resolve(
            Some(FileConfig::load(&toml.0).unwrap()),
            Overrides {
                disks: vec![flag.clone()],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(cfg.drives, vec![flag, cfg.drives[1].clone()]);
        // A missing image is refused before anything starts.
        let missing = DriveSpec::parse(DriveKind::Disk, "/nonexistent/a.vhd").unwrap();
        let e = VmConfig::resolve(
            Some(FileConfig::load(&toml.0).unwrap()),
            Overrides {
                disks: vec![missing],
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("disk /nonexistent/a.vhd: No such file"),
            "{e}"
        );
    }

    #[test]
    fn nics_get_stable_distinct_macs_and_limits() {
        let k = kernel_file();
        let nic = |s: &str| s.parse::<NicSpec>().unwrap();
        let base = |nics: Vec<NicSpec>, name: Option<&str>| Overrides {
            kernel: Some(k.0.clone()),
            nics,
            name: name.map(str::to_string),
            ..Default::default()
        };
        let two = vec![nic("tulip,backend=none"), nic("tulip,backend=none")];
        let a = VmConfig::resolve(None, base(two.clone(), Some("a"))).unwrap();
        let macs = a.nic_macs();
        assert_ne!(macs[0], macs[1]);
        assert_eq!(
            macs,
            VmConfig::resolve(None, base(two.clone(), Some("a")))
                .unwrap()
                .nic_macs()
        );
        let b = VmConfig::resolve(None, base(two.clone(), Some("b"))).unwrap();
        assert_ne!(macs, b.nic_macs());
        let e = VmConfig::resolve(None, base(vec![nic("tulip,backend=none"); 5], None))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "5 NICs given; the machine has room for at most 4");
        let same = vec![
            nic("tulip,backend=none,mac=00:03:ff:00:00:01"),
            nic("tulip,backend=none,mac=00:03:ff:00:00:01"),
        ];
        let e = VmConfig::resolve(None, base(same, None))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("NICs 0 and 1 both have MAC address 00:03:ff:00:00:01"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_in_file_are_refused() {
        let t = kernel_file();
        std::fs::write(&t.0, "kernal = \"x\"\n").unwrap();
        let e = FileConfig::load(&t.0).unwrap_err().to_string();
        assert!(e.contains("unknown field"), "{e}");
    }
}
