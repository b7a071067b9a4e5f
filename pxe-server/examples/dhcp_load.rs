//! Load generator for scripts/bench-pxe: N simulated PXE clients each send
//! a DHCPDISCOVER then a DHCPREQUEST through one socket on `IFACE`, and the
//! DISCOVER->OFFER and REQUEST->ACK latencies are reported (p50, p99, max).
//! Run inside the client network namespace: dhcp_load IFACE SERVER_IP N

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use pxe_server::dhcp::packet::Packet;
use pxe_server::dhcp::MessageType;

fn request(mt: MessageType, i: u32) -> Packet {
    let mut p = Packet::client_request(mt, [0x02, 0x10, 0, 0, (i >> 8) as u8, i as u8], 0x10ad_0000 + i);
    p.set_option(93, vec![0, 0]);
    p.set_option(60, b"PXEClient:Arch:00000:UNDI:002001".to_vec());
    p
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(f64::NAN)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 4, "usage: dhcp_load IFACE SERVER_IP N");
    let server: Ipv4Addr = args[2].parse()?;
    let n: u32 = args[3].parse()?;
    let sock = pxe_server::netif::udp_on_interface("load", &args[1], 68, true)?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut buf = [0u8; 1500];
    let mut offered: HashMap<u32, Ipv4Addr> = HashMap::new();
    for (phase, mt, want) in [
        ("DISCOVER->OFFER", MessageType::Discover, MessageType::Offer),
        ("REQUEST->ACK", MessageType::Request, MessageType::Ack),
    ] {
        let mut sent: HashMap<u32, Instant> = HashMap::new();
        let mut lat = Vec::new();
        for i in 0..n {
            let mut p = request(mt, i);
            if mt == MessageType::Request {
                p.set_option(54, server.octets().to_vec());
                let ip = offered
                    .get(&p.xid)
                    .copied()
                    .unwrap_or(Ipv4Addr::UNSPECIFIED);
                p.set_option(50, ip.octets().to_vec());
            }
            sock.send_to(&p.to_bytes(), (Ipv4Addr::BROADCAST, 67))?;
            sent.insert(p.xid, Instant::now());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sent.is_empty() && Instant::now() < deadline {
            let Ok((len, _)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(r) = Packet::parse(&buf[..len]) else {
                continue;
            };
            if r.message_type() == Some(want) || r.message_type() == Some(MessageType::Nak) {
                if let Some(t) = sent.remove(&r.xid) {
                    lat.push(t.elapsed());
                    offered.insert(r.xid, r.yiaddr);
                }
            }
        }
        println!(
            "{phase}: {} of {n} answered, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            lat.len(),
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99),
            pct(&mut lat, 1.0)
        );
    }
    Ok(())
}
