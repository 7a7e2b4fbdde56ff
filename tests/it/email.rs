//! Issue 4, end to end: the real `authd` mailing through a real SMTP server on 127.0.0.1
//! (Python's aiosmtpd, installed by scripts/test.sh). The case-management seed
//! (`004_…`): a 6-digit code by email, "remember this device", forgotten passwords
//! through security questions; plus recovery codes, lock notices, and nothing secret in
//! the database.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{keys, now, Env};
use crate::daemon_common::*;

const FROM: &str = "authd@example.org";

/// A database with the `casework` group (requires 2FA) and email users enrolled.
fn email_env(users: &[&str]) -> Env {
    let env = provision();
    env.ctl(&["group", "add", "casework", "--require-2fa"]).ok();
    for u in users {
        add_user(&env, u, "school", &["casework"], "user");
        enroll_email(&env, u);
    }
    env
}

fn start_with_mail(env: &Env, sink: &SmtpSink) -> Daemon {
    let url = sink.url();
    Daemon::start(env, &["--smtp-url", &url, "--mail-from", FROM])
}

fn addr(user: &str) -> String {
    format!("{user}@example.org")
}

/// `POST /v1/login/email`.
fn email_code(d: &Daemon, flow: &str, code: &str, remember: bool) -> Resp {
    d.post(
        "/v1/login/email",
        &json!({"flow": flow, "code": code, "remember_device": remember}),
    )
}

/// Log in up to the emailed code: the flow and the code that arrived (the `n`-th code
/// mail to the user, 0-based).
#[track_caller]
fn code_flow(d: &Daemon, sink: &SmtpSink, user: &str, n: usize) -> (String, String) {
    let v = d.login(user, PW).expect_status("second_factor_required");
    assert_eq!(v["methods"][0], "email_otp", "{v:#}");
    let flow = v["flow"].as_str().expect("flow").to_string();
    (flow, sink.nth_code(&addr(user), n))
}

/// The seed's email journey: password → code mailed → a wrong code refused → the right
/// code with "remember device" → session and device token; the next login with the token
/// needs no code; after `authctl reset-2fa` (and enrolling again) it needs one again.
#[test]
fn email_code_journey_with_a_remembered_device() {
    let env = email_env(&["carol", "dave"]);
    let sink = SmtpSink::start();
    let mut d = start_with_mail(&env, &sink);

    let v = d.login("carol", PW).expect_status("second_factor_required");
    assert_eq!(v["methods"], json!(["email_otp", "recovery_code"]), "{v:#}");
    let flow = v["flow"].as_str().expect("flow").to_string();

    // The code was mailed to the user's address, from the configured sender.
    let mails = sink.codes_to(&addr("carol"));
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let m = &mails[0];
    assert!(m.raw.contains(FROM), "From is {FROM}: {}", m.raw);
    assert!(!m.subject.is_empty(), "{m:#?}");
    let code = m.code().expect("a 6-digit code");
    assert_eq!(code.len(), 6);

    // A wrong code is refused with the generic answer, the right one then works.
    email_code(&d, &flow, &other_code(&[&code]), false).expect_generic();
    let v = email_code(&d, &flow, &code, true).expect_status("authenticated");
    let device = v["device_token"]
        .as_str()
        .expect("device token")
        .to_string();
    assert!(device.len() >= 22, "a random token: {device}");
    let session = v["session"].as_str().expect("session").to_string();
    d.get_auth("/v1/session", &session).expect(200);
    assert_eq!(failed_attempts(&env, "carol"), 0);
    let devices = env.json(&["device", "list", "--user", "carol"]);
    assert_eq!(
        devices.as_array().map(Vec::len),
        Some(1),
        "one remembered device: {devices:#}"
    );

    // Next login from that device: no code, no mail.
    let v = d
        .login_device("carol", PW, &device)
        .expect_status("authenticated");
    assert_eq!(v["user"]["username"], "carol");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.codes_to(&addr("carol")).len(), 1, "no code was mailed");
    // The device never skips the password, and is bound to its user.
    d.login_device("carol", "Wrong-password-1!", &device)
        .expect_generic();
    d.login_device("dave", PW, &device)
        .expect_status("second_factor_required");
    sink.nth_code(&addr("dave"), 0);
    // A forged device token is just ignored.
    d.login_device("carol", PW, &"x".repeat(43))
        .expect_status("second_factor_required");
    assert_eq!(sink.codes_to(&addr("carol")).len(), 2);

    // The administrator resets two-factor (a notice is mailed), the user is enrolled by
    // email again: the old device token no longer skips the code.
    env.ctl(&["--yes", "reset-2fa", "carol"]).ok();
    assert_eq!(
        env.json(&["device", "list", "--user", "carol"]),
        json!([]),
        "reset-2fa revokes remembered devices"
    );
    sink.wait_for(
        "the two-factor reset notice",
        Duration::from_secs(15),
        |m| m.is_to(&addr("carol")) && m.body.to_lowercase().contains("two-factor") && !m.is_code(),
    );
    enroll_email(&env, "carol");
    let v = d
        .login_device("carol", PW, &device)
        .expect_status("second_factor_required");
    let flow = v["flow"].as_str().expect("flow");
    let code = sink.nth_code(&addr("carol"), 2);
    let v = email_code(&d, flow, &code, false).expect_status("authenticated");
    assert!(
        v.get("device_token").is_none(),
        "not asked to remember: {v:#}"
    );
    d.assert_healthy();
}

/// Codes are single use, bound to their flow and user, allow five tries, expire, and a
/// resend (rate-limited) supersedes the previous code.
#[test]
fn email_codes_are_single_use_bound_limited_and_superseded() {
    let env = email_env(&["erin", "dave"]);
    let sink = SmtpSink::start();
    let mut d = start_with_mail(&env, &sink);
    let mut n = 0; // code mails to erin so far
    let next = |d: &Daemon, n: &mut usize| {
        let r = code_flow(d, &sink, "erin", *n);
        *n += 1;
        r
    };

    // Two flows, two codes: each code works for its own flow only, and once.
    let (f1, c1) = next(&d, &mut n);
    let (f2, c2) = next(&d, &mut n);
    if c1 != c2 {
        email_code(&d, &f1, &c2, false).expect_generic();
    }
    email_code(&d, &f1, &c1, false).expect_status("authenticated");
    email_code(&d, &f1, &c1, false).expect_invalid_flow();
    if c1 != c2 {
        email_code(&d, &f2, &c1, false).expect_generic();
    }
    email_code(&d, &f2, &c2, false).expect_status("authenticated");
    assert_eq!(failed_attempts(&env, "erin"), 0);

    // Another user's code does not work on this flow.
    let (f3, c3) = next(&d, &mut n);
    let (_, dave_code) = code_flow(&d, &sink, "dave", 0);
    if dave_code != c3 {
        email_code(&d, &f3, &dave_code, false).expect_generic();
    }
    // Malformed codes are bad input, not counted.
    for bad in ["12345", "1234567", "abcdef", "12-456", ""] {
        email_code(&d, &f3, bad, false).expect_error(400, "invalid_input");
    }
    assert_eq!(failed_attempts(&env, "erin"), i64::from(dave_code != c3));
    email_code(&d, &f3, &c3, false).expect_status("authenticated");

    // Five wrong tries; the sixth is refused even with the right code.
    let (f4, c4) = next(&d, &mut n);
    let wrong = other_code(&[&c4]);
    for _ in 0..5 {
        email_code(&d, &f4, &wrong, false).expect_generic();
    }
    email_code(&d, &f4, &c4, false).expect_generic();
    assert_eq!(
        failed_attempts(&env, "erin"),
        6,
        "each try counts toward the lockout"
    );
    let (f5, c5) = next(&d, &mut n);
    email_code(&d, &f5, &c5, false).expect_status("authenticated");
    assert_eq!(failed_attempts(&env, "erin"), 0);

    // Resend: too soon by default (30 s), then immediately under a policy of 0 s; the
    // new code supersedes the old.
    let (f6, c6) = next(&d, &mut n);
    let e = d
        .post("/v1/login/email/resend", &json!({"flow": f6}))
        .expect_error(429, "too_soon");
    let wait = e["retry_after"].as_i64().expect("retry_after");
    assert!((1..=30).contains(&wait), "{e:#}");
    assert_eq!(sink.codes_to(&addr("erin")).len(), n, "nothing mailed");
    policy(&env, &["email_otp.resend_seconds=0"]);
    let v = d
        .post("/v1/login/email/resend", &json!({"flow": f6}))
        .expect_status("code_sent");
    assert!(v["expires_at"].is_string(), "{v:#}");
    let c6b = sink.nth_code(&addr("erin"), n);
    n += 1;
    if c6 != c6b {
        email_code(&d, &f6, &c6, false).expect_generic();
    }
    email_code(&d, &f6, &c6b, false).expect_status("authenticated");
    // A resend of a finished or forged flow is refused.
    d.post("/v1/login/email/resend", &json!({"flow": f6}))
        .expect_invalid_flow();
    d.post("/v1/login/email/resend", &json!({"flow": "A".repeat(43)}))
        .expect_invalid_flow();

    // Expiry: the code's time is up (moved back in the database, standing in for the
    // clock); the right code is refused, a fresh one works.
    let (f7, c7) = next(&d, &mut n);
    let changed = sql(
        &env,
        "UPDATE email_otp_challenges SET expires_at = ?1
         WHERE flow_id = (SELECT id FROM login_flows WHERE token_hash = ?2)",
        &[&(now() - 1), &token_hash(&f7)],
    );
    assert_eq!(changed, 1);
    email_code(&d, &f7, &c7, false).expect_generic();
    d.post("/v1/login/email/resend", &json!({"flow": f7}))
        .expect_status("code_sent");
    let c7b = sink.nth_code(&addr("erin"), n);
    email_code(&d, &f7, &c7b, false).expect_status("authenticated");

    // No code ever opened a session it should not have: one per success above.
    assert!(
        audit_events(&env, "erin", "login.email")
            .iter()
            .filter(|r| r["outcome"] == "success")
            .count()
            == 6
    );
    d.assert_healthy();
}

/// The mail server is down: the code login fails closed with a clear 503, never a
/// session, never a hang; the daemon keeps serving other users meanwhile.
#[test]
fn smtp_down_fails_closed_and_the_daemon_keeps_serving() {
    let env = email_env(&[]);
    add_user(&env, "ed", "school", &["casework"], "user");
    let ed_recovery = enroll_email(&env, "ed");
    add_user(&env, "tim", "school", &["pupil-data"], "user");
    let (mut tim_app, _) = enroll_totp(&env, "tim");
    policy(&env, &["email_otp.resend_seconds=0"]);
    let url = format!("smtp://127.0.0.1:{}", closed_port());
    let mut d = std::sync::Arc::new(Daemon::start(
        &env,
        &["--smtp-url", &url, "--mail-from", FROM],
    ));

    // ed's login and tim's TOTP login at the same time.
    let d2 = d.clone();
    let started = Instant::now();
    let ed = std::thread::spawn(move || d2.login("ed", PW));
    let tim_session = d.login_totp("tim", PW, &mut tim_app);
    let ed = ed.join().expect("thread");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "a dead mail server must not hang logins"
    );
    let e = ed.expect_error(503, "mail_unavailable");
    assert!(e.get("session").is_none(), "{e:#}");
    let flow = e["flow"]
        .as_str()
        .expect("the flow, to resend or use a recovery code");
    d.get_auth("/v1/session", &tim_session).expect(200);

    // Resending fails closed too; guessing never gets in.
    d.post("/v1/login/email/resend", &json!({"flow": flow}))
        .expect_error(503, "mail_unavailable");
    email_code(&d, flow, "123456", false).expect_generic();
    assert!(sessions_of(&env, "ed").is_empty());
    // The way out the answer offers: a recovery code on the same flow.
    assert_eq!(e["methods"], json!(["email_otp", "recovery_code"]), "{e:#}");
    let v = d
        .post(
            "/v1/login/recovery",
            &json!({"flow": flow, "code": ed_recovery[0]}),
        )
        .expect_status("authenticated");
    assert_eq!(v["user"]["username"], "ed");
    assert_eq!(d.get("/healthz").status, 200);
    // tim again, afterwards.
    d.login_totp("tim", PW, &mut tim_app);
    std::sync::Arc::get_mut(&mut d)
        .expect("the only handle")
        .assert_healthy();
}

/// Recovery codes: ten from enrolment; each works once, never twice; the last warns;
/// then the method is no longer offered.
#[test]
fn recovery_codes_work_once_each_and_the_last_one_warns() {
    let env = provision();
    add_user(&env, "rob", "school", &["pupil-data"], "user");
    let (_, codes) = enroll_totp(&env, "rob");
    assert_eq!(codes.len(), 10);
    assert_eq!(codes.iter().collect::<BTreeSet<_>>().len(), 10, "distinct");
    let mut d = Daemon::start(&env, &[]);

    let recover =
        |flow: &str, code: &str| d.post("/v1/login/recovery", &json!({"flow": flow, "code": code}));
    for (i, code) in codes.iter().enumerate() {
        let v = d.login("rob", PW).expect_status("second_factor_required");
        assert_eq!(v["methods"], json!(["totp", "recovery_code"]), "{v:#}");
        let v = recover(v["flow"].as_str().expect("flow"), code).expect_status("authenticated");
        if i + 1 < codes.len() {
            assert!(v.get("warning").is_none(), "code {i}: {v:#}");
        } else {
            let w = v["warning"].as_str().expect("the last code warns");
            assert!(w.contains("last"), "{w}");
        }
        // Never twice.
        let flow = d.second_factor_flow("rob", PW);
        recover(&flow, code).expect_generic();
    }
    let v = d.login("rob", PW).expect_status("second_factor_required");
    assert_eq!(v["methods"], json!(["totp"]), "no codes left: {v:#}");
    recover(v["flow"].as_str().expect("flow"), &codes[0]).expect_generic();
    recover(v["flow"].as_str().expect("flow"), "!!").expect_error(400, "invalid_input");
    assert_eq!(
        audit_events(&env, "rob", "recovery.exhausted").len(),
        1,
        "using the last code is audited"
    );
    // Enrolling again rotates the codes: the old ones stop working.
    let (_, old) = enroll_totp(&env, "rob");
    let (_, fresh) = enroll_totp(&env, "rob");
    let flow = d.second_factor_flow("rob", PW);
    recover(&flow, &old[0]).expect_generic();
    recover(&flow, &fresh[0]).expect_status("authenticated");
    // The email factor has recovery codes too.
    let env2 = email_env(&[]);
    add_user(&env2, "em", "school", &["casework"], "user");
    assert_eq!(enroll_email(&env2, "em").len(), 10);
    d.assert_healthy();
}

/// Seed `004_…`'s "Forgot Password": set security questions while signed in; answer
/// them all right (any case and spacing) to set a new password, typed twice and checked;
/// the reset never logs in and the next login still asks for the second factor.
#[test]
fn forgot_password_with_security_questions_keeps_the_second_factor() {
    let env = provision();
    add_user(&env, "fay", "school", &["pupil-data"], "user");
    let (mut app, _) = enroll_totp(&env, "fay");
    let sink = SmtpSink::start();
    let mut d = start_with_mail(&env, &sink);

    let questions = json!([
        {"question": "What was the name of your first pet?", "answer": "Mr Whiskers"},
        {"question": "In which town were you born?", "answer": "Little Snoring"},
    ]);
    d.put_auth(
        "/v1/me/security-questions",
        "no-session",
        &json!({"questions": questions}),
    )
    .expect_error(401, "unauthorized");
    let session = d.login_totp("fay", PW, &mut app);
    d.put_auth(
        "/v1/me/security-questions",
        &session,
        &json!({"questions": [questions[0]]}),
    )
    .expect_error(400, "invalid_input");
    let q = |question: &str, answer: &str| json!({"question": question, "answer": answer});
    for bad in [
        json!([]),
        json!([
            q("Favourite colour?", "teal"),
            q("Favourite colour?", "red")
        ]),
        json!([q("Favourite colour?", "teal"), q("First school?", "")]),
        json!([q("Favourite colour?", "teal"), q("?", "an answer")]),
        json!([
            q("Question one?", "a1"),
            q("Question two?", "a2"),
            q("Question three?", "a3"),
            q("Question four?", "a4"),
            q("Question five?", "a5"),
            q("Question six?", "a6")
        ]),
    ] {
        d.put_auth(
            "/v1/me/security-questions",
            &session,
            &json!({"questions": bad}),
        )
        .expect_error(400, "invalid_input");
    }
    let v = d
        .put_auth(
            "/v1/me/security-questions",
            &session,
            &json!({"questions": questions}),
        )
        .expect(200);
    let asked = json!([
        "What was the name of your first pet?",
        "In which town were you born?"
    ]);
    assert_eq!(v["questions"], asked, "{v:#}");

    let v = d
        .post("/v1/password/forgot", &json!({"username": "fay"}))
        .expect(200);
    assert_eq!(keys(&v), vec!["flow", "questions"]);
    assert_eq!(v["questions"], asked);
    let flow = v["flow"].as_str().expect("flow").to_string();
    let reset = |answers: Value, new: &str, confirm: &str| {
        d.post(
            "/v1/password/forgot/reset",
            &json!({"flow": flow, "answers": answers, "new_password": new, "confirm_password": confirm}),
        )
    };
    let right = json!(["  mr   WHISKERS ", "little snoring"]);
    let new = "Res3t-Password!";
    let e = reset(right.clone(), new, "Res3t-Password?").expect_error(400, "invalid_input");
    assert!(e["message"]
        .as_str()
        .expect("message")
        .contains("do not match"));
    reset(right.clone(), "weakweak", "weakweak").expect_error(422, "policy_rejected");
    let v = reset(right.clone(), new, new).expect(200);
    assert_eq!(
        v,
        json!({"status": "password_changed"}),
        "a reset never logs in"
    );
    reset(right, "Other-Passw0rd!", "Other-Passw0rd!").expect_generic();

    // Every session ended; the old password fails; the new one still needs the code.
    d.get_auth("/v1/session", &session)
        .expect_error(401, "unauthorized");
    d.login("fay", PW).expect_generic();
    let v = d.login("fay", new).expect_status("second_factor_required");
    d.totp(v["flow"].as_str().expect("flow"), &app.fresh())
        .expect_status("authenticated");
    sink.wait_for(
        "the password-changed notice",
        Duration::from_secs(15),
        |m| m.is_to(&addr("fay")) && m.body.to_lowercase().contains("password"),
    );
    d.assert_healthy();
}

/// Wrong answers count toward the lockout: the 9th locks, after which even the right
/// answers and the right password fail, and a notice is mailed.
#[test]
fn forgot_password_wrong_answers_lock_the_account_and_mail_a_notice() {
    let env = provision();
    add_user(&env, "gus", "school", &[], "user");
    let sink = SmtpSink::start();
    let mut d = start_with_mail(&env, &sink);
    let session = d.login_session("gus", PW);
    d.put_auth(
        "/v1/me/security-questions",
        &session,
        &json!({"questions": [
            {"question": "Favourite colour?", "answer": "teal"},
            {"question": "First school?", "answer": "St Mary's"},
        ]}),
    )
    .expect(200);
    let v = d
        .post("/v1/password/forgot", &json!({"username": "gus"}))
        .expect(200);
    let flow = v["flow"].as_str().expect("flow").to_string();
    let new = "Res3t-Password!";
    let reset = |answers: Value| {
        d.post(
            "/v1/password/forgot/reset",
            &json!({"flow": flow, "answers": answers, "new_password": new, "confirm_password": new}),
        )
    };
    for i in 0..9 {
        assert!(!is_locked(&env, "gus"), "locked after only {i} failures");
        reset(json!(["teal", format!("wrong {i}")])).expect_generic();
    }
    assert!(is_locked(&env, "gus"), "the 9th wrong answer locks");
    assert_eq!(audit_events(&env, "gus", "account.locked").len(), 1);
    reset(json!(["teal", "st mary's"])).expect_generic();
    d.login("gus", PW).expect_generic();
    d.login("gus", new).expect_generic();

    // The lock notice arrives through the outbox.
    let m = sink.wait_for("the lock notice", Duration::from_secs(15), |m| {
        m.is_to(&addr("gus")) && m.body.to_lowercase().contains("locked")
    });
    assert!(!m.is_code());
    d.assert_healthy();
}

/// An unknown user gets an answer of the same shape as a known one: same keys, a
/// plausible number of questions (stable per name), a flow token of the same length,
/// and a reset through it fails exactly like wrong answers do.
#[test]
fn forgot_password_for_an_unknown_user_looks_the_same() {
    let env = provision();
    add_user(&env, "hal", "school", &[], "user");
    add_user(&env, "ivy", "school", &[], "user");
    let mut d = Daemon::start(&env, &[]);
    let session = d.login_session("hal", PW);
    d.put_auth(
        "/v1/me/security-questions",
        &session,
        &json!({"questions": [
            {"question": "What was the name of your first pet?", "answer": "rex"},
            {"question": "In which city were you born?", "answer": "leeds"},
        ]}),
    )
    .expect(200);

    let forgot = |name: &str| {
        let r = d.post("/v1/password/forgot", &json!({"username": name}));
        assert_eq!(r.status, 200, "{r:?}");
        r
    };
    let known = forgot("hal");
    let kv = known.json();
    let flow_len = kv["flow"].as_str().expect("flow").len();
    for name in ["nobody", "ivy", "Zed-Unknown", "ｎｏｂｏｄｙ"] {
        let r = forgot(name);
        let v = r.json();
        assert_eq!(keys(&v), keys(&kv), "{name}: {v:#}");
        assert_eq!(r.header("content-type"), known.header("content-type"));
        let qs = strings(&v["questions"]);
        assert!((2..=5).contains(&qs.len()), "{name}: {v:#}");
        assert!(qs.iter().all(|q| q.ends_with('?')), "{name}: {v:#}");
        let flow = v["flow"].as_str().expect("flow");
        assert_eq!(flow.len(), flow_len, "{name}: {v:#}");
        assert!(
            flow.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{flow}"
        );
        // Stable per name (a second ask shows the same questions, a new flow).
        let again = forgot(name).json();
        assert_eq!(again["questions"], v["questions"], "{name}");
        assert_ne!(again["flow"], v["flow"]);
    }

    // A reset through a decoy flow fails exactly as wrong answers on a real one do.
    let reset = |flow: &Value| {
        d.post(
            "/v1/password/forgot/reset",
            &json!({"flow": flow, "answers": ["a guess", "another guess"],
                    "new_password": "Res3t-Password!", "confirm_password": "Res3t-Password!"}),
        )
    };
    let real = reset(&kv["flow"]);
    let decoy = reset(&forgot("nobody").json()["flow"]);
    real.expect_generic();
    decoy.expect_generic();
    assert_eq!(real.body, decoy.body);
    assert_eq!(failed_attempts(&env, "hal"), 1, "the wrong answers counted");
    d.assert_healthy();
}

/// After a full journey (emailed code, remembered device, session, security answers,
/// recovery codes, flow tokens) none of those secrets is in the database files.
#[test]
fn the_database_holds_no_plain_code_token_or_answer() {
    let env = provision();
    env.ctl(&["group", "add", "casework", "--require-2fa"]).ok();
    add_user(&env, "kim", "school", &["casework"], "user");
    let recovery = enroll_email(&env, "kim");
    let sink = SmtpSink::start();
    let d = start_with_mail(&env, &sink);

    let (flow, code) = code_flow(&d, &sink, "kim", 0);
    let v = email_code(&d, &flow, &code, true).expect_status("authenticated");
    let device = v["device_token"].as_str().expect("device").to_string();
    let session = v["session"].as_str().expect("session").to_string();
    let answers = ["Whiskers McFluffington", "Saint-Remy-de-Provence"];
    d.put_auth(
        "/v1/me/security-questions",
        &session,
        &json!({"questions": [
            {"question": "What was the name of your first pet?", "answer": answers[0]},
            {"question": "Where did your parents meet?", "answer": answers[1]},
        ]}),
    )
    .expect(200);
    let forgot = d
        .post("/v1/password/forgot", &json!({"username": "kim"}))
        .expect(200);
    let forgot_flow = forgot["flow"].as_str().expect("flow").to_string();
    // A pending code of another flow.
    let (pending_flow, pending_code) = code_flow(&d, &sink, "kim", 1);

    let mut secrets: Vec<(String, String)> = vec![
        ("emailed code".into(), code.clone()),
        ("pending emailed code".into(), pending_code.clone()),
        ("device token".into(), device.clone()),
        ("session token".into(), session.clone()),
        ("login flow".into(), flow.clone()),
        ("pending login flow".into(), pending_flow.clone()),
        ("forgot flow".into(), forgot_flow.clone()),
        ("password".into(), PW.to_string()),
    ];
    for a in answers {
        secrets.push(("answer".into(), a.to_string()));
        secrets.push(("normalised answer".into(), a.to_lowercase()));
    }
    for r in &recovery {
        secrets.push(("recovery code".into(), r.clone()));
        secrets.push(("recovery code".into(), r.replace('-', "")));
    }
    let check = |when: &str| {
        let bytes = db_bytes(&env);
        assert!(bytes.len() > 4096, "read the database files");
        for (what, s) in &secrets {
            assert!(
                !contains(&bytes, s.as_bytes()),
                "{when}: the {what} {s:?} is stored in plain text"
            );
        }
    };
    check("while the daemon runs (database + WAL)");
    // Nor do the daemon's logs.
    let logs = d.stderr();
    for (what, s) in &secrets {
        assert!(
            !logs.contains(s.as_str()),
            "the {what} {s:?} is in the logs:\n{logs}"
        );
    }
    drop(d);
    check("after the daemon stopped");
}

/// "Remember this device" on the TOTP step too; the token skips the second factor only:
/// never the password, a lock, an expired password or the terms. Revoking the device
/// (or a password change) ends it.
#[test]
fn a_remembered_device_skips_only_the_second_factor() {
    let env = provision();
    add_user(&env, "rd", "school", &["pupil-data"], "user");
    add_user(&env, "rd2", "school", &["pupil-data"], "user");
    let (mut app, _) = enroll_totp(&env, "rd");
    let (mut app2, _) = enroll_totp(&env, "rd2");
    let mut d = Daemon::start(&env, &[]);

    let flow = d.second_factor_flow("rd", PW);
    let v = d
        .post(
            "/v1/login/totp",
            &json!({"flow": flow, "code": app.fresh(), "remember_device": true}),
        )
        .expect_status("authenticated");
    let device = v["device_token"]
        .as_str()
        .expect("device token")
        .to_string();
    d.login_device("rd", PW, &device)
        .expect_status("authenticated");

    // Never the password.
    d.login_device("rd", "Wrong-password-1!", &device)
        .expect_generic();
    // Not when remembering is switched off by policy.
    policy(&env, &["remember_device.days=0"]);
    d.login_device("rd", PW, &device)
        .expect_status("second_factor_required");
    let flow = d.second_factor_flow("rd2", PW);
    let v = d
        .post(
            "/v1/login/totp",
            &json!({"flow": flow, "code": app2.fresh(), "remember_device": true}),
        )
        .expect_status("authenticated");
    assert!(v.get("device_token").is_none(), "remembering is off: {v:#}");
    policy(&env, &["remember_device.days=30"]);
    d.login_device("rd", PW, &device)
        .expect_status("authenticated");
    // Bound to its user.
    d.login_device("rd2", PW, &device)
        .expect_status("second_factor_required");
    // Another device, revoked by the administrator.
    let flow = d.second_factor_flow("rd2", PW);
    let v = d
        .post(
            "/v1/login/totp",
            &json!({"flow": flow, "code": app2.fresh(), "remember_device": true}),
        )
        .expect_status("authenticated");
    let device2 = v["device_token"]
        .as_str()
        .expect("device token")
        .to_string();
    d.login_device("rd2", PW, &device2)
        .expect_status("authenticated");
    env.ctl(&["--yes", "device", "revoke", "--user", "rd2"])
        .ok();
    d.login_device("rd2", PW, &device2)
        .expect_status("second_factor_required");
    // Never a lock.
    for i in 0..9 {
        d.login("rd", &format!("Wrong-{i}!x")).expect_generic();
    }
    d.login_device("rd", PW, &device).expect_generic();
    env.ctl(&["unlock", "rd"]).ok();
    d.login_device("rd", PW, &device)
        .expect_status("authenticated");
    // Never the terms (accepting them is checked by the next test).
    set_terms(&env, "t1", "Terms.");
    let v = d
        .login_device("rd", PW, &device)
        .expect_status("terms_required");
    d.post(
        "/v1/login/terms",
        &json!({"flow": v["flow"], "accept": true}),
    )
    .expect(200);
    policy(&env, &["terms.mode=once_per_version"]);
    d.login_device("rd", PW, &device)
        .expect_status("authenticated");
    // Never an expired password; and a password change forgets every device.
    env.ctl(&["passwd", "rd", "--expire"]).ok();
    let v = d
        .login_device("rd", PW, &device)
        .expect_status("password_expired");
    let new = "N3w-Password!x";
    d.post(
        "/v1/login/password",
        &json!({"flow": v["flow"], "new_password": new, "confirm_password": new}),
    )
    .expect_status("password_changed");
    d.login_device("rd", new, &device)
        .expect_status("second_factor_required");

    d.assert_healthy();
}

/// One emailed code submitted concurrently on its flow: exactly one session.
#[test]
fn one_email_code_submitted_concurrently_succeeds_exactly_once() {
    let env = email_env(&["zoe"]);
    let sink = SmtpSink::start();
    let d = std::sync::Arc::new(start_with_mail(&env, &sink));
    let (flow, code) = code_flow(&d, &sink, "zoe", 0);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(20));
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let (d, b, flow, code) = (d.clone(), barrier.clone(), flow.clone(), code.clone());
            std::thread::spawn(move || {
                b.wait();
                email_code(&d, &flow, &code, false)
            })
        })
        .collect();
    let answers: Vec<Resp> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let ok = answers.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 1, "exactly one success: {answers:?}");
    for r in answers.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 401, "{r:?}");
    }
    assert_eq!(sessions_of(&env, "zoe").len(), 1);
}

/// Terms every login do not cancel a remembered device: after accepting them, the user
/// of a remembered device is signed in without a code (no code is mailed).
#[test]
fn a_remembered_device_still_skips_the_code_after_the_terms() {
    let env = email_env(&["tess"]);
    let sink = SmtpSink::start();
    let mut d = start_with_mail(&env, &sink);
    let (flow, code) = code_flow(&d, &sink, "tess", 0);
    let v = email_code(&d, &flow, &code, true).expect_status("authenticated");
    let device = v["device_token"]
        .as_str()
        .expect("device token")
        .to_string();

    set_terms(&env, "2026-01", "The case-management terms.");
    policy(&env, &["terms.mode=every_login"]);
    let v = d
        .login_device("tess", PW, &device)
        .expect_status("terms_required");
    let r = d.post(
        "/v1/login/terms",
        &json!({"flow": v["flow"], "accept": true}),
    );
    std::thread::sleep(Duration::from_millis(300));
    let mailed = sink.codes_to(&addr("tess")).len() - 1;
    assert_eq!(
        r.expect(200)["status"],
        "authenticated",
        "the remembered device was forgotten at the terms step ({mailed} code(s) mailed): {r:?}"
    );
    assert_eq!(mailed, 0, "no code is mailed to a remembered device");
    d.assert_healthy();
}

/// An organisation can make emailed codes its users' default second factor: a user of a
/// require-2FA group with no factor of their own gets a mailed code, not an enrolment.
#[test]
fn an_organisation_can_default_its_users_to_emailed_codes() {
    let env = provision();
    env.ctl(&["org", "add", "casefirm", "--mfa-method", "email"])
        .ok();
    env.ctl(&["group", "add", "casework", "--require-2fa"]).ok();
    add_user(&env, "olga", "casefirm", &["casework"], "user");
    let sink = SmtpSink::start();
    let mut d = start_with_mail(&env, &sink);
    let v = d.login("olga", PW).expect_status("second_factor_required");
    assert_eq!(v["methods"][0], "email_otp", "{v:#}");
    let code = sink.nth_code(&addr("olga"), 0);
    email_code(&d, v["flow"].as_str().expect("flow"), &code, false).expect_status("authenticated");
    d.assert_healthy();
}

/// The number of questions must not give a real account away: whatever number a user
/// may set (2 to 5), unknown names are answered with that number too, for some names.
#[test]
fn forgot_password_decoys_cover_every_question_count_a_user_may_set() {
    let env = provision();
    add_user(&env, "many", "school", &[], "user");
    let d = Daemon::start(&env, &[]);
    let session = d.login_session("many", PW);
    let five: Vec<Value> = (1..=5)
        .map(|i| json!({"question": format!("Security question number {i}?"), "answer": format!("answer {i}")}))
        .collect();
    d.put_auth(
        "/v1/me/security-questions",
        &session,
        &json!({"questions": five}),
    )
    .expect(200);
    let real = d
        .post("/v1/password/forgot", &json!({"username": "many"}))
        .expect(200);
    assert_eq!(real["questions"].as_array().map(Vec::len), Some(5));

    let counts: BTreeSet<usize> = (0..60)
        .map(|i| {
            d.post(
                "/v1/password/forgot",
                &json!({"username": format!("ghost{i}")}),
            )
            .expect(200)["questions"]
                .as_array()
                .map_or(0, Vec::len)
        })
        .collect();
    assert!(
        counts.contains(&5),
        "decoys come with {counts:?} questions only, so an answer with 5 reveals a real account"
    );
}

/// A mail server that accepts connections but never answers: the code login still
/// answers (503, bounded by the mailer's deadline) and other users are served meanwhile.
#[test]
fn a_mail_server_that_never_answers_does_not_hang_the_daemon() {
    let env = email_env(&["hang"]);
    add_user(&env, "tim", "school", &["pupil-data"], "user");
    let (mut tim_app, _) = enroll_totp(&env, "tim");
    // Accept connections and hold them open, silent.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let held = held.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                if let Ok(mut h) = held.lock() {
                    h.push(s);
                }
            }
        });
    }
    let url = format!("smtp://127.0.0.1:{port}");
    let d = std::sync::Arc::new(Daemon::start(
        &env,
        &["--smtp-url", &url, "--mail-from", FROM],
    ));
    let d2 = d.clone();
    let started = Instant::now();
    let pending = std::thread::spawn(move || d2.login("hang", PW));
    std::thread::sleep(Duration::from_millis(300));
    // Meanwhile another user logs in promptly.
    let t = Instant::now();
    d.login_totp("tim", PW, &mut tim_app);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "other users wait for the mail server: {:?}",
        t.elapsed()
    );
    let r = pending.join().expect("thread");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "the code login hung for {:?}",
        started.elapsed()
    );
    r.expect_error(503, "mail_unavailable");
    assert!(sessions_of(&env, "hang").is_empty());
}
