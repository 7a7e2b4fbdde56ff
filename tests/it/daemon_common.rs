//! Helpers of the daemon suites (`daemon.rs`, `email.rs`): the real `authd` started on
//! 127.0.0.1:0 (killed when the guard drops), a small blocking HTTP/1.1 client, TOTP codes
//! computed independently with `oathtool`, and a real SMTP server (Python's aiosmtpd)
//! that saves every message it accepts.
//!
//! Everything here is bounded: reads and writes have timeouts, waits have deadlines.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{self, Env, AUTHD, STRONG};

/// The generic answer to every credential failure (API.md).
pub const GENERIC: &str = "Authentication attempt failed. Retry with valid credentials.";
/// The password every test user starts with.
pub const PW: &str = STRONG;
/// How long the daemon may take to say `listening on …`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one HTTP exchange may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

// ---- Provisioning --------------------------------------------------------------------

/// A fresh database with cheap hashing, the `pupil-data` group (requires 2FA) and two
/// organisations, `school` and `other`.
pub fn provision() -> Env {
    let env = Env::init();
    env.ctl(&["group", "add", "pupil-data", "--require-2fa"])
        .ok();
    env.ctl(&["org", "add", "school"]).ok();
    env.ctl(&["org", "add", "other"]).ok();
    env
}

/// `user add NAME --email NAME@example.org --org ORG --role ROLE [--group G]…` with the
/// password [`PW`].
#[track_caller]
pub fn add_user(env: &Env, name: &str, org: &str, groups: &[&str], role: &str) -> Value {
    let mut extra = vec!["--org", org, "--role", role];
    for g in groups {
        extra.push("--group");
        extra.push(g);
    }
    env.add_user(name, PW, &extra)
}

/// `authctl --json user show NAME`.
#[track_caller]
pub fn user_show(env: &Env, name: &str) -> Value {
    env.json(&["user", "show", name])
}

/// `authctl policy set KEY=VALUE…`.
#[track_caller]
pub fn policy(env: &Env, settings: &[&str]) {
    let mut a = vec!["policy", "set"];
    a.extend_from_slice(settings);
    env.ctl(&a).ok();
}

/// The user's failure count, as `authctl user show` reports it.
#[track_caller]
pub fn failed_attempts(env: &Env, name: &str) -> i64 {
    user_show(env, name)["failed_attempts"]
        .as_i64()
        .expect("failed_attempts is a number")
}

/// Whether `authctl user show` reports the user locked.
#[track_caller]
pub fn is_locked(env: &Env, name: &str) -> bool {
    let u = user_show(env, name);
    !u["locked_at"].is_null() || u["status"] == "locked"
}

/// Audit rows of `event` for `user` (oldest first).
#[track_caller]
pub fn audit_events(env: &Env, user: &str, event: &str) -> Vec<Value> {
    env.audit(&["--user", user, "--event", event])
}

/// Run SQL on the database directly (to stand in for the clock: e.g. make a flow or a
/// code older than it is). Returns the number of rows changed.
#[track_caller]
pub fn sql(env: &Env, statement: &str, params: &[&dyn rusqlite::ToSql]) -> usize {
    let conn = db_conn(env);
    let n = conn
        .execute(statement, params)
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
    // The edit stands in for time passing (a session idle, a code old): it moves the
    // session epoch as authd's own changes do, so no cached session answer outlives it.
    let bump = if env.is_pg() {
        "UPDATE session_epoch SET n = n + 1 WHERE id = 1; SELECT pg_notify('authd_session_epoch', '')"
    } else {
        "UPDATE session_epoch SET n = n + 1 WHERE id = 1"
    };
    conn.execute_batch(bump).expect("move the session epoch");
    env.settle();
    n
}

/// A connection to the test's database, on either engine (the core's own seam).
pub fn db_conn(env: &Env) -> authcore::sql::Connection {
    if env.is_pg() {
        return authcore::sql::Connection::postgres(
            &env.db.display().to_string(),
            Duration::from_secs(10),
        )
        .expect("connect to the test database");
    }
    let conn = rusqlite::Connection::open(&env.db).expect("open the database");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    authcore::sql::Connection::sqlite(conn)
}

/// The SHA-256 (hex) under which flow, session and device tokens are stored.
pub fn token_hash(token: &str) -> String {
    authcore::crypto::hash_token(token)
}

// ---- TOTP ----------------------------------------------------------------------------

/// The TOTP code of `secret` (base32) at Unix time `t`, from oathtool.
pub fn oathtool(secret: &str, t: i64) -> String {
    common::require("oathtool", "oathtool");
    let out = Command::new("oathtool")
        .args(["--totp", "-b", "-N", &format!("@{t}"), secret])
        .output()
        .expect("run oathtool");
    assert!(
        out.status.success(),
        "oathtool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = String::from_utf8(out.stdout)
        .expect("oathtool prints ASCII")
        .trim()
        .to_string();
    assert!(
        code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
        "oathtool printed {code:?}"
    );
    code
}

/// An authenticator app: hands out codes whose 30-second step is later than any step
/// used before (the server accepts each step once, and never an older one), waiting for
/// the clock when the next step is not yet acceptable (now ± 1 step).
pub struct Totp {
    pub secret: String,
    last_step: Option<i64>,
}

impl Totp {
    pub fn new(secret: &str) -> Totp {
        Totp {
            secret: secret.to_string(),
            last_step: None,
        }
    }

    /// The secret of an enrolment answer (`secret` field).
    pub fn from_enrollment(v: &Value) -> Totp {
        Totp::new(v["secret"].as_str().expect("enrolment has a secret"))
    }

    /// The current step.
    pub fn step_now() -> i64 {
        common::now() / 30
    }

    /// Wait, when the current step is about to end, for the next one to begin, so a code
    /// chosen relative to "now" still means the same step when the server checks it.
    pub fn settle() {
        let into_step = common::now() % 30;
        if into_step >= 27 {
            std::thread::sleep(Duration::from_secs((30 - into_step) as u64 + 1));
        }
    }

    /// The code of `step` (without recording it as used).
    pub fn code_at_step(&self, step: i64) -> String {
        oathtool(&self.secret, step * 30)
    }

    /// A code the server has not seen yet: the current step when unused, else the next
    /// one (accepted as a code "close to expiry" of the clock skew), else wait.
    pub fn fresh(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(70);
        loop {
            let now_step = Totp::step_now();
            let want = match self.last_step {
                Some(last) => (last + 1).max(now_step),
                None => now_step,
            };
            if want <= now_step + 1 {
                self.last_step = Some(want);
                return self.code_at_step(want);
            }
            assert!(
                Instant::now() < deadline,
                "waited too long for a fresh TOTP step"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Record that the code of `step` was used (e.g. by an enrolment confirmation).
    pub fn used(&mut self, step: i64) {
        self.last_step = Some(self.last_step.map_or(step, |l| l.max(step)));
    }

    /// The last step handed out or recorded as used.
    pub fn last_step(&self) -> Option<i64> {
        self.last_step
    }

    /// Record that `other` (another app of the same user) used its last step: the server
    /// accepts each step once per user, whichever app.
    pub fn sync(&mut self, other: &Totp) {
        if let Some(step) = other.last_step {
            self.used(step);
        }
    }
}

// ---- HTTP ----------------------------------------------------------------------------

/// One HTTP answer.
pub struct Resp {
    /// The request, for failure messages.
    pub what: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "\n> {}\n< {} {}",
            self.what,
            self.status,
            String::from_utf8_lossy(&self.body)
        )
    }
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {self:?}"))
    }

    /// Assert the status; the JSON body (Null when empty).
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status: {self:?}");
        if self.body.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Assert a 200 whose `status` field is `want`; the body.
    #[track_caller]
    pub fn expect_status(&self, want: &str) -> Value {
        let v = self.expect(200);
        assert_eq!(v["status"], want, "unexpected login status: {self:?}");
        v
    }

    /// Assert an error answer: the status, a JSON `{"error": code, "message": …}`.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "unexpected status: {self:?}");
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "an error answer is JSON: {self:?}"
        );
        let v = self.json();
        assert_eq!(v["error"], code, "unexpected error code: {self:?}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.trim().is_empty()),
            "an error answer has a message: {self:?}"
        );
        v
    }

    /// Assert the generic credential failure, exactly: 401 and nothing but the two
    /// fields every refusal shares.
    #[track_caller]
    pub fn expect_generic(&self) {
        assert_eq!(self.status, 401, "expected the generic failure: {self:?}");
        assert_eq!(
            self.json(),
            json!({"error": "invalid_credentials", "message": GENERIC}),
            "the generic failure must be identical for every cause: {self:?}"
        );
    }

    /// Assert 401 `invalid_flow`.
    #[track_caller]
    pub fn expect_invalid_flow(&self) {
        self.expect_error(401, "invalid_flow");
    }
}

/// Send raw bytes to `addr` and read the whole answer (the request must say
/// `Connection: close`). A write the server cuts short (it may answer early, e.g. 413)
/// is not an error as long as an answer arrives.
pub fn http_raw(addr: SocketAddr, what: &str, request: &[u8]) -> Resp {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(HTTP_TIMEOUT)).expect("timeout");
    s.set_write_timeout(Some(HTTP_TIMEOUT)).expect("timeout");
    let write_err = s.write_all(request).and_then(|_| s.flush()).err();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("{what}: no complete answer within {HTTP_TIMEOUT:?} (got {buf:?})")
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A reset after (part of) the answer: keep what arrived.
            Err(e) => {
                if buf.is_empty() {
                    panic!("{what}: connection failed ({e}; write error: {write_err:?})");
                }
                break;
            }
        }
    }
    parse_response(what, &buf).unwrap_or_else(|e| {
        panic!(
            "{what}: bad HTTP answer ({e}): {:?}",
            String::from_utf8_lossy(&buf)
        )
    })
}

pub fn parse_response(what: &str, buf: &[u8]) -> Result<Resp, String> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("no status line")?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &buf[end + 4..];
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let body = if get("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().map_err(|_| "bad content-length")?;
        if rest.len() < len {
            return Err(format!("body cut short: {} of {len} bytes", rest.len()));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Resp {
        what: what.to_string(),
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk header")?;
        let size = std::str::from_utf8(&b[..eol]).map_err(|_| "bad chunk size")?;
        let size = size.split(';').next().unwrap_or("").trim();
        let n = usize::from_str_radix(size, 16).map_err(|_| "bad chunk size")?;
        b = &b[eol + 2..];
        if n == 0 {
            return Ok(out);
        }
        if b.len() < n + 2 {
            return Err("chunk cut short".into());
        }
        out.extend_from_slice(&b[..n]);
        b = &b[n + 2..];
    }
}

// ---- The daemon ----------------------------------------------------------------------

/// A running `authd`, killed when dropped.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    /// The `--metrics-listen` listener, from its `metrics listening on ADDR` line.
    pub metrics_addr: Option<SocketAddr>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Daemon {
    /// `authd --db DB --listen 127.0.0.1:0 --rate-limit-per-minute 0 EXTRA…` (the login
    /// rate limit off: the tests log in a lot).
    pub fn start(env: &Env, extra: &[&str]) -> Daemon {
        let mut a = vec!["--rate-limit-per-minute", "0"];
        a.extend_from_slice(extra);
        Daemon::start_raw(env, &a)
    }

    /// `authd --db DB --listen 127.0.0.1:0 ARGS…` (defaults otherwise).
    pub fn start_raw(env: &Env, args: &[&str]) -> Daemon {
        let mut cmd = Command::new(AUTHD);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AUTHD_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("NO_COLOR", "1")
            .arg("--db")
            .arg(&env.db)
            .args(["--listen", "127.0.0.1:0"])
            .args(args);
        if env.is_pg() {
            cmd.env("AUTHD_KEY_FILE", env.key());
        }
        Daemon::start_command(cmd)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait up to `timeout` for the daemon to exit; its status, or None if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait for authd") {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the daemon wrote on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().map(|s| s.clone()).unwrap_or_default())
            .into_owned()
    }

    /// Assert the daemon is still running and never panicked.
    #[track_caller]
    pub fn assert_healthy(&mut self) {
        let status = self.child.try_wait().expect("wait for authd");
        assert!(
            status.is_none(),
            "authd exited ({status:?}); stderr:\n{}",
            self.stderr()
        );
        let err = self.stderr();
        assert!(!err.contains("panicked"), "authd panicked; stderr:\n{err}");
    }

    /// One request: `headers` as given (plus Host, Content-Length, Connection: close).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        self.request_at(self.addr, method, path, headers, body)
    }

    /// One request to the `--metrics-listen` listener (which must be there).
    #[track_caller]
    pub fn metrics_request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        let addr = self
            .metrics_addr
            .expect("authd printed no `metrics listening on ADDR` line");
        self.request_at(addr, method, path, headers, None)
    }

    /// One request to `addr` (one of the daemon's listeners).
    pub fn request_at(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: authd-tests/1.0\r\nConnection: close\r\n"
        )
        .into_bytes();
        for (k, v) in headers {
            req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        if let Some(b) = body {
            req.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        if let Some(b) = body {
            req.extend_from_slice(b);
        }
        let shown = match body {
            Some(b) if b.len() <= 512 => format!("{method} {path} {}", String::from_utf8_lossy(b)),
            Some(b) => format!("{method} {path} ({} bytes)", b.len()),
            None => format!("{method} {path}"),
        };
        http_raw(addr, &shown, &req)
    }

    /// POST a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.post_bytes(path, body.to_string().as_bytes())
    }

    /// POST raw bytes as `application/json`.
    pub fn post_bytes(&self, path: &str, body: &[u8]) -> Resp {
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            Some(body),
        )
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], None)
    }

    /// GET with `Authorization: Bearer TOKEN`.
    pub fn get_auth(&self, path: &str, token: &str) -> Resp {
        let auth = format!("Bearer {token}");
        self.request("GET", path, &[("Authorization", &auth)], None)
    }

    /// POST (a JSON body or none) with `Authorization: Bearer TOKEN`.
    pub fn post_auth(&self, path: &str, token: &str, body: Option<&Value>) -> Resp {
        self.send_auth("POST", path, token, body)
    }

    /// DELETE with `Authorization: Bearer TOKEN`.
    pub fn delete_auth(&self, path: &str, token: &str) -> Resp {
        self.send_auth("DELETE", path, token, None)
    }

    /// PUT a JSON body with `Authorization: Bearer TOKEN`.
    pub fn put_auth(&self, path: &str, token: &str, body: &Value) -> Resp {
        self.send_auth("PUT", path, token, Some(body))
    }

    fn send_auth(&self, method: &str, path: &str, token: &str, body: Option<&Value>) -> Resp {
        let auth = format!("Bearer {token}");
        let b = body.map(|b| b.to_string().into_bytes());
        let mut h = vec![("Authorization", auth.as_str())];
        if b.is_some() {
            h.push(("Content-Type", "application/json"));
        }
        self.request(method, path, &h, b.as_deref())
    }

    // -- login helpers --

    /// `POST /v1/login {"username","password"}`.
    pub fn login(&self, username: &str, password: &str) -> Resp {
        self.post(
            "/v1/login",
            &json!({"username": username, "password": password}),
        )
    }

    /// `POST /v1/login` with a remembered-device token.
    pub fn login_device(&self, username: &str, password: &str, device: &str) -> Resp {
        self.post(
            "/v1/login",
            &json!({"username": username, "password": password, "device_token": device}),
        )
    }

    /// Log in up to `second_factor_required`; the flow token.
    #[track_caller]
    pub fn second_factor_flow(&self, username: &str, password: &str) -> String {
        let v = self
            .login(username, password)
            .expect_status("second_factor_required");
        v["flow"].as_str().expect("a flow token").to_string()
    }

    /// `POST /v1/login/totp`.
    pub fn totp(&self, flow: &str, code: &str) -> Resp {
        self.post("/v1/login/totp", &json!({"flow": flow, "code": code}))
    }

    /// A full login with a password and a TOTP code; the session token.
    #[track_caller]
    pub fn login_totp(&self, username: &str, password: &str, app: &mut Totp) -> String {
        let flow = self.second_factor_flow(username, password);
        let v = self
            .totp(&flow, &app.fresh())
            .expect_status("authenticated");
        v["session"].as_str().expect("a session token").to_string()
    }

    /// A full login with only a password (a user without a second factor); the session.
    #[track_caller]
    pub fn login_session(&self, username: &str, password: &str) -> String {
        let v = self
            .login(username, password)
            .expect_status("authenticated");
        v["session"].as_str().expect("a session token").to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `POST path` with a JSON body, as from client address `ip` (authd must trust
/// 127.0.0.1 as a proxy: `--trusted-proxy 127.0.0.1/32`).
pub fn post_from(d: &Daemon, ip: &str, path: &str, body: &Value) -> Resp {
    d.request(
        "POST",
        path,
        &[
            ("Content-Type", "application/json"),
            ("X-Forwarded-For", ip),
        ],
        Some(body.to_string().as_bytes()),
    )
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("address").port()
}

// ---- SMTP ----------------------------------------------------------------------------

/// A tiny SMTP server (aiosmtpd) that saves each message as one JSON file
/// `{"mail_from","rcpt_tos","data"}`; it prints its port once listening and exits when
/// its standard input closes (so it never outlives the test process).
const SMTP_SINK: &str = r#"
import asyncio, json, os, sys, threading
from aiosmtpd.smtp import SMTP

out = sys.argv[1]

class Saver:
    def __init__(self):
        self.n = 0
    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        data = envelope.original_content or envelope.content
        if isinstance(data, bytes):
            data = data.decode("utf-8", "replace")
        path = os.path.join(out, "%06d.json" % self.n)
        with open(path + ".tmp", "w") as f:
            json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos, "data": data}, f)
        os.rename(path + ".tmp", path)
        return "250 OK"

def watch_stdin():
    sys.stdin.read()
    os._exit(0)

async def main():
    handler = Saver()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, hostname="sink.test"), "127.0.0.1", 0)
    print("port", server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

threading.Thread(target=watch_stdin, daemon=True).start()
asyncio.run(main())
"#;

/// A message the sink received.
#[derive(Debug, Clone)]
pub struct Mail {
    pub file: String,
    pub rcpt_tos: Vec<String>,
    pub subject: String,
    pub body: String,
    pub raw: String,
}

impl Mail {
    /// Whether it went to `addr`.
    pub fn is_to(&self, addr: &str) -> bool {
        self.rcpt_tos.iter().any(|r| r.eq_ignore_ascii_case(addr))
    }

    /// Whether it carries a one-time sign-in code.
    pub fn is_code(&self) -> bool {
        self.code().is_some()
    }

    /// The 6-digit code after "code is:", if any.
    pub fn code(&self) -> Option<String> {
        let lower = self.body.to_lowercase();
        let at = lower.find("code is:")? + "code is:".len();
        let digits: String = self.body[at..]
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        (digits.len() == 6).then_some(digits)
    }
}

pub struct SmtpSink {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        let ok = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "Python's aiosmtpd is not installed: run scripts/test.sh (it installs it with pip)"
        );
        let dir = tempfile::Builder::new()
            .prefix("smtp-sink-")
            .tempdir()
            .expect("temp dir");
        let mut child = Command::new("python3")
            .args(["-c", SMTP_SINK])
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the SMTP sink");
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stdout.take().expect("stdout piped");
        std::thread::spawn(move || {
            let mut lines = BufReader::new(pipe).lines();
            while let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => l
                .strip_prefix("port ")
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or_else(|| panic!("the SMTP sink said {l:?}")),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the SMTP sink did not start within 20 s");
            }
        };
        SmtpSink { child, port, dir }
    }

    /// `smtp://127.0.0.1:PORT` (plain SMTP, no TLS).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<Mail> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .expect("read the sink directory")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names.iter().map(|p| parse_mail(p)).collect()
    }

    /// The messages to `addr` that carry a sign-in code.
    pub fn codes_to(&self, addr: &str) -> Vec<Mail> {
        self.messages()
            .into_iter()
            .filter(|m| m.is_to(addr) && m.is_code())
            .collect()
    }

    /// Wait (up to `timeout`) for a message matching `pred` beyond the first `skip` such
    /// messages; return it.
    #[track_caller]
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Mail) -> bool) -> Mail {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.messages().into_iter().find(|m| pred(m)) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "no mail ({what}) within {timeout:?}; received: {:#?}",
                self.messages()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The code of the `n`-th (0-based) code message to `addr`, waiting for it.
    #[track_caller]
    pub fn nth_code(&self, addr: &str, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let codes = self.codes_to(addr);
            if let Some(m) = codes.get(n) {
                return m.code().expect("a code message has a code");
            }
            assert!(
                Instant::now() < deadline,
                "code mail #{n} to {addr} did not arrive; received: {:#?}",
                self.messages()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_mail(p: &Path) -> Mail {
    let text = std::fs::read_to_string(p).expect("read a saved message");
    let v: Value = serde_json::from_str(&text).expect("a saved message is JSON");
    let raw = v["data"].as_str().unwrap_or_default().replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").unwrap_or((raw.as_str(), ""));
    // Unfold continuation lines.
    let head = head.replace("\n ", " ").replace("\n\t", " ");
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let cte = header("Content-Transfer-Encoding").to_ascii_lowercase();
    let body = match cte.as_str() {
        "quoted-printable" => decode_qp(body),
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            data_encoding::BASE64
                .decode(compact.as_bytes())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|_| body.to_string())
        }
        _ => body.to_string(),
    };
    Mail {
        file: p.display().to_string(),
        rcpt_tos: v["rcpt_tos"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        subject: header("Subject"),
        body,
        raw,
    }
}

fn decode_qp(s: &str) -> String {
    let s = s.replace("=\n", "");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---- Raw database bytes ----------------------------------------------------------------

/// The bytes of the database and its WAL and shared-memory files.
pub fn db_bytes(env: &Env) -> Vec<u8> {
    if env.is_pg() {
        // Everything the database holds, as pg_dump writes it.
        let out = Command::new(crate::pg::pg_bin().join("pg_dump"))
            .arg("--data-only")
            .arg(env.db.display().to_string())
            .output()
            .expect("pg_dump");
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return out.stdout;
    }
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = env.db.clone().into_os_string();
        p.push(suffix);
        all.extend(common::read_or_empty(Path::new(&p)));
    }
    all
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

// ---- Small shared steps ---------------------------------------------------------------

/// `authctl terms set --version V --file F` with `text` in a file.
#[track_caller]
pub fn set_terms(env: &Env, version: &str, text: &str) {
    let f = env.path(&format!("terms-{version}.txt"));
    std::fs::write(&f, text).expect("write the terms file");
    env.ctl(&[
        "terms",
        "set",
        "--version",
        version,
        "--file",
        f.to_str().expect("a UTF-8 path"),
    ])
    .ok();
}

/// `authctl enroll NAME --json` (TOTP): the authenticator app and the recovery codes.
#[track_caller]
pub fn enroll_totp(env: &Env, name: &str) -> (Totp, Vec<String>) {
    let v = env.enroll(name);
    (Totp::from_enrollment(&v), strings(&v["recovery_codes"]))
}

/// `authctl enroll NAME --method email --json`: the recovery codes.
#[track_caller]
pub fn enroll_email(env: &Env, name: &str) -> Vec<String> {
    let v = env.json(&["enroll", name, "--method", "email"]);
    assert_eq!(v["method"], "email", "enrol by email: {v:#}");
    strings(&v["recovery_codes"])
}

/// A JSON array of strings.
#[track_caller]
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

/// A well-formed 6-digit code that is none of `avoid` (so it is certainly wrong).
pub fn other_code(avoid: &[&str]) -> String {
    (0..10)
        .map(|d| d.to_string().repeat(6))
        .find(|c| !avoid.contains(&c.as_str()))
        .expect("ten candidates, few to avoid")
}

/// A code no TOTP window of `app` around now accepts.
pub fn wrong_totp(app: &Totp) -> String {
    let s = Totp::step_now();
    let near: Vec<String> = (s - 2..=s + 2).map(|st| app.code_at_step(st)).collect();
    let near: Vec<&str> = near.iter().map(String::as_str).collect();
    other_code(&near)
}

/// The live sessions of `user` (`authctl session list --user U --json`).
#[track_caller]
pub fn sessions_of(env: &Env, user: &str) -> Vec<Value> {
    env.json(&["session", "list", "--user", user])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

// ---- Issue 5 (tests/it/attack.rs, tests/it/faults.rs): requests that may fail, daemons
// ---- started through a wrapper, and process figures ------------------------------------

/// A raw HTTP/1.1 request with `Connection: close` (and Content-Length when there is a body).
pub fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: authd-tests/1.0\r\nConnection: close\r\n"
    )
    .into_bytes();
    for (k, v) in headers {
        req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if let Some(b) = body {
        req.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    if let Some(b) = body {
        req.extend_from_slice(b);
    }
    req
}

/// Like [`http_raw`], but a connection that fails, is reset before a whole answer arrives
/// or stays silent past `timeout` is an `Err` (for daemons that are killed or flooded).
pub fn try_http(addr: SocketAddr, request: &[u8], timeout: Duration) -> Result<Resp, String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let write_err = s.write_all(request).and_then(|_| s.flush()).err();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if buf.is_empty() {
                    return Err(format!("read: {e} (write error: {write_err:?})"));
                }
                break;
            }
        }
    }
    parse_response("try_http", &buf).map_err(|e| format!("{e} ({} bytes)", buf.len()))
}

/// A plain `authd --db DB --listen 127.0.0.1:0 ARGS…` command with no AUTHD_* variables.
pub fn authd_command(env: &Env, args: &[&str]) -> Command {
    let mut cmd = Command::new(AUTHD);
    authd_clean_env(&mut cmd);
    if env.is_pg() {
        cmd.env("AUTHD_KEY_FILE", env.key());
    }
    cmd.arg("--db")
        .arg(&env.db)
        .args(["--listen", "127.0.0.1:0"])
        .args(args);
    cmd
}

/// Remove every AUTHD_* variable from `cmd`'s environment and switch colours off.
pub fn authd_clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AUTHD_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1");
}

impl Daemon {
    /// Start a prepared command that ends up exec'ing `authd` (e.g. through `unshare` or
    /// `setpriv`, which exec: the pid is authd's) and wait for `listening on ADDR` (and
    /// keep the `metrics listening on ADDR` printed before it, if any).
    pub fn start_command(mut cmd: Command) -> Daemon {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start authd");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        {
            let mut pipe = child.stderr.take().expect("stderr piped");
            let sink = stderr.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut s) = sink.lock() {
                        s.extend_from_slice(&chunk[..n]);
                    }
                }
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let pipe = child.stdout.take().expect("stdout piped");
            std::thread::spawn(move || {
                let mut lines = BufReader::new(pipe).lines();
                while let Some(Ok(line)) = lines.next() {
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let mut d = Daemon {
            child,
            addr: "127.0.0.1:1".parse().expect("an address"),
            metrics_addr: None,
            stderr,
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(line) => {
                    if let Some(a) = line.trim().strip_prefix("metrics listening on ") {
                        d.metrics_addr = Some(a.trim().parse().unwrap_or_else(|e| {
                            panic!("authd printed an unparsable metrics address {a:?}: {e}")
                        }));
                    }
                    if let Some(a) = line.trim().strip_prefix("listening on ") {
                        d.addr = a.trim().parse().unwrap_or_else(|e| {
                            panic!("authd printed an unparsable address {a:?}: {e}")
                        });
                        return d;
                    }
                }
                Err(_) => panic!(
                    "authd did not print `listening on ADDR` within {START_TIMEOUT:?}; stderr:\n{}",
                    d.stderr()
                ),
            }
        }
    }

    /// A request that may fail (see [`try_http`]).
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Resp, String> {
        try_http(
            self.addr,
            &raw_request(self.addr, method, path, headers, body),
            timeout,
        )
    }

    /// SIGKILL the daemon (no clean-up of any kind) and reap it.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A field of /proc/PID/status in KiB (VmRSS, VmHWM…), if the process is alive.
    pub fn proc_kib(&self, field: &str) -> Option<u64> {
        proc_status_kib(self.pid(), field)
    }

    /// How many file descriptors the daemon has open.
    pub fn open_fds(&self) -> Option<usize> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .ok()
            .map(|d| d.count())
    }
}

/// A field of /proc/PID/status in KiB (e.g. `VmRSS`, `VmHWM`).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}
