//! The storage seam: one connection type over the two engines, SQLite (embedded, the
//! default) and PostgreSQL (several nodes, issue 13).
//!
//! The store and the few core modules that issue SQL are written once against this
//! module's [`Connection`], [`Statement`] and [`Row`], whose methods follow rusqlite's
//! (`execute`, `query_row`, `prepare_cached`, `query_map`, `row.get(i)`), and with
//! rusqlite's value traits ([`ToSql`], [`FromSql`]) as the one value model: on SQLite a
//! call goes straight to rusqlite; on PostgreSQL the statement's text is rewritten once
//! (`?N` placeholders become `$N`) and cached as a prepared statement of the connection,
//! parameters are encoded for whatever type the server inferred for them, and columns
//! come back as SQLite-like values (every integer as `i64`, `BOOLEAN` as 0/1).
//!
//! The SQL itself is written in the subset both engines accept (standard upserts,
//! `coalesce`, `CAST(… AS BIGINT)`, explicit `= 1` for flags); where the engines really
//! differ a module asks [`Connection::engine`] and says why.
//!
//! Transactions and savepoints are plain SQL (`BEGIN`, `SAVEPOINT`, `RELEASE`), so the
//! group-commit writer and `db::write_tx` keep one code path; what a write transaction
//! takes first to serialise writers is the engine's (SQLite: its write lock with
//! `BEGIN IMMEDIATE`; PostgreSQL: a transaction-scoped advisory lock, see `db`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use rusqlite::params;
pub use rusqlite::types::{FromSql, ToSql, Value, ValueRef};

/// Which engine a database lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// Where a database is: a SQLite file or a PostgreSQL URL (`postgres://…` or
/// `postgresql://…`, libpq's URL form).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    File(PathBuf),
    Postgres(String),
}

impl Target {
    /// A `postgres://` or `postgresql://` URL selects PostgreSQL; anything else is a path.
    pub fn parse(s: &str) -> Target {
        if is_postgres_url(s) {
            Target::Postgres(s.to_string())
        } else {
            Target::File(PathBuf::from(s))
        }
    }

    pub fn engine(&self) -> Engine {
        match self {
            Target::File(_) => Engine::Sqlite,
            Target::Postgres(_) => Engine::Postgres,
        }
    }

    /// The file, for SQLite.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Target::File(p) => Some(p),
            Target::Postgres(_) => None,
        }
    }

    /// How to name the database in messages: the path, or the URL without its password.
    pub fn display(&self) -> String {
        match self {
            Target::File(p) => p.display().to_string(),
            Target::Postgres(u) => redact_url(u),
        }
    }
}

impl From<PathBuf> for Target {
    fn from(p: PathBuf) -> Target {
        match p.to_str() {
            Some(s) if is_postgres_url(s) => Target::Postgres(s.to_string()),
            _ => Target::File(p),
        }
    }
}

impl From<&Path> for Target {
    fn from(p: &Path) -> Target {
        Target::from(p.to_path_buf())
    }
}

pub fn is_postgres_url(s: &str) -> bool {
    let l = s.get(..13).unwrap_or(s).to_ascii_lowercase();
    l.starts_with("postgres://") || l.starts_with("postgresql://")
}

/// The URL with any password replaced by `***`.
pub fn redact_url(u: &str) -> String {
    let Some(scheme_end) = u.find("://") else {
        return u.to_string();
    };
    let rest = &u[scheme_end + 3..];
    let auth_end = rest.find('/').unwrap_or(rest.len());
    let auth = &rest[..auth_end];
    match (auth.rfind('@'), auth.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &u[..scheme_end + 3],
            &auth[..colon],
            &rest[at..]
        ),
        _ => u.to_string(),
    }
}

/// An error of either engine, or of the seam's own conversions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Sqlite(rusqlite::Error),
    #[error("{}", pg_message(.0))]
    Postgres(postgres::Error),
    /// A query meant to return one row returned none.
    #[error("query returned no rows")]
    NoRows,
    /// A column value could not become the Rust type asked for.
    #[error("column {column}: {message}")]
    Conversion { column: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.severity(), d.message()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::QueryReturnedNoRows => Error::NoRows,
            e => Error::Sqlite(e),
        }
    }
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        Error::Postgres(e)
    }
}

impl Error {
    /// A UNIQUE (or primary key) violation: the row exists already.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.code == rusqlite::ErrorCode::ConstraintViolation
                    && matches!(
                        f.extended_code,
                        rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                            | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    )
            }
            Error::Postgres(e) => e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION),
            _ => false,
        }
    }

    /// Any constraint violation (unique, check, foreign key, not null).
    pub fn is_constraint_violation(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.code == rusqlite::ErrorCode::ConstraintViolation
            }
            Error::Postgres(e) => e.code().is_some_and(|c| c.code().starts_with("23")),
            _ => false,
        }
    }

    /// The SQLite error code, for SQLite errors.
    pub fn sqlite_code(&self) -> Option<rusqlite::ErrorCode> {
        match self {
            Error::Sqlite(e) => e.sqlite_error_code(),
            _ => None,
        }
    }

    /// The PostgreSQL server is unreachable or the connection broke (not an error of the
    /// statement): the request fails closed and the pool drops the connection.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            Error::Postgres(e) => {
                e.is_closed()
                    || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
                    || e.code().is_some_and(|c| {
                        let c = c.code();
                        // 08: connection exception; 57P01-57P03: admin shutdown, crash
                        // shutdown, cannot connect now.
                        c.starts_with("08") || c.starts_with("57P")
                    })
            }
            _ => false,
        }
    }

    /// A conflict between concurrent transactions the engine resolved by failing one
    /// (PostgreSQL: serialization failure, deadlock; SQLite: busy, locked).
    pub fn is_busy(&self) -> bool {
        match self {
            Error::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            Error::Postgres(e) => {
                e.code() == Some(&postgres::error::SqlState::T_R_SERIALIZATION_FAILURE)
                    || e.code() == Some(&postgres::error::SqlState::T_R_DEADLOCK_DETECTED)
                    || e.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE)
            }
            _ => false,
        }
    }
}

/// The PostgreSQL advisory lock every write transaction of every node takes first
/// (`pg_advisory_xact_lock`, released at commit or rollback): writers to one database take
/// turns as they do on SQLite's write lock, so each decision's reads and writes see every
/// decision committed before it, whichever node made it.
pub const PG_WRITE_LOCK: i64 = 0x6175_7468_6400; // "authd"

/// How a write transaction begins: SQLite takes its write lock at once (`BEGIN
/// IMMEDIATE`); PostgreSQL begins and takes [`PG_WRITE_LOCK`] in the same round trip.
pub fn begin_write_sql(engine: Engine) -> &'static str {
    match engine {
        Engine::Sqlite => "BEGIN IMMEDIATE",
        Engine::Postgres => "BEGIN; SELECT pg_advisory_xact_lock(107157092066304)",
    }
}

/// A connection to either engine; see the module documentation.
pub struct Connection {
    inner: Inner,
    /// Savepoint names are numbered per connection.
    savepoints: Cell<u64>,
    /// The breached-password list of the core that opened it, if any
    /// ([`Connection::lend_breached_list`]).
    breached: Option<std::sync::Arc<crate::breached::CoreList>>,
}

enum Inner {
    Lite(rusqlite::Connection),
    Pg(Box<PgConn>),
}

struct PgConn {
    /// Always Some until the connection is dropped (see `Drop for PgConn`).
    client: RefCell<Option<postgres::Client>>,
    /// Called after a commit (or a statement outside a transaction) that sent the session
    /// epoch's notification: see [`Connection::listen_for_epoch`].
    epoch_hook: RefCell<Option<EpochHook>>,
    /// Prepared statements by their SQLite-form text.
    statements: RefCell<HashMap<String, postgres::Statement>>,
    /// An operation failed because the connection was lost.
    lost: Cell<bool>,
    /// Open transaction and savepoint levels (PostgreSQL has no "autocommit?" query).
    depth: Cell<u32>,
    url: String,
}

/// How many prepared statements a PostgreSQL connection keeps.
const PG_STATEMENTS: usize = 256;

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Lite(c) => write!(f, "Connection(SQLite {:?})", c.path()),
            Inner::Pg(p) => write!(f, "Connection(PostgreSQL {})", redact_url(&p.url)),
        }
    }
}

impl Connection {
    /// Wrap an open SQLite connection.
    pub fn sqlite(conn: rusqlite::Connection) -> Connection {
        Connection {
            inner: Inner::Lite(conn),
            savepoints: Cell::new(0),
            breached: None,
        }
    }

    /// Connect to PostgreSQL at `url` (libpq URL form; TLS is not offered: keep the
    /// database on a private network or a local socket).
    pub fn postgres(url: &str, connect_timeout: std::time::Duration) -> Result<Connection> {
        let mut config: postgres::Config = url.parse()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(connect_timeout);
        }
        config.application_name("authd");
        let client = config.connect(postgres::NoTls)?;
        Ok(Connection {
            inner: Inner::Pg(Box::new(PgConn {
                client: RefCell::new(Some(client)),
                epoch_hook: RefCell::new(None),
                lost: Cell::new(false),
                statements: RefCell::new(HashMap::new()),
                depth: Cell::new(0),
                url: url.to_string(),
            })),
            savepoints: Cell::new(0),
            breached: None,
        })
    }

    pub fn engine(&self) -> Engine {
        match &self.inner {
            Inner::Lite(_) => Engine::Sqlite,
            Inner::Pg(_) => Engine::Postgres,
        }
    }

    /// The SQLite connection underneath (None on PostgreSQL): for what only SQLite has
    /// (pragmas, the WAL, online backup).
    pub fn lite(&self) -> Option<&rusqlite::Connection> {
        match &self.inner {
            Inner::Lite(c) => Some(c),
            Inner::Pg(_) => None,
        }
    }

    pub fn lite_mut(&mut self) -> Option<&mut rusqlite::Connection> {
        match &mut self.inner {
            Inner::Lite(c) => Some(c),
            Inner::Pg(_) => None,
        }
    }

    /// The PostgreSQL client underneath (None on SQLite): for LISTEN and the like.
    pub fn with_pg_client<T>(&self, f: impl FnOnce(&mut postgres::Client) -> T) -> Option<T> {
        match &self.inner {
            Inner::Lite(_) => None,
            Inner::Pg(p) => Some(f(&mut p.client())),
        }
    }

    /// PostgreSQL: LISTEN on the session epoch's channel and call `hook` after each commit
    /// (or statement outside a transaction) once a notification has arrived — the
    /// connection's own, sent as its transaction committed, so a node sees its own
    /// changes at once; other nodes' arrive through the session cache's listener. SQLite:
    /// nothing (its watchers see every commit).
    pub fn listen_for_epoch(&self, channel: &str, hook: EpochHook) -> Result<()> {
        if let Inner::Pg(p) = &self.inner {
            p.client().batch_execute(&format!("LISTEN {channel}"))?;
            *p.epoch_hook.borrow_mut() = Some(hook);
        }
        Ok(())
    }

    /// Lend this connection its core's breached-password list (see
    /// [`crate::breached::CoreList`]): what [`crate::policy::Policy::load`] falls back to.
    pub fn lend_breached_list(&mut self, list: std::sync::Arc<crate::breached::CoreList>) {
        self.breached = Some(list);
    }

    /// The breached-password list of the core that opened this connection, once set.
    pub fn breached_list(&self) -> Option<&Path> {
        self.breached.as_deref().and_then(|l| l.get())
    }

    /// The PostgreSQL URL this connection was opened with.
    pub fn pg_url(&self) -> Option<&str> {
        match &self.inner {
            Inner::Lite(_) => None,
            Inner::Pg(p) => Some(&p.url),
        }
    }

    /// The database file (SQLite; None for in-memory databases and PostgreSQL).
    pub fn path(&self) -> Option<&str> {
        match &self.inner {
            Inner::Lite(c) => c.path(),
            Inner::Pg(_) => None,
        }
    }

    /// No transaction is open on this connection.
    pub fn is_autocommit(&self) -> bool {
        match &self.inner {
            Inner::Lite(c) => c.is_autocommit(),
            Inner::Pg(p) => p.depth.get() == 0,
        }
    }

    /// The connection is closed (PostgreSQL: the server went away); never true for SQLite.
    pub fn is_broken(&self) -> bool {
        match &self.inner {
            Inner::Lite(_) => false,
            Inner::Pg(p) => {
                p.lost.get() || p.client.borrow().as_ref().is_none_or(|c| c.is_closed())
            }
        }
    }

    /// Run several statements without parameters.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match &self.inner {
            Inner::Lite(c) => Ok(c.execute_batch(sql)?),
            Inner::Pg(p) => {
                p.client().batch_execute(sql).map_err(|e| p.note(e))?;
                p.track_transaction_control(sql);
                p.after_write();
                Ok(())
            }
        }
    }

    /// Run one statement; the number of rows it changed.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    /// The first row of a query, mapped by `f`; [`Error::NoRows`] when there is none.
    pub fn query_row<T, P: Params, F>(&self, sql: &str, params: P, f: F) -> Result<T>
    where
        F: FnOnce(&Row<'_>) -> Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// A statement prepared for this call only (SQLite) — on PostgreSQL every statement is
    /// kept prepared per connection.
    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        match &self.inner {
            Inner::Lite(c) => Ok(Statement(Stmt::Lite(c.prepare(sql)?))),
            Inner::Pg(p) => p.prepare(sql),
        }
    }

    /// A statement from the connection's cache of prepared statements.
    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        match &self.inner {
            Inner::Lite(c) => Ok(Statement(Stmt::LiteCached(c.prepare_cached(sql)?))),
            Inner::Pg(p) => p.prepare(sql),
        }
    }

    /// The id the last INSERT gave its row: SQLite's rowid; on PostgreSQL the value the
    /// last identity column (sequence) of this session handed out (`lastval()`).
    pub fn last_insert_rowid(&self) -> i64 {
        match &self.inner {
            Inner::Lite(c) => c.last_insert_rowid(),
            Inner::Pg(_) => self
                .query_row("SELECT lastval()", (), |r| r.get(0))
                .unwrap_or(0),
        }
    }

    /// Open a transaction. SQLite: `BEGIN IMMEDIATE` (takes the write lock now) when
    /// `write`, else deferred; PostgreSQL: `BEGIN` (read committed). Rolled back on drop
    /// unless committed.
    pub fn begin(&mut self, write: bool) -> Result<Transaction<'_>> {
        let sql = match write {
            true => begin_write_sql(self.engine()),
            false => "BEGIN",
        };
        self.execute_batch(sql)?;
        Ok(Transaction {
            conn: self,
            done: false,
        })
    }

    /// A savepoint: a transaction inside the current one (or a new one when none is
    /// open). Released by `commit`, rolled back on drop.
    pub fn savepoint(&mut self) -> Result<Savepoint<'_>> {
        let n = self.savepoints.get() + 1;
        self.savepoints.set(n);
        let name = format!("sp{n}");
        let top = self.engine() == Engine::Postgres && self.is_autocommit();
        if top {
            self.execute_batch("BEGIN")?;
        } else {
            self.execute_batch(&format!("SAVEPOINT {name}"))?;
        }
        Ok(Savepoint {
            conn: self,
            name,
            done: false,
            top,
        })
    }

    /// Drop cached prepared statements (after a schema change on this connection).
    pub fn flush_prepared_statement_cache(&self) {
        match &self.inner {
            Inner::Lite(c) => c.flush_prepared_statement_cache(),
            Inner::Pg(p) => p.statements.borrow_mut().clear(),
        }
    }
}

/// What a connection calls when it has seen the session epoch move.
pub type EpochHook = std::sync::Arc<dyn Fn() + Send + Sync>;

impl Drop for PgConn {
    fn drop(&mut self) {
        // Closing a client blocks on its own runtime, which panics on a thread that
        // drives another runtime (authd's async threads drop cores and connections too):
        // it is closed on a thread of its own.
        if let Some(c) = self.client.get_mut().take() {
            let _ = std::thread::Builder::new()
                .name("authd-pg-close".into())
                .spawn(move || drop(c));
        }
    }
}

impl PgConn {
    /// An error of the server or the connection; a lost connection marks this one broken
    /// (the pool then drops it and the connections idle beside it).
    fn note(&self, e: postgres::Error) -> Error {
        let e = Error::from(e);
        if e.is_connection_lost() {
            self.lost.set(true);
        }
        e
    }

    /// Run a prepared statement with these values: its rows.
    fn query(
        &self,
        stmt: &postgres::Statement,
        values: &[&dyn ToSql],
    ) -> Result<Vec<postgres::Row>> {
        let binds = binds(values)?;
        self.client()
            .query(stmt, &bind_refs(&binds))
            .map_err(|e| self.note(e))
    }

    fn client(&self) -> std::cell::RefMut<'_, postgres::Client> {
        std::cell::RefMut::map(self.client.borrow_mut(), |c| {
            c.as_mut()
                .expect("a PostgreSQL connection is open until dropped")
        })
    }

    /// After a commit or a statement outside a transaction: when this connection has
    /// received a notification (its own transaction's, sent as it committed, or another
    /// node's), tell the hook.
    fn after_write(&self) {
        if self.depth.get() != 0 {
            return;
        }
        let Some(hook) = self.epoch_hook.borrow().clone() else {
            return;
        };
        let mut seen = false;
        {
            let mut client = self.client();
            let mut notes = client.notifications();
            let mut it = notes.iter();
            while let Ok(Some(_)) = postgres::fallible_iterator::FallibleIterator::next(&mut it) {
                seen = true;
            }
        }
        if seen {
            hook();
        }
    }

    fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(Statement(Stmt::Pg {
                conn: self,
                stmt: s.clone(),
            }));
        }
        let text = to_postgres(sql);
        let stmt = self.client().prepare(&text).inspect_err(|e| {
            // A statement PostgreSQL cannot take is a bug of the store, not of the input.
            tracing::error!(error = %pg_message(e), sql = %text, "PostgreSQL refused a statement");
            if std::env::var_os("AUTHD_SQL_DEBUG").is_some() {
                eprintln!("PostgreSQL refused: {}\n{text}", pg_message(e));
            }
        })
        .map_err(|e| self.note(e))?;
        let mut cache = self.statements.borrow_mut();
        if cache.len() >= PG_STATEMENTS {
            cache.clear();
        }
        cache.insert(sql.to_string(), stmt.clone());
        Ok(Statement(Stmt::Pg { conn: self, stmt }))
    }

    /// Follow BEGIN/COMMIT/ROLLBACK/SAVEPOINT/RELEASE sent as plain SQL, so
    /// [`Connection::is_autocommit`] answers as SQLite's does.
    fn track_transaction_control(&self, sql: &str) {
        let s = sql.trim_start().to_ascii_uppercase();
        let d = self.depth.get();
        if s.starts_with("BEGIN") || s.starts_with("SAVEPOINT") {
            self.depth.set(d + 1);
        } else if s.starts_with("COMMIT") || s.starts_with("END") || s == "ROLLBACK" {
            self.depth.set(0);
        } else if s.starts_with("RELEASE") {
            self.depth.set(d.saturating_sub(1));
        } else if s.starts_with("ROLLBACK") && !s.contains(" TO ") {
            self.depth.set(0);
        }
    }
}

/// A transaction opened by [`Connection::begin`]; derefs to the connection.
pub struct Transaction<'c> {
    conn: &'c mut Connection,
    done: bool,
}

impl Transaction<'_> {
    pub fn commit(mut self) -> Result<()> {
        self.done = true;
        self.conn.execute_batch("COMMIT")
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl std::ops::DerefMut for Transaction<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn
    }
}

/// A savepoint opened by [`Connection::savepoint`]; derefs to the connection.
pub struct Savepoint<'c> {
    conn: &'c mut Connection,
    name: String,
    done: bool,
    /// PostgreSQL outside a transaction: the savepoint is a transaction of its own.
    top: bool,
}

impl Savepoint<'_> {
    /// Keep what the savepoint did (as part of the enclosing transaction).
    pub fn commit(mut self) -> Result<()> {
        self.done = true;
        if self.top {
            self.conn.execute_batch("COMMIT")
        } else {
            self.conn.execute_batch(&format!("RELEASE {}", self.name))
        }
    }
}

impl Drop for Savepoint<'_> {
    fn drop(&mut self) {
        if !self.done && !self.conn.is_autocommit() {
            if self.top {
                let _ = self.conn.execute_batch("ROLLBACK");
            } else {
                let _ = self
                    .conn
                    .execute_batch(&format!("ROLLBACK TO {}", self.name));
                let _ = self.conn.execute_batch(&format!("RELEASE {}", self.name));
            }
        }
    }
}

impl std::ops::Deref for Savepoint<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl std::ops::DerefMut for Savepoint<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn
    }
}

/// A prepared statement of either engine.
pub struct Statement<'c>(Stmt<'c>);

enum Stmt<'c> {
    Lite(rusqlite::Statement<'c>),
    LiteCached(rusqlite::CachedStatement<'c>),
    Pg {
        conn: &'c PgConn,
        stmt: postgres::Statement,
    },
}

impl<'c> Statement<'c> {
    fn lite(&mut self) -> Option<&mut rusqlite::Statement<'c>> {
        match &mut self.0 {
            Stmt::Lite(s) => Some(s),
            Stmt::LiteCached(s) => Some(s),
            Stmt::Pg { .. } => None,
        }
    }

    /// Run the statement; the number of rows it changed.
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        let values = params.values();
        if let Some(s) = self.lite() {
            return Ok(s.execute(&*values)?);
        }
        let Stmt::Pg { conn, stmt } = &self.0 else {
            unreachable!()
        };
        let binds = binds(&values)?;
        let n = conn
            .client()
            .execute(stmt, &bind_refs(&binds))
            .map_err(|e| conn.note(e))?;
        conn.after_write();
        Ok(n as usize)
    }

    /// The first row, mapped by `f`; [`Error::NoRows`] when there is none.
    pub fn query_row<T, P: Params, F>(&mut self, params: P, f: F) -> Result<T>
    where
        F: FnOnce(&Row<'_>) -> Result<T>,
    {
        let values = params.values();
        if let Some(s) = self.lite() {
            let mut rows = s.query(&*values)?;
            return match rows.next()? {
                Some(r) => f(&Row::Lite(r)),
                None => Err(Error::NoRows),
            };
        }
        let Stmt::Pg { conn, stmt } = &self.0 else {
            unreachable!()
        };
        let rows = conn.query(stmt, &values)?;
        match rows.first() {
            Some(r) => f(&Row::Pg(r)),
            None => Err(Error::NoRows),
        }
    }

    /// Every row, mapped by `f`.
    pub fn query_map<T, P: Params, F>(
        &mut self,
        params: P,
        mut f: F,
    ) -> Result<std::vec::IntoIter<Result<T>>>
    where
        F: FnMut(&Row<'_>) -> Result<T>,
    {
        let mut out = Vec::new();
        self.for_each_row(params, |r| {
            out.push(f(r));
            Ok(())
        })?;
        Ok(out.into_iter())
    }

    /// Whether the query returns any row.
    pub fn exists<P: Params>(&mut self, params: P) -> Result<bool> {
        match self.query_row(params, |_| Ok(())) {
            Ok(()) => Ok(true),
            Err(Error::NoRows) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every row, one at a time (SQLite streams; PostgreSQL reads the answer at once).
    pub fn query<P: Params>(&mut self, params: P) -> Result<Rows<'_>> {
        let values = params.values();
        let pg = match &mut self.0 {
            Stmt::Lite(s) => return Ok(Rows(RowsInner::Lite(s.query(&*values)?))),
            Stmt::LiteCached(s) => return Ok(Rows(RowsInner::Lite(s.query(&*values)?))),
            Stmt::Pg { conn, stmt } => conn.query(stmt, &values)?,
        };
        Ok(Rows(RowsInner::Pg(pg.into_iter(), None)))
    }

    fn for_each_row<P: Params>(
        &mut self,
        params: P,
        mut each: impl FnMut(&Row<'_>) -> Result<()>,
    ) -> Result<()> {
        let values = params.values();
        if let Some(s) = self.lite() {
            let mut rows = s.query(&*values)?;
            while let Some(r) = rows.next()? {
                each(&Row::Lite(r))?;
            }
            return Ok(());
        }
        let Stmt::Pg { conn, stmt } = &self.0 else {
            unreachable!()
        };
        for r in conn.query(stmt, &values)? {
            each(&Row::Pg(&r))?;
        }
        Ok(())
    }
}

/// Rows of [`Statement::query`].
pub struct Rows<'s>(RowsInner<'s>);

enum RowsInner<'s> {
    Lite(rusqlite::Rows<'s>),
    Pg(std::vec::IntoIter<postgres::Row>, Option<postgres::Row>),
}

impl Rows<'_> {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Row<'_>>> {
        match &mut self.0 {
            RowsInner::Lite(r) => Ok(r.next()?.map(Row::Lite)),
            RowsInner::Pg(it, cur) => {
                *cur = it.next();
                Ok(cur.as_ref().map(Row::Pg))
            }
        }
    }
}

/// One row of an answer.
pub enum Row<'r> {
    Lite(&'r rusqlite::Row<'r>),
    Pg(&'r postgres::Row),
}

impl Row<'_> {
    /// Column `idx` as `T` (rusqlite's conversions, on both engines).
    pub fn get<T: FromSql>(&self, idx: usize) -> Result<T> {
        match self {
            Row::Lite(r) => Ok(r.get(idx)?),
            Row::Pg(r) => {
                let v: PgValue = r.try_get(idx)?;
                T::column_result(ValueRef::from(&v.0)).map_err(|e| Error::Conversion {
                    column: r
                        .columns()
                        .get(idx)
                        .map(|c| c.name().to_string())
                        .unwrap_or_else(|| idx.to_string()),
                    message: e.to_string(),
                })
            }
        }
    }
}

/// Parameters of a statement: `params![…]`, an array of values, `()`, or
/// [`params_from_iter`].
pub trait Params {
    fn values(&self) -> Vec<&dyn ToSql>;
}

impl Params for &[&dyn ToSql] {
    fn values(&self) -> Vec<&dyn ToSql> {
        self.to_vec()
    }
}

impl Params for () {
    fn values(&self) -> Vec<&dyn ToSql> {
        Vec::new()
    }
}

impl<T: ToSql, const N: usize> Params for [T; N] {
    fn values(&self) -> Vec<&dyn ToSql> {
        self.iter().map(|v| v as &dyn ToSql).collect()
    }
}

impl<T: ToSql, const N: usize> Params for &[T; N] {
    fn values(&self) -> Vec<&dyn ToSql> {
        self.iter().map(|v| v as &dyn ToSql).collect()
    }
}

/// Parameters from an iterator (a list built at run time).
pub struct ParamsFromIter<'a>(Vec<&'a dyn ToSql>);

pub fn params_from_iter<'a, I>(iter: I) -> ParamsFromIter<'a>
where
    I: IntoIterator<Item = &'a dyn ToSql>,
{
    ParamsFromIter(iter.into_iter().collect())
}

impl Params for ParamsFromIter<'_> {
    fn values(&self) -> Vec<&dyn ToSql> {
        self.0.clone()
    }
}

/// Map "no rows" to None.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

// ---- PostgreSQL values ------------------------------------------------------------

/// A parameter for PostgreSQL: an SQLite-model value encoded for the type the server
/// inferred for its placeholder.
#[derive(Debug)]
struct Bind(Value);

fn binds(values: &[&dyn ToSql]) -> Result<Vec<Bind>> {
    values
        .iter()
        .map(|v| {
            let out = v.to_sql().map_err(Error::from)?;
            let value = match out {
                rusqlite::types::ToSqlOutput::Borrowed(r) => owned(r),
                rusqlite::types::ToSqlOutput::Owned(v) => v,
                _ => {
                    return Err(Error::Conversion {
                        column: "parameter".into(),
                        message: "a parameter kind PostgreSQL cannot take".into(),
                    })
                }
            };
            Ok(Bind(value))
        })
        .collect()
}

fn owned(r: ValueRef<'_>) -> Value {
    match r {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

fn bind_refs(b: &[Bind]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    b.iter()
        .map(|b| b as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl postgres::types::ToSql for Bind {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, BoxError> {
        use postgres::types::{IsNull, ToSql as P, Type};
        match (&self.0, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Integer(i), &Type::INT8) => P::to_sql(&i, ty, out),
            (Value::Integer(i), &Type::INT4) => P::to_sql(&i32::try_from(*i)?, ty, out),
            (Value::Integer(i), &Type::INT2) => P::to_sql(&i16::try_from(*i)?, ty, out),
            (Value::Integer(i), &Type::BOOL) => P::to_sql(&(*i != 0), ty, out),
            (Value::Integer(i), &Type::FLOAT8) => P::to_sql(&(*i as f64), ty, out),
            (Value::Integer(i), t) if is_text(t) => P::to_sql(&i.to_string(), &Type::TEXT, out),
            (Value::Real(f), &Type::FLOAT8) => P::to_sql(&f, ty, out),
            (Value::Real(f), &Type::FLOAT4) => P::to_sql(&(*f as f32), ty, out),
            (Value::Real(f), t) if is_text(t) => P::to_sql(&f.to_string(), &Type::TEXT, out),
            // PostgreSQL text cannot hold U+0000: it is stored as U+FFFD, which no name
            // may contain (`names::normalize`), so a lookup of such a name finds nothing
            // and an audit row keeps what was sent, visibly.
            (Value::Text(s), t) if is_text(t) && s.contains('\0') => {
                P::to_sql(&s.replace('\0', "\u{FFFD}"), &Type::TEXT, out)
            }
            (Value::Text(s), t) if is_text(t) => P::to_sql(&s.as_str(), &Type::TEXT, out),
            (Value::Text(s), &Type::INT8) => P::to_sql(&s.parse::<i64>()?, ty, out),
            (Value::Text(s), &Type::BYTEA) => P::to_sql(&s.as_bytes(), ty, out),
            (Value::Blob(b), &Type::BYTEA) => P::to_sql(&b.as_slice(), ty, out),
            (v, t) => Err(format!("cannot send {v:?} as PostgreSQL type {t}").into()),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn is_text(t: &postgres::types::Type) -> bool {
    use postgres::types::Type;
    matches!(
        *t,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
    )
}

/// A column from PostgreSQL as an SQLite-model value.
struct PgValue(Value);

impl<'a> postgres::types::FromSql<'a> for PgValue {
    fn from_sql(ty: &postgres::types::Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        use postgres::types::Type;
        Ok(PgValue(match *ty {
            Type::INT8 => Value::Integer(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Integer(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Integer(i16::from_sql(ty, raw)?.into()),
            Type::OID => Value::Integer(u32::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Integer(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)?.into()),
            Type::BYTEA => Value::Blob(<Vec<u8>>::from_sql(ty, raw)?),
            ref t if is_text(t) => Value::Text(String::from_sql(&Type::TEXT, raw)?),
            ref t => {
                return Err(
                    format!("PostgreSQL type {t} has no SQLite-model value (cast it)").into(),
                )
            }
        }))
    }

    fn from_sql_null(_: &postgres::types::Type) -> std::result::Result<Self, BoxError> {
        Ok(PgValue(Value::Null))
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }
}

/// SQLite-form SQL to PostgreSQL's: `?N` becomes `$N` and a bare `?` the next number;
/// string literals, quoted names and comments are left alone.
pub fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 0u32;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                out.push('$');
                if digits.is_empty() {
                    next += 1;
                    out.push_str(&next.to_string());
                } else {
                    next = next.max(digits.parse().unwrap_or(0));
                    out.push_str(&digits);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_numbered_dollars_outside_literals() {
        assert_eq!(
            to_postgres("SELECT a FROM t WHERE b=?1 AND c=?2 OR d=?1"),
            "SELECT a FROM t WHERE b=$1 AND c=$2 OR d=$1"
        );
        assert_eq!(to_postgres("VALUES (?, ?, ?)"), "VALUES ($1, $2, $3)");
        assert_eq!(
            to_postgres("SELECT '?1', \"a?\" -- ?\nFROM t WHERE x=?1"),
            "SELECT '?1', \"a?\" -- ?\nFROM t WHERE x=$1"
        );
    }

    #[test]
    fn targets_tell_urls_from_paths_and_hide_passwords() {
        assert_eq!(
            Target::parse("postgres://u:secret@h:5/db").engine(),
            Engine::Postgres
        );
        assert_eq!(
            Target::parse("PostgreSQL://h/db").engine(),
            Engine::Postgres
        );
        assert_eq!(Target::parse("./postgres.db").engine(), Engine::Sqlite);
        assert_eq!(
            redact_url("postgres://u:secret@h:5/db"),
            "postgres://u:***@h:5/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn sqlite_rows_and_errors_come_through_the_seam() {
        let conn = Connection::sqlite(rusqlite::Connection::open_in_memory().unwrap());
        conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT UNIQUE, b BLOB)")
            .unwrap();
        conn.execute(
            "INSERT INTO t(name, b) VALUES (?1, ?2)",
            params!["a", vec![1u8, 2]],
        )
        .unwrap();
        assert_eq!(conn.last_insert_rowid(), 1);
        let dup = conn
            .execute("INSERT INTO t(name) VALUES (?1)", ["a"])
            .unwrap_err();
        assert!(dup.is_unique_violation(), "{dup}");
        let (name, b): (String, Vec<u8>) = conn
            .query_row("SELECT name, b FROM t WHERE id=?1", [1], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((name.as_str(), b), ("a", vec![1, 2]));
        let none = conn
            .query_row("SELECT id FROM t WHERE id=?1", [9], |r| r.get::<i64>(0))
            .optional()
            .unwrap();
        assert_eq!(none, None);
    }
}
