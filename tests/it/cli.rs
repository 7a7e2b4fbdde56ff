//! Black-box tests of every authctl command: the real binary on a temporary database.
//! Happy paths, `--json` shapes, exit codes (API.md: 0 ok, 1 failure, 2 usage or invalid
//! input, 3 not found, 4 conflict, 5 rejected by policy) and bad input.
//!
//! Not covered here, and why:
//! - Lockout cannot be driven from the CLI alone (only logins fail); `unlock` is tested
//!   on an unlocked account. The daemon's tests cover locking.
//! - Prompts need a terminal: they run under `script(1)`, which gives the command a
//!   pseudo-terminal (see `tty_*`).

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use authcore::password::PasswordPolicy;
use serde_json::{json, Value};

use crate::common::*;

/// Every key of a user object (API.md / the CLI contract).
const USER_KEYS: &[&str] = &[
    "id",
    "username",
    "email",
    "org",
    "role",
    "status",
    "disabled",
    "locked_at",
    "locked_until",
    "failed_attempts",
    "unfamiliar_locked",
    "unfamiliar_locked_at",
    "unfamiliar_failures",
    "has_password",
    "password_changed_at",
    "must_change_password",
    "mfa_method",
    "groups",
    "group_requires_2fa",
    "created_at",
];

/// Every key of an audit row.
const AUDIT_KEYS: &[&str] = &[
    "id",
    "at",
    "time",
    "event",
    "outcome",
    "reason",
    "username",
    "user_id",
    "org",
    "ip",
    "user_agent",
    "actor",
    "detail",
];

/// A JSON scalar as text (policy values may be strings or numbers).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn names(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list:#}"))
        .iter()
        .map(|u| {
            u["username"]
                .as_str()
                .or_else(|| u["name"].as_str())
                .unwrap_or_else(|| panic!("no name in {u}"))
                .to_string()
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn unmet(password: &str) -> Vec<String> {
    PasswordPolicy::default()
        .check(password)
        .into_iter()
        .filter(|r| !r.met)
        .map(|r| r.description)
        .collect()
}

#[track_caller]
fn assert_user_shape(u: &Value) {
    assert_has_keys(u, USER_KEYS);
    assert!(u["id"].is_i64(), "id: {u:#}");
    assert!(u["username"].is_string(), "username: {u:#}");
    assert!(u["email"].is_string(), "email: {u:#}");
    assert!(u["org"].is_string(), "org: {u:#}");
    assert!(
        ["user", "org-admin", "admin"].contains(&u["role"].as_str().unwrap_or("")),
        "role: {u:#}"
    );
    assert!(
        ["active", "locked", "disabled"].contains(&u["status"].as_str().unwrap_or("")),
        "status: {u:#}"
    );
    for k in [
        "disabled",
        "has_password",
        "must_change_password",
        "group_requires_2fa",
    ] {
        assert!(u[k].is_boolean(), "{k}: {u:#}");
    }
    assert!(u["failed_attempts"].is_i64(), "failed_attempts: {u:#}");
    assert!(u["groups"].is_array(), "groups: {u:#}");
    assert!(
        u["mfa_method"].is_null()
            || ["totp", "email"].contains(&u["mfa_method"].as_str().unwrap_or("")),
        "mfa_method: {u:#}"
    );
    assert!(!u["created_at"].is_null(), "created_at: {u:#}");
}

// ---------------------------------------------------------------------------------------
// init, the database file, global flags
// ---------------------------------------------------------------------------------------

#[test]
fn init_creates_database_and_private_key_file() {
    let env = Env::empty();
    let v = env.json(&["init"]);
    assert_has_keys(&v, &["db", "key_file", "schema_version"]);
    assert!(v["schema_version"].is_i64(), "{v:#}");
    assert!(
        v["db"].as_str().is_some_and(|s| s.ends_with("authd.db")),
        "{v:#}"
    );
    assert!(
        v["key_file"]
            .as_str()
            .is_some_and(|s| s.ends_with("authd.db.key")),
        "{v:#}"
    );
    assert!(env.db.is_file());
    let key = env.key();
    assert!(key.is_file(), "no key file at {}", key.display());
    let mode = key.metadata().unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "key file mode {mode:o}");
    // The database is not readable by others either (umask 077).
    let db_mode = env.db.metadata().unwrap().permissions().mode() & 0o777;
    assert_eq!(
        db_mode & 0o077,
        0,
        "database mode {db_mode:o} is readable by others"
    );
}

#[test]
fn init_refuses_to_overwrite() {
    let env = Env::init_default();
    let key_before = std::fs::read(env.key()).unwrap();
    env.ctl(&["init"]).fails(4);
    env.ctl_json(&["init"]).code(4).json_error("conflict");
    assert_eq!(
        std::fs::read(env.key()).unwrap(),
        key_before,
        "the key file was overwritten"
    );
    // The database still works with its key.
    env.ctl(&["user", "list"]).ok();

    // A key file alone is not overwritten either.
    let env2 = Env::empty();
    std::fs::write(env2.key(), b"precious").unwrap();
    env2.ctl(&["init"]).fails(4);
    assert_eq!(std::fs::read(env2.key()).unwrap(), b"precious");
}

#[test]
fn init_with_a_chosen_key_file() {
    let env = Env::empty();
    let key = env.path("elsewhere.key");
    let key_s = key.to_str().unwrap();
    let v = env.json(&["--key-file", key_s, "init"]);
    assert_eq!(v["key_file"].as_str(), Some(key_s), "{v:#}");
    assert!(key.is_file());
    assert!(!env.key().exists(), "the default key file was created too");
    let mode = key.metadata().unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    env.ctl(&[
        "--key-file",
        key_s,
        "policy",
        "set",
        "argon2.m_kib=1024",
        "argon2.t=1",
    ])
    .ok();
    env.ctl_stdin(
        &[
            "--key-file",
            key_s,
            "user",
            "add",
            "alice",
            "--email",
            "a@example.org",
            "--password-stdin",
        ],
        &format!("{STRONG}\n"),
    )
    .ok();
    // Enrolment encrypts with the key: it works with the chosen key file…
    env.ctl(&["--key-file", key_s, "enroll", "alice", "--no-qr"])
        .ok();
    // …and refuses without it (DB.key does not exist), with a clear error.
    let out = env.ctl(&["enroll", "alice", "--no-qr"]);
    assert_ne!(out.code, Some(0), "enrolled without the key file: {out:?}");
    out.no_panic();
}

#[test]
fn every_command_on_a_missing_database_points_to_init() {
    let env = Env::empty();
    let cases: &[&[&str]] = &[
        &["user", "list"],
        &["user", "show", "alice"],
        &["user", "add", "alice", "--email", "a@example.org"],
        &["user", "delete", "alice", "--yes"],
        &["passwd", "alice", "--expire"],
        &["enroll", "alice"],
        &["totp", "test", "alice", "123456"],
        &["reset-2fa", "alice"],
        &["unlock", "alice"],
        &["audit"],
        &["org", "list"],
        &["org", "add", "acme"],
        &["group", "list"],
        &["policy", "show"],
        &["policy", "set", "totp.skew=1"],
    ];
    for args in cases {
        let out = env.ctl(args);
        out.fails(3).stderr_has("authctl init");
        assert!(!env.db.exists(), "{args:?} created the database");
    }
    env.ctl_json(&["user", "list"])
        .code(3)
        .json_error("not_found");
}

#[test]
fn db_from_environment_and_default_path() {
    let env = Env::empty();
    // AUTHCTL_DB
    let mut cmd = authctl_cmd();
    cmd.env("AUTHCTL_DB", &env.db).args(["--json", "init"]);
    let out = run(cmd, None, TIMEOUT);
    out.ok();
    assert!(env.db.is_file(), "AUTHCTL_DB was not used");

    // The default: ./authd.db in the working directory.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = authctl_cmd();
    cmd.current_dir(dir.path()).arg("init");
    run(cmd, None, TIMEOUT).ok();
    assert!(dir.path().join("authd.db").is_file());
    assert!(dir.path().join("authd.db.key").is_file());

    // --db wins over AUTHCTL_DB.
    let other = Env::empty();
    let mut cmd = authctl_cmd();
    cmd.env("AUTHCTL_DB", &env.db)
        .arg("--db")
        .arg(&other.db)
        .arg("init");
    run(cmd, None, TIMEOUT).ok();
    assert!(other.db.is_file());
}

#[test]
fn a_file_that_is_not_a_database_is_refused() {
    let env = Env::empty();
    let content = b"this is a text file, not a database\n".repeat(200);
    std::fs::write(&env.db, &content).unwrap();
    for args in [&["user", "list"][..], &["policy", "show"], &["audit"]] {
        env.ctl(args).fails(2).stderr_has("not");
    }
    env.ctl_json(&["user", "list"])
        .code(2)
        .json_error("invalid_input");
    assert_eq!(
        std::fs::read(&env.db).unwrap(),
        content,
        "the file was modified"
    );

    // An SQLite database that is not authd's is not taken over either.
    let foreign = Env::empty();
    {
        let c = rusqlite::Connection::open(&foreign.db).unwrap();
        c.execute_batch("CREATE TABLE notes(body TEXT); INSERT INTO notes VALUES ('hi');")
            .unwrap();
    }
    foreign.ctl(&["user", "list"]).fails(2);
    let c = rusqlite::Connection::open(&foreign.db).unwrap();
    let tables: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type='table'",
            (),
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1, "authctl added its schema to a foreign database");
}

/// The database file and SQLite's side files beside it (-wal, -shm, -journal) that exist.
fn db_files(env: &Env) -> Vec<String> {
    ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|suffix| format!("{}{suffix}", env.db.display()))
        .filter(|p| std::path::Path::new(p).exists())
        .collect()
}

#[test]
fn a_zero_length_database_file_is_refused_and_stays_empty() {
    // Only `init` creates a database: any other command on an empty file (a truncated
    // database, a wrong --db) says so and leaves it as it is, side files included.
    let env = Env::empty();
    std::fs::write(&env.db, b"").unwrap();
    let cases: &[&[&str]] = &[
        &["user", "list"],
        &["user", "show", "x"],
        &["audit"],
        &["org", "list"],
        &["policy", "show"],
        &["terms", "show"],
        &["user", "add", "alice", "--email", "a@example.org"],
        &["org", "add", "acme"],
        &["group", "delete", "staff", "--yes"],
    ];
    for args in cases {
        env.ctl(args)
            .fails(2)
            .stderr_has("empty")
            .stderr_has("not an authd database")
            .stderr_has("authctl init");
        assert_eq!(
            std::fs::metadata(&env.db).unwrap().len(),
            0,
            "{args:?} wrote to the empty file"
        );
        assert_eq!(
            db_files(&env),
            vec![env.db.display().to_string()],
            "{args:?} left SQLite side files"
        );
    }
    env.ctl_json(&["user", "list"])
        .code(2)
        .json_error("invalid_input");
    // init refuses to overwrite it (as any existing file), and says it is empty.
    env.ctl(&["init"])
        .fails(4)
        .stderr_has("already exists")
        .stderr_has("empty file");
    assert_eq!(std::fs::metadata(&env.db).unwrap().len(), 0);
    assert!(
        !env.key().exists(),
        "init made a key file for a refused database"
    );
    // Once removed, init creates the database there.
    std::fs::remove_file(&env.db).unwrap();
    env.ctl(&["init"]).ok();
    env.ctl(&["user", "list"]).ok();

    // An SQLite file without any schema (no tables, user_version 0) is not taken over.
    let blank = Env::empty();
    {
        let c = rusqlite::Connection::open(&blank.db).unwrap();
        c.execute_batch("CREATE TABLE t(x); DROP TABLE t;").unwrap();
    }
    let before = std::fs::read(&blank.db).unwrap();
    assert!(!before.is_empty());
    for args in [&["user", "list"][..], &["audit"], &["user", "show", "x"]] {
        blank
            .ctl(args)
            .fails(2)
            .stderr_has("not an authd database")
            .stderr_has("authctl init");
    }
    assert_eq!(
        std::fs::read(&blank.db).unwrap(),
        before,
        "the blank SQLite file was modified"
    );
    assert_eq!(db_files(&blank), vec![blank.db.display().to_string()]);
}

/// How to make a database read-only for the command under test.
enum ReadOnly {
    /// Not root: plain file modes stop us.
    Modes,
    /// Root in a private mount namespace: bind-mount the directory read-only (EROFS even
    /// for root).
    Mount,
    /// Root without mount rights: run as `nobody` on files it owns but may not write.
    Nobody,
}

/// Can we bind-mount a directory read-only in a private mount namespace (root, not in a
/// container that forbids it)?
fn can_mount_read_only() -> bool {
    if !is_root() || !have("unshare") {
        return false;
    }
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "d=$(mktemp -d) || exit 1; trap 'umount \"$d\" 2>/dev/null; rmdir \"$d\"' EXIT; \
             mount --bind \"$d\" \"$d\" && mount -o remount,bind,ro \"$d\" \"$d\" \
             && ! touch \"$d/x\" 2>/dev/null",
        )
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Run authctl with `args` on `env`'s database made read-only by `how`.
fn run_read_only(env: &Env, how: &ReadOnly, args: &[&str]) -> Out {
    let dir = env.dir.path();
    let mut ctl_args: Vec<String> = vec![
        AUTHCTL.into(),
        "--db".into(),
        env.db.to_str().unwrap().into(),
    ];
    ctl_args.extend(args.iter().map(|s| s.to_string()));
    let out = match how {
        ReadOnly::Modes => {
            chmod_tree(dir, 0o444, 0o555);
            let out = run(env.cmd(args), None, TIMEOUT);
            chmod_tree(dir, 0o600, 0o700);
            out
        }
        ReadOnly::Mount => {
            let d = dir.to_str().unwrap();
            let script = format!(
                "mount --bind '{d}' '{d}' && mount -o remount,bind,ro '{d}' '{d}' && exec \"$@\""
            );
            let mut cmd = Command::new("unshare");
            cmd.args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
                "sh",
            ])
            .args(&ctl_args)
            .env_remove("AUTHCTL_DB")
            .env_remove("AUTHCTL_KEY_FILE");
            run(cmd, None, TIMEOUT)
        }
        ReadOnly::Nobody => {
            // nobody owns the files (so it can read the 0600 key) but has no write bit.
            chown_tree(dir, 65534);
            chmod_tree(dir, 0o444, 0o555);
            let mut cmd = Command::new("setpriv");
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .args(&ctl_args)
                .env_remove("AUTHCTL_DB")
                .env_remove("AUTHCTL_KEY_FILE");
            let out = run(cmd, None, TIMEOUT);
            chown_tree(dir, 0);
            chmod_tree(dir, 0o600, 0o700);
            out
        }
    };
    out
}

fn chmod_tree(dir: &std::path::Path, file_mode: u32, dir_mode: u32) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(file_mode)).unwrap();
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dir_mode)).unwrap();
}

fn chown_tree(dir: &std::path::Path, uid: u32) {
    for e in std::fs::read_dir(dir).unwrap() {
        std::os::unix::fs::chown(e.unwrap().path(), Some(uid), Some(uid)).unwrap();
    }
    std::os::unix::fs::chown(dir, Some(uid), Some(uid)).unwrap();
}

/// Write commands on a read-only database fail with exit 1 and an error that says so, and
/// change nothing. Read commands either work or fail the same clear way.
fn check_read_only(how: ReadOnly) {
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    let before = env.json(&["user", "list"]);
    let policy_before = env.json(&["policy", "show"]);
    let audit_before = env.audit(&[]).len();
    let says_read_only = |out: &Out| {
        let e = out.stderr.to_lowercase();
        e.contains("read-only") || e.contains("readonly") || e.contains("read only")
    };

    let writes: &[&[&str]] = &[
        &["user", "add", "bob", "--email", "b@example.org"],
        &["user", "disable", "alice"],
        &["passwd", "alice", "--expire"],
        &["enroll", "alice"],
        &["org", "add", "acme"],
        &["policy", "set", "lockout.max_failures=3"],
    ];
    for args in writes {
        let out = run_read_only(&env, &how, args);
        out.fails(1);
        assert!(
            says_read_only(&out),
            "the error does not say the database is read-only: {out:?}"
        );
    }
    let reads: &[&[&str]] = &[&["user", "list"], &["user", "show", "alice"], &["audit"]];
    for args in reads {
        let out = run_read_only(&env, &how, args);
        if out.code != Some(0) {
            out.fails(1);
            assert!(
                says_read_only(&out),
                "a read fails without saying why: {out:?}"
            );
        }
    }
    // Nothing changed, and the database still works once writable again.
    assert_eq!(env.json(&["user", "list"]), before);
    assert_eq!(env.json(&["policy", "show"]), policy_before);
    assert_eq!(env.audit(&[]).len(), audit_before, "audit rows were added");
    env.json(&["user", "disable", "alice"]);
}

#[test]
fn a_read_only_database_file_fails_clearly_and_changes_nothing() {
    // Root ignores file modes: then the command runs as `nobody`.
    if is_root() {
        require("setpriv", "util-linux");
        check_read_only(ReadOnly::Nobody);
    } else {
        check_read_only(ReadOnly::Modes);
    }
}

#[test]
fn a_database_on_a_read_only_filesystem_fails_clearly_and_changes_nothing() {
    if !can_mount_read_only() {
        eprintln!(
            "note: not root or no mount namespaces here; the file-mode test covers read-only"
        );
        return;
    }
    check_read_only(ReadOnly::Mount);
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::init();
    let cases: &[&[&str]] = &[
        &[],
        &["frobnicate"],
        &["user"],
        &["user", "add", "alice"],
        &[
            "user",
            "add",
            "alice",
            "--email",
            "a@example.org",
            "--role",
            "god",
        ],
        &[
            "user",
            "add",
            "alice",
            "--email",
            "a@example.org",
            "--password-stdin",
            "--generate-password",
        ],
        &["enroll", "alice", "--method", "sms"],
        &["audit", "--limit", "many"],
        &["audit", "--format", "xml"],
        &["audit", "--outcome", "maybe"],
        &["policy", "set"],
        &["generate", "completions", "tcsh"],
        &["totp", "test", "alice"],
    ];
    for args in cases {
        env.ctl(args).fails(2);
    }
    authctl_help_works();
}

fn authctl_help_works() {
    let out = run(
        {
            let mut c = authctl_cmd();
            c.arg("--help");
            c
        },
        None,
        TIMEOUT,
    );
    out.ok().stdout_has("Usage");
    let out = run(
        {
            let mut c = authctl_cmd();
            c.arg("--version");
            c
        },
        None,
        TIMEOUT,
    );
    out.ok().stdout_has(env!("CARGO_PKG_VERSION"));
}

// ---------------------------------------------------------------------------------------
// user add
// ---------------------------------------------------------------------------------------

#[test]
fn user_add_json_shape() {
    let env = Env::init();
    let u = env.add_user("alice", STRONG, &[]);
    assert_user_shape(&u);
    assert_eq!(u["username"], "alice");
    assert_eq!(u["email"], "alice@example.org");
    assert_eq!(u["role"], "user");
    assert_eq!(u["status"], "active");
    assert_eq!(u["disabled"], false);
    assert_eq!(u["locked_at"], Value::Null);
    assert_eq!(u["failed_attempts"], 0);
    assert_eq!(u["has_password"], true);
    assert!(!u["password_changed_at"].is_null(), "{u:#}");
    assert_eq!(u["must_change_password"], false);
    assert_eq!(u["mfa_method"], Value::Null);
    assert_eq!(u["groups"], json!([]));
    assert_eq!(u["group_requires_2fa"], false);
    assert!(u.get("generated_password").is_none(), "{u:#}");
    assert!(
        u["org"].as_str().is_some_and(|o| !o.is_empty()),
        "every user has an org: {u:#}"
    );
    // The password never appears in any output.
    let shown = env
        .ctl(&["--json", "user", "show", "alice"])
        .ok()
        .stdout
        .clone();
    assert!(!shown.contains(STRONG));
}

#[test]
fn user_add_table_output() {
    let env = Env::init();
    let out = env.ctl_stdin(
        &[
            "user",
            "add",
            "alice",
            "--email",
            "alice@example.org",
            "--password-stdin",
        ],
        &format!("{STRONG}\n"),
    );
    out.ok().stdout_has("alice");
    assert!(
        !out.stdout.contains(STRONG),
        "the password was printed: {out:?}"
    );
    env.ctl(&["user", "list"])
        .ok()
        .stdout_has("alice@example.org");
    env.ctl(&["user", "show", "alice"])
        .ok()
        .stdout_has("alice@example.org");
}

#[test]
fn user_add_without_a_password_and_without_a_tty_does_not_hang() {
    let env = Env::init();
    let out = run(
        env.cmd(&["--json", "user", "add", "alice", "--email", "a@example.org"]),
        None,
        Duration::from_secs(10),
    );
    out.ok();
    let u = out.json();
    assert_eq!(u["has_password"], false, "{u:#}");
    assert_eq!(u["password_changed_at"], Value::Null, "{u:#}");
}

#[test]
fn user_add_reads_one_line_from_stdin() {
    let env = Env::init();
    // Only the first line is the password: no confirmation line is read from stdin.
    let u = env.json_stdin(
        &[
            "user",
            "add",
            "alice",
            "--email",
            "a@example.org",
            "--password-stdin",
        ],
        &format!("{STRONG}\nsomething else\n"),
    );
    assert_eq!(u["has_password"], true);
    // A password without a trailing newline works too.
    let u = env.json_stdin(
        &[
            "user",
            "add",
            "bob",
            "--email",
            "b@example.org",
            "--password-stdin",
        ],
        STRONG,
    );
    assert_eq!(u["has_password"], true);
}

#[test]
fn user_add_generate_password() {
    let env = Env::init();
    let u = env.json(&[
        "user",
        "add",
        "alice",
        "--email",
        "a@example.org",
        "--generate-password",
    ]);
    assert_eq!(u["has_password"], true);
    let pw = u["generated_password"]
        .as_str()
        .unwrap_or_else(|| panic!("no generated_password: {u:#}"));
    assert!(
        unmet(pw).is_empty(),
        "generated password {pw:?} breaks the policy: {:?}",
        unmet(pw)
    );
    assert!(
        pw.chars().count() >= 12,
        "generated password {pw:?} is short"
    );
    // Two generated passwords differ.
    let u2 = env.json(&[
        "user",
        "add",
        "bob",
        "--email",
        "b@example.org",
        "--generate-password",
    ]);
    assert_ne!(u2["generated_password"], u["generated_password"]);
    // Table mode prints it once too.
    let out = env.ctl(&[
        "user",
        "add",
        "carol",
        "--email",
        "c@example.org",
        "--generate-password",
    ]);
    out.ok();
    assert!(
        out.stdout.lines().any(|l| l
            .split_whitespace()
            .any(|w| unmet(w).is_empty() && w.len() >= 12)),
        "the generated password is not printed: {out:?}"
    );
}

#[test]
fn user_add_must_change_password_and_roles() {
    let env = Env::init();
    let u = env.add_user("alice", STRONG, &["--must-change-password"]);
    assert_eq!(u["must_change_password"], true);
    for (i, role) in ["user", "org-admin", "admin"].iter().enumerate() {
        let name = format!("r{i}");
        let u = env.add_user(&name, STRONG, &["--role", role]);
        assert_eq!(u["role"], *role, "{u:#}");
    }
}

#[test]
fn user_add_with_org_and_groups() {
    let env = Env::init();
    env.json(&["org", "add", "acme"]);
    env.json(&["group", "add", "staff"]);
    env.json(&["group", "add", "pupil-data", "--require-2fa"]);
    let u = env.add_user(
        "alice",
        STRONG,
        &["--org", "acme", "--group", "staff", "--group", "pupil-data"],
    );
    assert_eq!(u["org"], "acme");
    let groups: BTreeSet<String> = u["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap().to_string())
        .collect();
    assert_eq!(groups, set(&["staff", "pupil-data"]));
    assert_eq!(u["group_requires_2fa"], true);
    let bob = env.add_user("bob", STRONG, &["--group", "staff"]);
    assert_eq!(bob["group_requires_2fa"], false);
}

#[test]
fn user_add_unknown_org_or_group_is_not_found() {
    let env = Env::init();
    let cases: &[&[&str]] = &[&["--org", "nowhere"], &["--group", "nogroup"]];
    for extra in cases {
        let mut args = vec!["user", "add", "alice", "--email", "a@example.org"];
        args.extend_from_slice(extra);
        env.ctl(&args).fails(3);
        env.ctl_json(&args).code(3).json_error("not_found");
        env.ctl(&["user", "show", "alice"]).fails(3);
    }
}

#[test]
fn user_add_weak_passwords_name_each_unmet_rule() {
    let env = Env::init();
    let long = format!("Aa1!{}", "x".repeat(1021));
    let cases: &[&str] = &[
        "short",
        "alllowercase",
        "ALLUPPERCASE1!",
        "NoDigitsHere!",
        "NoSpecial123",
        "Sh0rt!",
        "12345678",
        &long,
        "Tab\tin-Passw0rd",
        "Bell\u{7}Passw0rd!",
    ];
    for (i, pw) in cases.iter().enumerate() {
        let want = unmet(pw);
        assert!(!want.is_empty(), "test case {pw:?} is not weak");
        let name = format!("weak{i}");
        let args = [
            "user",
            "add",
            &name,
            "--email",
            "w@example.org",
            "--password-stdin",
        ];
        let out = env.ctl_stdin(&args, &format!("{pw}\n"));
        out.fails(5);
        for rule in &want {
            out.stderr_has(rule);
        }
        // --json: the error, and every rule with met/unmet (a UI's checklist).
        let mut jargs = vec!["--json"];
        jargs.extend_from_slice(&args);
        let out = env.ctl_stdin(&jargs, &format!("{pw}\n"));
        let v = out.code(5).json_error("policy_rejected");
        let rules = serde_json::to_value(PasswordPolicy::default().check(pw)).unwrap();
        assert_eq!(v["rules"], rules, "rules for {pw:?}: {out:?}");
        // Nothing was created.
        env.ctl(&["user", "show", &name]).fails(3);
    }
}

#[test]
fn user_add_duplicates_conflict() {
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    for dup in [
        "alice",
        "Alice",
        "ALICE",
        " alice ",
        "ＡＬＩＣＥ",
        "ａｌｉｃｅ",
    ] {
        let args = ["user", "add", dup, "--email", "other@example.org"];
        env.ctl(&args).fails(4);
        let mut jargs = vec!["--json"];
        jargs.extend_from_slice(&args);
        env.ctl(&jargs).code(4).json_error("conflict");
    }
    let list = env.json(&["user", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    // Lookups are case-insensitive and normalised too.
    for spelling in ["ALICE", "ａｌｉｃｅ"] {
        let u = env.json(&["user", "show", spelling]);
        assert_eq!(u["username"], "alice");
    }
}

#[test]
fn user_add_bad_emails_are_invalid_input() {
    let env = Env::init();
    let cases = [
        "",
        "nobody",
        "a@b",
        "a b@example.org",
        "@example.org",
        "alice@",
        "a@@example.org",
        "a@example..org",
        "<a@example.org>",
        "a@example.org\nb@example.org",
    ];
    for (i, email) in cases.iter().enumerate() {
        let name = format!("u{i}");
        env.ctl(&["user", "add", &name, "--email", email]).fails(2);
        env.ctl(&["--json", "user", "add", &name, "--email", email])
            .code(2)
            .json_error("invalid_input");
        env.ctl(&["user", "show", &name]).fails(3);
    }
}

#[test]
fn user_add_bad_usernames_are_invalid_input() {
    let env = Env::init();
    let too_long = "a".repeat(65);
    let cases = [
        "bad name",
        "tab\tname",
        "bell\u{7}",
        "new\nline",
        "",
        "   ",
        "a/b",
        "<script>",
        &too_long,
    ];
    for name in cases {
        env.ctl(&["user", "add", name, "--email", "a@example.org"])
            .fails(2);
    }
    assert_eq!(env.json(&["user", "list"]), json!([]));
    // 64 characters and the allowed punctuation are fine.
    env.json(&["user", "add", &"a".repeat(64), "--email", "a@example.org"]);
    env.json(&[
        "user",
        "add",
        "j.doe-1_x@site+tag",
        "--email",
        "j@example.org",
    ]);
}

// ---------------------------------------------------------------------------------------
// user list / show / set / disable / enable / delete
// ---------------------------------------------------------------------------------------

#[test]
fn user_list_and_filters() {
    let env = Env::init();
    assert_eq!(env.json(&["user", "list"]), json!([]));
    env.json(&["org", "add", "acme"]);
    env.json(&["group", "add", "staff"]);
    env.add_user("alice", STRONG, &["--org", "acme", "--group", "staff"]);
    env.add_user("bob", STRONG, &[]);
    env.add_user("carol", STRONG, &["--org", "acme"]);
    let all = env.json(&["user", "list"]);
    for u in all.as_array().unwrap() {
        assert_user_shape(u);
    }
    assert_eq!(names(&all), set(&["alice", "bob", "carol"]));
    assert_eq!(
        names(&env.json(&["user", "list", "--org", "acme"])),
        set(&["alice", "carol"])
    );
    assert_eq!(
        names(&env.json(&["user", "list", "--group", "staff"])),
        set(&["alice"])
    );
    assert_eq!(env.json(&["user", "list", "--locked"]), json!([]));
    assert_eq!(
        names(&env.json(&["user", "list", "--org", "acme", "--group", "staff"])),
        set(&["alice"])
    );
    env.ctl(&["user", "list", "--org", "nowhere"]).fails(3);
    env.ctl(&["user", "list", "--group", "nogroup"]).fails(3);
}

#[test]
fn user_show_includes_recovery_codes_remaining() {
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    let u = env.json(&["user", "show", "alice"]);
    assert_user_shape(&u);
    assert_eq!(u["recovery_codes_remaining"], 0, "{u:#}");
    env.enroll("alice");
    let u = env.json(&["user", "show", "alice"]);
    assert_eq!(u["recovery_codes_remaining"], 10, "{u:#}");
    assert_eq!(u["mfa_method"], "totp");
    env.ctl(&["user", "show", "ghost"]).fails(3);
    env.ctl_json(&["user", "show", "ghost"])
        .code(3)
        .json_error("not_found");
}

#[test]
fn user_set_changes_fields() {
    let env = Env::init();
    env.json(&["org", "add", "beta"]);
    env.json(&["group", "add", "staff"]);
    env.json(&["group", "add", "ops", "--require-2fa"]);
    env.add_user("alice", STRONG, &[]);

    let u = env.json(&["user", "set", "alice", "--email", "new@example.org"]);
    assert_user_shape(&u);
    assert_eq!(u["email"], "new@example.org");
    let u = env.json(&["user", "set", "alice", "--org", "beta"]);
    assert_eq!(u["org"], "beta");
    let u = env.json(&["user", "set", "alice", "--role", "org-admin"]);
    assert_eq!(u["role"], "org-admin");
    let u = env.json(&[
        "user",
        "set",
        "alice",
        "--add-group",
        "staff",
        "--add-group",
        "ops",
    ]);
    assert_eq!(u["groups"].as_array().unwrap().len(), 2, "{u:#}");
    assert_eq!(u["group_requires_2fa"], true);
    let u = env.json(&["user", "set", "alice", "--remove-group", "ops"]);
    assert_eq!(u["groups"], json!(["staff"]));
    assert_eq!(u["group_requires_2fa"], false);
    // Everything stuck.
    let u = env.json(&["user", "show", "alice"]);
    assert_eq!(
        (&u["email"], &u["org"], &u["role"], &u["groups"]),
        (
            &json!("new@example.org"),
            &json!("beta"),
            &json!("org-admin"),
            &json!(["staff"])
        )
    );

    let bad: &[(&[&str], i32)] = &[
        (&["user", "set", "ghost", "--email", "x@example.org"], 3),
        (&["user", "set", "alice", "--org", "nowhere"], 3),
        (&["user", "set", "alice", "--add-group", "nogroup"], 3),
        (&["user", "set", "alice", "--email", "not-an-email"], 2),
        (&["user", "set", "alice", "--role", "god"], 2),
    ];
    for (args, code) in bad {
        env.ctl(args).fails(*code);
    }
    assert_eq!(
        env.json(&["user", "show", "alice"])["email"],
        "new@example.org"
    );
}

#[test]
fn user_disable_and_enable() {
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    let u = env.json(&["user", "disable", "alice"]);
    assert_user_shape(&u);
    assert_eq!(
        (&u["status"], &u["disabled"]),
        (&json!("disabled"), &json!(true))
    );
    assert_eq!(env.json(&["user", "show", "alice"])["status"], "disabled");
    let u = env.json(&["user", "enable", "alice"]);
    assert_eq!(
        (&u["status"], &u["disabled"]),
        (&json!("active"), &json!(false))
    );
    for cmd in ["disable", "enable", "delete"] {
        env.ctl(&["user", cmd, "ghost", "--yes"]).fails(3);
    }
}

#[test]
fn user_delete_needs_yes_without_a_tty() {
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    env.enroll("alice");
    let out = run(
        env.cmd(&["user", "delete", "alice"]),
        None,
        Duration::from_secs(10),
    );
    out.fails(1).stderr_has("--yes");
    env.json(&["user", "show", "alice"]);

    let v = env.json(&["user", "delete", "alice", "--yes"]);
    assert_eq!(v, json!({"deleted": "alice"}));
    env.ctl(&["user", "show", "alice"]).fails(3);
    env.ctl(&["user", "delete", "alice", "--yes"]).fails(3);
    // -y before the subcommand works too (a global flag), and the name can be re-used.
    env.add_user("alice", STRONG, &[]);
    env.ctl(&["-y", "user", "delete", "ALICE"]).ok();
    assert_eq!(env.json(&["user", "list"]), json!([]));
}

// ---------------------------------------------------------------------------------------
// passwd
// ---------------------------------------------------------------------------------------

#[test]
fn passwd_sets_and_expires_passwords() {
    let env = Env::init();
    env.json(&["user", "add", "alice", "--email", "a@example.org"]);
    assert_eq!(env.json(&["user", "show", "alice"])["has_password"], false);

    let v = env.json_stdin(
        &["passwd", "alice", "--password-stdin"],
        &format!("{STRONG}\n"),
    );
    assert_eq!(
        v,
        json!({"username": "alice", "password_changed": true, "must_change_password": false})
    );
    let u = env.json(&["user", "show", "alice"]);
    assert_eq!(u["has_password"], true);
    assert!(!u["password_changed_at"].is_null());

    let v = env.json(&["passwd", "alice", "--expire"]);
    assert_eq!(
        v,
        json!({"username": "alice", "password_changed": false, "must_change_password": true})
    );
    assert_eq!(
        env.json(&["user", "show", "alice"])["must_change_password"],
        true
    );

    let v = env.json_stdin(
        &["passwd", "ALICE", "--password-stdin", "--expire"],
        "An0ther-Password\n",
    );
    assert_eq!(v["password_changed"], true);
    assert_eq!(v["must_change_password"], true);

    let v = env.json(&["passwd", "alice", "--generate-password"]);
    assert_eq!(v["password_changed"], true);
    let pw = v["generated_password"]
        .as_str()
        .unwrap_or_else(|| panic!("{v:#}"));
    assert!(unmet(pw).is_empty(), "{pw:?}");
}

#[test]
fn passwd_refuses_weak_passwords_and_unknown_users() {
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    let before = env.json(&["user", "show", "alice"])["password_changed_at"].clone();
    let out = env.ctl_stdin(&["passwd", "alice", "--password-stdin"], "weak\n");
    out.fails(5);
    for rule in unmet("weak") {
        out.stderr_has(&rule);
    }
    assert_eq!(
        env.json(&["user", "show", "alice"])["password_changed_at"],
        before
    );
    env.ctl_stdin(
        &["passwd", "ghost", "--password-stdin"],
        &format!("{STRONG}\n"),
    )
    .fails(3);
    env.ctl(&["passwd", "ghost", "--expire"]).fails(3);
}

#[test]
fn passwd_without_a_tty_and_without_a_password_is_an_error_not_a_hang() {
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    let out = run(env.cmd(&["passwd", "alice"]), None, Duration::from_secs(10));
    assert!(
        !out.timed_out,
        "passwd waited for input without a terminal: {out:?}"
    );
    assert!(matches!(out.code, Some(1) | Some(2)), "exit code: {out:?}");
    out.fails(out.code.unwrap()).stderr_has("--password-stdin");
    // An empty stdin with --password-stdin is an error too, not a hang or an empty password.
    let out = run(
        env.cmd(&["passwd", "alice", "--password-stdin"]),
        Some(b""),
        Duration::from_secs(10),
    );
    assert!(!out.timed_out, "{out:?}");
    assert_ne!(out.code, Some(0), "an empty password was accepted: {out:?}");
    out.no_panic();
}

// ---------------------------------------------------------------------------------------
// Prompts on a terminal (under script(1), which provides a pseudo-terminal)
// ---------------------------------------------------------------------------------------

/// Run `authctl --db DB ARGS` on a pseudo-terminal, typing `input` (with pauses between
/// lines so that each prompt has switched echo off before its line arrives).
fn run_on_tty(env: &Env, args: &[&str], lines: &[&str]) -> Out {
    let mut inner = format!("exec '{AUTHCTL}' --db '{}'", env.db.display());
    for a in args {
        inner.push_str(&format!(" '{a}'"));
    }
    let mut feed = String::from("sleep 1");
    for l in lines {
        feed.push_str(&format!("; printf '%s\\r' '{l}'; sleep 1"));
    }
    let script = format!("({feed}) | script -qefc \"{inner}\" /dev/null");
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script])
        .env_remove("AUTHCTL_DB")
        .env("TERM", "dumb");
    run(cmd, None, Duration::from_secs(30))
}

#[test]
fn tty_passwd_asks_twice_and_refuses_a_mismatch() {
    require("script", "bsdutils");
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    let before = env.json(&["user", "show", "alice"])["password_changed_at"].clone();

    let out = run_on_tty(
        &env,
        &["passwd", "alice"],
        &["An0ther-Password", "Different-Passw0rd"],
    );
    assert!(!out.timed_out, "{out:?}");
    assert_ne!(
        out.code,
        Some(0),
        "a mismatched confirmation was accepted: {out:?}"
    );
    // script(1) merges the command's stdout and stderr into its own stdout.
    assert!(
        out.stdout.to_lowercase().contains("do not match"),
        "no \"passwords do not match\" error: {out:?}"
    );
    assert_eq!(
        env.json(&["user", "show", "alice"])["password_changed_at"],
        before
    );

    let out = run_on_tty(
        &env,
        &["passwd", "alice"],
        &["An0ther-Password", "An0ther-Password"],
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        !out.stdout.contains("An0ther-Password"),
        "the password was echoed: {out:?}"
    );
}

#[test]
fn tty_user_add_asks_twice_and_names_unmet_rules() {
    require("script", "bsdutils");
    let env = Env::init();
    let add = ["user", "add", "alice", "--email", "a@example.org"];
    // Mismatch: refused, nothing created.
    let out = run_on_tty(&env, &add, &["An0ther-Password", "Different-Passw0rd"]);
    assert!(!out.timed_out, "{out:?}");
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.to_lowercase().contains("do not match"),
        "{out:?}"
    );
    env.ctl(&["user", "show", "alice"]).fails(3);
    // Weak: every unmet rule named, exit 5.
    let out = run_on_tty(&env, &add, &["weak"]);
    assert_eq!(out.code, Some(5), "{out:?}");
    for rule in unmet("weak") {
        assert!(out.stdout.contains(&rule), "{rule:?} not named: {out:?}");
    }
    env.ctl(&["user", "show", "alice"]).fails(3);
    // Twice the same strong password: created with it.
    let out = run_on_tty(&env, &add, &["An0ther-Password", "An0ther-Password"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(env.json(&["user", "show", "alice"])["has_password"], true);
}

#[test]
fn tty_user_delete_asks_for_confirmation() {
    require("script", "bsdutils");
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    let out = run_on_tty(&env, &["user", "delete", "alice"], &["n"]);
    assert_ne!(out.code, Some(0), "{out:?}");
    env.json(&["user", "show", "alice"]);
    let out = run_on_tty(&env, &["user", "delete", "alice"], &["y"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    env.ctl(&["user", "show", "alice"]).fails(3);
}

// ---------------------------------------------------------------------------------------
// enroll, totp test, reset-2fa, unlock
// ---------------------------------------------------------------------------------------

#[test]
fn enroll_totp_json_shape() {
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    let v = env.json(&["enroll", "alice", "--no-qr"]);
    assert_eq!(keys(&v), {
        let mut k = vec![
            "method",
            "otpauth_uri",
            "recovery_codes",
            "secret",
            "username",
        ];
        k.sort();
        k
    });
    assert_eq!(v["username"], "alice");
    assert_eq!(v["method"], "totp");
    let secret = v["secret"].as_str().unwrap();
    let bytes = authcore::totp::parse_base32(secret).unwrap();
    assert!(bytes.len() >= 20, "secret of {} bytes", bytes.len());
    let uri = v["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    assert!(uri.contains("alice"), "{uri}");
    let codes: Vec<&str> = v["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(codes.len(), 10);
    for c in &codes {
        let ok = c.len() == 11
            && c.as_bytes()[5] == b'-'
            && c.chars()
                .enumerate()
                .all(|(i, ch)| i == 5 || ch.is_ascii_digit() || ch.is_ascii_lowercase());
        assert!(ok, "recovery code {c:?} is not like abcde-fghjk");
    }
    assert_eq!(
        codes.iter().collect::<BTreeSet<_>>().len(),
        10,
        "duplicate recovery codes"
    );

    let u = env.json(&["user", "show", "alice"]);
    assert_eq!(u["mfa_method"], "totp");
    assert_eq!(u["recovery_codes_remaining"], 10);

    env.ctl(&["enroll", "ghost"]).fails(3);
}

#[test]
fn enroll_table_output_shows_qr_uri_secret_and_codes() {
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    let out = env.ctl(&["enroll", "alice"]);
    out.ok();
    let stdout = &out.stdout;
    assert!(
        stdout.contains('█') || stdout.contains('▀') || stdout.contains('▄'),
        "no QR: {out:?}"
    );
    let uri_line = stdout
        .split_whitespace()
        .find(|w| w.starts_with("otpauth://totp/"))
        .unwrap_or_else(|| panic!("no otpauth URI: {out:?}"));
    let secret = uri_line
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("secret="))
        .unwrap();
    assert!(stdout.contains(secret));
    let codes: Vec<&str> = stdout
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| {
            w.len() == 11 && w.as_bytes()[5] == b'-' && authcore::recovery::normalize(w).is_some()
        })
        .collect();
    assert_eq!(
        codes.len(),
        10,
        "recovery codes printed: {codes:?} in {out:?}"
    );

    // --no-qr leaves the QR out but keeps the rest.
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    let out = env.ctl(&["enroll", "alice", "--no-qr"]);
    out.ok().stdout_has("otpauth://totp/");
    assert!(
        !out.stdout.contains('▀') && !out.stdout.contains('▄'),
        "QR printed with --no-qr: {out:?}"
    );
}

#[test]
fn enroll_png_writes_an_image() {
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    let png = env.path("qr.png");
    env.json(&["enroll", "alice", "--png", png.to_str().unwrap()]);
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    // Into a directory that cannot exist (under a regular file): a clear error, no panic.
    let bad = png.join("qr.png");
    let out = env.ctl(&["enroll", "alice", "--png", bad.to_str().unwrap()]);
    assert_ne!(out.code, Some(0), "{out:?}");
    out.no_panic();
}

#[test]
fn enroll_email_method() {
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    let v = env.json(&["enroll", "alice", "--method", "email"]);
    assert_eq!(v["username"], "alice");
    assert_eq!(v["method"], "email");
    assert_eq!(v["secret"], Value::Null);
    assert_eq!(v["otpauth_uri"], Value::Null);
    assert!(v["recovery_codes"].is_array(), "{v:#}");
    assert_eq!(env.json(&["user", "show", "alice"])["mfa_method"], "email");
}

#[test]
fn totp_test_wrong_and_malformed_codes() {
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    env.add_user("bob", STRONG, &[]);
    let v = env.enroll("alice");
    let secret = authcore::totp::parse_base32(v["secret"].as_str().unwrap()).unwrap();
    // A code that matches no step within a day either side.
    let now = now();
    let wrong = (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .find(|c| authcore::totp::find_offset(&secret, c, now, 3000).is_none())
        .unwrap();
    let out = env.ctl(&["--json", "totp", "test", "alice", &wrong]);
    out.code(1);
    let j = out.json();
    assert_eq!(j["username"], "alice");
    assert_eq!(j["match"], false);
    assert_eq!(j["offset"], Value::Null);
    assert_eq!(j["step"], Value::Null);
    env.ctl(&["totp", "test", "alice", &wrong]).code(1);

    for bad in ["abcdef", "12345", "1234567", "١٢٣٤٥٦"] {
        let out = env.ctl(&["totp", "test", "alice", bad]);
        assert!(matches!(out.code, Some(1) | Some(2)), "{out:?}");
        out.no_panic();
    }
    env.ctl(&["totp", "test", "ghost", "123456"]).fails(3);
    // bob has no authenticator.
    let out = env.ctl(&["totp", "test", "bob", "123456"]);
    assert_ne!(out.code, Some(0), "{out:?}");
    out.no_panic();
}

#[test]
fn reset_2fa_removes_factors() {
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    env.enroll("alice");
    let v = env.json(&["reset-2fa", "alice"]);
    assert_has_keys(
        &v,
        &[
            "username",
            "totp_removed",
            "recovery_codes_removed",
            "devices_revoked",
            "sessions_ended",
        ],
    );
    assert_eq!(v["username"], "alice");
    assert!(
        v["totp_removed"] == json!(true) || v["totp_removed"] == json!(1),
        "{v:#}"
    );
    assert!(
        v["recovery_codes_removed"] == json!(10) || v["recovery_codes_removed"] == json!(true),
        "{v:#}"
    );
    let u = env.json(&["user", "show", "alice"]);
    assert_eq!(u["mfa_method"], Value::Null);
    assert_eq!(u["recovery_codes_remaining"], 0);
    // Again: nothing to remove, still fine.
    let v = env.json(&["reset-2fa", "alice"]);
    assert!(
        v["totp_removed"] == json!(false) || v["totp_removed"] == json!(0),
        "{v:#}"
    );
    // The user can enrol again, with a new secret.
    env.enroll("alice");
    env.ctl(&["reset-2fa", "ghost"]).fails(3);
}

#[test]
fn unlock_reports_whether_the_account_was_locked() {
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    let v = env.json(&["unlock", "alice"]);
    assert_eq!(v, json!({"username": "alice", "was_locked": false}));
    env.ctl(&["unlock", "alice"]).ok();
    env.ctl(&["unlock", "ghost"]).fails(3);
    env.ctl_json(&["unlock", "ghost"])
        .code(3)
        .json_error("not_found");
    // The core's audit rows: the same detail as the API's (failed_attempts too), and one
    // row per refusal (the core's, not a second one from authctl).
    let rows = env
        .ctl(&["audit", "--event", "admin.unlock", "--format", "json"])
        .ok()
        .json_lines();
    let ok: Vec<_> = rows.iter().filter(|r| r["outcome"] == "success").collect();
    assert_eq!(ok.len(), 2, "{rows:?}");
    let detail: serde_json::Value =
        serde_json::from_str(ok[0]["detail"].as_str().expect("detail")).expect("JSON");
    assert_eq!(
        detail,
        json!({"failed_attempts": 0, "via": "authctl", "was_locked": false})
    );
    let refused: Vec<_> = rows.iter().filter(|r| r["outcome"] == "failure").collect();
    assert_eq!(refused.len(), 2, "one row per refused unlock: {rows:?}");
    assert!(
        refused.iter().all(|r| r["reason"] == "unknown_user"),
        "{rows:?}"
    );
}

// ---------------------------------------------------------------------------------------
// org, group
// ---------------------------------------------------------------------------------------

#[test]
fn orgs() {
    let env = Env::init();
    let o = env.json(&["org", "add", "acme"]);
    assert_has_keys(&o, &["id", "name", "mfa_method", "users", "created_at"]);
    assert_eq!(
        (&o["name"], &o["mfa_method"], &o["users"]),
        (&json!("acme"), &Value::Null, &json!(0))
    );
    let o = env.json(&["org", "add", "beta", "--mfa-method", "email"]);
    assert_eq!(o["mfa_method"], "email");
    for dup in ["acme", "ACME", "ａｃｍｅ"] {
        env.ctl(&["org", "add", dup]).fails(4);
    }
    env.ctl(&["org", "add", "bad name"]).fails(2);
    env.ctl(&["org", "add", "x", "--mfa-method", "sms"])
        .fails(2);

    env.add_user("alice", STRONG, &["--org", "acme"]);
    let list = env.json(&["org", "list"]);
    let org_names = names(&list);
    assert!(
        org_names.contains("acme") && org_names.contains("beta"),
        "{list:#}"
    );
    let acme = list
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "acme")
        .unwrap();
    assert_eq!(acme["users"], 1);

    // An org with users is not deleted.
    env.ctl(&["org", "delete", "acme"]).fails(4);
    env.ctl_json(&["org", "delete", "acme"])
        .code(4)
        .json_error("conflict");
    env.json(&["user", "show", "alice"]);
    env.ctl(&["org", "delete", "beta"]).ok();
    assert!(!names(&env.json(&["org", "list"])).contains("beta"));
    env.ctl(&["org", "delete", "beta"]).fails(3);
    env.ctl(&["org", "list"]).ok().stdout_has("acme");
}

#[test]
fn groups() {
    let env = Env::init();
    let g = env.json(&["group", "add", "staff"]);
    assert_has_keys(&g, &["id", "name", "require_2fa", "members", "created_at"]);
    assert_eq!(
        (&g["name"], &g["require_2fa"], &g["members"]),
        (&json!("staff"), &json!(false), &json!(0))
    );
    let g = env.json(&["group", "add", "pupil-data", "--require-2fa"]);
    assert_eq!(g["require_2fa"], true);
    env.ctl(&["group", "add", "STAFF"]).fails(4);
    env.ctl(&["group", "add", "bad name"]).fails(2);

    env.add_user(
        "alice",
        STRONG,
        &["--group", "staff", "--group", "pupil-data"],
    );
    let list = env.json(&["group", "list"]);
    assert_eq!(names(&list), set(&["staff", "pupil-data"]));
    for g in list.as_array().unwrap() {
        assert_eq!(g["members"], 1, "{g:#}");
    }
    // Deleting a group removes the memberships, not the members.
    env.ctl(&["group", "delete", "pupil-data", "--yes"]).ok();
    let u = env.json(&["user", "show", "alice"]);
    assert_eq!(u["groups"], json!(["staff"]));
    assert_eq!(u["group_requires_2fa"], false);
    env.ctl(&["group", "delete", "pupil-data"]).fails(3);
    env.ctl(&["group", "list"]).ok().stdout_has("staff");
}

#[test]
fn group_delete_asks_before_lifting_a_second_factor_requirement() {
    let env = Env::init();
    env.json(&["group", "add", "staff", "--require-2fa"]);
    for name in ["ann", "ben", "cat"] {
        env.add_user(name, STRONG, &["--group", "staff"]);
    }
    // No terminal, no --yes: refused, with the number of members who would lose it.
    let out = run(
        env.cmd(&["group", "delete", "staff"]),
        None,
        Duration::from_secs(10),
    );
    out.fails(1)
        .stderr_has("group staff requires a second factor")
        .stderr_has("3 members lose")
        .stderr_has("--yes");
    env.ctl_json(&["group", "delete", "staff"])
        .code(1)
        .json_error("confirmation_required");
    assert!(names(&env.json(&["group", "list"])).contains("staff"));
    for name in ["ann", "ben", "cat"] {
        let u = env.json(&["user", "show", name]);
        assert_eq!(u["group_requires_2fa"], true, "{u:#}");
    }
    let refused = env.audit(&["--event", "admin.group.delete", "--outcome", "failure"]);
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(
        refused
            .iter()
            .all(|r| r["reason"] == "confirmation_required"),
        "{refused:#?}"
    );

    // --yes: deleted, and the answer names who lost the requirement.
    let v = env.json(&["group", "delete", "staff", "--yes"]);
    assert_eq!(
        v,
        json!({"deleted": "staff", "members": 3, "require_2fa": true})
    );
    assert!(!names(&env.json(&["group", "list"])).contains("staff"));
    assert_eq!(
        env.json(&["user", "show", "ann"])["group_requires_2fa"],
        false
    );
    let done = env.audit(&["--event", "admin.group.delete", "--outcome", "success"]);
    assert_eq!(done.len(), 1, "{done:#?}");
    let detail: Value = serde_json::from_str(done[0]["detail"].as_str().unwrap()).unwrap();
    assert_eq!(
        (&detail["members"], &detail["require_2fa"]),
        (&json!(3), &json!(true)),
        "{done:#?}"
    );
    // The human answer says it too (one member: singular).
    env.json(&["group", "add", "pupil-data", "--require-2fa"]);
    env.json(&["user", "set", "ann", "--add-group", "pupil-data"]);
    env.ctl(&["group", "delete", "pupil-data", "--yes"])
        .ok()
        .stdout_has("1 member lost");

    // Nothing to lift: deleted without a question, as before.
    env.json(&["group", "add", "plain"]);
    env.json(&["user", "set", "ann", "--add-group", "plain"]);
    env.json(&["group", "add", "empty-2fa", "--require-2fa"]);
    for g in ["plain", "empty-2fa"] {
        let v = env.json(&["group", "delete", g]);
        assert_eq!(v["deleted"], g, "{v:#}");
    }
    assert!(names(&env.json(&["group", "list"])).is_empty());
}

#[test]
fn tty_group_delete_asks_for_confirmation() {
    require("script", "bsdutils");
    let env = Env::init();
    env.json(&["group", "add", "staff", "--require-2fa"]);
    env.add_user("ann", STRONG, &["--group", "staff"]);
    env.add_user("ben", STRONG, &["--group", "staff"]);
    let out = run_on_tty(&env, &["group", "delete", "staff"], &["n"]);
    assert!(!out.timed_out, "{out:?}");
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("2 members lose"), "{out:?}");
    assert!(names(&env.json(&["group", "list"])).contains("staff"));
    let out = run_on_tty(&env, &["group", "delete", "staff"], &["y"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(names(&env.json(&["group", "list"])).is_empty());
}

// ---------------------------------------------------------------------------------------
// policy
// ---------------------------------------------------------------------------------------

#[test]
fn policy_show_defaults_are_owasp() {
    let env = Env::init_default();
    let list = env.json(&["policy", "show"]);
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), authcore::policy::KEYS.len());
    for r in rows {
        assert_has_keys(r, &["key", "value", "default", "is_default", "description"]);
        assert_eq!(r["is_default"], true, "{r}");
        assert_eq!(text(&r["value"]), text(&r["default"]), "{r}");
    }
    let get = |k: &str| {
        text(
            &rows
                .iter()
                .find(|r| r["key"] == k)
                .unwrap_or_else(|| panic!("no {k}"))["value"],
        )
    };
    // OWASP argon2id baseline, and the seed's lockout and password rules.
    let want = [
        ("argon2.m_kib", "19456"),
        ("argon2.t", "2"),
        ("argon2.p", "1"),
        ("lockout.max_failures", "9"),
        ("password.min_length", "8"),
        ("totp.skew", "1"),
        ("recovery.count", "10"),
        ("remember_device.days", "30"),
    ];
    for (k, v) in want {
        assert_eq!(get(k), v, "{k}");
    }
    env.ctl(&["policy", "show"])
        .ok()
        .stdout_has("lockout.max_failures");
}

#[test]
fn policy_set_changes_values() {
    let env = Env::init_default();
    let v = env.json(&[
        "policy",
        "set",
        "lockout.max_failures=5",
        "password.require_upper=no",
    ]);
    let got: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (text(&r["key"]), text(&r["value"])))
        .collect();
    assert_eq!(
        got,
        vec![
            ("lockout.max_failures".to_string(), "5".to_string()),
            ("password.require_upper".to_string(), "false".to_string()),
        ]
    );
    let rows = env.json(&["policy", "show"]);
    let row = |k: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == k)
            .unwrap()
            .clone()
    };
    assert_eq!(text(&row("lockout.max_failures")["value"]), "5");
    assert_eq!(row("lockout.max_failures")["is_default"], false);
    // The password policy follows: no upper-case character needed now.
    env.ctl(&["policy", "set", "argon2.m_kib=1024", "argon2.t=1"])
        .ok();
    env.add_user("alice", "lower-only-passw0rd", &[]);
}

#[test]
fn policy_set_bad_input_changes_nothing() {
    let env = Env::init_default();
    let before = env.json(&["policy", "show"]);
    let cases: &[&[&str]] = &[
        &["no.such.key=1"],
        &["lockout.max_failures=abc"],
        &["lockout.max_failures=-1"],
        &["totp.skew=99"],
        &["mfa.required=sometimes"],
        &["password.require_upper=maybe"],
        &["noequals"],
        &["=5"],
        &["lockout.max_failures=5", "totp.skew=99"],
        &["lockout.max_failures=5", "bogus=1"],
    ];
    for args in cases {
        let mut a = vec!["policy", "set"];
        a.extend_from_slice(args);
        env.ctl(&a).fails(2);
        let mut j = vec!["--json"];
        j.extend_from_slice(&a);
        env.ctl(&j).code(2).json_error("invalid_input");
    }
    assert_eq!(
        env.json(&["policy", "show"]),
        before,
        "a refused policy set changed something"
    );
}

// ---------------------------------------------------------------------------------------
// audit
// ---------------------------------------------------------------------------------------

/// Run a little of everything, as an admin would.
fn busy_env() -> Env {
    let env = Env::init();
    env.json(&["org", "add", "acme"]);
    env.json(&["group", "add", "staff"]);
    env.add_user("alice", STRONG, &["--org", "acme", "--group", "staff"]);
    env.add_user("bob", STRONG, &[]);
    env.json(&["user", "set", "bob", "--email", "bob2@example.org"]);
    env.json_stdin(
        &["passwd", "alice", "--password-stdin"],
        "An0ther-Password\n",
    );
    env.enroll("alice");
    env.json(&["reset-2fa", "alice"]);
    env.json(&["unlock", "alice"]);
    env.json(&["user", "disable", "bob"]);
    env.json(&["user", "enable", "bob"]);
    env.json(&["policy", "set", "lockout.max_failures=7"]);
    let file = env.path("users.jsonl");
    std::fs::write(
        &file,
        "{\"username\":\"carol\",\"email\":\"c@example.org\"}\n",
    )
    .unwrap();
    env.json(&["import", file.to_str().unwrap()]);
    env.json(&["user", "delete", "carol", "--yes"]);
    env.json(&["group", "add", "tmp"]);
    env.json(&["group", "delete", "tmp"]);
    env.json(&["org", "add", "gone"]);
    env.json(&["org", "delete", "gone"]);
    env
}

#[test]
fn admin_commands_are_audited_with_the_os_user_as_actor() {
    let env = busy_env();
    let rows = env.audit(&[]);
    for r in &rows {
        assert_has_keys(r, AUDIT_KEYS);
    }
    let actor = os_user();
    let want = [
        "admin.org.add",
        "admin.group.add",
        "admin.user.add",
        "admin.user.set",
        "admin.passwd",
        "admin.enroll",
        "admin.reset_2fa",
        "admin.unlock",
        "admin.user.disable",
        "admin.user.enable",
        "admin.policy.set",
        "admin.import",
        "admin.user.delete",
        "admin.group.delete",
        "admin.org.delete",
    ];
    for event in want {
        let found: Vec<&Value> = rows.iter().filter(|r| r["event"] == event).collect();
        assert!(
            !found.is_empty(),
            "no {event} row in the audit log: {rows:#?}"
        );
        for r in found {
            assert_eq!(r["actor"], actor, "{event} actor: {r:#}");
            assert_eq!(r["outcome"], "success", "{r:#}");
        }
    }
    let add = rows
        .iter()
        .find(|r| r["event"] == "admin.user.add" && r["username"] == "alice")
        .unwrap_or_else(|| panic!("no admin.user.add row for alice: {rows:#?}"));
    assert_eq!(add["org"], "acme", "{add:#}");
    assert!(add["user_id"].is_i64(), "{add:#}");
    // No secret ever lands in the log.
    let all = serde_json::to_string(&rows).unwrap();
    assert!(
        !all.contains(STRONG) && !all.contains("An0ther-Password"),
        "a password is in the audit log"
    );
}

#[test]
fn refused_admin_commands_are_audited_as_failures() {
    let env = Env::init();
    env.ctl_stdin(
        &[
            "user",
            "add",
            "weakling",
            "--email",
            "w@example.org",
            "--password-stdin",
        ],
        "weak\n",
    )
    .fails(5);
    let rows = env.audit(&["--outcome", "failure"]);
    assert!(
        rows.iter()
            .any(|r| r["event"] == "admin.user.add" && r["username"] == "weakling"),
        "a refused user add left no failure row: {rows:#?}"
    );
    assert!(
        !serde_json::to_string(&rows).unwrap().contains("weak\""),
        "the password is in the log"
    );
}

#[test]
fn audit_filters() {
    let env = busy_env();
    let all = env.audit(&[]);
    assert!(all.len() >= 15, "{all:#?}");
    // Oldest first or newest first, but ordered by id either way.
    let ids: Vec<i64> = all.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    let mut rev = sorted.clone();
    rev.reverse();
    assert!(
        ids == sorted || ids == rev,
        "rows are not in id order: {ids:?}"
    );

    type Check = fn(&Value) -> bool;
    let cases: &[(&[&str], Check)] = &[
        (&["--event", "admin.user.add"], |r| {
            r["event"] == "admin.user.add"
        }),
        (&["--user", "alice"], |r| r["username"] == "alice"),
        (&["--user", "ALICE"], |r| r["username"] == "alice"),
        (&["--org", "acme"], |r| r["org"] == "acme"),
        (&["--outcome", "success"], |r| r["outcome"] == "success"),
        (&["--since", "1h"], |_| true),
        (
            &["--since", "2000-01-01T00:00:00Z", "--until", "2999-01-01"],
            |_| true,
        ),
    ];
    for (filter, check) in cases {
        let rows = env.audit(filter);
        assert!(!rows.is_empty(), "{filter:?} found nothing");
        for r in &rows {
            assert!(check(r), "{filter:?} let through {r:#}");
        }
    }
    let lens: &[(&[&str], usize)] = &[
        (&["--since", "1h"], all.len()),
        (&["--until", "2000-01-01"], 0),
        (&["--since", "2999-01-01T00:00:00Z"], 0),
        (&["--outcome", "failure"], 0),
        (&["--ip", "192.0.2.1"], 0),
        (&["--user", "nobody-at-all"], 0),
    ];
    for (filter, n) in lens {
        assert_eq!(env.audit(filter).len(), *n, "{filter:?}");
    }
    // --limit keeps the newest rows.
    let two = env
        .ctl(&["--json", "audit", "--limit", "2"])
        .ok()
        .json_lines();
    assert_eq!(two.len(), 2);
    let newest = all.iter().map(|r| r["id"].as_i64().unwrap()).max().unwrap();
    assert!(
        two.iter().any(|r| r["id"] == newest),
        "--limit 2 lacks the newest row: {two:#?}"
    );

    // Bad times are usage errors.
    for bad in [
        &["--since", "yesterday"][..],
        &["--until", "soon"],
        &["--since", "-5h"],
    ] {
        let mut a = vec!["audit"];
        a.extend_from_slice(bad);
        env.ctl(&a).fails(2);
    }
}

#[test]
fn audit_formats() {
    let env = busy_env();
    let json_rows = env.audit(&[]);
    // --format json is the same as --json.
    let fmt_rows = env
        .ctl(&["audit", "--limit", "0", "--format", "json"])
        .ok()
        .json_lines();
    assert_eq!(fmt_rows, json_rows);
    for line in env.ctl(&["audit", "--format", "json"]).stdout.lines() {
        assert!(line.starts_with('{'), "not one object per line: {line:?}");
    }
    // CSV: a header, then one record per row.
    let out = env.ctl(&["audit", "--limit", "0", "--format", "csv"]);
    out.ok();
    let mut rdr = csv::Reader::from_reader(out.stdout.as_bytes());
    let header: Vec<String> = rdr.headers().unwrap().iter().map(str::to_string).collect();
    for k in ["id", "time", "event", "outcome", "username", "actor"] {
        assert!(
            header.iter().any(|h| h == k),
            "CSV header lacks {k}: {header:?}"
        );
    }
    let records: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    assert_eq!(records.len(), json_rows.len());
    let ev = header.iter().position(|h| h == "event").unwrap();
    assert!(records.iter().any(|r| &r[ev] == "admin.user.add"));
    // Table.
    env.ctl(&["audit"]).ok().stdout_has("admin.user.add");
    // An empty result is still a valid document.
    let out = env.ctl(&["audit", "--format", "csv", "--until", "2000-01-01"]);
    assert!(out.ok().stdout.lines().count() <= 1, "{out:?}");
    env.ctl(&["--json", "audit", "--until", "2000-01-01"]).ok();
}

/// Data rows of an `audit` table (the header row excluded).
fn table_rows(stdout: &str) -> usize {
    stdout
        .lines()
        .filter(|l| l.starts_with('│') && !l.contains("event"))
        .count()
}

#[test]
fn audit_says_on_stderr_when_the_limit_left_rows_out() {
    let env = Env::init();
    for i in 0..6 {
        env.json(&["org", "add", &format!("org{i}")]);
    }
    let all = env.audit(&[]);
    let n = all.len();
    assert!(n >= 7, "{all:#?}");
    let newest: Vec<&Value> = all[n - 3..].iter().collect();
    let notice = "more rows match";

    // Three formats, the same notice on stderr; stdout holds exactly the newest 3 rows.
    let out = env.ctl(&["audit", "--limit", "3", "--format", "json"]);
    out.ok()
        .stderr_has(notice)
        .stderr_has("newest 3")
        .stderr_has("--limit");
    let rows = out.json_lines();
    assert_eq!(rows.iter().collect::<Vec<_>>(), newest, "{out:?}");
    let out = env.ctl(&["--json", "audit", "--limit", "3"]);
    assert_eq!(out.ok().stderr_has(notice).json_lines().len(), 3, "{out:?}");

    let out = env.ctl(&["audit", "--limit", "3", "--format", "csv"]);
    out.ok().stderr_has(notice);
    let mut rdr = csv::Reader::from_reader(out.stdout.as_bytes());
    let records: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    assert_eq!(records.len(), 3, "{out:?}");
    assert!(!out.stdout.contains(notice), "{out:?}");

    let out = env.ctl(&["audit", "--limit", "3"]);
    out.ok().stderr_has(notice);
    assert_eq!(table_rows(&out.stdout), 3, "{out:?}");
    assert!(!out.stdout.contains(notice), "{out:?}");

    // Nothing left out (a limit of exactly the count, a larger one, or none): no notice.
    let exact = n.to_string();
    for limit in [exact.as_str(), "1000", "0"] {
        for format in ["json", "csv", "table"] {
            let out = env.ctl(&["audit", "--limit", limit, "--format", format]);
            out.ok();
            assert!(
                out.stderr.trim().is_empty(),
                "a notice with nothing left out: {out:?}"
            );
        }
        let out = env.ctl(&["audit", "--limit", limit, "--format", "json"]);
        assert_eq!(out.json_lines().len(), n, "{out:?}");
    }
    // A filter counts only its matching rows.
    let out = env.ctl(&["audit", "--event", "admin.org.add", "--limit", "6"]);
    assert!(out.ok().stderr.trim().is_empty(), "{out:?}");
    assert_eq!(table_rows(&out.stdout), 6, "{out:?}");
    env.ctl(&["audit", "--event", "admin.org.add", "--limit", "5"])
        .ok()
        .stderr_has(notice);
}

/// `authctl --json audit --follow` running, and its output lines as they come (every
/// line is read: a closed pipe would end the command at its next row).
fn follow_audit(env: &Env) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let mut child = env
        .cmd(&["--json", "audit", "--follow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

#[test]
fn audit_follow_prints_new_rows() {
    let env = Env::init();
    env.json(&["org", "add", "first"]);
    let (mut child, rx) = follow_audit(&env);
    let wait_for = |event: &str, org: &str| -> Result<Value, String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let v: Value = serde_json::from_str(&line)
                        .map_err(|e| format!("--follow printed a non-JSON line {line:?}: {e}"))?;
                    if v["event"] == event && serde_json::to_string(&v).unwrap().contains(org) {
                        return Ok(v);
                    }
                    seen.push(line);
                }
                Err(_) => break,
            }
        }
        Err(format!(
            "no {event} row for {org} within 15 s; saw {seen:#?}"
        ))
    };
    let result = wait_for("admin.org.add", "first").and_then(|_| {
        env.json(&["org", "add", "second"]);
        wait_for("admin.org.add", "second")
    });
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    result.unwrap();
    assert!(still_running, "audit --follow exited instead of following");
}

/// A command that only reads opens its core read-only: no group-commit writer, no
/// checkpoint thread (`audit --follow` keeps running, so its threads can be looked at
/// once it has printed the rows `init` wrote).
#[test]
fn a_reading_command_starts_no_writer_or_checkpoint_thread() {
    let env = Env::init();
    let (mut child, rx) = follow_audit(&env);
    let line = rx.recv_timeout(Duration::from_secs(15));
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", child.id()))
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .map(|n| n.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("audit --follow printed nothing within 15 s");
    assert!(line.contains("admin.init"), "{line}");
    assert!(still_running, "audit --follow exited instead of following");
    assert!(!threads.is_empty(), "no threads read");
    assert!(
        !threads.iter().any(|t| t.starts_with("authd-")),
        "a reading command started the core's threads: {threads:?}"
    );
}

// ---------------------------------------------------------------------------------------
// import
// ---------------------------------------------------------------------------------------

fn import_lines() -> Vec<String> {
    vec![
        json!({"username": "ann", "email": "ann@example.org", "password": STRONG}).to_string(),
        json!({"username": "ben", "email": "ben@example.org", "org": "acme", "groups": ["staff", "ops"],
               "role": "org-admin", "must_change_password": true})
        .to_string(),
        json!({"username": "cat", "email": "not-an-email"}).to_string(),
        json!({"username": "ANN", "email": "ann2@example.org"}).to_string(),
        json!({"username": "dan", "email": "dan@example.org", "password": "weak"}).to_string(),
        "{this is not json".to_string(),
        json!({"username": "eve", "email": "eve@example.org", "groups": ["nogroup"]}).to_string(),
        json!({"username": "fay", "email": "fay@example.org", "org": "nowhere"}).to_string(),
        json!({"username": "bad name", "email": "g@example.org"}).to_string(),
        json!({"email": "nobody@example.org"}).to_string(),
        json!({"username": "gus", "email": "gus@example.org", "role": "god"}).to_string(),
        json!({"username": "hal", "email": "hal@example.org", "role": "admin"}).to_string(),
    ]
}

/// Lines of `import_lines()` that must fail (1-based).
const BAD_LINES: &[i64] = &[3, 4, 5, 6, 7, 8, 9, 10, 11];

fn import_env() -> Env {
    let env = Env::init();
    env.json(&["org", "add", "acme"]);
    env.json(&["group", "add", "staff"]);
    env.json(&["group", "add", "ops"]);
    env
}

#[test]
fn import_jsonl_reports_bad_lines_and_imports_the_rest() {
    let env = import_env();
    let file = env.path("users.jsonl");
    std::fs::write(&file, import_lines().join("\n") + "\n").unwrap();
    let out = env.ctl(&["--json", "import", file.to_str().unwrap()]);
    out.code(1);
    let v = out.json();
    assert_eq!(v["imported"], 3, "{out:?}");
    assert_eq!(v["failed"], BAD_LINES.len(), "{out:?}");
    assert_eq!(v["dry_run"], false);
    let lines: Vec<i64> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(e["error"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
            e["line"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(lines, BAD_LINES, "{out:?}");
    for n in BAD_LINES {
        out.stderr_has(&format!("line {n}:"));
    }
    let users = env.json(&["user", "list"]);
    assert_eq!(names(&users), set(&["ann", "ben", "hal"]));
    let ann = env.json(&["user", "show", "ann"]);
    assert_eq!(
        (&ann["has_password"], &ann["email"]),
        (&json!(true), &json!("ann@example.org"))
    );
    let ben = env.json(&["user", "show", "ben"]);
    assert_eq!(ben["org"], "acme");
    assert_eq!(ben["role"], "org-admin");
    assert_eq!(ben["must_change_password"], true);
    assert_eq!(ben["has_password"], false);
    assert_eq!(ben["groups"].as_array().unwrap().len(), 2, "{ben:#}");
    assert_eq!(env.json(&["user", "show", "hal"])["role"], "admin");
    // Passwords from the file are not echoed anywhere.
    assert!(!out.stdout.contains(STRONG) && !out.stderr.contains(STRONG));
}

#[test]
fn import_all_good_exits_0_and_blank_lines_are_skipped() {
    let env = import_env();
    let file = env.path("good.jsonl");
    let lines = import_lines();
    std::fs::write(&file, format!("{}\n\n{}\n", lines[0], lines[1])).unwrap();
    let v = env.json(&["import", file.to_str().unwrap()]);
    assert_eq!(v["imported"], 2, "{v:#}");
    assert_eq!(v["failed"], 0);
    assert_eq!(v["errors"], json!([]));
    // Table mode says what happened too.
    let env = import_env();
    env.ctl(&["import", file.to_str().unwrap()]).ok();
    assert_eq!(env.json(&["user", "list"]).as_array().unwrap().len(), 2);
}

#[test]
fn import_dry_run_creates_nothing() {
    let env = import_env();
    let file = env.path("users.jsonl");
    std::fs::write(&file, import_lines().join("\n") + "\n").unwrap();
    let audit_before = env.audit(&[]).len();
    let out = env.ctl(&["--json", "import", file.to_str().unwrap(), "--dry-run"]);
    out.code(1);
    let v = out.json();
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["failed"], BAD_LINES.len());
    let lines: Vec<i64> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_i64().unwrap())
        .collect();
    assert_eq!(lines, BAD_LINES);
    assert_eq!(
        env.json(&["user", "list"]),
        json!([]),
        "--dry-run imported users"
    );
    assert!(env.audit(&[]).len() <= audit_before + 1);
}

#[test]
fn import_csv() {
    let env = import_env();
    let file = env.path("users.csv");
    let csv = format!(
        "username,email,org,groups,role,password\n\
         ann,ann@example.org,acme,staff;ops,org-admin,{STRONG}\n\
         ben,ben@example.org,,,,\n\
         cat,broken-email,,,,\n\
         \"dee\",\"dee@example.org\",\"acme\",\"staff\",\"user\",\"\"\n"
    );
    std::fs::write(&file, csv).unwrap();
    // The format comes from the extension.
    let out = env.ctl(&["--json", "import", file.to_str().unwrap()]);
    out.code(1);
    let v = out.json();
    assert_eq!(v["imported"], 3, "{out:?}");
    assert_eq!(v["failed"], 1);
    // Line numbers count the header as line 1.
    assert_eq!(v["errors"][0]["line"], 4, "{out:?}");
    out.stderr_has("line 4:");
    let ann = env.json(&["user", "show", "ann"]);
    assert_eq!(ann["org"], "acme");
    assert_eq!(ann["role"], "org-admin");
    assert_eq!(ann["has_password"], true);
    let groups: BTreeSet<String> = ann["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap().to_string())
        .collect();
    assert_eq!(groups, set(&["staff", "ops"]));
    let ben = env.json(&["user", "show", "ben"]);
    assert_eq!(ben["has_password"], false);
    assert_eq!(ben["role"], "user");

    // --format overrides the extension.
    let env = import_env();
    let txt = env.path("users.txt");
    std::fs::write(&txt, "username,email\nzed,zed@example.org\n").unwrap();
    let v = env.json(&["import", txt.to_str().unwrap(), "--format", "csv"]);
    assert_eq!(v["imported"], 1, "{v:#}");
    let txt2 = env.path("users.data");
    std::fs::write(
        &txt2,
        json!({"username": "yan", "email": "y@example.org"}).to_string(),
    )
    .unwrap();
    let v = env.json(&["import", txt2.to_str().unwrap(), "--format", "jsonl"]);
    assert_eq!(v["imported"], 1, "{v:#}");
}

#[test]
fn import_reports_a_line_that_is_not_utf8_and_imports_the_others() {
    let env = import_env();
    let mut data = Vec::new();
    data.extend_from_slice(b"{\"username\":\"ann\",\"email\":\"ann@example.org\"}\n");
    data.extend_from_slice(b"{\"username\":\"b\xff\xfe\",\"email\":\"b@example.org\"}\n");
    data.extend_from_slice(b"{\"username\":\"cat\",\"email\":\"cat@example.org\"}\n");
    let file = env.path("mixed.jsonl");
    std::fs::write(&file, &data).unwrap();
    let out = env.ctl(&["--json", "import", file.to_str().unwrap()]);
    // As for any other bad line: reported by number, the rest imported, exit 1.
    out.code(1).stderr_has("line 2:").stderr_has("UTF-8");
    let v = out.json();
    assert_eq!(
        (&v["imported"], &v["failed"]),
        (&json!(2), &json!(1)),
        "{out:?}"
    );
    assert_eq!(v["errors"][0]["line"], 2, "{out:?}");
    assert_eq!(names(&env.json(&["user", "list"])), set(&["ann", "cat"]));

    // CSV alike (the header is line 1).
    let env = import_env();
    let mut data = b"username,email\nann,ann@example.org\n".to_vec();
    data.extend_from_slice(b"b\xff\xfe,b@example.org\n");
    data.extend_from_slice(b"cat,cat@example.org\n");
    let file = env.path("mixed.csv");
    std::fs::write(&file, &data).unwrap();
    let out = env.ctl(&["--json", "import", file.to_str().unwrap()]);
    out.code(1).stderr_has("line 3:").stderr_has("UTF-8");
    let v = out.json();
    assert_eq!(
        (&v["imported"], &v["failed"]),
        (&json!(2), &json!(1)),
        "{out:?}"
    );
    assert_eq!(v["errors"][0]["line"], 3, "{out:?}");
    assert_eq!(names(&env.json(&["user", "list"])), set(&["ann", "cat"]));
}

#[test]
fn import_a_missing_file_fails_clearly() {
    let env = import_env();
    let out = env.ctl(&["import", env.path("nope.jsonl").to_str().unwrap()]);
    assert!(matches!(out.code, Some(1) | Some(2) | Some(3)), "{out:?}");
    out.fails(out.code.unwrap());
}

// ---------------------------------------------------------------------------------------
// --json errors
// ---------------------------------------------------------------------------------------

#[test]
fn json_errors_have_code_and_message() {
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    let cases: &[(&[&str], i32, &str)] = &[
        (&["user", "show", "ghost"], 3, "not_found"),
        (
            &["user", "add", "alice", "--email", "a@example.org"],
            4,
            "conflict",
        ),
        (&["user", "add", "x", "--email", "nope"], 2, "invalid_input"),
        (
            &["user", "add", "bad name", "--email", "a@example.org"],
            2,
            "invalid_input",
        ),
        (&["audit", "--since", "yesterday"], 2, "invalid_input"),
        (&["policy", "set", "bogus=1"], 2, "invalid_input"),
        (&["org", "delete", "default"], 4, "conflict"),
        (&["group", "delete", "nogroup"], 3, "not_found"),
    ];
    for (args, code, err) in cases {
        let out = env.ctl_json(args);
        out.code(*code).json_error(err);
        // And the one-sentence message on stderr.
        out.fails(*code);
        let first = out.stderr.lines().next().unwrap_or("");
        assert!(
            first.len() < 400,
            "stderr is not one short sentence: {out:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Every subcommand parses (clap's debug assertions run when a subcommand is built), argon2
// parameters, and the commands beyond the foundation: terms, sessions, devices
// ---------------------------------------------------------------------------------------

#[test]
fn every_subcommand_has_help() {
    let paths: &[&[&str]] = &[
        &["init"],
        &["user"],
        &["user", "add"],
        &["user", "list"],
        &["user", "show"],
        &["user", "set"],
        &["user", "disable"],
        &["user", "enable"],
        &["user", "delete"],
        &["passwd"],
        &["enroll"],
        &["totp"],
        &["totp", "test"],
        &["reset-2fa"],
        &["unlock"],
        &["audit"],
        &["org"],
        &["org", "add"],
        &["org", "list"],
        &["org", "delete"],
        &["group"],
        &["group", "add"],
        &["group", "list"],
        &["group", "delete"],
        &["policy"],
        &["policy", "show"],
        &["policy", "set"],
        &["device", "list"],
        &["device", "revoke"],
        &["session", "list"],
        &["session", "revoke"],
        &["terms", "set"],
        &["terms", "show"],
        &["import"],
        &["generate"],
        &["generate", "completions"],
        &["generate", "man"],
    ];
    for path in paths {
        let mut cmd = authctl_cmd();
        cmd.args(*path).arg("--help");
        let out = run(cmd, None, TIMEOUT);
        out.no_panic();
        out.ok().stdout_has("Usage");
    }
}

/// The stored PHC string of a user.
fn stored_hash(env: &Env, name: &str) -> String {
    let c = rusqlite::Connection::open(&env.db).unwrap();
    c.query_row(
        "SELECT password_hash FROM users WHERE username = ?1",
        [name],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn password_hashes_follow_the_argon2_policy() {
    // Defaults: OWASP's argon2id baseline.
    let env = Env::init_default();
    env.add_user("alice", STRONG, &[]);
    let phc = stored_hash(&env, "alice");
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    // Changed parameters apply to the next hash.
    env.ctl(&["policy", "set", "argon2.m_kib=1024", "argon2.t=1"])
        .ok();
    env.add_user("bob", STRONG, &[]);
    let phc = stored_hash(&env, "bob");
    assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{phc}");
    // Two users with one password get different hashes (salted).
    env.add_user("carol", STRONG, &[]);
    assert_ne!(stored_hash(&env, "carol"), phc);
}

#[test]
fn terms_set_and_show() {
    let env = Env::init();
    let v = env.json(&["terms", "show"]);
    assert!(
        v.is_null() || v.get("version").is_some_and(Value::is_null),
        "{v:#}"
    );

    let file = env.path("terms.txt");
    std::fs::write(&file, "Be nice.\nNo sharing passwords.\n").unwrap();
    let f = file.to_str().unwrap();
    env.json(&["terms", "set", "--version", "2026-11", "--file", f]);
    let v = env.json(&["terms", "show"]);
    assert_eq!(v["version"], "2026-11", "{v:#}");
    assert!(
        v["text"]
            .as_str()
            .is_some_and(|t| t.contains("No sharing passwords.")),
        "{v:#}"
    );
    // A published version never changes.
    env.ctl(&["terms", "set", "--version", "2026-11", "--file", f])
        .fails(4);
    // From standard input.
    env.json_stdin(
        &["terms", "set", "--version", "2026-12", "--file", "-"],
        "Be nicer.\n",
    );
    assert_eq!(env.json(&["terms", "show"])["version"], "2026-12");
    let out = env.ctl(&[
        "terms",
        "set",
        "--version",
        "x",
        "--file",
        env.path("nope.txt").to_str().unwrap(),
    ]);
    assert_ne!(out.code, Some(0), "{out:?}");
    out.fails(out.code.unwrap());
    let rows = env.audit(&["--event", "admin.terms.set", "--outcome", "success"]);
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert!(rows.iter().all(|r| r["actor"] == os_user()));
}

/// `authctl --db DB ARGS` under a 1 GiB address-space limit: a command that reads without
/// bound dies there instead of eating the machine's memory.
fn ctl_bounded(env: &Env, args: &[&str]) -> Out {
    let mut inner = format!(
        "ulimit -v 1048576; exec '{AUTHCTL}' --db '{}'",
        env.db.display()
    );
    for a in args {
        inner.push_str(&format!(" '{a}'"));
    }
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &inner]).env_remove("AUTHCTL_DB");
    run(cmd, None, Duration::from_secs(10))
}

#[test]
fn terms_set_reads_no_more_than_the_size_limit() {
    use authcore::store::terms::MAX_TEXT_BYTES;
    let env = Env::init();
    let limit = format!("{} KiB", MAX_TEXT_BYTES / 1024);
    // An endless file: refused after limit + 1 bytes, quickly.
    let started = std::time::Instant::now();
    let out = ctl_bounded(
        &env,
        &["terms", "set", "--version", "v1", "--file", "/dev/zero"],
    );
    out.fails(2)
        .stderr_has("/dev/zero is larger than the terms limit")
        .stderr_has(&limit)
        .stderr_has(&MAX_TEXT_BYTES.to_string());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // One byte over the limit, from a file and from standard input: refused.
    let over = "a".repeat(MAX_TEXT_BYTES + 1);
    let file = env.path("big.txt");
    std::fs::write(&file, &over).unwrap();
    let f = file.to_str().unwrap();
    env.ctl(&["terms", "set", "--version", "v1", "--file", f])
        .fails(2)
        .stderr_has(&limit);
    env.ctl_json(&["terms", "set", "--version", "v1", "--file", f])
        .code(2)
        .json_error("invalid_input");
    env.ctl_stdin(&["terms", "set", "--version", "v1", "--file", "-"], &over)
        .fails(2)
        .stderr_has("standard input is larger than the terms limit");
    // Nothing changed, and the refusals are audited.
    let v = env.json(&["terms", "show"]);
    assert!(
        v.is_null() || v.get("version").is_some_and(Value::is_null),
        "{v:#}"
    );
    let refused = env.audit(&["--event", "admin.terms.set", "--outcome", "failure"]);
    assert_eq!(refused.len(), 4, "{refused:#?}");
    // Exactly the limit is accepted.
    std::fs::write(&file, &over[1..]).unwrap();
    let v = env.json(&["terms", "set", "--version", "v1", "--file", f]);
    assert_eq!(v["bytes"], MAX_TEXT_BYTES, "{v:#}");
    // The help names the same limit.
    env.ctl(&["terms", "set", "--help"]).ok().stdout_has(&limit);
}

#[test]
fn sessions_and_devices_list_and_revoke() {
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    // Without the daemon nobody has logged in: empty lists, and revoking is harmless.
    assert_eq!(env.json(&["session", "list"]), json!([]));
    assert_eq!(env.json(&["session", "list", "--user", "alice"]), json!([]));
    env.ctl(&["session", "list", "--user", "ghost"]).fails(3);
    env.ctl(&["session", "revoke", "999"]).fails(3);
    env.ctl(&["session", "revoke", "--user", "alice"]).ok();
    env.ctl(&["session", "revoke", "--user", "ghost"]).fails(3);
    env.ctl(&["session", "revoke"]).fails(2);
    assert_eq!(env.json(&["device", "list"]), json!([]));
    env.ctl(&["device", "list", "--user", "ghost"]).fails(3);
    env.ctl(&["device", "revoke", "999"]).fails(3);
    env.ctl(&["device", "revoke", "--user", "alice"]).ok();
}

// ---------------------------------------------------------------------------------------
// Robustness: many writers at once, a closed pipe
// ---------------------------------------------------------------------------------------

#[test]
fn concurrent_writers_all_succeed() {
    let env = Env::init();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let cmd = env.cmd(&[
                "--json",
                "user",
                "add",
                &format!("user{i}"),
                "--email",
                &format!("u{i}@example.org"),
                "--password-stdin",
            ]);
            std::thread::spawn(move || run(cmd, Some(format!("{STRONG}\n").as_bytes()), TIMEOUT))
        })
        .collect();
    for h in handles {
        h.join().unwrap().ok();
    }
    assert_eq!(env.json(&["user", "list"]).as_array().unwrap().len(), 8);
    assert_eq!(env.audit(&["--event", "admin.user.add"]).len(), 8);
}

/// authctl starts from C's `main`, skipping std's start-up (cli/start.rs), and does
/// itself what std did there: a standard stream the caller closed is opened on
/// `/dev/null` (read-write), so that no file authctl opens can take its number and
/// receive its output. (SQLite, opening the database on such a number, would plug it
/// with `/dev/null` read-only: the test tells the two apart.)
#[test]
fn a_closed_standard_output_is_opened_on_dev_null() {
    use std::io::Write;
    use std::process::Stdio;
    use std::time::Instant;

    let env = Env::init();
    let inner = env.cmd(&[
        "user",
        "add",
        "tara",
        "--email",
        "t@example.org",
        "--password-stdin",
    ]);
    // sh closes fds 1 and 2 and becomes authctl, which then waits for the password.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"exec "$@" >&- 2>&-"#)
        .arg("sh")
        .arg(inner.get_program())
        .args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut child = cmd.stdin(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let fd_open = |fd: u32| -> Option<(std::path::PathBuf, u32)> {
        let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
        let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
        Some((target, u32::from_str_radix(flags.trim(), 8).ok()?))
    };
    let is_authctl = || {
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.ends_with("authctl"))
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let (out, err) = loop {
        if is_authctl() {
            if let (Some(out), Some(err)) = (fd_open(1), fd_open(2)) {
                break (out, err);
            }
        }
        assert!(
            Instant::now() < deadline,
            "authctl never had fds 1 and 2 open (out {:?}, err {:?})",
            fd_open(1),
            fd_open(2)
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    for (name, (target, flags)) in [("stdout", out), ("stderr", err)] {
        assert_eq!(target, std::path::Path::new("/dev/null"), "{name}");
        assert_eq!(
            flags & 0o3,
            0o2,
            "{name} is not /dev/null read-write: {flags:o}"
        );
    }
    // And the command itself works as ever.
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{STRONG}").unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
    assert_eq!(env.json(&["user", "show", "tara"])["username"], "tara");
}

#[test]
fn a_closed_pipe_ends_quietly() {
    use std::io::Read;
    use std::process::Stdio;

    let env = Env::init();
    let file = env.path("many.jsonl");
    let lines: Vec<String> = (0..1500)
        .map(|i| {
            json!({"username": format!("user{i:04}"), "email": format!("u{i}@example.org")})
                .to_string()
        })
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let v = env.json(&["import", file.to_str().unwrap()]);
    assert_eq!(v["imported"], 1500, "{v:#}");
    // Like `authctl user list | head -c 100`: the reader goes away early.
    for args in [
        &["--json", "user", "list"][..],
        &["user", "list"],
        &["audit", "--limit", "0", "--format", "csv"],
    ] {
        let mut child = env
            .cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut buf = [0u8; 100];
        stdout.read_exact(&mut buf).unwrap();
        drop(stdout);
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(
            !stderr.contains("panicked"),
            "{args:?} panicked on a closed pipe: {stderr}"
        );
        assert_eq!(
            status.code(),
            Some(0),
            "{args:?} on a closed pipe: {status:?} {stderr}"
        );
    }
}
