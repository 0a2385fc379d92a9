//! # lockcore-sql
//!
//! All-or-nothing reader/writer locks by key that several servers share through the database
//! they already run: PostgreSQL, or MySQL/MariaDB (Galera included). The same interface as
//! the in-memory [`lockcore::LockTable`] ([`lockcore::LockBackend`]), the same conflict
//! messages (holders named `server/owner`), plus what a shared table needs:
//!
//! - **Galera-safe acquisition**: one transaction inserts (or updates) the row of every key,
//!   then inserts a holder row per key; a transaction lost to a concurrent one (deadlock,
//!   certification failure, duplicate key) is retried, then reported as a conflict. Nothing
//!   reads with `SELECT ... FOR UPDATE`.
//! - **Leases**: every holder row expires unless its server's heartbeat renews it; whoever
//!   meets an expired row removes it in its own acquiring transaction. A server that dies loses
//!   its locks after the lease, never before.
//! - **Fencing tokens**: each exclusive grant gets the key's counter plus one, kept across
//!   releases, so a resource can refuse a holder whose lease lapsed.
//! - **Waiting**: jittered exponential backoff until the deadline, and on PostgreSQL
//!   LISTEN/NOTIFY to wake waiters when a release commits.
//!
//! Schema, rules and the guarantees on a Galera cluster or a PostgreSQL primary with
//! replicas: `docs/sql.md`.
//!
//! ```no_run
//! use lockcore::{LockMessage, Request};
//! use lockcore_sql::{Options, SqlLocks};
//!
//! let url = "mysql://root@127.0.0.1:3306/test";
//! SqlLocks::migrate(url, &Options::new("server-a"))?;
//! let a = SqlLocks::connect(url, Options::new("server-a"))?;
//! let b = SqlLocks::connect(url, Options::new("server-b"))?;
//! let t = a.try_acquire(
//!     Request::new("cmd-7").exclusive_with("vm-42".to_string(), LockMessage::new("VM is being created")),
//! )?;
//! let err = b.try_acquire(Request::new("cmd-9").shared("vm-42".to_string())).unwrap_err();
//! assert!(err.to_string().contains("held exclusive by server-a/cmd-7"));
//! a.release(&t)?;
//! # Ok::<(), lockcore_sql::SqlError>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod backend;
mod db;
mod error;
mod locks;
#[cfg(feature = "mysql")]
mod my;
mod name;
mod options;
#[cfg(feature = "postgres")]
mod pg;
mod wake;

pub use db::SCHEMA_VERSION;
pub use error::SqlError;
pub use locks::{Dialect, SqlLocks};
pub use name::{named, LockName, MAX_NAME_CHARS};
pub use options::Options;
