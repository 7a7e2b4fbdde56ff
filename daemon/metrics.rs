//! Prometheus metrics, rendered in the text exposition format for `GET /metrics`.
//!
//! Labels are `&'static str`s chosen by the code (route labels, outcome and reason codes),
//! never request data, so the number of series stays small and fixed. Counters keyed by
//! labels live in one short-held mutex each; the unlabelled ones are atomics.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Upper bounds (seconds) of the latency histogram's buckets.
pub const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    /// Observations per bucket (not cumulative; the overflow is `count - sum(counts)`).
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        if let Some(i) = BUCKETS.iter().position(|&b| v <= b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Default)]
struct Requests {
    totals: BTreeMap<(&'static str, u16), u64>,
    durations: BTreeMap<&'static str, Histogram>,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<Requests>,
    logins: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    lockouts: AtomicU64,
    in_flight: AtomicI64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// One answered request: its route label, status and duration in seconds.
    pub fn request(&self, route: &'static str, status: u16, seconds: f64) {
        let seconds = if seconds.is_finite() && seconds > 0.0 {
            seconds
        } else {
            0.0
        };
        let mut r = lock(&self.requests);
        *r.totals.entry((route, status)).or_default() += 1;
        r.durations.entry(route).or_default().observe(seconds);
    }

    /// One decided login step: `outcome` (e.g. "success", "failure") and its `reason`.
    pub fn login(&self, outcome: &'static str, reason: &'static str) {
        *lock(&self.logins).entry((outcome, reason)).or_default() += 1;
    }

    /// One account locked.
    pub fn lockout(&self) {
        self.lockouts.fetch_add(1, Ordering::Relaxed);
    }

    /// A request started (pair with [`Metrics::in_flight_dec`]).
    pub fn in_flight_inc(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request finished.
    pub fn in_flight_dec(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (version 0.0.4) of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        {
            let r = lock(&self.requests);
            header(
                &mut out,
                "authd_requests_total",
                "counter",
                "HTTP requests answered, by route and status.",
            );
            for ((route, status), n) in &r.totals {
                let _ = writeln!(
                    out,
                    "authd_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
            header(
                &mut out,
                "authd_request_duration_seconds",
                "histogram",
                "Time from reading a request's head to answering it, by route.",
            );
            for (route, h) in &r.durations {
                let route = escape(route);
                let mut cumulative = 0;
                for (bound, n) in BUCKETS.iter().zip(h.counts) {
                    cumulative += n;
                    let _ = writeln!(
                        out,
                        "authd_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                    );
                }
                let _ = writeln!(
                    out,
                    "authd_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "authd_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "authd_request_duration_seconds_count{{route=\"{route}\"}} {}",
                    h.count
                );
            }
        }
        header(
            &mut out,
            "authd_login_outcomes_total",
            "counter",
            "Login steps decided, by outcome and reason.",
        );
        for ((outcome, reason), n) in lock(&self.logins).iter() {
            let _ = writeln!(
                out,
                "authd_login_outcomes_total{{outcome=\"{}\",reason=\"{}\"}} {n}",
                escape(outcome),
                escape(reason)
            );
        }
        header(
            &mut out,
            "authd_lockouts_total",
            "counter",
            "Accounts locked after too many failures.",
        );
        let _ = writeln!(
            out,
            "authd_lockouts_total {}",
            self.lockouts.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "authd_in_flight_requests",
            "gauge",
            "Requests being answered now.",
        );
        let _ = writeln!(
            out,
            "authd_in_flight_requests {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        out
    }
}

pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value escaped for the text format (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Fewest characters a metrics token may have: it is checked without a rate limit.
pub const MIN_TOKEN_LEN: usize = 16;

/// The bearer token `/metrics` asks for (`--metrics-token-file`). Only its SHA-256 is
/// kept; a presented token is hashed and compared in constant time, so neither the
/// comparison's time nor the token's length tells anything.
pub struct MetricsToken {
    hash: [u8; 32],
}

impl MetricsToken {
    /// Read the token from `path`: the file's text without surrounding whitespace.
    /// Refused, with an error naming the file: unreadable, not UTF-8, empty, shorter
    /// than [`MIN_TOKEN_LEN`], holding spaces or characters a header cannot carry
    /// (only printable ASCII), or readable or writable by users other than its owner
    /// and group (chmod o-rwx).
    pub fn load(path: &std::path::Path) -> Result<MetricsToken, String> {
        use std::os::unix::fs::PermissionsExt;
        let name = path.display();
        let bad = |why: &str| format!("the metrics token file {name} {why}");
        let meta = std::fs::metadata(path).map_err(|e| bad(&format!("cannot be read: {e}")))?;
        if !meta.is_file() {
            return Err(bad("is not a file"));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o007 != 0 {
            return Err(bad(&format!(
                "is open to other users (mode {mode:o}): make it readable by its owner \
                 (and group) only, e.g. chmod 600 {name}"
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| bad(&format!("cannot be read: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|_| bad("is not UTF-8 text"))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(bad("is empty: write a long random token into it, e.g. \
                 openssl rand -hex 32"));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(
                "must hold one token of printable ASCII characters without spaces",
            ));
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(bad(&format!(
                "holds a token of {} characters; it needs at least {MIN_TOKEN_LEN} \
                 (e.g. openssl rand -hex 32)",
                token.len()
            )));
        }
        Ok(MetricsToken {
            hash: Self::digest(token),
        })
    }

    fn digest(token: &str) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(token.as_bytes()).into()
    }

    /// Whether `presented` is the token (constant time).
    pub fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        Self::digest(presented).ct_eq(&self.hash).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_token_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &[u8], mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let good = "0123456789abcdef0123456789abcdef";
        let t =
            MetricsToken::load(&write("ok", format!("  {good}\n\n").as_bytes(), 0o600)).unwrap();
        assert!(t.matches(good), "surrounding whitespace is trimmed");
        for wrong in ["", " ", "0123456789abcdef", &good[1..], &format!("{good}x")] {
            assert!(!t.matches(wrong), "{wrong:?}");
        }
        assert!(MetricsToken::load(&write("group", good.as_bytes(), 0o640)).is_ok());

        let missing = dir.path().join("missing");
        let cases = [
            (missing, "cannot be read"),
            (write("empty", b"", 0o600), "is empty"),
            (write("blank", b" \n\t\n", 0o600), "is empty"),
            (write("short", b"abc123", 0o600), "at least 16"),
            (
                write("spaces", b"0123456789 abcdef0123", 0o600),
                "printable ASCII",
            ),
            (
                write("latin", "0123456789abcdefé".as_bytes(), 0o600),
                "printable ASCII",
            ),
            (
                write("binary", b"\xff\xfe0123456789abcdef", 0o600),
                "not UTF-8",
            ),
            (
                write("world", good.as_bytes(), 0o644),
                "open to other users",
            ),
            (
                write("other-w", good.as_bytes(), 0o602),
                "open to other users",
            ),
            (dir.path().to_path_buf(), "is not a file"),
        ];
        for (path, want) in cases {
            let e = MetricsToken::load(&path).err().unwrap();
            assert!(e.contains(want), "{}: {e}", path.display());
            assert!(
                e.contains(&path.display().to_string()),
                "names the file: {e}"
            );
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn empty_registry_still_declares_everything() {
        let text = Metrics::new().render();
        for name in [
            "authd_requests_total counter",
            "authd_request_duration_seconds histogram",
            "authd_login_outcomes_total counter",
            "authd_lockouts_total counter",
            "authd_in_flight_requests gauge",
        ] {
            assert!(text.contains(&format!("# TYPE {name}\n")), "{name}\n{text}");
        }
        assert!(text.contains("\nauthd_lockouts_total 0\n"), "{text}");
        assert!(text.ends_with("authd_in_flight_requests 0\n"), "{text}");
        // Every TYPE line follows its HELP line.
        let l = lines(&text);
        for (i, line) in l.iter().enumerate() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(l[i - 1].starts_with(&format!("# HELP {name} ")), "{text}");
            }
        }
    }

    #[test]
    fn counters_and_histogram() {
        let m = Metrics::new();
        m.request("login", 200, 0.0004);
        m.request("login", 200, 0.03);
        m.request("login", 401, 0.2);
        m.request("login", 200, 60.0);
        m.request("healthz", 200, f64::NAN);
        m.login("failure", "bad_password");
        m.login("failure", "bad_password");
        m.login("success", "password");
        m.lockout();
        m.in_flight_inc();
        m.in_flight_inc();
        m.in_flight_dec();
        let text = m.render();
        let l = lines(&text);
        let has = |s: &str| assert!(l.contains(&s), "missing {s:?} in\n{text}");

        has(r#"authd_requests_total{route="login",status="200"} 3"#);
        has(r#"authd_requests_total{route="login",status="401"} 1"#);
        has(r#"authd_requests_total{route="healthz",status="200"} 1"#);
        has(r#"authd_login_outcomes_total{outcome="failure",reason="bad_password"} 2"#);
        has(r#"authd_login_outcomes_total{outcome="success",reason="password"} 1"#);
        has("authd_lockouts_total 1");
        has("authd_in_flight_requests 1");

        // Buckets are cumulative; +Inf and _count are the total; _sum adds up.
        has(r#"authd_request_duration_seconds_bucket{route="login",le="0.001"} 1"#);
        has(r#"authd_request_duration_seconds_bucket{route="login",le="0.025"} 1"#);
        has(r#"authd_request_duration_seconds_bucket{route="login",le="0.05"} 2"#);
        has(r#"authd_request_duration_seconds_bucket{route="login",le="0.25"} 3"#);
        has(r#"authd_request_duration_seconds_bucket{route="login",le="10"} 3"#);
        has(r#"authd_request_duration_seconds_bucket{route="login",le="30"} 3"#);
        has(r#"authd_request_duration_seconds_bucket{route="login",le="+Inf"} 4"#);
        has(r#"authd_request_duration_seconds_count{route="login"} 4"#);
        has(r#"authd_request_duration_seconds_bucket{route="healthz",le="0.001"} 1"#);
        let sum: f64 = l
            .iter()
            .find_map(|x| x.strip_prefix(r#"authd_request_duration_seconds_sum{route="login"} "#))
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 60.2304).abs() < 1e-9, "{sum}");

        // Bucket counts never decrease along the le order.
        let counts: Vec<u64> = l
            .iter()
            .filter(|x| x.starts_with(r#"authd_request_duration_seconds_bucket{route="login""#))
            .map(|x| x.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(counts.len(), BUCKETS.len() + 1);
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");

        // Every sample line is `name{labels} value` or `name value`.
        for line in l.iter().filter(|x| !x.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(series.starts_with("authd_"), "{line}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("a\nb"), "a\\nb");
    }
}
