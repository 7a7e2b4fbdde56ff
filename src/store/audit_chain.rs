//! The tamper-evident audit chain. Each audit row is sealed with a MAC — HMAC-SHA-256 under
//! a subkey of the key file — over the previous row's MAC and the row's own content
//! (its id included), so editing, deleting or reordering rows is detected by anyone
//! holding the key, even against someone who can write the database file but does not
//! have the key.
//!
//! Rows are written unsealed (`mac` NULL) by [`crate::audit::record`], in the transaction
//! of their decision, and sealed in order shortly after by [`seal`]: the core's background
//! thread does it every tick, authctl before it exits. Sealing after the fact keeps the
//! MAC out of every decision's transaction (no key needed where rows are written) at the
//! cost of a short window (one tick, 100 ms) in which the newest rows are not yet sealed;
//! [`verify`] counts them apart.
//!
//! Pruning keeps the chain verifiable: [`prune`] deletes the oldest sealed rows and keeps,
//! in `meta`, a signed anchor holding the id and MAC of the last deleted row, from which
//! the chain continues. The anchor's signature stops an attacker from cutting the log
//! further without the key.
//!
//! Deleting the newest rows would leave a valid shorter chain; a signed head in `meta` (the
//! id and MAC of the newest sealed row, rewritten by each seal) catches that. What stays
//! out of reach without a copy elsewhere: someone who saved an older database file and
//! puts it back whole. Rows shipped off the machine (`authctl audit export`) bound that.

use crate::sql::{params, Connection, OptionalExtension};
use serde_json::json;

use crate::crypto::SecretKey;
use crate::error::{Error, Result};

const ROW_DOMAIN: &str = "audit chain v1";
const ANCHOR_DOMAIN: &str = "audit anchor v1";

/// meta keys: the last sealed id (a hint: [`verify`] trusts only the MACs) and the anchor.
const SEALED_THROUGH: &str = "audit_sealed_through";
const ANCHOR: &str = "audit_anchor";
/// The signed head: the id and MAC of the newest sealed row, rewritten by every seal. A
/// log whose newest rows were deleted ends before its head; an attacker without the key
/// cannot sign an older head.
const HEAD: &str = "audit_head";
const HEAD_DOMAIN: &str = "audit head v1";
/// While a key rotation seals the log again under the new key ([`rekey`]): the last row
/// done and the MAC it had before (the next row still chains from that), signed.
const REKEY: &str = "audit_rekey";
const REKEY_DOMAIN: &str = "audit rekey v1";

/// Where the chain starts: after the last pruned row, or at the beginning.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Anchor {
    /// The id of the last pruned row (0: nothing was ever pruned).
    pub id: i64,
    /// Its MAC: the first kept row chains from it.
    pub mac: String,
    /// The key's signature over `id` and `mac`.
    pub sig: String,
}

/// The key's signature over a chain position (an anchor or the head) in `domain`, under
/// the current key.
fn sign(key: &SecretKey, domain: &str, id: i64, mac: &str) -> String {
    key.keyed_hash(domain, format!("{id}\n{mac}").as_bytes())
}

/// Whether `sig` is the signature of a position, under the key it names.
fn sign_ok(key: &SecretKey, domain: &str, pos: &Anchor) -> bool {
    key.keyed_hash_matches(
        domain,
        format!("{}\n{}", pos.id, pos.mac).as_bytes(),
        &pos.sig,
    )
}

/// The MAC of one row after `prev`, under the current key.
fn row_mac(key: &SecretKey, prev: &str, row: &RawRow) -> String {
    key.keyed_hash(ROW_DOMAIN, row_input(prev, row).as_bytes())
}

/// Whether `mac` is the MAC of `row` after `prev`, under the key it names.
fn row_mac_ok(key: &SecretKey, prev: &str, row: &RawRow, mac: &str) -> bool {
    key.keyed_hash_matches(ROW_DOMAIN, row_input(prev, row).as_bytes(), mac)
}

/// What a row's MAC covers: the previous MAC and every column.
fn row_input(prev: &str, row: &RawRow) -> String {
    let content = json!([
        row.id,
        row.at,
        row.event,
        row.outcome,
        row.reason,
        row.username,
        row.username_key,
        row.user_id,
        row.org_id,
        row.ip,
        row.user_agent,
        row.actor,
        row.detail
    ]);
    format!("{prev}\n{content}")
}

/// A row as stored, every column the MAC covers.
struct RawRow {
    id: i64,
    at: i64,
    event: String,
    outcome: String,
    reason: String,
    username: String,
    username_key: String,
    user_id: Option<i64>,
    org_id: Option<i64>,
    ip: String,
    user_agent: String,
    actor: String,
    detail: String,
    mac: Option<String>,
}

const COLUMNS: &str = "id, at, event, outcome, reason, username, username_key, user_id, org_id,
                       ip, user_agent, actor, detail, mac";

fn raw_row(r: &crate::sql::Row) -> crate::sql::Result<RawRow> {
    Ok(RawRow {
        id: r.get(0)?,
        at: r.get(1)?,
        event: r.get(2)?,
        outcome: r.get(3)?,
        reason: r.get(4)?,
        username: r.get(5)?,
        username_key: r.get(6)?,
        user_id: r.get(7)?,
        org_id: r.get(8)?,
        ip: r.get(9)?,
        user_agent: r.get(10)?,
        actor: r.get(11)?,
        detail: r.get(12)?,
        mac: r.get(13)?,
    })
}

fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key=?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

fn meta_set(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value=excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

/// A signed chain position stored in `meta` under `name` (the anchor or the head), if
/// any. Its signature is not checked here.
fn position(conn: &Connection, name: &str) -> Result<Option<Anchor>> {
    match meta_get(conn, name)? {
        None => Ok(None),
        Some(v) => serde_json::from_str(&v)
            .map(Some)
            .map_err(|_| Error::Invalid(format!("the {name} row in meta is not readable"))),
    }
}

/// The stored anchor, or the start of the chain.
fn anchor(conn: &Connection) -> Result<Option<Anchor>> {
    position(conn, ANCHOR)
}

/// Seal up to `max_rows` unsealed rows, oldest first, in the caller's write transaction;
/// returns how many. Sealing continues from the last sealed row (or the anchor).
pub fn seal(conn: &Connection, key: &SecretKey, max_rows: usize) -> Result<usize> {
    let hint: i64 = meta_get(conn, SEALED_THROUGH)?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // The MAC to continue from: the hinted row's when it is sealed, else the anchor's (a
    // missing or unsealed hinted row: start again from where the chain starts).
    let hinted: Option<(i64, Option<String>)> = if hint > 0 {
        conn.prepare_cached("SELECT id, mac FROM audit WHERE id=?1")?
            .query_row([hint], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
    } else {
        None
    };
    let (mut after, mut prev) = match hinted {
        Some((id, Some(mac))) => (id, mac),
        // The hint is gone or wrong: the last sealed row (a backward scan over the
        // unsealed tail), else where the chain starts.
        _ => match conn
            .prepare_cached(
                "SELECT id, mac FROM audit WHERE mac IS NOT NULL ORDER BY id DESC LIMIT 1",
            )?
            .query_row((), |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
        {
            Some(last) => last,
            None => match anchor(conn)? {
                Some(a) => (a.id, a.mac),
                None => (0, String::new()),
            },
        },
    };
    let mut sealed = 0;
    let mut select = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM audit WHERE id > ?1 ORDER BY id LIMIT ?2"
    ))?;
    let mut update = conn.prepare_cached("UPDATE audit SET mac=?1 WHERE id=?2")?;
    'batches: while sealed < max_rows {
        let rows: Vec<RawRow> = select
            .query_map(
                params![after, i64::try_from(max_rows - sealed).unwrap_or(i64::MAX)],
                raw_row,
            )?
            .collect::<crate::sql::Result<_>>()?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            if let Some(mac) = &row.mac {
                // Sealed already (rows after a lost hint): follow the stored chain.
                prev = mac.clone();
            } else {
                prev = row_mac(key, &prev, row);
                update.execute(params![prev, row.id])?;
                sealed += 1;
            }
            after = row.id;
            if sealed == max_rows {
                break 'batches;
            }
        }
    }
    if after != hint {
        meta_set(conn, SEALED_THROUGH, &after.to_string())?;
    }
    if after > 0 && (sealed > 0 || after != hint) {
        let head = Anchor {
            id: after,
            sig: sign(key, HEAD_DOMAIN, after, &prev),
            mac: prev,
        };
        meta_set(
            conn,
            HEAD,
            &serde_json::to_string(&head).map_err(|e| Error::Invalid(e.to_string()))?,
        )?;
    }
    Ok(sealed)
}

fn meta_delete(conn: &Connection, key: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM meta WHERE key=?1")?
        .execute([key])?;
    Ok(())
}

fn put_position(conn: &Connection, name: &str, pos: &Anchor) -> Result<()> {
    meta_set(
        conn,
        name,
        &serde_json::to_string(pos).map_err(|e| Error::Invalid(e.to_string()))?,
    )
}

/// Seal up to `max_rows` sealed rows again under the current key, in the caller's write
/// transaction, continuing from where the last call stopped (a signed position in
/// `meta`); the prune anchor and the head are signed again under the current key. Each
/// row's old MAC is checked first: a broken chain is not sealed again (that would
/// launder the evidence). Returns how many rows were rewritten and whether the walk
/// reached the newest sealed row (a later call starts again from the beginning).
pub fn rekey(conn: &Connection, key: &SecretKey, max_rows: usize) -> Result<(usize, bool)> {
    let broken = |id: i64, what: &str| {
        Error::Invalid(format!(
            "the audit chain is broken at {what} {id}; not sealing it again (run authctl audit verify)"
        ))
    };
    let anchor = anchor(conn)?;
    if let Some(a) = &anchor {
        if !sign_ok(key, ANCHOR_DOMAIN, a) {
            return Err(broken(0, "the prune anchor, row"));
        }
    }
    let (mut after, mut prev_new, mut prev_old) = match position(conn, REKEY)? {
        Some(p) => {
            if !sign_ok(key, REKEY_DOMAIN, &p) {
                return Err(broken(0, "the rotation's position, row"));
            }
            let now: String = conn
                .query_row("SELECT mac FROM audit WHERE id=?1", [p.id], |r| r.get(0))
                .map_err(|_| broken(p.id, "row"))?;
            (p.id, now, p.mac)
        }
        None => match &anchor {
            Some(a) => (a.id, a.mac.clone(), a.mac.clone()),
            None => (0, String::new(), String::new()),
        },
    };
    let current = key.current_id();
    let rows: Vec<RawRow> = conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM audit WHERE id > ?1 AND mac IS NOT NULL ORDER BY id LIMIT ?2"
        ))?
        .query_map(
            params![after, i64::try_from(max_rows).unwrap_or(i64::MAX)],
            raw_row,
        )?
        .collect::<crate::sql::Result<_>>()?;
    let done = rows.len() < max_rows;
    let mut rewritten = 0;
    let mut update = conn.prepare_cached("UPDATE audit SET mac=?1 WHERE id=?2")?;
    for row in &rows {
        let mac = row.mac.as_deref().unwrap_or_default();
        if crate::crypto::key_of_keyed_hash(mac) == current && row_mac_ok(key, &prev_new, row, mac)
        {
            prev_new = mac.to_string();
            prev_old = prev_new.clone();
        } else if row_mac_ok(key, &prev_old, row, mac) || row_mac_ok(key, &prev_new, row, mac) {
            let new = row_mac(key, &prev_new, row);
            update.execute(params![new, row.id])?;
            prev_old = mac.to_string();
            prev_new = new;
            rewritten += 1;
        } else {
            return Err(broken(row.id, "row"));
        }
        after = row.id;
    }
    if let Some(a) = anchor {
        put_position(
            conn,
            ANCHOR,
            &Anchor {
                sig: sign(key, ANCHOR_DOMAIN, a.id, &a.mac),
                ..a
            },
        )?;
    }
    if let Some(h) = position(conn, HEAD)? {
        if !sign_ok(key, HEAD_DOMAIN, &h) {
            return Err(broken(0, "the signed head, row"));
        }
        let mac = if h.id <= after {
            conn.query_row("SELECT mac FROM audit WHERE id=?1", [h.id], |r| r.get(0))
                .map_err(|_| broken(h.id, "row"))?
        } else {
            h.mac
        };
        put_position(
            conn,
            HEAD,
            &Anchor {
                id: h.id,
                sig: sign(key, HEAD_DOMAIN, h.id, &mac),
                mac,
            },
        )?;
    }
    if done {
        meta_delete(conn, REKEY)?;
    } else {
        put_position(
            conn,
            REKEY,
            &Anchor {
                id: after,
                sig: sign(key, REKEY_DOMAIN, after, &prev_old),
                mac: prev_old,
            },
        )?;
    }
    Ok((rewritten, done))
}

/// How many of the chain's MACs and signatures are under key `id`.
pub fn uses_key(conn: &Connection, id: crate::crypto::KeyId) -> Result<u64> {
    let rows: i64 = conn.query_row(
        &format!(
            "SELECT count(*) FROM audit WHERE mac IS NOT NULL AND {}",
            super::keyed_by("mac", id)
        ),
        (),
        |r| r.get(0),
    )?;
    let mut n = rows as u64;
    for name in [ANCHOR, HEAD, REKEY] {
        if let Some(p) = position(conn, name)? {
            if crate::crypto::key_of_keyed_hash(&p.sig) == id {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verified {
    /// Rows whose MAC is right.
    pub sealed: u64,
    /// The newest rows, not sealed yet (authd seals within a tick of writing them).
    pub unsealed: u64,
    /// The id of the last pruned row, when the log was pruned.
    pub pruned_through: Option<i64>,
    /// The first row that breaks the chain, and why; None: the chain holds.
    pub broken: Option<Broken>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Broken {
    /// The first row that does not verify (0: the anchor itself).
    pub id: i64,
    pub why: String,
}

/// Walk the whole log in id order and check every MAC against the key.
pub fn verify(conn: &Connection, key: &SecretKey) -> Result<Verified> {
    let mut out = Verified {
        sealed: 0,
        unsealed: 0,
        pruned_through: None,
        broken: None,
    };
    let (start, mut prev) = match anchor(conn)? {
        Some(a) => {
            out.pruned_through = Some(a.id);
            if !sign_ok(key, ANCHOR_DOMAIN, &a) {
                out.broken = Some(Broken {
                    id: 0,
                    why:
                        "the prune anchor's signature is wrong (edited, or not made with this key)"
                            .into(),
                });
                return Ok(out);
            }
            (a.id, a.mac)
        }
        None => (0, String::new()),
    };
    let head = position(conn, HEAD)?;
    let rekeying = position(conn, REKEY)?;
    if let Some(r) = &rekeying {
        if !sign_ok(key, REKEY_DOMAIN, r) {
            out.broken = Some(Broken {
                id: 0,
                why: "the key rotation's position in the log is wrong (edited, or not made with this key)"
                    .into(),
            });
            return Ok(out);
        }
    }
    if let Some(h) = &head {
        if !sign_ok(key, HEAD_DOMAIN, h) {
            out.broken = Some(Broken {
                id: 0,
                why: "the log's signed head is wrong (edited, or not made with this key)".into(),
            });
            return Ok(out);
        }
    }
    let mut last = start;
    let mut st = conn.prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY id"))?;
    let mut rows = st.query(())?;
    let mut first_unsealed: Option<i64> = None;
    while let Some(r) = rows.next()? {
        let row = raw_row(&r)?;
        if row.id <= start {
            out.broken = Some(Broken {
                id: row.id,
                why: format!(
                    "the row is older than the prune anchor (row {start}) yet still present"
                ),
            });
            return Ok(out);
        }
        match &row.mac {
            None => {
                first_unsealed.get_or_insert(row.id);
                out.unsealed += 1;
            }
            Some(mac) => {
                if let Some(u) = first_unsealed {
                    out.broken = Some(Broken {
                        id: u,
                        why: format!("the row is not sealed, but the later row {} is", row.id),
                    });
                    return Ok(out);
                }
                // The row after a key rotation's position may still chain from the MAC
                // its predecessor had before it was sealed again under the new key.
                let ok = row_mac_ok(key, &prev, &row, mac)
                    || rekeying
                        .as_ref()
                        .is_some_and(|r| r.id + 1 == row.id && row_mac_ok(key, &r.mac, &row, mac));
                if !ok {
                    out.broken = Some(Broken {
                        id: row.id,
                        why: "its MAC does not match: the row was edited, or a row before it \
                              was deleted, inserted or moved"
                            .into(),
                    });
                    return Ok(out);
                }
                if head
                    .as_ref()
                    .is_some_and(|h| h.id == row.id && h.mac != *mac)
                {
                    out.broken = Some(Broken {
                        id: row.id,
                        why: "the row differs from what the signed head recorded".into(),
                    });
                    return Ok(out);
                }
                prev = mac.clone();
                last = row.id;
                out.sealed += 1;
            }
        }
    }
    match &head {
        Some(h) if h.id > last => {
            out.broken = Some(Broken {
                id: last + 1,
                why: format!(
                    "the newest rows were deleted: the log's signed head is row {}, the last \
                     sealed row present is {last}",
                    h.id
                ),
            });
        }
        None if out.sealed > 0 => {
            out.broken = Some(Broken {
                id: 0,
                why: "the log's signed head is missing".into(),
            });
        }
        _ => {}
    }
    Ok(out)
}

/// Delete the rows written before `before` (Unix seconds) — every row up to the last one
/// written before it — and move the signed anchor to the cut, in the caller's write
/// transaction. Unsealed rows are sealed first; a chain that does not verify is not
/// pruned (that would destroy the evidence). Returns how many rows were deleted.
pub fn prune(conn: &Connection, key: &SecretKey, before: i64) -> Result<u64> {
    if position(conn, REKEY)?.is_some() {
        return Err(Error::Conflict(
            "a key rotation is sealing the audit log again under the new key; prune after it \
             ends (authctl key rekey)"
                .into(),
        ));
    }
    while seal(conn, key, 10_000)? > 0 {}
    let v = verify(conn, key)?;
    if let Some(b) = v.broken {
        return Err(Error::Invalid(format!(
            "the audit chain is broken at row {}: {}; not pruning (run authctl audit verify)",
            b.id, b.why
        )));
    }
    let cut: Option<(i64, String)> = conn
        .query_row(
            "SELECT id, mac FROM audit WHERE id = (SELECT max(id) FROM audit WHERE at < ?1)",
            [before],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((id, mac)) = cut else {
        return Ok(0);
    };
    let n = conn.execute("DELETE FROM audit WHERE id <= ?1", [id])?;
    let a = Anchor {
        id,
        sig: sign(key, ANCHOR_DOMAIN, id, &mac),
        mac,
    };
    meta_set(
        conn,
        ANCHOR,
        &serde_json::to_string(&a).map_err(|e| Error::Invalid(e.to_string()))?,
    )?;
    Ok(n as u64)
}

/// Every row with `id > after_id` and `at >= since`, oldest first, as JSON objects with
/// their MACs (null while unsealed), handed to `each` one at a time: for log shipping. A
/// shipped copy also bounds what the chain cannot show alone, a deleted newest tail.
pub fn export(
    conn: &Connection,
    since: Option<i64>,
    after_id: i64,
    mut each: impl FnMut(serde_json::Value) -> Result<()>,
) -> Result<u64> {
    let mut st = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM audit WHERE id > ?1 AND at >= ?2 ORDER BY id"
    ))?;
    let mut rows = st.query(params![after_id, since.unwrap_or(i64::MIN)])?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        let row = raw_row(&r)?;
        each(json!({
            "id": row.id,
            "at": row.at,
            "time": crate::util::rfc3339(row.at),
            "event": row.event,
            "outcome": row.outcome,
            "reason": row.reason,
            "username": row.username,
            "username_key": row.username_key,
            "user_id": row.user_id,
            "org_id": row.org_id,
            "ip": row.ip,
            "user_agent": row.user_agent,
            "actor": row.actor,
            "detail": row.detail,
            "mac": row.mac,
        }))?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{record, Entry, Outcome};
    use crate::kinds::AuditEvent;

    fn db() -> (tempfile::TempDir, Connection, SecretKey) {
        let dir = tempfile::tempdir().unwrap();
        let loc = crate::db::Location::new(dir.path().join("a.db"), None);
        let (conn, key) = crate::db::create(&loc).unwrap();
        (dir, conn, key)
    }

    fn write(conn: &Connection, n: i64, at0: i64) {
        for i in 0..n {
            let e = Entry::new(AuditEvent::LoginPassword, Outcome::Failure)
                .username(&format!("user{i}"))
                .reason("wrong_password")
                .client("192.0.2.7", "tests");
            record(conn, &e, at0 + i).unwrap();
        }
    }

    fn seal_all(conn: &Connection, key: &SecretKey) {
        while seal(conn, key, 7).unwrap() > 0 {}
    }

    fn broken_at(conn: &Connection, key: &SecretKey) -> Option<i64> {
        verify(conn, key).unwrap().broken.map(|b| b.id)
    }

    #[test]
    fn a_rotation_seals_the_log_again_in_batches_and_it_verifies_throughout() {
        let (_d, mut conn, old) = db();
        write(&conn, 10, 1000);
        seal_all(&conn, &old);
        prune(&conn, &old, 1003).unwrap();
        write(&conn, 20, 2000);
        seal_all(&conn, &old);
        let (new, id) = old.with_new_key();
        assert_eq!(id, 2);
        assert_eq!(uses_key(&conn, 1).unwrap(), 27 + 2, "rows, anchor and head");
        let mut batches = 0;
        loop {
            let (_, done) = rekey(&conn, &new, 4).unwrap();
            batches += 1;
            assert_eq!(broken_at(&conn, &new), None, "after batch {batches}");
            // Meanwhile rows are sealed: by a holder of the new ring, and by one that has
            // not read the new key file yet.
            write(&conn, 1, 3000 + batches);
            seal_all(&conn, if batches % 2 == 0 { &new } else { &old });
            assert_eq!(
                broken_at(&conn, &new),
                None,
                "after a seal, batch {batches}"
            );
            if done {
                break;
            }
            assert!(
                prune(&conn, &new, 1005).is_err(),
                "no prune while sealing again"
            );
        }
        assert!(batches > 3, "{batches}");
        // Rows the old holder sealed last are left for the next run, which ends them.
        while !rekey(&conn, &new, 4).unwrap().1 {}
        assert_eq!(uses_key(&conn, 1).unwrap(), 0);
        let only_new = new.without_key(1).unwrap();
        let v = verify(&conn, &only_new).unwrap();
        assert_eq!(
            (v.broken.clone(), v.pruned_through),
            (None, Some(3)),
            "{v:?}"
        );
        // The chain still catches an edit, and a broken chain is not sealed again.
        conn.execute("UPDATE audit SET reason='success' WHERE id=9", ())
            .unwrap();
        assert_eq!(broken_at(&conn, &only_new), Some(9));
        let (newer, _) = new.with_new_key();
        // (In its write transaction, as the core runs it: the refusal undoes the batch.)
        let tx = conn.begin(true).unwrap();
        assert!(rekey(&tx, &newer, 100).is_err());
        drop(tx);
        assert_eq!(broken_at(&conn, &only_new), Some(9), "nothing laundered");
    }

    #[test]
    fn a_sealed_log_verifies_and_new_rows_wait_for_their_seal() {
        let (_d, conn, key) = db();
        write(&conn, 30, 1000);
        let v = verify(&conn, &key).unwrap();
        assert_eq!((v.sealed, v.unsealed, v.broken), (0, 30, None));
        seal_all(&conn, &key);
        write(&conn, 5, 2000);
        let v = verify(&conn, &key).unwrap();
        assert_eq!((v.sealed, v.unsealed, v.broken), (30, 5, None));
        seal_all(&conn, &key);
        let v = verify(&conn, &key).unwrap();
        assert_eq!((v.sealed, v.unsealed, v.broken), (35, 0, None));
        // Another key sees the signed head as forged, and without the head every row.
        assert_eq!(broken_at(&conn, &SecretKey::generate()), Some(0));
        conn.execute("DELETE FROM meta WHERE key=?1", [HEAD])
            .unwrap();
        assert_eq!(broken_at(&conn, &SecretKey::generate()), Some(1));
    }

    #[test]
    fn edits_deletions_insertions_and_reorders_are_found_at_the_first_bad_row() {
        let (_d, conn, key) = db();
        write(&conn, 20, 1000);
        seal_all(&conn, &key);
        // An edit of one column of row 7.
        conn.execute("UPDATE audit SET reason='success' WHERE id=7", ())
            .unwrap();
        assert_eq!(broken_at(&conn, &key), Some(7));
        conn.execute("UPDATE audit SET reason='wrong_password' WHERE id=7", ())
            .unwrap();
        assert_eq!(broken_at(&conn, &key), None, "restored");
        // Swapping the contents (MACs included) of rows 3 and 4.
        conn.execute_batch(
            "UPDATE audit SET id=-3 WHERE id=3; UPDATE audit SET id=3 WHERE id=4;
             UPDATE audit SET id=4 WHERE id=-3;",
        )
        .unwrap();
        assert_eq!(broken_at(&conn, &key), Some(3));
        conn.execute_batch(
            "UPDATE audit SET id=-3 WHERE id=3; UPDATE audit SET id=3 WHERE id=4;
             UPDATE audit SET id=4 WHERE id=-3;",
        )
        .unwrap();
        assert_eq!(broken_at(&conn, &key), None);
        // Deleting row 12: row 13 no longer follows its predecessor.
        let saved: (i64, String) = conn
            .query_row("SELECT at, mac FROM audit WHERE id=12", (), |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        conn.execute("DELETE FROM audit WHERE id=12", ()).unwrap();
        assert_eq!(broken_at(&conn, &key), Some(13));
        // A forged row inserted in the gap with a made-up MAC.
        conn.execute(
            "INSERT INTO audit(id, at, event, outcome, mac) VALUES (12, ?1, 'login.password', 'success', 'ab')",
            [saved.0],
        )
        .unwrap();
        assert_eq!(broken_at(&conn, &key), Some(12));
        // An unsealed row in the middle of sealed ones.
        conn.execute("UPDATE audit SET mac=NULL WHERE id=12", ())
            .unwrap();
        let b = verify(&conn, &key).unwrap().broken.unwrap();
        assert_eq!(b.id, 12);
        assert!(b.why.contains("not sealed"), "{}", b.why);
    }

    #[test]
    fn pruning_keeps_the_chain_verifiable_and_the_anchor_cannot_be_moved() {
        let (_d, conn, key) = db();
        write(&conn, 50, 1000); // at 1000..1049
        seal_all(&conn, &key);
        write(&conn, 3, 5000); // unsealed: prune seals them first
        assert_eq!(prune(&conn, &key, 1020).unwrap(), 20);
        let v = verify(&conn, &key).unwrap();
        assert_eq!(
            (v.sealed, v.unsealed, v.pruned_through, v.broken),
            (33, 0, Some(20), None)
        );
        // New rows after the prune chain on.
        write(&conn, 2, 6000);
        seal_all(&conn, &key);
        assert_eq!(broken_at(&conn, &key), None);
        // Someone with write access deletes more old rows and moves the anchor to the new
        // cut, copying the MAC there: the signature gives it away.
        let (id, mac): (i64, String) = conn
            .query_row("SELECT id, mac FROM audit WHERE id=25", (), |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        let a: Anchor = anchor(&conn).unwrap().unwrap();
        conn.execute("DELETE FROM audit WHERE id<=25", ()).unwrap();
        let forged = Anchor {
            id,
            mac,
            sig: a.sig,
        };
        meta_set(&conn, ANCHOR, &serde_json::to_string(&forged).unwrap()).unwrap();
        assert_eq!(broken_at(&conn, &key), Some(0));
        // Dropping the anchor altogether: the first row no longer starts a chain.
        conn.execute("DELETE FROM meta WHERE key=?1", [ANCHOR])
            .unwrap();
        assert_eq!(broken_at(&conn, &key), Some(26));
        // A broken chain is not pruned.
        let e = prune(&conn, &key, 99_999).unwrap_err();
        assert!(e.to_string().contains("broken"), "{e}");
        assert!(
            conn.query_row("SELECT count(*) FROM audit", (), |r| r.get::<i64>(0))
                .unwrap()
                > 0
        );
    }

    #[test]
    fn a_truncated_tail_and_a_replayed_head_are_found() {
        let (_d, conn, key) = db();
        write(&conn, 10, 1000);
        seal_all(&conn, &key);
        let old_head = meta_get(&conn, HEAD).unwrap().unwrap();
        write(&conn, 5, 2000);
        seal_all(&conn, &key);
        assert_eq!(broken_at(&conn, &key), None);
        // The attacker deletes the newest rows ...
        conn.execute("DELETE FROM audit WHERE id > 12", ()).unwrap();
        let b = verify(&conn, &key).unwrap().broken.unwrap();
        assert_eq!(b.id, 13, "{b:?}");
        assert!(b.why.contains("newest rows were deleted"), "{}", b.why);
        // ... and puts back the head they saw earlier (row 10): row 10 is not the end.
        meta_set(&conn, HEAD, &old_head).unwrap();
        conn.execute("DELETE FROM audit WHERE id > 10", ()).unwrap();
        assert_eq!(
            broken_at(&conn, &key),
            None,
            "a replayed head matching a real end"
        );
        // (Exactly the old state: without a copy elsewhere, that is indistinguishable.)
        // Dropping the head altogether is seen.
        conn.execute("DELETE FROM meta WHERE key=?1", [HEAD])
            .unwrap();
        assert_eq!(broken_at(&conn, &key), Some(0));
    }

    #[test]
    fn a_wrong_hint_does_not_break_sealing() {
        let (_d, conn, key) = db();
        write(&conn, 10, 1000);
        seal_all(&conn, &key);
        write(&conn, 4, 2000);
        // The hint points past the real end, or at a row that is gone.
        meta_set(&conn, SEALED_THROUGH, "9999").unwrap();
        seal_all(&conn, &key);
        assert_eq!(verify(&conn, &key).unwrap().unsealed, 0);
        assert_eq!(broken_at(&conn, &key), None);
        meta_set(&conn, SEALED_THROUGH, "3").unwrap();
        write(&conn, 2, 3000);
        seal_all(&conn, &key);
        let v = verify(&conn, &key).unwrap();
        assert_eq!((v.sealed, v.unsealed, v.broken), (16, 0, None));
    }
}
