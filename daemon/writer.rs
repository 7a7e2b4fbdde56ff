//! The group-commit writer: the short write-only steps of a login (second factor,
//! terms, logout) queue here, and one thread runs whatever has queued inside a single
//! SQLite transaction, so a burst of steps reaches the WAL in one commit instead of one
//! commit (and one trip through the lock) each.
//!
//! Each step keeps its own transaction semantics: the transaction it opens with
//! `authcore::db::write_tx` is a savepoint of the group, released or rolled back on its
//! own, so a refused step still leaves exactly what it would alone (its counted
//! failure, its audit row). Answers are sent only after the group's commit; if the
//! commit fails, every step of the group answers 503 and nothing of the group is kept.
//! Work that hashes passwords never comes here (it would hold up every other step).

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::app::ApiError;

/// Most steps committed together: bounds how long the first waits for the last.
const MAX_GROUP: usize = 64;

/// Steps waiting for the writer, beyond which callers wait to queue.
const QUEUE: usize = 1024;

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

struct Pending<T, F> {
    f: F,
    reply: oneshot::Sender<Result<T, ApiError>>,
}

struct Ran<T> {
    result: authcore::Result<T>,
    reply: oneshot::Sender<Result<T, ApiError>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> authcore::Result<T> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &mut Connection) -> Box<dyn Done> {
        let Pending { f, reply } = *self;
        Box::new(Ran {
            result: f(conn),
            reply,
        })
    }
    fn fail(self: Box<Self>) {
        let _ = self.reply.send(Err(ApiError::unavailable()));
    }
}

impl<T: Send + 'static> Done for Ran<T> {
    fn send(self: Box<Self>, committed: bool) {
        let Ran { result, reply } = *self;
        let answer = if committed {
            result.map_err(ApiError::from)
        } else {
            Err(ApiError::unavailable())
        };
        let _ = reply.send(answer);
    }
}

/// The queue in front of the writer thread.
pub struct Writer {
    queue: mpsc::SyncSender<Box<dyn Job>>,
    counts: Arc<Counts>,
}

/// Groups committed and steps run, for `/metrics` (steps ÷ groups = steps per commit).
#[derive(Default)]
struct Counts {
    groups: AtomicU64,
    steps: AtomicU64,
}

impl Writer {
    /// Start the writer thread for the database at `db`; it lives as long as the process.
    pub fn start(db: PathBuf) -> std::io::Result<Writer> {
        let (queue, rx) = mpsc::sync_channel::<Box<dyn Job>>(QUEUE);
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        std::thread::Builder::new()
            .name("authd-writer".into())
            .spawn(move || run(db, rx, &c))?;
        Ok(Writer { queue, counts })
    }

    /// The writer's counters in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for (name, help, v) in [
            (
                "authd_write_groups_total",
                "Groups of login steps committed together by the writer.",
                &self.counts.groups,
            ),
            (
                "authd_write_steps_total",
                "Login steps run by the writer (committed or not).",
                &self.counts.steps,
            ),
        ] {
            crate::metrics::header(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
        out
    }

    /// Run `f` on the writer; its answer comes once its group is committed.
    pub async fn write<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> authcore::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let mut job: Box<dyn Job> = Box::new(Pending { f, reply });
        // A full queue is rare (the writer is far faster than the network): wait for
        // room without blocking the reactor.
        loop {
            match self.queue.try_send(job) {
                Ok(()) => break,
                Err(mpsc::TrySendError::Full(j)) => {
                    job = j;
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Err(mpsc::TrySendError::Disconnected(_)) => return Err(ApiError::unavailable()),
            }
        }
        // A dropped reply means the step panicked: its group was rolled back.
        answer.await.map_err(|_| ApiError::internal())?
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
            match authcore::db::open(&db).and_then(|c| {
                authcore::db::defer_checkpoints(&c)?;
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
            authcore::db::batch(c, |c| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Db {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    fn scratch() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let (conn, _) = authcore::db::create(&authcore::db::Location::new(&path, None)).unwrap();
        conn.execute_batch("CREATE TABLE t(x INTEGER)").unwrap();
        Db { _dir: dir, path }
    }

    fn rows(db: &Db) -> Vec<i64> {
        let c = authcore::db::open(&db.path).unwrap();
        let mut st = c.prepare("SELECT x FROM t ORDER BY x").unwrap();
        let v = st
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<Vec<i64>, _>>()
            .unwrap();
        v
    }

    fn insert(c: &mut Connection, x: i64, keep: bool) -> authcore::Result<()> {
        let tx = authcore::db::write_tx(c)?;
        tx.execute("INSERT INTO t VALUES (?1)", [x])?;
        if keep {
            tx.commit()?;
        }
        Ok(())
    }

    /// Occupy the writer for a moment so that what is queued meanwhile forms one group.
    async fn stall(w: &Arc<Writer>) -> tokio::task::JoinHandle<Result<(), ApiError>> {
        let w = w.clone();
        let h = tokio::spawn(async move {
            w.write(|c| {
                std::thread::sleep(Duration::from_millis(300));
                insert(c, 0, true)
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        h
    }

    fn count(w: &Writer, name: &str) -> u64 {
        let text = w.render_metrics();
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_commits_as_one_group_and_each_step_keeps_its_own_outcome() {
        let db = scratch();
        let w = Arc::new(Writer::start(db.path.clone()).unwrap());
        let first = stall(&w).await;
        let mut steps = Vec::new();
        for i in 1..=30i64 {
            let w = w.clone();
            steps.push(tokio::spawn(async move {
                w.write(move |c| match i % 3 {
                    // Committed.
                    0 => insert(c, i, true).map(|_| i),
                    // Refused: its transaction rolls back, the others' do not.
                    1 => insert(c, i, false).map(|_| i),
                    // Committed, then an error answer (as a counted failure is).
                    _ => {
                        insert(c, i, true)?;
                        Err(authcore::Error::InvalidFlow)
                    }
                })
                .await
            }));
        }
        first.await.unwrap().unwrap();
        for (i, s) in (1..=30i64).zip(steps) {
            match s.await.unwrap() {
                Ok(v) => {
                    assert_ne!(i % 3, 2);
                    assert_eq!(v, i);
                }
                Err(e) => {
                    assert_eq!(i % 3, 2, "step {i}: {e:?}");
                    assert_eq!(e.status, hyper::StatusCode::UNAUTHORIZED);
                }
            }
        }
        let want: Vec<i64> = std::iter::once(0)
            .chain((1..=30).filter(|i| i % 3 != 1))
            .collect();
        assert_eq!(rows(&db), want);
        assert_eq!(count(&w, "authd_write_steps_total"), 31);
        assert_eq!(
            count(&w, "authd_write_groups_total"),
            2,
            "the 30 steps queued behind the first were committed together"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_step_rolls_back_its_group_and_the_writer_goes_on() {
        let db = scratch();
        let w = Arc::new(Writer::start(db.path.clone()).unwrap());
        let first = stall(&w).await;
        let w1 = w.clone();
        let kept = tokio::spawn(async move { w1.write(|c| insert(c, 1, true)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let w2 = w.clone();
        let boom = tokio::spawn(async move {
            w2.write(|c| -> authcore::Result<()> {
                insert(c, 2, true)?;
                panic!("a step that panics")
            })
            .await
        });
        first.await.unwrap().unwrap();
        let e = kept.await.unwrap().unwrap_err();
        assert_eq!(e.status, hyper::StatusCode::INTERNAL_SERVER_ERROR);
        let e = boom.await.unwrap().unwrap_err();
        assert_eq!(e.status, hyper::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(rows(&db), vec![0], "nothing of the failed group was kept");
        // The writer still serves.
        w.write(|c| insert(c, 3, true)).await.unwrap();
        assert_eq!(rows(&db), vec![0, 3]);
    }
}
