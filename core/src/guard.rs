//! `LockSet`: a granted request, released when dropped.

use crate::bias::NO_READER;
use crate::clock::Stamp;
use crate::direct::DIRECT;
use crate::grant::{Entries, Entry};
use crate::mode::Mode;
use crate::request::Owner;
use crate::table::LockTable;
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
    pub(crate) owner: Owner,
    /// When granted; `None` while the set is only a prepared request (then dropping it
    /// releases nothing).
    since: Option<Stamp>,
    /// Sorted by shard, distinct. Empty once released or turned into a ticket.
    pub(crate) entries: Entries<K>,
    /// The reader slot of a grant made there (`bias.rs`), or `NO_READER`.
    pub(crate) reader: u16,
}

impl<'t, K: Hash + Eq + Clone> LockSet<'t, K> {
    /// A prepared request that holds nothing yet.
    #[inline(always)]
    pub(crate) fn unarmed(table: &'t LockTable<K>, owner: Owner) -> Self {
        Self { table, grant: GrantId(0), owner, since: None, entries: SmallVec::new(), reader: NO_READER }
    }

    /// Marks the set as granted: from now on dropping it releases the grant.
    #[inline(always)]
    pub(crate) fn arm(&mut self, grant: GrantId, since: Stamp) {
        self.grant = grant;
        self.since = Some(since);
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
        // Always set: a `LockSet` reaches users only once granted.
        self.since.map_or_else(Instant::now, |s| self.table.clock.anchor().instant(s))
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
        self.entries.iter().map(|e| (&e.key, e.mode, e.token()))
    }

    /// The fencing token of `key`, if it is held in a fenced (exclusive) mode.
    pub fn token(&self, key: &K) -> Option<Token> {
        self.entries.iter().find(|e| e.key == *key).and_then(Entry::token)
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
        if self.reader != NO_READER {
            // A ticket is released through the records: move a fast grant into them first.
            if self.reader & DIRECT != 0 {
                self.table.migrate_direct(self.reader, self.grant, &mut self.entries);
            } else {
                self.table.migrate_grant(self.reader, self.grant, &mut self.entries);
            }
            self.reader = NO_READER;
        }
        let locks = self
            .entries
            .iter()
            .map(|e| TicketLock { key: e.key.clone(), mode: e.mode, token: e.token(), message: e.message.clone() })
            .collect();
        self.give_back_entries();
        Ticket { table: self.table.id(), grant: self.grant, owner: self.owner.clone(), locks }
    }

    /// Releases the locks now (the same as dropping the guard).
    pub fn release(self) {}
}

impl<K: Hash + Eq + Clone> LockSet<'_, K> {
    /// Empties the set, and gives a pooled buffer back to the table.
    fn give_back_entries(&mut self) {
        let entries = std::mem::take(&mut self.entries);
        if entries.spilled() {
            self.table.pool.give(entries.into_vec());
        }
    }
}

impl<K: Hash + Eq + Clone> Drop for LockSet<'_, K> {
    fn drop(&mut self) {
        if let (Some(since), false) = (self.since, self.entries.is_empty()) {
            if self.reader == NO_READER {
                self.table.release_entries(self.grant, &mut self.entries, since);
            } else if self.reader & DIRECT != 0 {
                self.table.release_direct(self.reader, self.grant, &mut self.entries, since);
            } else {
                self.table.release_fast(self.reader, self.grant, &mut self.entries, since);
            }
        }
        self.give_back_entries();
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
