//! Session checks answered from memory, with the same answers as the database gives.
//!
//! A session check (`GET /v1/session`, forward-auth, every handler that needs the caller)
//! is [`crate::login::check_session`]: the idle policy, the session row and the user row. Its
//! answer depends on nothing but what is in the database and on `now`, so a live answer
//! stays right until either something is committed to the database or time passes a
//! limit. The cache keeps live answers and watches both:
//!
//! - **Commits.** Watcher connections, which never write (`query_only`, no busy wait),
//!   read `PRAGMA data_version` on every check that finds the database's WAL-index
//!   header changed since the watcher's last reading ([`crate::db::WalIndexPeek`]: one
//!   `pread` of the `-shm` file, which every commit rewrites; while it is unchanged,
//!   that reading is still current). A connection's value changes whenever any
//!   other connection commits — the daemon's pool, or `authctl` in another process — so
//!   a revoked session, a disabled, locked, deleted or edited user, a changed idle policy
//!   is seen on the very next check. A watcher that sees its value change (or that was
//!   just opened, and so knows nothing of what came before) moves the cache to a new
//!   epoch; only entries of the current epoch are answered. An entry is filled under the
//!   epoch read *before* its database read, so a commit racing the fill leaves it in an
//!   old epoch: the first reading after the commit, on whichever watcher, starts a new
//!   one, and every check reads after that. Any doubt (a watcher cannot be opened or
//!   read, a poisoned lock) is a miss: the check goes to the database, as without a
//!   cache. There are a few watchers so that concurrent checks do not queue for one.
//! - **Time.** An entry holds the session's absolute expiry, its `last_seen_at` and the
//!   idle limit that applied; a check at `now` is answered from memory only while the
//!   session is within both limits *and* its `last_seen_at` is younger than
//!   [`sessions::SEEN_REFRESH_SECS`]. Past that the check goes to the database, which
//!   refreshes `last_seen_at` as before, so idle expiry is exactly as precise as without
//!   the cache.
//!
//! Only live answers are kept (a refusal always asks the database), keyed by the SHA-256
//! of the token (the token itself is never kept), at most [`MAX_ENTRIES`] of them. An
//! entry is of use for at most [`sessions::SEEN_REFRESH_SECS`] after its session was last
//! seen, so a full cache drops the entries memory may no longer answer, and then every
//! other entry if more than half are left. The map compares digests, as the index of the sessions
//! table does; a timing difference there says something about digests, not tokens.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::login::SessionInfo;
use crate::sql::Connection;
use crate::store::sessions::{self, Live};
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// The most sessions kept: about 0.85 KiB each with their answer, so under 56 MiB.
pub const MAX_ENTRIES: usize = 65_536;

/// The most watcher connections (one per core is enough for checks never to queue).
const MAX_WATCHERS: usize = 4;

/// After a watcher fails, how long (seconds) before it is opened again.
const REOPEN_AFTER_SECS: i64 = 1;

/// A live session as a check found it, and its `GET /v1/session` answer.
pub struct Checked {
    pub info: SessionInfo,
    /// `info` serialised as JSON (what [`Checked::answer`] sends).
    json: Bytes,
}

impl Checked {
    fn new(info: SessionInfo) -> Checked {
        let json = serde_json::to_vec(&info).unwrap_or_else(|_| b"{}".to_vec());
        Checked {
            info,
            json: Bytes::from(json),
        }
    }

    /// `info` as JSON, serialised once (the `GET /v1/session` answer's body).
    pub fn json(&self) -> Bytes {
        self.json.clone()
    }

    /// Whether memory may answer for this session at `now`: within its absolute and idle
    /// limits, and not yet due for the `last_seen_at` refresh only the database does.
    fn answerable(&self, now: i64) -> bool {
        let s: &Live = &self.info.session;
        s.expires_at > now
            && s.last_seen_at.saturating_add(self.info.idle_secs) > now
            && now.saturating_sub(s.last_seen_at) < sessions::SEEN_REFRESH_SECS
    }
}

/// What a miss hands to [`SessionCache::fill`]: the key, the epoch read before the
/// database was (None: no watcher could be read, nothing will be kept) and the check's
/// `now`.
pub struct Ticket {
    key: [u8; 32],
    epoch: Option<u64>,
    now: i64,
}

pub enum Lookup {
    Hit(Arc<Checked>),
    Miss(Ticket),
}

/// One watcher connection and its last reading.
#[derive(Default)]
struct Watcher {
    conn: Option<Connection>,
    /// The last `data_version` this connection read (None: none yet).
    last: Option<i64>,
    /// The session epoch (`crate::db::session_epoch`) it read then.
    last_epoch: Option<i64>,
    /// The database's WAL-index header ([`crate::db::WalIndexPeek`]), opened with the
    /// connection (None: there is none to read; every check reads `data_version`).
    peek: Option<crate::db::WalIndexPeek>,
    /// The header as read just *before* the last `data_version` reading: while the
    /// header is still this, that reading is still current and is not repeated.
    last_header: Option<[u8; crate::db::WAL_INDEX_HEADER]>,
    /// Not opened again before this instant (after a failure).
    reopen_at: i64,
}

impl Watcher {
    /// Close after a failure; opened again (as a new watcher) from `now` + a second.
    fn fail(&mut self, now: i64) {
        self.forget(None);
        self.reopen_at = now.saturating_add(REOPEN_AFTER_SECS);
    }

    /// Start again with `conn` (or none): nothing read before it is kept.
    fn forget(&mut self, conn: Option<Connection>) {
        self.conn = conn;
        self.last = None;
        self.last_epoch = None;
        self.peek = None;
        self.last_header = None;
    }
}

/// The entries, all of one epoch.
#[derive(Default)]
struct Entries {
    epoch: u64,
    map: HashMap<[u8; 32], Arc<Checked>>,
}

/// Live session answers kept in memory; see the module documentation.
pub struct SessionCache {
    path: PathBuf,
    max_entries: usize,
    watchers: Vec<Mutex<Watcher>>,
    /// Where the next check starts looking for a free watcher.
    next_watcher: AtomicUsize,
    /// Moves on whenever a watcher sees a commit (or a new watcher starts).
    epoch: Arc<AtomicU64>,
    /// PostgreSQL: the listener that stands in for the watchers (see [`PgListener`]).
    listener: Option<Arc<PgListener>>,
    entries: RwLock<Entries>,
    /// How many `data_version` readings the watchers made (tests only).
    #[cfg(test)]
    sql_readings: AtomicU64,
}

/// A watcher whose lock was poisoned, reset: its next reading starts a new epoch.
fn afresh<'a>(m: &Mutex<Watcher>, mut g: MutexGuard<'a, Watcher>) -> MutexGuard<'a, Watcher> {
    g.forget(None);
    m.clear_poison();
    g
}

fn key_of(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl SessionCache {
    /// A cache for the database at `db`. Nothing is opened until the first check.
    pub fn new(db: &Path) -> SessionCache {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        SessionCache::with_limits(db, MAX_ENTRIES, cores.min(MAX_WATCHERS))
    }

    fn with_limits(db: &Path, max_entries: usize, watchers: usize) -> SessionCache {
        SessionCache {
            path: db.to_path_buf(),
            max_entries: max_entries.max(1),
            watchers: (0..watchers.max(1))
                .map(|_| {
                    Mutex::new(Watcher {
                        reopen_at: i64::MIN,
                        ..Watcher::default()
                    })
                })
                .collect(),
            next_watcher: AtomicUsize::new(0),
            epoch: Arc::new(AtomicU64::new(0)),
            entries: RwLock::new(Entries::default()),
            listener: None,
            #[cfg(test)]
            sql_readings: AtomicU64::new(0),
        }
    }

    /// A cache for the PostgreSQL database at `url`: a listener thread follows the
    /// session epoch's notifications in place of the watchers (see [`PgListener`]).
    pub fn listening(url: &str) -> std::io::Result<SessionCache> {
        let mut cache = SessionCache::with_limits(Path::new(url), MAX_ENTRIES, 1);
        let listener = Arc::new(PgListener::default());
        let (l, epoch, url) = (listener.clone(), cache.epoch.clone(), url.to_string());
        std::thread::Builder::new()
            .name("authd-listen".into())
            .spawn(move || l.run(&url, &epoch))?;
        cache.listener = Some(listener);
        Ok(cache)
    }

    /// A cache that keeps nothing (a read-only core's): no watcher, no listener thread,
    /// so every check asks the database.
    pub fn off(db: &Path) -> SessionCache {
        let mut cache = SessionCache::with_limits(db, 1, 1);
        cache.watchers.clear();
        cache
    }

    /// A watcher for this check: a free one if there is one, else wait for one. After a
    /// panic under its lock, a watcher starts afresh (which starts a new epoch).
    fn watcher(&self) -> MutexGuard<'_, Watcher> {
        let n = self.watchers.len();
        let first = self.next_watcher.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            let m = &self.watchers[(first + i) % n];
            match m.try_lock() {
                Ok(g) => return g,
                Err(std::sync::TryLockError::Poisoned(p)) => return afresh(m, p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        let m = &self.watchers[first];
        match m.lock() {
            Ok(g) => g,
            Err(p) => afresh(m, p.into_inner()),
        }
    }

    /// Read a watcher's `data_version` and return the current epoch, having moved it on
    /// if the watcher saw a commit since its last reading or is new. None on any failure.
    fn observe(&self, now: i64) -> Option<u64> {
        if let Some(l) = &self.listener {
            // Read the epoch before `listening`: a listener that fails after this read
            // moves the epoch on as it stops, so what this check fills is old at once.
            let epoch = self.epoch.load(Ordering::SeqCst);
            return l.listening.load(Ordering::SeqCst).then_some(epoch);
        }
        if self.watchers.is_empty() {
            return None;
        }
        let mut w = self.watcher();
        if w.conn.is_none() {
            if now < w.reopen_at {
                return None;
            }
            match crate::db::open_watcher(&self.path) {
                Ok(c) => w.forget(Some(c)),
                Err(e) => {
                    tracing::debug!(error = %e, "session cache: a watcher cannot open");
                    w.reopen_at = now.saturating_add(REOPEN_AFTER_SECS);
                    return None;
                }
            }
        }
        // No commit since the header was read before this watcher's last reading: that
        // reading (and the epoch it left) is current, no SQL needed. The header is read
        // before `data_version`, so a commit between the two changes it again.
        let header = w.peek.as_ref().and_then(|p| p.header());
        if header.is_some() && header == w.last_header && w.last.is_some() {
            return Some(self.epoch.load(Ordering::SeqCst));
        }
        let conn = w.conn.as_ref()?;
        #[cfg(test)]
        self.sql_readings.fetch_add(1, Ordering::Relaxed);
        // The session epoch is read after data_version: a commit between the two is
        // counted now, and any commit after the epoch read changes data_version again.
        let read = crate::db::data_version(conn).and_then(|v| {
            if w.last == Some(v) {
                return Ok((v, None));
            }
            Ok((v, Some(crate::db::session_epoch(conn)?)))
        });
        match read {
            Ok((v, epoch)) => {
                if let Some(n) = epoch {
                    // A commit, or a watcher without a past. Commits that leave every
                    // session answer as it was (audit rows, flows, second-factor steps,
                    // last_seen_at refreshes) leave the session epoch alone; anything
                    // else, or a watcher that knows nothing before now, may make what
                    // memory holds old.
                    // (A watcher without a past has no last_epoch either.)
                    if w.last_epoch != Some(n) {
                        self.epoch.fetch_add(1, Ordering::SeqCst);
                    }
                    w.last = Some(v);
                    w.last_epoch = Some(n);
                }
                if w.peek.is_none() {
                    // The `-shm` file exists once a connection has read the database
                    // (this one just has); a header read now is before no reading, so
                    // it is not kept: the next check reads `data_version` once more.
                    w.peek = crate::db::WalIndexPeek::open(&self.path);
                    w.last_header = None;
                } else {
                    w.last_header = header;
                }
                Some(self.epoch.load(Ordering::SeqCst))
            }
            Err(e) => {
                tracing::debug!(error = %e, "session cache: a watcher cannot read");
                w.fail(now);
                None
            }
        }
    }

    fn entries_read(&self) -> Option<std::sync::RwLockReadGuard<'_, Entries>> {
        self.entries.read().ok()
    }

    fn entries_write(&self) -> std::sync::RwLockWriteGuard<'_, Entries> {
        match self.entries.write() {
            Ok(g) => g,
            Err(p) => {
                let mut g = p.into_inner();
                g.map.clear();
                self.entries.clear_poison();
                g
            }
        }
    }

    /// Answer from memory when no commit can have been missed since the entry was filled
    /// and the session is answerable at `now`; otherwise a ticket for the database read
    /// and the [`SessionCache::fill`] after it.
    pub fn lookup(&self, token: &str, now: i64) -> Lookup {
        let key = key_of(token);
        let epoch = self.observe(now);
        let mut stale = false;
        if let (Some(epoch), Some(entries)) = (epoch, self.entries_read()) {
            if entries.epoch == epoch {
                if let Some(c) = entries.map.get(&key) {
                    if c.answerable(now) {
                        return Lookup::Hit(c.clone());
                    }
                    stale = true;
                }
            }
        }
        if stale {
            self.entries_write().map.remove(&key);
        }
        Lookup::Miss(Ticket { key, epoch, now })
    }

    /// Keep what the database answered after `ticket`'s lookup (unless the epoch has
    /// moved on since), and hand it back.
    pub fn fill(&self, ticket: Ticket, info: Option<SessionInfo>) -> Option<Arc<Checked>> {
        let checked = Arc::new(Checked::new(info?));
        let Some(epoch) = ticket.epoch else {
            return Some(checked);
        };
        let mut dropped = None;
        {
            let mut entries = self.entries_write();
            if epoch > entries.epoch {
                // Everything kept is of an older epoch.
                dropped = Some(std::mem::take(&mut entries.map));
                entries.epoch = epoch;
            } else if entries.map.len() >= self.max_entries {
                entries.map.retain(|_, c| c.answerable(ticket.now));
                if entries.map.len() > self.max_entries / 2 {
                    // More live sessions than room: drop every other entry (the map's
                    // order is arbitrary), so that sessions checked in turn still find
                    // about half of the others in memory instead of none.
                    let mut n = 0usize;
                    entries.map.retain(|_, _| {
                        n += 1;
                        n.is_multiple_of(2)
                    });
                }
            }
            if epoch == entries.epoch {
                entries.map.insert(ticket.key, checked.clone());
            }
        }
        // Freed outside the lock.
        drop(dropped);
        Some(checked)
    }

    /// What a PostgreSQL connection of this core calls when its own commit (or any
    /// notification it received) moved the session epoch: a new epoch at once, so this
    /// node's next check sees its own change without waiting for the listener.
    pub fn epoch_hook(&self) -> crate::sql::EpochHook {
        let epoch = self.epoch.clone();
        Arc::new(move || {
            epoch.fetch_add(1, Ordering::SeqCst);
        })
    }

    /// Whether the PostgreSQL listener is listening (None: SQLite, no listener).
    pub fn listening_now(&self) -> Option<bool> {
        self.listener
            .as_ref()
            .map(|l| l.listening.load(Ordering::SeqCst))
    }

    /// Every watcher fails as on a read error at `now`.
    #[cfg(test)]
    fn fail_watchers(&self, now: i64) {
        for w in &self.watchers {
            w.lock().unwrap().fail(now);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries_write().map.len()
    }
}

impl Drop for SessionCache {
    fn drop(&mut self) {
        if let Some(l) = &self.listener {
            l.stop.store(true, Ordering::SeqCst);
        }
    }
}

/// The notification channel of the session epoch (`schema.postgres.sql`'s trigger
/// function notifies it in the transaction that moves the epoch; PostgreSQL delivers it
/// to every listening session when that transaction commits).
pub const EPOCH_CHANNEL: &str = "authd_session_epoch";

/// How often the listener reads the epoch row (and so the longest a commit whose
/// notification is late stays unseen), sees whether it should stop, and whether its
/// connection still answers.
const LISTEN_TICK: std::time::Duration = std::time::Duration::from_millis(50);

/// On PostgreSQL, commits by other nodes are not visible as SQLite's `data_version`: a
/// listener connection LISTENs on [`EPOCH_CHANNEL`] instead, every notification moves
/// the cache to a new epoch, and every [`LISTEN_TICK`] it also reads the epoch row itself
/// and moves the epoch when the row moved. Memory answers only while the listener is
/// connected and listening; when its connection fails it stops answering (every check
/// goes to the database), moves the epoch on, and reconnects once a second; a new
/// listener knows nothing of what it missed, so it moves the epoch on when it starts.
///
/// Staleness bound: a change committed on any node is refused by another node's check
/// that starts after this listener heard of it — by the notification PostgreSQL sends as
/// the transaction commits (loopback: a few milliseconds), and at the latest by the next
/// read of the epoch row, at most [`LISTEN_TICK`] plus one query later. The row read is
/// what makes the bound: under load PostgreSQL now and then delivered a notification to
/// some listeners seconds late (measured: 0.1–4.6 s, to every other node at the same
/// moment), and a bound that waits on delivery alone would let a revoked session through
/// for that long. `tests/it/nodes.rs` measures both.
#[derive(Default)]
pub struct PgListener {
    listening: std::sync::atomic::AtomicBool,
    stop: std::sync::atomic::AtomicBool,
}

impl PgListener {
    fn run(&self, url: &str, epoch: &AtomicU64) {
        while !self.stop.load(Ordering::SeqCst) {
            match crate::db::pg::connect(url) {
                Ok(conn) => {
                    let r = conn
                        .with_pg_client(|c| self.listen(c, epoch))
                        .unwrap_or(Ok(()));
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "session cache: the PostgreSQL listener lost its connection; checks go to the database until it is back");
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "session cache: the listener cannot connect")
                }
            }
            self.listening.store(false, Ordering::SeqCst);
            epoch.fetch_add(1, Ordering::SeqCst);
            if !self.stop.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_secs(REOPEN_AFTER_SECS as u64));
            }
        }
    }

    fn listen(
        &self,
        c: &mut postgres::Client,
        epoch: &AtomicU64,
    ) -> std::result::Result<(), postgres::Error> {
        c.batch_execute(&format!("LISTEN {EPOCH_CHANNEL}"))?;
        // Prepared once: every tick is then one round trip.
        let row = c.prepare("SELECT n FROM session_epoch WHERE id = 1")?;
        let read_epoch = |c: &mut postgres::Client| -> std::result::Result<i64, postgres::Error> {
            c.query_one(&row, &[])?.try_get(0)
        };
        // The epoch row as of now: anything committed before this read is in it, and
        // anything after it moves it (and notifies).
        let mut seen = read_epoch(c)?;
        epoch.fetch_add(1, Ordering::SeqCst);
        self.listening.store(true, Ordering::SeqCst);
        while !self.stop.load(Ordering::SeqCst) {
            {
                let mut notes = c.notifications();
                let mut it = notes.timeout_iter(LISTEN_TICK);
                while let Some(_n) = postgres::fallible_iterator::FallibleIterator::next(&mut it)? {
                    epoch.fetch_add(1, Ordering::SeqCst);
                }
            }
            // A notification PostgreSQL is late to deliver (measured: seconds, now and
            // then, under load) must not keep a revoked session alive: the epoch row
            // itself is read every tick, which also shows a connection lost without a
            // word.
            let now = read_epoch(c)?;
            if now != seen {
                seen = now;
                epoch.fetch_add(1, Ordering::SeqCst);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{self, Location};
    use crate::login;
    use crate::store::users::{self, NewUser, Role};

    const T0: i64 = 1_800_000_000;

    struct Fx {
        _dir: tempfile::TempDir,
        path: PathBuf,
        /// The daemon's own connection (what the pool would hand out).
        daemon: Connection,
        /// Another connection to the same file (authctl, another pooled connection).
        other: Connection,
    }

    impl Fx {
        fn new() -> Fx {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("auth.db");
            let (conn, _key) = db::create(&Location::new(path.clone(), None)).unwrap();
            drop(conn);
            Fx {
                daemon: db::open(&path).unwrap(),
                other: db::open(&path).unwrap(),
                path,
                _dir: dir,
            }
        }

        /// A user (through the other connection) with one session of `absolute` seconds
        /// created at `now`: (user id, session token).
        fn user_with_session(&self, name: &str, absolute: i64, now: i64) -> (i64, String) {
            let u = users::create(
                &self.other,
                &NewUser {
                    username: name,
                    email: &format!("{name}@example.org"),
                    org: None,
                    groups: &[],
                    role: Role::User,
                    password_hash: None,
                    must_change_password: false,
                },
                now,
            )
            .unwrap();
            let (_, token) =
                sessions::create(&self.other, u.id, "127.0.0.1", "test", absolute, "pwd", now)
                    .unwrap();
            (u.id, token)
        }

        /// A cache with one watcher (with several, each one's first reading after a
        /// commit starts a new epoch: more misses, which tests of hits would have to
        /// count; see `every_watcher_sees_every_commit`).
        fn cache(&self) -> SessionCache {
            SessionCache::with_limits(&self.path, MAX_ENTRIES, 1)
        }

        /// What the daemon does for one check: lookup, else the database and fill.
        /// Returns (the answer, whether memory gave it).
        fn check(&self, cache: &SessionCache, token: &str, now: i64) -> (Option<String>, bool) {
            match cache.lookup(token, now) {
                Lookup::Hit(c) => (Some(c.info.user.username.clone()), true),
                Lookup::Miss(t) => {
                    let info = login::check_session(&self.daemon, token, now).unwrap();
                    let c = cache.fill(t, info);
                    (c.map(|c| c.info.user.username.clone()), false)
                }
            }
        }

        fn last_seen(&self, token: &str) -> i64 {
            self.other
                .query_row(
                    "SELECT last_seen_at FROM sessions WHERE token_hash=?1",
                    [crate::crypto::hash_token(token)],
                    |r| r.get(0),
                )
                .unwrap()
        }
    }

    fn alice() -> Option<String> {
        Some("alice".to_string())
    }

    #[test]
    fn a_cached_session_is_answered_from_memory() {
        let fx = Fx::new();
        let (_, token) = fx.user_with_session("alice", 3600, T0);
        let cache = fx.cache();
        assert_eq!(fx.check(&cache, &token, T0 + 1), (alice(), false));
        assert_eq!(fx.check(&cache, &token, T0 + 2), (alice(), true));
        assert_eq!(fx.check(&cache, &token, T0 + 59), (alice(), true));
        // The answer is the database's, byte for byte.
        let Lookup::Hit(c) = cache.lookup(&token, T0 + 3) else {
            panic!("not cached")
        };
        let fresh = login::check_session(&fx.other, &token, T0 + 3)
            .unwrap()
            .unwrap();
        assert_eq!(c.json, serde_json::to_vec(&fresh).unwrap());
        // Unknown and malformed tokens are never answered from memory.
        assert_eq!(fx.check(&cache, "nope", T0 + 3), (None, false));
        assert_eq!(fx.check(&cache, "nope", T0 + 4), (None, false));
        assert_eq!(fx.check(&cache, "", T0 + 4), (None, false));
        assert_eq!(cache.len(), 1);
    }

    /// Fill the cache for `token`, let the other connection commit `change`, and check
    /// again: the change must be seen on the very next check.
    fn seen_next_check(change: impl FnOnce(&Connection, i64, &str)) -> (Option<String>, bool) {
        let fx = Fx::new();
        let (id, token) = fx.user_with_session("alice", 3600, T0);
        let cache = fx.cache();
        fx.check(&cache, &token, T0 + 1);
        assert_eq!(fx.check(&cache, &token, T0 + 2), (alice(), true));
        change(&fx.other, id, &token);
        fx.check(&cache, &token, T0 + 3)
    }

    #[test]
    fn a_revoke_by_another_connection_is_seen_on_the_next_check() {
        let r = seen_next_check(|c, _, token| {
            assert!(sessions::revoke_token(c, token, T0 + 2).unwrap());
        });
        assert_eq!(r, (None, false));
    }

    #[test]
    fn a_disabled_user_is_refused_on_the_next_check() {
        let r = seen_next_check(|c, id, _| users::set_disabled(c, id, true, T0 + 2).unwrap());
        assert_eq!(r, (None, false));
        // Disabled alone (sessions left in place) is refused too.
        let r = seen_next_check(|c, id, _| {
            c.execute("UPDATE users SET disabled=1 WHERE id=?1", [id])
                .unwrap();
        });
        assert_eq!(r, (None, false));
    }

    #[test]
    fn a_locked_user_is_refused_on_the_next_check() {
        // A lock ends flows, not sessions: only the user row says no.
        let r = seen_next_check(|c, id, _| {
            assert!(users::record_failure(c, id, 1, T0 + 2).unwrap());
        });
        assert_eq!(r, (None, false));
    }

    #[test]
    fn a_deleted_user_is_refused_on_the_next_check() {
        let r = seen_next_check(|c, id, _| users::delete(c, id).unwrap());
        assert_eq!(r, (None, false));
    }

    #[test]
    fn an_edited_user_is_answered_as_edited() {
        let fx = Fx::new();
        let (id, token) = fx.user_with_session("alice", 3600, T0);
        let cache = fx.cache();
        fx.check(&cache, &token, T0 + 1);
        assert!(matches!(cache.lookup(&token, T0 + 2), Lookup::Hit(_)));
        users::set_email(&fx.other, id, "new@example.org", T0 + 2).unwrap();
        let email = |l: Lookup| match l {
            Lookup::Hit(c) => Some(c.info.user.email.clone()),
            Lookup::Miss(_) => None,
        };
        assert_eq!(email(cache.lookup(&token, T0 + 3)), None, "not from memory");
        fx.check(&cache, &token, T0 + 3);
        assert_eq!(
            email(cache.lookup(&token, T0 + 4)).as_deref(),
            Some("new@example.org")
        );
    }

    #[test]
    fn commits_that_change_no_answer_keep_memory() {
        let fx = Fx::new();
        let (id, token) = fx.user_with_session("alice", 3600, T0);
        let cache = fx.cache();
        fx.check(&cache, &token, T0 + 1);
        assert_eq!(fx.check(&cache, &token, T0 + 2), (alice(), true));
        // What logins write all day long: another user's session, a counted failure,
        // a rewritten row with the same values, audit rows, a last_seen_at refresh.
        fx.user_with_session("bob", 3600, T0 + 2);
        fx.other
            .execute(
                "UPDATE users SET failed_attempts = failed_attempts + 1, locked_at = NULL,
                 updated_at = ?2 WHERE id = ?1",
                [id, T0 + 2],
            )
            .unwrap();
        fx.other
            .execute(
                "INSERT INTO audit(at, event, outcome, actor, username) VALUES (?1, 'login.password', 'failure', 'test', 'alice')",
                [T0 + 2],
            )
            .unwrap();
        fx.other
            .execute(
                "UPDATE sessions SET last_seen_at = last_seen_at + 1 WHERE user_id = ?1",
                [id],
            )
            .unwrap();
        assert_eq!(fx.check(&cache, &token, T0 + 3), (alice(), true));
        // A change that does show in the answer is not kept from it.
        users::set_role(&fx.other, id, Role::OrgAdmin, T0 + 3).unwrap();
        assert_eq!(fx.check(&cache, &token, T0 + 4), (alice(), false));
    }

    #[test]
    fn group_org_and_role_changes_are_seen_on_the_next_check() {
        let fx = Fx::new();
        let (id, token) = fx.user_with_session("alice", 3600, T0);
        let cache = fx.cache();
        let seen = |now| match cache.lookup(&token, now) {
            Lookup::Hit(c) => Some((c.info.user.groups.clone(), c.info.user.org.clone())),
            Lookup::Miss(t) => {
                let info = login::check_session(&fx.daemon, &token, now).unwrap();
                cache.fill(t, info);
                None
            }
        };
        seen(T0 + 1);
        let (groups, org) = seen(T0 + 2).expect("from memory");
        assert!(groups.is_empty());
        crate::store::orgs::add_group(&fx.other, "staff", false, T0 + 2).unwrap();
        assert!(
            seen(T0 + 3).is_some(),
            "a new group alone changes no answer"
        );
        users::add_to_group(&fx.other, id, "staff").unwrap();
        assert_eq!(
            seen(T0 + 4),
            None,
            "a new membership is not answered from memory"
        );
        assert_eq!(seen(T0 + 5).unwrap().0, vec!["staff".to_string()]);
        fx.other
            .execute("UPDATE groups SET name = 'Staff' WHERE name = 'staff'", ())
            .unwrap();
        assert_eq!(seen(T0 + 6), None, "a renamed group");
        assert_eq!(seen(T0 + 7).unwrap().0, vec!["Staff".to_string()]);
        fx.other
            .execute("UPDATE orgs SET name = 'Renamed' WHERE name = ?1", [&org])
            .unwrap();
        assert_eq!(seen(T0 + 8), None, "a renamed organisation");
        assert_eq!(seen(T0 + 9).unwrap().1, "Renamed");
        fx.other.execute("DELETE FROM memberships", ()).unwrap();
        assert_eq!(seen(T0 + 10), None, "a membership removed");
        assert!(seen(T0 + 11).unwrap().0.is_empty());
    }

    /// While nothing commits, checks answered from memory make no SQL reading at all
    /// (the WAL-index header is unchanged); the first check after another connection's
    /// commit reads `data_version` and sees it.
    #[test]
    fn checks_read_no_sql_until_another_connection_commits() {
        let fx = Fx::new();
        let (id, token) = fx.user_with_session("alice", 3600, T0);
        let cache = SessionCache::with_limits(&fx.path, MAX_ENTRIES, 1);
        let readings = || cache.sql_readings.load(Ordering::Relaxed);
        // The first readings open the watcher and its header, then keep a header.
        for now in T0 + 1..T0 + 4 {
            fx.check(&cache, &token, now);
        }
        let before = readings();
        for _ in 0..100 {
            assert_eq!(fx.check(&cache, &token, T0 + 4), (alice(), true));
        }
        assert_eq!(readings(), before, "no commit: no data_version reading");
        // A commit that changes no answer (the same address again): one reading, the
        // answer still from memory, and no more readings after it.
        users::set_email(&fx.other, id, "alice@example.org", T0 + 4).unwrap();
        assert_eq!(fx.check(&cache, &token, T0 + 5), (alice(), true));
        assert_eq!(readings(), before + 1);
        assert_eq!(fx.check(&cache, &token, T0 + 5), (alice(), true));
        assert_eq!(fx.check(&cache, &token, T0 + 5), (alice(), true));
        assert_eq!(
            readings(),
            before + 1,
            "the header kept is the one read before"
        );
        // An edit that changes the answer is answered as edited.
        users::set_email(&fx.other, id, "a2@example.org", T0 + 5).unwrap();
        let Lookup::Miss(_) = cache.lookup(&token, T0 + 6) else {
            panic!("an edited user answered from memory");
        };
        assert_eq!(readings(), before + 2);
        // A revoke by the other connection is seen on the very next check.
        assert!(sessions::revoke_token(&fx.other, &token, T0 + 5).unwrap());
        assert_eq!(fx.check(&cache, &token, T0 + 6), (None, false));
    }

    /// The header is read straight from the `-shm` file: two copies that agree,
    /// initialised; a commit by any connection changes it.
    #[test]
    fn the_wal_index_header_moves_with_every_commit() {
        let fx = Fx::new();
        let peek = db::WalIndexPeek::open(&fx.path).expect("a -shm file in WAL mode");
        let h0 = peek.header().expect("an initialised header");
        assert_eq!(peek.header(), Some(h0), "nothing committed, nothing moves");
        fx.user_with_session("alice", 3600, T0);
        let h1 = peek.header().unwrap();
        assert_ne!(h1, h0);
        fx.daemon
            .execute_batch("CREATE TABLE t(x); DROP TABLE t;")
            .unwrap();
        assert_ne!(peek.header().unwrap(), h1);
        // Without a -shm file there is nothing to peek at.
        assert!(db::WalIndexPeek::open(&fx.path.with_extension("none")).is_none());
    }

    #[test]
    fn every_watcher_sees_every_commit() {
        let fx = Fx::new();
        let (id, token) = fx.user_with_session("alice", 3600, T0);
        let cache = SessionCache::with_limits(&fx.path, MAX_ENTRIES, 3);
        // One check at a time takes the watchers in turn.
        let email = |now| match cache.lookup(&token, now) {
            Lookup::Hit(c) => (c.info.user.email.clone(), true),
            Lookup::Miss(t) => {
                let info = login::check_session(&fx.daemon, &token, now).unwrap();
                (cache.fill(t, info).unwrap().info.user.email.clone(), false)
            }
        };
        for round in 0..4 {
            let want = format!("r{round}@example.org");
            users::set_email(&fx.other, id, &want, T0 + 1).unwrap();
            // Each watcher's first reading after the commit starts a new epoch.
            let seen: Vec<(String, bool)> = (0..6).map(|_| email(T0 + 2)).collect();
            let hits: Vec<bool> = seen.iter().map(|(_, hit)| *hit).collect();
            assert!(seen.iter().all(|(e, _)| *e == want), "{round}: {seen:?}");
            assert_eq!(hits, [false, false, false, true, true, true], "{round}");
        }
    }

    /// Checks on several threads (each with its own pooled-like connection) while another
    /// connection revokes: no check that starts after the revoke returned says "live".
    #[test]
    fn concurrent_checks_never_outlive_a_revoke() {
        use std::sync::atomic::AtomicBool;
        let fx = Fx::new();
        let cache = SessionCache::with_limits(&fx.path, MAX_ENTRIES, 2);
        let path = &fx.path;
        for round in 0..20 {
            let (_, token) = fx.user_with_session(&format!("u{round}"), 3600, T0);
            let revoked = AtomicBool::new(false);
            let hits = AtomicUsize::new(0);
            std::thread::scope(|s| {
                for _ in 0..3 {
                    s.spawn(|| {
                        let conn = db::open(path).unwrap();
                        // Until 50 checks have started after the revoke.
                        let mut after = 0;
                        while after < 50 {
                            let after_revoke = revoked.load(Ordering::SeqCst);
                            after += usize::from(after_revoke);
                            let live = match cache.lookup(&token, T0 + 1) {
                                Lookup::Hit(_) => {
                                    hits.fetch_add(1, Ordering::Relaxed);
                                    true
                                }
                                Lookup::Miss(t) => {
                                    let info = login::check_session(&conn, &token, T0 + 1).unwrap();
                                    cache.fill(t, info).is_some()
                                }
                            };
                            assert!(
                                !(after_revoke && live),
                                "round {round}: live after the revoke"
                            );
                        }
                    });
                }
                // Revoke once memory answers.
                let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while hits.load(Ordering::Relaxed) == 0 && std::time::Instant::now() < give_up {
                    std::thread::yield_now();
                }
                assert!(sessions::revoke_token(&fx.other, &token, T0 + 1).unwrap());
                revoked.store(true, Ordering::SeqCst);
            });
            assert!(
                hits.load(Ordering::Relaxed) > 0,
                "round {round}: never from memory"
            );
        }
    }

    #[test]
    fn a_commit_racing_the_fill_is_seen_on_the_next_check() {
        let fx = Fx::new();
        let (_, token) = fx.user_with_session("alice", 3600, T0);
        let cache = fx.cache();
        let Lookup::Miss(ticket) = cache.lookup(&token, T0 + 1) else {
            panic!("empty cache answered")
        };
        // The database answers "live"; the revoke commits before the answer is kept.
        let info = login::check_session(&fx.daemon, &token, T0 + 1).unwrap();
        assert!(info.is_some());
        sessions::revoke_token(&fx.other, &token, T0 + 1).unwrap();
        assert!(cache.fill(ticket, info).is_some());
        assert_eq!(fx.check(&cache, &token, T0 + 2), (None, false));
    }

    #[test]
    fn a_policy_change_is_seen_on_the_next_check() {
        let fx = Fx::new();
        let (_, token) = fx.user_with_session("alice", 3600, T0);
        let cache = fx.cache();
        // Refreshed at T0 + 100 (a commit that moves no session epoch: memory answers
        // at T0 + 101); a 30 min idle limit keeps it live at T0 + 130.
        assert_eq!(fx.check(&cache, &token, T0 + 100), (alice(), false));
        assert_eq!(fx.check(&cache, &token, T0 + 101), (alice(), true));
        assert_eq!(fx.check(&cache, &token, T0 + 130), (alice(), true));
        crate::policy::set(&fx.other, "session.idle_minutes", "1", T0 + 130).unwrap();
        // Still answerable by the old limit; the new one says idle since T0 + 160.
        assert_eq!(fx.check(&cache, &token, T0 + 140), (alice(), false));
        assert_eq!(fx.check(&cache, &token, T0 + 150), (alice(), true));
        assert_eq!(fx.check(&cache, &token, T0 + 160), (None, false));
    }

    #[test]
    fn absolute_expiry_refuses_at_its_second() {
        let fx = Fx::new();
        let (_, token) = fx.user_with_session("alice", 30, T0);
        let cache = fx.cache();
        fx.check(&cache, &token, T0);
        assert_eq!(fx.check(&cache, &token, T0 + 29), (alice(), true));
        assert_eq!(fx.check(&cache, &token, T0 + 30), (None, false));
        assert_eq!(fx.check(&cache, &token, T0 + 31), (None, false));
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn idle_expiry_refuses_at_its_second() {
        let fx = Fx::new();
        crate::policy::set(&fx.other, "session.idle_minutes", "1", T0).unwrap();
        let (_, token) = fx.user_with_session("alice", 3600, T0);
        let cache = fx.cache();
        fx.check(&cache, &token, T0 + 10);
        assert_eq!(fx.check(&cache, &token, T0 + 59), (alice(), true));
        assert_eq!(fx.check(&cache, &token, T0 + 60), (None, false));
        assert_eq!(fx.last_seen(&token), T0);
    }

    #[test]
    fn the_last_seen_refresh_goes_through_the_database() {
        let fx = Fx::new();
        let (_, token) = fx.user_with_session("alice", 3600, T0);
        let cache = fx.cache();
        fx.check(&cache, &token, T0 + 1);
        assert_eq!(fx.check(&cache, &token, T0 + 59), (alice(), true));
        assert_eq!(fx.last_seen(&token), T0);
        // Due at T0 + 60: the database answers and refreshes.
        assert_eq!(fx.check(&cache, &token, T0 + 60), (alice(), false));
        assert_eq!(fx.last_seen(&token), T0 + 60);
        // That commit changed only last_seen_at, which no other answer depends on: the
        // session epoch stays, and memory answers (with the refreshed row) until the
        // next refresh is due; the idle limit counts from the refresh.
        assert_eq!(fx.check(&cache, &token, T0 + 61), (alice(), true));
        assert_eq!(fx.check(&cache, &token, T0 + 119), (alice(), true));
        assert_eq!(fx.check(&cache, &token, T0 + 120), (alice(), false));
        assert_eq!(fx.last_seen(&token), T0 + 120);
    }

    #[test]
    fn without_a_watcher_nothing_is_answered_from_memory() {
        let fx = Fx::new();
        let (_, token) = fx.user_with_session("alice", 3600, T0);
        let cache = SessionCache::new(&fx.path.with_file_name("missing.db"));
        for t in 1..4 {
            assert_eq!(fx.check(&cache, &token, T0 + t), (alice(), false));
        }
        assert_eq!(cache.len(), 0);
        assert!(!fx.path.with_file_name("missing.db").exists());
    }

    #[test]
    fn a_cache_that_is_off_asks_the_database_every_time() {
        let fx = Fx::new();
        let (_, token) = fx.user_with_session("alice", 3600, T0);
        let cache = SessionCache::off(&fx.path);
        for t in 1..4 {
            assert_eq!(fx.check(&cache, &token, T0 + t), (alice(), false));
        }
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_failed_watcher_trusts_nothing_until_it_reads_again() {
        let fx = Fx::new();
        let (_, token) = fx.user_with_session("alice", 3600, T0);
        let cache = fx.cache();
        fx.check(&cache, &token, T0 + 1);
        assert_eq!(fx.check(&cache, &token, T0 + 2), (alice(), true));
        // The watcher fails; a revoke commits before it is opened again.
        cache.fail_watchers(T0 + 2);
        assert_eq!(fx.check(&cache, &token, T0 + 2), (alice(), false));
        sessions::revoke_token(&fx.other, &token, T0 + 2).unwrap();
        // The new watcher knows nothing of what came before it: nothing old is answered.
        assert_eq!(fx.check(&cache, &token, T0 + 3), (None, false));
        let (_, token) = fx.user_with_session("bob", 3600, T0 + 3);
        fx.check(&cache, &token, T0 + 4);
        assert!(matches!(cache.lookup(&token, T0 + 5), Lookup::Hit(_)));
    }

    #[test]
    fn a_full_cache_keeps_what_it_can_still_answer() {
        let fx = Fx::new();
        let early: Vec<String> = ["e1", "e2"]
            .iter()
            .map(|n| fx.user_with_session(n, 3600, T0).1)
            .collect();
        let late: Vec<String> = ["l1", "l2", "l3"]
            .iter()
            .map(|n| fx.user_with_session(n, 3600, T0 + 100).1)
            .collect();
        let cache = SessionCache::with_limits(&fx.path, 4, 1);
        for t in &early {
            fx.check(&cache, t, T0 + 30);
        }
        for t in &late[..2] {
            fx.check(&cache, t, T0 + 110);
        }
        assert_eq!(cache.len(), 4);
        // Full: the early entries (due for their refresh) make room.
        fx.check(&cache, &late[2], T0 + 110);
        assert_eq!(cache.len(), 3);
        for t in &late {
            assert!(matches!(cache.lookup(t, T0 + 111), Lookup::Hit(_)));
        }
    }

    #[test]
    fn a_full_cache_drops_half_and_keeps_the_newest() {
        let fx = Fx::new();
        let cache = SessionCache::with_limits(&fx.path, 4, 1);
        let tokens: Vec<String> = ["a1", "a2", "a3", "a4", "a5"]
            .iter()
            .map(|n| fx.user_with_session(n, 3600, T0).1)
            .collect();
        for t in &tokens {
            fx.check(&cache, t, T0 + 1);
        }
        // Four live entries filled it; the fifth made room by dropping two.
        assert_eq!(cache.len(), 3);
        assert!(matches!(cache.lookup(&tokens[4], T0 + 2), Lookup::Hit(_)));
        let hits = tokens[..4]
            .iter()
            .filter(|t| matches!(cache.lookup(t, T0 + 2), Lookup::Hit(_)))
            .count();
        assert_eq!(hits, 2, "half of the older entries are still answered");
    }
}
