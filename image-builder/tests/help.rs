//! `--help` of every subcommand fits in 80 columns.

use std::process::Command;

#[test]
fn help_fits_80_columns() {
    for sub in [
        &[][..],
        &["initramfs"],
        &["iso"],
        &["usb"],
        &["pxe"],
        &["wim"],
        &["all"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_image-builder"))
            .args(sub)
            .arg("--help")
            .env("COLUMNS", "80")
            .output()
            .expect("runs");
        assert!(out.status.success(), "{sub:?} --help failed");
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines() {
            assert!(
                line.chars().count() <= 80,
                "{sub:?} --help line over 80 columns: {line:?}"
            );
        }
    }
}

/// The arm64 files of `pxe` go together: a kernel without its initramfs
/// and iPXE is refused before anything is built.
#[test]
fn pxe_arm64_files_go_together() {
    let out = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .args(["pxe", "-o", "/nonexistent/never-written", "--arm64-kernel", "/x/vmlinuz-arm64"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--arm64-initrd") && err.contains("--arm64-snp"), "{err}");
    assert!(!std::path::Path::new("/nonexistent/never-written").exists());
}
