use super::*;
use crate::legacy::checksum;
use arch::layout::MemoryLayout;

const BASE: u64 = 0xf_8000;

fn build_for(cpus: u8, nics: &[u8]) -> Vec<u8> {
    let layout = MemoryLayout::new(64 << 20).unwrap();
    build(
        &LegacyConfig {
            cpus,
            layout: &layout,
            nic_slots: nics,
            lpt: true,
            uuid: [0; 16],
        },
        BASE,
    )
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// The configuration table's entries, parsed back as an OS does.
#[derive(Debug, Default)]
struct Parsed {
    cpus: Vec<(u8, u8)>,                     // (APIC ID, flags)
    buses: Vec<(u8, [u8; 6])>,               // (bus ID, type)
    ioapics: Vec<(u8, u8, u32)>,             // (ID, flags, address)
    io_ints: Vec<(u8, u16, u8, u8, u8, u8)>, // (type, flags, bus, irq, ioapic, pin)
    local_ints: Vec<(u8, u8, u8)>,           // (type, LAPIC, LINT)
    types: Vec<u8>,
}

/// Checks the floating pointer and the header as Linux's `smp_scan_config`/`smp_check_mpc`
/// do and parses the entries.
fn parse(bytes: &[u8], base: u64) -> Parsed {
    let fp = &bytes[..16];
    assert_eq!(&fp[..4], b"_MP_");
    assert_eq!(fp[8], 1, "length in paragraphs");
    assert_eq!(fp[9], 4, "MP 1.4");
    assert_eq!(checksum(fp), 0, "floating pointer checksum");
    assert_eq!(
        fp[11], 0,
        "feature byte 1: a configuration table is present"
    );
    assert_eq!(fp[12] & 0x80, 0, "virtual wire mode");
    let config_at = (u64::from(u32_at(fp, 4)) - base) as usize;
    assert_eq!(config_at, 16);
    let c = &bytes[config_at..];
    assert_eq!(&c[..4], b"PCMP");
    let len = usize::from(u16_at(c, 4));
    assert_eq!(config_at + len, bytes.len(), "the table ends the blob");
    let c = &c[..len];
    assert_eq!(c[6], 4);
    assert_eq!(checksum(c), 0, "configuration table checksum");
    assert_eq!(&c[8..16], b"KETTLE  ");
    assert_eq!(&c[16..28], b"KETTLEPC    ");
    assert_eq!(u32_at(c, 36), 0xfee0_0000);
    assert_eq!(u16_at(c, 40), 0, "no extended table");
    let count = usize::from(u16_at(c, 34));
    let mut p = Parsed::default();
    let mut at = 44;
    for _ in 0..count {
        let e = &c[at..];
        p.types.push(e[0]);
        match e[0] {
            0 => {
                assert_eq!(e[2], 0x14);
                p.cpus.push((e[1], e[3]));
                at += 20;
                continue;
            }
            1 => p.buses.push((e[1], e[2..8].try_into().unwrap())),
            2 => p.ioapics.push((e[1], e[3], u32_at(e, 4))),
            3 => p.io_ints.push((e[1], u16_at(e, 2), e[4], e[5], e[6], e[7])),
            4 => {
                assert_eq!(e[4], ISA_BUS_ID);
                p.local_ints.push((e[1], e[6], e[7]))
            }
            t => panic!("unknown entry type {t}"),
        }
        at += 8;
    }
    assert_eq!(at, len, "entries fill the table exactly");
    p
}

#[test]
fn entries_match_cpus_and_devices() {
    for (cpus, nics) in [(1u8, &[][..]), (2, &[10][..]), (254, &[10, 11, 12, 13][..])] {
        let p = parse(&build_for(cpus, nics), BASE);
        // Entries sorted by type, as the specification requires.
        assert!(p.types.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(p.cpus.len(), usize::from(cpus));
        for (i, (id, flags)) in p.cpus.iter().enumerate() {
            assert_eq!(usize::from(*id), i);
            assert_eq!(*flags, if i == 0 { 3 } else { 1 });
        }
        assert_eq!(p.buses, [(0, *b"PCI   "), (1, *b"ISA   ")]);
        assert_eq!(p.ioapics, [(cpus, 1, 0xfec0_0000)]);
        let isa: Vec<_> = p.io_ints.iter().filter(|i| i.2 == 1).collect();
        let pci: Vec<_> = p.io_ints.iter().filter(|i| i.2 == 0).collect();
        assert_eq!(isa.len(), 15);
        assert_eq!(pci.len(), 4 * (1 + nics.len()));
        for i in &p.io_ints {
            assert_eq!((i.0, i.4), (0, cpus), "INT to the IOAPIC");
        }
        assert_eq!(p.local_ints, [(3, 0xff, 0), (1, 0xff, 1)]);
    }
}

#[test]
fn isa_interrupts_mirror_the_madt() {
    let p = parse(&build_for(1, &[]), BASE);
    let isa: Vec<(u8, u8, u16)> = p
        .io_ints
        .iter()
        .filter(|i| i.2 == ISA_BUS_ID)
        .map(|i| (i.3, i.5, i.1))
        .collect();
    let mut want = vec![(0, 2, 0)];
    want.extend((3..16u8).map(|irq| (irq, irq, if irq == 9 { 0x0d } else { 0 })));
    want.insert(1, (1, 1, 0));
    assert_eq!(isa, want);
    // No two sources share a pin.
    let mut pins: Vec<u8> = isa.iter().map(|i| i.1).collect();
    pins.sort_unstable();
    pins.dedup();
    assert_eq!(pins.len(), isa.len());
}

#[test]
fn pci_interrupts_follow_the_prt_swizzle() {
    let p = parse(&build_for(2, &[10, 11, 12, 13]), BASE);
    let pci: Vec<(u8, u8, u16)> = p
        .io_ints
        .iter()
        .filter(|i| i.2 == PCI_BUS_ID)
        .map(|i| (i.3, i.5, i.1))
        .collect();
    let mut want = Vec::new();
    for device in [7u8, 10, 11, 12, 13] {
        for pin in 0..4u8 {
            let irq = PIRQ_IRQS[usize::from((device + pin) % 4)];
            want.push((device << 2 | pin, irq, 0));
        }
    }
    assert_eq!(pci, want);
    // INTA# of each NIC lands where the VMM delivers it (vmm::machine::pci_inta_gsi).
    for slot in [10u8, 11, 12, 13] {
        assert_eq!(pci_pin_irq(slot, 0), PIRQ_IRQS[usize::from(slot % 4)]);
    }
}

#[test]
fn table_length_grows_by_entry_sizes() {
    let one = build_for(1, &[]).len();
    let two = build_for(2, &[]).len();
    let nic = build_for(1, &[12]).len();
    assert_eq!(two - one, 20);
    assert_eq!(nic - one, 4 * 8);
    // Floating pointer, header, 1 CPU, 2 buses, IOAPIC, 15 ISA + 4 PIIX4 pins, 2 local.
    assert_eq!(one, 16 + 44 + 20 + 2 * 8 + 8 + 19 * 8 + 2 * 8);
    assert_eq!(
        build_for(254, &[10, 11, 12, 13]).len(),
        16 + 44 + 254 * 20 + 8 * (3 + 35 + 2)
    );
}
