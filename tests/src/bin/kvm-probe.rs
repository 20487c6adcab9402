//! `kvm-probe`: checks that `/dev/kvm` is a working KVM by running a tiny real-mode guest.
//!
//! Used by the nested-host smoke test (and by hand): it opens `/dev/kvm`, checks the API
//! version, creates a VM and one vCPU, maps 64 KiB of guest memory just below 4 GiB (where
//! the reset vector is), and runs this program from the reset vector:
//!
//! ```text
//! mov al, 0x42 ; out 0x10, al      ; "started"
//! mov ecx, N                       ; N from argv[1], default 1,000,000
//! loop: dec ecx ; jnz loop
//! mov al, 0x43 ; out 0x11, al      ; "loop done"
//! hlt
//! ```
//!
//! It prints one `KVM-PROBE ...` line per step and `KVM-PROBE OK` at the end, and exits
//! non-zero with the failing step on any error. No crates: raw ioctls through std's libc.

use std::ffi::c_void;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::time::Instant;

extern "C" {
    fn ioctl(fd: i32, request: u64, ...) -> i32;
    fn mmap(addr: *mut c_void, len: usize, prot: i32, flags: i32, fd: i32, off: i64)
        -> *mut c_void;
}

const KVM_GET_API_VERSION: u64 = 0xAE00;
const KVM_CREATE_VM: u64 = 0xAE01;
const KVM_CHECK_EXTENSION: u64 = 0xAE03;
const KVM_GET_VCPU_MMAP_SIZE: u64 = 0xAE04;
const KVM_CREATE_VCPU: u64 = 0xAE41;
const KVM_SET_USER_MEMORY_REGION: u64 = 0x4020_AE46;
const KVM_RUN: u64 = 0xAE80;

const KVM_CAP_IRQCHIP: u64 = 0;
const KVM_CAP_NR_VCPUS: u64 = 9;
const KVM_CAP_MAX_VCPUS: u64 = 66;

const KVM_EXIT_IO: u32 = 2;
const KVM_EXIT_HLT: u32 = 5;

const PROT_READ: i32 = 1;
const PROT_WRITE: i32 = 2;
const MAP_SHARED: i32 = 1;
const MAP_PRIVATE: i32 = 2;
const MAP_ANONYMOUS: i32 = 0x20;

/// `struct kvm_userspace_memory_region`.
#[repr(C)]
struct UserspaceMemoryRegion {
    slot: u32,
    flags: u32,
    guest_phys_addr: u64,
    memory_size: u64,
    userspace_addr: u64,
}

fn fail(step: &str) -> ! {
    let err = std::io::Error::last_os_error();
    println!("KVM-PROBE FAILED {step}: {err}");
    std::process::exit(1);
}

fn main() {
    let iterations: u32 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("argument: loop iterations (u32)"))
        .unwrap_or(1_000_000);

    let kvm = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .unwrap_or_else(|e| {
            println!("KVM-PROBE FAILED open /dev/kvm: {e}");
            std::process::exit(1)
        });
    let kvm = kvm.as_raw_fd();
    let api = unsafe { ioctl(kvm, KVM_GET_API_VERSION, 0) };
    println!("KVM-PROBE api_version {api}");
    if api != 12 {
        fail("KVM_GET_API_VERSION is not 12");
    }
    for (name, cap) in [
        ("irqchip", KVM_CAP_IRQCHIP),
        ("nr_vcpus", KVM_CAP_NR_VCPUS),
        ("max_vcpus", KVM_CAP_MAX_VCPUS),
    ] {
        let v = unsafe { ioctl(kvm, KVM_CHECK_EXTENSION, cap) };
        println!("KVM-PROBE cap {name} {v}");
    }

    let vm = unsafe { ioctl(kvm, KVM_CREATE_VM, 0) };
    if vm < 0 {
        fail("KVM_CREATE_VM");
    }
    println!("KVM-PROBE create_vm ok");

    // 64 KiB at 0xffff_0000: the real-mode reset vector (CS base 0xffff0000, IP 0xfff0).
    const MEM: usize = 0x1_0000;
    let mem = unsafe {
        mmap(
            std::ptr::null_mut(),
            MEM,
            PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if mem as isize == -1 {
        fail("mmap guest memory");
    }
    let n = iterations.to_le_bytes();
    let code: [u8; 20] = [
        0xb0, 0x42, // mov al, 0x42
        0xe6, 0x10, // out 0x10, al
        0x66, 0xb9, n[0], n[1], n[2], n[3], // mov ecx, N
        0x66, 0x49, // dec ecx
        0x75, 0xfc, // jnz -4
        0xb0, 0x43, // mov al, 0x43
        0xe6, 0x11, // out 0x11, al
        0xf4, // hlt
        0xf4,
    ];
    let guest = unsafe { std::slice::from_raw_parts_mut(mem as *mut u8, MEM) };
    guest[..code.len()].copy_from_slice(&code);
    guest[0xfff0..0xfff3].copy_from_slice(&[0xe9, 0x0d, 0x00]); // jmp near 0x0000

    let region = UserspaceMemoryRegion {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0xffff_0000,
        memory_size: MEM as u64,
        userspace_addr: mem as u64,
    };
    if unsafe {
        ioctl(
            vm,
            KVM_SET_USER_MEMORY_REGION,
            &region as *const UserspaceMemoryRegion,
        )
    } < 0
    {
        fail("KVM_SET_USER_MEMORY_REGION");
    }
    let vcpu = unsafe { ioctl(vm, KVM_CREATE_VCPU, 0) };
    if vcpu < 0 {
        fail("KVM_CREATE_VCPU");
    }
    let run_size = unsafe { ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0) };
    if run_size <= 0 {
        fail("KVM_GET_VCPU_MMAP_SIZE");
    }
    let run = unsafe {
        mmap(
            std::ptr::null_mut(),
            run_size as usize,
            PROT_READ | PROT_WRITE,
            MAP_SHARED,
            vcpu,
            0,
        )
    };
    if run as isize == -1 {
        fail("mmap kvm_run");
    }
    let run = run as *const u8;
    println!("KVM-PROBE create_vcpu ok");

    let mut loop_start = None;
    for _ in 0..16 {
        if unsafe { ioctl(vcpu, KVM_RUN, 0) } < 0 {
            fail("KVM_RUN");
        }
        // struct kvm_run: exit_reason at 8; io { direction u8, size u8, port u16,
        // count u32, data_offset u64 } at 32.
        let exit_reason = unsafe { (run.add(8) as *const u32).read_unaligned() };
        match exit_reason {
            KVM_EXIT_IO => {
                let port = unsafe { (run.add(34) as *const u16).read_unaligned() };
                let offset = unsafe { (run.add(40) as *const u64).read_unaligned() };
                let value = unsafe { *run.add(offset as usize) };
                println!("KVM-PROBE out port {port:#x} value {value:#x}");
                match (port, value) {
                    (0x10, 0x42) => loop_start = Some(Instant::now()),
                    (0x11, 0x43) => {
                        let secs = loop_start.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
                        println!("KVM-PROBE loop {iterations} iterations in {secs:.3} s");
                    }
                    _ => {
                        println!("KVM-PROBE FAILED unexpected port write");
                        std::process::exit(1);
                    }
                }
            }
            KVM_EXIT_HLT => {
                println!("KVM-PROBE hlt");
                println!("KVM-PROBE OK");
                return;
            }
            other => {
                println!("KVM-PROBE FAILED unexpected exit reason {other}");
                std::process::exit(1);
            }
        }
    }
    println!("KVM-PROBE FAILED no HLT after 16 exits");
    std::process::exit(1);
}
