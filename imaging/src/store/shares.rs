//! Saved locations (`rescue shares`): named SMB shares (or folders on them)
//! that the CLI and the TUI offer, with the password only when the user asks
//! for it to be kept.
//!
//! One JSON file, `shares.json`, in `$RESCUE_CONFIG_DIR`, else
//! `$XDG_CONFIG_HOME/rescue`, else `~/.config/rescue` (`%APPDATA%\rescue` on
//! Windows). It is written to a temporary file with mode 0600 and renamed
//! over the old one, so a crash leaves the old list, and a saved password is
//! never readable by other users.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::smb::SmbUrl;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedShare {
    pub name: String,
    /// `smb://[DOMAIN;]USER@HOST[:PORT]/SHARE[/PATH]`, without a password.
    pub url: String,
    /// Kept only with `--save-password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    shares: Vec<SavedShare>,
}

/// Why the saved locations could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum SharesError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a valid list of saved shares: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("no saved share is named {0}")]
    Unknown(String),
    #[error("a share named {0} is saved already")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
}

impl SharesError {
    pub fn hint(&self) -> &'static str {
        match self {
            SharesError::Io { .. } => "check that the folder can be written (set RESCUE_CONFIG_DIR to use another one)",
            SharesError::Corrupt { .. } => "fix the file by hand, or move it away and add the shares again",
            SharesError::Unknown(_) => "`rescue shares list` shows the saved names",
            SharesError::Exists(_) => "remove it first with `rescue shares remove NAME`, or choose another name",
            SharesError::Invalid(_) => "give the share as smb://[DOMAIN;]USER@HOST[:PORT]/SHARE[/PATH]",
        }
    }
}

/// Where the saved locations live.
pub fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RESCUE_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if cfg!(windows) {
        if let Some(d) = std::env::var_os("APPDATA").filter(|d| !d.is_empty()) {
            return PathBuf::from(d).join("rescue");
        }
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("rescue");
    }
    let home = std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE")).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".config").join("rescue")
}

/// The saved locations in `dir`.
#[derive(Debug)]
pub struct Shares {
    path: PathBuf,
    list: Vec<SavedShare>,
}

impl Shares {
    /// Load `shares.json` from [`config_dir`].
    pub fn load() -> Result<Shares, SharesError> {
        Shares::load_from(&config_dir())
    }

    pub fn load_from(dir: &Path) -> Result<Shares, SharesError> {
        let path = dir.join("shares.json");
        let list = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice::<File>(&b).map_err(|e| SharesError::Corrupt { path: path.clone(), why: e.to_string() })?.shares,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(SharesError::Io { path, source }),
        };
        Ok(Shares { path, list })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn list(&self) -> &[SavedShare] {
        &self.list
    }

    pub fn get(&self, name: &str) -> Option<&SavedShare> {
        self.list.iter().find(|s| s.name.eq_ignore_ascii_case(name))
    }

    /// Add a share (the URL is checked and stored normalised).
    pub fn add(&mut self, name: &str, url: &str, password: Option<String>) -> Result<&SavedShare, SharesError> {
        if name.is_empty() || name.contains(['/', '\\', ':']) || name.chars().any(char::is_whitespace) {
            return Err(SharesError::Invalid(format!("{name:?} is not a usable name (no spaces, '/', '\\' or ':')")));
        }
        if self.get(name).is_some() {
            return Err(SharesError::Exists(name.into()));
        }
        let u = SmbUrl::parse(url).map_err(|e| SharesError::Invalid(e.to_string()))?;
        self.list.push(SavedShare { name: name.into(), url: u.display(), password });
        self.save()?;
        Ok(self.list.last().expect("just pushed"))
    }

    pub fn remove(&mut self, name: &str) -> Result<SavedShare, SharesError> {
        let i = self.list.iter().position(|s| s.name.eq_ignore_ascii_case(name)).ok_or_else(|| SharesError::Unknown(name.into()))?;
        let s = self.list.remove(i);
        self.save()?;
        Ok(s)
    }

    /// The saved password for the user, server and share of `url`, if one
    /// is kept (the most specific saved location wins).
    pub fn password_for(&self, url: &str) -> Option<&str> {
        let u = SmbUrl::parse(url).ok()?;
        self.list
            .iter()
            .filter(|s| s.password.is_some())
            .filter_map(|s| SmbUrl::parse(&s.url).ok().map(|su| (s, su)))
            .filter(|(_, su)| su.user == u.user && su.host.eq_ignore_ascii_case(&u.host) && su.port == u.port && su.share.eq_ignore_ascii_case(&u.share))
            .max_by_key(|(_, su)| su.path.len())
            .and_then(|(s, _)| s.password.as_deref())
    }

    fn save(&self) -> Result<(), SharesError> {
        let io = |source| SharesError::Io { path: self.path.clone(), source };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = self.path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io)?;
        let body = serde_json::to_vec_pretty(&File { shares: self.list.clone() }).map_err(|e| io(io::Error::other(e)))?;
        f.write_all(&body).and_then(|_| f.write_all(b"\n")).and_then(|_| f.sync_all()).map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_list_remove_and_passwords() {
        let d = tempfile::tempdir().expect("tmp");
        let mut s = Shares::load_from(d.path()).expect("empty");
        assert!(s.list().is_empty());
        s.add("nas", "smb://tech@10.1.1.5/images/pc%201", Some("pw1".into())).expect("add");
        s.add("lab", "smb://tech@10.1.1.5/images", None).expect("add");
        s.add("other", "smb://ann@10.1.1.5/images", Some("pw2".into())).expect("add");
        assert!(matches!(s.add("NAS", "smb://h/s", None), Err(SharesError::Exists(_))));
        assert!(matches!(s.add("bad name", "smb://h/s", None), Err(SharesError::Invalid(_))));
        assert!(matches!(s.add("pw", "smb://u:p@h/s", None), Err(SharesError::Invalid(_))));
        let again = Shares::load_from(d.path()).expect("reload");
        assert_eq!(again.list().len(), 3);
        assert_eq!(again.get("nas").expect("nas").url, "smb://tech@10.1.1.5/images/pc 1");
        assert_eq!(again.password_for("smb://tech@10.1.1.5/images/pc 1/x.img"), Some("pw1"));
        assert_eq!(again.password_for("smb://ann@10.1.1.5/Images/y.img"), Some("pw2"));
        assert_eq!(again.password_for("smb://tech@10.1.1.6/images/x.img"), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(again.path()).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = std::fs::read_to_string(again.path()).expect("read");
        assert!(!text.contains("\"password\": null"), "no password key where none was saved");
        let mut again = again;
        assert_eq!(again.remove("Lab").expect("remove").name, "lab");
        assert!(matches!(again.remove("lab"), Err(SharesError::Unknown(_))));
        assert_eq!(Shares::load_from(d.path()).expect("reload").list().len(), 2);
        std::fs::write(d.path().join("shares.json"), b"{not json").expect("write");
        assert!(matches!(Shares::load_from(d.path()), Err(SharesError::Corrupt { .. })));
    }
}
