//! Property tests over the core's input handling: whatever a client or an admin types,
//! nothing panics, and normalisation is stable. (Bounded: proptest's default case count,
//! fixed in `proptest.toml`-free config below so the suite stays fast.)

use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn usernames_normalise_stably(raw in "\\PC{0,80}") {
        if let Ok(n) = crate::names::normalize("username", &raw) {
            // The key of a normalised name is itself, and the display form normalises to
            // the same key.
            prop_assert_eq!(crate::names::key_of(&n.key), n.key.clone());
            prop_assert_eq!(crate::names::normalize("username", &n.display).unwrap().key, n.key);
            prop_assert!(n.display.chars().count() <= crate::names::MAX_NAME_CHARS);
        }
        let _ = crate::names::email(&raw);
    }

    #[test]
    fn any_bytes_as_names_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let s = String::from_utf8_lossy(&bytes);
        let _ = crate::names::normalize("username", &s);
        let _ = crate::names::key_of(&s);
    }

    #[test]
    fn totp_accepts_only_six_ascii_digits(code in "\\PC{0,12}", now in 0i64..4_000_000_000) {
        let secret = [7u8; 20];
        match crate::totp::verify(&secret, &code, now, 1, None) {
            Err(crate::totp::TotpError::Malformed) => {}
            _ => {
                let digits: String = code.trim().chars().filter(|c| *c != ' ').collect();
                prop_assert!(digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()), "{:?}", code);
            }
        }
        let _ = crate::totp::find_offset(&secret, &code, now, 10);
    }

    #[test]
    fn recovery_codes_and_answers_never_panic(s in "\\PC{0,64}") {
        if let Some(n) = crate::recovery::normalize(&s) {
            prop_assert_eq!(crate::recovery::normalize(&n), Some(n.clone()));
        }
        let a = crate::forgot::normalize_answer(&s);
        prop_assert_eq!(crate::forgot::normalize_answer(&a), a);
    }

    #[test]
    fn times_policies_and_passwords_never_panic(s in "\\PC{0,40}", k in 0usize..30) {
        let _ = crate::util::parse_time(&s, 1_800_000_000);
        let key = crate::policy::KEYS[k % crate::policy::KEYS.len()].key;
        let _ = crate::policy::validate(key, &s);
        let policy = crate::password::PasswordPolicy::default();
        let checks = policy.check(&s);
        prop_assert_eq!(checks.len(), policy.rules().len());
    }
}
