//! Group commit, SQLite's answer to having one writer: short write steps queue here, and
//! one thread runs whatever has queued (at most [`MAX_GROUP`]) inside a single immediate
//! transaction, so a burst of steps reaches the WAL in one commit instead of one commit
//! (and one trip through the lock) each.
//!
//! Each step keeps its own transaction semantics: the transaction it opens with
//! [`crate::db::write_tx`] is a savepoint of the group, released or rolled back on its
//! own, so a refused step still leaves exactly what it would alone (its counted
//! failure, its audit row). A step's [`Done`] learns whether the group committed only
//! after the commit; if the commit fails, nothing of the group is kept. A panicking step
//! rolls back its group; the thread goes on with a fresh connection.
//!
//! A step is a [`WriteStep`], built by the core's methods ([`crate::Core::totp_step`]
//! and the others of src/steps.rs) from plain values; the clock is read when it runs
//! on the writer. The engine knows no async runtime: a front end queues a step with a
//! reply callback ([`GroupCommit::submit`], called exactly once: with the step's answer
//! after its group's commit, [`WriteError::Unavailable`] when the group could not begin
//! or commit, [`WriteError::Panicked`] when a step of its group panicked), or runs it
//! and blocks for its answer ([`GroupCommit::run`]). The daemon turns the callback into
//! a tokio oneshot (daemon/writer.rs).

use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::sql::Connection;

use crate::error::{Error, Result};

/// Most steps committed together: bounds how long the first waits for the last.
pub const MAX_GROUP: usize = 64;

/// Steps waiting for the writer, beyond which [`GroupCommit::submit`] refuses.
const QUEUE: usize = 1024;

/// How long [`GroupCommit::run`] waits before pushing again into a full queue.
const FULL_WAIT: Duration = Duration::from_millis(1);

/// Why a write step brought no value back.
#[derive(Debug)]
pub enum WriteError {
    /// The step ran and decided an error (kept as the step left it: its group committed).
    Step(Error),
    /// The group could not begin or commit, or the writer is gone: nothing was kept.
    Unavailable,
    /// A step of the group panicked: the group was rolled back.
    Panicked,
}

/// What a write step does on the writer's connection, inside its group's transaction.
/// Any `FnOnce(&mut Connection) -> Result<T>` is one.
pub trait Step: Send + 'static {
    type Output: Send + 'static;
    fn run(self, conn: &mut Connection) -> Result<Self::Output>;
}

impl<T, F> Step for F
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
{
    type Output = T;
    fn run(self, conn: &mut Connection) -> Result<T> {
        self(conn)
    }
}

/// A short write step to run on the writer, built by a method of the core; nothing
/// happens until it is submitted ([`GroupCommit::submit`], [`crate::Core::submit`]) or
/// run ([`crate::Core::run`]). Its answer is a `Result<S::Output, WriteError>`.
#[must_use = "a write step does nothing until it is submitted or run"]
pub struct WriteStep<S>(S);

impl<S: Step> WriteStep<S> {
    pub(crate) fn new(step: S) -> WriteStep<S> {
        WriteStep(step)
    }
}

/// One queued step, its result type erased.
trait Job: Send {
    /// Run the step on the writer's connection (inside the group's transaction).
    fn run(self: Box<Self>, conn: &mut Connection) -> Box<dyn Done>;
    /// Answer without running (the group could not begin).
    fn fail(self: Box<Self>);
}

/// A step that ran, waiting for its group's commit.
trait Done: Send {
    fn send(self: Box<Self>, committed: bool);
}

/// The reply callback of one step: called once, with [`WriteError::Panicked`] when it is
/// dropped unanswered (its step, or another of its group, panicked).
struct Reply<T, R: FnOnce(std::result::Result<T, WriteError>)> {
    f: Option<R>,
    _t: PhantomData<fn(T)>,
}

impl<T, R: FnOnce(std::result::Result<T, WriteError>)> Reply<T, R> {
    fn send(mut self, answer: std::result::Result<T, WriteError>) {
        if let Some(f) = self.f.take() {
            f(answer);
        }
    }
}

impl<T, R: FnOnce(std::result::Result<T, WriteError>)> Drop for Reply<T, R> {
    fn drop(&mut self) {
        if let Some(f) = self.f.take() {
            f(Err(WriteError::Panicked));
        }
    }
}

struct Pending<S: Step, R: FnOnce(std::result::Result<S::Output, WriteError>)> {
    step: S,
    reply: Reply<S::Output, R>,
}

struct Ran<T, R: FnOnce(std::result::Result<T, WriteError>)> {
    result: Result<T>,
    reply: Reply<T, R>,
}

impl<S, R> Job for Pending<S, R>
where
    S: Step,
    R: FnOnce(std::result::Result<S::Output, WriteError>) + Send + 'static,
{
    fn run(self: Box<Self>, conn: &mut Connection) -> Box<dyn Done> {
        let Pending { step, reply } = *self;
        // A panic here drops `reply`: the caller hears `Panicked`.
        let result = step.run(conn);
        Box::new(Ran { result, reply })
    }
    fn fail(self: Box<Self>) {
        self.reply.send(Err(WriteError::Unavailable));
    }
}

impl<T, R> Done for Ran<T, R>
where
    T: Send + 'static,
    R: FnOnce(std::result::Result<T, WriteError>) + Send + 'static,
{
    fn send(self: Box<Self>, committed: bool) {
        let Ran { result, reply } = *self;
        reply.send(if committed {
            result.map_err(WriteError::Step)
        } else {
            Err(WriteError::Unavailable)
        });
    }
}

/// A step the queue had no room for (rare: the writer is far faster than any network):
/// push it again with [`GroupCommit::retry`] after a moment.
pub struct Full(Box<dyn Job>);

/// Groups committed and steps run (steps ÷ groups = steps per commit).
#[derive(Default)]
struct Counts {
    groups: AtomicU64,
    steps: AtomicU64,
}

/// The queue in front of the writer thread of one database file.
pub struct GroupCommit {
    queue: mpsc::SyncSender<Box<dyn Job>>,
    counts: Arc<Counts>,
}

impl GroupCommit {
    /// Start the writer thread for the database at `db`; it ends when the last handle
    /// on its queue is dropped. With `seal`, a group also seals the audit rows written so
    /// far (its own among them) before it commits, once `GROUP_SEAL_STEPS` steps or
    /// `GROUP_SEAL_EVERY` have passed since the last seal
    /// ([`crate::store::audit_chain::seal`], at most [`GROUP_SEAL_MAX`] rows); the core's
    /// background thread seals what is left between.
    pub fn start(
        db: PathBuf,
        seal: Option<crate::crypto::SecretKey>,
    ) -> std::io::Result<GroupCommit> {
        GroupCommit::start_with(db, seal, Arc::new(|| {}), Arc::default())
    }

    /// [`GroupCommit::start`], with what the writer's PostgreSQL connection calls when a
    /// group's commit moved the session epoch (see `sql::Connection::listen_for_epoch`),
    /// and the core's breached-password list lent to its connection.
    pub fn start_with(
        db: PathBuf,
        seal: Option<crate::crypto::SecretKey>,
        epoch_hook: crate::sql::EpochHook,
        breached: Arc<crate::breached::CoreList>,
    ) -> std::io::Result<GroupCommit> {
        let (queue, rx) = mpsc::sync_channel::<Box<dyn Job>>(QUEUE);
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        std::thread::Builder::new()
            .name("authd-writer".into())
            .spawn(move || run(db, seal, epoch_hook, breached, rx, &c))?;
        Ok(GroupCommit { queue, counts })
    }

    /// A writer with no thread behind it (a read-only core's): every step answers
    /// [`WriteError::Unavailable`] at once, nothing run, nothing kept.
    pub fn closed() -> GroupCommit {
        let (queue, _) = mpsc::sync_channel::<Box<dyn Job>>(0);
        GroupCommit {
            queue,
            counts: Arc::default(),
        }
    }

    /// Queue `step` without waiting; `reply` gets its answer (see the module
    /// documentation), exactly once. `Err(Full)` when the queue has no room: the step
    /// was not queued and `reply` not called; push it again with [`GroupCommit::retry`].
    pub fn submit<S, R>(&self, step: WriteStep<S>, reply: R) -> std::result::Result<(), Full>
    where
        S: Step,
        R: FnOnce(std::result::Result<S::Output, WriteError>) + Send + 'static,
    {
        self.push(Box::new(Pending {
            step: step.0,
            reply: Reply {
                f: Some(reply),
                _t: PhantomData,
            },
        }))
    }

    /// Push again a step the queue had no room for.
    pub fn retry(&self, full: Full) -> std::result::Result<(), Full> {
        self.push(full.0)
    }

    fn push(&self, job: Box<dyn Job>) -> std::result::Result<(), Full> {
        match self.queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::TrySendError::Full(j)) => Err(Full(j)),
            // The writer thread is gone: nothing can be kept.
            Err(mpsc::TrySendError::Disconnected(j)) => {
                j.fail();
                Ok(())
            }
        }
    }

    /// Run `step` on the writer and wait for its answer (blocks; for threads that may
    /// block, never an async reactor).
    pub fn run<S: Step>(&self, step: WriteStep<S>) -> std::result::Result<S::Output, WriteError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let mut queued = self.submit(step, move |answer| {
            let _ = tx.send(answer);
        });
        while let Err(full) = queued {
            std::thread::sleep(FULL_WAIT);
            queued = self.retry(full);
        }
        rx.recv().unwrap_or(Err(WriteError::Panicked))
    }

    /// Groups committed so far.
    pub fn groups(&self) -> u64 {
        self.counts.groups.load(Ordering::Relaxed)
    }

    /// Steps run so far (committed or not).
    pub fn steps(&self) -> u64 {
        self.counts.steps.load(Ordering::Relaxed)
    }
}

/// Audit rows a group seals at most (a larger backlog, e.g. rows of an older version, is
/// left to the core's background thread in short transactions of its own).
pub const GROUP_SEAL_MAX: usize = 1024;

/// A group seals when the steps since the last seal reach this many, or
/// [`GROUP_SEAL_EVERY`] has passed: a seal costs two meta writes and a signed head
/// whatever its size, which one-step groups (a single client) paid on every step —
/// 80 µs of a TOTP step's 410 µs at 1 client. Under load groups are larger and seal
/// each time; when idle, the core's background thread seals within a tick.
const GROUP_SEAL_STEPS: usize = 32;
const GROUP_SEAL_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

fn run(
    db: PathBuf,
    seal: Option<crate::crypto::SecretKey>,
    epoch_hook: crate::sql::EpochHook,
    breached: Arc<crate::breached::CoreList>,
    rx: mpsc::Receiver<Box<dyn Job>>,
    counts: &Counts,
) {
    let mut conn: Option<Connection> = None;
    let mut unsealed_steps = 0usize;
    let mut last_seal = std::time::Instant::now();
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        if conn.is_none() {
            let opened = crate::db::open_group_writer(&db).and_then(|mut c| {
                c.listen_for_epoch(crate::session_cache::EPOCH_CHANNEL, epoch_hook.clone())?;
                c.lend_breached_list(breached.clone());
                Ok(c)
            });
            match opened {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "the writer cannot open the database");
                    jobs.into_iter().for_each(|j| j.fail());
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        counts.steps.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        // A file that could only be opened read-only (made unwritable for a while)
        // serves this group, which fails cleanly, and is opened afresh for the next.
        let keep = !crate::db::is_read_only(c);
        unsealed_steps += jobs.len();
        let seal_now = seal.as_ref().filter(|_| {
            unsealed_steps >= GROUP_SEAL_STEPS || last_seal.elapsed() >= GROUP_SEAL_EVERY
        });
        if seal_now.is_some() {
            unsealed_steps = 0;
            last_seal = std::time::Instant::now();
        }
        let mut queued = Some(jobs);
        let group = std::panic::catch_unwind(AssertUnwindSafe(|| {
            crate::db::batch(c, |c| {
                let jobs = queued.take().unwrap_or_default();
                let done = jobs.into_iter().map(|j| j.run(c)).collect::<Vec<_>>();
                if let Some(key) = seal_now {
                    // In a savepoint of its own: a failed seal (PostgreSQL aborts the
                    // whole transaction on an error) must not take the group's steps
                    // with it.
                    let sealed = c.savepoint().map_err(crate::Error::from).and_then(|sp| {
                        crate::store::audit_chain::seal(&sp, key, GROUP_SEAL_MAX)?;
                        Ok(sp.commit()?)
                    });
                    if let Err(e) = sealed {
                        tracing::debug!(error = %e, "sealing in the group failed; the background thread will");
                    }
                }
                done
            })
        }));
        match group {
            Ok(Ok((done, committed))) => {
                if let Err(e) = &committed {
                    tracing::error!(error = %e, steps = done.len(), "a group of writes failed to commit");
                    conn = None;
                }
                let ok = committed.is_ok();
                if ok {
                    counts.groups.fetch_add(1, Ordering::Relaxed);
                }
                done.into_iter().for_each(|d| d.send(ok));
                if !keep || conn.as_ref().is_some_and(|c| c.is_broken()) {
                    conn = None;
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot begin a group of writes");
                // The next group starts from a fresh connection: one that met a
                // read-only or damaged file does not learn that it has recovered.
                conn = None;
                queued
                    .take()
                    .unwrap_or_default()
                    .into_iter()
                    .for_each(|j| j.fail());
            }
            Err(_) => {
                // A step panicked: the group is rolled back; the replies already ran
                // or were dropped (their callers see an internal error). A connection
                // left in doubt is not reused.
                tracing::error!("a step panicked; its group of writes was rolled back");
                conn = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::thread::JoinHandle;

    struct Db {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    fn scratch() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let (conn, _) = crate::db::create(&crate::db::Location::new(&path, None)).unwrap();
        conn.execute_batch("CREATE TABLE t(x INTEGER)").unwrap();
        Db { _dir: dir, path }
    }

    fn rows(path: &Path) -> Vec<i64> {
        let c = crate::db::open(path).unwrap();
        let mut st = c.prepare("SELECT x FROM t ORDER BY x").unwrap();
        st.query_map((), |r| r.get(0))
            .unwrap()
            .collect::<std::result::Result<Vec<i64>, _>>()
            .unwrap()
    }

    fn insert(c: &mut Connection, x: i64, keep: bool) -> Result<()> {
        let tx = crate::db::write_tx(c)?;
        tx.execute("INSERT INTO t VALUES (?1)", [x])?;
        if keep {
            tx.commit()?;
        }
        Ok(())
    }

    type Answer<T> = mpsc::Receiver<std::result::Result<T, WriteError>>;

    /// Queue `f` and return where its answer arrives.
    fn submit<T: Send + 'static>(
        w: &GroupCommit,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Answer<T> {
        let (tx, rx) = mpsc::channel();
        let queued = w.submit(WriteStep::new(f), move |a| {
            let _ = tx.send(a);
        });
        assert!(queued.is_ok(), "the queue has room");
        rx
    }

    /// Occupy the writer for a moment so that what is queued meanwhile forms one group.
    fn stall(w: &Arc<GroupCommit>) -> JoinHandle<std::result::Result<(), WriteError>> {
        let w = w.clone();
        let h = std::thread::spawn(move || {
            w.run(WriteStep::new(|c: &mut Connection| {
                std::thread::sleep(Duration::from_millis(300));
                insert(c, 0, true)
            }))
        });
        std::thread::sleep(Duration::from_millis(50));
        h
    }

    #[test]
    fn a_burst_commits_as_one_group_and_each_step_keeps_its_own_outcome() {
        let db = scratch();
        let w = Arc::new(GroupCommit::start(db.path.clone(), None).unwrap());
        let first = stall(&w);
        let steps: Vec<Answer<i64>> = (1..=30i64)
            .map(|i| {
                submit(&w, move |c| match i % 3 {
                    // Committed.
                    0 => insert(c, i, true).map(|_| i),
                    // Refused: its transaction rolls back, the others' do not.
                    1 => insert(c, i, false).map(|_| i),
                    // Committed, then an error answer (as a counted failure is).
                    _ => {
                        insert(c, i, true)?;
                        Err(Error::InvalidFlow)
                    }
                })
            })
            .collect();
        first.join().unwrap().unwrap();
        for (i, s) in (1..=30i64).zip(steps) {
            match s.recv().unwrap() {
                Ok(v) => {
                    assert_ne!(i % 3, 2);
                    assert_eq!(v, i);
                }
                Err(e) => {
                    assert_eq!(i % 3, 2, "step {i}: {e:?}");
                    assert!(
                        matches!(e, WriteError::Step(Error::InvalidFlow)),
                        "step {i}: {e:?}"
                    );
                }
            }
        }
        let want: Vec<i64> = std::iter::once(0)
            .chain((1..=30).filter(|i| i % 3 != 1))
            .collect();
        assert_eq!(rows(&db.path), want);
        assert_eq!(w.steps(), 31);
        assert_eq!(
            w.groups(),
            2,
            "the 30 steps queued behind the first were committed together"
        );
    }

    #[test]
    fn a_panicking_step_rolls_back_its_group_and_the_writer_goes_on() {
        let db = scratch();
        let w = Arc::new(GroupCommit::start(db.path.clone(), None).unwrap());
        let first = stall(&w);
        let kept = submit(&w, |c| insert(c, 1, true));
        let boom = submit(&w, |c| -> Result<()> {
            insert(c, 2, true)?;
            panic!("a step that panics")
        });
        first.join().unwrap().unwrap();
        let e = kept.recv().unwrap().unwrap_err();
        assert!(matches!(e, WriteError::Panicked), "{e:?}");
        let e = boom.recv().unwrap().unwrap_err();
        assert!(matches!(e, WriteError::Panicked), "{e:?}");
        assert_eq!(
            rows(&db.path),
            vec![0],
            "nothing of the failed group was kept"
        );
        // The writer still serves.
        w.run(WriteStep::new(|c: &mut Connection| insert(c, 3, true)))
            .unwrap();
        assert_eq!(rows(&db.path), vec![0, 3]);
    }

    #[test]
    fn a_closed_writer_runs_nothing_and_answers_unavailable() {
        let db = scratch();
        let w = GroupCommit::closed();
        let e = w
            .run(WriteStep::new(|c: &mut Connection| insert(c, 1, true)))
            .unwrap_err();
        assert!(matches!(e, WriteError::Unavailable), "{e:?}");
        let rx = submit(&w, |c| insert(c, 2, true));
        let e = rx.recv().unwrap().unwrap_err();
        assert!(matches!(e, WriteError::Unavailable), "{e:?}");
        assert_eq!((w.steps(), w.groups()), (0, 0));
        assert!(rows(&db.path).is_empty());
    }

    #[test]
    fn a_step_for_a_writer_that_cannot_open_its_file_answers_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let w = GroupCommit::start(dir.path().join("missing/none.db"), None).unwrap();
        let e = w
            .run(WriteStep::new(|_: &mut Connection| Ok(())))
            .unwrap_err();
        assert!(matches!(e, WriteError::Unavailable), "{e:?}");
    }
}
