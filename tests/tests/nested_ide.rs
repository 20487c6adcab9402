//! IDE and ATAPI with Linux's own `ata_piix`, `sd_mod`, `sr_mod`, ext4 and isofs as the judge:
//! Debian's kernel booted by kettle inside the nested test host (TESTING.md). One outer boot
//! runs three kettle VMs in a row on the same images:
//!
//! 1. `fill`: a dynamic VHD made by `qemu-img` (ide0:0) and an ISO made by `xorriso` (ide1:0):
//!    the guest prints dmesg (our IDENTIFY strings), partitions the disk (busybox fdisk),
//!    formats it ext4 (e2fsprogs' `mke2fs`, carried in the guest initramfs), writes files of
//!    random content and prints their hashes, unmounts; it mounts the ISO from /dev/sr0 and
//!    prints the hashes of its files. Then the nested host checks the VHD (`kettle vhd check`),
//!    converts it to raw, and reads the file system with e2fsprogs' `e2fsck -fn` and
//!    `debugfs -R 'cat FILE'` (an independent reader of what the guest wrote).
//! 2. `child`: a differencing child of that VHD (`kettle vhd create --parent`): the guest reads
//!    the parent's files through it, writes a new file and rewrites one; the host reads both
//!    back from the child with debugfs, and the parent's hash is unchanged.
//! 3. `ro`: the parent again, attached `,readonly` (ide0:0), with a raw scratch image (ide0:1)
//!    and the child (ide1:0, sharing the read-only parent): the guest mounts the parent
//!    read-only and re-reads the files, then writes to it (direct I/O and
//!    buffered + fsync: I/O errors), reads past the end of the scratch disk through the block
//!    layer (nothing comes back) and, with ATA PASS-THROUGH (SG_IO; a small static tool
//!    assembled here), issues READ/WRITE SECTOR(S) EXT past the end (IDNF from the device)
//!    on both writable disks and WRITE to the read-only disk (ABRT). All three host images keep
//!    their hashes and sizes.
//!
//! `KETTLE_IDE_LOG=FILE` keeps the nested host's whole console in FILE.
//!
//! These tests need QEMU, qemu-img, xorriso, e2fsprogs and binutils (the scripts install
//! Debian packages as root); they fail, never skip, when something is missing, and say what.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use kettle_tests::nested::{
    guest_initrd_with, marker_values, require_tools, run_nested_with, section, GuestExtras,
    NestedOptions, NestedRun,
};
use kettle_tests::report::{assemble_static, once, sh, Markers};

/// Modules the guests load (dependencies come along).
const MODULES: &str = "ata_piix,sd_mod,sr_mod,crc32c_generic,ext4,isofs";

/// Files the `fill` guest writes: name and `dd` arguments (from /dev/urandom).
const FILES: [(&str, &str); 4] = [
    ("small.bin", "bs=12345 count=1"),
    ("one.bin", "bs=1M count=1"),
    ("dir/four.bin", "bs=1M count=4"),
    ("dir/odd.bin", "bs=4097 count=3"),
];

/// Guest 1: identify, partition, format, fill; then the CD.
const FILL: &str = r#"
dmesg -n 1
echo DMESG-BEGIN
dmesg
echo DMESG-END
echo "XFER-MODE-HD $(cat /sys/class/ata_device/dev1.0/xfer_mode)"
echo "XFER-MODE-CD $(cat /sys/class/ata_device/dev2.0/xfer_mode)"
echo "SDA-SECTORS $(cat /sys/block/sda/size)"
echo "SR0-SECTORS $(cat /sys/block/sr0/size)"
printf 'o\nn\np\n1\n2048\n\nw\n' | fdisk /dev/sda >/tmp/fdisk.out 2>&1
echo "FDISK-STATUS $?"
i=0
while [ ! -b /dev/sda1 ] && [ $i -lt 20 ]; do sleep 0.2; i=$((i+1)); done
echo "PART-START $(cat /sys/block/sda/sda1/start)"
echo "PART-SECTORS $(cat /sys/block/sda/sda1/size)"
/usr/sbin/mke2fs -t ext4 -F -q -L kettle /dev/sda1
echo "MKFS-STATUS $?"
mkdir -p /mnt/disk
mount -t ext4 /dev/sda1 /mnt/disk
echo "MOUNT-STATUS $?"
mkdir -p /mnt/disk/dir
@WRITE_FILES@
echo "hello from the guest" >/mnt/disk/hello.txt
sync
echo "SYNC-STATUS $?"
cd /mnt/disk
for f in $(find . -type f | sort); do echo "FILE-SHA ${f#./} $(sha256sum <"$f" | cut -d' ' -f1)"; done
cd /
umount /mnt/disk
echo "UMOUNT-STATUS $?"

mkdir -p /mnt/cd
mount -t iso9660 -o ro /dev/sr0 /mnt/cd
echo "CD-MOUNT-STATUS $?"
cd /mnt/cd
for f in $(find . -type f | sort); do echo "CD-SHA ${f#./} $(sha256sum <"$f" | cut -d' ' -f1)"; done
cd /
umount /mnt/cd
echo "CD-UMOUNT-STATUS $?"
echo FILL-DMESG-BEGIN
dmesg | grep -E 'ata[0-9]|I/O error|sd[a-z]|sr[0-9]|EXT4|ISO' | tail -n 40
echo FILL-DMESG-END
"#;

/// Guest 2: a differencing child of the filled disk.
const CHILD: &str = r#"
dmesg -n 1
mkdir -p /mnt/disk
mount -t ext4 /dev/sda1 /mnt/disk
echo "CHILD-MOUNT-STATUS $?"
cd /mnt/disk
for f in $(find . -type f | sort); do echo "CHILD-OLD-SHA ${f#./} $(sha256sum <"$f" | cut -d' ' -f1)"; done
dd if=/dev/urandom of=/mnt/disk/child.bin bs=1M count=2 2>/dev/null
echo "CHILD-DD-STATUS $?"
echo "the child was here" >/mnt/disk/hello.txt
sync
for f in child.bin hello.txt; do echo "CHILD-NEW-SHA $f $(sha256sum <"$f" | cut -d' ' -f1)"; done
cd /
umount /mnt/disk
echo "CHILD-UMOUNT-STATUS $?"
"#;

/// Guest 3: the parent read-only (ide0:0), a writable raw scratch disk (ide0:1), the child (ide1:0).
const READONLY: &str = r#"
dmesg -n 1
# Linux probes both channels at once, so sd names follow probe order: find each disk by
# its SCSI address (host 0 = ata1 = ide0, target = master 0 / slave 1).
disk() { ls "/sys/bus/scsi/devices/$1/block/"; }
RO=$(disk 0:0:0:0)
SCR=$(disk 0:0:1:0)
CHD=$(disk 1:0:0:0)
echo "DISKS ro=$RO scratch=$SCR child=$CHD"
mkdir -p /mnt/disk
mount -t ext4 -o ro,noload /dev/${RO}1 /mnt/disk
echo "RO-MOUNT-STATUS $?"
cd /mnt/disk
for f in $(find . -type f | sort); do echo "RO-SHA ${f#./} $(sha256sum <"$f" | cut -d' ' -f1)"; done
cd /
umount /mnt/disk
echo "RO-UMOUNT-STATUS $?"
dmesg -c >/dev/null

dd if=/dev/zero of=/dev/$RO bs=4096 count=1 seek=100 oflag=direct 2>/tmp/dd1
echo "RO-DIRECT-WRITE-STATUS $?"
sed 's/^/RO-DIRECT-WRITE-ERR /' /tmp/dd1
dd if=/dev/zero of=/dev/$RO bs=4096 count=4 seek=300 conv=fsync 2>/tmp/dd2
echo "RO-FSYNC-WRITE-STATUS $?"
sed 's/^/RO-FSYNC-WRITE-ERR /' /tmp/dd2
echo "RO-PT-WRITE $(ata-pt /dev/$RO w 0)"
echo "RO-PT-READ $(ata-pt /dev/$RO r 0)"
echo RO-DMESG-BEGIN
dmesg -c
echo RO-DMESG-END

SZ=$(cat /sys/block/$SCR/size)
echo "SCRATCH-SECTORS $SZ"
dd if=/dev/$SCR of=/tmp/past bs=512 skip=$SZ count=8 2>/tmp/dd3
echo "PAST-END-DD-STATUS $? BYTES $(wc -c </tmp/past)"
dd if=/dev/$SCR of=/tmp/last bs=512 skip=$((SZ - 1)) count=8 2>/dev/null
echo "LAST-SECTOR-DD-BYTES $(wc -c </tmp/last)"
for a in "r $((SZ - 1))" "r $SZ" "r $((SZ + 1000))" "w $SZ" "w $((SZ + 1000))" "r 268435456"; do
    echo "SCRATCH-PT $(ata-pt /dev/$SCR $a)"
done
SZC=$(cat /sys/block/$CHD/size)
echo "CHILD-SECTORS $SZC"
for a in "r $((SZC - 1))" "w $SZC" "w $((SZC + 4096))" "r $SZC"; do
    echo "CHILD-PT $(ata-pt /dev/$CHD $a)"
done
sync
echo PAST-DMESG-BEGIN
dmesg -c
echo PAST-DMESG-END
"#;

/// The nested host's script.
const SCRIPT: &str = r#"
KT=/guest/initrd-ide.gz
CMD="console=ttyS0 quiet kettle.modules=@MODULES@"
# debugfs_sha IMAGE FILE: the sha256 of FILE as e2fsprogs' debugfs reads it from IMAGE.
debugfs_sha() { debugfs -R "cat /$2" "$1" 2>/dev/null | sha256sum | cut -d' ' -f1; }
cp /guest/disk.vhd /tmp/disk.vhd

echo "=== fill"
timeout 240 kettle run --kernel "$GUEST_KERNEL" --initrd $KT --memory 256M \
    --disk ide0:0=/tmp/disk.vhd --cdrom /guest/test.iso \
    --cmdline "$CMD kettle.run=fill" </dev/null
echo "FILL-EXIT $?"
kettle vhd check /tmp/disk.vhd >/tmp/check 2>&1
echo "HOST-VHD-CHECK $?"
sed 's/^/HOST-VHD-CHECK-OUT /' /tmp/check
kettle vhd convert --to raw /tmp/disk.vhd /tmp/disk.raw
echo "HOST-CONVERT-STATUS $?"
dd if=/tmp/disk.raw of=/tmp/part.img bs=512 skip=2048 2>/dev/null
e2fsck -fn /tmp/part.img >/tmp/fsck 2>&1
echo "HOST-E2FSCK-STATUS $?"
sed 's/^/HOST-E2FSCK-OUT /' /tmp/fsck
for f in @FILES@ hello.txt; do echo "HOST-SHA $f $(debugfs_sha /tmp/part.img $f)"; done
echo "HOST-HELLO $(debugfs -R 'cat /hello.txt' /tmp/part.img 2>/dev/null)"
rm -f /tmp/disk.raw
echo "PARENT-SHA-BEFORE $(sha256sum </tmp/disk.vhd | cut -d' ' -f1)"

echo "=== child"
kettle vhd create --type differencing --parent /tmp/disk.vhd /tmp/child.vhd
echo "CHILD-CREATE-STATUS $?"
timeout 240 kettle run --kernel "$GUEST_KERNEL" --initrd $KT --memory 256M \
    --disk /tmp/child.vhd --cmdline "$CMD kettle.run=child" </dev/null
echo "CHILD-EXIT $?"
echo "PARENT-SHA-AFTER $(sha256sum </tmp/disk.vhd | cut -d' ' -f1)"
kettle vhd check /tmp/child.vhd >/tmp/check 2>&1
echo "HOST-CHILD-CHECK $?"
sed 's/^/HOST-CHILD-CHECK-OUT /' /tmp/check
kettle vhd convert --to raw /tmp/child.vhd /tmp/child.raw
echo "HOST-CHILD-CONVERT-STATUS $?"
dd if=/tmp/child.raw of=/tmp/child-part.img bs=512 skip=2048 2>/dev/null
rm -f /tmp/child.raw
e2fsck -fn /tmp/child-part.img >/tmp/fsck 2>&1
echo "HOST-CHILD-E2FSCK-STATUS $?"
sed 's/^/HOST-CHILD-E2FSCK-OUT /' /tmp/fsck
for f in child.bin hello.txt @FILES@; do echo "HOST-CHILD-SHA $f $(debugfs_sha /tmp/child-part.img $f)"; done
rm -f /tmp/child-part.img
debugfs -R 'stat /child.bin' /tmp/part.img >/tmp/stat 2>&1
echo "HOST-PARENT-HAS-CHILD-BIN $(grep -c 'Inode:' /tmp/stat)"
echo "HOST-PARENT-HELLO-SHA $(debugfs_sha /tmp/part.img hello.txt)"
rm -f /tmp/part.img

echo "=== ro"
dd if=/dev/urandom of=/tmp/scratch.img bs=1M count=8 2>/dev/null
echo "SCRATCH-BEFORE $(stat -c %s /tmp/scratch.img) $(sha256sum </tmp/scratch.img | cut -d' ' -f1)"
echo "RO-PARENT-BEFORE $(stat -c %s /tmp/disk.vhd) $(sha256sum </tmp/disk.vhd | cut -d' ' -f1)"
echo "VHD-CHILD-BEFORE $(stat -c %s /tmp/child.vhd) $(sha256sum </tmp/child.vhd | cut -d' ' -f1)"
timeout 240 kettle run --kernel "$GUEST_KERNEL" --initrd $KT --memory 256M \
    --disk ide0:0=/tmp/disk.vhd,readonly --disk ide0:1=/tmp/scratch.img \
    --disk ide1:0=/tmp/child.vhd --cmdline "$CMD kettle.run=ro" </dev/null
echo "RO-EXIT $?"
echo "SCRATCH-AFTER $(stat -c %s /tmp/scratch.img) $(sha256sum </tmp/scratch.img | cut -d' ' -f1)"
echo "RO-PARENT-AFTER $(stat -c %s /tmp/disk.vhd) $(sha256sum </tmp/disk.vhd | cut -d' ' -f1)"
echo "VHD-CHILD-AFTER $(stat -c %s /tmp/child.vhd) $(sha256sum </tmp/child.vhd | cut -d' ' -f1)"
kettle vhd check /tmp/child.vhd >/tmp/check 2>&1
echo "VHD-CHILD-CHECK $?"
sed 's/^/VHD-CHILD-CHECK-OUT /' /tmp/check
ls /tmp/ | sed 's/^/HOST-TMP /'
"#;

/// ata-pt DEVICE r|w LBA: one ATA PASS-THROUGH(16) command through SG_IO, one sector, PIO:
/// READ SECTOR(S) EXT (r) or WRITE SECTOR(S) EXT (w, 512 bytes of 0xa5), LBA48, with CK_COND
/// so that the ATA registers come back in the sense data. Prints one line:
/// `ATAPT <r|w> <LBA> ret=<ioctl> status=<SCSI status> host=<> driver=<> sense=<32 bytes>`
/// (all hex). A static x86-64 Linux program (raw system calls), built with `as` and `ld`.
const ATA_PT: &str = r#"
    .globl _start
    .text
_start:
    mov (%rsp), %rax
    cmp $4, %rax
    jne usage
    mov 16(%rsp), %r12          # device
    mov 24(%rsp), %r13          # mode
    mov 32(%rsp), %r15          # LBA (decimal)
    mov %r15, %rsi
    xor %eax, %eax
1:  movzbl (%rsi), %ecx
    test %ecx, %ecx
    jz 2f
    sub $'0', %ecx
    cmp $9, %ecx
    ja usage
    imul $10, %rax, %rax
    add %rcx, %rax
    inc %rsi
    jmp 1b
2:  lea cdb(%rip), %rdi
    movb $0x85, 0(%rdi)         # ATA PASS-THROUGH(16)
    movb $0x01, 6(%rdi)         # count 7:0 = 1
    movb %al, 8(%rdi)           # LBA 7:0
    shr $8, %rax
    movb %al, 10(%rdi)          # LBA 15:8
    shr $8, %rax
    movb %al, 12(%rdi)          # LBA 23:16
    shr $8, %rax
    movb %al, 7(%rdi)           # LBA 31:24
    shr $8, %rax
    movb %al, 9(%rdi)           # LBA 39:32
    shr $8, %rax
    movb %al, 11(%rdi)          # LBA 47:40
    movb $0x40, 13(%rdi)        # device: LBA
    lea hdr(%rip), %rbx
    movzbl (%r13), %eax
    cmp $'r', %eax
    je 3f
    cmp $'w', %eax
    jne usage
    movb $0x0b, 1(%rdi)         # PIO data-out, extend
    movb $0x26, 2(%rdi)         # CK_COND, BYT_BLOK, length in COUNT
    movb $0x34, 14(%rdi)        # WRITE SECTOR(S) EXT
    movl $-2, 4(%rbx)           # SG_DXFER_TO_DEV
    jmp 4f
3:  movb $0x09, 1(%rdi)         # PIO data-in, extend
    movb $0x2e, 2(%rdi)         # CK_COND, T_DIR in, BYT_BLOK, length in COUNT
    movb $0x24, 14(%rdi)        # READ SECTOR(S) EXT
    movl $-3, 4(%rbx)           # SG_DXFER_FROM_DEV
4:  lea buf(%rip), %rdi
    mov $0xa5, %al
    mov $512, %ecx
    rep stosb
    movl $0x53, 0(%rbx)         # interface_id 'S'
    movb $16, 8(%rbx)           # cmd_len
    movb $32, 9(%rbx)           # mx_sb_len
    movl $512, 12(%rbx)         # dxfer_len
    lea buf(%rip), %rax
    mov %rax, 16(%rbx)
    lea cdb(%rip), %rax
    mov %rax, 24(%rbx)
    lea sense(%rip), %rax
    mov %rax, 32(%rbx)
    movl $20000, 40(%rbx)       # timeout, ms
    mov $2, %eax                # open(device, O_RDWR)
    mov %r12, %rdi
    mov $2, %esi
    xor %edx, %edx
    syscall
    test %rax, %rax
    js open_failed
    mov %rax, %rdi
    mov $16, %eax               # ioctl(fd, SG_IO, &hdr)
    mov $0x2285, %esi
    mov %rbx, %rdx
    syscall
    mov %rax, %rbp
    lea out(%rip), %rdi
    lea s_atapt(%rip), %rsi
    call puts
    mov %r13, %rsi
    call puts
    lea s_space(%rip), %rsi
    call puts
    mov %r15, %rsi
    call puts
    lea s_ret(%rip), %rsi
    call puts
    mov %ebp, %eax
    mov $8, %ecx
    call hex
    lea s_status(%rip), %rsi
    call puts
    movzbl 64(%rbx), %eax
    mov $2, %ecx
    call hex
    lea s_host(%rip), %rsi
    call puts
    movzwl 68(%rbx), %eax
    mov $4, %ecx
    call hex
    lea s_driver(%rip), %rsi
    call puts
    movzwl 70(%rbx), %eax
    mov $4, %ecx
    call hex
    lea s_sense(%rip), %rsi
    call puts
    xor %r9d, %r9d
5:  lea sense(%rip), %rax
    movzbl (%rax,%r9), %eax
    mov $2, %ecx
    call hex
    inc %r9
    cmp $32, %r9
    jne 5b
    movb $10, (%rdi)
    inc %rdi
    lea out(%rip), %rsi
    mov %rdi, %rdx
    sub %rsi, %rdx
    mov $1, %eax                # write(1, out, len)
    mov $1, %edi
    syscall
    xor %edi, %edi
    jmp exit

open_failed:
    lea s_open(%rip), %rsi
    mov $s_open_len, %edx
    mov $1, %edi
    jmp fail
usage:
    lea s_usage(%rip), %rsi
    mov $s_usage_len, %edx
    mov $2, %edi
fail:
    push %rdi
    mov $1, %eax
    mov $2, %edi
    syscall
    pop %rdi
exit:
    mov $60, %eax
    syscall

# puts: appends the NUL-terminated string at %rsi at %rdi (advanced).
puts:
1:  movb (%rsi), %al
    test %al, %al
    jz 2f
    movb %al, (%rdi)
    inc %rsi
    inc %rdi
    jmp 1b
2:  ret

# hex: appends %eax as %ecx hex digits at %rdi (advanced).
hex:
    mov %eax, %r8d
    lea -4(,%rcx,4), %ecx
1:  mov %r8d, %eax
    shr %cl, %eax
    and $15, %eax
    lea hexdigits(%rip), %rdx
    movb (%rdx,%rax), %al
    movb %al, (%rdi)
    inc %rdi
    sub $4, %ecx
    jns 1b
    ret

    .section .rodata
hexdigits: .ascii "0123456789abcdef"
s_atapt: .asciz "ATAPT "
s_space: .asciz " "
s_ret: .asciz " ret="
s_status: .asciz " status="
s_host: .asciz " host="
s_driver: .asciz " driver="
s_sense: .asciz " sense="
s_open: .ascii "ATAPT-OPEN-FAILED\n"
    .set s_open_len, . - s_open
s_usage: .ascii "usage: ata-pt DEVICE r|w LBA\n"
    .set s_usage_len, . - s_usage

    .bss
    .align 4096
buf: .skip 512
    .align 8
hdr: .skip 88
cdb: .skip 16
sense: .skip 32
out: .skip 512
"#;

/// Everything the nested run produced, and what the outer host knows independently.
struct Results {
    run: NestedRun,
    /// sha256 of every file put on the ISO, by path.
    iso_hashes: BTreeMap<String, String>,
    /// The VHD's size as `qemu-img info` reports it.
    vhd_virtual_size: u64,
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// The ISO's contents: written under `root`, hashed by the host's `sha256sum`.
fn make_iso_tree(root: &Path) -> BTreeMap<String, String> {
    let files: [(&str, usize); 5] = [
        ("readme.txt", 0),
        ("data/random.bin", 300_000),
        ("data/big.bin", 3 * 1024 * 1024 + 777),
        ("data/deep/nested/sector.bin", 2048),
        ("empty.bin", 0),
    ];
    let mut hashes = BTreeMap::new();
    for (i, (name, len)) in files.iter().enumerate() {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let data = if *name == "readme.txt" {
            b"kettle ATAPI test disc\n".to_vec()
        } else {
            pseudo_random(0x1de_u64 + i as u64, *len)
        };
        std::fs::write(&path, data).unwrap();
        let out = sh(Command::new("sha256sum").arg(&path), "sha256sum");
        hashes.insert(
            name.to_string(),
            out.split_whitespace().next().unwrap().to_string(),
        );
    }
    hashes
}

/// Builds the images and the guest initramfs, runs the three VMs in one nested host (about
/// two minutes) and keeps the result.
fn results() -> &'static Results {
    static RESULTS: OnceLock<Result<Results, String>> = OnceLock::new();
    once(&RESULTS, prepare_and_run)
}

fn prepare_and_run() -> Results {
    if let Err(e) = require_tools(&[
        ("qemu-img", "qemu-utils"),
        ("xorriso", "xorriso"),
        ("sha256sum", "coreutils"),
        ("as", "binutils"),
        ("ld", "binutils"),
    ]) {
        panic!("the IDE tests need: {e}");
    }
    for tool in ["/usr/sbin/mke2fs", "/usr/sbin/e2fsck", "/usr/sbin/debugfs"] {
        if !Path::new(tool).is_file() {
            panic!("{tool} is missing (Debian package e2fsprogs)");
        }
    }
    let dir = std::env::temp_dir().join(format!("kettle-nested-ide-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // A dynamic VHD made by qemu-img, as a user of another tool would bring it.
    let vhd = dir.join("disk.vhd");
    sh(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "vpc", "-o", "subformat=dynamic"])
            .arg(&vhd)
            .arg("64M"),
        "qemu-img create",
    );
    let info = sh(
        Command::new("qemu-img")
            .args(["info", "--output", "json", "-f", "vpc"])
            .arg(&vhd),
        "qemu-img info",
    );
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    let vhd_virtual_size = info["virtual-size"].as_u64().expect("virtual-size");

    // An ISO 9660 image with Rock Ridge and Joliet, made by xorriso.
    let tree = dir.join("iso");
    let iso_hashes = make_iso_tree(&tree);
    let iso = dir.join("test.iso");
    sh(
        Command::new("xorriso")
            .args([
                "-as",
                "mkisofs",
                "-quiet",
                "-R",
                "-J",
                "-V",
                "KETTLE_TEST",
                "-o",
            ])
            .arg(&iso)
            .arg(&tree),
        "xorriso",
    );

    let ata_pt = assemble_static(&dir, "ata-pt", ATA_PT);
    let write_files: String = FILES
        .iter()
        .map(|(name, args)| {
            format!("dd if=/dev/urandom of=/mnt/disk/{name} {args} 2>/dev/null; echo \"DD-STATUS {name} $?\"\n")
        })
        .collect();
    let fill = FILL.replace("@WRITE_FILES@", &write_files);
    let mut extras = GuestExtras::new()
        .bin("/usr/sbin/mke2fs", "/usr/sbin/mke2fs")
        .file(&ata_pt, "/bin/ata-pt");
    for module in MODULES.split(',') {
        extras = extras.module(module);
    }
    if Path::new("/etc/mke2fs.conf").is_file() {
        extras = extras.file("/etc/mke2fs.conf", "/etc/mke2fs.conf");
    }
    let initrd = guest_initrd_with(
        &[("fill", &fill), ("child", CHILD), ("ro", READONLY)],
        &extras,
        &dir.join("initrd-ide.gz"),
    )
    .unwrap_or_else(|e| panic!("building the test initramfs: {e}"));

    let names: Vec<&str> = FILES.iter().map(|(n, _)| *n).collect();
    let script = SCRIPT
        .replace("@MODULES@", MODULES)
        .replace("@FILES@", &names.join(" "));
    let options = NestedOptions::new(Duration::from_secs(600))
        .add(&initrd, "/guest/initrd-ide.gz")
        .add(&vhd, "/guest/disk.vhd")
        .add(&iso, "/guest/test.iso")
        .bin("/usr/sbin/e2fsck", "/usr/sbin/e2fsck")
        .bin("/usr/sbin/debugfs", "/usr/sbin/debugfs");
    let run = run_nested_with(&script, &options);
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(path) = std::env::var_os("KETTLE_IDE_LOG") {
        let _ = std::fs::write(path, &run.console);
    }
    Results {
        run,
        iso_hashes,
        vhd_virtual_size,
    }
}

fn out() -> &'static str {
    let run = &results().run;
    run.expect_success();
    run.script_output().expect("the nested script's output")
}

/// The value of the one line with `marker`.
#[track_caller]
fn one(marker: &str) -> &'static str {
    Markers(out()).one(marker)
}

fn values(marker: &str) -> Vec<&'static str> {
    Markers(out()).values(marker)
}

/// `MARKER name hash` lines as a map.
fn hashes(marker: &str) -> BTreeMap<String, String> {
    values(marker)
        .into_iter()
        .map(|v| {
            let (name, hash) = v
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad {marker} line: {v}"));
            (name.to_string(), hash.trim().to_string())
        })
        .collect()
}

#[track_caller]
fn section_of(begin: &str, end: &str) -> &'static str {
    section(out(), begin, end).unwrap_or_else(|| panic!("no {begin}..{end} in:\n{}", out()))
}

fn sha256_of_empty() -> &'static str {
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
}

#[test]
fn all_three_guests_power_off_cleanly() {
    assert_eq!(one("FILL-EXIT"), "0");
    assert_eq!(one("CHILD-EXIT"), "0");
    assert_eq!(one("RO-EXIT"), "0");
    assert_eq!(marker_values(out(), "KETTLE-TEST-EXIT"), ["0", "0", "0"]);
    assert!(
        !out().contains("KETTLE-MODULE-FAILED"),
        "a module failed to load:\n{}",
        out()
    );
}

#[test]
fn ata_piix_identifies_our_disk_and_cd() {
    let dmesg = section_of("DMESG-BEGIN", "DMESG-END");
    let has = |what: &str| {
        assert!(dmesg.contains(what), "dmesg lacks {what:?}:\n{dmesg}");
    };
    // libata's IDENTIFY summary: model, firmware revision, highest UDMA mode.
    let disk = dmesg
        .lines()
        .find(|l| l.contains("ata1.00: ATA-"))
        .unwrap_or_else(|| panic!("no ata1.00 IDENTIFY line:\n{dmesg}"));
    assert!(
        disk.contains(": Virtual HD, 1.1.0, max UDMA/"),
        "IDENTIFY line: {disk}"
    );
    // libata 6.1 logs the negotiated mode only after error handling; sysfs has it. The
    // PIIX4 is a UDMA/33 controller.
    assert_eq!(one("XFER-MODE-HD"), "XFER_UDMA_2");
    let sectors = results().vhd_virtual_size / 512;
    has(&format!("ata1.00: {sectors} sectors"));
    assert!(
        dmesg
            .lines()
            .any(|l| l.contains(&format!("ata1.00: {sectors} sectors")) && l.contains("LBA48")),
        "no LBA48 in the sector-count line:\n{dmesg}"
    );
    has("Direct-Access     ATA      Virtual HD");
    has(&format!("[sda] {sectors} 512-byte logical blocks"));
    let cd = dmesg
        .lines()
        .find(|l| l.contains("ata2.00: ATAPI: "))
        .unwrap_or_else(|| panic!("no ata2.00 ATAPI line:\n{dmesg}"));
    assert!(cd.contains("ATAPI: Virtual CD, 1.1.0"), "ATAPI line: {cd}");
    assert_eq!(one("XFER-MODE-CD"), "XFER_UDMA_2");
    has("CD-ROM ");
    has("Attached scsi CD-ROM sr0");
    for bad in [
        "failed command",
        "exception Emask",
        "I/O error",
        "timeout",
        "HSM violation",
    ] {
        assert!(!dmesg.contains(bad), "dmesg has {bad:?}:\n{dmesg}");
    }
    assert_eq!(one("SDA-SECTORS").parse::<u64>().unwrap(), sectors);
}

#[test]
fn a_qemu_img_vhd_is_partitioned_formatted_and_filled() {
    assert_eq!(one("FDISK-STATUS"), "0");
    assert_eq!(one("PART-START"), "2048");
    assert_eq!(one("MKFS-STATUS"), "0");
    assert_eq!(one("MOUNT-STATUS"), "0");
    for v in values("DD-STATUS") {
        assert!(v.ends_with(" 0"), "DD-STATUS {v}");
    }
    assert_eq!(values("DD-STATUS").len(), FILES.len());
    assert_eq!(one("SYNC-STATUS"), "0");
    assert_eq!(one("UMOUNT-STATUS"), "0");
    let files = hashes("FILE-SHA");
    assert_eq!(files.len(), FILES.len() + 1, "{files:?}");
    // Random contents: every file differs.
    let distinct: std::collections::BTreeSet<_> = files.values().collect();
    assert_eq!(distinct.len(), files.len(), "{files:?}");
    let dmesg = section_of("FILL-DMESG-BEGIN", "FILL-DMESG-END");
    for bad in [
        "failed command",
        "exception Emask",
        "I/O error",
        "EXT4-fs error",
    ] {
        assert!(!dmesg.contains(bad), "dmesg has {bad:?}:\n{dmesg}");
    }
}

#[test]
fn after_power_off_the_host_reads_the_same_files_back() {
    assert_eq!(one("HOST-VHD-CHECK"), "0", "{}", out());
    assert_eq!(one("HOST-CONVERT-STATUS"), "0");
    assert_eq!(one("HOST-E2FSCK-STATUS"), "0", "e2fsck -fn:\n{}", out());
    let guest = hashes("FILE-SHA");
    let host = hashes("HOST-SHA");
    assert_eq!(host, guest, "debugfs on the host vs sha256sum in the guest");
    assert!(!guest.values().any(|h| h == sha256_of_empty()));
    assert_eq!(one("HOST-HELLO"), "hello from the guest");
}

#[test]
fn a_differencing_child_boots_and_its_parent_stays_unchanged() {
    assert_eq!(one("CHILD-CREATE-STATUS"), "0");
    assert_eq!(one("CHILD-MOUNT-STATUS"), "0");
    assert_eq!(one("CHILD-UMOUNT-STATUS"), "0");
    // The guest reads the parent's files through the child.
    assert_eq!(hashes("CHILD-OLD-SHA"), hashes("FILE-SHA"));
    // The parent file is byte for byte what it was.
    assert_eq!(one("PARENT-SHA-BEFORE"), one("PARENT-SHA-AFTER"));
    // The child is consistent and holds what the guest wrote, over the parent's files.
    assert_eq!(one("HOST-CHILD-CHECK"), "0", "{}", out());
    assert_eq!(one("HOST-CHILD-CONVERT-STATUS"), "0");
    assert_eq!(one("HOST-CHILD-E2FSCK-STATUS"), "0", "{}", out());
    let new = hashes("CHILD-NEW-SHA");
    let host = hashes("HOST-CHILD-SHA");
    assert_eq!(host["child.bin"], new["child.bin"]);
    assert_eq!(host["hello.txt"], new["hello.txt"]);
    assert_ne!(new["hello.txt"], hashes("FILE-SHA")["hello.txt"]);
    for (name, _) in FILES {
        assert_eq!(host[name], hashes("FILE-SHA")[name], "{name} in the child");
    }
    // And the parent's file system does not have them.
    assert_eq!(one("HOST-PARENT-HAS-CHILD-BIN"), "0");
    assert_eq!(
        one("HOST-PARENT-HELLO-SHA"),
        hashes("FILE-SHA")["hello.txt"]
    );
}

#[test]
fn an_xorriso_iso_mounts_from_sr0_with_identical_hashes() {
    assert_eq!(one("CD-MOUNT-STATUS"), "0");
    assert_eq!(one("CD-UMOUNT-STATUS"), "0");
    let guest = hashes("CD-SHA");
    assert_eq!(guest, results().iso_hashes);
    let sectors: u64 = one("SR0-SECTORS").parse().unwrap();
    assert!(sectors > 3 * 1024 * 2, "sr0 has {sectors} sectors");
}

#[test]
fn a_second_vm_reads_the_files_from_the_readonly_disk() {
    assert_eq!(one("RO-MOUNT-STATUS"), "0");
    assert_eq!(one("RO-UMOUNT-STATUS"), "0");
    assert_eq!(hashes("RO-SHA"), hashes("FILE-SHA"));
}

/// The ata-pt line for `args` (`r|w LBA`) after `marker`: (SCSI status, ATA error, ATA
/// status).
fn atapt(marker: &str, args: &str) -> (u8, u8, u8) {
    let line = one(&format!("{marker} ATAPT {args}"));
    let field = |name: &str| -> &str {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in ATAPT {args} {line}"))
    };
    assert_eq!(
        field("ret="),
        "00000000",
        "SG_IO failed: ATAPT {args} {line}"
    );
    let status = u8::from_str_radix(field("status="), 16).unwrap();
    let sense: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&field("sense=")[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    // CK_COND: the registers come back as sense data, descriptor format (the ATA Status
    // Return descriptor) or fixed format: SAT puts error, status, device and count in the
    // INFORMATION field (bytes 3-6); Linux 6.1 puts them in bytes 8-11 instead. Status is
    // never 0 (DRDY at least), which tells the two apart.
    let (error, ata_status) = match sense[0] & 0x7f {
        0x72 => {
            let d = &sense[8..];
            assert_eq!(d[0], 0x09, "ATAPT {args}: no ATA return descriptor: {line}");
            (d[3], d[13])
        }
        0x70 if sense[4] != 0 => (sense[3], sense[4]),
        0x70 => (sense[8], sense[9]),
        _ => panic!("ATAPT {args}: no sense data: {line}"),
    };
    assert_ne!(ata_status, 0, "ATAPT {args}: no ATA status in {line}");
    (status, error, ata_status)
}

/// The read-only disk's name in the `ro` guest.
fn read_only_disk() -> &'static str {
    one("DISKS")
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ro="))
        .filter(|d| d.starts_with("sd"))
        .unwrap_or_else(|| panic!("no read-only disk in DISKS {}", one("DISKS")))
}

#[test]
fn writes_to_a_readonly_disk_fail_in_the_guest_and_leave_the_image_unchanged() {
    assert_ne!(one("RO-DIRECT-WRITE-STATUS"), "0");
    assert!(
        values("RO-DIRECT-WRITE-ERR")
            .iter()
            .any(|l| l.contains("Input/output error")),
        "dd oflag=direct said:\n{:?}",
        values("RO-DIRECT-WRITE-ERR")
    );
    assert_ne!(one("RO-FSYNC-WRITE-STATUS"), "0");
    let dmesg = section_of("RO-DMESG-BEGIN", "RO-DMESG-END");
    assert!(
        dmesg.contains(&format!("I/O error, dev {}", read_only_disk()))
            && dmesg.contains("op 0x1:(WRITE)"),
        "no write I/O error on {} in dmesg:\n{dmesg}",
        read_only_disk()
    );
    assert!(
        dmesg.contains("failed command: WRITE DMA") && dmesg.contains("error: { ABRT }"),
        "no aborted WRITE DMA in dmesg:\n{dmesg}"
    );
    // The device itself aborts a write command, and still reads.
    let (_, error, status) = atapt("RO-PT-WRITE", "w 0");
    assert_eq!(status & 0x01, 0x01, "ATA status {status:#x} lacks ERR");
    assert_eq!(error & 0x04, 0x04, "ATA error {error:#x} lacks ABRT");
    let (_, error, status) = atapt("RO-PT-READ", "r 0");
    assert_eq!((status & 0x89, error), (0, 0), "reading sector 0");
    let before = one("RO-PARENT-BEFORE");
    assert_eq!(
        one("RO-PARENT-AFTER"),
        before,
        "the read-only image changed"
    );
    assert_eq!(before.split(' ').nth(1), Some(one("PARENT-SHA-BEFORE")));
}

#[test]
fn reads_and_writes_past_the_end_fail_and_leave_the_host_file_alone() {
    let sectors: u64 = one("SCRATCH-SECTORS").parse().unwrap();
    assert_eq!(sectors, 8 * 2048);
    // Through the block layer: end of device, no data.
    assert!(
        one("PAST-END-DD-STATUS").ends_with("BYTES 0"),
        "{}",
        one("PAST-END-DD-STATUS")
    );
    assert_eq!(one("LAST-SECTOR-DD-BYTES"), "512");
    // Straight to the device: the last sector reads, the ones after it are IDNF.
    let (_, error, status) = atapt("SCRATCH-PT", &format!("r {}", sectors - 1));
    assert_eq!((status & 0x89, error), (0, 0), "reading the last sector");
    for args in [
        format!("r {sectors}"),
        format!("r {}", sectors + 1000),
        format!("w {sectors}"),
        format!("w {}", sectors + 1000),
        "r 268435456".to_string(),
    ] {
        let (scsi, error, status) = atapt("SCRATCH-PT", &args);
        assert_eq!(scsi, 0x02, "ATAPT {args}: SCSI status {scsi:#x}");
        assert_eq!(
            status & 0x01,
            0x01,
            "ATAPT {args}: ATA status {status:#x} lacks ERR"
        );
        assert_eq!(
            error & 0x10,
            0x10,
            "ATAPT {args}: ATA error {error:#x} lacks IDNF"
        );
    }
    let dmesg = section_of("PAST-DMESG-BEGIN", "PAST-DMESG-END");
    for bad in [
        "HSM violation",
        "timeout",
        "hard resetting link",
        "disabled",
    ] {
        assert!(!dmesg.contains(bad), "dmesg has {bad:?}:\n{dmesg}");
    }
    // The host file neither grew nor changed.
    assert_eq!(one("SCRATCH-AFTER"), one("SCRATCH-BEFORE"));
    assert!(one("SCRATCH-BEFORE").starts_with(&format!("{} ", 8 << 20)));
}

/// Past the end of a VHD lies its footer: writes there must not reach it.
#[test]
fn writes_past_the_end_of_a_vhd_fail_and_leave_it_intact() {
    let sectors: u64 = one("CHILD-SECTORS").parse().unwrap();
    assert_eq!(sectors, results().vhd_virtual_size / 512);
    let (_, error, status) = atapt("CHILD-PT", &format!("r {}", sectors - 1));
    assert_eq!((status & 0x89, error), (0, 0), "reading the last sector");
    for args in [
        format!("w {sectors}"),
        format!("w {}", sectors + 4096),
        format!("r {sectors}"),
    ] {
        let (_, error, status) = atapt("CHILD-PT", &args);
        assert_eq!(
            status & 0x01,
            0x01,
            "ATAPT {args}: ATA status {status:#x} lacks ERR"
        );
        assert_eq!(
            error & 0x10,
            0x10,
            "ATAPT {args}: ATA error {error:#x} lacks IDNF"
        );
    }
    assert_eq!(one("VHD-CHILD-AFTER"), one("VHD-CHILD-BEFORE"));
    assert_eq!(one("VHD-CHILD-CHECK"), "0", "{}", out());
}
