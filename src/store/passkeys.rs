//! Passkeys at rest (migration 0005): each user's WebAuthn credentials (public material
//! only: the credential as webauthn-rs serialises it, with its id, AAGUID, counters and
//! flags), their WebAuthn user handles, and the ceremonies in progress (challenge state
//! bound to a login flow, a session or its own token; single use, short-lived).

use crate::sql::{params, Connection};
use serde::Serialize;

use super::{conflict_on_unique, opt};
use crate::crypto;
use crate::error::Result;

/// One stored passkey.
#[derive(Debug, Clone, Serialize)]
pub struct PasskeyRow {
    pub id: i64,
    #[serde(skip)]
    pub user_id: i64,
    pub name: String,
    /// The credential id, base64url.
    pub credential_id: String,
    /// The authenticator model (all zeros when the authenticator does not say).
    pub aaguid: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub sign_count: i64,
    pub backup_eligible: bool,
    pub backed_up: bool,
    pub user_verified: bool,
    /// webauthn-rs's serialised `Passkey`.
    #[serde(skip)]
    pub credential: String,
}

/// What a new passkey stores.
pub struct NewPasskey<'a> {
    pub user_id: i64,
    pub name: &'a str,
    pub credential_id: &'a str,
    pub credential: &'a str,
    pub aaguid: &'a str,
    pub sign_count: i64,
    pub backup_eligible: bool,
    pub backed_up: bool,
    pub user_verified: bool,
}

const COLUMNS: &str = "id, user_id, name, cred_id, aaguid, created_at, last_used_at, sign_count,
     backup_eligible, backed_up, user_verified, credential";

fn row(r: &crate::sql::Row) -> crate::sql::Result<PasskeyRow> {
    Ok(PasskeyRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        name: r.get(2)?,
        credential_id: r.get(3)?,
        aaguid: r.get(4)?,
        created_at: r.get(5)?,
        last_used_at: r.get(6)?,
        sign_count: r.get(7)?,
        backup_eligible: r.get(8)?,
        backed_up: r.get(9)?,
        user_verified: r.get(10)?,
        credential: r.get(11)?,
    })
}

/// The user's passkeys, oldest first.
pub fn list(conn: &Connection, user_id: i64) -> Result<Vec<PasskeyRow>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM passkeys WHERE user_id=?1 ORDER BY id"
    ))?;
    let rows = st.query_map([user_id], row)?;
    Ok(rows.collect::<crate::sql::Result<_>>()?)
}

/// How many passkeys the user has.
pub fn count(conn: &Connection, user_id: i64) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT count(*) FROM passkeys WHERE user_id=?1")?
        .query_row([user_id], |r| r.get(0))?)
}

/// The passkey with this credential id (any user).
pub fn by_credential_id(conn: &Connection, cred_id: &str) -> Result<Option<PasskeyRow>> {
    Ok(opt(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM passkeys WHERE cred_id=?1"))?
        .query_row([cred_id], row))?)
}

/// Store a new passkey; a credential id registered before (to anyone) is a conflict.
pub fn insert(conn: &Connection, p: &NewPasskey, now: i64) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO passkeys(user_id, name, cred_id, credential, aaguid, created_at, sign_count,
                              backup_eligible, backed_up, user_verified)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        p.user_id,
        p.name,
        p.credential_id,
        p.credential,
        p.aaguid,
        now,
        p.sign_count,
        p.backup_eligible,
        p.backed_up,
        p.user_verified
    ])
    .map_err(|e| conflict_on_unique(e, || "this passkey is already registered".into()))?;
    Ok(conn.last_insert_rowid())
}

/// Record a successful assertion: the updated credential, its counter and flags.
pub fn record_use(
    conn: &Connection,
    id: i64,
    credential: &str,
    sign_count: i64,
    backed_up: bool,
    user_verified: bool,
    now: i64,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE passkeys SET credential=?1, sign_count=?2, backed_up=?3, user_verified=?4,
                             last_used_at=?5 WHERE id=?6",
    )?
    .execute(params![
        credential,
        sign_count,
        backed_up,
        user_verified,
        now,
        id
    ])?;
    Ok(())
}

/// Rename one of the user's passkeys; false when the user has no such passkey.
pub fn rename(conn: &Connection, user_id: i64, id: i64, name: &str) -> Result<bool> {
    Ok(conn.execute(
        "UPDATE passkeys SET name=?1 WHERE id=?2 AND user_id=?3",
        params![name, id, user_id],
    )? > 0)
}

/// Remove one of the user's passkeys; false when the user has no such passkey.
pub fn remove(conn: &Connection, user_id: i64, id: i64) -> Result<bool> {
    Ok(conn.execute(
        "DELETE FROM passkeys WHERE id=?1 AND user_id=?2",
        params![id, user_id],
    )? > 0)
}

/// Remove all the user's passkeys (and their ceremonies); how many there were.
pub fn remove_all(conn: &Connection, user_id: i64) -> Result<usize> {
    conn.execute("DELETE FROM passkey_ceremonies WHERE user_id=?1", [user_id])?;
    Ok(conn.execute("DELETE FROM passkeys WHERE user_id=?1", [user_id])?)
}

/// The user's WebAuthn user handle, created on first use (`fresh` makes it: a UUID string).
pub fn handle(conn: &Connection, user_id: i64, fresh: impl FnOnce() -> String) -> Result<String> {
    if let Some(h) = opt(conn
        .prepare_cached("SELECT handle FROM passkey_handles WHERE user_id=?1")?
        .query_row([user_id], |r| r.get::<String>(0)))?
    {
        return Ok(h);
    }
    let h = fresh();
    conn.prepare_cached("INSERT INTO passkey_handles(user_id, handle) VALUES (?1, ?2)")?
        .execute(params![user_id, h])?;
    Ok(h)
}

/// The user whose WebAuthn user handle this is.
pub fn user_of_handle(conn: &Connection, handle: &str) -> Result<Option<i64>> {
    Ok(opt(conn
        .prepare_cached("SELECT user_id FROM passkey_handles WHERE handle=?1")?
        .query_row([handle], |r| r.get(0)))?)
}

/// What a ceremony is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeremonyKind {
    /// A signed-in user adds a passkey (bound to the session).
    Register,
    /// Enrolment inside a login flow (bound to the flow).
    Enroll,
    /// The second factor of a login (bound to the flow).
    SecondFactor,
    /// Passwordless sign-in (bound to its own token).
    Passwordless,
}

impl CeremonyKind {
    fn as_str(self) -> &'static str {
        match self {
            CeremonyKind::Register => "register",
            CeremonyKind::Enroll => "enroll",
            CeremonyKind::SecondFactor => "second_factor",
            CeremonyKind::Passwordless => "passwordless",
        }
    }
}

/// What a ceremony is bound to.
#[derive(Debug, Clone, Copy)]
pub enum Binding<'a> {
    Flow(i64),
    Session(i64),
    Token(&'a str),
}

/// A live ceremony, taken (deleted) from the table.
#[derive(Debug, Clone)]
pub struct Ceremony {
    pub user_id: Option<i64>,
    pub state: String,
}

/// Start a ceremony, replacing any earlier one of the same kind and binding (one
/// challenge per flow or session at a time).
pub fn start_ceremony(
    conn: &Connection,
    kind: CeremonyKind,
    binding: Binding,
    user_id: Option<i64>,
    state: &str,
    ttl: i64,
    now: i64,
) -> Result<()> {
    let (flow, session, token) = match binding {
        Binding::Flow(f) => (Some(f), None, None),
        Binding::Session(s) => (None, Some(s), None),
        Binding::Token(t) => (None, None, Some(crypto::hash_token(t))),
    };
    conn.prepare_cached(
        "DELETE FROM passkey_ceremonies WHERE kind=?1 AND (flow_id=?2 OR session_id=?3)",
    )?
    .execute(params![kind.as_str(), flow, session])?;
    conn.prepare_cached(
        "INSERT INTO passkey_ceremonies(kind, token_hash, flow_id, session_id, user_id, state,
                                        created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        kind.as_str(),
        token,
        flow,
        session,
        user_id,
        state,
        now,
        now.saturating_add(ttl)
    ])?;
    // Expired ceremonies are garbage: sweep a few on every insert.
    conn.prepare_cached(
        "DELETE FROM passkey_ceremonies WHERE id IN
           (SELECT id FROM passkey_ceremonies WHERE expires_at <= ?1 LIMIT 16)",
    )?
    .execute([now])?;
    Ok(())
}

/// Take the ceremony of this kind and binding: it is deleted whatever happens next
/// (single use); None when there is none, or it has expired.
pub fn take_ceremony(
    conn: &Connection,
    kind: CeremonyKind,
    binding: Binding,
    now: i64,
) -> Result<Option<Ceremony>> {
    let (col, value): (&str, rusqlite::types::Value) = match binding {
        Binding::Flow(f) => ("flow_id", f.into()),
        Binding::Session(s) => ("session_id", s.into()),
        Binding::Token(t) => ("token_hash", crypto::hash_token(t).into()),
    };
    let found = opt(conn
        .prepare_cached(&format!(
            "DELETE FROM passkey_ceremonies WHERE kind=?1 AND {col}=?2
             RETURNING user_id, state, expires_at"
        ))?
        .query_row(params![kind.as_str(), value], |r| {
            Ok((
                r.get::<Option<i64>>(0)?,
                r.get::<String>(1)?,
                r.get::<i64>(2)?,
            ))
        }))?;
    Ok(found
        .filter(|(_, _, expires)| *expires > now)
        .map(|(user_id, state, _)| Ceremony { user_id, state }))
}

/// Whether one of the user's groups requires a passkey.
pub fn group_requires_passkey(conn: &Connection, user_id: i64) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM memberships m JOIN groups g ON g.id=m.group_id
                           WHERE m.user_id=?1 AND g.require_passkey=1)",
        )?
        .query_row([user_id], |r| r.get(0))?)
}

/// Set whether a group requires a passkey (by its id).
pub fn set_group_requires_passkey(conn: &Connection, group_id: i64, on: bool) -> Result<()> {
    conn.execute(
        "UPDATE groups SET require_passkey=?1 WHERE id=?2",
        params![on, group_id],
    )?;
    Ok(())
}

/// Whether a group requires a passkey.
pub fn group_requires(conn: &Connection, group_id: i64) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT require_passkey FROM groups WHERE id=?1")?
        .query_row([group_id], |r| r.get(0))?)
}

/// A passkey name: trimmed, 1 to 64 characters, no control characters.
pub fn check_name(name: &str) -> Result<String> {
    crate::util::check_label("a passkey name", name)
}
