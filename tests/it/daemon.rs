//! Issue 3, end to end: the real `authd` on 127.0.0.1:0 over a database provisioned with
//! the real `authctl`, driven over HTTP. The authenticator-app seed (`000_…`) and the
//! password parts of the case-management seed (`004_…`): enrolment, TOTP, sessions,
//! expiry, terms, lockout (also under concurrency), the org-admin API, and bad input.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{self, assert_has_keys, now, Env};
use crate::daemon_common::*;

/// The seed `000_…` in full: log in, scan the QR code (here: read the secret and the
/// otpauth URI), confirm with a code from the app, log in again and give a fresh code;
/// the session is valid until logout.
#[test]
fn authenticator_app_journey_from_first_login_to_logout() {
    let env = provision();
    // Seed lockout: this test counts failures of a user who never signed in (smart
    // lockout would count them as unfamiliar sources'; see tests/it/lockout.rs).
    policy(&env, &["lockout.mode=account"]);
    add_user(&env, "alice", "school", &["pupil-data"], "user");
    let mut d = Daemon::start(&env, &[]);

    // First login: a user of a require-2FA group with no factor must enrol.
    let v = d.login("alice", PW).expect_status("enrollment_required");
    assert_eq!(v["methods"], json!(["totp"]), "{v:#}");
    let flow = v["flow"].as_str().expect("flow").to_string();
    assert!(
        v.get("session").is_none(),
        "no session before the second factor"
    );

    // The enrolment flow cannot skip to the second-factor step or serve another step.
    d.totp(&flow, "123456").expect_invalid_flow();
    d.post("/v1/login/terms", &json!({"flow": flow, "accept": true}))
        .expect_invalid_flow();

    // The QR code screen: secret, otpauth URI (what the QR code holds) and an SVG.
    let e = d
        .post("/v1/login/enroll", &json!({"flow": flow}))
        .expect(200);
    assert_has_keys(&e, &["flow", "secret", "otpauth_uri", "qr_svg"]);
    let secret = e["secret"].as_str().expect("secret");
    let uri = e["otpauth_uri"].as_str().expect("uri");
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    assert!(
        uri.contains("alice"),
        "the account name is in the URI: {uri}"
    );
    for param in ["issuer=", "digits=6", "period=30", "algorithm=SHA1"] {
        assert!(uri.contains(param), "{param} missing from {uri}");
    }
    let svg = e["qr_svg"].as_str().expect("svg");
    assert!(
        svg.contains("<svg"),
        "qr_svg is an SVG document: {svg:.100}"
    );
    let flow = e["flow"].as_str().expect("flow").to_string();
    // The enrolment step is done: the same flow cannot start another enrolment.
    d.post("/v1/login/enroll", &json!({"flow": flow}))
        .expect_invalid_flow();

    // A wrong code and a malformed code are refused; the malformed one is bad input.
    let mut app = Totp::new(secret);
    d.post(
        "/v1/login/enroll/confirm",
        &json!({"flow": flow, "code": wrong_totp(&app)}),
    )
    .expect_generic();
    d.post(
        "/v1/login/enroll/confirm",
        &json!({"flow": flow, "code": "12a456"}),
    )
    .expect_error(400, "invalid_input");
    assert_eq!(
        failed_attempts(&env, "alice"),
        1,
        "only the wrong code counted"
    );

    // Confirm with a code computed independently (oathtool).
    let step = Totp::step_now();
    let confirm_code = oathtool(secret, step * 30);
    let v = d
        .post(
            "/v1/login/enroll/confirm",
            &json!({"flow": flow, "code": confirm_code}),
        )
        .expect_status("enrolled");
    app.used(step);
    let codes = strings(&v["recovery_codes"]);
    assert_eq!(codes.len(), 10, "ten recovery codes at enrolment: {v:#}");
    assert_eq!(codes.iter().collect::<BTreeSet<_>>().len(), 10, "distinct");
    assert!(
        v.get("session").is_none(),
        "enrolment does not log in: {v:#}"
    );
    d.post(
        "/v1/login/enroll/confirm",
        &json!({"flow": flow, "code": confirm_code}),
    )
    .expect_invalid_flow();

    // "Log into Nexus again": now the second factor is asked for.
    let v = d.login("alice", PW).expect_status("second_factor_required");
    assert_eq!(v["methods"], json!(["totp", "recovery_code"]), "{v:#}");
    let flow = v["flow"].as_str().expect("flow").to_string();
    // The code that confirmed the enrolment cannot also serve this login.
    d.totp(&flow, &confirm_code).expect_generic();
    // A fresh code does.
    let v = d.totp(&flow, &app.fresh()).expect_status("authenticated");
    assert_has_keys(&v, &["session", "expires_at", "user"]);
    assert!(
        v.get("device_token").is_none(),
        "not asked to remember: {v:#}"
    );
    let user = &v["user"];
    assert_has_keys(user, &["id", "username", "email", "org", "role", "groups"]);
    assert_eq!(user["username"], "alice");
    assert_eq!(user["email"], "alice@example.org");
    assert_eq!(user["org"], "school");
    assert_eq!(user["role"], "user");
    assert_eq!(user["groups"], json!(["pupil-data"]));
    let session = v["session"].as_str().expect("session").to_string();
    assert!(session.len() >= 22, "≥128 random bits: {session}");
    assert_eq!(failed_attempts(&env, "alice"), 0, "a full login resets");
    // The finished flow is spent.
    d.totp(&flow, &app.fresh()).expect_invalid_flow();

    // The session is valid…
    let s = d.get_auth("/v1/session", &session).expect(200);
    assert_eq!(s["user"]["username"], "alice", "{s:#}");
    assert!(s["expires_at"].is_string(), "{s:#}");
    assert_eq!(sessions_of(&env, "alice").len(), 1);
    // …until logout.
    let r = d.post_auth("/v1/logout", &session, None);
    assert_eq!(r.status, 204, "{r:?}");
    d.get_auth("/v1/session", &session)
        .expect_error(401, "unauthorized");
    assert_eq!(d.post_auth("/v1/logout", &session, None).status, 401);
    assert!(sessions_of(&env, "alice").is_empty());
    d.get("/v1/session").expect_error(401, "unauthorized");

    // Every step left its audit row.
    for event in [
        "login.enroll",
        "login.enroll_confirm",
        "login.totp",
        "session.logout",
    ] {
        assert!(
            audit_events(&env, "alice", event)
                .iter()
                .any(|r| r["outcome"] == "success"),
            "no successful {event} in the audit log"
        );
    }
    d.assert_healthy();
}

/// The seed's "subsequent log-in": username and password, tick the terms, then the code
/// from the app — a code from the step just past ("close to expiry") is still accepted.
#[test]
fn subsequent_login_accepts_terms_then_a_code_close_to_expiry() {
    let env = provision();
    add_user(&env, "bea", "school", &["pupil-data"], "user");
    let (mut app, _) = enroll_totp(&env, "bea");
    set_terms(&env, "2024-08", "Use pupil data for school purposes only.");
    let mut d = Daemon::start(&env, &[]);

    let v = d.login("bea", PW).expect_status("terms_required");
    assert_eq!(v["terms"]["version"], "2024-08");
    assert_eq!(
        v["terms"]["text"],
        "Use pupil data for school purposes only."
    );
    let flow = v["flow"].as_str().expect("flow");
    let v = d
        .post("/v1/login/terms", &json!({"flow": flow, "accept": true}))
        .expect_status("second_factor_required");
    let flow = v["flow"].as_str().expect("flow").to_string();
    // The previous step's code: the one the app showed a moment ago.
    Totp::settle();
    let prev = Totp::step_now() - 1;
    d.totp(&flow, &app.code_at_step(prev))
        .expect_status("authenticated");
    app.used(prev);
    // And again at the next login (terms every login by default).
    let v = d.login("bea", PW).expect_status("terms_required");
    let v = d
        .post(
            "/v1/login/terms",
            &json!({"flow": v["flow"], "accept": true}),
        )
        .expect_status("second_factor_required");
    d.totp(v["flow"].as_str().expect("flow"), &app.fresh())
        .expect_status("authenticated");
    d.assert_healthy();
}

/// Seed `004_…`: an expired password admits no session; the new one is typed twice,
/// checked against the live checklist, must differ; then the user logs in again.
#[test]
fn expired_password_is_changed_then_the_user_logs_in_again() {
    let env = provision();
    add_user(&env, "bob", "school", &[], "user");
    env.ctl(&["passwd", "bob", "--expire"]).ok();
    let mut d = Daemon::start(&env, &[]);

    // The live checklist the UI draws.
    let pol = d.get("/v1/password/policy").expect(200);
    let rules = pol["rules"].as_array().expect("rules").clone();
    let ids: BTreeSet<String> = rules
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    for id in ["lowercase", "uppercase", "digit", "special", "min_length"] {
        assert!(
            ids.contains(id),
            "the seed's requirement {id} is a rule: {pol:#}"
        );
    }
    for r in &rules {
        assert_has_keys(r, &["id", "description"]);
    }
    let unmet_ids = |v: &Value| -> BTreeSet<String> {
        v["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .filter(|r| r["met"] == false)
            .map(|r| r["id"].as_str().expect("id").to_string())
            .collect()
    };
    let set = |ids: &[&str]| -> BTreeSet<String> { ids.iter().map(|s| s.to_string()).collect() };
    let check = d
        .post("/v1/password/check", &json!({"password": "abc"}))
        .expect(200);
    assert_eq!(check["ok"], false);
    assert_eq!(
        unmet_ids(&check),
        set(&["uppercase", "digit", "special", "min_length"]),
        "{check:#}"
    );
    let check = d
        .post("/v1/password/check", &json!({"password": "Tr0ub4dor&3x"}))
        .expect(200);
    assert_eq!(check["ok"], true, "{check:#}");
    assert!(unmet_ids(&check).is_empty(), "every rule met: {check:#}");

    // The expired login.
    let v = d.login("bob", PW).expect_status("password_expired");
    assert!(v.get("session").is_none());
    let flow = v["flow"].as_str().expect("flow").to_string();
    let shown: BTreeSet<String> = v["policy"]
        .as_array()
        .expect("policy rules")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(shown, ids, "the expired answer lists the rules: {v:#}");
    // The expiry step cannot be skipped to a second factor or a session.
    d.totp(&flow, "123456").expect_invalid_flow();

    let change = |new: &str, confirm: &str| {
        d.post(
            "/v1/login/password",
            &json!({"flow": flow, "new_password": new, "confirm_password": confirm}),
        )
    };
    // Typed twice, differently.
    let e = change("N3w-Password!x", "N3w-Password!y").expect_error(400, "invalid_input");
    assert!(
        e["message"]
            .as_str()
            .expect("message")
            .contains("passwords do not match"),
        "{e:#}"
    );
    // Weak: refused with each rule's status, the unmet ones named.
    let e = change("password1", "password1").expect_error(422, "policy_rejected");
    assert_eq!(unmet_ids(&e), set(&["uppercase", "special"]), "{e:#}");
    assert_eq!(e["rules"].as_array().expect("rules").len(), rules.len());
    let msg = e["message"].as_str().expect("message");
    for r in e["rules"].as_array().expect("rules") {
        if r["met"] == false {
            let desc = r["description"].as_str().expect("description");
            assert!(msg.contains(desc), "the message names {desc:?}: {msg}");
        }
    }
    // The same as the old one.
    change(PW, PW).expect_error(422, "policy_rejected");
    // A good one.
    let new = "N3w-Password!x";
    let v = change(new, new).expect(200);
    assert_eq!(
        v,
        json!({"status": "password_changed"}),
        "no session: {v:#}"
    );
    change("An0ther-Password!", "An0ther-Password!").expect_invalid_flow();

    // Log in again: the old password fails, the new one works.
    d.login("bob", PW).expect_generic();
    let v = d.login("bob", new).expect_status("authenticated");
    assert_eq!(v["user"]["username"], "bob");
    assert_eq!(failed_attempts(&env, "bob"), 0);
    assert!(
        audit_events(&env, "bob", "login.password_change")
            .iter()
            .any(|r| r["outcome"] == "success"),
        "the change is audited"
    );

    // Expiry by age (password.max_age_days), read at each request: pretend the password
    // was set two days ago.
    policy(&env, &["password.max_age_days=1"]);
    sql(
        &env,
        "UPDATE users SET password_changed_at = ?1 WHERE username = 'bob'",
        &[&(now() - 2 * 86_400)],
    );
    d.login("bob", new).expect_status("password_expired");
    policy(&env, &["password.max_age_days=0"]);
    let session = d.login_session("bob", new);

    // A signed-in change: the current password is checked, the new one twice and
    // against the policy; afterwards every session has ended.
    let pc = |cur: &str, new: &str, confirm: &str| {
        d.post_auth(
            "/v1/password/change",
            &session,
            Some(
                &json!({"current_password": cur, "new_password": new, "confirm_password": confirm}),
            ),
        )
    };
    pc("Wr0ng-Password!", "Th1rd-Password!", "Th1rd-Password!").expect_generic();
    pc(new, "Th1rd-Password!", "Th1rd-Password?").expect_error(400, "invalid_input");
    pc(new, "weak", "weak").expect_error(422, "policy_rejected");
    let v = pc(new, "Th1rd-Password!", "Th1rd-Password!").expect(200);
    assert_eq!(v["status"], "password_changed");
    d.get_auth("/v1/session", &session)
        .expect_error(401, "unauthorized");
    d.login("bob", new).expect_generic();
    d.login("bob", "Th1rd-Password!")
        .expect_status("authenticated");
    d.assert_healthy();
}

/// Terms every login (twice in a row), then once per version (a new version is asked
/// for once).
#[test]
fn terms_every_login_then_once_per_version() {
    let env = provision();
    add_user(&env, "tom", "school", &[], "user");
    set_terms(&env, "v1", "Be kind.\nNo sharing of pupil data.");
    policy(&env, &["terms.mode=every_login"]);
    let mut d = Daemon::start(&env, &[]);

    for round in 0..2 {
        let v = d.login("tom", PW).expect_status("terms_required");
        assert_eq!(v["terms"]["version"], "v1", "round {round}");
        assert_eq!(v["terms"]["text"], "Be kind.\nNo sharing of pupil data.");
        let flow = v["flow"].as_str().expect("flow").to_string();
        // Declining is refused; the flow stays usable; it cannot stand in for another step.
        d.post("/v1/login/terms", &json!({"flow": flow, "accept": false}))
            .expect_error(400, "invalid_input");
        d.totp(&flow, "123456").expect_invalid_flow();
        let v = d
            .post("/v1/login/terms", &json!({"flow": flow, "accept": true}))
            .expect_status("authenticated");
        assert_eq!(v["user"]["username"], "tom");
        d.post("/v1/login/terms", &json!({"flow": flow, "accept": true}))
            .expect_invalid_flow();
    }

    // Once per version: v1 is accepted already.
    policy(&env, &["terms.mode=once_per_version"]);
    d.login("tom", PW).expect_status("authenticated");
    // A new version is asked for once.
    set_terms(&env, "v2", "Version two.");
    let v = d.login("tom", PW).expect_status("terms_required");
    assert_eq!(v["terms"]["version"], "v2");
    d.post(
        "/v1/login/terms",
        &json!({"flow": v["flow"], "accept": true}),
    )
    .expect_status("authenticated");
    d.login("tom", PW).expect_status("authenticated");

    let accepted = audit_events(&env, "tom", "login.terms")
        .into_iter()
        .filter(|r| r["outcome"] == "success")
        .count();
    assert_eq!(accepted, 3, "every acceptance is recorded");
    d.assert_healthy();
}

/// 8 failures then a success resets the count; 9 lock; the right password then gets the
/// very same answer as a wrong one; `authctl unlock` restores.
#[test]
fn lockout_resets_on_success_locks_at_nine_and_unlock_restores() {
    let env = provision();
    // Seed lockout: this test counts failures of a user who never signed in (smart
    // lockout would count them as unfamiliar sources'; see tests/it/lockout.rs).
    policy(&env, &["lockout.mode=account"]);
    add_user(&env, "lou", "school", &[], "user");
    add_user(&env, "dis", "school", &[], "user");
    env.ctl(&["--yes", "user", "disable", "dis"]).ok();
    let mut d = Daemon::start(&env, &[]);

    for i in 1..=8 {
        d.login("lou", &format!("Wrong-{i}!x")).expect_generic();
    }
    assert_eq!(failed_attempts(&env, "lou"), 8);
    assert!(!is_locked(&env, "lou"));
    let before_lock = d.login_session("lou", PW);
    assert_eq!(
        failed_attempts(&env, "lou"),
        0,
        "a success resets the count"
    );

    for i in 1..=8 {
        d.login("lou", &format!("Wrong-{i}!x")).expect_generic();
    }
    assert!(!is_locked(&env, "lou"), "8 do not lock");
    let ninth = d.login("lou", "Wrong-9!x");
    ninth.expect_generic();
    assert!(is_locked(&env, "lou"), "the 9th failure locks");
    assert_eq!(failed_attempts(&env, "lou"), 9);
    let locked = audit_events(&env, "lou", "account.locked");
    assert_eq!(locked.len(), 1, "one account.locked row: {locked:#?}");

    // Locked: the right password gets exactly the same answer as a wrong one, as an
    // unknown user, and a disabled account do.
    let right = d.login("lou", PW);
    right.expect_generic();
    assert_eq!(right.body, ninth.body);
    assert_eq!(right.body, d.login("nobody-at-all", PW).body);
    assert_eq!(right.body, d.login("dis", PW).body);
    assert_eq!(
        failed_attempts(&env, "lou"),
        9,
        "attempts on a locked account do not count"
    );
    // A lock also ends what the account had open.
    d.get_auth("/v1/session", &before_lock)
        .expect_error(401, "unauthorized");
    let reasons: BTreeSet<String> = audit_events(&env, "lou", "login.password")
        .iter()
        .filter_map(|r| r["reason"].as_str().map(str::to_string))
        .collect();
    assert!(
        reasons.contains("locked") && reasons.contains("wrong_password"),
        "{reasons:?}"
    );

    env.ctl(&["unlock", "lou"]).ok();
    assert!(!is_locked(&env, "lou"));
    assert_eq!(failed_attempts(&env, "lou"), 0);
    d.login("lou", PW).expect_status("authenticated");
    // The session from before the lock does not come back with the unlock.
    d.get_auth("/v1/session", &before_lock)
        .expect_error(401, "unauthorized");
    d.assert_healthy();
}

/// Failures count across every factor (password, TOTP code, recovery code), malformed
/// codes do not, and a lock ends the account's pending flows.
#[test]
fn lockout_counts_every_factor_and_ends_pending_flows() {
    let env = provision();
    // Seed lockout: this test counts failures of a user who never signed in (smart
    // lockout would count them as unfamiliar sources'; see tests/it/lockout.rs).
    policy(&env, &["lockout.mode=account"]);
    add_user(&env, "tina", "school", &["pupil-data"], "user");
    let (mut app, recovery) = enroll_totp(&env, "tina");
    let mut d = Daemon::start(&env, &[]);

    let pending = d.second_factor_flow("tina", PW);
    let flow = d.second_factor_flow("tina", PW);
    assert_eq!(failed_attempts(&env, "tina"), 0);
    for i in 0..4 {
        d.login("tina", &format!("Wrong-{i}!x")).expect_generic();
    }
    // Malformed codes are bad input and are not counted.
    for bad in ["12345", "1234567", "abcdef", "12345\u{0661}", ""] {
        d.totp(&flow, bad).expect_error(400, "invalid_input");
    }
    d.post("/v1/login/recovery", &json!({"flow": flow, "code": "!!"}))
        .expect_error(400, "invalid_input");
    assert_eq!(failed_attempts(&env, "tina"), 4);
    for _ in 0..4 {
        d.totp(&flow, &wrong_totp(&app)).expect_generic();
    }
    assert_eq!(failed_attempts(&env, "tina"), 8);
    assert!(!is_locked(&env, "tina"));
    let wrong_recovery = if recovery.iter().any(|c| c == "aaaaa-aaaaa") {
        "bbbbb-bbbbb"
    } else {
        "aaaaa-aaaaa"
    };
    d.post(
        "/v1/login/recovery",
        &json!({"flow": flow, "code": wrong_recovery}),
    )
    .expect_generic();
    assert!(
        is_locked(&env, "tina"),
        "the 9th failure (a recovery code) locks"
    );

    // The pending flows ended with the lock: even the right code is refused.
    let r = d.totp(&pending, &app.fresh());
    assert_eq!(r.status, 401, "{r:?}");
    let r = d.post(
        "/v1/login/recovery",
        &json!({"flow": flow, "code": recovery[0]}),
    );
    assert_eq!(r.status, 401, "{r:?}");
    d.login("tina", PW).expect_generic();
    assert!(sessions_of(&env, "tina").is_empty());
    d.assert_healthy();
}

/// 100 concurrent wrong passwords: locked at exactly 9 failures, never more, no success.
#[test]
fn concurrent_wrong_passwords_lock_at_exactly_the_limit() {
    let env = provision();
    // Seed lockout: this test counts failures of a user who never signed in (smart
    // lockout would count them as unfamiliar sources'; see tests/it/lockout.rs).
    policy(&env, &["lockout.mode=account"]);
    add_user(&env, "cc", "school", &[], "user");
    let d = Arc::new(Daemon::start(&env, &[]));
    let n = 100;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let d = d.clone();
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                let r = d.login("cc", &format!("Wrong-{i}!x"));
                (r.status, r.body)
            })
        })
        .collect();
    let results: Vec<(u16, Vec<u8>)> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let generic = serde_json::to_vec(&json!({"error": "invalid_credentials", "message": GENERIC}))
        .expect("json");
    for (status, body) in &results {
        assert_eq!(*status, 401, "{}", String::from_utf8_lossy(body));
        let v: Value = serde_json::from_slice(body).expect("json");
        assert_eq!(v, serde_json::from_slice::<Value>(&generic).expect("json"));
    }
    let u = user_show(&env, "cc");
    assert_eq!(u["failed_attempts"], 9, "never past the limit: {u:#}");
    assert!(is_locked(&env, "cc"));
    assert_eq!(audit_events(&env, "cc", "account.locked").len(), 1);
    assert_eq!(
        audit_events(&env, "cc", "login.password").len(),
        n,
        "every attempt is recorded"
    );
    assert!(sessions_of(&env, "cc").is_empty());
    d.login("cc", PW).expect_generic();
}

/// One valid TOTP code submitted concurrently on 50 flows: exactly one session.
#[test]
fn one_totp_code_on_fifty_concurrent_flows_succeeds_exactly_once() {
    let env = provision();
    add_user(&env, "race", "school", &["pupil-data"], "user");
    let (app, _) = enroll_totp(&env, "race");
    // Keep the account open so every answer is decided by the code alone.
    policy(&env, &["lockout.max_failures=1000"]);
    let d = Arc::new(Daemon::start(&env, &[]));
    let flows: Vec<String> = (0..50).map(|_| d.second_factor_flow("race", PW)).collect();
    let code = app.code_at_step(Totp::step_now());
    let barrier = Arc::new(Barrier::new(flows.len()));
    let handles: Vec<_> = flows
        .into_iter()
        .map(|flow| {
            let (d, b, code) = (d.clone(), barrier.clone(), code.clone());
            std::thread::spawn(move || {
                b.wait();
                d.totp(&flow, &code)
            })
        })
        .collect();
    let answers: Vec<Resp> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let ok: Vec<&Resp> = answers.iter().filter(|r| r.status == 200).collect();
    assert_eq!(ok.len(), 1, "exactly one success: {answers:?}");
    assert_eq!(ok[0].json()["status"], "authenticated");
    for r in answers.iter().filter(|r| r.status != 200) {
        r.expect_generic();
    }
    assert_eq!(sessions_of(&env, "race").len(), 1);
}

/// The seed's "reset two-factor authentication" button for administrators of their own
/// organisation (LA): an org admin lists, unlocks and resets users of their org, and
/// anything outside it answers exactly as a missing user does (and is audited).
#[test]
fn org_admin_unlocks_and_resets_inside_their_org_only() {
    let env = provision();
    // Seed lockout: this test counts failures of a user who never signed in (smart
    // lockout would count them as unfamiliar sources'; see tests/it/lockout.rs).
    policy(&env, &["lockout.mode=account"]);
    add_user(&env, "head", "school", &[], "org-admin");
    add_user(&env, "boss", "school", &[], "org-admin");
    add_user(&env, "pupil", "school", &["pupil-data"], "user");
    add_user(&env, "plain", "school", &[], "user");
    add_user(&env, "outsider", "other", &[], "user");
    add_user(&env, "root", "other", &[], "admin");
    let (mut head_app, _) = enroll_totp(&env, "head");
    let (mut root_app, _) = enroll_totp(&env, "root");
    let (_pupil_app, _) = enroll_totp(&env, "pupil");
    let mut d = Daemon::start(&env, &[]);

    // Admin accounts need their second factor (enrolment first when they have none).
    d.login("boss", PW).expect_status("enrollment_required");
    let admin = d.login_totp("head", PW, &mut head_app);

    // Lock a user inside the org and one outside it.
    for name in ["pupil", "outsider"] {
        for i in 0..9 {
            d.login(name, &format!("Wrong-{i}!x")).expect_generic();
        }
        assert!(is_locked(&env, name));
    }

    // The org admin sees their org only.
    let list = d.get_auth("/v1/admin/users", &admin).expect(200);
    let names: BTreeSet<String> = list["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["username"].as_str().expect("username").to_string())
        .collect();
    let want: BTreeSet<String> = ["head", "boss", "pupil", "plain"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names, want, "{list:#}");
    let locked = d
        .get_auth("/v1/admin/users?locked=true", &admin)
        .expect(200);
    let locked: Vec<&str> = locked["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["username"].as_str().expect("username"))
        .collect();
    assert_eq!(locked, vec!["pupil"]);
    let p = d.get_auth("/v1/admin/users/pupil", &admin).expect(200);
    assert_eq!(p["username"], "pupil");
    assert_eq!(p["failed_attempts"], 9);
    let text = serde_json::to_string(&p).expect("json");
    for secret in ["argon2", "password_hash", "secret", "token"] {
        assert!(
            !text.contains(secret),
            "the admin view shows {secret}: {p:#}"
        );
    }

    // Outside the org: exactly the answer of a missing user, for every action.
    for (method, tail) in [("GET", ""), ("POST", "/unlock"), ("POST", "/reset-2fa")] {
        let send = |name: &str| {
            let path = format!("/v1/admin/users/{name}{tail}");
            let auth = format!("Bearer {admin}");
            d.request(method, &path, &[("Authorization", auth.as_str())], None)
        };
        let outside = send("outsider");
        let missing = send("no-such-user");
        outside.expect_error(404, "not_found");
        assert_eq!(outside.status, missing.status);
        assert_eq!(outside.body, missing.body, "{outside:?} vs {missing:?}");
    }
    assert!(
        is_locked(&env, "outsider"),
        "nothing changed outside the org"
    );
    let crossing: Vec<Value> = env
        .audit(&["--event", "admin.unlock", "--outcome", "failure"])
        .into_iter()
        .filter(|r| r["username"] == "outsider")
        .collect();
    assert_eq!(
        crossing.len(),
        1,
        "the crossing is audited once per attempt"
    );
    assert_eq!(crossing[0]["reason"], "other_org");
    assert_eq!(crossing[0]["actor"], "head");

    // Inside the org: unlock…
    let v = d
        .post_auth("/v1/admin/users/pupil/unlock", &admin, None)
        .expect(200);
    assert_eq!(v["username"], "pupil");
    assert_eq!(v["was_locked"], true);
    assert!(!is_locked(&env, "pupil"));
    d.login("pupil", PW).expect_status("second_factor_required");
    // …and reset the second factor (the user changed phones): they enrol again.
    d.post_auth("/v1/admin/users/pupil/reset-2fa", &admin, None)
        .expect(200);
    assert!(user_show(&env, "pupil")["mfa_method"].is_null());
    d.login("pupil", PW).expect_status("enrollment_required");
    let ok_rows = env.audit(&["--event", "admin.reset_2fa", "--outcome", "success"]);
    assert!(
        ok_rows
            .iter()
            .any(|r| r["username"] == "pupil" && r["actor"] == "head"),
        "{ok_rows:#?}"
    );

    // A peer org admin's account is not theirs to take over: 403, audited, unchanged.
    for tail in ["/unlock", "/reset-2fa"] {
        d.post_auth(&format!("/v1/admin/users/boss{tail}"), &admin, None)
            .expect_error(403, "forbidden");
    }
    let refused = env.audit(&["--user", "boss", "--outcome", "failure"]);
    assert_eq!(
        refused
            .iter()
            .filter(|r| r["reason"] == "insufficient_role" && r["actor"] == "head")
            .count(),
        2,
        "{refused:#?}"
    );
    // A global admin may.
    let root = d.login_totp("root", PW, &mut root_app);
    d.post_auth("/v1/admin/users/boss/unlock", &root, None)
        .expect(200);

    // Bad filters are bad input.
    for q in ["since=yesterday-ish", "outcome=maybe", "limit=0", "limit=x"] {
        d.get_auth(&format!("/v1/admin/audit?{q}"), &admin)
            .expect_error(400, "invalid_input");
    }
    let recent = d
        .get_auth("/v1/admin/audit?since=1h&outcome=failure", &admin)
        .expect(200);
    assert!(
        recent["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .all(|r| r["outcome"] == "failure"),
        "{recent:#}"
    );
    // The org admin's audit view is their org's.
    let rows = d
        .get_auth("/v1/admin/audit?user=pupil&outcome=success", &admin)
        .expect(200);
    let rows = rows["rows"].as_array().expect("rows");
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["outcome"] == "success"), "{rows:#?}");
    // Of another org's user, the org admin sees only their own (refused) actions.
    let theirs = d
        .get_auth("/v1/admin/audit?user=outsider", &admin)
        .expect(200);
    for r in theirs["rows"].as_array().expect("rows") {
        assert_eq!(r["actor"], "head", "a row of another org leaked: {r:#}");
    }
    assert!(
        !theirs["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .any(|r| r["event"] == "login.password"),
        "{theirs:#}"
    );

    // A plain user may not; no session is 401.
    let plain = d.login_session("plain", PW);
    d.get_auth("/v1/admin/users", &plain)
        .expect_error(403, "forbidden");
    d.post_auth("/v1/admin/users/pupil/unlock", &plain, None)
        .expect_error(403, "forbidden");
    d.get("/v1/admin/users").expect_error(401, "unauthorized");
    d.get_auth("/v1/admin/users", "forged-session-token")
        .expect_error(401, "unauthorized");

    // A global admin manages every org.
    let root = d.login_totp("root", PW, &mut root_app);
    d.get_auth("/v1/admin/users/pupil", &root).expect(200);
    let v = d
        .post_auth("/v1/admin/users/outsider/unlock", &root, None)
        .expect(200);
    assert_eq!(v["was_locked"], true);
    d.login("outsider", PW).expect_status("authenticated");
    d.assert_healthy();
}

/// Bad input of every kind: a clear 4xx JSON answer, never a 5xx or a crash, and
/// nothing changes.
#[test]
fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let env = provision();
    // Seed lockout: this test counts failures of a user who never signed in (smart
    // lockout would count them as unfamiliar sources'; see tests/it/lockout.rs).
    policy(&env, &["lockout.mode=account"]);
    add_user(&env, "victim", "school", &[], "user");
    add_user(&env, "vt", "school", &["pupil-data"], "user");
    let (mut app, _) = enroll_totp(&env, "vt");
    let mut d = Daemon::start(&env, &[]);

    let json_ct = [("Content-Type", "application/json")];
    let mut cases: Vec<(&str, &str, Vec<u8>, &[u16])> = vec![
        ("POST", "/v1/login", b"{".to_vec(), &[400]),
        ("POST", "/v1/login", b"not json".to_vec(), &[400]),
        ("POST", "/v1/login", b"".to_vec(), &[400]),
        ("POST", "/v1/login", b"null".to_vec(), &[400]),
        ("POST", "/v1/login", b"[]".to_vec(), &[400]),
        ("POST", "/v1/login", b"\"victim\"".to_vec(), &[400]),
        ("POST", "/v1/login", b"{}".to_vec(), &[400]),
        (
            "POST",
            "/v1/login",
            br#"{"username":"victim"}"#.to_vec(),
            &[400],
        ),
        ("POST", "/v1/login", br#"{"password":"x"}"#.to_vec(), &[400]),
        (
            "POST",
            "/v1/login",
            br#"{"username":1,"password":"x"}"#.to_vec(),
            &[400],
        ),
        (
            "POST",
            "/v1/login",
            br#"{"username":"victim","password":null}"#.to_vec(),
            &[400],
        ),
        (
            "POST",
            "/v1/login",
            br#"{"username":"victim","password":["x"]}"#.to_vec(),
            &[400],
        ),
        (
            "POST",
            "/v1/login",
            br#"{"username":"victim","password":"x","admin":true}"#.to_vec(),
            &[400],
        ),
        (
            "POST",
            "/v1/login",
            br#"{"username":"victim","password":"x","device_token":7}"#.to_vec(),
            &[400],
        ),
        (
            "POST",
            "/v1/login",
            br#"{"username":"victim","username":"vt","password":"x"}"#.to_vec(),
            &[400],
        ),
        (
            "POST",
            "/v1/login",
            br#"{"username":"victim","password":"x"} trailing"#.to_vec(),
            &[400],
        ),
        (
            "POST",
            "/v1/login",
            b"{\"username\":\"vic\xfftim\",\"password\":\"x\"}".to_vec(),
            &[400],
        ),
        (
            "POST",
            "/v1/login",
            b"\xef\xbb\xbf{\"username\":\"victim\",\"password\":\"x\"}".to_vec(),
            &[400],
        ),
        (
            "POST",
            "/v1/login/totp",
            br#"{"flow":5,"code":"123456"}"#.to_vec(),
            &[400],
        ),
        (
            "POST",
            "/v1/login/totp",
            br#"{"flow":"x","code":123456}"#.to_vec(),
            &[400],
        ),
        (
            "POST",
            "/v1/login/totp",
            br#"{"flow":"x","code":"123456","remember_device":"yes"}"#.to_vec(),
            &[400],
        ),
        (
            "POST",
            "/v1/login/totp",
            br#"{"code":"123456"}"#.to_vec(),
            &[400],
        ),
        (
            "POST",
            "/v1/login/terms",
            br#"{"flow":"x","accept":"yes"}"#.to_vec(),
            &[400],
        ),
        (
            "POST",
            "/v1/login/enroll",
            br#"{"flow":null}"#.to_vec(),
            &[400],
        ),
        (
            "POST",
            "/v1/login/recovery",
            br#"{"flow":"x"}"#.to_vec(),
            &[400],
        ),
        (
            "POST",
            "/v1/login/password",
            br#"{"flow":"x","new_password":"a"}"#.to_vec(),
            &[400],
        ),
        (
            "POST",
            "/v1/password/check",
            br#"{"password":12}"#.to_vec(),
            &[400],
        ),
        (
            "POST",
            "/v1/password/forgot",
            br#"{"user":"victim"}"#.to_vec(),
            &[400],
        ),
        (
            "POST",
            "/v1/password/forgot/reset",
            br#"{"flow":"x","answers":"a","new_password":"a","confirm_password":"a"}"#.to_vec(),
            &[400],
        ),
        ("GET", "/v1/nope", Vec::new(), &[404]),
        ("GET", "/v1", Vec::new(), &[404]),
        ("DELETE", "/v1/users/alice", Vec::new(), &[404]),
        ("GET", "/v1/login/nope", Vec::new(), &[404, 405]),
        (
            "POST",
            "/v1/admin/users/%FF/unlock",
            Vec::new(),
            &[400, 401, 404],
        ),
        ("GET", "/v1/login", Vec::new(), &[405]),
        ("DELETE", "/v1/login", Vec::new(), &[405]),
        ("PUT", "/v1/login/totp", Vec::new(), &[405]),
        ("PUT", "/v1/session", Vec::new(), &[405]),
        ("GET", "/v1/logout", Vec::new(), &[405]),
        ("PATCH", "/v1/admin/users", Vec::new(), &[405]),
        ("POST", "/healthz", Vec::new(), &[405]),
        ("DELETE", "/metrics", Vec::new(), &[405]),
    ];
    // Deep nesting, under the size limit.
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    cases.push(("POST", "/v1/login", deep.into_bytes(), &[400, 413]));
    // One megabyte.
    let big = format!(
        r#"{{"username":"victim","password":"{}"}}"#,
        "x".repeat(1 << 20)
    );
    cases.push(("POST", "/v1/login", big.into_bytes(), &[413]));

    for (method, path, body, want) in &cases {
        let r = if body.is_empty() && *method != "POST" {
            d.request(method, path, &[], None)
        } else {
            d.request(method, path, &json_ct, Some(body))
        };
        assert!(want.contains(&r.status), "want {want:?}: {r:?}");
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "errors are JSON: {r:?}"
        );
        let v = r.json();
        assert!(v["error"].is_string() && v["message"].is_string(), "{r:?}");
        if r.status == 405 {
            let allow = r
                .header("allow")
                .map(str::to_string)
                .or_else(|| v["allow"].as_str().map(str::to_string))
                .unwrap_or_else(|| panic!("a 405 says what is allowed: {r:?}"));
            assert!(
                !allow.split(',').any(|m| m.trim() == *method),
                "405 for {method} while allowing {allow:?}: {r:?}"
            );
        }
    }
    // A body that is not JSON at all.
    let r = d.request(
        "POST",
        "/v1/login",
        &[("Content-Type", "text/plain")],
        Some(b"username=victim&password=x"),
    );
    assert!(matches!(r.status, 400 | 415), "{r:?}");
    d.request(
        "POST",
        "/v1/login",
        &[("Content-Type", "application/json")],
        Some(&vec![b' '; 70_000]),
    )
    .expect_error(413, "payload_too_large");

    // Nothing changed: no failure counted, no lock, no session.
    assert_eq!(failed_attempts(&env, "victim"), 0);
    assert_eq!(failed_attempts(&env, "vt"), 0);
    assert!(!is_locked(&env, "victim"));
    assert!(sessions_of(&env, "victim").is_empty());

    // Odd Unicode usernames: the generic failure (or bad input), never a 5xx.
    let long = "x".repeat(10_000);
    let odd: Vec<String> = [
        "ｍａｌｌｏｒｙ",
        "\u{202E}mitciv",
        "vic\u{0}tim",
        "\u{0}",
        "🦀🔐",
        "e\u{301}ve",
        "\u{FEFF}victim",
        "victim\u{200B}",
        "\u{1F469}\u{200D}\u{1F4BB}",
        "\u{D7FF}\u{E000}\u{FFFD}",
        "",
        "   ",
        "../../etc/passwd",
        "victim'--",
        long.as_str(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for name in &odd {
        let r = d.login(name, "Wrong-password-1!");
        assert!(matches!(r.status, 400 | 401), "{r:?}");
        if r.status == 401 {
            r.expect_generic();
        } else {
            r.expect_error(400, "invalid_input");
        }
    }
    assert_eq!(
        failed_attempts(&env, "victim"),
        0,
        "none of these is victim"
    );
    // Spellings that normalise to the same name are the same account (one counter).
    for name in ["ｖｉｃｔｉｍ", "VICTIM", " victim "] {
        d.login(name, "Wrong-password-1!").expect_generic();
    }
    assert_eq!(
        failed_attempts(&env, "victim"),
        3,
        "one account, one counter"
    );
    let v = d.login("ＶＩＣＴＩＭ", PW).expect_status("authenticated");
    assert_eq!(v["user"]["username"], "victim");

    // Flow tokens: forged, empty, oversized, for another step, from another database,
    // expired — all 401 invalid_flow, and none consumes anything.
    let code_now = app.code_at_step(Totp::step_now());
    let forged = "A".repeat(43);
    let huge = "f".repeat(5000);
    let other_env = provision();
    add_user(&other_env, "vt", "school", &["pupil-data"], "user");
    other_env.enroll("vt");
    let other_d = Daemon::start(&other_env, &[]);
    let foreign = other_d.second_factor_flow("vt", PW);
    let enroll_flow = {
        add_user(&env, "newbie", "school", &["pupil-data"], "user");
        let v = d.login("newbie", PW).expect_status("enrollment_required");
        v["flow"].as_str().expect("flow").to_string()
    };
    for flow in [
        forged.as_str(),
        "",
        huge.as_str(),
        foreign.as_str(),
        enroll_flow.as_str(),
    ] {
        for (path, body) in [
            ("/v1/login/totp", json!({"flow": flow, "code": code_now})),
            (
                "/v1/login/recovery",
                json!({"flow": flow, "code": "abcde-12345"}),
            ),
            ("/v1/login/email", json!({"flow": flow, "code": code_now})),
            ("/v1/login/terms", json!({"flow": flow, "accept": true})),
            (
                "/v1/login/enroll/confirm",
                json!({"flow": flow, "code": code_now}),
            ),
            (
                "/v1/login/password",
                json!({"flow": flow, "new_password": "N3w-Password!x", "confirm_password": "N3w-Password!x"}),
            ),
        ] {
            let r = d.post(path, &body);
            assert!(matches!(r.status, 400 | 401), "{r:?}");
            if r.status == 401 {
                r.expect_invalid_flow();
            }
        }
    }
    // The enrolment flow was only probed, not spent.
    d.post("/v1/login/enroll", &json!({"flow": enroll_flow}))
        .expect(200);
    // Expired: the flow's time is up (moved back in the database, standing in for the
    // clock); the right code is refused and not spent.
    let flow = d.second_factor_flow("vt", PW);
    let changed = sql(
        &env,
        "UPDATE login_flows SET expires_at = ?1 WHERE token_hash = ?2",
        &[&(now() - 1), &token_hash(&flow)],
    );
    assert_eq!(changed, 1, "the flow is stored by its hash");
    d.totp(&flow, &code_now).expect_invalid_flow();
    let flow = d.second_factor_flow("vt", PW);
    let step = Totp::step_now();
    d.totp(&flow, &app.code_at_step(step))
        .expect_status("authenticated");
    app.used(step);
    assert_eq!(failed_attempts(&env, "vt"), 0);

    // Still serving, nothing panicked.
    assert_eq!(d.get("/healthz").status, 200);
    d.assert_healthy();
}

/// Health, metrics, and the per-address login rate limit (on by default).
#[test]
fn health_metrics_and_the_default_login_rate_limit() {
    let env = provision();
    add_user(&env, "rl", "school", &[], "user");
    let mut d = Daemon::start_raw(&env, &[]);

    let h = d.get("/healthz");
    assert_eq!(h.status, 200, "{h:?}");
    assert_eq!(h.text().trim(), "ok");
    d.login("rl", PW).expect_status("authenticated");
    d.login("rl", "Wrong-1!x").expect_generic();
    let m = d.get("/metrics");
    assert_eq!(m.status, 200, "{m:?}");
    assert!(
        m.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{m:?}"
    );
    let text = m.text();
    assert!(text.contains("authd_login_outcomes_total"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("authd_login_outcomes_total{") && l.contains("success")),
        "{text}"
    );

    // Lockouts are counted.
    for i in 0..9 {
        d.login("rl", &format!("Wrong-{i}!x")).expect_generic();
    }
    let text = d.get("/metrics").text();
    assert!(
        text.lines().any(|l| l == "authd_lockouts_total 1"),
        "{text}"
    );
    // A burst of logins from one address is throttled: 429 with Retry-After.
    let mut limited = None;
    for i in 0..60 {
        let r = d.login("nobody", &format!("Guess-{i}!x"));
        assert!(matches!(r.status, 401 | 429), "{r:?}");
        if r.status == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("no 429 after 60 rapid logins");
    let v = r.expect_error(429, "rate_limited");
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After header")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{r:?}");
    assert!(v["retry_after"].is_number(), "{v:#}");
    // The limit is per client address: an X-Forwarded-For from a peer that is not a
    // trusted proxy is not believed (it cannot buy a fresh budget).
    let r = d.request(
        "POST",
        "/v1/login",
        &[
            ("Content-Type", "application/json"),
            ("X-Forwarded-For", "203.0.113.77"),
        ],
        Some(br#"{"username":"nobody","password":"Guess-x!1"}"#),
    );
    r.expect_error(429, "rate_limited");
    // Reads are not throttled.
    assert_eq!(d.get("/healthz").status, 200);
    d.get("/v1/password/policy").expect(200);
    d.assert_healthy();
}

/// `--workers N` (`AUTHD_WORKERS`, `workers`) sets the async runtime's threads; by
/// default one per core but one, at least one. authd says how many it runs with.
#[test]
fn http_workers_are_one_per_core_but_one_unless_set() {
    let env = provision();
    let started = |d: &Daemon| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let err = d.stderr();
            if let Some(l) = err.lines().find(|l| l.contains("authd started")) {
                return l.to_string();
            }
            assert!(Instant::now() < deadline, "no start line:\n{err}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut d = Daemon::start(&env, &[]);
    let line = started(&d);
    assert!(
        line.contains(&format!("workers={}", (cores - 1).max(1))),
        "{cores} cores: {line}"
    );
    assert_eq!(d.get("/healthz").status, 200);
    d.assert_healthy();
    let mut d = Daemon::start(&env, &["--workers", "3"]);
    let line = started(&d);
    assert!(line.contains("workers=3"), "{line}");
    assert_eq!(d.get("/healthz").status, 200);
    d.assert_healthy();
}

/// A session ends when idle too long, past its absolute expiry, or when its user is
/// disabled or deleted. (The clock is stood in for by moving the session's times back.)
#[test]
fn sessions_end_when_idle_expired_disabled_or_deleted() {
    let env = provision();
    for u in ["s1", "s2", "s3", "s4"] {
        add_user(&env, u, "school", &[], "user");
    }
    let mut d = Daemon::start(&env, &[]);
    let t: Vec<String> = ["s1", "s2", "s3", "s4"]
        .iter()
        .map(|u| d.login_session(u, PW))
        .collect();
    for s in &t {
        d.get_auth("/v1/session", s).expect(200);
    }
    // Idle longer than session.idle_minutes (30 by default).
    let n = sql(
        &env,
        "UPDATE sessions SET last_seen_at = ?1 WHERE token_hash = ?2",
        &[&(now() - 31 * 60), &token_hash(&t[0])],
    );
    assert_eq!(n, 1, "sessions are stored by their hash");
    d.get_auth("/v1/session", &t[0])
        .expect_error(401, "unauthorized");
    // Past the absolute expiry.
    sql(
        &env,
        "UPDATE sessions SET expires_at = ?1 WHERE token_hash = ?2",
        &[&(now() - 1), &token_hash(&t[1])],
    );
    d.get_auth("/v1/session", &t[1])
        .expect_error(401, "unauthorized");
    // Disabled, deleted.
    env.ctl(&["--yes", "user", "disable", "s3"]).ok();
    d.get_auth("/v1/session", &t[2])
        .expect_error(401, "unauthorized");
    d.login("s3", PW).expect_generic();
    env.ctl(&["--yes", "user", "enable", "s3"]).ok();
    d.get_auth("/v1/session", &t[2])
        .expect_error(401, "unauthorized");
    env.ctl(&["--yes", "user", "delete", "s4"]).ok();
    d.get_auth("/v1/session", &t[3])
        .expect_error(401, "unauthorized");
    d.login("s4", PW).expect_generic();
    // Reset of the second factor ends the user's sessions.
    let s1 = d.login_session("s1", PW);
    env.ctl(&["--yes", "reset-2fa", "s1"]).ok();
    d.get_auth("/v1/session", &s1)
        .expect_error(401, "unauthorized");
    // Logout of a dead session is 401 too; a live one is unaffected by all this.
    assert_eq!(d.post_auth("/v1/logout", &t[0], None).status, 401);
    let live = d.login_session("s1", PW);
    d.get_auth("/v1/session", &live).expect(200);
    d.assert_healthy();
}

/// Who must give a second factor: members of require-2FA groups, admins, everyone under
/// `mfa.required=all`; others log in with a password until they enrol, and once
/// enrolled (voluntarily) they always give their factor.
#[test]
fn second_factor_is_required_by_group_role_policy_or_voluntary_enrolment() {
    let env = provision();
    add_user(&env, "free", "school", &[], "user");
    add_user(&env, "vol", "school", &[], "user");
    add_user(&env, "orgadm", "school", &[], "org-admin");
    let (mut vol_app, _) = enroll_totp(&env, "vol");
    let mut d = Daemon::start(&env, &[]);

    d.login("free", PW).expect_status("authenticated");
    d.login("orgadm", PW).expect_status("enrollment_required");
    let v = d.login("vol", PW).expect_status("second_factor_required");
    let step = Totp::step_now();
    let used = vol_app.code_at_step(step);
    vol_app.used(step);
    d.totp(v["flow"].as_str().expect("flow"), &used)
        .expect_status("authenticated");
    // The replay guard across logins: the code just used does not serve the next one.
    let flow = d.second_factor_flow("vol", PW);
    d.totp(&flow, &used).expect_generic();
    d.totp(&flow, &vol_app.fresh())
        .expect_status("authenticated");

    policy(&env, &["mfa.required=all"]);
    d.login("free", PW).expect_status("enrollment_required");
    policy(&env, &["mfa.required=none", "mfa.admins_required=false"]);
    d.login("orgadm", PW).expect_status("authenticated");
    d.login("vol", PW).expect_status("second_factor_required");
    d.assert_healthy();
}

/// A login flow started with a password ends when that password is changed (or reset):
/// a flow begun by someone who knew the old password must not finish after the owner
/// changed it.
#[test]
fn pending_flows_end_when_the_password_changes() {
    let env = provision();
    add_user(&env, "pat", "school", &[], "user");
    add_user(&env, "ann", "school", &["pupil-data"], "user");
    let (mut ann_app, _) = enroll_totp(&env, "ann");
    set_terms(&env, "v1", "Terms.");
    let mut d = Daemon::start(&env, &[]);

    // pat: a terms flow from the old password; then the password is changed.
    let v = d.login("pat", PW).expect_status("terms_required");
    let stale = v["flow"].as_str().expect("flow").to_string();
    env.ctl_stdin(&["passwd", "pat", "--password-stdin"], "N3w-Password!x\n")
        .ok();
    let r = d.post("/v1/login/terms", &json!({"flow": stale, "accept": true}));
    assert_eq!(
        r.status, 401,
        "a flow from before the password change yielded: {r:?}"
    );

    // ann: a second-factor flow from the old password; ann changes it while signed in.
    let v = d.login("ann", PW).expect_status("terms_required");
    let v = d
        .post(
            "/v1/login/terms",
            &json!({"flow": v["flow"], "accept": true}),
        )
        .expect_status("second_factor_required");
    let stale = v["flow"].as_str().expect("flow").to_string();
    let v = d.login("ann", PW).expect_status("terms_required");
    let v = d
        .post(
            "/v1/login/terms",
            &json!({"flow": v["flow"], "accept": true}),
        )
        .expect_status("second_factor_required");
    let session = d
        .totp(v["flow"].as_str().expect("flow"), &ann_app.fresh())
        .expect_status("authenticated")["session"]
        .as_str()
        .expect("session")
        .to_string();
    d.post_auth(
        "/v1/password/change",
        &session,
        Some(
            &json!({"current_password": PW, "new_password": "N3w-Password!x",
                     "confirm_password": "N3w-Password!x"}),
        ),
    )
    .expect_status("password_changed");
    let r = d.totp(&stale, &ann_app.fresh());
    assert_eq!(
        r.status, 401,
        "a flow from before the password change yielded: {r:?}"
    );
    d.assert_healthy();
}

/// Slow clients are cut off, a chunked body past the limit is refused, and SIGTERM
/// stops the daemon cleanly (exit 0).
#[test]
fn slow_or_oversized_requests_are_cut_off_and_sigterm_stops_cleanly() {
    use std::io::{Read, Write};
    let env = provision();
    add_user(&env, "ok", "school", &[], "user");
    let mut d = Daemon::start(&env, &["--header-read-timeout", "1"]);

    // Headers that never finish: the connection is closed (or answered 408) promptly.
    let mut s = std::net::TcpStream::connect(d.addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(8)))
        .expect("timeout");
    s.write_all(b"POST /v1/login HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    if let Err(e) = s.read_to_end(&mut buf) {
        assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "a client that never finishes its headers is still connected after 8 s"
        );
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );

    // A chunked body past the 64 KiB limit (no Content-Length to refuse up front).
    let mut req = b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..10 {
        req.extend_from_slice(format!("{:x}\r\n", 10_000).as_bytes());
        req.extend_from_slice(&[b' '; 10_000]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    http_raw(d.addr, "chunked 100 kB", &req).expect_error(413, "payload_too_large");

    // Still serving.
    d.login("ok", PW).expect_status("authenticated");
    d.assert_healthy();

    // SIGTERM: a clean stop.
    let st = std::process::Command::new("kill")
        .args(["-TERM", &d.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(st.success());
    let status = d
        .wait_exit(std::time::Duration::from_secs(15))
        .expect("authd did not stop within 15 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", d.stderr());
    assert!(!d.stderr().contains("panicked"), "{}", d.stderr());
    // Request connections never checkpoint; the stop leaves everything in the main
    // file, the WAL empty.
    let wal = env.db.with_extension("db-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_len, 0, "{} after a clean stop", wal.display());
}

/// The client address in audit rows comes from the socket, or from X-Forwarded-For only
/// when the peer is a configured trusted proxy.
#[test]
fn client_address_is_the_socket_unless_the_peer_is_a_trusted_proxy() {
    let env = provision();
    add_user(&env, "ipu", "school", &[], "user");
    let xff = |d: &Daemon, ip: &str| {
        d.request(
            "POST",
            "/v1/login",
            &[
                ("Content-Type", "application/json"),
                ("X-Forwarded-For", ip),
            ],
            Some(format!(r#"{{"username":"ipu","password":"{PW}"}}"#).as_bytes()),
        )
        .expect_status("authenticated");
    };
    let last_ip = || {
        let rows = audit_events(&env, "ipu", "login.password");
        rows.last().expect("an audit row")["ip"]
            .as_str()
            .expect("ip")
            .to_string()
    };
    {
        let d = Daemon::start(&env, &[]);
        xff(&d, "198.51.100.7");
        assert_eq!(
            last_ip(),
            "127.0.0.1",
            "an untrusted X-Forwarded-For is ignored"
        );
    }
    let d = Daemon::start(&env, &["--trusted-proxy", "127.0.0.1/32"]);
    xff(&d, "198.51.100.7");
    assert_eq!(
        last_ip(),
        "198.51.100.7",
        "a trusted proxy's X-Forwarded-For is used"
    );
}

/// Concurrent wrong second-factor codes (TOTP and security answers) never push the
/// count past the limit either.
#[test]
fn concurrent_wrong_codes_and_answers_lock_at_exactly_the_limit() {
    let env = provision();
    // Seed lockout: this test counts failures of a user who never signed in (smart
    // lockout would count them as unfamiliar sources'; see tests/it/lockout.rs).
    policy(&env, &["lockout.mode=account"]);
    add_user(&env, "wc", "school", &["pupil-data"], "user");
    add_user(&env, "wa", "school", &[], "user");
    let (app, _) = enroll_totp(&env, "wc");
    let d = Arc::new(Daemon::start(&env, &[]));
    let session = d.login_session("wa", PW);
    d.put_auth(
        "/v1/me/security-questions",
        &session,
        &json!({"questions": [
            {"question": "Favourite colour?", "answer": "teal"},
            {"question": "First school?", "answer": "hill top"},
        ]}),
    )
    .expect(200);
    let forgot = d
        .post("/v1/password/forgot", &json!({"username": "wa"}))
        .expect(200)["flow"]
        .as_str()
        .expect("flow")
        .to_string();
    let flows: Vec<String> = (0..5).map(|_| d.second_factor_flow("wc", PW)).collect();
    let wrong = wrong_totp(&app);
    let n = 40;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (d, b) = (d.clone(), barrier.clone());
            let (flow, wrong, forgot) = (flows[i % flows.len()].clone(), wrong.clone(), forgot.clone());
            std::thread::spawn(move || {
                b.wait();
                if i % 2 == 0 {
                    d.totp(&flow, &wrong)
                } else {
                    d.post(
                        "/v1/password/forgot/reset",
                        &json!({"flow": forgot, "answers": ["teal", format!("wrong {i}")],
                                "new_password": "Res3t-Password!", "confirm_password": "Res3t-Password!"}),
                    )
                }
            })
        })
        .collect();
    for h in handles {
        let r = h.join().expect("thread");
        assert_eq!(r.status, 401, "{r:?}");
    }
    for user in ["wc", "wa"] {
        assert_eq!(failed_attempts(&env, user), 9, "{user}");
        assert!(is_locked(&env, user), "{user}");
        assert_eq!(
            audit_events(&env, user, "account.locked").len(),
            1,
            "{user}"
        );
    }
}

/// An unknown user is refused in about the time a wrong password takes (a dummy hash
/// with the same parameters), so timing does not tell who exists.
#[test]
fn unknown_users_take_about_as_long_as_wrong_passwords() {
    let env = Env::init_default();
    // Seed lockout: this test counts failures of a user who never signed in (smart
    // lockout would count them as unfamiliar sources'; see tests/it/lockout.rs).
    policy(&env, &["lockout.mode=account"]);
    env.ctl(&["org", "add", "school"]).ok();
    add_user(&env, "timed", "school", &[], "user");
    let d = Daemon::start(&env, &[]);
    let time = |name: &str| {
        let mut t: Vec<std::time::Duration> = (0..9)
            .map(|i| {
                let started = std::time::Instant::now();
                d.login(name, &format!("Wrong-{i}!x")).expect_generic();
                started.elapsed()
            })
            .collect();
        t.sort();
        t[t.len() / 2]
    };
    // Warm up both paths, then compare medians.
    time("nobody-here");
    let unknown = time("nobody-here");
    let known = time("timed");
    env.ctl(&["unlock", "timed"]).ok();
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    assert!(
        (0.4..2.5).contains(&ratio),
        "unknown user {unknown:?} vs wrong password {known:?}"
    );
}

/// An unknown route is 404 even under a known prefix; a 405 never names the method that
/// was refused as allowed.
#[test]
fn unknown_routes_under_known_prefixes_are_404_not_405() {
    let env = provision();
    let mut d = Daemon::start(&env, &[]);
    for path in [
        "/v1/login/nope",
        "/v1/login/",
        "/v1/login/totp/extra",
        "/v1/admin/nope",
        "/v1/password/nope",
    ] {
        let r = d.post(path, &json!({}));
        assert!(r.status < 500, "{r:?}");
        if r.status == 405 {
            let allow = r.json()["allow"].as_str().unwrap_or_default().to_string();
            assert!(
                !allow.split(',').any(|m| m.trim() == "POST"),
                "POST {path} is refused as a wrong method while the answer says POST is \
                 allowed: {r:?}"
            );
        }
        r.expect_error(404, "not_found");
    }
    d.assert_healthy();
}

// ---- Review findings: JSON-only bodies, HSTS, metrics kept from the world ----------------

/// Every content type a cross-site page can post without asking (and a few near-misses
/// of `application/json`) is refused with 415 on every endpoint that reads a body, and
/// on a body-less endpoint that was given a body: nothing counted, nothing audited,
/// nothing done. `None`: no Content-Type at all.
const NOT_JSON: &[Option<&str>] = &[
    None,
    Some("text/plain"),
    Some("text/plain; charset=utf-8"),
    Some("application/x-www-form-urlencoded"),
    Some("multipart/form-data; boundary=x"),
    Some("application/json-seq"),
    Some("application/jsonx"),
    Some("text/json"),
    Some("application/json; charset=iso-8859-1"),
];

#[test]
fn api_bodies_must_be_declared_json() {
    let env = provision();
    add_user(&env, "victim", "school", &[], "user");
    add_user(&env, "vt", "school", &["pupil-data"], "user");
    add_user(&env, "boss", "school", &[], "org-admin");
    policy(&env, &["mfa.admins_required=false"]);
    let (mut app, _) = enroll_totp(&env, "vt");
    let mut d = Daemon::start(&env, &[]);
    let session = d.login_session("victim", PW);
    let admin = d.login_session("boss", PW);
    let flow = d.second_factor_flow("vt", PW);
    let (victim_bearer, admin_bearer) = (format!("Bearer {session}"), format!("Bearer {admin}"));

    // (method, path, bearer, body)
    let wrong = json!({"username": "victim", "password": "Wrong-pass-1!"});
    let endpoints: Vec<(&str, &str, Option<&str>, Value)> = vec![
        ("POST", "/v1/login", None, wrong.clone()),
        (
            "POST",
            "/v1/login/totp",
            None,
            json!({"flow": flow, "code": wrong_totp(&app)}),
        ),
        (
            "POST",
            "/v1/login/recovery",
            None,
            json!({"flow": flow, "code": "AAAA-BBBB-CCCC"}),
        ),
        (
            "POST",
            "/v1/password/forgot",
            None,
            json!({"username": "victim"}),
        ),
        ("POST", "/v1/password/check", None, json!({"password": "x"})),
        (
            "POST",
            "/v1/password/change",
            Some(victim_bearer.as_str()),
            json!({"current_password": "Wrong-pass-1!", "new_password": "Another-pass-2!", "confirm_password": "Another-pass-2!"}),
        ),
        (
            "PUT",
            "/v1/me/security-questions",
            Some(victim_bearer.as_str()),
            json!({"questions": [{"question": "Colour?", "answer": "blue"}]}),
        ),
        // Body-less endpoints with a body that is not JSON.
        (
            "POST",
            "/v1/logout",
            Some(victim_bearer.as_str()),
            json!({}),
        ),
        (
            "POST",
            "/v1/admin/users/vt/reset-2fa",
            Some(admin_bearer.as_str()),
            json!({}),
        ),
    ];
    let audit_before = env.audit(&[]).len();
    let mut cases = 0;
    for (method, path, bearer, body) in &endpoints {
        for ct in NOT_JSON {
            let mut h: Vec<(&str, &str)> = Vec::new();
            if let Some(ct) = ct {
                h.push(("Content-Type", ct));
            }
            if let Some(b) = bearer {
                h.push(("Authorization", b));
            }
            let r = d.request(method, path, &h, Some(body.to_string().as_bytes()));
            let v = r.expect_error(415, "unsupported_media_type");
            assert!(
                v["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("application/json"),
                "the answer says what to send: {r:?}"
            );
            cases += 1;
        }
        // A credential step needs the type even for an empty body (a field-less form).
        if bearer.is_none() {
            let r = d.request(method, path, &[("Content-Type", "text/plain")], Some(b""));
            r.expect_error(415, "unsupported_media_type");
            cases += 1;
        }
    }
    assert!(cases >= 80, "{cases}");
    // Nothing changed: no failure counted, no audit row of any kind, the flow and the
    // sessions live, vt's second factor still there.
    assert_eq!(failed_attempts(&env, "victim"), 0);
    assert_eq!(failed_attempts(&env, "vt"), 0);
    let failures = |user: &str| {
        audit_events(&env, user, "login.password")
            .iter()
            .filter(|row| row["outcome"] == "failure")
            .count()
    };
    assert_eq!(failures("victim"), 0);
    assert_eq!(
        env.audit(&[]).len(),
        audit_before,
        "a refused body was audited"
    );
    d.get_auth("/v1/session", &session).expect(200);
    assert_eq!(user_show(&env, "vt")["mfa_method"], "totp");
    d.totp(&flow, &app.fresh()).expect_status("authenticated");

    // The JSON type, in any case and with a UTF-8 charset, is read: these wrong
    // passwords are counted (which is what makes the zero above mean something).
    for ct in [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
    ] {
        d.request(
            "POST",
            "/v1/login",
            &[("Content-Type", ct)],
            Some(wrong.to_string().as_bytes()),
        )
        .expect_generic();
    }
    assert_eq!(failed_attempts(&env, "victim"), 4);
    assert_eq!(failures("victim"), 4);

    // Body-less endpoints need no Content-Type when their body is empty.
    let r = d.request(
        "POST",
        "/v1/admin/users/victim/unlock",
        &[("Authorization", admin_bearer.as_str())],
        Some(b""),
    );
    assert_eq!(r.expect(200)["username"], "victim", "{r:?}");
    assert_eq!(failed_attempts(&env, "victim"), 0);
    let r = d.request(
        "POST",
        "/v1/logout",
        &[("Authorization", victim_bearer.as_str())],
        None,
    );
    assert_eq!(r.status, 204, "{r:?}");
    d.get_auth("/v1/session", &session)
        .expect_error(401, "unauthorized");
    d.assert_healthy();
}

/// A refused post is refused before the rate limiter: a page that makes visitors'
/// browsers post forms at the API cannot spend their login budget either.
#[test]
fn refused_content_types_spend_no_login_budget() {
    let env = provision();
    add_user(&env, "victim", "school", &[], "user");
    let mut d = Daemon::start_raw(
        &env,
        &["--rate-limit-per-minute", "1", "--rate-limit-burst", "2"],
    );
    let body = br#"{"username":"victim","password":"Wrong-pass-1!"}"#;
    for i in 0..10 {
        let ct = NOT_JSON[i % NOT_JSON.len()];
        let h: Vec<(&str, &str)> = ct.map(|c| ("Content-Type", c)).into_iter().collect();
        d.request("POST", "/v1/login", &h, Some(body))
            .expect_error(415, "unsupported_media_type");
    }
    assert_eq!(failed_attempts(&env, "victim"), 0);
    // The budget (a burst of two) is whole.
    d.login("victim", "Wrong-pass-1!").expect_generic();
    d.login_session("victim", PW);
    d.login("victim", PW).expect_error(429, "rate_limited");
    d.assert_healthy();
}

/// The exact header every answer carries unless --insecure-cookies.
const HSTS: &str = "max-age=31536000; includeSubDomains";

/// Pages, API answers (successes and errors of every kind), assets, redirects, health
/// and metrics: all carry Strict-Transport-Security — and none does in plain-HTTP mode.
#[test]
fn every_answer_carries_hsts_unless_insecure_cookies() {
    let env = provision();
    add_user(&env, "hs", "school", &[], "user");
    let json_ct = ("Content-Type", "application/json");
    let answers = |d: &Daemon| -> Vec<Resp> {
        let session = d.login_session("hs", PW);
        vec![
            d.get("/login"),
            d.get("/admin"),
            d.get("/nowhere"),
            d.get("/assets/portal.css"),
            d.request(
                "POST",
                "/login",
                &[("Content-Type", "application/x-www-form-urlencoded")],
                Some(b"username=a"),
            ),
            d.login("hs", PW),
            d.login("hs", "Wrong-pass-1!"),
            d.get_auth("/v1/session", &session),
            d.get("/v1/session"),
            d.get("/v1/password/policy"),
            d.get("/v1/nope"),
            d.request("DELETE", "/v1/login", &[], None),
            d.request(
                "POST",
                "/v1/login",
                &[("Content-Type", "text/plain")],
                Some(b"x"),
            ),
            d.request("POST", "/v1/login", &[json_ct], Some(b"{")),
            d.request("POST", "/v1/login", &[json_ct], Some(&[b' '; 70_000])),
            d.get("/v1/auth/verify"),
            d.get("/healthz"),
            d.get("/metrics"),
            d.post_auth("/v1/logout", &session, None),
        ]
    };
    let mut d = Daemon::start(&env, &[]);
    let all = answers(&d);
    let statuses: BTreeSet<u16> = all.iter().map(|r| r.status).collect();
    for want in [200, 204, 303, 400, 401, 403, 404, 405, 413, 415] {
        assert!(statuses.contains(&want), "no {want} among {statuses:?}");
    }
    for r in &all {
        assert_eq!(r.header("strict-transport-security"), Some(HSTS), "{r:?}");
    }
    d.assert_healthy();
    drop(d);

    let mut d = Daemon::start(&env, &["--insecure-cookies"]);
    for r in answers(&d) {
        assert_eq!(r.header("strict-transport-security"), None, "{r:?}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{r:?}");
    }
    d.assert_healthy();
}

/// A metrics token file: 0600, the token with a trailing newline (as `openssl rand
/// -hex 32 > FILE` writes it).
fn metrics_token_file(env: &Env, token: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = env.path("metrics.token");
    std::fs::write(&p, format!("{token}\n")).expect("write the token file");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p.to_str().expect("a UTF-8 path").to_string()
}

const METRICS_TOKEN: &str = "6f1d0c1e3b2a49d5a7e8f90b1c2d3e4f";

/// With --metrics-token-file (here through its environment variable), /metrics needs
/// `Authorization: Bearer TOKEN`: none or a wrong one is a JSON 401 asking for Bearer;
/// the token gets the metrics. /healthz stays open.
#[test]
fn metrics_need_the_token_when_one_is_configured() {
    let env = provision();
    add_user(&env, "mt", "school", &[], "user");
    let file = metrics_token_file(&env, METRICS_TOKEN);
    let mut cmd = authd_command(&env, &["--rate-limit-per-minute", "0"]);
    cmd.env("AUTHD_METRICS_TOKEN_FILE", &file);
    let mut d = Daemon::start_command(cmd);
    assert!(d.metrics_addr.is_none(), "no listener of its own asked for");
    d.login("mt", PW).expect_status("authenticated");

    let wrong_tokens = [
        None,
        Some("Bearer".to_string()),
        Some("Bearer ".to_string()),
        Some(format!("Bearer {}", &METRICS_TOKEN[1..])),
        Some(format!("Bearer {METRICS_TOKEN}x")),
        Some(format!("Bearer {}", METRICS_TOKEN.to_uppercase())),
        Some(format!("Basic {METRICS_TOKEN}")),
        Some(METRICS_TOKEN.to_string()),
        Some(format!("Bearer {METRICS_TOKEN} {METRICS_TOKEN}")),
    ];
    for auth in &wrong_tokens {
        let h: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| ("Authorization", a))
            .into_iter()
            .collect();
        let r = d.request("GET", "/metrics", &h, None);
        r.expect_error(401, "unauthorized");
        assert!(
            r.header("www-authenticate")
                .is_some_and(|w| w.starts_with("Bearer")),
            "{auth:?}: {r:?}"
        );
        assert!(
            !r.text().contains("authd_"),
            "{auth:?}: metrics leaked: {r:?}"
        );
    }
    let auth = format!("Bearer {METRICS_TOKEN}");
    for scheme in [auth.clone(), format!("bearer {METRICS_TOKEN}")] {
        let r = d.request(
            "GET",
            "/metrics",
            &[("Authorization", scheme.as_str())],
            None,
        );
        assert_eq!(r.status, 200, "{r:?}");
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("text/plain")),
            "{r:?}"
        );
        assert!(
            r.text()
                .lines()
                .any(|l| l.starts_with("authd_login_outcomes_total{") && l.contains("success")),
            "{r:?}"
        );
        // The refusals are counted like any answer.
        assert!(
            r.text()
                .contains(r#"authd_requests_total{route="metrics",status="401"}"#),
            "{r:?}"
        );
    }
    assert_eq!(d.get("/healthz").status, 200);
    d.assert_healthy();
}

/// With --metrics-listen, /metrics (and /healthz) live on their own listener, which
/// serves nothing else; the main listener answers /metrics with 404. Combined with a
/// token (both from the config file), the metrics listener asks for it. A SIGTERM stops
/// both listeners cleanly.
#[test]
fn metrics_can_have_a_listener_of_their_own() {
    let env = provision();
    add_user(&env, "ml", "school", &[], "user");
    let mut d = Daemon::start(&env, &["--metrics-listen", "127.0.0.1:0"]);
    let m = d.metrics_addr.expect("a `metrics listening on ADDR` line");
    assert!(
        m.ip().is_loopback() && m.port() != 0 && m.port() != d.addr.port(),
        "{m}"
    );

    // The main listener: no metrics (any method), everything else as before.
    for method in ["GET", "POST", "DELETE"] {
        let r = d.request(method, "/metrics", &[], None);
        assert_eq!(
            r.status, 404,
            "{method} /metrics on the main listener: {r:?}"
        );
        assert!(!r.text().contains("authd_"), "{r:?}");
    }
    d.get("/metrics").expect_error(404, "not_found");
    assert_eq!(d.get("/healthz").status, 200);
    d.login("ml", PW).expect_status("authenticated");
    assert_eq!(d.get("/login").status, 200);

    // The metrics listener: metrics and health, and it sees the main listener's traffic.
    let r = d.metrics_request("GET", "/metrics", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.text()
            .contains(r#"authd_requests_total{route="login",status="200"} 1"#),
        "{r:?}"
    );
    assert_eq!(r.header("strict-transport-security"), Some(HSTS));
    assert_eq!(
        d.metrics_request("GET", "/healthz", &[]).text().trim(),
        "ok"
    );
    d.metrics_request("DELETE", "/metrics", &[])
        .expect_error(405, "method_not_allowed");
    // …and nothing else: no API, no portal, no login attempt counted.
    for path in [
        "/",
        "/login",
        "/v1/session",
        "/v1/password/policy",
        "/v1/auth/verify",
    ] {
        d.metrics_request("GET", path, &[])
            .expect_error(404, "not_found");
    }
    let r = d.request_at(
        m,
        "POST",
        "/v1/login",
        &[("Content-Type", "application/json")],
        Some(br#"{"username":"ml","password":"Wrong-pass-1!"}"#),
    );
    r.expect_error(404, "not_found");
    assert_eq!(failed_attempts(&env, "ml"), 0);
    assert!(audit_events(&env, "ml", "login.password")
        .iter()
        .all(|row| row["outcome"] == "success"));
    d.assert_healthy();
    drop(d);

    // Both, from the config file: the metrics listener asks for the token; the main
    // listener has no /metrics even for the token.
    let token_file = metrics_token_file(&env, METRICS_TOKEN);
    let config = env.path("authd.toml");
    std::fs::write(
        &config,
        format!("metrics_listen = \"127.0.0.1:0\"\nmetrics_token_file = {token_file:?}\n"),
    )
    .expect("write the config file");
    let mut d = Daemon::start(&env, &["--config", config.to_str().expect("UTF-8")]);
    let auth = format!("Bearer {METRICS_TOKEN}");
    d.metrics_request("GET", "/metrics", &[])
        .expect_error(401, "unauthorized");
    d.metrics_request(
        "GET",
        "/metrics",
        &[("Authorization", "Bearer wrong-token-123456")],
    )
    .expect_error(401, "unauthorized");
    let r = d.metrics_request("GET", "/metrics", &[("Authorization", auth.as_str())]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.text().contains("authd_requests_total"), "{r:?}");
    d.request("GET", "/metrics", &[("Authorization", auth.as_str())], None)
        .expect_error(404, "not_found");

    // SIGTERM: both listeners stop, and authd exits 0.
    let status = Command::new("kill")
        .args(["-TERM", &d.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let exit = d.wait_exit(Duration::from_secs(20)).expect("authd stops");
    assert!(exit.success(), "{exit:?}; stderr:\n{}", d.stderr());
}

/// Metrics settings that cannot work stop the start with a clear error: a token file
/// that is missing, empty, short or open to other users (exit 2, before anything
/// listens), a metrics address that cannot be bound (exit 1).
#[test]
fn bad_metrics_settings_stop_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let env = provision();
    let write = |name: &str, text: &str, mode: u32| {
        let p = env.path(name);
        std::fs::write(&p, text).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p.to_str().expect("UTF-8").to_string()
    };
    let missing = env
        .path("missing.token")
        .to_str()
        .expect("UTF-8")
        .to_string();
    let cases = [
        (missing, "cannot be read"),
        (write("empty.token", "", 0o600), "is empty"),
        (write("blank.token", " \n \n", 0o600), "is empty"),
        (write("short.token", "abc\n", 0o600), "at least 16"),
        (
            write("open.token", METRICS_TOKEN, 0o644),
            "open to other users",
        ),
    ];
    for (file, want) in &cases {
        let out = common::run(
            authd_command(&env, &["--metrics-token-file", file]),
            None,
            common::TIMEOUT,
        );
        out.fails(2).stderr_has(want).stderr_has(file);
        assert!(!out.stdout.contains("listening on"), "{out:?}");
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("address").to_string();
    for (at, want) in [
        (taken_addr.as_str(), "metrics_listen"),
        // Not an address of this machine.
        ("192.0.2.1:0", "cannot listen on 192.0.2.1:0"),
    ] {
        let out = common::run(
            authd_command(&env, &["--metrics-listen", at]),
            None,
            common::TIMEOUT,
        );
        out.fails(1).stderr_has(want);
        assert!(!out.stdout.contains("listening on"), "{out:?}");
    }
    drop(taken);
}
