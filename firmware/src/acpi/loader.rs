//! kettle's ACPI tables as QEMU hands its own to SeaBIOS: three fw_cfg files, and the firmware
//! places and links the tables itself.
//!
//! - [`RSDP_FILE`] ("etc/acpi/rsdp"): the RSDP alone, for the F segment where OSes scan for it.
//! - [`TABLES_FILE`] ("etc/acpi/tables"): every other table, laid out exactly as [`build`](super::build) lays
//!   them out after the RSDP, with each pointer field holding the offset of its target inside
//!   this file.
//! - [`LOADER_FILE`] ("etc/table-loader"): the BIOS linker/loader script, an array of 128-byte
//!   little-endian commands (QEMU `hw/acpi/bios-linker-loader.c`; executed by SeaBIOS
//!   `src/fw/romfile_loader.c` in order):
//!   - ALLOCATE (1): file name\[56\], alignment (LE32, a power of two), zone (u8: 1 = high
//!     memory, 2 = F segment): copy the file into memory of that zone.
//!   - ADD_POINTER (2): destination file\[56\], source file\[56\], offset (LE32), size (u8: 1, 2, 4
//!     or 8): add the source file's address to the little-endian integer at that offset of the
//!     destination file.
//!   - ADD_CHECKSUM (3): file\[56\], checksum offset, start, length (LE32 each): subtract the
//!     8-bit sum of the range from the byte at the checksum offset, which makes the range sum
//!     to zero.
//!
//! The script allocates both files, then patches every pointer, then fixes every checksum, so
//! no checksum is computed over a pointer that is still an offset. The checksum bytes in the
//! files are zero.
//!
//! Pointers and checksums are not listed by hand: the tables are built at a link base, walked
//! from the RSDP (RSDT and XSDT entries, the FADT's FIRMWARE_CTRL, DSDT, X_FIRMWARE_CTRL and
//! X_DSDT), and every pointer found is turned into an offset and an ADD_POINTER command.

use std::collections::BTreeSet;

use super::{build_at, spec, AcpiConfig, AcpiError};

/// fw_cfg file names, as QEMU (`include/hw/acpi/aml-build.h`) and SeaBIOS know them.
pub const RSDP_FILE: &str = "etc/acpi/rsdp";
pub const TABLES_FILE: &str = "etc/acpi/tables";
pub const LOADER_FILE: &str = "etc/table-loader";

/// The linker/loader command format (QEMU `hw/acpi/bios-linker-loader.c`).
pub mod command {
    /// Every command is this long: a LE32 command number and a 124-byte body.
    pub const LEN: usize = 128;
    /// File names are NUL-terminated inside 56 bytes.
    pub const FILE_NAME_LEN: usize = 56;

    pub const ALLOCATE: u32 = 1;
    pub const ADD_POINTER: u32 = 2;
    pub const ADD_CHECKSUM: u32 = 3;

    /// ALLOCATE zones.
    pub const ZONE_HIGH: u8 = 1;
    pub const ZONE_FSEG: u8 = 2;

    // Field offsets inside a command.
    pub const FILE: usize = 4;
    pub const ALLOCATE_ALIGN: usize = FILE + FILE_NAME_LEN;
    pub const ALLOCATE_ZONE: usize = ALLOCATE_ALIGN + 4;
    pub const POINTER_SRC_FILE: usize = FILE + FILE_NAME_LEN;
    pub const POINTER_OFFSET: usize = POINTER_SRC_FILE + FILE_NAME_LEN;
    pub const POINTER_SIZE: usize = POINTER_OFFSET + 4;
    pub const CHECKSUM_OFFSET: usize = FILE + FILE_NAME_LEN;
    pub const CHECKSUM_START: usize = CHECKSUM_OFFSET + 4;
    pub const CHECKSUM_LENGTH: usize = CHECKSUM_START + 4;
}

/// Field offsets the walk needs (ACPI 2.0c 5.2.4.3, 5.2.6, 5.2.7, 5.2.8).
mod field {
    pub const RSDP_RSDT_ADDRESS: usize = 16;
    pub const RSDP_XSDT_ADDRESS: usize = 24;
    pub const RSDP_EXTENDED_CHECKSUM: usize = 32;
    pub const RSDP_V1_CHECKSUM: usize = 8;
    pub const TABLE_LENGTH: usize = 4;
    pub const FADT_FIRMWARE_CTRL: usize = 36;
    pub const FADT_DSDT: usize = 40;
    pub const FADT_X_FIRMWARE_CTRL: usize = 132;
    pub const FADT_X_DSDT: usize = 140;
    /// A FADT shorter than this (ACPI 1.0) has no X_ fields.
    pub const FADT_X_FIELDS_END: usize = 148;
}

/// Where [`loader_files`] builds the tables before turning addresses into offsets: any 64-byte
/// aligned address below 4 GiB would do; a distinctive one makes a missed pointer obvious.
const LINK_BASE: u64 = 0x4b00_0000;

/// The three files, ready for the fw_cfg device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderFiles {
    /// [`RSDP_FILE`]
    pub rsdp: Vec<u8>,
    /// [`TABLES_FILE`]
    pub tables: Vec<u8>,
    /// [`LOADER_FILE`]
    pub loader: Vec<u8>,
}

impl LoaderFiles {
    /// The files as (name, contents) pairs.
    pub fn into_files(self) -> Vec<(String, Vec<u8>)> {
        vec![
            (RSDP_FILE.to_string(), self.rsdp),
            (TABLES_FILE.to_string(), self.tables),
            (LOADER_FILE.to_string(), self.loader),
        ]
    }
}

/// One pointer field: where it is and what it points at (an offset in [`TABLES_FILE`]).
struct Pointer {
    in_rsdp: bool,
    offset: usize,
    size: u8,
}

/// Builds the tables for `cfg` (the same tables as [`build`](super::build)) as the three fw_cfg files SeaBIOS
/// loads and links.
pub fn loader_files(cfg: &AcpiConfig) -> Result<LoaderFiles, AcpiError> {
    let image = build_at(cfg, LINK_BASE)?;
    let bytes = image.bytes;
    let fail = |what: String| AcpiError::Link(what);

    let mut rsdp = bytes[..spec::RSDP_LEN].to_vec();
    let rsdt = read_le(&rsdp, field::RSDP_RSDT_ADDRESS, 4);
    let xsdt = read_le(&rsdp, field::RSDP_XSDT_ADDRESS, 8);

    // Walk every table reachable from the RSDP, collecting the pointer fields (with their
    // targets) and the image offset of every table.
    let mut pointers = Vec::new();
    let mut tables = BTreeSet::new();
    let mut pending = Vec::new();
    for (offset, size, target) in [
        (field::RSDP_RSDT_ADDRESS, 4, rsdt),
        (field::RSDP_XSDT_ADDRESS, 8, xsdt),
    ] {
        pointers.push((
            Pointer {
                in_rsdp: true,
                offset,
                size,
            },
            target,
        ));
        pending.push(target);
    }
    while let Some(addr) = pending.pop() {
        let at = addr
            .checked_sub(LINK_BASE)
            .map(|o| o as usize)
            .filter(|&o| o >= spec::RSDP_LEN && o + spec::HEADER_LEN <= bytes.len())
            .ok_or_else(|| fail(format!("a pointer to {addr:#x} leaves the tables")))?;
        if !tables.insert(at) {
            continue;
        }
        let signature = &bytes[at..at + 4];
        let len = read_le(&bytes, at + field::TABLE_LENGTH, 4) as usize;
        if at + len > bytes.len() {
            return Err(fail(format!(
                "{} at {at:#x} runs past the end",
                String::from_utf8_lossy(signature)
            )));
        }
        let mut fields: Vec<(usize, u8)> = Vec::new();
        match signature {
            b"RSDT" => fields.extend((spec::HEADER_LEN..len).step_by(4).map(|o| (o, 4))),
            b"XSDT" => fields.extend((spec::HEADER_LEN..len).step_by(8).map(|o| (o, 8))),
            b"FACP" => {
                fields.extend([(field::FADT_FIRMWARE_CTRL, 4), (field::FADT_DSDT, 4)]);
                if len >= field::FADT_X_FIELDS_END {
                    fields.extend([(field::FADT_X_FIRMWARE_CTRL, 8), (field::FADT_X_DSDT, 8)]);
                }
            }
            _ => {}
        }
        for (offset, size) in fields {
            let target = read_le(&bytes, at + offset, size);
            // Zero means "not given" (the FADT's X_FIRMWARE_CTRL, for one).
            if target != 0 {
                pointers.push((
                    Pointer {
                        in_rsdp: false,
                        offset: at + offset,
                        size,
                    },
                    target,
                ));
                pending.push(target);
            }
        }
    }

    // The tables file starts at the first table; its offset must keep every table's alignment.
    let start = *tables.first().ok_or_else(|| fail("no tables".into()))?;
    if !start.is_multiple_of(spec::FACS_ALIGN) {
        return Err(fail(format!(
            "the first table sits at unaligned offset {start:#x}"
        )));
    }
    let mut file = bytes[start..].to_vec();

    let mut script = Vec::new();
    script.push(allocate(
        TABLES_FILE,
        spec::FACS_ALIGN as u32,
        command::ZONE_HIGH,
    ));
    script.push(allocate(
        RSDP_FILE,
        spec::TABLE_ALIGN as u32,
        command::ZONE_FSEG,
    ));
    for (p, target) in &pointers {
        let value = target - LINK_BASE - start as u64;
        let (dest, name, offset) = if p.in_rsdp {
            (&mut rsdp, RSDP_FILE, p.offset)
        } else {
            (&mut file, TABLES_FILE, p.offset - start)
        };
        write_le(dest, offset, p.size, value);
        script.push(add_pointer(name, TABLES_FILE, offset as u32, p.size));
    }
    for &at in &tables {
        let offset = at - start;
        // The FACS has no checksum (ACPI 2.0c 5.2.9).
        if &file[offset..offset + 4] == b"FACS" {
            continue;
        }
        let len = read_le(&file, offset + field::TABLE_LENGTH, 4) as u32;
        file[offset + spec::CHECKSUM_OFFSET] = 0;
        script.push(add_checksum(
            TABLES_FILE,
            (offset + spec::CHECKSUM_OFFSET) as u32,
            offset as u32,
            len,
        ));
    }
    // The ACPI 1.0 checksum first: the extended one covers it.
    rsdp[field::RSDP_V1_CHECKSUM] = 0;
    rsdp[field::RSDP_EXTENDED_CHECKSUM] = 0;
    script.push(add_checksum(
        RSDP_FILE,
        field::RSDP_V1_CHECKSUM as u32,
        0,
        spec::RSDP_V1_LEN as u32,
    ));
    script.push(add_checksum(
        RSDP_FILE,
        field::RSDP_EXTENDED_CHECKSUM as u32,
        0,
        spec::RSDP_LEN as u32,
    ));

    Ok(LoaderFiles {
        rsdp,
        tables: file,
        loader: script.concat(),
    })
}

fn read_le(bytes: &[u8], at: usize, size: u8) -> u64 {
    bytes[at..at + usize::from(size)]
        .iter()
        .rev()
        .fold(0, |v, &b| (v << 8) | u64::from(b))
}

fn write_le(bytes: &mut [u8], at: usize, size: u8, value: u64) {
    let size = usize::from(size);
    bytes[at..at + size].copy_from_slice(&value.to_le_bytes()[..size]);
}

/// A command with its number and the file name that every command starts with.
fn command(number: u32, file: &str) -> [u8; command::LEN] {
    let mut c = [0u8; command::LEN];
    c[..4].copy_from_slice(&number.to_le_bytes());
    put_name(&mut c, command::FILE, file);
    c
}

fn put_name(c: &mut [u8; command::LEN], at: usize, name: &str) {
    debug_assert!(name.len() < command::FILE_NAME_LEN);
    c[at..at + name.len()].copy_from_slice(name.as_bytes());
}

fn allocate(file: &str, align: u32, zone: u8) -> [u8; command::LEN] {
    let mut c = command(command::ALLOCATE, file);
    c[command::ALLOCATE_ALIGN..command::ALLOCATE_ALIGN + 4].copy_from_slice(&align.to_le_bytes());
    c[command::ALLOCATE_ZONE] = zone;
    c
}

fn add_pointer(dest: &str, src: &str, offset: u32, size: u8) -> [u8; command::LEN] {
    let mut c = command(command::ADD_POINTER, dest);
    put_name(&mut c, command::POINTER_SRC_FILE, src);
    c[command::POINTER_OFFSET..command::POINTER_OFFSET + 4].copy_from_slice(&offset.to_le_bytes());
    c[command::POINTER_SIZE] = size;
    c
}

fn add_checksum(file: &str, offset: u32, start: u32, length: u32) -> [u8; command::LEN] {
    let mut c = command(command::ADD_CHECKSUM, file);
    for (at, v) in [
        (command::CHECKSUM_OFFSET, offset),
        (command::CHECKSUM_START, start),
        (command::CHECKSUM_LENGTH, length),
    ] {
        c[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acpi::build;
    use arch::layout::{MemoryLayout, ACPI_START};
    use std::collections::BTreeMap;

    fn config(layout: &MemoryLayout, cpus: u8) -> AcpiConfig<'_> {
        AcpiConfig {
            cpus,
            layout,
            lpt: true,
        }
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn name_at(c: &[u8], at: usize) -> String {
        let field = &c[at..at + command::FILE_NAME_LEN];
        let end = field
            .iter()
            .position(|&b| b == 0)
            .expect("name not terminated");
        String::from_utf8(field[..end].to_vec()).unwrap()
    }

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |s, x| s.wrapping_add(*x))
    }

    /// What SeaBIOS's romfile_loader does, over a flat memory: files are allocated at the
    /// addresses `place` picks for (name, align, zone), then patched and checksummed in script
    /// order. Returns the memory and where each file went.
    fn execute(
        files: &LoaderFiles,
        mut place: impl FnMut(&str, u32, u8) -> u64,
    ) -> (BTreeMap<u64, u8>, BTreeMap<String, (u64, usize)>) {
        let contents: BTreeMap<String, Vec<u8>> = files.clone().into_files().into_iter().collect();
        let mut mem = BTreeMap::new();
        let mut placed: BTreeMap<String, (u64, usize)> = BTreeMap::new();
        assert_eq!(files.loader.len() % command::LEN, 0);
        let mut checksums_seen = false;
        for c in files.loader.chunks(command::LEN) {
            let file = name_at(c, command::FILE);
            match u32_at(c, 0) {
                command::ALLOCATE => {
                    let align = u32_at(c, command::ALLOCATE_ALIGN);
                    assert!(align.is_power_of_two());
                    let zone = c[command::ALLOCATE_ZONE];
                    let data = &contents[&file];
                    let addr = place(&file, align, zone);
                    assert_eq!(addr % u64::from(align), 0, "{file} misaligned");
                    for (i, &b) in data.iter().enumerate() {
                        mem.insert(addr + i as u64, b);
                    }
                    assert!(placed.insert(file, (addr, data.len())).is_none());
                }
                command::ADD_POINTER => {
                    assert!(!checksums_seen, "pointer patched after a checksum");
                    let src = name_at(c, command::POINTER_SRC_FILE);
                    let offset = u32_at(c, command::POINTER_OFFSET) as usize;
                    let size = c[command::POINTER_SIZE] as usize;
                    assert!([1, 2, 4, 8].contains(&size));
                    let (dest_addr, dest_len) = placed[&file];
                    assert!(offset + size <= dest_len, "pointer outside {file}");
                    let at = dest_addr + offset as u64;
                    let mut v = 0u64;
                    for i in (0..size).rev() {
                        v = (v << 8) | u64::from(mem[&(at + i as u64)]);
                    }
                    v += placed[&src].0;
                    for i in 0..size {
                        mem.insert(at + i as u64, (v >> (8 * i)) as u8);
                    }
                }
                command::ADD_CHECKSUM => {
                    checksums_seen = true;
                    let offset = u32_at(c, command::CHECKSUM_OFFSET) as u64;
                    let start = u32_at(c, command::CHECKSUM_START) as u64;
                    let len = u32_at(c, command::CHECKSUM_LENGTH) as u64;
                    let (addr, flen) = placed[&file];
                    assert!(offset < flen as u64 && start + len <= flen as u64);
                    let s = (addr + start..addr + start + len)
                        .fold(0u8, |s, a| s.wrapping_add(mem[&a]));
                    let b = mem.get_mut(&(addr + offset)).unwrap();
                    *b = b.wrapping_sub(s);
                }
                other => panic!("unknown command {other}"),
            }
        }
        (mem, placed)
    }

    fn bytes(mem: &BTreeMap<u64, u8>, addr: u64, len: usize) -> Vec<u8> {
        (addr..addr + len as u64).map(|a| mem[&a]).collect()
    }

    #[test]
    fn linked_tables_equal_the_tables_built_in_place() {
        for (ram, cpus) in [(256u64 << 20, 1u8), (6 << 30, 4), (64 << 20, 32)] {
            let layout = MemoryLayout::new(ram).unwrap();
            let cfg = config(&layout, cpus);
            let files = loader_files(&cfg).unwrap();
            // Place the RSDP where `build` puts it and the tables 64 bytes later, where `build`
            // puts the FACS: the result must be `build`'s image, byte for byte.
            for base in [ACPI_START, 0x7fe_0000, 0xfff0_0000 - 0x1_0000] {
                let (mem, placed) = execute(&files, |name, _, zone| match name {
                    RSDP_FILE => {
                        assert_eq!(zone, command::ZONE_FSEG);
                        base
                    }
                    TABLES_FILE => {
                        assert_eq!(zone, command::ZONE_HIGH);
                        base + 64
                    }
                    other => panic!("{other} allocated"),
                });
                assert_eq!(placed.len(), 2);
                let want = if base == ACPI_START {
                    build(&cfg).unwrap()
                } else {
                    build_at(&cfg, base).unwrap()
                };
                assert_eq!(
                    bytes(&mem, base, spec::RSDP_LEN),
                    want.bytes[..spec::RSDP_LEN]
                );
                assert!(want.bytes[spec::RSDP_LEN..64].iter().all(|&b| b == 0));
                assert_eq!(
                    bytes(&mem, base + 64, files.tables.len()),
                    want.bytes[64..],
                    "ram {ram:#x}, {cpus} cpus, base {base:#x}"
                );
            }
        }
    }

    #[test]
    fn linked_tables_are_valid_anywhere() {
        let layout = MemoryLayout::new(128 << 20).unwrap();
        let files = loader_files(&config(&layout, 2)).unwrap();
        let (rsdp_at, tables_at) = (0xf_5a30u64, 0x7fb_c040u64);
        let (mem, _) = execute(&files, |name, _, _| {
            if name == RSDP_FILE {
                rsdp_at
            } else {
                tables_at
            }
        });
        let rsdp = bytes(&mem, rsdp_at, spec::RSDP_LEN);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[..spec::RSDP_V1_LEN]), 0);
        assert_eq!(sum(&rsdp), 0);
        let table = |addr: u64| {
            let len = u32_at(&bytes(&mem, addr, 8), 4) as usize;
            let t = bytes(&mem, addr, len);
            if &t[..4] != b"FACS" {
                assert_eq!(sum(&t), 0, "{}", String::from_utf8_lossy(&t[..4]));
            }
            t
        };
        let rsdt = table(u64::from(u32_at(&rsdp, 16)));
        let xsdt = table(u64::from_le_bytes(rsdp[24..32].try_into().unwrap()));
        assert_eq!((&rsdt[..4], &xsdt[..4]), (&b"RSDT"[..], &b"XSDT"[..]));
        let via_rsdt: Vec<u64> = (36..rsdt.len())
            .step_by(4)
            .map(|o| u64::from(u32_at(&rsdt, o)))
            .collect();
        let via_xsdt: Vec<u64> = (36..xsdt.len())
            .step_by(8)
            .map(|o| u64::from_le_bytes(xsdt[o..o + 8].try_into().unwrap()))
            .collect();
        assert_eq!(via_rsdt, via_xsdt);
        let signatures: Vec<Vec<u8>> = via_xsdt.iter().map(|&a| table(a)[..4].to_vec()).collect();
        assert_eq!(signatures, [b"FACP".to_vec(), b"APIC".to_vec()]);
        let fadt = table(via_xsdt[0]);
        let facs = table(u64::from(u32_at(&fadt, 36)));
        assert_eq!(&facs[..4], b"FACS");
        assert_eq!(u32_at(&fadt, 36) % 64, 0);
        let dsdt = table(u64::from(u32_at(&fadt, 40)));
        assert_eq!(&dsdt[..4], b"DSDT");
        assert_eq!(
            u64::from_le_bytes(fadt[140..148].try_into().unwrap()),
            u64::from(u32_at(&fadt, 40))
        );
        // Everything the pointers reach lies inside the tables file.
        for a in via_xsdt
            .iter()
            .chain([u32_at(&fadt, 36) as u64, u32_at(&fadt, 40) as u64].iter())
        {
            assert!(*a >= tables_at && *a < tables_at + files.tables.len() as u64);
        }
    }

    #[test]
    fn files_hold_offsets_and_zero_checksums() {
        let layout = MemoryLayout::new(256 << 20).unwrap();
        let files = loader_files(&config(&layout, 1)).unwrap();
        // The tables file opens with the FACS; the RSDP's pointers are offsets into the file.
        assert_eq!(&files.tables[..4], b"FACS");
        let rsdt = u32_at(&files.rsdp, 16) as usize;
        assert_eq!(&files.tables[rsdt..rsdt + 4], b"RSDT");
        assert_eq!(files.tables[rsdt + 9], 0);
        assert_eq!((files.rsdp[8], files.rsdp[32]), (0, 0));
        // Two allocations, then pointers, then checksums; the loader's own names fit.
        let commands: Vec<u32> = files
            .loader
            .chunks(command::LEN)
            .map(|c| u32_at(c, 0))
            .collect();
        assert_eq!(&commands[..2], &[command::ALLOCATE; 2]);
        let first_checksum = commands
            .iter()
            .position(|&c| c == command::ADD_CHECKSUM)
            .unwrap();
        assert!(commands[2..first_checksum]
            .iter()
            .all(|&c| c == command::ADD_POINTER));
        assert!(commands[first_checksum..]
            .iter()
            .all(|&c| c == command::ADD_CHECKSUM));
        // RSDT, XSDT 2 each; FADT FACS + DSDT + X_DSDT; RSDP 2.
        assert_eq!(first_checksum - 2, 2 + 2 + 3 + 2);
        // Checksums: RSDT, XSDT, FADT, MADT, DSDT, and the RSDP's two.
        assert_eq!(commands.len() - first_checksum, 7);
        let names: Vec<String> = files
            .clone()
            .into_files()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, [RSDP_FILE, TABLES_FILE, LOADER_FILE]);
    }
}
