//! Bus master IDE: each channel's BMIC/BMIS/BMIDTP registers and the walk of its physical region
//! descriptor table (PIIX4 datasheet sections 2.7 "Bus master function" and 3.3, SFF-8038i).
//!
//! Transfers are synchronous: the channel moves all data of a DMA command at the moment both the
//! command and BMIC.start are present (see `channel.rs`), in bounded chunks. This module only
//! knows the registers and how to scatter or gather bytes through a PRD table:
//!
//! - A PRD is two dwords: the region's physical address (bit 0 ignored), and a byte count in bits
//!   15:1 where 0 means 64 KiB, with end-of-table in bit 31.
//! - The table is read from BMIDTP on. It must not cross a 64 KiB boundary (datasheet 2.7.2): the
//!   walk never reads an entry past the end of the 64 KiB page it starts in, so a table without
//!   EOT ends after at most 8192 entries and counts as an error ([`PrdError::Unterminated`]).
//! - A region must not cross a 64 KiB boundary either. Guests that break this rule get the region
//!   transferred linearly (as QEMU and 86Box do) rather than wrapped inside its 64 KiB page;
//!   `ata_piix`/libata and Windows split their regions so the difference never shows.
//! - Every access to guest memory goes through [`DmaMemory`], which refuses addresses outside RAM
//!   ([`PrdError::Memory`]); a region reaching past 4 GiB is refused the same way.

use crate::dma::{DmaError, DmaMemory};

use super::spec;

/// One channel's bus master registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BusMasterRegs {
    /// BMIC: start and direction.
    pub command: u8,
    /// BMIS: active, error, interrupt, the two DMA-capable bits.
    pub status: u8,
    /// BMIDTP: descriptor table address (dword aligned).
    pub prd_table: u32,
}

impl BusMasterRegs {
    pub fn started(&self) -> bool {
        self.command & spec::BMIC_START != 0
    }

    pub fn active(&self) -> bool {
        self.status & spec::BMIS_ACTIVE != 0
    }

    /// True when the direction bit says the bus master writes memory (a device-to-host transfer).
    pub fn writes_memory(&self) -> bool {
        self.command & spec::BMIC_WRITE_TO_MEMORY != 0
    }

    /// Reads the register byte at `offset` (0-7) of the channel's block.
    pub fn read_byte(&self, offset: u64) -> u8 {
        match offset {
            spec::BMIC => self.command,
            spec::BMIS => self.status,
            4..=7 => (self.prd_table >> (8 * (offset - spec::BMIDTP))) as u8,
            // Offsets 1 and 3 are reserved and read 0.
            _ => 0,
        }
    }

    /// Writes the status register: error and interrupt are write-1-to-clear, the DMA-capable
    /// bits are plain read/write, active and simplex are read-only.
    pub fn write_status(&mut self, v: u8) {
        self.status = (self.status & !spec::BMIS_RW & !(v & spec::BMIS_W1C)) | (v & spec::BMIS_RW);
    }

    /// Writes one byte of BMIDTP.
    pub fn write_prd_byte(&mut self, byte: u64, v: u8) {
        let shift = 8 * byte;
        let t = (self.prd_table & !(0xff << shift)) | (u32::from(v) << shift);
        self.prd_table = t & spec::BMIDTP_MASK;
    }
}

/// Why a PRD walk stopped before the transfer was complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrdError {
    /// The entry with end-of-table was used up while data remained.
    #[error("the PRD table ended (EOT) before the transfer was complete")]
    TableEnded,
    /// No entry with end-of-table within the table's 64 KiB page.
    #[error("the PRD table at {table:#x} has no end-of-table entry within its 64 KiB page")]
    Unterminated { table: u32 },
    /// A descriptor or a region lies outside guest RAM.
    #[error(transparent)]
    Memory(#[from] DmaError),
}

/// A position in a PRD table: the region being transferred and the next descriptor.
#[derive(Clone, Debug)]
pub struct PrdCursor {
    table: u32,
    next_entry: u64,
    page_end: u64,
    region: u64,
    region_left: u32,
    last: bool,
}

impl PrdCursor {
    /// A walk from the start of the table at `table`.
    pub fn new(table: u32) -> Self {
        let table = table & spec::BMIDTP_MASK;
        let start = u64::from(table);
        Self {
            table,
            next_entry: start,
            page_end: (start & !(spec::PRD_TABLE_PAGE - 1)) + spec::PRD_TABLE_PAGE,
            region: 0,
            region_left: 0,
            last: false,
        }
    }

    /// True when the region marked end-of-table has been used up exactly.
    pub fn exhausted(&self) -> bool {
        self.last && self.region_left == 0
    }

    fn fetch(&mut self, mem: &dyn DmaMemory) -> Result<(), PrdError> {
        if self.last {
            return Err(PrdError::TableEnded);
        }
        if self.next_entry + spec::PRD_SIZE > self.page_end {
            return Err(PrdError::Unterminated { table: self.table });
        }
        let mut e = [0u8; 8];
        mem.read(self.next_entry, &mut e)?;
        self.next_entry += spec::PRD_SIZE;
        let addr = u32::from_le_bytes([e[0], e[1], e[2], e[3]]) & spec::PRD_ADDRESS_MASK;
        let flags = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let count = match flags & spec::PRD_COUNT_MASK {
            0 => 0x1_0000,
            n => n,
        };
        self.region = u64::from(addr);
        self.region_left = count;
        self.last = flags & spec::PRD_EOT != 0;
        Ok(())
    }

    /// The next piece of the current region, at most `max` bytes, fetching descriptors as needed.
    fn next_piece(&mut self, mem: &dyn DmaMemory, max: usize) -> Result<(u64, usize), PrdError> {
        while self.region_left == 0 {
            self.fetch(mem)?;
        }
        let n = max.min(self.region_left as usize);
        let addr = self.region;
        if addr + n as u64 > 1 << 32 {
            // A 32-bit bus master cannot reach past 4 GiB.
            return Err(DmaError { addr, len: n }.into());
        }
        Ok((addr, n))
    }

    fn advance(&mut self, n: usize) {
        self.region += n as u64;
        self.region_left -= n as u32;
    }

    /// Scatters `data` into the regions (a device-to-memory transfer).
    pub fn write(&mut self, mem: &dyn DmaMemory, mut data: &[u8]) -> Result<(), PrdError> {
        while !data.is_empty() {
            let (addr, n) = self.next_piece(mem, data.len())?;
            mem.write(addr, &data[..n])?;
            self.advance(n);
            data = &data[n..];
        }
        Ok(())
    }

    /// Gathers `buf.len()` bytes from the regions (a memory-to-device transfer).
    pub fn read(&mut self, mem: &dyn DmaMemory, buf: &mut [u8]) -> Result<(), PrdError> {
        let mut done = 0;
        while done < buf.len() {
            let (addr, n) = self.next_piece(mem, buf.len() - done)?;
            mem.read(addr, &mut buf[done..done + n])?;
            self.advance(n);
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dma::testing::FakeRam;

    fn put_prd(ram: &FakeRam, at: usize, addr: u32, count: u32, eot: bool) {
        let mut m = ram.0.lock().unwrap();
        m[at..at + 4].copy_from_slice(&addr.to_le_bytes());
        let flags = count | if eot { spec::PRD_EOT } else { 0 };
        m[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
    }

    #[test]
    fn status_bits_are_write_one_to_clear_and_read_write() {
        let mut r = BusMasterRegs {
            status: spec::BMIS_ACTIVE | spec::BMIS_ERROR | spec::BMIS_INTERRUPT,
            ..Default::default()
        };
        r.write_status(spec::BMIS_DRIVE0_DMA | spec::BMIS_ERROR | 0x80 | spec::BMIS_ACTIVE);
        assert_eq!(
            r.status,
            spec::BMIS_ACTIVE | spec::BMIS_INTERRUPT | spec::BMIS_DRIVE0_DMA
        );
        r.write_status(spec::BMIS_INTERRUPT);
        assert_eq!(r.status, spec::BMIS_ACTIVE);
        r.write_prd_byte(0, 0x13);
        r.write_prd_byte(3, 0x12);
        assert_eq!(r.prd_table, 0x1200_0010);
        assert_eq!(r.read_byte(4), 0x10);
        assert_eq!(r.read_byte(7), 0x12);
        assert_eq!(r.read_byte(1), 0);
    }

    #[test]
    fn zero_count_means_64k_and_eot_ends_exactly() {
        let ram = FakeRam::new(0x40000);
        put_prd(&ram, 0x100, 0x10000, 0, false);
        put_prd(&ram, 0x108, 0x30000, 0x200, true);
        let mut c = PrdCursor::new(0x100);
        let data = vec![0xab; 0x10000 + 0x200];
        c.write(ram.as_ref(), &data).unwrap();
        assert!(c.exhausted());
        let m = ram.0.lock().unwrap();
        assert!(m[0x10000..0x20000].iter().all(|&b| b == 0xab));
        assert!(m[0x30000..0x30200].iter().all(|&b| b == 0xab));
        assert_eq!(m[0x30200], 0);
        assert_eq!(m[0x20000], 0);
    }

    #[test]
    fn longer_table_is_not_exhausted_and_shorter_fails() {
        let ram = FakeRam::new(0x10000);
        put_prd(&ram, 0, 0x1000, 0x400, true);
        let mut c = PrdCursor::new(0);
        c.write(ram.as_ref(), &[1; 0x200]).unwrap();
        assert!(!c.exhausted());
        let mut c = PrdCursor::new(0);
        assert_eq!(
            c.write(ram.as_ref(), &[1; 0x600]),
            Err(PrdError::TableEnded)
        );
    }

    #[test]
    fn unterminated_table_stops_at_its_64k_page() {
        let ram = FakeRam::new(0x30000);
        // Every entry of the page at 0x10000 is a 2-byte region without EOT.
        for i in 0..8192 {
            put_prd(&ram, 0x10000 + i * 8, 0x20000, 2, false);
        }
        let mut c = PrdCursor::new(0x10000);
        let mut buf = vec![0; 8192 * 2 + 2];
        assert_eq!(
            c.read(ram.as_ref(), &mut buf),
            Err(PrdError::Unterminated { table: 0x10000 })
        );
        // A table starting near the end of its page has fewer entries.
        let mut c = PrdCursor::new(0x1fff8);
        assert_eq!(
            c.read(ram.as_ref(), &mut [0; 4]),
            Err(PrdError::Unterminated { table: 0x1fff8 })
        );
    }

    #[test]
    fn regions_outside_ram_fail_without_touching_anything() {
        let ram = FakeRam::new(0x10000);
        put_prd(&ram, 0, 0xfff0_0000, 0x200, true);
        let mut c = PrdCursor::new(0);
        assert!(matches!(
            c.write(ram.as_ref(), &[1; 0x200]),
            Err(PrdError::Memory(_))
        ));
        // The table itself outside RAM.
        let mut c = PrdCursor::new(0x8000_0000);
        assert!(matches!(
            c.write(ram.as_ref(), &[1; 2]),
            Err(PrdError::Memory(_))
        ));
        // A region reaching past 4 GiB.
        put_prd(&ram, 0, 0xffff_ff00, 0x200, true);
        let mut c = PrdCursor::new(0);
        assert!(matches!(
            c.write(ram.as_ref(), &[1; 0x200]),
            Err(PrdError::Memory(DmaError {
                addr: 0xffff_ff00,
                len: 0x200
            }))
        ));
    }

    #[test]
    fn a_region_crossing_64k_is_transferred_linearly() {
        let ram = FakeRam::new(0x30000);
        put_prd(&ram, 0, 0xff00, 0x200, true);
        let mut c = PrdCursor::new(0);
        c.write(ram.as_ref(), &[7; 0x200]).unwrap();
        let m = ram.0.lock().unwrap();
        assert!(m[0xff00..0x10100].iter().all(|&b| b == 7));
        assert_eq!(m[0x0000], 0);
    }

    #[test]
    fn odd_addresses_and_counts_are_rounded_down() {
        let ram = FakeRam::new(0x10000);
        put_prd(&ram, 0, 0x1001, 0x3, true);
        let mut c = PrdCursor::new(0);
        c.write(ram.as_ref(), &[9, 9]).unwrap();
        assert!(c.exhausted());
        let m = ram.0.lock().unwrap();
        assert_eq!(&m[0x1000..0x1003], &[9, 9, 0]);
    }
}
