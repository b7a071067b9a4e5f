//! DHCPv4 wire format (RFC 2131 / RFC 2132) and the PXE options (RFC 4578,
//! PXE 2.1 specification). This module only encodes and decodes packets; who
//! gets what lives in [`crate::boot`] and [`crate::server`].
//!
//! Why a codec of our own rather than the `dhcproto` crate the issue named:
//! PXE firmware is picky about the reply's exact bytes (message type as the
//! first option, vendor option 43 with encapsulated PXE sub-options, replies
//! padded to 300 bytes for old ROMs and relays, long options split and
//! rejoined per RFC 3396), and each of those is pinned here by golden
//! packets captured from real SeaBIOS/iPXE and OVMF clients, byte-level
//! round trips, and a fuzz target (`fuzz/fuzz_targets/dhcp_packet.rs`).
//! Owning the layout keeps those tests exact; the cost is these two files.

pub mod options;
pub mod packet;

pub use options::{DhcpOption, MessageType, PxeVendorOptions};
pub use packet::{Packet, PacketError};
