//! Request handlers: parse the body, run the core decision off the reactor, answer.

use std::sync::Arc;

use authcore::audit::{self, Entry, Outcome};
use authcore::kinds::AuditEvent;
use authcore::login::{self, Decision, SessionInfo};
use authcore::policy::Policy;
use authcore::store::factors;
use authcore::store::users::{self, Role, User};
use authcore::util::now;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::app::{empty_resp, json_resp, text_resp, ApiError, App, Req, Resp};
use crate::session_cache::Checked;

pub async fn healthz(app: &App) -> Result<Resp, ApiError> {
    let ok = app
        .db(|conn, _| Ok(conn.query_row("SELECT count(*) FROM meta", [], |r| r.get::<_, i64>(0))?))
        .await;
    Ok(match ok {
        Ok(_) => text_resp(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into()),
        Err(_) => text_resp(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "database unavailable\n".into(),
        ),
    })
}

pub fn metrics(app: &App) -> Resp {
    text_resp(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        app.metrics.render() + &app.writer.render_metrics(),
    )
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
    let sent = match app.mailer.as_ref() {
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
async fn decided<T: serde::Serialize>(app: &App, mut d: Decision<T>) -> Result<Resp, ApiError> {
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
        .db_hashing(move |conn, key| {
            login::password_step(
                conn,
                key,
                &client,
                &b.username,
                &b.password,
                b.device_token.as_deref(),
                now(),
            )
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
        .write(move |conn, key| login::terms_step(conn, key, &client, &b.flow, b.accept, now()))
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
        .db_hashing(move |conn, key| {
            login::expired_password_step(
                conn,
                key,
                &client,
                &b.flow,
                &b.new_password,
                &b.confirm_password,
                now(),
            )
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

pub async fn login_enroll(app: &App, req: Req) -> Result<Resp, ApiError> {
    let b: FlowBody = req.json()?;
    let client = req.client.clone();
    let d = app
        .db(move |conn, key| login::enroll_step(conn, key, &client, &b.flow, now()))
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

pub async fn login_enroll_confirm(app: &App, req: Req) -> Result<Resp, ApiError> {
    let b: CodeBody = req.json()?;
    let client = req.client.clone();
    let d = app
        .write(move |conn, key| {
            login::enroll_confirm_step(conn, key, &client, &b.flow, &b.code, now())
        })
        .await?;
    decided(app, d).await
}

pub async fn login_totp(app: &App, req: Req) -> Result<Resp, ApiError> {
    let b: CodeBody = req.json()?;
    let client = req.client.clone();
    let d = app
        .write(move |conn, key| {
            login::totp_step(
                conn,
                key,
                &client,
                &b.flow,
                &b.code,
                b.remember_device,
                now(),
            )
        })
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
        .write(move |conn, key| {
            login::email_step(
                conn,
                key,
                &client,
                &b.flow,
                &b.code,
                b.remember_device,
                now(),
            )
        })
        .await?;
    decided(app, d).await
}

pub async fn login_email_resend(app: &App, req: Req) -> Result<Resp, ApiError> {
    let b: FlowBody = req.json()?;
    let client = req.client.clone();
    let d = app
        .write(move |conn, key| login::email_resend_step(conn, key, &client, &b.flow, now()))
        .await?;
    decided(app, d).await
}

pub async fn login_recovery(app: &App, req: Req) -> Result<Resp, ApiError> {
    let b: RecoveryBody = req.json()?;
    let client = req.client.clone();
    let d = app
        .write(move |conn, key| login::recovery_step(conn, key, &client, &b.flow, &b.code, now()))
        .await?;
    decided(app, d).await
}

/// The live session of the Bearer token (from memory when it can be, see
/// session_cache.rs), or 401.
async fn checked_session(app: &App, req: &Req) -> Result<Arc<Checked>, ApiError> {
    let token = req.bearer().ok_or_else(ApiError::unauthorized)?;
    app.sessions
        .check(app, token, now())
        .await?
        .ok_or_else(ApiError::unauthorized)
}

/// The session of the Bearer token, or 401.
async fn session_of(app: &App, req: &Req) -> Result<SessionInfo, ApiError> {
    Ok(checked_session(app, req).await?.info.clone())
}

pub async fn session(app: &App, req: Req) -> Result<Resp, ApiError> {
    Ok(checked_session(app, &req).await?.answer())
}

pub async fn logout(app: &App, req: Req) -> Result<Resp, ApiError> {
    let token = req.bearer().ok_or_else(ApiError::unauthorized)?.to_string();
    let client = req.client.clone();
    if app
        .write(move |conn, _| login::logout(conn, &client, &token, now()))
        .await?
    {
        Ok(empty_resp(StatusCode::NO_CONTENT))
    } else {
        Err(ApiError::unauthorized())
    }
}

pub async fn password_policy(app: &App) -> Result<Resp, ApiError> {
    let p = app.db(|conn, _| Policy::load(conn)).await?;
    Ok(json_resp(
        StatusCode::OK,
        &json!({"rules": p.password.rules()}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    password: String,
}

pub async fn password_check(app: &App, req: Req) -> Result<Resp, ApiError> {
    let b: CheckBody = req.json()?;
    let p = app.db(|conn, _| Policy::load(conn)).await?;
    let rules = p.password.check(&b.password);
    let ok = authcore::password::PasswordPolicy::is_ok(&rules);
    Ok(json_resp(
        StatusCode::OK,
        &json!({"ok": ok, "rules": rules}),
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
        .db_hashing(move |conn, _| {
            login::change_password(
                conn,
                &client,
                s.user_id,
                &b.current_password,
                &b.new_password,
                &b.confirm_password,
                now(),
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
        .db_hashing(move |conn, _| {
            let policy = Policy::load(conn)?;
            let prepared = authcore::forgot::prepare_questions(&b.questions, &policy)?;
            authcore::forgot::store_questions(conn, &client, s.user_id, &prepared, now())?;
            authcore::forgot::questions(conn, s.user_id)
        })
        .await?;
    Ok(json_resp(StatusCode::OK, &json!({"questions": questions})))
}

pub async fn get_security_questions(app: &App, req: Req) -> Result<Resp, ApiError> {
    let s = session_of(app, &req).await?;
    let questions = app
        .db(move |conn, _| authcore::forgot::questions(conn, s.user_id))
        .await?;
    Ok(json_resp(StatusCode::OK, &json!({"questions": questions})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForgotBody {
    username: String,
}

pub async fn password_forgot(app: &App, req: Req) -> Result<Resp, ApiError> {
    let b: ForgotBody = req.json()?;
    let client = req.client.clone();
    let d = app
        .db(move |conn, key| authcore::forgot::forgot(conn, key, &client, &b.username, now()))
        .await?;
    // Unknown names and names without questions are answered alike: always 200.
    let v = d.result?;
    Ok(json_resp(StatusCode::OK, &v))
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
        .db_hashing(move |conn, _| {
            authcore::forgot::reset(
                conn,
                &client,
                &b.flow,
                &b.answers,
                &b.new_password,
                &b.confirm_password,
                now(),
            )
        })
        .await?;
    decided(app, d).await
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

/// The public admin view of a user.
fn user_json(u: &User) -> serde_json::Value {
    json!({
        "id": u.id, "username": u.username, "email": u.email, "org": u.org, "role": u.role,
        "status": u.status, "locked_at": u.locked_at.map(authcore::util::rfc3339),
        "failed_attempts": u.failed_attempts, "mfa_method": u.mfa_method, "groups": u.groups,
        "must_change_password": u.must_change_password,
        "password_changed_at": u.password_changed_at.map(authcore::util::rfc3339),
    })
}

fn admin_entry(
    event: AuditEvent,
    outcome: Outcome,
    admin: &SessionInfo,
    req_client: &authcore::login::Client,
    via: &str,
) -> Entry {
    Entry::new(event, outcome)
        .client(&req_client.ip, &req_client.user_agent)
        .actor(&admin.user.username)
        .detail(json!({"via": via, "admin_id": admin.user_id}))
}

/// Find `name` as `admin` may see it: another org's user is exactly as missing as a
/// user that does not exist (and the attempt is audited).
fn visible_user(
    conn: &rusqlite::Connection,
    admin: &SessionInfo,
    client: &authcore::login::Client,
    event: AuditEvent,
    name: &str,
    via: &str,
    t: i64,
) -> authcore::Result<Option<User>> {
    let u = users::find(conn, name)?;
    match u {
        Some(u) if admin.role == Role::Admin || u.org_id == admin.org_id => Ok(Some(u)),
        other => {
            let reason = if other.is_some() {
                "other_org"
            } else {
                "unknown_user"
            };
            audit::record(
                conn,
                &admin_entry(event, Outcome::Failure, admin, client, via)
                    .username(name)
                    .org(Some(admin.org_id))
                    .reason(reason),
                t,
            )?;
            Ok(None)
        }
    }
}

/// The users `admin` may manage (their org's; every user for an admin).
pub(crate) fn visible_users(
    conn: &rusqlite::Connection,
    admin: &SessionInfo,
    locked: bool,
) -> authcore::Result<Vec<User>> {
    let org_id = (admin.role != Role::Admin).then_some(admin.org_id);
    users::list(
        conn,
        &users::ListFilter {
            org_id,
            locked,
            group_id: None,
            limit: Some(10_000),
        },
    )
}

pub async fn admin_users(app: &App, req: Req) -> Result<Resp, ApiError> {
    let admin = admin_of(app, &req).await?;
    let locked = matches!(req.query("locked"), Some("true" | "1" | "yes"));
    let list = app
        .db(move |conn, _| visible_users(conn, &admin, locked))
        .await?;
    let v: Vec<_> = list.iter().map(user_json).collect();
    Ok(json_resp(StatusCode::OK, &json!({"users": v})))
}

/// One user as `admin` may see them (audited as `admin.user.show` when refused).
/// `via` names the door in audit rows: "api" or "portal".
pub(crate) fn show_user(
    conn: &mut rusqlite::Connection,
    admin: &SessionInfo,
    client: &authcore::login::Client,
    name: &str,
    via: &str,
) -> authcore::Result<Option<User>> {
    let t = now();
    let tx = authcore::db::write_tx(conn)?;
    let u = visible_user(&tx, admin, client, AuditEvent::AdminUserShow, name, via, t)?;
    tx.commit()?;
    Ok(u)
}

pub async fn admin_user(app: &App, req: Req, name: String) -> Result<Resp, ApiError> {
    let admin = admin_of(app, &req).await?;
    let client = req.client.clone();
    let u = app
        .db(move |conn, _| show_user(conn, &admin, &client, &name, "api"))
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(json_resp(StatusCode::OK, &user_json(&u)))
}

/// Org admins manage their org's plain users; admin and org-admin accounts are managed
/// by admins, so an org admin cannot take over a peer's or a superior's account. A refusal
/// is audited (reason `insufficient_role`).
fn may_manage(
    conn: &rusqlite::Connection,
    admin: &SessionInfo,
    client: &authcore::login::Client,
    event: AuditEvent,
    target: &User,
    via: &str,
    t: i64,
) -> authcore::Result<Result<(), authcore::Error>> {
    if admin.role == Role::Admin || target.role == Role::User {
        return Ok(Ok(()));
    }
    audit::record(
        conn,
        &admin_entry(event, Outcome::Failure, admin, client, via)
            .username(&target.username)
            .user(target.id, target.org_id)
            .reason("insufficient_role"),
        t,
    )?;
    Ok(Err(authcore::Error::Forbidden(
        "org admins manage plain users only; an admin manages admin and org-admin accounts".into(),
    )))
}

/// One admin action on `name` on behalf of `admin`, in one transaction: find the user
/// as the admin may see them (None when not visible), refuse accounts the admin may not
/// manage, apply `act` (its value, and the detail to audit besides `via` and the
/// admin's id), and audit `event` with the admin as actor.
fn admin_action<T>(
    conn: &mut rusqlite::Connection,
    admin: &SessionInfo,
    client: &authcore::login::Client,
    (event, name, via): (AuditEvent, &str, &str),
    act: impl FnOnce(&rusqlite::Connection, &User, i64) -> authcore::Result<(T, serde_json::Value)>,
) -> authcore::Result<Option<(String, T)>> {
    let t = now();
    let tx = authcore::db::write_tx(conn)?;
    let Some(u) = visible_user(&tx, admin, client, event, name, via, t)? else {
        tx.commit()?;
        return Ok(None);
    };
    if let Err(e) = may_manage(&tx, admin, client, event, &u, via, t)? {
        tx.commit()?;
        return Err(e);
    }
    let (value, mut detail) = act(&tx, &u, t)?;
    detail["via"] = json!(via);
    detail["admin_id"] = json!(admin.user_id);
    audit::record(
        &tx,
        &admin_entry(event, Outcome::Success, admin, client, via)
            .username(&u.username)
            .user(u.id, u.org_id)
            .detail(detail),
        t,
    )?;
    tx.commit()?;
    Ok(Some((u.username, value)))
}

/// Unlock `name` on behalf of `admin` (audited `admin.unlock`, the admin as actor):
/// the user's name and whether they were locked, or None when not visible.
pub(crate) fn unlock_user(
    conn: &mut rusqlite::Connection,
    admin: &SessionInfo,
    client: &authcore::login::Client,
    name: &str,
    via: &str,
) -> authcore::Result<Option<(String, bool)>> {
    admin_action(
        conn,
        admin,
        client,
        (AuditEvent::AdminUnlock, name, via),
        |tx, u, t| {
            let was_locked = users::unlock(tx, u.id, t)?;
            Ok((was_locked, json!({"was_locked": was_locked})))
        },
    )
}

pub async fn admin_unlock(app: &App, req: Req, name: String) -> Result<Resp, ApiError> {
    let admin = admin_of(app, &req).await?;
    let client = req.client.clone();
    let r = app
        .db(move |conn, _| unlock_user(conn, &admin, &client, &name, "api"))
        .await?;
    let (username, was_locked) = r.ok_or_else(ApiError::not_found)?;
    Ok(json_resp(
        StatusCode::OK,
        &json!({"username": username, "was_locked": was_locked}),
    ))
}

/// Reset `name`'s second factor on behalf of `admin` (audited `admin.reset_2fa`, the
/// admin as actor): the user's name and what was removed, or None when not visible.
pub(crate) fn reset_user_2fa(
    conn: &mut rusqlite::Connection,
    admin: &SessionInfo,
    client: &authcore::login::Client,
    name: &str,
    via: &str,
) -> authcore::Result<Option<(String, factors::ResetSummary)>> {
    admin_action(
        conn,
        admin,
        client,
        (AuditEvent::AdminReset2fa, name, via),
        |tx, u, t| {
            let s = factors::reset_2fa(tx, u.id, t)?;
            let detail = json!({"removed": s});
            Ok((s, detail))
        },
    )
}

pub async fn admin_reset_2fa(app: &App, req: Req, name: String) -> Result<Resp, ApiError> {
    let admin = admin_of(app, &req).await?;
    let client = req.client.clone();
    let r = app
        .db(move |conn, _| reset_user_2fa(conn, &admin, &client, &name, "api"))
        .await?;
    let (username, s) = r.ok_or_else(ApiError::not_found)?;
    let mut v = serde_json::to_value(&s).unwrap_or_default();
    v["username"] = json!(username);
    Ok(json_resp(StatusCode::OK, &v))
}

pub async fn admin_audit(app: &App, req: Req) -> Result<Resp, ApiError> {
    let admin = admin_of(app, &req).await?;
    let t = now();
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
        org_id: (admin.role != Role::Admin).then_some(admin.org_id),
        event: req.query("event").map(str::to_string),
        outcome,
        ip: None,
        since,
        until,
        after_id: None,
        limit: Some(limit),
    };
    let rows = app.db(move |conn, _| audit::query(conn, &filter)).await?;
    Ok(json_resp(StatusCode::OK, &json!({"rows": rows})))
}
