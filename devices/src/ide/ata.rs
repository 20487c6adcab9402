//! The ATA command set of a disk (ATA/ATAPI-6 section 8): IDENTIFY DEVICE, PIO and DMA reads and
//! writes (28- and 48-bit, single and multiple), READ VERIFY, FLUSH CACHE, SET FEATURES, SET
//! MULTIPLE MODE, INITIALIZE DEVICE PARAMETERS, SEEK/RECALIBRATE and power management.
//!
//! Error reporting follows ATA-6 and what libata turns into an I/O error:
//! - a range past the end of the disk (or past what 28-bit/CHS addressing reaches): ERR with
//!   IDNF, the first missing sector in the address registers;
//! - a backend read error: ERR with UNC, the failing sector (found by re-reading the chunk
//!   sector by sector) in the address registers;
//! - a write to a read-only disk: ERR with ABRT before any data moves (libata reports "ABORTED
//!   COMMAND", an I/O error for the block layer); a backend write or flush error: ERR with ABRT;
//! - unsupported commands and SET FEATURES subcommands: ERR with ABRT; NOP always aborts
//!   (ATA-6 8.19).
//!
//! With the write cache disabled (SET FEATURES 82h) every write is flushed before it completes.

use super::bmdma::{PrdCursor, PrdError};
use super::channel::{Addressing, AtaDisk, DeviceSettings, IdeChannel, IdeTransfer, PowerMode};
use super::{spec, Chs, DriveIdentity};
use crate::bus::warn_limited;

const SECTOR: usize = spec::SECTOR_SIZE;

/// Writes `s` into IDENTIFY words as an ATA string: space padded, two characters per word with
/// the first in the high byte.
fn put_string(words: &mut [u16], s: &str) {
    let mut bytes = vec![b' '; words.len() * 2];
    for (b, c) in bytes.iter_mut().zip(s.bytes()) {
        *b = if c.is_ascii_graphic() || c == b' ' {
            c
        } else {
            b'?'
        };
    }
    for (w, pair) in words.iter_mut().zip(bytes.chunks(2)) {
        *w = u16::from_be_bytes([pair[0], pair[1]]);
    }
}

fn put_identity(id: &mut [u16; 256], identity: &DriveIdentity) {
    put_string(&mut id[10..20], &identity.serial);
    put_string(&mut id[23..27], &identity.firmware);
    put_string(&mut id[27..47], &identity.model);
}

/// Word 255: signature A5h and a checksum byte making the 512 bytes sum to 0 (ATA-6 8.15.61).
fn put_checksum(id: &mut [u16; 256]) {
    id[255] = 0x00a5;
    let sum = id
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .fold(0u8, |a, b| a.wrapping_add(b));
    id[255] |= u16::from(sum.wrapping_neg()) << 8;
}

/// Words 63 and 88: supported multiword/Ultra DMA modes and the selected one.
fn put_dma_modes(id: &mut [u16; 256], settings: &DeviceSettings) {
    id[63] = 0x0007;
    id[88] = 0x003f;
    let mode = settings.dma_mode;
    if mode & 0xf8 == spec::XFER_MWDMA {
        id[63] |= 0x100 << (mode & 7);
    } else if mode & 0xf8 == spec::XFER_UDMA {
        id[88] |= 0x100 << (mode & 7);
    }
}

/// Word 93, hardware reset results (ATA-6 8.15.50): set by jumper, diagnostics passed; device 0
/// also reports whether device 1 answered.
fn reset_results(device: usize, other_present: bool) -> u16 {
    if device == 0 {
        let mut w = 0x4000 | 0x0001 | (1 << 1) | (1 << 3);
        if other_present {
            w |= (1 << 4) | (1 << 5);
        } else {
            w |= 1 << 6;
        }
        w
    } else {
        0x4000 | 0x0100 | (1 << 9) | (1 << 11)
    }
}

/// IDENTIFY DEVICE data of a disk.
pub(super) fn identify_device(
    disk: &AtaDisk,
    settings: &DeviceSettings,
    device: usize,
    other_present: bool,
) -> [u16; 256] {
    let mut id = [0u16; 256];
    let g = disk.default_geometry;
    // Fixed, non-removable ATA device.
    id[0] = 0x0040;
    id[1] = g.cylinders;
    // Specific configuration: IDENTIFY complete, no SET FEATURES needed to spin up.
    id[2] = 0xc837;
    id[3] = u16::from(g.heads);
    id[6] = u16::from(g.sectors);
    put_identity(&mut id, &disk.identity);
    id[47] = 0x8000 | u16::from(spec::MAX_MULTIPLE);
    // Capabilities: DMA, LBA, IORDY may be disabled, IORDY supported.
    id[49] = 0x0f00;
    id[50] = 0x4000;
    // Obsolete PIO timing mode fields: mode 2.
    id[51] = 0x0200;
    id[52] = 0x0200;
    // Words 54-58, 64-70 and 88 are valid.
    id[53] = 0x0007;
    let cur = settings.geometry;
    if cur.is_valid() {
        let cylinders = (disk.sectors.min(spec::CHS_LIMIT)
            / (u64::from(cur.heads) * u64::from(cur.sectors)))
        .min(0xffff) as u16;
        let cur = Chs { cylinders, ..cur };
        id[54] = cur.cylinders;
        id[55] = u16::from(cur.heads);
        id[56] = u16::from(cur.sectors);
        let cap = cur.capacity() as u32;
        id[57] = cap as u16;
        id[58] = (cap >> 16) as u16;
    } else {
        id[53] &= !1;
    }
    id[59] = u16::from(settings.multiple);
    if settings.multiple != 0 {
        id[59] |= 0x0100;
    }
    let lba28 = disk.sectors.min(spec::LBA28_LIMIT) as u32;
    id[60] = lba28 as u16;
    id[61] = (lba28 >> 16) as u16;
    put_dma_modes(&mut id, settings);
    // PIO modes 3 and 4; 120 ns cycle times.
    id[64] = 0x0003;
    id[65] = 120;
    id[66] = 120;
    id[67] = 120;
    id[68] = 120;
    // ATA-1 to ATA/ATAPI-6.
    id[80] = 0x007e;
    // Supported: NOP, look-ahead, write cache, power management; FLUSH CACHE (EXT), 48-bit.
    id[82] = (1 << 14) | (1 << 6) | (1 << 5) | (1 << 3);
    id[83] = 0x4000 | (1 << 13) | (1 << 12) | (1 << 10);
    id[84] = 0x4000;
    id[85] = (1 << 14) | (1 << 3);
    if settings.look_ahead {
        id[85] |= 1 << 6;
    }
    if settings.write_cache {
        id[85] |= 1 << 5;
    }
    id[86] = (1 << 13) | (1 << 12) | (1 << 10);
    id[87] = 0x4000;
    // A 40-conductor cable, as on PIIX4 boards (UDMA/33).
    id[93] = reset_results(device, other_present);
    let lba48 = disk.sectors.min(spec::LBA48_LIMIT - 1);
    for i in 0..4 {
        id[100 + i] = (lba48 >> (16 * i)) as u16;
    }
    put_checksum(&mut id);
    id
}

/// IDENTIFY PACKET DEVICE data of an ATAPI CD/DVD drive.
pub(super) fn identify_packet_device(
    identity: &DriveIdentity,
    settings: &DeviceSettings,
    device: usize,
    other_present: bool,
) -> [u16; 256] {
    let mut id = [0u16; 256];
    // ATAPI, CD-ROM device type (05h), removable, 50 us DRQ after PACKET, 12-byte packets.
    id[0] = 0x8000 | (0x05 << 8) | 0x0080 | 0x0040;
    put_identity(&mut id, identity);
    id[49] = 0x0f00;
    id[50] = 0x4000;
    id[53] = 0x0006;
    put_dma_modes(&mut id, settings);
    id[64] = 0x0003;
    id[65] = 120;
    id[66] = 120;
    id[67] = 120;
    id[68] = 120;
    id[80] = 0x007e;
    // NOP, DEVICE RESET, PACKET, power management.
    id[82] = (1 << 14) | (1 << 9) | (1 << 4) | (1 << 3);
    id[83] = 0x4000;
    id[84] = 0x4000;
    id[85] = id[82];
    id[87] = 0x4000;
    id[93] = reset_results(device, other_present);
    put_checksum(&mut id);
    id
}

fn words_to_bytes(id: &[u16; 256]) -> Vec<u8> {
    id.iter().flat_map(|w| w.to_le_bytes()).collect()
}

pub(super) fn identify_bytes(id: &[u16; 256]) -> Vec<u8> {
    words_to_bytes(id)
}

/// Why a media access failed, for the task file.
struct MediaError {
    sector: u64,
    error: u8,
}

/// How a DMA command stopped early.
enum DmaFailure {
    Bus(PrdError),
    Media(MediaError),
}

/// Reads whole sectors; on failure re-reads one sector at a time to find the first bad one.
fn read_sectors(channel: usize, disk: &AtaDisk, lba: u64, buf: &mut [u8]) -> Result<(), u64> {
    let Err(e) = disk.backend.read(lba, buf) else {
        return Ok(());
    };
    warn_limited!(
        "IDE{channel}: disk read of {} sectors at {lba} failed: {e}",
        buf.len() / SECTOR
    );
    for (i, s) in buf.chunks_mut(SECTOR).enumerate() {
        if disk.backend.read(lba + i as u64, s).is_err() {
            return Err(lba + i as u64);
        }
    }
    Ok(())
}

fn write_sectors(
    channel: usize,
    disk: &AtaDisk,
    lba: u64,
    buf: &[u8],
    write_cache: bool,
) -> Result<(), u64> {
    if let Err(e) = disk.backend.write(lba, buf) {
        warn_limited!(
            "IDE{channel}: disk write of {} sectors at {lba} failed: {e}",
            buf.len() / SECTOR
        );
        return Err(lba);
    }
    if !write_cache {
        if let Err(e) = disk.backend.flush() {
            warn_limited!("IDE{channel}: disk flush (write cache disabled) failed: {e}");
            return Err(lba);
        }
    }
    Ok(())
}

impl IdeChannel {
    fn disk(&self, d: usize) -> &AtaDisk {
        self.devices[d]
            .disk()
            .expect("ATA commands run on disks only")
    }

    /// Decodes the address and count of a media access command.
    fn ata_request(&self, d: usize, ext: bool) -> Result<(u64, u32, Addressing), u64> {
        let tf = &self.devices[d].tf;
        if ext {
            let lba = u64::from_le_bytes([
                tf.lba_low,
                tf.lba_mid,
                tf.lba_high,
                tf.hob_lba_low,
                tf.hob_lba_mid,
                tf.hob_lba_high,
                0,
                0,
            ]);
            let count = match u16::from_le_bytes([tf.sector_count, tf.hob_sector_count]) {
                0 => 0x1_0000,
                n => u32::from(n),
            };
            return Ok((lba, count, Addressing::Lba48));
        }
        let count = match tf.sector_count {
            0 => 256,
            n => u32::from(n),
        };
        if tf.device & spec::DEVICE_LBA != 0 {
            let lba = u64::from_le_bytes([
                tf.lba_low,
                tf.lba_mid,
                tf.lba_high,
                tf.device & spec::DEVICE_HEAD_MASK,
                0,
                0,
                0,
                0,
            ]);
            return Ok((lba, count, Addressing::Lba28));
        }
        let g = self.devices[d].settings.geometry;
        let cylinder = u64::from(u16::from_le_bytes([tf.lba_mid, tf.lba_high]));
        let head = tf.device & spec::DEVICE_HEAD_MASK;
        let sector = tf.lba_low;
        if !g.is_valid() || head >= g.heads || sector == 0 || sector > g.sectors {
            // No such sector in the current translation; the registers stay as written.
            return Err(u64::MAX);
        }
        let lba = (cylinder * u64::from(g.heads) + u64::from(head)) * u64::from(g.sectors)
            + u64::from(sector - 1);
        Ok((lba, count, Addressing::Chs))
    }

    /// Checks `[lba, lba + count)` against what the addressing mode can reach on this disk;
    /// the error is the first sector out of range.
    fn ata_check_range(
        &self,
        d: usize,
        lba: u64,
        count: u32,
        addressing: Addressing,
    ) -> Result<(), u64> {
        let sectors = self.disk(d).sectors;
        let limit = match addressing {
            Addressing::Lba48 => sectors,
            Addressing::Lba28 => sectors.min(spec::LBA28_LIMIT),
            Addressing::Chs => sectors.min(spec::CHS_LIMIT),
        };
        if lba.saturating_add(u64::from(count)) <= limit {
            Ok(())
        } else {
            Err(lba.max(limit))
        }
    }

    /// Writes a sector address back into the task file in the command's addressing mode.
    fn set_position(&mut self, d: usize, lba: u64, addressing: Addressing) {
        let g = self.devices[d].settings.geometry;
        let tf = &mut self.devices[d].tf;
        match addressing {
            Addressing::Lba48 => {
                let b = lba.to_le_bytes();
                tf.lba_low = b[0];
                tf.lba_mid = b[1];
                tf.lba_high = b[2];
                tf.hob_lba_low = b[3];
                tf.hob_lba_mid = b[4];
                tf.hob_lba_high = b[5];
            }
            Addressing::Lba28 => {
                let b = lba.to_le_bytes();
                tf.lba_low = b[0];
                tf.lba_mid = b[1];
                tf.lba_high = b[2];
                tf.device = (tf.device & !spec::DEVICE_HEAD_MASK) | (b[3] & spec::DEVICE_HEAD_MASK);
            }
            Addressing::Chs if g.is_valid() => {
                let spt = u64::from(g.sectors);
                let heads = u64::from(g.heads);
                let cylinder = (lba / (spt * heads)).min(0xffff) as u16;
                [tf.lba_mid, tf.lba_high] = cylinder.to_le_bytes();
                tf.device = (tf.device & !spec::DEVICE_HEAD_MASK) | ((lba / spt) % heads) as u8;
                tf.lba_low = (lba % spt) as u8 + 1;
            }
            Addressing::Chs => {}
        }
    }

    fn set_remaining(&mut self, d: usize, remaining: u32, addressing: Addressing) {
        let tf = &mut self.devices[d].tf;
        tf.sector_count = remaining as u8;
        if addressing == Addressing::Lba48 {
            tf.hob_sector_count = (remaining >> 8) as u8;
        }
    }

    fn media_error(&mut self, d: usize, e: MediaError, addressing: Addressing) {
        if e.sector != u64::MAX {
            self.set_position(d, e.sector, addressing);
        }
        self.fail(d, e.error);
    }

    /// Decodes and range-checks a media access; on failure the command has been failed.
    fn ata_media_request(&mut self, d: usize, ext: bool) -> Option<(u64, u32, Addressing)> {
        let req = self.ata_request(d, ext);
        let (lba, count, addressing) = match req {
            Ok(r) => r,
            Err(_) => {
                self.fail(d, spec::ERROR_IDNF);
                return None;
            }
        };
        if let Err(first) = self.ata_check_range(d, lba, count, addressing) {
            self.media_error(
                d,
                MediaError {
                    sector: first,
                    error: spec::ERROR_IDNF,
                },
                addressing,
            );
            return None;
        }
        self.devices[d].settings.power = PowerMode::Active;
        Some((lba, count, addressing))
    }

    pub(super) fn ata_command(&mut self, d: usize, cmd: u8) {
        use spec::*;
        match cmd {
            CMD_READ_SECTORS | CMD_READ_SECTORS_NO_RETRY | CMD_READ_SECTORS_EXT => {
                self.ata_read_pio(d, cmd == CMD_READ_SECTORS_EXT, 1)
            }
            CMD_READ_MULTIPLE | CMD_READ_MULTIPLE_EXT => match self.devices[d].settings.multiple {
                0 => self.fail(d, ERROR_ABRT),
                m => self.ata_read_pio(d, cmd == CMD_READ_MULTIPLE_EXT, u32::from(m)),
            },
            CMD_WRITE_SECTORS | CMD_WRITE_SECTORS_NO_RETRY | CMD_WRITE_SECTORS_EXT => {
                self.ata_write_pio(d, cmd == CMD_WRITE_SECTORS_EXT, 1)
            }
            CMD_WRITE_MULTIPLE | CMD_WRITE_MULTIPLE_EXT => {
                match self.devices[d].settings.multiple {
                    0 => self.fail(d, ERROR_ABRT),
                    m => self.ata_write_pio(d, cmd == CMD_WRITE_MULTIPLE_EXT, u32::from(m)),
                }
            }
            CMD_READ_DMA | CMD_READ_DMA_NO_RETRY | CMD_READ_DMA_EXT => {
                self.ata_dma(d, cmd == CMD_READ_DMA_EXT, false)
            }
            CMD_WRITE_DMA | CMD_WRITE_DMA_NO_RETRY | CMD_WRITE_DMA_EXT => {
                self.ata_dma(d, cmd == CMD_WRITE_DMA_EXT, true)
            }
            CMD_READ_VERIFY | CMD_READ_VERIFY_NO_RETRY | CMD_READ_VERIFY_EXT => {
                self.ata_verify(d, cmd == CMD_READ_VERIFY_EXT)
            }
            CMD_FLUSH_CACHE | CMD_FLUSH_CACHE_EXT => self.ata_flush(d),
            CMD_IDENTIFY_DEVICE => {
                let other = self.devices[1 - d].drive.is_some();
                let dev = &self.devices[d];
                let id = identify_device(self.disk(d), &dev.settings, d, other);
                self.start_pio(d, IdeTransfer::PioInLast, words_to_bytes(&id), true);
            }
            CMD_SET_FEATURES => self.set_features(d, false),
            CMD_SET_MULTIPLE_MODE => {
                let n = self.devices[d].tf.sector_count;
                if n <= MAX_MULTIPLE && n.is_power_of_two() || n == 0 {
                    self.devices[d].settings.multiple = n;
                    self.complete(d);
                } else {
                    self.fail(d, ERROR_ABRT);
                }
            }
            CMD_INITIALIZE_DEVICE_PARAMETERS => {
                let tf = self.devices[d].tf;
                let heads = (tf.device & DEVICE_HEAD_MASK) + 1;
                let sectors = tf.sector_count;
                if sectors == 0 || sectors > 63 {
                    self.fail(d, ERROR_ABRT);
                    return;
                }
                let total = self.disk(d).sectors.min(CHS_LIMIT);
                let cylinders = (total / (u64::from(heads) * u64::from(sectors))).min(0xffff);
                self.devices[d].settings.geometry = Chs {
                    cylinders: cylinders.max(1) as u16,
                    heads,
                    sectors,
                };
                self.complete(d);
            }
            c if c & 0xf0 == CMD_RECALIBRATE => self.complete(d),
            c if c & 0xf0 == CMD_SEEK => {
                // SEEK checks the address like a one-sector access.
                if self.ata_media_request_single(d).is_some() {
                    self.complete(d);
                }
            }
            _ => self.power_command(d, cmd),
        }
    }

    fn ata_media_request_single(&mut self, d: usize) -> Option<()> {
        let saved = self.devices[d].tf.sector_count;
        self.devices[d].tf.sector_count = 1;
        let r = self.ata_media_request(d, false);
        self.devices[d].tf.sector_count = saved;
        r.map(|_| ())
    }

    /// Power management, CHECK POWER MODE, and the ABRT for everything unknown (shared by ATA
    /// and ATAPI devices).
    pub(super) fn power_command(&mut self, d: usize, cmd: u8) {
        use spec::*;
        let power = match cmd {
            CMD_CHECK_POWER_MODE | CMD_CHECK_POWER_MODE_OLD => {
                self.devices[d].tf.sector_count = match self.devices[d].settings.power {
                    PowerMode::Active => POWER_ACTIVE,
                    PowerMode::Idle => POWER_IDLE,
                    PowerMode::Standby | PowerMode::Sleep => POWER_STANDBY,
                };
                None
            }
            CMD_IDLE_IMMEDIATE | CMD_IDLE_IMMEDIATE_OLD | CMD_IDLE | CMD_IDLE_OLD => {
                Some(PowerMode::Idle)
            }
            CMD_STANDBY_IMMEDIATE | CMD_STANDBY_IMMEDIATE_OLD | CMD_STANDBY | CMD_STANDBY_OLD => {
                Some(PowerMode::Standby)
            }
            CMD_SLEEP | CMD_SLEEP_OLD => Some(PowerMode::Sleep),
            // IDENTIFY PACKET DEVICE is how firmware and drivers tell an ATAPI device from a
            // disk: a disk aborts it, as the ATA standard requires, and that is no news.
            CMD_IDENTIFY_PACKET_DEVICE => {
                self.fail(d, ERROR_ABRT);
                return;
            }
            _ => {
                if cmd != CMD_NOP {
                    warn_limited!(
                        "IDE{}:{d}: unsupported command {cmd:#04x} aborted",
                        self.index
                    );
                }
                self.fail(d, ERROR_ABRT);
                return;
            }
        };
        if let Some(p) = power {
            self.devices[d].settings.power = p;
        }
        self.complete(d);
    }

    /// SET FEATURES. ATAPI devices accept only the transfer mode.
    pub(super) fn set_features(&mut self, d: usize, atapi: bool) {
        use spec::*;
        let tf = self.devices[d].tf;
        let s = &mut self.devices[d].settings;
        let ok = match tf.feature {
            FEATURE_SET_TRANSFER_MODE => {
                let v = tf.sector_count;
                let mode = v & 7;
                match v & 0xf8 {
                    0 if v <= XFER_PIO_DEFAULT_NO_IORDY => {
                        s.pio_mode = 0;
                        true
                    }
                    XFER_PIO if mode <= MAX_PIO_MODE => {
                        s.pio_mode = mode;
                        true
                    }
                    XFER_MWDMA if mode <= MAX_MWDMA_MODE => {
                        s.dma_mode = v;
                        true
                    }
                    XFER_UDMA if mode <= MAX_UDMA_MODE => {
                        s.dma_mode = v;
                        true
                    }
                    _ => false,
                }
            }
            _ if atapi => false,
            FEATURE_ENABLE_WRITE_CACHE => {
                s.write_cache = true;
                true
            }
            FEATURE_DISABLE_WRITE_CACHE => {
                s.write_cache = false;
                true
            }
            FEATURE_ENABLE_LOOK_AHEAD => {
                s.look_ahead = true;
                true
            }
            FEATURE_DISABLE_LOOK_AHEAD => {
                s.look_ahead = false;
                true
            }
            FEATURE_DISABLE_REVERT => {
                s.revert_on_reset = false;
                true
            }
            FEATURE_ENABLE_REVERT => {
                s.revert_on_reset = true;
                true
            }
            _ => false,
        };
        if ok {
            self.complete(d);
        } else {
            warn_limited!(
                "IDE{}:{d}: SET FEATURES {:#04x} (count {:#04x}) not supported",
                self.index,
                tf.feature,
                tf.sector_count
            );
            self.fail(d, ERROR_ABRT);
        }
    }

    // ---- PIO -------------------------------------------------------------------------------------

    fn ata_read_pio(&mut self, d: usize, ext: bool, block: u32) {
        let Some((lba, count, addressing)) = self.ata_media_request(d, ext) else {
            return;
        };
        self.devices[d].xfer = IdeTransfer::AtaReadPio {
            next_lba: lba,
            remaining: count,
            block,
            addressing,
        };
        self.ata_read_pio_next(d);
    }

    /// Loads the next DRQ block of a PIO read, or ends the command after the last one (no
    /// interrupt then: ATA-6 9.7 PIO data-in).
    pub(super) fn ata_read_pio_next(&mut self, d: usize) {
        let IdeTransfer::AtaReadPio {
            next_lba,
            remaining,
            block,
            addressing,
        } = self.devices[d].xfer
        else {
            return;
        };
        if remaining == 0 {
            let dev = &mut self.devices[d];
            dev.xfer = IdeTransfer::Idle;
            dev.buf.clear();
            dev.pos = 0;
            dev.tf.status = spec::STATUS_DRDY | spec::STATUS_DSC;
            return;
        }
        let n = block.min(remaining);
        let mut buf = std::mem::take(&mut self.devices[d].buf);
        buf.resize(n as usize * SECTOR, 0);
        if let Err(bad) = read_sectors(self.index, self.disk(d), next_lba, &mut buf) {
            self.set_remaining(d, remaining - (bad - next_lba) as u32, addressing);
            self.media_error(
                d,
                MediaError {
                    sector: bad,
                    error: spec::ERROR_UNC,
                },
                addressing,
            );
            return;
        }
        self.set_position(d, next_lba + u64::from(n) - 1, addressing);
        self.set_remaining(d, remaining - n, addressing);
        let xfer = IdeTransfer::AtaReadPio {
            next_lba: next_lba + u64::from(n),
            remaining: remaining - n,
            block,
            addressing,
        };
        self.start_pio(d, xfer, buf, true);
    }

    fn ata_write_pio(&mut self, d: usize, ext: bool, block: u32) {
        if self.disk(d).read_only {
            warn_limited!("IDE{}:{d}: write to a read-only disk refused", self.index);
            self.fail(d, spec::ERROR_ABRT);
            return;
        }
        let Some((lba, count, addressing)) = self.ata_media_request(d, ext) else {
            return;
        };
        let n = block.min(count);
        let xfer = IdeTransfer::AtaWritePio {
            lba,
            remaining: count,
            block,
            addressing,
        };
        // The first block is requested without an interrupt (ATA-6 9.8 PIO data-out).
        self.start_pio(d, xfer, vec![0; n as usize * SECTOR], false);
    }

    /// The host has filled a block of a PIO write: store it, then ask for the next block or
    /// end the command, interrupting either way.
    pub(super) fn ata_write_pio_block(&mut self, d: usize) {
        let IdeTransfer::AtaWritePio {
            lba,
            remaining,
            block,
            addressing,
        } = self.devices[d].xfer
        else {
            return;
        };
        let buf = std::mem::take(&mut self.devices[d].buf);
        let n = (buf.len() / SECTOR) as u32;
        let write_cache = self.devices[d].settings.write_cache;
        if let Err(bad) = write_sectors(self.index, self.disk(d), lba, &buf, write_cache) {
            self.set_remaining(d, remaining, addressing);
            self.media_error(
                d,
                MediaError {
                    sector: bad,
                    error: spec::ERROR_ABRT,
                },
                addressing,
            );
            return;
        }
        let remaining = remaining - n;
        self.set_position(d, lba + u64::from(n) - 1, addressing);
        self.set_remaining(d, remaining, addressing);
        if remaining == 0 {
            self.complete(d);
            return;
        }
        let next = block.min(remaining);
        let mut buf = buf;
        buf.clear();
        buf.resize(next as usize * SECTOR, 0);
        let xfer = IdeTransfer::AtaWritePio {
            lba: lba + u64::from(n),
            remaining,
            block,
            addressing,
        };
        self.start_pio(d, xfer, buf, true);
    }

    // ---- Verify and flush ------------------------------------------------------------------------

    fn ata_verify(&mut self, d: usize, ext: bool) {
        let Some((lba, count, addressing)) = self.ata_media_request(d, ext) else {
            return;
        };
        let chunk = count.min(spec::CHUNK_SECTORS);
        let mut buf = vec![0u8; chunk as usize * SECTOR];
        let mut cur = lba;
        let end = lba + u64::from(count);
        while cur < end {
            let n = (end - cur).min(u64::from(chunk)) as usize;
            if let Err(bad) = read_sectors(self.index, self.disk(d), cur, &mut buf[..n * SECTOR]) {
                self.set_remaining(d, (end - bad) as u32, addressing);
                self.media_error(
                    d,
                    MediaError {
                        sector: bad,
                        error: spec::ERROR_UNC,
                    },
                    addressing,
                );
                return;
            }
            cur += n as u64;
        }
        self.set_position(d, end - 1, addressing);
        self.set_remaining(d, 0, addressing);
        self.complete(d);
    }

    fn ata_flush(&mut self, d: usize) {
        match self.disk(d).backend.flush() {
            Ok(()) => self.complete(d),
            Err(e) => {
                warn_limited!("IDE{}:{d}: FLUSH CACHE failed: {e}", self.index);
                self.fail(d, spec::ERROR_ABRT);
            }
        }
    }

    // ---- DMA -------------------------------------------------------------------------------------

    fn ata_dma(&mut self, d: usize, ext: bool, write: bool) {
        if write && self.disk(d).read_only {
            warn_limited!(
                "IDE{}:{d}: DMA write to a read-only disk refused",
                self.index
            );
            self.fail(d, spec::ERROR_ABRT);
            return;
        }
        let Some((lba, count, addressing)) = self.ata_media_request(d, ext) else {
            return;
        };
        let dev = &mut self.devices[d];
        dev.xfer = IdeTransfer::AtaDma {
            write,
            lba,
            count,
            addressing,
        };
        // DRQ while the device waits for the bus master (ATA-6 9.10 DMA protocol).
        dev.tf.status = spec::STATUS_DRDY | spec::STATUS_DSC | spec::STATUS_DRQ;
        self.try_dma();
    }

    /// Moves all data of a pending READ/WRITE DMA through the PRD table, chunk by chunk.
    pub(super) fn run_ata_dma(&mut self, d: usize) {
        let IdeTransfer::AtaDma {
            write,
            lba,
            count,
            addressing,
        } = self.devices[d].xfer
        else {
            return;
        };
        if self.bm.writes_memory() == write {
            warn_limited!(
                "IDE{}:{d}: BMIC direction does not match the DMA command; aborted",
                self.index
            );
            self.end_dma(true, false);
            self.set_position(d, lba, addressing);
            self.fail(d, spec::ERROR_ABRT);
            return;
        }
        let write_cache = self.devices[d].settings.write_cache;
        let mut cursor = PrdCursor::new(self.bm.prd_table);
        let mem = self.mem.clone();
        let end = lba + u64::from(count);
        let mut buf = vec![0u8; count.min(spec::CHUNK_SECTORS) as usize * SECTOR];
        let mut cur = lba;
        let mut result = Ok(());
        while cur < end {
            let n = (end - cur).min(u64::from(spec::CHUNK_SECTORS)) as usize;
            let chunk = &mut buf[..n * SECTOR];
            let disk = self.disk(d);
            result = if write {
                match cursor.read(mem.as_ref(), chunk) {
                    Err(e) => Err(DmaFailure::Bus(e)),
                    Ok(()) => {
                        write_sectors(self.index, disk, cur, chunk, write_cache).map_err(|sector| {
                            DmaFailure::Media(MediaError {
                                sector,
                                error: spec::ERROR_ABRT,
                            })
                        })
                    }
                }
            } else {
                match read_sectors(self.index, disk, cur, chunk) {
                    Err(sector) => Err(DmaFailure::Media(MediaError {
                        sector,
                        error: spec::ERROR_UNC,
                    })),
                    Ok(()) => cursor.write(mem.as_ref(), chunk).map_err(DmaFailure::Bus),
                }
            };
            if result.is_err() {
                break;
            }
            cur += n as u64;
        }
        match result {
            Ok(()) => {
                self.end_dma(false, cursor.exhausted());
                self.set_position(d, end - 1, addressing);
                self.set_remaining(d, 0, addressing);
                self.complete(d);
            }
            Err(DmaFailure::Bus(e)) => {
                warn_limited!("IDE{}:{d}: bus-master DMA failed: {e}", self.index);
                self.end_dma(true, false);
                self.set_position(d, cur, addressing);
                self.set_remaining(d, (end - cur) as u32, addressing);
                self.fail(d, spec::ERROR_ABRT);
            }
            Err(DmaFailure::Media(e)) => {
                // The drive stops early; the engine stays active with its table unfinished.
                self.end_dma(false, false);
                self.set_remaining(d, (end - e.sector) as u32, addressing);
                self.media_error(d, e, addressing);
            }
        }
    }
}
