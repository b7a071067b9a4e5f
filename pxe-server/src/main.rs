//! `pxe-server`: parses arguments, calls the library, maps errors to exit codes.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};

use pxe_server::bundle::{Bundle, DEBIAN_LOADERS};
use pxe_server::clients::{format_client, format_table, ClientRecord};
use pxe_server::leases::parse_range_spec;
use pxe_server::server::{self, Control, ModeChoice, ServerConfig, ServerError};

/// Exit codes (STYLE.md): 0 ok, 1 failed, 2 usage, 3 refused.
const EXIT_FAILED: u8 = 1;
const EXIT_REFUSED: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "pxe-server",
    version,
    about = "Network-boot the rescue environment: proxyDHCP or full DHCP, TFTP, HTTP",
    args_conflicts_with_subcommands = true,
    after_help = "Policy file (TOML): default = \"menu|rescue|local\", cmdline = \"...\",\n\
                  [groups.NAME] macs = [..] job = \"restore IMG to DISK then poweroff\",\n\
                  [clients.\"MAC\"] action/job/secure_boot/cmdline/ip (reserved, full mode).\n\
                  A job's IMAGE that is not /absolute or a URL is a file under --images,\n\
                  fetched by the client from http://SERVER:PORT/images/IMAGE.\n\
                  SIGHUP reloads the policy."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the clients a running server has seen
    Status {
        /// Base URL of the running server
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        server: String,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
        /// Show one client (by MAC address) with what it was served and
        /// every change of state it reported
        #[arg(long, value_name = "MAC")]
        client: Option<pxe_server::mac::Mac>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// proxyDHCP if another DHCP server answers, else refuse
    Auto,
    /// Boot information only, beside the existing DHCP server
    Proxy,
    /// Hand out addresses from --range too
    Full,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Network interface to serve on
    #[arg(long, short = 'i')]
    interface: Option<String>,
    /// PXE bundle directory (from `image-builder pxe`)
    #[arg(long, conflicts_with_all = ["kernel", "initrd"])]
    bundle: Option<PathBuf>,
    /// Quick form: kernel to boot (loaders from Debian packages)
    #[arg(long, requires = "initrd")]
    kernel: Option<PathBuf>,
    /// Quick form: initramfs to boot
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    /// Quick form: arm64 kernel for arm64 UEFI clients (with --arm64-initrd
    /// and --arm64-loader; without them arm64 clients are refused)
    #[arg(long, requires_all = ["kernel", "arm64_initrd", "arm64_loader"])]
    arm64_kernel: Option<PathBuf>,
    /// Quick form: arm64 initramfs
    #[arg(long, requires = "arm64_kernel")]
    arm64_initrd: Option<PathBuf>,
    /// Quick form: iPXE for arm64 UEFI (iPXE's bin-arm64-efi/snp.efi)
    #[arg(long, requires = "arm64_kernel")]
    arm64_loader: Option<PathBuf>,
    /// Extra kernel command line for every client
    #[arg(long, default_value = "")]
    cmdline: String,
    #[arg(long, value_enum, default_value = "auto")]
    mode: Mode,
    /// Address range for full mode, e.g. 192.168.50.100-192.168.50.200;
    /// A-B/PREFIX for clients behind DHCP relay agents (repeatable)
    #[arg(long)]
    range: Vec<String>,
    /// Boot policy file (TOML)
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Directory of disk images, served read-only over HTTP at
    /// /images/PATH; a restore job's relative IMAGE is a file here
    #[arg(long, value_name = "DIR")]
    images: Option<PathBuf>,
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// Lease file for full mode (its directory must be writable)
    #[arg(long, default_value = "/var/lib/pxe-server/leases.json")]
    lease_file: PathBuf,
    /// Router to hand out in full mode
    #[arg(long)]
    router: Option<Ipv4Addr>,
    /// DNS server to hand out in full mode (repeatable)
    #[arg(long)]
    dns: Vec<Ipv4Addr>,
    /// Seconds to wait for another DHCP server at start
    #[arg(long, default_value_t = 4.0)]
    probe_wait: f64,
    /// Largest TFTP block size to accept, up to 65464 (1468 fits a 1500
    /// MTU unfragmented)
    #[arg(long, default_value_t = 1468)]
    max_blksize: u16,
    /// Do not send IPv6 router advertisements (without them iPXE waits
    /// about 16 s for IPv6 on a segment with no IPv6 router)
    #[arg(long)]
    no_ipv6_ra: bool,
    /// Keep capabilities after binding (debugging)
    #[arg(long)]
    keep_privileges: bool,
}

fn main() -> ExitCode {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let r = match cli.command {
        Some(Command::Status { server, json, client }) => status(&server, json, client),
        None => serve(cli.serve),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            let (hint, code) = hint_of(&e);
            if let Some(h) = hint {
                eprintln!("hint: {h}");
            }
            ExitCode::from(code)
        }
    }
}

fn hint_of(e: &anyhow::Error) -> (Option<String>, u8) {
    for cause in e.chain() {
        if let Some(s) = cause.downcast_ref::<ServerError>() {
            let code = match s {
                ServerError::NoDhcpServer { .. } => EXIT_REFUSED,
                _ => EXIT_FAILED,
            };
            return (Some(s.hint()), code);
        }
        if let Some(b) = cause.downcast_ref::<pxe_server::bundle::BundleError>() {
            return (Some(b.hint()), EXIT_FAILED);
        }
        if let Some(l) = cause.downcast_ref::<pxe_server::leases::LeaseError>() {
            return (Some(l.hint().into()), EXIT_FAILED);
        }
    }
    (None, EXIT_FAILED)
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let Some(interface) = a.interface else {
        bail!("--interface is required (e.g. --interface eth1)");
    };
    let bundle = match (&a.bundle, &a.kernel, &a.initrd) {
        (Some(dir), _, _) => {
            Bundle::open_dir(dir).with_context(|| format!("opening bundle {}", dir.display()))?
        }
        (None, Some(k), Some(i)) => {
            let b = Bundle::quick(k, i, DEBIAN_LOADERS)
                .context("collecting kernel, initrd and loaders for the quick form")?;
            match (&a.arm64_kernel, &a.arm64_initrd, &a.arm64_loader) {
                (Some(k), Some(i), Some(l)) => b
                    .with_arm64(k, i, l)
                    .context("adding the arm64 files to the quick form")?,
                _ => b,
            }
        }
        _ => bail!("give --bundle DIR, or --kernel FILE --initrd FILE"),
    };
    let mut cfg = ServerConfig::new(&interface);
    cfg.mode = match a.mode {
        Mode::Auto => ModeChoice::Auto,
        Mode::Proxy => ModeChoice::Proxy,
        Mode::Full => ModeChoice::Full,
    };
    cfg.ranges = a
        .range
        .iter()
        .map(|r| parse_range_spec(r))
        .collect::<Result<_, _>>()
        .context("reading --range")?;
    if matches!(cfg.mode, ModeChoice::Full) {
        // Created (and checked writable) by the server, with a hint.
        cfg.lease_file = Some(a.lease_file.clone());
    }
    cfg.policy_file = a.policy;
    cfg.images = a.images;
    cfg.http_port = a.http_port;
    cfg.router = a.router;
    cfg.dns = a.dns;
    cfg.cmdline = a.cmdline;
    cfg.probe_wait = Duration::from_secs_f64(a.probe_wait.clamp(0.0, 60.0));
    cfg.tftp.max_blksize = a.max_blksize.clamp(512, 65464);
    cfg.ipv6_ra = !a.no_ipv6_ra;

    let control = Control::default();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, control.stop.clone())
            .context("installing signal handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, control.reload.clone())
        .context("installing the SIGHUP handler")?;
    let keep = a.keep_privileges;
    let after_bind = move || {
        if keep {
            return;
        }
        match pxe_server::privs::drop_all_capabilities() {
            Ok(()) => tracing::info!("capabilities dropped"),
            Err(e) => tracing::warn!(error = %e, hint = e.hint(), "capabilities kept"),
        }
    };
    server::run(&cfg, bundle, &control, &after_bind)
        .with_context(|| format!("serving network boot on {interface}"))
}

fn status(server: &str, json: bool, client: Option<pxe_server::mac::Mac>) -> anyhow::Result<()> {
    let hostport = server
        .strip_prefix("http://")
        .context("--server must start with http://")?
        .trim_end_matches('/');
    let mut s = TcpStream::connect(hostport)
        .with_context(|| format!("connecting to pxe-server at {server} (is it running?)"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET /clients HTTP/1.0\r\nHost: {hostport}\r\n\r\n")?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)
        .context("reading the client list")?;
    let text = String::from_utf8_lossy(&resp);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .context("malformed HTTP response")?;
    let clients: Vec<ClientRecord> =
        serde_json::from_str(body).context("decoding the client list")?;
    if let Some(mac) = client {
        let c = clients.iter().find(|c| c.mac == mac).with_context(|| {
            format!("the server has not seen {mac} (`pxe-server status` lists the clients it has seen)")
        })?;
        if json {
            println!("{}", serde_json::to_string_pretty(c)?);
        } else {
            print!("{}", format_client(c));
        }
        return Ok(());
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&clients)?);
    } else {
        print!("{}", format_table(&clients));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every `--flag` a hint tells the user to pass must exist (one named
    /// a `--tftp-port` that never did).
    #[test]
    fn hints_name_only_flags_that_exist() {
        use pxe_server::leases::LeaseError;
        use pxe_server::netif::NetError;
        use std::net::SocketAddr;
        let flags: Vec<String> = Cli::command()
            .get_arguments()
            .filter_map(|a| a.get_long())
            .map(|l| format!("--{l}"))
            .collect();
        let io = || std::io::Error::other("x");
        let addr = SocketAddr::from(([127, 0, 0, 1], 69));
        let ip = Ipv4Addr::new(10, 0, 0, 1);
        let mac = pxe_server::mac::Mac([0x52, 0x54, 0, 0, 0, 1]);
        let mut hints: Vec<String> = vec![
            pxe_server::tftp::server::TftpError::Bind { addr, source: io() }.hint().into(),
            pxe_server::tftp::server::TftpError::Io { addr, source: io() }.hint().into(),
            pxe_server::http::HttpBindError { addr, source: io() }.hint().into(),
            pxe_server::images::ImagesError { path: "x".into(), source: io() }.hint().into(),
            ServerError::NoDhcpServer { interface: "eth1".into(), waited: Duration::ZERO }.hint(),
            ServerError::NoRange { interface: "eth1".into() }.hint(),
            ServerError::RangeOutsideSubnet {
                interface: "eth1".into(),
                start: ip,
                end: ip,
                ip,
                netmask: ip,
            }
            .hint(),
            NetError::NoInterface { name: "x".into(), present: vec![] }.hint(),
            NetError::NoIpv4 { name: "x".into() }.hint(),
            NetError::PortTaken { service: "DHCP", port: 67, culprit: Some("dnsmasq (pid 1)".into()) }.hint(),
            NetError::PortTaken { service: "DHCP", port: 67, culprit: None }.hint(),
            NetError::Socket {
                service: "DHCP",
                iface: "x".into(),
                port: 67,
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            }
            .hint(),
        ];
        for l in [
            LeaseError::BadRange { start: ip, end: ip },
            LeaseError::Write { path: "x".into(), source: io() },
            LeaseError::Dir { path: "x".into(), source: io() },
            LeaseError::NotWritable { path: "x".into(), source: io() },
            LeaseError::ReservationOutside { mac, ip },
            LeaseError::ReservationTwice { ip, first: mac, second: mac },
        ] {
            hints.push(l.hint().into());
        }
        let mut named = 0;
        for h in &hints {
            for (at, _) in h.match_indices("--") {
                let flag: String = h[at..]
                    .chars()
                    .take_while(|c| *c == '-' || c.is_ascii_alphanumeric())
                    .collect();
                assert!(flags.contains(&flag), "hint {h:?} names {flag}, which does not exist");
                named += 1;
            }
        }
        assert!(named >= 4, "the hints name flags: {hints:?}");
    }

    #[test]
    fn cli_is_consistent_and_help_fits_80_columns() {
        Cli::command().debug_assert();
        let help = Cli::command().term_width(80).render_long_help().to_string();
        for line in help.lines() {
            assert!(line.chars().count() <= 80, "too wide: {line}");
        }
    }
}
