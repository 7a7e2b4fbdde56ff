//! Issue 16's request plumbing on the real daemon: `/healthz` (alive) and `/readyz`
//! (the database answers at a current schema), request ids (a sane incoming
//! `X-Request-Id` kept, else one made; echoed and on the request's log lines), and
//! `--access-log all|off|sample:N`.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::daemon_common::{authd_command, Daemon};

fn count_when_settled(d: &Daemon, needle: &str, at_least: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.stderr().matches(needle).count() < at_least && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    d.stderr().matches(needle).count()
}

#[test]
fn readyz_asks_the_database_and_healthz_only_the_process() {
    let env = Env::init();
    let d = Daemon::start(&env, &[]);
    let r = d.get("/readyz");
    assert_eq!((r.status, r.text().trim()), (200, "ready"));
    // A schema this authd does not know (a newer one put in place underneath it).
    let c = rusqlite::Connection::open(&env.db).unwrap();
    let v: i64 = c
        .query_row("PRAGMA user_version", (), |r| r.get(0))
        .unwrap();
    c.pragma_update(None, "user_version", 999).unwrap();
    let r = d.get("/readyz");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.text().contains("not ready"));
    assert_eq!(d.get("/healthz").status, 200, "alive all the same");
    c.pragma_update(None, "user_version", v).unwrap();
    assert_eq!(d.get("/readyz").status, 200);
    assert_eq!(d.request("POST", "/readyz", &[], None).status, 405);
}

#[test]
fn request_ids_are_kept_or_made_echoed_and_logged() {
    let env = Env::init();
    let d = Daemon::start(&env, &[]);
    let r = d.request(
        "GET",
        "/healthz",
        &[("X-Request-Id", "abc-123.def_4:5")],
        None,
    );
    assert_eq!(r.header("x-request-id"), Some("abc-123.def_4:5"));
    count_when_settled(&d, "request{id=abc-123.def_4:5}", 1);
    assert!(
        d.stderr()
            .lines()
            .any(|l| l.contains("request{id=abc-123.def_4:5}") && l.contains("status=200")),
        "the access line carries the id:\n{}",
        d.stderr()
    );
    // Kept up to 128 characters.
    let longest = "b".repeat(128);
    let r = d.request("GET", "/healthz", &[("X-Request-Id", &longest)], None);
    assert_eq!(r.header("x-request-id"), Some(longest.as_str()));
    // Made here: without one, or for one that is not sane (spaces, too long, two):
    // 128 random bits, as 32 hex digits, that share nothing with the one before.
    let long = "a".repeat(129);
    let mut seen = Vec::new();
    for headers in [
        vec![],
        vec![("X-Request-Id", "has spaces")],
        vec![("X-Request-Id", long.as_str())],
        vec![("X-Request-Id", "one"), ("X-Request-Id", "two")],
        vec![("X-Request-Id", "<script>")],
        vec![("X-Request-Id", "tab\there")],
    ] {
        let r = d.request("GET", "/healthz", &headers, None);
        let id = r.header("x-request-id").expect("an id").to_string();
        assert!(
            id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit()),
            "{id}"
        );
        if let Some(last) = seen.last() {
            let last: &String = last;
            assert!(
                id[..8] != last[..8] && id[24..] != last[24..],
                "{last} {id}"
            );
        }
        assert!(
            headers.iter().all(|(_, v)| *v != id),
            "{id} was not taken in"
        );
        assert!(!seen.contains(&id), "ids are unique: {id}");
        seen.push(id);
    }
    // Errors carry one too.
    let r = d.get("/v1/nothing-here");
    assert!(r.status >= 400 && r.header("x-request-id").is_some());
}

#[test]
fn access_log_samples_one_in_n_and_keeps_every_error() {
    let env = Env::init();
    let d = Daemon::start(&env, &["--access-log", "sample:10"]);
    for _ in 0..50 {
        assert_eq!(d.get("/healthz").status, 200);
    }
    for _ in 0..3 {
        assert_eq!(d.get("/v1/nothing-here").status, 404);
    }
    let lines = count_when_settled(&d, " request ", 8);
    assert_eq!(
        lines,
        5 + 3,
        "1 in 10 of 50, and every 404:\n{}",
        d.stderr()
    );
    // Every access line names its request: in the span for the sampled requests, as a
    // field for the 404s outside the sample. Only sampled requests get a span.
    let log = d.stderr();
    let access: Vec<&str> = log.lines().filter(|l| l.contains(" request ")).collect();
    for l in &access {
        assert!(l.contains("request{id=") || l.contains(" id="), "{l}");
    }
    let spans = log.matches("request{id=").count();
    assert!((5..=6).contains(&spans), "{spans} spans:\n{log}");
    assert!(
        access.iter().filter(|l| l.contains("status=404")).count() == 3,
        "{log}"
    );
    drop(d);

    let d = Daemon::start(&env, &["--access-log", "off"]);
    d.get("/healthz");
    d.get("/v1/nothing-here");
    assert_eq!(count_when_settled(&d, " request ", 1), 0, "{}", d.stderr());
    drop(d);

    let d = Daemon::start(&env, &[]);
    for _ in 0..5 {
        d.get("/healthz");
    }
    assert_eq!(count_when_settled(&d, " request ", 5), 5, "all by default");
    drop(d);

    let out = run(
        authd_command(&env, &["--access-log", "sample:0"]),
        None,
        Duration::from_secs(20),
    );
    out.code(2).stderr_has("access_log \"sample:0\"");
}
