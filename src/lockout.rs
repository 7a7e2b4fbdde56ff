//! Lockout: how failed attempts turn into a locked account.
//!
//! ```text
//!            failure (count+1 < max)
//!          ┌──────────────┐
//!          ▼              │
//!   ┌─────────────┐  failure (count+1 == max)  ┌────────┐
//!   │ open, count │ ─────────────────────────▶ │ locked │ ── any attempt: generic
//!   └─────────────┘                            └────────┘    failure, not counted
//!          ▲   success: count = 0                  │
//!          └───────────────────────────────────────┘ admin unlock: count = 0
//! ```
//!
//! Every factor counts: a wrong password, TOTP, recovery or emailed code, or security
//! answer. The store applies this decision inside the same immediate transaction that
//! checks the attempt, so concurrent attempts are serialised and can never overshoot the
//! limit.

/// What a failed attempt does to an account with `failed_attempts` failures so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureOutcome {
    pub failed_attempts: i64,
    pub lock_now: bool,
}

/// The decision for one more failure under a limit of `max_failures` (0 = never lock).
pub fn register_failure(failed_attempts: i64, max_failures: i64) -> FailureOutcome {
    let failed_attempts = failed_attempts.saturating_add(1);
    FailureOutcome {
        failed_attempts,
        lock_now: max_failures > 0 && failed_attempts >= max_failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nine_failures_lock() {
        let mut count = 0;
        for i in 1..=9 {
            let o = register_failure(count, 9);
            count = o.failed_attempts;
            assert_eq!(o.lock_now, i == 9, "attempt {i}");
        }
        assert!(!register_failure(100, 0).lock_now, "0 disables lockout");
        assert!(register_failure(0, 1).lock_now);
    }
}
