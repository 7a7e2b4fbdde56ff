//! Running it for years (issue 16): `authctl backup` while authd serves, the README's
//! restore procedure followed step by step, `authctl verify`, and the tamper-evident audit
//! log (`authctl audit verify|prune|export`) against edits made behind the key's back.

use rusqlite::Connection;
use serde_json::Value;

use crate::common::*;
use crate::daemon_common::{enroll_totp, Daemon};

fn audit_rows(env: &Env) -> i64 {
    let c = Connection::open(&env.db).unwrap();
    c.query_row("SELECT count(*) FROM audit", (), |r| r.get(0))
        .unwrap()
}

/// The README's "Backups and restore", step by step: a backup taken while authd serves
/// signs in with the same password and authenticator after the original is lost.
#[test]
fn backup_while_serving_then_restore_as_the_readme_says() {
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    let (mut app, _) = enroll_totp(&env, "alice");
    let d = Daemon::start(&env, &[]);
    d.login_totp("alice", STRONG, &mut app);

    // 1. authctl backup FILE, while authd serves: logins of bob run meanwhile.
    env.add_user("bob", STRONG, &[]);
    let backup = env.path("backup.db");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (b, logins) = std::thread::scope(|s| {
        let d = &d;
        let stop = &stop;
        let t = s.spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 200 {
                d.login_session("bob", STRONG);
                n += 1;
            }
            n
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        let b = env.json(&["backup", backup.to_str().unwrap()]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (b, t.join().unwrap())
    });
    assert!(logins > 0);
    assert!(b["bytes"].as_u64().unwrap() > 0, "{b}");
    assert_eq!(b["key_file"], env.key().to_str().unwrap(), "{b}");
    let text = env.ctl(&["backup", env.path("b2.db").to_str().unwrap()]);
    text.ok().stdout_has("The key file is NOT in the backup");
    d.login_totp("alice", STRONG, &mut app);
    // Never over an existing file.
    env.ctl(&["backup", backup.to_str().unwrap()])
        .fails(4)
        .stderr_has("exists already");
    // 2. Keep the key file apart: here, a copy beside the backup.
    let key_copy = env.path("backup.key");
    std::fs::copy(env.key(), &key_copy).unwrap();
    drop(d);

    // The disaster: the database and its key are gone.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", env.db.display()));
    }
    std::fs::remove_file(env.key()).unwrap();

    // 3. Restore: copy the backup into place and the key beside it, then verify.
    std::fs::copy(&backup, &env.db).unwrap();
    std::fs::copy(&key_copy, env.key()).unwrap();
    let v = env.json(&["verify"]);
    assert_eq!(v["ok"], true, "{v:#}");
    // 4. Start authd: the same password and authenticator sign in.
    let d = Daemon::start(&env, &[]);
    d.login_totp("alice", STRONG, &mut app);
    d.login_session("bob", STRONG);
    // A wrong key is named, not misread.
    drop(d);
    let other = Env::init();
    std::fs::copy(other.key(), env.key()).unwrap();
    let out = env.ctl(&["verify"]);
    assert_ne!(out.code, Some(0), "{out:?}");
    out.stderr_has("key");
}

#[test]
fn verify_reports_what_is_wrong_and_exits_non_zero() {
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    enroll_totp(&env, "alice");
    env.ctl(&["verify"])
        .ok()
        .stdout_has("the key opens every TOTP secret");
    let c = Connection::open(&env.db).unwrap();
    c.execute("UPDATE totp_credentials SET secret_enc = x'0011'", ())
        .unwrap();
    drop(c);
    let out = env.ctl(&["--json", "verify"]);
    out.code(1);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let failed: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(failed, vec!["secrets"], "{v:#}");
}

/// The attacker: the sqlite3 shell on the database file (write access, no key).
fn attack(env: &Env, sql: &str) {
    require("sqlite3", "sqlite3");
    let out = std::process::Command::new("sqlite3")
        .arg(&env.db)
        .arg(sql)
        .output()
        .unwrap();
    assert!(out.status.success(), "sqlite3 {sql}: {out:?}");
}

/// The first broken row `authctl audit verify --json` names (exit 1), or None (exit 0).
fn broken(env: &Env) -> Option<i64> {
    let out = env.ctl(&["--json", "audit", "verify"]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    match out.code {
        Some(0) => {
            assert!(v["broken"].is_null(), "{v}");
            None
        }
        Some(1) => Some(v["broken"]["id"].as_i64().unwrap()),
        _ => panic!("audit verify: {out:?}"),
    }
}

#[test]
fn audit_verify_finds_edits_deletions_swaps_and_truncation() {
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    for _ in 0..4 {
        env.ctl(&["unlock", "alice"]).ok();
    }
    env.ctl(&["audit", "verify"])
        .ok()
        .stdout_has("rows verified");
    let n = audit_rows(&env);
    assert!(n >= 6, "{n}");
    // An edit: a success rewritten as a failure.
    attack(&env, "UPDATE audit SET outcome='failure' WHERE id=3");
    assert_eq!(broken(&env), Some(3));
    env.ctl(&["audit", "verify"])
        .code(1)
        .stdout_has("broken at row 3");
    attack(&env, "UPDATE audit SET outcome='success' WHERE id=3");
    assert_eq!(broken(&env), None);
    // A swap of two rows (their MACs moved with them).
    let swap = "UPDATE audit SET id=-4 WHERE id=4; UPDATE audit SET id=4 WHERE id=5; \
                UPDATE audit SET id=5 WHERE id=-4;";
    attack(&env, swap);
    assert_eq!(broken(&env), Some(4));
    attack(&env, swap);
    assert_eq!(broken(&env), None);
    // A truncated tail: the newest rows deleted.
    attack(&env, &format!("DELETE FROM audit WHERE id > {}", n - 2));
    assert_eq!(broken(&env), Some(n - 1));
    // A deletion in the middle.
    attack(&env, "DELETE FROM audit WHERE id=2");
    assert_eq!(broken(&env), Some(3));
    // A broken log is not pruned (that would destroy the evidence).
    env.ctl(&["audit", "prune", "--before", "1s"])
        .fails(2)
        .stderr_has("broken");
}

#[test]
fn prune_keeps_the_chain_and_export_ships_rows_with_their_macs() {
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    env.ctl(&["unlock", "alice"]).ok();
    // Everything so far is more than a second old after this pause.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    env.ctl(&["unlock", "alice"]).ok();
    let before = audit_rows(&env);
    let v = env.json(&["audit", "prune", "--before", "1s"]);
    let deleted = v["deleted"].as_i64().unwrap();
    assert!(deleted >= 3, "{v}");
    // The prune's own row is kept.
    assert_eq!(audit_rows(&env), before - deleted + 1);
    env.ctl(&["audit", "verify"])
        .ok()
        .stdout_has("pruned through row");
    // Export: JSON lines, oldest first, each with a MAC; --after-id continues.
    let out = env.ctl(&["audit", "export"]);
    let rows: Vec<Value> = out
        .ok()
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len() as i64, audit_rows(&env), "{rows:?}");
    assert!(rows
        .iter()
        .all(|r| r["mac"].as_str().is_some_and(|m| m.len() == 64)));
    let first = rows[0]["id"].as_i64().unwrap();
    let after = env.ctl(&["audit", "export", "--after-id", &first.to_string()]);
    assert_eq!(after.ok().stdout.lines().count(), rows.len() - 1);
    env.ctl(&["audit", "export", "--since", "yesterday-ish"])
        .fails(2);
}

/// A backup taken while two clients sign in as fast as they can is one moment of the
/// database: every session in it has the audit row of the login that made it and no
/// login's row lacks its session (no transaction half-present), the sign-ins after the
/// backup began are not in it, and its audit chain verifies.
#[test]
fn backup_under_load_holds_whole_transactions_only() {
    let env = Env::init();
    env.add_user("bob", STRONG, &[]);
    env.add_user("carol", STRONG, &[]);
    let d = Daemon::start(&env, &[]);
    let backup = env.path("under-load.db");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let logins = std::thread::scope(|s| {
        let workers: Vec<_> = ["bob", "carol"]
            .into_iter()
            .map(|u| {
                let (d, stop) = (&d, &stop);
                s.spawn(move || {
                    let mut n = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        d.login_session(u, STRONG);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(400));
        env.json(&["backup", backup.to_str().unwrap()]);
        std::thread::sleep(std::time::Duration::from_millis(400));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        workers.into_iter().map(|w| w.join().unwrap()).sum::<u64>()
    });
    drop(d);
    let count = |db: &std::path::Path, sql: &str| -> i64 {
        let c = Connection::open(db).unwrap();
        c.query_row(sql, (), |r| r.get(0)).unwrap()
    };
    let sessions = "SELECT count(*) FROM sessions";
    let rows = "SELECT count(*) FROM audit WHERE event='login.password' AND outcome='success'";
    let (b_sessions, b_rows) = (count(&backup, sessions), count(&backup, rows));
    assert!(b_sessions > 0, "sign-ins before the backup are in it");
    assert_eq!(
        b_sessions, b_rows,
        "each session with its login's audit row"
    );
    let (live_sessions, live_rows) = (count(&env.db, sessions), count(&env.db, rows));
    assert_eq!(live_sessions, live_rows);
    assert_eq!(live_sessions as u64, logins);
    assert!(
        live_sessions > b_sessions,
        "the sign-ins after the backup began are not in it ({b_sessions} of {live_sessions})"
    );
    // The copy, restored with the key, verifies and serves.
    let restored = Env::empty();
    std::fs::copy(&backup, &restored.db).unwrap();
    std::fs::copy(env.key(), restored.key()).unwrap();
    let v = restored.json(&["verify"]);
    assert_eq!(v["ok"], true, "{v:#}");
    let d = Daemon::start(&restored, &[]);
    d.login_session("carol", STRONG);
}
