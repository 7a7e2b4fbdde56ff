//! Passwords: how they are stored (argon2id PHC strings) and which ones are acceptable
//! (the password policy).
//!
//! Why it looks like this:
//! - argon2id with OWASP's baseline (m=19456 KiB, t=2, p=1) by default; the parameters
//!   are recorded in each PHC string, so old hashes keep verifying after the parameters
//!   change, and [`needs_rehash`] tells the caller to upgrade them after a good login.
//! - Verification never panics on a corrupt stored hash: it simply fails.
//! - Unknown users must cost the same time as known ones, otherwise response time is an
//!   oracle for which accounts exist: [`dummy_verify`] burns one argon2 computation.
//! - The policy reports every rule as met or unmet (not just the first failure) so that a
//!   UI can show a checklist; lengths are counted as a person sees them (characters) for
//!   the minimum and as storage sees them (bytes) for the maximum.

use std::path::PathBuf;
use std::sync::{Condvar, Mutex, OnceLock};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Argon2, Block, Params, Version};

/// The hashing slots of one [`crate::Core`] (or one authctl run): at most `slots` argon2
/// computations at once, each with working memory reused from a pool of as many buffers.
///
/// Working memory (19 MiB at the default parameters) is reused across hashes instead of
/// being allocated and freed each time: the allocator would otherwise keep the freed
/// buffers and a login flood would grow the process well past what the bounded number of
/// concurrent hashes needs. The slot is the only bound on concurrent hashes that matters
/// for CPU and memory: a thread that waits for one holds neither, and starts the moment a
/// slot frees, so the cores never idle between one login's hash and the next one's while
/// the first finishes its database work.
pub struct Hashing {
    slots: usize,
    /// Hashes running now; waiters sleep on `turn`.
    running: Mutex<usize>,
    turn: Condvar,
    pool: Mutex<Vec<Vec<Block>>>,
    /// The dummy hash of [`Hashing::dummy_verify`], made once with the parameters of its
    /// first use.
    dummy: OnceLock<(Argon2Params, Option<String>)>,
    /// The most hashes seen running at once (for the tests).
    #[cfg(test)]
    peak: std::sync::atomic::AtomicUsize,
}

impl Hashing {
    /// `slots` hashes at once (at least one).
    pub fn new(slots: usize) -> Hashing {
        Hashing {
            slots: slots.max(1),
            running: Mutex::new(0),
            turn: Condvar::new(),
            pool: Mutex::new(Vec::new()),
            dummy: OnceLock::new(),
            #[cfg(test)]
            peak: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The most hashes seen running at once (0: this instance never hashed).
    #[cfg(test)]
    pub(crate) fn peak(&self) -> usize {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One slot per core.
    pub fn per_core() -> Hashing {
        Hashing::new(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        )
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Run `f` in a hashing slot with at least `blocks` argon2 memory blocks from the
    /// pool.
    fn with_memory<R>(&self, blocks: usize, f: impl FnOnce(&mut [Block]) -> R) -> R {
        let _slot = self.take_slot();
        let mut buf = self
            .pool
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_default();
        if buf.len() != blocks {
            buf = vec![Block::default(); blocks];
        }
        let r = f(&mut buf);
        if let Ok(mut p) = self.pool.lock() {
            if p.len() < self.slots {
                p.push(buf);
            }
        }
        r
    }

    fn take_slot(&self) -> Slot<'_> {
        let mut n = self.running.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= self.slots {
            n = self.turn.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        #[cfg(test)]
        self.peak
            .fetch_max(*n, std::sync::atomic::Ordering::Relaxed);
        Slot(self)
    }

    /// argon2 with pooled memory: the raw output for `salt`, written into `out`.
    fn compute(
        &self,
        a: &Argon2,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), argon2::Error> {
        self.with_memory(a.params().block_count(), |m| {
            a.hash_password_into_with_memory(password, salt, out, m)
        })
    }
}

/// One of a [`Hashing`]'s slots, held for one computation.
struct Slot<'h>(&'h Hashing);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut n = self.0.running.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        self.0.turn.notify_one();
    }
}

/// Length of the random salt in bytes.
const SALT_LEN: usize = 16;

/// argon2id cost parameters: memory in KiB, iterations, lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Argon2Params {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl Default for Argon2Params {
    /// OWASP Password Storage Cheat Sheet: m=19456 KiB (19 MiB), t=2, p=1.
    fn default() -> Self {
        Argon2Params {
            m_kib: 19456,
            t: 2,
            p: 1,
        }
    }
}

fn hasher(params: Argon2Params) -> Result<Argon2<'static>, String> {
    let params = Params::new(params.m_kib, params.t, params.p, None)
        .map_err(|e| format!("invalid argon2 parameters: {e}"))?;
    Ok(Argon2::new(
        argon2::Algorithm::Argon2id,
        Version::V0x13,
        params,
    ))
}

/// argon2id PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`) with a random
/// 16-byte salt from the OS CSPRNG. `Err` on invalid parameters (e.g. `m_kib < 8 * p`,
/// `t == 0`) or if the OS random source fails.
pub fn hash_password(h: &Hashing, password: &str, params: Argon2Params) -> Result<String, String> {
    let argon2 = hasher(params)?;
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|e| format!("OS random source failed: {e}"))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    h.compute(&argon2, password.as_bytes(), &salt, &mut out)
        .map_err(|e| format!("argon2: {e}"))?;
    let output = Output::new(&out).map_err(|e| format!("argon2: {e}"))?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params()).map_err(|e| format!("argon2: {e}"))?,
        salt: Some(Salt::new(&salt).map_err(|e| format!("salt: {e}"))?),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Verify `password` against a PHC string. A bad or unparseable PHC string, or one of
/// another algorithm family, is simply `false` (never panics). argon2 (i, d or id) hashes
/// verify with the parameters recorded in the string; constant-time comparison of the
/// output is argon2's job.
pub fn verify_password(h: &Hashing, password: &str, phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(hash.algorithm.as_str()) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    // The PHC salt is base64 in the string; argon2 takes its decoded bytes.
    let argon2 = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    h.compute(&argon2, password.as_bytes(), &salt, &mut out)
        .is_ok()
        && crate::crypto::ct_eq(&out, expected.as_bytes())
}

/// `true` when the PHC string is not argon2id v19 with exactly `params` and the default
/// 32-byte output (so the caller rehashes after a successful login). An unparseable
/// string also answers `true`.
pub fn needs_rehash(phc: &str, params: Argon2Params) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return true;
    };
    if hash.algorithm != argon2::ARGON2ID_IDENT || hash.version != Some(Version::V0x13.into()) {
        return true;
    }
    if hash.hash.map(|h| h.len()) != Some(Params::DEFAULT_OUTPUT_LEN) {
        return true;
    }
    match Params::try_from(&hash) {
        Ok(stored) => {
            stored.m_cost() != params.m_kib
                || stored.t_cost() != params.t
                || stored.p_cost() != params.p
        }
        Err(_) => true,
    }
}

/// The password behind the dummy hash. Its value does not matter: [`dummy_verify`]
/// returns `false` whatever the outcome.
const DUMMY_PASSWORD: &str = "authd dummy password for unknown users";

/// Spend the same time as a real verification for users that do not exist: verify
/// `password` against a fixed dummy hash made once (per [`Hashing`]) with `params`.
/// Always returns `false`.
///
/// The first call also pays for creating the dummy hash; call it once at start-up to warm
/// it. If later called with different `params` than the dummy hash was made with, it
/// hashes `password` with `params` instead, which costs the same as one verification.
pub fn dummy_verify(h: &Hashing, password: &str, params: Argon2Params) -> bool {
    let (made_with, phc) = h
        .dummy
        .get_or_init(|| (params, hash_password(h, DUMMY_PASSWORD, params).ok()));
    match phc {
        Some(phc) if *made_with == params => {
            let _ = verify_password(h, password, phc);
        }
        _ => {
            let _ = hash_password(h, password, params);
        }
    }
    false
}

/// What a new password must satisfy. Lengths: `min_length` in characters (Unicode scalar
/// values), `max_length` in bytes (UTF-8).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PasswordPolicy {
    pub min_length: usize,
    pub max_length: usize,
    pub require_lower: bool,
    pub require_upper: bool,
    pub require_digit: bool,
    pub require_special: bool,
    /// The lowest zxcvbn strength score (0–4) accepted; 0 checks nothing.
    #[serde(default)]
    pub min_score: u8,
    /// A sorted list of breached or common passwords ([`crate::breached`]); None: none.
    #[serde(default)]
    pub breached: Option<PathBuf>,
}

impl Default for PasswordPolicy {
    /// At least 8 characters, at most 1024 bytes, one of each character class; no
    /// strength score, no list (the seed's rules).
    fn default() -> Self {
        PasswordPolicy {
            min_length: 8,
            max_length: 1024,
            require_lower: true,
            require_upper: true,
            require_digit: true,
            require_special: true,
            min_score: 0,
            breached: None,
        }
    }
}

/// zxcvbn reads at most this many characters: its cost grows with the length, and a
/// longer password is not made weak by what follows.
const SCORED_CHARS: usize = 100;

/// One rule of the policy, as shown to a user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rule {
    pub id: &'static str,
    pub description: String,
}

/// One rule and whether a given password meets it. Defined beside the error that carries
/// it ([`Error::Policy`](crate::error::Error::Policy)), so that `error` imports nothing.
pub use crate::error::RuleResult;

/// Printable, not a letter or digit: punctuation, symbols, spaces. Control characters
/// never count.
fn is_special(c: char) -> bool {
    !c.is_alphanumeric() && !c.is_control()
}

impl PasswordPolicy {
    /// The rules in display order: "lowercase", "uppercase", "digit", "special" (each only
    /// when required), then "min_length", "max_length" and "no_control" (always present).
    pub fn rules(&self) -> Vec<Rule> {
        let mut rules = Vec::with_capacity(7);
        let mut push = |id: &'static str, description: String| rules.push(Rule { id, description });
        if self.require_lower {
            push("lowercase", "One lower-case character".to_string());
        }
        if self.require_upper {
            push("uppercase", "One upper-case character".to_string());
        }
        if self.require_digit {
            push("digit", "One number".to_string());
        }
        if self.require_special {
            push("special", "One special character".to_string());
        }
        let plural = if self.min_length == 1 { "" } else { "s" };
        push(
            "min_length",
            format!("{} character{plural} minimum", self.min_length),
        );
        let plural = if self.max_length == 1 { "" } else { "s" };
        push(
            "max_length",
            format!("At most {} byte{plural}", self.max_length),
        );
        push("no_control", "No control characters".to_string());
        if self.min_score > 0 || self.breached.is_some() {
            push(
                "not_common",
                "Not a commonly used or breached password".to_string(),
            );
        }
        rules
    }

    /// Whether `password` passes the strength score and is not on the breached list.
    /// `user_inputs` (the username, the email address…) count as known words. A list
    /// that cannot be read fails the rule (and says why in the log): a check that could
    /// not run does not pass.
    fn not_common(&self, password: &str, user_inputs: &[&str]) -> bool {
        if self.min_score > 0 {
            let scored: String = password.chars().take(SCORED_CHARS).collect();
            if u8::from(zxcvbn::zxcvbn(&scored, user_inputs).score()) < self.min_score {
                return false;
            }
        }
        match &self.breached {
            None => true,
            Some(path) => match crate::breached::open(path)
                .map_err(|e| e.to_string())
                .and_then(|l| {
                    l.contains(password)
                        .map_err(|e| format!("{}: {e}", path.display()))
                }) {
                Ok(listed) => !listed,
                Err(e) => {
                    tracing::error!(error = %e, "the breached-password list cannot be read; refusing new passwords until it can");
                    false
                }
            },
        }
    }

    /// Each rule of [`rules`](Self::rules) with met/unmet, in the same order.
    ///
    /// - lowercase / uppercase: any `char::is_lowercase` / `char::is_uppercase` (Unicode).
    /// - digit: any `char::is_numeric` (Unicode).
    /// - special: any character that is neither alphanumeric nor a control character
    ///   (punctuation, symbols and spaces, including a plain space, count).
    /// - min_length: at least `min_length` characters (Unicode scalar values).
    /// - max_length: at most `max_length` bytes of UTF-8.
    /// - no_control: no control character at all (NUL, tab, newline, DEL, C1 controls…).
    /// - not_common (only with `min_score` > 0 or a breached list): a zxcvbn score of at
    ///   least `min_score` and not on the list.
    pub fn check(&self, password: &str) -> Vec<RuleResult> {
        self.check_for(password, &[])
    }

    /// [`check`](Self::check), with what zxcvbn should treat as known words of this user
    /// (their username and email address).
    pub fn check_for(&self, password: &str, user_inputs: &[&str]) -> Vec<RuleResult> {
        self.rules()
            .into_iter()
            .map(|rule| {
                let met = match rule.id {
                    "lowercase" => password.chars().any(char::is_lowercase),
                    "uppercase" => password.chars().any(char::is_uppercase),
                    "digit" => password.chars().any(char::is_numeric),
                    "special" => password.chars().any(is_special),
                    "min_length" => password.chars().count() >= self.min_length,
                    "max_length" => password.len() <= self.max_length,
                    "no_control" => !password.chars().any(char::is_control),
                    "not_common" => self.not_common(password, user_inputs),
                    _ => false,
                };
                RuleResult {
                    id: rule.id,
                    description: rule.description,
                    met,
                }
            })
            .collect()
    }

    /// `true` when every rule is met.
    pub fn is_ok(results: &[RuleResult]) -> bool {
        results.iter().all(|r| r.met)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hashing slots of this module's tests.
    static H: std::sync::LazyLock<Hashing> = std::sync::LazyLock::new(Hashing::per_core);

    const FAST: Argon2Params = Argon2Params {
        m_kib: 1024,
        t: 1,
        p: 1,
    };

    #[test]
    fn default_params_are_owasp() {
        assert_eq!(
            Argon2Params::default(),
            Argon2Params {
                m_kib: 19456,
                t: 2,
                p: 1
            }
        );
    }

    #[test]
    fn hash_and_verify_round_trip() {
        let phc = hash_password(&H, "correct horse", FAST).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{phc}");
        assert!(verify_password(&H, "correct horse", &phc));
        assert!(!verify_password(&H, "correct horsf", &phc));
        assert!(!verify_password(&H, "", &phc));
        // Fresh salt every time.
        assert_ne!(phc, hash_password(&H, "correct horse", FAST).unwrap());
    }

    #[test]
    fn pooled_hashes_match_the_reference_implementation() {
        // The pooled path must produce exactly what argon2's own PasswordHasher does.
        let params = Argon2Params {
            m_kib: 1024,
            t: 2,
            p: 2,
        };
        let a = hasher(params).unwrap();
        let reference: PasswordHash =
            argon2::PasswordHasher::hash_password_with_salt(&a, b"Correct-Horse-9", &[9u8; 16])
                .unwrap();
        let reference = reference.to_string();
        assert!(verify_password(&H, "Correct-Horse-9", &reference));
        assert!(!verify_password(&H, "Correct-Horse-8", &reference));
        let ours = hash_password(&H, "Correct-Horse-9", params).unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        let again = argon2::PasswordVerifier::verify_password(&a, b"Correct-Horse-9", &parsed);
        assert!(
            again.is_ok(),
            "argon2 itself accepts our PHC string: {ours}"
        );
        // Many hashes in a row reuse the pooled memory.
        for _ in 0..5 {
            assert!(verify_password(&H, "Correct-Horse-9", &ours));
        }
        assert!(H.pool.lock().unwrap().len() <= H.slots());
    }

    #[test]
    fn hashes_made_by_earlier_versions_still_verify() {
        // PHC strings written by this module when it was built on argon2 0.5 (an older
        // release of the crate): they must verify, and need no rehash at their parameters.
        let old = [
            (
                "Correct-Horse-9!x",
                "$argon2id$v=19$m=1024,t=1,p=1$um/xDp8MKRbRGx1kdjOnZw$EFwohHNq8XmjRUXcFep4A/CTO9jGghPtRBeDZiZT5q8",
                FAST,
            ),
            (
                "An0ther-Pass!word",
                "$argon2id$v=19$m=2048,t=3,p=2$lTm+UnQFBkZyVh4sSxRogw$oQJIpWrvcBWa5giFn+XjHeEPVcjv+uZb8bbWJQ0hqQM",
                Argon2Params {
                    m_kib: 2048,
                    t: 3,
                    p: 2,
                },
            ),
        ];
        for (password, phc, params) in old {
            assert!(verify_password(&H, password, phc), "{phc}");
            assert!(!verify_password(&H, "Correct-Horse-9!y", phc), "{phc}");
            assert!(!needs_rehash(phc, params), "{phc}");
            assert!(needs_rehash(phc, Argon2Params::default()), "{phc}");
        }
    }

    #[test]
    fn no_more_hashes_run_at_once_than_there_are_slots() {
        let params = Argon2Params {
            m_kib: 2048,
            t: 1,
            p: 1,
        };
        // A core of two slots, its own: two Hashings share nothing.
        let h = std::sync::Arc::new(Hashing::new(2));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for _ in 0..3 {
                        hash_password(&h, &format!("pw-{i}"), params).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let peak = h.peak.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            (1..=2).contains(&peak),
            "{peak} hashes at once with two slots"
        );
        assert!(H.peak.load(std::sync::atomic::Ordering::Relaxed) <= H.slots());
    }

    #[test]
    fn hash_and_verify_with_defaults() {
        let phc = hash_password(&H, "Passw0rd!", Argon2Params::default()).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password(&H, "Passw0rd!", &phc));
        assert!(!verify_password(&H, "passw0rd!", &phc));
        assert!(!needs_rehash(&phc, Argon2Params::default()));
    }

    #[test]
    fn invalid_params_are_errors() {
        for bad in [
            Argon2Params {
                m_kib: 4,
                t: 1,
                p: 1,
            },
            Argon2Params {
                m_kib: 1024,
                t: 0,
                p: 1,
            },
            Argon2Params {
                m_kib: 1024,
                t: 1,
                p: 0,
            },
        ] {
            assert!(hash_password(&H, "x", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn garbage_phc_is_false() {
        for phc in [
            "",
            "garbage",
            "$argon2id$",
            "$argon2id$v=19$m=1024,t=1,p=1$c2FsdA$",
            "$argon2id$v=19$m=1024,t=1,p=1$!!!$!!!",
            "$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            "$argon2id$v=19$m=0,t=0,p=0$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA",
        ] {
            assert!(!verify_password(&H, "x", phc), "{phc:?}");
            assert!(needs_rehash(phc, FAST), "{phc:?}");
        }
    }

    #[test]
    fn needs_rehash_table() {
        let phc = hash_password(&H, "pw", FAST).unwrap();
        assert!(!needs_rehash(&phc, FAST));
        for other in [
            Argon2Params {
                m_kib: 2048,
                ..FAST
            },
            Argon2Params { t: 2, ..FAST },
            Argon2Params { p: 2, ..FAST },
            Argon2Params::default(),
        ] {
            assert!(needs_rehash(&phc, other), "{other:?}");
        }
        // Same params, but argon2i instead of argon2id.
        let argon2i = Argon2::new(
            argon2::Algorithm::Argon2i,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        );
        let phc_i: PasswordHash =
            argon2::PasswordHasher::hash_password_with_salt(&argon2i, b"pw", &[7u8; 16]).unwrap();
        let phc_i = phc_i.to_string();
        assert!(phc_i.starts_with("$argon2i$"));
        assert!(verify_password(&H, "pw", &phc_i));
        assert!(needs_rehash(&phc_i, FAST));
    }

    #[test]
    fn dummy_verify_is_false() {
        assert!(!dummy_verify(&H, "anything", FAST));
        assert!(!dummy_verify(&H, DUMMY_PASSWORD, FAST));
        // Different params after the dummy was made: still false.
        assert!(!dummy_verify(
            &H,
            DUMMY_PASSWORD,
            Argon2Params { t: 2, ..FAST }
        ));
    }

    fn unmet(policy: &PasswordPolicy, password: &str) -> Vec<&'static str> {
        policy
            .check(password)
            .into_iter()
            .filter(|r| !r.met)
            .map(|r| r.id)
            .collect()
    }

    #[test]
    fn policy_table() {
        let policy = PasswordPolicy::default();
        let long = format!("Aa1!{}", "x".repeat(1021)); // 1025 bytes
        let exactly_max = format!("Aa1!{}", "x".repeat(1020)); // 1024 bytes
        let table: Vec<(&str, Vec<&str>)> = vec![
            ("password", vec!["uppercase", "digit", "special"]),
            ("Passw0rd!", vec![]),
            ("Pässwörd1!", vec![]),
            ("Pa0rd!x", vec!["min_length"]),
            ("Pass word1", vec![]), // a space is special
            ("PASSWORD1!", vec!["lowercase"]),
            ("Passw0rd!\0", vec!["no_control"]),
            ("Passw0rd!\n", vec!["no_control"]),
            ("Passw0rd\t1", vec!["special", "no_control"]),
            (
                "",
                vec!["lowercase", "uppercase", "digit", "special", "min_length"],
            ),
            (&long, vec!["max_length"]),
            (&exactly_max, vec![]),
            // 8 characters but 16 bytes: the minimum counts characters.
            ("Ää1!ßßßß", vec![]),
        ];
        for (password, want) in table {
            assert_eq!(unmet(&policy, password), want, "{password:?}");
            assert_eq!(
                PasswordPolicy::is_ok(&policy.check(password)),
                want.is_empty(),
                "{password:?}"
            );
        }
    }

    #[test]
    fn disabled_requirements_are_not_checked() {
        let policy = PasswordPolicy {
            min_length: 4,
            max_length: 16,
            require_lower: false,
            require_upper: false,
            require_digit: false,
            require_special: false,
            ..PasswordPolicy::default()
        };
        assert!(PasswordPolicy::is_ok(&policy.check("abcd")));
        assert_eq!(unmet(&policy, "abc"), vec!["min_length"]);
        assert_eq!(unmet(&policy, "abc\u{7}"), vec!["no_control"]);
        let ids: Vec<_> = policy.rules().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, vec!["min_length", "max_length", "no_control"]);
    }

    /// The breached/common rule: zxcvbn's score and an on-disk list, each alone; shown
    /// only when one of them is on; a list that cannot be read fails the rule.
    #[test]
    fn common_and_breached_passwords_are_refused() {
        use sha1::{Digest, Sha1};
        let loose = PasswordPolicy {
            min_length: 1,
            require_lower: false,
            require_upper: false,
            require_digit: false,
            require_special: false,
            ..PasswordPolicy::default()
        };
        assert!(!loose.rules().iter().any(|r| r.id == "not_common"));
        assert!(PasswordPolicy::is_ok(&loose.check("password1")));

        let scored = PasswordPolicy {
            min_score: 3,
            ..loose.clone()
        };
        let rule = scored.rules().into_iter().last().unwrap();
        assert_eq!(
            (rule.id, rule.description.as_str()),
            ("not_common", "Not a commonly used or breached password")
        );
        for weak in [
            "password1",
            "qwerty123",
            "letmein",
            "Passw0rd!",
            "alice2024",
        ] {
            assert_eq!(unmet(&scored, weak), vec!["not_common"], "{weak:?}");
        }
        for strong in ["correct horse battery staple orbit", "vq7#Lm!x9Pz@e2Rw"] {
            assert!(unmet(&scored, strong).is_empty(), "{strong:?}");
        }
        // The user's own name counts as a known word.
        let p = "mallory.rutherford";
        assert!(unmet(&scored, p).is_empty());
        assert_eq!(
            scored
                .check_for(p, &["mallory.rutherford"])
                .iter()
                .filter(|r| !r.met)
                .map(|r| r.id)
                .collect::<Vec<_>>(),
            vec!["not_common"]
        );
        // Very long input is scored on its first characters only (and stays fast).
        let long = "ab".repeat(500);
        assert_eq!(unmet(&scored, &long), vec!["not_common"]);

        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("pwned.txt");
        let mut lines: Vec<String> = ["Tr0ub4dor&3", "hunter2", "correct horse battery staple"]
            .iter()
            .map(|p| {
                let h = Sha1::digest(p.as_bytes());
                let hex: String = h.iter().map(|b| format!("{b:02X}")).collect();
                format!("{hex}:12")
            })
            .collect();
        lines.sort();
        std::fs::write(&list, lines.join("\r\n") + "\r\n").unwrap();
        let listed = PasswordPolicy {
            breached: Some(list.clone()),
            ..loose.clone()
        };
        assert_eq!(unmet(&listed, "Tr0ub4dor&3"), vec!["not_common"]);
        assert_eq!(
            unmet(&listed, "correct horse battery staple"),
            vec!["not_common"]
        );
        assert!(unmet(&listed, "Tr0ub4dor&4").is_empty());
        std::fs::remove_file(&list).unwrap();
        assert_eq!(
            unmet(&listed, "Tr0ub4dor&4"),
            vec!["not_common"],
            "no list, no pass"
        );
    }

    #[test]
    fn rules_order_and_descriptions() {
        let rules: Vec<(&str, String)> = PasswordPolicy::default()
            .rules()
            .into_iter()
            .map(|r| (r.id, r.description))
            .collect();
        let want = [
            ("lowercase", "One lower-case character"),
            ("uppercase", "One upper-case character"),
            ("digit", "One number"),
            ("special", "One special character"),
            ("min_length", "8 characters minimum"),
            ("max_length", "At most 1024 bytes"),
            ("no_control", "No control characters"),
        ];
        let want: Vec<(&str, String)> = want.iter().map(|(i, d)| (*i, d.to_string())).collect();
        assert_eq!(rules, want);
        let custom = PasswordPolicy {
            min_length: 12,
            max_length: 64,
            ..PasswordPolicy::default()
        };
        let descriptions: Vec<String> = custom.rules().into_iter().map(|r| r.description).collect();
        assert!(descriptions.contains(&"12 characters minimum".to_string()));
        assert!(descriptions.contains(&"At most 64 bytes".to_string()));
    }

    #[test]
    fn check_follows_rules_order() {
        let policy = PasswordPolicy::default();
        let rule_ids: Vec<_> = policy.rules().into_iter().map(|r| r.id).collect();
        let check_ids: Vec<_> = policy.check("x").into_iter().map(|r| r.id).collect();
        assert_eq!(rule_ids, check_ids);
    }
}
