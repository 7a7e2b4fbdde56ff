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
//! - `--forward-auth-default deny`: a host that no rule, no allowed origin and not the
//!   public URL names is `403` for everybody.
//!
//! The original URL is read only when the TCP peer is a `--trusted-proxy` (anyone else
//! could claim any URL), and only from the header family `--forward-auth-headers` names;
//! a trusted proxy's headers that are missing, repeated or malformed are answered `400`.
//! Hosts and paths are normalised before any rule sees them ([`crate::target`]).

use authcore::login::SessionInfo;
use bytes::Bytes;
use http_body_util::Full;
use std::net::IpAddr;

use axum::extract::Request;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};

use super::html;
use super::security::{self, CookieName};
use crate::app::{ApiError, App, ClientAddr, Live, Req, Resp};
use crate::config::{DefaultAccess, ForwardAuthRule};
use crate::target::{self, Target};

/// Whether the TCP peer is one of the configured trusted proxies.
pub fn peer_trusted(app: &App, req: &Req) -> bool {
    is_trusted(app, req.peer)
}

fn is_trusted(app: &App, peer: IpAddr) -> bool {
    app.config.trusted_proxies.iter().any(|n| n.contains(peer))
}

/// The one value of `key` in a query string (percent-decoded), if any.
fn query_value<'a>(query: Option<&'a str>, key: &str) -> Option<std::borrow::Cow<'a, str>> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// `GET|HEAD /v1/auth/verify`. Asked before every request a proxy lets through, so it
/// reads the request as it comes (its headers, its query, the peer address the edge
/// recorded) rather than build a [`Req`].
pub async fn verify(app: &App, req: Request) -> Result<Resp, ApiError> {
    let config = &app.config;
    let live = app.live();
    let headers = req.headers();
    let peer = req
        .extensions()
        .get::<ClientAddr>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.peer);
    let original = if is_trusted(app, peer) {
        match target::target_from(config.forward_auth_headers, headers) {
            Ok(t) => Some(t),
            Err(why) => {
                tracing::warn!(why = %why, "forward-auth: the proxy's headers are refused");
                return Ok(plain(
                    StatusCode::BAD_REQUEST,
                    "the proxy's description of the request is incomplete or malformed\n",
                ));
            }
        }
    } else {
        None
    };
    if !host_served(&live, original.as_ref()) {
        tracing::info!(
            host = original
                .as_ref()
                .map(|t| t.host.name.as_str())
                .unwrap_or("?"),
            "forward-auth: host not served"
        );
        return Ok(plain(
            StatusCode::FORBIDDEN,
            "this host is not served here\n",
        ));
    }
    let insecure = config.insecure_cookies;
    let token = security::cookie(headers, CookieName::Session.name(insecure))
        .or_else(|| crate::app::bearer(headers))
        .filter(|t| security::is_token(t));
    let session = match token {
        Some(t) => app.check_session(t).await?,
        None => None,
    };
    let Some(s) = session else {
        let redirect = matches!(
            query_value(req.uri().query(), "redirect").as_deref(),
            Some("1" | "true" | "yes")
        );
        return Ok(unauthorized(app, original.as_ref(), redirect));
    };
    let s = &s.info;
    match access(&live.forward_auth_rules, original.as_ref(), &s.user.groups) {
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

/// With `--forward-auth-default deny`, only hosts named by a rule, an allowed redirect
/// origin or the public URL are served; an unknown target then is not served either.
fn host_served(live: &Live, t: Option<&Target>) -> bool {
    if live.forward_auth_default == DefaultAccess::Allow {
        return true;
    }
    let Some(t) = t else {
        return false;
    };
    let named_by_rule = live
        .forward_auth_rules
        .iter()
        .filter_map(|r| r.host.as_ref())
        .any(|h| h.name == t.host.name);
    let origin_host = |o: &str| {
        o.split_once("://")
            .and_then(|(_, a)| target::normalize_host(a).ok())
            .is_some_and(|h| h.name == t.host.name)
    };
    named_by_rule || live.allowed_origins.iter().any(|o| origin_host(o))
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

const X_AUTH_USER: HeaderName = HeaderName::from_static("x-auth-user");
const X_AUTH_EMAIL: HeaderName = HeaderName::from_static("x-auth-email");
const X_AUTH_GROUPS: HeaderName = HeaderName::from_static("x-auth-groups");
const X_AUTH_ORG: HeaderName = HeaderName::from_static("x-auth-org");
const X_AUTH_ROLE: HeaderName = HeaderName::from_static("x-auth-role");

fn allowed(s: &SessionInfo) -> Resp {
    let mut r = plain(StatusCode::OK, "ok\n");
    let h = r.headers_mut();
    let u = &s.user;
    let groups = u.groups.join(",");
    for (name, value) in [
        (X_AUTH_USER, u.username.as_str()),
        (X_AUTH_EMAIL, u.email.as_str()),
        (X_AUTH_GROUPS, groups.as_str()),
        (X_AUTH_ORG, u.org.as_str()),
        (X_AUTH_ROLE, u.role.as_str()),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
    r
}

fn unauthorized(app: &App, original: Option<&Target>, redirect: bool) -> Resp {
    let login = login_url(app, original.map(|t| t.url.as_str()));
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
pub fn login_url(app: &App, original: Option<&str>) -> String {
    let base = match &app.config.public_url {
        Some(p) => format!("{}{}/login", p.origin, p.base),
        None => "/login".to_string(),
    };
    let live = app.live();
    match original.and_then(|u| security::safe_redirect(u, &live.allowed_origins)) {
        Some(next) => format!("{base}?next={}", html::qs(&next)),
        None => base,
    }
}

/// Whether a user in `groups` may open `target` under `rules`; Err names a group that
/// would do. The most specific covering rule decides (ties: any of their groups). With
/// rules but no known target, nobody passes.
pub fn access(
    rules: &[ForwardAuthRule],
    target: Option<&Target>,
    groups: &[String],
) -> Result<(), String> {
    if rules.is_empty() {
        return Ok(());
    }
    let Some(target) = target else {
        return Err(rules[0].group.clone());
    };
    let covering: Vec<&ForwardAuthRule> = rules.iter().filter(|r| r.covers(target)).collect();
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
    use crate::target::HeaderSource;
    use hyper::header::HeaderMap;

    fn rules(list: &[&str]) -> Vec<ForwardAuthRule> {
        list.iter().map(|r| r.parse().unwrap()).collect()
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
        let check = |url: &str, groups: &[&str]| {
            let mut h = HeaderMap::new();
            h.insert("x-original-url", url.parse().unwrap());
            let t = target::target_from(HeaderSource::XOriginalUrl, &h).unwrap();
            access(&r, Some(&t), &g(groups))
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
        // Encoded, case, parameter, slash and dot variants are the same path.
        for path in [
            "/%61dmin",
            "/ADMIN/",
            "/admin;x=1",
            "//admin",
            "/public/../admin",
            "/public/%2e%2e/admin",
        ] {
            assert_eq!(
                check(&format!("https://app.example.org{path}"), &[]),
                Err("staff".into()),
                "{path}"
            );
        }
        assert_eq!(
            check("https://APP.example.org.:443/admin", &[]),
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
        assert_eq!(
            check("https://other.example.org//Finance/q1", &[]),
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
}
