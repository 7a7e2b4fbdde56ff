//! Sessions and login flows at rest (tokens stored as SHA-256 only).

use rusqlite::{params, Connection};
use serde::Serialize;

use crate::crypto;
use crate::error::Result;

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
    let mut stmt = conn.prepare(
        "SELECT s.id, s.user_id, u.username, s.ip, s.user_agent, s.created_at, s.last_seen_at, s.expires_at
         FROM sessions s JOIN users u ON u.id=s.user_id
         WHERE s.revoked_at IS NULL AND s.expires_at > ?1 AND (?2 IS NULL OR s.user_id=?2)
         ORDER BY s.id",
    )?;
    let rows = stmt
        .query_map(params![now, user_id], |r| {
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
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Create a session; returns (id, token). The token is given to the client once.
pub fn create(
    conn: &Connection,
    user_id: i64,
    ip: &str,
    user_agent: &str,
    absolute_secs: i64,
    now: i64,
) -> Result<(i64, String)> {
    let token = crypto::random_token();
    conn.execute(
        "INSERT INTO sessions(user_id, token_hash, ip, user_agent, created_at, last_seen_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
        params![
            user_id,
            crypto::hash_token(&token),
            ip,
            user_agent.chars().take(256).collect::<String>(),
            now,
            now.saturating_add(absolute_secs)
        ],
    )?;
    Ok((conn.last_insert_rowid(), token))
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
