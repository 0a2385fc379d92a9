//! Baseline 5: a `tokio::sync::RwLock` per key, the design an async service would reach for.
//!
//! `DashMap<u64, Arc<tokio::sync::RwLock<()>>>`, the keys' locks taken in sorted key order with
//! owned guards. `try_acquire` uses `try_read_owned`/`try_write_owned` and drops what it took on
//! failure; `acquire` awaits `read_owned`/`write_owned` in key order on [`block_on_until`], a
//! park/unpark executor with a deadline (tokio's own timers would need its runtime). Per-key
//! locks are never removed from the map, as in [`DashRwLocks`](crate::DashRwLocks).

use crate::baseline::{sorted, Access, Baseline, Lock};
use dashmap::DashMap;
use smallvec::SmallVec;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

type Hasher = foldhash::fast::RandomState;

/// Wakes the thread that polls.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `fut` on this thread, parking between polls, until it is ready or `deadline` passes
/// (`None`; the future is dropped, which for tokio's lock futures leaves the queue).
pub fn block_on_until<F: Future>(fut: F, deadline: Instant) -> Option<F::Output> {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::park_timeout(deadline - now);
    }
}

/// A held per-key lock of [`TokioRwLocks`].
pub enum TokioHeld {
    /// Held shared.
    Read(OwnedRwLockReadGuard<()>),
    /// Held exclusive.
    Write(OwnedRwLockWriteGuard<()>),
}

/// `DashMap<u64, Arc<tokio::sync::RwLock<()>>>`, locked in sorted key order.
pub struct TokioRwLocks {
    map: DashMap<u64, Arc<RwLock<()>>, Hasher>,
}

impl Default for TokioRwLocks {
    fn default() -> Self {
        Self::new()
    }
}

impl TokioRwLocks {
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

    /// Takes `locks` in key order, awaiting each; what a task on an async runtime would run.
    pub async fn acquire_async(&self, locks: &[Lock]) -> SmallVec<[TokioHeld; 8]> {
        let mut held = SmallVec::new();
        for l in sorted(locks) {
            let rw = self.lock_of(l.key);
            held.push(match l.access {
                Access::Shared => TokioHeld::Read(rw.read_owned().await),
                Access::Exclusive => TokioHeld::Write(rw.write_owned().await),
            });
        }
        held
    }
}

impl Baseline for TokioRwLocks {
    type Held<'a> = SmallVec<[TokioHeld; 8]>;

    fn name(&self) -> &'static str {
        "tokio-rwlock"
    }

    fn try_acquire(&self, locks: &[Lock]) -> Option<Self::Held<'_>> {
        let mut held = SmallVec::new();
        for l in sorted(locks) {
            let rw = self.lock_of(l.key);
            // On failure `held` drops, releasing the keys already taken.
            held.push(match l.access {
                Access::Shared => TokioHeld::Read(rw.try_read_owned().ok()?),
                Access::Exclusive => TokioHeld::Write(rw.try_write_owned().ok()?),
            });
        }
        Some(held)
    }

    fn acquire(&self, locks: &[Lock], timeout: Duration) -> Option<Self::Held<'_>> {
        block_on_until(self.acquire_async(locks), Instant::now() + timeout)
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
    fn tokio_semantics() {
        check_semantics(&TokioRwLocks::new());
    }

    #[test]
    fn tokio_exclusion() {
        check_exclusion(&TokioRwLocks::new());
    }
}
