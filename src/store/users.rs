//! Users: identity, role, status, password, lockout counters, group memberships.

use crate::sql::{params, params_from_iter, Connection, ToSql};
use serde::Serialize;

use super::{conflict_on_unique, opt, orgs};
use crate::error::{Error, Result};
use crate::kinds::{AccountStatus, MfaMethod};
use crate::lockout;
use crate::names;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Role {
    #[serde(rename = "user")]
    User,
    #[serde(rename = "org-admin")]
    OrgAdmin,
    #[serde(rename = "admin")]
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::OrgAdmin => "org-admin",
            Role::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Result<Role> {
        match s {
            "user" => Ok(Role::User),
            "org-admin" => Ok(Role::OrgAdmin),
            "admin" => Ok(Role::Admin),
            _ => Err(Error::Invalid(format!(
                "unknown role '{s}'; use user, org-admin or admin"
            ))),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub org_id: i64,
    pub org: String,
    pub role: Role,
    /// active, locked or disabled (disabled wins).
    pub status: AccountStatus,
    pub disabled: bool,
    /// When the account was locked for everyone (see [`crate::lockout`]).
    pub locked_at: Option<i64>,
    /// Timed lockout: when that lock lifts (None: until an administrator unlocks).
    pub locked_until: Option<i64>,
    /// Failures counted into the account counter.
    pub failed_attempts: i64,
    /// Smart lockout: whether unfamiliar sources are locked out, and since when.
    pub unfamiliar_locked: bool,
    pub unfamiliar_locked_at: Option<i64>,
    /// Smart lockout: failures from unfamiliar sources.
    pub unfamiliar_failures: i64,
    #[serde(skip)]
    pub lock_streak: i64,
    #[serde(skip)]
    pub last_lock_at: Option<i64>,
    /// Failed attempts the latest full sign-in reported (both counters, before it reset
    /// them).
    #[serde(skip)]
    pub last_sign_in_failures: i64,
    pub has_password: bool,
    pub password_changed_at: Option<i64>,
    pub must_change_password: bool,
    /// The enrolled second factor: totp, email, or none.
    pub mfa_method: Option<MfaMethod>,
    pub groups: Vec<String>,
    /// True when a group the user belongs to requires a second factor.
    pub group_requires_2fa: bool,
    pub created_at: i64,
    #[serde(skip)]
    pub password_hash: Option<String>,
}

const USER_SELECT: &str = "SELECT u.id, u.username, u.email, u.org_id, o.name, u.role, u.disabled,
    u.locked_at, u.failed_attempts, u.password_hash, u.password_changed_at,
    u.must_change_password, u.mfa_method, u.created_at,
    (SELECT string_agg(g.name, '\u{1f}' ORDER BY g.name_key) FROM memberships m
        JOIN groups g ON g.id=m.group_id WHERE m.user_id=u.id),
    EXISTS (SELECT 1 FROM memberships m JOIN groups g ON g.id=m.group_id
        WHERE m.user_id=u.id AND g.require_2fa=1),
    u.unfamiliar_failures, u.unfamiliar_locked_at, u.lock_until, u.lock_streak,
    u.last_lock_at, u.last_sign_in_failures
    FROM users u JOIN orgs o ON o.id=u.org_id";

fn user_row(r: &crate::sql::Row) -> crate::sql::Result<User> {
    let disabled: bool = r.get(6)?;
    let locked_at: Option<i64> = r.get(7)?;
    let role: String = r.get(5)?;
    let hash: Option<String> = r.get(9)?;
    let groups: Option<String> = r.get(14)?;
    let unfamiliar_locked_at: Option<i64> = r.get(17)?;
    Ok(User {
        id: r.get(0)?,
        username: r.get(1)?,
        email: r.get(2)?,
        org_id: r.get(3)?,
        org: r.get(4)?,
        role: Role::parse(&role).unwrap_or(Role::User),
        status: AccountStatus::of(disabled, locked_at.is_some()),
        disabled,
        locked_at,
        locked_until: r.get(18)?,
        failed_attempts: r.get(8)?,
        unfamiliar_locked: unfamiliar_locked_at.is_some(),
        unfamiliar_locked_at,
        unfamiliar_failures: r.get(16)?,
        lock_streak: r.get(19)?,
        last_lock_at: r.get(20)?,
        last_sign_in_failures: r.get(21)?,
        has_password: hash.is_some(),
        password_hash: hash,
        password_changed_at: r.get(10)?,
        must_change_password: r.get(11)?,
        mfa_method: r.get(12)?,
        created_at: r.get(13)?,
        groups: groups
            .map(|g| g.split('\u{1f}').map(str::to_string).collect())
            .unwrap_or_default(),
        group_requires_2fa: r.get(15)?,
    })
}

impl User {
    /// The account's lockout state.
    pub fn lock_state(&self) -> lockout::State {
        lockout::State {
            failed_attempts: self.failed_attempts,
            locked_at: self.locked_at,
            lock_until: self.locked_until,
            lock_streak: self.lock_streak,
            last_lock_at: self.last_lock_at,
            unfamiliar_failures: self.unfamiliar_failures,
            unfamiliar_locked_at: self.unfamiliar_locked_at,
        }
    }

    /// Whether the account is locked for everyone at `now` (a lapsed timed lock is not).
    pub fn account_locked(&self, now: i64) -> bool {
        self.lock_state().account_locked(now)
    }
}

pub struct NewUser<'a> {
    pub username: &'a str,
    pub email: &'a str,
    pub org: Option<&'a str>,
    pub groups: &'a [String],
    pub role: Role,
    /// An argon2id PHC string, already hashed (hashing is slow; callers do it outside
    /// the write transaction).
    pub password_hash: Option<String>,
    pub must_change_password: bool,
}

/// Create a user. Org and groups must exist (the default org is created on demand).
pub fn create(conn: &Connection, u: &NewUser, now: i64) -> Result<User> {
    let n = names::normalize("username", u.username)?;
    let email = names::email(u.email)?;
    let org = orgs::org_or_default(conn, u.org, now)?;
    let group_ids = u
        .groups
        .iter()
        .map(|g| orgs::get_group(conn, g).map(|g| g.id))
        .collect::<Result<Vec<_>>>()?;
    conn.execute(
        "INSERT INTO users(username, username_key, email, org_id, role, password_hash,
            password_changed_at, must_change_password, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
        params![
            n.display,
            n.key,
            email,
            org.id,
            u.role.as_str(),
            u.password_hash,
            u.password_hash.as_ref().map(|_| now),
            u.must_change_password,
            now
        ],
    )
    .map_err(|e| conflict_on_unique(e, || format!("user '{}' already exists", n.display)))?;
    let id = conn.last_insert_rowid();
    for g in group_ids {
        conn.execute(
            "INSERT INTO memberships(user_id, group_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![id, g],
        )?;
    }
    by_id(conn, id)
}

pub fn find(conn: &Connection, name: &str) -> Result<Option<User>> {
    let key = names::key_of(name);
    // Hot paths (every login, every session check) reuse their compiled statements.
    Ok(opt(conn
        .prepare_cached(&format!("{USER_SELECT} WHERE u.username_key=?1"))?
        .query_row([key], user_row))?)
}

pub fn get(conn: &Connection, name: &str) -> Result<User> {
    find(conn, name)?.ok_or_else(|| Error::not_found("user", name))
}

pub fn by_id(conn: &Connection, id: i64) -> Result<User> {
    opt(conn
        .prepare_cached(&format!("{USER_SELECT} WHERE u.id=?1"))?
        .query_row([id], user_row))?
    .ok_or_else(|| Error::NotFound(format!("user #{id} does not exist")))
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub org_id: Option<i64>,
    pub locked: bool,
    pub group_id: Option<i64>,
    pub limit: Option<i64>,
}

/// The statement of [`list`] and its parameters.
fn list_query(f: &ListFilter) -> (String, Vec<Box<dyn ToSql>>) {
    // Only the filters asked for are in the text: `?1 IS NULL OR u.org_id=?1` would keep
    // SQLite from searching the org's index (measured: 8 → 57 ms for one organisation
    // of 1,000 users among 1 M).
    let mut sql = format!("{USER_SELECT} WHERE 1=1");
    let mut args: Vec<Box<dyn ToSql>> = Vec::new();
    if let Some(org) = f.org_id {
        args.push(Box::new(org));
        sql.push_str(&format!(" AND u.org_id=?{}", args.len()));
    }
    if let Some(group) = f.group_id {
        args.push(Box::new(group));
        sql.push_str(&format!(
            " AND u.id IN (SELECT user_id FROM memberships WHERE group_id=?{})",
            args.len()
        ));
    }
    if f.locked {
        sql.push_str(" AND u.locked_at IS NOT NULL");
    }
    args.push(Box::new(f.limit.unwrap_or(i64::MAX)));
    sql.push_str(&format!(
        " ORDER BY u.org_id, u.username_key LIMIT ?{}",
        args.len()
    ));
    (sql, args)
}

pub fn list(conn: &Connection, f: &ListFilter) -> Result<Vec<User>> {
    let (sql, args) = list_query(f);
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map(params_from_iter(args.iter().map(|b| b.as_ref())), user_row)?
        .collect::<crate::sql::Result<Vec<_>>>()?;
    Ok(rows)
}

fn touch(conn: &Connection, id: i64, now: i64) -> Result<()> {
    conn.execute(
        "UPDATE users SET updated_at=?1 WHERE id=?2",
        params![now, id],
    )?;
    Ok(())
}

pub fn set_email(conn: &Connection, id: i64, email: &str, now: i64) -> Result<()> {
    let e = names::email(email)?;
    conn.execute("UPDATE users SET email=?1 WHERE id=?2", params![e, id])?;
    touch(conn, id, now)
}

pub fn set_role(conn: &Connection, id: i64, role: Role, now: i64) -> Result<()> {
    conn.execute(
        "UPDATE users SET role=?1 WHERE id=?2",
        params![role.as_str(), id],
    )?;
    touch(conn, id, now)
}

pub fn set_org(conn: &Connection, id: i64, org: &str, now: i64) -> Result<()> {
    let o = orgs::get_org(conn, org)?;
    conn.execute("UPDATE users SET org_id=?1 WHERE id=?2", params![o.id, id])?;
    touch(conn, id, now)
}

pub fn add_to_group(conn: &Connection, id: i64, group: &str) -> Result<()> {
    let g = orgs::get_group(conn, group)?;
    conn.execute(
        "INSERT INTO memberships(user_id, group_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        params![id, g.id],
    )?;
    Ok(())
}

pub fn remove_from_group(conn: &Connection, id: i64, group: &str) -> Result<()> {
    let g = orgs::get_group(conn, group)?;
    conn.execute(
        "DELETE FROM memberships WHERE user_id=?1 AND group_id=?2",
        params![id, g.id],
    )?;
    Ok(())
}

/// Disable or enable. Disabling ends the user's sessions, flows and remembered devices.
pub fn set_disabled(conn: &Connection, id: i64, disabled: bool, now: i64) -> Result<()> {
    conn.execute(
        "UPDATE users SET disabled=?1 WHERE id=?2",
        params![disabled, id],
    )?;
    if disabled {
        super::sessions::end_all_for_user(conn, id, now)?;
        super::factors::revoke_devices(conn, id, now)?;
    }
    touch(conn, id, now)
}

pub fn delete(conn: &Connection, id: i64) -> Result<()> {
    conn.execute("DELETE FROM users WHERE id=?1", [id])?;
    Ok(())
}

/// Store a new password hash. `must_change` forces a change at the next login. Ends
/// the user's sessions, pending flows and remembered devices.
pub fn set_password(
    conn: &Connection,
    id: i64,
    hash: &str,
    must_change: bool,
    now: i64,
) -> Result<()> {
    conn.execute(
        "UPDATE users SET password_hash=?1, password_changed_at=?2, must_change_password=?3,
            updated_at=?2 WHERE id=?4",
        params![hash, now, must_change, id],
    )?;
    super::sessions::end_all_for_user(conn, id, now)?;
    super::factors::revoke_devices(conn, id, now)?;
    super::email::notify(conn, id, super::email::notice::PASSWORD_CHANGED, now)?;
    Ok(())
}

/// Replace the hash only (a rehash with new parameters after a successful login).
pub fn upgrade_password_hash(conn: &Connection, id: i64, hash: &str) -> Result<()> {
    conn.execute(
        "UPDATE users SET password_hash=?1 WHERE id=?2",
        params![hash, id],
    )?;
    Ok(())
}

/// Force a password change at the next login.
pub fn expire_password(conn: &Connection, id: i64, now: i64) -> Result<()> {
    conn.execute("UPDATE users SET must_change_password=1 WHERE id=?1", [id])?;
    touch(conn, id, now)
}

/// Clear every lockout state (both counters, both locks, the timed streak) in every
/// mode. Returns whether the account or its unfamiliar sources were locked. Unlocking an
/// account locked for everyone ends its sessions (someone was guessing).
pub fn unlock(conn: &Connection, id: i64, now: i64) -> Result<bool> {
    let (account, unfamiliar): (bool, bool) = conn.query_row(
        "SELECT locked_at IS NOT NULL, unfamiliar_locked_at IS NOT NULL FROM users WHERE id=?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    conn.execute(
        "UPDATE users SET locked_at=NULL, failed_attempts=0, lock_until=NULL, lock_streak=0,
            last_lock_at=NULL, unfamiliar_failures=0, unfamiliar_locked_at=NULL, updated_at=?1
         WHERE id=?2",
        params![now, id],
    )?;
    if account {
        super::sessions::end_all_for_user(conn, id, now)?;
    }
    Ok(account || unfamiliar)
}

/// Count one failed attempt (any factor) from `source` under `settings`, and lock at the
/// limit ([`lockout::register_failure`]). Call inside the write transaction that checked
/// the attempt. A lock of the account ends its pending login flows (and, timed, its
/// sessions, which would otherwise come back when the lock lifts); every lock queues one
/// notice to the user, so notices go out at most once per lock period.
pub fn record_failure_from(
    conn: &Connection,
    id: i64,
    settings: &lockout::Settings,
    source: lockout::Source,
    now: i64,
) -> Result<lockout::FailureOutcome> {
    let before = by_id(conn, id)?.lock_state();
    let o = lockout::register_failure(before, settings, source, now);
    let s = &o.state;
    if s != &before {
        conn.execute(
            "UPDATE users SET failed_attempts=?1, locked_at=?2, lock_until=?3, lock_streak=?4,
                last_lock_at=?5, unfamiliar_failures=?6, unfamiliar_locked_at=?7 WHERE id=?8",
            params![
                s.failed_attempts,
                s.locked_at,
                s.lock_until,
                s.lock_streak,
                s.last_lock_at,
                s.unfamiliar_failures,
                s.unfamiliar_locked_at,
                id
            ],
        )?;
    }
    match o.lock {
        lockout::Lock::Account => {
            super::sessions::end_flows_for_user(conn, id)?;
            if settings.mode == lockout::Mode::Timed {
                super::sessions::end_all_for_user(conn, id, now)?;
            }
            super::email::notify(conn, id, super::email::notice::LOCKED, now)?;
        }
        lockout::Lock::Unfamiliar => {
            super::email::notify(conn, id, super::email::notice::UNFAMILIAR_LOCKED, now)?;
        }
        lockout::Lock::None => {}
    }
    Ok(o)
}

/// [`record_failure_from`] in `account` mode (the seed's one counter): whether this
/// failure locked the account.
pub fn record_failure(conn: &Connection, id: i64, max_failures: i64, now: i64) -> Result<bool> {
    let settings = lockout::Settings {
        mode: lockout::Mode::Account,
        max_failures,
        familiar_days: 0,
        duration_minutes: 0,
    };
    Ok(
        record_failure_from(conn, id, &settings, lockout::Source::Unfamiliar, now)?.lock
            == lockout::Lock::Account,
    )
}

/// A fully successful attempt: both counters reset, remembering what they held (the
/// failed attempts this sign-in reports); a lapsed timed lock is cleared. The locks
/// themselves stay (a familiar source signing in does not let strangers back in).
pub fn record_success(conn: &Connection, id: i64, now: i64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE users SET last_sign_in_failures = failed_attempts + unfamiliar_failures,
            failed_attempts=0, unfamiliar_failures=0,
            locked_at = CASE WHEN lock_until <= ?2 THEN NULL ELSE locked_at END,
            lock_until = CASE WHEN lock_until <= ?2 THEN NULL ELSE lock_until END
         WHERE id=?1 AND (failed_attempts<>0 OR unfamiliar_failures<>0
            OR last_sign_in_failures<>0 OR lock_until <= ?2)",
    )?
    .execute(params![id, now])?;
    Ok(())
}

pub fn set_mfa_method(
    conn: &Connection,
    id: i64,
    method: Option<MfaMethod>,
    now: i64,
) -> Result<()> {
    conn.execute(
        "UPDATE users SET mfa_method=?1 WHERE id=?2",
        params![method, id],
    )?;
    touch(conn, id, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_user<'a>(name: &'a str, groups: &'a [String]) -> NewUser<'a> {
        NewUser {
            username: name,
            email: "a@example.org",
            org: None,
            groups,
            role: Role::User,
            password_hash: Some("$argon2id$fake".into()),
            must_change_password: false,
        }
    }

    /// Listing one organisation or group searches an index, whatever the filters (an
    /// `?1 IS NULL OR org_id=?1` form scanned every user: 8 → 57 ms at 1 M users).
    #[test]
    fn listing_by_org_or_group_searches_an_index() {
        let conn = crate::db::open_memory().unwrap();
        for (org, group, want) in [
            (Some(1), None, "USING INDEX users_org"),
            (Some(1), Some(1), "USING INDEX users_org"),
            (None, Some(1), "memberships"),
        ] {
            let f = ListFilter {
                org_id: org,
                locked: false,
                group_id: group,
                limit: Some(10_000),
            };
            let (sql, args) = list_query(&f);
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = stmt
                .query_map(params_from_iter(args.iter().map(|b| b.as_ref())), |r| {
                    r.get::<String>(3)
                })
                .unwrap()
                .collect::<crate::sql::Result<_>>()
                .unwrap();
            let plan = plan.join("; ");
            assert!(plan.contains(want), "{org:?} {group:?}: {plan}");
            if org.is_some() {
                assert!(!plan.contains("SCAN u"), "{org:?} {group:?}: {plan}");
            }
        }
    }

    #[test]
    fn create_find_and_conflict() {
        let conn = crate::db::open_memory().unwrap();
        orgs::add_group(&conn, "pupil-data", true, 1).unwrap();
        let groups = vec!["pupil-data".to_string()];
        let u = create(&conn, &new_user("Alice", &groups), 1).unwrap();
        assert_eq!(u.username, "Alice");
        assert_eq!(u.org, "default");
        assert_eq!(u.groups, groups);
        assert!(u.group_requires_2fa);
        assert_eq!(u.status, AccountStatus::Active);
        assert_eq!(get(&conn, "ＡＬＩＣＥ").unwrap().id, u.id);
        assert!(matches!(
            create(&conn, &new_user(" alice", &[]), 1),
            Err(Error::Conflict(_))
        ));
        assert!(matches!(
            create(&conn, &new_user("bob", &["nope".into()]), 1),
            Err(Error::NotFound(_))
        ));
        assert!(
            find(&conn, "bob").unwrap().is_none(),
            "nothing half-created"
        );
    }

    #[test]
    fn lockout_counts_and_unlock() {
        let conn = crate::db::open_memory().unwrap();
        let u = create(&conn, &new_user("carol", &[]), 1).unwrap();
        for i in 1..=8 {
            assert!(!record_failure(&conn, u.id, 9, 10).unwrap(), "{i}");
        }
        record_success(&conn, u.id, 10).unwrap();
        assert_eq!(by_id(&conn, u.id).unwrap().failed_attempts, 0);
        for _ in 1..=8 {
            record_failure(&conn, u.id, 9, 10).unwrap();
        }
        assert!(record_failure(&conn, u.id, 9, 11).unwrap());
        let locked = by_id(&conn, u.id).unwrap();
        assert_eq!(locked.status, AccountStatus::Locked);
        assert_eq!(locked.locked_at, Some(11));
        assert!(
            !record_failure(&conn, u.id, 9, 12).unwrap(),
            "already locked"
        );
        assert!(unlock(&conn, u.id, 13).unwrap());
        let u2 = by_id(&conn, u.id).unwrap();
        assert_eq!((u2.status, u2.failed_attempts), (AccountStatus::Active, 0));
    }

    #[test]
    fn what_a_session_check_reads_moves_the_session_epoch() {
        let conn = crate::db::open_memory().unwrap();
        let u = create(&conn, &new_user("erin", &[]), 1).unwrap();
        let epoch = || crate::db::session_epoch(&conn).unwrap();
        let timed = lockout::Settings {
            mode: lockout::Mode::Timed,
            max_failures: 2,
            familiar_days: 30,
            duration_minutes: 15,
        };
        let e0 = epoch();
        record_failure_from(&conn, u.id, &timed, lockout::Source::Unfamiliar, 10).unwrap();
        assert_eq!(epoch(), e0, "a count alone is not read by a session check");
        record_success(&conn, u.id, 11).unwrap();
        assert!(epoch() > e0, "the failures reported at sign-in are");
        let e1 = epoch();
        record_success(&conn, u.id, 12).unwrap();
        assert!(epoch() > e1, "and their reset");
        let e2 = epoch();
        record_success(&conn, u.id, 13).unwrap();
        assert_eq!(epoch(), e2, "nothing changed");
        record_failure_from(&conn, u.id, &timed, lockout::Source::Unfamiliar, 20).unwrap();
        record_failure_from(&conn, u.id, &timed, lockout::Source::Unfamiliar, 20).unwrap();
        assert_eq!(by_id(&conn, u.id).unwrap().locked_until, Some(20 + 15 * 60));
        assert!(epoch() > e2, "a timed lock");
        // The lapsed lock cleared at the next sign-in moves it again.
        let e3 = epoch();
        record_success(&conn, u.id, 20 + 15 * 60).unwrap();
        assert!(epoch() > e3);
        assert_eq!(by_id(&conn, u.id).unwrap().locked_at, None);
    }

    #[test]
    fn mfa_method_is_stored_as_its_string_and_read_strictly() {
        let conn = crate::db::open_memory().unwrap();
        let u = create(&conn, &new_user("dave", &[]), 1).unwrap();
        assert_eq!(u.mfa_method, None);
        set_mfa_method(&conn, u.id, Some(MfaMethod::Email), 2).unwrap();
        let stored: String = conn
            .query_row("SELECT mfa_method FROM users WHERE id=?1", [u.id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(stored, "email");
        assert_eq!(
            by_id(&conn, u.id).unwrap().mfa_method,
            Some(MfaMethod::Email)
        );
        set_disabled(&conn, u.id, true, 3).unwrap();
        assert_eq!(by_id(&conn, u.id).unwrap().status, AccountStatus::Disabled);
        // A value this version does not know (the schema's CHECK bypassed): an error.
        conn.execute_batch("PRAGMA ignore_check_constraints=ON")
            .unwrap();
        conn.execute("UPDATE users SET mfa_method='sms' WHERE id=?1", [u.id])
            .unwrap();
        let e = by_id(&conn, u.id).unwrap_err();
        assert!(
            e.to_string().contains("unknown second-factor method 'sms'"),
            "{e}"
        );
    }
}
