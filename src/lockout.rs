//! Lockout: how failed attempts turn into locks, and whose attempts they lock out.
//!
//! `lockout.mode` picks one of three behaviours:
//!
//! - **smart** (the default): every attempt has a *source*. A source is **familiar** when
//!   it presents a valid remembered-device token of that user, or comes from a network
//!   (IPv4 /24, IPv6 /64) from which the user completed a sign-in within
//!   `lockout.familiar_days`; every other source is **unfamiliar**. Failures from
//!   unfamiliar sources count into their own per-account counter, and at
//!   `lockout.max_failures` lock out *unfamiliar sources only*: any later attempt from
//!   any unfamiliar source is refused before its password or code is looked at. Failures
//!   from familiar sources count into the account counter, which at the limit locks the
//!   account for everyone (as in `account` mode). So the owner on a familiar source still
//!   signs in while strangers are locked out, and learns how many attempts failed.
//! - **account**: the seed behaviour. One counter; at the limit the account is locked for
//!   everyone until an administrator unlocks it.
//! - **timed**: as `account`, but the lock lifts by itself after
//!   `lockout.duration_minutes`, doubled for each further lock within a day of the last.
//!
//! ```text
//!                 failure from S (count_S + 1 < max)
//!               ┌──────────────┐
//!               ▼              │
//!   ┌──────────────────────┐   │  failure from S (count_S + 1 == max)
//!   │ open: count_familiar,│───┴──────────────────────────┐
//!   │ count_unfamiliar     │                              ▼
//!   └──────────────────────┘     S unfamiliar (smart) ┌──────────────────────┐ unfamiliar attempt:
//!     ▲   ▲  full sign-in:  ◀──────────────────────── │ unfamiliar locked    │ refused unchecked
//!     │   │  counts = 0                               └──────────────────────┘ (familiar: as open)
//!     │   │                  S familiar, or any S     ┌──────────────────────┐ any attempt:
//!     │   └───────────────── in account/timed mode ──▶│ account locked       │ refused, not counted
//!     │      timed: lock_until passed (next attempt)  └──────────────────────┘
//!     └──────────── admin unlock (every mode): every count, lock and streak cleared
//! ```
//!
//! **Invariant** (the seed's promise, kept exact): no party gets more than
//! `lockout.max_failures` guesses at an account, counted across every factor and address,
//! also under concurrency. Strangers share the unfamiliar counter; the account counter
//! takes the rest. The store applies [`register_failure`] inside the same immediate
//! transaction that checks the attempt, so concurrent attempts are serialised and can never
//! overshoot a limit. A full sign-in resets both counters (not the locks).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A day, in seconds: the window in which timed locks double.
pub const DAY: i64 = 86_400;

/// `lockout.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Smart,
    Account,
    Timed,
}

impl Mode {
    pub fn parse(s: &str) -> Mode {
        match s {
            "account" => Mode::Account,
            "timed" => Mode::Timed,
            _ => Mode::Smart,
        }
    }
}

/// The lockout settings in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Settings {
    pub mode: Mode,
    /// 0 never locks.
    pub max_failures: i64,
    pub familiar_days: i64,
    pub duration_minutes: i64,
}

/// Where an attempt comes from, as far as lockout is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A valid remembered-device token of the user came with the attempt.
    Device,
    /// The client's network is one the user completed a sign-in from lately.
    Network,
    /// A signed-in session of the user (e.g. changing the password).
    Session,
    #[default]
    Unfamiliar,
}

impl Source {
    pub fn familiar(self) -> bool {
        self != Source::Unfamiliar
    }
    /// The audit detail of a failure from this source.
    pub fn detail(self) -> Value {
        match self {
            Source::Unfamiliar => json!({"source": "unfamiliar"}),
            Source::Device => json!({"source": "familiar", "familiar_by": "device"}),
            Source::Network => json!({"source": "familiar", "familiar_by": "network"}),
            Source::Session => json!({"source": "familiar", "familiar_by": "session"}),
        }
    }
}

/// An account's lockout state (the `users` columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct State {
    /// Failures counted into the account counter.
    pub failed_attempts: i64,
    /// When the account was locked for everyone (None: not locked).
    pub locked_at: Option<i64>,
    /// Timed mode: when the account lock lifts (None: until an administrator unlocks).
    pub lock_until: Option<i64>,
    /// Timed mode: locks within a day of each other so far (for doubling).
    pub lock_streak: i64,
    /// When the account was last locked (kept after the lock lifts, for doubling).
    pub last_lock_at: Option<i64>,
    /// Failures from unfamiliar sources (smart mode).
    pub unfamiliar_failures: i64,
    /// When unfamiliar sources were locked out (smart mode; None: not).
    pub unfamiliar_locked_at: Option<i64>,
}

impl State {
    /// Whether the account is locked for everyone at `now` (a timed lock past its end is
    /// not, although its columns stay set until the next attempt clears them).
    pub fn account_locked(&self, now: i64) -> bool {
        self.locked_at.is_some() && self.lock_until.is_none_or(|t| now < t)
    }

    /// A timed lock whose end has passed (its columns are still set).
    pub fn lapsed(&self, now: i64) -> bool {
        self.locked_at.is_some() && self.lock_until.is_some_and(|t| now >= t)
    }

    /// Whether unfamiliar sources are locked out under `mode`.
    pub fn unfamiliar_locked(&self, mode: Mode) -> bool {
        mode == Mode::Smart && self.unfamiliar_locked_at.is_some()
    }

    /// Why an attempt from `source` is refused before it is looked at, if it is:
    /// `locked` (the account) or `unfamiliar_locked`.
    pub fn refusal(&self, mode: Mode, source: Source, now: i64) -> Option<&'static str> {
        if self.account_locked(now) {
            Some("locked")
        } else if !source.familiar() && self.unfamiliar_locked(mode) {
            Some("unfamiliar_locked")
        } else {
            None
        }
    }

    /// The state after a lapsed timed lock is cleared (counts start again; the streak
    /// and the time of the last lock stay, for doubling).
    pub fn settled(mut self, now: i64) -> State {
        if self.lapsed(now) {
            self.locked_at = None;
            self.lock_until = None;
            self.failed_attempts = 0;
        }
        self
    }

    /// Failed attempts a full sign-in reports (both counters).
    pub fn failures_to_report(&self) -> i64 {
        self.failed_attempts
            .saturating_add(self.unfamiliar_failures)
    }
}

/// What one more failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    None,
    /// The account is now locked for everyone.
    Account,
    /// Unfamiliar sources are now locked out (smart mode).
    Unfamiliar,
}

/// The decision for one more failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureOutcome {
    pub state: State,
    /// Whether the failure was counted (an attempt refused by a lock is not).
    pub counted: bool,
    pub lock: Lock,
}

/// How long (seconds) the `streak`-th timed lock of a day lasts: the duration, doubled for
/// each earlier lock of the streak (capped at 2^20 times, saturating).
pub fn timed_duration(duration_minutes: i64, streak: i64) -> i64 {
    let doublings = streak.saturating_sub(1).clamp(0, 20) as u32;
    duration_minutes
        .max(1)
        .saturating_mul(60)
        .saturating_mul(1_i64 << doublings)
}

/// One more failure from `source` at `now` on an account in `state`.
pub fn register_failure(
    state: State,
    settings: &Settings,
    source: Source,
    now: i64,
) -> FailureOutcome {
    let mut s = state.settled(now);
    if s.refusal(settings.mode, source, now).is_some() {
        return FailureOutcome {
            state: s,
            counted: false,
            lock: Lock::None,
        };
    }
    let max = settings.max_failures;
    let unfamiliar_counter = settings.mode == Mode::Smart && !source.familiar();
    if unfamiliar_counter {
        s.unfamiliar_failures = s.unfamiliar_failures.saturating_add(1);
        let lock = max > 0 && s.unfamiliar_failures >= max;
        if lock {
            s.unfamiliar_locked_at = Some(now);
        }
        return FailureOutcome {
            state: s,
            counted: true,
            lock: if lock { Lock::Unfamiliar } else { Lock::None },
        };
    }
    s.failed_attempts = s.failed_attempts.saturating_add(1);
    let lock = max > 0 && s.failed_attempts >= max;
    if lock {
        s.locked_at = Some(now);
        if settings.mode == Mode::Timed {
            s.lock_streak = match s.last_lock_at {
                Some(t) if now.saturating_sub(t) < DAY => s.lock_streak.saturating_add(1),
                _ => 1,
            };
            s.lock_until =
                Some(now.saturating_add(timed_duration(settings.duration_minutes, s.lock_streak)));
        }
        s.last_lock_at = Some(now);
    }
    FailureOutcome {
        state: s,
        counted: true,
        lock: if lock { Lock::Account } else { Lock::None },
    }
}

/// The network an address belongs to for familiarity: `a.b.c.0/24` for IPv4 (also when
/// written as an IPv4-mapped IPv6 address), the /64 prefix for IPv6. None when `ip` is not
/// an address (such a source is never familiar).
pub fn network_of(ip: &str) -> Option<String> {
    let addr: std::net::IpAddr = ip.trim().parse().ok()?;
    let v4 = match addr {
        std::net::IpAddr::V4(a) => Some(a),
        std::net::IpAddr::V6(a) => a.to_ipv4_mapped(),
    };
    if let Some(a) = v4 {
        let o = a.octets();
        return Some(format!("{}.{}.{}.0/24", o[0], o[1], o[2]));
    }
    let std::net::IpAddr::V6(a) = addr else {
        return None;
    };
    let s = a.segments();
    let prefix = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
    Some(format!("{prefix}/64"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_800_000_000;

    fn settings(mode: Mode) -> Settings {
        Settings {
            mode,
            max_failures: 9,
            familiar_days: 30,
            duration_minutes: 15,
        }
    }

    fn fail_n(mut s: State, set: &Settings, src: Source, n: usize, now: i64) -> (State, Lock) {
        let mut last = Lock::None;
        for _ in 0..n {
            let o = register_failure(s, set, src, now);
            s = o.state;
            last = o.lock;
        }
        (s, last)
    }

    #[test]
    fn account_mode_nine_failures_lock_for_everyone() {
        let set = settings(Mode::Account);
        let mut s = State::default();
        for i in 1..=9 {
            let o = register_failure(s, &set, Source::Unfamiliar, T);
            s = o.state;
            assert_eq!(o.lock == Lock::Account, i == 9, "attempt {i}");
        }
        assert_eq!(s.unfamiliar_failures, 0, "one counter in account mode");
        assert_eq!(
            s.refusal(Mode::Account, Source::Device, T + 10 * DAY),
            Some("locked")
        );
        let o = register_failure(s, &set, Source::Device, T + 1);
        assert!(!o.counted, "a locked account counts nothing more");
        assert_eq!(o.state.failed_attempts, 9);
        let never = Settings {
            max_failures: 0,
            ..set
        };
        assert_eq!(
            fail_n(State::default(), &never, Source::Unfamiliar, 100, T).1,
            Lock::None
        );
    }

    #[test]
    fn smart_mode_locks_only_unfamiliar_sources() {
        let set = settings(Mode::Smart);
        let (s, lock) = fail_n(State::default(), &set, Source::Unfamiliar, 9, T);
        assert_eq!(lock, Lock::Unfamiliar);
        assert_eq!((s.unfamiliar_failures, s.failed_attempts), (9, 0));
        assert_eq!(
            s.refusal(Mode::Smart, Source::Unfamiliar, T),
            Some("unfamiliar_locked")
        );
        for familiar in [Source::Device, Source::Network, Source::Session] {
            assert_eq!(s.refusal(Mode::Smart, familiar, T), None);
        }
        // A 10th unfamiliar guess is not counted; familiar ones go to the account counter.
        let o = register_failure(s, &set, Source::Unfamiliar, T);
        assert!(!o.counted);
        let (s, lock) = fail_n(s, &set, Source::Network, 9, T);
        assert_eq!(lock, Lock::Account);
        assert_eq!(s.refusal(Mode::Smart, Source::Device, T), Some("locked"));
        // The unfamiliar lock means nothing once the mode is account.
        let (s, _) = fail_n(State::default(), &set, Source::Unfamiliar, 9, T);
        assert_eq!(s.refusal(Mode::Account, Source::Unfamiliar, T), None);
        assert_eq!(s.failures_to_report(), 9);
    }

    #[test]
    fn timed_mode_lifts_after_the_duration_and_doubles_within_a_day() {
        let set = settings(Mode::Timed);
        let (s, lock) = fail_n(State::default(), &set, Source::Unfamiliar, 9, T);
        assert_eq!(lock, Lock::Account);
        assert_eq!(s.lock_until, Some(T + 15 * 60));
        assert!(s.account_locked(T + 15 * 60 - 1));
        assert!(!s.account_locked(T + 15 * 60), "lifted after 15 minutes");
        // While locked nothing counts; once lifted the count starts again.
        assert!(!register_failure(s, &set, Source::Unfamiliar, T + 60).counted);
        let later = T + 15 * 60;
        let o = register_failure(s, &set, Source::Unfamiliar, later);
        assert!(o.counted);
        assert_eq!((o.state.failed_attempts, o.state.locked_at), (1, None));
        // The second lock within a day: 30 minutes; the third: 60.
        let (s2, _) = fail_n(s, &set, Source::Unfamiliar, 9, later);
        assert_eq!((s2.lock_streak, s2.lock_until), (2, Some(later + 30 * 60)));
        let later2 = later + 30 * 60;
        let (s3, _) = fail_n(s2, &set, Source::Unfamiliar, 9, later2);
        assert_eq!(s3.lock_until, Some(later2 + 60 * 60));
        // A lock more than a day after the last starts again at 15 minutes.
        let next_day = later2 + 60 * 60 + DAY;
        let (s4, _) = fail_n(s3, &set, Source::Unfamiliar, 9, next_day);
        assert_eq!(
            (s4.lock_streak, s4.lock_until),
            (1, Some(next_day + 15 * 60))
        );
        assert_eq!(timed_duration(15, 1000), 15 * 60 * (1 << 20), "capped");
        assert!(timed_duration(i64::MAX, 30) > 0, "saturates");
    }

    #[test]
    fn networks() {
        for (ip, net) in [
            ("192.0.2.77", Some("192.0.2.0/24")),
            (" 10.1.2.3 ", Some("10.1.2.0/24")),
            ("::ffff:192.0.2.9", Some("192.0.2.0/24")),
            ("2001:db8:1:2:3:4:5:6", Some("2001:db8:1:2::/64")),
            ("2001:db8::1", Some("2001:db8::/64")),
            ("", None),
            ("unix", None),
            ("300.1.1.1", None),
        ] {
            assert_eq!(network_of(ip).as_deref(), net, "{ip}");
        }
    }
}
