//! kettle: a KVM virtual machine monitor for the appliances of Microsoft Virtual Server 2005,
//! Virtual PC and Hyper-V generation 1.
//!
//! The library builds and runs a VM from a [`config::VmConfig`]; the `kettle` binary is a thin
//! command line over it. Data flows one way: CLI/config -> `VmConfig` -> `Vm::build` -> vCPU
//! threads and the event loop -> exit status.

pub mod api;
pub mod bios;
pub mod boot;
pub mod config;
pub mod console;
pub mod control;
pub mod ctl;
pub mod event_loop;
pub mod guest_dma;
pub mod irq;
pub mod live;
pub mod machine;
pub mod net;
pub mod nic;
pub mod restore;
pub mod seabios;
pub mod snapshot;
pub mod snapshot_disks;
pub mod storage;
pub mod timer;
pub mod vcpu;
pub mod vhd_cmd;
pub mod vm;
