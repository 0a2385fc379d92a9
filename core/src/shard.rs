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
//! When nobody holds or waits for a key any more, its record is freed at once on a table with
//! direct grants (the key's word turns EMPTY, and the next request of it goes direct). Without
//! direct grants it joins the shard's few most recently idle records (at most [`IDLE_KEPT`]),
//! still in the index, so a hot key taken again finds it there, and the oldest idle record
//! beyond those is freed. Freeing removes the index entry, drops the key, folds its last
//! fencing token into the shard's floor, and puts its position on the free list with the
//! capacity of its holder list and queue, for the next key new to the shard. So the table holds the keys in use and at most `IDLE_KEPT` idle ones per shard (a
//! workload over a million keys keeps a few records in cache instead of a million out of it),
//! and a warm shard allocates nothing.

use crate::bias::ShardBias;
use crate::direct::ShardWords;
use crate::slot::Slot;
use crate::sync::{Mutex, MutexGuard};
use hashbrown::HashTable;
use std::sync::Arc;

/// Idle records a shard keeps in its index for keys that may be taken again soon. Measured on
/// one thread (`ci/opcount.sh`): freeing at once and making the record again cost a warm 1-key
/// acquire+release about 150 of its 1,000 instructions; a few per shard keep every hot key's
/// record while bounding what a stream of distinct keys leaves behind. Two since the default
/// went from 128 shards to 512 (four per shard then): the table keeps about as many idle
/// records in all, and 64 hot keys still fit in 512 shards two to a shard.
pub(crate) const IDLE_KEPT: usize = 2;

/// The end of a shard's free list.
const NO_FREE: u32 = u32::MAX;

/// A shard, alone on its cache lines (128 bytes: a line and the adjacent-line prefetch), so
/// threads working in neighbouring shards do not invalidate each other's latch.
#[repr(align(128))]
pub(crate) struct Shard<K>(Mutex<ShardState<K>>);

impl<K> Shard<K> {
    /// A shard whose idle records stay in its index for a while (`keep_idle`), or are freed
    /// at once.
    pub(crate) fn new(token_floor: u64, words: Arc<ShardWords>, keep_idle: bool) -> Self {
        Self(Mutex::new(ShardState {
            words,
            idle_kept: if keep_idle { IDLE_KEPT as u8 } else { 0 },
            index: HashTable::new(),
            slots: Vec::new(),
            free_head: NO_FREE,
            idle: [0; IDLE_KEPT],
            idle_len: 0,
            idle_next: 0,
            floor: token_floor,
            grants: 0,
            releases: 0,
            bias: None,
        }))
    }

    /// Takes the shard's latch.
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, ShardState<K>> {
        self.0.lock()
    }

    /// Takes the shard's latch if it is free.
    #[inline]
    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, ShardState<K>>> {
        self.0.try_lock()
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
    /// The first free record in `slots` (`NO_FREE`: none), heading a list linked through the
    /// free records themselves (`Slot::next_free`), reused last-freed first (the warmest). A
    /// list kept inside the records touches no cache line beyond the record being freed or
    /// reused.
    free_head: u32,
    /// Positions of records kept in the index after their key went idle: the first `idle_len`
    /// are in use, and once all are, `idle_next` is the oldest (a ring). A record here may be in
    /// use again (taken since); it is freed when it leaves the ring idle.
    idle: [u32; IDLE_KEPT],
    idle_len: u8,
    idle_next: u8,
    /// How many idle records the ring keeps: [`IDLE_KEPT`], or none on a table with direct
    /// grants. There a key nobody holds is taken again by its direct word, which a kept record
    /// would hold LATCHED: with two kept per shard, about one uniform 8-key batch in five met
    /// such a word and went through the latches (and made eight more records to keep).
    idle_kept: u8,
    /// Every fencing token ever handed out on a key whose record this shard freed is at most
    /// this, and a new record starts from it: a key's tokens keep increasing across the
    /// freeing of its record (and, from a persisted floor, across restarts).
    floor: u64,
    /// Grants decided in this shard (a grant of several keys counts in the shard of its first
    /// key) and releases of them by their holders: counted under the latch, so the hot path
    /// pays no atomic for them (`LockTable::metrics` adds them up).
    pub(crate) grants: u64,
    pub(crate) releases: u64,
    /// The shard's read biases (`bias.rs`), made on its first.
    pub(crate) bias: Option<Box<ShardBias>>,
    /// The shard's direct words (`direct.rs`): a record made or freed counts itself in or out
    /// of its key's word.
    words: Arc<ShardWords>,
}

impl<K: Eq> ShardState<K> {
    /// The position of `key`'s record, if the shard has one.
    #[inline]
    pub(crate) fn find(&self, hash: u64, key: &K) -> Option<u32> {
        let slots = &self.slots;
        self.index.find(hash, |&(h, i)| h == hash && slots[i as usize].is_key(key)).map(|&(_, i)| i)
    }

    /// The position of `key`'s record, made (from a free record if there is one) if the
    /// shard has none. A new record stores its own copy of the key.
    #[inline]
    pub(crate) fn find_or_insert(&mut self, hash: u64, key: &K) -> u32
    where
        K: Clone,
    {
        let Self { index, slots, free_head, floor, words, .. } = self;
        // One probe: the entry is either the key's or the vacant place for it.
        match index.entry(hash, |&(h, i)| h == hash && slots[i as usize].is_key(key), |&(h, _)| h) {
            hashbrown::hash_table::Entry::Occupied(e) => e.get().1,
            hashbrown::hash_table::Entry::Vacant(e) => {
                // The key's word (claimed by the caller) counts the record in, and its tokens
                // continue the word's.
                let floor = (*floor).max(words.record_made(hash));
                let at = Self::make_record(slots, free_head, floor, hash, key.clone());
                e.insert((hash, at));
                at
            }
        }
    }

    /// A record for a key new to the shard, from the free list if it can.
    #[inline(never)]
    fn make_record(slots: &mut Vec<Slot<K>>, free_head: &mut u32, floor: u64, hash: u64, key: K) -> u32 {
        if *free_head != NO_FREE {
            let at = *free_head;
            let s = &mut slots[at as usize];
            *free_head = s.next_free;
            s.reuse(key, hash, floor);
            return at;
        }
        // More than 2^32 live keys in one shard would need 2^32 x 64 bytes first.
        let at = u32::try_from(slots.len()).unwrap_or(u32::MAX);
        slots.push(Slot::new(key, hash, floor));
        at
    }

    /// Called when nobody may hold or wait for the key of the record at `at` any more: if so,
    /// keeps the record among the shard's idle ones, freeing the oldest idle record beyond
    /// [`IDLE_KEPT`].
    #[inline]
    pub(crate) fn retire_if_idle(&mut self, at: u32) {
        let Some(s) = self.slots.get_mut(at as usize) else { return };
        if !s.live || !s.is_idle() || s.kept_idle {
            return;
        }
        if self.idle_kept == 0 {
            self.free(at);
            return;
        }
        s.kept_idle = true;
        if self.idle_len < self.idle_kept {
            self.idle[usize::from(self.idle_len)] = at;
            self.idle_len += 1;
        } else {
            let oldest = std::mem::replace(&mut self.idle[usize::from(self.idle_next)], at);
            self.idle_next = (self.idle_next + 1) % self.idle_kept;
            self.leave_idle(oldest);
        }
    }

    /// Takes the record at `at` out of the idle ones, freeing it if it is still idle.
    fn leave_idle(&mut self, at: u32) {
        let s = &mut self.slots[at as usize];
        s.kept_idle = false;
        if s.is_idle() {
            self.free(at);
        }
    }

    /// Frees the (live, idle) record at `at`.
    fn free(&mut self, at: u32) {
        let s = &self.slots[at as usize];
        debug_assert!(s.live && s.is_idle() && !s.kept_idle);
        let (hash, last) = (s.hash, s.last_token);
        self.floor = self.floor.max(last).max(self.words.record_freed(hash, last));
        let s = &mut self.slots[at as usize];
        s.live = false;
        s.next_free = self.free_head;
        self.free_head = at;
        if let Ok(entry) = self.index.find_entry(hash, |&(_, i)| i == at) {
            entry.remove();
        }
    }

    /// The live records.
    pub(crate) fn live(&self) -> impl Iterator<Item = (u32, &Slot<K>)> {
        self.index.iter().map(|&(_, i)| (i, &self.slots[i as usize]))
    }

    /// Positions of the live records (to change them one by one).
    pub(crate) fn live_positions(&self) -> impl Iterator<Item = u32> + '_ {
        self.index.iter().map(|&(_, i)| i)
    }

    /// Keys somebody holds or waits for.
    pub(crate) fn len(&self) -> usize {
        let idle =
            self.idle[..usize::from(self.idle_len)].iter().filter(|&&at| self.slots[at as usize].is_idle()).count();
        self.index.len() - idle
    }

    /// Gives back the memory of free records: drops them and shrinks the index and the slab
    /// to what the live records need. Returns how many free records were dropped.
    pub(crate) fn shrink(&mut self) -> usize {
        for i in 0..usize::from(std::mem::take(&mut self.idle_len)) {
            self.leave_idle(self.idle[i]);
        }
        self.idle_next = 0;
        // Free records at the end of the slab can go; a free record before a live one must
        // stay, since a guard names its records by position.
        let mut dropped = 0;
        while self.slots.last().is_some_and(|s| !s.live) {
            self.slots.pop();
            dropped += 1;
        }
        // The free records that stay give back their lists' capacity, and are linked again
        // (lowest position first, so new keys fill the slab from the front).
        self.free_head = NO_FREE;
        for (at, s) in self.slots.iter_mut().enumerate().rev() {
            if !s.live {
                s.release_capacity();
                s.next_free = self.free_head;
                // `at` < slots.len() <= 2^32.
                self.free_head = at as u32;
            }
        }
        self.slots.shrink_to_fit();
        self.index.shrink_to_fit(|&(h, _)| h);
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout the hot path was measured with: a shard's state on the two lines of its
    /// 128-byte block, and the record of an integer key on one line (see `Slot`).
    #[test]
    fn slot_fits_one_line() {
        assert_eq!(std::mem::size_of::<Shard<u64>>(), 128);
        assert_eq!(std::mem::size_of::<Slot<u64>>(), 64);
    }

    #[test]
    fn without_the_ring_an_idle_record_is_freed_at_once() {
        let shard: Shard<u64> = Shard::new(100, Arc::new(ShardWords::new(100, false)), false);
        let mut st = shard.lock();
        let a = st.find_or_insert(7, &7);
        st.slots[a as usize].last_token = 105;
        st.retire_if_idle(a);
        assert_eq!(st.index.len(), 0, "the idle record stayed indexed");
        assert!(st.find(7, &7).is_none());
        // Its position is reused, and the key's tokens go on from the floor.
        let again = st.find_or_insert(7, &7);
        assert_eq!(again, a);
        assert_eq!(st.slots[again as usize].last_token, 105);
    }

    #[test]
    fn idle_records_stay_for_a_while_then_are_freed_oldest_first() {
        let shard: Shard<u64> = Shard::new(100, Arc::new(ShardWords::new(100, false)), true);
        let mut st = shard.lock();
        // Ten keys, each made and left idle at once: only the last IDLE_KEPT stay indexed.
        let at: Vec<u32> = (0..10u64).map(|k| st.find_or_insert(k, &k)).collect();
        for &a in &at {
            st.retire_if_idle(a);
        }
        assert_eq!(st.len(), 0, "idle records count as stored keys");
        assert_eq!(st.index.len(), IDLE_KEPT);
        for k in 0..10u64 {
            assert_eq!(st.find(k, &k).is_some(), k >= 10 - IDLE_KEPT as u64, "key {k}");
        }
        // A kept record taken again is the same record, and leaving the ring while in use does
        // not free it.
        let again = st.find_or_insert(9, &9);
        assert_eq!(again, at[9]);
        let modes = crate::mode::ModeTable::default();
        let holder = crate::slot::HeldBy {
            grant: crate::ticket::GrantId(1),
            owner: crate::request::Owner::new("o"),
            mode: crate::mode::Mode::EXCLUSIVE,
            message: None,
            since: crate::clock::Clock::new().now(),
            token: 0,
            n_keys: 1,
        };
        st.slots[again as usize].last_token = 106;
        assert_eq!(st.slots[again as usize].add_holder(&modes, holder), 107);
        for k in 20..20 + IDLE_KEPT as u64 {
            let a = st.find_or_insert(k, &k);
            st.retire_if_idle(a);
        }
        assert!(st.find(9, &9).is_some(), "a record in use was freed");
        assert_eq!(st.len(), 1);
        assert!(st.slots[again as usize].remove_holder(crate::ticket::GrantId(1)).is_some());
        st.retire_if_idle(again);
        assert_eq!(st.len(), 0);
        // shrink() frees every idle record; the floor is above every freed record's token.
        st.shrink();
        assert_eq!(st.index.len(), 0);
        let fresh = st.find_or_insert(9, &9);
        assert_eq!(st.slots[fresh as usize].last_token, 107);
    }
}
