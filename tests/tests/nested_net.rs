//! The DEC 21140 with Linux's own `tulip` driver as the judge: Debian's kernel booted by kettle
//! inside the nested test host (TESTING.md), with every backend a user would use. One outer boot
//! runs, in a row:
//!
//! 1. `tap`: kettle creates the TAP interface kt0 in the nested host (it runs as root there);
//!    the host gives it 10.0.0.1. The guest (10.0.0.2) reports what the driver found (dmesg, the
//!    MAC it read from the SROM, carrier, speed, duplex), pings the host while the host pings
//!    it, sends 64 MiB of random data to the host over TCP and receives 64 MiB from it, both
//!    checked by SHA-256 on each side. Then the address filter: the host sends three steady
//!    ICMP flows into kt0 (to a foreign unicast MAC, to multicast group 239.1.2.3 and to another
//!    group) and the guest counts what its driver receives in fixed windows: normally, with
//!    `ip link set eth0 promisc on`, after turning it off, after joining 239.1.2.3's MAC (one
//!    group: tulip builds a perfect-filter setup frame), after joining 16 groups (more than 14:
//!    a hash setup frame) and with `allmulticast on`.
//! 2. `socket`: two kettle VMs on one socket hub directory (the socket backend) ping each other
//!    and move 64 MiB each way over TCP, checked by SHA-256.
//! 3. `passt`: kettle starts passt; the guest gets its address by DHCP (busybox udhcpc) and
//!    fetches 1 MiB from a TCP server listening on the nested host, through the gateway address
//!    passt maps to the host's loopback. passt needs a routable interface to copy its addresses
//!    from, so the nested host gets a dummy interface with a default route into it:
//!    nothing leaves the nested host, which has no network at all (its QEMU runs with
//!    `-nic none`).
//!
//! The TAP and passt phases share one nested host; the socket hub gets one of its own.
//! `KETTLE_NET_LOG=FILE` keeps the nested hosts' whole consoles in FILE.PHASES;
//! `KETTLE_NESTED_LOG=FILE` writes them live.
//!
//! These tests need QEMU, binutils and passt (resources/setup.sh installs them); they fail,
//! never skip, when something is missing, and say what.

use std::sync::OnceLock;
use std::time::Duration;

use kettle_tests::nested::{
    find_on_path, guest_initrd_with, require_tools, run_nested_with, section, GuestExtras,
    NestedOptions, NestedRun,
};
use kettle_tests::report::{assemble_static, once, Markers};

/// What every guest does first: wait for eth0, print what the driver found, bring it up and
/// wait for the carrier.
const GUEST_COMMON: &str = r#"
dmesg -n 1
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i+1)); done
echo "GUEST-MAC $(cat /sys/class/net/eth0/address)"
ip link set eth0 up
i=0; while [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" != 1 ] && [ $i -lt 150 ]; do sleep 0.2; i=$((i+1)); done
echo "GUEST-CARRIER $(cat /sys/class/net/eth0/carrier 2>/dev/null)"
echo DMESG-BEGIN
dmesg | grep -i -E 'tulip|eth0|21140'
echo DMESG-END
# A FIFO held open for writing: nc's standard input that never ends, so nc only stops when the
# peer closes (busybox nc shuts its sending side down at end of input and exits at the peer's).
mkfifo /tmp/hold
sleep 900 >/tmp/hold &
# send PREFIX HOST PORT: 64 MiB of random data to HOST:PORT; prints PREFIX-SENT-SHA.
send() {
    echo "$1-SEND-START $(cut -d' ' -f1 /proc/uptime)"
    mkfifo /tmp/sendfifo
    sha256sum </tmp/sendfifo | cut -d' ' -f1 >/tmp/sent.sha &
    dd if=/dev/urandom bs=64k count=1024 2>/dev/null | tee /tmp/sendfifo | nc "$2" "$3"
    echo "$1-SEND-STATUS $?"
    wait $!
    rm -f /tmp/sendfifo
    echo "$1-SENT-SHA $(cat /tmp/sent.sha)"
    echo "$1-SEND-END $(cut -d' ' -f1 /proc/uptime)"
}
# recv PREFIX HOST PORT: everything HOST:PORT sends; prints PREFIX-RECV-SHA and -BYTES.
recv() {
    mkfifo /tmp/countfifo
    wc -c </tmp/countfifo >/tmp/recv.count &
    nc "$2" "$3" </tmp/hold | tee /tmp/countfifo | sha256sum | cut -d' ' -f1 >/tmp/recv.sha
    wait $!
    rm -f /tmp/countfifo
    echo "$1-RECV-SHA $(cat /tmp/recv.sha)"
    echo "$1-RECV-BYTES $(cat /tmp/recv.count)"
    echo "$1-RECV-END $(cut -d' ' -f1 /proc/uptime)"
}
# wait_ping PREFIX HOST: pings HOST until it answers (at most ~60 s); prints PREFIX-PING.
wait_ping() {
    i=0
    until ping -c 1 -W 1 "$2" >/dev/null 2>&1; do
        i=$((i+1)); [ $i -ge 60 ] && break
    done
    ping -c 3 -W 3 "$2" >/tmp/ping 2>&1
    echo "$1-PING $?"
    sed "s/^/$1-PING-OUT /" /tmp/ping
}
"#;

/// Guest 1, on the TAP interface.
const TAP: &str = r#"
ip addr add 10.0.0.2/24 dev eth0
wait_ping GUEST 10.0.0.1
send G2H 10.0.0.1 5001
recv H2G 10.0.0.1 5002
rx() { cat /sys/class/net/eth0/statistics/rx_packets; }
window() { a=$(rx); sleep 3; b=$(rx); echo "RX-$1 $((b - a))"; }
window NORMAL
ip link set eth0 promisc on; echo "PROMISC-ON-STATUS $?"; sleep 0.5
window PROMISC
ip link set eth0 promisc off; sleep 0.5
window AFTER-PROMISC
mcjoin 1; echo "MCJOIN-1-STATUS $?"; sleep 0.5
window JOINED-PERFECT
mcjoin h; echo "MCJOIN-16-STATUS $?"; sleep 0.5
window JOINED-HASH
# busybox's ip has no allmulticast; its ifconfig sets the same IFF_ALLMULTI.
ifconfig eth0 allmulti; echo "ALLMULTI-ON-STATUS $?"; sleep 0.5
window ALLMULTI
echo "GUEST-RX-ERRORS $(cat /sys/class/net/eth0/statistics/rx_errors)"
echo "GUEST-TX-ERRORS $(cat /sys/class/net/eth0/statistics/tx_errors)"
echo FULL-DMESG-BEGIN
dmesg | grep -i -E 'tulip|eth0|duplex|link'
echo FULL-DMESG-END
"#;

/// Guest 2a: the socket hub's server.
const SOCKET_A: &str = r#"
ip addr add 10.0.1.1/24 dev eth0
# Serve: receive on 5001, send on 5002 (both at once; B drives the order).
nc -l -p 5001 </tmp/hold | sha256sum | cut -d' ' -f1 >/tmp/a-recv.sha &
R=$!
mkfifo /tmp/afifo
sha256sum </tmp/afifo | cut -d' ' -f1 >/tmp/a-sent.sha &
S=$!
dd if=/dev/urandom bs=64k count=1024 2>/dev/null | tee /tmp/afifo | nc -l -p 5002 >/dev/null
echo "A-SERVE-STATUS $?"
wait $R $S
echo "A-RECV-SHA $(cat /tmp/a-recv.sha)"
echo "A-SENT-SHA $(cat /tmp/a-sent.sha)"
"#;

/// Guest 2b: the socket hub's client.
const SOCKET_B: &str = r#"
ip addr add 10.0.1.2/24 dev eth0
wait_ping B 10.0.1.1
sleep 2
send B 10.0.1.1 5001
recv B 10.0.1.1 5002
"#;

/// Guest 3, behind passt.
const PASST: &str = r#"
udhcpc -i eth0 -n -q -t 10 -T 2 -s /tests/dhcp.sh >/tmp/udhcpc 2>&1
echo "DHCP-STATUS $?"
sed 's/^/DHCP-OUT /' /tmp/udhcpc
echo "PASST-ADDR $(ip -4 addr show dev eth0 | grep -o 'inet [0-9.]*' | cut -d' ' -f2)"
GW=$(ip route | grep '^default' | cut -d' ' -f3)
echo "PASST-GATEWAY $GW"
recv PASST "$GW" 5003
# The cable: the host unplugs it through kettle's API, then plugs it back in. Linux's tulip
# driver sees a 21140's MII link in its media timer (every 60 s while the link is up, every
# 3 s while it is down).
carrier() { cat /sys/class/net/eth0/carrier 2>/dev/null || echo 0; }
wait_carrier() { # VALUE: up to 150 s
    j=0
    while [ "$(carrier)" != "$1" ] && [ $j -lt 1500 ]; do sleep 0.1; j=$((j+1)); done
    [ "$(carrier)" = "$1" ]
}
echo "LINK-TEST-READY $(carrier)"
wait_carrier 0; echo "LINK-DOWN-SEEN $?"
ip link show eth0 | grep -o 'NO-CARRIER' | sed 's/^/LINK-FLAGS /'
wait_carrier 1; echo "LINK-UP-SEEN $?"
"#;

/// udhcpc's event script: configures what the lease says.
const DHCP_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
    bound|renew)
        ip addr add "$ip/${mask:-24}" dev "$interface"
        for r in $router; do ip route add default via "$r" dev "$interface"; break; done
        echo "DHCP-BOUND $ip $router"
        ;;
esac
exit 0
"#;

/// The nested host's script.
const SCRIPT: &str = r#"
KT=/guest/initrd-net.gz
CMD="console=ttyS0 quiet kettle.modules=tulip"
run_vm() { # NAME NIC-SPEC [more kettle flags]: one guest, its console on ours as NAME-CONSOLE
    # (and in /tmp/NAME.con as it comes), its control API on /tmp/NAME.api
    name=$1; nic=$2; shift 2
    { timeout ${VM_TIMEOUT:-600} kettle --log-level info run --kernel "$GUEST_KERNEL" --initrd $KT --memory 256M \
        --name "$name" --nic "$nic" --serial stdio --cmdline "$CMD kettle.run=$name" \
        --api-socket /tmp/$name.api "$@" </dev/null 2>/tmp/$name.log; echo $? >/tmp/$name.status; } |
        tr -d '\r' | tee /tmp/$name.con | sed "s/^/$name-CONSOLE /"
    echo "$name-EXIT $(cat /tmp/$name.status)"
}
# wait_line FILE TEXT: until FILE has a line containing TEXT (at most 300 s)
wait_line() {
    j=0
    while ! grep -q "$2" "$1" 2>/dev/null && [ $j -lt 3000 ]; do sleep 0.1; j=$((j+1)); done
    grep -q "$2" "$1" 2>/dev/null
}
show() { # NAME: kettle's messages, prefixed
    sed "s/^/$1-LOG /" /tmp/$1.log
}
mkfifo /tmp/hold
sleep 1200 >/tmp/hold &

phase_tap() {
echo "=== tap"
dd if=/dev/urandom of=/tmp/h2g bs=1M count=64 2>/dev/null
echo "HOST-H2G-SHA $(sha256sum </tmp/h2g | cut -d' ' -f1)"
run_vm tap tulip,backend=tap:kt0 &
VM=$!
i=0; while [ ! -e /sys/class/net/kt0 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
echo "HOST-TAP-FLAGS $(cat /sys/class/net/kt0/flags 2>/dev/null)"
ip addr add 10.0.0.1/24 dev kt0
ip link set kt0 up
nc -l -p 5001 </tmp/hold | sha256sum | cut -d' ' -f1 >/tmp/g2h.sha &
nc -l -p 5002 </tmp/h2g >/dev/null &
# Three steady flows for the address-filter windows: a foreign unicast MAC and two groups.
arp -s 10.0.0.99 00:03:ff:aa:bb:cc
ip route add 239.0.0.0/8 dev kt0
ping -q -i 0.1 10.0.0.99 >/dev/null 2>&1 &
ping -q -i 0.1 -I kt0 239.1.2.3 >/dev/null 2>&1 &
ping -q -i 0.1 -I kt0 @OTHER_GROUP@ >/dev/null 2>&1 &
i=0; ok=1
while [ $i -lt 120 ]; do
    if ping -c 1 -W 1 10.0.0.2 >/dev/null 2>&1; then ok=0; break; fi
    i=$((i+1))
done
echo "HOST-PING-GUEST $ok"
wait $VM
kill $(pidof ping) 2>/dev/null
echo "HOST-G2H-SHA $(cat /tmp/g2h.sha)"
show tap
rm -f /tmp/h2g
}

# stuck_report: where every kettle thread is, for a run that stopped making progress.
stuck_report() {
    for p in $(pidof kettle); do
        for t in /proc/$p/task/*; do
            echo "STUCK-TASK $p $(cat $t/comm) $(cut -d' ' -f3 $t/stat) $(cat $t/wchan)"
            sed "s/^/STUCK-STACK $p $(cat $t/comm) /" $t/stack 2>/dev/null
        done
    done
}

phase_socket() {
echo "=== socket"
mkdir /tmp/hub
# Heavy traffic between VMs wants a deeper queue per hub socket than the kernel's default of
# 10 datagrams, as kettle's socket backend documents (with 10, frames for a busy guest wait
# and then are dropped). Sockets take the value when they are created: before the kettles.
echo 512 >/proc/sys/net/unix/max_dgram_qlen
echo "HUB-QLEN $(cat /proc/sys/net/unix/max_dgram_qlen)"
# Two guests share the nested host's one emulated CPU: 64 MiB one way took from 4 to 11
# minutes here, so a longer bound than the other phases'.
VM_TIMEOUT=1500
run_vm sockA tulip,backend=socket:/tmp/hub &
A=$!
run_vm sockB tulip,backend=socket:/tmp/hub &
B=$!
# Shortly before run_vm's timeout: say where kettle is if it is still running.
{ sleep $((VM_TIMEOUT - 40)); stuck_report; } &
W=$!
wait $A $B
kill $W 2>/dev/null
echo "HUB-LEFT $(ls /tmp/hub | wc -l)"
show sockA
show sockB
}

phase_passt() {
echo "=== passt"
# passt copies its addresses from the interface of the default route (one with a carrier);
# give it one that leads nowhere: a dummy interface.
modprobe dummy numdummies=1
ip addr add 192.168.50.1/24 dev dummy0
ip link set dummy0 up
ip route add default via 192.168.50.2 dev dummy0
dd if=/dev/urandom of=/tmp/passt-data bs=64k count=16 2>/dev/null
echo "HOST-PASST-SHA $(sha256sum </tmp/passt-data | cut -d' ' -f1)"
nc -l -p 5003 </tmp/passt-data >/dev/null &
run_vm passt tulip,backend=passt,pcap=/tmp/passt.pcap &
VM=$!
# Unplug the cable once the guest is ready for it, plug it back once the guest saw it gone.
wait_line /tmp/passt.con LINK-TEST-READY
kettle ctl /tmp/passt.api link 0 down >/tmp/link.out 2>&1
echo "HOST-LINK-DOWN $?"
wait_line /tmp/passt.con LINK-DOWN-SEEN
kettle ctl /tmp/passt.api link 0 up >>/tmp/link.out 2>&1
echo "HOST-LINK-UP $?"
sed 's/^/HOST-LINK-OUT /' /tmp/link.out
wait $VM
echo "PASST-PCAP-BYTES $(wc -c </tmp/passt.pcap)"
echo "PASST-LEFT $(pidof passt | wc -w)"
echo "PASST-LISTENERS $(netstat -tln 2>/dev/null | grep -c ':5003 ')"
# A failed fetch leaves a small capture: dump it so the test's message shows the frames.
[ "$(wc -c </tmp/passt.pcap)" -lt 65536 ] && od -A x -t x1 -v /tmp/passt.pcap | sed 's/^/PASST-PCAP-DUMP /'
show passt
}

for phase in @PHASES@; do "phase_$phase"; done
"#;

/// `mcjoin 1` adds the multicast MAC 01:00:5e:01:02:03 (group 239.1.2.3) to eth0 with
/// SIOCADDMULTI; `mcjoin h` adds 16 (01:00:5e:01:02:03 to :12), more than tulip's 14 perfect
/// slots. A static x86-64 Linux program (raw system calls); exits with the failing errno.
const MCJOIN: &str = r#"
    .globl _start
    .text
_start:
    mov $1, %r14
    mov (%rsp), %rax
    cmp $2, %rax
    jl 1f
    mov 16(%rsp), %rsi
    cmpb $'h', (%rsi)
    jne 1f
    mov $16, %r14
1:  mov $41, %eax               # socket(AF_INET, SOCK_DGRAM, 0)
    mov $2, %edi
    mov $2, %esi
    xor %edx, %edx
    syscall
    test %rax, %rax
    js fail
    mov %rax, %r12
    xor %r13, %r13
2:  lea ifr(%rip), %rdx
    mov %r13b, %al
    add $3, %al
    movb %al, 23(%rdx)          # last byte of the address (sa_data[5])
    mov $16, %eax               # ioctl(fd, SIOCADDMULTI, &ifr)
    mov %r12, %rdi
    mov $0x8931, %esi
    syscall
    test %rax, %rax
    js fail
    inc %r13
    cmp %r14, %r13
    jl 2b
    mov $60, %eax
    xor %edi, %edi
    syscall
fail:
    neg %rax
    mov %rax, %rdi
    mov $60, %eax
    syscall
    .data
ifr:
    .ascii "eth0"
    .fill 12, 1, 0              # ifr_name[16]
    .short 0                    # sa_family = AF_UNSPEC
    .byte 0x01, 0x00, 0x5e, 0x01, 0x02, 0x03
    .fill 16, 1, 0              # rest of sa_data and of the union
"#;

/// The CRC Linux's tulip driver hashes multicast addresses with (ether_crc_le), as the index
/// into the 512-bit hash table of a setup frame.
fn tulip_hash(mac: [u8; 6]) -> u32 {
    let mut crc = !0u32;
    for b in mac {
        let mut x = b;
        for _ in 0..8 {
            let bit = (crc ^ u32::from(x)) & 1;
            crc >>= 1;
            if bit != 0 {
                crc ^= 0xedb8_8320;
            }
            x >>= 1;
        }
    }
    crc & 0x1ff
}

/// A group outside the 16 joined ones whose hash bucket none of them (nor broadcast, which
/// tulip also hashes) shares, so the hash filter really must drop it.
fn other_group() -> String {
    let joined: Vec<u32> = (0..16u8)
        .map(|k| tulip_hash([0x01, 0x00, 0x5e, 0x01, 0x02, 0x03 + k]))
        .chain([tulip_hash([0xff; 6])])
        .collect();
    let last = (1..=254u8)
        .find(|&x| !joined.contains(&tulip_hash([0x01, 0x00, 0x5e, 0x04, 0x05, x])))
        .expect("a group in a free hash bucket");
    format!("239.4.5.{last}")
}

struct Results {
    run: NestedRun,
}

/// The TAP and passt phases, in one nested host.
fn results() -> &'static Results {
    static RESULTS: OnceLock<Result<Results, String>> = OnceLock::new();
    // KETTLE_NET_PHASES narrows the run when debugging one phase (e.g. "passt"); the tests of
    // the phases left out then fail for want of their markers.
    once(&RESULTS, || {
        prepare_and_run(&std::env::var("KETTLE_NET_PHASES").unwrap_or_else(|_| "tap passt".into()))
    })
}

/// The socket-hub phase, in a nested host of its own (so that one phase's trouble does not
/// hide the other's results).
fn hub_results() -> &'static Results {
    static RESULTS: OnceLock<Result<Results, String>> = OnceLock::new();
    once(&RESULTS, || prepare_and_run("socket"))
}

fn prepare_and_run(phases: &str) -> Results {
    if let Err(e) = require_tools(&[("as", "binutils"), ("ld", "binutils"), ("passt", "passt")]) {
        panic!("the network tests need: {e}");
    }
    let passt = find_on_path("passt").expect("passt on PATH");
    let dir = std::env::temp_dir().join(format!("kettle-nested-net-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mcjoin = assemble_static(&dir, "mcjoin", MCJOIN);
    let with_common = |s: &str| format!("{GUEST_COMMON}{s}");
    let (tap, a, b, p) = (
        with_common(TAP),
        with_common(SOCKET_A),
        with_common(SOCKET_B),
        with_common(PASST),
    );
    let initrd = guest_initrd_with(
        &[
            ("tap", &tap),
            ("sockA", &a),
            ("sockB", &b),
            ("passt", &p),
            ("dhcp", DHCP_SCRIPT),
        ],
        &GuestExtras::new().file(&mcjoin, "/bin/mcjoin"),
        &dir.join("initrd-net.gz"),
    )
    .unwrap_or_else(|e| panic!("building the test initramfs: {e}"));
    let script = SCRIPT
        .replace("@OTHER_GROUP@", &other_group())
        .replace("@PHASES@", phases);
    // The socket hub's phase alone may take up to its VMs' 1500 s bound.
    let bound = if phases == "socket" { 2100 } else { 1200 };
    let options = NestedOptions::new(Duration::from_secs(bound))
        .add(&initrd, "/guest/initrd-net.gz")
        .bin(&passt, "/usr/bin/passt");
    let run = run_nested_with(&script, &options);
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(path) = std::env::var_os("KETTLE_NET_LOG") {
        let mut path = path;
        path.push(format!(".{}", phases.replace(' ', "-")));
        let _ = std::fs::write(path, &run.console);
    }
    Results { run }
}

fn output(r: &'static Results) -> &'static str {
    r.run.expect_success();
    r.run.script_output().expect("the nested script's output")
}

fn out() -> &'static str {
    output(results())
}

/// The markers of the TAP and passt phases.
fn m() -> Markers<'static> {
    Markers(out())
}

/// The markers of the socket-hub phase.
fn hub() -> Markers<'static> {
    Markers(output(hub_results()))
}

/// The run a guest belongs to.
fn run_of(name: &str) -> Markers<'static> {
    if name.starts_with("sock") {
        hub()
    } else {
        m()
    }
}

/// The console lines of guest `name`, without their prefix.
fn console(name: &str) -> String {
    run_of(name).lines(&format!("{name}-CONSOLE")).join("\n")
}

/// The `MARKER value` lines a guest printed on its console.
fn guest(name: &str) -> Markers<'static> {
    let text: &'static str = Box::leak(console(name).into_boxed_str());
    Markers(text)
}

#[track_caller]
fn assert_sha256(value: &str, what: &str) {
    assert!(
        value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()),
        "{what} is not a SHA-256: {value:?}\n{}",
        out()
    );
    assert_ne!(
        value,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "{what} is the hash of nothing: no data arrived\n{}",
        out()
    );
}

#[test]
fn every_guest_powers_off_cleanly() {
    for name in ["tap", "sockA", "sockB", "passt"] {
        assert_eq!(
            run_of(name).one(&format!("{name}-EXIT")),
            "0",
            "{name}:\n{}",
            console(name)
        );
        assert_eq!(
            guest(name).one("KETTLE-TEST-EXIT"),
            "0",
            "{name}:\n{}",
            console(name)
        );
    }
}

#[test]
fn tulip_binds_reads_the_mac_from_the_srom_and_reports_link_up() {
    let g = guest("tap");
    let mac = g.one("GUEST-MAC");
    assert!(
        mac.starts_with("00:03:ff:"),
        "not a Virtual Server MAC: {mac}"
    );
    // The MAC kettle chose (derived from --name) is the one the driver read from the SROM.
    let log = m().values("tap-LOG").join("\n");
    assert!(
        log.contains(&format!("MAC {mac}")),
        "kettle's log does not name MAC {mac}:\n{log}"
    );
    let dmesg = section(&console("tap"), "DMESG-BEGIN", "DMESG-END")
        .unwrap_or_default()
        .to_string();
    assert!(dmesg.contains("21140"), "no 21140 in dmesg:\n{dmesg}");
    assert!(dmesg.contains(mac), "dmesg does not show {mac}:\n{dmesg}");
    assert!(
        dmesg.contains("MII transceiver"),
        "the driver found no MII PHY through the SROM media table:\n{dmesg}"
    );
    assert_eq!(g.one("GUEST-CARRIER"), "1", "{dmesg}");
    // tulip has no ethtool speed/duplex for the 21140; what it read from the PHY is in its
    // probe line: BMSR 782d = link up, autonegotiation complete, 100BASE-TX full/half and
    // 10BASE-T full/half capable; it advertises 01e1 (all four). (tulip_check_duplex then picks
    // full duplex from the partner's 41e1: the device's unit tests replay it.)
    assert!(
        dmesg.contains("MII transceiver #1 config 3000 status 782d advertising 01e1"),
        "the PHY's status as the driver read it:\n{dmesg}"
    );
    // Each guest of one run got its own stable address from its name.
    let macs: Vec<&str> = ["tap", "sockA", "sockB", "passt"]
        .iter()
        .map(|n| guest(n).one("GUEST-MAC"))
        .collect();
    for (i, a) in macs.iter().enumerate() {
        assert!(!macs[..i].contains(a), "duplicate MAC {a} among {macs:?}");
    }
}

#[test]
fn tap_guest_and_host_ping_each_other() {
    let g = guest("tap");
    assert_eq!(g.one("GUEST-PING"), "0", "{}", console("tap"));
    assert_eq!(m().one("HOST-PING-GUEST"), "0");
    // kettle created kt0 and brought it up (IFF_UP is bit 0 of the flags).
    let flags = m().one("HOST-TAP-FLAGS");
    let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16)
        .unwrap_or_else(|_| panic!("kt0 flags {flags:?}: kettle did not create kt0"));
    assert_eq!(flags & 1, 1, "kt0 is not up: flags {flags:#x}");
}

#[test]
fn tap_moves_64_mib_each_way_intact() {
    let g = guest("tap");
    let sent = g.one("G2H-SENT-SHA");
    assert_sha256(sent, "the guest's data");
    assert_eq!(sent, m().one("HOST-G2H-SHA"), "guest -> host");
    let h2g = m().one("HOST-H2G-SHA");
    assert_eq!(g.one("H2G-RECV-SHA"), h2g, "host -> guest");
    assert_eq!(g.one("H2G-RECV-BYTES"), (64u64 << 20).to_string());
    assert_eq!(g.one("GUEST-RX-ERRORS"), "0");
    assert_eq!(g.one("GUEST-TX-ERRORS"), "0");
}

#[test]
fn promiscuous_mode_and_multicast_joins_change_what_the_guest_receives() {
    let g = guest("tap");
    for s in [
        "PROMISC-ON-STATUS",
        "MCJOIN-1-STATUS",
        "MCJOIN-16-STATUS",
        "ALLMULTI-ON-STATUS",
    ] {
        assert_eq!(g.one(s), "0", "{s}:\n{}", console("tap"));
    }
    let n = |w: &str| g.number(&format!("RX-{w}"));
    // Three flows of equal rate reach kt0: foreign unicast, group 1, group 2.
    let all = n("PROMISC");
    let text = console("tap");
    assert!(
        all >= 30,
        "promiscuous mode let only {all} frames in:\n{text}"
    );
    let little = (all / 10).max(5);
    assert!(
        n("NORMAL") <= little,
        "the filter let foreign frames in:\n{text}"
    );
    assert!(
        n("AFTER-PROMISC") <= little,
        "promiscuous mode did not end:\n{text}"
    );
    // One group (perfect filter), then 16 groups (hash filter): one flow of three.
    for w in ["JOINED-PERFECT", "JOINED-HASH"] {
        let v = n(w);
        assert!(
            v >= all / 6 && v <= all / 2,
            "{w}: {v} frames, expected about a third of {all}:\n{text}"
        );
    }
    // All multicast: both groups, not the foreign unicast flow.
    let v = n("ALLMULTI");
    assert!(
        v >= all / 2 && v <= all * 5 / 6,
        "ALLMULTI: {v} frames, expected about two thirds of {all}:\n{text}"
    );
}

/// Everything the socket hub's phase says about its two guests, for a failure's message.
fn hub_report() -> String {
    format!(
        "A:\n{}\nB:\n{}\nkettle A:\n{}\nkettle B:\n{}\nexits: {:?} {:?}\nthreads:\n{}\n{}",
        console("sockA"),
        console("sockB"),
        hub().lines("sockA-LOG").join("\n"),
        hub().lines("sockB-LOG").join("\n"),
        hub().values("sockA-EXIT"),
        hub().values("sockB-EXIT"),
        hub().lines("STUCK-TASK").join("\n"),
        hub().lines("STUCK-STACK").join("\n")
    )
}

#[test]
fn two_vms_on_a_socket_hub_ping_and_move_64_mib_each_way() {
    let (a, b) = (guest("sockA"), guest("sockB"));
    assert_eq!(b.one("B-PING"), "0", "{}", console("sockB"));
    assert_eq!(
        b.values("B-SENT-SHA").len(),
        1,
        "B did not finish sending:\n{}",
        hub_report()
    );
    let b_sent = b.one("B-SENT-SHA");
    assert_sha256(b_sent, "B's data");
    assert_eq!(
        a.values("A-RECV-SHA").len(),
        1,
        "A did not finish:\n{}",
        hub_report()
    );
    assert_eq!(a.one("A-RECV-SHA"), b_sent, "B -> A");
    let a_sent = a.one("A-SENT-SHA");
    assert_sha256(a_sent, "A's data");
    assert_eq!(b.one("B-RECV-SHA"), a_sent, "A -> B");
    assert_eq!(b.one("B-RECV-BYTES"), (64u64 << 20).to_string());
    // Both NICs removed their hub sockets when they stopped.
    assert_eq!(hub().one("HUB-LEFT"), "0");
}

#[test]
fn passt_gives_an_address_by_dhcp_and_reaches_a_host_loopback_server() {
    let g = guest("passt");
    assert_eq!(g.one("DHCP-STATUS"), "0", "{}", console("passt"));
    let addr = g.one("PASST-ADDR");
    assert!(
        addr.starts_with("192.168.50."),
        "passt gives the guest the host's address; got {addr:?}"
    );
    let gw = g.one("PASST-GATEWAY");
    assert_eq!(gw, "192.168.50.2", "{}", console("passt"));
    let sha = m().one("HOST-PASST-SHA");
    assert_eq!(
        g.one("PASST-RECV-SHA"),
        sha,
        "the fetch through passt failed:\n{}\nkettle:\n{}\ncapture:\n{}",
        console("passt"),
        m().values("passt-LOG").join("\n"),
        m().values("PASST-PCAP-DUMP").join("\n")
    );
    // The pcap holds at least the DHCP exchange and 1 MiB of TCP.
    assert!(m().number("PASST-PCAP-BYTES") > 1 << 20);
    // kettle stopped the passt it started.
    assert_eq!(m().one("PASST-LEFT"), "0");
}

#[test]
fn unplugging_the_cable_through_the_api_is_seen_by_the_guest() {
    let g = guest("passt");
    assert_eq!(g.one("LINK-TEST-READY"), "1", "{}", console("passt"));
    let out = m().values("HOST-LINK-OUT").join("\n");
    assert_eq!(m().one("HOST-LINK-DOWN"), "0", "{out}");
    assert_eq!(g.one("LINK-DOWN-SEEN"), "0", "{}", console("passt"));
    assert_eq!(g.one("LINK-FLAGS"), "NO-CARRIER");
    assert_eq!(m().one("HOST-LINK-UP"), "0", "{out}");
    assert_eq!(g.one("LINK-UP-SEEN"), "0", "{}", console("passt"));
}
