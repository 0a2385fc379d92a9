//! [`LockBackend`] for [`SqlLocks`], so the conformance suite, the model and the benchmarks
//! written against the trait run on the database too.

use crate::error::SqlError;
use crate::locks::SqlLocks;
use lockcore::{AcquireError, BackendError, LockBackend, Owner, ReleaseError, Request, Snapshot, Ticket};
use std::time::Duration;

/// A database or configuration failure, as the trait reports it.
fn failed(op: &'static str, e: &SqlError) -> BackendError {
    BackendError::new(op, e.to_string())
}

/// Through the trait, a database or configuration failure (the database does not answer, the
/// migration is missing, ...) is [`AcquireError::Backend`] or [`ReleaseError::Backend`] or a
/// [`BackendError`], naming it; the inherent methods ([`SqlLocks::try_acquire`] and the rest)
/// return the typed [`SqlError`] instead. A lapsed lease at release is
/// [`ReleaseError::UnknownGrant`] here.
impl LockBackend<String> for SqlLocks {
    fn try_lock(&self, req: Request<String>) -> Result<Ticket<String>, AcquireError<String>> {
        self.try_acquire(req)
            .map_err(|e| e.into_acquire_error().unwrap_or_else(|e| AcquireError::Backend(failed("lock", &e))))
    }

    fn lock(&self, req: Request<String>, timeout: Duration) -> Result<Ticket<String>, AcquireError<String>> {
        self.acquire(req, timeout)
            .map_err(|e| e.into_acquire_error().unwrap_or_else(|e| AcquireError::Backend(failed("lock", &e))))
    }

    fn unlock(&self, ticket: &Ticket<String>) -> Result<(), ReleaseError> {
        match self.release(ticket) {
            Ok(()) => Ok(()),
            Err(SqlError::Release(e)) => Err(e),
            Err(SqlError::LeaseExpired(g)) => Err(ReleaseError::UnknownGrant(g)),
            Err(e) => Err(ReleaseError::Backend(failed("unlock", &e))),
        }
    }

    fn unlock_owner(&self, owner: &Owner) -> Result<Vec<Ticket<String>>, BackendError> {
        self.release_owner(owner).map_err(|e| failed("unlock an owner's locks", &e))
    }

    fn snapshot(&self) -> Result<Snapshot<String>, BackendError> {
        SqlLocks::snapshot(self).map_err(|e| failed("read a snapshot", &e))
    }
}
