//! Small HTTP/1.1 server on std threads: bundle files with Range support
//! (RFC 9110 section 14), generated iPXE scripts and GRUB configs, and the
//! client status API.
//!
//! Routes:
//! - `GET|HEAD /<bundle file>` (Range: `bytes=a-b`, `a-`, `-n`; one range only)
//! - `GET /boot/<mac>.ipxe[?arch=<buildarch>]` the iPXE script for that
//!   client, naming the kernel of its architecture ([`HttpContext::script_arch`])
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

use crate::bundle::{Bundle, KernelArch};
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

    /// The live system a script for `mac` names. `reported` is the
    /// `arch` query of the script request, iPXE's `${buildarch}` (see
    /// [`crate::boot::script_url`]); it wins over the architecture the
    /// registry remembers from the client's DHCP requests, which wins over
    /// x86-64 (the only kind there was before arm64 bundles). An
    /// unexpanded `${buildarch}` counts as absent. `Err` is the reason the
    /// client must not boot: a build architecture the server has no live
    /// system for, or a bundle without that architecture's kernel/initrd.
    pub fn script_arch(&self, mac: Mac, reported: Option<&str>) -> Result<KernelArch, String> {
        let reported = reported.filter(|r| !r.is_empty() && !r.contains(['$', '{', '}']));
        let arch = match reported {
            Some(r) => KernelArch::from_buildarch(r).ok_or_else(|| {
                format!("iPXE build architecture {r:?} has no live system: only x86-64 and arm64 are served")
            })?,
            None => self.registry.arch(mac).unwrap_or(KernelArch::X86_64),
        };
        let missing = self.bundle.missing_live_system(arch);
        if missing.is_empty() {
            Ok(arch)
        } else {
            Err(format!(
                "{arch} client but the bundle has no {arch} live system (missing {})",
                missing.join(", ")
            ))
        }
    }

    /// [`HttpContext::script_arch`], logging a refusal with its reason.
    fn arch_or_log(
        &self,
        mac: Mac,
        reported: Option<&str>,
        what: &str,
    ) -> Result<KernelArch, String> {
        self.script_arch(mac, reported).inspect_err(|reason| {
            warn!(%mac, %reason, "{what} refuses to boot the client");
        })
    }

    /// The iPXE script for `mac`, following its policy action; `reported`
    /// as for [`HttpContext::script_arch`].
    pub fn ipxe_script(&self, mac: Mac, reported: Option<&str>) -> String {
        let (cmdline, action) = self.cmdline_for(mac);
        let base = self.base_url();
        let arch = match action {
            Action::Local => Ok(KernelArch::X86_64), // no kernel named
            _ => self.arch_or_log(mac, reported, "ipxe script"),
        };
        let boot = match arch {
            Ok(a) => format!(
                "kernel {base}/{k} initrd={i} {cmdline}\ninitrd {base}/{i}\nboot\n",
                k = a.kernel(),
                i = a.initrd()
            ),
            Err(reason) => {
                format!("echo pxe-server: not booting the rescue environment: {reason}\nexit 1\n")
            }
        };
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
    ///
    /// The kernel is the one of the architecture remembered from the
    /// client's DHCP requests (GRUB's TFTP requests carry none), so an
    /// arm64 GRUB would get the arm64 kernel; the bundle's GRUB is x86-64.
    pub fn grub_config(&self, mac: Mac) -> String {
        let (cmdline, action) = self.cmdline_for(mac);
        let arch = match action {
            Action::Local => Ok(KernelArch::X86_64), // no kernel named
            _ => self.arch_or_log(mac, None, "grub config"),
        };
        let entry = match arch {
            Ok(a) => format!(
                "menuentry 'Rescue environment' {{\n  echo 'Loading the rescue environment from {ip}'\n  linux (tftp,{ip})/{k} {cmdline}\n  initrd (tftp,{ip})/{i}\n}}\n",
                ip = self.server_ip,
                k = a.kernel(),
                i = a.initrd()
            ),
            Err(reason) => format!(
                "menuentry 'Rescue environment' {{\n  echo 'pxe-server: not booting the rescue environment: {}'\n  sleep 10\n  exit\n}}\n",
                reason.replace('\'', "")
            ),
        };
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
    ///
    /// `path` may end in a query (`?arch=arm64`, see
    /// [`HttpContext::script_arch`]).
    pub fn generated(&self, path: &str) -> Option<Generated> {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let path = path.trim_start_matches('/');
        let reported = query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("arch=")));
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
                body: self.ipxe_script(mac, reported),
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
    /// After `?`, percent-decoded (`arch=arm64` on script requests).
    query: Option<String>,
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
        query: target.split_once('?').map(|(_, q)| percent_decode(q)),
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
    let target = match &req.query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    if let Some(g) = ctx.generated_for(peer_ip, &target) {
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
    use crate::bundle::names;

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

    /// A context over `dir` holding the x86-64 live system.
    fn ctx(dir: &std::path::Path, policy: &str) -> HttpContext {
        for f in [names::KERNEL, names::INITRD] {
            std::fs::write(dir.join(f), b"x").expect("write");
        }
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
        let s = c.ipxe_script("52:54:00:00:00:01".parse().expect("mac"), None);
        assert_eq!(
            s,
            "#!ipxe\nkernel http://10.0.0.1:8080/vmlinuz initrd=initrd.img rescue.server=http://10.0.0.1:8080 \
             rescue.mac=52:54:00:00:00:01 rescue.job=restore rescue.image=x.img rescue.disk=/dev/sda \
             rescue.then=reboot console=ttyS0\ninitrd http://10.0.0.1:8080/initrd.img\nboot\n"
        );
        let l = c.ipxe_script("52:54:00:00:00:02".parse().expect("mac"), None);
        assert!(l.contains("exit") && !l.contains("kernel"), "{l}");
        let m = c.ipxe_script("52:54:00:00:00:03".parse().expect("mac"), None);
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

    #[test]
    fn scripts_name_the_kernel_of_the_client_architecture() {
        let t = tempfile::tempdir().expect("tempdir");
        let c = ctx(t.path(), "default = \"menu\"\n");
        let arm: Mac = "52:54:00:00:0a:01".parse().expect("mac");
        let x86: Mac = "52:54:00:00:0a:02".parse().expect("mac");
        c.registry.dhcp(
            arm,
            "ARM 64-bit UEFI (11)",
            Some(KernelArch::Arm64),
            "tftp snp-arm64.efi",
            None,
        );
        c.registry.dhcp(
            x86,
            "x64 UEFI (7)",
            Some(KernelArch::X86_64),
            "tftp snponly.efi",
            None,
        );

        // No arm64 live system in the bundle: the arm64 client is refused
        // with the reason, and never handed the x86-64 kernel.
        let refused = c
            .generated("boot/52-54-00-00-0a-01.ipxe")
            .expect("script")
            .body;
        assert!(!refused.contains("kernel "), "{refused}");
        assert!(
            refused.contains(
                "echo pxe-server: not booting the rescue environment: arm64 client but the bundle \
                 has no arm64 live system (missing vmlinuz-arm64, initrd-arm64.img)\nexit 1\n"
            ),
            "{refused}"
        );
        let g = c.grub_config(arm);
        assert!(
            !g.contains("linux ") && g.contains("missing vmlinuz-arm64"),
            "{g}"
        );
        // The iPXE build that asks decides, even against the registry.
        let s = c
            .generated("boot/52-54-00-00-0a-02.ipxe?arch=arm64")
            .expect("script")
            .body;
        assert!(s.contains("no arm64 live system"), "{s}");
        let r = c.script_arch(x86, Some("riscv64")).expect_err("riscv64");
        assert!(
            r.contains("\"riscv64\"") && r.contains("only x86-64 and arm64"),
            "{r}"
        );

        for f in [names::KERNEL_ARM64, names::INITRD_ARM64] {
            std::fs::write(t.path().join(f), b"a").expect("write");
        }
        let arm_kernel = "kernel http://10.0.0.1:8080/vmlinuz-arm64 initrd=initrd-arm64.img ";
        let arm_initrd = "initrd http://10.0.0.1:8080/initrd-arm64.img\n";
        // Remembered from DHCP, or said by iPXE's ${buildarch}.
        for path in [
            "boot/52-54-00-00-0a-01.ipxe",
            "boot/52-54-00-00-0a-01.ipxe?arch=${buildarch}",
            "boot/52-54-00-00-0a-02.ipxe?arch=arm64",
            "boot/52-54-00-00-0a-03.ipxe?arch=arm64",
        ] {
            let s = c.generated(path).expect("script").body;
            assert!(
                s.contains(arm_kernel) && s.contains(arm_initrd),
                "{path}: {s}"
            );
            assert!(
                !s.contains("/vmlinuz ") && !s.contains("/initrd.img"),
                "{path}: {s}"
            );
        }
        let g = c.grub_config(arm);
        assert!(
            g.contains("linux (tftp,10.0.0.1)/vmlinuz-arm64 rescue.server=")
                && g.contains("initrd (tftp,10.0.0.1)/initrd-arm64.img\n"),
            "{g}"
        );
        // x86-64 clients still get the x86-64 files: remembered, reported
        // by a 64-bit or a BIOS (i386) iPXE, or unknown (the default).
        for path in [
            "boot/52-54-00-00-0a-02.ipxe",
            "boot/52-54-00-00-0a-01.ipxe?arch=x86_64",
            "boot/52-54-00-00-0a-01.ipxe?arch=i386",
            "boot/52-54-00-00-0a-03.ipxe",
        ] {
            let s = c.generated(path).expect("script").body;
            assert!(
                s.contains("kernel http://10.0.0.1:8080/vmlinuz initrd=initrd.img ")
                    && s.contains("initrd http://10.0.0.1:8080/initrd.img\n")
                    && !s.contains("arm64"),
                "{path}: {s}"
            );
        }
        assert!(c
            .grub_config(x86)
            .contains("linux (tftp,10.0.0.1)/vmlinuz rescue.server="));

        // The reverse: only arm64 left, an x86-64 client is refused.
        for f in [names::KERNEL, names::INITRD] {
            std::fs::remove_file(t.path().join(f)).expect("rm");
        }
        let s = c
            .generated("boot/52-54-00-00-0a-02.ipxe")
            .expect("script")
            .body;
        assert!(
            s.contains("x86-64 client but the bundle has no x86-64 live system (missing vmlinuz, initrd.img)")
                && !s.contains("kernel "),
            "{s}"
        );
        assert!(c.grub_config(x86).contains("no x86-64 live system"));
    }

    #[test]
    fn script_requests_keep_the_arch_query() {
        // As iPXE sends it after expanding ${buildarch}, and unexpanded.
        let mut r = BufReader::new(loopback_with(
            b"GET /boot/52-54-00-00-0a-01.ipxe?arch=arm64 HTTP/1.1\r\n\r\n\
              GET /boot/52-54-00-00-0a-01.ipxe?arch=%24%7Bbuildarch%7D HTTP/1.1\r\n\r\n",
        ));
        let a = read_head(&mut r).expect("head").expect("request");
        assert_eq!(
            (a.path.as_str(), a.query.as_deref()),
            ("/boot/52-54-00-00-0a-01.ipxe", Some("arch=arm64"))
        );
        let b = read_head(&mut r).expect("head").expect("request");
        assert_eq!(b.query.as_deref(), Some("arch=${buildarch}"));
    }

    /// A connected stream whose peer has sent `bytes` and closed.
    fn loopback_with(bytes: &[u8]) -> TcpStream {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut out = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (inp, _) = l.accept().expect("accept");
        out.write_all(bytes).expect("write");
        drop(out);
        inp
    }
}
