//! The MII PHY behind the 21140A's media-independent interface and the management frames that
//! reach it through CSR9's bit-banged MDC/MDIO lines (IEEE 802.3 clause 22).
//!
//! The PHY is a National Semiconductor DP83840A at management address 1 (PHYIDR1 2000h, PHYIDR2
//! 5C01h), 10BASE-T/100BASE-TX, half and full duplex, with autonegotiation. Its link partner is
//! the host side: while the link is up the partner advertises 100BASE-TX and 10BASE-T, full and
//! half duplex (ANLPAR 41E1h), so Linux's `tulip_check_duplex` computes 100 Mb/s full duplex
//! (ANLPAR & ANAR = 01E1h: TTM clear, FD set). Negotiation completes the moment it is enabled or
//! restarted. The link status bit latches low (clause 22.2.4.2.13): after the link drops, BMSR
//! reads it as down once even if the link is back. A PHY reset (BMCR bit 15) restores BMCR and
//! ANAR and clears itself at once. Reads at any other management address get all ones (nothing
//! drives MDIO); vendor registers read as zero.
//!
//! Management frames: at least 32 ones of preamble, start 01, opcode (10 read, 01 write), 5-bit PHY
//! address, 5-bit register address, then for a read the PHY releases MDIO for one bit and drives a
//! zero and the 16 data bits, most significant first; for a write the station sends 10 and the
//! data. The PHY samples MDIO on rising MDC edges and changes what it drives just after them, so
//! a driver that reads MDI before raising MDC (as `tulip_mdio_read` does) sees the turnaround
//! bits, the data and one idle bit in its 19 reads.

use crate::bus::warn_limited;

use super::spec::*;

/// The PHY's registers.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Phy {
    bmcr: u16,
    anar: u16,
    /// The host side's link.
    link: bool,
    /// The link went down since BMSR was last read.
    latched_down: bool,
}

impl Phy {
    fn new(link: bool) -> Self {
        Self {
            bmcr: BMCR_DEFAULT,
            anar: ANAR_DEFAULT,
            link,
            latched_down: false,
        }
    }

    /// The link as the MAC sees it: up, and the PHY neither powered down nor isolated.
    fn link_ok(&self) -> bool {
        self.link && self.bmcr & (BMCR_PDOWN | BMCR_ISOLATE) == 0
    }

    fn negotiated(&self) -> bool {
        self.link_ok() && self.bmcr & BMCR_ANENABLE != 0
    }

    /// Applies a change that may take the link down, latching the status bit.
    fn change(&mut self, f: impl FnOnce(&mut Self)) {
        let before = self.link_ok();
        f(self);
        if before && !self.link_ok() {
            self.latched_down = true;
        }
    }

    fn read(&mut self, reg: u8) -> u16 {
        match reg {
            MII_BMCR => self.bmcr,
            MII_BMSR => {
                let mut v = BMSR_CAPABILITIES;
                if self.link_ok() && !self.latched_down {
                    v |= BMSR_LSTATUS;
                }
                if self.negotiated() {
                    v |= BMSR_ANEGCOMPLETE;
                }
                self.latched_down = false;
                v
            }
            MII_PHYSID1 => PHY_ID1,
            MII_PHYSID2 => PHY_ID2,
            MII_ANAR => self.anar,
            MII_ANLPAR if self.negotiated() => ANLPAR_PARTNER,
            MII_ANER if self.negotiated() => ANER_LP_AN_ABLE,
            _ => 0,
        }
    }

    fn write(&mut self, reg: u8, value: u16) {
        match reg {
            MII_BMCR => self.change(|p| {
                if value & BMCR_RESET != 0 {
                    p.bmcr = BMCR_DEFAULT;
                    p.anar = ANAR_DEFAULT;
                } else {
                    // Restarting negotiation completes it at once; the bit clears itself.
                    p.bmcr = value & BMCR_STORED;
                }
            }),
            MII_ANAR => self.anar = (value & ANAR_WRITABLE) | ANAR_SELECTOR,
            _ => warn_limited!("tulip: write of {value:#06x} to PHY register {reg} ignored"),
        }
    }
}

/// Where the management interface is in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Counting preamble ones.
    Preamble,
    /// Preamble done and the first start bit (0) seen; the second (1) must follow.
    Start,
    /// Shifting in opcode, PHY address and register address.
    Command,
    /// Driving turnaround and data of a read (`pos` bits since the command).
    ReadOut,
    /// Shifting in turnaround and data of a write.
    WriteData,
}

impl Phase {
    fn to_u8(self) -> u8 {
        match self {
            Phase::Preamble => 0,
            Phase::Start => 1,
            Phase::Command => 2,
            Phase::ReadOut => 3,
            Phase::WriteData => 4,
        }
    }
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Phase::Preamble,
            1 => Phase::Start,
            2 => Phase::Command,
            3 => Phase::ReadOut,
            4 => Phase::WriteData,
            _ => return None,
        })
    }
}

/// Command bits after the start bits: opcode (2), PHY address (5), register address (5).
const COMMAND_BITS: u8 = 12;
/// Bits after the command: turnaround (2) and data (16).
const DATA_BITS: u8 = 18;

/// Saved state of the PHY and of the management interface.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MiiState {
    pub bmcr: u16,
    pub anar: u16,
    pub link: bool,
    pub link_latched_down: bool,
    /// MDC as last driven.
    pub mdc: bool,
    /// 0 preamble, 1 start, 2 command, 3 read data out, 4 write data in.
    pub phase: u8,
    /// Preamble ones counted (saturating at 32).
    pub ones: u8,
    /// Bits shifted in and how many (command or write data), or bits driven of a read.
    pub shift: u32,
    pub count: u8,
    /// The register a read or write addresses, and whether the frame is for this PHY.
    pub reg: u8,
    pub for_us: bool,
    /// The value a read is shifting out.
    pub value: u16,
}

/// The PHY and its management interface.
pub struct Mii {
    phy: Phy,
    mdc: bool,
    phase: Phase,
    ones: u8,
    shift: u32,
    count: u8,
    reg: u8,
    for_us: bool,
    value: u16,
}

impl Mii {
    pub fn new(link: bool) -> Self {
        Self {
            phy: Phy::new(link),
            mdc: false,
            phase: Phase::Preamble,
            ones: 0,
            shift: 0,
            count: 0,
            reg: 0,
            for_us: false,
            value: 0,
        }
    }

    pub fn link(&self) -> bool {
        self.phy.link
    }

    /// Whether frames get through: link up, PHY not powered down or isolated.
    pub fn link_ok(&self) -> bool {
        self.phy.link_ok()
    }

    pub fn set_link(&mut self, up: bool) {
        self.phy.change(|p| p.link = up);
    }

    /// What the PHY drives on MDIO, if anything.
    pub fn mdio_out(&self) -> Option<bool> {
        if self.phase != Phase::ReadOut || !self.for_us {
            return None;
        }
        match self.count {
            1 => Some(false),
            c @ 2..=17 => Some(self.value >> (17 - c) & 1 != 0),
            _ => None,
        }
    }

    /// The station drives MDC; `mdio` is the MDIO line's level (what the station drives, or the
    /// PHY's own output or the pull-up when the station listens).
    pub fn drive(&mut self, mdc: bool, mdio: bool) {
        let rising = mdc && !self.mdc;
        self.mdc = mdc;
        if rising {
            self.clock(mdio);
        }
    }

    fn restart(&mut self) {
        self.phase = Phase::Preamble;
        self.ones = 0;
        self.count = 0;
        self.shift = 0;
    }

    fn clock(&mut self, bit: bool) {
        match self.phase {
            Phase::Preamble => {
                if bit {
                    self.ones = (self.ones + 1).min(MDIO_PREAMBLE as u8);
                } else if u32::from(self.ones) >= MDIO_PREAMBLE {
                    self.phase = Phase::Start;
                } else {
                    self.ones = 0;
                }
            }
            Phase::Start => {
                if bit {
                    self.phase = Phase::Command;
                    self.shift = 0;
                    self.count = 0;
                } else {
                    self.restart();
                }
            }
            Phase::Command => {
                self.shift = self.shift << 1 | u32::from(bit);
                self.count += 1;
                if self.count == COMMAND_BITS {
                    let op = self.shift >> 10;
                    let phy = (self.shift >> 5 & 0x1f) as u8;
                    self.reg = (self.shift & 0x1f) as u8;
                    self.for_us = phy == PHY_ADDRESS;
                    self.shift = 0;
                    self.count = 0;
                    match op {
                        MDIO_OP_READ if self.for_us => {
                            self.value = self.phy.read(self.reg);
                            self.phase = Phase::ReadOut;
                        }
                        MDIO_OP_WRITE => self.phase = Phase::WriteData,
                        // A read for another address: nobody drives MDIO. Anything else is not
                        // a clause 22 frame.
                        _ => self.restart(),
                    }
                }
            }
            Phase::ReadOut => {
                self.count += 1;
                if self.count >= DATA_BITS {
                    self.restart();
                }
            }
            Phase::WriteData => {
                self.shift = self.shift << 1 | u32::from(bit);
                self.count += 1;
                if self.count == DATA_BITS {
                    if self.for_us {
                        self.phy.write(self.reg, self.shift as u16);
                    }
                    self.restart();
                }
            }
        }
    }

    pub fn state(&self) -> MiiState {
        MiiState {
            bmcr: self.phy.bmcr,
            anar: self.phy.anar,
            link: self.phy.link,
            link_latched_down: self.phy.latched_down,
            mdc: self.mdc,
            phase: self.phase.to_u8(),
            ones: self.ones,
            shift: self.shift,
            count: self.count,
            reg: self.reg,
            for_us: self.for_us,
            value: self.value,
        }
    }

    /// Restores a saved PHY; an error names the field that is out of range.
    pub fn from_state(s: &MiiState) -> Result<Self, &'static str> {
        let phase = Phase::from_u8(s.phase).ok_or("MII management phase")?;
        let limit = match phase {
            Phase::Command => COMMAND_BITS,
            Phase::ReadOut | Phase::WriteData => DATA_BITS,
            Phase::Preamble | Phase::Start => 1,
        };
        if s.count >= limit && s.count != 0 {
            return Err("MII management bit count");
        }
        if u32::from(s.ones) > MDIO_PREAMBLE || s.reg > 0x1f {
            return Err("MII management preamble or register");
        }
        Ok(Self {
            phy: Phy {
                bmcr: s.bmcr & BMCR_STORED,
                anar: (s.anar & ANAR_WRITABLE) | ANAR_SELECTOR,
                link: s.link,
                latched_down: s.link_latched_down,
            },
            mdc: s.mdc,
            phase,
            ones: s.ones,
            shift: s.shift,
            count: s.count,
            reg: s.reg,
            for_us: s.for_us,
            value: s.value,
        })
    }
}
