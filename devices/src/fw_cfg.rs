//! The QEMU firmware configuration device (fw_cfg), in its x86 I/O-port form, as SeaBIOS built
//! with `CONFIG_QEMU` expects it.
//!
//! Follows QEMU's `docs/specs/fw_cfg.rst` ("QEMU Firmware Configuration (fw_cfg) Device") and,
//! where that document is silent, what QEMU's implementation does:
//!
//! - Selector register, port 0x510, written 16 bits wide (little-endian): picks an item and
//!   rewinds the read offset to 0. Selectors with bit 15 set are architecture-specific items;
//!   bit 14 (the old write channel) is ignored when looking the item up.
//! - Data register, port 0x511, read 8 bits at a time: the next byte of the selected item. Past
//!   the item's end, or for a selector that names no item, reads return 0 (QEMU's behaviour).
//!   An 8-bit read of port 0x510 reads the data register too, because QEMU's 16-bit selector
//!   overlaps it. Writes to the data register are ignored, as in QEMU 2.4 and later.
//! - DMA address register, ports 0x514-0x51B: a big-endian 64-bit guest-physical address of an
//!   `FWCfgDmaAccess` structure (control BE32, length BE32, address BE64). A 32-bit write of the
//!   high half at 0x514 stores it (and clears the low half); a 32-bit write of the low half at
//!   0x518 completes the address and runs the transfer at once, so the guest finds the control
//!   word already written back when its `out` returns. The address then resets to 0, as in QEMU.
//!   Reads return the signature "QEMU CFG", one byte per port.
//!
//! A DMA transfer optionally selects the item in control bits 31:16 (with the SELECT bit), then
//! reads, skips or writes `length` bytes from the current offset. Reading past the item's end
//! zero-fills the rest of the guest buffer; skipping past it just consumes the length. Every
//! item is read-only: a write sets the error bit, as QEMU does for a read-only item. A
//! descriptor or buffer outside guest RAM also sets the error bit (or, when the descriptor
//! itself cannot be read, the device tries to write the error bit into it and gives up). The
//! control word is written back as 0 on success.
//!
//! Item 0x0000 is the signature "QEMU", item 0x0001 the feature bitmap (traditional interface
//! and DMA), item 0x0019 the file directory: a big-endian file count, then one 64-byte entry per
//! file (size BE32, selector BE16, reserved BE16, NUL-padded name of at most 55 bytes). Files
//! take selectors from 0x0020 in the byte order of their names, as QEMU's non-legacy machine
//! types sort them. The other numeric items (RAM size, CPU counts, ...) are whatever the VMM
//! gives [`FwCfg::new`].

use std::collections::BTreeMap;

use crate::bus::warn_limited;
use crate::bus::BusDevice;
use crate::dma::GuestMemory;

/// Register offsets, item selectors and bit layouts (QEMU `docs/specs/fw_cfg.rst`,
/// `include/standard-headers/linux/qemu_fw_cfg.h`).
pub mod spec {
    /// Where the device sits on the x86 I/O bus; it decodes [`IO_LEN`] ports from there.
    pub const IO_BASE: u16 = 0x510;
    pub const IO_LEN: u64 = 12;

    /// The 16-bit selector register (0x510).
    pub const SELECTOR: u64 = 0;
    /// The 8-bit data register (0x511).
    pub const DATA: u64 = 1;
    /// The DMA address register, high half (0x514) and low half (0x518), big-endian.
    pub const DMA_ADDRESS_HIGH: u64 = 4;
    pub const DMA_ADDRESS_LOW: u64 = 8;
    /// What reads of the DMA address register return, one byte per port from 0x514.
    pub const DMA_SIGNATURE: [u8; 8] = *b"QEMU CFG";

    // Selectors of the numeric items.
    pub const SIGNATURE: u16 = 0x0000;
    pub const ID: u16 = 0x0001;
    pub const UUID: u16 = 0x0002;
    /// RAM size in bytes, LE64.
    pub const RAM_SIZE: u16 = 0x0003;
    /// Non-zero when the machine has no graphics (SeaBIOS then uses a serial console), LE16.
    pub const NOGRAPHIC: u16 = 0x0004;
    /// vCPUs present at boot, LE16.
    pub const NB_CPUS: u16 = 0x0005;
    pub const MACHINE_ID: u16 = 0x0006;
    /// NUMA data: LE64 node count, then per-CPU and per-node LE64 words.
    pub const NUMA: u16 = 0x000d;
    /// Non-zero to show the boot menu, LE16.
    pub const BOOT_MENU: u16 = 0x000e;
    /// Most vCPUs the machine can have, LE16.
    pub const MAX_CPUS: u16 = 0x000f;
    pub const FILE_DIR: u16 = 0x0019;
    /// The first selector given to a file.
    pub const FILE_FIRST: u16 = 0x0020;
    /// Bit 14 of a selector: the write channel of old QEMU versions; ignored for lookups.
    pub const WRITE_CHANNEL: u16 = 0x4000;
    /// Bit 15 of a selector: an architecture-specific item.
    pub const ARCH_LOCAL: u16 = 0x8000;
    /// The item number inside the generic or the architecture-specific space.
    pub const ENTRY_MASK: u16 = !(WRITE_CHANNEL | ARCH_LOCAL);

    // x86 architecture-specific items (QEMU `hw/i386/fw_cfg.h`).
    /// Count (LE16) and user-supplied ACPI tables; SeaBIOS reads the count.
    pub const ACPI_TABLES: u16 = ARCH_LOCAL;
    /// Count (LE16) and legacy SMBIOS fields; SeaBIOS reads the count.
    pub const SMBIOS_ENTRIES: u16 = ARCH_LOCAL + 1;
    /// Non-zero when ISA IRQ 0 (the PIT) reaches IOAPIC pin 2; SeaBIOS reads one byte.
    pub const IRQ0_OVERRIDE: u16 = ARCH_LOCAL + 2;
    /// Legacy e820 reservations; SeaBIOS only reads them when there is no file "etc/e820".
    pub const E820_TABLE: u16 = ARCH_LOCAL + 3;

    /// The signature item's bytes.
    pub const SIGNATURE_VALUE: [u8; 4] = *b"QEMU";
    /// Feature bits of the ID item (LE32): the traditional interface, the DMA interface.
    pub const ID_TRADITIONAL: u32 = 1 << 0;
    pub const ID_DMA: u32 = 1 << 1;

    /// `FWCfgDmaAccess`: control BE32 at 0, length BE32 at 4, address BE64 at 8.
    pub const DMA_ACCESS_LEN: usize = 16;
    pub const DMA_CTL_ERROR: u32 = 1 << 0;
    pub const DMA_CTL_READ: u32 = 1 << 1;
    pub const DMA_CTL_SKIP: u32 = 1 << 2;
    pub const DMA_CTL_SELECT: u32 = 1 << 3;
    pub const DMA_CTL_WRITE: u32 = 1 << 4;
    /// The selector rides in control bits 31:16 when DMA_CTL_SELECT is set.
    pub const DMA_CTL_SELECTOR_SHIFT: u32 = 16;

    /// A file directory entry: size BE32, select BE16, reserved BE16, name[56].
    pub const FILE_ENTRY_LEN: usize = 64;
    pub const FILE_NAME_LEN: usize = 56;
    /// The most files the selectors 0x0020-0x3FFF can name.
    pub const MAX_FILES: usize = (ENTRY_MASK - FILE_FIRST) as usize + 1;
}

use spec::*;

/// Why a set of items cannot be served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FwCfgError {
    #[error(
        "fw_cfg file name {0:?} must be 1 to {max} bytes without NUL",
        max = spec::FILE_NAME_LEN - 1
    )]
    FileName(String),
    #[error("fw_cfg file {0:?} is given twice")]
    DuplicateFile(String),
    #[error(
        "fw_cfg item {0:#06x} cannot be set: the signature, ID and file directory are the \
         device's own, selectors from 0x0020 name files, and bit 14 is not part of a selector"
    )]
    ReservedKey(u16),
    #[error("fw_cfg item {0:#06x} is given twice")]
    DuplicateKey(u16),
    #[error("fw_cfg cannot hold {0} files: selectors 0x0020-0x3FFF name at most {MAX_FILES}")]
    TooManyFiles(usize),
    #[error("fw_cfg item {what} has {len} bytes; an item holds less than 4 GiB")]
    TooLarge { what: String, len: usize },
}

/// The guest-visible state of an [`FwCfg`], for snapshots. The items themselves are rebuilt
/// from the configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FwCfgState {
    /// The selector last written (0 after reset: the signature).
    pub selector: u16,
    /// The read offset inside the selected item.
    pub offset: u32,
    /// The DMA address register (the high half, until the low half triggers a transfer).
    pub dma_address: u64,
}

/// The fw_cfg device. Register it on the I/O bus at [`spec::IO_BASE`] with length
/// [`spec::IO_LEN`].
pub struct FwCfg {
    // Fixed configuration: every item by selector (ARCH_LOCAL bit kept, WRITE_CHANNEL clear).
    items: BTreeMap<u16, Vec<u8>>,

    // Runtime handles.
    memory: GuestMemory,

    // Guest-visible state.
    selector: u16,
    offset: u32,
    dma_address: u64,
}

/// What a DMA transfer does with the bytes it walks over.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DmaOp {
    Read,
    Write,
    Skip,
}

/// A zero page for reads past an item's end.
static ZEROS: [u8; 4096] = [0; 4096];

impl FwCfg {
    /// A device serving `items` (numeric selectors with their bytes, e.g. [`spec::NB_CPUS`]
    /// with a LE16) and `files` (names and contents, listed in the file directory), reading and
    /// writing DMA descriptors and buffers through `memory`.
    ///
    /// The signature, ID and file directory are built here; `items` may not set them, nor use
    /// a selector from [`spec::FILE_FIRST`] up in the generic space.
    pub fn new(
        memory: GuestMemory,
        items: Vec<(u16, Vec<u8>)>,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<Self, FwCfgError> {
        let mut map = BTreeMap::new();
        for (key, bytes) in items {
            let entry = key & ENTRY_MASK;
            if key & WRITE_CHANNEL != 0
                || (key & ARCH_LOCAL == 0
                    && (entry >= FILE_FIRST || [SIGNATURE, ID, FILE_DIR].contains(&entry)))
            {
                return Err(FwCfgError::ReservedKey(key));
            }
            check_len(&format!("{key:#06x}"), &bytes)?;
            if map.insert(key, bytes).is_some() {
                return Err(FwCfgError::DuplicateKey(key));
            }
        }
        map.insert(SIGNATURE, SIGNATURE_VALUE.to_vec());
        map.insert(ID, (ID_TRADITIONAL | ID_DMA).to_le_bytes().to_vec());

        let mut files = files;
        if files.len() > MAX_FILES {
            return Err(FwCfgError::TooManyFiles(files.len()));
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let mut dir = Vec::with_capacity(4 + files.len() * FILE_ENTRY_LEN);
        dir.extend_from_slice(&(files.len() as u32).to_be_bytes());
        for (i, (name, bytes)) in files.into_iter().enumerate() {
            if name.is_empty() || name.len() >= FILE_NAME_LEN || name.contains('\0') {
                return Err(FwCfgError::FileName(name));
            }
            if dir.len() > 4 && dir_name(&dir, i - 1) == name.as_bytes() {
                return Err(FwCfgError::DuplicateFile(name));
            }
            check_len(&name, &bytes)?;
            let select = FILE_FIRST + i as u16;
            dir.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            dir.extend_from_slice(&select.to_be_bytes());
            dir.extend_from_slice(&[0, 0]);
            let mut field = [0u8; FILE_NAME_LEN];
            field[..name.len()].copy_from_slice(name.as_bytes());
            dir.extend_from_slice(&field);
            map.insert(select, bytes);
        }
        map.insert(FILE_DIR, dir);

        Ok(Self {
            items: map,
            memory,
            selector: SIGNATURE,
            offset: 0,
            dma_address: 0,
        })
    }

    /// The bytes of the item `selector` names, if any (bit 14 ignored, as on the data port).
    pub fn item(&self, selector: u16) -> Option<&[u8]> {
        lookup(&self.items, selector)
    }

    /// A device reset: the signature is selected again and the DMA address cleared.
    pub fn reset(&mut self) {
        self.select(SIGNATURE);
        self.dma_address = 0;
    }

    pub fn state(&self) -> FwCfgState {
        FwCfgState {
            selector: self.selector,
            offset: self.offset,
            dma_address: self.dma_address,
        }
    }

    /// Any values are safe: an offset past the item's end just reads zeros.
    pub fn restore(&mut self, s: &FwCfgState) {
        self.selector = s.selector;
        self.offset = s.offset;
        self.dma_address = s.dma_address;
    }

    fn select(&mut self, selector: u16) {
        log::trace!("fw_cfg: select {selector:#06x}");
        self.selector = selector;
        self.offset = 0;
    }

    /// The data register: the next byte of the item, 0 past its end or without an item.
    fn read_data(&mut self) -> u8 {
        match lookup(&self.items, self.selector).and_then(|item| item.get(self.offset as usize)) {
            Some(&b) => {
                self.offset += 1;
                b
            }
            None => 0,
        }
    }

    /// Runs the `FWCfgDmaAccess` at the DMA address and writes its control word back.
    fn dma_transfer(&mut self) {
        // The address register is consumed by the transfer (QEMU resets it to 0).
        let descriptor = std::mem::take(&mut self.dma_address);
        let mut access = [0u8; DMA_ACCESS_LEN];
        if self.memory.read(descriptor, &mut access).is_err() {
            warn_limited!("fw_cfg: DMA descriptor at {descriptor:#x} is outside guest RAM");
            // Try to report it; the descriptor's first word may still be writable.
            let _ = self.memory.write(descriptor, &DMA_CTL_ERROR.to_be_bytes());
            return;
        }
        let field = |range: std::ops::Range<usize>| -> u64 {
            access[range]
                .iter()
                .fold(0u64, |v, &b| (v << 8) | u64::from(b))
        };
        let control = field(0..4) as u32;
        let mut length = field(4..8) as u32;
        let mut address = field(8..16);

        if control & DMA_CTL_SELECT != 0 {
            self.select((control >> DMA_CTL_SELECTOR_SHIFT) as u16);
        }
        // QEMU's precedence: read, then write, then skip; none of them transfers nothing.
        let op = if control & DMA_CTL_READ != 0 {
            DmaOp::Read
        } else if control & DMA_CTL_WRITE != 0 {
            DmaOp::Write
        } else if control & DMA_CTL_SKIP != 0 {
            DmaOp::Skip
        } else {
            length = 0;
            DmaOp::Skip
        };

        let mut status = 0u32;
        // Each pass consumes at least one byte: what is left of the item, or all of `length`.
        while length > 0 && status & DMA_CTL_ERROR == 0 {
            let rest = lookup(&self.items, self.selector)
                .and_then(|item| item.get(self.offset as usize..))
                .filter(|rest| !rest.is_empty());
            let len = match rest {
                None => {
                    // Past the end, or no item: reads zero-fill, skips just advance.
                    match op {
                        DmaOp::Read => {
                            if !self.zero_fill(address, length) {
                                status |= DMA_CTL_ERROR;
                            }
                        }
                        DmaOp::Write => status |= DMA_CTL_ERROR,
                        DmaOp::Skip => {}
                    }
                    length
                }
                Some(rest) => {
                    let len = length.min(rest.len() as u32);
                    match op {
                        DmaOp::Read => {
                            if self.memory.write(address, &rest[..len as usize]).is_err() {
                                status |= DMA_CTL_ERROR;
                            }
                        }
                        DmaOp::Write => status |= DMA_CTL_ERROR,
                        DmaOp::Skip => {}
                    }
                    self.offset += len;
                    len
                }
            };
            address = address.wrapping_add(u64::from(len));
            length -= len;
        }
        if status & DMA_CTL_ERROR != 0 {
            warn_limited!(
                "fw_cfg: DMA {} of item {:#06x} failed (buffer at {address:#x})",
                match op {
                    DmaOp::Read => "read",
                    DmaOp::Write => "write (items are read-only)",
                    DmaOp::Skip => "skip",
                },
                self.selector
            );
        }
        let _ = self.memory.write(descriptor, &status.to_be_bytes());
    }

    /// Writes `len` zero bytes at `addr`; false when any of them falls outside guest RAM.
    fn zero_fill(&self, mut addr: u64, mut len: u32) -> bool {
        while len > 0 {
            let n = len.min(ZEROS.len() as u32);
            if self.memory.write(addr, &ZEROS[..n as usize]).is_err() {
                return false;
            }
            addr = addr.wrapping_add(u64::from(n));
            len -= n;
        }
        true
    }
}

/// The item a selector names: bit 14 is dropped, the architecture bit kept.
fn lookup(items: &BTreeMap<u16, Vec<u8>>, selector: u16) -> Option<&[u8]> {
    items.get(&(selector & !WRITE_CHANNEL)).map(Vec::as_slice)
}

/// The NUL-trimmed name of directory entry `index` in `dir`.
fn dir_name(dir: &[u8], index: usize) -> &[u8] {
    let at = 4 + index * FILE_ENTRY_LEN + 8;
    let field = &dir[at..at + FILE_NAME_LEN];
    let end = field.iter().position(|&b| b == 0).unwrap_or(FILE_NAME_LEN);
    &field[..end]
}

fn check_len(what: &str, bytes: &[u8]) -> Result<(), FwCfgError> {
    if u32::try_from(bytes.len()).is_err() {
        return Err(FwCfgError::TooLarge {
            what: what.to_string(),
            len: bytes.len(),
        });
    }
    Ok(())
}

impl BusDevice for FwCfg {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset == SELECTOR || offset == DATA {
            // QEMU's selector port overlaps the data port: byte reads of either give data. A
            // longer access is a string read (`rep insb`), which KVM hands over as one exit
            // carrying every byte: a byte of data each.
            for b in data.iter_mut() {
                *b = self.read_data();
            }
            return;
        }
        if offset < DMA_ADDRESS_HIGH {
            warn_limited!(
                "fw_cfg: {}-byte read at +{offset:#x} (the data port is read a byte at a time)",
                data.len()
            );
        }
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset + i as u64;
            *b = if (DMA_ADDRESS_HIGH..IO_LEN).contains(&at) {
                DMA_SIGNATURE[(at - DMA_ADDRESS_HIGH) as usize]
            } else {
                0xff
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (SELECTOR, 2) => self.select(u16::from_le_bytes([data[0], data[1]])),
            (SELECTOR | DATA, 1) => {
                log::debug!("fw_cfg: data write {:#04x} ignored", data[0]);
            }
            (DMA_ADDRESS_HIGH, 4) => {
                let high = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                self.dma_address = u64::from(high) << 32;
            }
            (DMA_ADDRESS_LOW, 4) => {
                let low = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                self.dma_address |= u64::from(low);
                self.dma_transfer();
            }
            (DMA_ADDRESS_HIGH, 8) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(data);
                self.dma_address = u64::from_be_bytes(be);
                self.dma_transfer();
            }
            _ => warn_limited!("fw_cfg: {}-byte write at +{offset:#x} ignored", data.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dma::testing::FakeRam;
    use crate::testing::cbor_round_trip;
    use std::sync::Arc;

    const RAM: usize = 0x10000;
    const DESC: u64 = 0x1000;
    const BUF: u64 = 0x2000;

    fn files() -> Vec<(String, Vec<u8>)> {
        vec![
            ("etc/table-loader".into(), vec![7; 300]),
            (
                "bootorder".into(),
                b"/pci@i0cf8/ide@7,1/drive@0/disk@0".to_vec(),
            ),
            ("etc/e820".into(), (0u8..40).collect()),
        ]
    }

    fn device() -> (FwCfg, Arc<FakeRam>) {
        let ram = FakeRam::new(RAM);
        let items = vec![
            (NB_CPUS, 2u16.to_le_bytes().to_vec()),
            (IRQ0_OVERRIDE, 1u32.to_le_bytes().to_vec()),
        ];
        (FwCfg::new(ram.clone(), items, files()).unwrap(), ram)
    }

    fn select(d: &mut FwCfg, key: u16) {
        d.write(SELECTOR, &key.to_le_bytes());
    }

    fn read_bytes(d: &mut FwCfg, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                let mut b = [0u8];
                d.read(DATA, &mut b);
                b[0]
            })
            .collect()
    }

    fn peek(ram: &FakeRam, addr: u64, len: usize) -> Vec<u8> {
        ram.0.lock().unwrap()[addr as usize..addr as usize + len].to_vec()
    }

    fn poke(ram: &FakeRam, addr: u64, bytes: &[u8]) {
        ram.0.lock().unwrap()[addr as usize..addr as usize + bytes.len()].copy_from_slice(bytes);
    }

    /// Writes an `FWCfgDmaAccess` at `desc`, starts it the way SeaBIOS does (one 32-bit write
    /// of the big-endian low half) and returns the control word written back.
    fn dma(d: &mut FwCfg, ram: &FakeRam, desc: u64, control: u32, len: u32, addr: u64) -> u32 {
        let mut a = Vec::new();
        a.extend_from_slice(&control.to_be_bytes());
        a.extend_from_slice(&len.to_be_bytes());
        a.extend_from_slice(&addr.to_be_bytes());
        poke(ram, desc, &a);
        d.write(DMA_ADDRESS_LOW, &(desc as u32).to_be_bytes());
        u32::from_be_bytes(peek(ram, desc, 4).try_into().unwrap())
    }

    /// The directory as the guest parses it: (name, select, size).
    fn parse_dir(bytes: &[u8]) -> Vec<(String, u16, u32)> {
        let count = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(bytes.len(), 4 + count * FILE_ENTRY_LEN);
        bytes[4..]
            .chunks(FILE_ENTRY_LEN)
            .map(|e| {
                let size = u32::from_be_bytes(e[0..4].try_into().unwrap());
                let select = u16::from_be_bytes(e[4..6].try_into().unwrap());
                assert_eq!(&e[6..8], &[0, 0]);
                let name = &e[8..];
                let end = name.iter().position(|&b| b == 0).unwrap();
                assert!(name[end..].iter().all(|&b| b == 0));
                (
                    String::from_utf8(name[..end].to_vec()).unwrap(),
                    select,
                    size,
                )
            })
            .collect()
    }

    #[test]
    fn signature_and_id() {
        let (mut d, _) = device();
        // Selected from power-on.
        assert_eq!(read_bytes(&mut d, 4), b"QEMU");
        select(&mut d, SIGNATURE);
        assert_eq!(read_bytes(&mut d, 6), b"QEMU\0\0");
        select(&mut d, ID);
        assert_eq!(read_bytes(&mut d, 4), [3, 0, 0, 0]);
        // Bit 14 is not part of the item number.
        select(&mut d, SIGNATURE | WRITE_CHANNEL);
        assert_eq!(read_bytes(&mut d, 4), b"QEMU");
        // A byte read of the selector port reads data too.
        select(&mut d, SIGNATURE);
        let mut b = [0u8];
        d.read(SELECTOR, &mut b);
        assert_eq!(b[0], b'Q');
        // The DMA address register reads back the DMA signature.
        let mut sig = [0u8; 4];
        d.read(DMA_ADDRESS_HIGH, &mut sig);
        assert_eq!(&sig, b"QEMU");
        d.read(DMA_ADDRESS_LOW, &mut sig);
        assert_eq!(&sig, b" CFG");
    }

    #[test]
    fn numeric_items() {
        let (mut d, _) = device();
        select(&mut d, NB_CPUS);
        assert_eq!(read_bytes(&mut d, 2), [2, 0]);
        select(&mut d, IRQ0_OVERRIDE);
        assert_eq!(read_bytes(&mut d, 1), [1]);
        // Items nobody set read as zeros (SeaBIOS relies on it for NUMA, ACPI_TABLES, ...).
        select(&mut d, NUMA);
        assert_eq!(read_bytes(&mut d, 8), [0; 8]);
        assert_eq!(d.item(NB_CPUS), Some(&[2u8, 0][..]));
        assert_eq!(d.item(NUMA), None);
    }

    #[test]
    fn file_dir_lists_files_sorted_by_name() {
        let (mut d, _) = device();
        select(&mut d, FILE_DIR);
        let count = read_bytes(&mut d, 4);
        assert_eq!(count, [0, 0, 0, 3]);
        let mut dir = count;
        dir.extend(read_bytes(&mut d, 3 * FILE_ENTRY_LEN));
        let dir = parse_dir(&dir);
        assert_eq!(
            dir,
            vec![
                ("bootorder".to_string(), 0x20, 33),
                ("etc/e820".to_string(), 0x21, 40),
                ("etc/table-loader".to_string(), 0x22, 300),
            ]
        );
        // Each file reads back through its selector.
        for (name, sel, size) in dir {
            select(&mut d, sel);
            let want = files().into_iter().find(|f| f.0 == name).unwrap().1;
            assert_eq!(read_bytes(&mut d, size as usize), want, "{name}");
        }
    }

    #[test]
    fn port_reads_past_the_end_are_zero() {
        let (mut d, _) = device();
        select(&mut d, 0x21); // etc/e820, 40 bytes
        let got = read_bytes(&mut d, 48);
        assert_eq!(&got[..40], &(0u8..40).collect::<Vec<_>>()[..]);
        assert_eq!(&got[40..], &[0; 8]);
        // The offset stops at the end; reselecting rewinds.
        assert_eq!(d.state().offset, 40);
        select(&mut d, 0x21);
        assert_eq!(read_bytes(&mut d, 2), [0, 1]);
    }

    #[test]
    fn selector_beyond_the_items_reads_zeros() {
        let (mut d, ram) = device();
        for key in [0x23, 0x3fff, 0x7fff, 0xffff, 0x8010, 0x0002] {
            select(&mut d, key);
            assert_eq!(read_bytes(&mut d, 4), [0; 4], "{key:#x}");
            poke(&ram, BUF, &[0xaa; 16]);
            let ctl = dma(
                &mut d,
                &ram,
                DESC,
                u32::from(key) << 16 | DMA_CTL_SELECT | DMA_CTL_READ,
                16,
                BUF,
            );
            assert_eq!(ctl, 0, "{key:#x}");
            assert_eq!(peek(&ram, BUF, 16), [0; 16], "{key:#x}");
        }
    }

    #[test]
    fn dma_reads_a_file() {
        let (mut d, ram) = device();
        let ctl = dma(
            &mut d,
            &ram,
            DESC,
            0x22 << 16 | DMA_CTL_SELECT | DMA_CTL_READ,
            300,
            BUF,
        );
        assert_eq!(ctl, 0);
        assert_eq!(peek(&ram, BUF, 300), vec![7; 300]);
        assert_eq!(d.state().offset, 300);
        // The address register was consumed.
        assert_eq!(d.state().dma_address, 0);

        // The file directory by DMA, the way SeaBIOS reads it: count, then entries.
        let ctl = dma(
            &mut d,
            &ram,
            DESC,
            u32::from(FILE_DIR) << 16 | DMA_CTL_SELECT | DMA_CTL_READ,
            4,
            BUF,
        );
        assert_eq!(ctl, 0);
        assert_eq!(peek(&ram, BUF, 4), [0, 0, 0, 3]);
        assert_eq!(dma(&mut d, &ram, DESC, DMA_CTL_READ, 64, BUF + 4), 0);
        assert_eq!(&peek(&ram, BUF + 12, 9), b"bootorder");

        // Skip then read continues from the offset; the high half of the address is honoured.
        select(&mut d, 0x21);
        assert_eq!(dma(&mut d, &ram, DESC, DMA_CTL_SKIP, 10, 0), 0);
        d.write(DMA_ADDRESS_HIGH, &0u32.to_be_bytes());
        assert_eq!(dma(&mut d, &ram, DESC, DMA_CTL_READ, 5, BUF), 0);
        assert_eq!(peek(&ram, BUF, 5), [10, 11, 12, 13, 14]);
        // A control word with no operation selects but moves nothing.
        assert_eq!(
            dma(&mut d, &ram, DESC, 0x20 << 16 | DMA_CTL_SELECT, 5, BUF),
            0
        );
        assert_eq!(
            d.state(),
            FwCfgState {
                selector: 0x20,
                offset: 0,
                dma_address: 0
            }
        );
    }

    #[test]
    fn dma_reads_past_the_end_zero_fill() {
        let (mut d, ram) = device();
        poke(&ram, BUF, &[0xaa; 0x3000]);
        // 40-byte file, 0x2800 requested: the rest (more than one zero page) is zeroed.
        let ctl = dma(
            &mut d,
            &ram,
            DESC,
            0x21 << 16 | DMA_CTL_SELECT | DMA_CTL_READ,
            0x2800,
            BUF,
        );
        assert_eq!(ctl, 0);
        assert_eq!(peek(&ram, BUF, 40), (0u8..40).collect::<Vec<_>>());
        assert!(peek(&ram, BUF + 40, 0x2800 - 40).iter().all(|&b| b == 0));
        assert_eq!(peek(&ram, BUF + 0x2800, 0x800), vec![0xaa; 0x800]);
        assert_eq!(d.state().offset, 40);
        // Skipping past the end is fine too.
        assert_eq!(dma(&mut d, &ram, DESC, DMA_CTL_SKIP, 100, 0), 0);
    }

    #[test]
    fn dma_with_bad_addresses_sets_the_error_bit() {
        let (mut d, ram) = device();
        // Buffer outside RAM.
        let ctl = dma(
            &mut d,
            &ram,
            DESC,
            0x22 << 16 | DMA_CTL_SELECT | DMA_CTL_READ,
            300,
            RAM as u64 - 100,
        );
        assert_eq!(ctl, DMA_CTL_ERROR);
        // Zero-filling outside RAM, and a buffer address that wraps around.
        let ctl = dma(&mut d, &ram, DESC, DMA_CTL_READ, 0xffff_ffff, BUF);
        assert_eq!(ctl, DMA_CTL_ERROR);
        let ctl = dma(
            &mut d,
            &ram,
            DESC,
            0x20 << 16 | DMA_CTL_SELECT | DMA_CTL_READ,
            33,
            u64::MAX - 3,
        );
        assert_eq!(ctl, DMA_CTL_ERROR);
        // A descriptor outside RAM: nothing to report into, nothing breaks.
        d.write(DMA_ADDRESS_HIGH, &1u32.to_be_bytes());
        d.write(DMA_ADDRESS_LOW, &0u32.to_be_bytes());
        d.write(DMA_ADDRESS_LOW, &(RAM as u32 - 8).to_be_bytes());
        d.write(DMA_ADDRESS_HIGH, &[0xff; 8]);
        // A descriptor straddling the end of RAM gets the error bit in its first word.
        let at = RAM as u64 - 8;
        poke(
            &ram,
            at,
            &(0x20u32 << 16 | DMA_CTL_SELECT | DMA_CTL_READ).to_be_bytes(),
        );
        d.write(DMA_ADDRESS_LOW, &(at as u32).to_be_bytes());
        assert_eq!(peek(&ram, at, 4), DMA_CTL_ERROR.to_be_bytes());
        // The device still works.
        assert_eq!(
            dma(
                &mut d,
                &ram,
                DESC,
                0x20 << 16 | DMA_CTL_SELECT | DMA_CTL_READ,
                9,
                BUF
            ),
            0
        );
        assert_eq!(&peek(&ram, BUF, 9), b"/pci@i0cf");
    }

    #[test]
    fn dma_writes_are_refused() {
        let (mut d, ram) = device();
        poke(&ram, BUF, &[0x55; 8]);
        let ctl = dma(
            &mut d,
            &ram,
            DESC,
            0x21 << 16 | DMA_CTL_SELECT | DMA_CTL_WRITE,
            8,
            BUF,
        );
        assert_eq!(ctl, DMA_CTL_ERROR);
        select(&mut d, 0x21);
        assert_eq!(read_bytes(&mut d, 3), [0, 1, 2]);
        // Past the end, or to no item at all, too.
        assert_eq!(
            dma(
                &mut d,
                &ram,
                DESC,
                0x7000 << 16 | DMA_CTL_SELECT | DMA_CTL_WRITE,
                8,
                BUF
            ),
            DMA_CTL_ERROR
        );
        // Data port writes are ignored.
        d.write(DATA, &[0x12]);
        select(&mut d, 0x21);
        assert_eq!(read_bytes(&mut d, 1), [0]);
    }

    #[test]
    fn stray_accesses_are_defined() {
        let (mut d, _) = device();
        let mut w = [0u8; 4];
        d.read(2, &mut w);
        assert_eq!(w, [0xff, 0xff, b'Q', b'E']);
        d.read(10, &mut w);
        assert_eq!(w, [b'F', b'G', 0xff, 0xff]);
        d.write(SELECTOR, &[1, 2, 3, 4]);
        d.write(2, &[1]);
        d.write(DMA_ADDRESS_HIGH, &[1, 2]);
        d.write(DMA_ADDRESS_LOW + 1, &[1, 2, 3, 4]);
        d.write(SELECTOR, &[]);
        assert_eq!(d.state(), FwCfgState::default());
        // A string read (`rep insb`) of the data port, which KVM delivers as one access: a
        // byte of data each.
        d.read(DATA, &mut w);
        assert_eq!(&w, b"QEMU");
        d.read(SELECTOR, &mut w[..2]);
        assert_eq!(w[..2], [0, 0], "past the end of the signature");
    }

    #[test]
    fn refuses_bad_configurations() {
        let ram = FakeRam::new(16);
        let new = |items: Vec<(u16, Vec<u8>)>, files: Vec<(String, Vec<u8>)>| {
            FwCfg::new(ram.clone(), items, files).err()
        };
        for key in [SIGNATURE, ID, FILE_DIR, FILE_FIRST, 0x3fff, 0x4005] {
            assert_eq!(
                new(vec![(key, vec![1])], vec![]),
                Some(FwCfgError::ReservedKey(key))
            );
        }
        assert_eq!(
            new(vec![(NB_CPUS, vec![1]), (NB_CPUS, vec![2])], vec![]),
            Some(FwCfgError::DuplicateKey(NB_CPUS))
        );
        let long = "x".repeat(56);
        assert_eq!(
            new(vec![], vec![(long.clone(), vec![])]),
            Some(FwCfgError::FileName(long))
        );
        assert_eq!(
            new(vec![], vec![(String::new(), vec![])]),
            Some(FwCfgError::FileName(String::new()))
        );
        assert_eq!(
            new(
                vec![],
                vec![
                    ("a".into(), vec![]),
                    ("b".into(), vec![]),
                    ("a".into(), vec![1])
                ]
            ),
            Some(FwCfgError::DuplicateFile("a".into()))
        );
        // 55 bytes is the longest name; arch items are fine.
        let ok = FwCfg::new(
            ram.clone(),
            vec![(E820_TABLE, vec![0; 4])],
            vec![("y".repeat(55), vec![1, 2])],
        )
        .unwrap();
        assert_eq!(ok.item(FILE_FIRST), Some(&[1u8, 2][..]));
    }

    #[test]
    fn state_round_trips_through_cbor() {
        let (mut d, _) = device();
        select(&mut d, 0x21);
        read_bytes(&mut d, 5);
        d.write(DMA_ADDRESS_HIGH, &7u32.to_be_bytes());
        let st = d.state();
        assert_eq!(
            st,
            FwCfgState {
                selector: 0x21,
                offset: 5,
                dma_address: 7 << 32
            }
        );
        let (mut e, _) = device();
        e.restore(&cbor_round_trip(&st));
        assert_eq!(e.state(), st);
        assert_eq!(read_bytes(&mut e, 2), [5, 6]);
        // Any restored values are safe.
        e.restore(&FwCfgState {
            selector: 0x21,
            offset: u32::MAX,
            dma_address: u64::MAX,
        });
        assert_eq!(read_bytes(&mut e, 2), [0, 0]);
        e.reset();
        assert_eq!(e.state(), FwCfgState::default());
        assert_eq!(read_bytes(&mut e, 4), b"QEMU");
    }
}
