//! The security page's reads and writes: a session's re-authentication time, a user's
//! recent sign-ins and failed attempts, and revoking one's own sessions and devices.

use crate::sql::{params, Connection};
use serde::Serialize;

use super::opt;
use crate::error::Result;

/// Record that a session re-authenticated now.
pub fn set_reauth(conn: &Connection, session_id: i64, now: i64) -> Result<()> {
    conn.execute(
        "UPDATE sessions SET reauth_at=?1 WHERE id=?2",
        params![now, session_id],
    )?;
    Ok(())
}

/// The live re-authentication flow of a session ([`crate::kinds::LoginStep::Reauth`],
/// `data` naming the session), if any.
pub fn reauth_flow(conn: &Connection, user_id: i64, data: &str, now: i64) -> Result<Option<i64>> {
    Ok(opt(conn.query_row(
        "SELECT id FROM login_flows WHERE user_id=?1 AND step='reauth' AND data=?2
         AND consumed_at IS NULL AND expires_at > ?3 ORDER BY id DESC LIMIT 1",
        params![user_id, data, now],
        |r| r.get(0),
    ))?)
}

/// When a session last re-authenticated, if ever.
pub fn reauth_at(conn: &Connection, session_id: i64) -> Result<Option<i64>> {
    Ok(opt(conn.query_row(
        "SELECT reauth_at FROM sessions WHERE id=?1",
        [session_id],
        |r| r.get::<Option<i64>>(0),
    ))?
    .flatten())
}

/// One line of the account's recent activity.
#[derive(Debug, Clone, Serialize)]
pub struct Activity {
    pub at: i64,
    /// `sign_in` (a completed sign-in) or `failed_attempt`.
    pub kind: &'static str,
    /// The step: `login.password`, `login.totp`… (failures), `session` (sign-ins).
    pub step: String,
    pub ip: String,
    pub user_agent: String,
}

/// The newest `limit` sign-ins (sessions issued) and failed login attempts of a user.
pub fn recent_activity(conn: &Connection, user_id: i64, limit: i64) -> Result<Vec<Activity>> {
    let mut stmt = conn.prepare(
        "SELECT at, kind, step, ip, user_agent FROM (
            SELECT created_at AS at, 1 AS kind, 'session' AS step, ip, user_agent, id AS n
              FROM sessions WHERE user_id=?1
            UNION ALL
            SELECT at, 0, event, ip, user_agent, id FROM audit
             WHERE user_id=?1 AND outcome='failure' AND (event LIKE 'login.%' OR event='password.reset')
         ) AS activity ORDER BY at DESC, kind DESC, n DESC LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![user_id, limit], |r| {
            Ok(Activity {
                at: r.get(0)?,
                kind: if r.get::<i64>(1)? == 1 {
                    "sign_in"
                } else {
                    "failed_attempt"
                },
                step: r.get(2)?,
                ip: r.get(3)?,
                user_agent: r.get(4)?,
            })
        })?
        .collect::<crate::sql::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Revoke a live session of `user_id` by id; false when it is not one of theirs.
pub fn revoke_own_session(conn: &Connection, user_id: i64, id: i64, now: i64) -> Result<bool> {
    Ok(conn.execute(
        "UPDATE sessions SET revoked_at=?1 WHERE id=?2 AND user_id=?3 AND revoked_at IS NULL",
        params![now, id, user_id],
    )? == 1)
}

/// Revoke every live session of `user_id` but `keep`; how many.
pub fn revoke_other_sessions(
    conn: &Connection,
    user_id: i64,
    keep: i64,
    now: i64,
) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE sessions SET revoked_at=?1 WHERE user_id=?2 AND id<>?3 AND revoked_at IS NULL",
        params![now, user_id, keep],
    )?)
}
