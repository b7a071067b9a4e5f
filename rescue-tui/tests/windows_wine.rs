//! The Windows build of `rescue` (x86_64-pc-windows-gnu, the one that goes
//! into WinPE) run under Wine against disk image files: images made on Linux
//! restore under Windows byte for byte and the reverse, chains continue
//! across the two, and the safety checks hold there too. Raw disks
//! (`\\.\PhysicalDriveN`) cannot be reached through Wine; those parts have
//! unit tests on their ioctl structures instead.
//!
//! The Windows binary comes from `scripts/build-windows` (which `scripts/test`
//! runs before the tests; a few minutes when cold). Wine runs in the prefix
//! `scripts/wine-prefix` prepares. No root needed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::*;

/// The Windows `rescue.exe`, built (or brought up to date) once per test run.
fn exe() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| PathBuf::from(sh_ok(&mut Command::new(repo().join("scripts/build-windows"))).trim()))
}

fn prefix() -> &'static str {
    static P: OnceLock<String> = OnceLock::new();
    P.get_or_init(|| sh_ok(&mut Command::new(repo().join("scripts/wine-prefix"))).trim().to_string())
}

fn wine_bin() -> PathBuf {
    ["/usr/bin/wine64", "/usr/lib/wine/wine64"].iter().map(PathBuf::from).find(|p| p.exists()).expect("wine64 is not installed (scripts/setup installs it)")
}

/// A Linux path as the Windows program sees it (Wine maps / to Z:).
fn w(p: &Path) -> String {
    let s = p.to_str().expect("utf-8 path");
    assert!(s.starts_with('/'), "absolute path expected: {s}");
    format!("Z:{}", s.replace('/', "\\"))
}

/// Run the Windows `rescue.exe` under Wine (bounded: a hung Wine fails the test).
fn wine(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new("timeout");
    c.arg("300").arg(wine_bin()).arg(exe()).args(args);
    c.env("WINEPREFIX", prefix()).env("WINEDEBUG", "-all").env_remove("RESCUE_PASSWORD").env_remove("DISPLAY").stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    sh(&mut c)
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn wine_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let o = wine(args, env);
    let (out, err) = text(&o);
    assert!(o.status.success(), "rescue.exe {args:?} failed with {:?}:\nstdout: {out}\nstderr: {err}", o.status.code());
    out
}

fn wine_fails(args: &[&str], code: i32, needle: &str) -> String {
    let o = wine(args, &[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(code), "rescue.exe {args:?}: expected exit {code}, stderr:\n{err}");
    assert!(err.to_lowercase().contains(&needle.to_lowercase()), "rescue.exe {args:?}: stderr lacks {needle:?}:\n{err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn same_bytes(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).expect("read a"), std::fs::read(b).expect("read b"));
    assert_eq!(x.len(), y.len(), "{} and {} differ in size", a.display(), b.display());
    if let Some(i) = x.iter().zip(&y).position(|(p, q)| p != q) {
        panic!("{} and {} differ at byte {i}", a.display(), b.display());
    }
}

fn sample_len() -> u64 {
    std::fs::metadata(sample_disk()).expect("sample disk").len()
}

#[test]
fn windows_build_links_only_system_dlls() {
    // WinPE has the system DLLs and nothing else: no libgcc/libwinpthread/libstdc++.
    let out = sh_ok(Command::new("x86_64-w64-mingw32-objdump").arg("-p").arg(exe()));
    let dlls: Vec<String> = out.lines().filter_map(|l| l.trim().strip_prefix("DLL Name:")).map(|d| d.trim().to_ascii_lowercase()).collect();
    assert!(dlls.iter().any(|d| d == "kernel32.dll"), "no kernel32 import? {dlls:?}");
    let system = |d: &str| {
        d.starts_with("api-ms-win-")
            || ["kernel32.dll", "ntdll.dll", "advapi32.dll", "user32.dll", "userenv.dll", "ws2_32.dll", "bcrypt.dll", "bcryptprimitives.dll", "msvcrt.dll", "shell32.dll", "ole32.dll", "oleaut32.dll", "setupapi.dll", "cfgmgr32.dll", "secur32.dll", "crypt32.dll",
                // sspi (NTLM for SMB shares): in System32 of Windows and of WinPE.
                "dnsapi.dll", "ncrypt.dll", "rpcrt4.dll", "ktmw32.dll"]
                .contains(&d)
    };
    let foreign: Vec<&String> = dlls.iter().filter(|d| !system(d)).collect();
    assert!(foreign.is_empty(), "rescue.exe needs DLLs that Windows does not ship: {foreign:?}");
}

#[test]
fn linux_image_restores_under_windows_and_back() {
    let d = tempfile::tempdir().expect("tempdir");
    let img = d.path().join("pc.rimg");
    rescue_ok(&["backup", "disk", s(sample_disk()), "-o", s(&img)]);
    let want = new_file(d.path(), "linux.img", sample_len());
    rescue_ok(&["restore", s(&img), "--to", s(&want), "--yes"]);

    // Windows reads the Linux image: info names the same layout, check passes, restore is identical.
    let info = wine_ok(&["info", &w(&img), "--json"], &[]);
    let win: serde_json::Value = serde_json::from_str(&info).expect("info --json from Windows");
    let lin: serde_json::Value = serde_json::from_str(&rescue_ok(&["info", s(&img), "--json"])).expect("json");
    assert_eq!(win["catalog"], lin["catalog"], "both builds describe the image alike");
    assert!(wine_ok(&["check", &w(&img)], &[]).contains("Image OK"));
    let got = new_file(d.path(), "win.img", sample_len());
    wine_ok(&["restore", &w(&img), "--to", &w(&got), "--yes"], &[]);
    same_bytes(&want, &got);

    // Windows writes an image (split, encrypted); Linux checks and restores it.
    let wimg = d.path().join("win.rimg");
    let pw = [("RESCUE_PASSWORD", "correct horse")];
    wine_ok(&["backup", "disk", &w(sample_disk()), "-o", &w(&wimg), "--split", "50M", "--encrypt", "--compress", "none"], &pw);
    assert!(d.path().join("win.rimg.002").is_file(), "a split set was written");
    let mut c = Command::new(env!("CARGO_BIN_EXE_rescue"));
    c.args(["restore", s(&wimg), "--to", s(&got), "--yes"]).env("RESCUE_PASSWORD", "correct horse").stdin(Stdio::null());
    sh_ok(&mut c);
    same_bytes(&want, &got);
    // A wrong password under Windows: refused before a byte is written.
    let blank = new_file(d.path(), "blank.img", sample_len());
    let o = wine(&["restore", &w(&wimg), "--to", &w(&blank), "--yes"], &[("RESCUE_PASSWORD", "wrong")]);
    let (_, err) = text(&o);
    assert!(!o.status.success(), "a wrong password was accepted");
    assert!(err.to_lowercase().contains("password"), "{err}");
    assert!(std::fs::read(&blank).expect("blank").iter().all(|b| *b == 0), "the target was written");
}

#[test]
fn chains_continue_across_linux_and_windows() {
    let d = tempfile::tempdir().expect("tempdir");
    let src = sample_copy(d.path(), "src.img");
    let full = d.path().join("pc.img");
    rescue_ok(&["backup", "disk", s(&src), "-o", s(&full)]);
    // Change the FAT partition in place (mtools, no mount), then an incremental point under Windows.
    let extra = d.path().join("new.bin");
    std::fs::write(&extra, (0..2_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect::<Vec<u8>>()).expect("new file");
    sh_ok(Command::new("mcopy").env("MTOOLS_SKIP_CHECK", "1").args(["-i", &format!("{}@@1M", s(&src))]).arg(&extra).arg("::/new.bin"));
    let out = wine_ok(&["backup", "incr", &w(&full)], &[]);
    let incr = d.path().join("pc.p002-incr.img");
    assert!(incr.is_file(), "the Windows build named its point like the Linux one:\n{out}");
    // Linux lists the chain and restores the point made on Windows: the changed disk.
    let pts: serde_json::Value = serde_json::from_str(&rescue_ok(&["points", s(&incr), "--json"])).expect("json");
    assert_eq!(pts.as_array().map(Vec::len), Some(2), "{pts}");
    let got = new_file(d.path(), "t.img", sample_len());
    rescue_ok(&["restore", s(&incr), "--to", s(&got), "--yes"]);
    // The same as a restore of a full backup of the changed disk made on Linux.
    let now = d.path().join("now.img");
    rescue_ok(&["backup", "disk", s(&src), "-o", s(&now)]);
    let changed = new_file(d.path(), "changed.img", sample_len());
    rescue_ok(&["restore", s(&now), "--to", s(&changed), "--yes"]);
    same_bytes(&changed, &got);
    // And Windows goes back to the full with a changed-block restore: the
    // same bytes as the Linux build's changed-block restore of the same
    // target (blocks the full leaves unused keep what they held, so this is
    // not a blank restore), and the file added later is gone.
    let lin = d.path().join("lin.img");
    std::fs::copy(&got, &lin).expect("copy target");
    rescue_ok(&["restore", s(&full), "--to", s(&lin), "--only-changed", "--yes"]);
    let out = wine_ok(&["restore", &w(&full), "--to", &w(&got), "--only-changed", "--yes"], &[]);
    assert!(out.to_lowercase().contains("complete"), "{out}");
    same_bytes(&lin, &got);
    let dir = sh_ok(Command::new("mdir").env("MTOOLS_SKIP_CHECK", "1").args(["-b", "-i", &format!("{}@@1M", s(&got)), "::/"]));
    assert!(!dir.to_lowercase().contains("new.bin"), "the full point has no new.bin:\n{dir}");
}

#[test]
fn windows_build_refuses_what_linux_refuses() {
    let d = tempfile::tempdir().expect("tempdir");
    let img = d.path().join("pc.rimg");
    rescue_ok(&["backup", "disk", s(sample_disk()), "-o", s(&img)]);
    // The target is the image itself.
    let before = std::fs::read(&img).expect("image");
    wine_fails(&["restore", &w(&img), "--to", &w(&img), "--yes"], 3, "holds the image");
    assert_eq!(std::fs::read(&img).expect("image"), before, "the image was changed");
    // A target too small for the partitions at their size: refused, untouched.
    let small = new_file(d.path(), "small.img", 64 << 20);
    wine_fails(&["restore", &w(&img), "--to", &w(&small), "--yes"], 3, "");
    assert!(std::fs::read(&small).expect("small").iter().all(|b| *b == 0), "the small target was written");
    // A flipped byte: check fails with exit 4 and names where.
    let mut bad = before.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x40;
    let damaged = d.path().join("bad.rimg");
    std::fs::write(&damaged, &bad).expect("write damaged");
    wine_fails(&["check", &w(&damaged)], 4, "");
}

/// `<dir>/Windows/System32/config/SYSTEM`: a copy of the real Windows 7 hive
/// (shared/testdata, msahci disabled); returns the hive's path.
fn offline_windows(dir: &Path) -> PathBuf {
    let hive_xz = testdata().join("hives/regipy/SYSTEM.xz");
    assert!(hive_xz.exists(), "test data missing: {} (shared/testdata beside the repo)", hive_xz.display());
    let cfg = dir.join("Windows/System32/config");
    std::fs::create_dir_all(&cfg).expect("mkdir config");
    std::fs::create_dir_all(dir.join("Windows/System32/drivers")).expect("mkdir drivers");
    let raw = Command::new("xz").arg("-dc").arg(&hive_xz).output().expect("run xz");
    assert!(raw.status.success(), "xz -dc {}", hive_xz.display());
    std::fs::write(cfg.join("SYSTEM"), &raw.stdout).expect("write hive");
    cfg.join("SYSTEM")
}

#[test]
fn universal_restore_edits_a_windows_folder_under_windows() {
    let d = tempfile::tempdir().expect("tempdir");
    let hive = offline_windows(d.path());
    assert_eq!(service_start(&hive, "ControlSet001", "msahci"), 3, "fixture: msahci starts disabled");
    let win = d.path().join("Windows");
    // The plan names the change and writes nothing; the volume root works too.
    let before = std::fs::read(&hive).expect("hive");
    let plan = wine_ok(&["universal-restore", "--windows-dir", &w(&win), "--for", "ahci", "--dry-run"], &[]);
    assert!(plan.to_lowercase().contains("msahci"), "{plan}");
    let plan = wine_ok(&["universal-restore", "--windows-dir", &w(d.path()), "--for", "ahci", "--dry-run", "--json"], &[]);
    let v: serde_json::Value = serde_json::from_str(&plan).expect("--json plan");
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(std::fs::read(&hive).expect("hive"), before, "--dry-run changed the hive");
    // A disk and --windows-dir together: a usage error.
    wine_fails(&["universal-restore", &w(&hive), "--windows-dir", &w(&win), "--for", "ahci"], 2, "");
    // Without a terminal and without --yes: refused.
    wine_fails(&["universal-restore", "--windows-dir", &w(&win), "--for", "ahci"], 3, "--yes");
    let out = wine_ok(&["universal-restore", "--windows-dir", &w(&win), "--for", "ahci", "--yes"], &[]);
    assert!(out.contains("registry changes"), "{out}");
    for cs in ["ControlSet001", "ControlSet002"] {
        assert_eq!(service_start(&hive, cs, "msahci"), 0, "{cs}: msahci not enabled");
    }
    let cfg = hive.parent().expect("config dir");
    let backups: Vec<_> = std::fs::read_dir(cfg).expect("config").flatten().filter(|e| e.file_name().to_string_lossy().starts_with("SYSTEM.rescue-bak")).collect();
    assert_eq!(backups.len(), 1, "the original hive is kept beside it");
    // A folder without Windows says so.
    wine_fails(&["universal-restore", "--windows-dir", &w(cfg), "--for", "ahci", "--dry-run"], 1, "no Windows installation");
    // A disk image file has no volumes on Windows: refused with the ways that
    // work (a physical disk's volumes are searched, see offline.rs), and
    // `restore --universal` is refused before the restore writes anything.
    let err = wine_fails(&["universal-restore", &w(sample_disk()), "--for", "ahci", "--dry-run"], 3, "not a disk image file");
    assert!(err.contains("--windows-dir") && err.contains("Linux rescue system"), "{err}");
    let img = d.path().join("pc.rimg");
    rescue_ok(&["backup", "disk", s(sample_disk()), "-o", s(&img)]);
    let t = new_file(d.path(), "t.img", sample_len());
    wine_fails(&["restore", &w(&img), "--to", &w(&t), "--universal", "--for", "ahci", "--yes"], 3, "not a disk image file");
    assert!(std::fs::read(&t).expect("target").iter().all(|b| *b == 0), "the restore wrote before refusing");
}

#[test]
fn universal_restore_detects_controllers_under_windows() {
    // Without --for the Windows build asks SetupAPI for this machine's storage
    // controllers. Wine lists few devices and no PCI ones, so either it found
    // some (and says which) or it says none were found and how to name them.
    let d = tempfile::tempdir().expect("tempdir");
    offline_windows(d.path());
    let o = wine(&["universal-restore", "--windows-dir", &w(&d.path().join("Windows")), "--dry-run"], &[]);
    let (out, err) = text(&o);
    match o.status.code() {
        Some(0) => assert!(err.contains("storage controller on this machine"), "found controllers but did not say which:\n{err}"),
        Some(2) => {
            assert!(err.contains("no storage controllers detected"), "{err}");
            assert!(err.contains("--for"), "no hint: {err}");
        }
        c => panic!("universal-restore without --for exited {c:?}:\nstdout: {out}\nstderr: {err}"),
    }
}

/// A tmux session, killed on drop (also when the test fails).
struct Tmux(String);

impl Tmux {
    fn pane(&self) -> String {
        let o = Command::new("tmux").args(["capture-pane", "-p", "-t", &self.0]).output().expect("tmux capture-pane");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Wait (bounded) until the pane shows `needle`; the last pane either way.
    fn wait_for(&self, needle: &str, secs: u64) -> (bool, String) {
        let t0 = std::time::Instant::now();
        loop {
            let p = self.pane();
            if p.contains(needle) || t0.elapsed().as_secs() >= secs {
                return (p.contains(needle), p);
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.0]).status();
    }
}

#[test]
fn tui_starts_and_quits_under_wine() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("tmux is not installed: skipped");
        return;
    }
    let d = tempfile::tempdir().expect("tempdir");
    let img = new_file(d.path(), "tui-disk.img", 64 << 20);
    let name = format!("rescue-wine-tui-{}", std::process::id());
    // Wine's console passes the screen through imperfectly (some cursor
    // sequences are echoed, a few lines shift), so only fragments of the home
    // screen are looked for.
    let cmd = format!(
        "WINEPREFIX='{}' WINEDEBUG=-all '{}' '{}' --disk '{}'; echo RESCUE-EXITED $?; sleep 60",
        prefix(),
        wine_bin().display(),
        exe().display(),
        w(&img)
    );
    let ok = Command::new("tmux").args(["new-session", "-d", "-s", &name, "-x", "100", "-y", "30", &cmd]).status().expect("tmux new-session");
    assert!(ok.success(), "tmux new-session failed");
    let t = Tmux(name);
    let (seen, pane) = t.wait_for("Recent operations", 120);
    assert!(seen, "no home screen:\n{pane}");
    let (seen, pane) = t.wait_for("tui-disk.img", 10);
    assert!(seen, "the disk given with --disk is not listed:\n{pane}");
    assert!(pane.contains("restore"), "no key help:\n{pane}");
    let ok = Command::new("tmux").args(["send-keys", "-t", &t.0, "q"]).status().expect("tmux send-keys");
    assert!(ok.success());
    let (seen, pane) = t.wait_for("RESCUE-EXITED", 60);
    assert!(seen, "q did not quit:\n{pane}");
    assert!(pane.contains("RESCUE-EXITED 0"), "quit with an error:\n{pane}");
}
