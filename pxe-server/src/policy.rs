//! Boot policy from a TOML file: a default action, groups of MACs and single
//! clients, each with an optional unattended job, turned into kernel
//! command-line arguments for the rescue system.
//!
//! ```toml
//! default = "menu"              # menu | rescue | local
//! cmdline = "console=ttyS0"     # appended for every client
//! secure_boot = false           # serve shim -> GRUB to UEFI x64 (full mode)
//!
//! [groups.lab1]
//! macs = ["52:54:00:00:00:01", "52:54:00:00:00:02"]
//! job = "restore images/win10.img to /dev/sda then poweroff"
//!
//! [clients."52:54:00:00:00:03"]
//! action = "local"
//! ip = "192.168.50.120"         # full mode: always this address (inside --range)
//! ```
//!
//! Precedence: a `[clients]` entry, then the first group listing the MAC (in
//! name order), then the defaults. A job implies the `rescue` action.
//!
//! A restore job's IMAGE is an absolute path or a URL (`scheme://...`) as
//! the live system sees it, or else a path under the server's `--images`
//! directory, which the live system fetches as
//! `{rescue.server}/images/{IMAGE}`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::mac::Mac;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// iPXE menu: rescue or local disk, rescue after a timeout.
    #[default]
    Menu,
    /// Boot the rescue environment directly.
    Rescue,
    /// Boot the local disk.
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum After {
    Poweroff,
    Reboot,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum JobKind {
    Restore { image: String, disk: String },
    Backup { disk: String, share: String },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Job {
    #[serde(flatten)]
    pub kind: JobKind,
    pub then: Option<After>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("job {text:?} is not understood: {why}")]
pub struct JobParseError {
    pub text: String,
    pub why: &'static str,
}

impl Job {
    /// `restore IMAGE to DISK [then poweroff|reboot]` or
    /// `backup DISK to SHARE [then poweroff|reboot]`. Words are separated by
    /// spaces, so IMAGE, DISK and SHARE cannot contain any (they end up as
    /// kernel arguments, which cannot either).
    pub fn parse(text: &str) -> Result<Job, JobParseError> {
        let err = |why| JobParseError {
            text: text.into(),
            why,
        };
        let w: Vec<&str> = text.split_whitespace().collect();
        let (kind, rest) = match w.as_slice() {
            ["restore", image, "to", disk, rest @ ..] => (
                JobKind::Restore {
                    image: image.to_string(),
                    disk: disk.to_string(),
                },
                rest,
            ),
            ["backup", disk, "to", share, rest @ ..] => (
                JobKind::Backup {
                    disk: disk.to_string(),
                    share: share.to_string(),
                },
                rest,
            ),
            _ => {
                return Err(err(
                    "expected `restore IMAGE to DISK` or `backup DISK to SHARE`",
                ))
            }
        };
        let then = match rest {
            [] => None,
            ["then", "poweroff"] => Some(After::Poweroff),
            ["then", "reboot"] => Some(After::Reboot),
            _ => {
                return Err(err(
                    "after the job only `then poweroff` or `then reboot` may follow",
                ))
            }
        };
        let bad = |s: &str| s.chars().any(|c| c.is_control() || c == '"');
        match &kind {
            JobKind::Restore { image: a, disk: b } | JobKind::Backup { disk: a, share: b } => {
                if bad(a) || bad(b) {
                    return Err(err("names must not contain quotes or control characters"));
                }
            }
        }
        Ok(Job { kind, then })
    }

    /// Kernel arguments read by `rescue` in the live system.
    pub fn kernel_args(&self) -> Vec<String> {
        let mut v = match &self.kind {
            JobKind::Restore { image, disk } => vec![
                "rescue.job=restore".to_string(),
                format!("rescue.image={image}"),
                format!("rescue.disk={disk}"),
            ],
            JobKind::Backup { disk, share } => vec![
                "rescue.job=backup".to_string(),
                format!("rescue.disk={disk}"),
                format!("rescue.share={share}"),
            ],
        };
        if let Some(t) = self.then {
            v.push(format!(
                "rescue.then={}",
                match t {
                    After::Poweroff => "poweroff",
                    After::Reboot => "reboot",
                }
            ));
        }
        v
    }

    /// The image of a restore job when it names a file under the server's
    /// `--images` directory: not an absolute path, not a URL.
    pub fn served_image(&self) -> Option<&str> {
        match &self.kind {
            JobKind::Restore { image, .. } if !image.starts_with('/') && !image.contains("://") => {
                Some(image)
            }
            _ => None,
        }
    }

    pub fn describe(&self) -> String {
        let mut s = match &self.kind {
            JobKind::Restore { image, disk } => format!("restore {image} to {disk}"),
            JobKind::Backup { disk, share } => format!("backup {disk} to {share}"),
        };
        match self.then {
            Some(After::Poweroff) => s.push_str(" then poweroff"),
            Some(After::Reboot) => s.push_str(" then reboot"),
            None => {}
        }
        s
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    default: Option<Action>,
    cmdline: Option<String>,
    secure_boot: Option<bool>,
    #[serde(default)]
    groups: BTreeMap<String, EntryFile>,
    #[serde(default)]
    clients: BTreeMap<String, EntryFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    #[serde(default)]
    macs: Vec<String>,
    action: Option<Action>,
    job: Option<String>,
    secure_boot: Option<bool>,
    cmdline: Option<String>,
    /// Reserved address (full mode), `[clients]` entries only.
    ip: Option<Ipv4Addr>,
}

/// What one client gets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    pub action: Action,
    pub job: Option<Job>,
    pub secure_boot: bool,
    /// Extra kernel arguments (policy-wide plus entry-specific).
    pub cmdline: String,
    /// Which entry matched: "default", "group lab1", "client 52:54:...".
    pub source: String,
}

#[derive(Debug, Clone)]
struct Entry {
    action: Option<Action>,
    job: Option<Job>,
    secure_boot: Option<bool>,
    cmdline: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    default: Action,
    cmdline: String,
    secure_boot: bool,
    groups: Vec<(String, Vec<Mac>, Entry)>,
    clients: BTreeMap<Mac, Entry>,
    reservations: BTreeMap<Mac, Ipv4Addr>,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("policy file {path} is not valid TOML for a policy")]
    Syntax {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("policy file {path}, {entry}: {source}")]
    Mac {
        path: PathBuf,
        entry: String,
        source: crate::mac::MacParseError,
    },
    #[error("policy file {path}, {entry}: `ip` reserves an address for one client; put it under [clients.\"MAC\"]")]
    GroupIp { path: PathBuf, entry: String },
    #[error("policy file {path}, {entry}: {source}")]
    Job {
        path: PathBuf,
        entry: String,
        source: JobParseError,
    },
}

impl PolicyError {
    pub fn hint(&self) -> &'static str {
        "fix the policy file (see `pxe-server --help` for the format); on SIGHUP the previous policy stays in force"
    }
}

impl Policy {
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.into(),
            source,
        })?;
        Policy::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Policy, PolicyError> {
        let f: PolicyFile = toml::from_str(text).map_err(|source| PolicyError::Syntax {
            path: path.into(),
            source,
        })?;
        let entry = |name: &str, e: &EntryFile| -> Result<Entry, PolicyError> {
            let job = match &e.job {
                Some(j) => Some(Job::parse(j).map_err(|source| PolicyError::Job {
                    path: path.into(),
                    entry: name.into(),
                    source,
                })?),
                None => None,
            };
            Ok(Entry {
                action: e.action,
                job,
                secure_boot: e.secure_boot,
                cmdline: e.cmdline.clone(),
            })
        };
        let mut groups = Vec::new();
        for (name, g) in &f.groups {
            let label = format!("group {name}");
            let mut macs = Vec::new();
            for m in &g.macs {
                macs.push(m.parse().map_err(|source| PolicyError::Mac {
                    path: path.into(),
                    entry: label.clone(),
                    source,
                })?);
            }
            if g.ip.is_some() {
                return Err(PolicyError::GroupIp {
                    path: path.into(),
                    entry: label,
                });
            }
            groups.push((name.clone(), macs, entry(&label, g)?));
        }
        let mut clients = BTreeMap::new();
        let mut reservations = BTreeMap::new();
        for (m, c) in &f.clients {
            let label = format!("client {m}");
            let mac: Mac = m.parse().map_err(|source| PolicyError::Mac {
                path: path.into(),
                entry: label.clone(),
                source,
            })?;
            clients.insert(mac, entry(&label, c)?);
            if let Some(ip) = c.ip {
                reservations.insert(mac, ip);
            }
        }
        Ok(Policy {
            default: f.default.unwrap_or_default(),
            cmdline: f.cmdline.unwrap_or_default(),
            secure_boot: f.secure_boot.unwrap_or(false),
            groups,
            clients,
            reservations,
        })
    }

    /// Addresses reserved per MAC (`ip = ...` under `[clients."MAC"]`).
    pub fn reservations(&self) -> &BTreeMap<Mac, Ipv4Addr> {
        &self.reservations
    }

    /// Restore jobs whose image is a file under `--images`: (entry, image).
    pub fn served_images(&self) -> Vec<(String, String)> {
        let groups = self
            .groups
            .iter()
            .map(|(name, _, e)| (format!("group {name}"), e));
        let clients = self
            .clients
            .iter()
            .map(|(mac, e)| (format!("client {mac}"), e));
        groups
            .chain(clients)
            .filter_map(|(label, e)| {
                let img = e.job.as_ref()?.served_image()?;
                Some((label, img.to_string()))
            })
            .collect()
    }

    pub fn for_client(&self, mac: Mac) -> Assignment {
        let (entry, source) = if let Some(e) = self.clients.get(&mac) {
            (Some(e), format!("client {mac}"))
        } else if let Some((name, _, e)) = self.groups.iter().find(|(_, m, _)| m.contains(&mac)) {
            (Some(e), format!("group {name}"))
        } else {
            (None, "default".to_string())
        };
        let job = entry.and_then(|e| e.job.clone());
        let action = if job.is_some() {
            Action::Rescue
        } else {
            entry.and_then(|e| e.action).unwrap_or(self.default)
        };
        let mut cmdline = self.cmdline.clone();
        if let Some(extra) = entry.and_then(|e| e.cmdline.as_deref()) {
            if !cmdline.is_empty() {
                cmdline.push(' ');
            }
            cmdline.push_str(extra);
        }
        Assignment {
            action,
            job,
            secure_boot: entry
                .and_then(|e| e.secure_boot)
                .unwrap_or(self.secure_boot),
            cmdline,
            source,
        }
    }
}

/// The full kernel command line for a client: server address and MAC, the
/// job, the policy's arguments, then the operator's `--cmdline`.
pub fn kernel_cmdline(server_url: &str, mac: Mac, a: &Assignment, operator: &str) -> String {
    let mut parts = vec![
        format!("rescue.server={server_url}"),
        format!("rescue.mac={mac}"),
    ];
    if let Some(j) = &a.job {
        parts.extend(j.kernel_args());
    }
    for extra in [a.cmdline.as_str(), operator] {
        if !extra.trim().is_empty() {
            parts.push(extra.trim().to_string());
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
default = "menu"
cmdline = "console=ttyS0"

[groups.lab1]
macs = ["52:54:00:00:00:01", "52-54-00-00-00-02"]
job = "restore images/win10.img to /dev/sda then poweroff"

[groups.sb]
macs = ["52:54:00:00:00:05"]
secure_boot = true

[clients."52:54:00:00:00:02"]
job = "backup /dev/nvme0n1 to smb://nas/backups then reboot"
cmdline = "quiet"

[clients."52:54:00:00:00:03"]
action = "local"
"#;

    fn mac(s: &str) -> Mac {
        s.parse().expect("mac")
    }

    #[test]
    fn precedence_and_cmdline() {
        let p = Policy::parse(SAMPLE, Path::new("p.toml")).expect("parse");
        let a1 = p.for_client(mac("52:54:00:00:00:01"));
        assert_eq!(a1.action, Action::Rescue);
        assert_eq!(a1.source, "group lab1");
        assert_eq!(
            kernel_cmdline("http://10.0.0.1:8080", mac("52:54:00:00:00:01"), &a1, "loglevel=3"),
            "rescue.server=http://10.0.0.1:8080 rescue.mac=52:54:00:00:00:01 rescue.job=restore \
             rescue.image=images/win10.img rescue.disk=/dev/sda rescue.then=poweroff console=ttyS0 loglevel=3"
        );
        let a2 = p.for_client(mac("52:54:00:00:00:02"));
        assert_eq!(a2.source, "client 52:54:00:00:00:02");
        assert_eq!(
            a2.job.as_ref().map(|j| j.kernel_args()),
            Some(vec![
                "rescue.job=backup".to_string(),
                "rescue.disk=/dev/nvme0n1".into(),
                "rescue.share=smb://nas/backups".into(),
                "rescue.then=reboot".into()
            ])
        );
        assert_eq!(a2.cmdline, "console=ttyS0 quiet");
        assert_eq!(p.for_client(mac("52:54:00:00:00:03")).action, Action::Local);
        assert!(p.for_client(mac("52:54:00:00:00:05")).secure_boot);
        let d = p.for_client(mac("52:54:00:00:00:99"));
        assert_eq!(
            (d.action, d.source.as_str(), d.job),
            (Action::Menu, "default", None)
        );
    }

    #[test]
    fn reservations_and_served_images() {
        let p = Policy::parse(
            "[clients.\"52:54:00:00:00:07\"]\nip = \"10.0.0.120\"\n\
             job = \"restore lab/win.img to /dev/sda\"\n\
             [clients.\"52:54:00:00:00:08\"]\njob = \"restore /mnt/x.img to /dev/sda\"\n\
             [groups.g]\nmacs = []\njob = \"restore http://nas/y.img to /dev/sda\"\n",
            Path::new("p.toml"),
        )
        .expect("parse");
        assert_eq!(
            p.reservations().iter().collect::<Vec<_>>(),
            vec![(&mac("52:54:00:00:00:07"), &"10.0.0.120".parse::<Ipv4Addr>().expect("ip"))]
        );
        assert_eq!(
            p.served_images(),
            vec![("client 52:54:00:00:00:07".to_string(), "lab/win.img".to_string())]
        );
        let e = Policy::parse("[groups.g]\nmacs = []\nip = \"10.0.0.1\"\n", Path::new("p.toml"))
            .expect_err("ip in a group");
        assert!(e.to_string().contains("group g") && e.to_string().contains("[clients"), "{e}");
        let e = Policy::parse("[clients.\"52:54:00:00:00:07\"]\nip = \"10.0.0\"\n", Path::new("p.toml"))
            .expect_err("bad ip");
        assert!(matches!(e, PolicyError::Syntax { .. }), "{e}");
    }

    #[test]
    fn errors_say_where() {
        let e = Policy::parse("[clients.\"nope\"]\naction=\"menu\"", Path::new("p.toml"))
            .expect_err("bad mac");
        assert!(e.to_string().contains("client nope"), "{e}");
        let e = Policy::parse(
            "[groups.g]\nmacs=[]\njob=\"format /dev/sda\"",
            Path::new("p.toml"),
        )
        .expect_err("bad job");
        assert!(e.to_string().contains("group g"), "{e}");
        let e = Policy::parse("defualt = \"menu\"", Path::new("p.toml")).expect_err("typo");
        assert!(matches!(e, PolicyError::Syntax { .. }));
        assert!(Job::parse("restore a to b then explode").is_err());
        assert!(Job::parse("restore a\"x to b").is_err());
        assert_eq!(
            Job::parse("restore a to b").map(|j| j.describe()),
            Ok("restore a to b".to_string())
        );
    }
}
