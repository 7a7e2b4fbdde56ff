//! Passkeys (issue 15) over the real API: the real authd on loopback, a real SQLite file,
//! and webauthn-rs's software authenticator (`webauthn-authenticator-rs`'s SoftPasskey)
//! making real registrations and assertions — registration, the second factor,
//! passwordless sign-in, enrolment in the login flow, and each refusal the issue lists
//! (another origin, another RP ID, a replayed assertion, a challenge of another flow, an
//! expired challenge, a credential of another user, a sign-count regression): refused,
//! counted toward lockout and audited. reset-2fa removes passkeys.

use serde_json::{json, Value};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::AuthenticatorBackend;
use webauthn_rs::prelude::{
    CreationChallengeResponse, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, Url,
};

use crate::daemon_common::{
    add_user, audit_events, db_conn, failed_attempts, policy, provision, sql, Daemon, Totp, PW,
};

const ORIGIN: &str = "http://localhost:8443";

/// authd with passkeys for RP ID `localhost` and the origin [`ORIGIN`].
fn daemon(env: &crate::common::Env, extra: &[&str]) -> Daemon {
    let mut a = vec!["--webauthn-rp-id", "localhost", "--webauthn-origin", ORIGIN];
    a.extend_from_slice(extra);
    Daemon::start(env, &a)
}

fn origin() -> Url {
    Url::parse(ORIGIN).expect("origin")
}

/// A software authenticator (user verification on) and what it registered.
struct Authenticator {
    soft: SoftPasskey,
    /// The credential id (base64url) of its passkey.
    cred_id: String,
    /// The WebAuthn user handle (base64url) the server gave its passkey.
    user_handle: String,
}

/// Register a passkey for a session: options, the authenticator, `POST /v1/me/passkeys`.
fn register(d: &Daemon, session: &str, name: &str) -> (Authenticator, Value) {
    let options = d
        .post_auth("/v1/me/passkeys/options", session, Some(&json!({})))
        .expect(200);
    assert!(options["publicKey"]["challenge"].is_string(), "{options}");
    assert_eq!(options["publicKey"]["rp"]["id"], "localhost", "{options}");
    let user_handle = options["publicKey"]["user"]["id"]
        .as_str()
        .expect("a user handle")
        .to_string();
    let ccr: CreationChallengeResponse =
        serde_json::from_value(options).expect("standard WebAuthn creation options");
    let mut soft = SoftPasskey::new(true);
    let cred: RegisterPublicKeyCredential = soft
        .perform_register(origin(), ccr.public_key, 60_000)
        .expect("the authenticator registers");
    let cred_id = cred.id.clone();
    let r = d
        .post_auth(
            "/v1/me/passkeys",
            session,
            Some(&json!({"name": name, "credential": cred})),
        )
        .expect(201);
    (
        Authenticator {
            soft,
            cred_id,
            user_handle,
        },
        r,
    )
}

/// An assertion for `options` (`{"publicKey":{…}}`) from `origin`, for the
/// authenticator's own credential; with `handle`, the authenticator's user handle.
fn assert_with(a: &mut Authenticator, options: &Value, origin: &Url, handle: bool) -> Value {
    let mut options = options.clone();
    // A discoverable request lists no credentials; this authenticator needs its own.
    options["publicKey"]["allowCredentials"] =
        json!([{"type": "public-key", "id": a.cred_id.clone()}]);
    let rcr: RequestChallengeResponse =
        serde_json::from_value(options).expect("standard WebAuthn request options");
    let cred: PublicKeyCredential = a
        .soft
        .perform_auth(origin.clone(), rcr.public_key, 60_000)
        .expect("the authenticator signs");
    let mut v = serde_json::to_value(&cred).expect("credential JSON");
    if handle {
        v["response"]["userHandle"] = json!(a.user_handle.clone());
    }
    v
}

fn assertion(a: &mut Authenticator, options: &Value) -> Value {
    assert_with(a, options, &origin(), false)
}

/// Log in with the password up to the second factor: the flow and the passkey options.
#[track_caller]
fn second_factor(d: &Daemon, user: &str) -> (String, Value) {
    let v = d.login(user, PW).expect_status("second_factor_required");
    let methods: Vec<&str> = v["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(methods.contains(&"passkey"), "{v}");
    assert!(v["passkey"]["publicKey"]["challenge"].is_string(), "{v}");
    (
        v["flow"].as_str().expect("flow").to_string(),
        v["passkey"].clone(),
    )
}

fn passkey_step(d: &Daemon, flow: &str, credential: &Value) -> crate::daemon_common::Resp {
    d.post(
        "/v1/login/passkey",
        &json!({"flow": flow, "credential": credential}),
    )
}

/// A user with a session and a registered passkey.
fn user_with_passkey(env: &crate::common::Env, d: &Daemon, name: &str) -> Authenticator {
    add_user(env, name, "school", &[], "user");
    let session = d.login_session(name, PW);
    register(d, &session, "laptop").0
}

/// An audit row's detail (stored as JSON text).
fn detail(row: &Value) -> Value {
    row["detail"]
        .as_str()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or(Value::Null)
}

/// The reasons of the failed `login.passkey` rows of a user, oldest first.
fn refusals(env: &crate::common::Env, user: &str) -> Vec<String> {
    audit_events(env, user, "login.passkey")
        .iter()
        .filter(|r| r["outcome"] == "failure")
        .map(|r| r["reason"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn register_then_second_factor_then_passwordless_then_rename_and_remove() {
    let env = provision();
    let d = daemon(&env, &[]);
    add_user(&env, "alice", "school", &[], "user");
    let session = d.login_session("alice", PW);

    let (mut a, r) = register(&d, &session, "laptop");
    assert_eq!(r["name"], "laptop", "{r}");
    let id = r["id"].as_i64().expect("an id");
    let list = d.get_auth("/v1/me/passkeys", &session).expect(200);
    let p = &list["passkeys"][0];
    assert_eq!(p["id"], id, "{list}");
    assert_eq!(p["name"], "laptop");
    assert!(
        p["created_at"].is_string() && p["last_used_at"].is_null(),
        "{p}"
    );
    assert_eq!(p["aaguid"].as_str().map(str::len), Some(36), "{p}");
    assert_eq!(p["user_verified"], true, "{p}");

    // Password, then the passkey as second factor (remembering the device).
    let (flow, options) = second_factor(&d, "alice");
    let cred = assertion(&mut a, &options);
    let v = d
        .post(
            "/v1/login/passkey",
            &json!({"flow": flow, "credential": cred, "remember_device": true}),
        )
        .expect_status("authenticated");
    assert!(
        v["session"].is_string() && v["device_token"].is_string(),
        "{v}"
    );
    let p = &d.get_auth("/v1/me/passkeys", &session).expect(200)["passkeys"][0];
    assert!(p["last_used_at"].is_string(), "{p}");

    // Passwordless: no username, no password.
    let o = d.post("/v1/login/passkey/options", &json!({})).expect(200);
    let pflow = o["flow"].as_str().expect("a flow").to_string();
    assert!(o["publicKey"]["challenge"].is_string(), "{o}");
    assert_eq!(o["publicKey"]["userVerification"], "required", "{o}");
    let cred = assert_with(&mut a, &o, &origin(), true);
    let v = passkey_step(&d, &pflow, &cred).expect_status("authenticated");
    assert_eq!(v["user"]["username"], "alice", "{v}");

    let ok = audit_events(&env, "alice", "login.passkey");
    let modes: Vec<_> = ok
        .iter()
        .filter(|r| r["outcome"] == "success")
        .map(|r| detail(r)["mode"].clone())
        .collect();
    assert_eq!(
        modes,
        [json!("second_factor"), json!("passwordless")],
        "{ok:?}"
    );
    assert!(!audit_events(&env, "alice", "passkey.register").is_empty());
    assert!(audit_events(&env, "alice", "passkey.challenge").len() >= 2);

    // Rename and remove.
    let path = format!("/v1/me/passkeys/{id}");
    let auth = format!("Bearer {session}");
    let r = d.request(
        "PATCH",
        &path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(br#"{"name":"work laptop"}"#),
    );
    assert_eq!(r.expect(200)["name"], "work laptop");
    let r = d.request("DELETE", &path, &[("Authorization", &auth)], None);
    assert_eq!(r.status, 204, "{}", r.text());
    let r = d.request("DELETE", &path, &[("Authorization", &auth)], None);
    r.expect_error(404, "not_found");
    assert_eq!(
        d.get_auth("/v1/me/passkeys", &session).expect(200)["passkeys"],
        json!([])
    );
    assert_eq!(audit_events(&env, "alice", "passkey.rename").len(), 1);
    assert_eq!(audit_events(&env, "alice", "passkey.remove").len(), 1);
    // Without a passkey, the password alone signs alice in again.
    d.login_session("alice", PW);
}

#[test]
fn assertions_for_another_origin_or_rp_id_are_refused_counted_and_audited() {
    let env = provision();
    let d = daemon(&env, &[]);
    let mut a = user_with_passkey(&env, &d, "alice");

    let (flow, options) = second_factor(&d, "alice");
    let evil = Url::parse("https://evil.example").expect("url");
    passkey_step(&d, &flow, &assert_with(&mut a, &options, &evil, false)).expect_generic();
    assert_eq!(failed_attempts(&env, "alice"), 1);

    // Another RP ID: the authenticator signs for evil.example's RP ID hash.
    let flow2 = d.post("/v1/login/passkey/options", &json!({"flow": flow}));
    let mut options = flow2.expect(200);
    options["publicKey"]["rpId"] = json!("evil.example");
    passkey_step(&d, &flow, &assertion(&mut a, &options)).expect_generic();
    assert_eq!(failed_attempts(&env, "alice"), 2);
    assert_eq!(refusals(&env, "alice"), ["wrong_origin", "wrong_rp_id"]);
}

#[test]
fn replayed_assertions_and_challenges_of_another_flow_are_refused_and_counted() {
    let env = provision();
    let d = daemon(&env, &[]);
    let mut a = user_with_passkey(&env, &d, "alice");

    // The same assertion twice: the second finds its challenge spent.
    let o = d.post("/v1/login/passkey/options", &json!({})).expect(200);
    let flow = o["flow"].as_str().expect("flow").to_string();
    let cred = assert_with(&mut a, &o, &origin(), true);
    passkey_step(&d, &flow, &cred).expect_status("authenticated");
    passkey_step(&d, &flow, &cred).expect_generic();
    assert_eq!(failed_attempts(&env, "alice"), 1);
    // …and against a fresh challenge, it answers the wrong one.
    let o2 = d.post("/v1/login/passkey/options", &json!({})).expect(200);
    passkey_step(&d, o2["flow"].as_str().expect("flow"), &cred).expect_generic();
    assert_eq!(failed_attempts(&env, "alice"), 2);

    // Two logins: an assertion for the first flow's challenge sent with the second.
    let (flow1, options1) = second_factor(&d, "alice");
    let (flow2, _) = second_factor(&d, "alice");
    let cred = assertion(&mut a, &options1);
    passkey_step(&d, &flow2, &cred).expect_generic();
    assert_eq!(failed_attempts(&env, "alice"), 3);
    // The first flow's challenge is still good for the first flow.
    passkey_step(&d, &flow1, &cred).expect_status("authenticated");
    assert_eq!(
        refusals(&env, "alice"),
        ["no_live_challenge", "wrong_challenge", "wrong_challenge"]
    );
}

#[test]
fn expired_challenges_are_refused_and_counted() {
    let env = provision();
    let d = daemon(&env, &["--webauthn-challenge-secs", "7"]);
    let mut a = user_with_passkey(&env, &d, "alice");
    let (flow, options) = second_factor(&d, "alice");
    // The flag sets the challenge's lifetime: in the options the browser gets and in
    // the ceremony authd keeps.
    assert_eq!(options["publicKey"]["timeout"], 7_000, "{options}");
    let lifetimes: i64 = db_conn(&env)
        .query_row(
            "SELECT min(expires_at - created_at) * 1000 + max(expires_at - created_at)
               FROM passkey_ceremonies",
            (),
            |r| r.get(0),
        )
        .expect("ceremony lifetimes");
    assert_eq!(lifetimes, 7_007, "every ceremony lives 7 s");
    let cred = assertion(&mut a, &options);
    // The challenge outlives its time (the edit stands in for 7 s passing; a real wait
    // races the load of a busy machine on the fresh challenge below).
    assert!(
        sql(
            &env,
            "UPDATE passkey_ceremonies SET expires_at = created_at",
            &[]
        ) >= 1
    );
    passkey_step(&d, &flow, &cred).expect_generic();
    assert_eq!(failed_attempts(&env, "alice"), 1);
    assert_eq!(refusals(&env, "alice"), ["no_live_challenge"]);
    // A fresh challenge for the same (still live) flow works.
    let o = d
        .post("/v1/login/passkey/options", &json!({"flow": flow}))
        .expect(200);
    passkey_step(&d, &flow, &assertion(&mut a, &o)).expect_status("authenticated");
}

#[test]
fn a_credential_of_another_user_is_refused_counted_and_audited() {
    let env = provision();
    let d = daemon(&env, &[]);
    let _alice = user_with_passkey(&env, &d, "alice");
    let mut bob = user_with_passkey(&env, &d, "bob");

    // Bob's passkey answering alice's second-factor challenge.
    let (flow, options) = second_factor(&d, "alice");
    passkey_step(&d, &flow, &assertion(&mut bob, &options)).expect_generic();
    assert_eq!(failed_attempts(&env, "alice"), 1);
    assert_eq!(refusals(&env, "alice"), ["credential_of_another_user"]);

    // Passwordless: bob's credential with alice's user handle.
    let o = d.post("/v1/login/passkey/options", &json!({})).expect(200);
    let mut cred = assert_with(&mut bob, &o, &origin(), true);
    cred["response"]["userHandle"] = json!(_alice.user_handle.clone());
    passkey_step(&d, o["flow"].as_str().expect("flow"), &cred).expect_generic();
    assert_eq!(failed_attempts(&env, "bob"), 1);
    assert_eq!(refusals(&env, "bob"), ["credential_of_another_user"]);
}

#[test]
fn a_sign_count_that_goes_backwards_is_refused_counted_and_audited_as_a_clone() {
    let env = provision();
    let d = daemon(&env, &[]);
    let mut a = user_with_passkey(&env, &d, "alice");
    // The stored counter moves far ahead, as if a copy of the key had been used.
    let n = sql(
        &env,
        "UPDATE passkeys SET credential = json_set(credential, '$.cred.counter', 1000000),
                             sign_count = 1000000",
        &[],
    );
    assert_eq!(n, 1);
    let (flow, options) = second_factor(&d, "alice");
    passkey_step(&d, &flow, &assertion(&mut a, &options)).expect_generic();
    assert_eq!(failed_attempts(&env, "alice"), 1);
    assert_eq!(refusals(&env, "alice"), ["sign_count_regressed"]);
    let clone = audit_events(&env, "alice", "passkey.clone_suspected");
    assert_eq!(clone.len(), 1, "{clone:?}");
    assert_eq!(
        detail(&clone[0])["stored_sign_count"],
        1_000_000,
        "{clone:?}"
    );
}

#[test]
fn enrolment_in_the_login_flow_offers_and_registers_a_passkey() {
    let env = provision();
    let d = daemon(&env, &[]);
    add_user(&env, "carol", "school", &["pupil-data"], "user");
    let v = d.login("carol", PW).expect_status("enrollment_required");
    assert!(
        v["methods"]
            .as_array()
            .is_some_and(|m| m.contains(&json!("passkey"))),
        "{v}"
    );
    let flow = v["flow"].as_str().expect("flow").to_string();
    // She starts with an authenticator app, then switches to a passkey (same flow).
    let totp = d
        .post("/v1/login/enroll", &json!({"flow": flow}))
        .expect(200);
    assert!(totp["secret"].is_string(), "{totp}");
    let mut a = enrol_in_login(&d, &flow);
    // The flow is spent: no TOTP confirmation after it.
    d.post(
        "/v1/login/enroll/confirm",
        &json!({"flow": flow, "code": "123456"}),
    )
    .expect_invalid_flow();
    // Then the passkey is carol's second factor.
    let (flow, options) = second_factor(&d, "carol");
    passkey_step(&d, &flow, &assertion(&mut a, &options)).expect_status("authenticated");
}

/// Enrol a passkey inside a login flow (`enrollment_required`); the authenticator.
fn enrol_in_login(d: &Daemon, flow: &str) -> Authenticator {
    let options = d
        .post(
            "/v1/login/enroll",
            &json!({"flow": flow, "method": "passkey"}),
        )
        .expect(200);
    let ccr: CreationChallengeResponse = serde_json::from_value(options).expect("options");
    let mut soft = SoftPasskey::new(true);
    let cred = soft
        .perform_register(origin(), ccr.public_key, 60_000)
        .expect("registers");
    let cred_id = cred.id.clone();
    let v = d
        .post(
            "/v1/login/enroll/confirm",
            &json!({"flow": flow, "credential": cred}),
        )
        .expect_status("enrolled");
    assert_eq!(
        v["recovery_codes"].as_array().map(Vec::len),
        Some(10),
        "{v}"
    );
    Authenticator {
        soft,
        cred_id,
        user_handle: String::new(),
    }
}

#[test]
fn a_group_requiring_passkeys_refuses_totp_only_and_email_only_sign_in() {
    let env = provision();
    env.ctl(&["group", "add", "finance", "--require-passkey"])
        .ok();
    let mail = env.path("mail");
    let d = daemon(&env, &["--mail-dir", mail.to_str().expect("path")]);
    add_user(&env, "tina", "school", &["finance"], "user");
    let mut app = Totp::from_enrollment(&env.enroll("tina"));
    add_user(&env, "emma", "school", &["finance"], "user");
    env.json(&["enroll", "emma", "--method", "email"]);
    // Flows begun before the policy: a code each.
    let tina_flow = d.second_factor_flow("tina", PW);
    let emma_flow = d.second_factor_flow("emma", PW);

    policy(&env, &["mfa.passkey_required=groups"]);
    d.totp(&tina_flow, &app.fresh()).expect_generic();
    d.post(
        "/v1/login/email",
        &json!({"flow": emma_flow, "code": "123456"}),
    )
    .expect_generic();
    let reason = |user: &str, event: &str| {
        audit_events(&env, user, event)
            .last()
            .map(|r| r["reason"].clone())
    };
    assert_eq!(
        reason("tina", "login.totp"),
        Some(json!("passkey_required"))
    );
    assert_eq!(
        reason("emma", "login.email"),
        Some(json!("passkey_required"))
    );

    // Their next sign-in asks for a passkey; a TOTP enrolment is refused.
    let v = d.login("tina", PW).expect_status("enrollment_required");
    assert_eq!(v["methods"], json!(["passkey"]), "{v}");
    let flow = v["flow"].as_str().expect("flow").to_string();
    d.post("/v1/login/enroll", &json!({"flow": flow}))
        .expect_error(400, "invalid_input");
    let v = d.login("tina", PW).expect_status("enrollment_required");
    let mut a = enrol_in_login(&d, v["flow"].as_str().expect("flow"));
    // Then only the passkey (and recovery codes) signs tina in.
    let (flow, options) = second_factor(&d, "tina");
    let v = d.login("tina", PW).expect_status("second_factor_required");
    assert!(
        !v["methods"]
            .as_array()
            .expect("methods")
            .contains(&json!("totp")),
        "{v}"
    );
    passkey_step(&d, &flow, &assertion(&mut a, &options)).expect_status("authenticated");

    // Outside the group, a TOTP user is not affected.
    add_user(&env, "tom", "school", &[], "user");
    let mut tom = Totp::from_enrollment(&env.enroll("tom"));
    d.login_totp("tom", PW, &mut tom);
}

#[test]
fn reset_2fa_removes_passkeys_and_says_how_many() {
    let env = provision();
    let d = daemon(&env, &[]);
    add_user(&env, "alice", "school", &[], "user");
    let session = d.login_session("alice", PW);
    register(&d, &session, "laptop");
    register(&d, &session, "phone");

    let out = env.ctl(&["passkey", "list", "alice"]).ok().stdout.clone();
    assert!(out.contains("laptop") && out.contains("phone"), "{out}");
    let list = env.json(&["passkey", "list", "alice"]);
    assert_eq!(list["passkeys"].as_array().map(Vec::len), Some(2), "{list}");
    let id = list["passkeys"][1]["id"].as_i64().expect("id").to_string();
    env.ctl(&["passkey", "remove", "alice", &id]).ok();
    env.ctl(&["passkey", "remove", "alice", &id]).code(3);
    let removed = audit_events(&env, "alice", "admin.passkey.remove");
    let outcomes: Vec<_> = removed.iter().map(|r| r["outcome"].clone()).collect();
    assert_eq!(
        outcomes,
        [json!("success"), json!("failure")],
        "{removed:?}"
    );

    let out = env.ctl(&["reset-2fa", "alice"]).ok().stdout.clone();
    assert!(out.contains("1 passkey(s)"), "{out}");
    let list = env.json(&["passkey", "list", "alice"]);
    assert_eq!(list["passkeys"], json!([]), "{list}");
    // Nothing left: the password alone signs alice in.
    d.login_session("alice", PW);
}

#[test]
fn insecure_origins_are_refused_at_start_up_and_passkeys_off_say_so() {
    let env = provision();
    let out = std::process::Command::new(crate::common::AUTHD)
        .args(["--db"])
        .arg(&env.db)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--webauthn-rp-id",
            "example.org",
            "--webauthn-origin",
            "http://example.org",
        ])
        .output()
        .expect("run authd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("https"), "{err}");

    // Without a relying party: no "passkey" in a login, and the endpoints say why.
    let d = Daemon::start(&env, &[]);
    add_user(&env, "alice", "school", &[], "user");
    let session = d.login_session("alice", PW);
    let e = d
        .post_auth("/v1/me/passkeys/options", &session, Some(&json!({})))
        .expect_error(400, "invalid_input");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("--webauthn-rp-id")),
        "{e}"
    );
}

#[test]
fn malformed_passkey_requests_are_clear_4xx_never_counted_never_5xx() {
    let env = provision();
    let mut d = daemon(&env, &[]);
    add_user(&env, "alice", "school", &[], "user");
    let session = d.login_session("alice", PW);
    register(&d, &session, "laptop");
    let (flow, _) = second_factor(&d, "alice");
    let garbage = [
        json!("not a credential"),
        json!({}),
        json!({"id": "x", "rawId": "!!!", "type": "public-key", "response": {}}),
        json!({"id": 1, "response": {"clientDataJSON": 5}}),
    ];
    for bad in &garbage {
        let e = passkey_step(&d, &flow, bad).expect_error(400, "invalid_input");
        assert!(
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("credential.toJSON()")),
            "{e}"
        );
        d.post_auth(
            "/v1/me/passkeys",
            &session,
            Some(&json!({"name": "x", "credential": bad})),
        )
        .expect_error(400, "invalid_input");
        d.post(
            "/v1/login/enroll/confirm",
            &json!({"flow": flow, "credential": bad}),
        )
        .expect_error(400, "invalid_input");
    }
    // Missing fields, unknown fields, bad ids and names.
    d.post("/v1/login/passkey", &json!({"flow": flow}))
        .expect_error(400, "invalid_input");
    d.post("/v1/login/passkey/options", &json!({"flw": ""}))
        .expect_error(400, "invalid_input");
    d.post(
        "/v1/login/enroll/confirm",
        &json!({"flow": flow, "code": "123456", "credential": {}}),
    )
    .expect_error(400, "invalid_input");
    d.post("/v1/login/enroll", &json!({"flow": flow, "method": "sms"}))
        .expect_error(400, "invalid_input");
    let auth = format!("Bearer {session}");
    for id in ["abc", "0", "-1", "99999999999999999999"] {
        let r = d.request(
            "DELETE",
            &format!("/v1/me/passkeys/{id}"),
            &[("Authorization", &auth)],
            None,
        );
        r.expect_error(404, "not_found");
    }
    for name in ["", "   ", &"n".repeat(65), "tab\there"] {
        let r = d.request(
            "PATCH",
            "/v1/me/passkeys/1",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            Some(json!({ "name": name }).to_string().as_bytes()),
        );
        r.expect_error(400, "invalid_input");
    }
    // Without a session, the user's endpoints answer 401.
    d.get("/v1/me/passkeys").expect_error(401, "unauthorized");
    assert_eq!(
        failed_attempts(&env, "alice"),
        0,
        "bad input is not a guess"
    );
    d.assert_healthy();
}

/// OpenID Connect's `amr` and `acr` from passkey sign-ins (issue 17): the passkey as
/// second factor is `pwd hwk mfa`, a passwordless one `hwk mfa` (the passkey with user
/// verification: two factors in one); both a second factor given, `acr` mfa.
#[test]
fn passkey_sign_ins_give_oidc_amr_hwk_and_acr_mfa() {
    use crate::oidc::{add_client, claims_of, code, exchange, VERIFIER};
    let env = provision();
    let d = daemon(&env, &["--insecure-cookies"]);
    let mut a = user_with_passkey(&env, &d, "alice");
    let (id, secret) = add_client(&env, "App", crate::oidc::REDIRECT, &["--trusted"]);
    let claims = |session: &str| {
        let c = code(&d, session, &id);
        let t = exchange(&d, &id, &secret, &c, Some(VERIFIER)).expect(200);
        claims_of(t["id_token"].as_str().unwrap())
    };
    let (flow, options) = second_factor(&d, "alice");
    let v = passkey_step(&d, &flow, &assertion(&mut a, &options)).expect_status("authenticated");
    let c = claims(v["session"].as_str().unwrap());
    assert_eq!(c["amr"], json!(["pwd", "hwk", "mfa"]), "{c}");
    assert_eq!(c["acr"], "urn:authd:acr:mfa", "{c}");

    let o = d.post("/v1/login/passkey/options", &json!({})).expect(200);
    let pflow = o["flow"].as_str().unwrap().to_string();
    let cred = assert_with(&mut a, &o, &origin(), true);
    let v = passkey_step(&d, &pflow, &cred).expect_status("authenticated");
    let c = claims(v["session"].as_str().unwrap());
    assert_eq!(c["amr"], json!(["hwk", "mfa"]), "{c}");
    assert_eq!(c["acr"], "urn:authd:acr:mfa", "{c}");
    assert_eq!(c["preferred_username"], "alice");
}
