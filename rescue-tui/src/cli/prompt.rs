//! Passwords and confirmations.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::Context;

use super::{CliError, Exit};

/// Passphrases for LUKS partitions: each --luks-key-file as cryptsetup
/// reads a key file (all its bytes) and, when that differs, its first line
/// (a passphrase typed at a prompt and saved with a newline), then
/// RESCUE_LUKS_PASSWORD.
pub fn luks_passphrases(files: &[std::path::PathBuf]) -> Result<imaging::luks::Passphrases, CliError> {
    let mut out = Vec::new();
    for f in files {
        let b = std::fs::read(f).with_context(|| format!("reading the LUKS key file {}", f.display()))?;
        if b.is_empty() {
            return Err(super::usage(format!("{} is empty", f.display()), "put the passphrase in the file"));
        }
        let first = b.split(|&c| c == b'\n').next().unwrap_or(&[]);
        let line = first.strip_suffix(b"\r").unwrap_or(first).to_vec();
        out.push(b.clone());
        if !line.is_empty() && line != b {
            out.push(line);
        }
    }
    if let Ok(p) = std::env::var("RESCUE_LUKS_PASSWORD") {
        if !p.is_empty() {
            out.push(p.into_bytes());
        }
    }
    Ok(imaging::luks::Passphrases(out))
}

/// Password for an image: --password-file, RESCUE_PASSWORD, or the terminal
/// (asked twice when `new`).
pub fn password(file: Option<&Path>, new: bool) -> Result<Vec<u8>, CliError> {
    if let Some(f) = file {
        let s = std::fs::read_to_string(f).with_context(|| format!("reading the password file {}", f.display()))?;
        let line = s.lines().next().unwrap_or("").to_string();
        if line.is_empty() {
            return Err(super::usage(format!("{} holds an empty password", f.display()), "put the password on the first line"));
        }
        return Ok(line.into_bytes());
    }
    if let Ok(p) = std::env::var("RESCUE_PASSWORD") {
        if !p.is_empty() {
            return Ok(p.into_bytes());
        }
    }
    if !std::io::stdin().is_terminal() {
        return Err(super::usage(
            "a password is needed but there is no terminal to ask on",
            "pass --password-file FILE or set RESCUE_PASSWORD",
        ));
    }
    loop {
        let a = rpassword::prompt_password("Password: ").context("reading the password")?;
        if a.is_empty() {
            eprintln!("The password must not be empty.");
            continue;
        }
        if !new {
            return Ok(a.into_bytes());
        }
        let b = rpassword::prompt_password("Repeat the password: ").context("reading the password")?;
        if a == b {
            return Ok(a.into_bytes());
        }
        eprintln!("The passwords differ; try again.");
    }
}

/// Ask the user to type `word` to go on. `--yes` skips the question; without
/// a terminal and without --yes the operation is refused.
pub fn confirm(yes: bool, what: &str, word: &str) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError {
            exit: Exit::Refused,
            error: anyhow::anyhow!("refused: {what} needs confirmation and there is no terminal to ask on"),
            hint: Some("review the plan with --dry-run, then pass --yes".into()),
        });
    }
    eprint!("{what}\nType {word} to continue, anything else to stop: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("reading the answer")?;
    if line.trim() == word {
        Ok(())
    } else {
        Err(CliError { exit: Exit::Refused, error: anyhow::anyhow!("stopped: the answer was not {word}"), hint: Some("nothing was written".into()) })
    }
}
