//! File access under the engine: positional reads and writes (so readers never share a file
//! position), durability barriers, advisory locks and the temp-file-then-rename pattern of
//! the image operations.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// What the engine needs from the file under an image. `File` is the real one; tests
/// substitute a recorder that simulates power loss between barriers.
pub(crate) trait Storage: Send + Sync {
    /// Reads exactly `buf.len()` bytes at `offset` (a short read is an error).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the file as needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Durability barrier: every write before it is on stable storage when it returns.
    fn sync(&self) -> io::Result<()>;
    /// Current length.
    fn len(&self) -> io::Result<u64>;
    /// Truncates or extends (with zeros).
    fn set_len(&self, len: u64) -> io::Result<()>;
}

impl Storage for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}

/// Which advisory lock an open takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// No lock (inspection: `info`, `check`).
    None,
    /// Shared: readers, and every parent in a differencing chain.
    Shared,
    /// Exclusive: a writer.
    Exclusive,
}

/// How long a conflicting lock may be waited for before the image is reported in use. A lock
/// can outlive its owner's close for a moment: a process that forks (to run a helper program)
/// while it has the image open shares the descriptor until the child execs.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// Takes an advisory `flock` on an open file, waiting at most [`LOCK_GRACE`]. The lock lives
/// as long as the file stays open (it belongs to the open file description). Writers take it
/// exclusive and readers shared, so no image is written while another open reads it, and a
/// golden image cannot be opened for writing while a clone has it open as its parent.
pub(crate) fn lock(file: &File, path: &Path, mode: LockMode) -> Result<()> {
    let deadline = std::time::Instant::now() + LOCK_GRACE;
    let (op, what) = match mode {
        LockMode::None => return Ok(()),
        LockMode::Shared => (libc::LOCK_SH, "another process or open has it open for writing"),
        LockMode::Exclusive => (
            libc::LOCK_EX,
            "it is open elsewhere (for writing, or as a reader or the parent of a differencing disk)",
        ),
    };
    loop {
        // SAFETY: flock on a valid open descriptor.
        let r = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Some(libc::EWOULDBLOCK) => {
                return Err(Error::Locked {
                    path: path.to_path_buf(),
                    what,
                })
            }
            _ => return Err(Error::io(path, "locking the image", e)),
        }
    }
}

/// A new file being written next to its final path; it is renamed over the final path by
/// [`TempFile::commit`] after being made durable, and removed if dropped before that. An
/// interrupted operation therefore leaves the destination as it was (and at worst a stray
/// `.NAME.kettle-tmp-*` file).
pub(crate) struct TempFile {
    pub file: File,
    pub path: PathBuf,
    dest: PathBuf,
    committed: bool,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl TempFile {
    pub fn new(dest: &Path) -> Result<TempFile> {
        let dir = parent_dir(dest);
        let name = dest
            .file_name()
            .ok_or_else(|| Error::InvalidArgument(format!("{}: not a file path", dest.display())))?
            .to_string_lossy()
            .into_owned();
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".{name}.kettle-tmp-{}-{n}", std::process::id()));
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, "creating a temporary file", e))?;
        Ok(TempFile {
            file,
            path,
            dest: dest.to_path_buf(),
            committed: false,
        })
    }

    /// Makes the file durable, renames it over the destination (atomically replacing it, or
    /// failing if `replace` is false and it exists) and makes the rename durable.
    pub fn commit(mut self, replace: bool) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::io(&self.path, "syncing", e))?;
        if replace {
            fs::rename(&self.path, &self.dest)
                .map_err(|e| Error::io(&self.dest, "renaming the new file into place", e))?;
        } else {
            // A hard link fails if the destination exists: no window in which a file created
            // meanwhile is replaced.
            fs::hard_link(&self.path, &self.dest).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Error::AlreadyExists {
                        path: self.dest.clone(),
                    }
                } else {
                    Error::io(&self.dest, "linking the new file into place", e)
                }
            })?;
            let _ = fs::remove_file(&self.path);
        }
        self.committed = true;
        sync_dir(&self.dest)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The directory holding `path` ("." for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Makes a rename, link or unlink in `path`'s directory durable.
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    let dir = parent_dir(path);
    let d = File::open(&dir).map_err(|e| Error::io(&dir, "opening the directory", e))?;
    d.sync_all()
        .map_err(|e| Error::io(&dir, "syncing the directory", e))
}

/// True if every byte is zero.
pub(crate) fn is_zero(buf: &[u8]) -> bool {
    // SAFETY: every bit pattern is a valid u128; align_to only reinterprets the aligned middle.
    let (head, body, tail) = unsafe { buf.align_to::<u128>() };
    head.iter().all(|b| *b == 0) && body.iter().all(|w| *w == 0) && tail.iter().all(|b| *b == 0)
}
