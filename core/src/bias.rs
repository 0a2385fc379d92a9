//! Read bias: shared grants of hot keys that take no lock at all.
//!
//! # Implementation details
//!
//! On two cores the cost of a request is the cache lines it pulls from the other core, and a
//! shared request on a hot key pulls its shard's latch, the key's record and its holder list
//! every time, although readers never exclude each other. So, after the fashion of BRAVO
//! (Dice and Kogan, USENIX ATC 2019), a key that is granted in one self-compatible, unfenced
//! mode ([`READS_TO_BIAS`] times in a row by default) gets a *bias* in that mode: a word in a
//! per-shard array that readers may consult without the latch. A thread then takes such keys
//! on its own *reader slot* (one of [`READER_SLOTS`], leased to one living thread at a time by
//! [`reader_slot`]): it writes the grant (owner, mode, message, time, and the bias word of
//! each key) into a free *cell* of its slot, publishes the cell as *tentative*, checks that
//! every key's bias word is still the one it cached, and turns the cell *held*. No lock, no
//! record, no line of the other core: the cell is on the thread's own lines.
//!
//! A request that does not fit beside the bias (an exclusive request on a key biased shared)
//! *revokes* it while it holds the key's shard latch: it clears the bias word, then visits
//! every cell of every reader slot that has ever cached a bias. A tentative cell it aborts (its
//! reader then goes through the latches); a held cell it pins, copies every holder of the key
//! from it into the key's record, and unpins. From then on the record is the whole truth, and
//! the request decides as usual. Why no reader slips through: the reader stores "tentative",
//! issues a `SeqCst` fence and loads the words; the revoker stores the cleared word, issues a
//! `SeqCst` fence and loads the cells' states. The two fences are ordered one way or the other
//! in the single total order of `SeqCst` operations, and whichever thread's fence comes second
//! sees the other's store: either the reader sees the cleared word (and backs out) or the
//! revoker sees the cell (and aborts it if it is still tentative, or moves it once held).
//! (Fences rather than `SeqCst` accesses because loom models the fences exactly and treats
//! `SeqCst` accesses as acquire/release; on x86 the fence is one `mfence`.) A cell turns held only
//! from tentative, by the reader's compare-exchange, so an aborted reader cannot turn it held.
//!
//! Nobody waits for anybody on these paths: a reader never waits (a full slot, a changed word
//! or an abort sends it through the latches), and a revoker never waits for a reader (it aborts
//! or pins). A cell's state word carries the grant (the low 46 bits of its id, so that an old
//! state of the cell can never be mistaken for a new one), a count of pins, a "moved" bit and
//! the cell's status:
//!
//! ```text
//!   FREE --reader--> TENTATIVE --reader--> HELD --guard, no pin--> FREEING --> FREE
//!                     |    \                 \--guard, pinned--> RELEASED --last unpin--> FREEING
//!                     |     \--revoker--> ABORTED --reader--> FREE
//!                     \--reader (a word changed)--> FREE
//! ```
//!
//! The cell's data is written only by the reader while the cell is FREE or TENTATIVE, read by
//! a pinner only while it holds a pin on a HELD or RELEASED cell (nobody frees a pinned cell),
//! read by the grant's guard while it holds the grant, and cleared only by whoever turns the
//! cell FREEING (the guard, or the last pinner of a released cell), which nobody else touches.
//! Loom checks every access to it (`sync::UnsafeCell`).
//!
//! A revocation costs a visit to each cell of each used reader slot. So that a key written now
//! and then does not pay it at every write, a revocation keeps its shard from taking a new
//! bias for [`INHIBIT_FACTOR`] times as long as the revocation took (BRAVO's inhibition), and a
//! key must again be granted [`READS_TO_BIAS`] times in a row before it is biased again.
//!
//! Everything else keeps working on records: a snapshot, an owner's or a forced release, and
//! `reclaim` first revoke every bias of the shards they visit ("settle"); `holders`,
//! `key_count` and conflict reports read the held cells (pinned, one pass over the cells for
//! all the keys of a report, so a fast grant shows on all its keys or on none); `into_ticket`
//! moves a fast grant into its records before it becomes a ticket. A key of a fast grant that a
//! revocation moved is released from its record (its bias word has changed, so the guard
//! knows). A biased record counts as in use and is never freed; there are at most
//! [`BIAS_PER_SHARD`] per shard.
//!
//! Lock order: shard latches (in shard order). The fast path takes none.

use crate::clock::Stamp;
use crate::grant::{Entry, Latches, Prepared};
use crate::metrics::Counter;
use crate::mode::{Mode, ModeTable};
use crate::request::{LockMessage, Owner};
use crate::shard::ShardState;
use crate::slot::HeldBy;
use crate::sync::{fence, leased_reader_slot, reader_slot, stat, AtomicU64, Ordering, UnsafeCell};
use crate::table::LockTable;
use crate::ticket::GrantId;
use smallvec::SmallVec;
use std::hash::Hash;

pub(crate) use crate::sync::READER_SLOTS;
/// Fast grants one reader slot holds at once; a thread holding this many takes more through
/// the latches. (Under loom: two, to keep the models small.)
#[cfg(not(loom))]
const CELLS: usize = 8;
#[cfg(loom)]
const CELLS: usize = 2;
/// Keys of one shard that may be biased at once.
pub(crate) const BIAS_PER_SHARD: usize = 4;
/// Biased keys a reader slot remembers (the oldest goes first).
const CACHE_LEN: usize = 32;
/// The most keys of a fast grant: larger shared requests go through the latches.
const FAST_MAX_KEYS: usize = 8;
/// A revocation keeps its shard from taking a new bias for this many times its own duration.
const INHIBIT_FACTOR: u64 = 16;
/// A biased key taken through the latches is remembered in the taker's slot once every this
/// many such grants.
const REMEMBER_EVERY: u8 = 4;
/// Default for [`Builder::read_bias`](crate::Builder::read_bias).
pub(crate) const READS_TO_BIAS: u8 = 16;
/// `LockSet::reader` of a grant made through the latches (a fast grant's is its slot times
/// [`CELLS`] plus its cell).
pub(crate) const NO_READER: u16 = u16::MAX;

/// A cell's state word: status in bits 0-2, the "moved" bit 3, pins in bits 4-17, and the low
/// 46 bits of the grant's id above.
mod cell_state {
    use crate::ticket::GrantId;
    pub(super) const FREE: u64 = 0;
    pub(super) const TENTATIVE: u64 = 1;
    pub(super) const HELD: u64 = 2;
    pub(super) const RELEASED: u64 = 3;
    pub(super) const ABORTED: u64 = 4;
    pub(super) const FREEING: u64 = 5;
    const STATUS: u64 = 0b111;
    /// A revocation moved some key of the grant into its record.
    pub(super) const MOVED: u64 = 1 << 3;
    pub(super) const PIN: u64 = 1 << 4;
    const PINS: u64 = ((1 << 14) - 1) << 4;
    const ID_SHIFT: u32 = 18;
    /// The grant id's bits.
    pub(super) const ID: u64 = !0 << ID_SHIFT;

    /// The state `status` of grant `grant`, no pins.
    pub(super) fn of(status: u64, grant: GrantId) -> u64 {
        grant.0 << ID_SHIFT | status
    }
    pub(super) fn status(s: u64) -> u64 {
        s & STATUS
    }
    pub(super) fn pins(s: u64) -> u64 {
        (s & PINS) >> 4
    }
    /// `s` with status `status`, the rest kept.
    pub(super) fn with_status(s: u64, status: u64) -> u64 {
        s & !STATUS | status
    }
}
use cell_state as cs;

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
    /// The key's bias word in its shard: `idx`, and the word the grant was made under.
    idx: u8,
    word: u64,
    pos: u32,
    mode: Mode,
    message: Option<LockMessage>,
}

/// A fast grant, in its cell.
struct FastGrant {
    /// The grant, its owner and time; `None` while the cell is free.
    head: Option<(GrantId, Owner, Stamp)>,
    /// Its keys, in the order of its guard's entries (kept allocated from one grant to the next).
    keys: Vec<FastKey>,
}

impl FastGrant {
    /// The holder record of key `k`.
    fn holder(&self, k: &FastKey) -> Option<HeldBy> {
        let (grant, owner, since) = self.head.as_ref()?;
        Some(HeldBy {
            grant: *grant,
            owner: owner.clone(),
            mode: k.mode,
            message: k.message.clone(),
            since: *since,
            token: 0,
            // At most FAST_MAX_KEYS.
            n_keys: self.keys.len() as u32,
        })
    }

    fn clear(&mut self) {
        self.head = None;
        self.keys.clear();
    }
}

/// What only the thread that leases a reader slot touches.
struct Local<K> {
    cache: Vec<Cached<K>>,
    /// The next cache entry to replace once the cache is full.
    evict: usize,
}

/// A reader slot, alone on its cache lines.
#[repr(align(128))]
struct Reader<K> {
    /// The cells' states, on one line, so a revocation reads a slot's in one miss.
    states: [AtomicU64; CELLS],
    cells: [UnsafeCell<FastGrant>; CELLS],
    /// Set while the slot's thread is inside `local` (so that a key's `Eq`, `Hash` or `Clone`
    /// that calls back into the table cannot reach it twice). Only that thread reads or
    /// writes it.
    busy: stat::AtomicBool,
    local: UnsafeCell<Local<K>>,
    /// Fast grants made on this slot, and released whole by the slot's thread (only that
    /// thread writes these two) or by another (a guard sent to another thread).
    granted: stat::AtomicU64,
    released_here: stat::AtomicU64,
    released_elsewhere: stat::AtomicU64,
}

// SAFETY: `cells` and `local` are the only parts that are not `Sync` by themselves. `local` is
// touched only by the one living thread that leases the slot's index (`sync::reader_slot`
// hands each index to one thread at a time, and a new holder's claim happens after the old
// holder's release), and `busy` keeps that thread from reaching it twice at once. A cell's
// data is touched by one party at a time, as its state word says (module docs: the reader
// while FREE or TENTATIVE, the guard while it holds the grant, pinners while pinned, which
// only read, and whoever turns it FREEING); each hand-over is a Release store or exchange of
// the state read by an Acquire one. The data holds keys (`K: Send + Sync` for the table to be
// shared), owners and messages (`Send + Sync`).
unsafe impl<K: Send + Sync> Sync for Reader<K> {}

impl<K> Reader<K> {
    fn new() -> Self {
        Self {
            states: std::array::from_fn(|_| AtomicU64::new(cs::FREE)),
            cells: std::array::from_fn(|_| UnsafeCell::new(FastGrant { head: None, keys: Vec::new() })),
            busy: stat::AtomicBool::new(false),
            local: UnsafeCell::new(Local { cache: Vec::new(), evict: 0 }),
            granted: stat::AtomicU64::new(0),
            released_here: stat::AtomicU64::new(0),
            released_elsewhere: stat::AtomicU64::new(0),
        }
    }

    /// Marks the slot busy if it is not (its thread only); `None` if it is (a re-entry).
    fn enter(&self) -> Option<Busy<'_>> {
        // Relaxed: only the slot's thread reads or writes `busy` (a plain std atomic under
        // loom too: it orders nothing between threads).
        if self.busy.load(stat::Ordering::Relaxed) {
            return None;
        }
        self.busy.store(true, stat::Ordering::Relaxed);
        Some(Busy(&self.busy))
    }

    /// Adds one to a counter only the slot's thread writes (no locked instruction).
    fn bump(counter: &stat::AtomicU64) {
        // Relaxed: a statistic, written by one thread, read by `metrics`.
        counter.store(counter.load(stat::Ordering::Relaxed) + 1, stat::Ordering::Relaxed);
    }
}

/// Clears its slot's `busy` flag when dropped (also when a key's `Eq` panics).
struct Busy<'a>(&'a stat::AtomicBool);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        // Relaxed: see `Reader::enter`.
        self.0.store(false, stat::Ordering::Relaxed);
    }
}

/// A table's read bias: the words readers check, and the reader slots.
pub(crate) struct Bias<K> {
    /// Per shard, its bias words (0: free). Written under the shard's latch, read by readers
    /// without it (see the module docs for why that is enough).
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
            readers: (0..READER_SLOTS).map(|_| Reader::new()).collect(),
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
        // Relaxed: statistics.
        let get = |c: &stat::AtomicU64| c.load(stat::Ordering::Relaxed);
        self.readers
            .iter()
            .fold((0, 0), |(g, r), s| (g + get(&s.granted), r + get(&s.released_here) + get(&s.released_elsewhere)))
    }

    /// The bias word `idx` of shard `shard` right now.
    #[inline(always)]
    fn word_now(&self, shard: u16, idx: u8, order: Ordering) -> u64 {
        self.words[usize::from(shard)][usize::from(idx)].load(order)
    }

    /// Clears cell `c` of `reader`, which the caller has just turned FREEING (from state `s`),
    /// and frees it. The FREE state keeps the grant's id, so a double collect (`fast_cut`) never
    /// mistakes "free, held by another grant, free again" for "free all along".
    fn free_cell(reader: &Reader<K>, c: usize, s: u64) {
        // SAFETY: the caller turned the cell FREEING, which nobody else acts on: no pin is
        // held (a pinned cell is never turned FREEING), the guard has let go of the grant, and
        // the reader waits for FREE. Pinners' reads happen before, by the Acquire exchange
        // that saw their unpins.
        reader.cells[c].with_mut(|d| unsafe { &mut *d }.clear());
        // Release: the clear happens before the slot's thread reuses the cell (it loads FREE
        // with Acquire before writing).
        reader.states[c].store(cs::with_status(s & cs::ID, cs::FREE), Ordering::Release);
    }

    /// Pins cell `c` of `reader` if it is HELD and calls `f` with its grant; then unpins it (and
    /// frees it if its guard released it meanwhile). With `abort`, a TENTATIVE cell is aborted
    /// instead (a revocation). `f` returns whether it moved a key of the grant into a record.
    /// Returns the state the visit saw (the one it pinned, for a held cell).
    fn visit(reader: &Reader<K>, c: usize, abort: bool, f: impl FnOnce(&FastGrant) -> bool) -> u64 {
        let state = &reader.states[c];
        // Acquire: a cell its guard has given up (FREE, FREEING, RELEASED) was given up by a
        // Release store or exchange, and the reader's critical section must happen before
        // whatever the revoker's request does next (a writer's grant). That a reader cannot
        // slip through comes from the SeqCst fence the revoker issued before this load
        // (module docs); the pin below is the Acquire for the data.
        // Deliberately broken variant (`bias_visit_relaxed`): a reader's release is not ordered
        // before the writer that revokes after it.
        let order = if cfg!(lockcore_mutant = "bias_visit_relaxed") { Ordering::Relaxed } else { Ordering::Acquire };
        let mut s = state.load(order);
        loop {
            let next = match cs::status(s) {
                // Deliberately broken variant (`bias_no_abort`): a revoker leaves a tentative
                // grant alone, and it may turn held unseen.
                cs::TENTATIVE if abort && !cfg!(lockcore_mutant = "bias_no_abort") => cs::with_status(s, cs::ABORTED),
                cs::HELD => s + cs::PIN,
                _ => return s,
            };
            // AcqRel on a pin: Acquire, so the grant the reader wrote (before its Release
            // exchange to HELD) is visible to `f`; Release, so that a clear of a bias word
            // sequenced before this pin happens before the guard's release exchange, which
            // reads this pin or a later change, and its check of the words. An abort only
            // has to win or lose against the reader's exchange: the same ordering serves.
            // A failed exchange reads the new state with Acquire, as the load above.
            match state.compare_exchange(s, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) if cs::status(next) == cs::ABORTED => return next,
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        // SAFETY: pinned: nobody clears or rewrites the cell until the last pin is dropped, and
        // the reader's writes happen before the pin (above).
        let moved = reader.cells[c].with(|d| f(unsafe { &*d }));
        let pinned = s;
        let mut s = state.load(Ordering::Relaxed);
        loop {
            debug_assert!(cs::pins(s) > 0);
            let mut next = (s - cs::PIN) | if moved { cs::MOVED } else { 0 };
            let free = cs::status(s) == cs::RELEASED && cs::pins(s) == 1;
            if free {
                next = cs::with_status(next, cs::FREEING);
            }
            // AcqRel: Release, so this pinner's reads happen before whoever frees the cell;
            // Acquire, so that if this is the last pin of a released cell, the guard's reads
            // (and the other pinners') happen before the clear below.
            match state.compare_exchange(s, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    if free {
                        Self::free_cell(reader, c, s);
                    }
                    return pinned;
                }
                Err(now) => s = now,
            }
        }
    }

    /// Visits every held cell of every used reader slot (see [`visit`](Self::visit)).
    fn visit_all(&self, abort: bool, mut f: impl FnMut(&FastGrant) -> bool) {
        // Relaxed: a slot's bit is set under the latch of the shard whose bias it caches,
        // before the slot can hold a grant of it; every visitor that needs the grants of a key
        // holds the key's shard latch (`holds_fast`, an error path, looks without).
        for r in used_slots(self.used.load(Ordering::Relaxed)) {
            for c in 0..CELLS {
                Self::visit(&self.readers[r], c, abort, &mut f);
            }
        }
    }

    /// Every fast grant's holders of biased keys, as (shard, bias word, holder), at one instant,
    /// with every shard latched (so no bias changes): a double collect. The cells are read
    /// once, then their states again; if no cell changed in between (a state names its grant,
    /// so it cannot come back to an old value), every cell was as read at the instant the first
    /// pass ended. `None` if fast grants kept coming and going for `tries` passes.
    pub(crate) fn fast_cut(&self, tries: usize) -> Option<Vec<(u16, u64, HeldBy)>> {
        // Status and grant, not pins or the moved bit (no revocation runs while every shard is
        // latched; visitors may pin).
        let identity = |s: u64| s & !(cs::MOVED | (cs::PIN * ((1 << 14) - 1)));
        // Relaxed: as in `visit_all`; every shard is latched.
        let used: SmallVec<[usize; 8]> = used_slots(self.used.load(Ordering::Relaxed)).collect();
        for _ in 0..tries {
            let mut out = Vec::new();
            let mut seen: SmallVec<[u64; 64]> = SmallVec::new();
            for &r in &used {
                for c in 0..CELLS {
                    let s = Self::visit(&self.readers[r], c, false, |g| {
                        out.extend(g.keys.iter().filter_map(|k| Some((k.shard, k.word, g.holder(k)?))));
                        false
                    });
                    seen.push(identity(s));
                }
            }
            // SeqCst: ordered after the first pass's loads and pins, as the collect needs.
            let again =
                used.iter().flat_map(|&r| self.readers[r].states.iter()).map(|s| identity(s.load(Ordering::SeqCst)));
            if again.eq(seen.iter().copied()) {
                return Some(out);
            }
        }
        None
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
        // stale non-zero costs a look at the slot. The grant itself is checked against the
        // words after it is published (module docs).
        if self.bias.active.load(Ordering::Relaxed) == 0
            || p.entries.len() > FAST_MAX_KEYS
            || p.entries.iter().any(|e| !self.bias.is_fast(e.mode) || !self.shard_has_bias(e.shard))
        {
            // A fenced mode is never biased, nor a key of a shard without biases: no slot for
            // a writer, or for a request of a cold key.
            return false;
        }
        let Some(r) = reader_slot() else { return false };
        self.try_fast_on_slot(p, grant, since, r)
    }

    /// Whether shard `shard` may have a biased key (a hint: the answer is checked again after
    /// the grant is published).
    #[inline]
    fn shard_has_bias(&self, shard: u16) -> bool {
        // Relaxed: a hint only, as `active` above.
        self.bias.words[usize::from(shard)].iter().any(|w| w.load(Ordering::Relaxed) != 0)
    }

    fn try_fast_on_slot(&self, p: &mut Prepared<'_, K>, grant: GrantId, since: Stamp, r: usize) -> bool {
        let reader = &self.bias.readers[r];
        let Some(_busy) = reader.enter() else { return false };
        // Acquire: a cell freed by another thread (a guard sent away, a pinner) was cleared
        // before its Release store of FREE; the clear happens before the writes below.
        let Some(c) = (0..CELLS).find(|&c| cs::status(reader.states[c].load(Ordering::Acquire)) == cs::FREE) else {
            return false; // every cell in use: through the latches
        };
        let found = reader.local.with(|local| {
            // SAFETY: this thread leases slot `r` and `busy` is set (`Reader::enter`): nothing
            // else touches `local` now.
            let local = unsafe { &*local };
            reader.cells[c].with_mut(|cell| {
                // SAFETY: cell `c` is FREE, and only the slot's thread acts on a free cell.
                let cell = unsafe { &mut *cell };
                // Empty unless a key's `Eq` panicked while this thread filled the cell before.
                cell.clear();
                for e in p.entries.iter() {
                    let Some(cached) = local.cache.iter().find(|c| c.hash == e.hash && c.key == e.key) else {
                        return false;
                    };
                    // Relaxed: a first look; the grant is checked again once published.
                    if word_mode(cached.word) != e.mode
                        || self.bias.word_now(e.shard, cached.idx, Ordering::Relaxed) != cached.word
                    {
                        return false;
                    }
                    if cell.keys.iter().any(|k| k.shard == e.shard && k.pos == cached.pos) {
                        return false; // a key named twice: the latched path collapses it
                    }
                    cell.keys.push(FastKey {
                        shard: e.shard,
                        idx: cached.idx,
                        word: cached.word,
                        pos: cached.pos,
                        mode: e.mode,
                        message: e.message.clone(),
                    });
                }
                cell.head = Some((grant, p.owner.clone(), since));
                true
            })
        });
        let state = &reader.states[c];
        if found {
            // Relaxed store, then a SeqCst fence before the loads of the words: against a
            // revoker's clear of a word, its fence and its load of this state (module docs).
            // Nobody reads the data of a tentative cell, so nothing needs releasing here.
            state.store(cs::of(cs::TENTATIVE, grant), Ordering::Relaxed);
            if !cfg!(lockcore_mutant = "bias_no_fence") {
                // Deliberately broken variant: the reader may read a word the revoker cleared
                // while the revoker misses its cell.
                fence(Ordering::SeqCst);
            }
            let valid = reader.cells[c].with(|cell| {
                // SAFETY: TENTATIVE: only this thread reads or writes the cell's data (a
                // revoker aborts a tentative cell without reading it).
                // Relaxed: after the fence (above).
                unsafe { &*cell }.keys.iter().all(|k| self.bias.word_now(k.shard, k.idx, Ordering::Relaxed) == k.word)
            });
            // Release: the grant written above is visible to whoever pins the cell (Acquire).
            if valid
                && state
                    .compare_exchange(
                        cs::of(cs::TENTATIVE, grant),
                        cs::of(cs::HELD, grant),
                        Ordering::Release,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                reader.cells[c].with(|cell| {
                    // SAFETY: HELD, and this request holds the grant: the data does not change
                    // while it is held, and pinners only read it.
                    let keys = &unsafe { &*cell }.keys;
                    for (e, k) in p.entries.iter_mut().zip(keys) {
                        e.slot = k.pos;
                    }
                });
                Reader::<K>::bump(&reader.granted);
                p.arm(grant, since);
                // At most READER_SLOTS (64) slots of CELLS (8) cells.
                p.reader = (r * CELLS + c) as u16;
                return true;
            }
            // A word changed, or a revoker aborted the cell: back out. Relaxed: the cell is
            // the thread's own again (TENTATIVE or ABORTED), nobody else acts on it, and a
            // revoker's abort that comes later fails on FREE.
            state.store(cs::of(cs::FREE, grant), Ordering::Relaxed);
        }
        // SAFETY: the cell is FREE: only this thread acts on it. The owner and messages are
        // dropped here, with no latch held.
        reader.cells[c].with_mut(|cell| unsafe { &mut *cell }.clear());
        false
    }

    /// Releases a fast grant (its guard's `reader` code: slot times CELLS plus cell). Keys a
    /// revocation moved into their records are released there (and a grant moved whole, or
    /// force-released, is released as a latched grant is).
    pub(crate) fn release_fast(&self, code: u16, grant: GrantId, entries: &mut [Entry<K>], since: Stamp) {
        let (r, c) = (usize::from(code) / CELLS, usize::from(code) % CELLS);
        let reader = &self.bias.readers[r];
        // SAFETY: this guard holds the grant: the cell's data stays as its reader wrote it
        // until the exchange below gives the grant up (pinners only read it).
        let words: SmallVec<[(u16, u8, u64); FAST_MAX_KEYS]> =
            reader.cells[c].with(|cell| unsafe { &*cell }.keys.iter().map(|k| (k.shard, k.idx, k.word)).collect());
        let before = self.give_up_cell(reader, c, grant);
        // A key was moved iff its bias was revoked while the grant was held: revoked, its word
        // changed. (Acquire, by `give_up_cell`: a revoker's clear before its pin is visible.)
        let moved = words.iter().any(|&(shard, idx, w)| self.bias.word_now(shard, idx, Ordering::Relaxed) != w);
        if moved && self.release_entries(grant, entries, since) {
            return; // released (and counted) through the records
        }
        if moved && before & cs::MOVED != 0 {
            return; // moved, then force-released: this guard frees nothing (`release_entries`)
        }
        // (Imprecise in one race only: a forced or owner's release that pins the cell when the
        // guard gives it up sets MOVED after `before` was read, and the release is then counted
        // here as well as there. Metrics only; nothing is held or freed twice.)
        // Whole from the cell (or moved but never found: the revocation came after the cell was
        // given up).
        if leased_reader_slot() == Some(r) {
            Reader::<K>::bump(&reader.released_here);
        } else {
            // Relaxed: a statistic.
            reader.released_elsewhere.fetch_add(1, stat::Ordering::Relaxed);
        }
        self.metrics.record_hold(self.clock.since(since));
    }

    /// Gives up the HELD cell `c` of `reader` that holds `grant`: frees it, or, if it is
    /// pinned, marks it RELEASED for its last pinner to free. Returns the state it had.
    fn give_up_cell(&self, reader: &Reader<K>, c: usize, grant: GrantId) -> u64 {
        let state = &reader.states[c];
        // Relaxed: a first guess for the exchange.
        let mut s = state.load(Ordering::Relaxed);
        loop {
            debug_assert_eq!(s & cs::ID, cs::of(cs::FREE, grant), "a guard's cell holds another grant");
            debug_assert_eq!(cs::status(s), cs::HELD);
            // Deliberately broken variant (`bias_free_pinned`): the guard frees a cell a
            // revoker is reading.
            let free = cs::pins(s) == 0 || cfg!(lockcore_mutant = "bias_free_pinned");
            let next = cs::with_status(s, if free { cs::FREEING } else { cs::RELEASED });
            // AcqRel: Acquire, so a revoker's clear of a word before its pin (Release) is seen
            // by the caller's check of the words, and pinners' reads happen before the clear;
            // Release, so the guard's reads happen before a last pinner's clear.
            match state.compare_exchange(s, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    if free {
                        Bias::free_cell(reader, c, s);
                    }
                    return s;
                }
                Err(now) => s = now,
            }
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
        // Relaxed: readers are ordered against this bias's revocation by the two SeqCst fences
        // (module docs); the word only has to become visible eventually (until then readers go
        // through the latches).
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
        let Some(r) = reader_slot() else { return };
        let reader = &self.bias.readers[r];
        let Some(_busy) = reader.enter() else { return };
        // Relaxed: set under this shard's latch, so any later revocation in this shard (which
        // takes the latch) sees it; the slot can only use this bias after this point.
        self.bias.used.fetch_or(1 << r, Ordering::Relaxed);
        let entry = Cached { hash: record.hash, key: key.clone(), idx, pos: at, word: w };
        reader.local.with_mut(|local| {
            // SAFETY: this thread leases slot `r` and `busy` is set: nothing else touches
            // `local`.
            let local = unsafe { &mut *local };
            if let Some(c) = local.cache.iter_mut().find(|c| c.hash == entry.hash && c.key == entry.key) {
                *c = entry;
            } else if local.cache.len() < CACHE_LEN {
                local.cache.push(entry);
            } else {
                let at = local.evict;
                local.cache[at] = entry;
                local.evict = (at + 1) % CACHE_LEN;
            }
        });
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

    /// Revokes bias `idx` of shard `shard` (latched): clears its word, then aborts every
    /// tentative fast grant and moves every held one of the key into the record (module docs:
    /// why none can slip through).
    #[cold]
    fn revoke(&self, st: &mut ShardState<K>, shard: u16, idx: usize) {
        let start = self.clock.now();
        self.metrics.add(Counter::Revocations, 1);
        let sb = st.bias.as_mut().expect("a biased record's shard has biases");
        let (w, at) = (sb.word[idx], sb.pos[idx]);
        sb.word[idx] = 0;
        // Relaxed store, then a SeqCst fence before `visit_all` loads the cells' states:
        // against readers' store of TENTATIVE, their fence and their load of this word (module
        // docs).
        self.bias.words[usize::from(shard)][idx].store(0, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        // Relaxed: a hint (`try_fast`).
        self.bias.active.fetch_sub(1, Ordering::Relaxed);
        let record = &mut st.slots[at as usize];
        record.set_bias(None);
        record.reads = 0;
        let modes = &self.modes;
        self.bias.visit_all(true, |g| {
            let mut moved = false;
            // Deliberately broken variant: fast holders stay unseen by the record.
            if !cfg!(lockcore_mutant = "bias_no_revoke") {
                for k in g.keys.iter().filter(|k| k.shard == shard && k.word == w) {
                    if let Some(rec) = g.holder(k) {
                        record.add_holder(modes, rec);
                        moved = true;
                    }
                }
            }
            moved
        });
        // Not under loom: a model must not branch on the time a revocation took.
        if !cfg!(loom) {
            let now = self.clock.now();
            let sb = st.bias.as_mut().expect("a biased record's shard has biases");
            sb.inhibit_until = Some(now.later_by(start, INHIBIT_FACTOR));
        }
    }

    /// Revokes every bias of the table at once, every shard latched (`shards[i]` is shard `i`),
    /// and frees the records that leaves idle. Unlike [`settle`](Self::settle) shard by shard,
    /// it clears every word first and then visits each cell once for all of them, so a fast
    /// grant is moved into its records whole or not at all (a snapshot's fallback).
    pub(crate) fn settle_all<G: std::ops::DerefMut<Target = ShardState<K>>>(&self, shards: &mut [G]) {
        let start = self.clock.now();
        // (shard, word) of every bias cleared, and its record.
        let mut cleared: Vec<(u16, u64, u32)> = Vec::new();
        for (shard, st) in shards.iter_mut().enumerate() {
            let Some(sb) = st.bias.as_mut() else { continue };
            for idx in 0..BIAS_PER_SHARD {
                if sb.word[idx] != 0 {
                    // At most 2^16 shards.
                    cleared.push((shard as u16, sb.word[idx], sb.pos[idx]));
                    sb.word[idx] = 0;
                    // Relaxed store, then the fence below: as in `revoke`.
                    self.bias.words[shard][idx].store(0, Ordering::Relaxed);
                    // Relaxed: a hint (`try_fast`).
                    self.bias.active.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        if cleared.is_empty() {
            return;
        }
        self.metrics.add(Counter::Revocations, cleared.len() as u64);
        for &(shard, _, at) in &cleared {
            let record = &mut shards[usize::from(shard)].slots[at as usize];
            record.set_bias(None);
            record.reads = 0;
        }
        // SeqCst: against readers' store of TENTATIVE, their fence and their loads of the words
        // (module docs), before the loads of the cells' states in `visit_all`.
        fence(Ordering::SeqCst);
        let modes = &self.modes;
        self.bias.visit_all(true, |g| {
            let mut moved = false;
            for k in &g.keys {
                if cleared.iter().any(|&(shard, w, _)| shard == k.shard && w == k.word) {
                    if let Some(rec) = g.holder(k) {
                        shards[usize::from(k.shard)].slots[k.pos as usize].add_holder(modes, rec);
                        moved = true;
                    }
                }
            }
            moved
        });
        for &(shard, _, at) in &cleared {
            let st = &mut shards[usize::from(shard)];
            // Not under loom: a model must not branch on the time a revocation took.
            if !cfg!(loom) {
                let now = self.clock.now();
                let sb = st.bias.as_mut().expect("a revoked record's shard has biases");
                sb.inhibit_until = Some(now.later_by(start, INHIBIT_FACTOR));
            }
            st.retire_if_idle(at);
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

    /// Whether a reader slot holds some key of `grant` that no revocation has moved.
    pub(crate) fn holds_fast(&self, grant: GrantId) -> bool {
        let mut found = false;
        self.bias.visit_all(false, |g| {
            if g.head.as_ref().is_some_and(|h| h.0 == grant) {
                // Relaxed: an error path's answer; a word read stale only delays it.
                found |= g.keys.iter().any(|k| self.bias.word_now(k.shard, k.idx, Ordering::Relaxed) == k.word);
            }
            false
        });
        found
    }

    /// Calls `f(i, holder)` with each fast holder of each biased record `records[i]` (its
    /// shard, latched by the caller, and its current bias word; 0: not biased): what the
    /// records' holder lists do not show. One pass over the cells, each pinned for all the
    /// records, so a fast grant of several of them shows on all or on none.
    pub(crate) fn fast_holders(&self, records: &[(u16, u64)], mut f: impl FnMut(usize, HeldBy)) {
        if records.iter().all(|&(_, w)| w == 0) {
            return;
        }
        self.bias.visit_all(false, |g| {
            for k in &g.keys {
                // A bias word is unique in its shard: (shard, word) names one bias of one record.
                for (i, &(shard, w)) in records.iter().enumerate() {
                    if w != 0 && k.shard == shard && k.word == w {
                        if let Some(h) = g.holder(k) {
                            f(i, h);
                        }
                    }
                }
            }
            false
        });
    }

    /// The bias word of the record at `at` of shard `st` (latched), or 0.
    pub(crate) fn bias_word(st: &ShardState<K>, at: u32) -> u64 {
        match (st.slots[at as usize].bias(), st.bias.as_ref()) {
            (Some(idx), Some(sb)) => sb.word[usize::from(idx)],
            _ => 0,
        }
    }

    /// Calls `f` with each fast holder of the record at `at` (shard `shard` latched).
    pub(crate) fn for_each_fast_holder(&self, st: &ShardState<K>, shard: u16, at: u32, mut f: impl FnMut(HeldBy)) {
        let w = Self::bias_word(st, at);
        if w != 0 {
            self.fast_holders(&[(shard, w)], |_, h| f(h));
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

    /// Moves fast grant `grant` (its guard's `reader` code) into its records, so it can outlive
    /// its guard as a latched grant does (`into_ticket`).
    pub(crate) fn migrate_grant(&self, code: u16, grant: GrantId, entries: &mut [Entry<K>]) {
        let (r, c) = (usize::from(code) / CELLS, usize::from(code) % CELLS);
        let reader = &self.bias.readers[r];
        let mut latches = Latches::lock(self, entries);
        reader.cells[c].with(|cell| {
            // SAFETY: this guard holds the grant: the data stays as its reader wrote it until
            // `give_up_cell` below (pinners only read it).
            let g = unsafe { &*cell };
            for (e, k) in entries.iter().zip(&g.keys) {
                // Relaxed: the shard is latched, and words are cleared only under its latch. A
                // changed word: a revocation moved this key into its record already.
                if self.bias.word_now(k.shard, k.idx, Ordering::Relaxed) == k.word {
                    if let Some(rec) = g.holder(k) {
                        latches.slot(e).add_holder(&self.modes, rec);
                    }
                }
            }
        });
        // Under the latches still: no revoker of these keys can visit the cell between the
        // moves above and giving it up.
        self.give_up_cell(reader, c, grant);
        drop(latches);
    }
}
