//! `rescue-init`: PID 1 of the live rescue system.
//!
//! Boot: mount proc, sys, devtmpfs, devpts, /run and /tmp; read the kernel
//! command line ([`cmdline`]); load the modules for the hardware present
//! ([`coldplug`]) and, from then on, for hardware that appears
//! ([`hotplug`]); bring up the network when booted from it or asked to
//! ([`net`]: DHCP or a static address); print the kernel uptime; start
//! `rescue` on each console and restart it when it dies; reap orphans.
//!
//! Stop: sync, terminate every process, unmount, `reboot(2)`. Asked for by
//! - `rescue` exiting with [`EXIT_POWEROFF`] (100) or [`EXIT_REBOOT`] (101);
//! - the signals busybox init uses: SIGUSR2 power off, SIGTERM reboot,
//!   SIGUSR1 halt (SIGINT, Ctrl-Alt-Del, reboots); the `poweroff`, `reboot`
//!   and `halt` names of this binary (symlinks in the image) send them;
//! - a file [`REQUEST_FILE`] containing `poweroff`, `reboot` or `halt`;
//! - the end of a one-shot `rescue.run` command (see `rescue.after`).
//!
//! `rescue` gets `RESCUE_LIVE=1`, `RESCUE_CONSOLE`, `RESCUE_NAME=VALUE` for
//! every `rescue.NAME=VALUE` of the command line (`RESCUE_JOB`,
//! `RESCUE_SERVER`, `RESCUE_IMAGE`...), and the `RESCUE_NET_*` variables of
//! [`net::ENV_FILE`] (which it may also read itself, since a lease can
//! arrive or change later).

pub mod cmdline;
pub mod coldplug;
pub mod devnodes;
pub mod hotplug;
pub mod log;
pub mod modules;
pub mod net;
mod sys;

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cmdline::{After, Cmdline};
use log::Log;
pub use sys::Power;

/// `rescue` exit code that asks for power-off.
pub const EXIT_POWEROFF: i32 = 100;
/// `rescue` exit code that asks for a reboot.
pub const EXIT_REBOOT: i32 = 101;
/// Write `poweroff`, `reboot` or `halt` here to stop the machine.
pub const REQUEST_FILE: &str = "/run/rescue-init.request";
/// The program started on the consoles.
pub const RESCUE: &str = "/usr/bin/rescue";
/// The shell, when the image has one.
pub const SHELL: &str = "/bin/sh";

const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

const SIGNALS: [libc::c_int; 6] = [
    libc::SIGCHLD,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGPWR,
];

/// Ask the running PID 1 to stop the machine (the `poweroff`/`reboot`/`halt`
/// applets). `sync` first, as the tools it replaces do.
pub fn request(how: Power) -> std::io::Result<()> {
    sys::sync();
    let sig = match how {
        Power::Off => libc::SIGUSR2,
        Power::Reboot => libc::SIGTERM,
        Power::Halt => libc::SIGUSR1,
    };
    sys::kill(1, sig)
}

/// The `modprobe` applet, for the kernel's `request_module` (it runs
/// `/sbin/modprobe -q -- NAME` to mount a filesystem or find a crypto
/// algorithm): loads the module or alias NAME. Options are ignored; `-r`
/// (remove) is not supported. Returns the exit code.
pub fn modprobe(args: &[String]) -> i32 {
    let log = Log::new();
    let names: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if args.iter().any(|a| a == "-r" || a == "--remove") {
        eprintln!("modprobe: removing modules is not supported here");
        return 1;
    }
    let Some(c) = coldplug::Coldplug::open(&log) else {
        return 1;
    };
    let mut code = 0;
    for n in names {
        if !c.load_alias(n, &log) {
            code = 1;
        }
    }
    code
}

/// The `sync` applet.
pub fn sync() {
    sys::sync()
}

/// One program supervised on one console.
struct Slot {
    tty: String,
    pid: Option<u32>,
    /// Start times of recent runs, for crash-loop back-off.
    starts: Vec<Instant>,
    next_start: Instant,
}

/// Run as PID 1. Never returns: the end is `reboot(2)`.
pub fn run_pid1() -> ! {
    mount_basics();
    // Shared with the network threads for the life of the system.
    let log: &'static Log = Box::leak(Box::new(Log::new()));
    log.open_file();
    std::env::set_var("PATH", PATH);
    std::env::set_var("HOME", "/root");
    let _ = fs::create_dir_all("/root");
    let cmdline = Cmdline::parse(&fs::read_to_string("/proc/cmdline").unwrap_or_default());
    log.info(&format!("started; {cmdline:?}"));
    if let Err(e) = sys::block_signals(&SIGNALS) {
        log.error(&format!("blocking signals: {e}"));
    }
    if !cmdline.keep_loglevel {
        let _ = fs::write("/proc/sys/kernel/printk", "4 4 1 7");
    }
    // Our own log lines must not be rate-limited away (the kernel allows 10
    // per 5 s from /dev/kmsg by default; coldplug alone logs more).
    let _ = fs::write("/proc/sys/kernel/printk_devkmsg", "on");

    // Listen for uevents before the coldplug scan, so that nothing plugged
    // in meanwhile is missed.
    let uevents = if cmdline.coldplug {
        hotplug::Uevents::open()
            .map_err(|e| log.warn(&format!("uevent socket: {e}; rescanning sysfs instead")))
            .ok()
    } else {
        None
    };
    let mut coldplug = if cmdline.coldplug || !cmdline.modules.is_empty() {
        coldplug::Coldplug::open(log)
    } else {
        None
    };
    if let Some(c) = coldplug.as_mut() {
        let (files, aliases) = c.counts();
        log.info(&format!("{files} module files, {aliases} aliases"));
        for m in &cmdline.modules {
            c.load(m, log);
        }
        if cmdline.coldplug {
            let n = c.scan(log);
            log.info(&format!("coldplug loaded {n} modules"));
        }
    }
    if !cmdline.coldplug {
        coldplug = None;
    }
    // From here on a thread owns the module databases and loads modules for
    // new devices; without the uevent socket, the main loop rescans sysfs.
    let mut coldplug = match (coldplug, uevents) {
        (Some(c), Some(u)) => {
            match u.spawn(c, log) {
                Ok(()) => log.info("hot-plug: loading modules for new devices"),
                Err(e) => log.error(&format!("starting the hot-plug thread: {e}")),
            }
            None
        }
        (c, _) => c,
    };
    let network = cmdline
        .net
        .as_ref()
        .map(|req| net::start(req, &cmdline, log));
    // Device nodes of freshly loaded disk drivers appear asynchronously.
    wait_for_block_devices(Duration::from_millis(1500));
    if let (Some(n), Some(req)) = (&network, &cmdline.net) {
        if n.wait(Duration::from_secs(u64::from(req.wait))).is_empty() {
            log.warn("no network address yet; DHCP goes on in the background");
            console_line(
                &cmdline,
                "rescue-init: no network address yet (DHCP goes on)",
            );
        }
        n.quiet();
    }

    let up = log::uptime().unwrap_or(0.0);
    let banner = format!(
        "kernel up {up:.2} s, starting {}",
        if cmdline.shell { SHELL } else { RESCUE }
    );
    log.info(&banner);
    console_line(&cmdline, &format!("rescue-init: {banner}"));

    if let Some(args) = cmdline.run.clone() {
        let code = run_once(&cmdline, &args, log, coldplug.as_mut());
        log.info(&format!("rescue {} exited with {code}", args.join(" ")));
        console_line(
            &cmdline,
            &format!("rescue-init: rescue {} exited with {code}", args.join(" ")),
        );
        match (code, cmdline.after) {
            // `rescue` asks for it (a job that succeeded and whose policy
            // says so), whatever `rescue.after` says.
            (EXIT_POWEROFF, _) => shutdown(Power::Off, log),
            (EXIT_REBOOT, _) => shutdown(Power::Reboot, log),
            (_, After::PowerOff) => shutdown(Power::Off, log),
            (_, After::Reboot) => shutdown(Power::Reboot, log),
            (_, After::Halt) => shutdown(Power::Halt, log),
            (_, After::Tui) => {}
        }
    }
    supervise(&cmdline, log, coldplug.as_mut())
}

fn mount_basics() {
    let nosuid = libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV;
    let mounts: [(&str, &str, &str, libc::c_ulong, &str); 6] = [
        ("proc", "/proc", "proc", nosuid, ""),
        ("sysfs", "/sys", "sysfs", nosuid, ""),
        ("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755"),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "gid=5,mode=620,ptmxmode=666",
        ),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=0755",
        ),
        (
            "tmpfs",
            "/tmp",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=1777",
        ),
    ];
    for (src, target, fstype, flags, data) in mounts {
        let _ = fs::create_dir_all(target);
        match sys::mount(src, target, fstype, flags, data) {
            Ok(()) => {}
            // Already mounted (e.g. a kernel with DEVTMPFS_MOUNT).
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => eprintln!("rescue-init: mounting {fstype} on {target}: {e}"),
        }
    }
    if Path::new("/sys/firmware/efi/efivars").exists() {
        let _ = sys::mount(
            "efivarfs",
            "/sys/firmware/efi/efivars",
            "efivarfs",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "",
        );
    }
    let _ = fs::create_dir_all("/mnt");
    let _ = std::os::unix::fs::symlink("/proc/self/fd", "/dev/fd");
    static_nodes();
}

/// `/dev/loop-control`, `/dev/fuse`, ... before their modules are loaded
/// ([`devnodes`]): opening one loads its module.
fn static_nodes() {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let alias = Path::new("/lib/modules").join(release.trim()).join("modules.alias");
    for n in devnodes::static_nodes(&fs::read_to_string(alias).unwrap_or_default()) {
        let path = format!("/dev/{}", n.name);
        if Path::new(&path).exists() {
            continue;
        }
        if let Some(parent) = Path::new(&path).parent() {
            let _ = fs::create_dir_all(parent);
        }
        if let Err(e) = sys::mknod(&path, n.block, n.major, n.minor) {
            eprintln!("rescue-init: making {path}: {e}");
        }
    }
}

/// Wait until /sys/block has a disk that is not a ram/loop device, or the
/// timeout passes (machines without disks are fine too).
fn wait_for_block_devices(timeout: Duration) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        let any = fs::read_dir("/sys/block")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                !(n.starts_with("loop") || n.starts_with("ram") || n.starts_with("zram"))
            });
        if any {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Write a line on every console (not only the kernel log, which `quiet`
/// hides).
fn console_line(cmdline: &Cmdline, msg: &str) {
    console_line_to(&cmdline.consoles, msg)
}

pub(crate) fn console_line_to(consoles: &[String], msg: &str) {
    for tty in consoles {
        if let Ok(mut f) = OpenOptions::new().write(true).open(format!("/dev/{tty}")) {
            let _ = f.write_all(format!("{msg}\r\n").as_bytes());
        }
    }
}

fn command_on(
    tty: &str,
    program: &str,
    args: &[String],
    cmdline: &Cmdline,
) -> std::io::Result<Command> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/dev/{tty}"))
    };
    let t = open()?;
    sys::default_winsize(&t, 80, 25);
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::from(t.try_clone()?))
        .stdout(Stdio::from(t.try_clone()?))
        .stderr(Stdio::from(t))
        .current_dir("/root")
        .env(
            "TERM",
            if tty.starts_with("tty") && !tty.starts_with("ttyS") {
                "linux"
            } else {
                "vt220"
            },
        )
        .env("RESCUE_LIVE", "1")
        .env("RESCUE_CONSOLE", tty);
    for (k, v) in net::read_env_file()
        .into_iter()
        .chain(cmdline.params.iter().cloned())
    {
        cmd.env(k, v);
    }
    sys::controlling_tty(&mut cmd);
    Ok(cmd)
}

/// Run `rescue ARGS` once on the primary console; return its exit code.
fn run_once(
    cmdline: &Cmdline,
    args: &[String],
    log: &Log,
    mut coldplug: Option<&mut coldplug::Coldplug>,
) -> i32 {
    let tty = cmdline.primary_console().to_string();
    let pid = match command_on(&tty, RESCUE, args, cmdline).and_then(|mut c| c.spawn()) {
        Ok(child) => child.id(),
        Err(e) => {
            log.error(&format!("starting {RESCUE} on /dev/{tty}: {e}"));
            return 127;
        }
    };
    loop {
        if let Some(sig) = sys::wait_signal(&SIGNALS, Duration::from_secs(2)) {
            handle_power_signal(sig, log);
        }
        while let Some((p, code)) = sys::reap_any() {
            if p == pid {
                return code;
            }
        }
        if let Some(c) = coldplug.as_deref_mut() {
            c.scan(log);
        }
    }
}

fn handle_power_signal(sig: libc::c_int, log: &Log) {
    let how = match sig {
        libc::SIGUSR2 | libc::SIGPWR => Power::Off,
        libc::SIGTERM | libc::SIGINT => Power::Reboot,
        libc::SIGUSR1 => Power::Halt,
        _ => return,
    };
    log.info(&format!("signal {sig}: {how:?}"));
    shutdown(how, log)
}

fn requested() -> Option<Power> {
    let t = fs::read_to_string(REQUEST_FILE).ok()?;
    let _ = fs::remove_file(REQUEST_FILE);
    match t.trim() {
        "poweroff" => Some(Power::Off),
        "reboot" => Some(Power::Reboot),
        "halt" => Some(Power::Halt),
        _ => None,
    }
}

fn supervise(cmdline: &Cmdline, log: &Log, mut coldplug: Option<&mut coldplug::Coldplug>) -> ! {
    let program = if cmdline.shell && Path::new(SHELL).exists() {
        SHELL
    } else {
        RESCUE
    };
    if cmdline.shell && program != SHELL {
        log.warn(&format!(
            "rescue.shell asked for, but this image has no {SHELL}"
        ));
    }
    let now = Instant::now();
    let mut slots: Vec<Slot> = cmdline
        .consoles
        .iter()
        .map(|t| Slot {
            tty: t.clone(),
            pid: None,
            starts: Vec::new(),
            next_start: now,
        })
        .collect();
    let mut by_pid: HashMap<u32, usize> = HashMap::new();
    let mut last_scan = Instant::now();
    loop {
        for (i, s) in slots.iter_mut().enumerate() {
            if s.pid.is_some() || Instant::now() < s.next_start {
                continue;
            }
            s.starts.retain(|t| t.elapsed() < Duration::from_secs(30));
            s.starts.push(Instant::now());
            match command_on(&s.tty, program, &[], cmdline).and_then(|mut c| c.spawn()) {
                Ok(child) => {
                    log.info(&format!(
                        "started {program} on /dev/{} (pid {})",
                        s.tty,
                        child.id()
                    ));
                    s.pid = Some(child.id());
                    by_pid.insert(child.id(), i);
                }
                Err(e) => {
                    log.error(&format!("starting {program} on /dev/{}: {e}", s.tty));
                    s.next_start = Instant::now() + Duration::from_secs(10);
                }
            }
        }
        if let Some(sig) = sys::wait_signal(&SIGNALS, Duration::from_secs(2)) {
            handle_power_signal(sig, log);
        }
        while let Some((pid, code)) = sys::reap_any() {
            let Some(i) = by_pid.remove(&pid) else {
                continue;
            }; // an orphan
            let s = &mut slots[i];
            s.pid = None;
            log.info(&format!("{program} on /dev/{} exited with {code}", s.tty));
            match code {
                EXIT_POWEROFF => shutdown(Power::Off, log),
                EXIT_REBOOT => shutdown(Power::Reboot, log),
                _ => {}
            }
            // Five starts within 30 s: something is wrong, slow down.
            let delay = if s.starts.len() >= 5 {
                Duration::from_secs(10)
            } else {
                Duration::from_millis(500)
            };
            s.next_start = Instant::now() + delay;
        }
        if let Some(how) = requested() {
            shutdown(how, log);
        }
        if last_scan.elapsed() >= Duration::from_secs(2) {
            last_scan = Instant::now();
            if let Some(c) = coldplug.as_deref_mut() {
                c.scan(log);
            }
        }
    }
}

/// Stop everything and the machine: terminate processes, unmount, sync,
/// `reboot(2)`.
pub fn shutdown(how: Power, log: &Log) -> ! {
    log.info(&format!("stopping the machine: {how:?}"));
    sys::sync();
    let _ = sys::kill(-1, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        while sys::reap_any().is_some() {}
        if !others_alive() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = sys::kill(-1, libc::SIGKILL);
    while sys::reap_any().is_some() {}
    unmount_all(log);
    sys::sync();
    let e = sys::reboot(how);
    log.error(&format!("reboot(2) failed: {e}"));
    // PID 1 must not exit (the kernel would panic): wait forever.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn others_alive() -> bool {
    let me = std::process::id().to_string();
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.bytes().all(|b| b.is_ascii_digit())
            && n != me
            // Kernel threads have an empty cmdline.
            && fs::read(e.path().join("cmdline")).is_ok_and(|c| !c.is_empty())
        })
}

fn unmount_all(log: &Log) {
    let keep = ["/", "/proc", "/sys", "/dev", "/dev/pts", "/run"];
    let Ok(mounts) = fs::read_to_string("/proc/mounts") else {
        return;
    };
    let targets: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|t| t.replace("\\040", " "))
        .filter(|t| !keep.contains(&t.as_str()) && !t.starts_with("/sys/"))
        .collect();
    for t in targets.iter().rev() {
        if let Err(e) = sys::umount(t, false) {
            log.warn(&format!("unmounting {t}: {e}; detaching it"));
            let _ = sys::umount(t, true);
        }
    }
}
