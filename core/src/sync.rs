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
    pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
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
    pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
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
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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

/// Reader slots per table (the read bias, `bias.rs`): at most this many threads at once hold
/// one (see [`reader_slot`]).
#[cfg(not(loom))]
pub(crate) const READER_SLOTS: usize = 64;
/// Under loom: two, which each model thread names with [`loom_set_reader_slot`].
#[cfg(loom)]
pub(crate) const READER_SLOTS: usize = 2;

/// This thread's reader slot, if it holds one: an index below [`READER_SLOTS`] that no other
/// living thread holds at the same time, the same for as long as the thread lives. `bias.rs`
/// keeps per-thread state in every table's slot of that index without a lock, and relies on
/// this exclusivity for it. A thread asks for a slot the first time it calls this and gives it
/// back when it exits; while all are taken it gets `None` (and asks again next time).
///
/// Under loom, the slot a model thread chose with [`loom_set_reader_slot`] (0 by default): a
/// model must run alike every time, so it cannot depend on the order threads first ask in
/// across runs; each model gives its threads distinct slots (loom's cell checks would report a
/// model that did not).
#[inline]
pub(crate) fn reader_slot() -> Option<usize> {
    #[cfg(not(loom))]
    {
        use lease::{LEASE, TAKEN};
        use std::sync::atomic::Ordering;
        // `try_with`: a thread-local destructor that runs after this one (and takes a lock,
        // say) finds no slot rather than a panic.
        LEASE
            .try_with(|lease| {
                if let Some(i) = lease.get() {
                    return Some(i);
                }
                // Relaxed: a first guess for the exchange below, which is the claim.
                let mut taken = TAKEN.load(Ordering::Relaxed);
                loop {
                    if taken == u64::MAX {
                        return None;
                    }
                    let bit = (!taken).trailing_zeros();
                    // Acquire: everything the slot's previous holder did with it happens before
                    // this thread's first use (pairs with the Release in `Lease::drop`).
                    match TAKEN.compare_exchange_weak(taken, taken | 1 << bit, Ordering::Acquire, Ordering::Relaxed) {
                        Ok(_) => {
                            // At most 64 slots.
                            lease.set(bit as usize);
                            return Some(bit as usize);
                        }
                        Err(now) => taken = now,
                    }
                }
            })
            .ok()
            .flatten()
    }
    #[cfg(loom)]
    {
        LOOM_SLOT.with(|s| Some(s.get() % READER_SLOTS))
    }
}

/// This thread's reader slot if it already holds one; unlike [`reader_slot`] it never claims
/// one (a thread that only releases grants made elsewhere should not take a slot from readers).
#[inline]
pub(crate) fn leased_reader_slot() -> Option<usize> {
    #[cfg(not(loom))]
    {
        lease::LEASE.try_with(lease::Lease::get).ok().flatten()
    }
    #[cfg(loom)]
    {
        reader_slot()
    }
}

/// The process-wide lease of reader-slot numbers (see [`reader_slot`]).
#[cfg(not(loom))]
mod lease {
    use super::READER_SLOTS;
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Bit `i`: some living thread holds slot `i`.
    pub(super) static TAKEN: AtomicU64 = AtomicU64::new(0);

    /// A thread's slot number, or `u8::MAX` before it has one.
    pub(super) struct Lease(Cell<u8>);

    impl Lease {
        pub(super) fn get(&self) -> Option<usize> {
            let i = usize::from(self.0.get());
            (i < READER_SLOTS).then_some(i)
        }

        pub(super) fn set(&self, i: usize) {
            // At most 64 slots.
            self.0.set(i as u8);
        }
    }

    impl Drop for Lease {
        fn drop(&mut self) {
            if let Some(i) = self.get() {
                // Release: this thread's last use of its slot's state happens before the
                // next holder's claim (an Acquire) of the slot.
                TAKEN.fetch_and(!(1u64 << i), Ordering::Release);
            }
        }
    }

    thread_local! {
        pub(super) static LEASE: Lease = const { Lease(Cell::new(u8::MAX)) };
    }
}

#[cfg(loom)]
loom::thread_local! {
    static LOOM_SLOT: std::cell::Cell<usize> = std::cell::Cell::new(0);
}

/// Under loom: makes the calling model thread use reader slot `slot` (modulo the number of
/// slots). Two model threads that take fast grants must use different slots.
#[cfg(loom)]
#[doc(hidden)]
pub fn loom_set_reader_slot(slot: usize) {
    LOOM_SLOT.with(|s| s.set(slot));
}

/// A cell whose every access is a closure over a raw pointer, so that under loom the same code
/// has loom check each access for data races (`loom::cell::UnsafeCell`); otherwise std's
/// `UnsafeCell` at no cost. Used by `bias.rs` for state guarded by an atomic protocol rather
/// than a lock.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// The mutex of the guards' buffer pool (`pool.rs`): `parking_lot`'s under loom too. A pooled
/// buffer carries no ordering the lock protocol relies on, and its critical sections (a push or
/// a pop) contain no loom operation, so loom never switches threads inside one.
pub(crate) mod pool {
    pub(crate) use parking_lot::Mutex;
}
