//! One key's state: its holders, its FIFO queue of waiters and its fencing-token counter.
//!
//! A slot is guarded by its own latch (a `parking_lot` mutex: one byte, a CAS to take and a
//! store to drop when uncontended, a short spin then park when contended). Requests latch all
//! their slots in one fixed order (creation number), decide, change every slot, and unlatch, so a grant is
//! installed in one indivisible step; see `docs/design.md` ("Linearizable batches").

use crate::mode::{Mode, ModeTable, MAX_MODES};
use crate::request::{LockMessage, Owner};
use crate::sync::{Arc, Mutex};
use crate::ticket::{GrantId, Token};
use crate::wait::WaitNode;
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::time::Instant;

/// A key in the table. Shared through `Arc` by the table's index, by every live grant
/// (`LockSet`) and every waiter that names it, which is what makes reclamation safe: the index
/// drops a slot only when it holds the last reference and the slot is idle.
pub(crate) struct Slot<K> {
    pub(crate) key: K,
    /// The slot's place in the latch order: unique in its table, fixed for its life. Made
    /// from a per-table counter rather than taken from the slot's address so that the order
    /// depends only on the order of creation, which makes runs under loom repeatable.
    pub(crate) order: u64,
    pub(crate) state: Mutex<SlotState>,
}

impl<K> Slot<K> {
    pub(crate) fn new(key: K, order: u64, token_floor: u64) -> Self {
        Self { key, order, state: Mutex::new(SlotState::new(token_floor)) }
    }

    /// Makes a reclaimed, idle slot the slot of `key`, keeping its allocations (the slot
    /// itself, its holder list's and queue's capacity). `order` is a fresh creation number
    /// and `token_floor` the table's floor, as for a new slot.
    pub(crate) fn reuse(&mut self, key: K, order: u64, token_floor: u64) {
        self.key = key;
        self.order = order;
        // `&mut self`: no other reference exists, so no latch is needed.
        let st = self.state.get_mut();
        debug_assert!(st.is_idle() && st.holders.is_empty());
        st.last_token = token_floor;
        st.recent = false;
    }

    /// The key latches are sorted by.
    #[inline]
    pub(crate) fn latch_order(this: &Arc<Self>) -> u64 {
        this.order
    }
}

/// A holder record: one key of one grant.
#[derive(Clone)]
pub(crate) struct HeldBy {
    pub(crate) grant: GrantId,
    pub(crate) owner: Owner,
    pub(crate) mode: Mode,
    pub(crate) message: Option<LockMessage>,
    pub(crate) since: Instant,
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

/// Everything about a key, guarded by the slot's latch.
pub(crate) struct SlotState {
    /// Holders per mode; `held` has a bit for every non-zero count.
    counts: [u32; MAX_MODES],
    pub(crate) held: u8,
    pub(crate) holders: Vec<HeldBy>,
    pub(crate) queue: VecDeque<Queued>,
    /// The last fencing token handed out on this key.
    pub(crate) last_token: u64,
    /// Granted since the last sweep looked: a sweep spares a recently used idle slot once
    /// (second chance), so a working set of keys is not freed and re-made over and over.
    pub(crate) recent: bool,
}

/// Waiters to notify once the latches are dropped. Inline for the common few.
pub(crate) type WakeList = SmallVec<[Arc<WaitNode>; 4]>;

impl SlotState {
    fn new(token_floor: u64) -> Self {
        Self {
            counts: [0; MAX_MODES],
            held: 0,
            holders: Vec::new(),
            queue: VecDeque::new(),
            last_token: token_floor,
            recent: false,
        }
    }

    /// Nobody holds or waits: the slot may be reclaimed.
    pub(crate) fn is_idle(&self) -> bool {
        self.held == 0 && self.queue.is_empty()
    }

    /// The modes queued by waiters that arrived before `seq` (all waiters for `None`).
    #[inline]
    pub(crate) fn queued_before(&self, seq: Option<u64>) -> u8 {
        let mut mask = 0;
        for q in &self.queue {
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
            && (self.queue.is_empty() || modes.compatible_with_set(mode, self.queued_before(seq)))
    }

    /// Records a holder; returns its fencing token for fenced modes, 0 otherwise.
    #[inline(always)]
    pub(crate) fn add_holder(&mut self, modes: &ModeTable, mut rec: HeldBy) -> u64 {
        if modes.is_fenced(rec.mode) {
            self.last_token += 1;
            rec.token = self.last_token;
        }
        let token = rec.token;
        self.recent = true;
        self.counts[rec.mode.index()] += 1;
        self.held |= rec.mode.bit();
        self.holders.push(rec);
        token
    }

    /// Removes the holder record of `grant`, if any.
    pub(crate) fn remove_holder(&mut self, grant: GrantId) -> Option<HeldBy> {
        let at = self.holders.iter().position(|h| h.grant == grant)?;
        let rec = self.holders.swap_remove(at);
        let i = rec.mode.index();
        self.counts[i] -= 1;
        if self.counts[i] == 0 {
            self.held &= !rec.mode.bit();
        }
        Some(rec)
    }

    /// Removes and drops the holder record of `grant`; whether there was one. (The release of
    /// a guard needs no more than that, so nothing is moved out.)
    #[inline(always)]
    pub(crate) fn drop_holder(&mut self, grant: GrantId) -> bool {
        let Some(at) = self.holders.iter().position(|h| h.grant == grant) else { return false };
        let i = self.holders[at].mode.index();
        self.counts[i] -= 1;
        if self.counts[i] == 0 {
            self.held &= !self.holders[at].mode.bit();
        }
        self.holders.swap_remove(at);
        true
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
        debug_assert!(self.queue.back().is_none_or(|q| q.seq < seq));
        self.queue.push_back(Queued { seq, mode, node: Arc::clone(node) });
    }

    /// Removes the waiter `seq` from the queue.
    pub(crate) fn dequeue(&mut self, seq: u64) {
        if let Ok(at) = self.queue.binary_search_by_key(&seq, |q| q.seq) {
            self.queue.remove(at);
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
        if !self.queue.is_empty() {
            self.collect_wakeable_slow(modes, out);
        }
    }

    #[cold]
    fn collect_wakeable_slow(&self, modes: &ModeTable, out: &mut WakeList) {
        let mut ahead = 0u8;
        for q in &self.queue {
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
