//! The audit log: every attempt and every admin action, written in the same transaction
//! as the decision it records, so an answered request always has its row.
//!
//! Internal reasons (`unknown_user`, `wrong_password`, `locked`, `bad_code`…) are for
//! admins only; what the client was told is the generic failure.

use crate::sql::{params, params_from_iter, Connection, ToSql};
use serde::Serialize;

use crate::error::Result;
use crate::kinds::AuditEvent;
use crate::names;

const MAX_FIELD: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

/// One row to write. Build with [`Entry::new`] and the setters.
#[derive(Debug, Clone)]
pub struct Entry {
    pub event: AuditEvent,
    pub outcome: Option<Outcome>,
    pub reason: String,
    pub username: String,
    pub user_id: Option<i64>,
    pub org_id: Option<i64>,
    pub ip: String,
    pub user_agent: String,
    pub actor: String,
    pub detail: String,
}

fn clip(s: &str) -> String {
    // Keep rows bounded and printable: no control characters reach a terminal or CSV.
    s.chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .take(MAX_FIELD)
        .collect()
}

impl Entry {
    pub fn new(event: AuditEvent, outcome: Outcome) -> Entry {
        Entry {
            event,
            outcome: Some(outcome),
            reason: String::new(),
            username: String::new(),
            user_id: None,
            org_id: None,
            ip: String::new(),
            user_agent: String::new(),
            actor: String::new(),
            detail: String::new(),
        }
    }
    pub fn reason(mut self, r: &str) -> Self {
        self.reason = r.to_string();
        self
    }
    pub fn username(mut self, u: &str) -> Self {
        self.username = u.to_string();
        self
    }
    pub fn user(mut self, id: i64, org_id: i64) -> Self {
        self.user_id = Some(id);
        self.org_id = Some(org_id);
        self
    }
    pub fn org(mut self, org_id: Option<i64>) -> Self {
        self.org_id = org_id;
        self
    }
    pub fn client(mut self, ip: &str, user_agent: &str) -> Self {
        self.ip = ip.to_string();
        self.user_agent = user_agent.to_string();
        self
    }
    pub fn actor(mut self, a: &str) -> Self {
        self.actor = a.to_string();
        self
    }
    pub fn detail(mut self, d: serde_json::Value) -> Self {
        self.detail = d.to_string();
        self
    }
}

/// The audit row's insert (one statement text for both engines' variants).
macro_rules! audit_insert {
    () => {
        "INSERT INTO audit(at, event, outcome, reason, username, username_key, user_id, org_id,
                           ip, user_agent, actor, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    };
}

/// Write one row; returns its id.
pub fn record(conn: &Connection, e: &Entry, now: i64) -> Result<i64> {
    if conn.engine() == crate::sql::Engine::Postgres && conn.is_autocommit() {
        // Audit ids must be handed out in commit order for the chain's seal: on
        // PostgreSQL a row written outside a transaction takes the writers' lock too.
        conn.execute_batch(crate::sql::begin_write_sql(conn.engine()))?;
        let r = insert(conn, e, now);
        conn.execute_batch(if r.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
        return r;
    }
    insert(conn, e, now)
}

fn insert(conn: &Connection, e: &Entry, now: i64) -> Result<i64> {
    let values = params![
        now,
        e.event,
        e.outcome.unwrap_or(Outcome::Failure).as_str(),
        clip(&e.reason),
        clip(&e.username),
        names::key_of(&e.username),
        e.user_id,
        e.org_id,
        clip(&e.ip),
        clip(&e.user_agent),
        clip(&e.actor),
        e.detail.chars().take(4096).collect::<String>(),
    ];
    // Every decision writes one: reuse the compiled statement. PostgreSQL hands the id
    // back in the same round trip (RETURNING). SQLite runs a RETURNING clause as a
    // trigger, and a statement with a trigger inside a transaction copies every page it
    // touches to a statement journal first (the audit row's table and five indexes on
    // every login step, and the allocations and page faults that go with them): there
    // the plain insert and the connection's last rowid give the same id.
    if conn.engine() == crate::sql::Engine::Postgres {
        return Ok(conn
            .prepare_cached(concat!(audit_insert!(), " RETURNING id"))?
            .query_row(values, |r| r.get(0))?);
    }
    conn.prepare_cached(audit_insert!())?.execute(values)?;
    Ok(conn.last_insert_rowid())
}

/// A stored row, as queries return it.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: i64,
    pub at: i64,
    pub time: String,
    /// Read strictly: a row with an event this version does not know is an error.
    pub event: AuditEvent,
    pub outcome: String,
    pub reason: String,
    pub username: String,
    pub user_id: Option<i64>,
    pub org: Option<String>,
    pub ip: String,
    pub user_agent: String,
    pub actor: String,
    pub detail: String,
}

/// Filters for [`query`]. All optional; combined with AND.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Matches the user's id (if the name resolves) or the username as typed (normalised).
    pub user: Option<String>,
    pub org_id: Option<i64>,
    /// Exact event, or a prefix ending in `.` / `*` (`login.` matches `login.password`).
    pub event: Option<String>,
    pub outcome: Option<Outcome>,
    pub ip: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub after_id: Option<i64>,
    pub limit: Option<i64>,
}

/// Rows matching `f`, newest first (or oldest first after `after_id`, for following).
pub fn query(conn: &Connection, f: &Filter) -> Result<Vec<Row>> {
    let mut sql = String::from(
        "SELECT a.id, a.at, a.event, a.outcome, a.reason, a.username, a.user_id, o.name,
                a.ip, a.user_agent, a.actor, a.detail
         FROM audit a LEFT JOIN orgs o ON o.id = a.org_id WHERE 1=1",
    );
    let mut args: Vec<Box<dyn ToSql>> = Vec::new();
    if let Some(u) = &f.user {
        let key = names::key_of(u);
        let id: Option<i64> = conn
            .query_row("SELECT id FROM users WHERE username_key=?1", [&key], |r| {
                r.get(0)
            })
            .ok();
        match id {
            Some(id) => {
                sql.push_str(&format!(
                    " AND a.id IN (SELECT id FROM audit WHERE user_id=?{} UNION SELECT id FROM audit WHERE username_key=?{})",
                    args.len() + 1,
                    args.len() + 2
                ));
                args.push(Box::new(id));
                args.push(Box::new(key));
            }
            None => {
                sql.push_str(&format!(" AND a.username_key=?{}", args.len() + 1));
                args.push(Box::new(key));
            }
        }
    }
    if let Some(o) = f.org_id {
        sql.push_str(&format!(" AND a.org_id=?{}", args.len() + 1));
        args.push(Box::new(o));
    }
    if let Some(e) = &f.event {
        if let Some(prefix) = e
            .strip_suffix('*')
            .or(e.ends_with('.').then_some(e.as_str()))
        {
            sql.push_str(&format!(
                " AND substr(a.event, 1, length(?{n})) = ?{n}",
                n = args.len() + 1
            ));
            args.push(Box::new(prefix.to_string()));
        } else {
            sql.push_str(&format!(" AND a.event=?{}", args.len() + 1));
            args.push(Box::new(e.clone()));
        }
    }
    if let Some(o) = f.outcome {
        sql.push_str(&format!(" AND a.outcome=?{}", args.len() + 1));
        args.push(Box::new(o.as_str()));
    }
    if let Some(ip) = &f.ip {
        sql.push_str(&format!(" AND a.ip=?{}", args.len() + 1));
        args.push(Box::new(ip.clone()));
    }
    if let Some(s) = f.since {
        sql.push_str(&format!(" AND a.at>=?{}", args.len() + 1));
        args.push(Box::new(s));
    }
    if let Some(u) = f.until {
        sql.push_str(&format!(" AND a.at<=?{}", args.len() + 1));
        args.push(Box::new(u));
    }
    if let Some(id) = f.after_id {
        sql.push_str(&format!(" AND a.id>?{} ORDER BY a.id ASC", args.len() + 1));
        args.push(Box::new(id));
    } else {
        sql.push_str(" ORDER BY a.id DESC");
    }
    if let Some(l) = f.limit {
        sql.push_str(&format!(" LIMIT ?{}", args.len() + 1));
        args.push(Box::new(l));
    }
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map(params_from_iter(args.iter().map(|b| b.as_ref())), |r| {
            let at: i64 = r.get(1)?;
            Ok(Row {
                id: r.get(0)?,
                at,
                time: crate::util::rfc3339(at),
                event: r.get(2)?,
                outcome: r.get(3)?,
                reason: r.get(4)?,
                username: r.get(5)?,
                user_id: r.get(6)?,
                org: r.get(7)?,
                ip: r.get(8)?,
                user_agent: r.get(9)?,
                actor: r.get(10)?,
                detail: r.get(11)?,
            })
        })?
        .collect::<crate::sql::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The id of the newest row (0 when empty): where `--follow` starts.
pub fn last_id(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT coalesce(max(id), 0) FROM audit", (), |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_and_filter() {
        let conn = crate::db::open_memory().unwrap();
        record(
            &conn,
            &Entry::new(AuditEvent::LoginPassword, Outcome::Failure)
                .username("Bob")
                .reason("unknown_user")
                .client("10.0.0.1", "ua"),
            100,
        )
        .unwrap();
        record(
            &conn,
            &Entry::new(AuditEvent::LoginPassword, Outcome::Success).username("alice"),
            200,
        )
        .unwrap();
        record(
            &conn,
            &Entry::new(AuditEvent::AdminUnlock, Outcome::Success)
                .username("bob\u{0}x")
                .actor("root"),
            300,
        )
        .unwrap();
        let all = query(&conn, &Filter::default()).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].event, AuditEvent::AdminUnlock, "newest first");
        assert!(!all[0].username.contains('\u{0}'));
        let bob = query(
            &conn,
            &Filter {
                user: Some("BOB".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(bob.len(), 1);
        assert_eq!(bob[0].reason, "unknown_user");
        let logins = query(
            &conn,
            &Filter {
                event: Some("login.".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(logins.len(), 2);
        let fails = query(
            &conn,
            &Filter {
                outcome: Some(Outcome::Failure),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(fails.len(), 1);
        let window = query(
            &conn,
            &Filter {
                since: Some(150),
                until: Some(250),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(window.len(), 1);
        let ip = query(
            &conn,
            &Filter {
                ip: Some("10.0.0.1".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(ip.len(), 1);
        let after = query(
            &conn,
            &Filter {
                after_id: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(after.iter().map(|r| r.id).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(last_id(&conn).unwrap(), 3);
    }

    #[test]
    fn events_are_stored_as_their_strings_and_read_strictly() {
        let conn = crate::db::open_memory().unwrap();
        record(
            &conn,
            &Entry::new(AuditEvent::AdminReset2fa, Outcome::Success),
            1,
        )
        .unwrap();
        let stored: String = conn
            .query_row("SELECT event FROM audit", (), |r| r.get(0))
            .unwrap();
        assert_eq!(stored, "admin.reset_2fa");
        conn.execute(
            "INSERT INTO audit(at, event, outcome) VALUES (2, 'admin.renamed', 'success')",
            (),
        )
        .unwrap();
        let e = query(&conn, &Filter::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown audit event 'admin.renamed'"),
            "{e}"
        );
        // Filters are patterns, not events: a prefix still selects the known rows.
        let admin = query(
            &conn,
            &Filter {
                event: Some("admin.reset*".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(admin.len(), 1);
    }
}
