//! In-process tests of the login state machine with an injected clock and a real
//! SQLite file (several connections, as the daemon has).

use super::*;
use crate::db::{self, Location};
use crate::kinds::AccountStatus;
use crate::password::Argon2Params;
use crate::store::users::NewUser;

const T0: i64 = 1_800_000_000;
const PW: &str = "Correct-Horse-9";

/// The hashing slots of these tests.
static H: std::sync::LazyLock<password::Hashing> =
    std::sync::LazyLock::new(password::Hashing::per_core);

struct Fx {
    _dir: tempfile::TempDir,
    loc: Location,
    key: SecretKey,
    client: Client,
}

impl Fx {
    fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::new(dir.path().join("t.db"), None);
        let (conn, key) = db::create(&loc).unwrap();
        crate::policy::set(&conn, "argon2.m_kib", "1024", 0).unwrap();
        crate::policy::set(&conn, "argon2.t", "1", 0).unwrap();
        Fx {
            _dir: dir,
            loc,
            key,
            client: Client {
                ip: "127.0.0.1".into(),
                user_agent: "test".into(),
            },
        }
    }
    fn conn(&self) -> Connection {
        db::open(&self.loc.db).unwrap()
    }
    /// The seed's lockout (one counter, locked for everyone), for the tests that count
    /// failures of a user who never signed in.
    fn account_lockout(self) -> Fx {
        crate::policy::set(&self.conn(), "lockout.mode", "account", 0).unwrap();
        self
    }
    fn user(&self, name: &str, groups: &[String], role: Role) -> User {
        let conn = self.conn();
        let hash = password::hash_password(
            &H,
            PW,
            Argon2Params {
                m_kib: 1024,
                t: 1,
                p: 1,
            },
        )
        .unwrap();
        users::create(
            &conn,
            &NewUser {
                username: name,
                email: "u@example.org",
                org: None,
                groups,
                role,
                password_hash: Some(hash),
                must_change_password: false,
            },
            T0,
        )
        .unwrap()
    }
    fn login(&self, name: &str, pw: &str, now: i64) -> Decision<Status> {
        password_step(
            &H,
            &mut self.conn(),
            &self.key,
            &self.client,
            name,
            pw,
            None,
            now,
        )
        .unwrap()
    }
    fn audit_reasons(&self, event: AuditEvent) -> Vec<String> {
        let conn = self.conn();
        crate::audit::query(
            &conn,
            &crate::audit::Filter {
                event: Some(event.as_str().into()),
                ..Default::default()
            },
        )
        .unwrap()
        .into_iter()
        .rev()
        .map(|r| {
            if r.outcome == "success" {
                "ok".to_string()
            } else {
                r.reason
            }
        })
        .collect()
    }
}

fn flow_of(s: &Status) -> String {
    match s {
        Status::SecondFactorRequired { flow, .. }
        | Status::EnrollmentRequired { flow, .. }
        | Status::TermsRequired { flow, .. }
        | Status::PasswordExpired { flow, .. } => flow.clone(),
        other => panic!("no flow in {other:?}"),
    }
}

fn code(secret_b32: &str, now: i64) -> String {
    let s = totp::parse_base32(secret_b32).unwrap();
    totp::code_at_step(&s, totp::step_of(now), totp::Algorithm::Sha1, 6)
}

#[test]
fn authenticator_journey_from_first_login_to_session() {
    let fx = Fx::new();
    crate::store::orgs::add_group(&fx.conn(), "pupil-data", true, T0).unwrap();
    fx.user("alice", &["pupil-data".into()], Role::User);

    // First login: enrolment required.
    let s = fx.login("alice", PW, T0).result.unwrap();
    assert!(matches!(s, Status::EnrollmentRequired { .. }), "{s:?}");
    let flow = flow_of(&s);
    // The enrolment flow cannot be used for a second factor.
    let skip = totp_step(
        &mut fx.conn(),
        &fx.key,
        &fx.client,
        &flow,
        "123456",
        false,
        T0,
    )
    .unwrap();
    assert!(matches!(skip.result, Err(Error::InvalidFlow)));

    let e = enroll_step(&mut fx.conn(), &fx.key, &fx.client, &flow, T0)
        .unwrap()
        .result
        .unwrap();
    // Enrolment start cannot be replayed.
    assert!(enroll_step(&mut fx.conn(), &fx.key, &fx.client, &flow, T0)
        .unwrap()
        .result
        .is_err());
    let wrong =
        enroll_confirm_step(&mut fx.conn(), &fx.key, &fx.client, &flow, "000000", T0).unwrap();
    assert!(matches!(wrong.result, Err(Error::InvalidCredentials)));
    let c = code(&e.secret, T0);
    let done = enroll_confirm_step(&mut fx.conn(), &fx.key, &fx.client, &flow, &c, T0)
        .unwrap()
        .result
        .unwrap();
    let Status::Enrolled { recovery_codes } = done else {
        panic!()
    };
    assert_eq!(recovery_codes.len(), 10);

    // Log in again: the confirming code is spent, a fresh one works.
    let s = fx.login("alice", PW, T0 + 5).result.unwrap();
    let Status::SecondFactorRequired { flow, methods, .. } = &s else {
        panic!("{s:?}")
    };
    assert_eq!(methods, &vec!["totp", "recovery_code"]);
    let replay = totp_step(&mut fx.conn(), &fx.key, &fx.client, flow, &c, false, T0 + 5).unwrap();
    assert!(
        replay.result.is_err(),
        "the enrolment code is not a login code"
    );
    assert_eq!(replay.reason, "replayed_code");
    let c2 = code(&e.secret, T0 + 30);
    let ok = totp_step(
        &mut fx.conn(),
        &fx.key,
        &fx.client,
        flow,
        &c2,
        true,
        T0 + 30,
    )
    .unwrap()
    .result
    .unwrap();
    let Status::Authenticated {
        session,
        device_token,
        ..
    } = ok
    else {
        panic!()
    };
    assert!(device_token.is_some());
    let info = check_session(&fx.conn(), &session, T0 + 31)
        .unwrap()
        .unwrap();
    assert_eq!(info.user.username, "alice");
    // The flow is spent.
    let again = totp_step(
        &mut fx.conn(),
        &fx.key,
        &fx.client,
        flow,
        &c2,
        false,
        T0 + 30,
    )
    .unwrap();
    assert!(matches!(again.result, Err(Error::InvalidFlow)));
    // Logout ends the session.
    assert!(logout(&mut fx.conn(), &fx.client, &session, T0 + 40).unwrap());
    assert!(check_session(&fx.conn(), &session, T0 + 41)
        .unwrap()
        .is_none());
}

#[test]
fn generic_failures_and_lockout() {
    let fx = Fx::new();
    fx.user("bob", &[], Role::User);
    // Unknown user and wrong password: the same error.
    let unknown = fx.login("nobody", PW, T0);
    let wrong = fx.login("bob", "Wrong-pass-1", T0);
    assert_eq!(
        unknown.result.unwrap_err().to_string(),
        wrong.result.unwrap_err().to_string()
    );
    assert_eq!(
        (unknown.reason, wrong.reason),
        ("unknown_user", "wrong_password")
    );
    // 7 more failures (8 in all), then success resets.
    for _ in 0..7 {
        fx.login("BOB", "Wrong-pass-1", T0);
    }
    assert!(fx.login("bob", PW, T0).result.is_ok());
    assert_eq!(users::get(&fx.conn(), "bob").unwrap().failed_attempts, 0);
    // 9 failures lock; the right password then gets the generic answer.
    for i in 1..=9 {
        let d = fx.login("bob", "Wrong-pass-1", T0 + i);
        assert_eq!(d.locked_now, i == 9);
    }
    let d = fx.login("bob", PW, T0 + 20);
    assert!(matches!(d.result, Err(Error::InvalidCredentials)));
    assert_eq!(d.reason, "locked");
    users::unlock(
        &fx.conn(),
        users::get(&fx.conn(), "bob").unwrap().id,
        T0 + 30,
    )
    .unwrap();
    assert!(fx.login("bob", PW, T0 + 31).result.is_ok());
    assert!(fx.audit_reasons(AuditEvent::AccountLocked).len() == 1);
}

#[test]
fn concurrent_wrong_passwords_never_pass_the_limit() {
    let fx = Fx::new().account_lockout();
    let u = fx.user("carol", &[], Role::User);
    let fx = std::sync::Arc::new(fx);
    let handles: Vec<_> = (0..40)
        .map(|i| {
            let fx = fx.clone();
            std::thread::spawn(move || fx.login("carol", &format!("Wrong-pass-{i}"), T0).reason)
        })
        .collect();
    let reasons: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let counted = reasons.iter().filter(|r| **r == "wrong_password").count();
    assert!(counted <= 9, "{counted} failures counted");
    let after = users::by_id(&fx.conn(), u.id).unwrap();
    assert_eq!(after.status, AccountStatus::Locked);
    assert_eq!(after.failed_attempts, 9);
    assert_eq!(
        fx.login("carol", PW, T0).reason,
        "locked",
        "the right password is refused too"
    );
}

#[test]
fn concurrent_submissions_of_one_code_succeed_once() {
    let fx = Fx::new();
    let u = fx.user("dave", &[], Role::User);
    let secret = totp::generate_secret();
    factors::set_totp(&fx.conn(), &fx.key, u.id, &secret, Some(T0), T0).unwrap();
    users::set_mfa_method(&fx.conn(), u.id, Some(MfaMethod::Totp), T0).unwrap();
    let c = totp::code_at_step(&secret, totp::step_of(T0), totp::Algorithm::Sha1, 6);
    // Many flows (one per login), one code.
    let flows: Vec<String> = (0..20)
        .map(|_| flow_of(&fx.login("dave", PW, T0).result.unwrap()))
        .collect();
    let fx = std::sync::Arc::new(fx);
    let handles: Vec<_> = flows
        .into_iter()
        .map(|f| {
            let fx = fx.clone();
            let c = c.clone();
            std::thread::spawn(move || {
                totp_step(&mut fx.conn(), &fx.key, &fx.client, &f, &c, false, T0)
                    .unwrap()
                    .result
                    .is_ok()
            })
        })
        .collect();
    let ok = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|b| *b)
        .count();
    assert_eq!(ok, 1);
}

#[test]
fn terms_every_login_and_once_per_version() {
    let fx = Fx::new();
    fx.user("erin", &[], Role::User);
    terms::set(&fx.conn(), "v1", "Use responsibly.", T0).unwrap();
    for _ in 0..2 {
        let s = fx.login("erin", PW, T0).result.unwrap();
        let Status::TermsRequired { flow, terms } = &s else {
            panic!("{s:?}")
        };
        assert_eq!(terms.version, "v1");
        let declined = terms_step(&mut fx.conn(), &fx.key, &fx.client, flow, false, T0).unwrap();
        assert!(declined.result.is_err());
        let s = terms_step(&mut fx.conn(), &fx.key, &fx.client, flow, true, T0)
            .unwrap()
            .result
            .unwrap();
        assert!(matches!(s, Status::Authenticated { .. }), "{s:?}");
    }
    crate::policy::set(&fx.conn(), "terms.mode", "once_per_version", T0).unwrap();
    assert!(matches!(
        fx.login("erin", PW, T0).result.unwrap(),
        Status::Authenticated { .. }
    ));
    terms::set(&fx.conn(), "v2", "New terms.", T0).unwrap();
    assert!(matches!(
        fx.login("erin", PW, T0).result.unwrap(),
        Status::TermsRequired { .. }
    ));
}

/// An expired password's step applies the account's minimum: 15 characters for a
/// password that is the only factor, 8 for one beside a second factor (here: an admin,
/// who must enrol one before any session); the checklist it shows says which.
#[test]
fn the_expired_password_step_asks_the_accounts_own_minimum() {
    let fx = Fx::new();
    fx.user("solo", &[], Role::User);
    fx.user("boss", &[], Role::OrgAdmin);
    for (k, v) in [
        ("password.max_age_days", "90"),
        ("password.min_length", "15"),
        ("password.min_length_with_second_factor", "8"),
        ("password.require_special", "false"),
    ] {
        crate::policy::set(&fx.conn(), k, v, T0).unwrap();
    }
    let later = T0 + 90 * 86_400;
    let twelve = "Twelve-Char5";
    for (name, min, accepted) in [("solo", "15", false), ("boss", "8", true)] {
        let s = fx.login(name, PW, later).result.unwrap();
        let Status::PasswordExpired { flow, policy } = &s else {
            panic!("{name}: {s:?}")
        };
        let rule = policy.iter().find(|r| r.id == "min_length").unwrap();
        assert_eq!(
            rule.description,
            format!("{min} characters minimum"),
            "{name}"
        );
        let d = expired_password_step(
            &H,
            &mut fx.conn(),
            &fx.key,
            &fx.client,
            flow,
            twelve,
            twelve,
            later,
        )
        .unwrap();
        assert_eq!(d.result.is_ok(), accepted, "{name}: {:?}", d.result);
    }
}

#[test]
fn expired_password_must_change_then_log_in_again() {
    let fx = Fx::new();
    fx.user("fay", &[], Role::User);
    crate::policy::set(&fx.conn(), "password.max_age_days", "90", T0).unwrap();
    assert!(matches!(
        fx.login("fay", PW, T0 + 89 * 86_400).result.unwrap(),
        Status::Authenticated { .. }
    ));
    let later = T0 + 90 * 86_400;
    let s = fx.login("fay", PW, later).result.unwrap();
    let Status::PasswordExpired { flow, policy } = &s else {
        panic!("{s:?}")
    };
    assert!(policy.iter().any(|r| r.id == "uppercase"));
    let step = |new: &str, confirm: &str| {
        expired_password_step(
            &H,
            &mut fx.conn(),
            &fx.key,
            &fx.client,
            flow,
            new,
            confirm,
            later,
        )
        .unwrap()
    };
    assert!(
        matches!(
            step("New-Passw0rd!", "New-Passw0rd?").result,
            Err(Error::Invalid(_))
        ),
        "mismatch"
    );
    match step("weak", "weak").result {
        Err(Error::Policy { rules, .. }) => {
            assert!(rules.iter().any(|r| !r.met && r.id == "digit"))
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(step(PW, PW).result, Err(Error::Policy { .. })),
        "must differ"
    );
    assert!(matches!(
        step("New-Passw0rd!", "New-Passw0rd!").result.unwrap(),
        Status::PasswordChanged
    ));
    assert!(
        matches!(
            step("Other-Passw0rd!", "Other-Passw0rd!").result,
            Err(Error::InvalidFlow)
        ),
        "spent"
    );
    assert!(fx.login("fay", PW, later).result.is_err());
    assert!(matches!(
        fx.login("fay", "New-Passw0rd!", later).result.unwrap(),
        Status::Authenticated { .. }
    ));
}

#[test]
fn admins_need_a_second_factor_and_recovery_codes_work_once() {
    let fx = Fx::new();
    let u = fx.user("gina", &[], Role::OrgAdmin);
    assert!(matches!(
        fx.login("gina", PW, T0).result.unwrap(),
        Status::EnrollmentRequired { .. }
    ));
    factors::set_totp(
        &fx.conn(),
        &fx.key,
        u.id,
        &totp::generate_secret(),
        Some(T0),
        T0,
    )
    .unwrap();
    users::set_mfa_method(&fx.conn(), u.id, Some(MfaMethod::Totp), T0).unwrap();
    let codes = factors::rotate_recovery_codes(&fx.conn(), &fx.key, u.id, 2, T0).unwrap();
    let flow = flow_of(&fx.login("gina", PW, T0).result.unwrap());
    let ok = recovery_step(&mut fx.conn(), &fx.key, &fx.client, &flow, &codes[0], T0).unwrap();
    assert!(ok.result.is_ok());
    let flow = flow_of(&fx.login("gina", PW, T0).result.unwrap());
    let again = recovery_step(&mut fx.conn(), &fx.key, &fx.client, &flow, &codes[0], T0).unwrap();
    assert_eq!(again.reason, "bad_recovery_code");
    let last = recovery_step(&mut fx.conn(), &fx.key, &fx.client, &flow, &codes[1], T0)
        .unwrap()
        .result
        .unwrap();
    let Status::Authenticated { warning, .. } = last else {
        panic!()
    };
    assert!(warning.unwrap().contains("last recovery code"));
}

#[test]
fn remembered_device_skips_only_the_second_factor() {
    let fx = Fx::new();
    let u = fx.user("hal", &[], Role::User);
    let secret = totp::generate_secret();
    factors::set_totp(&fx.conn(), &fx.key, u.id, &secret, Some(T0), T0).unwrap();
    users::set_mfa_method(&fx.conn(), u.id, Some(MfaMethod::Totp), T0).unwrap();
    let token = factors::remember_device(&fx.conn(), u.id, "ua", 30, T0).unwrap();
    let with = |pw: &str, now: i64| {
        password_step(
            &H,
            &mut fx.conn(),
            &fx.key,
            &fx.client,
            "hal",
            pw,
            Some(&token),
            now,
        )
        .unwrap()
        .result
    };
    assert!(matches!(
        with(PW, T0 + 10).unwrap(),
        Status::Authenticated { .. }
    ));
    assert!(with("Wrong-pass-1", T0 + 10).is_err(), "never the password");
    let expiry = T0 + 30 * 86_400;
    assert!(matches!(
        with(PW, expiry - 1).unwrap(),
        Status::Authenticated { .. }
    ));
    assert!(matches!(
        with(PW, expiry + 1).unwrap(),
        Status::SecondFactorRequired { .. }
    ));
}

#[test]
fn a_lock_ends_pending_flows() {
    let fx = Fx::new().account_lockout();
    let u = fx.user("ivy", &[], Role::User);
    factors::set_totp(
        &fx.conn(),
        &fx.key,
        u.id,
        &totp::generate_secret(),
        Some(T0),
        T0,
    )
    .unwrap();
    users::set_mfa_method(&fx.conn(), u.id, Some(MfaMethod::Totp), T0).unwrap();
    let pending = flow_of(&fx.login("ivy", PW, T0).result.unwrap());
    let flow = flow_of(&fx.login("ivy", PW, T0).result.unwrap());
    let mut locked = false;
    for _ in 0..9 {
        let d = totp_step(
            &mut fx.conn(),
            &fx.key,
            &fx.client,
            &flow,
            "000000",
            false,
            T0,
        )
        .unwrap();
        locked |= d.locked_now;
    }
    assert!(locked);
    let d = totp_step(
        &mut fx.conn(),
        &fx.key,
        &fx.client,
        &pending,
        "000000",
        false,
        T0,
    )
    .unwrap();
    assert!(matches!(d.result, Err(Error::InvalidFlow)));
    // Malformed codes are bad input, not counted.
    assert!(matches!(
        totp_step(
            &mut fx.conn(),
            &fx.key,
            &fx.client,
            &pending,
            "１２３４５６",
            false,
            T0
        ),
        Err(Error::Invalid(_))
    ));
}

fn code_in(mail: &Mail) -> String {
    mail.body
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .unwrap()
        .to_string()
}

#[test]
fn emailed_code_journey_with_remembered_device() {
    let fx = Fx::new();
    let u = fx.user("jo", &[], Role::User);
    users::set_mfa_method(&fx.conn(), u.id, Some(MfaMethod::Email), T0).unwrap();
    let d = fx.login("jo", PW, T0);
    let mail = d.mail.expect("a code to mail");
    assert_eq!(mail.to, "u@example.org");
    let Status::SecondFactorRequired { flow, methods, .. } = d.result.unwrap() else {
        panic!()
    };
    assert_eq!(methods, vec!["email_otp"]);
    let code = code_in(&mail);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let w = email_step(
        &mut fx.conn(),
        &fx.key,
        &fx.client,
        &flow,
        wrong,
        false,
        T0 + 5,
    )
    .unwrap();
    assert_eq!(w.reason, "bad_code");
    let ok = email_step(
        &mut fx.conn(),
        &fx.key,
        &fx.client,
        &flow,
        &code,
        true,
        T0 + 6,
    )
    .unwrap()
    .result
    .unwrap();
    let Status::Authenticated {
        device_token: Some(device),
        ..
    } = ok
    else {
        panic!("{ok:?}")
    };
    let with_device = |now: i64| {
        password_step(
            &H,
            &mut fx.conn(),
            &fx.key,
            &fx.client,
            "jo",
            PW,
            Some(&device),
            now,
        )
        .unwrap()
    };
    let d = with_device(T0 + 100);
    assert!(matches!(d.result.unwrap(), Status::Authenticated { .. }));
    assert!(
        d.mail.is_none(),
        "no code mailed when the device is remembered"
    );
    // 30 days and one second after it was remembered: the code is needed again.
    let d = with_device(T0 + 6 + 30 * 86_400 + 1);
    assert!(matches!(
        d.result.unwrap(),
        Status::SecondFactorRequired { .. }
    ));
    assert!(d.mail.is_some());
    // After a two-factor reset the device no longer counts (and email is no longer
    // enrolled: without a policy requiring 2FA the user logs in with a password).
    factors::reset_2fa(&fx.conn(), u.id, T0 + 200).unwrap();
    users::set_mfa_method(&fx.conn(), u.id, Some(MfaMethod::Email), T0 + 200).unwrap();
    let d = with_device(T0 + 300);
    assert!(matches!(
        d.result.unwrap(),
        Status::SecondFactorRequired { .. }
    ));
}

#[test]
fn emailed_code_resend_expiry_and_tries() {
    let fx = Fx::new();
    let u = fx.user("kim", &[], Role::User);
    users::set_mfa_method(&fx.conn(), u.id, Some(MfaMethod::Email), T0).unwrap();
    crate::policy::set(&fx.conn(), "flow.ttl_seconds", "3600", T0).unwrap();
    let d = fx.login("kim", PW, T0);
    let first = code_in(d.mail.as_ref().unwrap());
    let flow = flow_of(&d.result.unwrap());
    let soon = email_resend_step(&mut fx.conn(), &fx.key, &fx.client, &flow, T0 + 5).unwrap();
    assert!(matches!(
        soon.result,
        Err(Error::TooSoon {
            retry_after: 25,
            ..
        })
    ));
    let again = email_resend_step(&mut fx.conn(), &fx.key, &fx.client, &flow, T0 + 31).unwrap();
    let second = code_in(again.mail.as_ref().unwrap());
    if first != second {
        let old = email_step(
            &mut fx.conn(),
            &fx.key,
            &fx.client,
            &flow,
            &first,
            false,
            T0 + 32,
        )
        .unwrap();
        assert_eq!(
            old.reason, "bad_code",
            "a resend invalidates the previous code"
        );
    }
    // Expired after 10 minutes.
    let late = email_step(
        &mut fx.conn(),
        &fx.key,
        &fx.client,
        &flow,
        &second,
        false,
        T0 + 31 + 600,
    )
    .unwrap();
    assert_eq!(late.reason, "expired_code");
    // A code from another flow is refused.
    let d2 = fx.login("kim", PW, T0 + 700);
    let other = code_in(d2.mail.as_ref().unwrap());
    let flow2 = flow_of(&d2.result.unwrap());
    let d3 = fx.login("kim", PW, T0 + 700);
    let flow3 = flow_of(&d3.result.unwrap());
    let cross = email_step(
        &mut fx.conn(),
        &fx.key,
        &fx.client,
        &flow3,
        &other,
        false,
        T0 + 701,
    )
    .unwrap();
    assert!(cross.result.is_err());
    // Five wrong tries, then even the right code is refused.
    let wrong = if other == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..5 {
        email_step(
            &mut fx.conn(),
            &fx.key,
            &fx.client,
            &flow2,
            wrong,
            false,
            T0 + 702,
        )
        .unwrap();
    }
    let sixth = email_step(
        &mut fx.conn(),
        &fx.key,
        &fx.client,
        &flow2,
        &other,
        false,
        T0 + 703,
    )
    .unwrap();
    assert_eq!(sixth.reason, "too_many_tries");
}

#[test]
fn forgotten_password_through_security_questions() {
    use crate::forgot::{self, QuestionAnswer};
    let fx = Fx::new().account_lockout();
    let u = fx.user("lee", &[], Role::User);
    let secret = totp::generate_secret();
    factors::set_totp(&fx.conn(), &fx.key, u.id, &secret, Some(T0), T0).unwrap();
    users::set_mfa_method(&fx.conn(), u.id, Some(MfaMethod::Totp), T0).unwrap();
    let policy = Policy::load(&fx.conn()).unwrap();
    let qa = vec![
        QuestionAnswer {
            question: "First pet?".into(),
            answer: "Fluffy the Cat".into(),
        },
        QuestionAnswer {
            question: "Home town?".into(),
            answer: "Leeds".into(),
        },
    ];
    let prepared = forgot::prepare_questions(&H, &qa, &policy).unwrap();
    forgot::store_questions(&mut fx.conn(), &fx.client, u.id, &prepared, T0).unwrap();
    assert!(
        forgot::prepare_questions(&H, &qa[..1], &policy).is_err(),
        "at least two"
    );

    let real = forgot::forgot(&mut fx.conn(), &fx.key, &fx.client, "lee", T0)
        .unwrap()
        .result
        .unwrap();
    assert_eq!(real.questions, vec!["First pet?", "Home town?"]);
    let fake = forgot::forgot(&mut fx.conn(), &fx.key, &fx.client, "nobody", T0)
        .unwrap()
        .result
        .unwrap();
    assert_eq!(fake.flow.len(), real.flow.len());
    assert_eq!(
        fake.questions,
        forgot::forgot(&mut fx.conn(), &fx.key, &fx.client, "nobody", T0)
            .unwrap()
            .result
            .unwrap()
            .questions
    );
    let reset = |flow: &str, answers: &[&str], pw: &str| {
        let answers: Vec<String> = answers.iter().map(|s| s.to_string()).collect();
        forgot::reset(&H, &mut fx.conn(), &fx.client, flow, &answers, pw, pw, T0)
    };
    let wrong = reset(&real.flow, &["fluffy the cat", "York"], "Brand-New-Pass1").unwrap();
    assert_eq!(wrong.reason, "wrong_answers");
    assert_eq!(users::by_id(&fx.conn(), u.id).unwrap().failed_attempts, 1);
    let decoy = reset(&fake.flow, &["a", "b"], "Brand-New-Pass1").unwrap();
    assert_eq!(
        decoy.result.unwrap_err().to_string(),
        wrong.result.unwrap_err().to_string(),
        "a decoy flow fails exactly like wrong answers"
    );
    assert!(matches!(
        reset(&real.flow, &["x", "y"], "weak"),
        Err(Error::Policy { .. })
    ));
    let ok = reset(
        &real.flow,
        &["  FLUFFY the   cat", "leeds"],
        "Brand-New-Pass1",
    )
    .unwrap();
    assert!(matches!(ok.result.unwrap(), Status::PasswordChanged));
    // The new password works, and the second factor is still asked.
    assert!(fx.login("lee", PW, T0 + 1).result.is_err());
    let s = fx.login("lee", "Brand-New-Pass1", T0 + 1).result.unwrap();
    assert!(matches!(s, Status::SecondFactorRequired { .. }), "{s:?}");
    // Wrong answers lock at the limit.
    let f = forgot::forgot(&mut fx.conn(), &fx.key, &fx.client, "lee", T0 + 2)
        .unwrap()
        .result
        .unwrap();
    let mut locked = false;
    for _ in 0..9 {
        locked |= reset(&f.flow, &["no", "no"], "Other-New-Pass1")
            .map(|d| d.locked_now)
            .unwrap_or(false);
    }
    assert!(locked);
    assert_eq!(
        users::by_id(&fx.conn(), u.id).unwrap().status,
        AccountStatus::Locked
    );
}

// ---- Smart and timed lockout (src/lockout.rs) ----

const HOME: &str = "203.0.113.5";

impl Fx {
    fn login_from(
        &self,
        ip: &str,
        name: &str,
        pw: &str,
        device: Option<&str>,
        now: i64,
    ) -> Decision<Status> {
        self.login_with(&H, ip, name, pw, device, now)
    }
    #[allow(clippy::too_many_arguments)]
    fn login_with(
        &self,
        h: &password::Hashing,
        ip: &str,
        name: &str,
        pw: &str,
        device: Option<&str>,
        now: i64,
    ) -> Decision<Status> {
        let client = Client {
            ip: ip.into(),
            user_agent: "test".into(),
        };
        password_step(
            h,
            &mut self.conn(),
            &self.key,
            &client,
            name,
            pw,
            device,
            now,
        )
        .unwrap()
    }
    fn user_now(&self, name: &str) -> User {
        users::get(&self.conn(), name).unwrap()
    }
    fn failure_sources(&self) -> Vec<(String, String)> {
        crate::audit::query(&self.conn(), &crate::audit::Filter::default())
            .unwrap()
            .into_iter()
            .rev()
            .filter(|r| r.outcome == "failure")
            .map(|r| {
                let d: serde_json::Value = serde_json::from_str(&r.detail).unwrap_or_default();
                (r.reason, d["source"].as_str().unwrap_or("").to_string())
            })
            .collect()
    }
}

fn is_authenticated(d: &Decision<Status>) -> bool {
    matches!(d.result, Ok(Status::Authenticated { .. }))
}

#[test]
fn smart_lockout_locks_out_unfamiliar_sources_only() {
    let fx = Fx::new();
    fx.user("sam", &[], Role::User);
    // The owner signed in once from home: that /24 is familiar for 30 days.
    assert!(is_authenticated(&fx.login_from(HOME, "sam", PW, None, T0)));
    // 9 wrong passwords from a stranger's address lock out unfamiliar sources.
    for i in 1..=9 {
        let d = fx.login_from("192.0.2.1", "sam", "Wrong-pass-1", None, T0 + i);
        assert_eq!((d.reason, d.locked_now), ("wrong_password", i == 9), "{i}");
    }
    let u = fx.user_now("sam");
    assert!(u.unfamiliar_locked);
    assert_eq!((u.unfamiliar_failures, u.failed_attempts), (9, 0));
    assert_eq!(
        u.status,
        AccountStatus::Active,
        "the account itself is not locked"
    );
    // A 10th guess from a new address is refused before argon2: even the right password,
    // and this Hashing instance never ran a hash.
    let fresh = password::Hashing::new(1);
    let d = fx.login_with(&fresh, "198.51.100.1", "sam", PW, None, T0 + 20);
    assert_eq!(d.reason, "unfamiliar_locked");
    assert!(matches!(d.result, Err(Error::InvalidCredentials)));
    assert_eq!(fresh.peak(), 0, "the password was not evaluated");
    assert_eq!(fx.user_now("sam").unfamiliar_failures, 9, "not counted");
    // The owner from another address of the home /24 signs in, and is told.
    let d = fx.login_from("203.0.113.77", "sam", PW, None, T0 + 30);
    let Ok(Status::Authenticated {
        session,
        failed_attempts_since_last_sign_in,
        ..
    }) = d.result
    else {
        panic!("{:?}", d.result)
    };
    assert_eq!(failed_attempts_since_last_sign_in, 9);
    let info = check_session(&fx.conn(), &session, T0 + 31)
        .unwrap()
        .unwrap();
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["failed_attempts_since_last_sign_in"], 9, "{json}");
    // Strangers stay locked out after the owner's sign-in.
    assert_eq!(
        fx.login_from("198.51.100.1", "sam", PW, None, T0 + 32)
            .reason,
        "unfamiliar_locked"
    );
    // The audit rows say which source each failure came from.
    let rows = fx.failure_sources();
    assert_eq!(
        rows.iter()
            .filter(|r| r.0 == "wrong_password" && r.1 == "unfamiliar")
            .count(),
        9
    );
    assert_eq!(
        rows.iter().filter(|r| r.0 == "unfamiliar_locked").count(),
        2
    );
    // Familiar failures count into the account counter, which locks for everyone.
    for i in 1..=9 {
        let d = fx.login_from(HOME, "sam", "Wrong-pass-1", None, T0 + 40 + i);
        assert_eq!(d.locked_now, i == 9);
    }
    assert_eq!(fx.user_now("sam").status, AccountStatus::Locked);
    assert_eq!(
        fx.login_from(HOME, "sam", PW, None, T0 + 60).reason,
        "locked"
    );
    assert_eq!(fx.audit_reasons(AuditEvent::AccountLocked).len(), 2);
    // An admin unlock clears both.
    let id = fx.user_now("sam").id;
    assert!(users::unlock(&fx.conn(), id, T0 + 70).unwrap());
    let u = fx.user_now("sam");
    assert!(!u.unfamiliar_locked && u.locked_at.is_none());
    assert_eq!((u.failed_attempts, u.unfamiliar_failures), (0, 0));
    assert!(is_authenticated(&fx.login_from(
        "198.51.100.1",
        "sam",
        PW,
        None,
        T0 + 71
    )));
}

#[test]
fn smart_lockout_familiarity_ends_and_account_mode_ignores_it() {
    let fx = Fx::new();
    fx.user("uma", &[], Role::User);
    assert!(is_authenticated(&fx.login_from(HOME, "uma", PW, None, T0)));
    // After lockout.familiar_days the home network is unfamiliar again.
    let later = T0 + 31 * 86_400;
    for _ in 0..9 {
        fx.login_from(HOME, "uma", "Wrong-pass-1", None, later);
    }
    let u = fx.user_now("uma");
    assert_eq!((u.unfamiliar_failures, u.failed_attempts), (9, 0));
    assert_eq!(
        fx.login_from(HOME, "uma", PW, None, later).reason,
        "unfamiliar_locked"
    );
    // In account mode the unfamiliar lock means nothing and every failure is the account's.
    crate::policy::set(&fx.conn(), "lockout.mode", "account", 0).unwrap();
    assert!(is_authenticated(&fx.login_from(
        "192.0.2.9",
        "uma",
        PW,
        None,
        later
    )));
    for i in 1..=9 {
        let d = fx.login_from("192.0.2.9", "uma", "Wrong-pass-1", None, later + i);
        assert_eq!(d.locked_now, i == 9);
    }
    assert_eq!(fx.user_now("uma").status, AccountStatus::Locked);
    assert_eq!(
        fx.login_from(HOME, "uma", PW, None, later + 20).reason,
        "locked"
    );
}

#[test]
fn smart_lockout_second_factor_steps_keep_their_source() {
    let fx = Fx::new();
    let u = fx.user("val", &[], Role::User);
    let secret = totp::generate_secret();
    factors::set_totp(&fx.conn(), &fx.key, u.id, &secret, Some(T0), T0).unwrap();
    users::set_mfa_method(&fx.conn(), u.id, Some(MfaMethod::Totp), T0).unwrap();
    let s32 = totp::secret_base32(&secret);
    let client = |ip: &str| Client {
        ip: ip.into(),
        user_agent: "test".into(),
    };
    let totp_from = |ip: &str, flow: &str, c: &str, remember: bool, now: i64| {
        totp_step(&mut fx.conn(), &fx.key, &client(ip), flow, c, remember, now).unwrap()
    };
    // The owner signs in at home and remembers the device.
    let flow = flow_of(&fx.login_from(HOME, "val", PW, None, T0).result.unwrap());
    let Ok(Status::Authenticated { device_token, .. }) =
        totp_from(HOME, &flow, &code(&s32, T0), true, T0).result
    else {
        panic!()
    };
    let device = device_token.unwrap();
    // A replay of that spent code from the familiar network counts as unfamiliar.
    let flow = flow_of(&fx.login_from(HOME, "val", PW, None, T0 + 1).result.unwrap());
    assert_eq!(
        totp_from(HOME, &flow, &code(&s32, T0), false, T0 + 1).reason,
        "replayed_code"
    );
    let u = fx.user_now("val");
    assert_eq!((u.unfamiliar_failures, u.failed_attempts), (1, 0));
    // A flow opened from an unfamiliar address (the password is known to the attacker).
    let stranger = flow_of(
        &fx.login_from("192.0.2.50", "val", PW, None, T0 + 2)
            .result
            .unwrap(),
    );
    // Wrong codes in that flow count as unfamiliar, and lock out unfamiliar sources.
    let mut locked = false;
    for i in 0..8 {
        let d = totp_from("192.0.2.51", &stranger, "000000", false, T0 + 3 + i);
        assert_eq!(d.reason, "bad_code");
        locked |= d.locked_now;
    }
    assert!(locked);
    let u = fx.user_now("val");
    assert!(u.unfamiliar_locked);
    assert_eq!((u.unfamiliar_failures, u.failed_attempts), (9, 0));
    // The flow now fails before its code is looked at: even the right code is refused,
    // whatever address sends it.
    let now = T0 + 120;
    let d = totp_from(HOME, &stranger, &code(&s32, now), false, now);
    assert_eq!(d.reason, "unfamiliar_locked");
    // The owner on the remembered device, from a network never used, still signs in.
    let d = fx.login_from("198.51.100.7", "val", PW, Some(&device), now);
    assert!(is_authenticated(&d), "{:?}", d.result);
    // So does the owner at home, with the second factor (the same code: it was not spent).
    let flow = flow_of(&fx.login_from(HOME, "val", PW, None, now).result.unwrap());
    assert!(is_authenticated(&totp_from(
        HOME,
        &flow,
        &code(&s32, now),
        false,
        now
    )));
    // Familiar factor failures go to the account counter.
    let flow = flow_of(
        &fx.login_from(HOME, "val", PW, None, now + 30)
            .result
            .unwrap(),
    );
    totp_from(HOME, &flow, "000000", false, now + 30);
    let u = fx.user_now("val");
    assert_eq!((u.unfamiliar_failures, u.failed_attempts), (0, 1));
    let rows = fx.failure_sources();
    assert_eq!(
        rows.iter()
            .filter(|r| r.0 == "bad_code" && r.1 == "unfamiliar")
            .count(),
        8
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r.0 == "bad_code" && r.1 == "familiar")
            .count(),
        1
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r.0 == "replayed_code" && r.1 == "unfamiliar")
            .count(),
        1
    );
}

#[test]
fn smart_lockout_concurrent_guesses_from_many_addresses_stop_at_the_limit() {
    let fx = std::sync::Arc::new(Fx::new());
    fx.user("wes", &[], Role::User);
    let handles: Vec<_> = (0..60)
        .map(|i| {
            let fx = fx.clone();
            std::thread::spawn(move || {
                let ip = format!("192.0.{}.{}", i % 20, 1 + i / 20);
                fx.login_from(&ip, "wes", &format!("Wrong-pass-{i}"), None, T0)
                    .reason
            })
        })
        .collect();
    let reasons: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        reasons.iter().filter(|r| **r == "wrong_password").count(),
        9,
        "{reasons:?}"
    );
    assert!(reasons
        .iter()
        .all(|r| ["wrong_password", "unfamiliar_locked"].contains(r)));
    assert_eq!(fx.user_now("wes").unfamiliar_failures, 9);
}

#[test]
fn timed_lockout_lifts_after_the_duration_and_doubles_within_a_day() {
    let fx = Fx::new();
    crate::policy::set(&fx.conn(), "lockout.mode", "timed", 0).unwrap();
    crate::policy::set(&fx.conn(), "lockout.duration_minutes", "15", 0).unwrap();
    fx.user("xia", &[], Role::User);
    // A session from before the lock does not come back when the lock lifts.
    let Ok(Status::Authenticated { session, .. }) = fx.login_from(HOME, "xia", PW, None, T0).result
    else {
        panic!()
    };
    let lock_at = |t: i64| {
        for i in 1..=9 {
            let d = fx.login_from("192.0.2.1", "xia", "Wrong-pass-1", None, t);
            assert_eq!(d.locked_now, i == 9, "{i}");
        }
    };
    let t1 = T0 + 100;
    lock_at(t1);
    assert_eq!(fx.user_now("xia").locked_until, Some(t1 + 15 * 60));
    assert_eq!(
        fx.login_from(HOME, "xia", PW, None, t1 + 15 * 60 - 1)
            .reason,
        "locked"
    );
    assert!(check_session(&fx.conn(), &session, t1 + 15 * 60)
        .unwrap()
        .is_none());
    let d = fx.login_from(HOME, "xia", PW, None, t1 + 15 * 60);
    assert!(
        is_authenticated(&d),
        "lifted after 15 minutes: {:?}",
        d.result
    );
    assert_eq!(fx.user_now("xia").status, AccountStatus::Active);
    // The second lock within a day lasts 30 minutes.
    let t2 = t1 + 3600;
    lock_at(t2);
    assert_eq!(
        fx.login_from(HOME, "xia", PW, None, t2 + 30 * 60 - 1)
            .reason,
        "locked"
    );
    // Once lifted, failures count from zero again (the 9th locks, now for 60 minutes).
    let t3 = t2 + 30 * 60;
    lock_at(t3);
    assert_eq!(fx.user_now("xia").locked_until, Some(t3 + 60 * 60));
    assert_eq!(fx.audit_reasons(AuditEvent::AccountLocked).len(), 3);
    // One notice per lock.
    let notices: i64 = fx
        .conn()
        .query_row(
            "SELECT count(*) FROM outbox WHERE kind='account_locked'",
            (),
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(notices, 3);
    // An admin unlock clears the lock and the streak: the next lock is 15 minutes again.
    let id = fx.user_now("xia").id;
    users::unlock(&fx.conn(), id, t3 + 1).unwrap();
    lock_at(t3 + 2);
    assert_eq!(fx.user_now("xia").locked_until, Some(t3 + 2 + 15 * 60));
}
