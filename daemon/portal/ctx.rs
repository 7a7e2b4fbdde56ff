//! What every portal page and form handler works with: the request's context ([`Ctx`]:
//! cookies, CSRF, the signed-in session, pages and redirects) and the parsed form
//! ([`Form`]). The CSP and the allowed redirect origins are the live settings'
//! ([`crate::app::Live`], computed once per configuration and SIGHUP).

use std::sync::Arc;
use std::time::Instant;

use askama::Template;
use authcore::login::SessionInfo;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, ORIGIN,
    REFERRER_POLICY, RETRY_AFTER, SET_COOKIE, X_FRAME_OPTIONS,
};
use hyper::{Response, StatusCode};

use super::forward;
use super::html::{Layout, Notice};
use super::security::{self, Binding, CookieName};
use crate::app::{ApiError, App, Live, Req, Resp};

/// A parsed form body. Single-valued fields given twice are refused as ambiguous.
pub(crate) struct Form {
    pub(super) pairs: Vec<(String, String)>,
}

impl Form {
    pub(super) fn parse(req: &Req) -> Result<Form, (StatusCode, &'static str)> {
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
    /// The live settings when the request started: the allowed origins and the CSP.
    pub settings: Arc<Live>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(app: &'a App, req: &'a Req) -> Ctx<'a> {
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
            settings: app.live(),
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
        security::csrf_token(self.app.core.key(), b)
    }

    /// The token for a signed-in form.
    pub fn csrf_session(&self, session: &str) -> String {
        security::csrf_token(self.app.core.key(), Binding::Session(session))
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
        security::csrf_ok(self.app.core.key(), b, form.get("csrf"))
    }

    /// Whether a posted signed-in form's token matches the session.
    pub fn csrf_session_ok(&self, form: &Form, session: &str) -> bool {
        security::csrf_ok(
            self.app.core.key(),
            Binding::Session(session),
            form.get("csrf"),
        )
    }

    /// A cross-origin POST is refused outright when the browser says where it came from
    /// (defence in depth next to the tokens). Same origin: the Host header, the public
    /// URL's origin, or an X-Forwarded-Host from a trusted proxy. `Origin: null` is
    /// refused like any other origin: it is what a sandboxed iframe, a `data:` or
    /// `file:` document or a cross-origin redirect chain sends, never one of our own
    /// pages (they are served with `Referrer-Policy: same-origin`, under which a
    /// browser sends the real origin). No Origin at all (older browsers, scripts) leaves
    /// the decision to the token.
    pub(super) fn origin_ok(&self) -> bool {
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
    pub(super) fn rate_limited(&mut self) -> Option<Resp> {
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
        // The API's session check: the core's session cache, else the database.
        let checked = self.app.check_session(&token).await?;
        Ok(checked.map(|c| (token, c.info.clone())))
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
            .and_then(|s| security::safe_redirect(s, &self.settings.allowed_origins))
    }
}

/// A page with one message and a way back to the sign-in page.
#[derive(Template)]
#[template(path = "message.html")]
pub(super) struct MessagePage<'a> {
    pub(super) layout: Layout<'a>,
}
