//! A DHCPv4 client: the message codec (RFC 2131 section 2, options of RFC
//! 2132, long options split and concatenated as RFC 3396 says, option
//! overload of `file`/`sname` decoded) and the client state machine of RFC
//! 2131 section 4.4 (figure 5), without any I/O: [`Client`] takes packets
//! and the time, and answers with [`Action`]s, so it is tested on byte
//! buffers and a fake clock.
//!
//! - INIT -> SELECTING: DISCOVER, broadcast, resent after 1, 2, 4, 8, 8...
//!   seconds (plus up to a second of jitter, so 200 clients booting at once
//!   spread out); the first OFFER is taken.
//! - REQUESTING: REQUEST (server id + requested address) up to 4 times,
//!   then back to INIT; a NAK sends it back to INIT at once.
//! - BOUND until T1 (option 58, default half the lease), RENEWING: REQUEST
//!   unicast to the server, RENEWING -> REBINDING at T2 (option 59, default
//!   7/8): REQUEST broadcast; at the end of the lease: [`Action::Unbind`] and
//!   INIT. Retries in RENEWING/REBINDING: half the time left, at least 10 s.
//!
//! Replies are asked for by broadcast (the BROADCAST flag, RFC 2131 section
//! 4.1): the client's UDP socket cannot receive unicast to an address its
//! interface does not have yet.
//!
//! Deliberately unsupported: servers that ignore the broadcast flag (that
//! would need a raw packet socket), DHCPDECLINE after an ARP probe of the
//! offered address (the server's own ping check is relied on), DHCPRELEASE
//! on shutdown (the lease simply expires), INIT-REBOOT with a remembered
//! address (nothing survives a reboot here), and options not listed in
//! [`Lease`].

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// The fixed header and the magic cookie.
const HEADER: usize = 240;
/// RFC 1542 section 3.2: some relays drop BOOTP messages under 300 bytes.
const MIN_LEN: usize = 300;
const FLAG_BROADCAST: u16 = 0x8000;

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl MessageType {
    fn from_u8(v: u8) -> Option<MessageType> {
        use MessageType::*;
        Some(match v {
            1 => Discover,
            2 => Offer,
            3 => Request,
            4 => Decline,
            5 => Ack,
            6 => Nak,
            7 => Release,
            8 => Inform,
            _ => return None,
        })
    }
}

/// Option codes used here.
pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN: u8 = 15;
    pub const MTU: u8 = 26;
    pub const BROADCAST: u8 = 28;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETERS: u8 = 55;
    pub const MAX_SIZE: u8 = 57;
    pub const T1: u8 = 58;
    pub const T2: u8 = 59;
    pub const VENDOR_CLASS: u8 = 60;
    pub const CLIENT_ID: u8 = 61;
    pub const TFTP_SERVER: u8 = 66;
    pub const BOOT_FILE: u8 = 67;
    pub const END: u8 = 255;
}

/// What is wrong with a received packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("dhcp packet of {len} bytes is shorter than the 240-byte header")]
    TooShort { len: usize },
    #[error("dhcp packet has a bad magic cookie at byte 236")]
    BadCookie,
    #[error("dhcp option {code} at byte {offset} claims {len} bytes, {left} remain")]
    Truncated {
        code: u8,
        offset: usize,
        len: usize,
        left: usize,
    },
    #[error("dhcp hlen {0} is over 16")]
    BadHlen(u8),
}

/// One DHCP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub op: u8,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    pub hlen: u8,
    pub sname: String,
    pub file: String,
    /// Options in order, each code once (RFC 3396: repeated codes are
    /// concatenated).
    pub options: Vec<(u8, Vec<u8>)>,
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Parse an option area into `out`, concatenating repeated codes.
fn parse_options(
    area: &[u8],
    base: usize,
    out: &mut Vec<(u8, Vec<u8>)>,
) -> Result<(), PacketError> {
    let mut i = 0;
    while i < area.len() {
        let code = area[i];
        match code {
            opt::PAD => i += 1,
            opt::END => break,
            _ => {
                let len = *area.get(i + 1).ok_or(PacketError::Truncated {
                    code,
                    offset: base + i,
                    len: 1,
                    left: 0,
                })? as usize;
                let data = area.get(i + 2..i + 2 + len).ok_or(PacketError::Truncated {
                    code,
                    offset: base + i,
                    len,
                    left: area.len().saturating_sub(i + 2),
                })?;
                match out.iter_mut().find(|(c, _)| *c == code) {
                    Some((_, v)) => v.extend_from_slice(data),
                    None => out.push((code, data.to_vec())),
                }
                i += 2 + len;
            }
        }
    }
    Ok(())
}

impl Message {
    /// Decode a packet. Never panics; lengths are checked before use.
    pub fn parse(b: &[u8]) -> Result<Message, PacketError> {
        if b.len() < HEADER {
            return Err(PacketError::TooShort { len: b.len() });
        }
        if b[236..240] != MAGIC {
            return Err(PacketError::BadCookie);
        }
        if b[2] > 16 {
            return Err(PacketError::BadHlen(b[2]));
        }
        let mut options = Vec::new();
        parse_options(&b[HEADER..], HEADER, &mut options)?;
        let overload = options
            .iter()
            .find(|(c, _)| *c == opt::OVERLOAD)
            .and_then(|(_, v)| v.first().copied())
            .unwrap_or(0);
        // RFC 2131 section 4.1: options area, then file, then sname.
        if overload & 1 != 0 {
            parse_options(&b[108..236], 108, &mut options)?;
        }
        if overload & 2 != 0 {
            parse_options(&b[44..108], 44, &mut options)?;
        }
        let mut chaddr = [0u8; 16];
        chaddr.copy_from_slice(&b[28..44]);
        Ok(Message {
            op: b[0],
            hlen: b[2],
            xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            secs: u16::from_be_bytes([b[8], b[9]]),
            flags: u16::from_be_bytes([b[10], b[11]]),
            ciaddr: ip_at(b, 12),
            yiaddr: ip_at(b, 16),
            siaddr: ip_at(b, 20),
            giaddr: ip_at(b, 24),
            chaddr,
            sname: if overload & 2 != 0 {
                String::new()
            } else {
                c_string(&b[44..108])
            },
            file: if overload & 1 != 0 {
                String::new()
            } else {
                c_string(&b[108..236])
            },
            options,
        })
    }

    /// Encode, options split into 255-byte pieces, padded to 300 bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER];
        b[0] = self.op;
        b[1] = 1; // Ethernet
        b[2] = self.hlen;
        b[4..8].copy_from_slice(&self.xid.to_be_bytes());
        b[8..10].copy_from_slice(&self.secs.to_be_bytes());
        b[10..12].copy_from_slice(&self.flags.to_be_bytes());
        b[12..16].copy_from_slice(&self.ciaddr.octets());
        b[16..20].copy_from_slice(&self.yiaddr.octets());
        b[20..24].copy_from_slice(&self.siaddr.octets());
        b[24..28].copy_from_slice(&self.giaddr.octets());
        b[28..44].copy_from_slice(&self.chaddr);
        let sname = self.sname.as_bytes();
        b[44..44 + sname.len().min(63)].copy_from_slice(&sname[..sname.len().min(63)]);
        let file = self.file.as_bytes();
        b[108..108 + file.len().min(127)].copy_from_slice(&file[..file.len().min(127)]);
        b[236..240].copy_from_slice(&MAGIC);
        for (code, data) in &self.options {
            if data.is_empty() {
                b.extend_from_slice(&[*code, 0]);
            }
            for piece in data.chunks(255) {
                b.push(*code);
                b.push(piece.len() as u8);
                b.extend_from_slice(piece);
            }
        }
        b.push(opt::END);
        if b.len() < MIN_LEN {
            b.resize(MIN_LEN, 0);
        }
        b
    }

    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }

    pub fn message_type(&self) -> Option<MessageType> {
        self.option(opt::MESSAGE_TYPE)
            .and_then(|v| v.first())
            .and_then(|&t| MessageType::from_u8(t))
    }

    fn ip_option(&self, code: u8) -> Option<Ipv4Addr> {
        self.option(code)
            .filter(|v| v.len() >= 4)
            .map(|v| ip_at(v, 0))
    }

    fn ips_option(&self, code: u8) -> Vec<Ipv4Addr> {
        self.option(code)
            .map(|v| v.chunks_exact(4).map(|c| ip_at(c, 0)).collect())
            .unwrap_or_default()
    }

    fn u32_option(&self, code: u8) -> Option<u32> {
        self.option(code)
            .filter(|v| v.len() == 4)
            .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
    }

    fn text_option(&self, code: u8) -> Option<String> {
        self.option(code).map(c_string).filter(|s| !s.is_empty())
    }
}

/// What a server gave us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    /// From the subnet mask (option 1), else the classful default.
    pub prefix: u8,
    /// The first router (option 3).
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub hostname: Option<String>,
    pub mtu: Option<u16>,
    /// Option 54; the address RENEWING talks to.
    pub server: Ipv4Addr,
    /// `siaddr`: the next server of the boot process (TFTP/HTTP).
    pub next_server: Option<Ipv4Addr>,
    pub tftp_server: Option<String>,
    pub boot_file: Option<String>,
    /// Seconds; `u32::MAX` is infinite (RFC 2132 section 9.2).
    pub lease_secs: u32,
    pub t1_secs: u32,
    pub t2_secs: u32,
}

/// Leading one bits of a netmask (a non-contiguous mask counts up to its
/// first zero).
pub fn prefix_of(mask: Ipv4Addr) -> u8 {
    u32::from(mask).leading_ones() as u8
}

/// The netmask of a prefix length.
pub fn mask_of(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(prefix.min(32)))
            .unwrap_or(0),
    )
}

impl Lease {
    /// The lease in an OFFER or ACK; None when it has no usable address or
    /// server identifier.
    pub fn from_message(m: &Message) -> Option<Lease> {
        let a = m.yiaddr;
        if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() {
            return None;
        }
        let server = m
            .ip_option(opt::SERVER_ID)
            .or((!m.siaddr.is_unspecified()).then_some(m.siaddr))?;
        let prefix = match m.ip_option(opt::SUBNET_MASK) {
            Some(mask) => prefix_of(mask),
            None => match a.octets()[0] {
                0..=127 => 8,
                128..=191 => 16,
                _ => 24,
            },
        };
        let lease_secs = m.u32_option(opt::LEASE_TIME).unwrap_or(3600).max(10);
        let t1_default = lease_secs / 2;
        let t2_default = (u64::from(lease_secs) * 7 / 8) as u32;
        let t1 = m.u32_option(opt::T1).unwrap_or(t1_default).min(lease_secs);
        let t2 = m
            .u32_option(opt::T2)
            .unwrap_or(t2_default)
            .clamp(t1, lease_secs);
        Some(Lease {
            address: a,
            prefix,
            router: m.ips_option(opt::ROUTER).into_iter().next(),
            dns: m.ips_option(opt::DNS),
            domain: m.text_option(opt::DOMAIN),
            hostname: m.text_option(opt::HOSTNAME),
            mtu: m
                .option(opt::MTU)
                .filter(|v| v.len() == 2)
                .map(|v| u16::from_be_bytes([v[0], v[1]]))
                .filter(|&v| v >= 576),
            server,
            next_server: (!m.siaddr.is_unspecified()).then_some(m.siaddr),
            tftp_server: m
                .text_option(opt::TFTP_SERVER)
                .or_else(|| (!m.sname.is_empty()).then(|| m.sname.clone())),
            boot_file: m
                .text_option(opt::BOOT_FILE)
                .or_else(|| (!m.file.is_empty()).then(|| m.file.clone())),
            lease_secs,
            t1_secs: t1,
            t2_secs: t2,
        })
    }
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this packet from port 68 to `to`:67 (broadcast or the server).
    Send { to: Ipv4Addr, packet: Vec<u8> },
    /// Configure the interface with this lease (new, or renewed: the
    /// address may have changed).
    Bind(Lease),
    /// The lease is gone: remove the address and routes.
    Unbind,
}

#[derive(Debug, Clone)]
enum State {
    Init,
    Selecting,
    Requesting { offer: Lease, tries: u32 },
    Bound { lease: Lease, since: Instant },
    Renewing { lease: Lease, since: Instant },
    Rebinding { lease: Lease, since: Instant },
}

/// The DHCP client of one interface.
#[derive(Debug, Clone)]
pub struct Client {
    mac: [u8; 6],
    xid: u32,
    state: State,
    /// When the current exchange started (the `secs` field).
    started: Instant,
    /// Retransmissions in SELECTING.
    tries: u32,
    deadline: Instant,
    vendor_class: String,
}

/// Seconds to wait before retransmission `n` (0-based) of a DISCOVER.
fn backoff(n: u32) -> Duration {
    Duration::from_secs(1 << n.min(3))
}

impl Client {
    /// `xid` should be random; it also seeds the retransmission jitter.
    pub fn new(mac: [u8; 6], xid: u32, now: Instant) -> Client {
        Client {
            mac,
            xid,
            state: State::Init,
            started: now,
            tries: 0,
            deadline: now,
            vendor_class: "rescue-init".into(),
        }
    }

    /// When [`Client::on_timer`] wants to run next.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The lease while bound (also while renewing or rebinding).
    pub fn lease(&self) -> Option<&Lease> {
        match &self.state {
            State::Bound { lease, .. }
            | State::Renewing { lease, .. }
            | State::Rebinding { lease, .. } => Some(lease),
            _ => None,
        }
    }

    /// A short name of the state, for logs.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Init => "init",
            State::Selecting => "selecting",
            State::Requesting { .. } => "requesting",
            State::Bound { .. } => "bound",
            State::Renewing { .. } => "renewing",
            State::Rebinding { .. } => "rebinding",
        }
    }

    fn jitter(&self) -> Duration {
        // xorshift of xid and the try count: up to 1 s, different per client.
        let mut x = self.xid ^ self.tries.wrapping_mul(0x9e37_79b9) ^ 0x2545_f491;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        Duration::from_millis(u64::from(x % 1000))
    }

    fn message(&self, kind: MessageType, now: Instant) -> Message {
        let mut chaddr = [0u8; 16];
        chaddr[..6].copy_from_slice(&self.mac);
        let mut client_id = vec![1u8];
        client_id.extend_from_slice(&self.mac);
        let secs = now.saturating_duration_since(self.started).as_secs();
        Message {
            op: BOOTREQUEST,
            hlen: 6,
            xid: self.xid,
            secs: secs.min(u64::from(u16::MAX)) as u16,
            // Ask for broadcast replies: the socket cannot receive unicast
            // to an address the interface does not have yet.
            flags: FLAG_BROADCAST,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            sname: String::new(),
            file: String::new(),
            options: vec![
                (opt::MESSAGE_TYPE, vec![kind as u8]),
                (opt::CLIENT_ID, client_id),
                (opt::MAX_SIZE, 1500u16.to_be_bytes().to_vec()),
                (opt::VENDOR_CLASS, self.vendor_class.as_bytes().to_vec()),
                (
                    opt::PARAMETERS,
                    vec![
                        opt::SUBNET_MASK,
                        opt::ROUTER,
                        opt::DNS,
                        opt::HOSTNAME,
                        opt::DOMAIN,
                        opt::MTU,
                        opt::BROADCAST,
                        opt::LEASE_TIME,
                        opt::SERVER_ID,
                        opt::T1,
                        opt::T2,
                        opt::TFTP_SERVER,
                        opt::BOOT_FILE,
                    ],
                ),
            ],
        }
    }

    fn discover(&mut self, now: Instant) -> Vec<Action> {
        if !matches!(self.state, State::Selecting) {
            self.started = now;
            self.tries = 0;
        }
        self.state = State::Selecting;
        let packet = self.message(MessageType::Discover, now).to_bytes();
        self.deadline = now + backoff(self.tries) + self.jitter();
        self.tries += 1;
        vec![Action::Send {
            to: Ipv4Addr::BROADCAST,
            packet,
        }]
    }

    fn request(&self, now: Instant, lease: &Lease, selecting: bool) -> Message {
        let mut m = self.message(MessageType::Request, now);
        if selecting {
            // RFC 2131 section 4.3.2, SELECTING: server id and requested
            // address, ciaddr 0.
            m.options
                .push((opt::REQUESTED_IP, lease.address.octets().to_vec()));
            m.options
                .push((opt::SERVER_ID, lease.server.octets().to_vec()));
        } else {
            // RENEWING/REBINDING: ciaddr set, no server id or requested ip;
            // replies can come unicast now.
            m.ciaddr = lease.address;
            m.flags = 0;
        }
        m
    }

    /// Start (or restart) from INIT.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        self.state = State::Init;
        self.discover(now)
    }

    /// A packet arrived on port 68 of this client's interface.
    pub fn on_packet(&mut self, data: &[u8], now: Instant) -> Vec<Action> {
        let Ok(m) = Message::parse(data) else {
            return Vec::new();
        };
        if m.op != BOOTREPLY || m.xid != self.xid || m.chaddr[..6] != self.mac {
            return Vec::new();
        }
        let kind = m.message_type();
        match (&self.state, kind) {
            (State::Selecting, Some(MessageType::Offer)) => {
                let Some(offer) = Lease::from_message(&m) else {
                    return Vec::new();
                };
                let packet = self.request(now, &offer, true).to_bytes();
                self.state = State::Requesting { offer, tries: 1 };
                self.deadline = now + Duration::from_secs(2);
                vec![Action::Send {
                    to: Ipv4Addr::BROADCAST,
                    packet,
                }]
            }
            (State::Requesting { offer, .. }, Some(MessageType::Ack)) => {
                match Lease::from_message(&m) {
                    // The ACK must come from the server we chose.
                    Some(lease) if lease.server == offer.server => self.bind(lease, now),
                    _ => Vec::new(),
                }
            }
            (
                State::Renewing { lease: old, .. } | State::Rebinding { lease: old, .. },
                Some(MessageType::Ack),
            ) => match Lease::from_message(&m) {
                Some(lease) if lease.address == old.address => self.bind(lease, now),
                // A different address on renewal: drop the old one first.
                Some(lease) => {
                    let mut out = vec![Action::Unbind];
                    out.extend(self.bind(lease, now));
                    out
                }
                None => Vec::new(),
            },
            (State::Requesting { offer, .. }, Some(MessageType::Nak))
                if m.ip_option(opt::SERVER_ID)
                    .is_none_or(|s| s == offer.server) =>
            {
                self.restart_after_nak(now, false)
            }
            (State::Renewing { .. } | State::Rebinding { .. }, Some(MessageType::Nak)) => {
                self.restart_after_nak(now, true)
            }
            _ => Vec::new(),
        }
    }

    fn restart_after_nak(&mut self, now: Instant, bound: bool) -> Vec<Action> {
        let mut out = Vec::new();
        if bound {
            out.push(Action::Unbind);
        }
        // RFC 2131 section 3.1 step 4: wait before starting again.
        self.state = State::Init;
        self.deadline = now + Duration::from_secs(1) + self.jitter();
        out
    }

    fn bind(&mut self, lease: Lease, now: Instant) -> Vec<Action> {
        self.deadline = if lease.lease_secs == u32::MAX {
            // Infinite lease: nothing to renew; wake up rarely.
            now + Duration::from_secs(24 * 3600)
        } else {
            now + Duration::from_secs(u64::from(lease.t1_secs))
        };
        self.state = State::Bound {
            lease: lease.clone(),
            since: now,
        };
        vec![Action::Bind(lease)]
    }

    /// Retry time in RENEWING/REBINDING: half the time to `until`, at least
    /// 10 s (RFC 2131 section 4.4.5 says 60 s; leases here may be short).
    fn half_way(now: Instant, until: Instant) -> Instant {
        let left = until.saturating_duration_since(now);
        (now + (left / 2).max(Duration::from_secs(10))).min(until)
    }

    /// Call when [`Client::deadline`] has passed.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        if now < self.deadline {
            return Vec::new();
        }
        match self.state.clone() {
            State::Init | State::Selecting => self.discover(now),
            State::Requesting { offer, tries } if tries < 4 => {
                let packet = self.request(now, &offer, true).to_bytes();
                self.state = State::Requesting {
                    offer,
                    tries: tries + 1,
                };
                self.deadline = now + Duration::from_secs(2 << tries.min(3));
                vec![Action::Send {
                    to: Ipv4Addr::BROADCAST,
                    packet,
                }]
            }
            State::Requesting { .. } => self.start(now),
            State::Bound { lease, since }
            | State::Renewing { lease, since }
            | State::Rebinding { lease, since } => {
                if lease.lease_secs == u32::MAX {
                    self.deadline = now + Duration::from_secs(24 * 3600);
                    return Vec::new();
                }
                let t2 = since + Duration::from_secs(u64::from(lease.t2_secs));
                let end = since + Duration::from_secs(u64::from(lease.lease_secs));
                if now >= end {
                    let mut out = vec![Action::Unbind];
                    out.extend(self.start(now));
                    return out;
                }
                self.started = now;
                if now >= t2 {
                    let packet = self.request(now, &lease, false).to_bytes();
                    self.deadline = Self::half_way(now, end);
                    self.state = State::Rebinding { lease, since };
                    vec![Action::Send {
                        to: Ipv4Addr::BROADCAST,
                        packet,
                    }]
                } else {
                    let packet = self.request(now, &lease, false).to_bytes();
                    self.deadline = Self::half_way(now, t2);
                    let to = lease.server;
                    self.state = State::Renewing { lease, since };
                    vec![Action::Send { to, packet }]
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

    /// A server reply to `req` of type `kind` offering 10.0.2.15.
    fn reply(req: &[u8], kind: MessageType, lease: u32) -> Vec<u8> {
        let r = Message::parse(req).expect("request parses");
        let m = Message {
            op: BOOTREPLY,
            hlen: 6,
            xid: r.xid,
            secs: 0,
            flags: r.flags,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::new(10, 0, 2, 15),
            siaddr: SERVER,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: r.chaddr,
            sname: String::new(),
            file: "pxelinux.0".into(),
            options: vec![
                (opt::MESSAGE_TYPE, vec![kind as u8]),
                (opt::SERVER_ID, SERVER.octets().to_vec()),
                (opt::SUBNET_MASK, vec![255, 255, 255, 0]),
                (opt::ROUTER, SERVER.octets().to_vec()),
                (opt::DNS, vec![10, 0, 2, 3, 1, 1, 1, 1]),
                (opt::LEASE_TIME, lease.to_be_bytes().to_vec()),
                (opt::DOMAIN, b"lab.example\0".to_vec()),
            ],
        };
        m.to_bytes()
    }

    fn sent(actions: &[Action]) -> (Ipv4Addr, Vec<u8>) {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Send { to, packet } => Some((*to, packet.clone())),
                _ => None,
            })
            .expect("a packet is sent")
    }

    fn bound(now: Instant, lease: u32) -> (Client, Lease) {
        let mut c = Client::new(MAC, 0x1234_5678, now);
        let (_, discover) = sent(&c.start(now));
        let (_, request) = sent(&c.on_packet(&reply(&discover, MessageType::Offer, lease), now));
        let acts = c.on_packet(&reply(&request, MessageType::Ack, lease), now);
        let Some(Action::Bind(l)) = acts.first() else {
            panic!("not bound: {acts:?}");
        };
        (c, l.clone())
    }

    #[test]
    fn discover_offer_request_ack() {
        let now = Instant::now();
        let mut c = Client::new(MAC, 0x1234_5678, now);
        let (to, discover) = sent(&c.start(now));
        assert_eq!(to, Ipv4Addr::BROADCAST);
        let d = Message::parse(&discover).expect("parses");
        assert_eq!(d.message_type(), Some(MessageType::Discover));
        assert_eq!(d.flags, FLAG_BROADCAST);
        assert_eq!(&d.chaddr[..6], &MAC);
        assert_eq!(
            d.option(opt::CLIENT_ID),
            Some(&[1, 0x52, 0x54, 0, 0x12, 0x34, 0x56][..])
        );
        assert!(discover.len() >= MIN_LEN);
        let (to, request) = sent(&c.on_packet(&reply(&discover, MessageType::Offer, 86400), now));
        assert_eq!(to, Ipv4Addr::BROADCAST);
        let r = Message::parse(&request).expect("parses");
        assert_eq!(r.message_type(), Some(MessageType::Request));
        assert_eq!(r.option(opt::REQUESTED_IP), Some(&[10, 0, 2, 15][..]));
        assert_eq!(r.option(opt::SERVER_ID), Some(&SERVER.octets()[..]));
        assert_eq!(c.state_name(), "requesting");
        let acts = c.on_packet(&reply(&request, MessageType::Ack, 86400), now);
        let Some(Action::Bind(l)) = acts.first() else {
            panic!("{acts:?}");
        };
        assert_eq!(l.address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(l.prefix, 24);
        assert_eq!(l.router, Some(SERVER));
        assert_eq!(
            l.dns,
            [Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)]
        );
        assert_eq!(l.domain.as_deref(), Some("lab.example"));
        assert_eq!(l.boot_file.as_deref(), Some("pxelinux.0"));
        assert_eq!(l.next_server, Some(SERVER));
        assert_eq!((l.t1_secs, l.t2_secs), (43200, 75600));
        assert_eq!(c.lease(), Some(l));
        assert_eq!(c.deadline(), now + Duration::from_secs(43200));
    }

    #[test]
    fn ignores_other_clients_and_garbage() {
        let now = Instant::now();
        let mut c = Client::new(MAC, 7, now);
        let (_, discover) = sent(&c.start(now));
        let mut offer = reply(&discover, MessageType::Offer, 600);
        offer[4] ^= 1; // another xid
        assert!(c.on_packet(&offer, now).is_empty());
        let mut offer = reply(&discover, MessageType::Offer, 600);
        offer[28] ^= 1; // another MAC
        assert!(c.on_packet(&offer, now).is_empty());
        // An ACK while selecting, a request echoed back, truncated packets.
        assert!(c
            .on_packet(&reply(&discover, MessageType::Ack, 600), now)
            .is_empty());
        assert!(c.on_packet(&discover, now).is_empty());
        let good = reply(&discover, MessageType::Offer, 600);
        for n in 0..good.len() {
            let _ = Message::parse(&good[..n]);
        }
        assert_eq!(c.state_name(), "selecting");
    }

    #[test]
    fn retransmits_with_backoff() {
        let now = Instant::now();
        let mut c = Client::new(MAC, 99, now);
        c.start(now);
        let mut t = now;
        let mut gaps = Vec::new();
        for _ in 0..5 {
            let d = c.deadline();
            assert!(c.on_timer(d - Duration::from_millis(1)).is_empty());
            gaps.push((d - t).as_secs());
            t = d;
            let (to, p) = sent(&c.on_timer(d));
            assert_eq!(to, Ipv4Addr::BROADCAST);
            // secs counts from the first DISCOVER.
            assert_eq!(
                Message::parse(&p).expect("parses").secs as u64,
                (d - now).as_secs()
            );
        }
        assert_eq!(gaps, [1, 2, 4, 8, 8]);
    }

    #[test]
    fn nak_restarts_and_request_gives_up_after_four_tries() {
        let now = Instant::now();
        let mut c = Client::new(MAC, 5, now);
        let (_, discover) = sent(&c.start(now));
        let (_, request) = sent(&c.on_packet(&reply(&discover, MessageType::Offer, 600), now));
        assert!(c
            .on_packet(&reply(&request, MessageType::Nak, 600), now)
            .is_empty());
        assert_eq!(c.state_name(), "init");
        let (_, discover) = sent(&c.on_timer(c.deadline()));
        sent(&c.on_packet(&reply(&discover, MessageType::Offer, 600), now));
        for _ in 0..3 {
            let d = c.deadline();
            assert_eq!(c.state_name(), "requesting");
            let (_, p) = sent(&c.on_timer(d));
            assert_eq!(
                Message::parse(&p).expect("p").message_type(),
                Some(MessageType::Request)
            );
        }
        let (_, p) = sent(&c.on_timer(c.deadline()));
        assert_eq!(
            Message::parse(&p).expect("p").message_type(),
            Some(MessageType::Discover)
        );
    }

    #[test]
    fn renews_at_t1_rebinds_at_t2_and_expires() {
        let now = Instant::now();
        let (mut c, lease) = bound(now, 1000);
        let s = |n: u64| now + Duration::from_secs(n);
        // T1: unicast to the server, ciaddr set.
        let (to, p) = sent(&c.on_timer(s(500)));
        assert_eq!(to, SERVER);
        let m = Message::parse(&p).expect("parses");
        assert_eq!(m.ciaddr, lease.address);
        assert_eq!(m.option(opt::SERVER_ID), None);
        assert_eq!(c.state_name(), "renewing");
        // Half of the time to T2 (875 s).
        assert_eq!(c.deadline(), s(500) + Duration::from_millis(187_500));
        // T2: broadcast.
        c.on_timer(s(687));
        let (to, _) = sent(&c.on_timer(s(875)));
        assert_eq!(to, Ipv4Addr::BROADCAST);
        assert_eq!(c.state_name(), "rebinding");
        // The lease ends: unbind and start over.
        let acts = c.on_timer(s(1000));
        assert_eq!(acts.first(), Some(&Action::Unbind));
        assert_eq!(c.state_name(), "selecting");
    }

    #[test]
    fn renewal_ack_rebinds_and_nak_unbinds() {
        let now = Instant::now();
        let (mut c, _) = bound(now, 1000);
        let t1 = now + Duration::from_secs(500);
        let (_, req) = sent(&c.on_timer(t1));
        let acts = c.on_packet(&reply(&req, MessageType::Ack, 1000), t1);
        assert!(matches!(acts.as_slice(), [Action::Bind(_)]), "{acts:?}");
        assert_eq!(c.state_name(), "bound");
        assert_eq!(c.deadline(), t1 + Duration::from_secs(500));
        let (_, req) = sent(&c.on_timer(c.deadline()));
        let acts = c.on_packet(&reply(&req, MessageType::Nak, 1000), t1);
        assert_eq!(acts, [Action::Unbind]);
        assert_eq!(c.state_name(), "init");
    }

    #[test]
    fn codec_round_trip_long_options_and_overload() {
        let mut m = Message::parse(&reply(
            &Client::new(MAC, 1, Instant::now())
                .message(MessageType::Discover, Instant::now())
                .to_bytes(),
            MessageType::Offer,
            60,
        ))
        .expect("parses");
        // Vendor-specific information (43), long enough to be split.
        m.options.push((43, vec![b'a'; 300]));
        let bytes = m.to_bytes();
        let back = Message::parse(&bytes).expect("parses");
        assert_eq!(back, m);
        assert_eq!(back.option(43).map(<[u8]>::len), Some(300));
        // Option overload: the boot file name lives in the `file` field's
        // option area.
        let mut b = bytes.clone();
        b[108..236].fill(0);
        b[108..121].copy_from_slice(&[
            opt::BOOT_FILE,
            10,
            b'r',
            b'e',
            b's',
            b'c',
            b'u',
            b'e',
            b'.',
            b'e',
            b'f',
            b'i',
            255,
        ]);
        let end = b.iter().rposition(|&x| x == opt::END).expect("end");
        b.splice(end..end, [opt::OVERLOAD, 1, 1]);
        let o = Message::parse(&b).expect("parses");
        assert_eq!(o.option(opt::BOOT_FILE), Some(&b"rescue.efi"[..]));
        assert_eq!(o.file, "");
        assert_eq!(
            Lease::from_message(&o).and_then(|l| l.boot_file).as_deref(),
            Some("rescue.efi")
        );
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert_eq!(
            Message::parse(&[0; 10]),
            Err(PacketError::TooShort { len: 10 })
        );
        let mut b = vec![0u8; 300];
        assert_eq!(Message::parse(&b), Err(PacketError::BadCookie));
        b[236..240].copy_from_slice(&MAGIC);
        b[240] = opt::DNS;
        b[241] = 200;
        assert!(matches!(
            Message::parse(&b),
            Err(PacketError::Truncated { code: 6, .. })
        ));
        b[241] = 0;
        b[2] = 17;
        assert_eq!(Message::parse(&b), Err(PacketError::BadHlen(17)));
    }

    #[test]
    fn masks_and_prefixes() {
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 0)), 24);
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 240, 0)), 20);
        assert_eq!(prefix_of(Ipv4Addr::UNSPECIFIED), 0);
        assert_eq!(mask_of(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(mask_of(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(mask_of(32), Ipv4Addr::BROADCAST);
    }
}
