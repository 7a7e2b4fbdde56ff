//! Moving an existing site to PostgreSQL (issue 13): a SQLite deployment provisioned with
//! the real binaries and used through a real authd (terms accepted, a TOTP sign-in, an
//! emailed code with "remember this device"), copied with `authctl db copy --to
//! postgres://…` while that authd still serves, then a real authd on the copy (a private
//! PostgreSQL cluster) with the SQLite site's key file: the same passwords, authenticator
//! and remembered device sign in, the audit chain verifies, the users are the same, new
//! rows get new ids. Copying again into the now non-empty database is refused (exit 4)
//! and changes nothing.

use std::process::Command;

use serde_json::{json, Value};

use crate::common::*;
use crate::daemon_common::*;
use crate::pg::Pg;

const FROM: &str = "authd@example.org";

/// `authctl --db URL --key-file KEY ARGS…` against the copy.
fn on_copy(url: &str, key: &std::path::Path, args: &[&str]) -> Out {
    on_copy_stdin(url, key, args, None)
}

fn on_copy_stdin(url: &str, key: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Out {
    let mut cmd = authctl_cmd();
    cmd.arg("--db")
        .arg(url)
        .arg("--key-file")
        .arg(key)
        .args(args);
    run(cmd, stdin.map(str::as_bytes), TIMEOUT)
}

/// Sign in up to the second factor, accepting the terms when asked: the flow.
#[track_caller]
fn to_second_factor(d: &Daemon, user: &str) -> String {
    let mut v = d.login(user, PW).expect(200);
    if v["status"] == "terms_required" {
        let flow = v["flow"].as_str().expect("flow").to_string();
        v = d
            .post("/v1/login/terms", &json!({"flow": flow, "accept": true}))
            .expect(200);
    }
    assert_eq!(v["status"], "second_factor_required", "{v:#}");
    v["flow"].as_str().expect("flow").to_string()
}

/// Row counts of the copy's tables, as PostgreSQL reports them.
fn pg_counts(pg: &Pg) -> String {
    pg.psql(
        "authd",
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM audit), \
         (SELECT count(*) FROM devices), (SELECT count(*) FROM meta), \
         (SELECT max(id) FROM audit)",
    )
}

#[test]
fn a_sqlite_site_copied_to_postgres_signs_in_the_same() {
    let env = Env::sqlite();
    env.ctl(&["init"]).ok();
    // Terms once per version: the acceptances made on SQLite must hold on the copy.
    env.ctl(&[
        "policy",
        "set",
        "argon2.m_kib=1024",
        "argon2.t=1",
        "terms.mode=once_per_version",
    ])
    .ok();
    env.ctl(&["group", "add", "pupil-data", "--require-2fa"])
        .ok();
    env.ctl(&["org", "add", "school"]).ok();
    set_terms(&env, "2024-08", "Use pupil data for school purposes only.");
    add_user(&env, "ada", "school", &["pupil-data"], "user");
    let (mut app, _) = enroll_totp(&env, "ada");
    add_user(&env, "carol", "school", &["pupil-data"], "user");
    enroll_email(&env, "carol");

    // The site in use on SQLite: terms accepted, a TOTP sign-in, an emailed code with
    // "remember this device".
    let sink = SmtpSink::start();
    let smtp = sink.url();
    let d = Daemon::start(&env, &["--smtp-url", &smtp, "--mail-from", FROM]);
    let flow = to_second_factor(&d, "ada");
    d.totp(&flow, &app.fresh()).expect_status("authenticated");
    let flow = to_second_factor(&d, "carol");
    let code = sink.nth_code("carol@example.org", 0);
    let v = d
        .post(
            "/v1/login/email",
            &json!({"flow": flow, "code": code, "remember_device": true}),
        )
        .expect_status("authenticated");
    let device = v["device_token"]
        .as_str()
        .expect("a device token")
        .to_string();

    // The copy, while the SQLite authd still serves.
    let pg = Pg::start();
    let url = pg.url("authd");
    let copied = env.ctl(&["--json", "db", "copy", "--to", &url]).ok().json();
    drop(d);
    let tables = copied["tables"].as_object().expect("tables").clone();
    assert_eq!(copied["tables"]["users"], 2, "{copied:#}");
    assert_eq!(copied["tables"]["devices"], 1, "{copied:#}");
    assert_eq!(copied["tables"]["terms_acceptances"], 2, "{copied:#}");
    assert_eq!(copied["tables"]["totp_credentials"], 1, "{copied:#}");
    // The authenticator app keeps its id and name (migration 0009's columns).
    assert_eq!(
        pg.psql(
            "authd",
            "SELECT t.id, t.name FROM totp_credentials t JOIN users u ON u.id = t.user_id WHERE u.username = 'ada'",
        )
        .trim(),
        "1|Authenticator app"
    );
    assert_eq!(copied["tables"]["memberships"], 2, "{copied:#}");
    assert!(
        copied["tables"]["audit"].as_i64().unwrap_or(0) > 10,
        "{copied:#}"
    );
    let sum: i64 = tables.values().map(|n| n.as_i64().expect("a count")).sum();
    assert_eq!(copied["rows"], sum, "{copied:#}");
    // Every table of the schema is named, and the counts are what PostgreSQL holds.
    for (t, n) in &tables {
        let held: i64 = pg
            .psql("authd", &format!("SELECT count(*) FROM {t}"))
            .trim()
            .parse()
            .expect("a count");
        // The copy's own audit row is the one row more.
        let want = n.as_i64().expect("a count") + i64::from(t == "audit");
        let want = want + i64::from(t == "meta"); // the target's schema_version
        assert_eq!(held, want, "table {t}");
    }
    let pg_tables: i64 = pg
        .psql(
            "authd",
            "SELECT count(*) FROM information_schema.tables WHERE table_schema='public'",
        )
        .trim()
        .parse()
        .expect("a count");
    assert_eq!(pg_tables as usize, tables.len(), "every table is copied");

    // The same users, by the same authctl on either engine.
    let key = env.key();
    let users_sqlite = env.ctl(&["--json", "user", "list"]).ok().json();
    let users_pg = on_copy(&url, &key, &["--json", "user", "list"]).ok().json();
    assert_eq!(users_pg, users_sqlite);
    on_copy(&url, &key, &["audit", "verify"]).ok();
    on_copy(&url, &key, &["verify"]).ok();
    let copies: Vec<Value> = on_copy(
        &url,
        &key,
        &[
            "--json",
            "audit",
            "--limit",
            "0",
            "--event",
            "admin.db.copy",
        ],
    )
    .ok()
    .json_lines();
    assert_eq!(
        copies.len(),
        1,
        "the copy is audited in the copy: {copies:#?}"
    );

    // authd on the copy, with the SQLite site's key file.
    let mut cmd = Command::new(AUTHD);
    authd_clean_env(&mut cmd);
    cmd.arg("--db")
        .arg(&url)
        .arg("--key-file")
        .arg(&key)
        .args(["--listen", "127.0.0.1:0", "--rate-limit-per-minute", "0"])
        .args(["--smtp-url", &smtp, "--mail-from", FROM]);
    let d = Daemon::start_command(cmd);
    // The TOTP user: password and a code of the same authenticator (terms accepted on
    // SQLite are not asked again; the step used there stays used).
    let v = d.login("ada", PW).expect_status("second_factor_required");
    let flow = v["flow"].as_str().expect("flow").to_string();
    d.totp(&flow, &app.fresh()).expect_status("authenticated");
    // The emailed-code user: the remembered device skips the code, and no mail is sent.
    let v = d
        .login_device("carol", PW, &device)
        .expect_status("authenticated");
    assert_eq!(v["user"]["username"], "carol", "{v:#}");
    assert_eq!(
        sink.codes_to("carol@example.org").len(),
        1,
        "no second code was mailed"
    );
    // A wrong password is still refused.
    d.login_device("carol", "Wrong-password-1!", &device)
        .expect_generic();
    drop(d);

    // New rows get ids past the copied ones.
    let eve = on_copy_stdin(
        &url,
        &key,
        &[
            "--json",
            "user",
            "add",
            "eve",
            "--email",
            "eve@example.org",
            "--org",
            "school",
            "--password-stdin",
        ],
        Some(&format!("{PW}\n")),
    )
    .ok()
    .json();
    let max_copied = users_sqlite
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["id"].as_i64())
        .max()
        .expect("ids");
    assert!(eve["id"].as_i64().expect("id") > max_copied, "{eve:#}");
    on_copy(&url, &key, &["audit", "verify"]).ok();

    // Copying again into the now non-empty database is refused and changes nothing.
    let before = pg_counts(&pg);
    let out = env.ctl(&["--json", "db", "copy", "--to", &url]);
    out.fails(4).json_error("conflict");
    out.stderr_has("not empty");
    assert_eq!(pg_counts(&pg), before, "the refused copy changed nothing");
    on_copy(&url, &key, &["audit", "verify"]).ok();
}

#[test]
fn db_copy_refuses_another_schema_version_and_what_is_not_a_postgres_url() {
    let env = Env::sqlite();
    env.ctl(&["init"]).ok();
    env.ctl(&["db", "copy", "--to", "other.db"])
        .fails(2)
        .stderr_has("PostgreSQL URL");

    // A target at another schema version (another build's) is refused, untouched.
    let pg = Pg::start();
    pg.psql_file("authd", &repo_root().join("schema.postgres.sql"));
    let version = pg.psql(
        "authd",
        "SELECT value FROM meta WHERE key = 'schema_version'",
    );
    pg.psql(
        "authd",
        "UPDATE meta SET value = '7' WHERE key = 'schema_version'",
    );
    env.ctl(&["db", "copy", "--to", &pg.url("authd")])
        .fails(2)
        .stderr_has("schema version 7");
    assert_eq!(pg.psql("authd", "SELECT count(*) FROM meta").trim(), "1");
    assert_eq!(pg.psql("authd", "SELECT count(*) FROM audit").trim(), "0");

    // At this build's version, a schema without rows is an empty target: filled, and
    // the counts and the key file to give authd are printed.
    pg.psql(
        "authd",
        &format!(
            "UPDATE meta SET value = '{}' WHERE key = 'schema_version'",
            version.trim()
        ),
    );
    let out = env.ctl(&["db", "copy", "--to", &pg.url("authd")]);
    out.ok()
        .stdout_has("row counts checked")
        .stdout_has("audit")
        .stdout_has("--key-file");
    assert!(
        out.stdout.contains(&env.key().display().to_string()),
        "names the key file: {out:?}"
    );
}
