//! Wires DHCP, TFTP and HTTP to one interface and runs them until stopped.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tracing::{error, info, warn};

use crate::boot::DhcpMode;
use crate::bundle::Bundle;
use crate::clients::Registry;
use crate::dhcp_server::{self, DhcpContext, Port, ServedSubnet};
use crate::http::{HttpBindError, HttpContext, HttpServer};
use crate::images::{self, ImageDir, ImagesError};
use crate::leases::{LeaseError, LeasePool, RangeSpec, Subnet};
use crate::netif::{self, NetError};
use crate::policy::{Policy, PolicyError};
use crate::tftp::{TftpConfig, TftpServer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeChoice {
    /// Proxy if another DHCP server answers the probe, else refuse.
    Auto,
    Proxy,
    Full,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub interface: String,
    pub mode: ModeChoice,
    /// Full mode: address ranges; one without a prefix must lie in the
    /// interface's subnet, one with a prefix serves clients behind DHCP
    /// relay agents of that subnet.
    pub ranges: Vec<RangeSpec>,
    pub lease_file: Option<PathBuf>,
    pub lease_time: Duration,
    pub policy_file: Option<PathBuf>,
    /// `--images`: disk images served at `/images/` (see [`crate::images`]).
    pub images: Option<PathBuf>,
    pub http_port: u16,
    pub dhcp_port: u16,
    pub proxy_port: u16,
    pub tftp_port: u16,
    /// How long to wait for another DHCP server's offer at start.
    pub probe_wait: Duration,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub cmdline: String,
    pub tftp: TftpConfig,
    /// Send IPv6 router advertisements (see [`crate::ra`]).
    pub ipv6_ra: bool,
}

impl ServerConfig {
    pub fn new(interface: &str) -> Self {
        ServerConfig {
            interface: interface.into(),
            mode: ModeChoice::Auto,
            ranges: Vec::new(),
            lease_file: None,
            lease_time: Duration::from_secs(3600),
            policy_file: None,
            images: None,
            http_port: 8080,
            dhcp_port: 67,
            proxy_port: 4011,
            tftp_port: 69,
            probe_wait: Duration::from_secs(4),
            router: None,
            dns: Vec::new(),
            cmdline: String::new(),
            tftp: TftpConfig::default(),
            ipv6_ra: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Http(#[from] HttpBindError),
    #[error(transparent)]
    Images(#[from] ImagesError),
    #[error("no DHCP server answered on {interface} within {waited:?}, and proxy mode needs one")]
    NoDhcpServer { interface: String, waited: Duration },
    #[error("full mode on {interface} needs --range")]
    NoRange { interface: String },
    #[error("range {start}-{end} is not inside {interface}'s subnet {ip}/{netmask}")]
    RangeOutsideSubnet {
        interface: String,
        start: Ipv4Addr,
        end: Ipv4Addr,
        ip: Ipv4Addr,
        netmask: Ipv4Addr,
    },
    #[error("cannot start thread {name}")]
    Thread {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl ServerError {
    pub fn hint(&self) -> String {
        match self {
            ServerError::Net(e) => e.hint(),
            ServerError::Policy(e) => e.hint().into(),
            ServerError::Lease(e) => e.hint().into(),
            ServerError::Http(e) => e.hint().into(),
            ServerError::Images(e) => e.hint().into(),
            ServerError::NoDhcpServer { .. } => {
                "this segment has no DHCP server: run with --mode full --range FIRST-LAST".into()
            }
            ServerError::NoRange { interface } => {
                format!("add --range FIRST-LAST inside {interface}'s subnet")
            }
            ServerError::RangeOutsideSubnet { .. } => {
                "pick a range inside the interface's subnet, or add /PREFIX for a subnet whose clients come through a DHCP relay agent".into()
            }
            ServerError::Thread { .. } => "the system is out of threads or memory".into(),
        }
    }
}

/// Signals from the binary: stop, and reload the policy (SIGHUP).
#[derive(Debug, Clone, Default)]
pub struct Control {
    pub stop: Arc<AtomicBool>,
    pub reload: Arc<AtomicBool>,
}

/// Binds everything, calls `after_bind` (privilege drop), then serves until
/// `control.stop` is set.
pub fn run(
    cfg: &ServerConfig,
    bundle: Bundle,
    control: &Control,
    after_bind: &dyn Fn(),
) -> Result<(), ServerError> {
    let addr = netif::interface_ipv4(&cfg.interface)?;
    let policy = match &cfg.policy_file {
        Some(p) => Policy::load(p)?,
        None => Policy::default(),
    };
    let image_dir = match &cfg.images {
        Some(d) => Some(Arc::new(ImageDir::open(d)?)),
        None => None,
    };
    warn_about_images(&policy, image_dir.as_deref());
    // Probe before binding 67 ourselves.
    let other = netif::probe_dhcp(&cfg.interface, cfg.probe_wait, addr.ip)?;
    let mode = match (cfg.mode, other.map(|o| o.server)) {
        (ModeChoice::Auto, Some(s)) | (ModeChoice::Proxy, Some(s)) => {
            info!(server = %s, interface = %cfg.interface, "another DHCP server answered: running as proxyDHCP");
            DhcpMode::Proxy
        }
        (ModeChoice::Proxy, None) => {
            warn!(interface = %cfg.interface, "no other DHCP server answered; proxy mode as asked, clients will get no address");
            DhcpMode::Proxy
        }
        (ModeChoice::Auto, None) => {
            return Err(ServerError::NoDhcpServer {
                interface: cfg.interface.clone(),
                waited: cfg.probe_wait,
            })
        }
        (ModeChoice::Full, Some(s)) => {
            warn!(server = %s, "another DHCP server answers on this segment; two full DHCP servers will fight, consider --mode proxy");
            DhcpMode::Full
        }
        (ModeChoice::Full, None) => DhcpMode::Full,
    };
    let grub_finds_server =
        mode == DhcpMode::Full || other.is_some_and(|o| o.next_server == addr.ip);
    if mode == DhcpMode::Proxy {
        let next = other
            .map(|o| o.next_server)
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        if grub_finds_server {
            info!(next_server = %next, "the DHCP server's next-server is this server: Secure Boot clients get shim -> signed GRUB");
        } else {
            info!(
                next_server = %next,
                "Secure Boot clients will be chained to iPXE (boots only with Secure Boot off): signed GRUB 2.06 \
                 finds its server only in the DHCP server's next-server; set it to {} there \
                 (dnsmasq dhcp-boot=,,{}; ISC next-server; udhcpd siaddr) for the signed chain",
                addr.ip, addr.ip
            );
        }
    }
    let local = Subnet::of(addr.ip, addr.netmask);
    let mut subnets: Vec<ServedSubnet> = Vec::new();
    let pool = if mode == DhcpMode::Full {
        let (first, rest) = cfg
            .ranges
            .split_first()
            .ok_or_else(|| ServerError::NoRange {
                interface: cfg.interface.clone(),
            })?;
        let mut p = LeasePool::new(first.start, first.end, cfg.lease_time)?;
        for r in rest {
            p.add_range(r.start, r.end)?;
        }
        for r in &cfg.ranges {
            let subnet = match r.prefix {
                Some(prefix) => Subnet::with_prefix(r.start, prefix),
                None if local.contains(r.start) && local.contains(r.end) => local,
                None => {
                    return Err(ServerError::RangeOutsideSubnet {
                        interface: cfg.interface.clone(),
                        start: r.start,
                        end: r.end,
                        ip: addr.ip,
                        netmask: addr.netmask,
                    })
                }
            };
            if subnets.iter().any(|s| s.subnet == subnet) {
                continue;
            }
            // On a relayed subnet the router is the relay agent unless
            // --router is an address there.
            let router = cfg
                .router
                .filter(|r| subnet == local || subnet.contains(*r));
            if subnet != local {
                info!(%subnet, "serving addresses to clients behind DHCP relay agents");
            }
            subnets.push(ServedSubnet { subnet, router });
        }
        subnets.sort_by_key(|s| s.subnet != local);
        p.exclude(addr.ip);
        p.set_reservations(policy.reservations())?;
        p.set_write_behind();
        if let Some(f) = &cfg.lease_file {
            p.persist_to(f)?;
        }
        Some(Mutex::new(p))
    } else {
        if !policy.reservations().is_empty() {
            warn!("the policy reserves addresses (`ip = ...`), which only full mode hands out: ignored under proxyDHCP");
        }
        None
    };

    let dhcp_sock = netif::udp_on_interface("DHCP", &cfg.interface, cfg.dhcp_port, false)?;
    let proxy_sock =
        netif::udp_on_interface("PXE boot server", &cfg.interface, cfg.proxy_port, false)?;
    let tftp_sock = netif::udp_on_interface("TFTP", &cfg.interface, cfg.tftp_port, false)?;
    // HTTP is scoped like DHCP and TFTP: the boot interface's address, not
    // 0.0.0.0, so the files are not offered on every other network of the
    // machine. Loopback too, for `pxe-server status` on this machine.
    let http_addr = SocketAddr::from((addr.ip, cfg.http_port));
    let status_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, cfg.http_port));
    // Optional: failure to open it only costs boot time, so warn and go on.
    let ra = if cfg.ipv6_ra {
        let mac = netif::interface_mac(&cfg.interface).unwrap_or([0x02, 0, 0, 0, 0, 1]);
        match crate::ra::RaSender::open(&cfg.interface, mac) {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(error = %e, hint = e.hint(), "no IPv6 router advertisements");
                None
            }
        }
    } else {
        None
    };

    let bundle = Arc::new(bundle);
    let policy = Arc::new(RwLock::new(policy));
    let registry = Arc::new(Registry::default());
    // The bundle's command line (its manifest), then the operator's.
    let cmdline = [bundle.cmdline(), cfg.cmdline.trim()]
        .iter()
        .filter(|c| !c.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    let hctx = Arc::new(HttpContext {
        bundle: bundle.clone(),
        policy: policy.clone(),
        registry: registry.clone(),
        server_ip: addr.ip,
        port: cfg.http_port,
        cmdline,
        images: image_dir.clone(),
    });
    let mut http = HttpServer::bind(http_addr, hctx.clone())?;
    if http_addr != status_addr {
        if let Err(e) = http.also_listen(status_addr) {
            warn!(error = %e, source = %e.source, "`pxe-server status` needs --server http://{}:{}", addr.ip, cfg.http_port);
        }
    }
    let mut tcfg = cfg.tftp.clone();
    tcfg.reply_from = Some(addr.ip.into());
    let reg2 = registry.clone();
    let tftp = TftpServer::new(tftp_sock, bundle.clone(), tcfg)
        .with_hook(Arc::new(move |peer, file, _bytes| {
            if let SocketAddr::V4(p) = peer {
                reg2.served_to_ip(*p.ip(), file);
            }
        }))
        .with_generated(Arc::new(move |peer, name| {
            let ip = match peer {
                SocketAddr::V4(p) => Some(*p.ip()),
                SocketAddr::V6(_) => None,
            };
            hctx.generated_for(ip, name).map(|g| g.body.into_bytes())
        }));
    let dctx = Arc::new(DhcpContext {
        mode,
        grub_finds_server,
        server_ip: addr.ip,
        subnets,
        dns: cfg.dns.clone(),
        http_port: cfg.http_port,
        bundle: bundle.clone(),
        policy: policy.clone(),
        registry,
        pool,
    });
    after_bind();
    info!(
        interface = %cfg.interface,
        ip = %addr.ip,
        mode = ?mode,
        http_port = cfg.http_port,
        files = ?bundle.inventory(),
        "pxe-server ready"
    );
    for (arch, missing) in bundle.partial() {
        warn!(%arch, missing = %missing.join(", "), "the bundle's {arch} files are incomplete: {arch} clients will be refused");
    }

    let stop = control.stop.clone();
    let spawn = |name: &'static str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(|source| ServerError::Thread { name, source })
    };
    let mut handles = Vec::new();
    {
        let (c, s) = (dctx.clone(), stop.clone());
        handles.push(spawn(
            "dhcp",
            Box::new(move || {
                if let Err(e) = dhcp_server::serve(&c, &dhcp_sock, Port::Dhcp, &s) {
                    error!(error = %e, "dhcp server stopped");
                }
            }),
        )?);
    }
    {
        let (c, s) = (dctx.clone(), stop.clone());
        handles.push(spawn(
            "pxe-4011",
            Box::new(move || {
                if let Err(e) = dhcp_server::serve(&c, &proxy_sock, Port::ProxyBoot, &s) {
                    error!(error = %e, "port 4011 server stopped");
                }
            }),
        )?);
    }
    {
        let s = stop.clone();
        handles.push(spawn(
            "tftp",
            Box::new(move || {
                if let Err(e) = tftp.run(&s) {
                    error!(error = %e, "tftp server stopped");
                }
            }),
        )?);
    }
    {
        let s = stop.clone();
        handles.push(spawn(
            "http",
            Box::new(move || {
                if let Err(e) = http.run(&s) {
                    error!(error = %e, "http server stopped");
                }
            }),
        )?);
    }
    if let Some(ra) = ra {
        let s = stop.clone();
        handles.push(spawn("ipv6-ra", Box::new(move || ra.run(&s)))?);
    }
    let flush_leases = || {
        if let Some(pool) = &dctx.pool {
            let r = pool.lock().unwrap_or_else(|e| e.into_inner()).flush();
            if let Err(e) = r {
                error!(error = %e, hint = e.hint(), "lease file not written");
            }
        }
    };
    let mut next_flush = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if std::time::Instant::now() >= next_flush {
            flush_leases();
            next_flush = std::time::Instant::now() + Duration::from_millis(500);
        }
        if control.reload.swap(false, Ordering::Relaxed) {
            match &cfg.policy_file {
                Some(p) => match Policy::load(p) {
                    Ok(newp) => {
                        // Reservations first: all or nothing, like the policy.
                        let reserved = match &dctx.pool {
                            Some(pool) => pool
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .set_reservations(newp.reservations()),
                            None => Ok(()),
                        };
                        match reserved {
                            Ok(()) => {
                                warn_about_images(&newp, image_dir.as_deref());
                                *policy.write().unwrap_or_else(|e| e.into_inner()) = newp;
                                info!(file = %p.display(), "policy reloaded");
                            }
                            Err(e) => {
                                error!(error = %e, hint = e.hint(), "policy reload failed, keeping the previous policy")
                            }
                        }
                    }
                    Err(e) => {
                        error!(error = %e, hint = e.hint(), "policy reload failed, keeping the previous policy")
                    }
                },
                None => info!("SIGHUP: no --policy file to reload"),
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for h in handles {
        let _ = h.join();
    }
    flush_leases();
    info!("pxe-server stopped");
    Ok(())
}

/// Logs a warning per restore job whose relative image cannot be served.
fn warn_about_images(policy: &Policy, images: Option<&ImageDir>) {
    for w in images::check_policy(policy, images) {
        warn!("{w}");
    }
}
