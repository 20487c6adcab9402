use super::*;
use arch::layout::{
    COM1_PORT, FOUR_GIB, I8042_CMD_PORT, IOAPIC_PINS, LPT1_PORT, PIRQ_IRQS, SMBUS_IO_BASE,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn build_for(cpus: u8, ram: u64, lpt: bool) -> AcpiTables {
    let layout = MemoryLayout::new(ram).unwrap();
    build(&AcpiConfig {
        cpus,
        layout: &layout,
        lpt,
    })
    .unwrap()
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |s, x| s.wrapping_add(*x))
}

/// The image as guest memory: the bytes of `len` at guest-physical `addr`.
fn mem(t: &AcpiTables, addr: u64, len: usize) -> &[u8] {
    assert!(addr >= t.base, "{addr:#x} below the image");
    let off = (addr - t.base) as usize;
    assert!(
        off + len <= t.bytes.len(),
        "{addr:#x}+{len:#x} past the image"
    );
    &t.bytes[off..off + len]
}

/// The system description table at `addr`, checked: length within the image, checksum zero.
fn table(t: &AcpiTables, addr: u64) -> &[u8] {
    let len = u32_at(mem(t, addr, 36), 4) as usize;
    let b = mem(t, addr, len);
    assert_eq!(
        sum(b),
        0,
        "checksum of {}",
        String::from_utf8_lossy(&b[..4])
    );
    assert_eq!(&b[10..16], b"KETTLE");
    b
}

/// What an OS does: scan the 0xE0000-0xFFFFF window on 16-byte boundaries for a valid RSDP.
fn scan_rsdp(t: &AcpiTables) -> u64 {
    assert_eq!(t.base % 16, 0);
    (0..t.bytes.len().saturating_sub(20))
        .step_by(16)
        .find(|&off| &t.bytes[off..off + 8] == b"RSD PTR " && sum(&t.bytes[off..off + 20]) == 0)
        .map(|off| t.base + off as u64)
        .expect("no RSDP found")
}

/// The XSDT's entries, each checked as a table.
fn xsdt_entries(t: &AcpiTables) -> Vec<u64> {
    let rsdp = mem(t, t.rsdp_addr, 36);
    let xsdt = table(t, u64_at(rsdp, 24));
    assert_eq!(&xsdt[..4], b"XSDT");
    (36..xsdt.len())
        .step_by(8)
        .map(|o| u64_at(xsdt, o))
        .collect()
}

fn find(t: &AcpiTables, signature: &[u8; 4]) -> Vec<u8> {
    xsdt_entries(t)
        .into_iter()
        .map(|a| table(t, a))
        .find(|b| &b[..4] == signature)
        .unwrap_or_else(|| panic!("no {} in the XSDT", String::from_utf8_lossy(signature)))
        .to_vec()
}

fn dsdt(t: &AcpiTables) -> Vec<u8> {
    let fadt = find(t, b"FACP");
    let b = table(t, u64_at(&fadt, 140));
    assert_eq!(&b[..4], b"DSDT");
    b.to_vec()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The AML encoding of EISAID("PNPxxxx") as a DWordConst.
fn eisa_id(id: &str) -> Vec<u8> {
    let b = id.as_bytes();
    let v = ((u32::from(b[0] - 0x40) << 26)
        | (u32::from(b[1] - 0x40) << 21)
        | (u32::from(b[2] - 0x40) << 16)
        | u32::from_str_radix(&id[3..], 16).unwrap())
    .swap_bytes();
    // The crate encodes integers in the fewest bytes: PNP0000 fits a WordConst.
    match u16::try_from(v) {
        Ok(w) => [&[0x0b][..], &w.to_le_bytes()].concat(),
        Err(_) => [&[0x0c][..], &v.to_le_bytes()].concat(),
    }
}

#[test]
fn rsdp_is_found_by_scanning_and_is_valid() {
    let t = build_for(1, 256 * MIB, true);
    assert_eq!(t.base, ACPI_START);
    assert_eq!(t.rsdp_addr, ACPI_START);
    assert_eq!(scan_rsdp(&t), t.rsdp_addr);
    let r = mem(&t, t.rsdp_addr, 36);
    assert_eq!(sum(&r[..20]), 0, "ACPI 1.0 checksum");
    assert_eq!(sum(r), 0, "extended checksum");
    assert_eq!(&r[9..15], b"KETTLE");
    assert_eq!(r[15], 2, "revision");
    assert_eq!(u32_at(r, 20), 36, "length");
    let rsdt = table(&t, u64::from(u32_at(r, 16)));
    assert_eq!(&rsdt[..4], b"RSDT");
    let xsdt = table(&t, u64_at(r, 24));
    assert_eq!(&xsdt[..4], b"XSDT");
}

#[test]
fn rsdt_and_xsdt_list_the_fadt_and_madt() {
    let t = build_for(2, 512 * MIB, false);
    let r = mem(&t, t.rsdp_addr, 36);
    let rsdt = table(&t, u64::from(u32_at(r, 16)));
    let rsdt_entries: Vec<u64> = (36..rsdt.len())
        .step_by(4)
        .map(|o| u64::from(u32_at(rsdt, o)))
        .collect();
    let xsdt_entries = xsdt_entries(&t);
    assert_eq!(rsdt_entries, xsdt_entries);
    let sigs: Vec<[u8; 4]> = xsdt_entries
        .iter()
        .map(|&a| table(&t, a)[..4].try_into().unwrap())
        .collect();
    assert_eq!(sigs, [*b"FACP", *b"APIC"]);
}

#[test]
fn every_table_is_inside_the_reserved_window() {
    for (cpus, ram) in [(1, 16 * MIB), (4, 3 * GIB), (MAX_CPUS, 8 * GIB)] {
        let t = build_for(cpus, ram, true);
        assert!(t.bytes.len() as u64 <= ACPI_SIZE);
        let end = ACPI_START + ACPI_SIZE;
        let fadt = find(&t, b"FACP");
        let facs = u64::from(u32_at(&fadt, 36));
        let mut spans = vec![(t.rsdp_addr, 36u64), (facs, 64)];
        for a in xsdt_entries(&t) {
            spans.push((a, table(&t, a).len() as u64));
        }
        spans.push((u64_at(&fadt, 140), dsdt(&t).len() as u64));
        for (addr, len) in spans {
            assert!(
                addr >= ACPI_START && addr + len <= end,
                "{addr:#x}+{len:#x}"
            );
        }
    }
}

#[test]
fn fadt_describes_the_piix4_pm_block() {
    let t = build_for(1, 256 * MIB, true);
    let f = find(&t, b"FACP");
    assert_eq!(f.len(), 244);
    assert_eq!(f[8], 3, "revision");
    let pm = u32::from(PM_IO_BASE);

    assert_eq!(u16_at(&f, 46), SCI_IRQ as u16, "SCI_INT");
    assert_eq!(u32_at(&f, 48), 0, "SMI_CMD");
    assert_eq!((f[52], f[53]), (0, 0), "ACPI_ENABLE/DISABLE");
    assert_eq!(u32_at(&f, 56), pm, "PM1a_EVT_BLK");
    assert_eq!(u32_at(&f, 60), 0, "PM1b_EVT_BLK");
    assert_eq!(u32_at(&f, 64), pm + 4, "PM1a_CNT_BLK");
    assert_eq!(u32_at(&f, 68), 0, "PM1b_CNT_BLK");
    assert_eq!(u32_at(&f, 72), 0, "PM2_CNT_BLK");
    assert_eq!(u32_at(&f, 76), pm + 8, "PM_TMR_BLK");
    assert_eq!(u32_at(&f, 80), pm + 0xc, "GPE0_BLK");
    assert_eq!(u32_at(&f, 84), 0, "GPE1_BLK");
    assert_eq!(&f[88..94], &[4, 2, 0, 4, 4, 0], "block lengths");
    assert!(u16_at(&f, 96) > 100 && u16_at(&f, 98) > 1000, "no C2/C3");
    assert_eq!(f[108], 0x32, "CENTURY");
    assert_eq!(
        u16_at(&f, 109),
        0b11,
        "IAPC_BOOT_ARCH: LEGACY_DEVICES | 8042"
    );

    let flags = u32_at(&f, 112);
    let (wbinvd, proc_c1, slp_button, tmr_val_ext, reset_reg_sup) =
        (1 << 0, 1 << 2, 1 << 5, 1 << 8, 1 << 10);
    assert_eq!(
        flags,
        wbinvd | proc_c1 | slp_button | reset_reg_sup,
        "flags {flags:#x}"
    );
    assert_eq!(flags & tmr_val_ext, 0, "24-bit PM timer");

    // RESET_REG: system I/O, 8 bits at 0xCF9; RESET_VALUE 6.
    assert_eq!(f[116], 1);
    assert_eq!(f[117], 8);
    assert_eq!(u64_at(&f, 120), 0xcf9);
    assert_eq!(f[128], 6);

    // FACS through FIRMWARE_CTRL only, DSDT through both fields.
    let facs = u32_at(&f, 36);
    assert_eq!(u64_at(&f, 132), 0, "X_FIRMWARE_CTRL");
    assert_eq!(facs % 64, 0, "FACS alignment");
    let facs = mem(&t, u64::from(facs), 64);
    assert_eq!(&facs[..4], b"FACS");
    assert_eq!(u32_at(facs, 4), 64);
    assert_eq!(u64::from(u32_at(&f, 40)), u64_at(&f, 140), "DSDT == X_DSDT");

    // The X_ blocks agree with the 32-bit ones, bit width = 8 * length.
    for (x_off, port, len) in [
        (148, pm, 4u8),
        (172, pm + 4, 2),
        (208, pm + 8, 4),
        (220, pm + 0xc, 4),
    ] {
        assert_eq!(f[x_off], 1, "system I/O at {x_off}");
        assert_eq!(f[x_off + 1], len * 8, "bit width at {x_off}");
        assert_eq!(u64_at(&f, x_off + 4), u64::from(port), "address at {x_off}");
    }
    for x_off in [160, 184, 196, 232] {
        assert_eq!(&f[x_off..x_off + 12], &[0; 12], "unused block at {x_off}");
    }
}

/// MADT entries as (type, body).
fn madt_entries(m: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut off = 44;
    while off < m.len() {
        let (ty, len) = (m[off], m[off + 1] as usize);
        assert!(len >= 2 && off + len <= m.len());
        out.push((ty, m[off..off + len].to_vec()));
        off += len;
    }
    out
}

#[test]
fn madt_has_a_local_apic_per_cpu_the_ioapic_and_the_overrides() {
    for cpus in [1u8, 2, 4] {
        let t = build_for(cpus, 256 * MIB, true);
        let m = find(&t, b"APIC");
        assert_eq!(u32_at(&m, 36), LAPIC_ADDR as u32);
        assert_eq!(u32_at(&m, 40), 1, "PCAT_COMPAT");
        let entries = madt_entries(&m);
        assert_eq!(entries.len(), cpus as usize + 1 + 2 + 1);

        let lapics: Vec<_> = entries.iter().filter(|e| e.0 == 0).collect();
        assert_eq!(lapics.len(), cpus as usize);
        for (i, (_, e)) in lapics.iter().enumerate() {
            assert_eq!(e.len(), 8);
            assert_eq!((e[2], e[3]), (i as u8, i as u8), "ACPI id, APIC id");
            assert_eq!(u32_at(e, 4), 1, "enabled");
        }

        let ioapics: Vec<_> = entries.iter().filter(|e| e.0 == 1).collect();
        assert_eq!(ioapics.len(), 1);
        let io = &ioapics[0].1;
        assert_eq!(io.len(), 12);
        assert_eq!(io[2], cpus, "IOAPIC id");
        assert_eq!(u32_at(io, 4), IOAPIC_ADDR as u32);
        assert_eq!(u32_at(io, 8), 0, "GSI base");

        let isos: Vec<(u8, u8, u32, u16)> = entries
            .iter()
            .filter(|e| e.0 == 2)
            .map(|(_, e)| {
                assert_eq!(e.len(), 10);
                (e[2], e[3], u32_at(e, 4), u16_at(e, 8))
            })
            .collect();
        assert_eq!(isos, [(0, 0, 2, 0), (0, 9, 9, 0x000d)]);
        assert!(isos.iter().all(|iso| iso.2 < IOAPIC_PINS));

        let nmis: Vec<_> = entries.iter().filter(|e| e.0 == 4).collect();
        assert_eq!(nmis.len(), 1);
        assert_eq!(nmis[0].1, [4, 6, 0xff, 0, 0, 1], "all CPUs, LINT1");
    }
}

#[test]
fn cpu_counts_the_madt_cannot_express_are_refused() {
    let layout = MemoryLayout::new(256 * MIB).unwrap();
    for cpus in [0, 0xff] {
        let cfg = AcpiConfig {
            cpus,
            layout: &layout,
            lpt: false,
        };
        assert_eq!(build(&cfg), Err(AcpiError::CpuCount(cpus)));
    }
    let t = build_for(MAX_CPUS, 256 * MIB, false);
    let m = find(&t, b"APIC");
    assert_eq!(madt_entries(&m).len(), MAX_CPUS as usize + 4);
}

#[test]
fn dsdt_names_the_platform_devices() {
    let t = build_for(2, 256 * MIB, true);
    let d = dsdt(&t);
    assert_eq!(d[8], 1, "revision 1: 32-bit integers");
    for name in [
        "_S5_", "_PIC", "PICM", "_PR_", "C000", "C001", "_SB_", "PCI0", "_PRT", "_CRS", "_BBN",
        "ISA_", "PIC_", "TMR_", "RTC_", "KBD_", "MOU_", "COM1", "COM2", "LPT1", "FPU_", "SYSR",
    ] {
        assert!(contains(&d, name.as_bytes()), "{name} missing");
    }
    assert!(!contains(&d, b"C002"));
    for hid in [
        "PNP0A03", "PNP0000", "PNP0100", "PNP0B00", "PNP0303", "PNP0F13", "PNP0501", "PNP0400",
        "PNP0C04", "PNP0C02",
    ] {
        assert!(contains(&d, &eisa_id(hid)), "{hid} missing");
    }
    // COM1: IO(Decode16, 0x3F8, 0x3F8, 1, 8), IRQNoFlags() {4}.
    let [lo, hi] = COM1_PORT.to_le_bytes();
    assert!(contains(
        &d,
        &[0x47, 1, lo, hi, lo, hi, 1, 8, 0x22, 0x10, 0x00]
    ));
    // The keyboard's command port, the PM and SMBus blocks.
    let [lo, hi] = I8042_CMD_PORT.to_le_bytes();
    assert!(contains(
        &d,
        &[0x47, 1, lo, hi, lo, hi, 1, 1, 0x22, 0x02, 0x00]
    ));
    let [lo, hi] = PM_IO_BASE.to_le_bytes();
    assert!(contains(&d, &[0x47, 1, lo, hi, lo, hi, 1, 0x40]));
    let [lo, hi] = SMBUS_IO_BASE.to_le_bytes();
    assert!(contains(&d, &[0x47, 1, lo, hi, lo, hi, 1, 0x10]));
    // _S5_: Name(_S5_, Package(4) {Zero, Zero, Zero, Zero}).
    assert!(contains(
        &d,
        &[0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 4, 0, 0, 0, 0]
    ));
}

#[test]
fn lpt1_only_when_present() {
    let d = dsdt(&build_for(1, 256 * MIB, false));
    assert!(!contains(&d, b"LPT1"));
    assert!(!contains(&d, &eisa_id("PNP0400")));
    let [lo, hi] = LPT1_PORT.to_le_bytes();
    assert!(!contains(&d, &[0x47, 1, lo, hi]));
}

/// Decodes an AML integer (ZeroOp, OneOp, Byte/Word/DWord prefix) at `b[*pos]`.
fn aml_int(b: &[u8], pos: &mut usize) -> u32 {
    let op = b[*pos];
    *pos += 1;
    let width = match op {
        0x00 => return 0,
        0x01 => return 1,
        0x0a => 1,
        0x0b => 2,
        0x0c => 4,
        _ => panic!("not an integer: {op:#x} at {}", *pos - 1),
    };
    let mut v = [0u8; 4];
    v[..width].copy_from_slice(&b[*pos..*pos + width]);
    *pos += width;
    u32::from_le_bytes(v)
}

/// Skips a PkgLength at `b[*pos]`.
fn skip_pkg_length(b: &[u8], pos: &mut usize) {
    *pos += 1 + (b[*pos] >> 6) as usize;
}

#[test]
fn prt_swizzles_all_slots_onto_the_pirq_irqs() {
    let d = dsdt(&build_for(1, 256 * MIB, false));
    let at = d.windows(5).position(|w| w == b"\x08_PRT").expect("_PRT");
    let mut pos = at + 5;
    assert_eq!(d[pos], 0x12, "PackageOp");
    pos += 1;
    skip_pkg_length(&d, &mut pos);
    assert_eq!(d[pos], 128, "32 slots x 4 pins");
    pos += 1;
    for slot in 0..32u32 {
        for pin in 0..4u32 {
            assert_eq!(d[pos], 0x12);
            pos += 1;
            skip_pkg_length(&d, &mut pos);
            assert_eq!(d[pos], 4);
            pos += 1;
            let entry: Vec<u32> = (0..4).map(|_| aml_int(&d, &mut pos)).collect();
            let gsi = u32::from(PIRQ_IRQS[((slot + pin) % 4) as usize]);
            assert_eq!(
                entry,
                [slot << 16 | 0xffff, pin, 0, gsi],
                "slot {slot} pin {pin}"
            );
        }
    }
}

#[test]
fn pci_windows_follow_the_memory_layout() {
    // QWordMemory descriptor type 0x8A, memory resource type 0: its min and max.
    fn qword_window(d: &[u8]) -> Option<(u64, u64)> {
        let at = d.windows(4).position(|w| w == [0x8a, 0x2b, 0x00, 0x00])?;
        Some((u64_at(d, at + 14), u64_at(d, at + 22)))
    }
    fn dword_windows(d: &[u8]) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        for at in 0..d.len() - 26 {
            if d[at..at + 4] == [0x87, 0x17, 0x00, 0x00] {
                out.push((u32_at(d, at + 10), u32_at(d, at + 14)));
            }
        }
        out
    }

    let small = dsdt(&build_for(1, 256 * MIB, false));
    assert_eq!(
        dword_windows(&small),
        [(0xa_0000, 0xb_ffff), (256 << 20, 0xfebf_ffff)]
    );
    assert_eq!(qword_window(&small), None);

    let big = dsdt(&build_for(1, 6 * GIB, false));
    assert_eq!(
        dword_windows(&big),
        [(0xa_0000, 0xb_ffff), (0xe000_0000, 0xfebf_ffff)]
    );
    let high_top = FOUR_GIB + 6 * GIB - 0xe000_0000;
    let start = high_top.next_multiple_of(GIB);
    assert_eq!(qword_window(&big), Some((start, start + (32 << 30) - 1)));
}

/// Disassembles every table with ACPICA's `iasl` and recompiles the DSDT, failing on any error
/// or warning. Skipped, loudly, where iasl is not installed (Debian: `apt-get install
/// acpica-tools`).
#[test]
fn iasl_accepts_the_tables() {
    use std::io::Write;
    use std::process::Command;

    if Command::new("iasl").arg("-v").output().is_err() {
        // Straight to the stderr file descriptor, past the test harness's output capture.
        let _ = writeln!(
            std::io::stderr(),
            "\n*** iasl NOT FOUND: the ACPI tables were NOT checked with ACPICA's disassembler \
             (apt-get install acpica-tools) ***\n"
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("kettle-acpi-iasl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let t = build_for(2, 6 * GIB, true);
    let mut tables = vec![("dsdt", dsdt(&t))];
    tables.push(("facp", find(&t, b"FACP")));
    tables.push(("apic", find(&t, b"APIC")));
    let r = mem(&t, t.rsdp_addr, 36);
    tables.push(("xsdt", table(&t, u64_at(r, 24)).to_vec()));
    tables.push(("rsdt", table(&t, u64::from(u32_at(r, 16))).to_vec()));

    let run = |args: &[&str]| {
        let out = Command::new("iasl")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    for (name, bytes) in &tables {
        let file = format!("{name}.dat");
        std::fs::write(dir.join(&file), bytes).unwrap();
        let (ok, text) = run(&["-d", &file]);
        let dsl = std::fs::read_to_string(dir.join(format!("{name}.dsl"))).unwrap_or_default();
        // Skip the banner, which describes the header ("**** 32-bit table (V1)").
        let dsl = dsl.split_once("*/").map_or(dsl.as_str(), |(_, body)| body);
        assert!(ok, "iasl -d {name}:\n{text}");
        for bad in ["Error", "Warning", "**** "] {
            assert!(!text.contains(bad), "iasl -d {name}:\n{text}");
            assert!(!dsl.contains(bad), "{name}.dsl:\n{dsl}");
        }
    }
    // Recompiling the disassembled DSDT runs iasl's semantic checks (resource descriptors,
    // predefined names, package shapes).
    // Two warnings are deliberate and expected:
    // 3168 "Legacy Processor() keyword": ACPI 1.0/2.0 OSes (Windows 2000-2003) only know
    //      Processor objects, not Device(ACPI0007);
    // 3073 "_HID and _ADR" on PCI0: what PC BIOSes (and QEMU) have always put there.
    const EXPECTED_WARNINGS: [&str; 2] = ["Warning  3168 ", "Warning  3073 "];
    let (ok, text) = run(&["-p", "dsdt-recompiled", "dsdt.dsl"]);
    assert!(ok && text.contains(" 0 Errors,"), "iasl dsdt.dsl:\n{text}");
    for line in text.lines() {
        let diagnostic = ["Error", "Warning", "Remark"]
            .iter()
            .any(|kind| line.starts_with(kind));
        assert!(
            !diagnostic || EXPECTED_WARNINGS.iter().any(|w| line.starts_with(w)),
            "iasl dsdt.dsl: unexpected diagnostic {line:?}:\n{text}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
