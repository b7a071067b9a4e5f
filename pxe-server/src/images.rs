//! `--images DIR`: disk images served read-only over HTTP at
//! `/images/<relative path>` (GET and HEAD, with ranges, like bundle files),
//! for restore jobs whose IMAGE is neither an absolute path nor a URL: the
//! live system fetches those as `{rescue.server}/images/{IMAGE}`.
//!
//! Names are confined to DIR exactly like bundle names
//! ([`crate::bundle::confine`]): no `..`, no symlinks leading out.

use std::path::{Path, PathBuf};

use crate::bundle::{confine, ResolveError};
use crate::policy::Policy;

/// URL prefix of the images on the HTTP server.
pub const URL_PREFIX: &str = "images/";

#[derive(Debug, thiserror::Error)]
#[error("--images {path} is not a readable directory")]
pub struct ImagesError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl ImagesError {
    pub fn hint(&self) -> &'static str {
        "give --images the directory that holds the disk images of the policy's restore jobs"
    }
}

#[derive(Debug, Clone)]
pub struct ImageDir {
    /// Canonical.
    root: PathBuf,
}

impl ImageDir {
    pub fn open(dir: &Path) -> Result<ImageDir, ImagesError> {
        let err = |source| ImagesError {
            path: dir.into(),
            source,
        };
        let root = dir.canonicalize().map_err(err)?;
        std::fs::read_dir(&root).map_err(err)?;
        Ok(ImageDir { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file for `/images/<rel>` (`rel` without the prefix).
    pub fn resolve(&self, rel: &str) -> Result<PathBuf, ResolveError> {
        confine(&self.root, rel)
    }
}

/// One warning per restore job of `policy` whose image should be under
/// `--images` but cannot be served: no `--images`, or no such file there.
pub fn check_policy(policy: &Policy, images: Option<&ImageDir>) -> Vec<String> {
    policy
        .served_images()
        .into_iter()
        .filter_map(|(entry, image)| match images {
            None => Some(format!(
                "{entry}: restore image {image:?} is a relative path, which the live system fetches from this server's /images/, but no --images DIR was given"
            )),
            Some(d) => match d.resolve(&image) {
                Ok(_) => None,
                Err(e) => Some(format!(
                    "{entry}: restore image {image:?} cannot be served from --images {}: {e}",
                    d.root().display()
                )),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_confined_to_the_directory() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path().join("images");
        std::fs::create_dir_all(dir.join("lab")).expect("mkdir");
        std::fs::write(dir.join("lab/win.img"), b"image").expect("write");
        std::fs::write(t.path().join("secret"), b"s").expect("write");
        std::os::unix::fs::symlink(t.path().join("secret"), dir.join("out")).expect("symlink");
        std::os::unix::fs::symlink("../..", dir.join("lab/up")).expect("symlink");
        std::os::unix::fs::symlink("win.img", dir.join("lab/alias.img")).expect("symlink");
        let d = ImageDir::open(&dir).expect("open");
        let root = dir.canonicalize().expect("canonical");
        assert_eq!(d.resolve("lab/win.img").expect("file"), root.join("lab/win.img"));
        assert_eq!(d.resolve("/lab/win.img").expect("rooted"), root.join("lab/win.img"));
        // A symlink that stays inside is fine.
        assert_eq!(d.resolve("lab/alias.img").expect("alias"), root.join("lab/win.img"));
        for bad in ["../secret", "lab/../../secret", "out", "lab/up/secret", "lab\\..\\..\\secret"] {
            let e = d.resolve(bad).expect_err(bad);
            assert!(e.is_violation(), "{bad}: {e:?}");
        }
        for missing in ["lab/none.img", "lab", "", "/"] {
            let e = d.resolve(missing).expect_err(missing);
            assert!(!e.is_violation(), "{missing}: {e:?}");
        }
        assert!(ImageDir::open(&t.path().join("nope")).is_err());
        assert!(ImageDir::open(&t.path().join("secret")).is_err());
    }

    #[test]
    fn policy_check_warns_about_unservable_relative_images() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::write(t.path().join("here.img"), b"x").expect("write");
        let p = Policy::parse(
            "[clients.\"52:54:00:00:00:01\"]\njob = \"restore here.img to /dev/sda\"\n\
             [clients.\"52:54:00:00:00:02\"]\njob = \"restore gone.img to /dev/sda\"\n\
             [clients.\"52:54:00:00:00:03\"]\njob = \"restore /abs.img to /dev/sda\"\n\
             [clients.\"52:54:00:00:00:04\"]\njob = \"restore http://nas/u.img to /dev/sda\"\n",
            Path::new("p.toml"),
        )
        .expect("policy");
        let none = check_policy(&p, None);
        assert_eq!(none.len(), 2, "{none:?}");
        assert!(none[0].contains("no --images DIR"), "{none:?}");
        let d = ImageDir::open(t.path()).expect("open");
        let w = check_policy(&p, Some(&d));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("client 52:54:00:00:00:02") && w[0].contains("gone.img"), "{w:?}");
    }
}
