//! Image operations behind `kettle vhd`: create, info, check, convert, merge, compact and
//! resize. Long operations report progress through a callback `(done, total)` in bytes (or
//! steps where noted).
//!
//! What an interruption (a kill at any point) leaves:
//! * create, convert, compact write a temporary file next to the destination and rename it
//!   into place only when it is complete and durable: the source and any existing
//!   destination stay as they were.
//! * merge writes into the parent in place (that is what it is for); the child is only read.
//!   The child's view never changes during a merge (the sectors written into the parent are
//!   exactly those the child overrides), so an interrupted merge is simply run again.
//! * resize grows in place, ordered so that every step leaves an image that opens with all
//!   its data; see [`resize`].

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::device::{open_image, BlockDevice, ImageFormat};
use crate::disk::{self, OpenOptions, VhdDisk, MAX_CHAIN_DEPTH};
use crate::error::{Error, Result};
use crate::io::{self, LockMode, Storage, TempFile};
use crate::parse::{self, Locator, Severity};
use crate::spec::{
    self, platform, DiskType, DynamicHeader, Footer, Geometry, Uuid, BAT_UNUSED,
    DEFAULT_BLOCK_SIZE, DYNAMIC_HEADER_SIZE, FOOTER_SIZE, MAX_BLOCK_SIZE, MAX_DISK_SIZE,
    MIN_BLOCK_SIZE, SECTOR_SIZE,
};

/// A progress callback: `(done, total)`.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// A progress callback that ignores everything.
pub fn no_progress() -> impl FnMut(u64, u64) {
    |_, _| {}
}

/// How a requested size becomes the size of a new VHD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SizePolicy {
    /// Round up to the next size the CHS geometry describes exactly (what Virtual PC and
    /// qemu do). Readers that take the size from the geometry (Virtual PC, and qemu for
    /// files it does not know the creator of) then agree with those that take it from the
    /// footer (Hyper-V, libvhdi, kettle). Sizes beyond the CHS range (about 127 GiB) are kept.
    #[default]
    RoundUpToGeometry,
    /// Keep the size exactly (rounded up to whole sectors); geometry-based readers may see a
    /// slightly smaller disk.
    Exact,
}

/// The size a new VHD of `requested` bytes gets.
pub fn vhd_size_for(requested: u64, policy: SizePolicy) -> Result<u64> {
    let sectors = requested.div_ceil(SECTOR_SIZE);
    let sectors = match policy {
        SizePolicy::Exact => sectors,
        SizePolicy::RoundUpToGeometry => Geometry::round_up(sectors),
    };
    let size = sectors * SECTOR_SIZE;
    if size == 0 || size > MAX_DISK_SIZE {
        return Err(Error::InvalidArgument(format!(
            "a VHD must be between 512 bytes and {MAX_DISK_SIZE} bytes (2040 GiB); {requested} requested"
        )));
    }
    Ok(size)
}

/// Options of the create functions.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// How the size is rounded.
    pub size_policy: SizePolicy,
    /// The new disk's unique id (random when `None`).
    pub uuid: Option<Uuid>,
    /// Fixed disks: write zeros to every sector (otherwise the file is sparse).
    pub preallocate: bool,
}

fn check_block_size(block_size: u32) -> Result<()> {
    if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(Error::InvalidArgument(format!(
            "block size {block_size} is not a power of two between {MIN_BLOCK_SIZE} and {MAX_BLOCK_SIZE}"
        )));
    }
    Ok(())
}

fn refuse_existing(path: &Path) -> Result<()> {
    if fs::symlink_metadata(path).is_ok() {
        return Err(Error::AlreadyExists {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

const ZERO_CHUNK: usize = 1 << 20;

fn write_zeros(file: &File, path: &Path, start: u64, len: u64, progress: Progress) -> Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(ZERO_CHUNK as u64) as usize;
        Storage::write_at(file, &zeros[..n], start + done)
            .map_err(|e| Error::io(path, "writing zeros", e))?;
        done += n as u64;
        progress(done, len);
    }
    Ok(())
}

/// Creates a fixed disk of (at least) `size` bytes; returns the size it got.
pub fn create_fixed(
    path: &Path,
    size: u64,
    opts: &CreateOptions,
    progress: Progress,
) -> Result<u64> {
    refuse_existing(path)?;
    let size = vhd_size_for(size, opts.size_policy)?;
    let footer = Footer::new(
        DiskType::Fixed,
        size,
        opts.uuid.unwrap_or_else(Uuid::random),
    );
    let tmp = TempFile::new(path)?;
    if opts.preallocate {
        write_zeros(&tmp.file, &tmp.path, 0, size, progress)?;
    } else {
        tmp.file
            .set_len(size)
            .map_err(|e| Error::io(&tmp.path, "sizing", e))?;
        progress(size, size);
    }
    Storage::write_at(&tmp.file, &footer.encode(), size)
        .map_err(|e| Error::io(&tmp.path, "writing the footer", e))?;
    tmp.commit(false)?;
    Ok(size)
}

/// Writes the empty structure of a dynamic or differencing disk into an empty file: footer
/// copy at 0, header at 512, BAT at 1536 (all unused), the locator data after it (each
/// padded to a sector), footer at the end. Fills in the header's table offset and locator
/// entries.
pub(crate) fn write_empty_sparse(
    file: &dyn Storage,
    path: &Path,
    footer: &Footer,
    header: &mut DynamicHeader,
    locators: &[(u32, Vec<u8>)],
) -> Result<()> {
    let ioe = |e| Error::io(path, "writing the new image", e);
    let table_offset = (FOOTER_SIZE + DYNAMIC_HEADER_SIZE) as u64;
    header.table_offset = table_offset;
    let mut pos = table_offset + spec::bat_bytes(header.max_table_entries);
    let mut payload = Vec::new();
    for (i, (code, data)) in locators.iter().enumerate().take(8) {
        let space = spec::round_up_sector(data.len() as u64);
        header.locators[i] = spec::ParentLocator {
            platform_code: *code,
            data_space: space as u32,
            data_length: data.len() as u32,
            reserved: 0,
            data_offset: pos,
        };
        payload.push((pos, data));
        pos += space;
    }
    let fb = footer.encode();
    Storage::write_at(file, &fb, 0).map_err(ioe)?;
    Storage::write_at(file, &header.encode(), FOOTER_SIZE as u64).map_err(ioe)?;
    let bat = vec![0xFFu8; spec::bat_bytes(header.max_table_entries) as usize];
    Storage::write_at(file, &bat, table_offset).map_err(ioe)?;
    for (at, data) in payload {
        let mut padded = data.clone();
        padded.resize(spec::round_up_sector(data.len() as u64) as usize, 0);
        Storage::write_at(file, &padded, at).map_err(ioe)?;
    }
    Storage::write_at(file, &fb, pos).map_err(ioe)?;
    Ok(())
}

pub(crate) fn new_dynamic_header(size: u64, block_size: u32) -> DynamicHeader {
    let entries = size.div_ceil(block_size as u64) as u32;
    DynamicHeader::new(0, entries, block_size)
}

/// Creates a dynamic disk of (at least) `size` bytes with blocks of `block_size` bytes
/// (a power of two; [`DEFAULT_BLOCK_SIZE`] is the norm); returns the size it got.
pub fn create_dynamic(
    path: &Path,
    size: u64,
    block_size: u32,
    opts: &CreateOptions,
    progress: Progress,
) -> Result<u64> {
    refuse_existing(path)?;
    check_block_size(block_size)?;
    let size = vhd_size_for(size, opts.size_policy)?;
    let footer = Footer::new(
        DiskType::Dynamic,
        size,
        opts.uuid.unwrap_or_else(Uuid::random),
    );
    let mut header = new_dynamic_header(size, block_size);
    let tmp = TempFile::new(path)?;
    write_empty_sparse(&tmp.file, &tmp.path, &footer, &mut header, &[])?;
    tmp.commit(false)?;
    progress(1, 1);
    Ok(size)
}

/// `path` with `\` separators (the Windows form VHD locators and parent names use).
fn windows_form(p: &Path) -> String {
    p.to_string_lossy().replace('/', "\\")
}

/// The path of `target` relative to directory `from` (both absolute), `\`-separated and
/// starting with `.\` as Virtual PC writes relative locators.
fn relative_windows_path(from: &Path, target: &Path) -> String {
    let f: Vec<_> = from.components().collect();
    let t: Vec<_> = target.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = Vec::new();
    for _ in common..f.len() {
        parts.push("..".into());
    }
    for c in &t[common..] {
        parts.push(c.as_os_str().to_string_lossy().into_owned());
    }
    if parts.first().is_some_and(|p| p == "..") {
        parts.join("\\")
    } else {
        format!(".\\{}", parts.join("\\"))
    }
}

/// Creates a differencing disk over `parent` (which must open, with its own chain). The child
/// gets the parent's size and block size, the parent's unique id and modification time,
/// the parent's absolute path (`\`-separated) as parent name and `W2ku` locator, and its path
/// relative to the child's directory as `W2ru` locator. Returns the size.
pub fn create_differencing(
    path: &Path,
    parent: &Path,
    opts: &CreateOptions,
    progress: Progress,
) -> Result<u64> {
    refuse_existing(path)?;
    let p = OpenOptions::new().read_only(true).open(parent)?;
    let size = p.size();
    let block_size = p.block_size().unwrap_or(DEFAULT_BLOCK_SIZE);
    let parent_uuid = p.footer().uuid;
    drop(p);
    let parent_abs =
        fs::canonicalize(parent).map_err(|e| Error::io(parent, "resolving the path", e))?;
    let dir = io::parent_dir(path);
    let dir_abs = fs::canonicalize(&dir).map_err(|e| Error::io(&dir, "resolving the path", e))?;
    let mtime = fs::metadata(&parent_abs)
        .and_then(|m| m.modified())
        .map_err(|e| Error::io(parent, "reading the modification time", e))?;
    let mut footer = Footer::new(
        DiskType::Differencing,
        size,
        opts.uuid.unwrap_or_else(Uuid::random),
    );
    footer.geometry = Geometry::from_sectors(size / SECTOR_SIZE);
    let mut header = new_dynamic_header(size, block_size);
    header.parent_uuid = parent_uuid;
    header.parent_timestamp = spec::timestamp_from(mtime);
    let absolute = windows_form(&parent_abs);
    header.parent_name = if absolute.encode_utf16().count() <= 256 {
        absolute.clone()
    } else {
        parent_abs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let relative = relative_windows_path(&dir_abs, &parent_abs);
    let locators = vec![
        (platform::W2KU, spec::utf16le(&absolute)),
        (platform::W2RU, spec::utf16le(&relative)),
    ];
    let tmp = TempFile::new(path)?;
    write_empty_sparse(&tmp.file, &tmp.path, &footer, &mut header, &locators)?;
    tmp.commit(false)?;
    progress(1, 1);
    Ok(size)
}

/// One disk of a differencing chain, as [`info`] reports it.
#[derive(Clone, Debug)]
pub struct ChainLink {
    /// Where it was found.
    pub path: PathBuf,
    /// Its type.
    pub disk_type: DiskType,
    /// Its unique id.
    pub uuid: Uuid,
    /// Its size, bytes.
    pub size: u64,
    /// Allocated blocks (dynamic and differencing).
    pub allocated_blocks: u64,
    /// Blocks mapping the disk (dynamic and differencing).
    pub total_blocks: u64,
}

/// Everything known about a VHD file.
#[derive(Clone, Debug)]
pub struct Info {
    /// The file.
    pub path: PathBuf,
    /// Its length.
    pub file_size: u64,
    /// The disk type.
    pub disk_type: DiskType,
    /// The footer in use.
    pub footer: Footer,
    /// The dynamic header.
    pub header: Option<DynamicHeader>,
    /// Where the dynamic header is.
    pub header_offset: Option<u64>,
    /// Decoded parent locators.
    pub locators: Vec<Locator>,
    /// Disk size, bytes.
    pub size: u64,
    /// Block size.
    pub block_size: Option<u32>,
    /// Blocks mapping the disk (0 for fixed).
    pub total_blocks: u64,
    /// Allocated blocks.
    pub allocated_blocks: u64,
    /// Allocated / total blocks (1.0 for a fixed disk).
    pub allocation_ratio: f64,
    /// The parents, nearest first.
    pub chain: Vec<ChainLink>,
    /// Why the chain could not be opened completely.
    pub chain_error: Option<String>,
    /// Non-fatal findings.
    pub notes: Vec<String>,
}

fn link(d: &VhdDisk) -> ChainLink {
    ChainLink {
        path: d.path().to_path_buf(),
        disk_type: d.disk_type(),
        uuid: d.footer().uuid,
        size: d.size(),
        allocated_blocks: d.allocated_blocks(),
        total_blocks: d.total_blocks(),
    }
}

/// Reads everything about a VHD file without locking or writing it. Fails only if the file
/// itself cannot be opened; a missing or broken parent is reported in `chain_error`.
pub fn info(path: &Path) -> Result<Info> {
    let d = OpenOptions::new()
        .lock(false)
        .open_parent(false)
        .open(path)?;
    let file_size = fs::metadata(path)
        .map_err(|e| Error::io(path, "reading the size", e))?
        .len();
    let (chain, chain_error) = if d.disk_type() == DiskType::Differencing {
        match OpenOptions::new().lock(false).open(path) {
            Ok(full) => {
                let mut chain = Vec::new();
                let mut p = full.parent();
                while let Some(x) = p {
                    chain.push(link(x));
                    p = x.parent();
                }
                (chain, None)
            }
            Err(e) => (Vec::new(), Some(e.to_string())),
        }
    } else {
        (Vec::new(), None)
    };
    let total_blocks = d.total_blocks();
    let allocated_blocks = d.allocated_blocks();
    Ok(Info {
        path: path.to_path_buf(),
        file_size,
        disk_type: d.disk_type(),
        footer: d.footer().clone(),
        header: d.header().cloned(),
        header_offset: d.header_offset(),
        locators: d.locators().to_vec(),
        size: d.size(),
        block_size: d.block_size(),
        total_blocks,
        allocated_blocks,
        allocation_ratio: if d.disk_type() == DiskType::Fixed {
            1.0
        } else if total_blocks == 0 {
            0.0
        } else {
            allocated_blocks as f64 / total_blocks as f64
        },
        chain,
        chain_error,
        notes: d.notes().iter().map(|n| n.to_string()).collect(),
    })
}

/// How serious a [`CheckFinding`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckSeverity {
    /// The image is damaged (or its chain is broken).
    Error,
    /// Consistent, but worth knowing (leftovers of an interrupted allocation, ...).
    Warning,
}

/// One problem `check` found.
#[derive(Clone, Debug)]
pub struct CheckFinding {
    /// The file it is in (the checked file or one of its parents).
    pub path: PathBuf,
    /// How serious.
    pub severity: CheckSeverity,
    /// One sentence naming the structure, field and offset.
    pub message: String,
}

/// The result of [`check`].
#[derive(Clone, Debug)]
pub struct CheckReport {
    /// The file checked.
    pub path: PathBuf,
    /// The chain below it, nearest parent first, as far as it could be followed.
    pub chain: Vec<PathBuf>,
    /// Every problem found, in the file and its chain.
    pub findings: Vec<CheckFinding>,
}

impl CheckReport {
    /// True when no error was found (warnings allowed).
    pub fn is_clean(&self) -> bool {
        self.errors().next().is_none()
    }
    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &CheckFinding> {
        self.findings
            .iter()
            .filter(|f| f.severity == CheckSeverity::Error)
    }
    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &CheckFinding> {
        self.findings
            .iter()
            .filter(|f| f.severity == CheckSeverity::Warning)
    }
}

/// Checks a VHD file and its parent chain completely without modifying or locking anything:
/// both footers (and that they are equal), the header, every BAT entry (bounds, overlaps with
/// metadata and with each other), locators, the parent's identity and time stamp, and the
/// parents themselves. Every problem is reported; `Err` only for I/O errors on the file
/// itself.
pub fn check(path: &Path) -> Result<CheckReport> {
    let mut report = CheckReport {
        path: path.to_path_buf(),
        chain: Vec::new(),
        findings: Vec::new(),
    };
    let mut visited = Vec::new();
    check_one(path, 0, &mut visited, &mut report, true)?;
    Ok(report)
}

fn check_one(
    path: &Path,
    depth: usize,
    visited: &mut Vec<PathBuf>,
    report: &mut CheckReport,
    top: bool,
) -> Result<()> {
    let mut add = |severity, message: String| {
        report.findings.push(CheckFinding {
            path: path.to_path_buf(),
            severity,
            message,
        })
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if top => return Err(Error::io(path, "opening", e)),
        Err(e) => {
            add(CheckSeverity::Error, format!("cannot open: {e}"));
            return Ok(());
        }
    };
    let (layout, findings) =
        parse::inspect(&file).map_err(|e| Error::io(path, "reading the metadata", e))?;
    for f in findings {
        let sev = match f.severity {
            Severity::Note => CheckSeverity::Warning,
            _ => CheckSeverity::Error,
        };
        add(sev, f.problem.to_string());
    }
    let Some(layout) = layout else { return Ok(()) };
    if layout.disk_type != DiskType::Differencing {
        return Ok(());
    }
    let sp = layout.sparse.as_ref().expect("sparse");
    if sp.header.parent_uuid.is_nil() {
        add(
            CheckSeverity::Error,
            "dynamic header field \"Parent Unique Id\" is all zeros: the parent cannot be identified".into(),
        );
    }
    let canonical = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    visited.push(canonical);
    if depth + 1 >= MAX_CHAIN_DEPTH {
        add(
            CheckSeverity::Error,
            format!("differencing chain deeper than {MAX_CHAIN_DEPTH} disks; not followed further"),
        );
        return Ok(());
    }
    match find_parent(path, &sp.header, &sp.locators) {
        Ok(parent) => {
            let canon = fs::canonicalize(&parent).unwrap_or_else(|_| parent.clone());
            if visited.contains(&canon) {
                add(
                    CheckSeverity::Error,
                    format!("parent chain loops back to {}", parent.display()),
                );
                return Ok(());
            }
            if let Ok(m) = fs::metadata(&parent).and_then(|m| m.modified()) {
                let actual = spec::timestamp_from(m);
                if actual != sp.header.parent_timestamp {
                    add(
                        CheckSeverity::Warning,
                        format!(
                            "parent {} was modified after this disk was created (recorded time stamp {}, file's {actual}); its unique id matches",
                            parent.display(),
                            sp.header.parent_timestamp
                        ),
                    );
                }
            }
            report.chain.push(parent.clone());
            check_one(&parent, depth + 1, visited, report, false)
        }
        Err(e) => {
            add(CheckSeverity::Error, e.to_string());
            Ok(())
        }
    }
}

/// Finds the parent file of a differencing disk: the first candidate from its locators and
/// name whose unique id matches.
pub(crate) fn find_parent(
    child: &Path,
    header: &DynamicHeader,
    locators: &[Locator],
) -> Result<PathBuf> {
    let candidates = disk::parent_candidates(child, header, locators);
    let mut mismatch = None;
    for c in &candidates {
        if !c.path.is_file() {
            continue;
        }
        let file = File::open(&c.path).map_err(|e| Error::io(&c.path, "opening", e))?;
        let found = match parse::inspect(&file) {
            Ok((Some(l), _)) => l.footer.uuid,
            _ => {
                mismatch.get_or_insert((c.path.clone(), Uuid::NIL));
                continue;
            }
        };
        if found == header.parent_uuid {
            return Ok(c.path.clone());
        }
        mismatch.get_or_insert((c.path.clone(), found));
    }
    Err(match mismatch {
        Some((parent, found)) => Error::ParentMismatch {
            child: child.to_path_buf(),
            parent,
            expected: header.parent_uuid,
            found,
        },
        None => Error::ParentNotFound {
            child: child.to_path_buf(),
            tried: candidates,
        },
    })
}

/// What [`convert`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvertTarget {
    /// A raw image (sparse: zero ranges are holes).
    Raw,
    /// A fixed VHD (sparse file: zero ranges are holes).
    Fixed,
    /// A dynamic VHD with this block size (zero blocks stay unallocated).
    Dynamic {
        /// Block size, bytes.
        block_size: u32,
    },
}

/// Options of [`convert`].
#[derive(Clone, Copy, Debug)]
pub struct ConvertOptions {
    /// What to write.
    pub target: ConvertTarget,
    /// What the source is ([`ImageFormat::Auto`] detects it).
    pub source_format: ImageFormat,
    /// How the size of a VHD target is rounded.
    pub size_policy: SizePolicy,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            target: ConvertTarget::Dynamic {
                block_size: DEFAULT_BLOCK_SIZE,
            },
            source_format: ImageFormat::Auto,
            size_policy: SizePolicy::default(),
        }
    }
}

/// Granularity of zero detection in copies: smaller holes are not worth a seek.
const ZERO_GRAIN: usize = 64 * 1024;
/// Bytes copied per read.
const COPY_CHUNK: u64 = 2 * 1024 * 1024;

/// Copies every non-zero range of `src` through `write(sector, data)`, reading `COPY_CHUNK`
/// at a time and skipping what the source says is unallocated.
fn copy_nonzero(
    src: &dyn BlockDevice,
    sectors: u64,
    progress: Progress,
    mut write: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    let total = sectors * SECTOR_SIZE;
    let chunk_sectors = COPY_CHUNK / SECTOR_SIZE;
    let mut buf = vec![0u8; COPY_CHUNK as usize];
    let mut s = 0;
    progress(0, total);
    while s < sectors {
        let n = chunk_sectors.min(sectors - s);
        if src.may_have_data(s, n) {
            let b = &mut buf[..(n * SECTOR_SIZE) as usize];
            src.read(s, b)?;
            let mut off = 0;
            while off < b.len() {
                // Extend a run of non-zero grains to write them at once.
                let mut end = off;
                while end < b.len() && !io::is_zero(&b[end..(end + ZERO_GRAIN).min(b.len())]) {
                    end = (end + ZERO_GRAIN).min(b.len());
                }
                if end > off {
                    write(s + (off as u64) / SECTOR_SIZE, &b[off..end])?;
                    off = end;
                } else {
                    off = (off + ZERO_GRAIN).min(b.len());
                }
            }
        }
        s += n;
        progress(s * SECTOR_SIZE, total);
    }
    Ok(())
}

/// Converts an image: raw to VHD, VHD to raw, fixed to dynamic and back, and a differencing
/// chain flattened into one file. Zero ranges stay unallocated (dynamic) or holes (raw,
/// fixed). `dst` is replaced atomically when the copy is complete; it must not be the source
/// or a file of its chain. A VHD target is as large as the source rounded per
/// `opts.size_policy` (the extra sectors are zeros); a raw target is exactly as large.
pub fn convert(src: &Path, dst: &Path, opts: &ConvertOptions, progress: Progress) -> Result<()> {
    let source = open_image(src, opts.source_format, true)?;
    // Refuse to replace a file the source reads from.
    if let Ok(dst_canon) = fs::canonicalize(dst) {
        let mut in_chain = fs::canonicalize(src).ok() == Some(dst_canon.clone());
        if let Ok(v) = OpenOptions::new().lock(false).open(src) {
            in_chain |= disk::chain_paths(&v).contains(&dst_canon);
        }
        if in_chain {
            return Err(Error::InvalidArgument(format!(
                "{}: the destination is the source or one of its parents",
                dst.display()
            )));
        }
    }
    let sectors = source.sectors();
    let tmp = TempFile::new(dst)?;
    let path = tmp.path.clone();
    match opts.target {
        ConvertTarget::Raw | ConvertTarget::Fixed => {
            let size = if opts.target == ConvertTarget::Raw {
                sectors * SECTOR_SIZE
            } else {
                vhd_size_for(sectors * SECTOR_SIZE, opts.size_policy)?
            };
            tmp.file
                .set_len(size)
                .map_err(|e| Error::io(&path, "sizing", e))?;
            copy_nonzero(source.as_ref(), sectors, progress, |s, data| {
                Storage::write_at(&tmp.file, data, s * SECTOR_SIZE)
                    .map_err(|e| Error::io(&path, "writing", e))
            })?;
            if opts.target == ConvertTarget::Fixed {
                let footer = Footer::new(DiskType::Fixed, size, Uuid::random());
                Storage::write_at(&tmp.file, &footer.encode(), size)
                    .map_err(|e| Error::io(&path, "writing the footer", e))?;
            }
        }
        ConvertTarget::Dynamic { block_size } => {
            check_block_size(block_size)?;
            let size = vhd_size_for(sectors * SECTOR_SIZE, opts.size_policy)?;
            let footer = Footer::new(DiskType::Dynamic, size, Uuid::random());
            let mut header = new_dynamic_header(size, block_size);
            write_empty_sparse(&tmp.file, &path, &footer, &mut header, &[])?;
            let clone = tmp
                .file
                .try_clone()
                .map_err(|e| Error::io(&path, "reopening", e))?;
            let out = VhdDisk::from_storage(&path, Box::new(clone), false)?;
            copy_nonzero(source.as_ref(), sectors, progress, |s, data| {
                out.write(s, data)
            })?;
            out.flush()?;
        }
    }
    drop(source);
    tmp.commit(true)
}

/// What [`merge`] did.
#[derive(Clone, Debug)]
pub struct MergeReport {
    /// The parent written into.
    pub parent: PathBuf,
    /// Bytes copied from the child.
    pub bytes: u64,
}

/// Merges a differencing disk into its parent: every sector the child holds is written into
/// the parent, which is then flushed. The child is left as it was (delete it afterwards, or
/// keep it: it still reads the same). Any other child of the same parent no longer reads as
/// it did: merging is for a parent that has this one child (an undo disk, a snapshot).
/// The parent must be at least as large as the child.
pub fn merge(child: &Path, progress: Progress) -> Result<MergeReport> {
    let c = OpenOptions::new()
        .read_only(true)
        .open_parent(false)
        .open(child)?;
    if c.disk_type() != DiskType::Differencing {
        return Err(Error::Unsupported {
            path: child.to_path_buf(),
            what: format!("a {} disk has no parent to merge into", c.disk_type()),
        });
    }
    let header = c.header().expect("differencing").clone();
    let parent_path = find_parent(child, &header, c.locators())?;
    let parent = OpenOptions::new().read_only(false).open(&parent_path)?;
    if c.sectors() > parent.sectors() {
        return Err(Error::Unsupported {
            path: child.to_path_buf(),
            what: format!(
                "the child ({} bytes) is larger than its parent {} ({} bytes): resize the parent first",
                c.size(),
                parent_path.display(),
                parent.size()
            ),
        });
    }
    let extents = c.own_extents()?;
    let total: u64 = extents.iter().map(|e| e.1 * SECTOR_SIZE).sum();
    let chunk = COPY_CHUNK / SECTOR_SIZE;
    let mut buf = vec![0u8; COPY_CHUNK as usize];
    let mut done = 0;
    progress(0, total);
    for (start, count) in extents {
        let mut s = start;
        while s < start + count {
            let n = chunk.min(start + count - s);
            let b = &mut buf[..(n * SECTOR_SIZE) as usize];
            c.read(s, b)?;
            parent.write(s, b)?;
            s += n;
            done += n * SECTOR_SIZE;
            progress(done, total);
        }
    }
    parent.flush()?;
    Ok(MergeReport {
        parent: parent_path,
        bytes: total,
    })
}

/// What [`compact`] did.
#[derive(Clone, Debug)]
pub struct CompactReport {
    /// Allocated blocks before.
    pub blocks_before: u64,
    /// Allocated blocks after.
    pub blocks_after: u64,
    /// File size before.
    pub file_size_before: u64,
    /// File size after.
    pub file_size_after: u64,
}

/// Rewrites a dynamic or differencing disk without its all-zero blocks (dynamic) or blocks
/// with no sector present (differencing; zeros there hide the parent and are kept), and
/// without unreferenced space. The footer (unique id included), the header's parent fields
/// and the locators are kept, so children and parents still match. The file is replaced
/// atomically when the copy is complete.
pub fn compact(path: &Path, progress: Progress) -> Result<CompactReport> {
    let d = OpenOptions::new()
        .read_only(true)
        .open_parent(false)
        .open(path)?;
    let Some(h) = d.header().cloned() else {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            what: "a fixed disk has no blocks to drop; convert it to a dynamic disk instead".into(),
        });
    };
    let file_size_before = fs::metadata(path)
        .map_err(|e| Error::io(path, "reading the size", e))?
        .len();
    // The raw locator data, re-laid out in the new file.
    let src = File::open(path).map_err(|e| Error::io(path, "opening", e))?;
    let mut locators = Vec::new();
    for l in d.locators() {
        let mut data = vec![0u8; l.data_length as usize];
        Storage::read_at(&src, &mut data, l.data_offset)
            .map_err(|e| Error::io(path, "reading a parent locator", e))?;
        locators.push((l.platform_code, data));
    }
    let mut header = DynamicHeader::new(0, h.max_table_entries, h.block_size);
    header.parent_uuid = h.parent_uuid;
    header.parent_timestamp = h.parent_timestamp;
    header.parent_name = h.parent_name.clone();
    let differencing = d.disk_type() == DiskType::Differencing;

    let tmp = TempFile::new(path)?;
    let tpath = tmp.path.clone();
    write_empty_sparse(&tmp.file, &tpath, d.footer(), &mut header, &locators)?;
    let clone = tmp
        .file
        .try_clone()
        .map_err(|e| Error::io(&tpath, "reopening", e))?;
    let out = VhdDisk::from_storage(&tpath, Box::new(clone), false)?;
    let extents = d.own_extents()?;
    let total: u64 = extents.iter().map(|e| e.1 * SECTOR_SIZE).sum();
    let mut done = 0;
    let chunk = COPY_CHUNK / SECTOR_SIZE;
    let mut buf = vec![0u8; COPY_CHUNK as usize];
    progress(0, total);
    for (start, count) in extents {
        let mut s = start;
        while s < start + count {
            // Stay within one block per copy so that zero detection is per block.
            let bs = d.block_size().expect("sparse") as u64 / SECTOR_SIZE;
            let n = chunk.min(start + count - s).min(bs - s % bs);
            let b = &mut buf[..(n * SECTOR_SIZE) as usize];
            d.read(s, b)?;
            if differencing {
                out.write(s, b)?;
            } else {
                let mut off = 0;
                while off < b.len() {
                    let end = (off + ZERO_GRAIN).min(b.len());
                    if !io::is_zero(&b[off..end]) {
                        out.write(s + off as u64 / SECTOR_SIZE, &b[off..end])?;
                    }
                    off = end;
                }
            }
            s += n;
            done += n * SECTOR_SIZE;
            progress(done, total);
        }
    }
    out.flush()?;
    let blocks_after = out.allocated_blocks();
    drop(out);
    let blocks_before = d.allocated_blocks();
    drop(d);
    tmp.commit(true)?;
    let file_size_after = fs::metadata(path)
        .map_err(|e| Error::io(path, "reading the size", e))?
        .len();
    Ok(CompactReport {
        blocks_before,
        blocks_after,
        file_size_before,
        file_size_after,
    })
}

/// Options of [`resize`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ResizeOptions {
    /// How the new size is rounded.
    pub size_policy: SizePolicy,
}

/// Grows a disk in place to (at least) `new_size` bytes; returns the size it got. Shrinking
/// is refused. The "Original Size" field keeps the size at creation.
///
/// Order, each step made durable before the next:
/// * fixed: the new footer at the new end (the file grows; the old data stays), then zeros
///   over the old footer. A kill between the two leaves a grown disk whose first new sector
///   holds the old footer's bytes instead of zeros.
/// * dynamic / differencing: if the BAT needs more entries, the new entries (unused) are
///   written in the free space after the BAT, or the whole BAT is copied to the end of the
///   file (followed by the footer); then the header with the new entry count and table
///   offset; then the end footer with the new size; then the footer copy at offset 0.
///   Every intermediate file opens with all its data; a kill between the two footers leaves
///   them different (the end one, with the new size, is used; `check` reports it), and
///   running the resize again completes it.
pub fn resize(path: &Path, new_size: u64, opts: &ResizeOptions, progress: Progress) -> Result<u64> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, "opening", e))?;
    io::lock(&file, path, LockMode::Exclusive)?;
    let (layout, findings) =
        parse::inspect(&file).map_err(|e| Error::io(path, "reading the metadata", e))?;
    if let Some(f) = findings.iter().find(|f| f.severity == Severity::Fatal) {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            problem: f.problem.clone(),
        });
    }
    let layout = layout.expect("no fatal finding");
    let old = layout.footer.current_size;
    let new_size = vhd_size_for(new_size, opts.size_policy)?;
    if new_size < old {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            what: format!("shrinking from {old} to {new_size} bytes is not supported"),
        });
    }
    let ioe = |what: &'static str| move |e| Error::io(path, what, e);
    let sync = || file.sync_data().map_err(|e| Error::io(path, "syncing", e));
    let mut footer = layout.footer.clone();
    footer.current_size = new_size;
    footer.geometry = Geometry::from_sectors(new_size / SECTOR_SIZE);
    let fb = footer.encode();
    let steps = 4;
    progress(0, steps);
    match layout.sparse {
        None => {
            let data_area = layout.file_len - FOOTER_SIZE as u64;
            if data_area != old {
                return Err(Error::Unsupported {
                    path: path.to_path_buf(),
                    what: "a fixed disk with data between its end and its footer cannot be resized"
                        .into(),
                });
            }
            if new_size == old {
                progress(steps, steps);
                return Ok(old);
            }
            Storage::write_at(&file, &fb, new_size).map_err(ioe("writing the new footer"))?;
            sync()?;
            progress(2, steps);
            Storage::write_at(&file, &[0u8; FOOTER_SIZE], old)
                .map_err(ioe("clearing the old footer"))?;
            sync()?;
        }
        Some(sp) => {
            let mut h = sp.header.clone();
            let needed = new_size.div_ceil(h.block_size as u64);
            if needed > u32::MAX as u64 - 1 {
                return Err(Error::InvalidArgument(format!(
                    "{new_size} bytes needs more BAT entries than a VHD can have"
                )));
            }
            let mut data_end = sp.data_end;
            let mut file_len = layout.file_len;
            if needed > h.max_table_entries as u64 {
                let needed = needed as u32;
                let old_end = h.table_offset + h.max_table_entries as u64 * 4;
                let new_end = h.table_offset + needed as u64 * 4;
                // The first structure after the BAT bounds the room it has.
                let mut room = data_end;
                for &e in sp.bat.iter().filter(|e| **e != BAT_UNUSED) {
                    let s = e as u64 * SECTOR_SIZE;
                    if s >= old_end {
                        room = room.min(s);
                    }
                }
                for l in &h.locators {
                    if l.platform_code != 0 && l.data_offset >= old_end {
                        room = room.min(l.data_offset);
                    }
                }
                if sp.header_offset >= old_end {
                    room = room.min(sp.header_offset);
                }
                let bat_is_last = room == data_end;
                if new_end <= room || bat_is_last {
                    // Grow in place; when nothing but the footer follows the BAT, the footer
                    // moves behind the longer BAT.
                    let fill_end = if bat_is_last {
                        spec::round_up_sector(new_end).max(data_end)
                    } else {
                        new_end
                    };
                    let fill = vec![0xFFu8; (fill_end - old_end) as usize];
                    Storage::write_at(&file, &fill, old_end).map_err(ioe("extending the BAT"))?;
                    if fill_end > data_end {
                        data_end = fill_end;
                        Storage::write_at(&file, &layout.footer_bytes, data_end)
                            .map_err(ioe("writing the footer"))?;
                        file_len = file_len.max(data_end + FOOTER_SIZE as u64);
                    }
                } else {
                    // Move the BAT to the end of the file, followed by the (old) footer so
                    // that the file keeps ending with a valid footer.
                    let mut entries = sp.bat.clone();
                    entries.resize(needed as usize, BAT_UNUSED);
                    let bytes = spec::encode_bat(&entries);
                    if file_len > data_end + FOOTER_SIZE as u64 || !layout.end_footer_ok {
                        file.set_len(data_end)
                            .map_err(ioe("truncating the unreferenced tail"))?;
                    }
                    Storage::write_at(&file, &bytes, data_end)
                        .map_err(ioe("writing the moved BAT"))?;
                    h.table_offset = data_end;
                    data_end += bytes.len() as u64;
                    Storage::write_at(&file, &layout.footer_bytes, data_end)
                        .map_err(ioe("writing the footer"))?;
                    file_len = data_end + FOOTER_SIZE as u64;
                }
                sync()?;
                progress(1, steps);
                h.max_table_entries = needed;
                Storage::write_at(&file, &h.encode(), sp.header_offset)
                    .map_err(ioe("writing the header"))?;
                sync()?;
            }
            progress(2, steps);
            if file_len > data_end + FOOTER_SIZE as u64 {
                file.set_len(data_end)
                    .map_err(ioe("truncating the unreferenced tail"))?;
            }
            Storage::write_at(&file, &fb, data_end).map_err(ioe("writing the end footer"))?;
            sync()?;
            progress(3, steps);
            Storage::write_at(&file, &fb, 0).map_err(ioe("writing the footer copy"))?;
            sync()?;
        }
    }
    progress(steps, steps);
    Ok(new_size)
}
