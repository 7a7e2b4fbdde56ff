//! SIGHUP (issue 16): a running authd reads its settings again — the log level, the
//! forward-auth rules, the rate limits, the allowed redirect origins and the mail server
//! change, a request in flight and a keep-alive connection opened before meanwhile are
//! answered normally, and an invalid new configuration is refused with a log line while
//! the one in use is kept.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::daemon_common::{enroll_email, parse_response, Daemon, Resp, SmtpSink};

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

/// One keep-alive HTTP/1.1 connection: requests one after the other, each answer read
/// to its end (by `Content-Length`), the connection left open.
struct KeepAlive(TcpStream);

impl KeepAlive {
    fn open(d: &Daemon) -> KeepAlive {
        let c = TcpStream::connect(d.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        KeepAlive(c)
    }

    #[track_caller]
    fn get(&mut self, path: &str) -> Resp {
        write!(self.0, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        self.0.flush().unwrap();
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            let n = self.0.read(&mut byte).expect("the kept connection answers");
            assert_eq!(n, 1, "the kept connection was closed: {buf:?}");
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .expect("a Content-Length");
        let mut body = vec![0u8; len];
        self.0.read_exact(&mut body).unwrap();
        buf.extend_from_slice(&body);
        parse_response(path, &buf).unwrap()
    }
}

fn limits_origins_mail(per_minute: u32, burst: u32, origin: &str, smtp: &str) -> String {
    format!(
        "trusted_proxies = [\"127.0.0.1\"]\nrate_limit_per_minute = {per_minute}\n\
         rate_limit_burst = {burst}\nallowed_redirect_origins = [\"{origin}\"]\n\
         smtp_url = \"{smtp}\"\nmail_from = \"authd@example.org\"\n"
    )
}

/// `POST /v1/login` with an empty object: past the rate limit it is a 400 (the body is
/// incomplete), refused by it a 429. Nothing is hashed, nobody's failures counted.
fn limited(d: &Daemon) -> u16 {
    d.post_bytes("/v1/login", b"{}").status
}

/// Where the portal's sign-in sends the browser back to, for an original URL on
/// `origin`: the `next` of forward-auth's sign-in URL (None: not an allowed origin).
fn next_for(d: &Daemon, origin: &str) -> Option<String> {
    let host = origin.trim_start_matches("https://");
    let r = d.request(
        "GET",
        "/v1/auth/verify",
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", host),
            ("X-Forwarded-Uri", "/page"),
        ],
        None,
    );
    assert_eq!(r.status, 401, "{r:?}");
    let login = r.header("x-auth-login-url").expect("a sign-in URL");
    login.split_once("?next=").map(|(_, n)| n.to_string())
}

/// The CSP's `form-action` of a portal page.
fn form_action(r: &Resp) -> String {
    let csp = r.header("content-security-policy").expect("a CSP");
    csp.split(';')
        .find(|p| p.trim().starts_with("form-action"))
        .expect("form-action")
        .trim()
        .to_string()
}

#[test]
fn sighup_changes_rate_limits_origins_and_mail_on_a_kept_connection() {
    let env = Env::init();
    env.add_user("carol", STRONG, &[]);
    enroll_email(&env, "carol");
    let (first, second) = (SmtpSink::start(), SmtpSink::start());
    let file = env.path("authd.toml");
    let (one, two) = ("https://one.example.org", "https://two.example.org");
    std::fs::write(&file, limits_origins_mail(600, 100, one, &first.url())).unwrap();
    let d = Daemon::start_raw(&env, &["--config", file.to_str().unwrap()]);
    let code_count = |sink: &SmtpSink| sink.codes_to("carol@example.org").len();
    let sign_in = || {
        let r = d.login("carol", STRONG);
        assert_eq!(r.json()["status"], "second_factor_required", "{r:?}");
    };

    // Before: a generous limit, origin one, codes mailed to the first server.
    for _ in 0..5 {
        assert_eq!(limited(&d), 400);
    }
    assert!(next_for(&d, one).is_some() && next_for(&d, two).is_none());
    sign_in();
    first.nth_code("carol@example.org", 0);
    let mut kept = KeepAlive::open(&d);
    let page = kept.get("/login");
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(form_action(&page), format!("form-action 'self' {one}"));

    std::fs::write(&file, limits_origins_mail(1, 2, two, &second.url())).unwrap();
    hup(&d);
    wait_log(&d, "SIGHUP: settings changed", 1);
    let log = d.stderr();
    for change in [
        "rate_limit_per_minute (600 → 1)",
        "rate_limit_burst (100 → 2)",
        "allowed_redirect_origins ([https://one.example.org] → [https://two.example.org])",
        &format!("mail ({} → {})", first.url(), second.url()),
    ] {
        assert!(log.contains(change), "{change:?} not logged:\n{log}");
    }
    assert!(
        !log.contains("take effect only at the next start"),
        "nothing here needs a restart:\n{log}"
    );

    // The connection opened before the reload is still served, under the new settings.
    let page = kept.get("/login");
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(form_action(&page), format!("form-action 'self' {two}"));
    // The new origins.
    assert!(next_for(&d, two).is_some(), "two is allowed now");
    assert_eq!(next_for(&d, one), None, "one is no longer allowed");
    // The next code goes to the second mail server, none more to the first.
    let before = code_count(&first);
    sign_in();
    second.nth_code("carol@example.org", 0);
    assert_eq!(code_count(&first), before);
    // The new limit: what this address had left is capped at the new burst of two, and
    // that sign-in spent one.
    assert_eq!(limited(&d), 400);
    assert_eq!(limited(&d), 429, "the new limit holds");

    // Mail settings that make no mailer are refused; the rest applies, the mailer in use
    // is kept. A setting that needs a restart is named.
    std::fs::write(
        &file,
        limits_origins_mail(0, 2, two, "nonsense://x") + "body_limit = 12345\n",
    )
    .unwrap();
    hup(&d);
    wait_log(&d, "SIGHUP: settings changed", 2);
    let log = d.stderr();
    assert!(
        log.contains("SIGHUP: the mail settings are refused"),
        "{log}"
    );
    assert!(log.contains("rate_limit_per_minute (1 → 0)"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("take effect only at the next start") && l.contains("body_limit")),
        "{log}"
    );
    assert_eq!(limited(&d), 400, "the limiter is off now");
    sign_in();
    second.nth_code("carol@example.org", 1);
    assert_eq!(code_count(&first), before);
    assert_eq!(
        kept.get("/healthz").status,
        200,
        "still the same connection"
    );

    // Other credentials for the same server: named, never shown.
    let with_password = format!("smtp://authd:s3cret-pw@127.0.0.1:{}", second.port);
    std::fs::write(&file, limits_origins_mail(0, 2, two, &with_password)).unwrap();
    hup(&d);
    wait_log(&d, "SIGHUP: settings changed", 3);
    let log = d.stderr();
    assert!(log.contains("smtp_url (credentials)"), "{log}");
    assert!(!log.contains("s3cret-pw"), "a password in the log:\n{log}");
}
