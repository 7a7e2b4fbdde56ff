//! Compliance presets (issue 14, part 2): `authctl policy preset seed|nist-800-63b`, with
//! `--show` (changes nothing) and `--yes` (scripts), checked key by key and by what the
//! password rules then accept.

use serde_json::Value;

use crate::common::*;

fn settings(env: &Env) -> Vec<(String, String)> {
    env.json(&["policy", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn value(env: &Env, key: &str) -> String {
    settings(env)
        .into_iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no {key}"))
        .1
}

fn add(env: &Env, name: &str, pw: &str) -> Out {
    env.ctl_stdin(
        &[
            "user",
            "add",
            name,
            "--email",
            "x@example.org",
            "--password-stdin",
        ],
        &format!("{pw}\n"),
    )
}

#[test]
fn presets_show_then_apply_every_key_and_the_rules_follow() {
    let env = Env::init();
    let before = settings(&env);
    // --show: every setting of the preset, what it is now, and why; nothing changes.
    let shown = env.json(&["policy", "preset", "nist-800-63b", "--show"]);
    let rows = shown.as_array().unwrap();
    assert!(rows.len() >= 8, "{shown:#}");
    for r in rows {
        assert!(!r["why"].as_str().unwrap().is_empty(), "{r}");
    }
    assert_eq!(settings(&env), before, "--show changed something");
    // Without a terminal and without --yes: refused, nothing changed.
    env.ctl(&["policy", "preset", "nist-800-63b"])
        .fails(1)
        .stderr_has("--yes");
    assert_eq!(settings(&env), before);
    // An unknown preset is a usage error.
    env.ctl(&["policy", "preset", "nist"]).fails(2);

    env.ctl(&["policy", "preset", "nist-800-63b", "--yes"]).ok();
    for r in rows {
        let key = r["key"].as_str().unwrap();
        assert_eq!(value(&env, key), r["preset"].as_str().unwrap(), "{key}");
    }
    assert_eq!(value(&env, "lockout.mode"), "smart");
    assert_eq!(value(&env, "password.min_length"), "15");
    assert_eq!(value(&env, "password.require_special"), "false");
    // Under NIST: a long passphrase without character classes is accepted; a common
    // password is refused naming the rule, even at length; a short one by its length.
    add(&env, "ann", "quiet lantern orbit meadow").ok();
    add(&env, "ben", "passwordpassword1")
        .fails(5)
        .stderr_has("Not a commonly used or breached password");
    add(&env, "cat", "Zq7#mL2!pW")
        .fails(5)
        .stderr_has("15 characters minimum");
    // The change is audited.
    let rows: Vec<Value> = env.audit(&["--event", "admin.policy.set"]);
    assert!(!rows.is_empty(), "no audit row");

    // Back to the seed: the account lockout and the character classes.
    env.ctl(&["policy", "preset", "seed", "--yes"]).ok();
    assert_eq!(value(&env, "lockout.mode"), "account");
    assert_eq!(value(&env, "password.min_length"), "8");
    assert_eq!(value(&env, "password.require_special"), "true");
    add(&env, "dan", "quiet lantern orbit meadow")
        .fails(5)
        .stderr_has("One upper-case character");
    add(&env, "dan", STRONG).ok();
}

/// Under `nist-800-63b`: no emailed codes for new enrolments (authctl refuses them, exit
/// 5), forgotten passwords by link; `seed` brings both back.
#[test]
fn nist_refuses_email_for_new_enrolments_and_recovers_by_link() {
    let env = Env::init();
    env.add_user("xan", STRONG, &[]);
    env.ctl(&["policy", "preset", "nist-800-63b", "--yes"]).ok();
    assert_eq!(value(&env, "mfa.email_enrolment"), "false");
    assert_eq!(value(&env, "password.recovery"), "link");
    let out = env.ctl(&["enroll", "xan", "--method", "email"]);
    out.fails(5);
    assert!(out.stderr.contains("mfa.email_enrolment"), "{}", out.stderr);
    env.ctl(&["enroll", "xan", "--method", "totp", "--no-qr"])
        .ok();
    env.ctl(&["policy", "preset", "seed", "--yes"]).ok();
    assert_eq!(value(&env, "mfa.email_enrolment"), "true");
    assert_eq!(value(&env, "password.recovery"), "questions");
    env.ctl(&["enroll", "xan", "--method", "email"]).ok();
}

/// NIST SP 800-63B-4 3.1.1.2 under `nist-800-63b`: 15 characters for a password that is
/// the account's only factor, 8 beside a second factor — wherever the account is known
/// when the password is chosen (authctl passwd, a one-time link, its page's checklist).
#[test]
fn nist_asks_15_characters_without_a_second_factor_and_8_with_one() {
    use crate::daemon_common::{enroll_totp, Daemon};
    use serde_json::json;
    // 12 characters, no dictionary words: long enough only beside a second factor.
    const TWELVE: &str = "vq7#Lm!x9Pz@";
    let env = Env::init();
    env.ctl(&["policy", "preset", "nist-800-63b", "--yes"]).ok();
    assert_eq!(value(&env, "password.min_length_with_second_factor"), "8");
    let shown = env.json(&["policy", "preset", "nist-800-63b", "--show"]);
    assert!(
        shown
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["key"] == "password.min_length_with_second_factor" && r["preset"] == "8"),
        "{shown:#}"
    );
    for name in ["solo", "pair"] {
        add(&env, name, "quiet lantern orbit meadow").ok();
    }
    let passwd = |name: &str, pw: &str| {
        env.ctl_stdin(&["passwd", name, "--password-stdin"], &format!("{pw}\n"))
    };
    // A new account has no second factor yet: the only factor's minimum.
    add(&env, "new", TWELVE)
        .fails(5)
        .stderr_has("15 characters minimum");
    passwd("solo", TWELVE)
        .fails(5)
        .stderr_has("15 characters minimum");
    passwd("pair", TWELVE)
        .fails(5)
        .stderr_has("15 characters minimum");
    let (mut app, _) = enroll_totp(&env, "pair");
    passwd("pair", TWELVE).ok();
    // Below 8 is refused even with a second factor.
    passwd("pair", "vq7#Lm!")
        .fails(5)
        .stderr_has("8 characters minimum");

    // A one-time link: its page's checklist shows the account's minimum, and the reset
    // applies it.
    let link = |name: &str| -> String {
        let v = env.json(&["user", "reset-link", name]);
        let url = v["url"].as_str().expect("url");
        url.split("token=").nth(1).expect("token").to_string()
    };
    let (solo, pair) = (link("solo"), link("pair"));
    let d = Daemon::start(&env, &[]);
    let page = d.get(&format!("/reset?token={solo}")).text();
    assert!(page.contains("data-min=\"15\""), "{page}");
    assert!(page.contains("15 characters minimum"), "{page}");
    let page = d.get(&format!("/reset?token={pair}")).text();
    assert!(page.contains("data-min=\"8\""), "{page}");
    assert!(page.contains("8 characters minimum"), "{page}");
    // The rules of an unknown account: the only factor's, with the shorter one named.
    let v = d.get("/v1/password/policy").expect(200);
    assert_eq!(v["min_length_with_second_factor"], 8, "{v:#}");
    let reset = |token: &str, pw: &str| {
        d.post(
            "/v1/password/reset",
            &json!({"token": token, "new_password": pw, "confirm_password": pw}),
        )
    };
    let other = "zR4!kW9@tB2#";
    let refused = reset(&solo, other).expect(422);
    assert!(
        refused.to_string().contains("15 characters minimum"),
        "{refused}"
    );
    reset(&pair, other).expect(200);
    // The refusal left the link usable: a long enough password goes through.
    reset(&solo, "quiet lantern orbit meadow river").expect(200);

    // Signed in, the live checklist is the account's: beside its second factor, 8.
    let session = d.login_totp("pair", other, &mut app);
    let check = |token: Option<&str>| {
        let body = json!({"password": TWELVE});
        match token {
            Some(t) => d.post_auth("/v1/password/check", t, Some(&body)),
            None => d.post("/v1/password/check", &body),
        }
    };
    assert_eq!(check(None).expect(200)["ok"], false);
    let mine = check(Some(&session)).expect(200);
    assert_eq!(mine["ok"], true, "{mine:#}");
    assert!(
        mine.to_string().contains("8 characters minimum"),
        "{mine:#}"
    );
    let rules = d.get_auth("/v1/password/policy", &session).expect(200);
    assert!(
        rules.to_string().contains("8 characters minimum"),
        "{rules:#}"
    );
    assert!(
        rules.get("min_length_with_second_factor").is_none(),
        "{rules:#}"
    );
    // A token that is no session is refused, not answered with the general rules.
    check(Some("not-a-session")).expect_error(401, "unauthorized");
    d.get_auth("/v1/password/policy", "not-a-session")
        .expect_error(401, "unauthorized");
}
