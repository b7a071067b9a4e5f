//! TFTP packets (RFC 1350 section 5, RFC 2347 OACK).

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("tftp packet too short: {len} bytes")]
    TooShort { len: usize },
    #[error("tftp opcode {opcode} is unknown")]
    BadOpcode { opcode: u16 },
    #[error("tftp {what} at byte offset {offset} is not NUL-terminated")]
    Unterminated { what: &'static str, offset: usize },
    #[error("tftp {what} at byte offset {offset} is not valid UTF-8")]
    NotUtf8 { what: &'static str, offset: usize },
    #[error("tftp option {name:?} has no value")]
    OptionWithoutValue { name: String },
}

impl PacketError {
    pub fn hint(&self) -> &'static str {
        "the packet is malformed or not TFTP; it was dropped"
    }
}

/// RFC 1350 error codes plus RFC 2347's 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    DiskFull = 3,
    IllegalOperation = 4,
    UnknownTid = 5,
    FileExists = 6,
    NoSuchUser = 7,
    OptionRefused = 8,
}

impl ErrorCode {
    fn from_u16(v: u16) -> ErrorCode {
        match v {
            1 => Self::FileNotFound,
            2 => Self::AccessViolation,
            3 => Self::DiskFull,
            4 => Self::IllegalOperation,
            5 => Self::UnknownTid,
            6 => Self::FileExists,
            7 => Self::NoSuchUser,
            8 => Self::OptionRefused,
            _ => Self::NotDefined,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Rrq {
        filename: String,
        mode: String,
        options: Vec<(String, String)>,
    },
    Wrq {
        filename: String,
        mode: String,
        options: Vec<(String, String)>,
    },
    Data {
        block: u16,
        data: Vec<u8>,
    },
    Ack {
        block: u16,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    Oack {
        options: Vec<(String, String)>,
    },
}

pub const OP_RRQ: u16 = 1;
pub const OP_WRQ: u16 = 2;
pub const OP_DATA: u16 = 3;
pub const OP_ACK: u16 = 4;
pub const OP_ERROR: u16 = 5;
pub const OP_OACK: u16 = 6;

/// Splits NUL-terminated strings starting at `at`.
fn take_str<'a>(b: &'a [u8], at: &mut usize, what: &'static str) -> Result<&'a str, PacketError> {
    let start = *at;
    let rest = b.get(start..).unwrap_or(&[]);
    let Some(end) = rest.iter().position(|&c| c == 0) else {
        return Err(PacketError::Unterminated {
            what,
            offset: start,
        });
    };
    *at = start + end + 1;
    std::str::from_utf8(&rest[..end]).map_err(|_| PacketError::NotUtf8 {
        what,
        offset: start,
    })
}

fn take_options(b: &[u8], mut at: usize) -> Result<Vec<(String, String)>, PacketError> {
    let mut out = Vec::new();
    while at < b.len() {
        let name = take_str(b, &mut at, "option name")?;
        if name.is_empty() && at >= b.len() {
            break;
        }
        if at >= b.len() {
            return Err(PacketError::OptionWithoutValue {
                name: name.to_string(),
            });
        }
        let value = take_str(b, &mut at, "option value")?;
        out.push((name.to_string(), value.to_string()));
    }
    Ok(out)
}

impl Packet {
    pub fn parse(b: &[u8]) -> Result<Packet, PacketError> {
        if b.len() < 4 {
            return Err(PacketError::TooShort { len: b.len() });
        }
        let opcode = u16::from_be_bytes([b[0], b[1]]);
        match opcode {
            OP_RRQ | OP_WRQ => {
                let mut at = 2;
                let filename = take_str(b, &mut at, "filename")?.to_string();
                let mode = take_str(b, &mut at, "mode")?.to_ascii_lowercase();
                let options = take_options(b, at)?;
                Ok(if opcode == OP_RRQ {
                    Packet::Rrq {
                        filename,
                        mode,
                        options,
                    }
                } else {
                    Packet::Wrq {
                        filename,
                        mode,
                        options,
                    }
                })
            }
            OP_DATA => Ok(Packet::Data {
                block: u16::from_be_bytes([b[2], b[3]]),
                data: b[4..].to_vec(),
            }),
            OP_ACK => Ok(Packet::Ack {
                block: u16::from_be_bytes([b[2], b[3]]),
            }),
            OP_ERROR => {
                let code = ErrorCode::from_u16(u16::from_be_bytes([b[2], b[3]]));
                // Be lenient with a missing terminator in error messages: the
                // transfer is over either way.
                let rest = &b[4..];
                let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
                Ok(Packet::Error {
                    code,
                    message: String::from_utf8_lossy(&rest[..end]).into_owned(),
                })
            }
            OP_OACK => Ok(Packet::Oack {
                options: take_options(b, 2)?,
            }),
            _ => Err(PacketError::BadOpcode { opcode }),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let put_str = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        };
        match self {
            Packet::Rrq {
                filename,
                mode,
                options,
            }
            | Packet::Wrq {
                filename,
                mode,
                options,
            } => {
                let op = if matches!(self, Packet::Rrq { .. }) {
                    OP_RRQ
                } else {
                    OP_WRQ
                };
                out.extend_from_slice(&op.to_be_bytes());
                put_str(&mut out, filename);
                put_str(&mut out, mode);
                for (k, v) in options {
                    put_str(&mut out, k);
                    put_str(&mut out, v);
                }
            }
            Packet::Data { block, data } => {
                out.extend_from_slice(&OP_DATA.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
                out.extend_from_slice(data);
            }
            Packet::Ack { block } => {
                out.extend_from_slice(&OP_ACK.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
            }
            Packet::Error { code, message } => {
                out.extend_from_slice(&OP_ERROR.to_be_bytes());
                out.extend_from_slice(&(*code as u16).to_be_bytes());
                put_str(&mut out, message);
            }
            Packet::Oack { options } => {
                out.extend_from_slice(&OP_OACK.to_be_bytes());
                for (k, v) in options {
                    put_str(&mut out, k);
                    put_str(&mut out, v);
                }
            }
        }
        out
    }
}

/// Writes a DATA header and payload into `buf` without an intermediate Vec
/// (the hot path of a transfer).
pub fn encode_data_into(buf: &mut Vec<u8>, block: u16, data: &[u8]) {
    buf.clear();
    buf.extend_from_slice(&OP_DATA.to_be_bytes());
    buf.extend_from_slice(&block.to_be_bytes());
    buf.extend_from_slice(data);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// RRQs captured from OVMF (see src/testdata/README): the tsize probe
    /// and the real request.
    pub(crate) const CAPTURED: &[(&str, &[u8])] = &[
        (
            "009 ovmf rrq tsize probe",
            include_bytes!("../testdata/009-1566-69-tftp1.bin"),
        ),
        (
            "010 ovmf rrq",
            include_bytes!("../testdata/010-1567-69-tftp1.bin"),
        ),
    ];

    pub(crate) fn append_golden_text(text: &mut String) {
        for (name, bytes) in CAPTURED {
            let p = Packet::parse(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(p.to_bytes(), *bytes, "{name}: byte-exact round trip");
            text.push_str(&format!("# {name}\n{p:?}\n"));
        }
    }

    /// RFC 2347 section "Example": RRQ for "foobar" in octet mode with
    /// blksize 1428, and the corresponding OACK.
    const RFC2347_RRQ: &[u8] = b"\x00\x01foobar\x00octet\x00blksize\x001428\x00";
    const RFC2347_OACK: &[u8] = b"\x00\x06blksize\x001428\x00";
    /// What PXE ROMs typically send first: tsize probe plus blksize.
    const PXE_RRQ: &[u8] = b"\x00\x01undionly.kpxe\x00octet\x00tsize\x000\x00blksize\x001432\x00";

    #[test]
    fn golden_rfc2347_round_trip() {
        let p = Packet::parse(RFC2347_RRQ).expect("parse");
        assert_eq!(
            p,
            Packet::Rrq {
                filename: "foobar".into(),
                mode: "octet".into(),
                options: vec![("blksize".into(), "1428".into())],
            }
        );
        assert_eq!(p.to_bytes(), RFC2347_RRQ);
        let o = Packet::parse(RFC2347_OACK).expect("parse");
        assert_eq!(o.to_bytes(), RFC2347_OACK);
        let x = Packet::parse(PXE_RRQ).expect("parse");
        assert_eq!(x.to_bytes(), PXE_RRQ);
    }

    #[test]
    fn data_ack_error_round_trip() {
        for p in [
            Packet::Data {
                block: 65535,
                data: vec![1, 2, 3],
            },
            Packet::Data {
                block: 1,
                data: vec![],
            },
            Packet::Ack { block: 0 },
            Packet::Error {
                code: ErrorCode::FileNotFound,
                message: "no".into(),
            },
            Packet::Wrq {
                filename: "x".into(),
                mode: "netascii".into(),
                options: vec![],
            },
        ] {
            assert_eq!(Packet::parse(&p.to_bytes()).expect("parse"), p);
        }
        let mut buf = Vec::new();
        encode_data_into(&mut buf, 7, b"abc");
        assert_eq!(buf, b"\x00\x03\x00\x07abc");
    }

    #[test]
    fn malformed() {
        assert!(matches!(
            Packet::parse(b"\x00"),
            Err(PacketError::TooShort { .. })
        ));
        assert!(matches!(
            Packet::parse(b"\x00\x09\x00\x00"),
            Err(PacketError::BadOpcode { opcode: 9 })
        ));
        assert!(matches!(
            Packet::parse(b"\x00\x01file\x00oct"),
            Err(PacketError::Unterminated { what: "mode", .. })
        ));
        assert!(matches!(
            Packet::parse(b"\x00\x01fi\xffle\x00octet\x00"),
            Err(PacketError::NotUtf8 { .. })
        ));
        assert!(matches!(
            Packet::parse(b"\x00\x01f\x00octet\x00blksize\x00"),
            Err(PacketError::OptionWithoutValue { .. })
        ));
        for n in 0..PXE_RRQ.len() {
            let _ = Packet::parse(&PXE_RRQ[..n]);
        }
        for i in 0..PXE_RRQ.len() {
            let mut c = PXE_RRQ.to_vec();
            c[i] = 0;
            let _ = Packet::parse(&c);
        }
    }
}
