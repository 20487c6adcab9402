//! Which disk image a saved state belongs to: a restored guest's file systems match only the
//! disk contents it was saved with, so restore refuses an image that is not that disk, or
//! that changed since, unless forced. A differencing disk whose parent is the saved disk,
//! unchanged, is accepted: that is how clones of one saved state each get their own disk.

use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskIdentity {
    pub len: u64,
    /// Last modification, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// The VHD's unique id (hex), for VHD images.
    #[serde(default)]
    pub vhd_id: Option<String>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The VHD footer's unique id and, for a differencing disk, its parent's unique id.
fn vhd_ids(path: &Path) -> std::io::Result<Option<(String, Option<String>)>> {
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if len < 512 {
        return Ok(None);
    }
    let mut footer = [0u8; 512];
    f.read_exact_at(&mut footer, len - 512)?;
    if &footer[..8] != b"conectix" {
        // A fixed disk's copy at the start is not used here; raw images have none.
        let mut head = [0u8; 512];
        (&f).read_exact(&mut head)?;
        if &head[..8] != b"conectix" {
            return Ok(None);
        }
        footer = head;
    }
    let id = hex(&footer[68..84]);
    let disk_type = u32::from_be_bytes(footer[60..64].try_into().unwrap());
    let parent = if disk_type == 4 {
        let dyn_off = u64::from_be_bytes(footer[16..24].try_into().unwrap());
        let mut dh = [0u8; 1024];
        f.read_exact_at(&mut dh, dyn_off)?;
        (&dh[..8] == b"cxsparse").then(|| hex(&dh[40..56]))
    } else {
        None
    };
    Ok(Some((id, parent)))
}

impl DiskIdentity {
    /// Not taken yet (all zero).
    pub fn is_unknown(&self) -> bool {
        *self == DiskIdentity::default()
    }

    pub fn of(path: &Path) -> std::io::Result<DiskIdentity> {
        let m = std::fs::metadata(path)?;
        Ok(DiskIdentity {
            len: m.len(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            vhd_id: vhd_ids(path)?.map(|(id, _)| id),
        })
    }
}

/// Whether `path` may stand in for the saved disk: the same image unchanged, or a differencing
/// disk whose parent is it, unchanged. Err says what differs.
pub fn check_disk(path: &Path, saved: &DiskIdentity) -> Result<(), String> {
    let now = DiskIdentity::of(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if &now == saved {
        return Ok(());
    }
    if let (Some(saved_id), Ok(Some((id, Some(parent_id))))) = (&saved.vhd_id, vhd_ids(path)) {
        if &parent_id == saved_id && &id != saved_id {
            let child =
                vhd::VhdDisk::open(path, true).map_err(|e| format!("{}: {e}", path.display()))?;
            let parent_path = child
                .parent_path()
                .ok_or_else(|| format!("{}: its parent was not found", path.display()))?
                .to_path_buf();
            drop(child);
            let parent = DiskIdentity::of(&parent_path)
                .map_err(|e| format!("{}: {e}", parent_path.display()))?;
            if &parent == saved {
                return Ok(());
            }
            return Err(format!(
                "{} is a differencing disk of {}, which changed since the state was saved",
                path.display(),
                parent_path.display()
            ));
        }
    }
    let what = if now.vhd_id != saved.vhd_id {
        "it is a different image (VHD unique id)"
    } else if now.len != saved.len {
        "its size changed"
    } else {
        "it was modified"
    };
    Err(format!(
        "{}: {what} since the state was saved",
        path.display()
    ))
}
