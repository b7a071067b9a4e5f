//! Small HTTP/1.1 server on std threads: bundle files with Range support
//! (RFC 9110 section 14), generated iPXE scripts and GRUB configs, and the
//! client status API.
//!
//! Routes:
//! - `GET|HEAD /<bundle file>` (Range: `bytes=a-b`, `a-`, `-n`; one range only)
//! - `GET /boot/<mac>.ipxe` the iPXE script for that client
//! - `GET /grub/grub.cfg` GRUB's first config, which loads
//!   `/grub/<mac>.cfg`, the config for that client (Secure Boot chain); both
//!   are served over TFTP too, where GRUB looks first ([`HttpContext::generated`])
//! - `GET|HEAD /images/<path>` a disk image under `--images` (Range as for
//!   bundle files), for restore jobs with a relative IMAGE
//! - `GET /clients` JSON list of clients
//! - `POST /clients/<mac>/status` JSON [`ClientStatus`] from the live system
//!
//! Deliberately unsupported: chunked request bodies, multipart ranges, TLS.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::bundle::{names, Bundle};
use crate::clients::{ClientStatus, Registry};
use crate::images::{ImageDir, URL_PREFIX as IMAGES_PREFIX};
use crate::mac::Mac;
use crate::policy::{kernel_cmdline, Action, Policy};

const MAX_HEADER: usize = 16 * 1024;
const MAX_BODY: usize = 64 * 1024;
const MAX_CONNECTIONS: usize = 1024;

/// Shared state the HTTP handlers read.
pub struct HttpContext {
    pub bundle: Arc<Bundle>,
    pub policy: Arc<RwLock<Policy>>,
    pub registry: Arc<Registry>,
    /// Address clients use to reach this server.
    pub server_ip: Ipv4Addr,
    pub port: u16,
    /// Operator's extra kernel arguments (`--cmdline`).
    pub cmdline: String,
    /// `--images`: served at `/images/`.
    pub images: Option<Arc<ImageDir>>,
}

impl HttpContext {
    pub fn base_url(&self) -> String {
        format!("http://{}:{}", self.server_ip, self.port)
    }

    fn cmdline_for(&self, mac: Mac) -> (String, Action) {
        let p = self.policy.read().unwrap_or_else(|e| e.into_inner());
        let a = p.for_client(mac);
        (
            kernel_cmdline(&self.base_url(), mac, &a, &self.cmdline),
            a.action,
        )
    }

    /// The iPXE script for `mac`, following its policy action.
    pub fn ipxe_script(&self, mac: Mac) -> String {
        let (cmdline, action) = self.cmdline_for(mac);
        let base = self.base_url();
        let boot = format!(
            "kernel {base}/{k} initrd={i} {cmdline}\ninitrd {base}/{i}\nboot\n",
            k = names::KERNEL,
            i = names::INITRD
        );
        match action {
            Action::Rescue => format!("#!ipxe\n{boot}"),
            Action::Local => "#!ipxe\necho pxe-server: booting from local disk\nexit\n".to_string(),
            Action::Menu => format!(
                "#!ipxe\nmenu Rescue environment ({base})\nitem rescue Boot the rescue environment\n\
                 item local Boot from the local disk\n\
                 choose --default rescue --timeout 10000 target && goto ${{target}}\n\
                 :local\nexit\n:rescue\n{boot}"
            ),
        }
    }

    /// GRUB config for the Secure Boot chain (shim -> GRUB -> kernel). The
    /// kernel and initrd come over TFTP: Debian's signed network GRUB has no
    /// `http` module built in, and Secure Boot forbids loading one.
    pub fn grub_config(&self, mac: Mac) -> String {
        let (cmdline, action) = self.cmdline_for(mac);
        let entry = format!(
            "menuentry 'Rescue environment' {{\n  echo 'Loading the rescue environment from {ip}'\n  linux (tftp,{ip})/{k} {cmdline}\n  initrd (tftp,{ip})/{i}\n}}\n",
            ip = self.server_ip,
            k = names::KERNEL,
            i = names::INITRD
        );
        match action {
            Action::Local => "set timeout=0\nmenuentry 'Local disk' {\n  exit\n}\n".to_string(),
            Action::Rescue => format!("set timeout=0\n{entry}"),
            Action::Menu => {
                format!("set timeout=10\n{entry}menuentry 'Local disk' {{\n  exit\n}}\n")
            }
        }
    }

    /// Files the server writes itself, by request path (leading `/`
    /// optional), served over HTTP and TFTP ahead of the bundle's files:
    ///
    /// - `boot/<mac>.ipxe`: the iPXE script of that client;
    /// - `grub/grub.cfg`: where Debian's signed network GRUB (`grubnetx64`,
    ///   prefix `/grub` on the TFTP server that served it) looks first. It
    ///   loads `grub/<mac>.cfg`, so every client gets its own job even though
    ///   TFTP does not say who asks. A bundle's own `grub/grub.cfg` (for
    ///   other servers) is shadowed;
    /// - `grub/<mac>.cfg`: the GRUB config of that client.
    pub fn generated(&self, path: &str) -> Option<Generated> {
        let path = path.trim_start_matches('/');
        if path == GRUB_FIRST_CONFIG {
            return Some(Generated {
                mac: None,
                what: "grub config",
                body: "# pxe-server: load this client's own configuration\n\
                       source $prefix/${net_default_mac}.cfg\n"
                    .into(),
            });
        }
        if let Some(m) = path
            .strip_prefix("boot/")
            .and_then(|p| p.strip_suffix(".ipxe"))
        {
            let mac = m.parse::<Mac>().ok()?;
            return Some(Generated {
                mac: Some(mac),
                what: "ipxe script",
                body: self.ipxe_script(mac),
            });
        }
        if let Some(m) = path
            .strip_prefix("grub/")
            .and_then(|p| p.strip_suffix(".cfg"))
        {
            let mac = m.parse::<Mac>().ok()?;
            return Some(Generated {
                mac: Some(mac),
                what: "grub config",
                body: self.grub_config(mac),
            });
        }
        None
    }

    /// [`HttpContext::generated`] for a request from `peer` (HTTP or TFTP):
    /// a file written for one client records it in the client list, with
    /// the address it asked from (under proxyDHCP the server never sees the
    /// client's ACK, so this and the port 4011 request are how it learns it).
    pub fn generated_for(&self, peer: Option<Ipv4Addr>, path: &str) -> Option<Generated> {
        let g = self.generated(path)?;
        if let Some(mac) = g.mac {
            if let Some(ip) = peer.filter(|ip| !ip.is_unspecified()) {
                self.registry.set_ip(mac, ip);
            }
            self.registry.served_to_mac(mac, g.what);
        }
        Some(g)
    }
}

/// GRUB's first config file (see [`HttpContext::generated`]).
pub const GRUB_FIRST_CONFIG: &str = "grub/grub.cfg";

/// A script or config written by the server for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The client it was written for, when the name says.
    pub mac: Option<Mac>,
    /// For the client list: "ipxe script", "grub config".
    pub what: &'static str,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for HTTP on {addr}")]
pub struct HttpBindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

impl HttpBindError {
    pub fn hint(&self) -> &'static str {
        "another web server may use the port: pick another --http-port"
    }
}

pub struct HttpServer {
    listeners: Vec<TcpListener>,
    ctx: Arc<HttpContext>,
    active: Arc<AtomicUsize>,
}

impl HttpServer {
    pub fn bind(addr: SocketAddr, ctx: Arc<HttpContext>) -> Result<Self, HttpBindError> {
        let listener = TcpListener::bind(addr).map_err(|source| HttpBindError { addr, source })?;
        Ok(HttpServer {
            listeners: vec![listener],
            ctx,
            active: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Listens on `addr` too (loopback, for `pxe-server status`).
    pub fn also_listen(&mut self, addr: SocketAddr) -> Result<(), HttpBindError> {
        let l = TcpListener::bind(addr).map_err(|source| HttpBindError { addr, source })?;
        self.listeners.push(l);
        Ok(())
    }

    /// The first listening address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self.listeners.first() {
            Some(l) => l.local_addr(),
            None => Err(std::io::Error::other("no listener")),
        }
    }

    /// Accepts until `stop` is set (polled every 20 ms).
    pub fn run(&self, stop: &AtomicBool) -> std::io::Result<()> {
        for l in &self.listeners {
            l.set_nonblocking(true)?;
        }
        while !stop.load(Ordering::Relaxed) {
            let mut idle = true;
            for l in &self.listeners {
                match l.accept() {
                    Ok((stream, peer)) => {
                        idle = false;
                        self.spawn_connection(stream, peer);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => debug!(error = %e, "http accept error"),
                }
            }
            if idle {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    fn spawn_connection(&self, stream: TcpStream, peer: SocketAddr) {
        if self.active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            warn!(%peer, "too many http connections, dropping");
            return;
        }
        let ctx = self.ctx.clone();
        let active = self.active.clone();
        active.fetch_add(1, Ordering::Relaxed);
        let r = std::thread::Builder::new()
            .name(format!("http {peer}"))
            .spawn(move || {
                if let Err(e) = serve_connection(stream, peer, &ctx) {
                    debug!(%peer, error = %e, "http connection ended");
                }
                active.fetch_sub(1, Ordering::Relaxed);
            });
        if r.is_err() {
            self.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    range: Option<String>,
    content_length: usize,
    close: bool,
}

/// Reads one request head. `Ok(None)` on a clean EOF between requests.
fn read_head(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r
            .by_ref()
            .take(MAX_HEADER as u64)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "truncated head",
                ))
            };
        }
        if line == b"\r\n" || line == b"\n" {
            if head.is_empty() {
                continue; // tolerate stray CRLF between requests (RFC 9112 2.2)
            }
            break;
        }
        head.push(String::from_utf8_lossy(&line).trim_end().to_string());
        if head.iter().map(|l| l.len()).sum::<usize>() > MAX_HEADER || head.len() > 100 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "header too large",
            ));
        }
    }
    let mut parts = head[0].split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "bad request line",
        ));
    };
    let mut req = Request {
        method: method.to_string(),
        path: percent_decode(target.split('?').next().unwrap_or("/")),
        range: None,
        content_length: 0,
        close: version == "HTTP/1.0",
    };
    for h in &head[1..] {
        let Some((k, v)) = h.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "range" => req.range = Some(v.to_string()),
            "content-length" => {
                req.content_length = v.parse().map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "bad content-length")
                })?
            }
            "connection" => {
                let v = v.to_ascii_lowercase();
                if v.contains("close") {
                    req.close = true;
                } else if v.contains("keep-alive") {
                    req.close = false;
                }
            }
            _ => {}
        }
    }
    Ok(Some(req))
}

/// Decodes `%XX` escapes (RFC 3986 2.1); invalid escapes are kept as they
/// are. Traversal checks happen after decoding, in [`Bundle::resolve`].
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a single `bytes=` range against `size` (RFC 9110 14.1.2).
/// `Err(())` means unsatisfiable (416); `Ok(None)` means ignore the header.
#[allow(clippy::result_unit_err)]
pub fn parse_range(h: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // multipart ranges: send the whole file
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || size == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let s: u64 = a.parse().map_err(|_| ())?;
        let e: u64 = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .min(size.saturating_sub(1))
        };
        if s >= size || e < s {
            return Err(());
        }
        (s, e)
    };
    Ok(Some((start, end)))
}

fn respond(
    w: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &[u8],
    head_only: bool,
    close: bool,
) -> std::io::Result<()> {
    let conn = if close { "close" } else { "keep-alive" };
    write!(
        w,
        "HTTP/1.1 {status}\r\nServer: pxe-server\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n",
        body.len()
    )?;
    if !head_only {
        w.write_all(body)?;
    }
    w.flush()
}

fn serve_connection(stream: TcpStream, peer: SocketAddr, ctx: &HttpContext) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let _ = stream.set_nodelay(true);
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    for _ in 0..10_000 {
        let req = match read_head(&mut r) {
            Ok(Some(req)) => req,
            Ok(None) => return Ok(()),
            Err(e) => {
                let _ = respond(
                    &mut w,
                    "400 Bad Request",
                    "text/plain",
                    b"bad request\n",
                    false,
                    true,
                );
                return Err(e);
            }
        };
        let close = req.close;
        handle(&req, &mut r, &mut w, peer, ctx)?;
        if close {
            return Ok(());
        }
    }
    Ok(())
}

fn handle(
    req: &Request,
    r: &mut BufReader<TcpStream>,
    w: &mut TcpStream,
    peer: SocketAddr,
    ctx: &HttpContext,
) -> std::io::Result<()> {
    let close = req.close;
    let head_only = req.method == "HEAD";
    let text = "text/plain; charset=utf-8";
    let path = req.path.trim_start_matches('/');
    let peer_ip = match peer.ip() {
        std::net::IpAddr::V4(v4) => Some(v4),
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };

    if req.method == "POST" {
        if req.content_length > MAX_BODY {
            return respond(
                w,
                "413 Content Too Large",
                text,
                b"body too large\n",
                false,
                true,
            );
        }
        let mut body = vec![0u8; req.content_length];
        r.read_exact(&mut body)?;
        let mac = path
            .strip_prefix("clients/")
            .and_then(|p| p.strip_suffix("/status"))
            .and_then(|m| m.parse::<Mac>().ok());
        let Some(mac) = mac else {
            return respond(w, "404 Not Found", text, b"not found\n", false, close);
        };
        return match serde_json::from_slice::<ClientStatus>(&body) {
            Ok(st) => {
                info!(%mac, state = %st.state, progress = ?st.progress, "client status");
                if let Some(ip) = peer_ip {
                    ctx.registry.set_ip(mac, ip);
                }
                ctx.registry.set_status(mac, st);
                respond(w, "204 No Content", text, b"", true, close)
            }
            Err(e) => {
                let msg = format!("invalid status JSON: {e}\n");
                respond(w, "400 Bad Request", text, msg.as_bytes(), false, close)
            }
        };
    }
    if req.method != "GET" && !head_only {
        return respond(
            w,
            "405 Method Not Allowed",
            text,
            b"method not allowed\n",
            false,
            true,
        );
    }
    if path == "clients" {
        let body = serde_json::to_vec_pretty(&ctx.registry.list()).unwrap_or_default();
        return respond(w, "200 OK", "application/json", &body, head_only, close);
    }
    if let Some(g) = ctx.generated_for(peer_ip, path) {
        info!(%peer, mac = ?g.mac.map(|m| m.to_string()), what = g.what, "served generated {}", path);
        return respond(w, "200 OK", text, g.body.as_bytes(), head_only, close);
    }
    // The raw target, so that `/images/../x` is not normalised into `/x`.
    let resolved = match path.strip_prefix(IMAGES_PREFIX) {
        Some(rel) => match &ctx.images {
            Some(d) => d.resolve(rel),
            None => Err(crate::bundle::ResolveError::NotFound { name: path.into() }),
        },
        None => ctx.bundle.resolve(path),
    };
    let file_path = match resolved {
        Ok(p) => p,
        Err(e) => {
            if e.is_violation() {
                warn!(%peer, path = %req.path, error = %e, "refused http request");
                return respond(w, "403 Forbidden", text, b"forbidden\n", false, close);
            }
            debug!(%peer, path = %req.path, "http file not found");
            return respond(w, "404 Not Found", text, b"not found\n", false, close);
        }
    };
    let mut f = match File::open(&file_path) {
        Ok(f) => f,
        Err(_) => return respond(w, "403 Forbidden", text, b"cannot open\n", false, close),
    };
    let size = f.metadata()?.len();
    let (status, start, len) = match req.range.as_deref().map(|h| parse_range(h, size)) {
        Some(Ok(Some((s, e)))) => ("206 Partial Content", s, e - s + 1),
        Some(Err(())) => {
            let conn = if close { "close" } else { "keep-alive" };
            write!(
                w,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{size}\r\nContent-Length: 0\r\nConnection: {conn}\r\n\r\n"
            )?;
            return w.flush();
        }
        _ => ("200 OK", 0, size),
    };
    let conn = if close { "close" } else { "keep-alive" };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nServer: pxe-server\r\nContent-Type: application/octet-stream\r\nAccept-Ranges: bytes\r\nContent-Length: {len}\r\nConnection: {conn}\r\n"
    );
    if status.starts_with("206") {
        head.push_str(&format!(
            "Content-Range: bytes {start}-{}/{size}\r\n",
            start + len - 1
        ));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    if head_only {
        return w.flush();
    }
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(start))?;
    let copied = std::io::copy(&mut f.take(len), w)?;
    w.flush()?;
    if let Some(ip) = peer_ip {
        ctx.registry.served_to_ip(ip, path);
    }
    info!(%peer, file = path, bytes = copied, "http file served");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("/boot/52%3A54%3a00.ipxe"),
            "/boot/52:54:00.ipxe"
        );
        assert_eq!(percent_decode("/a%2e%2e/%2E%2E/x"), "/a../../x");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-1000", 100), Ok(Some((0, 99))));
        assert_eq!(parse_range("bytes=50-1000", 100), Ok(Some((50, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=9-1", 100), Err(()));
        assert_eq!(parse_range("bytes=x-1", 100), Err(()));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=-0", 100), Err(()));
    }

    fn ctx(dir: &std::path::Path, policy: &str) -> HttpContext {
        HttpContext {
            bundle: Arc::new(Bundle::unchecked(dir).expect("bundle")),
            policy: Arc::new(RwLock::new(
                Policy::parse(policy, std::path::Path::new("t.toml")).expect("policy"),
            )),
            registry: Arc::new(Registry::default()),
            server_ip: Ipv4Addr::new(10, 0, 0, 1),
            port: 8080,
            cmdline: "console=ttyS0".into(),
            images: None,
        }
    }

    #[test]
    fn generated_files_record_the_asking_address() {
        let t = tempfile::tempdir().expect("tempdir");
        let c = ctx(t.path(), "");
        let mac: Mac = "52:54:00:00:00:01".parse().expect("mac");
        let peer = Ipv4Addr::new(10, 0, 0, 77);
        assert!(c.generated_for(Some(peer), "/grub/grub.cfg").is_some());
        assert!(c.registry.list().is_empty(), "no MAC in that name");
        let g = c
            .generated_for(Some(peer), "grub/52:54:00:00:00:01.cfg")
            .expect("grub config");
        assert_eq!(g.mac, Some(mac));
        let l = c.registry.list();
        assert_eq!((l[0].mac, l[0].ip), (mac, Some(peer)));
        assert_eq!(l[0].served, vec!["grub config"]);
    }

    #[test]
    fn scripts_follow_policy() {
        let t = tempfile::tempdir().expect("tempdir");
        let c = ctx(
            t.path(),
            "default = \"menu\"\n[clients.\"52:54:00:00:00:01\"]\njob = \"restore x.img to /dev/sda then reboot\"\n[clients.\"52:54:00:00:00:02\"]\naction = \"local\"\n",
        );
        let s = c.ipxe_script("52:54:00:00:00:01".parse().expect("mac"));
        assert_eq!(
            s,
            "#!ipxe\nkernel http://10.0.0.1:8080/vmlinuz initrd=initrd.img rescue.server=http://10.0.0.1:8080 \
             rescue.mac=52:54:00:00:00:01 rescue.job=restore rescue.image=x.img rescue.disk=/dev/sda \
             rescue.then=reboot console=ttyS0\ninitrd http://10.0.0.1:8080/initrd.img\nboot\n"
        );
        let l = c.ipxe_script("52:54:00:00:00:02".parse().expect("mac"));
        assert!(l.contains("exit") && !l.contains("kernel"), "{l}");
        let m = c.ipxe_script("52:54:00:00:00:03".parse().expect("mac"));
        assert!(m.contains("choose --default rescue"), "{m}");
        let g = c.grub_config("52:54:00:00:00:01".parse().expect("mac"));
        assert!(
            g.contains("linux (tftp,10.0.0.1)/vmlinuz rescue.server=http://10.0.0.1:8080 "),
            "{g}"
        );
        // GRUB asks TFTP for /grub/grub.cfg, which loads the client's own.
        let first = c.generated("/grub/grub.cfg").expect("first config");
        assert_eq!(first.mac, None);
        assert!(
            first.body.contains("source $prefix/${net_default_mac}.cfg"),
            "{first:?}"
        );
        let own = c
            .generated("grub/52:54:00:00:00:01.cfg")
            .expect("own config");
        assert_eq!(own.body, g);
        assert_eq!(own.mac, Some("52:54:00:00:00:01".parse().expect("mac")));
        let script = c.generated("boot/52-54-00-00-00-01.ipxe").expect("script");
        assert_eq!(script.body, s);
        assert_eq!(c.generated("boot/not-a-mac.ipxe"), None);
        assert_eq!(c.generated("vmlinuz"), None);
    }
}
