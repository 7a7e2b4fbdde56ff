//! The passkey (WebAuthn) endpoints of the API: a signed-in user's passkeys
//! (`/v1/me/passkeys…`) and the login's passkey steps (`/v1/login/passkey…`; enrolment
//! through `/v1/login/enroll…` is in handlers.rs, beside TOTP's). Each parses JSON and
//! calls one method of the core (authcore's passkey_steps.rs), which does all the
//! WebAuthn work with webauthn-rs.

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::{empty_resp, json_resp, ApiError, App, Req, Resp};
use crate::handlers::{decided, session_of};

/// A passkey id from the path (`/v1/me/passkeys/{id}`).
fn passkey_id(s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such passkey: the id is a number that GET /v1/me/passkeys lists",
        )
    })
}

/// `POST /v1/me/passkeys/options` → `{"publicKey":{…}}`.
pub async fn options(app: &App, req: Req) -> Result<Resp, ApiError> {
    let s = session_of(app, &req).await?;
    let client = req.client.clone();
    let v = app
        .call(move |core| core.passkey_register_options(&client, s.user_id, s.session.id))
        .await?;
    Ok(json_resp(StatusCode::OK, &v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    name: String,
    credential: Value,
}

/// `POST /v1/me/passkeys {"name","credential"}` → 201 `{"id","name"}`.
pub async fn add(app: &App, req: Req) -> Result<Resp, ApiError> {
    let s = session_of(app, &req).await?;
    let b: AddBody = req.json()?;
    let client = req.client.clone();
    let r = app
        .call(move |core| {
            core.passkey_register(&client, s.user_id, s.session.id, &b.name, &b.credential)
        })
        .await?;
    Ok(json_resp(StatusCode::CREATED, &r))
}

/// `GET /v1/me/passkeys` → `{"passkeys":[{"id","name","aaguid","created_at",…}]}`.
pub async fn list(app: &App, req: Req) -> Result<Resp, ApiError> {
    let s = session_of(app, &req).await?;
    let v = app.call(move |core| core.passkeys(s.user_id)).await?;
    Ok(json_resp(StatusCode::OK, &json!({"passkeys": v})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenameBody {
    name: String,
}

/// `PATCH /v1/me/passkeys/{id} {"name"}` → `{"id","name"}`.
pub async fn rename(app: &App, req: Req, id: String) -> Result<Resp, ApiError> {
    let id = passkey_id(&id)?;
    let s = session_of(app, &req).await?;
    let b: RenameBody = req.json()?;
    let client = req.client.clone();
    let r = app
        .call(move |core| core.passkey_rename(&client, s.user_id, id, &b.name))
        .await?;
    Ok(json_resp(StatusCode::OK, &r))
}

/// `DELETE /v1/me/passkeys/{id}` → 204.
pub async fn remove(app: &App, req: Req, id: String) -> Result<Resp, ApiError> {
    let id = passkey_id(&id)?;
    let s = session_of(app, &req).await?;
    let client = req.client.clone();
    app.call(move |core| core.passkey_remove(&client, s.user_id, id))
        .await?;
    Ok(empty_resp(StatusCode::NO_CONTENT))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct OptionsBody {
    #[serde(default)]
    flow: Option<String>,
}

/// `POST /v1/login/passkey/options {}` → `{"flow","publicKey"}` (passwordless);
/// with `{"flow"}` of a second-factor step → a fresh `{"publicKey"}` for it.
pub async fn login_options(app: &App, req: Req) -> Result<Resp, ApiError> {
    let b: OptionsBody = if req.body.is_empty() {
        OptionsBody::default()
    } else {
        req.json()?
    };
    let client = req.client.clone();
    let d = app
        .call(move |core| core.passkey_login_options(&client, b.flow.as_deref()))
        .await?;
    decided(app, d).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    flow: String,
    credential: Value,
    #[serde(default)]
    remember_device: bool,
}

/// `POST /v1/login/passkey {"flow","credential","remember_device"?}` → `authenticated`
/// or the next step.
pub async fn login(app: &App, req: Req) -> Result<Resp, ApiError> {
    let b: LoginBody = req.json()?;
    let client = req.client.clone();
    let d = app
        .call(move |core| {
            core.passkey_login_step(&client, &b.flow, &b.credential, b.remember_device)
        })
        .await?;
    decided(app, d).await
}
