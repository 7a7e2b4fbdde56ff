//! Key rotation (issue 16): `authctl key rotate` while authd serves logins — no sign-in
//! fails; the TOTP secrets and the audit chain end under the new key, so the old key
//! removed from the file still lets everyone sign in; recovery codes issued before still
//! work while their key is listed; `key retire` refuses while anything needs the key and
//! names it; a missing key is named.

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{json, Value};

use crate::common::*;
use crate::daemon_common::{enroll_totp, Daemon, Totp};

const USERS: [&str; 4] = ["tara", "tom", "tess", "theo"];

fn key_lines(env: &Env) -> String {
    std::fs::read_to_string(env.key()).unwrap()
}

/// The key file without key `id` (the operator deleting it by hand).
fn drop_key_by_hand(env: &Env, id: u32) {
    let text: String = key_lines(env)
        .lines()
        .filter(|l| !l.starts_with(&format!("key {id} ")))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(env.key(), text).unwrap();
}

fn needs(list: &Value, id: u64) -> Vec<Value> {
    list.as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .map(|k| k["uses"].as_array().unwrap().clone())
        .unwrap_or_default()
}

#[test]
fn rotation_under_load_then_the_old_key_retires() {
    let env = Env::init();
    // A site of the first key-file format: it keeps working with no action.
    let first = key_lines(&env);
    assert!(first.starts_with("authd-key-v2\n"), "{first}");
    let hex = first
        .lines()
        .find_map(|l| l.strip_prefix("key 1 "))
        .unwrap()
        .to_string();
    std::fs::write(env.key(), format!("authd-key-v1\n{hex}\n")).unwrap();

    env.add_user("bob", STRONG, &[]);
    let mut apps: Vec<(Totp, Vec<String>)> = USERS
        .iter()
        .map(|u| {
            env.add_user(u, STRONG, &[]);
            enroll_totp(&env, u)
        })
        .collect();
    let mut d = Daemon::start(&env, &[]);
    Totp::settle();
    d.login_totp(USERS[0], STRONG, &mut apps[0].0);

    // Logins run through the whole rotation: every one must succeed.
    let stop = AtomicBool::new(false);
    let (rotated, logins) = std::thread::scope(|s| {
        let (d, stop) = (&d, &stop);
        let password_logins = s.spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                d.login_session("bob", STRONG);
                n += 1;
            }
            n
        });
        let apps = &mut apps;
        let totp_logins = s.spawn(move || {
            let mut n = 0;
            // Each app's current step, then the next: two full logins per user.
            for _ in 0..2 {
                for (u, (app, _)) in USERS.iter().zip(apps.iter_mut()) {
                    d.login_totp(u, STRONG, app);
                    n += 1;
                    std::thread::sleep(std::time::Duration::from_millis(150));
                }
            }
            n
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        let r = env.json(&["key", "rotate"]);
        let t = totp_logins.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        (r, password_logins.join().unwrap() + t)
    });
    assert!(logins > 8, "{logins} logins ran during the rotation");
    assert_eq!(rotated["key"], 2, "{rotated:#}");
    assert_eq!(rotated["reencrypted"], USERS.len(), "{rotated:#}");
    let file = key_lines(&env);
    assert!(file.contains("current 2\n") && file.contains("key 1 ") && file.contains("key 2 "));
    // Recovery codes are keyed hashes: still under key 1, and key 1 is still needed.
    let list = env.json(&["key", "list"]);
    let uses = needs(&list, 1);
    assert!(
        uses.iter()
            .any(|u| u["what"] == "unused recovery codes" && u["count"] == json!(10 * USERS.len())),
        "{list:#}"
    );
    assert!(
        needs(&list, 1).iter().all(|u| u["what"] != "TOTP secrets"),
        "{list:#}"
    );
    // A rotation leaves rows authd sealed under key 1 before it noticed the new file to
    // `key rekey`; after it the audit log needs key 1 no more.
    env.json(&["key", "rekey"]);
    let list = env.json(&["key", "list"]);
    assert!(
        needs(&list, 1)
            .iter()
            .all(|u| u["what"] != "audit log MACs and signatures"),
        "{list:#}"
    );

    // Retiring key 1 is refused while recovery codes need it, naming them; the current
    // key cannot be retired.
    env.ctl(&["key", "retire", "1"])
        .fails(4)
        .stderr_has("key 1 is still needed by 40 unused recovery codes");
    env.ctl(&["key", "retire", "2"])
        .fails(2)
        .stderr_has("current key");
    assert!(key_lines(&env).contains("key 1 "), "the file is unchanged");

    // A recovery code issued before the rotation still signs in.
    let flow = d.second_factor_flow(USERS[1], STRONG);
    d.post(
        "/v1/login/recovery",
        &json!({"flow": flow, "code": apps[1].1[0]}),
    )
    .expect_status("authenticated");
    // New values go under key 2: a new code mailed or a re-enrolment is keyed k2.
    let v = env.enroll(USERS[3]);
    apps[3] = (Totp::from_enrollment(&v), strings_of(&v["recovery_codes"]));
    d.assert_healthy();
    drop(d);

    // The old key deleted from the file by hand: everyone still signs in with their
    // password and authenticator, and the audit chain verifies under key 2 alone.
    let with_key_1 = key_lines(&env);
    drop_key_by_hand(&env, 1);
    let d = Daemon::start(&env, &[]);
    for (u, (app, _)) in USERS.iter().zip(apps.iter_mut()) {
        d.login_totp(u, STRONG, app);
    }
    d.login_session("bob", STRONG);
    env.json(&["audit", "verify"]);
    // authctl verify names the key the remaining recovery codes need.
    let out = env.ctl(&["verify"]);
    out.code(1).stdout_has("key 1 is not in the key file");
    drop(d);

    // With key 1 back, the old codes replaced (re-enrolment), key 1 retires.
    std::fs::write(env.key(), with_key_1).unwrap();
    for u in &USERS[..3] {
        env.enroll(u);
    }
    let r = env.json(&["key", "retire", "1"]);
    assert_eq!(r["keys"], json!([2]), "{r:#}");
    assert!(!key_lines(&env).contains("key 1 "));
    let v = env.json(&["verify"]);
    assert_eq!(v["ok"], true, "{v:#}");
    let events: Vec<String> = env
        .audit(&["--event", "admin.key."])
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["event"].as_str().unwrap(),
                r["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            "admin.key.rotate success",
            "admin.key.retire failure",
            "admin.key.retire failure",
            "admin.key.retire success"
        ],
        "{events:?}"
    );
}

/// A key file whose key does not belong, and a stored secret whose key is missing, are
/// both named.
#[test]
fn a_wrong_or_missing_key_is_named() {
    let env = Env::init();
    env.add_user("tara", STRONG, &[]);
    let (mut app, _) = enroll_totp(&env, "tara");
    let backup = env.path("before.db");
    env.json(&["backup", backup.to_str().unwrap()]);
    env.json(&["key", "rotate"]);
    // A backup from before the rotation, restored beside today's key file: key 1 belongs,
    // key 2 is learnt, and it verifies.
    let restored = Env::empty();
    std::fs::copy(&backup, &restored.db).unwrap();
    std::fs::copy(env.key(), restored.key()).unwrap();
    let v = restored.json(&["verify"]);
    assert_eq!(v["ok"], true, "{v:#}");
    let list = restored.json(&["key", "list"]);
    assert_eq!(list[1]["current"], true, "{list:#}");
    // Key 2 of another database's rotation does not belong here.
    let other = Env::init();
    other.json(&["key", "rotate"]);
    let theirs = key_lines(&other);
    let ours = key_lines(&env);
    let mixed: String = ours
        .lines()
        .filter(|l| !l.starts_with("key 2 "))
        .chain(theirs.lines().filter(|l| l.starts_with("key 2 ")))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(env.key(), mixed).unwrap();
    env.ctl(&["user", "list"])
        .fails(1)
        .stderr_has("key 2 of the key file");
    // Only key 1 left, but the TOTP secret is under key 2 now.
    std::fs::write(env.key(), &ours).unwrap();
    let text: String = ours
        .lines()
        .filter(|l| !l.starts_with("key 2 "))
        .map(|l| {
            if l == "current 2" {
                "current 1\n".to_string()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(env.key(), text).unwrap();
    env.ctl(&["totp", "test", "tara", &app.fresh()])
        .no_panic()
        .stderr_has("needs key 2");
}

fn strings_of(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}
