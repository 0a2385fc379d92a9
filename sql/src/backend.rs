//! [`LockBackend`] for [`SqlLocks`], so the conformance suite, the model and the benchmarks
//! written against the trait run on the database too.

use crate::error::SqlError;
use crate::locks::SqlLocks;
use lockcore::{AcquireError, LockBackend, Owner, ReleaseError, Request, Snapshot, Ticket};
use std::time::Duration;

fn fail(op: &str, e: &SqlError) -> ! {
    panic!("lockcore-sql: {op} failed and LockBackend has no error for it: {e}")
}

/// The trait's error types cannot say "the database is unreachable": its methods **panic** on a
/// database or configuration failure, naming it. Code that must survive an outage calls the
/// inherent methods ([`SqlLocks::try_acquire`] and the rest), which return [`SqlError`].
/// A lapsed lease at release is [`ReleaseError::UnknownGrant`] here.
impl LockBackend<String> for SqlLocks {
    fn try_lock(&self, req: Request<String>) -> Result<Ticket<String>, AcquireError<String>> {
        self.try_acquire(req).map_err(|e| e.into_acquire_error().unwrap_or_else(|e| fail("try_lock", &e)))
    }

    fn lock(&self, req: Request<String>, timeout: Duration) -> Result<Ticket<String>, AcquireError<String>> {
        self.acquire(req, timeout).map_err(|e| e.into_acquire_error().unwrap_or_else(|e| fail("lock", &e)))
    }

    fn unlock(&self, ticket: &Ticket<String>) -> Result<(), ReleaseError> {
        match self.release(ticket) {
            Ok(()) => Ok(()),
            Err(SqlError::Release(e)) => Err(e),
            Err(SqlError::LeaseExpired(g)) => Err(ReleaseError::UnknownGrant(g)),
            Err(e) => fail("unlock", &e),
        }
    }

    fn unlock_owner(&self, owner: &Owner) -> Vec<Ticket<String>> {
        self.release_owner(owner).unwrap_or_else(|e| fail("unlock_owner", &e))
    }

    fn snapshot(&self) -> Snapshot<String> {
        SqlLocks::snapshot(self).unwrap_or_else(|e| fail("snapshot", &e))
    }
}
