//! Register offsets, bit layouts and constants of the DEC 21140A: the Digital Semiconductor
//! 21140A PCI Fast Ethernet LAN Controller Hardware Reference Manual (EC-QN7NC-TE), chapter 3
//! (configuration registers and CSRs) and chapter 4 (descriptors, setup frames), the Digital
//! "21X4 Serial ROM Format" (version 4.09) for the SROM, the National Semiconductor 93C46 data
//! sheet for the SROM's MicroWire protocol, and IEEE 802.3 clause 22 for the MII management
//! interface and PHY registers.

// ---- PCI configuration space (HRM section 3.1) -------------------------------------------------

pub const VENDOR_DEC: u16 = 0x1011;
/// The 21140 and 21140A share device ID 0009h.
pub const DEVICE_21140: u16 = 0x0009;
/// CFRV: 20h, the 21140A pass 2.0 (Linux prints "Digital DS21140 Tulip rev 32"). 86Box's model
/// of the Virtual PC card reports the same revision.
pub const REVISION_21140A: u8 = 0x20;
/// Network controller, Ethernet.
pub const CLASS_ETHERNET: u32 = 0x02_00_00;
/// The subsystem IDs (CSID) the card reports in configuration space and in its SROM. These are
/// the values 86Box gives its "Microsoft Virtual PC" 21140 model; kettle could not check them
/// against a real Virtual PC, and no driver depends on them.
pub const SUBSYSTEM_VENDOR: u16 = 0x0a00;
pub const SUBSYSTEM_ID: u16 = 0x2114;
/// PCISTS after reset: fast back-to-back capable, DEVSEL medium.
pub const PCI_STATUS_RESET: u16 = 0x0280;
/// PCICMD bits the guest may change: I/O space (0), memory space (1), bus master (2), memory
/// write and invalidate (4), parity error response (6), SERR# (8), and the PCI 2.3 interrupt
/// disable bit (10), which kettle adds so that INTx can be masked.
pub const PCI_COMMAND_WRITABLE: u16 = 0x0557;
/// CFIT: MIN_GNT 14h and MAX_LAT 28h, the 21140A's values.
pub const MIN_GNT: u16 = 0x3e;
pub const MAX_LAT: u16 = 0x3f;
pub const MIN_GNT_VALUE: u8 = 0x14;
pub const MAX_LAT_VALUE: u8 = 0x28;
/// CBIO (BAR0): the CSRs in I/O space, 128 bytes.
pub const CBIO_BAR: usize = 0;
pub const CBIO: u16 = 0x10;
pub const CBIO_LEN: u16 = 128;
/// CBMA (BAR1): the same CSRs in memory space. The chip decodes 128 bytes; the BAR claims 1 KiB
/// so that the block never shares a small BAR window with another function. Offsets past CSR15
/// are reserved.
pub const CBMA_BAR: usize = 1;
pub const CBMA: u16 = 0x14;
pub const CBMA_LEN: u32 = 1024;
/// CFDD, the configuration device and driver area: sleep (31) and snooze (30) mode bits and a
/// byte (15:8) drivers may use. Linux's tulip clears sleep/snooze on chips that have them.
pub const CFDD: u16 = 0x40;
pub const CFDD_WRITABLE: u32 = 0xc000_ff00;
pub const CFDD_SLEEP: u32 = 1 << 31;
pub const CFDD_SNOOZE: u32 = 1 << 30;

// ---- CSRs (HRM section 3.2): CSR n at offset 8 * n, 32-bit accesses -----------------------------

/// Bytes of CSR space the chip decodes (CSR0-CSR15).
pub const CSR_SPACE: u64 = 128;
/// Distance between consecutive CSRs.
pub const CSR_STRIDE: u64 = 8;
/// Number of CSRs.
pub const CSR_COUNT: usize = 16;

pub const CSR0: usize = 0;
pub const CSR1: usize = 1;
pub const CSR2: usize = 2;
pub const CSR3: usize = 3;
pub const CSR4: usize = 4;
pub const CSR5: usize = 5;
pub const CSR6: usize = 6;
pub const CSR7: usize = 7;
pub const CSR8: usize = 8;
pub const CSR9: usize = 9;
pub const CSR10: usize = 10;
pub const CSR11: usize = 11;
pub const CSR12: usize = 12;
pub const CSR13: usize = 13;
pub const CSR14: usize = 14;
pub const CSR15: usize = 15;

// CSR0, bus mode.
/// SWR, software reset: resets every CSR except itself; self-clearing.
pub const CSR0_SWR: u32 = 1 << 0;
pub const CSR0_BAR: u32 = 1 << 1;
/// DSL, descriptor skip length in longwords (ring mode only).
pub const CSR0_DSL_SHIFT: u32 = 2;
pub const CSR0_DSL_MASK: u32 = 0x1f;
/// BLE, big/little endian data buffers (not emulated: buffers are always little-endian).
pub const CSR0_BLE: u32 = 1 << 7;
/// TAP, transmit automatic polling interval, bits 19:17.
pub const CSR0_TAP_SHIFT: u32 = 17;
pub const CSR0_TAP_MASK: u32 = 0x7;
/// DBO, descriptor byte ordering (not emulated).
pub const CSR0_DBO: u32 = 1 << 20;
/// Bits 31:25 are reserved and read as ones.
pub const CSR0_RESET: u32 = 0xfe00_0000;
/// The bits a write stores (SWR acts and never reads back).
pub const CSR0_WRITABLE: u32 = 0x01ff_fffe;

// CSR5, status. Bits 16:0 are write-one-to-clear.
pub const CSR5_TI: u32 = 1 << 0;
pub const CSR5_TPS: u32 = 1 << 1;
pub const CSR5_TU: u32 = 1 << 2;
pub const CSR5_TJT: u32 = 1 << 3;
pub const CSR5_UNF: u32 = 1 << 5;
pub const CSR5_RI: u32 = 1 << 6;
pub const CSR5_RU: u32 = 1 << 7;
pub const CSR5_RPS: u32 = 1 << 8;
pub const CSR5_RWT: u32 = 1 << 9;
/// GTE, general-purpose timer expired.
pub const CSR5_GTE: u32 = 1 << 11;
/// FBE, fatal bus error (a DMA cycle failed); EB (25:23) says which.
pub const CSR5_FBE: u32 = 1 << 13;
pub const CSR5_AIS: u32 = 1 << 15;
pub const CSR5_NIS: u32 = 1 << 16;
/// The status bits software clears by writing ones.
pub const CSR5_W1C: u32 = 0x0001_ffff;
/// Normal interrupt summary sources (HRM CSR5<16>): TI, TU, RI.
pub const CSR5_NORMAL: u32 = CSR5_TI | CSR5_TU | CSR5_RI;
/// Abnormal interrupt summary sources (HRM CSR5<15>): TPS, TJT, UNF, RU, RPS, RWT, GTE, FBE.
/// On the 21140A the timer counts as abnormal (the 21143 moved it to the normal group); Linux
/// enables AIS together with GTE when it uses the timer to re-enable interrupts.
pub const CSR5_ABNORMAL: u32 =
    CSR5_TPS | CSR5_TJT | CSR5_UNF | CSR5_RU | CSR5_RPS | CSR5_RWT | CSR5_GTE | CSR5_FBE;
/// RS, receive process state, bits 19:17.
pub const CSR5_RS_SHIFT: u32 = 17;
/// TS, transmit process state, bits 22:20.
pub const CSR5_TS_SHIFT: u32 = 20;
pub const CSR5_STATE_MASK: u32 = 0x7;
/// EB, error bits (valid with FBE), bits 25:23: 000 parity, 001 master abort, 010 target abort.
pub const CSR5_EB_SHIFT: u32 = 23;
pub const CSR5_EB_MASTER_ABORT: u32 = 0b001;

/// Receive process states (CSR5 RS).
pub const RS_STOPPED: u32 = 0b000;
pub const RS_WAITING: u32 = 0b011;
pub const RS_SUSPENDED: u32 = 0b100;
/// Transmit process states (CSR5 TS).
pub const TS_STOPPED: u32 = 0b000;
pub const TS_SUSPENDED: u32 = 0b110;

// CSR6, operation mode.
/// HP, hash/perfect filtering (read-only: set by the last setup frame's filtering type).
pub const CSR6_HP: u32 = 1 << 0;
/// SR, start/stop receive.
pub const CSR6_SR: u32 = 1 << 1;
/// HO, hash-only filtering (read-only).
pub const CSR6_HO: u32 = 1 << 2;
pub const CSR6_PB: u32 = 1 << 3;
/// IF, inverse filtering (read-only).
pub const CSR6_IF: u32 = 1 << 4;
pub const CSR6_SB: u32 = 1 << 5;
/// PR, promiscuous mode.
pub const CSR6_PR: u32 = 1 << 6;
/// PM, pass all multicast.
pub const CSR6_PM: u32 = 1 << 7;
pub const CSR6_FKD: u32 = 1 << 8;
/// FD, full-duplex mode.
pub const CSR6_FD: u32 = 1 << 9;
/// OM, operating mode, bits 11:10: 00 normal, 01 internal loopback, 10 external loopback.
pub const CSR6_OM_SHIFT: u32 = 10;
pub const CSR6_OM_MASK: u32 = 0x3;
pub const CSR6_FC: u32 = 1 << 12;
/// ST, start/stop transmission.
pub const CSR6_ST: u32 = 1 << 13;
/// TR, transmit threshold, bits 15:14.
pub const CSR6_TR: u32 = 0x3 << 14;
pub const CSR6_CA: u32 = 1 << 17;
/// PS, port select: 1 = MII/SYM port, 0 = 10 Mb/s serial port.
pub const CSR6_PS: u32 = 1 << 18;
pub const CSR6_HBD: u32 = 1 << 19;
pub const CSR6_SF: u32 = 1 << 21;
/// TTM, transmit threshold mode: 1 = 10 Mb/s, 0 = 100 Mb/s.
pub const CSR6_TTM: u32 = 1 << 22;
pub const CSR6_PCS: u32 = 1 << 23;
pub const CSR6_SCR: u32 = 1 << 24;
/// Bit 25 "must be one" on the 21140A.
pub const CSR6_MBO: u32 = 1 << 25;
/// RA, receive all.
pub const CSR6_RA: u32 = 1 << 30;
/// The bits software can change; the filtering-mode bits and the reserved bits are not.
pub const CSR6_WRITABLE: u32 = CSR6_SR
    | CSR6_PB
    | CSR6_SB
    | CSR6_PR
    | CSR6_PM
    | CSR6_FKD
    | CSR6_FD
    | (CSR6_OM_MASK << CSR6_OM_SHIFT)
    | CSR6_FC
    | CSR6_ST
    | CSR6_TR
    | CSR6_CA
    | CSR6_PS
    | CSR6_HBD
    | CSR6_SF
    | CSR6_TTM
    | CSR6_PCS
    | CSR6_SCR
    | CSR6_MBO
    | CSR6_RA;
/// CSR6 after reset: reserved bits 29:28 and MBO set, promiscuous mode on. This is the value the
/// 21x4x reference manuals tabulate (kettle could only check the 21143's table); with an empty
/// address filter it means a receiver started before the first setup frame takes everything.
pub const CSR6_RESET: u32 = 0x3200_0040;
/// The reserved bits that keep their reset value.
pub const CSR6_FIXED: u32 = 0x3000_0000;

// CSR7, interrupt enable: one enable per CSR5 bit 16:0 (NIE at 16, AIE at 15).
pub const CSR7_MASK: u32 = 0x0001_ffff;
pub const CSR7_NIE: u32 = CSR5_NIS;
pub const CSR7_AIE: u32 = CSR5_AIS;

// CSR8, missed frame counter (cleared by reading).
pub const CSR8_MFC_MASK: u32 = 0xffff;
pub const CSR8_MFO: u32 = 1 << 16;

// CSR9, serial ROM and MII management.
/// SROM chip select, clock, data in (to the ROM), data out (from the ROM).
pub const CSR9_SCS: u32 = 1 << 0;
pub const CSR9_SCLK: u32 = 1 << 1;
pub const CSR9_SDI: u32 = 1 << 2;
pub const CSR9_SDO: u32 = 1 << 3;
/// Boot ROM data byte (bits 7:0) when BR and RD are set.
pub const CSR9_DATA_MASK: u32 = 0xff;
pub const CSR9_REG: u32 = 1 << 10;
/// SR, serial ROM select.
pub const CSR9_SR: u32 = 1 << 11;
/// BR, boot ROM select.
pub const CSR9_BR: u32 = 1 << 12;
pub const CSR9_WR: u32 = 1 << 13;
/// RD, read operation.
pub const CSR9_RD: u32 = 1 << 14;
/// MDC, MII management clock.
pub const CSR9_MDC: u32 = 1 << 16;
/// MDO, MII management data out (to the PHY).
pub const CSR9_MDO: u32 = 1 << 17;
/// MII management operation mode: 1 = the PHY drives MDIO (read), 0 = the 21140A drives it.
pub const CSR9_MII_READ: u32 = 1 << 18;
/// MDI, MII management data in (from the PHY).
pub const CSR9_MDI: u32 = 1 << 19;
/// The CSR9 bits a write stores and reads back.
pub const CSR9_STORED: u32 = CSR9_SCS
    | CSR9_SCLK
    | CSR9_SDI
    | CSR9_REG
    | CSR9_SR
    | CSR9_BR
    | CSR9_WR
    | CSR9_RD
    | CSR9_MDC
    | CSR9_MDO
    | CSR9_MII_READ;

// CSR11, general-purpose timer (21140A: 16-bit count and continuous mode).
pub const CSR11_VALUE_MASK: u32 = 0xffff;
pub const CSR11_CON: u32 = 1 << 16;
/// One timer unit, as the HRM's CSR11 description gives it: 204.8 µs while the port runs at
/// 10 Mb/s, 81.92 µs at 100 Mb/s (kettle takes 100 Mb/s to mean CSR6 PS set and TTM clear).
pub const GPT_UNIT_10MBPS_NS: u64 = 204_800;
pub const GPT_UNIT_100MBPS_NS: u64 = 81_920;

// CSR12, general-purpose port.
pub const CSR12_DATA_MASK: u32 = 0xff;
/// GPC: a write with this bit set loads the pin directions (1 = output) from bits 7:0.
pub const CSR12_GPC: u32 = 1 << 8;

// CSR15, watchdog timer: JBD (0), HUJ (1), JCK (2), RWD (4), RWR (5).
pub const CSR15_MASK: u32 = 0x37;

/// Transmit automatic polling intervals (CSR0 TAP 1-7), in nanoseconds.
pub const TAP_INTERVALS_NS: [u64; 8] = [
    0, 200_000, 800_000, 1_600_000, 12_800, 25_600, 51_200, 102_400,
];
/// kettle never polls more often than this, whatever TAP says.
pub const TAP_MIN_INTERVAL_NS: u64 = 100_000;

// ---- Descriptors (HRM section 4.2) -------------------------------------------------------------

/// Bytes of a descriptor without the skip area.
pub const DESC_SIZE: u32 = 16;
/// OWN, in both RDES0 and TDES0: the 21140A owns the descriptor.
pub const DES0_OWN: u32 = 1 << 31;
/// Buffer sizes (RDES1/TDES1): buffer 1 in 10:0, buffer 2 in 21:11.
pub const DES1_BS1_MASK: u32 = 0x7ff;
pub const DES1_BS2_SHIFT: u32 = 11;
/// End of ring (RER/TER): the next descriptor is at the list base.
pub const DES1_ER: u32 = 1 << 25;
/// Second address chained (RCH/TCH): buffer 2's address is the next descriptor.
pub const DES1_CH: u32 = 1 << 24;

// RDES0.
pub const RDES0_FF: u32 = 1 << 30;
pub const RDES0_FL_SHIFT: u32 = 16;
pub const RDES0_FL_MASK: u32 = 0x3fff;
pub const RDES0_ES: u32 = 1 << 15;
pub const RDES0_DE: u32 = 1 << 14;
pub const RDES0_DT_SHIFT: u32 = 12;
pub const RDES0_MF: u32 = 1 << 10;
pub const RDES0_FS: u32 = 1 << 9;
pub const RDES0_LS: u32 = 1 << 8;
pub const RDES0_TL: u32 = 1 << 7;
/// FT, frame type: the length/type field is a type (greater than 1500).
pub const RDES0_FT: u32 = 1 << 5;
/// RDES0 DT, data type: a frame from the wire, from internal loopback, from external loopback.
pub const DT_SERIAL: u32 = 0b00;
pub const DT_INTERNAL_LOOPBACK: u32 = 0b01;
pub const DT_EXTERNAL_LOOPBACK: u32 = 0b10;

// TDES0.
pub const TDES0_ES: u32 = 1 << 15;
/// TO, transmit jabber timeout (kettle: the frame was longer than it transmits).
pub const TDES0_TO: u32 = 1 << 14;
/// LO, loss of carrier; NC, no carrier (not reported in full-duplex mode).
pub const TDES0_LO: u32 = 1 << 11;
pub const TDES0_NC: u32 = 1 << 10;
/// UF, underflow (kettle: a frame was abandoned before its last segment).
pub const TDES0_UF: u32 = 1 << 1;
/// What a processed setup frame's TDES0 becomes: OWN clear, every other bit set. QEMU's 21143
/// model closes setup frames the same way; drivers (Linux, the BSDs) look only at OWN.
pub const TDES0_SETUP_DONE: u32 = 0x7fff_ffff;

// TDES1.
pub const TDES1_IC: u32 = 1 << 31;
pub const TDES1_LS: u32 = 1 << 30;
pub const TDES1_FS: u32 = 1 << 29;
pub const TDES1_FT1: u32 = 1 << 28;
pub const TDES1_SET: u32 = 1 << 27;
/// AC, add CRC disable: the buffer already ends with the frame check sequence.
pub const TDES1_AC: u32 = 1 << 26;
pub const TDES1_DPD: u32 = 1 << 23;
pub const TDES1_FT0: u32 = 1 << 22;

/// A setup frame's length.
pub const SETUP_FRAME_LEN: usize = 192;
/// Entries of the perfect filter table.
pub const PERFECT_ENTRIES: usize = 16;
/// Bits of the multicast hash table.
pub const HASH_BITS: usize = 512;
/// In hash mode, the physical address sits in longwords 39-41 of the setup frame.
pub const HASH_MODE_PERFECT_OFFSET: usize = 156;

// ---- Frames --------------------------------------------------------------------------------------

pub const ETH_ALEN: usize = 6;
/// Frames shorter than this go on the wire padded (without the FCS).
pub const ETH_MIN_FRAME: usize = 60;
pub const ETH_FCS_LEN: usize = 4;
/// The longest frame (with FCS) that is not "too long" (RDES0 TL).
pub const ETH_MAX_FRAME_FCS: usize = 1518;
/// Length/type values above this are types (RDES0 FT).
pub const ETH_MAX_LENGTH_FIELD: u16 = 1500;

// ---- kettle's bounds ------------------------------------------------------------------------------

/// Descriptors the transmit process examines per poll (demand, start or automatic poll) before it
/// suspends without an error, and descriptors one received frame may spread over; also the most
/// descriptors one transmit frame may span. A ring can therefore be at most this long before
/// kettle treats it as a loop.
pub const DESCRIPTOR_LIMIT: usize = 4096;
/// Longest frame the transmitter sends (with the FCS the guest may supply); longer ones are
/// dropped with TDES0 ES|TO.
pub const MAX_TX_FRAME: usize = 16384;
/// Longest received frame (with FCS) RDES0's 14-bit length field can describe.
pub const MAX_RX_FRAME_FCS: usize = RDES0_FL_MASK as usize;

// ---- Serial ROM (93C46; Digital 21X4 SROM format 4.09) ------------------------------------------

/// 64 words of 16 bits, 6 address bits.
pub const SROM_WORDS: usize = 64;
pub const SROM_ADDR_BITS: u32 = 6;
/// MicroWire opcodes (after the start bit).
pub const SROM_OP_READ: u32 = 0b10;
pub const SROM_OP_WRITE: u32 = 0b01;
pub const SROM_OP_ERASE: u32 = 0b11;
pub const SROM_OP_MISC: u32 = 0b00;

/// Byte offsets in the SROM (format 4.09, section 3).
pub const SROM_SUBSYSTEM_VENDOR: usize = 0;
pub const SROM_SUBSYSTEM_ID: usize = 2;
pub const SROM_ID_BLOCK_CRC: usize = 16;
pub const SROM_FORMAT_VERSION: usize = 18;
pub const SROM_CONTROLLER_COUNT: usize = 19;
pub const SROM_MAC: usize = 20;
pub const SROM_CONTROLLER0_DEVICE: usize = 26;
pub const SROM_CONTROLLER0_LEAF_OFFSET: usize = 27;
/// Where kettle puts controller 0's info leaf.
pub const SROM_LEAF: usize = 30;
/// The SROM CRC (low 16 bits of the CRC-32 of bytes 0-125).
pub const SROM_CRC: usize = 126;
pub const SROM_FORMAT_V4: u8 = 4;
/// Selected connection type 0800h: autosense.
pub const SROM_CONNECTION_AUTOSENSE: u16 = 0x0800;
/// The general-purpose port directions the leaf asks for (CSR12 with GPC): all inputs, the
/// MII PHY needs no pins.
pub const SROM_GP_CONTROL: u8 = 0x00;
/// Extended-format block marker and the 21140 MII PHY block type.
pub const SROM_BLOCK_EXTENDED: u8 = 0x80;
pub const SROM_BLOCK_21140_MII: u8 = 1;
/// Media capabilities, advertisement, full-duplex and TTM bitmaps of the MII block (in BMSR /
/// ANAR bit positions): 10BASE-T and 100BASE-TX, half and full duplex.
pub const SROM_MII_CAPABILITIES: u16 = 0x7800;
pub const SROM_MII_ADVERTISE: u16 = 0x01e0;
pub const SROM_MII_FDX: u16 = 0x5000;
pub const SROM_MII_TTM: u16 = 0x1800;

// ---- MII management (IEEE 802.3 clause 22) ---------------------------------------------------------

/// The PHY's management address.
pub const PHY_ADDRESS: u8 = 1;
/// MDIO frames need at least this many ones of preamble.
pub const MDIO_PREAMBLE: u32 = 32;
pub const MDIO_OP_READ: u32 = 0b10;
pub const MDIO_OP_WRITE: u32 = 0b01;

pub const MII_BMCR: u8 = 0;
pub const MII_BMSR: u8 = 1;
pub const MII_PHYSID1: u8 = 2;
pub const MII_PHYSID2: u8 = 3;
pub const MII_ANAR: u8 = 4;
pub const MII_ANLPAR: u8 = 5;
pub const MII_ANER: u8 = 6;

pub const BMCR_RESET: u16 = 1 << 15;
pub const BMCR_LOOPBACK: u16 = 1 << 14;
pub const BMCR_SPEED100: u16 = 1 << 13;
pub const BMCR_ANENABLE: u16 = 1 << 12;
pub const BMCR_PDOWN: u16 = 1 << 11;
pub const BMCR_ISOLATE: u16 = 1 << 10;
pub const BMCR_ANRESTART: u16 = 1 << 9;
pub const BMCR_FULLDPLX: u16 = 1 << 8;
pub const BMCR_CTST: u16 = 1 << 7;
/// The BMCR bits that are stored (reset and restart act and clear themselves).
pub const BMCR_STORED: u16 = BMCR_LOOPBACK
    | BMCR_SPEED100
    | BMCR_ANENABLE
    | BMCR_PDOWN
    | BMCR_ISOLATE
    | BMCR_FULLDPLX
    | BMCR_CTST;
/// BMCR after reset: 100 Mb/s, autonegotiation enabled.
pub const BMCR_DEFAULT: u16 = BMCR_SPEED100 | BMCR_ANENABLE;

/// BMSR: 100BASE-TX full/half, 10BASE-T full/half, autonegotiation ability, extended registers.
pub const BMSR_CAPABILITIES: u16 = 0x7809;
pub const BMSR_LSTATUS: u16 = 1 << 2;
pub const BMSR_ANEGCOMPLETE: u16 = 1 << 5;

/// The PHY: a National Semiconductor DP83840A, the MII PHY of many 21140 boards. PHYIDR1 2000h
/// and PHYIDR2 5C01h: National's OUI 08-00-17, model 0, revision 1. No driver kettle knows of
/// keys on these values.
pub const PHY_ID1: u16 = 0x2000;
pub const PHY_ID2: u16 = 0x5c01;

/// ANAR: selector 00001 (IEEE 802.3) is fixed; the technology ability, remote fault and next
/// page bits are writable. After reset it advertises 10/100, half and full duplex.
pub const ANAR_SELECTOR: u16 = 0x0001;
pub const ANAR_WRITABLE: u16 = 0xbfe0;
pub const ANAR_DEFAULT: u16 = 0x01e1;
/// What the link partner (the host side) advertises while the link is up: acknowledge,
/// 100BASE-TX full and half, 10BASE-T full and half, IEEE 802.3.
pub const ANLPAR_PARTNER: u16 = 0x41e1;
/// ANER bit 0: the link partner is autonegotiation able.
pub const ANER_LP_AN_ABLE: u16 = 1 << 0;
