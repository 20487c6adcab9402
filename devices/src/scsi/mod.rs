//! The SCSI command layer shared by the ATAPI (IDE) transport and, later, the SCSI host adapter:
//! targets (a disk, a CD/DVD drive) that decode and execute command descriptor blocks.
//! Transports move the bytes; targets own the command semantics (SPC-3, SBC-2, MMC-5).
//!
//! * [`ScsiDisk`]: a direct-access block device (SBC-2) over a [`vhd::BlockDevice`].
//! * [`ScsiCdrom`]: a CD/DVD-ROM drive (MMC-5) reading an ISO image, with a tray, media
//!   insert/eject and media events.
//!
//! How a transport drives a target:
//! 1. [`ScsiTarget::plan`] decodes the CDB: direction and the most bytes the command moves. A
//!    `length` of 0 always comes with [`Direction::None`]. Every check that needs only the CDB
//!    and the unit's state (unit attention, not ready, invalid fields, LBA range, write
//!    protection, the transfer limit) is made here, so a failing command fails before any data
//!    phase.
//! 2. For [`Direction::Out`] the transport collects `plan.length` bytes from the guest.
//! 3. [`ScsiTarget::execute`] runs the command. For [`Direction::In`] it replaces `data` with the
//!    response: `data.len()` is what the transport sends (often less than `plan.length`, which
//!    for commands with an allocation length is an upper bound). On an error `data` is emptied.
//!    `execute` repeats the checks of `plan`, so calling it alone is also correct.
//! 4. On `Err(sense)` the status is CHECK CONDITION; the target keeps the sense for
//!    REQUEST SENSE (and [`ScsiTarget::sense`]) until the next command.
//!
//! Unit attention: each target reports POWER ON, RESET (06/29/00) once after creation or
//! [`ScsiDisk::reset`]/[`ScsiCdrom::reset`]; the CD also reports NOT READY TO READY CHANGE,
//! MEDIUM MAY HAVE CHANGED (06/28/00) after a medium arrives. INQUIRY, REPORT LUNS and (CD)
//! GET CONFIGURATION and GET EVENT STATUS NOTIFICATION run without reporting or clearing it;
//! REQUEST SENSE returns it and clears it; every other command fails with it once (SPC-3 5.9.7,
//! MMC-5 4.1.6.1).
//!
//! Transfer limit: a command that would move more than [`MAX_TRANSFER_BYTES`] (16 MiB) fails
//! with ILLEGAL REQUEST, INVALID FIELD IN CDB (05/24/00) instead of allocating what the guest
//! asked for. The disk advertises the limit in its Block Limits VPD page, so Linux's `sd` sizes
//! its requests under it; `sr` and Windows never come near it. Allocation lengths only bound
//! what is sent: responses are built at their natural size and cut.

/// The `ScsiTarget` methods every target shares: `plan` and `execute` decode the CDB with the
/// target's own `prepare(cdb) -> Result<(Command, Plan), Sense>`, `execute` then calls its
/// `run(cmd, Cdb, data)`; a failure is kept in `cond.sense` for REQUEST SENSE.
macro_rules! impl_scsi_target {
    ($target:ty) => {
        impl ScsiTarget for $target {
            fn plan(&mut self, cdb: &[u8]) -> Result<Plan, Sense> {
                let r = self.prepare(cdb).map(|(_, plan)| plan);
                if let Err(s) = r {
                    self.cond.sense = s;
                }
                r
            }

            fn execute(&mut self, cdb: &[u8], data: &mut Vec<u8>) -> Result<(), Sense> {
                let r = self.prepare(cdb).and_then(|(cmd, plan)| {
                    if plan.direction != Direction::Out {
                        data.clear();
                    }
                    self.run(cmd, Cdb(cdb), data)
                });
                if let Err(s) = r {
                    self.cond.sense = s;
                    data.clear();
                }
                r
            }

            fn sense(&self) -> Sense {
                self.cond.sense
            }
        }
    };
}

mod cdrom;
mod disk;
pub mod spec;

#[cfg(test)]
pub(crate) mod testing;

pub use cdrom::{ScsiCdrom, ScsiCdromState, CD_BLOCK};
pub use disk::{ScsiDisk, ScsiDiskState};

use spec::key;

/// The most bytes one command may transfer; larger transfers fail with 05/24/00.
pub const MAX_TRANSFER_BYTES: usize = 16 << 20;

/// SCSI status GOOD.
pub const STATUS_GOOD: u8 = 0x00;
/// SCSI status CHECK CONDITION: sense data explains.
pub const STATUS_CHECK_CONDITION: u8 = 0x02;

/// Fixed-format sense: key, additional sense code and qualifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
}

/// Which way a command's data moves, seen from the initiator (the guest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    None,
    /// Device to guest (READ, INQUIRY, ...).
    In,
    /// Guest to device (WRITE, MODE SELECT).
    Out,
}

/// What a command will transfer, known from its CDB before any data moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub direction: Direction,
    /// Bytes the command transfers at most (the allocation or transfer length).
    pub length: usize,
}

/// A logical unit that executes SCSI commands.
pub trait ScsiTarget: Send {
    /// Decodes `cdb`: what it transfers. An error is the sense for a CHECK CONDITION (the
    /// target also keeps it for REQUEST SENSE).
    fn plan(&mut self, cdb: &[u8]) -> Result<Plan, Sense>;
    /// Executes `cdb`. For `In` commands the target fills `data` (at most `plan.length`
    /// bytes); for `Out` commands `data` holds what the guest sent.
    fn execute(&mut self, cdb: &[u8], data: &mut Vec<u8>) -> Result<(), Sense>;
    /// The sense data REQUEST SENSE would return now.
    fn sense(&self) -> Sense;
}

impl Sense {
    pub const fn new(key: u8, asc: u8, ascq: u8) -> Sense {
        Sense { key, asc, ascq }
    }

    pub const NO_SENSE: Sense = Sense::new(key::NO_SENSE, 0x00, 0x00);
    /// 02/3A/00 MEDIUM NOT PRESENT.
    pub const MEDIUM_NOT_PRESENT: Sense = Sense::new(key::NOT_READY, 0x3a, 0x00);
    /// 02/3A/02 MEDIUM NOT PRESENT - TRAY OPEN.
    pub const MEDIUM_NOT_PRESENT_TRAY_OPEN: Sense = Sense::new(key::NOT_READY, 0x3a, 0x02);
    /// 02/53/02 MEDIUM REMOVAL PREVENTED (a medium is loaded).
    pub const NOT_READY_REMOVAL_PREVENTED: Sense = Sense::new(key::NOT_READY, 0x53, 0x02);
    /// 03/0C/00 WRITE ERROR.
    pub const WRITE_ERROR: Sense = Sense::new(key::MEDIUM_ERROR, 0x0c, 0x00);
    /// 03/11/00 UNRECOVERED READ ERROR.
    pub const UNRECOVERED_READ_ERROR: Sense = Sense::new(key::MEDIUM_ERROR, 0x11, 0x00);
    /// 05/1A/00 PARAMETER LIST LENGTH ERROR.
    pub const PARAMETER_LIST_LENGTH_ERROR: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x1a, 0x00);
    /// 05/20/00 INVALID COMMAND OPERATION CODE.
    pub const INVALID_OPCODE: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x20, 0x00);
    /// 05/21/00 LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub const LBA_OUT_OF_RANGE: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x21, 0x00);
    /// 05/24/00 INVALID FIELD IN CDB.
    pub const INVALID_FIELD_IN_CDB: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x24, 0x00);
    /// 05/25/00 LOGICAL UNIT NOT SUPPORTED (for transports addressing a missing LUN).
    pub const LUN_NOT_SUPPORTED: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x25, 0x00);
    /// 05/30/02 CANNOT READ MEDIUM - INCOMPATIBLE FORMAT.
    pub const INCOMPATIBLE_MEDIUM: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x30, 0x02);
    /// 05/39/00 SAVING PARAMETERS NOT SUPPORTED.
    pub const SAVING_PARAMETERS_NOT_SUPPORTED: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x39, 0x00);
    /// 05/53/02 MEDIUM REMOVAL PREVENTED.
    pub const MEDIUM_REMOVAL_PREVENTED: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x53, 0x02);
    /// 05/64/00 ILLEGAL MODE FOR THIS TRACK.
    pub const ILLEGAL_MODE_FOR_TRACK: Sense = Sense::new(key::ILLEGAL_REQUEST, 0x64, 0x00);
    /// 06/28/00 NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED.
    pub const MEDIUM_CHANGED: Sense = Sense::new(key::UNIT_ATTENTION, 0x28, 0x00);
    /// 06/29/00 POWER ON, RESET, OR BUS DEVICE RESET OCCURRED.
    pub const POWER_ON_RESET: Sense = Sense::new(key::UNIT_ATTENTION, 0x29, 0x00);
    /// 07/27/00 WRITE PROTECTED.
    pub const WRITE_PROTECTED: Sense = Sense::new(key::DATA_PROTECT, 0x27, 0x00);
    /// 0B/4B/00 DATA PHASE ERROR: the transport delivered less data than the command needs.
    pub const DATA_PHASE_ERROR: Sense = Sense::new(key::ABORTED_COMMAND, 0x4b, 0x00);
    /// 0E/1D/00 MISCOMPARE DURING VERIFY OPERATION.
    pub const MISCOMPARE_DURING_VERIFY: Sense = Sense::new(key::MISCOMPARE, 0x1d, 0x00);

    /// True for NO SENSE with no additional code (nothing to report).
    pub fn is_none(&self) -> bool {
        *self == Sense::NO_SENSE
    }

    /// Fixed-format sense data (SPC-3 4.5.3): response code 0x70 (current error), 18 bytes.
    pub fn fixed_format(&self) -> [u8; 18] {
        let mut b = [0u8; 18];
        b[0] = 0x70;
        b[2] = self.key & 0x0f;
        b[7] = 10; // additional sense length
        b[12] = self.asc;
        b[13] = self.ascq;
        b
    }

    /// Descriptor-format sense data (SPC-3 4.5.2) with no descriptors: 8 bytes.
    pub fn descriptor_format(&self) -> [u8; 8] {
        [0x72, self.key & 0x0f, self.asc, self.ascq, 0, 0, 0, 0]
    }
}

impl Plan {
    /// A plan moving `length` bytes `direction`; a zero length is [`Direction::None`].
    pub fn new(direction: Direction, length: usize) -> Plan {
        if length == 0 {
            Plan::NONE
        } else {
            Plan { direction, length }
        }
    }

    /// A command without a data phase.
    pub const NONE: Plan = Plan {
        direction: Direction::None,
        length: 0,
    };
}

/// The CDB length implied by an operation code's group (SPC-3 4.3.2), or `None` for the
/// reserved and vendor-specific groups (no command of these targets lives there).
/// Transports that fetch the CDB byte by byte (a parallel SCSI adapter) use this.
pub fn cdb_length(opcode: u8) -> Option<usize> {
    match opcode >> 5 {
        0 => Some(6),
        1 | 2 => Some(10),
        4 => Some(16),
        5 => Some(12),
        _ => None,
    }
}

/// What INQUIRY reports about a logical unit. Strings are cut to their field (vendor 8,
/// product 16, revision 4 bytes, serial 20) and padded with spaces; characters outside printable
/// ASCII become `?`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub vendor: String,
    pub product: String,
    pub revision: String,
    /// Unit serial number (VPD page 0x80, and part of the device identifier of page 0x83).
    pub serial: String,
}

impl Identity {
    pub fn new(vendor: &str, product: &str, revision: &str, serial: &str) -> Identity {
        Identity {
            vendor: vendor.to_string(),
            product: product.to_string(),
            revision: revision.to_string(),
            serial: serial.to_string(),
        }
    }

    /// What Virtual Server's SCSI disks answered: "Msft    Virtual Disk    1.0 ".
    pub fn virtual_disk() -> Identity {
        Identity::new("Msft", "Virtual Disk", "1.0", "")
    }

    /// What Virtual Server's CD drive answered: "Msft    Virtual CD/ROM  1.0 ".
    pub fn virtual_cdrom() -> Identity {
        Identity::new("Msft", "Virtual CD/ROM", "1.0", "")
    }
}

/// Longest serial number reported.
const SERIAL_MAX: usize = 20;

/// `s` as a fixed-width, space-padded ASCII field.
fn ascii_field(s: &str, width: usize) -> Vec<u8> {
    let mut out: Vec<u8> = s
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c as u8
            } else {
                b'?'
            }
        })
        .take(width)
        .collect();
    out.resize(width, b' ');
    out
}

/// Serial number bytes (trimmed, no padding).
fn serial_bytes(id: &Identity) -> Vec<u8> {
    let mut s = ascii_field(&id.serial, SERIAL_MAX);
    while s.last() == Some(&b' ') {
        s.pop();
    }
    s
}

/// Reads CDB fields; bytes past the end of a short CDB read as zero, so decoding never indexes
/// out of bounds (targets check the length against [`cdb_length`] first anyway).
#[derive(Clone, Copy)]
pub(crate) struct Cdb<'a>(pub &'a [u8]);

impl Cdb<'_> {
    pub fn opcode(&self) -> u8 {
        self.u8(0)
    }
    pub fn u8(&self, i: usize) -> u8 {
        self.0.get(i).copied().unwrap_or(0)
    }
    pub fn be16(&self, i: usize) -> u16 {
        u16::from_be_bytes([self.u8(i), self.u8(i + 1)])
    }
    pub fn be24(&self, i: usize) -> u32 {
        u32::from_be_bytes([0, self.u8(i), self.u8(i + 1), self.u8(i + 2)])
    }
    pub fn be32(&self, i: usize) -> u32 {
        u32::from_be_bytes([self.u8(i), self.u8(i + 1), self.u8(i + 2), self.u8(i + 3)])
    }
    pub fn be64(&self, i: usize) -> u64 {
        (u64::from(self.be32(i)) << 32) | u64::from(self.be32(i + 4))
    }
}

/// Checks the CDB's length against its opcode group: no opcode at all is an invalid opcode, a
/// CDB shorter than its group an invalid field (SPC-3 4.3.2).
pub(crate) fn check_cdb(cdb: &[u8]) -> Result<Cdb<'_>, Sense> {
    let opcode = *cdb.first().ok_or(Sense::INVALID_OPCODE)?;
    let need = cdb_length(opcode).ok_or(Sense::INVALID_OPCODE)?;
    if cdb.len() < need {
        return Err(Sense::INVALID_FIELD_IN_CDB);
    }
    Ok(Cdb(cdb))
}

/// Bytes of `blocks` blocks of `block_size`, or 05/24/00 above [`MAX_TRANSFER_BYTES`].
pub(crate) fn transfer_bytes(blocks: u64, block_size: usize) -> Result<usize, Sense> {
    blocks
        .checked_mul(block_size as u64)
        .filter(|&n| n <= MAX_TRANSFER_BYTES as u64)
        .map(|n| n as usize)
        .ok_or(Sense::INVALID_FIELD_IN_CDB)
}

/// Checks that `count` blocks from `lba` lie within `capacity` blocks (05/21/00 otherwise).
pub(crate) fn check_range(lba: u64, count: u64, capacity: u64) -> Result<(), Sense> {
    // A zero-length transfer still names an LBA, which must exist (SBC-2 4.4).
    match lba.checked_add(count) {
        Some(end) if end <= capacity && lba < capacity => Ok(()),
        _ => Err(Sense::LBA_OUT_OF_RANGE),
    }
}

/// Replaces `data` with at most `alloc` bytes of `response`.
pub(crate) fn reply(data: &mut Vec<u8>, response: &[u8], alloc: usize) {
    data.clear();
    data.extend_from_slice(&response[..response.len().min(alloc)]);
}

/// The unit-attention and sense bookkeeping every logical unit shares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Conditions {
    /// Sense of the last command (NO SENSE after a good one).
    pub sense: Sense,
    /// A pending unit attention.
    pub unit_attention: Option<Sense>,
}

impl Conditions {
    /// After power-on: the power-on unit attention is pending.
    pub fn power_on() -> Conditions {
        Conditions {
            sense: Sense::NO_SENSE,
            unit_attention: Some(Sense::POWER_ON_RESET),
        }
    }

    /// Queues a unit attention. POWER ON, RESET outranks the others and is not replaced
    /// (SPC-3 5.9.7: it reports that everything may have changed).
    pub fn raise(&mut self, ua: Sense) {
        if self.unit_attention != Some(Sense::POWER_ON_RESET) {
            self.unit_attention = Some(ua);
        }
    }

    /// What REQUEST SENSE returns, clearing it: the last command's sense, else a pending unit
    /// attention, else NO SENSE.
    pub fn take_for_request_sense(&mut self) -> Sense {
        if !self.sense.is_none() {
            std::mem::take(&mut self.sense)
        } else {
            self.unit_attention.take().unwrap_or_default()
        }
    }
}

/// REQUEST SENSE (SPC-3 6.27): plan.
pub(crate) fn plan_request_sense(cdb: Cdb) -> Plan {
    let size = if cdb.u8(1) & 0x01 != 0 { 8 } else { 18 };
    Plan::new(Direction::In, size.min(cdb.u8(4) as usize))
}

/// REQUEST SENSE: the response for `sense` in the format the CDB's DESC bit asks for.
pub(crate) fn request_sense(cdb: Cdb, sense: Sense, data: &mut Vec<u8>) {
    let alloc = cdb.u8(4) as usize;
    if cdb.u8(1) & 0x01 != 0 {
        reply(data, &sense.descriptor_format(), alloc);
    } else {
        reply(data, &sense.fixed_format(), alloc);
    }
}

/// INQUIRY's CDB (SPC-3 6.4): EVPD and the page code, and the allocation length.
pub(crate) struct InquiryCdb {
    pub vpd: Option<u8>,
    pub alloc: usize,
}

pub(crate) fn parse_inquiry(cdb: Cdb) -> Result<InquiryCdb, Sense> {
    let evpd = cdb.u8(1) & 0x01 != 0;
    // CMDDT (obsolete) is refused; a page code without EVPD is invalid.
    if cdb.u8(1) & 0x02 != 0 || (!evpd && cdb.u8(2) != 0) {
        return Err(Sense::INVALID_FIELD_IN_CDB);
    }
    Ok(InquiryCdb {
        vpd: evpd.then(|| cdb.u8(2)),
        alloc: cdb.be16(3) as usize,
    })
}

/// Standard INQUIRY data (SPC-3 6.4.2), 36 bytes.
pub(crate) fn standard_inquiry(device_type: u8, removable: bool, id: &Identity) -> Vec<u8> {
    let mut b = vec![0u8; 36];
    b[0] = device_type;
    b[1] = if removable { 0x80 } else { 0 };
    b[2] = spec::VERSION_SPC3;
    b[3] = spec::RESPONSE_DATA_FORMAT;
    b[4] = 36 - 5; // additional length
    b[8..16].copy_from_slice(&ascii_field(&id.vendor, 8));
    b[16..32].copy_from_slice(&ascii_field(&id.product, 16));
    b[32..36].copy_from_slice(&ascii_field(&id.revision, 4));
    b
}

/// A VPD page: the 4-byte header and `payload`.
pub(crate) fn vpd_page(device_type: u8, page: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![device_type, page];
    b.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    b.extend_from_slice(payload);
    b
}

/// Unit Serial Number VPD page (SPC-3 7.6.10).
pub(crate) fn vpd_serial(device_type: u8, id: &Identity) -> Vec<u8> {
    vpd_page(
        device_type,
        spec::vpd::UNIT_SERIAL_NUMBER,
        &serial_bytes(id),
    )
}

/// Device Identification VPD page (SPC-3 7.6.4) with one designator: T10 vendor ID based
/// (type 1, ASCII), vendor, product and serial number.
pub(crate) fn vpd_device_id(device_type: u8, id: &Identity) -> Vec<u8> {
    let mut ident = ascii_field(&id.vendor, 8);
    ident.extend_from_slice(&ascii_field(&id.product, 16));
    ident.extend_from_slice(&serial_bytes(id));
    let mut d = vec![
        0x02,              // protocol identifier 0, code set 2 (ASCII)
        0x01,              // PIV 0, association 0 (logical unit), designator type 1 (T10)
        0x00,              // reserved
        ident.len() as u8, // designator length
    ];
    d.extend_from_slice(&ident);
    vpd_page(device_type, spec::vpd::DEVICE_IDENTIFICATION, &d)
}

/// MODE SENSE(6)/(10)'s CDB (SPC-3 6.9, 6.10).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ModeSenseCdb {
    pub ten: bool,
    /// Disable block descriptors.
    pub dbd: bool,
    /// Long LBA block descriptor accepted (10-byte CDB only).
    pub llbaa: bool,
    pub pc: u8,
    pub page: u8,
    pub alloc: usize,
}

pub(crate) fn parse_mode_sense(cdb: Cdb) -> Result<ModeSenseCdb, Sense> {
    let ten = cdb.opcode() == spec::op::MODE_SENSE_10;
    let ms = ModeSenseCdb {
        ten,
        dbd: cdb.u8(1) & 0x08 != 0,
        llbaa: ten && cdb.u8(1) & 0x10 != 0,
        pc: cdb.u8(2) >> 6,
        page: cdb.u8(2) & 0x3f,
        alloc: if ten {
            cdb.be16(7) as usize
        } else {
            cdb.u8(4) as usize
        },
    };
    if ms.pc == spec::page::PC_SAVED {
        return Err(Sense::SAVING_PARAMETERS_NOT_SUPPORTED);
    }
    // No subpages; 0xFF ("all subpages") is accepted with page 0x3F only.
    let subpage = cdb.u8(3);
    if subpage != 0 && !(subpage == 0xff && ms.page == spec::page::ALL) {
        return Err(Sense::INVALID_FIELD_IN_CDB);
    }
    Ok(ms)
}

/// The most a MODE SENSE response can be: the (10) length field's range.
pub(crate) fn plan_mode_sense(ms: &ModeSenseCdb) -> Plan {
    Plan::new(
        Direction::In,
        ms.alloc.min(if ms.ten { 0xffff } else { 0xff }),
    )
}

/// Builds a MODE SENSE response: header, an optional block descriptor (blocks, block length)
/// and `pages`.
pub(crate) fn mode_sense_response(
    ms: &ModeSenseCdb,
    medium_type: u8,
    device_specific: u8,
    block: Option<(u64, u32)>,
    pages: &[u8],
) -> Vec<u8> {
    let block = block.filter(|_| !ms.dbd);
    let long = ms.llbaa && block.is_some_and(|(n, _)| n > 0xff_ffff);
    let mut desc = Vec::new();
    if let Some((blocks, len)) = block {
        if long {
            desc.extend_from_slice(&blocks.to_be_bytes());
            desc.extend_from_slice(&[0; 4]);
            desc.extend_from_slice(&len.to_be_bytes());
        } else {
            // Short descriptor: density code, 24-bit block count (all ones if it does not fit).
            let n = blocks.min(0xff_ffff) as u32;
            desc.push(0);
            desc.extend_from_slice(&n.to_be_bytes()[1..]);
            desc.push(0);
            desc.extend_from_slice(&len.to_be_bytes()[1..]);
        }
    }
    let mut b = if ms.ten {
        let total = 8 + desc.len() + pages.len();
        let mut h = vec![0u8; 8];
        h[0..2].copy_from_slice(&((total - 2) as u16).to_be_bytes());
        h[2] = medium_type;
        h[3] = device_specific;
        h[4] = long as u8;
        h[6..8].copy_from_slice(&(desc.len() as u16).to_be_bytes());
        h
    } else {
        let total = 4 + desc.len() + pages.len();
        vec![
            (total - 1).min(0xff) as u8,
            medium_type,
            device_specific,
            desc.len() as u8,
        ]
    };
    b.extend_from_slice(&desc);
    b.extend_from_slice(pages);
    b
}

/// The parameter list length of MODE SELECT(6)/(10).
pub(crate) fn mode_select_length(cdb: Cdb) -> usize {
    if cdb.opcode() == spec::op::MODE_SELECT_10 {
        cdb.be16(7) as usize
    } else {
        cdb.u8(4) as usize
    }
}

/// The mode pages of a MODE SELECT parameter list (header and block descriptors skipped), as
/// (page code, page bytes including its header). Parsing stops at the first truncated page.
pub(crate) fn mode_select_pages(ten: bool, list: &[u8]) -> Vec<(u8, &[u8])> {
    let (header, bd_len) = if ten {
        (8, Cdb(list).be16(6) as usize)
    } else {
        (4, Cdb(list).u8(3) as usize)
    };
    let mut pages = Vec::new();
    let mut at = header + bd_len;
    while at + 2 <= list.len() {
        let code = list[at] & 0x3f;
        let spf = list[at] & 0x40 != 0;
        let (hdr, len) = if spf {
            (4, Cdb(&list[at..]).be16(2) as usize)
        } else {
            (2, list[at + 1] as usize)
        };
        let Some(page) = list.get(at..at + hdr + len) else {
            break;
        };
        pages.push((code, page));
        at += hdr + len;
    }
    pages
}

/// REPORT LUNS (SPC-3 6.21): one logical unit, LUN 0.
pub(crate) fn plan_report_luns(cdb: Cdb) -> Result<Plan, Sense> {
    let alloc = cdb.be32(6) as usize;
    if alloc < 16 {
        return Err(Sense::INVALID_FIELD_IN_CDB);
    }
    Ok(Plan::new(Direction::In, alloc.min(16)))
}

pub(crate) fn report_luns(cdb: Cdb, data: &mut Vec<u8>) {
    let mut b = [0u8; 16];
    b[3] = 8; // LUN list length: one entry
    reply(data, &b, cdb.be32(6) as usize);
}

/// The sense for a failed backend read.
pub(crate) fn read_error(what: &str, e: vhd::Error) -> Sense {
    crate::bus::warn_limited!("scsi {what}: read failed: {e}");
    match e {
        vhd::Error::OutOfRange { .. } => Sense::LBA_OUT_OF_RANGE,
        _ => Sense::UNRECOVERED_READ_ERROR,
    }
}

/// The sense for a failed backend write or flush.
pub(crate) fn write_error(what: &str, e: vhd::Error) -> Sense {
    crate::bus::warn_limited!("scsi {what}: write failed: {e}");
    match e {
        vhd::Error::ReadOnly { .. } => Sense::WRITE_PROTECTED,
        vhd::Error::OutOfRange { .. } => Sense::LBA_OUT_OF_RANGE,
        _ => Sense::WRITE_ERROR,
    }
}
