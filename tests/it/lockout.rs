//! Smart lockout (issue 14, part 1) against the real `authd` over loopback.
//!
//! authd runs behind a "proxy" it trusts (`--trusted-proxy 127.0.0.1/32`), so each request
//! names its client address in `X-Forwarded-For`: that is how these tests come from many
//! networks (127.0.0.x would all be one /24). Familiar networks: 203.0.113.0/24 (home);
//! strangers come from 198.51.100.0/24, 192.0.2.0/24 and 10.x.y.0/24.
//!
//! - 9 wrong passwords from one address lock out unfamiliar sources; a 10th guess from a
//!   new address is refused without evaluating the password (the right one too, in far
//!   less time than one argon2 verification, audited `unfamiliar_locked`);
//! - the owner on a remembered device, and from the /24 of an earlier sign-in, signs in,
//!   and is told about the failed attempts (login answer and `GET /v1/session`);
//! - 200 concurrent guesses spread over 20 addresses: exactly 9 evaluated;
//! - `lockout.mode=account`: the seed's lock for everyone; `authctl unlock` and the admin
//!   API show and clear both states; one notice per lock.
//!
//! `timed` mode (lifts after the duration, doubles) is tested with an injected clock in
//! `src/login_tests.rs` and `src/lockout.rs`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::Env;
use crate::daemon_common::*;

const HOME: &str = "203.0.113.5";
const HOME_TOO: &str = "203.0.113.77";

fn start(env: &Env) -> Daemon {
    Daemon::start(env, &["--trusted-proxy", "127.0.0.1/32"])
}

fn login_from(d: &Daemon, ip: &str, user: &str, pw: &str) -> Resp {
    post_from(
        d,
        ip,
        "/v1/login",
        &json!({"username": user, "password": pw}),
    )
}

/// Audit rows of `login.password` failures for `user` with `reason`.
fn password_failures(env: &Env, user: &str, reason: &str) -> Vec<Value> {
    audit_events(env, user, "login.password")
        .into_iter()
        .filter(|r| r["outcome"] == "failure" && r["reason"] == reason)
        .collect()
}

fn detail(row: &Value) -> Value {
    match &row["detail"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
        v => v.clone(),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// 9 wrong passwords from one address lock out unfamiliar sources, not the account: a
/// 10th guess from any new address is refused before its password is hashed (the right
/// password too, in a fraction of one argon2 verification); the owner from the /24 of an
/// earlier sign-in still signs in and is told about the 9 failures.
#[test]
fn nine_wrong_passwords_lock_out_strangers_but_not_the_owner_at_home() {
    let env = provision();
    // A slow hash (64 MiB, 3 passes) makes an evaluated password easy to tell apart.
    policy(&env, &["argon2.m_kib=65536", "argon2.t=3"]);
    add_user(&env, "ada", "school", &[], "user");
    let mut d = start(&env);
    login_from(&d, HOME, "ada", PW).expect_status("authenticated");

    let mut evaluated = Vec::new();
    for _ in 0..9 {
        let t = Instant::now();
        login_from(&d, "198.51.100.1", "ada", "Wrong-Password-1!").expect_generic();
        evaluated.push(t.elapsed());
    }
    let u = user_show(&env, "ada");
    assert_eq!(u["unfamiliar_locked"], true, "{u:#}");
    assert_eq!(u["unfamiliar_failures"], 9, "{u:#}");
    assert_eq!(u["failed_attempts"], 0, "{u:#}");
    assert_eq!(
        u["status"], "active",
        "the account itself is not locked: {u:#}"
    );
    let wrong = password_failures(&env, "ada", "wrong_password");
    assert_eq!(wrong.len(), 9);
    assert!(
        wrong.iter().all(|r| detail(r)["source"] == "unfamiliar"),
        "{wrong:#?}"
    );
    let locks = audit_events(&env, "ada", "account.locked");
    assert_eq!(locks.len(), 1, "{locks:#?}");
    assert_eq!(locks[0]["reason"], "too_many_unfamiliar_failures");

    // New addresses, the right password: refused, unevaluated, not counted.
    let mut refused = Vec::new();
    for ip in [
        "192.0.2.1",
        "10.9.8.7",
        "198.51.100.200",
        "192.0.2.99",
        "10.1.1.1",
    ] {
        let t = Instant::now();
        login_from(&d, ip, "ada", PW).expect_generic();
        refused.push(t.elapsed());
    }
    let (e, r) = (median(evaluated), median(refused));
    assert!(
        r * 4 < e,
        "a refusal while locked out ({r:?}) must not evaluate the password ({e:?} each)"
    );
    let cheap = password_failures(&env, "ada", "unfamiliar_locked");
    assert_eq!(cheap.len(), 5, "each refusal audited");
    assert!(cheap.iter().all(|r| detail(r)["source"] == "unfamiliar"));
    assert_eq!(password_failures(&env, "ada", "wrong_password").len(), 9);
    assert_eq!(
        user_show(&env, "ada")["unfamiliar_failures"],
        9,
        "nothing more counted"
    );

    // The owner from another address of the home /24 signs in, and is told.
    let v = login_from(&d, HOME_TOO, "ada", PW).expect_status("authenticated");
    assert_eq!(v["failed_attempts_since_last_sign_in"], 9, "{v:#}");
    let session = v["session"].as_str().expect("a session");
    let s = d.get_auth("/v1/session", session).expect(200);
    assert_eq!(s["failed_attempts_since_last_sign_in"], 9, "{s:#}");
    // Reported once: the next sign-in has nothing new to tell.
    let v = login_from(&d, HOME, "ada", PW).expect_status("authenticated");
    assert!(
        v.get("failed_attempts_since_last_sign_in").is_none(),
        "{v:#}"
    );
    // Strangers stay locked out after the owner's sign-ins.
    login_from(&d, "192.0.2.1", "ada", PW).expect_generic();
    d.assert_healthy();
}

/// The owner on a remembered device signs in (with the device standing in for the second
/// factor) from a network never used, while strangers are locked out; a stranger's pending
/// second-factor flow is dead, even with the right code.
#[test]
fn the_owner_on_a_remembered_device_signs_in_while_strangers_are_locked_out() {
    let env = provision();
    add_user(&env, "bea", "school", &["pupil-data"], "user");
    let (mut app, _) = enroll_totp(&env, "bea");
    let mut d = start(&env);
    // Sign in once from a café and remember the device (the café is then familiar too).
    let flow = login_from(&d, "100.64.1.1", "bea", PW).expect_status("second_factor_required")
        ["flow"]
        .as_str()
        .unwrap()
        .to_string();
    let v = post_from(
        &d,
        "100.64.1.1",
        "/v1/login/totp",
        &json!({"flow": flow, "code": app.fresh(), "remember_device": true}),
    )
    .expect_status("authenticated");
    let device = v["device_token"]
        .as_str()
        .expect("a device token")
        .to_string();

    // A stranger who knows the password opens a flow, then guesses codes and passwords.
    let stranger = login_from(&d, "198.51.100.4", "bea", PW)
        .expect_status("second_factor_required")["flow"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..4 {
        post_from(
            &d,
            "198.51.100.4",
            "/v1/login/totp",
            &json!({"flow": stranger, "code": wrong_totp(&app)}),
        )
        .expect_generic();
    }
    for i in 0..5 {
        login_from(&d, &format!("192.0.2.{i}"), "bea", "Wrong-Password-1!").expect_generic();
    }
    let u = user_show(&env, "bea");
    assert_eq!(
        (u["unfamiliar_locked"].clone(), u["failed_attempts"].clone()),
        (json!(true), json!(0)),
        "{u:#}"
    );
    // The stranger's flow is refused before its code is looked at (the right code).
    post_from(
        &d,
        "198.51.100.4",
        "/v1/login/totp",
        &json!({"flow": stranger, "code": app.fresh()}),
    )
    .expect_generic();
    let rows: Vec<Value> = audit_events(&env, "bea", "login.totp")
        .into_iter()
        .filter(|r| r["reason"] == "unfamiliar_locked")
        .collect();
    assert_eq!(rows.len(), 1, "{rows:#?}");

    // The owner, on the remembered device, from a network never used before.
    let v = post_from(
        &d,
        "10.200.0.1",
        "/v1/login",
        &json!({"username": "bea", "password": PW, "device_token": device}),
    )
    .expect_status("authenticated");
    assert_eq!(v["failed_attempts_since_last_sign_in"], 9, "{v:#}");
    // That sign-in made its network familiar; without the device, a new one is a
    // stranger's.
    login_from(&d, "10.200.0.2", "bea", PW).expect_status("second_factor_required");
    login_from(&d, "10.201.0.1", "bea", PW).expect_generic();
    d.assert_healthy();
}

/// 200 concurrent guesses spread over 20 addresses: exactly 9 are evaluated (audited
/// `wrong_password`); the other 191 are refused as `unfamiliar_locked`.
#[test]
fn concurrent_guesses_from_twenty_addresses_evaluate_exactly_nine() {
    let env = provision();
    add_user(&env, "cy", "school", &[], "user");
    let d = std::sync::Arc::new(start(&env));
    let handles: Vec<_> = (0..20)
        .map(|a| {
            let d = d.clone();
            std::thread::spawn(move || {
                let ip = format!("198.51.{a}.10");
                (0..10)
                    .map(|i| login_from(&d, &ip, "cy", &format!("Wrong-Guess-{a}-{i}!")).status)
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    let statuses: Vec<u16> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(statuses.len(), 200);
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(password_failures(&env, "cy", "wrong_password").len(), 9);
    assert_eq!(
        password_failures(&env, "cy", "unfamiliar_locked").len(),
        191
    );
    let u = user_show(&env, "cy");
    assert_eq!(
        (
            u["unfamiliar_failures"].clone(),
            u["failed_attempts"].clone()
        ),
        (json!(9), json!(0))
    );
    let mut d = std::sync::Arc::into_inner(d).expect("every client thread ended");
    d.assert_healthy();
}

/// `lockout.mode=account` is the seed: 9 failures from anywhere lock the account for
/// everyone, the owner at home too, until `authctl unlock`.
#[test]
fn account_mode_locks_the_account_for_everyone() {
    let env = provision();
    policy(&env, &["lockout.mode=account"]);
    add_user(&env, "dee", "school", &[], "user");
    let d = start(&env);
    login_from(&d, HOME, "dee", PW).expect_status("authenticated");
    for _ in 0..9 {
        login_from(&d, "198.51.100.1", "dee", "Wrong-Password-1!").expect_generic();
    }
    let u = user_show(&env, "dee");
    assert_eq!(
        (u["status"].clone(), u["failed_attempts"].clone()),
        (json!("locked"), json!(9)),
        "{u:#}"
    );
    assert_eq!(u["unfamiliar_locked"], false);
    login_from(&d, HOME, "dee", PW).expect_generic();
    let refused = password_failures(&env, "dee", "locked");
    assert_eq!(refused.len(), 1, "the owner is locked out too");
    env.ctl(&["unlock", "dee"]).ok();
    login_from(&d, HOME, "dee", PW).expect_status("authenticated");
}

/// `authctl user show` (text and JSON) and the admin API show both states; `authctl
/// unlock` clears every state; each lock queues one notice.
#[test]
fn both_states_are_shown_and_unlock_clears_them() {
    let env = provision();
    add_user(&env, "eve", "school", &[], "user");
    add_user(&env, "root", "school", &[], "admin");
    let (mut app, _) = enroll_totp(&env, "root");
    let d = start(&env);
    login_from(&d, HOME, "eve", PW).expect_status("authenticated");
    for _ in 0..12 {
        login_from(&d, "198.51.100.1", "eve", "Wrong-Password-1!").expect_generic();
    }
    let text = env.ctl(&["user", "show", "eve"]).ok().stdout.clone();
    assert!(text.contains("locked out, 9 failed attempts"), "{text}");
    let root = d.login_totp("root", PW, &mut app);
    let v = d.get_auth("/v1/admin/users/eve", &root).expect(200);
    let u = if v.get("user").is_some() {
        v["user"].clone()
    } else {
        v
    };
    assert_eq!(u["unfamiliar_locked"], true, "{u:#}");
    assert_eq!(u["status"], "active", "{u:#}");
    let notices: i64 = rusqlite::Connection::open(&env.db)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM outbox WHERE kind='unfamiliar_locked'",
            (),
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        notices, 1,
        "one notice per lock, however many refusals follow"
    );
    let out = env.json(&["unlock", "eve"]);
    assert_eq!(out["was_locked"], true, "{out:#}");
    let u = user_show(&env, "eve");
    assert_eq!(u["unfamiliar_locked"], false, "{u:#}");
    assert_eq!(u["unfamiliar_failures"], 0, "{u:#}");
    login_from(&d, "198.51.100.1", "eve", PW).expect_status("authenticated");
}
