//! Request handlers: parse the body, run the core decision off the reactor, answer.

use std::sync::Arc;

use authcore::admin::{Actor, Door};
use authcore::audit::{self, Outcome};
use authcore::login::{self, Decision, SessionInfo};
use authcore::store::users::{Role, User};
use hyper::header::HeaderMap;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::app::{empty_resp, json_resp, text_resp, ApiError, App, Req, Resp};
use authcore::session_cache::Checked;

/// Liveness: the process answers (nothing else is asked, so a busy or unwritable
/// database does not get authd restarted).
pub async fn healthz(_app: &App) -> Result<Resp, ApiError> {
    Ok(text_resp(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        "ok\n".into(),
    ))
}

/// Readiness: the database answers a read and its schema is current (503 otherwise, with
/// the reason in the log).
pub async fn readyz(app: &App) -> Result<Resp, ApiError> {
    let ok = app.call(|core| core.ready()).await;
    Ok(match ok {
        Ok(_) => text_resp(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "ready\n".into(),
        ),
        Err(e) => {
            tracing::warn!(error = ?e, "not ready");
            text_resp(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                "not ready: database unavailable\n".into(),
            )
        }
    })
}

/// The Prometheus text; with `--metrics-token-file`, only for `Authorization: Bearer
/// TOKEN` (else 401 with `WWW-Authenticate: Bearer`).
pub fn metrics(app: &App, req: &Req) -> Result<Resp, ApiError> {
    if let Some(token) = &app.metrics_token {
        if !req.bearer().is_some_and(|t| token.matches(t)) {
            let mut r = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the metrics need the header Authorization: Bearer with the metrics token",
            )
            .into_resp();
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer realm=\"authd metrics\""),
            );
            return Ok(r);
        }
    }
    Ok(text_resp(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        app.metrics.render() + &crate::writer::render_metrics(app.core.writer()),
    ))
}

/// Count a decided login step in the metrics (its outcome, and a lockout it caused).
pub(crate) fn count<T>(app: &App, d: &Decision<T>) {
    app.metrics.login(d.outcome(), d.reason);
    if d.locked_now {
        app.metrics.lockout();
    }
}

/// Mail the one-time code a decision issued. Err when it could not be delivered (logged
/// and counted); the caller fails the answer closed.
pub(crate) async fn send_code(app: &App, m: &login::Mail) -> Result<(), ()> {
    let sent = match app.mailer() {
        Some(mailer) => mailer.send(&m.to, &m.subject, &m.body).await,
        None => Err("mail is not configured on this server (--smtp-url or --mail-dir)".into()),
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "a one-time code could not be mailed");
        app.metrics.login("failure", "mail_unavailable");
        return Err(());
    }
    Ok(())
}

/// Turn a decided login step into an answer, counting it in the metrics, and mail the
/// one-time code it issued. A code that cannot be mailed fails the answer closed (503),
/// with the flow so the client can resend or use a recovery code.
pub(crate) async fn decided<T: serde::Serialize>(
    app: &App,
    mut d: Decision<T>,
) -> Result<Resp, ApiError> {
    count(app, &d);
    let mail = d.mail.take();
    let v = serde_json::to_value(d.result?).map_err(|_| ApiError::internal())?;
    if let Some(m) = mail {
        if send_code(app, &m).await.is_err() {
            let mut err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "mail_unavailable",
                "The one-time code could not be sent. Try again shortly, or use a recovery code.",
            );
            err.extra = Some(json!({"flow": v.get("flow"), "methods": v.get("methods")}));
            return Err(err);
        }
    }
    Ok(json_resp(StatusCode::OK, &v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
    #[serde(default)]
    device_token: Option<String>,
}

pub async fn login(app: &App, req: Req) -> Result<Resp, ApiError> {
    let b: LoginBody = req.json()?;
    let client = req.client.clone();
    let d = app
        .call_hashing(move |core| {
            core.password_step(&client, &b.username, &b.password, b.device_token.as_deref())
        })
        .await?;
    decided(app, d).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TermsBody {
    flow: String,
    accept: bool,
}

pub async fn login_terms(app: &App, req: Req) -> Result<Resp, ApiError> {
    let b: TermsBody = req.json()?;
    let client = req.client.clone();
    let d = app
        .write(app.core.terms_step(client, b.flow, b.accept))
        .await?;
    decided(app, d).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPasswordBody {
    flow: String,
    new_password: String,
    confirm_password: String,
}

pub async fn login_password(app: &App, req: Req) -> Result<Resp, ApiError> {
    let b: NewPasswordBody = req.json()?;
    let client = req.client.clone();
    let d = app
        .call_hashing(move |core| {
            core.expired_password_step(&client, &b.flow, &b.new_password, &b.confirm_password)
        })
        .await?;
    decided(app, d).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowBody {
    flow: String,
}

/// The QR code of an otpauth URI as an SVG document.
fn qr_svg(uri: &str) -> Result<String, ApiError> {
    let code = qrcode::QrCode::new(uri.as_bytes()).map_err(|_| ApiError::internal())?;
    Ok(code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(240, 240)
        .quiet_zone(true)
        .build())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollBody {
    flow: String,
    /// `totp` (the default) or `passkey`.
    #[serde(default)]
    method: Option<String>,
}

pub async fn login_enroll(app: &App, req: Req) -> Result<Resp, ApiError> {
    let b: EnrollBody = req.json()?;
    let client = req.client.clone();
    match b.method.as_deref() {
        None | Some("totp") => {}
        Some("passkey") => {
            let d = app
                .call(move |core| core.passkey_enroll_step(&client, &b.flow))
                .await?;
            count(app, &d);
            return Ok(json_resp(StatusCode::OK, &d.result?));
        }
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_input",
                "method must be \"totp\" or \"passkey\"",
            ))
        }
    }
    let d = app
        .call(move |core| core.enroll_step(&client, &b.flow))
        .await?;
    app.metrics.login(d.outcome(), d.reason);
    let e = d.result?;
    let svg = qr_svg(&e.otpauth_uri)?;
    Ok(json_resp(
        StatusCode::OK,
        &json!({"flow": e.flow, "secret": e.secret, "otpauth_uri": e.otpauth_uri, "qr_svg": svg}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeBody {
    flow: String,
    code: String,
    #[serde(default)]
    remember_device: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollConfirmBody {
    flow: String,
    /// The first authenticator-app code (TOTP enrolment)…
    #[serde(default)]
    code: Option<String>,
    /// …or the new passkey, as `credential.toJSON()` gives it (passkey enrolment).
    #[serde(default)]
    credential: Option<serde_json::Value>,
}

pub async fn login_enroll_confirm(app: &App, req: Req) -> Result<Resp, ApiError> {
    let b: EnrollConfirmBody = req.json()?;
    let client = req.client.clone();
    let code = match (b.code, b.credential) {
        (Some(code), None) => code,
        (None, Some(credential)) => {
            let flow = b.flow;
            let d = app
                .call(move |core| core.passkey_enroll_confirm_step(&client, &flow, &credential))
                .await?;
            return decided(app, d).await;
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_input",
                "give either code (authenticator app) or credential (passkey)",
            ))
        }
    };
    let d = app
        .write(app.core.enroll_confirm_step(client, b.flow, code))
        .await?;
    decided(app, d).await
}

pub async fn login_totp(app: &App, req: Req) -> Result<Resp, ApiError> {
    let b: CodeBody = req.json()?;
    let client = req.client.clone();
    let d = app
        .write(
            app.core
                .totp_step(client, b.flow, b.code, b.remember_device),
        )
        .await?;
    decided(app, d).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoveryBody {
    flow: String,
    code: String,
}

pub async fn login_email(app: &App, req: Req) -> Result<Resp, ApiError> {
    let b: CodeBody = req.json()?;
    let client = req.client.clone();
    let d = app
        .write(
            app.core
                .email_step(client, b.flow, b.code, b.remember_device),
        )
        .await?;
    decided(app, d).await
}

pub async fn login_email_resend(app: &App, req: Req) -> Result<Resp, ApiError> {
    let b: FlowBody = req.json()?;
    let client = req.client.clone();
    let d = app
        .write(app.core.email_resend_step(client, b.flow))
        .await?;
    decided(app, d).await
}

pub async fn login_recovery(app: &App, req: Req) -> Result<Resp, ApiError> {
    let b: RecoveryBody = req.json()?;
    let client = req.client.clone();
    let d = app
        .write(app.core.recovery_step(client, b.flow, b.code))
        .await?;
    decided(app, d).await
}

/// The live session of the Bearer token (from memory when it can be, see
/// session_cache.rs), or 401.
async fn checked_session(app: &App, headers: &HeaderMap) -> Result<Arc<Checked>, ApiError> {
    let token = crate::app::bearer(headers).ok_or_else(ApiError::unauthorized)?;
    app.check_session(token)
        .await?
        .ok_or_else(ApiError::unauthorized)
}

/// The session of the Bearer token, or 401.
pub(crate) async fn session_of(app: &App, req: &Req) -> Result<SessionInfo, ApiError> {
    Ok(checked_session(app, &req.headers).await?.info.clone())
}

/// `GET /v1/session`, the route checked most: it needs the Authorization header only,
/// so it is given the request's headers rather than a whole [`Req`].
pub async fn session(app: &App, headers: &HeaderMap) -> Result<Resp, ApiError> {
    let json = checked_session(app, headers).await?.json();
    Ok(crate::app::json_bytes_resp(StatusCode::OK, json))
}

pub async fn logout(app: &App, req: Req) -> Result<Resp, ApiError> {
    let token = req.bearer().ok_or_else(ApiError::unauthorized)?.to_string();
    let client = req.client.clone();
    if app.write(app.core.logout(client, token)).await? {
        Ok(empty_resp(StatusCode::NO_CONTENT))
    } else {
        Err(ApiError::unauthorized())
    }
}

/// The password rules a request asks about: with a Bearer session, that account's (a
/// second factor allows the shorter minimum); without one, an account's whose password is
/// its only factor. A Bearer token that is not a live session is 401, not the general rules.
async fn password_rules(
    app: &App,
    req: &Req,
) -> Result<(authcore::password::PasswordPolicy, Option<usize>), ApiError> {
    if req.bearer().is_some() {
        let s = session_of(app, req).await?;
        let rules = app
            .call(move |core| core.password_rules_of(s.user_id))
            .await?;
        return Ok((rules, None));
    }
    let p = app.call(|core| core.policy()).await?;
    let shorter =
        (p.password_min_length_second_factor > 0).then_some(p.password_min_length_second_factor);
    Ok((p.password_for(false), shorter))
}

pub async fn password_policy(app: &App, req: Req) -> Result<Resp, ApiError> {
    let (rules, shorter) = password_rules(app, &req).await?;
    let mut body = json!({"rules": rules.rules()});
    if let Some(n) = shorter {
        body["min_length_with_second_factor"] = n.into();
    }
    Ok(json_resp(StatusCode::OK, &body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    password: String,
}

pub async fn password_check(app: &App, req: Req) -> Result<Resp, ApiError> {
    let (rules, _) = password_rules(app, &req).await?;
    let b: CheckBody = req.json()?;
    let checked = rules.check(&b.password);
    let ok = authcore::password::PasswordPolicy::is_ok(&checked);
    Ok(json_resp(
        StatusCode::OK,
        &json!({"ok": ok, "rules": checked}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeBody {
    current_password: String,
    new_password: String,
    confirm_password: String,
}

pub async fn password_change(app: &App, req: Req) -> Result<Resp, ApiError> {
    let s = session_of(app, &req).await?;
    let b: ChangeBody = req.json()?;
    let client = req.client.clone();
    let d = app
        .call_hashing(move |core| {
            core.change_password(
                &client,
                s.user_id,
                &b.current_password,
                &b.new_password,
                &b.confirm_password,
            )
        })
        .await?;
    decided(app, d).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuestionsBody {
    questions: Vec<authcore::forgot::QuestionAnswer>,
}

pub async fn set_security_questions(app: &App, req: Req) -> Result<Resp, ApiError> {
    let s = session_of(app, &req).await?;
    let b: QuestionsBody = req.json()?;
    let client = req.client.clone();
    let questions = app
        .call_hashing(move |core| {
            core.set_security_questions(&client, s.user_id, &b.questions)?;
            core.security_questions(s.user_id)
        })
        .await?;
    Ok(json_resp(StatusCode::OK, &json!({"questions": questions})))
}

pub async fn get_security_questions(app: &App, req: Req) -> Result<Resp, ApiError> {
    let s = session_of(app, &req).await?;
    let (questions, (offered, admin)) = app
        .call(move |core| Ok((core.security_questions(s.user_id)?, core.question_list()?)))
        .await?;
    // `offered`: the list to pick from; `only_offered`: whether other questions are refused.
    Ok(json_resp(
        StatusCode::OK,
        &json!({"questions": questions, "offered": offered, "only_offered": admin}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForgotBody {
    username: String,
}

pub async fn password_forgot(app: &App, req: Req) -> Result<Resp, ApiError> {
    let b: ForgotBody = req.json()?;
    // Unknown names and names without questions are answered alike: always 200.
    let v = forgot_start(app, req.client.clone(), b.username).await?;
    Ok(json_resp(StatusCode::OK, &v))
}

/// How long after its answer a reset-link request is decided.
const LINK_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

/// Start a forgotten-password reset the way the policy says (API and portal). Under
/// `password.recovery=link` the answer does not wait for the decision: the link is made
/// and queued for mailing after it, so the answer and its time are the same for every
/// name (a real user's flow and outbox rows cost more than an unknown name's audit row).
pub async fn forgot_start(
    app: &App,
    client: authcore::login::Client,
    username: String,
) -> Result<authcore::forgot::Answer, ApiError> {
    use authcore::forgot::Answer;
    let recovery = app.call(|core| core.policy()).await?.password_recovery;
    if recovery == authcore::policy::Recovery::Link {
        // Bounded: past app::LINK_QUEUE pending requests (a flood the rate limiter let
        // through), further ones are dropped, answered alike and logged.
        match app.link_queue.clone().try_acquire_owned() {
            Ok(permit) => {
                let bg = app.clone();
                tokio::spawn(async move {
                    // Later than the answer and later than the client's next request, so
                    // the work of a real name does not slow down what follows it either.
                    tokio::time::sleep(LINK_DELAY).await;
                    match bg.call(move |core| core.forgot(&client, &username)).await {
                        Ok(d) => count(&bg, &d),
                        Err(e) => tracing::warn!(error = %e.message, "cannot make a reset link"),
                    }
                    drop(permit);
                });
            }
            Err(_) => tracing::warn!("too many pending reset-link requests: one dropped"),
        }
        return Ok(Answer::Link(authcore::reset_link::LinkSent::new()));
    }
    let d = app
        .call(move |core| core.forgot(&client, &username))
        .await?;
    count(app, &d);
    Ok(d.result?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForgotResetBody {
    flow: String,
    answers: Vec<String>,
    new_password: String,
    confirm_password: String,
}

pub async fn password_forgot_reset(app: &App, req: Req) -> Result<Resp, ApiError> {
    let b: ForgotResetBody = req.json()?;
    let client = req.client.clone();
    let d = app
        .call_hashing(move |core| {
            core.forgot_reset(
                &client,
                &b.flow,
                &b.answers,
                &b.new_password,
                &b.confirm_password,
            )
        })
        .await?;
    decided(app, d).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkResetBody {
    token: String,
    new_password: String,
    confirm_password: String,
}

/// `POST /v1/password/reset`: a new password through a one-time (emailed or
/// admin-issued) link's token.
pub async fn password_reset_link(app: &App, req: Req) -> Result<Resp, ApiError> {
    let b: LinkResetBody = req.json()?;
    let client = req.client.clone();
    let d = app
        .call_hashing(move |core| {
            core.reset_with_link(&client, &b.token, &b.new_password, &b.confirm_password)
        })
        .await?;
    decided(app, d).await
}

// ---- The security page (/v1/me/…) -----------------------------------------------

/// `GET /v1/me/security`: factors, sessions, devices, recent activity.
pub async fn me_security(app: &App, req: Req) -> Result<Resp, ApiError> {
    let s = session_of(app, &req).await?;
    let v = app.call(move |core| core.security_overview(&s)).await?;
    Ok(json_resp(StatusCode::OK, &v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReauthBody {
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    code: Option<String>,
    /// The code mailed by `{"method":"email"}` (the same as `code`, by its name).
    #[serde(default)]
    email_code: Option<String>,
    /// `"email"`: mail a code instead (users whose second factor is emailed codes).
    #[serde(default)]
    method: Option<String>,
}

/// `POST /v1/me/reauth {"password","code"?|"email_code"?}`: allows factor changes for 5
/// minutes; `{"method":"email"}` first mails the code (`{"status":"code_sent",…}`).
pub async fn me_reauth(app: &App, req: Req) -> Result<Resp, ApiError> {
    let s = session_of(app, &req).await?;
    let b: ReauthBody = req.json()?;
    let client = req.client.clone();
    match b.method.as_deref() {
        None => {}
        Some("email") if b.password.is_none() && b.code.is_none() && b.email_code.is_none() => {
            let d = app
                .call(move |core| core.send_reauth_code(&client, &s))
                .await?;
            return decided(app, d).await;
        }
        Some("email") => {
            return Err(ApiError::bad_request(
                "{\"method\":\"email\"} asks for a code and takes nothing else; then send {\"password\",\"email_code\"}",
            ))
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "method takes \"email\" (mail a code), or leave it out",
            ))
        }
    }
    let Some(password) = b.password else {
        return Err(ApiError::bad_request(
            "give the password (and the second factor's code), or {\"method\":\"email\"}",
        ));
    };
    let code = match (b.code, b.email_code) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give code or email_code, not both"))
        }
        (c, e) => c.or(e),
    };
    let until = app
        .call_hashing(move |core| core.reauthenticate(&client, &s, &password, code.as_deref()))
        .await?;
    Ok(json_resp(
        StatusCode::OK,
        &json!({"reauthenticated_until": until}),
    ))
}

/// `POST /v1/me/recovery-codes`: fresh recovery codes (re-authentication needed).
pub async fn me_recovery_codes(app: &App, req: Req) -> Result<Resp, ApiError> {
    let s = session_of(app, &req).await?;
    let client = req.client.clone();
    let codes = app
        .call(move |core| core.regenerate_recovery_codes(&client, &s))
        .await?;
    Ok(json_resp(StatusCode::OK, &json!({"recovery_codes": codes})))
}

/// `POST /v1/me/totp/remove`: remove the authenticator app (re-authentication needed).
pub async fn me_totp_remove(app: &App, req: Req) -> Result<Resp, ApiError> {
    let s = session_of(app, &req).await?;
    let client = req.client.clone();
    app.call(move |core| core.remove_own_totp(&client, &s))
        .await?;
    Ok(empty_resp(StatusCode::NO_CONTENT))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TotpAddBody {
    name: String,
}

/// `POST /v1/me/totp {"name"}` → 201 `{"id","name","secret","otpauth_uri"}`: another
/// authenticator app, unconfirmed (re-authentication needed).
pub async fn me_totp_add(app: &App, req: Req) -> Result<Resp, ApiError> {
    let s = session_of(app, &req).await?;
    let b: TotpAddBody = req.json()?;
    let client = req.client.clone();
    let v = app
        .call(move |core| core.add_own_totp_app(&client, &s, &b.name))
        .await?;
    Ok(json_resp(StatusCode::CREATED, &v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TotpConfirmBody {
    code: String,
}

/// `POST /v1/me/totp/{id}/confirm {"code"}` → `{"id","name","confirmed":true}`; a wrong
/// code is 400 `invalid_code` (counted toward the lockout, as at enrolment).
pub async fn me_totp_confirm(app: &App, req: Req, id: String) -> Result<Resp, ApiError> {
    let s = session_of(app, &req).await?;
    let id = id_of(&id)?;
    let b: TotpConfirmBody = req.json()?;
    let client = req.client.clone();
    match app
        .call(move |core| core.confirm_own_totp_app(&client, &s, id, &b.code))
        .await?
    {
        Some(v) => Ok(json_resp(StatusCode::OK, &v)),
        None => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_code",
            "that is not the app's current code: type the code it shows now",
        )),
    }
}

/// `DELETE /v1/me/totp/{id}` → 204: one authenticator app removed, not the last
/// (re-authentication needed).
pub async fn me_totp_delete(app: &App, req: Req, id: String) -> Result<Resp, ApiError> {
    let s = session_of(app, &req).await?;
    let id = id_of(&id)?;
    let client = req.client.clone();
    app.call(move |core| core.remove_own_totp_app(&client, &s, id))
        .await?;
    Ok(empty_resp(StatusCode::NO_CONTENT))
}

fn id_of(segment: &str) -> Result<i64, ApiError> {
    segment
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::bad_request("the id must be a positive whole number"))
}

/// `POST /v1/me/sessions/{id}/revoke`: end one of one's own sessions (404 otherwise).
pub async fn me_session_revoke(app: &App, req: Req, id: String) -> Result<Resp, ApiError> {
    let s = session_of(app, &req).await?;
    let id = id_of(&id)?;
    let client = req.client.clone();
    app.call(move |core| core.revoke_own_session(&client, &s, id))
        .await?;
    Ok(empty_resp(StatusCode::NO_CONTENT))
}

/// `POST /v1/me/sessions/revoke-others`: end every session but this one.
pub async fn me_sessions_revoke_others(app: &App, req: Req) -> Result<Resp, ApiError> {
    let s = session_of(app, &req).await?;
    let client = req.client.clone();
    let n = app
        .call(move |core| core.revoke_other_sessions(&client, &s))
        .await?;
    Ok(json_resp(StatusCode::OK, &json!({"revoked": n})))
}

/// `POST /v1/me/devices/{id}/revoke`: forget one of one's own devices (404 otherwise).
pub async fn me_device_revoke(app: &App, req: Req, id: String) -> Result<Resp, ApiError> {
    let s = session_of(app, &req).await?;
    let id = id_of(&id)?;
    let client = req.client.clone();
    let ok = app
        .call(move |core| core.revoke_own_device(&client, &s, id, Door::Api))
        .await?;
    if ok {
        Ok(empty_resp(StatusCode::NO_CONTENT))
    } else {
        Err(ApiError::from(authcore::Error::NotFound(format!(
            "no remembered device {id} of yours"
        ))))
    }
}

/// `POST /v1/me/devices/revoke-all`: forget every remembered device.
pub async fn me_devices_revoke_all(app: &App, req: Req) -> Result<Resp, ApiError> {
    let s = session_of(app, &req).await?;
    let client = req.client.clone();
    let n = app
        .call(move |core| core.revoke_all_own_devices(&client, &s))
        .await?;
    Ok(json_resp(StatusCode::OK, &json!({"revoked": n})))
}

// ---- Admin API -------------------------------------------------------------------

/// The admin behind the Bearer token: an org-admin or admin session, else 401/403.
async fn admin_of(app: &App, req: &Req) -> Result<SessionInfo, ApiError> {
    let s = session_of(app, req).await?;
    if s.role == Role::User {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this needs an org-admin or admin account",
        ));
    }
    Ok(s)
}

/// The acting admin of an API request (tenancy and role checks are the core's).
async fn api_actor(app: &App, req: &Req) -> Result<Actor, ApiError> {
    let s = admin_of(app, req).await?;
    Ok(Actor::session(&s, &req.client, Door::Api)?)
}

/// The public admin view of a user.
pub(crate) fn user_json(u: &User) -> serde_json::Value {
    json!({
        "id": u.id, "username": u.username, "email": u.email, "org": u.org, "role": u.role,
        "status": u.status, "locked_at": u.locked_at.map(authcore::util::rfc3339),
        "failed_attempts": u.failed_attempts, "mfa_method": u.mfa_method, "groups": u.groups,
        "locked_until": u.locked_until.map(authcore::util::rfc3339),
        "unfamiliar_locked": u.unfamiliar_locked, "unfamiliar_failures": u.unfamiliar_failures,
        "must_change_password": u.must_change_password,
        "password_changed_at": u.password_changed_at.map(authcore::util::rfc3339),
    })
}

pub async fn admin_users(app: &App, req: Req) -> Result<Resp, ApiError> {
    let actor = api_actor(app, &req).await?;
    let locked = matches!(req.query("locked"), Some("true" | "1" | "yes"));
    let list = app
        .call(move |core| core.admin_list_users(&actor, locked))
        .await?;
    let v: Vec<_> = list.iter().map(user_json).collect();
    Ok(json_resp(StatusCode::OK, &json!({"users": v})))
}

pub async fn admin_user(app: &App, req: Req, name: String) -> Result<Resp, ApiError> {
    let actor = api_actor(app, &req).await?;
    let u = app
        .call(move |core| core.admin_show_user(&actor, &name))
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(json_resp(StatusCode::OK, &user_json(&u)))
}

pub async fn admin_unlock(app: &App, req: Req, name: String) -> Result<Resp, ApiError> {
    let actor = api_actor(app, &req).await?;
    let (u, was_locked) = app
        .call(move |core| core.admin_unlock(&actor, &name))
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(json_resp(
        StatusCode::OK,
        &json!({"username": u.username, "was_locked": was_locked}),
    ))
}

pub async fn admin_reset_2fa(app: &App, req: Req, name: String) -> Result<Resp, ApiError> {
    let actor = api_actor(app, &req).await?;
    let (u, s) = app
        .call(move |core| core.admin_reset_2fa(&actor, &name))
        .await?
        .ok_or_else(ApiError::not_found)?;
    let mut v = serde_json::to_value(&s).unwrap_or_default();
    v["username"] = json!(u.username);
    Ok(json_resp(StatusCode::OK, &v))
}

pub async fn admin_audit(app: &App, req: Req) -> Result<Resp, ApiError> {
    let actor = api_actor(app, &req).await?;
    let t = app.core.now();
    let since = req
        .query("since")
        .map(|s| authcore::util::parse_time(s, t))
        .transpose()
        .map_err(|e| ApiError::bad_request(&e))?;
    let until = req
        .query("until")
        .map(|s| authcore::util::parse_time(s, t))
        .transpose()
        .map_err(|e| ApiError::bad_request(&e))?;
    let outcome = match req.query("outcome") {
        None => None,
        Some("success") => Some(Outcome::Success),
        Some("failure") => Some(Outcome::Failure),
        Some(_) => return Err(ApiError::bad_request("outcome is success or failure")),
    };
    let limit = match req.query("limit") {
        None => 100,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| ApiError::bad_request("limit is a number from 1 to 1000"))?,
    };
    let filter = audit::Filter {
        user: req.query("user").map(str::to_string),
        // The core confines an org admin to their organisation.
        org_id: None,
        event: req.query("event").map(str::to_string),
        outcome,
        ip: None,
        since,
        until,
        after_id: None,
        limit: Some(limit),
    };
    let rows = app
        .call(move |core| core.audit_query(&actor, &filter))
        .await?;
    Ok(json_resp(StatusCode::OK, &json!({"rows": rows})))
}
