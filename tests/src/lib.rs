//! Test support for kettle's integration tests.
//!
//! - [`guest`]: small purpose-built guest programs for the local (software) KVM;
//! - [`nested`]: Linux guests, the guest assets and the nested test host (a real KVM inside
//!   QEMU TCG), see shared/TESTING.md;
//! - [`report`]: host tools, static helper programs and the marker lines scripts print.

pub mod guest;
pub mod nested;
pub mod report;
