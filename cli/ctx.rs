//! What every command needs: the open database, the key file (loaded on demand), who is
//! acting, and how to write an audit row in the same transaction as the change.

use anyhow::Result;
use authcore::audit::{self, Entry, Outcome};
use authcore::crypto::SecretKey;
use authcore::db::{self, Location};
use authcore::kinds::AuditEvent;
use rusqlite::Connection;

use crate::args::Global;

pub struct Ctx {
    pub conn: Connection,
    pub loc: Location,
    pub actor: String,
    pub json: bool,
    pub yes: bool,
}

/// The OS user running the command: the actor of admin audit rows.
pub fn os_user() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => std::env::var("USER").unwrap_or_else(|_| format!("uid:{uid}")),
    }
}

impl Ctx {
    pub fn open(g: &Global) -> Result<Ctx> {
        let loc = Location::new(&g.db, g.key_file.clone());
        let conn = db::open_initialised(&loc.db)?;
        Ok(Ctx {
            conn,
            loc,
            actor: os_user(),
            json: g.json,
            yes: g.yes,
        })
    }

    /// The key file, loaded and checked against the database.
    pub fn key(&self) -> Result<SecretKey> {
        Ok(db::load_key(&self.conn, &self.loc.key)?)
    }

    /// Begin a write transaction (rolls back unless committed).
    pub fn tx(&mut self) -> Result<db::WriteTx<'_>> {
        Ok(db::write_tx(&mut self.conn)?)
    }

    /// An admin audit entry with this actor.
    pub fn entry(&self, event: AuditEvent) -> Entry {
        Entry::new(event, Outcome::Success)
            .actor(&self.actor)
            .detail(serde_json::json!({"via": "authctl"}))
    }
}

/// Record a successful admin action inside `tx`.
pub fn record(tx: &Connection, e: Entry, now: i64) -> Result<()> {
    audit::record(tx, &e, now)?;
    Ok(())
}

/// Record a refused admin action (best effort, its own transaction): the database may be
/// the very thing that failed.
pub fn record_failure(g: &Global, event: AuditEvent, target: &str, err: &anyhow::Error) {
    let Ok(conn) = db::open_initialised(&g.db) else {
        return;
    };
    let reason = err
        .downcast_ref::<authcore::Error>()
        .map(|e| e.code())
        .or_else(|| err.downcast_ref::<crate::output::Refused>().map(|r| r.code))
        .unwrap_or("error");
    let e = Entry::new(event, Outcome::Failure)
        .username(target)
        .reason(reason)
        .actor(&os_user())
        .detail(serde_json::json!({"via": "authctl", "message": err.to_string()}));
    let _ = audit::record(&conn, &e, authcore::util::now());
}
