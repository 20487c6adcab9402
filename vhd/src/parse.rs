//! Reading and validating the metadata of one VHD file: footers, dynamic header, parent
//! locators and BAT. Used by `open` (which refuses a file with any fatal finding) and by
//! `check` (which reports every finding).
//!
//! Nothing here trusts the file: every offset and count is checked against the file length
//! before it is used, so the memory this allocates is bounded by the file's size (the BAT) and
//! by small constants (headers, locator data of at most [`MAX_LOCATOR_BYTES`]).

use std::io;

use crate::error::{Problem, Structure};
use crate::io::Storage;
use crate::spec::{
    self, footer_field, header_field, platform, DiskType, DynamicHeader, Footer, BAT_UNUSED,
    DYNAMIC_COOKIE, DYNAMIC_HEADER_SIZE, FOOTER_COOKIE, FOOTER_SIZE, MAX_BLOCK_SIZE,
    MIN_BLOCK_SIZE, SECTOR_SIZE,
};

/// Longest parent locator data kettle reads (a path of 32767 UTF-16 units is Windows' limit).
pub const MAX_LOCATOR_BYTES: u32 = 65536;
/// Findings of one kind listed before the rest is summarized.
const MAX_FINDINGS_PER_KIND: u64 = 16;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Consistent, but worth knowing (crash leftovers, extra space).
    Note,
    /// Damage that opening works around (a redundant copy is bad); `check` reports an error.
    Damage,
    /// The file cannot be used; `open` refuses it.
    Fatal,
}

/// One problem found in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// What it is.
    pub problem: Problem,
}

/// A decoded parent locator entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Locator {
    /// Entry index (0-7).
    pub index: u8,
    /// Platform code.
    pub platform_code: u32,
    /// Offset of the data.
    pub data_offset: u64,
    /// Length of the data.
    pub data_length: u32,
    /// The path it holds, when the kind is known and the data decodes.
    pub path: Option<String>,
}

impl Locator {
    /// The platform code as text ("W2ku").
    pub fn kind(&self) -> String {
        platform::name(self.platform_code)
    }
}

/// The validated layout of a file.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub file_len: u64,
    pub footer: Footer,
    /// The raw bytes of `footer`, as found (rewritten verbatim at the end of the file).
    pub footer_bytes: [u8; FOOTER_SIZE],
    pub disk_type: DiskType,
    /// False when the end of the file holds no footer and the copy at offset 0 was used.
    pub end_footer_ok: bool,
    pub sparse: Option<SparseLayout>,
}

#[derive(Clone, Debug)]
pub(crate) struct SparseLayout {
    pub header: DynamicHeader,
    pub header_offset: u64,
    pub bat: Vec<u32>,
    /// End of the last metadata structure or block, sector-aligned: where the end footer
    /// belongs and the next block goes.
    pub data_end: u64,
    pub locators: Vec<Locator>,
}

struct Findings {
    items: Vec<Finding>,
}

impl Findings {
    fn push(&mut self, severity: Severity, problem: Problem) {
        self.items.push(Finding { severity, problem });
    }
    fn fatal(&self) -> bool {
        self.items.iter().any(|f| f.severity == Severity::Fatal)
    }
}

/// Counts findings of one kind, keeping the first few.
struct Capped {
    count: u64,
}

impl Capped {
    fn push(&mut self, f: &mut Findings, severity: Severity, problem: Problem) {
        self.count += 1;
        if self.count <= MAX_FINDINGS_PER_KIND {
            f.push(severity, problem);
        }
    }
    fn finish(&self, f: &mut Findings, severity: Severity) {
        if self.count > MAX_FINDINGS_PER_KIND {
            f.push(
                severity,
                Problem::More {
                    structure: Structure::Bat,
                    count: self.count - MAX_FINDINGS_PER_KIND,
                },
            );
        }
    }
}

fn cookie_text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).escape_default().to_string()
}

/// The 8-byte cookie that opens a structure at `offset`.
fn check_cookie(
    found: &[u8],
    expected: &[u8; 8],
    name: &str,
    structure: Structure,
    offset: u64,
) -> Result<(), Problem> {
    if found == expected {
        return Ok(());
    }
    Err(Problem::BadCookie {
        structure,
        offset,
        expected: name.into(),
        found: cookie_text(found),
    })
}

/// A structure's stored one's-complement checksum against the one computed over its bytes.
fn check_checksum(
    stored: u32,
    computed: u32,
    structure: Structure,
    offset: u64,
) -> Result<(), Problem> {
    if stored == computed {
        return Ok(());
    }
    Err(Problem::ChecksumMismatch {
        structure,
        offset,
        stored,
        computed,
    })
}

/// Validates a footer's bytes read at `offset`.
pub(crate) fn validate_footer(
    b: &[u8; FOOTER_SIZE],
    structure: Structure,
    offset: u64,
) -> Result<Footer, Problem> {
    check_cookie(&b[0..8], &FOOTER_COOKIE, "conectix", structure, offset)?;
    let f = Footer::decode(b);
    check_checksum(f.checksum, Footer::compute_checksum(b), structure, offset)?;
    let field = |field: &'static str, at: usize, detail: String| Problem::BadField {
        structure,
        field,
        offset: offset + at as u64,
        detail,
    };
    if f.format_version >> 16 != 1 {
        return Err(field(
            "File Format Version",
            footer_field::FORMAT_VERSION,
            format!("version {:#010x} is not 1.x", f.format_version),
        ));
    }
    let Some(kind) = f.kind() else {
        return Err(field(
            "Disk Type",
            footer_field::DISK_TYPE,
            format!(
                "type {} is not fixed (2), dynamic (3) or differencing (4)",
                f.disk_type
            ),
        ));
    };
    if f.current_size % SECTOR_SIZE != 0 {
        return Err(field(
            "Current Size",
            footer_field::CURRENT_SIZE,
            format!("{} bytes is not a whole number of sectors", f.current_size),
        ));
    }
    if kind.is_sparse() && f.data_offset == spec::FIXED_DATA_OFFSET {
        return Err(field(
            "Data Offset",
            footer_field::DATA_OFFSET,
            format!("a {kind} disk needs the offset of its dynamic header, found none"),
        ));
    }
    Ok(f)
}

/// Validates a dynamic header's bytes read at `offset` (structure only; sizes and extents
/// are checked by the caller against the footer and the file).
pub(crate) fn validate_header(
    b: &[u8; DYNAMIC_HEADER_SIZE],
    offset: u64,
) -> Result<DynamicHeader, Problem> {
    let structure = Structure::DynamicHeader;
    check_cookie(&b[0..8], &DYNAMIC_COOKIE, "cxsparse", structure, offset)?;
    let h = DynamicHeader::decode(b);
    check_checksum(
        h.checksum,
        DynamicHeader::compute_checksum(b),
        structure,
        offset,
    )?;
    let field = |field: &'static str, at: usize, detail: String| Problem::BadField {
        structure,
        field,
        offset: offset + at as u64,
        detail,
    };
    if h.header_version >> 16 != 1 {
        return Err(field(
            "Header Version",
            header_field::HEADER_VERSION,
            format!("version {:#010x} is not 1.x", h.header_version),
        ));
    }
    if !h.block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&h.block_size)
    {
        return Err(field(
            "Block Size",
            header_field::BLOCK_SIZE,
            format!(
                "{} is not a power of two between {MIN_BLOCK_SIZE} and {MAX_BLOCK_SIZE}",
                h.block_size
            ),
        ));
    }
    Ok(h)
}

/// Name and values of the first footer field that differs.
fn first_difference(a: &Footer, b: &Footer) -> Option<(&'static str, String, String)> {
    macro_rules! cmp {
        ($name:expr, $f:ident) => {
            if a.$f != b.$f {
                return Some(($name, format!("{:?}", a.$f), format!("{:?}", b.$f)));
            }
        };
    }
    cmp!("Features", features);
    cmp!("File Format Version", format_version);
    cmp!("Data Offset", data_offset);
    cmp!("Time Stamp", timestamp);
    cmp!("Creator Application", creator_app);
    cmp!("Creator Version", creator_version);
    cmp!("Creator Host OS", creator_host_os);
    cmp!("Original Size", original_size);
    cmp!("Current Size", current_size);
    cmp!("Disk Geometry", geometry);
    cmp!("Disk Type", disk_type);
    cmp!("Unique Id", uuid);
    cmp!("Saved State", saved_state);
    None
}

fn read_array<const N: usize>(st: &dyn Storage, offset: u64) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    st.read_at(&mut b, offset)?;
    Ok(b)
}

/// Reads and validates the metadata of a VHD file. Returns the layout (`None` when a fatal
/// problem prevents building one) and every finding. Only I/O errors are `Err`.
pub(crate) fn inspect(st: &dyn Storage) -> io::Result<(Option<Layout>, Vec<Finding>)> {
    let mut f = Findings { items: Vec::new() };
    let layout = inspect_into(st, &mut f)?;
    let layout = if f.fatal() { None } else { layout };
    Ok((layout, f.items))
}

fn inspect_into(st: &dyn Storage, f: &mut Findings) -> io::Result<Option<Layout>> {
    let len = st.len()?;
    if len < FOOTER_SIZE as u64 {
        f.push(Severity::Fatal, Problem::FileTooSmall { len });
        return Ok(None);
    }
    let end_off = len - FOOTER_SIZE as u64;
    let end_bytes: [u8; FOOTER_SIZE] = read_array(st, end_off)?;
    let copy_bytes: [u8; FOOTER_SIZE] = read_array(st, 0)?;
    let end = validate_footer(&end_bytes, Structure::Footer, end_off);
    let copy = validate_footer(&copy_bytes, Structure::FooterCopy, 0);

    let (footer, footer_bytes, end_footer_ok) = match (end, copy) {
        (Ok(e), copy) => {
            if e.kind().is_some_and(DiskType::is_sparse) {
                match copy {
                    Err(p) => f.push(Severity::Damage, p),
                    Ok(c) => {
                        if let Some((field, end, copy)) = first_difference(&e, &c) {
                            f.push(
                                Severity::Damage,
                                Problem::FooterCopiesDiffer { field, end, copy },
                            );
                        }
                    }
                }
            }
            (e, end_bytes, true)
        }
        // No footer at all at the end: a dynamic file whose last block allocation was cut
        // short. The copy at offset 0 is authoritative then (it is never rewritten by
        // allocations, so it is as current as the lost end footer).
        (Err(Problem::BadCookie { .. }), Ok(c)) if c.kind().is_some_and(DiskType::is_sparse) => {
            f.push(
                Severity::Note,
                Problem::EndFooterMissing { offset: end_off },
            );
            (c, copy_bytes, false)
        }
        (Err(p), _) => {
            f.push(Severity::Fatal, p);
            return Ok(None);
        }
    };
    let disk_type = footer.kind().expect("validated");
    let footer_pos = if end_footer_ok { end_off } else { len };

    if disk_type == DiskType::Fixed {
        if footer.current_size > end_off {
            f.push(
                Severity::Fatal,
                Problem::BadField {
                    structure: Structure::Footer,
                    field: "Current Size",
                    offset: end_off + footer_field::CURRENT_SIZE as u64,
                    detail: format!(
                        "{} bytes do not fit in the {end_off} bytes before the footer",
                        footer.current_size
                    ),
                },
            );
            return Ok(None);
        }
        if footer.current_size < end_off {
            f.push(
                Severity::Note,
                Problem::FixedExtraData {
                    size: footer.current_size,
                    extra: end_off - footer.current_size,
                },
            );
        }
        return Ok(Some(Layout {
            file_len: len,
            footer,
            footer_bytes,
            disk_type,
            end_footer_ok,
            sparse: None,
        }));
    }

    // Dynamic header.
    let footer_struct = if end_footer_ok {
        Structure::Footer
    } else {
        Structure::FooterCopy
    };
    let footer_at = if end_footer_ok { end_off } else { 0 };
    let h_off = footer.data_offset;
    if h_off < FOOTER_SIZE as u64
        || h_off
            .checked_add(DYNAMIC_HEADER_SIZE as u64)
            .map_or(true, |e| e > footer_pos)
    {
        f.push(
            Severity::Fatal,
            Problem::BadField {
                structure: footer_struct,
                field: "Data Offset",
                offset: footer_at + footer_field::DATA_OFFSET as u64,
                detail: format!(
                    "the dynamic header at {h_off:#x} would lie outside {:#x}..{footer_pos:#x}",
                    FOOTER_SIZE
                ),
            },
        );
        return Ok(None);
    }
    let hb: [u8; DYNAMIC_HEADER_SIZE] = read_array(st, h_off)?;
    let header = match validate_header(&hb, h_off) {
        Ok(h) => h,
        Err(p) => {
            f.push(Severity::Fatal, p);
            return Ok(None);
        }
    };
    let block_size = header.block_size as u64;
    let needed = footer.current_size.div_ceil(block_size);
    if (header.max_table_entries as u64) < needed {
        f.push(
            Severity::Fatal,
            Problem::BadField {
                structure: Structure::DynamicHeader,
                field: "Max Table Entries",
                offset: h_off + header_field::MAX_TABLE_ENTRIES as u64,
                detail: format!(
                    "{} entries of {block_size}-byte blocks cannot map the current size of {} bytes (needs {needed})",
                    header.max_table_entries, footer.current_size
                ),
            },
        );
        return Ok(None);
    }
    let t_off = header.table_offset;
    let bat_len = header.max_table_entries as u64 * 4;
    let bat_end = t_off.saturating_add(bat_len);
    if bat_end > footer_pos {
        f.push(
            Severity::Fatal,
            Problem::BadExtent {
                structure: Structure::Bat,
                start: t_off,
                end: bat_end,
                detail: format!(
                    "({} entries) extends past the end of the file's data at {footer_pos:#x}",
                    header.max_table_entries
                ),
            },
        );
        return Ok(None);
    }

    // Metadata extents, for overlap checks.
    let mut regions: Vec<(Structure, u64, u64)> = vec![
        (Structure::FooterCopy, 0, FOOTER_SIZE as u64),
        (
            Structure::DynamicHeader,
            h_off,
            h_off + DYNAMIC_HEADER_SIZE as u64,
        ),
        (Structure::Bat, t_off, bat_end),
    ];

    // Parent locators (only differencing disks use them).
    let mut locators = Vec::new();
    let differencing = disk_type == DiskType::Differencing;
    for (i, l) in header.locators.iter().enumerate() {
        let index = i as u8;
        if l.platform_code == platform::NONE {
            continue;
        }
        let kind = platform::name(l.platform_code);
        let bad = |detail: String| Problem::Locator {
            index,
            kind: kind.clone(),
            offset: l.data_offset,
            detail,
        };
        if !differencing {
            f.push(
                Severity::Note,
                bad("present in a disk that has no parent (ignored)".into()),
            );
            continue;
        }
        if l.data_length == 0 {
            f.push(Severity::Note, bad("empty (ignored)".into()));
            continue;
        }
        if l.data_length > MAX_LOCATOR_BYTES {
            f.push(
                Severity::Damage,
                bad(format!(
                    "{} bytes of data is more than a path needs (ignored)",
                    l.data_length
                )),
            );
            continue;
        }
        let l_end = l.data_offset.saturating_add(l.data_length as u64);
        if l_end > footer_pos || l.data_offset < FOOTER_SIZE as u64 {
            f.push(
                Severity::Damage,
                bad(format!(
                    "data {:#x}..{l_end:#x} lies outside the file's data area (ignored)",
                    l.data_offset
                )),
            );
            continue;
        }
        regions.push((Structure::ParentLocator(index), l.data_offset, l_end));
        let mut data = vec![0u8; l.data_length as usize];
        st.read_at(&mut data, l.data_offset)?;
        let path = match l.platform_code {
            platform::W2KU | platform::W2RU => Some(spec::from_utf16le(&data)),
            platform::WI2K | platform::WI2R => Some(
                data.iter()
                    .take_while(|b| **b != 0)
                    .map(|b| *b as char)
                    .collect(),
            ),
            platform::MACX => {
                let s = String::from_utf8_lossy(&data)
                    .trim_end_matches('\0')
                    .to_string();
                Some(
                    s.strip_prefix("file://localhost")
                        .or_else(|| s.strip_prefix("file://"))
                        .unwrap_or(&s)
                        .to_string(),
                )
            }
            _ => {
                f.push(
                    Severity::Note,
                    bad("platform kind not supported (ignored)".into()),
                );
                None
            }
        };
        locators.push(Locator {
            index,
            platform_code: l.platform_code,
            data_offset: l.data_offset,
            data_length: l.data_length,
            path,
        });
    }
    if end_footer_ok {
        regions.push((Structure::Footer, end_off, len));
    }
    for i in 0..regions.len() {
        for j in i + 1..regions.len() {
            let (a, a0, a1) = regions[i];
            let (b, b0, b1) = regions[j];
            if a0 < b1 && b0 < a1 {
                let severity = match (a, b) {
                    (Structure::ParentLocator(_), _) | (_, Structure::ParentLocator(_)) => {
                        Severity::Damage
                    }
                    _ => Severity::Fatal,
                };
                f.push(
                    severity,
                    Problem::BadExtent {
                        structure: b,
                        start: b0,
                        end: b1,
                        detail: format!("overlaps the {a} at {a0:#x}..{a1:#x}"),
                    },
                );
            }
        }
    }
    if f.fatal() {
        return Ok(None);
    }

    // The BAT: every allocated block must lie in the data area, clear of metadata and of
    // every other block.
    let mut bat_bytes = vec![0u8; bat_len as usize];
    st.read_at(&mut bat_bytes, t_off)?;
    let bat = spec::decode_bat(&bat_bytes);
    drop(bat_bytes);
    let block_bytes = header.bitmap_bytes() + block_size;
    let mut past_end = Capped { count: 0 };
    let mut over_meta = Capped { count: 0 };
    let mut over_locator = Capped { count: 0 };
    let mut beyond = Capped { count: 0 };
    let mut blocks: Vec<(u64, u32)> = Vec::new();
    let mut data_end = regions
        .iter()
        .filter(|r| r.0 != Structure::Footer)
        .map(|r| r.2)
        .max()
        .unwrap_or(0);
    for (i, &e) in bat.iter().enumerate() {
        if e == BAT_UNUSED {
            continue;
        }
        let entry = i as u32;
        let start = e as u64 * SECTOR_SIZE;
        let end = start + block_bytes;
        if end > footer_pos {
            past_end.push(
                f,
                Severity::Fatal,
                Problem::BatEntryPastEnd {
                    entry,
                    start,
                    end,
                    limit: footer_pos,
                },
            );
            continue;
        }
        // A block over the header, the BAT or a footer is fatal. A block over parent
        // locator data only damages the locator (a hint for finding the parent, checked by
        // unique id; the BAT decides where data is): the block is used. This also keeps
        // openable a file whose locator pointed past its end when it was opened and whose
        // growth then put a new block there.
        let overlapping = |r: &&(Structure, u64, u64)| start < r.2 && r.1 < end;
        let is_locator = |r: &&(Structure, u64, u64)| matches!(r.0, Structure::ParentLocator(_));
        let hit = regions
            .iter()
            .filter(overlapping)
            .find(|r| !is_locator(r))
            .or_else(|| regions.iter().find(overlapping));
        if let Some(&(structure, meta_start, meta_end)) = hit {
            let problem = Problem::BatEntryOverlapsMetadata {
                entry,
                start,
                end,
                structure,
                meta_start,
                meta_end,
            };
            if !matches!(structure, Structure::ParentLocator(_)) {
                over_meta.push(f, Severity::Fatal, problem);
                continue;
            }
            over_locator.push(f, Severity::Damage, problem);
        }
        if (i as u64) >= needed {
            beyond.push(f, Severity::Note, Problem::BatEntryBeyondDisk { entry });
        }
        data_end = data_end.max(end);
        blocks.push((start, entry));
    }
    past_end.finish(f, Severity::Fatal);
    over_meta.finish(f, Severity::Fatal);
    over_locator.finish(f, Severity::Damage);
    beyond.finish(f, Severity::Note);
    blocks.sort_unstable();
    let mut overlaps = Capped { count: 0 };
    for w in blocks.windows(2) {
        let (a, ai) = w[0];
        let (b, bi) = w[1];
        if b < a + block_bytes {
            overlaps.push(
                f,
                Severity::Fatal,
                Problem::BatEntriesOverlap {
                    first: ai,
                    second: bi,
                    first_start: a,
                    second_start: b,
                    block_bytes,
                },
            );
        }
    }
    overlaps.finish(f, Severity::Fatal);
    let data_end = spec::round_up_sector(data_end);
    if footer_pos > data_end {
        f.push(
            Severity::Note,
            Problem::UnreferencedTail {
                offset: data_end,
                len: footer_pos - data_end,
            },
        );
    }
    Ok(Some(Layout {
        file_len: len,
        footer,
        footer_bytes,
        disk_type,
        end_footer_ok,
        sparse: Some(SparseLayout {
            header,
            header_offset: h_off,
            bat,
            data_end,
            locators,
        }),
    }))
}
