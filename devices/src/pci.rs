//! PCI bus 0 and PCI configuration mechanism #1 (ports 0xCF8-0xCFF), plus the PIIX4 Reset Control
//! register that shares the port range at 0xCF9.
//!
//! Follows the PCI Local Bus Specification 3.0, section 3.2.2.3.2 (configuration mechanism #1) and
//! section 6.1 (the type 0 configuration header); the 82443BX datasheet, section 3.2 (CONFADD at
//! 0CF8h, CONFDATA at 0CFCh); and the PIIX4 datasheet's "RC—Reset Control Register (IO)" at
//! 0CF9h.
//!
//! The pieces:
//! - [`PciFunction`]: what one function exposes: dword reads and byte/word/dword writes of its
//!   256-byte configuration space.
//! - [`ConfigSpace`]: a reusable 256-byte configuration space with per-byte writable and
//!   write-1-to-clear masks, so that read-only fields (IDs, class code) really are read-only.
//! - [`PciRoot`]: the functions on bus 0, by device and function number.
//! - [`PciConfigMech1`]: the [`BusDevice`] at 0xCF8 (length 8) that turns port accesses into
//!   configuration cycles, and implements the reset control register at 0xCF9.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::bus::{BusDevice, VmControl, VmRequest};

/// Register offsets and bit layouts of the type 0 configuration header and of mechanism #1.
pub mod spec {
    /// Bytes of configuration space a conventional PCI function has.
    pub const CONFIG_SPACE_SIZE: usize = 256;

    // Type 0 header (PCI 3.0 section 6.1).
    pub const VENDOR_ID: u16 = 0x00;
    pub const DEVICE_ID: u16 = 0x02;
    pub const COMMAND: u16 = 0x04;
    pub const STATUS: u16 = 0x06;
    pub const REVISION_ID: u16 = 0x08;
    pub const PROG_IF: u16 = 0x09;
    pub const SUBCLASS: u16 = 0x0a;
    pub const CLASS_CODE: u16 = 0x0b;
    pub const CACHE_LINE_SIZE: u16 = 0x0c;
    pub const LATENCY_TIMER: u16 = 0x0d;
    pub const HEADER_TYPE: u16 = 0x0e;
    pub const BIST: u16 = 0x0f;
    pub const BAR0: u16 = 0x10;
    pub const BAR_COUNT: usize = 6;
    pub const SUBSYSTEM_VENDOR_ID: u16 = 0x2c;
    pub const SUBSYSTEM_ID: u16 = 0x2e;
    pub const CAPABILITIES_POINTER: u16 = 0x34;
    pub const INTERRUPT_LINE: u16 = 0x3c;
    pub const INTERRUPT_PIN: u16 = 0x3d;

    // Command register bits.
    pub const COMMAND_IO_SPACE: u16 = 1 << 0;
    pub const COMMAND_MEMORY_SPACE: u16 = 1 << 1;
    pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
    pub const COMMAND_SPECIAL_CYCLES: u16 = 1 << 3;
    pub const COMMAND_PARITY_ERROR_RESPONSE: u16 = 1 << 6;
    pub const COMMAND_SERR_ENABLE: u16 = 1 << 8;
    pub const COMMAND_INTERRUPT_DISABLE: u16 = 1 << 10;

    // Status register bits.
    pub const STATUS_INTERRUPT: u16 = 1 << 3;
    pub const STATUS_CAPABILITIES_LIST: u16 = 1 << 4;
    /// DEVSEL timing "medium" (bits 10:9 = 01).
    pub const STATUS_DEVSEL_MEDIUM: u16 = 1 << 9;
    /// The error bits software clears by writing 1: master data parity error (8), signaled target
    /// abort (11), received target abort (12), received master abort (13), signaled system error
    /// (14), detected parity error (15).
    pub const STATUS_ERRORS_W1C: u16 = 0xf900;

    /// Header type bit 7: the device has more than one function.
    pub const HEADER_TYPE_MULTIFUNCTION: u8 = 0x80;

    /// BAR bit 0: the BAR decodes I/O space.
    pub const BAR_IO_SPACE: u32 = 1;

    // Configuration mechanism #1, as offsets from 0xCF8.
    /// CONFIG_ADDRESS, dword access only.
    pub const CONFIG_ADDRESS: u64 = 0;
    /// CONFIG_DATA, bytes 0xCFC-0xCFF.
    pub const CONFIG_DATA: u64 = 4;
    /// The PIIX4 Reset Control register at 0xCF9, byte access only.
    pub const RESET_CONTROL: u64 = 1;
    /// Length of the port range the mechanism decodes.
    pub const CONFIG_PORTS_LEN: u64 = 8;

    /// CONFIG_ADDRESS bit 31: configuration cycles enabled.
    pub const CONFIG_ADDRESS_ENABLE: u32 = 1 << 31;
    /// The CONFIG_ADDRESS bits that are stored: enable, bus (23:16), device (15:11), function
    /// (10:8), register (7:2). Bits 30:24 are reserved and bits 1:0 read as 0.
    pub const CONFIG_ADDRESS_MASK: u32 = 0x80ff_fffc;

    // PIIX4 RC register bits.
    /// SRST, System Reset: 1 selects a hard reset (PCIRST#), 0 a soft reset (INIT).
    pub const RC_SYSTEM_RESET: u8 = 1 << 1;
    /// RCPU, Reset CPU: a 0->1 transition starts the reset SRST selects.
    pub const RC_RESET_CPU: u8 = 1 << 2;
}

/// One function of a PCI device as configuration cycles see it.
pub trait PciFunction: Send {
    /// Reads the dword at `offset`, a multiple of 4 below 256. Undefined registers read as 0.
    fn config_read(&mut self, offset: u16) -> u32;
    /// Writes 1, 2 or 4 bytes at `offset` (below 256); the write never crosses a dword boundary.
    /// Read-only bits are left unchanged.
    fn config_write(&mut self, offset: u16, data: &[u8]);
}

/// A function shared between bus 0 and its owner.
pub type SharedPciFunction = Arc<Mutex<dyn PciFunction>>;

/// A 256-byte configuration space with per-byte masks: `writable` bits take the written value,
/// `write_one_to_clear` bits are cleared by writing 1, every other bit is read-only (the device
/// itself changes them with the `set_*` methods).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigSpace {
    bytes: [u8; spec::CONFIG_SPACE_SIZE],
    writable: [u8; spec::CONFIG_SPACE_SIZE],
    write_one_to_clear: [u8; spec::CONFIG_SPACE_SIZE],
}

impl ConfigSpace {
    /// A type 0 header with the given identity and everything else zero and read-only.
    /// `class_code` is 0xCCSSPP: base class, subclass, programming interface.
    pub fn new(vendor_id: u16, device_id: u16, revision_id: u8, class_code: u32) -> Self {
        let mut c = Self {
            bytes: [0; spec::CONFIG_SPACE_SIZE],
            writable: [0; spec::CONFIG_SPACE_SIZE],
            write_one_to_clear: [0; spec::CONFIG_SPACE_SIZE],
        };
        c.set_u16(spec::VENDOR_ID, vendor_id);
        c.set_u16(spec::DEVICE_ID, device_id);
        c.set_u8(spec::REVISION_ID, revision_id);
        c.set_u8(spec::PROG_IF, class_code as u8);
        c.set_u8(spec::SUBCLASS, (class_code >> 8) as u8);
        c.set_u8(spec::CLASS_CODE, (class_code >> 16) as u8);
        c
    }

    /// The dword containing `offset` (the low two bits are ignored); 0 beyond 256.
    pub fn read_dword(&self, offset: u16) -> u32 {
        self.read_u32(offset & !3)
    }

    /// A guest write of `data` at `offset`, honouring the masks. Bytes beyond 256 are dropped.
    pub fn write(&mut self, offset: u16, data: &[u8]) {
        for (i, &v) in data.iter().enumerate() {
            let o = usize::from(offset) + i;
            if o >= spec::CONFIG_SPACE_SIZE {
                break;
            }
            let w = self.writable[o];
            let c = self.write_one_to_clear[o];
            self.bytes[o] = ((self.bytes[o] & !w) | (v & w)) & !(v & c);
        }
    }

    pub fn read_u8(&self, offset: u16) -> u8 {
        self.bytes.get(usize::from(offset)).copied().unwrap_or(0)
    }

    pub fn read_u16(&self, offset: u16) -> u16 {
        u16::from_le_bytes([self.read_u8(offset), self.read_u8(offset + 1)])
    }

    pub fn read_u32(&self, offset: u16) -> u32 {
        u32::from_le_bytes([
            self.read_u8(offset),
            self.read_u8(offset + 1),
            self.read_u8(offset + 2),
            self.read_u8(offset + 3),
        ])
    }

    /// Sets bytes as the device (not the guest) does: masks do not apply.
    pub fn set_bytes(&mut self, offset: u16, data: &[u8]) {
        for (i, &v) in data.iter().enumerate() {
            if let Some(b) = self.bytes.get_mut(usize::from(offset) + i) {
                *b = v;
            }
        }
    }

    pub fn set_u8(&mut self, offset: u16, value: u8) {
        self.set_bytes(offset, &[value]);
    }

    pub fn set_u16(&mut self, offset: u16, value: u16) {
        self.set_bytes(offset, &value.to_le_bytes());
    }

    pub fn set_u32(&mut self, offset: u16, value: u32) {
        self.set_bytes(offset, &value.to_le_bytes());
    }

    fn set_mask(mask: &mut [u8; spec::CONFIG_SPACE_SIZE], offset: u16, bits: &[u8]) {
        for (i, &v) in bits.iter().enumerate() {
            if let Some(b) = mask.get_mut(usize::from(offset) + i) {
                *b = v;
            }
        }
    }

    /// Makes the given bits of the byte at `offset` guest-writable (others become read-only).
    pub fn set_writable_u8(&mut self, offset: u16, mask: u8) {
        Self::set_mask(&mut self.writable, offset, &[mask]);
    }

    pub fn set_writable_u16(&mut self, offset: u16, mask: u16) {
        Self::set_mask(&mut self.writable, offset, &mask.to_le_bytes());
    }

    pub fn set_writable_u32(&mut self, offset: u16, mask: u32) {
        Self::set_mask(&mut self.writable, offset, &mask.to_le_bytes());
    }

    /// Makes the given bits of the word at `offset` write-1-to-clear (status registers).
    pub fn set_write_one_to_clear_u16(&mut self, offset: u16, mask: u16) {
        Self::set_mask(&mut self.write_one_to_clear, offset, &mask.to_le_bytes());
    }

    pub fn set_write_one_to_clear_u32(&mut self, offset: u16, mask: u32) {
        Self::set_mask(&mut self.write_one_to_clear, offset, &mask.to_le_bytes());
    }

    /// Declares BAR `index` as an I/O BAR of `size` bytes (a power of two, at least 4): bit 0
    /// reads 1 and the address bits above the size are writable, so that writing all ones reads
    /// back the size the way PCI 3.0 section 6.2.5.1 describes. All 32 address bits are
    /// writable, as QEMU's are: PCI allows hardwiring bits 31:16 to zero, but SeaBIOS sizes an
    /// I/O BAR from all 32 bits and takes such a BAR for a 4 GiB one (a guest can only reach
    /// ports below 64 KiB either way).
    pub fn add_io_bar(&mut self, index: usize, size: u32) {
        let offset = Self::bar_offset(index);
        let size = size.max(4).next_power_of_two();
        self.set_u32(offset, spec::BAR_IO_SPACE);
        self.set_writable_u32(offset, !(size - 1));
    }

    /// Declares BAR `index` as a 32-bit memory BAR of `size` bytes (a power of two, at least 16).
    pub fn add_memory_bar(&mut self, index: usize, size: u32, prefetchable: bool) {
        let offset = Self::bar_offset(index);
        let size = size.max(16).next_power_of_two();
        self.set_u32(offset, if prefetchable { 1 << 3 } else { 0 });
        self.set_writable_u32(offset, !(size - 1));
    }

    /// The address BAR `index` holds, without its type bits.
    pub fn bar_address(&self, index: usize) -> u32 {
        let v = self.read_u32(Self::bar_offset(index));
        if v & spec::BAR_IO_SPACE != 0 {
            v & !0x3
        } else {
            v & !0xf
        }
    }

    fn bar_offset(index: usize) -> u16 {
        assert!(index < spec::BAR_COUNT, "BAR index {index} out of range");
        spec::BAR0 + 4 * index as u16
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.read_u16(spec::COMMAND)
    }

    /// The raw bytes, for saved state.
    pub fn bytes(&self) -> &[u8; spec::CONFIG_SPACE_SIZE] {
        &self.bytes
    }

    /// Replaces the raw bytes (restoring saved state); the masks are part of the device's fixed
    /// configuration and stay as they are.
    pub fn restore_bytes(&mut self, bytes: &[u8; spec::CONFIG_SPACE_SIZE]) {
        self.bytes = *bytes;
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciError {
    #[error("PCI slot 00:{device:02x}.{function} is already taken")]
    SlotTaken { device: u8, function: u8 },
    #[error("PCI address 00:{device:02x}.{function} is out of range (device < 32, function < 8)")]
    OutOfRange { device: u8, function: u8 },
}

/// PCI bus 0: the functions present, by device (0-31) and function (0-7).
#[derive(Default)]
pub struct PciRoot {
    functions: BTreeMap<u8, SharedPciFunction>,
}

impl PciRoot {
    pub fn new() -> Self {
        Self::default()
    }

    fn devfn(device: u8, function: u8) -> Result<u8, PciError> {
        if device < 32 && function < 8 {
            Ok(device << 3 | function)
        } else {
            Err(PciError::OutOfRange { device, function })
        }
    }

    /// Places `f` at `(device, function)` on bus 0.
    pub fn add(
        &mut self,
        (device, function): (u8, u8),
        f: SharedPciFunction,
    ) -> Result<(), PciError> {
        let devfn = Self::devfn(device, function)?;
        if self.functions.contains_key(&devfn) {
            return Err(PciError::SlotTaken { device, function });
        }
        self.functions.insert(devfn, f);
        Ok(())
    }

    /// The function at `(device, function)`, if any.
    pub fn get(&self, (device, function): (u8, u8)) -> Option<SharedPciFunction> {
        let devfn = Self::devfn(device, function).ok()?;
        self.functions.get(&devfn).cloned()
    }
}

/// Saved state of [`PciConfigMech1`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PciConfigMech1State {
    /// CONFIG_ADDRESS as last written (masked).
    pub config_address: u32,
    /// The PIIX4 RC register (only SRST is remembered).
    pub reset_control: u8,
}

/// Configuration mechanism #1 on ports 0xCF8-0xCFF, and the PIIX4 Reset Control register at
/// 0xCF9. Insert it on the I/O bus at 0xCF8 with length 8.
pub struct PciConfigMech1 {
    // Runtime handles.
    root: Arc<Mutex<PciRoot>>,
    control: Arc<dyn VmControl>,
    // Guest-visible state.
    config_address: u32,
    reset_control: u8,
}

impl PciConfigMech1 {
    pub fn new(root: Arc<Mutex<PciRoot>>, control: Arc<dyn VmControl>) -> Self {
        Self {
            root,
            control,
            config_address: 0,
            reset_control: 0,
        }
    }

    pub fn state(&self) -> PciConfigMech1State {
        PciConfigMech1State {
            config_address: self.config_address,
            reset_control: self.reset_control,
        }
    }

    pub fn restore(&mut self, state: &PciConfigMech1State) {
        self.config_address = state.config_address & spec::CONFIG_ADDRESS_MASK;
        self.reset_control = state.reset_control & spec::RC_SYSTEM_RESET;
    }

    /// The function CONFIG_ADDRESS selects and the dword register offset, or None when
    /// configuration cycles are disabled, the bus is not 0 or nothing is there.
    fn target(&self) -> Option<(SharedPciFunction, u16)> {
        let a = self.config_address;
        if a & spec::CONFIG_ADDRESS_ENABLE == 0 || (a >> 16) & 0xff != 0 {
            return None;
        }
        let device = ((a >> 11) & 0x1f) as u8;
        let function = ((a >> 8) & 0x7) as u8;
        // Clone the handle and release the root before touching the function: a function may
        // remap I/O ranges from inside its config write.
        let f = self.root.lock().unwrap().get((device, function))?;
        Some((f, (a & 0xfc) as u16))
    }

    fn read_data(&self, byte: usize, data: &mut [u8]) {
        data.fill(0xff);
        let Some((f, register)) = self.target() else {
            return;
        };
        let dword = f.lock().unwrap().config_read(register).to_le_bytes();
        // An access that runs past 0xCFF (a word at 0xCFF) gets all ones for the excess.
        for (d, s) in data.iter_mut().zip(dword.iter().skip(byte)) {
            *d = *s;
        }
    }

    fn write_data(&self, byte: usize, data: &[u8]) {
        let Some((f, register)) = self.target() else {
            return;
        };
        let n = data.len().min(4 - byte);
        f.lock()
            .unwrap()
            .config_write(register + byte as u16, &data[..n]);
    }

    fn write_reset_control(&mut self, value: u8) {
        // Bit 2 always reads 0, so any write with it set is a 0->1 transition. Both reset types
        // (soft INIT and hard PCIRST#) become a full machine reset here.
        self.reset_control = value & spec::RC_SYSTEM_RESET;
        if value & spec::RC_RESET_CPU != 0 {
            let kind = if value & spec::RC_SYSTEM_RESET != 0 {
                "hard"
            } else {
                "soft"
            };
            log::info!("guest requested a {kind} reset through port 0xcf9");
            self.control.request(VmRequest::Reset);
        }
    }
}

impl BusDevice for PciConfigMech1 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (offset, data.len()) {
            (spec::CONFIG_ADDRESS, 4) => data.copy_from_slice(&self.config_address.to_le_bytes()),
            (spec::RESET_CONTROL, 1) => data[0] = self.reset_control,
            (4..=7, _) => self.read_data((offset - spec::CONFIG_DATA) as usize, data),
            _ => {
                // Byte and word reads of 0xCF8-0xCFB other than the RC register reach nothing
                // (Linux's type 2 probe relies on these not reading back as written).
                data.fill(0xff);
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (spec::CONFIG_ADDRESS, 4) => {
                let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                self.config_address = v & spec::CONFIG_ADDRESS_MASK;
            }
            (spec::RESET_CONTROL, 1) => self.write_reset_control(data[0]),
            (4..=7, _) => self.write_data((offset - spec::CONFIG_DATA) as usize, data),
            _ => {
                // Linux's type 1 probe writes a byte to 0xCFB; PIIX4 ignores such writes.
                log::debug!(
                    "ignored {}-byte write of {:02x?} to port {:#x}",
                    data.len(),
                    data,
                    0xcf8 + offset
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::testing::FakeControl;
    use crate::bus::Bus;
    use crate::testing::cbor_round_trip;

    /// A function built on ConfigSpace with one writable scratch dword at 0x40, a W1C status
    /// register and an I/O BAR.
    struct Dummy(ConfigSpace);

    impl Dummy {
        fn new() -> Self {
            let mut c = ConfigSpace::new(0x1234, 0x5678, 0x9a, 0x01_02_03);
            c.set_writable_u32(0x40, 0xffff_ffff);
            c.set_writable_u16(spec::COMMAND, spec::COMMAND_IO_SPACE);
            c.set_u16(spec::STATUS, 0x8000 | spec::STATUS_DEVSEL_MEDIUM);
            c.set_write_one_to_clear_u16(spec::STATUS, spec::STATUS_ERRORS_W1C);
            c.add_io_bar(4, 16);
            Self(c)
        }
    }

    impl PciFunction for Dummy {
        fn config_read(&mut self, offset: u16) -> u32 {
            self.0.read_dword(offset)
        }
        fn config_write(&mut self, offset: u16, data: &[u8]) {
            self.0.write(offset, data)
        }
    }

    fn machine() -> (Bus, Arc<FakeControl>) {
        let mut root = PciRoot::new();
        root.add((0, 0), Arc::new(Mutex::new(Dummy::new())))
            .unwrap();
        root.add((7, 3), Arc::new(Mutex::new(Dummy::new())))
            .unwrap();
        let control = Arc::new(FakeControl::default());
        let mech = PciConfigMech1::new(Arc::new(Mutex::new(root)), control.clone());
        let bus = Bus::new();
        bus.insert(0xcf8, spec::CONFIG_PORTS_LEN, Arc::new(Mutex::new(mech)))
            .unwrap();
        (bus, control)
    }

    fn address(bus: &Bus, dev: u32, func: u32, reg: u32) {
        let a = 0x8000_0000 | dev << 11 | func << 8 | reg;
        bus.write(0xcf8, &a.to_le_bytes());
    }

    fn inl(bus: &Bus, port: u64) -> u32 {
        let mut d = [0; 4];
        bus.read(port, &mut d);
        u32::from_le_bytes(d)
    }

    fn inw(bus: &Bus, port: u64) -> u16 {
        let mut d = [0; 2];
        bus.read(port, &mut d);
        u16::from_le_bytes(d)
    }

    fn inb(bus: &Bus, port: u64) -> u8 {
        let mut d = [0; 1];
        bus.read(port, &mut d);
        d[0]
    }

    #[test]
    fn config_address_reads_back_with_low_bits_clear() {
        let (bus, _) = machine();
        bus.write(0xcf8, &0x8000_0843u32.to_le_bytes());
        assert_eq!(inl(&bus, 0xcf8), 0x8000_0840);
        // Linux's pci_check_type1: save, write 0x80000000, read it back.
        bus.write(0xcf8, &0x8000_0000u32.to_le_bytes());
        assert_eq!(inl(&bus, 0xcf8), 0x8000_0000);
    }

    #[test]
    fn reads_ids_and_absent_functions_read_all_ones() {
        let (bus, _) = machine();
        address(&bus, 0, 0, 0);
        assert_eq!(inl(&bus, 0xcfc), 0x5678_1234);
        assert_eq!(inw(&bus, 0xcfe), 0x5678);
        assert_eq!(inb(&bus, 0xcfd), 0x12);
        address(&bus, 0, 0, 8);
        assert_eq!(inl(&bus, 0xcfc), 0x0102_039a);
        address(&bus, 7, 3, 0);
        assert_eq!(inw(&bus, 0xcfc), 0x1234);
        address(&bus, 1, 0, 0);
        assert_eq!(inl(&bus, 0xcfc), 0xffff_ffff);
        // Bus 1 does not exist even for device 0.
        bus.write(0xcf8, &0x8001_0000u32.to_le_bytes());
        assert_eq!(inl(&bus, 0xcfc), 0xffff_ffff);
        // With the enable bit clear the data port reaches nothing.
        bus.write(0xcf8, &0x0000_0000u32.to_le_bytes());
        assert_eq!(inl(&bus, 0xcfc), 0xffff_ffff);
    }

    #[test]
    fn byte_and_word_writes_at_any_offset_respect_masks() {
        let (bus, _) = machine();
        address(&bus, 0, 0, 0x40);
        bus.write(0xcfc, &0x1122_3344u32.to_le_bytes());
        assert_eq!(inl(&bus, 0xcfc), 0x1122_3344);
        bus.write(0xcfe, &[0xaa]);
        assert_eq!(inl(&bus, 0xcfc), 0x11aa_3344);
        bus.write(0xcfd, &0xbbccu16.to_le_bytes());
        assert_eq!(inl(&bus, 0xcfc), 0x11bb_cc44);
        assert_eq!(inw(&bus, 0xcfd), 0xbbcc);
        // A word at 0xCFF only has one byte inside the dword.
        bus.write(0xcff, &0x5566u16.to_le_bytes());
        assert_eq!(inl(&bus, 0xcfc), 0x66bb_cc44);
        assert_eq!(inw(&bus, 0xcff), 0xff66);
        // Read-only: the IDs.
        address(&bus, 0, 0, 0);
        bus.write(0xcfc, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(inl(&bus, 0xcfc), 0x5678_1234);
    }

    #[test]
    fn status_errors_are_write_one_to_clear() {
        let (bus, _) = machine();
        address(&bus, 0, 0, 4);
        assert_eq!(inl(&bus, 0xcfc), 0x8200_0000);
        // Writing 0 changes nothing; writing 1 to bit 15 clears it; DEVSEL is read-only.
        bus.write(0xcfe, &0x0000u16.to_le_bytes());
        assert_eq!(inw(&bus, 0xcfe), 0x8200);
        bus.write(0xcfe, &0xffffu16.to_le_bytes());
        assert_eq!(inw(&bus, 0xcfe), 0x0200);
        // Command: only I/O space is writable.
        bus.write(0xcfc, &0xffffu16.to_le_bytes());
        assert_eq!(inw(&bus, 0xcfc), 0x0001);
    }

    #[test]
    fn io_bar_reports_its_size() {
        let mut c = Dummy::new().0;
        assert_eq!(c.read_dword(0x20), 1);
        c.write(0x20, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(c.read_dword(0x20), 0xffff_fff1);
        c.write(0x20, &0xc001u32.to_le_bytes());
        assert_eq!(c.bar_address(4), 0xc000);
        let mut m = ConfigSpace::new(1, 2, 0, 0);
        m.add_memory_bar(1, 0x1000, false);
        m.write(0x14, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(m.read_dword(0x14), 0xffff_f000);
    }

    #[test]
    fn non_dword_accesses_to_the_address_port_are_ignored() {
        let (bus, control) = machine();
        address(&bus, 0, 0, 0x40);
        // Linux's type 1 probe writes 0x01 to 0xCFB; the address must survive.
        bus.write(0xcfb, &[0x01]);
        bus.write(0xcf8, &[0x00]);
        bus.write(0xcfa, &0u16.to_le_bytes());
        assert_eq!(inl(&bus, 0xcf8), 0x8000_0040);
        assert_eq!(inb(&bus, 0xcf8), 0xff);
        assert_eq!(inb(&bus, 0xcfa), 0xff);
        assert_eq!(inw(&bus, 0xcf8), 0xffff);
        assert!(control.requests.lock().unwrap().is_empty());
    }

    #[test]
    fn reset_control_register_resets_on_rcpu() {
        let (bus, control) = machine();
        assert_eq!(inb(&bus, 0xcf9), 0);
        // Linux reboot=pci: cf9 |= 2, then cf9 |= 6.
        bus.write(0xcf9, &[0x02]);
        assert_eq!(inb(&bus, 0xcf9), 0x02);
        assert!(control.requests.lock().unwrap().is_empty());
        bus.write(0xcf9, &[0x06]);
        assert_eq!(*control.requests.lock().unwrap(), vec![VmRequest::Reset]);
        // RCPU reads back as 0; SRST stays.
        assert_eq!(inb(&bus, 0xcf9), 0x02);
        // A soft reset (SRST 0) resets the machine too.
        bus.write(0xcf9, &[0x04]);
        assert_eq!(control.requests.lock().unwrap().len(), 2);
        assert_eq!(inb(&bus, 0xcf9), 0x00);
    }

    #[test]
    fn root_refuses_taken_and_invalid_slots() {
        let mut root = PciRoot::new();
        root.add((3, 0), Arc::new(Mutex::new(Dummy::new())))
            .unwrap();
        assert_eq!(
            root.add((3, 0), Arc::new(Mutex::new(Dummy::new()))).err(),
            Some(PciError::SlotTaken {
                device: 3,
                function: 0
            })
        );
        assert_eq!(
            root.add((32, 0), Arc::new(Mutex::new(Dummy::new()))).err(),
            Some(PciError::OutOfRange {
                device: 32,
                function: 0
            })
        );
        assert!(root.get((3, 0)).is_some());
        assert!(root.get((3, 1)).is_none());
    }

    #[test]
    fn state_round_trips() {
        let control: Arc<FakeControl> = Arc::new(FakeControl::default());
        let mut m = PciConfigMech1::new(Arc::new(Mutex::new(PciRoot::new())), control.clone());
        m.write(0, &0x8000_3804u32.to_le_bytes());
        m.write(1, &[0x02]);
        let s = m.state();
        let mut n = PciConfigMech1::new(Arc::new(Mutex::new(PciRoot::new())), control);
        n.restore(&s);
        assert_eq!(n.state(), s);
        assert_eq!(s.config_address, 0x8000_3804);
    }

    #[test]
    fn state_round_trips_through_cbor() {
        // Two machines with the same function at 00:07.3, scratch register 40h written.
        let mech = || {
            let f = Arc::new(Mutex::new(Dummy::new()));
            f.lock()
                .unwrap()
                .config_write(0x40, &0xdead_beefu32.to_le_bytes());
            let mut root = PciRoot::new();
            root.add((7, 3), f).unwrap();
            let control = Arc::new(FakeControl::default());
            let m = PciConfigMech1::new(Arc::new(Mutex::new(root)), control.clone());
            (m, control)
        };
        let (mut m, control_m) = mech();
        m.write(0, &(0x8000_0000u32 | 7 << 11 | 3 << 8 | 0x40).to_le_bytes());
        m.write(1, &[spec::RC_SYSTEM_RESET]);
        let st = m.state();
        let (mut n, control_n) = mech();
        n.restore(&cbor_round_trip(&st));
        assert_eq!(n.state(), st);
        // The next data access reaches the same register on both.
        let read = |d: &mut PciConfigMech1| {
            let mut b = [0u8; 4];
            d.read(spec::CONFIG_DATA, &mut b);
            u32::from_le_bytes(b)
        };
        assert_eq!(read(&mut n), 0xdead_beef);
        assert_eq!(read(&mut m), 0xdead_beef);
        // RCPU with the restored SRST asks for a hard reset on both.
        for d in [&mut m, &mut n] {
            d.write(1, &[spec::RC_SYSTEM_RESET | spec::RC_RESET_CPU]);
        }
        assert_eq!(*control_m.requests.lock().unwrap(), vec![VmRequest::Reset]);
        assert_eq!(*control_n.requests.lock().unwrap(), vec![VmRequest::Reset]);
    }
}
