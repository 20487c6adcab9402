//! The SCSI command layer shared by the ATAPI (IDE) transport and, later, the SCSI host adapter:
//! targets (a disk, a CD/DVD drive) that decode and execute command descriptor blocks.
//! Transports move the bytes; targets own the command semantics (SPC-3, SBC-2, MMC-5).

/// SCSI status GOOD.
pub const STATUS_GOOD: u8 = 0x00;
/// SCSI status CHECK CONDITION: sense data explains.
pub const STATUS_CHECK_CONDITION: u8 = 0x02;

/// Fixed-format sense: key, additional sense code and qualifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
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
