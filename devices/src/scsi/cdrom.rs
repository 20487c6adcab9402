//! A CD/DVD-ROM drive (MMC-5, SPC-3) reading ISO images: the ATAPI drive of the PIIX4's
//! secondary channel, and later a SCSI CD behind the AIC-7870.
//!
//! The medium is a [`vhd::BlockDevice`] of 512-byte sectors (an ISO file opened as a read-only
//! `vhd::RawDisk`); the drive reports 2048-byte blocks, so block `n` is sectors `4n..4n+4` and
//! a trailing partial block is not part of the disc. Discs of more than 80 minutes of CD
//! (360 000 blocks) are DVD-ROM, smaller ones CD-ROM (the current profile of GET
//! CONFIGURATION); either way there is one session with one data track.
//!
//! Commands: TEST UNIT READY, REQUEST SENSE, INQUIRY (VPD 0x00, 0x80, 0x83), READ CAPACITY,
//! READ(10), READ(12), READ CD (user data, or raw 2352-byte sectors with a synthesized sync and
//! header and zero EDC/ECC), SEEK(10), READ TOC/PMA/ATIP (formats 0, 1, 2; the format may also
//! come in the old SFF-8020 place, CDB byte 9 bits 7:6, as Linux's multisession probe sends it),
//! READ SUB-CHANNEL (minimal), READ DISC INFORMATION, READ TRACK INFORMATION, READ DVD
//! STRUCTURE (formats 0x00, 0x01, 0xFF), GET CONFIGURATION, GET EVENT STATUS NOTIFICATION
//! (polled; operational change and media classes), MODE SENSE(6/10) (pages 0x01, 0x0D, 0x1A,
//! 0x2A, 0x3F), MODE SELECT(6/10) and SET STREAMING (accepted, ignored), SET CD SPEED,
//! GET PERFORMANCE, MECHANISM STATUS, START STOP UNIT (tray eject/load), PREVENT ALLOW MEDIUM
//! REMOVAL, REPORT LUNS.
//!
//! Media changes, as guests see them:
//! * A medium arriving (host [`ScsiCdrom::insert`], or the guest closing the tray on one)
//!   queues the media event NewMedia and an operational change (the current profile changed),
//!   and raises the unit attention 06/28/00.
//! * When the host swaps the disc while the guest never saw the drive empty, the next command
//!   first fails with NOT READY, MEDIUM NOT PRESENT and only then with the unit attention: a
//!   guest that does not poll GET EVENT STATUS NOTIFICATION (older Windows, boot loaders) would
//!   otherwise never notice the change. QEMU's ATAPI CD does the same for the same reason.
//! * A medium going away (host [`ScsiCdrom::eject`], or the guest opening the tray) queues
//!   MediaRemoval and an operational change.
//! * While the guest prevents removal, the host's `eject` is refused and queues the media
//!   event EjectRequest, which Linux and Windows answer by unlocking and ejecting.
//!
//! The event header's length counts the two header bytes after the length field (6 with one
//! descriptor): Windows' class driver subtracts 2 and requires 4 bytes of event data.

use std::sync::Arc;

use vhd::BlockDevice;

use super::spec::{self, feature, gesn, op, page, profile};
use super::{
    check_cdb, check_range, mode_select_length, mode_sense_response, parse_inquiry,
    parse_mode_sense, plan_mode_sense, plan_report_luns, plan_request_sense, read_error, reply,
    report_luns, request_sense, standard_inquiry, transfer_bytes, vpd_device_id, vpd_page,
    vpd_serial, Cdb, Conditions, Direction, Identity, InquiryCdb, ModeSenseCdb, Plan, ScsiTarget,
    Sense,
};
use crate::bus::warn_limited;

/// Logical block size of CD and DVD data.
pub const CD_BLOCK: usize = 2048;
/// Bytes of a raw CD sector (READ CD with all header and EDC/ECC fields).
const RAW_SECTOR: usize = 2352;
/// Backend sectors per block.
const SECTORS_PER_BLOCK: u64 = (CD_BLOCK / 512) as u64;
/// The largest CD: 80 minutes of 75 blocks a second. Larger images are DVDs.
const CD_MAX_BLOCKS: u64 = 80 * 60 * 75;
/// The lead-out's track number in the TOC.
const LEAD_OUT: u8 = 0xaa;
/// Reported read speed, kB/s: 24x CD (1x = 176 kB/s).
const READ_SPEED_KBS: u16 = 24 * 176;
/// Event classes this drive reports (request bit mask).
const SUPPORTED_EVENTS: u8 = (1 << gesn::CLASS_OPERATIONAL_CHANGE) | (1 << gesn::CLASS_MEDIA);

/// A CD/DVD-ROM drive with a tray: the logical unit at LUN 0 of its target.
pub struct ScsiCdrom {
    // Fixed configuration.
    identity: Identity,
    interface: u32,
    // Runtime handles.
    media: Option<Arc<dyn BlockDevice>>,
    // Guest-visible state.
    cond: Conditions,
    tray_open: bool,
    locked: bool,
    /// A disc was swapped behind the guest's back: report NOT READY once before the UA.
    swap_not_ready: bool,
    /// The guest has seen the drive without a medium since the last medium arrived.
    absence_seen: bool,
    events: Events,
}

/// Media and operational change events not yet reported by GET EVENT STATUS NOTIFICATION.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Events {
    removal: bool,
    new_media: bool,
    eject_request: bool,
    operational_change: bool,
}

/// The guest-visible state of a [`ScsiCdrom`], for snapshots. The medium itself is not part of
/// it: the VMM reopens the same image (or none, as `medium_loaded` says) before restoring.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScsiCdromState {
    /// Sense data of the last command.
    pub sense: Sense,
    /// A unit attention not yet reported.
    pub unit_attention: Option<Sense>,
    /// A medium was loaded when the state was taken (informational; restore does not change
    /// the medium).
    pub medium_loaded: bool,
    pub tray_open: bool,
    /// The guest prevents medium removal.
    pub locked: bool,
    /// The NOT READY that precedes the unit attention after a swap is still to be reported.
    pub swap_not_ready: bool,
    /// The guest has seen the drive empty since the last medium arrived.
    pub absence_seen: bool,
    /// Pending GET EVENT STATUS NOTIFICATION events.
    pub event_media_removal: bool,
    pub event_new_media: bool,
    pub event_eject_request: bool,
    pub event_operational_change: bool,
}

/// A decoded command.
enum Command {
    TestUnitReady,
    RequestSense,
    Inquiry(InquiryCdb),
    ModeSense(ModeSenseCdb),
    StartStop {
        load_eject: bool,
        start: bool,
    },
    PreventAllow(bool),
    ReadCapacity,
    Read {
        lba: u32,
        count: u32,
        raw: bool,
    },
    ReadToc {
        format: u8,
        msf: bool,
        track: u8,
        alloc: usize,
    },
    ReadSubChannel {
        msf: bool,
        subq: bool,
        format: u8,
        alloc: usize,
    },
    ReadDiscInformation {
        alloc: usize,
    },
    ReadTrackInformation {
        alloc: usize,
    },
    ReadDvdStructure {
        format: u8,
        alloc: usize,
    },
    GetConfiguration {
        rt: u8,
        start: u16,
        alloc: usize,
    },
    GetEventStatus {
        classes: u8,
        alloc: usize,
    },
    GetPerformance {
        kind: u8,
        data_type: u8,
        max: u16,
    },
    MechanismStatus {
        alloc: usize,
    },
    ReportLuns,
    /// Accepted without effect: SEEK, SET CD SPEED, MODE SELECT, SET STREAMING (the last two
    /// take and ignore their parameter list).
    Nop,
}

impl ScsiCdrom {
    /// A drive with `media` loaded (or empty), tray closed, answering INQUIRY as Virtual
    /// Server's drive did and reporting the ATAPI interface. It reports the power-on unit
    /// attention once.
    pub fn new(media: Option<Arc<dyn BlockDevice>>) -> ScsiCdrom {
        let absence_seen = media.is_none();
        ScsiCdrom {
            identity: Identity::virtual_cdrom(),
            interface: spec::interface::ATAPI,
            media,
            cond: Conditions::power_on(),
            tray_open: false,
            locked: false,
            swap_not_ready: false,
            absence_seen,
            events: Events::default(),
        }
    }

    /// Replaces the INQUIRY identity.
    pub fn with_identity(mut self, identity: Identity) -> ScsiCdrom {
        self.identity = identity;
        self
    }

    /// Sets the physical interface standard of the Core feature ([`spec::interface`]):
    /// ATAPI (the default) for the IDE drive, SCSI behind a SCSI adapter.
    pub fn with_interface(mut self, interface: u32) -> ScsiCdrom {
        self.interface = interface;
        self
    }

    /// Puts `media` in the drive and closes the tray. A medium already there is replaced.
    pub fn insert(&mut self, media: Arc<dyn BlockDevice>) {
        let was_present = self.media_present();
        self.media = Some(media);
        self.tray_open = false;
        if was_present {
            self.medium_left();
        }
        if self.media_present() {
            self.medium_arrived(false);
        }
    }

    /// Takes the medium out, as the host's "eject" button. Refused with NOT READY, MEDIUM
    /// REMOVAL PREVENTED (02/53/02) while the guest prevents removal; the guest is then sent
    /// an eject request event.
    pub fn eject(&mut self) -> Result<(), Sense> {
        if self.locked && !self.tray_open && self.media.is_some() {
            self.events.eject_request = true;
            return Err(Sense::NOT_READY_REMOVAL_PREVENTED);
        }
        self.force_eject();
        Ok(())
    }

    /// Takes the medium out even if the guest prevents removal (the image must go away).
    pub fn force_eject(&mut self) {
        let was_present = self.media_present();
        self.media = None;
        if was_present {
            self.medium_left();
        }
    }

    /// A medium is loaded and the tray closed: the guest can read.
    pub fn has_media(&self) -> bool {
        self.media_present()
    }

    /// The medium in the drive (possibly with the tray open).
    pub fn media(&self) -> Option<&Arc<dyn BlockDevice>> {
        self.media.as_ref()
    }

    /// The guest opened the tray (START STOP UNIT with LoEj).
    pub fn tray_open(&self) -> bool {
        self.tray_open
    }

    /// The guest prevents medium removal.
    pub fn locked(&self) -> bool {
        self.locked
    }

    /// A hard reset (power cycle, ATAPI DEVICE RESET or bus reset): removal allowed again,
    /// pending events and sense dropped, the power-on unit attention pending.
    pub fn reset(&mut self) {
        self.cond = Conditions::power_on();
        self.locked = false;
        self.swap_not_ready = false;
        self.events = Events::default();
    }

    pub fn state(&self) -> ScsiCdromState {
        ScsiCdromState {
            sense: self.cond.sense,
            unit_attention: self.cond.unit_attention,
            medium_loaded: self.media.is_some(),
            tray_open: self.tray_open,
            locked: self.locked,
            swap_not_ready: self.swap_not_ready,
            absence_seen: self.absence_seen,
            event_media_removal: self.events.removal,
            event_new_media: self.events.new_media,
            event_eject_request: self.events.eject_request,
            event_operational_change: self.events.operational_change,
        }
    }

    pub fn restore(&mut self, state: &ScsiCdromState) {
        self.cond = Conditions {
            sense: state.sense,
            unit_attention: state.unit_attention,
        };
        self.tray_open = state.tray_open;
        self.locked = state.locked;
        self.swap_not_ready = state.swap_not_ready;
        self.absence_seen = state.absence_seen;
        self.events = Events {
            removal: state.event_media_removal,
            new_media: state.event_new_media,
            eject_request: state.event_eject_request,
            operational_change: state.event_operational_change,
        };
    }

    /// Capacity in 2048-byte blocks (0 without a medium).
    pub fn blocks(&self) -> u64 {
        self.media.as_ref().map_or(0, |m| {
            (m.sectors() / SECTORS_PER_BLOCK).min(u64::from(u32::MAX))
        })
    }

    fn media_present(&self) -> bool {
        !self.tray_open && self.blocks() > 0
    }

    fn is_dvd(&self) -> bool {
        self.blocks() > CD_MAX_BLOCKS
    }

    fn current_profile(&self) -> u16 {
        match (self.media_present(), self.is_dvd()) {
            (false, _) => profile::NONE,
            (true, false) => profile::CD_ROM,
            (true, true) => profile::DVD_ROM,
        }
    }

    fn medium_arrived(&mut self, by_guest: bool) {
        self.events.new_media = true;
        self.events.operational_change = true;
        if !by_guest && !self.absence_seen {
            self.swap_not_ready = true;
        } else {
            self.cond.raise(Sense::MEDIUM_CHANGED);
        }
        self.absence_seen = false;
    }

    fn medium_left(&mut self) {
        self.events.new_media = false;
        self.events.removal = true;
        self.events.operational_change = true;
        self.swap_not_ready = false;
    }

    /// NOT READY, MEDIUM NOT PRESENT, noting that the guest has now seen the drive empty.
    fn not_present(&mut self) -> Sense {
        self.absence_seen = true;
        if self.tray_open {
            Sense::MEDIUM_NOT_PRESENT_TRAY_OPEN
        } else {
            Sense::MEDIUM_NOT_PRESENT
        }
    }

    /// Checks common to every command (unit attention, the swap's NOT READY, no medium for
    /// the commands that need one, MMC-5 4.1.6 and 4.1.8), then decodes it.
    fn prepare(&mut self, cdb: &[u8]) -> Result<(Command, Plan), Sense> {
        let cdb = check_cdb(cdb)?;
        let opcode = cdb.opcode();
        if opcode != op::REQUEST_SENSE {
            self.cond.sense = Sense::NO_SENSE;
        }
        let ua_exempt = matches!(
            opcode,
            op::INQUIRY
                | op::REQUEST_SENSE
                | op::REPORT_LUNS
                | op::GET_CONFIGURATION
                | op::GET_EVENT_STATUS_NOTIFICATION
        );
        if !ua_exempt {
            if let Some(ua) = self.cond.unit_attention.take() {
                return Err(ua);
            }
            if self.swap_not_ready && self.media_present() {
                self.swap_not_ready = false;
                self.cond.raise(Sense::MEDIUM_CHANGED);
                return Err(Sense::MEDIUM_NOT_PRESENT);
            }
        }
        let needs_medium = matches!(
            opcode,
            op::TEST_UNIT_READY
                | op::READ_CAPACITY_10
                | op::READ_10
                | op::READ_12
                | op::READ_CD
                | op::SEEK_10
                | op::READ_TOC_PMA_ATIP
                | op::READ_SUB_CHANNEL
                | op::READ_DISC_INFORMATION
                | op::READ_TRACK_INFORMATION
        );
        if needs_medium && !self.media_present() {
            return Err(self.not_present());
        }
        self.decode(cdb)
    }

    fn decode(&mut self, cdb: Cdb) -> Result<(Command, Plan), Sense> {
        let none = |c| Ok((c, Plan::NONE));
        let data_in = |c, len: usize| Ok((c, Plan::new(Direction::In, len)));
        match cdb.opcode() {
            op::TEST_UNIT_READY => none(Command::TestUnitReady),
            op::REQUEST_SENSE => Ok((Command::RequestSense, plan_request_sense(cdb))),
            op::INQUIRY => {
                let inq = parse_inquiry(cdb)?;
                let len = inq.alloc.min(255);
                data_in(Command::Inquiry(inq), len)
            }
            op::MODE_SENSE_6 | op::MODE_SENSE_10 => {
                let ms = parse_mode_sense(cdb)?;
                let plan = plan_mode_sense(&ms);
                Ok((Command::ModeSense(ms), plan))
            }
            op::MODE_SELECT_6 | op::MODE_SELECT_10 => Ok((
                Command::Nop,
                Plan::new(Direction::Out, mode_select_length(cdb)),
            )),
            op::SET_STREAMING => Ok((
                Command::Nop,
                Plan::new(Direction::Out, cdb.be16(9) as usize),
            )),
            op::START_STOP_UNIT => {
                let power_condition = cdb.u8(4) >> 4;
                let load_eject = power_condition == 0 && cdb.u8(4) & 0x02 != 0;
                let start = cdb.u8(4) & 0x01 != 0;
                if load_eject && !start && self.locked && !self.tray_open {
                    return Err(if self.media.is_some() {
                        Sense::NOT_READY_REMOVAL_PREVENTED
                    } else {
                        Sense::MEDIUM_REMOVAL_PREVENTED
                    });
                }
                none(Command::StartStop { load_eject, start })
            }
            op::PREVENT_ALLOW_MEDIUM_REMOVAL => none(Command::PreventAllow(cdb.u8(4) & 0x01 != 0)),
            op::READ_CAPACITY_10 => data_in(Command::ReadCapacity, 8),
            op::READ_10 | op::READ_12 => {
                let lba = cdb.be32(2);
                let count = if cdb.opcode() == op::READ_10 {
                    u32::from(cdb.be16(7))
                } else {
                    cdb.be32(6)
                };
                let bytes = self.check_transfer(lba, count, CD_BLOCK)?;
                let raw = false;
                data_in(Command::Read { lba, count, raw }, bytes)
            }
            op::READ_CD => {
                let lba = cdb.be32(2);
                let count = cdb.be24(6);
                // Expected sector type: any (0) or mode 1 (2); the disc has nothing else.
                if !matches!((cdb.u8(1) >> 2) & 0x07, 0 | 2) {
                    return Err(Sense::ILLEGAL_MODE_FOR_TRACK);
                }
                // No C2 error information, no sub-channel data.
                if cdb.u8(9) & 0x06 != 0 || cdb.u8(10) & 0x07 != 0 {
                    return Err(Sense::INVALID_FIELD_IN_CDB);
                }
                let (size, raw) = match cdb.u8(9) & 0xf8 {
                    0x00 => (0, false),
                    0x10 => (CD_BLOCK, false),
                    0xf8 => (RAW_SECTOR, true),
                    _ => return Err(Sense::INVALID_FIELD_IN_CDB),
                };
                let bytes = self.check_transfer(lba, count, size)?;
                let count = if size == 0 { 0 } else { count };
                data_in(Command::Read { lba, count, raw }, bytes)
            }
            op::SEEK_10 => {
                if u64::from(cdb.be32(2)) >= self.blocks() {
                    return Err(Sense::LBA_OUT_OF_RANGE);
                }
                none(Command::Nop)
            }
            op::READ_TOC_PMA_ATIP => {
                let msf = cdb.u8(1) & 0x02 != 0;
                let format = match cdb.u8(2) & 0x0f {
                    0 => cdb.u8(9) >> 6,
                    f => f,
                };
                let track = cdb.u8(6);
                let alloc = cdb.be16(7) as usize;
                let len = self.toc(format, msf, track)?.len();
                let cmd = Command::ReadToc {
                    format,
                    msf,
                    track,
                    alloc,
                };
                data_in(cmd, len.min(alloc))
            }
            op::READ_SUB_CHANNEL => {
                let msf = cdb.u8(1) & 0x02 != 0;
                let subq = cdb.u8(2) & 0x40 != 0;
                let format = cdb.u8(3);
                let alloc = cdb.be16(7) as usize;
                let len = sub_channel(format, msf, subq)?.len();
                let cmd = Command::ReadSubChannel {
                    msf,
                    subq,
                    format,
                    alloc,
                };
                data_in(cmd, len.min(alloc))
            }
            op::READ_DISC_INFORMATION => {
                if cdb.u8(1) & 0x07 != 0 {
                    return Err(Sense::INVALID_FIELD_IN_CDB);
                }
                let alloc = cdb.be16(7) as usize;
                data_in(Command::ReadDiscInformation { alloc }, alloc.min(34))
            }
            op::READ_TRACK_INFORMATION => {
                let number = cdb.be32(2);
                match cdb.u8(1) & 0x03 {
                    // By LBA: the track holding it.
                    0 if u64::from(number) < self.blocks() => {}
                    0 => return Err(Sense::LBA_OUT_OF_RANGE),
                    // By track number, or the first track of a session: track 1, session 1.
                    1 | 2 if number == 1 => {}
                    _ => return Err(Sense::INVALID_FIELD_IN_CDB),
                }
                let alloc = cdb.be16(7) as usize;
                data_in(Command::ReadTrackInformation { alloc }, alloc.min(36))
            }
            op::READ_DVD_STRUCTURE => {
                let format = cdb.u8(7);
                let alloc = cdb.be16(8) as usize;
                // Media type 0 (DVD); BD structures are not supported.
                if cdb.u8(1) & 0x0f != 0 {
                    return Err(Sense::INVALID_FIELD_IN_CDB);
                }
                if format != 0xff {
                    if !self.media_present() {
                        return Err(self.not_present());
                    }
                    if !self.is_dvd() {
                        return Err(Sense::INCOMPATIBLE_MEDIUM);
                    }
                }
                let len = self.dvd_structure(format, cdb.u8(6))?.len();
                data_in(Command::ReadDvdStructure { format, alloc }, len.min(alloc))
            }
            op::GET_CONFIGURATION => {
                let rt = cdb.u8(1) & 0x03;
                if rt == 3 {
                    return Err(Sense::INVALID_FIELD_IN_CDB);
                }
                let start = cdb.be16(2);
                let alloc = cdb.be16(7) as usize;
                let len = self.configuration(rt, start).len();
                data_in(
                    Command::GetConfiguration { rt, start, alloc },
                    len.min(alloc),
                )
            }
            op::GET_EVENT_STATUS_NOTIFICATION => {
                // Asynchronous notification is optional and not supported (MMC-5 6.6.1).
                if cdb.u8(1) & 0x01 == 0 {
                    return Err(Sense::INVALID_FIELD_IN_CDB);
                }
                let classes = cdb.u8(4);
                let alloc = cdb.be16(7) as usize;
                let len = if classes & SUPPORTED_EVENTS == 0 {
                    4
                } else {
                    8
                };
                data_in(Command::GetEventStatus { classes, alloc }, len.min(alloc))
            }
            op::GET_PERFORMANCE => {
                let data_type = cdb.u8(1) & 0x1f;
                let max = cdb.be16(8);
                let kind = cdb.u8(10);
                let len = self.performance(kind, data_type, max).len();
                data_in(
                    Command::GetPerformance {
                        kind,
                        data_type,
                        max,
                    },
                    len,
                )
            }
            op::SET_CD_SPEED => none(Command::Nop),
            op::MECHANISM_STATUS => {
                let alloc = cdb.be16(8) as usize;
                data_in(Command::MechanismStatus { alloc }, alloc.min(8))
            }
            op::REPORT_LUNS => Ok((Command::ReportLuns, plan_report_luns(cdb)?)),
            other => {
                warn_limited!("scsi cdrom: unsupported command {other:#04x}");
                Err(Sense::INVALID_OPCODE)
            }
        }
    }

    /// The bytes of a read of `count` blocks of `size` bytes at `lba`: within the transfer
    /// limit and the disc.
    fn check_transfer(&self, lba: u32, count: u32, size: usize) -> Result<usize, Sense> {
        let bytes = transfer_bytes(u64::from(count), size)?;
        check_range(u64::from(lba), u64::from(count), self.blocks())?;
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
                let t = spec::TYPE_CDROM;
                let response = match inq.vpd {
                    None => standard_inquiry(t, true, &self.identity),
                    Some(spec::vpd::SUPPORTED_PAGES) => vpd_page(
                        t,
                        spec::vpd::SUPPORTED_PAGES,
                        &[
                            spec::vpd::SUPPORTED_PAGES,
                            spec::vpd::UNIT_SERIAL_NUMBER,
                            spec::vpd::DEVICE_IDENTIFICATION,
                        ],
                    ),
                    Some(spec::vpd::UNIT_SERIAL_NUMBER) => vpd_serial(t, &self.identity),
                    Some(spec::vpd::DEVICE_IDENTIFICATION) => vpd_device_id(t, &self.identity),
                    Some(_) => return Err(Sense::INVALID_FIELD_IN_CDB),
                };
                reply(data, &response, inq.alloc);
            }
            Command::ModeSense(ms) => {
                let pages = if ms.page == page::ALL {
                    [
                        page::READ_WRITE_ERROR_RECOVERY,
                        page::CD_DEVICE_PARAMETERS,
                        page::POWER_CONDITION,
                        page::CD_CAPABILITIES,
                    ]
                    .iter()
                    .filter_map(|&c| self.mode_page(c, ms.pc))
                    .flatten()
                    .collect()
                } else {
                    self.mode_page(ms.page, ms.pc)
                        .ok_or(Sense::INVALID_FIELD_IN_CDB)?
                };
                // MMC drives send no block descriptor; medium type and device-specific
                // parameter are obsolete (0).
                let response = mode_sense_response(&ms, 0, 0, None, &pages);
                reply(data, &response, ms.alloc);
            }
            Command::StartStop { load_eject, start } => {
                if load_eject && !start && !self.tray_open {
                    let was_present = self.media_present();
                    self.tray_open = true;
                    if was_present {
                        self.medium_left();
                    }
                    // The guest opened the tray itself: it knows the drive is empty.
                    self.absence_seen = true;
                } else if load_eject && start && self.tray_open {
                    self.tray_open = false;
                    if self.media_present() {
                        self.medium_arrived(true);
                    }
                }
            }
            Command::PreventAllow(prevent) => self.locked = prevent,
            Command::ReadCapacity => {
                let mut b = [0u8; 8];
                let last = self.blocks().saturating_sub(1) as u32;
                b[0..4].copy_from_slice(&last.to_be_bytes());
                b[4..8].copy_from_slice(&(CD_BLOCK as u32).to_be_bytes());
                reply(data, &b, 8);
            }
            Command::Read { lba, count, raw } => self.read(lba, count, raw, data)?,
            Command::ReadToc {
                format,
                msf,
                track,
                alloc,
            } => {
                let response = self.toc(format, msf, track)?;
                reply(data, &response, alloc);
            }
            Command::ReadSubChannel {
                msf,
                subq,
                format,
                alloc,
            } => {
                let response = sub_channel(format, msf, subq)?;
                reply(data, &response, alloc);
            }
            Command::ReadDiscInformation { alloc } => reply(data, &self.disc_information(), alloc),
            Command::ReadTrackInformation { alloc } => {
                reply(data, &self.track_information(), alloc)
            }
            Command::ReadDvdStructure { format, alloc } => {
                let response = self.dvd_structure(format, cdb.u8(6))?;
                reply(data, &response, alloc);
            }
            Command::GetConfiguration { rt, start, alloc } => {
                reply(data, &self.configuration(rt, start), alloc)
            }
            Command::GetEventStatus { classes, alloc } => {
                let response = self.event_status(classes, alloc);
                reply(data, &response, alloc);
            }
            Command::GetPerformance {
                kind,
                data_type,
                max,
            } => {
                let response = self.performance(kind, data_type, max);
                reply(data, &response, usize::MAX);
            }
            Command::MechanismStatus { alloc } => {
                let mut b = [0u8; 8];
                // Byte 1: mechanism idle, door open bit; no changer, no slot tables.
                if self.tray_open {
                    b[1] = 0x10;
                }
                reply(data, &b, alloc);
            }
            Command::ReportLuns => report_luns(cdb, data),
        }
        Ok(())
    }

    fn read(&self, lba: u32, count: u32, raw: bool, data: &mut Vec<u8>) -> Result<(), Sense> {
        data.clear();
        let media = match &self.media {
            Some(m) if count > 0 => m,
            _ => return Ok(()),
        };
        let first = u64::from(lba) * SECTORS_PER_BLOCK;
        if !raw {
            data.resize(count as usize * CD_BLOCK, 0);
            return media.read(first, data).map_err(|e| read_error("cdrom", e));
        }
        data.resize(count as usize * RAW_SECTOR, 0);
        for (i, sector) in data.chunks_mut(RAW_SECTOR).enumerate() {
            let block = lba + i as u32;
            // Mode 1 sector: sync pattern, BCD MSF header, mode byte, user data; the EDC and
            // ECC (bytes 2064..2352) are left zero.
            sector[1..11].fill(0xff);
            let (m, s, f) = lba_to_msf(block);
            sector[12] = bcd(m);
            sector[13] = bcd(s);
            sector[14] = bcd(f);
            sector[15] = 0x01;
            let user = &mut sector[16..16 + CD_BLOCK];
            media
                .read(u64::from(block) * SECTORS_PER_BLOCK, user)
                .map_err(|e| read_error("cdrom", e))?;
        }
        Ok(())
    }

    /// READ TOC/PMA/ATIP response (MMC-5 6.26) for one session holding data track 1.
    fn toc(&self, format: u8, msf: bool, track: u8) -> Result<Vec<u8>, Sense> {
        let blocks = self.blocks() as u32;
        let mut b = vec![0u8; 4];
        match format {
            // Formatted TOC: track descriptors from `track` on, then the lead-out.
            0 => {
                b[2] = 1; // first track
                b[3] = 1; // last track
                let mut entry = |number: u8, lba: u32| {
                    b.extend_from_slice(&[0, 0x14, number, 0]);
                    b.extend_from_slice(&address(lba, msf));
                };
                match track {
                    0 | 1 => {
                        entry(1, 0);
                        entry(LEAD_OUT, blocks);
                    }
                    LEAD_OUT => entry(LEAD_OUT, blocks),
                    _ => return Err(Sense::INVALID_FIELD_IN_CDB),
                }
            }
            // Multi-session information: first and last session 1, its first track 1 at 0.
            1 => {
                b[2] = 1;
                b[3] = 1;
                b.extend_from_slice(&[0, 0x14, 1, 0]);
                b.extend_from_slice(&address(0, msf));
            }
            // Raw TOC (always MSF): points A0 (first track), A1 (last track), A2 (lead-out)
            // and track 1, all in session 1.
            2 => {
                if track > 1 {
                    return Err(Sense::INVALID_FIELD_IN_CDB);
                }
                b[2] = 1;
                b[3] = 1;
                let (lm, ls, lf) = lba_to_msf(blocks);
                let (tm, ts, tf) = lba_to_msf(0);
                for (point, pmsf) in [
                    (0xa0, (1, 0x00, 0)), // first track 1, disc type CD-ROM
                    (0xa1, (1, 0, 0)),    // last track 1
                    (0xa2, (lm, ls, lf)), // lead-out start
                    (0x01, (tm, ts, tf)), // track 1 start
                ] {
                    b.extend_from_slice(&[1, 0x14, 0, point, 0, 0, 0, 0, pmsf.0, pmsf.1, pmsf.2]);
                }
            }
            _ => return Err(Sense::INVALID_FIELD_IN_CDB),
        }
        let len = (b.len() - 2) as u16;
        b[0..2].copy_from_slice(&len.to_be_bytes());
        Ok(b)
    }

    /// READ DISC INFORMATION standard data (MMC-5 6.22.3.1): a finalized disc, one complete
    /// session with track 1.
    fn disc_information(&self) -> [u8; 34] {
        let mut b = [0u8; 34];
        b[1] = 32; // data length
        b[2] = 0x0e; // not erasable, last session complete, disc finalized
        b[3] = 1; // first track on disc
        b[4] = 1; // sessions
        b[5] = 1; // first track in last session
        b[6] = 1; // last track in last session
        b[7] = 0x20; // unrestricted use
        b[8] = 0x00; // disc type: CD-DA or CD-ROM
                     // Last session lead-in start and last possible lead-out start: not applicable.
        b[16..24].fill(0xff);
        b
    }

    /// READ TRACK INFORMATION (MMC-5 6.27.3) for track 1: a complete data track.
    fn track_information(&self) -> [u8; 36] {
        let blocks = self.blocks() as u32;
        let mut b = [0u8; 36];
        b[1] = 34; // data length
        b[2] = 1; // track number
        b[3] = 1; // session number
        b[5] = 0x04; // track mode: data, uninterrupted
        b[6] = 0x01; // data mode 1
        b[24..28].copy_from_slice(&blocks.to_be_bytes()); // track size
        b[28..32].copy_from_slice(&blocks.saturating_sub(1).to_be_bytes()); // last recorded
        b
    }

    /// READ DVD STRUCTURE (MMC-5 6.23) for a single-layer DVD-ROM.
    fn dvd_structure(&self, format: u8, layer: u8) -> Result<Vec<u8>, Sense> {
        let payload: Vec<u8> = match format {
            // Physical format information: DVD-ROM, 120 mm, one layer, read-only.
            0x00 => {
                if layer != 0 {
                    return Err(Sense::INVALID_FIELD_IN_CDB);
                }
                let start: u32 = 0x30000; // first physical sector of the data area
                let end = start + (self.blocks() as u32).saturating_sub(1);
                let mut p = vec![0u8; 2048];
                p[0] = 0x01; // book type DVD-ROM, part version 1
                p[1] = 0x0f; // 120 mm, maximum rate not specified
                p[2] = 0x01; // one layer, read-only layer type
                p[4..8].copy_from_slice(&start.to_be_bytes());
                p[8..12].copy_from_slice(&end.to_be_bytes());
                p
            }
            // Copyright information: no copy protection, no region restriction.
            0x01 => vec![0u8; 4],
            // The list of structures supported.
            0xff => {
                let mut p = Vec::new();
                for (f, len) in [(0x00u8, 2048u16 + 4), (0x01, 8), (0xff, 16)] {
                    p.push(f);
                    p.push(0x40); // readable
                    p.extend_from_slice(&len.to_be_bytes());
                }
                p
            }
            _ => return Err(Sense::INVALID_FIELD_IN_CDB),
        };
        let mut b = vec![0u8; 4];
        b[0..2].copy_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        b.extend_from_slice(&payload);
        Ok(b)
    }

    /// The drive's features (MMC-5 5.3), ascending: (code, version, current, data).
    fn features(&self) -> Vec<(u16, u8, bool, Vec<u8>)> {
        let present = self.media_present();
        let dvd = self.is_dvd();
        let current = self.current_profile();
        let profile = |p: u16| {
            let mut d = p.to_be_bytes().to_vec();
            d.extend_from_slice(&[(p == current) as u8, 0]);
            d
        };
        let mut profiles = profile(profile::DVD_ROM);
        profiles.extend_from_slice(&profile(profile::CD_ROM));
        let mut core = self.interface.to_be_bytes().to_vec();
        core.extend_from_slice(&[0x01, 0, 0, 0]); // DBE: device busy events supported
        let mut random = (CD_BLOCK as u32).to_be_bytes().to_vec();
        let blocking: u16 = if dvd { 16 } else { 1 };
        random.extend_from_slice(&blocking.to_be_bytes());
        random.extend_from_slice(&[0x01, 0]); // PP: error recovery page present
        vec![
            (feature::PROFILE_LIST, 0, true, profiles),
            (feature::CORE, 2, true, core),
            // OCEvent: operational change events (through GESN); no asynchronous GESN.
            (feature::MORPHING, 1, true, vec![0x02, 0, 0, 0]),
            // Tray loading mechanism, eject, lock.
            (feature::REMOVABLE_MEDIUM, 0, true, vec![0x29, 0, 0, 0]),
            (feature::RANDOM_READABLE, 0, present, random),
            (feature::MULTI_READ, 0, present && !dvd, vec![]),
            (feature::CD_READ, 2, present && !dvd, vec![0, 0, 0, 0]),
            (feature::DVD_READ, 1, present && dvd, vec![0, 0, 0, 0]),
            (feature::POWER_MANAGEMENT, 0, true, vec![]),
        ]
    }

    /// GET CONFIGURATION response (MMC-5 6.6): the feature header and the features `rt`
    /// selects from `start` on.
    fn configuration(&self, rt: u8, start: u16) -> Vec<u8> {
        let mut b = vec![0u8; 8];
        b[6..8].copy_from_slice(&self.current_profile().to_be_bytes());
        for (code, version, current, data) in self.features() {
            let wanted = match rt {
                0 => code >= start,
                1 => code >= start && current,
                _ => code == start,
            };
            if !wanted {
                continue;
            }
            let persistent = matches!(
                code,
                feature::PROFILE_LIST
                    | feature::CORE
                    | feature::MORPHING
                    | feature::REMOVABLE_MEDIUM
                    | feature::POWER_MANAGEMENT
            );
            let mut flags = version << 2;
            if persistent {
                flags |= feature::PERSISTENT;
            }
            if current {
                flags |= feature::CURRENT;
            }
            b.extend_from_slice(&code.to_be_bytes());
            b.push(flags);
            b.push(data.len() as u8);
            b.extend_from_slice(&data);
        }
        let len = (b.len() - 4) as u32;
        b[0..4].copy_from_slice(&len.to_be_bytes());
        b
    }

    /// GET EVENT STATUS NOTIFICATION, polled (MMC-5 6.6): the pending event of the
    /// highest-priority (lowest-numbered) requested class, else the media class's status, else
    /// an operational NoChg. An event is consumed only when `alloc` lets the guest see it.
    fn event_status(&mut self, classes: u8, alloc: usize) -> Vec<u8> {
        let requested = classes & SUPPORTED_EVENTS;
        if requested == 0 {
            return vec![0, 2, gesn::NEA, SUPPORTED_EVENTS];
        }
        let delivered = alloc >= 8;
        let op_requested = requested & (1 << gesn::CLASS_OPERATIONAL_CHANGE) != 0;
        let media_requested = requested & (1 << gesn::CLASS_MEDIA) != 0;
        let (class, descriptor) = if op_requested && self.events.operational_change {
            if delivered {
                self.events.operational_change = false;
            }
            let report = gesn::OPERATIONAL_REPORT_FEATURE_CHANGE.to_be_bytes();
            let d = [gesn::OPERATIONAL_CHANGE_OCCURRED, 0, report[0], report[1]];
            (gesn::CLASS_OPERATIONAL_CHANGE, d)
        } else if media_requested {
            let ev = &mut self.events;
            // Oldest first: the old disc left, a new one came, then any eject button press.
            let pending = [
                (gesn::MEDIA_REMOVAL, &mut ev.removal),
                (gesn::MEDIA_NEW_MEDIA, &mut ev.new_media),
                (gesn::MEDIA_EJECT_REQUEST, &mut ev.eject_request),
            ]
            .into_iter()
            .find(|(_, flag)| **flag);
            let code = match pending {
                Some((code, flag)) => {
                    if delivered {
                        *flag = false;
                    }
                    code
                }
                None => gesn::MEDIA_NO_CHANGE,
            };
            let mut status = 0;
            if self.tray_open {
                status |= gesn::MEDIA_STATUS_TRAY_OPEN;
            }
            if self.media_present() {
                status |= gesn::MEDIA_STATUS_PRESENT;
            } else if delivered {
                self.absence_seen = true;
            }
            (gesn::CLASS_MEDIA, [code, status, 0, 0])
        } else {
            (
                gesn::CLASS_OPERATIONAL_CHANGE,
                [gesn::OPERATIONAL_NO_CHANGE, 0, 0, 0],
            )
        };
        let mut b = vec![0, 6, class, SUPPORTED_EVENTS];
        b.extend_from_slice(&descriptor);
        b
    }

    /// GET PERFORMANCE (MMC-5 6.8): for performance data (type 0) reads, one descriptor
    /// covering the disc at the nominal speed; otherwise just the header.
    fn performance(&self, kind: u8, data_type: u8, max: u16) -> Vec<u8> {
        let write = data_type & 0x04 != 0;
        let mut b = vec![0u8; 8];
        b[4] = data_type & 0x03 | if write { 0x02 } else { 0 };
        if kind == 0 && !write && max > 0 && self.media_present() {
            let speed = u32::from(READ_SPEED_KBS).to_be_bytes();
            let end = (self.blocks() as u32).saturating_sub(1);
            b.extend_from_slice(&0u32.to_be_bytes());
            b.extend_from_slice(&speed);
            b.extend_from_slice(&end.to_be_bytes());
            b.extend_from_slice(&speed);
        }
        let len = (b.len() - 4) as u32;
        b[0..4].copy_from_slice(&len.to_be_bytes());
        b
    }

    /// One mode page. None of them is changeable.
    fn mode_page(&self, code: u8, pc: u8) -> Option<Vec<u8>> {
        let mut p = match code {
            // Read error recovery (MMC-5 7.3): defaults.
            page::READ_WRITE_ERROR_RECOVERY => vec![0u8; 12],
            // CD device parameters (MMC-2): 60 S units per M, 75 F units per S.
            page::CD_DEVICE_PARAMETERS => vec![0, 0, 0, 0, 0, 60, 0, 75],
            // Power condition (SPC-3 7.4.12): timers off.
            page::POWER_CONDITION => vec![0u8; 12],
            // CD/DVD capabilities and mechanical status (MMC-3 6.3.11), as Linux's sr reads
            // it: reads CD-R/RW, DVD-ROM/R/RAM, writes nothing; tray with lock and eject.
            page::CD_CAPABILITIES => {
                let mut p = vec![0u8; 22];
                p[2] = 0x3b; // read CD-R, CD-RW, method 2, DVD-ROM, DVD-R, DVD-RAM
                p[3] = 0x00; // writes nothing
                p[4] = 0x71; // audio play, mode 2 form 1 and 2, multi-session
                p[5] = 0x00;
                p[6] = 0x29 | if self.locked { 0x02 } else { 0 }; // tray, eject, lock (state)
                p[8..10].copy_from_slice(&READ_SPEED_KBS.to_be_bytes()); // maximum read speed
                p[10..12].copy_from_slice(&256u16.to_be_bytes()); // volume levels
                p[12..14].copy_from_slice(&512u16.to_be_bytes()); // buffer, KiB
                p[14..16].copy_from_slice(&READ_SPEED_KBS.to_be_bytes()); // current read speed
                p
            }
            _ => return None,
        };
        if pc == page::PC_CHANGEABLE {
            p.fill(0);
        }
        p[0] = code;
        p[1] = (p.len() - 2) as u8;
        Some(p)
    }
}

/// READ SUB-CHANNEL (MMC-5 6.28), minimal: no audio, current position at the start of track 1,
/// no media catalogue number or ISRC.
fn sub_channel(format: u8, msf: bool, subq: bool) -> Result<Vec<u8>, Sense> {
    // Header: audio status 0x15 "no current audio status to return".
    let mut b = vec![0, 0x15, 0, 0];
    if subq {
        match format {
            0x01 => {
                b.extend_from_slice(&[0x01, 0x14, 1, 1]);
                b.extend_from_slice(&address(0, msf)); // absolute address
                b.extend_from_slice(&[0, 0, 0, 0]); // track-relative address
            }
            0x02 => {
                b.extend_from_slice(&[0x02, 0, 0, 0]);
                b.extend_from_slice(&[0u8; 16]); // MCVal = 0
            }
            0x03 => {
                b.extend_from_slice(&[0x03, 0x14, 1, 0]);
                b.extend_from_slice(&[0u8; 16]); // TCVal = 0
            }
            _ => return Err(Sense::INVALID_FIELD_IN_CDB),
        }
    }
    let len = (b.len() - 4) as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    Ok(b)
}

/// A block address as READ TOC reports it: LBA, or MSF (0, M, S, F).
fn address(lba: u32, msf: bool) -> [u8; 4] {
    if msf {
        let (m, s, f) = lba_to_msf(lba);
        [0, m, s, f]
    } else {
        lba.to_be_bytes()
    }
}

/// Minute, second and frame of a block: 75 frames a second, block 0 at 00:02:00. Addresses past
/// 255 minutes (DVDs) saturate at 255:59:74.
fn lba_to_msf(lba: u32) -> (u8, u8, u8) {
    let frames = u64::from(lba) + 150;
    let minutes = frames / (60 * 75);
    if minutes > 255 {
        return (255, 59, 74);
    }
    (
        minutes as u8,
        ((frames / 75) % 60) as u8,
        (frames % 75) as u8,
    )
}

fn bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

impl_scsi_target!(ScsiCdrom);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::testing::{clear_power_on, command, hammer, request_sense, MemDisk, ZeroDisk};
    use crate::testing::cbor_round_trip;

    /// A CD image of `blocks` 2048-byte blocks; every byte of block `n` is `n as u8`.
    fn image(blocks: usize) -> Arc<MemDisk> {
        let mut data = vec![0u8; blocks * CD_BLOCK];
        for (i, b) in data.chunks_mut(CD_BLOCK).enumerate() {
            b.fill(i as u8);
        }
        Arc::new(MemDisk::from_bytes(data, true))
    }

    /// A drive with a 100-block CD, the power-on unit attention already consumed.
    fn cd() -> ScsiCdrom {
        let mut c = ScsiCdrom::new(Some(image(100)));
        clear_power_on(&mut c);
        c
    }

    fn empty() -> ScsiCdrom {
        let mut c = ScsiCdrom::new(None);
        clear_power_on(&mut c);
        c
    }

    fn run(c: &mut ScsiCdrom, cdb: &[u8]) -> Result<Vec<u8>, Sense> {
        command(c, cdb, &[])
    }

    const TUR: [u8; 12] = [0; 12];

    fn read10(lba: u32, count: u16) -> [u8; 12] {
        let mut c = [0u8; 12];
        c[0] = op::READ_10;
        c[2..6].copy_from_slice(&lba.to_be_bytes());
        c[7..9].copy_from_slice(&count.to_be_bytes());
        c
    }

    fn read12(lba: u32, count: u32) -> [u8; 12] {
        let mut c = [0u8; 12];
        c[0] = op::READ_12;
        c[2..6].copy_from_slice(&lba.to_be_bytes());
        c[6..10].copy_from_slice(&count.to_be_bytes());
        c
    }

    fn blocks_of(first: u8, count: usize) -> Vec<u8> {
        (0..count)
            .flat_map(|i| [first.wrapping_add(i as u8); CD_BLOCK])
            .collect()
    }

    fn gesn(classes: u8) -> [u8; 12] {
        [
            op::GET_EVENT_STATUS_NOTIFICATION,
            1,
            0,
            0,
            classes,
            0,
            0,
            0,
            8,
            0,
            0,
            0,
        ]
    }

    /// The media event code and status of a polled media-class GESN.
    fn media_event(c: &mut ScsiCdrom) -> (u8, u8) {
        let r = run(c, &gesn(0x10)).unwrap();
        assert_eq!(r.len(), 8);
        assert_eq!(&r[..4], &[0, 6, 4, 0x12]);
        (r[4], r[5])
    }

    fn start_stop(byte4: u8) -> [u8; 12] {
        [op::START_STOP_UNIT, 0, 0, 0, byte4, 0, 0, 0, 0, 0, 0, 0]
    }

    fn prevent(on: bool) -> [u8; 12] {
        [
            op::PREVENT_ALLOW_MEDIUM_REMOVAL,
            0,
            0,
            0,
            on as u8,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ]
    }

    #[test]
    fn power_on_unit_attention_is_reported_once() {
        let mut c = ScsiCdrom::new(Some(image(10)));
        // Commands exempt from unit attention leave it pending.
        assert!(run(&mut c, &[op::INQUIRY, 0, 0, 0, 36, 0]).is_ok());
        assert!(run(
            &mut c,
            &[op::GET_CONFIGURATION, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0]
        )
        .is_ok());
        assert!(run(&mut c, &gesn(0x10)).is_ok());
        assert_eq!(run(&mut c, &TUR), Err(Sense::POWER_ON_RESET));
        assert_eq!(run(&mut c, &TUR), Ok(vec![]));
    }

    #[test]
    fn no_medium_is_not_ready() {
        let mut c = empty();
        assert!(!c.has_media());
        for cdb in [
            TUR,
            read10(0, 1),
            [op::READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            [op::READ_TOC_PMA_ATIP, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0, 0],
            [op::READ_DISC_INFORMATION, 0, 0, 0, 0, 0, 0, 0, 34, 0, 0, 0],
        ] {
            assert_eq!(
                run(&mut c, &cdb),
                Err(Sense::MEDIUM_NOT_PRESENT),
                "{cdb:02x?}"
            );
        }
        assert_eq!(request_sense(&mut c), Sense::new(0x02, 0x3a, 0x00));
        // What works without a medium.
        assert!(run(&mut c, &[op::INQUIRY, 0, 0, 0, 36, 0]).is_ok());
        assert!(run(&mut c, &[op::MODE_SENSE_10, 0, 0x2a, 0, 0, 0, 0, 0, 64, 0]).is_ok());
        let r = run(
            &mut c,
            &[op::GET_CONFIGURATION, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0],
        )
        .unwrap();
        assert_eq!(&r[6..8], &[0, 0]); // no current profile
        assert_eq!(media_event(&mut c), (0, 0));
        // An image smaller than one block is no medium either.
        let mut tiny = ScsiCdrom::new(Some(Arc::new(MemDisk::from_bytes(vec![0; 1024], true))));
        clear_power_on(&mut tiny);
        assert_eq!(run(&mut tiny, &TUR), Err(Sense::MEDIUM_NOT_PRESENT));
    }

    #[test]
    fn insert_raises_media_change_attention_and_events() {
        let mut c = empty();
        assert_eq!(run(&mut c, &TUR), Err(Sense::MEDIUM_NOT_PRESENT));
        c.insert(image(50));
        assert!(c.has_media());
        // Operational change first (lower class), then the media event, then nothing.
        let r = run(&mut c, &gesn(0x12)).unwrap();
        assert_eq!(r, vec![0, 6, 1, 0x12, 2, 0, 0, 1]);
        assert_eq!(media_event(&mut c), (2, 0x02));
        assert_eq!(media_event(&mut c), (0, 0x02));
        assert_eq!(run(&mut c, &TUR), Err(Sense::MEDIUM_CHANGED));
        assert_eq!(run(&mut c, &TUR), Ok(vec![]));
        let cap = run(&mut c, &[op::READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(cap, [0, 0, 0, 49, 0, 0, 8, 0]);
    }

    #[test]
    fn swapped_disc_reports_not_ready_then_attention() {
        let mut c = cd();
        c.insert(image(30));
        assert_eq!(run(&mut c, &read10(0, 1)), Err(Sense::MEDIUM_NOT_PRESENT));
        assert_eq!(run(&mut c, &TUR), Err(Sense::MEDIUM_CHANGED));
        assert_eq!(run(&mut c, &TUR), Ok(vec![]));
        // Events: the old disc went away, the new one arrived.
        assert_eq!(media_event(&mut c), (3, 0x02));
        assert_eq!(media_event(&mut c), (2, 0x02));
        // Host eject then insert with the guest not looking in between: the same sequence.
        c.eject().unwrap();
        c.insert(image(20));
        assert_eq!(run(&mut c, &TUR), Err(Sense::MEDIUM_NOT_PRESENT));
        assert_eq!(request_sense(&mut c), Sense::MEDIUM_NOT_PRESENT);
        assert_eq!(request_sense(&mut c), Sense::MEDIUM_CHANGED);
        assert_eq!(run(&mut c, &TUR), Ok(vec![]));
    }

    #[test]
    fn host_eject_removes_the_medium() {
        let mut c = cd();
        assert!(c.eject().is_ok());
        assert!(!c.has_media());
        assert!(c.media().is_none());
        assert_eq!(media_event(&mut c), (3, 0));
        assert_eq!(run(&mut c, &TUR), Err(Sense::MEDIUM_NOT_PRESENT));
        // Ejecting an empty drive is fine.
        assert!(c.eject().is_ok());
    }

    #[test]
    fn locked_tray_refuses_eject() {
        let mut c = cd();
        assert!(run(&mut c, &prevent(true)).is_ok());
        assert!(c.locked());
        assert_eq!(c.eject(), Err(Sense::NOT_READY_REMOVAL_PREVENTED));
        assert!(c.has_media());
        // The guest hears about the button press.
        assert_eq!(media_event(&mut c), (1, 0x02));
        // Its own eject is refused too.
        assert_eq!(
            run(&mut c, &start_stop(0x02)),
            Err(Sense::NOT_READY_REMOVAL_PREVENTED)
        );
        assert!(!c.tray_open());
        // The mechanical status page shows the lock.
        let r = run(&mut c, &[op::MODE_SENSE_10, 0, 0x2a, 0, 0, 0, 0, 0, 64, 0]).unwrap();
        assert_eq!(r[8 + 6] & 0x02, 0x02);
        assert!(run(&mut c, &prevent(false)).is_ok());
        assert!(c.eject().is_ok());
        // The host can always force it.
        c.insert(image(10));
        assert_eq!(run(&mut c, &TUR), Err(Sense::MEDIUM_NOT_PRESENT));
        assert_eq!(run(&mut c, &TUR), Err(Sense::MEDIUM_CHANGED));
        assert!(run(&mut c, &prevent(true)).is_ok());
        c.force_eject();
        assert!(!c.has_media());
        // Locked with no medium: the guest's eject is an illegal request.
        assert_eq!(
            run(&mut c, &start_stop(0x02)),
            Err(Sense::MEDIUM_REMOVAL_PREVENTED)
        );
    }

    #[test]
    fn guest_opens_and_closes_the_tray() {
        let mut c = cd();
        assert!(run(&mut c, &start_stop(0x02)).is_ok()); // LoEj, Start = 0: eject
        assert!(c.tray_open());
        assert!(!c.has_media());
        assert!(c.media().is_some());
        assert_eq!(run(&mut c, &TUR), Err(Sense::MEDIUM_NOT_PRESENT_TRAY_OPEN));
        assert_eq!(media_event(&mut c), (3, 0x01));
        let ms = run(
            &mut c,
            &[op::MECHANISM_STATUS, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0],
        )
        .unwrap();
        assert_eq!(ms, [0, 0x10, 0, 0, 0, 0, 0, 0]);
        assert!(run(&mut c, &start_stop(0x03)).is_ok()); // LoEj, Start = 1: load
        assert!(!c.tray_open());
        assert_eq!(run(&mut c, &TUR), Err(Sense::MEDIUM_CHANGED));
        assert_eq!(run(&mut c, &TUR), Ok(vec![]));
        assert_eq!(media_event(&mut c), (2, 0x02));
        // Start/stop without LoEj, and a power condition, leave the tray alone.
        assert!(run(&mut c, &start_stop(0x01)).is_ok());
        assert!(run(&mut c, &start_stop(0x22)).is_ok());
        assert!(!c.tray_open());
        // Host insert closes an open tray.
        assert!(run(&mut c, &start_stop(0x02)).is_ok());
        c.insert(image(5));
        assert!(!c.tray_open());
        assert_eq!(run(&mut c, &TUR), Err(Sense::MEDIUM_CHANGED));
    }

    #[test]
    fn inquiry_and_vpd() {
        let mut c = cd();
        let r = run(&mut c, &[op::INQUIRY, 0, 0, 0, 96, 0]).unwrap();
        assert_eq!(r.len(), 36);
        assert_eq!(&r[..5], &[0x05, 0x80, 0x05, 0x02, 31]);
        assert_eq!(&r[8..36], b"Msft    Virtual CD/ROM  1.0 ");
        let r = run(&mut c, &[op::INQUIRY, 1, 0, 0, 96, 0]).unwrap();
        assert_eq!(r, vec![5, 0, 0, 3, 0x00, 0x80, 0x83]);
        let id = Identity::new("KETTLE", "CD", "2", "CD0");
        let mut c = ScsiCdrom::new(None).with_identity(id);
        let r = run(&mut c, &[op::INQUIRY, 1, 0x80, 0, 96, 0]).unwrap();
        assert_eq!(r, vec![5, 0x80, 0, 3, b'C', b'D', b'0']);
        let r = run(&mut c, &[op::INQUIRY, 1, 0x83, 0, 96, 0]).unwrap();
        assert_eq!(&r[8..16], b"KETTLE  ");
        assert_eq!(
            run(&mut c, &[op::INQUIRY, 1, 0xb0, 0, 96, 0]),
            Err(Sense::INVALID_FIELD_IN_CDB)
        );
    }

    #[test]
    fn read_10_and_12_return_blocks() {
        let mut c = cd();
        assert_eq!(
            c.plan(&read10(5, 3)),
            Ok(Plan::new(Direction::In, 3 * CD_BLOCK))
        );
        assert_eq!(run(&mut c, &read10(5, 3)).unwrap(), blocks_of(5, 3));
        assert_eq!(run(&mut c, &read12(97, 3)).unwrap(), blocks_of(97, 3));
        assert_eq!(run(&mut c, &read10(99, 0)), Ok(vec![]));
        assert_eq!(run(&mut c, &read10(98, 3)), Err(Sense::LBA_OUT_OF_RANGE));
        assert_eq!(run(&mut c, &read12(100, 1)), Err(Sense::LBA_OUT_OF_RANGE));
        assert_eq!(
            run(&mut c, &read12(u32::MAX, 2)),
            Err(Sense::LBA_OUT_OF_RANGE)
        );
        assert_eq!(request_sense(&mut c), Sense::new(0x05, 0x21, 0x00));
    }

    #[test]
    fn huge_read_is_refused_at_plan() {
        let mut c = ScsiCdrom::new(Some(Arc::new(ZeroDisk(u64::from(u32::MAX) * 4))));
        clear_power_on(&mut c);
        let mut data = Vec::new();
        assert_eq!(
            c.plan(&read12(0, u32::MAX)),
            Err(Sense::INVALID_FIELD_IN_CDB)
        );
        assert_eq!(
            c.execute(&read12(0, u32::MAX), &mut data),
            Err(Sense::INVALID_FIELD_IN_CDB)
        );
        assert_eq!(data.capacity(), 0);
        let max = (crate::scsi::MAX_TRANSFER_BYTES / CD_BLOCK) as u32;
        assert!(c.plan(&read12(0, max)).is_ok());
        assert_eq!(
            c.plan(&read12(0, max + 1)),
            Err(Sense::INVALID_FIELD_IN_CDB)
        );
        // READ CD of 2352-byte sectors counts raw bytes.
        let mut rcd = [0u8; 12];
        rcd[0] = op::READ_CD;
        rcd[6..9].copy_from_slice(&[0xff, 0xff, 0xff]);
        rcd[9] = 0xf8;
        assert_eq!(c.plan(&rcd), Err(Sense::INVALID_FIELD_IN_CDB));
    }

    #[test]
    fn read_errors_are_medium_errors() {
        let disk = image(10);
        let mut c = ScsiCdrom::new(Some(disk.clone()));
        clear_power_on(&mut c);
        disk.fail_reads
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            run(&mut c, &read10(0, 1)),
            Err(Sense::UNRECOVERED_READ_ERROR)
        );
        assert_eq!(request_sense(&mut c), Sense::new(0x03, 0x11, 0x00));
    }

    #[test]
    fn read_cd_user_data_and_raw() {
        let mut c = cd();
        let mut rcd = [0u8; 12];
        rcd[0] = op::READ_CD;
        rcd[5] = 4; // LBA 4
        rcd[8] = 2; // 2 blocks
        rcd[9] = 0x10; // user data
        assert_eq!(run(&mut c, &rcd).unwrap(), blocks_of(4, 2));
        rcd[9] = 0xf8; // sync, header, user data, EDC/ECC
        let r = run(&mut c, &rcd).unwrap();
        assert_eq!(r.len(), 2 * 2352);
        assert_eq!(
            &r[..12],
            &[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]
        );
        assert_eq!(&r[12..16], &[0x00, 0x02, 0x04, 0x01]); // 00:02:04 BCD, mode 1
        assert_eq!(&r[16..16 + 2048], &blocks_of(4, 1)[..]);
        assert_eq!(&r[2352 + 12..2352 + 16], &[0x00, 0x02, 0x05, 0x01]);
        rcd[9] = 0x00; // nothing
        assert_eq!(c.plan(&rcd), Ok(Plan::NONE));
        rcd[9] = 0x10;
        rcd[1] = 1 << 2; // CD-DA sectors expected
        assert_eq!(run(&mut c, &rcd), Err(Sense::ILLEGAL_MODE_FOR_TRACK));
        rcd[1] = 0;
        rcd[10] = 1; // raw sub-channel
        assert_eq!(run(&mut c, &rcd), Err(Sense::INVALID_FIELD_IN_CDB));
    }

    #[test]
    fn read_toc_formatted_lba_and_msf() {
        let mut c = cd();
        let toc = |track: u8, msf: bool| {
            [
                op::READ_TOC_PMA_ATIP,
                if msf { 2 } else { 0 },
                0,
                0,
                0,
                0,
                track,
                0x03,
                0x24,
                0,
                0,
                0,
            ]
        };
        let r = run(&mut c, &toc(0, false)).unwrap();
        assert_eq!(
            r,
            vec![0, 18, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0, 0, 0x14, 0xaa, 0, 0, 0, 0, 100]
        );
        let r = run(&mut c, &toc(1, true)).unwrap();
        // Track 1 at 00:02:00, lead-out at block 100 + 150 = 00:03:25.
        assert_eq!(
            &r[4..20],
            &[0, 0x14, 1, 0, 0, 0, 2, 0, 0, 0x14, 0xaa, 0, 0, 0, 3, 25]
        );
        let r = run(&mut c, &toc(0xaa, false)).unwrap();
        assert_eq!(r, vec![0, 10, 1, 1, 0, 0x14, 0xaa, 0, 0, 0, 0, 100]);
        assert_eq!(
            run(&mut c, &toc(2, false)),
            Err(Sense::INVALID_FIELD_IN_CDB)
        );
        // sr's header read: allocation length 12 cuts the list but not the length field.
        let mut hdr = toc(0, false);
        hdr[7] = 0;
        hdr[8] = 12;
        let r = run(&mut c, &hdr).unwrap();
        assert_eq!(r.len(), 12);
        assert_eq!(&r[..4], &[0, 18, 1, 1]);
    }

    #[test]
    fn read_toc_session_and_raw() {
        let mut c = cd();
        // Format 1 in byte 2 (MMC) and in byte 9 (SFF-8020, as Linux's sr_cd_check sends it).
        let session = [op::READ_TOC_PMA_ATIP, 0, 1, 0, 0, 0, 0, 0, 12, 0, 0, 0];
        let old = [op::READ_TOC_PMA_ATIP, 0, 0, 0, 0, 0, 0, 0, 12, 0x40, 0, 0];
        let expect = vec![0, 10, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0];
        assert_eq!(run(&mut c, &session).unwrap(), expect);
        assert_eq!(run(&mut c, &old).unwrap(), expect);
        let mut msf = session;
        msf[1] = 2;
        assert_eq!(&run(&mut c, &msf).unwrap()[8..12], &[0, 0, 2, 0]);
        let raw = [op::READ_TOC_PMA_ATIP, 2, 2, 0, 0, 0, 1, 0xff, 0xff, 0, 0, 0];
        let r = run(&mut c, &raw).unwrap();
        assert_eq!(r.len(), 4 + 4 * 11);
        assert_eq!(&r[..4], &[0, 46, 1, 1]);
        let points: Vec<u8> = r[4..].chunks(11).map(|d| d[3]).collect();
        assert_eq!(points, vec![0xa0, 0xa1, 0xa2, 0x01]);
        assert_eq!(&r[4 + 2 * 11 + 8..4 + 2 * 11 + 11], &[0, 3, 25]); // lead-out MSF
        let pma = [op::READ_TOC_PMA_ATIP, 0, 3, 0, 0, 0, 0, 0, 12, 0, 0, 0];
        assert_eq!(run(&mut c, &pma), Err(Sense::INVALID_FIELD_IN_CDB));
    }

    /// Features of a GET CONFIGURATION response: (code, flags byte, data).
    fn features(r: &[u8]) -> Vec<(u16, u8, Vec<u8>)> {
        assert_eq!(
            u32::from_be_bytes(r[0..4].try_into().unwrap()) as usize,
            r.len() - 4
        );
        let mut out = Vec::new();
        let mut at = 8;
        while at < r.len() {
            let len = r[at + 3] as usize;
            out.push((
                u16::from_be_bytes([r[at], r[at + 1]]),
                r[at + 2],
                r[at + 4..at + 4 + len].to_vec(),
            ));
            at += 4 + len;
        }
        out
    }

    fn get_configuration(rt: u8, start: u16) -> [u8; 12] {
        let s = start.to_be_bytes();
        [
            op::GET_CONFIGURATION,
            rt,
            s[0],
            s[1],
            0,
            0,
            0,
            0x04,
            0,
            0,
            0,
            0,
        ]
    }

    #[test]
    fn get_configuration_cd_profile_and_features() {
        let mut c = cd();
        let r = run(&mut c, &get_configuration(0, 0)).unwrap();
        assert_eq!(&r[6..8], &[0x00, 0x08]); // CD-ROM
        let f = features(&r);
        let codes: Vec<u16> = f.iter().map(|x| x.0).collect();
        assert_eq!(
            codes,
            vec![0x0000, 0x0001, 0x0002, 0x0003, 0x0010, 0x001d, 0x001e, 0x001f, 0x0100]
        );
        assert!(codes.windows(2).all(|w| w[0] < w[1]));
        // Profile list: DVD-ROM (not current), CD-ROM (current).
        assert_eq!(f[0].1, 0x03);
        assert_eq!(f[0].2, vec![0x00, 0x10, 0, 0, 0x00, 0x08, 1, 0]);
        // Core: ATAPI, version 2.
        assert_eq!(f[1].1, (2 << 2) | 0x03);
        assert_eq!(&f[1].2[..4], &[0, 0, 0, 2]);
        // Random readable: 2048-byte blocks, current.
        assert_eq!(f[4].1 & 0x01, 0x01);
        assert_eq!(&f[4].2[..6], &[0, 0, 8, 0, 0, 1]);
        // CD read current, DVD read not.
        assert_eq!(f[6].1 & 0x01, 0x01);
        assert_eq!(f[7].1 & 0x01, 0x00);
        // Linux's profile probe: header only.
        let mut hdr = get_configuration(0, 0);
        hdr[7] = 0;
        hdr[8] = 8;
        assert_eq!(run(&mut c, &hdr).unwrap().len(), 8);
    }

    #[test]
    fn get_configuration_selection_and_dvd() {
        let mut c = cd();
        // RT = 2: exactly one feature.
        let f = features(&run(&mut c, &get_configuration(2, 0x1e)).unwrap());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, 0x1e);
        // RT = 2 for a feature the drive lacks (random writable): header only.
        assert!(features(&run(&mut c, &get_configuration(2, 0x20)).unwrap()).is_empty());
        // RT = 0 from 0x20 on: only features >= 0x20 (Linux reads the first one blindly).
        let f = features(&run(&mut c, &get_configuration(0, 0x20)).unwrap());
        assert_eq!(f.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0x100]);
        assert_eq!(
            run(&mut c, &get_configuration(3, 0)),
            Err(Sense::INVALID_FIELD_IN_CDB)
        );
        // RT = 1 with no medium: no media features current.
        let mut e = empty();
        let f = features(&run(&mut e, &get_configuration(1, 0)).unwrap());
        assert_eq!(
            f.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 0x100]
        );
        // A DVD-sized image is a DVD-ROM.
        let mut d = ScsiCdrom::new(Some(Arc::new(ZeroDisk(4 * 400_000))));
        clear_power_on(&mut d);
        let r = run(&mut d, &get_configuration(0, 0)).unwrap();
        assert_eq!(&r[6..8], &[0x00, 0x10]);
        let f = features(&r);
        assert_eq!(f[0].2, vec![0x00, 0x10, 1, 0, 0x00, 0x08, 0, 0]);
        assert!(f.iter().any(|x| x.0 == 0x1f && x.1 & 1 == 1));
    }

    #[test]
    fn gesn_checks_and_classes() {
        let mut c = cd();
        let mut not_polled = gesn(0x10);
        not_polled[1] = 0;
        assert_eq!(run(&mut c, &not_polled), Err(Sense::INVALID_FIELD_IN_CDB));
        // Only unsupported classes (power management): no event available.
        assert_eq!(run(&mut c, &gesn(0x04)).unwrap(), vec![0, 2, 0x80, 0x12]);
        // Operational change only, nothing pending: NoChg in that class.
        assert_eq!(
            run(&mut c, &gesn(0x02)).unwrap(),
            vec![0, 6, 1, 0x12, 0, 0, 0, 0]
        );
        // An event is not consumed when the allocation length hides it.
        c.eject().unwrap();
        let mut short = gesn(0x10);
        short[8] = 4;
        assert_eq!(run(&mut c, &short).unwrap(), vec![0, 6, 4, 0x12]);
        assert_eq!(media_event(&mut c), (3, 0));
        assert_eq!(media_event(&mut c), (0, 0));
    }

    #[test]
    fn mode_sense_pages_for_sr() {
        let mut c = cd();
        // Linux sr: MODE SENSE(10), page 0x2A, 128 bytes; n = header + block descriptors.
        let r = run(&mut c, &[op::MODE_SENSE_10, 0, 0x2a, 0, 0, 0, 0, 0, 128, 0]).unwrap();
        assert_eq!(u16::from_be_bytes([r[0], r[1]]) as usize, r.len() - 2);
        let n = 8 + u16::from_be_bytes([r[6], r[7]]) as usize;
        assert_eq!(n, 8);
        assert_eq!(&r[n..n + 2], &[0x2a, 20]);
        assert_eq!(u16::from_be_bytes([r[n + 8], r[n + 9]]) / 176, 24); // speed
        assert_eq!(r[n + 2] & 0x08, 0x08); // DVD-ROM read
        assert_eq!(r[n + 3], 0); // no writing
        assert_eq!(r[n + 6] & 0x08, 0x08); // can eject
        assert_eq!(r[n + 6] >> 5, 1); // tray
                                      // All pages, MODE SENSE(6) too.
        let r = run(&mut c, &[op::MODE_SENSE_6, 0, 0x3f, 0, 255, 0]).unwrap();
        assert_eq!(r[0] as usize, r.len() - 1);
        assert_eq!(r[3], 0);
        let mut codes = Vec::new();
        let mut at = 4;
        while at < r.len() {
            codes.push(r[at]);
            at += 2 + r[at + 1] as usize;
        }
        assert_eq!(codes, vec![0x01, 0x0d, 0x1a, 0x2a]);
        let ms = |b2: u8| [op::MODE_SENSE_10, 0, b2, 0, 0, 0, 0, 0, 255, 0];
        let r = run(&mut c, &ms(0x0d)).unwrap();
        assert_eq!(&r[8..], &[0x0d, 6, 0, 0, 0, 60, 0, 75]);
        let r = run(&mut c, &ms(0x1a)).unwrap();
        assert_eq!(&r[8..10], &[0x1a, 10]);
        let r = run(&mut c, &ms(0x40 | 0x2a)).unwrap(); // changeable: nothing
        assert!(r[10..].iter().all(|&b| b == 0));
        assert_eq!(
            run(&mut c, &ms(0xc1)),
            Err(Sense::SAVING_PARAMETERS_NOT_SUPPORTED)
        );
        assert_eq!(run(&mut c, &ms(0x08)), Err(Sense::INVALID_FIELD_IN_CDB));
        // MODE SELECT is accepted and ignored.
        let sel = [op::MODE_SELECT_10, 0x10, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0];
        assert_eq!(c.plan(&sel), Ok(Plan::new(Direction::Out, 16)));
        assert!(command(&mut c, &sel, &[0u8; 16]).is_ok());
        assert!(command(&mut c, &[op::MODE_SELECT_6, 0x10, 0, 0, 12, 0], &[0; 12]).is_ok());
    }

    #[test]
    fn disc_and_track_information() {
        let mut c = cd();
        let r = run(
            &mut c,
            &[op::READ_DISC_INFORMATION, 0, 0, 0, 0, 0, 0, 0, 34, 0],
        )
        .unwrap();
        assert_eq!(r.len(), 34);
        assert_eq!(&r[..9], &[0, 32, 0x0e, 1, 1, 1, 1, 0x20, 0]);
        let bad = [op::READ_DISC_INFORMATION, 1, 0, 0, 0, 0, 0, 0, 34, 0];
        assert_eq!(run(&mut c, &bad), Err(Sense::INVALID_FIELD_IN_CDB));
        let rti = |kind: u8, number: u32| {
            let mut c = [0u8; 10];
            c[0] = op::READ_TRACK_INFORMATION;
            c[1] = kind;
            c[2..6].copy_from_slice(&number.to_be_bytes());
            c[8] = 36;
            c
        };
        let r = run(&mut c, &rti(1, 1)).unwrap();
        assert_eq!(r.len(), 36);
        assert_eq!(&r[..8], &[0, 34, 1, 1, 0, 4, 1, 0]);
        assert_eq!(&r[24..32], &[0, 0, 0, 100, 0, 0, 0, 99]);
        assert_eq!(run(&mut c, &rti(0, 50)).unwrap(), r);
        assert_eq!(run(&mut c, &rti(2, 1)).unwrap(), r);
        assert_eq!(run(&mut c, &rti(0, 100)), Err(Sense::LBA_OUT_OF_RANGE));
        assert_eq!(run(&mut c, &rti(1, 2)), Err(Sense::INVALID_FIELD_IN_CDB));
        assert_eq!(run(&mut c, &rti(1, 0xff)), Err(Sense::INVALID_FIELD_IN_CDB));
        assert_eq!(run(&mut c, &rti(3, 1)), Err(Sense::INVALID_FIELD_IN_CDB));
    }

    #[test]
    fn speed_seek_performance_sub_channel_mechanism() {
        let mut c = cd();
        let speed = [op::SET_CD_SPEED, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(c.plan(&speed), Ok(Plan::NONE));
        assert!(run(&mut c, &speed).is_ok());
        let streaming = [op::SET_STREAMING, 0, 0, 0, 0, 0, 0, 0, 0, 0, 28, 0];
        assert!(command(&mut c, &streaming, &[0u8; 28]).is_ok());
        let seek = |lba: u32| {
            let mut s = [0u8; 10];
            s[0] = op::SEEK_10;
            s[2..6].copy_from_slice(&lba.to_be_bytes());
            s
        };
        assert!(run(&mut c, &seek(99)).is_ok());
        assert_eq!(run(&mut c, &seek(100)), Err(Sense::LBA_OUT_OF_RANGE));
        let perf = [op::GET_PERFORMANCE, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0];
        let r = run(&mut c, &perf).unwrap();
        assert_eq!(r.len(), 24);
        assert_eq!(&r[..4], &[0, 0, 0, 20]);
        assert_eq!(&r[16..20], &[0, 0, 0, 99]);
        let write_speed = [op::GET_PERFORMANCE, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 0];
        assert_eq!(
            run(&mut c, &write_speed).unwrap(),
            vec![0, 0, 0, 4, 0, 0, 0, 0]
        );
        let sub = |subq: u8, format: u8| [op::READ_SUB_CHANNEL, 0, subq, format, 0, 0, 0, 0, 48, 0];
        assert_eq!(run(&mut c, &sub(0, 1)).unwrap(), vec![0, 0x15, 0, 0]);
        let r = run(&mut c, &sub(0x40, 1)).unwrap();
        assert_eq!(&r[..8], &[0, 0x15, 0, 12, 1, 0x14, 1, 1]);
        let mcn = run(&mut c, &sub(0x40, 2)).unwrap();
        assert_eq!(mcn.len(), 24);
        assert_eq!(mcn[8] & 0x80, 0); // no catalogue number
        assert_eq!(run(&mut c, &sub(0x40, 3)).unwrap().len(), 24);
        assert_eq!(run(&mut c, &sub(0x40, 9)), Err(Sense::INVALID_FIELD_IN_CDB));
        let ms = run(
            &mut c,
            &[op::MECHANISM_STATUS, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0],
        )
        .unwrap();
        assert_eq!(ms, [0; 8]);
    }

    #[test]
    fn dvd_structure() {
        let mut c = cd();
        let rds = |format: u8, layer: u8| {
            [
                op::READ_DVD_STRUCTURE,
                0,
                0,
                0,
                0,
                0,
                layer,
                format,
                0x08,
                0x04,
                0,
                0,
            ]
        };
        assert_eq!(run(&mut c, &rds(0, 0)), Err(Sense::INCOMPATIBLE_MEDIUM));
        assert_eq!(run(&mut c, &rds(0xff, 0)).unwrap().len(), 16);
        let mut d = ScsiCdrom::new(Some(Arc::new(ZeroDisk(4 * 500_000))));
        clear_power_on(&mut d);
        let r = run(&mut d, &rds(0, 0)).unwrap();
        assert_eq!(r.len(), 2052);
        assert_eq!(&r[..7], &[0x08, 0x02, 0, 0, 0x01, 0x0f, 0x01]);
        // Data area from 0x30000 to 0x30000 + 500 000 - 1.
        assert_eq!(&r[8..16], &[0, 3, 0, 0, 0, 0x0a, 0xa1, 0x1f]);
        assert_eq!(
            run(&mut d, &rds(1, 0)).unwrap(),
            vec![0, 6, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(run(&mut d, &rds(0, 1)), Err(Sense::INVALID_FIELD_IN_CDB));
        assert_eq!(run(&mut d, &rds(0x30, 0)), Err(Sense::INVALID_FIELD_IN_CDB));
        let mut e = empty();
        assert_eq!(run(&mut e, &rds(0, 0)), Err(Sense::MEDIUM_NOT_PRESENT));
    }

    #[test]
    fn invalid_opcodes_and_short_cdbs() {
        let mut c = cd();
        for opcode in [0x04, 0xa4, 0xa1, 0x2a, 0x08] {
            let mut cdb = [0u8; 12];
            cdb[0] = opcode;
            assert_eq!(run(&mut c, &cdb), Err(Sense::INVALID_OPCODE), "{opcode:#x}");
        }
        assert_eq!(request_sense(&mut c), Sense::new(0x05, 0x20, 0x00));
        assert_eq!(c.plan(&[]), Err(Sense::INVALID_OPCODE));
        assert_eq!(
            c.plan(&[op::READ_12, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            Err(Sense::INVALID_FIELD_IN_CDB)
        );
        assert_eq!(
            c.plan(&[op::GET_CONFIGURATION]),
            Err(Sense::INVALID_FIELD_IN_CDB)
        );
    }

    #[test]
    fn any_cdb_is_handled_without_panicking() {
        hammer(&mut cd());
        hammer(&mut empty());
        let mut dvd = ScsiCdrom::new(Some(Arc::new(ZeroDisk(4 * 500_000))));
        hammer(&mut dvd);
    }

    #[test]
    fn report_luns() {
        let mut c = cd();
        let r = run(&mut c, &[op::REPORT_LUNS, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]).unwrap();
        assert_eq!(r.len(), 16);
        assert_eq!(&r[..4], &[0, 0, 0, 8]);
    }

    #[test]
    fn state_round_trips_and_reset() {
        let mut c = cd();
        assert!(run(&mut c, &prevent(true)).is_ok());
        assert!(c.eject().is_err()); // queues an eject request
        assert!(run(&mut c, &read10(1000, 1)).is_err());
        let state = c.state();
        assert!(state.locked && state.medium_loaded && state.event_eject_request);
        assert_eq!(state.sense, Sense::LBA_OUT_OF_RANGE);
        let mut other = ScsiCdrom::new(Some(image(100)));
        other.restore(&state);
        assert_eq!(other.state(), state);
        assert_eq!(media_event(&mut other), (1, 0x02));
        other.reset();
        assert!(!other.locked());
        assert!(other.has_media());
        assert_eq!(run(&mut other, &TUR), Err(Sense::POWER_ON_RESET));
        assert_eq!(run(&mut other, &TUR), Ok(vec![]));
    }

    /// An ISO-like image in a real file, opened the way the VMM opens `--cdrom` images.
    #[test]
    fn reads_an_iso_file_through_raw_disk() {
        let path = std::env::temp_dir().join(format!("kettle-scsi-cd-{}.iso", std::process::id()));
        let blocks = 40usize;
        let mut bytes = vec![0u8; blocks * CD_BLOCK];
        for (i, block) in bytes.chunks_mut(CD_BLOCK).enumerate() {
            for (j, b) in block.iter_mut().enumerate() {
                *b = (i * 7 + j / 512) as u8;
            }
        }
        // An ISO 9660 primary volume descriptor at block 16, as xorriso writes it.
        bytes[16 * CD_BLOCK..16 * CD_BLOCK + 6].copy_from_slice(b"\x01CD001");
        std::fs::write(&path, &bytes).unwrap();
        let iso = vhd::RawDisk::open(&path, true).unwrap();
        let mut c = ScsiCdrom::new(Some(Arc::new(iso)));
        clear_power_on(&mut c);
        let cap = run(&mut c, &[op::READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(cap, [0, 0, 0, blocks as u8 - 1, 0, 0, 8, 0]);
        let r = run(&mut c, &read10(15, 3)).unwrap();
        assert_eq!(r.len(), 3 * CD_BLOCK);
        assert_eq!(&r[..], &bytes[15 * CD_BLOCK..18 * CD_BLOCK]);
        assert_eq!(&r[CD_BLOCK..CD_BLOCK + 6], b"\x01CD001");
        assert_eq!(run(&mut c, &read12(0, blocks as u32)).unwrap(), bytes);
        assert_eq!(
            run(&mut c, &read10(blocks as u32, 1)),
            Err(Sense::LBA_OUT_OF_RANGE)
        );
        drop(c);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn state_round_trips_through_cbor() {
        // The guest locked the tray, then the host swapped the disc behind its back: a NOT
        // READY, a unit attention and two media events are still to be reported.
        let mut c = cd();
        assert!(run(&mut c, &prevent(true)).is_ok());
        c.insert(image(30));
        let state = c.state();
        assert!(state.swap_not_ready && state.locked && state.event_new_media);
        // The VMM reopens the same image before restoring.
        let mut other = ScsiCdrom::new(Some(image(30)));
        other.restore(&cbor_round_trip(&state));
        assert_eq!(other.state(), state);
        for d in [&mut c, &mut other] {
            assert_eq!(run(d, &read10(0, 1)), Err(Sense::MEDIUM_NOT_PRESENT));
            assert_eq!(run(d, &TUR), Err(Sense::MEDIUM_CHANGED));
            assert_eq!(media_event(d), (3, 0x02));
            assert_eq!(media_event(d), (2, 0x02));
            assert_eq!(d.eject(), Err(Sense::NOT_READY_REMOVAL_PREVENTED));
            assert_eq!(run(d, &read10(29, 1)), Ok(blocks_of(29, 1)));
        }
        assert_eq!(other.state(), c.state());
    }
}
