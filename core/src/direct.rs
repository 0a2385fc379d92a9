//! Direct grants: a request of up to [`MAX_KEYS`] keys that nobody holds, granted by
//! compare-exchanges on atomic words, without the shard latches.
//!
//! # Implementation details
//!
//! Each shard has [`WORDS`] *direct words*; a key's hash picks one (keys of one word are in one
//! shard). A word is in one of four states, with the last fencing token handed out on its keys:
//!
//! ```text
//!   EMPTY(token)        no record of any of its keys is in the shard's index, nobody holds one
//!   FAST(cell, token)   one of its keys is taken by the direct grant in `cell`; no record
//!   LATCHED(n, token)   n records of its keys are in the index: the records are the whole truth
//!   OFF                 records only, for ever (direct grants off, or tokens past 46 bits)
//! ```
//!
//! A request whose words are all EMPTY takes a free *cell* of its thread's reader slot (an
//! exchange of the cell's state from FREE to TENTATIVE), writes its grant into it (owner, time,
//! and per key the key, mode, message and token), swings each key's word from EMPTY to
//! FAST(cell) by compare-exchange, and then turns the cell HELD with one more: that exchange
//! is the grant, made whole at one instant (for one key, the word's exchange is the grant and
//! the cell is HELD before it). No latch, no record, no index. If a word is not EMPTY or an
//! exchange fails, it gives back the words it took and goes through the latches as if it had
//! never tried. The guard's release turns the cell RELEASING (the grant is released at that
//! exchange), swings each word back to EMPTY, and frees the cell.
//!
//! Everything else works on records, under the shard latches, and a latch holder only ever
//! *claims* words: before it looks a key up (to decide on it, or to show its holders) it moves
//! the key's word to LATCHED by exchange. If the word named a cell, it looks at the cell: a
//! TENTATIVE grant it aborts (an exchange to ABORTED, so the taker's exchange to HELD fails and
//! the taker goes through the latches); a HELD one it marks "some key moved" and copies, for the
//! key of that word, into the key's record with its token: from then on the record holds that
//! key, as if it had been granted through the latches. RELEASING or ABORTED needs nothing. A
//! latch holder never waits for a direct request and a direct request never waits for anybody
//! until it has failed; a direct release (or a taker giving up) that loses a word to a claim
//! releases that key through its record, under the latch, and frees the cell only after every
//! such latch: that is what keeps the cell alive for a claimer reading it.
//!
//! While a word is LATCHED only latch holders write it (a direct request's exchange from EMPTY
//! fails on it): a new record counts itself in, a freed one counts itself out and folds its
//! last token into the word's, and the last one out leaves the word EMPTY. So a direct grant
//! never passes a holder or a waiter (both are in records: the word is LATCHED), and tokens keep
//! increasing per key across direct grants, records and freed records.
//!
//! A snapshot latches every shard and *closes* every word: EMPTY ones become LATCHED with no
//! record, and a HELD grant met on any word is turned MOVED and moved into its records whole
//! (every word of it claimed), so no direct grant comes, goes, or shows on some keys only while
//! it reads; it opens the words again before unlatching. `into_ticket` moves a grant whole the
//! same way, with the latches of all its shards.
//!
//! Keys that own heap memory (`needs_drop`) are not granted directly: a cell keeps its own copy
//! of each key, and cloning such a key would allocate on every grant.

use crate::clock::Stamp;
use crate::grant::{notify_all, Entry, Latches, Prepared};
use crate::mode::Mode;
use crate::request::{LockMessage, Owner};
use crate::shard::ShardState;
use crate::slot::{HeldBy, WakeList};
use crate::sync::{reader_slot, stat, AtomicU64, Ordering, UnsafeCell, READER_SLOTS};
use crate::table::LockTable;
use crate::ticket::GrantId;
use smallvec::SmallVec;
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

/// The most keys of a direct grant: larger requests go through the latches.
pub(crate) const MAX_KEYS: usize = 8;

/// A cell's state word: status in bits 0-2, the "some key moved" bit 3, the low 60 bits of the
/// grant's id above, so a compare-exchange never mistakes a later grant in the same cell for the
/// one it read.
mod cell_state {
    use crate::ticket::GrantId;
    /// Nobody uses the cell.
    pub(super) const FREE: u64 = 0;
    /// A request of several keys is taking its words; it holds nothing yet.
    pub(super) const TENTATIVE: u64 = 1;
    /// Granted: every key's word names the cell, or was claimed and the key moved to its record.
    pub(super) const HELD: u64 = 2;
    /// A claimer aborted the tentative request (or it gave up): it will never hold.
    pub(super) const ABORTED: u64 = 3;
    /// Its guard is releasing it: nobody holds it any more (a claimer moves nothing).
    pub(super) const RELEASING: u64 = 4;
    /// A latch holder of every one of its shards moved every key into its record (a snapshot,
    /// `into_ticket`): the records are the whole truth about it.
    pub(super) const MOVED: u64 = 5;
    const STATUS: u64 = 0b111;
    /// A claimer moved some key of the HELD grant into its record (set before it moves): the
    /// grant's release must look in the records for those keys, and a release that finds none
    /// of them there (they were force-released) is no release.
    pub(super) const SOME_MOVED: u64 = 1 << 3;

    pub(super) fn of(status: u64, grant: GrantId) -> u64 {
        grant.0 << 4 | status
    }
    pub(super) fn status(s: u64) -> u64 {
        s & STATUS
    }
}
use cell_state as cs;

/// One key of a direct grant.
struct DirectKey<K> {
    key: K,
    hash: u64,
    shard: u16,
    mode: Mode,
    message: Option<LockMessage>,
    token: u64,
}

/// A direct grant, in its cell: written by its taker while the cell is TENTATIVE (or before its
/// one word is taken), read by claimers once it is HELD.
struct DirectGrant<K> {
    owner: Option<Owner>,
    since: Stamp,
    grant: GrantId,
    /// In the order of the guard's entries; kept allocated from one grant to the next.
    keys: Vec<DirectKey<K>>,
}

impl<K> DirectGrant<K> {
    fn holder(&self, k: &DirectKey<K>) -> Option<HeldBy> {
        Some(HeldBy {
            grant: self.grant,
            owner: self.owner.clone()?,
            mode: k.mode,
            message: k.message.clone(),
            since: self.since,
            token: k.token,
            // At most MAX_KEYS.
            n_keys: self.keys.len() as u32,
        })
    }
}

/// One cell.
struct Cell<K> {
    state: AtomicU64,
    data: UnsafeCell<DirectGrant<K>>,
}

/// A reader slot's direct cells, alone on their cache lines.
#[repr(align(128))]
struct Slot<K> {
    cells: [Cell<K>; CELLS],
    /// Direct grants made on this slot, and releases of them by their guards.
    granted: stat::AtomicU64,
    released: stat::AtomicU64,
}

// SAFETY: a cell's data is written by whoever took the cell (an Acquire exchange of its state
// from FREE), while the cell is TENTATIVE or before its grant's one word names it; it is
// published by a Release exchange (the state to HELD, or the one word to FAST) and read by a
// claimer only after an Acquire load of HELD, while it holds the latch of a shard whose word
// it claimed; it is cleared by the grant's releaser (or by a taker that gave up), who frees the
// cell with a Release store after it won back every word it could (no claimer reaches the cell
// through those) and took the latch of every shard whose word was claimed (after the claimer,
// who has read by then). The data holds keys (`K: Send + Sync` for the table to be shared),
// owners and messages (`Send + Sync`).
unsafe impl<K: Send + Sync> Sync for Slot<K> {}

/// A table's direct words and cells.
pub(crate) struct Direct<K> {
    /// Each shard's words (its state holds the same `Arc`, for the records' counts).
    pub(crate) words: Box<[Arc<ShardWords>]>,
    slots: Box<[Slot<K>]>,
    /// Whether this table grants directly at all.
    pub(crate) on: bool,
}

impl<K> Direct<K> {
    /// `on`: the table's setting; keys that own heap memory are never granted directly.
    pub(crate) fn new(on: bool, shards: usize, floor: u64) -> Self {
        let on = on && !std::mem::needs_drop::<K>();
        let words = (0..shards).map(|_| Arc::new(ShardWords::new(floor, on))).collect();
        let empty = || DirectGrant { owner: None, since: Stamp::ZERO, grant: GrantId(0), keys: Vec::new() };
        let slots = (0..if on { READER_SLOTS } else { 0 })
            .map(|_| Slot {
                cells: std::array::from_fn(|_| Cell {
                    state: AtomicU64::new(cs::FREE),
                    data: UnsafeCell::new(empty()),
                }),
                granted: stat::AtomicU64::new(0),
                released: stat::AtomicU64::new(0),
            })
            .collect();
        Self { words, slots, on }
    }

    /// Direct grants, and releases of them by their guards, so far.
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

    fn slot_of(&self, code: u16) -> &Slot<K> {
        &self.slots[usize::from(code & !DIRECT) / CELLS]
    }

    /// Frees a cell whose grant is given up: drops its data, then marks it free.
    fn free(&self, code: u16, grant: GrantId) {
        let cell = self.cell(code);
        cell.data.with_mut(|d| {
            // SAFETY: the caller gave the grant up so that no claimer reads the data any more
            // (see the `Sync` impl), and only the grant's releaser frees a cell, once.
            let g = unsafe { &mut *d };
            g.owner = None;
            g.keys.clear();
        });
        // Release: the clear above happens before the next taker's exchange (Acquire).
        cell.state.store(cs::of(cs::FREE, grant), Ordering::Release);
    }
}

/// The ordering of a direct release's exchange of a word: Release, or Relaxed in the
/// deliberately broken variant `direct_release_relaxed` (the next holder is not ordered after
/// this one).
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

/// A key's word number in its shard.
#[inline(always)]
fn word_of(hash: u64) -> usize {
    (hash >> 20) as usize & (WORDS - 1)
}

impl<K: Hash + Eq + Clone> LockTable<K> {
    #[inline(always)]
    fn word(&self, shard: u16, hash: u64) -> &AtomicU64 {
        &self.direct.words[usize::from(shard)].0[word_of(hash)]
    }

    /// Grants a request of up to [`MAX_KEYS`] keys that nobody holds by exchanges of their
    /// direct words. Returns whether it did; if not, the request goes through the latches as if
    /// it had never tried (it holds nothing and left nothing behind).
    #[inline]
    pub(crate) fn try_direct(&self, p: &mut Prepared<'_, K>, grant: GrantId, since: Stamp) -> bool {
        let n = p.entries.len();
        if !self.direct.on || n > MAX_KEYS {
            return false;
        }
        // Every word EMPTY (Relaxed: a guess; the exchanges below expect exactly what is read
        // here, and fail if it changed), and no two keys on one word (a key named twice, or two
        // keys sharing a word: the latches sort those out).
        let mut seen = [0u64; MAX_KEYS];
        for (i, e) in p.entries.iter().enumerate() {
            seen[i] = self.word(e.shard, e.hash).load(Ordering::Relaxed);
            if word::kind(seen[i]) != word::EMPTY
                || p.entries[..i].iter().any(|o| o.shard == e.shard && word_of(o.hash) == word_of(e.hash))
            {
                return false;
            }
        }
        let Some(r) = reader_slot() else { return false };
        let slot = &self.direct.slots[r];
        // Acquire: the last user's clear of the cell happens before this taker writes it.
        // Relaxed on failure and for the first look: only the exchange takes the cell.
        let Some(c) = (0..CELLS).find(|&c| {
            let s = slot.cells[c].state.load(Ordering::Relaxed);
            cs::status(s) == cs::FREE
                && slot.cells[c]
                    .state
                    .compare_exchange(s, cs::of(cs::TENTATIVE, grant), Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
        }) else {
            return false;
        };
        let cell = &slot.cells[c];
        // At most 64 slots of 4 cells: the code fits below DIRECT.
        let code = DIRECT | (r * CELLS + c) as u16;
        cell.data.with_mut(|d| {
            // SAFETY: this thread took the cell (the exchange above); nobody reads it before
            // the grant is HELD.
            let g = unsafe { &mut *d };
            g.owner = Some(p.owner.clone());
            g.since = since;
            g.grant = grant;
            if g.keys.capacity() < MAX_KEYS {
                g.keys.reserve_exact(MAX_KEYS); // once per cell
            }
            g.keys.extend(p.entries.iter().map(|e| DirectKey {
                key: e.key.clone(),
                hash: e.hash,
                shard: e.shard,
                mode: e.mode,
                message: e.message.clone(),
                token: 0,
            }));
        });
        // The words taken so far, as they now read.
        let mut taken: SmallVec<[u64; MAX_KEYS]> = SmallVec::new();
        for (i, &w) in seen[..n].iter().enumerate() {
            let (shard, hash, mode) = (p.entries[i].shard, p.entries[i].hash, p.entries[i].mode);
            let a = self.word(shard, hash);
            let fenced = self.modes.is_fenced(mode);
            let next = word::token(w) + u64::from(fenced);
            let token = if fenced { next } else { 0 };
            let mut won = next <= word::TOKEN_MAX;
            if won {
                cell.data.with_mut(|d| {
                    // SAFETY: as above; the grant is not HELD yet.
                    unsafe { &mut *d }.keys[i].token = token;
                });
                if n == 1 {
                    // One key: its word's exchange is the grant, so the cell is HELD before it.
                    // Relaxed: published by that exchange (Release), read by a claimer after its
                    // Acquire exchange of the word.
                    cell.state.store(cs::of(cs::HELD, grant), Ordering::Relaxed);
                }
                let mine = word::of(word::FAST, u64::from(code & !DIRECT), next);
                // AcqRel. Acquire: the previous holder's critical section (its release
                // exchange, or the latch holder's store of EMPTY, is Release) happens before this
                // one's. Release: publishes the cell's data (for one key) to a claimer, whose
                // exchange of the word is Acquire. Relaxed on failure: nothing was published.
                won = if cfg!(lockcore_mutant = "direct_blind") {
                    // Deliberately broken: takes the word whatever it held.
                    a.swap(mine, Ordering::AcqRel);
                    true
                } else {
                    a.compare_exchange(w, mine, Ordering::AcqRel, Ordering::Relaxed).is_ok()
                };
                if won {
                    taken.push(mine);
                    p.entries[i].token = token;
                }
            }
            if !won {
                if n == 1 {
                    // Nobody saw the cell: back to TENTATIVE, so `give_up` aborts it as any.
                    cell.state.store(cs::of(cs::TENTATIVE, grant), Ordering::Relaxed);
                }
                self.give_up(code, grant, &p.entries[..i], &taken);
                for e in p.entries.iter_mut() {
                    e.token = 0;
                }
                return false;
            }
        }
        // Several keys: every word names the cell; the exchange to HELD is the grant, unless a
        // claimer aborted it meanwhile. Release: publishes the tokens written above to claimers
        // (their load of the state is Acquire). Relaxed on failure: nothing is read.
        if n > 1
            && cell
                .state
                .compare_exchange(
                    cs::of(cs::TENTATIVE, grant),
                    cs::of(cs::HELD, grant),
                    Ordering::Release,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            self.give_up(code, grant, &p.entries, &taken);
            for e in p.entries.iter_mut() {
                e.token = 0;
            }
            return false;
        }
        p.reader = code;
        p.arm(grant, since);
        bump(&slot.granted);
        true
    }

    /// A direct request that will not be granted gives back the words it took (`taken`, of
    /// `entries`) and its cell. A word a latch holder has claimed meanwhile is not given back:
    /// the claimer found the cell TENTATIVE or ABORTED and moved nothing; its shard's latch is
    /// taken once, so that the claimer (who may still be reading the cell's state) is done
    /// before the cell is freed.
    #[cold]
    fn give_up(&self, code: u16, grant: GrantId, entries: &[Entry<K>], taken: &[u64]) {
        let cell = self.direct.cell(code);
        // Relaxed: whoever aborted it (a claimer) or this taker, the request holds nothing.
        let _ = cell.state.compare_exchange(
            cs::of(cs::TENTATIVE, grant),
            cs::of(cs::ABORTED, grant),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        for (e, &mine) in entries.iter().zip(taken) {
            let a = self.word(e.shard, e.hash);
            // Release: keeps this word's history ordered for its next user (nothing was held).
            if a.compare_exchange(
                mine,
                word::of(word::EMPTY, 0, word::token(mine)),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_err()
            {
                drop(self.shards[usize::from(e.shard)].lock());
            }
        }
        self.direct.free(code, grant);
    }

    /// Releases a direct grant (its guard's `reader` code): each key from its word if no latch
    /// holder has claimed it, from its record otherwise.
    pub(crate) fn release_direct(&self, code: u16, grant: GrantId, entries: &mut [Entry<K>], since: Stamp) {
        let cell = self.direct.cell(code);
        // Relaxed: a first guess for the exchange.
        let mut s = cell.state.load(Ordering::Relaxed);
        let releasing = loop {
            if cs::status(s) != cs::HELD {
                break false; // MOVED: the records hold it whole
            }
            // Release: the holder's critical section happens before a claimer that then reads
            // RELEASING (Acquire) and takes the keys as free. Relaxed on failure: looks again.
            match cell.state.compare_exchange(s, s - cs::HELD + cs::RELEASING, release_order(), Ordering::Relaxed) {
                Ok(_) => break true,
                Err(now) => s = now,
            }
        };
        // Released from here on unless a claimer moved some key first: a word claimed after
        // this moved nothing.
        let mut released = releasing && s & cs::SOME_MOVED == 0;
        let mut claimed: SmallVec<[usize; MAX_KEYS]> = SmallVec::new();
        for (i, e) in entries.iter().enumerate() {
            if releasing {
                let a = self.word(e.shard, e.hash);
                // Relaxed: the word is FAST(this cell) until claimed, and its token does not
                // change meanwhile; the exchange decides.
                let w = a.load(Ordering::Relaxed);
                // Release: this holder's critical section happens before the next grant's or
                // claim's (both Acquire); without it the next holder's writes to what the key
                // guards could race this one's (loom found exactly that with a Relaxed
                // exchange). Relaxed on failure: the latch taken below orders the rest.
                if word::kind(w) == word::FAST
                    && word::field(w) == u64::from(code & !DIRECT)
                    && a.compare_exchange(
                        w,
                        word::of(word::EMPTY, 0, word::token(w)),
                        release_order(),
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    released = true;
                    continue;
                }
            }
            claimed.push(i);
        }
        // Keys in records (claimed, or the whole grant MOVED): released there, one latch at a
        // time, unless force-released since.
        for &i in &claimed {
            let e = &entries[i];
            let mut st = self.shards[usize::from(e.shard)].lock();
            let mut wake = WakeList::new();
            if let Some(at) = st.find(e.hash, &e.key) {
                if st.slots[at as usize].remove_holder(grant).is_some() {
                    released = true;
                    st.slots[at as usize].collect_wakeable(&self.modes, &mut wake);
                    st.retire_if_idle(at);
                }
            }
            drop(st);
            notify_all(wake);
        }
        // After every latch of a claimed word: its claimer has read the cell.
        self.direct.free(code, grant);
        // A grant force-released (or released by its owner's release) whole frees nothing here
        // and is not a release.
        if released {
            bump(&self.direct.slot_of(code).released);
            self.metrics.record_hold(self.clock.since(since));
        }
    }

    /// Moves a direct grant into its records, so it can outlive its guard as a latched grant
    /// does (`into_ticket`); the entries then name the records.
    pub(crate) fn migrate_direct(&self, code: u16, grant: GrantId, entries: &mut [Entry<K>]) {
        let mut latches = Latches::lock(self, entries);
        let cell = self.direct.cell(code);
        // Relaxed: every shard of the grant is latched, so no claimer changes the state, and
        // this thread holds the grant. MOVED already: a snapshot moved it, the records hold it.
        let s = cell.state.load(Ordering::Relaxed);
        if cs::status(s) == cs::HELD {
            cell.state.store(s - cs::HELD + cs::MOVED, Ordering::Relaxed);
        }
        for (i, e) in entries.iter_mut().enumerate() {
            let st = latches.state(e);
            self.move_key(st, code, i);
            if let Some(at) = st.find(e.hash, &e.key) {
                e.slot = at;
            }
        }
        drop(latches);
        self.direct.free(code, grant);
    }

    /// Moves key `i` of the grant in cell `code` (HELD or MOVED, its shard latched) into its
    /// record if its word still names the cell (otherwise a claim moved it already).
    fn move_key(&self, st: &mut ShardState<K>, code: u16, i: usize) {
        // Readable: the caller holds the grant (its guard) or every latch of its shards with
        // the cell MOVED by it; the data stays as written until the releaser frees it, which it
        // does only after taking these latches.
        self.with_grant(code, |g| self.claim_and_adopt(st, code, g, &g.keys[i]));
    }

    /// Reads the grant in cell `code`. Callers make sure it is not written meanwhile: they hold
    /// it, or read it HELD with Acquire after claiming one of its words under that word's
    /// shard's latch (its releaser frees the cell only after taking that latch), or MOVED it
    /// themselves under every latch of its shards.
    #[inline]
    fn with_grant<R>(&self, code: u16, f: impl FnOnce(&DirectGrant<K>) -> R) -> R {
        // SAFETY: see above: the cell's writer (its taker, before HELD; its releaser's `free`)
        // is excluded by the caller.
        self.direct.cell(code).data.with(|d| f(unsafe { &*d }))
    }

    /// Claims the word of key `k` of the grant `g` in cell `code` if it still names the cell
    /// (the key's shard latched by the caller), and copies the key into its record.
    fn claim_and_adopt(&self, st: &mut ShardState<K>, code: u16, g: &DirectGrant<K>, k: &DirectKey<K>) {
        let a = self.word(k.shard, k.hash);
        // Relaxed load: the shard is latched, and only its latch holders take a FAST word from
        // another thread; Acquire exchange, as any claim.
        let w = a.load(Ordering::Relaxed);
        if word::kind(w) == word::FAST
            && word::field(w) == u64::from(code & !DIRECT)
            && a.compare_exchange(w, word::of(word::LATCHED, 0, word::token(w)), Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            self.adopt(st, g, k);
        }
    }

    /// Copies key `k` of direct grant `g` into its record (the key's word just claimed by this
    /// latch holder).
    fn adopt(&self, st: &mut ShardState<K>, g: &DirectGrant<K>, k: &DirectKey<K>) {
        if cfg!(lockcore_mutant = "direct_dropped") {
            return; // deliberately broken: a claimed direct grant is forgotten
        }
        let Some(holder) = g.holder(k) else { return };
        let at = st.find_or_insert(k.hash, &k.key);
        st.slots[at as usize].adopt_holder(&self.modes, holder);
    }

    /// Claims the word of the key of `hash` for a latch holder of shard `shard` about to look the
    /// key up: afterwards the word is LATCHED (or OFF) and the records show every holder. A
    /// grant taking that word is aborted; a HELD one has its keys on the word moved.
    #[inline]
    pub(crate) fn claim_word(&self, st: &mut ShardState<K>, shard: u16, hash: u64) {
        if cfg!(lockcore_mutant = "direct_unclaimed") {
            return; // deliberately broken: the latched path ignores direct grants
        }
        if let Some(code) = self.claim(shard, hash) {
            self.settle_claimed(st, shard, hash, code);
        }
    }

    /// Turns the word of `hash` LATCHED (from EMPTY or FAST); returns the cell code it named if
    /// it was FAST.
    #[inline]
    fn claim(&self, shard: u16, hash: u64) -> Option<u16> {
        let a = self.word(shard, hash);
        // Relaxed: a first guess for the exchange.
        let mut w = a.load(Ordering::Relaxed);
        loop {
            if !matches!(word::kind(w), word::EMPTY | word::FAST) {
                return None;
            }
            // Acquire: from FAST, the cell is read next (published by the direct request's
            // Release); from EMPTY, the last direct holder's critical section (its Release
            // exchange) happens before this latch holder's decision. Relaxed on failure: the
            // loop looks again.
            match a.compare_exchange(
                w,
                word::of(word::LATCHED, 0, word::token(w)),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                // At most 2^16 cells.
                Ok(_) => return (word::kind(w) == word::FAST).then(|| DIRECT | word::field(w) as u16),
                Err(now) => w = now,
            }
        }
    }

    /// After claiming a word that named cell `code`: aborts a tentative grant there, or moves a
    /// held one's keys on this word into their records. A grant being released (or aborted, or
    /// moved) needs nothing.
    fn settle_claimed(&self, st: &mut ShardState<K>, shard: u16, hash: u64, code: u16) {
        let cell = self.direct.cell(code);
        // Acquire: a HELD grant's data (published by its Release) is read below; RELEASING
        // orders the holder's critical section before this latch holder's decision.
        let mut s = cell.state.load(Ordering::Acquire);
        loop {
            match cs::status(s) {
                cs::TENTATIVE => {
                    if cfg!(lockcore_mutant = "direct_no_abort") {
                        return; // deliberately broken: a tentative grant is left to complete
                    }
                    // Relaxed: nothing is read after an abort; the aborted request never held.
                    match cell.state.compare_exchange(
                        s,
                        s - cs::TENTATIVE + cs::ABORTED,
                        Ordering::Relaxed,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return,
                        Err(now) => s = now,
                    }
                }
                cs::HELD if s & cs::SOME_MOVED != 0 => break,
                cs::HELD => {
                    // Marked before moving, so that the guard's release (which turns HELD into
                    // RELEASING by exchange) knows to look in the records. AcqRel on success:
                    // Acquire, the data is read next; Release, orders nothing but is paired
                    // with the guard's exchange. Acquire on failure: RELEASING is read.
                    match cell.state.compare_exchange(s, s | cs::SOME_MOVED, Ordering::AcqRel, Ordering::Acquire) {
                        Ok(_) => break,
                        Err(now) => s = now,
                    }
                }
                _ => return,
            }
        }
        // HELD, read with Acquire after claiming one of its words under this shard's latch.
        self.with_grant(code, |g| {
            for k in &g.keys {
                if k.shard == shard && word_of(k.hash) == word_of(hash) {
                    self.adopt(st, g, k);
                }
            }
        });
    }

    /// Like [`claim_word`](Self::claim_word), but only a FAST word (EMPTY stays EMPTY): for a
    /// look that makes no record when nobody holds the key.
    pub(crate) fn claim_held(&self, st: &mut ShardState<K>, shard: u16, hash: u64) {
        // Relaxed: a guess; `claim` exchanges.
        if word::kind(self.word(shard, hash).load(Ordering::Relaxed)) == word::FAST {
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

    /// Closes every word of every shard (all latched): turns EMPTY words LATCHED with no record,
    /// aborts tentative grants, and moves every held direct grant into its records whole (the
    /// cell MOVED, every word of it claimed), so no direct grant comes or goes, or shows on some
    /// keys only, until [`open_all`](Self::open_all).
    pub(crate) fn close_all<G: std::ops::DerefMut<Target = ShardState<K>>>(&self, shards: &mut [G]) {
        if !self.direct.on {
            return;
        }
        for shard in 0..shards.len() {
            for i in 0..WORDS {
                let hash = (i as u64) << 20;
                // At most 2^16 shards.
                let Some(code) = self.claim(shard as u16, hash) else { continue };
                let cell = self.direct.cell(code);
                // Acquire: as in `settle_claimed`.
                let mut s = cell.state.load(Ordering::Acquire);
                let moved = loop {
                    let next = match cs::status(s) {
                        // Relaxed: nothing is read after an abort.
                        cs::TENTATIVE => s - cs::TENTATIVE + cs::ABORTED,
                        // AcqRel: every shard is latched, so only the guard races this (its
                        // release exchange HELD -> RELEASING) or the taker (TENTATIVE -> HELD);
                        // whoever wins decides.
                        cs::HELD => s - cs::HELD + cs::MOVED,
                        _ => break false, // being released, aborted: nothing to show
                    };
                    match cell.state.compare_exchange(s, next, Ordering::AcqRel, Ordering::Acquire) {
                        Ok(_) => break cs::status(next) == cs::MOVED,
                        Err(now) => s = now,
                    }
                };
                if !moved {
                    continue;
                }
                // Every key of the grant (MOVED by this latch holder of every shard): this
                // word's (claimed above) and the others.
                self.with_grant(code, |g| {
                    for k in &g.keys {
                        let st = &mut shards[usize::from(k.shard)];
                        if usize::from(k.shard) == shard && word_of(k.hash) == i {
                            self.adopt(st, g, k);
                        } else {
                            self.claim_and_adopt(st, code, g, k);
                        }
                    }
                });
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

    /// Keys of shard `shard` held by direct grants (each its own word, with no record).
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
}
