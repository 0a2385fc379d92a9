//! The all-or-nothing grant protocol: preparing a request, latching its shards, deciding.
//!
//! # Implementation details
//!
//! A request goes through three phases:
//! 1. **Prepare** (no latch held): validate, hash every key, sort the keys by shard.
//! 2. **Decide** (the latches of all its shards held, taken in increasing shard order): find or
//!    make each key's record, collapse a key named twice into the join of its modes, and grant
//!    iff on every key the mode fits beside the holders *and* beside every waiter that arrived
//!    before it. If so install a holder record on every key; if not build the `Conflict` (or
//!    queue, for a waiting request) and free the records it made for nothing.
//! 3. **Unlatch**, then wake whoever the change lets go.
//!
//! [`LockTable::decide`] is the one place phase 2 happens; `try_acquire`, `acquire`, the first
//! poll of `acquire_async` and a queued waiter looking again all go through it.

use crate::clock::Stamp;
use crate::conflict::{AcquireError, Conflict, KeyConflict, Waiter};
use crate::guard::LockSet;
use crate::metrics::Counter;
use crate::mode::Mode;
use crate::request::{Item, LockMessage, Owner, Request, RequestError, MAX_KEYS};
use crate::shard::ShardState;
use crate::slot::{HeldBy, Slot, WakeList};
use crate::sync::{unique_id, Arc, MutexGuard, Ordering};
use crate::table::LockTable;
use crate::ticket::{GrantId, Token};
use crate::wait::WaitNode;
use smallvec::SmallVec;
use std::hash::Hash;

/// A record position not found yet (phase 1).
const UNRESOLVED: u32 = u32::MAX;

/// Rounds in which [`Latches::lock`] waits for a busy latch holding none (then it waits in order).
const WAIT_ALONE: u32 = 2;

/// One key of a request.
pub(crate) struct Entry<K> {
    /// The request's own copy of the key (a new record stores a clone).
    pub(crate) key: K,
    pub(crate) hash: u64,
    /// The key's record in its shard's slab, once found: valid for as long as this request
    /// holds or waits for the key, since such a record is never freed.
    pub(crate) slot: u32,
    pub(crate) shard: u16,
    /// The position of the entry's shard in the request's [`Latches`], set when they are
    /// taken, so a look-up of the entry's record is two indexings.
    pub(crate) latch: u16,
    pub(crate) mode: Mode,
    pub(crate) message: Option<LockMessage>,
    /// The fencing token, or 0 for an unfenced mode (tokens start at 1).
    pub(crate) token: u64,
    /// For a request of several keys: a clone of the request's owner for this key's holder
    /// record, made before latching, and the released record's owner after the release,
    /// dropped with the entry. Either way its reference count changes outside the latches: a
    /// locked instruction waits for every store before it, and under the latches those are
    /// stores to the records' lines, maybe last written by another core; one per key made a
    /// batch's latched section wait for its records' cache misses one after another. `None`
    /// for one key, where the latched section does the clone itself (cheaper, measured).
    pub(crate) owner: Option<Owner>,
}

impl<K> Entry<K> {
    pub(crate) fn token(&self) -> Option<Token> {
        (self.token != 0).then_some(Token(self.token))
    }
}

/// A request's entries: one inline (most requests lock one key), more in a pooled buffer
/// (`pool.rs`), so a guard is small to move.
pub(crate) type Entries<K> = SmallVec<[Entry<K>; 1]>;

/// A validated request, not yet granted: an unarmed [`LockSet`] (built in place so the
/// grant does not copy its entries again).
pub(crate) type Prepared<'t, K> = LockSet<'t, K>;

/// The latched shards of a request, in increasing shard order, one latch per shard.
pub(crate) struct Latches<'a, K> {
    shards: SmallVec<[(u16, MutexGuard<'a, ShardState<K>>); 16]>,
    /// Where the last look-up found its shard: callers go through a request's entries in
    /// shard order, so the next look-up is almost always here or just after.
    hint: usize,
}

impl<'a, K: Hash + Eq + Clone> Latches<'a, K> {
    /// Latches the shards of `entries` (sorted by shard), each once, and notes in each entry
    /// where its shard's latch is.
    ///
    /// Never waits while holding a latch, for the first [`WAIT_ALONE`] rounds: it takes the
    /// latches in shard order with `try_lock`, and when one is busy it drops those it holds,
    /// waits for the busy one alone, and starts again. A thread preempted while holding some
    /// latches then stalls only the requests that need those, not every request that holds
    /// latches of its own and waits behind it (at 16 threads on 2 cores, waiting in order
    /// while holding cut batches of 4-8 keys to 0.15-0.37x their 2-thread throughput). After
    /// those rounds it waits in shard order, holding what it has: a request of many keys
    /// cannot be kept out for ever by a stream of small ones, and the order rules out deadlock.
    #[inline]
    pub(crate) fn lock(table: &'a LockTable<K>, entries: &mut [Entry<K>]) -> Self {
        // Built where it is returned, and filled straight from the (shard-sorted) entries: no
        // list of shards to make first, no copy of the guards at the end.
        let mut latches = Self { shards: SmallVec::new(), hint: 0 };
        let mut rounds = 0;
        'round: loop {
            for e in entries.iter_mut() {
                if latches.shards.last().is_none_or(|(s, _)| *s != e.shard) {
                    debug_assert!(latches.shards.last().is_none_or(|(s, _)| *s < e.shard), "entries not sorted");
                    let shard = &table.shards[usize::from(e.shard)];
                    let guard = if rounds < WAIT_ALONE {
                        match shard.try_lock() {
                            Some(g) => g,
                            None => {
                                latches.shards.clear();
                                drop(shard.lock());
                                rounds += 1;
                                continue 'round;
                            }
                        }
                    } else {
                        shard.lock()
                    };
                    latches.shards.push((e.shard, guard));
                }
                // At most 2^16 shards, so at most 2^16 latches.
                e.latch = (latches.shards.len() - 1) as u16;
            }
            return latches;
        }
    }

    /// Latches `shards` (sorted, repeats allowed), each once, in order. Inlined, so the
    /// latch list is built where it is used rather than copied out.
    #[inline(always)]
    pub(crate) fn lock_shards(table: &'a LockTable<K>, shards: impl Iterator<Item = u16>) -> Self {
        let mut latched: SmallVec<[(u16, MutexGuard<'a, ShardState<K>>); 16]> = SmallVec::new();
        for shard in shards {
            if latched.last().is_none_or(|(s, _)| *s != shard) {
                debug_assert!(latched.last().is_none_or(|(s, _)| *s < shard), "shards not sorted");
                latched.push((shard, table.shards[usize::from(shard)].lock()));
            }
        }
        Self { shards: latched, hint: 0 }
    }

    fn one(shard: u16, guard: MutexGuard<'a, ShardState<K>>) -> Self {
        let mut shards = SmallVec::new();
        shards.push((shard, guard));
        Self { shards, hint: 0 }
    }

    /// The latched shard `shard`.
    #[inline]
    pub(crate) fn shard(&mut self, shard: u16) -> &mut ShardState<K> {
        let mut at = self.hint;
        while self.shards.get(at).is_some_and(|(s, _)| *s < shard) {
            at += 1;
        }
        if self.shards.get(at).is_none_or(|(s, _)| *s != shard) {
            at = self.shards.binary_search_by_key(&shard, |(s, _)| *s).unwrap_or_else(|_| unreachable_shard(shard));
        }
        self.hint = at;
        &mut self.shards[at].1
    }

    /// The latched shard of an entry (latched through [`Latches::lock`]).
    #[inline]
    pub(crate) fn state(&mut self, e: &Entry<K>) -> &mut ShardState<K> {
        &mut self.shards[usize::from(e.latch)].1
    }

    /// The record of a resolved entry (latched through [`Latches::lock`]).
    #[inline]
    pub(crate) fn slot(&mut self, e: &Entry<K>) -> &mut Slot<K> {
        &mut self.state(e).slots[e.slot as usize]
    }

    /// Frees the records of `entries` that nobody holds or waits for any more.
    pub(crate) fn free_idle(&mut self, entries: &[Entry<K>]) {
        for e in entries {
            self.state(e).retire_if_idle(e.slot);
        }
    }
}

/// Every entry's shard is latched before anything looks one up; reaching this is a bug.
#[cold]
fn unreachable_shard(shard: u16) -> ! {
    panic!("lockcore: shard {shard} used without its latch (internal error)")
}

/// The holder record of key `e` of a grant of `n_keys` keys being installed.
#[inline(always)]
fn holder_record<K>(owner: Owner, e: &Entry<K>, n_keys: u32, grant: GrantId, since: Stamp) -> HeldBy {
    HeldBy { grant, owner, mode: e.mode, message: e.message.clone(), since, token: 0, n_keys }
}

#[inline]
pub(crate) fn notify_all(wake: WakeList) {
    if wake.is_empty() {
        return; // the common case: nobody queued
    }
    for node in wake {
        node.notify();
    }
}

impl<K: Hash + Eq + Clone> LockTable<K> {
    /// Validates `req` into an unarmed guard whose entries are hashed and sorted by shard.
    pub(crate) fn prepare(&self, mut req: Request<K>) -> Result<Prepared<'_, K>, RequestError> {
        let mut set = LockSet::unarmed(self, req.owner);
        self.prepare_items(&mut req.items, &mut set.entries)?;
        Ok(set)
    }

    /// Validates a request's items and moves them into `entries`, hashed and sorted by shard
    /// (stably, so the first message given for a key named twice comes first).
    #[inline(always)]
    pub(crate) fn prepare_items(
        &self,
        items: &mut SmallVec<[Item<K>; 8]>,
        entries: &mut Entries<K>,
    ) -> Result<(), RequestError> {
        if items.is_empty() {
            return Err(RequestError::Empty);
        }
        if items.len() > MAX_KEYS {
            return Err(RequestError::TooManyKeys { len: items.len(), max: MAX_KEYS });
        }
        if let Some(bad) = items.iter().find(|i| !self.modes.contains(i.mode)) {
            return Err(RequestError::UnknownMode(bad.mode));
        }
        if items.len() > 1 {
            *entries = SmallVec::from_vec(self.pool.take(items.len()));
        }
        for i in items.drain(..) {
            let (hash, shard) = self.place(&i.key);
            entries.push(Entry {
                key: i.key,
                hash,
                slot: UNRESOLVED,
                shard,
                latch: 0,
                mode: i.mode,
                message: i.message,
                token: 0,
                owner: None,
            });
        }
        if entries.len() > 1 {
            // No allocation up to 20 entries (insertion sort).
            entries.sort_by_key(|e| e.shard);
        }
        Ok(())
    }

    /// Finds or makes the records of a prepared request's keys, its shards latched, and
    /// collapses a key named twice into one entry in the join of its modes, with the first
    /// message given.
    #[inline(always)]
    fn resolve(&self, latches: &mut Latches<'_, K>, entries: &mut Entries<K>) {
        for e in entries.iter_mut() {
            let st = latches.state(e);
            self.claim_word(st, e.shard, e.hash);
            e.slot = st.find_or_insert(e.hash, &e.key);
        }
        // A key named twice is in one shard: only a shard with two entries can hold a repeat.
        if entries.windows(2).any(|w| w[0].shard == w[1].shard) {
            // Stable: a key's entries keep their order, so the first message wins.
            entries.sort_by_key(|e| (e.shard, e.slot));
            entries.dedup_by(|later, kept| {
                if (later.shard, later.slot) != (kept.shard, kept.slot) {
                    return false;
                }
                kept.mode = self.modes.join_known(kept.mode, later.mode);
                if kept.message.is_none() {
                    kept.message = later.message.take();
                }
                true
            });
        }
    }

    /// Whether every key can be granted to a request that arrived at `seq` (`None`: now).
    #[inline]
    fn all_grantable(&self, latches: &mut Latches<'_, K>, entries: &[Entry<K>], seq: Option<u64>) -> bool {
        entries.iter().all(|e| latches.slot(e).grantable(&self.modes, e.mode, seq))
    }

    /// The one place a request is decided with its shards latched (`try_acquire`, `acquire`,
    /// the first poll of `acquire_async`, and a queued request looking again).
    ///
    /// Latches every shard of `p` in order and, for a new request (`queued` is `None`), finds
    /// or makes its records; for a queued request (`queued` = its node and arrival number)
    /// clears its notified flag, now that every latch is held (see `wait.rs`). If every key
    /// can be granted to a request that arrived then (`None`: a new arrival, behind every
    /// waiter), takes a queued request out of its queues, installs the grant, unlatches, arms
    /// `p` and returns `None`. Otherwise runs `refused` with the latches still held (to report
    /// the conflict, or to queue), frees the records nobody holds or waits for any more,
    /// unlatches, and returns what `refused` returned.
    #[inline(always)]
    pub(crate) fn decide<R>(
        &self,
        p: &mut Prepared<'_, K>,
        queued: Option<(&WaitNode, u64)>,
        refused: impl FnOnce(&mut Latches<'_, K>, &Prepared<'_, K>) -> R,
    ) -> Option<R> {
        let seq = queued.map(|(_, seq)| seq);
        // The grant's id and time, taken before latching so the latches are held for less (an
        // `rdtsc` is ~15 ns here); a refused request simply does not use them.
        let (grant, since) = (GrantId(unique_id()), self.clock.now());
        if queued.is_none() && (self.try_direct(p, grant, since) || self.try_fast(p, grant, since)) {
            return None; // granted by its word (`direct.rs`) or on a reader slot (`bias.rs`)
        }
        if p.entries.len() == 1 {
            // One key, the common case: one latch and no list of latches to build.
            let shard = p.entries[0].shard;
            let mut st = self.shards[usize::from(shard)].lock();
            let at = match queued {
                None => {
                    self.claim_word(&mut st, shard, p.entries[0].hash);
                    st.find_or_insert(p.entries[0].hash, &p.entries[0].key)
                }
                Some((node, _)) => {
                    node.clear();
                    p.entries[0].slot
                }
            };
            p.entries[0].slot = at;
            p.entries[0].latch = 0;
            let mode = p.entries[0].mode;
            self.revoke_if_conflicting(&mut st, shard, at, mode);
            let slot = &mut st.slots[at as usize];
            if !slot.grantable(&self.modes, mode, seq) {
                let mut latches = Latches::one(shard, st);
                let r = refused(&mut latches, p);
                latches.free_idle(&p.entries);
                return Some(r);
            }
            if let Some(seq) = seq {
                slot.dequeue(seq);
            }
            let owner = p.entries[0].owner.take().unwrap_or_else(|| p.owner.clone());
            let token = slot.add_holder(&self.modes, holder_record(owner, &p.entries[0], 1, grant, since));
            st.grants += 1;
            self.note_grant(&mut st, shard, at, mode, true);
            drop(st);
            p.entries[0].token = token;
            self.granted(p, grant, since);
            return None;
        }
        // The owner clone of each key's holder record, made before latching (see `Entry::owner`);
        // not in `prepare`, so a grant made on a reader slot (above) makes none.
        for e in p.entries.iter_mut().filter(|e| e.owner.is_none()) {
            e.owner = Some(p.owner.clone());
        }
        let mut latches = Latches::lock(self, &mut p.entries);
        match queued {
            None => self.resolve(&mut latches, &mut p.entries),
            Some((node, _)) => node.clear(),
        }
        for e in p.entries.iter() {
            self.revoke_if_conflicting(latches.state(e), e.shard, e.slot, e.mode);
        }
        if !self.all_grantable(&mut latches, &p.entries, seq) {
            let r = refused(&mut latches, p);
            latches.free_idle(&p.entries);
            return Some(r);
        }
        let n_keys = p.entries.len() as u32;
        let eligible = self.fast_eligible(&p.entries);
        let LockSet { owner, entries, .. } = p;
        for e in entries.iter_mut() {
            let rec = holder_record(e.owner.take().unwrap_or_else(|| owner.clone()), e, n_keys, grant, since);
            let slot = latches.slot(e);
            if let Some(seq) = seq {
                slot.dequeue(seq);
            }
            e.token = slot.add_holder(&self.modes, rec);
            self.note_grant(latches.state(e), e.shard, e.slot, e.mode, eligible);
        }
        latches.state(&p.entries[0]).grants += 1;
        drop(latches);
        self.granted(p, grant, since);
        None
    }

    /// Arms the prepared set with its installed grant (counted in its first shard).
    #[inline(always)]
    fn granted(&self, p: &mut Prepared<'_, K>, grant: GrantId, since: Stamp) {
        p.arm(grant, since);
    }

    /// Builds the report of why a request that arrived at `seq` cannot be granted.
    pub(crate) fn conflict(&self, latches: &mut Latches<'_, K>, p: &Prepared<'_, K>, seq: Option<u64>) -> Conflict<K> {
        let modes = &self.modes;
        let anchor = self.clock.anchor();
        let mut keys = Vec::new();
        // Biased keys among the conflicting ones: (shard, bias word), for one pass over the
        // reader slots at the end, so a fast grant of several of them shows on all or on none.
        let mut biased: SmallVec<[(u16, u64); 8]> = SmallVec::new();
        let mut biased_at: SmallVec<[(usize, Mode); 8]> = SmallVec::new();
        for e in &p.entries {
            if latches.slot(e).grantable(modes, e.mode, seq) {
                continue;
            }
            let shard = latches.state(e);
            let word = Self::bias_word(shard, e.slot);
            if word != 0 {
                biased.push((e.shard, word));
                biased_at.push((keys.len(), e.mode));
            }
            let st = &shard.slots[e.slot as usize];
            let holders: Vec<_> =
                st.holders.iter().map(|h| self.holder(h, !modes.compatible(e.mode, h.mode), &anchor)).collect();
            let waiters_ahead = st
                .waiters()
                .take_while(|q| seq.is_none_or(|s| q.seq < s))
                .filter(|q| !modes.compatible(e.mode, q.mode))
                .map(|q| Waiter {
                    owner: q.node.owner.clone(),
                    mode: q.mode,
                    mode_name: modes.name(q.mode),
                    since: q.node.since,
                })
                .collect();
            keys.push(KeyConflict {
                key: e.key.clone(),
                asked: e.mode,
                asked_name: modes.name(e.mode),
                holders,
                waiters_ahead,
            });
        }
        // Holders of a read bias the request fits beside (it would have revoked it otherwise):
        // not blocking, but holders all the same.
        self.fast_holders(&biased, |i, h| {
            let (at, mode) = biased_at[i];
            keys[at].holders.push(self.holder(&h, !modes.compatible(mode, h.mode), &anchor));
        });
        Conflict { owner: p.owner.clone(), requested: p.entries.len(), keys }
    }

    /// Queues a waiter on every latched key and returns its arrival number.
    pub(crate) fn enqueue(&self, latches: &mut Latches<'_, K>, p: &Prepared<'_, K>, node: &Arc<WaitNode>) -> u64 {
        // Relaxed: taken while holding every latch of the request, so for each key the latch
        // orders this number after the numbers of everyone already queued there.
        let seq = self.wait_seq.fetch_add(1, Ordering::Relaxed);
        for e in &p.entries {
            latches.slot(e).enqueue(seq, e.mode, node);
        }
        seq
    }

    /// Removes waiter `seq` from every key of `p` and collects who may now proceed. The
    /// records it leaves idle are freed by `decide`, or by the caller.
    pub(crate) fn leave_queue(&self, latches: &mut Latches<'_, K>, p: &Prepared<'_, K>, seq: u64, wake: &mut WakeList) {
        for e in &p.entries {
            let st = latches.slot(e);
            st.dequeue(seq);
            st.collect_wakeable(&self.modes, wake);
        }
    }

    /// Takes every key of `req` at once, or none and says why.
    ///
    /// Never waits for other holders: it fails if any key is held in an incompatible mode or
    /// is owed to an incompatible request queued earlier (no barging). It does wait, briefly,
    /// for other requests that are deciding on the same shards at this instant, so it never
    /// fails because of a grant that is only half made.
    ///
    /// # Errors
    /// [`AcquireError::Request`] for an invalid request, [`AcquireError::Conflict`] naming every
    /// conflicting key, its holders and the waiters ahead.
    ///
    /// # Examples
    /// ```
    /// use lockcore::{LockTable, Request};
    /// let table = LockTable::new();
    /// let set = table.try_acquire(Request::new("cmd").exclusive(("vm", 42u64))).unwrap();
    /// assert_eq!(set.len(), 1);
    /// ```
    pub fn try_acquire(&self, mut req: Request<K>) -> Result<LockSet<'_, K>, AcquireError<K>> {
        // `prepare`, inline: the guard is built where it is returned from.
        let mut p = LockSet::unarmed(self, req.owner);
        self.prepare_items(&mut req.items, &mut p.entries)?;
        let refused = self.decide(&mut p, None, |latches, p| {
            let c = self.conflict(latches, p, None);
            if cfg!(lockcore_mutant = "partial") {
                // Deliberately broken: keeps the keys that were free (not all or nothing).
                let grant = GrantId(unique_id());
                for e in &p.entries {
                    let st = latches.slot(e);
                    if st.grantable(&self.modes, e.mode, None) {
                        let rec = HeldBy {
                            grant,
                            owner: p.owner.clone(),
                            mode: e.mode,
                            message: None,
                            since: self.clock.now(),
                            token: 0,
                            n_keys: 0,
                        };
                        st.add_holder(&self.modes, rec);
                    }
                }
            }
            c
        });
        match refused {
            None => Ok(p),
            Some(c) => {
                self.metrics.add(Counter::Conflicts, 1);
                Err(AcquireError::Conflict(Box::new(c)))
            }
        }
    }
}
