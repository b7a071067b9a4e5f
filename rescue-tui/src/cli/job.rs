//! `rescue job`: the unattended job a PXE server gave this machine (on the
//! kernel command line, which `rescue-init` passes on as `RESCUE_*`
//! variables): restore an image to a disk, or back a disk up to a share,
//! reporting progress and the result to the server
//! (`POST {server}/clients/{mac}/status`), then power off or reboot.
//!
//! The job runs the same `rescue restore` / `rescue backup disk` as a
//! technician would type, with `--yes`: the server's policy is the
//! confirmation, and every safety check still applies (a busy or too small
//! disk is refused, and the refusal is reported). A job that fails leaves
//! the machine on (rescue-init then starts the TUI), so someone can look.
//!
//! Names in a job:
//! - IMAGE: an absolute path, an `http(s)://` or `smb://` URL, a saved
//!   share's `NAME:PATH`, or a path relative to the server's image folder
//!   (`pxe-server --images DIR`), fetched as `{server}/images/IMAGE`.
//! - DISK: a device (`/dev/sda`, `/dev/nvme0n1`), or `diskN` / `N`: the Nth
//!   fixed disk of `rescue disks` (USB, removable, loop and read-only disks
//!   are not counted), so one policy fits machines with SATA or NVMe disks.
//! - SHARE: a folder as an `smb://` URL or `NAME:PATH`; the image is named
//!   `MAC-DISK-YYYYMMDD-HHMMSS.rimg` in it.
//!
//! Reports are best effort: a server that does not answer never fails the
//! job (each report is one bounded attempt; the last one gets three).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imaging::inventory::DiskReport;
use imaging::task::Progress;

use super::{usage, CliError, Global, JobArgs, JobKind, JobThen};

/// `rescue-init`'s exit codes for "power off" and "reboot" after a job.
pub const EXIT_POWEROFF: i32 = 100;
pub const EXIT_REBOOT: i32 = 101;

/// Run the job; the exit code asks rescue-init to power off or reboot when
/// the job succeeded and its policy says so.
pub fn run(_g: &Global, a: JobArgs) -> Result<i32, CliError> {
    let server = a.server.as_deref().map(server_url);
    let mac = a.mac.clone().or_else(|| std::env::var("RESCUE_NET_MAC").ok()).filter(|m| !m.is_empty());
    let status_url = match (&server, &mac) {
        (Some(s), Some(m)) => Some(format!("{s}/clients/{m}/status")),
        _ => None,
    };
    // A dry run reports nothing.
    let reporter = Reporter::start(status_url.clone().filter(|_| !a.dry_run), Duration::from_millis(a.report_ms.max(50)));
    if status_url.is_none() && !a.dry_run {
        let missing = if server.is_none() { "rescue.server" } else { "rescue.mac" };
        eprintln!("note: no {missing}: progress is shown here only, not reported to a server");
    }
    let result = plan_argv(&a, server.as_deref(), mac.as_deref()).and_then(|(argv, what, image)| {
        eprintln!("rescue job: {what}");
        reporter.set_message(&what);
        if a.dry_run {
            println!("{}", argv.iter().map(|s| s.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" "));
            return Ok(what);
        }
        if let Some(img) = &image {
            wait_for(img, Duration::from_secs(a.wait), &reporter);
        }
        super::progress::also_report_to(reporter.clone());
        let argv = super::expand_share_names(argv);
        if let Some(folder) = argv.iter().position(|s| s == "-o").and_then(|i| argv.get(i + 1)).and_then(|o| Path::new(o).parent()) {
            // A lab's first backup makes its folder on the share.
            super::shares::prepare(&argv, None)?;
            imaging::store::create_dir_all(folder).map_err(|e| CliError {
                exit: super::Exit::Failed,
                hint: Some("check the share in the policy and that this machine may write there".into()),
                error: anyhow::anyhow!("making the backup folder {}: {e}", folder.display()),
            })?;
        }
        let cli = <super::Cli as clap::Parser>::try_parse_from(&argv).map_err(|e| usage(format!("the job's command line: {e}"), "check the job in the PXE server's policy"))?;
        super::run(cli, &argv).map(|()| what)
    });
    match result {
        Ok(_) if a.dry_run => Ok(0),
        Ok(what) => {
            let then = a.then.map(|t| match t {
                JobThen::Poweroff => ("powering off", EXIT_POWEROFF),
                JobThen::Reboot => ("rebooting", EXIT_REBOOT),
            });
            let msg = match then {
                Some((w, _)) => format!("{what}: done; {w}"),
                None => format!("{what}: done"),
            };
            eprintln!("rescue job: {msg}");
            reporter.finish("done", Some(1.0), &msg);
            Ok(then.map(|t| t.1).unwrap_or(0))
        }
        Err(e) => {
            let mut msg = format!("{:#}", e.error);
            if let Some(h) = &e.hint {
                msg.push_str(&format!(" (hint: {h})"));
            }
            reporter.finish("failed", None, &msg);
            Err(e)
        }
    }
}

/// `http://HOST[:PORT]` from `rescue.server` (a URL, or `HOST[:PORT]`).
fn server_url(s: &str) -> String {
    let s = s.trim().trim_end_matches('/');
    if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    }
}

/// The `rescue` command line that does the job, the job in words, and the
/// image a restore reads.
fn plan_argv(a: &JobArgs, server: Option<&str>, mac: Option<&str>) -> Result<(Vec<std::ffi::OsString>, String, Option<String>), CliError> {
    let kind = a.job.ok_or_else(|| usage("no job: rescue.job (RESCUE_JOB) is not set", "the PXE server's policy gives jobs; or use --job restore|backup"))?;
    let disk_spec = a.target.as_deref().ok_or_else(|| usage("the job names no disk (rescue.disk)", "give the disk in the policy, e.g. `restore IMAGE to disk0`"))?;
    let disks: Vec<DiskReport> = imaging::inventory::list(&[]).into_iter().filter_map(Result::ok).collect();
    let disk = resolve_disk(disk_spec, &disks)?;
    let mut argv: Vec<std::ffi::OsString> = vec!["rescue".into(), "--yes".into()];
    let mut read = None;
    let what = match kind {
        JobKind::Restore => {
            let image = a.image.as_deref().ok_or_else(|| usage("the restore job names no image (rescue.image)", "give the image in the policy, e.g. `restore win10.rimg to disk0`"))?;
            let image = resolve_image(image, server)?;
            argv.extend(["restore".into(), image.clone().into(), "--to".into(), disk.clone().into_os_string()]);
            if let Some(l) = &a.layout {
                argv.extend(["--layout".into(), l.into()]);
            }
            let w = format!("restore {image} to {}", disk.display());
            read = Some(image);
            w
        }
        JobKind::Backup => {
            let share = a.share.as_deref().ok_or_else(|| usage("the backup job names no share (rescue.share)", "give the folder in the policy, e.g. `backup disk0 to smb://nas/images/lab1`"))?;
            let name = image_name(mac, &disk, now());
            let out = format!("{}/{name}", share.trim_end_matches('/'));
            argv.extend(["backup".into(), "disk".into(), disk.clone().into_os_string(), "-o".into(), out.clone().into()]);
            format!("backup {} to {out}", disk.display())
        }
    };
    Ok((argv, what, read))
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `MAC-DISK-YYYYMMDD-HHMMSS.rimg` (UTC), unique per machine, disk and second.
fn image_name(mac: Option<&str>, disk: &Path, ts: u64) -> String {
    let who = mac.map(|m| m.replace(':', "-").to_ascii_lowercase()).unwrap_or_else(|| "machine".into());
    let d = disk.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "disk".into());
    let t = super::show::utc(ts); // "YYYY-MM-DD HH:MM:SS UTC"
    let stamp: String = t.chars().filter(|c| c.is_ascii_digit() || *c == ' ').collect::<String>().replacen(' ', "-", 1).replace(' ', "");
    format!("{who}-{d}-{stamp}.rimg")
}

/// A relative image is in the server's image folder.
fn resolve_image(image: &str, server: Option<&str>) -> Result<String, CliError> {
    let absolute = image.starts_with('/') || image.contains("://") || Path::new(image).is_absolute();
    // A saved share's NAME:PATH (expanded later, like on the command line).
    if absolute || super::shares::share_ref(image).is_some() {
        return Ok(image.to_string());
    }
    let server = server.ok_or_else(|| {
        usage(
            format!("the image {image} is relative to the PXE server's image folder, but no server is known (rescue.server)"),
            "give an absolute path or a URL, or boot from pxe-server --images DIR",
        )
    })?;
    Ok(format!("{server}/images/{}", image.trim_start_matches("./")))
}

/// The disks a job may mean by `diskN`: fixed disks, in `rescue disks` order.
fn fixed(d: &DiskReport) -> bool {
    let i = &d.disk;
    i.kind == imaging::blockdev::DiskKind::Block
        && !i.removable
        && !i.read_only
        && i.size > 0
        && !matches!(i.transport.as_deref(), Some("usb" | "loop"))
        && !i.name.starts_with("loop")
        && !i.name.starts_with("ram")
        && !i.name.starts_with("zram")
}

fn resolve_disk(spec: &str, disks: &[DiskReport]) -> Result<PathBuf, CliError> {
    let n = spec.strip_prefix("disk").unwrap_or(spec);
    if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
        let i: usize = n.parse().map_err(|_| usage(format!("disk {spec}: not a disk number"), "use disk0, disk1, ... or a device like /dev/sda"))?;
        let list: Vec<&DiskReport> = disks.iter().filter(|d| fixed(d)).collect();
        return list.get(i).map(|d| d.disk.path.clone()).ok_or_else(|| CliError {
            exit: super::Exit::Refused,
            hint: Some("`rescue disks` lists this machine's disks; USB, removable and loop disks are not counted".into()),
            error: anyhow::anyhow!(
                "{spec}: this machine has {} fixed disk(s){}",
                list.len(),
                if list.is_empty() { String::new() } else { format!(" ({})", list.iter().map(|d| d.disk.path.display().to_string()).collect::<Vec<_>>().join(", ")) }
            ),
        });
    }
    Ok(PathBuf::from(spec))
}

/// Give a web server holding the image up to `limit` to answer: the network
/// may still be coming up when the job starts. The restore itself says why
/// when it still cannot be reached.
fn wait_for(text: &str, limit: Duration, reporter: &Reporter) {
    if !imaging::store::http::is_http_url(text) {
        return;
    }
    let t0 = Instant::now();
    let mut said = false;
    loop {
        match imaging::store::http::HttpFile::open(text) {
            Ok(_) => return,
            // Not reachable yet; an answer (404, no ranges) is final.
            Err(e @ imaging::store::StoreError::Failed { .. }) if t0.elapsed() < limit => {
                if !said {
                    eprintln!("rescue job: waiting for {text} ({e})");
                    reporter.set_message(&format!("waiting for {text}"));
                    said = true;
                }
                std::thread::sleep(Duration::from_secs(2));
            }
            Err(_) => return,
        }
    }
}

/// The status reports: the latest progress, sent by a thread at most every
/// `every` (and at once when a phase begins), then a final state.
pub struct Reporter {
    url: Option<String>,
    every: Duration,
    state: Mutex<Report>,
    stop: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Debug, Clone, Default)]
struct Report {
    phase: String,
    total: u64,
    done: u64,
    message: String,
    /// Something changed since the last send.
    dirty: bool,
    /// A phase began since the last send: send without waiting.
    urgent: bool,
}

impl Reporter {
    fn start(url: Option<String>, every: Duration) -> Arc<Reporter> {
        let r = Arc::new(Reporter { url, every, state: Mutex::new(Report::default()), stop: AtomicBool::new(false), thread: Mutex::new(None) });
        if r.url.is_some() {
            let me = r.clone();
            let h = std::thread::spawn(move || me.pump());
            *r.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(h);
        }
        r
    }

    fn pump(&self) {
        let mut last = Instant::now() - self.every;
        while !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20).min(self.every));
            let snap = {
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if !s.dirty || (!s.urgent && last.elapsed() < self.every) {
                    continue;
                }
                s.dirty = false;
                s.urgent = false;
                s.clone()
            };
            last = Instant::now();
            let progress = if snap.total > 0 { Some((snap.done as f64 / snap.total as f64).min(1.0)) } else { None };
            let msg = if snap.phase.is_empty() {
                snap.message.clone()
            } else if snap.total > 0 {
                format!("{}: {}: {} of {}", snap.message, snap.phase, imaging::blockdev::human_size(snap.done), imaging::blockdev::human_size(snap.total))
            } else {
                format!("{}: {}", snap.message, snap.phase)
            };
            self.send("running", progress, &msg, 1);
        }
    }

    fn send(&self, state: &str, progress: Option<f64>, message: &str, attempts: u32) {
        let Some(url) = &self.url else { return };
        let body = serde_json::json!({"state": state, "progress": progress, "message": message}).to_string();
        for i in 0..attempts {
            match imaging::store::http::post(url, "application/json", body.as_bytes()) {
                Ok(s) if (200..300).contains(&s) => return,
                Ok(s) => tracing::warn!("status report to {url}: HTTP {s}"),
                Err(e) => tracing::warn!("status report to {url}: {e}"),
            }
            if i + 1 < attempts {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }

    fn set_message(&self, m: &str) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.message = m.to_string();
        s.dirty = true;
        s.urgent = true;
    }

    /// Stop the progress reports and send the final state.
    fn finish(&self, state: &str, progress: Option<f64>, message: &str) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
        self.send(state, progress, message, 3);
    }
}

impl Progress for Reporter {
    fn begin(&self, phase: &str, total: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.phase = phase.to_string();
        s.total = total;
        s.done = 0;
        s.dirty = true;
        s.urgent = true;
    }

    fn advance(&self, n: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.done += n;
        s.dirty = true;
    }

    fn finish(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.done = s.done.max(s.total);
        s.dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DISKS: &str = include_str!("../../tests/snapshots/fixtures/disks.json");

    #[test]
    fn disks_by_number_count_fixed_disks_only() {
        let disks: Vec<DiskReport> = serde_json::from_str(DISKS).expect("fixture");
        // sda (SATA), sdb (USB: not counted), nvme0n1.
        assert_eq!(resolve_disk("disk0", &disks).expect("disk0"), PathBuf::from("/dev/sda"));
        assert_eq!(resolve_disk("1", &disks).expect("1"), PathBuf::from("/dev/nvme0n1"));
        let e = resolve_disk("disk2", &disks).expect_err("only two fixed disks");
        assert_eq!(e.exit, super::super::Exit::Refused);
        assert!(e.error.to_string().contains("2 fixed disk(s) (/dev/sda, /dev/nvme0n1)"), "{}", e.error);
        assert_eq!(resolve_disk("/dev/sdb", &disks).expect("path"), PathBuf::from("/dev/sdb"));
        assert_eq!(resolve_disk("/tmp/disk1.img", &disks).expect("file"), PathBuf::from("/tmp/disk1.img"));
    }

    #[test]
    fn images_relative_to_the_server() {
        let srv = Some("http://10.0.0.1:8080");
        assert_eq!(resolve_image("win10.rimg", srv).expect("rel"), "http://10.0.0.1:8080/images/win10.rimg");
        assert_eq!(resolve_image("lab/pc 7.rimg", srv).expect("rel"), "http://10.0.0.1:8080/images/lab/pc 7.rimg");
        assert_eq!(resolve_image("/srv/a.rimg", srv).expect("abs"), "/srv/a.rimg");
        assert_eq!(resolve_image("smb://nas/img/a.rimg", srv).expect("url"), "smb://nas/img/a.rimg");
        assert_eq!(resolve_image("nas:lab/a.rimg", None).expect("share"), "nas:lab/a.rimg");
        let e = resolve_image("a.rimg", None).expect_err("no server");
        assert!(format!("{:#}", e.error).contains("relative to the PXE server's image folder"));
        assert_eq!(server_url("10.0.0.1:8080/"), "http://10.0.0.1:8080");
        assert_eq!(server_url("http://10.0.0.1:8080"), "http://10.0.0.1:8080");
    }

    #[test]
    fn backup_names_say_machine_disk_and_time() {
        assert_eq!(image_name(Some("52:54:00:AB:00:01"), Path::new("/dev/nvme0n1"), 1_796_000_000), "52-54-00-ab-00-01-nvme0n1-20261130-005320.rimg");
        assert_eq!(image_name(None, Path::new("/dev/sda"), 0), "machine-sda-19700101-000000.rimg");
    }
}
