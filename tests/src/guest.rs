//! Small purpose-built guest programs for the local KVM (TESTING.md: the local /dev/kvm is a
//! software KVM that runs a few thousand instructions quickly, not Linux).
//!
//! A guest is 32-bit protected-mode assembly (GNU as syntax) wrapped into an ELF64 file with a
//! PVH entry note, so kettle boots it through its ordinary `--kernel` ELF/PVH path: it starts at
//! `_start` with flat 32-bit segments, paging off, and %ebx pointing at the hvm_start_info.
//!
//! The prelude gives every guest a few macros and subroutines:
//! - `putc`: write %al to COM1 (waits for THRE);
//! - `puts LABEL`: write a NUL-terminated string;
//! - `puthex32`: write %eax as 8 hex digits;
//! - `poweroff`: ACPI S5 through the PIIX4 PM1 control register (kettle exits 0);
//! - `pci_read ADDR`: %eax = PCI config dword at the CONFIG_ADDRESS value ADDR.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Port of the PIIX4 PM block as kettle's firmware programs it (arch::layout::PM_IO_BASE).
pub const PM_IO_BASE: u16 = 0x600;

const PRELUDE: &str = r#"
    .code32
    .set COM1, 0x3f8
    .set PM1_CNT, 0x604
    .section .text
    .globl _start

    .macro puts label
    mov $\label, %esi
    call _puts
    .endm

    .macro poweroff
    mov $PM1_CNT, %dx
    mov $0x2000, %ax
    out %ax, %dx
    1: hlt
    jmp 1b
    .endm

    .macro pci_read addr
    mov $\addr, %eax
    mov $0xcf8, %dx
    out %eax, %dx
    mov $0xcfc, %dx
    in %dx, %eax
    .endm

_start:
    mov $0x80000, %esp
    jmp main

putc:
    push %edx
    push %eax
    mov $COM1+5, %dx
1:  in %dx, %al
    test $0x20, %al
    jz 1b
    pop %eax
    mov $COM1, %dx
    out %al, %dx
    pop %edx
    ret

_puts:
    push %eax
1:  lodsb
    test %al, %al
    jz 2f
    call putc
    jmp 1b
2:  pop %eax
    ret

puthex32:
    push %ecx
    push %eax
    mov $8, %ecx
1:  rol $4, %eax
    push %eax
    and $0xf, %al
    add $'0', %al
    cmp $'9', %al
    jbe 2f
    add $('a' - '9' - 1), %al
2:  call putc
    pop %eax
    loop 1b
    pop %eax
    pop %ecx
    ret
"#;

const NOTE_AND_LINK: &str = r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .long _start
"#;

const LINKER_SCRIPT: &str = r#"
ENTRY(_start)
SECTIONS {
    . = 0x100000;
    .text : { *(.text) *(.rodata*) *(.data*) }
    .note : { *(.note*) }
    /DISCARD/ : { *(.comment) *(.eh_frame) }
}
"#;

fn scratch_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "kettle-guest-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&d).expect("creating a scratch directory");
    d
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e} (is binutils installed?)"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Assembles `source` with GNU as (`as_flag`: --32 or --64) and links it with `ld LD_ARGS -T
/// SCRIPT` into `dir/NAME.OUT_EXT`; returns that path.
fn assemble(
    dir: &Path,
    name: &str,
    source: &str,
    as_flag: &str,
    ld_args: &[&str],
    script: &str,
    out_ext: &str,
) -> PathBuf {
    let src = dir.join(format!("{name}.S"));
    let obj = dir.join(format!("{name}.o"));
    let out = dir.join(format!("{name}.{out_ext}"));
    let ld = dir.join(format!("{name}.ld"));
    std::fs::write(&src, source).unwrap();
    std::fs::write(&ld, script).unwrap();
    run(
        Command::new("as")
            .arg(as_flag)
            .arg("-o")
            .arg(&obj)
            .arg(&src),
        "as",
    );
    run(
        Command::new("ld")
            .args(ld_args)
            .args(["-nostdlib", "-T"])
            .arg(&ld)
            .arg("-o")
            .arg(&out)
            .arg(&obj),
        "ld",
    );
    out
}

/// Assembles `body` (which must define `main`) into a PVH ELF guest; returns its path.
pub fn build(name: &str, body: &str) -> PathBuf {
    let source = format!("{PRELUDE}\n{body}\n{NOTE_AND_LINK}");
    assemble(
        &scratch_dir(),
        name,
        &source,
        "--64",
        &["-m", "elf_x86_64"],
        LINKER_SCRIPT,
        "elf",
    )
}

/// Removes a guest's scratch directory.
pub fn remove(elf: &Path) {
    if let Some(d) = elf.parent() {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Runs `kettle run --kernel ELF --serial file:... ARGS` to its end (60 s at most): exit code,
/// serial output, stderr.
pub fn run_kettle(elf: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["--kernel", elf.to_str().expect("a UTF-8 path")];
    all.extend_from_slice(args);
    run_to_exit(&elf.with_extension("serial"), &all)
}

/// Runs `kettle run --serial file:SERIAL ARGS` to its end (60 s at most; a kettle still running
/// then is killed and the test fails with what it printed): exit code, serial output, stderr.
/// The serial file is removed.
pub fn run_to_exit(serial: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Command::new(crate::nested::kettle_binary())
        .arg("run")
        .arg("--serial")
        .arg(format!("file:{}", serial.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting kettle");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "kettle {args:?} did not exit within 60 s\nserial: {}\nstderr: {}",
                std::fs::read_to_string(serial).unwrap_or_default(),
                child_stderr(&mut child)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = child_stderr(&mut child);
    let out = std::fs::read_to_string(serial).unwrap_or_default();
    let _ = std::fs::remove_file(serial);
    (status.code(), out, stderr)
}

/// Debian's SeaBIOS image, the second opinion on kettle's BIOS (resources/setup.sh installs
/// it with QEMU); fails the test, saying what to install, when it is missing.
pub fn seabios() -> &'static str {
    const SEABIOS: &str = "/usr/share/seabios/bios.bin";
    assert!(
        Path::new(SEABIOS).is_file(),
        "{SEABIOS} is missing: install Debian's seabios package (resources/setup.sh does)"
    );
    SEABIOS
}

/// What a child started with a piped stderr wrote there (read to its end; empty if it was
/// taken already).
pub fn child_stderr(child: &mut std::process::Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut s);
    }
    s
}

/// The real-mode prelude of a boot-sector guest ([`boot_disk`]): it starts at 0000:7C00 as a
/// BIOS leaves it, saves DL (the boot drive) at `boot_drive`, sets DS = ES = SS = 0 and a stack
/// below 0x7C00, then jumps to `main`. Output goes through the BIOS (INT 10h teletype, which the
/// BIOS mirrors to COM1):
/// - `puts LABEL`: a NUL-terminated string;
/// - `putc`: %al; `puthex16`: %ax as 4 hex digits; `puthex8`: %al as 2;
/// - `poweroff`: ACPI S5 through the PIIX4 PM1 control register (kettle exits 0), after three
///   timer ticks (which also proves the BIOS's timer interrupt runs).
const BOOT_PRELUDE: &str = r#"
    .code16
    .set PM1_CNT, 0x604
    .section .text
    .globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x7c00, %sp
    mov %dl, boot_drive
    sti
    jmp main

    .macro puts label
    mov $\label, %si
    call _puts
    .endm

    .macro poweroff
    jmp _poweroff
    .endm

# Lets three timer ticks pass first (a BIOS may hold console output back until its timer
# interrupt: SeaBIOS's serial console does), then powers off.
_poweroff:
    sti
    mov $3, %cx
1:  hlt
    loop 1b
    mov $PM1_CNT, %dx
    mov $0x2000, %ax
    out %ax, %dx
1:  hlt
    jmp 1b

putc:
    push %ax
    push %bx
    mov $0x0e, %ah
    xor %bx, %bx
    int $0x10
    pop %bx
    pop %ax
    ret

_puts:
    push %ax
1:  lodsb
    test %al, %al
    jz 2f
    call putc
    jmp 1b
2:  pop %ax
    ret

puthex16:
    push %ax
    mov %ah, %al
    call puthex8
    pop %ax
puthex8:
    push %ax
    shr $4, %al
    call 1f
    pop %ax
1:  push %ax
    and $0xf, %al
    add $'0', %al
    cmp $'9', %al
    jbe 2f
    add $('a' - '9' - 1), %al
2:  call putc
    pop %ax
    ret

boot_drive: .byte 0
"#;

const BOOT_LINKER_SCRIPT: &str = r#"
ENTRY(_start)
SECTIONS {
    . = 0x7c00;
    .text : { *(.text) *(.rodata*) *(.data*) }
    /DISCARD/ : { *(.comment) *(.eh_frame) *(.note*) }
}
"#;

/// Assembles `body` (16-bit code that must define `main`) after [`BOOT_PRELUDE`] into a boot
/// sector (at most 510 bytes, then 0x55 0xAA).
pub fn boot_sector(name: &str, body: &str) -> Vec<u8> {
    let dir = scratch_dir();
    let bin = assemble(
        &dir,
        name,
        &format!("{BOOT_PRELUDE}\n{body}\n"),
        "--32",
        &["-m", "elf_i386", "--oformat", "binary"],
        BOOT_LINKER_SCRIPT,
        "bin",
    );
    let mut code = std::fs::read(&bin).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        code.len() <= 510,
        "boot sector {name} is {} bytes; at most 510 fit before the signature",
        code.len()
    );
    code.resize(510, 0);
    code.extend_from_slice(&[0x55, 0xaa]);
    code
}

/// A raw disk image in a scratch directory: `sector0`, then `rest`, zero-padded to `size`
/// bytes. Remove it with [`remove`].
pub fn raw_disk(name: &str, sector0: &[u8], rest: &[u8], size: u64) -> PathBuf {
    let dir = scratch_dir();
    let path = dir.join(format!("{name}.img"));
    let mut data = sector0.to_vec();
    data.extend_from_slice(rest);
    assert!(data.len() as u64 <= size, "disk {name} is too small");
    data.resize(size as usize, 0);
    std::fs::write(&path, data).unwrap();
    path
}
