//! Register-level tests of the PIIX4 IDE function: a bus with the legacy ports registered as the
//! VMM does, fake interrupt lines, a flat fake RAM, in-memory disks and a fake SCSI CD target.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use vhd::BlockDevice;

use super::spec::*;
use super::*;
use crate::bus::testing::FakeIrq;
use crate::dma::testing::FakeRam;
use crate::scsi::{Direction, Plan, ScsiTarget, Sense};
use crate::testing::cbor_round_trip;

// ---- Fakes ----------------------------------------------------------------------------------------

/// An in-memory disk with injectable bad sectors and counters.
struct MemDisk {
    data: Mutex<Vec<u8>>,
    read_only: bool,
    bad_sector: Mutex<Option<u64>>,
    fail_writes: AtomicBool,
    flushes: AtomicUsize,
    writes: AtomicUsize,
}

impl MemDisk {
    /// Sector n holds bytes `(n * 7 + i) as u8`.
    fn new(sectors: usize, read_only: bool) -> Arc<Self> {
        let data = (0..sectors * 512)
            .map(|i| ((i / 512) * 7 + i % 512) as u8)
            .collect();
        Arc::new(Self {
            data: Mutex::new(data),
            read_only,
            bad_sector: Mutex::new(None),
            fail_writes: AtomicBool::new(false),
            flushes: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
        })
    }

    fn sector(&self, n: u64) -> Vec<u8> {
        let d = self.data.lock().unwrap();
        d[n as usize * 512..(n as usize + 1) * 512].to_vec()
    }
}

fn err(what: &str) -> vhd::Error {
    vhd::Error::InvalidArgument(what.to_string())
}

impl BlockDevice for MemDisk {
    fn sectors(&self) -> u64 {
        self.data.lock().unwrap().len() as u64 / 512
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read(&self, sector: u64, buf: &mut [u8]) -> vhd::Result<()> {
        let n = buf.len() as u64 / 512;
        if let Some(bad) = *self.bad_sector.lock().unwrap() {
            if (sector..sector + n).contains(&bad) {
                return Err(err("bad sector"));
            }
        }
        let d = self.data.lock().unwrap();
        let start = sector as usize * 512;
        let src = d
            .get(start..start + buf.len())
            .ok_or_else(|| err("out of range"))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write(&self, sector: u64, buf: &[u8]) -> vhd::Result<()> {
        if self.read_only {
            return Err(err("read-only"));
        }
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(err("write failure"));
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        let mut d = self.data.lock().unwrap();
        let start = sector as usize * 512;
        d.get_mut(start..start + buf.len())
            .ok_or_else(|| err("out of range"))?
            .copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> vhd::Result<()> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A huge disk whose sectors are computed: the first 8 bytes are the sector number (LE), the
/// rest `sector as u8`. Records the largest single read.
struct PatternDisk {
    sectors: u64,
    largest_read: AtomicUsize,
}

impl PatternDisk {
    fn new(sectors: u64) -> Arc<Self> {
        Arc::new(Self {
            sectors,
            largest_read: AtomicUsize::new(0),
        })
    }
    fn expected(sector: u64) -> Vec<u8> {
        let mut s = vec![sector as u8; 512];
        s[..8].copy_from_slice(&sector.to_le_bytes());
        s
    }
}

impl BlockDevice for PatternDisk {
    fn sectors(&self) -> u64 {
        self.sectors
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read(&self, sector: u64, buf: &mut [u8]) -> vhd::Result<()> {
        self.largest_read.fetch_max(buf.len(), Ordering::SeqCst);
        if sector + buf.len() as u64 / 512 > self.sectors {
            return Err(err("out of range"));
        }
        for (i, s) in buf.chunks_mut(512).enumerate() {
            s.copy_from_slice(&Self::expected(sector + i as u64));
        }
        Ok(())
    }
    fn write(&self, _sector: u64, _buf: &[u8]) -> vhd::Result<()> {
        Ok(())
    }
    fn flush(&self) -> vhd::Result<()> {
        Ok(())
    }
}

/// A CD target: 2048-byte blocks where block n is `(n + i) as u8` after a 4-byte big-endian n.
struct FakeCd {
    blocks: u32,
    sense: Sense,
    executed: Vec<Vec<u8>>,
    mode_select: Vec<u8>,
}

const ILLEGAL_OPCODE: Sense = Sense {
    key: 5,
    asc: 0x20,
    ascq: 0,
};
const OUT_OF_RANGE: Sense = Sense {
    key: 5,
    asc: 0x21,
    ascq: 0,
};

impl FakeCd {
    fn new(blocks: u32) -> Arc<Mutex<FakeCd>> {
        Arc::new(Mutex::new(FakeCd {
            blocks,
            sense: Sense::default(),
            executed: Vec::new(),
            mode_select: Vec::new(),
        }))
    }
    fn block(n: u32) -> Vec<u8> {
        let mut b: Vec<u8> = (0..2048).map(|i| (n as usize + i) as u8).collect();
        b[..4].copy_from_slice(&n.to_be_bytes());
        b
    }
    fn read_args(cdb: &[u8]) -> (u32, u32) {
        let lba = u32::from_be_bytes([cdb[2], cdb[3], cdb[4], cdb[5]]);
        let n = if cdb[0] == 0x28 {
            u32::from(u16::from_be_bytes([cdb[7], cdb[8]]))
        } else {
            u32::from_be_bytes([cdb[6], cdb[7], cdb[8], cdb[9]])
        };
        (lba, n)
    }
}

impl ScsiTarget for FakeCd {
    fn plan(&mut self, cdb: &[u8]) -> Result<Plan, Sense> {
        let plan = |direction, length| Ok(Plan { direction, length });
        let r = match cdb[0] {
            0x00 => plan(Direction::None, 0),
            0x03 => plan(Direction::In, usize::from(cdb[4]).min(18)),
            0x12 => plan(
                Direction::In,
                usize::from(u16::from_be_bytes([cdb[3], cdb[4]])).min(36),
            ),
            0x28 | 0xa8 => {
                let (lba, n) = Self::read_args(cdb);
                if u64::from(lba) + u64::from(n) > u64::from(self.blocks) {
                    Err(OUT_OF_RANGE)
                } else {
                    plan(Direction::In, n as usize * 2048)
                }
            }
            0x55 => plan(
                Direction::Out,
                usize::from(u16::from_be_bytes([cdb[7], cdb[8]])),
            ),
            // A vendor command with a 2 MiB data phase nobody can split.
            0xf0 => plan(Direction::In, 2 << 20),
            _ => Err(ILLEGAL_OPCODE),
        };
        if let Err(s) = r {
            self.sense = s;
        }
        r
    }
    fn execute(&mut self, cdb: &[u8], data: &mut Vec<u8>) -> Result<(), Sense> {
        self.executed.push(cdb.to_vec());
        match cdb[0] {
            0x03 => {
                let mut s = vec![0u8; 18];
                s[0] = 0x70;
                s[2] = self.sense.key;
                s[7] = 10;
                s[12] = self.sense.asc;
                s[13] = self.sense.ascq;
                s.truncate(usize::from(cdb[4]));
                *data = s;
                self.sense = Sense::default();
            }
            0x12 => {
                let mut inq = vec![0u8; 36];
                inq[0] = 0x05;
                inq[1] = 0x80;
                inq[8..16].copy_from_slice(b"KETTLE  ");
                inq.truncate(usize::from(u16::from_be_bytes([cdb[3], cdb[4]])));
                *data = inq;
            }
            0x28 | 0xa8 => {
                let (lba, n) = Self::read_args(cdb);
                for b in lba..lba + n {
                    data.extend_from_slice(&Self::block(b));
                }
            }
            0x55 => self.mode_select = data.clone(),
            _ => {}
        }
        Ok(())
    }
    fn sense(&self) -> Sense {
        self.sense
    }
}

// ---- The rig ---------------------------------------------------------------------------------------

const RAM_SIZE: usize = 4 << 20;
const BM: u16 = BMIBA_FIRMWARE;

struct Rig {
    bus: Arc<Bus>,
    ide: Arc<Mutex<Piix4Ide>>,
    irq: [Arc<FakeIrq>; 2],
    ram: Arc<FakeRam>,
}

fn rig_with_ram(drives: IdeDrives, ram_size: usize) -> Rig {
    let bus = Arc::new(Bus::new());
    let irq = [Arc::new(FakeIrq::default()), Arc::new(FakeIrq::default())];
    let ram = FakeRam::new(ram_size);
    let irqs: [Irq; 2] = [irq[0].clone(), irq[1].clone()];
    let ide = Piix4Ide::new(bus.clone(), irqs, ram.clone(), drives).unwrap();
    // The wiring the VMM does.
    for ch in 0..2 {
        let (cmd, ctl) = ide.channel_ports(ch);
        bus.insert(
            u64::from(COMMAND_BLOCK[ch]),
            u64::from(COMMAND_BLOCK_LEN),
            cmd,
        )
        .unwrap();
        bus.insert(
            u64::from(CONTROL_BLOCK[ch]),
            u64::from(CONTROL_BLOCK_LEN),
            ctl,
        )
        .unwrap();
    }
    Rig {
        bus,
        ide: Arc::new(Mutex::new(ide)),
        irq,
        ram,
    }
}

fn rig(drives: IdeDrives) -> Rig {
    rig_with_ram(drives, RAM_SIZE)
}

fn disk_rig(disk: Arc<MemDisk>) -> Rig {
    rig([[Some(IdeDrive::disk(disk)), None], [None, None]])
}

fn cd_rig(cd: Arc<Mutex<FakeCd>>) -> Rig {
    rig([[None, None], [Some(IdeDrive::cdrom(cd)), None]])
}

fn cmd_port(ch: usize, reg: u64) -> u64 {
    u64::from(COMMAND_BLOCK[ch]) + reg
}

impl Rig {
    fn inb(&self, port: u64) -> u8 {
        let mut d = [0u8; 1];
        self.bus.read(port, &mut d);
        d[0]
    }
    fn outb(&self, port: u64, v: u8) {
        self.bus.write(port, &[v]);
    }
    fn inw(&self, port: u64) -> u16 {
        let mut d = [0u8; 2];
        self.bus.read(port, &mut d);
        u16::from_le_bytes(d)
    }
    fn outw(&self, port: u64, v: u16) {
        self.bus.write(port, &v.to_le_bytes());
    }
    fn inl(&self, port: u64) -> u32 {
        let mut d = [0u8; 4];
        self.bus.read(port, &mut d);
        u32::from_le_bytes(d)
    }
    fn outl(&self, port: u64, v: u32) {
        self.bus.write(port, &v.to_le_bytes());
    }

    fn reg(&self, ch: usize, reg: u64) -> u8 {
        self.inb(cmd_port(ch, reg))
    }
    fn set(&self, ch: usize, reg: u64, v: u8) {
        self.outb(cmd_port(ch, reg), v)
    }
    fn status(&self, ch: usize) -> u8 {
        self.reg(ch, REG_STATUS)
    }
    fn alt_status(&self, ch: usize) -> u8 {
        self.inb(u64::from(CONTROL_BLOCK[ch]))
    }
    fn error(&self, ch: usize) -> u8 {
        self.reg(ch, REG_ERROR)
    }
    fn control(&self, ch: usize, v: u8) {
        self.outb(u64::from(CONTROL_BLOCK[ch]), v)
    }
    fn select(&self, ch: usize, dev: usize) {
        self.set(ch, REG_DEVICE, 0xa0 | if dev == 1 { DEVICE_DEV } else { 0 });
    }
    fn command(&self, ch: usize, cmd: u8) {
        self.set(ch, REG_STATUS, cmd)
    }
    fn lba28(&self, ch: usize, dev: usize, lba: u32, count: u8) {
        self.set(ch, REG_SECTOR_COUNT, count);
        self.set(ch, REG_LBA_LOW, lba as u8);
        self.set(ch, REG_LBA_MID, (lba >> 8) as u8);
        self.set(ch, REG_LBA_HIGH, (lba >> 16) as u8);
        let dev_bit = if dev == 1 { DEVICE_DEV } else { 0 };
        self.set(
            ch,
            REG_DEVICE,
            0xa0 | DEVICE_LBA | dev_bit | ((lba >> 24) as u8 & 0xf),
        );
    }
    fn lba48(&self, ch: usize, dev: usize, lba: u64, count: u16) {
        let b = lba.to_le_bytes();
        let c = count.to_le_bytes();
        self.set(ch, REG_SECTOR_COUNT, c[1]);
        self.set(ch, REG_LBA_LOW, b[3]);
        self.set(ch, REG_LBA_MID, b[4]);
        self.set(ch, REG_LBA_HIGH, b[5]);
        self.set(ch, REG_SECTOR_COUNT, c[0]);
        self.set(ch, REG_LBA_LOW, b[0]);
        self.set(ch, REG_LBA_MID, b[1]);
        self.set(ch, REG_LBA_HIGH, b[2]);
        let dev_bit = if dev == 1 { DEVICE_DEV } else { 0 };
        self.set(ch, REG_DEVICE, 0xa0 | DEVICE_LBA | dev_bit);
    }
    /// The LBA in the task file (28-bit form).
    fn lba28_regs(&self, ch: usize) -> u32 {
        u32::from_le_bytes([
            self.reg(ch, REG_LBA_LOW),
            self.reg(ch, REG_LBA_MID),
            self.reg(ch, REG_LBA_HIGH),
            self.reg(ch, REG_DEVICE) & 0xf,
        ])
    }
    fn lba48_regs(&self, ch: usize) -> u64 {
        let lo = [
            self.reg(ch, REG_LBA_LOW),
            self.reg(ch, REG_LBA_MID),
            self.reg(ch, REG_LBA_HIGH),
        ];
        self.control(ch, CONTROL_HOB);
        let hi = [
            self.reg(ch, REG_LBA_LOW),
            self.reg(ch, REG_LBA_MID),
            self.reg(ch, REG_LBA_HIGH),
        ];
        self.control(ch, 0);
        u64::from_le_bytes([lo[0], lo[1], lo[2], hi[0], hi[1], hi[2], 0, 0])
    }
    fn read_words(&self, ch: usize, words: usize) -> Vec<u8> {
        (0..words)
            .flat_map(|_| self.inw(cmd_port(ch, REG_DATA)).to_le_bytes())
            .collect()
    }
    fn read_dwords(&self, ch: usize, dwords: usize) -> Vec<u8> {
        (0..dwords)
            .flat_map(|_| self.inl(cmd_port(ch, REG_DATA)).to_le_bytes())
            .collect()
    }
    fn write_words(&self, ch: usize, data: &[u8]) {
        for w in data.chunks(2) {
            self.outw(cmd_port(ch, REG_DATA), u16::from_le_bytes([w[0], w[1]]));
        }
    }
    fn write_dwords(&self, ch: usize, data: &[u8]) {
        for w in data.chunks(4) {
            self.outl(
                cmd_port(ch, REG_DATA),
                u32::from_le_bytes([w[0], w[1], w[2], w[3]]),
            );
        }
    }
    fn identify(&self, ch: usize, cmd: u8) -> Vec<u16> {
        self.command(ch, cmd);
        assert_eq!(self.status(ch), STATUS_DRDY | STATUS_DSC | STATUS_DRQ);
        let d = self.read_words(ch, 256);
        assert_eq!(self.status(ch) & STATUS_DRQ, 0);
        d.chunks(2)
            .map(|w| u16::from_le_bytes([w[0], w[1]]))
            .collect()
    }

    fn cfg_read(&self, off: u16) -> u32 {
        self.ide.lock().unwrap().config_read(off & !3)
    }
    fn cfg_write(&self, off: u16, data: &[u8]) {
        self.ide.lock().unwrap().config_write(off, data)
    }

    // Bus master.
    fn bm(&self, ch: usize, reg: u64) -> u64 {
        u64::from(BM) + ch as u64 * BM_CHANNEL_STRIDE + reg
    }
    fn bmis(&self, ch: usize) -> u8 {
        self.inb(self.bm(ch, BMIS))
    }
    fn put_prds(&self, table: u64, prds: &[(u32, u32, bool)]) {
        let mut m = self.ram.0.lock().unwrap();
        for (i, &(addr, count, eot)) in prds.iter().enumerate() {
            let at = table as usize + i * 8;
            m[at..at + 4].copy_from_slice(&addr.to_le_bytes());
            let flags = count | if eot { PRD_EOT } else { 0 };
            m[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
        }
    }
    /// What libata's bmdma_setup does: table, direction with start clear, clear error/interrupt.
    fn bm_setup(&self, ch: usize, table: u32, to_memory: bool) {
        self.outl(self.bm(ch, BMIDTP), table);
        let dir = if to_memory { BMIC_WRITE_TO_MEMORY } else { 0 };
        self.outb(self.bm(ch, BMIC), dir);
        let s = self.bmis(ch);
        self.outb(self.bm(ch, BMIS), s | BMIS_ERROR | BMIS_INTERRUPT);
    }
    fn bm_start(&self, ch: usize, to_memory: bool) {
        let dir = if to_memory { BMIC_WRITE_TO_MEMORY } else { 0 };
        self.outb(self.bm(ch, BMIC), dir | BMIC_START);
    }
    fn bm_stop(&self, ch: usize) {
        let c = self.inb(self.bm(ch, BMIC));
        self.outb(self.bm(ch, BMIC), c & !BMIC_START);
    }
    fn ram(&self, addr: usize, len: usize) -> Vec<u8> {
        self.ram.0.lock().unwrap()[addr..addr + len].to_vec()
    }
    fn fill_ram(&self, addr: usize, data: &[u8]) {
        self.ram.0.lock().unwrap()[addr..addr + data.len()].copy_from_slice(data);
    }

    // ATAPI.
    fn packet(&self, ch: usize, cdb: &[u8], dma: bool, byte_count_limit: u16) {
        self.set(ch, REG_ERROR, u8::from(dma));
        self.set(ch, REG_LBA_MID, byte_count_limit as u8);
        self.set(ch, REG_LBA_HIGH, (byte_count_limit >> 8) as u8);
        self.command(ch, CMD_PACKET);
        assert_eq!(self.alt_status(ch) & (STATUS_DRQ | STATUS_BSY), STATUS_DRQ);
        assert_eq!(self.reg(ch, REG_SECTOR_COUNT) & 3, IREASON_COD);
        let mut p = [0u8; 12];
        p[..cdb.len()].copy_from_slice(cdb);
        self.write_words(ch, &p);
    }
    fn byte_count(&self, ch: usize) -> usize {
        usize::from(u16::from_le_bytes([
            self.reg(ch, REG_LBA_MID),
            self.reg(ch, REG_LBA_HIGH),
        ]))
    }
    /// Reads the data phase of an ATAPI PIO In command the way libata does: block by block,
    /// with 16-bit accesses and a padded odd tail. Returns the data and the block sizes.
    fn atapi_pio_in(&self, ch: usize) -> (Vec<u8>, Vec<usize>) {
        let mut data = Vec::new();
        let mut blocks = Vec::new();
        for _ in 0..100_000 {
            let irq_edges = self.irq[ch].edges();
            let st = self.status(ch);
            if st & STATUS_DRQ == 0 {
                break;
            }
            assert!(irq_edges > 0);
            assert_eq!(self.reg(ch, REG_SECTOR_COUNT) & 3, IREASON_IO);
            let n = self.byte_count(ch);
            blocks.push(n);
            let mut b = self.read_words(ch, n.div_ceil(2));
            b.truncate(n);
            data.extend(b);
        }
        (data, blocks)
    }
}

fn disk_drives(disk: Arc<dyn BlockDevice>) -> IdeDrives {
    [[Some(IdeDrive::disk(disk)), None], [None, None]]
}

// ---- PCI function -----------------------------------------------------------------------------------

#[test]
fn pci_identity_and_firmware_state() {
    let r = disk_rig(MemDisk::new(64, false));
    assert_eq!(r.cfg_read(0x00), 0x7111_8086);
    assert_eq!(r.cfg_read(0x04), 0x0280_0005);
    assert_eq!(r.cfg_read(0x08), 0x0101_8001);
    assert_eq!(r.cfg_read(0x0c), 0);
    assert_eq!(r.cfg_read(0x10), 0);
    assert_eq!(r.cfg_read(0x20), 0xffa1);
    assert_eq!(r.cfg_read(0x3c), 0);
    assert_eq!(r.cfg_read(0x40), 0x8000_8000);
    assert_eq!(r.cfg_read(0x44), 0);
    assert_eq!(r.cfg_read(0x48), 0);
    assert_eq!(r.ide.lock().unwrap().bus_master_base(), Some(0xffa0));
    // Read-only identity and class; BAR sizing reads back 16 bytes of I/O.
    r.cfg_write(0x00, &[0xff; 4]);
    r.cfg_write(0x08, &[0xff; 4]);
    assert_eq!(r.cfg_read(0x00), 0x7111_8086);
    assert_eq!(r.cfg_read(0x08), 0x0101_8001);
    r.cfg_write(0x20, &[0xff; 4]);
    assert_eq!(r.cfg_read(0x20), 0xffff_fff1);
    r.cfg_write(0x20, &0xc000u32.to_le_bytes());
    // Timing registers keep their writable bits.
    r.cfg_write(0x40, &0xffffu16.to_le_bytes());
    r.cfg_write(0x44, &[0xff]);
    r.cfg_write(0x48, &[0xff]);
    r.cfg_write(0x4a, &0xffffu16.to_le_bytes());
    assert_eq!(r.cfg_read(0x40), 0x8000_f3ff);
    assert_eq!(r.cfg_read(0x44), 0xff);
    assert_eq!(r.cfg_read(0x48), 0x3333_000f);
    // Only IOSE and BME are writable in PCICMD.
    r.cfg_write(0x04, &0xffffu16.to_le_bytes());
    assert_eq!(r.cfg_read(0x04) & 0xffff, 0x0005);
}

#[test]
fn bar4_follows_the_guest_and_io_enable() {
    let r = disk_rig(MemDisk::new(64, false));
    let bmidtp = |r: &Rig, base: u64| {
        let mut d = [0u8; 4];
        r.bus.read(base + 4, &mut d).then(|| u32::from_le_bytes(d))
    };
    r.outl(u64::from(BM) + 4, 0x1234);
    assert_eq!(bmidtp(&r, u64::from(BM)), Some(0x1234));
    r.cfg_write(0x20, &0xc001u32.to_le_bytes());
    assert_eq!(r.ide.lock().unwrap().bus_master_base(), Some(0xc000));
    assert_eq!(bmidtp(&r, u64::from(BM)), None);
    assert_eq!(bmidtp(&r, 0xc000), Some(0x1234));
    // Clearing IOSE unmaps BAR4 and silences the legacy ports.
    r.cfg_write(0x04, &[0x04]);
    assert_eq!(r.ide.lock().unwrap().bus_master_base(), None);
    assert_eq!(bmidtp(&r, 0xc000), None);
    assert_eq!(r.status(0), 0xff);
    r.cfg_write(0x04, &[0x05]);
    assert_eq!(bmidtp(&r, 0xc000), Some(0x1234));
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
}

#[test]
fn idetim_decode_enable_gates_each_channel() {
    let r = rig([
        [Some(IdeDrive::disk(MemDisk::new(64, false))), None],
        [Some(IdeDrive::disk(MemDisk::new(64, false))), None],
    ]);
    assert_eq!(r.status(0), 0x50);
    assert_eq!(r.status(1), 0x50);
    // ata_piix's enable bits: 0x41 bit 7 and 0x43 bit 7.
    r.cfg_write(0x41, &[0x00]);
    assert_eq!(r.status(0), 0xff);
    assert_eq!(r.alt_status(0), 0xff);
    r.set(0, REG_LBA_LOW, 0x55);
    assert_eq!(r.status(1), 0x50);
    r.cfg_write(0x40, &0x8000u16.to_le_bytes());
    assert_eq!(r.status(0), 0x50);
    assert_eq!(
        r.reg(0, REG_LBA_LOW),
        0x01,
        "the write while disabled was dropped"
    );
    r.cfg_write(0x43, &[0x00]);
    assert_eq!(r.status(1), 0xff);
}

// ---- Presence, reset, interrupts -----------------------------------------------------------------------

#[test]
fn empty_channel_floats_and_absent_slave_reads_status_zero() {
    let r = disk_rig(MemDisk::new(64, false));
    // No device on the secondary channel: the bus floats at 7Fh and takes no writes.
    for reg in 0..8 {
        assert_eq!(r.reg(1, reg), FLOATING_BUS);
    }
    assert_eq!(r.alt_status(1), FLOATING_BUS);
    r.set(1, REG_SECTOR_COUNT, 0x55);
    assert_eq!(r.reg(1, REG_SECTOR_COUNT), FLOATING_BUS);
    // Master present, slave absent: ata_sff_dev_check's pattern reads back on both, the
    // slave's status is 0 and commands to it are ignored.
    for dev in 0..2 {
        r.select(0, dev);
        r.set(0, REG_SECTOR_COUNT, 0x55);
        r.set(0, REG_LBA_LOW, 0xaa);
        r.set(0, REG_SECTOR_COUNT, 0xaa);
        r.set(0, REG_LBA_LOW, 0x55);
        r.set(0, REG_SECTOR_COUNT, 0x55);
        r.set(0, REG_LBA_LOW, 0xaa);
        assert_eq!(r.reg(0, REG_SECTOR_COUNT), 0x55);
        assert_eq!(r.reg(0, REG_LBA_LOW), 0xaa);
    }
    r.select(0, 1);
    assert_eq!(r.status(0), 0);
    assert_eq!(r.alt_status(0), 0);
    r.command(0, CMD_IDENTIFY_DEVICE);
    assert_eq!(r.status(0), 0);
    assert!(!r.irq[0].is_high());
    r.select(0, 0);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
}

#[test]
fn soft_reset_leaves_signatures_and_classification_works() {
    let cd = FakeCd::new(10);
    let r = rig([
        [Some(IdeDrive::disk(MemDisk::new(64, false))), None],
        [
            Some(IdeDrive::disk(MemDisk::new(64, false))),
            Some(IdeDrive::cdrom(cd)),
        ],
    ]);
    for ch in 0..2 {
        r.select(ch, 1);
        r.set(ch, REG_LBA_MID, 0x77);
        r.control(ch, CONTROL_SRST | CONTROL_NIEN);
        assert_eq!(r.alt_status(ch), if ch == 1 { STATUS_BSY } else { 0 });
        r.select(ch, 0);
        // While BSY, the registers read as status and writes are ignored.
        assert_eq!(r.alt_status(ch), STATUS_BSY);
        assert_eq!(r.reg(ch, REG_LBA_MID), STATUS_BSY);
        r.control(ch, CONTROL_NIEN);
        assert_eq!(r.status(ch), STATUS_DRDY | STATUS_DSC);
        let sig: Vec<u8> = (2..6).map(|reg| r.reg(ch, reg)).collect();
        assert_eq!(sig, SIGNATURE_ATA);
        assert_eq!(r.error(ch), DIAG_PASSED);
        assert_eq!(r.reg(ch, REG_DEVICE) & DEVICE_DEV, 0);
        r.select(ch, 1);
        let sig: Vec<u8> = (2..6).map(|reg| r.reg(ch, reg)).collect();
        if ch == 1 {
            // ATAPI: signature 14h/EBh, status 00h after reset.
            assert_eq!(sig, SIGNATURE_ATAPI);
            assert_eq!(r.status(ch), 0);
        } else {
            // Absent slave: ATA signature, diagnostic code 01h, status 0 -> libata: no device.
            assert_eq!(sig, SIGNATURE_ATA);
            assert_eq!(r.error(ch), DIAG_PASSED);
            assert_eq!(r.status(ch), 0);
        }
        assert!(!r.irq[ch].is_high());
    }
}

#[test]
fn soft_reset_cancels_a_transfer_and_reverts_settings() {
    let r = disk_rig(MemDisk::new(64, false));
    r.set(0, REG_ERROR, FEATURE_DISABLE_WRITE_CACHE);
    r.command(0, CMD_SET_FEATURES);
    r.lba28(0, 0, 0, 4);
    r.command(0, CMD_READ_SECTORS);
    assert_ne!(r.status(0) & STATUS_DRQ, 0);
    r.control(0, CONTROL_SRST);
    r.control(0, 0);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
    assert_eq!(r.inw(cmd_port(0, 0)), 0xffff);
    let id = r.identify(0, CMD_IDENTIFY_DEVICE);
    assert_ne!(id[85] & (1 << 5), 0, "write cache back on after reset");
    // With reverting disabled the setting survives.
    r.set(0, REG_ERROR, FEATURE_DISABLE_WRITE_CACHE);
    r.command(0, CMD_SET_FEATURES);
    r.set(0, REG_ERROR, FEATURE_DISABLE_REVERT);
    r.command(0, CMD_SET_FEATURES);
    r.control(0, CONTROL_SRST);
    r.control(0, 0);
    let id = r.identify(0, CMD_IDENTIFY_DEVICE);
    assert_eq!(id[85] & (1 << 5), 0);
}

#[test]
fn interrupts_follow_status_reads_and_nien() {
    let r = disk_rig(MemDisk::new(64, false));
    r.command(0, CMD_CHECK_POWER_MODE);
    assert!(r.irq[0].is_high());
    assert_ne!(r.bmis(0) & BMIS_INTERRUPT, 0);
    // Alternate status does not acknowledge; status does.
    assert_eq!(r.alt_status(0), STATUS_DRDY | STATUS_DSC);
    assert!(r.irq[0].is_high());
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
    assert!(!r.irq[0].is_high());
    // BMIS.interrupt is write-1-to-clear.
    r.outb(r.bm(0, BMIS), BMIS_INTERRUPT);
    assert_eq!(r.bmis(0) & BMIS_INTERRUPT, 0);
    // With nIEN the line stays low; clearing nIEN with an interrupt pending raises it.
    r.control(0, CONTROL_NIEN);
    r.command(0, CMD_CHECK_POWER_MODE);
    assert!(!r.irq[0].is_high());
    assert_eq!(r.bmis(0) & BMIS_INTERRUPT, 0);
    r.control(0, 0);
    assert!(r.irq[0].is_high());
    assert_ne!(r.bmis(0) & BMIS_INTERRUPT, 0);
    // Writing a command acknowledges too.
    r.command(0, CMD_CHECK_POWER_MODE);
    assert_eq!(r.irq[0].edges(), 3);
}

#[test]
fn execute_device_diagnostic() {
    let r = rig([
        [
            Some(IdeDrive::disk(MemDisk::new(64, false))),
            Some(IdeDrive::cdrom(FakeCd::new(4))),
        ],
        [None, None],
    ]);
    r.select(0, 1);
    r.set(0, REG_LBA_MID, 0x33);
    r.command(0, CMD_EXECUTE_DEVICE_DIAGNOSTIC);
    assert!(r.irq[0].is_high());
    assert_eq!(r.reg(0, REG_DEVICE) & DEVICE_DEV, 0);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
    assert_eq!(r.error(0), DIAG_PASSED);
    r.select(0, 1);
    assert_eq!(r.reg(0, REG_LBA_MID), 0x14);
    assert_eq!(r.reg(0, REG_LBA_HIGH), 0xeb);
    assert_eq!(r.error(0), DIAG_PASSED);
}

// ---- IDENTIFY ------------------------------------------------------------------------------------------

fn ata_string(words: &[u16]) -> String {
    words
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .map(char::from)
        .collect::<String>()
        .trim_end()
        .to_string()
}

fn checksum_ok(id: &[u16]) -> bool {
    id[255] & 0xff == 0xa5
        && id
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .fold(0u8, |a, b| a.wrapping_add(b))
            == 0
}

#[test]
fn identify_device_reports_geometry_capacity_strings_and_features() {
    // 10 MiB: 20480 sectors -> 20 cylinders of 16 heads x 63 sectors.
    let r = disk_rig(MemDisk::new(20480, false));
    let id = r.identify(0, CMD_IDENTIFY_DEVICE);
    assert!(r.irq[0].is_high() || r.irq[0].edges() == 1);
    assert_eq!(id[0], 0x0040);
    assert_eq!((id[1], id[3], id[6]), (20, 16, 63));
    assert_eq!((id[54], id[55], id[56]), (20, 16, 63));
    assert_eq!(u32::from(id[57]) | u32::from(id[58]) << 16, 20 * 16 * 63);
    assert_eq!(ata_string(&id[27..47]), "Virtual HD");
    assert_eq!(ata_string(&id[23..27]), "1.1.0");
    assert_eq!(ata_string(&id[10..20]), "KETTLE-IDE-00");
    assert_eq!(id[47], 0x8010);
    assert_eq!(id[49] & 0x0f00, 0x0f00);
    assert_eq!(id[53] & 7, 7);
    assert_eq!(id[59], 0x0110);
    assert_eq!(u32::from(id[60]) | u32::from(id[61]) << 16, 20480);
    assert_eq!(id[63], 0x0007);
    assert_eq!(id[88], 0x043f, "UDMA 2 selected at power-on");
    assert_eq!(id[83] & 0xc000, 0x4000);
    assert_ne!(id[83] & (1 << 10), 0);
    assert_ne!(id[83] & (1 << 12), 0);
    assert_ne!(id[83] & (1 << 13), 0);
    assert_ne!(id[86] & (1 << 10), 0);
    assert_eq!(id[82] & (1 << 5), 1 << 5);
    assert_eq!(id[85] & (1 << 5), 1 << 5);
    assert_eq!(id[87] & 0xc000, 0x4000);
    assert_eq!(id[93] & 0x6000, 0x4000);
    let lba48 = (0..4).fold(0u64, |a, i| a | u64::from(id[100 + i]) << (16 * i));
    assert_eq!(lba48, 20480);
    assert!(checksum_ok(&id));

    // SET FEATURES transfer mode is reflected in words 63/88.
    for (mode, w63, w88) in [
        (XFER_UDMA | 5, 0x0007, 0x203f),
        (XFER_MWDMA | 2, 0x0407, 0x003f),
        (XFER_PIO | 4, 0x0407, 0x003f),
    ] {
        r.set(0, REG_ERROR, FEATURE_SET_TRANSFER_MODE);
        r.set(0, REG_SECTOR_COUNT, mode);
        r.command(0, CMD_SET_FEATURES);
        assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
        let id = r.identify(0, CMD_IDENTIFY_DEVICE);
        assert_eq!((id[63], id[88]), (w63, w88), "mode {mode:#x}");
        assert!(checksum_ok(&id));
    }
    // Unsupported modes abort.
    r.set(0, REG_ERROR, FEATURE_SET_TRANSFER_MODE);
    r.set(0, REG_SECTOR_COUNT, XFER_UDMA | 6);
    r.command(0, CMD_SET_FEATURES);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC | STATUS_ERR);
    assert_eq!(r.error(0), ERROR_ABRT);
}

#[test]
fn identify_of_a_huge_disk_caps_lba28_and_chs() {
    let sectors = 0x1_2345_6789u64;
    let r = rig(disk_drives(PatternDisk::new(sectors)));
    let id = r.identify(0, CMD_IDENTIFY_DEVICE);
    assert_eq!((id[1], id[3], id[6]), (16383, 16, 63));
    assert_eq!(u32::from(id[60]) | u32::from(id[61]) << 16, 0x0fff_ffff);
    let lba48 = (0..4).fold(0u64, |a, i| a | u64::from(id[100 + i]) << (16 * i));
    assert_eq!(lba48, sectors);
    assert_eq!(u32::from(id[57]) | u32::from(id[58]) << 16, 16383 * 16 * 63);
    assert!(checksum_ok(&id));
}

#[test]
fn configured_identity_and_geometry_are_used() {
    let disk = IdeDrive::Disk {
        backend: MemDisk::new(2048, false),
        identity: DriveIdentity {
            model: "A Very Long Model Name That Does Not Fit In Forty".into(),
            serial: "SN123".into(),
            firmware: "7.0".into(),
        },
        geometry: Some(Chs {
            cylinders: 120,
            heads: 4,
            sectors: 17,
        }),
    };
    let r = rig([[Some(disk), None], [None, None]]);
    let id = r.identify(0, CMD_IDENTIFY_DEVICE);
    assert_eq!(
        ata_string(&id[27..47]),
        "A Very Long Model Name That Does Not Fit"
    );
    assert_eq!(ata_string(&id[10..20]), "SN123");
    assert_eq!(ata_string(&id[23..27]), "7.0");
    assert_eq!((id[1], id[3], id[6]), (120, 4, 17));
}

#[test]
fn identify_packet_device_and_identify_device_on_atapi() {
    let r = cd_rig(FakeCd::new(100));
    let id = r.identify(1, CMD_IDENTIFY_PACKET_DEVICE);
    assert_eq!(id[0], 0x85c0);
    assert_eq!(ata_string(&id[27..47]), "Virtual CD");
    assert_eq!(ata_string(&id[10..20]), "KETTLE-IDE-10");
    assert_eq!(id[49] & 0x0300, 0x0300);
    assert_ne!(id[82] & (1 << 4), 0);
    assert_eq!(id[88], 0x043f);
    assert!(checksum_ok(&id));
    // IDENTIFY DEVICE aborts and shows the ATAPI signature.
    r.set(1, REG_LBA_MID, 0);
    r.command(1, CMD_IDENTIFY_DEVICE);
    assert_eq!(r.status(1) & (STATUS_ERR | STATUS_DRQ), STATUS_ERR);
    assert_eq!(r.error(1), ERROR_ABRT);
    assert_eq!(
        (r.reg(1, REG_LBA_MID), r.reg(1, REG_LBA_HIGH)),
        (0x14, 0xeb)
    );
    // ATA data commands abort on ATAPI devices; an ATA disk aborts PACKET.
    r.command(1, CMD_READ_DMA);
    assert_eq!(r.error(1), ERROR_ABRT);
    let r = disk_rig(MemDisk::new(8, false));
    r.command(0, CMD_PACKET);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC | STATUS_ERR);
    assert_eq!(r.error(0), ERROR_ABRT);
    r.command(0, CMD_IDENTIFY_PACKET_DEVICE);
    assert_eq!(r.error(0), ERROR_ABRT);
    r.command(0, CMD_DEVICE_RESET);
    assert_eq!(r.error(0), ERROR_ABRT);
}

// ---- PIO --------------------------------------------------------------------------------------------------

#[test]
fn read_sectors_pio_interrupts_per_sector_with_16_and_32_bit_reads() {
    let disk = MemDisk::new(64, false);
    let r = disk_rig(disk.clone());
    r.lba28(0, 0, 5, 3);
    r.command(0, CMD_READ_SECTORS);
    let mut data = Vec::new();
    for i in 0..3 {
        assert_eq!(r.irq[0].edges(), i + 1);
        assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC | STATUS_DRQ);
        assert!(!r.irq[0].is_high());
        // Mix the access widths: the first sector by words, the others by dwords.
        data.extend(if i == 0 {
            r.read_words(0, 256)
        } else {
            r.read_dwords(0, 128)
        });
    }
    assert_eq!(r.irq[0].edges(), 3, "no interrupt after the last block");
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
    assert_eq!(&data[..512], &disk.sector(5)[..]);
    assert_eq!(&data[512..1024], &disk.sector(6)[..]);
    assert_eq!(&data[1024..], &disk.sector(7)[..]);
    // The task file holds the last sector read and a count of 0.
    assert_eq!(r.lba28_regs(0), 7);
    assert_eq!(r.reg(0, REG_SECTOR_COUNT), 0);
    // Reading the data port afterwards gives all ones and changes nothing.
    assert_eq!(r.inw(cmd_port(0, 0)), 0xffff);
}

#[test]
fn write_sectors_pio_stores_data_and_interrupts_after_each_block() {
    let disk = MemDisk::new(64, false);
    let r = disk_rig(disk.clone());
    r.lba28(0, 0, 10, 2);
    r.command(0, CMD_WRITE_SECTORS);
    // The first block is requested without an interrupt.
    assert_eq!(r.alt_status(0), STATUS_DRDY | STATUS_DSC | STATUS_DRQ);
    assert_eq!(r.irq[0].edges(), 0);
    let a = vec![0x11u8; 512];
    let b: Vec<u8> = (0..512).map(|i| i as u8).collect();
    r.write_words(0, &a);
    assert_eq!(r.irq[0].edges(), 1);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC | STATUS_DRQ);
    r.write_dwords(0, &b);
    assert_eq!(r.irq[0].edges(), 2);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
    assert_eq!(disk.sector(10), a);
    assert_eq!(disk.sector(11), b);
    assert_eq!(r.lba28_regs(0), 11);
    // Data beyond a request is ignored.
    r.outw(cmd_port(0, 0), 0x1234);
    assert_eq!(disk.sector(12)[0], (12 * 7) as u8);
}

#[test]
fn read_and_write_multiple_use_the_multiple_count() {
    let disk = MemDisk::new(64, false);
    let r = disk_rig(disk.clone());
    r.set(0, REG_SECTOR_COUNT, 4);
    r.command(0, CMD_SET_MULTIPLE_MODE);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
    assert_eq!(r.identify(0, CMD_IDENTIFY_DEVICE)[59], 0x0104);
    // 6 sectors in blocks of 4 and 2, one interrupt each.
    r.lba28(0, 0, 0, 6);
    let edges = r.irq[0].edges();
    r.command(0, CMD_READ_MULTIPLE);
    assert_ne!(r.status(0) & STATUS_DRQ, 0);
    let first = r.read_words(0, 4 * 256);
    assert_eq!(r.irq[0].edges(), edges + 2);
    assert_ne!(r.status(0) & STATUS_DRQ, 0);
    let second = r.read_words(0, 2 * 256);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
    assert_eq!(r.inw(cmd_port(0, 0)), 0xffff, "exactly 6 sectors");
    assert_eq!(&first[512 * 3..], &disk.sector(3)[..]);
    assert_eq!(&second[512..], &disk.sector(5)[..]);
    // WRITE MULTIPLE EXT: 5 sectors at 40 in blocks of 4 and 1.
    r.lba48(0, 0, 40, 5);
    r.command(0, CMD_WRITE_MULTIPLE_EXT);
    r.write_words(0, &[0xaa; 4 * 512]);
    assert_ne!(r.status(0) & STATUS_DRQ, 0);
    r.write_words(0, &[0xbb; 512]);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
    assert_eq!(disk.sector(43), vec![0xaa; 512]);
    assert_eq!(disk.sector(44), vec![0xbb; 512]);
    assert_eq!(disk.sector(45)[0], (45 * 7) as u8);
    // Invalid counts abort; count 0 disables, after which READ MULTIPLE aborts.
    r.set(0, REG_SECTOR_COUNT, 3);
    r.command(0, CMD_SET_MULTIPLE_MODE);
    assert_eq!(r.error(0), ERROR_ABRT);
    r.set(0, REG_SECTOR_COUNT, 32);
    r.command(0, CMD_SET_MULTIPLE_MODE);
    assert_eq!(r.status(0) & STATUS_ERR, STATUS_ERR);
    r.set(0, REG_SECTOR_COUNT, 0);
    r.command(0, CMD_SET_MULTIPLE_MODE);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
    r.lba28(0, 0, 0, 1);
    r.command(0, CMD_READ_MULTIPLE);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC | STATUS_ERR);
    assert_eq!(r.error(0), ERROR_ABRT);
}

#[test]
fn lba48_pio_uses_the_high_order_bytes() {
    let disk = PatternDisk::new(0x3_0000_0000);
    let r = rig(disk_drives(disk));
    let lba = 0x2_1234_5678u64;
    r.lba48(0, 0, lba, 2);
    r.command(0, CMD_READ_SECTORS_EXT);
    let d = r.read_words(0, 512);
    assert_eq!(&d[..512], &PatternDisk::expected(lba)[..]);
    assert_eq!(&d[512..], &PatternDisk::expected(lba + 1)[..]);
    assert_eq!(r.lba48_regs(0), lba + 1);
    // A 28-bit command cannot reach past 0x0FFFFFFF.
    r.lba28(0, 0, 0x0fff_fffe, 2);
    r.command(0, CMD_READ_SECTORS);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC | STATUS_ERR);
    assert_eq!(r.error(0), ERROR_IDNF);
    assert_eq!(r.lba28_regs(0), 0x0fff_ffff);
    // Count 0 of an EXT command is 65536 sectors.
    r.lba48(0, 0, 0x2_ffff_0001, 0);
    r.command(0, CMD_READ_VERIFY_EXT);
    assert_eq!(r.error(0), ERROR_IDNF);
    r.lba48(0, 0, 0x2_ffff_0000, 0);
    r.command(0, CMD_READ_VERIFY_EXT);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
    assert_eq!(r.lba48_regs(0), 0x2_ffff_ffff);
}

#[test]
fn chs_addressing_follows_initialize_device_parameters() {
    let disk = MemDisk::new(4096, false);
    let r = disk_rig(disk.clone());
    // 8 heads, 32 sectors per track.
    r.set(0, REG_SECTOR_COUNT, 32);
    r.set(0, REG_DEVICE, 0xa0 | 7);
    r.command(0, CMD_INITIALIZE_DEVICE_PARAMETERS);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
    let id = r.identify(0, CMD_IDENTIFY_DEVICE);
    assert_eq!((id[54], id[55], id[56]), (16, 8, 32));
    // C/H/S 2/3/5 = (2*8+3)*32+4 = 612.
    r.set(0, REG_SECTOR_COUNT, 1);
    r.set(0, REG_LBA_LOW, 5);
    r.set(0, REG_LBA_MID, 2);
    r.set(0, REG_LBA_HIGH, 0);
    r.set(0, REG_DEVICE, 0xa0 | 3);
    r.command(0, CMD_READ_SECTORS);
    assert_eq!(r.read_words(0, 256), disk.sector(612));
    assert_eq!(r.reg(0, REG_LBA_LOW), 5);
    assert_eq!(r.reg(0, REG_DEVICE) & 0xf, 3);
    // Sector 0 and heads beyond the translation do not exist.
    r.set(0, REG_LBA_LOW, 0);
    r.command(0, CMD_READ_SECTORS);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC | STATUS_ERR);
    assert_eq!(r.error(0), ERROR_IDNF);
    r.set(0, REG_LBA_LOW, 1);
    r.set(0, REG_DEVICE, 0xa0 | 8);
    r.command(0, CMD_READ_SECTORS);
    assert_eq!(r.error(0), ERROR_IDNF);
    // Bad translations are refused.
    r.set(0, REG_SECTOR_COUNT, 0);
    r.command(0, CMD_INITIALIZE_DEVICE_PARAMETERS);
    assert_eq!(r.error(0), ERROR_ABRT);
}

#[test]
fn a_good_command_clears_the_error_of_the_one_before() {
    let disk = MemDisk::new(100, false);
    let r = disk_rig(disk.clone());
    // After reset the error register holds the diagnostic code 01h.
    assert_eq!(r.error(0), 0x01);
    r.lba28(0, 0, 0, 1);
    r.command(0, CMD_READ_SECTORS);
    assert_eq!(r.read_words(0, 256), disk.sector(0));
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
    assert_eq!(r.error(0), 0);
    r.lba28(0, 0, 100, 1);
    r.command(0, CMD_READ_SECTORS);
    assert_eq!(r.error(0), ERROR_IDNF);
    r.lba28(0, 0, 99, 1);
    r.command(0, CMD_READ_SECTORS);
    assert_eq!(r.read_words(0, 256), disk.sector(99));
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
    assert_eq!(
        r.error(0),
        0,
        "the IDNF of the previous command is still there"
    );
}

#[test]
fn reads_past_the_end_fail_with_idnf_and_the_first_missing_sector() {
    let disk = MemDisk::new(100, false);
    let r = disk_rig(disk.clone());
    for (cmd, lba, count, first) in [
        (CMD_READ_SECTORS, 99, 2, 100),
        (CMD_READ_SECTORS, 150, 1, 150),
        (CMD_WRITE_SECTORS, 99, 2, 100),
        (CMD_READ_DMA, 90, 20, 100),
        (CMD_READ_VERIFY, 100, 1, 100),
        (CMD_SEEK, 100, 1, 100),
    ] {
        r.lba28(0, 0, lba, count);
        r.command(0, cmd);
        assert_eq!(
            r.status(0),
            STATUS_DRDY | STATUS_DSC | STATUS_ERR,
            "cmd {cmd:#x}"
        );
        assert_eq!(r.error(0), ERROR_IDNF, "cmd {cmd:#x}");
        assert_eq!(r.lba28_regs(0), first, "cmd {cmd:#x}");
        assert_eq!(r.inw(cmd_port(0, 0)), 0xffff);
    }
    assert_eq!(disk.writes.load(Ordering::SeqCst), 0);
    // The last sector itself is fine.
    r.lba28(0, 0, 99, 1);
    r.command(0, CMD_SEEK);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
}

#[test]
fn backend_read_errors_are_unc_at_the_failing_sector() {
    let disk = MemDisk::new(64, false);
    *disk.bad_sector.lock().unwrap() = Some(12);
    let r = disk_rig(disk.clone());
    r.lba28(0, 0, 10, 4);
    r.command(0, CMD_READ_SECTORS);
    // Sectors 10 and 11 come through, then 12 fails.
    assert_eq!(r.read_words(0, 256), disk.sector(10));
    assert_eq!(r.read_words(0, 256), disk.sector(11));
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC | STATUS_ERR);
    assert_eq!(r.error(0), ERROR_UNC);
    assert_eq!(r.lba28_regs(0), 12);
    assert_eq!(r.reg(0, REG_SECTOR_COUNT), 2);
    // Verify and DMA report the same sector.
    r.lba28(0, 0, 8, 8);
    r.command(0, CMD_READ_VERIFY);
    assert_eq!(r.error(0), ERROR_UNC);
    assert_eq!(r.lba28_regs(0), 12);
    r.put_prds(0x1000, &[(0x10000, 8 * 512, true)]);
    r.bm_setup(0, 0x1000, true);
    r.lba28(0, 0, 8, 8);
    r.command(0, CMD_READ_DMA);
    r.bm_start(0, true);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC | STATUS_ERR);
    assert_eq!(r.error(0), ERROR_UNC);
    assert_eq!(r.lba28_regs(0), 12);
    // The engine stays active (its table was not used up); the host stops it.
    assert_eq!(r.bmis(0) & 7, BMIS_ACTIVE | BMIS_INTERRUPT);
}

#[test]
fn writes_to_a_read_only_disk_are_aborted_without_touching_it() {
    let disk = MemDisk::new(64, true);
    let r = disk_rig(disk.clone());
    let before = disk.sector(3);
    for cmd in [
        CMD_WRITE_SECTORS,
        CMD_WRITE_SECTORS_EXT,
        CMD_WRITE_MULTIPLE,
        CMD_WRITE_DMA,
        CMD_WRITE_DMA_EXT,
    ] {
        r.lba28(0, 0, 3, 1);
        r.command(0, cmd);
        assert_eq!(
            r.status(0),
            STATUS_DRDY | STATUS_DSC | STATUS_ERR,
            "cmd {cmd:#x}"
        );
        assert_eq!(r.error(0), ERROR_ABRT);
        r.write_words(0, &[0u8; 512]);
    }
    r.put_prds(0x1000, &[(0x10000, 512, true)]);
    r.bm_setup(0, 0x1000, false);
    r.bm_start(0, false);
    assert_eq!(disk.sector(3), before);
    // Reads still work.
    r.lba28(0, 0, 3, 1);
    r.command(0, CMD_READ_SECTORS);
    assert_eq!(r.read_words(0, 256), before);
}

#[test]
fn backend_write_errors_abort() {
    let disk = MemDisk::new(64, false);
    disk.fail_writes.store(true, Ordering::SeqCst);
    let r = disk_rig(disk);
    r.lba28(0, 0, 7, 1);
    r.command(0, CMD_WRITE_SECTORS);
    r.write_words(0, &[1; 512]);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC | STATUS_ERR);
    assert_eq!(r.error(0), ERROR_ABRT);
    assert_eq!(r.lba28_regs(0), 7);
}

#[test]
fn flush_cache_reaches_the_backend_and_write_cache_off_flushes_each_write() {
    let disk = MemDisk::new(64, false);
    let r = disk_rig(disk.clone());
    r.command(0, CMD_FLUSH_CACHE);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
    assert!(r.irq[0].edges() == 1);
    r.command(0, CMD_FLUSH_CACHE_EXT);
    assert_eq!(disk.flushes.load(Ordering::SeqCst), 2);
    r.lba28(0, 0, 1, 1);
    r.command(0, CMD_WRITE_SECTORS);
    r.write_words(0, &[1; 512]);
    assert_eq!(disk.flushes.load(Ordering::SeqCst), 2);
    r.set(0, REG_ERROR, FEATURE_DISABLE_WRITE_CACHE);
    r.command(0, CMD_SET_FEATURES);
    assert_eq!(r.identify(0, CMD_IDENTIFY_DEVICE)[85] & (1 << 5), 0);
    r.lba28(0, 0, 1, 1);
    r.command(0, CMD_WRITE_SECTORS);
    r.write_words(0, &[1; 512]);
    assert_eq!(disk.flushes.load(Ordering::SeqCst), 3);
    for f in [
        FEATURE_ENABLE_WRITE_CACHE,
        FEATURE_DISABLE_LOOK_AHEAD,
        FEATURE_ENABLE_LOOK_AHEAD,
        FEATURE_ENABLE_REVERT,
    ] {
        r.set(0, REG_ERROR, f);
        r.command(0, CMD_SET_FEATURES);
        assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC, "feature {f:#x}");
    }
    // APM (05h) is not supported.
    r.set(0, REG_ERROR, 0x05);
    r.command(0, CMD_SET_FEATURES);
    assert_eq!(r.error(0), ERROR_ABRT);
}

#[test]
fn power_management_commands() {
    let r = disk_rig(MemDisk::new(64, false));
    let mode = |r: &Rig, cmd: u8| {
        r.set(0, REG_SECTOR_COUNT, 0x12);
        r.command(0, cmd);
        assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
        r.reg(0, REG_SECTOR_COUNT)
    };
    assert_eq!(mode(&r, CMD_CHECK_POWER_MODE), POWER_ACTIVE);
    mode(&r, CMD_STANDBY_IMMEDIATE);
    assert_eq!(mode(&r, CMD_CHECK_POWER_MODE), POWER_STANDBY);
    mode(&r, CMD_IDLE_IMMEDIATE);
    assert_eq!(mode(&r, CMD_CHECK_POWER_MODE_OLD), POWER_IDLE);
    mode(&r, CMD_STANDBY);
    // A media access wakes the device.
    r.lba28(0, 0, 0, 1);
    r.command(0, CMD_READ_SECTORS);
    r.read_words(0, 256);
    assert_eq!(mode(&r, CMD_CHECK_POWER_MODE), POWER_ACTIVE);
    mode(&r, CMD_IDLE);
    mode(&r, CMD_RECALIBRATE | 3);
    // SLEEP: commands are ignored until a reset.
    mode(&r, CMD_SLEEP);
    let edges = r.irq[0].edges();
    r.command(0, CMD_CHECK_POWER_MODE);
    assert_eq!(r.irq[0].edges(), edges);
    r.control(0, CONTROL_SRST);
    r.control(0, 0);
    assert_eq!(mode(&r, CMD_CHECK_POWER_MODE), POWER_ACTIVE);
}

#[test]
fn unsupported_commands_and_nop_abort() {
    let r = disk_rig(MemDisk::new(64, false));
    for cmd in [CMD_NOP, 0xb0, 0xf8, 0x27, 0x2f, 0xff] {
        r.command(0, cmd);
        assert_eq!(
            r.status(0),
            STATUS_DRDY | STATUS_DSC | STATUS_ERR,
            "cmd {cmd:#x}"
        );
        assert_eq!(r.error(0), ERROR_ABRT);
    }
    // The next good command clears the error.
    r.command(0, CMD_CHECK_POWER_MODE);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
}

#[test]
fn hob_reads_the_previous_register_contents_until_the_next_write() {
    let r = disk_rig(MemDisk::new(64, false));
    r.set(0, REG_SECTOR_COUNT, 0x12);
    r.set(0, REG_SECTOR_COUNT, 0x34);
    r.control(0, CONTROL_HOB);
    assert_eq!(r.reg(0, REG_SECTOR_COUNT), 0x12);
    // Any task file write clears HOB.
    r.set(0, REG_LBA_LOW, 0x56);
    assert_eq!(r.reg(0, REG_SECTOR_COUNT), 0x34);
}

// ---- Bus-master DMA -----------------------------------------------------------------------------------

#[test]
fn read_dma_command_then_start_as_libata_does() {
    let disk = MemDisk::new(256, false);
    let r = disk_rig(disk.clone());
    // Two regions, the second ending the table exactly.
    r.put_prds(0x1000, &[(0x20000, 0x400, false), (0x30000, 0x200, true)]);
    r.bm_setup(0, 0x1000, true);
    r.lba28(0, 0, 20, 3);
    r.command(0, CMD_READ_DMA);
    assert_eq!(r.alt_status(0), STATUS_DRDY | STATUS_DSC | STATUS_DRQ);
    assert!(!r.irq[0].is_high());
    r.bm_start(0, true);
    assert!(r.irq[0].is_high());
    assert_eq!(r.bmis(0) & 7, BMIS_INTERRUPT, "table used up: not active");
    r.bm_stop(0);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
    assert_eq!(r.ram(0x20000, 512), disk.sector(20));
    assert_eq!(r.ram(0x20200, 512), disk.sector(21));
    assert_eq!(r.ram(0x30000, 512), disk.sector(22));
    assert_eq!(r.lba28_regs(0), 22);
    assert_eq!(r.reg(0, REG_SECTOR_COUNT), 0);
    // Drive 0 is marked DMA capable; the bit is guest-writable.
    assert_ne!(r.bmis(0) & BMIS_DRIVE0_DMA, 0);
}

#[test]
fn write_dma_start_then_command() {
    let disk = MemDisk::new(256, false);
    let r = disk_rig(disk.clone());
    let data: Vec<u8> = (0..1024).map(|i| (i * 3) as u8).collect();
    r.fill_ram(0x40000, &data);
    r.put_prds(0x2000, &[(0x40000, 1024, true)]);
    r.bm_setup(0, 0x2000, false);
    r.bm_start(0, false);
    assert_eq!(r.bmis(0) & BMIS_ACTIVE, BMIS_ACTIVE);
    r.lba48(0, 0, 100, 2);
    r.command(0, CMD_WRITE_DMA_EXT);
    assert_eq!(r.bmis(0) & 7, BMIS_INTERRUPT);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
    assert_eq!(disk.sector(100), data[..512]);
    assert_eq!(disk.sector(101), data[512..]);
    assert_eq!(r.lba48_regs(0), 101);
}

#[test]
fn prd_table_longer_than_the_transfer_leaves_active_set() {
    let disk = MemDisk::new(256, false);
    let r = disk_rig(disk.clone());
    r.put_prds(0x1000, &[(0x20000, 0x1000, false), (0x30000, 0x1000, true)]);
    r.bm_setup(0, 0x1000, true);
    r.lba28(0, 0, 0, 2);
    r.command(0, CMD_READ_DMA);
    r.bm_start(0, true);
    assert_eq!(r.bmis(0) & 7, BMIS_ACTIVE | BMIS_INTERRUPT);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
    r.bm_stop(0);
    assert_eq!(r.bmis(0) & 7, BMIS_INTERRUPT);
    assert_eq!(r.ram(0x20200, 512), disk.sector(1));
}

#[test]
fn prd_table_shorter_than_the_transfer_is_an_error() {
    let disk = MemDisk::new(256, false);
    let r = disk_rig(disk);
    r.put_prds(0x1000, &[(0x20000, 0x200, true)]);
    r.bm_setup(0, 0x1000, true);
    r.lba28(0, 0, 0, 2);
    r.command(0, CMD_READ_DMA);
    r.bm_start(0, true);
    assert!(r.irq[0].is_high());
    assert_eq!(r.bmis(0) & 7, BMIS_ERROR | BMIS_INTERRUPT);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC | STATUS_ERR);
    assert_eq!(r.error(0), ERROR_ABRT);
    // Error and interrupt clear by writing 1.
    r.outb(r.bm(0, BMIS), BMIS_ERROR | BMIS_INTERRUPT);
    assert_eq!(r.bmis(0) & 7, 0);
}

#[test]
fn a_prd_table_that_never_ends_is_bounded() {
    let disk = MemDisk::new(256, false);
    let r = disk_rig(disk);
    // The whole 64 KiB page of the table: 8192 entries of 2 bytes each, no EOT; the transfer
    // wants 64 KiB, more than the 16 KiB they describe.
    let entries: Vec<(u32, u32, bool)> = (0..8192).map(|_| (0x20000, 2, false)).collect();
    r.put_prds(0x10000, &entries);
    r.bm_setup(0, 0x10000, true);
    r.lba28(0, 0, 0, 128);
    r.command(0, CMD_READ_DMA);
    r.bm_start(0, true);
    assert_eq!(r.bmis(0) & 7, BMIS_ERROR | BMIS_INTERRUPT);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC | STATUS_ERR);
    assert_eq!(r.error(0), ERROR_ABRT);
    // A table without EOT that covers the transfer is fine (and stays active).
    r.put_prds(0x1000, &[(0x20000, 0x200, false), (0x20200, 0x200, false)]);
    r.bm_stop(0);
    r.bm_setup(0, 0x1000, true);
    r.lba28(0, 0, 0, 1);
    r.command(0, CMD_READ_DMA);
    r.bm_start(0, true);
    assert_eq!(r.bmis(0) & 7, BMIS_ACTIVE | BMIS_INTERRUPT);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
}

#[test]
fn dma_outside_ram_sets_the_error_bit_and_never_hangs() {
    let disk = MemDisk::new(256, false);
    let r = disk_rig(disk.clone());
    // A region beyond RAM.
    r.put_prds(0x1000, &[(0xf000_0000, 0x200, true)]);
    r.bm_setup(0, 0x1000, true);
    r.lba28(0, 0, 0, 1);
    r.command(0, CMD_READ_DMA);
    r.bm_start(0, true);
    assert_eq!(r.bmis(0) & 7, BMIS_ERROR | BMIS_INTERRUPT);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC | STATUS_ERR);
    assert_eq!(r.error(0), ERROR_ABRT);
    r.bm_stop(0);
    // The table itself beyond RAM, for a write: nothing reaches the disk.
    let before = disk.sector(0);
    r.bm_setup(0, 0xfff0_0000, false);
    r.lba28(0, 0, 0, 1);
    r.command(0, CMD_WRITE_DMA);
    r.bm_start(0, false);
    assert_eq!(r.bmis(0) & 7, BMIS_ERROR | BMIS_INTERRUPT);
    assert_eq!(r.error(0), ERROR_ABRT);
    assert_eq!(disk.sector(0), before);
    assert_eq!(disk.writes.load(Ordering::SeqCst), 0);
}

#[test]
fn zero_byte_count_means_64k_and_regions_may_cross_64k() {
    let disk = PatternDisk::new(1 << 20);
    let r = rig(disk_drives(disk));
    // 64 KiB from a zero count, then 1 KiB straddling the 0x50000 boundary.
    r.put_prds(0x1000, &[(0x20000, 0, false), (0x4fe00, 0x400, true)]);
    r.bm_setup(0, 0x1000, true);
    r.lba28(0, 0, 1000, 130);
    r.command(0, CMD_READ_DMA);
    r.bm_start(0, true);
    assert_eq!(r.bmis(0) & 7, BMIS_INTERRUPT);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
    assert_eq!(r.ram(0x20000, 512), PatternDisk::expected(1000));
    assert_eq!(r.ram(0x2fe00, 512), PatternDisk::expected(1127));
    assert_eq!(r.ram(0x4fe00, 512), PatternDisk::expected(1128));
    assert_eq!(r.ram(0x50000, 512), PatternDisk::expected(1129));
}

#[test]
fn a_65536_sector_dma_moves_32_mib_in_bounded_chunks() {
    let disk = PatternDisk::new(1 << 40);
    let r = rig_with_ram(disk_drives(disk.clone()), (32 << 20) + (1 << 20));
    // 512 regions of 64 KiB from 1 MiB up.
    let prds: Vec<(u32, u32, bool)> = (0..512)
        .map(|i| (0x10_0000 + i * 0x1_0000, 0, i == 511))
        .collect();
    r.put_prds(0x1000, &prds);
    r.bm_setup(0, 0x1000, true);
    let lba = 0x12_3456_0000u64;
    r.lba48(0, 0, lba, 0);
    r.command(0, CMD_READ_DMA_EXT);
    r.bm_start(0, true);
    assert_eq!(r.bmis(0) & 7, BMIS_INTERRUPT);
    assert_eq!(r.status(0), STATUS_DRDY | STATUS_DSC);
    for s in [0u64, 1, 127, 128, 40000, 65535] {
        assert_eq!(
            r.ram(0x10_0000 + s as usize * 512, 512),
            PatternDisk::expected(lba + s)
        );
    }
    assert_eq!(r.lba48_regs(0), lba + 65535);
    assert_eq!(disk.largest_read.load(Ordering::SeqCst), 64 * 1024);
}

#[test]
fn direction_mismatch_and_bus_master_disable() {
    let disk = MemDisk::new(256, false);
    let r = disk_rig(disk.clone());
    r.put_prds(0x1000, &[(0x20000, 0x200, true)]);
    // READ DMA with the engine set to read memory: error.
    r.bm_setup(0, 0x1000, false);
    r.lba28(0, 0, 0, 1);
    r.command(0, CMD_READ_DMA);
    r.bm_start(0, false);
    assert_eq!(r.bmis(0) & 7, BMIS_ERROR | BMIS_INTERRUPT);
    assert_eq!(r.error(0), ERROR_ABRT);
    r.bm_stop(0);
    // With PCICMD.BME clear the engine does not run until it is set.
    r.cfg_write(0x04, &[0x01]);
    r.bm_setup(0, 0x1000, true);
    r.lba28(0, 0, 5, 1);
    r.command(0, CMD_READ_DMA);
    r.bm_start(0, true);
    assert_eq!(r.bmis(0) & 7, BMIS_ACTIVE);
    assert!(!r.irq[0].is_high());
    r.cfg_write(0x04, &[0x05]);
    assert_eq!(r.bmis(0) & 7, BMIS_INTERRUPT);
    assert_eq!(r.ram(0x20000, 512), disk.sector(5));
    // Stopping the engine while a command waits clears active and moves nothing.
    r.bm_stop(0);
    r.bm_setup(0, 0x1000, true);
    r.bm_start(0, true);
    r.bm_stop(0);
    assert_eq!(r.bmis(0) & BMIS_ACTIVE, 0);
}

#[test]
fn slave_dma_on_the_secondary_channel() {
    let disk = MemDisk::new(64, false);
    let r = rig([
        [None, None],
        [
            Some(IdeDrive::cdrom(FakeCd::new(4))),
            Some(IdeDrive::disk(disk.clone())),
        ],
    ]);
    r.put_prds(0x1000, &[(0x20000, 0x200, true)]);
    r.bm_setup(1, 0x1000, true);
    r.lba28(1, 1, 9, 1);
    r.command(1, CMD_READ_DMA);
    r.bm_start(1, true);
    assert!(r.irq[1].is_high());
    assert!(!r.irq[0].is_high());
    assert_eq!(r.bmis(1) & 7, BMIS_INTERRUPT);
    assert_eq!(r.bmis(1) & (BMIS_DRIVE0_DMA | BMIS_DRIVE1_DMA), 0x60);
    assert_eq!(r.ram(0x20000, 512), disk.sector(9));
    assert_eq!(r.bmis(0) & 7, 0);
}

// ---- ATAPI ----------------------------------------------------------------------------------------------

#[test]
fn atapi_pio_inquiry_and_test_unit_ready() {
    let cd = FakeCd::new(100);
    let r = cd_rig(cd.clone());
    r.select(1, 0);
    r.packet(1, &[0x12, 0, 0, 0, 96, 0], false, 0x200);
    assert!(r.irq[1].is_high());
    let (data, blocks) = r.atapi_pio_in(1);
    assert_eq!(blocks, vec![36]);
    assert_eq!(&data[8..16], b"KETTLE  ");
    assert_eq!(r.reg(1, REG_SECTOR_COUNT) & 3, IREASON_IO | IREASON_COD);
    assert_eq!(r.alt_status(1), STATUS_DRDY | STATUS_DSC);
    assert_eq!(r.irq[1].edges(), 2);
    // TEST UNIT READY: no data, straight to completion.
    r.packet(1, &[0x00], false, 0);
    assert_eq!(r.irq[1].edges(), 3);
    assert_eq!(r.status(1), STATUS_DRDY | STATUS_DSC);
    assert_eq!(r.reg(1, REG_SECTOR_COUNT) & 3, IREASON_IO | IREASON_COD);
    assert_eq!(cd.lock().unwrap().executed.len(), 2);
}

#[test]
fn atapi_pio_read_respects_the_byte_count_limit() {
    let r = cd_rig(FakeCd::new(100));
    // READ(10) of 3 blocks with a limit of 0x1001 (odd): even blocks of 0x1000, then the rest.
    r.packet(1, &[0x28, 0, 0, 0, 0, 7, 0, 0, 3, 0], false, 0x1001);
    let (data, blocks) = r.atapi_pio_in(1);
    assert_eq!(blocks, vec![0x1000, 0x800]);
    assert_eq!(&data[..2048], &FakeCd::block(7)[..]);
    assert_eq!(&data[4096..], &FakeCd::block(9)[..]);
    // 32-bit reads of an odd-sized block: the tail is padded.
    r.packet(1, &[0x12, 0, 0, 0, 7, 0], false, 0x200);
    assert_eq!(r.byte_count(1), 7);
    let d = r.read_dwords(1, 2);
    assert_eq!(&d[..7], &[0x05, 0x80, 0, 0, 0, 0, 0]);
    assert_eq!(d[7], 0);
    assert_eq!(r.status(1), STATUS_DRDY | STATUS_DSC);
}

#[test]
fn atapi_check_condition_and_request_sense_through_the_target() {
    let r = cd_rig(FakeCd::new(10));
    r.packet(1, &[0x28, 0, 0, 0, 0, 9, 0, 0, 2, 0], false, 0x800);
    assert!(r.irq[1].is_high());
    assert_eq!(r.status(1), STATUS_DRDY | STATUS_ERR);
    assert_eq!(r.error(1), 0x50, "ILLEGAL REQUEST in the upper nibble");
    assert_eq!(r.reg(1, REG_SECTOR_COUNT) & 3, IREASON_IO | IREASON_COD);
    r.packet(1, &[0x03, 0, 0, 0, 18, 0], false, 0xfffe);
    let (sense, _) = r.atapi_pio_in(1);
    assert_eq!(sense.len(), 18);
    assert_eq!((sense[2], sense[12]), (5, 0x21));
    // Unknown opcode.
    r.packet(1, &[0xd9], false, 0x800);
    assert_eq!(r.error(1), 0x50);
}

#[test]
fn atapi_dma_read_and_split_of_large_reads() {
    let cd = FakeCd::new(1000);
    let r = cd_rig(cd.clone());
    // 100 blocks (200 KiB) into four regions; the transport splits it into 32-block pieces.
    r.put_prds(
        0x1000,
        &[
            (0x100000, 0, false),
            (0x110000, 0, false),
            (0x120000, 0, false),
            (0x130000, 100 * 2048 - 3 * 0x10000, true),
        ],
    );
    r.bm_setup(1, 0x1000, true);
    r.packet(1, &[0xa8, 0, 0, 0, 1, 0, 0, 0, 0, 100, 0, 0], true, 0);
    // Waiting for the bus master.
    assert_eq!(r.alt_status(1) & STATUS_DRQ, STATUS_DRQ);
    assert!(!r.irq[1].is_high());
    r.bm_start(1, true);
    assert!(r.irq[1].is_high());
    assert_eq!(r.bmis(1) & 7, BMIS_INTERRUPT);
    assert_eq!(r.status(1), STATUS_DRDY | STATUS_DSC);
    assert_eq!(r.reg(1, REG_SECTOR_COUNT) & 3, IREASON_IO | IREASON_COD);
    for b in [0usize, 31, 32, 99] {
        assert_eq!(
            r.ram(0x100000 + b * 2048, 2048),
            FakeCd::block(256 + b as u32)
        );
    }
    let subs: Vec<(u32, u32)> = cd
        .lock()
        .unwrap()
        .executed
        .iter()
        .map(|c| FakeCd::read_args(c))
        .collect();
    assert_eq!(subs, vec![(256, 32), (288, 32), (320, 32), (352, 4)]);
}

#[test]
fn atapi_pio_split_read_and_too_large_commands() {
    let cd = FakeCd::new(1000);
    let r = cd_rig(cd.clone());
    r.packet(1, &[0x28, 0, 0, 0, 0, 0, 0, 0, 40, 0], false, 0xf800);
    let (data, blocks) = r.atapi_pio_in(1);
    assert_eq!(data.len(), 40 * 2048);
    // Blocks stop at the 64 KiB piece boundary.
    assert_eq!(blocks, vec![0xf800, 0x800, 0x4000]);
    for b in 0..40 {
        assert_eq!(
            &data[b * 2048..(b + 1) * 2048],
            &FakeCd::block(b as u32)[..]
        );
    }
    // A 2 MiB data phase the transport cannot split is refused.
    r.packet(1, &[0xf0], false, 0xfffe);
    assert_eq!(r.status(1), STATUS_DRDY | STATUS_ERR);
    assert_eq!(r.error(1), 0x54);
}

#[test]
fn atapi_data_out_by_pio_and_dma() {
    let cd = FakeCd::new(10);
    let r = cd_rig(cd.clone());
    let params: Vec<u8> = (0..24).collect();
    // MODE SELECT(10) with 24 bytes, byte count limit 16: two DRQ blocks, each interrupting.
    r.packet(1, &[0x55, 0x10, 0, 0, 0, 0, 0, 0, 24, 0], false, 16);
    assert_eq!(r.irq[1].edges(), 1);
    assert_eq!(r.status(1), STATUS_DRDY | STATUS_DSC | STATUS_DRQ);
    assert_eq!(r.reg(1, REG_SECTOR_COUNT) & 3, 0);
    assert_eq!(r.byte_count(1), 16);
    r.write_words(1, &params[..16]);
    assert_eq!(r.irq[1].edges(), 2);
    assert_eq!(r.status(1), STATUS_DRDY | STATUS_DSC | STATUS_DRQ);
    assert_eq!(r.byte_count(1), 8);
    r.write_dwords(1, &params[16..]);
    assert_eq!(r.irq[1].edges(), 3);
    assert_eq!(r.status(1), STATUS_DRDY | STATUS_DSC);
    assert_eq!(cd.lock().unwrap().mode_select, params);
    // The same by DMA.
    let params2: Vec<u8> = (100..124).collect();
    r.fill_ram(0x30000, &params2);
    r.put_prds(0x1000, &[(0x30000, 24, true)]);
    r.bm_setup(1, 0x1000, false);
    r.packet(1, &[0x55, 0x10, 0, 0, 0, 0, 0, 0, 24, 0], true, 0);
    r.bm_start(1, false);
    assert_eq!(r.bmis(1) & 7, BMIS_INTERRUPT);
    assert_eq!(r.status(1), STATUS_DRDY | STATUS_DSC);
    assert_eq!(cd.lock().unwrap().mode_select, params2);
}

#[test]
fn atapi_dma_errors() {
    let r = cd_rig(FakeCd::new(100));
    // Outside RAM.
    r.put_prds(0x1000, &[(0xe000_0000, 2048, true)]);
    r.bm_setup(1, 0x1000, true);
    r.packet(1, &[0x28, 0, 0, 0, 0, 1, 0, 0, 1, 0], true, 0);
    r.bm_start(1, true);
    assert_eq!(r.bmis(1) & 7, BMIS_ERROR | BMIS_INTERRUPT);
    assert_eq!(r.status(1), STATUS_DRDY | STATUS_ERR);
    assert_eq!(r.error(1), 0xb4);
    r.bm_stop(1);
    // A CHECK CONDITION of a DMA command arrives without any DMA.
    r.bm_setup(1, 0x1000, true);
    r.packet(1, &[0x28, 0, 0, 0, 0, 200, 0, 0, 1, 0], true, 0);
    assert!(r.irq[1].is_high());
    assert_eq!(r.error(1), 0x50);
    r.bm_start(1, true);
    assert_eq!(r.bmis(1) & 7, BMIS_ACTIVE | BMIS_INTERRUPT);
    // Overlap is not supported.
    r.set(1, REG_ERROR, 0x02);
    r.command(1, CMD_PACKET);
    assert_eq!(r.error(1), ERROR_ABRT);
}

#[test]
fn atapi_device_reset_set_features_and_power() {
    let r = cd_rig(FakeCd::new(10));
    r.packet(1, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], false, 0x800);
    assert_ne!(r.status(1) & STATUS_DRQ, 0);
    let edges = r.irq[1].edges();
    r.command(1, CMD_DEVICE_RESET);
    assert_eq!(r.irq[1].edges(), edges, "no interrupt");
    assert_eq!(r.status(1), 0);
    assert_eq!(
        (r.reg(1, REG_LBA_MID), r.reg(1, REG_LBA_HIGH)),
        (0x14, 0xeb)
    );
    assert_eq!(r.inw(cmd_port(1, 0)), 0xffff);
    r.set(1, REG_ERROR, FEATURE_SET_TRANSFER_MODE);
    r.set(1, REG_SECTOR_COUNT, XFER_MWDMA | 1);
    r.command(1, CMD_SET_FEATURES);
    assert_eq!(r.status(1), STATUS_DRDY | STATUS_DSC);
    assert_eq!(r.identify(1, CMD_IDENTIFY_PACKET_DEVICE)[63], 0x0207);
    r.set(1, REG_ERROR, FEATURE_DISABLE_WRITE_CACHE);
    r.command(1, CMD_SET_FEATURES);
    assert_eq!(r.error(1), ERROR_ABRT);
    r.command(1, CMD_STANDBY_IMMEDIATE);
    r.command(1, CMD_CHECK_POWER_MODE);
    assert_eq!(r.reg(1, REG_SECTOR_COUNT), POWER_STANDBY);
    // SLEEP; only DEVICE RESET (or SRST) wakes an ATAPI device.
    r.command(1, CMD_SLEEP);
    r.command(1, CMD_CHECK_POWER_MODE);
    assert_eq!(r.status(1), STATUS_DRDY | STATUS_DSC);
    r.command(1, CMD_DEVICE_RESET);
    r.command(1, CMD_CHECK_POWER_MODE);
    assert_eq!(r.reg(1, REG_SECTOR_COUNT), POWER_ACTIVE);
}

// ---- Saved state -----------------------------------------------------------------------------------------

#[test]
fn state_round_trips_with_a_pio_read_in_flight() {
    let disk = MemDisk::new(64, false);
    let cd = FakeCd::new(100);
    let drives = || -> IdeDrives {
        [
            [Some(IdeDrive::disk(disk.clone())), None],
            [Some(IdeDrive::cdrom(cd.clone())), None],
        ]
    };
    let r = rig(drives());
    r.cfg_write(0x20, &0xd000u32.to_le_bytes());
    r.lba28(0, 0, 2, 3);
    r.command(0, CMD_READ_SECTORS);
    let first = r.read_words(0, 300);
    r.packet(1, &[0x28, 0, 0, 0, 0, 4, 0, 0, 2, 0], false, 0x800);
    let s = r.ide.lock().unwrap().state();
    assert!(r.irq[0].is_high());

    let q = rig(drives());
    q.ide.lock().unwrap().restore(&s).unwrap();
    assert_eq!(q.ide.lock().unwrap().state(), s);
    assert_eq!(q.ide.lock().unwrap().bus_master_base(), Some(0xd000));
    assert!(q.irq[0].is_high());
    let mut all = first;
    all.extend(q.read_words(0, 212));
    all.extend(q.read_words(0, 256));
    assert_eq!(all[..512], disk.sector(2)[..]);
    assert_eq!(all[1024..], disk.sector(4)[..]);
    assert_eq!(q.status(0), STATUS_DRDY | STATUS_DSC);
    let (data, _) = q.atapi_pio_in(1);
    assert_eq!(data[..2048], FakeCd::block(4)[..]);
    assert_eq!(data[2048..], FakeCd::block(5)[..]);

    // A machine with other drives refuses the state and stays as it was.
    let other = rig([[None, None], [Some(IdeDrive::cdrom(cd.clone())), None]]);
    assert_eq!(
        other.ide.lock().unwrap().restore(&s),
        Err(IdeStateError::DriveMismatch {
            channel: 0,
            device: 0,
            saved: Some(IdeDriveKind::Disk),
            configured: None
        })
    );
    assert_eq!(other.ide.lock().unwrap().bus_master_base(), Some(0xffa0));
    let mut bad = s.clone();
    bad.channels[0].devices[0].buffer_pos = 10_000;
    assert!(matches!(
        q.ide.lock().unwrap().restore(&bad),
        Err(IdeStateError::Inconsistent { .. })
    ));
}

/// A disk at ide0:0 and a CD at ide1:0, the same on every call (the CD target keeps no state
/// the transport relies on).
fn disk_and_cd(disk: &Arc<MemDisk>) -> IdeDrives {
    [
        [Some(IdeDrive::disk(disk.clone())), None],
        [Some(IdeDrive::cdrom(FakeCd::new(100))), None],
    ]
}

/// Bytes of the first ATAPI DRQ block the guest had read when the state was taken.
const READ_BEFORE_SAVE: usize = 2000;

/// ide0:0 has a READ DMA of sectors 5-8 waiting for the bus master (programmed, not started);
/// ide1:0 is in the data phase of a 40-block READ(10) by PIO, split into 64 KiB pieces, with
/// `READ_BEFORE_SAVE` bytes of its first 32 KiB DRQ block read. Returns the bytes read.
fn commands_in_flight(r: &Rig) -> Vec<u8> {
    r.put_prds(0x1000, &[(0x2000, 4 * 512, true)]);
    r.bm_setup(0, 0x1000, true);
    r.lba28(0, 0, 5, 4);
    r.command(0, CMD_READ_DMA);
    assert_eq!(r.alt_status(0), STATUS_DRDY | STATUS_DSC | STATUS_DRQ);
    r.packet(1, &[0x28, 0, 0, 0, 0, 3, 0, 0, 40, 0], false, 0x8000);
    assert_eq!(r.byte_count(1), 0x8000);
    r.read_words(1, READ_BEFORE_SAVE / 2)
}

#[test]
fn state_round_trips_through_cbor_with_dma_and_atapi_in_flight() {
    let disk = MemDisk::new(64, false);
    let r = rig(disk_and_cd(&disk));
    let first = commands_in_flight(&r);
    let s = r.ide.lock().unwrap().state();
    assert!(matches!(
        s.channels[0].devices[0].transfer,
        IdeTransfer::AtaDma { .. }
    ));
    assert!(matches!(
        s.channels[1].devices[0].transfer,
        IdeTransfer::AtapiIn { split: Some(_), .. }
    ));
    assert_eq!(s.channels[1].devices[0].buffer_pos, READ_BEFORE_SAVE);

    // The VMM restores guest RAM (here: the PRD table) alongside the devices.
    let q = rig(disk_and_cd(&disk));
    q.fill_ram(0, &r.ram(0, RAM_SIZE));
    q.ide.lock().unwrap().restore(&cbor_round_trip(&s)).unwrap();
    assert_eq!(q.ide.lock().unwrap().state(), s);
    for ch in 0..2 {
        assert_eq!(q.irq[ch].is_high(), r.irq[ch].is_high(), "channel {ch}");
        assert_eq!(q.alt_status(ch), r.alt_status(ch), "channel {ch}");
        assert_eq!(q.bmis(ch), r.bmis(ch), "channel {ch}");
        assert_eq!(
            q.inl(q.bm(ch, BMIDTP)),
            r.inl(r.bm(ch, BMIDTP)),
            "channel {ch}"
        );
    }

    // Starting the bus master finishes the DMA read the same way on both.
    for m in [&r, &q] {
        m.bm_start(0, true);
        assert!(m.irq[0].is_high());
        assert_eq!(m.bmis(0) & 7, BMIS_INTERRUPT);
        m.bm_stop(0);
        assert_eq!(m.status(0), STATUS_DRDY | STATUS_DSC);
        assert_eq!(m.lba28_regs(0), 8);
        for i in 0..4 {
            assert_eq!(m.ram(0x2000 + i * 512, 512), disk.sector(5 + i as u64));
        }
    }

    // The CD read continues mid-block and delivers the same data on both.
    let mut rest = [Vec::new(), Vec::new()];
    for (m, out) in [&r, &q].into_iter().zip(&mut rest) {
        out.extend(m.read_words(1, (0x8000 - READ_BEFORE_SAVE) / 2));
        let (more, blocks) = m.atapi_pio_in(1);
        assert_eq!(blocks, vec![0x8000, 0x4000]);
        out.extend(more);
        assert_eq!(m.status(1), STATUS_DRDY | STATUS_DSC);
    }
    assert_eq!(rest[0], rest[1]);
    let mut all = first;
    all.extend(&rest[1]);
    let want: Vec<u8> = (3..43).flat_map(FakeCd::block).collect();
    assert_eq!(all, want);
    assert_eq!(q.ide.lock().unwrap().state(), r.ide.lock().unwrap().state());
}

#[test]
fn restore_refuses_transfers_no_command_could_have_left() {
    let disk = MemDisk::new(64, false);
    let r = rig(disk_and_cd(&disk));
    commands_in_flight(&r);
    let good = r.ide.lock().unwrap().state();
    let q = rig(disk_and_cd(&disk));
    let before = q.ide.lock().unwrap().state();
    fn split(s: &mut Piix4IdeState) -> &mut ReadSplit {
        match &mut s.channels[1].devices[0].transfer {
            IdeTransfer::AtapiIn { split: Some(r), .. } => r,
            _ => unreachable!("the CD read is split"),
        }
    }
    type Mutation = Box<dyn Fn(&mut Piix4IdeState)>;
    let cases: Vec<(usize, &str, Mutation)> = vec![
        (
            0,
            "DMA range past the end of the disk",
            Box::new(|s| {
                s.channels[0].devices[0].transfer = IdeTransfer::AtaDma {
                    write: false,
                    lba: u64::MAX,
                    count: 2,
                    addressing: Addressing::Lba48,
                }
            }),
        ),
        (
            0,
            "DMA sector count",
            Box::new(|s| {
                s.channels[0].devices[0].transfer = IdeTransfer::AtaDma {
                    write: true,
                    lba: 0,
                    count: 0,
                    addressing: Addressing::Lba28,
                }
            }),
        ),
        (
            0,
            "PIO write buffer does not fit its block",
            Box::new(|s| {
                s.channels[0].devices[0].transfer = IdeTransfer::AtaWritePio {
                    lba: 0,
                    remaining: 1,
                    block: 1,
                    addressing: Addressing::Lba28,
                };
                s.channels[0].devices[0].buffer = vec![0; 1024];
            }),
        ),
        (
            0,
            "PIO read block or count",
            Box::new(|s| {
                s.channels[0].devices[0].transfer = IdeTransfer::AtaReadPio {
                    next_lba: 0,
                    remaining: 4,
                    block: u32::MAX,
                    addressing: Addressing::Lba28,
                }
            }),
        ),
        (
            0,
            "multiple count",
            Box::new(|s| s.channels[0].devices[0].settings.multiple = 3),
        ),
        (
            1,
            "command packet buffer length",
            Box::new(|s| {
                s.channels[1].devices[0].transfer = IdeTransfer::PacketCdb {
                    dma: false,
                    byte_count_limit: 0,
                };
                s.channels[1].devices[0].buffer = vec![0; 4];
                s.channels[1].devices[0].buffer_pos = 0;
            }),
        ),
        (
            1,
            "ATAPI split read",
            Box::new(|s| split(s).chunk_blocks = 0),
        ),
        (
            1,
            "ATAPI data-out length",
            Box::new(|s| {
                s.channels[1].devices[0].transfer = IdeTransfer::AtapiOut {
                    cdb: [0; CDB_LEN],
                    dma: true,
                    byte_count_limit: 0,
                    length: usize::MAX,
                    collected: Vec::new(),
                };
            }),
        ),
    ];
    for (channel, detail, mutate) in cases {
        let mut bad = good.clone();
        mutate(&mut bad);
        assert_eq!(
            q.ide.lock().unwrap().restore(&cbor_round_trip(&bad)),
            Err(IdeStateError::Inconsistent {
                channel,
                device: 0,
                detail
            })
        );
        assert_eq!(q.ide.lock().unwrap().state(), before, "{detail}");
    }
    // A write to a read-only disk cannot be in flight either.
    let ro = MemDisk::new(64, true);
    let w = rig(disk_and_cd(&ro));
    let mut bad = good.clone();
    bad.channels[0].devices[0].transfer = IdeTransfer::AtaDma {
        write: true,
        lba: 0,
        count: 1,
        addressing: Addressing::Lba28,
    };
    assert_eq!(
        w.ide.lock().unwrap().restore(&bad),
        Err(IdeStateError::Inconsistent {
            channel: 0,
            device: 0,
            detail: "DMA write to a read-only disk"
        })
    );
}

#[test]
fn chs_for_sectors_is_sane_for_any_size() {
    assert_eq!(
        Chs::for_sectors(0),
        Chs {
            cylinders: 1,
            heads: 1,
            sectors: 1
        }
    );
    assert_eq!(Chs::for_sectors(62).sectors, 62);
    assert_eq!(
        Chs::for_sectors(200),
        Chs {
            cylinders: 1,
            heads: 3,
            sectors: 63
        }
    );
    assert_eq!(Chs::for_sectors(1 << 40).cylinders, 16383);
    for n in [1u64, 63, 1007, 1008, 5000, 1 << 24, 1 << 33] {
        let c = Chs::for_sectors(n);
        assert!(c.is_valid(), "{n}");
        assert!(c.capacity() <= n.max(1), "{n}");
    }
}
