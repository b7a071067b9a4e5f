//! Universal restore (see issue "Universal restore"): make a restored Windows
//! system boot on different storage hardware, offline.
//!
//! - [`inf`]: driver INF parser (encodings, `[Strings]`, decorations, install sections).
//! - [`hive`]: pure-Rust registry hive (regf) reader and writer with log replay.
//! - [`windows`]: find offline Windows installations, their version/arch/control
//!   sets; target controller detection (sysfs) and `--for` profiles.
//! - [`inject`]: the [`inject::Plan`] of registry and file changes and `apply`.
//! - [`bcd`]: BCD device element and `MountedDevices` rewrite.
//! - [`offline`]: mount the target disk's NTFS partitions and find Windows on them
//!   (or take a Windows folder that is already reachable, as on WinPE).
//! - [`pnp`]: this machine's storage controllers from Windows SetupAPI (WinPE).
//! - [`linux`]: fstab/crypttab/grub UUID rewriting.
//! - [`linux_luks`]: Linux systems inside LUKS: volumes unlocked without dm-crypt,
//!   and their crypttab lines made to unlock at boot.
//! - [`linux_md`]: md RAID1 arrays read without the md driver; their members
//!   brought into one state after a root in one was fixed.
//! - [`linux_offline`]: find Linux systems on the target disk; rebuild their
//!   initramfs with the new storage modules and reinstall GRUB, in a chroot.
//!
//! Everything is a plan first: [`inject::plan`] → [`inject::Plan`] (serde, and
//! `Display` for `--dry-run`) → [`inject::apply`].

pub mod bcd;
pub mod efi_boot;
pub mod hive;
pub mod inf;
pub mod inject;
pub mod linux;
pub mod linux_luks;
pub mod linux_md;
pub mod linux_offline;
pub mod offline;
pub mod pnp;
pub mod windows;

/// Fuzz entry points (never panic on any input).
pub use hive::open_hive_bytes;
pub use inf::parse_inf;

#[cfg(test)]
pub(crate) mod testutil;
