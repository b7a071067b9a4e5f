//! Keys and authenticated encryption of image records.
//!
//! - Master key: Argon2id over the password with a random per-image salt.
//! - Subkeys: BLAKE3 `derive_key` with distinct contexts: the AES-256-GCM data
//!   key, the chunk-identity hash key (so equal plaintext is not visible across
//!   images), and the key-check value stored in the header (so a wrong password
//!   is reported at once instead of as corruption).
//! - Every encrypted record is `nonce (12) || ciphertext || tag (16)`, the nonce
//!   being the first 12 bytes of the keyed BLAKE3 of the record's plaintext
//!   (synthetic IV): equal plaintexts give equal records, different plaintexts
//!   never share a nonce in practice (96-bit keyed hash).

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};

/// Argon2id parameters, stored in the image header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: about half a second on a slow rescue machine,
    /// and well under the engine's 256 MiB memory budget.
    fn default() -> Self {
        Self { m_kib: 64 * 1024, t: 3, p: 1 }
    }
}

pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;

/// Keys of one image.
#[derive(Clone)]
pub struct Keys {
    cipher: Aes256Gcm,
    hash_key: [u8; 32],
    check_key: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("key derivation failed: {0}")]
    Kdf(String),
    #[error("authentication failed: the record was modified or the key is wrong")]
    Auth,
    #[error("encrypted record too short ({0} bytes)")]
    Short(usize),
}

impl Keys {
    /// Derive the keys from a password. The points of a backup chain share
    /// the salt and parameters of their first full image, so they share keys
    /// (a chunk's identity compares across the chain); each image's key check
    /// is bound to its own id.
    pub fn derive(password: &[u8], salt: &[u8; 32], params: KdfParams) -> Result<Self, CryptoError> {
        let p = argon2::Params::new(params.m_kib, params.t, params.p, Some(32)).map_err(|e| CryptoError::Kdf(e.to_string()))?;
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
        let mut master = [0u8; 32];
        a.hash_password_into(password, salt, &mut master).map_err(|e| CryptoError::Kdf(e.to_string()))?;
        let data_key = blake3::derive_key("rescue image v1 2026-11 data key", &master);
        let hash_key = blake3::derive_key("rescue image v1 2026-11 chunk identity key", &master);
        let check_key = blake3::derive_key("rescue image v1 2026-11 key check", &master);
        let cipher = Aes256Gcm::new_from_slice(&data_key).map_err(|e| CryptoError::Kdf(e.to_string()))?;
        Ok(Self { cipher, hash_key, check_key })
    }

    /// Value stored in the header of image `image_id` to recognise the right password.
    pub fn key_check(&self, image_id: &[u8; 16]) -> [u8; 32] {
        *blake3::keyed_hash(&self.check_key, image_id).as_bytes()
    }

    /// Chunk identity hash (keyed).
    pub fn hash(&self, data: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.hash_key, data).as_bytes()
    }

    /// Encrypt `plain` into `nonce || ciphertext || tag`.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let h = self.hash(plain);
        let nonce = Nonce::from_slice(&h[..NONCE_LEN]);
        let ct = self.cipher.encrypt(nonce, plain).expect("AES-GCM encryption cannot fail for in-memory buffers under 64 GiB");
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&h[..NONCE_LEN]);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypt and authenticate a record made by [`Keys::seal`].
    pub fn open(&self, record: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if record.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Short(record.len()));
        }
        let (nonce, ct) = record.split_at(NONCE_LEN);
        self.cipher.decrypt(Nonce::from_slice(nonce), ct).map_err(|_| CryptoError::Auth)
    }
}

/// Plain or keyed chunk hash, as the image's encryption setting says.
pub fn chunk_hash(keys: Option<&Keys>, data: &[u8]) -> [u8; 32] {
    match keys {
        Some(k) => k.hash(data),
        None => *blake3::hash(data).as_bytes(),
    }
}

/// Random bytes from the OS.
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).expect("the OS random source is available on every supported system");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> KdfParams {
        KdfParams { m_kib: 64, t: 1, p: 1 }
    }

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let k = Keys::derive(b"pw", &[7; 32], fast()).unwrap();
        let rec = k.seal(b"hello world");
        assert_eq!(k.open(&rec).unwrap(), b"hello world");
        let mut bad = rec.clone();
        bad[20] ^= 1;
        assert!(matches!(k.open(&bad), Err(CryptoError::Auth)));
        assert!(matches!(k.open(&rec[..10]), Err(CryptoError::Short(10))));
    }

    #[test]
    fn wrong_password_changes_key_check() {
        let a = Keys::derive(b"pw", &[7; 32], fast()).unwrap();
        let b = Keys::derive(b"pW", &[7; 32], fast()).unwrap();
        assert_ne!(a.key_check(&[1; 16]), b.key_check(&[1; 16]));
        assert_ne!(a.key_check(&[1; 16]), a.key_check(&[2; 16]));
        assert!(b.open(&a.seal(b"x")).is_err());
    }
}
