//! The fixed BOOTP header plus the option list (RFC 2131 section 2, RFC 2132).
//!
//! Deliberately unsupported: option overload (option 52, sname/file reused for
//! options) is parsed as "options present" but the overloaded fields are not
//! decoded; PXE clients never send it. Long options are split and concatenated
//! as RFC 3396 describes.

use std::net::Ipv4Addr;

use super::options::{DhcpOption, MessageType};

/// BOOTP `op` field.
pub const BOOTREQUEST: u8 = 1;
pub const BOOTREPLY: u8 = 2;
/// RFC 2131 section 3: the magic cookie before the options.
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Size of the fixed header including the cookie.
pub const HEADER_LEN: usize = 240;
/// RFC 1542 section 3.2: some relays and old clients drop BOOTP messages under 300 bytes.
pub const MIN_PACKET_LEN: usize = 300;
/// Broadcast bit of the `flags` field (RFC 2131 figure 2).
pub const FLAG_BROADCAST: u16 = 0x8000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("dhcp packet too short: {len} bytes, the fixed header needs {HEADER_LEN}")]
    TooShort { len: usize },
    #[error("dhcp packet has a bad magic cookie {found:02x?} at byte offset 236")]
    BadCookie { found: [u8; 4] },
    #[error(
        "dhcp option {code} at byte offset {offset} claims {len} bytes but only {left} remain"
    )]
    TruncatedOption {
        code: u8,
        offset: usize,
        len: usize,
        left: usize,
    },
    #[error("dhcp field hlen is {hlen}, at most 16 is allowed")]
    BadHlen { hlen: u8 },
    #[error("dhcp op field is {op}, expected 1 (request) or 2 (reply)")]
    BadOp { op: u8 },
}

impl PacketError {
    pub fn hint(&self) -> &'static str {
        "the packet is malformed or not DHCP; it was dropped"
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub op: u8,
    pub htype: u8,
    pub hlen: u8,
    pub hops: u8,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    /// Server host name field, NUL padded on the wire.
    pub sname: Vec<u8>,
    /// Boot file name field, NUL padded on the wire.
    pub file: Vec<u8>,
    /// Options in wire order; repeated codes are concatenated (RFC 3396).
    pub options: Vec<DhcpOption>,
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn trim_nul(b: &[u8]) -> Vec<u8> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    b[..end].to_vec()
}

impl Packet {
    /// A blank reply to `req`: same xid, chaddr, flags and giaddr (RFC 2131 table 3).
    pub fn reply_to(req: &Packet) -> Packet {
        Packet {
            op: BOOTREPLY,
            htype: req.htype,
            hlen: req.hlen,
            hops: 0,
            xid: req.xid,
            secs: 0,
            flags: req.flags,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: req.giaddr,
            chaddr: req.chaddr,
            sname: Vec::new(),
            file: Vec::new(),
            options: Vec::new(),
        }
    }

    pub fn parse(b: &[u8]) -> Result<Packet, PacketError> {
        if b.len() < HEADER_LEN {
            return Err(PacketError::TooShort { len: b.len() });
        }
        let op = b[0];
        if op != BOOTREQUEST && op != BOOTREPLY {
            return Err(PacketError::BadOp { op });
        }
        if b[2] > 16 {
            return Err(PacketError::BadHlen { hlen: b[2] });
        }
        let cookie = [b[236], b[237], b[238], b[239]];
        if cookie != MAGIC_COOKIE {
            return Err(PacketError::BadCookie { found: cookie });
        }
        let mut chaddr = [0u8; 16];
        chaddr.copy_from_slice(&b[28..44]);
        let mut options: Vec<DhcpOption> = Vec::new();
        let mut i = HEADER_LEN;
        while i < b.len() {
            let code = b[i];
            match code {
                0 => {
                    i += 1;
                    continue;
                }
                255 => break,
                _ => {}
            }
            if i + 1 >= b.len() {
                return Err(PacketError::TruncatedOption {
                    code,
                    offset: i,
                    len: 1,
                    left: 0,
                });
            }
            let len = b[i + 1] as usize;
            let start = i + 2;
            if start + len > b.len() {
                return Err(PacketError::TruncatedOption {
                    code,
                    offset: i,
                    len,
                    left: b.len() - start,
                });
            }
            let data = &b[start..start + len];
            if let Some(existing) = options.iter_mut().find(|o| o.code == code) {
                existing.data.extend_from_slice(data);
            } else {
                options.push(DhcpOption::new(code, data.to_vec()));
            }
            i = start + len;
        }
        Ok(Packet {
            op,
            htype: b[1],
            hlen: b[2],
            hops: b[3],
            xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            secs: u16::from_be_bytes([b[8], b[9]]),
            flags: u16::from_be_bytes([b[10], b[11]]),
            ciaddr: ip_at(b, 12),
            yiaddr: ip_at(b, 16),
            siaddr: ip_at(b, 20),
            giaddr: ip_at(b, 24),
            chaddr,
            sname: trim_nul(&b[44..108]),
            file: trim_nul(&b[108..236]),
            options,
        })
    }

    /// Encodes the packet, padded to [`MIN_PACKET_LEN`]. `sname`/`file` longer
    /// than their fields are truncated (the caller also sends options 66/67).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(576);
        out.push(self.op);
        out.push(self.htype);
        out.push(self.hlen);
        out.push(self.hops);
        out.extend_from_slice(&self.xid.to_be_bytes());
        out.extend_from_slice(&self.secs.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        for ip in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            out.extend_from_slice(&ip.octets());
        }
        out.extend_from_slice(&self.chaddr);
        let mut sname = [0u8; 64];
        let n = self.sname.len().min(63);
        sname[..n].copy_from_slice(&self.sname[..n]);
        out.extend_from_slice(&sname);
        let mut file = [0u8; 128];
        let n = self.file.len().min(127);
        file[..n].copy_from_slice(&self.file[..n]);
        out.extend_from_slice(&file);
        out.extend_from_slice(&MAGIC_COOKIE);
        for opt in &self.options {
            if opt.data.is_empty() {
                out.push(opt.code);
                out.push(0);
                continue;
            }
            for chunk in opt.data.chunks(255) {
                out.push(opt.code);
                out.push(chunk.len() as u8);
                out.extend_from_slice(chunk);
            }
        }
        out.push(255);
        while out.len() < MIN_PACKET_LEN {
            out.push(0);
        }
        out
    }

    /// The client hardware address (first `hlen` bytes of chaddr).
    pub fn mac(&self) -> [u8; 6] {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.chaddr[..6]);
        m
    }

    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|o| o.code == code)
            .map(|o| o.data.as_slice())
    }

    /// A client's broadcast BOOTREQUEST from Ethernet address `mac` with
    /// DHCP message type `mt` (option 53, the first option); the caller
    /// adds the rest.
    pub fn client_request(mt: MessageType, mac: [u8; 6], xid: u32) -> Packet {
        let mut chaddr = [0u8; 16];
        chaddr[..6].copy_from_slice(&mac);
        let mut p = Packet {
            op: BOOTREQUEST,
            htype: 1,
            hlen: 6,
            hops: 0,
            xid,
            secs: 0,
            flags: FLAG_BROADCAST,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            sname: vec![],
            file: vec![],
            options: vec![],
        };
        p.set_option(53, vec![mt as u8]);
        p
    }

    /// Adds or replaces an option.
    pub fn set_option(&mut self, code: u8, data: Vec<u8>) {
        if let Some(o) = self.options.iter_mut().find(|o| o.code == code) {
            o.data = data;
        } else {
            self.options.push(DhcpOption::new(code, data));
        }
    }

    pub fn message_type(&self) -> Option<MessageType> {
        match self.option(53) {
            Some([t]) => MessageType::from_u8(*t),
            _ => None,
        }
    }

    fn ip_option(&self, code: u8) -> Option<Ipv4Addr> {
        match self.option(code) {
            Some([a, b, c, d]) => Some(Ipv4Addr::new(*a, *b, *c, *d)),
            _ => None,
        }
    }

    /// Option 50.
    pub fn requested_ip(&self) -> Option<Ipv4Addr> {
        self.ip_option(50)
    }

    /// Option 54.
    pub fn server_id(&self) -> Option<Ipv4Addr> {
        self.ip_option(54)
    }

    /// Option 60 as text (lossy).
    pub fn vendor_class(&self) -> Option<String> {
        self.option(60)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Option 93 (RFC 4578 2.1): the first architecture the client lists.
    pub fn client_arch(&self) -> Option<u16> {
        match self.option(93) {
            Some(v) if v.len() >= 2 => Some(u16::from_be_bytes([v[0], v[1]])),
            _ => None,
        }
    }

    /// Option 77 (RFC 3004): user classes, each length-prefixed. iPXE and some
    /// other clients send a bare string instead; that is returned as one entry.
    pub fn user_classes(&self) -> Vec<String> {
        let Some(v) = self.option(77) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut i = 0;
        while i < v.len() {
            let len = v[i] as usize;
            if len == 0 || i + 1 + len > v.len() {
                // Not RFC 3004 encoded: take the whole thing as one string.
                return vec![String::from_utf8_lossy(v).into_owned()];
            }
            out.push(String::from_utf8_lossy(&v[i + 1..i + 1 + len]).into_owned());
            i += 1 + len;
        }
        out
    }

    /// Option 97 (RFC 4578 2.3): type byte 0 plus a 16-byte GUID.
    pub fn client_uuid(&self) -> Option<&[u8]> {
        self.option(97)
    }

    /// Whether the client is a PXE client (option 60 starts with "PXEClient"),
    /// an UEFI HTTP boot client ("HTTPClient"), or iPXE (option 175 present).
    pub fn is_netboot_client(&self) -> bool {
        let vc = self.vendor_class().unwrap_or_default();
        vc.starts_with("PXEClient") || vc.starts_with("HTTPClient") || self.option(175).is_some()
    }

    pub fn is_broadcast(&self) -> bool {
        self.flags & FLAG_BROADCAST != 0
    }
}

/// Request builders shared by tests of other modules.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A DISCOVER with the given option 93, vendor class and user class.
    pub(crate) fn discover(arch: Option<u16>, vc: &str, uc: Option<&str>) -> Packet {
        let mut p = Packet::client_request(MessageType::Discover, [0x52, 0x54, 0, 0xaa, 0xbb, 0xcc], 0x0bad_cafe);
        if let Some(a) = arch {
            p.set_option(93, a.to_be_bytes().to_vec());
            p.set_option(97, vec![0; 17]);
        }
        p.set_option(60, vc.as_bytes().to_vec());
        if let Some(u) = uc {
            p.set_option(77, u.as_bytes().to_vec());
        }
        p
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A DHCPDISCOVER crafted with the options iPXE sends (53, 57, 93, 94,
    /// 60, 77, 55, 175, 97).
    pub(crate) fn ipxe_bios_discover() -> Vec<u8> {
        let mut p = Packet {
            op: BOOTREQUEST,
            htype: 1,
            hlen: 6,
            hops: 0,
            xid: 0x1234_5678,
            secs: 4,
            flags: FLAG_BROADCAST,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: [
                0x52, 0x54, 0, 0x12, 0x34, 0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
            sname: vec![],
            file: vec![],
            options: vec![],
        };
        p.set_option(53, vec![1]);
        p.set_option(57, 1472u16.to_be_bytes().to_vec());
        p.set_option(93, vec![0, 0]);
        p.set_option(94, vec![1, 2, 1]);
        p.set_option(60, b"PXEClient:Arch:00000:UNDI:002001".to_vec());
        p.set_option(77, b"iPXE".to_vec());
        p.set_option(
            55,
            vec![1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 175],
        );
        p.set_option(175, vec![0xb1, 5, 1, 0x10, 0xec, 0x81, 0x39]);
        p.set_option(97, [0u8; 17].to_vec());
        p.to_bytes()
    }

    #[test]
    fn golden_discover_round_trip() {
        let bytes = ipxe_bios_discover();
        assert!(bytes.len() >= MIN_PACKET_LEN);
        assert_eq!(&bytes[236..240], &MAGIC_COOKIE);
        // Fixed-offset checks against RFC 2131 figure 1.
        assert_eq!(&bytes[4..8], &[0x12, 0x34, 0x56, 0x78]);
        assert_eq!(&bytes[10..12], &[0x80, 0x00]);
        assert_eq!(&bytes[28..34], &[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(&bytes[240..243], &[53, 1, 1]);
        let p = Packet::parse(&bytes).expect("parse");
        assert_eq!(p.message_type(), Some(MessageType::Discover));
        assert_eq!(p.client_arch(), Some(0));
        assert_eq!(p.user_classes(), vec!["iPXE".to_string()]);
        assert!(p.is_netboot_client());
        assert_eq!(p.mac(), [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        let again = Packet::parse(&p.to_bytes()).expect("reparse");
        assert_eq!(p, again);
    }

    #[test]
    fn rfc3004_user_class_and_long_option_split() {
        let mut p = Packet::parse(&ipxe_bios_discover()).expect("parse");
        p.set_option(77, vec![4, b'i', b'P', b'X', b'E', 3, b'a', b'b', b'c']);
        p.set_option(43, vec![7; 600]);
        let bytes = p.to_bytes();
        let q = Packet::parse(&bytes).expect("parse");
        assert_eq!(q.user_classes(), vec!["iPXE", "abc"]);
        assert_eq!(q.option(43).map(|v| v.len()), Some(600));
    }

    #[test]
    fn malformed_packets_are_errors_not_panics() {
        let good = ipxe_bios_discover();
        assert!(matches!(
            Packet::parse(&good[..100]),
            Err(PacketError::TooShort { len: 100 })
        ));
        let mut bad = good.clone();
        bad[236] = 0;
        assert!(matches!(
            Packet::parse(&bad),
            Err(PacketError::BadCookie { .. })
        ));
        let mut trunc = good[..243].to_vec();
        trunc.extend_from_slice(&[60, 200, 1, 2]);
        assert!(matches!(
            Packet::parse(&trunc),
            Err(PacketError::TruncatedOption {
                code: 60,
                offset: 243,
                ..
            })
        ));
        let mut lone = good[..240].to_vec();
        lone.push(12);
        assert!(Packet::parse(&lone).is_err());
        // Every prefix and every single-byte corruption parses or errors, never panics.
        for n in 0..good.len() {
            let _ = Packet::parse(&good[..n]);
        }
        for i in 0..good.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut c = good.clone();
                c[i] = v;
                if let Ok(p) = Packet::parse(&c) {
                    let _ = p.user_classes();
                    let _ = p.client_arch();
                    let _ = Packet::parse(&p.to_bytes());
                }
            }
        }
    }

    /// Real captures (see src/testdata/README).
    pub(crate) const CAPTURED: &[(&str, &[u8])] = &[
        (
            "001 seabios-ipxe discover",
            include_bytes!("../testdata/001-68-67-dhcp1-arch0.bin"),
        ),
        (
            "002 pxe-server offer",
            include_bytes!("../testdata/002-67-68-dhcp2.bin"),
        ),
        (
            "003 seabios-ipxe request",
            include_bytes!("../testdata/003-68-67-dhcp3-arch0.bin"),
        ),
        (
            "004 pxe-server ack",
            include_bytes!("../testdata/004-67-68-dhcp5.bin"),
        ),
        (
            "005 ovmf discover",
            include_bytes!("../testdata/005-68-67-dhcp1-arch7.bin"),
        ),
        (
            "007 ovmf request",
            include_bytes!("../testdata/007-68-67-dhcp3-arch7.bin"),
        ),
    ];

    /// Stable text form of a packet for golden comparison.
    pub(crate) fn decode_text(p: &Packet) -> String {
        let mut s = format!(
            "op={} htype={} hlen={} xid={:08x} secs={} flags={:04x} ciaddr={} yiaddr={} siaddr={} giaddr={} chaddr={:02x?} sname={:?} file={:?}\n",
            p.op, p.htype, p.hlen, p.xid, p.secs, p.flags, p.ciaddr, p.yiaddr, p.siaddr, p.giaddr,
            &p.chaddr[..6], String::from_utf8_lossy(&p.sname), String::from_utf8_lossy(&p.file)
        );
        for o in &p.options {
            let printable = o.data.iter().all(|c| (0x20..0x7f).contains(c));
            if printable && o.data.len() > 2 {
                s.push_str(&format!(
                    "  opt {:3} {:?}\n",
                    o.code,
                    String::from_utf8_lossy(&o.data)
                ));
            } else {
                let hex: String = o.data.iter().map(|b| format!("{b:02x}")).collect();
                s.push_str(&format!("  opt {:3} {hex}\n", o.code));
            }
        }
        s
    }

    #[test]
    fn golden_captures_parse_round_trip_and_match_text() {
        let mut text = String::new();
        for (name, bytes) in CAPTURED {
            let p = Packet::parse(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            let again = Packet::parse(&p.to_bytes()).expect("reparse");
            assert_eq!(p, again, "{name}");
            text.push_str(&format!("# {name}\n{}", decode_text(&p)));
        }
        let seabios = Packet::parse(CAPTURED[0].1).expect("parse");
        assert_eq!(seabios.message_type(), Some(MessageType::Discover));
        assert_eq!(seabios.client_arch(), Some(0));
        assert!(seabios.user_classes().iter().any(|c| c == "iPXE"));
        assert!(seabios.option(175).is_some());
        let ovmf = Packet::parse(CAPTURED[4].1).expect("parse");
        assert_eq!(ovmf.client_arch(), Some(7));
        assert!(ovmf.user_classes().is_empty());
        assert!(ovmf
            .vendor_class()
            .is_some_and(|v| v.starts_with("PXEClient:Arch:00007")));
        crate::tftp::packet::tests::append_golden_text(&mut text);
        let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/src/testdata/decoded.txt");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(golden, &text).expect("write golden");
        }
        let want =
            std::fs::read_to_string(golden).expect("golden file (UPDATE_GOLDEN=1 to create)");
        assert_eq!(text, want, "decoded captures differ from {golden}");
    }

    #[test]
    fn pad_options_and_missing_end_are_accepted() {
        let mut b = ipxe_bios_discover()[..240].to_vec();
        b.extend_from_slice(&[0, 0, 53, 1, 3]);
        let p = Packet::parse(&b).expect("parse");
        assert_eq!(p.message_type(), Some(MessageType::Request));
    }
}
