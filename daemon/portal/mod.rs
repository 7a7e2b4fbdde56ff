//! The browser portal and forward-auth.
//!
//! Server-rendered pages for people (login with every step of the state machine,
//! forgotten password, security questions, the signed-in page with remembered devices,
//! the org-admin page) and `GET /v1/auth/verify` for reverse proxies. Every decision is
//! the core library's, exactly as for the JSON API; this module only speaks HTML forms.
//!
//! Conventions:
//! - Forms post `application/x-www-form-urlencoded`; every form carries a CSRF token
//!   ([`security`]). Login-flow tokens travel in hidden fields, never in URLs.
//! - Pages are askama templates (`daemon/templates/`, see [`html`]): every value is
//!   escaped for HTML by the template engine, never by hand.
//! - Pages are `Cache-Control: no-store`, framed by nobody, under a strict CSP (derived
//!   from the configuration once, [`Settings`]).
//! - Links are prefixed with the path of `--public-url` (a proxy may serve the portal
//!   below `/auth`, stripping the prefix before authd sees the request).
//! - A finished login answers `303 See Other` to the checked `next` target.

mod account;
mod flow;
mod forward;
pub mod html;
pub mod security;

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::Instant;

use askama::Template;
use authcore::login::SessionInfo;
use authcore::util::now;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, ORIGIN,
    REFERRER_POLICY, RETRY_AFTER, SET_COOKIE, X_FRAME_OPTIONS,
};
use hyper::{Method, Response, StatusCode};

use crate::app::{ApiError, App, Req, Resp};
use crate::config::Config;
use html::{Layout, Notice};
use security::{Binding, CookieName};

pub use forward::verify;

const CSS: &str = include_str!("assets/portal.css");
const JS: &str = include_str!("assets/portal.js");

/// Pages, forms and assets: every path outside `/v1/`, `/healthz` and `/metrics`.
pub async fn route(app: &App, req: Req) -> Result<Resp, ApiError> {
    let path = req.path.clone();
    let method = req.method.clone();
    let is_get = method == Method::GET || method == Method::HEAD;
    match path.as_str() {
        "/assets/portal.css" if is_get => return Ok(asset("text/css; charset=utf-8", CSS)),
        "/assets/portal.js" if is_get => return Ok(asset("text/javascript; charset=utf-8", JS)),
        "/favicon.ico" | "/robots.txt" if is_get => {
            let mut r = asset("text/plain; charset=utf-8", "");
            *r.status_mut() = StatusCode::NOT_FOUND;
            return Ok(r);
        }
        _ => {}
    }
    let mut ctx = Ctx::new(app, &req);
    let answer = if method == Method::POST {
        post(&mut ctx, &path).await
    } else if is_get {
        get(&mut ctx, &path).await
    } else {
        Ok(ctx.message_page(
            StatusCode::METHOD_NOT_ALLOWED,
            "Not allowed",
            "This page answers GET and POST only.",
        ))
    };
    // Unexpected trouble (the database is unavailable…) is still an HTML page.
    Ok(answer.unwrap_or_else(|e| {
        let title = if e.status.is_server_error() {
            "Please try again"
        } else {
            "Something went wrong"
        };
        ctx.message_page(e.status, title, &e.message)
    }))
}

async fn get(ctx: &mut Ctx<'_>, path: &str) -> Result<Resp, ApiError> {
    match path {
        "/" => account::home(ctx).await,
        "/login" => flow::login_page(ctx).await,
        "/terms" => flow::terms_page(ctx).await,
        "/forgot" => flow::forgot_page(ctx).await,
        "/logout" => account::logout_page(ctx).await,
        "/security-questions" => account::questions_page(ctx).await,
        "/admin" => account::admin_page(ctx).await,
        "/admin/user" => account::admin_user_page(ctx).await,
        _ => Ok(ctx.message_page(
            StatusCode::NOT_FOUND,
            "Page not found",
            "There is no page at this address.",
        )),
    }
}

async fn post(ctx: &mut Ctx<'_>, path: &str) -> Result<Resp, ApiError> {
    let form = match Form::parse(ctx.req) {
        Ok(f) => f,
        Err(resp) => return Ok(ctx.message_page(resp.0, "Bad request", resp.1)),
    };
    if !ctx.origin_ok() {
        return Ok(ctx.forbidden());
    }
    let credential = path.starts_with("/login") || path.starts_with("/forgot");
    if credential {
        if let Some(resp) = ctx.rate_limited() {
            return Ok(resp);
        }
    }
    match path {
        "/login" => flow::login_post(ctx, &form).await,
        "/login/terms" => flow::terms_post(ctx, &form).await,
        "/login/password" => flow::expired_post(ctx, &form).await,
        "/login/enroll/confirm" => flow::enroll_confirm_post(ctx, &form).await,
        "/login/totp" => flow::totp_post(ctx, &form).await,
        "/login/email" => flow::email_post(ctx, &form).await,
        "/login/email/resend" => flow::email_resend_post(ctx, &form).await,
        "/login/recovery" => flow::recovery_post(ctx, &form).await,
        "/forgot" => flow::forgot_post(ctx, &form).await,
        "/forgot/reset" => flow::forgot_reset_post(ctx, &form).await,
        "/logout" => account::logout_post(ctx, &form).await,
        "/devices/revoke" => account::revoke_device_post(ctx, &form).await,
        "/security-questions" => account::questions_post(ctx, &form).await,
        "/admin/unlock" => account::admin_action_post(ctx, &form, account::Action::Unlock).await,
        "/admin/reset-2fa" => {
            account::admin_action_post(ctx, &form, account::Action::Reset2fa).await
        }
        _ => Ok(ctx.message_page(
            StatusCode::NOT_FOUND,
            "Page not found",
            "There is no form at this address.",
        )),
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

/// A parsed form body. Single-valued fields given twice are refused as ambiguous.
pub(crate) struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    fn parse(req: &Req) -> Result<Form, (StatusCode, &'static str)> {
        if let Some(ct) = req.headers.get(CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            if !ct.starts_with("application/x-www-form-urlencoded") {
                return Err((
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "Send the form as application/x-www-form-urlencoded.",
                ));
            }
        }
        if std::str::from_utf8(&req.body).is_err() {
            return Err((StatusCode::BAD_REQUEST, "The form is not valid UTF-8."));
        }
        let pairs = form_urlencoded::parse(&req.body).into_owned().collect();
        Ok(Form { pairs })
    }

    /// The one value of `name` (None when missing or given twice).
    pub fn get(&self, name: &str) -> Option<&str> {
        let mut it = self.pairs.iter().filter(|(k, _)| k == name);
        let first = it.next()?;
        if it.next().is_some() {
            return None;
        }
        Some(first.1.as_str())
    }

    /// The value of `name`, or "".
    pub fn text(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }

    /// Every value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A tick-box: present with a value other than "0"/"false".
    pub fn ticked(&self, name: &str) -> bool {
        matches!(self.get(name), Some(v) if v != "0" && v != "false")
    }
}

/// What the portal derives from the configuration, once: the origins a login may end at
/// and the Content-Security-Policy of every page (which has no per-request part, such as
/// a nonce).
#[derive(Clone)]
pub(crate) struct Settings {
    /// What they were derived from: the configured origins and the public URL's.
    source: (Vec<String>, Option<String>),
    /// Origins a login may end at: the configured ones and the public URL's.
    pub allowed: Vec<String>,
    /// The `Content-Security-Policy` header (None only if it were not a valid header).
    pub csp: Option<HeaderValue>,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

impl Settings {
    fn source(config: &Config) -> (&[String], Option<&str>) {
        (
            &config.allowed_redirect_origins,
            config.public_url.as_ref().map(|p| p.origin.as_str()),
        )
    }

    fn derive(config: &Config) -> Settings {
        let (origins, public) = Settings::source(config);
        let mut allowed = origins.to_vec();
        if let Some(p) = public {
            if !allowed.iter().any(|a| a == p) {
                allowed.push(p.to_string());
            }
        }
        // Forms may end in a redirect to an allowed origin: form-action must allow it.
        let csp = HeaderValue::from_str(&security::csp(&allowed)).ok();
        Settings {
            source: (origins.to_vec(), public.map(str::to_string)),
            allowed,
            csp,
        }
    }

    /// The settings of `config`, derived at the first page and kept for the life of the
    /// process. A process serves one configuration; were another one served next to it
    /// (tests start several), its settings are derived for each of its requests.
    pub fn of(config: &Config) -> Cow<'static, Settings> {
        Settings::kept_in(&SETTINGS, config)
    }

    fn kept_in(cell: &'static OnceLock<Settings>, config: &Config) -> Cow<'static, Settings> {
        let kept = cell.get_or_init(|| Settings::derive(config));
        let (origins, public) = Settings::source(config);
        if kept.source.0 == origins && kept.source.1.as_deref() == public {
            Cow::Borrowed(kept)
        } else {
            Cow::Owned(Settings::derive(config))
        }
    }
}

/// One request's view of the portal: settings, cookies and what the answer will set.
pub(crate) struct Ctx<'a> {
    pub app: &'a App,
    pub req: &'a Req,
    /// The prefix of every link ("" or e.g. "/auth").
    pub base: &'a str,
    pub insecure: bool,
    /// The browser's CSRF cookie value (possibly new in this answer).
    pub browser: String,
    /// Whether the browser sent its CSRF cookie (a new one cannot match any token).
    browser_known: bool,
    set_cookies: Vec<String>,
    /// The allowed origins and the CSP.
    pub settings: Cow<'static, Settings>,
}

impl<'a> Ctx<'a> {
    fn new(app: &'a App, req: &'a Req) -> Ctx<'a> {
        let insecure = app.config.insecure_cookies;
        let existing = security::cookie(&req.headers, CookieName::Csrf.name(insecure));
        let mut set_cookies = Vec::new();
        let (browser, browser_known) = match existing {
            Some(b) => (b.to_string(), true),
            None => {
                let b = authcore::crypto::random_token();
                set_cookies.push(security::set_cookie(CookieName::Csrf, &b, None, insecure));
                (b, false)
            }
        };
        Ctx {
            app,
            req,
            base: app
                .config
                .public_url
                .as_ref()
                .map(|p| p.base.as_str())
                .unwrap_or_default(),
            insecure,
            browser,
            browser_known,
            set_cookies,
            settings: Settings::of(&app.config),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn cookie(&self, name: CookieName) -> Option<&'a str> {
        security::cookie(&self.req.headers, name.name(self.insecure))
    }

    pub fn set_cookie(&mut self, name: CookieName, value: &str, max_age: Option<i64>) {
        self.set_cookies
            .push(security::set_cookie(name, value, max_age, self.insecure));
    }

    pub fn query(&self, key: &str) -> Option<&'a str> {
        self.req.query(key)
    }

    /// The token for a form bound to this browser (and a flow, when given).
    pub fn csrf(&self, flow: Option<&str>) -> String {
        let b = match flow {
            Some(flow) => Binding::Flow {
                browser: &self.browser,
                flow,
            },
            None => Binding::Browser(&self.browser),
        };
        security::csrf_token(&self.app.key, b)
    }

    /// The token for a signed-in form.
    pub fn csrf_session(&self, session: &str) -> String {
        security::csrf_token(&self.app.key, Binding::Session(session))
    }

    /// Whether a posted form's token matches this browser (and flow).
    pub fn csrf_ok(&self, form: &Form, flow: Option<&str>) -> bool {
        if !self.browser_known {
            return false;
        }
        let b = match flow {
            Some(flow) => Binding::Flow {
                browser: &self.browser,
                flow,
            },
            None => Binding::Browser(&self.browser),
        };
        security::csrf_ok(&self.app.key, b, form.get("csrf"))
    }

    /// Whether a posted signed-in form's token matches the session.
    pub fn csrf_session_ok(&self, form: &Form, session: &str) -> bool {
        security::csrf_ok(&self.app.key, Binding::Session(session), form.get("csrf"))
    }

    /// A cross-origin POST is refused outright when the browser says where it came from
    /// (defence in depth next to the tokens). Same origin: the Host header, the public
    /// URL's origin, or an X-Forwarded-Host from a trusted proxy. `Origin: null` is
    /// refused like any other origin: it is what a sandboxed iframe, a `data:` or
    /// `file:` document or a cross-origin redirect chain sends, never one of our own
    /// pages (they are served with `Referrer-Policy: same-origin`, under which a
    /// browser sends the real origin). No Origin at all (older browsers, scripts) leaves
    /// the decision to the token.
    fn origin_ok(&self) -> bool {
        let Some(origin) = self.req.headers.get(ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        if origin.trim().eq_ignore_ascii_case("null") {
            return false;
        }
        if self
            .app
            .config
            .public_url
            .as_ref()
            .map(|p| p.origin.as_str())
            == Some(origin)
        {
            return true;
        }
        let Some((_, authority)) = origin.split_once("://") else {
            return false;
        };
        let host = |name: &str| {
            self.req
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(',').next().unwrap_or("").trim().to_string())
        };
        if host("host").is_some_and(|h| h.eq_ignore_ascii_case(authority)) {
            return true;
        }
        forward::peer_trusted(self.app, self.req)
            && host("x-forwarded-host").is_some_and(|h| h.eq_ignore_ascii_case(authority))
    }

    /// 429 when this address has tried too many credentials (the API's limiter).
    fn rate_limited(&mut self) -> Option<Resp> {
        let ip: std::net::IpAddr = self.req.client.ip.parse().ok()?;
        let wait = self.app.limiter.check(ip, Instant::now()).err()?;
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let secs = secs.max(1);
        let mut r = self.message_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts",
            &format!("Too many attempts from this address. Wait {secs} seconds and try again."),
        );
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        Some(r)
    }

    /// The signed-in session of this browser: (token, who).
    pub async fn session(&self) -> Result<Option<(String, SessionInfo)>, ApiError> {
        let Some(token) = self.cookie(CookieName::Session) else {
            return Ok(None);
        };
        let token = token.to_string();
        let t = token.clone();
        let info = self
            .app
            .db(move |conn, _| authcore::login::check_session(conn, &t, now()))
            .await?;
        Ok(info.map(|i| (token, i)))
    }

    /// What the layout of a page shows around its content: `user` is the signed-in user's
    /// name and the sign-out form's CSRF token.
    pub fn layout<'t>(
        &self,
        title: &'t str,
        notices: &'t [Notice],
        user: Option<(&'t str, &'t str)>,
    ) -> Layout<'t>
    where
        'a: 't,
    {
        Layout {
            base: self.base,
            title,
            user,
            notices,
        }
    }

    /// An HTML page: one of the templates (each extends `base.html`).
    pub fn page(&mut self, status: StatusCode, page: &impl Template) -> Resp {
        let (status, body) = match page.render() {
            Ok(body) => (status, body),
            Err(e) => {
                tracing::error!(error = %e, "a portal page could not be rendered");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong. Please try again.".to_string(),
                )
            }
        };
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        self.finish(&mut r);
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        r
    }

    /// A page with one message and a way back.
    pub fn message_page(&mut self, status: StatusCode, title: &str, message: &str) -> Resp {
        let notice = if status.is_success() {
            Notice::Info(message.to_string())
        } else {
            Notice::Error(message.to_string())
        };
        let notices = [notice];
        let page = MessagePage {
            layout: self.layout(title, &notices, None),
        };
        self.page(status, &page)
    }

    /// 403 for a form whose CSRF token (or origin) is wrong: nothing was done.
    pub fn forbidden(&mut self) -> Resp {
        self.message_page(
            StatusCode::FORBIDDEN,
            "Form expired",
            "This form could not be accepted (it is out of date or came from another site). \
             Nothing was changed. Go back, reload the page and try again.",
        )
    }

    /// 303 See Other to `location`.
    pub fn redirect(&mut self, location: &str) -> Resp {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SEE_OTHER;
        if let Ok(v) = HeaderValue::from_str(location) {
            r.headers_mut().insert(LOCATION, v);
        }
        self.finish(&mut r);
        r
    }

    fn finish(&mut self, r: &mut Resp) {
        let h = r.headers_mut();
        for c in self.set_cookies.drain(..) {
            if let Ok(v) = HeaderValue::from_str(&c) {
                h.append(SET_COOKIE, v);
            }
        }
        if let Some(v) = &self.settings.csp {
            h.insert(CONTENT_SECURITY_POLICY, v.clone());
        }
        h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // Nothing leaves for other sites; our own form posts keep a real Origin header
        // (under no-referrer, browsers send `Origin: null`).
        h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    }

    /// The checked `next` target of a login (a form field or the query), if safe.
    pub fn next_from(&self, raw: Option<&str>) -> Option<String> {
        raw.filter(|s| !s.is_empty())
            .and_then(|s| security::safe_redirect(s, &self.settings.allowed))
    }
}

/// A page with one message and a way back to the sign-in page.
#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    layout: Layout<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PublicUrl;

    fn config(origins: &[&str], public_url: Option<&str>) -> Config {
        Config {
            allowed_redirect_origins: origins.iter().map(|o| o.to_string()).collect(),
            public_url: public_url.map(|u| PublicUrl::parse(u).unwrap()),
            ..Config::default()
        }
    }

    #[test]
    fn the_csp_is_built_once_per_configuration() {
        static CELL: OnceLock<Settings> = OnceLock::new();
        let a = config(
            &["https://app.example.org"],
            Some("https://auth.example.org/auth"),
        );
        let first = Settings::kept_in(&CELL, &a);
        let second = Settings::kept_in(&CELL, &a.clone());
        // The same value, not an equal one built again.
        assert!(matches!(
            (&first, &second),
            (Cow::Borrowed(_), Cow::Borrowed(_))
        ));
        assert!(std::ptr::eq(&*first, &*second));
        let csp = first.csp.as_ref().unwrap();
        assert!(std::ptr::eq(csp, second.csp.as_ref().unwrap()));
        assert_eq!(
            csp.to_str().unwrap(),
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self' https://app.example.org https://auth.example.org; \
             frame-ancestors 'none'; base-uri 'none'"
        );
        assert_eq!(
            first.allowed,
            ["https://app.example.org", "https://auth.example.org"]
        );
        // Another configuration in the same process gets its own policy, not the kept one.
        let b = config(&[], None);
        let other = Settings::kept_in(&CELL, &b);
        assert!(matches!(other, Cow::Owned(_)));
        assert_eq!(other.csp.as_ref().unwrap().to_str().unwrap(), security::CSP);
        assert!(other.allowed.is_empty());
        assert!(std::ptr::eq(&*Settings::kept_in(&CELL, &a), &*first));
        // The public URL's origin is not repeated when it is also configured.
        let c = config(
            &["https://auth.example.org"],
            Some("https://auth.example.org/"),
        );
        assert_eq!(Settings::derive(&c).allowed, ["https://auth.example.org"]);
    }

    #[test]
    fn the_layout_escapes_everything_it_is_given() {
        let notices = [
            Notice::Error("<b>bad</b> & \"worse\"".into()),
            Notice::Info("it's <i>fine</i>".into()),
        ];
        let page = MessagePage {
            layout: Layout {
                base: "/a\"b",
                title: "T<i>",
                user: Some(("<u>", "tok\"en")),
                notices: &notices,
            },
        };
        let html = page.render().unwrap();
        assert!(
            html.contains("<title>T&#60;i&#62; · authd</title>"),
            "{html}"
        );
        assert!(html.contains("<h1>T&#60;i&#62;</h1>"));
        assert!(html.contains("<p>&#60;b&#62;bad&#60;/b&#62; &#38; &#34;worse&#34;</p>"));
        assert!(html.contains("<p>it&#39;s &#60;i&#62;fine&#60;/i&#62;</p>"));
        assert!(html.contains(r#"<a href="/a&#34;b/">&#60;u&#62;</a>"#));
        assert!(html.contains(r#"name="csrf" value="tok&#34;en""#));
        assert!(html.contains(r#"href="/a&#34;b/login""#));
        assert!(!html.contains("<b>") && !html.contains("<i>") && !html.contains("<u>"));
        assert!(!html.contains("style="));
        assert!(html.contains(r#"name="viewport""#));
    }

    #[test]
    fn forms_refuse_ambiguity() {
        let f = Form {
            pairs: vec![
                ("a".into(), "1".into()),
                ("b".into(), "2".into()),
                ("b".into(), "3".into()),
                ("t".into(), "1".into()),
                ("f".into(), "0".into()),
            ],
        };
        assert_eq!(f.get("a"), Some("1"));
        assert_eq!(f.get("b"), None);
        assert_eq!(f.all("b"), vec!["2", "3"]);
        assert_eq!(f.text("zz"), "");
        assert!(f.ticked("t") && !f.ticked("f") && !f.ticked("zz"));
    }
}
