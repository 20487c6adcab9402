//! Guest memory in a saved state: every RAM region at a page-aligned offset of the memory
//! section, all-zero pages left as holes (a sparse file), so that restore can map the file
//! copy-on-write and let the guest fault in only what it touches.
//!
//! The memory checksum covers what was written: for each non-zero page, its offset in the file
//! and its 4096 bytes, in file order. Zero pages, holes or not, do not count.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    Address, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MemoryRegionAddress,
};

use super::format::PAGE;

/// Where one RAM region lives in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRegionEntry {
    pub guest_addr: u64,
    pub size: u64,
    /// Offset in the file (inside the memory section, page-aligned).
    pub file_offset: u64,
}

/// How restore brings guest memory back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RestoreMode {
    /// Map the file copy-on-write: fast, lazy; the file must stay while the VM runs.
    #[default]
    Map,
    /// Read it into fresh memory (and check its checksum): the file may go away.
    Copy,
}

impl std::str::FromStr for RestoreMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "map" | "lazy" => Ok(Self::Map),
            "copy" => Ok(Self::Copy),
            _ => Err(format!("invalid restore mode {s:?}: use map or copy")),
        }
    }
}

const ZERO_PAGE: [u8; PAGE as usize] = [0; PAGE as usize];

fn host_slice(region: &GuestRegionMmap) -> io::Result<&[u8]> {
    let ptr = region
        .get_host_address(MemoryRegionAddress(0))
        .map_err(|e| io::Error::other(e.to_string()))?;
    // SAFETY: the region maps `len` bytes at `ptr` for as long as `region` lives. vCPUs are
    // paused and devices settled while a state is saved, so nothing writes these bytes now.
    Ok(unsafe { std::slice::from_raw_parts(ptr, region.len() as usize) })
}

/// The pages of `mem` the process never touched, from /proc/self/pagemap: neither present nor
/// swapped out. An untouched page of an anonymous mapping reads as zero; one of a private file
/// mapping reads as the file. (mincore would miss pages swapped out, which are touched.) None
/// when pagemap cannot be read: then every page counts as touched.
fn untouched_pages(mem: &[u8]) -> Option<Vec<bool>> {
    const PRESENT: u64 = 1 << 63;
    const SWAPPED: u64 = 1 << 62;
    let pagemap = File::open("/proc/self/pagemap").ok()?;
    let pages = mem.len().div_ceil(PAGE as usize);
    let first = mem.as_ptr() as u64 / PAGE;
    let mut out = Vec::with_capacity(pages);
    let mut buf = vec![0u8; 8 * 4096];
    while out.len() < pages {
        let n = (pages - out.len()).min(4096);
        let at = (first + out.len() as u64) * 8;
        pagemap.read_exact_at(&mut buf[..n * 8], at).ok()?;
        for e in buf[..n * 8].chunks_exact(8) {
            let e = u64::from_le_bytes(e.try_into().unwrap());
            out.push(e & (PRESENT | SWAPPED) == 0);
        }
    }
    Some(out)
}

/// Which of the `pages` pages of `file` from `start` lie wholly in holes (read as zero), found
/// with SEEK_DATA/SEEK_HOLE (a file system without holes reports all data).
fn hole_pages(file: &File, start: u64, pages: usize) -> Vec<bool> {
    let end = start + pages as u64 * PAGE;
    let mut holes = vec![true; pages];
    let mut at = start;
    // Bounded: each turn moves past one data extent.
    while let Some(data) = next_data(file, at).filter(|&d| d < end) {
        let hole = next_hole(file, data).min(end);
        let a = ((data.max(start) - start) / PAGE) as usize;
        let b = ((hole - start).div_ceil(PAGE) as usize).min(pages);
        holes[a..b].fill(false);
        if hole <= at {
            break;
        }
        at = hole;
    }
    holes
}

/// The pages of `region` that surely read as zero, so saving need not look at them: untouched
/// anonymous pages, or untouched pages of a restored VM's memory file that lie in its holes.
fn zero_pages(region: &GuestRegionMmap, bytes: &[u8]) -> Option<Vec<bool>> {
    let untouched = untouched_pages(bytes)?;
    match region.file_offset() {
        None => Some(untouched),
        Some(fo) => {
            let holes = hole_pages(fo.file(), fo.start(), untouched.len());
            Some(untouched.iter().zip(holes).map(|(u, h)| *u && h).collect())
        }
    }
}

/// Writes every region of `mem` from `start` (page-aligned) on. Returns the region table, the
/// section's length and its checksum. `progress` is told the bytes done so far.
pub fn write_memory(
    file: &File,
    mem: &GuestMemoryMmap,
    start: u64,
    progress: &mut dyn FnMut(u64),
) -> io::Result<(Vec<MemoryRegionEntry>, u64, u32)> {
    let mut crc = crc32fast::Hasher::new();
    let mut entries = Vec::new();
    let mut offset = start;
    let mut done = 0u64;
    for region in mem.iter() {
        let bytes = host_slice(region)?;
        // Pages known to be zero are not even read (reading would fault them in).
        let zero = zero_pages(region, bytes);
        let mut run_start: Option<usize> = None;
        let pages = bytes.len() / PAGE as usize;
        for p in 0..=pages {
            let nonzero = p < pages && {
                let maybe_data = zero.as_ref().is_none_or(|z| !z[p]);
                maybe_data && bytes[p * PAGE as usize..(p + 1) * PAGE as usize] != ZERO_PAGE[..]
            };
            if nonzero {
                let at = offset + (p as u64) * PAGE;
                crc.update(&at.to_le_bytes());
                crc.update(&bytes[p * PAGE as usize..(p + 1) * PAGE as usize]);
                run_start.get_or_insert(p);
            } else if let Some(s) = run_start.take() {
                let a = s * PAGE as usize;
                let b = p * PAGE as usize;
                file.write_all_at(&bytes[a..b], offset + a as u64)?;
            }
            if p % 4096 == 0 && p > 0 {
                progress(done + (p as u64) * PAGE);
            }
        }
        entries.push(MemoryRegionEntry {
            guest_addr: region.start_addr().raw_value(),
            size: region.len(),
            file_offset: offset,
        });
        offset += region.len().div_ceil(PAGE) * PAGE;
        done += region.len();
        progress(done);
    }
    Ok((entries, offset - start, crc.finalize()))
}

/// Checks a region table against the memory section (`start`, `len`): every region inside it,
/// page-aligned, not overlapping another, and together exactly `expected` (the layout the
/// saved configuration implies).
pub fn check_regions(
    entries: &[MemoryRegionEntry],
    start: u64,
    len: u64,
    expected: &[(u64, u64)],
) -> Result<(), String> {
    let got: Vec<(u64, u64)> = entries.iter().map(|e| (e.guest_addr, e.size)).collect();
    if got != expected {
        return Err(format!(
            "its memory regions {got:x?} do not match the saved memory size's layout {expected:x?}"
        ));
    }
    let mut prev_end = start;
    for e in entries {
        if !e.file_offset.is_multiple_of(PAGE) || !e.size.is_multiple_of(PAGE) {
            return Err(format!(
                "memory region at {:#x} is not page-aligned in the file",
                e.guest_addr
            ));
        }
        let end = e
            .file_offset
            .checked_add(e.size)
            .ok_or("a memory region's end overflows")?;
        if e.file_offset < prev_end || end > start + len {
            return Err(format!(
                "memory region at {:#x} lies outside the memory section or overlaps another",
                e.guest_addr
            ));
        }
        prev_end = end;
    }
    Ok(())
}

/// Maps the regions copy-on-write from `file`: the guest's writes stay private to this VM.
pub fn map_memory(file: &File, entries: &[MemoryRegionEntry]) -> io::Result<GuestMemoryMmap> {
    let mut regions = Vec::new();
    for e in entries {
        let f = file.try_clone()?;
        let mapping = MmapRegionBuilder::new(e.size as usize)
            .with_file_offset(FileOffset::new(f, e.file_offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .build()
            .map_err(|err| io::Error::other(format!("mapping guest memory: {err}")))?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(e.guest_addr))
            .ok_or_else(|| io::Error::other("a memory region wraps the address space"))?;
        regions.push(region);
    }
    GuestMemoryMmap::from_regions(regions).map_err(|err| io::Error::other(err.to_string()))
}

/// Next data at or after `at` (SEEK_DATA), or None if only a hole follows.
fn next_data(file: &File, at: u64) -> Option<u64> {
    // SAFETY: lseek on a valid fd; the result is checked.
    let r = unsafe { libc::lseek(file.as_raw_fd(), at as libc::off_t, libc::SEEK_DATA) };
    (r >= 0).then_some(r as u64)
}

fn next_hole(file: &File, at: u64) -> u64 {
    // SAFETY: as above.
    let r = unsafe { libc::lseek(file.as_raw_fd(), at as libc::off_t, libc::SEEK_HOLE) };
    if r >= 0 {
        r as u64
    } else {
        u64::MAX
    }
}

/// Reads the regions into fresh anonymous memory, checking the memory checksum on the way.
/// Returns the memory and the checksum computed.
pub fn copy_memory(
    file: &File,
    entries: &[MemoryRegionEntry],
) -> io::Result<(GuestMemoryMmap, u32)> {
    let ranges: Vec<(GuestAddress, usize)> = entries
        .iter()
        .map(|e| (GuestAddress(e.guest_addr), e.size as usize))
        .collect();
    let mem = GuestMemoryMmap::from_ranges(&ranges)
        .map_err(|err| io::Error::other(format!("allocating guest memory: {err}")))?;
    let mut crc = crc32fast::Hasher::new();
    for (e, region) in entries.iter().zip(mem.iter()) {
        let ptr = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|err| io::Error::other(err.to_string()))?;
        // SAFETY: the fresh region maps `size` bytes; no vCPU runs yet.
        let dst = unsafe { std::slice::from_raw_parts_mut(ptr, e.size as usize) };
        let end = e.file_offset + e.size;
        let mut at = e.file_offset;
        while at < end {
            let Some(data) = next_data(file, at).filter(|&d| d < end) else {
                break;
            };
            let data = data / PAGE * PAGE;
            let stop = next_hole(file, data).min(end).div_ceil(PAGE) * PAGE;
            let stop = stop.min(end);
            let a = (data - e.file_offset) as usize;
            let b = (stop - e.file_offset) as usize;
            file.read_exact_at(&mut dst[a..b], data)?;
            for p in (a..b).step_by(PAGE as usize) {
                let page = &dst[p..p + PAGE as usize];
                if page != &ZERO_PAGE[..] {
                    crc.update(&(e.file_offset + p as u64).to_le_bytes());
                    crc.update(page);
                }
            }
            at = stop.max(at + PAGE);
        }
    }
    Ok((mem, crc.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    fn temp(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("kettle-mem-{tag}-{}", std::process::id()))
    }

    /// A new, empty read-write scratch file.
    fn scratch_file(tag: &str) -> (std::path::PathBuf, File) {
        let path = temp(tag);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        (path, f)
    }

    #[test]
    fn memory_round_trips_sparse_by_map_and_by_copy() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x20000),
            (GuestAddress(0x100000), 0x40000),
        ])
        .unwrap();
        mem.write_slice(b"low", GuestAddress(0x1000)).unwrap();
        mem.write_slice(&[0xaa; 5000], GuestAddress(0x100ff0))
            .unwrap();
        mem.write_slice(b"top", GuestAddress(0x13fffd)).unwrap();
        let (path, file) = scratch_file("rt");
        let mut seen = 0;
        let (entries, len, crc) = write_memory(&file, &mem, 8192, &mut |d| seen = d).unwrap();
        assert_eq!(seen, 0x60000);
        assert_eq!(len, 0x60000);
        file.set_len(8192 + len).unwrap();
        check_regions(&entries, 8192, len, &[(0, 0x20000), (0x100000, 0x40000)]).unwrap();
        // Sparse: only the pages written hold data (where the file system reports holes).
        let data_pages = {
            let mut n = 0;
            let mut at = 8192;
            while let Some(d) = next_data(&file, at) {
                let h = next_hole(&file, d);
                n += (h - d) / PAGE;
                at = h;
            }
            n
        };
        assert!(data_pages <= 5, "{data_pages} data pages for 4 written");

        for mapped in [true, false] {
            let back = if mapped {
                map_memory(&file, &entries).unwrap()
            } else {
                let (m, c) = copy_memory(&file, &entries).unwrap();
                assert_eq!(c, crc, "copy checksum");
                m
            };
            let mut b = [0u8; 3];
            back.read_slice(&mut b, GuestAddress(0x1000)).unwrap();
            assert_eq!(&b, b"low");
            back.read_slice(&mut b, GuestAddress(0x13fffd)).unwrap();
            assert_eq!(&b, b"top");
            let mut big = vec![0u8; 5000];
            back.read_slice(&mut big, GuestAddress(0x100ff0)).unwrap();
            assert!(big.iter().all(|&x| x == 0xaa));
            // Copy-on-write: the guest's writes never reach the file.
            back.write_slice(b"new", GuestAddress(0x1000)).unwrap();
        }
        let (again, c) = copy_memory(&file, &entries).unwrap();
        assert_eq!(c, crc);
        let mut b = [0u8; 3];
        again.read_slice(&mut b, GuestAddress(0x1000)).unwrap();
        assert_eq!(&b, b"low");
        // A damaged page changes the checksum.
        file.write_all_at(b"X", 8192 + 0x1000).unwrap();
        assert_ne!(copy_memory(&file, &entries).unwrap().1, crc);
        drop(file);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn untouched_and_hole_pages_are_found() {
        // Anonymous memory: only the pages written count as touched.
        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 * PAGE as usize)]).unwrap();
        mem.write_slice(b"x", GuestAddress(3 * PAGE)).unwrap();
        mem.write_slice(b"y", GuestAddress(7 * PAGE + 100)).unwrap();
        let region = mem.iter().next().unwrap();
        let untouched = untouched_pages(host_slice(region).unwrap()).unwrap();
        let touched: Vec<usize> = (0..16).filter(|&p| !untouched[p]).collect();
        assert_eq!(touched, [3, 7]);

        // A sparse file: data in pages 2 and 9-10 only.
        let (path, file) = scratch_file("holes");
        file.set_len(16 * PAGE).unwrap();
        file.write_all_at(b"a", 2 * PAGE).unwrap();
        file.write_all_at(&[1u8; 5000], 9 * PAGE).unwrap();
        let holes = hole_pages(&file, 0, 16);
        let data: Vec<usize> = (0..16).filter(|&p| !holes[p]).collect();
        // File systems allocate in blocks of at least a page: exactly these pages, or (with
        // larger blocks) a superset.
        for p in [2, 9, 10] {
            assert!(data.contains(&p), "page {p} holds data: {data:?}");
        }
        assert!(data.len() < 16, "no holes found at all: {data:?}");
        // From an offset: pages counted from there.
        let holes = hole_pages(&file, 8 * PAGE, 8);
        assert!(!holes[1] && !holes[2]);
        drop(file);
        std::fs::remove_file(&path).unwrap();
    }

    /// A restored VM (memory mapped from its state file) saved again: pages it changed, in
    /// the file's data and in its holes, are saved; its untouched holes stay holes.
    #[test]
    fn a_mapped_restore_saves_its_changes_and_keeps_holes() {
        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 * PAGE as usize)]).unwrap();
        mem.write_slice(b"one", GuestAddress(PAGE)).unwrap();
        let (p1, f1) = scratch_file("mapped1");
        let (entries, len, _) = write_memory(&f1, &mem, 0, &mut |_| {}).unwrap();
        f1.set_len(len).unwrap();
        let back = map_memory(&f1, &entries).unwrap();
        back.write_slice(b"two", GuestAddress(PAGE + 8)).unwrap(); // in the file's data
        back.write_slice(b"three", GuestAddress(40 * PAGE)).unwrap(); // in a hole
        let (p2, f2) = scratch_file("mapped2");
        let (entries2, len2, crc2) = write_memory(&f2, &back, 0, &mut |_| {}).unwrap();
        f2.set_len(len2).unwrap();
        let (again, c) = copy_memory(&f2, &entries2).unwrap();
        assert_eq!(c, crc2);
        let mut b = [0u8; 11];
        again.read_slice(&mut b, GuestAddress(PAGE)).unwrap();
        assert_eq!(&b, b"one\0\0\0\0\0two");
        let mut b = [0u8; 5];
        again.read_slice(&mut b, GuestAddress(40 * PAGE)).unwrap();
        assert_eq!(&b, b"three");
        let holes = hole_pages(&f2, 0, 64);
        assert!(
            holes.iter().filter(|&&h| h).count() >= 32,
            "the copy lost its holes"
        );
        for p in [p1, p2] {
            std::fs::remove_file(p).unwrap();
        }
    }

    #[test]
    fn bad_region_tables_are_refused() {
        let ok = [MemoryRegionEntry {
            guest_addr: 0,
            size: 0x2000,
            file_offset: 0x1000,
        }];
        check_regions(&ok, 0x1000, 0x2000, &[(0, 0x2000)]).unwrap();
        assert!(check_regions(&ok, 0x1000, 0x1000, &[(0, 0x2000)]).is_err());
        assert!(check_regions(&ok, 0x1000, 0x2000, &[(0, 0x3000)]).is_err());
        let unaligned = [MemoryRegionEntry {
            file_offset: 0x1001,
            ..ok[0]
        }];
        assert!(check_regions(&unaligned, 0x1000, 0x3000, &[(0, 0x2000)]).is_err());
        let overflow = [MemoryRegionEntry {
            file_offset: !0xfff,
            ..ok[0]
        }];
        assert!(check_regions(&overflow, 0x1000, 0x2000, &[(0, 0x2000)]).is_err());
    }
}
