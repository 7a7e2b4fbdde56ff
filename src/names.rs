//! Names people type: usernames, organisation and group names, email addresses.
//!
//! A username is an identity, so two spellings that look the same must be the same user:
//! input is NFKC-normalised (fullwidth `ａｌｉｃｅ` becomes `alice`), trimmed, and
//! compared by a case-folded key. The key is what the UNIQUE index and every lookup use,
//! so `Alice`, ` alice ` and `ＡＬＩＣＥ` share one account, one lockout counter and one
//! audit trail.

use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, Result};

pub const MAX_NAME_CHARS: usize = 64;
pub const MAX_EMAIL_BYTES: usize = 254;

/// A normalised name: `display` keeps the case as written, `key` is the identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub display: String,
    pub key: String,
}

/// The lookup key of any string, valid or not (for audit rows of unknown names).
pub fn key_of(raw: &str) -> String {
    let nfkc: String = raw.trim().nfkc().collect();
    let lower: String = nfkc.to_lowercase().nfkc().collect();
    lower.chars().take(MAX_NAME_CHARS * 2).collect()
}

/// Validate and normalise a username, organisation or group name. `what` names the kind
/// in the error message. Allowed: letters and digits of any script, and `. _ - @ +`;
/// 1 to 64 characters after normalisation; no spaces or control characters.
pub fn normalize(what: &str, raw: &str) -> Result<Name> {
    let display: String = raw.trim().nfkc().collect();
    if display.is_empty() {
        return Err(Error::Invalid(format!("the {what} is empty")));
    }
    if display.chars().count() > MAX_NAME_CHARS {
        return Err(Error::Invalid(format!(
            "the {what} is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    if let Some(c) = display
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+')))
    {
        let shown = if c.is_control() || c.is_whitespace() {
            format!("U+{:04X}", c as u32)
        } else {
            format!("'{c}'")
        };
        return Err(Error::Invalid(format!(
            "the {what} '{}' contains {shown}; use letters, digits and . _ - @ + only",
            display.escape_debug()
        )));
    }
    let key = key_of(&display);
    Ok(Name { display, key })
}

/// Check an email address for the shape mail servers accept: one `@`, a non-empty local
/// part, a domain with a dot and no empty labels, no spaces or control characters.
/// Returns it trimmed.
pub fn email(raw: &str) -> Result<String> {
    let e = raw.trim();
    let bad = |why: &str| {
        Err(Error::Invalid(format!(
            "'{}' is not a valid email address: {why}",
            e.escape_debug()
        )))
    };
    if e.is_empty() {
        return bad("it is empty");
    }
    if e.len() > MAX_EMAIL_BYTES {
        return bad("it is too long");
    }
    if e.chars().any(|c| {
        c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"' | '\\')
    }) {
        return bad("it contains spaces or characters not allowed in an address");
    }
    let Some((local, domain)) = e.rsplit_once('@') else {
        return bad("it has no '@'");
    };
    if local.is_empty() || local.contains('@') {
        return bad("the part before '@' is empty or holds another '@'");
    }
    if !domain.contains('.')
        || domain
            .split('.')
            .any(|l| l.is_empty() || l.starts_with('-') || l.ends_with('-'))
    {
        return bad("the domain is not a valid host name");
    }
    Ok(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_normalise_to_one_key() {
        let variants = ["alice", "Alice", " ALICE ", "ａｌｉｃｅ", "ＡＬＩＣＥ"];
        for v in variants {
            assert_eq!(normalize("username", v).unwrap().key, "alice", "{v}");
        }
        assert_eq!(normalize("username", "Alice").unwrap().display, "Alice");
        assert_eq!(normalize("username", "Zoë").unwrap().key, "zoë");
        // Composed and decomposed forms are one name.
        assert_eq!(
            normalize("username", "Zo\u{0065}\u{0308}").unwrap().key,
            normalize("username", "Zo\u{00eb}").unwrap().key
        );
    }

    #[test]
    fn bad_usernames_refused() {
        for bad in [
            "",
            "   ",
            "a b",
            "a\u{0}b",
            "a/b",
            "a\u{202e}b",
            "x\ny",
            &"a".repeat(65),
            "<script>",
        ] {
            assert!(
                matches!(normalize("username", bad), Err(Error::Invalid(_))),
                "{bad:?}"
            );
        }
        assert!(normalize("username", &"a".repeat(64)).is_ok());
        assert!(normalize("username", "j.doe-1_x@site+tag").is_ok());
    }

    #[test]
    fn emails() {
        for good in ["a@b.co", "first.last+tag@example.org", " x@y.z "] {
            assert!(email(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a",
            "a@",
            "@b.co",
            "a@b",
            "a@@b.co",
            "a b@c.de",
            "a@b..co",
            "a@-b.co",
            "a@b.co\nx@y.z",
            "<a@b.co>",
        ] {
            assert!(email(bad).is_err(), "{bad:?}");
        }
    }
}
