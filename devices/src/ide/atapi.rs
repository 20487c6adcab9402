//! The ATAPI transport (ATA/ATAPI-6 section 9.11, "PACKET command protocol"): PACKET carries a
//! 12-byte SCSI command descriptor block to a [`ScsiTarget`], whose `plan` says which way and
//! how much data moves and whose `execute` moves it. This module owns only the ATA side:
//!
//! - PACKET (A0h): features bit 0 selects DMA; LBA mid/high hold the byte count limit for PIO.
//!   The device asks for the packet with DRQ and interrupt reason CoD=1, IO=0, without an
//!   interrupt (IDENTIFY PACKET DEVICE word 0 announces the 50 us "accelerated DRQ").
//! - PIO data phases come in DRQ blocks of at most the byte count limit (even unless it is the
//!   last block; a limit of 0 or FFFFh counts as FFFEh), each announced by an interrupt with the
//!   byte count in LBA mid/high and interrupt reason IO=1 (to the host) or IO=0 (from the host).
//! - DMA data phases move through the bus master when BMIC.start is set (see `bmdma.rs`).
//! - Completion: interrupt reason CoD=1, IO=1, DRDY; CHECK CONDITION sets ERR with the sense key
//!   in the upper nibble of the error register (the guest then sends REQUEST SENSE, which the
//!   target answers like any other command).
//! - READ(10), READ(12) and READ CD larger than 64 KiB are split into sub-commands of at most
//!   64 KiB each, so a data phase never needs more memory than that; any other command whose
//!   data phase exceeds 1 MiB is refused with ABRT and sense key ILLEGAL REQUEST in the error
//!   register (a transport limit the target does not know about).
//!
//! ATAPI devices also accept IDENTIFY PACKET DEVICE, DEVICE RESET, EXECUTE DEVICE DIAGNOSTIC,
//! SET FEATURES (transfer mode), CHECK POWER MODE, IDLE/STANDBY/SLEEP; IDENTIFY DEVICE is
//! aborted with the ATAPI signature in the task file, as ATA-6 8.15 requires.

use std::sync::{Arc, Mutex};

use crate::bus::warn_limited;
use crate::scsi::{Direction, Plan, ScsiTarget, Sense};

use super::ata::{identify_bytes, identify_packet_device};
use super::bmdma::PrdCursor;
use super::channel::{IdeChannel, IdeTransfer, ReadSplit};
use super::spec;

const READ_10: u8 = 0x28;
const READ_12: u8 = 0xa8;
const READ_CD: u8 = 0xbe;
/// Sense key ILLEGAL REQUEST.
const KEY_ILLEGAL_REQUEST: u8 = 0x05;
/// Sense key ABORTED COMMAND.
const KEY_ABORTED_COMMAND: u8 = 0x0b;

/// How a read command is split, if it is one of the splittable reads and larger than a chunk.
fn read_split(cdb: &[u8; spec::CDB_LEN], plan: &Plan) -> Option<ReadSplit> {
    let be = |b: &[u8]| b.iter().fold(0u32, |a, &x| a << 8 | u32::from(x));
    let lba = be(&cdb[2..6]);
    let blocks = match cdb[0] {
        READ_10 => be(&cdb[7..9]),
        READ_12 => be(&cdb[6..10]),
        READ_CD => be(&cdb[6..9]),
        _ => return None,
    };
    if blocks == 0 || !plan.length.is_multiple_of(blocks as usize) {
        return None;
    }
    let block_size = plan.length / blocks as usize;
    if block_size == 0 {
        return None;
    }
    let chunk_blocks = (spec::ATAPI_CHUNK_BYTES / block_size).max(1) as u32;
    if blocks <= chunk_blocks {
        return None;
    }
    Some(ReadSplit {
        next_lba: lba,
        remaining_blocks: blocks,
        block_size: block_size as u32,
        chunk_blocks,
    })
}

/// The command for `blocks` blocks at `lba`, otherwise as `cdb`.
fn sub_cdb(cdb: &[u8; spec::CDB_LEN], lba: u32, blocks: u32) -> [u8; spec::CDB_LEN] {
    let mut c = *cdb;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    let n = blocks.to_be_bytes();
    match c[0] {
        READ_10 => c[7..9].copy_from_slice(&n[2..4]),
        READ_12 => c[6..10].copy_from_slice(&n),
        _ => c[6..9].copy_from_slice(&n[1..4]),
    }
    c
}

/// Runs the next piece of an In command: the next sub-command of a split read (advancing
/// `split`, which becomes None after the last), or the whole command (data cut to `length`).
fn fetch(
    target: &Arc<Mutex<dyn ScsiTarget>>,
    cdb: &[u8; spec::CDB_LEN],
    split: &mut Option<ReadSplit>,
    length: usize,
) -> Result<Vec<u8>, Sense> {
    let mut t = target.lock().unwrap();
    let mut data = Vec::new();
    match split {
        None => {
            t.execute(cdb, &mut data)?;
            data.truncate(length);
        }
        Some(s) => {
            let n = s.remaining_blocks.min(s.chunk_blocks);
            let sub = sub_cdb(cdb, s.next_lba, n);
            let plan = t.plan(&sub)?;
            data.reserve(
                plan.length
                    .min(spec::ATAPI_CHUNK_BYTES.max(s.block_size as usize)),
            );
            t.execute(&sub, &mut data)?;
            data.truncate(n as usize * s.block_size as usize);
            s.next_lba = s.next_lba.wrapping_add(n);
            s.remaining_blocks -= n;
            if s.remaining_blocks == 0 {
                *split = None;
            }
        }
    }
    Ok(data)
}

/// Bytes in the next PIO DRQ block.
fn drq_block(byte_count_limit: u16, left: usize) -> usize {
    let limit = match byte_count_limit {
        0 | 0xffff => 0xfffe,
        n => usize::from(n),
    };
    if left <= limit {
        left
    } else {
        (limit & !1).max(2)
    }
}

impl IdeChannel {
    fn target(&self, d: usize) -> Arc<Mutex<dyn ScsiTarget>> {
        self.devices[d]
            .atapi()
            .expect("ATAPI commands run on ATAPI devices only")
            .target
            .clone()
    }

    pub(super) fn atapi_command(&mut self, d: usize, cmd: u8) {
        match cmd {
            spec::CMD_PACKET => {
                let tf = self.devices[d].tf;
                if tf.feature & !spec::PACKET_FEATURE_DMA != 0 {
                    // Overlapped commands and DMADIR are not supported.
                    warn_limited!(
                        "IDE{}:{d}: PACKET features {:#04x} not supported",
                        self.index,
                        tf.feature
                    );
                    self.fail(d, spec::ERROR_ABRT);
                    return;
                }
                let xfer = IdeTransfer::PacketCdb {
                    dma: tf.feature & spec::PACKET_FEATURE_DMA != 0,
                    byte_count_limit: tf.byte_count(),
                };
                self.devices[d].tf.sector_count = spec::IREASON_COD;
                self.start_pio(d, xfer, vec![0; spec::CDB_LEN], false);
            }
            spec::CMD_IDENTIFY_PACKET_DEVICE => {
                let other = self.devices[1 - d].drive.is_some();
                let dev = &self.devices[d];
                let identity = &dev.atapi().expect("ATAPI device").identity;
                let id = identify_packet_device(identity, &dev.settings, d, other);
                self.start_pio(d, IdeTransfer::PioInLast, identify_bytes(&id), true);
            }
            spec::CMD_DEVICE_RESET => self.device_reset(d),
            spec::CMD_SET_FEATURES => self.set_features(d, true),
            spec::CMD_IDENTIFY_DEVICE => {
                let tf = &mut self.devices[d].tf;
                tf.sector_count = spec::SIGNATURE_ATAPI[0];
                tf.lba_low = spec::SIGNATURE_ATAPI[1];
                tf.lba_mid = spec::SIGNATURE_ATAPI[2];
                tf.lba_high = spec::SIGNATURE_ATAPI[3];
                self.fail(d, spec::ERROR_ABRT);
            }
            _ => self.power_command(d, cmd),
        }
    }

    /// Ends a packet command successfully.
    fn atapi_complete(&mut self, d: usize) {
        self.devices[d].tf.sector_count = spec::IREASON_IO | spec::IREASON_COD;
        self.complete(d);
    }

    /// Ends a packet command with an error register value.
    fn atapi_fail(&mut self, d: usize, error: u8) {
        self.devices[d].tf.sector_count = spec::IREASON_IO | spec::IREASON_COD;
        let dev = &mut self.devices[d];
        dev.xfer = IdeTransfer::Idle;
        dev.buf.clear();
        dev.pos = 0;
        dev.tf.error = error;
        dev.tf.status = spec::STATUS_DRDY | spec::STATUS_ERR;
        self.raise_irq(d);
    }

    fn atapi_check_condition(&mut self, d: usize, sense: Sense) {
        self.atapi_fail(d, (sense.key & 0x0f) << 4);
    }

    fn atapi_refuse(&mut self, d: usize, cdb: &[u8], length: usize) {
        warn_limited!(
            "IDE{}:{d}: ATAPI command {:#04x} moves {length} bytes, more than the transport \
             handles without splitting; refused",
            self.index,
            cdb[0]
        );
        self.atapi_fail(d, KEY_ILLEGAL_REQUEST << 4 | spec::ERROR_ABRT);
    }

    /// The packet has arrived: plan the command and start its data phase (or finish it).
    pub(super) fn atapi_packet(&mut self, d: usize) {
        let IdeTransfer::PacketCdb {
            dma,
            byte_count_limit,
        } = self.devices[d].xfer
        else {
            return;
        };
        let mut cdb = [0u8; spec::CDB_LEN];
        cdb.copy_from_slice(&self.devices[d].buf[..spec::CDB_LEN]);
        let dev = &mut self.devices[d];
        dev.buf.clear();
        dev.pos = 0;
        dev.tf.status = spec::STATUS_DRDY | spec::STATUS_DSC;
        let target = self.target(d);
        let plan = target.lock().unwrap().plan(&cdb);
        let plan = match plan {
            Ok(p) => p,
            Err(sense) => return self.atapi_check_condition(d, sense),
        };
        if plan.direction == Direction::None || plan.length == 0 {
            let r = target.lock().unwrap().execute(&cdb, &mut Vec::new());
            return match r {
                Ok(()) => self.atapi_complete(d),
                Err(sense) => self.atapi_check_condition(d, sense),
            };
        }
        if plan.direction == Direction::Out {
            if plan.length > spec::ATAPI_MAX_UNSPLIT {
                return self.atapi_refuse(d, &cdb, plan.length);
            }
            self.devices[d].xfer = IdeTransfer::AtapiOut {
                cdb,
                dma,
                byte_count_limit,
                length: plan.length,
                collected: Vec::with_capacity(plan.length),
            };
            if dma {
                self.devices[d].tf.status |= spec::STATUS_DRQ;
                self.try_dma();
            } else {
                self.atapi_out_request(d);
            }
            return;
        }
        let mut split = read_split(&cdb, &plan);
        if split.is_none() && plan.length > spec::ATAPI_MAX_UNSPLIT {
            return self.atapi_refuse(d, &cdb, plan.length);
        }
        let chunk = match fetch(&target, &cdb, &mut split, plan.length) {
            Ok(c) => c,
            Err(sense) => return self.atapi_check_condition(d, sense),
        };
        self.devices[d].xfer = IdeTransfer::AtapiIn {
            cdb,
            dma,
            byte_count_limit,
            chunk,
            chunk_pos: 0,
            split,
        };
        if dma {
            self.devices[d].tf.status |= spec::STATUS_DRQ;
            self.try_dma();
        } else {
            self.atapi_in_next(d);
        }
    }

    /// Offers the next PIO DRQ block of an In command, fetching the next piece of a split read
    /// when the current one is used up, or completes the command.
    pub(super) fn atapi_in_next(&mut self, d: usize) {
        loop {
            let dev = &mut self.devices[d];
            let IdeTransfer::AtapiIn {
                cdb,
                byte_count_limit,
                chunk,
                chunk_pos,
                split,
                ..
            } = &mut dev.xfer
            else {
                return;
            };
            if *chunk_pos < chunk.len() {
                let n = drq_block(*byte_count_limit, chunk.len() - *chunk_pos);
                dev.buf.clear();
                dev.buf
                    .extend_from_slice(&chunk[*chunk_pos..*chunk_pos + n]);
                *chunk_pos += n;
                dev.pos = 0;
                dev.tf.set_byte_count(n as u16);
                dev.tf.sector_count = spec::IREASON_IO;
                dev.tf.status = spec::STATUS_DRDY | spec::STATUS_DSC | spec::STATUS_DRQ;
                self.raise_irq(d);
                return;
            }
            if split.is_none() {
                self.atapi_complete(d);
                return;
            }
            let cdb = *cdb;
            let mut next_split = *split;
            let target = self.target(d);
            match fetch(&target, &cdb, &mut next_split, 0) {
                Ok(data) => {
                    if let IdeTransfer::AtapiIn {
                        chunk,
                        chunk_pos,
                        split,
                        ..
                    } = &mut self.devices[d].xfer
                    {
                        *chunk = data;
                        *chunk_pos = 0;
                        *split = next_split;
                    }
                }
                Err(sense) => return self.atapi_check_condition(d, sense),
            }
        }
    }

    /// Asks the host for the next PIO DRQ block of an Out command.
    fn atapi_out_request(&mut self, d: usize) {
        let dev = &mut self.devices[d];
        let IdeTransfer::AtapiOut {
            byte_count_limit,
            length,
            collected,
            ..
        } = &dev.xfer
        else {
            return;
        };
        let n = drq_block(*byte_count_limit, length - collected.len());
        dev.buf.clear();
        dev.buf.resize(n, 0);
        dev.pos = 0;
        dev.tf.set_byte_count(n as u16);
        dev.tf.sector_count = 0;
        dev.tf.status = spec::STATUS_DRDY | spec::STATUS_DSC | spec::STATUS_DRQ;
        self.raise_irq(d);
    }

    /// The host has filled a PIO DRQ block of an Out command.
    pub(super) fn atapi_out_block(&mut self, d: usize) {
        let dev = &mut self.devices[d];
        let IdeTransfer::AtapiOut {
            cdb,
            length,
            collected,
            ..
        } = &mut dev.xfer
        else {
            return;
        };
        collected.extend_from_slice(&dev.buf);
        if collected.len() < *length {
            self.atapi_out_request(d);
            return;
        }
        let cdb = *cdb;
        let mut data = std::mem::take(collected);
        self.atapi_execute_out(d, &cdb, &mut data);
    }

    fn atapi_execute_out(&mut self, d: usize, cdb: &[u8; spec::CDB_LEN], data: &mut Vec<u8>) {
        let r = self.target(d).lock().unwrap().execute(cdb, data);
        match r {
            Ok(()) => self.atapi_complete(d),
            Err(sense) => self.atapi_check_condition(d, sense),
        }
    }

    fn atapi_bus_error(&mut self, d: usize) {
        self.end_dma(true, false);
        self.atapi_fail(d, KEY_ABORTED_COMMAND << 4 | spec::ERROR_ABRT);
    }

    /// Moves the data of a pending ATAPI DMA command through the PRD table.
    pub(super) fn run_atapi_dma(&mut self, d: usize) {
        let xfer = std::mem::replace(&mut self.devices[d].xfer, IdeTransfer::Idle);
        let mem = self.mem.clone();
        let mut cursor = PrdCursor::new(self.bm.prd_table);
        match xfer {
            IdeTransfer::AtapiIn {
                cdb,
                mut chunk,
                mut chunk_pos,
                mut split,
                ..
            } => {
                if !self.bm.writes_memory() {
                    warn_limited!(
                        "IDE{}:{d}: BMIC direction does not match the ATAPI data phase",
                        self.index
                    );
                    return self.atapi_bus_error(d);
                }
                loop {
                    if let Err(e) = cursor.write(mem.as_ref(), &chunk[chunk_pos..]) {
                        warn_limited!("IDE{}:{d}: bus-master DMA failed: {e}", self.index);
                        return self.atapi_bus_error(d);
                    }
                    if split.is_none() {
                        break;
                    }
                    match fetch(&self.target(d), &cdb, &mut split, 0) {
                        Ok(data) => {
                            chunk = data;
                            chunk_pos = 0;
                        }
                        Err(sense) => {
                            self.end_dma(false, false);
                            return self.atapi_check_condition(d, sense);
                        }
                    }
                }
                self.end_dma(false, cursor.exhausted());
                self.atapi_complete(d);
            }
            IdeTransfer::AtapiOut { cdb, length, .. } => {
                if self.bm.writes_memory() {
                    warn_limited!(
                        "IDE{}:{d}: BMIC direction does not match the ATAPI data phase",
                        self.index
                    );
                    return self.atapi_bus_error(d);
                }
                let mut data = vec![0u8; length];
                if let Err(e) = cursor.read(mem.as_ref(), &mut data) {
                    warn_limited!("IDE{}:{d}: bus-master DMA failed: {e}", self.index);
                    return self.atapi_bus_error(d);
                }
                self.end_dma(false, cursor.exhausted());
                self.atapi_execute_out(d, &cdb, &mut data);
            }
            other => self.devices[d].xfer = other,
        }
    }
}
