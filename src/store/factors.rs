//! Second factors at rest: TOTP credentials (encrypted), recovery codes (keyed hashes),
//! remembered devices (hashed tokens), and the two-factor reset that removes them all
//! (passkeys too, `store::passkeys`).

use crate::sql::{params, params_from_iter, Connection};
use serde::Serialize;
use zeroize::Zeroizing;

use super::opt;
use crate::crypto::{self, SecretKey};
use crate::error::{Error, Result};
use crate::{recovery, totp};

pub(crate) fn totp_aad(user_id: i64) -> String {
    format!("totp:{user_id}")
}

/// The name of an account's first authenticator app (enrolment at sign-in, `authctl
/// enroll`, and every app from before apps had names).
pub const FIRST_APP_NAME: &str = "Authenticator app";

/// How many authenticator apps one user may have.
pub const MAX_APPS: i64 = 5;

/// A decrypted TOTP credential: one authenticator app.
pub struct TotpCredential {
    pub id: i64,
    pub name: String,
    pub secret: Zeroizing<Vec<u8>>,
    pub confirmed_at: Option<i64>,
    pub last_step: Option<i64>,
}

/// One authenticator app as listed (no secret).
#[derive(Debug, Clone, Serialize)]
pub struct TotpApp {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    pub confirmed_at: Option<i64>,
}

/// Which of a user's apps a code may match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apps {
    /// The confirmed ones (a sign-in, a re-authentication).
    Confirmed,
    /// Any, confirmed or not (confirming the first app of an enrolment).
    All,
    /// This one (confirming an added app).
    One(i64),
}

/// A code that matched: which app, and where in the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMatch {
    pub id: i64,
    pub name: String,
    pub m: totp::Match,
}

/// Store the user's first TOTP secret, replacing every app they had (their replay state
/// goes with them): enrolment at sign-in and `authctl enroll`. `confirmed_at` is None for
/// an enrolment awaiting its first code.
pub fn set_totp(
    conn: &Connection,
    key: &SecretKey,
    user_id: i64,
    secret: &[u8],
    confirmed_at: Option<i64>,
    now: i64,
) -> Result<()> {
    remove_totp(conn, user_id)?;
    insert_app(
        conn,
        key,
        user_id,
        FIRST_APP_NAME,
        secret,
        confirmed_at,
        now,
    )?;
    Ok(())
}

fn insert_app(
    conn: &Connection,
    key: &SecretKey,
    user_id: i64,
    name: &str,
    secret: &[u8],
    confirmed_at: Option<i64>,
    now: i64,
) -> Result<i64> {
    let blob = key.encrypt(secret, &totp_aad(user_id));
    // A new app starts at the user's replay state, so every app keeps the same last step.
    Ok(conn.query_row(
        "INSERT INTO totp_credentials(user_id, name, secret_enc, confirmed_at, last_step, created_at)
         VALUES (?1, ?2, ?3, ?4,
                 (SELECT max(last_step) FROM totp_credentials WHERE user_id=?1), ?5)
         RETURNING id",
        params![user_id, name, blob, confirmed_at, now],
        |r| r.get(0),
    )?)
}

/// Add an unconfirmed app named `name` (already checked for form) to the user's: its id.
/// Conflict when the user has an app of that name or already [`MAX_APPS`].
pub fn add_totp(
    conn: &Connection,
    key: &SecretKey,
    user_id: i64,
    name: &str,
    secret: &[u8],
    now: i64,
) -> Result<i64> {
    let apps = list_totp(conn, user_id)?;
    if apps.iter().any(|a| a.name == name) {
        return Err(Error::Conflict(format!(
            "you already have an authenticator app named '{name}'"
        )));
    }
    if apps.len() as i64 >= MAX_APPS {
        return Err(Error::Conflict(format!(
            "you have {MAX_APPS} authenticator apps, the most an account may have: remove one first"
        )));
    }
    insert_app(conn, key, user_id, name, secret, None, now)
}

/// Remove every TOTP app of the user (and their replay state), if any.
pub fn remove_totp(conn: &Connection, user_id: i64) -> Result<usize> {
    Ok(conn.execute("DELETE FROM totp_credentials WHERE user_id=?1", [user_id])?)
}

/// Remove one app of the user; false when the user has no app `id`.
pub fn remove_app(conn: &Connection, user_id: i64, id: i64) -> Result<bool> {
    Ok(conn.execute(
        "DELETE FROM totp_credentials WHERE id=?1 AND user_id=?2",
        params![id, user_id],
    )? == 1)
}

/// The user's authenticator apps, oldest first.
pub fn list_totp(conn: &Connection, user_id: i64) -> Result<Vec<TotpApp>> {
    let mut st = conn.prepare_cached(
        "SELECT id, name, created_at, confirmed_at FROM totp_credentials
         WHERE user_id=?1 ORDER BY id",
    )?;
    let rows = st
        .query_map([user_id], |r| {
            Ok(TotpApp {
                id: r.get(0)?,
                name: r.get(1)?,
                created_at: r.get(2)?,
                confirmed_at: r.get(3)?,
            })
        })?
        .collect::<crate::sql::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Whether the user has a confirmed authenticator app.
pub fn has_confirmed_totp(conn: &Connection, user_id: i64) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT count(*) FROM totp_credentials WHERE user_id=?1 AND confirmed_at IS NOT NULL",
        )?
        .query_row([user_id], |r| r.get::<i64>(0))?
        > 0)
}

/// The rows whose TOTP secret does not decrypt under `key` (a wrong or rotated key, a
/// damaged row), checked one by one: the users `authctl verify` reports (each once).
pub fn undecryptable_totp(conn: &Connection, key: &SecretKey) -> Result<Vec<i64>> {
    let mut st = conn.prepare("SELECT user_id, secret_enc FROM totp_credentials ORDER BY id")?;
    let mut rows = st.query(())?;
    let mut bad = Vec::new();
    while let Some(r) = rows.next()? {
        let (user_id, blob): (i64, Vec<u8>) = (r.get(0)?, r.get(1)?);
        if key.decrypt(&blob, &totp_aad(user_id)).is_err() && !bad.contains(&user_id) {
            bad.push(user_id);
        }
    }
    Ok(bad)
}

/// The user's apps with their secrets decrypted, oldest first.
pub fn get_totp(conn: &Connection, key: &SecretKey, user_id: i64) -> Result<Vec<TotpCredential>> {
    // id, name, encrypted secret, confirmed_at, last_step
    type Row = (i64, String, Vec<u8>, Option<i64>, Option<i64>);
    let rows: Vec<Row> = conn
        .prepare_cached(
            "SELECT id, name, secret_enc, confirmed_at, last_step FROM totp_credentials
             WHERE user_id=?1 ORDER BY id",
        )?
        .query_map([user_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<crate::sql::Result<_>>()?;
    rows.into_iter()
        .map(|(id, name, blob, confirmed_at, last_step)| {
            Ok(TotpCredential {
                id,
                name,
                secret: key.decrypt(&blob, &totp_aad(user_id))?,
                confirmed_at,
                last_step,
            })
        })
        .collect()
}

/// Mark the user's app `id` (every app of the user: None) confirmed.
pub fn confirm_totp(conn: &Connection, user_id: i64, id: Option<i64>, now: i64) -> Result<()> {
    conn.execute(
        "UPDATE totp_credentials SET confirmed_at=?1
         WHERE user_id=?2 AND (CAST(?3 AS BIGINT) IS NULL OR id=?3)",
        params![now, user_id, id],
    )?;
    Ok(())
}

/// Record that `step` was accepted for the user. Atomic replay guard, per user: succeeds
/// only if no step at or after it was accepted before on any of the user's apps (so two
/// uses of one step, of one app or two, cannot both pass, also concurrently: the update
/// and its condition are one statement in the caller's write transaction), and then
/// moves every app of the user to it.
pub fn accept_totp_step(conn: &Connection, user_id: i64, step: i64) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE totp_credentials SET last_step=?1
             WHERE user_id=?2 AND NOT EXISTS (
                 SELECT 1 FROM totp_credentials t WHERE t.user_id=?2 AND t.last_step >= ?1)",
        )?
        .execute(params![step, user_id])?;
    Ok(n > 0)
}

/// Verify a TOTP code against the user's apps `which` and, on success, consume its step
/// for the user. Call inside a write transaction. Every app is checked (no early exit);
/// the first that matches is named. `NoMatch` when the user has no such app.
pub fn check_totp(
    conn: &Connection,
    key: &SecretKey,
    user_id: i64,
    which: Apps,
    code: &str,
    now: i64,
    skew: i64,
) -> Result<std::result::Result<AppMatch, totp::TotpError>> {
    let apps = get_totp(conn, key, user_id)?;
    // The user's replay state: the highest step accepted on any app.
    let last_step = apps.iter().filter_map(|a| a.last_step).max();
    let mut found: Option<AppMatch> = None;
    let mut replayed = false;
    for a in &apps {
        let eligible = match which {
            Apps::Confirmed => a.confirmed_at.is_some(),
            Apps::All => true,
            Apps::One(id) => a.id == id,
        };
        if !eligible {
            continue;
        }
        match totp::verify(&a.secret, code, now, skew, last_step) {
            Ok(m) if found.is_none() => {
                found = Some(AppMatch {
                    id: a.id,
                    name: a.name.clone(),
                    m,
                })
            }
            Ok(_) => {}
            Err(totp::TotpError::Replayed) => replayed = true,
            Err(_) => {}
        }
    }
    match found {
        Some(m) if accept_totp_step(conn, user_id, m.m.step)? => Ok(Ok(m)),
        Some(_) => Ok(Err(totp::TotpError::Replayed)),
        None if replayed => Ok(Err(totp::TotpError::Replayed)),
        None => Ok(Err(totp::TotpError::NoMatch)),
    }
}

/// Replace the user's recovery codes with fresh ones; returns them (shown once).
pub fn rotate_recovery_codes(
    conn: &Connection,
    key: &SecretKey,
    user_id: i64,
    count: usize,
    now: i64,
) -> Result<Vec<String>> {
    conn.execute("DELETE FROM recovery_codes WHERE user_id=?1", [user_id])?;
    let codes = recovery::generate(count);
    let mut stmt = conn.prepare(
        "INSERT INTO recovery_codes(user_id, code_hash, created_at) VALUES (?1, ?2, ?3)",
    )?;
    for c in &codes {
        let h = recovery::hash(key, c)
            .ok_or_else(|| Error::Invalid("generated an invalid recovery code".into()))?;
        stmt.execute(params![user_id, h, now])?;
    }
    Ok(codes)
}

/// Use a recovery code: Some(remaining) if it was valid and unused (now used), None
/// otherwise. Atomic: a code can be consumed only once, also under concurrency.
pub fn use_recovery_code(
    conn: &Connection,
    key: &SecretKey,
    user_id: i64,
    code: &str,
    now: i64,
) -> Result<Option<i64>> {
    let Some(hashes) = recovery::hashes(key, code) else {
        return Ok(None);
    };
    let mut n = 0;
    for h in hashes {
        n = conn
            .prepare_cached(
                "UPDATE recovery_codes SET used_at=?1
                 WHERE id = (SELECT id FROM recovery_codes
                             WHERE user_id=?2 AND code_hash=?3 AND used_at IS NULL LIMIT 1)",
            )?
            .execute(params![now, user_id, h])?;
        if n > 0 {
            break;
        }
    }
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(remaining_recovery_codes(conn, user_id)?))
}

pub fn remaining_recovery_codes(conn: &Connection, user_id: i64) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT count(*) FROM recovery_codes WHERE user_id=?1 AND used_at IS NULL")?
        .query_row([user_id], |r| r.get(0))?)
}

#[derive(Debug, Clone, Serialize)]
pub struct Device {
    pub id: i64,
    pub user_id: i64,
    pub username: String,
    pub user_agent: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: i64,
}

/// Remember a device for `days`; returns the token (given to the client once).
pub fn remember_device(
    conn: &Connection,
    user_id: i64,
    user_agent: &str,
    days: i64,
    now: i64,
) -> Result<String> {
    let token = crypto::random_token();
    conn.execute(
        "INSERT INTO devices(user_id, token_hash, user_agent, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            user_id,
            crypto::hash_token(&token),
            user_agent.chars().take(256).collect::<String>(),
            now,
            now.saturating_add(days.saturating_mul(86_400))
        ],
    )?;
    Ok(token)
}

/// Whether `token` is a live remembered device of `user_id` at `now`; marks it used.
pub fn check_device(conn: &Connection, user_id: i64, token: &str, now: i64) -> Result<bool> {
    let n = conn.execute(
        "UPDATE devices SET last_used_at=?1
         WHERE token_hash=?2 AND user_id=?3 AND revoked_at IS NULL AND expires_at > ?1",
        params![now, crypto::hash_token(token), user_id],
    )?;
    Ok(n == 1)
}

pub fn list_devices(conn: &Connection, user_id: Option<i64>, now: i64) -> Result<Vec<Device>> {
    let (by_user, args) = super::by_user("d", &now, &user_id);
    let mut stmt = conn.prepare(&format!(
        "SELECT d.id, d.user_id, u.username, d.user_agent, d.created_at, d.last_used_at, d.expires_at
         FROM devices d JOIN users u ON u.id=d.user_id
         WHERE d.revoked_at IS NULL AND d.expires_at > ?1{by_user}
         ORDER BY d.id"
    ))?;
    let rows = stmt
        .query_map(params_from_iter(args), |r| {
            Ok(Device {
                id: r.get(0)?,
                user_id: r.get(1)?,
                username: r.get(2)?,
                user_agent: r.get(3)?,
                created_at: r.get(4)?,
                last_used_at: r.get(5)?,
                expires_at: r.get(6)?,
            })
        })?
        .collect::<crate::sql::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Revoke every remembered device of the user; returns how many. A login begun with
/// one of them may be waiting at a later step (the terms) with the second factor already
/// skipped, so the user's pending login flows end too.
pub fn revoke_devices(conn: &Connection, user_id: i64, now: i64) -> Result<usize> {
    let n = conn.execute(
        "UPDATE devices SET revoked_at=?1 WHERE user_id=?2 AND revoked_at IS NULL",
        params![now, user_id],
    )?;
    if n > 0 {
        super::sessions::end_flows_for_user(conn, user_id)?;
    }
    Ok(n)
}

/// Revoke one device by id; false if there was no such live device. Ends its owner's
/// pending login flows (see [`revoke_devices`]).
pub fn revoke_device(conn: &Connection, id: i64, now: i64) -> Result<bool> {
    let owner: Option<i64> = opt(conn.query_row(
        "SELECT user_id FROM devices WHERE id=?1 AND revoked_at IS NULL",
        [id],
        |r| r.get(0),
    ))?;
    let Some(user_id) = owner else {
        return Ok(false);
    };
    conn.execute(
        "UPDATE devices SET revoked_at=?1 WHERE id=?2 AND revoked_at IS NULL",
        params![now, id],
    )?;
    super::sessions::end_flows_for_user(conn, user_id)?;
    Ok(true)
}

/// What a two-factor reset removed.
#[derive(Debug, Clone, Serialize)]
pub struct ResetSummary {
    pub totp_removed: bool,
    pub recovery_codes_removed: usize,
    pub devices_revoked: usize,
    pub sessions_ended: usize,
    pub passkeys_removed: usize,
}

/// Remove the TOTP secret, recovery codes and remembered devices, clear the enrolled
/// method, and end sessions and flows: the user enrols again at the next login.
pub fn reset_2fa(conn: &Connection, user_id: i64, now: i64) -> Result<ResetSummary> {
    let totp_removed = remove_totp(conn, user_id)? > 0;
    let recovery_codes_removed =
        conn.execute("DELETE FROM recovery_codes WHERE user_id=?1", [user_id])?;
    let devices_revoked = revoke_devices(conn, user_id, now)?;
    let passkeys_removed = super::passkeys::remove_all(conn, user_id)?;
    conn.execute(
        "UPDATE users SET mfa_method=NULL, updated_at=?1 WHERE id=?2",
        params![now, user_id],
    )?;
    let sessions_ended = super::sessions::end_all_for_user(conn, user_id, now)?;
    super::email::notify(conn, user_id, super::email::notice::RESET_2FA, now)?;
    Ok(ResetSummary {
        totp_removed,
        recovery_codes_removed,
        devices_revoked,
        sessions_ended,
        passkeys_removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::users;

    fn setup() -> (Connection, SecretKey, i64) {
        let conn = crate::db::open_memory().unwrap();
        let u = users::create(
            &conn,
            &users::NewUser {
                username: "dave",
                email: "d@example.org",
                org: None,
                groups: &[],
                role: users::Role::User,
                password_hash: None,
                must_change_password: false,
            },
            1,
        )
        .unwrap();
        (conn, SecretKey::from_bytes([9; 32]), u.id)
    }

    #[test]
    fn totp_step_is_consumed_once() {
        let (conn, key, id) = setup();
        let secret = totp::generate_secret();
        set_totp(&conn, &key, id, &secret, Some(1), 1).unwrap();
        let now = 1_700_000_000;
        let code = totp::code_at_step(&secret, totp::step_of(now), totp::Algorithm::Sha1, 6);
        let check = |code: &str| check_totp(&conn, &key, id, Apps::Confirmed, code, now, 1);
        assert!(check(&code).unwrap().is_ok());
        assert_eq!(check(&code).unwrap(), Err(totp::TotpError::Replayed));
        // The stored secret is not the secret in clear.
        let blob: Vec<u8> = conn
            .query_row("SELECT secret_enc FROM totp_credentials", (), |r| r.get(0))
            .unwrap();
        assert!(!blob.windows(secret.len()).any(|w| w == secret.as_slice()));
    }

    fn code(secret: &[u8], step: i64) -> String {
        totp::code_at_step(secret, step, totp::Algorithm::Sha1, 6)
    }

    /// Several apps: a code of any confirmed one signs in (and names it), an unconfirmed
    /// one does not until confirmed; one success per time step per user, whichever app.
    #[test]
    fn any_confirmed_app_matches_and_a_step_is_accepted_once_per_user() {
        let (conn, key, id) = setup();
        let (one, two) = (totp::generate_secret(), totp::generate_secret());
        set_totp(&conn, &key, id, &one, Some(1), 1).unwrap();
        let now = 1_700_000_000;
        let s = totp::step_of(now);
        let check = |which: Apps, code: &str| {
            check_totp(&conn, &key, id, which, code, now, 1)
                .unwrap()
                .map(|m| (m.name, m.m.offset))
        };
        assert_eq!(
            check(Apps::Confirmed, &code(&one, s - 1)),
            Ok((FIRST_APP_NAME.to_string(), -1))
        );
        let b = add_totp(&conn, &key, id, "phone", &two, 2).unwrap();
        assert!(matches!(
            add_totp(&conn, &key, id, "phone", &two, 2),
            Err(Error::Conflict(_))
        ));
        // The new app starts at the user's replay state.
        assert_eq!(get_totp(&conn, &key, id).unwrap()[1].last_step, Some(s - 1));
        // Unconfirmed: no sign-in with it.
        assert_eq!(
            check(Apps::Confirmed, &code(&two, s)),
            Err(totp::TotpError::NoMatch)
        );
        assert_eq!(check(Apps::One(b), &code(&two, s)), Ok(("phone".into(), 0)));
        confirm_totp(&conn, id, Some(b), 3).unwrap();
        assert!(has_confirmed_totp(&conn, id).unwrap());
        // Step s is spent for the user: app one's code of that step is a replay.
        assert_eq!(
            check(Apps::Confirmed, &code(&one, s)),
            Err(totp::TotpError::Replayed)
        );
        assert_eq!(
            check(Apps::Confirmed, &code(&two, s + 1)),
            Ok(("phone".into(), 1))
        );
        assert_eq!(
            check(Apps::Confirmed, &code(&one, s + 1)),
            Err(totp::TotpError::Replayed)
        );
        // The guard itself: a step at or below the user's last is refused, whichever row.
        assert!(!accept_totp_step(&conn, id, s + 1).unwrap());
        assert!(accept_totp_step(&conn, id, s + 2).unwrap());
        let steps: Vec<Option<i64>> = get_totp(&conn, &key, id)
            .unwrap()
            .iter()
            .map(|a| a.last_step)
            .collect();
        assert_eq!(steps, vec![Some(s + 2), Some(s + 2)]);
        // At most MAX_APPS; removing one; set_totp (enrolment) replaces them all.
        for i in 3..=MAX_APPS {
            add_totp(&conn, &key, id, &format!("app {i}"), &two, 4).unwrap();
        }
        assert!(matches!(
            add_totp(&conn, &key, id, "one more", &two, 4),
            Err(Error::Conflict(_))
        ));
        assert!(remove_app(&conn, id, b).unwrap());
        assert!(!remove_app(&conn, id + 1, b).unwrap());
        assert_eq!(list_totp(&conn, id).unwrap().len() as i64, MAX_APPS - 1);
        set_totp(&conn, &key, id, &one, None, 5).unwrap();
        let apps = list_totp(&conn, id).unwrap();
        assert_eq!(apps.len(), 1);
        assert_eq!(
            (apps[0].name.as_str(), apps[0].confirmed_at),
            (FIRST_APP_NAME, None)
        );
    }

    /// A database at schema version 8 (one app per user, keyed by the user) migrates to
    /// version 9 keeping the app: its secret still decrypts, its code still signs in, its
    /// replay state stays, and it is named "Authenticator app".
    #[test]
    fn migration_9_keeps_an_existing_users_app() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v8.db");
        let key = SecretKey::from_bytes([9; 32]);
        let secret = totp::generate_secret();
        let now = 1_700_000_000;
        let s = totp::step_of(now);
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch(crate::db::SCHEMA).unwrap();
            for m in &crate::db::MIGRATIONS[..7] {
                c.execute_batch(m).unwrap();
            }
            c.pragma_update(None, "user_version", 8).unwrap();
            c.execute_batch(
                "INSERT INTO orgs(id, name, name_key, created_at) VALUES (1, 'default', 'default', 0);
                 INSERT INTO users(id, username, username_key, email, org_id, mfa_method, created_at, updated_at)
                      VALUES (7, 'vera', 'vera', 'v@example.org', 1, 'totp', 0, 0);",
            )
            .unwrap();
            c.execute(
                "INSERT INTO totp_credentials(user_id, secret_enc, confirmed_at, last_step, created_at)
                 VALUES (7, ?1, 5, ?2, 4)",
                rusqlite::params![key.encrypt(&secret, &totp_aad(7)), s - 1],
            )
            .unwrap();
        }
        let mut conn = Connection::sqlite(rusqlite::Connection::open(&path).unwrap());
        crate::db::migrate(&mut conn).unwrap();
        assert_eq!(crate::db::schema_version(&conn).unwrap(), 9);
        let apps = list_totp(&conn, 7).unwrap();
        assert_eq!(apps.len(), 1);
        assert_eq!(
            (
                apps[0].name.as_str(),
                apps[0].created_at,
                apps[0].confirmed_at
            ),
            (FIRST_APP_NAME, 4, Some(5))
        );
        let check = |step: i64| {
            check_totp(
                &conn,
                &key,
                7,
                Apps::Confirmed,
                &code(&secret, step),
                now,
                1,
            )
            .unwrap()
        };
        assert_eq!(check(s - 1), Err(totp::TotpError::Replayed));
        assert!(check(s).is_ok());
        assert!(undecryptable_totp(&conn, &key).unwrap().is_empty());
    }

    #[test]
    fn recovery_codes_once_each_and_reset() {
        let (conn, key, id) = setup();
        let codes = rotate_recovery_codes(&conn, &key, id, 10, 1).unwrap();
        assert_eq!(
            use_recovery_code(&conn, &key, id, &codes[0], 2).unwrap(),
            Some(9)
        );
        assert_eq!(
            use_recovery_code(&conn, &key, id, &codes[0], 2).unwrap(),
            None
        );
        assert_eq!(
            use_recovery_code(&conn, &key, id, "garbage", 2).unwrap(),
            None
        );
        let token = remember_device(&conn, id, "ua", 30, 100).unwrap();
        assert!(check_device(&conn, id, &token, 100 + 30 * 86_400 - 1).unwrap());
        assert!(
            !check_device(&conn, id, &token, 100 + 30 * 86_400).unwrap(),
            "expired"
        );
        assert!(
            !check_device(&conn, id + 1, &token, 101).unwrap(),
            "another user"
        );
        set_totp(&conn, &key, id, &totp::generate_secret(), Some(1), 1).unwrap();
        let s = reset_2fa(&conn, id, 200).unwrap();
        assert!(s.totp_removed);
        assert_eq!((s.recovery_codes_removed, s.devices_revoked), (10, 1));
        assert!(get_totp(&conn, &key, id).unwrap().is_empty());
        assert!(!check_device(&conn, id, &token, 201).unwrap());
    }
}
