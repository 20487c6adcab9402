//! Numbers from the SCSI standards the targets follow: operation codes (SPC-3 annex D, SBC-2,
//! MMC-5 section 6), sense keys (SPC-3 4.5.6), mode pages, VPD pages, MMC profiles and
//! features, and GET EVENT STATUS NOTIFICATION classes. No behaviour lives here.

/// Operation codes.
pub mod op {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const READ_6: u8 = 0x08;
    pub const WRITE_6: u8 = 0x0a;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SELECT_6: u8 = 0x15;
    pub const RESERVE_6: u8 = 0x16;
    pub const RELEASE_6: u8 = 0x17;
    pub const MODE_SENSE_6: u8 = 0x1a;
    pub const START_STOP_UNIT: u8 = 0x1b;
    pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1e;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2a;
    pub const SEEK_10: u8 = 0x2b;
    pub const VERIFY_10: u8 = 0x2f;
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub const READ_SUB_CHANNEL: u8 = 0x42;
    pub const READ_TOC_PMA_ATIP: u8 = 0x43;
    pub const GET_CONFIGURATION: u8 = 0x46;
    pub const GET_EVENT_STATUS_NOTIFICATION: u8 = 0x4a;
    pub const READ_DISC_INFORMATION: u8 = 0x51;
    pub const READ_TRACK_INFORMATION: u8 = 0x52;
    pub const MODE_SELECT_10: u8 = 0x55;
    pub const MODE_SENSE_10: u8 = 0x5a;
    pub const READ_16: u8 = 0x88;
    pub const WRITE_16: u8 = 0x8a;
    pub const VERIFY_16: u8 = 0x8f;
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    /// SERVICE ACTION IN(16); READ CAPACITY(16) is its service action 0x10.
    pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
    pub const REPORT_LUNS: u8 = 0xa0;
    pub const READ_12: u8 = 0xa8;
    pub const WRITE_12: u8 = 0xaa;
    pub const GET_PERFORMANCE: u8 = 0xac;
    pub const READ_DVD_STRUCTURE: u8 = 0xad;
    pub const SET_STREAMING: u8 = 0xb6;
    pub const SET_CD_SPEED: u8 = 0xbb;
    pub const MECHANISM_STATUS: u8 = 0xbd;
    pub const READ_CD: u8 = 0xbe;
}

/// SERVICE ACTION IN(16) service action: READ CAPACITY(16) (SBC-2 5.11).
pub const SAI_READ_CAPACITY_16: u8 = 0x10;

/// Sense keys (SPC-3 table 27).
pub mod key {
    pub const NO_SENSE: u8 = 0x0;
    pub const RECOVERED_ERROR: u8 = 0x1;
    pub const NOT_READY: u8 = 0x2;
    pub const MEDIUM_ERROR: u8 = 0x3;
    pub const HARDWARE_ERROR: u8 = 0x4;
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    pub const UNIT_ATTENTION: u8 = 0x6;
    pub const DATA_PROTECT: u8 = 0x7;
    pub const ABORTED_COMMAND: u8 = 0xb;
    pub const MISCOMPARE: u8 = 0xe;
}

/// Peripheral device types (INQUIRY byte 0).
pub const TYPE_DISK: u8 = 0x00;
pub const TYPE_CDROM: u8 = 0x05;

/// INQUIRY VERSION: the device claims SPC-3.
pub const VERSION_SPC3: u8 = 0x05;
/// INQUIRY RESPONSE DATA FORMAT: 2 is the only one defined.
pub const RESPONSE_DATA_FORMAT: u8 = 0x02;

/// Vital product data pages (SPC-3 7.6, SBC-3 6.5).
pub mod vpd {
    pub const SUPPORTED_PAGES: u8 = 0x00;
    pub const UNIT_SERIAL_NUMBER: u8 = 0x80;
    pub const DEVICE_IDENTIFICATION: u8 = 0x83;
    pub const BLOCK_LIMITS: u8 = 0xb0;
    pub const BLOCK_DEVICE_CHARACTERISTICS: u8 = 0xb1;
}

/// Mode pages (SPC-3 7.4, SBC-2 6.3, MMC-5 7).
pub mod page {
    pub const READ_WRITE_ERROR_RECOVERY: u8 = 0x01;
    pub const CACHING: u8 = 0x08;
    pub const CONTROL: u8 = 0x0a;
    pub const CD_DEVICE_PARAMETERS: u8 = 0x0d;
    pub const POWER_CONDITION: u8 = 0x1a;
    pub const CD_CAPABILITIES: u8 = 0x2a;
    pub const ALL: u8 = 0x3f;

    /// Caching page byte 2: write cache enable.
    pub const CACHING_WCE: u8 = 0x04;
    /// Mode parameter header DEVICE-SPECIFIC PARAMETER (direct access): write protected.
    pub const DEVICE_SPECIFIC_WP: u8 = 0x80;
    /// ... and DPO and FUA bits supported.
    pub const DEVICE_SPECIFIC_DPOFUA: u8 = 0x10;

    /// Page control field (MODE SENSE byte 2 bits 7:6).
    pub const PC_CURRENT: u8 = 0;
    pub const PC_CHANGEABLE: u8 = 1;
    pub const PC_DEFAULT: u8 = 2;
    pub const PC_SAVED: u8 = 3;
}

/// MMC profiles (MMC-5 table 89).
pub mod profile {
    pub const NONE: u16 = 0x0000;
    pub const CD_ROM: u16 = 0x0008;
    pub const DVD_ROM: u16 = 0x0010;
}

/// MMC feature codes (MMC-5 table 90).
pub mod feature {
    pub const PROFILE_LIST: u16 = 0x0000;
    pub const CORE: u16 = 0x0001;
    pub const MORPHING: u16 = 0x0002;
    pub const REMOVABLE_MEDIUM: u16 = 0x0003;
    pub const RANDOM_READABLE: u16 = 0x0010;
    pub const MULTI_READ: u16 = 0x001d;
    pub const CD_READ: u16 = 0x001e;
    pub const DVD_READ: u16 = 0x001f;
    pub const POWER_MANAGEMENT: u16 = 0x0100;

    /// Feature descriptor byte 2: the feature is current.
    pub const CURRENT: u8 = 0x01;
    /// ... and persistent (always current).
    pub const PERSISTENT: u8 = 0x02;
}

/// GET EVENT STATUS NOTIFICATION (MMC-5 6.6).
pub mod gesn {
    /// Notification classes (event header byte 2 bits 2:0; request bit = 1 << class).
    pub const CLASS_OPERATIONAL_CHANGE: u8 = 1;
    pub const CLASS_MEDIA: u8 = 4;
    /// Event header byte 2: no event available (no requested class is supported).
    pub const NEA: u8 = 0x80;

    /// Media class event codes.
    pub const MEDIA_NO_CHANGE: u8 = 0;
    pub const MEDIA_EJECT_REQUEST: u8 = 1;
    pub const MEDIA_NEW_MEDIA: u8 = 2;
    pub const MEDIA_REMOVAL: u8 = 3;
    /// Media status byte bits.
    pub const MEDIA_STATUS_TRAY_OPEN: u8 = 0x01;
    pub const MEDIA_STATUS_PRESENT: u8 = 0x02;

    /// Operational change class event codes and reports.
    pub const OPERATIONAL_NO_CHANGE: u8 = 0;
    pub const OPERATIONAL_CHANGE_OCCURRED: u8 = 2;
    pub const OPERATIONAL_REPORT_FEATURE_CHANGE: u16 = 0x0001;
}

/// The ATAPI / SCSI physical interface standard reported in the Core feature (MMC-5 table 93).
pub mod interface {
    pub const SCSI: u32 = 0x0000_0001;
    pub const ATAPI: u32 = 0x0000_0002;
}
