//! TOTP second factor (RFC 6238 on top of RFC 4226 HOTP): decides whether a 6-digit code
//! typed by a user is the right one for their secret at time `now`, and which time step it
//! belongs to so that the caller can refuse the same step twice (replay).
//!
//! Why it looks like this:
//! - The HMAC and dynamic truncation come from `totp-rs`; nothing here hand-rolls crypto.
//! - The clock is never read: `now` (Unix seconds) is always a parameter, so verification
//!   is deterministic and testable against the RFC vectors.
//! - Every candidate step in the window is computed and compared in constant time
//!   (`subtle`), with no early exit, so timing does not reveal which step matched.
//! - Replay protection is step-based: the caller stores the highest step it accepted
//!   (`last_step`) and any match at or below it is refused.
//! - Enrolment helpers (secret generation, base32, `otpauth://` URI) live here too so that
//!   every part of the system agrees on SHA-1, 6 digits and 30-second steps.

use subtle::ConstantTimeEq;

/// Length of a time step in seconds (RFC 6238 default, what authenticator apps use).
pub const STEP_SECONDS: u64 = 30;
/// Number of digits of the codes users type.
pub const DIGITS: usize = 6;
/// Length of a generated secret in bytes (160 bits, as RFC 4226 recommends).
const SECRET_LEN: usize = 20;
/// Largest window `find_offset` searches on each side (one day of 30-second steps), so a
/// careless argument cannot turn a diagnosis into an unbounded loop.
const MAX_WINDOW: i64 = 2880;
/// RFC 4648 base32 alphabet.
const BASE32_SYMBOLS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// The HMAC hash function behind a code. Enrolment always uses `Sha1` (the only one every
/// authenticator app supports); the others exist for the RFC 6238 vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    fn to_totp_rs(self) -> totp_rs::Algorithm {
        match self {
            Algorithm::Sha1 => totp_rs::Algorithm::SHA1,
            Algorithm::Sha256 => totp_rs::Algorithm::SHA256,
            Algorithm::Sha512 => totp_rs::Algorithm::SHA512,
        }
    }
}

/// 20 random bytes from the OS CSPRNG (getrandom).
///
/// # Panics
/// If the operating system's random source fails. There is no safe fallback for a secret.
pub fn generate_secret() -> Vec<u8> {
    let mut secret = vec![0u8; SECRET_LEN];
    getrandom::fill(&mut secret).expect("the OS random number generator failed");
    secret
}

/// RFC 4648 base32 without padding (what authenticator apps and `oathtool -b` take).
pub fn secret_base32(secret: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(secret)
}

/// Parse base32 (case-insensitive, whitespace ignored, `=` padding optional) -> bytes.
///
/// Non-zero trailing bits in the last character are tolerated (as authenticator apps do).
/// Characters outside the alphabet, an impossible length, or an empty secret -> `Err`.
pub fn parse_base32(s: &str) -> Result<Vec<u8>, String> {
    let cleaned: String = s
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let cleaned = cleaned.trim_end_matches('=');
    if cleaned.is_empty() {
        return Err("empty base32 secret".to_string());
    }
    if let Some(bad) = cleaned.chars().find(|c| !BASE32_SYMBOLS.contains(*c)) {
        return Err(format!("'{bad}' is not a base32 character (A-Z, 2-7)"));
    }
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str(BASE32_SYMBOLS);
    spec.check_trailing_bits = false;
    let encoding = spec
        .encoding()
        .map_err(|e| format!("base32 encoding: {e}"))?;
    encoding
        .decode(cleaned.as_bytes())
        .map_err(|e| format!("invalid base32 secret: {e}"))
}

/// Percent-encode everything except RFC 3986 unreserved characters (so a space is `%20`).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `otpauth://totp/ISSUER:ACCOUNT?secret=...&issuer=ISSUER&algorithm=SHA1&digits=6&period=30`
/// with issuer and account percent-encoded (RFC 3986 unreserved characters kept, a space
/// becomes `%20`). The `:` between issuer and account is literal.
///
/// `Err` when the issuer or account is empty (or only whitespace) or contains `:`.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> Result<String, String> {
    for (what, value) in [("issuer", issuer), ("account", account)] {
        if value.trim().is_empty() {
            return Err(format!("the {what} must not be empty"));
        }
        if value.contains(':') {
            return Err(format!("the {what} must not contain ':'"));
        }
    }
    let issuer = percent_encode(issuer);
    let account = percent_encode(account);
    Ok(format!(
        "otpauth://totp/{issuer}:{account}?secret={}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        secret_base32(secret)
    ))
}

/// The time step number for a Unix time: `floor(now / 30)`. `now < 0` -> 0.
pub fn step_of(now: i64) -> i64 {
    if now < 0 {
        0
    } else {
        now / STEP_SECONDS as i64
    }
}

/// The code for a given step (general form used for RFC vectors: any algorithm, digits
/// 6..=8). A negative step is treated as step 0; `digits` outside 6..=8 is clamped into it.
pub fn code_at_step(secret: &[u8], step: i64, algorithm: Algorithm, digits: usize) -> String {
    hotp(secret, u64::try_from(step).unwrap_or(0), algorithm, digits)
}

/// RFC 4226 HOTP (counter-based): the same computation as [`code_at_step`] with the counter
/// given directly. `digits` outside 6..=8 is clamped into it.
pub fn hotp(secret: &[u8], counter: u64, algorithm: Algorithm, digits: usize) -> String {
    // A TOTP with a 1-second step turns "time" into the raw HOTP counter.
    let generator = totp_rs::Builder::new()
        .with_algorithm(algorithm.to_totp_rs())
        .with_digits(digits.clamp(6, 8) as u8)
        .with_skew(0)
        .with_step_duration(1)
        .with_secret(secret)
        .build_noncompliant();
    generator.generate(counter).to_string()
}

/// Which step a code matched, and how far that step is from the step of `now`
/// (`offset = step - step_of(now)`; negative means the user's clock is behind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub step: i64,
    pub offset: i64,
}

/// Why a code was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpError {
    /// Not exactly six ASCII digits (after trimming and removing ASCII spaces).
    Malformed,
    /// Well-formed but wrong for every step in the window.
    NoMatch,
    /// Right code, but its step was already used (at or below `last_step`).
    Replayed,
}

/// Normalise what the user typed: trim surrounding whitespace, then remove ASCII spaces
/// (so "123 456" is accepted). The result must be exactly six ASCII digits; any other
/// character, including Unicode digits such as fullwidth "１", makes it malformed.
fn normalise_code(code: &str) -> Option<String> {
    let code: String = code.trim().chars().filter(|&c| c != ' ').collect();
    if code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit()) {
        Some(code)
    } else {
        None
    }
}

/// Every step in `current-window..=current+window` (steps below 0 skipped) whose code
/// equals `code`, all computed and compared in constant time, no early exit.
fn matching_steps(secret: &[u8], code: &str, now: i64, window: i64) -> Vec<Match> {
    let current = step_of(now);
    let window = window.max(0);
    let mut found = Vec::new();
    for offset in -window..=window {
        let step = current + offset;
        if step < 0 {
            continue;
        }
        let candidate = code_at_step(secret, step, Algorithm::Sha1, DIGITS);
        let equal: bool = candidate.as_bytes().ct_eq(code.as_bytes()).into();
        if equal {
            found.push(Match { step, offset });
        }
    }
    found
}

/// The match nearest offset 0; on a tie (-k and +k) the later step, so that accepting it
/// also burns the earlier one for replay purposes.
fn nearest(matches: impl Iterator<Item = Match>) -> Option<Match> {
    matches.min_by_key(|m| (m.offset.abs(), -m.offset))
}

/// Verify a 6-digit SHA-1 code at `now`, accepting steps `now-skew..=now+skew` (skew is
/// normally 1; a negative skew counts as 0).
///
/// `code` is trimmed, then every ASCII space is removed (so "123 456" is accepted); what is
/// left must be exactly six ASCII digits, otherwise `Malformed` (fullwidth or other Unicode
/// digits are malformed). Every candidate step is computed and compared in constant time,
/// with no early exit on a match.
///
/// `last_step` is the highest step already accepted for this credential: a matching step
/// `<= last_step` is `Replayed`. If the code matches several steps, the non-replayed one
/// nearest offset 0 wins (on a tie, the later step). The caller stores the returned `step`
/// as the new `last_step`.
pub fn verify(
    secret: &[u8],
    code: &str,
    now: i64,
    skew: i64,
    last_step: Option<i64>,
) -> Result<Match, TotpError> {
    let code = normalise_code(code).ok_or(TotpError::Malformed)?;
    let matches = matching_steps(secret, &code, now, skew);
    if matches.is_empty() {
        return Err(TotpError::NoMatch);
    }
    let fresh = matches
        .iter()
        .copied()
        .filter(|m| !matches!(last_step, Some(last) if m.step <= last));
    nearest(fresh).ok_or(TotpError::Replayed)
}

/// Diagnosis for `authctl totp test`: like [`verify`] but searches a wider window
/// (±`window` steps, capped at one day each side), ignores replay, and returns the match
/// nearest offset 0. `None` for a malformed code or no match.
pub fn find_offset(secret: &[u8], code: &str, now: i64, window: i64) -> Option<Match> {
    let code = normalise_code(code)?;
    let matches = matching_steps(secret, &code, now, window.min(MAX_WINDOW));
    nearest(matches.into_iter())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED20: &[u8] = b"12345678901234567890";
    const SEED32: &[u8] = b"12345678901234567890123456789012";
    const SEED64: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    #[test]
    fn rfc4226_hotp_vectors() {
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (counter, want) in expected.iter().enumerate() {
            assert_eq!(
                hotp(SEED20, counter as u64, Algorithm::Sha1, 6),
                *want,
                "counter {counter}"
            );
        }
    }

    #[test]
    fn rfc6238_vectors() {
        use Algorithm::*;
        let table: [(i64, Algorithm, &str); 18] = [
            (59, Sha1, "94287082"),
            (59, Sha256, "46119246"),
            (59, Sha512, "90693936"),
            (1111111109, Sha1, "07081804"),
            (1111111109, Sha256, "68084774"),
            (1111111109, Sha512, "25091201"),
            (1111111111, Sha1, "14050471"),
            (1111111111, Sha256, "67062674"),
            (1111111111, Sha512, "99943326"),
            (1234567890, Sha1, "89005924"),
            (1234567890, Sha256, "91819424"),
            (1234567890, Sha512, "93441116"),
            (2000000000, Sha1, "69279037"),
            (2000000000, Sha256, "90698825"),
            (2000000000, Sha512, "38618901"),
            (20000000000, Sha1, "65353130"),
            (20000000000, Sha256, "77737706"),
            (20000000000, Sha512, "47863826"),
        ];
        for (time, alg, want) in table {
            let seed = match alg {
                Sha1 => SEED20,
                Sha256 => SEED32,
                Sha512 => SEED64,
            };
            assert_eq!(
                code_at_step(seed, step_of(time), alg, 8),
                want,
                "time {time} {alg:?}"
            );
        }
    }

    #[test]
    fn step_of_table() {
        for (now, want) in [
            (-1, 0),
            (i64::MIN, 0),
            (0, 0),
            (29, 0),
            (30, 1),
            (59, 1),
            (60, 2),
        ] {
            assert_eq!(step_of(now), want, "now {now}");
        }
    }

    const NOW: i64 = 1_700_000_015;

    fn code_at_offset(offset: i64) -> String {
        code_at_step(SEED20, step_of(NOW) + offset, Algorithm::Sha1, DIGITS)
    }

    #[test]
    fn verify_window() {
        for (offset, want) in [
            (-2, Err(TotpError::NoMatch)),
            (-1, Ok(-1)),
            (0, Ok(0)),
            (1, Ok(1)),
            (2, Err(TotpError::NoMatch)),
        ] {
            let got = verify(SEED20, &code_at_offset(offset), NOW, 1, None).map(|m| m.offset);
            assert_eq!(got, want, "offset {offset}");
        }
        let m = verify(SEED20, &code_at_offset(0), NOW, 1, None).unwrap();
        assert_eq!(m.step, step_of(NOW));
    }

    #[test]
    fn verify_skew_zero_only_current() {
        assert!(verify(SEED20, &code_at_offset(0), NOW, 0, None).is_ok());
        assert_eq!(
            verify(SEED20, &code_at_offset(1), NOW, 0, None),
            Err(TotpError::NoMatch)
        );
    }

    #[test]
    fn verify_replay() {
        let code = code_at_offset(0);
        let m = verify(SEED20, &code, NOW, 1, None).unwrap();
        // The same step again, once recorded, is refused.
        assert_eq!(
            verify(SEED20, &code, NOW, 1, Some(m.step)),
            Err(TotpError::Replayed)
        );
        // A newer step is accepted and an older one after it is refused.
        let newer = verify(SEED20, &code_at_offset(1), NOW, 1, Some(m.step)).unwrap();
        assert_eq!(newer.offset, 1);
        assert_eq!(
            verify(SEED20, &code_at_offset(-1), NOW, 1, Some(newer.step)),
            Err(TotpError::Replayed)
        );
        // A still-older last_step does not block the current code.
        assert!(verify(SEED20, &code, NOW, 1, Some(m.step - 5)).is_ok());
    }

    #[test]
    fn verify_malformed() {
        for bad in [
            "12345",
            "1234567",
            "abcdef",
            "12a456",
            "１２３４５６",
            "",
            "   ",
            "-12345",
        ] {
            assert_eq!(
                verify(SEED20, bad, NOW, 1, None),
                Err(TotpError::Malformed),
                "{bad:?}"
            );
            assert_eq!(find_offset(SEED20, bad, NOW, 10), None, "{bad:?}");
        }
    }

    #[test]
    fn verify_tolerates_whitespace() {
        let code = code_at_offset(0);
        let spaced = format!(" {} {}\n", &code[..3], &code[3..]);
        assert_eq!(
            verify(SEED20, &spaced, NOW, 1, None).map(|m| m.offset),
            Ok(0)
        );
        let tabbed = format!("{}\t{}", &code[..3], &code[3..]);
        assert_eq!(
            verify(SEED20, &tabbed, NOW, 1, None),
            Err(TotpError::Malformed)
        );
    }

    #[test]
    fn verify_near_epoch_skips_negative_steps() {
        let code = code_at_step(SEED20, 0, Algorithm::Sha1, DIGITS);
        assert_eq!(
            verify(SEED20, &code, 5, 1, None),
            Ok(Match { step: 0, offset: 0 })
        );
    }

    #[test]
    fn find_offset_wide_window() {
        for offset in [-10, -3, 0, 4, 10] {
            let found = find_offset(SEED20, &code_at_offset(offset), NOW, 10);
            assert_eq!(found.map(|m| m.offset), Some(offset), "offset {offset}");
        }
        assert_eq!(find_offset(SEED20, &code_at_offset(11), NOW, 10), None);
        // Replay is irrelevant to diagnosis.
        assert!(find_offset(SEED20, &code_at_offset(0), NOW, 1).is_some());
    }

    #[test]
    fn nearest_prefers_zero_then_later() {
        let m = |offset| Match {
            step: 100 + offset,
            offset,
        };
        assert_eq!(nearest([m(-1), m(0), m(1)].into_iter()), Some(m(0)));
        assert_eq!(nearest([m(-1), m(1)].into_iter()), Some(m(1)));
        assert_eq!(nearest([m(-2), m(1)].into_iter()), Some(m(1)));
        assert_eq!(nearest(std::iter::empty()), None);
    }

    #[test]
    fn generated_secret_is_20_random_bytes() {
        let a = generate_secret();
        let b = generate_secret();
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
    }

    #[test]
    fn base32_round_trip() {
        let secret = generate_secret();
        let encoded = secret_base32(&secret);
        assert!(!encoded.contains('='));
        assert_eq!(parse_base32(&encoded).unwrap(), secret);
        assert_eq!(secret_base32(SEED20), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    }

    #[test]
    fn base32_parse_table() {
        let ok: [(&str, &[u8]); 5] = [
            ("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", SEED20),
            ("gezd gnbv gy3t qojq gezd gnbv gy3t qojq", SEED20),
            ("MZXW6===", b"foo"),
            ("mzxw6", b"foo"),
            ("MZXW7", b"foo"), // non-canonical trailing bits tolerated
        ];
        for (input, want) in ok {
            assert_eq!(parse_base32(input).unwrap(), want, "{input:?}");
        }
        for bad in [
            "",
            "  ",
            "====",
            "MZXW1",
            "MZXW6!",
            "M",
            "GEZDGNBVGY3TQOJQ0",
        ] {
            assert!(parse_base32(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn otpauth_uri_format() {
        let uri = otpauth_uri("Example Corp", "alice smith@example.com", SEED20).unwrap();
        assert_eq!(
            uri,
            "otpauth://totp/Example%20Corp:alice%20smith%40example.com\
             ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Example%20Corp\
             &algorithm=SHA1&digits=6&period=30"
        );
        assert!(uri.contains(&format!("secret={}", secret_base32(SEED20))));
        assert!(!uri.contains(' '));
        // totp-rs parses it back to the same secret and settings.
        let parsed = totp_rs::Totp::from_url(&uri).unwrap();
        assert_eq!(parsed.secret().as_ref(), SEED20);
        assert_eq!(parsed.issuer(), Some("Example Corp"));
        assert_eq!(parsed.account_name(), "alice smith@example.com");
        assert_eq!(parsed.digits(), 6);
        assert_eq!(parsed.step(), 30);
    }

    #[test]
    fn otpauth_uri_rejects() {
        for (issuer, account) in [("", "a"), ("i", ""), (" ", "a"), ("a:b", "c"), ("a", "b:c")] {
            assert!(
                otpauth_uri(issuer, account, SEED20).is_err(),
                "{issuer:?} {account:?}"
            );
        }
    }
}
