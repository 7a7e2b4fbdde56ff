//! The one routing function: `match (method, path)`.

use hyper::header::HeaderMap;
use hyper::{Method, StatusCode};

use crate::app::{is_json_content_type, ApiError, App, Req, Resp};
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

/// A low-cardinality label for metrics and logs.
pub fn label(method: &Method, path: &str) -> &'static str {
    match (method.as_str(), path) {
        (_, "/healthz") => "healthz",
        (_, "/metrics") => "metrics",
        (_, "/v1/login") => "login",
        (_, "/v1/login/terms") => "login_terms",
        (_, "/v1/login/password") => "login_password",
        (_, "/v1/login/enroll") => "login_enroll",
        (_, "/v1/login/enroll/confirm") => "login_enroll_confirm",
        (_, "/v1/login/totp") => "login_totp",
        (_, "/v1/login/recovery") => "login_recovery",
        (_, "/v1/login/email") => "login_email",
        (_, "/v1/login/email/resend") => "login_email_resend",
        (_, "/v1/session") => "session",
        (_, "/v1/logout") => "logout",
        (_, p) if p.starts_with("/v1/password/") => "password",
        (_, p) if p.starts_with("/v1/me/") => "me",
        (_, p) if p.starts_with("/v1/admin/") => "admin",
        _ => "other",
    }
}

/// Whether the per-IP login rate limit applies: every request that tries a credential.
pub fn is_rate_limited(method: &Method, path: &str) -> bool {
    method == Method::POST
        && (path.starts_with("/v1/login")
            || path.starts_with("/v1/password/forgot")
            || path == "/v1/password/change")
}

/// The API reads JSON only (415 `unsupported_media_type` otherwise), so that a
/// cross-site form post (which a browser sends without asking, as
/// `application/x-www-form-urlencoded`, `multipart/form-data` or `text/plain`) can never
/// drive it: every credential step (the rate-limited routes) needs the JSON content
/// type whatever its body, and any other write to `/v1/` with a body needs it too
/// (body-less ones such as `POST /v1/logout` need no Content-Type when their body is
/// empty). Checked before the rate limiter: a refused post spends nothing of the
/// client's budget. The handlers' [`Req::json`] checks the same again.
pub fn body_refused(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body_len: usize,
) -> Option<ApiError> {
    let writes = matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let needs_json =
        is_rate_limited(method, path) || (writes && path.starts_with("/v1/") && body_len > 0);
    (needs_json && !is_json_content_type(headers)).then(ApiError::unsupported_media_type)
}

fn method_not_allowed(allow: &'static str) -> Result<Resp, ApiError> {
    let mut e = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("this resource answers {allow} only"),
    );
    e.extra = Some(serde_json::json!({"allow": allow}));
    Err(e)
}

pub async fn route(app: &App, req: Req, door: Door) -> Result<Resp, ApiError> {
    let path = req.path.clone();
    let m = req.method.clone();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let own_metrics_door = app.config.metrics_listen.is_some();
    match (door, m, segs.as_slice()) {
        (_, Method::GET | Method::HEAD, ["healthz"]) => h::healthz(app).await,
        (_, _, ["healthz"]) => method_not_allowed("GET"),
        // With a metrics listener of its own, the main one has no /metrics at all.
        (Door::Main, _, ["metrics"]) if own_metrics_door => Err(ApiError::not_found()),
        (_, Method::GET, ["metrics"]) => h::metrics(app, &req),
        (_, _, ["metrics"]) => method_not_allowed("GET"),
        (Door::Metrics, _, _) => Err(ApiError::not_found()),
        (Door::Main, m, segs) => route_main(app, req, m, segs).await,
    }
}

/// The API, forward-auth and the portal (the main listener).
async fn route_main(app: &App, req: Req, m: Method, segs: &[&str]) -> Result<Resp, ApiError> {
    match (m, segs) {
        (Method::POST, ["v1", "login"]) => h::login(app, req).await,
        (Method::POST, ["v1", "login", "terms"]) => h::login_terms(app, req).await,
        (Method::POST, ["v1", "login", "password"]) => h::login_password(app, req).await,
        (Method::POST, ["v1", "login", "enroll"]) => h::login_enroll(app, req).await,
        (Method::POST, ["v1", "login", "enroll", "confirm"]) => {
            h::login_enroll_confirm(app, req).await
        }
        (Method::POST, ["v1", "login", "totp"]) => h::login_totp(app, req).await,
        (Method::POST, ["v1", "login", "recovery"]) => h::login_recovery(app, req).await,
        (Method::POST, ["v1", "login", "email"]) => h::login_email(app, req).await,
        (Method::POST, ["v1", "login", "email", "resend"]) => h::login_email_resend(app, req).await,
        (
            _,
            ["v1", "login"]
            | ["v1", "login", "terms" | "password" | "enroll" | "totp" | "recovery" | "email"]
            | ["v1", "login", "enroll", "confirm"]
            | ["v1", "login", "email", "resend"],
        ) => method_not_allowed("POST"),

        (Method::GET, ["v1", "session"]) => h::session(app, req).await,
        (_, ["v1", "session"]) => method_not_allowed("GET"),
        (Method::POST, ["v1", "logout"]) => h::logout(app, req).await,
        (_, ["v1", "logout"]) => method_not_allowed("POST"),

        (Method::GET, ["v1", "password", "policy"]) => h::password_policy(app).await,
        (_, ["v1", "password", "policy"]) => method_not_allowed("GET"),
        (Method::POST, ["v1", "password", "check"]) => h::password_check(app, req).await,
        (Method::POST, ["v1", "password", "change"]) => h::password_change(app, req).await,
        (Method::POST, ["v1", "password", "forgot"]) => h::password_forgot(app, req).await,
        (Method::POST, ["v1", "password", "forgot", "reset"]) => {
            h::password_forgot_reset(app, req).await
        }
        (
            _,
            ["v1", "password", "check" | "change" | "forgot"]
            | ["v1", "password", "forgot", "reset"],
        ) => method_not_allowed("POST"),
        (Method::PUT, ["v1", "me", "security-questions"]) => {
            h::set_security_questions(app, req).await
        }
        (Method::GET, ["v1", "me", "security-questions"]) => {
            h::get_security_questions(app, req).await
        }
        (_, ["v1", "me", "security-questions"]) => method_not_allowed("GET, PUT"),

        (Method::GET, ["v1", "admin", "users"]) => h::admin_users(app, req).await,
        (Method::GET, ["v1", "admin", "users", name]) => {
            let name = decode(name)?;
            h::admin_user(app, req, name).await
        }
        (Method::POST, ["v1", "admin", "users", name, "unlock"]) => {
            let name = decode(name)?;
            h::admin_unlock(app, req, name).await
        }
        (Method::POST, ["v1", "admin", "users", name, "reset-2fa"]) => {
            let name = decode(name)?;
            h::admin_reset_2fa(app, req, name).await
        }
        (Method::GET, ["v1", "admin", "audit"]) => h::admin_audit(app, req).await,
        (_, ["v1", "admin", "users"] | ["v1", "admin", "users", _] | ["v1", "admin", "audit"]) => {
            method_not_allowed("GET")
        }
        (_, ["v1", "admin", "users", _, "unlock" | "reset-2fa"]) => method_not_allowed("POST"),
        (Method::GET | Method::HEAD, ["v1", "auth", "verify"]) => {
            crate::portal::verify(app, req).await
        }
        (_, ["v1", "auth", "verify"]) => method_not_allowed("GET"),
        (_, ["v1", ..]) => Err(ApiError::not_found()),
        // Everything else is the browser portal (pages, forms, assets).
        _ => crate::portal::route(app, req).await,
    }
}

/// A percent-decoded path segment (a username); invalid UTF-8 is bad input.
fn decode(seg: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(seg)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::bad_request("the path is not valid UTF-8"))
}
