//! WinPE: take a user's `boot.wim` (WinPE from the Windows ADK, or
//! `sources/boot.wim` of an install medium), add the Windows build of
//! `rescue` as `\Windows\System32\rescue.exe` and a `winpeshl.ini` that
//! starts it instead of the default shell, with `wimlib-imagex` (package
//! wimtools). The input is never modified: the result is a new file.
//!
//! Deliberately not done: reproducibility (WIM headers carry a GUID and
//! timestamps that wimlib sets itself), adding drivers (`--add-file` style
//! driver injection belongs to DISM/drvload inside WinPE).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Error, Result};

/// The `winpeshl.ini` that replaces WinPE's shell with `rescue`.
pub const WINPESHL_INI: &str = "[LaunchApps]\r\n%SYSTEMDRIVE%\\Windows\\System32\\rescue.exe\r\n";

#[derive(Debug, Clone)]
pub struct Options {
    pub boot_wim: PathBuf,
    /// The Windows `rescue.exe` (until that build exists, any .exe).
    pub exe: PathBuf,
    /// Image to change; default: the WIM's boot index, else 1.
    pub index: Option<u32>,
}

fn wimlib(args: &[&std::ffi::OsStr], stdin: Option<&str>) -> Result<String> {
    let shown = format!(
        "wimlib-imagex {}",
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut cmd = Command::new("wimlib-imagex");
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let tool_err = |detail: String| Error::Tool {
        cmd: shown.clone(),
        detail,
        package: Some("wimtools".into()),
    };
    let mut child = cmd.spawn().map_err(|e| tool_err(e.to_string()))?;
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        std::io::Write::write_all(&mut w, text.as_bytes()).map_err(|e| tool_err(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| tool_err(e.to_string()))?;
    if !out.status.success() {
        return Err(tool_err(format!(
            "{} ({})",
            String::from_utf8_lossy(&out.stderr).trim(),
            out.status
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// The boot index of a WIM (`Boot Index:` of `wimlib-imagex info`), if set.
pub fn boot_index(wim: &Path) -> Result<Option<u32>> {
    let info = wimlib(
        &["info".as_ref(), wim.as_os_str(), "--header".as_ref()],
        None,
    )?;
    Ok(info
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=').or_else(|| l.split_once(':'))?;
            (k.trim().eq_ignore_ascii_case("boot index")).then(|| v.trim().parse().ok())?
        })
        .filter(|&i| i > 0))
}

/// Write the changed WIM to `out`.
pub fn write(opts: &Options, out: &Path) -> Result<()> {
    if !opts.boot_wim.is_file() {
        return Err(Error::Missing {
            what: "boot.wim".into(),
            path: opts.boot_wim.clone(),
            package: None,
        });
    }
    if !opts.exe.is_file() {
        return Err(Error::Missing {
            what: "rescue.exe".into(),
            path: opts.exe.clone(),
            package: None,
        });
    }
    let index = match opts.index {
        Some(i) => i,
        None => boot_index(&opts.boot_wim)?.unwrap_or(1),
    };
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        out.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let ini = dir.join(format!(".winpeshl.ini.tmp{}", std::process::id()));
    let result = (|| {
        fs::copy(&opts.boot_wim, &tmp).map_err(|e| Error::io("copying", &opts.boot_wim, e))?;
        fs::write(&ini, WINPESHL_INI).map_err(|e| Error::io("writing", &ini, e))?;
        let commands = format!(
            "add '{}' /Windows/System32/rescue.exe\nadd '{}' /Windows/System32/winpeshl.ini\n",
            opts.exe.display(),
            ini.display()
        );
        wimlib(
            &[
                "update".as_ref(),
                tmp.as_os_str(),
                index.to_string().as_ref(),
            ],
            Some(&commands),
        )?;
        fs::rename(&tmp, out).map_err(|e| Error::io("renaming into place", out, e))
    })();
    let _ = fs::remove_file(&ini);
    let _ = fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have_wimlib() -> bool {
        Command::new("wimlib-imagex")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// On a synthetic WinPE-like WIM made by wimlib itself.
    #[test]
    fn adds_rescue_and_winpeshl_to_a_synthetic_wim() {
        if !have_wimlib() {
            eprintln!("SKIPPED: wimlib-imagex not installed (apt-get install wimtools)");
            return;
        }
        let t = tempfile::tempdir().expect("tempdir");
        let src = t.path().join("pe");
        fs::create_dir_all(src.join("Windows/System32")).expect("mkdir");
        fs::write(src.join("Windows/System32/cmd.exe"), b"MZ fake cmd").expect("write");
        let wim = t.path().join("boot.wim");
        wimlib(
            &[
                "capture".as_ref(),
                src.as_os_str(),
                wim.as_os_str(),
                "WinPE".as_ref(),
                "--boot".as_ref(),
            ],
            None,
        )
        .expect("capture");
        assert_eq!(boot_index(&wim).expect("info"), Some(1));
        let exe = t.path().join("rescue.exe");
        fs::write(&exe, b"MZ fake rescue").expect("write");
        let before = fs::read(&wim).expect("read");
        let out = t.path().join("out/boot.wim");
        write(
            &Options {
                boot_wim: wim.clone(),
                exe,
                index: None,
            },
            &out,
        )
        .expect("update");
        assert_eq!(
            fs::read(&wim).expect("read"),
            before,
            "the input WIM must not change"
        );
        let ini = wimlib(
            &[
                "extract".as_ref(),
                out.as_os_str(),
                "1".as_ref(),
                "/Windows/System32/winpeshl.ini".as_ref(),
                "--to-stdout".as_ref(),
            ],
            None,
        )
        .expect("extract");
        assert_eq!(ini, WINPESHL_INI);
        let listing = wimlib(&["dir".as_ref(), out.as_os_str(), "1".as_ref()], None).expect("dir");
        for f in ["/Windows/System32/rescue.exe", "/Windows/System32/cmd.exe"] {
            assert!(listing.lines().any(|l| l == f), "{f} not in:\n{listing}");
        }
        // No leftovers next to the output.
        let names: Vec<_> = fs::read_dir(t.path().join("out"))
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["boot.wim"]);
    }

    #[test]
    fn missing_inputs_are_named() {
        let e = write(
            &Options {
                boot_wim: "/nonexistent/boot.wim".into(),
                exe: "/x.exe".into(),
                index: None,
            },
            Path::new("/tmp/x.wim"),
        )
        .expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/boot.wim"), "{e}");
    }
}
