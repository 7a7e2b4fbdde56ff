//! Store functions: plain functions over a connection or transaction. Only this layer
//! (and `audit`, `policy`, `db`) issues SQL. Callers wrap writes in `db::write_tx` so a
//! change and its audit row commit together.

pub mod audit_chain;
pub mod email;
pub mod factors;
pub mod familiar;
pub mod keys;
pub mod oidc;
pub mod orgs;
pub mod passkeys;
pub mod security;
pub mod sessions;
pub mod terms;
pub mod users;

/// Map "no rows" to None.
pub(crate) fn opt<T>(r: crate::sql::Result<T>) -> crate::sql::Result<Option<T>> {
    crate::sql::OptionalExtension::optional(r)
}

/// Map a UNIQUE violation to a clear conflict.
pub(crate) fn conflict_on_unique(
    e: crate::sql::Error,
    msg: impl FnOnce() -> String,
) -> crate::Error {
    if e.is_constraint_violation() {
        return crate::Error::Conflict(msg());
    }
    e.into()
}

/// An SQL condition: the keyed hash in `column` (as `crypto::SecretKey::keyed_hash` writes
/// it) is under key `id` (key 1's carry no `kN:` prefix; hex has no `k`).
pub(crate) fn keyed_by(column: &str, id: crate::crypto::KeyId) -> String {
    if id == 1 {
        format!("{column} NOT LIKE 'k%:%'")
    } else {
        format!("{column} LIKE 'k{id}:%'")
    }
}
