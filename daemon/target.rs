//! Forward-auth targets: which URL the browser really asked the proxy for, read from one
//! family of proxy headers and normalised the way the most lenient backend would read it,
//! and the `--forward-auth-rule`s matched against it.
//!
//! The defences, each with a test below and in `tests/it/forward_auth.rs`:
//! - **One source** ([`HeaderSource`]): `X-Forwarded-Proto` + `-Host` + `-Uri` (what
//!   nginx, Caddy and Traefik are configured to send), or `X-Original-URL` alone. The other
//!   family is ignored entirely, so a client's copy of it (which Caddy and Traefik pass on)
//!   cannot override the proxy's. Each believed header must appear exactly once; missing,
//!   repeated or list-valued headers are a [`Refusal`] (400), never a guess.
//! - **Paths** ([`normalize_path`]): `;parameters` dropped per segment, percent-encoded
//!   characters decoded, `.`/`..` resolved, empty segments (repeated slashes) removed,
//!   trailing dots and spaces of a segment dropped, case folded. An encoded `/`, `\` or
//!   NUL, a double-encoded escape, an invalid escape, invalid UTF-8 (overlong forms), a
//!   raw `\`, control character or non-ASCII byte is a refusal: no backend reading of such
//!   a path can be trusted to agree with ours.
//! - **Hosts** ([`normalize_host`]): lower case, one trailing dot dropped, IDN in its ASCII
//!   (punycode) form, the port split off; rules match the name, and the port only when the
//!   rule names one.
//!
//! Normalising only ever makes more requests fall under a rule: a rule names a group a
//! user needs, so reading a path more leniently than a backend can refuse a strange URL,
//! never admit one.

use std::fmt;
use std::str::FromStr;

use hyper::header::HeaderMap;
use serde::Deserialize;

/// Which proxy headers carry the original URL (`--forward-auth-headers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
pub enum HeaderSource {
    /// `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Forwarded-Uri`, as the shipped nginx,
    /// Caddy and Traefik configurations send them; `X-Original-URL` is ignored.
    #[default]
    #[serde(rename = "forwarded")]
    #[value(name = "forwarded")]
    Forwarded,
    /// `X-Original-URL` (an absolute URL); the `X-Forwarded-*` headers are ignored.
    #[serde(rename = "x-original-url")]
    #[value(name = "x-original-url")]
    XOriginalUrl,
}

/// What forward-auth answers for a host no rule and no allowed origin names
/// (`--forward-auth-default`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAccess {
    /// Any signed-in user may open it.
    #[default]
    Allow,
    /// Refused (403) to everybody: only named hosts are served.
    Deny,
}

/// Why the proxy's description of the request cannot be believed (answered 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn refuse<T>(why: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(why.into()))
}

/// A normalised host: the name (lower-case ASCII, punycode for IDN, no trailing dot, IPv6
/// in brackets) and the port when one was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub port: Option<u16>,
}

/// `name`, `name:port`, `[v6]` or `[v6]:port`, normalised; anything else is refused.
pub fn normalize_host(raw: &str) -> Result<Host, Refusal> {
    let bad = || Refusal(format!("the host {raw:?} is not a host name"));
    if raw.is_empty() || raw.len() > 300 || raw.chars().any(char::is_control) {
        return Err(bad());
    }
    if !raw.is_ascii() {
        // Proxies send names in their ASCII form; a rule may be written in Unicode.
        return host_of_unicode(raw);
    }
    if raw
        .bytes()
        .any(|b| !b.is_ascii_graphic() || matches!(b, b'@' | b'/' | b'\\' | b'?' | b'#' | b','))
    {
        return Err(bad());
    }
    let (name, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (&raw[..v6.len() + 2], port)
    } else {
        match raw.split_once(':') {
            Some((n, p)) if !p.contains(':') => (n, Some(p)),
            Some(_) => return Err(bad()),
            None => (raw, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && !p.starts_with('+') => Some(n),
            _ => return refuse(format!("the port in {raw:?} is not a port")),
        },
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(bad());
    }
    let name = match url::Host::parse(name).map_err(|_| bad())? {
        url::Host::Domain(d) => d,
        url::Host::Ipv4(a) => a.to_string(),
        url::Host::Ipv6(a) => format!("[{a}]"),
    };
    if name.is_empty() || name.ends_with('.') {
        return Err(bad());
    }
    Ok(Host { name, port })
}

/// An internationalised name as written (`bücher.example`, in a rule): its ASCII form.
fn host_of_unicode(raw: &str) -> Result<Host, Refusal> {
    let (name, port) = match raw.rsplit_once(':') {
        Some((n, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (n, Some(p)),
        _ => (raw, None),
    };
    let ascii = idna_ascii(name.strip_suffix('.').unwrap_or(name))
        .ok_or_else(|| Refusal(format!("the host {raw:?} is not a host name")))?;
    match port {
        Some(p) => normalize_host(&format!("{ascii}:{p}")),
        None => normalize_host(&ascii),
    }
}

fn idna_ascii(name: &str) -> Option<String> {
    match url::Host::parse(name).ok()? {
        url::Host::Domain(d) if d.is_ascii() => Some(d),
        _ => None,
    }
}

/// A path's segments as the most lenient backend would read them (see the module text):
/// decoded, case-folded, without dot segments, empty segments or `;parameters`.
pub fn normalize_path(raw: &str) -> Result<Vec<String>, Refusal> {
    if !raw.starts_with('/') {
        return refuse("the path must start with /");
    }
    if let Some(b) = raw.bytes().find(|b| !b.is_ascii_graphic()) {
        return refuse(format!(
            "the path holds a raw byte 0x{b:02x} (space, control or non-ASCII)"
        ));
    }
    if raw.contains('\\') {
        return refuse("the path holds a backslash");
    }
    if raw.contains('#') {
        return refuse("the path holds a #");
    }
    let mut out: Vec<String> = Vec::new();
    for seg in raw.split('/') {
        // `/admin;jsessionid=x/` is `/admin/` to servlet containers.
        let seg = seg.split(';').next().unwrap_or("");
        let seg = decode_segment(seg)?;
        match seg.as_str() {
            "" | "." => continue,
            ".." => {
                out.pop();
                continue;
            }
            _ => {}
        }
        // Windows file systems read `admin.` and `admin ` as `admin`.
        let seg = seg.trim_end_matches(['.', ' ']);
        if seg.is_empty() {
            continue;
        }
        out.push(seg.to_lowercase());
    }
    Ok(out)
}

/// One segment, percent-decoded; refused when decoding could mean something else to
/// another reader.
fn decode_segment(seg: &str) -> Result<String, Refusal> {
    let b = seg.as_bytes();
    let mut bytes = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            bytes.push(b[i]);
            i += 1;
            continue;
        }
        let hex = |c: u8| (c as char).to_digit(16);
        let (Some(hi), Some(lo)) = (
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) else {
            return refuse("the path holds an invalid %-escape");
        };
        let v = (hi * 16 + lo) as u8;
        match v {
            b'/' => return refuse("the path holds an encoded /"),
            b'\\' => return refuse("the path holds an encoded \\"),
            0 => return refuse("the path holds an encoded NUL"),
            c if c < 0x20 || c == 0x7f => {
                return refuse("the path holds an encoded control character")
            }
            _ => bytes.push(v),
        }
        i += 3;
    }
    // A `%XX` left after decoding is an escape a second decoding would read.
    let hex = |c: &u8| c.is_ascii_hexdigit();
    if bytes
        .windows(3)
        .any(|w| w[0] == b'%' && hex(&w[1]) && hex(&w[2]))
    {
        return refuse("the path holds a double-encoded escape");
    }
    String::from_utf8(bytes)
        .or_else(|_| refuse("the path holds invalid UTF-8 (an overlong or broken escape)"))
}

/// The request as the browser made it, from the proxy's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `http` or `https`.
    pub scheme: &'static str,
    pub host: Host,
    /// Normalised path segments (what rules match).
    pub segments: Vec<String>,
    /// `scheme://host[:port]/path?query` as asked (checked, not normalised): the way
    /// back after signing in.
    pub url: String,
}

impl Target {
    /// The port: as written, else the scheme's default.
    pub fn port(&self) -> u16 {
        self.host
            .port
            .unwrap_or(if self.scheme == "https" { 443 } else { 80 })
    }

    fn build(scheme: &str, host: &str, uri: &str) -> Result<Target, Refusal> {
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => "http",
            "https" => "https",
            _ => return refuse(format!("the scheme {scheme:?} is not http or https")),
        };
        let host = normalize_host(host)?;
        if !uri.starts_with('/') {
            return refuse("the URI must be a path starting with /");
        }
        let path = uri.split('?').next().unwrap_or("");
        let segments = normalize_path(path)?;
        let authority = match host.port {
            Some(p) if p != if scheme == "https" { 443 } else { 80 } => {
                format!("{}:{p}", host.name)
            }
            _ => host.name.clone(),
        };
        let url = format!("{scheme}://{authority}{uri}");
        Ok(Target {
            scheme,
            host,
            segments,
            url,
        })
    }
}

/// The one value of a header that must appear exactly once, else a refusal.
fn single<'h>(h: &'h HeaderMap, name: &str, list_ok: bool) -> Result<&'h str, Refusal> {
    let mut all = h.get_all(name).iter();
    let Some(v) = all.next() else {
        return refuse(format!("{name} is missing"));
    };
    if all.next().is_some() {
        return refuse(format!("{name} is sent more than once"));
    }
    let v = v
        .to_str()
        .or_else(|_| refuse(format!("{name} is not ASCII")))?
        .trim();
    if v.is_empty() {
        return refuse(format!("{name} is empty"));
    }
    if !list_ok && v.contains(',') {
        return refuse(format!("{name} holds a list of values"));
    }
    Ok(v)
}

/// The original request, from the believed header family only.
pub fn target_from(source: HeaderSource, h: &HeaderMap) -> Result<Target, Refusal> {
    match source {
        HeaderSource::Forwarded => {
            let proto = single(h, "x-forwarded-proto", false)?;
            let host = single(h, "x-forwarded-host", false)?;
            // A path may hold commas; it is one value.
            let uri = single(h, "x-forwarded-uri", true)?;
            Target::build(proto, host, uri)
        }
        HeaderSource::XOriginalUrl => {
            let raw = single(h, "x-original-url", true)?;
            let Some((scheme, rest)) = raw.split_once("://") else {
                return refuse("X-Original-URL must be an absolute http(s) URL");
            };
            let cut = rest.find(['/', '?']).unwrap_or(rest.len());
            let (authority, uri) = rest.split_at(cut);
            let uri = match uri {
                "" => "/".to_string(),
                u if u.starts_with('?') => format!("/{u}"),
                u => u.to_string(),
            };
            Target::build(scheme, authority, &uri)
        }
    }
}

/// Forward-auth: requests to `host` (any host when `None`) whose path is `path` or below
/// it need membership of `group`. Written `HOST/PATH=GROUP` (`*` for any host):
/// `app.example.org/admin=staff`, `*/reports=pupil-data`, `wiki.example.org=staff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuthRule {
    /// `None` for every host.
    pub host: Option<Host>,
    /// Normalised segments of the path prefix (empty: every path).
    pub segments: Vec<String>,
    pub group: String,
}

impl ForwardAuthRule {
    /// Whether the rule covers `target`: the host name (and the port, when the rule names
    /// one), and whole path segments: `/admin` covers `/admin` and `/admin/x`, not
    /// `/administrator`.
    pub fn covers(&self, target: &Target) -> bool {
        let host_ok = match &self.host {
            None => true,
            Some(h) => h.name == target.host.name && h.port.is_none_or(|p| p == target.port()),
        };
        host_ok && target.segments.starts_with(&self.segments)
    }

    /// How specific the rule is: a named host beats `*`, then a longer path beats a
    /// shorter one, then a named port beats none.
    pub fn specificity(&self) -> (bool, usize, bool) {
        (
            self.host.is_some(),
            self.segments.len(),
            self.host.as_ref().is_some_and(|h| h.port.is_some()),
        )
    }
}

impl FromStr for ForwardAuthRule {
    type Err = String;
    fn from_str(s: &str) -> Result<ForwardAuthRule, String> {
        let bad = |why: &str| format!("forward_auth_rule {s:?}: {why} (write HOST/PATH=GROUP)");
        let (target, group) = s.trim().rsplit_once('=').ok_or_else(|| bad("no =GROUP"))?;
        let group = group.trim();
        if authcore::names::normalize("group", group).is_err() {
            return Err(bad("the group is not a valid group name"));
        }
        let target = target.trim();
        let (host, path) = match target.find('/') {
            Some(i) => (&target[..i], &target[i..]),
            None => (target, "/"),
        };
        if host.is_empty() {
            return Err(bad("the host is empty (use * for any host)"));
        }
        let host = if host == "*" {
            None
        } else {
            Some(normalize_host(host).map_err(|e| bad(&e.0))?)
        };
        if path.contains("//") || path.contains(';') || path.contains('?') {
            return Err(bad("the path is unusual"));
        }
        let segments = normalize_path(path).map_err(|e| bad(&e.0))?;
        Ok(ForwardAuthRule {
            host,
            segments,
            group: group.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Result<String, String> {
        normalize_path(p)
            .map(|s| format!("/{}", s.join("/")))
            .map_err(|e| e.0)
    }

    #[test]
    fn paths_are_read_as_the_most_lenient_backend_would() {
        for (raw, want) in [
            ("/", "/"),
            ("/admin", "/admin"),
            ("/admin/", "/admin"),
            ("//admin/", "/admin"),
            ("///admin///x", "/admin/x"),
            ("/./admin", "/admin"),
            ("/public/../admin", "/admin"),
            ("/../../admin", "/admin"),
            ("/%2e%2e/admin", "/admin"),
            ("/%2E/admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/.%2e/admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/ADMIN", "/admin"),
            ("/Admin/Reports", "/admin/reports"),
            ("/admin;jsessionid=1/x", "/admin/x"),
            ("/public/..;/admin", "/admin"),
            ("/;x/admin", "/admin"),
            ("/admin.", "/admin"),
            ("/admin%20", "/admin"),
            ("/admin...", "/admin"),
            ("/a,b", "/a,b"),
            ("/d%C3%A9j%C3%A0", "/déjà"),
            ("/100%25", "/100%"),
            ("/%7Euser", "/~user"),
        ] {
            assert_eq!(segs(raw).as_deref(), Ok(want), "{raw}");
        }
        for raw in [
            "",
            "admin",
            "/%2fadmin",
            "/%2Fadmin",
            "/admin%2f",
            "/%5cadmin",
            "/%5Cadmin",
            "/\\admin",
            "/admin%00",
            "/admin%0a",
            "/%",
            "/%2",
            "/%zz",
            "/%g0admin",
            "/%c0%af",
            "/%c0%ae%c0%ae/admin",
            "/%e0%80%af",
            "/%ff",
            "/%252fadmin",
            "/%25%32%66",
            "/admin\t",
            "/ad min",
            "/déjà",
            "/a#b",
        ] {
            assert!(
                segs(raw).is_err(),
                "{raw:?} must be refused: {:?}",
                segs(raw)
            );
        }
    }

    #[test]
    fn hosts_are_normalised() {
        let h = |s: &str| normalize_host(s).map(|h| (h.name, h.port)).map_err(|e| e.0);
        assert_eq!(h("app.example.org"), Ok(("app.example.org".into(), None)));
        assert_eq!(h("APP.Example.ORG"), Ok(("app.example.org".into(), None)));
        assert_eq!(h("app.example.org."), Ok(("app.example.org".into(), None)));
        assert_eq!(
            h("app.example.org.:8443"),
            Ok(("app.example.org".into(), Some(8443)))
        );
        assert_eq!(
            h("bücher.example"),
            Ok(("xn--bcher-kva.example".into(), None))
        );
        assert_eq!(
            h("BÜCHER.example"),
            Ok(("xn--bcher-kva.example".into(), None))
        );
        assert_eq!(
            h("xn--bcher-kva.example"),
            Ok(("xn--bcher-kva.example".into(), None))
        );
        assert_eq!(h("[::1]:8080"), Ok(("[::1]".into(), Some(8080))));
        assert_eq!(h("127.0.0.1:80"), Ok(("127.0.0.1".into(), Some(80))));
        for bad in [
            "",
            ".",
            "app.example.org..",
            "a b",
            "user@app.example.org",
            "app.example.org:",
            "app.example.org:0",
            "app.example.org:65536",
            "app.example.org:+80",
            "app.example.org:x",
            "a:1:2",
            "[::1",
            "app.example.org/x",
            "a,b",
            "app\\x",
        ] {
            assert!(h(bad).is_err(), "{bad:?}: {:?}", h(bad));
        }
    }

    fn map(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn one_header_family_is_believed() {
        let fwd = [
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.org"),
            ("x-forwarded-uri", "/x?y=1"),
        ];
        let t = target_from(HeaderSource::Forwarded, &map(&fwd)).unwrap();
        assert_eq!(t.url, "https://app.example.org/x?y=1");
        assert_eq!(t.segments, vec!["x".to_string()]);
        // A client's X-Original-URL beside the proxy's headers changes nothing.
        let mut with = fwd.to_vec();
        with.push(("x-original-url", "https://app.example.org/public"));
        let t2 = target_from(HeaderSource::Forwarded, &map(&with)).unwrap();
        assert_eq!(t2, t);
        // X-Original-URL alone is not the forwarded family: refused.
        assert!(target_from(
            HeaderSource::Forwarded,
            &map(&[("x-original-url", "https://app.example.org/")])
        )
        .is_err());
        // Incomplete or contradicting: refused.
        for drop in 0..3 {
            let part: Vec<_> = fwd
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != drop)
                .map(|(_, p)| *p)
                .collect();
            assert!(target_from(HeaderSource::Forwarded, &map(&part)).is_err());
        }
        let mut twice = fwd.to_vec();
        twice.push(("x-forwarded-host", "other.example.org"));
        assert!(target_from(HeaderSource::Forwarded, &map(&twice)).is_err());
        let listed = [
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.org, other.example.org"),
            ("x-forwarded-uri", "/"),
        ];
        assert!(target_from(HeaderSource::Forwarded, &map(&listed)).is_err());
        let absolute = [
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.org"),
            ("x-forwarded-uri", "https://other/admin"),
        ];
        assert!(target_from(HeaderSource::Forwarded, &map(&absolute)).is_err());

        // The other family: X-Original-URL only.
        let t = target_from(
            HeaderSource::XOriginalUrl,
            &map(&[("x-original-url", "HTTPS://App.Example.org.:443//admin/?q")]),
        )
        .unwrap();
        assert_eq!(t.segments, vec!["admin".to_string()]);
        assert_eq!(t.host.name, "app.example.org");
        assert_eq!(t.url, "https://app.example.org//admin/?q");
        assert!(target_from(HeaderSource::XOriginalUrl, &map(&fwd)).is_err());
        for bad in [
            "/admin",
            "javascript:alert(1)",
            "https://user@app.example.org/",
            "https://app.example.org\\@evil/",
            "ftp://app.example.org/",
            "https:///admin",
        ] {
            assert!(
                target_from(HeaderSource::XOriginalUrl, &map(&[("x-original-url", bad)])).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn rules_cover_hosts_ports_and_whole_segments() {
        let at = |url: &str| {
            target_from(HeaderSource::XOriginalUrl, &map(&[("x-original-url", url)])).unwrap()
        };
        let r: ForwardAuthRule = "App.Example.org/Admin/=staff".parse().unwrap();
        assert_eq!(r.host.as_ref().unwrap().name, "app.example.org");
        assert_eq!(r.segments, vec!["admin".to_string()]);
        assert!(r.covers(&at("https://app.example.org/admin")));
        assert!(r.covers(&at("https://app.example.org:8443/ADMIN/x")));
        assert!(r.covers(&at("https://app.example.org.//admin")));
        assert!(!r.covers(&at("https://app.example.org/administrator")));
        assert!(!r.covers(&at("https://other.example.org/admin")));
        let p: ForwardAuthRule = "app.example.org:8443/admin=staff".parse().unwrap();
        assert!(p.covers(&at("https://app.example.org:8443/admin")));
        assert!(!p.covers(&at("https://app.example.org/admin")));
        assert!(!p.covers(&at("http://app.example.org:8080/admin")));
        let p: ForwardAuthRule = "app.example.org:443/admin=staff".parse().unwrap();
        assert!(
            p.covers(&at("https://app.example.org/admin")),
            "default port"
        );
        let idn: ForwardAuthRule = "bücher.example/x=staff".parse().unwrap();
        assert!(idn.covers(&at("https://xn--bcher-kva.example/x")));
        let any: ForwardAuthRule = "*=staff".parse().unwrap();
        assert_eq!((any.host, any.segments.len()), (None, 0));
        for bad in [
            "",
            "app.example.org",
            "=staff",
            "/x=staff",
            "a b/x=g",
            "h/x=bad group",
            "h//x=g",
            "h/%2fx=g",
            "h/x;y=g",
            "h:0/x=g",
        ] {
            assert!(bad.parse::<ForwardAuthRule>().is_err(), "{bad:?}");
        }
    }
}
