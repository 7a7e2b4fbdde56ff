//! Admin actions on users, decided here for every door alike: the JSON API, the portal's
//! org-admin page and authctl call these same functions, so who may see whom (tenancy),
//! who may manage whom (roles), what an action does and the audit row it leaves are
//! written once.
//!
//! - **Tenancy**: an org admin sees their organisation's users only; another org's user is
//!   exactly as missing as a user that does not exist (`None`), and the attempt is audited
//!   (reason `other_org`, or `unknown_user`).
//! - **Roles**: org admins manage plain users only; admin and org-admin accounts are
//!   managed by admins (refused `Forbidden`, audited `insufficient_role`). The operator at
//!   the server (authctl, who can read the database file anyway) manages everyone.
//! - **One transaction**: the lookup, the checks, the action and its audit row commit
//!   together or not at all.

use crate::sql::Connection;
use serde_json::json;

use crate::audit::{self, Entry, Outcome};
use crate::error::{Error, Result};
use crate::kinds::AuditEvent;
use crate::login::{Client, SessionInfo};
use crate::store::factors::{self, ResetSummary};
use crate::store::users::{self, Role, User};

/// Which front end an action came through (the `via` of its audit row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Api,
    Portal,
    Authctl,
}

impl Door {
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Api => "api",
            Door::Portal => "portal",
            Door::Authctl => "authctl",
        }
    }
}

/// Who acts: a signed-in admin or org admin (API, portal), or the operator at the server.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The name the audit log shows as actor.
    pub name: String,
    /// The acting account (None for the operator).
    pub user_id: Option<i64>,
    /// The acting account's organisation (None for the operator).
    pub org_id: Option<i64>,
    /// The organisation an org admin is confined to (None: every organisation).
    pub org_scope: Option<i64>,
    /// Admins and the operator manage every role; org admins plain users only.
    pub manages_admins: bool,
    pub client: Option<Client>,
    pub door: Door,
}

impl Actor {
    /// A signed-in account. Err for a plain user: only admins and org admins act here.
    pub fn session(s: &SessionInfo, client: &Client, door: Door) -> Result<Actor> {
        if s.role == Role::User {
            return Err(Error::Forbidden(
                "this needs an org-admin or admin account".into(),
            ));
        }
        Ok(Actor {
            name: s.user.username.clone(),
            user_id: Some(s.user_id),
            org_id: Some(s.org_id),
            org_scope: (s.role != Role::Admin).then_some(s.org_id),
            manages_admins: s.role == Role::Admin,
            client: Some(client.clone()),
            door,
        })
    }

    /// The operator at the server (authctl): every user, every role.
    pub fn operator(name: &str) -> Actor {
        Actor {
            name: name.to_string(),
            user_id: None,
            org_id: None,
            org_scope: None,
            manages_admins: true,
            client: None,
            door: Door::Authctl,
        }
    }

    /// An audit row of this actor: actor, client, `via` and the acting account's id.
    pub fn entry(&self, event: AuditEvent, outcome: Outcome) -> Entry {
        let mut e = Entry::new(event, outcome).actor(&self.name);
        if let Some(c) = &self.client {
            e = e.client(&c.ip, &c.user_agent);
        }
        if self.org_id.is_some() {
            e = e.org(self.org_id);
        }
        e.detail(self.detail(json!({})))
    }

    /// `d` with this actor's `via` and acting account's id added.
    pub(crate) fn detail(&self, mut d: serde_json::Value) -> serde_json::Value {
        d["via"] = json!(self.door.as_str());
        if let Some(id) = self.user_id {
            d["admin_id"] = json!(id);
        }
        d
    }
}

/// Find `name` as `actor` may see it; None (audited under `event`) when it does not
/// exist or belongs to another organisation.
pub(crate) fn visible_user(
    conn: &Connection,
    actor: &Actor,
    event: AuditEvent,
    name: &str,
    now: i64,
) -> Result<Option<User>> {
    match users::find(conn, name)? {
        Some(u) if actor.org_scope.is_none_or(|org| u.org_id == org) => Ok(Some(u)),
        other => {
            let reason = if other.is_some() {
                "other_org"
            } else {
                "unknown_user"
            };
            audit::record(
                conn,
                &actor
                    .entry(event, Outcome::Failure)
                    .username(name)
                    .reason(reason),
                now,
            )?;
            Ok(None)
        }
    }
}

/// The users `actor` may see (their organisation's; everyone for an admin).
pub fn list_users(conn: &Connection, actor: &Actor, locked: bool) -> Result<Vec<User>> {
    users::list(
        conn,
        &users::ListFilter {
            org_id: actor.org_scope,
            locked,
            group_id: None,
            limit: Some(10_000),
        },
    )
}

/// One user as `actor` may see them (a refusal audited as `admin.user.show`).
pub fn show_user(
    conn: &mut Connection,
    actor: &Actor,
    name: &str,
    now: i64,
) -> Result<Option<User>> {
    let tx = crate::db::write_tx(conn)?;
    let u = visible_user(&tx, actor, AuditEvent::AdminUserShow, name, now)?;
    tx.commit()?;
    Ok(u)
}

/// The refusal of an action on `u` that the actor's role does not allow, audited.
fn refuse_role(
    tx: &Connection,
    actor: &Actor,
    event: AuditEvent,
    u: &User,
    now: i64,
) -> Result<()> {
    audit::record(
        tx,
        &actor
            .entry(event, Outcome::Failure)
            .username(&u.username)
            .user(u.id, u.org_id)
            .reason("insufficient_role"),
        now,
    )?;
    Ok(())
}

/// One action on `name` in one transaction: find the user as `actor` may see them (None
/// when not visible), refuse accounts the actor may not manage, apply `act` (its value
/// and what to audit besides the actor's `via` and id; it may update the user it is
/// given, whose organisation the audit row then names), and audit `event`. A
/// `Forbidden` from `act` undoes what it did and is audited (`insufficient_role`).
pub(crate) fn action<T>(
    conn: &mut Connection,
    actor: &Actor,
    event: AuditEvent,
    name: &str,
    now: i64,
    act: impl FnOnce(&Connection, &mut User) -> Result<(T, serde_json::Value)>,
) -> Result<Option<(User, T)>> {
    let mut tx = crate::db::write_tx(conn)?;
    let Some(u) = visible_user(&tx, actor, event, name, now)? else {
        tx.commit()?;
        return Ok(None);
    };
    if !actor.manages_admins && u.role != Role::User {
        refuse_role(&tx, actor, event, &u, now)?;
        tx.commit()?;
        return Err(Error::Forbidden(
            "org admins manage plain users only; an admin manages admin and org-admin accounts"
                .into(),
        ));
    }
    let mut u = u;
    let acted = {
        let sp = tx.savepoint()?;
        let r = act(&sp, &mut u);
        if r.is_ok() {
            sp.commit()?;
        }
        r
    };
    let (value, detail) = match acted {
        Ok(v) => v,
        Err(e @ Error::Forbidden(_)) => {
            refuse_role(&tx, actor, event, &u, now)?;
            tx.commit()?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    audit::record(
        &tx,
        &actor
            .entry(event, Outcome::Success)
            .username(&u.username)
            .user(u.id, u.org_id)
            .detail(actor.detail(detail)),
        now,
    )?;
    tx.commit()?;
    Ok(Some((u, value)))
}

/// Clear `name`'s lockout (audited `admin.unlock` with whether they were locked and how
/// many failures were cleared): the user as they were, and whether they were locked.
pub fn unlock(
    conn: &mut Connection,
    actor: &Actor,
    name: &str,
    now: i64,
) -> Result<Option<(User, bool)>> {
    action(conn, actor, AuditEvent::AdminUnlock, name, now, |tx, u| {
        let was_locked = users::unlock(tx, u.id, now)?;
        Ok((
            was_locked,
            json!({"was_locked": was_locked, "failed_attempts": u.failed_attempts}),
        ))
    })
}

/// Remove `name`'s second factor — TOTP secret, recovery codes, remembered devices, and
/// their sessions (audited `admin.reset_2fa` with what was removed).
pub fn reset_2fa(
    conn: &mut Connection,
    actor: &Actor,
    name: &str,
    now: i64,
) -> Result<Option<(User, ResetSummary)>> {
    action(
        conn,
        actor,
        AuditEvent::AdminReset2fa,
        name,
        now,
        |tx, u| {
            let s = factors::reset_2fa(tx, u.id, now)?;
            let detail = json!({"removed": s});
            Ok((s, detail))
        },
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::orgs;
    use crate::store::users::NewUser;

    const T: i64 = 1_700_000_000;

    fn user(conn: &Connection, name: &str, org: &str, role: Role) -> User {
        let u = users::create(
            conn,
            &NewUser {
                username: name,
                email: "x@example.org",
                org: Some(org),
                groups: &[],
                role,
                password_hash: Some("$argon2id$fake".into()),
                must_change_password: false,
            },
            T,
        )
        .unwrap();
        for _ in 0..3 {
            users::record_failure(conn, u.id, 9, T).unwrap();
        }
        u
    }

    /// An org admin of `of`'s organisation, signed in as `of`.
    pub(crate) fn org_admin(of: &User) -> Actor {
        Actor {
            name: of.username.clone(),
            user_id: Some(of.id),
            org_id: Some(of.org_id),
            org_scope: Some(of.org_id),
            manages_admins: false,
            client: Some(Client {
                ip: "192.0.2.1".into(),
                user_agent: "test".into(),
            }),
            door: Door::Portal,
        }
    }

    fn last_row(conn: &Connection) -> audit::Row {
        let rows = audit::query(
            conn,
            &audit::Filter {
                limit: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
        rows.into_iter().next().expect("an audit row")
    }

    fn setup() -> (Connection, User, User, User) {
        let conn = crate::db::open_memory().unwrap();
        orgs::add_org(&conn, "school", None, T).unwrap();
        orgs::add_org(&conn, "other", None, T).unwrap();
        let boss = user(&conn, "boss", "school", Role::OrgAdmin);
        let pupil = user(&conn, "pupil", "school", Role::User);
        let stranger = user(&conn, "stranger", "other", Role::User);
        (conn, boss, pupil, stranger)
    }

    #[test]
    fn every_door_unlocks_and_audits_alike() {
        let (mut conn, boss, pupil, _) = setup();
        let doors = [org_admin(&boss), Actor::operator("root")];
        for actor in doors {
            for _ in 0..2 {
                users::record_failure(&conn, pupil.id, 9, T).unwrap();
            }
            let before = users::get(&conn, "pupil").unwrap().failed_attempts;
            let (u, was_locked) = unlock(&mut conn, &actor, "pupil", T).unwrap().unwrap();
            assert_eq!((u.id, was_locked), (pupil.id, false));
            assert_eq!(users::get(&conn, "pupil").unwrap().failed_attempts, 0);
            let row = last_row(&conn);
            assert_eq!(
                (row.event.as_str(), row.outcome.as_str(), row.actor.as_str()),
                ("admin.unlock", "success", actor.name.as_str())
            );
            let d: serde_json::Value = serde_json::from_str(&row.detail).unwrap();
            assert_eq!(d["failed_attempts"], before, "{d}");
            assert_eq!(d["was_locked"], false);
            assert_eq!(d["via"], actor.door.as_str());
            assert_eq!(d["admin_id"].as_i64(), actor.user_id);
        }
    }

    #[test]
    fn org_admins_see_their_organisation_only() {
        let (mut conn, boss, _, stranger) = setup();
        let actor = org_admin(&boss);
        assert!(show_user(&mut conn, &actor, "pupil", T).unwrap().is_some());
        for (name, reason) in [("stranger", "other_org"), ("ghost", "unknown_user")] {
            assert!(show_user(&mut conn, &actor, name, T).unwrap().is_none());
            assert_eq!(last_row(&conn).reason, reason);
            assert!(unlock(&mut conn, &actor, name, T).unwrap().is_none());
            assert!(reset_2fa(&mut conn, &actor, name, T).unwrap().is_none());
            let row = last_row(&conn);
            assert_eq!(
                (row.outcome.as_str(), row.reason.as_str()),
                ("failure", reason)
            );
        }
        assert_eq!(users::get(&conn, "stranger").unwrap().failed_attempts, 3);
        let names: Vec<String> = list_users(&conn, &actor, false)
            .unwrap()
            .into_iter()
            .map(|u| u.username)
            .collect();
        assert_eq!(names.len(), 2);
        assert!(!names.contains(&stranger.username));
        assert_eq!(
            list_users(&conn, &Actor::operator("root"), false)
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn org_admins_manage_plain_users_only() {
        let (mut conn, boss, _, _) = setup();
        let peer = user(&conn, "peer", "school", Role::OrgAdmin);
        let actor = org_admin(&boss);
        assert!(matches!(
            unlock(&mut conn, &actor, "peer", T),
            Err(Error::Forbidden(_))
        ));
        assert_eq!(last_row(&conn).reason, "insufficient_role");
        assert_eq!(users::get(&conn, "peer").unwrap().failed_attempts, 3);
        assert!(matches!(
            reset_2fa(&mut conn, &actor, "peer", T),
            Err(Error::Forbidden(_))
        ));
        // The operator manages every role.
        let (u, _) = unlock(&mut conn, &Actor::operator("root"), "peer", T)
            .unwrap()
            .unwrap();
        assert_eq!(u.id, peer.id);
        assert_eq!(users::get(&conn, "peer").unwrap().failed_attempts, 0);
    }
}
