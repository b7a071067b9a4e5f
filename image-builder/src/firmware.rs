//! Firmware from Debian's `non-free-firmware` component, fetched without
//! touching the system's apt configuration.
//!
//! Most NIC firmware the live system's modules ask for (`rtl_nic/*` for
//! r8169/r8152, `bnx2x/*`, `tigon/*` for tg3, `intel/ice/ddp/*` for ice) is
//! in packages of `non-free-firmware`, a component many build hosts do not
//! enable. So the builder keeps a private apt setup in its cache
//! (`CACHE/apt/non-free-firmware/`: its own sources, lists, and package
//! cache): the mirrors, suites and `Signed-By` keyrings are those of the
//! system's Debian sources (deb822 `.sources` and one-line `.list` files),
//! with the component replaced by `non-free-firmware`. `apt-get update` and
//! `apt-get download` run with `-o Dir::...` options pointing there, as root
//! or not (apt drops privileges to `_apt` only as root, and `_apt` cannot
//! enter a cache under `/root`, so as root the sandbox user is root).
//!
//! The `.deb`s land in the same cache as every other package
//! ([`Cache`]): once there, no network is needed. A package that cannot be
//! fetched is not an error; the build goes on without it and the report
//! says why ([`Fetched::error`]).
//!
//! Deliberately unsupported: `deb-src`, `cdrom:` sources, sources that are
//! not Debian archives (found by a `debian` or `debian-security` path
//! segment in the URI, as on every Debian mirror), and apt's `Dir::Etc`
//! pointing elsewhere than the directory given (`/etc/apt`).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::deb::Cache;
use crate::{Error, Result};

/// The packages holding the firmware of the default NIC modules
/// ([`crate::kmod::DEFAULT_MODULES`]), checked with `dpkg-deb -c` against
/// the modules' `firmware=` lines (bookworm, 20230210-5):
///
/// - `firmware-realtek`: `rtl_nic/*` (r8169: 20 files, r8152: 7);
/// - `firmware-bnx2x`: `bnx2x/*` (bnx2x: 6);
/// - `firmware-misc-nonfree`: `tigon/*` (tg3: 4), `intel/ice/ddp/ice.pkg`
///   (ice). The biggest download (13 MB), but the only home of those.
///
/// The other default modules name no firmware (e1000e, igb, ixgbe, i40e,
/// bnxt_en, mlx5_core, ... load theirs from flash) or none Debian ships.
pub const DEFAULT_PACKAGES: &[&str] = &[
    "firmware-realtek",
    "firmware-bnx2x",
    "firmware-misc-nonfree",
];

/// The component the firmware packages are in (since bookworm).
const COMPONENT: &str = "non-free-firmware";

/// One `deb` source of the system that is a Debian archive with `main`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AptSource {
    pub uri: String,
    pub suites: Vec<String>,
    /// `Signed-By` as written: keyring paths, or (deb822 only) an inline
    /// key, lines joined with `\n`.
    pub signed_by: Option<String>,
}

/// A URI of a Debian archive: `http://deb.debian.org/debian`,
/// `http://ftp.de.debian.org/debian/`, `http://security.debian.org/debian-security`,
/// `http://snapshot.debian.org/archive/debian/20250520T000000Z/`,
/// `mirror+file:/etc/apt/mirrors/debian.list`. Not Ubuntu, not third-party
/// repositories, not CD-ROMs.
fn is_debian_archive(uri: &str) -> bool {
    if uri.starts_with("cdrom:") {
        return false;
    }
    let path = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    path.split('/')
        .any(|seg| seg == "debian" || seg == "debian-security" || seg == "debian.list")
}

fn keep(types: &str, uri: &str, suites: &[String], components: &[&str]) -> bool {
    types.split_whitespace().any(|t| t == "deb")
        && components.contains(&"main")
        && !suites.is_empty()
        && is_debian_archive(uri)
}

/// The Debian sources of a deb822 `.sources` file (sources.list(5),
/// "DEB822-STYLE FORMAT"): one per URI of each enabled stanza.
pub fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    // Stanzas are separated by blank lines; `#` lines are comments
    // anywhere; a line starting with a space or tab continues the field.
    let mut fields: Vec<(String, String)> = Vec::new();
    let flush = |fields: &mut Vec<(String, String)>, out: &mut Vec<AptSource>| {
        let get = |k: &str| {
            fields
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        let enabled = get("Enabled").is_none_or(|v| !v.trim().eq_ignore_ascii_case("no"));
        let types = get("Types").unwrap_or("");
        let suites: Vec<String> = get("Suites")
            .unwrap_or("")
            .split_whitespace()
            // `Suites: ./` (an exact path) has no components at all.
            .filter(|s| !s.ends_with('/'))
            .map(str::to_string)
            .collect();
        let components: Vec<&str> = get("Components").unwrap_or("").split_whitespace().collect();
        let signed_by = get("Signed-By")
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        if enabled {
            for uri in get("URIs").unwrap_or("").split_whitespace() {
                if keep(types, uri, &suites, &components) {
                    out.push(AptSource {
                        uri: uri.to_string(),
                        suites: suites.clone(),
                        signed_by: signed_by.clone(),
                    });
                }
            }
        }
        fields.clear();
    };
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut fields, &mut out);
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                if !v.is_empty() {
                    v.push('\n');
                }
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            fields.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    flush(&mut fields, &mut out);
    out
}

/// The Debian sources of a one-line `sources.list` file:
/// `deb [ option=value ... ] URI SUITE COMPONENT...`.
pub fn parse_one_line(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace().peekable();
        let Some(kind) = words.next() else { continue };
        let mut signed_by = None;
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            // Options may be written `[a=b c=d]` or `[ a=b ]`.
            let mut options = String::new();
            for w in words.by_ref() {
                options.push(' ');
                options.push_str(w);
                if w.ends_with(']') {
                    break;
                }
            }
            for o in options.trim_matches([' ', '[', ']']).split_whitespace() {
                if let Some((k, v)) = o.split_once('=') {
                    if k.eq_ignore_ascii_case("signed-by") && !v.is_empty() {
                        signed_by = Some(v.replace(',', " "));
                    }
                }
            }
        }
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        let components: Vec<&str> = words.collect();
        let suites = vec![suite.to_string()];
        if !suite.ends_with('/') && keep(kind, uri, &suites, &components) {
            out.push(AptSource {
                uri: uri.to_string(),
                suites,
                signed_by,
            });
        }
    }
    out
}

/// The Debian sources configured in `etc_apt` (`/etc/apt`):
/// `sources.list`, then `sources.list.d/*.list` and `*.sources` in name
/// order (apt ignores other names there, e.g. `*.disabled`). Entries with
/// the same URI and keyring are merged.
pub fn system_sources(etc_apt: &Path) -> Vec<AptSource> {
    let mut found = Vec::new();
    if let Ok(t) = fs::read_to_string(etc_apt.join("sources.list")) {
        found.extend(parse_one_line(&t));
    }
    let mut parts: Vec<PathBuf> = fs::read_dir(etc_apt.join("sources.list.d"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    parts.sort();
    for p in parts {
        let Ok(t) = fs::read_to_string(&p) else {
            continue;
        };
        match p.extension().and_then(|x| x.to_str()) {
            Some("list") => found.extend(parse_one_line(&t)),
            Some("sources") => found.extend(parse_deb822(&t)),
            _ => {}
        }
    }
    merge(found)
}

/// One entry per (URI, keyring), suites in first-seen order without
/// repeats: apt warns about sources configured twice.
fn merge(found: Vec<AptSource>) -> Vec<AptSource> {
    let mut out: Vec<AptSource> = Vec::new();
    for s in found {
        let uri = s.uri.trim_end_matches('/').to_string();
        match out
            .iter_mut()
            .find(|o| o.uri == uri && o.signed_by == s.signed_by)
        {
            Some(o) => {
                for suite in s.suites {
                    if !o.suites.contains(&suite) {
                        o.suites.push(suite);
                    }
                }
            }
            None => out.push(AptSource { uri, ..s }),
        }
    }
    out
}

/// The private deb822 sources file: the same archives with only
/// `non-free-firmware`, and only its `Packages` index (no translations,
/// no AppStream data).
pub fn firmware_sources(sources: &[AptSource]) -> String {
    let mut out = String::from("# Written by image-builder from the system's Debian sources.\n");
    for s in sources {
        out.push_str(&format!(
            "\nTypes: deb\nURIs: {}\nSuites: {}\nComponents: {COMPONENT}\nTargets: Packages\n",
            s.uri,
            s.suites.join(" ")
        ));
        if let Some(k) = &s.signed_by {
            let mut lines = k.lines();
            out.push_str(&format!("Signed-By: {}\n", lines.next().unwrap_or("")));
            for l in lines {
                out.push_str(&format!(" {l}\n"));
            }
        }
    }
    out
}

/// apt with its own sources, lists and package cache under `dir`.
pub struct PrivateApt {
    pub dir: PathBuf,
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl PrivateApt {
    /// The `non-free-firmware` setup in the package cache `cache`.
    pub fn new(cache: &Path) -> PrivateApt {
        PrivateApt {
            dir: cache.join("apt").join(COMPONENT),
        }
    }

    fn lists(&self) -> PathBuf {
        self.dir.join("lists")
    }

    /// `-o` options for every apt-get run. The system's apt.conf (proxies,
    /// compression of lists) still applies; only sources and state move.
    pub fn options(&self) -> Vec<String> {
        let d = |p: &str| self.dir.join(p).to_string_lossy().to_string();
        let mut o = vec![
            format!("Dir::Etc::SourceList={}", d("sources.list")),
            format!("Dir::Etc::SourceParts={}", d("sources.list.d")),
            format!("Dir::State::Lists={}", d("lists")),
            format!("Dir::Cache={}", d("cache")),
            // Bounded waits: an unreachable mirror fails the fetch (and
            // the build goes on without it) instead of hanging.
            "Acquire::http::Timeout=30".into(),
            "Acquire::https::Timeout=30".into(),
            "Acquire::Retries=1".into(),
        ];
        if is_root() {
            o.push("APT::Sandbox::User=root".into());
        }
        o.into_iter().flat_map(|x| ["-o".to_string(), x]).collect()
    }

    fn prepare(&self, sources: &[AptSource]) -> Result<()> {
        for d in ["sources.list.d", "lists/partial", "cache/archives/partial"] {
            let p = self.dir.join(d);
            fs::create_dir_all(&p).map_err(|e| Error::io("creating", &p, e))?;
        }
        crate::write_atomic(&self.dir.join("sources.list"), b"")?;
        crate::write_atomic(
            &self
                .dir
                .join("sources.list.d")
                .join("debian-non-free-firmware.sources"),
            firmware_sources(sources).as_bytes(),
        )
    }

    /// Whether an earlier `update` left a `non-free-firmware` package list.
    pub fn has_lists(&self) -> bool {
        fs::read_dir(self.lists())
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                n.contains(&format!("_{COMPONENT}_binary-")) && n.contains("_Packages")
            })
    }

    /// Write the sources and run `apt-get update` for them.
    pub fn update(&self, sources: &[AptSource]) -> Result<()> {
        self.prepare(sources)?;
        let mut cmd = Command::new("apt-get");
        cmd.args(self.options()).args(["update", "-q"]);
        let shown = format!("apt-get update (sources in {})", self.dir.display());
        let out = cmd.output().map_err(|e| Error::Tool {
            cmd: shown.clone(),
            detail: e.to_string(),
            package: Some("apt".into()),
        })?;
        // `apt-get update` succeeds with only warnings when a mirror is
        // unreachable: no package list afterwards means nothing came.
        if !out.status.success() || !self.has_lists() {
            let err = String::from_utf8_lossy(&out.stderr);
            // The first message names the mirror and the cause; the
            // rest ("Some index files failed ...") adds nothing.
            let why = err
                .lines()
                .find(|l| l.starts_with("W:") || l.starts_with("E:"))
                .unwrap_or("no message from apt");
            let status = if out.status.success() {
                String::new()
            } else {
                format!(" ({})", out.status)
            };
            return Err(Error::Tool {
                cmd: shown,
                detail: format!(
                    "no {COMPONENT} package list from {}: {why}{status}",
                    sources_shown(sources),
                ),
                package: None,
            });
        }
        Ok(())
    }
}

fn sources_shown(sources: &[AptSource]) -> String {
    sources
        .iter()
        .map(|s| format!("{} {}", s.uri, s.suites.join(",")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The outcome for one firmware package.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Fetched {
    pub package: String,
    /// The `.deb` in the cache (its file name carries the version).
    pub deb: Option<String>,
    /// `lib/firmware` of the unpacked package.
    #[serde(skip)]
    pub firmware_dir: Option<PathBuf>,
    /// Why it is not there (no network, no Debian source, ...).
    pub error: Option<String>,
}

impl Fetched {
    /// `firmware-realtek 20230210-5`, or the bare name.
    pub fn label(&self) -> String {
        match self.deb.as_deref().and_then(|d| d.split('_').nth(1)) {
            Some(v) => format!("{} {}", self.package, v.replace("%3a", ":")),
            None => self.package.clone(),
        }
    }
}

/// Fetch (when not cached yet) and unpack each of `packages`. Never fails
/// as a whole: each [`Fetched`] carries its directory or its error.
/// `etc_apt` is where the system's sources are read (`/etc/apt`).
pub fn fetch(cache: &Cache, etc_apt: &Path, packages: &[String]) -> Vec<Fetched> {
    // One fetch at a time: in this process (threads of a test run) and
    // across processes (two builds started together), since apt locks its
    // lists and the second build would otherwise go without firmware.
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let apt = PrivateApt::new(&cache.dir);
    let _file_lock = fs::create_dir_all(&apt.dir)
        .and_then(|_| fs::File::create(apt.dir.join("lock")))
        .and_then(|f| f.lock().map(|_| f));

    let mut sources: Option<Vec<AptSource>> = None;
    // `apt-get update` runs at most once per fetch; its error stands for
    // every package after it.
    let mut updated: Option<std::result::Result<(), String>> = None;
    let mut out = Vec::new();
    for package in packages {
        let got = cache.cached_deb(package).map(Ok).unwrap_or_else(|| {
            let sources = sources.get_or_insert_with(|| system_sources(etc_apt));
            if sources.is_empty() {
                return Err(format!(
                    "no Debian archive with `main` in {}/sources.list or sources.list.d to take {COMPONENT} from",
                    etc_apt.display()
                ));
            }
            let download = || cache.download(package, &apt.options()).map_err(|e| short(&e));
            let already_updated = updated.is_some();
            let mut update = || {
                updated
                    .get_or_insert_with(|| apt.update(sources).map_err(|e| short(&e)))
                    .clone()
            };
            if !apt.has_lists() {
                update()?;
                return download();
            }
            // Lists from an earlier run may be stale (the mirror dropped
            // that version): refresh once and retry.
            download().or_else(|first| {
                if already_updated {
                    return Err(first);
                }
                update()?;
                download()
            })
        });
        let unpacked = got.and_then(|deb| {
            let dir = cache.unpack(&deb).map_err(|e| e.to_string())?;
            Ok((deb, dir.join("lib/firmware")))
        });
        out.push(match unpacked {
            Ok((deb, dir)) => Fetched {
                package: package.clone(),
                deb: deb.file_name().map(|n| n.to_string_lossy().to_string()),
                firmware_dir: Some(dir),
                error: None,
            },
            Err(error) => Fetched {
                package: package.clone(),
                deb: None,
                firmware_dir: None,
                error: Some(error),
            },
        });
    }
    out
}

/// An apt failure for the report, without the long `-o` options of the
/// command line: `apt-get download: E: Unable to locate package x`.
fn short(e: &Error) -> String {
    match e {
        Error::Tool { cmd, detail, .. } => {
            let verb = ["update", "download"]
                .into_iter()
                .find(|v| {
                    cmd.contains(&format!(" {v} ")) || cmd.starts_with(&format!("apt-get {v}"))
                })
                .unwrap_or("");
            format!("apt-get {verb}: {detail}")
        }
        e => e.to_string(),
    }
}

/// Package names from `--debian-firmware` in order, without repeats.
pub fn dedup(packages: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    packages
        .iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty() && seen.insert(p.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

    #[test]
    fn deb822_keeps_debian_archives_with_main() {
        let text = format!(
            "Types: deb\n\
             # http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
             URIs: http://deb.debian.org/debian\n\
             Suites: bookworm bookworm-updates\n\
             Components: main\n\
             Signed-By: {KEY}\n\
             \n\
             Types: deb deb-src\n\
             URIs: http://deb.debian.org/debian-security/\n\
             Suites: bookworm-security\n\
             Components: main contrib non-free-firmware\n\
             Signed-By: {KEY}\n\
             \n\
             Types: deb-src\n\
             URIs: http://deb.debian.org/debian\n\
             Suites: trixie\n\
             Components: main\n\
             \n\
             Types: deb\n\
             URIs: http://deb.debian.org/debian\n\
             Suites: sid\n\
             Components: main\n\
             Enabled: no\n\
             \n\
             Types: deb\n\
             URIs: https://deb.nodesource.com/node_20.x\n\
             Suites: nodistro\n\
             Components: main\n\
             \n\
             Types: deb\n\
             URIs: http://archive.ubuntu.com/ubuntu\n\
             Suites: noble\n\
             Components: main universe\n\
             \n\
             Types: deb\n\
             URIs: http://deb.debian.org/debian\n\
             Suites: bookworm-backports\n\
             Components: contrib\n"
        );
        assert_eq!(
            parse_deb822(&text),
            vec![
                AptSource {
                    uri: "http://deb.debian.org/debian".into(),
                    suites: vec!["bookworm".into(), "bookworm-updates".into()],
                    signed_by: Some(KEY.into()),
                },
                AptSource {
                    uri: "http://deb.debian.org/debian-security/".into(),
                    suites: vec!["bookworm-security".into()],
                    signed_by: Some(KEY.into()),
                },
            ]
        );
    }

    #[test]
    fn deb822_inline_key_and_several_uris() {
        let text = "types: deb\n\
                    uris: http://ftp.de.debian.org/debian http://snapshot.debian.org/archive/debian/20250520T000000Z/\n\
                    suites: bookworm\n\
                    components: main non-free-firmware\n\
                    signed-by:\n \
                    -----BEGIN PGP PUBLIC KEY BLOCK-----\n \
                    .\n \
                    mDMEZ\n \
                    -----END PGP PUBLIC KEY BLOCK-----\n";
        let s = parse_deb822(text);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[1].uri,
            "http://snapshot.debian.org/archive/debian/20250520T000000Z/"
        );
        let key =
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\n.\nmDMEZ\n-----END PGP PUBLIC KEY BLOCK-----";
        assert_eq!(s[0].signed_by.as_deref(), Some(key));
        // Written back as a deb822 multi-line field.
        let written = firmware_sources(&s[..1]);
        assert!(
            written.contains(
                "Components: non-free-firmware\nTargets: Packages\n\
                 Signed-By: -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mDMEZ\n -----END"
            ),
            "{written}"
        );
        assert_eq!(
            parse_deb822(&written).len(),
            0,
            "no `main` in what we write"
        );
    }

    #[test]
    fn one_line_sources() {
        let text = format!(
            "# comment\n\
             deb http://deb.debian.org/debian bookworm main contrib\n\
             deb [arch=amd64 signed-by={KEY}] http://deb.debian.org/debian bookworm-updates main # trailing\n\
             deb [ arch=amd64 ] http://security.debian.org/debian-security bookworm-security main\n\
             deb-src http://deb.debian.org/debian bookworm main\n\
             deb cdrom:[Debian GNU/Linux 12]/ bookworm main\n\
             deb http://archive.ubuntu.com/ubuntu noble main\n\
             deb http://deb.debian.org/debian bookworm-backports contrib\n\
             deb file:/srv/mirror/debian ./\n\
             deb http://deb.debian.org/debian\n"
        );
        let s = parse_one_line(&text);
        assert_eq!(
            s,
            vec![
                AptSource {
                    uri: "http://deb.debian.org/debian".into(),
                    suites: vec!["bookworm".into()],
                    signed_by: None,
                },
                AptSource {
                    uri: "http://deb.debian.org/debian".into(),
                    suites: vec!["bookworm-updates".into()],
                    signed_by: Some(KEY.into()),
                },
                AptSource {
                    uri: "http://security.debian.org/debian-security".into(),
                    suites: vec!["bookworm-security".into()],
                    signed_by: None,
                },
            ]
        );
    }

    #[test]
    fn system_sources_merge_files_and_ignore_other_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        fs::create_dir(d.join("sources.list.d")).expect("mkdir");
        fs::write(
            d.join("sources.list"),
            "deb http://deb.debian.org/debian/ bookworm main\n",
        )
        .expect("write");
        fs::write(
            d.join("sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n",
        )
        .expect("write");
        fs::write(
            d.join("sources.list.d/old.list.disabled-by-farm"),
            "deb http://ftp.us.debian.org/debian bookworm main\n",
        )
        .expect("write");
        let s = system_sources(d);
        assert_eq!(
            s,
            vec![AptSource {
                uri: "http://deb.debian.org/debian".into(),
                suites: vec!["bookworm".into(), "bookworm-updates".into()],
                signed_by: None,
            }]
        );
        assert_eq!(
            firmware_sources(&s),
            "# Written by image-builder from the system's Debian sources.\n\n\
             Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n\
             Components: non-free-firmware\nTargets: Packages\n"
        );
        assert!(system_sources(&d.join("nothing")).is_empty());
    }

    #[test]
    fn private_apt_options_move_sources_and_state_into_the_cache() {
        let apt = PrivateApt::new(Path::new("/c"));
        let o = apt.options();
        for want in [
            "Dir::Etc::SourceList=/c/apt/non-free-firmware/sources.list",
            "Dir::Etc::SourceParts=/c/apt/non-free-firmware/sources.list.d",
            "Dir::State::Lists=/c/apt/non-free-firmware/lists",
            "Dir::Cache=/c/apt/non-free-firmware/cache",
        ] {
            assert!(o.iter().any(|x| x == want), "{want} in {o:?}");
        }
        assert!(o.chunks(2).all(|p| p[0] == "-o"));
    }

    #[test]
    fn labels_and_dedup() {
        let f = Fetched {
            package: "firmware-realtek".into(),
            deb: Some("firmware-realtek_1%3a20230210-5_all.deb".into()),
            firmware_dir: None,
            error: None,
        };
        assert_eq!(f.label(), "firmware-realtek 1:20230210-5");
        assert_eq!(
            dedup(&["a".into(), " b".into(), "a".into(), "".into()]),
            vec!["a".to_string(), "b".to_string()]
        );
    }
}
