//! Minimal IPv6 Router Advertisements (RFC 4861 section 4.2) so iPXE does not
//! wait for IPv6 autoconfiguration on a segment without a router.
//!
//! Measured in tests/qemu_boot.rs: without any RA, iPXE spends about 16 s per
//! "Configuring (net0 ...)" (SeaBIOS iPXE ROM, and again in snponly.efi
//! under OVMF) before it fetches the script. An RA with the M and O flags
//! clear ends that wait at once. The RA carries router lifetime 0 and no
//! prefix, so hosts neither take this machine as a default router nor form
//! addresses from it. Answers Router Solicitations (unicast to the soliciting
//! link-local address) and repeats unsolicited every 30 s.

use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, info, warn};

const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
const ICMP6_ROUTER_SOLICIT: u8 = 133;
const ICMP6_ROUTER_ADVERT: u8 = 134;

/// Encodes the advertisement: no flags, lifetime 0, source link-layer address.
pub fn router_advertisement(mac: [u8; 6]) -> Vec<u8> {
    let mut p = vec![
        ICMP6_ROUTER_ADVERT,
        0, // code
        0,
        0,  // checksum, filled in by the kernel for ICMPv6 raw sockets
        64, // cur hop limit
        0,  // M=0 O=0
        0,
        0, // router lifetime 0: not a default router
        0,
        0,
        0,
        0, // reachable time
        0,
        0,
        0,
        0, // retrans timer
        1,
        1, // option: source link-layer address, 8 bytes
    ];
    p.extend_from_slice(&mac);
    p
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open an ICMPv6 socket on {iface} for router advertisements")]
pub struct RaError {
    pub iface: String,
    #[source]
    pub source: std::io::Error,
}

impl RaError {
    pub fn hint(&self) -> &'static str {
        "needs CAP_NET_RAW and IPv6 on the interface; or pass --no-ipv6-ra"
    }
}

pub struct RaSender {
    /// The raw ICMPv6 socket, held as a std `UdpSocket`: std's datagram
    /// wrapper gives safe `recv_from`/`send_to` on any datagram-like fd
    /// (socket2's take `MaybeUninit` buffers).
    sock: std::net::UdpSocket,
    ifindex: u32,
    packet: Vec<u8>,
}

impl RaSender {
    pub fn open(iface: &str, mac: [u8; 6]) -> Result<RaSender, RaError> {
        let err = |source| RaError {
            iface: iface.into(),
            source,
        };
        let ifindex = nix::net::if_::if_nametoindex(iface)
            .map_err(|e| err(std::io::Error::from_raw_os_error(e as i32)))?;
        let sock = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).map_err(err)?;
        sock.bind_device(Some(iface.as_bytes())).map_err(err)?;
        // RFC 4861 6.1.2: receivers drop RAs whose hop limit is not 255.
        sock.set_multicast_hops_v6(255).map_err(err)?;
        sock.set_unicast_hops_v6(255).map_err(err)?;
        sock.set_multicast_if_v6(ifindex).map_err(err)?;
        sock.set_multicast_loop_v6(false).map_err(err)?;
        sock.join_multicast_v6(&ALL_ROUTERS, ifindex).map_err(err)?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(err)?;
        Ok(RaSender {
            sock: sock.into(),
            ifindex,
            packet: router_advertisement(mac),
        })
    }

    fn send(&self, to: Ipv6Addr) -> std::io::Result<()> {
        let addr = SocketAddrV6::new(to, 0, 0, self.ifindex);
        self.sock.send_to(&self.packet, addr).map(|_| ())
    }

    /// Serves until `stop`. Send failures (no link-local address yet) are
    /// logged once and retried with the next solicitation or period.
    pub fn run(&self, stop: &AtomicBool) {
        let mut buf = [0u8; 1500];
        let mut next_periodic = Instant::now();
        let mut warned = false;
        let mut report = |r: std::io::Result<()>, what: &str| match r {
            Ok(()) => debug!(what, "router advertisement sent"),
            Err(e) if !warned => {
                warned = true;
                warn!(error = %e, "cannot send IPv6 router advertisements; iPXE may wait ~16 s for IPv6");
            }
            Err(_) => {}
        };
        info!("sending IPv6 router advertisements (lifetime 0, no prefix)");
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() >= next_periodic {
                report(self.send(ALL_NODES), "periodic");
                next_periodic = Instant::now() + Duration::from_secs(30);
            }
            let Ok((n, from)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            let first = buf[..n].first().copied();
            if first == Some(ICMP6_ROUTER_SOLICIT) {
                let to = match from {
                    std::net::SocketAddr::V6(a) if !a.ip().is_unspecified() => *a.ip(),
                    _ => ALL_NODES,
                };
                report(self.send(to), "solicited");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertisement_layout() {
        let p = router_advertisement([0x52, 0x54, 0, 1, 2, 3]);
        assert_eq!(p.len(), 24);
        assert_eq!(p[0], 134);
        assert_eq!(p[5], 0, "M and O flags clear");
        assert_eq!(&p[6..8], &[0, 0], "router lifetime 0");
        assert_eq!(&p[16..24], &[1, 1, 0x52, 0x54, 0, 1, 2, 3]);
    }
}
