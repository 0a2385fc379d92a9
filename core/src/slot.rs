//! One key's record: its holders, its FIFO queue of waiters and its fencing-token counter.
//!
//! Records live in their shard's slab (`shard.rs`) and are read and changed only under the
//! shard's latch. A record exists while somebody holds or waits for its key: the last release
//! (or the last waiter leaving) frees it at once, so the table holds the keys in use and no
//! more. Requests latch all their shards in one fixed order (shard number), decide, change
//! every record, and unlatch, so a grant is installed in one indivisible step; see
//! `docs/design.md` ("Linearizable batches").

use crate::clock::Stamp;
use crate::mode::{Mode, ModeTable};
use crate::request::{LockMessage, Owner};
use crate::sync::Arc;
use crate::ticket::{GrantId, Token};
use crate::wait::WaitNode;
use smallvec::SmallVec;
use std::collections::VecDeque;

/// A holder record: one key of one grant.
#[derive(Clone)]
pub(crate) struct HeldBy {
    pub(crate) grant: GrantId,
    pub(crate) owner: Owner,
    pub(crate) mode: Mode,
    pub(crate) message: Option<LockMessage>,
    pub(crate) since: Stamp,
    /// The fencing token, or 0 for an unfenced mode (tokens start at 1): a plain `u64` keeps
    /// the record at 64 bytes, one cache line.
    pub(crate) token: u64,
    /// Distinct keys in the grant, so a ticket naming a subset is refused.
    pub(crate) n_keys: u32,
}

impl HeldBy {
    /// The fencing token as the public API shows it.
    pub(crate) fn token(&self) -> Option<Token> {
        (self.token != 0).then_some(Token(self.token))
    }
}

/// A waiter's entry on one key.
pub(crate) struct Queued {
    /// Arrival order, table-wide: per-key queues are sorted by it (see `enqueue`).
    pub(crate) seq: u64,
    pub(crate) mode: Mode,
    pub(crate) node: Arc<WaitNode>,
}

/// Everything about a key, guarded by its shard's latch.
///
/// Laid out to fill one 64-byte cache line for a key of up to 8 bytes (an integer id): on
/// two cores the cost of an uncontended operation is mostly the cache lines it pulls over from
/// the other core, and a request touches its key's record on every acquire and release. So
/// the per-mode holder counts are not stored (the holder list is the truth; `held` is kept
/// from it), the rarely used queue is boxed, and a free record keeps its last key instead of
/// an `Option` (its `live` flag says it is free). `slot_fits_one_line` checks the size.
#[repr(align(64))]
pub(crate) struct Slot<K> {
    /// The key while `live`; a free record keeps the key it had last, dropped when the record
    /// is reused or the slab shrinks past it.
    key: K,
    /// The key's full hash, so the index can drop the record's entry without hashing again.
    pub(crate) hash: u64,
    pub(crate) holders: Vec<HeldBy>,
    /// The FIFO queue of waiters, made on a record's first wait and kept (with its capacity)
    /// while the record is reused. Boxed on purpose: 8 bytes in the record instead of 32,
    /// for a queue most keys never have.
    #[allow(clippy::box_collection)]
    queue: Option<Box<VecDeque<Queued>>>,
    /// The last fencing token handed out on this key.
    pub(crate) last_token: u64,
    /// While the record is free: the next free record's position (the shard's free list).
    pub(crate) next_free: u32,
    /// A bit for every mode somebody holds.
    pub(crate) held: u8,
    /// Whether the record belongs to a key (in the index), or is free.
    pub(crate) live: bool,
    /// Among its shard's recently idle records (`shard.rs`), kept in the index for a while.
    pub(crate) kept_idle: bool,
    /// Grants in a row in a self-compatible, unfenced mode (saturating): the read bias
    /// (`bias.rs`) biases a key once this reaches its threshold.
    pub(crate) reads: u8,
}

/// `next_free` of a live record that is not biased (`next_free` is the free-list link only
/// while the record is free, and the record's bias while it is live).
const NO_BIAS: u32 = u32::MAX;

/// Waiters to notify once the latches are dropped. Inline for the common few.
pub(crate) type WakeList = SmallVec<[Arc<WaitNode>; 4]>;

impl<K> Slot<K> {
    pub(crate) fn new(key: K, hash: u64, token_floor: u64) -> Self {
        Self {
            key,
            hash,
            holders: Vec::new(),
            queue: None,
            last_token: token_floor,
            next_free: NO_BIAS,
            held: 0,
            live: true,
            kept_idle: false,
            reads: 0,
        }
    }

    /// The record's key, `None` while the record is free.
    #[inline]
    pub(crate) fn key(&self) -> Option<&K> {
        self.live.then_some(&self.key)
    }

    /// Whether the record is `key`'s.
    #[inline(always)]
    pub(crate) fn is_key(&self, key: &K) -> bool
    where
        K: Eq,
    {
        self.live && self.key == *key
    }

    /// Gives a free record to `key`.
    pub(crate) fn reuse(&mut self, key: K, hash: u64, token_floor: u64) {
        debug_assert!(!self.live && self.is_idle() && self.holders.is_empty());
        self.key = key;
        self.hash = hash;
        self.last_token = token_floor;
        self.live = true;
        self.next_free = NO_BIAS;
        self.reads = 0;
    }

    /// The record's bias word index in its shard (`bias.rs`), if it is biased.
    #[inline(always)]
    pub(crate) fn bias(&self) -> Option<u8> {
        // The low byte of a live record's bias: its index, below BIAS_PER_SHARD.
        (self.live && self.next_free != NO_BIAS).then_some(self.next_free as u8)
    }

    /// The mode the record is biased in, if it is biased (kept beside the index, so deciding
    /// whether a request conflicts with the bias reads no other line).
    #[inline(always)]
    pub(crate) fn bias_mode(&self) -> Option<Mode> {
        // The second byte: the mode's index.
        (self.live && self.next_free != NO_BIAS).then_some(Mode((self.next_free >> 8) as u8))
    }

    pub(crate) fn set_bias(&mut self, bias: Option<(u8, Mode)>) {
        debug_assert!(self.live);
        self.next_free = bias.map_or(NO_BIAS, |(idx, mode)| u32::from(idx) | u32::from(mode.0) << 8);
    }

    /// Nobody holds or waits, and no reader may hold it without the latch (a bias): the slot
    /// may be reclaimed.
    #[inline]
    pub(crate) fn is_idle(&self) -> bool {
        self.held == 0 && !self.has_waiters() && self.bias().is_none()
    }

    /// Idle but for its bias: nobody holds it in the record or waits (fast holders may).
    pub(crate) fn is_idle_but_biased(&self) -> bool {
        self.held == 0 && !self.has_waiters() && self.bias().is_some()
    }

    /// Whether any request is queued on the key.
    #[inline]
    pub(crate) fn has_waiters(&self) -> bool {
        self.queue.as_ref().is_some_and(|q| !q.is_empty())
    }

    /// The queued requests, in arrival order.
    pub(crate) fn waiters(&self) -> impl Iterator<Item = &Queued> {
        self.queue.iter().flat_map(|q| q.iter())
    }

    /// Gives back the capacity of the holder list and the queue (a free record kept by a
    /// shrinking slab).
    pub(crate) fn release_capacity(&mut self) {
        self.holders = Vec::new();
        self.queue = None;
    }

    /// The modes queued by waiters that arrived before `seq` (all waiters for `None`).
    #[inline]
    pub(crate) fn queued_before(&self, seq: Option<u64>) -> u8 {
        let mut mask = 0;
        for q in self.waiters() {
            if seq.is_some_and(|s| q.seq >= s) {
                break;
            }
            mask |= q.mode.bit();
        }
        mask
    }

    /// Whether `mode` can be granted now to a request that arrived at `seq` (`None`: a new
    /// arrival, behind every waiter): compatible with every holder and, so nobody barges,
    /// with every waiter queued before it.
    #[inline]
    pub(crate) fn grantable(&self, modes: &ModeTable, mode: Mode, seq: Option<u64>) -> bool {
        if cfg!(lockcore_mutant = "grant_all") {
            return true; // deliberately broken: ignores holders and queue
        }
        if cfg!(lockcore_mutant = "barging") {
            return modes.compatible_with_set(mode, self.held); // deliberately broken: ignores the queue
        }
        modes.compatible_with_set(mode, self.held)
            && (!self.has_waiters() || modes.compatible_with_set(mode, self.queued_before(seq)))
    }

    /// Records a holder; returns its fencing token for fenced modes, 0 otherwise.
    #[inline(always)]
    pub(crate) fn add_holder(&mut self, modes: &ModeTable, mut rec: HeldBy) -> u64 {
        if modes.is_fenced(rec.mode) {
            self.last_token += 1;
            rec.token = self.last_token;
        }
        let token = rec.token;
        self.held |= rec.mode.bit();
        self.holders.push(rec);
        token
    }

    /// Records a holder granted elsewhere (a direct grant moved into its record), with the
    /// token it was given there.
    pub(crate) fn adopt_holder(&mut self, modes: &ModeTable, rec: HeldBy) {
        debug_assert!(modes.compatible_with_set(rec.mode, self.held), "an adopted holder conflicts");
        self.last_token = self.last_token.max(rec.token);
        self.held |= rec.mode.bit();
        self.holders.push(rec);
    }

    /// Removes the holder record of `grant`, if any.
    pub(crate) fn remove_holder(&mut self, grant: GrantId) -> Option<HeldBy> {
        let at = self.holders.iter().position(|h| h.grant == grant)?;
        let rec = self.holders.swap_remove(at);
        self.forget_mode(rec.mode);
        Some(rec)
    }

    /// Removes the holder record of `grant`, moving its owner to `owner` (so the reference is
    /// dropped by the caller's entry, after unlatching; see `Entry::owner`); whether there
    /// was one.
    #[inline(always)]
    pub(crate) fn take_holder_owner(&mut self, grant: GrantId, owner: &mut Option<Owner>) -> bool {
        let Some(at) = self.holders.iter().position(|h| h.grant == grant) else { return false };
        let rec = self.holders.swap_remove(at);
        self.forget_mode(rec.mode);
        *owner = Some(rec.owner);
        true
    }

    /// Clears `mode`'s bit in `held` once no holder is left in it. A scan of the holders,
    /// which the release has just scanned to find its own: no counts to keep in the record.
    #[inline(always)]
    fn forget_mode(&mut self, mode: Mode) {
        if cfg!(lockcore_mutant = "lost_count") {
            // Deliberately broken: one shared holder leaving frees the key of all of them.
            self.held &= !mode.bit();
            return;
        }
        if self.holders.is_empty() {
            self.held = 0;
        } else if !self.holders.iter().any(|h| h.mode == mode) {
            self.held &= !mode.bit();
        }
    }

    /// Removes every holder record matching `pred`, in no particular order.
    pub(crate) fn remove_holders_where(&mut self, mut pred: impl FnMut(&HeldBy) -> bool, out: &mut Vec<HeldBy>) {
        let mut i = 0;
        while i < self.holders.len() {
            if pred(&self.holders[i]) {
                let g = self.holders[i].grant;
                out.extend(self.remove_holder(g));
            } else {
                i += 1;
            }
        }
    }

    /// Appends a waiter. Callers hold this slot's latch and took `seq` while holding it, so
    /// a later `seq` can only be taken after this push: the queue stays sorted by `seq`.
    pub(crate) fn enqueue(&mut self, seq: u64, mode: Mode, node: &Arc<WaitNode>) {
        let queue = self.queue.get_or_insert_with(Default::default);
        debug_assert!(queue.back().is_none_or(|q| q.seq < seq));
        queue.push_back(Queued { seq, mode, node: Arc::clone(node) });
    }

    /// Removes the waiter `seq` from the queue.
    pub(crate) fn dequeue(&mut self, seq: u64) {
        let Some(queue) = self.queue.as_mut() else { return };
        if let Ok(at) = queue.binary_search_by_key(&seq, |q| q.seq) {
            queue.remove(at);
        }
    }

    /// Adds to `out` every waiter that this key no longer stops: compatible with the holders
    /// and with the waiters ahead of it. Waiters that another key still blocks will look,
    /// find it so, and park again; that key's release wakes them.
    #[inline]
    pub(crate) fn collect_wakeable(&self, modes: &ModeTable, out: &mut WakeList) {
        if cfg!(lockcore_mutant = "no_wake") {
            return; // deliberately broken: releases wake nobody
        }
        if self.has_waiters() {
            self.collect_wakeable_slow(modes, out);
        }
    }

    #[cold]
    fn collect_wakeable_slow(&self, modes: &ModeTable, out: &mut WakeList) {
        let mut ahead = 0u8;
        for q in self.waiters() {
            let passes = modes.compatible_with_set(q.mode, self.held) && modes.compatible_with_set(q.mode, ahead);
            if passes && !out.iter().any(|n| Arc::ptr_eq(n, &q.node)) {
                out.push(Arc::clone(&q.node));
            }
            ahead |= q.mode.bit();
            if modes.excludes_all(ahead) {
                break; // nothing behind can pass
            }
        }
    }
}
