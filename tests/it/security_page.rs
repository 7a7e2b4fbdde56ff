//! A security page for each user (issue 14, part 5), through the API `/v1/me/…` of the
//! real `authd`: factors, sessions, devices, recent sign-ins and failed attempts; each
//! action; re-authentication enforced for factor changes; another user's session or
//! device cannot be revoked (404, audited). The 5-minute window is tested with an
//! injected clock in `src/security.rs`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::daemon_common::*;

fn overview(d: &Daemon, session: &str) -> Value {
    d.get_auth("/v1/me/security", session).expect(200)
}

/// Sign in with the password and a recovery code (keeping the apps' time steps): the
/// session.
#[track_caller]
fn recovery_session(d: &Daemon, user: &str, code: &str) -> String {
    let flow = d.second_factor_flow(user, PW);
    let v = d
        .post("/v1/login/recovery", &json!({"flow": flow, "code": code}))
        .expect_status("authenticated");
    v["session"].as_str().expect("session").to_string()
}

/// Re-authenticate the session with the password and a recovery code.
#[track_caller]
fn reauth(d: &Daemon, session: &str, code: &str) {
    d.post_auth(
        "/v1/me/reauth",
        session,
        Some(&json!({"password": PW, "code": code})),
    )
    .expect(200);
}

fn session_ids(v: &Value) -> Vec<(i64, bool)> {
    v["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| (s["id"].as_i64().expect("id"), s["current"] == true))
        .collect()
}

#[test]
fn the_security_page_shows_and_manages_the_users_own_security_only() {
    let env = provision();
    add_user(&env, "pia", "school", &["pupil-data"], "user");
    add_user(&env, "quin", "school", &[], "user");
    let (mut app, old_codes) = enroll_totp(&env, "pia");
    let mut d = Daemon::start(&env, &[]);

    d.get_auth("/v1/me/security", "not-a-session")
        .expect_error(401, "unauthorized");
    // A failed attempt, then two sign-ins of pia, one remembering the device.
    d.login("pia", "Wrong-Password-1!").expect_generic();
    let a = d.login_totp("pia", PW, &mut app);
    let flow = d.second_factor_flow("pia", PW);
    let v = d
        .post(
            "/v1/login/totp",
            &json!({"flow": flow, "code": app.fresh(), "remember_device": true}),
        )
        .expect_status("authenticated");
    let b = v["session"].as_str().expect("session").to_string();
    let q = d.login_session("quin", PW);
    let _q2 = d.login_session("quin", PW);

    let v = overview(&d, &a);
    assert_eq!(v["username"], "pia");
    assert_eq!(v["factors"]["second_factor"], "totp", "{v:#}");
    assert_eq!(v["factors"]["recovery_codes_left"], old_codes.len());
    let ids = session_ids(&v);
    assert_eq!(ids.len(), 2, "{v:#}");
    assert_eq!(ids.iter().filter(|(_, c)| *c).count(), 1);
    assert_eq!(v["devices"].as_array().expect("devices").len(), 1);
    let kinds: Vec<&str> = v["activity"]
        .as_array()
        .expect("activity")
        .iter()
        .map(|a| a["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "sign_in").count(),
        2,
        "{v:#}"
    );
    assert!(kinds.contains(&"failed_attempt"), "{v:#}");
    assert!(v["activity"][0]["ip"]
        .as_str()
        .is_some_and(|ip| !ip.is_empty()));
    assert!(v.get("reauthenticated_until").is_none());

    // Another user's session and device: refused as missing, and still alive.
    let qv = overview(&d, &q);
    let q_session = session_ids(&qv)[0].0;
    d.post_auth(&format!("/v1/me/sessions/{q_session}/revoke"), &a, None)
        .expect_error(404, "not_found");
    d.get_auth("/v1/session", &q).expect(200);
    let pia_device = v["devices"][0]["id"].as_i64().expect("device id");
    d.post_auth(&format!("/v1/me/devices/{pia_device}/revoke"), &q, None)
        .expect_error(404, "not_found");
    assert_eq!(
        overview(&d, &a)["devices"].as_array().map(Vec::len),
        Some(1)
    );
    d.post_auth("/v1/me/sessions/x/revoke", &a, None)
        .expect_error(400, "invalid_input");

    // Factor changes need a fresh re-authentication: password and second factor.
    d.post_auth("/v1/me/recovery-codes", &a, None)
        .expect_error(403, "forbidden");
    d.post_auth("/v1/me/totp/remove", &a, None)
        .expect_error(403, "forbidden");
    d.post_auth("/v1/me/reauth", &a, Some(&json!({"password": PW})))
        .expect_generic();
    d.post_auth(
        "/v1/me/reauth",
        &a,
        Some(&json!({"password": "Wrong-Password-2!", "code": app.fresh()})),
    )
    .expect_generic();
    d.post_auth("/v1/me/recovery-codes", &a, None)
        .expect_error(403, "forbidden");
    let r = d
        .post_auth(
            "/v1/me/reauth",
            &a,
            Some(&json!({"password": PW, "code": app.fresh()})),
        )
        .expect(200);
    assert!(r["reauthenticated_until"].is_string(), "{r:#}");
    // Re-authentication belongs to the session that did it.
    d.post_auth("/v1/me/recovery-codes", &b, None)
        .expect_error(403, "forbidden");
    let codes = d.post_auth("/v1/me/recovery-codes", &a, None).expect(200);
    let codes = strings(&codes["recovery_codes"]);
    assert_eq!(codes.len(), old_codes.len());
    assert!(codes.iter().all(|c| !old_codes.contains(c)), "fresh codes");
    // The old codes no longer sign in; a new one does.
    let flow = d.second_factor_flow("pia", PW);
    d.post(
        "/v1/login/recovery",
        &json!({"flow": flow, "code": old_codes[0]}),
    )
    .expect_generic();
    let flow = d.second_factor_flow("pia", PW);
    d.post(
        "/v1/login/recovery",
        &json!({"flow": flow, "code": codes[0]}),
    )
    .expect_status("authenticated");

    // Own session by id, then every other one, then every device.
    let b_id = session_ids(&overview(&d, &b))
        .into_iter()
        .find(|(_, c)| *c)
        .expect("b's id")
        .0;
    d.post_auth(&format!("/v1/me/sessions/{b_id}/revoke"), &a, None)
        .expect(204);
    d.get_auth("/v1/session", &b)
        .expect_error(401, "unauthorized");
    let n = d
        .post_auth("/v1/me/sessions/revoke-others", &a, None)
        .expect(200);
    assert_eq!(n["revoked"], 1, "the recovery-code session: {n:#}");
    assert_eq!(session_ids(&overview(&d, &a)).len(), 1);
    d.get_auth("/v1/session", &q).expect(200);
    let n = d
        .post_auth("/v1/me/devices/revoke-all", &a, None)
        .expect(200);
    assert_eq!(n["revoked"], 1);

    // Removing the authenticator app ends every session; the next sign-in enrols again.
    d.post_auth("/v1/me/totp/remove", &a, None).expect(204);
    d.get_auth("/v1/session", &a)
        .expect_error(401, "unauthorized");
    d.login("pia", PW).expect_status("enrollment_required");

    for (event, outcome) in [
        ("security.reauth", "failure"),
        ("security.reauth", "success"),
        ("recovery.regenerate", "failure"),
        ("recovery.regenerate", "success"),
        ("session.revoke", "failure"),
        ("session.revoke", "success"),
        ("factor.remove", "success"),
    ] {
        let rows = audit_events(&env, "pia", event);
        assert!(
            rows.iter().any(|r| r["outcome"] == outcome),
            "{event} {outcome}: {rows:#?}"
        );
    }
    d.assert_healthy();
}

/// The portal's `/security`: every section on one page; the reauth form refuses a wrong
/// password; after a right one the factor actions appear; another browser's session is
/// signed out from here; forms without the session's CSRF token change nothing.
#[test]
fn the_portal_security_page_lists_sections_and_signs_out_other_sessions() {
    use crate::portal::kit::{self, field, Browser};
    let env = kit::provision();
    kit::add(&env, "rita", "school", "user", &[]);
    let d = kit::Daemon::start(&env, &[]);
    let mut one = Browser::new(&d.addr);
    kit::form_login(&mut one, "", "rita", crate::common::STRONG).status(303);
    let mut two = Browser::new(&d.addr);
    kit::form_login(&mut two, "", "rita", crate::common::STRONG).status(303);
    two.get("/security").status(200);

    let page = one.get("/security");
    page.status(200);
    for id in [
        "factors",
        "passkeys",
        "manage-passkeys",
        "sessions",
        "devices",
        "activity",
        "reauth-form",
    ] {
        assert!(
            page.body.contains(&format!("id=\"{id}\"")),
            "{id}: {}",
            page.body
        );
    }
    assert_eq!(page.body.matches("data-session=").count(), 2);
    let csrf = field(&page.body, "csrf").expect("csrf");

    // A wrong token changes nothing.
    one.post("/security/sessions/revoke-others", &[("csrf", "forged")])
        .status(403);
    two.get("/security").status(200);

    let r = one.post(
        "/security/reauth",
        &[("csrf", &csrf), ("password", "Wrong-Password-1!")],
    );
    r.status(303);
    let page = one.get(r.header("location").expect("location"));
    assert!(page.body.contains("not accepted"), "{}", page.body);
    let r = one.post(
        "/security/reauth",
        &[("csrf", &csrf), ("password", crate::common::STRONG)],
    );
    r.status(303);
    let page = one.get("/security");
    assert!(page.body.contains("id=\"reauth-until\""), "{}", page.body);

    let r = one.post("/security/sessions/revoke-others", &[("csrf", &csrf)]);
    r.status(303);
    let gone = two.get("/security");
    gone.status(303);
    assert!(
        gone.header("location")
            .is_some_and(|l| l.contains("/login")),
        "{gone:?}"
    );
    assert_eq!(
        one.get("/security").body.matches("data-session=").count(),
        1
    );
}

/// Re-authentication with an emailed code (users whose second factor is emailed codes):
/// `POST /v1/me/reauth {"method":"email"}` mails a code bound to this session, then
/// `{"password","email_code"}` confirms; a sign-in's code, a wrong code or a spent one
/// does not; resends wait; other users and shapes are refused. The portal offers it.
#[test]
fn an_emailed_code_re_authenticates_users_of_emailed_codes() {
    let env = provision();
    add_user(&env, "sam", "school", &["pupil-data"], "user");
    add_user(&env, "tia", "school", &["pupil-data"], "user");
    enroll_email(&env, "sam");
    let (mut app, _) = enroll_totp(&env, "tia");
    let sink = SmtpSink::start();
    let smtp = sink.url();
    let args = [
        "--smtp-url",
        smtp.as_str(),
        "--mail-from",
        "authd@example.org",
    ];
    let d = Daemon::start(&env, &args);
    let to = "sam@example.org";

    let flow = d.second_factor_flow("sam", PW);
    let code = sink.nth_code(to, 0);
    let v = d
        .post("/v1/login/email", &json!({"flow": flow, "code": code}))
        .expect_status("authenticated");
    let s = v["session"].as_str().expect("session").to_string();
    let reauth = |body: Value| d.post_auth("/v1/me/reauth", &s, Some(&body));

    d.post_auth("/v1/me/recovery-codes", &s, None)
        .expect_error(403, "forbidden");
    let v = reauth(json!({"method": "email"})).expect(200);
    assert_eq!(v["status"], "code_sent", "{v:#}");
    let mine = sink.nth_code(to, 1);
    reauth(json!({"method": "email"})).expect(429);
    reauth(json!({"method": "sms"})).expect_error(400, "invalid_input");
    reauth(json!({"method": "email", "password": PW})).expect_error(400, "invalid_input");
    // A wrong code, and a code mailed to a sign-in elsewhere, do not confirm.
    reauth(json!({"password": PW, "email_code": other_code(&[&mine])})).expect_generic();
    let _elsewhere = d.second_factor_flow("sam", PW);
    let theirs = sink.nth_code(to, 2);
    if theirs != mine {
        reauth(json!({"password": PW, "email_code": theirs})).expect_generic();
    }
    // The right code without the password does not either.
    reauth(json!({"password": "Wrong-Password-1!", "email_code": mine})).expect_generic();
    // The password and this session's code: confirmed, once.
    let v = reauth(json!({"password": PW, "email_code": mine})).expect(200);
    assert!(v["reauthenticated_until"].is_string(), "{v:#}");
    d.post_auth("/v1/me/recovery-codes", &s, None).expect(200);
    reauth(json!({"password": PW, "email_code": mine})).expect_generic();
    let rows = env.audit(&["--event", "security.reauth_code", "--user", "sam"]);
    assert_eq!(
        rows.iter().filter(|r| r["outcome"] == "success").count(),
        1,
        "{rows:#?}"
    );

    // An authenticator-app user is told to use the app.
    let t = d.login_totp("tia", PW, &mut app);
    d.post_auth("/v1/me/reauth", &t, Some(&json!({"method": "email"})))
        .expect_error(400, "invalid_input");
    assert_eq!(sink.codes_to("tia@example.org").len(), 0);

    // The portal: "Email me a code", then the password and the code.
    use crate::portal::kit::{self, field, Browser};
    let kd = kit::Daemon::start(&env, &args);
    let mut b = Browser::new(&kd.addr);
    let mut r = kit::form_login(&mut b, "", "sam", PW);
    if r.status == 303 {
        r = b.get(r.header("location").expect("location"));
    }
    let csrf = field(&r.body, "csrf").expect("csrf");
    let flow = field(&r.body, "flow").expect("flow");
    let methods = field(&r.body, "methods").unwrap_or_default();
    let sent_to = field(&r.body, "sent_to").unwrap_or_default();
    let code = sink.nth_code(to, 3);
    let r = b.post(
        "/login/email",
        &[
            ("csrf", csrf.as_str()),
            ("flow", flow.as_str()),
            ("methods", methods.as_str()),
            ("sent_to", sent_to.as_str()),
            ("code", code.as_str()),
        ],
    );
    // Signed in (a 303 on, or a page telling of the failed attempts above).
    assert!(
        r.set_cookie("__Host-authd_session").is_some(),
        "signed in: {r:?}"
    );
    let page = b.get("/security").body;
    assert!(page.contains("id=\"reauth-code-form\""), "{page}");
    assert!(page.contains("Code from your email"), "{page}");
    let csrf = field(&page, "csrf").expect("csrf");
    let r = b.post("/security/reauth-code", &[("csrf", csrf.as_str())]);
    assert_eq!(r.status, 303, "{r:?}");
    let page = b.get(r.header("location").expect("location")).body;
    assert!(page.contains("A code was mailed to you"), "{page}");
    let code = sink.nth_code(to, 4);
    let r = b.post(
        "/security/reauth",
        &[
            ("csrf", csrf.as_str()),
            ("password", PW),
            ("code", code.as_str()),
        ],
    );
    assert_eq!(r.status, 303, "{r:?}");
    let page = b.get("/security").body;
    assert!(page.contains("id=\"reauth-until\""), "{page}");
    // Confirmed, an emailed-code user is offered new recovery codes, and no authenticator
    // app to remove (they have none).
    assert!(page.contains("id=\"new-codes\""), "{page}");
    assert!(!page.contains("id=\"remove-totp\""), "{page}");
}

/// Several authenticator apps (issue 14): adding one needs the re-authentication (403
/// without), it is confirmed with a code of its own, then a code of either app signs in;
/// one success per time step per user, whichever app; one app is removed and the other
/// still signs in; the last is not removed this way (409); another user's app is 404
/// (audited); `authctl user show` lists the apps and `authctl totp test` names the one a
/// code matched; the added and removed alerts are mailed.
#[test]
fn a_second_authenticator_app_is_added_confirmed_used_and_removed() {
    let env = provision();
    add_user(&env, "ada", "school", &["pupil-data"], "user");
    add_user(&env, "ned", "school", &[], "user");
    let (mut one, codes) = enroll_totp(&env, "ada");
    let sink = SmtpSink::start();
    let smtp = sink.url();
    let mut d = Daemon::start(
        &env,
        &["--smtp-url", &smtp, "--mail-from", "authd@example.org"],
    );
    let to = "ada@example.org";
    let mails = |subject: &str| {
        sink.messages()
            .into_iter()
            .filter(|m| m.is_to(to) && m.subject.contains(subject))
            .count()
    };
    // authctl enroll mailed "added" just now; alerts are one of a kind per hour, so that
    // one is made an hour older for this test's own to be sent.
    sink.wait_for("the enrolment's alert", Duration::from_secs(20), |m| {
        m.is_to(to) && m.subject.contains("factor was added")
    });
    sql(
        &env,
        "UPDATE outbox SET created_at = created_at - 7200 WHERE kind = 'factor_added'",
        &[],
    );

    // Signed in with a recovery code (the app's time steps are kept for below).
    let s = recovery_session(&d, "ada", &codes[0]);

    // Adding needs the re-authentication.
    let add = |name: &str| d.post_auth("/v1/me/totp", &s, Some(&json!({"name": name})));
    add("Backup phone").expect_error(403, "forbidden");
    reauth(&d, &s, &codes[1]);
    let v = add("  Backup phone ").expect(201);
    assert_eq!(v["name"], "Backup phone", "{v:#}");
    assert!(v["otpauth_uri"]
        .as_str()
        .is_some_and(|u| u.starts_with("otpauth://totp/")));
    let b = v["id"].as_i64().expect("id");
    let mut two = Totp::new(v["secret"].as_str().expect("secret"));
    add("Backup phone").expect_error(409, "conflict");
    add("   ").expect_error(400, "invalid_input");

    let apps = overview(&d, &s)["factors"]["authenticators"].clone();
    let listed: Vec<(&str, bool)> = apps
        .as_array()
        .expect("authenticators")
        .iter()
        .map(|a| (a["name"].as_str().unwrap_or(""), a["confirmed"] == true))
        .collect();
    assert_eq!(
        listed,
        [("Authenticator app", true), ("Backup phone", false)],
        "{apps:#}"
    );
    let a = apps[0]["id"].as_i64().expect("id");

    // Unconfirmed, the new app signs nobody in.
    Totp::settle();
    let flow = d.second_factor_flow("ada", PW);
    d.totp(&flow, &two.code_at_step(Totp::step_now()))
        .expect_generic();
    // Confirmed with its own code (a wrong one is 400 invalid_code).
    let confirm = |code: &str| {
        d.post_auth(
            &format!("/v1/me/totp/{b}/confirm"),
            &s,
            Some(&json!({"code": code})),
        )
    };
    confirm(&other_code(&[&two.code_at_step(Totp::step_now())])).expect_error(400, "invalid_code");
    let v = confirm(&two.fresh()).expect(200);
    assert_eq!(
        v,
        json!({"id": b, "name": "Backup phone", "confirmed": true})
    );
    one.sync(&two);

    // Another user: the app is not found (audited), whoever asks and however.
    let n = d.login_session("ned", PW);
    d.post_auth("/v1/me/reauth", &n, Some(&json!({"password": PW})))
        .expect(200);
    d.delete_auth(&format!("/v1/me/totp/{b}"), &n)
        .expect_error(404, "not_found");
    d.post_auth(
        &format!("/v1/me/totp/{b}/confirm"),
        &n,
        Some(&json!({"code": "123456"})),
    )
    .expect_error(404, "not_found");

    // A code of the first app signs in; the second app's code of the same step right
    // after is a replay (one success per step per user); its next step signs in.
    d.login_totp("ada", PW, &mut one);
    let step = one.last_step().expect("step");
    let flow = d.second_factor_flow("ada", PW);
    d.totp(&flow, &two.code_at_step(step)).expect_generic();
    two.sync(&one);
    d.login_totp("ada", PW, &mut two);
    one.sync(&two);

    // authctl lists both apps and names the app a code matches.
    let u = user_show(&env, "ada");
    let names: Vec<&str> = u["totp_apps"]
        .as_array()
        .expect("totp_apps")
        .iter()
        .map(|a| a["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["Authenticator app", "Backup phone"], "{u:#}");
    assert!(u["totp_apps"][1]["confirmed_at"].is_string(), "{u:#}");
    let code = two.code_at_step(Totp::step_now());
    let t = env.json(&["totp", "test", "ada", &code]);
    assert_eq!(
        (t["match"].clone(), t["app"].clone()),
        (json!(true), json!("Backup phone"))
    );
    env.ctl(&["totp", "test", "ada", &code])
        .ok()
        .stdout_has("match (Backup phone) at offset");

    // Removing the second app: the first still signs in, the second no longer.
    d.delete_auth(&format!("/v1/me/totp/{b}"), &s).expect(204);
    let flow = d.second_factor_flow("ada", PW);
    d.totp(&flow, &two.fresh()).expect_generic();
    d.login_totp("ada", PW, &mut one);
    // The last app is not removed this way.
    let e = d
        .delete_auth(&format!("/v1/me/totp/{a}"), &s)
        .expect_error(409, "conflict");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("/v1/me/totp/remove")),
        "{e:#}"
    );
    assert_eq!(
        overview(&d, &s)["factors"]["authenticators"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // The alerts: an app added (confirmed) and an app removed.
    sink.wait_for("removed alert", Duration::from_secs(20), |m| {
        m.is_to(to) && m.subject.contains("factor was removed")
    });
    assert_eq!(mails("factor was added"), 2, "{:#?}", sink.messages());

    for (user, event, outcome, reason) in [
        ("ada", "totp.add", "failure", Some("reauth_required")),
        ("ada", "totp.add", "failure", Some("conflict")),
        ("ada", "totp.add", "success", None),
        ("ada", "totp.confirm", "failure", Some("bad_code")),
        ("ada", "totp.confirm", "success", None),
        ("ada", "totp.remove", "success", None),
        ("ada", "totp.remove", "failure", Some("last_app")),
        ("ned", "totp.remove", "failure", Some("not_own_app")),
        ("ned", "totp.confirm", "failure", Some("not_own_app")),
    ] {
        let rows = audit_events(&env, user, event);
        assert!(
            rows.iter()
                .any(|r| r["outcome"] == outcome && reason.is_none_or(|x| r["reason"] == x)),
            "{user} {event} {outcome} {reason:?}: {rows:#?}"
        );
    }
    d.assert_healthy();
}

/// The portal's `/security` with several authenticator apps: the apps are listed; adding
/// one needs the re-authentication and a form with the session's CSRF token; the added
/// app's page shows its QR code (SVG) and secret, a wrong code shows them again, its code
/// confirms it; then it is removed with its own "Remove" form.
#[test]
fn the_portal_adds_confirms_and_removes_an_authenticator_app() {
    use crate::portal::kit::{self, field, Browser};
    let env = provision();
    add_user(&env, "uma", "school", &["pupil-data"], "user");
    let (_, codes) = enroll_totp(&env, "uma");
    let d = kit::Daemon::start(&env, &[]);
    let mut b = Browser::new(&d.addr);
    let mut r = kit::form_login(&mut b, "", "uma", PW);
    if r.status == 303 {
        r = b.get(r.header("location").expect("location"));
    }
    let csrf = field(&r.body, "csrf").expect("csrf");
    let flow = field(&r.body, "flow").expect("flow");
    let methods = field(&r.body, "methods").unwrap_or_default();
    let r = b.post(
        "/login/recovery",
        &[
            ("csrf", csrf.as_str()),
            ("flow", flow.as_str()),
            ("methods", methods.as_str()),
            ("code", codes[0].as_str()),
        ],
    );
    assert!(r.set_cookie("__Host-authd_session").is_some(), "{r:?}");

    let page = b.get("/security").body;
    assert!(page.contains("id=\"authenticators\""), "{page}");
    assert_eq!(page.matches("data-app=").count(), 1, "{page}");
    assert!(!page.contains("id=\"add-totp\""), "{page}");
    let csrf = field(&page, "csrf").expect("csrf");
    let add = |b: &mut Browser, csrf: &str| {
        b.post("/security/totp/add", &[("csrf", csrf), ("name", "Tablet")])
    };
    add(&mut b, "forged").status(403);
    let r = add(&mut b, &csrf);
    assert_eq!(r.status, 403, "no re-authentication yet: {r:?}");
    assert!(r.body.contains("re-authenticate"), "{}", r.body);

    b.post(
        "/security/reauth",
        &[("csrf", &csrf), ("password", PW), ("code", &codes[1])],
    )
    .status(303);
    let page = b.get("/security").body;
    assert!(page.contains("id=\"add-totp\""), "{page}");
    let r = add(&mut b, &csrf);
    r.status(200);
    assert!(r.body.contains("<svg class=\"qr\""), "{}", r.body);
    let secret = r
        .body
        .split("id=\"totp-secret\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("the secret as text")
        .to_string();
    let app = field(&r.body, "app").expect("the app's id");
    let confirm = |b: &mut Browser, code: &str| {
        b.post(
            "/security/totp/confirm",
            &[
                ("csrf", csrf.as_str()),
                ("app", app.as_str()),
                ("code", code),
            ],
        )
    };
    Totp::settle();
    let good = kit::totp(&secret, 0);
    let r = confirm(&mut b, &other_code(&[&good]));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("not accepted"), "{}", r.body);
    assert!(r.body.contains(&secret), "the secret shown again");
    confirm(&mut b, &good).status(303);
    let page = b.get("/security?m=app_added").body;
    assert!(page.contains("its codes sign you in"), "{page}");
    assert_eq!(page.matches("data-app=").count(), 2, "{page}");
    assert!(page.contains("<strong>Tablet</strong>"), "{page}");
    assert!(!page.contains("not confirmed yet"), "{page}");

    b.post(
        "/security/totp/delete",
        &[("csrf", csrf.as_str()), ("app", app.as_str())],
    )
    .status(303);
    let page = b.get("/security").body;
    assert_eq!(page.matches("data-app=").count(), 1, "{page}");
    assert!(!page.contains("Tablet"), "{page}");
    let rows = audit_events(&env, "uma", "totp.remove");
    assert!(rows.iter().any(|r| r["outcome"] == "success"), "{rows:#?}");
}

/// The replay guard is the user's, under concurrency too: 50 sign-in flows given, at
/// once, the codes of one time step from two confirmed apps (half each): exactly one
/// session.
#[test]
fn one_time_step_of_two_apps_on_fifty_concurrent_flows_succeeds_exactly_once() {
    use std::sync::{Arc, Barrier};
    let env = provision();
    add_user(&env, "duo", "school", &["pupil-data"], "user");
    let (one, codes) = enroll_totp(&env, "duo");
    // Keep the account open so every answer is decided by the code alone.
    env.ctl(&["policy", "set", "lockout.max_failures=1000"])
        .ok();
    let d = Arc::new(Daemon::start(&env, &[]));
    let s = recovery_session(&d, "duo", &codes[0]);
    reauth(&d, &s, &codes[1]);
    let v = d
        .post_auth("/v1/me/totp", &s, Some(&json!({"name": "Second"})))
        .expect(201);
    let mut two = Totp::new(v["secret"].as_str().expect("secret"));
    Totp::settle();
    d.post_auth(
        &format!("/v1/me/totp/{}/confirm", v["id"]),
        &s,
        Some(&json!({"code": two.fresh()})),
    )
    .expect(200);
    let step = two.last_step().expect("step") + 1;
    let (a, b) = (one.code_at_step(step), two.code_at_step(step));
    let flows: Vec<String> = (0..50).map(|_| d.second_factor_flow("duo", PW)).collect();
    let barrier = Arc::new(Barrier::new(flows.len()));
    let handles: Vec<_> = flows
        .into_iter()
        .enumerate()
        .map(|(i, flow)| {
            let code = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (d, barrier) = (d.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                d.totp(&flow, &code)
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
        r.expect_generic();
    }
}
