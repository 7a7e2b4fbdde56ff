//! The login steps, self-service actions and reads of the front ends as methods of
//! [`Core`]: each takes plain values (the client, a flow token, a code…), reads the time
//! from the core's clock and answers what [`crate::login`] and [`crate::forgot`] decide.
//! The API (daemon/handlers.rs) and the portal (daemon/portal/) call the same method for
//! the same step, so they cannot answer differently.
//!
//! Two kinds of method:
//! - **blocking** ones (`&self … -> Result<_>`) run on the caller's thread with a pooled
//!   connection; those that hash a password (`password_step`, `expired_password_step`,
//!   `change_password`, `set_security_questions`, `forgot_reset`) use one of the core's
//!   hashing slots. Async front ends call them from blocking threads.
//! - **write steps** (`-> WriteStep<…>`: terms, enrolment confirmation, TOTP, recovery
//!   code, emailed code and its resend, logout) are short writes that never hash: they
//!   run on the core's group-commit writer ([`crate::group_commit`]), queued with
//!   [`Core::submit`] and a reply callback, or run with the blocking [`Core::run`]. Their
//!   clock is read when the step runs on the writer.

use crate::admin::Door;
use crate::audit::{self, Entry, Outcome};
use crate::core::Core;
use crate::error::{Error, Result};
use crate::forgot::{self, QuestionAnswer};
use crate::group_commit::{Full, Step, WriteError, WriteStep};
use crate::kinds::{AuditEvent, LoginStep};
use crate::login::{self, Client, Decision, Enrollment, SessionInfo, Status};
use crate::passkey;
use crate::policy::Policy;
use crate::reset_link;
use crate::security;
use crate::store::email::{self, Notice};
use crate::store::factors::{self, Device};
use crate::store::terms::{self, Terms};
use crate::store::{sessions, users};

/// What a signed-in user's account page shows besides who they are.
#[derive(Debug, Clone)]
pub struct AccountOverview {
    /// Their live remembered devices.
    pub devices: Vec<Device>,
    /// Their security questions (the questions only).
    pub questions: Vec<String>,
    /// How long a device is remembered (the policy's `remember_device_days`).
    pub remember_device_days: i64,
}

/// The authenticator secret (base32) and otpauth URI of a pending enrolment.
#[derive(Debug, Clone)]
pub struct PendingEnrollment {
    pub secret: String,
    pub otpauth_uri: String,
}

impl Core {
    // ---- the writer ------------------------------------------------------------------

    /// Queue a write step on the core's writer without waiting; `reply` gets its answer
    /// exactly once, after its group's commit (see [`crate::group_commit`]). `Err(Full)`:
    /// the queue had no room, nothing was queued; push again with [`Core::resubmit`].
    pub fn submit<S, R>(&self, step: WriteStep<S>, reply: R) -> std::result::Result<(), Full>
    where
        S: Step,
        R: FnOnce(std::result::Result<S::Output, WriteError>) + Send + 'static,
    {
        self.writer().submit(step, reply)
    }

    /// Push again a step the writer's queue had no room for.
    pub fn resubmit(&self, full: Full) -> std::result::Result<(), Full> {
        self.writer().retry(full)
    }

    /// Run a write step on the core's writer and wait for its answer (blocks).
    pub fn run<S: Step>(&self, step: WriteStep<S>) -> std::result::Result<S::Output, WriteError> {
        self.writer().run(step)
    }

    /// A write step of this core: `f` gets the writer's connection, the key and the time
    /// read when it runs.
    fn write_step<T, F>(&self, f: F) -> WriteStep<impl Step<Output = T>>
    where
        T: Send + 'static,
        F: FnOnce(&mut crate::sql::Connection, &crate::crypto::SecretKey, i64) -> Result<T>
            + Send
            + 'static,
    {
        let core = self.clone();
        WriteStep::new(move |conn: &mut crate::sql::Connection| f(conn, core.key(), core.now()))
    }

    // ---- the login steps -------------------------------------------------------------

    /// The password step ([`login::password_step`]; hashes, blocks).
    pub fn password_step(
        &self,
        client: &Client,
        username: &str,
        password: &str,
        device_token: Option<&str>,
    ) -> Result<Decision<Status>> {
        let now = self.now();
        let rp = self.relying_party();
        self.with_conn(|conn, key| {
            let d = login::password_step(
                self.hashing(),
                conn,
                key,
                client,
                username,
                password,
                device_token,
                now,
            )?;
            passkey::decorate(conn, rp.as_deref(), client, d, now)
        })
    }

    /// Accept (or decline) the terms ([`login::terms_step`]; a write step).
    pub fn terms_step(
        &self,
        client: Client,
        flow: String,
        accept: bool,
    ) -> WriteStep<impl Step<Output = Decision<Status>>> {
        let rp = self.relying_party();
        self.write_step(move |conn, key, now| {
            let d = login::terms_step(conn, key, &client, &flow, accept, now)?;
            passkey::decorate(conn, rp.as_deref(), &client, d, now)
        })
    }

    /// Replace an expired password ([`login::expired_password_step`]; hashes, blocks).
    pub fn expired_password_step(
        &self,
        client: &Client,
        flow: &str,
        new_password: &str,
        confirm_password: &str,
    ) -> Result<Decision<Status>> {
        let now = self.now();
        self.with_conn(|conn, key| {
            login::expired_password_step(
                self.hashing(),
                conn,
                key,
                client,
                flow,
                new_password,
                confirm_password,
                now,
            )
        })
    }

    /// Start an authenticator enrolment ([`login::enroll_step`]; blocks).
    pub fn enroll_step(&self, client: &Client, flow: &str) -> Result<Decision<Enrollment>> {
        let now = self.now();
        self.with_conn(|conn, key| login::enroll_step(conn, key, client, flow, now))
    }

    /// The secret and URI of the enrolment a confirm flow belongs to (to show the QR
    /// code again after a wrong code), or None when the flow is not a live one.
    pub fn pending_enrollment(&self, flow: &str) -> Result<Option<PendingEnrollment>> {
        let now = self.now();
        self.with_conn(|conn, key| {
            let Some(f) = sessions::find_flow(conn, flow, LoginStep::EnrollConfirm, now)? else {
                return Ok(None);
            };
            let Some(cred) = factors::get_totp(conn, key, f.user_id)?.into_iter().next() else {
                return Ok(None);
            };
            let user = users::by_id(conn, f.user_id)?;
            let p = Policy::load(conn)?;
            let otpauth_uri =
                crate::totp::otpauth_uri(&p.totp_issuer, &user.username, &cred.secret)
                    .map_err(Error::Invalid)?;
            Ok(Some(PendingEnrollment {
                secret: crate::totp::secret_base32(&cred.secret),
                otpauth_uri,
            }))
        })
    }

    /// Confirm an enrolment with the first code ([`login::enroll_confirm_step`]; a write
    /// step).
    pub fn enroll_confirm_step(
        &self,
        client: Client,
        flow: String,
        code: String,
    ) -> WriteStep<impl Step<Output = Decision<Status>>> {
        self.write_step(move |conn, key, now| {
            login::enroll_confirm_step(conn, key, &client, &flow, &code, now)
        })
    }

    /// An authenticator code ([`login::totp_step`]; a write step).
    pub fn totp_step(
        &self,
        client: Client,
        flow: String,
        code: String,
        remember_device: bool,
    ) -> WriteStep<impl Step<Output = Decision<Status>>> {
        self.write_step(move |conn, key, now| {
            login::totp_step(conn, key, &client, &flow, &code, remember_device, now)
        })
    }

    /// A recovery code ([`login::recovery_step`]; a write step).
    pub fn recovery_step(
        &self,
        client: Client,
        flow: String,
        code: String,
    ) -> WriteStep<impl Step<Output = Decision<Status>>> {
        self.write_step(move |conn, key, now| {
            login::recovery_step(conn, key, &client, &flow, &code, now)
        })
    }

    /// An emailed code ([`login::email_step`]; a write step).
    pub fn email_step(
        &self,
        client: Client,
        flow: String,
        code: String,
        remember_device: bool,
    ) -> WriteStep<impl Step<Output = Decision<Status>>> {
        self.write_step(move |conn, key, now| {
            login::email_step(conn, key, &client, &flow, &code, remember_device, now)
        })
    }

    /// A new emailed code ([`login::email_resend_step`]; a write step).
    pub fn email_resend_step(
        &self,
        client: Client,
        flow: String,
    ) -> WriteStep<impl Step<Output = Decision<Status>>> {
        self.write_step(move |conn, key, now| {
            login::email_resend_step(conn, key, &client, &flow, now)
        })
    }

    /// End the session of `token` ([`login::logout`]; a write step): false when it was
    /// not a live session.
    pub fn logout(&self, client: Client, token: String) -> WriteStep<impl Step<Output = bool>> {
        self.write_step(move |conn, _, now| login::logout(conn, &client, &token, now))
    }

    // ---- self-service ----------------------------------------------------------------

    /// Change the password of a signed-in user ([`login::change_password`]; hashes,
    /// blocks).
    pub fn change_password(
        &self,
        client: &Client,
        user_id: i64,
        current: &str,
        new_password: &str,
        confirm_password: &str,
    ) -> Result<Decision<Status>> {
        let now = self.now();
        self.with_conn(|conn, _| {
            login::change_password(
                self.hashing(),
                conn,
                client,
                user_id,
                current,
                new_password,
                confirm_password,
                now,
            )
        })
    }

    /// Replace a user's security questions ([`forgot::prepare_questions`] under the
    /// policy, then [`forgot::store_questions`]; hashes, blocks). Bad questions are an
    /// [`Error::Invalid`] and change nothing.
    pub fn set_security_questions(
        &self,
        client: &Client,
        user_id: i64,
        questions: &[QuestionAnswer],
    ) -> Result<()> {
        let now = self.now();
        self.with_conn(|conn, _| {
            let policy = Policy::load(conn)?;
            forgot::check_offered(conn, questions)?;
            let prepared = forgot::prepare_questions(self.hashing(), questions, &policy)?;
            forgot::store_questions(conn, client, user_id, &prepared, now)
        })
    }

    /// The questions users pick from, and whether an admin set them (blocks).
    pub fn question_list(&self) -> Result<(Vec<String>, bool)> {
        self.with_conn(|conn, _| forgot::question_list(conn))
    }

    /// A user's security questions (the questions only; blocks).
    pub fn security_questions(&self, user_id: i64) -> Result<Vec<String>> {
        self.with_conn(|conn, _| forgot::questions(conn, user_id))
    }

    /// What a signed-in user's account page shows (blocks).
    pub fn account_overview(&self, user_id: i64) -> Result<AccountOverview> {
        let now = self.now();
        self.with_conn(|conn, _| {
            Ok(AccountOverview {
                devices: factors::list_devices(conn, Some(user_id), now)?,
                questions: forgot::questions(conn, user_id)?,
                remember_device_days: Policy::load(conn)?.remember_device_days,
            })
        })
    }

    /// Forget one of the signed-in user's own remembered devices, audited either way:
    /// false when `device` is not one of theirs (blocks).
    pub fn revoke_own_device(
        &self,
        client: &Client,
        session: &SessionInfo,
        device: i64,
        door: Door,
    ) -> Result<bool> {
        let now = self.now();
        self.with_conn(|conn, _| {
            let tx = crate::db::write_tx(conn)?;
            let mine = factors::list_devices(&tx, Some(session.user_id), now)?
                .iter()
                .any(|d| d.id == device);
            let ok = mine && factors::revoke_device(&tx, device, now)?;
            let outcome = if ok {
                Outcome::Success
            } else {
                Outcome::Failure
            };
            let mut e = Entry::new(AuditEvent::DeviceRevoke, outcome)
                .client(&client.ip, &client.user_agent)
                .username(&session.user.username)
                .user(session.user_id, session.org_id)
                .actor(&session.user.username)
                .detail(serde_json::json!({"via": door.as_str(), "device": device}));
            if !ok {
                e = e.reason("not_found");
            }
            audit::record(&tx, &e, now)?;
            tx.commit()?;
            Ok(ok)
        })
    }

    /// Start a forgotten-password reset ([`forgot::forgot`]: the same shape of answer
    /// for every name; blocks).
    pub fn forgot(&self, client: &Client, username: &str) -> Result<Decision<forgot::Answer>> {
        let now = self.now();
        self.with_conn(|conn, key| forgot::start(conn, key, client, username, now))
    }

    // ---- the security page ([`security`]) -------------------------------------------

    /// The session's user's security page (blocks).
    pub fn security_overview(&self, s: &SessionInfo) -> Result<security::Overview> {
        let now = self.now();
        self.with_conn(|conn, _| security::overview(conn, s, now))
    }

    /// Confirm the password and second factor again (hashes, blocks): until when factor
    /// changes are allowed.
    pub fn reauthenticate(
        &self,
        client: &Client,
        s: &SessionInfo,
        password: &str,
        code: Option<&str>,
    ) -> Result<String> {
        let now = self.now();
        self.with_conn(|conn, key| {
            security::reauthenticate(self.hashing(), conn, key, client, s, password, code, now)
        })
    }

    /// Mail a re-authentication code to a user whose second factor is emailed codes
    /// ([`security::send_reauth_code`]; blocks).
    pub fn send_reauth_code(&self, client: &Client, s: &SessionInfo) -> Result<Decision<Status>> {
        let now = self.now();
        self.with_conn(|conn, key| security::send_reauth_code(conn, key, client, s, now))
    }

    /// New recovery codes (needs a fresh re-authentication; blocks).
    pub fn regenerate_recovery_codes(
        &self,
        client: &Client,
        s: &SessionInfo,
    ) -> Result<Vec<String>> {
        let now = self.now();
        self.with_conn(|conn, key| security::regenerate_recovery_codes(conn, key, client, s, now))
    }

    /// Remove the authenticator app (needs a fresh re-authentication; blocks).
    pub fn remove_own_totp(&self, client: &Client, s: &SessionInfo) -> Result<()> {
        let now = self.now();
        self.with_conn(|conn, _| security::remove_totp(conn, client, s, now))
    }

    /// Add an authenticator app (needs a fresh re-authentication; blocks).
    pub fn add_own_totp_app(
        &self,
        client: &Client,
        s: &SessionInfo,
        name: &str,
    ) -> Result<security::AddedApp> {
        let now = self.now();
        self.with_conn(|conn, key| security::add_totp_app(conn, key, client, s, name, now))
    }

    /// Confirm an added authenticator app with its code: None for a wrong code (counted
    /// toward the lockout; blocks).
    pub fn confirm_own_totp_app(
        &self,
        client: &Client,
        s: &SessionInfo,
        id: i64,
        code: &str,
    ) -> Result<Option<security::ConfirmedApp>> {
        let now = self.now();
        self.with_conn(|conn, key| security::confirm_totp_app(conn, key, client, s, id, code, now))
    }

    /// An added app still waiting for its first code, its secret and URI again (blocks).
    pub fn pending_own_totp_app(
        &self,
        s: &SessionInfo,
        id: i64,
    ) -> Result<Option<security::AddedApp>> {
        self.with_conn(|conn, key| security::pending_totp_app(conn, key, s, id))
    }

    /// Remove one of the user's authenticator apps, not the last (needs a fresh
    /// re-authentication; blocks).
    pub fn remove_own_totp_app(&self, client: &Client, s: &SessionInfo, id: i64) -> Result<()> {
        let now = self.now();
        self.with_conn(|conn, _| security::remove_totp_app(conn, client, s, id, now))
    }

    /// End one of the user's own sessions (blocks).
    pub fn revoke_own_session(&self, client: &Client, s: &SessionInfo, id: i64) -> Result<()> {
        let now = self.now();
        self.with_conn(|conn, _| security::revoke_session(conn, client, s, id, now))
    }

    /// End every other session of the user (blocks).
    pub fn revoke_other_sessions(&self, client: &Client, s: &SessionInfo) -> Result<usize> {
        let now = self.now();
        self.with_conn(|conn, _| security::revoke_other_sessions(conn, client, s, now))
    }

    /// Forget every remembered device of the user (blocks).
    pub fn revoke_all_own_devices(&self, client: &Client, s: &SessionInfo) -> Result<usize> {
        let now = self.now();
        self.with_conn(|conn, _| security::revoke_all_devices(conn, client, s, now))
    }

    /// The rules of a new password for the account whose pending login (`step` =
    /// [`LoginStep::PasswordChange`]) or one-time link ([`LoginStep::ResetLink`]) `token`
    /// is ([`login::password_policy_for`]): what its page's checklist shows. A token
    /// naming no live flow gets the rules of an account not known (blocks).
    pub fn new_password_policy(
        &self,
        step: LoginStep,
        token: &str,
    ) -> Result<crate::password::PasswordPolicy> {
        let now = self.now();
        self.with_conn(|conn, _| {
            let policy = Policy::load(conn)?;
            let flow = if token.is_empty() || token.len() > 128 {
                None
            } else {
                sessions::find_flow(conn, token, step, now)?
            };
            match flow {
                Some(f) => {
                    login::password_policy_for(conn, &users::by_id(conn, f.user_id)?, &policy)
                }
                None => Ok(policy.password),
            }
        })
    }

    /// Whether `token` is a live reset link, and whose ([`reset_link::peek`]; blocks).
    pub fn reset_link_user(&self, token: &str) -> Result<Option<reset_link::LinkInfo>> {
        let now = self.now();
        self.with_conn(|conn, _| reset_link::peek(conn, token, now))
    }

    /// Set a new password through a one-time link ([`reset_link::reset`]; hashes,
    /// blocks).
    pub fn reset_with_link(
        &self,
        client: &Client,
        token: &str,
        new_password: &str,
        confirm_password: &str,
    ) -> Result<Decision<reset_link::LinkReset>> {
        let now = self.now();
        self.with_conn(|conn, _| {
            reset_link::reset(
                self.hashing(),
                conn,
                client,
                token,
                new_password,
                confirm_password,
                now,
            )
        })
    }

    /// Finish a reset with the answers and the new password ([`forgot::reset`]; hashes,
    /// blocks).
    pub fn forgot_reset(
        &self,
        client: &Client,
        flow: &str,
        answers: &[String],
        new_password: &str,
        confirm_password: &str,
    ) -> Result<Decision<Status>> {
        let now = self.now();
        self.with_conn(|conn, _| {
            forgot::reset(
                self.hashing(),
                conn,
                client,
                flow,
                answers,
                new_password,
                confirm_password,
                now,
            )
        })
    }

    // ---- reads -----------------------------------------------------------------------

    /// The current terms and conditions, if any (blocks).
    pub fn current_terms(&self) -> Result<Option<Terms>> {
        self.with_conn(|conn, _| terms::current(conn))
    }

    /// Whether the database answers (blocks).
    pub fn ping(&self) -> Result<()> {
        self.with_conn(|conn, _| crate::db::ping(conn))
    }

    // ---- the outbox of mailed notices --------------------------------------------------

    /// Up to `limit` notices due for mailing now (blocks).
    pub fn due_notices(&self, limit: i64) -> Result<Vec<Notice>> {
        let now = self.now();
        self.with_conn(|conn, key| email::due_notices(conn, key, now, limit))
    }

    /// Record that notice `id` was mailed (blocks).
    pub fn notice_sent(&self, id: i64) -> Result<()> {
        let now = self.now();
        self.with_conn(|conn, _| email::notice_sent(conn, id, now))
    }

    /// Record a failed mailing of notice `id`; it is given up after `max_attempts`
    /// (blocks).
    pub fn notice_failed(&self, id: i64, error: &str, max_attempts: i64) -> Result<()> {
        let now = self.now();
        self.with_conn(|conn, _| email::notice_failed(conn, id, error, max_attempts, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::password::{Argon2Params, Hashing};
    use crate::store::users::{NewUser, Role};
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::{mpsc, Arc};

    const T0: i64 = 1_800_000_000;
    const PW: &str = "Correct-Horse-9";

    struct Fx {
        _dir: tempfile::TempDir,
        core: Core,
        clock: Arc<AtomicI64>,
        client: Client,
    }

    impl Fx {
        fn new() -> Fx {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.db");
            let (conn, key) = crate::db::create(&crate::db::Location::new(&path, None)).unwrap();
            crate::policy::set(&conn, "argon2.m_kib", "1024", 0).unwrap();
            crate::policy::set(&conn, "argon2.t", "1", 0).unwrap();
            let hashing = Hashing::new(1);
            let params = Argon2Params {
                m_kib: 1024,
                t: 1,
                p: 1,
            };
            let hash = crate::password::hash_password(&hashing, PW, params).unwrap();
            users::create(
                &conn,
                &NewUser {
                    username: "alice",
                    email: "alice@example.org",
                    org: None,
                    groups: &[],
                    // Admins need a second factor (the default policy).
                    role: Role::Admin,
                    password_hash: Some(hash),
                    must_change_password: false,
                },
                T0,
            )
            .unwrap();
            let clock = Arc::new(AtomicI64::new(T0));
            let c = clock.clone();
            let core = Core::start(
                &path,
                key,
                hashing,
                Arc::new(move || c.load(Ordering::SeqCst)),
            )
            .unwrap();
            Fx {
                _dir: dir,
                core,
                clock,
                client: Client {
                    ip: "127.0.0.1".into(),
                    user_agent: "test".into(),
                },
            }
        }
        fn at(&self, t: i64) {
            self.clock.store(t, Ordering::SeqCst);
        }
        fn login(&self) -> Status {
            self.core
                .password_step(&self.client, "alice", PW, None)
                .unwrap()
                .result
                .unwrap()
        }
    }

    fn flow_of(s: &Status) -> String {
        match s {
            Status::SecondFactorRequired { flow, .. } | Status::EnrollmentRequired { flow, .. } => {
                flow.clone()
            }
            other => panic!("no flow in {other:?}"),
        }
    }

    fn code(secret_b32: &str, now: i64) -> String {
        let s = crate::totp::parse_base32(secret_b32).unwrap();
        crate::totp::code_at_step(
            &s,
            crate::totp::step_of(now),
            crate::totp::Algorithm::Sha1,
            6,
        )
    }

    /// A login from the password to a session and back out through the core's methods
    /// alone, the short steps on its writer; a write step reads the clock when it runs
    /// on the writer, not when it is built.
    #[test]
    fn a_login_through_the_cores_methods_reads_the_clock_when_a_step_runs() {
        let fx = Fx::new();
        let s = fx.login();
        let flow = flow_of(&s);
        assert!(matches!(s, Status::EnrollmentRequired { .. }), "{s:?}");
        let e = fx
            .core
            .enroll_step(&fx.client, &flow)
            .unwrap()
            .result
            .unwrap();
        let pending = fx.core.pending_enrollment(&e.flow).unwrap().unwrap();
        assert_eq!(pending.secret, e.secret);
        assert_eq!(pending.otpauth_uri, e.otpauth_uri);
        let confirm =
            fx.core
                .enroll_confirm_step(fx.client.clone(), e.flow.clone(), code(&e.secret, T0));
        let done = fx.core.run(confirm).unwrap().result.unwrap();
        assert!(matches!(done, Status::Enrolled { .. }), "{done:?}");
        assert!(fx.core.pending_enrollment(&e.flow).unwrap().is_none());

        // Sign in again ten minutes on, and build the TOTP step while the clock still
        // reads ten minutes earlier: the code is right only at the later time.
        let t1 = T0 + 600;
        fx.at(t1);
        let flow = flow_of(&fx.login());
        fx.at(T0);
        let step = fx
            .core
            .totp_step(fx.client.clone(), flow, code(&e.secret, t1), false);
        fx.at(t1);
        let (tx, rx) = mpsc::channel();
        let queued = fx.core.submit(step, move |a| {
            let _ = tx.send(a);
        });
        assert!(queued.is_ok());
        let ok = rx.recv().unwrap().unwrap().result.unwrap();
        let Status::Authenticated { session, .. } = ok else {
            panic!("{ok:?}")
        };
        assert!(fx.core.check_session(&session).unwrap().is_some());

        // Logout ends it; a second logout finds nothing to end.
        let out = fx.core.logout(fx.client.clone(), session.clone());
        assert!(fx.core.run(out).unwrap());
        assert!(fx.core.check_session(&session).unwrap().is_none());
        let again = fx.core.logout(fx.client.clone(), session);
        assert!(!fx.core.run(again).unwrap());
    }

    /// A refused write step answers as a step error (its group committed), with its
    /// counted failure kept.
    #[test]
    fn a_refused_write_step_answers_its_error_and_keeps_its_count() {
        let fx = Fx::new();
        let step = fx.core.recovery_step(
            fx.client.clone(),
            "not-a-live-flow".into(),
            "abcde-12345".into(),
        );
        let d = fx.core.run(step).unwrap();
        assert!(
            matches!(d.result, Err(Error::InvalidFlow)),
            "{:?}",
            d.result
        );
        let rows = fx
            .core
            .audit_query(
                &crate::admin::Actor::operator("tests"),
                &crate::audit::Filter {
                    event: Some(AuditEvent::LoginRecovery.as_str().into()),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(rows.len(), 1, "the refusal was audited: {rows:?}");
    }
}
