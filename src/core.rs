//! [`Core`]: the one handle on the core that every front end holds. It owns what the
//! decisions of one database need — the key, a pool of connections, the group-commit
//! writer ([`crate::group_commit`]) and the background WAL checkpoints, the session
//! cache ([`crate::session_cache`]) and the clock — and its methods are the decisions.
//! Two `Core`s on two databases share nothing.
//!
//! A read-only core ([`Core::start_read_only`], authctl's commands that only read) starts
//! no thread: no writer, no checkpoint thread, no PostgreSQL listener. Its connections
//! refuse every write ([`crate::db::forbid_writes`]), its writer answers every step
//! [`crate::group_commit::WriteError::Unavailable`], its session cache keeps nothing;
//! having written nothing, it has nothing to seal.
//!
//! A `Core` is cheap to clone (one `Arc`). Its methods block (SQLite, argon2): async
//! front ends call them from blocking threads.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sql::Connection;

use crate::admin::{self, Actor};
use crate::breached::{CoreList, ListError};
use crate::crypto::SecretKey;
use crate::error::Result;
use crate::group_commit::GroupCommit;
use crate::login::SessionInfo;
use crate::password::Hashing;
use crate::session_cache::{Checked, Lookup, SessionCache};
use crate::store::factors::ResetSummary;
use crate::store::users::User;

/// Idle connections kept for reuse.
const POOL_IDLE: usize = 16;

/// How often the background thread copies the WAL back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// When the background thread prunes the audit log to its retention.
#[derive(Debug, Clone, Copy)]
struct Retention {
    first_after: Duration,
    every: Duration,
}

impl Retention {
    const DAILY: Retention = Retention {
        first_after: Duration::from_secs(60),
        every: Duration::from_secs(24 * 3600),
    };
}

/// What reads the time: [`crate::util::now`] in the binaries, a fixed or stepped time in
/// tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// A small pool of connections to one database file. Commits stay short: its
/// connections never checkpoint the WAL (the checkpoint thread does).
struct Pool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// PostgreSQL: what a connection calls when it sees the session epoch move.
    epoch_hook: crate::sql::EpochHook,
    /// A read-only core's pool: its connections refuse every write.
    read_only: bool,
    /// The core's breached-password list, lent to every connection it prepares.
    breached: Arc<CoreList>,
}

impl Pool {
    fn take(&self) -> Result<Connection> {
        if let Some(c) = self.idle.lock().ok().and_then(|mut v| v.pop()) {
            return Ok(c);
        }
        self.prepare(crate::db::open(&self.path)?)
    }

    /// A connection made ready for the pool: no checkpoints on requests, the epoch heard;
    /// for a read-only core, no writes at all (it commits nothing, caches nothing).
    fn prepare(&self, mut c: Connection) -> Result<Connection> {
        c.lend_breached_list(self.breached.clone());
        if self.read_only {
            crate::db::forbid_writes(&c)?;
            return Ok(c);
        }
        crate::db::defer_checkpoints(&c)?;
        c.listen_for_epoch(crate::session_cache::EPOCH_CHANNEL, self.epoch_hook.clone())?;
        Ok(c)
    }

    fn give(&self, c: Connection) {
        if c.is_broken() {
            // PostgreSQL went away (a restart, a failover): the idle connections to it
            // are as dead as this one; the next requests connect afresh instead of
            // meeting them one by one.
            if let Ok(mut v) = self.idle.lock() {
                v.clear();
            }
            return;
        }
        if let Ok(mut v) = self.idle.lock() {
            // A connection opened read-only (the file was unwritable then) is not kept
            // by a core that writes: it would refuse writes after the file is writable
            // again.
            let fits = self.read_only || !crate::db::is_read_only(&c);
            if v.len() < POOL_IDLE && c.is_autocommit() && fits && !c.is_broken() {
                v.push(c);
            }
        }
    }
}

struct Inner {
    path: PathBuf,
    key: SecretKey,
    hashing: Hashing,
    pool: Pool,
    writer: GroupCommit,
    sessions: SessionCache,
    clock: Clock,
    /// The WebAuthn relying party, when passkeys are on (set once at start-up).
    relying_party: std::sync::OnceLock<Arc<crate::passkey::RelyingParty>>,
    /// The checkpoint thread and what stops it (None for a read-only core). Dropped with
    /// the core: the thread then seals what is left of the audit log and stops, and the
    /// drop waits for it.
    checkpoints: Option<Checkpoints>,
}

struct Checkpoints {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(Checkpoints { stop, thread }) = self.checkpoints.take() {
            drop(stop);
            let _ = thread.join();
        }
    }
}

/// The handle on one database's core; see the module documentation.
#[derive(Clone)]
pub struct Core(Arc<Inner>);

impl Core {
    /// The core of the database at `path` (opened and migrated already), with its key,
    /// hashing slots and clock: starts its writer and checkpoint threads.
    pub fn start(
        path: &Path,
        key: SecretKey,
        hashing: Hashing,
        clock: Clock,
    ) -> std::io::Result<Core> {
        let (stop, stopped) = mpsc::channel();
        let checkpointer = spawn_checkpointer(
            path.to_path_buf(),
            key.clone(),
            clock.clone(),
            Retention::DAILY,
            stopped,
        )?;
        let sessions = match crate::db::postgres_url(path) {
            Some(url) => SessionCache::listening(url)?,
            None => SessionCache::new(path),
        };
        let breached = Arc::new(CoreList::default());
        let writer = GroupCommit::start_with(
            path.to_path_buf(),
            Some(key.clone()),
            sessions.epoch_hook(),
            breached.clone(),
        )?;
        let checkpoints = Checkpoints {
            stop,
            thread: checkpointer,
        };
        Ok(Core::assemble(
            path,
            key,
            hashing,
            clock,
            sessions,
            (writer, breached),
            Some(checkpoints),
        ))
    }

    /// The core of the database at `path` (opened and migrated already) for commands that
    /// only read: starts no thread, and refuses every write (see the module
    /// documentation).
    pub fn start_read_only(path: &Path, key: SecretKey, hashing: Hashing, clock: Clock) -> Core {
        Core::assemble(
            path,
            key,
            hashing,
            clock,
            SessionCache::off(path),
            (GroupCommit::closed(), Arc::default()),
            None,
        )
    }

    /// A core without checkpoint thread is a read-only one. `breached` is the list its
    /// writer's connection was lent already.
    fn assemble(
        path: &Path,
        key: SecretKey,
        hashing: Hashing,
        clock: Clock,
        sessions: SessionCache,
        (writer, breached): (GroupCommit, Arc<CoreList>),
        checkpoints: Option<Checkpoints>,
    ) -> Core {
        Core(Arc::new(Inner {
            path: path.to_path_buf(),
            key,
            hashing,
            pool: Pool {
                path: path.to_path_buf(),
                idle: Mutex::new(Vec::new()),
                epoch_hook: sessions.epoch_hook(),
                read_only: checkpoints.is_none(),
                breached,
            },
            writer,
            sessions,
            clock,
            relying_party: std::sync::OnceLock::new(),
            checkpoints,
        }))
    }

    /// Whether this core only reads ([`Core::start_read_only`]).
    pub fn is_read_only(&self) -> bool {
        self.0.pool.read_only
    }

    /// Keep `conn`, opened on this core's database before the core started, as its first
    /// pooled connection (one open fewer for a short-lived authctl command).
    pub(crate) fn adopt(&self, conn: Connection) -> Result<()> {
        let c = self.0.pool.prepare(conn)?;
        self.0.pool.give(c);
        Ok(())
    }

    /// The system clock ([`crate::util::now`]).
    pub fn system_clock() -> Clock {
        Arc::new(crate::util::now)
    }

    pub fn path(&self) -> &Path {
        &self.0.path
    }

    pub fn key(&self) -> &SecretKey {
        &self.0.key
    }

    /// The hashing slots: argon2 runs in one of them (see [`Hashing`]).
    pub fn hashing(&self) -> &Hashing {
        &self.0.hashing
    }

    /// Check new passwords against this breached-password list whenever the stored
    /// policy names none (authd's `--breached-passwords`; see
    /// [`crate::breached::CoreList`]): checked first, set once (`Ok(false)`: a list was
    /// set already). This core's only: another core in the process keeps its own.
    pub fn set_breached_list(&self, path: &Path) -> std::result::Result<bool, ListError> {
        self.0.pool.breached.set(path)
    }

    /// Turn passkeys on with this relying party (once; false when already set).
    pub fn set_relying_party(&self, rp: crate::passkey::RelyingParty) -> bool {
        self.0.relying_party.set(Arc::new(rp)).is_ok()
    }

    /// The WebAuthn relying party, when passkeys are on.
    pub fn relying_party(&self) -> Option<Arc<crate::passkey::RelyingParty>> {
        self.0.relying_party.get().cloned()
    }

    /// The time, as this core's clock reads it.
    pub fn now(&self) -> i64 {
        (self.0.clock)()
    }

    /// The group-commit writer of the short write steps.
    pub fn writer(&self) -> &GroupCommit {
        &self.0.writer
    }

    /// Run `f` with a pooled connection and the key (blocks).
    pub fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection, &SecretKey) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.0.pool.take()?;
        let r = f(&mut conn, &self.0.key);
        self.0.pool.give(conn);
        r
    }

    /// The session cache's answer for `token` at `now`: a hit, or a miss to complete
    /// with [`Core::finish_session_check`] (so an async front end can do the database
    /// part off its reactor).
    pub fn lookup_session(&self, token: &str, now: i64) -> Lookup {
        self.0.sessions.lookup(token, now)
    }

    /// Complete a missed session check from the database.
    pub fn finish_session_check(
        &self,
        miss: crate::session_cache::Ticket,
        token: &str,
        now: i64,
    ) -> Result<Option<Arc<Checked>>> {
        let info: Option<SessionInfo> =
            self.with_conn(|conn, _| crate::login::check_session(conn, token, now))?;
        Ok(self.0.sessions.fill(miss, info))
    }

    /// The live session of `token` now, or None (blocks on a cache miss).
    pub fn check_session(&self, token: &str) -> Result<Option<Arc<Checked>>> {
        let now = self.now();
        match self.lookup_session(token, now) {
            Lookup::Hit(c) => Ok(Some(c)),
            Lookup::Miss(t) => self.finish_session_check(t, token, now),
        }
    }

    /// The users `actor` may see ([`admin::list_users`]).
    pub fn admin_list_users(&self, actor: &Actor, locked: bool) -> Result<Vec<User>> {
        self.with_conn(|conn, _| admin::list_users(conn, actor, locked))
    }

    /// One user as `actor` may see them ([`admin::show_user`]).
    pub fn admin_show_user(&self, actor: &Actor, name: &str) -> Result<Option<User>> {
        let now = self.now();
        self.with_conn(|conn, _| admin::show_user(conn, actor, name, now))
    }

    /// Clear `name`'s lockout ([`admin::unlock`]).
    pub fn admin_unlock(&self, actor: &Actor, name: &str) -> Result<Option<(User, bool)>> {
        let now = self.now();
        self.with_conn(|conn, _| admin::unlock(conn, actor, name, now))
    }

    /// Remove `name`'s second factor ([`admin::reset_2fa`]).
    pub fn admin_reset_2fa(
        &self,
        actor: &Actor,
        name: &str,
    ) -> Result<Option<(User, ResetSummary)>> {
        let now = self.now();
        self.with_conn(|conn, _| admin::reset_2fa(conn, actor, name, now))
    }
}

/// How often the background thread looks whether the key file changed (one stat).
const KEY_FILE_LOOK_EVERY: Duration = Duration::from_secs(1);

/// When the key file changed on disk (`authctl key rotate|retire`), read it again, checked
/// against the database; a file that does not fit is refused and the keys in use kept.
fn look_at_key_file(conn: &Connection, key: &SecretKey) {
    if !key.file_changed() {
        return;
    }
    let Some(path) = key.path().map(Path::to_path_buf) else {
        return;
    };
    match key.reload_with(|k| crate::db::check_key(conn, k, &path)) {
        Ok(true) => tracing::info!(
            key_file = %path.display(),
            current = key.current_id(),
            keys = ?key.ids(),
            "key file read again"
        ),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "the changed key file was refused; keeping the keys in use")
        }
    }
}

/// Checkpoint the WAL of `path` every [`CHECKPOINT_EVERY`] on a thread of its own until
/// `stop`'s sender is dropped, so no request waits for the copy and its fsync. A passive
/// checkpoint never blocks readers or writers; a failed one (disk full, read-only file)
/// is retried on the next tick. The same tick seals the audit rows written since the last
/// one ([`crate::store::audit_chain`]), and a last seal runs when the core stops.
///
/// A core that runs for a while (authd; not a short authctl command) also prunes the
/// audit log to `audit.retention_days` ([`crate::db::retention_prune`]): first
/// [`Retention::first_after`] after it starts, then every [`Retention::every`].
fn spawn_checkpointer(
    path: PathBuf,
    key: SecretKey,
    clock: Clock,
    retention: Retention,
    stop: mpsc::Receiver<()>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("authd-checkpoint".into())
        .spawn(move || {
            let mut conn: Option<Connection> = None;
            let mut next_prune = std::time::Instant::now() + retention.first_after;
            let mut next_key_look = std::time::Instant::now() + KEY_FILE_LOOK_EVERY;
            loop {
                let stopping = !matches!(
                    stop.recv_timeout(CHECKPOINT_EVERY),
                    Err(mpsc::RecvTimeoutError::Timeout)
                );
                if conn.as_ref().is_some_and(|c| c.is_broken()) {
                    conn = None;
                }
                if conn.is_none() {
                    conn = crate::db::open(&path).ok();
                }
                if let Some(c) = conn.as_mut() {
                    if let Err(e) = crate::db::seal_audit(c, &key) {
                        tracing::debug!(error = %e, "sealing the audit log failed; retrying");
                    }
                    if stopping {
                        break;
                    }
                    if std::time::Instant::now() >= next_key_look {
                        next_key_look = std::time::Instant::now() + KEY_FILE_LOOK_EVERY;
                        look_at_key_file(c, &key);
                    }
                    if std::time::Instant::now() >= next_prune {
                        next_prune += retention.every;
                        match crate::db::retention_prune(c, &key, clock()) {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(rows = n, "audit log pruned to its retention"),
                            Err(e) => tracing::warn!(error = %e, "pruning the audit log failed"),
                        }
                    }
                    if let Err(e) = crate::db::checkpoint(c) {
                        tracing::debug!(error = %e, "WAL checkpoint failed; retrying");
                    }
                } else if stopping {
                    break;
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    fn db(dir: &Path, name: &str) -> (PathBuf, SecretKey) {
        let path = dir.join(name);
        let (_, key) = crate::db::create(&crate::db::Location::new(&path, None)).unwrap();
        (path, key)
    }

    #[test]
    fn each_core_keeps_its_own_breached_password_list() {
        use crate::group_commit::WriteStep;
        use crate::password::PasswordPolicy;
        use crate::policy::Policy;
        let dir = tempfile::tempdir().unwrap();
        let listed = "Vq7#mLp2!xZr9@Tw";
        let list = dir.path().join("breached.txt");
        std::fs::write(&list, format!("{listed}\n")).unwrap();
        let (a_path, a_key) = db(dir.path(), "a.db");
        let (b_path, b_key) = db(dir.path(), "b.db");
        let a = Core::start(&a_path, a_key, Hashing::new(1), Core::system_clock()).unwrap();
        let b = Core::start(&b_path, b_key, Hashing::new(1), Core::system_clock()).unwrap();
        assert_eq!(a.set_breached_list(&list), Ok(true));
        assert_eq!(a.set_breached_list(&list), Ok(false), "set once");
        assert!(b
            .set_breached_list(&dir.path().join("missing.txt"))
            .is_err());

        let refused = |core: &Core| {
            let policy = core.policy().unwrap();
            !PasswordPolicy::is_ok(&policy.password.check(listed))
        };
        assert!(refused(&a), "core a checks new passwords against its list");
        assert!(
            !refused(&b),
            "core b was given no list: it shares nothing with a"
        );
        // The writer's connection was lent the same list as the pool's.
        let on_writer = |core: &Core| {
            core.run(WriteStep::new(|c: &mut Connection| Policy::load(c)))
                .unwrap()
                .password
                .breached
        };
        assert_eq!(on_writer(&a).as_deref(), Some(list.as_path()));
        assert_eq!(on_writer(&b), None);
    }

    #[test]
    fn two_cores_share_nothing_and_read_their_own_clock() {
        let dir = tempfile::tempdir().unwrap();
        let (a_path, a_key) = db(dir.path(), "a.db");
        let (b_path, b_key) = db(dir.path(), "b.db");
        let t = Arc::new(AtomicI64::new(1_000));
        let t2 = t.clone();
        let a = Core::start(
            &a_path,
            a_key,
            Hashing::new(1),
            Arc::new(move || t2.load(Ordering::SeqCst)),
        )
        .unwrap();
        let b = Core::start(&b_path, b_key, Hashing::new(1), Arc::new(|| 7)).unwrap();
        assert_eq!((a.now(), b.now()), (1_000, 7));
        t.store(2_000, Ordering::SeqCst);
        assert_eq!(a.now(), 2_000, "the clock is read, not copied");
        // Each core writes its own file.
        let op = Actor::operator("root");
        a.with_conn(|c, _| {
            crate::store::users::create(
                c,
                &crate::store::users::NewUser {
                    username: "alice",
                    email: "a@example.org",
                    org: None,
                    groups: &[],
                    role: crate::store::users::Role::User,
                    password_hash: None,
                    must_change_password: false,
                },
                a.now(),
            )
        })
        .unwrap();
        assert_eq!(a.admin_list_users(&op, false).unwrap().len(), 1);
        assert!(b.admin_list_users(&op, false).unwrap().is_empty());
        assert!(b.admin_unlock(&op, "alice").unwrap().is_none());
        let (u, was_locked) = a.admin_unlock(&op, "alice").unwrap().unwrap();
        assert_eq!((u.username.as_str(), was_locked), ("alice", false));
        // The audit row carries this core's time.
        let rows = a
            .with_conn(|c, _| {
                crate::audit::query(
                    c,
                    &crate::audit::Filter {
                        limit: Some(1),
                        ..Default::default()
                    },
                )
            })
            .unwrap();
        assert_eq!(rows[0].at, 2_000);
        assert!(a.check_session("no-such-token").unwrap().is_none());
    }

    /// A core opened for a command that only reads starts no writer or checkpoint thread
    /// and cannot write: not a decision with its audit row, not a write step, not a
    /// session check's refresh; it reads, beside a writing core on the same file.
    #[test]
    fn a_read_only_core_starts_no_thread_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = db(dir.path(), "ro.db");
        let loc = crate::db::Location::new(&path, None);
        let op = Actor::operator("root");
        let writing = Core::open(&loc, Hashing::new(1), Core::system_clock()).unwrap();
        assert!(!writing.is_read_only() && writing.0.checkpoints.is_some());
        writing.admin_unlock(&op, "nobody").unwrap();
        let ro = Core::open_read_only(&loc, Hashing::new(1), Core::system_clock()).unwrap();
        assert!(ro.is_read_only());
        assert!(ro.0.checkpoints.is_none(), "no checkpoint thread");
        let audit_rows = || {
            let c = crate::db::open(&path).unwrap();
            crate::audit::last_id(&c).unwrap()
        };
        let before = audit_rows();
        // Reads answer, through the connection that opened the database (pooled) and
        // through fresh ones.
        assert_eq!(ro.audit_last_id().unwrap(), before);
        let held: Vec<_> = (0..3)
            .map(|_| ro.0.pool.take().unwrap())
            .collect::<Vec<_>>();
        held.into_iter().for_each(|c| ro.0.pool.give(c));
        for _ in 0..4 {
            assert!(ro.admin_list_users(&op, false).unwrap().is_empty());
        }
        // Writes are refused by the engine, the audit row with its decision.
        assert!(ro.admin_unlock(&op, "nobody").is_err());
        assert!(ro
            .audit_refusal(&op, crate::kinds::AuditEvent::AdminUnlock, "x", "r", "m")
            .is_err());
        // No writer thread: a write step is not run.
        let step = crate::group_commit::WriteStep::new(|c: &mut Connection| {
            crate::audit::record(
                c,
                &crate::audit::Entry::new(
                    crate::kinds::AuditEvent::LoginPassword,
                    crate::audit::Outcome::Failure,
                ),
                1,
            )
        });
        assert!(matches!(
            ro.run(step),
            Err(crate::group_commit::WriteError::Unavailable)
        ));
        assert_eq!(ro.writer().steps(), 0);
        assert!(ro.check_session("no-such-token").unwrap().is_none());
        drop(ro);
        assert_eq!(audit_rows(), before, "the read-only core wrote nothing");
        // The writing core beside it still writes.
        writing.admin_unlock(&op, "nobody").unwrap();
        assert_eq!(audit_rows(), before + 1);
    }

    #[test]
    fn the_checkpoint_thread_stops_when_its_sender_goes() {
        let dir = tempfile::tempdir().unwrap();
        let (path, key) = db(dir.path(), "c.db");
        let (stop, stopped) = mpsc::channel();
        let h =
            spawn_checkpointer(path, key, Core::system_clock(), Retention::DAILY, stopped).unwrap();
        std::thread::sleep(CHECKPOINT_EVERY * 2);
        assert!(!h.is_finished(), "it checkpoints while its core lives");
        drop(stop);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !h.is_finished() {
            assert!(std::time::Instant::now() < deadline, "the thread lingers");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Audit rows written through a core are sealed into the chain within a tick or two,
    /// and whatever is left when the core stops is sealed before the drop returns.
    #[test]
    fn the_core_seals_the_audit_log_while_it_runs_and_when_it_stops() {
        use crate::store::audit_chain;
        let dir = tempfile::tempdir().unwrap();
        let (path, key) = db(dir.path(), "s.db");
        let verify = |path: &Path, key: &SecretKey| {
            let c = crate::db::open(path).unwrap();
            audit_chain::verify(&c, key).unwrap()
        };
        let key2 = key.clone();
        let core = Core::start(&path, key, Hashing::new(1), Core::system_clock()).unwrap();
        let op = Actor::operator("root");
        let write = |core: &Core| {
            // A refused unlock of an unknown user: one audit row.
            assert!(core.admin_unlock(&op, "nobody").unwrap().is_none());
        };
        write(&core);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let v = verify(&path, &key2);
            assert_eq!(v.broken, None);
            if v.unsealed == 0 && v.sealed > 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "not sealed: {v:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        for _ in 0..5 {
            write(&core);
        }
        drop(core);
        let v = verify(&path, &key2);
        assert_eq!((v.unsealed, &v.broken), (0, &None), "{v:?}");
        assert!(v.sealed >= 6, "{v:?}");
    }

    /// A running core prunes the audit log to `audit.retention_days` by its own clock, and
    /// the chain still verifies; with retention 0 nothing is pruned.
    #[test]
    fn the_background_thread_prunes_to_the_retention() {
        use crate::audit::{record, Entry, Outcome};
        use crate::kinds::AuditEvent;
        use crate::store::audit_chain;
        let dir = tempfile::tempdir().unwrap();
        let (path, key) = db(dir.path(), "r.db");
        let day = 86_400;
        {
            let c = crate::db::open(&path).unwrap();
            for at in [10 * day, 11 * day, 40 * day] {
                record(
                    &c,
                    &Entry::new(AuditEvent::LoginPassword, Outcome::Failure),
                    at,
                )
                .unwrap();
            }
        }
        let rows = |p: &Path| -> i64 {
            let c = crate::db::open(p).unwrap();
            c.query_row(
                "SELECT count(*) FROM audit WHERE event='login.password'",
                (),
                |r| r.get(0),
            )
            .unwrap()
        };
        let fast = Retention {
            first_after: Duration::from_millis(0),
            every: Duration::from_millis(50),
        };
        let run = |days: &str| {
            let c = crate::db::open(&path).unwrap();
            crate::policy::set(&c, "audit.retention_days", days, 1).unwrap();
            drop(c);
            let (stop, stopped) = mpsc::channel();
            let h = spawn_checkpointer(
                path.clone(),
                key.clone(),
                Arc::new(move || 45 * day),
                fast,
                stopped,
            )
            .unwrap();
            std::thread::sleep(Duration::from_millis(400));
            drop(stop);
            h.join().unwrap();
        };
        run("0");
        assert_eq!(rows(&path), 3, "retention 0 keeps everything");
        run("30");
        assert_eq!(rows(&path), 1, "rows older than 30 days at day 45 are gone");
        let c = crate::db::open(&path).unwrap();
        let v = audit_chain::verify(&c, &key).unwrap();
        assert_eq!((&v.broken, v.unsealed), (&None, 0), "{v:?}");
        assert!(v.pruned_through.is_some());
        let pruned: i64 = c
            .query_row(
                "SELECT count(*) FROM audit WHERE event='admin.audit.prune' AND actor='authd'",
                (),
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(pruned, 1, "the prune is audited once");
    }
}
