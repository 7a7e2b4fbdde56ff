//! Secrets: random tokens, token hashing, constant-time comparison, and the key file.
//!
//! What is stored how, and why:
//! - High-entropy tokens (sessions, login flows, remembered devices; 256 random bits) are
//!   stored as SHA-256: a stolen database cannot be replayed, and no salt is needed
//!   because the input cannot be guessed.
//! - Low-entropy one-time codes (recovery codes, emailed codes) are stored as HMAC-SHA-256
//!   under a key derived from the key file, so a stolen database alone cannot brute-force
//!   them.
//! - TOTP secrets must be read back to compute codes, so they are encrypted with
//!   XChaCha20-Poly1305 under the key file, bound to the owning user by associated data.
//!
//! The key file lives outside the database (default `DB.key`, mode 0600). The database
//! keeps only a check value, so a wrong key file is refused with a clear error instead of
//! failing later on decryption.

use std::io::Write;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

const KEY_FILE_HEADER: &str = "authd-key-v1";
const CIPHERTEXT_VERSION: u8 = 1;

/// `n` bytes from the operating system's CSPRNG.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    // getrandom only fails when the OS has no entropy source at all; there is no safe
    // fallback for an authentication server, so that is fatal.
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    buf
}

/// A fresh 256-bit token, URL-safe base64 without padding (43 characters).
pub fn random_token() -> String {
    data_encoding::BASE64URL_NOPAD.encode(&random_bytes(32))
}

/// A uniformly random integer in `0..bound` (rejection sampling, no modulo bias).
pub fn random_below(bound: u32) -> u32 {
    assert!(bound > 0);
    let zone = u32::MAX - (u32::MAX % bound);
    loop {
        let b = random_bytes(4);
        let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if v < zone {
            return v % bound;
        }
    }
}

/// SHA-256 of a high-entropy token, hex. What the database stores instead of the token.
pub fn hash_token(token: &str) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(token.as_bytes()))
}

/// Constant-time equality of two byte strings (length may leak, content does not).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The secret-encryption key, loaded from its key file. A clone is another zeroized copy
/// (the core's background thread holds one to seal the audit log).
#[derive(Clone)]
pub struct SecretKey {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// The default key file for a database: the database path with `.key` appended.
pub fn default_key_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".key");
    PathBuf::from(s)
}

impl SecretKey {
    /// A new random key (not yet written anywhere).
    pub fn generate() -> SecretKey {
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&random_bytes(32));
        SecretKey { key }
    }

    /// A key from raw bytes (tests).
    pub fn from_bytes(bytes: [u8; 32]) -> SecretKey {
        SecretKey {
            key: Zeroizing::new(bytes),
        }
    }

    /// Write a new key file with mode 0600; refuses to overwrite an existing file.
    pub fn create_file(path: &Path) -> Result<SecretKey> {
        use std::os::unix::fs::OpenOptionsExt;
        let key = SecretKey::generate();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::Conflict(format!(
                        "the key file {} already exists; refusing to overwrite it",
                        path.display()
                    ))
                } else {
                    Error::Key(format!(
                        "cannot create the key file {}: {e}",
                        path.display()
                    ))
                }
            })?;
        let text = Zeroizing::new(format!(
            "{KEY_FILE_HEADER}\n{}\n",
            data_encoding::HEXLOWER.encode(key.key.as_ref())
        ));
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| {
                Error::Key(format!("cannot write the key file {}: {e}", path.display()))
            })?;
        Ok(key)
    }

    /// Read a key file written by [`SecretKey::create_file`].
    pub fn load_file(path: &Path) -> Result<SecretKey> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            Error::Key(format!(
                "cannot read the key file {}: {e} (it is created by `authctl init`; pass --key-file if it lives elsewhere)",
                path.display()
            ))
        })?);
        let mut lines = text.lines();
        let bad = || Error::Key(format!("{} is not an authd key file", path.display()));
        if lines.next() != Some(KEY_FILE_HEADER) {
            return Err(bad());
        }
        let hex = lines.next().ok_or_else(bad)?.trim();
        let bytes = Zeroizing::new(
            data_encoding::HEXLOWER_PERMISSIVE
                .decode(hex.as_bytes())
                .map_err(|_| bad())?,
        );
        if bytes.len() != 32 {
            return Err(bad());
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&bytes);
        Ok(SecretKey { key })
    }

    fn subkey(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(self.key.as_ref())
            .expect("HMAC accepts keys of any length");
        mac.update(b"authd subkey\0");
        mac.update(purpose.as_bytes());
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// A value stored in the database to recognise the matching key file.
    pub fn check_value(&self) -> String {
        data_encoding::HEXLOWER.encode(self.subkey("key check").as_ref())
    }

    /// HMAC-SHA-256 of `data` under a subkey for `domain`, hex. For low-entropy one-time
    /// codes: without the key file, the stored value cannot be brute-forced.
    pub fn keyed_hash(&self, domain: &str, data: &[u8]) -> String {
        let sub = self.subkey(domain);
        let mut mac =
            <HmacSha256 as KeyInit>::new_from_slice(sub.as_ref()).expect("HMAC accepts any key");
        mac.update(data);
        data_encoding::HEXLOWER.encode(&mac.finalize().into_bytes())
    }

    /// Encrypt `plaintext`; `aad` binds the ciphertext to its owner (e.g. `totp:42`).
    pub fn encrypt(&self, plaintext: &[u8], aad: &str) -> Vec<u8> {
        let key = self.subkey("secret encryption");
        let cipher = XChaCha20Poly1305::new((&*key).into());
        let nonce_bytes = random_bytes(24);
        let nonce = XNonce::try_from(&nonce_bytes[..]).expect("a nonce is 24 bytes");
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption of a small buffer cannot fail");
        let mut out = Vec::with_capacity(1 + 24 + ct.len());
        out.push(CIPHERTEXT_VERSION);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypt what [`SecretKey::encrypt`] produced with the same `aad`.
    pub fn decrypt(&self, blob: &[u8], aad: &str) -> Result<Zeroizing<Vec<u8>>> {
        if blob.len() < 1 + 24 + 16 || blob[0] != CIPHERTEXT_VERSION {
            return Err(Error::Key("a stored secret is malformed".into()));
        }
        let key = self.subkey("secret encryption");
        let cipher = XChaCha20Poly1305::new((&*key).into());
        let nonce = XNonce::try_from(&blob[1..25]).expect("a nonce is 24 bytes");
        cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: &blob[25..],
                    aad: aad.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| {
                Error::Key(
                    "a stored secret cannot be decrypted with this key file (wrong key file?)"
                        .into(),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_stably() {
        let a = random_token();
        let b = random_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn encrypt_round_trip_and_binding() {
        let k = SecretKey::from_bytes([7; 32]);
        let blob = k.encrypt(b"secret", "totp:1");
        assert_eq!(&k.decrypt(&blob, "totp:1").unwrap()[..], b"secret");
        assert!(k.decrypt(&blob, "totp:2").is_err(), "bound to its owner");
        let other = SecretKey::from_bytes([8; 32]);
        assert!(
            other.decrypt(&blob, "totp:1").is_err(),
            "needs the same key"
        );
        let mut tampered = blob.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(k.decrypt(&tampered, "totp:1").is_err());
        assert!(k.decrypt(&[1, 2, 3], "totp:1").is_err());
        assert_ne!(
            k.encrypt(b"secret", "totp:1"),
            blob,
            "fresh nonce each time"
        );
    }

    #[test]
    fn key_file_round_trip_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        let k = SecretKey::create_file(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let l = SecretKey::load_file(&p).unwrap();
        assert_eq!(k.check_value(), l.check_value());
        assert!(matches!(
            SecretKey::create_file(&p),
            Err(Error::Conflict(_))
        ));
        std::fs::write(&p, "nonsense").unwrap();
        assert!(matches!(SecretKey::load_file(&p), Err(Error::Key(_))));
    }

    #[test]
    fn keyed_hash_depends_on_key_and_domain() {
        let k = SecretKey::from_bytes([1; 32]);
        let h = k.keyed_hash("recovery", b"abcd");
        assert_eq!(h, k.keyed_hash("recovery", b"abcd"));
        assert_ne!(h, k.keyed_hash("email", b"abcd"));
        assert_ne!(
            h,
            SecretKey::from_bytes([2; 32]).keyed_hash("recovery", b"abcd")
        );
    }

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn random_below_in_range() {
        for _ in 0..1000 {
            assert!(random_below(10) < 10);
        }
    }
}
