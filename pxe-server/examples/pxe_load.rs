//! Load generator for scripts/bench-pxe: N simulated PXE clients, run from a
//! bounded pool of worker threads. Each client:
//!
//! 1. gets an address by DHCP (DISCOVER -> OFFER, REQUEST -> ACK; each
//!    reply's latency is counted from the first send, resends included);
//! 2. puts that address on IFACE as a secondary address (`ip addr add`);
//! 3. fetches the TFTP file from a UDP socket bound to that address
//!    (blksize 1428, windowsize 16 and tsize requested; a server that
//!    ignores windowsize is served lock-step);
//! 4. fetches the HTTP path over HTTP/1.1 from a TCP socket bound to it.
//!
//! DHCP replies are thus measured while other clients transfer; a reply is
//! time-stamped by a SCHED_FIFO receiver thread as it is read, so the
//! latency is the server's, not the busy simulator's. Meanwhile the
//! resident memory (VmRSS) of each watched PID plus its descendants is
//! sampled every 50 ms and the peak reported. The addresses added are
//! removed at the end.
//!
//! Run inside the client network namespace:
//!
//! ```text
//! pxe_load IFACE SERVER_IP N --pool P --tftp FILE:SIZE --http PORT/PATH:SIZE
//!          [--watch NAME=PID[,PID]]... [--mac-prefix 02:11]
//! ```
//!
//! The last line is machine-readable: `RESULT key=value ...`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use pxe_server::dhcp::packet::Packet;
use pxe_server::dhcp::MessageType;
use socket2::{Domain, Protocol, Socket, Type};

struct Args {
    iface: String,
    server: Ipv4Addr,
    n: u32,
    pool: u32,
    tftp_file: String,
    tftp_size: u64,
    http_port: u16,
    http_path: String,
    http_size: u64,
    watch: Vec<(String, Vec<u32>)>,
    mac_prefix: [u8; 2],
}

fn parse_args() -> Result<Args> {
    let usage = "usage: pxe_load IFACE SERVER_IP N --pool P --tftp FILE:SIZE \
                 --http PORT/PATH:SIZE [--watch NAME=PID[,PID]]... [--mac-prefix 02:11]";
    let mut pos = Vec::new();
    let mut a = Args {
        iface: String::new(),
        server: Ipv4Addr::UNSPECIFIED,
        n: 0,
        pool: 32,
        tftp_file: String::new(),
        tftp_size: 0,
        http_port: 0,
        http_path: String::new(),
        http_size: 0,
        watch: Vec::new(),
        mac_prefix: [0x02, 0x11],
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut val = || it.next().with_context(|| format!("{x} needs a value; {usage}"));
        match x.as_str() {
            "--pool" => a.pool = val()?.parse().context("--pool")?,
            "--tftp" => {
                let v = val()?;
                let (f, s) = v.rsplit_once(':').context("--tftp FILE:SIZE")?;
                a.tftp_file = f.into();
                a.tftp_size = s.parse().context("--tftp size")?;
            }
            "--http" => {
                let v = val()?;
                let (ps, s) = v.rsplit_once(':').context("--http PORT/PATH:SIZE")?;
                let (port, path) = ps.split_once('/').context("--http PORT/PATH:SIZE")?;
                a.http_port = port.parse().context("--http port")?;
                a.http_path = format!("/{path}");
                a.http_size = s.parse().context("--http size")?;
            }
            "--watch" => {
                let v = val()?;
                let (name, pids) = v.split_once('=').context("--watch NAME=PID[,PID]")?;
                let pids = pids
                    .split(',')
                    .map(|p| p.parse::<u32>().context("--watch pid"))
                    .collect::<Result<Vec<_>>>()?;
                a.watch.push((name.into(), pids));
            }
            "--mac-prefix" => {
                let v = val()?;
                let b: Vec<u8> = v
                    .split(':')
                    .map(|h| u8::from_str_radix(h, 16))
                    .collect::<Result<_, _>>()
                    .context("--mac-prefix XX:XX")?;
                ensure!(b.len() == 2, "--mac-prefix takes two bytes, like 02:11");
                a.mac_prefix = [b[0], b[1]];
            }
            _ if x.starts_with("--") => bail!("unknown option {x}; {usage}"),
            _ => pos.push(x),
        }
    }
    ensure!(pos.len() == 3, "{usage}");
    a.iface = pos[0].clone();
    a.server = pos[1].parse().context("SERVER_IP")?;
    a.n = pos[2].parse().context("N")?;
    ensure!(a.pool > 0 && !a.tftp_file.is_empty() && a.http_port != 0, "{usage}");
    Ok(a)
}

fn dhcp_packet(mt: MessageType, mac: [u8; 6], xid: u32) -> Packet {
    let mut p = Packet::client_request(mt, mac, xid);
    p.set_option(93, vec![0, 0]);
    p.set_option(60, b"PXEClient:Arch:00000:UNDI:002001".to_vec());
    p
}

/// A DHCP reply and when the receiver thread read it.
type Reply = (Packet, Instant);

/// One DHCP socket on port 68 for all clients; replies are handed to the
/// waiting client by xid.
struct Dhcp {
    sock: UdpSocket,
    waiting: Mutex<HashMap<u32, Sender<Reply>>>,
    stop: AtomicBool,
}

impl Dhcp {
    /// Stamps each reply as it is read, so the waiting client thread's
    /// wake-up delay is not counted.
    fn receive_loop(&self) {
        let mut buf = [0u8; 1500];
        while !self.stop.load(Ordering::Relaxed) {
            let Ok((len, _)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            let at = Instant::now();
            let Ok(p) = Packet::parse(&buf[..len]) else {
                continue;
            };
            if let Some(tx) = self.lock().get(&p.xid) {
                let _ = tx.send((p, at));
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Sender<Reply>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `p` until a reply of type `want` (or a NAK) arrives, resending
    /// after 1, 2, 4, 8 and 16 s like a PXE ROM backs off (dnsmasq answers
    /// a DISCOVER for an address it is still pinging only on a resend);
    /// returns the reply and the time since the first send.
    fn exchange(&self, p: &Packet, want: MessageType) -> Result<(Packet, Duration)> {
        let (tx, rx): (Sender<Reply>, Receiver<Reply>) = mpsc::channel();
        self.lock().insert(p.xid, tx);
        let bytes = p.to_bytes();
        let t0 = Instant::now();
        let mut got = None;
        'attempts: for wait in [1, 2, 4, 8, 16] {
            self.sock
                .send_to(&bytes, (Ipv4Addr::BROADCAST, 67))
                .context("sending a DHCP request")?;
            let until = Instant::now() + Duration::from_secs(wait);
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                match rx.recv_timeout(left) {
                    Ok((r, at)) if r.message_type() == Some(want) => {
                        got = Some((r, at - t0));
                        break 'attempts;
                    }
                    Ok((r, _)) if r.message_type() == Some(MessageType::Nak) => {
                        self.lock().remove(&p.xid);
                        bail!("NAK for xid {:#x}", p.xid);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        self.lock().remove(&p.xid);
        got.with_context(|| format!("no {want:?} for xid {:#x} in 31 s (5 sends)", p.xid))
    }
}

#[derive(Default)]
struct Stats {
    offer: Vec<Duration>,
    ack: Vec<Duration>,
    tftp: Vec<Duration>,
    http: Vec<Duration>,
    errors: Vec<String>,
    addrs: Vec<(Ipv4Addr, u8)>,
}

fn prefix_len(mask: Option<&[u8]>) -> u8 {
    match mask {
        Some(m) if m.len() == 4 => u32::from_be_bytes([m[0], m[1], m[2], m[3]]).count_ones() as u8,
        _ => 24,
    }
}

fn ip_addr(op: &str, iface: &str, ip: Ipv4Addr, prefix: u8) -> Result<()> {
    let st = Command::new("ip")
        .args(["addr", op, &format!("{ip}/{prefix}"), "dev", iface])
        .status()
        .context("running ip addr")?;
    ensure!(st.success(), "ip addr {op} {ip}/{prefix} dev {iface} failed");
    Ok(())
}

fn tftp_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// TFTP read of `file` from a socket bound to `local`; returns bytes read.
fn tftp_get(local: Ipv4Addr, server: Ipv4Addr, file: &str) -> Result<u64> {
    let sock = UdpSocket::bind((local, 0)).context("binding the TFTP socket")?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut rrq = vec![0, 1];
    for s in [file, "octet", "blksize", "1428", "windowsize", "16", "tsize", "0"] {
        tftp_str(&mut rrq, s);
    }
    let ack = |b: u16| [0, 4, (b >> 8) as u8, b as u8];
    let mut blksize = 512usize;
    let mut window = 1u32;
    let mut peer: Option<SocketAddr> = None;
    let mut last: u16 = 0; // last block received in order
    let mut got: u64 = 0;
    let mut in_window = 0u32;
    let mut timeouts = 0;
    let mut buf = vec![0u8; 65536];
    sock.send_to(&rrq, (server, 69))?;
    loop {
        let (len, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => {
                timeouts += 1;
                ensure!(timeouts <= 10, "TFTP {file}: 10 timeouts after {got} bytes");
                match peer {
                    None => sock.send_to(&rrq, (server, 69))?,
                    Some(p) => sock.send_to(&ack(last), p)?,
                };
                in_window = 0;
                continue;
            }
        };
        if peer.is_some_and(|p| p != from) || len < 4 {
            continue;
        }
        peer = Some(from);
        let op = u16::from_be_bytes([buf[0], buf[1]]);
        match op {
            6 => {
                // OACK: name\0value\0 pairs
                let opts: Vec<&[u8]> = buf[2..len].split(|&c| c == 0).collect();
                for kv in opts.chunks(2) {
                    if let [k, v] = kv {
                        let v: usize = std::str::from_utf8(v).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
                        match std::str::from_utf8(k).unwrap_or("").to_ascii_lowercase().as_str() {
                            "blksize" => blksize = v,
                            "windowsize" => window = v.max(1) as u32,
                            _ => {}
                        }
                    }
                }
                sock.send_to(&ack(0), from)?;
            }
            3 => {
                let block = u16::from_be_bytes([buf[2], buf[3]]);
                let data = len - 4;
                if block == last.wrapping_add(1) {
                    last = block;
                    got += data as u64;
                    in_window += 1;
                    timeouts = 0;
                    if data < blksize {
                        sock.send_to(&ack(last), from)?;
                        return Ok(got);
                    }
                    if in_window >= window {
                        sock.send_to(&ack(last), from)?;
                        in_window = 0;
                    }
                } else if block != last && block.wrapping_sub(last) < 0x8000 {
                    // A gap (a block was lost): ask again from the last good
                    // one. Older duplicates are ignored.
                    sock.send_to(&ack(last), from)?;
                    in_window = 0;
                }
            }
            5 => bail!("TFTP {file}: error {}", String::from_utf8_lossy(&buf[4..len])),
            _ => {}
        }
    }
}

/// HTTP GET of `path` from a TCP socket bound to `local`; returns body bytes.
fn http_get(local: Ipv4Addr, server: Ipv4Addr, port: u16, path: &str) -> Result<u64> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.bind(&SocketAddr::from((local, 0)).into())
        .context("binding the HTTP socket")?;
    s.connect_timeout(&SocketAddr::from((server, port)).into(), Duration::from_secs(10))
        .context("connecting over HTTP")?;
    let mut t: TcpStream = s.into();
    t.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(t, "GET {path} HTTP/1.1\r\nHost: {server}:{port}\r\nConnection: close\r\n\r\n")?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    let body_start;
    loop {
        let n = match t.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.with_context(|| format!("HTTP {path}: reading the header"))?,
        };
        ensure!(n > 0, "HTTP {path}: connection closed in the header");
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            body_start = i + 4;
            break;
        }
        ensure!(head.len() < 65536, "HTTP {path}: header too long");
    }
    let text = String::from_utf8_lossy(&head[..body_start]).to_string();
    ensure!(
        text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200"),
        "HTTP {path}: {}",
        text.lines().next().unwrap_or("")
    );
    let mut got = (head.len() - body_start) as u64;
    loop {
        match t.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("HTTP {path}: reading after {got} bytes")),
        }
    }
    Ok(got)
}

fn client(a: &Args, dhcp: &Dhcp, i: u32, stats: &Mutex<Stats>) -> Result<()> {
    let lock = || stats.lock().unwrap_or_else(|e| e.into_inner());
    let mac = [a.mac_prefix[0], a.mac_prefix[1], 0, 0, (i >> 8) as u8, i as u8];
    let xid = 0x5100_0000 | (u32::from(a.mac_prefix[1]) << 16) | i;
    let (offer, t) = dhcp.exchange(&dhcp_packet(MessageType::Discover, mac, xid), MessageType::Offer)?;
    lock().offer.push(t);
    let sid = offer.server_id().unwrap_or(a.server);
    let mut req = dhcp_packet(MessageType::Request, mac, xid);
    req.set_option(54, sid.octets().to_vec());
    req.set_option(50, offer.yiaddr.octets().to_vec());
    let (ackp, t) = dhcp.exchange(&req, MessageType::Ack)?;
    lock().ack.push(t);
    let ip = ackp.yiaddr;
    let prefix = prefix_len(ackp.option(1));
    ip_addr("add", &a.iface, ip, prefix)?;
    lock().addrs.push((ip, prefix));
    let t0 = Instant::now();
    let n = tftp_get(ip, a.server, &a.tftp_file).with_context(|| format!("client {i} ({ip})"))?;
    ensure!(n == a.tftp_size, "client {i}: TFTP got {n} bytes, want {}", a.tftp_size);
    lock().tftp.push(t0.elapsed());
    let t0 = Instant::now();
    let n = http_get(ip, a.server, a.http_port, &a.http_path).with_context(|| format!("client {i} ({ip})"))?;
    ensure!(n == a.http_size, "client {i}: HTTP got {n} bytes, want {}", a.http_size);
    lock().http.push(t0.elapsed());
    Ok(())
}

/// Resident KiB of `pids` and all their descendants, and how many processes.
fn rss_tree(pids: &[u32]) -> (u64, usize) {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            // stat: pid (comm) state ppid ...; comm may contain spaces.
            if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                if let Some(ppid) = s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)) {
                    parent.insert(pid, ppid.parse().unwrap_or(0));
                }
            }
        }
    }
    let mut all: Vec<u32> = pids.to_vec();
    let mut k = 0;
    while k < all.len() {
        let p = all[k];
        all.extend(parent.iter().filter(|(_, &pp)| pp == p).map(|(&c, _)| c));
        k += 1;
    }
    let mut kib = 0;
    for p in &all {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{p}/status")) {
            if let Some(l) = s.lines().find(|l| l.starts_with("VmRSS:")) {
                kib += l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    (kib, all.len())
}

/// Puts the calling thread (the DHCP receiver) under SCHED_FIFO with
/// `chrt`, when allowed: a real client is its own idle machine, while here
/// the simulated clients' 60 MB reads compete for the same 2 cores, and the
/// reply's time stamp should not wait for them. Says so when it fails.
fn realtime_priority() {
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|t| t.to_string_lossy().into_owned()));
    let ok = tid.is_some_and(|tid| {
        Command::new("chrt")
            .args(["-f", "-p", "50", &tid])
            .status()
            .is_ok_and(|s| s.success())
    });
    if !ok {
        eprintln!("pxe_load: could not give the DHCP receiver thread SCHED_FIFO (chrt); latencies include client scheduling");
    }
}

fn pct_ms(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

fn main() -> Result<()> {
    let a = Arc::new(parse_args()?);
    let sock = pxe_server::netif::udp_on_interface("load", &a.iface, 68, true)?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let dhcp = Arc::new(Dhcp {
        sock,
        waiting: Mutex::new(HashMap::new()),
        stop: AtomicBool::new(false),
    });
    let rx_thread = {
        let d = dhcp.clone();
        std::thread::spawn(move || {
            realtime_priority();
            d.receive_loop()
        })
    };
    // Memory sampler: peak of (RSS of the watched tree) per watch entry.
    let peaks: Arc<Mutex<Vec<(u64, usize)>>> = Arc::new(Mutex::new(vec![(0, 0); a.watch.len()]));
    let sampler = {
        let (a, d, peaks) = (a.clone(), dhcp.clone(), peaks.clone());
        std::thread::spawn(move || {
            while !d.stop.load(Ordering::Relaxed) {
                for (k, (_, pids)) in a.watch.iter().enumerate() {
                    let (kib, procs) = rss_tree(pids);
                    let mut pk = peaks.lock().unwrap_or_else(|e| e.into_inner());
                    if kib > pk[k].0 {
                        pk[k] = (kib, procs);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let stats = Arc::new(Mutex::new(Stats::default()));
    let next = Arc::new(AtomicU32::new(0));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..a.pool.min(a.n))
        .map(|_| {
            let (a, d, s, next) = (a.clone(), dhcp.clone(), stats.clone(), next.clone());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= a.n {
                    break;
                }
                if let Err(e) = client(&a, &d, i, &s) {
                    s.lock().unwrap_or_else(|e| e.into_inner()).errors.push(format!("{e:#}"));
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let wall = t0.elapsed().as_secs_f64();
    dhcp.stop.store(true, Ordering::Relaxed);
    let _ = rx_thread.join();
    let _ = sampler.join();
    let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
    for (ip, prefix) in std::mem::take(&mut s.addrs) {
        let _ = ip_addr("del", &a.iface, ip, prefix);
    }
    let n = a.n;
    println!(
        "{n} clients, pool {}: {} DHCP ok, {} TFTP ok, {} HTTP ok, {} errors, {wall:.1} s",
        a.pool.min(n),
        s.ack.len(),
        s.tftp.len(),
        s.http.len(),
        s.errors.len()
    );
    for e in s.errors.iter().take(5) {
        println!("  error: {e}");
    }
    let mut all: Vec<Duration> = s.offer.iter().chain(s.ack.iter()).copied().collect();
    for (name, v) in [("DISCOVER->OFFER", &mut s.offer.clone()), ("REQUEST->ACK", &mut s.ack.clone()), ("all replies", &mut all)] {
        println!(
            "dhcp {name:<15} p50 {:8.2} ms  p99 {:8.2} ms  max {:8.2} ms",
            pct_ms(v, 0.5),
            pct_ms(v, 0.99),
            pct_ms(v, 1.0)
        );
    }
    let mb = |b: u64| b as f64 / 1e6;
    println!(
        "tftp {:.0} MB each: p50 {:.2} s  max {:.2} s",
        mb(a.tftp_size),
        pct_ms(&mut s.tftp, 0.5) / 1000.0,
        pct_ms(&mut s.tftp, 1.0) / 1000.0
    );
    println!(
        "http {:.0} MB each: p50 {:.2} s  max {:.2} s  ({:.0} MB/s overall)",
        mb(a.http_size),
        pct_ms(&mut s.http, 0.5) / 1000.0,
        pct_ms(&mut s.http, 1.0) / 1000.0,
        mb(a.http_size) * s.http.len() as f64 / wall
    );
    let peaks = peaks.lock().unwrap_or_else(|e| e.into_inner());
    let mut result = format!(
        "RESULT ok={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} wall_s={wall:.1}",
        s.http.len(),
        pct_ms(&mut all, 0.5),
        pct_ms(&mut all, 0.99),
        pct_ms(&mut all, 1.0)
    );
    for ((name, _), (kib, procs)) in a.watch.iter().zip(peaks.iter()) {
        println!("peak VmRSS {name}: {:.1} MB ({procs} processes at the peak)", *kib as f64 / 1024.0);
        result += &format!(" rss_kib_{name}={kib}");
    }
    println!("{result}");
    Ok(())
}
