//! Read-only TFTP server: one listening socket, one thread and one ephemeral
//! socket per transfer (RFC 1350 TIDs), so a slow or lossy client only ever
//! waits on its own timer.
//!
//! Retransmission: on timeout the whole unacknowledged window is resent
//! (RFC 7440 section 4) and the timeout doubles, up to `max_retries` times.
//! With windowsize 1 a duplicate ACK is ignored (the Sorcerer's Apprentice
//! fix, RFC 1123 4.2.3.1); with a larger window it means "resend from here".

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::options::{negotiate, RequestedOptions};
use super::packet::{encode_data_into, ErrorCode, Packet};
use crate::bundle::{Bundle, ResolveError};
use crate::log_limit::LogLimiter;

#[derive(Debug, Clone)]
pub struct TftpConfig {
    /// Upper bound for negotiated blksize; 1468 keeps a 1500-byte MTU
    /// unfragmented (1500 - 20 IP - 8 UDP - 4 TFTP).
    pub max_blksize: u16,
    pub max_windowsize: u16,
    /// First retransmission timeout when the client does not ask for one.
    pub timeout: Duration,
    /// Retransmissions of one window before giving up.
    pub max_retries: u32,
    pub max_transfers: usize,
    /// Source address of transfer sockets (the server's address on the
    /// boot interface); `None`: the listening socket's address.
    pub reply_from: Option<std::net::IpAddr>,
}

impl Default for TftpConfig {
    fn default() -> Self {
        TftpConfig {
            max_blksize: 1468,
            max_windowsize: 64,
            timeout: Duration::from_millis(1000),
            max_retries: 5,
            max_transfers: 512,
            reply_from: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    #[error("cannot bind tftp socket {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("tftp socket error on {addr}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl TftpError {
    pub fn hint(&self) -> &'static str {
        match self {
            TftpError::Bind { .. } => {
                "another TFTP server (dnsmasq, tftpd-hpa, in.tftpd) may hold the port: stop it, or run pxe-server on another machine"
            }
            TftpError::Io { .. } => "check the interface state",
        }
    }
}

/// Called when a transfer completes: client, file name, bytes sent.
pub type TransferHook = Arc<dyn Fn(SocketAddr, &str, u64) + Send + Sync>;

/// Files the server writes itself (GRUB configs), asked before the bundle:
/// the client and the requested name in, the content out.
pub type GeneratedFiles = Arc<dyn Fn(SocketAddr, &str) -> Option<Vec<u8>> + Send + Sync>;

/// What a transfer reads from.
enum Source {
    File(File),
    Memory(Vec<u8>),
}

impl Source {
    fn len(&self) -> std::io::Result<u64> {
        match self {
            Source::File(f) => Ok(f.metadata()?.len()),
            Source::Memory(v) => Ok(v.len() as u64),
        }
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        match self {
            Source::File(f) => f.read_at(buf, off),
            Source::Memory(v) => {
                let start = (off as usize).min(v.len());
                let n = buf.len().min(v.len() - start);
                buf[..n].copy_from_slice(&v[start..start + n]);
                Ok(n)
            }
        }
    }
}

pub struct TftpServer {
    socket: UdpSocket,
    bundle: Arc<Bundle>,
    cfg: TftpConfig,
    active: Arc<AtomicUsize>,
    hook: Option<TransferHook>,
    generated: Option<GeneratedFiles>,
    junk_log: std::sync::Mutex<LogLimiter>,
}

impl TftpServer {
    /// Serves `bundle` on an already bound socket (bound by the caller so it
    /// can set SO_BINDTODEVICE first).
    pub fn new(socket: UdpSocket, bundle: Arc<Bundle>, cfg: TftpConfig) -> Self {
        TftpServer {
            socket,
            bundle,
            cfg,
            active: Arc::new(AtomicUsize::new(0)),
            hook: None,
            generated: None,
            junk_log: std::sync::Mutex::new(LogLimiter::new(Duration::from_secs(1))),
        }
    }

    pub fn bind(addr: SocketAddr, bundle: Arc<Bundle>, cfg: TftpConfig) -> Result<Self, TftpError> {
        let socket = UdpSocket::bind(addr).map_err(|source| TftpError::Bind { addr, source })?;
        Ok(Self::new(socket, bundle, cfg))
    }

    pub fn with_hook(mut self, hook: TransferHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Serves the files `generated` returns ahead of the bundle's.
    pub fn with_generated(mut self, generated: GeneratedFiles) -> Self {
        self.generated = Some(generated);
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Number of transfers running now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Serves until `stop` is set (checked every 200 ms).
    pub fn run(&self, stop: &AtomicBool) -> Result<(), TftpError> {
        let addr = self
            .socket
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 69)));
        self.socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|source| TftpError::Io { addr, source })?;
        let mut buf = vec![0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let (n, peer) = match self.socket.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if crate::netif::is_recv_timeout(&e) => continue,
                // ICMP port unreachable from an earlier reply, etc.
                Err(e) => {
                    debug!(error = %e, "tftp recv error");
                    continue;
                }
            };
            self.handle(&buf[..n], peer, addr);
        }
        Ok(())
    }

    fn handle(&self, pkt: &[u8], peer: SocketAddr, local: SocketAddr) {
        let p = match Packet::parse(pkt) {
            Ok(p) => p,
            Err(e) => {
                let mut limit = self.junk_log.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(held_back) = limit.check(peer.ip(), Instant::now()) {
                    warn!(%peer, error = %e, held_back, "dropping malformed tftp packet");
                }
                return;
            }
        };
        match p {
            Packet::Rrq {
                filename,
                mode,
                options,
            } => {
                if self.active.load(Ordering::Relaxed) >= self.cfg.max_transfers {
                    warn!(%peer, file = %filename, "too many transfers, refusing");
                    send_error(&self.socket, peer, ErrorCode::NotDefined, "server busy");
                    return;
                }
                if mode != "octet" && mode != "netascii" {
                    warn!(%peer, %mode, "unsupported tftp mode");
                    send_error(
                        &self.socket,
                        peer,
                        ErrorCode::IllegalOperation,
                        "unsupported mode",
                    );
                    return;
                }
                let file = match self.open(&filename, peer) {
                    Some(f) => f,
                    None => return,
                };
                let req = RequestedOptions::from_pairs(&options);
                let cfg = self.cfg.clone();
                let active = self.active.clone();
                let hook = self.hook.clone();
                active.fetch_add(1, Ordering::Relaxed);
                let spawned = std::thread::Builder::new()
                    .name(format!("tftp {peer}"))
                    .spawn(move || {
                        let _guard = ActiveGuard(active);
                        let local = SocketAddr::new(cfg.reply_from.unwrap_or(local.ip()), 0);
                        match transfer(local, peer, &file, &filename, &req, &cfg) {
                            Ok(sent) => {
                                if let Some(h) = hook {
                                    h(peer, &filename, sent);
                                }
                            }
                            Err(e) => {
                                warn!(%peer, file = %filename, error = %e, "tftp transfer failed")
                            }
                        }
                    });
                if let Err(e) = spawned {
                    self.active.fetch_sub(1, Ordering::Relaxed);
                    warn!(%peer, error = %e, "cannot start transfer thread");
                }
            }
            Packet::Wrq { filename, .. } => {
                warn!(%peer, file = %filename, "write request refused: server is read-only");
                send_error(
                    &self.socket,
                    peer,
                    ErrorCode::AccessViolation,
                    "read-only server",
                );
            }
            other => {
                debug!(%peer, packet = ?std::mem::discriminant(&other), "ignoring non-request packet on the listening port");
            }
        }
    }
}

impl TftpServer {
    /// The generated file or the bundle file `filename`; `None` after an
    /// error was sent.
    fn open(&self, filename: &str, peer: SocketAddr) -> Option<Source> {
        if let Some(body) = self.generated.as_ref().and_then(|g| g(peer, filename)) {
            return Some(Source::Memory(body));
        }
        let path = match self.bundle.resolve(filename) {
            Ok(p) => p,
            Err(e) => {
                let code = if e.is_violation() {
                    warn!(%peer, file = %filename, error = %e, "refused tftp request");
                    ErrorCode::AccessViolation
                } else {
                    info!(%peer, file = %filename, "tftp file not found");
                    ErrorCode::FileNotFound
                };
                let msg = match e {
                    ResolveError::NotFound { .. } => "file not found",
                    _ => "access violation",
                };
                send_error(&self.socket, peer, code, msg);
                return None;
            }
        };
        match File::open(&path) {
            Ok(f) => Some(Source::File(f)),
            Err(e) => {
                warn!(%peer, path = %path.display(), error = %e, "cannot open file");
                send_error(
                    &self.socket,
                    peer,
                    ErrorCode::AccessViolation,
                    "cannot open",
                );
                None
            }
        }
    }
}

struct ActiveGuard(Arc<AtomicUsize>);
impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn send_error(sock: &UdpSocket, peer: SocketAddr, code: ErrorCode, msg: &str) {
    let b = Packet::Error {
        code,
        message: msg.into(),
    }
    .to_bytes();
    let _ = sock.send_to(&b, peer);
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("socket error")]
    Io(#[from] std::io::Error),
    #[error("client stopped answering after {retries} retransmissions at block {block}")]
    Timeout { retries: u32, block: u64 },
    #[error("client sent error {code:?}: {message}")]
    ClientError { code: ErrorCode, message: String },
}

enum Wait {
    Ack(u16),
    Timeout,
}

/// A transfer socket that remembers its read timeout, so the lock-step path
/// (one ACK per block) does not pay a setsockopt per block.
struct Conn {
    sock: UdpSocket,
    timeout: Option<Duration>,
}

impl Conn {
    fn set_timeout(&mut self, t: Duration) -> std::io::Result<()> {
        // Round up to 10 ms steps, so a fresh wait (just under the full
        // timeout) keeps the armed value; re-arm only when it changes.
        let t = Duration::from_millis((t.as_millis() as u64).div_ceil(10).max(1) * 10);
        if self.timeout != Some(t) {
            self.sock.set_read_timeout(Some(t))?;
            self.timeout = Some(t);
        }
        Ok(())
    }
}

/// Waits for an ACK (or ERROR) until `deadline`; stray packets do not
/// extend it. The caller keeps the deadline of the last transmission across
/// ACKs it ignores, so a client that repeats an old ACK faster than the
/// server's timeout cannot hold off retransmission.
fn wait_ack(conn: &mut Conn, buf: &mut [u8], deadline: Instant) -> Result<Wait, TransferError> {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(Wait::Timeout);
        }
        conn.set_timeout(deadline - now)?;
        let sock = &conn.sock;
        let n = match sock.recv(buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Wait::Timeout)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // ECONNREFUSED: the client went away (ICMP unreachable).
            Err(e) => return Err(e.into()),
        };
        match Packet::parse(&buf[..n]) {
            Ok(Packet::Ack { block }) => return Ok(Wait::Ack(block)),
            Ok(Packet::Error { code, message }) => {
                return Err(TransferError::ClientError { code, message })
            }
            Ok(_) | Err(_) => debug!("ignoring unexpected packet during transfer"),
        }
    }
}

/// Sends one file. Returns the number of payload bytes sent.
fn transfer(
    local: SocketAddr,
    peer: SocketAddr,
    file: &Source,
    name: &str,
    req: &RequestedOptions,
    cfg: &TftpConfig,
) -> Result<u64, TransferError> {
    let started = Instant::now();
    let sock = UdpSocket::bind(local)?;
    sock.connect(peer)?;
    let mut conn = Conn {
        sock,
        timeout: None,
    };
    let size = file.len()?;
    let neg = negotiate(req, size, cfg.max_blksize, cfg.max_windowsize, cfg.timeout);
    let mut rbuf = vec![0u8; 1024];
    debug!(%peer, file = name, blksize = neg.blksize, windowsize = neg.windowsize, "tftp transfer start");

    if !neg.oack.is_empty() {
        let oack = Packet::Oack {
            options: neg.oack.clone(),
        }
        .to_bytes();
        let mut timeout = neg.timeout;
        let mut retries = 0;
        loop {
            conn.sock.send(&oack)?;
            match wait_ack(&mut conn, &mut rbuf, Instant::now() + timeout) {
                Ok(Wait::Ack(0)) => break,
                Ok(Wait::Ack(_)) | Ok(Wait::Timeout) => {
                    retries += 1;
                    if retries > cfg.max_retries {
                        return Err(TransferError::Timeout { retries, block: 0 });
                    }
                    timeout = (timeout * 2).min(Duration::from_secs(30));
                }
                // PXE ROMs ask for tsize, read the OACK and abort on purpose
                // before requesting the file again: not worth a warning.
                Err(TransferError::ClientError { code, message }) => {
                    debug!(%peer, file = name, ?code, %message, "client ended transfer after OACK");
                    return Ok(0);
                }
                Err(e) => return Err(e),
            }
        }
    }

    let blksize = neg.blksize as u64;
    // Always one final short (possibly empty) block.
    let last_block = size / blksize + 1;
    let window = neg.windowsize as u64;
    let mut base: u64 = 1; // first unacknowledged block
    // One read per window (up to 256 KiB), not per block: half the system
    // calls of a windowed transfer go away, and memory stays bounded.
    let batch = (window).min(((256 << 10) / blksize).max(1));
    let mut data = vec![0u8; (blksize * batch) as usize];
    let mut pkt = Vec::with_capacity(blksize as usize + 4);
    let mut timeout = neg.timeout;
    let mut retries = 0u32;
    let mut send_window = true;
    let mut deadline = Instant::now();
    while base <= last_block {
        let end = (base + window - 1).min(last_block);
        if send_window {
            let mut first = base;
            while first <= end {
                let last = (first + batch - 1).min(end);
                let off = (first - 1) * blksize;
                let want = (size.saturating_sub(off)).min(blksize * (last - first + 1)) as usize;
                let mut got = 0;
                while got < want {
                    let n = file.read_at(&mut data[got..want], off + got as u64)?;
                    if n == 0 {
                        break; // file shrank: send what there is
                    }
                    got += n;
                }
                for blk in first..=last {
                    let from = (((blk - first) * blksize) as usize).min(got);
                    let to = (from + blksize as usize).min(got);
                    encode_data_into(&mut pkt, blk as u16, &data[from..to]);
                    conn.sock.send(&pkt)?;
                }
                first = last + 1;
            }
            deadline = Instant::now() + timeout;
        }
        match wait_ack(&mut conn, &mut rbuf, deadline)? {
            Wait::Ack(a) => {
                // Map the 16-bit block number (it wraps) into the window.
                let delta = a.wrapping_sub((base - 1) as u16) as u64;
                if delta >= 1 && delta <= end - base + 1 {
                    base += delta;
                    retries = 0;
                    timeout = neg.timeout;
                    send_window = true;
                } else if delta == 0 && window > 1 {
                    // RFC 7440: the client lost a block, resend from base.
                    send_window = true;
                } else {
                    send_window = false;
                }
            }
            Wait::Timeout => {
                retries += 1;
                if retries > cfg.max_retries {
                    return Err(TransferError::Timeout {
                        retries: retries - 1,
                        block: base,
                    });
                }
                timeout = (timeout * 2).min(Duration::from_secs(30));
                send_window = true;
                debug!(%peer, file = name, block = base, retries, "tftp retransmit");
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    info!(
        %peer,
        file = name,
        bytes = size,
        blksize = neg.blksize,
        windowsize = neg.windowsize,
        mbit_s = format!("{:.1}", size as f64 * 8.0 / 1e6 / secs.max(1e-6)),
        "tftp transfer done"
    );
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    struct Running {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        handle: Option<std::thread::JoinHandle<()>>,
    }
    impl Drop for Running {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
    }

    fn start(dir: &std::path::Path, cfg: TftpConfig) -> Running {
        start_with(dir, cfg, None)
    }

    fn start_with(
        dir: &std::path::Path,
        cfg: TftpConfig,
        generated: Option<GeneratedFiles>,
    ) -> Running {
        let bundle = Arc::new(Bundle::unchecked(dir).expect("bundle"));
        let mut srv = TftpServer::bind((Ipv4Addr::LOCALHOST, 0).into(), bundle, cfg).expect("bind");
        if let Some(g) = generated {
            srv = srv.with_generated(g);
        }
        let addr = srv.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let _ = srv.run(&s2);
        });
        Running {
            addr,
            stop,
            handle: Some(handle),
        }
    }

    /// A minimal client: returns the file, optionally dropping the first
    /// transmission of block `drop_block` to exercise retransmission.
    fn fetch(
        server: SocketAddr,
        name: &str,
        opts: &[(&str, &str)],
        drop_block: Option<u16>,
    ) -> Result<Vec<u8>, String> {
        fetch_blocks(server, name, opts, drop_block).map(|(data, _)| data)
    }

    /// [`fetch`], also returning the negotiated block size.
    fn fetch_blocks(
        server: SocketAddr,
        name: &str,
        opts: &[(&str, &str)],
        drop_block: Option<u16>,
    ) -> Result<(Vec<u8>, usize), String> {
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
        // Short reads and a long overall deadline: on a loaded machine the
        // kernel drops 64 KiB datagrams that do not fit the receive buffer,
        // and the server's doubling timeout may then exceed one read.
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(|e| e.to_string())?;
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        let rrq = Packet::Rrq {
            filename: name.into(),
            mode: "octet".into(),
            options: opts
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        };
        s.send_to(&rrq.to_bytes(), server)
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 70000];
        let mut blksize = 512usize;
        let mut window = 1u16;
        let mut expected: u16 = 1;
        let mut dropped = false;
        let mut in_window = 0u16;
        let mut peer: Option<SocketAddr> = None;
        for _ in 0..200_000 {
            let (n, from) = match s.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) && std::time::Instant::now() < deadline =>
                {
                    // As an RFC 7440 client does when a window stalls:
                    // acknowledge the last block received in order.
                    if let Some(p) = peer {
                        in_window = 0;
                        s.send_to(&Packet::Ack { block: expected.wrapping_sub(1) }.to_bytes(), p)
                            .map_err(|e| e.to_string())?;
                    }
                    continue;
                }
                Err(e) => return Err(format!("{e} (no answer for 90 s)")),
            };
            peer = Some(from);
            match Packet::parse(&buf[..n]).map_err(|e| e.to_string())? {
                Packet::Oack { options } => {
                    for (k, v) in options {
                        if k == "blksize" {
                            blksize = v.parse().map_err(|_| "bad blksize")?;
                        }
                        if k == "windowsize" {
                            window = v.parse().map_err(|_| "bad window")?;
                        }
                    }
                    s.send_to(&Packet::Ack { block: 0 }.to_bytes(), from)
                        .map_err(|e| e.to_string())?;
                }
                Packet::Data { block, data } => {
                    if Some(block) == drop_block && !dropped {
                        dropped = true;
                        continue;
                    }
                    if block != expected {
                        continue;
                    }
                    out.extend_from_slice(&data);
                    expected = expected.wrapping_add(1);
                    in_window += 1;
                    let last = data.len() < blksize;
                    if last || in_window == window {
                        in_window = 0;
                        s.send_to(&Packet::Ack { block }.to_bytes(), from)
                            .map_err(|e| e.to_string())?;
                    }
                    if last {
                        return Ok((out, blksize));
                    }
                }
                Packet::Error { code, message } => return Err(format!("{code:?}: {message}")),
                other => return Err(format!("unexpected {other:?}")),
            }
        }
        Err("too many packets".into())
    }

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn transfers_with_options_windows_and_loss() {
        let t = tempfile::tempdir().expect("tempdir");
        let data = payload(300_000);
        std::fs::write(t.path().join("f"), &data).expect("write");
        std::fs::write(t.path().join("exact"), payload(1024)).expect("write");
        std::fs::write(t.path().join("empty"), b"").expect("write");
        let cfg = TftpConfig {
            timeout: Duration::from_millis(100),
            max_blksize: 8192,
            ..TftpConfig::default()
        };
        let srv = start(t.path(), cfg);
        assert_eq!(fetch(srv.addr, "f", &[], None).expect("plain"), data);
        assert_eq!(
            fetch(
                srv.addr,
                "f",
                &[("blksize", "1468"), ("windowsize", "16"), ("tsize", "0")],
                Some(5)
            )
            .expect("window with loss"),
            data
        );
        assert_eq!(
            fetch(srv.addr, "f", &[("blksize", "65464")], Some(3)).expect("big"),
            data
        );
        assert_eq!(
            fetch(srv.addr, "exact", &[], None).expect("exact"),
            payload(1024)
        );
        assert_eq!(fetch(srv.addr, "empty", &[], None).expect("empty"), b"");
        // Block numbers wrap past 65535: 70000 blocks of 8 bytes.
        let wrap = payload(8 * 70_000);
        std::fs::write(t.path().join("wrap"), &wrap).expect("write");
        assert_eq!(
            fetch(
                srv.addr,
                "wrap",
                &[("blksize", "8"), ("windowsize", "64")],
                None
            )
            .expect("wrap"),
            wrap
        );
    }

    #[test]
    fn largest_block_size_65464_when_allowed() {
        let t = tempfile::tempdir().expect("tempdir");
        // Not a multiple of the block size, several blocks, one lost.
        let data = payload(65464 * 5 + 1234);
        std::fs::write(t.path().join("f"), &data).expect("write");
        let cfg = TftpConfig {
            timeout: Duration::from_millis(200),
            max_blksize: 65464,
            ..TftpConfig::default()
        };
        let srv = start(t.path(), cfg);
        let (got, blksize) =
            fetch_blocks(srv.addr, "f", &[("blksize", "65464"), ("tsize", "0")], Some(2))
                .expect("65464");
        assert_eq!(blksize, 65464);
        assert_eq!(got, data);
        // A window larger than one read (4 blocks of 65464 bytes): each
        // window is read in parts, and a lost block resends from it.
        let (got, _) = fetch_blocks(srv.addr, "f", &[("blksize", "65464"), ("windowsize", "6")], Some(3)).expect("windowed");
        assert_eq!(got, data);
        // Asking for more is clamped to the RFC 2348 maximum.
        let (got, blksize) =
            fetch_blocks(srv.addr, "f", &[("blksize", "65535")], None).expect("clamped");
        assert_eq!((blksize, got.len()), (65464, data.len()));
        // The default configuration keeps a 1500-byte MTU unfragmented.
        let srv = start(t.path(), TftpConfig::default());
        let (_, blksize) =
            fetch_blocks(srv.addr, "f", &[("blksize", "65464")], None).expect("default");
        assert_eq!(blksize, 1468);
    }

    #[test]
    fn traversal_and_garbage_are_refused_and_server_keeps_serving() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path().join("b");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("ok"), b"fine").expect("write");
        std::fs::write(t.path().join("secret"), b"s").expect("write");
        std::os::unix::fs::symlink(t.path().join("secret"), dir.join("link")).expect("symlink");
        let srv = start(&dir, TftpConfig::default());
        let raw = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        for junk in [
            &b""[..],
            b"\x00",
            b"\x00\x01abc",
            b"\xff\xff\xff\xff",
            b"\x00\x04\x00\x01",
        ] {
            raw.send_to(junk, srv.addr).expect("send");
        }
        for name in ["../secret", "/../secret", "link", "..\\secret"] {
            let e = fetch(srv.addr, name, &[], None).expect_err("refused");
            assert!(e.contains("AccessViolation"), "{name}: {e}");
        }
        // A leading `/` is the bundle root (GRUB asks for `/grub/grub.cfg`).
        for name in ["missing", "/etc/passwd"] {
            let e = fetch(srv.addr, name, &[], None).expect_err("missing");
            assert!(e.contains("FileNotFound"), "{name}: {e}");
        }
        assert_eq!(fetch(srv.addr, "/ok", &[], None).expect("rooted"), b"fine");
        let w = Packet::Wrq {
            filename: "ok".into(),
            mode: "octet".into(),
            options: vec![],
        };
        raw.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        raw.send_to(&w.to_bytes(), srv.addr).expect("send");
        let mut buf = [0u8; 512];
        let (n, _) = raw.recv_from(&mut buf).expect("reply");
        assert!(matches!(
            Packet::parse(&buf[..n]),
            Ok(Packet::Error {
                code: ErrorCode::AccessViolation,
                ..
            })
        ));
        assert_eq!(
            fetch(srv.addr, "ok", &[], None).expect("still serving"),
            b"fine"
        );
    }

    #[test]
    fn generated_files_are_served_ahead_of_the_bundle() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(t.path().join("grub")).expect("mkdir");
        std::fs::write(t.path().join("grub/grub.cfg"), b"bundle's own").expect("write");
        std::fs::write(t.path().join("ok"), b"fine").expect("write");
        // Several blocks, so reads at offsets of the in-memory file count.
        let body: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let b2 = body.clone();
        let askers = Arc::new(std::sync::Mutex::new(Vec::new()));
        let a2 = askers.clone();
        let g: GeneratedFiles = Arc::new(move |peer: SocketAddr, name: &str| {
            a2.lock().expect("lock").push(peer);
            (name.trim_start_matches('/') == "grub/grub.cfg").then(|| b2.clone())
        });
        let srv = start_with(t.path(), TftpConfig::default(), Some(g));
        assert_eq!(
            fetch(srv.addr, "/grub/grub.cfg", &[], None).expect("grub"),
            body
        );
        assert_eq!(
            fetch(srv.addr, "grub/grub.cfg", &[("blksize", "1024")], Some(2)).expect("grub"),
            body
        );
        assert_eq!(fetch(srv.addr, "ok", &[], None).expect("bundle"), b"fine");
        // The hook is told who asks (the client list records its address).
        let askers = askers.lock().expect("lock");
        assert_eq!(askers.len(), 3);
        assert!(askers.iter().all(|a| a.ip() == Ipv4Addr::LOCALHOST && a.port() != 0));
    }

    #[test]
    fn stalled_client_does_not_slow_parallel_transfers() {
        let t = tempfile::tempdir().expect("tempdir");
        let data = payload(2_000_000);
        std::fs::write(t.path().join("f"), &data).expect("write");
        let cfg = TftpConfig {
            timeout: Duration::from_millis(500),
            max_retries: 20,
            ..TftpConfig::default()
        };
        let srv = start(t.path(), cfg);
        // Five clients that request and then never acknowledge.
        let stalled: Vec<UdpSocket> = (0..5)
            .map(|_| {
                let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
                let rrq = Packet::Rrq {
                    filename: "f".into(),
                    mode: "octet".into(),
                    options: vec![("windowsize".into(), "64".into())],
                };
                s.send_to(&rrq.to_bytes(), srv.addr).expect("send");
                s
            })
            .collect();
        let t0 = Instant::now();
        let addr = srv.addr;
        let handles: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(move || {
                    fetch(
                        addr,
                        "f",
                        &[("blksize", "1468"), ("windowsize", "16")],
                        None,
                    )
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().expect("join").expect("fetch").len(), data.len());
        }
        let took = t0.elapsed();
        // 8 x 2 MB over loopback finish long before one stalled client's
        // first retransmission timeout doubles twice.
        assert!(
            took < Duration::from_secs(3),
            "parallel fetches took {took:?}"
        );
        drop(stalled);
    }

    #[test]
    fn repeated_old_acks_do_not_hold_off_retransmission() {
        // A client whose own timeout is shorter than the server's repeats
        // its last ACK (RFC 1350). Those duplicates are ignored (no
        // Sorcerer's Apprentice resend), but must not restart the server's
        // timer: block 2, lost here, still comes again.
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::write(t.path().join("f"), payload(2000)).expect("write");
        let cfg = TftpConfig {
            timeout: Duration::from_millis(400),
            ..TftpConfig::default()
        };
        let srv = start(t.path(), cfg);
        let c = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        c.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let rrq = Packet::Rrq {
            filename: "f".into(),
            mode: "octet".into(),
            options: vec![],
        };
        c.send_to(&rrq.to_bytes(), srv.addr).expect("send");
        let mut buf = [0u8; 1024];
        let mut peer = None;
        let mut copies_of_2 = 0;
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) && copies_of_2 < 2 {
            match c.recv_from(&mut buf) {
                Ok((n, from)) => match Packet::parse(&buf[..n]).expect("parse") {
                    Packet::Data { block: 1, .. } => {
                        peer = Some(from);
                        c.send_to(&Packet::Ack { block: 1 }.to_bytes(), from)
                            .expect("ack");
                    }
                    Packet::Data { block: 2, .. } => copies_of_2 += 1,
                    other => panic!("unexpected {other:?}"),
                },
                // Every 100 ms: the old ACK again, as a client timer would.
                Err(_) => {
                    if let Some(p) = peer {
                        c.send_to(&Packet::Ack { block: 1 }.to_bytes(), p)
                            .expect("ack");
                    }
                }
            }
        }
        assert_eq!(copies_of_2, 2, "block 2 was not sent again within 3 s");
    }

    #[test]
    fn silent_client_is_given_up_after_bounded_retries() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::write(t.path().join("f"), payload(5000)).expect("write");
        let cfg = TftpConfig {
            timeout: Duration::from_millis(20),
            max_retries: 3,
            ..TftpConfig::default()
        };
        let bundle = Arc::new(Bundle::unchecked(t.path()).expect("bundle"));
        let srv = TftpServer::bind((Ipv4Addr::LOCALHOST, 0).into(), bundle, cfg).expect("bind");
        let addr = srv.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let srv = Arc::new(srv);
        let (s2, srv2) = (stop.clone(), srv.clone());
        let h = std::thread::spawn(move || {
            let _ = srv2.run(&s2);
        });
        let c = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        c.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let rrq = Packet::Rrq {
            filename: "f".into(),
            mode: "octet".into(),
            options: vec![],
        };
        c.send_to(&rrq.to_bytes(), addr).expect("send");
        let mut buf = [0u8; 1024];
        let mut copies = 0;
        let t0 = Instant::now();
        while let Ok((n, _)) = c.recv_from(&mut buf) {
            if let Ok(Packet::Data { block: 1, .. }) = Packet::parse(&buf[..n]) {
                copies += 1;
            }
        }
        // 1 original + 3 retries with doubling timeouts 20+40+80+160 ms.
        assert_eq!(copies, 4);
        assert!(t0.elapsed() < Duration::from_secs(5));
        let deadline = Instant::now() + Duration::from_secs(2);
        while srv.active() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(srv.active(), 0);
        stop.store(true, Ordering::Relaxed);
        let _ = h.join();
    }
}
