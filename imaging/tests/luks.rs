//! `imaging::luks` against cryptsetup: volumes formatted by cryptsetup (LUKS1
//! and LUKS2, PBKDF2 and Argon2, XTS and CBC-ESSIV, 512 and 4096-byte
//! sectors) are unlocked here, and the volume key must be the one
//! `cryptsetup luksDump --dump-volume-key` prints. Sectors encrypted here
//! must decrypt with OpenSSL's AES-XTS (python3-cryptography) at the IV
//! dm-crypt uses. cryptsetup formats a file without device-mapper, so none of
//! this needs root or the kernel's dm-crypt.
//!
//! Needs cryptsetup-bin and python3-cryptography (scripts/setup installs
//! them); a missing tool is a failure with the package to install.

use std::path::Path;
use std::process::Command;

use imaging::luks::{Header, LuksError, Plain, Volume};
use imaging::read_at::ReadAt;

const MIB: u64 = 1 << 20;

fn need(tool: &str, package: &str) {
    let found = std::env::var("PATH").unwrap_or_default().split(':').chain(["/sbin", "/usr/sbin", "/usr/bin"]).any(|d| Path::new(d).join(tool).exists());
    assert!(found, "the LUKS tests need `{tool}`: apt-get install {package}");
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A LUKS volume of `size` bytes made by cryptsetup with `args`, passphrase
/// `pass`; returns the file and the volume key cryptsetup dumps.
fn format(dir: &Path, name: &str, size: u64, pass: &str, args: &[&str]) -> (std::path::PathBuf, Vec<u8>) {
    need("cryptsetup", "cryptsetup-bin");
    let img = dir.join(name);
    std::fs::File::create(&img).and_then(|f| f.set_len(size)).expect("image");
    let key = dir.join(format!("{name}.pass"));
    std::fs::write(&key, pass).expect("key file");
    run(Command::new("cryptsetup").args(["luksFormat", "-q", "--key-file"]).arg(&key).args(args).arg(&img));
    let dump = run(Command::new("cryptsetup").args(["luksDump", "-q", "--dump-volume-key", "--key-file"]).arg(&key).arg(&img));
    let hex: String = dump
        .split_once("MK dump:")
        .expect("MK dump in luksDump's output")
        .1
        .split_whitespace()
        .take_while(|w| w.len() == 2 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    let vk = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect();
    (img, vk)
}

fn open(img: &Path) -> std::fs::File {
    std::fs::OpenOptions::new().read(true).write(true).open(img).expect("open")
}

/// Encrypt `plain` here at plaintext offset `pos`, write it to the image,
/// and have OpenSSL decrypt each sector with tweak `iv(sector)`.
fn openssl_reads_what_we_wrote(img: &Path, vol: &Volume, key: &[u8], pos: u64, plain: &[u8], first_iv: u64) {
    let mut c = plain.to_vec();
    vol.crypt(&mut c, pos, false);
    std::os::unix::fs::FileExt::write_all_at(&open(img), &c, vol.header.data_offset + pos).expect("write");
    need("python3", "python3");
    let script = r#"
import sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
key = bytes.fromhex(sys.argv[1]); path = sys.argv[2]; at = int(sys.argv[3]); n = int(sys.argv[4])
ss = int(sys.argv[5]); iv = int(sys.argv[6])
out = b""
with open(path, "rb") as f:
    f.seek(at)
    data = f.read(n)
for i in range(0, n, ss):
    d = Cipher(algorithms.AES(key), modes.XTS((iv + i // ss).to_bytes(16, "little"))).decryptor()
    out += d.update(data[i:i + ss]) + d.finalize()
sys.stdout.write(out.hex())
"#;
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(key.iter().map(|b| format!("{b:02x}")).collect::<String>())
        .arg(img)
        .arg((vol.header.data_offset + pos).to_string())
        .arg(plain.len().to_string())
        .arg(vol.sector_size().to_string())
        .arg(first_iv.to_string())
        .output()
        .expect("python3");
    assert!(out.status.success(), "python3-cryptography is needed (apt-get install python3-cryptography): {}", String::from_utf8_lossy(&out.stderr));
    let hex = String::from_utf8_lossy(&out.stdout);
    let got: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect();
    assert!(got == plain, "OpenSSL decrypts something else at plaintext byte {pos} ({} sectors from IV {first_iv})", plain.len() / vol.sector_size() as usize);
    // And the plaintext view reads it back, unaligned too.
    let f = open(img);
    let view = Plain { volume: vol, dev: &f };
    let mut back = vec![0u8; plain.len() - 100];
    view.read_exact_at(&mut back, pos + 37).expect("plain read");
    assert_eq!(back, plain[37..37 + back.len()]);
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8).collect()
}

#[test]
fn luks2_argon2id_with_4096_byte_sectors() {
    let t = tempfile::tempdir().expect("tempdir");
    let (img, vk) = format(t.path(), "v2", 24 * MIB, "correct horse", &["--type", "luks2", "--pbkdf", "argon2id", "--pbkdf-memory", "8192", "--pbkdf-force-iterations", "4", "--sector-size", "4096"]);
    let f = open(&img);
    let h = Header::read(&f).expect("header");
    assert_eq!((h.version, h.sector_size, h.cipher.as_str(), h.key_len), (2, 4096, "aes-xts-plain64", 64));
    assert_eq!(h.data_offset, 16 * MIB);
    let vol = Volume::unlock(&f, 24 * MIB, b"correct horse").expect("unlock");
    assert_eq!(vol.size, 8 * MIB);
    let key = h.unlock(&f, b"correct horse").expect("key");
    assert_eq!(key, vk, "the volume key cryptsetup dumps");
    let e = Volume::unlock(&f, 24 * MIB, b"correct horsf").expect_err("wrong passphrase");
    assert!(matches!(e, LuksError::WrongPassphrase(_)), "{e}");
    // With 4096-byte sectors the IV counts 4096-byte sectors (dm-crypt's
    // iv_large_sectors, which cryptsetup sets for LUKS2).
    openssl_reads_what_we_wrote(&img, &vol, &vk, 3 * 4096, &pattern(3 * 4096, 1), 3);
}

#[test]
fn luks2_pbkdf2_and_argon2i_keyslots_and_a_second_passphrase() {
    let t = tempfile::tempdir().expect("tempdir");
    let (img, vk) = format(t.path(), "v2b", 20 * MIB, "first", &["--type", "luks2", "--pbkdf", "pbkdf2", "--hash", "sha512", "--pbkdf-force-iterations", "1000", "--key-size", "256", "--sector-size", "512"]);
    let pass2 = t.path().join("second");
    std::fs::write(&pass2, "second one").expect("write");
    run(Command::new("cryptsetup")
        .args(["luksAddKey", "-q", "--pbkdf", "argon2i", "--pbkdf-memory", "4096", "--pbkdf-force-iterations", "4", "--key-file"])
        .arg(t.path().join("v2b.pass"))
        .arg(&img)
        .arg(&pass2));
    let f = open(&img);
    let h = Header::read(&f).expect("header");
    assert_eq!(h.keyslots.len(), 2);
    assert_eq!((h.sector_size, h.key_len), (512, 32));
    assert_eq!(h.unlock(&f, b"first").expect("slot 0"), vk);
    assert_eq!(h.unlock(&f, b"second one").expect("slot 1"), vk);
    let vol = Volume::with_key(h.clone(), &vk, 20 * MIB).expect("with key");
    assert!(Volume::with_key(h, &[0u8; 32], 20 * MIB).is_err(), "a wrong volume key is refused");
    openssl_reads_what_we_wrote(&img, &vol, &vk, 1000 * 512, &pattern(8 * 512, 2), 1000);
}

#[test]
fn luks1_sha256_and_sha1_xts_and_cbc_essiv() {
    let t = tempfile::tempdir().expect("tempdir");
    // LUKS1 with today's defaults (sha256, aes-xts-plain64, 512-bit key).
    let (img, vk) = format(t.path(), "v1", 8 * MIB, "old", &["--type", "luks1", "--pbkdf-force-iterations", "1000"]);
    let f = open(&img);
    let h = Header::read(&f).expect("header");
    assert_eq!((h.version, h.cipher.as_str(), h.key_len), (1, "aes-xts-plain64", 64));
    let vol = Volume::unlock(&f, 8 * MIB, b"old").expect("unlock");
    assert_eq!(h.unlock(&f, b"old").expect("key"), vk);
    assert_eq!(vol.size, 8 * MIB - h.data_offset);
    openssl_reads_what_we_wrote(&img, &vol, &vk, 7 * 512, &pattern(4096, 3), 7);
    // Older systems: SHA-1 and CBC-ESSIV (the default before cryptsetup 1.6).
    let (img, vk) = format(t.path(), "v1c", 8 * MIB, "older", &["--type", "luks1", "--hash", "sha1", "--cipher", "aes-cbc-essiv:sha256", "--key-size", "256", "--pbkdf-force-iterations", "1000"]);
    let f = open(&img);
    let vol = Volume::unlock(&f, 8 * MIB, b"older").expect("unlock cbc");
    assert_eq!(vol.header.cipher, "aes-cbc-essiv:sha256");
    assert_eq!(vol.header.unlock(&f, b"older").expect("key"), vk);
    // CBC round trip through the plaintext view.
    let plain = pattern(2048, 4);
    let mut c = plain.clone();
    vol.crypt(&mut c, 4096, false);
    std::os::unix::fs::FileExt::write_all_at(&f, &c, vol.header.data_offset + 4096).expect("write");
    let mut back = vec![0u8; 2048];
    Plain { volume: &vol, dev: &f }.read_exact_at(&mut back, 4096).expect("read");
    assert_eq!(back, plain);
}

#[test]
fn a_damaged_luks2_primary_header_falls_back_to_the_secondary_and_both_damaged_is_an_error() {
    let t = tempfile::tempdir().expect("tempdir");
    let (img, vk) = format(t.path(), "v2d", 20 * MIB, "pw", &["--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]);
    let f = open(&img);
    let flip = |at: u64| {
        let mut b = [0u8; 1];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, at).expect("read");
        b[0] ^= 0x20;
        std::os::unix::fs::FileExt::write_all_at(&f, &b, at).expect("write");
    };
    flip(4096 + 10); // in the primary's JSON
    assert_eq!(Header::read(&f).and_then(|h| h.unlock(&f, b"pw")).expect("secondary"), vk);
    flip(16384 + 4096 + 10); // and the secondary's
    let e = Header::read(&f).expect_err("both damaged");
    assert!(matches!(e, LuksError::Corrupt(_)), "{e}");
    assert!(e.to_string().contains("checksum"), "{e}");
}

/// A loop device over a file, detached on drop.
struct Loop(String);

impl Loop {
    fn new(file: &Path) -> Loop {
        Loop(run(Command::new("losetup").args(["--find", "--show"]).arg(file)).trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A mount, unmounted on drop.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The unlocked volume as a FUSE file: mkfs.ext4 on it, the kernel mounts
/// it through a loop device and writes files, and after everything is
/// released a second unlock finds a clean filesystem with those files, while
/// the partition itself holds only ciphertext.
#[test]
fn plaintext_file_over_fuse_carries_a_kernel_mounted_ext4() {
    assert!(nix_root(), "this test mounts through loop devices and FUSE and needs root");
    need("mkfs.ext4", "e2fsprogs");
    need("losetup", "mount");
    let t = tempfile::tempdir().expect("tempdir");
    for (name, args) in [("fuse2", &["--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--sector-size", "4096"][..]), ("fuse1", &["--type", "luks1", "--pbkdf-force-iterations", "1000"][..])] {
        let size = 48 * MIB;
        let (img, _) = format(t.path(), name, size, "pw", args);
        let marker = format!("plaintext marker of {name} ").repeat(200);
        {
            let vol = Volume::unlock(&open(&img), size, b"pw").expect("unlock");
            let plain = imaging::luks_fuse::PlainFile::mount(open(&img), 0, vol, t.path(), true, name).expect("fuse");
            // The mount's source names it (what tests look for to find their own).
            let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
            assert!(info.lines().any(|l| l.contains(&format!(" rescue-luks:{name} "))), "no mount with source rescue-luks:{name}:\n{info}");
            run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", name]).arg(plain.path()));
            let lo = Loop::new(&plain.path());
            let dir = t.path().join(format!("{name}-mnt"));
            std::fs::create_dir(&dir).expect("mkdir");
            run(Command::new("mount").arg(&lo.0).arg(&dir));
            let m = Mount(dir.clone());
            std::fs::write(dir.join("hello.txt"), &marker).expect("write");
            std::fs::write(dir.join("big.bin"), pattern(3 * MIB as usize + 777, 9)).expect("write");
            drop(m);
            drop(lo);
        }
        // Released: nothing mounted is left, and the partition holds no
        // plaintext.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(!mounts.contains(&format!("rescue-luks:{name}")), "the FUSE mount is gone");
        let raw = std::fs::read(&img).expect("read");
        assert!(!raw.windows(32).any(|w| w == &marker.as_bytes()[..32]), "the marker is stored encrypted");
        // A second unlock, read-only: e2fsck is content, the files are there.
        let vol = Volume::unlock(&open(&img), size, b"pw").expect("unlock again");
        let plain = imaging::luks_fuse::PlainFile::mount(open(&img), 0, vol, t.path(), false, name).expect("fuse ro");
        run(Command::new("e2fsck").args(["-fn"]).arg(plain.path()));
        let cat = run(Command::new("debugfs").args(["-R", "cat /hello.txt"]).arg(plain.path()));
        assert_eq!(cat, marker);
        let big = Command::new("debugfs").args(["-R", "cat /big.bin"]).arg(plain.path()).output().expect("debugfs");
        assert!(big.stdout == pattern(3 * MIB as usize + 777, 9), "big.bin reads back");
        assert!(std::fs::OpenOptions::new().write(true).open(plain.path()).is_err(), "read-only");
    }
}

fn nix_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}
