//! Emailed one-time codes at rest, and the outbox of notices.
//!
//! A code is 6 digits from the CSPRNG, stored as a keyed hash bound to its login flow and
//! user (a code from another flow or user never matches), valid for a few minutes, used
//! once, with a limited number of wrong tries. Issuing a new code for a flow supersedes the
//! previous one. Resends are rate-limited per flow.

use crate::sql::{params, Connection};
use zeroize::Zeroizing;

use super::opt;
use crate::crypto::{self, SecretKey};
use crate::error::Result;

const EMAIL_DOMAIN: &str = "email otp";

fn code_input(flow_id: i64, user_id: i64, code: &str) -> String {
    format!("{flow_id}:{user_id}:{code}")
}

/// The stored form of a code, under the current key (checked under the key it names).
fn code_hash(key: &SecretKey, flow_id: i64, user_id: i64, code: &str) -> String {
    key.keyed_hash(EMAIL_DOMAIN, code_input(flow_id, user_id, code).as_bytes())
}

/// A freshly issued code (to mail; never stored in clear).
pub struct Issued {
    pub code: Zeroizing<String>,
    pub expires_at: i64,
}

/// Issue a code for a flow. Err(seconds) when the previous one is too recent to resend.
pub fn issue(
    conn: &Connection,
    key: &SecretKey,
    flow_id: i64,
    user_id: i64,
    ttl_secs: i64,
    resend_secs: i64,
    now: i64,
) -> Result<std::result::Result<Issued, i64>> {
    let last: Option<i64> = opt(conn
        .prepare_cached(
            "SELECT max(created_at) FROM email_otp_challenges WHERE flow_id=?1 HAVING count(*) > 0",
        )?
        .query_row([flow_id], |r| r.get(0)))?;
    if let Some(last) = last {
        let wait = last + resend_secs - now;
        if wait > 0 {
            return Ok(Err(wait));
        }
    }
    conn.prepare_cached(
        "UPDATE email_otp_challenges SET superseded=1 WHERE flow_id=?1 AND superseded=0",
    )?
    .execute([flow_id])?;
    let code = Zeroizing::new(format!("{:06}", crypto::random_below(1_000_000)));
    let expires_at = now + ttl_secs;
    // The flow lives at least as long as its code.
    conn.prepare_cached("UPDATE login_flows SET expires_at=CASE WHEN expires_at > ?1 THEN expires_at ELSE ?1 END WHERE id=?2")?
        .execute(params![expires_at, flow_id])?;
    conn.prepare_cached(
        "INSERT INTO email_otp_challenges(flow_id, user_id, code_hash, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        flow_id,
        user_id,
        code_hash(key, flow_id, user_id, &code),
        now,
        expires_at
    ])?;
    Ok(Ok(Issued { code, expires_at }))
}

/// The result of checking a typed code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Ok,
    Wrong { tries_left: i64 },
    TooManyTries,
    Expired,
    NoCode,
}

/// Check (and on success consume) the flow's current code. Call in a write transaction.
pub fn check(
    conn: &Connection,
    key: &SecretKey,
    flow_id: i64,
    user_id: i64,
    code: &str,
    max_tries: i64,
    now: i64,
) -> Result<Check> {
    let row: Option<(i64, String, i64, i64)> = opt(conn
        .prepare_cached(
            "SELECT id, code_hash, expires_at, attempts FROM email_otp_challenges
         WHERE flow_id=?1 AND user_id=?2 AND superseded=0 AND consumed_at IS NULL
         ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![flow_id, user_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        }))?;
    let Some((id, stored, expires_at, attempts)) = row else {
        return Ok(Check::NoCode);
    };
    if expires_at <= now {
        return Ok(Check::Expired);
    }
    if attempts >= max_tries {
        return Ok(Check::TooManyTries);
    }
    if key.keyed_hash_matches(
        EMAIL_DOMAIN,
        code_input(flow_id, user_id, code.trim()).as_bytes(),
        &stored,
    ) {
        let n = conn.prepare_cached(
            "UPDATE email_otp_challenges SET consumed_at=?1 WHERE id=?2 AND consumed_at IS NULL",
        )?
        .execute(params![now, id])?;
        return Ok(if n == 1 { Check::Ok } else { Check::NoCode });
    }
    conn.prepare_cached("UPDATE email_otp_challenges SET attempts=attempts+1 WHERE id=?1")?
        .execute([id])?;
    Ok(Check::Wrong {
        tries_left: (max_tries - attempts - 1).max(0),
    })
}

/// A notice waiting in the outbox.
#[derive(Clone)]
pub struct Notice {
    pub id: i64,
    pub recipient: String,
    pub subject: String,
    /// May hold the placeholder [`LINK_PLACEHOLDER`], to be replaced by the link of
    /// [`Notice::link_token`] before mailing.
    pub body: String,
    pub attempts: i64,
    /// The one-time token of a link notice, decrypted for the mailer (memory only).
    pub link_token: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notice")
            .field("id", &self.id)
            .field("recipient", &self.recipient)
            .field("subject", &self.subject)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// A user's name and address, if the user exists.
fn recipient(conn: &Connection, user_id: i64) -> Result<Option<(String, String)>> {
    Ok(opt(conn.query_row(
        "SELECT username, email FROM users WHERE id=?1",
        [user_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    ))?)
}

/// Where a link notice's body has its link (filled in by the mailer, from memory).
pub const LINK_PLACEHOLDER: &str = "{link}";

pub(crate) fn link_aad(user_id: i64) -> String {
    format!("outbox link:{user_id}")
}

/// Queue a mail with a one-time link to a user (same transaction as the link's flow).
/// The token is stored only encrypted under the key file, and erased once mailed.
pub fn notify_link(
    conn: &Connection,
    key: &SecretKey,
    user_id: i64,
    kind: &str,
    token: &str,
    ttl_minutes: i64,
    now: i64,
) -> Result<bool> {
    let Some((username, email)) = recipient(conn, user_id)? else {
        return Ok(false);
    };
    if email.trim().is_empty() {
        return Ok(false);
    }
    let (subject, body) = match kind {
        notice::ENROL_LINK => (
            "Set up your account",
            format!("Hello {username},\n\nOpen this link to set up your account (a password and a second factor):\n\n{LINK_PLACEHOLDER}\n\nIt works once, within {ttl_minutes} minutes.\nIf you did not expect this, tell your administrator.\n"),
        ),
        _ => (
            "Reset your password",
            format!("Hello {username},\n\nSomeone (we hope you) asked to reset the password of your account. Open this link to choose a new one:\n\n{LINK_PLACEHOLDER}\n\nIt works once, within {ttl_minutes} minutes. Your next sign-in still asks for your second factor.\nIf this was not you, ignore this mail: your password stays as it is. If it keeps happening, tell your administrator.\n"),
        ),
    };
    let sealed = key.encrypt(token.as_bytes(), &link_aad(user_id));
    conn.execute(
        "INSERT INTO outbox(user_id, recipient, kind, subject, body, created_at, next_try_at, sealed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
        params![user_id, email, kind, subject, body, now, sealed],
    )?;
    Ok(true)
}

/// When the last notice of `kind` was queued for a user, if ever.
pub fn last_notice_at(conn: &Connection, user_id: i64, kind: &str) -> Result<Option<i64>> {
    Ok(opt(conn
        .prepare_cached(
            "SELECT max(created_at) FROM outbox WHERE user_id=?1 AND kind=?2 HAVING count(*) > 0",
        )?
        .query_row(params![user_id, kind], |r| r.get(0)))?)
}

/// Kinds of notices users receive.
pub mod notice {
    pub const LOCKED: &str = "account_locked";
    /// Smart lockout: sign-ins from unfamiliar devices and networks are locked out.
    pub const UNFAMILIAR_LOCKED: &str = "unfamiliar_locked";
    pub const RESET_2FA: &str = "two_factor_reset";
    pub const PASSWORD_CHANGED: &str = "password_changed";
    /// Security alerts (at most one of a kind per user per hour, see [`super::ALERT_EVERY`]).
    pub const NEW_SIGN_IN: &str = "new_sign_in";
    pub const FACTOR_ADDED: &str = "factor_added";
    /// One of several authenticator apps removed (removing the last is [`RESET_2FA`]).
    pub const FACTOR_REMOVED: &str = "factor_removed";
    pub const RECOVERY_CODE_USED: &str = "recovery_code_used";
    /// A one-time link to set a new password (emailed on request).
    pub const RESET_LINK: &str = "reset_link";
    /// A one-time link to set up an account (admin-issued).
    pub const ENROL_LINK: &str = "enrol_link";
}

/// Security alerts are mailed at most once per kind and user this often (seconds); lock
/// notices are not limited this way (one per lock).
pub const ALERT_EVERY: i64 = 3600;

/// Whether `kind` is an alert limited to one per [`ALERT_EVERY`].
fn is_alert(kind: &str) -> bool {
    matches!(
        kind,
        notice::NEW_SIGN_IN
            | notice::FACTOR_ADDED
            | notice::FACTOR_REMOVED
            | notice::RECOVERY_CODE_USED
            | notice::RESET_2FA
            | notice::PASSWORD_CHANGED
    )
}

/// Queue a notice to a user (same transaction as the event it tells about). An alert of
/// a kind already queued for the user within [`ALERT_EVERY`] is not queued again.
pub fn notify(conn: &Connection, user_id: i64, kind: &str, now: i64) -> Result<()> {
    if is_alert(kind) && last_notice_at(conn, user_id, kind)?.is_some_and(|t| now - t < ALERT_EVERY)
    {
        return Ok(());
    }
    let Some((username, email)) = recipient(conn, user_id)? else {
        return Ok(());
    };
    let when = crate::util::rfc3339(now);
    let (subject, body) = match kind {
        notice::LOCKED => (
            "Your account has been locked",
            format!("Hello {username},\n\nYour account was locked at {when} after too many failed sign-in attempts.\nAn administrator can unlock it. If these attempts were not yours, tell your administrator.\n"),
        ),
        notice::UNFAMILIAR_LOCKED => (
            "Sign-ins to your account from unfamiliar places were blocked",
            format!("Hello {username},\n\nAt {when}, after too many failed sign-in attempts from devices and networks you have not used lately, sign-ins from unfamiliar places were blocked.\nYou can still sign in from a remembered device or a network you signed in from recently. An administrator can lift the block. If these attempts were not yours, tell your administrator.\n"),
        ),
        notice::NEW_SIGN_IN => (
            "New sign-in to your account",
            format!("Hello {username},\n\nYour account was signed in to at {when} from a device and network it had not used before.\nIf this was you, there is nothing to do. If it was not, change your password at once, sign out the other sessions on your security page, and tell your administrator.\n"),
        ),
        notice::FACTOR_ADDED => (
            "A sign-in factor was added to your account",
            format!("Hello {username},\n\nA second sign-in factor (an authenticator app or emailed codes) was set up for your account at {when}.\nIf this was not you, tell your administrator at once: someone may have your password.\n"),
        ),
        notice::FACTOR_REMOVED => (
            "A sign-in factor was removed from your account",
            format!("Hello {username},\n\nAn authenticator app was removed from your account at {when}; your other authenticator apps still sign you in.\nIf this was not you, change your password at once and tell your administrator: someone may have your password and second factor.\n"),
        ),
        notice::RECOVERY_CODE_USED => (
            "A recovery code was used",
            format!("Hello {username},\n\nOne of your recovery codes was used to sign in at {when}.\nIf this was not you, change your password, make new recovery codes on your security page and tell your administrator.\n"),
        ),
        notice::RESET_2FA => (
            "Your two-factor authentication was reset",
            format!("Hello {username},\n\nYour two-factor authentication was reset (a sign-in factor removed) at {when}. At your next sign-in you will set it up again.\nIf you did not ask for this, tell your administrator at once.\n"),
        ),
        _ => (
            "Your password was changed",
            format!("Hello {username},\n\nThe password of your account was changed at {when}.\nIf you did not do this, tell your administrator at once.\n"),
        ),
    };
    conn.execute(
        "INSERT INTO outbox(user_id, recipient, kind, subject, body, created_at, next_try_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
        params![user_id, email, kind, subject, body, now],
    )?;
    Ok(())
}

/// Notices due for a (re)try (a link notice's token decrypted under `key`).
pub fn due_notices(
    conn: &Connection,
    key: &SecretKey,
    now: i64,
    limit: i64,
) -> Result<Vec<Notice>> {
    let mut stmt = conn.prepare(
        "SELECT id, recipient, subject, body, attempts, user_id, sealed FROM outbox
         WHERE sent_at IS NULL AND next_try_at <= ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![now, limit], |r| {
            Ok((
                Notice {
                    id: r.get(0)?,
                    recipient: r.get(1)?,
                    subject: r.get(2)?,
                    body: r.get(3)?,
                    attempts: r.get(4)?,
                    link_token: None,
                },
                r.get::<Option<i64>>(5)?,
                r.get::<Option<Vec<u8>>>(6)?,
            ))
        })?
        .collect::<crate::sql::Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (mut n, user_id, sealed) in rows {
        if let Some(blob) = sealed {
            let plain = key.decrypt(&blob, &link_aad(user_id.unwrap_or(0)))?;
            n.link_token = Some(Zeroizing::new(String::from_utf8_lossy(&plain).into_owned()));
        } else if n.body.contains(LINK_PLACEHOLDER) {
            // A link notice whose token is gone (given up): nothing left to mail.
            continue;
        }
        out.push(n);
    }
    Ok(out)
}

/// Mark a notice sent (and erase a link notice's token).
pub fn notice_sent(conn: &Connection, id: i64, now: i64) -> Result<()> {
    conn.execute(
        "UPDATE outbox SET sent_at=?1, sealed=NULL WHERE id=?2",
        params![now, id],
    )?;
    Ok(())
}

/// Record a failed try and when to try again (exponential back-off, at most an hour);
/// after `max_attempts` the notice is given up (kept, with its error, for admins).
pub fn notice_failed(
    conn: &Connection,
    id: i64,
    error: &str,
    max_attempts: i64,
    now: i64,
) -> Result<()> {
    conn.execute(
        "UPDATE outbox SET attempts=attempts+1, last_error=?1,
            next_try_at = CASE WHEN attempts+1 >= ?2 THEN 9223372036854775807
                               ELSE CAST(?3 AS BIGINT) + CASE WHEN attempts >= 8 THEN 3600
                   ELSE 15 * (CAST(1 AS BIGINT) << CAST(attempts AS INTEGER)) END END,
            sealed = CASE WHEN attempts+1 >= ?2 THEN NULL ELSE sealed END
         WHERE id=?4",
        params![
            error.chars().take(500).collect::<String>(),
            max_attempts,
            now,
            id
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::LoginStep;
    use crate::store::users;

    #[test]
    fn codes_are_single_use_bound_limited_and_superseded() {
        let conn = crate::db::open_memory().unwrap();
        let key = SecretKey::from_bytes([5; 32]);
        let u = users::create(
            &conn,
            &users::NewUser {
                username: "e",
                email: "e@example.org",
                org: None,
                groups: &[],
                role: users::Role::User,
                password_hash: None,
                must_change_password: false,
            },
            0,
        )
        .unwrap();
        let f1 =
            crate::store::sessions::create_flow(&conn, u.id, LoginStep::SecondFactor, "{}", 300, 0)
                .unwrap();
        let f2 =
            crate::store::sessions::create_flow(&conn, u.id, LoginStep::SecondFactor, "{}", 300, 0)
                .unwrap();
        let id = |t: &str| {
            crate::store::sessions::find_flow(&conn, t, LoginStep::SecondFactor, 1)
                .unwrap()
                .unwrap()
                .id
        };
        let (a, b) = (id(&f1), id(&f2));
        let c1 = issue(&conn, &key, a, u.id, 600, 30, 100)
            .unwrap()
            .ok()
            .unwrap();
        assert_eq!(c1.code.len(), 6);
        assert_eq!(
            issue(&conn, &key, a, u.id, 600, 30, 110).unwrap().err(),
            Some(20),
            "resend too soon"
        );
        // Another flow's code does not match this flow.
        let c2 = issue(&conn, &key, b, u.id, 600, 30, 100)
            .unwrap()
            .ok()
            .unwrap();
        if c2.code != c1.code {
            assert!(matches!(
                check(&conn, &key, a, u.id, &c2.code, 5, 101).unwrap(),
                Check::Wrong { .. }
            ));
        }
        assert_eq!(
            check(&conn, &key, a, u.id, &c1.code, 5, 101).unwrap(),
            Check::Ok
        );
        assert_eq!(
            check(&conn, &key, a, u.id, &c1.code, 5, 101).unwrap(),
            Check::NoCode,
            "single use"
        );
        // Resend supersedes.
        let old = issue(&conn, &key, b, u.id, 600, 30, 200)
            .unwrap()
            .ok()
            .unwrap();
        let new = issue(&conn, &key, b, u.id, 600, 30, 230)
            .unwrap()
            .ok()
            .unwrap();
        if old.code != new.code {
            assert!(matches!(
                check(&conn, &key, b, u.id, &old.code, 5, 231).unwrap(),
                Check::Wrong { .. }
            ));
        }
        // Expiry.
        assert_eq!(
            check(&conn, &key, b, u.id, &new.code, 5, 230 + 600).unwrap(),
            Check::Expired
        );
        // Tries.
        let c = issue(&conn, &key, b, u.id, 600, 30, 1000)
            .unwrap()
            .ok()
            .unwrap();
        let wrong = if c.code.as_str() == "000000" {
            "111111"
        } else {
            "000000"
        };
        for left in (0..5).rev() {
            assert_eq!(
                check(&conn, &key, b, u.id, wrong, 5, 1001).unwrap(),
                Check::Wrong { tries_left: left }
            );
        }
        assert_eq!(
            check(&conn, &key, b, u.id, &c.code, 5, 1001).unwrap(),
            Check::TooManyTries,
            "the sixth try"
        );
        // Nothing stored in clear.
        let hashes: Vec<String> = conn
            .prepare("SELECT code_hash FROM email_otp_challenges")
            .unwrap()
            .query_map((), |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert!(hashes.iter().all(|h| h.len() == 64 && h != c.code.as_str()));
    }
}
