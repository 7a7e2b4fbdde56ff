//! authd as an OpenID Connect provider (issue 17), against the real daemon over loopback
//! HTTP: a real relying party (Python's Authlib, tests/oidc/rp.py: discovery, code +
//! PKCE, the ID token checked against the JWKS, userinfo, introspection, refresh
//! rotation and replay, revocation) and the refusals of the issue, each over raw HTTP.
//!
//! Most tests sign in through the API (`POST /v1/login`, then the TOTP step): its session
//! token is the portal's session cookie, as a browser would carry it. Two tests click
//! through the portal in headless Chromium (tests/browser/oidc.js, oidc_apache.js), one of
//! them through Apache's mod_auth_openidc as the relying party; the other also steps a
//! remembered-device session up for `acr_values` (the code alone, then back to the client).

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::{self, Env};
use crate::daemon_common::*;

pub(crate) const REDIRECT: &str = "https://app.example.org/cb";
pub(crate) const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// `authctl client add NAME --redirect-uri URI EXTRA… --json`: (client_id, secret).
pub(crate) fn add_client(env: &Env, name: &str, uri: &str, extra: &[&str]) -> (String, String) {
    let mut a = vec!["client", "add", name, "--redirect-uri", uri];
    a.extend_from_slice(extra);
    let v = env.json(&a);
    (
        v["client_id"].as_str().unwrap().to_string(),
        v["client_secret"].as_str().unwrap_or("").to_string(),
    )
}

/// A signed-in alice (password + TOTP, member of pupil-data) and a running authd.
fn setup() -> (Env, Daemon, String) {
    let env = provision();
    add_user(&env, "alice", "school", &["pupil-data"], "user");
    let mut app = Totp::from_enrollment(&env.enroll("alice"));
    let d = Daemon::start(&env, &["--insecure-cookies"]);
    let session = d.login_totp("alice", PW, &mut app);
    (env, d, session)
}

fn q(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `GET /oidc/authorize?PARAMS` with the session cookie (None: no cookie).
fn authorize(d: &Daemon, session: Option<&str>, params: &[(&str, &str)]) -> Resp {
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", q(v)))
        .collect();
    let path = format!("/oidc/authorize?{}", query.join("&"));
    let cookie = session.map(|s| format!("authd_session={s}"));
    let mut h = vec![];
    if let Some(c) = &cookie {
        h.push(("Cookie", c.as_str()));
    }
    d.request("GET", &path, &h, None)
}

/// The standard parameters of a code request with PKCE for `client_id`.
fn code_params<'a>(client_id: &'a str, redirect: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect),
        ("scope", "openid profile email groups offline_access"),
        ("state", "st4te"),
        ("nonce", "n0nce"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ]
}

/// The query parameters of a redirect to the client.
fn redirected(r: &Resp, to: &str) -> Vec<(String, String)> {
    assert!(
        r.status == 302 || r.status == 303,
        "expected a redirect: {r:?}"
    );
    let loc = r.header("location").expect("a Location");
    let rest = loc
        .strip_prefix(&format!("{to}?"))
        .unwrap_or_else(|| panic!("redirected to {loc}, not {to}"));
    form_urlencoded::parse(rest.as_bytes())
        .into_owned()
        .collect()
}

fn get<'a>(pairs: &'a [(String, String)], k: &str) -> Option<&'a str> {
    pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// A code for `client_id` (signed in, PKCE).
pub(crate) fn code(d: &Daemon, session: &str, client_id: &str) -> String {
    let r = authorize(d, Some(session), &code_params(client_id, REDIRECT));
    let p = redirected(&r, REDIRECT);
    assert_eq!(get(&p, "state"), Some("st4te"));
    get(&p, "code").expect("a code").to_string()
}

/// `POST /oidc/token` (form) with HTTP Basic `client_id:secret` when `basic` is given.
fn token(d: &Daemon, basic: Option<(&str, &str)>, form: &[(&str, &str)]) -> Resp {
    let body: Vec<String> = form.iter().map(|(k, v)| format!("{k}={}", q(v))).collect();
    let body = body.join("&");
    let auth = basic.map(|(i, s)| {
        format!(
            "Basic {}",
            data_encoding::BASE64.encode(format!("{}:{}", q(i), q(s)).as_bytes())
        )
    });
    let mut h = vec![("Content-Type", "application/x-www-form-urlencoded")];
    if let Some(a) = &auth {
        h.push(("Authorization", a.as_str()));
    }
    d.request("POST", "/oidc/token", &h, Some(body.as_bytes()))
}

pub(crate) fn exchange(
    d: &Daemon,
    id: &str,
    secret: &str,
    code: &str,
    verifier: Option<&str>,
) -> Resp {
    let mut f = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
    ];
    if let Some(v) = verifier {
        f.push(("code_verifier", v));
    }
    token(d, Some((id, secret)), &f)
}

fn introspect(d: &Daemon, id: &str, secret: &str, t: &str) -> Value {
    let body = format!("token={}", q(t));
    let auth = format!(
        "Basic {}",
        data_encoding::BASE64.encode(format!("{id}:{secret}").as_bytes())
    );
    d.request(
        "POST",
        "/oidc/introspect",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", &auth),
        ],
        Some(body.as_bytes()),
    )
    .expect(200)
}

/// tests/oidc/rp.py (Authlib) against authd as the client `id`/`secret` registered for
/// `redirect`, on alice's browser session: what it saw.
fn authlib(d: &Daemon, session: &str, id: &str, secret: &str, redirect: &str) -> Value {
    let issuer = format!("http://{}", d.addr);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc/rp.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script).args([
        &issuer,
        id,
        secret,
        redirect,
        &format!("authd_session={session}"),
    ]);
    let out = common::run(cmd, None, Duration::from_secs(120));
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("rp.py failed ({e}): {out:?}"))
}

#[test]
fn authlib_signs_in_with_code_and_pkce_and_uses_every_endpoint() {
    common::require("python3", "python3");
    let ok = Command::new("python3")
        .args(["-c", "import authlib, requests"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "Python's authlib is missing: scripts/test.sh --install-only installs it"
    );
    let (env, d, session) = setup();
    let redirect = "http://127.0.0.1:9/callback";
    let (id, secret) = add_client(&env, "Wiki", redirect, &["--trusted"]);
    let seen = authlib(&d, &session, &id, &secret, redirect);

    assert_eq!(
        seen["jwks_kty"],
        serde_json::json!(["EC", "OKP", "RSA"]),
        "{seen}"
    );
    assert_eq!(
        seen["algs"],
        serde_json::json!(["RS256", "EdDSA", "ES256"]),
        "discovery"
    );
    assert_eq!(seen["id_token_alg"], "RS256");
    assert_eq!(seen["forged_id_token_refused"], true, "{seen}");
    let idt = &seen["id_token"];
    assert_eq!(idt["preferred_username"], "alice");
    assert_eq!(idt["email"], "alice@example.org");
    assert_eq!(idt["org"], "school");
    assert_eq!(idt["groups"], serde_json::json!(["pupil-data"]));
    assert_eq!(idt["amr"], serde_json::json!(["pwd", "otp", "mfa"]));
    assert_eq!(idt["acr"], "urn:authd:acr:mfa");
    assert_eq!(seen["userinfo"]["preferred_username"], "alice");
    assert_eq!(seen["introspect_access"]["active"], true);
    assert_eq!(seen["introspect_access"]["username"], "alice");
    assert_eq!(seen["replay"], serde_json::json!([400, "invalid_grant"]));
    assert_eq!(seen["after_replay"], false, "the replay revokes the family");
    assert_eq!(seen["revoke_status"], 200);
    assert_eq!(seen["userinfo_after_revoke"], 401);
    assert_eq!(seen["introspect_after_revoke"]["active"], false);

    // Every grant and token is in the audit log.
    let rows = audit_events(&env, "alice", "oidc.");
    let count = |ev: &str, outcome: &str| {
        rows.iter()
            .filter(|r| r["event"] == ev && r["outcome"] == outcome)
            .count()
    };
    assert_eq!(count("oidc.authorize", "success"), 2, "{rows:?}");
    assert_eq!(count("oidc.token", "success"), 3, "{rows:?}");
    assert!(count("oidc.token", "failure") >= 1, "the replay: {rows:?}");
    assert_eq!(count("oidc.revoke", "success"), 1);

    // A client registered for ES256: Authlib verifies its ID tokens against the P-256
    // key of the JWKS, and refuses the same token signed by another P-256 key.
    let (id, secret) = add_client(
        &env,
        "Wiki ES256",
        redirect,
        &["--trusted", "--id-token-alg", "ES256"],
    );
    let seen = authlib(&d, &session, &id, &secret, redirect);
    assert_eq!(seen["id_token_alg"], "ES256", "{seen}");
    assert_eq!(seen["forged_id_token_refused"], true, "{seen}");
    assert_eq!(seen["id_token"]["preferred_username"], "alice");
    assert_eq!(seen["replay"], serde_json::json!([400, "invalid_grant"]));
}

#[test]
fn unregistered_redirect_uris_are_never_redirected_to() {
    let (env, d, session) = setup();
    let (id, _) = add_client(&env, "App", REDIRECT, &["--trusted"]);
    for uri in [
        "https://app.example.org/cb/x",            // extra path
        "https://app.example.org/cb/../cb",        // dot segments
        "https://app.example.org/cb?x=1",          // query
        "https://app.example.org/cb#f",            // fragment
        "https://APP.example.org/cb",              // host case
        "https://app.example.org/CB",              // path case
        "https://app.example.org/cb/",             // trailing slash
        "https://evil.example@app.example.org/cb", // userinfo
        "https://app.example.org@evil.example/cb", // userinfo, other host
        "https://xn--pp-8cd.example.org/cb",       // IDN look-alike (punycode)
        "https://\u{0430}pp.example.org/cb",       // IDN look-alike (Cyrillic a)
        "http://app.example.org/cb",               // scheme
        "https://app.example.org:443/cb",          // explicit port
        "https://app.example.org%2fcb",            // encoded slash
        "",
    ] {
        let r = authorize(&d, Some(&session), &code_params(&id, uri));
        assert_eq!(r.status, 400, "{uri}: {r:?}");
        assert!(r.header("location").is_none(), "{uri}: {r:?}");
        assert!(r.text().contains("not registered"), "{uri}: {r:?}");
    }
    // An unknown client: a page, no redirect.
    let r = authorize(&d, Some(&session), &code_params("nobody", REDIRECT));
    assert_eq!(r.status, 400);
    assert!(r.header("location").is_none());
    // The registered URI itself works (so the refusals above are the URI's).
    code(&d, &session, &id);
    let refusals = env.audit(&["--event", "oidc.authorize", "--outcome", "failure"]);
    assert_eq!(refusals.len(), 16, "each refusal is audited");
}

/// Two trusted clients on the same redirect URI: "App" and "Other" (id, secret each).
fn two_clients(env: &Env) -> ((String, String), (String, String)) {
    (
        add_client(env, "App", REDIRECT, &["--trusted"]),
        add_client(env, "Other", REDIRECT, &["--trusted"]),
    )
}

#[test]
fn codes_are_single_use_bound_to_their_client_and_pkce_and_short_lived() {
    let (env, d, session) = setup();
    let ((id, secret), (other, other_secret)) = two_clients(&env);

    // A code used twice: refused, and the tokens of its first use revoked.
    let c = code(&d, &session, &id);
    let t = exchange(&d, &id, &secret, &c, Some(VERIFIER)).expect(200);
    let access = t["access_token"].as_str().unwrap();
    let refresh = t["refresh_token"].as_str().unwrap();
    d.get_auth("/oidc/userinfo", access).expect(200);
    assert_eq!(introspect(&d, &id, &secret, access)["active"], true);
    let again = exchange(&d, &id, &secret, &c, Some(VERIFIER));
    assert_eq!(again.expect(400)["error"], "invalid_grant");
    assert_eq!(introspect(&d, &id, &secret, access)["active"], false);
    assert_eq!(introspect(&d, &id, &secret, refresh)["active"], false);
    assert_eq!(d.get_auth("/oidc/userinfo", access).status, 401);

    // PKCE: a wrong verifier, and none at all (each burns the code: single use).
    let c = code(&d, &session, &id);
    let wrong = "x".repeat(43);
    assert_eq!(
        exchange(&d, &id, &secret, &c, Some(&wrong)).expect(400)["error"],
        "invalid_grant"
    );
    let c = code(&d, &session, &id);
    assert_eq!(
        exchange(&d, &id, &secret, &c, None).expect(400)["error"],
        "invalid_grant"
    );

    // Another client's code, even with that client's own valid secret.
    let c = code(&d, &session, &id);
    assert_eq!(
        exchange(&d, &other, &other_secret, &c, Some(VERIFIER)).expect(400)["error"],
        "invalid_grant"
    );

    // A wrong secret: 401 invalid_client; nothing issued.
    let c = code(&d, &session, &id);
    let r = exchange(&d, &id, "not-the-secret", &c, Some(VERIFIER));
    assert_eq!(r.expect(401)["error"], "invalid_client");
    // The code was not spent by the refused client: the right secret still works.
    exchange(&d, &id, &secret, &c, Some(VERIFIER)).expect(200);

    // An expired code (the database stands in for the clock).
    let c = code(&d, &session, &id);
    assert_eq!(
        sql(
            &env,
            "UPDATE oidc_codes SET expires_at = 0 WHERE id = (SELECT max(id) FROM oidc_codes)",
            &[]
        ),
        1
    );
    assert_eq!(
        exchange(&d, &id, &secret, &c, Some(VERIFIER)).expect(400)["error"],
        "invalid_grant"
    );

    // A redirect URI at the token endpoint other than the code's.
    let c = code(&d, &session, &id);
    let r = token(
        &d,
        Some((&id, &secret)),
        &[
            ("grant_type", "authorization_code"),
            ("code", &c),
            ("redirect_uri", "https://app.example.org/cb/x"),
            ("code_verifier", VERIFIER),
        ],
    );
    assert_eq!(r.expect(400)["error"], "invalid_grant");

    let reasons: Vec<String> = env
        .audit(&["--event", "oidc.token", "--outcome", "failure"])
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or("").to_string())
        .collect();
    for want in [
        "code_reused",
        "pkce",
        "other_client",
        "client_auth",
        "code_expired",
        "redirect_uri_mismatch",
    ] {
        assert!(
            reasons.iter().any(|r| r.starts_with(want)),
            "{want} in {reasons:?}"
        );
    }
}

#[test]
fn public_clients_need_pkce_and_prompt_none_without_a_session_says_login_required() {
    let (env, d, session) = setup();
    let (id, secret) = add_client(&env, "Spa", REDIRECT, &["--public", "--trusted"]);
    assert_eq!(secret, "", "a public client has no secret");
    // No PKCE: an error back to the client (the redirect URI is registered).
    let r = authorize(
        &d,
        Some(&session),
        &[
            ("response_type", "code"),
            ("client_id", &id),
            ("redirect_uri", REDIRECT),
            ("scope", "openid"),
            ("state", "s1"),
        ],
    );
    let p = redirected(&r, REDIRECT);
    assert_eq!(get(&p, "error"), Some("invalid_request"));
    assert_eq!(get(&p, "state"), Some("s1"));
    assert!(get(&p, "code").is_none());
    // With PKCE, a public client exchanges its code with no secret.
    let c = code(&d, &session, &id);
    let r = token(
        &d,
        None,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &id),
            ("code", &c),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    );
    r.expect(200);

    // prompt=none without a session: login_required to the client, with its state.
    let mut params = code_params(&id, REDIRECT);
    params.push(("prompt", "none"));
    let p = redirected(&authorize(&d, None, &params), REDIRECT);
    assert_eq!(get(&p, "error"), Some("login_required"));
    assert_eq!(get(&p, "state"), Some("st4te"));
    assert!(get(&p, "code").is_none());
    let refusals = env.audit(&["--event", "oidc.authorize", "--outcome", "failure"]);
    assert!(
        refusals.iter().any(|r| r["reason"] == "no_session"),
        "the refusal is audited: {refusals:?}"
    );
    // Without prompt=none: the portal's sign-in page, then back here.
    let r = authorize(&d, None, &code_params(&id, REDIRECT));
    assert_eq!(r.status, 303, "{r:?}");
    let loc = r.header("location").unwrap();
    assert!(
        loc.starts_with("/login?next=%2Foidc%2Fauthorize%3F"),
        "{loc}"
    );
}

/// A JWT of `header` and `claims` signed with `key` (or unsigned for `alg: none`).
fn forged(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let b = |v: &[u8]| data_encoding::BASE64URL_NOPAD.encode(v);
    let input = format!(
        "{}.{}",
        b(header.to_string().as_bytes()),
        b(claims.to_string().as_bytes())
    );
    let sig = sign(input.as_bytes());
    format!("{input}.{}", b(&sig))
}

/// `claims` signed with `key` under our `kid` and `alg` (a forgery when the key is not ours).
fn signed_as(
    kid: &str,
    alg: jsonwebtoken::Algorithm,
    claims: &Value,
    key: &jsonwebtoken::EncodingKey,
) -> String {
    let header = jsonwebtoken::Header {
        kid: Some(kid.to_string()),
        ..jsonwebtoken::Header::new(alg)
    };
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

#[test]
fn unsigned_and_foreign_tokens_are_refused_at_userinfo_and_introspection() {
    let (env, d, session) = setup();
    let (id, secret) = add_client(&env, "App", REDIRECT, &["--trusted"]);
    let c = code(&d, &session, &id);
    let t = exchange(&d, &id, &secret, &c, Some(VERIFIER)).expect(200);
    let access = t["access_token"].as_str().unwrap().to_string();
    let header = jsonwebtoken::decode_header(&access).unwrap();
    let kid = header.kid.unwrap();
    let claims: Value = jsonwebtoken::dangerous::insecure_decode::<Value>(&access)
        .unwrap()
        .claims;
    d.get_auth("/oidc/userinfo", &access).expect(200);

    // alg: none, with the real kid and the real claims.
    let none = forged(
        &serde_json::json!({"alg": "none", "kid": kid}),
        &claims,
        |_| vec![],
    );
    // HS256 keyed with something public (the algorithm-confusion attack).
    let jwks = d.get("/oidc/jwks").expect(200);
    let n = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap()["n"]
        .as_str()
        .unwrap()
        .to_string();
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some(kid.clone()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(n.as_bytes()).unwrap(),
    )
    .unwrap();
    // RS256 signed by another key, under our kid.
    let other = {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let k = rsa::RsaPrivateKey::new(
            &mut getrandom::rand_core::UnwrapErr(getrandom::SysRng),
            2048,
        )
        .unwrap();
        k.to_pkcs1_der().unwrap().as_bytes().to_vec()
    };
    let foreign = signed_as(
        &kid,
        jsonwebtoken::Algorithm::RS256,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_der(&other),
    );
    // Our real token with its signature cut off.
    let stripped = format!("{}.", access.rsplit_once('.').unwrap().0);
    for (what, bad) in [
        ("alg none", none),
        ("HS256 confusion", hs),
        ("another key", foreign),
        ("no signature", stripped),
    ] {
        assert_eq!(
            d.get_auth("/oidc/userinfo", &bad).status,
            401,
            "{what} at userinfo"
        );
        assert_eq!(
            introspect(&d, &id, &secret, &bad)["active"],
            false,
            "{what} at introspection"
        );
    }
    // The real one still passes (the refusals are the forgeries').
    d.get_auth("/oidc/userinfo", &access).expect(200);
    assert!(!env
        .audit(&["--event", "oidc.userinfo", "--outcome", "failure"])
        .is_empty());
}

#[test]
fn group_restricted_clients_refuse_other_users_with_a_page() {
    let (env, d, session) = setup();
    env.ctl(&["group", "add", "staff"]).ok();
    let (id, _) = add_client(
        &env,
        "Staff wiki",
        REDIRECT,
        &["--trusted", "--group", "staff"],
    );
    let r = authorize(&d, Some(&session), &code_params(&id, REDIRECT));
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.header("location").is_none());
    assert!(r.text().contains("Staff wiki") && r.text().contains("staff"));
    assert!(
        r.text().contains("open to members of staff only"),
        "{}",
        r.text()
    );
    let rows = audit_events(&env, "alice", "oidc.authorize");
    assert!(rows.iter().any(|r| r["reason"] == "group"), "{rows:?}");
    // A member of the group signs in to it.
    add_user(&env, "sam", "school", &["staff"], "user");
    let sam = d.login_session("sam", PW);
    let p = redirected(
        &authorize(&d, Some(&sam), &code_params(&id, REDIRECT)),
        REDIRECT,
    );
    assert!(get(&p, "code").is_some(), "{p:?}");
}

/// `POST /oidc/consent` with the session cookie and a form `body`.
fn consent_post(d: &Daemon, session: &str, body: &str) -> Resp {
    let cookie = format!("authd_session={session}");
    d.request(
        "POST",
        "/oidc/consent",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", &cookie),
        ],
        Some(body.as_bytes()),
    )
}

#[test]
fn untrusted_clients_ask_for_consent_once() {
    let (env, d, session) = setup();
    let (id, _) = add_client(&env, "Gallery", REDIRECT, &[]);
    let r = authorize(&d, Some(&session), &code_params(&id, REDIRECT));
    assert_eq!(r.status, 200, "{r:?}");
    let page = r.text();
    assert!(
        page.contains("Gallery") && page.contains("id=\"allow\""),
        "{page}"
    );
    let field = |name: &str| hidden(&page, name);
    let body = format!(
        "csrf={}&request={}&answer=allow",
        q(&field("csrf")),
        q(&field("request"))
    );
    let r = consent_post(&d, &session, &body);
    // After a form of ours: a page that goes on to the client (not a redirect, which
    // the portal's form-action would block), with the link and a meta refresh.
    assert_eq!(r.status, 200, "{r:?}");
    let page = r.text();
    let at = page.find("id=\"continue\"").expect("a Continue link");
    let href = &page[..at];
    let href = &href[href.rfind("href=\"").unwrap() + 6..];
    let href = href[..href.find('"').unwrap()].replace("&#38;", "&");
    assert!(page.contains(&format!("content=\"0;url={}", href.replace('&', "&#38;"))));
    let rest = href
        .strip_prefix(&format!("{REDIRECT}?"))
        .expect("to the client");
    let p: Vec<(String, String)> = form_urlencoded::parse(rest.as_bytes())
        .into_owned()
        .collect();
    assert!(get(&p, "code").is_some(), "{p:?}");
    assert_eq!(get(&p, "state"), Some("st4te"));
    // Remembered: the next request goes straight back with a code…
    code(&d, &session, &id);
    // …unless the client asks again (prompt=consent).
    let mut params = code_params(&id, REDIRECT);
    params.push(("prompt", "consent"));
    assert_eq!(authorize(&d, Some(&session), &params).status, 200);
    // A forged consent (no CSRF token) is refused.
    let r = consent_post(
        &d,
        &session,
        &format!("request={}&answer=allow", q(&field("request"))),
    );
    assert_eq!(r.status, 403);
    assert_eq!(audit_events(&env, "alice", "oidc.consent").len(), 1);
    // "Deny": access_denied to the client, and no code.
    let page = authorize(&d, Some(&session), &params).text();
    let at = page.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = &page[at..at + page[at..].find('"').unwrap()];
    let body = format!(
        "csrf={}&request={}&answer=deny",
        q(csrf),
        q(&field("request"))
    );
    let r = consent_post(&d, &session, &body);
    let text = r.text();
    assert!(text.contains("error=access_denied"), "{r:?}");
    assert!(!text.contains("code="), "{r:?}");
}

/// The `kid` of a JWT.
fn kid_of(jwt: &str) -> String {
    jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap()
}

fn jwks_kids(d: &Daemon) -> Vec<String> {
    d.get("/oidc/jwks").expect(200)["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn rotated_keys_stay_published_until_their_tokens_expire() {
    let (env, d, session) = setup();
    let (id, secret) = add_client(&env, "App", REDIRECT, &["--trusted"]);
    let c = code(&d, &session, &id);
    let old = exchange(&d, &id, &secret, &c, Some(VERIFIER)).expect(200);
    let old_access = old["access_token"].as_str().unwrap().to_string();
    let old_kid = kid_of(&old_access);
    assert_eq!(kid_of(old["id_token"].as_str().unwrap()), old_kid);

    env.ctl(&["client", "rotate-keys"]).ok();
    let kids = jwks_kids(&d);
    assert!(
        kids.contains(&old_kid),
        "the old key stays published: {kids:?}"
    );
    assert_eq!(kids.len(), 6, "three retired, three new: {kids:?}");
    d.get_auth("/oidc/userinfo", &old_access).expect(200);
    let c = code(&d, &session, &id);
    let new = exchange(&d, &id, &secret, &c, Some(VERIFIER)).expect(200);
    let new_kid = kid_of(new["access_token"].as_str().unwrap());
    assert_ne!(new_kid, old_kid, "new tokens are signed by the new key");

    // Once the old key's tokens have expired (the database stands in for the clock),
    // it leaves the JWKS and what it signed is refused.
    let moved = sql(
        &env,
        "UPDATE oidc_keys SET retired_at = retired_at - 601 WHERE retired_at IS NOT NULL",
        &[],
    );
    assert_eq!(moved, 3);
    let kids = jwks_kids(&d);
    assert!(
        !kids.contains(&old_kid) && kids.contains(&new_kid),
        "{kids:?}"
    );
    assert_eq!(d.get_auth("/oidc/userinfo", &old_access).status, 401);
    assert_eq!(
        env.audit(&["--event", "admin.oidc.rotate_keys"]).len(),
        1,
        "audited"
    );
}

#[test]
fn rp_initiated_logout_ends_the_session_and_returns_only_to_a_registered_uri() {
    let (env, d, session) = setup();
    let (id, secret) = add_client(&env, "App", REDIRECT, &["--trusted"]);
    let c = code(&d, &session, &id);
    let t = exchange(&d, &id, &secret, &c, Some(VERIFIER)).expect(200);
    let id_token = t["id_token"].as_str().unwrap();
    let cookie = format!("authd_session={session}");
    // Not registered: the session ends, but the browser stays with authd.
    let path = format!(
        "/oidc/logout?id_token_hint={}&post_logout_redirect_uri={}&state=bye",
        q(id_token),
        q("https://evil.example/")
    );
    let r = d.request("GET", &path, &[("Cookie", &cookie)], None);
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(r.header("location"), Some("/login?m=signed_out"));
    d.get_auth("/v1/session", &session).expect(401);

    // A new session, and a registered URI: back to the client with its state.
    let mut app = Totp::from_enrollment(&env.enroll("alice"));
    let session = d.login_totp("alice", PW, &mut app);
    let cookie = format!("authd_session={session}");
    let path = format!(
        "/oidc/logout?id_token_hint={}&post_logout_redirect_uri={}&state=bye",
        q(id_token),
        q(REDIRECT)
    );
    let r = d.request("GET", &path, &[("Cookie", &cookie)], None);
    assert_eq!(
        r.header("location"),
        Some(&*format!("{REDIRECT}?state=bye"))
    );
    d.get_auth("/v1/session", &session).expect(401);
    assert_eq!(audit_events(&env, "alice", "oidc.logout").len(), 2);

    // Without a hint, nothing ends without the portal's own confirmation form.
    let session = d.login_totp("alice", PW, &mut app);
    let cookie = format!("authd_session={session}");
    let r = d.request("GET", "/oidc/logout", &[("Cookie", &cookie)], None);
    assert_eq!(r.header("location"), Some("/logout"));
    d.get_auth("/v1/session", &session).expect(200);
}

#[test]
fn amr_acr_and_prompt_login_follow_the_sign_in() {
    let (env, d, session) = setup();
    add_user(&env, "bob", "school", &[], "user");
    let bob = d.login_session("bob", PW);
    add_user(&env, "dora", "school", &[], "user");
    let dora = d.login_session("dora", PW);
    let (id, secret) = add_client(&env, "App", REDIRECT, &["--trusted"]);

    // bob signed in with a password alone: amr pwd, acr pwd.
    let c = code(&d, &bob, &id);
    let t = exchange(&d, &id, &secret, &c, Some(VERIFIER)).expect(200);
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(t["id_token"].as_str().unwrap())
        .unwrap()
        .claims;
    assert_eq!(claims["amr"], serde_json::json!(["pwd"]));
    assert_eq!(claims["acr"], "urn:authd:acr:pwd");
    assert_eq!(claims["nonce"], "n0nce");
    // Asking for a second factor bob does not have: refused to the client.
    let mut params = code_params(&id, REDIRECT);
    params.push(("acr_values", "urn:authd:acr:mfa"));
    let p = redirected(&authorize(&d, Some(&bob), &params), REDIRECT);
    assert_eq!(get(&p, "error"), Some("unmet_authentication_requirements"));
    // alice's session has one: a code.
    let p = redirected(&authorize(&d, Some(&session), &params), REDIRECT);
    assert!(get(&p, "code").is_some());
    // bob enrols a second factor after signing in: his password-only session cannot
    // meet the request, so the portal asks for that factor only (the session stays).
    env.enroll("bob");
    let r = authorize(&d, Some(&bob), &params);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.text().contains("id=\"step-up-form\""), "{r:?}");
    d.get_auth("/v1/session", &bob).expect(200);

    // prompt=login, though alice signed in seconds ago: the session ends, the sign-in
    // page comes, with the way back (without prompt=login) and the login_hint.
    let mut params = code_params(&id, REDIRECT);
    params.push(("prompt", "login"));
    params.push(("login_hint", "alice"));
    let r = authorize(&d, Some(&session), &params);
    assert_eq!(r.status, 303, "{r:?}");
    let loc = r.header("location").unwrap();
    assert!(
        loc.starts_with("/login?next=%2Foidc%2Fauthorize%3F"),
        "{loc}"
    );
    assert!(loc.ends_with("&login_hint=alice"), "{loc}");
    let back = next_of(loc);
    assert!(!back.contains("prompt"), "{back}");
    assert!(back.contains("login_hint=alice"), "{back}");
    d.get_auth("/v1/session", &session).expect(401);
    // max_age: the same for a sign-in older than it.
    sql(
        &env,
        "UPDATE sessions SET created_at = created_at - 1000",
        &[],
    );
    let mut params = code_params(&id, REDIRECT);
    params.push(("max_age", "300"));
    let r = authorize(&d, Some(&dora), &params);
    assert_eq!(r.status, 303, "{r:?}");
    d.get_auth("/v1/session", &dora).expect(401);
}

/// The way back (`next`) of a redirect to the sign-in page.
fn next_of(login: &str) -> String {
    let (_, query) = login.split_once('?').expect("a query");
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no next in {login}"))
}

/// When the session with this token was signed in (its `created_at`, the `auth_time`).
fn signed_in_at(env: &Env, session: &str) -> i64 {
    rusqlite::Connection::open(&env.db)
        .unwrap()
        .query_row(
            "SELECT created_at FROM sessions WHERE token_hash = ?1",
            [token_hash(session)],
            |r| r.get(0),
        )
        .unwrap()
}

/// A browser's cookies over plain HTTP: what the portal set, sent back.
#[derive(Default)]
struct Jar(Vec<(String, String)>);

impl Jar {
    fn with_session(session: &str) -> Jar {
        Jar(vec![("authd_session".into(), session.into())])
    }
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    fn header(&self) -> String {
        let pairs: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect();
        pairs.join("; ")
    }
    /// Take the response's Set-Cookie headers (an empty value removes the cookie).
    fn take(&mut self, r: &Resp) {
        for (k, v) in &r.headers {
            if !k.eq_ignore_ascii_case("set-cookie") {
                continue;
            }
            let (name, value) = v.split(';').next().unwrap().split_once('=').unwrap();
            self.0.retain(|(n, _)| n != name);
            if !value.is_empty() {
                self.0.push((name.to_string(), value.to_string()));
            }
        }
    }
    fn get_page(&mut self, d: &Daemon, path: &str) -> Resp {
        let r = d.request("GET", path, &[("Cookie", &self.header())], None);
        self.take(&r);
        r
    }
    fn post_form(&mut self, d: &Daemon, path: &str, form: &[(&str, &str)]) -> Resp {
        let body: Vec<String> = form.iter().map(|(k, v)| format!("{k}={}", q(v))).collect();
        let r = d.request(
            "POST",
            path,
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Cookie", &self.header()),
            ],
            Some(body.join("&").as_bytes()),
        );
        self.take(&r);
        r
    }
    /// Post the code page's form (its hidden fields) with `code` to `action`
    /// (`/login/totp`, `/login/email`).
    fn code_form(&mut self, d: &Daemon, page: &str, action: &str, code: &str) -> Resp {
        let fields = ["csrf", "flow", "methods", "next"].map(|n| hidden(page, n));
        let [csrf, flow, methods, next] = &fields;
        self.post_form(
            d,
            action,
            &[
                ("csrf", csrf),
                ("flow", flow),
                ("methods", methods),
                ("next", next),
                ("code", code),
            ],
        )
    }
}

/// The value of the first hidden field `name` of a page (HTML entities undone).
fn hidden(page: &str, name: &str) -> String {
    let at = page
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no field {name} in {page}"));
    let rest = &page[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()]
        .replace("&#38;", "&")
        .replace("&amp;", "&")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
}

/// The claims of a JWT (its signature is checked elsewhere).
pub(crate) fn claims_of(jwt: &str) -> Value {
    jsonwebtoken::dangerous::insecure_decode::<Value>(jwt)
        .unwrap()
        .claims
}

#[test]
fn acr_values_step_up_asks_the_missing_factor_only_and_the_new_id_token_says_so() {
    let (env, d, _) = setup();
    let mut app = Totp::from_enrollment(&env.enroll("alice"));
    let (id, secret) = add_client(&env, "App", REDIRECT, &["--trusted"]);
    // alice signs in once with her code and "remember this device", then with her
    // password on that device: no code asked, acr "device".
    let flow = d.second_factor_flow("alice", PW);
    let v = d
        .post(
            "/v1/login/totp",
            &serde_json::json!({"flow": flow, "code": app.fresh(), "remember_device": true}),
        )
        .expect_status("authenticated");
    let device = v["device_token"].as_str().unwrap().to_string();
    let v = d
        .login_device("alice", PW, &device)
        .expect_status("authenticated");
    let old = v["session"].as_str().unwrap().to_string();
    let c = code(&d, &old, &id);
    let t = exchange(&d, &id, &secret, &c, Some(VERIFIER)).expect(200);
    let claims = claims_of(t["id_token"].as_str().unwrap());
    assert_eq!(claims["acr"], "urn:authd:acr:device");
    assert_eq!(claims["amr"], serde_json::json!(["pwd", "mfa"]));

    let mut params = code_params(&id, REDIRECT);
    params.push(("acr_values", "urn:authd:acr:mfa"));
    // prompt=none cannot ask: interaction_required to the client.
    let mut silent = params.clone();
    silent.push(("prompt", "none"));
    let p = redirected(&authorize(&d, Some(&old), &silent), REDIRECT);
    assert_eq!(get(&p, "error"), Some("interaction_required"));

    // The request: a page asking for the second factor only; the session stays, and
    // nothing starts (no flow, no code) before the user's own click.
    let flows = || -> i64 {
        rusqlite::Connection::open(&env.db)
            .unwrap()
            .query_row("SELECT count(*) FROM login_flows", [], |r| r.get(0))
            .unwrap()
    };
    let before = flows();
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", q(v)))
        .collect();
    let authorize_path = format!("/oidc/authorize?{}", query.join("&"));
    let mut jar = Jar::with_session(&old);
    let r = jar.get_page(&d, &authorize_path);
    assert_eq!(r.status, 200, "{r:?}");
    let page = r.text();
    assert!(
        page.contains("id=\"step-up-form\"") && page.contains("App"),
        "{page}"
    );
    assert!(
        !page.contains("id=\"password\""),
        "no password asked: {page}"
    );
    assert_eq!(flows(), before);
    d.get_auth("/v1/session", &old).expect(200);

    // The form needs the session's CSRF token.
    let request = hidden(&page, "request");
    let r = jar.post_form(&d, "/oidc/step-up", &[("request", &request)]);
    assert_eq!(r.status, 403, "{r:?}");
    let r = jar.post_form(
        &d,
        "/oidc/step-up",
        &[("csrf", &hidden(&page, "csrf")), ("request", &request)],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let page = r.text();
    assert!(page.contains("id=\"code-form\""), "the code page: {page}");
    let next = hidden(&page, "next");
    assert!(next.starts_with("/oidc/authorize?"), "{next}");
    let r = jar.code_form(&d, &page, "/login/totp", &app.fresh());
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(r.header("location"), Some(next.as_str()));
    // A new session (a new token for the raised assurance); the old one has ended.
    let new = jar
        .get("authd_session")
        .expect("a session cookie")
        .to_string();
    assert_ne!(new, old);
    d.get_auth("/v1/session", &old).expect(401);
    d.get_auth("/v1/session", &new).expect(200);

    // Back at the request: a code, whose ID token says what the sign-in now holds.
    let r = jar.get_page(&d, &next);
    let p = redirected(&r, REDIRECT);
    assert_eq!(get(&p, "state"), Some("st4te"));
    let t = exchange(&d, &id, &secret, get(&p, "code").unwrap(), Some(VERIFIER)).expect(200);
    let claims = claims_of(t["id_token"].as_str().unwrap());
    assert_eq!(claims["acr"], "urn:authd:acr:mfa");
    assert_eq!(claims["amr"], serde_json::json!(["pwd", "otp", "mfa"]));
    assert_eq!(claims["preferred_username"], "alice");
    let rows = audit_events(&env, "alice", "oidc.step_up");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["outcome"], "success");
    let totp = audit_events(&env, "alice", "login.totp");
    assert!(
        totp.iter().any(|r| r["detail"]
            .as_str()
            .is_some_and(|d| d.contains(r#""step_up":"pwd totp""#))),
        "{totp:?}"
    );
}

#[test]
fn a_step_up_needs_its_session_alive_and_an_account_without_a_factor_is_refused() {
    let (env, d, _) = setup();
    add_user(&env, "bob", "school", &[], "user");
    let (id, _) = add_client(&env, "App", REDIRECT, &["--trusted"]);
    let mut params = code_params(&id, REDIRECT);
    params.push(("acr_values", "urn:authd:acr:mfa"));
    // bob has no second factor: refused to the client.
    let bob = d.login_session("bob", PW);
    let p = redirected(&authorize(&d, Some(&bob), &params), REDIRECT);
    assert_eq!(get(&p, "error"), Some("unmet_authentication_requirements"));
    // A weaker class, or a class authd does not know, asks nothing more.
    let mut weaker = code_params(&id, REDIRECT);
    weaker.push(("acr_values", "urn:authd:acr:pwd urn:authd:acr:mfa"));
    assert!(get(
        &redirected(&authorize(&d, Some(&bob), &weaker), REDIRECT),
        "code"
    )
    .is_some());

    // bob sets up an app after signing in: his password-only session is stepped up.
    let mut app = Totp::from_enrollment(&env.enroll("bob"));
    let r = authorize(&d, Some(&bob), &params);
    assert_eq!(r.status, 200, "{r:?}");
    let mut jar = Jar::with_session(&bob);
    let page = r.text();
    let r = jar.post_form(
        &d,
        "/oidc/step-up",
        &[
            ("csrf", &hidden(&page, "csrf")),
            ("request", &hidden(&page, "request")),
        ],
    );
    let page = r.text();
    assert!(page.contains("id=\"code-form\""), "{r:?}");
    // The session ends before the code is given: the code alone makes no session.
    assert_eq!(d.post_auth("/v1/logout", &bob, None).status, 204);
    let r = jar.code_form(&d, &page, "/login/totp", &app.fresh());
    assert_ne!(r.status, 303, "{r:?}");
    assert_eq!(
        jar.get("authd_session"),
        Some(bob.as_str()),
        "no new session cookie"
    );
    let live: i64 = rusqlite::Connection::open(&env.db)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE u.username = 'bob' AND s.revoked_at IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(live, 0, "no session from the code alone");
    let refused = audit_events(&env, "bob", "login.totp");
    assert!(
        refused
            .iter()
            .any(|r| r["reason"] == "step_up_session_ended"),
        "{refused:?}"
    );
    // The step-up page itself needs a session.
    let r = jar.post_form(&d, "/oidc/step-up", &[("csrf", "x"), ("request", "")]);
    assert_eq!(r.status, 403);
}

/// authd on plain HTTP (the portal's cookies without `Secure`) mailing through `sink`.
fn start_with_mail(env: &Env, sink: &SmtpSink) -> Daemon {
    let url = sink.url();
    Daemon::start(
        env,
        &[
            "--insecure-cookies",
            "--smtp-url",
            &url,
            "--mail-from",
            "authd@example.org",
        ],
    )
}

#[test]
fn an_emailed_code_account_steps_up_with_a_code_mailed_by_the_step_up_form_only() {
    let env = provision();
    add_user(&env, "carol", "school", &[], "user");
    env.json(&["enroll", "carol", "--method", "email"]);
    let sink = SmtpSink::start();
    let d = start_with_mail(&env, &sink);
    let to = "carol@example.org";
    let (id, secret) = add_client(&env, "App", REDIRECT, &["--trusted"]);
    // A first sign-in with the emailed code remembers the device; the next one on it is
    // a password alone.
    let v = d.login("carol", PW).expect_status("second_factor_required");
    let v = d
        .post(
            "/v1/login/email",
            &serde_json::json!({"flow": v["flow"], "code": sink.nth_code(to, 0),
                                "remember_device": true}),
        )
        .expect_status("authenticated");
    let device = v["device_token"].as_str().unwrap().to_string();
    let v = d
        .login_device("carol", PW, &device)
        .expect_status("authenticated");
    let session = v["session"].as_str().unwrap().to_string();

    let mut params = code_params(&id, REDIRECT);
    params.push(("acr_values", "urn:authd:acr:mfa"));
    let mut jar = Jar::with_session(&session);
    let r = authorize(&d, Some(&session), &params);
    assert_eq!(r.status, 200, "{r:?}");
    let page = r.text();
    // The page's GET mails nothing (no other site can make authd send a code)…
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.codes_to(to).len(), 1, "no code from the GET");
    // …its form does: the emailed-code page, then the code.
    let r = jar.post_form(
        &d,
        "/oidc/step-up",
        &[
            ("csrf", &hidden(&page, "csrf")),
            ("request", &hidden(&page, "request")),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let page = r.text();
    assert!(page.contains("action=\"/login/email\""), "{page}");
    let r = jar.code_form(&d, &page, "/login/email", &sink.nth_code(to, 1));
    assert_eq!(r.status, 303, "{r:?}");
    let p = redirected(&jar.get_page(&d, r.header("location").unwrap()), REDIRECT);
    let t = exchange(&d, &id, &secret, get(&p, "code").unwrap(), Some(VERIFIER)).expect(200);
    let claims = claims_of(t["id_token"].as_str().unwrap());
    assert_eq!(claims["amr"], serde_json::json!(["pwd", "otp", "mfa"]));
    assert_eq!(claims["acr"], "urn:authd:acr:mfa");
}

/// A stand-in client on 127.0.0.1:0 answering every request `200 signed in`; the
/// request lines it saw.
fn stand_in_client() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/callback", l.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut r = BufReader::new(&conn);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            s.lock().unwrap().push(line.trim().to_string());
            let _ = (&conn).write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nConnection: close\r\n\r\nsigned in\n",
            );
        }
    });
    (url, seen)
}

#[test]
fn chromium_signs_in_to_a_client_with_totp_and_consent_then_steps_up_from_a_remembered_device() {
    let dir = common::browser_dir();
    let env = provision();
    add_user(&env, "alice", "school", &["pupil-data"], "user");
    let secret = env.enroll("alice")["secret"].as_str().unwrap().to_string();
    let (client_url, seen) = stand_in_client();
    let (id, client_secret) = add_client(&env, "Gallery", &client_url, &[]);
    let d = Daemon::start(&env, &["--insecure-cookies"]);
    let path = |extra: &[(&str, &str)]| {
        let mut params = code_params(&id, &client_url);
        params.extend_from_slice(extra);
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", q(v)))
            .collect();
        format!("/oidc/authorize?{}", query.join("&"))
    };
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("oidc.js"))
        .current_dir(&dir)
        .env("AUTHD_URL", format!("http://{}", d.addr))
        .env("AUTHORIZE", path(&[]))
        .env("STEP_UP", path(&[("acr_values", "urn:authd:acr:mfa")]))
        .env("CLIENT", &client_url)
        .env("USERNAME", "alice")
        .env("PASSWORD", PW)
        .env("TOTP_SECRET", &secret)
        .env("CHROMIUM", "/usr/bin/chromium");
    let out = common::run(cmd, None, Duration::from_secs(120));
    assert_eq!(out.code, Some(0), "{out:?}");
    let back = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("back: "))
        .unwrap_or_else(|| panic!("{out:?}"));
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("GET /callback?code=")),
        "the client saw {:?}",
        seen.lock().unwrap()
    );
    let p: Vec<(String, String)> =
        form_urlencoded::parse(back.split_once('?').unwrap().1.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(get(&p, "state"), Some("st4te"));
    let r = token(
        &d,
        Some((&id, &client_secret)),
        &[
            ("grant_type", "authorization_code"),
            ("code", get(&p, "code").unwrap()),
            ("redirect_uri", &client_url),
            ("code_verifier", VERIFIER),
        ],
    );
    let t = r.expect(200);
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(t["id_token"].as_str().unwrap())
        .unwrap()
        .claims;
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["amr"], serde_json::json!(["pwd", "otp", "mfa"]));
    assert_eq!(claims["groups"], serde_json::json!(["pupil-data"]));

    // The step-up: signed in again on the remembered device (no code), then the code
    // alone from the step-up page, and back to the client after that form.
    let stepped = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("stepped: "))
        .unwrap_or_else(|| panic!("{out:?}"));
    let p: Vec<(String, String)> =
        form_urlencoded::parse(stepped.split_once('?').unwrap().1.as_bytes())
            .into_owned()
            .collect();
    let t = token(
        &d,
        Some((&id, &client_secret)),
        &[
            ("grant_type", "authorization_code"),
            ("code", get(&p, "code").expect("a code")),
            ("redirect_uri", &client_url),
            ("code_verifier", VERIFIER),
        ],
    )
    .expect(200);
    let claims = claims_of(t["id_token"].as_str().unwrap());
    assert_eq!(claims["acr"], "urn:authd:acr:mfa");
    assert_eq!(claims["amr"], serde_json::json!(["pwd", "otp", "mfa"]));
    assert_eq!(audit_events(&env, "alice", "oidc.step_up").len(), 1);
}

/// Apache httpd with mod_auth_openidc in the foreground, killed when dropped.
struct Apache {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Drop for Apache {
    /// SIGTERM to the parent, which stops its workers (SIGKILL would orphan them), then
    /// SIGKILL if it has not gone within 10 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Apache {
    /// Apache on 127.0.0.1:`port` protecting /protected/ with authd at `authd` as the
    /// provider (the client `id`/`secret`); /protected/index.shtml shows the claims.
    fn start(port: u16, authd: &str, id: &str, secret: &str) -> Apache {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("a directory for Apache");
        // Apache's workers (www-data when started as root) read the page.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().join("htdocs").join("protected");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(
            root.join("index.shtml"),
            "<!doctype html><title>protected</title>\n\
             <p id=\"user\"><!--#echo var=\"REMOTE_USER\" --></p>\n\
             <p id=\"email\"><!--#echo var=\"OIDC_CLAIM_email\" --></p>\n\
             <p id=\"groups\"><!--#echo var=\"OIDC_CLAIM_groups\" --></p>\n\
             <p id=\"amr\"><!--#echo var=\"OIDC_CLAIM_amr\" --></p>\n\
             <p id=\"acr\"><!--#echo var=\"OIDC_CLAIM_acr\" --></p>\n",
        )
        .unwrap();
        for d in [dir.path().join("htdocs"), root.clone()] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let m = "/usr/lib/apache2/modules";
        let d = dir.path().display();
        let conf = format!(
            "ServerRoot {d}\nServerName 127.0.0.1\nListen 127.0.0.1:{port}\n\
             PidFile {d}/apache.pid\nErrorLog {d}/error.log\nLogLevel warn\n\
             User www-data\nGroup www-data\n\
             LoadModule mpm_event_module {m}/mod_mpm_event.so\n\
             LoadModule authz_core_module {m}/mod_authz_core.so\n\
             LoadModule authz_user_module {m}/mod_authz_user.so\n\
             LoadModule authn_core_module {m}/mod_authn_core.so\n\
             LoadModule mime_module {m}/mod_mime.so\n\
             LoadModule include_module {m}/mod_include.so\n\
             LoadModule auth_openidc_module {m}/mod_auth_openidc.so\n\
             TypesConfig /etc/mime.types\nDocumentRoot {d}/htdocs\n\
             <Directory {d}/htdocs>\n  Options +Includes\n  AddType text/html .shtml\n  \
             AddOutputFilter INCLUDES .shtml\n  Require all granted\n</Directory>\n\
             OIDCProviderMetadataURL {authd}/.well-known/openid-configuration\n\
             OIDCClientID {id}\nOIDCClientSecret {secret}\n\
             OIDCRedirectURI http://127.0.0.1:{port}/protected/redirect_uri\n\
             OIDCCryptoPassphrase only-a-test-passphrase\n\
             OIDCScope \"openid email profile groups\"\nOIDCPKCEMethod S256\n\
             OIDCRemoteUserClaim preferred_username\nOIDCPassClaimsAs environment\n\
             <Location /protected>\n  AuthType openid-connect\n  Require valid-user\n</Location>\n"
        );
        let conf_path = dir.path().join("apache.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("apache2")
            .arg("-f")
            .arg(&conf_path)
            .arg("-DFOREGROUND")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start apache2");
        let a = Apache { child, dir };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "Apache did not start: {}",
                a.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        a
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

#[test]
fn apache_mod_auth_openidc_protects_a_page_through_both_seed_journeys() {
    common::require("apache2", "apache2");
    assert!(
        std::path::Path::new("/usr/lib/apache2/modules/mod_auth_openidc.so").exists(),
        "mod_auth_openidc is missing: scripts/test.sh installs libapache2-mod-auth-openidc"
    );
    let dir = common::browser_dir();
    let env = provision();
    add_user(&env, "alice", "school", &["pupil-data"], "user");
    add_user(&env, "carol", "school", &[], "user");
    env.json(&["enroll", "carol", "--method", "email"]);
    let mail = env.path("mail");
    let d = Daemon::start(
        &env,
        &["--insecure-cookies", "--mail-dir", mail.to_str().unwrap()],
    );
    let authd = format!("http://{}", d.addr);
    let port = closed_port();
    let redirect = format!("http://127.0.0.1:{port}/protected/redirect_uri");
    let (id, secret) = add_client(&env, "Intranet", &redirect, &["--trusted"]);
    let apache = Apache::start(port, &authd, &id, &secret);

    let mut cmd = Command::new("node");
    cmd.arg(dir.join("oidc_apache.js"))
        .current_dir(&dir)
        .env("AUTHD_URL", &authd)
        .env("APP_URL", format!("http://127.0.0.1:{port}"))
        .env("MAIL_DIR", &mail)
        .env("PASSWORD", PW)
        .env("CHROMIUM", "/usr/bin/chromium");
    let out = common::run(cmd, None, Duration::from_secs(240));
    assert_eq!(
        out.code,
        Some(0),
        "{out:?}\n--- apache ---\n{}\n--- authd ---\n{}",
        apache.log(),
        d.stderr()
    );
    let page = |who: &str| -> Value {
        let line = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("page {who}: ")))
            .unwrap_or_else(|| panic!("no page for {who}: {out:?}"));
        serde_json::from_str(line).unwrap()
    };
    let a = page("alice");
    assert_eq!(a["user"], "alice");
    assert_eq!(a["email"], "alice@example.org");
    assert_eq!(a["groups"], "pupil-data");
    assert_eq!(a["amr"], "pwd,otp,mfa");
    assert_eq!(a["acr"], "urn:authd:acr:mfa");
    let c = page("carol");
    assert_eq!(c["user"], "carol");
    assert_eq!(c["amr"], "pwd,otp,mfa");
    let again = page("carol (remembered device)");
    assert_eq!(again["user"], "carol");
    assert_eq!(again["amr"], "pwd,mfa", "the remembered device, no code");
    assert_eq!(
        again["acr"], "urn:authd:acr:device",
        "no second factor given"
    );
    for who in ["alice", "carol"] {
        assert!(
            !audit_events(&env, who, "oidc.token").is_empty(),
            "{who}'s tokens are audited"
        );
    }
}

/// The JWKS key of an ID token's `kid` and the checks of a relying party (`alg`, which
/// the header must name, issuer, audience `client_id`).
fn published_key(
    d: &Daemon,
    client_id: &str,
    id_token: &str,
    alg: jsonwebtoken::Algorithm,
) -> (jsonwebtoken::DecodingKey, jsonwebtoken::Validation) {
    assert_eq!(jsonwebtoken::decode_header(id_token).unwrap().alg, alg);
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(d.get("/oidc/jwks").expect(200)).unwrap();
    let jwk = jwks.find(&kid_of(id_token)).expect("its key in the JWKS");
    let mut v = jsonwebtoken::Validation::new(alg);
    v.set_audience(&[client_id]);
    v.set_issuer(&[format!("http://{}", d.addr)]);
    (jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(), v)
}

/// alice signed in, a trusted client `name` whose ID tokens are signed `alg`, and the
/// tokens of one code exchange: (env, authd, session, client_id, secret, tokens).
fn tokens_of_alg_client(name: &str, alg: &str) -> (Env, Daemon, String, String, String, Value) {
    let (env, d, session) = setup();
    let (id, secret) = add_client(&env, name, REDIRECT, &["--trusted", "--id-token-alg", alg]);
    let c = code(&d, &session, &id);
    let t = exchange(&d, &id, &secret, &c, Some(VERIFIER)).expect(200);
    (env, d, session, id, secret, t)
}

#[test]
fn eddsa_id_tokens_verify_against_the_jwks_and_a_disabled_account_loses_its_tokens() {
    let (env, d, _, id, secret, t) = tokens_of_alg_client("Modern", "EdDSA");
    let id_token = t["id_token"].as_str().unwrap();
    let (dk, v) = published_key(&d, &id, id_token, jsonwebtoken::Algorithm::EdDSA);
    let claims = jsonwebtoken::decode::<Value>(id_token, &dk, &v)
        .expect("the EdDSA ID token verifies against the published key")
        .claims;
    assert_eq!(claims["preferred_username"], "alice");
    // The access token stays RS256 (authd reads it, at userinfo and introspection).
    let access = t["access_token"].as_str().unwrap();
    d.get_auth("/oidc/userinfo", access).expect(200);
    assert!(
        env.ctl(&[
            "client",
            "add",
            "Bad",
            "--redirect-uri",
            REDIRECT,
            "--id-token-alg",
            "none"
        ])
        .code
            != Some(0)
    );

    // A disabled account: its access token and refresh token stop working.
    env.ctl(&["user", "disable", "alice"]).ok();
    assert_eq!(d.get_auth("/oidc/userinfo", access).status, 401);
    assert_eq!(introspect(&d, &id, &secret, access)["active"], false);
    let r = token(
        &d,
        Some((&id, &secret)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ],
    );
    assert_eq!(r.expect(400)["error"], "invalid_grant");
}

#[test]
fn es256_id_tokens_verify_against_the_p256_key_and_other_p256_signatures_are_refused() {
    let (env, d, session, id, _, t) = tokens_of_alg_client("Curved", "ES256");
    // The client's choice, in `client show` (text and JSON).
    assert_eq!(
        env.json(&["client", "show", "Curved"])["id_token_alg"],
        "ES256"
    );
    let shown = env.ctl(&["client", "show", "Curved"]);
    assert!(
        shown.ok().stdout.contains("ID tokens:     ES256"),
        "{shown:?}"
    );
    let algs = d.get("/.well-known/openid-configuration").expect(200)
        ["id_token_signing_alg_values_supported"]
        .clone();
    assert_eq!(algs, serde_json::json!(["RS256", "EdDSA", "ES256"]));

    let id_token = t["id_token"].as_str().unwrap().to_string();
    let kid = kid_of(&id_token);
    let raw = d.get("/oidc/jwks").expect(200);
    let published = raw["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("its key in the JWKS")
        .clone();
    assert_eq!(published["kty"], "EC", "{published}");
    assert_eq!(published["crv"], "P-256", "{published}");
    assert_eq!(published["alg"], "ES256", "{published}");
    assert!(published.get("d").is_none(), "no private part: {published}");
    let (dk, v) = published_key(&d, &id, &id_token, jsonwebtoken::Algorithm::ES256);
    let claims = jsonwebtoken::decode::<Value>(&id_token, &dk, &v)
        .expect("the ES256 ID token verifies against the published P-256 key")
        .claims;
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["nonce"], "n0nce");

    // The same claims under the same kid, signed by another P-256 key.
    let other = {
        use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let k = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        k.to_pkcs8v1().unwrap().as_ref().to_vec()
    };
    let forged = signed_as(
        &kid,
        jsonwebtoken::Algorithm::ES256,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_der(&other),
    );
    assert!(
        jsonwebtoken::decode::<Value>(&forged, &dk, &v).is_err(),
        "the published key does not verify another key's signature"
    );
    // authd itself reads ID tokens as RP-initiated logout hints: the forged one is no
    // hint (the portal asks instead; the session stays), the real one is.
    let cookie = format!("authd_session={session}");
    let logout = |hint: &str| {
        let path = format!(
            "/oidc/logout?id_token_hint={}&post_logout_redirect_uri={}&state=bye",
            q(hint),
            q(REDIRECT)
        );
        d.request("GET", &path, &[("Cookie", &cookie)], None)
    };
    assert_eq!(logout(&forged).header("location"), Some("/logout"));
    d.get_auth("/v1/session", &session).expect(200);
    assert_eq!(
        logout(&id_token).header("location"),
        Some(&*format!("{REDIRECT}?state=bye"))
    );
    d.get_auth("/v1/session", &session).expect(401);

    // The P-256 key is encrypted under the key file like the others, and rotates with them.
    let stored: i64 = rusqlite::Connection::open(&env.db)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM oidc_keys WHERE alg = 'ES256' AND retired_at IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, 1);
    env.ctl(&["client", "rotate-keys"]).ok();
    let jwks = d.get("/oidc/jwks").expect(200);
    let ec: Vec<&Value> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kty"] == "EC")
        .collect();
    assert_eq!(ec.len(), 2, "the retired P-256 key stays published: {jwks}");
}

/// Key rotation (issue 16) covers the signing keys: `key rotate` and `key rekey` encrypt
/// them again under the new key, `key retire` then lets the old one go, and authd still
/// publishes (and so can sign with) the same keys from the new key file alone.
#[test]
fn a_key_rotation_carries_the_signing_keys_over() {
    let env = provision();
    let d = Daemon::start(&env, &["--insecure-cookies"]);
    let kids = |d: &Daemon| -> Vec<String> {
        let mut k: Vec<String> = d.get("/oidc/jwks").expect(200)["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect();
        k.sort();
        k
    };
    let before = kids(&d);
    assert!(
        !before.is_empty(),
        "the first JWKS request made the signing keys"
    );
    drop(d);
    // What key 1 is needed for, by `key list`.
    let key_1_needed_for = |env: &Env| -> Vec<String> {
        let list = env.json(&["key", "list"]);
        list.as_array()
            .unwrap()
            .iter()
            .filter(|k| k["id"] == 1)
            .flat_map(|k| k["uses"].as_array().unwrap().clone())
            .map(|u| u["what"].as_str().unwrap().to_string())
            .collect()
    };
    // Under key 1 until a rotation.
    assert!(key_1_needed_for(&env).contains(&"OpenID Connect signing keys".to_string()));
    env.json(&["key", "rotate"]);
    env.json(&["key", "rekey"]);
    assert_eq!(key_1_needed_for(&env), Vec::<String>::new());
    env.ctl(&["key", "retire", "1"]).ok();
    let d = Daemon::start(&env, &["--insecure-cookies"]);
    assert_eq!(kids(&d), before);
}

/// `POST PATH` with a raw body and headers (for requests no client library would send).
fn post_raw(d: &Daemon, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    d.request("POST", path, headers, Some(body.as_bytes()))
}

/// The reasons of the failed audit rows of `event`.
fn failure_reasons(env: &Env, event: &str) -> Vec<String> {
    env.audit(&["--event", event, "--outcome", "failure"])
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn client_add_json_gives_the_id_and_secret_only_and_authd_keeps_the_secret_hashed() {
    let (env, d, session) = setup();
    let added = env.json(&[
        "client",
        "add",
        "App",
        "--redirect-uri",
        REDIRECT,
        "--trusted",
    ]);
    assert_eq!(
        common::keys(&added),
        ["client_id", "client_secret"],
        "{added}"
    );
    let id = added["client_id"].as_str().unwrap().to_string();
    let secret = added["client_secret"].as_str().unwrap().to_string();
    assert!(secret.len() >= 43, "256 random bits: {secret}");
    let public = env.json(&[
        "client",
        "add",
        "Spa",
        "--redirect-uri",
        REDIRECT,
        "--public",
    ]);
    assert_eq!(common::keys(&public), ["client_id"], "{public}");

    // Stored as its SHA-256, nowhere in clear: not in the database, not in list or show.
    let conn = rusqlite::Connection::open(&env.db).unwrap();
    let stored: Option<String> = conn
        .query_row(
            "SELECT secret_hash FROM oidc_clients WHERE client_id = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored.as_deref(), Some(token_hash(&secret).as_str()));
    let public_hash: Option<String> = conn
        .query_row(
            "SELECT secret_hash FROM oidc_clients WHERE name = 'Spa'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(public_hash, None);
    drop(conn);
    let mut files = common::read_or_empty(&env.db);
    files.extend(common::read_or_empty(&std::path::PathBuf::from(format!(
        "{}-wal",
        env.db.display()
    ))));
    assert!(
        !files.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secret is in the database file"
    );
    let list = env.ctl(&["--json", "client", "list"]).ok().stdout.clone();
    let show = env.ctl(&["client", "show", "App"]).ok().stdout.clone();
    for out in [&list, &show] {
        assert!(!out.contains(&secret), "{out}");
        assert!(out.contains(&id), "{out}");
    }
    let names: Vec<String> = env
        .json(&["client", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["App", "Spa"]);

    // rotate-secret: the old secret stops working, the new one (printed once) works.
    let c1 = code(&d, &session, &id);
    let rotated = env.json(&["client", "rotate-secret", "App"]);
    assert_eq!(
        common::keys(&rotated),
        ["client_id", "client_secret"],
        "{rotated}"
    );
    let new_secret = rotated["client_secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    let r = exchange(&d, &id, &secret, &c1, Some(VERIFIER));
    assert_eq!(r.expect(401)["error"], "invalid_client");
    let t = exchange(&d, &id, &new_secret, &c1, Some(VERIFIER)).expect(200);
    let access = t["access_token"].as_str().unwrap().to_string();
    d.get_auth("/oidc/userinfo", &access).expect(200);
    assert!(
        env.ctl(&["client", "rotate-secret", "Spa"]).code != Some(0),
        "a public client has no secret to rotate"
    );

    // remove: what it was issued stops working, and its requests are unknown.
    env.ctl(&["client", "remove", "App"]).ok();
    assert_eq!(d.get_auth("/oidc/userinfo", &access).status, 401);
    let r = authorize(&d, Some(&session), &code_params(&id, REDIRECT));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.header("location").is_none());
    assert!(r.text().contains("not known here"), "{r:?}");
    assert!(env.ctl(&["client", "show", "App"]).code != Some(0));

    for (event, n) in [
        ("admin.client.add", 2),
        ("admin.client.rotate_secret", 1),
        ("admin.client.remove", 1),
    ] {
        let rows = env.audit(&["--event", event, "--outcome", "success"]);
        assert_eq!(rows.len(), n, "{event}: {rows:?}");
    }
}

#[test]
fn claims_follow_the_scopes_and_email_verified_follows_the_emailed_codes() {
    let env = provision();
    add_user(&env, "alice", "school", &["pupil-data"], "user");
    let mut app = Totp::from_enrollment(&env.enroll("alice"));
    env.ctl(&["group", "add", "staff"]).ok();
    add_user(&env, "carol", "other", &["staff"], "user");
    env.json(&["enroll", "carol", "--method", "email"]);
    let sink = SmtpSink::start();
    let d = start_with_mail(&env, &sink);
    let (id, secret) = add_client(&env, "App", REDIRECT, &["--trusted"]);
    let alice = d.login_totp("alice", PW, &mut app);
    let v = d.login("carol", PW).expect_status("second_factor_required");
    let to = "carol@example.org";
    let v = d
        .post(
            "/v1/login/email",
            &serde_json::json!({"flow": v["flow"], "code": sink.nth_code(to, 0)}),
        )
        .expect_status("authenticated");
    let carol = v["session"].as_str().unwrap().to_string();

    // The ID token and userinfo of `session` for `scope`.
    let claims = |session: &str, scope: &str| -> (Value, Value) {
        let mut p = code_params(&id, REDIRECT);
        p.retain(|(k, _)| *k != "scope");
        p.push(("scope", scope));
        let r = authorize(&d, Some(session), &p);
        let c = get(&redirected(&r, REDIRECT), "code").unwrap().to_string();
        let t = exchange(&d, &id, &secret, &c, Some(VERIFIER)).expect(200);
        let info = d
            .get_auth("/oidc/userinfo", t["access_token"].as_str().unwrap())
            .expect(200);
        (claims_of(t["id_token"].as_str().unwrap()), info)
    };
    let personal = [
        "preferred_username",
        "name",
        "email",
        "email_verified",
        "groups",
        "org",
    ];
    let (idt, info) = claims(&alice, "openid profile email groups");
    for c in [&idt, &info] {
        assert_eq!(c["preferred_username"], "alice", "{c}");
        assert_eq!(c["name"], "alice", "{c}");
        assert_eq!(c["email"], "alice@example.org", "{c}");
        assert_eq!(
            c["email_verified"], false,
            "an app code does not show the address is hers: {c}"
        );
        assert_eq!(c["groups"], serde_json::json!(["pupil-data"]), "{c}");
        assert_eq!(c["org"], "school", "{c}");
    }
    assert_eq!(idt["sub"], info["sub"]);
    let (idt, info) = claims(&carol, "openid profile email groups");
    for c in [&idt, &info] {
        assert_eq!(c["email"], "carol@example.org", "{c}");
        assert_eq!(
            c["email_verified"], true,
            "emailed codes reach the address: {c}"
        );
        assert_eq!(c["groups"], serde_json::json!(["staff"]), "{c}");
        assert_eq!(c["org"], "other", "{c}");
    }
    // openid alone: the subject, nothing personal.
    let (idt, info) = claims(&alice, "openid");
    for c in [&idt, &info] {
        assert!(c["sub"].is_string(), "{c}");
        for k in personal {
            assert!(c.get(k).is_none(), "{k} without its scope: {c}");
        }
    }
    // Each scope opens its own claims only.
    let (idt, _) = claims(&alice, "openid email");
    assert_eq!(idt["email"], "alice@example.org");
    assert!(idt.get("preferred_username").is_none() && idt.get("groups").is_none());
    let (idt, _) = claims(&alice, "openid groups");
    assert_eq!(idt["org"], "school");
    assert!(idt.get("email").is_none() && idt.get("name").is_none());
    // A scope authd does not know is dropped, not granted.
    let (idt, _) = claims(&alice, "openid admin profile");
    assert_eq!(idt["preferred_username"], "alice");
}

/// Allow the consent page `page` (its form) for the session.
fn allow(d: &Daemon, session: &str, page: &str) -> Vec<(String, String)> {
    let body = format!(
        "csrf={}&request={}&answer=allow",
        q(&hidden(page, "csrf")),
        q(&hidden(page, "request"))
    );
    let r = consent_post(d, session, &body);
    assert_eq!(r.status, 200, "{r:?}");
    let text = r.text();
    let at = text.find(&format!("{REDIRECT}?")).expect("the way on");
    let rest = &text[at + REDIRECT.len() + 1..];
    let rest = rest[..rest.find('"').unwrap()].replace("&#38;", "&");
    form_urlencoded::parse(rest.as_bytes())
        .into_owned()
        .collect()
}

/// Scope `scope` asked of `client_id` on `session` (with `extra` parameters).
fn ask(d: &Daemon, session: &str, client_id: &str, scope: &str, extra: &[(&str, &str)]) -> Resp {
    let mut p = code_params(client_id, REDIRECT);
    p.retain(|(k, _)| *k != "scope");
    p.push(("scope", scope));
    p.extend_from_slice(extra);
    authorize(d, Some(session), &p)
}

fn is_consent_page(r: &Resp) -> bool {
    r.status == 200 && r.text().contains("id=\"allow\"")
}

#[test]
fn consent_is_remembered_per_user_and_client_for_the_scopes_given() {
    let (env, d, alice) = setup();
    add_user(&env, "bob", "school", &[], "user");
    let bob = d.login_session("bob", PW);
    let (gallery, _) = add_client(&env, "Gallery", REDIRECT, &[]);
    let (wiki, _) = add_client(&env, "Wiki", REDIRECT, &[]);

    let r = ask(&d, &alice, &gallery, "openid profile", &[]);
    assert!(is_consent_page(&r), "{r:?}");
    let p = allow(&d, &alice, &r.text());
    assert!(get(&p, "code").is_some(), "{p:?}");
    // alice, Gallery, the same scopes (or fewer): straight back with a code.
    for scope in ["openid profile", "openid"] {
        let r = ask(&d, &alice, &gallery, scope, &[]);
        assert!(get(&redirected(&r, REDIRECT), "code").is_some(), "{scope}");
    }
    // Another user, the same client: asked.
    assert!(is_consent_page(&ask(
        &d,
        &bob,
        &gallery,
        "openid profile",
        &[]
    )));
    // The same user, another client: asked.
    assert!(is_consent_page(&ask(
        &d,
        &alice,
        &wiki,
        "openid profile",
        &[]
    )));
    // A scope she did not allow (her email): asked again, naming it.
    let r = ask(&d, &alice, &gallery, "openid profile email", &[]);
    assert!(is_consent_page(&r), "{r:?}");
    assert!(r.text().contains("your email address"), "{r:?}");
    // prompt=none where consent is needed: consent_required to the client, no code.
    let p = redirected(
        &ask(&d, &bob, &gallery, "openid", &[("prompt", "none")]),
        REDIRECT,
    );
    assert_eq!(get(&p, "error"), Some("consent_required"));
    assert!(get(&p, "code").is_none());
    // …and where it is given: a code, silently.
    let p = redirected(
        &ask(&d, &alice, &gallery, "openid", &[("prompt", "none")]),
        REDIRECT,
    );
    assert!(get(&p, "code").is_some(), "{p:?}");
    let consents = env.audit(&["--event", "oidc.consent"]);
    assert_eq!(consents.len(), 1, "{consents:?}");
    assert!(failure_reasons(&env, "oidc.authorize").contains(&"consent".to_string()));
}

#[test]
fn pkce_is_s256_only_optional_for_confidential_clients_and_cannot_be_added_or_dropped_later() {
    let (env, d, session) = setup();
    let (id, secret) = add_client(&env, "App", REDIRECT, &["--trusted"]);
    let with = |pairs: &[(&str, &str)]| {
        let mut p: Vec<(&str, &str)> = code_params(&id, REDIRECT)
            .into_iter()
            .filter(|(k, _)| !k.starts_with("code_challenge"))
            .collect();
        p.extend_from_slice(pairs);
        authorize(&d, Some(&session), &p)
    };
    // plain, no method, a challenge too short: an error to the client, no code.
    for bad in [
        vec![
            ("code_challenge", VERIFIER),
            ("code_challenge_method", "plain"),
        ],
        vec![("code_challenge", CHALLENGE)],
        vec![("code_challenge", "abc"), ("code_challenge_method", "S256")],
        vec![("code_challenge_method", "S256")],
    ] {
        let p = redirected(&with(&bad), REDIRECT);
        assert_eq!(get(&p, "error"), Some("invalid_request"), "{bad:?}");
        assert!(get(&p, "code").is_none(), "{bad:?}");
    }
    // A confidential client may leave PKCE out: its secret alone exchanges the code.
    let plain_code = || {
        get(&redirected(&with(&[]), REDIRECT), "code")
            .expect("a code without PKCE")
            .to_string()
    };
    let c = plain_code();
    exchange(&d, &id, &secret, &c, None).expect(200);
    // A verifier for a code asked without a challenge: refused (no PKCE added later).
    let c = plain_code();
    assert_eq!(
        exchange(&d, &id, &secret, &c, Some(VERIFIER)).expect(400)["error"],
        "invalid_grant"
    );
    let reasons = failure_reasons(&env, "oidc.token");
    assert!(reasons.contains(&"pkce".to_string()), "{reasons:?}");
}

#[test]
fn a_replayed_refresh_token_revokes_its_whole_family() {
    let (env, d, session) = setup();
    let ((id, secret), (other, other_secret)) = two_clients(&env);
    let c = code(&d, &session, &id);
    let t1 = exchange(&d, &id, &secret, &c, Some(VERIFIER)).expect(200);
    let refresh = |id: &str, secret: &str, r: &str| {
        token(
            &d,
            Some((id, secret)),
            &[("grant_type", "refresh_token"), ("refresh_token", r)],
        )
    };
    let s = |v: &Value, k: &str| v[k].as_str().unwrap().to_string();
    let r1 = s(&t1, "refresh_token");
    // Another client cannot use it (and does not spend it).
    assert_eq!(
        refresh(&other, &other_secret, &r1).expect(400)["error"],
        "invalid_grant"
    );
    let t2 = refresh(&id, &secret, &r1).expect(200);
    let r2 = s(&t2, "refresh_token");
    assert_ne!(r2, r1, "rotated");
    let idt = claims_of(&s(&t2, "id_token"));
    assert_eq!(idt["preferred_username"], "alice");
    let t3 = refresh(&id, &secret, &r2).expect(200);
    let (a3, r3) = (s(&t3, "access_token"), s(&t3, "refresh_token"));
    d.get_auth("/oidc/userinfo", &a3).expect(200);
    assert_eq!(introspect(&d, &id, &secret, &r3)["active"], true);
    assert_eq!(
        introspect(&d, &id, &secret, &r1)["active"],
        false,
        "a rotated token is spent"
    );

    // r1, rotated twice ago, comes back: refused, and every token of the family with it.
    let r = refresh(&id, &secret, &r1);
    assert_eq!(r.expect(400)["error"], "invalid_grant");
    for t in [
        s(&t1, "access_token"),
        s(&t2, "access_token"),
        a3.clone(),
        r3.clone(),
    ] {
        assert_eq!(introspect(&d, &id, &secret, &t)["active"], false, "{t}");
    }
    assert_eq!(d.get_auth("/oidc/userinfo", &a3).status, 401);
    assert_eq!(
        refresh(&id, &secret, &r3).expect(400)["error"],
        "invalid_grant"
    );
    // Another family of the same user and client lives on.
    let c = code(&d, &session, &id);
    let fresh = exchange(&d, &id, &secret, &c, Some(VERIFIER)).expect(200);
    refresh(&id, &secret, &s(&fresh, "refresh_token")).expect(200);
    let reasons = failure_reasons(&env, "oidc.token");
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("refresh_reused revoked=")),
        "{reasons:?}"
    );
    assert!(reasons.contains(&"other_client".to_string()), "{reasons:?}");
}

/// `POST /oidc/revoke` of `t` as the client `id`/`secret`.
fn revoke(d: &Daemon, id: &str, secret: &str, t: &str) -> Resp {
    let auth = format!(
        "Basic {}",
        data_encoding::BASE64.encode(format!("{id}:{secret}").as_bytes())
    );
    post_raw(
        d,
        "/oidc/revoke",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", &auth),
        ],
        &format!("token={}", q(t)),
    )
}

/// Introspection is for confidential clients (RFC 7662 2.1: the caller authenticates); a
/// public client naming only its client_id is refused 401 and audited `public_client`.
/// Every answer of introspection and userinfo is an audit row on the token's user.
#[test]
fn introspection_refuses_public_clients_and_every_answer_is_audited() {
    let (env, d, session) = setup();
    let (spa, _) = add_client(&env, "Spa", REDIRECT, &["--public", "--trusted"]);
    let c = code(&d, &session, &spa);
    let t = token(
        &d,
        None,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &spa),
            ("code", &c),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .expect(200);
    let spa_access = t["access_token"].as_str().unwrap();
    let r = post_raw(
        &d,
        "/oidc/introspect",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &format!("client_id={}&token={}", q(&spa), q(spa_access)),
    );
    assert_eq!(r.status, 401, "{r:?}");
    assert!(
        !String::from_utf8_lossy(&r.body).contains("alice"),
        "nothing of the token is told: {r:?}"
    );
    let refused = env.audit(&["--event", "oidc.introspect", "--outcome", "failure"]);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["reason"], "public_client", "{refused:?}");
    assert!(
        refused[0]["detail"]
            .as_str()
            .is_some_and(|x| x.contains("Spa")),
        "{refused:?}"
    );

    // A confidential client's introspection and a userinfo call: success rows on alice.
    let (id, secret) = add_client(&env, "App", REDIRECT, &["--trusted"]);
    let c = code(&d, &session, &id);
    let t = exchange(&d, &id, &secret, &c, Some(VERIFIER)).expect(200);
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(introspect(&d, &id, &secret, access)["active"], true);
    assert_eq!(
        introspect(&d, &id, &secret, "no-such-token")["active"],
        false
    );
    assert_eq!(d.get_auth("/oidc/userinfo", access).status, 200);
    let ok = env.audit(&["--event", "oidc.introspect", "--outcome", "success"]);
    assert_eq!(ok.len(), 2, "{ok:?}");
    let on_alice: Vec<_> = ok.iter().filter(|r| r["username"] == "alice").collect();
    assert_eq!(on_alice.len(), 1, "the unknown token names no user: {ok:?}");
    let detail = on_alice[0]["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("\"active\":true") && detail.contains("App"),
        "{ok:?}"
    );
    let ui = env.audit(&["--event", "oidc.userinfo", "--outcome", "success"]);
    assert_eq!(ui.len(), 1, "{ui:?}");
    assert_eq!(ui[0]["username"], "alice", "{ui:?}");
    assert!(
        ui[0]["detail"].as_str().is_some_and(|x| x.contains("App")),
        "{ui:?}"
    );
}

#[test]
fn revocation_and_introspection_answer_for_the_clients_own_tokens_only() {
    let (env, d, session) = setup();
    let ((id, secret), (other, other_secret)) = two_clients(&env);
    let c = code(&d, &session, &id);
    let t = exchange(&d, &id, &secret, &c, Some(VERIFIER)).expect(200);
    let access = t["access_token"].as_str().unwrap();
    let refresh = t["refresh_token"].as_str().unwrap();

    // Another client sees nothing of them and revokes nothing.
    for tok in [access, refresh] {
        assert_eq!(introspect(&d, &other, &other_secret, tok)["active"], false);
        revoke(&d, &other, &other_secret, tok).expect(200);
        assert_eq!(introspect(&d, &id, &secret, tok)["active"], true);
    }
    let i = introspect(&d, &id, &secret, refresh);
    assert_eq!(i["token_type"], "refresh_token", "{i}");
    assert_eq!(i["client_id"], id.as_str(), "{i}");
    // A wrong secret: 401 at both.
    assert_eq!(revoke(&d, &id, "nope", access).status, 401);
    let auth = format!(
        "Basic {}",
        data_encoding::BASE64.encode(format!("{id}:nope").as_bytes())
    );
    let r = post_raw(
        &d,
        "/oidc/introspect",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", &auth),
        ],
        &format!("token={}", q(access)),
    );
    assert_eq!(r.status, 401, "{r:?}");
    // Its own client revokes the refresh token: the grant's access token goes with it.
    revoke(&d, &id, &secret, refresh).expect(200);
    assert_eq!(introspect(&d, &id, &secret, access)["active"], false);
    assert_eq!(d.get_auth("/oidc/userinfo", access).status, 401);
    // An unknown token: 200 (RFC 7009 2.2), nothing to say.
    revoke(&d, &id, &secret, "no-such-token").expect(200);
    let ok = env.audit(&["--event", "oidc.revoke", "--outcome", "success"]);
    assert_eq!(ok.len(), 1, "only the owner's revocation revoked: {ok:?}");
    assert!(
        ok[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("\"revoked\":2")),
        "{ok:?}"
    );
    assert!(failure_reasons(&env, "oidc.revoke").contains(&"client_auth".to_string()));
    assert!(failure_reasons(&env, "oidc.introspect").contains(&"client_auth".to_string()));
    // The other client's tries at them are refusals, audited on alice's account.
    for event in ["oidc.revoke", "oidc.introspect"] {
        let rows: Vec<Value> = audit_events(&env, "alice", event)
            .into_iter()
            .filter(|r| r["reason"] == "other_client")
            .collect();
        assert_eq!(
            rows.len(),
            2,
            "{event}: the access and refresh token: {rows:?}"
        );
        assert!(
            rows.iter().all(|r| r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("\"Other\""))),
            "{event}: the client named: {rows:?}"
        );
    }
}

#[test]
fn prompt_none_max_age_login_hint_and_a_fresh_sign_in_after_prompt_login() {
    let (env, d, session) = setup();
    let (id, secret) = add_client(&env, "App", REDIRECT, &["--trusted"]);
    let with = |session: Option<&str>, extra: &[(&str, &str)]| {
        let mut p = code_params(&id, REDIRECT);
        p.extend_from_slice(extra);
        authorize(&d, session, &p)
    };
    // prompt=none on a live session: a code, silently.
    let p = redirected(&with(Some(&session), &[("prompt", "none")]), REDIRECT);
    assert!(get(&p, "code").is_some(), "{p:?}");
    // max_age met: a code whose ID token carries the sign-in's time.
    let created = signed_in_at(&env, &session);
    let p = redirected(&with(Some(&session), &[("max_age", "300")]), REDIRECT);
    let t = exchange(&d, &id, &secret, get(&p, "code").unwrap(), Some(VERIFIER)).expect(200);
    assert_eq!(
        claims_of(t["id_token"].as_str().unwrap())["auth_time"],
        created
    );
    // A bad max_age: an error to the client.
    let p = redirected(&with(Some(&session), &[("max_age", "soon")]), REDIRECT);
    assert_eq!(get(&p, "error"), Some("invalid_request"));

    // The sign-in grows older than max_age. With prompt=none: login_required, and the
    // session is left alone (nothing may be shown).
    sql(
        &env,
        "UPDATE sessions SET created_at = created_at - 1000",
        &[],
    );
    let p = redirected(
        &with(Some(&session), &[("max_age", "300"), ("prompt", "none")]),
        REDIRECT,
    );
    assert_eq!(get(&p, "error"), Some("login_required"));
    assert_eq!(get(&p, "state"), Some("st4te"));
    d.get_auth("/v1/session", &session).expect(200);
    assert!(failure_reasons(&env, "oidc.authorize").contains(&"reauthentication".to_string()));

    // prompt=login with login_hint on a sign-in made seconds ago (alice signs in anew;
    // 30 s back, so its time tells it from the next one's): the session ends all the same,
    // the sign-in page has the name.
    let mut app = Totp::from_enrollment(&env.enroll("alice"));
    let recent = d.login_totp("alice", PW, &mut app);
    sql(
        &env,
        "UPDATE sessions SET created_at = created_at - 30 WHERE token_hash = ?1",
        &[&token_hash(&recent)],
    );
    let r = with(
        Some(&recent),
        &[("prompt", "login"), ("login_hint", "alice")],
    );
    assert_eq!(r.status, 303, "{r:?}");
    let login = r.header("location").unwrap().to_string();
    d.get_auth("/v1/session", &recent).expect(401);
    let page = d.get(&login);
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.text().contains("name=\"username\"") && page.text().contains("value=\"alice\""),
        "the login_hint fills in the username: {}",
        page.text()
    );
    // The new sign-in comes back to the request without prompt=login and gets its code
    // at once (no loop), the new session kept; its ID token has the new sign-in's time.
    let back = next_of(&login);
    assert!(!back.contains("prompt"), "{back}");
    let fresh = d.login_totp("alice", PW, &mut app);
    let cookie = format!("authd_session={fresh}");
    let r = d.request("GET", &back, &[("Cookie", &cookie)], None);
    let p = redirected(&r, REDIRECT);
    d.get_auth("/v1/session", &fresh).expect(200);
    let t = exchange(&d, &id, &secret, get(&p, "code").unwrap(), Some(VERIFIER)).expect(200);
    let idt = claims_of(t["id_token"].as_str().unwrap());
    assert_eq!(idt["amr"], serde_json::json!(["pwd", "otp", "mfa"]));
    assert_eq!(idt["auth_time"], signed_in_at(&env, &fresh));
    assert_ne!(idt["auth_time"], signed_in_at(&env, &recent));
}

/// `prompt=login` and `max_age=0` from the client ask for a new sign-in however fresh the
/// session's (OpenID Connect Core 3.1.2.1); the way back after it does not ask again.
#[test]
fn prompt_login_and_max_age_0_sign_in_again_however_fresh_and_the_way_back_does_not_loop() {
    let env = provision();
    add_user(&env, "bob", "school", &[], "user");
    let d = Daemon::start(&env, &["--insecure-cookies"]);
    let (app, app_secret) = add_client(&env, "App", REDIRECT, &["--trusted"]);
    let (gallery, gallery_secret) = add_client(&env, "Gallery", REDIRECT, &[]);
    let cookie = |s: &str| format!("authd_session={s}");
    // A sign-in made seconds ago (30 s back, so its time tells it from the next one's).
    let recent = || {
        let s = d.login_session("bob", PW);
        sql(
            &env,
            "UPDATE sessions SET created_at = created_at - 30 WHERE token_hash = ?1",
            &[&token_hash(&s)],
        );
        s
    };
    let auth_time = |client: &str, secret: &str, p: &[(String, String)]| {
        let code = get(p, "code").unwrap_or_else(|| panic!("no code: {p:?}"));
        let t = exchange(&d, client, secret, code, Some(VERIFIER)).expect(200);
        claims_of(t["id_token"].as_str().unwrap())["auth_time"].clone()
    };

    for asked in [("prompt", "login"), ("max_age", "0")] {
        let old = recent();
        let mut params = code_params(&app, REDIRECT);
        params.push(asked);
        // The session ends and the sign-in page comes, its way back without the ask.
        let r = authorize(&d, Some(&old), &params);
        assert_eq!(r.status, 303, "{asked:?}: {r:?}");
        let loc = r.header("location").unwrap();
        assert!(loc.starts_with("/login?next="), "{loc}");
        d.get_auth("/v1/session", &old).expect(401);
        let back = next_of(loc);
        assert!(!back.contains(&format!("{}=", asked.0)), "{back}");
        assert!(back.contains("state=st4te"), "{back}");
        // The new sign-in comes back there: a code at once, the new session kept.
        let fresh = d.login_session("bob", PW);
        let r = d.request("GET", &back, &[("Cookie", &cookie(&fresh))], None);
        let p = redirected(&r, REDIRECT);
        d.get_auth("/v1/session", &fresh).expect(200);
        assert_eq!(
            auth_time(&app, &app_secret, &p),
            signed_in_at(&env, &fresh),
            "{asked:?}"
        );
        assert_ne!(signed_in_at(&env, &fresh), signed_in_at(&env, &old));
        // The client's own request again: even a sign-in just made is asked again.
        let r = authorize(&d, Some(&fresh), &params);
        assert_eq!(r.status, 303, "{asked:?}: {r:?}");
        d.get_auth("/v1/session", &fresh).expect(401);
    }

    // max_age=0 with prompt=none on a sign-in seconds old: login_required to the client,
    // the session left alone.
    let old = recent();
    let mut params = code_params(&app, REDIRECT);
    params.extend([("max_age", "0"), ("prompt", "none")]);
    let p = redirected(&authorize(&d, Some(&old), &params), REDIRECT);
    assert_eq!(get(&p, "error"), Some("login_required"), "{p:?}");
    d.get_auth("/v1/session", &old).expect(200);

    // prompt=login consent of an untrusted client bob has allowed: the new sign-in, then
    // the consent page all the same, then a code of the new sign-in.
    let r = authorize(&d, Some(&old), &code_params(&gallery, REDIRECT));
    assert!(is_consent_page(&r), "{r:?}");
    assert!(get(&allow(&d, &old, &r.text()), "code").is_some());
    let mut params = code_params(&gallery, REDIRECT);
    params.push(("prompt", "login consent"));
    let r = authorize(&d, Some(&old), &params);
    assert_eq!(r.status, 303, "{r:?}");
    d.get_auth("/v1/session", &old).expect(401);
    let back = next_of(r.header("location").unwrap());
    let asks: Vec<(String, String)> =
        form_urlencoded::parse(back.split_once('?').unwrap().1.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(get(&asks, "prompt"), Some("consent"), "{back}");
    let fresh = d.login_session("bob", PW);
    let r = d.request("GET", &back, &[("Cookie", &cookie(&fresh))], None);
    assert!(is_consent_page(&r), "{r:?}");
    let p = allow(&d, &fresh, &r.text());
    assert_eq!(
        auth_time(&gallery, &gallery_secret, &p),
        signed_in_at(&env, &fresh)
    );
    d.get_auth("/v1/session", &fresh).expect(200);
    assert!(failure_reasons(&env, "oidc.authorize").contains(&"reauthentication".to_string()));
}

#[test]
fn malformed_requests_are_refused_before_anything_and_audited() {
    let (env, d, session) = setup();
    let (id, secret) = add_client(&env, "App", REDIRECT, &["--trusted"]);
    let c = code(&d, &session, &id);
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let basic = format!(
        "Basic {}",
        data_encoding::BASE64.encode(format!("{id}:{secret}").as_bytes())
    );
    let good = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={VERIFIER}",
        q(&c),
        q(REDIRECT)
    );
    // Parameters as JSON, not a form.
    let r = post_raw(
        &d,
        "/oidc/token",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &basic),
        ],
        "{}",
    );
    assert_eq!(r.expect(400)["error"], "invalid_request");
    // A repeated parameter (RFC 6749 3.1).
    let r = post_raw(
        &d,
        "/oidc/token",
        &[form[0], ("Authorization", &basic)],
        &format!("{good}&code=other"),
    );
    assert_eq!(r.expect(400)["error"], "invalid_request");
    // Two client authentications at once.
    let r = post_raw(
        &d,
        "/oidc/token",
        &[form[0], ("Authorization", &basic)],
        &format!("{good}&client_secret={}", q(&secret)),
    );
    assert_eq!(r.expect(400)["error"], "invalid_request");
    // A Basic header that is not base64 of id:secret.
    let r = post_raw(
        &d,
        "/oidc/token",
        &[form[0], ("Authorization", "Basic !!!")],
        &good,
    );
    assert_eq!(r.expect(401)["error"], "invalid_client");
    // Basic for one client, client_id of another in the body.
    let r = post_raw(
        &d,
        "/oidc/token",
        &[form[0], ("Authorization", &basic)],
        &format!("{good}&client_id=someone-else"),
    );
    assert_eq!(r.expect(401)["error"], "invalid_client");
    // None of them spent the code.
    exchange(&d, &id, &secret, &c, Some(VERIFIER)).expect(200);
    let reasons = failure_reasons(&env, "oidc.token");
    for want in [
        "content_type",
        "repeated_parameter",
        "two_client_auths",
        "basic_header",
        "client_id_mismatch",
    ] {
        assert!(reasons.contains(&want.to_string()), "{want} in {reasons:?}");
    }
    let rows = env.audit(&["--event", "oidc.token", "--outcome", "failure"]);
    assert!(
        rows.iter().any(|r| r["reason"] == "repeated_parameter"
            && r["detail"]
                .as_str()
                .is_some_and(|d| d.contains(id.as_str()))),
        "the client named: {rows:?}"
    );

    // Revocation and introspection: the same form rules, audited under their events.
    for (path, event) in [
        ("/oidc/revoke", "oidc.revoke"),
        ("/oidc/introspect", "oidc.introspect"),
    ] {
        let r = post_raw(
            &d,
            path,
            &[("Content-Type", "text/plain"), ("Authorization", &basic)],
            "token=x",
        );
        assert_eq!(r.expect(400)["error"], "invalid_request", "{path}");
        assert!(
            failure_reasons(&env, event).contains(&"content_type".to_string()),
            "{event}"
        );
    }
    // Userinfo without a token.
    assert_eq!(d.get("/oidc/userinfo").status, 401);
    assert!(failure_reasons(&env, "oidc.userinfo").contains(&"no_token".to_string()));
    // An authorization request repeating a parameter: a page, no redirect, audited.
    let mut p = code_params(&id, REDIRECT);
    p.push(("redirect_uri", "https://evil.example/cb"));
    let r = authorize(&d, Some(&session), &p);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.header("location").is_none(), "{r:?}");
    assert!(failure_reasons(&env, "oidc.authorize").contains(&"repeated_parameter".to_string()));
}

/// The refusals of the authorization and token endpoints not tried above each leave an
/// audit row with their reason (issue 17: "audit rows for every grant, token and
/// refusal"), and each goes back to the client (a registered redirect URI) as an OAuth
/// error without a code.
#[test]
fn every_refusal_of_the_authorization_and_token_endpoints_is_audited_with_its_reason() {
    let (env, d, _) = setup();
    add_user(&env, "bob", "school", &[], "user");
    let bob = d.login_session("bob", PW);
    let (id, secret) = add_client(&env, "App", REDIRECT, &["--trusted"]);
    let (spa, _) = add_client(&env, "Spa", REDIRECT, &["--public", "--trusted"]);
    let (gallery, _) = add_client(&env, "Gallery", REDIRECT, &[]);
    // `client_id`'s standard request on bob's session with `set` replacing or adding
    // parameters and `without` removing them: the client's error.
    let refused = |client_id: &str, set: &[(&str, &str)], without: &[&str]| -> String {
        let mut p: Vec<(&str, &str)> = code_params(client_id, REDIRECT)
            .into_iter()
            .filter(|(k, _)| !without.contains(k) && !set.iter().any(|(s, _)| s == k))
            .collect();
        p.extend_from_slice(set);
        let p = redirected(&authorize(&d, Some(&bob), &p), REDIRECT);
        assert!(get(&p, "code").is_none(), "{set:?} {without:?}: {p:?}");
        assert_eq!(get(&p, "state"), Some("st4te"), "{p:?}");
        get(&p, "error").unwrap_or("").to_string()
    };
    let acr = ("acr_values", "urn:authd:acr:mfa");
    for (client, set, without, error) in [
        (
            &id,
            vec![("response_type", "token")],
            vec![],
            "unsupported_response_type",
        ),
        (
            &id,
            vec![("scope", "profile email")],
            vec![],
            "invalid_scope",
        ),
        (&id, vec![("max_age", "-1")], vec![], "invalid_request"),
        (
            &spa,
            vec![],
            vec!["code_challenge", "code_challenge_method"],
            "invalid_request",
        ),
        (
            &spa,
            vec![("code_challenge_method", "plain")],
            vec![],
            "invalid_request",
        ),
        (&id, vec![acr], vec![], "unmet_authentication_requirements"),
    ] {
        assert_eq!(
            refused(client.as_str(), &set, &without),
            error,
            "{set:?} {without:?}"
        );
    }
    // bob sets up an app: the same request with prompt=none cannot step him up.
    env.enroll("bob");
    assert_eq!(
        refused(&id, &[acr, ("prompt", "none")], &[]),
        "interaction_required"
    );
    // The consent page answered "deny".
    let r = ask(&d, &bob, &gallery, "openid", &[]);
    assert!(is_consent_page(&r), "{r:?}");
    let body = format!(
        "csrf={}&request={}&answer=deny",
        q(&hidden(&r.text(), "csrf")),
        q(&hidden(&r.text(), "request"))
    );
    let denied = consent_post(&d, &bob, &body).text();
    assert!(denied.contains("error=access_denied"), "{denied}");
    let reasons = failure_reasons(&env, "oidc.authorize");
    for want in [
        "response_type",
        "scope",
        "max_age",
        "pkce_missing",
        "pkce_method",
        "acr_unmet",
        "step_up",
        "consent_refused",
    ] {
        assert!(reasons.contains(&want.to_string()), "{want} in {reasons:?}");
    }
    let rows = audit_events(&env, "bob", "oidc.authorize");
    assert!(
        rows.iter()
            .filter(|r| r["outcome"] == "failure")
            .all(|r| r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("\"client\""))),
        "each names its client: {rows:?}"
    );

    // The token endpoint: a code never issued, a grant type authd does not serve, a
    // refresh token never issued, and one revoked.
    let grant = |form: &[(&str, &str)]| token(&d, Some((&id, &secret)), form).expect(400);
    let e = grant(&[
        ("grant_type", "authorization_code"),
        ("code", "no-such-code"),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ]);
    assert_eq!(e["error"], "invalid_grant");
    let e = grant(&[
        ("grant_type", "password"),
        ("username", "bob"),
        ("password", PW),
    ]);
    assert_eq!(e["error"], "unsupported_grant_type");
    let e = grant(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", "no-such-token"),
    ]);
    assert_eq!(e["error"], "invalid_grant");
    let c = code(&d, &bob, &id);
    let t = exchange(&d, &id, &secret, &c, Some(VERIFIER)).expect(200);
    let r = t["refresh_token"].as_str().unwrap();
    revoke(&d, &id, &secret, r).expect(200);
    let e = grant(&[("grant_type", "refresh_token"), ("refresh_token", r)]);
    assert_eq!(e["error"], "invalid_grant");
    let reasons = failure_reasons(&env, "oidc.token");
    for want in [
        "unknown_code",
        "grant_type",
        "unknown_refresh_token",
        "refresh_token_dead",
    ] {
        assert!(reasons.contains(&want.to_string()), "{want} in {reasons:?}");
    }
}

/// Refresh tokens come with the `offline_access` scope only (issue 17: "refresh tokens
/// for the offline_access scope").
#[test]
fn only_offline_access_brings_a_refresh_token() {
    let (env, d, session) = setup();
    let (id, secret) = add_client(&env, "App", REDIRECT, &["--trusted"]);
    let tokens = |scope: &str| {
        let p = redirected(&ask(&d, &session, &id, scope, &[]), REDIRECT);
        exchange(&d, &id, &secret, get(&p, "code").unwrap(), Some(VERIFIER)).expect(200)
    };
    let t = tokens("openid profile email groups");
    assert!(t.get("refresh_token").is_none(), "{t}");
    assert!(
        t["id_token"].is_string() && t["access_token"].is_string(),
        "{t}"
    );
    assert_eq!(t["scope"], "openid profile email groups");
    let t = tokens("openid offline_access");
    assert!(t["refresh_token"].is_string(), "{t}");
    // A refreshed grant keeps its scope (and so its refresh token).
    let t = token(
        &d,
        Some((&id, &secret)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ],
    )
    .expect(200);
    assert!(t["refresh_token"].is_string(), "{t}");
    assert_eq!(t["scope"], "openid offline_access");
}

/// RP-initiated logout with an ID token of another user than the browser's: nothing
/// ends without the portal's own confirmation.
#[test]
fn logout_with_another_users_id_token_hint_ends_nothing() {
    let (env, d, alice) = setup();
    add_user(&env, "bob", "school", &[], "user");
    let bob = d.login_session("bob", PW);
    let (id, secret) = add_client(&env, "App", REDIRECT, &["--trusted"]);
    let c = code(&d, &bob, &id);
    let t = exchange(&d, &id, &secret, &c, Some(VERIFIER)).expect(200);
    let path = format!(
        "/oidc/logout?id_token_hint={}&post_logout_redirect_uri={}&state=bye",
        q(t["id_token"].as_str().unwrap()),
        q(REDIRECT)
    );
    let cookie = format!("authd_session={alice}");
    let r = d.request("GET", &path, &[("Cookie", &cookie)], None);
    assert_eq!(r.header("location"), Some("/logout"), "{r:?}");
    d.get_auth("/v1/session", &alice).expect(200);
    d.get_auth("/v1/session", &bob).expect(200);
    assert!(audit_events(&env, "alice", "oidc.logout").is_empty());
}

/// The sign-in the authorization request sends a browser to is the portal's, with all
/// its steps (issue 17: "the login page (every factor, terms, expiry, lockout) then
/// back"): a locked account gets no further; unlocked, the terms page and the expired
/// password's change come, then the sign-in with the new password, and the browser is
/// back at the request, which answers the client with a code for that user.
#[test]
fn the_portal_sign_in_with_lockout_terms_and_an_expired_password_comes_back_to_the_client() {
    let env = provision();
    add_user(&env, "dave", "school", &[], "user");
    env.ctl(&["passwd", "dave", "--expire"]).ok();
    let terms = env.path("terms.txt");
    std::fs::write(&terms, "1. Be kind.\n").unwrap();
    env.json(&[
        "terms",
        "set",
        "--version",
        "1",
        "--file",
        terms.to_str().unwrap(),
    ]);
    env.ctl(&[
        "policy",
        "set",
        "lockout.mode=account",
        "lockout.max_failures=3",
    ])
    .ok();
    let d = Daemon::start(&env, &["--insecure-cookies"]);
    let (id, secret) = add_client(&env, "App", REDIRECT, &["--trusted"]);
    for _ in 0..3 {
        assert_ne!(d.login("dave", "not-his-password").status, 200);
    }
    let query: Vec<String> = code_params(&id, REDIRECT)
        .iter()
        .map(|(k, v)| format!("{k}={}", q(v)))
        .collect();
    let request = format!("/oidc/authorize?{}", query.join("&"));

    let mut jar = Jar::default();
    let r = jar.get_page(&d, &request);
    assert_eq!(r.status, 303, "{r:?}");
    let login = r.header("location").unwrap().to_string();
    let back = next_of(&login);
    assert!(back.starts_with("/oidc/authorize?"), "{back}");
    // The sign-in form (its CSRF token, the way back) posted with `password`.
    let sign_in = |jar: &mut Jar, password: &str| {
        let page = jar.get_page(&d, &login).text();
        assert_eq!(hidden(&page, "next"), back);
        let csrf = hidden(&page, "csrf");
        jar.post_form(
            &d,
            "/login",
            &[
                ("csrf", &csrf),
                ("username", "dave"),
                ("password", password),
                ("next", &back),
            ],
        )
    };
    // Locked: refused on the sign-in page, no session, nothing for the client.
    let r = sign_in(&mut jar, PW);
    assert_ne!(r.status, 303, "{r:?}");
    assert!(jar.get("authd_session").is_none());
    env.ctl(&["unlock", "dave"]).ok();

    // Unlocked: the steps of the sign-in, each carrying the way back.
    const NEW: &str = "Fresh-Str0ng!passphrase";
    let mut r = sign_in(&mut jar, PW);
    let mut steps = vec![];
    for _ in 0..6 {
        if r.status == 303 {
            break;
        }
        assert_eq!(r.status, 200, "{r:?}");
        let page = r.text();
        let csrf = hidden(&page, "csrf");
        assert_eq!(hidden(&page, "next"), back, "{page}");
        if page.contains("/login/terms\"") {
            steps.push("terms");
            let flow = hidden(&page, "flow");
            r = jar.post_form(
                &d,
                "/login/terms",
                &[
                    ("csrf", &csrf),
                    ("flow", &flow),
                    ("next", &back),
                    ("accept", "1"),
                ],
            );
        } else if page.contains("id=\"password-form\"") {
            steps.push("expired");
            let flow = hidden(&page, "flow");
            r = jar.post_form(
                &d,
                "/login/password",
                &[
                    ("csrf", &csrf),
                    ("flow", &flow),
                    ("next", &back),
                    ("new_password", NEW),
                    ("confirm_password", NEW),
                ],
            );
        } else if page.contains("id=\"login-form\"") {
            steps.push("sign in again");
            r = jar.post_form(
                &d,
                "/login",
                &[
                    ("csrf", &csrf),
                    ("username", "dave"),
                    ("password", NEW),
                    ("accept_terms", "1"),
                    ("next", &back),
                ],
            );
        } else {
            panic!("an unexpected page after {steps:?}: {page}");
        }
    }
    assert_eq!(r.status, 303, "after {steps:?}: {r:?}");
    assert_eq!(r.header("location"), Some(back.as_str()), "{steps:?}");
    for want in ["terms", "expired", "sign in again"] {
        assert!(steps.contains(&want), "{want} in {steps:?}");
    }
    let p = redirected(&jar.get_page(&d, &back), REDIRECT);
    assert_eq!(get(&p, "state"), Some("st4te"));
    let t = exchange(&d, &id, &secret, get(&p, "code").unwrap(), Some(VERIFIER)).expect(200);
    let claims = claims_of(t["id_token"].as_str().unwrap());
    assert_eq!(claims["preferred_username"], "dave");
    assert_eq!(claims["amr"], serde_json::json!(["pwd"]));
}
