//! One shard of the table: an index from keys to records, and the slab the records live in.
//!
//! # Implementation details
//!
//! The shard's latch (a `parking_lot` mutex: a CAS to take, a CAS to drop, a short bounded
//! spin and then park when contended) guards everything here: the index, every record in the
//! slab, the free list and the token floor. There is no other lock on the acquire or release
//! path, and no reference count: a request finds its keys *under* the latches it decides
//! under, and a guard names its records by slab position, which stays valid for as long as
//! the guard's grant holds the record (a held record is never freed).
//!
//! A record is freed as soon as nobody holds or waits for its key: its index entry goes, its
//! key is dropped, its last fencing token is folded into the shard's floor, and its position
//! goes on the free list with the capacity of its holder list and queue, for the next key new
//! to the shard. So the table holds the keys in use and no more (a workload over a million
//! keys keeps a few records in cache instead of a million out of it), and a warm shard
//! allocates nothing.

use crate::slot::Slot;
use crate::sync::{Mutex, MutexGuard};
use hashbrown::HashTable;

/// A shard, alone on its cache lines (128 bytes: a line and the adjacent-line prefetch), so
/// threads working in neighbouring shards do not invalidate each other's latch.
#[repr(align(128))]
pub(crate) struct Shard<K>(Mutex<ShardState<K>>);

impl<K> Shard<K> {
    pub(crate) fn new(token_floor: u64) -> Self {
        Self(Mutex::new(ShardState {
            index: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            floor: token_floor,
            grants: 0,
            releases: 0,
        }))
    }

    /// Takes the shard's latch.
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, ShardState<K>> {
        self.0.lock()
    }
}

/// Everything a shard holds, under its latch.
pub(crate) struct ShardState<K> {
    /// Each key's full hash and its record's position in `slots`. The hash beside the
    /// position lets a probe compare hashes in the index's own memory and look at the record
    /// only for the (almost always single) real match.
    index: HashTable<(u64, u32)>,
    /// The records, live and free.
    pub(crate) slots: Vec<Slot<K>>,
    /// Positions of free records in `slots`, reused last-freed first (the warmest).
    free: Vec<u32>,
    /// Every fencing token ever handed out on a key whose record this shard freed is at most
    /// this, and a new record starts from it: a key's tokens keep increasing across the
    /// freeing of its record (and, from a persisted floor, across restarts).
    floor: u64,
    /// Grants decided in this shard (a grant of several keys counts in the shard of its first
    /// key) and releases of them by their holders: counted under the latch, so the hot path
    /// pays no atomic for them (`LockTable::metrics` adds them up).
    pub(crate) grants: u64,
    pub(crate) releases: u64,
}

impl<K: Eq> ShardState<K> {
    /// The position of `key`'s record, if the shard has one.
    #[inline]
    pub(crate) fn find(&self, hash: u64, key: &K) -> Option<u32> {
        let slots = &self.slots;
        self.index.find(hash, |&(h, i)| h == hash && slots[i as usize].key.as_ref() == Some(key)).map(|&(_, i)| i)
    }

    /// The position of `key`'s record, made (from a free record if there is one) if the
    /// shard has none. A new record stores its own copy of the key.
    #[inline]
    pub(crate) fn find_or_insert(&mut self, hash: u64, key: &K) -> u32
    where
        K: Clone,
    {
        let Self { index, slots, free, floor, .. } = self;
        // One probe: the entry is either the key's or the vacant place for it.
        match index.entry(hash, |&(h, i)| h == hash && slots[i as usize].key.as_ref() == Some(key), |&(h, _)| h) {
            hashbrown::hash_table::Entry::Occupied(e) => e.get().1,
            hashbrown::hash_table::Entry::Vacant(e) => {
                let at = Self::make_record(slots, free, *floor, hash, key.clone());
                e.insert((hash, at));
                at
            }
        }
    }

    /// A record for a key new to the shard, from the free list if it can.
    #[inline(never)]
    fn make_record(slots: &mut Vec<Slot<K>>, free: &mut Vec<u32>, floor: u64, hash: u64, key: K) -> u32 {
        match free.pop() {
            Some(at) => {
                let s = &mut slots[at as usize];
                debug_assert!(s.key.is_none() && s.is_idle() && s.holders.is_empty());
                s.key = Some(key);
                s.hash = hash;
                s.last_token = floor;
                at
            }
            None => {
                // More than 2^32 live keys in one shard would need 2^32 x 100 bytes first.
                let at = u32::try_from(slots.len()).unwrap_or(u32::MAX);
                slots.push(Slot::new(key, hash, floor));
                at
            }
        }
    }

    /// Frees the record at `at` if it is live and nobody holds or waits for its key.
    /// Returns whether it did.
    #[inline]
    pub(crate) fn free_if_idle(&mut self, at: u32) -> bool {
        let Some(s) = self.slots.get_mut(at as usize) else { return false };
        if s.key.is_none() || !s.is_idle() {
            return false;
        }
        let hash = s.hash;
        self.floor = self.floor.max(s.last_token);
        s.key = None;
        if let Ok(entry) = self.index.find_entry(hash, |&(_, i)| i == at) {
            entry.remove();
        }
        self.free.push(at);
        true
    }

    /// The live records.
    pub(crate) fn live(&self) -> impl Iterator<Item = (u32, &Slot<K>)> {
        self.index.iter().map(|&(_, i)| (i, &self.slots[i as usize]))
    }

    /// Positions of the live records (to change them one by one).
    pub(crate) fn live_positions(&self) -> impl Iterator<Item = u32> + '_ {
        self.index.iter().map(|&(_, i)| i)
    }

    /// Keys with a live record.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Gives back the memory of free records: drops them and shrinks the index and the slab
    /// to what the live records need. Returns how many free records were dropped.
    pub(crate) fn shrink(&mut self) -> usize {
        // Free records at the end of the slab can go; a free record before a live one must
        // stay, since a guard names its records by position.
        let mut dropped = 0;
        while self.slots.last().is_some_and(|s| s.key.is_none()) {
            self.slots.pop();
            dropped += 1;
        }
        let len = self.slots.len();
        self.free.retain(|&at| (at as usize) < len);
        // The free records that must stay give back their lists' capacity.
        for &at in &self.free {
            let s = &mut self.slots[at as usize];
            s.holders = Vec::new();
            s.queue = Default::default();
        }
        self.slots.shrink_to_fit();
        self.free.shrink_to_fit();
        self.index.shrink_to_fit(|&(h, _)| h);
        dropped
    }
}
