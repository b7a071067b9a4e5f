//! `rescue job` against the PXE server's own HTTP server (the `pxe-server`
//! library on loopback, with `--images`): the job fetches a relative image
//! from the server's image folder, restores it, reports its progress and
//! result to `POST /clients/<mac>/status`, and asks for power-off with exit
//! code 100. A failing job reports `failed` and asks for nothing; a server
//! that does not answer never fails a job.
#![cfg(target_os = "linux")]

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use common::*;
use pxe_server::clients::{ClientStatus, Registry};
use pxe_server::http::{HttpContext, HttpServer};
use pxe_server::mac::Mac;

const MAC: &str = "52:54:00:12:34:56";

/// The PXE server's HTTP side on 127.0.0.1 serving `images` at /images/,
/// and every status it receives for [`MAC`] (polled: the registry keeps
/// only the latest). Stopped on drop.
struct Server {
    url: String,
    registry: Arc<Registry>,
    seen: Arc<Mutex<Vec<ClientStatus>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(dir: &Path, images: &Path) -> Server {
        let port = TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let bundle_dir = dir.join("bundle");
        std::fs::create_dir_all(&bundle_dir).expect("bundle dir");
        let registry = Arc::new(Registry::default());
        let ctx = Arc::new(HttpContext {
            bundle: Arc::new(pxe_server::bundle::Bundle::unchecked(&bundle_dir).expect("bundle")),
            policy: Arc::new(RwLock::new(pxe_server::policy::Policy::parse("", &dir.join("policy.toml")).expect("empty policy"))),
            registry: registry.clone(),
            server_ip: Ipv4Addr::LOCALHOST,
            port,
            cmdline: String::new(),
            images: Some(Arc::new(pxe_server::images::ImageDir::open(images).expect("image dir"))),
        });
        let server = HttpServer::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), ctx).expect("bind");
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mac: Mac = MAC.parse().expect("mac");
        let (s1, s2) = (stop.clone(), stop.clone());
        let (reg, seen2) = (registry.clone(), seen.clone());
        let threads = vec![
            std::thread::spawn(move || {
                let _ = server.run(&s1);
            }),
            std::thread::spawn(move || {
                while !s2.load(Ordering::SeqCst) {
                    if let Some(st) = reg.list().into_iter().find(|r| r.mac == mac).and_then(|r| r.status) {
                        let mut v = seen2.lock().expect("lock");
                        if v.last() != Some(&st) {
                            v.push(st);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }),
        ];
        Server { url: format!("http://127.0.0.1:{port}"), registry, seen, stop, threads }
    }

    /// The statuses seen so far; waits a little for the last one to land.
    fn statuses(&self) -> Vec<ClientStatus> {
        std::thread::sleep(Duration::from_millis(100));
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn job(env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rescue"));
    c.arg("job").env("RESCUE_REPORT_MS", "100");
    for (k, v) in env {
        c.env(k, v);
    }
    output_within(&mut c, Duration::from_secs(300))
}

fn text(o: &std::process::Output) -> String {
    format!("exit {:?}\nstdout:\n{}\nstderr:\n{}", o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn file(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).and_then(|f| f.set_len(size)).expect("create disk file");
    p
}

#[test]
fn a_restore_job_fetches_from_the_image_folder_reports_and_powers_off() {
    let d = tempfile::tempdir().expect("temp dir");
    let dir = d.path();
    let images = dir.join("images");
    std::fs::create_dir_all(images.join("lab")).expect("mkdir");
    let src = sample_disk();
    let img = images.join("lab/pc.rimg");
    rescue_ok(&["backup", "disk", src.to_str().expect("utf-8"), "-o", img.to_str().expect("utf-8"), "--compress", "fast"]);
    let tgt = file(dir, "target.img", 400 << 20);
    let srv = Server::start(dir, &images);

    let tgt_s = tgt.to_str().expect("utf-8");
    let o = job(&[
        ("RESCUE_JOB", "restore"),
        ("RESCUE_IMAGE", "lab/pc.rimg"),
        ("RESCUE_DISK", tgt_s),
        ("RESCUE_SERVER", &srv.url),
        ("RESCUE_MAC", MAC),
        ("RESCUE_THEN", "poweroff"),
    ]);
    assert_eq!(o.status.code(), Some(100), "a job that succeeded asks for power-off: {}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("restore {}/images/lab/pc.rimg to {tgt_s}", srv.url)), "{}", text(&o));

    // Progress while it ran (rising), then done.
    let seen = srv.statuses();
    let running: Vec<f64> = seen.iter().filter(|s| s.state == "running").filter_map(|s| s.progress).collect();
    assert!(running.len() >= 2, "at least two progress reports: {seen:?}");
    assert!(running.windows(2).any(|w| w[1] > w[0]), "progress rises: {seen:?}");
    let last = seen.last().expect("a final status");
    assert_eq!((last.state.as_str(), last.progress), ("done", Some(1.0)), "{seen:?}");
    assert!(last.message.as_deref().is_some_and(|m| m.contains("restore") && m.contains("powering off")), "{last:?}");
    // The server knows the client by its MAC, at the address it reported from.
    let rec = srv.registry.list().into_iter().find(|r| r.mac.to_string().eq_ignore_ascii_case(MAC)).expect("client listed");
    assert_eq!(rec.ip, Some(Ipv4Addr::LOCALHOST));

    // The target holds the source's partitions, byte for byte.
    let (ps, pt) = (partitions(src), partitions(&tgt));
    assert_eq!(ps, pt, "partition tables differ");
    for (n, start, len, _) in &ps {
        assert_eq!(hash_range(src, *start, *len), hash_range(&tgt, *start, *len), "partition {n} differs");
    }
    rescue_ok(&["check", img.to_str().expect("utf-8")]);

    // A job that fails (the image is not there) reports why and asks for nothing.
    let before = file_hash(&tgt);
    let o = job(&[
        ("RESCUE_JOB", "restore"),
        ("RESCUE_IMAGE", "lab/missing.rimg"),
        ("RESCUE_DISK", tgt_s),
        ("RESCUE_SERVER", &srv.url),
        ("RESCUE_MAC", MAC),
        ("RESCUE_THEN", "poweroff"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let last = srv.statuses().last().cloned().expect("a final status");
    assert_eq!(last.state, "failed", "{last:?}");
    assert!(last.message.as_deref().is_some_and(|m| m.contains("missing.rimg") && m.contains("404")), "{last:?}");
    assert_eq!(file_hash(&tgt), before, "a failed job wrote nothing");

    // A job without its disk is refused before anything happens.
    let o = job(&[("RESCUE_JOB", "restore"), ("RESCUE_IMAGE", "lab/pc.rimg"), ("RESCUE_SERVER", &srv.url), ("RESCUE_MAC", MAC)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(srv.statuses().last().map(|s| s.state.clone()).as_deref(), Some("failed"));
    drop(srv);

    // Reports are best effort: with no server listening the job still runs
    // (an absolute image path needs no server), and without `then` it
    // exits 0 and leaves the machine on.
    let tgt2 = file(dir, "target2.img", 400 << 20);
    let o = job(&[
        ("RESCUE_JOB", "restore"),
        ("RESCUE_IMAGE", img.to_str().expect("utf-8")),
        ("RESCUE_DISK", tgt2.to_str().expect("utf-8")),
        ("RESCUE_SERVER", "127.0.0.1:1"),
        ("RESCUE_MAC", MAC),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(partitions(&tgt2), ps);
}

