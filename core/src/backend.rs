//! The interface every lock backend implements: this in-memory table first, a database table
//! and network clients later. The model checker, the fuzzers and the benchmarks are written
//! against it.

use crate::conflict::AcquireError;
use crate::request::{Owner, Request};
use crate::snapshot::Snapshot;
use crate::table::LockTable;
use crate::ticket::{ReleaseError, Ticket};
use std::hash::Hash;
use std::time::Duration;

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
    fn unlock_owner(&self, owner: &Owner) -> Vec<Ticket<K>>;

    /// Every held lock and waiter.
    fn snapshot(&self) -> Snapshot<K>;
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

    fn unlock_owner(&self, owner: &Owner) -> Vec<Ticket<K>> {
        self.release_owner(owner)
    }

    fn snapshot(&self) -> Snapshot<K> {
        LockTable::snapshot(self)
    }
}
