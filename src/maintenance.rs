//! Running a site for years: backups, whole-database checks and the audit chain's
//! verification, pruning and export — [`Core`] methods for `authctl backup`, `verify` and
//! `audit verify|prune|export`. Each is for operators (admins without an organisation
//! scope); a refusal is audited like any other.

use std::path::Path;

use serde::Serialize;
use serde_json::json;

use crate::admin::Actor;
use crate::audit::{self, Outcome};
use crate::core::Core;
use crate::error::{Error, Result};
use crate::kinds::AuditEvent;
use crate::ops::require_global;
use crate::store::audit_chain::{self, Verified};

/// What [`Core::backup`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Backup {
    pub path: String,
    pub bytes: u64,
    /// The key file the backup needs and does not contain.
    pub key_file: String,
}

/// One finding of [`Core::verify`]: a check and what it found.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Everything [`Core::verify`] checked; `ok` when every check passed.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub ok: bool,
    pub checks: Vec<Check>,
    pub audit: Verified,
}

impl Core {
    /// A consistent copy of the database at `dest` (SQLite's `VACUUM INTO`: one read
    /// transaction, so authd keeps serving meanwhile), never over an existing file;
    /// audited `admin.backup`. The key file is not in it.
    pub fn backup(&self, actor: &Actor, dest: &Path, key_file: &Path) -> Result<Backup> {
        let event = AuditEvent::AdminBackup;
        if let Err(e) = require_global(actor) {
            self.refused(actor, event, "insufficient_role")?;
            return Err(e);
        }
        if dest.exists() {
            return Err(Error::Conflict(format!(
                "{} exists already; a backup never overwrites a file",
                dest.display()
            )));
        }
        let dest_s = dest
            .to_str()
            .ok_or_else(|| Error::Invalid("the backup path is not UTF-8".into()))?;
        self.read(|c| crate::db::vacuum_into(c, dest_s))?;
        let bytes = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
        self.write(|tx, _, now| {
            audit::record(
                tx,
                &actor
                    .entry(event, Outcome::Success)
                    .detail(actor.detail(json!({"path": dest_s, "bytes": bytes}))),
                now,
            )
        })?;
        Ok(Backup {
            path: dest_s.to_string(),
            bytes,
            key_file: key_file.display().to_string(),
        })
    }

    /// Check the whole database: SQLite's integrity check, the schema version, that the
    /// key opens every TOTP secret, and the audit chain. Reads only (unsealed audit rows
    /// are counted, not sealed).
    pub fn verify(&self, actor: &Actor) -> Result<Verification> {
        require_global(actor)?;
        let key = self.key().clone();
        let now = self.now();
        self.read(|c| {
            let mut checks = Vec::new();
            let problems = crate::db::integrity_problems(c)?;
            checks.push(Check {
                check: "integrity",
                ok: problems.is_empty(),
                detail: if problems.is_empty() {
                    "SQLite integrity_check: ok".into()
                } else {
                    problems.join("; ")
                },
            });
            let v = crate::db::schema_version(c)?;
            checks.push(Check {
                check: "schema",
                ok: v == crate::db::SCHEMA_VERSION,
                detail: format!(
                    "schema version {v} (this build writes {})",
                    crate::db::SCHEMA_VERSION
                ),
            });
            let bad = crate::store::factors::undecryptable_totp(c, &key)?;
            checks.push(Check {
                check: "secrets",
                ok: bad.is_empty(),
                detail: if bad.is_empty() {
                    "the key opens every TOTP secret".into()
                } else {
                    format!(
                        "the key does not open the TOTP secret of {} user(s): ids {}",
                        bad.len(),
                        bad.iter()
                            .take(20)
                            .map(|i| i.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
            });
            let held = key.ids();
            let mut missing = Vec::new();
            for id in crate::store::keys::registered(c)? {
                if held.contains(&id) {
                    continue;
                }
                let uses = crate::rotation::uses(crate::store::keys::uses_of(c, id, now)?);
                if !uses.is_empty() {
                    missing.push(format!(
                        "key {id} is not in the key file and still needed by {}",
                        crate::rotation::describe_uses(&uses)
                    ));
                }
            }
            checks.push(Check {
                check: "keys",
                ok: missing.is_empty(),
                detail: if missing.is_empty() {
                    format!(
                        "the key file holds every key still needed (keys {:?}, current {})",
                        held,
                        key.current_id()
                    )
                } else {
                    missing.join("; ")
                },
            });
            let audit = audit_chain::verify(c, &key)?;
            checks.push(Check {
                check: "audit_chain",
                ok: audit.broken.is_none(),
                detail: describe(&audit),
            });
            Ok(Verification {
                ok: checks.iter().all(|c| c.ok),
                checks,
                audit,
            })
        })
    }

    /// Whether this core can serve: its database answers a read and its schema is current
    /// (authd's `/readyz`).
    pub fn ready(&self) -> Result<()> {
        self.read(crate::db::ready)
    }

    /// The audit chain, checked under the key ([`audit_chain::verify`]).
    pub fn audit_verify(&self, actor: &Actor) -> Result<Verified> {
        require_global(actor)?;
        let key = self.key().clone();
        self.read(|c| audit_chain::verify(c, &key))
    }

    /// Delete the audit rows written before `before`, keeping the chain verifiable from a
    /// signed anchor; audited `admin.audit.prune` (the row is written after the cut, so it
    /// survives it). Refused when the chain does not verify.
    pub fn audit_prune(&self, actor: &Actor, before: i64) -> Result<u64> {
        let event = AuditEvent::AdminAuditPrune;
        self.global_write(actor, event, |tx, key, now| {
            let n = audit_chain::prune(tx, key, before)?;
            audit::record(
                tx,
                &actor.entry(event, Outcome::Success).detail(
                    actor.detail(json!({"before": crate::util::rfc3339(before), "deleted": n})),
                ),
                now,
            )?;
            Ok(n)
        })
    }

    /// Every audit row since `since` (and after `after_id`), with its MAC, to `each`.
    pub fn audit_export(
        &self,
        actor: &Actor,
        since: Option<i64>,
        after_id: i64,
        each: impl FnMut(serde_json::Value) -> Result<()>,
    ) -> Result<u64> {
        require_global(actor)?;
        self.read(|c| audit_chain::export(c, since, after_id, each))
    }

    fn refused(&self, actor: &Actor, event: AuditEvent, reason: &str) -> Result<()> {
        self.write(|tx, _, now| {
            audit::record(
                tx,
                &actor.entry(event, Outcome::Failure).reason(reason),
                now,
            )
        })?;
        Ok(())
    }
}

/// The audit chain's state in one sentence.
pub fn describe(v: &Verified) -> String {
    let pruned = v
        .pruned_through
        .map(|id| format!(", pruned through row {id}"))
        .unwrap_or_default();
    match &v.broken {
        Some(b) if b.id == 0 => format!("broken: {}", b.why),
        Some(b) => format!("broken at row {}: {}", b.id, b.why),
        None if v.unsealed > 0 => format!(
            "{} rows verified{pruned}; the newest {} not sealed yet (authd seals within a second)",
            v.sealed, v.unsealed
        ),
        None => format!("{} rows verified{pruned}", v.sealed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::password::Hashing;

    fn core(dir: &Path) -> Core {
        let loc = crate::db::Location::new(dir.join("a.db"), None);
        let op = Actor::operator("root");
        Core::create(&loc, Hashing::new(1), Core::system_clock(), &op).unwrap()
    }

    #[test]
    fn backup_copies_a_consistent_database_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let c = core(dir.path());
        let op = Actor::operator("root");
        let dest = dir.path().join("copy.db");
        let b = c.backup(&op, &dest, Path::new("a.db.key")).unwrap();
        assert!(b.bytes > 0);
        // The copy opens with the same key and verifies.
        let copy = crate::db::open(&dest).unwrap();
        let key = crate::db::load_key(&copy, &dir.path().join("a.db.key")).unwrap();
        assert!(audit_chain::verify(&copy, &key).unwrap().broken.is_none());
        // Never over an existing file.
        let e = c.backup(&op, &dest, Path::new("k")).unwrap_err();
        assert!(matches!(e, Error::Conflict(_)), "{e}");
        // Not for an org admin.
        let org_admin = Actor {
            org_scope: Some(1),
            ..Actor::operator("bob")
        };
        let e = c
            .backup(&org_admin, &dir.path().join("other.db"), Path::new("k"))
            .unwrap_err();
        assert!(matches!(e, Error::Forbidden(_)), "{e}");
        assert!(!dir.path().join("other.db").exists());
    }

    #[test]
    fn verify_names_each_problem() {
        let dir = tempfile::tempdir().unwrap();
        let c = core(dir.path());
        let op = Actor::operator("root");
        let v = c.verify(&op).unwrap();
        assert!(v.ok, "{v:?}");
        // A TOTP secret that does not decrypt, and an edited audit row.
        c.with_conn(|conn, key| {
            let u = crate::store::users::create(
                conn,
                &crate::store::users::NewUser {
                    username: "alice",
                    email: "alice@example.org",
                    org: None,
                    groups: &[],
                    role: crate::store::users::Role::User,
                    password_hash: None,
                    must_change_password: false,
                },
                1,
            )?;
            crate::store::factors::set_totp(conn, key, u.id, b"0123456789abcdef0123", None, 1)?;
            conn.execute(
                "UPDATE totp_credentials SET secret_enc = x'00112233' WHERE user_id=?1",
                [u.id],
            )?;
            Ok(())
        })
        .unwrap();
        drop(c);
        let c = Core::open(
            &crate::db::Location::new(dir.path().join("a.db"), None),
            Hashing::new(1),
            Core::system_clock(),
        )
        .unwrap();
        c.with_conn(|conn, _| {
            conn.execute("UPDATE audit SET reason='edited' WHERE id=1", ())?;
            Ok(())
        })
        .unwrap();
        let v = c.verify(&op).unwrap();
        assert!(!v.ok);
        let failed: Vec<&str> = v.checks.iter().filter(|c| !c.ok).map(|c| c.check).collect();
        assert_eq!(failed, vec!["secrets", "audit_chain"], "{v:?}");
        assert_eq!(v.audit.broken.as_ref().map(|b| b.id), Some(1));
    }
}
