//! A user's own security page (`/v1/me/…` and the portal's `/security`): what protects
//! the account, its sessions and remembered devices, its recent sign-ins and failed
//! attempts, and the actions on them.
//!
//! Ending one's own sessions or devices needs only the session. Changing a factor
//! (regenerating recovery codes, removing the authenticator app) needs a fresh
//! re-authentication of this session: the password and the second factor within the
//! last [`REAUTH_SECONDS`] (a user whose second factor is emailed codes asks for one
//! with [`send_reauth_code`]). A failed re-authentication counts toward the lockout as a
//! failed sign-in from the session's address would. Every action is audited; a session
//! or device of another user is refused exactly as a missing one (404).

use crate::sql::Connection;
use serde::Serialize;
use serde_json::json;

use crate::audit::{self, Entry, Outcome};
use crate::crypto::SecretKey;
use crate::db;
use crate::error::{Error, Result};
use crate::kinds::{AuditEvent, LoginStep, MfaMethod};
use crate::login::{Client, Decision, SessionInfo, Status};
use crate::password::{self, Hashing};
use crate::policy::Policy;
use crate::store::security::{self as store, Activity};
use crate::store::{email, factors, familiar, sessions, users};

/// How long a re-authentication allows factor changes.
pub const REAUTH_SECONDS: i64 = 5 * 60;
/// How many sign-ins and failed attempts the page lists.
pub const ACTIVITY: i64 = 20;

/// One of the user's live sessions.
#[derive(Debug, Clone, Serialize)]
pub struct MySession {
    pub id: i64,
    pub ip: String,
    pub user_agent: String,
    pub created_at: String,
    pub last_seen_at: String,
    /// The session asking.
    pub current: bool,
}

/// One of the user's remembered devices.
#[derive(Debug, Clone, Serialize)]
pub struct MyDevice {
    pub id: i64,
    pub user_agent: String,
    pub created_at: String,
    pub expires_at: String,
}

/// What protects the account.
#[derive(Debug, Clone, Serialize)]
pub struct Factors {
    pub password: bool,
    /// `totp`, `email` or none.
    pub second_factor: Option<MfaMethod>,
    pub recovery_codes_left: i64,
    /// The user's authenticator apps, oldest first.
    pub authenticators: Vec<Authenticator>,
}

/// One of the user's authenticator apps (`GET /v1/me/security`).
#[derive(Debug, Clone, Serialize)]
pub struct Authenticator {
    pub id: i64,
    pub name: String,
    pub created_at: String,
    /// Whether its first code confirmed it (an unconfirmed app signs nobody in).
    pub confirmed: bool,
}

impl From<factors::TotpApp> for Authenticator {
    fn from(a: factors::TotpApp) -> Authenticator {
        Authenticator {
            id: a.id,
            name: a.name,
            created_at: t(a.created_at),
            confirmed: a.confirmed_at.is_some(),
        }
    }
}

/// `POST /v1/me/totp`: an authenticator app added, to be confirmed with its first code.
#[derive(Debug, Clone, Serialize)]
pub struct AddedApp {
    pub id: i64,
    pub name: String,
    /// Base32, for typing into the app.
    pub secret: String,
    pub otpauth_uri: String,
}

/// `POST /v1/me/totp/{id}/confirm`.
#[derive(Debug, Clone, Serialize)]
pub struct ConfirmedApp {
    pub id: i64,
    pub name: String,
    pub confirmed: bool,
}

/// One line of recent activity, with its time as text.
#[derive(Debug, Clone, Serialize)]
pub struct ActivityView {
    pub at: String,
    pub kind: &'static str,
    pub step: String,
    pub ip: String,
    pub user_agent: String,
}

/// `GET /v1/me/security`.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub username: String,
    pub factors: Factors,
    pub sessions: Vec<MySession>,
    pub devices: Vec<MyDevice>,
    pub activity: Vec<ActivityView>,
    /// Until when factor changes are allowed without re-authenticating; absent when
    /// they need it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reauthenticated_until: Option<String>,
}

fn t(s: i64) -> String {
    crate::util::rfc3339(s)
}

/// The security page of the session's user.
pub fn overview(conn: &Connection, s: &SessionInfo, now: i64) -> Result<Overview> {
    let user = users::by_id(conn, s.user_id)?;
    let sessions = sessions::list(conn, Some(s.user_id), now)?
        .into_iter()
        .map(|x| MySession {
            current: x.id == s.session.id,
            id: x.id,
            ip: x.ip,
            user_agent: x.user_agent,
            created_at: t(x.created_at),
            last_seen_at: t(x.last_seen_at),
        })
        .collect();
    let devices = factors::list_devices(conn, Some(s.user_id), now)?
        .into_iter()
        .map(|d| MyDevice {
            id: d.id,
            user_agent: d.user_agent,
            created_at: t(d.created_at),
            expires_at: t(d.expires_at),
        })
        .collect();
    let activity = store::recent_activity(conn, s.user_id, ACTIVITY)?
        .into_iter()
        .map(|a: Activity| ActivityView {
            at: t(a.at),
            kind: a.kind,
            step: a.step,
            ip: a.ip,
            user_agent: a.user_agent,
        })
        .collect();
    let until = store::reauth_at(conn, s.session.id)?
        .map(|at| at + REAUTH_SECONDS)
        .filter(|u| *u > now);
    Ok(Overview {
        username: user.username.clone(),
        factors: Factors {
            password: user.password_hash.is_some(),
            second_factor: user.mfa_method,
            recovery_codes_left: factors::remaining_recovery_codes(conn, s.user_id)?,
            authenticators: factors::list_totp(conn, s.user_id)?
                .into_iter()
                .map(Authenticator::from)
                .collect(),
        },
        sessions,
        devices,
        activity,
        reauthenticated_until: until.map(t),
    })
}

fn entry(event: AuditEvent, outcome: Outcome, client: &Client, s: &SessionInfo) -> Entry {
    Entry::new(event, outcome)
        .client(&client.ip, &client.user_agent)
        .username(&s.user.username)
        .user(s.user_id, s.org_id)
        .actor(&s.user.username)
}

/// Confirm the password and the second factor again (slow: argon2). Wrong ones are the
/// generic refusal and count toward the lockout.
#[allow(clippy::too_many_arguments)]
pub fn reauthenticate(
    hashing: &Hashing,
    conn: &mut Connection,
    key: &SecretKey,
    client: &Client,
    s: &SessionInfo,
    password_typed: &str,
    code: Option<&str>,
    now: i64,
) -> Result<String> {
    let policy = Policy::load(conn)?;
    let user = users::by_id(conn, s.user_id)?;
    let password_ok = match &user.password_hash {
        Some(h) => password::verify_password(hashing, password_typed, h),
        None => password::dummy_verify(hashing, password_typed, policy.argon2),
    };
    let tx = db::write_tx(conn)?;
    let code_ok = match user.mfa_method {
        None => true,
        Some(MfaMethod::Totp) => match code {
            Some(c) if password_ok => factors::check_totp(
                &tx,
                key,
                s.user_id,
                factors::Apps::Confirmed,
                c,
                now,
                policy.totp_skew,
            )?
            .is_ok(),
            _ => false,
        },
        // The code mailed to this session by `send_reauth_code` (six digits), used once.
        Some(MfaMethod::Email) => match code {
            Some(c) if password_ok && is_email_code(c) => {
                match store::reauth_flow(&tx, s.user_id, &reauth_data(s), now)? {
                    Some(flow_id) => {
                        let ok = email::check(
                            &tx,
                            key,
                            flow_id,
                            s.user_id,
                            c.trim(),
                            policy.email_otp_max_tries,
                            now,
                        )? == email::Check::Ok;
                        if ok {
                            sessions::consume_flow(&tx, flow_id, now)?;
                        }
                        ok
                    }
                    None => false,
                }
            }
            _ => false,
        },
    };
    let code_ok = code_ok
        || (password_ok
            && code.is_some_and(|c| {
                factors::use_recovery_code(&tx, key, s.user_id, c, now)
                    .ok()
                    .flatten()
                    .is_some()
            }));
    if password_ok && code_ok {
        store::set_reauth(&tx, s.session.id, now)?;
        audit::record(
            &tx,
            &entry(AuditEvent::SecurityReauth, Outcome::Success, client, s),
            now,
        )?;
        tx.commit()?;
        return Ok(t(now + REAUTH_SECONDS));
    }
    let reason = if password_ok {
        "wrong_code"
    } else {
        "wrong_password"
    };
    count_failure(
        tx,
        &policy,
        client,
        s,
        AuditEvent::SecurityReauth,
        reason,
        now,
    )?;
    Err(Error::InvalidCredentials)
}

/// Count a failed factor of this session's user toward the lockout (as a failed sign-in
/// from the session's address would), audit it, and commit.
fn count_failure(
    tx: db::WriteTx,
    policy: &Policy,
    client: &Client,
    s: &SessionInfo,
    event: AuditEvent,
    reason: &'static str,
    now: i64,
) -> Result<()> {
    let lock = policy.lockout();
    let source = familiar::source_of(&tx, s.user_id, &client.ip, None, lock.familiar_days, now)?;
    users::record_failure_from(&tx, s.user_id, &lock, source, now)?;
    audit::record(
        &tx,
        &entry(event, Outcome::Failure, client, s)
            .reason(reason)
            .detail(source.detail()),
        now,
    )?;
    tx.commit()?;
    Ok(())
}

/// Whether a typed code has the form of an emailed one (six digits, spaces allowed).
fn is_email_code(code: &str) -> bool {
    let c: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit())
}

/// The `data` of a session's re-authentication flow: what finds it again.
fn reauth_data(s: &SessionInfo) -> String {
    json!({"session": s.session.id}).to_string()
}

/// Mail a code that re-authenticates this session (with the password), for a user whose
/// second factor is emailed codes: `{"status":"code_sent","expires_at"}` and the mail to
/// send. The code is bound to a flow of this session alone (its token is never given
/// out), so a sign-in elsewhere cannot use it, nor this page a sign-in's code. Resends
/// wait `email_otp.resend_seconds`; each new code supersedes the last.
pub fn send_reauth_code(
    conn: &mut Connection,
    key: &SecretKey,
    client: &Client,
    s: &SessionInfo,
    now: i64,
) -> Result<Decision<Status>> {
    let policy = Policy::load(conn)?;
    let user = users::by_id(conn, s.user_id)?;
    let tx = db::write_tx(conn)?;
    let base = entry(AuditEvent::SecurityReauthCode, Outcome::Failure, client, s);
    if user.mfa_method != Some(MfaMethod::Email) {
        audit::record(&tx, &base.reason("method_not_enrolled"), now)?;
        tx.commit()?;
        return Ok(Decision::refused(
            Error::Invalid(
                "your second factor is not emailed codes: confirm with the code of your authenticator app (or a recovery code)".into(),
            ),
            "method_not_enrolled",
        ));
    }
    let data = reauth_data(s);
    let flow_id = match store::reauth_flow(&tx, s.user_id, &data, now)? {
        Some(id) => id,
        None => {
            let ttl = policy.email_otp_ttl_minutes * 60;
            let token = sessions::create_flow(&tx, s.user_id, LoginStep::Reauth, &data, ttl, now)?;
            match sessions::find_flow(&tx, &token, LoginStep::Reauth, now)? {
                Some(f) => f.id,
                None => return Err(Error::Io("the new re-authentication flow vanished".into())),
            }
        }
    };
    let sent = entry(AuditEvent::SecurityReauthCode, Outcome::Success, client, s);
    crate::login::mail_code(tx, key, &user, &policy, flow_id, sent, base, now)
}

/// Refuse unless the session re-authenticated within [`REAUTH_SECONDS`].
fn require_reauth(conn: &Connection, s: &SessionInfo, now: i64) -> Result<()> {
    require_reauth_of(conn, s.session.id, now)
}

/// [`require_reauth`] in `tx`; a refusal is audited as `event` (reason
/// `reauth_required`) and committed, and given back as the error.
fn reauth_or_refuse<'c>(
    tx: db::WriteTx<'c>,
    client: &Client,
    s: &SessionInfo,
    event: AuditEvent,
    now: i64,
) -> Result<db::WriteTx<'c>> {
    if let Err(e) = require_reauth(&tx, s, now) {
        audit::record(
            &tx,
            &entry(event, Outcome::Failure, client, s).reason("reauth_required"),
            now,
        )?;
        tx.commit()?;
        return Err(e);
    }
    Ok(tx)
}

fn require_reauth_of(conn: &Connection, session_id: i64, now: i64) -> Result<()> {
    match store::reauth_at(conn, session_id)? {
        Some(at) if now - at < REAUTH_SECONDS && at <= now => Ok(()),
        _ => Err(Error::Forbidden(
            "re-authenticate first: confirm your password and second factor (POST /v1/me/reauth); it allows this for 5 minutes".into(),
        )),
    }
}

/// New recovery codes in place of the old ones (needs a fresh re-authentication).
pub fn regenerate_recovery_codes(
    conn: &mut Connection,
    key: &SecretKey,
    client: &Client,
    s: &SessionInfo,
    now: i64,
) -> Result<Vec<String>> {
    let policy = Policy::load(conn)?;
    let tx = reauth_or_refuse(
        db::write_tx(conn)?,
        client,
        s,
        AuditEvent::RecoveryRegenerate,
        now,
    )?;
    let user = users::by_id(&tx, s.user_id)?;
    if user.mfa_method.is_none() {
        return Err(Error::Invalid(
            "recovery codes belong to a second factor: this account has none".into(),
        ));
    }
    let codes = factors::rotate_recovery_codes(&tx, key, s.user_id, policy.recovery_count, now)?;
    audit::record(
        &tx,
        &entry(AuditEvent::RecoveryRegenerate, Outcome::Success, client, s)
            .detail(json!({"count": codes.len()})),
        now,
    )?;
    tx.commit()?;
    Ok(codes)
}

/// Remove the authenticator app (needs a fresh re-authentication). Its recovery codes
/// and remembered devices go with it, every session ends; a user whom policy requires to
/// have a second factor enrols again at the next sign-in.
pub fn remove_totp(
    conn: &mut Connection,
    client: &Client,
    s: &SessionInfo,
    now: i64,
) -> Result<()> {
    let tx = reauth_or_refuse(
        db::write_tx(conn)?,
        client,
        s,
        AuditEvent::FactorRemove,
        now,
    )?;
    let user = users::by_id(&tx, s.user_id)?;
    if user.mfa_method != Some(MfaMethod::Totp) {
        return Err(Error::NotFound(
            "this account has no authenticator app".into(),
        ));
    }
    // The seed's reset: secret, codes and devices go, every session ends (this one too),
    // and the user is mailed a notice.
    factors::reset_2fa(&tx, s.user_id, now)?;
    audit::record(
        &tx,
        &entry(AuditEvent::FactorRemove, Outcome::Success, client, s)
            .detail(json!({"factor": "totp"})),
        now,
    )?;
    tx.commit()?;
    Ok(())
}

/// Add an authenticator app named `name` (needs a fresh re-authentication): an
/// unconfirmed app, its secret and `otpauth://` URI, shown once. Only for a user whose
/// second factor is authenticator apps (and whom policy does not hold to passkeys); a
/// name is 1 to 64 characters, unique among the user's apps, and a user has at most
/// [`factors::MAX_APPS`] (409 otherwise).
pub fn add_totp_app(
    conn: &mut Connection,
    key: &SecretKey,
    client: &Client,
    s: &SessionInfo,
    name: &str,
    now: i64,
) -> Result<AddedApp> {
    let policy = Policy::load(conn)?;
    let tx = reauth_or_refuse(db::write_tx(conn)?, client, s, AuditEvent::TotpAdd, now)?;
    let refuse = |tx: db::WriteTx, reason: &'static str, e: Error| -> Result<AddedApp> {
        audit::record(
            &tx,
            &entry(AuditEvent::TotpAdd, Outcome::Failure, client, s).reason(reason),
            now,
        )?;
        tx.commit()?;
        Err(e)
    };
    let user = users::by_id(&tx, s.user_id)?;
    if crate::login::passkey_required(&tx, &user, policy.mfa_passkey_required)? {
        return refuse(
            tx,
            "passkey_required",
            Error::Forbidden(
                "this account must use a passkey: add one with POST /v1/me/passkeys".into(),
            ),
        );
    }
    if user.mfa_method != Some(MfaMethod::Totp) || !factors::has_confirmed_totp(&tx, s.user_id)? {
        return refuse(
            tx,
            "method_not_enrolled",
            Error::Invalid(
                "another authenticator app is added beside a confirmed one: this account's second factor is not an authenticator app".into(),
            ),
        );
    }
    let name = crate::util::check_label("an authenticator app's name", name)?;
    let secret = crate::totp::generate_secret();
    let otpauth_uri = crate::totp::otpauth_uri(&policy.totp_issuer, &user.username, &secret)
        .map_err(Error::Invalid)?;
    let id = match factors::add_totp(&tx, key, s.user_id, &name, &secret, now) {
        Ok(id) => id,
        Err(e @ Error::Conflict(_)) => return refuse(tx, "conflict", e),
        Err(e) => return Err(e),
    };
    audit::record(
        &tx,
        &entry(AuditEvent::TotpAdd, Outcome::Success, client, s)
            .detail(json!({"app": id, "name": name})),
        now,
    )?;
    tx.commit()?;
    Ok(AddedApp {
        id,
        name,
        secret: crate::totp::secret_base32(&secret),
        otpauth_uri,
    })
}

/// Confirm an added authenticator app with a code of its own; its time step is spent for
/// the user (one success per step, whichever app). A wrong code is counted toward the
/// lockout like a wrong code at enrolment (audited `totp.confirm` failure) and answers
/// None; an app that is not the user's is not found.
pub fn confirm_totp_app(
    conn: &mut Connection,
    key: &SecretKey,
    client: &Client,
    s: &SessionInfo,
    id: i64,
    code: &str,
    now: i64,
) -> Result<Option<ConfirmedApp>> {
    let policy = Policy::load(conn)?;
    let tx = db::write_tx(conn)?;
    let Some(app) = factors::list_totp(&tx, s.user_id)?
        .into_iter()
        .find(|a| a.id == id)
    else {
        return not_your_app(tx, AuditEvent::TotpConfirm, client, s, id, now);
    };
    if app.confirmed_at.is_some() {
        return Err(Error::Conflict(format!(
            "the authenticator app '{}' is already confirmed",
            app.name
        )));
    }
    let checked = factors::check_totp(
        &tx,
        key,
        s.user_id,
        factors::Apps::One(id),
        code,
        now,
        policy.totp_skew,
    )?;
    if let Err(e) = checked {
        let reason = if e == crate::totp::TotpError::Replayed {
            "replayed_code"
        } else {
            "bad_code"
        };
        count_failure(tx, &policy, client, s, AuditEvent::TotpConfirm, reason, now)?;
        return Ok(None);
    }
    factors::confirm_totp(&tx, s.user_id, Some(id), now)?;
    email::notify(&tx, s.user_id, email::notice::FACTOR_ADDED, now)?;
    audit::record(
        &tx,
        &entry(AuditEvent::TotpConfirm, Outcome::Success, client, s)
            .detail(json!({"app": id, "name": app.name})),
        now,
    )?;
    tx.commit()?;
    Ok(Some(ConfirmedApp {
        id,
        name: app.name,
        confirmed: true,
    }))
}

/// An added app of the user still waiting for its first code, with its secret and URI
/// again (the portal shows its QR code once more after a wrong code); None otherwise.
pub fn pending_totp_app(
    conn: &Connection,
    key: &SecretKey,
    s: &SessionInfo,
    id: i64,
) -> Result<Option<AddedApp>> {
    let Some(app) = factors::get_totp(conn, key, s.user_id)?
        .into_iter()
        .find(|a| a.id == id && a.confirmed_at.is_none())
    else {
        return Ok(None);
    };
    let issuer = Policy::load(conn)?.totp_issuer;
    Ok(Some(AddedApp {
        id,
        otpauth_uri: crate::totp::otpauth_uri(&issuer, &s.user.username, &app.secret)
            .map_err(Error::Invalid)?,
        secret: crate::totp::secret_base32(&app.secret),
        name: app.name,
    }))
}

/// An app id that is not one of the user's: audited as `event`'s failure, "not found".
fn not_your_app<T>(
    tx: db::WriteTx,
    event: AuditEvent,
    client: &Client,
    s: &SessionInfo,
    id: i64,
    now: i64,
) -> Result<T> {
    audit::record(
        &tx,
        &entry(event, Outcome::Failure, client, s)
            .reason("not_own_app")
            .detail(json!({"app": id})),
        now,
    )?;
    tx.commit()?;
    Err(Error::NotFound(format!(
        "no authenticator app {id} of yours"
    )))
}

/// Remove one of the user's authenticator apps (needs a fresh re-authentication). The
/// last confirmed one is not removed this way (409): removing the second factor itself is
/// [`remove_totp`]. The user is mailed a notice when a confirmed app goes.
pub fn remove_totp_app(
    conn: &mut Connection,
    client: &Client,
    s: &SessionInfo,
    id: i64,
    now: i64,
) -> Result<()> {
    let tx = reauth_or_refuse(db::write_tx(conn)?, client, s, AuditEvent::TotpRemove, now)?;
    let apps = factors::list_totp(&tx, s.user_id)?;
    let Some(app) = apps.iter().find(|a| a.id == id) else {
        return not_your_app(tx, AuditEvent::TotpRemove, client, s, id, now);
    };
    let confirmed = app.confirmed_at.is_some();
    let others = apps
        .iter()
        .filter(|a| a.id != id && a.confirmed_at.is_some())
        .count();
    if confirmed && others == 0 {
        audit::record(
            &tx,
            &entry(AuditEvent::TotpRemove, Outcome::Failure, client, s)
                .reason("last_app")
                .detail(json!({"app": id})),
            now,
        )?;
        tx.commit()?;
        return Err(Error::Conflict(
            "this is your only authenticator app: to remove your second factor itself, use POST /v1/me/totp/remove".into(),
        ));
    }
    factors::remove_app(&tx, s.user_id, id)?;
    if confirmed {
        email::notify(&tx, s.user_id, email::notice::FACTOR_REMOVED, now)?;
    }
    audit::record(
        &tx,
        &entry(AuditEvent::TotpRemove, Outcome::Success, client, s)
            .detail(json!({"app": id, "name": app.name, "confirmed": confirmed})),
        now,
    )?;
    tx.commit()?;
    Ok(())
}

/// End one of the user's own sessions; a session of anybody else is "not found".
pub fn revoke_session(
    conn: &mut Connection,
    client: &Client,
    s: &SessionInfo,
    id: i64,
    now: i64,
) -> Result<()> {
    let tx = db::write_tx(conn)?;
    let ok = store::revoke_own_session(&tx, s.user_id, id, now)?;
    let outcome = if ok {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    let mut e = entry(AuditEvent::SessionRevoke, outcome, client, s).detail(json!({"session": id}));
    if !ok {
        e = e.reason("not_own_session");
    }
    audit::record(&tx, &e, now)?;
    tx.commit()?;
    if ok {
        Ok(())
    } else {
        Err(Error::NotFound(format!("no session {id} of yours")))
    }
}

/// End every session of the user but this one; how many.
pub fn revoke_other_sessions(
    conn: &mut Connection,
    client: &Client,
    s: &SessionInfo,
    now: i64,
) -> Result<usize> {
    let tx = db::write_tx(conn)?;
    let n = store::revoke_other_sessions(&tx, s.user_id, s.session.id, now)?;
    audit::record(
        &tx,
        &entry(AuditEvent::SessionRevoke, Outcome::Success, client, s).detail(json!({"others": n})),
        now,
    )?;
    tx.commit()?;
    Ok(n)
}

/// Forget every remembered device of the user; how many.
pub fn revoke_all_devices(
    conn: &mut Connection,
    client: &Client,
    s: &SessionInfo,
    now: i64,
) -> Result<usize> {
    let tx = db::write_tx(conn)?;
    let n = factors::revoke_devices(&tx, s.user_id, now)?;
    audit::record(
        &tx,
        &entry(AuditEvent::DeviceRevoke, Outcome::Success, client, s).detail(json!({"all": n})),
        now,
    )?;
    tx.commit()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::users::{NewUser, Role};

    const T0: i64 = 1_800_000_000;

    #[test]
    fn a_reauthentication_allows_factor_changes_for_5_minutes_of_its_session_only() {
        let conn = crate::db::open_memory().unwrap();
        let u = users::create(
            &conn,
            &NewUser {
                username: "rae",
                email: "rae@example.org",
                org: None,
                groups: &[],
                role: Role::User,
                password_hash: None,
                must_change_password: false,
            },
            T0,
        )
        .unwrap();
        let (a, _) = sessions::create(&conn, u.id, "192.0.2.1", "test", 3600, "pwd", T0).unwrap();
        let (b, _) = sessions::create(&conn, u.id, "192.0.2.1", "test", 3600, "pwd", T0).unwrap();
        assert!(
            require_reauth_of(&conn, a, T0).is_err(),
            "never re-authenticated"
        );
        store::set_reauth(&conn, a, T0 + 10).unwrap();
        assert!(require_reauth_of(&conn, a, T0 + 10).is_ok());
        assert!(require_reauth_of(&conn, a, T0 + 10 + REAUTH_SECONDS - 1).is_ok());
        assert!(matches!(
            require_reauth_of(&conn, a, T0 + 10 + REAUTH_SECONDS),
            Err(Error::Forbidden(_))
        ));
        assert!(
            require_reauth_of(&conn, b, T0 + 11).is_err(),
            "another session"
        );
        assert!(
            require_reauth_of(&conn, a, T0 + 5).is_err(),
            "not from the future"
        );
    }
}
