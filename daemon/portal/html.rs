//! Server-rendered HTML: what every page shares.
//!
//! The pages are askama templates in `daemon/templates/` (`base.html` is the layout, one
//! template per page, `fields.html` the form pieces several pages share), compiled into
//! the binary. Askama escapes every value it prints for HTML — element text and quoted
//! attribute values alike — so what came from a person or the database cannot become
//! markup; the one value marked `|safe` is the QR code's SVG, which the qrcode crate
//! draws from nothing but squares. No inline scripts or styles (the CSP forbids them):
//! the one stylesheet and the one script are assets of this origin.

use authcore::password::{PasswordPolicy, Rule, RuleResult};

/// Percent-encode a query-string value (for URLs built in code; the template then
/// escapes the whole URL for its attribute).
pub fn qs(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A message shown above the page's content.
#[derive(Debug, Clone)]
pub enum Notice {
    Error(String),
    Info(String),
}

impl Notice {
    pub fn is_error(&self) -> bool {
        matches!(self, Notice::Error(_))
    }

    pub fn text(&self) -> &str {
        match self {
            Notice::Error(m) | Notice::Info(m) => m,
        }
    }
}

/// What `base.html` shows around every page's content: each page's template struct has
/// one, as its field `layout`.
pub struct Layout<'a> {
    /// The prefix of every link ("" or e.g. "/auth").
    pub base: &'a str,
    pub title: &'a str,
    /// The signed-in user's name and the sign-out form's CSRF token, for the header.
    pub user: Option<(&'a str, &'a str)>,
    pub notices: &'a [Notice],
}

/// Password rules for the checklist, each met or not (not yet checked: not met).
pub type Rules = Vec<RuleResult>;

/// The rules before anything was checked (shown as not yet met).
pub fn rules_unchecked(rules: Vec<Rule>) -> Rules {
    rules
        .into_iter()
        .map(|r| RuleResult {
            id: r.id,
            description: r.description,
            met: false,
        })
        .collect()
}

/// The live checklist of password rules and the pair of new-password boxes
/// (`fields.html`'s `new_password`). The script turns each rule green as it is met;
/// without the script it is the list of requirements. `mismatch` shows the "do not
/// match" message from the server (no script needed).
pub struct NewPassword<'a> {
    pub rules: &'a [RuleResult],
    pub min: usize,
    pub max: usize,
    pub mismatch: bool,
}

impl<'a> NewPassword<'a> {
    /// The boxes and checklist for `policy`'s length limits.
    pub fn new(policy: &PasswordPolicy, rules: &'a [RuleResult], mismatch: bool) -> Self {
        NewPassword {
            rules,
            min: policy.min_length,
            max: policy.max_length,
            mismatch,
        }
    }
}

/// Mask an email address for display: `a•••@example.org`.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}•••@{domain}")
        }
        None => "your email address".to_string(),
    }
}

/// A Unix time as a short UTC date and time.
pub fn when(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// A WebAuthn ceremony page (see `passkey_ceremony.html`).
#[derive(askama::Template)]
#[template(path = "passkey_ceremony.html")]
pub struct CeremonyPage<'a> {
    pub layout: Layout<'a>,
    pub intro: &'a str,
    pub action: &'a str,
    /// `get` (sign in) or `create` (add a passkey).
    pub mode: &'a str,
    pub options: &'a str,
    pub csrf: &'a str,
    pub flow: Option<&'a str>,
    pub name: Option<&'a str>,
    pub next: Option<&'a str>,
    pub button: &'a str,
    pub back: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(qs("/a b?c=d&e"), "%2Fa+b%3Fc%3Dd%26e");
        assert_eq!(mask_email("alice@example.org"), "a•••@example.org");
        assert!(Notice::Error("x".into()).is_error() && !Notice::Info("x".into()).is_error());
    }
}
