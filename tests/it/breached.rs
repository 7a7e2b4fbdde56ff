//! Breached and common passwords (issue 14, part 3): `password.min_score` (zxcvbn) and
//! `password.breached_passwords` (a sorted list on disk), set with `authctl policy set`,
//! refuse a new password with the rule named, in authctl (exit 5) and in the API's
//! checklist (`/v1/password/policy`, `/v1/password/check`).

use std::path::Path;

use serde_json::{json, Value};

use crate::common::*;
use crate::daemon_common::Daemon;

/// Meets every character-class rule of the default policy, but is on the list.
const LISTED: &str = "Summer2024!x";

/// A Pwned-Passwords-format list (`SHA1HEX:COUNT`, sorted, CRLF) holding `LISTED` among
/// other hashes.
fn write_list(path: &Path) {
    use sha1::{Digest, Sha1};
    let mut lines: Vec<String> = (0..5000)
        .map(|i| format!("filler-{i}"))
        .chain([LISTED.to_string(), "Winter2023!y".to_string()])
        .map(|p| {
            let hex: String = Sha1::digest(p.as_bytes())
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect();
            format!("{hex}:{}", p.len())
        })
        .collect();
    lines.sort();
    std::fs::write(path, lines.join("\r\n") + "\r\n").unwrap();
}

fn not_common(rules: &Value) -> Option<bool> {
    rules
        .as_array()?
        .iter()
        .find(|r| r["id"] == "not_common")
        .map(|r| r["met"].as_bool().unwrap_or(true))
}

#[test]
fn authctl_refuses_listed_and_weak_passwords_naming_the_rule() {
    let env = Env::init();
    let list = env.path("pwned.txt");
    write_list(&list);
    let list_s = list.to_str().unwrap();

    // Bad settings are refused with the reason, and change nothing.
    env.ctl(&["policy", "set", "password.breached_passwords=pwned.txt"])
        .fails(2)
        .stderr_has("absolute path");
    let unsorted = env.path("unsorted.txt");
    std::fs::write(&unsorted, "zebra\napple\n").unwrap();
    env.ctl(&[
        "policy",
        "set",
        &format!("password.breached_passwords={}", unsorted.display()),
    ])
    .fails(2)
    .stderr_has("not sorted");
    let missing = env.path("missing.txt");
    env.ctl(&[
        "policy",
        "set",
        &format!("password.breached_passwords={}", missing.display()),
    ])
    .fails(2);
    env.ctl(&["policy", "set", "password.min_score=5"]).fails(2);
    // Without the list the password is fine.
    env.add_user("before", LISTED, &[]);

    env.ctl(&[
        "policy",
        "set",
        &format!("password.breached_passwords={}", list_s),
    ])
    .ok();
    let add = |name: &str, pw: &str| {
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
    };
    add("bob", LISTED)
        .fails(5)
        .stderr_has("Not a commonly used or breached password");
    env.ctl(&["user", "show", "bob"]).fails(3);
    let out = env.ctl_stdin(
        &[
            "--json",
            "user",
            "add",
            "bob",
            "--email",
            "x@example.org",
            "--password-stdin",
        ],
        &format!("{LISTED}\n"),
    );
    let v = out.code(5).json_error("policy_rejected");
    assert_eq!(not_common(&v["rules"]), Some(false), "{v}");
    add("bob", STRONG).ok();

    // The strength score: a password meeting every class rule but easy to guess.
    env.ctl(&["policy", "set", "password.min_score=3"]).ok();
    add("carol", "Passw0rd!")
        .fails(5)
        .stderr_has("Not a commonly used");
    add("carol", "quiet-Lantern-97-orbit").ok();
    // Turning both off removes the rule again.
    env.ctl(&["policy", "set", "password.min_score=0"]).ok();
    env.ctl(&["policy", "set", "password.breached_passwords="])
        .ok();
    add("dave", LISTED).ok();
}

#[test]
fn the_api_checklist_names_the_rule_and_checks_it() {
    let env = Env::init();
    let list = env.path("pwned.txt");
    write_list(&list);
    env.ctl(&[
        "policy",
        "set",
        &format!("password.breached_passwords={}", list.display()),
    ])
    .ok();
    let d = Daemon::start(&env, &[]);
    let policy = d.get("/v1/password/policy");
    assert_eq!(policy.status, 200, "{policy:?}");
    let ids: Vec<String> = policy.json()["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.contains(&"not_common".to_string()), "{ids:?}");

    let r = d.post("/v1/password/check", &json!({"password": LISTED}));
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(not_common(&v["rules"]), Some(false), "{v}");
    let v = d
        .post("/v1/password/check", &json!({"password": STRONG}))
        .json();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(not_common(&v["rules"]), Some(true), "{v}");

    // A list that has gone away fails closed: no new password passes until it is back.
    std::fs::remove_file(&list).unwrap();
    let v = d
        .post("/v1/password/check", &json!({"password": STRONG}))
        .json();
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(not_common(&v["rules"]), Some(false), "{v}");
}

/// `authd --breached-passwords FILE` (`AUTHD_BREACHED_PASSWORDS`, `breached_passwords` in
/// the config file): the same on-disk check as the policy key, for the passwords chosen
/// through authd; `check-config` names a missing or unsorted file, and authd will not
/// start with one.
#[test]
fn the_daemon_flag_feeds_the_same_check_and_check_config_names_bad_files() {
    use crate::daemon_common::authd_command;
    use std::time::Duration;
    let env = Env::init();
    env.add_user("erin", STRONG, &[]);
    let list = env.path("pwned.txt");
    write_list(&list);
    let unsorted = env.path("unsorted.txt");
    std::fs::write(&unsorted, "zebra-password\napple-password\n").unwrap();
    let missing = env.path("missing.txt");
    let check = |file: &Path, by_env: bool| {
        let mut cmd = if by_env {
            let mut c = authd_command(&env, &["check-config"]);
            c.env("AUTHD_BREACHED_PASSWORDS", file);
            c
        } else {
            authd_command(
                &env,
                &[
                    "check-config",
                    "--breached-passwords",
                    file.to_str().unwrap(),
                ],
            )
        };
        cmd.env("NO_COLOR", "1");
        run(cmd, None, Duration::from_secs(30))
    };
    check(&missing, false)
        .code(1)
        .stderr_has("problem: breached_passwords:")
        .stderr_has("missing.txt");
    check(&unsorted, true)
        .code(1)
        .stderr_has("problem: breached_passwords:")
        .stderr_has("not sorted");
    let good = check(&list, false);
    good.code(0);
    assert!(good.stdout.contains("pwned.txt"), "{}", good.stdout);
    // authd itself refuses to start on a bad list (a usage error, before serving).
    let out = run(
        authd_command(&env, &["--breached-passwords", unsorted.to_str().unwrap()]),
        None,
        Duration::from_secs(30),
    );
    out.code(2).stderr_has("not sorted");

    // With the flag and no policy key: the checklist and a real change refuse the
    // listed password, naming the rule.
    let d = Daemon::start(&env, &["--breached-passwords", list.to_str().unwrap()]);
    let v = d
        .post("/v1/password/check", &json!({"password": LISTED}))
        .json();
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(not_common(&v["rules"]), Some(false), "{v}");
    let session = d.login_session("erin", STRONG);
    let change = |new: &str| {
        d.post_auth(
            "/v1/password/change",
            &session,
            Some(
                &json!({"current_password": STRONG, "new_password": new, "confirm_password": new}),
            ),
        )
    };
    let refused = change(LISTED).expect(422);
    assert!(
        refused
            .to_string()
            .contains("Not a commonly used or breached password"),
        "{refused}"
    );
    change("Winter2024!z").expect(200);
}
