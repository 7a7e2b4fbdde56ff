//! The daemon's side of group commit ([`authcore::group_commit`]): a short write step
//! the core built ([`authcore::group_commit::WriteStep`], e.g. `core.totp_step(…)`) is
//! queued on the core's writer with a reply callback that completes a tokio oneshot, and
//! the caller's task awaits it: the answer comes only after its group's commit; if the
//! commit fails, every step of the group answers 503 and nothing of it is kept.
//! Work that hashes passwords never comes here (it would hold up every other step).

use authcore::group_commit::{GroupCommit, Step, WriteError, WriteStep};
use authcore::Core;
use tokio::sync::oneshot;

/// Queue `step` on `core`'s writer and await its answer.
pub async fn write<S: Step>(core: &Core, step: WriteStep<S>) -> Result<S::Output, WriteError> {
    let (reply, answer) = oneshot::channel();
    let mut queued = core.submit(step, move |a| {
        let _ = reply.send(a);
    });
    // A full queue is rare (the writer is far faster than the network): wait for room
    // without blocking the reactor.
    while let Err(full) = queued {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        queued = core.resubmit(full);
    }
    // The core calls the reply exactly once; a lost one counts as a panic.
    answer.await.unwrap_or(Err(WriteError::Panicked))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::ApiError;
    use hyper::StatusCode;

    /// What the front ends answer for each way a write step can fail (the engine's own
    /// behaviour is tested in src/group_commit.rs).
    #[test]
    fn write_errors_answer_as_their_kind() {
        let status = |e| ApiError::from(e).status;
        assert_eq!(
            status(WriteError::Step(authcore::Error::InvalidFlow)),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(WriteError::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(WriteError::Panicked),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
