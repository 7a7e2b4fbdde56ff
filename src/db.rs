//! Opening the database: pragmas, schema, migrations, and the key file check.
//!
//! The schema lives in `schema.sql`, embedded in the binary and applied when
//! `PRAGMA user_version` is 0. Each later change is one more entry in [`MIGRATIONS`],
//! applied in order inside one transaction; a shipped step is never edited.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::OpenFlags;

use crate::sql::{params, Connection, Engine};

use crate::crypto::{self, SecretKey};

pub mod pg;
use crate::error::{Error, Result};

pub const SCHEMA: &str = include_str!("../schema.sql");

/// Migration steps after the base schema: `MIGRATIONS[i]` takes user_version i+1 to i+2.
pub const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0002_session_epoch.sql"),
    include_str!("../migrations/0003_audit_chain.sql"),
    include_str!("../migrations/0004_smart_lockout.sql"),
    include_str!("../migrations/0005_passkeys.sql"),
    include_str!("../migrations/0006_oidc.sql"),
    include_str!("../migrations/0007_account_safety.sql"),
    include_str!("../migrations/0008_oidc_alg.sql"),
    include_str!("../migrations/0009_totp_apps.sql"),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 1 + MIGRATIONS.len() as i64;

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A database path and its key file path.
#[derive(Debug, Clone)]
pub struct Location {
    pub db: PathBuf,
    pub key: PathBuf,
}

impl Location {
    /// `key` None: beside a SQLite file (`DB.key`); none at all for PostgreSQL, where
    /// the key file must be named (see [`require_key_file`]).
    pub fn new(db: impl Into<PathBuf>, key: Option<PathBuf>) -> Location {
        let db = db.into();
        let key = key.unwrap_or_else(|| match postgres_url(&db) {
            Some(_) => PathBuf::new(),
            None => crypto::default_key_path(&db),
        });
        Location { db, key }
    }
}

/// Prepared statements kept per connection: every statement of the login steps and the
/// session check fits (rusqlite's default of 16 does not, and a miss recompiles).
const STATEMENT_CACHE: usize = 128;

fn configure(conn: &rusqlite::Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Query-planner stability: plans never depend on bound values. Without it SQLite
    // (3.47 and later) marks a join keyed by a parameter as "reprepare on rebind", and
    // rusqlite's statement cache clears the bindings of every statement it takes back,
    // so each use of such a cached statement (the user lookup of every login step)
    // recompiled it: 40-50 µs a step.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    // journal_mode returns a row; a read-only file keeps its mode.
    let _: String = conn.query_row("PRAGMA journal_mode=WAL", (), |r| r.get(0))?;
    conn.execute_batch(
        "PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL; PRAGMA trusted_schema=OFF;",
    )?;
    Ok(())
}

fn user_version(conn: &Connection) -> Result<i64> {
    match conn.engine() {
        Engine::Sqlite => Ok(conn.query_row("PRAGMA user_version", (), |r| r.get(0))?),
        Engine::Postgres => pg::schema_version(conn),
    }
}

fn lite_user_version(conn: &rusqlite::Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA user_version", (), |r| r.get(0))?)
}

/// Whether `conn` can only read (SQLite: a file opened read-only).
pub fn is_read_only(conn: &Connection) -> bool {
    match conn.lite() {
        Some(c) => c.is_readonly(rusqlite::MAIN_DB).unwrap_or(true),
        None => false,
    }
}

/// The session epoch: moves whenever something a session check answers from changes
/// (kept by triggers; see migrations/0002_session_epoch.sql).
pub fn session_epoch(conn: &Connection) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT n FROM session_epoch WHERE id = 1")?
        .query_row((), |r| r.get(0))?)
}

/// Bring the schema up to [`SCHEMA_VERSION`].
pub fn migrate(conn: &mut Connection) -> Result<()> {
    match conn.lite_mut() {
        Some(c) => migrate_sqlite(c),
        None => pg::migrate(conn),
    }
}

fn migrate_sqlite(conn: &mut rusqlite::Connection) -> Result<()> {
    let v = lite_user_version(conn)?;
    if v == SCHEMA_VERSION {
        return Ok(());
    }
    if v > SCHEMA_VERSION {
        return Err(Error::Invalid(format!(
            "the database has schema version {v}, newer than this build understands ({SCHEMA_VERSION}); upgrade authd"
        )));
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let v = lite_user_version(&tx)?;
    if v == 0 {
        refuse_foreign(&tx)?;
        tx.execute_batch(SCHEMA)?;
    }
    for step in MIGRATIONS.iter().skip((v.max(1) - 1) as usize) {
        tx.execute_batch(step)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// The meta row holding key `id`'s check value (key 1's is the row of the first format).
pub(crate) fn key_check_name(id: crypto::KeyId) -> String {
    if id == 1 {
        "key_check".to_string()
    } else {
        format!("key_check.{id}")
    }
}

/// Every key in the ring that this database knows (its check value stored by `init` or
/// `authctl key rotate`) must match it, and at least one must be known; keys newer than
/// the database (a backup restored beside a later key file) are learnt; a fresh database
/// learns its first key here. The error names the key that does not belong.
pub fn check_key(conn: &Connection, key: &SecretKey, key_path: &Path) -> Result<()> {
    // Every check value in one statement (each command of authctl opens with this check).
    let stored: Vec<(String, String)> = conn
        .prepare("SELECT key, value FROM meta WHERE key='key_check' OR key LIKE 'key_check.%'")?
        .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<crate::sql::Result<_>>()?;
    let known = stored.len();
    let mut unknown = Vec::new();
    for id in key.ids() {
        let want = key.check_value_of(id).expect("the ring holds its ids");
        let name = key_check_name(id);
        match stored.iter().find(|(k, _)| *k == name).map(|(_, v)| v) {
            Some(s) if crypto::ct_eq(s.as_bytes(), want.as_bytes()) => {}
            Some(_) => {
                return Err(Error::Key(format!(
                    "key {id} of the key file {} does not belong to this database",
                    key_path.display()
                )))
            }
            None if known == 0 => {
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES (?1, ?2)",
                    params![key_check_name(id), want],
                )?;
            }
            None => unknown.push((id, want)),
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    if unknown.len() == key.ids().len() {
        return Err(Error::Key(format!(
            "no key of the key file {} belongs to this database (key {} is not one it knows; keys are added with `authctl key rotate`)",
            key_path.display(),
            unknown[0].0
        )));
    }
    // Some keys belong and the others are newer than this database: a backup from before
    // a rotation, restored beside today's key file. They are learnt (not on a read-only
    // connection: `authd check-config` only looks).
    for (id, want) in unknown {
        if is_read_only(conn) {
            break;
        }
        conn.execute(
            "INSERT INTO meta(key, value) VALUES (?1, ?2)",
            params![key_check_name(id), want],
        )?;
    }
    Ok(())
}

/// Register key `id` of `key` (a key `authctl key rotate` is adding) in the database.
pub fn register_key(conn: &Connection, key: &SecretKey, id: crypto::KeyId) -> Result<()> {
    let want = key
        .check_value_of(id)
        .ok_or_else(|| Error::Key(format!("the ring holds no key {id}")))?;
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)",
        params![key_check_name(id), want],
    )?;
    Ok(())
}

/// Create a new database and its key file. Refuses to overwrite either.
pub fn create(loc: &Location) -> Result<(Connection, SecretKey)> {
    if let Some(url) = postgres_url(&loc.db) {
        require_key_file(&loc.key)?;
        refuse_existing_key_file(&loc.key)?;
        let conn = pg::create(url)?;
        let key = SecretKey::create_file(&loc.key)?;
        check_key(&conn, &key, &loc.key)?;
        return Ok((conn, key));
    }
    if let Ok(meta) = std::fs::metadata(&loc.db) {
        // Even an empty file is not ours to take over: it may be a truncated database,
        // or a file some other program is about to write.
        let empty = if meta.len() == 0 {
            " (an empty file: remove it first to create a database there)"
        } else {
            ""
        };
        return Err(Error::Conflict(format!(
            "{} already exists{empty}; refusing to overwrite it",
            loc.db.display()
        )));
    }
    refuse_existing_key_file(&loc.key)?;
    let conn = rusqlite::Connection::open_with_flags(
        &loc.db,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| Error::Io(format!("cannot create {}: {e}", loc.db.display())))?;
    configure(&conn)?;
    let mut conn = Connection::sqlite(conn);
    migrate(&mut conn)?;
    let key = SecretKey::create_file(&loc.key)?;
    check_key(&conn, &key, &loc.key)?;
    Ok((conn, key))
}

/// What opening does with an existing file that holds no authd schema yet (zero bytes,
/// or an SQLite file without tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blank {
    /// Give it the schema: authd takes such a file as its database.
    Initialise,
    /// Refuse it and leave it as it is: only `authctl init` creates a database, so an
    /// admin command run on the wrong (or a truncated) file says so instead of silently
    /// making a fresh, empty database there.
    Refuse,
}

/// Open an existing database file (never creates a missing one), configure it and
/// migrate it. A blank file gets the schema (see [`Blank`]); authctl uses
/// [`open_initialised`].
pub fn open(path: &Path) -> Result<Connection> {
    open_with(path, Blank::Initialise)
}

/// Open an existing authd database, refusing a blank file (zero bytes, or SQLite without
/// the schema) without writing to it: what every authctl command but `init` uses.
pub fn open_initialised(path: &Path) -> Result<Connection> {
    open_with(path, Blank::Refuse)
}

/// The refusal of a blank file by [`Blank::Refuse`].
fn blank_refused(path: &Path, what: &str) -> Error {
    Error::Invalid(format!(
        "{} is {what}, not an authd database; nothing was changed (`authctl init` creates a database: remove the file first, or pass --db)",
        path.display()
    ))
}

/// Open an existing database file, treating a blank one as `blank` says.
pub fn open_with(path: &Path, blank: Blank) -> Result<Connection> {
    if let Some(url) = postgres_url(path) {
        return pg::open(url, blank == Blank::Refuse);
    }
    // (As Path::exists: a file we cannot even look at is not there.)
    let Ok(meta) = std::fs::metadata(path) else {
        return Err(Error::NotFound(format!(
            "no database at {} (create one with `authctl init`, or pass --db)",
            path.display()
        )));
    };
    // Checked before SQLite sees the file, so that nothing (not even -wal or -shm files)
    // is created beside it.
    if blank == Blank::Refuse && meta.len() == 0 {
        return Err(blank_refused(path, "an empty file (0 bytes)"));
    }
    open_file(path, blank)
}

fn open_file(path: &Path, blank: Blank) -> Result<Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .or_else(|_| rusqlite::Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY))
    .map_err(|e| {
        describe(
            path,
            Error::Io(format!("cannot open {}: {e}", path.display())),
        )
    })?;
    if blank == Blank::Refuse {
        // Before configure(): switching to WAL would already write to the file.
        conn.busy_timeout(BUSY_TIMEOUT)?;
        refuse_blank(&conn, path).map_err(|e| describe(path, e))?;
    }
    configure(&conn).map_err(|e| describe(path, e))?;
    let mut conn = Connection::sqlite(conn);
    migrate(&mut conn).map_err(|e| describe(path, e))?;
    Ok(conn)
}

/// The key file must not exist yet (creating a database never overwrites one).
fn refuse_existing_key_file(key: &Path) -> Result<()> {
    if key.exists() {
        return Err(Error::Conflict(format!(
            "the key file {} already exists; refusing to overwrite it",
            key.display()
        )));
    }
    Ok(())
}

/// authd's start on PostgreSQL: the schema is made or migrated; the key file is loaded
/// and checked. It is made only for a database no key has been registered with yet: a
/// node that finds keys registered and no key file refuses to start (copy the file from
/// the node that made it).
fn open_or_create_postgres(url: &str, key_path: &Path) -> Result<(Connection, SecretKey)> {
    require_key_file(key_path)?;
    let conn = pg::open(url, false)?;
    if key_path.exists() {
        let key = load_key(&conn, key_path)?;
        return Ok((conn, key));
    }
    if pg::known_keys(&conn)? > 0 {
        return Err(Error::Key(format!(
            "the key file {} is missing, and the PostgreSQL database already belongs to a key: copy the key file from the node that made it",
            key_path.display()
        )));
    }
    let key = SecretKey::create_file(key_path)?;
    check_key(&conn, &key, key_path)?;
    Ok((conn, key))
}

/// With PostgreSQL the key file is always named (`--key-file`, `AUTHD_KEY_FILE`,
/// `AUTHCTL_KEY_FILE`): there is no file beside the database to put it in, and the key
/// never enters the database.
pub fn require_key_file(key_path: &Path) -> Result<()> {
    if key_path.as_os_str().is_empty() {
        return Err(Error::Invalid(
            "with a PostgreSQL database the key file must be named: pass --key-file (the key never enters the database; every node needs a copy)".into(),
        ));
    }
    Ok(())
}

/// The PostgreSQL URL when `db` names one (see [`crate::sql::Target`]).
pub fn postgres_url(db: &Path) -> Option<&str> {
    db.to_str().filter(|s| crate::sql::is_postgres_url(s))
}

/// Refuse a file with no authd schema (user_version 0), reading only.
fn refuse_blank(conn: &rusqlite::Connection, path: &Path) -> Result<()> {
    if lite_user_version(conn)? != 0 {
        return Ok(());
    }
    refuse_foreign(conn)?;
    Err(blank_refused(path, "an empty SQLite file"))
}

/// A database someone else made (tables, but no authd schema) is not ours to take over.
fn refuse_foreign(conn: &rusqlite::Connection) -> Result<()> {
    let tables: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type='table'",
        (),
        |r| r.get(0),
    )?;
    if tables > 0 {
        return Err(Error::Invalid(
            "the file is an SQLite database, but not an authd one".into(),
        ));
    }
    Ok(())
}

/// Whether the file or its directory cannot be written (read-only file system or modes):
/// SQLite in WAL mode needs both.
fn read_only(path: &Path) -> bool {
    use nix::unistd::{access, AccessFlags};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    access(path, AccessFlags::W_OK).is_err() || access(dir, AccessFlags::W_OK).is_err()
}

fn describe(path: &Path, e: Error) -> Error {
    if matches!(e, Error::Io(_) | Error::Db(_) | Error::Unavailable(_)) && read_only(path) {
        return Error::Unavailable(format!(
            "the database {} is read-only (the file or its directory cannot be written); nothing was changed",
            path.display()
        ));
    }
    match e {
        Error::Invalid(m) if m.starts_with("the file") => {
            Error::Invalid(format!("{}: {m}", path.display()))
        }
        e => e,
    }
}

/// What [`inspect`] learns of a database and its key file.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// `PRAGMA user_version`: 0 for a blank file (authd initialises it).
    pub schema_version: i64,
    /// The key file's keys and its current one (None for a blank file: not checked).
    pub keys: Option<(Vec<crypto::KeyId>, crypto::KeyId)>,
}

/// Look at an existing database and its key file without changing either (read-only: no
/// WAL switch, no migration, no key registration): its schema version, and that the key
/// file belongs to it. For `authd check-config`.
pub fn inspect(path: &Path, key_path: &Path) -> Result<Inspection> {
    let conn = match postgres_url(path) {
        Some(url) => pg::connect(url)?,
        None => {
            let c = rusqlite::Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|e| Error::Io(format!("cannot open {}: {e}", path.display())))?;
            c.busy_timeout(BUSY_TIMEOUT)?;
            Connection::sqlite(c)
        }
    };
    let schema_version = user_version(&conn)?;
    if schema_version == 0 {
        if let Some(c) = conn.lite() {
            refuse_foreign(c).map_err(|e| describe(path, e))?;
        }
        return Ok(Inspection {
            schema_version,
            keys: None,
        });
    }
    let key = SecretKey::load_file(key_path)?;
    check_key(&conn, &key, key_path)?;
    Ok(Inspection {
        schema_version,
        keys: Some((key.ids(), key.current_id())),
    })
}

/// Load the key file and check it belongs to this database.
pub fn load_key(conn: &Connection, key_path: &Path) -> Result<SecretKey> {
    require_key_file(key_path)?;
    let key = SecretKey::load_file(key_path)?;
    check_key(conn, &key, key_path)?;
    Ok(key)
}

/// Open the database, creating it (and its key file) when missing. For the daemon.
pub fn open_or_create(loc: &Location) -> Result<(Connection, SecretKey)> {
    if let Some(url) = postgres_url(&loc.db) {
        return open_or_create_postgres(url, &loc.key);
    }
    if loc.db.exists() {
        let conn = open(&loc.db)?;
        let key = load_key(&conn, &loc.key)?;
        Ok((conn, key))
    } else {
        create(loc)
    }
}

/// An in-memory database for tests.
pub fn open_memory() -> Result<Connection> {
    let conn = rusqlite::Connection::open_in_memory()?;
    conn.execute_batch("PRAGMA foreign_keys=ON;")?;
    let mut conn = Connection::sqlite(conn);
    migrate(&mut conn)?;
    Ok(conn)
}

/// Begin an immediate (write-locking) transaction: concurrent writers queue on the
/// busy timeout instead of failing on lock upgrade. Rolls back on drop.
///
/// Writers of one process to one file take turns first (see [`WriteTx`]): parked
/// threads are woken in order as each transaction ends, where SQLite's busy handler
/// would sleep 1, 2, 5, 10… ms between retries and leave the lock idle meanwhile.
/// Other processes (authctl next to authd) still meet at SQLite's lock.
pub fn write_tx(conn: &mut Connection) -> Result<WriteTx<'_>> {
    if !conn.is_autocommit() {
        // Inside a group of writes already holding the lock (see [`batch`]): this
        // transaction is a savepoint of the group, released or rolled back on its own.
        return Ok(WriteTx {
            tx: Tx::Nested(conn.savepoint()?),
            _turn: None,
        });
    }
    let turn = take_turn(conn)?;
    let started = std::time::Instant::now();
    let tx = conn
        .begin(true)
        .map_err(|e| busy_seen(turn.as_ref(), started, e))?;
    Ok(WriteTx {
        tx: Tx::Top(tx),
        _turn: turn,
    })
}

/// This process's writer turn for `conn`'s file, waited for at most the busy timeout.
/// A writer that gets it within a second of another failing to lock the database (held
/// by another process past the busy timeout) fails at once, as does one that waited the
/// whole busy timeout: behind a stuck lock, queued writers all answer "busy" after one
/// busy timeout instead of one busy timeout after another.
fn take_turn(conn: &Connection) -> Result<Option<TurnGuard>> {
    let Some(turn) = writer_turn(conn) else {
        return Ok(None);
    };
    match turn.take(BUSY_TIMEOUT) {
        Some(g) if !turn.recently_busy() => Ok(Some(g)),
        _ => Err(Error::from(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("the database is locked by another process".into()),
        ))),
    }
}

/// Note a lock failure on the turn's file (see [`take_turn`]) when the attempt begun at
/// `started` waited out SQLite's busy handling (a lock held by another process, not a
/// passing collision); hand the error on.
fn busy_seen(turn: Option<&TurnGuard>, started: std::time::Instant, e: crate::sql::Error) -> Error {
    if let (
        Some(t),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked),
    ) = (turn, e.sqlite_code())
    {
        if started.elapsed() < BUSY_FAIL_FAST {
            return Error::from(e);
        }
        t.0.mark_busy();
    }
    Error::from(e)
}

/// How long after a lock failure other writers of the process fail without trying.
const BUSY_FAIL_FAST: Duration = Duration::from_secs(1);

/// One file's writer turn: held by one writer of the process at a time, handed on in the
/// order the writers asked for it. First come, first served: a writer that takes the turn
/// again and again (the background thread sealing a backlog of audit rows, one short
/// transaction after another) cannot keep a login step waiting for more than one of its
/// transactions. (A bare lock let the writer that had just let go take it back before a
/// woken waiter ran: at 10 M unsealed rows, password steps waited seconds.)
struct Turn {
    queue: std::sync::Mutex<Queue>,
    free: std::sync::Condvar,
    /// When a holder last failed to lock the database (None: never).
    busy_at: std::sync::Mutex<Option<std::time::Instant>>,
}

/// A held turn; dropping it passes the turn on.
pub struct TurnGuard(&'static Turn);

/// Who holds a turn and who waits for it, in order.
#[derive(Default)]
struct Queue {
    held: bool,
    /// Tickets of the waiting writers, oldest first.
    waiting: std::collections::VecDeque<u64>,
    next_ticket: u64,
}

impl Turn {
    fn take(&'static self, timeout: Duration) -> Option<TurnGuard> {
        let deadline = std::time::Instant::now() + timeout;
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if !q.held && q.waiting.is_empty() {
            q.held = true;
            return Some(TurnGuard(self));
        }
        let ticket = q.next_ticket;
        q.next_ticket = q.next_ticket.wrapping_add(1);
        q.waiting.push_back(ticket);
        loop {
            if !q.held && q.waiting.front() == Some(&ticket) {
                q.waiting.pop_front();
                q.held = true;
                return Some(TurnGuard(self));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                // Out of line; the next one may be first now.
                q.waiting.retain(|t| *t != ticket);
                drop(q);
                self.free.notify_all();
                return None;
            }
            q = self
                .free
                .wait_timeout(q, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn mark_busy(&self) {
        *self.busy_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
    }

    fn recently_busy(&self) -> bool {
        self.busy_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < BUSY_FAIL_FAST)
    }
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        self.0.queue.lock().unwrap_or_else(|e| e.into_inner()).held = false;
        // Every waiter looks; the first in line takes it.
        self.0.free.notify_all();
    }
}

/// Run `run` inside one immediate transaction holding the writer turn, so that the
/// transactions it opens with [`write_tx`] become savepoints and all of them reach the
/// disk in one commit (group commit). The outer error means the transaction could not
/// begin and `run` never ran; otherwise `run`'s value comes back with the commit's
/// outcome: when the commit fails, nothing `run` did was kept. A panic in `run` rolls
/// everything back and continues unwinding.
pub fn batch<R>(
    conn: &mut Connection,
    run: impl FnOnce(&mut Connection) -> R,
) -> Result<(R, Result<()>)> {
    let turn = take_turn(conn)?;
    let started = std::time::Instant::now();
    conn.execute_batch(crate::sql::begin_write_sql(conn.engine()))
        .map_err(|e| busy_seen(turn.as_ref(), started, e))?;
    let rollback = |conn: &Connection| {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
    };
    let r = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(conn))) {
        Ok(r) => r,
        Err(panic) => {
            rollback(conn);
            std::panic::resume_unwind(panic)
        }
    };
    if conn.is_autocommit() {
        // Something in `run` ended the transaction (SQLite rolls back by itself on some
        // I/O errors): whatever it did is gone.
        return Ok((
            r,
            Err(Error::Io("the group of writes was rolled back".into())),
        ));
    }
    let committed = conn.execute_batch("COMMIT").map_err(Error::from);
    if committed.is_err() {
        rollback(conn);
    }
    Ok((r, committed))
}

/// For a single write statement outside any transaction: this process's writer turn for
/// the file, held until the guard drops. None inside a transaction (whose writer already
/// holds the turn, or is a group's savepoint) and for in-memory databases.
pub fn writer_turn_outside_tx(conn: &Connection) -> Option<TurnGuard> {
    if !conn.is_autocommit() {
        return None;
    }
    // Not had in time: the statement meets SQLite's own busy handling instead.
    writer_turn(conn).and_then(|t| t.take(BUSY_TIMEOUT))
}

/// The writer turn of the file `conn` is open on; None for in-memory databases (one
/// connection each, nobody to take turns with). A turn lives as long as the process:
/// one small allocation per database file ever written.
fn writer_turn(conn: &Connection) -> Option<&'static Turn> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static TURNS: OnceLock<Mutex<HashMap<PathBuf, &'static Turn>>> = OnceLock::new();
    let path = conn.path().filter(|p| !p.is_empty())?;
    let mut turns = TURNS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(t) = turns.get(Path::new(path)) {
        return Some(*t);
    }
    let t: &'static Turn = Box::leak(Box::new(Turn {
        queue: Mutex::new(Queue::default()),
        free: std::sync::Condvar::new(),
        busy_at: Mutex::new(None),
    }));
    turns.insert(PathBuf::from(path), t);
    Some(t)
}

/// A write transaction holding this process's writer turn for its file until it ends.
/// Derefs to the connection; rolls back on drop unless committed.
pub struct WriteTx<'c> {
    // Declared first: the transaction ends (commit or rollback) before the turn passes.
    tx: Tx<'c>,
    _turn: Option<TurnGuard>,
}

enum Tx<'c> {
    Top(crate::sql::Transaction<'c>),
    Nested(crate::sql::Savepoint<'c>),
}

impl std::ops::Deref for WriteTx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match &self.tx {
            Tx::Top(t) => t,
            Tx::Nested(s) => s,
        }
    }
}

impl WriteTx<'_> {
    pub fn commit(self) -> crate::sql::Result<()> {
        let WriteTx { tx, _turn } = self;
        match tx {
            Tx::Top(t) => t.commit(),
            Tx::Nested(s) => s.commit(),
        }
    }

    /// A savepoint inside this transaction.
    pub fn savepoint(&mut self) -> crate::sql::Result<crate::sql::Savepoint<'_>> {
        match &mut self.tx {
            Tx::Top(t) => t.savepoint(),
            Tx::Nested(s) => s.savepoint(),
        }
    }
}

/// Stop this connection from checkpointing the WAL when its commits grow it past the
/// threshold: the daemon's request connections leave that fsync-heavy work to one
/// background thread calling [`checkpoint`].
pub fn defer_checkpoints(conn: &Connection) -> Result<()> {
    if conn.engine() == Engine::Postgres {
        return Ok(());
    }
    let _: i64 = conn.query_row("PRAGMA wal_autocheckpoint=0", (), |r| r.get(0))?;
    Ok(())
}

/// Make `conn` refuse every write for as long as it lives (a read-only core's
/// connections): SQLite's `query_only`, PostgreSQL's read-only transactions. A write
/// then fails with the engine's error (SQLite: "attempt to write a readonly database")
/// and changes nothing.
pub fn forbid_writes(conn: &Connection) -> Result<()> {
    Ok(conn.execute_batch(match conn.engine() {
        Engine::Sqlite => "PRAGMA query_only=ON",
        Engine::Postgres => "SET default_transaction_read_only = on",
    })?)
}

/// The group-commit writer's connection: checkpoints deferred (above), and statement
/// journals kept in memory. Every step of a group runs in a savepoint of the group's
/// transaction, so SQLite keeps a statement journal of the pages a step changes; past its
/// 64 KiB spill size that journal went to a temporary file (opened and closed once per
/// group), and those `pwrite`s were a third of the writer thread's time at 256 clients.
/// `temp_store=MEMORY` keeps it in memory (it is dropped at each commit); it also puts
/// this connection's temporary tables and sorts in memory, which the short steps never
/// need.
pub fn open_group_writer(path: &Path) -> Result<Connection> {
    let conn = open(path)?;
    defer_checkpoints(&conn)?;
    if conn.engine() == Engine::Sqlite {
        conn.execute_batch("PRAGMA temp_store=MEMORY")?;
    }
    Ok(conn)
}

/// Empty the WAL into the database file and truncate it (on a clean stop: the next start,
/// or a copy of the main file alone, finds nothing waiting in the WAL).
pub fn truncate_wal(conn: &Connection) -> Result<()> {
    if conn.engine() == Engine::Postgres {
        return Ok(());
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    Ok(())
}

/// A cheap read that proves the database answers (health checks).
pub fn ping(conn: &Connection) -> Result<()> {
    let _: i64 = conn
        .prepare_cached("SELECT count(*) FROM meta")?
        .query_row((), |r| r.get(0))?;
    Ok(())
}

/// Readiness: the database answers a read and its schema is the one this build writes
/// (migrations current). What authd's `/readyz` asks.
pub fn ready(conn: &Connection) -> Result<()> {
    ping(conn)?;
    let v = user_version(conn)?;
    if v != SCHEMA_VERSION {
        return Err(Error::Unavailable(format!(
            "the database's schema version is {v}, this build's {SCHEMA_VERSION}"
        )));
    }
    Ok(())
}

/// A connection that only watches `path` for commits ([`data_version`]): never creates
/// the file, never writes, never waits for a lock; a read-only file is watched read-only.
pub fn open_watcher(path: &Path) -> Result<Connection> {
    let flags = |f| f | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let c = rusqlite::Connection::open_with_flags(path, flags(OpenFlags::SQLITE_OPEN_READ_WRITE))
        .or_else(|_| {
        rusqlite::Connection::open_with_flags(path, flags(OpenFlags::SQLITE_OPEN_READ_ONLY))
    })?;
    c.busy_timeout(std::time::Duration::ZERO)?;
    c.execute_batch("PRAGMA query_only=ON")?;
    Ok(Connection::sqlite(c))
}

/// The WAL-index header of a SQLite database in WAL mode, read from its `-shm` file
/// without SQL, locks or SQLite's own code: a way to see that *no* commit has happened.
///
/// SQLite's file format (<https://sqlite.org/walformat.html>, "the WAL-index header")
/// puts two copies of a 48-byte header at the start of the `-shm` file, shared by every
/// process using the database. Every commit rewrites both (it always appends frames, so
/// at least the last frame, its checksum and the change counter move), second copy
/// first; a connection's [`data_version`] moves exactly when its next read finds the
/// header changed. So a header equal, byte for byte, to one read before a
/// [`data_version`] reading means that reading is still current; anything else — the
/// copies disagreeing (a commit under way), the header not initialised, the file
/// missing or short — says nothing, and the caller reads [`data_version`] as before.
/// The file stays the same while this process has the database open: in WAL mode every
/// connection keeps a shared lock on the database file, so no other process can take
/// the exclusive lock that removing or rebuilding it needs.
pub struct WalIndexPeek {
    shm: std::fs::File,
}

/// The size of one copy of the WAL-index header.
pub const WAL_INDEX_HEADER: usize = 48;

impl WalIndexPeek {
    /// Open `<path>-shm` to read (None when there is none: not in WAL mode, or not yet
    /// opened by any connection).
    pub fn open(path: &Path) -> Option<WalIndexPeek> {
        let mut shm = path.as_os_str().to_owned();
        shm.push("-shm");
        let shm = std::fs::File::open(shm).ok()?;
        Some(WalIndexPeek { shm })
    }

    /// The header now when its two copies agree and it is initialised; None otherwise.
    /// One `pread` of 96 bytes.
    pub fn header(&self) -> Option<[u8; WAL_INDEX_HEADER]> {
        use std::os::unix::fs::FileExt;
        let mut both = [0u8; 2 * WAL_INDEX_HEADER];
        self.shm.read_exact_at(&mut both, 0).ok()?;
        let (a, b) = both.split_at(WAL_INDEX_HEADER);
        // Byte 12 is `isInit`: 1 once a connection has built the header.
        (a == b && a[12] == 1).then(|| a.try_into().ok()).flatten()
    }
}

/// SQLite's count of commits by other connections, as seen by `conn`: it moves whenever
/// another connection commits to the file.
pub fn data_version(conn: &Connection) -> Result<i64> {
    Ok(conn
        .prepare_cached("PRAGMA data_version")?
        .query_row((), |r| r.get(0))?)
}

/// Copy committed WAL frames back into the database without waiting for readers or
/// writers (a passive checkpoint). Returns (frames in the WAL, frames checkpointed).
pub fn checkpoint(conn: &Connection) -> Result<(i64, i64)> {
    if conn.engine() == Engine::Postgres {
        return Ok((0, 0));
    }
    Ok(conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", (), |r| {
        Ok((r.get(1)?, r.get(2)?))
    })?)
}

/// The schema version of the database `conn` is open on.
pub fn schema_version(conn: &Connection) -> Result<i64> {
    user_version(conn)
}

/// What SQLite's `PRAGMA integrity_check` finds (empty: nothing; at most 100 lines).
pub fn integrity_problems(conn: &Connection) -> Result<Vec<String>> {
    if conn.engine() == Engine::Postgres {
        // PostgreSQL checks its pages itself (checksums when the cluster has them); the
        // rows' meaning is checked by `authctl verify`'s other steps.
        return Ok(Vec::new());
    }
    let mut st = conn.prepare("PRAGMA integrity_check(100)")?;
    let lines = st
        .query_map((), |r| r.get::<String>(0))?
        .collect::<crate::sql::Result<Vec<_>>>()?;
    Ok(lines.into_iter().filter(|l| l != "ok").collect())
}

/// A consistent copy of the database into the new file `dest` (`VACUUM INTO`: one read
/// transaction; writers go on meanwhile).
pub fn vacuum_into(conn: &Connection, dest: &str) -> Result<()> {
    if conn.engine() == Engine::Postgres {
        return Err(Error::Invalid(
            "backups of a PostgreSQL database are taken with pg_dump (see the README); keep the key file beside them".into(),
        ));
    }
    conn.execute("VACUUM INTO ?1", [dest])?;
    Ok(())
}

/// Rows sealed per transaction by [`seal_audit`]: a backlog (rows of an older version, or
/// a burst) is sealed over several short transactions, never one long one.
const SEAL_BATCH: usize = 256;

/// Seal the audit rows written since the last seal ([`crate::store::audit_chain::seal`]):
/// nothing to do costs two indexed reads; otherwise one short write transaction per
/// [`SEAL_BATCH`] rows, each taking the writer turn. Returns how many were sealed.
pub fn seal_audit(conn: &mut Connection, key: &crypto::SecretKey) -> Result<usize> {
    let pending: bool = conn
        .prepare_cached(
            "SELECT coalesce((SELECT max(id) FROM audit), 0) >
                    coalesce((SELECT CAST(value AS INTEGER) FROM meta
                              WHERE key='audit_sealed_through'), 0)",
        )?
        .query_row((), |r| r.get(0))?;
    if !pending {
        return Ok(0);
    }
    let mut total = 0;
    loop {
        let tx = write_tx(conn)?;
        let n = crate::store::audit_chain::seal(&tx, key, SEAL_BATCH)?;
        tx.commit()?;
        total += n;
        if n < SEAL_BATCH {
            return Ok(total);
        }
    }
}

/// Prune the audit log to `audit.retention_days` at `now` (0: keep everything), audited
/// `admin.audit.prune` by actor `authd` when rows went: what a running core does daily.
pub fn retention_prune(conn: &mut Connection, key: &SecretKey, now: i64) -> Result<u64> {
    let days = crate::policy::Policy::load(conn)?.audit_retention_days;
    if days <= 0 {
        return Ok(0);
    }
    let before = now.saturating_sub(days.saturating_mul(86_400));
    let tx = write_tx(conn)?;
    let n = crate::store::audit_chain::prune(&tx, key, before)?;
    if n > 0 {
        crate::audit::record(
            &tx,
            &crate::audit::Entry::new(
                crate::kinds::AuditEvent::AdminAuditPrune,
                crate::audit::Outcome::Success,
            )
                .actor("authd")
                .reason("retention")
                .detail(serde_json::json!({"before": crate::util::rfc3339(before), "deleted": n, "retention_days": days})),
            now,
        )?;
    }
    tx.commit()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::OptionalExtension;

    /// The bundled SQLite is built with no bulk page-cache allocation per connection
    /// (`.cargo/config.toml`): with it, each connection authctl opens wrote through a
    /// 20-page block before reading anything (38 page faults of a command's start).
    ///
    /// Also without memory statistics (each malloc and free of SQLite took a global mutex
    /// for them) and without the extensions authd does not use (FTS3, FTS5, R-tree,
    /// dbstat, soundex), which every new connection registered.
    #[test]
    fn sqlite_is_built_as_configured() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut st = conn.prepare("PRAGMA compile_options").unwrap();
        let opts: Vec<String> = st
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        for want in ["DEFAULT_PCACHE_INITSZ=0", "DEFAULT_MEMSTATUS=0"] {
            assert!(
                opts.iter().any(|o| o == want),
                "{want} missing; compile options: {opts:?}"
            );
        }
        for left_out in [
            "ENABLE_FTS3",
            "ENABLE_FTS5",
            "ENABLE_RTREE",
            "ENABLE_DBSTAT_VTAB",
            "SOUNDEX",
        ] {
            assert!(
                !opts.iter().any(|o| o == left_out),
                "{left_out} built in; compile options: {opts:?}"
            );
        }
    }

    /// The writer turn goes to the writers in the order they asked: one that lets go and
    /// asks again at once waits behind a writer already waiting (with a bare lock it took
    /// the turn straight back, which starved login steps behind the audit sealer).
    #[test]
    fn the_writer_turn_is_handed_on_first_come_first_served() {
        let turn: &'static Turn = Box::leak(Box::new(Turn {
            queue: std::sync::Mutex::new(Queue::default()),
            free: std::sync::Condvar::new(),
            busy_at: std::sync::Mutex::new(None),
        }));
        let first = turn
            .take(Duration::ZERO)
            .expect("a free turn is taken at once");
        let waiter = std::thread::spawn(move || {
            let g = turn.take(Duration::from_secs(10));
            let got = g.is_some();
            std::thread::sleep(Duration::from_millis(50));
            drop(g);
            got
        });
        while turn.queue.lock().unwrap().waiting.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(first);
        assert!(
            turn.take(Duration::ZERO).is_none(),
            "the writer that let go asked again behind the one waiting"
        );
        assert!(waiter.join().unwrap(), "the waiting writer had its turn");
        let again = turn.take(Duration::from_secs(10));
        assert!(again.is_some(), "and then the turn is free again");
        assert!(
            turn.queue.lock().unwrap().waiting.is_empty(),
            "nobody left in line"
        );
    }

    /// A cached statement that joins on a bound key is compiled once, not once per
    /// transaction: fails without the query-planner-stability setting in `configure`.
    #[test]
    fn cached_join_statements_are_not_recompiled_per_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::new(dir.path().join("a.db"), None);
        let (mut conn, _) = create(&loc).unwrap();
        const SQL: &str = "SELECT u.id FROM users u JOIN orgs o ON o.id=u.org_id WHERE u.id=?1";
        for id in 1..=20i64 {
            let tx = write_tx(&mut conn).unwrap();
            let found: Option<i64> = tx
                .prepare_cached(SQL)
                .unwrap()
                .query_row([id], |r| r.get(0))
                .optional()
                .unwrap();
            assert_eq!(found, None);
            tx.commit().unwrap();
        }
        let st = conn.lite().unwrap().prepare_cached(SQL).unwrap();
        assert_eq!(
            st.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "the cached statement was recompiled"
        );
    }

    #[test]
    fn both_engines_are_at_one_schema_version() {
        assert_eq!(pg::SCHEMA_VERSION, SCHEMA_VERSION);
        // schema.postgres.sql is the whole schema at once: it ends with every PostgreSQL
        // migration, word for word (tests/it/pg.rs compares it with SQLite's).
        for m in pg::MIGRATIONS {
            assert!(
                pg::SCHEMA.contains(m.trim()),
                "schema.postgres.sql lacks {m}"
            );
        }
    }

    #[test]
    fn create_open_and_refuse_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::new(dir.path().join("a.db"), None);
        let (conn, key) = create(&loc).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        drop(conn);
        assert!(matches!(create(&loc), Err(Error::Conflict(_))));
        let conn = open(&loc.db).unwrap();
        assert_eq!(
            load_key(&conn, &loc.key).unwrap().check_value(),
            key.check_value()
        );

        // Another database's key is refused.
        let other = Location::new(dir.path().join("b.db"), None);
        create(&other).unwrap();
        assert!(matches!(load_key(&conn, &other.key), Err(Error::Key(_))));

        // A text file is not a database.
        let txt = dir.path().join("notes.txt");
        std::fs::write(
            &txt,
            "hello, this is not sqlite at all, not even close........",
        )
        .unwrap();
        assert!(matches!(open(&txt), Err(Error::Invalid(_))));

        // Someone else's SQLite database is not taken over.
        let foreign = dir.path().join("foreign.db");
        rusqlite::Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE t(x)")
            .unwrap();
        assert!(matches!(open(&foreign), Err(Error::Invalid(_))));

        assert!(matches!(
            open(&dir.path().join("missing.db")),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn blank_files_get_the_schema_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        // authctl's open: an empty file is refused and not touched, side files included.
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        let e = open_initialised(&empty).unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e:?}");
        assert!(e.to_string().contains("authctl init"), "{e}");
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
        let listing: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(listing.len(), 1, "side files beside the empty file");
        // An SQLite file without tables is refused unchanged too.
        let blank = dir.path().join("blank.db");
        rusqlite::Connection::open(&blank)
            .unwrap()
            .execute_batch("CREATE TABLE t(x); DROP TABLE t;")
            .unwrap();
        let before = std::fs::read(&blank).unwrap();
        assert!(matches!(open_initialised(&blank), Err(Error::Invalid(_))));
        assert_eq!(std::fs::read(&blank).unwrap(), before);
        // A missing file is not found, as with open.
        assert!(matches!(
            open_initialised(&dir.path().join("missing.db")),
            Err(Error::NotFound(_))
        ));

        // The daemon's open is unchanged: an existing empty file gets the schema…
        let conn = open(&empty).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        drop(conn);
        // …after which authctl's open takes it.
        let conn = open_initialised(&empty).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
    }

    fn wal_file(path: &Path) -> Connection {
        let c = rusqlite::Connection::open(path).unwrap();
        let _: String = c
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .unwrap();
        Connection::sqlite(c)
    }

    #[test]
    fn writers_of_one_file_take_turns_instead_of_failing_busy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("turns.db");
        wal_file(&path)
            .execute_batch("CREATE TABLE t(x INTEGER)")
            .unwrap();
        // No busy timeout at all: without the turn, two writers racing for the lock
        // would fail with SQLITE_BUSY on the first collision. The connections are open
        // (and the WAL in place) before any writer starts: opening is not what is tested.
        let conns: Vec<Connection> = (0..4).map(|_| wal_file(&path)).collect();
        let threads: Vec<_> = conns
            .into_iter()
            .zip(0i64..)
            .map(|(mut c, n)| {
                std::thread::spawn(move || {
                    c.lite().unwrap().busy_timeout(Duration::ZERO).unwrap();
                    for i in 0..300 {
                        let tx = write_tx(&mut c).unwrap();
                        tx.execute("INSERT INTO t VALUES (?1)", [n * 1000 + i])
                            .unwrap();
                        // Hold the lock a moment, as a real step does.
                        std::thread::yield_now();
                        tx.commit().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n: i64 = wal_file(&path)
            .query_row("SELECT count(*) FROM t", (), |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1200);
    }

    #[test]
    fn deferred_checkpoints_leave_the_wal_to_the_checkpointer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.db");
        let mut c = wal_file(&path);
        c.execute_batch("CREATE TABLE t(x BLOB)").unwrap();
        defer_checkpoints(&c).unwrap();
        // About 2,000 pages: past SQLite's automatic threshold of 1,000.
        for _ in 0..200 {
            let tx = write_tx(&mut c).unwrap();
            for _ in 0..10 {
                tx.execute("INSERT INTO t VALUES (zeroblob(4000))", ())
                    .unwrap();
            }
            tx.commit().unwrap();
        }
        let other = wal_file(&path);
        let (frames, done) = checkpoint(&other).unwrap();
        assert!(frames > 2000, "the WAL holds {frames} frames");
        assert_eq!(done, frames, "a passive checkpoint with nobody reading");
        // Nothing was lost on the way into the main file.
        let n: i64 = other
            .query_row("SELECT count(*) FROM t", (), |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2000);
    }

    /// SQLite's temporary files (statement journals among them) are unnamed (Linux's
    /// `O_TMPFILE`, else unlinked at once): open, they show in this process's
    /// descriptors as deleted files.
    fn open_sqlite_temp_files() -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|t| t.to_string_lossy().ends_with(" (deleted)"))
            .count()
    }

    #[test]
    fn the_group_writer_keeps_statement_journals_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let (c, _key) = create(&Location::new(&path, None)).unwrap();
        c.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, k BLOB, v BLOB);
             CREATE INDEX t_k ON t(k);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 4000)
             INSERT INTO t SELECT i, randomblob(16), randomblob(200) FROM n;",
        )
        .unwrap();
        // A group as the writer runs one: steps in savepoints of one transaction, each
        // changing rows all over the table (~1 MiB of pages that existed before), far past
        // SQLite's 64 KiB in-memory limit for a statement journal.
        let group = |mut c: Connection| {
            let (temp_files, committed) = batch(&mut c, |c| {
                for i in 0..20 {
                    let tx = write_tx(c).unwrap();
                    tx.execute(
                        "UPDATE t SET k = randomblob(16), v = randomblob(200) WHERE id % 20 = ?1",
                        [i],
                    )
                    .unwrap();
                    tx.commit().unwrap();
                }
                open_sqlite_temp_files()
            })
            .unwrap();
            committed.unwrap();
            temp_files
        };
        // The check can see a spilled journal: a plain connection spills to a file...
        assert!(
            group(open(&path).unwrap()) >= 1,
            "a plain connection spills"
        );
        // ...and the writer's connection does not.
        assert_eq!(group(open_group_writer(&path).unwrap()), 0);
    }
}
