use super::*;
use crate::bios::rom;
use crate::legacy::checksum;

const RAM_SIZES: [u64; 2] = [64 << 20, 6 << 30];
const CPUS: [u8; 3] = [1, 2, 254];

fn each_config(f: impl Fn(&LegacyConfig)) {
    for ram in RAM_SIZES {
        let layout = MemoryLayout::new(ram).unwrap();
        for cpus in CPUS {
            for (nics, lpt) in [(&[][..], false), (&[10, 11, 12, 13][..], true)] {
                f(&LegacyConfig {
                    cpus,
                    layout: &layout,
                    nic_slots: nics,
                    lpt,
                    uuid: *b"0123456789abcdef",
                });
            }
        }
    }
}

/// The ROM image with the tables written into it, as the VMM leaves guest RAM at 0xF0000.
fn rom_with_tables(tables: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut rom = rom::build();
    for (addr, bytes) in tables {
        let at = (addr - rom::ROM_BASE) as usize;
        rom[at..at + bytes.len()].copy_from_slice(bytes);
    }
    rom
}

#[test]
fn tables_lie_in_their_area_and_do_not_overlap() {
    each_config(|cfg| {
        let tables = legacy_tables(cfg);
        assert_eq!(tables.len(), 4);
        let mut spans: Vec<(u64, u64)> = tables
            .iter()
            .map(|(a, b)| (*a, *a + b.len() as u64))
            .collect();
        spans.sort_unstable();
        for (start, end) in &spans {
            assert!(
                *start >= TABLES_BASE && *end <= TABLES_LIMIT,
                "{start:#x}-{end:#x}"
            );
            assert!(start < end);
        }
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "{:#x?} overlaps {:#x?}", w[0], w[1]);
        }
        for (addr, _) in &tables[..3] {
            assert_eq!(addr % 16, 0, "{addr:#x} is not 16-byte aligned");
        }
        assert_eq!(
            tables[0].0, 0xf_8000,
            "the MP floating pointer opens the area"
        );
        assert_eq!(tables[3].0, 0xf_dfff);
    });
}

#[test]
fn the_rom_still_sums_to_zero() {
    each_config(|cfg| {
        let rom = rom_with_tables(&legacy_tables(cfg));
        assert_eq!(crate::legacy::byte_sum(&rom), 0);
    });
}

/// Scans F0000-FFFFF on 16-byte boundaries for `anchor` as operating systems do; returns the
/// offsets in the ROM.
fn scan(rom: &[u8], anchor: &[u8]) -> Vec<usize> {
    (0..rom.len())
        .step_by(16)
        .filter(|at| rom[*at..].starts_with(anchor))
        .collect()
}

#[test]
fn scanning_finds_each_anchor_once_with_a_valid_structure() {
    each_config(|cfg| {
        let rom = rom_with_tables(&legacy_tables(cfg));
        let mp = scan(&rom, b"_MP_");
        assert_eq!(mp.len(), 1);
        assert_eq!(checksum(&rom[mp[0]..mp[0] + 16]), 0);
        let config = u32::from_le_bytes(rom[mp[0] + 4..mp[0] + 8].try_into().unwrap()) as usize;
        let config = config - rom::ROM_BASE as usize;
        let len = usize::from(u16::from_le_bytes([rom[config + 4], rom[config + 5]]));
        assert_eq!(&rom[config..config + 4], b"PCMP");
        assert_eq!(checksum(&rom[config..config + len]), 0);

        let pir = scan(&rom, b"$PIR");
        assert_eq!(pir.len(), 1);
        let size = usize::from(u16::from_le_bytes([rom[pir[0] + 6], rom[pir[0] + 7]]));
        assert_eq!(size, 32 + 16 * cfg.interrupt_devices().len());
        assert_eq!(checksum(&rom[pir[0]..pir[0] + size]), 0);

        let sm = scan(&rom, b"_SM_");
        assert_eq!(sm.len(), 1);
        let ep = &rom[sm[0]..sm[0] + 0x1f];
        assert_eq!(checksum(ep), 0);
        assert_eq!(&ep[0x10..0x15], b"_DMI_");
        assert_eq!(checksum(&ep[0x10..0x1f]), 0);
        assert!(scan(&rom, b"_SM3_").is_empty());
    });
}

#[test]
fn interrupt_devices_are_the_piix4_and_the_nics() {
    let layout = MemoryLayout::new(64 << 20).unwrap();
    let cfg = LegacyConfig {
        cpus: 1,
        layout: &layout,
        nic_slots: &[12, 10],
        lpt: false,
        uuid: [0; 16],
    };
    assert_eq!(cfg.interrupt_devices(), [7, 10, 12]);
}

#[test]
#[should_panic(expected = "1 to 254 vCPUs")]
fn refuses_255_cpus() {
    let layout = MemoryLayout::new(64 << 20).unwrap();
    legacy_tables(&LegacyConfig {
        cpus: 255,
        layout: &layout,
        nic_slots: &[],
        lpt: false,
        uuid: [0; 16],
    });
}
