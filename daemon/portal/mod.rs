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
//!   from the configuration once, and again at a SIGHUP: `app::Live`).
//! - Links are prefixed with the path of `--public-url` (a proxy may serve the portal
//!   below `/auth`, stripping the prefix before authd sees the request).
//! - A finished login answers `303 See Other` to the checked `next` target.

mod account;
mod ctx;
mod flow;
mod forward;
pub mod html;
mod oidc;
mod passkeys;
pub mod security;
mod security_page;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};

use crate::app::{ApiError, App, Req, Resp};

pub(crate) use ctx::{Ctx, Form};
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
        "/reset" => flow::reset_link_page(ctx).await,
        "/logout" => account::logout_page(ctx).await,
        "/security-questions" => account::questions_page(ctx).await,
        "/security" => security_page::page(ctx).await,
        "/admin" => account::admin_page(ctx).await,
        "/admin/user" => account::admin_user_page(ctx).await,
        "/passkeys" => passkeys::page(ctx).await,
        "/oidc/authorize" => oidc::authorize(ctx).await,
        "/oidc/logout" => oidc::logout(ctx).await,
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
    let credential = path.starts_with("/login") || path.starts_with("/forgot") || path == "/reset";
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
        "/login/passkey" => passkeys::login_post(ctx, &form).await,
        "/login/enroll/passkey" => passkeys::enroll_post(ctx, &form).await,
        "/forgot" => flow::forgot_post(ctx, &form).await,
        "/forgot/reset" => flow::forgot_reset_post(ctx, &form).await,
        "/reset" => flow::reset_link_post(ctx, &form).await,
        "/logout" => account::logout_post(ctx, &form).await,
        "/oidc/consent" => oidc::consent_post(ctx, &form).await,
        "/oidc/step-up" => oidc::step_up_post(ctx, &form).await,
        "/devices/revoke" => account::revoke_device_post(ctx, &form).await,
        "/security-questions" => account::questions_post(ctx, &form).await,
        p if p.starts_with("/security/") => {
            security_page::post(ctx, &form, &p["/security/".len()..]).await
        }
        "/passkeys/new" => passkeys::new_post(ctx, &form).await,
        "/passkeys/add" => passkeys::add_post(ctx, &form).await,
        "/passkeys/rename" => passkeys::rename_post(ctx, &form).await,
        "/passkeys/remove" => passkeys::remove_post(ctx, &form).await,
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

#[cfg(test)]
mod tests {
    use askama::Template;

    use super::ctx::*;
    use super::html::{Layout, Notice};
    use super::*;
    use crate::config::Config;
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
        let a = config(
            &["https://app.example.org"],
            Some("https://auth.example.org/auth"),
        );
        let live = crate::app::Live::of(&a);
        assert_eq!(
            live.csp.as_ref().unwrap().to_str().unwrap(),
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self' https://app.example.org https://auth.example.org; \
             frame-ancestors 'none'; base-uri 'none'"
        );
        assert_eq!(
            live.allowed_origins,
            ["https://app.example.org", "https://auth.example.org"]
        );
        // Without allowed origins, the strict policy.
        let other = crate::app::Live::of(&config(&[], None));
        assert_eq!(other.csp.as_ref().unwrap().to_str().unwrap(), security::CSP);
        assert!(other.allowed_origins.is_empty());
        // The public URL's origin is not repeated when it is also configured.
        let c = config(
            &["https://auth.example.org"],
            Some("https://auth.example.org/"),
        );
        assert_eq!(
            crate::app::Live::of(&c).allowed_origins,
            ["https://auth.example.org"]
        );
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
