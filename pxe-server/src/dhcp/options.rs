//! DHCP option codes used by network boot, and the PXE vendor-encapsulated
//! options carried in option 43 (PXE 2.1 specification, section 2.4).

/// One option, code plus raw value (no length byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpOption {
    pub code: u8,
    pub data: Vec<u8>,
}

impl DhcpOption {
    pub fn new(code: u8, data: Vec<u8>) -> Self {
        DhcpOption { code, data }
    }
}

/// Option codes (RFC 2132, RFC 4578, iPXE).
pub mod code {
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const VENDOR_SPECIFIC: u8 = 43;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const VENDOR_CLASS: u8 = 60;
    pub const CLIENT_ID: u8 = 61;
    pub const TFTP_SERVER: u8 = 66;
    pub const BOOTFILE: u8 = 67;
    pub const USER_CLASS: u8 = 77;
    pub const CLIENT_ARCH: u8 = 93;
    pub const CLIENT_NDI: u8 = 94;
    pub const CLIENT_UUID: u8 = 97;
    pub const IPXE_ENCAP: u8 = 175;
}

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
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            _ => return None,
        })
    }
}

/// PXE vendor options inside option 43. Only the ones a server needs to tell
/// a PXE ROM "skip boot server discovery, just load the file" are modelled;
/// unknown sub-options are kept verbatim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PxeVendorOptions {
    /// Sub-option 6, PXE_DISCOVERY_CONTROL. Bit 3 (8): download the boot file
    /// named in this offer without prompting or discovery.
    pub discovery_control: Option<u8>,
    /// Sub-option 10, PXE_MENU_PROMPT: timeout byte and prompt text.
    pub menu_prompt: Option<(u8, Vec<u8>)>,
    pub other: Vec<(u8, Vec<u8>)>,
}

/// Sub-option 6 value that makes a PXE ROM boot the file in the offer at once.
pub const DISCOVERY_USE_BOOTFILE: u8 = 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("pxe vendor sub-option {code} at byte offset {offset} of option 43 is truncated")]
pub struct VendorOptionError {
    pub code: u8,
    pub offset: usize,
}

impl PxeVendorOptions {
    pub fn parse(b: &[u8]) -> Result<Self, VendorOptionError> {
        let mut out = PxeVendorOptions::default();
        let mut i = 0;
        while i < b.len() {
            let code = b[i];
            if code == 0 {
                i += 1;
                continue;
            }
            if code == 255 {
                break;
            }
            let Some(&len) = b.get(i + 1) else {
                return Err(VendorOptionError { code, offset: i });
            };
            let len = len as usize;
            let Some(data) = b.get(i + 2..i + 2 + len) else {
                return Err(VendorOptionError { code, offset: i });
            };
            match (code, data) {
                (6, [v]) => out.discovery_control = Some(*v),
                (10, [t, rest @ ..]) => out.menu_prompt = Some((*t, rest.to_vec())),
                _ => out.other.push((code, data.to_vec())),
            }
            i += 2 + len;
        }
        Ok(out)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(v) = self.discovery_control {
            out.extend_from_slice(&[6, 1, v]);
        }
        if let Some((t, text)) = &self.menu_prompt {
            let n = text.len().min(254);
            out.push(10);
            out.push((n + 1) as u8);
            out.push(*t);
            out.extend_from_slice(&text[..n]);
        }
        for (c, d) in &self.other {
            let n = d.len().min(255);
            out.push(*c);
            out.push(n as u8);
            out.extend_from_slice(&d[..n]);
        }
        out.push(255);
        out
    }
}

/// Encodes user classes the RFC 3004 way (each string length-prefixed).
pub fn encode_user_classes(classes: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in classes {
        let n = c.len().min(255);
        out.push(n as u8);
        out.extend_from_slice(&c.as_bytes()[..n]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_options_round_trip() {
        let v = PxeVendorOptions {
            discovery_control: Some(DISCOVERY_USE_BOOTFILE),
            menu_prompt: Some((0, b"PXE".to_vec())),
            other: vec![(9, vec![0x80, 0, 1, 4, b'b', b'o', b'o', b't'])],
        };
        let b = v.to_bytes();
        assert_eq!(&b[..3], &[6, 1, 8]);
        assert_eq!(PxeVendorOptions::parse(&b), Ok(v));
    }

    #[test]
    fn vendor_options_truncated() {
        assert!(PxeVendorOptions::parse(&[6]).is_err());
        assert!(PxeVendorOptions::parse(&[6, 5, 1]).is_err());
        assert_eq!(
            PxeVendorOptions::parse(&[]),
            Ok(PxeVendorOptions::default())
        );
    }
}
