//! The BIOS on the local KVM: boot sectors and CD boot images, assembled here, booted by the real
//! `kettle` binary with no `--kernel`, calling the BIOS services a boot loader calls (INT 10h,
//! 11h, 12h, 13h, 15h, 1Ah) and printing what they got on the console (INT 10h, mirrored to
//! COM1). Every test runs with kettle's BIOS; the ones a second BIOS must pass too run again
//! with SeaBIOS (`--bios`), as a second opinion on kettle's machine and on the tests.
//! (Linux boot loaders through the BIOS run in the nested test host: nested_bios.rs.)

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kettle_tests::guest;
use kettle_tests::nested::kettle_binary;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Firmware {
    Kettle,
    SeaBios,
}

impl Firmware {
    fn args(self) -> Vec<String> {
        match self {
            Firmware::Kettle => vec![],
            Firmware::SeaBios => vec!["--bios".into(), guest::seabios().into()],
        }
    }
}

struct Run {
    code: Option<i32>,
    serial: String,
    stderr: String,
}

fn spawn(fw: Firmware, serial: &Path, args: &[&str]) -> Child {
    Command::new(kettle_binary())
        .arg("run")
        .args(fw.args())
        .args(["--memory", "64M", "--serial"])
        .arg(format!("file:{}", serial.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting kettle")
}

/// Runs kettle to its exit (60 s at most) with COM1 in a file next to `image`.
fn run(fw: Firmware, image: &Path, args: &[&str]) -> Run {
    let serial = image.with_extension(format!("{fw:?}.serial"));
    let fw_args = fw.args();
    let mut all: Vec<&str> = fw_args.iter().map(String::as_str).collect();
    all.extend_from_slice(&["--memory", "64M"]);
    all.extend_from_slice(args);
    let (code, serial, stderr) = guest::run_to_exit(&serial, &all);
    Run {
        code,
        serial,
        stderr,
    }
}

/// Runs kettle until COM1 shows `text` (then stops it), for guests that never exit.
fn run_until(fw: Firmware, dir: &Path, args: &[&str], text: &str) -> Run {
    let serial = dir.join(format!("until-{fw:?}.serial"));
    let mut child = spawn(fw, &serial, args);
    let start = Instant::now();
    loop {
        let out = std::fs::read_to_string(&serial).unwrap_or_default();
        if out.contains(text) {
            // Let it go on a little: it must not crash afterwards either.
            std::thread::sleep(Duration::from_millis(300));
            let exited = child.try_wait().unwrap();
            let _ = child.kill();
            let _ = child.wait();
            let stderr = guest::child_stderr(&mut child);
            let out = std::fs::read_to_string(&serial).unwrap_or_default();
            let _ = std::fs::remove_file(&serial);
            return Run {
                code: exited.and_then(|s| s.code()),
                serial: out,
                stderr,
            };
        }
        if let Some(s) = child.try_wait().unwrap() {
            panic!(
                "kettle ({fw:?}) exited ({s}) before COM1 showed {text:?}\nserial: {out}\nstderr: {}",
                guest::child_stderr(&mut child)
            );
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "COM1 did not show {text:?} within 60 s ({fw:?})\nserial: {out}\nstderr: {}",
                guest::child_stderr(&mut child)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_clean_exit(r: &Run, what: &str) {
    assert_eq!(
        r.code,
        Some(0),
        "{what}: kettle did not exit 0\nserial: {}\nstderr: {}",
        r.serial,
        r.stderr
    );
}

/// The value after `key ` on the first COM1 line that starts with it.
fn field<'a>(serial: &'a str, key: &str) -> &'a str {
    serial
        .lines()
        .find_map(|l| l.strip_prefix(key).map(str::trim))
        .unwrap_or_else(|| panic!("no {key:?} line on COM1:\n{serial}"))
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s, 16).unwrap_or_else(|e| panic!("{s:?} is not hex: {e}"))
}

/// `puthex32`: %eax as 8 hex digits (a subroutine for the bodies below).
const PUTHEX32: &str = r#"
puthex32:
    ror $16, %eax
    call puthex16
    ror $16, %eax
    call puthex16
    ret
"#;

const SERVICES: &str = r#"
main:
    puts hello
    mov %dl, %al
    puts drive
    mov boot_drive, %al
    call puthex8
    puts eol
    int $0x12
    push %ax
    puts int12
    pop %ax
    call puthex16
    puts eol
    int $0x11
    push %ax
    puts int11
    pop %ax
    call puthex16
    puts eol
    mov $0x88, %ah
    int $0x15
    push %ax
    puts int1588
    pop %ax
    call puthex16
    puts eol
    xor %ebx, %ebx
e820_next:
    mov $0xe820, %eax
    mov $20, %ecx
    mov $0x534d4150, %edx
    mov $0x6000, %di
    int $0x15
    jc e820_done
    push %ebx
    puts e820
    mov 0x6004, %eax
    call puthex32
    mov 0x6000, %eax
    call puthex32
    mov $' ', %al
    call putc
    mov 0x600c, %eax
    call puthex32
    mov 0x6008, %eax
    call puthex32
    mov $' ', %al
    call putc
    mov 0x6010, %eax
    call puthex32
    puts eol
    pop %ebx
    test %ebx, %ebx
    jnz e820_next
e820_done:
    puts done
    poweroff
"#;

const SERVICES_DATA: &str = r#"
hello: .asciz "BIOS-SERVICES\r\n"
drive: .asciz "DL "
int12: .asciz "INT12 "
int11: .asciz "INT11 "
int1588: .asciz "INT1588 "
e820: .asciz "E820 "
done: .asciz "DONE\r\n"
eol: .asciz "\r\n"
"#;

fn services_guest() -> PathBuf {
    let body = format!("{SERVICES}\n{PUTHEX32}\n{SERVICES_DATA}");
    let sector = guest::boot_sector("services", &body);
    guest::raw_disk("services", &sector, &[], 1 << 20)
}

fn e820_lines(serial: &str) -> Vec<(u64, u64, u32)> {
    serial
        .lines()
        .filter_map(|l| l.strip_prefix("E820 "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 3, "bad E820 line {l:?}");
            (hex(f[0]), hex(f[1]), hex(f[2]) as u32)
        })
        .collect()
}

#[test]
fn a_boot_sector_gets_the_memory_map_and_equipment_from_kettles_bios() {
    let disk = services_guest();
    let r = run(Firmware::Kettle, &disk, &["--disk", disk.to_str().unwrap()]);
    assert_clean_exit(&r, "services");
    assert!(r.serial.contains("BIOS-SERVICES"), "{}", r.serial);
    assert!(r.serial.contains("DONE"), "{}", r.serial);
    assert_eq!(field(&r.serial, "DL"), "80", "boot drive");
    // 639 KiB below the EBDA.
    assert_eq!(hex(field(&r.serial, "INT12")), 639);
    // 63 MiB from 1 MiB, in KiB.
    assert_eq!(hex(field(&r.serial, "INT1588")), 63 * 1024);
    let eq = hex(field(&r.serial, "INT11"));
    assert_eq!(
        (eq >> 9) & 7,
        2,
        "two serial ports in the equipment word {eq:#x}"
    );
    assert_eq!(
        (eq >> 4) & 3,
        2,
        "80x25 colour in the equipment word {eq:#x}"
    );
    // E820: exactly the map kettle gives a kernel it boots directly.
    let layout = arch::layout::MemoryLayout::new(64 << 20).unwrap();
    let want: Vec<(u64, u64, u32)> = arch::e820::entries(&layout)
        .iter()
        .map(|e| (e.addr, e.size, e.kind))
        .collect();
    assert_eq!(e820_lines(&r.serial), want, "{}", r.serial);
    guest::remove(&disk);
}

const INT13: &str = r#"
main:
    mov $0x41, %ah
    mov $0x55aa, %bx
    mov boot_drive, %dl
    int $0x13
    jc fail
    push %cx
    push %bx
    puts s41
    pop %ax
    call puthex16
    call space
    pop %ax
    call puthex16
    puts eol
    mov $0x08, %ah
    mov boot_drive, %dl
    int $0x13
    jc fail
    push %dx
    push %cx
    puts s08
    pop %ax
    call puthex16
    call space
    pop %ax
    call puthex16
    puts eol
    # CHS: 4 sectors from cylinder 0, head 0, sector 2 (LBA 1) to 0:8000.
    mov $0x0204, %ax
    mov $0x0002, %cx
    xor %dh, %dh
    mov $0x8000, %bx
    call chs
    puts schs
    mov $0x8000, %si
    call sum
    # CHS: 1 sector from cylinder 0, head 1, sector 1 (LBA = sectors per track) to 0:8000.
    mov $0x0201, %ax
    mov $0x0001, %cx
    mov $1, %dh
    mov $0x8000, %bx
    call chs
    puts shead
    mov 0x8000, %eax
    call puthex32
    puts eol
    # Extended read: 4 sectors from LBA 5 to 0:9000.
    mov $0x42, %ah
    mov $dapr, %si
    call ext
    puts slba
    mov $0x9000, %si
    call sum
    # Extended write: the first sector read from LBA 5 (at 0:9000) to LBA 20.
    mov $0x4300, %ax
    mov $dapw, %si
    call ext
    puts wrote
    poweroff

chs:
    mov boot_drive, %dl
    int $0x13
    jc fail
    ret
ext:
    mov boot_drive, %dl
    int $0x13
    jc fail
    ret
fail:
    push %ax
    puts failed
    pop %ax
    mov %ah, %al
    call puthex8
    puts eol
    poweroff
# The 16-bit byte sum of 2048 bytes at %si, printed.
sum:
    mov $2048, %cx
    xor %bx, %bx
    xor %ah, %ah
1:  lodsb
    add %ax, %bx
    loop 1b
    mov %bx, %ax
    call puthex16
    puts eol
    ret
space:
    mov $' ', %al
    jmp putc

dapr: .byte 0x10, 0
    .word 4, 0x9000, 0
    .quad 5
dapw: .byte 0x10, 0
    .word 1, 0x9000, 0
    .quad 20
s41: .asciz "INT1341 "
s08: .asciz "INT1308 "
schs: .asciz "CHS "
shead: .asciz "HEAD1 "
slba: .asciz "LBA "
wrote: .asciz "WROTE\r\n"
failed: .asciz "FAILED "
eol: .asciz "\r\n"
"#;

/// Sector `lba` of the INT 13h test disk: its LBA in the first four bytes, then a pattern.
fn pattern_sector(lba: u64) -> Vec<u8> {
    let mut s: Vec<u8> = (0..512u64)
        .map(|i| ((lba * 7 + i * 13) % 251) as u8)
        .collect();
    s[..4].copy_from_slice(&(lba as u32).to_le_bytes());
    s
}

fn byte_sum(lbas: std::ops::Range<u64>) -> u64 {
    lbas.flat_map(pattern_sector).map(u64::from).sum::<u64>() & 0xffff
}

/// An 8 MiB disk whose every sector after the boot sector is a [`pattern_sector`].
fn int13_disk() -> PathBuf {
    let body = format!("{INT13}\n{PUTHEX32}");
    let sector = guest::boot_sector("int13", &body);
    let size = 8u64 << 20;
    let rest: Vec<u8> = (1..size / 512).flat_map(pattern_sector).collect();
    guest::raw_disk("int13", &sector, &rest, size)
}

fn check_int13(fw: Firmware) {
    let disk = int13_disk();
    let r = run(fw, &disk, &["--disk", disk.to_str().unwrap()]);
    assert_clean_exit(&r, "int13");
    assert!(!r.serial.contains("FAILED"), "{fw:?}: {}", r.serial);
    // AH=41h: extensions present (BX=AA55h), fixed-disk access (DAP) supported.
    let ext = field(&r.serial, "INT1341");
    let (bx, cx) = ext.split_once(' ').unwrap();
    assert_eq!(bx, "aa55", "{fw:?}: INT 13h AH=41h BX");
    assert!(
        hex(cx) & 1 != 0,
        "{fw:?}: INT 13h AH=41h CX {cx} lacks DAP access"
    );
    // AH=08h: a geometry that covers the disk without going past it.
    let geo = field(&r.serial, "INT1308");
    let (cyls, heads, spt) = chs_of(geo);
    let total = (8u64 << 20) / 512;
    assert!(
        spt > 0 && cyls * heads * spt <= total,
        "{fw:?}: geometry {cyls}/{heads}/{spt}"
    );
    assert!(
        cyls * heads * spt > total / 2,
        "{fw:?}: geometry {cyls}/{heads}/{spt} wastes the disk"
    );
    let dx = hex(geo.split_once(' ').unwrap().1);
    assert_eq!(dx & 0xff, 1, "{fw:?}: one hard disk");
    // Reads, by CHS (LBA 1-4 and head 1 = LBA spt) and by LBA (5-8).
    assert_eq!(
        hex(field(&r.serial, "CHS")),
        byte_sum(1..5),
        "{fw:?}: CHS read"
    );
    assert_eq!(
        hex(field(&r.serial, "HEAD1")),
        spt,
        "{fw:?}: CHS head 1 read"
    );
    assert_eq!(
        hex(field(&r.serial, "LBA")),
        byte_sum(5..9),
        "{fw:?}: LBA read"
    );
    assert!(r.serial.contains("WROTE"), "{fw:?}: {}", r.serial);
    // The extended write reached the image.
    let image = std::fs::read(&disk).unwrap();
    assert_eq!(
        image[20 * 512..21 * 512],
        pattern_sector(5)[..],
        "{fw:?}: LBA 20 after the write"
    );
    assert_eq!(
        image[21 * 512..22 * 512],
        pattern_sector(21)[..],
        "{fw:?}: LBA 21 untouched"
    );
    guest::remove(&disk);
}

#[test]
fn int13_reads_by_chs_and_lba_and_writes_through_to_the_image() {
    check_int13(Firmware::Kettle);
}

#[test]
fn without_a_boot_sector_the_bios_says_there_is_no_bootable_device() {
    // A blank disk (no 0x55 0xAA), then a good disk outside the boot order (only the CD, and
    // there is none): the BIOS says so on COM1 and waits.
    let blank = guest::raw_disk("blank", &[0; 512], &[], 1 << 20);
    let good = services_guest();
    let dir = blank.parent().unwrap();
    for args in [
        vec!["--disk", blank.to_str().unwrap()],
        vec!["--disk", good.to_str().unwrap(), "--boot", "cdrom"],
    ] {
        let r = run_until(Firmware::Kettle, dir, &args, "no bootable device");
        assert_eq!(r.code, None, "kettle exited: {}", r.stderr);
        assert!(
            r.stderr.contains("nothing to boot"),
            "kettle's log does not say why the VM waits: {}",
            r.stderr
        );
    }
    guest::remove(&blank);
    guest::remove(&good);
}

const REBOOT: &str = r#"
main:
    mov $0x0201, %ax
    call lba1
    cmpb $0, 0x8000
    jne second
    movb $1, 0x8000
    mov $0x0301, %ax
    call lba1
    puts first
    mov $0xfe, %al
    out %al, $0x64
1:  hlt
    jmp 1b
second:
    puts again
    poweroff
lba1:
    mov $0x0002, %cx
    xor %dh, %dh
    mov boot_drive, %dl
    mov $0x8000, %bx
    int $0x13
    jc 1f
    ret
1:  puts failed
    poweroff
first: .asciz "FIRST BOOT\r\n"
again: .asciz "SECOND BOOT\r\n"
failed: .asciz "FAILED\r\n"
"#;

#[test]
fn a_guest_reset_goes_through_post_and_the_boot_sector_again() {
    let sector = guest::boot_sector("reboot", REBOOT);
    let disk = guest::raw_disk("reboot", &sector, &[], 1 << 20);
    let r = run(
        Firmware::Kettle,
        &disk,
        &["--disk", disk.to_str().unwrap(), "--log-level", "info"],
    );
    assert_clean_exit(&r, "reboot");
    assert_eq!(r.serial.matches("FIRST BOOT").count(), 1, "{}", r.serial);
    assert_eq!(r.serial.matches("SECOND BOOT").count(), 1, "{}", r.serial);
    assert!(!r.serial.contains("FAILED"), "{}", r.serial);
    assert!(r.stderr.contains("guest rebooted"), "{}", r.stderr);
    guest::remove(&disk);
}

const CD_BOOT: &str = r#"
main:
    puts cd
    mov boot_drive, %al
    call puthex8
    puts eol
    mov $0x4b01, %ax
    mov boot_drive, %dl
    mov $0x6000, %si
    int $0x13
    jc fail
    puts spec
    mov 0x6000, %al
    call puthex8
    call space
    mov 0x6001, %al
    call puthex8
    call space
    mov 0x6002, %al
    call puthex8
    puts eol
    mov $0x42, %ah
    mov boot_drive, %dl
    mov $dap, %si
    int $0x13
    jc fail
    puts pvd
    mov $0x8001, %si
    mov $5, %cx
1:  lodsb
    call putc
    loop 1b
    puts eol
    poweroff
fail:
    push %ax
    puts failed
    pop %ax
    mov %ah, %al
    call puthex8
    puts eol
    poweroff
space:
    mov $' ', %al
    jmp putc
dap: .byte 0x10, 0
    .word 1, 0x8000, 0
    .quad 16
cd: .asciz "CD-BOOT DL "
spec: .asciz "SPEC "
pvd: .asciz "PVD "
failed: .asciz "FAILED "
eol: .asciz "\r\n"
"#;

/// An ISO 9660 image whose El Torito boot image (no emulation, 4 virtual sectors) is
/// [`CD_BOOT`], made with xorriso.
fn cd_image() -> PathBuf {
    let mut image = guest::boot_sector("cdboot", CD_BOOT);
    image.resize(2048, 0);
    let disk = guest::raw_disk("cdboot", &image, &[], 2048);
    let dir = disk.parent().unwrap().to_path_buf();
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::rename(&disk, tree.join("boot.bin")).unwrap();
    std::fs::write(tree.join("README.TXT"), "kettle El Torito test\n").unwrap();
    let iso = dir.join("cd.iso");
    let out = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-o"])
        .arg(&iso)
        .args(["-b", "boot.bin", "-no-emul-boot", "-boot-load-size", "4"])
        .arg(&tree)
        .output()
        .expect("running xorriso (resources/setup.sh installs it)");
    assert!(
        out.status.success(),
        "xorriso failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    iso
}

fn check_cd_boot(fw: Firmware) {
    let iso = cd_image();
    let r = run(
        fw,
        &iso,
        &["--cdrom", iso.to_str().unwrap(), "--boot", "cdrom"],
    );
    assert_clean_exit(&r, "CD boot");
    assert!(!r.serial.contains("FAILED"), "{fw:?}: {}", r.serial);
    let dl = hex(field(&r.serial, "CD-BOOT DL"));
    assert!(dl >= 0xe0, "{fw:?}: CD boot drive {dl:#x}");
    // AX=4B01h: a 13h-byte specification packet, no emulation, the same drive.
    let spec = field(&r.serial, "SPEC");
    assert_eq!(spec, format!("13 00 {dl:02x}"), "{fw:?}: {}", r.serial);
    // A 2048-byte read of sector 16: the primary volume descriptor.
    assert_eq!(field(&r.serial, "PVD"), "CD001", "{fw:?}: {}", r.serial);
    guest::remove(&iso);
}

#[test]
fn a_cd_boots_through_el_torito_without_emulation() {
    check_cd_boot(Firmware::Kettle);
}

#[test]
fn seabios_serves_the_same_boot_sector() {
    let disk = services_guest();
    let r = run(
        Firmware::SeaBios,
        &disk,
        &["--disk", disk.to_str().unwrap()],
    );
    assert_clean_exit(&r, "services under SeaBIOS");
    assert!(r.serial.contains("DONE"), "{}", r.serial);
    assert_eq!(field(&r.serial, "DL"), "80", "boot drive");
    // SeaBIOS reserves pieces of RAM for itself, but it reads the map from kettle's fw_cfg: the
    // conventional memory and the RAM from 1 MiB are there.
    let map = e820_lines(&r.serial);
    assert!(
        map.iter()
            .any(|&(a, s, t)| a == 0 && s >= 0x9f000 && t == 1),
        "{map:x?}"
    );
    assert!(
        map.iter()
            .any(|&(a, s, t)| a == 0x10_0000 && s >= 60 << 20 && t == 1),
        "{map:x?}"
    );
    guest::remove(&disk);
}

#[test]
fn seabios_reads_and_writes_the_disk_through_kettles_ide() {
    check_int13(Firmware::SeaBios);
}

/// Prints INT 13h AH=08h's CX and DX for drive 80h.
const GEOMETRY: &str = r#"
main:
    mov $0x08, %ah
    mov $0x80, %dl
    int $0x13
    jc 1f
    push %dx
    push %cx
    puts s08
    pop %ax
    call puthex16
    mov $' ', %al
    call putc
    pop %ax
    call puthex16
    puts eol
    poweroff
1:  puts failed
    poweroff
s08: .asciz "INT1308 "
failed: .asciz "INT1308-FAILED\r\n"
eol: .asciz "\r\n"
"#;

/// Cylinders, heads and sectors per track of an AH=08h "CX DX" answer.
fn chs_of(answer: &str) -> (u64, u64, u64) {
    let (cx, dx) = answer.split_once(' ').unwrap();
    let (cx, dx) = (hex(cx), hex(dx));
    (
        ((cx >> 8) | ((cx & 0xc0) << 2)) + 1,
        (dx >> 8) + 1,
        cx & 0x3f,
    )
}

#[test]
fn both_bioses_give_a_large_disk_the_same_geometry() {
    // 2 GiB (sparse): past 1024*16*63 sectors, where the LBA-assisted translation gives more
    // heads; SeaBIOS translates so too because kettle's CMOS (0x39) asks for it.
    let sector = guest::boot_sector("geometry", GEOMETRY);
    let disk = guest::raw_disk("geometry", &sector, &[], 1 << 20);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let mut seen = Vec::new();
    for fw in [Firmware::Kettle, Firmware::SeaBios] {
        let r = run(fw, &disk, &["--disk", disk.to_str().unwrap()]);
        assert_clean_exit(&r, "geometry");
        seen.push(chs_of(field(&r.serial, "INT1308")));
    }
    assert_eq!(
        seen[0],
        (520, 128, 63),
        "kettle's BIOS: 4194304 sectors, LBA-assisted"
    );
    // SeaBIOS, like the Bochs BIOS, leaves the last cylinder out of AH=08h's count.
    let (c, h, s) = seen[0];
    assert_eq!(seen[1], (c - 1, h, s), "SeaBIOS and kettle's BIOS disagree");
    guest::remove(&disk);
}

#[test]
fn seabios_boots_the_el_torito_cd_from_kettles_atapi_drive() {
    check_cd_boot(Firmware::SeaBios);
}

const KEYS: &str = r#"
main:
    puts ready
1:  xor %ah, %ah
    int $0x16
    push %ax
    puts key
    pop %ax
    call puthex16
    puts eol
    cmp $'q', %al
    jne 1b
    poweroff
ready: .asciz "WAITING FOR KEYS\r\n"
key: .asciz "KEY "
eol: .asciz "\r\n"
"#;

#[test]
fn int16_reads_keys_typed_on_the_serial_console() {
    use std::io::Write;
    let sector = guest::boot_sector("keys", KEYS);
    let disk = guest::raw_disk("keys", &sector, &[], 1 << 20);
    let mut child = Command::new(kettle_binary())
        .args(["run", "--memory", "64M", "--serial", "stdio", "--disk"])
        .arg(&disk)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting kettle");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // Type only once the guest waits in INT 16h (the BIOS's hlt loop), and the keys one by one.
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    });
    std::thread::sleep(Duration::from_millis(1500));
    for key in [&b"a"[..], b"Z", b"\r", b"\x1b[A", b"\x7f", b"q"] {
        stdin.write_all(key).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the guest did not end after 'q': {}",
                guest::child_stderr(&mut child)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader.join().unwrap();
    assert!(
        status.success(),
        "{out}\n{}",
        guest::child_stderr(&mut child)
    );
    assert!(out.contains("WAITING FOR KEYS"), "{out}");
    let keys: Vec<&str> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("KEY "))
        .collect();
    // Scan code and ASCII of each: a, Z (shifted), Enter, cursor up, backspace, q.
    assert_eq!(
        keys,
        ["1e61", "2c5a", "1c0d", "4800", "0e08", "1071"],
        "{out}"
    );
    guest::remove(&disk);
}

/// Looks for the MP floating pointer, the $PIR table and the SMBIOS entry point where a
/// scanning OS does (paragraph boundaries of F000h) and prints where each is.
const TABLES: &str = r#"
main:
    mov $0xf000, %ax
    mov %ax, %es
    mov $0x5f504d5f, %eax
    call find
    mov $0x52495024, %eax
    call find
    mov $0x5f4d535f, %eax
    call find
    puts done
    poweroff
# Prints "SIG ssss at oooo" for the signature in %eax (or "SIG ssss missing").
find:
    push %eax
    puts sig
    pop %eax
    push %eax
    call puthex32
    pop %eax
    xor %di, %di
1:  cmp %es:(%di), %eax
    je 2f
    add $16, %di
    jnz 1b
    puts missing
    ret
2:  puts at
    mov %di, %ax
    call puthex16
    puts eol
    ret
sig: .asciz "SIG "
at: .asciz " at "
missing: .asciz " missing\r\n"
done: .asciz "DONE\r\n"
eol: .asciz "\r\n"
"#;

#[test]
fn post_leaves_the_mp_pir_and_smbios_tables_where_scanners_look() {
    let body = format!("{TABLES}\n{PUTHEX32}");
    let sector = guest::boot_sector("tables", &body);
    let disk = guest::raw_disk("tables", &sector, &[], 1 << 20);
    let r = run(Firmware::Kettle, &disk, &["--disk", disk.to_str().unwrap()]);
    assert_clean_exit(&r, "tables");
    for sig in ["5f504d5f", "52495024", "5f4d535f"] {
        let at = field(&r.serial, &format!("SIG {sig}"));
        assert!(at.starts_with("at "), "signature {sig}: {}", r.serial);
    }
    guest::remove(&disk);
}

/// Writes a line through INT 10h at row 5, then reads the text buffer at B800:0320 back.
const SCREEN: &str = r#"
main:
    mov $0x02, %ah
    xor %bh, %bh
    mov $0x0500, %dx
    int $0x10
    puts text
    puts read
    mov $0xb800, %ax
    mov %ax, %es
    mov $5*80*2, %di
    mov $11, %cx
1:  mov %es:(%di), %al
    call putc
    add $2, %di
    loop 1b
    puts eol
    poweroff
text: .asciz "SCREEN-TEXT"
read: .asciz "\r\nREAD "
eol: .asciz "\r\n"
"#;

#[test]
fn int10_text_lands_in_the_vga_text_buffer() {
    let sector = guest::boot_sector("screen", SCREEN);
    let disk = guest::raw_disk("screen", &sector, &[], 1 << 20);
    let r = run(Firmware::Kettle, &disk, &["--disk", disk.to_str().unwrap()]);
    assert_clean_exit(&r, "screen");
    assert_eq!(field(&r.serial, "READ"), "SCREEN-TEXT", "{}", r.serial);
    guest::remove(&disk);
}
