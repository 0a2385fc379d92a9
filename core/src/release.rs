//! Releasing: by guard, by ticket, by owner, and forced.

use crate::clock::Stamp;
use crate::grant::{notify_all, Entry, Latches};
use crate::metrics::Counter;
use crate::request::Owner;
use crate::slot::{HeldBy, WakeList};
use crate::table::LockTable;
use crate::ticket::{GrantId, ReleaseError, Ticket, TicketLock};
use smallvec::SmallVec;
use std::hash::Hash;

/// A ticket's key: its shard, its record's position if the table has one, and the ticket's lock.
type Located<'a, K> = (u16, Option<u32>, &'a TicketLock<K>);

impl<K: Hash + Eq + Clone> LockTable<K> {
    /// Releases a guard's grant. A record already gone (force-released) is skipped: a grant id
    /// is never reused, so this cannot touch anyone else's lock, even where the guard's record
    /// position has since been given to another key. Returns whether it released anything.
    pub(crate) fn release_entries(&self, grant: GrantId, entries: &mut [Entry<K>], since: Stamp) -> bool {
        let removed = if let [e] = entries {
            // One key: no list of latches to build, and no wake list unless someone waits.
            let mut st = self.shards[usize::from(e.shard)].lock();
            let Some(slot) = st.slots.get_mut(e.slot as usize) else { return false };
            let removed = slot.remove_holder(grant).is_some();
            if removed {
                st.releases += 1;
                let slot = &mut st.slots[e.slot as usize];
                if !slot.has_waiters() {
                    st.retire_if_idle(e.slot);
                } else {
                    let mut wake = WakeList::new();
                    slot.collect_wakeable(&self.modes, &mut wake);
                    drop(st);
                    notify_all(wake);
                }
            }
            removed
        } else {
            let mut wake = WakeList::new();
            let mut removed = false;
            let mut latches = Latches::lock(self, entries);
            for e in entries.iter_mut() {
                let st = latches.state(e);
                let Some(slot) = st.slots.get_mut(e.slot as usize) else { continue };
                if slot.take_holder_owner(grant, &mut e.owner) {
                    removed = true;
                    slot.collect_wakeable(&self.modes, &mut wake);
                    st.retire_if_idle(e.slot);
                }
            }
            if removed {
                latches.state(&entries[0]).releases += 1;
            }
            drop(latches);
            notify_all(wake);
            removed
        };
        // A guard whose grant was force-released frees nothing and is not a release.
        if removed {
            self.metrics.record_hold(self.clock.since(since));
        }
        removed
    }

    /// Releases the grant a [`Ticket`] stands for (a command's end-action).
    ///
    /// Checked against the grant, never by key: all the ticket's keys are released, or none.
    ///
    /// # Errors
    /// [`ReleaseError::ForeignTable`] for a ticket of another table,
    /// [`ReleaseError::UnknownGrant`] if the grant is not held (released twice, force-released),
    /// [`ReleaseError::Mismatch`] if the ticket's keys or modes are not exactly the grant's.
    pub fn release(&self, ticket: &Ticket<K>) -> Result<(), ReleaseError> {
        if ticket.table != self.id() {
            return Err(ReleaseError::ForeignTable { expected: self.id(), found: ticket.table });
        }
        let grant = ticket.grant;
        // (hash, shard, the ticket's lock) per key, latched in shard order.
        let mut keys: SmallVec<[(u64, u16, &TicketLock<K>); 16]> =
            ticket.locks.iter().map(|l| (self.place(&l.key), l)).map(|((h, s), l)| (h, s, l)).collect();
        keys.sort_by_key(|&(_, shard, _)| shard);
        let mut latches = Latches::lock_shards(self, keys.iter().map(|&(_, shard, _)| shard));
        // Each key's record position (`None`: the table has no record of the key).
        let mut at: SmallVec<[Located<'_, K>; 16]> =
            keys.iter().map(|&(hash, shard, l)| (shard, latches.shard(shard).find(hash, &l.key), l)).collect();
        // A key named twice is one record: count it once, and let the key count below refuse
        // the ticket.
        at.sort_by_key(|&(shard, slot, _)| (shard, slot));
        let before = at.len();
        at.dedup_by(|later, kept| later.1.is_some() && (later.0, later.1) == (kept.0, kept.1));
        let duplicate = at.len() != before;
        let mut found = 0;
        let mut exact = !duplicate;
        for &(shard, slot, l) in &at {
            let Some(slot) = slot else {
                exact = false;
                continue;
            };
            let st = &latches.shard(shard).slots[slot as usize];
            if let Some(h) = st.holders.iter().find(|h| h.grant == grant) {
                found += 1;
                exact &= h.mode == l.mode && h.owner == ticket.owner && h.n_keys as usize == ticket.locks.len();
            } else {
                exact = false;
            }
        }
        if found == 0 {
            drop(latches);
            // The ticket names none of the grant's keys. Tell an edited ticket of a live
            // grant from a released one; this scan runs on the error path only.
            return Err(if self.grant_is_held(grant) {
                ReleaseError::Mismatch(grant)
            } else {
                ReleaseError::UnknownGrant(grant)
            });
        }
        if !exact {
            return Err(ReleaseError::Mismatch(grant));
        }
        let mut wake = WakeList::new();
        let mut since = None;
        for &(shard, slot, _) in &at {
            let Some(slot) = slot else { continue };
            let st = latches.shard(shard);
            let record = &mut st.slots[slot as usize];
            since = record.remove_holder(grant).map(|h| h.since);
            record.collect_wakeable(&self.modes, &mut wake);
            st.retire_if_idle(slot);
        }
        latches.shard(at[0].0).releases += 1;
        drop(latches);
        notify_all(wake);
        if let Some(since) = since {
            self.metrics.record_hold(self.clock.since(since));
        }
        Ok(())
    }

    /// Releases everything `owner` holds (a command that ended without its end-action, a
    /// server that is gone) and returns what was freed, one ticket per grant.
    ///
    /// Goes through the table shard by shard: a request racing with it may see some of the
    /// owner's keys freed before others.
    pub fn release_owner(&self, owner: &Owner) -> Vec<Ticket<K>> {
        let freed = self.release_where(|h| h.owner == *owner);
        self.metrics.add(Counter::OwnerReleases, freed.len() as u64);
        freed
    }

    /// Administrative release of one grant, whoever holds it (a stuck command). Its
    /// guard or ticket then releases nothing, and a ticket release reports
    /// [`ReleaseError::UnknownGrant`].
    ///
    /// # Errors
    /// [`ReleaseError::UnknownGrant`] if the grant is not held.
    pub fn force_release(&self, grant: GrantId) -> Result<Ticket<K>, ReleaseError> {
        let mut freed = self.release_where(|h| h.grant == grant);
        match freed.pop() {
            Some(t) => {
                self.metrics.add(Counter::ForcedReleases, 1);
                Ok(t)
            }
            None => Err(ReleaseError::UnknownGrant(grant)),
        }
    }

    /// Whether any key is held by `grant` (a scan of the whole table, and of the reader slots
    /// for a grant made there: an error path only, so it reads the slots rather than revoke
    /// every read bias of the table).
    fn grant_is_held(&self, grant: GrantId) -> bool {
        self.shards.iter().any(|s| s.lock().live().any(|(_, r)| r.holders.iter().any(|h| h.grant == grant)))
            || self.holds_fast(grant)
    }

    fn release_where(&self, mut pred: impl FnMut(&HeldBy) -> bool) -> Vec<Ticket<K>> {
        let mut tickets: Vec<Ticket<K>> = Vec::new();
        let mut index: std::collections::HashMap<GrantId, usize> = std::collections::HashMap::new();
        let mut removed = Vec::new();
        let mut wake = WakeList::new();
        for shard in 0..self.shards.len() {
            // At most 2^16 shards.
            let mut st = self.lock_settled(shard as u16);
            // In position order, so a freed grant's keys come out in the order its guard had them.
            let mut positions: Vec<u32> = st.live_positions().collect();
            positions.sort_unstable();
            for at in positions {
                let record = &mut st.slots[at as usize];
                record.remove_holders_where(&mut pred, &mut removed);
                if removed.is_empty() {
                    continue;
                }
                record.collect_wakeable(&self.modes, &mut wake);
                let Some(key) = record.key().cloned() else { continue };
                st.retire_if_idle(at);
                for h in removed.drain(..) {
                    let lock = TicketLock { key: key.clone(), mode: h.mode, token: h.token(), message: h.message };
                    match index.get(&h.grant) {
                        Some(&i) => tickets[i].locks.push(lock),
                        None => {
                            // One hold-time sample per grant, not per key.
                            self.metrics.record_hold(self.clock.since(h.since));
                            index.insert(h.grant, tickets.len());
                            tickets.push(Ticket {
                                table: self.id(),
                                grant: h.grant,
                                owner: h.owner,
                                locks: vec![lock],
                            });
                        }
                    }
                }
            }
            drop(st);
            notify_all(std::mem::take(&mut wake));
        }
        tickets
    }
}
