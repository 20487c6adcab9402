//! The read/write engine: [`VhdDisk`], an open VHD file of any type with its parent chain.
//!
//! # Crash safety
//!
//! A write to an unallocated block of a dynamic or differencing disk allocates the block at
//! the end of the file's data (where the end footer sits) and, in this order:
//!
//! 1. writes the block's sector bitmap and the written sectors into the new block (the rest
//!    of the block is a hole that reads as zeros: the old footer sector is covered by the
//!    bitmap, and any bytes left past the data end by an earlier interrupted allocation are
//!    truncated away first);
//! 2. writes the unchanged footer after the new block, at the new end of the file;
//! 3. records the new BAT entry **in memory only**, marking its BAT sector dirty.
//!
//! A write into an allocated block writes the data in place; on a differencing disk (or a
//! foreign dynamic disk whose bitmap has clear bits there) it also sets the sectors' bits
//! **in memory only**, marking the bitmap dirty.
//!
//! [`VhdDisk::flush`] then makes everything durable with two barriers:
//!
//! 1. `fdatasync` — every data sector, every new block's bitmap and data, and the footer at
//!    the new end (with the file length it implies) are on stable storage;
//! 2. the dirty bitmaps are written, then the dirty BAT sectors;
//! 3. `fdatasync` — the metadata is on stable storage; the flush returns.
//!
//! Why a crash (process kill or power loss, with sector-atomic writes and any reordering
//! between barriers) at any point leaves a file that opens and holds every flushed write:
//!
//! * The on-disk BAT and bitmaps only change in step 2 of a flush, after barrier 1. So every
//!   BAT entry and every bitmap bit on disk describes data that was durable before the
//!   entry or bit could reach the disk: a flushed write is never hidden, and no entry ever
//!   points at a block whose bitmap or data is missing or beyond the end of the file.
//! * BAT and bitmap sectors are rewritten whole from memory; a sector holds either its old or
//!   its new contents, and both are valid (old: the previous flush's state plus nothing).
//! * Writes since the last flush may be lost, or partly present (each sector old or new):
//!   the usual contract of a disk write cache, which the guest manages with FLUSH CACHE.
//! * The footer never changes during writes; only its position moves. At any crash point the
//!   end of the file holds either a valid footer (old position or new) or, when an allocation
//!   was cut short, block data without a cookie. In the second case `open` uses the footer
//!   copy at offset 0, which allocations never touch and which is therefore exactly as
//!   current (reported as a note, [`crate::Problem::EndFooterMissing`]; qemu also reads the
//!   copy at offset 0 first). A read-only open never writes; a writable open rewrites the end
//!   footer at its first flush, and the next allocation truncates the unreferenced tail.
//! * Blocks written but not yet referenced by the on-disk BAT are unreferenced space at the
//!   end of the file: harmless, reported as a note, and reused by the next allocation.
//!
//! Fixed disks have no metadata to order: a write goes straight to its sectors and a flush
//! is one `fdatasync`.
//!
//! The issue's sketch orders "data, bitmap, BAT entry, then the footer moved to the new
//! end". kettle keeps that order for what reaches the disk and adds the barrier between the
//! data and the metadata; it moves the footer together with the data (before the barrier)
//! because the BAT entry must never point past the durable end of the file, and it defers
//! the BAT and bitmap writes to the flush so that a stream of small writes costs two
//! `fdatasync` per flush rather than one or two per allocation.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::error::{Error, ParentCandidate, Problem, Result};
use crate::io::{self, LockMode, Storage};
use crate::parse::{self, Layout, Locator, Severity};
use crate::spec::{
    self, platform, DiskType, DynamicHeader, Footer, Uuid, BAT_UNUSED, FOOTER_SIZE, SECTOR_SIZE,
};

/// Deepest differencing chain kettle opens (the child plus 63 ancestors).
pub const MAX_CHAIN_DEPTH: usize = 64;

const SECTOR: usize = SECTOR_SIZE as usize;

/// How to open a VHD file.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    read_only: bool,
    lock: bool,
    open_parent: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            read_only: true,
            lock: true,
            open_parent: true,
        }
    }
}

impl OpenOptions {
    /// Read-only, locked, with the parent chain: the defaults.
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }

    /// Open for reading only (default) or for reading and writing. Parents are always
    /// opened read-only.
    pub fn read_only(mut self, read_only: bool) -> OpenOptions {
        self.read_only = read_only;
        self
    }

    /// Take advisory locks (default): exclusive when writable, shared when read-only and on
    /// every parent. Without locks, nothing stops another process from changing the file.
    pub fn lock(mut self, lock: bool) -> OpenOptions {
        self.lock = lock;
        self
    }

    /// Open the parent chain of a differencing disk (default). Without it, the disk's own
    /// sectors read as stored and every other sector reads as zeros; used to merge or
    /// compact a child, and to inspect one whose parent is missing.
    pub fn open_parent(mut self, open_parent: bool) -> OpenOptions {
        self.open_parent = open_parent;
        self
    }

    /// Opens the file.
    pub fn open(&self, path: impl AsRef<Path>) -> Result<VhdDisk> {
        let mut visited = Vec::new();
        open_chain(path.as_ref(), self, 0, &mut visited)
    }
}

fn open_chain(
    path: &Path,
    opts: &OpenOptions,
    depth: usize,
    visited: &mut Vec<PathBuf>,
) -> Result<VhdDisk> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(!opts.read_only)
        .open(path)
        .map_err(|e| Error::io(path, "opening", e))?;
    let mode = match (opts.lock, opts.read_only) {
        (false, _) => LockMode::None,
        (true, true) => LockMode::Shared,
        (true, false) => LockMode::Exclusive,
    };
    io::lock(&file, path, mode)?;
    let mut disk = VhdDisk::from_storage(path, Box::new(file), opts.read_only)?;
    if disk.disk_type == DiskType::Differencing && opts.open_parent {
        let canonical = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        visited.push(canonical);
        if depth + 1 >= MAX_CHAIN_DEPTH {
            return Err(Error::ChainTooDeep {
                path: path.to_path_buf(),
                limit: MAX_CHAIN_DEPTH,
            });
        }
        let sp = disk.sparse.as_ref().expect("differencing disks are sparse");
        let candidates = parent_candidates(path, &sp.header, &sp.locators);
        let parent_opts = OpenOptions {
            read_only: true,
            lock: opts.lock,
            open_parent: true,
        };
        let expected = sp.header.parent_uuid;
        let mut mismatch = None;
        // The first candidate that is no VHD at all (no valid footer): reported if no later
        // candidate is the parent. Such a file fails before any parent of its own is
        // opened, so skipping it costs little; `check` skips it the same way.
        let mut unreadable = None;
        for c in &candidates {
            if !c.path.is_file() {
                continue;
            }
            // Only the identity is needed to decide: look at the footer before opening the
            // whole chain below it. A candidate with another identity is not the parent,
            // and no loop either, even if it is a disk of this chain (a locator naming the
            // child itself, say).
            let known = match peek_uuid(&c.path) {
                Some(u) if u == expected => true,
                Some(found) => {
                    mismatch.get_or_insert((c.path.clone(), found));
                    continue;
                }
                None => false,
            };
            let canon = fs::canonicalize(&c.path).unwrap_or_else(|_| c.path.clone());
            if visited.contains(&canon) {
                return Err(Error::ParentLoop {
                    path: path.to_path_buf(),
                    again: c.path.clone(),
                });
            }
            let parent = match open_chain(&c.path, &parent_opts, depth + 1, visited) {
                Ok(p) => p,
                Err(e) if !known => {
                    unreadable.get_or_insert(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if parent.footer.uuid != expected {
                mismatch.get_or_insert((c.path.clone(), parent.footer.uuid));
                continue;
            }
            check_parent_timestamp(path, &c.path, sp.header.parent_timestamp);
            disk.parent_path = Some(c.path.clone());
            disk.parent = Some(Box::new(parent));
            break;
        }
        visited.pop();
        if disk.parent.is_none() {
            if let Some(e) = unreadable {
                return Err(e);
            }
            return Err(match mismatch {
                Some((parent, found)) => Error::ParentMismatch {
                    child: path.to_path_buf(),
                    parent,
                    expected,
                    found,
                },
                None => Error::ParentNotFound {
                    child: path.to_path_buf(),
                    tried: candidates,
                },
            });
        }
    }
    Ok(disk)
}

/// The unique id in a file's footer (end, or copy at offset 0), if it has a valid one.
fn peek_uuid(path: &Path) -> Option<Uuid> {
    let file = fs::File::open(path).ok()?;
    let len = Storage::len(&file).ok()?;
    let mut b = [0u8; FOOTER_SIZE];
    for off in [len.checked_sub(FOOTER_SIZE as u64)?, 0] {
        if Storage::read_at(&file, &mut b, off).is_ok() {
            if let Ok(f) = parse::validate_footer(&b, crate::error::Structure::Footer, off) {
                return Some(f.uuid);
            }
        }
    }
    None
}

/// The spec records the parent's modification time in the child. kettle identifies the
/// parent by its unique id; a different modification time (the parent was touched, copied
/// or written since) is only logged, as Hyper-V does, because refusing would strand the
/// child over something as weak as a copy without `-p`.
fn check_parent_timestamp(child: &Path, parent: &Path, recorded: u32) {
    if let Ok(m) = fs::metadata(parent).and_then(|m| m.modified()) {
        let actual = spec::timestamp_from(m);
        if actual != recorded {
            log::warn!(
                "{}: parent {} was modified after the child was created (recorded time stamp {recorded}, file's {actual}); its unique id matches, so it is used",
                child.display(),
                parent.display()
            );
        }
    }
}

/// Where the parent of a differencing disk may be, in the order tried: the relative
/// locators (`W2ru`, `Wi2r`, relative to the child's directory), the absolute ones (`W2ku`,
/// `Wi2k`, `MacX`), then the file name of each in the child's directory, then the header's
/// parent name. Both `\` and `/` separate path components.
pub fn parent_candidates(
    child: &Path,
    header: &DynamicHeader,
    locators: &[Locator],
) -> Vec<ParentCandidate> {
    let dir = io::parent_dir(child);
    let mut out: Vec<ParentCandidate> = Vec::new();
    // A path named by several sources is tried once; its sources are listed together.
    let mut push = |source: String, path: PathBuf| match out.iter_mut().find(|c| c.path == path) {
        Some(c) => {
            c.source.push_str("; ");
            c.source.push_str(&source);
        }
        None => out.push(ParentCandidate { source, path }),
    };
    let normalize = |s: &str| s.replace('\\', "/");
    let file_name = |s: &str| -> Option<String> {
        let n = normalize(s);
        let name = n.rsplit('/').next().unwrap_or("").to_string();
        (!name.is_empty() && name != "." && name != "..").then_some(name)
    };
    let relative = [platform::W2RU, platform::WI2R];
    let absolute = [platform::W2KU, platform::WI2K, platform::MACX];
    for kinds in [&relative[..], &absolute[..]] {
        for l in locators.iter().filter(|l| kinds.contains(&l.platform_code)) {
            let Some(p) = l.path.as_deref().filter(|p| !p.is_empty()) else {
                continue;
            };
            let n = normalize(p);
            let source = format!("{} locator", l.kind());
            let is_drive = n.len() >= 2 && n.as_bytes()[1] == b':';
            if relative.contains(&l.platform_code) {
                push(source, dir.join(n.trim_start_matches("./")));
            } else if n.starts_with('/') {
                push(source, PathBuf::from(n));
            } else if !is_drive {
                push(source, dir.join(n));
            }
        }
    }
    for l in locators {
        if let Some(name) = l.path.as_deref().and_then(file_name) {
            push(
                format!("{} file name in the child's directory", l.kind()),
                dir.join(name),
            );
        }
    }
    if let Some(name) = file_name(&header.parent_name) {
        push("parent name".into(), dir.join(name));
    }
    out
}

/// An open VHD file: fixed, dynamic or differencing (with its parent chain, read-only).
///
/// Reads and writes are whole sectors at any sector offset. All methods take `&self`: reads
/// run concurrently (positional I/O, metadata behind a read-write lock), writes and flushes
/// are serialized among themselves. Dropping a writable disk flushes it (errors are logged;
/// call [`VhdDisk::flush`] to see them).
pub struct VhdDisk {
    path: PathBuf,
    st: Box<dyn Storage>,
    read_only: bool,
    footer: Footer,
    footer_bytes: [u8; FOOTER_SIZE],
    disk_type: DiskType,
    sectors: u64,
    sparse: Option<Sparse>,
    parent: Option<Box<VhdDisk>>,
    parent_path: Option<PathBuf>,
    notes: Vec<Problem>,
    fixed_unsynced: AtomicBool,
}

struct Sparse {
    header: DynamicHeader,
    header_offset: u64,
    block_sectors: u64,
    bitmap_bytes: u64,
    differencing: bool,
    locators: Vec<Locator>,
    meta: RwLock<Meta>,
    w: Mutex<WriteState>,
}

struct Meta {
    bat: Vec<u32>,
    /// Bitmaps of allocated blocks, loaded on first use.
    bitmaps: HashMap<u32, Arc<Vec<u8>>>,
}

struct WriteState {
    /// Where the next block goes; the end footer belongs here.
    data_end: u64,
    file_len: u64,
    end_footer_ok: bool,
    /// BAT chunks (of 128 entries, one sector) changed since the last flush.
    dirty_bat: BTreeSet<u64>,
    /// Blocks whose bitmap changed since the last flush.
    dirty_bitmaps: BTreeSet<u32>,
    unsynced: bool,
}

fn lock_err<T>(_: T) -> Error {
    Error::InvalidArgument("internal lock poisoned by a panicking thread".into())
}

impl VhdDisk {
    /// Opens a VHD file (read-only or writable) with its parent chain and locks.
    pub fn open(path: impl AsRef<Path>, read_only: bool) -> Result<VhdDisk> {
        OpenOptions::new().read_only(read_only).open(path)
    }

    /// Builds a disk over already-opened storage; no parent is attached.
    pub(crate) fn from_storage(
        path: &Path,
        st: Box<dyn Storage>,
        read_only: bool,
    ) -> Result<VhdDisk> {
        let (layout, findings) =
            parse::inspect(st.as_ref()).map_err(|e| Error::io(path, "reading the metadata", e))?;
        if let Some(f) = findings.iter().find(|f| f.severity == Severity::Fatal) {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                problem: f.problem.clone(),
            });
        }
        for f in &findings {
            log::warn!("{}: {}", path.display(), f.problem);
        }
        let Some(layout) = layout else {
            return Err(Error::InvalidArgument(format!(
                "{}: metadata could not be read",
                path.display()
            )));
        };
        let notes = findings.into_iter().map(|f| f.problem).collect();
        Ok(Self::from_layout(path, st, read_only, layout, notes))
    }

    fn from_layout(
        path: &Path,
        st: Box<dyn Storage>,
        read_only: bool,
        layout: Layout,
        notes: Vec<Problem>,
    ) -> VhdDisk {
        let sectors = layout.footer.current_size / SECTOR_SIZE;
        let sparse = layout.sparse.map(|s| Sparse {
            block_sectors: s.header.block_sectors(),
            bitmap_bytes: s.header.bitmap_bytes(),
            differencing: layout.disk_type == DiskType::Differencing,
            header_offset: s.header_offset,
            header: s.header,
            locators: s.locators,
            meta: RwLock::new(Meta {
                bat: s.bat,
                bitmaps: HashMap::new(),
            }),
            w: Mutex::new(WriteState {
                data_end: s.data_end,
                file_len: layout.file_len,
                end_footer_ok: layout.end_footer_ok,
                dirty_bat: BTreeSet::new(),
                dirty_bitmaps: BTreeSet::new(),
                unsynced: false,
            }),
        });
        VhdDisk {
            path: path.to_path_buf(),
            st,
            read_only,
            footer: layout.footer,
            footer_bytes: layout.footer_bytes,
            disk_type: layout.disk_type,
            sectors,
            sparse,
            parent: None,
            parent_path: None,
            notes,
            fixed_unsynced: AtomicBool::new(false),
        }
    }

    /// Attaches a parent (tests that build chains over simulated storage).
    #[cfg(test)]
    pub(crate) fn set_parent(&mut self, parent: VhdDisk) {
        self.parent = Some(Box::new(parent));
    }

    /// The file's path as opened.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The footer in use (the end one, or the copy at offset 0 when the end one is missing).
    pub fn footer(&self) -> &Footer {
        &self.footer
    }
    /// The dynamic header (dynamic and differencing disks).
    pub fn header(&self) -> Option<&DynamicHeader> {
        self.sparse.as_ref().map(|s| &s.header)
    }
    /// Offset of the dynamic header.
    pub fn header_offset(&self) -> Option<u64> {
        self.sparse.as_ref().map(|s| s.header_offset)
    }
    /// Decoded parent locators (differencing disks).
    pub fn locators(&self) -> &[Locator] {
        self.sparse.as_ref().map_or(&[], |s| &s.locators[..])
    }
    /// The disk type.
    pub fn disk_type(&self) -> DiskType {
        self.disk_type
    }
    /// Size of the disk in sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }
    /// Size of the disk in bytes.
    pub fn size(&self) -> u64 {
        self.sectors * SECTOR_SIZE
    }
    /// True when opened read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }
    /// The parent (differencing disks opened with their chain).
    pub fn parent(&self) -> Option<&VhdDisk> {
        self.parent.as_deref()
    }
    /// Where the parent was found.
    pub fn parent_path(&self) -> Option<&Path> {
        self.parent_path.as_deref()
    }
    /// Non-fatal findings of the open (crash leftovers, a damaged redundant copy, ...).
    pub fn notes(&self) -> &[Problem] {
        &self.notes
    }
    /// Block size (dynamic and differencing disks).
    pub fn block_size(&self) -> Option<u32> {
        self.sparse.as_ref().map(|s| s.header.block_size)
    }
    /// Blocks needed to map the disk (dynamic and differencing disks; 0 for fixed).
    pub fn total_blocks(&self) -> u64 {
        self.sparse
            .as_ref()
            .map_or(0, |s| self.sectors.div_ceil(s.block_sectors))
    }
    /// Allocated blocks among those mapping the disk.
    pub fn allocated_blocks(&self) -> u64 {
        let Some(sp) = &self.sparse else { return 0 };
        let meta = sp.meta.read().expect("lock");
        let n = self.total_blocks() as usize;
        meta.bat[..n].iter().filter(|e| **e != BAT_UNUSED).count() as u64
    }

    fn check_range(&self, sector: u64, len: usize) -> Result<()> {
        let n = (len / SECTOR) as u64;
        if len % SECTOR != 0 || sector.checked_add(n).map_or(true, |e| e > self.sectors) {
            return Err(Error::OutOfRange {
                path: self.path.clone(),
                sector,
                len: len as u64,
                sectors: self.sectors,
            });
        }
        Ok(())
    }

    fn io_err(&self, context: &str, e: std::io::Error) -> Error {
        Error::io(&self.path, context.to_string(), e)
    }

    /// Reads whole sectors starting at `sector` into `buf` (a multiple of 512 bytes).
    pub fn read(&self, sector: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(sector, buf.len())?;
        match &self.sparse {
            None => self
                .st
                .read_at(buf, sector * SECTOR_SIZE)
                .map_err(|e| self.io_err("reading", e)),
            Some(sp) => self.read_sparse(sp, sector, buf),
        }
    }

    /// Reads sectors this file does not hold: from the parent, or zeros.
    fn read_below(&self, sector: u64, buf: &mut [u8]) -> Result<()> {
        if let Some(p) = &self.parent {
            let n = (buf.len() / SECTOR) as u64;
            let avail = p.sectors.saturating_sub(sector).min(n);
            if avail > 0 {
                let (head, tail) = buf.split_at_mut(avail as usize * SECTOR);
                p.read(sector, head)?;
                tail.fill(0);
                return Ok(());
            }
        }
        buf.fill(0);
        Ok(())
    }

    fn bitmap(&self, sp: &Sparse, block: u32, entry: u32) -> Result<Arc<Vec<u8>>> {
        if let Some(b) = sp.meta.read().map_err(lock_err)?.bitmaps.get(&block) {
            return Ok(b.clone());
        }
        let mut b = vec![0u8; sp.bitmap_bytes as usize];
        self.st
            .read_at(&mut b, entry as u64 * SECTOR_SIZE)
            .map_err(|e| self.io_err("reading a sector bitmap", e))?;
        let mut meta = sp.meta.write().map_err(lock_err)?;
        Ok(meta
            .bitmaps
            .entry(block)
            .or_insert_with(|| Arc::new(b))
            .clone())
    }

    fn read_sparse(&self, sp: &Sparse, sector: u64, buf: &mut [u8]) -> Result<()> {
        let mut s = sector;
        let mut rest = buf;
        while !rest.is_empty() {
            let block = s / sp.block_sectors;
            let within = s % sp.block_sectors;
            let n = (sp.block_sectors - within).min((rest.len() / SECTOR) as u64);
            let (chunk, tail) = rest.split_at_mut(n as usize * SECTOR);
            let entry = sp.meta.read().map_err(lock_err)?.bat[block as usize];
            if entry == BAT_UNUSED {
                self.read_below(s, chunk)?;
            } else {
                let bm = self.bitmap(sp, block as u32, entry)?;
                let data = entry as u64 * SECTOR_SIZE + sp.bitmap_bytes;
                let mut i = within;
                while i < within + n {
                    let (present, end) = spec::bitmap_run(&bm, i, within + n);
                    let part = &mut chunk
                        [((i - within) as usize * SECTOR)..((end - within) as usize * SECTOR)];
                    if present {
                        self.st
                            .read_at(part, data + i * SECTOR_SIZE)
                            .map_err(|e| self.io_err("reading", e))?;
                    } else {
                        self.read_below(block * sp.block_sectors + i, part)?;
                    }
                    i = end;
                }
            }
            s += n;
            rest = tail;
        }
        Ok(())
    }

    /// Writes whole sectors starting at `sector` from `buf` (a multiple of 512 bytes). The
    /// write is durable once [`VhdDisk::flush`] returns.
    pub fn write(&self, sector: u64, buf: &[u8]) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly {
                path: self.path.clone(),
            });
        }
        self.check_range(sector, buf.len())?;
        match &self.sparse {
            None => {
                self.st
                    .write_at(buf, sector * SECTOR_SIZE)
                    .map_err(|e| self.io_err("writing", e))?;
                self.fixed_unsynced.store(true, Ordering::Release);
                Ok(())
            }
            Some(sp) => self.write_sparse(sp, sector, buf),
        }
    }

    fn write_sparse(&self, sp: &Sparse, sector: u64, buf: &[u8]) -> Result<()> {
        let mut w = sp.w.lock().map_err(lock_err)?;
        w.unsynced = true;
        let mut allocated = false;
        let mut s = sector;
        let mut rest = buf;
        let result = (|| -> Result<()> {
            while !rest.is_empty() {
                let block = s / sp.block_sectors;
                let within = s % sp.block_sectors;
                let n = (sp.block_sectors - within).min((rest.len() / SECTOR) as u64);
                let (chunk, tail) = rest.split_at(n as usize * SECTOR);
                let entry = sp.meta.read().map_err(lock_err)?.bat[block as usize];
                if entry == BAT_UNUSED {
                    // An unallocated block of a dynamic disk already reads as zeros; a
                    // differencing disk must record zeros, which hide the parent.
                    if sp.differencing || !io::is_zero(chunk) {
                        self.allocate(sp, &mut w, block as u32, within, chunk)?;
                        allocated = true;
                    }
                } else {
                    let data = entry as u64 * SECTOR_SIZE + sp.bitmap_bytes;
                    self.st
                        .write_at(chunk, data + within * SECTOR_SIZE)
                        .map_err(|e| self.io_err("writing", e))?;
                    let bm = self.bitmap(sp, block as u32, entry)?;
                    if !spec::bitmap_all_set(&bm, within, n) {
                        let mut meta = sp.meta.write().map_err(lock_err)?;
                        let bm = meta.bitmaps.get_mut(&(block as u32)).expect("loaded");
                        spec::bitmap_set_range(Arc::make_mut(bm).as_mut_slice(), within, n);
                        w.dirty_bitmaps.insert(block as u32);
                    }
                }
                s += n;
                rest = tail;
            }
            Ok(())
        })();
        if allocated {
            // Step 2 of an allocation: the unchanged footer at the new end of the file.
            let end = w.data_end;
            match self.st.write_at(&self.footer_bytes, end) {
                Ok(()) => {
                    w.file_len = end + FOOTER_SIZE as u64;
                    w.end_footer_ok = true;
                }
                Err(e) => {
                    w.end_footer_ok = false;
                    result?;
                    return Err(self.io_err("writing the footer", e));
                }
            }
        }
        result
    }

    /// Allocates `block` at the data end with `chunk` written at sector `within` of it.
    fn allocate(
        &self,
        sp: &Sparse,
        w: &mut WriteState,
        block: u32,
        within: u64,
        chunk: &[u8],
    ) -> Result<()> {
        let start = w.data_end;
        let block_bytes = sp.bitmap_bytes + sp.block_sectors * SECTOR_SIZE;
        if (start + block_bytes) / SECTOR_SIZE >= BAT_UNUSED as u64 {
            return Err(Error::Unsupported {
                path: self.path.clone(),
                what: "the file would grow past the 2 TiB that 32-bit BAT entries address".into(),
            });
        }
        // Bytes past the data end are unreferenced leftovers of an interrupted allocation
        // (or a missing footer's place): drop them so that the new block's unwritten sectors
        // read as zeros.
        let only_footer_there = w.end_footer_ok && w.file_len == start + FOOTER_SIZE as u64;
        if w.file_len > start && !only_footer_there {
            self.st
                .set_len(start)
                .map_err(|e| self.io_err("truncating the unreferenced tail", e))?;
            w.file_len = start;
            w.end_footer_ok = false;
        }
        let mut bitmap = vec![0u8; sp.bitmap_bytes as usize];
        if sp.differencing {
            spec::bitmap_set_range(&mut bitmap, within, (chunk.len() / SECTOR) as u64);
        } else {
            // A new dynamic block is entirely present (its unwritten sectors are zeros), as
            // qemu and Virtual PC also mark it.
            bitmap.fill(0xFF);
        }
        self.st
            .write_at(&bitmap, start)
            .map_err(|e| self.io_err("writing a new block's bitmap", e))?;
        self.st
            .write_at(chunk, start + sp.bitmap_bytes + within * SECTOR_SIZE)
            .map_err(|e| self.io_err("writing a new block", e))?;
        w.data_end = start + block_bytes;
        w.file_len = w
            .file_len
            .max(start + sp.bitmap_bytes + within * SECTOR_SIZE + chunk.len() as u64);
        let mut meta = sp.meta.write().map_err(lock_err)?;
        meta.bat[block as usize] = (start / SECTOR_SIZE) as u32;
        meta.bitmaps.insert(block, Arc::new(bitmap));
        w.dirty_bat.insert(block as u64 / 128);
        Ok(())
    }

    /// Makes every write that returned before this call durable (see the module docs for
    /// the order). A no-op on a read-only disk.
    pub fn flush(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        let Some(sp) = &self.sparse else {
            if self.fixed_unsynced.swap(false, Ordering::AcqRel) {
                if let Err(e) = self.st.sync() {
                    self.fixed_unsynced.store(true, Ordering::Release);
                    return Err(self.io_err("syncing", e));
                }
            }
            return Ok(());
        };
        let mut w = sp.w.lock().map_err(lock_err)?;
        if !w.end_footer_ok {
            let end = w.data_end;
            if w.file_len > end {
                self.st
                    .set_len(end)
                    .map_err(|e| self.io_err("truncating the unreferenced tail", e))?;
            }
            self.st
                .write_at(&self.footer_bytes, end)
                .map_err(|e| self.io_err("rewriting the end footer", e))?;
            log::info!(
                "{}: rewrote the footer at the end of the file",
                self.path.display()
            );
            w.file_len = end + FOOTER_SIZE as u64;
            w.end_footer_ok = true;
            w.unsynced = true;
        }
        if !w.unsynced && w.dirty_bat.is_empty() && w.dirty_bitmaps.is_empty() {
            return Ok(());
        }
        // Barrier 1: data, new blocks and the footer at the new end.
        self.st.sync().map_err(|e| self.io_err("syncing data", e))?;
        if !w.dirty_bat.is_empty() || !w.dirty_bitmaps.is_empty() {
            {
                let meta = sp.meta.read().map_err(lock_err)?;
                for &block in &w.dirty_bitmaps {
                    let entry = meta.bat[block as usize];
                    let bm = &meta.bitmaps[&block];
                    self.st
                        .write_at(bm, entry as u64 * SECTOR_SIZE)
                        .map_err(|e| self.io_err("writing a sector bitmap", e))?;
                }
                for &chunk in &w.dirty_bat {
                    let first = (chunk * 128) as usize;
                    let last = (first + 128).min(meta.bat.len());
                    let mut b = Vec::with_capacity((last - first) * 4);
                    for e in &meta.bat[first..last] {
                        b.extend_from_slice(&e.to_be_bytes());
                    }
                    self.st
                        .write_at(&b, sp.header.table_offset + first as u64 * 4)
                        .map_err(|e| self.io_err("writing the BAT", e))?;
                }
            }
            // Barrier 2: the metadata that makes the new data reachable.
            self.st
                .sync()
                .map_err(|e| self.io_err("syncing metadata", e))?;
            w.dirty_bat.clear();
            w.dirty_bitmaps.clear();
        }
        w.unsynced = false;
        Ok(())
    }

    /// True if sectors `sector..sector + count` may hold data anywhere in the chain (false
    /// means they certainly read as zeros). Lets copies skip unallocated ranges unread.
    pub fn may_have_data(&self, sector: u64, count: u64) -> bool {
        let Some(sp) = &self.sparse else { return true };
        if count == 0 {
            return false;
        }
        let first = sector / sp.block_sectors;
        let last = (sector + count - 1) / sp.block_sectors;
        let any = {
            let meta = sp.meta.read().expect("lock");
            (first..=last).any(|b| meta.bat.get(b as usize).is_some_and(|e| *e != BAT_UNUSED))
        };
        any || self.parent.as_ref().is_some_and(|p| {
            sector < p.sectors && p.may_have_data(sector, count.min(p.sectors - sector))
        })
    }

    /// The runs of sectors stored in this file itself (not in its parents), as (first
    /// sector, count), in order and merged. A fixed disk stores all its sectors.
    pub fn own_extents(&self) -> Result<Vec<(u64, u64)>> {
        let Some(sp) = &self.sparse else {
            return Ok(if self.sectors > 0 {
                vec![(0, self.sectors)]
            } else {
                vec![]
            });
        };
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut push = |s: u64, e: u64| match out.last_mut() {
            Some(last) if last.0 + last.1 == s => last.1 += e - s,
            _ => out.push((s, e - s)),
        };
        let blocks = self.total_blocks();
        for block in 0..blocks {
            let entry = sp.meta.read().map_err(lock_err)?.bat[block as usize];
            if entry == BAT_UNUSED {
                continue;
            }
            let base = block * sp.block_sectors;
            let end = sp.block_sectors.min(self.sectors - base);
            let bm = self.bitmap(sp, block as u32, entry)?;
            let mut i = 0;
            while i < end {
                let (present, run_end) = spec::bitmap_run(&bm, i, end);
                if present {
                    push(base + i, base + run_end);
                }
                i = run_end;
            }
        }
        Ok(out)
    }
}

impl Drop for VhdDisk {
    fn drop(&mut self) {
        if !self.read_only {
            if let Err(e) = self.flush() {
                log::error!("{e}");
            }
        }
    }
}

impl std::fmt::Debug for VhdDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhdDisk")
            .field("path", &self.path)
            .field("type", &self.disk_type)
            .field("sectors", &self.sectors)
            .field("read_only", &self.read_only)
            .field("parent", &self.parent)
            .finish()
    }
}

/// Every path in the chain from `disk` down, for loop checks of callers.
pub(crate) fn chain_paths(disk: &VhdDisk) -> HashSet<PathBuf> {
    let mut out = HashSet::new();
    let mut d = Some(disk);
    while let Some(x) = d {
        out.insert(fs::canonicalize(&x.path).unwrap_or_else(|_| x.path.clone()));
        d = x.parent();
    }
    out
}
