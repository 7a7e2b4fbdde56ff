//! The daemon's side of group commit ([`authcore::group_commit`]): the short write-only
//! steps of a login (second factor, terms, logout) are queued on the core's writer, and
//! each caller's task awaits its step's answer, sent only after its group's commit; if
//! the commit fails, every step of the group answers 503 and nothing of it is kept.
//! Work that hashes passwords never comes here (it would hold up every other step).

use authcore::group_commit::{Done, GroupCommit, Job, Refused};

use rusqlite::Connection;
use tokio::sync::oneshot;

/// Why a step queued here brought no value back.
#[derive(Debug)]
pub enum WriteError {
    /// The step ran and decided an error (kept as the step left it: its group committed).
    Step(authcore::Error),
    /// The group could not begin or commit, or the writer is gone: nothing was kept.
    Unavailable,
    /// The step panicked: its group was rolled back.
    Panicked,
}

struct Pending<T, F> {
    f: F,
    reply: oneshot::Sender<Result<T, WriteError>>,
}

struct Ran<T> {
    result: authcore::Result<T>,
    reply: oneshot::Sender<Result<T, WriteError>>,
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
        let _ = self.reply.send(Err(WriteError::Unavailable));
    }
}

impl<T: Send + 'static> Done for Ran<T> {
    fn send(self: Box<Self>, committed: bool) {
        let Ran { result, reply } = *self;
        let answer = if committed {
            result.map_err(WriteError::Step)
        } else {
            Err(WriteError::Unavailable)
        };
        let _ = reply.send(answer);
    }
}

/// The writer's counters in the Prometheus text format.
pub fn render_metrics(engine: &GroupCommit) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (name, help, v) in [
        (
            "authd_write_groups_total",
            "Groups of login steps committed together by the writer.",
            engine.groups(),
        ),
        (
            "authd_write_steps_total",
            "Login steps run by the writer (committed or not).",
            engine.steps(),
        ),
    ] {
        crate::metrics::header(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", v);
    }
    out
}

/// Run `f` on the core's writer; its answer comes once its group is committed.
pub async fn write<T, F>(engine: &GroupCommit, f: F) -> Result<T, WriteError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> authcore::Result<T> + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    let mut job: Box<dyn Job> = Box::new(Pending { f, reply });
    // A full queue is rare (the writer is far faster than the network): wait for room
    // without blocking the reactor.
    loop {
        match engine.try_push(job) {
            Ok(()) => break,
            Err(Refused::Full(j)) => {
                job = j;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            Err(Refused::Gone) => return Err(WriteError::Unavailable),
        }
    }
    // A dropped reply means the step panicked: its group was rolled back.
    answer.await.map_err(|_| WriteError::Panicked)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::Arc;
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
    async fn stall(w: &Arc<GroupCommit>) -> tokio::task::JoinHandle<Result<(), WriteError>> {
        let w = w.clone();
        let h = tokio::spawn(async move {
            write(&w, |c| {
                std::thread::sleep(Duration::from_millis(300));
                insert(c, 0, true)
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        h
    }

    fn count(w: &GroupCommit, name: &str) -> u64 {
        let text = render_metrics(w);
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_commits_as_one_group_and_each_step_keeps_its_own_outcome() {
        let db = scratch();
        let w = Arc::new(GroupCommit::start(db.path.clone()).unwrap());
        let first = stall(&w).await;
        let mut steps = Vec::new();
        for i in 1..=30i64 {
            let w = w.clone();
            steps.push(tokio::spawn(async move {
                write(&w, move |c| match i % 3 {
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
                    assert_eq!(
                        crate::app::ApiError::from(e).status,
                        hyper::StatusCode::UNAUTHORIZED
                    );
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
        let w = Arc::new(GroupCommit::start(db.path.clone()).unwrap());
        let first = stall(&w).await;
        let w1 = w.clone();
        let kept = tokio::spawn(async move { write(&w1, |c| insert(c, 1, true)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let w2 = w.clone();
        let boom = tokio::spawn(async move {
            write(&w2, |c| -> authcore::Result<()> {
                insert(c, 2, true)?;
                panic!("a step that panics")
            })
            .await
        });
        first.await.unwrap().unwrap();
        let e = kept.await.unwrap().unwrap_err();
        assert!(matches!(e, WriteError::Panicked), "{e:?}");
        let e = boom.await.unwrap().unwrap_err();
        assert!(matches!(e, WriteError::Panicked), "{e:?}");
        assert_eq!(
            crate::app::ApiError::from(e).status,
            hyper::StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(rows(&db), vec![0], "nothing of the failed group was kept");
        // The writer still serves.
        write(&w, |c| insert(c, 3, true)).await.unwrap();
        assert_eq!(rows(&db), vec![0, 3]);
    }
}
