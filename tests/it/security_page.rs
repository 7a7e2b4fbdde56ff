//! A security page for each user (issue 14, part 5), through the API `/v1/me/…` of the
//! real `authd`: factors, sessions, devices, recent sign-ins and failed attempts; each
//! action; re-authentication enforced for factor changes; another user's session or
//! device cannot be revoked (404, audited). The 5-minute window is tested with an
//! injected clock in `src/security.rs`.

use serde_json::{json, Value};

use crate::daemon_common::*;

fn overview(d: &Daemon, session: &str) -> Value {
    d.get_auth("/v1/me/security", session).expect(200)
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
