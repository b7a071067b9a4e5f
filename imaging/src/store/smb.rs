//! Image stores on SMB 2/3 shares (Windows, Samba, NAS boxes), in userspace:
//! `smb://[DOMAIN;]USER@HOST[:PORT]/SHARE/PATH`, or without `USER@` for a
//! guest share (the only sessions allowed to go unsigned).
//!
//! Built on the `smb` crate's threaded client (pure Rust, no async runtime,
//! NTLM through `sspi`, signing and encryption as the server asks), so it
//! needs no kernel CIFS module, no root and no C library: the static musl
//! `rescue` and the WinPE `rescue.exe` carry it. Its TCP transport is
//! patched to set TCP_NODELAY (`third_party/smb-transport/VENDORED.md`).
//!
//! The password never goes in the URL (it would show in logs, image lists and
//! chain catalogs): the caller registers it with [`set_password`] (a prompt,
//! `--smb-password-file`, a saved share), or it comes from
//! `RESCUE_SMB_PASSWORD`. One client per server and user is kept for the
//! whole process; after a dropped connection it is replaced, and reads and
//! writes go on where they stopped (bounded attempts with backoff), so a share
//! that comes back within seconds does not fail a backup or a restore.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use smb::resource::file_util::{ReadAt as SmbReadAt, WriteAt as SmbWriteAt};
use smb::{Client, ClientConfig, CreateOptions, FileAccessMask, FileAttributes, FileCreateArgs, UncPath};

use super::{PathKind, ReadAhead, RemoteFile, RemoteWriter, Store, StoreError, StoreFile};
use crate::read_at::ReadAt;

/// Attempts per operation without progress before giving up.
const ATTEMPTS: u32 = 5;
/// First backoff; doubled after each failed attempt (0.3+0.6+1.2+2.4 s).
const BACKOFF: Duration = Duration::from_millis(300);
/// Replies the server owes us before the client gives up on it.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest single READ or WRITE (the server's limit may be lower). Larger
/// requests need more credits than Samba grants at once, and the client then
/// waits for credits forever: 1 MiB costs 16.
const MAX_IO: usize = 1 << 20;

pub fn is_smb_url(s: &str) -> bool {
    s.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("smb://"))
}

/// A parsed `smb://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmbUrl {
    /// `USER`, or `DOMAIN\USER`.
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub share: String,
    /// Inside the share, `\`-separated, without a leading `\` (empty: the share itself).
    pub path: String,
}

fn decode(s: &str, url: &str) -> Result<String, StoreError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(v) = hex else {
                return Err(StoreError::BadUrl { url: url.into(), why: format!("bad %-escape in {s:?}") });
            };
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| StoreError::BadUrl { url: url.into(), why: "not UTF-8 after %-decoding".into() })
}

/// A name as one segment of a URL path: only `%` needs escaping (the
/// parser reads `%XX`); a name holding `/` or `\\` cannot be on a share.
pub fn escape(name: &str) -> String {
    name.replace('%', "%25")
}

impl SmbUrl {
    pub fn parse(s: &str) -> Result<SmbUrl, StoreError> {
        let bad = |why: &str| StoreError::BadUrl { url: s.to_string(), why: why.to_string() };
        if !is_smb_url(s) {
            return Err(bad("not an smb:// URL"));
        }
        // Windows joins paths with `\`: read it as `/`.
        let rest = s[6..].replace('\\', "/");
        let (auth, path) = rest.split_once('/').unwrap_or((&rest, ""));
        let (userinfo, hostport) = match auth.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, auth),
        };
        let user = match userinfo {
            Some(u) if u.contains(':') => {
                // Never echo the password back.
                let user = u.split_once(':').map_or(u, |(n, _)| n);
                let shown = format!("smb://{user}:***@{hostport}/{path}");
                return Err(StoreError::BadUrl {
                    url: shown,
                    why: "a password does not belong in the URL (it would show in logs and image lists): give it with --smb-password-file, RESCUE_SMB_PASSWORD or at the prompt".into(),
                });
            }
            Some("") => return Err(bad("empty user name before '@'")),
            Some(u) => {
                let u = decode(u, s)?;
                Some(match u.split_once(';') {
                    Some((dom, name)) => format!("{dom}\\{name}"),
                    None => u,
                })
            }
            None => None,
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '[' in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("junk after the IPv6 address")),
            };
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("no server name"));
        }
        let port = match port {
            Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| bad("the port is not a number from 1 to 65535"))?),
            None => None,
        };
        let mut parts = Vec::new();
        for seg in path.split('/').filter(|p| !p.is_empty()) {
            let seg = decode(seg, s)?;
            if seg == "." || seg == ".." {
                return Err(bad("'.' and '..' are not allowed in the path"));
            }
            parts.push(seg);
        }
        if parts.is_empty() {
            return Err(bad("no share name: give smb://HOST/SHARE/PATH"));
        }
        let share = parts.remove(0);
        Ok(SmbUrl { user, host, port, share, path: parts.join("\\") })
    }

    /// The URL again, normalised (shown in messages; holds no secret).
    pub fn display(&self) -> String {
        let mut s = String::from("smb://");
        if let Some(u) = &self.user {
            s.push_str(&escape(&u.replace('\\', ";")));
            s.push('@');
        }
        if self.host.contains(':') {
            s.push_str(&format!("[{}]", self.host));
        } else {
            s.push_str(&self.host);
        }
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s.push('/');
        s.push_str(&escape(&self.share));
        for seg in self.path.split('\\').filter(|p| !p.is_empty()) {
            s.push('/');
            s.push_str(&escape(seg));
        }
        s
    }

    /// The same server, share and user with another path inside the share.
    fn with_path(&self, path: &str) -> SmbUrl {
        SmbUrl { path: path.to_string(), ..self.clone() }
    }

    fn server(&self) -> String {
        match self.port {
            Some(p) if self.host.contains(':') => format!("[{}]:{p}", self.host),
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }

    fn share_unc(&self) -> Result<UncPath, StoreError> {
        let server = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        UncPath::from_str(&format!(r"\\{server}\{}", self.share)).map_err(|e| StoreError::BadUrl { url: self.display(), why: e.to_string() })
    }

    fn unc(&self) -> Result<UncPath, StoreError> {
        let share = self.share_unc()?;
        Ok(if self.path.is_empty() { share } else { share.with_path(&self.path) })
    }

    /// Whom the connection is for: server, port and user.
    fn client_key(&self) -> String {
        format!("{}@{}", self.user.as_deref().unwrap_or(""), self.server())
    }
}

fn passwords() -> &'static Mutex<HashMap<String, String>> {
    static P: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    P.get_or_init(Default::default)
}

/// Use `password` for the user and server of `url` from now on.
pub fn set_password(url: &str, password: &str) -> Result<(), StoreError> {
    let u = SmbUrl::parse(url)?;
    if let Ok(mut g) = passwords().lock() {
        g.insert(u.client_key(), password.to_string());
    }
    Ok(())
}

/// Whether a password is known for the user and server of `url` (given with
/// [`set_password`] or in `RESCUE_SMB_PASSWORD`).
pub fn has_password(url: &str) -> bool {
    let Ok(u) = SmbUrl::parse(url) else { return false };
    password_for(&u).is_some()
}

fn password_for(u: &SmbUrl) -> Option<String> {
    let known = passwords().lock().ok().and_then(|g| g.get(&u.client_key()).cloned());
    known.or_else(|| std::env::var("RESCUE_SMB_PASSWORD").ok())
}

#[derive(Default)]
struct Pool {
    clients: HashMap<String, Arc<Client>>,
    /// `client key` + share, connected on that client.
    shares: HashSet<String>,
}

fn pool() -> &'static Mutex<Pool> {
    static P: OnceLock<Mutex<Pool>> = OnceLock::new();
    P.get_or_init(Default::default)
}

fn lock_pool() -> Result<std::sync::MutexGuard<'static, Pool>, StoreError> {
    pool().lock().map_err(|_| StoreError::Protocol { url: "smb".into(), what: "a thread using the share panicked".into() })
}

/// NT status codes we tell apart (MS-ERREF 2.3).
mod status {
    pub const ACCESS_DENIED: u32 = 0xC000_0022;
    pub const OBJECT_NAME_NOT_FOUND: u32 = 0xC000_0034;
    pub const OBJECT_NAME_COLLISION: u32 = 0xC000_0035;
    pub const OBJECT_PATH_NOT_FOUND: u32 = 0xC000_003A;
    pub const NO_SUCH_USER: u32 = 0xC000_0064;
    pub const WRONG_PASSWORD: u32 = 0xC000_006A;
    pub const LOGON_FAILURE: u32 = 0xC000_006D;
    pub const ACCOUNT_RESTRICTION: u32 = 0xC000_006E;
    pub const PASSWORD_EXPIRED: u32 = 0xC000_0071;
    pub const ACCOUNT_DISABLED: u32 = 0xC000_0072;
    pub const FILE_IS_A_DIRECTORY: u32 = 0xC000_00BA;
    pub const NETWORK_NAME_DELETED: u32 = 0xC000_00C9;
    pub const BAD_NETWORK_NAME: u32 = 0xC000_00CC;
    pub const NOT_A_DIRECTORY: u32 = 0xC000_0103;
    pub const FILE_CLOSED: u32 = 0xC000_0128;
    pub const USER_SESSION_DELETED: u32 = 0xC000_0203;
    pub const NETWORK_SESSION_EXPIRED: u32 = 0xC000_035C;
    pub const DISK_FULL: u32 = 0xC000_007F;
}

fn status_of(e: &smb::Error) -> Option<u32> {
    match e {
        smb::Error::ReceivedErrorMessage(s, _) | smb::Error::UnexpectedMessageStatus(s) => Some(*s),
        _ => None,
    }
}

/// What went wrong with one operation: worth another attempt on a new
/// connection, or final.
enum Failure {
    Retry(String),
    Fatal(io::Error),
}

/// Sort an error of the `smb` crate for `url` (what it was doing: `doing`).
fn classify(url: &SmbUrl, doing: &str, e: smb::Error) -> Failure {
    use status::*;
    let shown = url.display();
    let io_err = |kind: io::ErrorKind, what: String| Failure::Fatal(io::Error::new(kind, StoreError::Smb { url: shown.clone(), what }));
    match status_of(&e) {
        Some(LOGON_FAILURE | NO_SUCH_USER | WRONG_PASSWORD | ACCOUNT_RESTRICTION | PASSWORD_EXPIRED | ACCOUNT_DISABLED) => Failure::Fatal(
            StoreError::Auth { url: shown.clone(), user: url.user.clone().unwrap_or_else(|| "(none)".into()), had_password: password_for(url).is_some() }.into_io(),
        ),
        Some(BAD_NETWORK_NAME) => Failure::Fatal(StoreError::NoShare { url: shown.clone(), share: url.share.clone(), host: url.host.clone() }.into_io()),
        Some(OBJECT_NAME_NOT_FOUND) => io_err(io::ErrorKind::NotFound, format!("{doing}: no such file on the share")),
        Some(OBJECT_PATH_NOT_FOUND) => io_err(io::ErrorKind::NotFound, format!("{doing}: the folder does not exist on the share")),
        Some(OBJECT_NAME_COLLISION) => io_err(io::ErrorKind::AlreadyExists, format!("{doing}: the name is taken on the share")),
        Some(ACCESS_DENIED) => io_err(io::ErrorKind::PermissionDenied, format!("{doing}: the server denied access")),
        Some(FILE_IS_A_DIRECTORY) => io_err(io::ErrorKind::Other, format!("{doing}: it is a folder")),
        Some(NOT_A_DIRECTORY) => io_err(io::ErrorKind::Other, format!("{doing}: a part of the path is a file, not a folder")),
        Some(DISK_FULL) => io_err(io::ErrorKind::Other, format!("{doing}: the share is full")),
        Some(NETWORK_NAME_DELETED | FILE_CLOSED | USER_SESSION_DELETED | NETWORK_SESSION_EXPIRED) => Failure::Retry(format!("{doing}: {e}")),
        Some(_) => io_err(io::ErrorKind::Other, format!("{doing}: {e}")),
        // Our own refusals and bad settings: another connection will not help.
        None if matches!(e, smb::Error::InvalidArgument(_) | smb::Error::InvalidConfiguration(_) | smb::Error::UnsupportedOperation(_) | smb::Error::SspiError(_)) => {
            io_err(io::ErrorKind::Other, format!("{doing}: {e}"))
        }
        // Transport errors, timeouts, a stopped connection: the network or
        // the server went away; a new connection may work.
        None => Failure::Retry(format!("{doing}: {e}")),
    }
}

/// Run `op` with a client connected to the share of `url`, reconnecting
/// after failures that a new connection may cure (bounded, with backoff).
/// `progress` says whether the failed attempt moved forward (then the
/// attempt count starts again).
fn with_client<T>(url: &SmbUrl, doing: &str, mut op: impl FnMut(&Client) -> Result<T, smb::Error>, progress: impl Fn() -> bool) -> io::Result<T> {
    let mut failures = 0;
    let mut delay = BACKOFF;
    loop {
        let client = connect(url)?;
        let e = match op(&client) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        match classify(url, doing, e) {
            Failure::Fatal(e) => return Err(e),
            Failure::Retry(why) => {
                forget(url, &client);
                failures = if progress() { 1 } else { failures + 1 };
                if failures >= ATTEMPTS {
                    return Err(StoreError::Failed { url: url.display(), start: 0, end: 0, attempts: failures, got: 0, last: why }.into_io());
                }
                tracing::info!(url = %url.display(), error = %why, "SMB operation failed; reconnecting");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The pooled client for the server and user of `url`, with its share connected.
fn connect(url: &SmbUrl) -> io::Result<Arc<Client>> {
    let key = url.client_key();
    let share_key = format!("{key}/{}", url.share.to_ascii_lowercase());
    let unc = url.share_unc().map_err(StoreError::into_io)?;
    // No user: guest access. NTLM needs a name; servers that allow guests
    // (Samba's "map to guest = Bad User", Windows with Guest on) map an
    // unknown one like this to their guest account.
    let user = url.user.clone().unwrap_or_else(|| "guest".into());
    let password = password_for(url).unwrap_or_default();
    let mut failures = 0;
    let mut delay = BACKOFF;
    loop {
        let client = {
            let mut p = lock_pool().map_err(StoreError::into_io)?;
            if p.shares.contains(&share_key) {
                if let Some(c) = p.clients.get(&key) {
                    return Ok(c.clone());
                }
            }
            p.clients
                .entry(key.clone())
                .or_insert_with(|| {
                    let mut cfg = ClientConfig::default();
                    cfg.connection.port = url.port;
                    cfg.connection.timeout = Some(IO_TIMEOUT);
                    cfg.connection.client_name = Some("rescue".into());
                    // smb://HOST/SHARE without a user asks for guest access,
                    // which cannot be signed; a named user's sessions always are.
                    cfg.connection.allow_unsigned_guest_access = url.user.is_none();
                    Arc::new(Client::new(cfg))
                })
                .clone()
        };
        match client.share_connect(&unc, &user, password.clone()) {
            Ok(()) => {
                if let Ok(mut p) = lock_pool() {
                    p.shares.insert(share_key);
                }
                return Ok(client);
            }
            Err(e) => {
                // Whatever failed, the next attempt starts on a new
                // connection (one left without credits stays so).
                forget(url, &client);
                match classify(url, "connecting", e) {
                    Failure::Fatal(e) => return Err(e),
                    Failure::Retry(why) => {
                        failures += 1;
                        if failures >= ATTEMPTS {
                            return Err(StoreError::Unreachable { url: url.display(), server: url.server(), why }.into_io());
                        }
                        tracing::info!(url = %url.display(), error = %why, "connecting to the share failed; retrying");
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
    }
}

/// Drop a client whose connection failed, so the next use makes a new one.
fn forget(url: &SmbUrl, client: &Arc<Client>) {
    drop_client(url, Some(client));
}

/// Take the client of `url` out of the pool (only if it is `which`, when
/// given). It is leaked, not dropped: dropping a client logs off its trees
/// and waits for the answer, 30 s on a dead connection, and `close()` can
/// wait forever. A few KiB per lost connection is the better price.
fn drop_client(url: &SmbUrl, which: Option<&Arc<Client>>) {
    let key = url.client_key();
    if let Ok(mut p) = lock_pool() {
        if p.clients.get(&key).is_some_and(|c| which.is_none_or(|w| Arc::ptr_eq(c, w))) {
            if let Some(c) = p.clients.remove(&key) {
                std::mem::forget(c);
            }
            p.shares.retain(|s| !s.starts_with(&format!("{key}/")));
        }
    }
}

/// The largest READ and WRITE the server takes.
fn io_sizes(client: &Client, url: &SmbUrl) -> (usize, usize) {
    let neg = client.get_connection(&url.server()).ok().and_then(|c| c.conn_info().map(|i| (i.negotiation.max_read_size, i.negotiation.max_write_size)));
    let (r, w) = neg.unwrap_or((64 << 10, 64 << 10));
    ((r as usize).clamp(4096, MAX_IO), (w as usize).clamp(4096, MAX_IO))
}

fn url_of(path: &Path) -> io::Result<SmbUrl> {
    let s = path.to_str().ok_or_else(|| StoreError::BadUrl { url: path.display().to_string(), why: "not UTF-8".into() }.into_io())?;
    SmbUrl::parse(s).map_err(StoreError::into_io)
}

fn open_args(access: FileAccessMask) -> FileCreateArgs {
    FileCreateArgs::make_open_existing(access)
}

/// Open `url` on `client`, run `f` on the resource, and close it whatever happened.
fn with_resource<T>(client: &Client, url: &SmbUrl, args: &FileCreateArgs, f: impl FnOnce(&smb::Resource) -> Result<T, smb::Error>) -> Result<T, smb::Error> {
    let unc = url.unc().map_err(|e| smb::Error::InvalidArgument(e.to_string()))?;
    let r = client.create_file(&unc, args)?;
    let out = f(&r);
    let closed = match &r {
        smb::Resource::File(f) => f.close(),
        smb::Resource::Directory(d) => d.close(),
        smb::Resource::Pipe(p) => p.close(),
    };
    let v = out?;
    closed?;
    Ok(v)
}

fn as_file(r: &smb::Resource) -> Result<&smb::File, smb::Error> {
    r.as_file().ok_or_else(|| smb::Error::InvalidArgument("it is a folder, not a file".into()))
}

/// The store of `smb://` URLs.
pub struct SmbStore;

impl Store for SmbStore {
    fn open(&self, path: &Path) -> io::Result<StoreFile> {
        Ok(StoreFile::Remote(Box::new(SmbFile::open(&url_of(path)?)?)))
    }

    fn can_list(&self) -> bool {
        true
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let url = url_of(dir)?;
        let base = url.display();
        let access = FileAccessMask::new().with_generic_read(true);
        let names = with_client(
            &url,
            "listing the folder",
            |c| {
                with_resource(c, &url, &open_args(access), |r| {
                    let d = r.as_dir().ok_or_else(|| smb::Error::InvalidArgument("not a folder".into()))?;
                    let mut names = Vec::new();
                    for e in d.query::<smb::FileDirectoryInformation>("*")? {
                        let e = e?;
                        if !e.file_attributes.directory() {
                            names.push(e.file_name.to_string());
                        }
                    }
                    Ok(names)
                })
            },
            || false,
        )?;
        Ok(names.into_iter().map(|n| PathBuf::from(format!("{}/{}", base.trim_end_matches('/'), escape(&n)))).collect())
    }

    fn is_dir(&self, path: &Path) -> bool {
        let Ok(url) = url_of(path) else { return false };
        if url.path.is_empty() {
            return true;
        }
        let access = FileAccessMask::new().with_file_read_attributes(true);
        with_client(&url, "looking at the path", |c| with_resource(c, &url, &open_args(access), |r| Ok(r.is_dir())), || false).unwrap_or(false)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn RemoteWriter>> {
        Ok(Box::new(SmbWriter::create(url_of(path)?)?))
    }

    fn open_at(&self, path: &Path, at: u64) -> io::Result<Box<dyn RemoteWriter>> {
        Ok(Box::new(SmbWriter::open_at(url_of(path)?, at)?))
    }

    fn rename_noclobber(&self, from: &Path, to: &Path) -> io::Result<()> {
        rename(from, to, false)
    }

    fn rename_replace(&self, from: &Path, to: &Path) -> io::Result<()> {
        rename(from, to, true)
    }

    fn kind(&self, path: &Path) -> io::Result<Option<PathKind>> {
        let url = url_of(path)?;
        if url.path.is_empty() {
            return Ok(Some(PathKind::Dir));
        }
        let access = FileAccessMask::new().with_file_read_attributes(true);
        match with_client(&url, "looking at the path", |c| with_resource(c, &url, &open_args(access), |r| Ok(r.is_dir())), || false) {
            Ok(true) => Ok(Some(PathKind::Dir)),
            Ok(false) => Ok(Some(PathKind::File)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let url = url_of(path)?;
        let args = FileCreateArgs::make_create_new(FileAttributes::new().with_directory(true), CreateOptions::new().with_directory_file(true));
        with_client(&url, "making the folder", |c| with_resource(c, &url, &args, |_| Ok(())), || false)
    }

    fn set_times(&self, path: &Path, modified: SystemTime, accessed: Option<SystemTime>) -> io::Result<()> {
        let url = url_of(path)?;
        let info = || smb::FileBasicInformation {
            // 0: leave as it is.
            creation_time: 0u64.into(),
            last_access_time: accessed.map_or(0, file_time).into(),
            last_write_time: file_time(modified).into(),
            change_time: 0u64.into(),
            file_attributes: FileAttributes::new(),
        };
        let access = FileAccessMask::new().with_file_write_attributes(true);
        with_client(&url, "setting the times", |c| with_resource(c, &url, &open_args(access), |r| handle(r).set_info(info())), || false)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let url = url_of(path)?;
        let access = FileAccessMask::new().with_delete(true);
        with_client(&url, "deleting", |c| with_resource(c, &url, &open_args(access), |r| as_file(r)?.set_info(smb::FileDispositionInformation::default())), || false)
    }
}

/// Rename a file or folder within its share.
fn rename(from: &Path, to: &Path, replace: bool) -> io::Result<()> {
    let (a, b) = (url_of(from)?, url_of(to)?);
    if a.with_path("") != b.with_path("") {
        return Err(io::Error::other(format!("{} and {} are not on the same share", a.display(), b.display())));
    }
    let access = FileAccessMask::new().with_delete(true).with_file_read_attributes(true);
    with_client(
        &a,
        "renaming",
        |c| with_resource(c, &a, &open_args(access), |r| handle(r).set_info(smb::FileRenameInformation { replace_if_exists: replace.into(), root_directory: 0, file_name: b.path.as_str().into() })),
        || false,
    )
}

fn handle(r: &smb::Resource) -> &smb::resource::ResourceHandle {
    match r {
        smb::Resource::File(f) => f,
        smb::Resource::Directory(d) => d,
        smb::Resource::Pipe(p) => p,
    }
}

/// 100 ns units since 1601 (times before 1601 become 1601; 0 would mean "unchanged").
fn file_time(t: SystemTime) -> u64 {
    const TO_1970: i128 = 11_644_473_600 * 10_000_000;
    let since_1970 = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => (d.as_nanos() / 100) as i128,
        Err(e) => -((e.duration().as_nanos() / 100) as i128),
    };
    (since_1970 + TO_1970).clamp(1, u64::MAX as i128) as u64
}

/// An image file on a share, opened for reading.
pub struct SmbFile {
    url: SmbUrl,
    shown: String,
    len: u64,
    chunk: usize,
    /// Replaced after a reconnect.
    file: RwLock<Arc<smb::File>>,
    ahead: ReadAhead,
    /// The server stopped answering: the handle is not closed (a CLOSE on
    /// the dead connection would wait for its 30 s reply timeout).
    dead: std::sync::atomic::AtomicBool,
}

fn open_for_read(url: &SmbUrl) -> io::Result<(smb::File, u64, usize)> {
    let unc = url.unc().map_err(StoreError::into_io)?;
    with_client(
        url,
        "opening",
        |c| {
            let r = c.create_file(&unc, &open_args(FileAccessMask::new().with_generic_read(true)))?;
            match r {
                smb::Resource::File(f) => {
                    let len = match f.query_info::<smb::FileStandardInformation>() {
                        Ok(i) => i.end_of_file,
                        Err(e) => {
                            let _ = f.close();
                            return Err(e);
                        }
                    };
                    Ok((f, len, io_sizes(c, url).0))
                }
                smb::Resource::Directory(d) => {
                    let _ = d.close();
                    Err(smb::Error::InvalidArgument("it is a folder, not a file".into()))
                }
                smb::Resource::Pipe(p) => {
                    let _ = p.close();
                    Err(smb::Error::InvalidArgument("a pipe, not a file".into()))
                }
            }
        },
        || false,
    )
}

impl SmbFile {
    pub fn open(url: &SmbUrl) -> io::Result<SmbFile> {
        let (f, len, chunk) = open_for_read(url)?;
        Ok(SmbFile { shown: url.display(), url: url.clone(), len, chunk, file: RwLock::new(Arc::new(f)), ahead: ReadAhead::default(), dead: false.into() })
    }

    fn current(&self) -> Arc<smb::File> {
        match self.file.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Read exactly `buf` at `offset`, reopening the file on a new
    /// connection when the old one dropped, and going on where it stopped.
    fn fetch(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut got = 0usize;
        let mut failures = 0u32;
        let mut delay = BACKOFF;
        while got < buf.len() {
            let file = self.current();
            let end = (got + self.chunk).min(buf.len());
            match file.read_at(&mut buf[got..end], offset + got as u64) {
                Ok(0) => {
                    return Err(StoreError::Changed { url: self.shown.clone(), what: format!("it ended at byte {}, not {}", offset + got as u64, self.len) }.into_io());
                }
                Ok(n) => {
                    got += n;
                    failures = 0;
                    delay = BACKOFF;
                }
                Err(e) => {
                    failures += 1;
                    if failures >= ATTEMPTS {
                        self.dead.store(true, std::sync::atomic::Ordering::Relaxed);
                        return Err(StoreError::Failed { url: self.shown.clone(), start: offset, end: offset + buf.len() as u64, attempts: failures, got: got as u64, last: e.to_string() }.into_io());
                    }
                    tracing::info!(url = %self.shown, error = %e, resume_at = offset + got as u64, "SMB read failed; reconnecting");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                    if let Err(e) = self.reopen(&file) {
                        self.dead.store(true, std::sync::atomic::Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// Replace `old` (unless another thread did already) by the same file
    /// opened on a fresh connection; refuse a file that changed size.
    fn reopen(&self, old: &Arc<smb::File>) -> io::Result<()> {
        let mut g = match self.file.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if !Arc::ptr_eq(&g, old) {
            return Ok(());
        }
        drop_client(&self.url, None);
        let (f, len, _) = open_for_read(&self.url)?;
        if len != self.len {
            let _ = f.close();
            return Err(StoreError::Changed { url: self.shown.clone(), what: format!("it now has {len} bytes, not {}", self.len) }.into_io());
        }
        // The old handle died with its connection: closing it would wait forever.
        *g = Arc::new(f);
        Ok(())
    }
}

impl Drop for SmbFile {
    fn drop(&mut self) {
        if !self.dead.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = self.current().close();
        }
    }
}

impl RemoteFile for SmbFile {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ReadAt for SmbFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.ahead.read(buf, offset, self.len, &self.shown, |b, o| self.fetch(b, o))
    }
}

/// A new file on a share, written front to back. A dropped connection is
/// retried on a new one (the file is reopened and the failed write sent
/// again at the same offset); the caller renames the file when it is
/// complete, so an interrupted backup never looks like a finished one.
pub struct SmbWriter {
    url: SmbUrl,
    shown: String,
    file: Option<smb::File>,
    pos: u64,
    chunk: usize,
}

impl SmbWriter {
    pub fn create(url: SmbUrl) -> io::Result<SmbWriter> {
        let unc = url.unc().map_err(StoreError::into_io)?;
        let args = FileCreateArgs::make_create_new(FileAttributes::new(), CreateOptions::new());
        let (f, chunk) = with_client(
            &url,
            "creating the file",
            |c| {
                let f = c.create_file(&unc, &args)?.unwrap_file();
                Ok((f, io_sizes(c, &url).1))
            },
            || false,
        )?;
        Ok(SmbWriter { shown: url.display(), url, file: Some(f), pos: 0, chunk })
    }

    /// Reopen an existing file to write from `at` on (what follows is cut off).
    pub fn open_at(url: SmbUrl, at: u64) -> io::Result<SmbWriter> {
        let unc = url.unc().map_err(StoreError::into_io)?;
        let access = FileAccessMask::new().with_generic_read(true).with_generic_write(true);
        let (f, chunk) = with_client(
            &url,
            "reopening the file",
            |c| {
                let f = match c.create_file(&unc, &open_args(access))? {
                    smb::Resource::File(f) => f,
                    smb::Resource::Directory(d) => {
                        let _ = d.close();
                        return Err(smb::Error::InvalidArgument("it is a folder, not a file".into()));
                    }
                    smb::Resource::Pipe(p) => {
                        let _ = p.close();
                        return Err(smb::Error::InvalidArgument("a pipe, not a file".into()));
                    }
                };
                let len = f.query_info::<smb::FileStandardInformation>()?.end_of_file;
                if len < at {
                    let _ = f.close();
                    return Err(smb::Error::InvalidArgument(format!("the file holds {len} bytes, fewer than the {at} to keep")));
                }
                f.set_info(smb::FileEndOfFileInformation { end_of_file: at })?;
                Ok((f, io_sizes(c, &url).1))
            },
            || false,
        )?;
        Ok(SmbWriter { shown: url.display(), url, file: Some(f), pos: at, chunk })
    }

    fn file(&self) -> io::Result<&smb::File> {
        self.file.as_ref().ok_or_else(|| io::Error::other(format!("{}: the file is closed", self.shown)))
    }

    fn reopen(&mut self) -> io::Result<()> {
        // Not closed: a CLOSE on the dead connection waits forever, and the
        // server dropped the handle with the connection anyway.
        drop(self.file.take());
        drop_client(&self.url, None);
        let unc = self.url.unc().map_err(StoreError::into_io)?;
        let access = FileAccessMask::new().with_generic_read(true).with_generic_write(true);
        let f = with_client(&self.url, "reopening the file", |c| Ok(c.create_file(&unc, &open_args(access))?.unwrap_file()), || false)?;
        self.file = Some(f);
        Ok(())
    }
}

impl Write for SmbWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let part = &buf[..buf.len().min(self.chunk)];
        let mut failures = 0u32;
        let mut delay = BACKOFF;
        loop {
            match self.file()?.write_at(part, self.pos) {
                Ok(0) if !part.is_empty() => return Err(io::Error::new(io::ErrorKind::WriteZero, format!("{}: the server took no bytes", self.shown))),
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) => {
                    // A status the server chose (full, denied) is final.
                    if let smb::Error::ReceivedErrorMessage(..) = e {
                        return Err(match classify(&self.url, "writing", e) {
                            Failure::Fatal(e) => e,
                            Failure::Retry(w) => io::Error::other(w),
                        });
                    }
                    failures += 1;
                    if failures >= ATTEMPTS {
                        // Not closed on drop: the connection is dead (see `reopen`).
                        drop(self.file.take());
                        return Err(StoreError::Failed { url: self.shown.clone(), start: self.pos, end: self.pos + part.len() as u64, attempts: failures, got: 0, last: e.to_string() }.into_io());
                    }
                    tracing::info!(url = %self.shown, error = %e, at = self.pos, "SMB write failed; reconnecting");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                    self.reopen()?;
                }
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl RemoteWriter for SmbWriter {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        let f = self.file.take().ok_or_else(|| io::Error::other(format!("{}: the file is closed", self.shown)))?;
        let flushed = f.flush();
        let closed = f.close();
        flushed.map_err(|e| io::Error::other(format!("{}: the server could not commit the file: {e}", self.shown)))?;
        closed.map_err(|e| io::Error::other(format!("{}: closing: {e}", self.shown)))
    }
}

impl Drop for SmbWriter {
    fn drop(&mut self) {
        if let Some(f) = self.file.take() {
            let _ = f.close();
        }
    }
}

/// Check that a share can be reached with its user and password: connect,
/// and list the folder of the URL. Returns how many entries it holds.
pub fn test_location(url: &str) -> io::Result<usize> {
    let u = SmbUrl::parse(url).map_err(StoreError::into_io)?;
    let p = PathBuf::from(u.display());
    SmbStore.list(&p).map(|v| v.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = SmbUrl::parse("smb://tech@nas:4450/images/pc1/a%20b.img").expect("url");
        assert_eq!(u, SmbUrl { user: Some("tech".into()), host: "nas".into(), port: Some(4450), share: "images".into(), path: "pc1\\a b.img".into() });
        assert_eq!(u.display(), "smb://tech@nas:4450/images/pc1/a b.img");
        let u = SmbUrl::parse("SMB://CORP;tech@[fe80::1]/Backups").expect("url");
        assert_eq!((u.user.as_deref(), u.host.as_str(), u.port, u.share.as_str(), u.path.as_str()), (Some("CORP\\tech"), "fe80::1", None, "Backups", ""));
        assert_eq!(u.display(), "smb://CORP;tech@[fe80::1]/Backups");
        assert_eq!(u.server(), "fe80::1");
        // Windows joins with `\`.
        assert_eq!(SmbUrl::parse("smb://h/s\\d\\x.img").expect("url").path, "d\\x.img");
        // A `%` in a name survives a round trip through the shown URL.
        let u = SmbUrl::parse("smb://h/s/50%25%20off/x%2541.txt").expect("url");
        assert_eq!(u.path, "50% off\\x%41.txt");
        assert_eq!(SmbUrl::parse(&u.display()).expect("reparse"), u);
        for bad in ["smb://u:pw@h/s", "smb://h", "smb://h/", "smb:///s", "smb://h:0/s", "smb://h:x/s", "smb://h/s/../x", "smb://@h/s", "http://h/s", "smb://h/s/%zz"] {
            assert!(SmbUrl::parse(bad).is_err(), "{bad} should be refused");
        }
        let pw = SmbUrl::parse("smb://u:pw@h/s").expect_err("password");
        assert!(!pw.to_string().contains("pw@"), "the refusal must not echo the password: {pw}");
    }

    #[test]
    fn passwords_are_per_user_and_server() {
        set_password("smb://alice@10.9.9.1/x", "one").expect("set");
        set_password("smb://bob@10.9.9.1:4450/y/z", "two").expect("set");
        assert_eq!(password_for(&SmbUrl::parse("smb://alice@10.9.9.1/other/f").expect("url")).as_deref(), Some("one"));
        assert_eq!(password_for(&SmbUrl::parse("smb://bob@10.9.9.1:4450/x").expect("url")).as_deref(), Some("two"));
        assert!(password_for(&SmbUrl::parse("smb://bob@10.9.9.1/x").expect("url")).is_none_or(|p| std::env::var("RESCUE_SMB_PASSWORD").ok() == Some(p)));
    }

    #[test]
    fn paths_of_urls_keep_their_shape() {
        let p = Path::new("smb://u@h:1/s/dir/x.img");
        let joined = p.parent().expect("parent").join("y.img");
        let u = SmbUrl::parse(joined.to_str().expect("utf-8")).expect("url");
        assert_eq!((u.host.as_str(), u.port, u.share.as_str(), u.path.as_str()), ("h", Some(1), "s", "dir\\y.img"));
        assert!(crate::store::is_remote(p));
        assert!(!crate::store::is_remote(Path::new("/tmp/smb://x")));
    }
}
