//! The lock table: an index from keys to slots, and the all-or-nothing grant protocol.
//!
//! # Implementation details
//!
//! The index is split into shards, each a `RwLock` around a `hashbrown::HashTable` of
//! `Arc<Slot>`. Looking up a key that is already present takes the shard's read lock (one
//! atomic add and one sub, shared by readers); only a key new to the table takes the write
//! lock. A request resolves all its keys to slots first, with no latch held, then sorts them by
//! slot creation number, latches them in that order, decides on the whole set, installs or reports,
//! and unlatches. Because a thread never waits for a latch while holding a latch at a higher
//! number, and never takes a shard lock while holding a latch, latching cannot deadlock.
//!
//! Fairness: a slot keeps a FIFO queue of waiters, sorted by a table-wide arrival number. A
//! request is grantable on a key only if its mode is compatible with the holders and with every
//! waiter that arrived before it (a new arrival is behind all of them). That is PostgreSQL's
//! no-barging rule, and the global order makes the "waits behind" relation acyclic, so the
//! earliest waiter is only ever held up by holders, which do not wait.

use crate::conflict::{AcquireError, Conflict, Holder, KeyConflict, Waiter};
use crate::guard::LockSet;
use crate::metrics::{Counter, Metrics, MetricsSnapshot};
use crate::mode::{Mode, ModeTable};
use crate::request::{Item, LockMessage, Request, RequestError, MAX_KEYS};
use crate::slot::{HeldBy, Slot, SlotState, WakeList};
use crate::sync::{stat, unique_id, Arc, AtomicU64, MutexGuard, Ordering, RwLock};
use crate::ticket::{GrantId, TableId, Token};
use crate::wait::WaitNode;
use hashbrown::HashTable;
use smallvec::SmallVec;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::time::Instant;

/// The index's hasher: seeded per table, except under loom, where every run must hash alike
/// so that replays of a schedule see the same index layout.
#[cfg(not(loom))]
type IndexHasher = foldhash::fast::RandomState;
#[cfg(loom)]
type IndexHasher = foldhash::fast::FixedState;

/// Below this many slots a shard is never swept.
const MIN_SWEEP: usize = 8;

/// The most idle slots one sweep spares for their recent use (the second chance), per shard.
/// Without a cap, a stream of keys drawn from a key space far larger than the table (uniform
/// over 1,000,000 keys) re-marks enough idle slots between sweeps to keep most of the key space
/// in the table: 800,000 idle slots after 5 s, and every operation a cache miss.
const IDLE_BUDGET: usize = 32;

/// One key of a resolved request.
pub(crate) struct Entry<K> {
    pub(crate) slot: Arc<Slot<K>>,
    pub(crate) mode: Mode,
    pub(crate) message: Option<LockMessage>,
    /// The fencing token, or 0 for an unfenced mode (tokens start at 1).
    pub(crate) token: u64,
}

impl<K> Entry<K> {
    pub(crate) fn token(&self) -> Option<Token> {
        (self.token != 0).then_some(Token(self.token))
    }
}

/// A validated request, not yet granted: an unarmed [`LockSet`] (built in place so the
/// grant does not copy its entries again).
pub(crate) type Prepared<'t, K> = LockSet<'t, K>;

/// The latches of a prepared request, in the same order as its entries.
pub(crate) type Latches<'a> = SmallVec<[MutexGuard<'a, SlotState>; 16]>;

pub(crate) fn latch<K>(entries: &[Entry<K>]) -> Latches<'_> {
    entries.iter().map(|e| e.slot.state.lock()).collect()
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

/// One shard of the index, alone on its cache lines (128 bytes: a line and the adjacent-line
/// prefetch), so threads working on neighbouring shards do not invalidate each other's lock word.
#[repr(align(128))]
struct Shard<K>(RwLock<ShardMap<K>>);

impl<K> std::ops::Deref for Shard<K> {
    type Target = RwLock<ShardMap<K>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

struct ShardMap<K> {
    /// Each slot with its key's full hash beside it, so a probe compares hashes in the table's
    /// own memory and follows the pointer only for the (almost always single) real match.
    slots: HashTable<(u64, Arc<Slot<K>>)>,
    /// Sweep idle slots when an insert finds this many.
    sweep_at: usize,
    /// Slots the amortized sweep took out of the index, kept (as many as keys may be added
    /// before the next sweep) for the next keys new to this shard: a new key then reuses a
    /// slot, its allocation and its holder list's capacity, instead of a malloc and a free per
    /// key. Nothing but this list references them. `reclaim()` empties it.
    spare: Vec<Arc<Slot<K>>>,
}

/// An in-memory table of reader/writer locks by key, taken all or nothing.
///
/// See the [crate documentation](crate) for an overview and `docs/design.md` for the design.
///
/// ```
/// use lockcore::{LockTable, Request};
/// let table = LockTable::new();
/// let a = table.try_acquire(Request::new("cmd-1").shared("pool").exclusive("vm-1")).unwrap();
/// // A second reader of the pool is fine; a writer of vm-1 is not.
/// let b = table.try_acquire(Request::new("cmd-2").shared("pool")).unwrap();
/// let err = table.try_acquire(Request::new("cmd-3").exclusive("vm-1")).unwrap_err();
/// assert!(err.to_string().contains("held exclusive by cmd-1"));
/// drop((a, b));
/// assert!(table.try_acquire(Request::new("cmd-3").exclusive("vm-1")).is_ok());
/// ```
pub struct LockTable<K> {
    id: TableId,
    pub(crate) modes: ModeTable,
    shards: Box<[Shard<K>]>,
    shard_mask: usize,
    hasher: IndexHasher,
    /// No slot starts below this token: raised when a slot is reclaimed, so a key's tokens
    /// keep increasing across reclamation (and, with a persisted floor, across restarts).
    token_floor: AtomicU64,
    /// Arrival numbers of waiters.
    wait_seq: AtomicU64,
    /// Creation numbers of slots: the latch order.
    slot_seq: stat::AtomicU64,
    pub(crate) metrics: Metrics,
}

/// Builds a [`LockTable`] with non-default settings.
#[derive(Debug, Clone)]
pub struct Builder {
    modes: ModeTable,
    shards: usize,
    token_floor: u64,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// Default settings: shared/exclusive modes, 64 shards, tokens from 1.
    pub fn new() -> Self {
        Builder { modes: ModeTable::default(), shards: 64, token_floor: 0 }
    }

    /// The lock modes and their compatibility (default: shared/exclusive).
    pub fn modes(mut self, modes: ModeTable) -> Self {
        self.modes = modes;
        self
    }

    /// Number of index shards, rounded up to a power of two (default: 64).
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n.clamp(1, 1 << 16).next_power_of_two();
        self
    }

    /// Every fencing token handed out will be greater than `floor` (default 0). Recovery uses
    /// it to keep tokens increasing across restarts.
    pub fn token_floor(mut self, floor: u64) -> Self {
        self.token_floor = floor;
        self
    }

    /// Makes the table.
    pub fn build<K>(self) -> LockTable<K> {
        LockTable {
            id: TableId(unique_id() ^ foldhash::fast::RandomState::default().hash_one(0u8)),
            modes: self.modes,
            shards: (0..self.shards)
                .map(|_| {
                    Shard(RwLock::new(ShardMap { slots: HashTable::new(), sweep_at: MIN_SWEEP, spare: Vec::new() }))
                })
                .collect(),
            shard_mask: self.shards - 1,
            hasher: IndexHasher::default(),
            token_floor: AtomicU64::new(self.token_floor),
            wait_seq: AtomicU64::new(0),
            slot_seq: stat::AtomicU64::new(0),
            metrics: Metrics::new(),
        }
    }
}

impl<K> fmt::Debug for LockTable<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockTable").field("id", &self.id).field("modes", &self.modes).finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> Default for LockTable<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Clone> LockTable<K> {
    /// A shared/exclusive table with default settings.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A table with the given modes.
    pub fn with_modes(modes: ModeTable) -> Self {
        Self::builder().modes(modes).build()
    }

    /// A builder for other settings.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// This table's id (tickets carry it).
    pub fn id(&self) -> TableId {
        self.id
    }

    /// The table's modes.
    pub fn modes(&self) -> &ModeTable {
        &self.modes
    }

    /// Counters and histograms since the table was made.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    #[inline]
    fn shard(&self, hash: u64) -> &Shard<K> {
        // Bits 40.. pick the shard: hashbrown uses the top 7 bits as tags and the low bits as
        // positions, so shard choice stays independent of both.
        &self.shards[(hash >> 40) as usize & self.shard_mask]
    }

    /// The slot of `key`, made if the table has none.
    #[inline(always)]
    fn slot_for(&self, key: K) -> Arc<Slot<K>> {
        let hash = self.hasher.hash_one(&key);
        let shard = self.shard(hash);
        if let Some((_, s)) = shard.read().slots.find(hash, |(h, s)| *h == hash && s.key == key) {
            return Arc::clone(s);
        }
        self.insert_slot(shard, hash, key)
    }

    /// The slow half of [`slot_for`](Self::slot_for): under the shard's write lock, the slot
    /// of `key` if another thread just made it, else a new (or reused spare) slot.
    #[inline(never)]
    fn insert_slot(&self, shard: &Shard<K>, hash: u64, key: K) -> Arc<Slot<K>> {
        let mut map = shard.write();
        if let Some((_, s)) = map.slots.find(hash, |(h, s)| *h == hash && s.key == key) {
            return Arc::clone(s);
        }
        if map.slots.len() >= map.sweep_at {
            self.sweep(&mut map, false);
        }
        // Relaxed: floors are raised under this shard's write lock, which we hold, and a key
        // always maps to the same shard; the lock orders the raise before this read.
        let floor = self.token_floor.load(Ordering::Relaxed);
        // Relaxed: only uniqueness is needed, and an RMW is atomic in any ordering. A plain
        // std atomic under loom too: creation happens under a shard lock that loom does model.
        let order = self.slot_seq.fetch_add(1, stat::Ordering::Relaxed);
        let slot = match map.spare.pop() {
            Some(mut spare) => match Arc::get_mut(&mut spare) {
                Some(s) => {
                    s.reuse(key, order, floor);
                    spare
                }
                // Unreachable: nothing else references a spare slot. Make a new one anyway.
                None => Arc::new(Slot::new(key, order, floor)),
            },
            None => Arc::new(Slot::new(key, order, floor)),
        };
        map.slots.insert_unique(hash, (hash, Arc::clone(&slot)), |(h, _)| *h);
        slot
    }

    /// The slot of `key`, if the table has one.
    pub(crate) fn find(&self, key: &K) -> Option<Arc<Slot<K>>> {
        let hash = self.hasher.hash_one(key);
        self.shard(hash).read().slots.find(hash, |(h, s)| *h == hash && s.key == *key).map(|(_, s)| Arc::clone(s))
    }

    /// Drops idle slots that nothing else references, sparing those granted since the last
    /// sweep unless `all`. Returns how many.
    fn sweep(&self, map: &mut ShardMap<K>, all: bool) -> usize {
        let before = map.slots.len();
        let spare = &mut map.spare;
        let mut spared = 0;
        let reclaimed = map.slots.extract_if(|(_, s)| {
            // The write lock stops new references from the index; any other reference
            // (a grant, a waiter, a request being prepared) shows in the count.
            if Arc::strong_count(s) > 1 {
                return false;
            }
            let mut st = s.state.lock();
            if !st.is_idle() {
                return false; // held through a ticket
            }
            if std::mem::take(&mut st.recent) && !all && spared < IDLE_BUDGET {
                spared += 1;
                return false; // used since the last sweep: spared once
            }
            // Relaxed: see `slot_for`; the shard lock orders this with later reads.
            self.token_floor.fetch_max(st.last_token, Ordering::Relaxed);
            true
        });
        if all {
            reclaimed.for_each(drop);
            *spare = Vec::new();
        } else {
            spare.extend(reclaimed.map(|(_, s)| s));
        }
        let len = map.slots.len();
        map.sweep_at = (2 * len).max(MIN_SWEEP);
        // As many spares as keys the table may add before the next sweep, no more: memory
        // stays within twice the bound the sweep keeps anyway.
        map.spare.truncate(map.sweep_at - len);
        if map.slots.capacity() > 4 * map.sweep_at {
            map.slots.shrink_to(map.sweep_at, |(h, _)| *h);
        }
        before - len
    }

    /// Drops the slots of keys that nobody holds or waits for, and returns how many.
    ///
    /// The table also does this by itself, amortized, as new keys arrive; call it to bring the
    /// footprint back to idle size at once.
    pub fn reclaim(&self) -> usize {
        self.shards.iter().map(|s| self.sweep(&mut s.write(), true)).sum()
    }

    /// Keys the table currently stores, idle ones included.
    pub fn key_count(&self) -> usize {
        self.shards.iter().map(|s| s.read().slots.len()).sum()
    }

    /// Every slot, with all shard read locks held while they are collected and while `f` runs,
    /// so no slot can be added meanwhile.
    pub(crate) fn with_all_slots<R>(&self, f: impl FnOnce(Vec<Arc<Slot<K>>>) -> R) -> R {
        let guards: Vec<_> = self.shards.iter().map(|s| s.read()).collect();
        let slots = guards.iter().flat_map(|g| g.slots.iter().map(|(_, s)| Arc::clone(s))).collect();
        let r = f(slots);
        drop(guards);
        r
    }

    /// Validates `req`, resolves its keys and collapses duplicates, into an unarmed guard.
    ///
    /// The hot paths (`try_acquire`, `acquire`) do the same inline, so that neither the
    /// request's item list nor the guard (both several hundred bytes) is moved once more
    /// through a `Result`.
    pub(crate) fn prepare(&self, mut req: Request<K>) -> Result<Prepared<'_, K>, RequestError> {
        let mut set = LockSet::unarmed(self, req.owner);
        self.resolve(&mut req.items, &mut set.entries)?;
        Ok(set)
    }

    /// Validates a request's items and resolves them, in place, to distinct entries sorted by
    /// latch order; a key named twice gets the join of its modes and its first message.
    #[inline(always)]
    pub(crate) fn resolve(
        &self,
        items: &mut SmallVec<[Item<K>; 8]>,
        entries: &mut SmallVec<[Entry<K>; 16]>,
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
        entries.reserve(items.len());
        for i in items.drain(..) {
            entries.push(Entry { slot: self.slot_for(i.key), mode: i.mode, message: i.message, token: 0 });
        }
        if entries.len() > 1 {
            // Stable, so the first message given for a key wins; no allocation up to 20 entries.
            entries.sort_by_key(|e| Slot::latch_order(&e.slot));
            entries.dedup_by(|later, kept| {
                if !Arc::ptr_eq(&later.slot, &kept.slot) {
                    return false;
                }
                kept.mode = self.modes.join_known(kept.mode, later.mode);
                if kept.message.is_none() {
                    kept.message = later.message.take();
                }
                true
            });
        }
        Ok(())
    }

    /// Whether every key can be granted to a request that arrived at `seq` (`None`: now).
    #[inline]
    fn all_grantable(&self, latches: &Latches<'_>, entries: &[Entry<K>], seq: Option<u64>) -> bool {
        latches.iter().zip(entries).all(|(st, e)| st.grantable(&self.modes, e.mode, seq))
    }

    /// The one place a request is decided with its keys latched (`try_acquire`, `acquire`,
    /// the first poll of `acquire_async`, and a queued request looking again).
    ///
    /// Latches every key of `p` in latch order; for a queued request (`queued` = its node
    /// and arrival number) clears its notified flag, now that every latch is held (see
    /// `wait.rs`). If every key can be granted to a request that arrived then (`None`: a new
    /// arrival, behind every waiter), takes a queued request out of its queues, installs the
    /// grant, unlatches, arms `p` and returns `None`. Otherwise runs `refused` with the
    /// latches still held (to report the conflict, or to queue), unlatches, and returns what
    /// it returned.
    #[inline(always)]
    pub(crate) fn decide<R>(
        &self,
        p: &mut Prepared<'_, K>,
        queued: Option<(&WaitNode, u64)>,
        refused: impl FnOnce(&mut Latches<'_>, &Prepared<'_, K>) -> R,
    ) -> Option<R> {
        let seq = queued.map(|(_, seq)| seq);
        if let [e] = &p.entries[..] {
            // One key, the common case: one latch and no list of latches to build.
            let mut st = e.slot.state.lock();
            if let Some((node, _)) = queued {
                node.clear();
            }
            if !st.grantable(&self.modes, e.mode, seq) {
                let mut latches = Latches::new();
                latches.push(st);
                let r = refused(&mut latches, p);
                drop(latches);
                return Some(r);
            }
            if let Some(seq) = seq {
                st.dequeue(seq);
            }
            let (grant, since) = (GrantId(unique_id()), Instant::now());
            let token = st.add_holder(&self.modes, self.holder_record(p, e, grant, since));
            drop(st);
            p.entries[0].token = token;
            self.granted(p, grant, since);
            return None;
        }
        let mut latches = latch(&p.entries);
        if let Some((node, _)) = queued {
            node.clear();
        }
        if !self.all_grantable(&latches, &p.entries, seq) {
            let r = refused(&mut latches, p);
            drop(latches);
            return Some(r);
        }
        if let Some(seq) = seq {
            for st in latches.iter_mut() {
                st.dequeue(seq);
            }
        }
        let (grant, since) = (GrantId(unique_id()), Instant::now());
        let mut tokens: SmallVec<[u64; 16]> = SmallVec::new();
        for (st, e) in latches.iter_mut().zip(&p.entries) {
            let token = st.add_holder(&self.modes, self.holder_record(p, e, grant, since));
            tokens.push(token);
        }
        drop(latches);
        for (e, t) in p.entries.iter_mut().zip(tokens) {
            e.token = t;
        }
        self.granted(p, grant, since);
        None
    }

    /// The holder record of key `e` of the grant being installed.
    #[inline(always)]
    fn holder_record(&self, p: &Prepared<'_, K>, e: &Entry<K>, grant: GrantId, since: Instant) -> HeldBy {
        HeldBy {
            grant,
            owner: p.owner.clone(),
            mode: e.mode,
            message: e.message.clone(),
            since,
            token: 0,
            n_keys: p.entries.len() as u32,
        }
    }

    /// Arms the prepared set with its installed grant.
    #[inline(always)]
    fn granted(&self, p: &mut Prepared<'_, K>, grant: GrantId, since: Instant) {
        self.metrics.add(Counter::Grants, 1);
        p.arm(grant, since);
    }

    /// Builds the report of why a request that arrived at `seq` cannot be granted.
    pub(crate) fn conflict(&self, latches: &Latches<'_>, p: &Prepared<'_, K>, seq: Option<u64>) -> Conflict<K> {
        let modes = &self.modes;
        let mut keys = Vec::new();
        for (st, e) in latches.iter().zip(&p.entries) {
            if st.grantable(modes, e.mode, seq) {
                continue;
            }
            let holders = st
                .holders
                .iter()
                .map(|h| Holder {
                    owner: h.owner.clone(),
                    grant: h.grant,
                    mode: h.mode,
                    mode_name: modes.name(h.mode),
                    message: h.message.clone(),
                    since: h.since,
                    token: h.token(),
                    blocking: !modes.compatible(e.mode, h.mode),
                })
                .collect();
            let waiters_ahead = st
                .queue
                .iter()
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
                key: e.slot.key.clone(),
                asked: e.mode,
                asked_name: modes.name(e.mode),
                holders,
                waiters_ahead,
            });
        }
        Conflict { owner: p.owner.clone(), requested: p.entries.len(), keys }
    }

    /// Queues a waiter on every latched key and returns its arrival number.
    pub(crate) fn enqueue(
        &self,
        latches: &mut Latches<'_>,
        p: &Prepared<'_, K>,
        node: &Arc<crate::wait::WaitNode>,
    ) -> u64 {
        // Relaxed: taken while holding every latch of the request, so for each key the latch
        // orders this number after the numbers of everyone already queued there.
        let seq = self.wait_seq.fetch_add(1, Ordering::Relaxed);
        for (st, e) in latches.iter_mut().zip(&p.entries) {
            st.enqueue(seq, e.mode, node);
        }
        seq
    }

    /// Removes waiter `seq` from every latched key and collects who may now proceed.
    pub(crate) fn leave_queue(&self, latches: &mut Latches<'_>, seq: u64, wake: &mut WakeList) {
        for st in latches.iter_mut() {
            st.dequeue(seq);
            st.collect_wakeable(&self.modes, wake);
        }
    }

    /// Takes every key of `req` at once, or none and says why.
    ///
    /// Never waits for other holders: it fails if any key is held in an incompatible mode or
    /// is owed to an incompatible request queued earlier (no barging). It does wait, briefly,
    /// for other requests that are deciding on the same keys at this instant, so it never fails
    /// because of a grant that is only half made.
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
        self.resolve(&mut req.items, &mut p.entries)?;
        let refused = self.decide(&mut p, None, |latches, p| {
            let c = self.conflict(latches, p, None);
            if cfg!(lockcore_mutant = "partial") {
                // Deliberately broken: keeps the keys that were free (not all or nothing).
                let grant = GrantId(unique_id());
                for (st, e) in latches.iter_mut().zip(&p.entries) {
                    if st.grantable(&self.modes, e.mode, None) {
                        let rec = HeldBy {
                            grant,
                            owner: p.owner.clone(),
                            mode: e.mode,
                            message: None,
                            since: Instant::now(),
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

    /// The holders of `key` right now (empty if nobody holds it).
    pub fn holders(&self, key: &K) -> Vec<Holder> {
        let Some(slot) = self.find(key) else { return Vec::new() };
        let st = slot.state.lock();
        st.holders
            .iter()
            .map(|h| Holder {
                owner: h.owner.clone(),
                grant: h.grant,
                mode: h.mode,
                mode_name: self.modes.name(h.mode),
                message: h.message.clone(),
                since: h.since,
                token: h.token(),
                blocking: false,
            })
            .collect()
    }
}
