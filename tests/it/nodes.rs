//! Several authd nodes on one PostgreSQL (issue 13). Each test runs its own private
//! cluster (`pg::Pg`), provisions it with the real `authctl --db postgres://…` (cheap
//! argon2), and starts two or three real `authd` processes on the same URL and key file:
//!
//! - 200 concurrent wrong passwords spread round-robin over 3 nodes: exactly 9 evaluated,
//!   the account locked;
//! - one TOTP code on 50 flows started round-robin and continued on another node: one
//!   session;
//! - a logout / `authctl session revoke` / `user disable` on one node refused by the other
//!   nodes' next check, the delay measured (p50 and max printed) and bounded;
//! - both seed journeys through a real nginx `upstream` (`deploy/nginx/authd-nodes.conf`,
//!   round robin: every step lands on another node);
//! - `kill -9` of one node under load: the others keep answering, every answered session
//!   and logout holds;
//! - PostgreSQL stopped and started under load: 200/401/503 only, never a session for a
//!   wrong password, `/healthz` up and `/readyz` 503 meanwhile, logins again within
//!   seconds; authd refuses to start on an unreachable database.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{self, Env, PG_SETTLE};
use crate::daemon_common::*;
use crate::pg::Pg;

/// A private cluster, its provisioned database and the authd nodes on it (dropped in
/// this order: nodes, environment, cluster, then the turn).
struct Site {
    nodes: Vec<Daemon>,
    env: Env,
    pg: Pg,
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// One several-nodes test at a time: each runs a cluster, three nodes and its own load
/// on this 2-core machine, and the revocation test measures delays that another test's
/// load (not the nodes) would stretch.
static TURN: Mutex<()> = Mutex::new(());

/// A cluster provisioned as the daemon suites' `provision()` does (cheap argon2, the
/// `pupil-data` group requiring 2FA, the `school` organisation), no node yet.
fn site() -> Site {
    let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let pg = Pg::start();
    let env = Env::on_url(&pg.url("authd"));
    env.ctl(&["init"]).ok();
    env.ctl(&["policy", "set", "argon2.m_kib=1024", "argon2.t=1"])
        .ok();
    env.ctl(&["group", "add", "pupil-data", "--require-2fa"])
        .ok();
    env.ctl(&["org", "add", "school"]).ok();
    Site {
        nodes: Vec::new(),
        env,
        pg,
        _turn: turn,
    }
}

impl Site {
    /// Start `n` authd nodes on the site's database and key file.
    fn start_nodes(&mut self, n: usize, extra: &[&str]) {
        for _ in 0..n {
            self.nodes.push(Daemon::start(&self.env, extra));
        }
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|d| d.addr).collect()
    }
}

// ---- HTTP to any address (a node or nginx) -------------------------------------------

fn post_at(addr: SocketAddr, path: &str, body: &Value) -> Resp {
    let b = body.to_string();
    let req = raw_request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        Some(b.as_bytes()),
    );
    http_raw(addr, &format!("POST {path} {b}"), &req)
}

fn auth_at(addr: SocketAddr, method: &str, path: &str, token: &str) -> Resp {
    let auth = format!("Bearer {token}");
    let req = raw_request(addr, method, path, &[("Authorization", &auth)], None);
    http_raw(addr, &format!("{method} {path}"), &req)
}

fn try_at(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Resp, String> {
    let b = body.map(|b| b.to_string());
    let h: &[(&str, &str)] = if b.is_some() {
        &[("Content-Type", "application/json")]
    } else {
        &[]
    };
    try_http(
        addr,
        &raw_request(addr, method, path, h, b.as_deref().map(str::as_bytes)),
        Duration::from_secs(20),
    )
}

fn login_at(addr: SocketAddr, user: &str, pw: &str) -> Resp {
    post_at(
        addr,
        "/v1/login",
        &json!({"username": user, "password": pw}),
    )
}

fn session_at(addr: SocketAddr, token: &str) -> u16 {
    auth_at(addr, "GET", "/v1/session", token).status
}

/// Audit rows of `login.password` for `user` with `outcome` (and `reason`, if given).
fn password_rows(env: &Env, user: &str, outcome: &str, reason: Option<&str>) -> usize {
    audit_events(env, user, "login.password")
        .iter()
        .filter(|r| r["outcome"] == outcome && reason.is_none_or(|w| r["reason"] == w))
        .count()
}

// ---- 1. Lockout across nodes ---------------------------------------------------------

/// 200 concurrent wrong passwords for one user, round-robin over 3 nodes: exactly
/// `lockout.max_failures` (9) evaluated, the account locked, no session; the right
/// password is then refused on every node.
#[test]
fn two_hundred_wrong_passwords_over_three_nodes_lock_at_exactly_nine() {
    let mut s = site();
    // The seed's lock for everyone (smart lockout would lock only unfamiliar sources;
    // the invariant is the same: never more than 9 evaluated).
    policy(&s.env, &["lockout.mode=account", "lockout.max_failures=9"]);
    add_user(&s.env, "cc", "school", &[], "user");
    s.start_nodes(3, &[]);
    let addrs = s.addrs();
    let n = 200;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (b, addr) = (barrier.clone(), addrs[i % addrs.len()]);
            std::thread::spawn(move || {
                b.wait();
                login_at(addr, "cc", &format!("Wrong-{i}!x")).status
            })
        })
        .collect();
    let t = Instant::now();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    eprintln!(
        "200 wrong passwords over 3 nodes answered in {:?}",
        t.elapsed()
    );
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let u = user_show(&s.env, "cc");
    assert_eq!(u["failed_attempts"], 9, "never past the limit: {u:#}");
    assert!(is_locked(&s.env, "cc"), "{u:#}");
    assert_eq!(
        password_rows(&s.env, "cc", "failure", Some("wrong_password")),
        9,
        "exactly 9 passwords evaluated over the 3 nodes"
    );
    assert_eq!(
        audit_events(&s.env, "cc", "login.password").len(),
        n,
        "every attempt is recorded, on whichever node"
    );
    assert_eq!(audit_events(&s.env, "cc", "account.locked").len(), 1);
    assert!(sessions_of(&s.env, "cc").is_empty());
    for a in &addrs {
        login_at(*a, "cc", PW).expect_generic();
    }
    for d in &mut s.nodes {
        d.assert_healthy();
    }
}

// ---- 2. One TOTP code across nodes ---------------------------------------------------

/// One valid TOTP code submitted concurrently on 50 flows, each started on one node and
/// continued on the next: exactly one session.
#[test]
fn one_totp_code_on_fifty_flows_over_the_nodes_succeeds_once() {
    let mut s = site();
    add_user(&s.env, "race", "school", &["pupil-data"], "user");
    let (app, _) = enroll_totp(&s.env, "race");
    policy(&s.env, &["lockout.max_failures=1000"]);
    s.start_nodes(3, &[]);
    let addrs = s.addrs();
    let flows: Vec<String> = (0..50)
        .map(|i| {
            let v = login_at(addrs[i % 3], "race", PW).expect_status("second_factor_required");
            v["flow"].as_str().expect("flow").to_string()
        })
        .collect();
    Totp::settle();
    let code = app.code_at_step(Totp::step_now());
    let barrier = Arc::new(Barrier::new(flows.len()));
    let handles: Vec<_> = flows
        .into_iter()
        .enumerate()
        .map(|(i, flow)| {
            let (b, code, addr) = (barrier.clone(), code.clone(), addrs[(i + 1) % 3]);
            std::thread::spawn(move || {
                b.wait();
                post_at(addr, "/v1/login/totp", &json!({"flow": flow, "code": code}))
            })
        })
        .collect();
    let answers: Vec<Resp> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok: Vec<&Resp> = answers.iter().filter(|r| r.status == 200).collect();
    assert_eq!(ok.len(), 1, "exactly one success: {answers:#?}");
    for r in answers.iter().filter(|r| r.status != 200) {
        r.expect_generic();
    }
    assert_eq!(sessions_of(&s.env, "race").len(), 1);
    let session = ok[0].json()["session"]
        .as_str()
        .expect("session")
        .to_string();
    for a in &addrs {
        assert_eq!(session_at(*a, &session), 200, "valid on every node");
    }
}

// ---- 3. Revocation across nodes ------------------------------------------------------

/// How soon after a revoke other nodes refuse the session. The stated bound
/// (src/session_cache.rs, `PgListener`): the notification, and at the latest the
/// listener's next read of the epoch row, 50 ms apart — so every refusal within
/// `PG_SETTLE` (100 ms) on a quiet machine. Measured on this 2-core machine: a median of
/// 3–5 ms, a maximum of 5–76 ms over 16 runs (8 of them beside two busy loops). Before
/// the row read, PostgreSQL's late notifications kept a revoked session answered on
/// other nodes for 0.1–4.6 s in about one run in three under load. The test allows
/// `STALE_BOUND` for every refusal (a loaded CI machine schedules late too), 9 in 10
/// within `PG_SETTLE`, and polls until `REFUSAL_BOUND` to say how late a late one was.
const STALE_BOUND: Duration = Duration::from_secs(1);
const REFUSAL_BOUND: Duration = Duration::from_secs(30);

/// Poll `GET /v1/session` on each of `nodes` (one thread each) until it refuses `token`;
/// the delay after `t0` at which each did (the refusing answer's arrival: an upper bound).
fn refusal_delays(nodes: &[SocketAddr], token: &str, t0: Instant) -> Vec<Duration> {
    let handles: Vec<_> = nodes
        .iter()
        .map(|a| {
            let (a, token) = (*a, token.to_string());
            std::thread::spawn(move || loop {
                let st = session_at(a, &token);
                assert!(st == 200 || st == 401, "GET /v1/session on {a}: {st}");
                if st == 401 {
                    return t0.elapsed();
                }
                if t0.elapsed() > REFUSAL_BOUND {
                    return Duration::MAX;
                }
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("a poller failed"))
        .collect()
}

/// Sessions checked (and so cached) on every node; ended on one node (logout), by
/// `authctl session revoke` and by `authctl user disable`: the node that ended it refuses
/// at once, the others within the staleness bound. The delays are printed.
#[test]
fn a_revoke_on_one_node_is_refused_by_the_others() {
    let mut s = site();
    add_user(&s.env, "rv", "school", &[], "user");
    s.start_nodes(3, &[]);
    let addrs = s.addrs();
    let rounds = 50;
    let mut delays = Vec::new();
    for r in 0..rounds {
        let (a, others) = (addrs[r % 3], [addrs[(r + 1) % 3], addrs[(r + 2) % 3]]);
        let token = login_at(a, "rv", PW).expect_status("authenticated")["session"]
            .as_str()
            .expect("session")
            .to_string();
        for n in &addrs {
            assert_eq!(session_at(*n, &token), 200, "round {r}: valid everywhere");
        }
        let (t0, on_a) = if r % 10 == 9 {
            // authctl, on no node: every node learns it by notification.
            let out = common::run(
                s.env.cmd(&["session", "revoke", "--user", "rv"]),
                None,
                Duration::from_secs(30),
            );
            assert_eq!(out.code, Some(0), "session revoke: {}", out.stderr);
            (Instant::now(), false)
        } else {
            auth_at(a, "POST", "/v1/logout", &token).expect(204);
            (Instant::now(), true)
        };
        if on_a {
            assert_eq!(
                session_at(a, &token),
                401,
                "the node that logged out refuses at once"
            );
        }
        let d = refusal_delays(if on_a { &others } else { &addrs }, &token, t0);
        if d.contains(&Duration::MAX) {
            let rows = s.pg.psql(
                "authd",
                &format!(
                    "SELECT id, revoked_at FROM sessions WHERE token_hash = '{}'",
                    token_hash(&token)
                ),
            );
            let stderr: Vec<String> = s.nodes.iter().map(|n| n.stderr()).collect();
            panic!(
                "round {r} (logout on A: {on_a}): a revoked session still valid after {REFUSAL_BOUND:?} \
                 on some of {d:?}; its row in the database: {rows:?}\n{stderr:#?}"
            );
        }
        delays.extend(d);
    }
    // And a disabled user's live session, the same way.
    let token = login_at(addrs[0], "rv", PW).expect_status("authenticated")["session"]
        .as_str()
        .expect("session")
        .to_string();
    for n in &addrs {
        assert_eq!(session_at(*n, &token), 200);
    }
    let out = common::run(
        s.env.cmd(&["--yes", "user", "disable", "rv"]),
        None,
        Duration::from_secs(30),
    );
    assert_eq!(out.code, Some(0), "user disable: {}", out.stderr);
    delays.extend(refusal_delays(&addrs, &token, Instant::now()));

    delays.sort();
    let p50 = delays[delays.len() / 2];
    let max = *delays.last().expect("delays");
    let late = delays.iter().filter(|d| **d > PG_SETTLE).count();
    eprintln!(
        "cross-node refusal after a revoke ({} checks): p50 {:.1} ms, max {:.1} ms, {late} over {PG_SETTLE:?}",
        delays.len(),
        p50.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    assert!(
        max <= STALE_BOUND,
        "a revoked session was answered by another node for {max:?} (bound {STALE_BOUND:?}); p50 {p50:?}"
    );
    assert!(
        late * 10 <= delays.len(),
        "{late} of {} refusals took over {PG_SETTLE:?}; p50 {p50:?}, max {max:?}",
        delays.len()
    );
    assert!(
        p50 < PG_SETTLE / 4,
        "the median refusal took {p50:?} (bound {:?})",
        PG_SETTLE / 4
    );
    for d in &mut s.nodes {
        d.assert_healthy();
    }
}

/// The defence against late notifications on its own: a session revoked by a commit
/// that moves the epoch row but sends no notification (triggers off, the row moved by
/// hand — what a notification PostgreSQL delivers late looks like to a node until it
/// arrives) is refused by every node within the bound, through the listener's row read.
#[test]
fn a_revoke_whose_notification_never_comes_is_refused_through_the_epoch_row() {
    let mut s = site();
    add_user(&s.env, "quiet", "school", &[], "user");
    s.start_nodes(2, &[]);
    let addrs = s.addrs();
    let token = login_at(addrs[0], "quiet", PW).expect_status("authenticated")["session"]
        .as_str()
        .expect("session")
        .to_string();
    // Checked twice on each node: the second answer comes from memory.
    for _ in 0..2 {
        for a in &addrs {
            assert_eq!(session_at(*a, &token), 200);
        }
    }
    s.pg.psql(
        "authd",
        &format!(
            "BEGIN; SET LOCAL session_replication_role = replica; \
             UPDATE sessions SET revoked_at = extract(epoch from now())::bigint \
             WHERE token_hash = '{}'; \
             UPDATE session_epoch SET n = n + 1 WHERE id = 1; COMMIT;",
            token_hash(&token)
        ),
    );
    let t0 = Instant::now();
    let revoked = s.pg.psql(
        "authd",
        &format!(
            "SELECT revoked_at IS NOT NULL FROM sessions WHERE token_hash = '{}'",
            token_hash(&token)
        ),
    );
    assert_eq!(
        revoked.trim(),
        "t",
        "the session is revoked in the database"
    );
    let d = refusal_delays(&addrs, &token, t0);
    eprintln!("refused without a notification after {d:?}");
    for x in &d {
        assert!(
            *x <= STALE_BOUND,
            "a revoke without its notification was answered for {} (bound {STALE_BOUND:?})",
            if *x == Duration::MAX {
                format!("over {REFUSAL_BOUND:?}")
            } else {
                format!("{x:?}")
            }
        );
    }
    for n in &mut s.nodes {
        n.assert_healthy();
    }
}

// ---- 4. The seed journeys through nginx ----------------------------------------------

/// nginx running `deploy/nginx/authd-nodes.conf` on 127.0.0.1:`port` over plain HTTP,
/// its `upstream` naming the given nodes; every request's upstream logged.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Nginx {
    fn start(nodes: &[SocketAddr]) -> Nginx {
        common::require("nginx", "nginx");
        let dir = tempfile::Builder::new()
            .prefix("authd-nginx-")
            .tempdir()
            .expect("temp dir");
        let p = dir.path();
        std::fs::create_dir_all(p.join("tmp")).expect("mkdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let path = common::repo_root().join("deploy/nginx/authd-nodes.conf");
        let mut site = std::fs::read_to_string(&path).expect("deploy/nginx/authd-nodes.conf");
        let mut swaps = vec![(
            "listen 443 ssl;".to_string(),
            format!("listen 127.0.0.1:{port};"),
        )];
        for (i, n) in nodes.iter().enumerate() {
            swaps.push((
                format!("server 10.0.0.1{}:8080;", i + 1),
                format!("server {n};"),
            ));
        }
        for (from, to) in swaps {
            assert!(
                site.contains(&from),
                "authd-nodes.conf no longer has {from:?}"
            );
            site = site.replace(&from, &to);
        }
        // No certificate here; and no node the test did not start.
        let site: String = site
            .lines()
            .filter(|l| {
                let t = l.trim_start();
                !t.starts_with("ssl_") && !t.starts_with("server 10.0.0.")
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(p.join("site.conf"), site).expect("site.conf");
        let user = if common::is_root() {
            "user root;\n"
        } else {
            ""
        };
        let d = p.display();
        let conf = format!(
            "{user}worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 64; }}\nhttp {{\n \
             log_format up '$request_uri $status $upstream_addr';\n \
             access_log {d}/access.log up;\n \
             client_body_temp_path {d}/tmp/b;\n proxy_temp_path {d}/tmp/p;\n \
             fastcgi_temp_path {d}/tmp/f;\n uwsgi_temp_path {d}/tmp/u;\n \
             scgi_temp_path {d}/tmp/s;\n include {d}/site.conf;\n}}\n"
        );
        let conf_path = p.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx.conf");
        let cmd = |extra: &[&str]| {
            let mut c = Command::new("nginx");
            c.arg("-c")
                .arg(&conf_path)
                .arg("-p")
                .arg(p)
                .arg("-e")
                .arg(p.join("error.log"))
                .args(extra);
            c
        };
        let t = cmd(&["-t"]).output().expect("nginx -t");
        assert!(
            t.status.success(),
            "deploy/nginx/authd-nodes.conf is not valid: {}",
            String::from_utf8_lossy(&t.stderr)
        );
        let child = cmd(&["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx { child, dir, addr }
    }

    /// The upstream of every request so far, in order.
    fn upstreams(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Both seed journeys through a real nginx `upstream` of three nodes (round robin, so
/// consecutive steps land on different nodes): the authenticator app (enrolment, login,
/// TOTP, session, logout) and the emailed code with a remembered device.
#[test]
fn seed_journeys_through_nginx_round_robin() {
    let mut s = site();
    s.env
        .ctl(&["group", "add", "casework", "--require-2fa"])
        .ok();
    add_user(&s.env, "alice", "school", &["pupil-data"], "user");
    add_user(&s.env, "carol", "school", &["casework"], "user");
    enroll_email(&s.env, "carol");
    let sink = SmtpSink::start();
    let smtp = sink.url();
    s.start_nodes(
        3,
        &["--smtp-url", &smtp, "--mail-from", "authd@example.org"],
    );
    let nginx = Nginx::start(&s.addrs());
    let x = nginx.addr;

    // The authenticator app: first login enrols.
    let v = login_at(x, "alice", PW).expect_status("enrollment_required");
    let flow = v["flow"].as_str().expect("flow").to_string();
    let e = post_at(x, "/v1/login/enroll", &json!({"flow": flow})).expect(200);
    let secret = e["secret"].as_str().expect("secret").to_string();
    let flow = e["flow"].as_str().expect("flow").to_string();
    let mut app = Totp::new(&secret);
    Totp::settle();
    let step = Totp::step_now();
    post_at(
        x,
        "/v1/login/enroll/confirm",
        &json!({"flow": flow, "code": app.code_at_step(step)}),
    )
    .expect_status("enrolled");
    app.used(step);
    // Log in again: password, then a fresh code.
    let v = login_at(x, "alice", PW).expect_status("second_factor_required");
    let flow = v["flow"].as_str().expect("flow").to_string();
    let v = post_at(
        x,
        "/v1/login/totp",
        &json!({"flow": flow, "code": app.fresh()}),
    )
    .expect_status("authenticated");
    let session = v["session"].as_str().expect("session").to_string();
    for _ in 0..3 {
        let v = auth_at(x, "GET", "/v1/session", &session).expect(200);
        assert_eq!(v["user"]["username"], "alice");
    }
    auth_at(x, "POST", "/v1/logout", &session).expect(204);
    // The other nodes learn it by notification (the staleness bound: see the revocation
    // test); the suites wait `PG_SETTLE` for it.
    std::thread::sleep(PG_SETTLE);
    for _ in 0..3 {
        assert_eq!(
            session_at(x, &session),
            401,
            "logged out, refused by every node"
        );
    }

    // The emailed code with "remember this device".
    let v = login_at(x, "carol", PW).expect_status("second_factor_required");
    assert_eq!(v["methods"][0], "email_otp", "{v:#}");
    let flow = v["flow"].as_str().expect("flow").to_string();
    let code = sink.nth_code("carol@example.org", 0);
    post_at(
        x,
        "/v1/login/email",
        &json!({"flow": flow, "code": other_code(&[&code]), "remember_device": false}),
    )
    .expect_generic();
    let v = post_at(
        x,
        "/v1/login/email",
        &json!({"flow": flow, "code": code, "remember_device": true}),
    )
    .expect_status("authenticated");
    let device = v["device_token"]
        .as_str()
        .expect("device token")
        .to_string();
    let session = v["session"].as_str().expect("session").to_string();
    for _ in 0..3 {
        assert_eq!(session_at(x, &session), 200);
    }
    // The remembered device skips the code on whichever node answers.
    for _ in 0..3 {
        post_at(
            x,
            "/v1/login",
            &json!({"username": "carol", "password": PW, "device_token": device}),
        )
        .expect_status("authenticated");
    }
    assert_eq!(
        sink.codes_to("carol@example.org").len(),
        1,
        "no code mailed for the remembered device"
    );

    // Every node served the journeys, and no two consecutive steps the same node.
    let ups = nginx.upstreams();
    for n in s.addrs() {
        let n = n.to_string();
        assert!(
            ups.iter().filter(|u| **u == n).count() >= 5,
            "node {n} served few steps: {ups:?}"
        );
    }
    assert!(
        ups.windows(2).all(|w| w[0] != w[1]),
        "round robin: each step on another node: {ups:?}"
    );
    for d in &mut s.nodes {
        d.assert_healthy();
    }
}

// ---- 5. kill -9 of one node under load ------------------------------------------------

/// What the clients of a load test saw answered.
#[derive(Default)]
struct Seen {
    /// Session tokens answered (and not logged out), with their user.
    live: Vec<(String, String)>,
    /// Session tokens whose logout was answered (204).
    ended: Vec<String>,
    /// Sign-ins answered `authenticated`, per user.
    signins: std::collections::BTreeMap<String, usize>,
    /// Requests that got no answer (the killed node).
    unanswered: usize,
}

/// While clients sign in and out round-robin over three nodes, one node is killed with
/// SIGKILL: the other two keep answering; every session a client received is valid on a
/// surviving node, every answered logout is refused, and every answered sign-in has its
/// audit row.
#[test]
fn kill_nine_of_one_node_under_load() {
    let mut s = site();
    let users: Vec<String> = (0..4).map(|i| format!("k{i}")).collect();
    for u in &users {
        add_user(&s.env, u, "school", &[], "user");
    }
    s.start_nodes(3, &[]);
    let addrs = s.addrs();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(c, user)| {
            let (seen, stop, addrs, user) =
                (seen.clone(), stop.clone(), addrs.clone(), user.clone());
            std::thread::spawn(move || {
                let mut i = c;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let a = addrs[i % addrs.len()];
                    let body = json!({"username": user, "password": PW});
                    let r = match try_at(a, "POST", "/v1/login", Some(&body)) {
                        Ok(r) => r,
                        Err(_) => {
                            seen.lock().unwrap().unanswered += 1;
                            continue;
                        }
                    };
                    assert_eq!(r.status, 200, "{r:?}");
                    let token = r.json()["session"].as_str().expect("session").to_string();
                    *seen
                        .lock()
                        .unwrap()
                        .signins
                        .entry(user.clone())
                        .or_default() += 1;
                    // Every other session is ended at once, on the next node.
                    let b = addrs[(i + 1) % addrs.len()];
                    let auth = format!("Bearer {token}");
                    let req =
                        raw_request(b, "POST", "/v1/logout", &[("Authorization", &auth)], None);
                    match (i % 2 == 0).then(|| try_http(b, &req, Duration::from_secs(20))) {
                        Some(Ok(r)) if r.status == 204 => seen.lock().unwrap().ended.push(token),
                        Some(Ok(r)) => panic!("logout answered {r:?}"),
                        // The node died with the logout: whether it committed is unknown.
                        Some(Err(_)) => seen.lock().unwrap().unanswered += 1,
                        None => seen.lock().unwrap().live.push((user.clone(), token)),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    s.nodes[2].kill_9();
    let killed_at = Instant::now();
    // The survivors keep answering while the load goes on.
    while killed_at.elapsed() < Duration::from_millis(1500) {
        for a in &addrs[..2] {
            assert_eq!(
                try_at(*a, "GET", "/healthz", None).map(|r| r.status),
                Ok(200)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        h.join().expect("a client failed");
    }
    let seen = seen.lock().unwrap();
    let signins: usize = seen.signins.values().sum();
    eprintln!(
        "kill -9 under load: {signins} sign-ins answered, {} logouts, {} requests unanswered",
        seen.ended.len(),
        seen.unanswered
    );
    assert!(signins >= 20, "the load ran: {signins} sign-ins");
    assert!(seen.unanswered > 0, "the killed node was in the rotation");
    let survivor = addrs[0];
    for (_, token) in &seen.live {
        assert_eq!(
            session_at(survivor, token),
            200,
            "an answered session is valid"
        );
    }
    for token in &seen.ended {
        assert_eq!(session_at(addrs[1], token), 401, "an answered logout holds");
    }
    for (user, n) in &seen.signins {
        let rows = password_rows(&s.env, user, "success", None);
        assert!(rows >= *n, "{user}: {n} sign-ins answered, {rows} audited");
    }
    for d in &mut s.nodes[..2] {
        d.assert_healthy();
    }
}

// ---- 6. PostgreSQL restarted under load ----------------------------------------------

/// PostgreSQL stopped (immediately) and started again while logins flow to two nodes:
/// every answer is 200, 401 or 503, a wrong password never gets a session, `/healthz`
/// stays 200 while `/readyz` is 503 during the outage, and logins succeed again within a
/// few seconds of PostgreSQL's return.
#[test]
fn postgres_restarted_under_load_fails_closed_and_recovers() {
    let mut s = site();
    add_user(&s.env, "pr", "school", &[], "user");
    // A wrong password every other request would lock the account: keep it open.
    policy(&s.env, &["lockout.max_failures=1000"]);
    s.start_nodes(2, &[]);
    let addrs = s.addrs();
    let stop = Arc::new(AtomicBool::new(false));
    let statuses = Arc::new(Mutex::new(Vec::<u16>::new()));
    let handles: Vec<_> = (0..4)
        .map(|c| {
            let (stop, statuses, addrs) = (stop.clone(), statuses.clone(), addrs.clone());
            std::thread::spawn(move || {
                let mut i = c;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let right = i % 2 == 0;
                    let pw = if right { PW } else { "Wrong-Password-9!" };
                    let body = json!({"username": "pr", "password": pw});
                    let r = try_at(addrs[i % 2], "POST", "/v1/login", Some(&body))
                        .unwrap_or_else(|e| panic!("no answer from a node: {e}"));
                    assert!(
                        [200, 401, 503].contains(&r.status),
                        "only 200/401/503: {r:?}"
                    );
                    if !right {
                        assert_ne!(r.status, 200, "a wrong password got a session: {r:?}");
                        assert!(r.json().get("session").is_none(), "{r:?}");
                    }
                    statuses.lock().unwrap().push(r.status);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    s.pg.stop();
    let down = Instant::now();
    let mut ready_503 = false;
    while down.elapsed() < Duration::from_secs(3) {
        for a in &addrs {
            let h = try_at(*a, "GET", "/healthz", None).expect("healthz answers");
            assert_eq!(h.status, 200, "/healthz stays up: {h:?}");
            let r = try_at(*a, "GET", "/readyz", None).expect("readyz answers");
            assert!([200, 503].contains(&r.status), "{r:?}");
            ready_503 |= r.status == 503;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ready_503, "/readyz said not ready during the outage");
    for a in &addrs {
        assert_eq!(
            try_at(*a, "GET", "/readyz", None).map(|r| r.status),
            Ok(503),
            "not ready while PostgreSQL is down"
        );
    }
    s.pg.start_again();
    let back = Instant::now();
    // Within a few seconds both nodes are ready and sign in again.
    for a in &addrs {
        loop {
            let ok = try_at(*a, "GET", "/readyz", None).is_ok_and(|r| r.status == 200)
                && login_at(*a, "pr", PW).status == 200;
            if ok {
                break;
            }
            assert!(
                back.elapsed() < Duration::from_secs(10),
                "node {a} did not recover within 10 s of PostgreSQL's return"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let recovered = back.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        h.join().expect("a client failed");
    }
    let st = statuses.lock().unwrap();
    let count = |c: u16| st.iter().filter(|s| **s == c).count();
    eprintln!(
        "PostgreSQL restart under load: {} answers (200: {}, 401: {}, 503: {}), recovered {:?} after the restart",
        st.len(),
        count(200),
        count(401),
        count(503),
        recovered
    );
    assert!(count(503) > 0, "the outage was seen (503)");
    for d in &mut s.nodes {
        d.assert_healthy();
    }
}

/// authd on a database nobody answers at: a clear message, a non-zero exit, soon.
#[test]
fn authd_refuses_to_start_on_an_unreachable_database() {
    let s = site();
    s.pg.stop();
    let mut cmd = authd_command(&s.env, &[]);
    cmd.stdin(Stdio::null());
    let t = Instant::now();
    let out = common::run(cmd, None, Duration::from_secs(60));
    assert_ne!(out.code, Some(0), "authd started: {}", out.stdout);
    assert!(out.code.is_some(), "authd exited by itself");
    assert!(
        t.elapsed() < Duration::from_secs(45),
        "took {:?} to give up",
        t.elapsed()
    );
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains("database") || err.contains("postgres"),
        "the message names the database: {}",
        out.stderr
    );
    assert!(
        err.contains(&s.pg.port.to_string()) || err.contains("connect"),
        "the message says where or what failed: {}",
        out.stderr
    );
    assert!(!err.contains("panicked"), "{}", out.stderr);
}
