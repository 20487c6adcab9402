//! `kettle vhd`: the command line over the `vhd` crate (create, info, check, convert, merge,
//! compact, resize, undo-disk commit/discard, clones).
//!
//! Output conventions: results go to stdout, one fact per line; errors are one line
//! `kettle: ...` on stderr (printed by `main`), naming the file and, for damaged files, the
//! structure, field and offset (the `vhd` crate's messages). Long operations draw a progress
//! bar on stderr only when stderr is a terminal.
//!
//! Interruption: while a command runs, SIGINT, SIGTERM and SIGHUP only set a flag (a second
//! signal terminates at once). Operations that can stop at any point without harm (create,
//! convert, compact, merge, commit) check the flag in their progress callback and unwind; the
//! library's temporary file is removed as the unwinding drops it, so the source and any
//! existing destination stay as they were. Operations that must not stop half-way (resize,
//! clone, discard) finish first.

use std::fmt;
use std::io::IsTerminal;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use vhd::spec::{self, DiskType, Footer, FEATURE_RESERVED, FEATURE_TEMPORARY};
use vhd::{
    CheckSeverity, ConvertOptions, ConvertTarget, CreateOptions, ImageFormat, Info, ResizeOptions,
    SizePolicy,
};

/// Exit status of an operation stopped by SIGINT/SIGTERM/SIGHUP (128 + SIGINT, as shells do).
pub const EXIT_INTERRUPTED: u8 = 130;

/// `kettle vhd`.
#[derive(Args, Debug)]
#[command(after_help = "\
Sizes take a binary suffix: 512, 100K, 64M, 10G, 1T (K = 1024). Paths of parents are found \
through the differencing disk's parent locators (relative first, then absolute) and name.

Exit status: 0 on success; 1 on any error (for `check`: when the image or its chain has an \
error); 2 for invalid flags; 130 when interrupted (the source is left untouched).")]
pub struct VhdArgs {
    #[command(subcommand)]
    pub command: VhdCommand,
}

/// The `kettle vhd` subcommands.
#[derive(Subcommand, Debug)]
pub enum VhdCommand {
    /// Create a new fixed, dynamic or differencing VHD and print its size.
    Create(CreateArgs),
    /// Show everything in the footer and dynamic header, the allocation and the parent chain.
    Info(InfoArgs),
    /// Check an image and its parent chain completely; exit 1 if anything is damaged.
    Check(CheckArgs),
    /// Convert between raw images and fixed or dynamic VHDs; flattens differencing chains.
    Convert(ConvertArgs),
    /// Merge a differencing disk into its parent (the parent is written in place).
    Merge(MergeArgs),
    /// Rewrite a dynamic or differencing VHD without its empty blocks.
    Compact(CompactArgs),
    /// Grow a VHD (fixed, dynamic or differencing) in place.
    Resize(ResizeArgs),
    /// Commit an undo disk: merge it into the disk it covers, then delete it.
    Commit(CommitArgs),
    /// Discard an undo disk: delete it, leaving the disk it covers unchanged.
    Discard(DiscardArgs),
    /// Create N differencing clones of one golden image.
    Clone(CloneArgs),
}

/// A disk type `create` makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CreateType {
    /// All sectors stored in order, then the footer (a sparse file unless --preallocate).
    Fixed,
    /// Blocks allocated on first write.
    Dynamic,
    /// A dynamic disk whose unwritten sectors come from --parent.
    Differencing,
}

/// What `convert` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ConvertTo {
    /// A raw image: the disk's bytes, with zero ranges left as holes.
    Raw,
    /// A fixed VHD (zero ranges left as holes).
    Fixed,
    /// A dynamic VHD (all-zero blocks left unallocated).
    Dynamic,
}

/// What `convert` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ConvertFrom {
    /// Detect: a VHD footer at the end or the start of the file, or a .vhd/.vud name.
    Auto,
    /// A raw image.
    Raw,
    /// A VHD of any type (with its parent chain).
    Vhd,
}

/// A size with an optional binary suffix (K, M, G, T; K = 1024).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let bad = || format!("\"{s}\" is not a size (examples: 512, 64M, 10G, 1T)");
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        if digits.is_empty() {
            return Err(bad());
        }
        let shift = match unit.to_ascii_uppercase().as_str() {
            "" | "B" => 0,
            "K" | "KB" | "KIB" => 10,
            "M" | "MB" | "MIB" => 20,
            "G" | "GB" | "GIB" => 30,
            "T" | "TB" | "TIB" => 40,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        n.checked_mul(1u64 << shift)
            .map(ByteSize)
            .ok_or_else(|| format!("\"{s}\" is too large"))
    }
}

/// `kettle vhd create`.
#[derive(Args, Debug)]
#[command(after_help = "\
By default the size is rounded up to the next size the CHS geometry describes exactly (as \
Virtual PC and qemu-img do), so that readers that take the size from the geometry (Virtual PC, \
qemu for unknown creators) and those that take it from the footer (Hyper-V, libvhdi, kettle) \
agree. --exact-size keeps the size (rounded up to whole sectors) instead.

Examples:
  kettle vhd create disk.vhd --size 10G
  kettle vhd create disk.vhd --type fixed --size 512M
  kettle vhd create child.vhd --parent disk.vhd")]
pub struct CreateArgs {
    /// The new file (refused if it exists).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Disk type [default: dynamic; differencing when --parent is given].
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub disk_type: Option<CreateType>,
    /// Disk size, e.g. 64M or 10G (required for fixed and dynamic disks; a differencing disk
    /// takes its parent's size).
    #[arg(long, value_name = "SIZE")]
    pub size: Option<ByteSize>,
    /// Block size of a dynamic disk: a power of two from 512 to 256M [default: 2M].
    #[arg(long, value_name = "SIZE")]
    pub block_size: Option<ByteSize>,
    /// The parent of a differencing disk (it must open, with its own chain).
    #[arg(long, value_name = "PATH")]
    pub parent: Option<PathBuf>,
    /// Keep the size exactly instead of rounding it up to a CHS-exact size.
    #[arg(long)]
    pub exact_size: bool,
    /// Fixed disks: write zeros over the whole disk instead of leaving a sparse file.
    #[arg(long)]
    pub preallocate: bool,
}

/// `kettle vhd info`.
#[derive(Args, Debug)]
#[command(after_help = "\
Reads the file without locking or writing it. A missing or damaged parent is reported in the \
parent chain; the command still succeeds if the file itself is readable.")]
pub struct InfoArgs {
    /// The VHD file.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `kettle vhd check`.
#[derive(Args, Debug)]
#[command(after_help = "\
Checks both footers (and that they agree), the dynamic header, every BAT entry (bounds, \
overlaps with metadata and with each other), the parent locators, the parent's identity and \
time stamp, and then every parent in the chain. Nothing is written or locked.

Exit status: 0 when no error was found (warnings, such as the leftovers of an interrupted \
block allocation, are printed but allowed); 1 when the image or its chain has an error or \
cannot be read.")]
pub struct CheckArgs {
    /// The VHD file.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Print one JSON object instead of text (the exit status is the same).
    #[arg(long)]
    pub json: bool,
}

/// `kettle vhd convert`.
#[derive(Args, Debug)]
#[command(after_help = "\
Only data is copied: zero ranges stay holes (raw, fixed) or unallocated blocks (dynamic), and \
unallocated ranges of the source are skipped unread. A differencing source is read through \
its whole parent chain, so the result is one flat image. DST is written to a temporary file \
beside it and renamed into place when complete: an interrupted or failed conversion leaves \
SRC and any existing DST as they were.

Examples:
  kettle vhd convert disk.img disk.vhd                 # raw to dynamic VHD
  kettle vhd convert child.vhd flat.vhd --to dynamic   # flatten a differencing chain
  kettle vhd convert disk.vhd disk.img --to raw")]
pub struct ConvertArgs {
    /// The source image (raw or VHD).
    #[arg(value_name = "SRC")]
    pub src: PathBuf,
    /// The image to write.
    #[arg(value_name = "DST")]
    pub dst: PathBuf,
    /// Format to write [default: dynamic for a .vhd name, raw for .img/.raw/.bin].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub to: Option<ConvertTo>,
    /// Format of SRC.
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "auto")]
    pub from: ConvertFrom,
    /// Block size of a dynamic DST: a power of two from 512 to 256M [default: 2M].
    #[arg(long, value_name = "SIZE")]
    pub block_size: Option<ByteSize>,
    /// VHD targets: keep the source's size instead of rounding it up to a CHS-exact size.
    #[arg(long)]
    pub exact_size: bool,
    /// Replace DST if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `kettle vhd merge`.
#[derive(Args, Debug)]
#[command(after_help = "\
Every sector CHILD holds is written into its parent, which is then flushed. CHILD is left as \
it was (it still reads the same) unless --delete is given. Other differencing disks over the \
same parent no longer read as they did: merge a parent's only child (an undo disk, a \
snapshot). An interrupted merge is simply run again.")]
pub struct MergeArgs {
    /// The differencing disk to merge.
    #[arg(value_name = "CHILD")]
    pub child: PathBuf,
    /// Delete CHILD once its data is durable in the parent.
    #[arg(long)]
    pub delete: bool,
}

/// `kettle vhd compact`.
#[derive(Args, Debug)]
#[command(after_help = "\
Dynamic disks lose their all-zero blocks; differencing disks lose blocks that hold no \
sector (zeros written there hide the parent, so they are kept). The unique id, the parent \
fields and the locators are kept, so children and parents still match. The file is \
rewritten beside itself and replaced atomically when complete.")]
pub struct CompactArgs {
    /// The dynamic or differencing VHD.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
}

/// `kettle vhd resize`.
#[derive(Args, Debug)]
#[command(after_help = "\
Grows the disk in place; shrinking is refused. The new space reads as zeros. Each step is \
made durable before the next, so an interrupted resize leaves an image that opens with all \
its data; running it again completes it. The partitions and file systems inside are not \
changed.")]
pub struct ResizeArgs {
    /// The VHD file.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// The new size, e.g. 20G (rounded up to a CHS-exact size unless --exact-size).
    #[arg(long, value_name = "SIZE")]
    pub size: ByteSize,
    /// Keep the size exactly instead of rounding it up to a CHS-exact size.
    #[arg(long)]
    pub exact_size: bool,
}

/// `kettle vhd commit`.
#[derive(Args, Debug)]
#[command(after_help = "\
UNDO is the undo file (a differencing disk, by convention NAME.vud beside NAME.vhd), or the \
disk it covers, in which case NAME.vud is used. An interrupted commit leaves the undo file in \
place, still reading the same: commit again.")]
pub struct CommitArgs {
    /// The undo file, or the disk it covers.
    #[arg(value_name = "UNDO")]
    pub undo: PathBuf,
}

/// `kettle vhd discard`.
#[derive(Args, Debug)]
#[command(after_help = "\
UNDO is the undo file (a differencing disk, by convention NAME.vud beside NAME.vhd), or the \
disk it covers, in which case NAME.vud is used. It is refused if it is not a differencing \
disk or is open elsewhere.")]
pub struct DiscardArgs {
    /// The undo file, or the disk it covers.
    #[arg(value_name = "UNDO")]
    pub undo: PathBuf,
}

/// `kettle vhd clone`.
#[derive(Args, Debug)]
#[command(after_help = "\
Each clone is a differencing disk over GOLDEN, named NAME-1.vhd ... NAME-N.vhd (numbers \
zero-padded to the same width). Their paths are printed one per line. While any clone is \
open, GOLDEN cannot be opened for writing. If one clone cannot be created, those already \
created are removed.")]
pub struct CloneArgs {
    /// The golden image the clones share.
    #[arg(value_name = "GOLDEN")]
    pub golden: PathBuf,
    /// How many clones.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub count: u32,
    /// Where to create them [default: GOLDEN's directory].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Name stem of the clones [default: GOLDEN's name without extension, plus "-clone"].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

/// Why a command failed: the one-line message `main` prints after `kettle: `, and the exit
/// status.
#[derive(Debug)]
pub struct Failure {
    /// The message.
    pub message: String,
    /// The exit status.
    pub status: u8,
}

impl Failure {
    fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            status: 1,
        }
    }

    /// Flags that do not fit together: exit status 2, like clap's own usage errors.
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            message: format!("{} (see kettle vhd --help)", message.into()),
            status: 2,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<vhd::Error> for Failure {
    fn from(e: vhd::Error) -> Failure {
        Failure::new(e.to_string())
    }
}

type CmdResult = Result<(), Failure>;

/// Runs one `kettle vhd` subcommand.
pub fn run(args: VhdArgs) -> CmdResult {
    match args.command {
        VhdCommand::Create(a) => create(a),
        VhdCommand::Info(a) => info(a),
        VhdCommand::Check(a) => check(a),
        VhdCommand::Convert(a) => convert(a),
        VhdCommand::Merge(a) => merge(a),
        VhdCommand::Compact(a) => compact(a),
        VhdCommand::Resize(a) => resize(a),
        VhdCommand::Commit(a) => commit(a),
        VhdCommand::Discard(a) => discard(a),
        VhdCommand::Clone(a) => clone(a),
    }
}

// ---------------------------------------------------------------------------------------------
// Interruption and progress

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT, SIGTERM and SIGHUP set [`INTERRUPTED`] instead of killing the process. The
/// handler resets itself, so a second signal terminates at once.
fn catch_interrupts() {
    // SAFETY: a zeroed sigaction is a valid starting point; the handler only stores to an
    // atomic, which is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_interrupt as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART | libc::SA_RESETHAND;
        libc::sigemptyset(&mut sa.sa_mask);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// The payload an interrupted operation unwinds with.
struct Interrupted;

/// A progress bar on stderr when it is a terminal (nothing otherwise), fed by the library's
/// `(done, total)` byte counts. When `abortable`, the callback unwinds with [`Interrupted`]
/// once a signal has arrived.
struct Progress {
    bar: Option<ProgressBar>,
    shown: std::cell::Cell<bool>,
    abortable: bool,
}

impl Progress {
    /// A bar labelled `message`, drawn from the first update on.
    fn bar(message: &str, abortable: bool) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_message(message.to_string());
            bar
        });
        Progress {
            bar,
            shown: std::cell::Cell::new(false),
            abortable,
        }
    }

    /// No bar: for short operations.
    fn silent(abortable: bool) -> Progress {
        Progress {
            bar: None,
            shown: std::cell::Cell::new(false),
            abortable,
        }
    }

    fn update(&self, done: u64, total: u64) {
        if self.abortable && INTERRUPTED.load(Ordering::SeqCst) {
            if let Some(b) = &self.bar {
                b.finish_and_clear();
            }
            panic::resume_unwind(Box::new(Interrupted));
        }
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_position(done);
            if !self.shown.replace(true) {
                b.set_draw_target(ProgressDrawTarget::stderr());
                b.enable_steady_tick(Duration::from_millis(250));
            }
        }
    }

    fn callback(&self) -> impl FnMut(u64, u64) + '_ {
        move |done, total| self.update(done, total)
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Runs a library operation that may be interrupted through its progress callback; an
/// interruption becomes a [`Failure`] with `interrupted` as its message.
fn interruptible<T>(interrupted: &str, f: impl FnOnce() -> vhd::Result<T>) -> Result<T, Failure> {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(Failure::from),
        Err(payload) if payload.is::<Interrupted>() => Err(Failure {
            message: format!("interrupted: {interrupted}"),
            status: EXIT_INTERRUPTED,
        }),
        Err(payload) => panic::resume_unwind(payload),
    }
}

// ---------------------------------------------------------------------------------------------
// Formatting helpers

/// "10 GiB", "33.0 MiB", "512 bytes".
pub fn human_size(bytes: u64) -> String {
    const UNITS: [(u32, &str); 4] = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")];
    for (shift, unit) in UNITS {
        let scale = 1u64 << shift;
        if bytes >= scale {
            return if bytes.is_multiple_of(scale) {
                format!("{} {unit}", bytes / scale)
            } else {
                format!("{:.2} {unit}", bytes as f64 / scale as f64)
            };
        }
    }
    format!("{bytes} bytes")
}

/// "34607104 bytes (33.00 MiB)", or "512 bytes" below 1 KiB.
pub fn bytes_text(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} bytes")
    } else {
        format!("{bytes} bytes ({})", human_size(bytes))
    }
}

/// A date from seconds since the Unix epoch, UTC: "2026-11-20 05:17:33 UTC".
pub fn utc_date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A VHD time stamp (seconds since 2000-01-01 UTC) as a date.
fn vhd_date(ts: u32) -> String {
    utc_date(spec::timestamp_to_unix(ts))
}

/// "1.0" from a (major << 16 | minor) version field.
fn version(v: u32) -> String {
    format!("{}.{}", v >> 16, v & 0xFFFF)
}

/// Four bytes as text when printable ("kttl", "Wi2k"), else hex.
fn four_cc(b: [u8; 4]) -> String {
    if b.iter()
        .all(|c| c.is_ascii_graphic() || *c == b' ' || *c == 0)
    {
        String::from_utf8_lossy(&b)
            .trim_end_matches('\0')
            .to_string()
    } else {
        format!("{:#010x}", u32::from_be_bytes(b))
    }
}

/// A unique id's 16 bytes in file order, grouped 4-2-2-2-6 (how libvhdi's `vhdiinfo` prints
/// it; kettle's GUID form, as Windows shows it, swaps the first three groups' bytes).
fn stored_uuid(u: &vhd::Uuid) -> String {
    let h: String = u.0.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn features_text(f: u32) -> String {
    let mut names = Vec::new();
    if f & FEATURE_TEMPORARY != 0 {
        names.push("temporary");
    }
    if f & FEATURE_RESERVED != 0 {
        names.push("reserved");
    }
    if f & !(FEATURE_TEMPORARY | FEATURE_RESERVED) != 0 {
        names.push("unknown bits");
    }
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn type_name(code: u32) -> String {
    match DiskType::from_code(code) {
        Some(t) => t.to_string(),
        None => "unknown".into(),
    }
}

fn size_policy(exact: bool) -> SizePolicy {
    if exact {
        SizePolicy::Exact
    } else {
        SizePolicy::RoundUpToGeometry
    }
}

fn block_size(b: Option<ByteSize>) -> Result<u32, Failure> {
    match b {
        None => Ok(vhd::DEFAULT_BLOCK_SIZE),
        Some(ByteSize(n)) => u32::try_from(n).map_err(|_| {
            Failure::usage(format!(
                "--block-size {n} is too large: a VHD block is at most 256M"
            ))
        }),
    }
}

/// One line describing a VHD: "PATH: dynamic VHD, 34607104 bytes (33.00 MiB), C/H/S
/// 1008/4/17, block size 2 MiB, 0 of 17 blocks allocated".
fn describe(path: &Path) -> Result<String, Failure> {
    let i = vhd::info(path)?;
    let mut s = format!(
        "{}: {} VHD, {}, C/H/S {}",
        path.display(),
        i.disk_type,
        bytes_text(i.size),
        i.footer.geometry
    );
    let chs = i.footer.geometry.sectors() * spec::SECTOR_SIZE;
    if chs != i.size && i.size / spec::SECTOR_SIZE < spec::MAX_CHS_SECTORS {
        s.push_str(&format!(
            " (describing {chs} bytes: readers that size disks by geometry see less)"
        ));
    }
    if let Some(bs) = i.block_size {
        s.push_str(&format!(
            ", block size {}, {} of {} blocks allocated",
            human_size(bs as u64),
            i.allocated_blocks,
            i.total_blocks
        ));
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// create

fn create(a: CreateArgs) -> CmdResult {
    let kind = match (a.disk_type, &a.parent) {
        (None, Some(_)) | (Some(CreateType::Differencing), Some(_)) => CreateType::Differencing,
        (Some(CreateType::Differencing), None) => {
            return Err(Failure::usage("a differencing disk needs --parent PATH"))
        }
        (Some(t), Some(_)) => {
            return Err(Failure::usage(format!(
                "--parent applies only to differencing disks, not --type {}",
                t.to_possible_value().expect("value").get_name()
            )))
        }
        (t, None) => t.unwrap_or(CreateType::Dynamic),
    };
    let opts = CreateOptions {
        size_policy: size_policy(a.exact_size),
        uuid: None,
        preallocate: a.preallocate,
    };
    if a.preallocate && kind != CreateType::Fixed {
        return Err(Failure::usage("--preallocate applies only to fixed disks"));
    }
    catch_interrupts();
    let interrupted = format!("{} was not created", a.path.display());
    let requested = match kind {
        CreateType::Differencing => {
            if a.size.is_some() {
                return Err(Failure::usage(
                    "a differencing disk takes its parent's size: leave out --size (grow it afterwards with kettle vhd resize)",
                ));
            }
            if a.block_size.is_some() {
                return Err(Failure::usage(
                    "a differencing disk takes its parent's block size: leave out --block-size",
                ));
            }
            let parent = a.parent.as_deref().expect("checked");
            let p = Progress::silent(true);
            interruptible(&interrupted, || {
                vhd::create_differencing(&a.path, parent, &opts, &mut p.callback())
            })?;
            None
        }
        CreateType::Fixed | CreateType::Dynamic => {
            let Some(ByteSize(size)) = a.size else {
                return Err(Failure::usage(format!(
                    "a {} disk needs --size (e.g. --size 10G)",
                    if kind == CreateType::Fixed {
                        "fixed"
                    } else {
                        "dynamic"
                    }
                )));
            };
            if kind == CreateType::Fixed {
                if a.block_size.is_some() {
                    return Err(Failure::usage("--block-size applies only to dynamic disks"));
                }
                let p = if a.preallocate {
                    Progress::bar("writing zeros", true)
                } else {
                    Progress::silent(true)
                };
                interruptible(&interrupted, || {
                    vhd::create_fixed(&a.path, size, &opts, &mut p.callback())
                })?;
            } else {
                let bs = block_size(a.block_size)?;
                let p = Progress::silent(true);
                interruptible(&interrupted, || {
                    vhd::create_dynamic(&a.path, size, bs, &opts, &mut p.callback())
                })?;
            }
            Some(size)
        }
    };
    let mut line = describe(&a.path)?;
    if let Some(req) = requested {
        let got = vhd::info(&a.path)?.size;
        if got != req {
            line.push_str(&format!(
                " ({req} bytes requested, {})",
                if a.exact_size {
                    "rounded up to whole sectors"
                } else {
                    "rounded up to a CHS-exact size"
                }
            ));
        }
    }
    println!("{line}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// info

fn footer_json(f: &Footer) -> Value {
    json!({
        "cookie": String::from_utf8_lossy(&f.cookie),
        "features": f.features,
        "features_text": features_text(f.features),
        "format_version": version(f.format_version),
        "data_offset": f.data_offset,
        "timestamp": f.timestamp,
        "timestamp_date": vhd_date(f.timestamp),
        "creator_app": four_cc(f.creator_app),
        "creator_version": version(f.creator_version),
        "creator_host_os": four_cc(f.creator_host_os.to_be_bytes()),
        "original_size": f.original_size,
        "current_size": f.current_size,
        "geometry": {
            "cylinders": f.geometry.cylinders,
            "heads": f.geometry.heads,
            "sectors_per_track": f.geometry.sectors_per_track,
            "sectors": f.geometry.sectors(),
        },
        "disk_type": f.disk_type,
        "disk_type_name": type_name(f.disk_type),
        "checksum": format!("{:#010x}", f.checksum),
        "unique_id": f.uuid.to_string(),
        "unique_id_stored": stored_uuid(&f.uuid),
        "saved_state": f.saved_state != 0,
    })
}

fn info_json(i: &Info) -> Value {
    let header = i.header.as_ref().map(|h| {
        let locators: Vec<Value> = i
            .locators
            .iter()
            .map(|l| {
                let space = h.locators[l.index as usize].data_space;
                json!({
                    "index": l.index,
                    "platform": l.kind(),
                    "data_offset": l.data_offset,
                    "data_length": l.data_length,
                    "data_space": space,
                    "path": l.path,
                })
            })
            .collect();
        json!({
            "offset": i.header_offset,
            "cookie": String::from_utf8_lossy(&h.cookie),
            "data_offset": h.data_offset,
            "table_offset": h.table_offset,
            "header_version": version(h.header_version),
            "max_table_entries": h.max_table_entries,
            "block_size": h.block_size,
            "checksum": format!("{:#010x}", h.checksum),
            "parent_unique_id": (!h.parent_uuid.is_nil()).then(|| h.parent_uuid.to_string()),
            "parent_unique_id_stored": (!h.parent_uuid.is_nil()).then(|| stored_uuid(&h.parent_uuid)),
            "parent_timestamp": h.parent_timestamp,
            "parent_timestamp_date": (h.parent_timestamp != 0).then(|| vhd_date(h.parent_timestamp)),
            "parent_name": h.parent_name,
            "locators": locators,
        })
    });
    let mut chain = vec![json!({
        "path": i.path,
        "type": i.disk_type.to_string(),
        "unique_id": i.footer.uuid.to_string(),
        "size": i.size,
        "allocated_blocks": i.allocated_blocks,
        "total_blocks": i.total_blocks,
    })];
    chain.extend(i.chain.iter().map(|l| {
        json!({
            "path": l.path,
            "type": l.disk_type.to_string(),
            "unique_id": l.uuid.to_string(),
            "size": l.size,
            "allocated_blocks": l.allocated_blocks,
            "total_blocks": l.total_blocks,
        })
    }));
    json!({
        "path": i.path,
        "file_size": i.file_size,
        "type": i.disk_type.to_string(),
        "size": i.size,
        "footer": footer_json(&i.footer),
        "dynamic_header": header,
        "allocation": {
            "block_size": i.block_size,
            "allocated_blocks": i.allocated_blocks,
            "total_blocks": i.total_blocks,
            "ratio": i.allocation_ratio,
        },
        "chain": chain,
        "chain_error": i.chain_error,
        "notes": i.notes,
    })
}

fn info_text(i: &Info) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let f = &i.footer;
    let line = |o: &mut String, indent: usize, k: &str, v: String| {
        let _ = writeln!(
            o,
            "{:indent$}{:<w$} {v}",
            "",
            format!("{k}:"),
            w = 24 - indent
        );
    };
    line(
        &mut o,
        0,
        "file",
        format!("{} ({} bytes)", i.path.display(), i.file_size),
    );
    line(&mut o, 0, "type", i.disk_type.to_string());
    line(
        &mut o,
        0,
        "size",
        format!(
            "{} bytes ({}, {} sectors)",
            i.size,
            human_size(i.size),
            i.size / spec::SECTOR_SIZE
        ),
    );
    o.push_str("footer:\n");
    line(
        &mut o,
        2,
        "cookie",
        String::from_utf8_lossy(&f.cookie).into_owned(),
    );
    line(
        &mut o,
        2,
        "features",
        format!("{:#010x} ({})", f.features, features_text(f.features)),
    );
    line(&mut o, 2, "format version", version(f.format_version));
    line(
        &mut o,
        2,
        "data offset",
        if f.data_offset == u64::MAX {
            "none (fixed disk)".into()
        } else {
            format!("{:#x}", f.data_offset)
        },
    );
    line(
        &mut o,
        2,
        "time stamp",
        format!("{} ({})", vhd_date(f.timestamp), f.timestamp),
    );
    line(&mut o, 2, "creator application", four_cc(f.creator_app));
    line(
        &mut o,
        2,
        "creator version",
        format!(
            "{} ({:#010x})",
            version(f.creator_version),
            f.creator_version
        ),
    );
    line(
        &mut o,
        2,
        "creator host OS",
        four_cc(f.creator_host_os.to_be_bytes()),
    );
    line(
        &mut o,
        2,
        "original size",
        format!(
            "{} bytes ({})",
            f.original_size,
            human_size(f.original_size)
        ),
    );
    line(
        &mut o,
        2,
        "current size",
        format!("{} bytes ({})", f.current_size, human_size(f.current_size)),
    );
    line(
        &mut o,
        2,
        "geometry (C/H/S)",
        format!(
            "{} ({} sectors, {} bytes)",
            f.geometry,
            f.geometry.sectors(),
            f.geometry.sectors() * spec::SECTOR_SIZE
        ),
    );
    line(
        &mut o,
        2,
        "disk type",
        format!("{} ({})", f.disk_type, type_name(f.disk_type)),
    );
    line(
        &mut o,
        2,
        "checksum",
        format!("{:#010x} (valid)", f.checksum),
    );
    line(
        &mut o,
        2,
        "unique id",
        format!("{} (stored bytes {})", f.uuid, stored_uuid(&f.uuid)),
    );
    line(
        &mut o,
        2,
        "saved state",
        if f.saved_state != 0 { "yes" } else { "no" }.into(),
    );
    if let Some(h) = &i.header {
        let _ = writeln!(
            o,
            "dynamic header (at {:#x}):",
            i.header_offset.unwrap_or(0)
        );
        line(
            &mut o,
            2,
            "cookie",
            String::from_utf8_lossy(&h.cookie).into_owned(),
        );
        line(
            &mut o,
            2,
            "data offset",
            if h.data_offset == u64::MAX {
                "none".into()
            } else {
                format!("{:#x}", h.data_offset)
            },
        );
        line(&mut o, 2, "table offset", format!("{:#x}", h.table_offset));
        line(&mut o, 2, "header version", version(h.header_version));
        line(
            &mut o,
            2,
            "max table entries",
            h.max_table_entries.to_string(),
        );
        line(
            &mut o,
            2,
            "block size",
            format!(
                "{} bytes ({})",
                h.block_size,
                human_size(h.block_size as u64)
            ),
        );
        line(
            &mut o,
            2,
            "checksum",
            format!("{:#010x} (valid)", h.checksum),
        );
        if i.disk_type == DiskType::Differencing || !h.parent_uuid.is_nil() {
            line(
                &mut o,
                2,
                "parent unique id",
                format!(
                    "{} (stored bytes {})",
                    h.parent_uuid,
                    stored_uuid(&h.parent_uuid)
                ),
            );
            line(
                &mut o,
                2,
                "parent time stamp",
                format!("{} ({})", vhd_date(h.parent_timestamp), h.parent_timestamp),
            );
            line(&mut o, 2, "parent name", h.parent_name.clone());
        }
        if i.locators.is_empty() {
            line(&mut o, 2, "parent locators", "none".into());
        } else {
            o.push_str("  parent locators:\n");
            for l in &i.locators {
                let space = h.locators[l.index as usize].data_space;
                let _ = writeln!(
                    o,
                    "    [{}] {} at {:#x}, {} bytes (space {}): {}",
                    l.index,
                    l.kind(),
                    l.data_offset,
                    l.data_length,
                    space,
                    l.path.as_deref().unwrap_or("(not decoded)")
                );
            }
        }
    }
    o.push_str("allocation:\n");
    if i.disk_type == DiskType::Fixed {
        line(&mut o, 2, "blocks", "none: every sector is stored".into());
    } else {
        line(
            &mut o,
            2,
            "allocated blocks",
            format!(
                "{} of {} ({:.2}%)",
                i.allocated_blocks,
                i.total_blocks,
                i.allocation_ratio * 100.0
            ),
        );
    }
    o.push_str("parent chain:\n");
    let _ = writeln!(o, "  0: {} ({}, this file)", i.path.display(), i.disk_type);
    for (n, l) in i.chain.iter().enumerate() {
        let alloc = if l.disk_type == DiskType::Fixed {
            String::new()
        } else {
            format!(
                ", {} of {} blocks allocated",
                l.allocated_blocks, l.total_blocks
            )
        };
        let _ = writeln!(
            o,
            "  {}: {} ({}, unique id {}{alloc})",
            n + 1,
            l.path.display(),
            l.disk_type,
            l.uuid
        );
    }
    if let Some(e) = &i.chain_error {
        let _ = writeln!(o, "  broken: {e}");
    }
    if !i.notes.is_empty() {
        o.push_str("notes:\n");
        for n in &i.notes {
            let _ = writeln!(o, "  {n}");
        }
    }
    o
}

fn info(a: InfoArgs) -> CmdResult {
    let i = vhd::info(&a.path)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&info_json(&i)).expect("JSON of plain values")
        );
    } else {
        print!("{}", info_text(&i));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// check

/// The finding's message, prefixed with its file unless the message already starts with it.
fn finding_text(f: &vhd::CheckFinding) -> String {
    let p = f.path.display().to_string();
    if f.message.starts_with(&format!("{p}:")) {
        f.message.clone()
    } else {
        format!("{p}: {}", f.message)
    }
}

fn check(a: CheckArgs) -> CmdResult {
    let report = vhd::check(&a.path)?;
    let errors = report.errors().count();
    let warnings = report.warnings().count();
    if a.json {
        let findings: Vec<Value> = report
            .findings
            .iter()
            .map(|f| {
                json!({
                    "path": f.path,
                    "severity": match f.severity {
                        CheckSeverity::Error => "error",
                        CheckSeverity::Warning => "warning",
                    },
                    "message": f.message,
                })
            })
            .collect();
        let v = json!({
            "path": report.path,
            "chain": report.chain,
            "clean": report.is_clean(),
            "errors": errors,
            "warnings": warnings,
            "findings": findings,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
    } else {
        let mut chain = vec![a.path.display().to_string()];
        chain.extend(report.chain.iter().map(|p| p.display().to_string()));
        println!("checked: {}", chain.join(" -> "));
        for f in &report.findings {
            let sev = match f.severity {
                CheckSeverity::Error => "error",
                CheckSeverity::Warning => "warning",
            };
            println!("{sev}: {}", finding_text(f));
        }
        let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
        if errors == 0 {
            println!(
                "{}: no errors, {}",
                a.path.display(),
                plural(warnings, "warning")
            );
        }
    }
    if errors > 0 {
        let first = report.errors().next().expect("counted");
        return Err(Failure::new(format!(
            "{}: check found {} (first: {})",
            a.path.display(),
            if errors == 1 {
                "1 error".to_string()
            } else {
                format!("{errors} errors")
            },
            finding_text(first)
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// convert

fn target_from_name(dst: &Path) -> Option<ConvertTo> {
    let ext = dst.extension()?.to_string_lossy().to_ascii_lowercase();
    match ext.as_str() {
        "vhd" | "vud" => Some(ConvertTo::Dynamic),
        "img" | "raw" | "bin" => Some(ConvertTo::Raw),
        _ => None,
    }
}

fn convert(a: ConvertArgs) -> CmdResult {
    let to = match a.to.or_else(|| target_from_name(&a.dst)) {
        Some(t) => t,
        None => {
            return Err(Failure::usage(format!(
            "{}: cannot tell the format to write from the name: give --to raw, fixed or dynamic",
            a.dst.display()
        )))
        }
    };
    if a.block_size.is_some() && to != ConvertTo::Dynamic {
        return Err(Failure::usage("--block-size applies only to --to dynamic"));
    }
    if a.exact_size && to == ConvertTo::Raw {
        return Err(Failure::usage(
            "--exact-size applies only to VHD targets (a raw image is always exactly the source's size)",
        ));
    }
    if !a.force && std::fs::symlink_metadata(&a.dst).is_ok() {
        return Err(Failure::new(format!(
            "{}: already exists (give --force to replace it)",
            a.dst.display()
        )));
    }
    let target = match to {
        ConvertTo::Raw => ConvertTarget::Raw,
        ConvertTo::Fixed => ConvertTarget::Fixed,
        ConvertTo::Dynamic => ConvertTarget::Dynamic {
            block_size: block_size(a.block_size)?,
        },
    };
    let opts = ConvertOptions {
        target,
        source_format: match a.from {
            ConvertFrom::Auto => ImageFormat::Auto,
            ConvertFrom::Raw => ImageFormat::Raw,
            ConvertFrom::Vhd => ImageFormat::Vhd,
        },
        size_policy: size_policy(a.exact_size),
    };
    catch_interrupts();
    let p = Progress::bar("converting", true);
    let what = if a.force && a.dst.exists() {
        format!(
            "{} is untouched and {} was not replaced",
            a.src.display(),
            a.dst.display()
        )
    } else {
        format!(
            "{} is untouched and {} was not created",
            a.src.display(),
            a.dst.display()
        )
    };
    interruptible(&what, || {
        vhd::convert(&a.src, &a.dst, &opts, &mut p.callback())
    })?;
    drop(p);
    if to == ConvertTo::Raw {
        let len = std::fs::metadata(&a.dst)
            .map_err(|e| Failure::new(format!("{}: {e}", a.dst.display())))?
            .len();
        println!("{}: raw image, {}", a.dst.display(), bytes_text(len));
    } else {
        println!("{}", describe(&a.dst)?);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// merge, compact, resize

fn merge(a: MergeArgs) -> CmdResult {
    catch_interrupts();
    let p = Progress::bar("merging", true);
    let what = format!(
        "{} is unchanged and still reads the same; its parent holds part of its data: run the merge again",
        a.child.display()
    );
    let report = interruptible(&what, || vhd::merge(&a.child, &mut p.callback()))?;
    drop(p);
    println!(
        "merged {} into {}: {}",
        a.child.display(),
        report.parent.display(),
        bytes_text(report.bytes)
    );
    if a.delete {
        std::fs::remove_file(&a.child)
            .map_err(|e| Failure::new(format!("{}: deleting: {e}", a.child.display())))?;
        println!("deleted {}", a.child.display());
    }
    Ok(())
}

fn compact(a: CompactArgs) -> CmdResult {
    catch_interrupts();
    let p = Progress::bar("compacting", true);
    let what = format!("{} is untouched", a.path.display());
    let r = interruptible(&what, || vhd::compact(&a.path, &mut p.callback()))?;
    drop(p);
    println!(
        "{}: {} -> {} blocks allocated, file {} -> {} bytes",
        a.path.display(),
        r.blocks_before,
        r.blocks_after,
        r.file_size_before,
        r.file_size_after
    );
    Ok(())
}

fn resize(a: ResizeArgs) -> CmdResult {
    let old = vhd::info(&a.path)?.size;
    // Not abortable: the steps are few and short, and each leaves a usable image anyway;
    // a signal waits for the end.
    catch_interrupts();
    let p = Progress::silent(false);
    let opts = ResizeOptions {
        size_policy: size_policy(a.exact_size),
    };
    let new = vhd::resize(&a.path, a.size.0, &opts, &mut p.callback())?;
    drop(p);
    if new == old {
        println!(
            "{}: already {}; nothing to do",
            a.path.display(),
            bytes_text(new)
        );
    } else {
        println!(
            "{}: resized from {} to {}",
            a.path.display(),
            bytes_text(old),
            bytes_text(new)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// undo disks and clones

/// The undo file meant by `p`: `p` itself if it is a `.vud` file, else `p` with the `.vud`
/// extension if that exists, else `p`.
fn undo_file(p: &Path) -> PathBuf {
    let is_vud = p.extension().is_some_and(|e| e.eq_ignore_ascii_case("vud"));
    if !is_vud {
        let u = vhd::undo::undo_path(p);
        if u.exists() {
            return u;
        }
    }
    p.to_path_buf()
}

fn commit(a: CommitArgs) -> CmdResult {
    let undo = undo_file(&a.undo);
    catch_interrupts();
    let p = Progress::bar("committing", true);
    let what = format!(
        "{} is still there and reads the same: commit again",
        undo.display()
    );
    let r = interruptible(&what, || vhd::undo::commit_undo(&undo, &mut p.callback()))?;
    drop(p);
    println!(
        "committed {} into {}: {}; {} deleted",
        undo.display(),
        r.parent.display(),
        bytes_text(r.bytes),
        undo.display()
    );
    Ok(())
}

fn discard(a: DiscardArgs) -> CmdResult {
    let undo = undo_file(&a.undo);
    vhd::undo::discard_undo(&undo)?;
    println!("discarded {}", undo.display());
    Ok(())
}

fn clone(a: CloneArgs) -> CmdResult {
    // Without --dir, the clones go beside GOLDEN (a bare name stays bare).
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => a.golden.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    if !dir.as_os_str().is_empty() && !dir.is_dir() {
        return Err(Failure::new(format!("{}: not a directory", dir.display())));
    }
    let stem = match &a.name {
        Some(n) => n.clone(),
        None => format!(
            "{}-clone",
            a.golden
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "disk".into())
        ),
    };
    let width = a.count.to_string().len();
    let paths: Vec<PathBuf> = (1..=a.count)
        .map(|i| dir.join(format!("{stem}-{i:0width$}.vhd")))
        .collect();
    if let Some(p) = paths.iter().find(|p| p.exists()) {
        return Err(Failure::new(format!(
            "{}: already exists; no clone was created",
            p.display()
        )));
    }
    // Not abortable: create_clones removes the clones already made only on its error path.
    catch_interrupts();
    let p = Progress::silent(false);
    vhd::undo::create_clones(&a.golden, &paths, &mut p.callback())?;
    drop(p);
    for c in &paths {
        println!("{}", c.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let p = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(p("512"), Ok(512));
        assert_eq!(p("64M"), Ok(64 << 20));
        assert_eq!(p("10g"), Ok(10 << 30));
        assert_eq!(p("2MiB"), Ok(2 << 20));
        assert_eq!(p("1T"), Ok(1 << 40));
        assert!(p("").is_err());
        assert!(p("M").is_err());
        assert!(p("1.5G").is_err());
        assert!(p("10X").is_err());
        assert!(p("99999999999T").is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(vhd_date(0), "2000-01-01 00:00:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_date(1_790_000_000), "2026-09-21 14:13:20 UTC");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(512), "512 bytes");
        assert_eq!(human_size(10 << 30), "10 GiB");
        assert_eq!(human_size(34_607_104), "33.00 MiB");
    }

    #[test]
    fn target_names() {
        assert_eq!(
            target_from_name(Path::new("a.VHD")),
            Some(ConvertTo::Dynamic)
        );
        assert_eq!(target_from_name(Path::new("a.img")), Some(ConvertTo::Raw));
        assert_eq!(target_from_name(Path::new("a")), None);
    }
}
