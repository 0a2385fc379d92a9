//! Direct grants: a one-key request on a key nobody holds, decided by one compare-exchange on
//! an atomic word, without the shard latch.
//!
//! # Implementation details
//!
//! Each shard has [`WORDS`] *direct words*; a key's hash picks one (keys of one word are in one
//! shard). A word is in one of four states, with the last fencing token handed out on its keys:
//!
//! ```text
//!   EMPTY(token)        no record of any of its keys is in the shard's index, nobody holds one
//!   FAST(cell, token)   exactly one of its keys is held, by the direct grant in `cell`; no record
//!   LATCHED(n, token)   n records of its keys are in the index: the records are the whole truth
//!   OFF                 records only, for ever (direct grants off, or tokens past 46 bits)
//! ```
//!
//! A one-key request whose word is EMPTY writes its grant (key, owner, mode, message, time,
//! token) into a free *cell* of its thread's reader slot and then swings the word from EMPTY to
//! FAST(cell) with one compare-exchange (Release: it publishes the cell). That exchange is the
//! grant: no latch, no record, no index, and no line of another core but the word's. The
//! guard's release swings it back to EMPTY with another exchange and frees the cell.
//!
//! Everything else works on records, under the shard's latch, and a latch holder only ever
//! *claims* words: before it looks a key up (to decide on it, or to show its holders) it moves
//! the key's word to LATCHED. From EMPTY that is one exchange. From FAST(cell) it is one
//! exchange too (AcqRel: it reads the cell's data as published), after which it copies the
//! direct grant into a record of its key, with its token: from then on the record holds it, as
//! if it had been granted through the latches. A latch holder never waits for a direct
//! grant and a direct grant never waits for anybody; a direct request that finds its word not
//! EMPTY (or loses the exchange) goes through the latches, and a direct release that loses its
//! exchange (the word was claimed: its grant is now in a record) releases through the record,
//! under the latch, and only then frees its cell. That latch is what keeps the cell's data
//! alive for the claimer that is copying it: the claimer holds the latch from its exchange
//! until it has copied.
//!
//! While a word is LATCHED only latch holders write it (a direct request's exchange from EMPTY
//! fails on it): a new record counts itself in, a freed one counts itself out and folds its
//! last token into the word's, and the last one out leaves the word EMPTY. So a direct grant
//! never passes a holder or a waiter (both are in records: the word is LATCHED), and tokens keep
//! increasing per key across direct grants, records and freed records.
//!
//! A cell is taken by a compare-exchange of its grant word from 0 (Acquire: after whoever freed
//! it last) and freed by a store of 0 (Release: after its data is dropped), so a guard may be
//! released on any thread. Keys that own heap memory (`needs_drop`) are not granted directly:
//! a cell keeps its own copy of the key, and cloning such a key would allocate on every grant.
//!
//! A snapshot latches every shard and *closes* every word (EMPTY to LATCHED(0), FAST claimed),
//! so no direct grant comes or goes while it reads, and opens them again before unlatching.

use crate::clock::Stamp;
use crate::grant::{notify_all, Entry, Prepared};
use crate::shard::ShardState;
use crate::slot::{HeldBy, WakeList};
use crate::sync::{reader_slot, stat, AtomicU64, Ordering, UnsafeCell, READER_SLOTS};
use crate::table::LockTable;
use crate::ticket::GrantId;
use std::hash::Hash;
use std::sync::Arc;

/// Direct words per shard (a power of two). 64 words of 512 shards: 256 KiB per table, so two
/// keys in use share a word (and go through the latches) about once in 32,768 pairs.
#[cfg(not(loom))]
pub(crate) const WORDS: usize = 64;
#[cfg(loom)]
pub(crate) const WORDS: usize = 2;

/// Cells per reader slot: a thread holding this many direct grants takes more through the
/// latches. (Under loom: two, to keep the models small.)
#[cfg(not(loom))]
const CELLS: usize = 4;
#[cfg(loom)]
const CELLS: usize = 2;

/// `LockSet::reader` of a direct grant: this bit, and its slot times [`CELLS`] plus its cell.
pub(crate) const DIRECT: u16 = 1 << 14;

/// A direct word: kind in bits 0-1, a cell code or a record count in bits 2-17, the token in
/// bits 18-63.
mod word {
    pub(super) const EMPTY: u64 = 0;
    pub(super) const FAST: u64 = 1;
    pub(super) const LATCHED: u64 = 2;
    pub(super) const OFF: u64 = 3;
    const KIND: u64 = 0b11;
    const FIELD_SHIFT: u32 = 2;
    const FIELD: u64 = 0xffff << FIELD_SHIFT;
    const TOKEN_SHIFT: u32 = 18;
    /// The largest token a word can carry.
    pub(super) const TOKEN_MAX: u64 = (1 << (64 - TOKEN_SHIFT)) - 1;

    pub(super) fn of(kind: u64, field: u64, token: u64) -> u64 {
        debug_assert!(field <= 0xffff && token <= TOKEN_MAX);
        token << TOKEN_SHIFT | field << FIELD_SHIFT | kind
    }
    pub(super) fn kind(w: u64) -> u64 {
        w & KIND
    }
    pub(super) fn field(w: u64) -> u64 {
        (w & FIELD) >> FIELD_SHIFT
    }
    pub(super) fn token(w: u64) -> u64 {
        w >> TOKEN_SHIFT
    }
}

/// A shard's direct words. Written by direct requests (EMPTY to FAST and back, by exchange) and
/// by the shard's latch holders (everything else); read by both.
pub(crate) struct ShardWords([AtomicU64; WORDS]);

impl ShardWords {
    pub(crate) fn new(floor: u64, on: bool) -> Self {
        let first =
            if on && floor <= word::TOKEN_MAX { word::of(word::EMPTY, 0, floor) } else { word::of(word::OFF, 0, 0) };
        Self(std::array::from_fn(|_| AtomicU64::new(first)))
    }

    #[inline(always)]
    fn of(&self, hash: u64) -> &AtomicU64 {
        // Bits 20..: independent of the shard (bits 40..) and of hashbrown's (low bits, top 7).
        &self.0[(hash >> 20) as usize & (WORDS - 1)]
    }

    /// Counts a new record of the key of `hash` in (its word is LATCHED or OFF: the caller
    /// claimed it) and returns the lowest token the record may start from.
    pub(crate) fn record_made(&self, hash: u64) -> u64 {
        let a = self.of(hash);
        // Relaxed: a LATCHED word is written only under the shard's latch, which the caller
        // holds; the latch orders this with every other such write.
        let w = a.load(Ordering::Relaxed);
        match word::kind(w) {
            word::LATCHED => {
                a.store(word::of(word::LATCHED, word::field(w) + 1, word::token(w)), Ordering::Relaxed);
                word::token(w)
            }
            k => {
                debug_assert_eq!(k, word::OFF, "a record made on a word nobody claimed");
                0
            }
        }
    }

    /// Counts a freed record of the key of `hash` out, with the last token it handed out.
    /// Returns a token that must go into the shard's floor (a word that turns OFF), or 0.
    pub(crate) fn record_freed(&self, hash: u64, last_token: u64) -> u64 {
        let a = self.of(hash);
        // Relaxed: as in `record_made`.
        let w = a.load(Ordering::Relaxed);
        if word::kind(w) != word::LATCHED {
            return 0;
        }
        let token = word::token(w).max(last_token);
        if token > word::TOKEN_MAX - 1 {
            // No room for one more direct token: records only from now on (the shard's floor
            // keeps the tokens increasing).
            a.store(word::of(word::OFF, 0, 0), Ordering::Relaxed);
            return token;
        }
        let n = word::field(w).saturating_sub(1);
        // Release when it turns EMPTY: a direct request that reads EMPTY (its exchange is
        // Release only, but the word's token is all it uses) needs nothing else; Release is
        // kept so the latch holder's writes to the shard happen before any later claimer's
        // Acquire exchange through this word, without relying on the latch alone.
        let kind = if n == 0 { word::EMPTY } else { word::LATCHED };
        a.store(word::of(kind, n, token), Ordering::Release);
        0
    }
}

/// A direct grant, in its cell.
struct DirectGrant<K> {
    key: K,
    hash: u64,
    holder: HeldBy,
}

/// One cell: the grant id of the direct grant in it (0: free) and the grant.
struct Cell<K> {
    grant: AtomicU64,
    data: UnsafeCell<Option<DirectGrant<K>>>,
}

/// A reader slot's direct cells, alone on their cache lines.
#[repr(align(128))]
struct Slot<K> {
    cells: [Cell<K>; CELLS],
    /// Direct grants made on this slot, and released from their cells (not through a record).
    granted: stat::AtomicU64,
    released: stat::AtomicU64,
}

// SAFETY: a cell's data is written by whoever took the cell (its grant word's exchange from 0,
// Acquire) before it publishes the grant (the direct word's exchange, Release), read by a
// claimer after its exchange of that word (Acquire) while it holds the shard's latch, and
// cleared by the grant's releaser, who frees the cell with a Release store of 0 after either
// winning the word back (no claimer can reach the cell then) or taking the latch after a
// claimer (who has copied it by then). The data holds a key (`K: Send + Sync` for the table to
// be shared), an owner and a message (`Send + Sync`).
unsafe impl<K: Send + Sync> Sync for Slot<K> {}

/// A table's direct words and cells.
pub(crate) struct Direct<K> {
    /// Each shard's words (its state holds the same `Arc`, for the records' counts).
    pub(crate) words: Box<[Arc<ShardWords>]>,
    slots: Box<[Slot<K>]>,
    /// Whether this table grants directly at all.
    on: bool,
}

impl<K> Direct<K> {
    /// `on`: the table's setting; keys that own heap memory are never granted directly.
    pub(crate) fn new(on: bool, shards: usize, floor: u64) -> Self {
        let on = on && !std::mem::needs_drop::<K>();
        let words = (0..shards).map(|_| Arc::new(ShardWords::new(floor, on))).collect();
        let slots = (0..if on { READER_SLOTS } else { 0 })
            .map(|_| Slot {
                cells: std::array::from_fn(|_| Cell { grant: AtomicU64::new(0), data: UnsafeCell::new(None) }),
                granted: stat::AtomicU64::new(0),
                released: stat::AtomicU64::new(0),
            })
            .collect();
        Self { words, slots, on }
    }

    /// Direct grants, and direct grants released from their cells, so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        // Relaxed: statistics.
        self.slots.iter().fold((0, 0), |(g, r), s| {
            (g + s.granted.load(stat::Ordering::Relaxed), r + s.released.load(stat::Ordering::Relaxed))
        })
    }

    fn cell(&self, code: u16) -> &Cell<K> {
        let code = usize::from(code & !DIRECT);
        &self.slots[code / CELLS].cells[code % CELLS]
    }

    /// Frees a cell whose grant is given up: drops its data, then marks it free.
    fn free(&self, code: u16) {
        let cell = self.cell(code);
        // SAFETY: the caller gave the grant up so that no claimer reads the data any more (it
        // won the word back, or took the latch after the claimer), and only the grant's
        // releaser frees a cell, once.
        cell.data.with_mut(|d| unsafe { *d = None });
        // Release: the clear above happens before the next taker's exchange (Acquire).
        cell.grant.store(0, Ordering::Release);
    }
}

/// The ordering of a direct release's exchange: Release, or Relaxed in the deliberately broken
/// variant `direct_release_relaxed` (the next holder is not ordered after this one).
fn release_order() -> Ordering {
    if cfg!(lockcore_mutant = "direct_release_relaxed") {
        Ordering::Relaxed
    } else {
        Ordering::Release
    }
}

/// Adds one to a statistic (Relaxed: nothing is published through it).
fn bump(c: &stat::AtomicU64) {
    c.fetch_add(1, stat::Ordering::Relaxed);
}

impl<K: Hash + Eq + Clone> LockTable<K> {
    /// Grants a one-key request on a key nobody holds by an exchange of its direct word.
    /// Returns whether it did; if not, the request goes through the latches as if never tried.
    #[inline]
    pub(crate) fn try_direct(&self, p: &mut Prepared<'_, K>, grant: GrantId, since: Stamp) -> bool {
        if !self.direct.on || p.entries.len() != 1 {
            return false;
        }
        let e = &p.entries[0];
        let a = self.direct.words[usize::from(e.shard)].of(e.hash);
        // Relaxed: a guess; the exchange below decides, and reads nothing else through it.
        let w = a.load(Ordering::Relaxed);
        if word::kind(w) != word::EMPTY {
            return false;
        }
        let fenced = self.modes.is_fenced(e.mode);
        let (token, next) = if fenced { (word::token(w) + 1, word::token(w) + 1) } else { (0, word::token(w)) };
        if next > word::TOKEN_MAX {
            return false;
        }
        let Some(r) = reader_slot() else { return false };
        let slot = &self.direct.slots[r];
        // Acquire: the last releaser's clear of the cell happens before this taker writes it.
        let Some(c) = (0..CELLS)
            .find(|&c| slot.cells[c].grant.compare_exchange(0, grant.0, Ordering::Acquire, Ordering::Relaxed).is_ok())
        else {
            return false;
        };
        // At most 64 slots of 4 cells: the code fits below DIRECT.
        let code = DIRECT | (r * CELLS + c) as u16;
        let holder =
            HeldBy { grant, owner: p.owner.clone(), mode: e.mode, message: e.message.clone(), since, token, n_keys: 1 };
        let data = DirectGrant { key: e.key.clone(), hash: e.hash, holder };
        // SAFETY: the cell was free and this thread took it (the exchange above); nobody reads
        // it before the word names it (below).
        slot.cells[c].data.with_mut(|d| unsafe { *d = Some(data) });
        let mine = word::of(word::FAST, u64::from(code & !DIRECT), next);
        // AcqRel. Acquire: the previous holder's critical section (its release exchange, or
        // the latch holder's store of EMPTY, is Release) happens before this one's. Release:
        // publishes the cell's data to a claimer, whose exchange of the word is Acquire.
        // Relaxed on failure: nothing was published, nothing is read.
        let won = if cfg!(lockcore_mutant = "direct_blind") {
            // Deliberately broken: takes the word whatever it held.
            a.swap(mine, Ordering::AcqRel);
            true
        } else {
            a.compare_exchange(w, mine, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        };
        if !won {
            self.direct.free(code);
            return false;
        }
        p.entries[0].token = token;
        p.reader = code;
        p.arm(grant, since);
        bump(&slot.granted);
        true
    }

    /// Releases a direct grant (its guard's `reader` code): from its word if no latch holder has
    /// claimed it, from its record otherwise.
    pub(crate) fn release_direct(&self, code: u16, grant: GrantId, entries: &mut [Entry<K>], since: Stamp) {
        let e = &entries[0];
        let shard = &self.shards[usize::from(e.shard)];
        let a = self.direct.words[usize::from(e.shard)].of(e.hash);
        let mine = u64::from(code & !DIRECT);
        // Relaxed: the word is FAST(this cell) for as long as nobody claimed it, and its token
        // does not change meanwhile; the exchange decides.
        let w = a.load(Ordering::Relaxed);
        // Release: this holder's critical section happens before the next grant's or claim's
        // (both Acquire) — without it a holder's writes to what the key guards could race the
        // next holder's (loom found exactly that with a Relaxed exchange here). Relaxed on
        // failure: the latch taken next orders the rest.
        if word::kind(w) == word::FAST
            && word::field(w) == mine
            && a.compare_exchange(w, word::of(word::EMPTY, 0, word::token(w)), release_order(), Ordering::Relaxed)
                .is_ok()
        {
            self.direct.free(code);
            let r = usize::from(code & !DIRECT) / CELLS;
            bump(&self.direct.slots[r].released);
            self.metrics.record_hold(self.clock.since(since));
            return;
        }
        // Claimed: the grant is in its key's record (unless force-released since).
        let mut st = shard.lock();
        let mut removed = false;
        let mut wake = WakeList::new();
        if let Some(at) = st.find(e.hash, &e.key) {
            let record = &mut st.slots[at as usize];
            if record.remove_holder(grant).is_some() {
                removed = true;
                st.releases += 1;
                st.slots[at as usize].collect_wakeable(&self.modes, &mut wake);
                st.retire_if_idle(at);
            }
        }
        drop(st);
        // After the latch: the claimer that moved it has copied the cell.
        self.direct.free(code);
        notify_all(wake);
        if removed {
            self.metrics.record_hold(self.clock.since(since));
        }
    }

    /// Moves a direct grant into its record, so it can outlive its guard as a latched grant does
    /// (`into_ticket`); the entry then names the record.
    pub(crate) fn migrate_direct(&self, code: u16, entries: &mut [Entry<K>]) {
        let e = &mut entries[0];
        let mut st = self.shards[usize::from(e.shard)].lock();
        self.claim_held(&mut st, e.shard, e.hash);
        if let Some(at) = st.find(e.hash, &e.key) {
            e.slot = at;
        }
        drop(st);
        self.direct.free(code);
    }

    /// Claims the word of the key of `hash` for a latch holder of shard `shard` about to look the
    /// key up: afterwards the word is LATCHED (or OFF) and the records show every holder.
    #[inline]
    pub(crate) fn claim_word(&self, st: &mut ShardState<K>, shard: u16, hash: u64) {
        if cfg!(lockcore_mutant = "direct_unclaimed") {
            return; // deliberately broken: the latched path ignores direct grants
        }
        let a = self.direct.words[usize::from(shard)].of(hash);
        // Relaxed: a first guess for the exchange.
        let mut w = a.load(Ordering::Relaxed);
        loop {
            let next = match word::kind(w) {
                word::EMPTY | word::FAST => word::of(word::LATCHED, 0, word::token(w)),
                _ => return,
            };
            // Acquire: from FAST, the cell's data (published by the direct request's Release
            // exchange) is read below; from EMPTY, the last direct holder's critical section
            // (its Release exchange) happens before this latch holder's decision. Relaxed on
            // failure: the loop looks again.
            match a.compare_exchange(w, next, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => {
                    if word::kind(w) == word::FAST {
                        self.adopt(st, word::field(w) as u16);
                    }
                    return;
                }
                Err(now) => w = now,
            }
        }
    }

    /// Like [`claim_word`](Self::claim_word), but only a FAST word (EMPTY stays EMPTY): for a
    /// look that makes no record when nobody holds the key.
    pub(crate) fn claim_held(&self, st: &mut ShardState<K>, shard: u16, hash: u64) {
        // Relaxed: a guess; `claim_word` exchanges.
        if word::kind(self.direct.words[usize::from(shard)].of(hash).load(Ordering::Relaxed)) == word::FAST {
            self.claim_word(st, shard, hash);
        }
    }

    /// Claims every FAST word of shard `shard` (latched): its records then show every holder.
    pub(crate) fn claim_shard(&self, st: &mut ShardState<K>, shard: u16) {
        if !self.direct.on {
            return;
        }
        for i in 0..WORDS {
            // Any hash with the word's bits picks it.
            self.claim_held(st, shard, (i as u64) << 20);
        }
    }

    /// Closes every word of every shard (all latched, in shard order): claims the FAST ones and
    /// turns the EMPTY ones LATCHED with no record, so no direct grant comes or goes until
    /// [`open_all`](Self::open_all).
    pub(crate) fn close_all<G: std::ops::DerefMut<Target = ShardState<K>>>(&self, shards: &mut [G]) {
        if !self.direct.on {
            return;
        }
        for (shard, st) in shards.iter_mut().enumerate() {
            for i in 0..WORDS {
                // At most 2^16 shards.
                self.claim_word(st, shard as u16, (i as u64) << 20);
            }
        }
    }

    /// Opens the words [`close_all`](Self::close_all) closed (every shard still latched).
    pub(crate) fn open_all(&self) {
        if !self.direct.on {
            return;
        }
        for words in self.direct.words.iter() {
            for a in &words.0 {
                // Relaxed: every latch is held; only latch holders write a LATCHED word.
                let w = a.load(Ordering::Relaxed);
                if word::kind(w) == word::LATCHED && word::field(w) == 0 {
                    // Release: as in `record_freed`.
                    a.store(word::of(word::EMPTY, 0, word::token(w)), Ordering::Release);
                }
            }
        }
    }

    /// Keys of shard `shard` held by direct grants (each its own key, with no record).
    pub(crate) fn direct_keys(&self, shard: u16) -> usize {
        if !self.direct.on {
            return 0;
        }
        // Relaxed: a count at one moment; the caller holds the latch, so no claim runs.
        self.direct.words[usize::from(shard)]
            .0
            .iter()
            .filter(|a| word::kind(a.load(Ordering::Relaxed)) == word::FAST)
            .count()
    }

    /// Copies the direct grant of cell `code` (its word just claimed by this latch holder) into
    /// a record of its key.
    fn adopt(&self, st: &mut ShardState<K>, code: u16) {
        let cell = self.direct.cell(code);
        let (key, hash, holder) = cell.data.with(|d| {
            // SAFETY: the claim's Acquire exchange read the word the direct request published
            // the cell by (Release), and the cell stays as written until the grant's releaser
            // frees it, which it does only after taking this shard's latch, held here.
            let g = unsafe { &*d }.as_ref().expect("a claimed word names a filled cell");
            (g.key.clone(), g.hash, g.holder.clone())
        });
        if cfg!(lockcore_mutant = "direct_dropped") {
            return; // deliberately broken: a claimed direct grant is forgotten
        }
        let at = st.find_or_insert(hash, &key);
        st.slots[at as usize].adopt_holder(&self.modes, holder);
    }
}
