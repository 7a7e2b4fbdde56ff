//! Forward-auth, black-box: `GET /v1/auth/verify` over raw HTTP, then the shipped
//! `deploy/forward-auth/nginx.conf` and `Caddyfile` running in a real nginx and Caddy
//! (Debian's packages, on free ports of 127.0.0.1, their files in temporary directories)
//! in front of authd and a backend that reads paths as leniently as any: the portal
//! below `/auth/`, the app behind `auth_request` / `forward_auth`, and a table of hostile
//! URLs that must never reach a protected page.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{self, Env, STRONG};
use crate::portal::kit::{self, field, http, Browser, Daemon};

fn verify(d: &Daemon, headers: &[(&str, &str)]) -> kit::Resp {
    http(&d.addr, "GET", "/v1/auth/verify", headers, b"")
}

/// A session token from the JSON API (a user who needs no second factor; terms accepted).
fn api_session(d: &Daemon, user: &str) -> String {
    let body = format!(r#"{{"username":"{user}","password":"{STRONG}"}}"#);
    let r = http(
        &d.addr,
        "POST",
        "/v1/login",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
    let v = if v["status"] == "terms_required" {
        let body = serde_json::json!({"flow": v["flow"], "accept": true}).to_string();
        let r = http(
            &d.addr,
            "POST",
            "/v1/login/terms",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        serde_json::from_str(&r.body).expect("JSON")
    } else {
        v
    };
    assert_eq!(v["status"], "authenticated", "{v}");
    v["session"].as_str().expect("session").to_string()
}

#[test]
fn verify_answers_with_the_user_or_the_way_to_sign_in() {
    let env = kit::provision();
    kit::add(&env, "gina", "school", "user", &["staff"]);
    kit::add(&env, "hugo", "school", "user", &[]);
    let d = Daemon::start(
        &env,
        &[
            "--trusted-proxy",
            "127.0.0.1",
            "--public-url",
            "https://app.example.org/auth",
            "--forward-auth-rule",
            "app.example.org/admin=staff",
            "--forward-auth-headers",
            "x-original-url",
        ],
    );
    // This daemon believes X-Original-URL only (the proxy sets it, as nginx can).
    let from_proxy = [("X-Original-URL", "https://app.example.org/docs/a?b=1")];

    // Nobody signed in: 401 and where to sign in, with the way back.
    let r = verify(&d, &from_proxy);
    r.status(401);
    assert_eq!(
        r.header("x-auth-login-url"),
        Some("https://app.example.org/auth/login?next=https%3A%2F%2Fapp.example.org%2Fdocs%2Fa%3Fb%3D1")
    );
    assert!(r.header("x-auth-user").is_none());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // …as a redirect for proxies that pass the answer to the browser.
    let r = http(
        &d.addr,
        "GET",
        "/v1/auth/verify?redirect=1",
        &from_proxy,
        b"",
    );
    r.status(302);
    assert_eq!(r.header("location"), r.header("x-auth-login-url"));
    // An original URL on a foreign origin is never offered as the way back.
    let r = verify(&d, &[("X-Original-URL", "https://evil.example/")]);
    assert_eq!(
        r.header("x-auth-login-url"),
        Some("https://app.example.org/auth/login")
    );
    // The other family (X-Forwarded-*) is ignored entirely: without X-Original-URL the
    // description is incomplete, 400.
    let forwarded = [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "app.example.org"),
        ("X-Forwarded-Uri", "/x"),
    ];
    let r = verify(&d, &forwarded);
    r.status(400);
    assert!(r.header("x-auth-login-url").is_none());
    // Bad or foreign tokens are simply not sessions.
    for bad in ["Bearer nope", "Bearer ", "Basic Zm9vOmJhcg=="] {
        verify(&d, &[("Authorization", bad), from_proxy[0]]).status(401);
    }
    verify(
        &d,
        &[
            ("Cookie", "__Host-authd_session=not-a-session"),
            from_proxy[0],
        ],
    )
    .status(401);

    // Signed in (cookie or Bearer): 200 with who it is.
    let gina = api_session(&d, "gina");
    for h in [
        ("Cookie", format!("__Host-authd_session={gina}")),
        ("Authorization", format!("Bearer {gina}")),
    ] {
        let r = verify(&d, &[(h.0, h.1.as_str()), from_proxy[0]]);
        r.status(200);
        assert_eq!(r.header("x-auth-user"), Some("gina"));
        assert_eq!(r.header("x-auth-email"), Some("gina@example.org"));
        assert_eq!(r.header("x-auth-groups"), Some("staff"));
        assert_eq!(r.header("x-auth-org"), Some("school"));
    }
    let head = http(
        &d.addr,
        "HEAD",
        "/v1/auth/verify",
        &[("Authorization", &format!("Bearer {gina}")), from_proxy[0]],
        b"",
    );
    head.status(200);
    assert_eq!(head.header("x-auth-user"), Some("gina"));

    // A protected path needs its group: hugo is signed in but not in staff.
    let hugo = api_session(&d, "hugo");
    let hugo_cookie = format!("__Host-authd_session={hugo}");
    let gina_cookie = format!("__Host-authd_session={gina}");
    for path in [
        "/admin",
        "/admin/",
        "/admin/users?x=1",
        "/%61dmin/x",
        "/ADMIN",
        "/public/../admin",
        "//admin/",
    ] {
        let url = format!("https://app.example.org{path}");
        verify(&d, &[("Cookie", &hugo_cookie), ("X-Original-URL", &url)]).status(403);
        verify(&d, &[("Cookie", &gina_cookie), ("X-Original-URL", &url)]).status(200);
    }
    for path in ["/", "/administrator", "/docs/admin"] {
        let url = format!("https://app.example.org{path}");
        verify(&d, &[("Cookie", &hugo_cookie), ("X-Original-URL", &url)]).status(200);
    }
    // Signed in, with the proxy's X-Forwarded-* but no X-Original-URL: refused, 400.
    let mut only_forwarded = forwarded.to_vec();
    only_forwarded.push(("Cookie", &gina_cookie));
    verify(&d, &only_forwarded).status(400);
    // A URL that cannot be read one way only: refused, 400, for the user with the group
    // too.
    for url in [
        "https://app.example.org/%2fadmin",
        "https://app.example.org/x%00",
        "https://app.example.org/%zz",
        "/admin",
    ] {
        verify(&d, &[("Cookie", &gina_cookie), ("X-Original-URL", url)]).status(400);
    }
    // Rules exist but the URL is unknown: closed.
    verify(&d, &[("Cookie", &hugo_cookie)]).status(400);

    // After logout: 401 again.
    http(
        &d.addr,
        "POST",
        "/v1/logout",
        &[("Authorization", &format!("Bearer {gina}"))],
        b"",
    )
    .status(204);
    verify(&d, &[("Cookie", &gina_cookie), from_proxy[0]]).status(401);
}

#[test]
fn forwarded_urls_are_believed_only_from_trusted_proxies() {
    let env = kit::provision();
    kit::add(&env, "hugo", "school", "user", &[]);
    // No --trusted-proxy: 127.0.0.1 is just a client.
    let d = Daemon::start(
        &env,
        &[
            "--public-url",
            "https://app.example.org/auth",
            "--forward-auth-rule",
            "app.example.org/admin=staff",
        ],
    );
    let r = verify(&d, &[("X-Original-URL", "https://app.example.org/docs")]);
    r.status(401);
    assert_eq!(
        r.header("x-auth-login-url"),
        Some("https://app.example.org/auth/login"),
        "a URL from an untrusted peer is not offered back"
    );
    let hugo = api_session(&d, "hugo");
    // The client claims a public URL to dodge the rule: not believed, so closed.
    let r = verify(
        &d,
        &[
            ("Cookie", &format!("__Host-authd_session={hugo}")),
            ("X-Original-URL", "https://app.example.org/public"),
        ],
    );
    r.status(403);
}

/// A backend for the proxies to protect that reads paths as leniently as any: it answers
/// 200 to every request (`THE PROTECTED PAGE` and the target it was sent) and counts
/// them, so a hostile URL that got past authd shows as a hit. It echoes the `X-Auth-*`
/// headers it received as `X-Seen-*`.
struct Backend {
    port: u16,
    hits: Arc<Mutex<Vec<String>>>,
}

impl Backend {
    fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("backend port");
        let port = listener.local_addr().expect("addr").port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&hits);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || Backend::answer(conn, &seen));
            }
        });
        Backend { port, hits }
    }

    fn answer(mut conn: TcpStream, seen: &Mutex<Vec<String>>) {
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        while !raw.windows(4).any(|w| w == b"\r\n\r\n") && raw.len() < 65536 {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
        let head = String::from_utf8_lossy(&raw).into_owned();
        let target = head
            .lines()
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("")
            .to_string();
        let header = |name: &str| {
            head.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        };
        let body = format!("THE PROTECTED PAGE {target}\n");
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nX-Seen-User: {}\r\nX-Seen-Groups: {}\r\nConnection: close\r\n\r\n{body}",
            body.len(),
            header("x-auth-user"),
            header("x-auth-groups"),
        );
        seen.lock().unwrap().push(target);
        let _ = conn.write_all(answer.as_bytes());
    }

    fn hits(&self) -> usize {
        self.hits.lock().unwrap().len()
    }
}

/// A shipped configuration with its placeholders swapped, each of which must occur (so
/// a change to the shipped file that the tests no longer follow fails here).
fn shipped(file: &str, swaps: &[(&str, String)]) -> String {
    let path = common::repo_root().join("deploy/forward-auth").join(file);
    let mut text = std::fs::read_to_string(&path).expect("shipped config");
    for (from, to) in swaps {
        assert!(
            text.contains(from),
            "deploy/forward-auth/{file} no longer has {from:?}"
        );
        text = text.replace(from, to);
    }
    text
}

/// nginx running `deploy/forward-auth/nginx.conf` in the foreground on 127.0.0.1:`port`,
/// TLS swapped for plain HTTP, authd and the app at the given ports; its files in a
/// temporary directory; stopped when dropped.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    fn start(authd_port: u16, app_port: u16, port: u16) -> Nginx {
        common::require("nginx", "nginx");
        let dir = tempfile::Builder::new()
            .prefix("authd-nginx-")
            .tempdir()
            .expect("temp dir");
        let p = dir.path();
        std::fs::create_dir_all(p.join("tmp")).expect("mkdir");
        let listen = format!("listen 127.0.0.1:{port}");
        let site = shipped(
            "nginx.conf",
            &[
                (
                    "listen 443 ssl default_server;",
                    format!("{listen} default_server;"),
                ),
                ("listen 443 ssl;", format!("{listen};")),
                ("127.0.0.1:8080", format!("127.0.0.1:{authd_port}")),
                ("127.0.0.1:3000", format!("127.0.0.1:{app_port}")),
            ],
        );
        // No certificate here: the TLS lines go, everything else is as shipped.
        let site: String = site
            .lines()
            .filter(|l| !l.trim_start().starts_with("ssl_"))
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
             events {{ worker_connections 64; }}\nhttp {{\n access_log {d}/access.log;\n \
             client_body_temp_path {d}/tmp/b;\n proxy_temp_path {d}/tmp/p;\n \
             fastcgi_temp_path {d}/tmp/f;\n uwsgi_temp_path {d}/tmp/u;\n \
             scgi_temp_path {d}/tmp/s;\n include {d}/site.conf;\n}}\n"
        );
        let conf_path = p.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx.conf");
        let args = |c: &mut Command| {
            c.arg("-c")
                .arg(&conf_path)
                .arg("-p")
                .arg(p)
                .arg("-e")
                .arg(p.join("error.log"));
        };
        let mut t = Command::new("nginx");
        args(&mut t);
        let t = t.arg("-t").output().expect("nginx -t");
        assert!(
            t.status.success(),
            "deploy/forward-auth/nginx.conf is not valid: {}",
            String::from_utf8_lossy(&t.stderr)
        );
        let mut c = Command::new("nginx");
        args(&mut c);
        let child = c
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let n = Nginx { child, dir, port };
        kit::wait_for("nginx to listen", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        n
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: nginx's fast shutdown (master and worker); SIGKILL if it lingers.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Caddy running `deploy/forward-auth/Caddyfile` on 127.0.0.1:`port` over plain HTTP,
/// authd and the app at the given ports; stopped when dropped.
struct Caddy {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Caddy {
    fn start(authd_port: u16, app_port: u16, port: u16) -> Caddy {
        common::require("caddy", "caddy");
        let dir = tempfile::Builder::new()
            .prefix("authd-caddy-")
            .tempdir()
            .expect("temp dir");
        let p = dir.path();
        let site = shipped(
            "Caddyfile",
            &[
                (
                    "\napp.example.org {",
                    format!("\nhttp://app.example.org:{port} {{"),
                ),
                ("\n:443 {", format!("\nhttp://:{port} {{")),
                ("127.0.0.1:8080", format!("127.0.0.1:{authd_port}")),
                ("127.0.0.1:3000", format!("127.0.0.1:{app_port}")),
            ],
        );
        let caddyfile = format!(
            "{{\n\tadmin off\n\tauto_https off\n\tstorage file_system {}/data\n}}\n{site}",
            p.display()
        );
        std::fs::write(p.join("Caddyfile"), caddyfile).expect("Caddyfile");
        let child = Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(p.join("Caddyfile"))
            .env("HOME", p)
            .env("XDG_DATA_HOME", p.join("data"))
            .env("XDG_CONFIG_HOME", p.join("config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(p.join("caddy.log")).expect("log"))
            .spawn()
            .expect("start caddy");
        let c = Caddy { child, dir, port };
        kit::wait_for("caddy to listen", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        c
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("caddy.log")).unwrap_or_default()
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// authd as the shipped examples run it, for a proxy on `proxy_port`: rules for
/// `/admin` (staff) on the app's host and `/finance` (ops) on every host, unknown hosts
/// refused.
fn example_authd(env: &Env, proxy_port: u16, default: &str) -> Daemon {
    Daemon::start(
        env,
        &[
            "--trusted-proxy",
            "127.0.0.1",
            "--insecure-cookies",
            "--public-url",
            &format!("http://app.example.org:{proxy_port}/auth"),
            "--forward-auth-default",
            default,
            "--forward-auth-rule",
            "app.example.org/admin=staff",
            "--forward-auth-rule",
            "*/finance=ops",
        ],
    )
}

/// A browser journey through a proxy running a shipped configuration: signed out →
/// sign-in page → the app, with who it is; a page of a group it lacks is 403; signed
/// out again → sent to sign in.
fn journey(name: &str, addr: &str, public: &str, backend: &Backend, diag: &dyn Fn() -> String) {
    let host = public.trim_start_matches("http://").to_string();
    let check = |what: &str, r: &kit::Resp, want: u16| {
        assert_eq!(r.status, want, "{name}: {what}: {r:#?}\n{}", diag());
    };
    let mut b = Browser::new(addr);
    b.host = Some(host.clone());
    let before = backend.hits();
    let r = b.get("/index.html");
    check("page without a session", &r, 302);
    let next = format!("{public}/index.html");
    let login = format!(
        "{public}/auth/login?next={}",
        form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
    );
    assert_eq!(r.header("location"), Some(login.as_str()), "{name}");
    assert_eq!(
        backend.hits(),
        before,
        "{name}: the app saw a signed-out request"
    );

    // Sign in through the portal, behind the same proxy, as a browser would.
    let path = login.trim_start_matches(public).to_string();
    let page = b.get(&path);
    check("sign-in page", &page, 200);
    assert!(
        page.body.contains(r#"action="/auth/login""#),
        "{name}: links carry the prefix"
    );
    b.origin = Some(public.to_string());
    let r = b.post(
        "/auth/login",
        &[
            ("csrf", &field(&page.body, "csrf").expect("csrf")),
            ("username", "hugo"),
            ("password", STRONG),
            ("accept_terms", "1"),
            ("next", &field(&page.body, "next").expect("next carried")),
        ],
    );
    check("sign in", &r, 303);
    assert_eq!(
        r.header("location"),
        Some(next.as_str()),
        "{name}: back where it started"
    );

    let r = b.get("/index.html");
    check("page with a session", &r, 200);
    assert!(r.body.contains("THE PROTECTED PAGE /index.html"), "{name}");
    assert_eq!(r.header("x-seen-user"), Some("hugo"), "{name}");
    // A client's own X-Auth-User never reaches the app.
    let cookie = b.jar.header();
    let r = http(
        addr,
        "GET",
        "/index.html",
        &[
            ("Host", &host),
            ("Cookie", &cookie),
            ("X-Auth-User", "admin"),
        ],
        b"",
    );
    check("spoofed X-Auth-User", &r, 200);
    assert_eq!(r.header("x-seen-user"), Some("hugo"), "{name}");
    // hugo is not in staff.
    let hits = backend.hits();
    check("a staff page without the group", &b.get("/admin/"), 403);
    assert_eq!(
        backend.hits(),
        hits,
        "{name}: the app saw a refused request"
    );

    // Sign out through the portal: sent to sign in again, even with the old cookie.
    let home = b.get("/auth/");
    check("account page", &home, 200);
    let r = b.post(
        "/auth/logout",
        &[("csrf", &field(&home.body, "csrf").unwrap())],
    );
    check("sign out", &r, 303);
    check("page after logout", &b.get("/index.html"), 302);
    let r = http(
        addr,
        "GET",
        "/index.html",
        &[("Host", &host), ("Cookie", &cookie)],
        b"",
    );
    check("the old cookie", &r, 302);

    // gina is in staff.
    let mut g = Browser::new(addr);
    g.host = Some(host.clone());
    g.origin = Some(public.to_string());
    check(
        "gina signs in",
        &kit::form_login(&mut g, "/auth", "gina", STRONG),
        303,
    );
    let r = g.get("/admin/");
    check("a staff page with the group", &r, 200);
    assert!(r.body.contains("THE PROTECTED PAGE /admin/"), "{name}");
    assert_eq!(r.header("x-seen-groups"), Some("ops,staff"), "{name}");
}

#[test]
fn shipped_nginx_config_protects_an_app() {
    let env: Env = kit::provision();
    env.ctl(&["group", "add", "ops"]).ok();
    kit::add(&env, "gina", "school", "user", &["staff", "ops"]);
    kit::add(&env, "hugo", "school", "user", &[]);
    let port = kit::free_port();
    let d = example_authd(&env, port, "deny");
    let backend = Backend::start();
    let nginx = Nginx::start(d.port(), backend.port, port);
    let public = format!("http://app.example.org:{port}");
    journey("nginx", &nginx.addr(), &public, &backend, &|| {
        format!("--- nginx ---\n{}\n--- authd ---\n{}", nginx.log(), d.log())
    });
}

#[test]
fn shipped_caddyfile_protects_an_app() {
    let env: Env = kit::provision();
    env.ctl(&["group", "add", "ops"]).ok();
    kit::add(&env, "gina", "school", "user", &["staff", "ops"]);
    kit::add(&env, "hugo", "school", "user", &[]);
    let port = kit::free_port();
    let d = example_authd(&env, port, "deny");
    let backend = Backend::start();
    let caddy = Caddy::start(d.port(), backend.port, port);
    let public = format!("http://app.example.org:{port}");
    journey("caddy", &caddy.addr(), &public, &backend, &|| {
        format!("--- caddy ---\n{}\n--- authd ---\n{}", caddy.log(), d.log())
    });
}

/// One hostile request: the Host the client sends, the request target, and headers the
/// client adds. `unknown_host`: no rule or origin names the host, so only
/// `--forward-auth-default deny` refuses it.
struct Hostile {
    host: &'static str,
    uri: &'static str,
    extra: &'static [(&'static str, &'static str)],
    unknown_host: bool,
}

const fn at(host: &'static str, uri: &'static str) -> Hostile {
    Hostile {
        host,
        uri,
        extra: &[],
        unknown_host: false,
    }
}

const fn with(uri: &'static str, extra: &'static [(&'static str, &'static str)]) -> Hostile {
    Hostile {
        host: "app.example.org",
        uri,
        extra,
        unknown_host: false,
    }
}

const fn unknown(host: &'static str, uri: &'static str) -> Hostile {
    Hostile {
        host,
        uri,
        extra: &[],
        unknown_host: true,
    }
}

const APP: &str = "app.example.org";

/// Each case asks, one way or another, for `/admin/` on the app's host (needs staff),
/// `/finance/` on any host (needs ops), or a host nobody named.
const HOSTILE: &[Hostile] = &[
    // Paths: repeated slashes, encodings, dot segments, parameters, case.
    at(APP, "/admin/"),
    at(APP, "/admin"),
    at(APP, "//admin/"),
    at(APP, "///admin/"),
    at(APP, "/%2fadmin/"),
    at(APP, "/%2Fadmin/"),
    at(APP, "/admin%2f"),
    at(APP, "/public%2f..%2fadmin/"),
    at(APP, "/%5cadmin/"),
    at(APP, "/%5Cadmin/"),
    at(APP, "/\\admin/"),
    at(APP, "/%2e%2e/admin/"),
    at(APP, "/%2E%2E/admin/"),
    at(APP, "/public/%2e%2e/admin/"),
    at(APP, "/public/.%2e/admin/"),
    at(APP, "/public/%2e./admin/"),
    at(APP, "/public/../admin/"),
    at(APP, "/auth/../admin/"),
    at(APP, "/./admin/"),
    at(APP, "/%2e/admin/"),
    at(APP, "/admin/../admin/"),
    at(APP, "//%2e%2e//admin"),
    at(APP, "/admin%00/"),
    at(APP, "/%00/admin/"),
    at(APP, "/admin/%c0%af"),
    at(APP, "/%c0%ae%c0%ae/admin/"),
    at(APP, "/%e0%80%afadmin/"),
    at(APP, "/%zzadmin/"),
    at(APP, "/%admin/"),
    at(APP, "/admin/%2"),
    at(APP, "/%252fadmin/"),
    at(APP, "/%25%32%66admin/"),
    at(APP, "/admin;x=1/"),
    at(APP, "/admin;/"),
    at(APP, "/public/..;/admin/"),
    at(APP, "/;x/admin/"),
    at(APP, "/ADMIN/"),
    at(APP, "/Admin/x"),
    at(APP, "/%61dmin/"),
    at(APP, "/%41DMIN/"),
    at(APP, "/admin./"),
    at(APP, "/admin%20/"),
    at(APP, "/admin%2e/"),
    at(APP, "/admin?x=/public"),
    // The rule for every host.
    at(APP, "/finance/"),
    at(APP, "//finance/"),
    at(APP, "/FINANCE/q1"),
    at(APP, "/x/../finance/"),
    at(APP, "/%66inance/"),
    at(APP, "/finance;a=b/"),
    at("wiki.example.org", "//finance/"),
    // Hosts: case, trailing dots, ports.
    at("APP.EXAMPLE.ORG", "/admin/"),
    at("app.example.org.", "/admin/"),
    at("App.Example.Org.", "//admin/"),
    at("app.example.org:80", "/admin/"),
    at("app.example.org.:80", "/%61dmin/"),
    at("app.example.org..", "/admin/"),
    // Header families: a client's copies of the headers authd believes or ignores.
    with("/admin/", &[("X-Original-URL", "http://app.example.org/")]),
    with("/admin/", &[("X-Original-URL", "/")]),
    with("/admin/", &[("X-Forwarded-Uri", "/")]),
    with("/admin/", &[("X-Forwarded-Host", "other.example.org")]),
    with("/admin/", &[("X-Forwarded-Proto", "https")]),
    with(
        "/admin/",
        &[("X-Forwarded-Host", "app.example.org, other.example.org")],
    ),
    with(
        "/admin/",
        &[(
            "Forwarded",
            "for=1.2.3.4;host=other.example.org;proto=https",
        )],
    ),
    with("/admin/", &[("X-Rewrite-URL", "/")]),
    with("/admin/", &[("X-Forwarded-Prefix", "/public")]),
    with(
        "/admin/",
        &[
            ("X-Original-URL", "http://app.example.org/"),
            ("X-Forwarded-Uri", "/"),
        ],
    ),
    // Hosts nobody named.
    unknown("other.example.org", "/"),
    unknown("evil.example", "/admin/"),
    unknown("app.example.org.evil.example", "/"),
    unknown("localhost", "/"),
    unknown("127.0.0.1", "/"),
    unknown("xn--pp-example-org.example", "/"),
];

/// Requests a proxy would describe to authd for `case`: its own three headers, and the
/// client's extra headers, which a proxy passes on (Caddy and Traefik copy them all) —
/// after its own, or before them as a proxy that appends would.
fn described_as(case: &Hostile, client_first: bool) -> Vec<(&'static str, &'static str)> {
    let own = [
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", case.host),
        ("X-Forwarded-Uri", case.uri),
    ];
    let (a, b): (&[_], &[_]) = if client_first {
        (case.extra, &own)
    } else {
        (&own, case.extra)
    };
    [a, b].concat()
}

fn described(case: &Hostile) -> Vec<(&'static str, &'static str)> {
    described_as(case, false)
}

#[test]
fn hostile_urls_never_reach_a_protected_page() {
    let env: Env = kit::provision();
    env.ctl(&["group", "add", "ops"]).ok();
    kit::add(&env, "gina", "school", "user", &["staff", "ops"]);
    kit::add(&env, "hugo", "school", "user", &[]);
    assert!(
        HOSTILE.len() >= 60,
        "the table holds {} cases",
        HOSTILE.len()
    );
    let (nginx_port, caddy_port) = (kit::free_port(), kit::free_port());
    let d = example_authd(&env, nginx_port, "deny");
    let open = example_authd(&env, nginx_port, "allow");
    let backend = Backend::start();
    let nginx = Nginx::start(d.port(), backend.port, nginx_port);
    let caddy = Caddy::start(d.port(), backend.port, caddy_port);
    let hugo = format!("authd_session={}", api_session(&d, "hugo"));
    let gina = format!("authd_session={}", api_session(&d, "gina"));
    let diag = || {
        format!(
            "--- nginx ---\n{}\n--- caddy ---\n{}\n--- authd ---\n{}",
            nginx.log(),
            caddy.log(),
            d.log()
        )
    };

    // Positive controls: the right user passes, public pages stay public, a path that
    // only starts like a protected one is not protected.
    for (user, host, uri) in [
        (&gina, APP, "/admin/"),
        (&gina, APP, "//admin/"),
        (&gina, APP, "/finance/q1"),
        (&hugo, APP, "/"),
        (&hugo, APP, "/docs/a?b=1"),
        (&hugo, APP, "/administrator"),
        (&hugo, APP, "/public/admin/"),
        (&hugo, APP, "/financial"),
        (&hugo, APP, "/%70ublic/%7Eu/"),
    ] {
        let mut h = described(&at(host, uri));
        h.push(("Cookie", user));
        for daemon in [&d, &open] {
            let r = verify(daemon, &h);
            assert_eq!(r.status, 200, "direct {host}{uri}: {r:#?}\n{}", diag());
        }
        for (proxy, addr) in [("nginx", nginx.addr()), ("caddy", caddy.addr())] {
            let before = backend.hits();
            let r = http(&addr, "GET", uri, &[("Host", host), ("Cookie", user)], b"");
            assert_eq!(r.status, 200, "{proxy} {host}{uri}: {r:#?}\n{}", diag());
            assert!(
                r.body.starts_with("THE PROTECTED PAGE"),
                "{proxy} {host}{uri}"
            );
            assert_eq!(backend.hits(), before + 1);
        }
    }
    // A host nobody named: any signed-in user with `allow` (the groups of `*` rules
    // still needed), nobody with `deny`.
    for (user, uri, open_answer) in [
        (&gina, "/finance/", 200),
        (&hugo, "/", 200),
        (&hugo, "/finance/", 403),
    ] {
        let mut h = described(&at("wiki.example.org", uri));
        h.push(("Cookie", user));
        verify(&open, &h).status(open_answer);
        verify(&d, &h).status(403);
    }
    // Host names are normalised (Caddy itself refuses this one: its site is not matched).
    let mut h = described(&at("APP.example.org.", "/docs/"));
    h.push(("Cookie", &hugo));
    verify(&d, &h).status(200);
    // Signed out, a protected page asks for a sign-in, not a page.
    let r = verify(&d, &described(&at(APP, "/admin/")));
    assert_eq!(r.status, 401, "{r:#?}");

    // hugo lacks both groups: no hostile variant ever answers 200, and the app never
    // sees one.
    let mut failures = Vec::new();
    for case in HOSTILE {
        for client_first in [false, true] {
            let mut direct = described_as(case, client_first);
            direct.push(("Cookie", &hugo));
            for (mode, daemon) in [("deny", &d), ("allow", &open)] {
                if mode == "allow" && case.unknown_host {
                    continue;
                }
                let r = verify(daemon, &direct);
                if r.status == 200 {
                    failures.push(format!(
                        "authd ({mode}, client headers first: {client_first}): {} {} {:?}",
                        case.host, case.uri, case.extra
                    ));
                }
            }
        }
        for (proxy, addr) in [("nginx", nginx.addr()), ("caddy", caddy.addr())] {
            let mut h: Vec<(&str, &str)> = vec![("Host", case.host), ("Cookie", &hugo)];
            h.extend_from_slice(case.extra);
            let before = backend.hits();
            let r = http(&addr, "GET", case.uri, &h, b"");
            if r.status == 200 || backend.hits() != before {
                failures.push(format!(
                    "{proxy}: {} {} {:?} → {} {:?}",
                    case.host,
                    case.uri,
                    case.extra,
                    r.status,
                    r.body.lines().next()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "hostile variants got through:\n{}\n{}",
        failures.join("\n"),
        diag()
    );
}
