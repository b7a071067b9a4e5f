//! `image-builder wim` with the real Windows build of `rescue` (from
//! `scripts/build-windows`; the Wine tests in rescue-tui run that binary) on
//! a WinPE-like boot.wim made by wimlib: the result passes `wimlib-imagex
//! verify` and holds exactly that rescue.exe and a winpeshl.ini that starts
//! it; the input is not changed. Needs wimtools and the mingw-w64 toolchain
//! (scripts/setup installs both).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e} (run scripts/setup)"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn winpe_wim_carries_the_windows_build() {
    let exe = PathBuf::from(run(&mut Command::new(repo().join("scripts/build-windows"))).trim());
    let d = tempfile::tempdir().expect("tempdir");
    // A WinPE-like boot.wim (the real one comes from the Windows ADK, which
    // cannot be downloaded here): a System32 with a shell, marked bootable.
    let pe = d.path().join("pe");
    std::fs::create_dir_all(pe.join("Windows/System32")).expect("mkdir");
    std::fs::write(pe.join("Windows/System32/cmd.exe"), b"MZ stand-in shell").expect("write");
    let boot = d.path().join("boot.wim");
    run(Command::new("wimlib-imagex").arg("capture").arg(&pe).arg(&boot).args(["WinPE", "--boot"]));
    let before = std::fs::read(&boot).expect("boot.wim");
    let out = d.path().join("out");
    run(Command::new(env!("CARGO_BIN_EXE_image-builder")).args(["wim", "-o"]).arg(&out).arg("--boot-wim").arg(&boot).arg("--exe").arg(&exe));
    let wim = out.join("boot.wim");
    run(Command::new("wimlib-imagex").arg("verify").arg(&wim));
    let x = d.path().join("x");
    run(Command::new("wimlib-imagex")
        .arg("extract")
        .arg(&wim)
        .arg("1")
        .args(["/Windows/System32/rescue.exe", "/Windows/System32/winpeshl.ini", "/Windows/System32/cmd.exe", "--no-acls"])
        .arg(format!("--dest-dir={}", x.display())));
    assert!(std::fs::read(x.join("rescue.exe")).expect("rescue.exe in the WIM") == std::fs::read(&exe).expect("built exe"), "the WIM holds another rescue.exe");
    let ini = std::fs::read_to_string(x.join("winpeshl.ini")).expect("winpeshl.ini");
    assert!(ini.contains("[LaunchApps]") && ini.contains("rescue.exe"), "{ini}");
    assert_eq!(std::fs::read(x.join("cmd.exe")).expect("cmd.exe kept"), b"MZ stand-in shell");
    assert!(std::fs::read(&boot).expect("boot.wim") == before, "the input boot.wim was modified");
    // Still bootable: the boot index is kept.
    let info = run(Command::new("wimlib-imagex").arg("info").arg(&wim).arg("--header"));
    assert!(info.lines().any(|l| l.to_ascii_lowercase().starts_with("boot index") && l.trim_end().ends_with('1')), "{info}");
}
