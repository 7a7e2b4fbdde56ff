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

/// The live rows of `now`, of one user only when `user_id` is given: the condition
/// (`AND {alias}.user_id=?2`, or nothing — an `?2 IS NULL OR …` form would keep SQLite
/// from searching the table's user index) and the parameters `?1` (`now`) and `?2`.
pub(crate) fn by_user<'a>(
    alias: &str,
    now: &'a i64,
    user_id: &'a Option<i64>,
) -> (String, Vec<&'a dyn crate::sql::ToSql>) {
    let mut args: Vec<&dyn crate::sql::ToSql> = vec![now];
    match user_id {
        Some(u) => {
            args.push(u);
            (format!(" AND {alias}.user_id=?2"), args)
        }
        None => (String::new(), args),
    }
}

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
