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
