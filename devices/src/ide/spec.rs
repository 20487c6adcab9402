//! Register offsets, bit layouts and command codes of the PIIX4 IDE function and the ATA/ATAPI
//! devices behind it: the 82371AB PIIX4 datasheet (order 290562) sections 3.2 "IDE configuration
//! registers (function 1)" and 2.7 / 3.3 "Bus master IDE I/O registers", SFF-8038i (bus master
//! programming interface, PRD format), and ATA/ATAPI-6 (T13 1410D) for the task file, status,
//! error and command set.

// ---- PCI function 1 (PIIX4 section 3.2) --------------------------------------------------------

pub const IDE_DEVICE_ID: u16 = 0x7111;
/// Hyper-V generation 1 (and Virtual Server) report revision 01.
pub const IDE_REVISION_ID: u8 = 0x01;
/// Mass storage, IDE, programming interface 80h: bus-master capable, both channels in legacy
/// (compatibility) mode and not switchable to native mode.
pub const IDE_CLASS_CODE: u32 = 0x01_01_80;
/// PCISTS: fast back-to-back capable, DEVSEL medium (datasheet default 0280h).
pub const IDE_PCISTS: u16 = 0x0280;
/// PCICMD bits the guest may change: I/O space enable (legacy ports and BAR4) and bus master
/// enable; the others are hardwired to 0.
pub const IDE_PCICMD_WRITABLE: u16 = 0x0005;
/// PCICMD as the firmware leaves it: I/O space and bus master enabled.
pub const IDE_PCICMD_FIRMWARE: u16 = 0x0005;
/// MLT, master latency timer: bits 7:4 writable.
pub const MLT_WRITABLE: u8 = 0xf0;
/// BMIBA, bus master interface base address (BAR4): 16 bytes of I/O space.
pub const BMIBA_BAR: usize = 4;
pub const BMIBA: u16 = 0x20;
pub const BM_IO_LEN: u16 = 16;
/// Where the firmware leaves BMIBA (Hyper-V generation 1 shows "I/O ports at ffa0").
pub const BMIBA_FIRMWARE: u16 = 0xffa0;

/// IDETIM, IDE timing, one 16-bit register per channel (primary at 40h, secondary at 42h).
pub const IDETIM_PRIMARY: u16 = 0x40;
pub const IDETIM_SECONDARY: u16 = 0x42;
/// IDETIM bit 15, IDE decode enable: the channel's legacy ports respond only while it is set
/// (`ata_piix` checks it in `piix_pata_prereset`).
pub const IDETIM_DECODE_ENABLE: u16 = 1 << 15;
/// Bits 11:10 are reserved.
pub const IDETIM_WRITABLE: u16 = 0xf3ff;
/// SIDETIM, slave IDE timing (8 bits).
pub const SIDETIM: u16 = 0x44;
/// UDMACTL, Ultra DMA/33 control: one enable bit per drive, bits 3:0.
pub const UDMACTL: u16 = 0x48;
pub const UDMACTL_WRITABLE: u8 = 0x0f;
/// UDMATIM, Ultra DMA/33 timing: two bits per drive at 1:0, 5:4, 9:8, 13:12.
pub const UDMATIM: u16 = 0x4a;
pub const UDMATIM_WRITABLE: u16 = 0x3333;

// ---- Legacy (compatibility mode) resources -----------------------------------------------------

/// The command block of each channel: 8 ports (data, error/features, sector count, LBA low, mid,
/// high, device, status/command).
pub const COMMAND_BLOCK: [u16; 2] = [0x1f0, 0x170];
pub const COMMAND_BLOCK_LEN: u16 = 8;
/// The control block of each channel: one port (alternate status / device control). The next
/// port (3F7h) belongs to the floppy controller.
pub const CONTROL_BLOCK: [u16; 2] = [0x3f6, 0x376];
pub const CONTROL_BLOCK_LEN: u16 = 1;
/// ISA interrupt of each channel in legacy mode (edge-triggered).
pub const LEGACY_IRQ: [u32; 2] = [14, 15];

// ---- Command block registers (ATA-6 section 7) ---------------------------------------------------

pub const REG_DATA: u64 = 0;
/// Error on read, Features on write.
pub const REG_ERROR: u64 = 1;
pub const REG_SECTOR_COUNT: u64 = 2;
pub const REG_LBA_LOW: u64 = 3;
pub const REG_LBA_MID: u64 = 4;
pub const REG_LBA_HIGH: u64 = 5;
pub const REG_DEVICE: u64 = 6;
/// Status on read, Command on write.
pub const REG_STATUS: u64 = 7;

// Status register.
pub const STATUS_BSY: u8 = 0x80;
pub const STATUS_DRDY: u8 = 0x40;
pub const STATUS_DF: u8 = 0x20;
/// Device seek complete (ATA), service (ATAPI).
pub const STATUS_DSC: u8 = 0x10;
pub const STATUS_DRQ: u8 = 0x08;
pub const STATUS_ERR: u8 = 0x01;

// Error register.
pub const ERROR_UNC: u8 = 0x40;
pub const ERROR_IDNF: u8 = 0x10;
pub const ERROR_ABRT: u8 = 0x04;
/// Diagnostic code "device 0 passed, device 1 passed or not present" (also after reset).
pub const DIAG_PASSED: u8 = 0x01;

// Device register.
pub const DEVICE_LBA: u8 = 0x40;
pub const DEVICE_DEV: u8 = 0x10;
pub const DEVICE_HEAD_MASK: u8 = 0x0f;

// Device control register.
/// High order byte: reads return the previous ("HOB") contents of the 48-bit FIFO registers.
pub const CONTROL_HOB: u8 = 0x80;
pub const CONTROL_SRST: u8 = 0x04;
/// nIEN: the selected device does not drive INTRQ.
pub const CONTROL_NIEN: u8 = 0x02;

/// ATAPI interrupt reason, in the sector count register: command (1) or data (0).
pub const IREASON_COD: u8 = 0x01;
/// ATAPI interrupt reason: transfer towards the host (1) or the device (0).
pub const IREASON_IO: u8 = 0x02;

/// What a channel's registers read when neither device is present: the bus floats high except
/// DD7, which the host's pull-down resistor holds low (ATA-6 annex; Linux treats 7Fh as "no
/// device, not busy" and FFh as a missing pull-down).
pub const FLOATING_BUS: u8 = 0x7f;

/// Signatures left in sector count, LBA low, mid, high after reset and diagnostics.
pub const SIGNATURE_ATA: [u8; 4] = [0x01, 0x01, 0x00, 0x00];
pub const SIGNATURE_ATAPI: [u8; 4] = [0x01, 0x01, 0x14, 0xeb];

// ---- Commands (ATA-6 section 8) ----------------------------------------------------------------

pub const CMD_NOP: u8 = 0x00;
pub const CMD_DEVICE_RESET: u8 = 0x08;
/// 10h-1Fh: RECALIBRATE (obsolete, still sent by old BIOSes and DOS drivers).
pub const CMD_RECALIBRATE: u8 = 0x10;
pub const CMD_READ_SECTORS: u8 = 0x20;
pub const CMD_READ_SECTORS_NO_RETRY: u8 = 0x21;
pub const CMD_READ_SECTORS_EXT: u8 = 0x24;
pub const CMD_READ_DMA_EXT: u8 = 0x25;
pub const CMD_READ_MULTIPLE_EXT: u8 = 0x29;
pub const CMD_WRITE_SECTORS: u8 = 0x30;
pub const CMD_WRITE_SECTORS_NO_RETRY: u8 = 0x31;
pub const CMD_WRITE_SECTORS_EXT: u8 = 0x34;
pub const CMD_WRITE_DMA_EXT: u8 = 0x35;
pub const CMD_WRITE_MULTIPLE_EXT: u8 = 0x39;
pub const CMD_READ_VERIFY: u8 = 0x40;
pub const CMD_READ_VERIFY_NO_RETRY: u8 = 0x41;
pub const CMD_READ_VERIFY_EXT: u8 = 0x42;
/// 70h-7Fh: SEEK.
pub const CMD_SEEK: u8 = 0x70;
pub const CMD_EXECUTE_DEVICE_DIAGNOSTIC: u8 = 0x90;
pub const CMD_INITIALIZE_DEVICE_PARAMETERS: u8 = 0x91;
/// ATA-1 power management opcodes (94h-99h), the same commands as E0h-E6h.
pub const CMD_STANDBY_IMMEDIATE_OLD: u8 = 0x94;
pub const CMD_IDLE_IMMEDIATE_OLD: u8 = 0x95;
pub const CMD_STANDBY_OLD: u8 = 0x96;
pub const CMD_IDLE_OLD: u8 = 0x97;
pub const CMD_CHECK_POWER_MODE_OLD: u8 = 0x98;
pub const CMD_SLEEP_OLD: u8 = 0x99;
pub const CMD_PACKET: u8 = 0xa0;
pub const CMD_IDENTIFY_PACKET_DEVICE: u8 = 0xa1;
pub const CMD_READ_MULTIPLE: u8 = 0xc4;
pub const CMD_WRITE_MULTIPLE: u8 = 0xc5;
pub const CMD_SET_MULTIPLE_MODE: u8 = 0xc6;
pub const CMD_READ_DMA: u8 = 0xc8;
pub const CMD_READ_DMA_NO_RETRY: u8 = 0xc9;
pub const CMD_WRITE_DMA: u8 = 0xca;
pub const CMD_WRITE_DMA_NO_RETRY: u8 = 0xcb;
pub const CMD_STANDBY_IMMEDIATE: u8 = 0xe0;
pub const CMD_IDLE_IMMEDIATE: u8 = 0xe1;
pub const CMD_STANDBY: u8 = 0xe2;
pub const CMD_IDLE: u8 = 0xe3;
pub const CMD_CHECK_POWER_MODE: u8 = 0xe5;
pub const CMD_SLEEP: u8 = 0xe6;
pub const CMD_FLUSH_CACHE: u8 = 0xe7;
pub const CMD_FLUSH_CACHE_EXT: u8 = 0xea;
pub const CMD_IDENTIFY_DEVICE: u8 = 0xec;
pub const CMD_SET_FEATURES: u8 = 0xef;

// SET FEATURES subcommands (features register).
pub const FEATURE_ENABLE_WRITE_CACHE: u8 = 0x02;
pub const FEATURE_SET_TRANSFER_MODE: u8 = 0x03;
pub const FEATURE_DISABLE_LOOK_AHEAD: u8 = 0x55;
pub const FEATURE_DISABLE_REVERT: u8 = 0x66;
pub const FEATURE_DISABLE_WRITE_CACHE: u8 = 0x82;
pub const FEATURE_ENABLE_LOOK_AHEAD: u8 = 0xaa;
pub const FEATURE_ENABLE_REVERT: u8 = 0xcc;

// SET FEATURES 03h transfer mode values (sector count register).
pub const XFER_PIO_DEFAULT: u8 = 0x00;
pub const XFER_PIO_DEFAULT_NO_IORDY: u8 = 0x01;
/// 08h + n: PIO flow control mode n (0-4).
pub const XFER_PIO: u8 = 0x08;
/// 20h + n: multiword DMA mode n (0-2).
pub const XFER_MWDMA: u8 = 0x20;
/// 40h + n: Ultra DMA mode n (0-5).
pub const XFER_UDMA: u8 = 0x40;
pub const MAX_PIO_MODE: u8 = 4;
pub const MAX_MWDMA_MODE: u8 = 2;
pub const MAX_UDMA_MODE: u8 = 5;

/// PACKET features bit 0: the data moves by DMA.
pub const PACKET_FEATURE_DMA: u8 = 0x01;
/// Command packet length (IDENTIFY PACKET DEVICE word 0 bits 1:0 = 00b).
pub const CDB_LEN: usize = 12;

// CHECK POWER MODE results (sector count).
pub const POWER_STANDBY: u8 = 0x00;
pub const POWER_IDLE: u8 = 0x80;
pub const POWER_ACTIVE: u8 = 0xff;

// ---- Limits --------------------------------------------------------------------------------------

pub const SECTOR_SIZE: usize = 512;
/// Largest DRQ block of READ/WRITE MULTIPLE (IDENTIFY word 47).
pub const MAX_MULTIPLE: u8 = 16;
/// Sectors addressable with 28-bit commands (IDENTIFY words 60-61 saturate here).
pub const LBA28_LIMIT: u64 = 0x0fff_ffff;
/// Sectors addressable with 48-bit commands.
pub const LBA48_LIMIT: u64 = 1 << 48;
/// Sectors the default CHS translation can describe: 16383 cylinders, 16 heads, 63 sectors.
pub const CHS_LIMIT: u64 = 16383 * 16 * 63;
/// Sectors moved per backend call during DMA and verify: 64 KiB, so that a 65536-sector (32 MiB)
/// command never allocates more than this.
pub const CHUNK_SECTORS: u32 = 128;
/// Bytes per SCSI sub-command when the ATAPI transport splits a large READ.
pub const ATAPI_CHUNK_BYTES: usize = 64 * 1024;
/// Largest data phase of an ATAPI command the transport does not know how to split.
pub const ATAPI_MAX_UNSPLIT: usize = 1 << 20;

// ---- Bus master IDE registers (PIIX4 section 3.3, SFF-8038i) -----------------------------------

/// Each channel's bus master registers: primary at BMIBA + 0, secondary at BMIBA + 8.
pub const BM_CHANNEL_STRIDE: u64 = 8;
/// BMICx, bus master IDE command.
pub const BMIC: u64 = 0;
/// BMISx, bus master IDE status.
pub const BMIS: u64 = 2;
/// BMIDTPx, descriptor table pointer (dword).
pub const BMIDTP: u64 = 4;

/// BMIC bit 0: start/stop bus master.
pub const BMIC_START: u8 = 0x01;
/// BMIC bit 3, RWCON: 1 = the bus master writes memory (device to memory, READ DMA).
pub const BMIC_WRITE_TO_MEMORY: u8 = 0x08;
pub const BMIC_WRITABLE: u8 = BMIC_START | BMIC_WRITE_TO_MEMORY;

/// BMIS bit 0: bus master IDE active (read only).
pub const BMIS_ACTIVE: u8 = 0x01;
/// BMIS bit 1: IDE DMA error (write 1 to clear).
pub const BMIS_ERROR: u8 = 0x02;
/// BMIS bit 2: IDE interrupt status (write 1 to clear).
pub const BMIS_INTERRUPT: u8 = 0x04;
/// BMIS bits 5 and 6: drive 0 / drive 1 DMA capable (read/write, for software).
pub const BMIS_DRIVE0_DMA: u8 = 0x20;
pub const BMIS_DRIVE1_DMA: u8 = 0x40;
pub const BMIS_W1C: u8 = BMIS_ERROR | BMIS_INTERRUPT;
pub const BMIS_RW: u8 = BMIS_DRIVE0_DMA | BMIS_DRIVE1_DMA;
/// BMIDTP bits 1:0 are reserved (the table is dword aligned).
pub const BMIDTP_MASK: u32 = !3;

/// A physical region descriptor is two dwords.
pub const PRD_SIZE: u64 = 8;
/// PRD dword 0 bit 0 is reserved: regions start on even addresses.
pub const PRD_ADDRESS_MASK: u32 = !1;
/// PRD dword 1 bits 15:1: byte count; 0 means 64 KiB.
pub const PRD_COUNT_MASK: u32 = 0xfffe;
/// PRD dword 1 bit 31: end of table.
pub const PRD_EOT: u32 = 1 << 31;
/// A descriptor table must not cross a 64 KiB boundary, so it holds at most 8192 entries.
pub const PRD_TABLE_PAGE: u64 = 0x1_0000;
