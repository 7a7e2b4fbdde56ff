//! The shared state of the daemon and the request/response types handlers use.
//!
//! The daemon decides nothing itself: every step is a method of the core
//! ([`authcore::Core`]), and blocking work never runs on the reactor. [`App::call`] runs
//! a blocking core method on the blocking pool under the database admission bound,
//! [`App::call_hashing`] does the same while holding one of a fixed number of password
//! permits (twice the hashing slots of `authcore::password`, which run
//! `--hash-concurrency` hashes at a time), so a flood of password logins queues instead
//! of allocating argon2's memory without bound, and [`App::write`] queues a core's write
//! step on its group-commit writer and awaits its answer.

use std::sync::Arc;

use authcore::core::Core;
use authcore::crypto::SecretKey;
use authcore::group_commit::{Step, WriteStep};
use authcore::login::Client;
use authcore::session_cache::{Checked, Lookup};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;

pub type Resp = Response<Full<Bytes>>;

/// Reset-link requests made after their answer, at most this many at once
/// ([`Inner::link_queue`]).
pub const LINK_QUEUE: usize = 1024;

pub struct Inner {
    /// The settings read at start-up (what SIGHUP may change is in [`Inner::live`]).
    pub config: Config,
    /// The settings SIGHUP reads again while authd serves (daemon/reload.rs).
    pub live: std::sync::RwLock<Arc<Live>>,
    /// The core: database, writer, session cache, key and clock.
    pub core: Core,
    pub hash_permits: Semaphore,
    pub db_permits: Semaphore,
    /// Reset-link requests made after their answer (`password.recovery=link`): at most
    /// this many pending at once (handlers::forgot_start); this daemon's own, like the
    /// permits above.
    pub link_queue: Arc<Semaphore>,
    pub metrics: Metrics,
    pub limiter: RateLimiter,
    /// Where one-time codes and notices are mailed; None when mail is not configured
    /// ([`Inner::mailer`]; a SIGHUP may replace it).
    mailer: std::sync::RwLock<Option<Arc<crate::mail::Mailer>>>,
    /// The bearer token `/metrics` asks for (`--metrics-token-file`); None: open.
    pub metrics_token: Option<crate::metrics::MetricsToken>,
}

/// The settings a SIGHUP may change while authd serves: the forward-auth rules and the
/// answer for hosts no rule names, the allowed redirect origins (and what derives from
/// them: the portal's CSP), the rate limits and the mail settings. Requests take the
/// current ones when they start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub forward_auth_rules: Vec<crate::config::ForwardAuthRule>,
    pub forward_auth_default: crate::config::DefaultAccess,
    /// `allowed_redirect_origins` as configured.
    pub redirect_origins: Vec<String>,
    /// The origins a login may end at (and `next` may name): the configured ones and the
    /// public URL's.
    pub allowed_origins: Vec<String>,
    /// The portal pages' `Content-Security-Policy` (its `form-action` names the allowed
    /// origins); None only if it were not a valid header.
    pub csp: Option<HeaderValue>,
    /// The credential steps' per-address limit (the limiter is told when they change).
    pub rate_limit_per_minute: u32,
    pub rate_limit_burst: u32,
    /// Where mail goes (the mailer in use is built from these).
    pub mail: MailSettings,
}

/// The mail settings: `smtp_url` (may hold a password: never logged), `mail_dir`,
/// `mail_from`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailSettings {
    pub smtp_url: Option<String>,
    pub mail_dir: Option<std::path::PathBuf>,
    pub mail_from: Option<String>,
}

impl MailSettings {
    pub fn of(config: &Config) -> MailSettings {
        MailSettings {
            smtp_url: config.smtp_url.clone(),
            mail_dir: config.mail_dir.clone(),
            mail_from: config.mail_from.clone(),
        }
    }

    /// The mailer of these settings (None: mail is off).
    pub fn mailer(&self) -> Result<Option<crate::mail::Mailer>, String> {
        crate::mail::Mailer::from_config(
            self.smtp_url.as_deref(),
            self.mail_dir.as_deref(),
            self.mail_from.as_deref(),
        )
    }
}

impl Live {
    pub fn of(config: &Config) -> Live {
        let mut allowed = config.allowed_redirect_origins.clone();
        if let Some(p) = &config.public_url {
            if !allowed.contains(&p.origin) {
                allowed.push(p.origin.clone());
            }
        }
        // Forms may end in a redirect to an allowed origin: form-action must allow it.
        let csp = HeaderValue::from_str(&crate::portal::security::csp(&allowed)).ok();
        Live {
            forward_auth_rules: config.forward_auth_rules.clone(),
            forward_auth_default: config.forward_auth_default,
            redirect_origins: config.allowed_redirect_origins.clone(),
            allowed_origins: allowed,
            csp,
            rate_limit_per_minute: config.rate_limit_per_minute,
            rate_limit_burst: config.rate_limit_burst,
            mail: MailSettings::of(config),
        }
    }
}

impl Inner {
    /// The live settings now.
    pub fn live(&self) -> Arc<Live> {
        match self.live.read() {
            Ok(l) => Arc::clone(&l),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Replace the live settings (a SIGHUP); the rate limiter takes the new limits.
    pub fn set_live(&self, live: Live) {
        self.limiter
            .set_limits(live.rate_limit_per_minute, live.rate_limit_burst);
        match self.live.write() {
            Ok(mut l) => *l = Arc::new(live),
            Err(p) => *p.into_inner() = Arc::new(live),
        }
    }

    /// The mailer in use now (None: mail is off). A delivery keeps the one it started
    /// with when a SIGHUP replaces it.
    pub fn mailer(&self) -> Option<Arc<crate::mail::Mailer>> {
        match self.mailer.read() {
            Ok(m) => m.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replace the mailer (a SIGHUP with new mail settings).
    pub fn set_mailer(&self, mailer: Option<crate::mail::Mailer>) {
        let mailer = mailer.map(Arc::new);
        match self.mailer.write() {
            Ok(mut m) => *m = mailer,
            Err(p) => *p.into_inner() = mailer,
        }
    }
}

/// Cheap to clone; one per connection task.
#[derive(Clone)]
pub struct App(pub Arc<Inner>);

impl std::ops::Deref for App {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl App {
    pub fn new(config: Config, key: SecretKey) -> std::io::Result<App> {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let hashers = config.hash_concurrency.unwrap_or(cores).max(1);
        // Hashes run `hashers` at a time (the core's hashing slots); twice as many
        // password requests may be past the door, so the next one has done its database
        // reads and waits at a slot when a hash ends.
        let hashing = authcore::password::Hashing::new(hashers);
        let core = Core::start(&config.db, key, hashing, Core::system_clock())?;
        if let Some(p) = &config.breached_passwords {
            // Checked at start-up already; this core's own list (see CoreList).
            core.set_breached_list(p)
                .map_err(|e| std::io::Error::other(format!("breached_passwords: {e}")))?;
        }
        if let Some(p) = &config.passkeys {
            // Explicit settings were checked by Config::resolve; settings derived from
            // --public-url leave passkeys off when its origin cannot have them.
            match p.relying_party() {
                Ok(rp) => {
                    core.set_relying_party(rp);
                }
                Err(e) => tracing::warn!("passkeys are off: {e}"),
            }
        }
        Ok(App(Arc::new(Inner {
            core,
            hash_permits: Semaphore::new(hashers * 2),
            db_permits: Semaphore::new(config.db_concurrency.max(1)),
            link_queue: Arc::new(Semaphore::new(LINK_QUEUE)),
            metrics: Metrics::new(),
            limiter: RateLimiter::new(config.rate_limit_per_minute, config.rate_limit_burst),
            mailer: std::sync::RwLock::new(None),
            metrics_token: None,
            live: std::sync::RwLock::new(Arc::new(Live::of(&config))),
            config,
        })))
    }

    /// Set the mailer (at start-up).
    pub fn with_mailer(self, mailer: Option<crate::mail::Mailer>) -> App {
        self.set_mailer(mailer);
        self
    }

    /// Set the metrics token (at start-up, before the app is shared).
    pub fn with_metrics_token(mut self, token: Option<crate::metrics::MetricsToken>) -> App {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.metrics_token = token;
        }
        self
    }

    /// Run a decision of the core (a blocking [`Core`] method) on the blocking pool,
    /// under the database admission bound (`--db-concurrency`).
    pub async fn call<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Core) -> authcore::Result<T> + Send + 'static,
    {
        let _permit = self
            .db_permits
            .acquire()
            .await
            .map_err(|_| ApiError::unavailable())?;
        let core = self.core.clone();
        tokio::task::spawn_blocking(move || f(&core))
            .await
            .map_err(|_| ApiError::internal())?
            .map_err(ApiError::from)
    }

    /// Like [`App::call`], holding a hashing permit for the duration: for the core's
    /// methods that hash a password.
    pub async fn call_hashing<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Core) -> authcore::Result<T> + Send + 'static,
    {
        let _permit = self
            .hash_permits
            .acquire()
            .await
            .map_err(|_| ApiError::unavailable())?;
        self.call(f).await
    }

    /// Run a write step of the core (`core.totp_step(…)` and the like) on its
    /// group-commit writer (see writer.rs): for short steps that write and never hash a
    /// password.
    pub async fn write<S: Step>(&self, step: WriteStep<S>) -> Result<S::Output, ApiError> {
        Ok(crate::writer::write(&self.core, step).await?)
    }

    /// The live session of `token` now (the core's clock), or None: from memory (the
    /// core's session cache), else from the database on the blocking pool.
    pub async fn check_session(&self, token: &str) -> Result<Option<Arc<Checked>>, ApiError> {
        let now = self.core.now();
        let ticket = match self.core.lookup_session(token, now) {
            Lookup::Hit(c) => return Ok(Some(c)),
            Lookup::Miss(t) => t,
        };
        let token = token.to_string();
        self.call(move |core| core.finish_session_check(ticket, &token, now))
            .await
    }

    /// The portal's address for links in mail: `--public-url`, else the listener's.
    pub fn link_base(&self, listening: std::net::SocketAddr) -> String {
        match &self.config.public_url {
            Some(p) => format!("{}{}", p.origin, p.base),
            None => format!("http://{listening}"),
        }
    }

    /// Drain the outbox of mailed notices forever (a background task; nothing to do
    /// while there is no mailer, and the mailer in use at each round). A link notice's
    /// `{link}` becomes `LINK_BASE/reset?token=TOKEN` (see [`App::link_base`]), in memory
    /// only.
    pub fn spawn_outbox(&self, link_base: String) {
        let app = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(crate::mail::OUTBOX_POLL).await;
                let Some(mailer) = app.mailer() else {
                    continue;
                };
                let due = app
                    .call(|core| core.due_notices(crate::mail::OUTBOX_BATCH))
                    .await;
                let Ok(due) = due else { continue };
                for n in due {
                    let body = match &n.link_token {
                        Some(token) => n.body.replace(
                            authcore::store::email::LINK_PLACEHOLDER,
                            &authcore::reset_link::link(&link_base, token),
                        ),
                        None => n.body.clone(),
                    };
                    let r = mailer.send(&n.recipient, &n.subject, &body).await;
                    let id = n.id;
                    let res = app
                        .call(move |core| match &r {
                            Ok(()) => core.notice_sent(id),
                            Err(e) => core.notice_failed(id, e, crate::mail::OUTBOX_MAX_ATTEMPTS),
                        })
                        .await;
                    if let Err(e) = res {
                        tracing::warn!(notice = id, error = %e.message, "cannot record a notice's delivery");
                    }
                }
            }
        });
    }
}

/// Where a request came from: the TCP peer and the client (see `server::client_ip`), both
/// canonical, and when its head was read (the start of its `--request-timeout`). Set by
/// `server::Observe` for the body's deadline, the rate limit and the handlers' [`Req`].
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr {
    pub peer: std::net::IpAddr,
    pub ip: std::net::IpAddr,
    pub(crate) started: tokio::time::Instant,
}

/// The token of an `Authorization: Bearer TOKEN` header (None without one, or empty).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// One parsed request.
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub client: Client,
    /// The address of the TCP peer (a proxy, when there is one).
    pub peer: std::net::IpAddr,
    pub body: Bytes,
}

impl Req {
    /// The body as JSON of type T: a declared JSON content type (else 415, see
    /// [`is_json_content_type`]), then every way the body can be wrong is a clear 400.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if !is_json_content_type(&self.headers) {
            return Err(ApiError::unsupported_media_type());
        }
        if self.body.is_empty() {
            return Err(ApiError::bad_request("the request needs a JSON body"));
        }
        let text = std::str::from_utf8(&self.body)
            .map_err(|_| ApiError::bad_request("the body is not valid UTF-8"))?;
        // Duplicate keys are ambiguous: the bodies' derived Deserialize (every one with
        // deny_unknown_fields) refuses them ("duplicate field") rather than pick one.
        serde_json::from_str(text).map_err(|e| {
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            ApiError::bad_request(&format!("invalid JSON body: {msg}"))
        })
    }

    /// The Bearer token of the Authorization header.
    pub fn bearer(&self) -> Option<&str> {
        bearer(&self.headers)
    }

    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Whether the request declares a JSON body: exactly one `Content-Type` header whose
/// media type is `application/json` (in any case), with no parameter but an optional
/// `charset=utf-8`. Anything else — missing, `text/plain`, the form encodings a
/// cross-site page can post without asking (`application/x-www-form-urlencoded`,
/// `multipart/form-data`, `text/plain`), `application/json-seq`, another charset — is
/// not: a no-cors form post from another site can never drive the API.
pub fn is_json_content_type(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|param| {
        let param = param.trim();
        param.is_empty()
            || param.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("charset")
                    && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            })
    })
}

/// An error answer: status + `{"error": code, "message": text}` (+ extra fields).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub extra: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: &str) -> ApiError {
        ApiError {
            status,
            code,
            message: message.to_string(),
            extra: None,
        }
    }
    pub fn bad_request(message: &str) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }
    /// 415: the body is not declared as JSON (see [`is_json_content_type`]).
    pub fn unsupported_media_type() -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON, with the header Content-Type: application/json",
        )
    }
    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid session is required",
        )
    }
    pub fn unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service cannot decide right now; try again",
        )
    }
    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    pub fn into_resp(self) -> Resp {
        let mut body = serde_json::json!({"error": self.code, "message": self.message});
        if let (Some(serde_json::Value::Object(extra)), Some(obj)) =
            (self.extra, body.as_object_mut())
        {
            for (k, v) in extra {
                obj.insert(k, v);
            }
        }
        json_resp(self.status, &body)
    }
}

impl From<authcore::group_commit::WriteError> for ApiError {
    fn from(e: authcore::group_commit::WriteError) -> ApiError {
        use authcore::group_commit::WriteError as W;
        match e {
            W::Step(e) => ApiError::from(e),
            W::Unavailable => ApiError::unavailable(),
            W::Panicked => ApiError::internal(),
        }
    }
}

impl From<authcore::Error> for ApiError {
    fn from(e: authcore::Error) -> ApiError {
        use authcore::Error as E;
        let status = match &e {
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::Conflict(_) => StatusCode::CONFLICT,
            E::Policy { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            E::Invalid(_) => StatusCode::BAD_REQUEST,
            E::InvalidCredentials | E::InvalidFlow => StatusCode::UNAUTHORIZED,
            E::Forbidden(_) => StatusCode::FORBIDDEN,
            E::TooSoon { .. } => StatusCode::TOO_MANY_REQUESTS,
            E::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            E::Key(_) | E::Db(_) | E::Io(_) => {
                tracing::error!(error = %e, "request failed");
                return ApiError::unavailable();
            }
        };
        let extra = match &e {
            E::Policy { rules, .. } => Some(serde_json::json!({"rules": rules})),
            E::TooSoon { retry_after, .. } => Some(serde_json::json!({"retry_after": retry_after})),
            _ => None,
        };
        ApiError {
            status,
            code: e.code(),
            message: e.to_string(),
            extra,
        }
    }
}

/// A JSON answer. Nothing the daemon says may be cached: answers carry tokens.
pub fn json_resp<T: Serialize + ?Sized>(status: StatusCode, v: &T) -> Resp {
    let body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    json_bytes_resp(status, Bytes::from(body))
}

/// A JSON answer from bytes serialised already (the session cache's answers).
pub fn json_bytes_resp(status: StatusCode, body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A plain-text answer (health, metrics).
pub fn text_resp(status: StatusCode, content_type: &'static str, body: String) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// An empty answer (204 No Content).
pub fn empty_resp(status: StatusCode) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        username: String,
        password: String,
        #[serde(default)]
        device_token: Option<String>,
    }

    fn req(body: Vec<u8>) -> Req {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Req {
            method: Method::POST,
            path: "/v1/login".into(),
            query: vec![],
            headers,
            client: Client::default(),
            peer: std::net::Ipv4Addr::LOCALHOST.into(),
            body: Bytes::from(body),
        }
    }

    #[test]
    fn bad_bodies_are_clear_400s() {
        let cases: &[&[u8]] = &[
            b"",
            b"{",
            b"[]",
            b"null",
            b"{\"username\":1,\"password\":\"x\"}",
            b"{\"username\":[\"a\"],\"password\":\"x\"}",
            b"{\"username\":\"a\"}",
            b"{\"username\":\"a\",\"password\":\"x\",\"extra\":1}",
            b"{\"username\":\"a\",\"username\":\"b\",\"password\":\"x\"}",
            b"{\"username\":\"\xff\xfe\",\"password\":\"x\"}",
            b"{\"username\":\"a\",\"password\":\"x\"} trailing",
        ];
        for c in cases {
            let e = req(c.to_vec()).json::<Body>().unwrap_err();
            assert_eq!(
                e.status,
                StatusCode::BAD_REQUEST,
                "{:?}",
                String::from_utf8_lossy(c)
            );
            assert!(!e.message.is_empty());
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            req(deep.into_bytes()).json::<Body>().unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        let ok = req(b"{\"username\":\"a\",\"password\":\"x\"}".to_vec()).json::<Body>();
        assert!(ok.is_ok());
    }

    #[test]
    fn only_json_content_types_are_json() {
        let body = b"{\"username\":\"a\",\"password\":\"x\"}".to_vec();
        let with = |values: &[&str]| {
            let mut r = req(body.clone());
            r.headers.remove(CONTENT_TYPE);
            for v in values {
                r.headers
                    .append(CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
            }
            r
        };
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
            "application/json ; charset=\"utf-8\"",
            "application/json;",
        ] {
            assert!(is_json_content_type(&with(&[ok]).headers), "{ok}");
            assert!(with(&[ok]).json::<Body>().is_ok(), "{ok}");
        }
        for bad in [
            &[][..],
            &["text/plain"],
            &["text/plain; charset=utf-8"],
            &["application/x-www-form-urlencoded"],
            &["multipart/form-data; boundary=x"],
            &["application/json-seq"],
            &["application/jsonx"],
            &["application/json; charset=latin1"],
            &["application/json; boundary=x"],
            &["application/json, text/plain"],
            &["application/json", "application/json"],
            &["text/json"],
            &[""],
        ] {
            assert!(!is_json_content_type(&with(bad).headers), "{bad:?}");
            let e = with(bad).json::<Body>().unwrap_err();
            assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{bad:?}");
            assert_eq!(e.code, "unsupported_media_type");
        }
        // Not even an empty body is read without the type.
        let mut r = with(&[]);
        r.body = Bytes::new();
        assert_eq!(
            r.json::<Body>().unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_bytes(b"application/json\xff").unwrap(),
        );
        assert!(!is_json_content_type(&h));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_body_parses_or_is_refused_without_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = req(body).json::<Body>();
        }

        #[test]
        fn json_shaped_bodies_never_panic(s in "\\{(\"[a-z_]{0,10}\":(\"\\PC{0,10}\"|[0-9]{1,3}|null|\\[\\]|\\{\\}),?){0,5}\\}") {
            let _ = req(s.into_bytes()).json::<Body>();
        }
    }
}
