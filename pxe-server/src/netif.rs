//! Interface facts (IPv4 address, MAC) and sockets bound to one interface
//! (SO_BINDTODEVICE), with errors that name who holds a taken port.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::dhcp::options::code;
use crate::dhcp::packet::Packet;
use crate::dhcp::MessageType;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("interface {name} does not exist (present: {})", present.join(", "))]
    NoInterface { name: String, present: Vec<String> },
    #[error("interface {name} has no IPv4 address")]
    NoIpv4 { name: String },
    #[error("cannot list network interfaces")]
    List(#[source] nix::Error),
    #[error("{service} port {port}/udp is already in use{}", culprit.as_ref().map(|c| format!(" by {c}")).unwrap_or_default())]
    PortTaken {
        service: &'static str,
        port: u16,
        culprit: Option<String>,
    },
    #[error("cannot open {service} socket on {iface} port {port}")]
    Socket {
        service: &'static str,
        iface: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
}

impl NetError {
    pub fn hint(&self) -> String {
        match self {
            NetError::NoInterface { .. } => "pass an interface from `ip -br link`".into(),
            NetError::NoIpv4 { name } => format!(
                "give {name} an address first, e.g. `ip addr add 192.168.50.1/24 dev {name}`"
            ),
            NetError::List(_) => "is /proc mounted?".into(),
            NetError::PortTaken { culprit, .. } => match culprit.as_deref() {
                Some(c) if c.contains("dnsmasq") => {
                    "stop dnsmasq (`systemctl stop dnsmasq`) or run it with `port=0` and no dhcp-range/enable-tftp".into()
                }
                Some(c) => format!("stop {c}, or run pxe-server on another machine"),
                None => "another DHCP/TFTP server runs here: stop it".into(),
            },
            NetError::Socket { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                "run as root or grant CAP_NET_BIND_SERVICE and CAP_NET_RAW".into()
            }
            NetError::Socket { .. } => "check the interface state".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfaceAddr {
    pub ip: Ipv4Addr,
    pub netmask: Ipv4Addr,
}

/// First IPv4 address of `name`.
pub fn interface_ipv4(name: &str) -> Result<IfaceAddr, NetError> {
    let mut present = Vec::new();
    let mut found = false;
    for ifa in nix::ifaddrs::getifaddrs().map_err(NetError::List)? {
        if !present.contains(&ifa.interface_name) {
            present.push(ifa.interface_name.clone());
        }
        if ifa.interface_name != name {
            continue;
        }
        found = true;
        let ip = ifa
            .address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|s| s.ip());
        let mask = ifa
            .netmask
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|s| s.ip());
        if let Some(ip) = ip {
            return Ok(IfaceAddr {
                ip,
                netmask: mask.unwrap_or(Ipv4Addr::new(255, 255, 255, 0)),
            });
        }
    }
    if found || std::path::Path::new("/sys/class/net").join(name).exists() {
        Err(NetError::NoIpv4 { name: name.into() })
    } else {
        Err(NetError::NoInterface {
            name: name.into(),
            present,
        })
    }
}

/// MAC of `name` from sysfs.
pub fn interface_mac(name: &str) -> Option<[u8; 6]> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{name}/address")).ok()?;
    s.trim().parse::<crate::mac::Mac>().ok().map(|m| m.0)
}

/// Which process holds local UDP `port`, from /proc/net/udp and /proc/*/fd.
pub fn udp_port_owner(port: u16) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local = f.get(1)?;
            let p = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (p == port).then(|| f.get(9).map(|s| s.to_string()))?
        })
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten().take(100_000) {
        let pid = proc_entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if targets.iter().any(|t| link.as_os_str() == t.as_str()) {
                    let comm =
                        std::fs::read_to_string(proc_entry.path().join("comm")).unwrap_or_default();
                    return Some(format!("{} (pid {pid})", comm.trim()));
                }
            }
        }
    }
    Some("another process".into())
}

/// A UDP socket on 0.0.0.0:`port` bound to `iface`, broadcast enabled.
/// No SO_REUSEADDR: a second DHCP/TFTP server must be an error, not a silent
/// split of the traffic.
pub fn udp_on_interface(
    service: &'static str,
    iface: &str,
    port: u16,
    reuse: bool,
) -> Result<UdpSocket, NetError> {
    let err = |source| NetError::Socket {
        service,
        iface: iface.into(),
        port,
        source,
    };
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    if reuse {
        s.set_reuse_address(true).map_err(err)?;
    }
    s.bind_device(Some(iface.as_bytes())).map_err(err)?;
    s.set_broadcast(true).map_err(err)?;
    // A lab powering on 200 machines sends its DISCOVERs within
    // milliseconds; the default buffer (~200 KiB of skb truesize) dropped
    // about a sixth of them. The kernel caps this at net.core.rmem_max.
    let _ = s.set_recv_buffer_size(4 << 20);
    let addr: SocketAddr = (Ipv4Addr::UNSPECIFIED, port).into();
    match s.bind(&addr.into()) {
        Ok(()) => Ok(s.into()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(NetError::PortTaken {
            service,
            port,
            culprit: udp_port_owner(port),
        }),
        Err(e) => Err(err(e)),
    }
}

/// Another DHCP server's offer, as seen by [`probe_dhcp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtherServer {
    /// Option 54, or the offer's source address.
    pub server: Ipv4Addr,
    /// The offer's `siaddr` (next-server), 0.0.0.0 when unset.
    pub next_server: Ipv4Addr,
}

/// Broadcasts a DHCPDISCOVER on `iface` and waits up to `wait` for an offer
/// from another server than `ignore`.
pub fn probe_dhcp(
    iface: &str,
    wait: Duration,
    ignore: Ipv4Addr,
) -> Result<Option<OtherServer>, NetError> {
    let sock = udp_on_interface("DHCP probe", iface, 68, true)?;
    let mac = interface_mac(iface).unwrap_or([0x02, 0, 0, 0, 0, 1]);
    let mut xid_bytes = [0u8; 4];
    let _ = getrandom::getrandom(&mut xid_bytes);
    let xid = u32::from_be_bytes(xid_bytes);
    let mut p = Packet::client_request(MessageType::Discover, mac, xid);
    p.set_option(code::PARAMETER_LIST, vec![1, 3, 6, 54]);
    let err = |source| NetError::Socket {
        service: "DHCP probe",
        iface: iface.into(),
        port: 68,
        source,
    };
    let bytes = p.to_bytes();
    let start = Instant::now();
    let deadline = start + wait;
    // Resend every second: servers that ping-check an address before
    // offering it (busybox udhcpd: 2 s, dnsmasq) answer late, and a first
    // broadcast can be lost while a bridge port comes up.
    let mut next_send = start;
    let mut buf = [0u8; 1500];
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if now >= next_send {
            sock.send_to(&bytes, (Ipv4Addr::BROADCAST, 67))
                .map_err(err)?;
            next_send = now + Duration::from_secs(1);
        }
        let left = deadline.min(next_send) - now;
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .map_err(err)?;
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if is_recv_timeout(&e) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "dhcp probe: receive failed");
                break;
            }
        };
        let r = match Packet::parse(&buf[..n]) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%from, error = %e, "dhcp probe: unparsable reply");
                continue;
            }
        };
        tracing::debug!(%from, xid = r.xid, ours = xid, kind = ?r.message_type(), "dhcp probe: reply");
        if r.xid != xid || r.message_type() != Some(MessageType::Offer) {
            continue;
        }
        let server = r.server_id().unwrap_or(match from {
            SocketAddr::V4(a) => *a.ip(),
            SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        });
        if server == ignore {
            continue;
        }
        return Ok(Some(OtherServer {
            server,
            next_server: r.siaddr,
        }));
    }
    Ok(None)
}

/// A receive that ended because its timeout ran out (or a signal arrived):
/// the caller loops; anything else is a real error.
pub(crate) fn is_recv_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_missing_interfaces() {
        let lo = interface_ipv4("lo").expect("lo");
        assert_eq!(lo.ip, Ipv4Addr::LOCALHOST);
        match interface_ipv4("nosuchif0") {
            Err(NetError::NoInterface { present, .. }) => {
                assert!(present.contains(&"lo".to_string()))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn taken_port_names_the_process() {
        let holder = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
        let port = holder.local_addr().expect("addr").port();
        match udp_on_interface("TFTP", "lo", port, false) {
            Err(NetError::PortTaken {
                culprit: Some(c),
                port: p,
                ..
            }) => {
                assert_eq!(p, port);
                assert!(c.contains(&std::process::id().to_string()), "{c}");
            }
            other => panic!("{other:?}"),
        }
    }
}
