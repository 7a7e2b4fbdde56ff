//! The browser's side of OpenID Connect: the authorization endpoint (on the portal's
//! session: without one, the sign-in page and back), the consent page and RP-initiated
//! logout. The decisions are the core's (`Core::oidc_authorize`); this module renders
//! them. A client or redirect URI that is not registered gets a page, never a redirect.

use askama::Template;
use hyper::StatusCode;

use authcore::kinds::AuditEvent;
use authcore::login::SessionInfo;
use authcore::oidc::{after_sign_in, AuthRequest, Authorize};

use super::ctx::{Ctx, Form};
use super::flow::{self, Carry};
use super::html::{qs, Layout};
use super::security::CookieName;
use crate::app::{ApiError, Resp};

/// The authorization request of a query string; None when a parameter is repeated.
fn parse_request(query: &[(String, String)]) -> Option<AuthRequest> {
    for (i, (k, _)) in query.iter().enumerate() {
        if query[..i].iter().any(|(k2, _)| k2 == k) {
            return None;
        }
    }
    let map: serde_json::Map<String, serde_json::Value> = query
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::from_value(serde_json::Value::Object(map)).ok()
}

fn encode_query(query: &[(String, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in query {
        s.append_pair(k, v);
    }
    s.finish()
}

/// What a scope lets the client see, for people.
fn describe(scope: &str) -> String {
    match scope {
        "openid" => "who you are (an identifier for your account)",
        "profile" => "your username",
        "email" => "your email address",
        "groups" => "your groups and organisation",
        "offline_access" => "your account while you are away (until you sign out of it)",
        other => other,
    }
    .to_string()
}

/// Back to the client after one of our forms (see the template).
#[derive(Template)]
#[template(path = "oidc_continue.html")]
struct ContinuePage<'a> {
    layout: Layout<'a>,
    to: &'a str,
    client: &'a str,
}

#[derive(Template)]
#[template(path = "consent.html")]
struct ConsentPage<'a> {
    layout: Layout<'a>,
    csrf: &'a str,
    client: &'a str,
    scopes: Vec<String>,
    request: &'a str,
}

/// The client asks for a stronger sign-in than the session's: its second factor only.
#[derive(Template)]
#[template(path = "step_up.html")]
struct StepUpPage<'a> {
    layout: Layout<'a>,
    csrf: &'a str,
    client: &'a str,
    request: &'a str,
}

/// `GET /oidc/authorize`.
pub async fn authorize(ctx: &mut Ctx<'_>) -> Result<Resp, ApiError> {
    let query = ctx.req.query.clone();
    decide(ctx, &query, None).await
}

/// The session of a form of ours about an authorization request (its CSRF token bound
/// to the session) and that request's parameters; None: no session, or a forged form.
#[allow(clippy::type_complexity)]
async fn request_form(
    ctx: &Ctx<'_>,
    form: &Form,
) -> Result<Option<(String, SessionInfo, Vec<(String, String)>)>, ApiError> {
    let Some((token, info)) = ctx.session().await? else {
        return Ok(None);
    };
    if !ctx.csrf_session_ok(form, &token) {
        return Ok(None);
    }
    let query = form_urlencoded::parse(form.text("request").as_bytes())
        .into_owned()
        .collect();
    Ok(Some((token, info, query)))
}

/// The authorization endpoint's URL for `query` (the way back after a portal page).
fn authorize_url(ctx: &Ctx<'_>, query: &[(String, String)]) -> String {
    format!("{}?{}", ctx.url("/oidc/authorize"), encode_query(query))
}

/// `POST /oidc/consent`: the answer of the consent page (CSRF bound to the session).
pub async fn consent_post(ctx: &mut Ctx<'_>, form: &Form) -> Result<Resp, ApiError> {
    let Some((_, _, query)) = request_form(ctx, form).await? else {
        return Ok(ctx.forbidden());
    };
    let answer = form.get("answer") == Some("allow");
    decide(ctx, &query, Some(answer)).await
}

/// `POST /oidc/step-up` (the step-up page's form, CSRF bound to the session): begin the
/// second factor for this session; its pages carry the authorization request as the way
/// on, and its success replaces the session by one with the factor added.
pub async fn step_up_post(ctx: &mut Ctx<'_>, form: &Form) -> Result<Resp, ApiError> {
    let Some((token, info, query)) = request_form(ctx, form).await? else {
        return Ok(ctx.forbidden());
    };
    let back = authorize_url(ctx, &query);
    let carry = Carry {
        next: ctx.next_from(Some(&back)),
        username: info.user.username.clone(),
    };
    let client = ctx.req.client.clone();
    let (result, mail) =
        flow::step(ctx, false, move |core| core.oidc_step_up(&client, &token)).await?;
    match result {
        Ok(status) => flow::after(ctx, status, mail, &carry).await,
        Err(e) => flow::refused(ctx, e, &carry).await,
    }
}

async fn decide(
    ctx: &mut Ctx<'_>,
    query: &[(String, String)],
    consent: Option<bool>,
) -> Result<Resp, ApiError> {
    let Some(req) = parse_request(query) else {
        let client_id = query
            .iter()
            .find(|(k, _)| k == "client_id")
            .map(|(_, v)| v.clone());
        let peer = ctx.req.client.clone();
        ctx.app
            .call(move |core| {
                core.oidc_refused(
                    AuditEvent::OidcAuthorize,
                    "repeated_parameter",
                    client_id.as_deref(),
                    &peer,
                )
            })
            .await?;
        return Ok(ctx.message_page(
            StatusCode::BAD_REQUEST,
            "Cannot sign in to this application",
            "The application's request repeats a parameter. Nothing was sent to it.",
        ));
    };
    let session = ctx.session().await?;
    let issuer = crate::oidc::issuer(ctx.app, &ctx.req.headers);
    let peer = ctx.req.client.clone();
    let info = session.as_ref().map(|(_, i)| i.clone());
    let r = req.clone();
    let decision = ctx
        .app
        .call(move |core| core.oidc_authorize(&issuer, &r, info.as_ref(), consent, &peer))
        .await?;
    match decision {
        Authorize::BadClient(msg) => Ok(ctx.message_page(
            StatusCode::BAD_REQUEST,
            "Cannot sign in to this application",
            &msg,
        )),
        Authorize::Redirect(to) => {
            // After our own sign-in or consent form (a same-origin navigation), a
            // redirect to the client's origin would be the form's, which the portal's
            // CSP (form-action) forbids: a page that navigates anew instead.
            let after_form = consent.is_some()
                || ctx
                    .req
                    .headers
                    .get("sec-fetch-site")
                    .is_some_and(|v| v.as_bytes() == b"same-origin");
            if after_form {
                let client = to
                    .split_once("://")
                    .map(|(_, r)| r.split(['/', '?']).next().unwrap_or(""))
                    .unwrap_or("")
                    .to_string();
                let page = ContinuePage {
                    layout: ctx.layout("Signed in", &[], None),
                    to: &to,
                    client: &client,
                };
                return Ok(ctx.page(StatusCode::OK, &page));
            }
            let mut r = ctx.redirect(&to);
            *r.status_mut() = StatusCode::FOUND;
            Ok(r)
        }
        Authorize::Login { again } => {
            if again {
                if let Some((token, _)) = session {
                    let client = ctx.req.client.clone();
                    ctx.app.write(ctx.app.core.logout(client, token)).await?;
                    ctx.set_cookie(CookieName::Session, "", Some(0));
                }
            }
            // The way back is the request without what the sign-in meets (prompt=login,
            // max_age=0): asking again there would end the new session, and so on.
            let back = authorize_url(ctx, &after_sign_in(query));
            let mut to = format!("{}?next={}", ctx.url("/login"), qs(&back));
            if let Some(h) = req.login_hint.as_deref().filter(|h| !h.is_empty()) {
                to.push_str(&format!("&login_hint={}", qs(h)));
            }
            Ok(ctx.redirect(&to))
        }
        Authorize::Consent { client, scopes } => {
            let Some((token, info)) = session.as_ref() else {
                return Ok(ctx.forbidden());
            };
            let csrf = ctx.csrf_session(token);
            let request = encode_query(query);
            let page = ConsentPage {
                layout: ctx.layout(
                    "Allow this application?",
                    &[],
                    Some((&info.user.username, &csrf)),
                ),
                csrf: &csrf,
                client: &client,
                scopes: scopes.iter().map(|s| describe(s)).collect(),
                request: &request,
            };
            Ok(ctx.page(StatusCode::OK, &page))
        }
        Authorize::StepUp { client, .. } => {
            let Some((token, info)) = session.as_ref() else {
                return Ok(ctx.forbidden());
            };
            let csrf = ctx.csrf_session(token);
            let request = encode_query(query);
            let page = StepUpPage {
                layout: ctx.layout("Confirm it is you", &[], Some((&info.user.username, &csrf))),
                csrf: &csrf,
                client: &client,
                request: &request,
            };
            Ok(ctx.page(StatusCode::OK, &page))
        }
        Authorize::Forbidden { client, groups } => Ok(ctx.message_page(
            StatusCode::FORBIDDEN,
            "Not allowed",
            &format!(
                "{client} is open to members of {} only, and your account is in none of them. \
                 Ask your administrator if you need it.",
                groups.join(", ")
            ),
        )),
    }
}

/// `GET /oidc/logout` (RP-initiated logout): with an ID token of this browser's user as
/// `id_token_hint`, end the session and go back to the client's registered
/// `post_logout_redirect_uri`; otherwise the portal's own sign-out page asks.
pub async fn logout(ctx: &mut Ctx<'_>) -> Result<Resp, ApiError> {
    let hint = ctx.query("id_token_hint").unwrap_or("").to_string();
    let uri = ctx.query("post_logout_redirect_uri").map(str::to_string);
    let state = ctx.query("state").map(str::to_string);
    let issuer = crate::oidc::issuer(ctx.app, &ctx.req.headers);
    let found = if hint.is_empty() {
        None
    } else {
        ctx.app
            .call(move |core| {
                core.oidc_logout_hint(&issuer, &hint, uri.as_deref(), state.as_deref())
            })
            .await?
    };
    let session = ctx.session().await?;
    let signed_out = format!("{}?m=signed_out", ctx.url("/login"));
    match (found, session) {
        (Some((user, to)), Some((token, info))) if info.user_id == user => {
            let client = ctx.req.client.clone();
            let peer = client.clone();
            let i = info.clone();
            ctx.app
                .call(move |core| core.oidc_logout_audit(&i, &peer))
                .await?;
            ctx.app.write(ctx.app.core.logout(client, token)).await?;
            ctx.set_cookie(CookieName::Session, "", Some(0));
            Ok(ctx.redirect(&to.unwrap_or(signed_out)))
        }
        (Some((_, to)), None) => Ok(ctx.redirect(&to.unwrap_or(signed_out))),
        (_, Some(_)) => Ok(ctx.redirect(&ctx.url("/logout"))),
        (None, None) => Ok(ctx.redirect(&signed_out)),
    }
}
