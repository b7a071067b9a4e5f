//! The DHCP responder: proxyDHCP (PXE spec 2.1 section 2.2.3, ports 67 and
//! 4011, boot information only, never an address) and full DHCP (RFC 2131
//! with the [`LeasePool`]). Offers go out at once: no ping probe before an
//! offer (a declined address is handled by DHCPDECLINE instead).
//!
//! Relayed requests (`giaddr` set, RFC 2131 4.1 and 4.3.1): replies go to
//! the relay agent on port 67 in both modes, and full mode hands out an
//! address of the relay's subnet (a `--range A-B/PREFIX` containing
//! `giaddr`) with the relay as router; the Relay Agent Information option
//! (82) is echoed back last (RFC 3046 2.2).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::boot::{decide, detect, BootAction, BootContext, DhcpMode};
use crate::bundle::Bundle;
use crate::clients::Registry;
use crate::dhcp::options::{code, PxeVendorOptions, DISCOVERY_USE_BOOTFILE};
use crate::dhcp::packet::{Packet, BOOTREQUEST, FLAG_BROADCAST};
use crate::dhcp::MessageType;
use crate::leases::{LeasePool, Subnet};
use crate::log_limit::LogLimiter;
use crate::mac::Mac;
use crate::policy::Policy;

/// A subnet full mode hands out addresses in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedSubnet {
    pub subnet: Subnet,
    /// Option 3. `None` on a relayed subnet: the relay agent (`giaddr`),
    /// which is the clients' router there.
    pub router: Option<Ipv4Addr>,
}

pub struct DhcpContext {
    pub mode: DhcpMode,
    /// See [`BootContext::grub_finds_server`].
    pub grub_finds_server: bool,
    pub server_ip: Ipv4Addr,
    /// Full mode: the subnets of the pool's ranges, the boot interface's
    /// first when it has a range.
    pub subnets: Vec<ServedSubnet>,
    /// DNS servers handed out in full mode, if configured.
    pub dns: Vec<Ipv4Addr>,
    pub http_port: u16,
    pub bundle: Arc<Bundle>,
    pub policy: Arc<RwLock<Policy>>,
    pub registry: Arc<Registry>,
    /// Full mode only.
    pub pool: Option<Mutex<LeasePool>>,
}

/// Which socket a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// 67: broadcast DHCP.
    Dhcp,
    /// 4011: PXE boot server discovery / proxyDHCP requests, unicast.
    ProxyBoot,
}

/// Where to send a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Broadcast(u16),
    Unicast(SocketAddrV4),
}

/// Option 82, Relay Agent Information (RFC 3046).
const RELAY_AGENT_INFO: u8 = 82;

/// Computes the reply to `req` (no I/O besides lease persistence).
pub fn respond(
    ctx: &DhcpContext,
    req: &Packet,
    port: Port,
    src: SocketAddrV4,
) -> Option<(Packet, Destination)> {
    let (mut reply, dst) = reply_to(ctx, req, port, src)?;
    if let Some(info) = req.option(RELAY_AGENT_INFO) {
        // Added last, so it is the last option before END (RFC 3046 2.2).
        reply.set_option(RELAY_AGENT_INFO, info.to_vec());
    }
    Some((reply, dst))
}

fn reply_to(
    ctx: &DhcpContext,
    req: &Packet,
    port: Port,
    src: SocketAddrV4,
) -> Option<(Packet, Destination)> {
    if req.op != BOOTREQUEST || req.htype != 1 || req.hlen != 6 {
        return None;
    }
    let mt = req.message_type()?;
    let mac = Mac(req.mac());
    let netboot = req.is_netboot_client();
    // A request naming another server is not for us (RFC 2131 4.3.2).
    if let Some(sid) = req.server_id() {
        if sid != ctx.server_ip && mt == MessageType::Request && port == Port::Dhcp {
            if let Some(pool) = &ctx.pool {
                // The client chose another server's offer: free ours.
                let mut p = pool.lock().unwrap_or_else(|e| e.into_inner());
                let _ = p.release(mac, req.requested_ip().unwrap_or(Ipv4Addr::UNSPECIFIED));
            }
            return None;
        }
    }
    match (port, ctx.mode) {
        (Port::ProxyBoot, _) => {
            if !netboot || !matches!(mt, MessageType::Request | MessageType::Inform) {
                return None;
            }
            let mut reply = Packet::reply_to(req);
            reply.ciaddr = req.ciaddr;
            reply.set_option(code::MESSAGE_TYPE, vec![MessageType::Ack as u8]);
            reply.set_option(code::SERVER_ID, ctx.server_ip.octets().to_vec());
            if !add_boot(ctx, req, &mut reply, mac) {
                return None;
            }
            // Under proxyDHCP this is where the client's address shows:
            // the DHCP server's ACK is not ours to see.
            if !req.ciaddr.is_unspecified() {
                ctx.registry.set_ip(mac, req.ciaddr);
            }
            let dst = if req.ciaddr.is_unspecified() {
                Destination::Unicast(src)
            } else {
                Destination::Unicast(SocketAddrV4::new(req.ciaddr, src.port()))
            };
            Some((reply, dst))
        }
        (Port::Dhcp, DhcpMode::Proxy) => {
            // proxyDHCP answers DISCOVERs of PXE clients only; the real DHCP
            // server does the rest.
            if !netboot || mt != MessageType::Discover {
                return None;
            }
            let mut reply = Packet::reply_to(req);
            reply.set_option(code::MESSAGE_TYPE, vec![MessageType::Offer as u8]);
            reply.set_option(code::SERVER_ID, ctx.server_ip.octets().to_vec());
            if !add_boot(ctx, req, &mut reply, mac) {
                return None;
            }
            Some((reply, broadcast_or_relay(req)))
        }
        (Port::Dhcp, DhcpMode::Full) => full(ctx, req, mt, mac, netboot),
    }
}

fn broadcast_or_relay(req: &Packet) -> Destination {
    if !req.giaddr.is_unspecified() {
        Destination::Unicast(SocketAddrV4::new(req.giaddr, 67))
    } else {
        Destination::Broadcast(68)
    }
}

fn full(
    ctx: &DhcpContext,
    req: &Packet,
    mt: MessageType,
    mac: Mac,
    netboot: bool,
) -> Option<(Packet, Destination)> {
    let pool = ctx.pool.as_ref()?;
    // The client's subnet: the relay agent's, else the one of the address
    // it already has, else the boot interface's (RFC 2131 4.3.1).
    let relayed = !req.giaddr.is_unspecified();
    let locator = if relayed {
        req.giaddr
    } else if !req.ciaddr.is_unspecified() {
        req.ciaddr
    } else {
        ctx.server_ip
    };
    let Some(served) = ctx.subnets.iter().find(|s| s.subnet.contains(locator)) else {
        if relayed {
            warn!(%mac, relay = %req.giaddr, "relayed request from a subnet with no --range A-B/PREFIX: no address");
        } else {
            debug!(%mac, "no --range on the boot interface's subnet: no address");
        }
        return None;
    };
    let mut reply = Packet::reply_to(req);
    let yiaddr = {
        let mut p = pool.lock().unwrap_or_else(|e| e.into_inner());
        match mt {
            MessageType::Discover => match p.offer_in(mac, req.requested_ip(), served.subnet) {
                Some(ip) => {
                    reply.set_option(code::MESSAGE_TYPE, vec![MessageType::Offer as u8]);
                    ip
                }
                None => {
                    warn!(%mac, "address pool exhausted, no offer");
                    return None;
                }
            },
            MessageType::Request => {
                let want = req
                    .requested_ip()
                    .or(Some(req.ciaddr).filter(|c| !c.is_unspecified()))?;
                // Wrong network (the client moved): NAK (RFC 2131 4.3.2).
                let r = if served.subnet.contains(want) {
                    p.request(mac, want)
                } else {
                    Ok(None)
                };
                match r {
                    Ok(Some(ip)) => {
                        reply.set_option(code::MESSAGE_TYPE, vec![MessageType::Ack as u8]);
                        ip
                    }
                    Ok(None) => {
                        info!(%mac, ip = %want, "NAK: address not available for this client");
                        let mut nak = Packet::reply_to(req);
                        nak.set_option(code::MESSAGE_TYPE, vec![MessageType::Nak as u8]);
                        nak.set_option(code::SERVER_ID, ctx.server_ip.octets().to_vec());
                        nak.flags |= FLAG_BROADCAST;
                        return Some((nak, broadcast_or_relay(req)));
                    }
                    Err(e) => {
                        warn!(%mac, error = %e, hint = e.hint(), "lease not saved");
                        return None;
                    }
                }
            }
            MessageType::Decline => {
                let ip = req.requested_ip()?;
                warn!(%mac, %ip, "client declined address (in use on the segment)");
                if let Err(e) = p.decline(mac, ip) {
                    warn!(error = %e, "lease file not updated");
                }
                return None;
            }
            MessageType::Release => {
                if let Err(e) = p.release(mac, req.ciaddr) {
                    warn!(error = %e, "lease file not updated");
                }
                debug!(%mac, ip = %req.ciaddr, "released");
                return None;
            }
            MessageType::Inform => {
                reply.set_option(code::MESSAGE_TYPE, vec![MessageType::Ack as u8]);
                Ipv4Addr::UNSPECIFIED
            }
            _ => return None,
        }
    };
    let lease = pool
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .lease_time()
        .as_secs() as u32;
    reply.yiaddr = yiaddr;
    reply.ciaddr = req.ciaddr;
    reply.set_option(code::SERVER_ID, ctx.server_ip.octets().to_vec());
    if mt != MessageType::Inform {
        reply.set_option(code::LEASE_TIME, lease.to_be_bytes().to_vec());
        reply.set_option(code::RENEWAL_TIME, (lease / 2).to_be_bytes().to_vec());
        reply.set_option(code::REBINDING_TIME, (lease / 8 * 7).to_be_bytes().to_vec());
    }
    reply.set_option(code::SUBNET_MASK, served.subnet.mask.octets().to_vec());
    if let Some(r) = served.router.or(relayed.then_some(req.giaddr)) {
        reply.set_option(code::ROUTER, r.octets().to_vec());
    }
    if !ctx.dns.is_empty() {
        reply.set_option(code::DNS, ctx.dns.iter().flat_map(|d| d.octets()).collect());
    }
    if netboot {
        add_boot(ctx, req, &mut reply, mac);
    }
    if mt == MessageType::Request {
        ctx.registry.set_ip(mac, yiaddr);
    }
    let dst = if !req.giaddr.is_unspecified() {
        Destination::Unicast(SocketAddrV4::new(req.giaddr, 67))
    } else if !req.ciaddr.is_unspecified() {
        Destination::Unicast(SocketAddrV4::new(req.ciaddr, 68))
    } else {
        // No ARP entry for the client yet and no raw socket: broadcast
        // (RFC 2131 4.1 allows it whatever the broadcast bit says).
        Destination::Broadcast(68)
    };
    Some((reply, dst))
}

/// Adds the boot fields (PXE spec table 2-1). Returns false if refused.
fn add_boot(ctx: &DhcpContext, req: &Packet, reply: &mut Packet, mac: Mac) -> bool {
    let d = detect(req);
    let assignment = ctx
        .policy
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .for_client(mac);
    let bctx = BootContext {
        mode: ctx.mode,
        grub_finds_server: ctx.grub_finds_server,
        server_ip: ctx.server_ip,
        http_port: ctx.http_port,
        bundle: &ctx.bundle,
        secure_boot: assignment.secure_boot,
        mac,
    };
    let action = decide(&d, &bctx);
    let job = assignment.job.as_ref().map(|j| j.describe());
    ctx.registry.dhcp(
        mac,
        &d.describe(),
        d.arch.kernel_arch(),
        &action.describe(),
        job.clone(),
    );
    let file = match &action {
        BootAction::Refuse { reason } => {
            warn!(%mac, firmware = %d.describe(), %reason, "not answering boot request");
            return false;
        }
        BootAction::Tftp { file } => file.clone(),
        BootAction::Http { url } => url.clone(),
    };
    info!(%mac, firmware = %d.describe(), boot = %action.describe(), policy = %assignment.source, job = ?job, "boot reply");
    reply.siaddr = ctx.server_ip;
    reply.sname = ctx.server_ip.to_string().into_bytes();
    reply.file = file.clone().into_bytes();
    // Option 60 echoes the class so PXE ROMs and iPXE accept the reply as a
    // PXE offer without waiting for another proxy offer.
    let class = if d.http_client {
        "HTTPClient"
    } else {
        "PXEClient"
    };
    reply.set_option(code::VENDOR_CLASS, class.as_bytes().to_vec());
    reply.set_option(code::TFTP_SERVER, ctx.server_ip.to_string().into_bytes());
    reply.set_option(code::BOOTFILE, file.into_bytes());
    if let Some(uuid) = req.client_uuid() {
        reply.set_option(code::CLIENT_UUID, uuid.to_vec());
    }
    if !d.ipxe && !d.http_client {
        let v = PxeVendorOptions {
            discovery_control: Some(DISCOVERY_USE_BOOTFILE),
            ..Default::default()
        };
        reply.set_option(code::VENDOR_SPECIFIC, v.to_bytes());
    }
    true
}

/// Receives on `sock` until `stop`, answering through `send`.
pub fn serve(
    ctx: &DhcpContext,
    sock: &UdpSocket,
    port: Port,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut buf = vec![0u8; 1500];
    let mut junk_log = LogLimiter::new(Duration::from_secs(1));
    while !stop.load(Ordering::Relaxed) {
        let (n, src) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if crate::netif::is_recv_timeout(&e) => continue,
            Err(e) => {
                debug!(error = %e, "dhcp recv error");
                continue;
            }
        };
        let SocketAddr::V4(src) = src else { continue };
        let req = match Packet::parse(&buf[..n]) {
            Ok(p) => p,
            Err(e) => {
                if let Some(held_back) = junk_log.check((*src.ip()).into(), Instant::now()) {
                    warn!(%src, error = %e, held_back, "dropping malformed dhcp packet");
                }
                continue;
            }
        };
        let started = Instant::now();
        if let Some((reply, dst)) = respond(ctx, &req, port, src) {
            let to = match dst {
                Destination::Broadcast(p) => SocketAddrV4::new(Ipv4Addr::BROADCAST, p),
                Destination::Unicast(a) => a,
            };
            if let Err(e) = sock.send_to(&reply.to_bytes(), to) {
                warn!(%to, error = %e, "cannot send dhcp reply");
            }
            debug!(%to, micros = started.elapsed().as_micros() as u64, "dhcp reply sent");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::packet::tests_support::discover;

    fn ctx(mode: DhcpMode, dir: &std::path::Path) -> DhcpContext {
        for f in ["undionly.kpxe", "snponly.efi", "vmlinuz", "initrd.img"] {
            std::fs::write(dir.join(f), b"x").expect("write");
        }
        DhcpContext {
            mode,
            grub_finds_server: mode == DhcpMode::Full,
            server_ip: Ipv4Addr::new(10, 0, 0, 1),
            subnets: vec![
                ServedSubnet {
                    subnet: Subnet::with_prefix(Ipv4Addr::new(10, 0, 0, 1), 24),
                    router: None,
                },
                ServedSubnet {
                    subnet: Subnet::with_prefix(Ipv4Addr::new(10, 9, 1, 1), 24),
                    router: None,
                },
            ],
            dns: vec![],
            http_port: 8080,
            bundle: Arc::new(Bundle::unchecked(dir).expect("bundle")),
            policy: Arc::new(RwLock::new(Policy::default())),
            registry: Arc::new(Registry::default()),
            pool: (mode == DhcpMode::Full).then(|| {
                let mut p = LeasePool::new(
                    Ipv4Addr::new(10, 0, 0, 100),
                    Ipv4Addr::new(10, 0, 0, 110),
                    Duration::from_secs(600),
                )
                .expect("pool");
                p.add_range(Ipv4Addr::new(10, 9, 1, 100), Ipv4Addr::new(10, 9, 1, 110))
                    .expect("range");
                Mutex::new(p)
            }),
        }
    }

    fn src() -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)
    }

    #[test]
    fn proxy_offers_boot_info_only_to_pxe_clients() {
        let t = tempfile::tempdir().expect("tempdir");
        let c = ctx(DhcpMode::Proxy, t.path());
        let d = discover(Some(0), "PXEClient:Arch:00000:UNDI:002001", None);
        let (r, dst) = respond(&c, &d, Port::Dhcp, src()).expect("offer");
        assert_eq!(dst, Destination::Broadcast(68));
        assert_eq!(r.message_type(), Some(MessageType::Offer));
        assert_eq!(r.yiaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(r.siaddr, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(r.file, b"undionly.kpxe");
        assert_eq!(r.vendor_class().as_deref(), Some("PXEClient"));
        assert_eq!(r.client_uuid(), d.client_uuid());
        assert_eq!(r.option(43), Some(&[6, 1, 8, 255][..]));
        // Non-PXE clients and REQUESTs on 67 are the real server's business.
        assert!(respond(
            &c,
            &discover(None, "android-dhcp-13", None),
            Port::Dhcp,
            src()
        )
        .is_none());
        let mut rq = d.clone();
        rq.set_option(53, vec![3]);
        assert!(respond(&c, &rq, Port::Dhcp, src()).is_none());
        // Port 4011: unicast ACK back to the sender.
        rq.ciaddr = Ipv4Addr::new(10, 0, 0, 57);
        let s = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 57), 68);
        let (a, dst) = respond(&c, &rq, Port::ProxyBoot, s).expect("ack");
        assert_eq!(a.message_type(), Some(MessageType::Ack));
        assert_eq!(dst, Destination::Unicast(s));
        // iPXE gets the script URL, no option 43.
        let ip = discover(Some(7), "PXEClient:Arch:00007:UNDI:003016", Some("iPXE"));
        let (r, _) = respond(&c, &ip, Port::Dhcp, src()).expect("offer");
        assert_eq!(
            String::from_utf8_lossy(&r.file),
            format!(
                "http://10.0.0.1:8080/boot/{}.ipxe?arch=${{buildarch}}",
                Mac(ip.mac()).dashed()
            )
        );
        assert!(r.option(43).is_none());
        // Unknown architecture: no reply.
        assert!(respond(&c, &discover(Some(2), "PXEClient", None), Port::Dhcp, src()).is_none());
        assert_eq!(c.registry.list().len(), 1);
    }

    #[test]
    fn arm64_clients_are_remembered_and_refused_without_their_kernel() {
        use crate::bundle::KernelArch;
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::write(t.path().join("snp-arm64.efi"), b"x").expect("write");
        let c = ctx(DhcpMode::Proxy, t.path());
        let arm = discover(Some(11), "PXEClient:Arch:00011:UNDI:003000", None);
        let mac = Mac(arm.mac());
        // An arm64 loader but no arm64 kernel: no offer, and the reason is
        // what the client list shows (the same text is logged).
        assert!(respond(&c, &arm, Port::Dhcp, src()).is_none());
        let rec = &c.registry.list()[0];
        assert_eq!(rec.arch, Some(KernelArch::Arm64));
        assert_eq!(
            rec.served,
            vec![
                "refused: ARM 64-bit UEFI client but the bundle has no arm64 live system \
                 (missing vmlinuz-arm64, initrd-arm64.img); it holds only the x86-64 one, \
                 which this client cannot run"
            ]
        );
        for f in ["vmlinuz-arm64", "initrd-arm64.img"] {
            std::fs::write(t.path().join(f), b"a").expect("write");
        }
        let (r, _) = respond(&c, &arm, Port::Dhcp, src()).expect("offer");
        assert_eq!(r.file, b"snp-arm64.efi");
        // Its iPXE then gets the script, whose arch the registry remembers.
        let ipxe = discover(Some(11), "PXEClient:Arch:00011:UNDI:003010", Some("iPXE"));
        let (r, _) = respond(&c, &ipxe, Port::Dhcp, src()).expect("offer");
        assert!(String::from_utf8_lossy(&r.file).ends_with(".ipxe?arch=${buildarch}"));
        assert_eq!(c.registry.arch(mac), Some(KernelArch::Arm64));
        // An x86-64 client next to it still gets x86-64.
        let (r, _) =
            respond(&c, &discover(Some(7), "PXEClient", None), Port::Dhcp, src()).expect("offer");
        assert_eq!(r.file, b"snponly.efi");
    }

    #[test]
    fn answers_to_captured_firmware_requests() {
        use crate::dhcp::packet::tests::CAPTURED;
        let t = tempfile::tempdir().expect("tempdir");
        let c = ctx(DhcpMode::Proxy, t.path());
        let seabios = Packet::parse(CAPTURED[0].1).expect("parse");
        let (r, _) = respond(&c, &seabios, Port::Dhcp, src()).expect("offer");
        assert_eq!(
            r.file,
            b"http://10.0.0.1:8080/boot/52-54-00-c0-00-01.ipxe?arch=${buildarch}"
        );
        let ovmf = Packet::parse(CAPTURED[4].1).expect("parse");
        let (r, _) = respond(&c, &ovmf, Port::Dhcp, src()).expect("offer");
        assert_eq!(r.file, b"snponly.efi");
        assert_eq!(r.xid, ovmf.xid);
        assert_eq!(r.yiaddr, Ipv4Addr::UNSPECIFIED);
        // The captured REQUESTs name the capture's server (10.92.0.1): not ours.
        let req = Packet::parse(CAPTURED[5].1).expect("parse");
        assert!(respond(&c, &req, Port::Dhcp, src()).is_none());
    }

    #[test]
    fn full_mode_dora_with_boot_info() {
        let t = tempfile::tempdir().expect("tempdir");
        let c = ctx(DhcpMode::Full, t.path());
        let d = discover(Some(7), "PXEClient:Arch:00007:UNDI:003016", None);
        let (o, _) = respond(&c, &d, Port::Dhcp, src()).expect("offer");
        assert_eq!(o.yiaddr, Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(o.file, b"snponly.efi");
        assert_eq!(o.option(51), Some(&600u32.to_be_bytes()[..]));
        let mut r = d.clone();
        r.set_option(53, vec![3]);
        r.set_option(50, o.yiaddr.octets().to_vec());
        r.set_option(54, vec![10, 0, 0, 1]);
        let (a, _) = respond(&c, &r, Port::Dhcp, src()).expect("ack");
        assert_eq!(a.message_type(), Some(MessageType::Ack));
        assert_eq!(a.yiaddr, o.yiaddr);
        // A plain client (the booted rescue system) gets an address, no boot file.
        let plain = discover(None, "udhcp 1.36.1", None);
        let mut plain = plain;
        plain.chaddr[5] = 0x99;
        let (o2, _) = respond(&c, &plain, Port::Dhcp, src()).expect("offer");
        assert_eq!(o2.yiaddr, Ipv4Addr::new(10, 0, 0, 101));
        assert!(o2.file.is_empty());
        // Request for an address it does not own: NAK.
        let mut bad = plain.clone();
        bad.set_option(53, vec![3]);
        bad.set_option(50, vec![10, 0, 0, 100]);
        let (n, _) = respond(&c, &bad, Port::Dhcp, src()).expect("nak");
        assert_eq!(n.message_type(), Some(MessageType::Nak));
        // Request addressed to another server: silent.
        let mut other = bad.clone();
        other.set_option(54, vec![10, 0, 0, 2]);
        assert!(respond(&c, &other, Port::Dhcp, src()).is_none());
    }

    /// DISCOVER, then REQUEST of the offered address, for client `last`.
    fn dora(c: &DhcpContext, last: u8) -> (Ipv4Addr, Ipv4Addr) {
        let mut d = discover(None, "udhcp 1.36.1", None);
        d.chaddr[5] = last;
        let (o, _) = respond(c, &d, Port::Dhcp, src()).expect("offer");
        let mut r = d.clone();
        r.set_option(53, vec![MessageType::Request as u8]);
        r.set_option(50, o.yiaddr.octets().to_vec());
        r.set_option(54, vec![10, 0, 0, 1]);
        let (a, _) = respond(c, &r, Port::Dhcp, src()).expect("ack");
        assert_eq!(a.message_type(), Some(MessageType::Ack));
        (o.yiaddr, a.yiaddr)
    }

    #[test]
    fn declined_address_is_skipped_by_the_next_offer() {
        let t = tempfile::tempdir().expect("tempdir");
        let c = ctx(DhcpMode::Full, t.path());
        let d = discover(None, "udhcp 1.36.1", None);
        let (o, _) = respond(&c, &d, Port::Dhcp, src()).expect("offer");
        assert_eq!(o.yiaddr, Ipv4Addr::new(10, 0, 0, 100));
        // The client found the address in use (ARP) and declines it.
        let mut decline = d.clone();
        decline.set_option(53, vec![MessageType::Decline as u8]);
        decline.set_option(50, o.yiaddr.octets().to_vec());
        decline.set_option(54, vec![10, 0, 0, 1]);
        assert!(respond(&c, &decline, Port::Dhcp, src()).is_none());
        // Neither it nor anyone else is offered that address again.
        let (o2, _) = respond(&c, &d, Port::Dhcp, src()).expect("second offer");
        assert_eq!(o2.yiaddr, Ipv4Addr::new(10, 0, 0, 101));
        let mut other = d.clone();
        other.chaddr[5] = 0x42;
        other.set_option(50, vec![10, 0, 0, 100]);
        let (o3, _) = respond(&c, &other, Port::Dhcp, src()).expect("other offer");
        assert_eq!(o3.yiaddr, Ipv4Addr::new(10, 0, 0, 102));
        let mut req = other.clone();
        req.set_option(53, vec![MessageType::Request as u8]);
        req.set_option(54, vec![10, 0, 0, 1]);
        let (n, _) = respond(&c, &req, Port::Dhcp, src()).expect("nak");
        assert_eq!(n.message_type(), Some(MessageType::Nak));
    }

    #[test]
    fn reserved_address_goes_to_its_mac_only() {
        let t = tempfile::tempdir().expect("tempdir");
        let c = ctx(DhcpMode::Full, t.path());
        let reserved = Ipv4Addr::new(10, 0, 0, 100);
        let mut d = discover(None, "udhcp 1.36.1", None);
        d.chaddr[5] = 7;
        let mac = Mac(d.mac());
        let res = [(mac, reserved)].into_iter().collect();
        c.pool
            .as_ref()
            .expect("pool")
            .lock()
            .expect("lock")
            .set_reservations(&res)
            .expect("reserve");
        // Others never get it, even when they ask for it.
        for last in 1..=5 {
            let mut o = discover(None, "udhcp 1.36.1", None);
            o.chaddr[5] = last;
            o.set_option(50, reserved.octets().to_vec());
            let (offer, _) = respond(&c, &o, Port::Dhcp, src()).expect("offer");
            assert_ne!(offer.yiaddr, reserved, "client {last}");
            let mut r = o.clone();
            r.set_option(53, vec![MessageType::Request as u8]);
            r.set_option(54, vec![10, 0, 0, 1]);
            let (n, _) = respond(&c, &r, Port::Dhcp, src()).expect("nak");
            assert_eq!(n.message_type(), Some(MessageType::Nak), "client {last}");
        }
        assert_eq!(dora(&c, 7), (reserved, reserved));
        assert_ne!(dora(&c, 8).1, reserved);
    }

    #[test]
    fn port_4011_request_records_the_client_address_under_proxy() {
        let t = tempfile::tempdir().expect("tempdir");
        let c = ctx(DhcpMode::Proxy, t.path());
        let mut rq = discover(Some(7), "PXEClient:Arch:00007:UNDI:003016", None);
        rq.set_option(53, vec![MessageType::Request as u8]);
        rq.ciaddr = Ipv4Addr::new(10, 0, 0, 57);
        let s = SocketAddrV4::new(rq.ciaddr, 4011);
        respond(&c, &rq, Port::ProxyBoot, s).expect("ack");
        let l = c.registry.list();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].ip, Some(Ipv4Addr::new(10, 0, 0, 57)));
        assert_eq!(l[0].firmware.as_deref(), Some("x64 UEFI (7)"));
    }

    #[test]
    fn relayed_requests_are_answered_to_the_relay_in_both_modes() {
        let t = tempfile::tempdir().expect("tempdir");
        let relay = Ipv4Addr::new(10, 9, 1, 1);
        let from_relay = SocketAddrV4::new(relay, 67);
        let mut d = discover(Some(0), "PXEClient:Arch:00000:UNDI:002001", None);
        d.giaddr = relay;
        d.hops = 1;
        d.set_option(82, vec![1, 3, b'p', b'1', b'7']);

        // Full mode: an address of the relay's subnet, the relay as router.
        let c = ctx(DhcpMode::Full, t.path());
        let (o, dst) = respond(&c, &d, Port::Dhcp, from_relay).expect("offer");
        assert_eq!(dst, Destination::Unicast(from_relay));
        assert_eq!(o.giaddr, relay);
        assert_eq!(o.yiaddr, Ipv4Addr::new(10, 9, 1, 100));
        assert_eq!(o.option(1), Some(&[255, 255, 255, 0][..]));
        assert_eq!(o.option(3), Some(&relay.octets()[..]));
        assert_eq!(o.file, b"undionly.kpxe");
        assert_eq!(o.options.last().map(|o| o.code), Some(82));
        assert_eq!(o.option(82), Some(&[1, 3, b'p', b'1', b'7'][..]));
        let mut r = d.clone();
        r.set_option(53, vec![3]);
        r.set_option(50, o.yiaddr.octets().to_vec());
        r.set_option(54, vec![10, 0, 0, 1]);
        let (a, dst) = respond(&c, &r, Port::Dhcp, from_relay).expect("ack");
        assert_eq!(a.message_type(), Some(MessageType::Ack));
        assert_eq!(a.yiaddr, o.yiaddr);
        assert_eq!(dst, Destination::Unicast(from_relay));
        // Asking the relayed subnet for a local address: wrong network, NAK.
        let mut wrong = r.clone();
        wrong.set_option(50, vec![10, 0, 0, 100]);
        let (n, _) = respond(&c, &wrong, Port::Dhcp, from_relay).expect("nak");
        assert_eq!(n.message_type(), Some(MessageType::Nak));
        // A relay from a subnet with no range gets nothing.
        let mut unknown = d.clone();
        unknown.giaddr = Ipv4Addr::new(10, 7, 0, 1);
        assert!(respond(&c, &unknown, Port::Dhcp, from_relay).is_none());
        // Renewal unicast from the relayed client (ciaddr, no giaddr).
        let mut renew = r.clone();
        renew.giaddr = Ipv4Addr::UNSPECIFIED;
        renew.ciaddr = o.yiaddr;
        renew.options.retain(|o| o.code != 50 && o.code != 54);
        let (a, dst) =
            respond(&c, &renew, Port::Dhcp, SocketAddrV4::new(o.yiaddr, 68)).expect("renewal ack");
        assert_eq!(a.yiaddr, o.yiaddr);
        assert_eq!(dst, Destination::Unicast(SocketAddrV4::new(o.yiaddr, 68)));

        // Proxy mode: boot information only, to the relay.
        let t2 = tempfile::tempdir().expect("tempdir");
        let p = ctx(DhcpMode::Proxy, t2.path());
        let (o, dst) = respond(&p, &d, Port::Dhcp, from_relay).expect("proxy offer");
        assert_eq!(dst, Destination::Unicast(from_relay));
        assert_eq!(o.giaddr, relay);
        assert_eq!(o.yiaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(o.siaddr, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(o.option(82), Some(&[1, 3, b'p', b'1', b'7'][..]));
    }
}
