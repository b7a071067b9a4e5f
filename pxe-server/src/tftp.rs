//! TFTP (RFC 1350) with option extension (RFC 2347), blksize (RFC 2348),
//! timeout and tsize (RFC 2349) and windowsize (RFC 7440).
//!
//! `packet` is the wire codec, `options` the negotiation, `server` the
//! read-only server. Deliberately unsupported: writes (WRQ is answered with an
//! access violation), netascii conversion (files are sent as they are, which
//! is what every network boot client asks for), multicast (RFC 2090).

pub mod options;
pub mod packet;
pub mod server;

pub use options::{Negotiated, RequestedOptions};
pub use packet::{Packet, PacketError};
pub use server::{TftpConfig, TftpServer};
