//! Forward-auth: `GET /v1/auth/verify`, asked by a reverse proxy (nginx `auth_request`,
//! Caddy `forward_auth`, Traefik `forwardAuth`) before it lets a request through.
//!
//! - A live session (the portal's session cookie, or `Authorization: Bearer`) answers
//!   `200` with `X-Auth-User`, `X-Auth-Email`, `X-Auth-Groups` (comma-separated),
//!   `X-Auth-Org` and `X-Auth-Role`, for the proxy to pass on to the app.
//! - No session: `401` with `X-Auth-Login-Url`, the portal's sign-in page with the
//!   original URL as `next` (only when that URL is on an allowed origin). With
//!   `?redirect=1` the answer is a `302` to that page instead (for proxies that hand the
//!   auth answer to the browser, as Caddy and Traefik do).
//! - `--forward-auth-rule HOST/PATH=GROUP`: the most specific rule covering the original
//!   URL names the group a user needs; signed in without it is `403`. When rules exist
//!   and the original URL is unknown, the answer is `403` too (fail closed).
//!
//! The original URL comes from `X-Original-URL` (nginx, as the example config sets it)
//! or `X-Forwarded-Proto` + `X-Forwarded-Host` + `X-Forwarded-Uri` (Traefik, Caddy), and
//! only when the TCP peer is a `--trusted-proxy`: anyone else could claim any URL.
//! Paths are matched after percent-decoding and case-folding, by whole segments, so
//! `/%61dmin` or `/ADMIN` cannot slip past a rule for `/admin`.

use authcore::login::SessionInfo;
use authcore::util::now;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};

use super::html;
use super::security::{self, CookieName};
use crate::app::{ApiError, App, Req, Resp};
use crate::config::ForwardAuthRule;

/// Whether the TCP peer is one of the configured trusted proxies.
pub fn peer_trusted(app: &App, req: &Req) -> bool {
    app.config
        .trusted_proxies
        .iter()
        .any(|n| n.contains(req.peer))
}

/// `GET|HEAD /v1/auth/verify`.
pub async fn verify(app: &App, req: Req) -> Result<Resp, ApiError> {
    let insecure = app.config.insecure_cookies;
    let token = security::cookie(&req.headers, CookieName::Session.name(insecure))
        .or_else(|| req.bearer())
        .filter(|t| security::is_token(t));
    let original = if peer_trusted(app, &req) {
        original_url(&req.headers)
    } else {
        None
    };
    let session = match token {
        Some(t) => app.sessions.check(app, t, now()).await?,
        None => None,
    };
    let Some(s) = session else {
        let redirect = matches!(req.query("redirect"), Some("1" | "true" | "yes"));
        return Ok(unauthorized(app, original.as_ref(), redirect));
    };
    let target = original.as_ref().map(target_of);
    let target = target.as_ref().map(|(h, p)| (h.as_str(), p.as_str()));
    let s = &s.info;
    match access(&app.config.forward_auth_rules, target, &s.user.groups) {
        Ok(()) => Ok(allowed(s)),
        Err(need) => {
            tracing::info!(user = %s.user.username, need = %need, "forward-auth: group missing");
            Ok(plain(
                StatusCode::FORBIDDEN,
                "this account may not open this page\n",
            ))
        }
    }
}

fn plain(status: StatusCode, body: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn allowed(s: &SessionInfo) -> Resp {
    let mut r = plain(StatusCode::OK, "ok\n");
    let h = r.headers_mut();
    let u = &s.user;
    for (name, value) in [
        ("x-auth-user", u.username.clone()),
        ("x-auth-email", u.email.clone()),
        ("x-auth-groups", u.groups.join(",")),
        ("x-auth-org", u.org.clone()),
        ("x-auth-role", u.role.as_str().to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_bytes(value.as_bytes()) {
            h.insert(name, v);
        }
    }
    r
}

fn unauthorized(app: &App, original: Option<&url::Url>, redirect: bool) -> Resp {
    let login = login_url(app, original);
    let mut r = if redirect {
        let mut r = plain(StatusCode::FOUND, "sign in first\n");
        if let Ok(v) = HeaderValue::from_str(&login) {
            r.headers_mut().insert(LOCATION, v);
        }
        r
    } else {
        plain(StatusCode::UNAUTHORIZED, "sign in first\n")
    };
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&login) {
        h.insert("x-auth-login-url", v);
    }
    h.insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"authd\""),
    );
    r
}

/// The portal's sign-in URL, with `next` when the original URL may be returned to.
pub fn login_url(app: &App, original: Option<&url::Url>) -> String {
    let base = match &app.config.public_url {
        Some(p) => format!("{}{}/login", p.origin, p.base),
        None => "/login".to_string(),
    };
    let mut allowed = app.config.allowed_redirect_origins.clone();
    if let Some(p) = &app.config.public_url {
        allowed.push(p.origin.clone());
    }
    match original.and_then(|u| security::safe_redirect(u.as_str(), &allowed)) {
        Some(next) => format!("{base}?next={}", html::qs(&next)),
        None => base,
    }
}

/// The URL the browser asked the proxy for, from the proxy's headers.
pub fn original_url(h: &HeaderMap) -> Option<url::Url> {
    let get = |n: &str| {
        h.get(n)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or("").trim())
            .filter(|v| !v.is_empty())
    };
    let forwarded = |uri: &str| -> Option<String> {
        let proto = get("x-forwarded-proto")?;
        let host = get("x-forwarded-host")?;
        uri.starts_with('/')
            .then(|| format!("{proto}://{host}{uri}"))
    };
    let raw = match h
        .get("x-original-url")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    {
        Some(u) if u.starts_with('/') => forwarded(u)?,
        Some(u) if !u.is_empty() => u.to_string(),
        _ => forwarded(get("x-forwarded-uri").unwrap_or("/"))?,
    };
    if raw.chars().any(|c| c.is_control() || c == '\\') {
        return None;
    }
    let u = url::Url::parse(&raw).ok()?;
    let ok = matches!(u.scheme(), "http" | "https")
        && u.username().is_empty()
        && u.password().is_none()
        && u.host_str().is_some();
    ok.then_some(u)
}

/// The host (`name` or `name:port`, lower case) and the decoded, case-folded path that
/// rules are matched against.
fn target_of(u: &url::Url) -> (String, String) {
    let host = u.host_str().unwrap_or("").to_ascii_lowercase();
    let host = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    };
    let path = percent_encoding::percent_decode_str(u.path())
        .decode_utf8_lossy()
        .to_lowercase();
    // A path parameter (`/admin;x`) is part of the segment it follows.
    let path = path.replace(';', "/");
    (host, path)
}

/// Whether a user in `groups` may open `target` (host, path) under `rules`; Err names a
/// group that would do. The most specific covering rule decides (ties: any of their
/// groups). With rules but no known target, nobody passes.
pub fn access(
    rules: &[ForwardAuthRule],
    target: Option<(&str, &str)>,
    groups: &[String],
) -> Result<(), String> {
    if rules.is_empty() {
        return Ok(());
    }
    let Some((host, path)) = target else {
        return Err(rules[0].group.clone());
    };
    let covering: Vec<&ForwardAuthRule> = rules
        .iter()
        .filter(|r| {
            let lowered = ForwardAuthRule {
                path: r.path.to_lowercase(),
                ..(*r).clone()
            };
            lowered.covers(host, path)
        })
        .collect();
    let Some(best) = covering.iter().map(|r| r.specificity()).max() else {
        return Ok(());
    };
    let deciding: Vec<&&ForwardAuthRule> = covering
        .iter()
        .filter(|r| r.specificity() == best)
        .collect();
    let keys: Vec<String> = groups.iter().map(|g| authcore::names::key_of(g)).collect();
    if deciding
        .iter()
        .any(|r| keys.contains(&authcore::names::key_of(&r.group)))
    {
        Ok(())
    } else {
        Err(deciding[0].group.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[&str]) -> Vec<ForwardAuthRule> {
        list.iter().map(|r| r.parse().unwrap()).collect()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn original_url_from_each_proxy_style() {
        let u = original_url(&headers(&[(
            "x-original-url",
            "https://app.example.org/a/b?c=1",
        )]))
        .unwrap();
        assert_eq!(u.as_str(), "https://app.example.org/a/b?c=1");
        let u = original_url(&headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.org"),
            ("x-forwarded-uri", "/x?y=1"),
        ]))
        .unwrap();
        assert_eq!(u.as_str(), "https://app.example.org/x?y=1");
        // nginx with X-Original-URL set to $request_uri only.
        let u = original_url(&headers(&[
            ("x-original-url", "/p"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "127.0.0.1:8081"),
        ]))
        .unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:8081/p");
        // Dot segments are resolved before any rule sees the path.
        let u = original_url(&headers(&[(
            "x-original-url",
            "https://app.example.org/public/../admin",
        )]))
        .unwrap();
        assert_eq!(u.path(), "/admin");
        for bad in [
            "javascript:alert(1)",
            "https://user@app.example.org/",
            "https://app.example.org\\@evil/",
            "ftp://app.example.org/",
        ] {
            assert!(
                original_url(&headers(&[("x-original-url", bad)])).is_none(),
                "{bad}"
            );
        }
        assert!(original_url(&HeaderMap::new()).is_none());
        assert!(original_url(&headers(&[("x-forwarded-uri", "/x")])).is_none());
    }

    #[test]
    fn rules_decide_by_the_most_specific() {
        let r = rules(&[
            "app.example.org/admin=staff",
            "app.example.org/admin/reports=pupil-data",
            "*/finance=finance",
            "wiki.example.org=wiki",
        ]);
        let g = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let at = |url: &str| {
            let u = url::Url::parse(url).unwrap();
            target_of(&u)
        };
        let check = |url: &str, groups: &[&str]| {
            let (h, p) = at(url);
            access(&r, Some((&h, &p)), &g(groups))
        };
        assert_eq!(check("https://app.example.org/", &[]), Ok(()));
        assert_eq!(check("https://app.example.org/administrator", &[]), Ok(()));
        assert_eq!(
            check("https://app.example.org/admin", &[]),
            Err("staff".into())
        );
        assert_eq!(
            check("https://app.example.org/admin/x", &[]),
            Err("staff".into())
        );
        assert_eq!(check("https://app.example.org/admin/x", &["Staff"]), Ok(()));
        // Encoded and case variants are the same path.
        assert_eq!(
            check("https://app.example.org/%61dmin", &[]),
            Err("staff".into())
        );
        assert_eq!(
            check("https://app.example.org/ADMIN/", &[]),
            Err("staff".into())
        );
        assert_eq!(
            check("https://app.example.org/admin;x=1", &[]),
            Err("staff".into())
        );
        assert_eq!(
            check("https://APP.example.org:443/admin", &[]),
            Err("staff".into())
        );
        assert_eq!(
            check("https://app.example.org:8443/admin", &[]),
            Err("staff".into()),
            "a rule without a port covers every port"
        );
        // The most specific rule decides, not the first.
        assert_eq!(
            check("https://app.example.org/admin/reports/1", &["staff"]),
            Err("pupil-data".into())
        );
        assert_eq!(
            check("https://app.example.org/admin/reports/1", &["pupil-data"]),
            Ok(())
        );
        assert_eq!(
            check("https://other.example.org/finance/q1", &[]),
            Err("finance".into())
        );
        assert_eq!(check("https://wiki.example.org/any", &["wiki"]), Ok(()));
        assert_eq!(
            check("https://wiki.example.org/any", &["staff"]),
            Err("wiki".into())
        );
        // Unknown target with rules: closed. No rules: open.
        assert!(access(&r, None, &g(&["staff"])).is_err());
        assert_eq!(access(&[], None, &[]), Ok(()));
    }

    #[test]
    fn rule_syntax() {
        let r: ForwardAuthRule = "App.Example.org/Admin/=staff".parse().unwrap();
        assert_eq!(r.host.as_deref(), Some("app.example.org"));
        assert_eq!(r.path, "/Admin");
        let r: ForwardAuthRule = "*=staff".parse().unwrap();
        assert_eq!((r.host, r.path.as_str()), (None, "/"));
        for bad in [
            "",
            "app.example.org",
            "=staff",
            "/x=staff",
            "a b/x=g",
            "h/x=bad group",
        ] {
            assert!(bad.parse::<ForwardAuthRule>().is_err(), "{bad:?}");
        }
    }
}
