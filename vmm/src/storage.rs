//! Drives on the PIIX4 IDE channels as the user describes them (`--disk`, `--cdrom`, the
//! `disk`/`cdrom` keys of a config file), and the host side of each: a VHD (any type) or raw
//! image, read-only or writable, optionally behind an undo disk.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use vhd::{BlockDevice, ImageFormat};

/// An IDE position: channel 0/1 (primary/secondary), device 0/1 (master/slave).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdeSlot {
    pub channel: u8,
    pub device: u8,
}

impl IdeSlot {
    /// The position in IDE order: 0 primary master, 1 primary slave, 2 secondary master,
    /// 3 secondary slave.
    pub fn index(self) -> usize {
        usize::from(self.channel) * 2 + usize::from(self.device)
    }

    pub const ALL: [IdeSlot; 4] = [
        IdeSlot {
            channel: 0,
            device: 0,
        },
        IdeSlot {
            channel: 0,
            device: 1,
        },
        IdeSlot {
            channel: 1,
            device: 0,
        },
        IdeSlot {
            channel: 1,
            device: 1,
        },
    ];
    /// Where a CD goes when no position is given (Virtual Server's default).
    pub const DEFAULT_CDROM: IdeSlot = IdeSlot {
        channel: 1,
        device: 0,
    };
}

impl fmt::Display for IdeSlot {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ide{}:{}", self.channel, self.device)
    }
}

impl FromStr for IdeSlot {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid IDE position {s:?}: use ide0:0, ide0:1, ide1:0 or ide1:1");
        let rest = s.strip_prefix("ide").ok_or_else(bad)?;
        let (c, d) = rest.split_once(':').ok_or_else(bad)?;
        let channel: u8 = c.parse().map_err(|_| bad())?;
        let device: u8 = d.parse().map_err(|_| bad())?;
        if channel > 1 || device > 1 {
            return Err(bad());
        }
        Ok(IdeSlot { channel, device })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriveKind {
    /// An ATA hard disk.
    Disk,
    /// An ATAPI CD/DVD drive with an ISO image.
    Cdrom,
}

/// One drive as given on the command line: `[ideC:D=]PATH[,readonly][,undo]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriveSpec {
    pub kind: DriveKind,
    pub slot: Option<IdeSlot>,
    pub path: PathBuf,
    pub read_only: bool,
    pub undo: bool,
}

impl DriveSpec {
    pub fn parse(kind: DriveKind, s: &str) -> Result<Self, String> {
        let mut parts = s.split(',');
        let first = parts.next().unwrap_or_default();
        let (slot, path) = match first.split_once('=') {
            Some((slot, path)) if slot.starts_with("ide") => (Some(slot.parse()?), path),
            _ => (None, first),
        };
        if path.is_empty() {
            return Err(format!("{s:?}: no image path"));
        }
        let mut spec = DriveSpec {
            kind,
            slot,
            path: PathBuf::from(path),
            read_only: kind == DriveKind::Cdrom,
            undo: false,
        };
        for opt in parts {
            match opt {
                "readonly" | "ro" => spec.read_only = true,
                "undo" if kind == DriveKind::Disk => spec.undo = true,
                "" => {}
                other => {
                    return Err(format!(
                        "{s:?}: unknown option {other:?} (options: readonly{})",
                        if kind == DriveKind::Disk {
                            ", undo"
                        } else {
                            ""
                        }
                    ))
                }
            }
        }
        if spec.undo && spec.read_only {
            return Err(format!(
                "{s:?}: an undo disk is writable; drop readonly or undo"
            ));
        }
        Ok(spec)
    }

    /// Makes a relative path relative to `dir` (for config files).
    pub fn relative_to(mut self, dir: &Path) -> Self {
        if self.path.is_relative() {
            self.path = dir.join(&self.path);
        }
        self
    }
}

impl fmt::Display for DriveSpec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if let Some(s) = self.slot {
            write!(f, "{s}=")?;
        }
        write!(f, "{}", self.path.display())?;
        if self.read_only && self.kind == DriveKind::Disk {
            write!(f, ",readonly")?;
        }
        if self.undo {
            write!(f, ",undo")?;
        }
        Ok(())
    }
}

/// Gives every drive a position: explicit ones first, then CDs at ide1:0 if free, then the
/// rest in order ide0:0, ide0:1, ide1:0, ide1:1.
pub fn assign_slots(specs: &[DriveSpec]) -> Result<Vec<(IdeSlot, DriveSpec)>, String> {
    let mut taken: Vec<(IdeSlot, DriveSpec)> = Vec::new();
    let is_free = |taken: &[(IdeSlot, DriveSpec)], s: IdeSlot| taken.iter().all(|(t, _)| *t != s);
    for spec in specs.iter().filter(|s| s.slot.is_some()) {
        let slot = spec.slot.unwrap();
        if !is_free(&taken, slot) {
            return Err(format!("two drives at {slot}"));
        }
        taken.push((slot, spec.clone()));
    }
    for spec in specs.iter().filter(|s| s.slot.is_none()) {
        let preferred = match spec.kind {
            DriveKind::Cdrom if is_free(&taken, IdeSlot::DEFAULT_CDROM) => {
                Some(IdeSlot::DEFAULT_CDROM)
            }
            _ => None,
        };
        let slot = preferred
            .or_else(|| {
                // Leave ide1:0 to a CD still waiting for it.
                let cd_waiting = spec.kind == DriveKind::Disk
                    && specs
                        .iter()
                        .any(|s| s.kind == DriveKind::Cdrom && s.slot.is_none());
                IdeSlot::ALL
                    .into_iter()
                    .find(|&s| is_free(&taken, s) && !(cd_waiting && s == IdeSlot::DEFAULT_CDROM))
            })
            .or_else(|| IdeSlot::ALL.into_iter().find(|&s| is_free(&taken, s)))
            .ok_or_else(|| format!("no free IDE position for {spec} (at most 4 drives)"))?;
        taken.push((slot, spec.clone()));
    }
    taken.sort_by_key(|(s, _)| *s);
    Ok(taken)
}

/// A drive opened for a VM.
pub struct OpenDrive {
    pub slot: IdeSlot,
    pub kind: DriveKind,
    pub backend: Arc<dyn BlockDevice>,
    /// The undo file the VM writes to, for `,undo` disks.
    pub undo: Option<PathBuf>,
    pub spec: DriveSpec,
}

/// Opens every drive's image. A disk with `,undo` runs on `DISK.vud` (created if missing,
/// reused if a previous run left it); the disk itself is only read.
pub fn open_drives(specs: &[DriveSpec]) -> Result<Vec<OpenDrive>, String> {
    let mut v = Vec::new();
    for (slot, spec) in assign_slots(specs)? {
        let what = match spec.kind {
            DriveKind::Disk => "disk",
            DriveKind::Cdrom => "CD image",
        };
        let err = |e: vhd::Error| format!("{slot} {what} {}: {e}", spec.path.display());
        let (backend, undo): (Arc<dyn BlockDevice>, _) = match spec.kind {
            DriveKind::Cdrom => (
                Arc::new(vhd::RawDisk::open(&spec.path, true).map_err(err)?),
                None,
            ),
            DriveKind::Disk if spec.undo => {
                if vhd::detect_format(&spec.path).map_err(err)? != ImageFormat::Vhd {
                    return Err(format!(
                        "{slot} disk {}: undo disks need a VHD (the undo file is a differencing VHD)",
                        spec.path.display()
                    ));
                }
                let undo = vhd::undo::undo_path(&spec.path);
                if !undo.exists() {
                    vhd::undo::create_undo(&spec.path, &undo).map_err(err)?;
                } else {
                    log::warn!(
                        "{slot}: continuing with the existing undo file {}",
                        undo.display()
                    );
                }
                let disk = vhd::OpenOptions::new()
                    .read_only(false)
                    .open(&undo)
                    .map_err(|e| format!("{slot} undo file {}: {e}", undo.display()))?;
                (Arc::new(disk), Some(undo))
            }
            DriveKind::Disk => (
                Arc::from(
                    vhd::open_image(&spec.path, ImageFormat::Auto, spec.read_only).map_err(err)?,
                ),
                None,
            ),
        };
        v.push(OpenDrive {
            slot,
            kind: spec.kind,
            backend,
            undo,
            spec,
        });
    }
    Ok(v)
}

/// What to do with undo files when the VM stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UndoAction {
    /// Keep the undo file; the user commits or discards it later with `kettle vhd`.
    #[default]
    Keep,
    /// Merge the changes into the disk.
    Commit,
    /// Throw the changes away.
    Discard,
}

impl FromStr for UndoAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "keep" => Ok(UndoAction::Keep),
            "commit" => Ok(UndoAction::Commit),
            "discard" => Ok(UndoAction::Discard),
            _ => Err(format!(
                "invalid undo action {s:?}: use keep, commit or discard"
            )),
        }
    }
}

/// Applies `action` to the undo files of `drives` (which must be closed: pass their paths).
pub fn finish_undo(undo_files: &[PathBuf], action: UndoAction) -> Result<(), String> {
    for undo in undo_files {
        match action {
            UndoAction::Keep => eprintln!(
                "kettle: the changes are in undo file {0}: keep them with `kettle vhd commit {0}` or drop them with `kettle vhd discard {0}`",
                undo.display()
            ),
            UndoAction::Commit => {
                vhd::undo::commit_undo(undo, &mut |_, _| {})
                    .map_err(|e| format!("committing {}: {e}", undo.display()))?;
            }
            UndoAction::Discard => vhd::undo::discard_undo(undo)
                .map_err(|e| format!("discarding {}: {e}", undo.display()))?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(s: &str) -> DriveSpec {
        DriveSpec::parse(DriveKind::Disk, s).unwrap()
    }

    #[test]
    fn specs_parse() {
        assert_eq!(
            disk("ide0:1=/x/a.vhd,readonly"),
            DriveSpec {
                kind: DriveKind::Disk,
                slot: Some(IdeSlot {
                    channel: 0,
                    device: 1
                }),
                path: "/x/a.vhd".into(),
                read_only: true,
                undo: false
            }
        );
        assert!(disk("a.vhd,undo").undo);
        assert!(
            DriveSpec::parse(DriveKind::Cdrom, "x.iso")
                .unwrap()
                .read_only
        );
        assert!(DriveSpec::parse(DriveKind::Disk, "ide2:0=a").is_err());
        assert!(DriveSpec::parse(DriveKind::Disk, "a,bogus")
            .unwrap_err()
            .contains("unknown option"));
        assert!(DriveSpec::parse(DriveKind::Disk, "a,undo,readonly").is_err());
        assert!(DriveSpec::parse(DriveKind::Cdrom, "a.iso,undo").is_err());
        assert!(DriveSpec::parse(DriveKind::Disk, "").is_err());
    }

    #[test]
    fn slots_are_assigned_like_virtual_server() {
        let cd = DriveSpec::parse(DriveKind::Cdrom, "x.iso").unwrap();
        let got = assign_slots(&[disk("a"), disk("b"), cd.clone(), disk("c")]).unwrap();
        let names: Vec<String> = got
            .iter()
            .map(|(s, d)| format!("{s}={}", d.path.display()))
            .collect();
        assert_eq!(names, ["ide0:0=a", "ide0:1=b", "ide1:0=x.iso", "ide1:1=c"]);
        assert!(assign_slots(&[disk("ide0:0=a"), disk("ide0:0=b")]).is_err());
        assert!(assign_slots(&[disk("a"), disk("b"), disk("c"), disk("d"), disk("e")]).is_err());
        let got = assign_slots(&[disk("ide1:0=a"), cd]).unwrap();
        assert_eq!(
            got[0].0,
            IdeSlot {
                channel: 0,
                device: 0
            }
        );
    }
}
