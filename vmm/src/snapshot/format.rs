//! The saved-state file on disk: a fixed header with a section table, then the sections.
//!
//! ```text
//! offset 0     header (4096 bytes, little-endian)
//!              0   magic "KETTLEVS"
//!              8   format version (u32)
//!              12  header size (u32, 4096)
//!              16  kettle version that wrote it (32 bytes, UTF-8, NUL-padded)
//!              48  when it was saved: seconds and nanoseconds since the Unix epoch (u64, u32)
//!              60  number of sections (u32, at most MAX_SECTIONS)
//!              64  section table: per section kind (u32), reserved (u32), offset (u64),
//!                  length (u64), CRC-32 of its bytes (u32), reserved (u32): 32 bytes each
//!              4092 CRC-32 of bytes 0..4092
//! then         the sections, each starting on a 4 KiB boundary: the VM configuration (JSON),
//!              the machine state (CBOR: vCPUs, irqchip, PIT, clock, devices) and guest memory
//!              (every RAM region at a page-aligned offset, zero pages left as holes).
//! ```
//!
//! The header and the small sections are always checked; the memory section's checksum is
//! checked when memory is copied (`--restore-mode copy`), not on a
//! lazy (mapped) restore, which must not read the whole file.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"KETTLEVS";
/// The format this kettle writes. Every format it can still read is in [`READABLE_FORMATS`].
pub const FORMAT_VERSION: u32 = 1;
pub const READABLE_FORMATS: &[u32] = &[1];
pub const HEADER_SIZE: u64 = 4096;
pub const PAGE: u64 = 4096;
const MAX_SECTIONS: usize = 16;
const SECTION_ENTRY: usize = 32;
const TABLE_OFFSET: usize = 64;
const HEADER_CRC_OFFSET: usize = 4092;

/// What a section holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionKind {
    Config = 1,
    Machine = 2,
    Memory = 3,
}

impl SectionKind {
    fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Config),
            2 => Some(Self::Machine),
            3 => Some(Self::Memory),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Config => "configuration",
            Self::Machine => "machine state",
            Self::Memory => "guest memory",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    pub kind: SectionKind,
    pub offset: u64,
    pub length: u64,
    pub crc: u32,
}

/// Why a file is not a saved state kettle can restore. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a kettle saved state (no KETTLEVS magic at its start)")]
    Foreign { path: PathBuf },
    #[error("{path} is truncated: {what} ends at byte {needed}, the file has {len}")]
    Truncated {
        path: PathBuf,
        what: String,
        needed: u64,
        len: u64,
    },
    #[error("{path} is corrupted: the checksum of its {what} does not match (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        path: PathBuf,
        what: String,
        stored: u32,
        computed: u32,
    },
    #[error("{path} was saved in format {version} by kettle {writer}, newer than this kettle ({ours}) reads (formats {readable:?}); use a newer kettle")]
    Newer {
        path: PathBuf,
        version: u32,
        writer: String,
        ours: String,
        readable: &'static [u32],
    },
    #[error("{path} was saved in format {version}, which this kettle no longer reads (formats {readable:?})")]
    Older {
        path: PathBuf,
        version: u32,
        readable: &'static [u32],
    },
    #[error("{path} is damaged: {what}")]
    Malformed { path: PathBuf, what: String },
}

/// The parsed header.
#[derive(Clone, Debug)]
pub struct Header {
    pub version: u32,
    pub writer: String,
    pub saved_secs: u64,
    pub saved_nanos: u32,
    pub sections: Vec<Section>,
}

impl Header {
    pub fn section(&self, kind: SectionKind) -> Option<&Section> {
        self.sections.iter().find(|s| s.kind == kind)
    }
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Encodes a header (with its checksum) into its 4096 bytes.
pub fn encode_header(h: &Header) -> Vec<u8> {
    assert!(h.sections.len() <= MAX_SECTIONS);
    let mut b = vec![0u8; HEADER_SIZE as usize];
    b[0..8].copy_from_slice(MAGIC);
    put_u32(&mut b, 8, h.version);
    put_u32(&mut b, 12, HEADER_SIZE as u32);
    let w = h.writer.as_bytes();
    let n = w.len().min(32);
    b[16..16 + n].copy_from_slice(&w[..n]);
    put_u64(&mut b, 48, h.saved_secs);
    put_u32(&mut b, 56, h.saved_nanos);
    put_u32(&mut b, 60, h.sections.len() as u32);
    for (i, s) in h.sections.iter().enumerate() {
        let at = TABLE_OFFSET + i * SECTION_ENTRY;
        put_u32(&mut b, at, s.kind as u32);
        put_u64(&mut b, at + 8, s.offset);
        put_u64(&mut b, at + 16, s.length);
        put_u32(&mut b, at + 24, s.crc);
    }
    let crc = crc32fast::hash(&b[..HEADER_CRC_OFFSET]);
    put_u32(&mut b, HEADER_CRC_OFFSET, crc);
    b
}

/// Reads and checks the header of `file` (of length `len`): magic, checksum, format version and
/// that every section lies inside the file, on a page boundary, without overlapping another.
pub fn read_header(path: &Path, file: &mut std::fs::File, len: u64) -> Result<Header, FormatError> {
    let io_err = |source| FormatError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut magic = [0u8; 8];
    if len < 8 {
        return Err(FormatError::Foreign {
            path: path.to_path_buf(),
        });
    }
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    file.read_exact(&mut magic).map_err(io_err)?;
    if &magic != MAGIC {
        return Err(FormatError::Foreign {
            path: path.to_path_buf(),
        });
    }
    if len < HEADER_SIZE {
        return Err(FormatError::Truncated {
            path: path.to_path_buf(),
            what: "the header".into(),
            needed: HEADER_SIZE,
            len,
        });
    }
    let mut b = vec![0u8; HEADER_SIZE as usize];
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    file.read_exact(&mut b).map_err(io_err)?;
    let stored = get_u32(&b, HEADER_CRC_OFFSET);
    let computed = crc32fast::hash(&b[..HEADER_CRC_OFFSET]);
    let version = get_u32(&b, 8);
    let writer = String::from_utf8_lossy(&b[16..48])
        .trim_end_matches('\0')
        .to_string();
    // A newer format may lay its header out differently: say "newer" before anything else.
    if version > FORMAT_VERSION {
        return Err(FormatError::Newer {
            path: path.to_path_buf(),
            version,
            writer,
            ours: env!("CARGO_PKG_VERSION").to_string(),
            readable: READABLE_FORMATS,
        });
    }
    if stored != computed {
        return Err(FormatError::Checksum {
            path: path.to_path_buf(),
            what: "header".into(),
            stored,
            computed,
        });
    }
    if !READABLE_FORMATS.contains(&version) {
        return Err(FormatError::Older {
            path: path.to_path_buf(),
            version,
            readable: READABLE_FORMATS,
        });
    }
    let malformed = |what: String| FormatError::Malformed {
        path: path.to_path_buf(),
        what,
    };
    if u64::from(get_u32(&b, 12)) != HEADER_SIZE {
        return Err(malformed(format!(
            "header size {} (expected {HEADER_SIZE})",
            get_u32(&b, 12)
        )));
    }
    let count = get_u32(&b, 60) as usize;
    if count > MAX_SECTIONS {
        return Err(malformed(format!(
            "{count} sections (at most {MAX_SECTIONS})"
        )));
    }
    let mut sections: Vec<Section> = Vec::new();
    for i in 0..count {
        let at = TABLE_OFFSET + i * SECTION_ENTRY;
        let raw = get_u32(&b, at);
        let kind = SectionKind::from_u32(raw)
            .ok_or_else(|| malformed(format!("section {i} has unknown kind {raw}")))?;
        let s = Section {
            kind,
            offset: get_u64(&b, at + 8),
            length: get_u64(&b, at + 16),
            crc: get_u32(&b, at + 24),
        };
        if sections.iter().any(|o| o.kind == kind) {
            return Err(malformed(format!("two {} sections", kind.name())));
        }
        if s.offset < HEADER_SIZE || !s.offset.is_multiple_of(PAGE) {
            return Err(malformed(format!(
                "the {} section starts at {:#x}, not on a page after the header",
                kind.name(),
                s.offset
            )));
        }
        let end = s
            .offset
            .checked_add(s.length)
            .ok_or_else(|| malformed(format!("the {} section's length overflows", kind.name())))?;
        if end > len {
            return Err(FormatError::Truncated {
                path: path.to_path_buf(),
                what: format!("the {} section", kind.name()),
                needed: end,
                len,
            });
        }
        for o in &sections {
            if s.offset < o.offset + o.length && o.offset < end {
                return Err(malformed(format!(
                    "the {} and {} sections overlap",
                    o.kind.name(),
                    kind.name()
                )));
            }
        }
        sections.push(s);
    }
    for kind in [
        SectionKind::Config,
        SectionKind::Machine,
        SectionKind::Memory,
    ] {
        if !sections.iter().any(|s| s.kind == kind) {
            return Err(malformed(format!("it has no {} section", kind.name())));
        }
    }
    Ok(Header {
        version,
        writer,
        saved_secs: get_u64(&b, 48),
        saved_nanos: get_u32(&b, 56),
        sections,
    })
}

/// Reads a small section whole and checks its checksum (`limit` bounds what a damaged table
/// could make us allocate).
pub fn read_section(
    path: &Path,
    file: &mut std::fs::File,
    s: &Section,
    limit: u64,
) -> Result<Vec<u8>, FormatError> {
    if s.length > limit {
        return Err(FormatError::Malformed {
            path: path.to_path_buf(),
            what: format!(
                "its {} section is {} bytes (at most {limit} expected)",
                s.kind.name(),
                s.length
            ),
        });
    }
    let io_err = |source| FormatError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut v = vec![0u8; s.length as usize];
    file.seek(SeekFrom::Start(s.offset)).map_err(io_err)?;
    file.read_exact(&mut v).map_err(io_err)?;
    let computed = crc32fast::hash(&v);
    if computed != s.crc {
        return Err(FormatError::Checksum {
            path: path.to_path_buf(),
            what: format!("{} section", s.kind.name()),
            stored: s.crc,
            computed,
        });
    }
    Ok(v)
}

/// Rounds up to the next page boundary.
pub fn page_align(v: u64) -> u64 {
    v.div_ceil(PAGE) * PAGE
}

/// Writes `bytes` at `offset` and returns its section entry.
pub fn write_section(
    file: &mut std::fs::File,
    kind: SectionKind,
    offset: u64,
    bytes: &[u8],
) -> io::Result<Section> {
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(bytes)?;
    Ok(Section {
        kind,
        offset,
        length: bytes.len() as u64,
        crc: crc32fast::hash(bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            version: FORMAT_VERSION,
            writer: "0.1.0".into(),
            saved_secs: 1_800_000_000,
            saved_nanos: 5,
            sections: vec![
                Section {
                    kind: SectionKind::Config,
                    offset: 4096,
                    length: 10,
                    crc: 1,
                },
                Section {
                    kind: SectionKind::Machine,
                    offset: 8192,
                    length: 10,
                    crc: 2,
                },
                Section {
                    kind: SectionKind::Memory,
                    offset: 12288,
                    length: 4096,
                    crc: 3,
                },
            ],
        }
    }

    fn file_with(bytes: &[u8]) -> (tempfile_path::TempPath, std::fs::File) {
        let p = tempfile_path::TempPath::new("hdr");
        std::fs::write(&p.0, bytes).unwrap();
        let f = std::fs::File::open(&p.0).unwrap();
        (p, f)
    }

    /// A unique temporary path removed on drop (no extra crate for one test module).
    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);
        impl TempPath {
            pub fn new(tag: &str) -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let n = N.fetch_add(1, Ordering::Relaxed);
                Self(
                    std::env::temp_dir()
                        .join(format!("kettle-fmt-{tag}-{}-{n}", std::process::id())),
                )
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn header_round_trips() {
        let mut bytes = encode_header(&header());
        bytes.resize(16384, 0);
        let (p, mut f) = file_with(&bytes);
        let h = read_header(&p.0, &mut f, 16384).unwrap();
        assert_eq!(h.sections, header().sections);
        assert_eq!(h.writer, "0.1.0");
        assert_eq!((h.saved_secs, h.saved_nanos), (1_800_000_000, 5));
    }

    #[test]
    fn damaged_headers_are_refused_with_the_reason() {
        let good = {
            let mut b = encode_header(&header());
            b.resize(16384, 0);
            b
        };
        let check = |bytes: &[u8], len: u64, want: &str| {
            let (p, mut f) = file_with(bytes);
            let e = read_header(&p.0, &mut f, len).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        };
        check(b"hello world, not a state", 24, "not a kettle saved state");
        check(&good[..100], 100, "truncated");
        check(&good[..16383], 16383, "truncated: the guest memory section");
        let mut flipped = good.clone();
        flipped[70] ^= 1;
        check(&flipped, 16384, "checksum of its header");
        let mut newer = good.clone();
        newer[8] = 9;
        check(&newer, 16384, "newer than this kettle");
        let mut older = header();
        older.version = 0;
        let mut b = encode_header(&older);
        b.resize(16384, 0);
        check(&b, 16384, "no longer reads");
        let mut overlap = header();
        overlap.sections[1].offset = 4096;
        let mut b = encode_header(&overlap);
        b.resize(16384, 0);
        check(&b, 16384, "overlap");
        let mut unaligned = header();
        unaligned.sections[2].offset = 12289;
        let mut b = encode_header(&unaligned);
        b.resize(20000, 0);
        check(&b, 20000, "not on a page");
        let mut missing = header();
        missing.sections.pop();
        let mut b = encode_header(&missing);
        b.resize(16384, 0);
        check(&b, 16384, "no guest memory section");
        let mut huge = header();
        huge.sections[0].length = u64::MAX;
        let b = encode_header(&huge);
        check(&b, 4096, "overflows");
    }

    #[test]
    fn section_checksums_are_checked_and_lengths_bounded() {
        let mut b = encode_header(&header());
        b.resize(16384, 0);
        let (p, mut f) = file_with(&b);
        let s = Section {
            kind: SectionKind::Config,
            offset: 4096,
            length: 10,
            crc: crc32fast::hash(&[0u8; 10]),
        };
        assert_eq!(read_section(&p.0, &mut f, &s, 100).unwrap(), vec![0u8; 10]);
        let bad = Section { crc: 7, ..s };
        let e = read_section(&p.0, &mut f, &bad, 100).unwrap_err();
        assert!(e.to_string().contains("configuration section"), "{e}");
        let e = read_section(&p.0, &mut f, &s, 5).unwrap_err();
        assert!(e.to_string().contains("at most 5"), "{e}");
    }
}
