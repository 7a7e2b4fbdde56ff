//! Familiar sources for smart lockout ([`crate::lockout`]): the networks each user
//! completed a sign-in from, and the read-only check of a remembered-device token.

use crate::sql::{params, Connection, OptionalExtension};

use crate::crypto;
use crate::error::Result;
use crate::lockout::{self, Source};

/// How long a network's last sign-in stands before a new one is written again
/// (familiarity is counted in days).
const REFRESH_SECS: i64 = 3600;

/// Remember that `user_id` completed a sign-in from `ip`'s network at `now` (nothing when
/// `ip` is not an address), and say whether that network is new to a user who signed in
/// before (a security alert: "a new device or network"; a first sign-in is no alert).
/// One read answers both, and a network seen within the hour is not written again: a
/// repeated sign-in from a known network writes nothing.
pub fn record_sign_in(conn: &Connection, user_id: i64, ip: &str, now: i64) -> Result<bool> {
    let Some(net) = lockout::network_of(ip) else {
        return Ok(false);
    };
    let (any, last): (i64, Option<i64>) = conn
        .prepare_cached(
            "SELECT count(*), max(CASE WHEN network=?2 THEN last_at END)
               FROM sign_in_networks WHERE user_id=?1",
        )?
        .query_row(params![user_id, net], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if last.is_none_or(|at| now >= at.saturating_add(REFRESH_SECS)) {
        conn.prepare_cached(
            "INSERT INTO sign_in_networks(user_id, network, last_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(user_id, network) DO UPDATE SET last_at=excluded.last_at
             WHERE excluded.last_at >= sign_in_networks.last_at + ?4",
        )?
        .execute(params![user_id, net, now, REFRESH_SECS])?;
    }
    Ok(any > 0 && last.is_none())
}

/// Whether `user_id` completed a sign-in from `ip`'s network at or after `since`.
pub fn network_familiar(conn: &Connection, user_id: i64, ip: &str, since: i64) -> Result<bool> {
    let Some(net) = lockout::network_of(ip) else {
        return Ok(false);
    };
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM sign_in_networks WHERE user_id=?1 AND network=?2 AND last_at>=?3",
        )?
        .query_row(params![user_id, net, since], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Whether `token` is a live remembered device of `user_id` (read only; the password step
/// marks it used when it skips the second factor).
pub fn device_valid(conn: &Connection, user_id: i64, token: &str, now: i64) -> Result<bool> {
    if token.is_empty() || token.len() > 128 {
        return Ok(false);
    }
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM devices WHERE token_hash=?1 AND user_id=?2 AND revoked_at IS NULL
               AND expires_at > ?3",
        )?
        .query_row(params![crypto::hash_token(token), user_id, now], |_| Ok(()))
        .optional()?
        .is_some())
}

/// The source of an attempt on `user_id` from `ip` with an optional remembered-device
/// token: a device first, then a network of a sign-in within `familiar_days`.
pub fn source_of(
    conn: &Connection,
    user_id: i64,
    ip: &str,
    device_token: Option<&str>,
    familiar_days: i64,
    now: i64,
) -> Result<Source> {
    if let Some(t) = device_token {
        if device_valid(conn, user_id, t, now)? {
            return Ok(Source::Device);
        }
    }
    let since = now.saturating_sub(familiar_days.saturating_mul(lockout::DAY));
    if network_familiar(conn, user_id, ip, since)? {
        return Ok(Source::Network);
    }
    Ok(Source::Unfamiliar)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::users::{self, NewUser, Role, User};

    /// A user `name` without a password, in a fresh database.
    fn user(conn: &Connection, name: &str) -> User {
        users::create(
            conn,
            &NewUser {
                username: name,
                email: &format!("{name}@example.org"),
                org: None,
                groups: &[],
                role: Role::User,
                password_hash: None,
                must_change_password: false,
            },
            1,
        )
        .unwrap()
    }

    #[test]
    fn networks_and_devices() {
        let conn = crate::db::open_memory().unwrap();
        let u = user(&conn, "nia");
        let t = 1_000 * lockout::DAY;
        assert_eq!(
            source_of(&conn, u.id, "192.0.2.7", None, 30, t).unwrap(),
            Source::Unfamiliar
        );
        // The first sign-in's network is no alert; another network then is, once.
        assert!(!record_sign_in(&conn, u.id, "192.0.2.7", t).unwrap());
        assert!(!record_sign_in(&conn, u.id, "not an address", t).unwrap());
        assert!(record_sign_in(&conn, u.id, "2001:db8:0:1::5", t).unwrap());
        assert!(!record_sign_in(&conn, u.id, "2001:db8:0:1::6", t).unwrap());
        for (ip, at, want) in [
            ("192.0.2.200", t + 30 * lockout::DAY, Source::Network),
            ("192.0.2.200", t + 30 * lockout::DAY + 1, Source::Unfamiliar),
            ("192.0.3.7", t, Source::Unfamiliar),
            ("2001:db8:0:1:ffff::1", t, Source::Network),
            ("2001:db8:0:2::5", t, Source::Unfamiliar),
            ("not an address", t, Source::Unfamiliar),
        ] {
            assert_eq!(
                source_of(&conn, u.id, ip, None, 30, at).unwrap(),
                want,
                "{ip} at {at}"
            );
        }
        let dev = crate::store::factors::remember_device(&conn, u.id, "ua", 30, t).unwrap();
        assert_eq!(
            source_of(&conn, u.id, "198.51.100.1", Some(&dev), 30, t).unwrap(),
            Source::Device
        );
        assert_eq!(
            source_of(&conn, u.id, "198.51.100.1", Some("forged"), 30, t).unwrap(),
            Source::Unfamiliar
        );
        assert_eq!(
            source_of(
                &conn,
                u.id,
                "198.51.100.1",
                Some(&dev),
                30,
                t + 31 * lockout::DAY
            )
            .unwrap(),
            Source::Unfamiliar,
            "an expired device is not familiar"
        );
    }

    /// A network's last sign-in is written again only once the hour has passed, and a
    /// repeated sign-in within it writes nothing at all.
    #[test]
    fn a_known_network_is_refreshed_hourly_and_not_written_between() {
        let conn = crate::db::open_memory().unwrap();
        let u = user(&conn, "ola");
        let last = || -> i64 {
            conn.query_row(
                "SELECT last_at FROM sign_in_networks WHERE user_id=?1",
                params![u.id],
                |r| r.get(0),
            )
            .unwrap()
        };
        let t = 1_000 * lockout::DAY;
        assert!(!record_sign_in(&conn, u.id, "192.0.2.7", t).unwrap());
        let total = || -> i64 {
            conn.query_row("SELECT total_changes()", (), |r| r.get(0))
                .unwrap()
        };
        let changes = |f: &dyn Fn()| {
            let before = total();
            f();
            total() - before
        };
        assert_eq!(
            changes(&|| assert!(!record_sign_in(&conn, u.id, "192.0.2.8", t + 3599).unwrap())),
            0,
            "within the hour nothing is written"
        );
        assert_eq!(last(), t);
        assert_eq!(
            changes(&|| assert!(!record_sign_in(&conn, u.id, "192.0.2.9", t + 3600).unwrap())),
            1
        );
        assert_eq!(last(), t + 3600);
    }
}
