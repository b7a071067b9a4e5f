//! `pxe-server`: parses arguments, calls the library, maps errors to exit codes.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};

use pxe_server::bundle::{Bundle, DEBIAN_LOADERS};
use pxe_server::clients::{format_table, ClientRecord};
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
                  [clients.\"MAC\"] action/job/secure_boot/cmdline. SIGHUP reloads it."
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
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// Lease file for full mode
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
    /// Largest TFTP block size to accept (1468 fits a 1500 MTU)
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
        Some(Command::Status { server, json }) => status(&server, json),
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
        (None, Some(k), Some(i)) => Bundle::quick(k, i, DEBIAN_LOADERS)
            .context("collecting kernel, initrd and loaders for the quick form")?,
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
        if let Some(dir) = a.lease_file.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating lease directory {}", dir.display()))?;
        }
        cfg.lease_file = Some(a.lease_file.clone());
    }
    cfg.policy_file = a.policy;
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

fn status(server: &str, json: bool) -> anyhow::Result<()> {
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

    #[test]
    fn cli_is_consistent_and_help_fits_80_columns() {
        Cli::command().debug_assert();
        let help = Cli::command().term_width(80).render_long_help().to_string();
        for line in help.lines() {
            assert!(line.chars().count() <= 80, "too wide: {line}");
        }
    }
}
