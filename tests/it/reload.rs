//! SIGHUP (issue 16): a running authd reads its settings again — the log level and the
//! forward-auth rules change, a request in flight meanwhile finishes normally, and an
//! invalid new configuration is refused with a log line while the one in use is kept.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::daemon_common::Daemon;

fn config(level: &str, rule: &str) -> String {
    format!(
        "log_level = \"{level}\"\ntrusted_proxies = [\"127.0.0.1\"]\n\
         forward_auth_rules = [\"{rule}\"]\n"
    )
}

fn hup(d: &Daemon) {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &d.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -HUP");
}

/// Wait until authd's stderr holds `needle` `n` times.
#[track_caller]
fn wait_log(d: &Daemon, needle: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.stderr().matches(needle).count() < n {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} (×{n}) in authd's log:\n{}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn verify(d: &Daemon, token: &str, path: &str) -> u16 {
    d.request(
        "GET",
        "/v1/auth/verify",
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "app.example.org"),
            ("X-Forwarded-Uri", path),
        ],
        None,
    )
    .status
}

#[test]
fn sighup_changes_log_level_and_rules_with_a_request_in_flight() {
    let env = Env::init();
    env.add_user("bob", STRONG, &[]);
    let file = env.path("authd.toml");
    std::fs::write(&file, config("info", "app.example.org/admin=staff")).unwrap();
    let d = Daemon::start(&env, &["--config", file.to_str().unwrap()]);
    let token = d.login_session("bob", STRONG);
    assert_eq!(verify(&d, &token, "/admin"), 403, "bob is not staff");
    assert_eq!(verify(&d, &token, "/reports"), 200);
    wait_log(&d, " request ", 3);
    let requests_logged = d.stderr().matches(" request ").count();
    assert!(
        requests_logged >= 3,
        "info logs each request:\n{}",
        d.stderr()
    );

    // A login in flight: its headers and half its body sent before the SIGHUP.
    let body = format!(r#"{{"username":"bob","password":"{STRONG}"}}"#);
    let (first, rest) = body.split_at(body.len() / 2);
    let mut c = std::net::TcpStream::connect(d.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        c,
        "POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{first}",
        body.len()
    )
    .unwrap();
    c.flush().unwrap();

    std::fs::write(&file, config("warn", "app.example.org/reports=staff")).unwrap();
    hup(&d);
    wait_log(&d, "SIGHUP: settings changed", 1);
    let log = d.stderr();
    assert!(log.contains("forward_auth_rules"), "{log}");
    assert!(log.contains("log_level (info → warn)"), "{log}");

    // The request in flight finishes normally.
    c.write_all(rest.as_bytes()).unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"authenticated\""), "{answer}");

    // The new rules hold; at warn, requests are no longer logged.
    let before = d.stderr().matches(" request ").count();
    assert_eq!(verify(&d, &token, "/admin"), 200, "the old rule is gone");
    assert_eq!(verify(&d, &token, "/reports"), 403, "the new rule holds");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        d.stderr().matches(" request ").count(),
        before,
        "at warn no request lines:\n{}",
        d.stderr()
    );

    // An invalid configuration is refused, logged, and the one in use kept.
    std::fs::write(&file, config("loud==", "app.example.org/admin=staff")).unwrap();
    hup(&d);
    wait_log(&d, "SIGHUP: the configuration is refused", 1);
    assert!(
        d.stderr().contains("log_level"),
        "the refusal names the key"
    );
    std::fs::write(&file, "forward_auth_rules = [\"no group\"]\n").unwrap();
    hup(&d);
    wait_log(&d, "SIGHUP: the configuration is refused", 2);
    assert_eq!(
        verify(&d, &token, "/admin"),
        200,
        "the rules in use are kept"
    );
    assert_eq!(verify(&d, &token, "/reports"), 403);

    // Back to info: requests are logged again.
    std::fs::write(&file, config("info", "app.example.org/reports=staff")).unwrap();
    hup(&d);
    // (The change to warn was announced under warn: not shown. This one is.)
    wait_log(&d, "SIGHUP: log level changed", 1);
    let before = d.stderr().matches(" request ").count();
    verify(&d, &token, "/x");
    wait_log(&d, " request ", before + 1);
}
