//! The lock table: its shards, its settings, and what it says about itself.
//!
//! # Implementation details
//!
//! A key's hash picks its shard; the shard's latch guards the shard's index, its records and
//! its token floor (`shard.rs`). A request latches the shards of all its keys in increasing
//! shard number, finds or makes its keys' records, decides on the whole set, installs or
//! reports, and unlatches (`grant.rs`). Because every thread latches in that one order and
//! waits for nothing else while holding latches, latching cannot deadlock; because a decision
//! is made with every latch it depends on held, nobody sees half a grant.
//!
//! Fairness: a record keeps a FIFO queue of waiters, sorted by a table-wide arrival number. A
//! request is grantable on a key only if its mode is compatible with the holders and with every
//! waiter that arrived before it (a new arrival is behind all of them). That is PostgreSQL's
//! no-barging rule, and the global order makes the "waits behind" relation acyclic, so the
//! earliest waiter is only ever held up by holders, which do not wait.

use crate::bias::{Bias, READS_TO_BIAS};
use crate::clock::{Anchor, Clock};
use crate::conflict::Holder;
use crate::direct::Direct;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::mode::ModeTable;
use crate::pool::EntryPool;
use crate::shard::{Shard, ShardState};
use crate::slot::HeldBy;
use crate::sync::{unique_id, AtomicU64, MutexGuard};
use crate::ticket::TableId;
use std::fmt;
use std::hash::{BuildHasher, Hash};

/// The index's hasher: seeded per table, except under loom, where every run must hash alike
/// so that replays of a schedule see the same index layout.
#[cfg(not(loom))]
type IndexHasher = foldhash::fast::RandomState;
#[cfg(loom)]
type IndexHasher = foldhash::fast::FixedState;

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
    pub(crate) shards: Box<[Shard<K>]>,
    shard_mask: usize,
    hasher: IndexHasher,
    /// Arrival numbers of waiters.
    pub(crate) wait_seq: AtomicU64,
    pub(crate) metrics: Metrics,
    /// Buffers for the entries of guards of more than one key.
    pub(crate) pool: EntryPool<K>,
    /// When grants were made.
    pub(crate) clock: Clock,
    /// Shared grants of hot keys that skip the shard latch (`bias.rs`).
    pub(crate) bias: Bias<K>,
    /// One-key grants of free keys that skip the shard latch (`direct.rs`).
    pub(crate) direct: Direct<K>,
}

/// Builds a [`LockTable`] with non-default settings.
#[derive(Debug, Clone)]
pub struct Builder {
    modes: ModeTable,
    shards: usize,
    token_floor: u64,
    reads_to_bias: u8,
    direct: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// Default settings: shared/exclusive modes, 512 shards, tokens from 1.
    pub fn new() -> Self {
        Builder { modes: ModeTable::default(), shards: 512, token_floor: 0, reads_to_bias: READS_TO_BIAS, direct: true }
    }

    /// The lock modes and their compatibility (default: shared/exclusive).
    pub fn modes(mut self, modes: ModeTable) -> Self {
        self.modes = modes;
        self
    }

    /// Read bias: after a key has been granted `reads` times in a row in one mode that is
    /// compatible with itself and carries no fencing token (shared, or IS and IX on a
    /// hierarchical table), requests for it in that mode skip the shard latch and take it on a
    /// slot of their own thread until a request that conflicts with it comes (see
    /// `docs/design.md`, "Read bias"). 0 turns it off. Default: 16 (a key that is written now and then rarely sees 16 reads in a row, and one read all the time reaches them at once).
    ///
    /// Nothing a caller sees changes: conflicts, snapshots, tickets and releases show fast
    /// holders as they show any other.
    pub fn read_bias(mut self, reads: u8) -> Self {
        self.reads_to_bias = reads;
        self
    }

    /// Direct grants: a request of one key that nobody holds or waits for is granted by one
    /// compare-exchange of an atomic word, without the shard latch, and released by another
    /// (see `docs/design.md`, "Direct grants"). Default: on. Keys that own heap memory (a
    /// `String`, say) always go through the latches, since a direct grant keeps its own copy
    /// of the key.
    ///
    /// Nothing a caller sees changes: conflicts, snapshots, tickets, tokens and releases show
    /// direct holders as they show any other.
    ///
    /// ```
    /// use lockcore::{LockTable, Request};
    /// let table: LockTable<u64> = LockTable::<u64>::builder().direct(false).build();
    /// let set = table.try_acquire(Request::new("cmd").exclusive(7)).unwrap();
    /// assert_eq!(table.metrics().direct_grants, 0);
    /// # drop(set);
    /// ```
    pub fn direct(mut self, on: bool) -> Self {
        self.direct = on;
        self
    }

    /// Number of shards, rounded up to a power of two (default: 512). Each shard has its own
    /// latch; keys in one shard never conflict with each other, but requests on them take
    /// turns for the instant it takes to decide. More shards let more batches decide at once;
    /// fewer keep the table's lines in less cache (each shard is 128 bytes, plus the few
    /// records it keeps idle). 512 was measured against 128, 256, 1024 and 2048 on two cores
    /// (design.md section 12, "More shards").
    ///
    /// # Examples
    /// ```
    /// use lockcore::{LockTable, Request};
    /// let table: LockTable<u64> = LockTable::<u64>::builder().shards(1000).build(); // 1024 shards
    /// let set = table.try_acquire(Request::new("cmd").exclusive(7)).unwrap();
    /// assert_eq!(set.len(), 1);
    /// ```
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
        let bias = Bias::new(self.shards, self.reads_to_bias, &self.modes);
        let direct = Direct::new(self.direct, self.shards, self.token_floor);
        LockTable {
            id: TableId(unique_id() ^ foldhash::fast::RandomState::default().hash_one(0u8)),
            modes: self.modes,
            shards: direct.words.iter().map(|w| Shard::new(self.token_floor, w.clone(), !direct.on)).collect(),
            shard_mask: self.shards - 1,
            hasher: IndexHasher::default(),
            wait_seq: AtomicU64::new(0),
            metrics: Metrics::new(),
            pool: EntryPool::new(),
            clock: Clock::new(),
            bias,
            direct,
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
        let mut m = self.metrics.snapshot();
        for shard in self.shards.iter() {
            let st = shard.lock();
            m.grants += st.grants;
            m.releases += st.releases;
        }
        let (grants, releases) = self.bias.counts();
        m.grants += grants;
        m.biased_grants = grants;
        m.releases += releases;
        let (grants, releases) = self.direct.counts();
        m.grants += grants;
        m.direct_grants = grants;
        m.releases += releases;
        m
    }

    /// `key`'s hash and shard number.
    #[inline(always)]
    pub(crate) fn place(&self, key: &K) -> (u64, u16) {
        let hash = self.hasher.hash_one(key);
        // Bits 40.. pick the shard: hashbrown uses the top 7 bits as tags and the low bits as
        // positions, so shard choice stays independent of both. At most 2^16 shards.
        (hash, ((hash >> 40) as usize & self.shard_mask) as u16)
    }

    /// Latches every shard, in shard order: a consistent cut of the whole table.
    /// Fast holders of read-biased keys are not in the records: see
    /// [`for_each_fast_holder`](Self::for_each_fast_holder).
    pub(crate) fn lock_all(&self) -> Vec<MutexGuard<'_, ShardState<K>>> {
        self.shards.iter().map(Shard::lock).collect()
    }

    /// Latches shard `shard`, its read biases revoked: its records show every holder.
    pub(crate) fn lock_settled(&self, shard: u16) -> MutexGuard<'_, ShardState<K>> {
        let mut st = self.shards[usize::from(shard)].lock();
        self.settle(&mut st, shard);
        self.claim_shard(&mut st, shard);
        st
    }

    /// Gives back the memory of records freed since the table last grew: the table frees a
    /// key's record as soon as nobody holds or waits for the key, and keeps the freed records
    /// (with their lists' capacity) for the next keys. Returns how many such records it dropped.
    ///
    /// Nothing that is held or waited for is touched.
    pub fn reclaim(&self) -> usize {
        (0..self.shards.len()).map(|s| self.lock_settled(s as u16).shrink()).sum()
    }

    /// Keys the table currently stores: exactly the keys somebody holds or waits for.
    ///
    /// ```
    /// use lockcore::{LockTable, Request};
    /// let table = LockTable::new();
    /// let set = table.try_acquire(Request::new("cmd").exclusive(1).shared(2)).unwrap();
    /// assert_eq!(table.key_count(), 2);
    /// drop(set);
    /// assert_eq!(table.key_count(), 0);
    /// ```
    pub fn key_count(&self) -> usize {
        // At most 2^16 shards.
        (0..self.shards.len())
            .map(|s| self.keys_in_use(&self.shards[s].lock(), s as u16) + self.direct_keys(s as u16))
            .sum()
    }

    /// The holders of `key` right now (empty if nobody holds it).
    pub fn holders(&self, key: &K) -> Vec<Holder> {
        let (hash, shard) = self.place(key);
        let mut st = self.shards[usize::from(shard)].lock();
        // A direct holder of the key (or of another key of its word) moves into a record.
        self.claim_held(&mut st, shard, hash);
        let Some(at) = st.find(hash, key) else { return Vec::new() };
        let anchor = self.clock.anchor();
        let mut out: Vec<Holder> =
            st.slots[at as usize].holders.iter().map(|h| self.holder(h, false, &anchor)).collect();
        self.for_each_fast_holder(&st, shard, at, |h| out.push(self.holder(&h, false, &anchor)));
        out
    }

    /// A holder record as the public API shows it.
    pub(crate) fn holder(&self, h: &HeldBy, blocking: bool, anchor: &Anchor) -> Holder {
        Holder {
            owner: h.owner.clone(),
            grant: h.grant,
            mode: h.mode,
            mode_name: self.modes.name(h.mode),
            message: h.message.clone(),
            since: anchor.instant(h.since),
            token: h.token(),
            blocking,
        }
    }
}
