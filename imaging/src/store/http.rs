//! Read-only image stores on web servers: HTTP/1.1 range requests
//! (RFC 9110 section 14) over `std::net`, and HTTPS through rustls.
//!
//! Why a small client of our own rather than a general one: the image reader
//! needs exactly one thing, "bytes a..b of this file", with control over what
//! happens when a connection drops halfway (resume at the first missing byte,
//! bounded retries with backoff, refuse when the file changed). That is a few
//! hundred lines over `TcpStream`; it adds no async runtime, and with rustls
//! (ring provider, pure Rust plus ring's own assembly) and built-in Mozilla
//! roots it links statically into the musl `rescue` without OpenSSL or a
//! system CA store, which the live system does not have.
//!
//! Deliberately unsupported: chunked or compressed range responses (we ask
//! for `identity`; servers answer ranges with `Content-Length`), multipart
//! ranges (never requested), proxies, user:password in the URL, HTTP/2.
//! Extra CA certificates (a self-signed PXE server) come from the PEM file
//! named by `RESCUE_CA_FILE`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::{ReadAhead, RemoteFile, Store, StoreError, StoreFile};
use crate::read_at::ReadAt;

/// Attempts per read without progress before giving up.
const ATTEMPTS: u32 = 5;
/// First backoff; doubled after each failed attempt.
const BACKOFF: Duration = Duration::from_millis(200);
/// Retries per read in all, even when each made progress (a server that
/// drops every response after a few bytes must not keep us forever).
const MAX_RETRIES: u32 = 200;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HEADERS: usize = 64 << 10;
const MAX_REDIRECTS: u32 = 5;

pub fn is_http_url(s: &str) -> bool {
    let l = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

/// The store of `http://` and `https://` URLs.
pub struct HttpStore;

impl Store for HttpStore {
    fn open(&self, path: &Path) -> io::Result<StoreFile> {
        let s = path.to_str().ok_or_else(|| StoreError::BadUrl { url: path.display().to_string(), why: "not UTF-8".into() }.into_io())?;
        Ok(StoreFile::Remote(Box::new(HttpFile::open(s).map_err(StoreError::into_io)?)))
    }

    fn can_list(&self) -> bool {
        false
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    tls: bool,
    host: String,
    port: u16,
    /// Request target: absolute path (percent-encoded) and query.
    target: String,
}

impl Url {
    fn parse(s: &str) -> Result<Url, StoreError> {
        let bad = |why: &str| StoreError::BadUrl { url: s.to_string(), why: why.into() };
        let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return Err(bad("only http and https are supported")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = path.split('#').next().unwrap_or("/");
        // Paths of volumes and chain links are made with `Path::join`, which
        // puts a backslash before the file name on Windows; browsers read a
        // backslash in an http(s) URL as a slash (WHATWG URL), and so do we.
        let path = path.replace('\\', "/");
        if authority.contains('@') {
            return Err(bad("user names and passwords in the URL are not supported"));
        }
        let (host, port) = if let Some(h) = authority.strip_prefix('[') {
            // [IPv6]:port
            let (h, after) = h.split_once(']').ok_or_else(|| bad("unclosed [ in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("junk after the host")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None if tls => 443,
            None => 80,
        };
        let mut target = String::with_capacity(path.len());
        for b in path.bytes() {
            // Keep what a request target may hold (RFC 3986 pchar, '/', '?', '%'); encode the rest.
            if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b) {
                target.push(b as char);
            } else {
                target.push_str(&format!("%{b:02X}"));
            }
        }
        Ok(Url { tls, host, port, target })
    }

    fn host_header(&self) -> String {
        let h = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if (self.tls && self.port == 443) || (!self.tls && self.port == 80) {
            h
        } else {
            format!("{h}:{}", self.port)
        }
    }

    /// A `Location` header relative to this URL.
    fn join(&self, loc: &str) -> Result<Url, StoreError> {
        if is_http_url(loc) {
            return Url::parse(loc);
        }
        let scheme = if self.tls { "https" } else { "http" };
        let base = format!("{scheme}://{}", self.host_header());
        if loc.starts_with('/') {
            Url::parse(&format!("{base}{loc}"))
        } else {
            let dir = self.target.rsplit_once('/').map_or("", |(d, _)| d);
            Url::parse(&format!("{base}{dir}/{loc}"))
        }
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

type Conn = BufReader<Stream>;

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CFG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CFG.get_or_init(|| {
        let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        if let Some(f) = std::env::var_os("RESCUE_CA_FILE") {
            use rustls_pki_types::pem::PemObject;
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(&f).map_err(|e| format!("reading RESCUE_CA_FILE {}: {e}", Path::new(&f).display()))?;
            for c in certs {
                let c = c.map_err(|e| format!("reading RESCUE_CA_FILE {}: {e}", Path::new(&f).display()))?;
                roots.add(c).map_err(|e| format!("a certificate in RESCUE_CA_FILE: {e}"))?;
            }
        }
        // ring rather than aws-lc-rs (rustls' default): it builds with a
        // plain C compiler for musl and mingw, no cmake. Its deprecation is
        // about post-quantum key exchange, which image downloads can forgo.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(cfg))
    })
    .clone()
}

fn connect(url: &Url) -> io::Result<Conn> {
    let addrs: Vec<_> = (url.host.as_str(), url.port).to_socket_addrs()?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{} has no address", url.host));
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => {
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                let _ = s.set_nodelay(true);
                let stream = if url.tls {
                    let cfg = tls_config().map_err(io::Error::other)?;
                    let name = rustls_pki_types::ServerName::try_from(url.host.clone()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                    let c = rustls::ClientConnection::new(cfg, name).map_err(io::Error::other)?;
                    Stream::Tls(Box::new(rustls::StreamOwned::new(c, s)))
                } else {
                    Stream::Plain(s)
                };
                return Ok(BufReader::with_capacity(64 << 10, stream));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// POST `body` to `url` (one attempt, bounded by the connect and I/O
/// timeouts) and return the response status: how the live system reports a
/// job's progress to the PXE server. The response body is read and dropped.
pub fn post(url: &str, content_type: &str, body: &[u8]) -> io::Result<u16> {
    let u = Url::parse(url).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let mut c = connect(&u)?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: rescue/{}\r\n\r\n",
        u.target,
        u.host_header(),
        body.len(),
        env!("CARGO_PKG_VERSION")
    );
    let s = c.get_mut();
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.flush()?;
    let mut budget = MAX_HEADERS;
    let status_line = read_line(&mut c, &mut budget)?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|v| v.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("not an HTTP/1.x response: {status_line:?}")))?;
    // The rest (headers, a short body) is not needed; the connection closes.
    let _ = io::copy(&mut c.take(64 << 10), &mut io::sink());
    Ok(status)
}

struct Response {
    status: u16,
    reason: String,
    content_length: Option<u64>,
    /// (first, last, total) of `Content-Range: bytes first-last/total`;
    /// first/last are None for `bytes */total`.
    content_range: Option<(Option<(u64, u64)>, Option<u64>)>,
    close: bool,
    chunked: bool,
    location: Option<String>,
    etag: Option<String>,
    last_modified: Option<String>,
}

fn read_line(c: &mut Conn, budget: &mut usize) -> io::Result<String> {
    let mut line = Vec::new();
    let n = c.by_ref().take(*budget as u64).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
    }
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "response headers too long"));
    }
    *budget -= n;
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

fn parse_content_range(v: &str) -> Option<(Option<(u64, u64)>, Option<u64>)> {
    let v = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = v.split_once('/')?;
    let total = if total.trim() == "*" { None } else { Some(total.trim().parse().ok()?) };
    let range = if range.trim() == "*" {
        None
    } else {
        let (a, b) = range.trim().split_once('-')?;
        Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
    };
    Some((range, total))
}

/// Send `GET` for bytes `[start, end)` and read the response head.
fn request(c: &mut Conn, url: &Url, start: u64, end: u64, if_range: Option<&str>) -> io::Result<Response> {
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nRange: bytes={}-{}\r\nAccept-Encoding: identity\r\nUser-Agent: rescue/{}\r\n",
        url.target,
        url.host_header(),
        start,
        end - 1,
        env!("CARGO_PKG_VERSION")
    );
    if let Some(v) = if_range {
        req.push_str(&format!("If-Range: {v}\r\n"));
    }
    req.push_str("\r\n");
    let s = c.get_mut();
    s.write_all(req.as_bytes())?;
    s.flush()?;
    let mut budget = MAX_HEADERS;
    let status_line = read_line(c, &mut budget)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("not an HTTP/1.x response: {status_line:?}")));
    }
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad status line {status_line:?}")))?;
    let reason = parts.next().unwrap_or("").to_string();
    let mut r = Response {
        status,
        reason,
        content_length: None,
        content_range: None,
        close: version == "HTTP/1.0",
        chunked: false,
        location: None,
        etag: None,
        last_modified: None,
    };
    loop {
        let line = read_line(c, &mut budget)?;
        if line.is_empty() {
            break;
        }
        let Some((k, v)) = line.split_once(':') else { continue };
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => r.content_length = v.parse().ok(),
            "content-range" => r.content_range = parse_content_range(v),
            "connection" => {
                let v = v.to_ascii_lowercase();
                if v.contains("close") {
                    r.close = true;
                } else if v.contains("keep-alive") {
                    r.close = false;
                }
            }
            "transfer-encoding" => r.chunked = !v.eq_ignore_ascii_case("identity"),
            "location" => r.location = Some(v.to_string()),
            "etag" => r.etag = Some(v.to_string()),
            "last-modified" => r.last_modified = Some(v.to_string()),
            _ => {}
        }
    }
    Ok(r)
}

/// Why one attempt failed.
enum Failure {
    /// Worth another attempt (the connection dropped, timed out, was refused).
    Retry(io::Error),
    /// Not worth another attempt.
    Fatal(StoreError),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Retry(e)
    }
}

/// One file on a web server, opened with a range request (which proves the
/// server supports them) and read by range requests. Idle connections are
/// kept for the next read.
pub struct HttpFile {
    url: Url,
    /// As given (shown in messages).
    text: String,
    len: u64,
    /// Strong ETag or Last-Modified of the opened file, sent as `If-Range`
    /// so a file replaced on the server is refused instead of mixed.
    validator: Option<String>,
    idle: Mutex<Vec<Conn>>,
    ahead: ReadAhead,
}

impl HttpFile {
    pub fn open(text: &str) -> Result<HttpFile, StoreError> {
        let mut url = Url::parse(text)?;
        let mut redirects = 0;
        let mut failures = 0;
        let mut delay = BACKOFF;
        loop {
            let attempt = (|| -> Result<Result<(HttpFile, Conn), Url>, Failure> {
                let mut c = connect(&url)?;
                let r = request(&mut c, &url, 0, 1, None)?;
                match r.status {
                    206 => {
                        let (range, total) = r.content_range.ok_or_else(|| Failure::Fatal(StoreError::Protocol { url: text.into(), what: "a range response without Content-Range".into() }))?;
                        let len = total.ok_or_else(|| Failure::Fatal(StoreError::Protocol { url: text.into(), what: "the server does not tell the file's size".into() }))?;
                        if range != Some((0, 0)) {
                            return Err(Failure::Fatal(StoreError::Protocol { url: text.into(), what: format!("asked for byte 0, got {range:?}") }));
                        }
                        let body = r.content_length.ok_or_else(|| Failure::Fatal(StoreError::Protocol { url: text.into(), what: "a range response without Content-Length".into() }))?;
                        let mut sink = [0u8; 1];
                        if body != 1 || r.chunked {
                            return Err(Failure::Fatal(StoreError::Protocol { url: text.into(), what: format!("asked for 1 byte, the server sends {body}") }));
                        }
                        c.read_exact(&mut sink)?;
                        let validator = r.etag.filter(|e| !e.starts_with("W/")).or(r.last_modified);
                        let f = HttpFile { url: url.clone(), text: text.to_string(), len, validator, idle: Mutex::new(Vec::new()), ahead: ReadAhead::default() };
                        Ok(Ok((f, c)))
                    }
                    // An empty file: no byte 0 to send.
                    416 if matches!(r.content_range, Some((None, Some(0)))) => {
                        let f = HttpFile { url: url.clone(), text: text.to_string(), len: 0, validator: None, idle: Mutex::new(Vec::new()), ahead: ReadAhead::default() };
                        Ok(Ok((f, c)))
                    }
                    200 => Err(Failure::Fatal(StoreError::RangeUnsupported { url: text.into() })),
                    301 | 302 | 303 | 307 | 308 => {
                        let loc = r.location.ok_or_else(|| Failure::Fatal(StoreError::Protocol { url: text.into(), what: format!("redirect {} without Location", r.status) }))?;
                        Ok(Err(url.join(&loc).map_err(Failure::Fatal)?))
                    }
                    500..=599 if r.status != 501 => Err(Failure::Retry(io::Error::other(format!("the server answered {} {}", r.status, r.reason)))),
                    s => Err(Failure::Fatal(StoreError::Status { url: text.into(), status: s, reason: r.reason })),
                }
            })();
            match attempt {
                Ok(Ok((f, c))) => {
                    f.give_back(c, false);
                    return Ok(f);
                }
                Ok(Err(next)) => {
                    redirects += 1;
                    if redirects > MAX_REDIRECTS {
                        return Err(StoreError::Protocol { url: text.into(), what: "too many redirects".into() });
                    }
                    tracing::debug!(image = text, to = ?next, "redirected");
                    url = next;
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(e)) => {
                    failures += 1;
                    if failures >= ATTEMPTS {
                        return Err(StoreError::Failed { url: text.into(), start: 0, end: 1, attempts: failures, got: 0, last: e.to_string() });
                    }
                    tracing::info!(image = text, error = %e, "opening failed; retrying");
                    std::thread::sleep(delay);
                    delay *= 2;
                }
            }
        }
    }

    fn give_back(&self, c: Conn, close: bool) {
        if !close {
            if let Ok(mut g) = self.idle.lock() {
                if g.len() < 8 {
                    g.push(c);
                }
            }
        }
    }

    /// One attempt at `[start, start + buf.len())`; `got` counts the bytes
    /// already in `buf` (kept when the attempt fails halfway).
    fn attempt(&self, buf: &mut [u8], start: u64, got: &mut usize) -> Result<(), Failure> {
        let pooled = self.idle.lock().ok().and_then(|mut g| g.pop());
        let fresh = pooled.is_none();
        let mut c = match pooled {
            Some(c) => c,
            None => connect(&self.url)?,
        };
        let from = start + *got as u64;
        let end = start + buf.len() as u64;
        let r = match request(&mut c, &self.url, from, end, self.validator.as_deref()) {
            Ok(r) => r,
            // A kept-alive connection the server closed meanwhile: not a failure.
            Err(_) if !fresh => return self.attempt(buf, start, got),
            Err(e) => return Err(Failure::Retry(e)),
        };
        let fatal = |e: StoreError| Err(Failure::Fatal(e));
        match r.status {
            206 => {}
            200 if self.validator.is_some() => return fatal(StoreError::Changed { url: self.text.clone(), what: "its ETag or date differs".into() }),
            200 => return fatal(StoreError::RangeUnsupported { url: self.text.clone() }),
            500..=599 if r.status != 501 => return Err(Failure::Retry(io::Error::other(format!("the server answered {} {}", r.status, r.reason)))),
            s => return fatal(StoreError::Status { url: self.text.clone(), status: s, reason: r.reason }),
        }
        let want = end - from;
        match r.content_range {
            Some((Some((a, b)), total)) if a == from && b == end - 1 => {
                if total.is_some_and(|t| t != self.len) {
                    return fatal(StoreError::Changed { url: self.text.clone(), what: format!("it now has {} bytes, not {}", total.unwrap_or(0), self.len) });
                }
            }
            other => return fatal(StoreError::Protocol { url: self.text.clone(), what: format!("asked for bytes {from}-{}, got Content-Range {other:?}", end - 1) }),
        }
        if r.chunked || r.content_length != Some(want) {
            return fatal(StoreError::Protocol { url: self.text.clone(), what: format!("asked for {want} bytes, the server sends {:?}", r.content_length) });
        }
        while *got < buf.len() {
            match c.read(&mut buf[*got..]) {
                Ok(0) => return Err(Failure::Retry(io::Error::new(io::ErrorKind::UnexpectedEof, format!("the connection dropped at byte {}", start + *got as u64)))),
                Ok(n) => *got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Failure::Retry(io::Error::new(e.kind(), format!("at byte {}: {e}", start + *got as u64)))),
            }
        }
        self.give_back(c, r.close);
        Ok(())
    }
}

impl RemoteFile for HttpFile {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ReadAt for HttpFile {
    /// Each request costs a round trip (and on some servers a delayed ACK):
    /// sequential readers get read-ahead.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.ahead.read(buf, offset, self.len, &self.text, |b, o| self.fetch(b, o))
    }
}

impl HttpFile {
    /// Fetch `[offset, offset + buf.len())` from the server, resuming after
    /// dropped connections (bounded).
    fn fetch(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        let mut got = 0usize;
        let mut failures = 0u32;
        let mut retries = 0u32;
        let mut delay = BACKOFF;
        loop {
            let before = got;
            match self.attempt(buf, offset, &mut got) {
                Ok(()) => return Ok(()),
                Err(Failure::Fatal(e)) => return Err(e.into_io()),
                Err(Failure::Retry(e)) => {
                    retries += 1;
                    if got > before {
                        // Progress: the connection works, it just dropped.
                        failures = 0;
                        delay = BACKOFF;
                    }
                    failures += 1;
                    if failures >= ATTEMPTS || retries >= MAX_RETRIES {
                        return Err(StoreError::Failed { url: self.text.clone(), start: offset, end, attempts: retries, got: got as u64, last: e.to_string() }.into_io());
                    }
                    tracing::info!(image = %self.text, error = %e, resume_at = offset + got as u64, "read failed; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://127.0.0.1:8080/img/a b.img").expect("url");
        assert_eq!((u.tls, u.host.as_str(), u.port, u.target.as_str()), (false, "127.0.0.1", 8080, "/img/a%20b.img"));
        assert_eq!(u.host_header(), "127.0.0.1:8080");
        let u = Url::parse("HTTPS://[::1]/x").expect("url");
        assert_eq!((u.tls, u.host.as_str(), u.port, u.host_header().as_str()), (true, "::1", 443, "[::1]"));
        assert_eq!(Url::parse("http://h").expect("url").target, "/");
        assert!(Url::parse("ftp://h/x").is_err());
        assert!(Url::parse("http://u:p@h/x").is_err());
        assert!(Url::parse("http://h:99999/x").is_err());
        let base = Url::parse("http://h:81/a/b.img").expect("url");
        assert_eq!(base.join("/c/d").expect("join").target, "/c/d");
        assert_eq!(base.join("c.img").expect("join").target, "/a/c.img");
        assert_eq!(base.join("https://o/x").expect("join").host, "o");
    }

    #[test]
    fn post_sends_the_body_and_returns_the_status() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let mut head = String::new();
            loop {
                let mut line = String::new();
                r.read_line(&mut line).expect("line");
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let len: usize = head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).and_then(|v| v.trim().parse().ok()).expect("length");
            let mut body = vec![0u8; len];
            r.read_exact(&mut body).expect("body");
            s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").expect("answer");
            (head, body)
        });
        let status = post(&format!("http://127.0.0.1:{port}/clients/52:54:00:00:00:01/status"), "application/json", b"{\"state\":\"done\"}").expect("post");
        assert_eq!(status, 204);
        let (head, body) = server.join().expect("server");
        assert!(head.starts_with("POST /clients/52:54:00:00:00:01/status HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("Content-Type: application/json\r\n"), "{head}");
        assert_eq!(body, b"{\"state\":\"done\"}");
        // Nobody listening: an error, quickly.
        drop(std::net::TcpListener::bind("127.0.0.1:0"));
        assert!(post("http://127.0.0.1:1/x", "text/plain", b"").is_err());
    }

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("bytes 0-0/1234"), Some((Some((0, 0)), Some(1234))));
        assert_eq!(parse_content_range("bytes */0"), Some((None, Some(0))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((Some((5, 9)), None)));
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    #[test]
    fn paths_of_urls_keep_their_scheme() {
        // The image reader finds volumes and chain links with Path::parent/join.
        let p = Path::new("http://h:1/dir/x.img");
        let joined = p.parent().expect("parent").join("y.img");
        #[cfg(unix)]
        assert_eq!(joined.to_str(), Some("http://h:1/dir/y.img"));
        // Windows joins with a backslash; the URL parser reads it as a slash.
        let u = Url::parse(joined.to_str().expect("utf-8")).expect("url");
        assert_eq!((u.host.as_str(), u.port, u.target.as_str()), ("h", 1, "/dir/y.img"));
        assert_eq!(Url::parse("http://h/a\\b\\c.img").expect("url").target, "/a/b/c.img");
        assert!(crate::store::is_remote(p));
        assert!(!crate::store::is_remote(Path::new("/tmp/http://x")));
    }
}
