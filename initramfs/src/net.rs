//! Networking of the live system: when the kernel command line asks for it
//! or the machine was booted from the network (see [`crate::cmdline`]),
//! bring up the wired interfaces (or the one named by `BOOTIF=` /
//! `rescue.net=` / `ip=`), run a [`dhcp::Client`] on each in its own thread
//! (or set the static address of `ip=`), and configure what it gets:
//! address and prefix, MTU, the default route and `/etc/resolv.conf` from
//! the first interface that gets an address. The client keeps renewing the
//! lease for as long as the system runs.
//!
//! What the network looks like is written to [`ENV_FILE`] as `KEY=value`
//! lines (`RESCUE_NET_INTERFACE`, `RESCUE_NET_ADDRESS` (CIDR),
//! `RESCUE_NET_GATEWAY`, `RESCUE_NET_DNS`, `RESCUE_NET_DOMAIN`,
//! `RESCUE_NET_DHCP_SERVER`, `RESCUE_NET_NEXT_SERVER`,
//! `RESCUE_NET_BOOT_FILE`, `RESCUE_NET_MAC`, `RESCUE_NET_INTERFACES`, plus
//! the command line's `rescue.NAME=VALUE` as `RESCUE_NAME=VALUE`: the job
//! and the server), values limited to printable ASCII without quotes,
//! backslashes, `$` or backquotes (so `. /run/rescue-init.env` is safe),
//! and passed to `rescue` in its environment (see `command_on` in the
//! crate root).
//!
//! Wired interfaces: `/sys/class/net/*` of type 1 (Ethernet) backed by a
//! device (not `lo`, bridges or tunnels). Deliberately unsupported: IPv6
//! (SLAAC/DHCPv6), Wi-Fi, VLANs and bonding, link-local fallback.

pub mod dhcp;

use std::fs;
use std::io::Read;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::cmdline::{Cmdline, NetMethod, NetRequest, StaticIp};
use crate::log::Log;
use crate::sys;
use dhcp::{Action, Client, Lease};

/// What the network looks like, for `rescue` and scripts.
pub const ENV_FILE: &str = "/run/rescue-init.env";
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// One configured interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configured {
    pub interface: String,
    pub mac: [u8; 6],
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    /// None for a static address.
    pub lease: Option<Lease>,
}

impl Configured {
    /// `eth0 10.0.2.15/24 via 10.0.2.2, dns 10.0.2.3 (DHCP server 10.0.2.2)`
    pub fn summary(&self) -> String {
        let mut s = format!("{} {}/{}", self.interface, self.address, self.prefix);
        if let Some(g) = self.gateway {
            s.push_str(&format!(" via {g}"));
        }
        if !self.dns.is_empty() {
            let d: Vec<String> = self.dns.iter().map(Ipv4Addr::to_string).collect();
            s.push_str(&format!(", dns {}", d.join(" ")));
        }
        match &self.lease {
            Some(l) => s.push_str(&format!(
                " (DHCP server {}, lease {} s)",
                l.server, l.lease_secs
            )),
            None => s.push_str(" (static)"),
        }
        s
    }
}

/// Shared between the interface threads and PID 1's main loop.
#[derive(Default)]
struct State {
    /// Configured interfaces, in the order they got their address; the
    /// first owns the default route and resolv.conf.
    up: Vec<Configured>,
    /// Still looking for the interfaces to configure.
    searching: bool,
    /// Interface threads that gave up (no such interface, socket error).
    failed: usize,
    threads: usize,
    /// While true, news go to the consoles too (not once `rescue` runs).
    console: bool,
}

/// The running network set-up.
pub struct Network {
    state: Arc<(Mutex<State>, Condvar)>,
}

/// Context of the interface threads.
struct Ctx {
    state: Arc<(Mutex<State>, Condvar)>,
    log: &'static Log,
    consoles: Vec<String>,
    params: Vec<(String, String)>,
}

fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Keep a value from the network safe for a `KEY=value` line: printable
/// ASCII without quotes, backslashes, `$` or backquotes.
fn env_safe(v: &str) -> Option<&str> {
    let ok = !v.is_empty()
        && v.len() <= 255
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && !b"'\"\\$`".contains(&b));
    ok.then_some(v)
}

/// The lines of [`ENV_FILE`].
pub fn env_lines(up: &[Configured], params: &[(String, String)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, val: Option<String>| {
        if let Some(val) = val {
            v.push((k.to_string(), val));
        }
    };
    for (k, val) in params {
        put(k, env_safe(val).map(str::to_string));
    }
    if let Some(c) = up.first() {
        put("RESCUE_NET_INTERFACE", Some(c.interface.clone()));
        put("RESCUE_NET_MAC", Some(mac_string(&c.mac)));
        put(
            "RESCUE_NET_ADDRESS",
            Some(format!("{}/{}", c.address, c.prefix)),
        );
        put("RESCUE_NET_GATEWAY", c.gateway.map(|g| g.to_string()));
        let dns: Vec<String> = c.dns.iter().map(Ipv4Addr::to_string).collect();
        put("RESCUE_NET_DNS", (!dns.is_empty()).then(|| dns.join(" ")));
        put(
            "RESCUE_NET_DOMAIN",
            c.domain.as_deref().and_then(env_safe).map(str::to_string),
        );
        if let Some(l) = &c.lease {
            put("RESCUE_NET_DHCP_SERVER", Some(l.server.to_string()));
            put(
                "RESCUE_NET_NEXT_SERVER",
                l.next_server.map(|s| s.to_string()),
            );
            put(
                "RESCUE_NET_BOOT_FILE",
                l.boot_file
                    .as_deref()
                    .and_then(env_safe)
                    .map(str::to_string),
            );
        }
    }
    let all: Vec<String> = up
        .iter()
        .map(|c| format!("{}={}/{}", c.interface, c.address, c.prefix))
        .collect();
    put(
        "RESCUE_NET_INTERFACES",
        (!all.is_empty()).then(|| all.join(" ")),
    );
    v
}

/// `/etc/resolv.conf` for a configuration.
pub fn resolv_conf(c: &Configured) -> String {
    let mut s = format!("# written by rescue-init for {}\n", c.interface);
    if let Some(d) = c.domain.as_deref().and_then(env_safe) {
        s.push_str(&format!("search {d}\n"));
    }
    for d in &c.dns {
        s.push_str(&format!("nameserver {d}\n"));
    }
    s
}

/// Read [`ENV_FILE`] back as pairs (for `rescue`'s environment).
pub fn read_env_file() -> Vec<(String, String)> {
    fs::read_to_string(ENV_FILE)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("RESCUE_"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn write_atomic(path: &str, text: &str) -> std::io::Result<()> {
    let tmp = format!("{path}.tmp");
    if let Some(dir) = Path::new(path).parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)
}

/// Wired interfaces present now, with their MAC addresses.
fn wired_interfaces() -> Vec<(String, [u8; 6])> {
    let mut v: Vec<(String, [u8; 6])> = fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let dir = e.path();
            let kind = fs::read_to_string(dir.join("type")).ok()?;
            if kind.trim() != "1" || !dir.join("device").exists() {
                return None;
            }
            let mac =
                crate::cmdline::parse_mac(fs::read_to_string(dir.join("address")).ok()?.trim())?;
            Some((name, mac))
        })
        .collect();
    v.sort();
    v
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    if fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        b = (t ^ std::process::id()).to_le_bytes();
    }
    u32::from_le_bytes(b)
}

impl Ctx {
    fn console(&self, msg: &str) {
        let on = self.state.0.lock().map(|s| s.console).unwrap_or(false);
        if on {
            crate::console_line_to(&self.consoles, &format!("rescue-init: {msg}"));
        }
    }

    /// Record (or replace) the configuration of an interface; the first one
    /// gets the default route and resolv.conf.
    fn configured(&self, c: Configured) {
        let (lock, cv) = &*self.state;
        let Ok(mut s) = lock.lock() else { return };
        s.up.retain(|u| u.interface != c.interface);
        let first = s.up.is_empty();
        s.up.push(c.clone());
        if first {
            if let Some(g) = c.gateway {
                match sys::add_default_route(g, &c.interface) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => self
                        .log
                        .warn(&format!("default route via {g} on {}: {e}", c.interface)),
                }
            }
            if !c.dns.is_empty() {
                if let Err(e) = write_atomic(RESOLV_CONF, &resolv_conf(&c)) {
                    self.log.warn(&format!("writing {RESOLV_CONF}: {e}"));
                }
            }
        }
        self.write_env(&s.up);
        drop(s);
        cv.notify_all();
    }

    fn unconfigured(&self, interface: &str) {
        if let Ok(mut s) = self.state.0.lock() {
            s.up.retain(|u| u.interface != interface);
            self.write_env(&s.up);
        }
    }

    fn write_env(&self, up: &[Configured]) {
        let text: String = env_lines(up, &self.params)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        if let Err(e) = write_atomic(ENV_FILE, &text) {
            self.log.warn(&format!("writing {ENV_FILE}: {e}"));
        }
    }

    fn give_up(&self, msg: &str) {
        self.log.warn(msg);
        let (lock, cv) = &*self.state;
        if let Ok(mut s) = lock.lock() {
            s.failed += 1;
        }
        cv.notify_all();
    }
}

/// Wait up to `timeout` for `/sys/class/net/IF/carrier` to read 1.
fn wait_carrier(interface: &str, timeout: Duration) -> bool {
    let start = Instant::now();
    let p = format!("/sys/class/net/{interface}/carrier");
    loop {
        if fs::read_to_string(&p).is_ok_and(|c| c.trim() == "1") {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Find the interface a request names, waiting up to `timeout` for it to
/// appear (USB adapters and slow drivers register late).
fn find_interfaces(req: &NetRequest, timeout: Duration) -> Vec<(String, [u8; 6])> {
    let start = Instant::now();
    loop {
        let all = wired_interfaces();
        let found: Vec<(String, [u8; 6])> = all
            .into_iter()
            .filter(|(n, m)| {
                req.interface.as_deref().is_none_or(|i| i == n) && req.mac.is_none_or(|x| x == *m)
            })
            .collect();
        if !found.is_empty() || start.elapsed() >= timeout {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Start networking as `req` says: a thread finds the interfaces (waiting
/// up to `req.wait` seconds for them to appear) and starts one thread per
/// interface. Returns at once.
pub fn start(req: &NetRequest, cmdline: &Cmdline, log: &'static Log) -> Network {
    let state = Arc::new((
        Mutex::new(State {
            console: true,
            searching: true,
            ..State::default()
        }),
        Condvar::new(),
    ));
    let ctx = Arc::new(Ctx {
        state: state.clone(),
        log,
        consoles: cmdline.consoles.clone(),
        params: cmdline.params.clone(),
    });
    ctx.write_env(&[]);
    let req = req.clone();
    let spawned = std::thread::Builder::new()
        .name("net".into())
        .spawn(move || find_and_start(&ctx, &req));
    if let Err(e) = spawned {
        log.error(&format!("starting the network thread: {e}"));
        if let Ok(mut s) = state.0.lock() {
            s.searching = false;
        }
    }
    Network { state }
}

fn find_and_start(ctx: &Arc<Ctx>, req: &NetRequest) {
    let ifaces = find_interfaces(req, Duration::from_secs(u64::from(req.wait.max(1))));
    if ifaces.is_empty() {
        let what = match (&req.interface, &req.mac) {
            (Some(i), _) => format!("interface {i}"),
            (None, Some(m)) => format!("interface with MAC {}", mac_string(m)),
            (None, None) => "wired interface".to_string(),
        };
        ctx.log.warn(&format!(
            "no {what} found: no network (is its driver in the image?)"
        ));
        ctx.console(&format!("no {what} found, no network"));
    }
    // A static address belongs on one interface.
    let ifaces: Vec<(String, [u8; 6])> = match req.method {
        NetMethod::Static(_) => ifaces.into_iter().take(1).collect(),
        NetMethod::Dhcp => ifaces,
    };
    {
        let (lock, cv) = &*ctx.state;
        if let Ok(mut s) = lock.lock() {
            s.threads = ifaces.len();
            s.searching = false;
        }
        cv.notify_all();
    }
    for (name, mac) in ifaces {
        let c = ctx.clone();
        let method = req.method.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("net-{name}"))
            .spawn(move || run_interface(&c, &name, mac, &method));
        if let Err(e) = spawned {
            ctx.give_up(&format!("starting the network thread: {e}"));
        }
    }
}

fn run_interface(ctx: &Ctx, name: &str, mac: [u8; 6], method: &NetMethod) {
    if let Err(e) = sys::link_up(name) {
        return ctx.give_up(&format!("bringing up {name}: {e}"));
    }
    if !wait_carrier(name, Duration::from_secs(5)) {
        ctx.log
            .warn(&format!("{name}: no link yet (cable?), still trying"));
        while !wait_carrier(name, Duration::from_secs(60)) {}
    }
    match method {
        NetMethod::Static(s) => configure_static(ctx, name, mac, s),
        NetMethod::Dhcp => run_dhcp(ctx, name, mac),
    }
}

fn configure_static(ctx: &Ctx, name: &str, mac: [u8; 6], s: &StaticIp) {
    if let Err(e) = sys::set_ipv4(name, s.address, s.prefix) {
        return ctx.give_up(&format!("{name}: setting {}/{}: {e}", s.address, s.prefix));
    }
    let c = Configured {
        interface: name.to_string(),
        mac,
        address: s.address,
        prefix: s.prefix,
        gateway: s.gateway,
        dns: s.dns.clone(),
        domain: None,
        lease: None,
    };
    ctx.log.info(&format!("network {}", c.summary()));
    ctx.console(&format!("network {}", c.summary()));
    ctx.configured(c);
}

fn apply_lease(ctx: &Ctx, name: &str, mac: [u8; 6], l: &Lease) {
    if let Err(e) = sys::set_ipv4(name, l.address, l.prefix) {
        ctx.log
            .warn(&format!("{name}: setting {}/{}: {e}", l.address, l.prefix));
        return;
    }
    if let Some(mtu) = l.mtu {
        if let Err(e) = sys::set_mtu(name, mtu) {
            ctx.log.warn(&format!("{name}: MTU {mtu}: {e}"));
        }
    }
    let c = Configured {
        interface: name.to_string(),
        mac,
        address: l.address,
        prefix: l.prefix,
        gateway: l.router,
        dns: l.dns.clone(),
        domain: l.domain.clone(),
        lease: Some(l.clone()),
    };
    ctx.log.info(&format!("network {}", c.summary()));
    ctx.console(&format!("network {}", c.summary()));
    ctx.configured(c);
}

fn run_dhcp(ctx: &Ctx, name: &str, mac: [u8; 6]) {
    let sock = match sys::udp_socket_on(name, dhcp::CLIENT_PORT) {
        Ok(s) => s,
        Err(e) => return ctx.give_up(&format!("{name}: DHCP socket: {e}")),
    };
    let mut client = Client::new(mac, random_u32(), Instant::now());
    let mut actions = client.start(Instant::now());
    let mut buf = vec![0u8; 1500];
    let mut bound = false;
    loop {
        for a in actions.drain(..) {
            match a {
                Action::Send { to, packet } => send(&sock, ctx, name, to, &packet),
                Action::Bind(l) => {
                    bound = true;
                    apply_lease(ctx, name, mac, &l);
                }
                Action::Unbind => {
                    if bound {
                        ctx.log
                            .warn(&format!("{name}: lease lost, address removed"));
                        let _ = sys::set_ipv4(name, Ipv4Addr::UNSPECIFIED, 0);
                        ctx.unconfigured(name);
                        bound = false;
                    }
                }
            }
        }
        let now = Instant::now();
        let wait = client.deadline().saturating_duration_since(now);
        if wait.is_zero() {
            actions = client.on_timer(now);
            continue;
        }
        let _ = sock.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => actions = client.on_packet(&buf[..n], Instant::now()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                ctx.log.warn(&format!("{name}: DHCP receive: {e}"));
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

fn send(sock: &UdpSocket, ctx: &Ctx, name: &str, to: Ipv4Addr, packet: &[u8]) {
    if let Err(e) = sock.send_to(packet, (to, dhcp::SERVER_PORT)) {
        ctx.log.warn(&format!("{name}: sending DHCP to {to}: {e}"));
    }
}

impl Network {
    /// Wait until an interface is configured, every interface thread gave
    /// up, or `timeout` passed; the configured interfaces.
    pub fn wait(&self, timeout: Duration) -> Vec<Configured> {
        let (lock, cv) = &*self.state;
        let deadline = Instant::now() + timeout;
        let Ok(mut s) = lock.lock() else {
            return Vec::new();
        };
        while s.up.is_empty() && (s.searching || s.failed < s.threads) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match cv.wait_timeout(s, left) {
                Ok((g, _)) => s = g,
                Err(_) => return Vec::new(),
            }
        }
        s.up.clone()
    }

    /// From now on, say nothing on the consoles (`rescue` draws there).
    pub fn quiet(&self) {
        if let Ok(mut s) = self.state.0.lock() {
            s.console = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(lease: bool) -> Configured {
        Configured {
            interface: "eth0".into(),
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
            domain: Some("lab.example".into()),
            lease: lease.then(|| Lease {
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix: 24,
                router: Some(Ipv4Addr::new(10, 0, 2, 2)),
                dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
                domain: Some("lab.example".into()),
                hostname: None,
                mtu: None,
                server: Ipv4Addr::new(10, 0, 2, 2),
                next_server: Some(Ipv4Addr::new(10, 0, 2, 4)),
                tftp_server: None,
                boot_file: Some("rescue/boot.ipxe".into()),
                lease_secs: 86400,
                t1_secs: 43200,
                t2_secs: 75600,
            }),
        }
    }

    #[test]
    fn summary_is_the_boot_test_marker() {
        assert_eq!(
            sample(true).summary(),
            "eth0 10.0.2.15/24 via 10.0.2.2, dns 10.0.2.3 (DHCP server 10.0.2.2, lease 86400 s)"
        );
        assert!(sample(false).summary().ends_with("(static)"));
    }

    #[test]
    fn env_file_lines() {
        let params = [
            ("RESCUE_SERVER".to_string(), "10.0.2.4:8080".to_string()),
            ("RESCUE_JOB".to_string(), "restore-7".to_string()),
        ];
        let lines = env_lines(&[sample(true)], &params);
        let get = |k: &str| lines.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
        assert_eq!(get("RESCUE_SERVER"), Some("10.0.2.4:8080"));
        assert_eq!(get("RESCUE_JOB"), Some("restore-7"));
        assert_eq!(get("RESCUE_NET_ADDRESS"), Some("10.0.2.15/24"));
        assert_eq!(get("RESCUE_NET_MAC"), Some("52:54:00:12:34:56"));
        assert_eq!(get("RESCUE_NET_DHCP_SERVER"), Some("10.0.2.2"));
        assert_eq!(get("RESCUE_NET_NEXT_SERVER"), Some("10.0.2.4"));
        assert_eq!(get("RESCUE_NET_BOOT_FILE"), Some("rescue/boot.ipxe"));
        assert_eq!(get("RESCUE_NET_INTERFACES"), Some("eth0=10.0.2.15/24"));
        // Nothing configured: only the command line's values.
        let lines = env_lines(&[], &[("RESCUE_JOB".into(), "job$(reboot)".into())]);
        assert!(lines.is_empty(), "{lines:?}");
    }

    #[test]
    fn hostile_server_strings_are_dropped() {
        let mut c = sample(true);
        c.domain = Some("x\nnameserver 6.6.6.6".into());
        assert_eq!(
            resolv_conf(&c),
            "# written by rescue-init for eth0\nnameserver 10.0.2.3\n"
        );
        if let Some(l) = c.lease.as_mut() {
            l.boot_file = Some("a'b".into());
        }
        let lines = env_lines(&[c], &[]);
        assert!(lines
            .iter()
            .all(|(k, _)| k != "RESCUE_NET_BOOT_FILE" && k != "RESCUE_NET_DOMAIN"));
        assert_eq!(
            resolv_conf(&sample(false)),
            "# written by rescue-init for eth0\nsearch lab.example\nnameserver 10.0.2.3\n"
        );
    }
}
