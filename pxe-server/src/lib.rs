//! Network boot server for the rescue environment: DHCP (full and proxy),
//! TFTP, HTTP, firmware detection and per-client boot policy.
//!
//! Layout: wire codecs in [`dhcp`] and [`tftp`]; who gets what in [`boot`]
//! and [`policy`]; serving in [`dhcp_server`], [`tftp::server`] and [`http`];
//! [`server`] wires them to an interface.

pub mod boot;
pub mod bundle;
pub mod clients;
pub mod dhcp;
pub mod dhcp_server;
pub mod http;
pub mod images;
pub mod leases;
pub mod log_limit;
pub mod mac;
pub mod netif;
pub mod policy;
pub mod privs;
pub mod ra;
pub mod server;
pub mod tftp;
