//! Recovery codes: one-time backup codes for users who lose their authenticator.
//!
//! A code is 10 characters from a 32-letter alphabet without look-alikes (50 bits),
//! shown as `xxxxx-xxxxx`. Input is forgiving (case, dashes and spaces ignored). Codes are
//! stored as keyed hashes (see `crypto`), each usable once.

use crate::crypto;

pub const DEFAULT_COUNT: usize = 10;
/// Crockford-style alphabet: no i, l, o, u.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const CODE_LEN: usize = 10;

/// `n` fresh codes, formatted for display.
pub fn generate(n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let raw: String = (0..CODE_LEN)
                .map(|_| ALPHABET[crypto::random_below(32) as usize] as char)
                .collect();
            format!("{}-{}", &raw[..5], &raw[5..])
        })
        .collect()
}

/// The canonical form of a typed code, or None if it cannot be a code.
pub fn normalize(input: &str) -> Option<String> {
    let s: String = input
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (s.len() == CODE_LEN && s.bytes().all(|b| ALPHABET.contains(&b))).then_some(s)
}

/// What the store keeps for a code (under the current key).
pub fn hash(key: &crypto::SecretKey, code: &str) -> Option<String> {
    normalize(code).map(|c| key.keyed_hash("recovery code", c.as_bytes()))
}

/// What the store may hold for a code: its hash under every key still listed (codes
/// issued before a rotation are under an older key).
pub fn hashes(key: &crypto::SecretKey, code: &str) -> Option<Vec<String>> {
    normalize(code).map(|c| key.keyed_hashes("recovery code", c.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_normalise() {
        let codes = generate(DEFAULT_COUNT);
        assert_eq!(codes.len(), 10);
        let set: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(set.len(), 10);
        for c in &codes {
            assert_eq!(c.len(), 11);
            let n = normalize(c).unwrap();
            assert_eq!(normalize(&c.to_uppercase()), Some(n.clone()));
            assert_eq!(normalize(&format!(" {} ", c.replace('-', " "))), Some(n));
        }
        for bad in [
            "",
            "12345",
            "abcde-fghiu",
            "abcde-fghij-k",
            "ａｂｃｄｅ-ｆｇｈｊｋ",
        ] {
            assert_eq!(normalize(bad), None, "{bad}");
        }
    }

    #[test]
    fn hash_is_keyed() {
        let k = crypto::SecretKey::from_bytes([3; 32]);
        assert_eq!(hash(&k, "ABCDE-FGHJK"), hash(&k, "abcdefghjk"));
        assert_ne!(
            hash(&k, "abcdefghjk"),
            hash(&crypto::SecretKey::from_bytes([4; 32]), "abcdefghjk")
        );
        assert_eq!(hash(&k, "nope"), None);
    }
}
