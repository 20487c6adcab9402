//! The e820 memory map handed to the guest (boot_params, PVH memmap, later INT 15h E820),
//! derived from the one [`MemoryLayout`].

use crate::layout::{MemoryLayout, RegionKind};

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// The e820 entries for `layout`, ascending, plus the reserved ranges in the PCI hole that hold
/// the IOAPIC, LAPIC and the BIOS alias below 4 GiB.
pub fn entries(layout: &MemoryLayout) -> Vec<E820Entry> {
    let mut v: Vec<E820Entry> = Vec::new();
    for r in &layout.regions {
        let kind = match r.kind {
            RegionKind::Ram => E820_RAM,
            RegionKind::Reserved => E820_RESERVED,
        };
        // Merge with a preceding adjacent entry of the same kind.
        if let Some(last) = v.last_mut() {
            if last.kind == kind && last.addr + last.size == r.start {
                last.size += r.size;
                continue;
            }
        }
        v.push(E820Entry {
            addr: r.start,
            size: r.size,
            kind,
        });
    }
    // IOAPIC..4 GiB: IOAPIC, HPET-less gap, LAPIC and the BIOS ROM alias at the top.
    v.push(E820Entry {
        addr: crate::layout::IOAPIC_ADDR,
        size: crate::layout::FOUR_GIB - crate::layout::IOAPIC_ADDR,
        kind: E820_RESERVED,
    });
    v.sort_by_key(|e| e.addr);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::*;

    #[test]
    fn map_for_small_guest() {
        let e = entries(&MemoryLayout::new(128 << 20).unwrap());
        assert_eq!(
            e[0],
            E820Entry {
                addr: 0,
                size: EBDA_START,
                kind: E820_RAM
            }
        );
        assert_eq!(
            e[1],
            E820Entry {
                addr: EBDA_START,
                size: LEGACY_WINDOW_START - EBDA_START,
                kind: E820_RESERVED
            }
        );
        assert_eq!(
            e[2],
            E820Entry {
                addr: BIOS_AREA_START,
                size: BIOS_AREA_SIZE,
                kind: E820_RESERVED
            }
        );
        assert_eq!(
            e[3],
            E820Entry {
                addr: HIGH_MEMORY_START,
                size: (128 << 20) - HIGH_MEMORY_START,
                kind: E820_RAM
            }
        );
        assert_eq!(e[4].addr, IOAPIC_ADDR);
        let ram: u64 = e
            .iter()
            .filter(|x| x.kind == E820_RAM)
            .map(|x| x.size)
            .sum();
        assert_eq!(ram, (128 << 20) - (HIGH_MEMORY_START - EBDA_START));
    }

    #[test]
    fn map_for_big_guest_ends_above_4g() {
        let e = entries(&MemoryLayout::new(5 << 30).unwrap());
        let last = e.last().unwrap();
        assert_eq!(last.addr, FOUR_GIB);
        assert_eq!(last.size, (5 << 30) - PCI_HOLE_START);
    }
}
