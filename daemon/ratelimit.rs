//! Per-client rate limiting of login attempts: a token bucket per address.
//!
//! Each client starts with `burst` tokens; an attempt spends one; tokens come back at
//! `per_minute / 60` a second up to `burst`. With no token left the attempt is refused and
//! the caller learns how long until the next one (the `Retry-After`). `per_minute = 0`
//! switches the limiter off.
//!
//! IPv6 clients are counted per /64 (one customer's usual allocation), since a single host
//! can pick any address inside its prefix. Memory is bounded: a full bucket is the same as
//! none, so full buckets are swept out once a minute, and when [`MAX_TRACKED`] clients are
//! tracked anyway the least recently seen tenth is forgotten.
//!
//! The limits can change while authd serves ([`RateLimiter::set_limits`], a SIGHUP): each
//! client's bucket keeps its tokens, capped at the new burst, and refills at the new rate.
//!
//! Time is a parameter (`now`), never read here, so tests drive the clock.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most clients tracked at once.
pub const MAX_TRACKED: usize = 100_000;

/// How often buckets that have refilled are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub struct RateLimiter {
    /// Whether the limiter is on (`per_minute > 0`): read without the lock.
    on: AtomicBool,
    max_tracked: usize,
    state: Mutex<State>,
}

struct State {
    /// Tokens per second; 0 = off.
    rate: f64,
    burst: f64,
    buckets: HashMap<IpAddr, Bucket>,
    last_sweep: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// The bucket as it stands at `now`.
    fn refilled(self, now: Instant, rate: f64, burst: f64) -> Bucket {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        Bucket {
            tokens: (self.tokens + dt * rate).min(burst),
            at: self.at.max(now),
        }
    }
}

impl RateLimiter {
    pub fn new(per_minute: u32, burst: u32) -> RateLimiter {
        RateLimiter::with_max_tracked(per_minute, burst, MAX_TRACKED)
    }

    fn with_max_tracked(per_minute: u32, burst: u32, max_tracked: usize) -> RateLimiter {
        RateLimiter {
            on: AtomicBool::new(per_minute > 0),
            max_tracked: max_tracked.max(1),
            state: Mutex::new(State {
                rate: f64::from(per_minute) / 60.0,
                burst: f64::from(burst.max(1)),
                buckets: HashMap::new(),
                last_sweep: None,
            }),
        }
    }

    /// New limits from now on (a SIGHUP): every client keeps the tokens it has, up to the
    /// new burst; `per_minute = 0` switches the limiter off (and forgets every client).
    pub fn set_limits(&self, per_minute: u32, burst: u32) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.rate = f64::from(per_minute) / 60.0;
        st.burst = f64::from(burst.max(1));
        if per_minute == 0 {
            st.buckets.clear();
        }
        self.on.store(per_minute > 0, Ordering::Relaxed);
    }

    /// Spend one attempt for `ip` at `now`: `Ok` when allowed, otherwise `Err` with the
    /// time until the next attempt would be.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if !self.on.load(Ordering::Relaxed) {
            return Ok(());
        }
        let key = key(ip);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.rate <= 0.0 {
            return Ok(());
        }
        let (rate, burst) = (st.rate, st.burst);
        let sweep_due = match st.last_sweep {
            None => true,
            Some(t) => now.saturating_duration_since(t) >= SWEEP_EVERY,
        };
        if sweep_due {
            st.last_sweep = Some(now);
            self.sweep(&mut st, now);
        }
        if st.buckets.len() >= self.max_tracked && !st.buckets.contains_key(&key) {
            self.sweep(&mut st, now);
            if st.buckets.len() >= self.max_tracked {
                self.evict_oldest(&mut st);
            }
        }
        let fresh = Bucket {
            tokens: burst,
            at: now,
        };
        let bucket = st.buckets.entry(key).or_insert(fresh);
        let mut b = bucket.refilled(now, rate, burst);
        let answer = if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(((1.0 - b.tokens) / rate).max(0.0)))
        };
        *bucket = b;
        answer
    }

    /// Forget the buckets that have refilled: they behave exactly like absent ones.
    fn sweep(&self, st: &mut State, now: Instant) {
        let (rate, burst) = (st.rate, st.burst);
        st.buckets
            .retain(|_, b| b.refilled(now, rate, burst).tokens < burst);
    }

    /// Forget the least recently seen tenth (amortised: runs once per that many clients).
    fn evict_oldest(&self, st: &mut State) {
        let keep = self.max_tracked - self.max_tracked.div_ceil(10);
        let mut seen: Vec<(Instant, IpAddr)> = st.buckets.iter().map(|(k, b)| (b.at, *k)).collect();
        let drop = seen.len().saturating_sub(keep);
        if drop == 0 {
            return;
        }
        seen.select_nth_unstable(drop - 1);
        for (_, k) in &seen[..drop] {
            st.buckets.remove(k);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.state.lock().map(|s| s.buckets.len()).unwrap_or(0)
    }
}

/// The bucket key: IPv4 (including IPv4-mapped IPv6) as is, IPv6 by its /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn burst_then_refill() {
        let rl = RateLimiter::new(60, 3); // one a second, three at once
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(rl.check(a, t0), Ok(()));
        }
        let wait = rl.check(a, t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(990) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another client is not affected.
        assert_eq!(rl.check(ip("192.0.2.2"), t0), Ok(()));
        // Half a second later: still refused, half a second to go.
        let wait = rl.check(a, t0 + Duration::from_millis(500)).unwrap_err();
        assert!(
            wait > Duration::from_millis(490) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        // A refused attempt costs nothing: one second after t0 there is one token.
        assert_eq!(rl.check(a, t0 + Duration::from_secs(1)), Ok(()));
        assert!(rl.check(a, t0 + Duration::from_secs(1)).is_err());
        // Long idle: back to the burst, never above it.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(rl.check(a, later), Ok(()));
        }
        assert!(rl.check(a, later).is_err());
    }

    #[test]
    fn slow_rate_gives_long_retry_after() {
        let rl = RateLimiter::new(6, 1); // one every ten seconds
        let t0 = Instant::now();
        let a = ip("198.51.100.7");
        assert!(rl.check(a, t0).is_ok());
        let wait = rl.check(a, t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(9_990) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
    }

    #[test]
    fn zero_per_minute_is_off() {
        let rl = RateLimiter::new(0, 1);
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert_eq!(rl.check(ip("192.0.2.1"), t0), Ok(()));
        }
        assert_eq!(rl.tracked(), 0);
    }

    #[test]
    fn time_going_backwards_does_not_mint_tokens() {
        let rl = RateLimiter::new(60, 1);
        let t0 = Instant::now() + Duration::from_secs(100);
        let a = ip("192.0.2.1");
        assert!(rl.check(a, t0).is_ok());
        assert!(rl.check(a, t0 - Duration::from_secs(50)).is_err());
        assert!(rl.check(a, t0).is_err());
        assert!(rl.check(a, t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_is_v4() {
        let rl = RateLimiter::new(60, 2);
        let t0 = Instant::now();
        assert!(rl.check(ip("2001:db8:1:2::1"), t0).is_ok());
        assert!(rl.check(ip("2001:db8:1:2:ffff::9"), t0).is_ok());
        assert!(rl.check(ip("2001:db8:1:2::abcd"), t0).is_err(), "same /64");
        assert!(rl.check(ip("2001:db8:1:3::1"), t0).is_ok(), "another /64");
        assert!(rl.check(ip("203.0.113.5"), t0).is_ok());
        assert!(rl.check(ip("::ffff:203.0.113.5"), t0).is_ok());
        assert!(
            rl.check(ip("203.0.113.5"), t0).is_err(),
            "mapped is the same client"
        );
    }

    #[test]
    fn memory_is_bounded() {
        let rl = RateLimiter::with_max_tracked(60, 5, 100);
        let t0 = Instant::now();
        // Many clients, each one attempt, all within one second: nothing is full again yet.
        for i in 0..1000u32 {
            let t = t0 + Duration::from_millis(u64::from(i));
            assert!(rl
                .check(IpAddr::from((0x0a00_0000 + i).to_be_bytes()), t)
                .is_ok());
            assert!(rl.tracked() <= 100, "{} tracked", rl.tracked());
        }
        // The most recent clients are still remembered.
        let last = IpAddr::from((0x0a00_0000u32 + 999).to_be_bytes());
        let t_end = t0 + Duration::from_millis(999);
        for _ in 0..4 {
            assert!(rl.check(last, t_end).is_ok());
        }
        assert!(rl.check(last, t_end).is_err());
    }

    #[test]
    fn limits_change_while_serving() {
        let rl = RateLimiter::new(60, 3);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert!(rl.check(a, t0).is_ok());
        }
        assert!(rl.check(a, t0).is_err());
        // A larger burst gives nobody tokens at once; a faster rate refills sooner.
        rl.set_limits(600, 10);
        assert!(rl.check(a, t0).is_err(), "no tokens minted by the change");
        let t1 = t0 + Duration::from_millis(250);
        assert!(rl.check(a, t1).is_ok(), "10 a second now: 2.5 tokens back");
        assert!(rl.check(a, t1).is_ok());
        assert!(rl.check(a, t1).is_err());
        // A smaller burst caps what a client has.
        let b = ip("192.0.2.2");
        assert!(rl.check(b, t1).is_ok());
        rl.set_limits(60, 1);
        assert!(rl.check(b, t1).is_ok(), "capped at the new burst of one");
        assert!(rl.check(b, t1).is_err());
        // Off, and on again: clients start afresh.
        rl.set_limits(0, 1);
        for _ in 0..100 {
            assert!(rl.check(b, t1).is_ok());
        }
        assert_eq!(rl.tracked(), 0);
        rl.set_limits(60, 2);
        assert!(rl.check(b, t1).is_ok());
        assert!(rl.check(b, t1).is_ok());
        assert!(rl.check(b, t1).is_err());
    }

    #[test]
    fn refilled_buckets_are_swept() {
        let rl = RateLimiter::new(60, 2);
        let t0 = Instant::now();
        for i in 0..50u8 {
            assert!(rl.check(IpAddr::from([10, 0, 0, i]), t0).is_ok());
        }
        assert_eq!(rl.tracked(), 50);
        // A minute later every bucket is full again: the next check sweeps them out.
        assert!(rl.check(ip("192.0.2.1"), t0 + SWEEP_EVERY).is_ok());
        assert_eq!(rl.tracked(), 1);
    }
}
