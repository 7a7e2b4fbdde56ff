//! Organisations (tenants) and groups.

use crate::sql::{params, Connection};
use serde::Serialize;

use super::{conflict_on_unique, opt};
use crate::error::{Error, Result};
use crate::kinds::MfaMethod;
use crate::names;

pub const DEFAULT_ORG: &str = "default";

#[derive(Debug, Clone, Serialize)]
pub struct Org {
    pub id: i64,
    pub name: String,
    pub mfa_method: Option<MfaMethod>,
    pub users: i64,
    pub created_at: i64,
}

fn org_row(r: &crate::sql::Row) -> crate::sql::Result<Org> {
    Ok(Org {
        id: r.get(0)?,
        name: r.get(1)?,
        mfa_method: r.get(2)?,
        users: r.get(3)?,
        created_at: r.get(4)?,
    })
}

const ORG_SELECT: &str = "SELECT o.id, o.name, o.mfa_method,
    (SELECT count(*) FROM users u WHERE u.org_id=o.id), o.created_at FROM orgs o";

pub fn add_org(
    conn: &Connection,
    name: &str,
    mfa_method: Option<MfaMethod>,
    now: i64,
) -> Result<Org> {
    let n = names::normalize("organisation name", name)?;
    conn.execute(
        "INSERT INTO orgs(name, name_key, mfa_method, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![n.display, n.key, mfa_method, now],
    )
    .map_err(|e| {
        conflict_on_unique(e, || format!("organisation '{}' already exists", n.display))
    })?;
    get_org(conn, &n.display)
}

pub fn find_org(conn: &Connection, name: &str) -> Result<Option<Org>> {
    let key = names::key_of(name);
    Ok(opt(conn.query_row(
        &format!("{ORG_SELECT} WHERE o.name_key=?1"),
        [key],
        org_row,
    ))?)
}

pub fn get_org(conn: &Connection, name: &str) -> Result<Org> {
    find_org(conn, name)?.ok_or_else(|| Error::not_found("organisation", name))
}

pub fn org_by_id(conn: &Connection, id: i64) -> Result<Org> {
    opt(conn.query_row(&format!("{ORG_SELECT} WHERE o.id=?1"), [id], org_row))?
        .ok_or_else(|| Error::NotFound(format!("organisation #{id} does not exist")))
}

/// The org named `name`, or the default org (created on first use) when `name` is None.
pub fn org_or_default(conn: &Connection, name: Option<&str>, now: i64) -> Result<Org> {
    match name {
        Some(n) => get_org(conn, n),
        None => match find_org(conn, DEFAULT_ORG)? {
            Some(o) => Ok(o),
            None => add_org(conn, DEFAULT_ORG, None, now),
        },
    }
}

pub fn list_orgs(conn: &Connection) -> Result<Vec<Org>> {
    let mut stmt = conn.prepare(&format!("{ORG_SELECT} ORDER BY o.name_key"))?;
    let rows = stmt
        .query_map((), org_row)?
        .collect::<crate::sql::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Delete an organisation. Refused while it has users.
pub fn delete_org(conn: &Connection, name: &str) -> Result<Org> {
    let org = get_org(conn, name)?;
    if org.users > 0 {
        return Err(Error::Conflict(format!(
            "organisation '{}' still has {} user(s); move or delete them first",
            org.name, org.users
        )));
    }
    conn.execute("DELETE FROM orgs WHERE id=?1", [org.id])?;
    Ok(org)
}

#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub id: i64,
    pub name: String,
    pub require_2fa: bool,
    pub members: i64,
    pub created_at: i64,
}

const GROUP_SELECT: &str = "SELECT g.id, g.name, g.require_2fa,
    (SELECT count(*) FROM memberships m WHERE m.group_id=g.id), g.created_at FROM groups g";

fn group_row(r: &crate::sql::Row) -> crate::sql::Result<Group> {
    Ok(Group {
        id: r.get(0)?,
        name: r.get(1)?,
        require_2fa: r.get(2)?,
        members: r.get(3)?,
        created_at: r.get(4)?,
    })
}

pub fn add_group(conn: &Connection, name: &str, require_2fa: bool, now: i64) -> Result<Group> {
    let n = names::normalize("group name", name)?;
    conn.execute(
        "INSERT INTO groups(name, name_key, require_2fa, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![n.display, n.key, require_2fa, now],
    )
    .map_err(|e| conflict_on_unique(e, || format!("group '{}' already exists", n.display)))?;
    get_group(conn, &n.display)
}

pub fn get_group(conn: &Connection, name: &str) -> Result<Group> {
    let key = names::key_of(name);
    opt(conn.query_row(
        &format!("{GROUP_SELECT} WHERE g.name_key=?1"),
        [key],
        group_row,
    ))?
    .ok_or_else(|| Error::not_found("group", name))
}

pub fn set_group_require_2fa(conn: &Connection, name: &str, require_2fa: bool) -> Result<Group> {
    let g = get_group(conn, name)?;
    conn.execute(
        "UPDATE groups SET require_2fa=?1 WHERE id=?2",
        params![require_2fa, g.id],
    )?;
    get_group(conn, name)
}

pub fn list_groups(conn: &Connection) -> Result<Vec<Group>> {
    let mut stmt = conn.prepare(&format!("{GROUP_SELECT} ORDER BY g.name_key"))?;
    let rows = stmt
        .query_map((), group_row)?
        .collect::<crate::sql::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Delete a group (its memberships go with it).
pub fn delete_group(conn: &Connection, name: &str) -> Result<Group> {
    let g = get_group(conn, name)?;
    conn.execute("DELETE FROM groups WHERE id=?1", [g.id])?;
    Ok(g)
}
