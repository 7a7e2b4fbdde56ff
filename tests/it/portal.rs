//! The browser portal, black-box: the real `authd` on 127.0.0.1:0 over raw HTTP/1.1
//! (headers exactly as sent: Set-Cookie, CSP, X-Frame-Options), and the browser journeys
//! in headless Chromium (`tests/browser/journeys.js`, playwright-core driving Debian's
//! /usr/bin/chromium) against a database provisioned with the real `authctl`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::{self, Env, STRONG};
use kit::{field, Daemon};

/// Helpers shared with `forward_auth.rs`: the daemon, an HTTP client, a cookie jar.
pub mod kit {
    #![allow(dead_code)]

    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use crate::common::{self, Env, AUTHD};

    /// The real authd, killed when dropped. Its stderr goes to `authd.log` in the env dir.
    pub struct Daemon {
        pub child: Child,
        pub addr: String,
        pub log: std::path::PathBuf,
    }

    impl Daemon {
        /// `authd --db DB --listen 127.0.0.1:0 ARGS…` (rate limiting off: tests log in a
        /// lot from one address).
        pub fn start(env: &Env, args: &[&str]) -> Daemon {
            let log = env.path(&format!("authd-{}.log", common::now()));
            let mut cmd = Command::new(AUTHD);
            for (k, _) in std::env::vars() {
                if k.starts_with("AUTHD_") {
                    cmd.env_remove(k);
                }
            }
            cmd.arg("--db")
                .arg(&env.db)
                .args(["--listen", "127.0.0.1:0"]);
            if env.is_pg() {
                cmd.env("AUTHD_KEY_FILE", env.key());
            }
            if !args.contains(&"--rate-limit-per-minute") {
                cmd.args(["--rate-limit-per-minute", "0"]);
            }
            cmd.args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(&log).expect("log file"));
            let mut child = cmd.spawn().expect("start authd");
            let stdout = child.stdout.take().expect("stdout");
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                // The `listening on ADDR` line (a `metrics listening on ADDR` line of
                // --metrics-listen comes before it).
                let mut reader = BufReader::new(stdout);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0)
                    && line.starts_with("metrics listening on ")
                {
                    line.clear();
                }
                let _ = tx.send(line);
            });
            let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
            let Some(addr) = line.trim().strip_prefix("listening on ") else {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "authd did not start: {line:?}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            };
            Daemon {
                addr: addr.to_string(),
                child,
                log,
            }
        }

        pub fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        pub fn port(&self) -> u16 {
            self.addr
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port")
        }

        pub fn log(&self) -> String {
            std::fs::read_to_string(&self.log).unwrap_or_default()
        }
    }

    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// One HTTP answer.
    #[derive(Debug)]
    pub struct Resp {
        pub status: u16,
        pub headers: Vec<(String, String)>,
        pub body: String,
    }

    impl Resp {
        /// The first header of that name (case-insensitive).
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        pub fn all(&self, name: &str) -> Vec<&str> {
            self.headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .collect()
        }

        /// The `Set-Cookie` header for cookie `name`.
        pub fn set_cookie(&self, name: &str) -> Option<&str> {
            self.all("set-cookie")
                .into_iter()
                .find(|c| c.starts_with(&format!("{name}=")))
        }

        #[track_caller]
        pub fn status(&self, want: u16) -> &Self {
            assert_eq!(self.status, want, "unexpected status: {self:#?}");
            self
        }
    }

    /// Send one request (`Connection: close`) to `addr` ("127.0.0.1:PORT").
    pub fn http(
        addr: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        s.set_write_timeout(Some(Duration::from_secs(30))).ok();
        // A `Host` among `headers` replaces the default (the address itself).
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str(&format!("Host: {addr}\r\n"));
        }
        req.push_str("Connection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).expect("send request");
        s.write_all(body).expect("send body");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read answer");
        parse(&raw, method == "HEAD")
    }

    fn parse(raw: &[u8], head: bool) -> Resp {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
        let head_text = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head_text.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        let chunked = headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
        });
        if chunked && !head {
            body = dechunk(&body);
        }
        Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    fn dechunk(mut b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
                return out;
            };
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&b[..eol])
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim(),
                16,
            )
            .unwrap_or(0);
            if size == 0 || b.len() < eol + 2 + size {
                return out;
            }
            out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
            b = &b[(eol + 4 + size).min(b.len())..];
        }
    }

    /// Cookies by name, as a browser keeps them (no domain/path logic: one host).
    #[derive(Default, Debug, Clone)]
    pub struct Jar(pub std::collections::BTreeMap<String, String>);

    impl Jar {
        pub fn take(&mut self, r: &Resp) {
            for c in r.all("set-cookie") {
                let first = c.split(';').next().unwrap_or("");
                let Some((k, v)) = first.split_once('=') else {
                    continue;
                };
                if c.contains("Max-Age=0") || v.is_empty() {
                    self.0.remove(k);
                } else {
                    self.0.insert(k.to_string(), v.to_string());
                }
            }
        }

        pub fn header(&self) -> String {
            self.0
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        }

        pub fn get(&self, name: &str) -> Option<&str> {
            self.0.get(name).map(String::as_str)
        }
    }

    /// A browser-ish client of one server: a cookie jar, GET and form POST.
    pub struct Browser {
        pub addr: String,
        pub jar: Jar,
        /// Sent as `Origin` on POSTs when set.
        pub origin: Option<String>,
        /// Sent as `Host` when set (else the address).
        pub host: Option<String>,
    }

    impl Browser {
        pub fn new(addr: &str) -> Browser {
            Browser {
                addr: addr.to_string(),
                jar: Jar::default(),
                origin: None,
                host: None,
            }
        }

        pub fn get(&mut self, path: &str) -> Resp {
            let cookie = self.jar.header();
            let mut h = vec![];
            if !cookie.is_empty() {
                h.push(("Cookie", cookie.as_str()));
            }
            if let Some(host) = &self.host {
                h.push(("Host", host.as_str()));
            }
            let r = http(&self.addr, "GET", path, &h, b"");
            self.jar.take(&r);
            r
        }

        pub fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Resp {
            let body = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form.iter())
                .finish();
            let cookie = self.jar.header();
            let mut h = vec![("Content-Type", "application/x-www-form-urlencoded")];
            if !cookie.is_empty() {
                h.push(("Cookie", cookie.as_str()));
            }
            let origin = self.origin.clone();
            if let Some(o) = &origin {
                h.push(("Origin", o.as_str()));
            }
            if let Some(host) = &self.host {
                h.push(("Host", host.as_str()));
            }
            let r = http(&self.addr, "POST", path, &h, body.as_bytes());
            self.jar.take(&r);
            r
        }
    }

    /// The value of the first `<input … name="NAME" value="…">` in a page.
    pub fn field(html: &str, name: &str) -> Option<String> {
        let at = html.find(&format!("name=\"{name}\" value=\""))?;
        let rest = &html[at + name.len() + 15..];
        let end = rest.find('"')?;
        Some(unescape(&rest[..end]))
    }

    pub fn unescape(s: &str) -> String {
        s.replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    }

    /// The `<h1>` of a page.
    pub fn title(html: &str) -> String {
        let start = html.find("<h1>").map(|i| i + 4).unwrap_or(0);
        let end = html[start..]
            .find("</h1>")
            .map(|i| i + start)
            .unwrap_or(start);
        unescape(&html[start..end])
    }

    /// A TOTP code of `secret` (base32) at now + `offset` seconds, from oathtool.
    pub fn totp(secret: &str, offset: i64) -> String {
        common::require("oathtool", "oathtool");
        let t = common::now() + offset;
        let out = Command::new("oathtool")
            .args(["--totp", "-b", "-N", &format!("@{t}"), secret])
            .output()
            .expect("run oathtool");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Wait until `f` holds (bounded).
    pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A free TCP port on 127.0.0.1 (bound and released).
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    /// A fresh database with cheap hashing, the `pupil-data` group (requires 2FA), the
    /// organisations `school` and `other`, and terms and conditions (every login).
    pub fn provision() -> Env {
        let env = Env::init();
        env.ctl(&["group", "add", "pupil-data", "--require-2fa"])
            .ok();
        env.ctl(&["group", "add", "staff"]).ok();
        env.ctl(&["org", "add", "school"]).ok();
        env.ctl(&["org", "add", "other"]).ok();
        let terms = env.path("terms.txt");
        std::fs::write(
            &terms,
            "1. Use the data only for your work.\n2. Keep your password and phone to yourself.\n",
        )
        .expect("terms file");
        env.ctl(&[
            "terms",
            "set",
            "--version",
            "2024-08",
            "--file",
            path_str(&terms),
        ])
        .ok();
        env
    }

    pub fn path_str(p: &Path) -> &str {
        p.to_str().expect("UTF-8 path")
    }

    /// `user add NAME --email NAME@example.org --org ORG [--role R] [--group G]…`.
    pub fn add(env: &Env, name: &str, org: &str, role: &str, groups: &[&str]) {
        let mut extra = vec!["--org", org, "--role", role];
        for g in groups {
            extra.push("--group");
            extra.push(g);
        }
        env.add_user(name, common::STRONG, &extra);
    }

    /// Sign in through the portal's forms with a password only (a user who needs no
    /// second factor), ticking the terms box. Returns the final answer (a 303).
    pub fn form_login(b: &mut Browser, prefix: &str, user: &str, password: &str) -> Resp {
        let page = b.get(&format!("{prefix}/login"));
        let csrf = field(&page.body, "csrf").expect("csrf field");
        b.post(
            &format!("{prefix}/login"),
            &[
                ("csrf", &csrf),
                ("username", user),
                ("password", password),
                ("accept_terms", "1"),
            ],
        )
    }
}

use kit::{http, Browser};

const SECURE_SESSION: &str = "__Host-authd_session";
const SECURE_CSRF: &str = "__Host-authd_csrf";
const SECURE_DEVICE: &str = "__Host-authd_device";

/// The attributes of a Set-Cookie value, lower-cased names.
fn attributes(set_cookie: &str) -> BTreeMap<String, String> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|a| {
            let (k, v) = a.trim().split_once('=').unwrap_or((a.trim(), ""));
            (k.to_ascii_lowercase(), v.to_string())
        })
        .collect()
}

#[track_caller]
fn assert_strict_cookie(set_cookie: &str) {
    let a = attributes(set_cookie);
    assert!(a.contains_key("secure"), "Secure missing: {set_cookie}");
    assert!(a.contains_key("httponly"), "HttpOnly missing: {set_cookie}");
    assert_eq!(
        a.get("samesite").map(String::as_str),
        Some("Lax"),
        "{set_cookie}"
    );
    assert_eq!(a.get("path").map(String::as_str), Some("/"), "{set_cookie}");
    assert!(
        !a.contains_key("domain"),
        "a __Host- cookie has no Domain: {set_cookie}"
    );
    assert!(set_cookie.starts_with("__Host-"), "{set_cookie}");
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

#[track_caller]
fn assert_page_headers(r: &kit::Resp) {
    assert_eq!(r.header("content-security-policy"), Some(CSP), "{r:#?}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("referrer-policy"), Some("same-origin"));
}

#[test]
fn pages_are_strict_about_framing_caching_and_scripts() {
    let env = kit::provision();
    let d = Daemon::start(&env, &[]);
    for path in ["/login", "/forgot", "/terms", "/nowhere"] {
        let r = http(&d.addr, "GET", path, &[], b"");
        assert_page_headers(&r);
        assert!(r
            .header("content-type")
            .unwrap_or("")
            .starts_with("text/html"));
        assert!(
            !r.body.contains("style=") && !r.body.contains("<script>"),
            "{path}: inline code"
        );
        assert!(r.body.contains(r#"<meta name="viewport""#));
    }
    assert_eq!(http(&d.addr, "GET", "/nowhere", &[], b"").status, 404);
    // A signed-out visit to the account page goes to the sign-in page, keeping the way back.
    let r = http(&d.addr, "GET", "/admin?locked=1", &[], b"");
    r.status(303);
    assert_eq!(
        r.header("location"),
        Some("/login?next=%2Fadmin%3Flocked%3D1")
    );
    assert_page_headers(&r);
    // A refused form is framed by nobody either.
    let r = http(
        &d.addr,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"username=a&password=b",
    );
    r.status(403);
    assert_page_headers(&r);
    // The assets: the right types, no secrets, cacheable.
    let css = http(&d.addr, "GET", "/assets/portal.css", &[], b"");
    css.status(200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    let js = http(&d.addr, "GET", "/assets/portal.js", &[], b"");
    js.status(200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(js.header("x-content-type-options"), Some("nosniff"));
    assert!(js.body.contains("data-checklist"));
    // Other methods are refused with a page.
    assert_eq!(http(&d.addr, "PUT", "/login", &[], b"").status, 405);
}

#[test]
fn cookies_are_host_prefixed_secure_httponly_lax() {
    let env = kit::provision();
    kit::add(&env, "alice", "school", "user", &["pupil-data"]);
    let secret = env.enroll("alice")["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    let d = Daemon::start(&env, &[]);
    let mut b = Browser::new(&d.addr);

    let page = b.get("/login");
    assert_strict_cookie(page.set_cookie(SECURE_CSRF).expect("csrf cookie"));
    assert!(!attributes(page.set_cookie(SECURE_CSRF).unwrap()).contains_key("max-age"));
    let csrf = field(&page.body, "csrf").unwrap();
    let r = b.post(
        "/login",
        &[
            ("csrf", &csrf),
            ("username", "alice"),
            ("password", STRONG),
            ("accept_terms", "1"),
        ],
    );
    r.status(200);
    assert_eq!(kit::title(&r.body), "Enter your verification code");
    assert!(
        r.set_cookie(SECURE_SESSION).is_none(),
        "no session before the code"
    );
    let flow = field(&r.body, "flow").expect("flow field");
    assert!(
        !r.body.contains(&format!("?flow={flow}")),
        "the flow never goes in a URL"
    );
    let r = b.post(
        "/login/totp",
        &[
            ("csrf", &field(&r.body, "csrf").unwrap()),
            ("flow", &flow),
            ("methods", &field(&r.body, "methods").unwrap()),
            ("code", &kit::totp(&secret, 0)),
            ("remember_device", "1"),
        ],
    );
    r.status(303);
    assert_eq!(r.header("location"), Some("/"));
    let session = r.set_cookie(SECURE_SESSION).expect("session cookie");
    assert_strict_cookie(session);
    assert!(
        !attributes(session).contains_key("max-age"),
        "ends with the browser"
    );
    let device = r.set_cookie(SECURE_DEVICE).expect("device cookie");
    assert_strict_cookie(device);
    assert_eq!(
        attributes(device).get("max-age").map(String::as_str),
        Some("2592000"),
        "30 days"
    );
    // The session cookie is a real session, also for the API.
    let token = b.jar.get(SECURE_SESSION).unwrap().to_string();
    let bearer = format!("Bearer {token}");
    http(
        &d.addr,
        "GET",
        "/v1/session",
        &[("Authorization", &bearer)],
        b"",
    )
    .status(200);
    let home = b.get("/");
    home.status(200);
    assert!(home.body.contains(r#"<dd id="signed-in-user">alice</dd>"#));
    // Signing out deletes the session cookie and ends the session.
    let out = b.post("/logout", &[("csrf", &field(&home.body, "csrf").unwrap())]);
    out.status(303);
    assert_eq!(out.header("location"), Some("/login?m=signed_out"));
    let gone = out.set_cookie(SECURE_SESSION).expect("deleting cookie");
    assert_strict_cookie(gone);
    assert_eq!(
        attributes(gone).get("max-age").map(String::as_str),
        Some("0")
    );
    http(
        &d.addr,
        "GET",
        "/v1/session",
        &[("Authorization", &bearer)],
        b"",
    )
    .status(401);

    // Plain-HTTP cookies only on loopback, and without the prefix (browsers require both).
    drop(d);
    let d = Daemon::start(&env, &["--insecure-cookies"]);
    let r = http(&d.addr, "GET", "/login", &[], b"");
    let c = r.set_cookie("authd_csrf").expect("insecure csrf cookie");
    assert!(!c.contains("Secure") && c.contains("HttpOnly") && c.contains("SameSite=Lax"));
    let out = common::run(
        {
            let mut c = Command::new(common::AUTHD);
            c.arg("--db")
                .arg(&env.db)
                .args(["--listen", "0.0.0.0:0", "--insecure-cookies"]);
            if env.is_pg() {
                c.env("AUTHD_KEY_FILE", env.key());
            }
            c
        },
        None,
        common::TIMEOUT,
    );
    out.fails(2).stderr_has("loopback");
}

/// Rows of the audit log for `event`.
fn audit_count(env: &Env, event: &str) -> usize {
    env.audit(&["--event", event]).len()
}

#[test]
fn forms_without_the_right_csrf_token_are_refused_and_change_nothing() {
    let env = kit::provision();
    kit::add(&env, "olga", "school", "org-admin", &[]);
    kit::add(&env, "frank", "school", "user", &[]);
    env.ctl(&["policy", "set", "mfa.admins_required=false"])
        .ok();
    env.ctl(&["policy", "set", "lockout.max_failures=2"]).ok();
    // Seed lockout: frank never signed in (smart lockout would lock out only strangers).
    env.ctl(&["policy", "set", "lockout.mode=account"]).ok();
    let d = Daemon::start(&env, &[]);
    // frank is locked (two wrong passwords through the API).
    for _ in 0..2 {
        http(
            &d.addr,
            "POST",
            "/v1/login",
            &[("Content-Type", "application/json")],
            br#"{"username":"frank","password":"wrong"}"#,
        )
        .status(401);
    }
    assert_eq!(env.json(&["user", "show", "frank"])["status"], "locked");
    let before = audit_count(&env, "login.password");

    // Pre-login forms: no token, a wrong token, another browser's token, no cookie.
    let mut b = Browser::new(&d.addr);
    let page = b.get("/login");
    let good = field(&page.body, "csrf").unwrap();
    let mut other = Browser::new(&d.addr);
    let other_token = field(&other.get("/login").body, "csrf").unwrap();
    let wrong = "0".repeat(64);
    for (label, token) in [
        ("none", None),
        ("wrong", Some(wrong.as_str())),
        ("another browser's", Some(other_token.as_str())),
        ("empty", Some("")),
    ] {
        let mut form = vec![
            ("username", "olga"),
            ("password", STRONG),
            ("accept_terms", "1"),
        ];
        if let Some(t) = token {
            form.push(("csrf", t));
        }
        let r = b.post("/login", &form);
        assert_eq!(r.status, 403, "{label} token: {r:#?}");
        assert!(r.set_cookie(SECURE_SESSION).is_none());
        assert!(r.body.contains("Nothing was changed"));
    }
    let mut cookieless = Browser::new(&d.addr);
    let r = cookieless.post(
        "/login",
        &[
            ("csrf", good.as_str()),
            ("username", "olga"),
            ("password", STRONG),
        ],
    );
    assert_eq!(r.status, 403, "a token without its cookie");
    // A right token from another site (the browser says so) is refused too.
    b.origin = Some("https://evil.example".into());
    let r = b.post(
        "/login",
        &[
            ("csrf", good.as_str()),
            ("username", "olga"),
            ("password", STRONG),
        ],
    );
    assert_eq!(r.status, 403, "cross-origin post");
    b.origin = None;
    assert_eq!(
        audit_count(&env, "login.password"),
        before,
        "no refused form reached the login"
    );

    // Signed-in forms are bound to the session.
    let r = kit::form_login(&mut b, "", "olga", STRONG);
    r.status(303);
    let admin = b.get("/admin");
    admin.status(200);
    assert!(admin.body.contains(r#"<tr data-user="frank">"#));
    let session_token = field(&admin.body, "csrf").unwrap();
    let before_unlock = audit_count(&env, "admin.unlock");
    for token in [None, Some(good.as_str()), Some(wrong.as_str())] {
        let mut form = vec![("username", "frank")];
        if let Some(t) = token {
            form.push(("csrf", t));
        }
        b.post("/admin/unlock", &form).status(403);
        b.post("/admin/reset-2fa", &form).status(403);
        b.post("/logout", &form).status(403);
    }
    assert_eq!(
        env.json(&["user", "show", "frank"])["status"],
        "locked",
        "still locked"
    );
    assert_eq!(audit_count(&env, "admin.unlock"), before_unlock);
    b.get("/").status(200); // still signed in
                            // Another session's token does not work for this one.
    let mut b2 = Browser::new(&d.addr);
    kit::form_login(&mut b2, "", "olga", STRONG).status(303);
    let token2 = field(&b2.get("/admin").body, "csrf").unwrap();
    assert_ne!(token2, session_token);
    b.post("/admin/unlock", &[("username", "frank"), ("csrf", &token2)])
        .status(403);
    assert_eq!(env.json(&["user", "show", "frank"])["status"], "locked");

    // With the right token: done, and audited like the API, the admin as actor.
    let r = b.post(
        "/admin/unlock",
        &[("username", "frank"), ("csrf", &session_token)],
    );
    r.status(303);
    assert_eq!(
        r.header("location"),
        Some("/admin/user?name=frank&m=unlocked")
    );
    assert_eq!(env.json(&["user", "show", "frank"])["status"], "active");
    let rows = env.audit(&["--event", "admin.unlock"]);
    let last = rows.last().expect("an admin.unlock row");
    assert_eq!(last["actor"], "olga");
    assert_eq!(last["username"], "frank");
    assert_eq!(last["outcome"], "success");
    assert!(last["detail"].to_string().contains("portal"), "{last}");
}

/// `Origin: null` (a sandboxed iframe, a `data:` document, a redirect chain through
/// another site) is another site's post: refused exactly like one, even with a right
/// CSRF token, and nothing is done. Without an Origin header the token decides; our own
/// origin is fine.
#[test]
fn forms_posted_with_origin_null_are_refused_like_other_sites() {
    let env = kit::provision();
    kit::add(&env, "nina", "school", "user", &[]);
    let d = Daemon::start(&env, &[]);
    let mut b = Browser::new(&d.addr);
    let page = b.get("/login");
    let csrf = field(&page.body, "csrf").expect("csrf field");
    let form = [
        ("csrf", csrf.as_str()),
        ("username", "nina"),
        ("password", STRONG),
        ("accept_terms", "1"),
    ];
    let before = audit_count(&env, "login.password");
    let nina_rows = env.audit(&["--user", "nina"]).len();

    b.origin = Some("https://evil.example".into());
    let cross = b.post("/login", &form);
    cross.status(403);
    for origin in ["null", "NULL", " null"] {
        b.origin = Some(origin.into());
        let r = b.post("/login", &form);
        assert_eq!(r.status, 403, "Origin: {origin:?}: {r:#?}");
        assert_eq!(r.body, cross.body, "the same answer as another site's post");
        assert!(r.set_cookie(SECURE_SESSION).is_none());
    }
    assert_eq!(
        audit_count(&env, "login.password"),
        before,
        "no refused form reached the login"
    );
    assert_eq!(
        env.audit(&["--user", "nina"]).len(),
        nina_rows,
        "nothing audited"
    );

    // No Origin: the (right) token decides. Our own origin: fine too.
    b.origin = None;
    let r = b.post("/login", &form);
    r.status(303);
    assert!(r.set_cookie(SECURE_SESSION).is_some());
    let home = b.get("/");
    home.status(200);
    let session_csrf = field(&home.body, "csrf").expect("csrf on the signed-in page");
    // A signed-in form posted with Origin: null is refused too; the session lives on.
    b.origin = Some("null".into());
    b.post("/logout", &[("csrf", session_csrf.as_str())])
        .status(403);
    b.get("/").status(200);
    b.origin = Some(d.url());
    let r = b.post("/logout", &[("csrf", session_csrf.as_str())]);
    r.status(303);
    assert_eq!(r.header("location"), Some("/login?m=signed_out"));
    let mut c = Browser::new(&d.addr);
    c.origin = Some(d.url());
    kit::form_login(&mut c, "", "nina", STRONG).status(303);
}

#[test]
fn redirects_after_login_stay_on_allowed_origins() {
    let env = kit::provision();
    kit::add(&env, "gina", "school", "user", &[]);
    let d = Daemon::start(
        &env,
        &["--allowed-redirect-origin", "https://app.example.org"],
    );
    let cases: &[(&str, &str)] = &[
        ("/app/report?id=7", "/app/report?id=7"),
        (
            "https://app.example.org/x?y=1",
            "https://app.example.org/x?y=1",
        ),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("https://app.example.org@evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("http://app.example.org.evil.example/", "/"),
        ("http://app.example.org/", "/"), // http is another origin
        ("/%2F%2Fevil.example", "/"),
        ("https://evil.example/", "/"),
    ];
    for (next, want) in cases {
        let mut b = Browser::new(&d.addr);
        let page = b.get(&format!("/login?next={}", kit_qs(next)));
        page.status(200);
        let carried = field(&page.body, "next");
        if *want == "/" {
            assert_eq!(carried, None, "{next:?} must not even be carried");
        }
        let csrf = field(&page.body, "csrf").unwrap();
        let r = b.post(
            "/login",
            &[
                ("csrf", csrf.as_str()),
                ("username", "gina"),
                ("password", STRONG),
                ("accept_terms", "1"),
                ("next", next),
            ],
        );
        r.status(303);
        assert_eq!(r.header("location"), Some(*want), "next = {next:?}");
    }
}

fn kit_qs(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[test]
fn wrong_username_and_wrong_password_look_the_same() {
    let env = kit::provision();
    kit::add(&env, "gina", "school", "user", &[]);
    let d = Daemon::start(&env, &[]);
    let mut pages = Vec::new();
    for (user, pw) in [("gina", "Wrong-pass-1"), ("nobody", "Wrong-pass-1")] {
        let mut b = Browser::new(&d.addr);
        let page = b.get("/login");
        let csrf = field(&page.body, "csrf").unwrap();
        let r = b.post(
            "/login",
            &[
                ("csrf", csrf.as_str()),
                ("username", user),
                ("password", pw),
            ],
        );
        r.status(401);
        assert!(r
            .body
            .contains("Authentication attempt failed. Retry with valid credentials."));
        // The same page but for the name typed and the per-browser token.
        let csrf2 = field(&r.body, "csrf").unwrap();
        pages.push(r.body.replace(&csrf2, "TOKEN").replace(user, "NAME"));
    }
    assert_eq!(pages[0], pages[1]);
    let rows = env.audit(&["--event", "login.password"]);
    let reasons: Vec<_> = rows
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or(""))
        .collect();
    assert!(reasons.contains(&"wrong_password") && reasons.contains(&"unknown_user"));
}

/// HTML character references, named or numeric, decoded (whichever spelling the pages
/// use).
fn decode_entities(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail.find(';').filter(|&e| e <= 10);
        let c = end.and_then(|e| match &tail[1..e] {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            n => n
                .strip_prefix('#')
                .and_then(|n| n.parse::<u32>().ok())
                .and_then(char::from_u32),
        });
        match (c, end) {
            (Some(c), Some(e)) => {
                out.push(c);
                rest = &tail[e + 1..];
            }
            _ => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The raw text of the attribute value that follows `before` (which ends in `="`).
fn raw_value<'h>(html: &'h str, before: &str) -> &'h str {
    let start = html.find(before).expect(before) + before.len();
    let len = html[start..].find('"').expect("a closing quote");
    &html[start..start + len]
}

#[test]
fn pages_escape_hostile_values_and_share_one_csp() {
    const HOSTILE: &str = r#"<script>alert("x&'y")</script>"#;
    let env = kit::provision();
    let terms = env.path("hostile-terms.txt");
    std::fs::write(&terms, format!("1. {HOSTILE}\n")).expect("terms file");
    env.ctl(&[
        "terms",
        "set",
        "--version",
        "v<2>\"",
        "--file",
        kit::path_str(&terms),
    ])
    .ok();
    let d = Daemon::start(
        &env,
        &["--allowed-redirect-origin", "https://app.example.org"],
    );
    let mut csps = Vec::new();
    let mut check = |what: &str, r: &kit::Resp| {
        assert!(
            !r.body.contains("<script>") && !r.body.contains("alert(\""),
            "{what}: unescaped: {}",
            r.body
        );
        csps.push(
            r.header("content-security-policy")
                .unwrap_or("")
                .to_string(),
        );
    };
    // A `next` target in a hidden field: the whole value survives, quotes included.
    let next = format!("/app?q={HOSTILE}");
    let mut b = Browser::new(&d.addr);
    let page = b.get(&format!("/login?next={}", kit_qs(&next)));
    page.status(200);
    check("sign-in page", &page);
    let carried = raw_value(&page.body, r#"name="next" value=""#);
    assert_eq!(decode_entities(carried), next);
    // The terms' version in the tick-box's label.
    assert!(decode_entities(&page.body).contains(r#"(version v<2>")</label>"#));
    // The name typed, back in its box after a refusal.
    let csrf = field(&page.body, "csrf").unwrap();
    let r = b.post(
        "/login",
        &[
            ("csrf", csrf.as_str()),
            ("username", HOSTILE),
            ("password", "Wrong-pass-1"),
            ("next", next.as_str()),
        ],
    );
    r.status(401);
    check("refused sign-in", &r);
    let typed = raw_value(&r.body, r#"required value=""#);
    assert_eq!(decode_entities(typed), HOSTILE);
    assert_eq!(
        decode_entities(raw_value(&r.body, r#"name="next" value=""#)),
        next
    );
    // The terms' text.
    let t = b.get("/terms");
    t.status(200);
    check("terms", &t);
    assert!(decode_entities(&t.body).contains(&format!("1. {HOSTILE}")));
    // One policy for every page, with the allowed origin as a form target.
    let other = http(&d.addr, "GET", "/nowhere", &[], b"");
    check("404", &other);
    assert!(csps[0].contains("form-action 'self' https://app.example.org;"));
    assert!(csps.iter().all(|c| c == &csps[0]), "{csps:#?}");
}

#[test]
fn sign_in_forms_share_the_per_address_rate_limit() {
    let env = kit::provision();
    let d = Daemon::start(
        &env,
        &["--rate-limit-per-minute", "1", "--rate-limit-burst", "2"],
    );
    let mut b = Browser::new(&d.addr);
    let page = b.get("/login");
    let csrf = field(&page.body, "csrf").unwrap();
    let form = [
        ("csrf", csrf.as_str()),
        ("username", "nobody"),
        ("password", "Wrong-pass-1"),
    ];
    b.post("/login", &form).status(401);
    b.post("/login", &form).status(401);
    let r = b.post("/login", &form);
    r.status(429);
    assert!(r.header("retry-after").is_some());
    assert!(r.body.contains("Too many attempts"));
    assert_page_headers(&r);
    // Pages are not limited.
    b.get("/login").status(200);
}

/// Where the screenshots of the browser journeys go.
fn artifacts() -> PathBuf {
    common::repo_root().join("test-artifacts").join("browser")
}

#[test]
fn browser_journeys() {
    let dir = common::browser_dir();

    let env = kit::provision();
    env.ctl(&["policy", "set", "email_otp.resend_seconds=0"])
        .ok();
    // The seed's lockout (frank below is locked for everyone, and the admin unlocks him).
    env.ctl(&["policy", "set", "lockout.mode=account"]).ok();
    // The default terms.mode, every_login, as in seed 000: the box is ticked at every
    // sign-in, and a remembered device (seed 004) still skips the code after it.
    kit::add(&env, "alice", "school", "user", &["pupil-data"]);
    kit::add(&env, "carol", "school", "user", &[]);
    env.json(&["enroll", "carol", "--method", "email"]);
    kit::add(&env, "dave", "school", "user", &[]);
    env.ctl(&["passwd", "dave", "--expire"]).ok();
    kit::add(&env, "erin", "school", "user", &[]);
    kit::add(&env, "frank", "school", "user", &[]);
    kit::add(&env, "olga", "school", "org-admin", &[]);
    let olga_secret = env.enroll("olga")["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    kit::add(&env, "zed", "other", "user", &[]);
    kit::add(&env, "paula", "school", "user", &[]);
    // A group that requires a passkey (issue 15's policy).
    env.ctl(&["group", "add", "finance", "--require-passkey"])
        .ok();
    env.ctl(&["policy", "set", "mfa.passkey_required=groups"])
        .ok();
    kit::add(&env, "rita", "school", "user", &["finance"]);
    kit::add(&env, "pia", "school", "user", &["pupil-data"]);
    kit::add(&env, "sofia", "school", "user", &[]);
    let mail = env.path("mail");
    let d = Daemon::start(
        &env,
        &[
            "--insecure-cookies",
            "--mail-dir",
            kit::path_str(&mail),
            // Passkeys (the paula journey, at http://localhost:PORT).
            "--webauthn-rp-id",
            "localhost",
            "--webauthn-origin",
            "http://localhost",
        ],
    );
    // frank locks himself out (nine wrong passwords, the seed's limit).
    for _ in 0..9 {
        http(
            &d.addr,
            "POST",
            "/v1/login",
            &[("Content-Type", "application/json")],
            br#"{"username":"frank","password":"not-his-password"}"#,
        );
    }
    assert_eq!(env.json(&["user", "show", "frank"])["status"], "locked");

    let art = artifacts();
    let _ = std::fs::remove_dir_all(&art);
    std::fs::create_dir_all(&art).expect("test-artifacts/browser");
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("journeys.js"))
        .current_dir(&dir)
        .env("AUTHD_URL", d.url())
        .env("MAIL_DIR", &mail)
        .env("ARTIFACTS", &art)
        .env("PASSWORD", STRONG)
        .env("OLGA_SECRET", &olga_secret)
        .env(
            "SOFIA_LINK",
            env.json(&["user", "reset-link", "sofia", "--url", &d.url()])["url"]
                .as_str()
                .expect("the link"),
        )
        .env("CHROMIUM", "/usr/bin/chromium");
    let out = common::run(cmd, None, Duration::from_secs(300));
    assert!(
        out.code == Some(0),
        "the browser journeys failed (screenshots in {}): {out:?}\n--- authd log ---\n{}",
        art.display(),
        d.log()
    );
    assert!(out.stdout.contains("12 passed, 0 failed"), "{out:?}");
    let shots = std::fs::read_dir(&art).map(|d| d.count()).unwrap_or(0);
    assert!(shots >= 30, "only {shots} screenshots in {}", art.display());

    // What the pages did is in the audit log, like the API's.
    let unlock = env.audit(&["--event", "admin.unlock", "--user", "frank"]);
    let u = unlock.last().expect("admin.unlock of frank");
    assert_eq!(
        (u["actor"].as_str(), u["outcome"].as_str()),
        (Some("olga"), Some("success"))
    );
    let reset = env.audit(&["--event", "admin.reset_2fa", "--user", "alice"]);
    let r = reset.last().expect("admin.reset_2fa of alice");
    assert_eq!(r["actor"], "olga");
    assert!(r["detail"].to_string().contains("portal"));
    let refused = env.audit(&["--event", "admin.user.show", "--outcome", "failure"]);
    assert!(
        refused.iter().any(|r| r["reason"] == "other_org"),
        "olga's look at zed (another organisation) is audited"
    );
    for (event, user) in [
        ("login.enroll_confirm", "alice"),
        ("login.totp", "alice"),
        ("login.recovery", "alice"),
        ("login.terms", "dave"),
        ("login.email", "carol"),
        ("login.email_resend", "carol"),
        ("login.password_change", "dave"),
        ("security_questions.set", "erin"),
        ("password.reset", "erin"),
        ("device.revoke", "carol"),
        ("session.logout", "carol"),
    ] {
        let rows = env.audit(&["--event", event, "--user", user, "--outcome", "success"]);
        assert!(
            !rows.is_empty(),
            "no successful {event} of {user} in the audit log"
        );
    }
    assert_eq!(env.json(&["user", "show", "frank"])["status"], "active");
    assert_eq!(
        env.json(&["user", "show", "alice"])["mfa_method"],
        serde_json::Value::Null
    );
}
