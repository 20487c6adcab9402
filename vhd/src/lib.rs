//! VHD disk images: the format of Virtual PC, Virtual Server and Hyper-V generation 1
//! (Microsoft's "Virtual Hard Disk Image Format Specification" v1.0).
//!
//! * [`spec`]: the on-disk structures (footer, dynamic header, parent locators, BAT, sector
//!   bitmaps), CHS geometry, checksums and time stamps.
//! * [`VhdDisk`]: the read/write engine for fixed, dynamic and differencing disks with parent
//!   chains; crash-safe by write ordering (the [`disk`] module docs give the order and
//!   the argument).
//! * [`BlockDevice`]: what disk controllers use, implemented by [`VhdDisk`] and [`RawDisk`];
//!   [`open_image`] opens either.
//! * Validation: opening refuses a damaged file with an [`Error::Corrupt`] naming the
//!   structure, field and offset; [`check`] reports every problem of a file and its chain.
//! * Operations for `kettle vhd`: [`create_fixed`], [`create_dynamic`],
//!   [`create_differencing`], [`info`], [`check`], [`convert`], [`merge`], [`compact`],
//!   [`resize`]; undo disks and clones in [`undo`].
//!
//! Decisions worth knowing:
//! * Size: kettle uses the footer's "Current Size" (as Hyper-V and libvhdi do). New disks get
//!   a CHS-exact size by default ([`SizePolicy`]), so readers that use the geometry (Virtual
//!   PC; qemu for creators it does not know, such as kettle's "kttl") see the same size.
//! * Footers: the end footer is authoritative; when the end of a dynamic file holds no footer
//!   at all (an interrupted allocation) the copy at offset 0 is used. A footer with a cookie
//!   but a bad checksum is refused. Opening never repairs anything; a writable open rewrites
//!   a missing end footer at its first flush.
//! * Parents are identified by unique id; a different parent time stamp is only a warning.
//! * Locks: `flock`, exclusive for writers, shared for readers and every parent.
//! * Not supported: the 511-byte footers of pre-2004 Virtual PC fixed disks, Mac alias
//!   ("Mac ") locators, shrinking.

#![warn(missing_docs)]

mod device;
pub mod disk;
mod error;
mod io;
mod ops;
mod parse;
pub mod spec;
pub mod undo;

#[cfg(test)]
mod crash_sim;

pub use device::{detect_format, open_image, BlockDevice, ImageFormat, RawDisk};
pub use disk::{parent_candidates, OpenOptions, VhdDisk, MAX_CHAIN_DEPTH};
pub use error::{Error, ParentCandidate, Problem, Result, Structure};
pub use ops::{
    check, compact, convert, create_differencing, create_dynamic, create_fixed, info, merge,
    no_progress, resize, vhd_size_for, ChainLink, CheckFinding, CheckReport, CheckSeverity,
    CompactReport, ConvertOptions, ConvertTarget, CreateOptions, Info, MergeReport, Progress,
    ResizeOptions, SizePolicy,
};
pub use parse::{Locator, MAX_LOCATOR_BYTES};
pub use spec::{DiskType, DynamicHeader, Footer, Geometry, Uuid, DEFAULT_BLOCK_SIZE};
