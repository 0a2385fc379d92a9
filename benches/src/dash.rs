//! Two designs on `dashmap` (a sharded `RwLock<HashMap>`): counted entries taken key by key,
//! and a map of per-key reader/writer locks.

use crate::baseline::{sorted, Access, Backoff, Baseline, Lock};
use crate::global::Entry;
use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;
use parking_lot::{ArcRwLockReadGuard, ArcRwLockWriteGuard, RawRwLock, RwLock};
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Hasher = foldhash::fast::RandomState;

/// `DashMap<u64, Entry>`: each key taken in sorted order under its shard's write lock; on a
/// conflict the keys already taken are given back. Waiting retries with [`Backoff`]. Entries
/// are removed when their count drops to zero.
pub struct DashCounts {
    map: DashMap<u64, Entry, Hasher>,
}

impl Default for DashCounts {
    fn default() -> Self {
        Self::new()
    }
}

impl DashCounts {
    /// An empty table (dashmap's default shard count: 4 x cores, rounded up to a power of two).
    pub fn new() -> Self {
        Self { map: DashMap::with_hasher(Hasher::default()) }
    }

    fn take(&self, l: &Lock) -> bool {
        match self.map.entry(l.key) {
            MapEntry::Vacant(v) => {
                let mut e = Entry::default();
                e.add(l.access);
                v.insert(e);
                true
            }
            MapEntry::Occupied(mut o) => {
                let e = o.get_mut();
                let ok = e.admits(l.access);
                if ok {
                    e.add(l.access);
                }
                ok
            }
        }
    }

    fn give_back(&self, l: &Lock) {
        if let MapEntry::Occupied(mut o) = self.map.entry(l.key) {
            if o.get_mut().remove(l.access) {
                o.remove();
            }
        }
    }
}

impl Baseline for DashCounts {
    type Held<'a> = ();

    fn name(&self) -> &'static str {
        "dashmap-counts"
    }

    fn try_acquire(&self, locks: &[Lock]) -> Option<()> {
        let order = sorted(locks);
        for (i, l) in order.iter().enumerate() {
            if !self.take(l) {
                for taken in &order[..i] {
                    self.give_back(taken);
                }
                return None;
            }
        }
        Some(())
    }

    fn acquire(&self, locks: &[Lock], timeout: Duration) -> Option<()> {
        if self.try_acquire(locks).is_some() {
            return Some(());
        }
        let deadline = Instant::now() + timeout;
        let mut backoff = Backoff::new();
        loop {
            backoff.snooze();
            if self.try_acquire(locks).is_some() {
                return Some(());
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    fn release(&self, locks: &[Lock], _: ()) {
        for l in locks {
            self.give_back(l);
        }
    }

    fn table_keys(&self) -> Option<usize> {
        Some(self.map.len())
    }
}

/// A held per-key lock of [`DashRwLocks`].
pub enum RwHeld {
    /// Held shared.
    Read(ArcRwLockReadGuard<RawRwLock, ()>),
    /// Held exclusive.
    Write(ArcRwLockWriteGuard<RawRwLock, ()>),
}

/// `DashMap<u64, Arc<parking_lot::RwLock<()>>>`: the keys' locks taken in sorted key order,
/// blocking (so deadlock-free), holding the earlier keys while waiting for later ones; a try
/// uses `try_read`/`try_write` and drops what it took on failure. Per-key locks are never
/// removed from the map (removing them safely is the hard part this design skips).
pub struct DashRwLocks {
    map: DashMap<u64, Arc<RwLock<()>>, Hasher>,
}

impl Default for DashRwLocks {
    fn default() -> Self {
        Self::new()
    }
}

impl DashRwLocks {
    /// An empty table.
    pub fn new() -> Self {
        Self { map: DashMap::with_hasher(Hasher::default()) }
    }

    fn lock_of(&self, key: u64) -> Arc<RwLock<()>> {
        if let Some(r) = self.map.get(&key) {
            return Arc::clone(r.value());
        }
        Arc::clone(self.map.entry(key).or_insert_with(|| Arc::new(RwLock::new(()))).value())
    }

    fn take_all(
        &self,
        locks: &[Lock],
        mut take: impl FnMut(&Arc<RwLock<()>>, Access) -> Option<RwHeld>,
    ) -> Option<SmallVec<[RwHeld; 8]>> {
        let mut held = SmallVec::new();
        for l in sorted(locks) {
            // On failure `held` drops, releasing the keys already taken.
            held.push(take(&self.lock_of(l.key), l.access)?);
        }
        Some(held)
    }
}

impl Baseline for DashRwLocks {
    type Held<'a> = SmallVec<[RwHeld; 8]>;

    fn name(&self) -> &'static str {
        "dashmap-rwlock"
    }

    fn try_acquire(&self, locks: &[Lock]) -> Option<Self::Held<'_>> {
        self.take_all(locks, |rw, access| match access {
            Access::Shared => rw.try_read_arc().map(RwHeld::Read),
            Access::Exclusive => rw.try_write_arc().map(RwHeld::Write),
        })
    }

    fn acquire(&self, locks: &[Lock], timeout: Duration) -> Option<Self::Held<'_>> {
        let deadline = Instant::now() + timeout;
        self.take_all(locks, |rw, access| match access {
            Access::Shared => rw.try_read_arc_until(deadline).map(RwHeld::Read),
            Access::Exclusive => rw.try_write_arc_until(deadline).map(RwHeld::Write),
        })
    }

    fn release(&self, _: &[Lock], held: Self::Held<'_>) {
        drop(held);
    }

    fn table_keys(&self) -> Option<usize> {
        Some(self.map.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::tests::{check_exclusion, check_semantics};

    #[test]
    fn dash_counts_semantics() {
        check_semantics(&DashCounts::new());
    }

    #[test]
    fn dash_rwlocks_semantics() {
        check_semantics(&DashRwLocks::new());
    }

    #[test]
    fn dashcounts_exclusion() {
        check_exclusion(&DashCounts::new());
    }

    #[test]
    fn dashrwlocks_exclusion() {
        check_exclusion(&DashRwLocks::new());
    }
}
