//! IDE from small guest programs on the local KVM: PIO and bus-master DMA transfers checked
//! against the image file on the host, and guests that program the controller with garbage
//! (DMA outside RAM, a PRD table that runs off the end of RAM, sectors past the disk end),
//! which must get errors without hanging the vCPU or touching the host.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kettle_tests::guest::{self, run_kettle};
use kettle_tests::nested::kettle_binary;

const SECTORS: usize = 2048; // a 1 MiB raw disk

/// Routines every IDE guest uses: wait for !BSY, select LBA28 sectors on the primary master,
/// and a 32-bit sum over a buffer.
const IDE_LIB: &str = r#"
    .set ATA_DATA, 0x1f0
    .set ATA_ERR, 0x1f1
    .set ATA_COUNT, 0x1f2
    .set ATA_LBA0, 0x1f3
    .set ATA_LBA1, 0x1f4
    .set ATA_LBA2, 0x1f5
    .set ATA_DEV, 0x1f6
    .set ATA_CMD, 0x1f7
    .set ATA_ALT, 0x3f6

# Waits until BSY clears; status in %al.
ata_wait:
    mov $ATA_CMD, %dx
1:  in %dx, %al
    test $0x80, %al
    jnz 1b
    ret

# Waits for DRQ (or ERR); status in %al.
ata_wait_drq:
    mov $ATA_CMD, %dx
1:  in %dx, %al
    test $0x80, %al
    jnz 1b
    test $0x09, %al
    jz 1b
    ret

# %eax = LBA, %cl = count: programs an LBA28 transfer on the master (command not yet given).
ata_setup:
    push %eax
    call ata_wait
    pop %eax
    push %eax
    shr $24, %eax
    and $0x0f, %al
    or $0xe0, %al
    mov $ATA_DEV, %dx
    out %al, %dx
    mov $ATA_COUNT, %dx
    mov %cl, %al
    out %al, %dx
    pop %eax
    mov $ATA_LBA0, %dx
    out %al, %dx
    shr $8, %eax
    mov $ATA_LBA1, %dx
    out %al, %dx
    shr $8, %eax
    mov $ATA_LBA2, %dx
    out %al, %dx
    ret

# %esi = buffer, %ecx = bytes (multiple of 4): %eax = sum of the dwords.
sum32:
    xor %eax, %eax
1:  add (%esi), %eax
    add $4, %esi
    sub $4, %ecx
    jnz 1b
    ret

print_hex_nl:
    call puthex32
    push %eax
    mov $'\n', %al
    call putc
    pop %eax
    ret
"#;

fn pattern() -> Vec<u8> {
    (0..SECTORS * 512)
        .map(|i| ((i / 512) as u8).wrapping_mul(31) ^ (i as u8))
        .collect()
}

fn sum32(bytes: &[u8]) -> u32 {
    bytes
        .chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .fold(0u32, |a, b| a.wrapping_add(b))
}

struct IdeRun {
    code: Option<i32>,
    serial: String,
    stderr: String,
    disk: Vec<u8>,
}

fn run_ide_guest(name: &str, body: &str, disk_opts: &str) -> IdeRun {
    let elf = guest::build(name, &format!("{IDE_LIB}\n{body}"));
    let dir = elf.parent().unwrap().to_path_buf();
    let disk = dir.join("disk.img");
    std::fs::write(&disk, pattern()).unwrap();
    let (code, serial, stderr) =
        run_kettle(&elf, &[&format!("--disk={}{disk_opts}", disk.display())]);
    let r = IdeRun {
        code,
        serial,
        stderr,
        disk: std::fs::read(&disk).unwrap(),
    };
    guest::remove(&elf);
    r
}

#[test]
fn pio_read_and_write_reach_the_image() {
    let r = run_ide_guest(
        "idepio",
        r#"
main:
    # READ SECTORS: LBA 3, 2 sectors, 16-bit PIO into 0x20000.
    mov $3, %eax
    mov $2, %cl
    call ata_setup
    mov $ATA_CMD, %dx
    mov $0x20, %al
    out %al, %dx
    mov $0x20000, %edi
    mov $2, %ebx
1:  call ata_wait_drq
    mov $256, %ecx
    mov $ATA_DATA, %dx
2:  in %dx, %ax
    mov %ax, (%edi)
    add $2, %edi
    loop 2b
    dec %ebx
    jnz 1b
    mov $0x20000, %esi
    mov $1024, %ecx
    call sum32
    call print_hex_nl
    # WRITE SECTORS: LBA 7, 1 sector of 'K' + i with 32-bit PIO, then FLUSH CACHE.
    mov $0x21000, %edi
    xor %ecx, %ecx
3:  mov %cl, %al
    add $'K', %al
    mov %al, (%edi,%ecx)
    inc %ecx
    cmp $512, %ecx
    jne 3b
    mov $7, %eax
    mov $1, %cl
    call ata_setup
    mov $ATA_CMD, %dx
    mov $0x30, %al
    out %al, %dx
    call ata_wait_drq
    mov $128, %ecx
    mov $0x21000, %esi
    mov $ATA_DATA, %dx
4:  mov (%esi), %eax
    out %eax, %dx
    add $4, %esi
    loop 4b
    call ata_wait
    movzbl %al, %eax
    call print_hex_nl
    mov $ATA_CMD, %dx
    mov $0xe7, %al
    out %al, %dx
    call ata_wait
    movzbl %al, %eax
    call print_hex_nl
    poweroff
"#,
        "",
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let lines: Vec<&str> = r.serial.lines().collect();
    let expect = sum32(&pattern()[3 * 512..5 * 512]);
    assert_eq!(lines[0], format!("{expect:08x}"), "PIO read of sectors 3-4");
    assert_eq!(lines[1], "00000050", "write done: DRDY|DSC, no error");
    assert_eq!(lines[2], "00000050", "flush done");
    let written: Vec<u8> = (0..512).map(|i| (i as u8).wrapping_add(b'K')).collect();
    assert_eq!(
        &r.disk[7 * 512..8 * 512],
        &written[..],
        "sector 7 on the host"
    );
    assert_eq!(
        &r.disk[..7 * 512],
        &pattern()[..7 * 512],
        "nothing else changed"
    );
    assert_eq!(&r.disk[8 * 512..], &pattern()[8 * 512..]);
}

/// Bus-master set-up shared by the DMA guests: %ebx = BAR4 base; bus mastering enabled.
const BM_SETUP: &str = r#"
    pci_read 0x80003920
    and $0xfff0, %eax
    mov %eax, %ebx
    # PCI command: I/O space + bus master.
    mov $0x80003904, %eax
    mov $0xcf8, %dx
    out %eax, %dx
    mov $0xcfc, %dx
    mov $0x0005, %ax
    out %ax, %dx
"#;

/// Starts READ DMA (%eax = LBA, %cl = count) with the PRD table at %edi, waits for the
/// bus-master interrupt bit (or the controller going idle), then prints BMIS and the ATA status.
const DMA_READ: &str = r#"
dma_read:
    push %eax
    push %ecx
    lea 4(%ebx), %edx
    mov %edi, %eax
    out %eax, %dx
    mov %ebx, %edx
    mov $0x08, %al
    out %al, %dx
    lea 2(%ebx), %edx
    mov $0x06, %al
    out %al, %dx
    pop %ecx
    pop %eax
    call ata_setup
    mov $ATA_CMD, %dx
    mov $0xc8, %al
    out %al, %dx
    mov %ebx, %edx
    mov $0x09, %al
    out %al, %dx
    lea 2(%ebx), %edx
    mov $1000000, %ecx
1:  in %dx, %al
    test $0x04, %al
    jnz 2f
    test $0x01, %al
    jz 2f
    loop 1b
2:  mov %ebx, %edx
    mov $0x08, %al
    out %al, %dx
    lea 2(%ebx), %edx
    in %dx, %al
    movzbl %al, %eax
    call print_hex_nl
    call ata_wait
    movzbl %al, %eax
    call print_hex_nl
    ret
"#;

fn dma_guest(name: &str, main: &str) -> IdeRun {
    run_ide_guest(name, &format!("{DMA_READ}\nmain:\n{BM_SETUP}\n{main}"), "")
}

#[test]
fn dma_read_lands_in_guest_memory() {
    let r = dma_guest(
        "idedma",
        r#"
    # Two PRDs: 512 bytes at 0x40000, then 1024 bytes at 0x50000 (EOT).
    mov $0x30000, %edi
    movl $0x40000, (%edi)
    movl $512, 4(%edi)
    movl $0x50000, 8(%edi)
    movl $0x80000400, 12(%edi)
    mov $10, %eax
    mov $3, %cl
    call dma_read
    mov $0x40000, %esi
    mov $512, %ecx
    call sum32
    call print_hex_nl
    mov $0x50000, %esi
    mov $1024, %ecx
    call sum32
    call print_hex_nl
    poweroff
"#,
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let l: Vec<&str> = r.serial.lines().collect();
    assert_eq!(l[0], "00000004", "BMIS: interrupt, no error, not active");
    assert_eq!(l[1], "00000050", "ATA status: ready, no error");
    assert_eq!(
        l[2],
        format!("{:08x}", sum32(&pattern()[10 * 512..11 * 512]))
    );
    assert_eq!(
        l[3],
        format!("{:08x}", sum32(&pattern()[11 * 512..13 * 512]))
    );
}

#[test]
fn dma_outside_ram_is_refused() {
    let r = dma_guest(
        "idedmabad",
        r#"
    mov $0x30000, %edi
    movl $0xf0000000, (%edi)
    movl $0x80000200, 4(%edi)
    mov $0, %eax
    mov $1, %cl
    call dma_read
    puts alive
    poweroff
alive: .asciz "alive\n"
"#,
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let l: Vec<&str> = r.serial.lines().collect();
    let bmis = u32::from_str_radix(l[0], 16).unwrap();
    assert_eq!(bmis & 0x03, 0x02, "BMIS error set, not active: {bmis:#x}");
    let status = u32::from_str_radix(l[1], 16).unwrap();
    assert_eq!(status & 0x81, 0x01, "ATA ERR, not busy: {status:#x}");
    assert_eq!(l[2], "alive");
    assert_eq!(r.disk, pattern(), "the image is untouched");
}

#[test]
fn prd_table_running_off_the_end_of_ram_is_refused() {
    // The table starts in the last 8 bytes of RAM (256 MiB guest) with no EOT and a 16-byte
    // entry: the controller must look past the end of RAM for the next one and stop there.
    let r = run_ide_guest(
        "ideprd",
        &format!(
            "{DMA_READ}\nmain:\n{BM_SETUP}\n{}",
            r#"
    mov $0xffffff8, %edi
    movl $0x40000, (%edi)
    movl $16, 4(%edi)
    mov $0, %eax
    mov $1, %cl
    call dma_read
    puts alive
    poweroff
alive: .asciz "alive\n"
"#
        ),
        "",
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let l: Vec<&str> = r.serial.lines().collect();
    let bmis = u32::from_str_radix(l[0], 16).unwrap();
    assert_eq!(bmis & 0x02, 0x02, "BMIS error: {bmis:#x}");
    assert_eq!(l[2], "alive");
}

#[test]
fn sectors_past_the_end_and_writes_to_a_readonly_disk_fail() {
    let r = run_ide_guest(
        "ideend",
        &format!(
            r#"
main:
    # READ SECTORS of the last sector and one past it.
    mov ${last}, %eax
    mov $2, %cl
    call ata_setup
    mov $ATA_CMD, %dx
    mov $0x20, %al
    out %al, %dx
    call ata_wait
    movzbl %al, %eax
    call print_hex_nl
    mov $ATA_ERR, %dx
    in %dx, %al
    movzbl %al, %eax
    call print_hex_nl
    # WRITE SECTORS on the read-only disk.
    mov $0, %eax
    mov $1, %cl
    call ata_setup
    mov $ATA_CMD, %dx
    mov $0x30, %al
    out %al, %dx
    call ata_wait
    test $0x08, %al
    jz 1f
    mov $256, %ecx
    mov $ATA_DATA, %dx
    xor %eax, %eax
2:  out %ax, %dx
    loop 2b
    call ata_wait
1:  movzbl %al, %eax
    call print_hex_nl
    poweroff
"#,
            last = SECTORS - 1
        ),
        ",readonly",
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let l: Vec<&str> = r.serial.lines().collect();
    let status = u32::from_str_radix(l[0], 16).unwrap();
    assert_eq!(status & 0x01, 0x01, "past the end: ERR: {status:#x}");
    let err = u32::from_str_radix(l[1], 16).unwrap();
    assert_ne!(err & 0x14, 0, "IDNF or ABRT: {err:#x}");
    let status = u32::from_str_radix(l[2], 16).unwrap();
    assert_eq!(status & 0x01, 0x01, "read-only write: ERR: {status:#x}");
    assert_eq!(r.disk, pattern(), "the image is untouched");
}

/// Starts a VM whose guest waits on its console (a unix socket nobody writes to) with `disk`,
/// and returns once kettle is up (its socket exists). The caller kills it.
fn start_waiting_vm(
    waiter: &std::path::Path,
    sock: &std::path::Path,
    disk: &std::path::Path,
) -> std::process::Child {
    let child = Command::new(kettle_binary())
        .arg("run")
        .arg("--kernel")
        .arg(waiter)
        .arg("--serial")
        .arg(format!("unix:{}", sock.display()))
        .arg(format!("--disk={}", disk.display()))
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the first VM did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// The guest of the undo tests: writes 'K' + i into sector 7 and flushes.
const WRITE_SECTOR_7: &str = r#"
main:
    mov $0x21000, %edi
    xor %ecx, %ecx
3:  mov %cl, %al
    add $'K', %al
    mov %al, (%edi,%ecx)
    inc %ecx
    cmp $512, %ecx
    jne 3b
    mov $7, %eax
    mov $1, %cl
    call ata_setup
    mov $ATA_CMD, %dx
    mov $0x30, %al
    out %al, %dx
    call ata_wait_drq
    mov $256, %ecx
    mov $0x21000, %esi
    mov $ATA_DATA, %dx
4:  mov (%esi), %ax
    out %ax, %dx
    add $2, %esi
    loop 4b
    call ata_wait
    mov $ATA_CMD, %dx
    mov $0xe7, %al
    out %al, %dx
    call ata_wait
    movzbl %al, %eax
    call print_hex_nl
    poweroff
"#;

fn kettle_vhd(args: &[&str]) {
    let out = Command::new(kettle_binary())
        .arg("vhd")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kettle vhd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The disk's content as the guest sees it, through `kettle vhd convert --to raw`.
fn flattened(vhd: &std::path::Path) -> Vec<u8> {
    let raw = vhd.with_extension("flat");
    kettle_vhd(&[
        "convert",
        "--to",
        "raw",
        "--force",
        vhd.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    let mut b = std::fs::read(&raw).unwrap();
    std::fs::remove_file(&raw).unwrap();
    // The VHD is rounded up to a CHS-exact size; the guest wrote within the first SECTORS.
    assert!(b.len() >= SECTORS * 512);
    b.truncate(SECTORS * 512);
    b
}

/// Compares disk contents, reporting the first differing sector rather than the bytes.
#[track_caller]
fn assert_same_disk(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: size");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference in sector {} (byte {i})", i / 512);
    }
}

#[test]
fn undo_disks_keep_commit_or_discard_the_guests_writes() {
    let elf = guest::build("ideundo", &format!("{IDE_LIB}\n{WRITE_SECTOR_7}"));
    let dir = elf.parent().unwrap().to_path_buf();
    let raw = dir.join("base.img");
    std::fs::write(&raw, pattern()).unwrap();
    let base = dir.join("base.vhd");
    kettle_vhd(&[
        "convert",
        "--to",
        "dynamic",
        raw.to_str().unwrap(),
        base.to_str().unwrap(),
    ]);
    let base_bytes = std::fs::read(&base).unwrap();
    let undo = dir.join("base.vud");
    let disk_arg = format!("--disk={},undo", base.display());
    let mut written = pattern();
    written[7 * 512..8 * 512].copy_from_slice(
        &(0..512)
            .map(|i| (i as u8).wrapping_add(b'K'))
            .collect::<Vec<u8>>(),
    );

    // keep (the default): the base file is untouched, the undo file holds the write.
    let (code, out, err) = run_kettle(&elf, &[&disk_arg]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "00000050\n");
    assert!(
        err.contains("kettle vhd commit"),
        "says how to commit: {err}"
    );
    assert_eq!(
        std::fs::read(&base).unwrap(),
        base_bytes,
        "base file untouched"
    );
    assert_same_disk(&flattened(&undo), &written, "the undo file holds the write");

    // discard: the undo file goes, the base stays as it was.
    let (code, _, err) = run_kettle(&elf, &[&disk_arg, "--undo-action", "discard"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!undo.exists(), "undo file discarded");
    assert_eq!(std::fs::read(&base).unwrap(), base_bytes);

    // commit: the write reaches the base.
    let (code, _, err) = run_kettle(&elf, &[&disk_arg, "--undo-action", "commit"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!undo.exists(), "undo file merged and removed");
    assert_same_disk(&flattened(&base), &written, "the base holds the write");
    guest::remove(&elf);
}

#[test]
fn a_writable_image_in_use_is_refused_with_a_clear_message() {
    // The first VM waits on its serial port (a unix socket nobody writes to) while a second
    // one tries to open the same disk.
    let waiter = guest::build(
        "idewait",
        "main:\n1:  mov $COM1+5, %dx\n    in %dx, %al\n    test $1, %al\n    jz 1b\n    poweroff\n",
    );
    let dir = waiter.parent().unwrap().to_path_buf();
    let disk = dir.join("shared.img");
    std::fs::write(&disk, pattern()).unwrap();
    let sock = dir.join("console.sock");
    let mut first = start_waiting_vm(&waiter, &sock, &disk);
    let second = Command::new(kettle_binary())
        .arg("run")
        .arg("--kernel")
        .arg(&waiter)
        .args(["--serial", "none"])
        .arg(format!("--disk={}", disk.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("ide0:0") && err.contains("shared.img"),
        "names the drive: {err}"
    );
    assert!(
        err.to_lowercase().contains("lock") || err.contains("in use"),
        "says why: {err}"
    );
    // Read-only users share it with each other.
    guest::remove(&waiter);
}

#[test]
fn clones_of_one_golden_image_run_at_once_and_leave_it_unchanged() {
    // VM 1 waits on its console with clone 1; VM 2 writes sector 7 of clone 2 meanwhile.
    let writer = guest::build("idecloneW", &format!("{IDE_LIB}\n{WRITE_SECTOR_7}"));
    let waiter = guest::build(
        "idecloneR",
        "main:\n1:  mov $COM1+5, %dx\n    in %dx, %al\n    test $1, %al\n    jz 1b\n    poweroff\n",
    );
    let dir = writer.parent().unwrap().to_path_buf();
    let raw = dir.join("golden.img");
    std::fs::write(&raw, pattern()).unwrap();
    let golden = dir.join("golden.vhd");
    kettle_vhd(&[
        "convert",
        "--to",
        "dynamic",
        raw.to_str().unwrap(),
        golden.to_str().unwrap(),
    ]);
    kettle_vhd(&[
        "clone",
        "--count",
        "2",
        "--name",
        "vm",
        golden.to_str().unwrap(),
    ]);
    let (c1, c2) = (dir.join("vm-1.vhd"), dir.join("vm-2.vhd"));
    let golden_bytes = std::fs::read(&golden).unwrap();

    let sock = dir.join("console.sock");
    let mut first = start_waiting_vm(&waiter, &sock, &c1);
    let (code, out, err) = run_kettle(&writer, &[&format!("--disk={}", c2.display())]);
    // The golden image is shared read-only: nobody may open it for writing meanwhile.
    let (busy, _, busy_err) = run_kettle(&writer, &[&format!("--disk={}", golden.display())]);
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "00000050\n");
    assert_eq!(busy, Some(1), "the golden image is in use: {busy_err}");
    assert_eq!(
        std::fs::read(&golden).unwrap(),
        golden_bytes,
        "golden image unchanged"
    );
    let mut written = pattern();
    written[7 * 512..8 * 512].copy_from_slice(
        &(0..512)
            .map(|i| (i as u8).wrapping_add(b'K'))
            .collect::<Vec<u8>>(),
    );
    assert_same_disk(&flattened(&c2), &written, "clone 2 holds its write");
    assert_same_disk(&flattened(&c1), &pattern(), "clone 1 does not");
    guest::remove(&writer);
    guest::remove(&waiter);
}
