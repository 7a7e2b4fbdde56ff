//! One error type with stable machine codes. `authctl` maps it to exit codes, `authd` to
//! HTTP statuses; the `code()` strings are part of the public contract (API.md).

/// One rule of the password policy and whether a given password meets it (built by
/// `password::PasswordPolicy::check`; here because [`Error::Policy`] carries it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleResult {
    pub id: &'static str,
    pub description: String,
    pub met: bool,
}

/// The generic answer to every credential failure (unknown user, wrong password,
/// locked or disabled account, bad code). It must never become an oracle.
pub const GENERIC_FAILURE: &str = "Authentication attempt failed. Retry with valid credentials.";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A named thing does not exist (user, org, group, session…).
    #[error("{0}")]
    NotFound(String),
    /// The thing already exists, or the request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// Rejected by policy: a weak password (with each rule met/unmet), a reused one…
    #[error("{message}")]
    Policy {
        message: String,
        rules: Vec<RuleResult>,
    },
    /// Malformed input: a bad email, a bad duration, a field out of range.
    #[error("{0}")]
    Invalid(String),
    /// Credentials did not check out. The message is always the generic one.
    #[error("{}", GENERIC_FAILURE)]
    InvalidCredentials,
    /// The login flow token is unknown, expired, spent, or for another step.
    #[error("The login flow is unknown or has expired. Start again.")]
    InvalidFlow,
    /// Asked again too soon (e.g. a code resend); retry after the given seconds.
    #[error("{message}")]
    TooSoon { message: String, retry_after: i64 },
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The store cannot serve right now (read-only, busy, disk full): fail closed.
    #[error("{0}")]
    Unavailable(String),
    /// The secret-encryption key is missing, unreadable or does not match the database.
    #[error("{0}")]
    Key(String),
    #[error("database error: {0}")]
    Db(crate::sql::Error),
    #[error("{0}")]
    Io(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Stable machine code, the `"error"` field of JSON answers.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::Policy { .. } => "policy_rejected",
            Error::Invalid(_) => "invalid_input",
            Error::InvalidCredentials => "invalid_credentials",
            Error::InvalidFlow => "invalid_flow",
            Error::TooSoon { .. } => "too_soon",
            Error::Forbidden(_) => "forbidden",
            Error::Unavailable(_) => "unavailable",
            Error::Key(_) => "key_error",
            Error::Db(_) => "database_error",
            Error::Io(_) => "io_error",
        }
    }

    /// authctl exit code (API.md): 1 failure, 2 usage, 3 not found, 4 conflict, 5 policy.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NotFound(_) => 3,
            Error::Conflict(_) => 4,
            Error::Policy { .. } => 5,
            Error::Invalid(_) => 2,
            _ => 1,
        }
    }

    pub fn not_found(what: &str, name: &str) -> Error {
        Error::NotFound(format!("{what} '{name}' does not exist"))
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::from(crate::sql::Error::from(e))
    }
}

impl From<crate::sql::Error> for Error {
    fn from(e: crate::sql::Error) -> Self {
        use rusqlite::ErrorCode as C;
        if e.is_connection_lost() {
            return Error::Unavailable("the database is unreachable; nothing was changed".into());
        }
        if let crate::sql::Error::Postgres(p) = &e {
            use postgres::error::SqlState as S;
            match p.code() {
                Some(c) if *c == S::READ_ONLY_SQL_TRANSACTION => {
                    return Error::Unavailable(
                        "the database is read-only; nothing was changed".into(),
                    )
                }
                Some(c) if *c == S::DISK_FULL => {
                    return Error::Unavailable("the disk is full; nothing was changed".into())
                }
                _ if e.is_busy() => {
                    return Error::Unavailable(
                        "the database is busy (a conflicting transaction); try again".into(),
                    )
                }
                _ => {}
            }
        }
        if let crate::sql::Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) = &e {
            match f.code {
                C::ReadOnly => {
                    return Error::Unavailable(
                        "the database is read-only; nothing was changed".into(),
                    )
                }
                C::DatabaseBusy | C::DatabaseLocked => {
                    return Error::Unavailable(
                        "the database is busy (locked by another process); try again".into(),
                    )
                }
                C::DiskFull => {
                    return Error::Unavailable("the disk is full; nothing was changed".into())
                }
                C::NotADatabase => {
                    return Error::Invalid("the file is not an authd database".into())
                }
                C::CannotOpen => return Error::Io("cannot open the database file".into()),
                _ => {}
            }
        }
        Error::Db(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}
