//! Forgotten passwords through a one-time link mailed to the user (`password.recovery =
//! link`, the `nist-800-63b` preset).
//!
//! `request` answers every name alike (the same status, body and work): for a user with
//! an email address who is not disabled it creates a `reset_link` flow — a 256-bit token,
//! stored as SHA-256, bound to that user, valid [`LINK_TTL_SECONDS`], spent by its first
//! use — and queues a mail with the link in the outbox, in the same transaction. The
//! outbox holds the token only encrypted under the key file ([`email::notify_link`]).
//! At most one link is mailed per user per [`RESEND_SECONDS`], so the form cannot be
//! used to flood a mailbox.
//!
//! `reset` sets the new password (typed twice, checked by the policy) and nothing else:
//! it never signs in, ends the user's sessions, pending logins and other links, forgets
//! remembered devices, and the next sign-in still asks for the second factor.

use serde::Serialize;
use serde_json::json;

use crate::audit::{self, Entry, Outcome};
use crate::crypto::SecretKey;
use crate::db;
use crate::error::{Error, Result};
use crate::kinds::{AuditEvent, LoginStep};
use crate::login::{check_new_password, Client, Decision};
use crate::password::{self, Hashing};
use crate::policy::Policy;
use crate::sql::Connection;
use crate::store::email::{self, notice};
use crate::store::{sessions, users};

/// How long an emailed reset link works.
pub const LINK_TTL_SECONDS: i64 = 30 * 60;
/// At most one reset mail per user this often.
pub const RESEND_SECONDS: i64 = 60;
const STEP: LoginStep = LoginStep::ResetLink;

/// What `POST /v1/password/forgot` answers under `password.recovery = link`, for every
/// name alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkSent {
    pub status: &'static str,
    pub message: &'static str,
}

impl LinkSent {
    pub const fn new() -> LinkSent {
        LinkSent {
            status: "link_sent",
            message: "If this account exists and has an email address, a link to reset its password has been mailed to it. The link works once, within 30 minutes.",
        }
    }
}

impl Default for LinkSent {
    fn default() -> Self {
        LinkSent::new()
    }
}

/// Mail a reset link to `username` if it names a user who can have one; the same
/// answer either way.
pub fn request(
    conn: &mut Connection,
    key: &SecretKey,
    client: &Client,
    username: &str,
    now: i64,
) -> Result<Decision<LinkSent>> {
    let typed: String = username.chars().take(256).collect();
    let tx = db::write_tx(conn)?;
    let user = users::find(&tx, &typed)?;
    let base = Entry::new(AuditEvent::PasswordForgot, Outcome::Failure)
        .client(&client.ip, &client.user_agent)
        .username(&typed);
    let reason = match &user {
        None => "unknown_user",
        Some(u) if u.disabled => "disabled",
        Some(u) if u.email.trim().is_empty() => "no_email",
        Some(u)
            if email::last_notice_at(&tx, u.id, notice::RESET_LINK)?
                .is_some_and(|t| now - t < RESEND_SECONDS) =>
        {
            "too_soon"
        }
        Some(_) => "ok",
    };
    match (&user, reason) {
        (Some(u), "ok") => {
            let token = sessions::create_flow(&tx, u.id, STEP, "{}", LINK_TTL_SECONDS, now)?;
            let token = zeroize::Zeroizing::new(token);
            email::notify_link(
                &tx,
                key,
                u.id,
                notice::RESET_LINK,
                &token,
                LINK_TTL_SECONDS / 60,
                now,
            )?;
            audit::record(
                &tx,
                &Entry::new(AuditEvent::PasswordForgot, Outcome::Success)
                    .client(&client.ip, &client.user_agent)
                    .username(&typed)
                    .user(u.id, u.org_id)
                    .detail(json!({"method": "link"})),
                now,
            )?;
        }
        (u, reason) => {
            let mut e = base.reason(reason).detail(json!({"method": "link"}));
            if let Some(u) = u {
                e = e.user(u.id, u.org_id);
            }
            audit::record(&tx, &e, now)?;
        }
    }
    tx.commit()?;
    Ok(Decision {
        reason,
        ..Decision::ok(LinkSent::new())
    })
}

/// The longest an admin-issued link may live.
pub const MAX_ADMIN_TTL_SECONDS: i64 = 30 * 86_400;

/// A TTL such as `24h`, `30m`, `7d` in seconds (1 minute to 30 days).
pub fn parse_ttl(s: &str) -> Result<i64> {
    let d = humantime::parse_duration(s.trim()).map_err(|_| {
        Error::Invalid(format!(
            "--ttl takes a duration such as 30m, 24h or 7d, not '{s}'"
        ))
    })?;
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    if !(60..=MAX_ADMIN_TTL_SECONDS).contains(&secs) {
        return Err(Error::Invalid(format!(
            "--ttl must be from 1 minute to 30 days, not '{s}'"
        )));
    }
    Ok(secs)
}

/// The portal's URL a link starts with (`--url`), checked: http(s), no query, no
/// trailing slash.
pub fn link_base(url: &str) -> Result<String> {
    let base = url.trim().trim_end_matches('/');
    if !(base.starts_with("https://") || base.starts_with("http://")) || base.contains(['?', '#']) {
        return Err(Error::Invalid(format!(
            "--url takes the portal's http(s) URL without a query, not '{url}'"
        )));
    }
    Ok(base.to_string())
}

/// The page address of a link's token under `base` (see [`link_base`]).
pub fn link(base: &str, token: &str) -> String {
    format!("{base}/reset?token={token}")
}

/// An admin-issued one-time link for a user (`authctl user reset-link`): the token, given
/// once. `enrol` marks a set-up link (a new account: a password, then the second factor
/// at the first sign-in). Call in the transaction that audits it.
pub fn issue(conn: &Connection, user_id: i64, ttl: i64, enrol: bool, now: i64) -> Result<String> {
    let data = if enrol { r#"{"enrol":true}"# } else { "{}" };
    sessions::create_flow(conn, user_id, STEP, data, ttl, now)
}

/// A live link, as its page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkInfo {
    pub username: String,
    /// A set-up link (`authctl user reset-link --enrol`): the account's first password;
    /// its second factor, if it needs one, is set up at the first sign-in.
    pub enrol: bool,
}

/// What a reset through a link answers (`POST /v1/password/reset`): the password only was
/// set (`status` is always `password_changed`); nobody is signed in, and no factor was
/// added or removed — the next sign-in asks for the second factor, or sets one up (as
/// policy requires) when the account has none, whatever the kind of link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkReset {
    pub status: &'static str,
    /// Whether the link was a set-up link ([`LinkInfo::enrol`]); left out when not.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub enrol: bool,
}

/// Whether `token` is a live reset link (for the page; spends nothing): whose, and of
/// which kind.
pub fn peek(conn: &Connection, token: &str, now: i64) -> Result<Option<LinkInfo>> {
    Ok(live_flow(conn, token, now)?.map(|(u, enrol)| LinkInfo {
        username: u.username,
        enrol,
    }))
}

/// Whether a link's flow data marks a set-up link ([`issue`]).
fn is_enrol(data: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(data)
        .is_ok_and(|v| v.get("enrol") == Some(&serde_json::Value::Bool(true)))
}

/// The user a live link is for, and whether it is a set-up link (spends nothing).
fn live_flow(conn: &Connection, token: &str, now: i64) -> Result<Option<(users::User, bool)>> {
    if token.is_empty() || token.len() > 128 {
        return Ok(None);
    }
    match sessions::find_flow(conn, token, STEP, now)? {
        Some(flow) => Ok(Some((
            users::by_id(conn, flow.user_id)?,
            is_enrol(&flow.data),
        ))),
        None => Ok(None),
    }
}

/// Set a new password through a link. Slow (argon2). An unknown, spent or expired link
/// is the generic refusal and changes nothing.
pub fn reset(
    hashing: &Hashing,
    conn: &mut Connection,
    client: &Client,
    token: &str,
    new_password: &str,
    confirm_password: &str,
    now: i64,
) -> Result<Decision<LinkReset>> {
    let policy = Policy::load(conn)?;
    // The shape first, under the loosest rules; the account's own once the link is known.
    check_new_password(
        hashing,
        &policy.password_least(),
        new_password,
        confirm_password,
        None,
    )?;
    let refuse = |conn: &mut Connection, reason: &'static str| -> Result<Decision<LinkReset>> {
        let tx = db::write_tx(conn)?;
        audit::record(
            &tx,
            &Entry::new(AuditEvent::PasswordReset, Outcome::Failure)
                .client(&client.ip, &client.user_agent)
                .reason(reason)
                .detail(json!({"via": "link"})),
            now,
        )?;
        tx.commit()?;
        Ok(Decision::refused(Error::InvalidCredentials, reason))
    };
    let Some((owner, _)) = live_flow(conn, token, now)? else {
        return refuse(conn, "invalid_link");
    };
    let rules = crate::login::password_policy_for(conn, &owner, &policy)?;
    check_new_password(hashing, &rules, new_password, confirm_password, None)?;
    let hash =
        password::hash_password(hashing, new_password, policy.argon2).map_err(Error::Invalid)?;
    let tx = db::write_tx(conn)?;
    let Some(flow) = sessions::find_flow(&tx, token, STEP, now)? else {
        drop(tx);
        return refuse(conn, "invalid_link");
    };
    let user = users::by_id(&tx, flow.user_id)?;
    let entry = |outcome| {
        Entry::new(AuditEvent::PasswordReset, outcome)
            .client(&client.ip, &client.user_agent)
            .username(&user.username)
            .user(user.id, user.org_id)
    };
    sessions::consume_flow(&tx, flow.id, now)?;
    if user.disabled {
        audit::record(
            &tx,
            &entry(Outcome::Failure)
                .reason("disabled")
                .detail(json!({"via": "link"})),
            now,
        )?;
        tx.commit()?;
        return Ok(Decision::refused(Error::InvalidCredentials, "disabled"));
    }
    let enrol = is_enrol(&flow.data);
    // The password only: no session, no factor added or removed, whatever the link.
    users::set_password(&tx, user.id, &hash, false, now)?;
    // Other links and pending logins of the user end with the old password.
    sessions::end_flows_for_user(&tx, user.id)?;
    audit::record(
        &tx,
        &entry(Outcome::Success).detail(json!({"via": "link", "enrol": enrol})),
        now,
    )?;
    tx.commit()?;
    Ok(Decision::ok(LinkReset {
        status: "password_changed",
        enrol,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Location;
    use crate::password::Argon2Params;
    use crate::store::users::{NewUser, Role};

    const T0: i64 = 1_800_000_000;
    const NEW: &str = "Brand-New-Pass-7";

    struct Fx {
        _dir: tempfile::TempDir,
        loc: Location,
        key: SecretKey,
        hashing: Hashing,
        client: Client,
    }

    impl Fx {
        fn new() -> Fx {
            let dir = tempfile::tempdir().unwrap();
            let loc = Location::new(dir.path().join("t.db"), None);
            let (conn, key) = db::create(&loc).unwrap();
            crate::policy::set(&conn, "argon2.m_kib", "1024", 0).unwrap();
            crate::policy::set(&conn, "argon2.t", "1", 0).unwrap();
            crate::policy::set(&conn, "password.recovery", "link", 0).unwrap();
            let fx = Fx {
                _dir: dir,
                loc,
                key,
                hashing: Hashing::new(1),
                client: Client {
                    ip: "192.0.2.1".into(),
                    user_agent: "test".into(),
                },
            };
            for name in ["ann", "bob"] {
                let hash = password::hash_password(
                    &fx.hashing,
                    "Old-Password-1!",
                    Argon2Params {
                        m_kib: 1024,
                        t: 1,
                        p: 1,
                    },
                )
                .unwrap();
                users::create(
                    &fx.conn(),
                    &NewUser {
                        username: name,
                        email: &format!("{name}@example.org"),
                        org: None,
                        groups: &[],
                        role: Role::User,
                        password_hash: Some(hash),
                        must_change_password: false,
                    },
                    T0,
                )
                .unwrap();
            }
            fx
        }
        fn conn(&self) -> Connection {
            db::open(&self.loc.db).unwrap()
        }
        /// Ask for a link for `name`; the token of the mail queued, if one was.
        fn ask(&self, name: &str, now: i64) -> Option<String> {
            let before = self.due(now).len();
            let d = request(&mut self.conn(), &self.key, &self.client, name, now).unwrap();
            assert_eq!(
                d.result.unwrap(),
                LinkSent::new(),
                "the same answer for all"
            );
            let due = self.due(now);
            (due.len() > before).then(|| {
                let n = due.last().unwrap();
                assert!(n.body.contains(email::LINK_PLACEHOLDER));
                n.link_token.as_ref().unwrap().to_string()
            })
        }
        fn due(&self, now: i64) -> Vec<email::Notice> {
            email::due_notices(&self.conn(), &self.key, now, 100)
                .unwrap()
                .into_iter()
                .filter(|n| n.link_token.is_some())
                .collect()
        }
        fn reset(&self, token: &str, now: i64) -> Decision<LinkReset> {
            reset(
                &self.hashing,
                &mut self.conn(),
                &self.client,
                token,
                NEW,
                NEW,
                now,
            )
            .unwrap()
        }
        fn hash_of(&self, name: &str) -> String {
            users::find(&self.conn(), name)
                .unwrap()
                .unwrap()
                .password_hash
                .unwrap()
        }
    }

    #[test]
    fn a_link_works_once_for_its_user_only() {
        let fx = Fx::new();
        let ann = fx.ask("ann", T0).expect("a mail for ann");
        assert_eq!(ann.len(), crate::crypto::random_token().len(), "256 bits");
        let bob_before = fx.hash_of("bob");
        let d = fx.reset(&ann, T0 + 60);
        assert_eq!(
            d.result.unwrap(),
            LinkReset {
                status: "password_changed",
                enrol: false
            }
        );
        assert!(password::verify_password(
            &fx.hashing,
            NEW,
            &fx.hash_of("ann")
        ));
        assert_eq!(fx.hash_of("bob"), bob_before, "bound to its user");
        // Single use.
        let again = fx.reset(&ann, T0 + 61);
        assert!(matches!(again.result, Err(Error::InvalidCredentials)));
        assert_eq!(again.reason, "invalid_link");
    }

    #[test]
    fn a_link_expires_after_30_minutes() {
        let fx = Fx::new();
        let t = fx.ask("ann", T0).unwrap();
        assert!(peek(&fx.conn(), &t, T0 + LINK_TTL_SECONDS - 1)
            .unwrap()
            .is_some());
        let before = fx.hash_of("ann");
        let d = fx.reset(&t, T0 + LINK_TTL_SECONDS);
        assert!(matches!(d.result, Err(Error::InvalidCredentials)));
        assert_eq!(fx.hash_of("ann"), before);
    }

    #[test]
    fn unknown_disabled_and_too_frequent_get_the_same_answer_and_no_mail() {
        let fx = Fx::new();
        assert!(fx.ask("nobody", T0).is_none());
        users::set_disabled(
            &fx.conn(),
            users::find(&fx.conn(), "bob").unwrap().unwrap().id,
            true,
            T0,
        )
        .unwrap();
        assert!(fx.ask("bob", T0).is_none());
        assert!(fx.ask("ann", T0).is_some());
        assert!(
            fx.ask("ann", T0 + RESEND_SECONDS - 1).is_none(),
            "one a minute"
        );
        assert!(fx.ask("ANN", T0 + RESEND_SECONDS).is_some());
    }

    #[test]
    fn the_outbox_holds_the_token_only_sealed_and_erases_it_once_mailed() {
        let fx = Fx::new();
        let t = fx.ask("ann", T0).unwrap();
        let conn = fx.conn();
        let (id, body, sealed): (i64, String, Vec<u8>) = conn
            .query_row(
                "SELECT id, body, sealed FROM outbox WHERE kind='reset_link'",
                (),
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert!(!body.contains(&t));
        assert!(!sealed.windows(t.len()).any(|w| w == t.as_bytes()));
        let flows: String = conn
            .query_row("SELECT token_hash FROM login_flows", (), |r| r.get(0))
            .unwrap();
        assert_eq!(flows, crate::crypto::hash_token(&t));
        email::notice_sent(&conn, id, T0 + 1).unwrap();
        let left: Option<Vec<u8>> = conn
            .query_row("SELECT sealed FROM outbox WHERE id=?1", [id], |r| r.get(0))
            .unwrap();
        assert!(left.is_none(), "erased once mailed");
        assert!(fx.due(T0 + 2).is_empty());
    }

    #[test]
    fn a_reset_ends_sessions_other_links_and_keeps_the_second_factor_path() {
        let fx = Fx::new();
        let first = fx.ask("ann", T0).unwrap();
        let second = fx.ask("ann", T0 + RESEND_SECONDS).unwrap();
        assert!(fx.reset(&second, T0 + 100).result.is_ok());
        assert!(peek(&fx.conn(), &first, T0 + 101).unwrap().is_none());
        // Nothing of the second factor was touched: the login decides as before.
        let u = users::find(&fx.conn(), "ann").unwrap().unwrap();
        assert!(!u.must_change_password);
    }
}
