//! The emulated PC's address map: one memory map shared by KVM memory slots, the e820 table and
//! the ACPI tables, plus the fixed I/O ports and interrupt lines of the platform devices.

/// Top of conventional memory usable by the OS; the last KiB below 640 KiB is the EBDA.
pub const EBDA_START: u64 = 0x9_fc00;
/// The legacy window: VGA memory 0xA0000-0xBFFFF (never RAM), option ROMs and BIOS to 1 MiB.
pub const LEGACY_WINDOW_START: u64 = 0xa_0000;
pub const VGA_END: u64 = 0xc_0000;
/// The BIOS area 0xE0000-0xFFFFF: RAM-backed, reserved in e820, holds the ACPI RSDP and tables.
pub const BIOS_AREA_START: u64 = 0xe_0000;
pub const BIOS_AREA_SIZE: u64 = 0x2_0000;
pub const HIGH_MEMORY_START: u64 = 0x10_0000;
/// Where guest RAM below 4 GiB stops at most: from here to 4 GiB is the PCI hole (MMIO, IOAPIC,
/// LAPIC, BIOS alias).
pub const PCI_HOLE_START: u64 = 0xe000_0000;
pub const FOUR_GIB: u64 = 0x1_0000_0000;

pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
pub const LAPIC_ADDR: u64 = 0xfee0_0000;

/// Where the ACPI tables live (inside the reserved BIOS area); the RSDP is at its start, in the
/// 0xE0000-0xFFFFF range that Linux scans.
pub const ACPI_START: u64 = BIOS_AREA_START;
pub const ACPI_SIZE: u64 = 0x1_0000;

// Fixed I/O ports.
pub const COM1_PORT: u16 = 0x3f8;
pub const COM2_PORT: u16 = 0x2f8;
pub const LPT1_PORT: u16 = 0x378;
pub const RTC_PORT: u16 = 0x70;
pub const I8042_DATA_PORT: u16 = 0x60;
pub const I8042_CMD_PORT: u16 = 0x64;
pub const POST_PORT: u16 = 0x80;
pub const PORT92: u16 = 0x92;
pub const PCI_CONFIG_PORT: u16 = 0xcf8;
/// The PIIX4 power-management I/O block (PMBA), as the firmware programs it; the FADT points here.
pub const PM_IO_BASE: u16 = 0x600;
pub const PM_IO_LEN: u16 = 0x40;
/// The PIIX4 SMBus I/O block (SMBBA).
pub const SMBUS_IO_BASE: u16 = 0x700;

// ISA interrupt lines.
pub const COM1_IRQ: u32 = 4;
pub const COM2_IRQ: u32 = 3;
pub const LPT1_IRQ: u32 = 7;
pub const RTC_IRQ: u32 = 8;
pub const KEYBOARD_IRQ: u32 = 1;
pub const MOUSE_IRQ: u32 = 12;
/// The ACPI system control interrupt of the PIIX4 PM function (level, active high).
pub const SCI_IRQ: u32 = 9;
/// The IRQs the PIIX4 PIRQA-D routing registers are programmed to by the firmware.
pub const PIRQ_IRQS: [u8; 4] = [10, 10, 11, 11];

/// Number of IOAPIC pins.
pub const IOAPIC_PINS: u32 = 24;

/// What one span of guest-physical address space is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// RAM the OS may use.
    Ram,
    /// RAM that the firmware keeps for itself (EBDA, BIOS area with the ACPI tables).
    Reserved,
}

/// One span of the memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub size: u64,
    pub kind: RegionKind,
}

impl Region {
    pub fn end(&self) -> u64 {
        self.start + self.size
    }
}

/// The guest's memory map for a given RAM size: which spans are backed by RAM and what e820
/// says of each. The same value feeds KVM memory slots, e820 and the ACPI tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryLayout {
    /// RAM the user asked for, in bytes.
    pub ram_size: u64,
    /// The spans of guest RAM, ascending, non-overlapping. Every byte here is backed by host memory.
    pub regions: Vec<Region>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("guest memory of {0} bytes is too small: kettle needs at least 16 MiB")]
    TooSmall(u64),
    #[error("guest memory size {0:#x} is not a multiple of 4 KiB")]
    Unaligned(u64),
}

/// Smallest guest kettle builds.
pub const MIN_RAM: u64 = 16 << 20;

impl MemoryLayout {
    pub fn new(ram_size: u64) -> Result<Self, LayoutError> {
        if ram_size < MIN_RAM {
            return Err(LayoutError::TooSmall(ram_size));
        }
        if !ram_size.is_multiple_of(4096) {
            return Err(LayoutError::Unaligned(ram_size));
        }
        let low_top = ram_size.min(PCI_HOLE_START);
        let mut regions = vec![
            Region {
                start: 0,
                size: EBDA_START,
                kind: RegionKind::Ram,
            },
            Region {
                start: EBDA_START,
                size: LEGACY_WINDOW_START - EBDA_START,
                kind: RegionKind::Reserved,
            },
            Region {
                start: BIOS_AREA_START,
                size: BIOS_AREA_SIZE,
                kind: RegionKind::Reserved,
            },
            Region {
                start: HIGH_MEMORY_START,
                size: low_top - HIGH_MEMORY_START,
                kind: RegionKind::Ram,
            },
        ];
        if ram_size > PCI_HOLE_START {
            regions.push(Region {
                start: FOUR_GIB,
                size: ram_size - PCI_HOLE_START,
                kind: RegionKind::Ram,
            });
        }
        Ok(Self { ram_size, regions })
    }

    /// Guest RAM between 1 MiB and the PCI hole (what CMOS bytes 0x30/0x34 and 0x5B report).
    pub fn low_ram_end(&self) -> u64 {
        self.ram_size.min(PCI_HOLE_START)
    }

    /// Guest RAM above 4 GiB, in bytes.
    pub fn high_ram_size(&self) -> u64 {
        self.ram_size.saturating_sub(PCI_HOLE_START)
    }

    /// Top of guest-physical RAM (exclusive).
    pub fn top(&self) -> u64 {
        self.regions.last().map(Region::end).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_has_no_high_memory() {
        let l = MemoryLayout::new(256 << 20).unwrap();
        assert_eq!(l.regions.len(), 4);
        assert_eq!(l.regions[3].end(), 256 << 20);
        assert_eq!(l.high_ram_size(), 0);
        assert_eq!(l.top(), 256 << 20);
    }

    #[test]
    fn big_guest_splits_around_the_pci_hole() {
        let l = MemoryLayout::new(6 << 30).unwrap();
        assert_eq!(l.regions[3].end(), PCI_HOLE_START);
        assert_eq!(l.regions[4].start, FOUR_GIB);
        assert_eq!(l.regions[4].size, (6 << 30) - PCI_HOLE_START);
        // Backed bytes: everything except the legacy window and the PCI hole's share.
        let backed: u64 = l.regions.iter().map(|r| r.size).sum();
        assert_eq!(backed, (6 << 30) - (BIOS_AREA_START - LEGACY_WINDOW_START));
    }

    #[test]
    fn refuses_tiny_and_unaligned() {
        assert_eq!(
            MemoryLayout::new(1 << 20),
            Err(LayoutError::TooSmall(1 << 20))
        );
        assert_eq!(
            MemoryLayout::new((64 << 20) + 1),
            Err(LayoutError::Unaligned((64 << 20) + 1))
        );
    }
}
