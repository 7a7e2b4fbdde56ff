//! The routers of the two listeners: each route once, with its method(s) and the label
//! of its metrics and log lines.
//!
//! The router answers 405 (with `Allow`) for a known path and another method, and 404
//! for an unknown path under `/v1` (JSON) or `/metrics`; every other path on the main
//! listener is the browser portal's. Every `/v1` route checks the API's JSON-only rule
//! ([`json_only`]) before its handler, and one route layer, [`credential_step`] — the
//! JSON type and the one per-address rate limit — guards the routes that try a
//! credential.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post, MethodRouter};
use axum::Router;
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::{Method, StatusCode};

use crate::app::{is_json_content_type, ApiError, App, ClientAddr, Req, Resp};
use crate::handlers as h;

/// The listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// `--listen`: the API, the portal, `/healthz`, and `/metrics` unless
    /// `--metrics-listen` gives it a listener of its own.
    Main,
    /// `--metrics-listen`: `/metrics` and `/healthz` only.
    Metrics,
}

/// Low-cardinality labels for metrics and logs, by route: the router's own path
/// templates, matched the way axum's router matches them (matchit). Looked up before
/// anything else happens, so an answer given before routing (413, 408, a timeout) is
/// labelled by its route too.
#[derive(Default)]
pub struct Labels(matchit::Router<&'static str>);

impl Labels {
    /// The label of the route `path` matches; "other" for the rest (the portal, unknown
    /// paths).
    pub fn of(&self, path: &str) -> &'static str {
        self.0.at(path).map_or("other", |m| *m.value)
    }

    fn add(&mut self, path: &'static str, label: &'static str) {
        if let Err(e) = self.0.insert(path, label) {
            unreachable!("the router has accepted {path}: {e}");
        }
    }
}

/// Routes and their labels, built together so each route is declared once.
struct Table {
    router: Router<App>,
    labels: Labels,
}

impl Table {
    fn new() -> Table {
        Table {
            router: Router::new(),
            labels: Labels::default(),
        }
    }

    fn route(mut self, path: &'static str, label: &'static str, m: MethodRouter<App>) -> Table {
        self.router = self.router.route(path, m);
        self.labels.add(path, label);
        self
    }
}

/// A handler's answer as the router's.
fn answer(r: Result<Resp, ApiError>) -> Response {
    r.unwrap_or_else(ApiError::into_resp).into_response()
}

/// An API handler `h(&App, Req)` as an axum handler, under the API's JSON-only rule.
macro_rules! api {
    ($h:path) => {
        |State(app): State<App>, req: Req| async move {
            match json_only(&req) {
                Ok(()) => answer($h(&app, req).await),
                Err(e) => e.into_response(),
            }
        }
    };
}

/// An OpenID Connect handler `h(&App, Req)` (form bodies, OAuth's JSON errors).
macro_rules! oidc {
    ($h:path) => {
        |State(app): State<App>, req: Req| async move { answer($h(&app, req).await) }
    };
}

/// An admin handler `h(&App, Req, name)` of a `/v1/admin/users/{name}…` route: the
/// name is the path's fifth segment, percent-decoded.
macro_rules! named {
    ($h:path) => {
        |State(app): State<App>, req: Req| async move {
            let name =
                json_only(&req).and_then(|()| decode(req.path.split('/').nth(4).unwrap_or("")));
            match name {
                Ok(name) => answer($h(&app, req, name).await),
                Err(e) => e.into_response(),
            }
        }
    };
}

/// The router of one listener and the labels of its routes.
pub fn router(app: &App, door: Door) -> (Router<App>, Labels) {
    let mut t = Table::new()
        .route("/healthz", "healthz", get(healthz))
        .route("/readyz", "readyz", get(readyz));
    t = if door == Door::Metrics || app.config.metrics_listen.is_none() {
        t.route("/metrics", "metrics", get(metrics))
    } else {
        // With a metrics listener of its own, the main one has no /metrics at all.
        t.route("/metrics", "metrics", any(not_found))
    };
    if door == Door::Metrics {
        return (t.router.fallback(not_found), t.labels);
    }

    // The credential steps: one rate limiter, built once, on each.
    let guard = middleware::from_fn_with_state(app.clone(), credential_step);
    let credential = |m: MethodRouter<App>| m.route_layer(guard.clone());
    let api = Table {
        router: Router::new(),
        labels: t.labels,
    }
    .route("/v1/login", "login", credential(post(api!(h::login))))
    .route(
        "/v1/login/terms",
        "login_terms",
        credential(post(api!(h::login_terms))),
    )
    .route(
        "/v1/login/password",
        "login_password",
        credential(post(api!(h::login_password))),
    )
    .route(
        "/v1/login/enroll",
        "login_enroll",
        credential(post(api!(h::login_enroll))),
    )
    .route(
        "/v1/login/enroll/confirm",
        "login_enroll_confirm",
        credential(post(api!(h::login_enroll_confirm))),
    )
    .route(
        "/v1/login/totp",
        "login_totp",
        credential(post(api!(h::login_totp))),
    )
    .route(
        "/v1/login/recovery",
        "login_recovery",
        credential(post(api!(h::login_recovery))),
    )
    .route(
        "/v1/login/email",
        "login_email",
        credential(post(api!(h::login_email))),
    )
    .route(
        "/v1/login/email/resend",
        "login_email_resend",
        credential(post(api!(h::login_email_resend))),
    )
    .route(
        "/v1/login/passkey",
        "login_passkey",
        credential(post(api!(crate::passkeys::login))),
    )
    .route(
        "/v1/login/passkey/options",
        "login_passkey_options",
        credential(post(api!(crate::passkeys::login_options))),
    )
    .route(
        "/v1/session",
        "session",
        get(|State(app): State<App>, req: Request| async move {
            answer(h::session(&app, req.headers()).await)
        }),
    )
    .route("/v1/logout", "logout", post(api!(h::logout)))
    .route("/v1/password/policy", "password", get(password_policy))
    .route(
        "/v1/password/check",
        "password",
        post(api!(h::password_check)),
    )
    .route(
        "/v1/password/change",
        "password",
        credential(post(api!(h::password_change))),
    )
    .route(
        "/v1/password/forgot",
        "password",
        credential(post(api!(h::password_forgot))),
    )
    .route(
        "/v1/password/forgot/reset",
        "password",
        credential(post(api!(h::password_forgot_reset))),
    )
    .route(
        "/v1/password/reset",
        "password",
        credential(post(api!(h::password_reset_link))),
    )
    .route(
        "/v1/me/security-questions",
        "me",
        get(api!(h::get_security_questions)).put(api!(h::set_security_questions)),
    )
    .route("/v1/me/security", "me", get(api!(h::me_security)))
    .route("/v1/me/reauth", "me", credential(post(api!(h::me_reauth))))
    .route(
        "/v1/me/recovery-codes",
        "me",
        post(api!(h::me_recovery_codes)),
    )
    .route("/v1/me/totp/remove", "me", post(api!(h::me_totp_remove)))
    .route("/v1/me/totp", "me", post(api!(h::me_totp_add)))
    .route(
        "/v1/me/totp/{name}",
        "me",
        delete(named!(h::me_totp_delete)),
    )
    .route(
        "/v1/me/totp/{name}/confirm",
        "me",
        credential(post(named!(h::me_totp_confirm))),
    )
    .route(
        "/v1/me/sessions/revoke-others",
        "me",
        post(api!(h::me_sessions_revoke_others)),
    )
    .route(
        "/v1/me/sessions/{name}/revoke",
        "me",
        post(named!(h::me_session_revoke)),
    )
    .route(
        "/v1/me/devices/revoke-all",
        "me",
        post(api!(h::me_devices_revoke_all)),
    )
    .route(
        "/v1/me/devices/{name}/revoke",
        "me",
        post(named!(h::me_device_revoke)),
    )
    .route(
        "/v1/me/passkeys",
        "me",
        get(api!(crate::passkeys::list)).post(api!(crate::passkeys::add)),
    )
    .route(
        "/v1/me/passkeys/options",
        "me",
        post(api!(crate::passkeys::options)),
    )
    .route(
        "/v1/me/passkeys/{id}",
        "me",
        delete(named!(crate::passkeys::remove)).patch(named!(crate::passkeys::rename)),
    )
    .route("/v1/admin/users", "admin", get(api!(h::admin_users)))
    .route(
        "/v1/admin/users/{name}",
        "admin",
        get(named!(h::admin_user)),
    )
    .route(
        "/v1/admin/users/{name}/unlock",
        "admin",
        post(named!(h::admin_unlock)),
    )
    .route(
        "/v1/admin/users/{name}/reset-2fa",
        "admin",
        post(named!(h::admin_reset_2fa)),
    )
    .route("/v1/admin/audit", "admin", get(api!(h::admin_audit)))
    .route(
        "/v1/auth/verify",
        "other",
        get(|State(app): State<App>, req: Request| async move {
            answer(crate::portal::verify(&app, req).await)
        }),
    )
    // OpenID Connect for relying parties (daemon/oidc.rs); the browser's side
    // (/oidc/authorize, /oidc/consent, /oidc/logout) is the portal's.
    .route(
        "/.well-known/openid-configuration",
        "oidc",
        get(|State(app): State<App>, req: Req| async move {
            answer(crate::oidc::discovery(&app, req).await)
        }),
    )
    .route(
        "/oidc/jwks",
        "oidc",
        get(|State(app): State<App>| async move { answer(crate::oidc::jwks(&app).await) }),
    )
    .route("/oidc/token", "oidc_token", post(oidc!(crate::oidc::token)))
    .route(
        "/oidc/userinfo",
        "oidc",
        get(oidc!(crate::oidc::userinfo)).post(oidc!(crate::oidc::userinfo)),
    )
    .route("/oidc/revoke", "oidc", post(oidc!(crate::oidc::revoke)))
    .route(
        "/oidc/introspect",
        "oidc",
        post(oidc!(crate::oidc::introspect)),
    )
    // Nothing else under /v1 is a page.
    .route("/v1", "other", any(api_not_found))
    .route("/v1/", "other", any(api_not_found))
    .route("/v1/{*rest}", "other", any(api_not_found));
    let router = t
        .router
        .merge(api.router)
        // Everything else is the browser portal (pages, forms, assets).
        .fallback(portal);
    (router, api.labels)
}

async fn healthz(State(app): State<App>) -> Response {
    answer(h::healthz(&app).await)
}

async fn readyz(State(app): State<App>) -> Response {
    answer(h::readyz(&app).await)
}

async fn metrics(State(app): State<App>, req: Req) -> Response {
    answer(h::metrics(&app, &req))
}

async fn password_policy(State(app): State<App>, req: Req) -> Response {
    answer(h::password_policy(&app, req).await)
}

async fn portal(State(app): State<App>, req: Req) -> Response {
    answer(crate::portal::route(&app, req).await)
}

async fn not_found() -> Response {
    ApiError::not_found().into_response()
}

async fn api_not_found(req: Req) -> Response {
    json_only(&req)
        .and(Err(ApiError::not_found()))
        .unwrap_or_else(ApiError::into_resp)
        .into_response()
}

/// The API reads JSON only (415 `unsupported_media_type` otherwise), so that a
/// cross-site form post (which a browser sends without asking, as
/// `application/x-www-form-urlencoded`, `multipart/form-data` or `text/plain`) can never
/// drive it: a write to `/v1/` with a body needs the JSON content type (body-less ones
/// such as `POST /v1/logout` need no Content-Type when their body is empty; the
/// credential steps need it always, see [`credential_step`]). Checked by each API route
/// before its handler; the handlers' [`Req::json`] checks the same again.
fn json_only(req: &Req) -> Result<(), ApiError> {
    let writes = matches!(
        req.method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if writes && !req.body.is_empty() && !is_json_content_type(&req.headers) {
        return Err(ApiError::unsupported_media_type());
    }
    Ok(())
}

/// Every step that tries a credential (`POST /v1/login…`, `/v1/password/forgot…`,
/// `/v1/password/change`): the JSON content type whatever the body (415), then the
/// per-client rate limit (429 `rate_limited` with `Retry-After`). A refused post spends
/// nothing of the client's budget.
async fn credential_step(State(app): State<App>, req: Request, next: Next) -> Response {
    if !is_json_content_type(req.headers()) {
        return ApiError::unsupported_media_type().into_response();
    }
    if let Some(addr) = req.extensions().get::<ClientAddr>() {
        if let Err(wait) = app.limiter.check(addr.ip, Instant::now()) {
            return rate_limited(wait).into_response();
        }
    }
    next.run(req).await
}

/// 429 `rate_limited`, with `Retry-After` and `retry_after` in whole seconds.
fn rate_limited(wait: std::time::Duration) -> Resp {
    let secs = retry_after_secs(wait);
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        &format!("too many login attempts from this address; retry in {secs} s"),
    );
    e.extra = Some(serde_json::json!({ "retry_after": secs }));
    let mut resp = e.into_resp();
    resp.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs));
    resp
}

/// Whole seconds to wait, rounded up, at least 1.
fn retry_after_secs(wait: std::time::Duration) -> u64 {
    let s = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    s.max(1)
}

/// A percent-decoded path segment (a username); invalid UTF-8 is bad input.
fn decode(seg: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(seg)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::bad_request("the path is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        use std::time::Duration;
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn labels_of_routes() {
        let mut l = Labels::default();
        l.add("/v1/login/terms", "login_terms");
        l.add("/v1/admin/users/{name}", "admin");
        l.add("/v1/{*rest}", "other");
        assert_eq!(l.of("/v1/login/terms"), "login_terms");
        assert_eq!(l.of("/v1/admin/users/a%20b"), "admin");
        assert_eq!(l.of("/v1/login/terms/x"), "other");
        assert_eq!(l.of("/login"), "other");
    }
}
