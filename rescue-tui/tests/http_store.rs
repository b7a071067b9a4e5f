//! Images on a web server: `rescue info|check|restore|points` over HTTP range
//! requests, against a small server started by each test on 127.0.0.1 (a
//! thread of the test process, stopped when the test ends). The server can
//! also drop connections halfway through a response, or ignore Range
//! headers, to test retries and the refusal of servers without ranges.
//! Restores over HTTP are compared byte for byte with restores of the same
//! image from the local file. No root needed.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Range requests as RFC 9110 says.
    Ranges,
    /// Ignore Range: always 200 with the whole file.
    NoRanges,
    /// Like `Ranges`, but every `n`th response of more than 64 KiB is cut
    /// off halfway and the connection closed.
    DropEvery(u64),
    /// Every response of more than 2 MiB (the verify pass and the restore's
    /// read-ahead ask for such; opening the image does not) is cut off before
    /// its first body byte: no progress at all.
    DropAll,
}

#[derive(Default)]
struct Stats {
    /// Paths requested.
    paths: Mutex<BTreeSet<String>>,
    /// Responses cut off on purpose.
    drops: AtomicU64,
    /// Body bytes sent.
    sent: AtomicU64,
    /// Large responses seen (counts towards DropEvery).
    large: AtomicU64,
}

/// A web server over `root` on 127.0.0.1, stopped on drop.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    fn start(root: &Path, mode: Mode) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        l.set_nonblocking(true).expect("nonblocking listener");
        let port = l.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let (root, stop2, stats2) = (root.to_path_buf(), stop.clone(), stats.clone());
        let accept = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let (root, stats, stop) = (root.clone(), stats2.clone(), stop2.clone());
                        std::thread::spawn(move || serve(s, &root, mode, &stats, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server { port, stop, stats, accept: Some(accept) }
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// One connection: requests until the client closes it (or 5 s idle).
fn serve(s: TcpStream, root: &Path, mode: Mode, stats: &Stats, stop: &AtomicBool) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut r = BufReader::new(s.try_clone().expect("clone stream"));
    let mut w = s;
    while !stop.load(Ordering::Relaxed) {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_string();
        let mut range = None;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("range") {
                    range = v.trim().strip_prefix("bytes=").and_then(|v| v.split_once('-')).and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
                }
            }
        }
        stats.paths.lock().expect("stats").insert(path.clone());
        let file = root.join(&path);
        // Read only the range asked for (reading the whole image per request
        // made the tests crawl).
        let opened = if path.is_empty() || path.contains("..") { None } else { std::fs::File::open(&file).ok() };
        let Some((f, len)) = opened.and_then(|f| f.metadata().ok().filter(|m| m.is_file()).map(|m| (f, m.len()))) else {
            let _ = w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            continue;
        };
        let read = |a: u64, n: u64| {
            let mut b = vec![0u8; n as usize];
            std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, a).expect("read served file");
            b
        };
        let (head, body) = match range {
            Some((a, b)) if mode != Mode::NoRanges && a <= b && b < len => (
                format!("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{len}\r\nContent-Length: {}\r\nETag: \"v1\"\r\n\r\n", b - a + 1),
                read(a, b - a + 1),
            ),
            _ => (format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n"), read(0, len)),
        };
        if w.write_all(head.as_bytes()).is_err() {
            return;
        }
        if mode == Mode::DropAll && body.len() > 2 << 20 {
            stats.drops.fetch_add(1, Ordering::Relaxed);
            let _ = w.shutdown(Shutdown::Both);
            return;
        }
        if let Mode::DropEvery(n) = mode {
            if body.len() > 64 << 10 && (stats.large.fetch_add(1, Ordering::Relaxed) + 1) % n == 0 {
                let half = body.len() / 2;
                let _ = w.write_all(&body[..half]);
                stats.sent.fetch_add(half as u64, Ordering::Relaxed);
                stats.drops.fetch_add(1, Ordering::Relaxed);
                let _ = w.shutdown(Shutdown::Both);
                return;
            }
        }
        if w.write_all(&body).is_err() {
            return;
        }
        stats.sent.fetch_add(body.len() as u64, Ordering::Relaxed);
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A copy of the sample disk to back up (and change).
fn source(dir: &Path) -> PathBuf {
    let src = sample_copy(dir, "src.img");
    src
}

/// Restore `image` (a path or URL) onto a new file the size of the sample
/// disk; returns the file.
fn restore_to(image: &str, dir: &Path, name: &str) -> PathBuf {
    let size = std::fs::metadata(sample_disk()).expect("sample").len();
    let t = new_file(dir, name, size);
    rescue_ok(&["restore", image, "--to", s(&t), "--yes"]);
    t
}

fn same_bytes(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).expect("read a"), std::fs::read(b).expect("read b"));
    assert_eq!(x.len(), y.len(), "{} and {} differ in size", a.display(), b.display());
    if let Some(i) = x.iter().zip(&y).position(|(p, q)| p != q) {
        panic!("{} and {} differ at byte {i}", a.display(), b.display());
    }
}

#[test]
fn info_check_restore_and_split_images_over_http() {
    let d = tempfile::tempdir().expect("tempdir");
    let src = source(d.path());
    let store = d.path().join("store");
    std::fs::create_dir(&store).expect("store dir");
    rescue_ok(&["backup", "disk", s(&src), "-o", s(&store.join("pc.rimg"))]);
    rescue_ok(&["backup", "disk", s(&src), "-o", s(&store.join("split.rimg")), "--split", "50M", "--compress", "none"]);
    let srv = Server::start(&store, Mode::Ranges);

    // info: the same description as from the local file, volumes named by URL.
    let local: serde_json::Value = serde_json::from_str(&rescue_ok(&["info", s(&store.join("pc.rimg")), "--json"])).expect("json");
    let remote: serde_json::Value = serde_json::from_str(&rescue_ok(&["info", &srv.url("pc.rimg"), "--json"])).expect("json");
    assert_eq!(local["catalog"], remote["catalog"]);
    assert_eq!(local["image_bytes"], remote["image_bytes"]);
    assert_eq!(remote["volumes"][0].as_str(), Some(srv.url("pc.rimg").as_str()));
    let text = rescue_ok(&["info", &srv.url("pc.rimg")]);
    assert!(text.contains(&srv.url("pc.rimg")), "info names the URL:\n{text}");

    // info reads header, footer and catalog only: a small part of the file.
    let len = std::fs::metadata(store.join("pc.rimg")).expect("image").len();
    let sent = srv.stats.sent.load(Ordering::Relaxed);
    assert!(sent * 5 < len, "info fetched {sent} bytes of a {len}-byte image");

    let out = rescue_ok(&["check", &srv.url("pc.rimg")]);
    assert!(out.contains("Image OK"), "{out}");

    // restore over HTTP = restore from the local file.
    let want = restore_to(s(&store.join("pc.rimg")), d.path(), "local.img");
    let got = restore_to(&srv.url("pc.rimg"), d.path(), "http.img");
    same_bytes(&want, &got);

    // One partition: only its frames (and the index) are fetched.
    let before = srv.stats.sent.load(Ordering::Relaxed);
    let parts = partitions(&src);
    let (_, _, esp_len, _) = parts.iter().find(|p| p.0 == 1).expect("ESP").clone();
    let t = new_file(d.path(), "esp.img", esp_len + (4 << 20));
    rescue_ok(&["restore", &srv.url("pc.rimg"), "--part", "1", "--to", s(&t), "--yes"]);
    let fetched = srv.stats.sent.load(Ordering::Relaxed) - before;
    assert!(fetched < len / 2, "restoring the 64 MiB ESP fetched {fetched} of {len} bytes");
    std::fs::remove_file(&t).expect("rm");

    // A split image: named by its base name or its first volume.
    let info: serde_json::Value = serde_json::from_str(&rescue_ok(&["info", &srv.url("split.rimg"), "--json"])).expect("json");
    let vols = info["volumes"].as_array().expect("volumes");
    assert!(vols.len() >= 2, "the split image has {} volumes", vols.len());
    assert_eq!(vols[1].as_str(), Some(srv.url("split.rimg.002").as_str()));
    rescue_ok(&["check", &srv.url("split.rimg.001")]);
    let got = restore_to(&srv.url("split.rimg"), d.path(), "split.img");
    same_bytes(&want, &got);

    // A missing volume on the server is found, not read past.
    std::fs::rename(store.join("split.rimg.002"), store.join("moved")).expect("hide volume 2");
    rescue_fails(&["check", &srv.url("split.rimg")], 4, "volume");
    // A missing image says so.
    rescue_fails(&["info", &srv.url("nothing.rimg")], 1, "404");
}

#[test]
fn chain_point_restores_over_http() {
    let d = tempfile::tempdir().expect("tempdir");
    let src = source(d.path());
    let store = d.path().join("store");
    std::fs::create_dir(&store).expect("store dir");
    let full = store.join("pc.img");
    rescue_ok(&["backup", "disk", s(&src), "-o", s(&full)]);
    // Change the FAT partition (at 1 MiB) without mounting: mtools writes it in place.
    let extra = d.path().join("new.bin");
    std::fs::write(&extra, (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<u8>>()).expect("new file");
    sh_ok(Command::new("mcopy").env("MTOOLS_SKIP_CHECK", "1").args(["-i", &format!("{}@@1M", s(&src))]).arg(&extra).arg("::/new.bin"));
    let incr_name = "pc.p002-incr.img";
    let out = rescue_ok(&["backup", "incr", s(&full)]);
    assert!(out.contains(incr_name), "{out}");
    let incr = store.join(incr_name);
    assert!(std::fs::metadata(&incr).expect("point").len() < std::fs::metadata(&full).expect("full").len() / 4, "not incremental");
    let srv = Server::start(&store, Mode::Ranges);

    // points on the URL of the incremental: it and the full it depends on.
    let pts: serde_json::Value = serde_json::from_str(&rescue_ok(&["points", &srv.url(incr_name), "--json"])).expect("json");
    let pts = pts.as_array().expect("list");
    assert_eq!(pts.len(), 2, "{pts:?}");
    assert!(pts.iter().all(|p| p["status"] == "ok"), "{pts:?}");

    let want = restore_to(s(&incr), d.path(), "local.img");
    let before = srv.stats.paths.lock().expect("stats").clone();
    assert!(before.contains("pc.img"), "points read the full from the server: {before:?}");
    srv.stats.paths.lock().expect("stats").clear();
    let got = restore_to(&srv.url(incr_name), d.path(), "http.img");
    same_bytes(&want, &got);
    let asked = srv.stats.paths.lock().expect("stats").clone();
    assert!(asked.contains("pc.img") && asked.contains(incr_name), "the chain link was fetched from the server: {asked:?}");
    // The point differs from the full: restoring the full gives other bytes.
    let full_t = restore_to(&srv.url("pc.img"), d.path(), "full.img");
    assert_ne!(std::fs::read(&full_t).expect("full"), std::fs::read(&got).expect("incr"), "the incremental point holds the change");

    // Without its link on the server the point is refused before any write.
    std::fs::rename(&full, d.path().join("away.img")).expect("hide full");
    let t = new_file(d.path(), "t.img", 1 << 20);
    rescue_fails(&["restore", &srv.url(incr_name), "--to", s(&t), "--yes"], 4, "pc.img");
}

#[test]
fn dropped_connections_resume_and_rangeless_servers_are_refused() {
    let d = tempfile::tempdir().expect("tempdir");
    let src = source(d.path());
    let store = d.path().join("store");
    std::fs::create_dir(&store).expect("store dir");
    rescue_ok(&["backup", "disk", s(&src), "-o", s(&store.join("pc.rimg"))]);
    let want = restore_to(s(&store.join("pc.rimg")), d.path(), "local.img");

    // Every 3rd large response is cut off halfway: retried, resumed, correct.
    {
        let srv = Server::start(&store, Mode::DropEvery(3));
        let got = restore_to(&srv.url("pc.rimg"), d.path(), "http.img");
        same_bytes(&want, &got);
        let drops = srv.stats.drops.load(Ordering::Relaxed);
        assert!(drops >= 2, "the server dropped only {drops} connections");
        std::fs::remove_file(&got).expect("rm");
    }

    // Every large response is cut off before any byte: after the bounded retries the
    // restore fails, says why, and says the target was not written.
    {
        let srv = Server::start(&store, Mode::DropAll);
        let t = new_file(d.path(), "t.img", std::fs::metadata(&want).expect("size").len());
        let err = rescue_fails(&["restore", &srv.url("pc.rimg"), "--to", s(&t), "--yes"], 1, "attempts");
        assert!(err.contains("connection dropped"), "{err}");
        assert!(err.contains("nothing was written to"), "{err}");
        assert!(err.contains("hint:"), "{err}");
        let max = srv.stats.drops.load(Ordering::Relaxed);
        assert!((5..=40).contains(&max), "bounded retries, but the server saw {max} cut responses");
        assert!(std::fs::read(&t).expect("target").iter().all(|b| *b == 0), "the target was left untouched");
    }

    // A server that ignores Range is refused, with what to do.
    {
        let srv = Server::start(&store, Mode::NoRanges);
        let err = rescue_fails(&["info", &srv.url("pc.rimg")], 1, "does not support range requests");
        assert!(err.contains("hint:"), "{err}");
        let t = new_file(d.path(), "t2.img", 1 << 20);
        rescue_fails(&["restore", &srv.url("pc.rimg"), "--to", s(&t), "--yes"], 1, "range requests");
        rescue_fails(&["check", &srv.url("pc.rimg")], 1, "range requests");
        // It read no image: the refusal came from the first response head.
        let sent = srv.stats.sent.load(Ordering::Relaxed);
        assert_eq!(sent, 0, "the refused server still sent {sent} body bytes");
    }
}
