//! Opening a PostgreSQL database (issue 13): connecting, the schema (`schema.postgres.sql`,
//! applied under a session advisory lock so nodes starting together do not race), and
//! the key file, which never enters the database: every node is given a copy.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::sql::{redact_url, Connection, OptionalExtension};

/// The whole schema at [`SCHEMA_VERSION`] (the same tables as SQLite's `schema.sql` with
/// every migration; `tests/it/pg.rs` compares them).
pub const SCHEMA: &str = include_str!("../../schema.postgres.sql");

/// Schema changes after the first PostgreSQL schema: `MIGRATIONS[i]` takes version
/// `FIRST_VERSION + i` to the next. Each SQLite migration from here on has its
/// PostgreSQL twin here (`migrations/postgres/`), and `schema.postgres.sql` ends with the
/// same statements, so a new database is created at [`SCHEMA_VERSION`] at once.
pub(crate) const MIGRATIONS: &[&str] =
    &[include_str!("../../migrations/postgres/0009_totp_apps.sql")];

/// The first PostgreSQL schema version (the oldest a database can be migrated from).
const FIRST_VERSION: i64 = 8;

/// The schema version this build writes (the same as SQLite's: `db::tests` checks).
pub const SCHEMA_VERSION: i64 = FIRST_VERSION + MIGRATIONS.len() as i64;

/// The session-level advisory lock held while the schema is created or migrated.
const MIGRATE_LOCK: i64 = 0x6175_7468_6401;

/// How long connecting may take before the database counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connect; an unreachable server is a clear error naming it (without its password).
pub fn connect(url: &str) -> Result<Connection> {
    Connection::postgres(url, CONNECT_TIMEOUT).map_err(|e| {
        Error::Unavailable(format!(
            "cannot connect to PostgreSQL at {}: {e}",
            redact_url(url)
        ))
    })
}

/// The schema version recorded in `meta`; 0 when the database has no authd schema.
pub fn schema_version(conn: &Connection) -> Result<i64> {
    let has_meta: bool =
        conn.query_row("SELECT to_regclass('meta') IS NOT NULL", (), |r| r.get(0))?;
    if !has_meta {
        return Ok(0);
    }
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key='schema_version'",
            (),
            |r| r.get(0),
        )
        .optional()?;
    match v {
        None => Ok(0),
        Some(v) => v.parse().map_err(|_| {
            Error::Invalid(format!(
                "the database's schema version '{v}' is not a number"
            ))
        }),
    }
}

/// Bring the schema to [`SCHEMA_VERSION`]: a database without tables gets the whole
/// schema; one with other tables is refused; an older authd schema is migrated; a newer
/// one is refused. Holds [`MIGRATE_LOCK`] meanwhile: a node starting at the same time
/// waits, then finds the schema current.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let v = schema_version(conn)?;
    if v == SCHEMA_VERSION {
        return Ok(());
    }
    refuse_newer(v)?;
    conn.execute_batch(&format!("SELECT pg_advisory_lock({MIGRATE_LOCK})"))?;
    let r = migrate_locked(conn);
    let unlocked = conn.execute_batch(&format!("SELECT pg_advisory_unlock({MIGRATE_LOCK})"));
    r?;
    unlocked?;
    conn.flush_prepared_statement_cache();
    Ok(())
}

fn refuse_newer(v: i64) -> Result<()> {
    if v > SCHEMA_VERSION {
        return Err(Error::Invalid(format!(
            "the database has schema version {v}, newer than this build understands ({SCHEMA_VERSION}); upgrade authd"
        )));
    }
    Ok(())
}

fn migrate_locked(conn: &mut Connection) -> Result<()> {
    let v = schema_version(conn)?;
    refuse_newer(v)?;
    if v == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.begin(false)?;
    if v == 0 {
        refuse_foreign(&tx)?;
        tx.execute_batch(SCHEMA)?;
    } else if v < FIRST_VERSION {
        return Err(Error::Invalid(format!(
            "the database has schema version {v}, older than PostgreSQL support ({FIRST_VERSION}): copy the site with `authctl db copy` from SQLite instead"
        )));
    } else {
        for step in &MIGRATIONS[(v - FIRST_VERSION) as usize..] {
            tx.execute_batch(step)?;
        }
        tx.execute(
            "UPDATE meta SET value=?1 WHERE key='schema_version'",
            [SCHEMA_VERSION.to_string()],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// A database with tables that are not authd's is not ours to take over.
fn refuse_foreign(conn: &Connection) -> Result<()> {
    let tables: i64 = conn.query_row(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
        (),
        |r| r.get(0),
    )?;
    if tables > 0 {
        return Err(Error::Invalid(
            "the PostgreSQL database has tables, but not an authd schema; give authd a database of its own".into(),
        ));
    }
    Ok(())
}

/// Open an authd database on PostgreSQL; one without the schema is refused when
/// `refuse_blank` (authctl: only `init` creates), else given it.
pub fn open(url: &str, refuse_blank: bool) -> Result<Connection> {
    let mut conn = connect(url)?;
    if refuse_blank && schema_version(&conn)? == 0 {
        return Err(Error::Invalid(format!(
            "the PostgreSQL database at {} holds no authd schema; nothing was changed (`authctl init --db URL` creates it)",
            redact_url(url)
        )));
    }
    migrate(&mut conn)?;
    Ok(conn)
}

/// How many key check values the database holds (0: no key made it yet).
pub fn known_keys(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT count(*) FROM meta WHERE key='key_check' OR key LIKE 'key_check.%'",
        (),
        |r| r.get(0),
    )?)
}

/// `authctl init --db postgres://…`: the database must hold no authd schema yet; it gets
/// the schema (the caller makes the key file).
pub fn create(url: &str) -> Result<Connection> {
    let mut conn = connect(url)?;
    if schema_version(&conn)? != 0 {
        return Err(Error::Conflict(format!(
            "the PostgreSQL database at {} already holds an authd database; refusing to overwrite it",
            redact_url(url)
        )));
    }
    migrate(&mut conn)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_postgres_schema_is_at_this_builds_version() {
        let line = SCHEMA
            .lines()
            .find(|l| l.contains("'schema_version'"))
            .expect("the schema records its version");
        assert!(
            line.contains(&format!("'{SCHEMA_VERSION}'")),
            "schema.postgres.sql records {line:?}; this build expects {SCHEMA_VERSION}"
        );
    }
}
