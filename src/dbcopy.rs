//! Moving an existing site to PostgreSQL (issue 13): `authctl db copy --to postgres://…`.
//!
//! [`copy`] takes two connections, the SQLite source and the PostgreSQL target, and
//! copies every table of the schema with every id kept:
//!
//! - the source is read in one read transaction: a consistent snapshot while authd keeps
//!   serving from it (SQLite's WAL);
//! - the target is written in one transaction (all or nothing), holding the writers'
//!   advisory lock ([`crate::sql::PG_WRITE_LOCK`]) so no node writes meanwhile;
//! - a target without a schema gets it first ([`crate::db::pg::migrate`]); a target
//!   at another schema version, or holding any row beyond what the fresh schema seeds
//!   (`meta.schema_version`, the session epoch), is refused and left as it was;
//! - tables are copied generically, in the order their foreign keys need (parents
//!   first): the columns by name, the values through the storage seam's one value model;
//! - each identity sequence is set past its table's largest id, so new rows never
//!   collide with copied ones;
//! - every table's row count is compared with the source's after the copy (a difference
//!   is an error, and nothing is committed), and the copy's own audit row
//!   (`admin.db.copy`) is written and sealed into the copied audit chain.
//!
//! The key file is not in either database: the copy is read with the source's key file.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::audit::{self, Entry};
use crate::crypto::SecretKey;
use crate::db::SCHEMA_VERSION;
use crate::error::{Error, Result};
use crate::sql::{params_from_iter, Connection, Engine, ToSql, Value};
use crate::store::audit_chain;

/// Rows sent in one INSERT.
const BATCH: usize = 100;

/// What [`copy`] copied: rows per table, and their sum.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Copied {
    pub tables: BTreeMap<String, u64>,
    pub rows: u64,
}

/// Rows a fresh PostgreSQL schema holds before anything is copied: they are not data.
/// `session_epoch`'s one row is replaced by the source's.
fn seeded(table: &str) -> Option<&'static str> {
    match table {
        "meta" => Some("key <> 'schema_version'"),
        "session_epoch" => Some("FALSE"),
        _ => None,
    }
}

/// Copy everything from `src` (SQLite) into `dst` (PostgreSQL); see the module
/// documentation. `entry` makes the copy's audit row from what was copied; it is recorded
/// in the target at `now` and sealed with `key` (the source's key file, which the copy
/// keeps).
pub fn copy(
    src: &mut Connection,
    dst: &mut Connection,
    key: &SecretKey,
    entry: impl FnOnce(&Copied) -> Entry,
    now: i64,
) -> Result<Copied> {
    if src.engine() != Engine::Sqlite || dst.engine() != Engine::Postgres {
        return Err(Error::Invalid(
            "db copy copies a SQLite database into a PostgreSQL one".into(),
        ));
    }
    let target_version = crate::db::pg::schema_version(dst)?;
    if target_version == 0 {
        crate::db::pg::migrate(dst)?;
    } else if target_version != SCHEMA_VERSION {
        return Err(Error::Invalid(format!(
            "the PostgreSQL database has schema version {target_version}, this build (and its source) {SCHEMA_VERSION}: copy with the authctl of the same build as the target's authd"
        )));
    }

    let snapshot = src.begin(false)?;
    let source_version = crate::db::schema_version(&snapshot)?;
    if source_version != SCHEMA_VERSION {
        return Err(Error::Invalid(format!(
            "the source database has schema version {source_version}, this build writes {SCHEMA_VERSION}: open it once with this build's authctl or authd first"
        )));
    }
    let tables = copy_order(&snapshot)?;

    let tx = dst.begin(true)?;
    refuse_non_empty(&tx, &tables)?;
    tx.execute("DELETE FROM session_epoch", ())?;
    // Skipped: the target's own schema version (the same, checked above).
    let mut copied = BTreeMap::new();
    for t in &tables {
        let baseline = count(&tx, t)?;
        let n = copy_table(&snapshot, &tx, t)?;
        let want = count(&snapshot, t)?
            - if t == "meta" {
                skipped_meta(&snapshot)?
            } else {
                0
            };
        let got = count(&tx, t)? - baseline;
        if n != want || got != want {
            return Err(Error::Io(format!(
                "table {t}: the source has {want} rows, {n} were read and the target holds {got}; nothing was copied"
            )));
        }
        copied.insert(t.clone(), want as u64);
    }
    reset_sequences(&tx, &tables)?;
    drop(snapshot);

    let rows = copied.values().sum();
    let copied = Copied {
        tables: copied,
        rows,
    };
    audit::record(&tx, &entry(&copied), now)?;
    // The copied rows a running authd had not sealed yet, and the copy's own.
    while audit_chain::seal(&tx, key, 10_000)? > 0 {}
    tx.commit()?;
    Ok(copied)
}

/// The tables of the source's schema, parents before the tables whose foreign keys name
/// them; `session_epoch` last (the triggers of earlier tables move the epoch).
fn copy_order(src: &Connection) -> Result<Vec<String>> {
    let names: Vec<String> = src
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )?
        .query_map((), |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    let mut parents: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for t in &names {
        let ps: BTreeSet<String> = src
            .prepare("SELECT \"table\" FROM pragma_foreign_key_list(?1)")?
            .query_map([t], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        parents.insert(t.clone(), ps.into_iter().filter(|p| p != t).collect());
    }
    let mut order: Vec<String> = Vec::with_capacity(names.len());
    while order.len() < names.len() {
        let ready: Vec<String> = names
            .iter()
            .filter(|t| !order.contains(t))
            .filter(|t| parents[*t].iter().all(|p| order.contains(p)))
            .cloned()
            .collect();
        if ready.is_empty() {
            return Err(Error::Io(
                "the source's foreign keys form a cycle; cannot order the copy".into(),
            ));
        }
        order.extend(ready);
    }
    if let Some(i) = order.iter().position(|t| t == "session_epoch") {
        let t = order.remove(i);
        order.push(t);
    }
    Ok(order)
}

/// Refuse a target holding any row beyond what a fresh schema seeds, naming where.
fn refuse_non_empty(dst: &Connection, tables: &[String]) -> Result<()> {
    let mut found = Vec::new();
    for t in tables {
        let filter = seeded(t).unwrap_or("TRUE");
        let n: i64 = dst.query_row(
            &format!("SELECT count(*) FROM {} WHERE {filter}", quote(t)),
            (),
            |r| r.get(0),
        )?;
        if n > 0 {
            found.push(format!("{t}: {n}"));
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    Err(Error::Conflict(format!(
        "the PostgreSQL database is not empty ({}); db copy only fills an empty database, nothing was changed",
        found.join(", ")
    )))
}

/// The source's `meta` rows the copy leaves out (its schema version, if it records one).
fn skipped_meta(src: &Connection) -> Result<i64> {
    Ok(src.query_row(
        "SELECT count(*) FROM meta WHERE key = 'schema_version'",
        (),
        |r| r.get(0),
    )?)
}

fn count(conn: &Connection, table: &str) -> Result<i64> {
    Ok(
        conn.query_row(&format!("SELECT count(*) FROM {}", quote(table)), (), |r| {
            r.get(0)
        })?,
    )
}

/// A name as an SQL identifier (both engines take double quotes).
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Copy one table's rows in batches; how many were read.
fn copy_table(src: &Connection, dst: &Connection, table: &str) -> Result<i64> {
    let columns: Vec<String> = src
        .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?
        .query_map([table], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    let list = columns
        .iter()
        .map(|c| quote(c))
        .collect::<Vec<_>>()
        .join(", ");
    let filter = if table == "meta" {
        " WHERE key <> 'schema_version'"
    } else {
        ""
    };
    let mut select = src.prepare(&format!("SELECT {list} FROM {}{filter}", quote(table)))?;
    let mut rows = select.query(())?;
    let mut batch: Vec<Value> = Vec::with_capacity(BATCH * columns.len());
    let mut n = 0i64;
    while let Some(r) = rows.next()? {
        for i in 0..columns.len() {
            batch.push(r.get::<Value>(i)?);
        }
        n += 1;
        if batch.len() == BATCH * columns.len() {
            insert(dst, table, &list, columns.len(), &batch)?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        insert(dst, table, &list, columns.len(), &batch)?;
    }
    Ok(n)
}

/// One multi-row INSERT of `values` (whole rows of `width` columns).
fn insert(dst: &Connection, table: &str, list: &str, width: usize, values: &[Value]) -> Result<()> {
    let rows = (0..values.len() / width)
        .map(|r| {
            let ps: Vec<String> = (1..=width).map(|c| format!("?{}", r * width + c)).collect();
            format!("({})", ps.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ");
    dst.execute(
        &format!("INSERT INTO {} ({list}) VALUES {rows}", quote(table)),
        params_from_iter(values.iter().map(|v| v as &dyn ToSql)),
    )?;
    Ok(())
}

/// Set every identity sequence past its table's largest id (the copy gave explicit ids,
/// which do not move a sequence).
fn reset_sequences(dst: &Connection, tables: &[String]) -> Result<()> {
    for t in tables {
        let identity: Vec<String> = dst
            .prepare(
                "SELECT column_name::text FROM information_schema.columns
                  WHERE table_schema = current_schema() AND table_name::text = ?1 AND is_identity = 'YES'",
            )?
            .query_map([t], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        for c in identity {
            let q = quote(&c);
            dst.query_row(
                &format!(
                    "SELECT setval(pg_get_serial_sequence(?1, ?2), (SELECT coalesce(max({q}), 0) + 1 FROM {}), false)",
                    quote(t)
                ),
                [t.as_str(), c.as_str()],
                |r| r.get::<i64>(0),
            )?;
        }
    }
    Ok(())
}

/// What [`crate::Core::db_copy`] did: the rows copied and where.
#[derive(Debug, Clone, Serialize)]
pub struct DbCopy {
    #[serde(flatten)]
    pub copied: Copied,
    /// The target, without its password.
    pub to: String,
    /// The key file the copy is read with (the source's): authd on the copy needs it.
    pub key_file: String,
}

impl crate::Core {
    /// `authctl db copy --to URL`: this core's SQLite database copied into the empty
    /// PostgreSQL database at `url` ([`copy`]), audited `admin.db.copy` in the copy. For
    /// operators; `key_file` is the key file the core was opened with.
    pub fn db_copy(
        &self,
        actor: &crate::admin::Actor,
        url: &str,
        key_file: &std::path::Path,
    ) -> Result<DbCopy> {
        crate::ops::require_global(actor)?;
        if !crate::sql::is_postgres_url(url) {
            return Err(Error::Invalid(format!(
                "--to takes a PostgreSQL URL (postgres://user@host:port/dbname), not {url:?}"
            )));
        }
        if crate::db::postgres_url(self.path()).is_some() {
            return Err(Error::Invalid(
                "the source (--db) is PostgreSQL already: db copy moves a SQLite database into PostgreSQL".into(),
            ));
        }
        let mut dst = crate::db::pg::connect(url)?;
        let to = crate::sql::redact_url(url);
        let from = self.path().display().to_string();
        let entry = |c: &Copied| {
            actor
                .entry(
                    crate::kinds::AuditEvent::AdminDbCopy,
                    audit::Outcome::Success,
                )
                .detail(actor.detail(serde_json::json!({
                    "from": from,
                    "to": to,
                    "tables": c.tables.len(),
                    "rows": c.rows,
                })))
        };
        let now = self.now();
        let copied = self.with_conn(|src, key| copy(src, &mut dst, key, entry, now))?;
        Ok(DbCopy {
            copied,
            to,
            key_file: key_file.display().to_string(),
        })
    }
}
