//! Errors of the vhd crate. Every error names the file; format errors name the structure,
//! the field and the byte offset involved.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A structure of a VHD file, as named in error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Structure {
    /// The footer at the end of the file.
    Footer,
    /// The copy of the footer at offset 0 (dynamic and differencing disks).
    FooterCopy,
    /// The dynamic disk header.
    DynamicHeader,
    /// The block allocation table.
    Bat,
    /// Parent locator entry `n` (0-7) and its data.
    ParentLocator(u8),
}

impl fmt::Display for Structure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Structure::Footer => f.write_str("footer"),
            Structure::FooterCopy => f.write_str("footer copy"),
            Structure::DynamicHeader => f.write_str("dynamic header"),
            Structure::Bat => f.write_str("BAT"),
            Structure::ParentLocator(n) => write!(f, "parent locator {n}"),
        }
    }
}

/// A problem found in the bytes of one VHD file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The file cannot even hold a footer.
    #[error("file is too small for a VHD: {len} bytes")]
    FileTooSmall {
        /// File length.
        len: u64,
    },
    /// A cookie ("conectix", "cxsparse") is not there.
    #[error(
        "{structure} cookie mismatch at offset {offset:#x}: expected {expected:?}, found {found:?}"
    )]
    BadCookie {
        /// The structure.
        structure: Structure,
        /// Its offset.
        offset: u64,
        /// The cookie expected.
        expected: String,
        /// What the file holds there (lossy text).
        found: String,
    },
    /// A checksum does not match the structure.
    #[error("{structure} checksum mismatch at offset {offset:#x}: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The structure.
        structure: Structure,
        /// Its offset.
        offset: u64,
        /// The checksum stored in the file.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// A field holds a value that is invalid or unsupported.
    #[error("{structure} field \"{field}\" at offset {offset:#x} is invalid: {detail}")]
    BadField {
        /// The structure.
        structure: Structure,
        /// The field's name as the spec spells it.
        field: &'static str,
        /// The field's absolute offset in the file.
        offset: u64,
        /// What is wrong, with the value.
        detail: String,
    },
    /// Two metadata structures overlap, or one lies outside the file.
    #[error("{structure} at {start:#x}..{end:#x} {detail}")]
    BadExtent {
        /// The structure.
        structure: Structure,
        /// Its first byte.
        start: u64,
        /// One past its last byte.
        end: u64,
        /// What is wrong ("extends past the end of the file at 0x...", "overlaps ...").
        detail: String,
    },
    /// A BAT entry points (partly) beyond the data area of the file.
    #[error("BAT entry {entry} points past the end of the file: block at {start:#x}..{end:#x}, data area ends at {limit:#x}")]
    BatEntryPastEnd {
        /// Index of the entry.
        entry: u32,
        /// Offset of the block (its bitmap).
        start: u64,
        /// End of the block's data.
        end: u64,
        /// End of the data area.
        limit: u64,
    },
    /// Two BAT entries point to overlapping blocks.
    #[error("BAT entries {first} and {second} overlap: blocks at {first_start:#x} and {second_start:#x} are {block_bytes:#x} bytes long")]
    BatEntriesOverlap {
        /// Index of the entry with the lower offset.
        first: u32,
        /// Index of the other entry.
        second: u32,
        /// Offset of the first block.
        first_start: u64,
        /// Offset of the second block.
        second_start: u64,
        /// Size of a block with its bitmap.
        block_bytes: u64,
    },
    /// A BAT entry points into metadata (header, BAT, locator data, footer copy).
    #[error("BAT entry {entry} (block at {start:#x}..{end:#x}) overlaps the {structure} at {meta_start:#x}..{meta_end:#x}")]
    BatEntryOverlapsMetadata {
        /// Index of the entry.
        entry: u32,
        /// Offset of the block.
        start: u64,
        /// End of the block.
        end: u64,
        /// The structure overlapped.
        structure: Structure,
        /// Its first byte.
        meta_start: u64,
        /// One past its last byte.
        meta_end: u64,
    },
    /// More problems of one kind than are worth listing.
    #[error("{count} more problems of the same kind in the {structure}")]
    More {
        /// The structure.
        structure: Structure,
        /// How many were left out.
        count: u64,
    },
    /// The end of a dynamic file holds no footer; the copy at offset 0 is used. This is
    /// what a block allocation interrupted by a crash leaves (see the crate docs).
    #[error("no footer at the end of the file (offset {offset:#x}): the block allocation in progress was interrupted; the footer copy at offset 0 is used and the footer is rewritten at the next flush of a writable open")]
    EndFooterMissing {
        /// Where the footer was expected.
        offset: u64,
    },
    /// The two footer copies are both valid but differ.
    #[error("the footer at the end of the file and its copy at offset 0 differ in \"{field}\": {end} at the end, {copy} at offset 0 (the end footer is used)")]
    FooterCopiesDiffer {
        /// The first field that differs.
        field: &'static str,
        /// Its value at the end.
        end: String,
        /// Its value at offset 0.
        copy: String,
    },
    /// Bytes after the last block that no BAT entry references (left by an interrupted
    /// allocation, or by a tool that preallocates); harmless, reused by the next allocation.
    #[error("{len} bytes at {offset:#x} after the last block are not referenced by the BAT (an interrupted block allocation leaves this)")]
    UnreferencedTail {
        /// Start of the unreferenced bytes.
        offset: u64,
        /// Their length.
        len: u64,
    },
    /// A fixed disk file has more data than its footer's size says.
    #[error("fixed disk has {extra} bytes between the end of its data ({size:#x}) and the footer")]
    FixedExtraData {
        /// Disk size from the footer.
        size: u64,
        /// Bytes not covered.
        extra: u64,
    },
    /// A BAT entry beyond the disk size is allocated (unused by reads).
    #[error("BAT entry {entry} beyond the disk size is allocated (ignored)")]
    BatEntryBeyondDisk {
        /// Index of the entry.
        entry: u32,
    },
    /// A parent locator of an unknown kind or with undecodable data.
    #[error("parent locator {index} ({kind}) at {offset:#x}: {detail}")]
    Locator {
        /// Entry index.
        index: u8,
        /// Platform code name.
        kind: String,
        /// Data offset.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
}

/// One way the parent of a differencing disk was looked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentCandidate {
    /// Where the path came from ("W2ru locator", "W2ku locator", "parent name").
    pub source: String,
    /// The path tried.
    pub path: PathBuf,
}

fn candidates(c: &[ParentCandidate]) -> String {
    if c.is_empty() {
        return "the header has no parent locator or name to look with".into();
    }
    let parts: Vec<String> = c
        .iter()
        .map(|c| format!("{} (from {})", c.path.display(), c.source))
        .collect();
    format!("looked for {}", parts.join(", "))
}

/// Errors of the vhd crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a file.
    #[error("{}: {context}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file is not a valid VHD (or is damaged).
    #[error("{}: {problem}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the field and offset.
        problem: Problem,
    },
    /// The parent of a differencing disk cannot be found.
    #[error("{}: parent not found: {}", child.display(), candidates(tried))]
    ParentNotFound {
        /// The differencing disk.
        child: PathBuf,
        /// Every path tried, with where it came from.
        tried: Vec<ParentCandidate>,
    },
    /// A file was found where the parent should be, but it is a different disk.
    #[error("{}: parent {} has unique id {found}, the child expects {expected}", child.display(), parent.display())]
    ParentMismatch {
        /// The differencing disk.
        child: PathBuf,
        /// The file found.
        parent: PathBuf,
        /// The child's "Parent Unique Id".
        expected: crate::Uuid,
        /// The found file's "Unique Id".
        found: crate::Uuid,
    },
    /// The differencing chain is deeper than kettle follows.
    #[error("{}: differencing chain deeper than {limit} disks", path.display())]
    ChainTooDeep {
        /// The disk at which the limit was reached.
        path: PathBuf,
        /// The limit.
        limit: usize,
    },
    /// The differencing chain loops.
    #[error("{}: parent chain loops back to {}", path.display(), again.display())]
    ParentLoop {
        /// The disk whose parent closes the loop.
        path: PathBuf,
        /// The disk met again.
        again: PathBuf,
    },
    /// Another open holds a conflicting lock (a writer, or readers when opening to write).
    #[error("{}: the image is in use: {what}", path.display())]
    Locked {
        /// The file.
        path: PathBuf,
        /// Which lock was wanted.
        what: &'static str,
    },
    /// A write to a disk opened read-only.
    #[error("{}: the disk is open read-only", path.display())]
    ReadOnly {
        /// The file.
        path: PathBuf,
    },
    /// An access outside the disk, or not in whole sectors.
    #[error("{}: access of {len} bytes at sector {sector} does not fit the disk ({sectors} sectors of 512 bytes)", path.display())]
    OutOfRange {
        /// The file.
        path: PathBuf,
        /// First sector.
        sector: u64,
        /// Length of the access, bytes.
        len: u64,
        /// Sectors of the disk.
        sectors: u64,
    },
    /// The destination of a create already exists.
    #[error("{}: already exists", path.display())]
    AlreadyExists {
        /// The file.
        path: PathBuf,
    },
    /// An argument that cannot work (size, block size, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// An operation this file does not support.
    #[error("{}: {what}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is not supported.
        what: String,
    },
}

/// Result of the vhd crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        context: impl Into<String>,
        source: io::Error,
    ) -> Error {
        Error::Io {
            path: path.into(),
            context: context.into(),
            source,
        }
    }

    /// The format problem, when this is a [`Error::Corrupt`].
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Error::Corrupt { problem, .. } => Some(problem),
            _ => None,
        }
    }
}
