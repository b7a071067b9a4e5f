//! Option negotiation (RFC 2347): the server answers only the options it
//! understands, with values clamped to what it accepts.

use std::time::Duration;

/// RFC 2348 limits.
pub const MIN_BLKSIZE: u16 = 8;
pub const MAX_BLKSIZE: u16 = 65464;
pub const DEFAULT_BLKSIZE: u16 = 512;

/// Options a client asked for, with invalid values already discarded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestedOptions {
    pub blksize: Option<u16>,
    pub tsize: Option<u64>,
    pub timeout_secs: Option<u8>,
    pub windowsize: Option<u16>,
}

impl RequestedOptions {
    /// Reads the options of an RRQ. Names are case-insensitive (RFC 2347);
    /// out-of-range or unparsable values are ignored, which per RFC 2347
    /// means "option not acknowledged".
    pub fn from_pairs(pairs: &[(String, String)]) -> RequestedOptions {
        let mut o = RequestedOptions::default();
        for (k, v) in pairs {
            match k.to_ascii_lowercase().as_str() {
                "blksize" => {
                    o.blksize = v
                        .parse::<u32>()
                        .ok()
                        .filter(|&b| b >= MIN_BLKSIZE as u32)
                        .map(|b| b.min(MAX_BLKSIZE as u32) as u16)
                }
                "tsize" => o.tsize = v.parse().ok(),
                "timeout" => o.timeout_secs = v.parse().ok().filter(|&t| t >= 1),
                "windowsize" => o.windowsize = v.parse().ok().filter(|&w| w >= 1),
                _ => {}
            }
        }
        o
    }
}

/// What the transfer will use, and the OACK pairs to send (empty: no OACK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: u16,
    pub windowsize: u16,
    pub timeout: Duration,
    pub oack: Vec<(String, String)>,
}

/// Negotiates against the server limits. `mtu_blksize` caps blksize so DATA
/// packets are not IP-fragmented; `file_size` answers a tsize request.
pub fn negotiate(
    req: &RequestedOptions,
    file_size: u64,
    max_blksize: u16,
    max_windowsize: u16,
    default_timeout: Duration,
) -> Negotiated {
    let mut oack = Vec::new();
    let mut n = Negotiated {
        blksize: DEFAULT_BLKSIZE,
        windowsize: 1,
        timeout: default_timeout,
        oack: Vec::new(),
    };
    if let Some(b) = req.blksize {
        n.blksize = b.min(max_blksize).max(MIN_BLKSIZE);
        oack.push(("blksize".to_string(), n.blksize.to_string()));
    }
    if req.tsize.is_some() {
        oack.push(("tsize".to_string(), file_size.to_string()));
    }
    if let Some(t) = req.timeout_secs {
        n.timeout = Duration::from_secs(t as u64);
        oack.push(("timeout".to_string(), t.to_string()));
    }
    if let Some(w) = req.windowsize {
        n.windowsize = w.min(max_windowsize).max(1);
        oack.push(("windowsize".to_string(), n.windowsize.to_string()));
    }
    n.oack = oack;
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn parse_and_clamp() {
        let r = RequestedOptions::from_pairs(&pairs(&[
            ("BLKSIZE", "99999"),
            ("tsize", "0"),
            ("timeout", "0"),
            ("windowsize", "64"),
            ("multicast", ""),
        ]));
        assert_eq!(r.blksize, Some(MAX_BLKSIZE));
        assert_eq!(r.tsize, Some(0));
        assert_eq!(r.timeout_secs, None);
        assert_eq!(r.windowsize, Some(64));
        let r2 = RequestedOptions::from_pairs(&pairs(&[("blksize", "7"), ("windowsize", "0")]));
        assert_eq!(r2, RequestedOptions::default());
    }

    #[test]
    fn negotiate_answers_only_what_was_asked() {
        let r = RequestedOptions::from_pairs(&pairs(&[("blksize", "65464"), ("tsize", "0")]));
        let n = negotiate(&r, 1234, 1468, 32, Duration::from_secs(1));
        assert_eq!(n.blksize, 1468);
        assert_eq!(n.windowsize, 1);
        assert_eq!(n.oack, pairs(&[("blksize", "1468"), ("tsize", "1234")]));
        let none = negotiate(
            &RequestedOptions::default(),
            5,
            1468,
            32,
            Duration::from_secs(1),
        );
        assert!(none.oack.is_empty());
        assert_eq!(none.blksize, 512);
        let w = RequestedOptions::from_pairs(&pairs(&[("windowsize", "1000"), ("timeout", "3")]));
        let n = negotiate(&w, 0, 1468, 64, Duration::from_secs(1));
        assert_eq!(n.windowsize, 64);
        assert_eq!(n.timeout, Duration::from_secs(3));
    }
}
