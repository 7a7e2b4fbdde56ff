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
//! keeps only a check value per key, so a wrong key file is refused with a clear error
//! instead of failing later on decryption.
//!
//! Keys are numbered and rotate ([`SecretKey`]): the file holds every key still needed and
//! names the current one; each stored value names the key it was made under.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// The key file's first line: numbered keys, one current. `authd-key-v1` files (one
/// unnumbered key, read as key 1) are still read.
const KEY_FILE_HEADER: &str = "authd-key-v2";
const KEY_FILE_HEADER_V1: &str = "authd-key-v1";
/// An encrypted value's first byte: 1 = under key 1 (the format before key numbers);
/// 2 = the key's number follows (4 bytes, big-endian).
const CIPHERTEXT_V1: u8 = 1;
const CIPHERTEXT_V2: u8 = 2;

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

/// A key's number in its key file. Key 1 is the key of a file written before keys had
/// numbers (`authd-key-v1`).
pub type KeyId = u32;

/// The keys of one key file: every key still listed, and which one is current (new values
/// are written under it; older ones are read under the key they name).
struct Ring {
    keys: Vec<(KeyId, Zeroizing<[u8; 32]>)>,
    current: KeyId,
}

impl Ring {
    fn single(bytes: [u8; 32]) -> Ring {
        Ring {
            keys: vec![(1, Zeroizing::new(bytes))],
            current: 1,
        }
    }

    fn get(&self, id: KeyId) -> Option<&[u8; 32]> {
        self.keys.iter().find(|(i, _)| *i == id).map(|(_, k)| &**k)
    }

    fn current_key(&self) -> &[u8; 32] {
        self.get(self.current)
            .expect("a ring's current key is one of its keys")
    }
}

/// The secret keys, loaded from the key file: a ring of numbered keys of which one is
/// current. Values are written under the current key and name the key they were written
/// under (an encrypted value in its header, a keyed hash by a `kN:` prefix — none for key
/// 1, so values written before keys had numbers read as key 1's), so a value is read or
/// checked under its own key while the older keys stay listed; `authctl key rotate` adds
/// a key, `authctl key retire` removes one.
///
/// A clone shares the ring: when the key file changes ([`SecretKey::reload_with`], or a
/// value naming a key this ring does not hold), every holder sees the new ring.
#[derive(Clone)]
pub struct SecretKey {
    ring: Arc<RwLock<Arc<Ring>>>,
    path: Option<PathBuf>,
    /// What the file looked like when it was last read (see [`SecretKey::file_changed`]).
    stamp: Arc<Mutex<Option<FileStamp>>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct FileStamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp_of(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
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

/// The key a keyed hash (as [`SecretKey::keyed_hash`] writes it) was made under.
pub fn key_of_keyed_hash(stored: &str) -> KeyId {
    split_keyed(stored).0
}

fn split_keyed(stored: &str) -> (KeyId, &str) {
    if let Some(rest) = stored.strip_prefix('k') {
        if let Some((id, hex)) = rest.split_once(':') {
            if let Ok(id) = id.parse::<KeyId>() {
                return (id, hex);
            }
        }
        return (0, stored);
    }
    (1, stored)
}

/// The key an encrypted value (as [`SecretKey::encrypt`] writes it) was made under, or
/// None when the value is malformed.
pub fn key_of_encrypted(blob: &[u8]) -> Option<KeyId> {
    match blob.first() {
        Some(&CIPHERTEXT_V1) if blob.len() >= 1 + 24 + 16 => Some(1),
        Some(&CIPHERTEXT_V2) if blob.len() >= 5 + 24 + 16 => {
            Some(KeyId::from_be_bytes([blob[1], blob[2], blob[3], blob[4]]))
        }
        _ => None,
    }
}

fn subkey_of(key: &[u8; 32], purpose: &str) -> Zeroizing<[u8; 32]> {
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(b"authd subkey\0");
    mac.update(purpose.as_bytes());
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

fn hmac_hex(key: &[u8; 32], domain: &str, data: &[u8]) -> String {
    let sub = subkey_of(key, domain);
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(sub.as_ref()).expect("HMAC accepts any key");
    mac.update(data);
    data_encoding::HEXLOWER.encode(&mac.finalize().into_bytes())
}

fn keyed_form(id: KeyId, hex: String) -> String {
    if id == 1 {
        hex
    } else {
        format!("k{id}:{hex}")
    }
}

fn parse_key_file(text: &str, path: &Path) -> Result<Ring> {
    let bad = |why: &str| {
        Error::Key(format!(
            "{} is not an authd key file ({why})",
            path.display()
        ))
    };
    let decode = |hex: &str| -> Result<Zeroizing<[u8; 32]>> {
        let bytes = Zeroizing::new(
            data_encoding::HEXLOWER_PERMISSIVE
                .decode(hex.trim().as_bytes())
                .map_err(|_| bad("a key is not hex"))?,
        );
        if bytes.len() != 32 {
            return Err(bad("a key is not 32 bytes"));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&bytes);
        Ok(key)
    };
    let mut lines = text.lines();
    match lines.next() {
        Some(KEY_FILE_HEADER_V1) => {
            let key = decode(lines.next().ok_or_else(|| bad("no key"))?)?;
            Ok(Ring {
                keys: vec![(1, key)],
                current: 1,
            })
        }
        Some(KEY_FILE_HEADER) => {
            let mut current = None;
            let mut keys: Vec<(KeyId, Zeroizing<[u8; 32]>)> = Vec::new();
            for line in lines
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                let mut words = line.split_whitespace();
                match (words.next(), words.next(), words.next(), words.next()) {
                    (Some("current"), Some(id), None, None) => {
                        current = Some(id.parse::<KeyId>().map_err(|_| bad("bad current line"))?)
                    }
                    (Some("key"), Some(id), Some(hex), None) => {
                        let id = id.parse::<KeyId>().map_err(|_| bad("bad key number"))?;
                        if id == 0 || keys.iter().any(|(i, _)| *i == id) {
                            return Err(bad("a key number is 0 or repeated"));
                        }
                        keys.push((id, decode(hex)?));
                    }
                    _ => return Err(bad("a line is neither `current N` nor `key N HEX`")),
                }
            }
            let current = current.ok_or_else(|| bad("no `current N` line"))?;
            if !keys.iter().any(|(i, _)| *i == current) {
                return Err(Error::Key(format!(
                    "the key file {} names key {current} current but does not hold it",
                    path.display()
                )));
            }
            keys.sort_by_key(|(i, _)| *i);
            Ok(Ring { keys, current })
        }
        _ => Err(bad("no authd-key header")),
    }
}

impl SecretKey {
    fn with_ring(ring: Ring, path: Option<PathBuf>) -> SecretKey {
        let stamp = path.as_deref().and_then(stamp_of);
        SecretKey {
            ring: Arc::new(RwLock::new(Arc::new(ring))),
            path,
            stamp: Arc::new(Mutex::new(stamp)),
        }
    }

    fn ring(&self) -> Arc<Ring> {
        match self.ring.read() {
            Ok(r) => Arc::clone(&r),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// A new random key (not yet written anywhere).
    pub fn generate() -> SecretKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(&random_bytes(32));
        let ring = Ring::single(key);
        key.zeroize();
        SecretKey::with_ring(ring, None)
    }

    /// A key from raw bytes (tests).
    pub fn from_bytes(bytes: [u8; 32]) -> SecretKey {
        SecretKey::with_ring(Ring::single(bytes), None)
    }

    /// The numbers of the keys held, oldest first.
    pub fn ids(&self) -> Vec<KeyId> {
        self.ring().keys.iter().map(|(i, _)| *i).collect()
    }

    /// The number of the key new values are written under.
    pub fn current_id(&self) -> KeyId {
        self.ring().current
    }

    /// The key file this ring was read from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// This ring with a new random key added and made current (not yet written anywhere;
    /// see [`SecretKey::write_file`]). Returns the ring and the new key's number.
    pub fn with_new_key(&self) -> (SecretKey, KeyId) {
        let ring = self.ring();
        let id = ring.keys.iter().map(|(i, _)| *i).max().unwrap_or(0) + 1;
        let mut keys: Vec<(KeyId, Zeroizing<[u8; 32]>)> =
            ring.keys.iter().map(|(i, k)| (*i, k.clone())).collect();
        let mut fresh = Zeroizing::new([0u8; 32]);
        fresh.copy_from_slice(&random_bytes(32));
        keys.push((id, fresh));
        (
            SecretKey::with_ring(Ring { keys, current: id }, self.path.clone()),
            id,
        )
    }

    /// This ring without key `id` (refused for the current key or a key it does not hold).
    pub fn without_key(&self, id: KeyId) -> Result<SecretKey> {
        let ring = self.ring();
        if id == ring.current {
            return Err(Error::Invalid(format!(
                "key {id} is the current key; rotate to a new key before retiring it"
            )));
        }
        if ring.get(id).is_none() {
            return Err(Error::NotFound(format!("the key file holds no key {id}")));
        }
        let keys = ring
            .keys
            .iter()
            .filter(|(i, _)| *i != id)
            .map(|(i, k)| (*i, k.clone()))
            .collect();
        Ok(SecretKey::with_ring(
            Ring {
                keys,
                current: ring.current,
            },
            self.path.clone(),
        ))
    }

    fn file_text(&self) -> Zeroizing<String> {
        let ring = self.ring();
        let mut text = Zeroizing::new(format!(
            "{KEY_FILE_HEADER}\n# new values are written under the current key; the others are\n\
             # still read. Change with `authctl key rotate` / `authctl key retire ID`.\ncurrent {}\n",
            ring.current
        ));
        for (id, k) in &ring.keys {
            text.push_str(&format!(
                "key {id} {}\n",
                data_encoding::HEXLOWER.encode(k.as_ref())
            ));
        }
        text
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
        f.write_all(key.file_text().as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| {
                Error::Key(format!("cannot write the key file {}: {e}", path.display()))
            })?;
        drop(f);
        SecretKey::load_file(path)
    }

    /// Replace the key file at `path` with this ring, atomically (a 0600 file beside it,
    /// synced, renamed over it): a reader sees the old file or the new one, never half.
    pub fn write_file(&self, path: &Path) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let err = |e: std::io::Error| {
            Error::Key(format!("cannot write the key file {}: {e}", path.display()))
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".new");
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(self.file_text().as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Read a key file written by [`SecretKey::create_file`] or [`SecretKey::write_file`]
    /// (or an `authd-key-v1` file of one unnumbered key, which becomes key 1).
    pub fn load_file(path: &Path) -> Result<SecretKey> {
        let stamp = stamp_of(path);
        let ring = Self::read_ring(path)?;
        let key = SecretKey::with_ring(ring, Some(path.to_path_buf()));
        if let Ok(mut s) = key.stamp.lock() {
            *s = stamp;
        }
        Ok(key)
    }

    fn read_ring(path: &Path) -> Result<Ring> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            Error::Key(format!(
                "cannot read the key file {}: {e} (it is created by `authctl init`; pass --key-file if it lives elsewhere)",
                path.display()
            ))
        })?);
        parse_key_file(&text, path)
    }

    /// Whether the key file changed on disk since this ring was read (cheap: one stat).
    pub fn file_changed(&self) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        let now = stamp_of(path);
        self.stamp.lock().map(|s| *s != now).unwrap_or(false)
    }

    /// Read the key file again and, if `check` accepts the new ring, make it the ring of
    /// every clone. A key number that stays must keep its bytes (a different file is
    /// refused). Returns whether anything changed.
    pub fn reload_with(&self, check: impl FnOnce(&SecretKey) -> Result<()>) -> Result<bool> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let stamp = stamp_of(path);
        let new = Self::read_ring(path)?;
        if let Ok(mut s) = self.stamp.lock() {
            *s = stamp;
        }
        let old = self.ring();
        for (id, k) in &new.keys {
            if let Some(o) = old.get(*id) {
                if !ct_eq(o, k.as_ref()) {
                    return Err(Error::Key(format!(
                        "key {id} in {} differs from the key {id} in use; refusing the new file",
                        path.display()
                    )));
                }
            }
        }
        let same = new.current == old.current
            && new
                .keys
                .iter()
                .map(|(i, _)| *i)
                .eq(old.keys.iter().map(|(i, _)| *i));
        if same {
            return Ok(false);
        }
        let candidate = SecretKey::with_ring(
            Ring {
                keys: new.keys.iter().map(|(i, k)| (*i, k.clone())).collect(),
                current: new.current,
            },
            Some(path.clone()),
        );
        check(&candidate)?;
        match self.ring.write() {
            Ok(mut r) => *r = Arc::new(new),
            Err(p) => *p.into_inner() = Arc::new(new),
        }
        Ok(true)
    }

    /// The key `id`, reading the key file again once when this ring does not hold it (a
    /// key added by `authctl key rotate` since).
    fn key_for(&self, id: KeyId) -> Result<Arc<Ring>> {
        let ring = self.ring();
        if ring.get(id).is_some() {
            return Ok(ring);
        }
        if let Err(e) = self.reload_with(|_| Ok(())) {
            tracing::warn!(error = %e, "reading the key file again failed");
        }
        let ring = self.ring();
        if ring.get(id).is_some() {
            return Ok(ring);
        }
        Err(Error::Key(format!(
            "a stored secret needs key {id}, which the key file{} does not hold (retired too early, or the wrong key file?)",
            self.path
                .as_deref()
                .map(|p| format!(" {}", p.display()))
                .unwrap_or_default()
        )))
    }

    /// A value stored in the database to recognise the current key.
    pub fn check_value(&self) -> String {
        let ring = self.ring();
        data_encoding::HEXLOWER.encode(subkey_of(ring.current_key(), "key check").as_ref())
    }

    /// The check value of key `id`, if held.
    pub fn check_value_of(&self, id: KeyId) -> Option<String> {
        let ring = self.ring();
        ring.get(id)
            .map(|k| data_encoding::HEXLOWER.encode(subkey_of(k, "key check").as_ref()))
    }

    /// HMAC-SHA-256 of `data` under a subkey of the current key for `domain`: hex, prefixed
    /// `kN:` unless the key is key 1. For low-entropy one-time codes: without the key file,
    /// the stored value cannot be brute-forced. Check a stored value with
    /// [`SecretKey::keyed_hash_matches`] (or look it up among [`SecretKey::keyed_hashes`]).
    pub fn keyed_hash(&self, domain: &str, data: &[u8]) -> String {
        let ring = self.ring();
        keyed_form(ring.current, hmac_hex(ring.current_key(), domain, data))
    }

    /// [`SecretKey::keyed_hash`] under every key held, the current key's first: the
    /// values a stored keyed hash of `data` may be.
    pub fn keyed_hashes(&self, domain: &str, data: &[u8]) -> Vec<String> {
        let ring = self.ring();
        let mut out = vec![keyed_form(
            ring.current,
            hmac_hex(ring.current_key(), domain, data),
        )];
        for (id, k) in ring.keys.iter().filter(|(i, _)| *i != ring.current) {
            out.push(keyed_form(*id, hmac_hex(k, domain, data)));
        }
        out
    }

    /// Whether `stored` is the keyed hash of `data` under the key it names (constant time;
    /// false when that key is not held).
    pub fn keyed_hash_matches(&self, domain: &str, data: &[u8], stored: &str) -> bool {
        let (id, _) = split_keyed(stored);
        let ring = self.ring();
        match ring.get(id) {
            Some(k) => ct_eq(
                keyed_form(id, hmac_hex(k, domain, data)).as_bytes(),
                stored.as_bytes(),
            ),
            None => false,
        }
    }

    /// A keyed hash that stays the same across rotations while the oldest key held stays
    /// (for values derived, not stored: the decoy questions of unknown users).
    pub fn stable_hash(&self, domain: &str, data: &[u8]) -> String {
        let ring = self.ring();
        let (_, k) = ring.keys.first().expect("a ring holds a key");
        hmac_hex(k, domain, data)
    }

    /// Encrypt `plaintext` under the current key; `aad` binds the ciphertext to its owner
    /// (e.g. `totp:42`). The value names its key.
    pub fn encrypt(&self, plaintext: &[u8], aad: &str) -> Vec<u8> {
        let ring = self.ring();
        let key = subkey_of(ring.current_key(), "secret encryption");
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
        let mut out = Vec::with_capacity(5 + 24 + ct.len());
        if ring.current == 1 {
            // Key 1 keeps the first format, so a site that never rotates reads the same.
            out.push(CIPHERTEXT_V1);
        } else {
            out.push(CIPHERTEXT_V2);
            out.extend_from_slice(&ring.current.to_be_bytes());
        }
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypt what [`SecretKey::encrypt`] produced with the same `aad`, under the key the
    /// value names.
    pub fn decrypt(&self, blob: &[u8], aad: &str) -> Result<Zeroizing<Vec<u8>>> {
        let Some(id) = key_of_encrypted(blob) else {
            return Err(Error::Key("a stored secret is malformed".into()));
        };
        let body = if blob[0] == CIPHERTEXT_V1 {
            &blob[1..]
        } else {
            &blob[5..]
        };
        let ring = self.key_for(id)?;
        let key = subkey_of(ring.get(id).expect("key_for found it"), "secret encryption");
        let cipher = XChaCha20Poly1305::new((&*key).into());
        let nonce = XNonce::try_from(&body[..24]).expect("a nonce is 24 bytes");
        cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: &body[24..],
                    aad: aad.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| {
                Error::Key(format!(
                    "a stored secret cannot be decrypted with key {id} of this key file (wrong key file?)"
                ))
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
    fn rotation_keeps_old_values_readable_and_writes_under_the_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        // A key file of the first format still loads, as key 1.
        std::fs::write(&p, format!("authd-key-v1\n{}\n", "07".repeat(32))).unwrap();
        let k1 = SecretKey::load_file(&p).unwrap();
        assert_eq!((k1.ids(), k1.current_id()), (vec![1], 1));
        let old_blob = SecretKey::from_bytes([7; 32]).encrypt(b"s", "totp:1");
        assert_eq!(&k1.decrypt(&old_blob, "totp:1").unwrap()[..], b"s");
        let old_hash = k1.keyed_hash("recovery", b"abcd");
        assert!(!old_hash.contains(':'), "key 1 writes the first format");

        let (k2, id) = k1.with_new_key();
        assert_eq!(id, 2);
        k2.write_file(&p).unwrap();
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(mode, 0o600);
        let loaded = SecretKey::load_file(&p).unwrap();
        assert_eq!((loaded.ids(), loaded.current_id()), (vec![1, 2], 2));
        let new_blob = loaded.encrypt(b"t", "totp:1");
        assert_eq!(key_of_encrypted(&new_blob), Some(2));
        assert_eq!(key_of_encrypted(&old_blob), Some(1));
        assert_eq!(&loaded.decrypt(&old_blob, "totp:1").unwrap()[..], b"s");
        assert_eq!(&loaded.decrypt(&new_blob, "totp:1").unwrap()[..], b"t");
        let new_hash = loaded.keyed_hash("recovery", b"abcd");
        assert!(new_hash.starts_with("k2:"));
        assert_eq!(key_of_keyed_hash(&new_hash), 2);
        assert!(loaded.keyed_hash_matches("recovery", b"abcd", &old_hash));
        assert!(loaded.keyed_hash_matches("recovery", b"abcd", &new_hash));
        assert!(!loaded.keyed_hash_matches("recovery", b"abce", &new_hash));
        assert!(loaded.keyed_hashes("recovery", b"abcd").contains(&old_hash));

        // The old holder picks the new key up when it meets a value under it.
        assert_eq!(&k1.decrypt(&new_blob, "totp:1").unwrap()[..], b"t");
        assert_eq!(k1.current_id(), 2, "and writes under it from then on");

        // Key 1 retired: its values name it in the error.
        let only2 = loaded.without_key(1).unwrap();
        assert!(loaded.without_key(2).is_err(), "the current key stays");
        only2.write_file(&p).unwrap();
        let k = SecretKey::load_file(&p).unwrap();
        let e = k.decrypt(&old_blob, "totp:1").unwrap_err().to_string();
        assert!(e.contains("key 1"), "{e}");
        assert!(!k.keyed_hash_matches("recovery", b"abcd", &old_hash));

        // A file whose key 2 changed is refused by a running ring.
        let other = SecretKey::from_bytes([9; 32]).with_new_key().0;
        other.write_file(&p).unwrap();
        assert!(k.reload_with(|_| Ok(())).is_err());
        for bad in [
            "authd-key-v2\nkey 1 00\ncurrent 1\n",
            "authd-key-v2\ncurrent 3\n",
        ] {
            std::fs::write(&p, bad).unwrap();
            assert!(
                matches!(SecretKey::load_file(&p), Err(Error::Key(_))),
                "{bad}"
            );
        }
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
