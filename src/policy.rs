//! The policy store: every tunable rule, its default, its validation, and where it lives.
//!
//! Settings are rows of the `policy` table (`key`, `value` as text). A missing row means
//! the default from [`KEYS`]. Values are validated on the way in (`authctl policy set`)
//! and parsed once per decision with [`Policy::load`], so a request always sees one
//! consistent set.

use crate::sql::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::lockout;
use crate::password::{Argon2Params, PasswordPolicy};

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Int {
        min: i64,
        max: i64,
    },
    Bool,
    Choice(&'static [&'static str]),
    Text {
        max: usize,
    },
    /// An absolute path to a sorted password list ([`crate::breached`]), checked when
    /// set; empty for none.
    PasswordList,
}

#[derive(Debug, Clone, Copy)]
pub struct KeyDef {
    pub key: &'static str,
    pub default: &'static str,
    pub kind: Kind,
    pub description: &'static str,
}

const fn int(min: i64, max: i64) -> Kind {
    Kind::Int { min, max }
}

/// Every policy key, its default and what it means.
pub const KEYS: &[KeyDef] = &[
    KeyDef {
        key: "lockout.max_failures",
        default: "9",
        kind: int(0, 1000),
        description: "consecutive failures (any factor) that lock an account (smart mode: lock out unfamiliar sources); 0 never locks",
    },
    KeyDef {
        key: "lockout.mode",
        default: "smart",
        kind: Kind::Choice(&["smart", "account", "timed"]),
        description: "smart: failures from unfamiliar sources lock out only unfamiliar sources; account: the account is locked for everyone until an admin unlocks it; timed: as account, lifting after lockout.duration_minutes (doubling within a day)",
    },
    KeyDef {
        key: "lockout.familiar_days",
        default: "30",
        kind: int(1, 3650),
        description: "smart mode: a network the user completed a sign-in from within this many days is familiar",
    },
    KeyDef {
        key: "lockout.duration_minutes",
        default: "15",
        kind: int(1, 525_600),
        description: "timed mode: how long a lock lasts, doubled for each further lock within a day",
    },
    KeyDef {
        key: "password.min_length",
        default: "8",
        kind: int(1, 1024),
        description: "minimum password length in characters (of a password that is the account's only factor, when password.min_length_with_second_factor is set)",
    },
    KeyDef {
        key: "password.min_length_with_second_factor",
        default: "0",
        kind: int(0, 1024),
        description: "minimum length in characters of the password of an account with a second factor (enrolled, or required before any session); 0: password.min_length for every account",
    },
    KeyDef {
        key: "password.max_length",
        default: "1024",
        kind: int(8, 4096),
        description: "maximum password length in bytes",
    },
    KeyDef {
        key: "password.require_lower",
        default: "true",
        kind: Kind::Bool,
        description: "require a lower-case character",
    },
    KeyDef {
        key: "password.require_upper",
        default: "true",
        kind: Kind::Bool,
        description: "require an upper-case character",
    },
    KeyDef {
        key: "password.require_digit",
        default: "true",
        kind: Kind::Bool,
        description: "require a number",
    },
    KeyDef {
        key: "password.require_special",
        default: "true",
        kind: Kind::Bool,
        description: "require a special character",
    },
    KeyDef {
        key: "password.min_score",
        default: "0",
        kind: int(0, 4),
        description: "lowest zxcvbn strength score (0-4) a new password needs; 0 checks nothing",
    },
    KeyDef {
        key: "password.breached_passwords",
        default: "",
        kind: Kind::PasswordList,
        description: "absolute path of a sorted breached/common password list (Pwned Passwords SHA1HEX:COUNT or one password per line), searched on disk; empty for none",
    },
    KeyDef {
        key: "password.max_age_days",
        default: "0",
        kind: int(0, 36500),
        description: "days before a password expires; 0 never expires",
    },
    KeyDef {
        key: "password.recovery",
        default: "questions",
        kind: Kind::Choice(&["questions", "link"]),
        description: "how a forgotten password is reset: questions (the user's security questions) or link (a one-time link mailed to the user's address, valid 30 minutes)",
    },
    KeyDef {
        key: "argon2.m_kib",
        default: "19456",
        kind: int(8, 4_194_304),
        description: "argon2id memory cost in KiB (hashes upgrade at next login)",
    },
    KeyDef {
        key: "argon2.t",
        default: "2",
        kind: int(1, 100),
        description: "argon2id iterations",
    },
    KeyDef {
        key: "argon2.p",
        default: "1",
        kind: int(1, 64),
        description: "argon2id parallelism",
    },
    KeyDef {
        key: "mfa.required",
        default: "groups",
        kind: Kind::Choice(&["none", "groups", "all"]),
        description:
            "who must use a second factor: members of require-2fa groups, everyone, or no one",
    },
    KeyDef {
        key: "mfa.passkey_required",
        default: "none",
        kind: Kind::Choice(&["none", "groups", "admins", "all"]),
        description: "who must sign in with a passkey as second factor (TOTP and emailed codes refused): members of require-passkey groups, org-admin and admin accounts, everyone, or no one",
    },
    KeyDef {
        key: "mfa.admins_required",
        default: "true",
        kind: Kind::Bool,
        description: "org-admin and admin accounts must use a second factor",
    },
    KeyDef {
        key: "mfa.email_enrolment",
        default: "true",
        kind: Kind::Bool,
        description: "new second-factor enrolments may choose emailed codes (authctl enroll --method email); users already enrolled, and organisations' email default, keep them",
    },
    KeyDef {
        key: "totp.skew",
        default: "1",
        kind: int(0, 10),
        description: "TOTP steps accepted either side of now",
    },
    KeyDef {
        key: "totp.issuer",
        default: "authd",
        kind: Kind::Text { max: 64 },
        description: "issuer name shown in authenticator apps",
    },
    KeyDef {
        key: "recovery.count",
        default: "10",
        kind: int(1, 100),
        description: "recovery codes issued at enrolment",
    },
    KeyDef {
        key: "remember_device.days",
        default: "30",
        kind: int(0, 3650),
        description: "days a remembered device skips the second factor; 0 disables",
    },
    KeyDef {
        key: "terms.mode",
        default: "every_login",
        kind: Kind::Choice(&["every_login", "once_per_version"]),
        description: "when users accept the current terms (if any are set)",
    },
    KeyDef {
        key: "session.idle_minutes",
        default: "30",
        kind: int(1, 525_600),
        description: "a session ends after this long unused",
    },
    KeyDef {
        key: "session.absolute_hours",
        default: "12",
        kind: int(1, 8760),
        description: "a session ends this long after login, used or not",
    },
    KeyDef {
        key: "flow.ttl_seconds",
        default: "300",
        kind: int(30, 3600),
        description: "lifetime of a login flow token",
    },
    KeyDef {
        key: "email_otp.ttl_minutes",
        default: "10",
        kind: int(1, 60),
        description: "lifetime of an emailed code",
    },
    KeyDef {
        key: "email_otp.max_tries",
        default: "5",
        kind: int(1, 20),
        description: "wrong tries allowed per emailed code",
    },
    KeyDef {
        key: "email_otp.resend_seconds",
        default: "30",
        kind: int(0, 3600),
        description: "minimum wait between two emailed codes",
    },
    KeyDef {
        key: "audit.retention_days",
        default: "0",
        kind: int(0, 36500),
        description: "days of audit log authd keeps: older rows are pruned daily, the chain kept verifiable; 0 keeps everything",
    },
];

/// A named set of settings (`authctl policy preset NAME`): each setting with the rule or
/// clause it comes from. A preset sets only the keys it names.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Preset {
    pub name: &'static str,
    pub about: &'static str,
    pub settings: &'static [PresetSetting],
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct PresetSetting {
    pub key: &'static str,
    pub value: &'static str,
    pub why: &'static str,
}

const fn ps(key: &'static str, value: &'static str, why: &'static str) -> PresetSetting {
    PresetSetting { key, value, why }
}

/// The presets, in the order `policy preset --help` lists them.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "seed",
        about: "the rules authd was first built to: character classes, 8 or more, 9 failures lock the account until an admin unlocks it",
        settings: &[
            ps("lockout.mode", "account", "seed 004: 9 attempts, then the account is locked"),
            ps("lockout.max_failures", "9", "seed 004: 9 total login attempts"),
            ps("password.min_length", "8", "seed 004: 8 characters minimum"),
            ps("password.min_length_with_second_factor", "0", "seed 004: the same 8 for every account"),
            ps("password.require_lower", "true", "seed 004: a lowercase letter"),
            ps("password.require_upper", "true", "seed 004: an uppercase letter"),
            ps("password.require_digit", "true", "seed 004: a number"),
            ps("password.require_special", "true", "seed 004: a special character"),
            ps("password.min_score", "0", "seed: no strength estimate"),
            ps("password.recovery", "questions", "seed 004: forgotten passwords through security questions"),
            ps("mfa.email_enrolment", "true", "seed 004: a 6-digit code by email"),
        ],
    },
    Preset {
        name: "nist-800-63b",
        about: "NIST SP 800-63B-4: long passwords without composition rules or expiry, checked against common and breached passwords; smart lockout",
        settings: &[
            ps("lockout.mode", "smart", "3.2.2: limit failed attempts without letting an attacker lock the subscriber out"),
            ps("lockout.max_failures", "9", "3.2.2: no more than 100 consecutive failed attempts"),
            ps("password.min_length", "15", "3.1.1.2: at least 15 characters when the password is the only factor"),
            ps("password.min_length_with_second_factor", "8", "3.1.1.2: at least 8 characters when the password is used with a second factor"),
            ps("password.max_length", "1024", "3.1.1.2: at least 64 characters allowed"),
            ps("password.require_lower", "false", "3.1.1.2: no composition rules"),
            ps("password.require_upper", "false", "3.1.1.2: no composition rules"),
            ps("password.require_digit", "false", "3.1.1.2: no composition rules"),
            ps("password.require_special", "false", "3.1.1.2: no composition rules"),
            ps("password.max_age_days", "0", "3.1.1.2: no periodic changes"),
            ps("password.min_score", "3", "3.1.1.2: refuse commonly used and expected values"),
            ps("password.recovery", "link", "3.1.1.2: no knowledge-based prompts (security questions); recover through an emailed one-time link"),
            ps("mfa.email_enrolment", "false", "800-63B-4 3.1.3: email is not an accepted out-of-band authenticator for new enrolments"),
        ],
    },
];

/// The preset called `name`.
pub fn preset(name: &str) -> Result<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
        Error::Invalid(format!(
            "no preset '{name}'; the presets are {}",
            PRESETS
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MfaRequired {
    None,
    Groups,
    All,
}

/// How a forgotten password is reset (`password.recovery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Recovery {
    /// The user's security questions ([`crate::forgot`]).
    Questions,
    /// A one-time link mailed to the user ([`crate::reset_link`]).
    Link,
}

/// Who must use a passkey (a phishing-resistant factor) as their second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PasskeyRequired {
    None,
    Groups,
    Admins,
    All,
}

impl PasskeyRequired {
    /// The rule of a stored `mfa.passkey_required` (validated on the way in).
    fn parse(v: &str) -> PasskeyRequired {
        match v {
            "groups" => PasskeyRequired::Groups,
            "admins" => PasskeyRequired::Admins,
            "all" => PasskeyRequired::All,
            _ => PasskeyRequired::None,
        }
    }

    /// The rule in force, for a caller that has no [`Policy`] loaded.
    pub fn read(conn: &Connection) -> Result<PasskeyRequired> {
        Ok(PasskeyRequired::parse(&get(conn, "mfa.passkey_required")?))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TermsMode {
    EveryLogin,
    OncePerVersion,
}

/// Every setting, parsed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    pub lockout_max_failures: i64,
    pub lockout_mode: lockout::Mode,
    pub lockout_familiar_days: i64,
    pub lockout_duration_minutes: i64,
    pub password: PasswordPolicy,
    /// `password.min_length_with_second_factor` (0: none); see [`Policy::password_for`].
    pub password_min_length_second_factor: usize,
    pub password_max_age_days: i64,
    pub password_recovery: Recovery,
    pub argon2: Argon2Params,
    pub mfa_required: MfaRequired,
    pub mfa_admins_required: bool,
    pub mfa_passkey_required: PasskeyRequired,
    pub mfa_email_enrolment: bool,
    pub totp_skew: i64,
    pub totp_issuer: String,
    pub recovery_count: usize,
    pub remember_device_days: i64,
    pub terms_mode: TermsMode,
    pub session_idle_minutes: i64,
    pub session_absolute_hours: i64,
    pub flow_ttl_seconds: i64,
    pub email_otp_ttl_minutes: i64,
    pub email_otp_max_tries: i64,
    pub email_otp_resend_seconds: i64,
    pub audit_retention_days: i64,
}

fn def(key: &str) -> Result<&'static KeyDef> {
    KEYS.iter().find(|k| k.key == key).ok_or_else(|| {
        Error::Invalid(format!(
            "unknown policy key '{key}'; `authctl policy show` lists them"
        ))
    })
}

/// Check and canonicalise a value for `key`.
pub fn validate(key: &str, value: &str) -> Result<String> {
    let d = def(key)?;
    let v = value.trim();
    match d.kind {
        Kind::Int { min, max } => match v.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n.to_string()),
            _ => Err(Error::Invalid(format!(
                "{key} takes a whole number from {min} to {max}, not '{v}'"
            ))),
        },
        Kind::Bool => match v.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok("true".into()),
            "false" | "no" | "off" | "0" => Ok("false".into()),
            _ => Err(Error::Invalid(format!(
                "{key} takes true or false, not '{v}'"
            ))),
        },
        Kind::Choice(choices) => {
            if choices.contains(&v) {
                Ok(v.to_string())
            } else {
                Err(Error::Invalid(format!(
                    "{key} takes one of {}, not '{v}'",
                    choices.join(", ")
                )))
            }
        }
        Kind::PasswordList => {
            if v.is_empty() {
                return Ok(String::new());
            }
            let path = std::path::Path::new(v);
            if !path.is_absolute() || v.chars().any(char::is_control) {
                return Err(Error::Invalid(format!(
                    "{key} takes an absolute path (or nothing), not '{v}'"
                )));
            }
            crate::breached::open(path).map_err(|e| Error::Invalid(format!("{key}: {e}")))?;
            Ok(v.to_string())
        }
        Kind::Text { max } => {
            if v.is_empty()
                || v.chars().count() > max
                || v.contains(':')
                || v.chars().any(char::is_control)
            {
                Err(Error::Invalid(format!(
                    "{key} takes 1 to {max} characters without ':' or control characters"
                )))
            } else {
                Ok(v.to_string())
            }
        }
    }
}

/// The stored value of `key`, or its default.
pub fn get(conn: &Connection, key: &str) -> Result<String> {
    let d = def(key)?;
    let v: Option<String> = conn
        .query_row("SELECT value FROM policy WHERE key=?1", [key], |r| r.get(0))
        .optional()?;
    Ok(v.unwrap_or_else(|| d.default.to_string()))
}

/// Validate and store one setting; returns the canonical value.
pub fn set(conn: &Connection, key: &str, value: &str, now: i64) -> Result<String> {
    let v = validate(key, value)?;
    conn.execute(
        "INSERT INTO policy(key, value, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(key) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
        params![key, v, now],
    )?;
    Ok(v)
}

/// One row of `policy show`.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub key: &'static str,
    pub value: String,
    pub default: &'static str,
    pub is_default: bool,
    pub description: &'static str,
}

/// Every key with its current value.
pub fn entries(conn: &Connection) -> Result<Vec<Entry>> {
    let mut stmt = conn.prepare_cached("SELECT key, value FROM policy")?;
    let stored: std::collections::HashMap<String, String> = stmt
        .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<crate::sql::Result<_>>()?;
    Ok(KEYS
        .iter()
        .map(|d| {
            let value = stored
                .get(d.key)
                .cloned()
                .unwrap_or_else(|| d.default.to_string());
            Entry {
                key: d.key,
                is_default: value == d.default,
                value,
                default: d.default,
                description: d.description,
            }
        })
        .collect())
}

impl Policy {
    /// The lockout settings of this policy.
    pub fn lockout(&self) -> lockout::Settings {
        lockout::Settings {
            mode: self.lockout_mode,
            max_failures: self.lockout_max_failures,
            familiar_days: self.lockout_familiar_days,
            duration_minutes: self.lockout_duration_minutes,
        }
    }

    /// The password rules of an account with (`true`) or without a second factor:
    /// `password.min_length_with_second_factor`, when set, is the minimum of the first.
    /// [`Policy::password`] itself is the rules of an account not known yet (the only
    /// factor's minimum).
    pub fn password_for(&self, second_factor: bool) -> PasswordPolicy {
        let mut p = self.password.clone();
        if second_factor && self.password_min_length_second_factor > 0 {
            p.min_length = self.password_min_length_second_factor;
        }
        p
    }

    /// The loosest rules any account has: what a new password is checked against before
    /// the account it is for is known (then [`Policy::password_for`] decides).
    pub fn password_least(&self) -> PasswordPolicy {
        let with = self.password_for(true);
        if with.min_length < self.password.min_length {
            with
        } else {
            self.password.clone()
        }
    }

    /// The policy in force: the stored one; where it names no breached-password list, the
    /// list of the core that opened `conn` (authd's `--breached-passwords`).
    pub fn load(conn: &Connection) -> Result<Policy> {
        let e = entries(conn)?;
        let get = |k: &str| -> &str {
            e.iter()
                .find(|x| x.key == k)
                .map(|x| x.value.as_str())
                .unwrap_or("")
        };
        let mut policy = Policy::from_lookup(&get)?;
        if policy.password.breached.is_none() {
            policy.password.breached = conn.breached_list().map(|p| p.to_path_buf());
        }
        Ok(policy)
    }

    /// The defaults (what a new database has).
    pub fn defaults() -> Policy {
        let get = |k: &str| -> &str {
            KEYS.iter()
                .find(|d| d.key == k)
                .map(|d| d.default)
                .unwrap_or("")
        };
        // The defaults are valid by construction (tested below).
        Policy::from_lookup(&get)
            .unwrap_or_else(|e| panic!("built-in policy defaults are invalid: {e}"))
    }

    fn from_lookup<'a>(get: &dyn Fn(&str) -> &'a str) -> Result<Policy> {
        let int = |k: &str| -> Result<i64> {
            get(k).parse::<i64>().map_err(|_| {
                Error::Invalid(format!("stored policy {k}='{}' is not a number", get(k)))
            })
        };
        let flag = |k: &str| get(k) == "true";
        let u32_ = |k: &str| -> Result<u32> {
            u32::try_from(int(k)?)
                .map_err(|_| Error::Invalid(format!("stored policy {k} out of range")))
        };
        Ok(Policy {
            lockout_max_failures: int("lockout.max_failures")?,
            lockout_mode: lockout::Mode::parse(get("lockout.mode")),
            lockout_familiar_days: int("lockout.familiar_days")?,
            lockout_duration_minutes: int("lockout.duration_minutes")?,
            password: PasswordPolicy {
                min_length: int("password.min_length")?.max(1) as usize,
                max_length: int("password.max_length")?.max(8) as usize,
                require_lower: flag("password.require_lower"),
                require_upper: flag("password.require_upper"),
                require_digit: flag("password.require_digit"),
                require_special: flag("password.require_special"),
                min_score: int("password.min_score")?.clamp(0, 4) as u8,
                // The policy key's list (Policy::load falls back to the core's own).
                breached: Some(get("password.breached_passwords"))
                    .filter(|v| !v.is_empty())
                    .map(std::path::PathBuf::from),
            },
            password_min_length_second_factor: int("password.min_length_with_second_factor")?.max(0)
                as usize,
            password_max_age_days: int("password.max_age_days")?,
            password_recovery: match get("password.recovery") {
                "link" => Recovery::Link,
                _ => Recovery::Questions,
            },
            argon2: Argon2Params {
                m_kib: u32_("argon2.m_kib")?,
                t: u32_("argon2.t")?,
                p: u32_("argon2.p")?,
            },
            mfa_required: match get("mfa.required") {
                "none" => MfaRequired::None,
                "all" => MfaRequired::All,
                _ => MfaRequired::Groups,
            },
            mfa_admins_required: flag("mfa.admins_required"),
            mfa_passkey_required: PasskeyRequired::parse(get("mfa.passkey_required")),
            mfa_email_enrolment: flag("mfa.email_enrolment"),
            totp_skew: int("totp.skew")?,
            totp_issuer: get("totp.issuer").to_string(),
            recovery_count: int("recovery.count")?.max(1) as usize,
            remember_device_days: int("remember_device.days")?,
            terms_mode: match get("terms.mode") {
                "once_per_version" => TermsMode::OncePerVersion,
                _ => TermsMode::EveryLogin,
            },
            session_idle_minutes: int("session.idle_minutes")?,
            session_absolute_hours: int("session.absolute_hours")?,
            flow_ttl_seconds: int("flow.ttl_seconds")?,
            email_otp_ttl_minutes: int("email_otp.ttl_minutes")?,
            email_otp_max_tries: int("email_otp.max_tries")?,
            email_otp_resend_seconds: int("email_otp.resend_seconds")?,
            audit_retention_days: int("audit.retention_days")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every preset names only real keys, with values their validation accepts, once each.
    #[test]
    fn presets_set_valid_values_of_real_keys() {
        for p in PRESETS {
            let mut seen = std::collections::HashSet::new();
            for s in p.settings {
                assert!(seen.insert(s.key), "{} sets {} twice", p.name, s.key);
                assert_eq!(
                    validate(s.key, s.value).unwrap(),
                    s.value,
                    "{}: {}",
                    p.name,
                    s.key
                );
                assert!(!s.why.is_empty());
            }
        }
        assert!(preset("nist-800-63b").is_ok());
        assert!(preset("nist")
            .unwrap_err()
            .to_string()
            .contains("seed, nist-800-63b"));
    }

    #[test]
    fn defaults_are_valid_and_match_the_seed() {
        for d in KEYS {
            assert_eq!(validate(d.key, d.default).unwrap(), d.default, "{}", d.key);
        }
        let p = Policy::defaults();
        assert_eq!(p.lockout_max_failures, 9);
        assert_eq!(p.lockout_mode, lockout::Mode::Smart);
        assert_eq!(
            (p.lockout_familiar_days, p.lockout_duration_minutes),
            (30, 15)
        );
        assert_eq!(p.password.min_length, 8);
        assert_eq!(p.remember_device_days, 30);
        assert_eq!(p.argon2, Argon2Params::default());
    }

    /// `password.min_length_with_second_factor`: the minimum beside a second factor; 0
    /// leaves one minimum for every account; the loosest rules are the lower one.
    #[test]
    fn the_minimum_length_follows_the_second_factor() {
        let conn = crate::db::open_memory().unwrap();
        let p = Policy::load(&conn).unwrap();
        assert_eq!(p.password_for(true), p.password);
        assert_eq!(p.password_least(), p.password);
        set(&conn, "password.min_length", "15", 1).unwrap();
        set(&conn, "password.min_length_with_second_factor", "8", 1).unwrap();
        let p = Policy::load(&conn).unwrap();
        assert_eq!(p.password_for(false).min_length, 15);
        assert_eq!(p.password_for(true).min_length, 8);
        assert_eq!(p.password_least().min_length, 8);
        assert_eq!(p.password.min_length, 15);
        set(&conn, "password.min_length_with_second_factor", "20", 1).unwrap();
        let p = Policy::load(&conn).unwrap();
        assert_eq!(p.password_for(true).min_length, 20);
        assert_eq!(p.password_least().min_length, 15);
    }

    #[test]
    fn set_get_and_validate() {
        let conn = crate::db::open_memory().unwrap();
        assert_eq!(Policy::load(&conn).unwrap(), Policy::defaults());
        assert_eq!(set(&conn, "lockout.max_failures", " 5 ", 1).unwrap(), "5");
        assert_eq!(set(&conn, "mfa.required", "all", 1).unwrap(), "all");
        assert_eq!(
            set(&conn, "password.require_upper", "no", 1).unwrap(),
            "false"
        );
        let p = Policy::load(&conn).unwrap();
        assert_eq!(p.lockout_max_failures, 5);
        assert_eq!(p.mfa_required, MfaRequired::All);
        assert!(!p.password.require_upper);
        for (k, v) in [
            ("lockout.max_failures", "-1"),
            ("lockout.max_failures", "nine"),
            ("mfa.required", "sometimes"),
            ("lockout.mode", "seed"),
            ("lockout.duration_minutes", "0"),
            ("password.require_upper", "maybe"),
            ("no.such.key", "1"),
            ("totp.issuer", "a:b"),
        ] {
            assert!(
                matches!(set(&conn, k, v, 1), Err(Error::Invalid(_))),
                "{k}={v}"
            );
        }
        assert_eq!(get(&conn, "lockout.max_failures").unwrap(), "5");
    }
}
