//! The login state machine: who gets a session, after which steps.
//!
//! ```text
//!  POST /v1/login (username, password[, device token])
//!     │ wrong / unknown / locked / disabled ──▶ generic failure (counted unless locked)
//!     ▼
//!  terms ──(current version not accepted)──▶ terms_required ─accept─┐
//!     ▼◀──────────────────────────────────────────────────────────────┘
//!  expired? ──▶ password_expired ─new password twice─▶ password_changed (log in again)
//!     ▼
//!  enrolled? ─no, but 2FA required─▶ enrollment_required ─enroll, confirm─▶ enrolled
//!     │                                                              (log in again)
//!     ├─ yes, remembered device ──────────────────────────────┐
//!     ├─ yes ──▶ second_factor_required ─TOTP / recovery / email code─┤
//!     └─ no, not required ────────────────────────────────────┤
//!                                                             ▼
//!                                                    authenticated (session)
//! ```
//!
//! Each arrow past the password is carried by a flow token: random, stored hashed,
//! short-lived, bound to one user and one step. A step's token works for that step only,
//! and is spent (or moved on) by the transaction that decides it, so steps cannot be
//! skipped or replayed. Only the last step creates a session.
//!
//! Every decision — the attempt, the failure count or lock, the audit row — commits in
//! one immediate transaction, so concurrent attempts are serialised: they can never
//! overshoot the lockout limit, and a TOTP code is accepted at most once. Password hashing
//! is slow, so it runs before that transaction; the transaction re-reads the account.
//!
//! A password success does not reset the failure count; only a full login does, so
//! knowing the password never buys more guesses at the second factor.

use crate::sql::Connection;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{self, Entry, Outcome};
use crate::crypto::{self, SecretKey};
use crate::db;
use crate::error::{Error, Result};
use crate::kinds::{AuditEvent, LoginStep, MfaMethod};
use crate::lockout;
use crate::names;
use crate::password::{self, Hashing, PasswordPolicy, Rule};
use crate::policy::{MfaRequired, PasskeyRequired, Policy, TermsMode};
use crate::store::users::{self, Role, User};
use crate::store::{email, factors, familiar, sessions, terms};
use crate::totp;

/// Who is asking: recorded in audit rows and sessions.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub ip: String,
    pub user_agent: String,
}

/// What a flow carries between steps.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct FlowState {
    /// The terms were accepted during this login.
    #[serde(default)]
    pub(crate) terms_ok: bool,
    /// A remembered device was presented and checked at the password step: later steps
    /// of this login (terms) still skip the second factor.
    #[serde(default)]
    pub(crate) device_ok: bool,
    /// The login began with a user-verified passkey (passwordless, src/passkey.rs): it
    /// never needs a second factor.
    #[serde(default)]
    pub(crate) passkey_ok: bool,
    /// Where the password step came from (smart lockout): later steps count their
    /// failures as this source's. Flows without it are unfamiliar.
    #[serde(default)]
    pub(crate) source: lockout::Source,
    /// A step-up of this signed-in session (its id; OpenID Connect `acr_values`, see
    /// [`step_up_step`]): the second factor replaces it by a session with the factor added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) step_up: Option<i64>,
}

/// The public view of a user in answers.
#[derive(Debug, Clone, Serialize)]
pub struct UserView {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub org: String,
    pub role: Role,
    pub groups: Vec<String>,
}

impl From<&User> for UserView {
    fn from(u: &User) -> UserView {
        UserView {
            id: u.id,
            username: u.username.clone(),
            email: u.email.clone(),
            org: u.org.clone(),
            role: u.role,
            groups: u.groups.clone(),
        }
    }
}

/// Where a login stands after a step.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    Authenticated {
        session: String,
        expires_at: String,
        user: UserView,
        #[serde(skip_serializing_if = "Option::is_none")]
        device_token: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        warning: Option<String>,
        /// Failed attempts on the account (any source) since its previous sign-in;
        /// left out when none.
        #[serde(skip_serializing_if = "is_zero")]
        failed_attempts_since_last_sign_in: i64,
    },
    SecondFactorRequired {
        flow: String,
        methods: Vec<&'static str>,
        /// With `"passkey"` in `methods`: `{"publicKey":{…}}`, the WebAuthn request
        /// options of this flow's challenge (added by the core, src/passkey.rs).
        #[serde(skip_serializing_if = "Option::is_none")]
        passkey: Option<serde_json::Value>,
    },
    EnrollmentRequired {
        flow: String,
        methods: Vec<&'static str>,
    },
    TermsRequired {
        flow: String,
        terms: terms::Terms,
    },
    PasswordExpired {
        flow: String,
        policy: Vec<Rule>,
    },
    PasswordChanged,
    CodeSent {
        expires_at: String,
    },
    Enrolled {
        recovery_codes: Vec<String>,
    },
}

/// The start of an enrolment: what the user puts into their authenticator app.
#[derive(Debug, Clone, Serialize)]
pub struct Enrollment {
    pub flow: String,
    pub secret: String,
    pub otpauth_uri: String,
}

/// A decided step. `result` is what the client is told (already audited and committed);
/// `reason` is the internal reason, for metrics.
#[derive(Debug)]
pub struct Decision<T> {
    pub result: Result<T>,
    pub reason: &'static str,
    pub locked_now: bool,
    /// A one-time code to mail now (held in memory only, never stored in clear).
    pub mail: Option<Mail>,
}

/// A message with a one-time code, for the caller's mailer.
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail")
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl<T> Decision<T> {
    pub(crate) fn ok(v: T) -> Self {
        Decision {
            result: Ok(v),
            reason: "ok",
            locked_now: false,
            mail: None,
        }
    }
    pub(crate) fn refused(e: Error, reason: &'static str) -> Self {
        Decision {
            result: Err(e),
            reason,
            locked_now: false,
            mail: None,
        }
    }
    pub fn outcome(&self) -> &'static str {
        if self.result.is_ok() {
            "success"
        } else {
            "failure"
        }
    }
}

pub(crate) fn entry(event: AuditEvent, outcome: Outcome, client: &Client) -> Entry {
    Entry::new(event, outcome).client(&client.ip, &client.user_agent)
}

/// Whether this user must give a second factor before a session.
pub fn mfa_required(user: &User, policy: &Policy) -> bool {
    policy.mfa_required == MfaRequired::All
        || (policy.mfa_required == MfaRequired::Groups && user.group_requires_2fa)
        || (policy.mfa_admins_required && user.role != Role::User)
}

/// Whether this user must use a passkey as second factor under `rule` (the policy's
/// `mfa.passkey_required`): their TOTP and emailed codes are then not accepted.
pub(crate) fn passkey_required(
    conn: &Connection,
    user: &User,
    rule: PasskeyRequired,
) -> Result<bool> {
    Ok(match rule {
        PasskeyRequired::All => true,
        PasskeyRequired::Admins => user.role != Role::User,
        PasskeyRequired::Groups => crate::store::passkeys::group_requires_passkey(conn, user.id)?,
        PasskeyRequired::None => false,
    })
}

/// Whether this user's password is not their only factor: a second factor is enrolled
/// (an authenticator app, emailed codes — their own or their organisation's default — or
/// a passkey), or one must be enrolled before any session (policy, group, role). No key
/// needed: what is enrolled is read from the user row and the passkey count.
pub(crate) fn has_second_factor(conn: &Connection, user: &User, policy: &Policy) -> Result<bool> {
    if user.mfa_method.is_some()
        || mfa_required(user, policy)
        || passkey_required(conn, user, policy.mfa_passkey_required)?
        || crate::store::passkeys::count(conn, user.id)? > 0
    {
        return Ok(true);
    }
    let org = crate::store::orgs::org_by_id(conn, user.org_id)?;
    Ok(org.mfa_method == Some(MfaMethod::Email))
}

/// The password rules of this user's next password ([`Policy::password_for`]): NIST SP
/// 800-63B-4 3.1.1.2 asks more of a password that is the only factor.
pub fn password_policy_for(
    conn: &Connection,
    user: &User,
    policy: &Policy,
) -> Result<PasswordPolicy> {
    Ok(policy.password_for(has_second_factor(conn, user, policy)?))
}

/// The second-factor methods this user has (empty: not enrolled). A user who must use a
/// passkey has only their passkeys (and recovery codes beside them).
pub(crate) fn methods(
    conn: &Connection,
    key: &SecretKey,
    user: &User,
    rule: PasskeyRequired,
) -> Result<Vec<&'static str>> {
    let mut m = Vec::new();
    let codes_allowed = !passkey_required(conn, user, rule)?;
    match user.mfa_method {
        _ if !codes_allowed => {}
        Some(MfaMethod::Totp)
            if factors::get_totp(conn, key, user.id)?
                .iter()
                .any(|c| c.confirmed_at.is_some()) =>
        {
            m.push("totp")
        }
        Some(MfaMethod::Totp) => {}
        Some(MfaMethod::Email) => m.push("email_otp"),
        None => {
            // An organisation may make emailed codes its users' default factor.
            let org = crate::store::orgs::org_by_id(conn, user.org_id)?;
            if org.mfa_method == Some(MfaMethod::Email) {
                m.push("email_otp");
            }
        }
    }
    if crate::store::passkeys::count(conn, user.id)? > 0 {
        m.push("passkey");
    }
    if !m.is_empty() && factors::remaining_recovery_codes(conn, user.id)? > 0 {
        m.push("recovery_code");
    }
    Ok(m)
}

fn password_expired(user: &User, policy: &Policy, now: i64) -> bool {
    user.must_change_password
        || (policy.password_max_age_days > 0
            && user
                .password_changed_at
                .is_some_and(|t| t.saturating_add(policy.password_max_age_days * 86_400) <= now))
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The factors of a passwordless sign-in: a passkey (a hardware-bound key) with user
/// verification (the device's PIN or biometric): two factors in one.
pub(crate) const PASSWORDLESS: &str = "hwk uv";

/// Issue the session that ends a login: reset the failure counts (reporting what they
/// held), remember the client's network as familiar, create the session.
// The login's parts, the session's extras (device token, warning) and the factors the
// sign-in used (`sessions.factors`, for OpenID Connect's `amr`; "device" also marks a
// remembered device, which raises no new-sign-in alert).
#[allow(clippy::too_many_arguments)]
fn authenticate(
    tx: &Connection,
    user: &User,
    policy: &Policy,
    client: &Client,
    device_token: Option<String>,
    warning: Option<String>,
    factors: &str,
    now: i64,
) -> Result<Status> {
    users::record_success(tx, user.id, now)?;
    let known_device = factors.split(' ').any(|f| f == "device");
    // A security alert: signed in without a remembered device from a network the user
    // never signed in from (their first sign-in aside).
    let new_network = familiar::record_sign_in(tx, user.id, &client.ip, now)?;
    if new_network && !known_device {
        email::notify(tx, user.id, email::notice::NEW_SIGN_IN, now)?;
    }
    let (_, token) = sessions::create(
        tx,
        user.id,
        &client.ip,
        &client.user_agent,
        policy.session_absolute_hours * 3600,
        factors,
        now,
    )?;
    Ok(Status::Authenticated {
        session: token,
        expires_at: crate::util::rfc3339(now + policy.session_absolute_hours * 3600),
        user: UserView::from(user),
        device_token,
        warning,
        failed_attempts_since_last_sign_in: user.lock_state().failures_to_report(),
    })
}

/// After the password (and each later step that continues the login): the next thing
/// the user must do, or the session.
#[allow(clippy::too_many_arguments)]
pub(crate) fn advance(
    tx: &Connection,
    key: &SecretKey,
    user: &User,
    policy: &Policy,
    state: &FlowState,
    client: &Client,
    mail: &mut Option<Mail>,
    now: i64,
) -> Result<Status> {
    let data = serde_json::to_string(state).unwrap_or_else(|_| "{}".into());
    let ttl = policy.flow_ttl_seconds;
    if !state.terms_ok {
        if let Some(t) = terms::current(tx)? {
            let needed = match policy.terms_mode {
                TermsMode::EveryLogin => true,
                TermsMode::OncePerVersion => !terms::has_accepted(tx, user.id, &t.version)?,
            };
            if needed {
                let flow = sessions::create_flow(tx, user.id, LoginStep::Terms, &data, ttl, now)?;
                return Ok(Status::TermsRequired { flow, terms: t });
            }
        }
    }
    if password_expired(user, policy, now) {
        let flow = sessions::create_flow(tx, user.id, LoginStep::PasswordChange, &data, ttl, now)?;
        return Ok(Status::PasswordExpired {
            flow,
            policy: password_policy_for(tx, user, policy)?.rules(),
        });
    }
    let methods = methods(tx, key, user, policy.mfa_passkey_required)?;
    if methods.is_empty() {
        let passkey = passkey_required(tx, user, policy.mfa_passkey_required)?;
        if mfa_required(user, policy) || passkey {
            let flow = sessions::create_flow(tx, user.id, LoginStep::Enroll, &data, ttl, now)?;
            return Ok(Status::EnrollmentRequired {
                flow,
                methods: if passkey {
                    vec!["passkey"]
                } else {
                    vec!["totp"]
                },
            });
        }
        let factors = if state.passkey_ok {
            PASSWORDLESS
        } else {
            "pwd"
        };
        return authenticate(tx, user, policy, client, None, None, factors, now);
    }
    if state.passkey_ok {
        return authenticate(tx, user, policy, client, None, None, PASSWORDLESS, now);
    }
    if state.device_ok {
        return authenticate(tx, user, policy, client, None, None, "pwd device", now);
    }
    second_factor_flow(tx, key, user, policy, &data, methods, mail, now)
}

/// A second-factor flow carrying `data` (a [`FlowState`]), its code mailed when the
/// user's first method is emailed codes.
#[allow(clippy::too_many_arguments)]
fn second_factor_flow(
    tx: &Connection,
    key: &SecretKey,
    user: &User,
    policy: &Policy,
    data: &str,
    methods: Vec<&'static str>,
    mail: &mut Option<Mail>,
    now: i64,
) -> Result<Status> {
    let ttl = policy.flow_ttl_seconds;
    let flow = sessions::create_flow(tx, user.id, LoginStep::SecondFactor, data, ttl, now)?;
    if methods.first() == Some(&"email_otp") {
        if let Some(f) = sessions::find_flow(tx, &flow, LoginStep::SecondFactor, now)? {
            *mail = issue_email_code(tx, key, user, policy, f.id, now)?.ok();
        }
    }
    Ok(Status::SecondFactorRequired {
        flow,
        methods,
        passkey: None,
    })
}

/// Step-up: a signed-in session whose sign-in used no second factor (a password alone,
/// or a remembered device) asks its user for one, without a new sign-in — when an
/// OpenID Connect client's `acr_values` asks for more than the session has
/// (src/oidc.rs). Begins a second-factor flow bound to the session; the usual factor
/// steps decide it, and their success replaces the session by one whose factors add
/// the new one ([`finish_second_factor`]). Audited `oidc.step_up`.
pub fn step_up_step(
    conn: &mut Connection,
    key: &SecretKey,
    client: &Client,
    session_token: &str,
    now: i64,
) -> Result<Decision<Status>> {
    let policy = Policy::load(conn)?;
    let lock = policy.lockout();
    let tx = db::write_tx(conn)?;
    let event = AuditEvent::OidcStepUp;
    let refuse = |tx: db::WriteTx, e: Entry, err: Error, reason: &'static str| {
        audit::record(&tx, &e.reason(reason), now)?;
        tx.commit()?;
        Ok(Decision::refused(err, reason))
    };
    let Some(s) = check_session(&tx, session_token, now)? else {
        return refuse(
            tx,
            entry(event, Outcome::Failure, client),
            Error::InvalidFlow,
            "no_session",
        );
    };
    let user = users::by_id(&tx, s.user_id)?;
    let e = entry(event, Outcome::Failure, client)
        .username(&user.username)
        .user(user.id, user.org_id);
    let methods = methods(&tx, key, &user, policy.mfa_passkey_required)?;
    if methods.is_empty() {
        let err = Error::Invalid("this account has no second factor".into());
        return refuse(tx, e, err, "no_second_factor");
    }
    let source = familiar::source_of(&tx, user.id, &client.ip, None, lock.familiar_days, now)?;
    if let Some(reason) = user.lock_state().refusal(lock.mode, source, now) {
        return refuse(tx, e, Error::InvalidCredentials, reason);
    }
    let (from, _) = sessions::factors_of(&tx, s.session.id)?.unwrap_or_default();
    let state = FlowState {
        source,
        step_up: Some(s.session.id),
        ..FlowState::default()
    };
    let data = serde_json::to_string(&state).unwrap_or_else(|_| "{}".into());
    let mut mail = None;
    let status = second_factor_flow(&tx, key, &user, &policy, &data, methods, &mut mail, now)?;
    audit::record(
        &tx,
        &entry(event, Outcome::Success, client)
            .username(&user.username)
            .user(user.id, user.org_id)
            .detail(json!({"from": from, "code_mailed": mail.is_some()})),
        now,
    )?;
    tx.commit()?;
    Ok(Decision {
        mail,
        ..Decision::ok(status)
    })
}

/// The factors of a stepped-up session: those it had (a remembered device aside: it
/// was not a factor given) and the step-up's.
fn stepped_up(had: &str, added: &str) -> String {
    let mut f: Vec<&str> = had
        .split(' ')
        .filter(|x| !x.is_empty() && *x != "device")
        .collect();
    for x in added.split(' ') {
        if !f.contains(&x) {
            f.push(x);
        }
    }
    f.join(" ")
}

/// Issue an emailed code for a flow: the message to send, or Err(seconds to wait).
fn issue_email_code(
    tx: &Connection,
    key: &SecretKey,
    user: &User,
    policy: &Policy,
    flow_id: i64,
    now: i64,
) -> Result<std::result::Result<Mail, i64>> {
    let ttl = policy.email_otp_ttl_minutes * 60;
    Ok(email::issue(tx, key, flow_id, user.id, ttl, policy.email_otp_resend_seconds, now)?.map(|issued| Mail {
        to: user.email.clone(),
        subject: "Your sign-in code".into(),
        body: zeroize::Zeroizing::new(format!(
            "Hello {},\n\nYour one-time sign-in code is: {}\n\nIt expires in {} minutes ({}) and works once.\nIf you did not try to sign in, change your password and tell your administrator.\n",
            user.username,
            issued.code.as_str(),
            policy.email_otp_ttl_minutes,
            crate::util::rfc3339(issued.expires_at),
        )),
    }))
}

/// Step 1: username and password (and optionally a remembered-device token).
/// Slow: runs argon2. Unknown users are verified against a dummy hash so every refusal
/// costs the same.
// The core's hashing slots, the connection and the step's own inputs.
#[allow(clippy::too_many_arguments)]
pub fn password_step(
    hashing: &Hashing,
    conn: &mut Connection,
    key: &SecretKey,
    client: &Client,
    username: &str,
    password: &str,
    device_token: Option<&str>,
    now: i64,
) -> Result<Decision<Status>> {
    let policy = Policy::load(conn)?;
    let typed: String = username.chars().take(256).collect();
    let found = match names::normalize("username", username) {
        Ok(n) => users::find(conn, &n.key)?,
        Err(_) => None,
    };
    let Some(before) = found.filter(|u| u.password_hash.is_some()) else {
        password::dummy_verify(hashing, password, policy.argon2);
        let tx = db::write_tx(conn)?;
        let known = users::find(&tx, &typed)?;
        let reason = if known.is_some() {
            "no_password"
        } else {
            "unknown_user"
        };
        let mut e = entry(AuditEvent::LoginPassword, Outcome::Failure, client)
            .username(&typed)
            .reason(reason);
        if let Some(u) = &known {
            e = e.user(u.id, u.org_id);
        }
        audit::record(&tx, &e, now)?;
        tx.commit()?;
        return Ok(Decision::refused(Error::InvalidCredentials, reason));
    };
    // Smart lockout: while unfamiliar sources are locked out, an attempt from one is
    // refused here, before its password is looked at (no argon2, nothing counted).
    let lock = policy.lockout();
    let early = familiar::source_of(
        conn,
        before.id,
        &client.ip,
        device_token,
        lock.familiar_days,
        now,
    )?;
    if before.lock_state().refusal(lock.mode, early, now) == Some("unfamiliar_locked") {
        let tx = db::write_tx(conn)?;
        let user = users::by_id(&tx, before.id)?;
        audit::record(
            &tx,
            &entry(AuditEvent::LoginPassword, Outcome::Failure, client)
                .username(&typed)
                .user(user.id, user.org_id)
                .reason("unfamiliar_locked")
                .detail(early.detail()),
            now,
        )?;
        tx.commit()?;
        return Ok(Decision::refused(
            Error::InvalidCredentials,
            "unfamiliar_locked",
        ));
    }
    let hash = before.password_hash.clone().unwrap_or_default();
    let ok = password::verify_password(hashing, password, &hash);
    let upgraded = if ok && password::needs_rehash(&hash, policy.argon2) {
        password::hash_password(hashing, password, policy.argon2).ok()
    } else {
        None
    };

    let tx = db::write_tx(conn)?;
    let user = users::by_id(&tx, before.id)?;
    let source = familiar::source_of(
        &tx,
        user.id,
        &client.ip,
        device_token,
        lock.familiar_days,
        now,
    )?;
    let base = entry(AuditEvent::LoginPassword, Outcome::Failure, client)
        .username(&typed)
        .user(user.id, user.org_id)
        .detail(source.detail());
    let refuse = |tx: db::WriteTx,
                  reason: &'static str,
                  locked: lockout::Lock|
     -> Result<Decision<Status>> {
        audit::record(&tx, &base.clone().reason(reason), now)?;
        let locked_now = audit_lock(&tx, &user, locked, policy.lockout_max_failures, client, now)?;
        tx.commit()?;
        Ok(credential_refusal(reason, locked_now))
    };
    if user.disabled {
        return refuse(tx, "disabled", lockout::Lock::None);
    }
    if let Some(reason) = user.lock_state().refusal(lock.mode, source, now) {
        return refuse(tx, reason, lockout::Lock::None);
    }
    if !ok {
        let o = users::record_failure_from(&tx, user.id, &lock, source, now)?;
        return refuse(tx, "wrong_password", o.lock);
    }
    if user.password_hash.as_deref() != Some(hash.as_str()) {
        // The password changed while we were hashing: decide nothing on stale data.
        return refuse(tx, "password_changed_concurrently", lockout::Lock::None);
    }
    if let Some(h) = &upgraded {
        users::upgrade_password_hash(&tx, user.id, h)?;
    }
    let device_ok = match device_token {
        Some(t) if !t.is_empty() && t.len() <= 128 && policy.remember_device_days > 0 => {
            factors::check_device(&tx, user.id, t, now)?
        }
        _ => false,
    };
    let mut mail = None;
    let status = advance(
        &tx,
        key,
        &user,
        &policy,
        &FlowState {
            terms_ok: false,
            device_ok,
            passkey_ok: false,
            source,
            step_up: None,
        },
        client,
        &mut mail,
        now,
    )?;
    let next = status_name(&status);
    audit::record(
        &tx,
        &entry(AuditEvent::LoginPassword, Outcome::Success, client)
            .username(&typed)
            .user(user.id, user.org_id)
            .detail(json!({"next": next, "remembered_device": device_ok, "rehashed": upgraded.is_some(), "code_mailed": mail.is_some()})),
        now,
    )?;
    tx.commit()?;
    Ok(Decision {
        mail,
        ..Decision::ok(status)
    })
}

pub(crate) fn status_name(s: &Status) -> &'static str {
    match s {
        Status::Authenticated { .. } => "authenticated",
        Status::SecondFactorRequired { .. } => "second_factor_required",
        Status::EnrollmentRequired { .. } => "enrollment_required",
        Status::TermsRequired { .. } => "terms_required",
        Status::PasswordExpired { .. } => "password_expired",
        Status::PasswordChanged => "password_changed",
        Status::CodeSent { .. } => "code_sent",
        Status::Enrolled { .. } => "enrolled",
    }
}

/// Load the flow for `step` and its user inside `tx`; refuse (audited) when the token is
/// unknown, expired, for another step, or its user can no longer log in under the
/// lockout `mode`.
#[allow(clippy::too_many_arguments)]
fn load_flow(
    tx: &Connection,
    token: &str,
    want: LoginStep,
    event: AuditEvent,
    mode: lockout::Mode,
    client: &Client,
    now: i64,
) -> Result<std::result::Result<(sessions::Flow, User, FlowState), &'static str>> {
    let flow = if token.is_empty() || token.len() > 128 {
        None
    } else {
        sessions::find_flow(tx, token, want, now)?
    };
    let Some(flow) = flow else {
        audit::record(
            tx,
            &entry(event, Outcome::Failure, client).reason("invalid_flow"),
            now,
        )?;
        return Ok(Err("invalid_flow"));
    };
    let user = users::by_id(tx, flow.user_id)?;
    let state: FlowState = serde_json::from_str(&flow.data).unwrap_or_default();
    // A flow of an unfamiliar source ends once unfamiliar sources are locked out: its
    // code is never looked at.
    let refusal = if user.disabled {
        Some("disabled")
    } else {
        user.lock_state().refusal(mode, state.source, now)
    };
    if let Some(reason) = refusal {
        sessions::consume_flow(tx, flow.id, now)?;
        let mut e = entry(event, Outcome::Failure, client)
            .username(&user.username)
            .user(user.id, user.org_id)
            .reason(reason);
        if reason == "unfamiliar_locked" {
            e = e.detail(state.source.detail());
        }
        audit::record(tx, &e, now)?;
        return Ok(Err(reason));
    }
    Ok(Ok((flow, user, state)))
}

/// Open a step: its write transaction and its flow (see [`load_flow`]), or the step's
/// refusal, audited and committed.
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
pub(crate) fn open_step<'c, T>(
    conn: &'c mut Connection,
    policy: &Policy,
    token: &str,
    want: LoginStep,
    event: AuditEvent,
    client: &Client,
    now: i64,
) -> Result<std::result::Result<(db::WriteTx<'c>, sessions::Flow, User, FlowState), Decision<T>>> {
    let tx = db::write_tx(conn)?;
    match load_flow(&tx, token, want, event, policy.lockout_mode, client, now)? {
        Ok((flow, user, state)) => Ok(Ok((tx, flow, user, state))),
        Err(reason) => {
            tx.commit()?;
            Ok(Err(flow_refusal(reason)))
        }
    }
}

fn flow_refusal<T>(reason: &'static str) -> Decision<T> {
    if reason == "invalid_flow" {
        Decision::refused(Error::InvalidFlow, reason)
    } else {
        Decision::refused(Error::InvalidCredentials, reason)
    }
}

/// Step: accept the current terms.
pub fn terms_step(
    conn: &mut Connection,
    key: &SecretKey,
    client: &Client,
    flow_token: &str,
    accept: bool,
    now: i64,
) -> Result<Decision<Status>> {
    let policy = Policy::load(conn)?;
    let (tx, flow, user, mut state) = match open_step(
        conn,
        &policy,
        flow_token,
        LoginStep::Terms,
        AuditEvent::LoginTerms,
        client,
        now,
    )? {
        Ok(opened) => opened,
        Err(refused) => return Ok(refused),
    };
    let base = entry(AuditEvent::LoginTerms, Outcome::Failure, client)
        .username(&user.username)
        .user(user.id, user.org_id);
    let Some(current) = terms::current(&tx)? else {
        sessions::consume_flow(&tx, flow.id, now)?;
        audit::record(&tx, &base.reason("no_terms"), now)?;
        tx.commit()?;
        return Ok(Decision::refused(Error::InvalidFlow, "no_terms"));
    };
    if !accept {
        audit::record(
            &tx,
            &base
                .reason("declined")
                .detail(json!({"version": current.version})),
            now,
        )?;
        tx.commit()?;
        return Ok(Decision::refused(
            Error::Invalid("the terms and conditions must be accepted to continue".into()),
            "declined",
        ));
    }
    sessions::consume_flow(&tx, flow.id, now)?;
    terms::accept(&tx, user.id, &current.version, now)?;
    state.terms_ok = true;
    let mut mail = None;
    let status = advance(&tx, key, &user, &policy, &state, client, &mut mail, now)?;
    audit::record(
        &tx,
        &entry(AuditEvent::LoginTerms, Outcome::Success, client)
            .username(&user.username)
            .user(user.id, user.org_id)
            .detail(json!({"version": current.version, "next": status_name(&status)})),
        now,
    )?;
    tx.commit()?;
    Ok(Decision {
        mail,
        ..Decision::ok(status)
    })
}

/// Check a new password typed twice against the policy and the current hash. Slow when
/// `current_hash` is given (argon2).
pub fn check_new_password(
    hashing: &Hashing,
    policy: &PasswordPolicy,
    new: &str,
    confirm: &str,
    current_hash: Option<&str>,
) -> Result<()> {
    if !crypto::ct_eq(new.as_bytes(), confirm.as_bytes()) {
        return Err(Error::Invalid(
            "passwords do not match: confirm the new password by typing it again exactly".into(),
        ));
    }
    let checks = policy.check(new);
    if !PasswordPolicy::is_ok(&checks) {
        let unmet: Vec<_> = checks
            .iter()
            .filter(|r| !r.met)
            .map(|r| r.description.clone())
            .collect();
        return Err(Error::Policy {
            message: format!(
                "the new password does not meet the policy: {}",
                unmet.join(", ")
            ),
            rules: checks,
        });
    }
    if let Some(h) = current_hash {
        if password::verify_password(hashing, new, h) {
            return Err(Error::Policy {
                message: "the new password must differ from the current one".into(),
                rules: checks,
            });
        }
    }
    Ok(())
}

/// Step: set a new password when the old one has expired. The user then logs in again.
/// Slow (argon2). A mismatch or a weak password leaves the flow usable for another try.
// The core's hashing slots, the connection and the step's own inputs.
#[allow(clippy::too_many_arguments)]
pub fn expired_password_step(
    hashing: &Hashing,
    conn: &mut Connection,
    _key: &SecretKey,
    client: &Client,
    flow_token: &str,
    new_password: &str,
    confirm_password: &str,
    now: i64,
) -> Result<Decision<Status>> {
    let policy = Policy::load(conn)?;
    // Look before hashing, without spending the flow.
    let peek = if flow_token.is_empty() || flow_token.len() > 128 {
        None
    } else {
        sessions::find_flow(conn, flow_token, LoginStep::PasswordChange, now)?
    };
    let checked = match &peek {
        Some(f) => {
            let u = users::by_id(conn, f.user_id)?;
            check_new_password(
                hashing,
                &password_policy_for(conn, &u, &policy)?,
                new_password,
                confirm_password,
                u.password_hash.as_deref(),
            )
            .and_then(|_| {
                password::hash_password(hashing, new_password, policy.argon2)
                    .map_err(Error::Invalid)
            })
        }
        None => Err(Error::InvalidFlow),
    };
    let (tx, flow, user, _) = match open_step(
        conn,
        &policy,
        flow_token,
        LoginStep::PasswordChange,
        AuditEvent::LoginPasswordChange,
        client,
        now,
    )? {
        Ok(opened) => opened,
        Err(refused) => return Ok(refused),
    };
    let hash = match checked {
        Ok(h) => h,
        Err(e) => {
            let reason = match &e {
                Error::Invalid(_) => "mismatch",
                _ => "policy",
            };
            audit::record(
                &tx,
                &entry(AuditEvent::LoginPasswordChange, Outcome::Failure, client)
                    .username(&user.username)
                    .user(user.id, user.org_id)
                    .reason(reason),
                now,
            )?;
            tx.commit()?;
            return Ok(Decision::refused(e, reason));
        }
    };
    sessions::consume_flow(&tx, flow.id, now)?;
    users::set_password(&tx, user.id, &hash, false, now)?;
    audit::record(
        &tx,
        &entry(AuditEvent::LoginPasswordChange, Outcome::Success, client)
            .username(&user.username)
            .user(user.id, user.org_id),
        now,
    )?;
    tx.commit()?;
    Ok(Decision::ok(Status::PasswordChanged))
}

/// Open an enrolment step (TOTP or passkey): its transaction, flow and user, or the
/// refusal — also when the user enrolled a factor since the flow was issued (by another
/// login or an administrator): never replace it.
#[allow(clippy::type_complexity)]
pub(crate) fn open_enrollment<'c, T>(
    conn: &'c mut Connection,
    policy: &Policy,
    key: &SecretKey,
    client: &Client,
    flow_token: &str,
    now: i64,
) -> Result<std::result::Result<(db::WriteTx<'c>, sessions::Flow, User), Decision<T>>> {
    let (tx, flow, user, _) = match open_step(
        conn,
        policy,
        flow_token,
        LoginStep::Enroll,
        AuditEvent::LoginEnroll,
        client,
        now,
    )? {
        Ok(opened) => opened,
        Err(refused) => return Ok(Err(refused)),
    };
    if !methods(&tx, key, &user, policy.mfa_passkey_required)?.is_empty() {
        sessions::consume_flow(&tx, flow.id, now)?;
        audit::record(
            &tx,
            &entry(AuditEvent::LoginEnroll, Outcome::Failure, client)
                .username(&user.username)
                .user(user.id, user.org_id)
                .reason("already_enrolled"),
            now,
        )?;
        tx.commit()?;
        return Ok(Err(Decision::refused(
            Error::InvalidFlow,
            "already_enrolled",
        )));
    }
    Ok(Ok((tx, flow, user)))
}

/// Step: start TOTP enrolment. The flow moves on to confirmation (same token).
pub fn enroll_step(
    conn: &mut Connection,
    key: &SecretKey,
    client: &Client,
    flow_token: &str,
    now: i64,
) -> Result<Decision<Enrollment>> {
    let policy = Policy::load(conn)?;
    let (tx, flow, user) = match open_enrollment(conn, &policy, key, client, flow_token, now)? {
        Ok(opened) => opened,
        Err(refused) => return Ok(refused),
    };
    if passkey_required(&tx, &user, policy.mfa_passkey_required)? {
        audit::record(
            &tx,
            &entry(AuditEvent::LoginEnroll, Outcome::Failure, client)
                .username(&user.username)
                .user(user.id, user.org_id)
                .reason("passkey_required"),
            now,
        )?;
        tx.commit()?;
        return Ok(Decision::refused(
            Error::Invalid(
                "this account must use a passkey: enrol one with {\"method\":\"passkey\"}".into(),
            ),
            "passkey_required",
        ));
    }
    let secret = totp::generate_secret();
    let uri =
        totp::otpauth_uri(&policy.totp_issuer, &user.username, &secret).map_err(Error::Invalid)?;
    factors::set_totp(&tx, key, user.id, &secret, None, now)?;
    sessions::set_flow_step(&tx, flow.id, LoginStep::EnrollConfirm)?;
    audit::record(
        &tx,
        &entry(AuditEvent::LoginEnroll, Outcome::Success, client)
            .username(&user.username)
            .user(user.id, user.org_id),
        now,
    )?;
    tx.commit()?;
    Ok(Decision::ok(Enrollment {
        flow: flow_token.to_string(),
        secret: totp::secret_base32(&secret),
        otpauth_uri: uri,
    }))
}

/// A code field that is not a well-formed 6-digit code is bad input (400, not counted).
fn well_formed_code(code: &str) -> Result<()> {
    let c: String = code.trim().chars().filter(|c| *c != ' ').collect();
    if c.len() == totp::DIGITS && c.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(Error::Invalid("the code must be 6 digits (0-9)".into()))
    }
}

/// Count a failed factor from `source` in `tx` and audit it; returns the refusal. A
/// replayed code counts as an unfamiliar source's, whatever the flow's source.
#[allow(clippy::too_many_arguments)]
pub(crate) fn factor_failure<T>(
    tx: db::WriteTx,
    user: &User,
    policy: &Policy,
    event: AuditEvent,
    reason: &'static str,
    source: lockout::Source,
    client: &Client,
    now: i64,
) -> Result<Decision<T>> {
    let source = if reason == "replayed_code" {
        lockout::Source::Unfamiliar
    } else {
        source
    };
    let o = users::record_failure_from(&tx, user.id, &policy.lockout(), source, now)?;
    audit::record(
        &tx,
        &entry(event, Outcome::Failure, client)
            .username(&user.username)
            .user(user.id, user.org_id)
            .reason(reason)
            .detail(source.detail()),
        now,
    )?;
    let locked_now = audit_lock(&tx, user, o.lock, policy.lockout_max_failures, client, now)?;
    tx.commit()?;
    Ok(credential_refusal(reason, locked_now))
}

/// Audit the lock a counted failure just caused (`account.locked`; reason
/// `too_many_failures` for the account, `too_many_unfamiliar_failures` when only
/// unfamiliar sources are locked out). Returns whether there was one.
pub(crate) fn audit_lock(
    tx: &Connection,
    user: &User,
    lock: lockout::Lock,
    max_failures: i64,
    client: &Client,
    now: i64,
) -> Result<bool> {
    let (reason, scope) = match lock {
        lockout::Lock::None => return Ok(false),
        lockout::Lock::Account => ("too_many_failures", "account"),
        lockout::Lock::Unfamiliar => ("too_many_unfamiliar_failures", "unfamiliar_sources"),
    };
    let e = entry(AuditEvent::AccountLocked, Outcome::Success, client)
        .username(&user.username)
        .user(user.id, user.org_id)
        .reason(reason)
        .detail(json!({"failed_attempts": max_failures, "scope": scope}));
    audit::record(tx, &e, now)?;
    Ok(true)
}

/// The generic credential refusal (`reason` is for the audit log and metrics only).
pub(crate) fn credential_refusal<T>(reason: &'static str, locked_now: bool) -> Decision<T> {
    Decision {
        locked_now,
        ..Decision::refused(Error::InvalidCredentials, reason)
    }
}

/// Step: confirm enrolment with the first code. The user then logs in again; the
/// confirming code's time step is spent, so it cannot also serve that login.
pub fn enroll_confirm_step(
    conn: &mut Connection,
    key: &SecretKey,
    client: &Client,
    flow_token: &str,
    code: &str,
    now: i64,
) -> Result<Decision<Status>> {
    well_formed_code(code)?;
    let policy = Policy::load(conn)?;
    let (tx, flow, user, state) = match open_step(
        conn,
        &policy,
        flow_token,
        LoginStep::EnrollConfirm,
        AuditEvent::LoginEnrollConfirm,
        client,
        now,
    )? {
        Ok(opened) => opened,
        Err(refused) => return Ok(refused),
    };
    match factors::check_totp(
        &tx,
        key,
        user.id,
        factors::Apps::All,
        code,
        now,
        policy.totp_skew,
    )? {
        Ok(_) => {}
        Err(e) => {
            let reason = if e == totp::TotpError::Replayed {
                "replayed_code"
            } else {
                "bad_code"
            };
            return factor_failure(
                tx,
                &user,
                &policy,
                AuditEvent::LoginEnrollConfirm,
                reason,
                state.source,
                client,
                now,
            );
        }
    }
    sessions::consume_flow(&tx, flow.id, now)?;
    factors::confirm_totp(&tx, user.id, None, now)?;
    users::set_mfa_method(&tx, user.id, Some(MfaMethod::Totp), now)?;
    email::notify(&tx, user.id, email::notice::FACTOR_ADDED, now)?;
    let codes = factors::rotate_recovery_codes(&tx, key, user.id, policy.recovery_count, now)?;
    audit::record(
        &tx,
        &entry(AuditEvent::LoginEnrollConfirm, Outcome::Success, client)
            .username(&user.username)
            .user(user.id, user.org_id),
        now,
    )?;
    tx.commit()?;
    Ok(Decision::ok(Status::Enrolled {
        recovery_codes: codes,
    }))
}

/// Step: the TOTP code. On success the session (and, if asked, a remembered device).
pub fn totp_step(
    conn: &mut Connection,
    key: &SecretKey,
    client: &Client,
    flow_token: &str,
    code: &str,
    remember_device: bool,
    now: i64,
) -> Result<Decision<Status>> {
    well_formed_code(code)?;
    let policy = Policy::load(conn)?;
    let (tx, flow, user, state) = match open_step(
        conn,
        &policy,
        flow_token,
        LoginStep::SecondFactor,
        AuditEvent::LoginTotp,
        client,
        now,
    )? {
        Ok(opened) => opened,
        Err(refused) => return Ok(refused),
    };
    if passkey_required(&tx, &user, policy.mfa_passkey_required)? {
        return factor_failure(
            tx,
            &user,
            &policy,
            AuditEvent::LoginTotp,
            "passkey_required",
            state.source,
            client,
            now,
        );
    }
    if user.mfa_method != Some(MfaMethod::Totp) {
        return factor_failure(
            tx,
            &user,
            &policy,
            AuditEvent::LoginTotp,
            "method_not_enrolled",
            state.source,
            client,
            now,
        );
    }
    match factors::check_totp(
        &tx,
        key,
        user.id,
        factors::Apps::Confirmed,
        code,
        now,
        policy.totp_skew,
    )? {
        Ok(m) => finish_second_factor(
            tx,
            flow,
            &user,
            &policy,
            AuditEvent::LoginTotp,
            json!({"offset": m.m.offset, "app": m.name}),
            remember_device,
            None,
            client,
            now,
        ),
        Err(e) => {
            let reason = if e == totp::TotpError::Replayed {
                "replayed_code"
            } else {
                "bad_code"
            };
            factor_failure(
                tx,
                &user,
                &policy,
                AuditEvent::LoginTotp,
                reason,
                state.source,
                client,
                now,
            )
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn finish_second_factor(
    tx: db::WriteTx,
    flow: sessions::Flow,
    user: &User,
    policy: &Policy,
    event: AuditEvent,
    detail: serde_json::Value,
    remember_device: bool,
    warning: Option<String>,
    client: &Client,
    now: i64,
) -> Result<Decision<Status>> {
    sessions::consume_flow(&tx, flow.id, now)?;
    // A step-up adds to its session only while that session lives: the second factor
    // alone never makes a session.
    let step_up = serde_json::from_str::<FlowState>(&flow.data)
        .unwrap_or_default()
        .step_up;
    let stepped = match step_up {
        Some(id) => match sessions::live_factors(&tx, id, now)? {
            Some((had, expires_at)) => Some((id, had, expires_at)),
            None => {
                audit::record(
                    &tx,
                    &entry(event, Outcome::Failure, client)
                        .username(&user.username)
                        .user(user.id, user.org_id)
                        .reason("step_up_session_ended"),
                    now,
                )?;
                tx.commit()?;
                return Ok(Decision::refused(
                    Error::InvalidFlow,
                    "step_up_session_ended",
                ));
            }
        },
        None => None,
    };
    let device = if remember_device && policy.remember_device_days > 0 {
        Some(factors::remember_device(
            &tx,
            user.id,
            &client.user_agent,
            policy.remember_device_days,
            now,
        )?)
    } else {
        None
    };
    // The factors of this sign-in, for OpenID Connect's `amr` (src/oidc.rs).
    let factors = match event {
        AuditEvent::LoginTotp | AuditEvent::LoginEnrollConfirm => "pwd totp",
        AuditEvent::LoginEmail => "pwd email",
        AuditEvent::LoginRecovery => "pwd recovery",
        AuditEvent::LoginPasskey => "pwd hwk",
        _ => "pwd",
    };
    let factors = match &stepped {
        Some((_, had, _)) => stepped_up(had, factors),
        None => factors.to_string(),
    };
    let mut status = authenticate(
        &tx,
        user,
        policy,
        client,
        device.clone(),
        warning,
        &factors,
        now,
    )?;
    let mut detail = detail;
    detail["remembered_device"] = json!(device.is_some());
    if let (
        Some((id, _, old_expiry)),
        Status::Authenticated {
            session,
            expires_at,
            ..
        },
    ) = (&stepped, &mut status)
    {
        // The stepped-up session gives way to the new one (a new token for the raised
        // assurance), which ends when it would have.
        sessions::revoke(&tx, *id, now)?;
        sessions::cap_expiry(&tx, session, *old_expiry)?;
        *expires_at = crate::util::rfc3339(
            (*old_expiry).min(now.saturating_add(policy.session_absolute_hours * 3600)),
        );
        detail["step_up"] = json!(factors);
    }
    audit::record(
        &tx,
        &entry(event, Outcome::Success, client)
            .username(&user.username)
            .user(user.id, user.org_id)
            .detail(detail),
        now,
    )?;
    tx.commit()?;
    Ok(Decision::ok(status))
}

/// Step: a recovery code instead of the usual second factor. Each works once.
pub fn recovery_step(
    conn: &mut Connection,
    key: &SecretKey,
    client: &Client,
    flow_token: &str,
    code: &str,
    now: i64,
) -> Result<Decision<Status>> {
    if crate::recovery::normalize(code).is_none() {
        return Err(Error::Invalid(
            "a recovery code has 10 letters and digits, like abcde-12345".into(),
        ));
    }
    let policy = Policy::load(conn)?;
    let (tx, flow, user, state) = match open_step(
        conn,
        &policy,
        flow_token,
        LoginStep::SecondFactor,
        AuditEvent::LoginRecovery,
        client,
        now,
    )? {
        Ok(opened) => opened,
        Err(refused) => return Ok(refused),
    };
    match factors::use_recovery_code(&tx, key, user.id, code, now)? {
        Some(remaining) => {
            email::notify(&tx, user.id, email::notice::RECOVERY_CODE_USED, now)?;
            let warning = (remaining == 0).then(|| {
                "that was your last recovery code: enrol again or ask an administrator for new codes".to_string()
            });
            if remaining == 0 {
                audit::record(
                    &tx,
                    &entry(AuditEvent::RecoveryExhausted, Outcome::Success, client)
                        .username(&user.username)
                        .user(user.id, user.org_id)
                        .reason("last_recovery_code_used"),
                    now,
                )?;
            }
            finish_second_factor(
                tx,
                flow,
                &user,
                &policy,
                AuditEvent::LoginRecovery,
                json!({"remaining": remaining}),
                false,
                warning,
                client,
                now,
            )
        }
        None => factor_failure(
            tx,
            &user,
            &policy,
            AuditEvent::LoginRecovery,
            "bad_recovery_code",
            state.source,
            client,
            now,
        ),
    }
}

/// Step: the emailed code. On success the session (and, if asked, a remembered device).
pub fn email_step(
    conn: &mut Connection,
    key: &SecretKey,
    client: &Client,
    flow_token: &str,
    code: &str,
    remember_device: bool,
    now: i64,
) -> Result<Decision<Status>> {
    well_formed_code(code)?;
    let policy = Policy::load(conn)?;
    let (tx, flow, user, state) = match open_step(
        conn,
        &policy,
        flow_token,
        LoginStep::SecondFactor,
        AuditEvent::LoginEmail,
        client,
        now,
    )? {
        Ok(opened) => opened,
        Err(refused) => return Ok(refused),
    };
    if !methods(&tx, key, &user, policy.mfa_passkey_required)?.contains(&"email_otp") {
        let reason = if passkey_required(&tx, &user, policy.mfa_passkey_required)? {
            "passkey_required"
        } else {
            "method_not_enrolled"
        };
        return factor_failure(
            tx,
            &user,
            &policy,
            AuditEvent::LoginEmail,
            reason,
            state.source,
            client,
            now,
        );
    }
    let code = code.trim().replace(' ', "");
    match email::check(
        &tx,
        key,
        flow.id,
        user.id,
        &code,
        policy.email_otp_max_tries,
        now,
    )? {
        email::Check::Ok => finish_second_factor(
            tx,
            flow,
            &user,
            &policy,
            AuditEvent::LoginEmail,
            json!({}),
            remember_device,
            None,
            client,
            now,
        ),
        email::Check::Wrong { .. } => factor_failure(
            tx,
            &user,
            &policy,
            AuditEvent::LoginEmail,
            "bad_code",
            state.source,
            client,
            now,
        ),
        email::Check::TooManyTries => factor_failure(
            tx,
            &user,
            &policy,
            AuditEvent::LoginEmail,
            "too_many_tries",
            state.source,
            client,
            now,
        ),
        email::Check::Expired => factor_failure(
            tx,
            &user,
            &policy,
            AuditEvent::LoginEmail,
            "expired_code",
            state.source,
            client,
            now,
        ),
        email::Check::NoCode => factor_failure(
            tx,
            &user,
            &policy,
            AuditEvent::LoginEmail,
            "no_code",
            state.source,
            client,
            now,
        ),
    }
}

/// Step: mail a new code for this flow (the previous one stops working). Rate-limited.
pub fn email_resend_step(
    conn: &mut Connection,
    key: &SecretKey,
    client: &Client,
    flow_token: &str,
    now: i64,
) -> Result<Decision<Status>> {
    let policy = Policy::load(conn)?;
    let (tx, flow, user, _) = match open_step(
        conn,
        &policy,
        flow_token,
        LoginStep::SecondFactor,
        AuditEvent::LoginEmailResend,
        client,
        now,
    )? {
        Ok(opened) => opened,
        Err(refused) => return Ok(refused),
    };
    let base = entry(AuditEvent::LoginEmailResend, Outcome::Failure, client)
        .username(&user.username)
        .user(user.id, user.org_id);
    if !methods(&tx, key, &user, policy.mfa_passkey_required)?.contains(&"email_otp") {
        audit::record(&tx, &base.reason("method_not_enrolled"), now)?;
        tx.commit()?;
        return Ok(Decision::refused(
            Error::Invalid("this account does not use emailed codes".into()),
            "method_not_enrolled",
        ));
    }
    let sent = entry(AuditEvent::LoginEmailResend, Outcome::Success, client)
        .username(&user.username)
        .user(user.id, user.org_id);
    mail_code(tx, key, &user, &policy, flow.id, sent, base, now)
}

/// Mail a fresh code for the flow `flow_id` and commit: `code_sent` with the mail,
/// audited `sent`; asked again too soon, the refusal, audited `refused` with the reason
/// `resend_too_soon`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mail_code(
    tx: db::WriteTx<'_>,
    key: &SecretKey,
    user: &User,
    policy: &Policy,
    flow_id: i64,
    sent: Entry,
    refused: Entry,
    now: i64,
) -> Result<Decision<Status>> {
    match issue_email_code(&tx, key, user, policy, flow_id, now)? {
        Ok(mail) => {
            audit::record(&tx, &sent, now)?;
            tx.commit()?;
            let expires_at = crate::util::rfc3339(now + policy.email_otp_ttl_minutes * 60);
            Ok(Decision {
                mail: Some(mail),
                ..Decision::ok(Status::CodeSent { expires_at })
            })
        }
        Err(wait) => {
            audit::record(&tx, &refused.reason("resend_too_soon"), now)?;
            tx.commit()?;
            Ok(Decision::refused(
                Error::TooSoon {
                    message: format!("a code was sent moments ago; ask again in {wait} s"),
                    retry_after: wait,
                },
                "resend_too_soon",
            ))
        }
    }
}

/// What `GET /v1/session` answers.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub user: UserView,
    pub expires_at: String,
    #[serde(skip)]
    pub user_id: i64,
    #[serde(skip)]
    pub role: Role,
    #[serde(skip)]
    pub org_id: i64,
    /// The session row as the check left it (for answering later checks from memory).
    #[serde(skip)]
    pub session: sessions::Live,
    /// The idle limit the check applied, in seconds.
    #[serde(skip)]
    pub idle_secs: i64,
    /// Failed attempts on the account (any source) before its latest sign-in; left out
    /// when none.
    #[serde(skip_serializing_if = "is_zero")]
    pub failed_attempts_since_last_sign_in: i64,
}

/// Check a session token: live, not idle, and its user still allowed in.
pub fn check_session(conn: &Connection, token: &str, now: i64) -> Result<Option<SessionInfo>> {
    if token.is_empty() || token.len() > 128 {
        return Ok(None);
    }
    // The hot path of every proxied page view: read only the one setting it needs.
    let idle_minutes: i64 = crate::policy::get(conn, "session.idle_minutes")?
        .parse()
        .unwrap_or(30);
    let idle_secs = idle_minutes * 60;
    let Some(s) = sessions::find_live(conn, token, idle_secs, now)? else {
        return Ok(None);
    };
    let user = users::by_id(conn, s.user_id)?;
    if user.disabled || user.account_locked(now) {
        return Ok(None);
    }
    Ok(Some(SessionInfo {
        user: UserView::from(&user),
        expires_at: crate::util::rfc3339(s.expires_at),
        user_id: user.id,
        role: user.role,
        org_id: user.org_id,
        session: s,
        idle_secs,
        failed_attempts_since_last_sign_in: user.last_sign_in_failures,
    }))
}

/// End the session with this token (audited). False when it was not live.
pub fn logout(conn: &mut Connection, client: &Client, token: &str, now: i64) -> Result<bool> {
    let tx = db::write_tx(conn)?;
    let Some(info) = check_session(&tx, token, now)? else {
        return Ok(false);
    };
    sessions::revoke_token(&tx, token, now)?;
    audit::record(
        &tx,
        &entry(AuditEvent::SessionLogout, Outcome::Success, client)
            .username(&info.user.username)
            .user(info.user_id, info.org_id),
        now,
    )?;
    tx.commit()?;
    Ok(true)
}

/// A signed-in user changes their password (current one required; a wrong one counts
/// toward the lockout). Ends every session, so the user logs in again. Slow (argon2).
// The core's hashing slots, the connection and the step's own inputs.
#[allow(clippy::too_many_arguments)]
pub fn change_password(
    hashing: &Hashing,
    conn: &mut Connection,
    client: &Client,
    user_id: i64,
    current: &str,
    new_password: &str,
    confirm_password: &str,
    now: i64,
) -> Result<Decision<Status>> {
    let policy = Policy::load(conn)?;
    let before = users::by_id(conn, user_id)?;
    let hash = before.password_hash.clone().unwrap_or_default();
    let current_ok = password::verify_password(hashing, current, &hash);
    let checked = if current_ok {
        check_new_password(
            hashing,
            &password_policy_for(conn, &before, &policy)?,
            new_password,
            confirm_password,
            Some(&hash),
        )
        .and_then(|_| {
            password::hash_password(hashing, new_password, policy.argon2).map_err(Error::Invalid)
        })
    } else {
        Err(Error::InvalidCredentials)
    };
    let tx = db::write_tx(conn)?;
    let user = users::by_id(&tx, user_id)?;
    let base = entry(AuditEvent::PasswordChange, Outcome::Failure, client)
        .username(&user.username)
        .user(user.id, user.org_id);
    if user.password_hash.as_deref() != Some(hash.as_str()) {
        audit::record(&tx, &base.reason("password_changed_concurrently"), now)?;
        tx.commit()?;
        return Ok(Decision::refused(
            Error::InvalidCredentials,
            "password_changed_concurrently",
        ));
    }
    match checked {
        Err(Error::InvalidCredentials) => factor_failure(
            tx,
            &user,
            &policy,
            AuditEvent::PasswordChange,
            "wrong_password",
            lockout::Source::Session,
            client,
            now,
        ),
        Err(e) => {
            let reason = if matches!(e, Error::Invalid(_)) {
                "mismatch"
            } else {
                "policy"
            };
            audit::record(&tx, &base.reason(reason), now)?;
            tx.commit()?;
            Ok(Decision::refused(e, reason))
        }
        Ok(h) => {
            users::set_password(&tx, user.id, &h, false, now)?;
            audit::record(
                &tx,
                &entry(AuditEvent::PasswordChange, Outcome::Success, client)
                    .username(&user.username)
                    .user(user.id, user.org_id),
                now,
            )?;
            tx.commit()?;
            Ok(Decision::ok(Status::PasswordChanged))
        }
    }
}

#[cfg(test)]
#[path = "login_tests.rs"]
mod tests;
