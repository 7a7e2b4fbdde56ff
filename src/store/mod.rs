//! Store functions: plain functions over a connection or transaction. Only this layer
//! (and `audit`, `policy`, `db`) issues SQL. Callers wrap writes in `db::write_tx` so a
//! change and its audit row commit together.

pub mod audit_chain;
pub mod email;
pub mod factors;
pub mod familiar;
pub mod oidc;
pub mod orgs;
pub mod sessions;
pub mod terms;
pub mod users;

/// Map "no rows" to None.
pub(crate) fn opt<T>(r: rusqlite::Result<T>) -> rusqlite::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Map a UNIQUE violation to a clear conflict.
pub(crate) fn conflict_on_unique(e: rusqlite::Error, msg: impl FnOnce() -> String) -> crate::Error {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        if f.code == rusqlite::ErrorCode::ConstraintViolation {
            return crate::Error::Conflict(msg());
        }
    }
    e.into()
}
