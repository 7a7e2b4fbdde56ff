//! Terms and conditions: versions and who accepted which.

use crate::sql::{params, Connection};
use serde::Serialize;

use super::opt;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Terms {
    pub version: String,
    pub text: String,
}

pub const MAX_TEXT_BYTES: usize = 256 * 1024;

/// Publish a new current version. Versions are unique and never change once published.
pub fn set(conn: &Connection, version: &str, text: &str, now: i64) -> Result<Terms> {
    let version = version.trim();
    if version.is_empty() || version.len() > 64 || version.chars().any(char::is_control) {
        return Err(Error::Invalid(
            "the terms version must be 1 to 64 printable characters".into(),
        ));
    }
    if text.trim().is_empty() {
        return Err(Error::Invalid("the terms text is empty".into()));
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(Error::Invalid(format!(
            "the terms text is larger than {} KiB",
            MAX_TEXT_BYTES / 1024
        )));
    }
    conn.execute(
        "INSERT INTO terms(version, text, created_at, seq)
         VALUES (?1, ?2, ?3, (SELECT coalesce(max(seq), 0) + 1 FROM terms))",
        params![version, text, now],
    )
    .map_err(|e| {
        super::conflict_on_unique(e, || {
            format!("terms version '{version}' already exists; publish a new version")
        })
    })?;
    Ok(Terms {
        version: version.to_string(),
        text: text.to_string(),
    })
}

/// The version users must accept now, if any.
pub fn current(conn: &Connection) -> Result<Option<Terms>> {
    Ok(opt(conn
        .prepare_cached("SELECT version, text FROM terms ORDER BY seq DESC LIMIT 1")?
        .query_row((), |r| {
            Ok(Terms {
                version: r.get(0)?,
                text: r.get(1)?,
            })
        }))?)
}

pub fn has_accepted(conn: &Connection, user_id: i64, version: &str) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM terms_acceptances WHERE user_id=?1 AND version=?2)",
        params![user_id, version],
        |r| r.get(0),
    )?)
}

pub fn accept(conn: &Connection, user_id: i64, version: &str, now: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO terms_acceptances(user_id, version, accepted_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(user_id, version) DO UPDATE SET accepted_at=excluded.accepted_at",
        params![user_id, version, now],
    )?;
    Ok(())
}
