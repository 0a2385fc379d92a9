//! Introspection, as PostgreSQL's `pg_locks` and `pg_blocking_pids`.

use crate::mode::Mode;
use crate::request::{LockMessage, Owner};
use crate::slot::HeldBy;
use crate::table::LockTable;
use crate::ticket::{GrantId, Token};
use std::hash::Hash;
use std::time::Instant;

/// One key held by one grant.
#[derive(Clone, Debug)]
pub struct HeldLock<K> {
    /// The key.
    pub key: K,
    /// The holder.
    pub owner: Owner,
    /// The grant.
    pub grant: GrantId,
    /// The mode held.
    pub mode: Mode,
    /// The holder's message.
    pub message: Option<LockMessage>,
    /// When it was granted.
    pub since: Instant,
    /// The fencing token, for fenced modes.
    pub token: Option<Token>,
}

/// One key a queued request waits for.
#[derive(Clone, Debug)]
pub struct WaitingLock<K> {
    /// The key.
    pub key: K,
    /// Who waits.
    pub owner: Owner,
    /// The mode it waits for.
    pub mode: Mode,
    /// When it started waiting.
    pub since: Instant,
    /// Arrival number: a request queued with a smaller number goes first on a shared key.
    pub arrival: u64,
}

/// Every held lock and every waiter at one instant.
#[derive(Clone, Debug)]
pub struct Snapshot<K> {
    /// Held locks, grouped by key.
    pub held: Vec<HeldLock<K>>,
    /// Waiters, grouped by key, in queue order per key.
    pub waiting: Vec<WaitingLock<K>>,
    /// When it was taken.
    pub taken_at: Instant,
}

/// Double-collect passes a snapshot tries before it revokes every read bias instead. Under loom
/// one, so that the models explore the fallback whenever a fast grant changes between passes.
#[cfg(not(loom))]
const SNAPSHOT_PASSES: usize = 4;
#[cfg(loom)]
const SNAPSHOT_PASSES: usize = 1;

impl<K: Hash + Eq + Clone> LockTable<K> {
    /// A consistent picture of every held lock and every waiter.
    ///
    /// Consistent: every shard is latched at once (no key can be added meanwhile), so no grant
    /// appears half made. It stops the table for as long as it takes to copy the state, as
    /// reading `pg_locks` does; it is for diagnosis, not for a hot path. Shared grants of hot
    /// keys made without a latch (the read bias) are read at one instant while the shards are
    /// latched; if such grants keep coming and going too fast for that, the snapshot revokes
    /// every bias and reads them from the records.
    pub fn snapshot(&self) -> Snapshot<K> {
        let mut shards = self.lock_all();
        // No direct grant comes or goes until `open_all`; the ones held are in records now.
        self.close_all(&mut shards);
        let fast = self.bias.fast_cut(SNAPSHOT_PASSES).unwrap_or_else(|| {
            self.settle_all(&mut shards);
            Vec::new()
        });
        let taken_at = Instant::now();
        let anchor = self.clock.anchor();
        let mut held = Vec::new();
        let mut waiting = Vec::new();
        let held_lock = |key: &K, h: &HeldBy| HeldLock {
            key: key.clone(),
            owner: h.owner.clone(),
            grant: h.grant,
            mode: h.mode,
            message: h.message.clone(),
            since: anchor.instant(h.since),
            token: h.token(),
        };
        // Every shard is latched: the records and the fast grants read above are one cut.
        for (shard, st) in shards.iter().enumerate() {
            for (at, slot) in st.live() {
                let Some(key) = slot.key() else { continue };
                held.extend(slot.holders.iter().map(|h| held_lock(key, h)));
                let word = Self::bias_word(st, at);
                if word != 0 {
                    held.extend(
                        fast.iter()
                            .filter(|&&(s, w, _)| usize::from(s) == shard && w == word)
                            .map(|(_, _, h)| held_lock(key, h)),
                    );
                }
                waiting.extend(slot.waiters().map(|q| WaitingLock {
                    key: key.clone(),
                    owner: q.node.owner.clone(),
                    mode: q.mode,
                    since: q.node.since,
                    arrival: q.seq,
                }));
            }
        }
        self.open_all();
        drop(shards);
        Snapshot { held, waiting, taken_at }
    }

    /// The owners that `owner`'s waiting requests wait for: holders of their keys in an
    /// incompatible mode, and incompatible requests queued ahead of them
    /// (`pg_blocking_pids`). Empty if `owner` is not waiting. Like `pg_blocking_pids`, it
    /// leaves `owner` itself out, although on this table (which is not re-entrant) an owner can
    /// wait for its own grant; [`Conflict::blockers`](crate::Conflict::blockers) does name it.
    pub fn blockers(&self, owner: &Owner) -> Vec<Owner> {
        let snap = self.snapshot();
        let mut out: Vec<Owner> = Vec::new();
        let mut add = |o: &Owner| {
            if o != owner && !out.contains(o) {
                out.push(o.clone());
            }
        };
        for w in snap.waiting.iter().filter(|w| w.owner == *owner) {
            for h in snap.held.iter().filter(|h| h.key == w.key && !self.modes.compatible(w.mode, h.mode)) {
                add(&h.owner);
            }
            for q in snap
                .waiting
                .iter()
                .filter(|q| q.key == w.key && q.arrival < w.arrival && !self.modes.compatible(w.mode, q.mode))
            {
                add(&q.owner);
            }
        }
        out
    }
}
