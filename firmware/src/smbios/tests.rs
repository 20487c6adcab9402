use super::*;
use crate::legacy::checksum;
use std::path::PathBuf;
use std::process::Command;

const BASE: u64 = 0xf_8200;
const UUID: [u8; 16] = [
    0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
];
const UUID_TEXT: &str = "12345678-9ABC-DEF0-0123-456789ABCDEF";

fn build_for(cpus: u8, ram: u64, lpt: bool, base: u64) -> Vec<u8> {
    let layout = MemoryLayout::new(ram).unwrap();
    build(
        &LegacyConfig {
            cpus,
            layout: &layout,
            nic_slots: &[10],
            lpt,
            uuid: UUID,
        },
        base,
    )
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// One structure read back: formatted section and strings.
struct Parsed {
    formatted: Vec<u8>,
    strings: Vec<String>,
}

impl Parsed {
    fn kind(&self) -> u8 {
        self.formatted[0]
    }

    fn string(&self, at: usize) -> &str {
        let n = usize::from(self.formatted[at]);
        assert!(n > 0, "string {at:#x} of type {} is unset", self.kind());
        &self.strings[n - 1]
    }
}

/// Checks the entry point as Linux's `dmi_present` does and walks the table.
fn parse(bytes: &[u8], base: u64) -> Vec<Parsed> {
    let ep = &bytes[..0x1f];
    assert_eq!(&ep[..4], b"_SM_");
    assert_eq!(ep[5], 0x1f);
    assert!(ep[5] < 32, "Linux reads at most 32 bytes of it");
    assert_eq!(checksum(&ep[..usize::from(ep[5])]), 0);
    assert_eq!((ep[6], ep[7]), (2, 8));
    assert_eq!(&ep[0x10..0x15], b"_DMI_");
    assert_eq!(checksum(&ep[0x10..0x1f]), 0);
    assert_eq!(ep[0x1e], 0x28);
    let len = usize::from(u16_at(ep, 0x16));
    let at = (u64::from(u32_at(ep, 0x18)) - base) as usize;
    assert_eq!(at, 0x20);
    assert_eq!(at + len, bytes.len(), "the table ends the blob");
    let count = usize::from(u16_at(ep, 0x1c));
    let table = &bytes[at..];
    let mut out = Vec::new();
    let mut p = 0;
    let mut max = 0;
    while p < table.len() {
        let start = p;
        let flen = usize::from(table[p + 1]);
        assert!(flen >= 4);
        let formatted = table[p..p + flen].to_vec();
        p += flen;
        // Strings up to the double NUL.
        let mut strings = Vec::new();
        if table[p] == 0 {
            assert_eq!(
                table[p + 1],
                0,
                "a structure without strings ends with two NULs"
            );
            p += 2;
        } else {
            loop {
                let end = p + table[p..].iter().position(|b| *b == 0).unwrap();
                assert!(end > p, "empty string");
                strings.push(String::from_utf8(table[p..end].to_vec()).unwrap());
                p = end + 1;
                if table[p] == 0 {
                    p += 1;
                    break;
                }
            }
        }
        max = max.max(p - start);
        out.push(Parsed { formatted, strings });
    }
    assert_eq!(p, len);
    assert_eq!(out.len(), count);
    assert_eq!(usize::from(u16_at(ep, 8)), max, "maximum structure size");
    assert_eq!(
        out.last().unwrap().kind(),
        127,
        "the table ends with type 127"
    );
    // Handles are unique.
    let mut handles: Vec<u16> = out.iter().map(|s| u16_at(&s.formatted, 2)).collect();
    handles.sort_unstable();
    handles.dedup();
    assert_eq!(handles.len(), out.len(), "handles are unique");
    out
}

fn of_type(s: &[Parsed], kind: u8) -> Vec<&Parsed> {
    s.iter().filter(|p| p.kind() == kind).collect()
}

#[test]
fn tables_parse_for_every_shape() {
    for cpus in [1u8, 2, 254] {
        for ram in [64u64 << 20, 6 << 30] {
            for lpt in [false, true] {
                let s = parse(&build_for(cpus, ram, lpt, BASE), BASE);
                let kinds: Vec<u8> = s.iter().map(Parsed::kind).collect();
                let mut want = vec![0, 1, 3];
                want.extend(std::iter::repeat_n(4, usize::from(cpus)));
                want.extend([8, 8]);
                if lpt {
                    want.push(8);
                }
                want.extend([16, 17, 19]);
                if ram > 0xe000_0000 {
                    want.push(19);
                }
                want.extend([32, 127]);
                assert_eq!(kinds, want);
                let procs = of_type(&s, 4);
                for (n, p) in procs.iter().enumerate() {
                    assert_eq!(p.string(0x04), format!("CPU {n}"));
                    assert_eq!(p.formatted[0x18], 0x41, "populated, enabled");
                }
            }
        }
    }
}

#[test]
fn bios_and_system_say_kettle() {
    let s = parse(&build_for(1, 64 << 20, false, BASE), BASE);
    let bios = of_type(&s, 0)[0];
    assert_eq!(bios.formatted.len(), 0x18);
    assert_eq!(bios.string(0x04), "kettle");
    assert_eq!(bios.string(0x05), env!("CARGO_PKG_VERSION"));
    assert_eq!(bios.string(0x08), "11/01/2026");
    assert_eq!(u16_at(&bios.formatted, 0x06), 0xf000);
    let chars = u64_at(&bios.formatted, 0x0a);
    assert_ne!(chars & (1 << 7), 0, "PCI");
    assert_ne!(chars & (1 << 19), 0, "EDD");
    assert_eq!(chars & (1 << 11), 0, "not upgradeable");
    assert_eq!(bios.formatted[0x12], 0x01, "ACPI");
    assert_eq!(
        bios.formatted[0x13], 0x15,
        "BBS, targeted content, virtual machine"
    );
    let sys = of_type(&s, 1)[0];
    assert_eq!(sys.string(0x04), "kettle");
    assert_eq!(sys.string(0x05), "kettle VM");
    assert_eq!(
        &sys.formatted[0x08..0x18],
        &[
            0x78, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef
        ]
    );
    assert_eq!(of_type(&s, 3)[0].formatted[0x05], 0x01, "chassis: other");
}

#[test]
fn memory_is_one_device_of_the_ram_size() {
    for (ram, mib, ranges) in [
        (64u64 << 20, 64u32, vec![(0u64, (64u64 << 20) - 1)]),
        (
            6 << 30,
            6144,
            vec![
                (0, 0xdfff_ffff),
                (1 << 32, (1 << 32) + (6 << 30) - 0xe000_0000 - 1),
            ],
        ),
        (
            64 << 30,
            64 << 10,
            vec![
                (0, 0xdfff_ffff),
                (1 << 32, (1 << 32) + (64 << 30) - 0xe000_0000 - 1),
            ],
        ),
    ] {
        let s = parse(&build_for(2, ram, false, BASE), BASE);
        let array = of_type(&s, 16)[0];
        assert_eq!(u16_at(&array.formatted, 0x0d), 1);
        assert_eq!(u64::from(u32_at(&array.formatted, 0x07)), ram >> 10);
        let dev = of_type(&s, 17)[0];
        assert_eq!(u16_at(&dev.formatted, 0x04), 0x1000, "in the array");
        let size = u16_at(&dev.formatted, 0x0c);
        if mib < 0x7fff {
            assert_eq!(u32::from(size), mib);
        } else {
            assert_eq!(size, 0x7fff);
            assert_eq!(u32_at(&dev.formatted, 0x1c), mib, "extended size");
        }
        let mapped: Vec<(u64, u64)> = of_type(&s, 19)
            .iter()
            .map(|m| {
                let f = &m.formatted;
                (
                    u64::from(u32_at(f, 0x04)) << 10,
                    (u64::from(u32_at(f, 0x08)) << 10) | 0x3ff,
                )
            })
            .collect();
        assert_eq!(mapped, ranges);
    }
}

#[test]
fn large_addresses_use_the_extended_fields() {
    // 4 TiB and more above 4 GiB do not fit a KiB address in 32 bits.
    let m = array_mapped_address(1, 1 << 32, 5 << 40);
    assert_eq!(u32_at(&m, 0x04), 0xffff_ffff);
    assert_eq!(u32_at(&m, 0x08), 0xffff_ffff);
    assert_eq!(u64_at(&m, 0x0f), 1 << 32);
    assert_eq!(u64_at(&m, 0x17), (1 << 32) + (5 << 40) - 1);
    let a = memory_array(4 << 40);
    assert_eq!(u32_at(&a, 0x07), 0x8000_0000);
    assert_eq!(u64_at(&a, 0x0f), 4 << 40);
}

#[test]
fn uuid_goes_out_in_smbios_order() {
    let w = wire_uuid(UUID);
    assert_eq!(&w[..8], &[0x78, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde]);
    assert_eq!(&w[8..], &UUID[8..]);
}

// ---- dmidecode, an independent decoder ----

fn dmidecode() -> PathBuf {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin"] {
        let path = PathBuf::from(dir).join("dmidecode");
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "dmidecode is not installed, so the SMBIOS tables cannot be checked against an \
         independent decoder: install it (resources/setup.sh does, or `apt-get install \
         dmidecode`) and run the test again"
    );
}

/// Runs `dmidecode --from-dump` on the tables built at guest-physical 0: a dump file is the
/// entry point at offset 0 and the structure table at the offset the entry point gives (0x20).
fn decode(cpus: u8, ram: u64, lpt: bool) -> String {
    let dump = build_for(cpus, ram, lpt, 0);
    let path = std::env::temp_dir().join(format!(
        "kettle-smbios-{}-{cpus}-{ram}-{lpt}.bin",
        std::process::id()
    ));
    std::fs::write(&path, &dump).unwrap();
    let out = Command::new(dmidecode())
        .arg("--from-dump")
        .arg(&path)
        .output()
        .expect("dmidecode runs");
    std::fs::remove_file(&path).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dmidecode failed: {stderr}\n{stdout}");
    assert!(stderr.trim().is_empty(), "dmidecode complained: {stderr}");
    for bad in [
        "Invalid",
        "Wrong",
        "TRUNCATED",
        "BAD INDEX",
        "OUT OF SPEC",
        "Unknown Type",
    ] {
        assert!(!stdout.contains(bad), "dmidecode says {bad}:\n{stdout}");
    }
    stdout
}

#[test]
fn dmidecode_decodes_the_tables() {
    let text = decode(2, 64 << 20, true);
    assert!(text.contains("SMBIOS 2.8 present."), "{text}");
    assert!(text.contains("13 structures occupying"), "{text}");
    for kind in [0, 1, 3, 4, 8, 16, 17, 19, 32, 127] {
        assert!(
            text.contains(&format!("DMI type {kind},")),
            "type {kind}:\n{text}"
        );
    }
    for line in [
        "BIOS Information",
        "\tVendor: kettle",
        &format!("\tVersion: {}", env!("CARGO_PKG_VERSION")),
        "\tRelease Date: 11/01/2026",
        "\tROM Size: 64 kB",
        "\t\tPCI is supported",
        "\t\tACPI is supported",
        "\t\tBIOS boot specification is supported",
        "\t\tSystem is a virtual machine",
        "System Information",
        "\tManufacturer: kettle",
        "\tProduct Name: kettle VM",
        &format!("\tUUID: {}", UUID_TEXT.to_lowercase()),
        "\tWake-up Type: Power Switch",
        "\tFamily: Virtual Machine",
        "Chassis Information",
        "\tType: Other",
        "Processor Information",
        "\tSocket Designation: CPU 0",
        "\tSocket Designation: CPU 1",
        "\tStatus: Populated, Enabled",
        "\tInternal Reference Designator: LPT1",
        "Physical Memory Array",
        "\tMaximum Capacity: 64 MB",
        "Memory Device",
        "\tSize: 64 MB",
        "\tLocator: DIMM 0",
        "Memory Array Mapped Address",
        "\tStarting Address: 0x00000000000",
        "\tEnding Address: 0x00003FFFFFF",
        "System Boot Information",
        "\tStatus: No errors detected",
        "End Of Table",
    ] {
        assert!(text.contains(line), "missing {line:?}:\n{text}");
    }
}

#[test]
fn dmidecode_decodes_a_big_machine() {
    let text = decode(254, 6 << 30, false);
    assert!(text.contains("SMBIOS 2.8 present."), "{text}");
    assert_eq!(text.matches("Processor Information").count(), 254);
    assert!(text.contains("\tSocket Designation: CPU 253"));
    assert!(text.contains("\tSize: 6 GB"), "{text}");
    assert!(text.contains("\tStarting Address: 0x00100000000"), "{text}");
    assert!(text.contains("\tEnding Address: 0x0019FFFFFFF"), "{text}");
    assert!(!text.contains("LPT1"));
}
