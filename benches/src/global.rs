//! One global mutex around a map of counted entries, and a condition variable to wake every
//! waiter on release: oVirt's `InMemoryLockManager` design, on `std` and on `parking_lot`.
//!
//! An entry exists only while its key is held (removed when its count drops to zero), as in
//! oVirt. Release notifies all waiters, but only when someone waits: that is what Java's
//! `signalAll` costs, while `std`'s `notify_all` would otherwise make a futex call per release.

use crate::baseline::{Access, Baseline, Lock};
use std::collections::hash_map::Entry as MapEntry;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Holders of one key.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) readers: u32,
    pub(crate) writer: bool,
}

impl Entry {
    #[inline]
    pub(crate) fn admits(&self, access: Access) -> bool {
        match access {
            Access::Shared => !self.writer,
            Access::Exclusive => !self.writer && self.readers == 0,
        }
    }

    #[inline]
    pub(crate) fn add(&mut self, access: Access) {
        match access {
            Access::Shared => self.readers += 1,
            Access::Exclusive => self.writer = true,
        }
    }

    /// Removes one holder; true when nobody holds the key any more.
    #[inline]
    pub(crate) fn remove(&mut self, access: Access) -> bool {
        match access {
            Access::Shared => self.readers -= 1,
            Access::Exclusive => self.writer = false,
        }
        !self.writer && self.readers == 0
    }
}

/// The state behind the global lock.
#[derive(Default)]
struct Table {
    entries: HashMap<u64, Entry, foldhash::fast::RandomState>,
    waiters: usize,
}

impl Table {
    fn grantable(&self, locks: &[Lock]) -> bool {
        locks.iter().all(|l| self.entries.get(&l.key).is_none_or(|e| e.admits(l.access)))
    }

    fn install(&mut self, locks: &[Lock]) {
        for l in locks {
            self.entries.entry(l.key).or_default().add(l.access);
        }
    }

    /// Releases `locks`; true if someone waits and should be woken.
    fn remove(&mut self, locks: &[Lock]) -> bool {
        for l in locks {
            if let MapEntry::Occupied(mut o) = self.entries.entry(l.key) {
                if o.get_mut().remove(l.access) {
                    o.remove();
                }
            }
        }
        self.waiters > 0
    }

    fn try_take(&mut self, locks: &[Lock]) -> bool {
        let ok = self.grantable(locks);
        if ok {
            self.install(locks);
        }
        ok
    }
}

/// Counted entries in one `HashMap` behind `std::sync::Mutex`, waiters on a `std::sync::Condvar`.
#[derive(Default)]
pub struct StdGlobal {
    table: std::sync::Mutex<Table>,
    released: std::sync::Condvar,
}

impl StdGlobal {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Nothing here panics while holding the lock; recover rather than propagate anyway.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Baseline for StdGlobal {
    type Held<'a> = ();

    fn name(&self) -> &'static str {
        "std-mutex+condvar"
    }

    fn try_acquire(&self, locks: &[Lock]) -> Option<()> {
        self.lock().try_take(locks).then_some(())
    }

    fn acquire(&self, locks: &[Lock], timeout: Duration) -> Option<()> {
        let deadline = Instant::now() + timeout;
        let mut t = self.lock();
        loop {
            if t.try_take(locks) {
                return Some(());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            t.waiters += 1;
            t = self.released.wait_timeout(t, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
            t.waiters -= 1;
        }
    }

    fn release(&self, locks: &[Lock], _: ()) {
        let wake = self.lock().remove(locks);
        if wake {
            self.released.notify_all();
        }
    }

    fn table_keys(&self) -> Option<usize> {
        Some(self.lock().entries.len())
    }
}

/// Counted entries in one `HashMap` behind `parking_lot::Mutex`, waiters on a `parking_lot::Condvar`.
#[derive(Default)]
pub struct ParkingLotGlobal {
    table: parking_lot::Mutex<Table>,
    released: parking_lot::Condvar,
}

impl ParkingLotGlobal {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Baseline for ParkingLotGlobal {
    type Held<'a> = ();

    fn name(&self) -> &'static str {
        "pl-mutex+condvar"
    }

    fn try_acquire(&self, locks: &[Lock]) -> Option<()> {
        self.table.lock().try_take(locks).then_some(())
    }

    fn acquire(&self, locks: &[Lock], timeout: Duration) -> Option<()> {
        let deadline = Instant::now() + timeout;
        let mut t = self.table.lock();
        loop {
            if t.try_take(locks) {
                return Some(());
            }
            if Instant::now() >= deadline {
                return None;
            }
            t.waiters += 1;
            self.released.wait_until(&mut t, deadline);
            t.waiters -= 1;
        }
    }

    fn release(&self, locks: &[Lock], _: ()) {
        let wake = self.table.lock().remove(locks);
        if wake {
            self.released.notify_all();
        }
    }

    fn table_keys(&self) -> Option<usize> {
        Some(self.table.lock().entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::tests::{check_exclusion, check_semantics};

    #[test]
    fn std_global_semantics() {
        check_semantics(&StdGlobal::new());
    }

    #[test]
    fn parking_lot_global_semantics() {
        check_semantics(&ParkingLotGlobal::new());
    }

    #[test]
    fn stdglobal_exclusion() {
        check_exclusion(&StdGlobal::new());
    }

    #[test]
    fn parkinglotglobal_exclusion() {
        check_exclusion(&ParkingLotGlobal::new());
    }
}
