//! Appliances booted the way users' appliances boot: by their own boot loader, through the BIOS.
//! In the nested test host (TESTING.md), kettle boots Debian's kernel and the test initramfs from
//! a SYSLINUX VHD and a GRUB 2 disk on IDE and from an ISOLINUX CD on the ATAPI drive, each with
//! kettle's BIOS and again with Debian's SeaBIOS (`--bios`), and once directly (`--kernel`) for
//! reference: Linux must see the same memory map and the same ACPI tables through kettle's BIOS
//! as when kettle loads it itself. The images are built by resources/build-boot-images.sh.
//!
//! These tests need QEMU and Debian's packages (the scripts install them as root); they fail,
//! never skip, when the nested host cannot run, and say why.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use kettle_tests::nested::{
    assets, guest_initrd_with_tests, run_nested_with, workspace_root, NestedOptions, NestedRun,
};

/// What the guest reports: its command line, the firmware's memory map and ACPI tables as the
/// kernel logged them, and a checksum of every ACPI table.
const GUEST_SCRIPT: &str = r#"
echo "CMDLINE $(cat /proc/cmdline)"
dmesg | grep -E 'BIOS-e820:' | sed 's/^\[[^]]*\] *//' | sed 's/^/FW /'
for t in /sys/firmware/acpi/tables/*; do
    [ -f "$t" ] && echo "ACPITABLE $(basename "$t") $(md5sum < "$t" | cut -d' ' -f1)"
done
echo "MEMTOTAL $(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2)"
dmesg | grep -E 'SMBIOS .* present|DMI: |MP-table' | sed 's/^\[[^]]*\] *//' | sed 's/^/FWINFO /'
"#;

const CMDLINE: &str = "console=ttyS0 kettle.run=bios";

/// The VMs the nested host runs, by name: kettle's arguments after `--memory` and `--serial`.
const VMS: &[(&str, &str)] = &[
    (
        "direct",
        "--kernel /guest/vmlinuz --initrd /guest/initrd-bios.gz --cmdline 'console=ttyS0 kettle.run=bios'",
    ),
    ("syslinux", "--disk /guest/syslinux.vhd,readonly"),
    ("grub", "--disk /guest/grub.vhd,readonly"),
    ("isolinux", "--cdrom /guest/isolinux.iso --boot cdrom"),
    (
        "sb-syslinux",
        "--bios /guest/bios.bin --disk /guest/syslinux.vhd,readonly",
    ),
    ("sb-grub", "--bios /guest/bios.bin --disk /guest/grub.vhd,readonly"),
    (
        "sb-isolinux",
        "--bios /guest/bios.bin --cdrom /guest/isolinux.iso --boot cdrom",
    ),
];

/// Builds the test initramfs and the three boot images with [`CMDLINE`].
fn images(dir: &Path) -> (PathBuf, Vec<PathBuf>) {
    let initrd = guest_initrd_with_tests(&[("bios", GUEST_SCRIPT)], &dir.join("initrd-bios.gz"))
        .unwrap_or_else(|e| panic!("building the test initramfs: {e}"));
    let out = Command::new(workspace_root().join("resources/build-boot-images.sh"))
        .args([
            "--quiet",
            "--images",
            "syslinux,grub,isolinux",
            "--cmdline",
            CMDLINE,
        ])
        .arg("--initrd")
        .arg(&initrd)
        .arg("--out")
        .arg(dir.join("images"))
        .output()
        .expect("running resources/build-boot-images.sh");
    assert!(
        out.status.success(),
        "resources/build-boot-images.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let paths: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    let find = |name: &str| {
        paths
            .iter()
            .find(|p| p.file_name().is_some_and(|f| f == name))
            .unwrap_or_else(|| panic!("build-boot-images.sh made no {name}: {paths:?}"))
            .clone()
    };
    (
        initrd,
        vec![find("syslinux.vhd"), find("grub.vhd"), find("isolinux.iso")],
    )
}

fn script() -> String {
    let mut s = String::from(
        r#"
run_vm() {
    name=$1; shift
    echo "=== $name"
    start=$(date +%s)
    eval "timeout 300 kettle run --memory 256M --serial file:/tmp/$name.serial $*" </dev/null 2>/tmp/$name.err
    echo "EXIT-$name $? $(( $(date +%s) - start ))"
    tr -d '\r' </tmp/$name.serial | sed "s/^/$name: /"
    sed "s/^/$name-ERR: /" /tmp/$name.err
}
"#,
    );
    for (name, args) in VMS {
        s.push_str(&format!(
            "run_vm {name} \"{}\"\n",
            args.replace('"', "\\\"")
        ));
    }
    s
}

/// Runs every VM of this file in one nested host and keeps the result.
fn nested() -> &'static NestedRun {
    static RUN: OnceLock<NestedRun> = OnceLock::new();
    RUN.get_or_init(|| {
        let seabios = kettle_tests::guest::seabios();
        let dir = std::env::temp_dir().join(format!("kettle-nested-bios-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (initrd, images) = images(&dir);
        let assets = assets().unwrap_or_else(|e| panic!("guest assets: {e}"));
        // A periodic tick in the nested host: with one-shot timers this sequence of seven VMs
        // froze the emulator (a lost timer interrupt) in most attempts here; with the tick it
        // passed. (nested_net cannot use it: its TCP transfers need fine-grained timers.)
        let mut options = NestedOptions::new(Duration::from_secs(900))
            .host_cmdline("nohz=off highres=off lapic=notscdeadline")
            .add(&initrd, "/guest/initrd-bios.gz")
            .add(&assets.vmlinuz, "/guest/vmlinuz")
            .add(seabios, "/guest/bios.bin");
        for image in &images {
            let name = image.file_name().unwrap().to_str().unwrap();
            options = options.add(image, &format!("/guest/{name}"));
        }
        let run = run_nested_with(&script(), &options);
        let _ = std::fs::remove_dir_all(&dir);
        run
    })
}

fn out() -> &'static str {
    let run = nested();
    run.expect_success();
    run.script_output().expect("the nested script's output")
}

/// The lines VM `name` printed on COM1 (prefix removed).
fn serial(name: &str) -> Vec<&'static str> {
    let prefix = format!("{name}: ");
    out()
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect()
}

fn values(name: &str, key: &str) -> Vec<String> {
    serial(name)
        .iter()
        .filter_map(|l| l.find(key).map(|i| l[i + key.len()..].trim().to_string()))
        .collect()
}

/// Asserts VM `name` booted Linux, ran the guest script and powered off, and that `banner`
/// (its boot loader's) appeared on its console.
fn booted(name: &str, banner: &str) {
    let exit: Vec<&str> = out()
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("EXIT-{name} ")))
        .collect();
    let log = || {
        out()
            .lines()
            .filter(|l| l.starts_with(name))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(exit.len(), 1, "no exit line for {name}:\n{}", out());
    assert!(
        exit[0].starts_with("0 "),
        "{name} exited {}:\n{}",
        exit[0],
        log()
    );
    assert!(
        serial(name).iter().any(|l| l.contains(banner)),
        "{name}: no {banner:?} from the boot loader:\n{}",
        log()
    );
    assert_eq!(
        values(name, "KETTLE-TEST-EXIT"),
        vec!["0".to_string()],
        "{name}:\n{}",
        log()
    );
    // The loader adds its own parameters (BOOT_IMAGE=, initrd=); the configured ones are there.
    let got = values(name, "CMDLINE");
    let words: Vec<&str> = got
        .first()
        .map(|c| c.split(' ').collect())
        .unwrap_or_default();
    for want in CMDLINE.split(' ') {
        assert!(
            words.contains(&want),
            "{name}: {want} of the boot loader's command line did not reach the kernel ({got:?}):\n{}",
            log()
        );
    }
}

fn firmware_view(name: &str) -> (Vec<String>, Vec<String>) {
    let mut e820 = values(name, "FW BIOS-e820:");
    let mut acpi = values(name, "ACPITABLE");
    e820.sort();
    acpi.sort();
    assert!(!e820.is_empty(), "{name}: no e820 map in dmesg");
    assert!(!acpi.is_empty(), "{name}: no ACPI tables");
    (e820, acpi)
}

#[test]
fn a_syslinux_vhd_on_ide_boots_linux_through_kettles_bios() {
    booted("syslinux", "SYSLINUX");
}

#[test]
fn a_grub2_disk_boots_linux_through_kettles_bios() {
    booted("grub", "GRUB");
}

#[test]
fn an_isolinux_cd_on_the_atapi_drive_boots_linux_through_kettles_bios() {
    booted("isolinux", "ISOLINUX");
}

#[test]
fn seabios_boots_the_same_three_appliances() {
    booted("sb-syslinux", "SYSLINUX");
    booted("sb-grub", "GRUB");
    booted("sb-isolinux", "ISOLINUX");
}

#[test]
fn linux_sees_the_same_memory_map_and_acpi_tables_through_kettles_bios_as_when_loaded_directly() {
    booted("direct", "KETTLE-GUEST-READY");
    let direct = firmware_view("direct");
    for name in ["syslinux", "grub", "isolinux"] {
        assert_eq!(firmware_view(name), direct, "{name} vs direct boot");
    }
}

#[test]
fn under_seabios_linux_gets_kettles_acpi_tables_through_fw_cfg() {
    let (_, direct) = firmware_view("direct");
    let dsdt = |tables: &[String]| {
        tables
            .iter()
            .find(|t| t.starts_with("DSDT "))
            .cloned()
            .expect("a DSDT")
    };
    for name in ["sb-syslinux", "sb-grub", "sb-isolinux"] {
        let (e820, acpi) = firmware_view(name);
        // The DSDT holds no pointers: SeaBIOS's table loader must deliver it byte for byte.
        assert_eq!(dsdt(&acpi), dsdt(&direct), "{name}");
        for sig in ["FACP ", "APIC ", "FACS "] {
            assert!(acpi.iter().any(|t| t.starts_with(sig)), "{name}: {acpi:?}");
        }
        assert!(
            e820.iter()
                .any(|l| l.starts_with("[mem 0x0000000000100000-") && l.ends_with("usable")),
            "{name}: {e820:?}"
        );
    }
}

#[test]
fn linux_finds_the_smbios_and_mp_tables_of_kettles_bios() {
    for name in ["syslinux", "direct"] {
        let info = values(name, "FWINFO").join("\n");
        assert!(info.contains("SMBIOS 2.8 present."), "{name}: {info}");
        assert!(info.contains("DMI: kettle kettle VM"), "{name}: {info}");
        assert!(
            info.contains("found SMP MP-table at [mem 0x000f8000-0x000f800f]"),
            "{name}: {info}"
        );
    }
}
