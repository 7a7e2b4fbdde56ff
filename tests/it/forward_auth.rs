//! Forward-auth, black-box: `GET /v1/auth/verify` over raw HTTP, then a real nginx
//! (Debian's package, on a free port of 127.0.0.1, its config and logs in a temporary
//! directory) with `auth_request` to authd protecting a static page, the portal served
//! by the same nginx below `/auth/` — as `deploy/forward-auth/nginx.conf` does.

use std::process::{Child, Command, Stdio};
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
        ],
    );
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
    // Traefik / Caddy style headers.
    let r = verify(
        &d,
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "app.example.org"),
            ("X-Forwarded-Uri", "/x"),
        ],
    );
    assert_eq!(
        r.header("x-auth-login-url"),
        Some("https://app.example.org/auth/login?next=https%3A%2F%2Fapp.example.org%2Fx")
    );
    // Bad or foreign tokens are simply not sessions.
    for bad in ["Bearer nope", "Bearer ", "Basic Zm9vOmJhcg=="] {
        verify(&d, &[("Authorization", bad)]).status(401);
    }
    verify(&d, &[("Cookie", "__Host-authd_session=not-a-session")]).status(401);

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
    ] {
        let url = format!("https://app.example.org{path}");
        verify(&d, &[("Cookie", &hugo_cookie), ("X-Original-URL", &url)]).status(403);
        verify(&d, &[("Cookie", &gina_cookie), ("X-Original-URL", &url)]).status(200);
    }
    for path in ["/", "/administrator", "/docs/admin"] {
        let url = format!("https://app.example.org{path}");
        verify(&d, &[("Cookie", &hugo_cookie), ("X-Original-URL", &url)]).status(200);
    }
    // Rules exist but the URL is unknown: closed.
    verify(&d, &[("Cookie", &hugo_cookie)]).status(403);

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

/// nginx, started in the foreground with its config, pid and logs in a temporary
/// directory; killed when dropped.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    /// nginx on 127.0.0.1:`port` in front of authd on `authd_port`.
    fn start(authd_port: u16, port: u16) -> Nginx {
        common::require("nginx", "nginx");
        let dir = tempfile::Builder::new()
            .prefix("authd-nginx-")
            .tempdir()
            .expect("temp dir");
        let p = dir.path();
        for sub in ["www/app", "www/api", "www/staff", "tmp"] {
            std::fs::create_dir_all(p.join(sub)).expect("mkdir");
        }
        std::fs::write(
            p.join("www/app/index.html"),
            "<!doctype html><title>app</title><p>THE PROTECTED PAGE</p>\n",
        )
        .expect("page");
        std::fs::write(p.join("www/api/data.json"), "{\"secret\":42}\n").expect("json");
        std::fs::write(p.join("www/staff/index.html"), "STAFF ONLY\n").expect("staff");
        let user = if common::is_root() {
            "user root;\n"
        } else {
            ""
        };
        let d = p.display();
        let conf = format!(
            r#"{user}worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    default_type text/html;
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;

        # The portal, on the same host below /auth/.
        location /auth/ {{
            proxy_pass http://127.0.0.1:{authd_port}/;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
        }}

        # The subrequest to authd: no body, the original URL in a header.
        location = /_authd_verify {{
            internal;
            proxy_pass http://127.0.0.1:{authd_port}/v1/auth/verify;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}

        # A page for people: signed out, they are sent to the sign-in page.
        location / {{
            auth_request /_authd_verify;
            auth_request_set $auth_user $upstream_http_x_auth_user;
            auth_request_set $auth_groups $upstream_http_x_auth_groups;
            auth_request_set $auth_login $upstream_http_x_auth_login_url;
            error_page 401 =302 $auth_login;
            add_header X-Seen-User $auth_user always;
            add_header X-Seen-Groups $auth_groups always;
            index index.html;
            root {d}/www/app;
        }}

        # A page that needs the staff group (--forward-auth-rule).
        location /staff/ {{
            auth_request /_authd_verify;
            auth_request_set $auth_login $upstream_http_x_auth_login_url;
            error_page 401 =302 $auth_login;
        }}

        # An API for scripts: a plain 401 without a session.
        location /api/ {{
            auth_request /_authd_verify;
        }}
    }}
}}
"#
        );
        let conf_path = p.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx.conf");
        let t = Command::new("nginx")
            .arg("-t")
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(p)
            .arg("-e")
            .arg(p.join("error.log"))
            .output()
            .expect("nginx -t");
        assert!(
            t.status.success(),
            "nginx -t failed: {}",
            String::from_utf8_lossy(&t.stderr)
        );
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(p)
            .arg("-e")
            .arg(p.join("error.log"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let n = Nginx { child, dir, port };
        kit::wait_for("nginx to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        n
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn error_log(&self) -> String {
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

#[test]
fn nginx_auth_request_protects_a_static_page() {
    let env: Env = kit::provision();
    kit::add(&env, "gina", "school", "user", &["staff"]);
    kit::add(&env, "hugo", "school", "user", &[]);
    // authd first (nginx needs its port), told where nginx publishes the portal: so a
    // free port for nginx is picked now.
    let nginx_port = kit::free_port();
    let public = format!("http://127.0.0.1:{nginx_port}");
    let d = Daemon::start(
        &env,
        &[
            "--trusted-proxy",
            "127.0.0.1",
            "--insecure-cookies",
            "--public-url",
            &format!("{public}/auth"),
            "--forward-auth-rule",
            &format!("127.0.0.1:{nginx_port}/staff=staff"),
        ],
    );
    let nginx = Nginx::start(d.port(), nginx_port);
    let addr = nginx.addr();
    let check = |what: &str, r: &kit::Resp, want: u16| {
        assert_eq!(
            r.status,
            want,
            "{what}: {r:#?}\n--- nginx error.log ---\n{}\n--- authd ---\n{}",
            nginx.error_log(),
            d.log()
        );
    };

    // Without a session: a person is sent to the sign-in page, a script gets 401.
    let mut b = Browser::new(&addr);
    let r = b.get("/index.html");
    check("page without a session", &r, 302);
    let next = format!("{public}/index.html");
    let login = format!(
        "{public}/auth/login?next={}",
        form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
    );
    assert_eq!(r.header("location"), Some(login.as_str()));
    assert!(!r.body.contains("THE PROTECTED PAGE"));
    check("api without a session", &b.get("/api/data.json"), 401);

    // Sign in through the portal, behind the same nginx, as a browser would.
    let path = login.trim_start_matches(&public).to_string();
    let page = b.get(&path);
    check("sign-in page through nginx", &page, 200);
    assert!(
        page.body.contains(r#"action="/auth/login""#),
        "links carry the prefix"
    );
    assert!(page.body.contains(r#"href="/auth/assets/portal.css""#));
    b.origin = Some(public.clone());
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
        "back where it started"
    );
    assert!(b.jar.get("authd_session").is_some());

    // With the session: the page, and nginx saw who it is.
    let r = b.get("/index.html");
    check("page with a session", &r, 200);
    assert!(r.body.contains("THE PROTECTED PAGE"));
    assert_eq!(r.header("x-seen-user"), Some("hugo"));
    check("api with a session", &b.get("/api/data.json"), 200);
    // hugo is not in staff.
    check(
        "staff page without the group",
        &b.get("/staff/index.html"),
        403,
    );

    // Sign out through the portal: 401 (and the redirect) again, even with the old cookie.
    let old = b.jar.get("authd_session").unwrap_or("").to_string();
    let home = b.get("/auth/");
    check("account page", &home, 200);
    let r = b.post(
        "/auth/logout",
        &[("csrf", &field(&home.body, "csrf").unwrap())],
    );
    check("sign out", &r, 303);
    assert_eq!(r.header("location"), Some("/auth/login?m=signed_out"));
    check("page after logout", &b.get("/index.html"), 302);
    check("api after logout", &b.get("/api/data.json"), 401);
    let stale = format!("authd_session={old}");
    check(
        "api with the old cookie",
        &http(&addr, "GET", "/api/data.json", &[("Cookie", &stale)], b""),
        401,
    );

    // gina is in staff.
    let mut g = Browser::new(&addr);
    g.origin = Some(public.clone());
    let r = kit::form_login(&mut g, "/auth", "gina", STRONG);
    check("gina signs in", &r, 303);
    let r = g.get("/staff/index.html");
    check("staff page with the group", &r, 200);
    assert!(r.body.contains("STAFF ONLY"));
    assert_eq!(g.get("/index.html").header("x-seen-groups"), Some("staff"));
}

#[test]
fn the_example_nginx_config_is_valid() {
    common::require("nginx", "nginx");
    let dir = tempfile::tempdir().expect("temp dir");
    let p = dir.path();
    std::fs::create_dir_all(p.join("tmp")).expect("mkdir");
    let example =
        std::fs::read_to_string(common::repo_root().join("deploy/forward-auth/nginx.conf"))
            .expect("deploy/forward-auth/nginx.conf");
    // Without TLS (no certificate here); everything else as shipped.
    let port = kit::free_port();
    let site: String = example
        .lines()
        .filter(|l| !l.trim_start().starts_with("ssl_certificate"))
        .map(|l| l.replace("listen 443 ssl;", &format!("listen 127.0.0.1:{port};")))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(site.contains("auth_request /_authd_verify;"));
    std::fs::write(p.join("site.conf"), site).expect("site.conf");
    let d = p.display();
    std::fs::write(
        p.join("nginx.conf"),
        format!(
            "pid {d}/nginx.pid;\nevents {{}}\nhttp {{\n access_log off;\n client_body_temp_path {d}/tmp/b;\n proxy_temp_path {d}/tmp/p;\n fastcgi_temp_path {d}/tmp/f;\n uwsgi_temp_path {d}/tmp/u;\n scgi_temp_path {d}/tmp/s;\n include {d}/site.conf;\n}}\n"
        ),
    )
    .expect("nginx.conf");
    let out = Command::new("nginx")
        .arg("-t")
        .arg("-c")
        .arg(p.join("nginx.conf"))
        .arg("-p")
        .arg(p)
        .arg("-e")
        .arg(p.join("error.log"))
        .output()
        .expect("nginx -t");
    assert!(
        out.status.success(),
        "deploy/forward-auth/nginx.conf is not valid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Caddy (Debian's package) with forward_auth, as deploy/forward-auth/Caddyfile does it.
#[test]
fn caddy_forward_auth_protects_a_static_page() {
    common::require("caddy", "caddy");
    let env = kit::provision();
    kit::add(&env, "hugo", "school", "user", &[]);
    let port = kit::free_port();
    let public = format!("http://127.0.0.1:{port}");
    let d = Daemon::start(
        &env,
        &[
            "--trusted-proxy",
            "127.0.0.1",
            "--insecure-cookies",
            "--public-url",
            &format!("{public}/auth"),
        ],
    );
    let dir = tempfile::Builder::new()
        .prefix("authd-caddy-")
        .tempdir()
        .expect("temp dir");
    let p = dir.path();
    std::fs::create_dir_all(p.join("www")).expect("www");
    std::fs::write(p.join("www/index.html"), "THE PROTECTED PAGE\n").expect("page");
    let (dp, authd) = (p.display(), d.port());
    let caddyfile = format!(
        "{{\n\tadmin off\n\tauto_https off\n\tstorage file_system {dp}/data\n}}\n\
http://127.0.0.1:{port} {{\n\
\thandle_path /auth/* {{\n\t\treverse_proxy 127.0.0.1:{authd}\n\t}}\n\
\thandle /whoami {{\n\t\tforward_auth 127.0.0.1:{authd} {{\n\t\t\turi /v1/auth/verify?redirect=1\n\t\t\tcopy_headers X-Auth-User X-Auth-Groups\n\t\t}}\n\t\trespond \"user={{http.request.header.X-Auth-User}}\" 200\n\t}}\n\
\thandle {{\n\t\tforward_auth 127.0.0.1:{authd} {{\n\t\t\turi /v1/auth/verify?redirect=1\n\t\t\tcopy_headers X-Auth-User X-Auth-Groups\n\t\t}}\n\t\troot * {dp}/www\n\t\tfile_server\n\t}}\n\
}}\n"
    );
    std::fs::write(p.join("Caddyfile"), caddyfile).expect("Caddyfile");
    let mut child = Command::new("caddy")
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
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let guard = Kill(&mut child);
    let log = || std::fs::read_to_string(p.join("caddy.log")).unwrap_or_default();
    kit::wait_for("caddy to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let addr = format!("127.0.0.1:{port}");
    let check = |what: &str, r: &kit::Resp, want: u16| {
        assert_eq!(
            r.status,
            want,
            "{what}: {r:#?}\n--- caddy ---\n{}\n--- authd ---\n{}",
            log(),
            d.log()
        );
    };

    // Signed out: a redirect to the sign-in page, with the way back.
    let mut b = Browser::new(&addr);
    let r = b.get("/index.html");
    check("page without a session", &r, 302);
    let next = format!("{public}/index.html");
    let login = format!(
        "{public}/auth/login?next={}",
        form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
    );
    assert_eq!(r.header("location"), Some(login.as_str()));
    // A client's own X-Auth-User gets it nowhere.
    let r = http(&addr, "GET", "/whoami", &[("X-Auth-User", "admin")], b"");
    check("spoofed header", &r, 302);

    // Sign in through the portal behind Caddy.
    b.origin = Some(public.clone());
    let r = kit::form_login(&mut b, "/auth", "hugo", STRONG);
    check("sign in", &r, 303);
    let r = b.get("/index.html");
    check("page with a session", &r, 200);
    assert!(r.body.contains("THE PROTECTED PAGE"));
    let cookie = b.jar.header();
    let r = http(
        &addr,
        "GET",
        "/whoami",
        &[("Cookie", &cookie), ("X-Auth-User", "admin")],
        b"",
    );
    check("whoami", &r, 200);
    assert_eq!(
        r.body.trim(),
        "user=hugo",
        "the app sees authd's answer only"
    );

    // Signed out again: redirected again.
    let home = b.get("/auth/");
    check("account page", &home, 200);
    let r = b.post(
        "/auth/logout",
        &[("csrf", &field(&home.body, "csrf").unwrap())],
    );
    check("sign out", &r, 303);
    check("page after logout", &b.get("/index.html"), 302);
    drop(guard);
}
