//! Read bias: shared grants of hot keys that take no shard latch.
//!
//! # Implementation details
//!
//! On two cores the cost of a request is the cache lines it pulls from the other core, and a
//! shared request on a hot key pulls its shard's latch, the key's record and its holder list
//! every time, although readers never exclude each other. So, after the fashion of BRAVO
//! (Dice and Kogan, USENIX ATC 2019), a key that is granted in one self-compatible, unfenced
//! mode ([`READS_TO_BIAS`] times in a row by default) gets a *bias* in that mode: a word in a
//! per-shard array that readers may consult without the latch. A thread then takes such keys
//! on its own *reader slot* (one of [`READER_SLOTS`], chosen by thread), a small latch-guarded
//! state on the thread's own cache line: it checks, under the slot's latch, that each key's
//! bias word is the one it cached, and records the grant in the slot. The slot keeps the
//! holder's owner, mode, message and time, so nothing about a holder is lost.
//!
//! A request that does not fit beside the bias (an exclusive request on a key biased shared)
//! *revokes* it while it holds the key's shard latch: it clears the bias word, then visits
//! every reader slot that has ever cached a bias, under each slot's latch, and turns every fast
//! holder of the key into an ordinary holder record of the key. From then on the record is the
//! whole truth again, and the request decides as usual. Why no reader slips through: a reader's
//! grant and a revoker's visit to that slot are serialised by the slot's latch. If the grant
//! comes first, the visit finds it and moves it. If the visit comes first, the revoker cleared
//! the word before the visit (program order) and released the slot latch after it, and the
//! reader took that latch before loading the word, so the clear happens before the reader's
//! load and the reader sees it (or a later value), fails, and goes through the shard latch.
//! No ordering stronger than the latches' is needed.
//!
//! A revocation costs a visit to each used reader slot. So that a key written now and then does
//! not pay it at every write, a revocation keeps its shard from taking a new bias for
//! [`INHIBIT_FACTOR`] times as long as the revocation took (BRAVO's inhibition), and a key must
//! again be granted [`READS_TO_BIAS`] times in a row before it is biased again.
//!
//! Everything else keeps working on records: a snapshot, `holders`, `key_count`, an owner's or
//! a forced release, `reclaim`, first revoke every bias of the shards they visit ("settle"), and
//! `into_ticket` moves a fast grant into its records before it becomes a ticket. A biased record
//! counts as in use and is never freed; there are at most [`BIAS_PER_SHARD`] per shard.
//!
//! Lock order: shard latches (in shard order), then reader slots (in slot order). The fast path
//! takes one reader slot and no shard latch; nothing takes a shard latch while holding a slot.

use crate::clock::Stamp;
use crate::grant::{Entry, Latches, Prepared};
use crate::metrics::Counter;
use crate::mode::{Mode, ModeTable};
use crate::request::{LockMessage, Owner};
use crate::shard::ShardState;
use crate::slot::HeldBy;
use crate::sync::{thread_slot, AtomicU64, Mutex, MutexGuard, Ordering};
use crate::table::LockTable;
use crate::ticket::GrantId;
use smallvec::SmallVec;
use std::hash::Hash;

/// Reader slots per table: one per thread up to this many threads (threads beyond share).
#[cfg(not(loom))]
pub(crate) const READER_SLOTS: usize = 64;
/// Under loom: a few, so that two model threads may also share one.
#[cfg(loom)]
pub(crate) const READER_SLOTS: usize = 2;
/// Keys of one shard that may be biased at once.
pub(crate) const BIAS_PER_SHARD: usize = 4;
/// Biased keys a reader slot remembers (the oldest goes first).
const CACHE_LEN: usize = 32;
/// The most keys of a fast grant: larger shared requests go through the latches (and the
/// grant's key list stays inline, so a fast grant allocates nothing).
const FAST_MAX_KEYS: usize = 8;
/// A revocation keeps its shard from taking a new bias for this many times its own duration.
const INHIBIT_FACTOR: u64 = 16;
/// A biased key taken through the latches is remembered in the taker's slot once every this
/// many such grants.
const REMEMBER_EVERY: u8 = 4;
/// Default for [`Builder::read_bias`](crate::Builder::read_bias).
pub(crate) const READS_TO_BIAS: u8 = 16;
/// `LockSet::reader` of a grant made through the latches.
pub(crate) const NO_READER: u16 = u16::MAX;

/// A shard's biases, under its latch (the words readers load are in [`Bias::words`]).
pub(crate) struct ShardBias {
    /// The biased record of each word, and the word (0: the word is free).
    pos: [u32; BIAS_PER_SHARD],
    word: [u64; BIAS_PER_SHARD],
    /// The next generation: every bias word is unique in its shard, so a reader's cached word
    /// names one bias of one record, never a later bias of the same or another record.
    next_gen: u64,
    /// No new bias in this shard before this (a recent revocation).
    inhibit_until: Option<Stamp>,
}

/// A bias word: a generation and the mode the key is biased in. Never 0.
fn word(gen: u64, mode: Mode) -> u64 {
    gen << 8 | u64::from(mode.0)
}

fn word_mode(word: u64) -> Mode {
    // The low byte is the mode's index.
    Mode((word & 0xff) as u8)
}

/// A biased key as a reader slot remembers it.
struct Cached<K> {
    hash: u64,
    key: K,
    idx: u8,
    pos: u32,
    word: u64,
}

/// One key of a fast grant.
struct FastKey {
    shard: u16,
    pos: u32,
    word: u64,
    mode: Mode,
    message: Option<LockMessage>,
    /// Moved into the key's record by a revocation (or `into_ticket`).
    migrated: bool,
}

/// A grant made on a reader slot.
struct FastGrant {
    grant: GrantId,
    owner: Owner,
    since: Stamp,
    keys: SmallVec<[FastKey; FAST_MAX_KEYS]>,
}

impl FastGrant {
    fn holder(&self, k: &FastKey) -> HeldBy {
        HeldBy {
            grant: self.grant,
            owner: self.owner.clone(),
            mode: k.mode,
            message: k.message.clone(),
            since: self.since,
            token: 0,
            // At most FAST_MAX_KEYS.
            n_keys: self.keys.len() as u32,
        }
    }
}

pub(crate) struct ReaderState<K> {
    cache: Vec<Cached<K>>,
    /// The next cache entry to replace once the cache is full.
    evict: usize,
    grants: Vec<FastGrant>,
    /// Fast grants made and released whole on this slot (for `metrics`).
    granted: u64,
    released: u64,
}

/// Reader slots latched together (`LockTable::lock_readers`).
pub(crate) type ReaderGuards<'a, K> = Vec<MutexGuard<'a, ReaderState<K>>>;

/// A reader slot, alone on its cache lines.
#[repr(align(128))]
struct Reader<K>(Mutex<ReaderState<K>>);

/// A table's read bias: the words readers check, and the reader slots.
pub(crate) struct Bias<K> {
    /// Per shard, its bias words (0: free). Written under the shard's latch, read by readers
    /// under their slot's latch (see the module docs for why that is enough).
    words: Box<[[AtomicU64; BIAS_PER_SHARD]]>,
    readers: Box<[Reader<K>]>,
    /// Bit `r`: reader slot `r` has cached a bias (set under that bias's shard latch, before
    /// the cache entry is made; never cleared). A revocation visits only these slots.
    used: AtomicU64,
    /// Bias words in use, table-wide: 0 lets every request skip the fast path at the cost of
    /// one load.
    active: AtomicU64,
    /// Grants in a row after which a key is biased; 0: never.
    pub(crate) reads_to_bias: u8,
    /// Bit `m`: mode `m` may be biased (compatible with itself, so unfenced).
    fast_modes: u8,
}

impl<K> Bias<K> {
    pub(crate) fn new(shards: usize, reads_to_bias: u8, modes: &ModeTable) -> Self {
        // At most MAX_MODES (8) modes.
        let fast_modes = (0..modes.len() as u8).filter(|&m| !modes.is_fenced(Mode(m))).fold(0, |set, m| set | 1 << m);
        Self {
            words: (0..shards).map(|_| std::array::from_fn(|_| AtomicU64::new(0))).collect(),
            readers: (0..READER_SLOTS)
                .map(|_| {
                    Reader(Mutex::new(ReaderState {
                        cache: Vec::new(),
                        evict: 0,
                        grants: Vec::new(),
                        granted: 0,
                        released: 0,
                    }))
                })
                .collect(),
            used: AtomicU64::new(0),
            active: AtomicU64::new(0),
            reads_to_bias,
            fast_modes,
        }
    }

    /// Whether `mode` may be biased.
    #[inline(always)]
    fn is_fast(&self, mode: Mode) -> bool {
        self.fast_modes & mode.bit() != 0
    }

    /// Fast grants and whole fast releases so far, summed over the slots.
    pub(crate) fn counts(&self) -> (u64, u64) {
        self.readers.iter().fold((0, 0), |(g, r), s| {
            let st = s.0.lock();
            (g + st.granted, r + st.released)
        })
    }
}

/// The slots in the `used` mask, in order.
fn used_slots(mask: u64) -> impl Iterator<Item = usize> {
    (0..READER_SLOTS).filter(move |r| mask & (1 << r) != 0)
}

impl<K: Hash + Eq + Clone> LockTable<K> {
    /// Grants `p` on the thread's reader slot if every key is biased in the mode asked and the
    /// slot has the bias cached; otherwise changes nothing and returns false.
    #[inline]
    pub(crate) fn try_fast(&self, p: &mut Prepared<'_, K>, grant: GrantId, since: Stamp) -> bool {
        // Relaxed: a stale 0 only sends a request through the latches (always correct); a
        // stale non-zero costs one slot latch. The grant itself is decided under the slot latch.
        if self.bias.active.load(Ordering::Relaxed) == 0
            || p.entries.len() > FAST_MAX_KEYS
            || p.entries.iter().any(|e| !self.bias.is_fast(e.mode) || !self.shard_has_bias(e.shard))
        {
            // A fenced mode is never biased, nor a key of a shard without biases: no slot
            // latch for a writer, or for a request of a cold key.
            return false;
        }
        self.try_fast_on_slot(p, grant, since)
    }

    /// Whether shard `shard` may have a biased key (a hint: the answer is checked again under
    /// the slot latch).
    #[inline]
    fn shard_has_bias(&self, shard: u16) -> bool {
        // Relaxed: a hint only, as `active` above.
        self.bias.words[usize::from(shard)].iter().any(|w| w.load(Ordering::Relaxed) != 0)
    }

    fn try_fast_on_slot(&self, p: &mut Prepared<'_, K>, grant: GrantId, since: Stamp) -> bool {
        let r = thread_slot(READER_SLOTS);
        let mut rs = self.bias.readers[r].0.lock();
        let mut keys: SmallVec<[FastKey; FAST_MAX_KEYS]> = SmallVec::new();
        for e in p.entries.iter() {
            let Some(c) = rs.cache.iter().find(|c| c.hash == e.hash && c.key == e.key) else { return false };
            // Relaxed: ordered against revocations by the slot latch (module docs).
            if word_mode(c.word) != e.mode
                || self.bias.words[usize::from(e.shard)][usize::from(c.idx)].load(Ordering::Relaxed) != c.word
            {
                return false;
            }
            if keys.iter().any(|k| k.shard == e.shard && k.pos == c.pos) {
                return false; // a key named twice: the latched path collapses it
            }
            keys.push(FastKey {
                shard: e.shard,
                pos: c.pos,
                word: c.word,
                mode: e.mode,
                message: e.message.clone(),
                migrated: false,
            });
        }
        for (e, k) in p.entries.iter_mut().zip(&keys) {
            e.slot = k.pos;
        }
        let owner = p.owner.clone();
        rs.grants.push(FastGrant { grant, owner, since, keys });
        rs.granted += 1;
        drop(rs);
        p.arm(grant, since);
        // At most READER_SLOTS (64) slots.
        p.reader = r as u16;
        true
    }

    /// Releases a fast grant made on reader slot `reader`. Keys a revocation moved into their
    /// records are released there (and a grant that was moved whole, or force-released, is
    /// released as a latched grant is).
    pub(crate) fn release_fast(&self, reader: u16, grant: GrantId, entries: &mut [Entry<K>], since: Stamp) {
        let mut rs = self.bias.readers[usize::from(reader)].0.lock();
        let taken = rs.grants.iter().position(|g| g.grant == grant).map(|at| rs.grants.swap_remove(at));
        let whole = taken.as_ref().is_some_and(|g| g.keys.iter().all(|k| !k.migrated));
        if whole {
            rs.released += 1;
        }
        drop(rs);
        // The grant's owner and messages are dropped here, outside the slot latch.
        drop(taken);
        if whole {
            self.metrics.record_hold(self.clock.since(since));
        } else {
            self.release_entries(grant, entries, since);
        }
    }

    /// Whether a request of these keys could be granted on a reader slot (if they were biased).
    #[inline]
    pub(crate) fn fast_eligible(&self, entries: &[Entry<K>]) -> bool {
        entries.len() <= FAST_MAX_KEYS && entries.iter().all(|e| self.bias.is_fast(e.mode))
    }

    /// Called for each key of a grant made through the latches, after its holder record is
    /// installed: counts the key's grants in a row in a self-compatible, unfenced mode, and once
    /// there are enough biases the key (or, if it is biased already, remembers its bias in the
    /// thread's reader slot, so the thread's next request of it can go fast). `eligible`: the
    /// request could go fast; one that could not (it also writes a key, say) teaches its thread
    /// nothing it could use.
    #[inline(always)]
    pub(crate) fn note_grant(&self, st: &mut ShardState<K>, shard: u16, at: u32, mode: Mode, eligible: bool) {
        let threshold = self.bias.reads_to_bias;
        if threshold == 0 {
            return;
        }
        let record = &mut st.slots[at as usize];
        if !self.bias.is_fast(mode) {
            record.reads = 0;
            return;
        }
        record.reads = record.reads.saturating_add(1);
        // A key biased already has nothing to teach a request that could not go fast.
        if record.reads >= threshold && (eligible || record.bias().is_none()) {
            self.bias_or_remember(st, shard, at, mode, eligible);
        }
    }

    #[cold]
    fn bias_or_remember(&self, st: &mut ShardState<K>, shard: u16, at: u32, mode: Mode, eligible: bool) {
        let record = &mut st.slots[at as usize];
        if let Some(idx) = record.bias() {
            // A thread took a biased key through the latches: it has not cached the bias yet,
            // or it asked for other keys too (then remembering again is wasted). So remember
            // once every REMEMBER_EVERY such grants of the key, not at each.
            record.reads = self.bias.reads_to_bias.saturating_sub(REMEMBER_EVERY);
            let sb = st.bias.as_ref().expect("a biased record's shard has biases");
            let w = sb.word[usize::from(idx)];
            if eligible && word_mode(w) == mode {
                self.remember(st, idx, at, w);
            }
            return;
        }
        if record.has_waiters() {
            record.reads = 0; // count again once the queue is gone, not at every grant
            return;
        }
        let sb = st.bias.get_or_insert_with(|| {
            Box::new(ShardBias {
                pos: [0; BIAS_PER_SHARD],
                word: [0; BIAS_PER_SHARD],
                next_gen: 1,
                inhibit_until: None,
            })
        });
        if sb.inhibit_until.is_some_and(|until| self.clock.now() < until) {
            st.slots[at as usize].reads = 0;
            return;
        }
        let Some(idx) = sb.word.iter().position(|&w| w == 0) else {
            st.slots[at as usize].reads = 0; // every bias word in use: count again
            return;
        };
        let w = word(sb.next_gen, mode);
        sb.next_gen += 1;
        sb.word[idx] = w;
        sb.pos[idx] = at;
        // Relaxed: readers are ordered against this bias's revocation by their slot latch;
        // the word only has to become visible eventually (until then readers go slow).
        self.bias.words[usize::from(shard)][idx].store(w, Ordering::Relaxed);
        self.bias.active.fetch_add(1, Ordering::Relaxed);
        // BIAS_PER_SHARD is far below 256.
        let idx = idx as u8;
        st.slots[at as usize].set_bias(Some((idx, mode)));
        if eligible {
            self.remember(st, idx, at, w);
        }
    }

    /// Puts bias `w` of the record at `at` (shard latched) in the thread's reader slot.
    fn remember(&self, st: &ShardState<K>, idx: u8, at: u32, w: u64) {
        let record = &st.slots[at as usize];
        let Some(key) = record.key() else { return };
        let r = thread_slot(READER_SLOTS);
        // Relaxed: set under this shard's latch, so any later revocation in this shard (which
        // takes the latch) sees it; the slot can only use this bias after this point.
        self.bias.used.fetch_or(1 << r, Ordering::Relaxed);
        let mut rs = self.bias.readers[r].0.lock();
        let entry = Cached { hash: record.hash, key: key.clone(), idx, pos: at, word: w };
        if let Some(c) = rs.cache.iter_mut().find(|c| c.hash == entry.hash && c.key == entry.key) {
            *c = entry;
        } else if rs.cache.len() < CACHE_LEN {
            rs.cache.push(entry);
        } else {
            let at = rs.evict;
            rs.cache[at] = entry;
            rs.evict = (at + 1) % CACHE_LEN;
        }
    }

    /// Whether the record at `at` is biased in a mode `mode` cannot be held beside; if so,
    /// revokes the bias (shard latched), so the record shows every holder.
    #[inline(always)]
    pub(crate) fn revoke_if_conflicting(&self, st: &mut ShardState<K>, shard: u16, at: u32, mode: Mode) {
        let record = &st.slots[at as usize];
        if let (Some(idx), Some(biased)) = (record.bias(), record.bias_mode()) {
            if !self.modes.compatible_with_set(mode, biased.bit()) {
                self.revoke(st, shard, usize::from(idx));
            }
        }
    }

    /// Revokes bias `idx` of shard `shard` (latched): clears its word, then moves every fast
    /// holder of it into the record (module docs: why none can slip through).
    #[cold]
    fn revoke(&self, st: &mut ShardState<K>, shard: u16, idx: usize) {
        let start = self.clock.now();
        self.metrics.add(Counter::Revocations, 1);
        let sb = st.bias.as_mut().expect("a biased record's shard has biases");
        let (w, at) = (sb.word[idx], sb.pos[idx]);
        sb.word[idx] = 0;
        // Relaxed: the clear is sequenced before this thread releases each slot latch below,
        // and a reader loads the word only under its slot latch (module docs).
        self.bias.words[usize::from(shard)][idx].store(0, Ordering::Relaxed);
        self.bias.active.fetch_sub(1, Ordering::Relaxed);
        let record = &mut st.slots[at as usize];
        record.set_bias(None);
        record.reads = 0;
        if !cfg!(lockcore_mutant = "bias_no_revoke") {
            // Deliberately broken variant above: fast holders stay unseen by the record.
            for r in used_slots(self.bias.used.load(Ordering::Relaxed)) {
                let mut rs = self.bias.readers[r].0.lock();
                rs.grants.retain_mut(|g| {
                    for k in 0..g.keys.len() {
                        let key = &g.keys[k];
                        if key.shard == shard && key.word == w && !key.migrated {
                            let rec = g.holder(key);
                            record.add_holder(&self.modes, rec);
                            g.keys[k].migrated = true;
                        }
                    }
                    // A grant moved whole is a latched grant now: its guard releases it so.
                    !g.keys.iter().all(|k| k.migrated)
                });
            }
        }
        // Not under loom: a model must not branch on the time a revocation took.
        if !cfg!(loom) {
            let now = self.clock.now();
            let sb = st.bias.as_mut().expect("a biased record's shard has biases");
            sb.inhibit_until = Some(now.later_by(start, INHIBIT_FACTOR));
        }
    }

    /// Revokes every bias of shard `shard` (latched) and frees the records that leaves idle:
    /// afterwards the shard's records show every holder.
    pub(crate) fn settle(&self, st: &mut ShardState<K>, shard: u16) {
        for idx in 0..BIAS_PER_SHARD {
            let Some(sb) = st.bias.as_ref() else { return };
            if sb.word[idx] != 0 {
                let at = sb.pos[idx];
                self.revoke(st, shard, idx);
                st.retire_if_idle(at);
            }
        }
    }

    /// Latches every reader slot that ever cached a bias, in slot order (callers hold the
    /// shard latches they read records under: shard latches first, then slots). While these
    /// are held no fast grant is made or released, so what [`fast_holders`](Self::fast_holders)
    /// reads across several records is one cut, as the shard latches make it for the records.
    pub(crate) fn lock_readers(&self) -> ReaderGuards<'_, K> {
        used_slots(self.bias.used.load(Ordering::Relaxed)).map(|r| self.bias.readers[r].0.lock()).collect()
    }

    /// Whether a reader slot holds some key of `grant` that no revocation has moved.
    pub(crate) fn holds_fast(&self, grant: GrantId) -> bool {
        self.lock_readers()
            .iter()
            .any(|rs| rs.grants.iter().any(|g| g.grant == grant && g.keys.iter().any(|k| !k.migrated)))
    }

    /// Calls `f` with each fast holder of the record at `at` (shard `shard` latched), from the
    /// reader slots `readers` latched by [`lock_readers`](Self::lock_readers): what the record's
    /// holder list does not show.
    pub(crate) fn fast_holders(
        &self,
        readers: &ReaderGuards<'_, K>,
        st: &ShardState<K>,
        shard: u16,
        at: u32,
        mut f: impl FnMut(HeldBy),
    ) {
        let Some(idx) = st.slots[at as usize].bias() else { return };
        let w = st.bias.as_ref().expect("a biased record's shard has biases").word[usize::from(idx)];
        for rs in readers {
            for g in &rs.grants {
                for k in g.keys.iter().filter(|k| k.shard == shard && k.word == w && !k.migrated) {
                    f(g.holder(k));
                }
            }
        }
    }

    /// [`fast_holders`](Self::fast_holders) of one record, latching the reader slots for it.
    pub(crate) fn for_each_fast_holder(&self, st: &ShardState<K>, shard: u16, at: u32, f: impl FnMut(HeldBy)) {
        if st.slots[at as usize].bias().is_some() {
            self.fast_holders(&self.lock_readers(), st, shard, at, f);
        }
    }

    /// Keys of shard `shard` (latched) somebody holds or waits for, fast holders included.
    pub(crate) fn keys_in_use(&self, st: &ShardState<K>, shard: u16) -> usize {
        let mut n = st.len();
        if let Some(sb) = st.bias.as_ref() {
            for (&w, &at) in sb.word.iter().zip(&sb.pos) {
                // `len` counts a biased record as in use; it is only if someone holds it fast.
                if w != 0 && st.slots[at as usize].is_idle_but_biased() {
                    let mut fast = false;
                    self.for_each_fast_holder(st, shard, at, |_| fast = true);
                    n -= usize::from(!fast);
                }
            }
        }
        n
    }

    /// Moves fast grant `grant` of reader slot `reader` into its records, so it can outlive
    /// its guard as a latched grant does (`into_ticket`).
    pub(crate) fn migrate_grant(&self, reader: u16, grant: GrantId, entries: &mut [Entry<K>]) {
        let mut latches = Latches::lock(self, entries);
        let mut rs = self.bias.readers[usize::from(reader)].0.lock();
        let Some(at) = rs.grants.iter().position(|g| g.grant == grant) else { return };
        let g = rs.grants.swap_remove(at);
        drop(rs);
        for (e, k) in entries.iter().zip(&g.keys) {
            if !k.migrated {
                let rec = g.holder(k);
                latches.slot(e).add_holder(&self.modes, rec);
            }
        }
    }
}
