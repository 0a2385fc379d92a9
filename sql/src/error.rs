//! The one error type of the database backend.

use lockcore::{AcquireError, Conflict, GrantId, ReleaseError, RequestError};
use std::fmt;

/// Why an operation of [`SqlLocks`](crate::SqlLocks) failed. Nothing is held or released when
/// one is returned, except where a variant says otherwise.
#[derive(Debug)]
#[non_exhaustive]
pub enum SqlError {
    /// The request itself is invalid (empty, too many keys, a mode other than shared or
    /// exclusive).
    Request(RequestError),
    /// Some keys are held (a `try_` call, which does not wait); every conflicting key and holder
    /// is named.
    Conflict(Box<Conflict<String>>),
    /// The deadline passed while waiting; the conflict as it stood then.
    Timeout(Box<Conflict<String>>),
    /// A lock name, owner or server name longer than its column.
    NameTooLong {
        /// What was too long: `"lock name"`, `"owner"` or `"server"`.
        what: &'static str,
        /// Its first characters.
        start: String,
        /// Its length in characters.
        len: usize,
        /// The column's limit in characters.
        max: usize,
    },
    /// A lock name or owner the database cannot store (it contains a NUL character).
    InvalidName {
        /// What was refused.
        what: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// Bytes given as a lock name (or read back from the database) that are not UTF-8.
    InvalidUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// The lock tables do not exist: run [`SqlLocks::migrate`](crate::SqlLocks::migrate) first.
    MissingMigration {
        /// The table that is missing.
        table: String,
    },
    /// The lock tables were made by another version of this crate.
    SchemaVersion {
        /// The version the tables have.
        found: i64,
        /// The version this crate needs.
        expected: i64,
    },
    /// The ticket could not be released; nothing was released.
    Release(ReleaseError),
    /// The grant's lease had lapsed (its server stopped renewing it): its keys may already be
    /// held by others. Whatever rows were left of it were removed.
    LeaseExpired(GrantId),
    /// A connection string or option this backend does not accept.
    Config(String),
    /// The database failed or could not be reached; for an acquisition, nothing was taken.
    Database {
        /// Whether retrying may succeed (a lost connection, a deadlock, a Galera certification
        /// failure).
        transient: bool,
        /// The driver's message.
        message: String,
    },
}

impl SqlError {
    /// The conflict, for [`Conflict`](Self::Conflict) and [`Timeout`](Self::Timeout).
    pub fn conflict(&self) -> Option<&Conflict<String>> {
        match self {
            Self::Conflict(c) | Self::Timeout(c) => Some(c),
            _ => None,
        }
    }

    /// Converts to the error type of [`LockBackend`](lockcore::LockBackend) acquisitions: name
    /// and owner errors become [`RequestError::Backend`]; `None` for database and
    /// configuration failures, which that type cannot express.
    pub fn into_acquire_error(self) -> Result<AcquireError<String>, Self> {
        Ok(match self {
            Self::Request(r) => AcquireError::Request(r),
            Self::Conflict(c) => AcquireError::Conflict(c),
            Self::Timeout(c) => AcquireError::Timeout(c),
            e @ (Self::NameTooLong { .. } | Self::InvalidName { .. } | Self::InvalidUtf8 { .. }) => {
                AcquireError::Request(RequestError::Backend { reason: e.to_string() })
            }
            other => return Err(other),
        })
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Request(e) => e.fmt(f),
            Self::Conflict(c) => c.fmt(f),
            Self::Timeout(c) => write!(f, "timed out waiting: {c}"),
            Self::NameTooLong { what, start, len, max } => {
                write!(f, "the {what} {start:?}... is {len} characters long, more than the column's {max}")
            }
            Self::InvalidName { what, reason } => write!(f, "the {what} cannot be stored: {reason}"),
            Self::InvalidUtf8 { valid_up_to } => {
                write!(f, "a lock name must be UTF-8; these bytes are not, after the first {valid_up_to}")
            }
            Self::MissingMigration { table } => write!(
                f,
                "the lock table {table} does not exist: run the migration first (SqlLocks::migrate, or `lockcore-sql-bench --migrate URL`)"
            ),
            Self::SchemaVersion { found, expected } => write!(
                f,
                "the lock tables have schema version {found}, but this lockcore-sql needs version {expected}"
            ),
            Self::Release(e) => e.fmt(f),
            Self::LeaseExpired(g) => write!(
                f,
                "the lease of {g} lapsed before its release: its keys may have been taken by others since"
            ),
            Self::Config(m) => write!(f, "invalid configuration: {m}"),
            Self::Database { transient, message } => {
                write!(f, "database error{}: {message}", if *transient { " (transient)" } else { "" })
            }
        }
    }
}

impl std::error::Error for SqlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Request(e) => Some(e),
            Self::Release(e) => Some(e),
            Self::Conflict(c) | Self::Timeout(c) => Some(&**c),
            _ => None,
        }
    }
}

impl From<RequestError> for SqlError {
    fn from(e: RequestError) -> Self {
        Self::Request(e)
    }
}

impl From<ReleaseError> for SqlError {
    fn from(e: ReleaseError) -> Self {
        Self::Release(e)
    }
}
