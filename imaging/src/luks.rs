//! LUKS1 and LUKS2 volumes, unlocked and read or written without
//! device-mapper: the header and its keyslots are parsed here, a passphrase
//! is turned into the volume key (PBKDF2 or Argon2i/Argon2id, then the
//! anti-forensic merge), and sectors are decrypted and encrypted as dm-crypt
//! does (`aes-xts-plain64`, `aes-xts-plain`, `aes-cbc-essiv:sha256`; 512-byte
//! sectors, and LUKS2's larger ones with their IVs counted in those units).
//!
//! So a system inside an encrypted partition can be reached on a machine
//! whose kernel has no dm-crypt (this one, for instance), the same way
//! [`crate::lvm`] and [`crate::md`] reach volumes without device-mapper or md.
//!
//! Reference: the LUKS1 on-disk format specification 1.2.3 and the LUKS2
//! on-disk format document (cryptsetup project), and the kernel's dm-crypt
//! documentation for the IV generators. Checked against cryptsetup in
//! `imaging/tests/luks.rs` (headers it writes, the volume key it dumps).

use std::io;

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use base64::Engine as _;
use serde_json::Value;
use sha2::Digest as _;

use crate::fs::{be32, be64};
use crate::read_at::ReadAt;

/// The magic of both versions (`LUKS\xba\xbe`).
pub const MAGIC: &[u8; 6] = b"LUKS\xba\xbe";
/// The filesystem kind a LUKS volume probes as ([`crate::fs::FsKind::Other`],
/// blkid's name).
pub const FS_KIND: &str = "crypto_LUKS";
/// LUKS1 keyslot states.
const LUKS1_ACTIVE: u32 = 0x00AC_71F3;
/// Argon2 memory above this is refused rather than allocated (cryptsetup's
/// own maximum is 4 GiB; its default at most 1 GiB).
const MAX_ARGON2_KIB: u32 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LuksError {
    #[error("not a LUKS volume (no LUKS magic at its start)")]
    NotLuks,
    #[error("LUKS header is damaged: {0}")]
    Corrupt(String),
    #[error("LUKS volume uses {0}, which this tool cannot unlock; unlock it with cryptsetup on a system that has it")]
    Unsupported(String),
    #[error("no keyslot opens with this passphrase (tried {0}); check the passphrase and the keyboard layout it was typed on")]
    WrongPassphrase(String),
    #[error("reading the LUKS volume")]
    Io(#[from] io::Error),
}

fn corrupt(s: impl Into<String>) -> LuksError {
    LuksError::Corrupt(s.into())
}

/// A hash that LUKS names for PBKDF2 and the anti-forensic splitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha256,
    Sha512,
}

impl Hash {
    fn parse(s: &str) -> Result<Hash, LuksError> {
        match s.trim_end_matches('\0').to_ascii_lowercase().as_str() {
            "sha1" => Ok(Hash::Sha1),
            "sha256" => Ok(Hash::Sha256),
            "sha512" => Ok(Hash::Sha512),
            other => Err(LuksError::Unsupported(format!("the hash {other}"))),
        }
    }

    fn len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
            Hash::Sha512 => 64,
        }
    }

    fn pbkdf2(self, pass: &[u8], salt: &[u8], rounds: u32, out: &mut [u8]) {
        match self {
            Hash::Sha1 => pbkdf2::pbkdf2_hmac::<sha1::Sha1>(pass, salt, rounds, out),
            Hash::Sha256 => pbkdf2::pbkdf2_hmac::<sha2::Sha256>(pass, salt, rounds, out),
            Hash::Sha512 => pbkdf2::pbkdf2_hmac::<sha2::Sha512>(pass, salt, rounds, out),
        }
    }

    /// `H(be32(i) || data)`.
    fn indexed(self, i: u32, data: &[u8]) -> Vec<u8> {
        fn run<D: sha2::Digest>(i: u32, data: &[u8]) -> Vec<u8> {
            let mut d = D::new();
            d.update(i.to_be_bytes());
            d.update(data);
            d.finalize().to_vec()
        }
        match self {
            Hash::Sha1 => run::<sha1::Sha1>(i, data),
            Hash::Sha256 => run::<sha2::Sha256>(i, data),
            Hash::Sha512 => run::<sha2::Sha512>(i, data),
        }
    }
}

/// The anti-forensic merge (LUKS1 spec, section 2.4): the key material of a
/// keyslot is `stripes` blocks; all but the last are XORed and diffused in
/// turn, and the last XORed in gives the key.
pub fn af_merge(material: &[u8], key_len: usize, stripes: u32, hash: Hash) -> Result<Vec<u8>, LuksError> {
    let stripes = stripes as usize;
    if stripes == 0 || material.len() < key_len * stripes {
        return Err(corrupt(format!("keyslot material of {} bytes is shorter than {stripes} stripes of {key_len}", material.len())));
    }
    let mut d = vec![0u8; key_len];
    for s in 0..stripes {
        let block = &material[s * key_len..(s + 1) * key_len];
        d.iter_mut().zip(block).for_each(|(a, b)| *a ^= b);
        if s + 1 < stripes {
            diffuse(&mut d, hash);
        }
    }
    Ok(d)
}

fn diffuse(d: &mut [u8], hash: Hash) {
    let ds = hash.len();
    for (i, chunk) in d.chunks_mut(ds).enumerate() {
        let h = hash.indexed(i as u32, chunk);
        let n = chunk.len();
        chunk.copy_from_slice(&h[..n]);
    }
}

#[derive(Clone)]
enum Aes {
    A128(aes::Aes128),
    A192(aes::Aes192),
    A256(aes::Aes256),
}

type Block = GenericArray<u8, aes::cipher::consts::U16>;

impl Aes {
    fn new(key: &[u8]) -> Result<Aes, LuksError> {
        let bad = |_| corrupt("bad AES key length");
        Ok(match key.len() {
            16 => Aes::A128(aes::Aes128::new_from_slice(key).map_err(bad)?),
            24 => Aes::A192(aes::Aes192::new_from_slice(key).map_err(bad)?),
            32 => Aes::A256(aes::Aes256::new_from_slice(key).map_err(bad)?),
            n => return Err(LuksError::Unsupported(format!("a {}-bit AES key", n * 8))),
        })
    }

    fn encrypt(&self, b: &mut [Block]) {
        match self {
            Aes::A128(c) => c.encrypt_blocks(b),
            Aes::A192(c) => c.encrypt_blocks(b),
            Aes::A256(c) => c.encrypt_blocks(b),
        }
    }

    fn decrypt(&self, b: &mut [Block]) {
        match self {
            Aes::A128(c) => c.decrypt_blocks(b),
            Aes::A192(c) => c.decrypt_blocks(b),
            Aes::A256(c) => c.decrypt_blocks(b),
        }
    }
}

/// A dm-crypt cipher specification with its key: what encrypts one sector
/// given the sector's IV number.
#[derive(Clone)]
pub struct SectorCipher {
    spec: String,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    /// XTS: data key, tweak key; `plain32` truncates the IV to 32 bits.
    Xts { data: Aes, tweak: Aes, plain32: bool },
    /// CBC with ESSIV: the IV is the sector number encrypted with
    /// SHA-256(key).
    CbcEssiv { data: Aes, essiv: Aes },
}

impl std::fmt::Debug for SectorCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SectorCipher({})", self.spec)
    }
}

impl SectorCipher {
    /// `spec` as LUKS2 writes it (`aes-xts-plain64`), or LUKS1's name and
    /// mode joined with `-`.
    pub fn new(spec: &str, key: &[u8]) -> Result<SectorCipher, LuksError> {
        let unsupported = || LuksError::Unsupported(format!("the cipher {spec}"));
        let (cipher, mode) = spec.split_once('-').ok_or_else(unsupported)?;
        if !cipher.eq_ignore_ascii_case("aes") {
            return Err(unsupported());
        }
        let kind = match mode.to_ascii_lowercase().as_str() {
            m @ ("xts-plain64" | "xts-plain") => {
                if !key.len().is_multiple_of(2) {
                    return Err(corrupt("XTS key of odd length"));
                }
                let (a, b) = key.split_at(key.len() / 2);
                Kind::Xts { data: Aes::new(a)?, tweak: Aes::new(b)?, plain32: m == "xts-plain" }
            }
            "cbc-essiv:sha256" => {
                let salt = sha2::Sha256::digest(key);
                Kind::CbcEssiv { data: Aes::new(key)?, essiv: Aes::new(&salt)? }
            }
            _ => return Err(unsupported()),
        };
        Ok(SectorCipher { spec: spec.to_string(), kind })
    }

    pub fn spec(&self) -> &str {
        &self.spec
    }

    fn iv(&self, sector: u64) -> Block {
        let mut iv = Block::default();
        match &self.kind {
            Kind::Xts { tweak, plain32, .. } => {
                if *plain32 {
                    iv[..4].copy_from_slice(&(sector as u32).to_le_bytes());
                } else {
                    iv[..8].copy_from_slice(&sector.to_le_bytes());
                }
                tweak.encrypt(std::slice::from_mut(&mut iv));
            }
            Kind::CbcEssiv { essiv, .. } => {
                iv[..8].copy_from_slice(&sector.to_le_bytes());
                essiv.encrypt(std::slice::from_mut(&mut iv));
            }
        }
        iv
    }

    /// Decrypt (or encrypt) one sector of `buf.len()` bytes (a multiple of
    /// 16) whose IV number is `sector`.
    pub fn sector(&self, buf: &mut [u8], sector: u64, decrypt: bool) {
        debug_assert_eq!(buf.len() % 16, 0);
        let mut blocks: Vec<Block> = buf.chunks_exact(16).map(Block::clone_from_slice).collect();
        match &self.kind {
            Kind::Xts { data, .. } => {
                let mut t = self.iv(sector);
                let mut tweaks = Vec::with_capacity(blocks.len());
                for b in blocks.iter_mut() {
                    xor(b, &t);
                    tweaks.push(t);
                    t = times_alpha(&t);
                }
                if decrypt {
                    data.decrypt(&mut blocks);
                } else {
                    data.encrypt(&mut blocks);
                }
                for (b, t) in blocks.iter_mut().zip(&tweaks) {
                    xor(b, t);
                }
            }
            Kind::CbcEssiv { data, .. } => {
                let iv = self.iv(sector);
                if decrypt {
                    let prev: Vec<Block> = std::iter::once(iv).chain(blocks.iter().take(blocks.len().saturating_sub(1)).cloned()).collect();
                    data.decrypt(&mut blocks);
                    for (b, p) in blocks.iter_mut().zip(&prev) {
                        xor(b, p);
                    }
                } else {
                    let mut p = iv;
                    for b in blocks.iter_mut() {
                        xor(b, &p);
                        data.encrypt(std::slice::from_mut(b));
                        p = *b;
                    }
                }
            }
        }
        for (c, b) in buf.chunks_exact_mut(16).zip(&blocks) {
            c.copy_from_slice(b);
        }
    }
}

fn xor(b: &mut Block, t: &Block) {
    b.iter_mut().zip(t.iter()).for_each(|(a, b)| *a ^= b);
}

/// Multiply by the primitive element in GF(2^128), little-endian (IEEE 1619).
fn times_alpha(t: &Block) -> Block {
    let mut out = Block::default();
    let mut carry = 0u8;
    for i in 0..16 {
        out[i] = (t[i] << 1) | carry;
        carry = t[i] >> 7;
    }
    if carry != 0 {
        out[0] ^= 0x87;
    }
    out
}

/// How a keyslot's passphrase becomes the key of its area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kdf {
    Pbkdf2 { hash: Hash, iterations: u32, salt: Vec<u8> },
    Argon2 { id: bool, time: u32, memory_kib: u32, cpus: u32, salt: Vec<u8> },
}

/// One active keyslot.
#[derive(Debug, Clone)]
pub struct Keyslot {
    pub id: u32,
    pub kdf: Kdf,
    /// Cipher of the keyslot area and the length of the key that opens it.
    pub area_cipher: String,
    pub area_key_len: usize,
    /// Byte offset of the area on the device.
    pub area_offset: u64,
    pub stripes: u32,
    pub af_hash: Hash,
    /// Length of the volume key it holds.
    pub key_len: usize,
}

/// The check that a candidate volume key is right.
#[derive(Debug, Clone)]
struct KeyDigest {
    hash: Hash,
    iterations: u32,
    salt: Vec<u8>,
    digest: Vec<u8>,
    /// LUKS2: the keyslots it covers (LUKS1: all).
    keyslots: Option<Vec<u32>>,
}

/// A parsed header (the valid one of LUKS2's two copies).
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u16,
    pub uuid: String,
    pub label: String,
    /// The data cipher (`aes-xts-plain64`).
    pub cipher: String,
    /// Length of the volume key (LUKS2: as its keyslots say; 0 when none
    /// is in use).
    pub key_len: usize,
    /// First byte of the encrypted data.
    pub data_offset: u64,
    /// Length of the data; `None`: to the end of the device.
    pub data_size: Option<u64>,
    pub sector_size: u32,
    /// Added to the 512-byte sector number before the IV is made.
    pub iv_tweak: u64,
    pub keyslots: Vec<Keyslot>,
    digest: KeyDigest,
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl Header {
    /// Read the header at the start of `dev`.
    pub fn read(dev: &dyn ReadAt) -> Result<Header, LuksError> {
        let mut b = vec![0u8; 4096];
        dev.read_exact_at(&mut b[..592], 0)?;
        if &b[..6] != MAGIC {
            return Err(LuksError::NotLuks);
        }
        match u16::from_be_bytes([b[6], b[7]]) {
            1 => Self::luks1(&b[..592]),
            2 => Self::luks2(dev),
            v => Err(LuksError::Unsupported(format!("LUKS version {v}"))),
        }
    }

    fn luks1(b: &[u8]) -> Result<Header, LuksError> {
        let key_len = be32(b, 108) as usize;
        if !(16..=128).contains(&key_len) {
            return Err(corrupt(format!("key length {key_len}")));
        }
        let hash = Hash::parse(&cstr(&b[72..104]))?;
        let cipher = format!("{}-{}", cstr(&b[8..40]), cstr(&b[40..72]));
        let mut keyslots = Vec::new();
        for i in 0..8u32 {
            let s = &b[208 + 48 * i as usize..208 + 48 * (i as usize + 1)];
            if be32(s, 0) != LUKS1_ACTIVE {
                continue;
            }
            keyslots.push(Keyslot {
                id: i,
                kdf: Kdf::Pbkdf2 { hash, iterations: be32(s, 4), salt: s[8..40].to_vec() },
                area_cipher: cipher.clone(),
                area_key_len: key_len,
                area_offset: u64::from(be32(s, 40)) * 512,
                stripes: be32(s, 44),
                af_hash: hash,
                key_len,
            });
        }
        Ok(Header {
            version: 1,
            uuid: cstr(&b[168..208]),
            label: String::new(),
            cipher,
            key_len,
            data_offset: u64::from(be32(b, 104)) * 512,
            data_size: None,
            sector_size: 512,
            iv_tweak: 0,
            keyslots,
            digest: KeyDigest { hash, iterations: be32(b, 164), salt: b[132..164].to_vec(), digest: b[112..132].to_vec(), keyslots: None },
        })
    }

    fn luks2(dev: &dyn ReadAt) -> Result<Header, LuksError> {
        // Both copies: the primary at 0, the secondary right after it (its
        // offset is the primary's size; try the offsets cryptsetup uses when
        // the primary is unreadable). The valid one with the higher seqid wins.
        let mut best: Option<(u64, Vec<u8>)> = None;
        let mut why = Vec::new();
        for off in [0u64, 0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000] {
            match read_luks2_copy(dev, off) {
                Ok(Some((seqid, area))) => {
                    if best.as_ref().is_none_or(|(s, _)| seqid > *s) {
                        best = Some((seqid, area));
                    }
                }
                Ok(None) => {}
                Err(e) => why.push(format!("copy at {off}: {e}")),
            }
        }
        let Some((_, area)) = best else {
            return Err(corrupt(if why.is_empty() { "no valid LUKS2 header copy".to_string() } else { why.join("; ") }));
        };
        let bin = &area[..4096];
        Self::luks2_json(&cstr(&area[4096..]), cstr(&bin[168..208]), cstr(&bin[24..72]))
    }

    /// The header that LUKS2 JSON metadata describes (the part of a header
    /// copy after its checksum was found right; public for the fuzzer).
    pub fn luks2_json(text: &str, uuid: String, label: String) -> Result<Header, LuksError> {
        let j: Value = serde_json::from_str(text).map_err(|e| corrupt(format!("LUKS2 JSON: {e}")))?;
        Self::from_json(&j, uuid, label)
    }

    fn from_json(j: &Value, uuid: String, label: String) -> Result<Header, LuksError> {
        let obj = |v: &Value, what: &str| v.as_object().cloned().ok_or_else(|| corrupt(format!("LUKS2 JSON has no {what}")));
        // The first crypt segment holds the data.
        let segs = obj(&j["segments"], "segments")?;
        let mut segs: Vec<(u32, &Value)> = segs.iter().filter_map(|(k, v)| Some((k.parse().ok()?, v))).collect();
        segs.sort_by_key(|(k, _)| *k);
        let seg = segs.first().map(|(_, v)| *v).ok_or_else(|| corrupt("LUKS2 JSON has no segment"))?;
        if segs.len() > 1 {
            return Err(LuksError::Unsupported("a LUKS2 volume in the middle of reencryption (several segments)".into()));
        }
        if seg["type"].as_str() != Some("crypt") {
            return Err(LuksError::Unsupported(format!("a LUKS2 segment of type {}", seg["type"])));
        }
        if seg.get("integrity").is_some_and(|v| !v.is_null()) {
            return Err(LuksError::Unsupported("LUKS2 with authenticated encryption (dm-integrity)".into()));
        }
        let cipher = seg["encryption"].as_str().ok_or_else(|| corrupt("segment without encryption"))?.to_string();
        let data_offset = num(&seg["offset"]).ok_or_else(|| corrupt("segment without offset"))?;
        let data_size = match seg["size"].as_str() {
            Some("dynamic") => None,
            _ => Some(num(&seg["size"]).ok_or_else(|| corrupt("segment without size"))?),
        };
        let sector_size = seg["sector_size"].as_u64().unwrap_or(512) as u32;
        if !matches!(sector_size, 512 | 1024 | 2048 | 4096) {
            return Err(corrupt(format!("sector size {sector_size}")));
        }
        let iv_tweak = num(&seg["iv_tweak"]).unwrap_or(0);
        // The digest of the volume key for segment 0.
        let digests = obj(&j["digests"], "digests")?;
        let seg_id = segs[0].0.to_string();
        let d = digests
            .values()
            .find(|d| d["segments"].as_array().is_some_and(|a| a.iter().any(|s| s.as_str() == Some(seg_id.as_str()))))
            .ok_or_else(|| corrupt("no digest covers the data segment"))?;
        if d["type"].as_str() != Some("pbkdf2") {
            return Err(LuksError::Unsupported(format!("a LUKS2 digest of type {}", d["type"])));
        }
        let digest = KeyDigest {
            hash: Hash::parse(d["hash"].as_str().unwrap_or(""))?,
            iterations: d["iterations"].as_u64().ok_or_else(|| corrupt("digest without iterations"))? as u32,
            salt: b64(&d["salt"])?,
            digest: b64(&d["digest"])?,
            keyslots: Some(d["keyslots"].as_array().map(|a| a.iter().filter_map(|s| s.as_str()?.parse().ok()).collect()).unwrap_or_default()),
        };
        let mut keyslots = Vec::new();
        let mut key_len = 0;
        for (k, s) in obj(&j["keyslots"], "keyslots")? {
            let Ok(id) = k.parse::<u32>() else { continue };
            if s["type"].as_str() != Some("luks2") {
                continue; // reencryption slots hold no passphrase
            }
            let kdf = &s["kdf"];
            let salt = b64(&kdf["salt"])?;
            let u = |v: &Value, what: &str| v.as_u64().map(|x| x as u32).ok_or_else(|| corrupt(format!("keyslot {id} without {what}")));
            let kdf = match kdf["type"].as_str() {
                Some("pbkdf2") => Kdf::Pbkdf2 { hash: Hash::parse(kdf["hash"].as_str().unwrap_or(""))?, iterations: u(&kdf["iterations"], "iterations")?, salt },
                Some(t @ ("argon2i" | "argon2id")) => Kdf::Argon2 { id: t == "argon2id", time: u(&kdf["time"], "time")?, memory_kib: u(&kdf["memory"], "memory")?, cpus: u(&kdf["cpus"], "cpus")?, salt },
                other => return Err(LuksError::Unsupported(format!("the key derivation {other:?}"))),
            };
            let af = &s["af"];
            if af["type"].as_str() != Some("luks1") {
                return Err(LuksError::Unsupported(format!("the anti-forensic splitter {}", af["type"])));
            }
            let area = &s["area"];
            if area["type"].as_str() != Some("raw") {
                return Err(LuksError::Unsupported(format!("a keyslot area of type {}", area["type"])));
            }
            let slot_key = s["key_size"].as_u64().ok_or_else(|| corrupt("keyslot without key_size"))? as usize;
            let area_key = area["key_size"].as_u64().ok_or_else(|| corrupt("keyslot area without key_size"))? as usize;
            if !(1..=256).contains(&slot_key) || !(1..=256).contains(&area_key) {
                return Err(corrupt(format!("keyslot {id} key sizes {slot_key} and {area_key}")));
            }
            key_len = slot_key;
            keyslots.push(Keyslot {
                id,
                kdf,
                area_cipher: area["encryption"].as_str().ok_or_else(|| corrupt("keyslot area without encryption"))?.to_string(),
                area_key_len: area_key,
                area_offset: num(&area["offset"]).ok_or_else(|| corrupt("keyslot area without offset"))?,
                stripes: u(&af["stripes"], "stripes")?,
                af_hash: Hash::parse(af["hash"].as_str().unwrap_or(""))?,
                key_len: slot_key,
            });
        }
        keyslots.sort_by_key(|k| k.id);
        Ok(Header { version: 2, uuid, label, cipher, key_len, data_offset, data_size, sector_size, iv_tweak, keyslots, digest })
    }

    /// Try every keyslot with `passphrase`; the volume key when one opens.
    pub fn unlock(&self, dev: &dyn ReadAt, passphrase: &[u8]) -> Result<Vec<u8>, LuksError> {
        if self.keyslots.is_empty() {
            return Err(LuksError::WrongPassphrase("no keyslot is in use".into()));
        }
        let mut tried = Vec::new();
        for ks in &self.keyslots {
            if self.digest.keyslots.as_ref().is_some_and(|k| !k.contains(&ks.id)) {
                continue;
            }
            tried.push(ks.id.to_string());
            let key = self.open_slot(dev, ks, passphrase)?;
            if self.key_matches(&key) {
                return Ok(key);
            }
        }
        Err(LuksError::WrongPassphrase(format!("keyslot {}", tried.join(", "))))
    }

    /// Whether `key` is this volume's key (checked against the header's
    /// digest; a volume key file given instead of a passphrase).
    pub fn key_matches(&self, key: &[u8]) -> bool {
        let mut d = vec![0u8; self.digest.digest.len()];
        self.digest.hash.pbkdf2(key, &self.digest.salt, self.digest.iterations, &mut d);
        d == self.digest.digest
    }

    fn open_slot(&self, dev: &dyn ReadAt, ks: &Keyslot, passphrase: &[u8]) -> Result<Vec<u8>, LuksError> {
        let mut area_key = vec![0u8; ks.area_key_len];
        match &ks.kdf {
            Kdf::Pbkdf2 { hash, iterations, salt } => hash.pbkdf2(passphrase, salt, *iterations, &mut area_key),
            Kdf::Argon2 { id, time, memory_kib, cpus, salt } => {
                if *memory_kib > MAX_ARGON2_KIB {
                    return Err(corrupt(format!("keyslot {} asks for {} MiB of Argon2 memory", ks.id, memory_kib / 1024)));
                }
                let params = argon2::Params::new(*memory_kib, *time, (*cpus).max(1), Some(ks.area_key_len)).map_err(|e| corrupt(format!("keyslot {} Argon2 parameters: {e}", ks.id)))?;
                let alg = if *id { argon2::Algorithm::Argon2id } else { argon2::Algorithm::Argon2i };
                argon2::Argon2::new(alg, argon2::Version::V0x13, params)
                    .hash_password_into(passphrase, salt, &mut area_key)
                    .map_err(|e| corrupt(format!("keyslot {} Argon2: {e}", ks.id)))?;
            }
        }
        let len = ks.key_len * ks.stripes as usize;
        if ks.stripes == 0 || len > 64 << 20 {
            return Err(corrupt(format!("keyslot {} has {} stripes", ks.id, ks.stripes)));
        }
        let sectors = len.div_ceil(512);
        let mut material = vec![0u8; sectors * 512];
        dev.read_exact_at(&mut material, ks.area_offset)?;
        let c = SectorCipher::new(&ks.area_cipher, &area_key)?;
        for (i, s) in material.chunks_exact_mut(512).enumerate() {
            c.sector(s, i as u64, true);
        }
        af_merge(&material, ks.key_len, ks.stripes, ks.af_hash)
    }
}

/// A LUKS2 header copy at `off`: its seqid and its whole area (binary
/// header and JSON) when the magic and the checksum are right.
fn read_luks2_copy(dev: &dyn ReadAt, off: u64) -> Result<Option<(u64, Vec<u8>)>, LuksError> {
    let mut bin = vec![0u8; 4096];
    match dev.read_exact_at(&mut bin, off) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let magic2: &[u8; 6] = b"SKUL\xba\xbe";
    if !(bin[..6] == MAGIC[..] || (off != 0 && bin[..6] == magic2[..])) || u16::from_be_bytes([bin[6], bin[7]]) != 2 {
        return Ok(None);
    }
    let size = be64(&bin, 8);
    if !(0x4000..=0x400000).contains(&size) || !size.is_multiple_of(4096) || be64(&bin, 256) != off {
        return Err(corrupt(format!("header size {size} at {off}")));
    }
    if cstr(&bin[72..104]) != "sha256" {
        return Err(LuksError::Unsupported(format!("a LUKS2 header checksum {}", cstr(&bin[72..104]))));
    }
    let mut area = vec![0u8; size as usize];
    dev.read_exact_at(&mut area, off)?;
    let stored = area[448..480].to_vec();
    area[448..512].fill(0);
    let sum = sha2::Sha256::digest(&area);
    if sum.as_slice() != stored.as_slice() {
        return Err(corrupt(format!("checksum of the header copy at {off}")));
    }
    area[448..480].copy_from_slice(&stored);
    Ok(Some((be64(&bin, 16), area)))
}

fn num(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn b64(v: &Value) -> Result<Vec<u8>, LuksError> {
    let s = v.as_str().ok_or_else(|| corrupt("missing base64 value"))?;
    base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| corrupt(format!("base64: {e}")))
}

/// Passphrases to try on the LUKS volumes of a disk; never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Passphrases(pub Vec<Vec<u8>>);

impl std::fmt::Debug for Passphrases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Passphrases({} given)", self.0.len())
    }
}

impl Passphrases {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Unlock the volume at the start of `dev` with the first passphrase
    /// that opens it.
    pub fn open(&self, dev: &dyn ReadAt, dev_len: u64) -> Result<Volume, LuksError> {
        let header = Header::read(dev)?;
        for p in &self.0 {
            match header.unlock(dev, p) {
                Ok(key) => return Volume::new(header, &key, dev_len),
                Err(LuksError::WrongPassphrase(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(LuksError::WrongPassphrase(match self.0.len() {
            1 => "the passphrase given".to_string(),
            n => format!("each of the {n} passphrases given"),
        }))
    }
}

/// An unlocked volume: the plaintext view of `[data_offset, data_offset +
/// size)` of the device it was read from.
#[derive(Debug, Clone)]
pub struct Volume {
    pub header: Header,
    cipher: SectorCipher,
    /// Plaintext bytes.
    pub size: u64,
}

impl Volume {
    /// Unlock the volume at the start of `dev` (`dev_len` bytes long).
    pub fn unlock(dev: &dyn ReadAt, dev_len: u64, passphrase: &[u8]) -> Result<Volume, LuksError> {
        let header = Header::read(dev)?;
        let key = header.unlock(dev, passphrase)?;
        Self::new(header, &key, dev_len)
    }

    /// The volume with a known key (checked against the header's digest).
    pub fn with_key(header: Header, key: &[u8], dev_len: u64) -> Result<Volume, LuksError> {
        if !header.key_matches(key) {
            return Err(LuksError::WrongPassphrase("the volume key given".into()));
        }
        Self::new(header, key, dev_len)
    }

    /// The volume with a key `Header::unlock` has already checked (the
    /// digest is a deliberately slow PBKDF2: not run twice).
    fn new(header: Header, key: &[u8], dev_len: u64) -> Result<Volume, LuksError> {
        let cipher = SectorCipher::new(&header.cipher, key)?;
        let ss = u64::from(header.sector_size);
        let avail = dev_len.checked_sub(header.data_offset).ok_or_else(|| corrupt(format!("data starts at byte {} beyond the device's end ({dev_len})", header.data_offset)))?;
        let size = header.data_size.unwrap_or(avail).min(avail) / ss * ss;
        Ok(Volume { header, cipher, size })
    }

    pub fn sector_size(&self) -> u32 {
        self.header.sector_size
    }

    fn iv_of(&self, pos: u64) -> u64 {
        let shift = self.header.sector_size.trailing_zeros() - 9;
        (pos / 512 + self.header.iv_tweak) >> shift
    }

    /// Decrypt or encrypt `buf` in place: plaintext offset `pos`, both a
    /// multiple of the sector size.
    pub fn crypt(&self, buf: &mut [u8], pos: u64, decrypt: bool) {
        let ss = self.header.sector_size as usize;
        debug_assert!(pos.is_multiple_of(ss as u64) && buf.len().is_multiple_of(ss));
        for (i, s) in buf.chunks_exact_mut(ss).enumerate() {
            self.cipher.sector(s, self.iv_of(pos + (i * ss) as u64), decrypt);
        }
    }
}

/// The plaintext of a volume as positional reads, for parsers (filesystem
/// probes, LVM metadata) that read through [`ReadAt`]. Unaligned reads read
/// the sectors around them.
pub struct Plain<'a> {
    pub volume: &'a Volume,
    pub dev: &'a dyn ReadAt,
}

impl ReadAt for Plain<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|e| *e <= self.volume.size).ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the LUKS volume"))?;
        let ss = u64::from(self.volume.sector_size());
        let start = offset / ss * ss;
        let stop = end.div_ceil(ss) * ss;
        let mut tmp = vec![0u8; (stop - start) as usize];
        self.dev.read_exact_at(&mut tmp, self.volume.header.data_offset + start)?;
        self.volume.crypt(&mut tmp, start, true);
        let at = (offset - start) as usize;
        buf.copy_from_slice(&tmp[at..at + buf.len()]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    }

    #[test]
    fn xts_matches_ieee_1619_vectors() {
        // IEEE 1619-2007 vector 4 (AES-128, data unit 0, 512 bytes of
        // 00..ff twice): the first and last ciphertext bytes.
        let key = hex("2718281828459045235360287471352631415926535897932384626433832795");
        let c = SectorCipher::new("aes-xts-plain64", &key).expect("cipher");
        let mut buf: Vec<u8> = (0..512).map(|i| i as u8).collect();
        c.sector(&mut buf, 0, false);
        assert_eq!(&buf[..16], &hex("27a7479befa1d476489f308cd4cfa6e2")[..]);
        assert_eq!(&buf[496..], &hex("0a282df920147beabe421ee5319d0568")[..]);
        c.sector(&mut buf, 0, true);
        assert!(buf.iter().enumerate().all(|(i, b)| *b == i as u8));
        // The same key and plaintext as data unit 1 (the value OpenSSL's
        // XTS gives): the tweak is the sector number, little-endian.
        let mut buf: Vec<u8> = (0..512).map(|i| i as u8).collect();
        c.sector(&mut buf, 1, false);
        assert_eq!(&buf[..16], &hex("bbf9d6a74a7465fee20f42adf9a623fc")[..]);
        // Vector 10 (AES-256, data unit 0xff).
        let key = hex(concat!(
            "2718281828459045235360287471352662497757247093699959574966967627",
            "3141592653589793238462643383279502884197169399375105820974944592"
        ));
        let c = SectorCipher::new("aes-xts-plain64", &key).expect("cipher");
        let mut buf: Vec<u8> = (0..512).map(|i| i as u8).collect();
        c.sector(&mut buf, 0xff, false);
        assert_eq!(&buf[..16], &hex("1c3b3a102f770386e4836c99e370cf9b")[..]);
    }

    #[test]
    fn cbc_essiv_round_trips_and_chains() {
        let c = SectorCipher::new("aes-cbc-essiv:sha256", &[7u8; 32]).expect("cipher");
        let plain: Vec<u8> = (0..512u32).map(|i| (i * 3) as u8).collect();
        let mut a = plain.clone();
        c.sector(&mut a, 5, false);
        let mut b = plain.clone();
        c.sector(&mut b, 6, false);
        assert_ne!(a, b, "the IV depends on the sector");
        assert_ne!(a[..16], a[16..32], "blocks are chained");
        c.sector(&mut a, 5, true);
        assert_eq!(a, plain);
    }

    #[test]
    fn af_merge_of_one_stripe_is_the_material_and_diffusion_uses_every_stripe() {
        let m: Vec<u8> = (0..64).collect();
        assert_eq!(af_merge(&m, 32, 1, Hash::Sha256).expect("merge"), m[..32]);
        let two = af_merge(&m, 32, 2, Hash::Sha256).expect("merge");
        let mut m2 = m.clone();
        m2[0] ^= 1;
        assert_ne!(af_merge(&m2, 32, 2, Hash::Sha256).expect("merge"), two);
        assert!(af_merge(&m[..40], 32, 2, Hash::Sha1).is_err());
    }

    #[test]
    fn unknown_ciphers_and_garbage_are_refused() {
        assert!(matches!(SectorCipher::new("serpent-xts-plain64", &[0; 64]), Err(LuksError::Unsupported(_))));
        assert!(matches!(SectorCipher::new("aes-ecb", &[0; 32]), Err(LuksError::Unsupported(_))));
        let zeros = vec![0u8; 8192];
        assert!(matches!(Header::read(&zeros.as_slice()), Err(LuksError::NotLuks)));
        let mut bad = zeros.clone();
        bad[..6].copy_from_slice(MAGIC);
        bad[7] = 2;
        assert!(matches!(Header::read(&bad.as_slice()), Err(LuksError::Corrupt(_))));
    }
}
