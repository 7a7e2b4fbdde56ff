//! The closed sets of names that the database, the JSON answers and the audit log share:
//! account status, second-factor method, login-flow step and audit event.
//!
//! Each is an enum with exactly one string per variant. The string is the stable form:
//! it is what the database stores and what JSON carries, byte for byte, so renaming one
//! is a schema and API change (the tests below pin today's strings). Every enum has
//! `as_str`, `Display`, `FromStr` and `TryFrom<&str>` (an unknown string is an
//! [`UnknownName`], never a panic or a default), serde `Serialize` / `Deserialize` with
//! the same strings, and rusqlite `ToSql` / `FromSql`, so the store converts at its
//! boundary: a row holding an unknown string reads as an error.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// A string that names no variant of the set it was read as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    /// What was being read ("second-factor method"…).
    pub kind: &'static str,
    /// The string, cut to 64 characters.
    pub value: String,
    /// The accepted strings (empty when there are too many to list usefully).
    pub expected: Vec<&'static str>,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} '{}'", self.kind, self.value)?;
        if !self.expected.is_empty() {
            write!(f, "; use {}", self.expected.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownName {}

impl From<UnknownName> for crate::error::Error {
    fn from(e: UnknownName) -> Self {
        crate::error::Error::Invalid(e.to_string())
    }
}

/// An enum of names: the variants with their stable strings, and every conversion.
macro_rules! names {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($kind:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $s:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable string (database, JSON, audit log).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $s,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err(UnknownName {
                        kind: $kind,
                        value: s.chars().take(64).collect(),
                        expected: if Self::ALL.len() <= 8 {
                            Self::ALL.iter().map(|v| v.as_str()).collect()
                        } else {
                            Vec::new()
                        },
                    }),
                }
            }
        }

        impl TryFrom<&str> for $name {
            type Error = UnknownName;
            fn try_from(s: &str) -> Result<Self, UnknownName> {
                s.parse()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // `pad`, so widths and alignment (`{:<24}`) apply.
                f.pad(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
                v.as_str()?
                    .parse()
                    .map_err(|e: UnknownName| FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

names! {
    /// Whether an account may log in: `active`, `locked` (too many failures; an admin
    /// unlocks it) or `disabled` (by an admin). Derived from the `disabled` and
    /// `locked_at` columns, see [`AccountStatus::of`]; shown in user listings and JSON.
    pub enum AccountStatus ("account status") {
        Active = "active",
        Locked = "locked",
        Disabled = "disabled",
    }
}

impl AccountStatus {
    /// The status of an account with these flags: disabled wins over locked.
    pub fn of(disabled: bool, locked: bool) -> AccountStatus {
        if disabled {
            AccountStatus::Disabled
        } else if locked {
            AccountStatus::Locked
        } else {
            AccountStatus::Active
        }
    }
}

names! {
    /// A second factor a user enrols (`users.mfa_method`) or an organisation makes its
    /// users' default (`orgs.mfa_method`).
    pub enum MfaMethod ("second-factor method") {
        /// An authenticator app (RFC 6238 codes).
        Totp = "totp",
        /// One-time codes sent by email.
        Email = "email",
    }
}

names! {
    /// The one step a login-flow token may perform (`login_flows.step`): the steps of the
    /// login state machine (`login.rs`) and the forgotten-password reset (`forgot.rs`).
    pub enum LoginStep ("login step") {
        /// Accept the current terms and conditions.
        Terms = "terms",
        /// Replace an expired password.
        PasswordChange = "password_change",
        /// Start enrolling an authenticator app.
        Enroll = "enroll",
        /// Confirm the enrolment with a first code.
        EnrollConfirm = "enroll_confirm",
        /// A TOTP, emailed or recovery code.
        SecondFactor = "second_factor",
        /// Answer the security questions and set a new password.
        Forgot = "forgot",
        /// Set a new password through an emailed or admin-issued one-time link.
        ResetLink = "reset_link",
        /// A signed-in session's re-authentication by an emailed code: the flow's token
        /// is never given out; the flow is found by its session (`data`).
        Reauth = "reauth",
    }
}

names! {
    /// What an audit row records (`audit.event`). Login steps and the user's own actions
    /// are written by the library; `admin.*` by authctl (the OS user as actor) and by
    /// authd's admin API and portal (the admin as actor).
    pub enum AuditEvent ("audit event") {
        LoginPassword = "login.password",
        LoginTerms = "login.terms",
        LoginPasswordChange = "login.password_change",
        LoginEnroll = "login.enroll",
        LoginEnrollConfirm = "login.enroll_confirm",
        LoginTotp = "login.totp",
        LoginRecovery = "login.recovery",
        LoginEmail = "login.email",
        LoginEmailResend = "login.email_resend",
        /// A passkey assertion: second factor (detail `mode`) or passwordless sign-in.
        LoginPasskey = "login.passkey",
        /// A passkey challenge issued (register, enroll, second factor, passwordless).
        PasskeyChallenge = "passkey.challenge",
        /// A user registered a passkey (portal / API, or enrolment in a login).
        PasskeyRegister = "passkey.register",
        PasskeyRename = "passkey.rename",
        PasskeyRemove = "passkey.remove",
        /// A passkey's signature counter went backwards: possibly a cloned authenticator.
        PasskeyCloneSuspected = "passkey.clone_suspected",
        /// A counted failure locked the account.
        AccountLocked = "account.locked",
        /// The last recovery code was used.
        RecoveryExhausted = "recovery.exhausted",
        SessionLogout = "session.logout",
        /// A signed-in user changed their password.
        PasswordChange = "password.change",
        PasswordForgot = "password.forgot",
        PasswordReset = "password.reset",
        SecurityQuestionsSet = "security_questions.set",
        /// A user forgot one of their remembered devices (portal).
        DeviceRevoke = "device.revoke",
        /// A signed-in user confirmed their password and second factor again.
        SecurityReauth = "security.reauth",
        SecurityReauthCode = "security.reauth_code",
        /// A signed-in user ended one of their own sessions (or all others).
        SessionRevoke = "session.revoke",
        /// A signed-in user replaced their recovery codes.
        RecoveryRegenerate = "recovery.regenerate",
        /// A signed-in user removed their authenticator app.
        FactorRemove = "factor.remove",
        /// A signed-in user added an authenticator app (unconfirmed until its first code).
        TotpAdd = "totp.add",
        /// A signed-in user confirmed an added authenticator app with its code.
        TotpConfirm = "totp.confirm",
        /// A signed-in user removed one of their authenticator apps.
        TotpRemove = "totp.remove",
        AdminInit = "admin.init",
        AdminUserAdd = "admin.user.add",
        AdminUserSet = "admin.user.set",
        AdminUserShow = "admin.user.show",
        AdminUserDisable = "admin.user.disable",
        AdminUserEnable = "admin.user.enable",
        AdminUserDelete = "admin.user.delete",
        AdminPasswd = "admin.passwd",
        AdminPasswdExpire = "admin.passwd.expire",
        AdminEnroll = "admin.enroll",
        AdminTotpTest = "admin.totp_test",
        AdminReset2fa = "admin.reset_2fa",
        AdminPasskeyList = "admin.passkey.list",
        AdminPasskeyRemove = "admin.passkey.remove",
        AdminUnlock = "admin.unlock",
        AdminDeviceRevoke = "admin.device.revoke",
        AdminSessionRevoke = "admin.session.revoke",
        AdminOrgAdd = "admin.org.add",
        AdminOrgDelete = "admin.org.delete",
        AdminGroupAdd = "admin.group.add",
        AdminGroupSet = "admin.group.set",
        AdminGroupDelete = "admin.group.delete",
        AdminPolicySet = "admin.policy.set",
        AdminTermsSet = "admin.terms.set",
        AdminQuestionsSet = "admin.questions.set",
        AdminResetLink = "admin.reset_link",
        AdminImport = "admin.import",
        AdminBackup = "admin.backup",
        /// `authctl db copy`: the site copied into PostgreSQL (recorded in the copy).
        AdminDbCopy = "admin.db.copy",
        AdminAuditPrune = "admin.audit.prune",
        AdminKeyRotate = "admin.key.rotate",
        AdminKeyRetire = "admin.key.retire",
        /// OpenID Connect (src/oidc.rs): client administration and key rotation,
        AdminClientAdd = "admin.client.add",
        AdminClientRemove = "admin.client.remove",
        AdminClientRotateSecret = "admin.client.rotate_secret",
        AdminOidcRotateKeys = "admin.oidc.rotate_keys",
        /// a code issued, or an authorization refused,
        OidcAuthorize = "oidc.authorize",
        /// consent given to a client,
        OidcConsent = "oidc.consent",
        /// tokens issued (code exchange, refresh), or refused,
        OidcToken = "oidc.token",
        /// a refused userinfo request, revocation, refused introspection, RP logout.
        OidcUserinfo = "oidc.userinfo",
        OidcRevoke = "oidc.revoke",
        OidcIntrospect = "oidc.introspect",
        OidcLogout = "oidc.logout",
        /// A second factor asked of a signed-in session for a client's `acr_values`.
        OidcStepUp = "oidc.step_up",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant round-trips through its string (as_str / FromStr / TryFrom /
    /// Display / serde / SQLite); the strings are exactly `today`; others are refused.
    fn check<T>(today: &[&str], unknown: &[&str])
    where
        T: Copy
            + Eq
            + fmt::Debug
            + fmt::Display
            + FromStr<Err = UnknownName>
            + for<'a> TryFrom<&'a str, Error = UnknownName>
            + serde::Serialize
            + serde::de::DeserializeOwned
            + ToSql
            + FromSql,
        T: Named,
    {
        let all = T::all();
        let strings: Vec<&str> = all.iter().map(|v| v.name()).collect();
        assert_eq!(
            strings, today,
            "the stored strings changed: that is a schema and API change"
        );
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for &v in all {
            let s = v.name();
            assert_eq!(s.parse::<T>(), Ok(v));
            assert_eq!(T::try_from(s), Ok(v));
            assert_eq!(v.to_string(), s);
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, serde_json::to_string(s).unwrap());
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), v);
            let (stored, back): (String, T) = conn
                .query_row("SELECT ?1, ?1", [v], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap();
            assert_eq!((stored.as_str(), back), (s, v));
        }
        for &u in unknown {
            let e = u.parse::<T>().unwrap_err();
            assert_eq!(e.value, u);
            assert!(e.to_string().contains(&format!("'{u}'")), "{e}");
            assert!(T::try_from(u).is_err());
            assert!(serde_json::from_str::<T>(&serde_json::to_string(u).unwrap()).is_err());
            let read: rusqlite::Result<T> = conn.query_row("SELECT ?1", [u], |r| r.get(0));
            assert!(
                matches!(read, Err(rusqlite::Error::FromSqlConversionFailure(..))),
                "{u}: {read:?}"
            );
        }
        let e: crate::Error = "nope".parse::<T>().unwrap_err().into();
        assert_eq!(e.code(), "invalid_input");
    }

    /// Lets [`check`] reach the macro's inherent items generically.
    trait Named: Sized + 'static {
        fn all() -> &'static [Self];
        fn name(self) -> &'static str;
    }
    macro_rules! named {
        ($($t:ty),+) => {$(
            impl Named for $t {
                fn all() -> &'static [Self] { <$t>::ALL }
                fn name(self) -> &'static str { self.as_str() }
            }
        )+};
    }
    named!(AccountStatus, MfaMethod, LoginStep, AuditEvent);

    #[test]
    fn account_status() {
        check::<AccountStatus>(
            &["active", "locked", "disabled"],
            &["", "Active", "enabled", " locked", "lock"],
        );
        assert_eq!(AccountStatus::of(false, false), AccountStatus::Active);
        assert_eq!(AccountStatus::of(false, true), AccountStatus::Locked);
        assert_eq!(AccountStatus::of(true, true), AccountStatus::Disabled);
        assert_eq!(AccountStatus::of(true, false), AccountStatus::Disabled);
        assert_eq!(format!("[{:<8}]", AccountStatus::Locked), "[locked  ]");
    }

    #[test]
    fn mfa_method() {
        check::<MfaMethod>(
            &["totp", "email"],
            &["", "TOTP", "email_otp", "recovery_code", "sms", "totp\0"],
        );
        assert_eq!(
            "sms".parse::<MfaMethod>().unwrap_err().to_string(),
            "unknown second-factor method 'sms'; use totp, email"
        );
    }

    #[test]
    fn login_step() {
        check::<LoginStep>(
            &[
                "terms",
                "password_change",
                "enroll",
                "enroll_confirm",
                "second_factor",
                "forgot",
                "reset_link",
                "reauth",
            ],
            &["", "Terms", "password", "totp", "second-factor", "session"],
        );
    }

    #[test]
    fn audit_event() {
        check::<AuditEvent>(
            &[
                "login.password",
                "login.terms",
                "login.password_change",
                "login.enroll",
                "login.enroll_confirm",
                "login.totp",
                "login.recovery",
                "login.email",
                "login.email_resend",
                "login.passkey",
                "passkey.challenge",
                "passkey.register",
                "passkey.rename",
                "passkey.remove",
                "passkey.clone_suspected",
                "account.locked",
                "recovery.exhausted",
                "session.logout",
                "password.change",
                "password.forgot",
                "password.reset",
                "security_questions.set",
                "device.revoke",
                "security.reauth",
                "security.reauth_code",
                "session.revoke",
                "recovery.regenerate",
                "factor.remove",
                "totp.add",
                "totp.confirm",
                "totp.remove",
                "admin.init",
                "admin.user.add",
                "admin.user.set",
                "admin.user.show",
                "admin.user.disable",
                "admin.user.enable",
                "admin.user.delete",
                "admin.passwd",
                "admin.passwd.expire",
                "admin.enroll",
                "admin.totp_test",
                "admin.reset_2fa",
                "admin.passkey.list",
                "admin.passkey.remove",
                "admin.unlock",
                "admin.device.revoke",
                "admin.session.revoke",
                "admin.org.add",
                "admin.org.delete",
                "admin.group.add",
                "admin.group.set",
                "admin.group.delete",
                "admin.policy.set",
                "admin.terms.set",
                "admin.questions.set",
                "admin.reset_link",
                "admin.import",
                "admin.backup",
                "admin.db.copy",
                "admin.audit.prune",
                "admin.key.rotate",
                "admin.key.retire",
                "admin.client.add",
                "admin.client.remove",
                "admin.client.rotate_secret",
                "admin.oidc.rotate_keys",
                "oidc.authorize",
                "oidc.consent",
                "oidc.token",
                "oidc.userinfo",
                "oidc.revoke",
                "oidc.introspect",
                "oidc.logout",
                "oidc.step_up",
            ],
            &[
                "",
                "login.",
                "login.*",
                "admin",
                "LOGIN.PASSWORD",
                "login.password ",
            ],
        );
        let long = "x".repeat(500);
        assert_eq!(long.parse::<AuditEvent>().unwrap_err().value.len(), 64);
    }
}
