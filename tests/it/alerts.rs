//! Security alerts by mail (issue 14, part 6), through the real `authd` and a real SMTP
//! server on loopback: a sign-in from a new network, a factor added, a recovery code
//! used, a password changed — each mailed to the user with what to do if it was not
//! them, and at most one of a kind per hour (the second sign-in from yet another network
//! within the hour mails nothing). Lock notices stay one per lock (tests/it/lockout.rs).

use std::time::Duration;

use serde_json::json;

use crate::common::Env;
use crate::daemon_common::*;

/// A full sign-in (password, then a TOTP code) from client address `ip`.
fn sign_in_from(d: &Daemon, ip: &str, user: &str, app: &mut Totp) -> String {
    let v = post_from(
        d,
        ip,
        "/v1/login",
        &json!({"username": user, "password": PW}),
    )
    .expect_status("second_factor_required");
    let v = post_from(
        d,
        ip,
        "/v1/login/totp",
        &json!({"flow": v["flow"], "code": app.fresh()}),
    )
    .expect_status("authenticated");
    v["session"].as_str().expect("session").to_string()
}

fn outbox(env: &Env, kind: &str) -> i64 {
    rusqlite::Connection::open(&env.db)
        .expect("open")
        .query_row("SELECT count(*) FROM outbox WHERE kind=?1", [kind], |r| {
            r.get(0)
        })
        .expect("count")
}

/// The mails to `to` whose subject contains `subject`.
fn mails(sink: &SmtpSink, to: &str, subject: &str) -> Vec<Mail> {
    sink.messages()
        .into_iter()
        .filter(|m| m.is_to(to) && m.subject.contains(subject))
        .collect()
}

#[test]
fn alerts_are_mailed_once_per_kind_and_hour_with_what_to_do() {
    let env = provision();
    add_user(&env, "sam", "school", &["pupil-data"], "user");
    let (mut app, codes) = enroll_totp(&env, "sam");
    let sink = SmtpSink::start();
    let url = sink.url();
    let mut d = Daemon::start(
        &env,
        &[
            "--smtp-url",
            &url,
            "--mail-from",
            "authd@example.org",
            "--trusted-proxy",
            "127.0.0.1/32",
        ],
    );
    let to = "sam@example.org";
    let wait = |subject: &str| {
        sink.wait_for(subject, Duration::from_secs(20), |m| {
            m.is_to(to) && m.subject.contains(subject)
        })
    };

    // The factor authctl set up.
    let m = wait("sign-in factor was added");
    assert!(m.body.contains("administrator"), "{}", m.body);

    // The first sign-in ever alerts nothing; a new network does; another new network
    // within the hour does not mail again.
    sign_in_from(&d, "203.0.113.5", "sam", &mut app);
    assert_eq!(outbox(&env, "new_sign_in"), 0);
    sign_in_from(&d, "203.0.113.77", "sam", &mut app);
    assert_eq!(outbox(&env, "new_sign_in"), 0, "the same /24");
    let session = sign_in_from(&d, "198.51.100.9", "sam", &mut app);
    let m = wait("New sign-in");
    assert!(m.body.contains("If it was not"), "{}", m.body);
    assert!(m.body.contains("change your password"), "{}", m.body);
    sign_in_from(&d, "192.0.2.10", "sam", &mut app);
    assert_eq!(outbox(&env, "new_sign_in"), 1, "one a hour");

    // Recovery codes: the first use alerts, the second within the hour does not.
    for code in &codes[..2] {
        let v = post_from(
            &d,
            "203.0.113.5",
            "/v1/login",
            &json!({"username": "sam", "password": PW}),
        )
        .expect_status("second_factor_required");
        post_from(
            &d,
            "203.0.113.5",
            "/v1/login/recovery",
            &json!({"flow": v["flow"], "code": code}),
        )
        .expect_status("authenticated");
    }
    let m = wait("recovery code was used");
    assert!(m.body.contains("If this was not you"), "{}", m.body);
    assert_eq!(outbox(&env, "recovery_code_used"), 1);

    // A password change.
    let new = "Changed-Pass-123!";
    d.post_auth(
        "/v1/password/change",
        &session,
        Some(&json!({"current_password": PW, "new_password": new, "confirm_password": new})),
    )
    .expect(200);
    let m = wait("password was changed");
    assert!(m.body.contains("administrator"), "{}", m.body);

    // Delivered once each.
    std::thread::sleep(Duration::from_secs(3));
    for subject in [
        "New sign-in",
        "recovery code was used",
        "sign-in factor was added",
    ] {
        assert_eq!(mails(&sink, to, subject).len(), 1, "{subject}");
    }
    d.assert_healthy();
}
