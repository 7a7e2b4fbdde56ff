//! `authd check-config` (issue 16): the settings read exactly as start-up reads them, every
//! problem named by its key, exit 1; a usable configuration exits 0 and prints the
//! effective settings with secrets redacted; nothing is created or changed.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::common::*;
use crate::daemon_common::authd_command;

/// `authd --db ENV --listen 127.0.0.1:0 --config FILE check-config EXTRA…` with `toml` as
/// the file and `vars` in the environment.
fn check(env: &Env, toml: &str, extra: &[&str], vars: &[(&str, &str)]) -> Out {
    let file = env.path("authd.toml");
    std::fs::write(&file, toml).unwrap();
    let mut cmd = authd_command(env, &["--config", file.to_str().unwrap(), "check-config"]);
    cmd.args(extra);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    run(cmd, None, Duration::from_secs(30))
}

#[track_caller]
fn names(out: &Out, problem: &str) {
    out.code(1).no_panic();
    out.stderr_has(&format!("problem: {problem}"));
}

#[test]
fn ten_broken_configurations_each_problem_named() {
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    // 1. A key the file does not know.
    names(
        &check(&env, "lsten = \"127.0.0.1:1\"\n", &[], &[]),
        "config: the config file",
    );
    // 2. A listen address that is not one (a flag after the word, over the file's).
    names(
        &check(&env, "", &["--listen", "nowhere"], &[]),
        "listen: \"nowhere\"",
    );
    // 3. The environment, read as start-up reads it.
    names(
        &check(&env, "", &[], &[("AUTHD_RATE_LIMIT_BURST", "0")]),
        "rate_limit_burst must be at least 1",
    );
    // 4. A log level that is not one.
    names(
        &check(&env, "log_level = \"loud==\"\n", &[], &[]),
        "invalid log_level",
    );
    // 5. A plain-http public URL with Secure cookies.
    names(
        &check(&env, "public_url = \"http://auth.example.org\"\n", &[], &[]),
        "public_url: http://auth.example.org is plain http",
    );
    // 6. A forward-auth rule without its group.
    names(
        &check(
            &env,
            "forward_auth_rules = [\"app.example.org/admin\"]\n",
            &[],
            &[],
        ),
        "forward_auth_rule \"app.example.org/admin\"",
    );
    // 7. Mail: an SMTP URL of another scheme, a sender that is no address.
    let out = check(
        &env,
        "smtp_url = \"gopher://mail.example.org\"\nmail_from = \"not an address\"\n",
        &[],
        &[],
    );
    names(&out, "smtp_url:");
    names(&out, "mail_from:");
    // 8. The metrics on the main listener's address, and a token file that is missing.
    let out = check(
        &env,
        "metrics_listen = \"127.0.0.1:8080\"\nmetrics_token_file = \"/nonexistent/token\"\n",
        &["--listen", "127.0.0.1:8080"],
        &[],
    );
    names(&out, "metrics_listen: 127.0.0.1:8080 is also listen");
    names(&out, "metrics_token_file:");
    // 9. Key files: another database's, one open to other users, none at all.
    let key = std::fs::read(env.key()).unwrap();
    let other = Env::init();
    std::fs::copy(other.key(), env.key()).unwrap();
    names(
        &check(&env, "", &[], &[]),
        "key_file: key 1 of the key file",
    );
    std::fs::write(env.key(), &key).unwrap();
    std::fs::set_permissions(env.key(), std::fs::Permissions::from_mode(0o644)).unwrap();
    names(&check(&env, "", &[], &[]), "key_file: ");
    check(&env, "", &[], &[]).stderr_has("mode 644");
    std::fs::rename(env.key(), env.path("moved.key")).unwrap();
    names(
        &check(&env, "", &[], &[]),
        "key_file: cannot read the key file",
    );
    std::fs::rename(env.path("moved.key"), env.key()).unwrap();
    std::fs::set_permissions(env.key(), std::fs::Permissions::from_mode(0o600)).unwrap();
    // 10. A database from a newer authd, and a database path in no directory.
    let c = rusqlite::Connection::open(&env.db).unwrap();
    c.pragma_update(None, "user_version", 999).unwrap();
    drop(c);
    names(&check(&env, "", &[], &[]), "db: ");
    check(&env, "", &[], &[]).stderr_has("schema version 999");
    names(
        &check(
            &env,
            "db = \"/nonexistent/dir/authd.db\"\n",
            &["--db", "/nonexistent/dir/authd.db"],
            &[],
        ),
        "db: the directory /nonexistent/dir",
    );

    // Everything at once: each named, counted.
    let out = check(
        &env,
        "log_level = \"loud==\"\nrequest_timeout_secs = 0\npublic_url = \"http://a.example\"\n\
         forward_auth_rules = [\"x\"]\n",
        &["--listen", "nowhere"],
        &[],
    );
    for p in [
        "invalid log_level",
        "request_timeout_secs must be between",
        "public_url:",
        "forward_auth_rule \"x\"",
        "listen: \"nowhere\"",
        "db: ",
    ] {
        names(&out, p);
    }
    out.stderr_has("6 problem(s)");
}

#[test]
fn a_usable_configuration_passes_redacted_and_creates_nothing() {
    let env = Env::init();
    let out = check(
        &env,
        "smtp_url = \"smtps://mailer:s3cret-pass@mail.example.org:465\"\n\
         public_url = \"https://auth.example.org/auth\"\n\
         trusted_proxies = [\"127.0.0.1\"]\n\
         forward_auth_rules = [\"app.example.org/admin=staff\"]\n",
        &[],
        &[],
    );
    out.ok()
        .stdout_has("smtps://mailer:***@mail.example.org:465");
    out.stdout_has("public_url               = https://auth.example.org/auth");
    out.stdout_has("forward_auth_rules       = app.example.org/admin=staff");
    assert!(!out.stdout.contains("s3cret"), "{}", out.stdout);
    out.stderr_has("the configuration is usable");
    // A database that does not exist yet is a note, and check-config does not create it.
    let fresh = env.path("later.db");
    let out = check(&env, "", &["--db", fresh.to_str().unwrap()], &[]);
    out.ok().stderr_has("note: db: ");
    assert!(!fresh.exists());
    assert!(!env.path("later.db.key").exists());
}
