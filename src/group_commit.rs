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
//! The engine knows no async runtime: a front end queues [`Job`]s and answers its callers
//! from [`Done::send`] (the daemon bridges it to its tasks in daemon/writer.rs).

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use rusqlite::Connection;

/// Most steps committed together: bounds how long the first waits for the last.
pub const MAX_GROUP: usize = 64;

/// Steps waiting for the writer, beyond which [`GroupCommit::try_push`] refuses.
const QUEUE: usize = 1024;

/// One queued step, its result type erased.
pub trait Job: Send {
    /// Run the step on the writer's connection (inside the group's transaction).
    fn run(self: Box<Self>, conn: &mut Connection) -> Box<dyn Done>;
    /// Answer without running (the group could not begin).
    fn fail(self: Box<Self>);
}

/// A step that ran, waiting for its group's commit.
pub trait Done: Send {
    fn send(self: Box<Self>, committed: bool);
}

/// Why a job was not queued.
pub enum Refused {
    /// The queue is full for now: the job comes back, to be pushed again.
    Full(Box<dyn Job>),
    /// The writer thread is gone.
    Gone,
}

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
    /// on its queue is dropped.
    pub fn start(db: PathBuf) -> std::io::Result<GroupCommit> {
        let (queue, rx) = mpsc::sync_channel::<Box<dyn Job>>(QUEUE);
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        std::thread::Builder::new()
            .name("authd-writer".into())
            .spawn(move || run(db, rx, &c))?;
        Ok(GroupCommit { queue, counts })
    }

    /// Queue a job without waiting.
    pub fn try_push(&self, job: Box<dyn Job>) -> Result<(), Refused> {
        self.queue.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(j) => Refused::Full(j),
            mpsc::TrySendError::Disconnected(_) => Refused::Gone,
        })
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

fn run(db: PathBuf, rx: mpsc::Receiver<Box<dyn Job>>, counts: &Counts) {
    let mut conn: Option<Connection> = None;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        if conn.is_none() {
            match crate::db::open(&db).and_then(|c| {
                crate::db::defer_checkpoints(&c)?;
                Ok(c)
            }) {
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
        let keep = !c.is_readonly(rusqlite::MAIN_DB).unwrap_or(true);
        let mut queued = Some(jobs);
        let group = std::panic::catch_unwind(AssertUnwindSafe(|| {
            crate::db::batch(c, |c| {
                let jobs = queued.take().unwrap_or_default();
                jobs.into_iter().map(|j| j.run(c)).collect::<Vec<_>>()
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
                if !keep {
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
