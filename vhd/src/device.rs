//! The block-device interface the disk controllers use, over VHD files and raw images.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::disk::{OpenOptions, VhdDisk};
use crate::error::{Error, Result};
use crate::io::{self, LockMode, Storage};
use crate::spec::{FOOTER_COOKIE, SECTOR_SIZE};

const SECTOR: usize = SECTOR_SIZE as usize;

/// A disk of 512-byte sectors, as an IDE or SCSI controller sees it.
///
/// Sector methods take whole sectors (`buf.len()` a multiple of 512) and fail with
/// [`Error::OutOfRange`] outside the disk. All methods take `&self` so that a device can be
/// shared between threads (`Arc<dyn BlockDevice>`).
pub trait BlockDevice: Send + Sync {
    /// Size in sectors.
    fn sectors(&self) -> u64;
    /// True if writes are refused.
    fn read_only(&self) -> bool;
    /// Reads sectors starting at `sector`.
    fn read(&self, sector: u64, buf: &mut [u8]) -> Result<()>;
    /// Writes sectors starting at `sector`; durable after the next [`BlockDevice::flush`].
    fn write(&self, sector: u64, buf: &[u8]) -> Result<()>;
    /// Makes every completed write durable.
    fn flush(&self) -> Result<()>;

    /// False if the sectors certainly read as zeros (copies skip them unread).
    fn may_have_data(&self, _sector: u64, _count: u64) -> bool {
        true
    }

    /// Size in bytes.
    fn size(&self) -> u64 {
        self.sectors() * SECTOR_SIZE
    }

    /// Reads bytes at any byte offset (partial sectors are read whole and cut).
    fn read_bytes(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let first = offset / SECTOR_SIZE;
        let head = (offset % SECTOR_SIZE) as usize;
        if head == 0 && buf.len() % SECTOR == 0 {
            return self.read(first, buf);
        }
        let total = (head + buf.len()).div_ceil(SECTOR);
        let mut tmp = vec![0u8; total * SECTOR];
        self.read(first, &mut tmp)?;
        buf.copy_from_slice(&tmp[head..head + buf.len()]);
        Ok(())
    }

    /// Writes bytes at any byte offset (partial sectors are read, patched and written).
    fn write_bytes(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let first = offset / SECTOR_SIZE;
        let head = (offset % SECTOR_SIZE) as usize;
        if head == 0 && buf.len() % SECTOR == 0 {
            return self.write(first, buf);
        }
        let total = (head + buf.len()).div_ceil(SECTOR);
        let mut tmp = vec![0u8; total * SECTOR];
        self.read(first, &mut tmp)?;
        tmp[head..head + buf.len()].copy_from_slice(buf);
        self.write(first, &tmp)
    }
}

impl BlockDevice for VhdDisk {
    fn sectors(&self) -> u64 {
        VhdDisk::sectors(self)
    }
    fn read_only(&self) -> bool {
        VhdDisk::read_only(self)
    }
    fn read(&self, sector: u64, buf: &mut [u8]) -> Result<()> {
        VhdDisk::read(self, sector, buf)
    }
    fn write(&self, sector: u64, buf: &[u8]) -> Result<()> {
        VhdDisk::write(self, sector, buf)
    }
    fn flush(&self) -> Result<()> {
        VhdDisk::flush(self)
    }
    fn may_have_data(&self, sector: u64, count: u64) -> bool {
        VhdDisk::may_have_data(self, sector, count)
    }
}

/// A raw image: the file is the disk, sector for sector. A final partial sector (a file
/// whose length is not a multiple of 512) is not part of the disk.
#[derive(Debug)]
pub struct RawDisk {
    path: PathBuf,
    file: File,
    read_only: bool,
    sectors: u64,
    unsynced: AtomicBool,
}

impl RawDisk {
    /// Opens a raw image, locked like a VHD (shared when read-only, exclusive to write).
    pub fn open(path: impl AsRef<Path>, read_only: bool) -> Result<RawDisk> {
        let path = path.as_ref();
        let file = fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|e| Error::io(path, "opening", e))?;
        io::lock(
            &file,
            path,
            if read_only {
                LockMode::Shared
            } else {
                LockMode::Exclusive
            },
        )?;
        let len = Storage::len(&file).map_err(|e| Error::io(path, "reading the size", e))?;
        if len % SECTOR_SIZE != 0 {
            log::warn!(
                "{}: {} bytes is not a whole number of sectors; the last {} bytes are not part of the disk",
                path.display(),
                len,
                len % SECTOR_SIZE
            );
        }
        Ok(RawDisk {
            path: path.to_path_buf(),
            file,
            read_only,
            sectors: len / SECTOR_SIZE,
            unsynced: AtomicBool::new(false),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check(&self, sector: u64, len: usize) -> Result<()> {
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
}

impl BlockDevice for RawDisk {
    fn sectors(&self) -> u64 {
        self.sectors
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read(&self, sector: u64, buf: &mut [u8]) -> Result<()> {
        self.check(sector, buf.len())?;
        Storage::read_at(&self.file, buf, sector * SECTOR_SIZE)
            .map_err(|e| Error::io(&self.path, "reading", e))
    }
    fn write(&self, sector: u64, buf: &[u8]) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly {
                path: self.path.clone(),
            });
        }
        self.check(sector, buf.len())?;
        Storage::write_at(&self.file, buf, sector * SECTOR_SIZE)
            .map_err(|e| Error::io(&self.path, "writing", e))?;
        self.unsynced.store(true, Ordering::Release);
        Ok(())
    }
    fn flush(&self) -> Result<()> {
        if self.unsynced.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.file.sync_data() {
                self.unsynced.store(true, Ordering::Release);
                return Err(Error::io(&self.path, "syncing", e));
            }
        }
        Ok(())
    }
}

impl Drop for RawDisk {
    fn drop(&mut self) {
        if let Err(e) = BlockDevice::flush(self) {
            log::error!("{e}");
        }
    }
}

/// The format of a disk image file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// Decide from the contents ([`detect_format`]).
    Auto,
    /// A raw image.
    Raw,
    /// A VHD file of any type.
    Vhd,
}

/// Tells a VHD from a raw image: a VHD has the "conectix" cookie at the start of its last
/// sector or at offset 0 (a dynamic disk whose end footer was lost), or failing both, a
/// `.vhd` / `.vud` name (so that a damaged VHD is reported as such instead of being read as
/// raw data).
pub fn detect_format(path: impl AsRef<Path>) -> Result<ImageFormat> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| Error::io(path, "opening", e))?;
    let len = Storage::len(&file).map_err(|e| Error::io(path, "reading the size", e))?;
    let mut cookie = [0u8; 8];
    if len >= SECTOR_SIZE {
        for off in [len - SECTOR_SIZE, 0] {
            Storage::read_at(&file, &mut cookie, off).map_err(|e| Error::io(path, "reading", e))?;
            if cookie == FOOTER_COOKIE {
                return Ok(ImageFormat::Vhd);
            }
        }
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    Ok(match ext.as_deref() {
        Some("vhd") | Some("vud") => ImageFormat::Vhd,
        _ => ImageFormat::Raw,
    })
}

/// Opens a disk image as a block device: a VHD with its parent chain, or a raw image.
pub fn open_image(
    path: impl AsRef<Path>,
    format: ImageFormat,
    read_only: bool,
) -> Result<Box<dyn BlockDevice>> {
    let path = path.as_ref();
    let format = match format {
        ImageFormat::Auto => detect_format(path)?,
        f => f,
    };
    Ok(match format {
        ImageFormat::Raw => Box::new(RawDisk::open(path, read_only)?),
        _ => Box::new(OpenOptions::new().read_only(read_only).open(path)?),
    })
}
