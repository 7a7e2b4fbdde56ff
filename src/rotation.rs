//! Key rotation: [`Core`] methods for `authctl key rotate|rekey|retire|list`.
//!
//! A rotation adds a key to the key file and makes it current, then seals what the old
//! keys protect again under it while authd serves, in short batches (each its own write
//! transaction, so logins keep going): encrypted values are decrypted and encrypted again
//! ([`keys::reencrypt`]), the audit chain is sealed again ([`audit_chain::rekey`]).
//! Keyed hashes (recovery and emailed codes, CSRF tokens) cannot be re-keyed: they are
//! checked under the key they name while it stays listed. A running authd picks the new
//! file up within a second (its background thread watches the file), or at once when it
//! meets a value under a key it does not hold yet.
//!
//! Retiring a key removes it from the file once nothing stored needs it
//! ([`keys::uses_of`]), and refuses, naming what, while something does.

use std::path::Path;

use serde::Serialize;
use serde_json::json;

use crate::admin::Actor;
use crate::audit::{self, Outcome};
use crate::core::Core;
use crate::crypto::KeyId;
use crate::error::{Error, Result};
use crate::kinds::AuditEvent;
use crate::ops::require_global;
use crate::store::{audit_chain, keys};

/// Rows per batch (one short write transaction each).
const BATCH: usize = 256;
/// How long `key rotate` gives a running authd to notice the new key file before the
/// audit chain is sealed again (authd looks every second).
const PICKUP: std::time::Duration = std::time::Duration::from_millis(1500);

/// What still needs a key: a kind of value and how many.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Use {
    pub what: String,
    pub count: u64,
}

/// A key of the key file and what still needs it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub id: KeyId,
    pub current: bool,
    pub uses: Vec<Use>,
}

/// What [`Core::key_rekey`] (and a rotation) did, and what still needs older keys.
#[derive(Debug, Clone, Serialize)]
pub struct Rekeyed {
    /// The current key.
    pub key: KeyId,
    pub key_file: String,
    /// Encrypted values encrypted again under the current key.
    pub reencrypted: u64,
    /// Audit rows sealed again under the current key.
    pub audit_resealed: u64,
    /// The other keys, and what still needs each.
    pub older: Vec<KeyInfo>,
}

/// What [`Core::key_retire`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Retired {
    pub retired: KeyId,
    pub key_file: String,
    pub keys: Vec<KeyId>,
}

/// `3 unused recovery codes, 2 TOTP secrets` (or `nothing`).
pub fn describe_uses(uses: &[Use]) -> String {
    if uses.is_empty() {
        return "nothing".into();
    }
    uses.iter()
        .map(|u| format!("{} {}", u.count, u.what))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The audit row of a change to the key file: the key and the keys after it.
fn key_changed(
    tx: &crate::sql::Connection,
    actor: &Actor,
    event: AuditEvent,
    id: KeyId,
    keys: Vec<KeyId>,
    now: i64,
) -> Result<i64> {
    audit::record(
        tx,
        &actor
            .entry(event, Outcome::Success)
            .detail(actor.detail(json!({"key": id, "keys": keys}))),
        now,
    )
}

pub(crate) fn uses(list: Vec<(String, u64)>) -> Vec<Use> {
    list.into_iter()
        .map(|(what, count)| Use { what, count })
        .collect()
}

fn key_file(core: &Core) -> Result<std::path::PathBuf> {
    core.key()
        .path()
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::Key("this core's key was not read from a key file".into()))
}

impl Core {
    /// The keys of the key file, the current one marked, with what still needs each.
    pub fn key_list(&self, actor: &Actor) -> Result<Vec<KeyInfo>> {
        require_global(actor)?;
        let key = self.key().clone();
        let now = self.now();
        self.read(|c| {
            key.ids()
                .into_iter()
                .map(|id| {
                    Ok(KeyInfo {
                        id,
                        current: id == key.current_id(),
                        uses: uses(keys::uses_of(c, id, now)?),
                    })
                })
                .collect()
        })
    }

    /// Add a new key to the key file and make it current (registered in the database
    /// first, then the file replaced atomically), audited `admin.key.rotate`; then seal
    /// everything again under it ([`Core::key_rekey`]).
    pub fn key_rotate(&self, actor: &Actor) -> Result<Rekeyed> {
        let event = AuditEvent::AdminKeyRotate;
        let path = key_file(self)?;
        let (ring, id) = self.key().with_new_key();
        self.global_write(actor, event, |tx, _, now| {
            crate::db::register_key(tx, &ring, id)?;
            key_changed(tx, actor, event, id, ring.ids(), now)
        })?;
        ring.write_file(&path)?;
        self.reload_key()?;
        if self.key().current_id() != id {
            return Err(Error::Key(format!(
                "the key file {} changed while key {id} was added; run authctl key rotate again",
                path.display()
            )));
        }
        std::thread::sleep(PICKUP);
        self.key_rekey(actor)
    }

    /// Seal everything the older keys protect again under the current key, in batches:
    /// encrypted values, then the audit chain. Safe to run again (it continues, or finds
    /// nothing to do).
    pub fn key_rekey(&self, actor: &Actor) -> Result<Rekeyed> {
        require_global(actor)?;
        let path = key_file(self)?;
        let mut reencrypted = 0u64;
        for e in keys::ENCRYPTED {
            let mut after = 0;
            loop {
                let (n, last) =
                    self.write(|tx, key, _| keys::reencrypt(tx, key, e, after, BATCH))?;
                reencrypted += n as u64;
                match last {
                    Some(l) => after = l,
                    None => break,
                }
            }
        }
        let mut audit_resealed = 0u64;
        loop {
            // Seal what is waiting first, so the walk reaches the newest row.
            let (n, done) = self.write(|tx, key, _| {
                audit_chain::seal(tx, key, 10_000)?;
                audit_chain::rekey(tx, key, BATCH * 4)
            })?;
            audit_resealed += n as u64;
            if done {
                break;
            }
        }
        let current = self.key().current_id();
        let older = self
            .key_list(actor)?
            .into_iter()
            .filter(|k| k.id != current)
            .collect();
        Ok(Rekeyed {
            key: current,
            key_file: path.display().to_string(),
            reencrypted,
            audit_resealed,
            older,
        })
    }

    /// Remove key `id` from the key file, audited `admin.key.retire`; refused (and
    /// audited) for the current key, or while anything stored still needs it, naming what.
    pub fn key_retire(&self, actor: &Actor, id: KeyId) -> Result<Retired> {
        let event = AuditEvent::AdminKeyRetire;
        let path = key_file(self)?;
        let ring = self.key().clone();
        let still = self.global_write(actor, event, |tx, _, now| {
            let refuse = |why: &str| {
                audit::record(
                    tx,
                    &actor
                        .entry(event, Outcome::Failure)
                        .reason(why)
                        .detail(actor.detail(json!({"key": id}))),
                    now,
                )
            };
            let smaller = match ring.without_key(id) {
                Ok(r) => r,
                Err(e) => {
                    refuse("not_retirable")?;
                    return Ok(Err(e));
                }
            };
            let needs = uses(keys::uses_of(tx, id, now)?);
            if !needs.is_empty() {
                refuse("still_needed")?;
                return Ok(Err(Error::Conflict(format!(
                    "key {id} is still needed by {}; run `authctl key rekey` for encrypted values \
                     and the audit log, and let codes be used or expire (or replace them: \
                     authctl enroll / reset-2fa) before retiring it",
                    describe_uses(&needs)
                ))));
            }
            key_changed(tx, actor, event, id, smaller.ids(), now)?;
            // The file is replaced inside the transaction: a failure to write it undoes
            // the audit row.
            smaller.write_file(&path)?;
            Ok(Ok(smaller.ids()))
        })?;
        let keys = still?;
        self.reload_key()?;
        Ok(Retired {
            retired: id,
            key_file: path.display().to_string(),
            keys,
        })
    }

    /// Read the key file again now, checked against the database (authd's background
    /// thread does this when the file changes). Returns whether the keys changed.
    pub fn reload_key(&self) -> Result<bool> {
        let key = self.key().clone();
        let path = key_file(self)?;
        self.read(|c| key.reload_with(|k| crate::db::check_key(c, k, &path)))
    }
}
