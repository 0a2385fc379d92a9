//! What the engine needs from a database connection: one method per statement, written once
//! for PostgreSQL (`pg.rs`) and once for MySQL/MariaDB (`my.rs`).
//!
//! Every statement that changes a key's state first writes the key's row in `<prefix>locks`
//! ([`Conn::touch`]): that write is what serializes two transactions on one key, by the row lock
//! on a single server and by write-set certification on Galera (where local row locks do not
//! span nodes). Nothing reads with `SELECT ... FOR UPDATE`.

use crate::error::SqlError;

/// The schema version [`SqlLocks::migrate`](crate::SqlLocks::migrate) creates and
/// [`SqlLocks::connect`](crate::SqlLocks::connect) requires.
pub const SCHEMA_VERSION: i64 = 1;

/// A database failure, classified.
#[derive(Debug)]
pub(crate) enum DbError {
    /// Lost to a concurrent transaction: a deadlock, a serialization or Galera certification
    /// failure, a unique-key violation. The transaction was rolled back; retrying may succeed.
    Contention(String),
    /// The connection is gone: drop it and open another.
    Connection(String),
    /// A pooled connection was found dead before the transaction did anything (the database
    /// restarted, an idle timeout): retrying at once on a new connection is safe.
    Stale(String),
    /// A table is missing (the migration was not run).
    MissingTable(String),
    /// Anything else.
    Other(String),
}

impl From<DbError> for SqlError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Contention(m) | DbError::Connection(m) | DbError::Stale(m) => {
                SqlError::Database { transient: true, message: m }
            }
            DbError::MissingTable(table) => SqlError::MissingMigration { table },
            DbError::Other(m) => SqlError::Database { transient: false, message: m },
        }
    }
}

pub(crate) type DbResult<T> = Result<T, DbError>;

/// A live holder row of one key.
#[derive(Clone, Debug)]
pub(crate) struct HolderRow {
    pub name: String,
    pub grant: i64,
    pub owner: String,
    pub server: String,
    pub exclusive: bool,
    pub message: Option<String>,
    pub token: Option<i64>,
    /// Seconds since it was granted, by the database's clock.
    pub age_secs: f64,
}

/// A holder row to insert.
pub(crate) struct NewHolder<'a> {
    pub name: &'a str,
    pub grant: i64,
    pub owner: &'a str,
    pub server: &'a str,
    pub session: i64,
    pub exclusive: bool,
    pub message: Option<&'a str>,
    pub token: Option<i64>,
    pub lease_ms: i64,
}

/// One row of a grant, for release.
#[derive(Clone, Debug)]
pub(crate) struct GrantRow {
    pub name: String,
    pub owner: String,
    pub exclusive: bool,
    pub message: Option<String>,
    pub token: Option<i64>,
    pub expired: bool,
}

/// One connection. Methods run inside the transaction opened by [`Conn::begin`] unless they
/// say otherwise.
pub(crate) trait Conn: Send {
    /// Opens a READ COMMITTED transaction.
    fn begin(&mut self) -> DbResult<()>;
    /// Commits.
    fn commit(&mut self) -> DbResult<()>;
    /// Rolls back (also fine when no transaction is open).
    fn rollback(&mut self) -> DbResult<()>;
    /// Inserts or updates the key's `locks` row, taking its row lock (or certification key).
    fn touch(&mut self, name: &str) -> DbResult<()>;
    /// Deletes the key's holders whose lease has lapsed; returns how many.
    fn delete_expired(&mut self, name: &str) -> DbResult<u64>;
    /// The key's holders (live ones, after `delete_expired`).
    fn holders(&mut self, name: &str) -> DbResult<Vec<HolderRow>>;
    /// Increments the key's fencing counter and returns the new value (an exclusive grant).
    fn bump_token(&mut self, name: &str) -> DbResult<i64>;
    /// Inserts a holder row.
    fn insert_holder(&mut self, h: &NewHolder<'_>) -> DbResult<()>;
    /// The rows of one grant (outside or inside a transaction).
    fn grant_rows(&mut self, grant: i64) -> DbResult<Vec<GrantRow>>;
    /// Deletes every row of the grant; returns how many.
    fn delete_grant(&mut self, grant: i64) -> DbResult<u64>;
    /// Wakes waiters of other servers when the transaction commits (PostgreSQL NOTIFY).
    fn notify(&mut self) -> DbResult<()>;
    /// Extends the lease of the session's live holders (autocommit); returns how many rows.
    fn renew(&mut self, session: i64, lease_ms: i64) -> DbResult<u64>;
    /// Every live holder (autocommit).
    fn all_holders(&mut self) -> DbResult<Vec<HolderRow>>;
    /// The grants of one owner of one server, live or lapsed (autocommit).
    fn owner_grants(&mut self, server: &str, owner: &str) -> DbResult<Vec<i64>>;
    /// The schema version and table id (autocommit); `MissingTable` if not migrated.
    fn schema(&mut self) -> DbResult<(i64, i64)>;
    /// Creates the tables if they do not exist (autocommit, idempotent).
    fn migrate(&mut self, table_id: i64) -> DbResult<()>;
    /// Drops the tables (tests and uninstall).
    fn drop_tables(&mut self) -> DbResult<()>;
    /// The server-side id of this connection (PostgreSQL backend pid, MySQL connection id).
    fn connection_id(&mut self) -> DbResult<i64>;
}

/// The table names for one prefix.
#[derive(Clone, Debug)]
pub(crate) struct Tables {
    pub prefix: String,
    pub schema: String,
    pub locks: String,
    pub holders: String,
}

impl Tables {
    pub fn new(prefix: &str) -> Result<Self, SqlError> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 40
            && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !prefix.as_bytes()[0].is_ascii_digit();
        if !ok {
            return Err(SqlError::Config(format!(
                "table prefix {prefix:?} must be 1-40 characters of a-z, 0-9 and _, not starting with a digit"
            )));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            schema: format!("{prefix}schema"),
            locks: format!("{prefix}locks"),
            holders: format!("{prefix}holders"),
        })
    }

    /// The PostgreSQL NOTIFY channel for releases.
    pub fn channel(&self) -> String {
        format!("{}released", self.prefix)
    }
}
