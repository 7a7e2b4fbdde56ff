//! Key rotation's store side: every value the key file protects, by kind, so a rotation
//! can seal them again under the new key and a retirement can tell whether an old key is
//! still needed.
//!
//! Two kinds of value:
//! - **encrypted** ([`ENCRYPTED`]): read back, so they are decrypted under their key and
//!   encrypted again under the current one, in batches ([`reencrypt`]);
//! - **keyed hashes** ([`KEYED`]): one-way, so they cannot be re-keyed; they are checked
//!   under the key they name while it stays listed, and new ones are written under the
//!   current key. They end by use or expiry (or an admin replacing them).
//!
//! The audit chain's MACs are the third: [`super::audit_chain::rekey`] seals the chain
//! again under the current key.
//!
//! A new kind of protected value adds its row here (and nothing else is needed for
//! rotation and retirement to cover it).

use crate::sql::{params, Connection};

use crate::crypto::{self, KeyId, SecretKey};
use crate::error::Result;

/// A column of encrypted values.
pub struct Encrypted {
    /// What it is, for messages.
    pub what: &'static str,
    pub table: &'static str,
    /// An integer column that orders the rows (the key, or SQLite's `rowid`).
    pub id: &'static str,
    /// The encrypted column (a blob from `SecretKey::encrypt`; NULL: nothing stored).
    pub column: &'static str,
    /// The column the associated data is made from (read as text).
    pub aad_of: &'static str,
    /// The associated data the value was encrypted with, from `aad_of`.
    pub aad: fn(&str) -> String,
}

/// Every column of encrypted values.
pub const ENCRYPTED: &[Encrypted] = &[
    Encrypted {
        what: "TOTP secrets",
        table: "totp_credentials",
        id: "id",
        column: "secret_enc",
        aad_of: "user_id",
        aad: |user_id| super::factors::totp_aad(user_id.parse().unwrap_or(-1)),
    },
    Encrypted {
        what: "OpenID Connect signing keys",
        table: "oidc_keys",
        id: "rowid",
        column: "private_enc",
        aad_of: "kid",
        aad: super::oidc::key_aad,
    },
    Encrypted {
        what: "one-time links waiting in the outbox",
        table: "outbox",
        id: "id",
        column: "sealed",
        aad_of: "user_id",
        aad: |user_id| super::email::link_aad(user_id.parse().unwrap_or(-1)),
    },
];

/// A column of keyed hashes that may still be checked.
pub struct Keyed {
    pub what: &'static str,
    pub table: &'static str,
    pub column: &'static str,
    /// The rows still checkable (SQL; `?1` is now).
    pub live: &'static str,
}

/// Every column of keyed hashes still checked.
pub const KEYED: &[Keyed] = &[
    Keyed {
        what: "unused recovery codes",
        table: "recovery_codes",
        column: "code_hash",
        live: "used_at IS NULL AND ?1 = ?1",
    },
    Keyed {
        what: "emailed codes not yet expired",
        table: "email_otp_challenges",
        column: "code_hash",
        live: "consumed_at IS NULL AND superseded = 0 AND expires_at > ?1",
    },
];

/// Encrypt the values of `e` after row `after` that are not under the current key again
/// under it, looking at up to `max_rows` rows, in the caller's write transaction. Returns
/// how many were encrypted again and the last row looked at (None: the column is done).
pub fn reencrypt(
    conn: &Connection,
    key: &SecretKey,
    e: &Encrypted,
    after: i64,
    max_rows: usize,
) -> Result<(usize, Option<i64>)> {
    let current = key.current_id();
    let rows: Vec<(i64, Option<Vec<u8>>, String)> = conn
        .prepare(&format!(
            "SELECT {id}, {col}, CAST({aad_of} AS TEXT) FROM {t} WHERE {id} > ?1 ORDER BY {id} LIMIT ?2",
            id = e.id,
            col = e.column,
            aad_of = e.aad_of,
            t = e.table
        ))?
        .query_map(params![after, i64::try_from(max_rows).unwrap_or(i64::MAX)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<Option<String>>(2)?.unwrap_or_default()))
        })?
        .collect::<crate::sql::Result<_>>()?;
    let mut update = conn.prepare(&format!(
        "UPDATE {t} SET {col}=?1 WHERE {id}=?2 AND {col}=?3",
        id = e.id,
        col = e.column,
        t = e.table
    ))?;
    let mut done = 0;
    for (id, blob, aad_of) in &rows {
        let Some(blob) = blob else { continue };
        if crypto::key_of_encrypted(blob) == Some(current) {
            continue;
        }
        let aad = (e.aad)(aad_of);
        let plain = key.decrypt(blob, &aad)?;
        update.execute(params![key.encrypt(&plain, &aad), id, blob])?;
        done += 1;
    }
    let last = if rows.len() < max_rows {
        None
    } else {
        rows.last().map(|(id, _, _)| *id)
    };
    Ok((done, last))
}

/// The keys this database has known (their check values in `meta`), oldest first.
pub fn registered(conn: &Connection) -> Result<Vec<KeyId>> {
    let mut st =
        conn.prepare("SELECT key FROM meta WHERE key='key_check' OR key LIKE 'key_check.%'")?;
    let mut ids: Vec<KeyId> = st
        .query_map((), |r| r.get::<String>(0))?
        .filter_map(|k| match k {
            Ok(k) if k == "key_check" => Some(Ok(1)),
            Ok(k) => k.strip_prefix("key_check.")?.parse().ok().map(Ok),
            Err(e) => Some(Err(e)),
        })
        .collect::<crate::sql::Result<_>>()?;
    ids.sort_unstable();
    Ok(ids)
}

/// What still needs key `id`: one line per kind of value with a count.
pub fn uses_of(conn: &Connection, id: KeyId, now: i64) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for e in ENCRYPTED {
        let mut st = conn.prepare(&format!(
            "SELECT {c} FROM {t} WHERE {c} IS NOT NULL",
            c = e.column,
            t = e.table
        ))?;
        let mut rows = st.query(())?;
        let mut n = 0u64;
        while let Some(r) = rows.next()? {
            let blob: Vec<u8> = r.get(0)?;
            if crypto::key_of_encrypted(&blob) == Some(id) {
                n += 1;
            }
        }
        if n > 0 {
            out.push((e.what.to_string(), n));
        }
    }
    for k in KEYED {
        let n: i64 = conn.query_row(
            &format!(
                "SELECT count(*) FROM {} WHERE {} AND {}",
                k.table,
                k.live,
                super::keyed_by(k.column, id)
            ),
            [now],
            |r| r.get(0),
        )?;
        if n > 0 {
            out.push((k.what.to_string(), n as u64));
        }
    }
    let n = super::audit_chain::uses_key(conn, id)?;
    if n > 0 {
        out.push(("audit log MACs and signatures".to_string(), n));
    }
    Ok(out)
}
