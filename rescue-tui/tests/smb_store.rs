//! Images on SMB shares: a real Samba server (Debian `samba`) started by each
//! test on 127.0.0.1 at a free port, with its own configuration, password
//! database and share folder in a temporary directory, and killed (with every
//! child it forked) when the test ends. The SMB user `tech` is mapped to
//! root, so no system account is created. Backups go to the share, restores
//! come from it, chains and merges live on it, and the share's files are
//! compared with what the same commands make locally. Needs root (smbd).

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const PASSWORD: &str = "Correct-Horse-7";

struct Samba {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Samba {
    fn start() -> Samba {
        Samba::start_with("server signing = mandatory\n", "")
    }

    /// A server with these `[global]` lines (signing, encryption, guests)
    /// and these extra shares (`{d}` stands for its folder).
    fn start_with(global: &str, shares: &str) -> Samba {
        require_root();
        let dir = tempfile::tempdir().expect("tmp");
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let d = dir.path();
        for sub in ["private", "lock", "state", "cache", "pid", "ncalrpc", "share", "share/pc1"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let conf = format!(
            "[global]\n  server role = standalone server\n  smb ports = {port}\n  interfaces = 127.0.0.1\n  bind interfaces only = yes\n  \
             private dir = {d}/private\n  lock directory = {d}/lock\n  state directory = {d}/state\n  cache directory = {d}/cache\n  \
             pid directory = {d}/pid\n  ncalrpc dir = {d}/ncalrpc\n  log file = {d}/log.%m\n  log level = 1\n  \
             passdb backend = tdbsam:{d}/private/passdb.tdb\n  server min protocol = SMB2_10\n  {global}  \
             load printers = no\n  printing = bsd\n  printcap name = /dev/null\n  disable spoolss = yes\n  disable netbios = yes\n  \
             username map = {d}/usermap\n[images]\n  path = {d}/share\n  read only = no\n  force user = root\n{shares}",
            d = d.display(),
            shares = shares.replace("{d}", &d.display().to_string()),
        );
        std::fs::write(d.join("smb.conf"), conf).expect("conf");
        std::fs::write(d.join("usermap"), "root = tech\n").expect("usermap");
        let mut c = Command::new("smbpasswd");
        c.args(["-c", &d.join("smb.conf").to_string_lossy(), "-s", "-a", "root"]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut p = c.spawn().expect("smbpasswd (run scripts/setup: samba)");
        std::io::Write::write_all(p.stdin.as_mut().expect("stdin"), format!("{PASSWORD}\n{PASSWORD}\n").as_bytes()).expect("write");
        assert!(p.wait_with_output().expect("smbpasswd").status.success(), "smbpasswd failed");
        let mut s = Samba { port, dir, child: None };
        s.run();
        s
    }

    /// Start smbd (in its own process group, so its children die with it)
    /// and wait until it accepts connections.
    fn run(&mut self) {
        use std::os::unix::process::CommandExt;
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("smbd.out")).expect("log");
        let child = Command::new("smbd")
            .args(["-s", &d.join("smb.conf").to_string_lossy(), "--foreground", "--no-process-group", "--debug-stdout"])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("smbd (run scripts/setup: samba)");
        self.child = Some(child);
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(30), "smbd did not listen on port {} in 30 s:\n{}", self.port, self.log_tail());
            std::thread::sleep(Duration::from_millis(50));
        }
        // Listening is not serving yet (after a restart its helpers still
        // clean up after the killed server): wait until a session and a
        // tree connect work, as a client's would.
        let mut last = String::new();
        while t0.elapsed() < Duration::from_secs(30) {
            let out = Command::new("smbclient")
                .args(["-p", &self.port.to_string(), "//127.0.0.1/images", "-U", &format!("tech%{PASSWORD}"), "-m", "SMB3", "-c", "ls"])
                .stdin(Stdio::null())
                .output()
                .expect("smbclient (run scripts/setup)");
            if out.status.success() {
                return;
            }
            last = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("smbd on port {} did not serve the share in 30 s: {last}\n{}", self.port, self.log_tail());
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let group = c.id().to_string();
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).status();
            let _ = c.kill();
            let _ = c.wait();
            // Every smbd of the group gone: one still exiting keeps the
            // server's tdb files open, and a restarted server would not
            // clear them (their records name the dead processes).
            let t0 = Instant::now();
            while Command::new("pgrep").args(["-g", &group]).stdout(Stdio::null()).status().is_ok_and(|s| s.success()) && t0.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.dir.path().join("smbd.out")).unwrap_or_default();
        s.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn share(&self) -> PathBuf {
        self.dir.path().join("share")
    }

    fn url(&self, path: &str) -> String {
        format!("smb://tech@127.0.0.1:{}/images/{path}", self.port)
    }
}

impl Drop for Samba {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `rescue` with the share's password in the environment (or not).
fn run(args: &[&str], password: Option<&str>, config: &Path) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rescue"));
    // Our own info lines land in the captured stderr a failure shows.
    c.args(args).env_remove("RESCUE_PASSWORD").env("RESCUE_CONFIG_DIR", config).env("RESCUE_LOG", "info,smb=warn,smb_transport=warn,sspi=warn").stdin(Stdio::null());
    match password {
        Some(p) => c.env("RESCUE_SMB_PASSWORD", p),
        None => c.env_remove("RESCUE_SMB_PASSWORD"),
    };
    output_within(&mut c, Duration::from_secs(300))
}

fn ok(args: &[&str], config: &Path) -> String {
    let out = run(args, Some(PASSWORD), config);
    assert!(out.status.success(), "rescue {args:?} failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(args: &[&str], password: Option<&str>, config: &Path, needle: &str) -> String {
    let out = run(args, password, config);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "rescue {args:?} should fail");
    assert!(err.to_lowercase().contains(&needle.to_lowercase()), "rescue {args:?}: stderr lacks {needle:?}:\n{err}");
    err
}

fn blank(dir: &Path, name: &str, like: &Path) -> PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).expect("create");
    f.set_len(std::fs::metadata(like).expect("meta").len()).expect("len");
    p
}

/// Run `rescue args` and kill the server once `partial` holds `bytes`:
/// the command's output after it noticed (it must still be running then).
fn cut_off(smb: &mut Samba, args: &[&str], cfg: &Path, partial: &Path, bytes: u64) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rescue"));
    c.args(args)
        .env("RESCUE_LOG", "info,smb=off,smb_transport=off")
        .env("RESCUE_SMB_PASSWORD", PASSWORD)
        .env("RESCUE_CONFIG_DIR", cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("rescue");
    let t0 = Instant::now();
    while std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0) < bytes {
        if child.try_wait().expect("wait").is_some() {
            let out = child.wait_with_output().expect("output");
            panic!("rescue {args:?} ended before it was cut off:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        if t0.elapsed() > Duration::from_secs(300) {
            let size = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("rescue {args:?} wrote {size} bytes in 300 s, not {bytes}:\n{}\n--- smbd:\n{}", String::from_utf8_lossy(&out.stderr), smb.log_tail());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    smb.kill();
    child.wait_with_output().expect("wait")
}

#[test]
fn backup_restore_chain_and_merge_on_a_share() {
    let smb = Samba::start();
    let work = tempfile::tempdir().expect("tmp");
    let cfg = work.path().join("config");
    let sample = sample_disk();
    let full = smb.url("pc1/full.img");

    let out = ok(&["backup", "disk", sample.to_str().expect("utf-8"), "-o", &full, "--verify"], &cfg);
    assert!(out.is_empty() || !out.contains("error"), "{out}");
    let on_share = smb.share().join("pc1/full.img");
    assert!(on_share.is_file(), "the image is on the share");
    let names: Vec<String> = std::fs::read_dir(smb.share().join("pc1")).expect("dir").flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.ends_with(".partial")), "no partial file is left: {names:?}");

    // The share's file is an ordinary image: restoring it from the share and
    // from a local copy gives the same disk, and the sample's data.
    ok(&["check", &full], &cfg);
    let info = ok(&["info", &full, "--json"], &cfg);
    assert!(info.contains("\"regions\""), "{info}");
    let local = work.path().join("local.img");
    std::fs::copy(&on_share, &local).expect("copy");
    let a = blank(work.path(), "a.img", sample);
    let b = blank(work.path(), "b.img", sample);
    ok(&["restore", &full, "--to", a.to_str().expect("utf-8"), "--yes"], &cfg);
    ok(&["restore", local.to_str().expect("utf-8"), "--to", b.to_str().expect("utf-8"), "--yes"], &cfg);
    assert_eq!(file_hash(&a), file_hash(&b), "restore from the share = restore from a local copy");

    // A chain on the share: the new point goes beside its parent (on the
    // share), `points` lists the share's folder, and a merge lands there too.
    let out = ok(&["backup", "incr", &full], &cfg);
    let _ = out;
    let incr = smb.url("pc1/full.p002-incr.img");
    assert!(smb.share().join("pc1/full.p002-incr.img").is_file(), "incremental point beside its parent");
    let points = ok(&["points", &smb.url("pc1"), "--json"], &cfg);
    assert_eq!(points.matches("\"sequence\"").count(), 2, "{points}");
    let c = blank(work.path(), "c.img", sample);
    ok(&["restore", &incr, "--to", c.to_str().expect("utf-8"), "--yes"], &cfg);
    assert_eq!(file_hash(&c), file_hash(&a), "nothing changed between the points");
    let merged = smb.url("pc1/merged.img");
    ok(&["merge", &incr, "-o", &merged], &cfg);
    ok(&["check", &merged], &cfg);
    fails(&["merge", &incr, "-o", &merged], Some(PASSWORD), &cfg, "exists");
    fails(&["backup", "disk", sample.to_str().expect("utf-8"), "-o", &full], Some(PASSWORD), &cfg, "already exists");

    // Saved locations: the password is kept only when asked, in a 0600 file,
    // and `shares test` connects, lists and writes.
    let pwfile = work.path().join("pw");
    std::fs::write(&pwfile, format!("{PASSWORD}\n")).expect("pw");
    let pf = pwfile.to_str().expect("utf-8");
    ok(&["shares", "add", "nas", &smb.url("pc1"), "--save-password", "--smb-password-file", pf], &cfg);
    ok(&["shares", "add", "plain", &smb.url("")], &cfg);
    let list = ok(&["shares", "list", "--json"], &cfg);
    assert!(list.contains("\"nas\"") && list.contains("\"plain\"") && !list.contains(PASSWORD), "{list}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(cfg.join("shares.json")).expect("meta").permissions().mode() & 0o777, 0o600);
    // The saved password serves commands that name the share, without the environment.
    let out = run(&["shares", "test", "nas", "--json"], None, &cfg);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("\"writable\": true"), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["check", &full], None, &cfg);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    ok(&["shares", "remove", "nas"], &cfg);
    fails(&["check", &full], None, &cfg, "without a password");
    fails(&["shares", "remove", "nas"], None, &cfg, "no saved share");
}

#[test]
fn refusals_say_what_is_wrong() {
    let smb = Samba::start();
    let work = tempfile::tempdir().expect("tmp");
    let cfg = work.path().join("config");
    let sample = sample_disk().to_str().expect("utf-8").to_string();
    let err = fails(&["backup", "disk", &sample, "-o", &smb.url("pc1/x.img")], Some("wrong"), &cfg, "refused user tech with this password");
    assert!(err.contains("hint:"), "{err}");
    fails(&["info", &smb.url("pc1/x.img")], None, &cfg, "without a password");
    let nope = format!("smb://tech@127.0.0.1:{}/nope/x.img", smb.port);
    fails(&["info", &nope], Some(PASSWORD), &cfg, "has no share named nope");
    fails(&["info", &smb.url("pc1/missing.img")], Some(PASSWORD), &cfg, "no such");
    fails(&["backup", "disk", &sample, "-o", &smb.url("no/such/folder/x.img")], Some(PASSWORD), &cfg, "folder does not exist");
    fails(&["info", &format!("smb://tech:{PASSWORD}@127.0.0.1/images/x.img")], None, &cfg, "does not belong in the URL");
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    fails(&["info", &format!("smb://tech@127.0.0.1:{closed}/images/x.img")], Some(PASSWORD), &cfg, "cannot reach");
    assert!(std::fs::read_dir(smb.share().join("pc1")).expect("dir").next().is_none(), "nothing was written");
}

/// The server dies in the middle of a backup: the command fails, saying so
/// and naming `--resume`, and what is on the share is named as partial,
/// never as an image. When the server is back, `--resume` refuses another
/// source (its chunks are not the ones backed up), then goes on from the
/// last checkpoint with the right one: the image restores to the source,
/// and no partial file or journal is left. A new backup without `--resume`
/// replaces a partial file.
#[test]
fn server_killed_mid_backup_leaves_no_complete_looking_file_and_resumes() {
    let mut smb = Samba::start();
    let work = tempfile::tempdir().expect("tmp");
    let cfg = work.path().join("config");
    // 384 MiB that do not compress: long enough to be cut off halfway.
    let src = work.path().join("random.img");
    sh_ok(Command::new("sh").arg("-c").arg(format!("head -c 384M /dev/urandom > {}", src.display())));
    let src_arg = src.to_str().expect("utf-8");
    let target = smb.url("pc1/big.img");
    fails(&["backup", "disk", src_arg, "-o", &target, "--resume"], Some(PASSWORD), &cfg, "no interrupted backup");
    let partial = smb.share().join("pc1/big.img.partial");
    let journal = smb.share().join("pc1/big.img.partial.journal");
    // Past the first checkpoint (64 MiB stored).
    let out = cut_off(&mut smb, &["backup", "disk", src_arg, "-o", &target, "--compress", "high"], &cfg, &partial, 100 << 20);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the backup must fail when the server is gone:\n{err}");
    assert!(err.contains("big.img") && err.contains("--resume"), "{err}");
    assert!(!smb.share().join("pc1/big.img").exists(), "no complete-looking file");
    assert!(partial.exists() && journal.exists(), "the server was gone: the partial file and its journal stay, named as such");

    smb.run();
    // Another disk of the same size is not taken for the one cut off.
    let other = work.path().join("other.img");
    std::fs::File::create(&other).expect("create").set_len(384 << 20).expect("len");
    fails(&["backup", "disk", other.to_str().expect("utf-8"), "-o", &target, "--resume"], Some(PASSWORD), &cfg, "not what was backed up");
    assert!(partial.exists() && journal.exists(), "a refused resume keeps what is on the share");

    let out = ok(&["--json", "backup", "disk", src_arg, "-o", &target, "--resume", "--compress", "fast"], &cfg);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let from = v["resumed_from"].as_u64().expect("resumed_from");
    eprintln!("resumed from {from} bytes");
    assert!(from >= 64 << 20, "the resume started over ({from} bytes kept)");
    assert!(!partial.exists() && !journal.exists(), "the partial file and its journal are gone once the image is complete");
    ok(&["check", &target], &cfg);
    let r = blank(work.path(), "r.img", &src);
    ok(&["restore", &target, "--to", r.to_str().expect("utf-8"), "--yes"], &cfg);
    assert_eq!(file_hash(&r), file_hash(&src), "the resumed image restores to the source");

    // A new backup (no --resume) over a stale partial file replaces it.
    let second = smb.url("pc1/second.img");
    std::fs::write(smb.share().join("pc1/second.img.partial"), b"stale").expect("stale");
    ok(&["backup", "disk", src_arg, "-o", &second, "--compress", "fast"], &cfg);
    assert!(!smb.share().join("pc1/second.img.partial").exists() && !smb.share().join("pc1/second.img.partial.journal").exists());
}

/// The server dies while a restore reads from it: the restore stops and says
/// what state the target is in and how to go on. When the server is back,
/// `--resume` fetches only what the target does not hold yet, and the
/// result is the source, byte for byte.
#[test]
fn server_killed_mid_restore_resumes_where_it_stopped() {
    let mut smb = Samba::start();
    let work = tempfile::tempdir().expect("tmp");
    let cfg = work.path().join("config");
    let src = work.path().join("random.img");
    sh_ok(Command::new("sh").arg("-c").arg(format!("head -c 384M /dev/urandom > {}", src.display())));
    let image = smb.url("pc1/r.img");
    ok(&["backup", "disk", src.to_str().expect("utf-8"), "-o", &image, "--compress", "fast"], &cfg);

    let r = blank(work.path(), "r.img", &src);
    let mut c = Command::new(env!("CARGO_BIN_EXE_rescue"));
    c.args(["restore", &image, "--to", r.to_str().expect("utf-8"), "--yes"])
        .env("RESCUE_SMB_PASSWORD", PASSWORD)
        .env("RESCUE_CONFIG_DIR", &cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().expect("rescue");
    // Data reaches the target in order: once 32 MiB in holds data, stop the server.
    let probe = std::fs::File::open(&r).expect("target");
    let t0 = Instant::now();
    loop {
        let mut b = [0u8; 4096];
        std::os::unix::fs::FileExt::read_exact_at(&probe, &mut b, 32 << 20).expect("read target");
        if b.iter().any(|&x| x != 0) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(180), "the restore wrote nothing at 32 MiB in 180 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    eprintln!("restore killed after {:?}", t0.elapsed());
    smb.kill();
    let out = child.wait_with_output().expect("wait");
    eprintln!("restore failed after {:?}", t0.elapsed());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the restore must fail when the server is gone (it finished first: make the source larger):\n{err}");
    assert!(err.contains("incomplete") && err.contains("--resume"), "the target's state and the way on are named:\n{err}");

    smb.run();
    let out = ok(&["--json", "restore", &image, "--to", r.to_str().expect("utf-8"), "--yes", "--resume"], &cfg);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let written = v["outcome"]["bytes_written"].as_u64().expect("bytes_written");
    eprintln!("resumed after {:?}: {written} bytes written", t0.elapsed());
    assert!(written < 384 << 20, "the resume wrote everything again ({written} bytes)");
    assert!(written > 0, "the resume wrote nothing");
    assert_eq!(file_hash(&r), file_hash(&src), "the resumed restore differs from the source");
}

/// Files rescued straight onto a share, named by its saved name: off a disk
/// (`files copy`) and out of an image (`extract`). The share's copies match
/// a local copy byte for byte, with their times; a `%` in a name survives;
/// symlinks (which shares do not take) are listed as skipped; no temporary
/// file is left; existing files are refused, kept or replaced as asked.
#[test]
fn files_are_copied_and_extracted_onto_a_share() {
    let smb = Samba::start();
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    let cfg = w.join("config");
    let src = w.join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).expect("mkdir");
    std::fs::write(src.join("50% off.txt"), b"half price\n").expect("write");
    std::fs::write(src.join("empty"), b"").expect("write");
    let big: Vec<u8> = (0..(3u32 << 20) / 4).flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()).collect();
    std::fs::write(src.join("sub/deeper/big.bin"), &big).expect("write");
    std::os::unix::fs::symlink("sub/deeper/big.bin", src.join("link")).expect("symlink");
    sh_ok(Command::new("touch").args(["-d", "2001-02-03 04:05:06"]).arg(src.join("sub/deeper/big.bin")).arg(src.join("sub/deeper")).arg(src.join("sub")));
    let fs_img = w.join("fs.img");
    sh_ok(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&src).arg(&fs_img).arg("32M"));
    let fs_arg = fs_img.to_str().expect("utf-8");

    let pwfile = w.join("pw");
    std::fs::write(&pwfile, format!("{PASSWORD}\n")).expect("pw");
    ok(&["shares", "add", "nas", &smb.url("rescued"), "--save-password", "--smb-password-file", pwfile.to_str().expect("utf-8")], &cfg);
    std::fs::create_dir(smb.share().join("rescued")).expect("mkdir");

    // Off the "disk" onto the share by name (the saved password, nothing in the environment).
    let out = run(&["files", "copy", fs_arg, "/", "--to", "nas:out/here"], None, &cfg);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("skipped: /link (a symlink"), "{stderr}");
    assert!(stdout.contains("1 skipped"), "{stdout}");
    let local = w.join("local");
    ok(&["files", "copy", fs_arg, "/", "--to", local.to_str().expect("utf-8")], &cfg);
    let on_share = smb.share().join("rescued/out/here");
    assert_eq!(files_of(&on_share), files_of(&local), "the share's copies differ from the local ones");
    assert!(on_share.join("50% off.txt").is_file(), "the % name");
    let mtime = |p: &Path| std::fs::metadata(p).expect("meta").modified().expect("mtime");
    assert_eq!(mtime(&on_share.join("sub")), mtime(&local.join("sub")), "folder times");
    assert_eq!(mtime(&on_share.join("sub/deeper")), mtime(&src.join("sub/deeper")), "folder times");
    let leftovers: Vec<_> = walk(&on_share).into_iter().filter(|p| p.contains(".rescue-extract")).collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // Existing files: refused by default, kept or replaced when asked.
    std::fs::write(on_share.join("empty"), b"changed on the share").expect("write");
    let err = fails(&["files", "copy", fs_arg, "/empty", "--to", "nas:out/here"], Some(PASSWORD), &cfg, "exists");
    assert!(err.contains("--overwrite"), "{err}");
    ok(&["files", "copy", fs_arg, "/empty", "--to", "nas:out/here", "--skip-existing"], &cfg);
    assert_eq!(std::fs::read(on_share.join("empty")).expect("read"), b"changed on the share");
    ok(&["files", "copy", fs_arg, "/empty", "--to", "nas:out/here", "--overwrite"], &cfg);
    assert_eq!(std::fs::read(on_share.join("empty")).expect("read"), b"");

    // Out of an image of the sample disk (its ext4 partition) onto the share by URL.
    let img = w.join("sample.img");
    ok(&["backup", "disk", sample_disk().to_str().expect("utf-8"), "-o", img.to_str().expect("utf-8"), "--compress", "fast"], &cfg);
    ok(&["extract", img.to_str().expect("utf-8"), "--part", "3", "/text", "--to", &smb.url("ex")], &cfg);
    let local_ex = w.join("local-ex");
    ok(&["extract", img.to_str().expect("utf-8"), "--part", "3", "/text", "--to", local_ex.to_str().expect("utf-8")], &cfg);
    let got = files_of(&smb.share().join("ex"));
    assert!(got.len() > 10, "{got:?}");
    assert_eq!(got, files_of(&local_ex));
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        out.push(p.to_string_lossy().into_owned());
        if p.is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

/// A small backup to the share and back, through `url`, compared with its source.
fn round_trip(url: &str, password: Option<&str>, work: &Path) {
    let cfg = work.join("config");
    let src = work.join("small.img");
    if !src.exists() {
        sh_ok(Command::new("sh").arg("-c").arg(format!("head -c 24M /dev/urandom > {0}; head -c 8M /dev/zero >> {0}", src.display())));
    }
    let out = run(&["backup", "disk", src.to_str().expect("utf-8"), "-o", url, "--compress", "fast", "--verify"], password, &cfg);
    assert!(out.status.success(), "backup to {url}: {}", String::from_utf8_lossy(&out.stderr));
    let r = blank(work, "back.img", &src);
    let out = run(&["restore", url, "--to", r.to_str().expect("utf-8"), "--yes"], password, &cfg);
    assert!(out.status.success(), "restore from {url}: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(file_hash(&r), file_hash(&src), "{url}: restored bytes differ");
    std::fs::remove_file(&r).expect("rm");
}

/// A server that requires encryption (SMB 3 sealing) and one that serves a
/// guest share (no user, no password, unsigned as guests are): backups go
/// to both and come back unchanged. Without a user the client asks for
/// guest access; a named user is never downgraded to it.
#[test]
fn encrypted_and_guest_shares() {
    let work = tempfile::tempdir().expect("tmp");
    let sealed = Samba::start_with("server signing = mandatory\n  server smb encrypt = required\n  server min protocol = SMB3\n", "");
    round_trip(&sealed.url("pc1/sealed.img"), Some(PASSWORD), work.path());
    assert!(sealed.share().join("pc1/sealed.img").is_file());

    let guest = Samba::start_with("map to guest = Bad User\n  server signing = auto\n", "[public]\n  path = {d}/share\n  guest ok = yes\n  read only = no\n  force user = root\n");
    let url = format!("smb://127.0.0.1:{}/public/guest.img", guest.port);
    round_trip(&url, None, work.path());
    assert!(guest.share().join("guest.img").is_file());
    // The user share of the same server still wants its password.
    fails(&["info", &guest.url("guest.img")], Some("wrong"), &work.path().join("config"), "refused user tech");
}

/// An incremental point cut off on its way to the share goes on with
/// `backup incr --resume`, and restores to the source as it was then.
#[test]
fn an_incremental_point_cut_off_resumes() {
    let mut smb = Samba::start();
    let work = tempfile::tempdir().expect("tmp");
    let cfg = work.path().join("config");
    let src = work.path().join("disk.img");
    sh_ok(Command::new("sh").arg("-c").arg(format!("head -c 320M /dev/urandom > {}", src.display())));
    let src_arg = src.to_str().expect("utf-8");
    let full = smb.url("pc1/disk.img");
    ok(&["backup", "disk", src_arg, "-o", &full, "--compress", "fast"], &cfg);
    // Everything changes: the new point stores it all again.
    sh_ok(Command::new("sh").arg("-c").arg(format!("head -c 320M /dev/urandom | dd of={} conv=notrunc status=none", src.display())));

    let partial = smb.share().join("pc1/disk.p002-incr.img.partial");
    let out = cut_off(&mut smb, &["backup", "incr", &full, "--compress", "high"], &cfg, &partial, 100 << 20);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--resume"), "{}", String::from_utf8_lossy(&out.stderr));

    smb.run();
    let out = ok(&["--json", "backup", "incr", &full, "--resume"], &cfg);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(v["resumed_from"].as_u64().expect("resumed_from") >= 64 << 20, "{out}");
    let point = smb.url("pc1/disk.p002-incr.img");
    ok(&["check", &point], &cfg);
    let r = blank(work.path(), "r.img", &src);
    ok(&["restore", &point, "--to", r.to_str().expect("utf-8"), "--yes"], &cfg);
    assert_eq!(file_hash(&r), file_hash(&src), "the resumed point restores to the changed source");
    assert!(!partial.exists());
}

/// The PXE server's unattended backup job (`rescue job` with the variables
/// rescue-init passes on): the disk goes to the share folder as
/// MAC-DISK-DATE.rimg, and the image is sound. Reports go nowhere here
/// (no server): that never fails a job.
#[test]
fn an_unattended_backup_job_goes_to_the_share() {
    let smb = Samba::start();
    let work = tempfile::tempdir().expect("tmp");
    let src = sample_disk();
    let mut c = Command::new(env!("CARGO_BIN_EXE_rescue"));
    c.arg("job")
        .env("RESCUE_JOB", "backup")
        .env("RESCUE_DISK", src)
        .env("RESCUE_SHARE", smb.url("lab"))
        .env("RESCUE_MAC", "52:54:00:AA:BB:01")
        .env("RESCUE_THEN", "reboot")
        .env("RESCUE_SMB_PASSWORD", PASSWORD)
        .env("RESCUE_CONFIG_DIR", work.path().join("config"))
        .env_remove("RESCUE_SERVER")
        .stdin(Stdio::null());
    let out = output_within(&mut c, Duration::from_secs(300));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(101), "a backup job that succeeded asks for the reboot:\n{err}\n{}", smb.log_tail());
    std::fs::create_dir_all(smb.share().join("lab")).ok();
    let names: Vec<String> = std::fs::read_dir(smb.share().join("lab")).expect("lab folder").flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let name = &names[0];
    assert!(name.starts_with("52-54-00-aa-bb-01-sample.img-") && name.ends_with(".rimg"), "{name}");
    ok(&["check", &smb.url(&format!("lab/{name}"))], &work.path().join("config"));
    let info = ok(&["info", "--json", &smb.url(&format!("lab/{name}"))], &work.path().join("config"));
    assert!(info.contains("sample.img"), "the image records its source: {info}");
}
