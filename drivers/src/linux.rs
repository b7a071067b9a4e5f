//! Linux target fix-ups after a restore changed filesystem or partition
//! identifiers: rewrite UUID / PARTUUID references in fstab, crypttab, GRUB
//! configuration, systemd-boot entries, the kernel command line and mdadm.conf
//! (what ReaR's migration mode does with its `sed` scripts, done here as a pure,
//! tested function).
//!
//! Only references in known contexts are replaced (`UUID=`, `PARTUUID=`,
//! `/dev/disk/by-uuid/`, `/dev/disk/by-partuuid/`, GRUB `search --fs-uuid`,
//! `rd.luks.uuid=`, `rd.luks.name=`), never bare strings, and comment lines are
//! left alone. Device-mapper names such as `luks-<uuid>` are kept: they are names,
//! and changing them would have to be mirrored in every file that uses them.
//!
//! Not here (later work, needs a chroot): rebuilding the initramfs and
//! reinstalling the boot loader.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One replaced reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replacement {
    /// 1-based line.
    pub line: usize,
    /// Old identifier.
    pub old: String,
    /// New identifier.
    pub new: String,
}

/// Contexts after which an identifier is a reference.
const CONTEXTS: &[&str] = &[
    "UUID=",
    "/dev/disk/by-uuid/",
    "/dev/disk/by-partuuid/",
    "--fs-uuid ",
    "search.fs_uuid ",
    "rd.luks.uuid=",
    "rd.luks.name=",
    "luks.uuid=",
];

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == ':'
}

/// Replace identifier references per `map` (old → new, case-insensitive match)
/// in `text`; returns the new text and what changed.
pub fn rewrite_references(text: &str, map: &[(String, String)]) -> (String, Vec<Replacement>) {
    let mut out = String::with_capacity(text.len());
    let mut changes = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut res = String::with_capacity(line.len());
        let mut pos = 0;
        'scan: while pos < line.len() {
            for ctx in CONTEXTS {
                if !line[pos..].starts_with(ctx) {
                    continue;
                }
                let mut start = pos + ctx.len();
                // `--fs-uuid` may be followed by more options (`--set=root`) before the id.
                let rest = &line[start..];
                if rest.starts_with('"') {
                    start += 1;
                }
                if *ctx == "--fs-uuid " {
                    let mut s = start;
                    while line[s..].starts_with("--") {
                        match line[s..].find(' ') {
                            Some(sp) => s += sp + 1,
                            None => break,
                        }
                    }
                    start = s;
                }
                for (old, new) in map {
                    let end = start + old.len();
                    let Some(cand) = line.get(start..end) else {
                        continue;
                    };
                    let next_ok = line[end..].chars().next().map_or(true, |c| !is_id_char(c));
                    if cand.eq_ignore_ascii_case(old) && next_ok {
                        res.push_str(&line[pos..start]);
                        res.push_str(new);
                        changes.push(Replacement {
                            line: i + 1,
                            old: cand.to_owned(),
                            new: new.clone(),
                        });
                        pos = end;
                        continue 'scan;
                    }
                }
            }
            let ch = line[pos..].chars().next().unwrap_or(' ');
            res.push(ch);
            pos += ch.len_utf8();
        }
        out.push_str(&res);
    }
    (out, changes)
}

/// A file of the target system that will change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFix {
    /// Path.
    pub path: PathBuf,
    /// New content.
    pub new_text: String,
    /// Replacements.
    pub changes: Vec<Replacement>,
}

/// Files (relative to the target root) that may reference identifiers.
pub const FILES: &[&str] = &[
    "etc/fstab",
    "etc/crypttab",
    "etc/default/grub",
    "boot/grub/grub.cfg",
    "boot/grub2/grub.cfg",
    "etc/mdadm/mdadm.conf",
    "etc/mdadm.conf",
    "etc/kernel/cmdline",
];

/// Compute the fix-ups for a mounted target root (also `boot/loader/entries/*.conf`).
pub fn plan_fixups(root: &Path, map: &[(String, String)]) -> std::io::Result<Vec<FileFix>> {
    let mut paths: Vec<PathBuf> = FILES.iter().map(|f| root.join(f)).collect();
    if let Ok(rd) = std::fs::read_dir(root.join("boot/loader/entries")) {
        let mut e: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        e.sort();
        paths.extend(e);
    }
    let mut out = Vec::new();
    for p in paths {
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let (new_text, changes) = rewrite_references(&text, map);
        if !changes.is_empty() {
            out.push(FileFix {
                path: p,
                new_text,
                changes,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    const ROOT_OLD: &str = "0a1b2c3d-1111-2222-3333-444455556666";
    const ROOT_NEW: &str = "99999999-aaaa-bbbb-cccc-dddddddddddd";

    #[test]
    fn fstab_crypttab_grub() {
        let map = m(&[
            (ROOT_OLD, ROOT_NEW),
            ("ABCD-1234", "EF01-5678"),
            ("0000aaaa-01", "1111bbbb-01"),
        ]);
        let fstab = format!(
            "# UUID={ROOT_OLD} was the old root\nUUID={ROOT_OLD} / ext4 errors=remount-ro 0 1\nUUID=abcd-1234 /boot/efi vfat umask=0077 0 1\n/dev/disk/by-uuid/{ROOT_OLD}x /x ext4 defaults 0 0\nPARTUUID=0000aaaa-01 /data xfs defaults 0 0\n"
        );
        let (out, ch) = rewrite_references(&fstab, &map);
        assert_eq!(
            out,
            format!(
                "# UUID={ROOT_OLD} was the old root\nUUID={ROOT_NEW} / ext4 errors=remount-ro 0 1\nUUID=EF01-5678 /boot/efi vfat umask=0077 0 1\n/dev/disk/by-uuid/{ROOT_OLD}x /x ext4 defaults 0 0\nPARTUUID=1111bbbb-01 /data xfs defaults 0 0\n"
            )
        );
        assert_eq!(ch.iter().map(|c| c.line).collect::<Vec<_>>(), [2, 3, 5]);

        let crypttab = format!("luks-{ROOT_OLD} UUID=\"{ROOT_OLD}\" none luks,discard\n");
        let (out, _) = rewrite_references(&crypttab, &map);
        assert_eq!(
            out,
            format!("luks-{ROOT_OLD} UUID=\"{ROOT_NEW}\" none luks,discard\n"),
            "mapper name kept"
        );

        let grub = format!(
            "\tsearch --no-floppy --fs-uuid --set=root {ROOT_OLD}\n\tlinux /vmlinuz root=UUID={ROOT_OLD} ro rd.luks.uuid={ROOT_OLD} quiet\n"
        );
        let (out, ch) = rewrite_references(&grub, &map);
        assert_eq!(ch.len(), 3, "{out}");
        assert!(!out.contains(ROOT_OLD));
        assert!(out.contains("--set=root 99999999-"));
    }

    #[test]
    fn plan_over_a_root_tree() {
        let t = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(t.path().join("etc/default")).expect("mkdir");
        std::fs::create_dir_all(t.path().join("boot/loader/entries")).expect("mkdir");
        std::fs::write(
            t.path().join("etc/fstab"),
            format!("UUID={ROOT_OLD} / ext4 defaults 0 1\n"),
        )
        .expect("w");
        std::fs::write(
            t.path().join("etc/default/grub"),
            "GRUB_CMDLINE_LINUX=\"\"\n",
        )
        .expect("w");
        std::fs::write(
            t.path().join("boot/loader/entries/a.conf"),
            format!("options root=UUID={ROOT_OLD} rw\n"),
        )
        .expect("w");
        let fixes = plan_fixups(t.path(), &m(&[(ROOT_OLD, ROOT_NEW)])).expect("plan");
        assert_eq!(fixes.len(), 2);
        assert!(fixes[0].path.ends_with("etc/fstab"));
        assert!(fixes[1].new_text.contains(ROOT_NEW));
    }

    #[test]
    fn odd_input_is_safe() {
        let map = m(&[(ROOT_OLD, ROOT_NEW)]);
        for s in [
            "UUID=",
            "UUID=\"",
            "--fs-uuid --",
            "é UUID=é",
            "",
            "\n\n",
            "--fs-uuid --set=root",
        ] {
            let (out, ch) = rewrite_references(s, &map);
            assert_eq!(out, s);
            assert!(ch.is_empty());
        }
    }
}
