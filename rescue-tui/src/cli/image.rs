//! `rescue info` and `rescue check`.

use anyhow::Context;
use imaging::image::{reader, ImageError, ImageReader};

use super::{backup::task, print_json, prompt, show, CheckArgs, CliError, Global, ImageArgs};

/// Open an image, asking for the password only when it is encrypted.
pub fn open(a: &ImageArgs) -> Result<ImageReader, CliError> {
    open_path(&a.image, a.password_file.as_deref())
}

pub fn open_path(image: &std::path::Path, password_file: Option<&std::path::Path>) -> Result<ImageReader, CliError> {
    match ImageReader::open(image, None) {
        Err(ImageError::PasswordNeeded) => {
            let pw = prompt::password(password_file, false)?;
            Ok(ImageReader::open(image, Some(&pw)).with_context(|| format!("opening {}", image.display()))?)
        }
        r => Ok(r.with_context(|| format!("opening {}", image.display()))?),
    }
}

pub fn info(g: &Global, a: ImageArgs) -> Result<(), CliError> {
    // Without a password an encrypted image still tells its basics.
    if a.password_file.is_none() && std::env::var_os("RESCUE_PASSWORD").is_none() && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        if let Ok(p) = reader::peek(&a.image) {
            if p.header.encrypted() {
                let v = serde_json::json!({
                    "encrypted": true,
                    "created": p.header.created,
                    "volumes": p.volumes,
                    "image_bytes": p.logical_len,
                    "note": "the catalog is encrypted: give the password for the full description",
                });
                return if g.json {
                    print_json(&v)
                } else {
                    println!("Image {} (encrypted), created {}; give the password (--password-file or RESCUE_PASSWORD) for more", a.image.display(), show::utc(p.header.created));
                    Ok(())
                };
            }
        }
    }
    let r = open(&a)?;
    if g.json {
        return print_json(&serde_json::json!({ "volumes": r.volumes(), "image_bytes": r.len(), "catalog": r.catalog() }));
    }
    print!("{}", show::catalog(r.catalog(), &r.volumes(), r.len()));
    Ok(())
}

pub fn check(g: &Global, c: CheckArgs) -> Result<(), CliError> {
    let a = c.image;
    let r = open(&a)?;
    let t = task(g.json);
    let rep = imaging::check::check_reader(&r, c.deep, &t).with_context(|| format!("checking {}", a.image.display()))?;
    if g.json {
        return print_json(&rep);
    }
    println!(
        "Image OK: {} volume{}, {} regions, {} chunks, {} of data verified{} in {:.1} s",
        rep.volumes,
        if rep.volumes == 1 { "" } else { "s" },
        rep.regions,
        rep.chunks,
        imaging::blockdev::human_size(rep.data_bytes),
        if rep.deep { " (deep)" } else { "" },
        rep.seconds
    );
    Ok(())
}
