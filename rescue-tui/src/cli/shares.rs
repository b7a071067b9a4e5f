//! `rescue shares` (saved SMB locations) and the SMB passwords of a command
//! line: a saved password, `--smb-password-file`, `RESCUE_SMB_PASSWORD`, or
//! a question on the terminal.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use imaging::store::shares::{SavedShare, Shares};
use imaging::store::smb::{self, SmbUrl};

use super::{print_json, CliError, Global, SharesCmd};

/// The first line of a password file.
fn read_password_file(f: &Path) -> Result<String, CliError> {
    let s = std::fs::read_to_string(f).with_context(|| format!("reading the password file {}", f.display()))?;
    let line = s.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        return Err(super::usage(format!("{} holds an empty password", f.display()), "put the password on the first line"));
    }
    Ok(line)
}

/// Every `smb://` URL among the arguments (`--output=URL` included).
fn urls_in(args: &[OsString]) -> Vec<String> {
    args.iter()
        .filter_map(|a| a.to_str())
        .map(|a| if a.starts_with('-') { a.split_once('=').map_or("", |(_, v)| v) } else { a })
        .filter(|a| smb::is_smb_url(a))
        .map(str::to_string)
        .collect()
}

/// `NAME:REST` when NAME could be a saved share's name (not a URL, not a
/// drive letter, not a path).
pub(super) fn share_ref(s: &str) -> Option<(&str, &str)> {
    let (name, rest) = s.split_once(':')?;
    let plausible = name.len() >= 2 && !rest.starts_with("//") && !name.contains(['/', '\\']) && !name.contains(char::is_whitespace);
    plausible.then_some((name, rest))
}

/// The arguments with each `NAME:PATH` of a saved share replaced by the
/// share's URL and PATH (`nas:pc1/monday.img` becomes
/// `smb://tech@10.0.0.5/images/pc1/monday.img`), `--opt=NAME:PATH` too. A
/// local file called NAME (or the whole argument) wins, and an unreadable
/// list changes nothing: the command then says what it cannot open.
pub fn expand_names(args: Vec<OsString>) -> Vec<OsString> {
    let any = args.iter().skip(1).filter_map(|a| a.to_str()).any(|a| share_ref(value_part(a).1).is_some());
    if !any {
        return args;
    }
    match Shares::load() {
        Ok(saved) => expand_with(&saved, args),
        Err(_) => args,
    }
}

/// `--opt=VALUE` as ("--opt=", VALUE); anything else as ("", itself).
fn value_part(a: &str) -> (&str, &str) {
    match a.split_once('=') {
        Some((opt, v)) if a.starts_with("--") => (&a[..opt.len() + 1], v),
        _ => ("", a),
    }
}

fn expand_with(saved: &Shares, args: Vec<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    for (i, a) in args.into_iter().enumerate() {
        let expanded = a.to_str().filter(|_| i > 0).and_then(|s| {
            let (opt, v) = value_part(s);
            let (name, rest) = share_ref(v)?;
            if Path::new(v).exists() || Path::new(name).exists() {
                return None;
            }
            let share = saved.get(name)?;
            let mut url = share.url.trim_end_matches('/').to_string();
            for seg in rest.split(['/', '\\']).filter(|x| !x.is_empty()) {
                url.push('/');
                url.push_str(&smb::escape(seg));
            }
            Some(OsString::from(format!("{opt}{url}")))
        });
        out.push(expanded.unwrap_or(a));
    }
    out
}

/// A location typed in the TUI: a saved share's NAME:PATH becomes its URL,
/// and the share's saved password (if any) is registered for it.
pub fn resolve_typed(typed: &str) -> String {
    match Shares::load() {
        Ok(saved) => resolve_typed_with(&saved, typed),
        Err(_) => typed.to_string(),
    }
}

fn resolve_typed_with(saved: &Shares, typed: &str) -> String {
    let out = expand_with(saved, vec![OsString::from("rescue"), OsString::from(typed)]).pop().and_then(|a| a.into_string().ok()).unwrap_or_else(|| typed.to_string());
    if smb::is_smb_url(&out) && !smb::has_password(&out) {
        if let Some(p) = saved.password_for(&out) {
            let _ = smb::set_password(&out, p);
        }
    }
    out
}

/// Register a password for each SMB location on the command line that has
/// none yet: the saved one, the file's, or one asked for on the terminal
/// (once per user and server). `RESCUE_SMB_PASSWORD` needs nothing here.
/// The saved shares as (name, URL), for the TUI's pickers; none when the
/// list cannot be read (the TUI still takes typed URLs).
pub fn saved_list() -> Vec<(String, String)> {
    Shares::load().map(|s| s.list().iter().map(|x| (x.name.clone(), x.url.clone())).collect()).unwrap_or_default()
}

pub fn prepare(args: &[OsString], password_file: Option<&Path>) -> Result<(), CliError> {
    let urls = urls_in(args);
    if urls.is_empty() {
        return Ok(());
    }
    let from_file = password_file.map(read_password_file).transpose()?;
    // A broken list of saved shares must not stop a command that names its share in full.
    let saved = Shares::load().ok();
    for u in urls {
        let Ok(parsed) = SmbUrl::parse(&u) else { continue };
        if let Some(p) = &from_file {
            smb::set_password(&u, p)?;
            continue;
        }
        if let Some(p) = saved.as_ref().and_then(|s| s.password_for(&u)) {
            smb::set_password(&u, p)?;
            continue;
        }
        if smb::has_password(&u) || parsed.user.is_none() || !std::io::stdin().is_terminal() {
            continue;
        }
        let who = parsed.user.as_deref().unwrap_or_default();
        let p = rpassword::prompt_password(format!("Password of {who} on {}: ", parsed.host)).context("reading the password")?;
        smb::set_password(&u, &p)?;
    }
    Ok(())
}

pub fn run(g: &Global, cmd: SharesCmd, password_file: Option<&Path>) -> Result<(), CliError> {
    match cmd {
        SharesCmd::Add { name, url, save_password } => {
            let mut s = Shares::load()?;
            let password = if save_password {
                let p = match password_file {
                    Some(f) => read_password_file(f)?,
                    None => match std::env::var("RESCUE_SMB_PASSWORD") {
                        Ok(p) if !p.is_empty() => p,
                        _ if std::io::stdin().is_terminal() => rpassword::prompt_password("Password to save: ").context("reading the password")?,
                        _ => return Err(super::usage("--save-password needs a password but there is no terminal to ask on", "pass --smb-password-file FILE or set RESCUE_SMB_PASSWORD")),
                    },
                };
                Some(p)
            } else {
                None
            };
            let added = s.add(&name, &url, password)?.clone();
            if g.json {
                print_json(&shown(&added))?;
            } else {
                println!("saved {} = {}{}", added.name, added.url, if added.password.is_some() { " (with its password)" } else { "" });
                println!("list file: {}", s.path().display());
            }
            Ok(())
        }
        SharesCmd::List => {
            let s = Shares::load()?;
            if g.json {
                return print_json(&s.list().iter().map(shown).collect::<Vec<_>>());
            }
            if s.list().is_empty() {
                println!("no saved shares (add one with `rescue shares add NAME smb://USER@HOST/SHARE`)");
            }
            for x in s.list() {
                println!("{:<16} {}{}", x.name, x.url, if x.password.is_some() { "  (password saved)" } else { "" });
            }
            Ok(())
        }
        SharesCmd::Remove { name } => {
            let mut s = Shares::load()?;
            let r = s.remove(&name)?;
            if g.json {
                print_json(&shown(&r))
            } else {
                println!("removed {} ({})", r.name, r.url);
                Ok(())
            }
        }
        SharesCmd::Test { share } => {
            let url = resolve(&share)?;
            prepare(&[OsString::from(&url)], password_file)?;
            let t0 = std::time::Instant::now();
            let files = smb::test_location(&url).with_context(|| format!("reaching {url}"))?;
            let writable = probe_write(&url);
            let ms = t0.elapsed().as_millis();
            if g.json {
                print_json(&serde_json::json!({ "url": url, "files": files, "writable": writable.is_ok(), "write_error": writable.as_ref().err().map(|e| e.to_string()), "ms": ms }))
            } else {
                println!("{url}: reachable, {files} file(s) in the folder, {} ({ms} ms)", match &writable {
                    Ok(()) => "writable".to_string(),
                    Err(e) => format!("NOT writable: {e}"),
                });
                Ok(())
            }
        }
    }
}

/// A saved share's URL, or the URL itself.
pub fn resolve(name_or_url: &str) -> Result<String, CliError> {
    if smb::is_smb_url(name_or_url) {
        return Ok(name_or_url.to_string());
    }
    let s = Shares::load()?;
    match s.get(name_or_url) {
        Some(x) => Ok(x.url.clone()),
        None => Err(imaging::store::shares::SharesError::Unknown(name_or_url.into()).into()),
    }
}

/// Create and delete a small file in the folder: can backups go there?
fn probe_write(url: &str) -> std::io::Result<()> {
    let dir = PathBuf::from(SmbUrl::parse(url).map_err(imaging::store::StoreError::into_io)?.display());
    let probe = PathBuf::from(format!("{}/.rescue-write-test-{}", dir.display(), std::process::id()));
    let st = imaging::store::for_path(&probe);
    let mut w = st.create_new(&probe)?;
    std::io::Write::write_all(&mut w, b"rescue write test\n")?;
    w.finish()?;
    st.remove(&probe)
}

fn shown(s: &SavedShare) -> serde_json::Value {
    serde_json::json!({ "name": s.name, "url": s.url, "password_saved": s.password.is_some() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_share_names_become_urls() {
        let d = tempfile::tempdir().expect("tmp");
        let mut s = Shares::load_from(d.path()).expect("empty");
        s.add("nas", "smb://tech@10.1.1.5/images", None).expect("add");
        let local = d.path().join("x.img");
        std::fs::write(&local, b"x").expect("write");
        let local_part = format!("{}:1", local.display());
        let args: Vec<OsString> = ["rescue", "backup", "disk", "nas:1", "-o", "NAS:pc1/50%.img", "--output=nas:", "--to", "lab:x", "smb://h/s/x", "C:/x", &local_part]
            .iter()
            .map(OsString::from)
            .collect();
        let got: Vec<String> = expand_with(&s, args).into_iter().map(|a| a.into_string().expect("utf-8")).collect();
        assert_eq!(
            got,
            [
                "rescue",
                "backup",
                "disk",
                "smb://tech@10.1.1.5/images/1",
                "-o",
                "smb://tech@10.1.1.5/images/pc1/50%25.img",
                "--output=smb://tech@10.1.1.5/images",
                "--to",
                "lab:x",
                "smb://h/s/x",
                "C:/x",
                local_part.as_str()
            ]
        );
    }

    #[test]
    fn typed_locations_resolve_with_their_saved_password() {
        let d = tempfile::tempdir().expect("tmp");
        let mut s = Shares::load_from(d.path()).expect("empty");
        s.add("vault", "smb://keeper@10.77.0.9/vault", Some("sesame".into())).expect("add");
        assert_eq!(resolve_typed_with(&s, "vault:pc/a.img"), "smb://keeper@10.77.0.9/vault/pc/a.img");
        assert!(smb::has_password("smb://keeper@10.77.0.9/vault/pc/a.img"), "the saved password is registered");
        assert_eq!(resolve_typed_with(&s, "/mnt/usb/a.img"), "/mnt/usb/a.img");
    }

    #[test]
    fn finds_urls_among_arguments() {
        let a: Vec<OsString> = ["rescue", "backup", "disk", "d.img", "-o", "smb://u@h/s/x.img", "--output=SMB://v@h/s/y.img", "--comment", "smb-ish"].iter().map(OsString::from).collect();
        assert_eq!(urls_in(&a), vec!["smb://u@h/s/x.img".to_string(), "SMB://v@h/s/y.img".to_string()]);
    }
}
