//! Second factors at rest: TOTP credentials (encrypted), recovery codes (keyed hashes),
//! remembered devices (hashed tokens), and the two-factor reset that removes them all
//! (passkeys too, `store::passkeys`).

use crate::sql::{params, Connection};
use serde::Serialize;
use zeroize::Zeroizing;

use super::opt;
use crate::crypto::{self, SecretKey};
use crate::error::{Error, Result};
use crate::{recovery, totp};

pub(crate) fn totp_aad(user_id: i64) -> String {
    format!("totp:{user_id}")
}

/// A decrypted TOTP credential.
pub struct TotpCredential {
    pub secret: Zeroizing<Vec<u8>>,
    pub confirmed_at: Option<i64>,
    pub last_step: Option<i64>,
}

/// Store a new TOTP secret for the user, replacing any previous one (its replay state
/// goes with it). `confirmed_at` is None for an enrolment awaiting its first code.
pub fn set_totp(
    conn: &Connection,
    key: &SecretKey,
    user_id: i64,
    secret: &[u8],
    confirmed_at: Option<i64>,
    now: i64,
) -> Result<()> {
    let blob = key.encrypt(secret, &totp_aad(user_id));
    conn.execute(
        "INSERT INTO totp_credentials(user_id, secret_enc, confirmed_at, last_step, created_at)
         VALUES (?1, ?2, ?3, NULL, ?4)
         ON CONFLICT(user_id) DO UPDATE SET secret_enc=excluded.secret_enc,
            confirmed_at=excluded.confirmed_at, last_step=NULL, created_at=excluded.created_at",
        params![user_id, blob, confirmed_at, now],
    )?;
    Ok(())
}

/// Remove the user's TOTP secret (and its replay state), if any.
pub fn remove_totp(conn: &Connection, user_id: i64) -> Result<()> {
    conn.execute("DELETE FROM totp_credentials WHERE user_id=?1", [user_id])?;
    Ok(())
}

/// The users whose TOTP secret does not decrypt under `key` (a wrong or rotated key, a
/// damaged row), checked one by one: what `authctl verify` reports.
pub fn undecryptable_totp(conn: &Connection, key: &SecretKey) -> Result<Vec<i64>> {
    let mut st =
        conn.prepare("SELECT user_id, secret_enc FROM totp_credentials ORDER BY user_id")?;
    let mut rows = st.query(())?;
    let mut bad = Vec::new();
    while let Some(r) = rows.next()? {
        let (user_id, blob): (i64, Vec<u8>) = (r.get(0)?, r.get(1)?);
        if key.decrypt(&blob, &totp_aad(user_id)).is_err() {
            bad.push(user_id);
        }
    }
    Ok(bad)
}

pub fn get_totp(
    conn: &Connection,
    key: &SecretKey,
    user_id: i64,
) -> Result<Option<TotpCredential>> {
    let row: Option<(Vec<u8>, Option<i64>, Option<i64>)> = opt(conn
        .prepare_cached(
            "SELECT secret_enc, confirmed_at, last_step FROM totp_credentials WHERE user_id=?1",
        )?
        .query_row([user_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))))?;
    row.map(|(blob, confirmed_at, last_step)| {
        Ok(TotpCredential {
            secret: key.decrypt(&blob, &totp_aad(user_id))?,
            confirmed_at,
            last_step,
        })
    })
    .transpose()
}

pub fn confirm_totp(conn: &Connection, user_id: i64, now: i64) -> Result<()> {
    conn.execute(
        "UPDATE totp_credentials SET confirmed_at=?1 WHERE user_id=?2",
        params![now, user_id],
    )?;
    Ok(())
}

/// Record that `step` was accepted. Atomic replay guard: succeeds only if no step at or
/// after it was accepted before, so two concurrent uses of one code cannot both pass.
pub fn accept_totp_step(conn: &Connection, user_id: i64, step: i64) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE totp_credentials SET last_step=?1
             WHERE user_id=?2 AND (last_step IS NULL OR last_step < ?1)",
        )?
        .execute(params![step, user_id])?;
    Ok(n == 1)
}

/// Verify a TOTP code for the user and, on success, consume its step. Call inside a
/// write transaction. Err(InvalidCredentials) when there is no confirmed credential.
pub fn check_totp(
    conn: &Connection,
    key: &SecretKey,
    user_id: i64,
    code: &str,
    now: i64,
    skew: i64,
) -> Result<std::result::Result<totp::Match, totp::TotpError>> {
    let Some(cred) = get_totp(conn, key, user_id)? else {
        return Ok(Err(totp::TotpError::NoMatch));
    };
    match totp::verify(&cred.secret, code, now, skew, cred.last_step) {
        Ok(m) => {
            if accept_totp_step(conn, user_id, m.step)? {
                Ok(Ok(m))
            } else {
                Ok(Err(totp::TotpError::Replayed))
            }
        }
        Err(e) => Ok(Err(e)),
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
    let mut stmt = conn.prepare(
        "SELECT d.id, d.user_id, u.username, d.user_agent, d.created_at, d.last_used_at, d.expires_at
         FROM devices d JOIN users u ON u.id=d.user_id
         WHERE d.revoked_at IS NULL AND d.expires_at > ?1 AND (CAST(?2 AS BIGINT) IS NULL OR d.user_id=?2)
         ORDER BY d.id",
    )?;
    let rows = stmt
        .query_map(params![now, user_id], |r| {
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
    let totp_removed =
        conn.execute("DELETE FROM totp_credentials WHERE user_id=?1", [user_id])? > 0;
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
        assert!(check_totp(&conn, &key, id, &code, now, 1).unwrap().is_ok());
        assert_eq!(
            check_totp(&conn, &key, id, &code, now, 1).unwrap(),
            Err(totp::TotpError::Replayed)
        );
        // The stored secret is not the secret in clear.
        let blob: Vec<u8> = conn
            .query_row("SELECT secret_enc FROM totp_credentials", (), |r| r.get(0))
            .unwrap();
        assert!(!blob.windows(secret.len()).any(|w| w == secret.as_slice()));
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
        assert!(get_totp(&conn, &key, id).unwrap().is_none());
        assert!(!check_device(&conn, id, &token, 201).unwrap());
    }
}
