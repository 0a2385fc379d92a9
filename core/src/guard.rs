//! `LockSet`: a granted request, released when dropped.

use crate::metrics::Counter;
use crate::mode::Mode;
use crate::request::Owner;
use crate::table::{Entry, LockTable};
use crate::ticket::{GrantId, Ticket, TicketLock, Token};
use smallvec::SmallVec;
use std::fmt;
use std::hash::Hash;
use std::time::Instant;

/// The locks of one granted request, held until this guard is dropped (the scope of a
/// command's execution), or turned into a [`Ticket`] to keep them longer.
#[must_use = "the locks are released as soon as the LockSet is dropped"]
pub struct LockSet<'t, K: Hash + Eq + Clone> {
    table: &'t LockTable<K>,
    grant: GrantId,
    owner: Owner,
    since: Instant,
    /// Empty once released or turned into a ticket.
    entries: SmallVec<[Entry<K>; 16]>,
}

impl<'t, K: Hash + Eq + Clone> LockSet<'t, K> {
    pub(crate) fn new(
        table: &'t LockTable<K>,
        grant: GrantId,
        owner: Owner,
        since: Instant,
        entries: SmallVec<[Entry<K>; 16]>,
    ) -> Self {
        Self { table, grant, owner, since, entries }
    }

    /// The grant's id.
    pub fn grant(&self) -> GrantId {
        self.grant
    }

    /// Who holds it.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// When it was granted.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Distinct keys held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is held (only after the locks were given away).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The keys held, with their modes and fencing tokens.
    pub fn locks(&self) -> impl Iterator<Item = (&K, Mode, Option<Token>)> {
        self.entries.iter().map(|e| (&e.slot.key, e.mode, e.token))
    }

    /// The fencing token of `key`, if it is held in a fenced (exclusive) mode.
    pub fn token(&self, key: &K) -> Option<Token> {
        self.entries.iter().find(|e| e.slot.key == *key).and_then(|e| e.token)
    }

    /// Keeps the locks past this scope: they stay held until
    /// [`LockTable::release`] is called with the ticket (a command's end-action).
    ///
    /// ```
    /// use lockcore::{LockTable, Request};
    /// let table = LockTable::new();
    /// let ticket = table.try_acquire(Request::new("cmd").shared("template-1")).unwrap().into_ticket();
    /// assert!(table.try_acquire(Request::new("rm").exclusive("template-1")).is_err());
    /// table.release(&ticket).unwrap();
    /// assert!(table.release(&ticket).is_err()); // released once only
    /// ```
    pub fn into_ticket(mut self) -> Ticket<K> {
        let locks =
            self.entries.iter().map(|e| TicketLock { key: e.slot.key.clone(), mode: e.mode, token: e.token }).collect();
        self.entries.clear();
        Ticket { table: self.table.id(), grant: self.grant, owner: self.owner.clone(), locks }
    }

    /// Releases the locks now (the same as dropping the guard).
    pub fn release(self) {}
}

impl<K: Hash + Eq + Clone> Drop for LockSet<'_, K> {
    fn drop(&mut self) {
        if !self.entries.is_empty() {
            self.table.release_entries(self.grant, &self.entries, self.since, Counter::Releases);
        }
    }
}

impl<K: Hash + Eq + Clone + fmt::Debug> fmt::Debug for LockSet<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockSet")
            .field("grant", &self.grant)
            .field("owner", &self.owner)
            .field("locks", &self.locks().collect::<Vec<_>>())
            .finish()
    }
}
