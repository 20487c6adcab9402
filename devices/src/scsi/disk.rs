//! A SCSI direct-access disk (SBC-2, SPC-3) over a [`vhd::BlockDevice`] of 512-byte sectors:
//! the logical unit behind the AIC-7870 host adapter, and a test vehicle for the command layer.
//!
//! Commands: TEST UNIT READY, REQUEST SENSE, INQUIRY (VPD 0x00, 0x80, 0x83, 0xB0, 0xB1),
//! READ CAPACITY(10), READ CAPACITY(16) (SERVICE ACTION IN(16)), READ and WRITE (6/10/12/16),
//! VERIFY(10/16) (with BYTCHK: a compare), SYNCHRONIZE CACHE(10/16), MODE SENSE(6/10)
//! (pages 0x01, 0x08, 0x0A, 0x3F), MODE SELECT(6/10), START STOP UNIT, PREVENT ALLOW MEDIUM
//! REMOVAL, RESERVE(6)/RELEASE(6) (accepted; one initiator), REPORT LUNS.
//!
//! Caching: the backend's writes are durable only after a flush, which is an honest write-back
//! cache, so the caching page reports WCE=1 and SYNCHRONIZE CACHE flushes. A guest that clears
//! WCE with MODE SELECT gets write-through (a flush after every write), and FUA writes flush
//! before completing; the mode header advertises DPOFUA.
//!
//! Errors: a write to a read-only disk is DATA PROTECT, WRITE PROTECTED (07/27/00) and the mode
//! header's WP bit is set so that guests mount it read-only; ranges past the end are
//! 05/21/00; backend failures are MEDIUM ERROR: UNRECOVERED READ ERROR (03/11/00) or
//! WRITE ERROR (03/0C/00).

use std::sync::Arc;

use vhd::BlockDevice;

use super::spec::{self, op, page};
use super::{
    check_cdb, check_range, mode_select_length, mode_select_pages, mode_sense_response,
    parse_inquiry, parse_mode_sense, plan_mode_sense, plan_report_luns, plan_request_sense,
    read_error, reply, report_luns, request_sense, standard_inquiry, transfer_bytes, vpd_device_id,
    vpd_page, vpd_serial, write_error, Cdb, Conditions, Direction, Identity, InquiryCdb,
    ModeSenseCdb, Plan, ScsiTarget, Sense, MAX_TRANSFER_BYTES,
};
use crate::bus::warn_limited;

/// Logical block size.
const BLOCK: usize = 512;

/// A SCSI disk: the logical unit at LUN 0 of its target.
pub struct ScsiDisk {
    // Fixed configuration.
    disk: Arc<dyn BlockDevice>,
    identity: Identity,
    // Guest-visible state.
    cond: Conditions,
    prevent_removal: bool,
    write_cache: bool,
}

/// The guest-visible state of a [`ScsiDisk`], for snapshots. The backing disk is not part of
/// it: the VMM reattaches the same image before restoring.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScsiDiskState {
    /// Sense data of the last command.
    pub sense: Sense,
    /// A unit attention not yet reported.
    pub unit_attention: Option<Sense>,
    /// PREVENT ALLOW MEDIUM REMOVAL's prevent bit.
    pub prevent_removal: bool,
    /// The caching page's WCE bit.
    pub write_cache: bool,
}

/// A decoded command.
enum Command {
    TestUnitReady,
    RequestSense,
    Inquiry(InquiryCdb),
    ModeSense(ModeSenseCdb),
    ModeSelect {
        ten: bool,
        len: usize,
    },
    PreventAllow(bool),
    ReadCapacity10,
    ReadCapacity16 {
        alloc: usize,
    },
    Read {
        lba: u64,
        count: u64,
    },
    Write {
        lba: u64,
        count: u64,
        fua: bool,
    },
    Verify {
        lba: u64,
        count: u64,
        compare: bool,
    },
    SynchronizeCache,
    ReportLuns,
    /// Accepted without effect (START STOP UNIT, RESERVE, RELEASE).
    Nop,
}

impl ScsiDisk {
    /// A disk over `disk`, answering INQUIRY with `identity` (e.g. [`Identity::virtual_disk`]).
    /// It reports the power-on unit attention once.
    pub fn new(disk: Arc<dyn BlockDevice>, identity: Identity) -> ScsiDisk {
        ScsiDisk {
            disk,
            identity,
            cond: Conditions::power_on(),
            prevent_removal: false,
            write_cache: true,
        }
    }

    /// The backing disk.
    pub fn disk(&self) -> &Arc<dyn BlockDevice> {
        &self.disk
    }

    /// Capacity in 512-byte blocks.
    pub fn blocks(&self) -> u64 {
        self.disk.sectors()
    }

    /// A hard reset (power cycle or bus reset): mode parameters back to their defaults, the
    /// prevent bit cleared, and the power-on unit attention pending.
    pub fn reset(&mut self) {
        self.cond = Conditions::power_on();
        self.prevent_removal = false;
        self.write_cache = true;
    }

    pub fn state(&self) -> ScsiDiskState {
        ScsiDiskState {
            sense: self.cond.sense,
            unit_attention: self.cond.unit_attention,
            prevent_removal: self.prevent_removal,
            write_cache: self.write_cache,
        }
    }

    pub fn restore(&mut self, state: &ScsiDiskState) {
        self.cond = Conditions {
            sense: state.sense,
            unit_attention: state.unit_attention,
        };
        self.prevent_removal = state.prevent_removal;
        self.write_cache = state.write_cache;
    }

    /// Checks common to every command, then decodes it.
    fn prepare(&mut self, cdb: &[u8]) -> Result<(Command, Plan), Sense> {
        let cdb = check_cdb(cdb)?;
        let opcode = cdb.opcode();
        if opcode != op::REQUEST_SENSE {
            self.cond.sense = Sense::NO_SENSE;
        }
        if !matches!(opcode, op::INQUIRY | op::REQUEST_SENSE | op::REPORT_LUNS) {
            if let Some(ua) = self.cond.unit_attention.take() {
                return Err(ua);
            }
        }
        self.decode(cdb)
    }

    fn decode(&self, cdb: Cdb) -> Result<(Command, Plan), Sense> {
        let none = |c| Ok((c, Plan::NONE));
        match cdb.opcode() {
            op::TEST_UNIT_READY => none(Command::TestUnitReady),
            op::REQUEST_SENSE => Ok((Command::RequestSense, plan_request_sense(cdb))),
            op::INQUIRY => {
                let inq = parse_inquiry(cdb)?;
                let plan = Plan::new(Direction::In, inq.alloc.min(255));
                Ok((Command::Inquiry(inq), plan))
            }
            op::MODE_SENSE_6 | op::MODE_SENSE_10 => {
                let ms = parse_mode_sense(cdb)?;
                let plan = plan_mode_sense(&ms);
                Ok((Command::ModeSense(ms), plan))
            }
            op::MODE_SELECT_6 | op::MODE_SELECT_10 => {
                let len = mode_select_length(cdb);
                let ten = cdb.opcode() == op::MODE_SELECT_10;
                Ok((
                    Command::ModeSelect { ten, len },
                    Plan::new(Direction::Out, len),
                ))
            }
            op::START_STOP_UNIT | op::RESERVE_6 | op::RELEASE_6 => none(Command::Nop),
            op::PREVENT_ALLOW_MEDIUM_REMOVAL => none(Command::PreventAllow(cdb.u8(4) & 1 != 0)),
            op::READ_CAPACITY_10 => Ok((Command::ReadCapacity10, Plan::new(Direction::In, 8))),
            op::SERVICE_ACTION_IN_16 => {
                if cdb.u8(1) & 0x1f != spec::SAI_READ_CAPACITY_16 {
                    return Err(Sense::INVALID_FIELD_IN_CDB);
                }
                let alloc = cdb.be32(10) as usize;
                Ok((
                    Command::ReadCapacity16 { alloc },
                    Plan::new(Direction::In, alloc.min(32)),
                ))
            }
            op::READ_6 | op::READ_10 | op::READ_12 | op::READ_16 => {
                let (lba, count) = lba_count(cdb);
                let bytes = self.check_transfer(lba, count)?;
                Ok((
                    Command::Read { lba, count },
                    Plan::new(Direction::In, bytes),
                ))
            }
            op::WRITE_6 | op::WRITE_10 | op::WRITE_12 | op::WRITE_16 => {
                let (lba, count) = lba_count(cdb);
                let bytes = self.check_transfer(lba, count)?;
                if self.disk.read_only() {
                    return Err(Sense::WRITE_PROTECTED);
                }
                // WRITE(6) has no FUA bit.
                let fua = cdb.opcode() != op::WRITE_6 && cdb.u8(1) & 0x08 != 0;
                Ok((
                    Command::Write { lba, count, fua },
                    Plan::new(Direction::Out, bytes),
                ))
            }
            op::VERIFY_10 | op::VERIFY_16 => {
                let (lba, count) = lba_count(cdb);
                let compare = cdb.u8(1) & 0x02 != 0;
                let bytes = self.check_transfer(lba, if compare { count } else { 0 })?;
                check_range(lba, count, self.blocks())?;
                Ok((
                    Command::Verify {
                        lba,
                        count,
                        compare,
                    },
                    Plan::new(Direction::Out, bytes),
                ))
            }
            // The whole cache is written back whatever range is named.
            op::SYNCHRONIZE_CACHE_10 | op::SYNCHRONIZE_CACHE_16 => none(Command::SynchronizeCache),
            op::REPORT_LUNS => Ok((Command::ReportLuns, plan_report_luns(cdb)?)),
            other => {
                warn_limited!("scsi disk: unsupported command {other:#04x}");
                Err(Sense::INVALID_OPCODE)
            }
        }
    }

    /// The bytes of a transfer of `count` blocks at `lba`: within the limit and the disk.
    fn check_transfer(&self, lba: u64, count: u64) -> Result<usize, Sense> {
        let bytes = transfer_bytes(count, BLOCK)?;
        check_range(lba, count, self.blocks())?;
        Ok(bytes)
    }

    fn run(&mut self, cmd: Command, cdb: Cdb, data: &mut Vec<u8>) -> Result<(), Sense> {
        match cmd {
            Command::TestUnitReady | Command::Nop => {}
            Command::RequestSense => {
                let sense = self.cond.take_for_request_sense();
                request_sense(cdb, sense, data);
            }
            Command::Inquiry(inq) => {
                let response = match inq.vpd {
                    None => standard_inquiry(spec::TYPE_DISK, false, &self.identity),
                    Some(p) => self.vpd(p)?,
                };
                reply(data, &response, inq.alloc);
            }
            Command::ModeSense(ms) => {
                let response = self.mode_sense(&ms)?;
                reply(data, &response, ms.alloc);
            }
            Command::ModeSelect { ten, len } => {
                let list = data.get(..len).ok_or(Sense::DATA_PHASE_ERROR)?;
                let mut wce = self.write_cache;
                for (code, bytes) in mode_select_pages(ten, list) {
                    if code == page::CACHING && bytes.len() > 2 {
                        wce = bytes[2] & page::CACHING_WCE != 0;
                    }
                }
                if self.write_cache && !wce {
                    // Going write-through: what is cached now must be durable too.
                    self.disk.flush().map_err(|e| write_error("disk", e))?;
                }
                self.write_cache = wce;
            }
            Command::PreventAllow(prevent) => self.prevent_removal = prevent,
            Command::ReadCapacity10 => {
                let last = self.blocks().saturating_sub(1).min(0xffff_ffff) as u32;
                let mut b = [0u8; 8];
                b[0..4].copy_from_slice(&last.to_be_bytes());
                b[4..8].copy_from_slice(&(BLOCK as u32).to_be_bytes());
                reply(data, &b, 8);
            }
            Command::ReadCapacity16 { alloc } => {
                let mut b = [0u8; 32];
                b[0..8].copy_from_slice(&self.blocks().saturating_sub(1).to_be_bytes());
                b[8..12].copy_from_slice(&(BLOCK as u32).to_be_bytes());
                reply(data, &b, alloc);
            }
            Command::Read { lba, count } => {
                data.resize(count as usize * BLOCK, 0);
                if count > 0 {
                    self.disk
                        .read(lba, data)
                        .map_err(|e| read_error("disk", e))?;
                }
            }
            Command::Write { lba, count, fua } => {
                let bytes = count as usize * BLOCK;
                let buf = data.get(..bytes).ok_or(Sense::DATA_PHASE_ERROR)?;
                if count > 0 {
                    self.disk
                        .write(lba, buf)
                        .map_err(|e| write_error("disk", e))?;
                    if fua || !self.write_cache {
                        self.disk.flush().map_err(|e| write_error("disk", e))?;
                    }
                }
            }
            Command::Verify {
                lba,
                count,
                compare,
            } => {
                // Without BYTCHK the medium is as good as the backend says: nothing to do.
                if compare && count > 0 {
                    let bytes = count as usize * BLOCK;
                    let expect = data.get(..bytes).ok_or(Sense::DATA_PHASE_ERROR)?;
                    let mut have = vec![0u8; bytes];
                    self.disk
                        .read(lba, &mut have)
                        .map_err(|e| read_error("disk", e))?;
                    if have != expect {
                        return Err(Sense::MISCOMPARE_DURING_VERIFY);
                    }
                }
            }
            Command::SynchronizeCache => {
                self.disk.flush().map_err(|e| write_error("disk", e))?;
            }
            Command::ReportLuns => report_luns(cdb, data),
        }
        Ok(())
    }

    fn vpd(&self, code: u8) -> Result<Vec<u8>, Sense> {
        use spec::vpd;
        let t = spec::TYPE_DISK;
        Ok(match code {
            vpd::SUPPORTED_PAGES => vpd_page(
                t,
                code,
                &[
                    vpd::SUPPORTED_PAGES,
                    vpd::UNIT_SERIAL_NUMBER,
                    vpd::DEVICE_IDENTIFICATION,
                    vpd::BLOCK_LIMITS,
                    vpd::BLOCK_DEVICE_CHARACTERISTICS,
                ],
            ),
            vpd::UNIT_SERIAL_NUMBER => vpd_serial(t, &self.identity),
            vpd::DEVICE_IDENTIFICATION => vpd_device_id(t, &self.identity),
            vpd::BLOCK_LIMITS => {
                // SBC-3 6.5.3: only the maximum transfer length is reported (the limit of
                // this layer); everything else "not reported".
                let mut p = [0u8; 0x3c];
                let max = (MAX_TRANSFER_BYTES / BLOCK) as u32;
                p[4..8].copy_from_slice(&max.to_be_bytes());
                vpd_page(t, code, &p)
            }
            // SBC-3 6.5.2: rotation rate and form factor "not reported".
            vpd::BLOCK_DEVICE_CHARACTERISTICS => vpd_page(t, code, &[0u8; 0x3c]),
            _ => return Err(Sense::INVALID_FIELD_IN_CDB),
        })
    }

    /// One mode page, as page control `pc` asks (changeable: a mask of what MODE SELECT
    /// changes).
    fn mode_page(&self, code: u8, pc: u8) -> Option<Vec<u8>> {
        let changeable = pc == page::PC_CHANGEABLE;
        let mut p = match code {
            page::READ_WRITE_ERROR_RECOVERY => vec![0u8; 12],
            page::CACHING => {
                let mut p = vec![0u8; 20];
                let wce = match pc {
                    page::PC_CHANGEABLE | page::PC_DEFAULT => true,
                    _ => self.write_cache,
                };
                if wce {
                    p[2] = page::CACHING_WCE;
                }
                p
            }
            page::CONTROL => vec![0u8; 12],
            _ => return None,
        };
        if changeable && code != page::CACHING {
            p.fill(0);
        }
        p[0] = code;
        p[1] = (p.len() - 2) as u8;
        Some(p)
    }

    fn mode_sense(&self, ms: &ModeSenseCdb) -> Result<Vec<u8>, Sense> {
        let pages = if ms.page == page::ALL {
            [
                page::READ_WRITE_ERROR_RECOVERY,
                page::CACHING,
                page::CONTROL,
            ]
            .iter()
            .filter_map(|&c| self.mode_page(c, ms.pc))
            .flatten()
            .collect()
        } else {
            self.mode_page(ms.page, ms.pc)
                .ok_or(Sense::INVALID_FIELD_IN_CDB)?
        };
        let mut device_specific = page::DEVICE_SPECIFIC_DPOFUA;
        if self.disk.read_only() {
            device_specific |= page::DEVICE_SPECIFIC_WP;
        }
        Ok(mode_sense_response(
            ms,
            0,
            device_specific,
            Some((self.blocks(), BLOCK as u32)),
            &pages,
        ))
    }
}

/// The LBA and block count of READ/WRITE/VERIFY (6/10/12/16) (SBC-2 5.5-5.26).
fn lba_count(cdb: Cdb) -> (u64, u64) {
    match cdb.opcode() {
        op::READ_6 | op::WRITE_6 => {
            let lba = u64::from(cdb.be24(1) & 0x1f_ffff);
            // A transfer length of 0 means 256 blocks in the 6-byte commands.
            let count = match cdb.u8(4) {
                0 => 256,
                n => u64::from(n),
            };
            (lba, count)
        }
        op::READ_12 | op::WRITE_12 => (u64::from(cdb.be32(2)), u64::from(cdb.be32(6))),
        op::READ_16 | op::WRITE_16 | op::VERIFY_16 => (cdb.be64(2), u64::from(cdb.be32(10))),
        // READ(10), WRITE(10), VERIFY(10).
        _ => (u64::from(cdb.be32(2)), u64::from(cdb.be16(7))),
    }
}

impl_scsi_target!(ScsiDisk);

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::scsi::testing::{clear_power_on, command, hammer, request_sense, MemDisk, ZeroDisk};
    use crate::testing::cbor_round_trip;

    const SECTORS: u64 = 300;

    fn disk_with(mem: MemDisk) -> (ScsiDisk, Arc<MemDisk>) {
        let mem = Arc::new(mem);
        let mut d = ScsiDisk::new(mem.clone(), Identity::virtual_disk());
        clear_power_on(&mut d);
        (d, mem)
    }

    fn disk() -> (ScsiDisk, Arc<MemDisk>) {
        disk_with(MemDisk::patterned(SECTORS, false))
    }

    fn run(d: &mut ScsiDisk, cdb: &[u8]) -> Result<Vec<u8>, Sense> {
        command(d, cdb, &[])
    }

    fn read10(lba: u32, count: u16) -> Vec<u8> {
        let mut c = vec![op::READ_10, 0];
        c.extend_from_slice(&lba.to_be_bytes());
        c.push(0);
        c.extend_from_slice(&count.to_be_bytes());
        c.push(0);
        c
    }

    fn write10(lba: u32, count: u16, fua: bool) -> Vec<u8> {
        let mut c = read10(lba, count);
        c[0] = op::WRITE_10;
        c[1] = if fua { 0x08 } else { 0 };
        c
    }

    fn pattern(first: u8, count: usize) -> Vec<u8> {
        (0..count)
            .flat_map(|i| [first.wrapping_add(i as u8); 512])
            .collect()
    }

    #[test]
    fn power_on_unit_attention_is_reported_once() {
        let mut d = ScsiDisk::new(
            Arc::new(MemDisk::patterned(8, false)),
            Identity::virtual_disk(),
        );
        // INQUIRY and REPORT LUNS neither report nor clear it.
        assert!(run(&mut d, &[op::INQUIRY, 0, 0, 0, 36, 0]).is_ok());
        assert!(run(&mut d, &[op::REPORT_LUNS, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0]).is_ok());
        assert_eq!(run(&mut d, &[0; 6]), Err(Sense::POWER_ON_RESET));
        assert_eq!(d.sense(), Sense::POWER_ON_RESET);
        assert_eq!(run(&mut d, &[0; 6]), Ok(vec![]));
        assert_eq!(d.sense(), Sense::NO_SENSE);
    }

    #[test]
    fn request_sense_returns_and_clears_the_unit_attention() {
        let mut d = ScsiDisk::new(
            Arc::new(MemDisk::patterned(8, false)),
            Identity::virtual_disk(),
        );
        assert_eq!(request_sense(&mut d), Sense::POWER_ON_RESET);
        assert_eq!(run(&mut d, &[0; 6]), Ok(vec![]));
        assert_eq!(request_sense(&mut d), Sense::NO_SENSE);
    }

    #[test]
    fn request_sense_reports_the_last_error_then_no_sense() {
        let (mut d, _) = disk();
        assert_eq!(
            run(&mut d, &[0x04, 0, 0, 0, 0, 0]),
            Err(Sense::INVALID_OPCODE)
        );
        assert_eq!(request_sense(&mut d), Sense::INVALID_OPCODE);
        assert_eq!(request_sense(&mut d), Sense::NO_SENSE);
        // A good command clears the sense too.
        assert!(run(&mut d, &[0x04, 0, 0, 0, 0, 0]).is_err());
        assert!(run(&mut d, &[0; 6]).is_ok());
        assert_eq!(d.sense(), Sense::NO_SENSE);
        // Descriptor format, and the allocation length.
        assert!(run(&mut d, &read10(SECTORS as u32, 1)).is_err());
        let r = run(&mut d, &[op::REQUEST_SENSE, 1, 0, 0, 252, 0]).unwrap();
        assert_eq!(r, vec![0x72, 0x05, 0x21, 0x00, 0, 0, 0, 0]);
        assert!(run(&mut d, &read10(SECTORS as u32, 1)).is_err());
        let r = run(&mut d, &[op::REQUEST_SENSE, 0, 0, 0, 3, 0]).unwrap();
        assert_eq!(r, vec![0x70, 0, 0x05]);
    }

    #[test]
    fn inquiry_standard_data() {
        let (mut d, _) = disk();
        let r = run(&mut d, &[op::INQUIRY, 0, 0, 0, 96, 0]).unwrap();
        assert_eq!(r.len(), 36);
        assert_eq!(r[0], 0x00); // direct access, connected
        assert_eq!(r[1], 0x00); // not removable
        assert_eq!(r[2], 0x05); // SPC-3
        assert_eq!(r[3], 0x02);
        assert_eq!(r[4], 31);
        assert_eq!(&r[8..36], b"Msft    Virtual Disk    1.0 ");
        let r = run(&mut d, &[op::INQUIRY, 0, 0, 0, 5, 0]).unwrap();
        assert_eq!(r.len(), 5);
        // Custom identity: cut and padded, non-ASCII replaced.
        let id = Identity::new("VeryLongVendor", "Disk\u{e9}", "12345", "SN1");
        let mut d = ScsiDisk::new(Arc::new(MemDisk::patterned(8, false)), id);
        let r = run(&mut d, &[op::INQUIRY, 0, 0, 0, 36, 0]).unwrap();
        assert_eq!(&r[8..36], b"VeryLongDisk?           1234");
    }

    #[test]
    fn inquiry_field_checks() {
        let (mut d, _) = disk();
        // Page code without EVPD, CMDDT, unknown VPD page.
        for cdb in [
            [op::INQUIRY, 0, 0x80, 0, 36, 0],
            [op::INQUIRY, 2, 0, 0, 36, 0],
            [op::INQUIRY, 1, 0x99, 0, 36, 0],
        ] {
            assert_eq!(run(&mut d, &cdb), Err(Sense::INVALID_FIELD_IN_CDB));
        }
    }

    #[test]
    fn inquiry_vpd_pages() {
        let id = Identity::new("Msft", "Virtual Disk", "1.0", "KETTLE-0001");
        let mut d = ScsiDisk::new(Arc::new(MemDisk::patterned(8, false)), id);
        let vpd = |d: &mut ScsiDisk, p: u8| run(d, &[op::INQUIRY, 1, p, 0, 255, 0]).unwrap();
        assert_eq!(
            vpd(&mut d, 0x00),
            vec![0, 0, 0, 5, 0x00, 0x80, 0x83, 0xb0, 0xb1]
        );
        let serial = vpd(&mut d, 0x80);
        assert_eq!(&serial[..4], &[0, 0x80, 0, 11]);
        assert_eq!(&serial[4..], b"KETTLE-0001");
        let id = vpd(&mut d, 0x83);
        assert_eq!(&id[..2], &[0, 0x83]);
        assert_eq!(u16::from_be_bytes([id[2], id[3]]) as usize, id.len() - 4);
        assert_eq!(&id[4..7], &[0x02, 0x01, 0x00]);
        assert_eq!(id[7] as usize, id.len() - 8);
        assert_eq!(&id[8..], b"Msft    Virtual Disk    KETTLE-0001");
        let limits = vpd(&mut d, 0xb0);
        assert_eq!(limits.len(), 64);
        assert_eq!(&limits[..4], &[0, 0xb0, 0, 0x3c]);
        let max = u32::from_be_bytes(limits[8..12].try_into().unwrap());
        assert_eq!(max as usize * 512, MAX_TRANSFER_BYTES);
        let chars = vpd(&mut d, 0xb1);
        assert_eq!(&chars[..4], &[0, 0xb1, 0, 0x3c]);
    }

    #[test]
    fn read_capacity_10_and_16() {
        let (mut d, _) = disk();
        let r = run(&mut d, &[op::READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(r, [0, 0, 0x01, 0x2b, 0, 0, 2, 0]); // last LBA 299, 512 bytes
        let mut rc16 = [0u8; 16];
        rc16[0] = op::SERVICE_ACTION_IN_16;
        rc16[1] = 0x10;
        rc16[13] = 32;
        let r = run(&mut d, &rc16).unwrap();
        assert_eq!(r.len(), 32);
        assert_eq!(u64::from_be_bytes(r[0..8].try_into().unwrap()), SECTORS - 1);
        assert_eq!(&r[8..12], &[0, 0, 2, 0]);
        rc16[1] = 0x12; // GET LBA STATUS: not supported
        assert_eq!(run(&mut d, &rc16), Err(Sense::INVALID_FIELD_IN_CDB));

        // Over 2 TiB: READ CAPACITY(10) says "use (16)".
        let mut big = ScsiDisk::new(Arc::new(ZeroDisk(1 << 33)), Identity::virtual_disk());
        clear_power_on(&mut big);
        let r = run(&mut big, &[op::READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(&r[..4], &[0xff; 4]);
        rc16[1] = 0x10;
        let r = run(&mut big, &rc16).unwrap();
        assert_eq!(
            u64::from_be_bytes(r[0..8].try_into().unwrap()),
            (1 << 33) - 1
        );
    }

    #[test]
    fn reads_of_every_size() {
        let (mut d, _) = disk();
        assert_eq!(run(&mut d, &read10(3, 2)).unwrap(), pattern(3, 2));
        let r = run(&mut d, &[op::READ_6, 0, 0, 7, 1, 0]).unwrap();
        assert_eq!(r, pattern(7, 1));
        // READ(6) with a length of 0 reads 256 blocks.
        let r = run(&mut d, &[op::READ_6, 0, 0, 10, 0, 0]).unwrap();
        assert_eq!(r, pattern(10, 256));
        let r = run(&mut d, &[op::READ_12, 0, 0, 0, 0, 20, 0, 0, 0, 3, 0, 0]).unwrap();
        assert_eq!(r, pattern(20, 3));
        let mut r16 = [0u8; 16];
        r16[0] = op::READ_16;
        r16[9] = 42;
        r16[13] = 4;
        assert_eq!(run(&mut d, &r16).unwrap(), pattern(42, 4));
        // A zero-length READ(10) moves nothing.
        assert_eq!(d.plan(&read10(5, 0)), Ok(Plan::NONE));
        assert_eq!(run(&mut d, &read10(5, 0)), Ok(vec![]));
    }

    #[test]
    fn writes_of_every_size_and_fua() {
        let (mut d, mem) = disk();
        let data = vec![0xabu8; 1024];
        assert_eq!(
            d.plan(&write10(5, 2, false)),
            Ok(Plan::new(Direction::Out, 1024))
        );
        assert!(command(&mut d, &write10(5, 2, false), &data).is_ok());
        assert_eq!(&mem.data.lock().unwrap()[5 * 512..7 * 512], &data[..]);
        assert_eq!(mem.flushes.load(Ordering::Relaxed), 0); // write-back
        assert!(command(&mut d, &write10(9, 1, true), &data[..512]).is_ok());
        assert_eq!(mem.flushes.load(Ordering::Relaxed), 1); // FUA
        assert!(command(&mut d, &[op::WRITE_6, 0, 0, 11, 1, 0], &[1u8; 512]).is_ok());
        let w12 = [op::WRITE_12, 0, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0];
        assert!(command(&mut d, &w12, &[2u8; 512]).is_ok());
        let mut w16 = [0u8; 16];
        w16[0] = op::WRITE_16;
        w16[9] = 13;
        w16[13] = 1;
        assert!(command(&mut d, &w16, &[3u8; 512]).is_ok());
        assert_eq!(run(&mut d, &read10(11, 3)).unwrap(), {
            let mut v = vec![1u8; 512];
            v.extend_from_slice(&[2u8; 512]);
            v.extend_from_slice(&[3u8; 512]);
            v
        });
        // A transport that delivers too little data.
        assert_eq!(
            command(&mut d, &write10(5, 2, false), &data[..100]),
            Err(Sense::DATA_PHASE_ERROR)
        );
    }

    #[test]
    fn write_to_read_only_disk_is_data_protect() {
        let (mut d, mem) = disk_with(MemDisk::patterned(16, true));
        assert_eq!(d.plan(&write10(0, 1, false)), Err(Sense::WRITE_PROTECTED));
        assert_eq!(
            command(&mut d, &write10(0, 1, false), &[0u8; 512]),
            Err(Sense::WRITE_PROTECTED)
        );
        assert_eq!(request_sense(&mut d), Sense::new(0x07, 0x27, 0x00));
        assert_eq!(mem.data.lock().unwrap()[0], 0);
        // The mode header's WP bit tells the guest before it tries.
        let r = run(&mut d, &[op::MODE_SENSE_6, 0, 0x3f, 0, 4, 0]).unwrap();
        assert_eq!(r[2] & 0x80, 0x80);
    }

    #[test]
    fn ranges_past_the_end_are_refused() {
        let (mut d, _) = disk();
        let last = SECTORS as u32 - 1;
        assert!(run(&mut d, &read10(last, 1)).is_ok());
        assert_eq!(run(&mut d, &read10(last, 2)), Err(Sense::LBA_OUT_OF_RANGE));
        assert_eq!(
            run(&mut d, &read10(SECTORS as u32, 0)),
            Err(Sense::LBA_OUT_OF_RANGE)
        );
        assert_eq!(
            command(&mut d, &write10(last, 2, false), &[0u8; 1024]),
            Err(Sense::LBA_OUT_OF_RANGE)
        );
        // LBA + count overflowing 64 bits.
        let mut r16 = [0xffu8; 16];
        r16[0] = op::READ_16;
        r16[1] = 0;
        r16[10..14].copy_from_slice(&1u32.to_be_bytes());
        assert_eq!(run(&mut d, &r16), Err(Sense::LBA_OUT_OF_RANGE));
    }

    #[test]
    fn huge_transfers_are_refused_without_allocating() {
        let mut d = ScsiDisk::new(Arc::new(ZeroDisk(u64::MAX / 512)), Identity::virtual_disk());
        clear_power_on(&mut d);
        let read12 = [op::READ_12, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0];
        assert_eq!(d.plan(&read12), Err(Sense::INVALID_FIELD_IN_CDB));
        let mut data = Vec::new();
        assert_eq!(
            d.execute(&read12, &mut data),
            Err(Sense::INVALID_FIELD_IN_CDB)
        );
        assert_eq!(data.capacity(), 0);
        // The limit itself is allowed.
        let max = (MAX_TRANSFER_BYTES / BLOCK) as u32;
        let mut at_limit = read12;
        at_limit[6..10].copy_from_slice(&max.to_be_bytes());
        assert_eq!(
            d.plan(&at_limit),
            Ok(Plan::new(Direction::In, MAX_TRANSFER_BYTES))
        );
        at_limit[6..10].copy_from_slice(&(max + 1).to_be_bytes());
        assert_eq!(d.plan(&at_limit), Err(Sense::INVALID_FIELD_IN_CDB));
    }

    #[test]
    fn short_and_empty_cdbs() {
        let (mut d, _) = disk();
        assert_eq!(d.plan(&[]), Err(Sense::INVALID_OPCODE));
        assert_eq!(
            d.plan(&[op::READ_10, 0, 0, 0, 0, 0]),
            Err(Sense::INVALID_FIELD_IN_CDB)
        );
        assert_eq!(d.plan(&[op::READ_16; 12]), Err(Sense::INVALID_FIELD_IN_CDB));
        assert_eq!(d.plan(&[0x60; 16]), Err(Sense::INVALID_OPCODE)); // reserved group 3
        let mut data = Vec::new();
        assert_eq!(
            d.execute(&[op::INQUIRY], &mut data),
            Err(Sense::INVALID_FIELD_IN_CDB)
        );
    }

    #[test]
    fn any_cdb_is_handled_without_panicking() {
        let (mut d, _) = disk();
        hammer(&mut d);
    }

    #[test]
    fn backend_errors_are_medium_errors() {
        let (mut d, mem) = disk();
        mem.fail_reads.store(true, Ordering::Relaxed);
        assert_eq!(
            run(&mut d, &read10(0, 1)),
            Err(Sense::UNRECOVERED_READ_ERROR)
        );
        assert_eq!(request_sense(&mut d), Sense::new(0x03, 0x11, 0x00));
        mem.fail_reads.store(false, Ordering::Relaxed);
        mem.fail_writes.store(true, Ordering::Relaxed);
        assert_eq!(
            command(&mut d, &write10(0, 1, false), &[0u8; 512]),
            Err(Sense::WRITE_ERROR)
        );
        assert_eq!(request_sense(&mut d), Sense::new(0x03, 0x0c, 0x00));
        mem.fail_flush.store(true, Ordering::Relaxed);
        let sync = [op::SYNCHRONIZE_CACHE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(run(&mut d, &sync), Err(Sense::WRITE_ERROR));
    }

    #[test]
    fn verify_checks_range_and_compares_with_bytchk() {
        let (mut d, _) = disk();
        let verify = |lba: u32, count: u16, bytchk: bool| {
            let mut c = read10(lba, count);
            c[0] = op::VERIFY_10;
            c[1] = if bytchk { 0x02 } else { 0 };
            c
        };
        assert_eq!(d.plan(&verify(0, 10, false)), Ok(Plan::NONE));
        assert!(run(&mut d, &verify(0, 10, false)).is_ok());
        assert_eq!(
            run(&mut d, &verify(295, 10, false)),
            Err(Sense::LBA_OUT_OF_RANGE)
        );
        assert!(command(&mut d, &verify(4, 2, true), &pattern(4, 2)).is_ok());
        assert_eq!(
            command(&mut d, &verify(4, 2, true), &pattern(5, 2)),
            Err(Sense::MISCOMPARE_DURING_VERIFY)
        );
        let mut v16 = [0u8; 16];
        v16[0] = op::VERIFY_16;
        v16[13] = 1;
        assert!(run(&mut d, &v16).is_ok());
    }

    #[test]
    fn synchronize_cache_flushes() {
        let (mut d, mem) = disk();
        let sync10 = [op::SYNCHRONIZE_CACHE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(d.plan(&sync10), Ok(Plan::NONE));
        assert!(run(&mut d, &sync10).is_ok());
        let mut sync16 = [0u8; 16];
        sync16[0] = op::SYNCHRONIZE_CACHE_16;
        assert!(run(&mut d, &sync16).is_ok());
        assert_eq!(mem.flushes.load(Ordering::Relaxed), 2);
    }

    /// The pages of a MODE SENSE response after header and block descriptors.
    fn pages(r: &[u8], ten: bool) -> Vec<(u8, Vec<u8>)> {
        let start = if ten {
            8 + u16::from_be_bytes([r[6], r[7]]) as usize
        } else {
            4 + r[3] as usize
        };
        let mut out = Vec::new();
        let mut at = start;
        while at < r.len() {
            let len = r[at + 1] as usize;
            out.push((r[at], r[at..at + 2 + len].to_vec()));
            at += 2 + len;
        }
        out
    }

    #[test]
    fn mode_sense_6_all_pages() {
        let (mut d, _) = disk();
        let r = run(&mut d, &[op::MODE_SENSE_6, 0, 0x3f, 0, 255, 0]).unwrap();
        assert_eq!(r[0] as usize, r.len() - 1);
        assert_eq!(r[2], 0x10); // DPOFUA, not write protected
        assert_eq!(r[3], 8); // one short block descriptor
        assert_eq!(&r[4..12], &[0, 0, 0x01, 0x2c, 0, 0, 2, 0]);
        let p = pages(&r, false);
        let codes: Vec<u8> = p.iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, vec![0x01, 0x08, 0x0a]);
        assert_eq!(p[1].1.len(), 20);
        assert_eq!(p[1].1[2] & 0x04, 0x04); // WCE
                                            // DBD: no block descriptor; the header alone when the allocation length says so.
        let r = run(&mut d, &[op::MODE_SENSE_6, 0x08, 0x08, 0, 255, 0]).unwrap();
        assert_eq!(r[3], 0);
        assert_eq!(r.len(), 4 + 20);
        let r = run(&mut d, &[op::MODE_SENSE_6, 0, 0x3f, 0, 4, 0]).unwrap();
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn mode_sense_10_page_control_and_errors() {
        let (mut d, _) = disk();
        let ms10 =
            |pc_page: u8, byte1: u8| [op::MODE_SENSE_10, byte1, pc_page, 0, 0, 0, 0, 1, 0, 0];
        let r = run(&mut d, &ms10(0x0a, 0)).unwrap();
        assert_eq!(u16::from_be_bytes([r[0], r[1]]) as usize, r.len() - 2);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 8);
        assert_eq!(
            pages(&r, true),
            vec![(0x0a, {
                let mut p = vec![0u8; 12];
                p[0] = 0x0a;
                p[1] = 10;
                p
            })]
        );
        // Changeable values: only WCE.
        let r = run(&mut d, &ms10(0x48, 0)).unwrap();
        assert_eq!(pages(&r, true)[0].1[2], 0x04);
        let r = run(&mut d, &ms10(0x41, 0)).unwrap();
        assert!(pages(&r, true)[0].1[2..].iter().all(|&b| b == 0));
        assert_eq!(
            run(&mut d, &ms10(0xc8, 0)),
            Err(Sense::SAVING_PARAMETERS_NOT_SUPPORTED)
        );
        assert_eq!(
            run(&mut d, &ms10(0x1c, 0)),
            Err(Sense::INVALID_FIELD_IN_CDB)
        );
        let mut sub = ms10(0x08, 0);
        sub[3] = 1;
        assert_eq!(run(&mut d, &sub), Err(Sense::INVALID_FIELD_IN_CDB));

        // LLBAA on a disk too large for a short descriptor.
        let mut big = ScsiDisk::new(Arc::new(ZeroDisk(1 << 33)), Identity::virtual_disk());
        clear_power_on(&mut big);
        let r = run(&mut big, &ms10(0x08, 0x10)).unwrap();
        assert_eq!(r[4], 1); // LONGLBA
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 16);
        assert_eq!(u64::from_be_bytes(r[8..16].try_into().unwrap()), 1 << 33);
        let r = run(&mut big, &ms10(0x08, 0)).unwrap();
        assert_eq!(&r[8..12], &[0, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn mode_select_clears_wce_for_write_through() {
        let (mut d, mem) = disk();
        // MODE SELECT(6): header, no block descriptor, caching page with WCE = 0.
        let mut list = vec![0u8, 0, 0, 0];
        let mut caching = vec![0u8; 20];
        caching[0] = 0x08;
        caching[1] = 0x12;
        list.extend_from_slice(&caching);
        let cdb = [op::MODE_SELECT_6, 0x10, 0, 0, list.len() as u8, 0];
        assert_eq!(d.plan(&cdb), Ok(Plan::new(Direction::Out, 24)));
        assert!(command(&mut d, &cdb, &list).is_ok());
        assert!(!d.state().write_cache);
        let flushes = mem.flushes.load(Ordering::Relaxed);
        assert!(command(&mut d, &write10(0, 1, false), &[7u8; 512]).is_ok());
        assert_eq!(mem.flushes.load(Ordering::Relaxed), flushes + 1);
        let r = run(&mut d, &[op::MODE_SENSE_6, 0x08, 0x08, 0, 255, 0]).unwrap();
        assert_eq!(r[4 + 2] & 0x04, 0);
        // MODE SELECT(10) turning it back on; other pages are accepted and ignored.
        let mut list = vec![0u8; 8];
        list.extend_from_slice(&[0x0a, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        caching[2] = 0x04;
        list.extend_from_slice(&caching);
        let cdb = [
            op::MODE_SELECT_10,
            0x10,
            0,
            0,
            0,
            0,
            0,
            0,
            list.len() as u8,
            0,
        ];
        assert!(command(&mut d, &cdb, &list).is_ok());
        assert!(d.state().write_cache);
        // A list the transport cut short.
        assert_eq!(
            command(&mut d, &cdb, &list[..10]),
            Err(Sense::DATA_PHASE_ERROR)
        );
    }

    #[test]
    fn housekeeping_commands() {
        let (mut d, _) = disk();
        for cdb in [
            [op::START_STOP_UNIT, 0, 0, 0, 1, 0],
            [op::RESERVE_6, 0, 0, 0, 0, 0],
            [op::RELEASE_6, 0, 0, 0, 0, 0],
            [op::TEST_UNIT_READY, 0, 0, 0, 0, 0],
        ] {
            assert_eq!(d.plan(&cdb), Ok(Plan::NONE));
            assert_eq!(run(&mut d, &cdb), Ok(vec![]));
        }
        assert!(run(&mut d, &[op::PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 1, 0]).is_ok());
        assert!(d.state().prevent_removal);
        assert!(run(&mut d, &[op::PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 0, 0]).is_ok());
        assert!(!d.state().prevent_removal);
    }

    #[test]
    fn report_luns_lists_lun_0() {
        let (mut d, _) = disk();
        let cdb = [op::REPORT_LUNS, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
        let r = run(&mut d, &cdb).unwrap();
        assert_eq!(r, [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let short = [op::REPORT_LUNS, 0, 0, 0, 0, 0, 0, 0, 0, 15, 0, 0];
        assert_eq!(run(&mut d, &short), Err(Sense::INVALID_FIELD_IN_CDB));
    }

    #[test]
    fn state_round_trips_and_reset() {
        let (mut d, mem) = disk();
        assert!(run(&mut d, &[op::PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 1, 0]).is_ok());
        assert!(run(&mut d, &[0x04, 0, 0, 0, 0, 0]).is_err());
        let state = d.state();
        assert_eq!(state.sense, Sense::INVALID_OPCODE);
        let mut other = ScsiDisk::new(mem, Identity::virtual_disk());
        other.restore(&state);
        assert_eq!(other.state(), state);
        assert_eq!(request_sense(&mut other), Sense::INVALID_OPCODE);
        other.reset();
        assert!(!other.state().prevent_removal);
        assert_eq!(run(&mut other, &[0; 6]), Err(Sense::POWER_ON_RESET));
    }

    #[test]
    fn state_round_trips_through_cbor() {
        // Write-through caching, removal prevented, and the sense of a failed command pending.
        let (mut d, mem) = disk();
        let mut list = vec![0u8, 0, 0, 0, 0x08, 0x12];
        list.resize(24, 0);
        let cdb = [op::MODE_SELECT_6, 0x10, 0, 0, list.len() as u8, 0];
        assert!(command(&mut d, &cdb, &list).is_ok());
        assert!(run(&mut d, &[op::PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 1, 0]).is_ok());
        assert_eq!(
            run(&mut d, &read10(SECTORS as u32, 1)),
            Err(Sense::LBA_OUT_OF_RANGE)
        );
        let state = d.state();
        let mut other = ScsiDisk::new(mem.clone(), Identity::virtual_disk());
        other.restore(&cbor_round_trip(&state));
        assert_eq!(other.state(), state);
        assert_eq!(request_sense(&mut other), request_sense(&mut d));
        // Both write through: every write is flushed.
        for t in [&mut d, &mut other] {
            let flushes = mem.flushes.load(Ordering::Relaxed);
            assert!(command(t, &write10(3, 1, false), &[9u8; 512]).is_ok());
            assert_eq!(mem.flushes.load(Ordering::Relaxed), flushes + 1);
            let r = run(t, &[op::MODE_SENSE_6, 0x08, 0x08, 0, 255, 0]).unwrap();
            assert_eq!(r[4 + 2] & 0x04, 0);
        }
        assert_eq!(other.state(), d.state());
    }
}
