//! The imaging engine: block devices, partition tables, filesystem used-block
//! maps, the image format, and the plans and executors for backup, restore,
//! clone and check. Binaries (`rescue`) stay thin and call into this crate.

pub mod extent;
pub mod fs;
pub mod part;
pub mod read_at;

pub use extent::Extent;
pub use read_at::ReadAt;
pub mod image;
pub mod task;
pub mod blockdev;
pub mod inventory;
pub mod error;
pub use error::{Error, ErrorClass};
pub mod backup;
pub mod layout;
pub mod exec;
pub mod check;
pub mod clone;
pub mod restore;
pub mod shrink;
pub mod chain;
pub mod retention;
pub mod civil;
pub mod lvm;
pub mod luks;
#[cfg(unix)]
pub mod luks_fuse;
pub mod md;
pub mod store;
pub mod files;
pub mod hardware;
#[cfg(unix)]
pub mod mount;
pub mod unchanged;
