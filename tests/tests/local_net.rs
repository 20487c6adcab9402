//! The DEC 21140 from a small guest program on the local KVM, attached to a socket hub the test
//! also joins: a well-formed transmit and receive go through (checked byte for byte on the host
//! and in the guest), and then the guest programs the card with garbage (descriptor loops in
//! ring and chained form, zero-length buffers, a frame that never ends, tiny receive buffers,
//! buffers and descriptor lists outside RAM). kettle must neither hang nor crash, and DMA outside
//! RAM must end in the 21140's fatal bus error (CSR5 bit 13).

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kettle_tests::guest::{self, run_kettle};
use kettle_tests::report::Markers;

/// The card's address (given with mac=) and the test's own, on the hub.
const CARD_MAC: [u8; 6] = [0x00, 0x03, 0xff, 0x00, 0x00, 0x01];
const TEST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

/// The guest. CSR n is at BAR0 + 8n. Each case prints `CASE-NAME value...` lines.
const GUEST: &str = r#"
    .macro csrw n, v
    mov \v, %eax
    lea (\n*8)(%ebx), %edx
    out %eax, %dx
    .endm
    .macro csrr n
    lea (\n*8)(%ebx), %edx
    in %dx, %eax
    .endm
    .macro report label
    puts \label
    csrr 5
    call puthex32
    call newline
    .endm
    .macro dput addr, v
    movl \v, \addr
    .endm

newline:
    push %eax
    mov $'\n', %al
    call putc
    pop %eax
    ret

# Software reset; the card comes back with both processes stopped.
reset:
    csrw 0, $1
    csrw 0, $0
    ret

# Polls CSR5 until one of the bits in %ecx is set, at most 200000 reads.
wait_csr5:
    push %esi
    mov $200000, %esi
1:  csrr 5
    test %ecx, %eax
    jnz 2f
    dec %esi
    jnz 1b
2:  pop %esi
    ret

main:
    pci_read 0x80005000
    puts s_id
    call puthex32
    call newline
    # I/O space and bus master on.
    mov $0x80005004, %eax
    mov $0xcf8, %dx
    out %eax, %dx
    mov $0x0005, %eax
    mov $0xcfc, %dx
    out %eax, %dx
    pci_read 0x80005010
    and $0xfffffffc, %eax
    mov %eax, %ebx
    puts s_bar
    call puthex32
    call newline

    # 1. A good frame: one descriptor, FS|LS|IC, 60 bytes from tx_frame.
    call reset
    dput 0x200000, $0x80000000
    dput 0x200004, $(0x80000000 | 0x40000000 | 0x20000000 | 0x02000000 | 60)
    dput 0x200008, $tx_frame
    dput 0x20000c, $0
    csrw 4, $0x200000
    csrw 6, $0x2000
    csrw 1, $1
    mov $0x1, %ecx
    call wait_csr5
    puts s_tx_tdes0
    mov 0x200000, %eax
    call puthex32
    call newline
    report s_tx_good

    # 2. A chained descriptor pointing at itself, owned, no buffer, no last segment.
    csrw 6, $0
    dput 0x200100, $0x80000000
    dput 0x200104, $(0x01000000 | 0x20000000)
    dput 0x200108, $0
    dput 0x20010c, $0x200100
    csrw 4, $0x200100
    csrw 6, $0x2000
    csrw 1, $1
    report s_tx_selfloop

    # 3. A two-descriptor ring whose frame never ends (FS, no LS anywhere, 2047-byte buffers).
    call reset
    dput 0x200200, $0x80000000
    dput 0x200204, $(0x20000000 | 2047)
    dput 0x200208, $0x300000
    dput 0x20020c, $0
    dput 0x200210, $0x80000000
    dput 0x200214, $(0x02000000 | 2047)
    dput 0x200218, $0x300000
    dput 0x20021c, $0
    csrw 4, $0x200200
    csrw 6, $0x2000
    csrw 1, $1
    csrw 1, $1
    report s_tx_endless

    # 4. A frame whose buffer is outside RAM.
    call reset
    dput 0x200300, $0x80000000
    dput 0x200304, $(0x40000000 | 0x20000000 | 0x02000000 | 100)
    dput 0x200308, $0xf0000000
    dput 0x20030c, $0
    csrw 4, $0x200300
    csrw 6, $0x2000
    csrw 1, $1
    report s_tx_outside

    # 5. A transmit list outside RAM.
    call reset
    csrw 4, $0xfffffff0
    csrw 6, $0x2000
    csrw 1, $1
    report s_txlist_outside

    # 6. A good receive: one 1536-byte buffer, promiscuous.
    call reset
    dput 0x210000, $0x80000000
    dput 0x210004, $(0x02000000 | 1536)
    dput 0x210008, $0x310000
    dput 0x21000c, $0
    csrw 3, $0x210000
    csrw 6, $0x42
    puts s_rx_ready
    mov $0x40, %ecx
    call wait_csr5
    puts s_rx_rdes0
    mov 0x210000, %eax
    call puthex32
    call newline
    puts s_rx_data
    mov 0x310000, %eax
    call puthex32
    mov $' ', %al
    call putc
    mov 0x310004, %eax
    call puthex32
    mov $' ', %al
    call putc
    mov 0x31000c, %eax
    call puthex32
    call newline
    report s_rx_good

    # 7. A chained receive descriptor pointing at itself with no buffers.
    call reset
    dput 0x210100, $0x80000000
    dput 0x210104, $0x01000000
    dput 0x210108, $0
    dput 0x21010c, $0x210100
    csrw 3, $0x210100
    csrw 6, $0x42
    mov $0xc0, %ecx
    call wait_csr5
    csrw 2, $1
    report s_rx_selfloop

    # 8. Two 8-byte receive buffers in a ring with the largest descriptor skip length.
    call reset
    csrw 0, $(31 << 2)
    dput 0x220000, $0x80000000
    dput 0x220004, $8
    dput 0x220008, $0x320000
    dput 0x22000c, $0
    dput 0x22008c, $0x80000000
    dput 0x220090, $(0x02000000 | 8)
    dput 0x220094, $0x320100
    dput 0x220098, $0
    csrw 3, $0x220000
    csrw 6, $0x42
    mov $0xc0, %ecx
    call wait_csr5
    csrw 2, $1
    report s_rx_tiny

    # 9. A receive buffer outside RAM.
    call reset
    dput 0x210200, $0x80000000
    dput 0x210204, $(0x02000000 | 1536)
    dput 0x210208, $0xf0000000
    dput 0x21020c, $0
    csrw 3, $0x210200
    csrw 6, $0x42
    mov $0x2000, %ecx
    call wait_csr5
    report s_rx_outside

    puts s_done
    poweroff

    .section .data
s_id: .asciz "PCI-ID "
s_bar: .asciz "BAR0 "
s_tx_tdes0: .asciz "TX-GOOD-TDES0 "
s_tx_good: .asciz "TX-GOOD-CSR5 "
s_tx_selfloop: .asciz "TX-SELFLOOP-CSR5 "
s_tx_endless: .asciz "TX-ENDLESS-CSR5 "
s_tx_outside: .asciz "TX-OUTSIDE-CSR5 "
s_txlist_outside: .asciz "TXLIST-OUTSIDE-CSR5 "
s_rx_ready: .asciz "RX-READY\n"
s_rx_rdes0: .asciz "RX-GOOD-RDES0 "
s_rx_data: .asciz "RX-GOOD-DATA "
s_rx_good: .asciz "RX-GOOD-CSR5 "
s_rx_selfloop: .asciz "RX-SELFLOOP-CSR5 "
s_rx_tiny: .asciz "RX-TINY-CSR5 "
s_rx_outside: .asciz "RX-OUTSIDE-CSR5 "
s_done: .asciz "DONE\n"
    .balign 4
tx_frame:
    .byte 0x02, 0x00, 0x00, 0x00, 0x00, 0x01
    .byte 0x00, 0x03, 0xff, 0x00, 0x00, 0x01
    .byte 0x88, 0xb5
    .ascii "KETTLE-TX-FRAME"
    .fill 31, 1, 0x5a
"#;

/// The frame the guest transmits in case 1, as the hub must deliver it.
fn expected_tx() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&TEST_MAC);
    f.extend_from_slice(&CARD_MAC);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(b"KETTLE-TX-FRAME");
    f.resize(60, 0x5a);
    f
}

/// The frame the test sends to the card, over and over.
fn rx_frame() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&CARD_MAC);
    f.extend_from_slice(&TEST_MAC);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(b"KETTLE-RX-FRAME!");
    f.resize(60, 0xa5);
    f
}

fn hex12(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect()
}

struct NetRun {
    code: Option<i32>,
    serial: String,
    stderr: String,
    /// Frames the card sent into the hub.
    frames: Vec<Vec<u8>>,
}

fn run_net_guest() -> NetRun {
    let elf = guest::build("tulip", GUEST);
    let dir = elf.parent().unwrap().join("hub");
    std::fs::create_dir_all(&dir).unwrap();
    let me = UnixDatagram::bind(dir.join(format!("{}.sock", hex12(&TEST_MAC)))).unwrap();
    me.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let card = dir.join(format!("{}.sock", hex12(&CARD_MAC)));
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let me = me.try_clone().unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || feed(&me, &card, &stop))
    };
    let (code, serial, stderr) = run_kettle(
        &elf,
        &[&format!(
            "--nic=tulip,backend=socket:{},mac=00:03:ff:00:00:01",
            dir.display()
        )],
    );
    stop.store(true, Ordering::SeqCst);
    let frames = feeder.join().unwrap();
    guest::remove(&elf);
    NetRun {
        code,
        serial,
        stderr,
        frames,
    }
}

/// Sends the receive frame to the card every 10 ms and collects what the card sends, until
/// told to stop (at most 10000 frames each way).
fn feed(me: &UnixDatagram, card: &Path, stop: &AtomicBool) -> Vec<Vec<u8>> {
    let frame = rx_frame();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    for _ in 0..10_000 {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        // The card's socket appears when kettle starts; until then sends fail.
        let _ = me.send_to(&frame, card);
        if let Ok(n) = me.recv(&mut buf) {
            if got.len() < 10_000 {
                got.push(buf[..n].to_vec());
            }
        }
    }
    got
}

#[test]
fn good_frames_go_both_ways_and_garbage_rings_neither_hang_nor_crash() {
    let r = run_net_guest();
    eprintln!("guest serial output:\n{}", r.serial);
    let m = Markers(&r.serial);
    assert_eq!(
        r.code,
        Some(0),
        "kettle failed:\n{}\nserial:\n{}",
        r.stderr,
        r.serial
    );
    assert!(
        r.serial.contains("DONE"),
        "the guest did not finish:\n{}",
        r.serial
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    // 1011:0009 at 00:0a.0 with its I/O BAR where the firmware put it.
    assert_eq!(m.one("PCI-ID"), "00091011");
    assert_eq!(m.one("BAR0"), "0000c000");

    // The good frame: descriptor handed back without the error summary, on the hub intact.
    let tdes0 = u32::from_str_radix(m.one("TX-GOOD-TDES0"), 16).unwrap();
    assert_eq!(tdes0 & 0x8000_8000, 0, "OWN or ES still set: {tdes0:#x}");
    let csr5 = |k: &str| u32::from_str_radix(m.one(k), 16).unwrap();
    assert_ne!(csr5("TX-GOOD-CSR5") & 1, 0, "no TI after an IC frame");
    assert!(
        r.frames.contains(&expected_tx()),
        "the hub did not get the guest's frame; got {} frames: {:02x?}",
        r.frames.len(),
        r.frames.first()
    );

    // The good receive: length 60 + 4 (CRC), first and last segment, data in place.
    let rdes0 = u32::from_str_radix(m.one("RX-GOOD-RDES0"), 16).unwrap();
    assert_eq!(rdes0 & 0x8000_0000, 0, "RDES0 still owned: {rdes0:#x}");
    assert_eq!(
        (rdes0 >> 16) & 0x3fff,
        64,
        "frame length in RDES0 {rdes0:#x}"
    );
    assert_eq!(rdes0 & 0x300, 0x300, "FS/LS in RDES0 {rdes0:#x}");
    let data: Vec<&str> = m.one("RX-GOOD-DATA").split(' ').collect();
    // Bytes 0-3 (00 03 ff 00), 4-7 (00 01 02 00), 12-15 (88 b5 'K' 'E') little-endian.
    assert_eq!(data, ["00ff0300", "00020100", "454bb588"]);

    // DMA outside RAM: fatal bus error, and the card stays usable (the next case runs).
    for k in ["TX-OUTSIDE-CSR5", "TXLIST-OUTSIDE-CSR5", "RX-OUTSIDE-CSR5"] {
        assert_ne!(csr5(k) & (1 << 13), 0, "{k} without FBE: {:#x}", csr5(k));
    }
    // The loops ended; the cards report something defined.
    for k in [
        "TX-SELFLOOP-CSR5",
        "TX-ENDLESS-CSR5",
        "RX-SELFLOOP-CSR5",
        "RX-TINY-CSR5",
    ] {
        assert_ne!(csr5(k), 0xffff_ffff, "{k}");
    }
}
