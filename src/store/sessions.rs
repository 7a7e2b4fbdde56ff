//! Sessions and login flows at rest (tokens stored as SHA-256 only).

use crate::sql::{params, params_from_iter, Connection};
use serde::Serialize;

use crate::crypto;
use crate::error::Result;
use crate::kinds::LoginStep;

#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub id: i64,
    pub user_id: i64,
    pub username: String,
    pub ip: String,
    pub user_agent: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
}

/// Live sessions (not revoked, not past absolute expiry), optionally of one user.
pub fn list(conn: &Connection, user_id: Option<i64>, now: i64) -> Result<Vec<Session>> {
    let (by_user, args) = super::by_user("s", &now, &user_id);
    let mut stmt = conn.prepare(&format!(
        "SELECT s.id, s.user_id, u.username, s.ip, s.user_agent, s.created_at, s.last_seen_at, s.expires_at
         FROM sessions s JOIN users u ON u.id=s.user_id
         WHERE s.revoked_at IS NULL AND s.expires_at > ?1{by_user}
         ORDER BY s.id"
    ))?;
    let rows = stmt
        .query_map(params_from_iter(args), |r| {
            Ok(Session {
                id: r.get(0)?,
                user_id: r.get(1)?,
                username: r.get(2)?,
                ip: r.get(3)?,
                user_agent: r.get(4)?,
                created_at: r.get(5)?,
                last_seen_at: r.get(6)?,
                expires_at: r.get(7)?,
            })
        })?
        .collect::<crate::sql::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Create a session; returns (id, token). The token is given to the client once.
pub fn create(
    conn: &Connection,
    user_id: i64,
    ip: &str,
    user_agent: &str,
    absolute_secs: i64,
    factors: &str,
    now: i64,
) -> Result<(i64, String)> {
    let token = crypto::random_token();
    conn.prepare_cached(
        "INSERT INTO sessions(user_id, token_hash, ip, user_agent, created_at, last_seen_at, expires_at, factors)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7)",
    )?
    .execute(params![
            user_id,
            crypto::hash_token(&token),
            ip,
            user_agent.chars().take(256).collect::<String>(),
            now,
            now.saturating_add(absolute_secs),
            factors
        ])?;
    Ok((conn.last_insert_rowid(), token))
}

/// The factors and the sign-in time of a session (by id): what an OpenID Connect
/// authorization is bound to.
pub fn factors_of(conn: &Connection, id: i64) -> Result<Option<(String, i64)>> {
    Ok(super::opt(
        conn.prepare_cached("SELECT factors, created_at FROM sessions WHERE id=?1")?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?))),
    )?)
}

/// The factors and absolute expiry of a session (by id) that is neither revoked nor
/// expired: a step-up (OpenID Connect `acr_values`) adds to it only while it lives.
pub fn live_factors(conn: &Connection, id: i64, now: i64) -> Result<Option<(String, i64)>> {
    Ok(super::opt(
        conn.prepare_cached(
            "SELECT factors, expires_at FROM sessions
             WHERE id=?1 AND revoked_at IS NULL AND expires_at > ?2",
        )?
        .query_row(params![id, now], |r| Ok((r.get(0)?, r.get(1)?))),
    )?)
}

/// Bring the absolute expiry of the session with this token forward to `expires_at`
/// (never later): the session replacing a stepped-up one ends when that one would have.
pub fn cap_expiry(conn: &Connection, token: &str, expires_at: i64) -> Result<()> {
    conn.execute(
        "UPDATE sessions SET expires_at=?1 WHERE token_hash=?2 AND expires_at > ?1",
        params![expires_at, crypto::hash_token(token)],
    )?;
    Ok(())
}

/// Revoke one session by id; false if no live session has that id.
pub fn revoke(conn: &Connection, id: i64, now: i64) -> Result<bool> {
    Ok(conn.execute(
        "UPDATE sessions SET revoked_at=?1 WHERE id=?2 AND revoked_at IS NULL",
        params![now, id],
    )? == 1)
}

/// End every session and pending login flow of a user; returns the sessions ended.
pub fn end_all_for_user(conn: &Connection, user_id: i64, now: i64) -> Result<usize> {
    let n = conn.execute(
        "UPDATE sessions SET revoked_at=?1 WHERE user_id=?2 AND revoked_at IS NULL",
        params![now, user_id],
    )?;
    end_flows_for_user(conn, user_id)?;
    Ok(n)
}

/// Invalidate every pending login flow of a user (after a lock, a reset…).
pub fn end_flows_for_user(conn: &Connection, user_id: i64) -> Result<()> {
    conn.execute("DELETE FROM login_flows WHERE user_id=?1", [user_id])?;
    Ok(())
}

/// A live session found by its token.
#[derive(Debug, Clone)]
pub struct Live {
    pub id: i64,
    pub user_id: i64,
    pub expires_at: i64,
    pub last_seen_at: i64,
}

/// How often a check refreshes a session's `last_seen_at`, in seconds.
pub const SEEN_REFRESH_SECS: i64 = 60;

/// Find a session by token that is neither revoked nor past its absolute expiry nor idle
/// for `idle_secs`. Refreshes `last_seen_at` at most once every [`SEEN_REFRESH_SECS`]
/// (fewer writes on the hot path; idle expiry is therefore precise to a minute). The
/// session comes back as the row now stands (`last_seen_at` refreshed).
pub fn find_live(conn: &Connection, token: &str, idle_secs: i64, now: i64) -> Result<Option<Live>> {
    let row = super::opt(
        conn.prepare_cached(
            "SELECT id, user_id, expires_at, last_seen_at FROM sessions
             WHERE token_hash=?1 AND revoked_at IS NULL",
        )?
        .query_row([crypto::hash_token(token)], |r| {
            Ok(Live {
                id: r.get(0)?,
                user_id: r.get(1)?,
                expires_at: r.get(2)?,
                last_seen_at: r.get(3)?,
            })
        }),
    )?;
    let Some(mut s) = row else { return Ok(None) };
    if s.expires_at <= now || s.last_seen_at.saturating_add(idle_secs) <= now {
        return Ok(None);
    }
    if now - s.last_seen_at >= SEEN_REFRESH_SECS {
        // A write of its own (outside any transaction) queues with this process's other
        // writers rather than in SQLite's sleeping busy handler.
        let _turn = crate::db::writer_turn_outside_tx(conn);
        conn.prepare_cached("UPDATE sessions SET last_seen_at=?1 WHERE id=?2")?
            .execute(params![now, s.id])?;
        s.last_seen_at = now;
    }
    Ok(Some(s))
}

/// Revoke the session with this token; false if it was not live.
pub fn revoke_token(conn: &Connection, token: &str, now: i64) -> Result<bool> {
    Ok(conn.execute(
        "UPDATE sessions SET revoked_at=?1 WHERE token_hash=?2 AND revoked_at IS NULL",
        params![now, crypto::hash_token(token)],
    )? == 1)
}

/// A pending login flow.
#[derive(Debug, Clone)]
pub struct Flow {
    pub id: i64,
    pub user_id: i64,
    pub step: LoginStep,
    pub data: String,
}

/// Start a flow for one user and one step; returns the token (the client's only copy).
pub fn create_flow(
    conn: &Connection,
    user_id: i64,
    step: LoginStep,
    data: &str,
    ttl: i64,
    now: i64,
) -> Result<String> {
    let token = crypto::random_token();
    conn.prepare_cached(
        "INSERT INTO login_flows(token_hash, user_id, step, created_at, expires_at, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        crypto::hash_token(&token),
        user_id,
        step,
        now,
        now.saturating_add(ttl),
        data
    ])?;
    // Expired flows (spent ones among them, see [`consume_flow`]) are garbage: sweep a
    // few on every insert.
    conn.prepare_cached(
        "DELETE FROM login_flows WHERE id IN (SELECT id FROM login_flows WHERE expires_at <= ?1 LIMIT 16)",
    )?
    .execute([now])?;
    Ok(token)
}

/// The live flow with this token, if it is for `step`.
pub fn find_flow(
    conn: &Connection,
    token: &str,
    step: LoginStep,
    now: i64,
) -> Result<Option<Flow>> {
    Ok(super::opt(
        conn.prepare_cached(
            "SELECT id, user_id, step, data FROM login_flows
             WHERE token_hash=?1 AND step=?2 AND expires_at > ?3 AND consumed_at IS NULL",
        )?
        .query_row(params![crypto::hash_token(token), step, now], |r| {
            Ok(Flow {
                id: r.get(0)?,
                user_id: r.get(1)?,
                step: r.get(2)?,
                data: r.get(3)?,
            })
        }),
    )?)
}

/// Move a flow to its next step in place (same token).
pub fn set_flow_step(conn: &Connection, id: i64, step: LoginStep) -> Result<()> {
    conn.execute(
        "UPDATE login_flows SET step=?1 WHERE id=?2",
        params![step, id],
    )?;
    Ok(())
}

/// Spend a flow at `now`: it can never be used again (every lookup of a flow asks for
/// `consumed_at IS NULL`). The row itself goes with the expiry sweep of
/// [`create_flow`]: marking it writes one page on the step that ends a login, where
/// removing it wrote four (the row, its three indexes) and looked for its emailed codes
/// and passkey ceremonies (which go with it, later).
pub fn consume_flow(conn: &Connection, id: i64, now: i64) -> Result<()> {
    conn.prepare_cached("UPDATE login_flows SET consumed_at=?2 WHERE id=?1")?
        .execute(params![id, now])?;
    Ok(())
}
