//! Releasing: by guard, by ticket, by owner, and forced.

use crate::metrics::Counter;
use crate::request::Owner;
use crate::slot::{HeldBy, Slot, WakeList};
use crate::sync::Arc;
use crate::table::{latch, notify_all, Entry, LockTable};
use crate::ticket::{GrantId, ReleaseError, Ticket, TicketLock};
use smallvec::SmallVec;
use std::hash::Hash;
use std::time::Instant;

type SlotAndLock<'a, K> = (Arc<Slot<K>>, &'a TicketLock<K>);

impl<K: Hash + Eq + Clone> LockTable<K> {
    /// Releases a guard's grant. A record already gone (force-released) is skipped: a grant id
    /// is never reused, so this cannot touch anyone else's lock.
    pub(crate) fn release_entries(&self, grant: GrantId, entries: &[Entry<K>], since: Instant, counter: Counter) {
        let removed = if let [e] = entries {
            // One key: no list of latches to build, and no wake list unless someone waits.
            let mut st = e.slot.state.lock();
            let removed = st.drop_holder(grant);
            if removed && !st.queue.is_empty() {
                let mut wake = WakeList::new();
                st.collect_wakeable(&self.modes, &mut wake);
                drop(st);
                notify_all(wake);
            }
            removed
        } else {
            let mut wake = WakeList::new();
            let mut removed = false;
            let mut latches = latch(entries);
            for st in latches.iter_mut() {
                if st.drop_holder(grant) {
                    removed = true;
                    st.collect_wakeable(&self.modes, &mut wake);
                }
            }
            drop(latches);
            notify_all(wake);
            removed
        };
        // A guard whose grant was force-released frees nothing and is not a release.
        if removed {
            self.metrics.add_and_record_hold(counter, since.elapsed());
        }
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
        let mut slots: SmallVec<[SlotAndLock<'_, K>; 16]> = SmallVec::new();
        let mut missing = 0;
        for l in &ticket.locks {
            match self.find(&l.key) {
                Some(s) => slots.push((s, l)),
                None => missing += 1,
            }
        }
        slots.sort_by_key(|(s, _)| Slot::latch_order(s));
        // A key named twice would be latched twice (a self-deadlock): latch it once, and let
        // the key count below refuse the ticket.
        let before = slots.len();
        slots.dedup_by(|later, kept| Arc::ptr_eq(&later.0, &kept.0));
        let duplicate = slots.len() != before;
        let mut latches: SmallVec<[_; 16]> = slots.iter().map(|(s, _)| s.state.lock()).collect();
        let mut found = 0;
        let mut exact = missing == 0 && !duplicate;
        for (st, (_, l)) in latches.iter().zip(&slots) {
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
        for st in latches.iter_mut() {
            since = st.remove_holder(grant).map(|h| h.since);
            st.collect_wakeable(&self.modes, &mut wake);
        }
        drop(latches);
        notify_all(wake);
        self.metrics.add(Counter::Releases, 1);
        if let Some(since) = since {
            self.metrics.record_hold(since.elapsed());
        }
        Ok(())
    }

    /// Releases everything `owner` holds (a command that ended without its end-action, a
    /// server that is gone) and returns what was freed, one ticket per grant.
    ///
    /// Scans the whole table, key by key: a request racing with it may see some of the
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

    /// Whether any key is held by `grant` (a scan of the whole table).
    fn grant_is_held(&self, grant: GrantId) -> bool {
        self.with_all_slots(|slots| slots.iter().any(|s| s.state.lock().holders.iter().any(|h| h.grant == grant)))
    }

    fn release_where(&self, mut pred: impl FnMut(&HeldBy) -> bool) -> Vec<Ticket<K>> {
        let slots = self.with_all_slots(|s| s);
        let mut tickets: Vec<Ticket<K>> = Vec::new();
        let mut index: std::collections::HashMap<GrantId, usize> = std::collections::HashMap::new();
        let mut removed = Vec::new();
        let mut wake = WakeList::new();
        for slot in slots {
            let mut st = slot.state.lock();
            st.remove_holders_where(&mut pred, &mut removed);
            if removed.is_empty() {
                continue;
            }
            st.collect_wakeable(&self.modes, &mut wake);
            drop(st);
            for h in removed.drain(..) {
                let lock = TicketLock { key: slot.key.clone(), mode: h.mode, token: h.token(), message: h.message };
                match index.get(&h.grant) {
                    Some(&i) => tickets[i].locks.push(lock),
                    None => {
                        // One hold-time sample per grant, not per key.
                        self.metrics.record_hold(h.since.elapsed());
                        index.insert(h.grant, tickets.len());
                        tickets.push(Ticket { table: self.id(), grant: h.grant, owner: h.owner, locks: vec![lock] });
                    }
                }
            }
        }
        notify_all(wake);
        tickets
    }
}
