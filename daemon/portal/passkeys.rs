//! Passkeys in the portal: "Sign in with a passkey" (passwordless), the passkey as a
//! second factor (the form on the second-factor page posts here), and a signed-in
//! user's passkeys section (add, rename, remove) — its own template partial
//! (`passkeys_section.html`) and handler, so another page can include it.
//!
//! The browser talks WebAuthn through `assets/portal.js` only: a ceremony page carries
//! the options in a data attribute, the script asks the authenticator and posts
//! `credential.toJSON()` in a hidden field of an ordinary form (the CSP allows no
//! fetch). Every decision is the core's (authcore passkey_steps.rs), as for the API.

use askama::Template;
use authcore::login::SessionInfo;
use authcore::passkey::PasskeyView;
use hyper::StatusCode;
use serde_json::Value;

use super::account::{require_session, signed_in_layout};
use super::ctx::{Ctx, Form};
use super::flow::{self, Carry, SecondFactor};
use super::html::{CeremonyPage, Layout, Notice};
use crate::app::{ApiError, Resp};

/// `POST /login/passkey`: without a credential, start a passwordless sign-in (the
/// ceremony page); with one, the assertion — of that passwordless flow, or of a
/// second-factor flow (the form on the second-factor page).
pub async fn login_post(ctx: &mut Ctx<'_>, form: &Form) -> Result<Resp, ApiError> {
    let flow = form.text("flow").to_string();
    let bound = (!flow.is_empty()).then_some(flow.as_str());
    if !ctx.csrf_ok(form, bound) {
        return Ok(ctx.forbidden());
    }
    let carry = Carry::from_form(ctx, form);
    let credential = form.text("credential");
    if credential.is_empty() {
        if !flow.is_empty() {
            let n = [Notice::Error(
                "Your passkey did not answer. Try again, or use another way to sign in.".into(),
            )];
            let sf = SecondFactor::from_form(form);
            return flow::second_factor_page(ctx, StatusCode::BAD_REQUEST, &sf, &n, &carry).await;
        }
        return start_passwordless(ctx, &carry).await;
    }
    let credential: Value = match serde_json::from_str(credential) {
        Ok(v) => v,
        Err(_) => {
            let n = [Notice::Error(
                "The passkey's answer was not readable.".into(),
            )];
            return flow::render_login(ctx, StatusCode::BAD_REQUEST, &n, &carry).await;
        }
    };
    let remember = form.ticked("remember_device");
    let client = ctx.req.client.clone();
    let (result, mail) = flow::step(ctx, false, move |core| {
        core.passkey_login_step(&client, &flow, &credential, remember)
    })
    .await?;
    match result {
        Ok(status) => flow::after(ctx, status, mail, &carry).await,
        Err(e) => flow::refused(ctx, e, &carry).await,
    }
}

/// `POST /login/enroll/passkey {flow, credential}`: the passkey enrolled in a login;
/// then the recovery codes, and sign in again.
pub async fn enroll_post(ctx: &mut Ctx<'_>, form: &Form) -> Result<Resp, ApiError> {
    let flow = form.text("flow").to_string();
    if !ctx.csrf_ok(form, Some(&flow)) {
        return Ok(ctx.forbidden());
    }
    let carry = Carry::from_form(ctx, form);
    if form.text("credential").is_empty() {
        // "Use a passkey instead" on the authenticator-app page: the ceremony.
        return flow::passkey_enrollment_page(ctx, &flow, &carry).await;
    }
    let Ok(credential) = serde_json::from_str::<Value>(form.text("credential")) else {
        let n = [Notice::Error(
            "Your device made no passkey. Sign in again to retry.".into(),
        )];
        return flow::render_login(ctx, StatusCode::BAD_REQUEST, &n, &carry).await;
    };
    let client = ctx.req.client.clone();
    let (result, mail) = flow::step(ctx, false, move |core| {
        core.passkey_enroll_confirm_step(&client, &flow, &credential)
    })
    .await?;
    match result {
        Ok(status) => flow::after(ctx, status, mail, &carry).await,
        Err(e) => flow::refused(ctx, e, &carry).await,
    }
}

async fn start_passwordless(ctx: &mut Ctx<'_>, carry: &Carry) -> Result<Resp, ApiError> {
    let client = ctx.req.client.clone();
    let (result, _) = flow::step(ctx, false, move |core| {
        core.passkey_login_options(&client, None)
    })
    .await?;
    let v = match result {
        Ok(v) => v,
        Err(e) => return flow::refused(ctx, e, carry).await,
    };
    let token = v["flow"].as_str().unwrap_or_default().to_string();
    let options = serde_json::json!({"publicKey": v["publicKey"]}).to_string();
    let csrf = ctx.csrf(Some(&token));
    let page = CeremonyPage {
        layout: ctx.layout("Sign in with a passkey", &[], None),
        intro:
            "Press the button, then unlock your passkey (fingerprint, face, PIN or security key).",
        action: "/login/passkey",
        mode: "get",
        options: &options,
        csrf: &csrf,
        flow: Some(&token),
        name: None,
        next: carry.next.as_deref(),
        button: "Use your passkey",
        back: "/login",
    };
    Ok(ctx.page(StatusCode::OK, &page))
}

// ---- a signed-in user's passkeys -------------------------------------------------------

/// What the passkeys section shows.
pub(crate) struct PasskeysSection {
    pub enabled: bool,
    pub passkeys: Vec<PasskeyView>,
}

impl PasskeysSection {
    /// The section of this signed-in user.
    pub(crate) async fn load(ctx: &Ctx<'_>, info: &SessionInfo) -> Result<Self, ApiError> {
        let user_id = info.user_id;
        let mut passkeys = ctx.app.call(move |core| core.passkeys(user_id)).await?;
        for p in &mut passkeys {
            p.created_at = short_time(&p.created_at);
            p.last_used_at = p.last_used_at.as_deref().map(short_time);
        }
        Ok(PasskeysSection {
            enabled: ctx.app.core.relying_party().is_some(),
            passkeys,
        })
    }
}

/// `2026-01-02T03:04:05Z` → `2026-01-02 03:04 UTC`.
fn short_time(t: &str) -> String {
    match (t.get(..10), t.get(11..16)) {
        (Some(d), Some(hm)) => format!("{d} {hm} UTC"),
        _ => t.to_string(),
    }
}

#[derive(Template)]
#[template(path = "passkeys.html")]
struct PasskeysPage<'a> {
    layout: Layout<'a>,
    csrf: &'a str,
    section: &'a PasskeysSection,
}

/// `GET /passkeys`: the section on a page of its own (linked from the account page).
pub async fn page(ctx: &mut Ctx<'_>) -> Result<Resp, ApiError> {
    let s = match require_session(ctx).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    let notices: Vec<Notice> = match ctx.query("m") {
        Some("added") => vec![Notice::Info("Your passkey was added.".into())],
        Some("renamed") => vec![Notice::Info("The passkey was renamed.".into())],
        Some("removed") => vec![Notice::Info("The passkey was removed.".into())],
        _ => vec![],
    };
    render(ctx, StatusCode::OK, &s, &notices).await
}

async fn render(
    ctx: &mut Ctx<'_>,
    status: StatusCode,
    s: &(String, SessionInfo),
    notices: &[Notice],
) -> Result<Resp, ApiError> {
    let section = PasskeysSection::load(ctx, &s.1).await?;
    let csrf = ctx.csrf_session(&s.0);
    let page = PasskeysPage {
        layout: signed_in_layout(ctx, "Passkeys", s, &csrf, notices),
        csrf: &csrf,
        section: &section,
    };
    Ok(ctx.page(status, &page))
}

/// A refused passkey action: the section again with the message.
async fn refused(
    ctx: &mut Ctx<'_>,
    s: &(String, SessionInfo),
    e: ApiError,
) -> Result<Resp, ApiError> {
    if e.status.is_server_error() {
        return Err(e);
    }
    let n = [Notice::Error(e.message.clone())];
    render(ctx, e.status, s, &n).await
}

/// The session of a signed-in form, or the answer (sign in first; a form that is not
/// this session's is refused).
async fn session_form(
    ctx: &mut Ctx<'_>,
    form: &Form,
) -> Result<Result<(String, SessionInfo), Resp>, ApiError> {
    let s = match require_session(ctx).await? {
        Ok(s) => s,
        Err(r) => return Ok(Err(r)),
    };
    if !ctx.csrf_session_ok(form, &s.0) {
        return Ok(Err(ctx.forbidden()));
    }
    Ok(Ok(s))
}

/// `POST /passkeys/new {name}`: the registration ceremony page.
pub async fn new_post(ctx: &mut Ctx<'_>, form: &Form) -> Result<Resp, ApiError> {
    let s = match session_form(ctx, form).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    let name = form.text("name").trim().to_string();
    if let Err(e) = authcore::store::passkeys::check_name(&name) {
        return refused(ctx, &s, ApiError::from(e)).await;
    }
    let (user_id, session_id) = (s.1.user_id, s.1.session.id);
    let client = ctx.req.client.clone();
    let options = match ctx
        .app
        .call(move |core| core.passkey_register_options(&client, user_id, session_id))
        .await
    {
        Ok(v) => v.to_string(),
        Err(e) => return refused(ctx, &s, e).await,
    };
    let csrf = ctx.csrf_session(&s.0);
    let page = CeremonyPage {
        layout: signed_in_layout(ctx, "Add a passkey", &s, &csrf, &[]),
        intro:
            "Press the button, then follow your device: it makes a new passkey for this account.",
        action: "/passkeys/add",
        mode: "create",
        options: &options,
        csrf: &csrf,
        flow: None,
        name: Some(&name),
        next: None,
        button: "Create the passkey",
        back: "/passkeys",
    };
    Ok(ctx.page(StatusCode::OK, &page))
}

/// `POST /passkeys/add {name, credential}`: store the new passkey.
pub async fn add_post(ctx: &mut Ctx<'_>, form: &Form) -> Result<Resp, ApiError> {
    let s = match session_form(ctx, form).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    let name = form.text("name").to_string();
    let Ok(credential) = serde_json::from_str::<Value>(form.text("credential")) else {
        let e = ApiError::bad_request("your device made no passkey: try again");
        return refused(ctx, &s, e).await;
    };
    let (user_id, session_id) = (s.1.user_id, s.1.session.id);
    let client = ctx.req.client.clone();
    match ctx
        .app
        .call(move |core| core.passkey_register(&client, user_id, session_id, &name, &credential))
        .await
    {
        Ok(_) => Ok(ctx.redirect(&format!("{}?m=added", ctx.url("/passkeys")))),
        Err(e) => refused(ctx, &s, e).await,
    }
}

fn id_of(form: &Form) -> i64 {
    form.get("id")
        .and_then(|d| d.parse::<i64>().ok())
        .unwrap_or(0)
}

/// `POST /passkeys/rename {id, name}`.
pub async fn rename_post(ctx: &mut Ctx<'_>, form: &Form) -> Result<Resp, ApiError> {
    let s = match session_form(ctx, form).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    let (id, name, user_id) = (id_of(form), form.text("name").to_string(), s.1.user_id);
    let client = ctx.req.client.clone();
    match ctx
        .app
        .call(move |core| core.passkey_rename(&client, user_id, id, &name))
        .await
    {
        Ok(_) => Ok(ctx.redirect(&format!("{}?m=renamed", ctx.url("/passkeys")))),
        Err(e) => refused(ctx, &s, e).await,
    }
}

/// `POST /passkeys/remove {id}`.
pub async fn remove_post(ctx: &mut Ctx<'_>, form: &Form) -> Result<Resp, ApiError> {
    let s = match session_form(ctx, form).await? {
        Ok(s) => s,
        Err(r) => return Ok(r),
    };
    let (id, user_id) = (id_of(form), s.1.user_id);
    let client = ctx.req.client.clone();
    match ctx
        .app
        .call(move |core| core.passkey_remove(&client, user_id, id))
        .await
    {
        Ok(()) => Ok(ctx.redirect(&format!("{}?m=removed", ctx.url("/passkeys")))),
        Err(e) => refused(ctx, &s, e).await,
    }
}
