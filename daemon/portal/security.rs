//! What keeps the portal's pages safe in a browser: cookies, CSRF tokens, the
//! Content-Security-Policy, and the open-redirect filter.
//!
//! - **Cookies** are `__Host-` prefixed, `Secure`, `HttpOnly`, `SameSite=Lax`, `Path=/`,
//!   without `Domain`: no other host (not even a sibling subdomain) can set or read them,
//!   and scripts never see them. `--insecure-cookies` (plain-HTTP loopback only) drops
//!   `Secure` and the prefix, which browsers require to go together.
//! - **CSRF**: every form carries an HMAC (under the server key, its own subkey) of what
//!   the form is bound to: the browser's random `csrf` cookie for forms before a login
//!   (and, with it, the login flow the form continues), or the session for signed-in
//!   forms. A cross-site page can neither read nor set those cookies, so it cannot forge
//!   the token. Checked in constant time; a missing or wrong token is a 403 and changes
//!   nothing. Next to the token, a post whose `Origin` is another site's or `null` is
//!   refused the same way (`Ctx::origin_ok` in mod.rs).
//! - **Redirects** after a login go only to same-origin paths or to configured origins:
//!   [`safe_redirect`] is a pure function with a table test of the classic tricks.

use authcore::crypto::SecretKey;
use hyper::header::{HeaderMap, COOKIE};

/// The strict policy of every page: only this origin's scripts, styles and forms, images
/// from here or `data:`, never framed, no `<base>`.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The policy of a portal whose logins may end at `allowed` origins: a form's answer may
/// be a redirect there, so `form-action` allows them. Built once per configuration and
/// SIGHUP (`app::Live`): nothing in it varies per request.
pub fn csp(allowed: &[String]) -> String {
    if allowed.is_empty() {
        CSP.to_string()
    } else {
        CSP.replace(
            "form-action 'self'",
            &format!("form-action 'self' {}", allowed.join(" ")),
        )
    }
}

/// The cookies the portal sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieName {
    /// The session token (the same token the API's Bearer header carries).
    Session,
    /// A remembered device: skips the second factor until it expires or is revoked.
    Device,
    /// A random per-browser value that pre-login CSRF tokens are bound to.
    Csrf,
}

impl CookieName {
    pub fn name(self, insecure: bool) -> &'static str {
        match (self, insecure) {
            (CookieName::Session, false) => "__Host-authd_session",
            (CookieName::Device, false) => "__Host-authd_device",
            (CookieName::Csrf, false) => "__Host-authd_csrf",
            (CookieName::Session, true) => "authd_session",
            (CookieName::Device, true) => "authd_device",
            (CookieName::Csrf, true) => "authd_csrf",
        }
    }
}

/// A `Set-Cookie` value. `max_age`: `None` for a browser-session cookie, `Some(0)` to
/// delete it.
pub fn set_cookie(name: CookieName, value: &str, max_age: Option<i64>, insecure: bool) -> String {
    let mut c = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax",
        name.name(insecure)
    );
    if !insecure {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={}", age.max(0)));
    }
    c
}

/// The value of cookie `name` in the request's `Cookie` headers. Only values that look
/// like our tokens (base64url/hex, at most 128 characters) are returned; when a name
/// appears twice, the request is ambiguous and nothing is returned.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut found = None;
    for v in headers.get_all(COOKIE) {
        let Ok(text) = v.to_str() else { continue };
        for pair in text.split(';') {
            let Some((k, val)) = pair.trim().split_once('=') else {
                continue;
            };
            if k.trim() != name {
                continue;
            }
            if found.is_some() {
                return None;
            }
            found = Some(val.trim().trim_matches('"'));
        }
    }
    found.filter(|v| is_token(v))
}

/// A token we issue: 1 to 128 characters of base64url or hex.
pub fn is_token(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What a form is bound to.
#[derive(Debug, Clone, Copy)]
pub enum Binding<'a> {
    /// A form before any login flow (login, forgot password): the browser's csrf cookie.
    Browser(&'a str),
    /// A form that continues a login or reset flow: the csrf cookie and the flow token.
    Flow { browser: &'a str, flow: &'a str },
    /// A signed-in form: the session token.
    Session(&'a str),
}

impl Binding<'_> {
    fn message(&self) -> String {
        match self {
            Binding::Browser(b) => format!("browser\0{b}"),
            Binding::Flow { browser, flow } => format!("flow\0{browser}\0{flow}"),
            Binding::Session(s) => format!("session\0{s}"),
        }
    }
}

/// The CSRF token of a form bound to `binding`.
pub fn csrf_token(key: &SecretKey, binding: Binding) -> String {
    key.keyed_hash("portal csrf v1", binding.message().as_bytes())
}

/// Whether `given` is the token of `binding` under any key still listed (a form served
/// before a key rotation still posts; constant time).
pub fn csrf_ok(key: &SecretKey, binding: Binding, given: Option<&str>) -> bool {
    match given {
        Some(g) => key.keyed_hash_matches("portal csrf v1", binding.message().as_bytes(), g),
        None => false,
    }
}

/// Where a browser may be sent after a login, or `None` when `target` is unsafe.
///
/// Allowed: a same-origin absolute path (`/app/page?x=1#y`), or an absolute `http(s)` URL
/// whose origin is exactly one of `allowed` (normalised `scheme://host[:port]`). Refused:
/// scheme-relative (`//evil`), backslashes (`/\evil`, which browsers read as `//`), user
/// info (`https://good@evil`), other schemes (`javascript:`, `data:`), look-alike hosts
/// (`http://good.evil`), control characters and whitespace, and any of these hidden
/// behind percent-encoding (decoded repeatedly before checking). The answer is the
/// target re-serialised (absolute URLs normalised by the URL parser).
pub fn safe_redirect(target: &str, allowed: &[String]) -> Option<String> {
    if target.is_empty() || target.len() > 2048 {
        return None;
    }
    // Decode repeatedly: whatever a later hop might decode must be safe too.
    let mut layers = vec![target.to_string()];
    for _ in 0..4 {
        let last = layers.last()?;
        let next = percent_encoding::percent_decode_str(last)
            .decode_utf8_lossy()
            .into_owned();
        if &next == last {
            break;
        }
        layers.push(next);
    }
    for l in &layers {
        if l.chars()
            .any(|c| c == '\\' || c.is_control() || c.is_whitespace() || c == '\u{FFFD}')
        {
            return None;
        }
    }
    if target.starts_with('/') {
        // A path on this origin; never `//host` at any decoding depth.
        for l in &layers {
            if l.starts_with("//") || !l.starts_with('/') {
                return None;
            }
        }
        return Some(target.to_string());
    }
    // Otherwise an absolute URL to an allowed origin, and nothing ambiguous about it.
    let (scheme, rest) = target.split_once("://")?;
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || layers.iter().any(|l| authority_of(l).contains('@')) {
        return None;
    }
    let u = url::Url::parse(target).ok()?;
    if !u.username().is_empty() || u.password().is_some() {
        return None;
    }
    let origin = u.origin().ascii_serialization();
    if allowed.iter().any(|a| a == &origin) {
        Some(u.to_string())
    } else {
        None
    }
}

/// The authority part of `scheme://authority/...` (empty when there is none).
fn authority_of(s: &str) -> &str {
    s.split_once("://")
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""))
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_redirect_table() {
        let allowed = vec![
            "https://good.example".to_string(),
            "http://127.0.0.1:8081".to_string(),
        ];
        let cases: &[(&str, Option<&str>)] = &[
            // Same-origin paths.
            ("/", Some("/")),
            ("/app/page?x=1&y=%2F#frag", Some("/app/page?x=1&y=%2F#frag")),
            ("/a//b", Some("/a//b")),
            // Allowed origins.
            ("https://good.example", Some("https://good.example/")),
            (
                "https://good.example/x?y=1",
                Some("https://good.example/x?y=1"),
            ),
            ("HTTPS://GOOD.EXAMPLE/x", Some("https://good.example/x")),
            ("https://good.example:443/x", Some("https://good.example/x")),
            ("http://127.0.0.1:8081/p", Some("http://127.0.0.1:8081/p")),
            // Scheme-relative and backslash tricks.
            ("//evil.example", None),
            ("//evil.example/path", None),
            ("///evil.example", None),
            ("/\\evil.example", None),
            ("\\\\evil.example", None),
            ("/\\/evil.example", None),
            ("https://good.example\\@evil.example", None),
            // User info.
            ("https://good.example@evil.example", None),
            ("https://good.example:443@evil.example/", None),
            ("https://user:pw@good.example/", None),
            ("https://evil.example#@good.example", None),
            ("https://evil.example?@good.example", None),
            // Other schemes.
            ("javascript:alert(1)", None),
            ("JavaScript:alert(1)", None),
            ("javascript://good.example/%0aalert(1)", None),
            ("data:text/html,<script>alert(1)</script>", None),
            ("ftp://good.example/", None),
            // Look-alike and other origins.
            ("http://good.example.evil", None),
            ("https://good.example.evil/", None),
            ("https://evil.example/good.example", None),
            ("https://good.examplee/", None),
            ("http://good.example/", None),       // scheme differs
            ("https://good.example:8443/", None), // port differs
            ("http://127.0.0.1:8082/", None),
            ("https://xn--gd-8ka.example/", None),
            // Encoded variants.
            ("/%2F%2Fevil.example", None),
            ("/%2f%2fevil.example", None),
            ("%2F%2Fevil.example", None),
            ("/%5Cevil.example", None),
            ("/%255Cevil.example", None),
            ("/%252F%252Fevil.example", None),
            ("%68ttps://evil.example", None),
            ("https://good.example%40evil.example/", None),
            ("https://good.example%2540evil.example/", None),
            ("/%09/evil.example", None),
            ("/%0d%0aSet-Cookie:x=1", None),
            // Whitespace and control characters.
            (" /x", None),
            ("/x y", None),
            ("\t//evil.example", None),
            ("/\n/evil.example", None),
            ("https://good.example/\u{0}", None),
            // Not a path, not absolute.
            ("", None),
            ("evil.example", None),
            ("./x", None),
            ("?x=1", None),
        ];
        for (target, want) in cases {
            assert_eq!(
                safe_redirect(target, &allowed).as_deref(),
                *want,
                "target {target:?}"
            );
        }
        let long = format!("/{}", "a".repeat(3000));
        assert_eq!(safe_redirect(&long, &allowed), None);
        // Nothing allowed: only paths.
        assert_eq!(safe_redirect("https://good.example/", &[]), None);
        assert_eq!(safe_redirect("/ok", &[]).as_deref(), Some("/ok"));
    }

    #[test]
    fn cookies_have_every_flag() {
        let c = set_cookie(CookieName::Session, "tok", None, false);
        assert_eq!(
            c,
            "__Host-authd_session=tok; Path=/; HttpOnly; SameSite=Lax; Secure"
        );
        let c = set_cookie(CookieName::Device, "d", Some(86_400), false);
        assert!(c.starts_with("__Host-authd_device=d;") && c.ends_with("Max-Age=86400"));
        let c = set_cookie(CookieName::Csrf, "", Some(0), true);
        assert_eq!(c, "authd_csrf=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0");
        assert!(!c.contains("Secure") && !c.contains("__Host-"));
    }

    #[test]
    fn cookie_parsing() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            "a=1; __Host-authd_session=abc_DEF-1; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, "__Host-authd_session"), Some("abc_DEF-1"));
        assert_eq!(cookie(&h, "authd_session"), None);
        assert_eq!(cookie(&h, "a"), Some("1"));
        h.append(COOKIE, "__Host-authd_session=other".parse().unwrap());
        assert_eq!(cookie(&h, "__Host-authd_session"), None, "ambiguous");
        let mut h = HeaderMap::new();
        h.append(COOKIE, "x=bad value!".parse().unwrap());
        assert_eq!(cookie(&h, "x"), None);
    }

    #[test]
    fn csrf_tokens_are_bound() {
        let k = SecretKey::from_bytes([7; 32]);
        let t = csrf_token(&k, Binding::Browser("b1"));
        assert!(csrf_ok(&k, Binding::Browser("b1"), Some(&t)));
        assert!(!csrf_ok(&k, Binding::Browser("b2"), Some(&t)));
        assert!(!csrf_ok(&k, Binding::Session("b1"), Some(&t)));
        assert!(!csrf_ok(&k, Binding::Browser("b1"), None));
        assert!(!csrf_ok(&k, Binding::Browser("b1"), Some("")));
        let f = csrf_token(
            &k,
            Binding::Flow {
                browser: "b1",
                flow: "f1",
            },
        );
        assert!(csrf_ok(
            &k,
            Binding::Flow {
                browser: "b1",
                flow: "f1"
            },
            Some(&f)
        ));
        // Another browser with the same flow (login CSRF) fails.
        assert!(!csrf_ok(
            &k,
            Binding::Flow {
                browser: "b2",
                flow: "f1"
            },
            Some(&f)
        ));
        // Another key fails.
        let k2 = SecretKey::from_bytes([8; 32]);
        assert!(!csrf_ok(&k2, Binding::Browser("b1"), Some(&t)));
    }
}
