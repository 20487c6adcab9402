//! Undo disks and clones (Virtual Server's "undo disks"; golden-image clones).
//!
//! An undo disk is a differencing disk over the disk the VM was configured with: the VM
//! writes into the undo file while the base stays untouched, and at the end of the session
//! the changes are either committed (merged into the base) or discarded (the undo file is
//! deleted). Virtual Server named undo files `NAME.vud`; kettle does the same.
//!
//! Clones are N differencing disks over one golden image. While any clone (or undo disk) is
//! open, its parents are open read-only under a shared lock, so the golden image cannot be
//! opened for writing ([`crate::Error::Locked`]); and a child never opens its parent writable.

use std::fs;
use std::path::{Path, PathBuf};

use crate::disk::OpenOptions;
use crate::error::{Error, Result};
use crate::io;
use crate::ops::{self, CreateOptions, MergeReport, Progress};
use crate::spec::DiskType;

/// The conventional undo file of `disk`: same directory and name, extension `.vud`.
pub fn undo_path(disk: &Path) -> PathBuf {
    disk.with_extension("vud")
}

/// Creates an undo (differencing) file `undo` over `disk`. Run the VM on `undo`.
pub fn create_undo(disk: &Path, undo: &Path) -> Result<()> {
    ops::create_differencing(undo, disk, &CreateOptions::default(), &mut |_, _| {}).map(|_| ())
}

fn require_differencing(undo: &Path, lock: bool) -> Result<()> {
    let d = OpenOptions::new()
        .read_only(true)
        .lock(lock)
        .open_parent(false)
        .open(undo)?;
    if d.disk_type() != DiskType::Differencing {
        return Err(Error::Unsupported {
            path: undo.to_path_buf(),
            what: format!("a {} disk is not an undo disk", d.disk_type()),
        });
    }
    Ok(())
}

/// Commits an undo file: merges it into its parent, then deletes it. If interrupted, the
/// undo file is still there and still reads the same; commit again.
pub fn commit_undo(undo: &Path, progress: Progress) -> Result<MergeReport> {
    require_differencing(undo, true)?;
    let report = ops::merge(undo, progress)?;
    fs::remove_file(undo).map_err(|e| Error::io(undo, "deleting the committed undo file", e))?;
    io::sync_dir(undo)?;
    Ok(report)
}

/// Discards an undo file: deletes it after checking that it is a differencing disk (and not
/// open elsewhere for writing).
pub fn discard_undo(undo: &Path) -> Result<()> {
    let file = fs::File::open(undo).map_err(|e| Error::io(undo, "opening", e))?;
    io::lock(&file, undo, io::LockMode::Exclusive)?;
    require_differencing(undo, false)?;
    fs::remove_file(undo).map_err(|e| Error::io(undo, "deleting the undo file", e))?;
    io::sync_dir(undo)
}

/// Creates one differencing clone of `golden` at each path of `clones`. Progress counts
/// clones. If one fails, those already created are removed.
pub fn create_clones(golden: &Path, clones: &[PathBuf], progress: Progress) -> Result<()> {
    let total = clones.len() as u64;
    progress(0, total);
    for (i, c) in clones.iter().enumerate() {
        if let Err(e) =
            ops::create_differencing(c, golden, &CreateOptions::default(), &mut |_, _| {})
        {
            for done in &clones[..i] {
                let _ = fs::remove_file(done);
            }
            return Err(e);
        }
        progress(i as u64 + 1, total);
    }
    Ok(())
}
