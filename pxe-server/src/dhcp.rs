//! DHCPv4 wire format (RFC 2131 / RFC 2132) and the PXE options (RFC 4578,
//! PXE 2.1 specification). This module only encodes and decodes packets; who
//! gets what lives in [`crate::boot`] and [`crate::server`].

pub mod options;
pub mod packet;

pub use options::{DhcpOption, MessageType, PxeVendorOptions};
pub use packet::{Packet, PacketError};
