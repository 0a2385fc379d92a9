//! The one door to synchronisation primitives in `lockcore`.
//!
//! Under `cfg(loom)` the mutexes, the atomics the lock protocol relies
//! on and thread parking come from [loom], so `RUSTFLAGS="--cfg loom"` model-checks the real
//! table; otherwise they come from `parking_lot` and `std`. Nothing else in the crate may name
//! `std::sync::atomic` or `parking_lot` directly (`ci/check-sync-shim.sh` enforces it).
//!
//! Two things are deliberately *not* modelled by loom: statistics counters ([`stat`]) and the
//! process-wide id allocator ([`unique_id`]). Neither carries ordering the protocol depends on,
//! and giving loom one more scheduling point per counter bump would multiply its state space
//! without checking anything.
//!
//! [loom]: https://docs.rs/loom

pub(crate) use std::sync::Arc;

#[cfg(not(loom))]
mod imp {
    pub(crate) use crate::latch::{Latch as Mutex, LatchGuard as MutexGuard};
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    pub(crate) use std::thread::{current, Thread};

    /// Parks the current thread until unparked, a spurious wake-up, or `deadline`.
    pub(crate) fn park_until(deadline: Option<std::time::Instant>) {
        match deadline {
            None => std::thread::park(),
            Some(d) => {
                let now = std::time::Instant::now();
                if d > now {
                    std::thread::park_timeout(d - now);
                }
            }
        }
    }
}

#[cfg(loom)]
mod imp {
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    pub(crate) use loom::thread::{current, Thread};

    /// A loom mutex with `parking_lot`'s poison-free signature.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);
    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            // Poisoning only follows a panic in a critical section, which loom reports itself.
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            match self.0.try_lock() {
                Ok(g) => Some(g),
                Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            }
        }
    }

    /// Loom cannot model time, so a deadline is ignored here: loom tests exercise the
    /// give-up path through cancellation, which runs the same code as a timeout.
    pub(crate) fn park_until(_deadline: Option<std::time::Instant>) {
        loom::thread::park();
    }
}

pub(crate) use imp::*;

/// Statistics counters: plain `std` atomics under loom too (see the module docs).
pub(crate) mod stat {
    pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
}

/// Returns a process-wide unique, non-zero id.
///
/// Ids are handed to each thread in blocks of 1024 so that the hot path does not bounce one
/// shared counter between cores. Uniqueness is all callers rely on: ids from different threads
/// are not ordered.
pub(crate) fn unique_id() -> u64 {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};
    const BLOCK: u64 = 1024;
    // Relaxed: the counter only has to hand out disjoint blocks; fetch_add is atomic in any
    // ordering and nothing else is published through it.
    static NEXT_BLOCK: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static RANGE: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }
    RANGE.with(|range| {
        let (mut next, mut end) = range.get();
        if next == end {
            next = NEXT_BLOCK.fetch_add(BLOCK, Ordering::Relaxed);
            end = next + BLOCK;
        }
        range.set((next + 1, end));
        next
    })
}

/// This thread's slot among `n` (the read bias's reader slots): the same for a thread's whole
/// life, spread over threads in the order they first ask. Under loom, the slot a model thread
/// chose with [`loom_set_reader_slot`] (0 by default): a model must run alike every time, so
/// it cannot depend on the order threads first ask in across runs (and `loom::thread::current`
/// inside a lock's acquisition upsets loom's scheduler).
pub(crate) fn thread_slot(n: usize) -> usize {
    #[cfg(not(loom))]
    {
        use std::cell::Cell;
        use std::sync::atomic::{AtomicUsize, Ordering};
        // Relaxed: only spreads threads over slots; any interleaving gives a valid index.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
        }
        SLOT.with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT.fetch_add(1, Ordering::Relaxed));
            }
            s.get() % n
        })
    }
    #[cfg(loom)]
    {
        LOOM_SLOT.with(|s| s.get() % n)
    }
}

#[cfg(loom)]
loom::thread_local! {
    static LOOM_SLOT: std::cell::Cell<usize> = std::cell::Cell::new(0);
}

/// Under loom: makes the calling model thread use reader slot `slot` (modulo the number of
/// slots), so a model can give threads slots of their own or one slot to share.
#[cfg(loom)]
#[doc(hidden)]
pub fn loom_set_reader_slot(slot: usize) {
    LOOM_SLOT.with(|s| s.set(slot));
}

/// The mutex of the guards' buffer pool (`pool.rs`): `parking_lot`'s under loom too. A pooled
/// buffer carries no ordering the lock protocol relies on, and its critical sections (a push or
/// a pop) contain no loom operation, so loom never switches threads inside one.
pub(crate) mod pool {
    pub(crate) use parking_lot::Mutex;
}
