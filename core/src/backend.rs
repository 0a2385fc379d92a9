//! The interface every lock backend implements: this in-memory table first, a database table
//! and network clients later. The model checker, the fuzzers and the benchmarks are written
//! against it.

use crate::conflict::AcquireError;
use crate::request::{Owner, Request};
use crate::snapshot::Snapshot;
use crate::table::LockTable;
use crate::ticket::{ReleaseError, Ticket};
use std::fmt;
use std::hash::Hash;
use std::time::Duration;

/// A backend could not carry out an operation for a reason of its own (its database did not
/// answer, a connection broke, it is misconfigured), as opposed to a refusal the lock semantics
/// explain (a conflict, a timeout, an unknown ticket). The in-memory table never returns it.
///
/// Whether the operation took effect is the backend's to document (`lockcore-sql`: every
/// operation is one transaction, so it happened whole or not at all, and when the connection
/// broke during the commit it may not be known which).
///
/// ```
/// use lockcore::BackendError;
/// let e = BackendError::new("lock", "connection refused by 127.0.0.1:5432");
/// assert_eq!(e.to_string(), "the lock backend could not lock: connection refused by 127.0.0.1:5432");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    operation: &'static str,
    reason: String,
}

impl BackendError {
    /// An error of `operation` (`"lock"`, `"unlock"`, `"snapshot"`, ...) for `reason`.
    pub fn new(operation: &'static str, reason: impl Into<String>) -> Self {
        Self { operation, reason: reason.into() }
    }

    /// The operation that failed.
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// Why, in the backend's words.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the lock backend could not {}: {}", self.operation, self.reason)
    }
}

impl std::error::Error for BackendError {}

/// All-or-nothing keyed locks, held as [`Ticket`]s.
///
/// Tickets rather than guards, because a guard's lifetime is an in-process notion while a
/// ticket can be stored, sent and released by another process or after a restart.
pub trait LockBackend<K> {
    /// Takes every key or none, without waiting for holders.
    ///
    /// # Errors
    /// See [`LockTable::try_acquire`].
    fn try_lock(&self, req: Request<K>) -> Result<Ticket<K>, AcquireError<K>>;

    /// Takes every key or none, waiting up to `timeout`.
    ///
    /// # Errors
    /// See [`LockTable::acquire`].
    fn lock(&self, req: Request<K>, timeout: Duration) -> Result<Ticket<K>, AcquireError<K>>;

    /// Releases exactly the ticket's grant.
    ///
    /// # Errors
    /// See [`LockTable::release`].
    fn unlock(&self, ticket: &Ticket<K>) -> Result<(), ReleaseError>;

    /// Releases everything an owner holds; returns what was freed.
    ///
    /// # Errors
    /// [`BackendError`] if the backend could not do it (never for the in-memory table).
    fn unlock_owner(&self, owner: &Owner) -> Result<Vec<Ticket<K>>, BackendError>;

    /// Every held lock and waiter.
    ///
    /// # Errors
    /// [`BackendError`] if the backend could not read them (never for the in-memory table).
    fn snapshot(&self) -> Result<Snapshot<K>, BackendError>;
}

impl<K: Hash + Eq + Clone> LockBackend<K> for LockTable<K> {
    fn try_lock(&self, req: Request<K>) -> Result<Ticket<K>, AcquireError<K>> {
        self.try_acquire(req).map(|s| s.into_ticket())
    }

    fn lock(&self, req: Request<K>, timeout: Duration) -> Result<Ticket<K>, AcquireError<K>> {
        self.acquire(req, timeout).map(|s| s.into_ticket())
    }

    fn unlock(&self, ticket: &Ticket<K>) -> Result<(), ReleaseError> {
        self.release(ticket)
    }

    fn unlock_owner(&self, owner: &Owner) -> Result<Vec<Ticket<K>>, BackendError> {
        Ok(self.release_owner(owner))
    }

    fn snapshot(&self) -> Result<Snapshot<K>, BackendError> {
        Ok(LockTable::snapshot(self))
    }
}
