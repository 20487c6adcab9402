//! The card's serial ROM: a 93C46 MicroWire EEPROM (64 words of 16 bits, 6 address bits) behind
//! CSR9's bit-banged lines, holding what the Digital "21X4 Serial ROM Format" (version 4.09)
//! describes.
//!
//! Protocol (93C46 data sheet): with chip select high, the ROM samples DI on each rising clock
//! edge. Leading zeros are ignored; a one is the start bit, followed by a 2-bit opcode and the 6
//! address bits. For READ (10) the ROM drives a dummy zero on DO right after the last address bit
//! and then one data bit per rising edge, most significant first; clocking on continues with the
//! next word. While the ROM does not drive DO the line reads as one (pulled up), which is what
//! lets drivers count address bits: Linux's `tulip_read_eeprom(dev, 0xff, 8)` sees the dummy zero
//! after six address bits and concludes the ROM has 6-bit addresses. Dropping chip select ends
//! any command. WRITE, ERASE, ERAL and WRAL are ignored (the contents are fixed), EWEN/EWDS are
//! accepted silently.
//!
//! Contents (format 4.09, one controller, 21140 info leaf):
//!
//! | bytes | contents |
//! |---|---|
//! | 0-1, 2-3 | subsystem vendor and subsystem ID (as in configuration space) |
//! | 16 | ID block CRC |
//! | 18, 19 | format version 4, controller count 1 |
//! | 20-25 | the MAC address |
//! | 26, 27-28 | controller 0: device number 0, info leaf at byte 30 |
//! | 30-31 | selected connection type 0800h (autosense) |
//! | 32 | general-purpose port control (CSR12 directions) 00h |
//! | 33 | one media block |
//! | 34-46 | extended block, type 1 (21140 MII PHY): PHY 0, no GP or reset sequences, capabilities 7800h, advertisement 01E0h, FDX map 5000h, TTM map 1800h |
//! | 126-127 | low 16 bits of the CRC-32 of bytes 0-125 |
//!
//! Linux's `tulip_parse_eeprom` finds this "new format" layout because bytes 0-7 differ from bytes
//! 16-23, takes the MAC from byte 20, and builds a one-leaf media table with an MII PHY (media 11),
//! so `tulip_find_mii` scans for the PHY.

use crate::bus::warn_limited;

use super::crc::{crc32, srom_id_block_crc};
use super::spec::*;

/// The ROM image for a card with this MAC and subsystem IDs.
pub fn contents(
    mac: [u8; ETH_ALEN],
    subsystem_vendor: u16,
    subsystem_id: u16,
) -> [u16; SROM_WORDS] {
    let mut b = [0u8; 2 * SROM_WORDS];
    b[SROM_SUBSYSTEM_VENDOR..SROM_SUBSYSTEM_VENDOR + 2]
        .copy_from_slice(&subsystem_vendor.to_le_bytes());
    b[SROM_SUBSYSTEM_ID..SROM_SUBSYSTEM_ID + 2].copy_from_slice(&subsystem_id.to_le_bytes());
    b[SROM_FORMAT_VERSION] = SROM_FORMAT_V4;
    b[SROM_CONTROLLER_COUNT] = 1;
    b[SROM_MAC..SROM_MAC + ETH_ALEN].copy_from_slice(&mac);
    b[SROM_CONTROLLER0_DEVICE] = 0;
    b[SROM_CONTROLLER0_LEAF_OFFSET..SROM_CONTROLLER0_LEAF_OFFSET + 2]
        .copy_from_slice(&(SROM_LEAF as u16).to_le_bytes());

    let mut leaf = Vec::with_capacity(17);
    leaf.extend_from_slice(&SROM_CONNECTION_AUTOSENSE.to_le_bytes());
    leaf.push(SROM_GP_CONTROL);
    leaf.push(1); // media blocks
    let mut block = vec![
        SROM_BLOCK_21140_MII,
        0, // PHY number: the first PHY the driver finds
        0, // general-purpose sequence length
        0, // reset sequence length
    ];
    for v in [
        SROM_MII_CAPABILITIES,
        SROM_MII_ADVERTISE,
        SROM_MII_FDX,
        SROM_MII_TTM,
    ] {
        block.extend_from_slice(&v.to_le_bytes());
    }
    leaf.push(SROM_BLOCK_EXTENDED | block.len() as u8);
    leaf.extend_from_slice(&block);
    b[SROM_LEAF..SROM_LEAF + leaf.len()].copy_from_slice(&leaf);

    b[SROM_ID_BLOCK_CRC] = srom_id_block_crc(&b);
    let crc = (crc32(&b[..SROM_CRC]) & 0xffff) as u16;
    b[SROM_CRC..SROM_CRC + 2].copy_from_slice(&crc.to_le_bytes());

    let mut words = [0u16; SROM_WORDS];
    for (i, w) in words.iter_mut().enumerate() {
        *w = u16::from_le_bytes([b[2 * i], b[2 * i + 1]]);
    }
    words
}

/// Where the ROM is in a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Chip select low, or waiting for the start bit.
    Idle,
    /// Shifting in the opcode and address.
    Command,
    /// Shifting out data.
    Read,
    /// A command the ROM ignores; waits for chip select to drop.
    Ignore,
}

impl Phase {
    fn to_u8(self) -> u8 {
        match self {
            Phase::Idle => 0,
            Phase::Command => 1,
            Phase::Read => 2,
            Phase::Ignore => 3,
        }
    }
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Phase::Idle,
            1 => Phase::Command,
            2 => Phase::Read,
            3 => Phase::Ignore,
            _ => return None,
        })
    }
}

/// Saved state of the ROM: its words and where a bit-banged command stands.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SromState {
    #[serde(with = "serde_big_array::BigArray")]
    pub words: [u16; SROM_WORDS],
    /// Chip select and clock as last driven.
    pub cs: bool,
    pub clk: bool,
    /// The DO line.
    pub data_out: bool,
    /// 0 idle, 1 shifting in the command, 2 shifting out data, 3 ignoring a command.
    pub phase: u8,
    /// Command bits received (opcode and address) and how many.
    pub shift: u16,
    pub count: u8,
    /// The word being read and how many of its bits are out (0-16).
    pub addr: u8,
    pub pos: u8,
}

/// A 93C46 with fixed contents.
pub struct Srom {
    words: [u16; SROM_WORDS],
    cs: bool,
    clk: bool,
    data_out: bool,
    phase: Phase,
    shift: u16,
    count: u8,
    addr: u8,
    pos: u8,
}

/// Command bits after the start bit: 2 opcode bits and the address.
const COMMAND_BITS: u8 = 2 + SROM_ADDR_BITS as u8;

impl Srom {
    pub fn new(words: [u16; SROM_WORDS]) -> Self {
        Self {
            words,
            cs: false,
            clk: false,
            data_out: true,
            phase: Phase::Idle,
            shift: 0,
            count: 0,
            addr: 0,
            pos: 0,
        }
    }

    /// The DO line: the bit the ROM drives, or one (pulled up) when it drives nothing.
    pub fn data_out(&self) -> bool {
        self.data_out
    }

    /// The 21140A drives chip select, clock and DI (CSR9 write with the ROM selected).
    pub fn drive(&mut self, cs: bool, clk: bool, di: bool) {
        if !cs {
            self.cs = false;
            self.clk = clk;
            self.phase = Phase::Idle;
            self.data_out = true;
            return;
        }
        if !self.cs {
            self.cs = true;
            self.phase = Phase::Idle;
            self.data_out = true;
        }
        let rising = clk && !self.clk;
        self.clk = clk;
        if rising {
            self.clock(di);
        }
    }

    fn clock(&mut self, di: bool) {
        match self.phase {
            Phase::Idle => {
                if di {
                    self.phase = Phase::Command;
                    self.shift = 0;
                    self.count = 0;
                }
            }
            Phase::Command => {
                self.shift = self.shift << 1 | u16::from(di);
                self.count += 1;
                if self.count == COMMAND_BITS {
                    self.decode();
                }
            }
            Phase::Read => {
                if self.pos == 16 {
                    self.addr = (self.addr + 1) % SROM_WORDS as u8;
                    self.pos = 0;
                }
                let word = self.words[usize::from(self.addr)];
                self.data_out = word >> (15 - self.pos) & 1 != 0;
                self.pos += 1;
            }
            Phase::Ignore => {}
        }
    }

    fn decode(&mut self) {
        let op = u32::from(self.shift) >> SROM_ADDR_BITS;
        let addr = (self.shift & ((1 << SROM_ADDR_BITS) - 1)) as u8;
        self.count = 0;
        match op {
            SROM_OP_READ => {
                self.phase = Phase::Read;
                self.addr = addr;
                self.pos = 0;
                self.data_out = false; // the dummy zero
            }
            SROM_OP_MISC if addr >> 4 == 0b11 || addr >> 4 == 0b00 => {
                // EWEN / EWDS: nothing to enable, the contents are fixed.
                self.phase = Phase::Ignore;
            }
            _ => {
                let what = match op {
                    SROM_OP_WRITE => "WRITE",
                    SROM_OP_ERASE => "ERASE",
                    _ if addr >> 4 == 0b10 => "ERAL",
                    _ => "WRAL",
                };
                warn_limited!(
                    "tulip: serial ROM {what} of word {addr} ignored (the ROM is read-only)"
                );
                self.phase = Phase::Ignore;
            }
        }
    }

    pub fn state(&self) -> SromState {
        SromState {
            words: self.words,
            cs: self.cs,
            clk: self.clk,
            data_out: self.data_out,
            phase: self.phase.to_u8(),
            shift: self.shift,
            count: self.count,
            addr: self.addr,
            pos: self.pos,
        }
    }

    /// Restores a saved ROM; an error names the field that is out of range.
    pub fn from_state(s: &SromState) -> Result<Self, &'static str> {
        let phase = Phase::from_u8(s.phase).ok_or("serial ROM phase")?;
        if s.count >= COMMAND_BITS {
            return Err("serial ROM command bit count");
        }
        if usize::from(s.addr) >= SROM_WORDS {
            return Err("serial ROM address");
        }
        if s.pos > 16 {
            return Err("serial ROM bit position");
        }
        Ok(Self {
            words: s.words,
            cs: s.cs,
            clk: s.clk,
            data_out: s.data_out,
            phase,
            shift: s.shift & ((1 << COMMAND_BITS) - 1),
            count: s.count,
            addr: s.addr,
            pos: s.pos,
        })
    }
}
