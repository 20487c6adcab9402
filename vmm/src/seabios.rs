//! Booting a SeaBIOS image (`--bios PATH`, e.g. Debian 12's `/usr/share/seabios/bios.bin`,
//! SeaBIOS 1.16.2 built with `CONFIG_QEMU`) on kettle's PC: checking the image, and what the
//! fw_cfg device ([`devices::fw_cfg::FwCfg`]) must hold for it.
//!
//! # What the VMM does for such an image
//!
//! - **Flash**: map the image read-only at 4 GiB - size ([`flash_base`]). SeaBIOS reads its
//!   pristine copy there when it reboots (`qemu_reboot` copies it back over 0xE0000-0xFFFFF).
//! - **Shadow**: copy the image's last 128 KiB (all of it when smaller) to the end of the first
//!   MiB, 0xE0000-0xFFFFF ([`shadow_copy`]), which is RAM in kettle and stays writable. SeaBIOS
//!   only knows how to open the PAM registers of QEMU's i440FX (8086:1237) and Q35; on kettle's
//!   i440BX it logs "Unable to unlock ram - bridge not found" and "Unable to lock ram - bridge
//!   not found" and carries on, since the copy is already in writable RAM. Redo the copy on
//!   every machine reset, like the flash-to-shadow copy of real hardware.
//! - **0xC0000-0xDFFFF is RAM too** (QEMU makes it RAM through PAM): SeaBIOS places option
//!   ROMs from 0xC0000 and its low allocation zone (`ZoneLow`) just below its runtime code, from
//!   at most 64 KiB below it, and zeroes 0xC0000 up to that zone before booting (unbacked, that
//!   memset alone is a quarter of a million MMIO exits). kettle makes it part of guest memory
//!   ([`crate::vm::ram_spans`]), so it is saved and restored with the VM; e820 still reports
//!   the range as a hole.
//! - **CPU**: start vCPU 0 at the reset vector in real mode: CS selector 0xF000 with base
//!   0xF0000 (not the architectural 0xFFFF0000, so the shadow copy is what runs), IP 0xFFF0
//!   ([`RESET_CS_SELECTOR`], [`RESET_CS_BASE`], [`RESET_IP`]). Leave the other vCPUs in KVM's
//!   power-on wait-for-SIPI state: SeaBIOS wakes them with INIT-SIPI-SIPI and **spins until
//!   exactly [`spec::NB_CPUS`](devices::fw_cfg::spec::NB_CPUS) CPUs have checked in**, so that
//!   item must equal the number of vCPUs that really run.
//! - **Tables**: do not write kettle's own ACPI image at 0xE0000; SeaBIOS builds the tables from
//!   the fw_cfg files [`fw_cfg_files`] produces (and its own MP table, $PIR and SMBIOS tables).
//! - **fw_cfg**: add [`devices::fw_cfg::FwCfg`] on the I/O bus at 0x510 with length 12
//!   (selector 0x510, data 0x511, DMA address 0x514-0x51B), built from [`fw_cfg_items`] and
//!   [`fw_cfg_files`], with guest RAM for DMA.
//! - Optional: a QEMU-style debug console at port 0x402 (reads 0xE9, logs written bytes) shows
//!   SeaBIOS's own log; without it SeaBIOS turns that output off.
//!
//! # What SeaBIOS does on kettle's PC (1.16.2 source, `src/fw/*.c`)
//!
//! - `runningOnQEMU()` is true whatever the hardware (`CONFIG_QEMU=y`); the northbridge
//!   subsystem check (1af4:1100) only decides the "Running on QEMU" log line. `kvm_detect` looks
//!   at CPUID 0x40000000 ("KVMKVMKVM") and then sets up kvmclock.
//! - Memory comes from "etc/e820" (RAM and reserved entries); the CMOS size registers are read
//!   only without that file. CMOS 0x5F + 1 counts as a minimum CPU count; kettle leaves it 0.
//! - With "etc/table-loader" present it moves `acpi_pm_base` to 0x600, programs the PIIX4 PM
//!   function (00:07.3) PMBA = 0x601, PMREGMISC = 1, SMBBA = 0x701, SMBHSTCFG = 9, interrupt line
//!   9, and uses the PM timer at 0x608: the same blocks kettle's FADT and DSDT describe.
//! - PIIX4 ISA bridge (00:07.0): PIRQRC\[A:D\] = 10, 10, 11, 11 and ELCR = 0x00/0x0C, matching
//!   `arch::layout::PIRQ_IRQS`. PIIX4 IDE: IDETIM/SIDETIM = 0x8000 (both channels decoded).
//! - The host bridge is not one SeaBIOS knows, so it uses no PCI interrupt routing: every
//!   function with an interrupt pin gets interrupt line 0xFF ("pci_slot_get_irq called with
//!   unknown routing"), and its MP table gives those pins IOAPIC input 0xFF. Its static $PIR
//!   table describes QEMU's router at 00:01.0. OSes that route PCI interrupts through ACPI
//!   (`_PRT`) are unaffected.
//! - It reassigns every BAR: I/O from 0xC000 up, 32-bit memory downwards from 0xFEC00000
//!   (kettle's `_CRS` windows cover both), and enables I/O and memory decoding (not bus master).
//! - No SMM (it looks for the i440FX or Q35 bridge for that).
//! - It parses the DSDT: the PS/2 keyboard is only set up if the DSDT has a PNP0303 device.
//! - Drives: ATA/ATAPI through the PIIX4 IDE function, PIO; the boot order comes from the
//!   "bootorder" file, matched against `/pci@i0cf8/*@7,1/drive@C/disk@D`. The CHS translation
//!   of each hard disk comes from CMOS 0x39 (two bits per IDE position; kettle sets LBA), so
//!   its INT 13h geometry matches kettle's BIOS.

use std::path::Path;

use arch::e820;
use arch::layout::{MemoryLayout, FOUR_GIB, HIGH_MEMORY_START};
use devices::fw_cfg::spec as fw_cfg;
use firmware::acpi::{self, AcpiConfig};

/// Real-mode reset state for a BIOS in the shadow copy.
pub const RESET_CS_SELECTOR: u16 = 0xf000;
pub const RESET_CS_BASE: u64 = 0xf_0000;
pub const RESET_IP: u16 = 0xfff0;

/// Image sizes kettle accepts: whole 64 KiB blocks, at most 16 MiB.
pub const IMAGE_BLOCK: usize = 64 << 10;
pub const IMAGE_MAX: usize = 16 << 20;
/// The part of the image that is copied below 1 MiB.
pub const SHADOW_SIZE: usize = 128 << 10;

/// One IDE drive position: channel 0 (primary) or 1 (secondary), device 0 (master) or 1 (slave).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdePosition {
    pub channel: u8,
    pub device: u8,
}

/// The logical geometry INT 13h reports for a disk, for SeaBIOS builds that read the
/// "bios-geometry" file (heads <= 255, sectors 1 to 63). kettle gives each disk the geometry of
/// its own BIOS ([`firmware::bios::Geometry`], LBA-assisted). Debian's 1.16.2 build does not
/// read that file; it takes the translation from CMOS 0x39, which kettle sets to LBA for every
/// hard disk, and computes the same heads and cylinders (reporting one cylinder fewer in
/// AH=08h, as the Bochs BIOS does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogicalChs {
    pub cylinders: u32,
    pub heads: u32,
    pub sectors: u32,
}

/// What SeaBIOS is told about the machine.
#[derive(Clone, Copy, Debug)]
pub struct SeabiosConfig<'a> {
    pub layout: &'a MemoryLayout,
    /// vCPUs that run (SeaBIOS waits for exactly this many).
    pub cpus: u8,
    /// Whether LPT1 is present (for the DSDT).
    pub lpt: bool,
    /// The IDE drives to boot from, in order; nothing else is tried.
    pub boot_order: &'a [IdePosition],
    /// Mirror the BIOS text console (INT 10h) on COM1 (0x3F8), as QEMU's `-nographic` does:
    /// fw_cfg NOGRAPHIC = 1, and SeaBIOS's "sercon" writes VT100 text there. kettle has no
    /// display adapter, so without it nothing written through INT 10h is seen.
    pub serial_console: bool,
    /// After "No bootable device.", reboot after this many milliseconds; `None` waits forever.
    pub boot_fail_reboot_ms: Option<u32>,
    /// Disks whose INT 13h geometry is given ("bios-geometry"); any other disk gets the
    /// translation CMOS 0x39 names (0 in kettle: none, the drive's own CHS clipped to 1024
    /// cylinders).
    pub geometry: &'a [(IdePosition, LogicalChs)],
}

/// The numeric fw_cfg items SeaBIOS reads.
pub fn fw_cfg_items(cfg: &SeabiosConfig) -> Vec<(u16, Vec<u8>)> {
    vec![
        (fw_cfg::RAM_SIZE, cfg.layout.ram_size.to_le_bytes().to_vec()),
        (fw_cfg::NB_CPUS, u16::from(cfg.cpus).to_le_bytes().to_vec()),
        (fw_cfg::MAX_CPUS, u16::from(cfg.cpus).to_le_bytes().to_vec()),
        (
            fw_cfg::NOGRAPHIC,
            u16::from(cfg.serial_console).to_le_bytes().to_vec(),
        ),
        (fw_cfg::BOOT_MENU, 0u16.to_le_bytes().to_vec()),
        // The PIT reaches IOAPIC pin 2 (kettle's MADT says so too); SeaBIOS's MP table follows.
        (fw_cfg::IRQ0_OVERRIDE, 1u32.to_le_bytes().to_vec()),
    ]
}

/// The fw_cfg files SeaBIOS reads: "etc/e820", the ACPI tables with their linker/loader script,
/// "bootorder", "etc/boot-fail-wait", "etc/show-boot-menu" and, when any disk has one,
/// "bios-geometry".
pub fn fw_cfg_files(cfg: &SeabiosConfig) -> Result<Vec<(String, Vec<u8>)>, acpi::AcpiError> {
    let mut files = vec![("etc/e820".to_string(), e820_file(cfg.layout))];
    files.extend(
        acpi::loader::loader_files(&AcpiConfig {
            cpus: cfg.cpus,
            layout: cfg.layout,
            lpt: cfg.lpt,
        })?
        .into_files(),
    );
    files.push((
        "bootorder".to_string(),
        bootorder(cfg.boot_order).into_bytes(),
    ));
    let wait = cfg.boot_fail_reboot_ms.unwrap_or(u32::MAX);
    files.push((
        "etc/boot-fail-wait".to_string(),
        wait.to_le_bytes().to_vec(),
    ));
    files.push((
        "etc/show-boot-menu".to_string(),
        0u16.to_le_bytes().to_vec(),
    ));
    if !cfg.geometry.is_empty() {
        files.push((
            "bios-geometry".to_string(),
            bios_geometry(cfg.geometry).into_bytes(),
        ));
    }
    Ok(files)
}

/// The OpenFirmware path SeaBIOS builds for an ATA drive on the PIIX4 IDE function (00:07.1).
fn ata_path(p: IdePosition) -> String {
    format!("/pci@i0cf8/ide@7,1/drive@{}/disk@{}", p.channel, p.device)
}

/// "bios-geometry": one "PATH CYLINDERS HEADS SECTORS" line per disk.
pub fn bios_geometry(disks: &[(IdePosition, LogicalChs)]) -> String {
    disks
        .iter()
        .map(|(p, g)| format!("{} {} {} {}", ata_path(*p), g.cylinders, g.heads, g.sectors))
        .collect::<Vec<_>>()
        .join("\n")
}

/// "etc/e820": QEMU's `struct e820_entry { u64 address; u64 length; u32 type; }`, packed,
/// little-endian, one per entry of kettle's memory map.
pub fn e820_file(layout: &MemoryLayout) -> Vec<u8> {
    let mut out = Vec::new();
    for e in e820::entries(layout) {
        out.extend_from_slice(&e.addr.to_le_bytes());
        out.extend_from_slice(&e.size.to_le_bytes());
        out.extend_from_slice(&e.kind.to_le_bytes());
    }
    out
}

/// "bootorder": one OpenFirmware device path per line, as SeaBIOS's `build_ata_path` matches
/// them for the PIIX4 IDE function at 00:07.1, then "HALT" so that drives not listed are not
/// tried.
pub fn bootorder(order: &[IdePosition]) -> String {
    let mut s = String::new();
    for p in order {
        s.push_str(&ata_path(*p));
        s.push('\n');
    }
    s.push_str("HALT");
    s
}

/// Reads a BIOS image and checks its size: a whole number of 64 KiB blocks from 64 KiB to
/// 16 MiB.
pub fn load_image(path: &Path) -> Result<Vec<u8>, String> {
    let image = std::fs::read(path)
        .map_err(|e| format!("cannot read BIOS image {}: {e}", path.display()))?;
    check_image(&image).map_err(|e| format!("BIOS image {}: {e}", path.display()))?;
    Ok(image)
}

fn check_image(image: &[u8]) -> Result<(), String> {
    let n = image.len();
    if !(IMAGE_BLOCK..=IMAGE_MAX).contains(&n) || !n.is_multiple_of(IMAGE_BLOCK) {
        return Err(format!(
            "{n} bytes; a BIOS image is a multiple of 64 KiB from 64 KiB to 16 MiB (SeaBIOS's \
             bios.bin is 128 KiB or 256 KiB)"
        ));
    }
    Ok(())
}

/// Where the image is mapped read-only: ending at 4 GiB.
pub fn flash_base(image: &[u8]) -> u64 {
    FOUR_GIB - image.len() as u64
}

/// What is copied into RAM below 1 MiB, and where: the image's last 128 KiB (or all of a
/// 64 KiB image), ending at 1 MiB.
pub fn shadow_copy(image: &[u8]) -> (u64, &[u8]) {
    let n = image.len().min(SHADOW_SIZE);
    let tail = &image[image.len() - n..];
    (HIGH_MEMORY_START - n as u64, tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> MemoryLayout {
        MemoryLayout::new(256 << 20).unwrap()
    }

    fn config(layout: &MemoryLayout) -> SeabiosConfig<'_> {
        SeabiosConfig {
            layout,
            cpus: 2,
            lpt: false,
            boot_order: &[
                IdePosition {
                    channel: 1,
                    device: 0,
                },
                IdePosition {
                    channel: 0,
                    device: 0,
                },
            ],
            serial_console: true,
            boot_fail_reboot_ms: None,
            geometry: &[],
        }
    }

    #[test]
    fn files_are_what_seabios_reads() {
        let l = layout();
        let files = fw_cfg_files(&config(&l)).unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "etc/e820",
                "etc/acpi/rsdp",
                "etc/acpi/tables",
                "etc/table-loader",
                "bootorder",
                "etc/boot-fail-wait",
                "etc/show-boot-menu"
            ]
        );
        let get = |n: &str| &files.iter().find(|f| f.0 == n).unwrap().1;
        assert_eq!(
            std::str::from_utf8(get("bootorder")).unwrap(),
            "/pci@i0cf8/ide@7,1/drive@1/disk@0\n/pci@i0cf8/ide@7,1/drive@0/disk@0\nHALT"
        );
        assert_eq!(get("etc/boot-fail-wait"), &vec![0xff; 4]);
        // e820: 20-byte entries; the first is low RAM, the last the IOAPIC..4 GiB hole.
        let e820 = get("etc/e820");
        assert_eq!(e820.len() % 20, 0);
        assert_eq!(
            &e820[..20],
            &{
                let mut e = vec![0u8; 8];
                e.extend_from_slice(&0x9_fc00u64.to_le_bytes());
                e.extend_from_slice(&1u32.to_le_bytes());
                e
            }[..]
        );
        // The device takes them all.
        struct NoRam;
        impl devices::dma::DmaMemory for NoRam {
            fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), devices::dma::DmaError> {
                Err(devices::dma::DmaError {
                    addr,
                    len: buf.len(),
                })
            }
            fn write(&self, addr: u64, buf: &[u8]) -> Result<(), devices::dma::DmaError> {
                Err(devices::dma::DmaError {
                    addr,
                    len: buf.len(),
                })
            }
        }
        let dev = devices::fw_cfg::FwCfg::new(
            std::sync::Arc::new(NoRam),
            fw_cfg_items(&config(&l)),
            files,
        )
        .unwrap();
        assert_eq!(dev.item(fw_cfg::NB_CPUS), Some(&[2u8, 0][..]));

        let geometry = [(
            IdePosition {
                channel: 0,
                device: 1,
            },
            LogicalChs {
                cylinders: 1024,
                heads: 255,
                sectors: 63,
            },
        )];
        let with = SeabiosConfig {
            geometry: &geometry,
            ..config(&l)
        };
        let files = fw_cfg_files(&with).unwrap();
        assert_eq!(
            files.last().unwrap(),
            &(
                "bios-geometry".to_string(),
                b"/pci@i0cf8/ide@7,1/drive@0/disk@1 1024 255 63".to_vec()
            )
        );
    }

    #[test]
    fn image_sizes() {
        assert!(check_image(&vec![0; 128 << 10]).is_ok());
        assert!(check_image(&vec![0; 64 << 10]).is_ok());
        assert!(check_image(&vec![0; 16 << 20]).is_ok());
        for n in [
            0,
            1000,
            (64 << 10) + 1,
            96 << 10 | 1,
            (16 << 20) + (64 << 10),
        ] {
            assert!(check_image(&vec![0; n]).is_err(), "{n}");
        }
        let image: Vec<u8> = (0..256 << 10).map(|i| (i >> 16) as u8).collect();
        assert_eq!(flash_base(&image), 0xfffc_0000);
        let (at, tail) = shadow_copy(&image);
        assert_eq!((at, tail.len(), tail[0]), (0xe_0000, 128 << 10, 2));
        let small = vec![9u8; 64 << 10];
        assert_eq!(shadow_copy(&small).0, 0xf_0000);
        let err = load_image(Path::new("/nonexistent/bios.bin")).unwrap_err();
        assert!(err.contains("/nonexistent/bios.bin"), "{err}");
    }
}

/// QEMU's debug console port, where SeaBIOS writes its log when the port reads back 0xE9.
pub const DEBUG_PORT: u16 = 0x402;

/// The debug console: bytes written to [`DEBUG_PORT`] become debug-level log lines
/// ("firmware: ..."), so `--log-level debug` shows the BIOS's own account of its boot.
#[derive(Default)]
pub struct DebugConsole {
    line: Vec<u8>,
}

impl DebugConsole {
    /// Longest line kept; a firmware that never writes a newline cannot grow it further.
    const MAX_LINE: usize = 1024;
}

impl devices::BusDevice for DebugConsole {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xe9);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        for &b in data {
            if b == b'\n' || self.line.len() >= Self::MAX_LINE {
                log::debug!(
                    "firmware: {}",
                    String::from_utf8_lossy(&self.line).trim_end()
                );
                self.line.clear();
            } else {
                self.line.push(b);
            }
        }
    }
}
