//! The shard latch: a one-byte mutex that spins, yields once, then parks, and hands itself to
//! a sleeper that has waited a millisecond.
//!
//! # Why not `parking_lot::Mutex`
//!
//! `parking_lot`'s mutex is the same one-byte design, and the table used it until session 5.
//! When it finds the lock taken and nobody parked, it spins three short rounds and then calls
//! `sched_yield` up to seven times before it parks. With more threads than cores a latch
//! holder is often *preempted*, and then every yield hands the core to another thread that
//! needs a latch too: at 16 threads on 2 cores, 22% of the samples of the zipf8 workload were
//! in `sched_yield` called from `parking_lot`'s lock, and hot-key workloads fell to 0.45-0.6x
//! their 2-thread throughput (docs/design.md, section 12). `std`'s futex mutex, which spins and
//! then sleeps, did not collapse, but never hands the lock to a sleeper, so a sleeper can lose
//! it to running threads for as long as they keep coming.
//!
//! So this latch:
//! - spins a little longer than `parking_lot`'s (seven exponential rounds, 254 pause
//!   instructions in all, relaxed loads only), so a latch held by a running thread is waited
//!   for without sleeping;
//! - then yields **once**: if the holder was preempted on this core it may run and unlock;
//! - then parks in `parking_lot_core`'s queue for the latch's address, and an unlock that finds
//!   a sleeper wakes the longest-sleeping one to race for the latch;
//! - except that a thread that first went to sleep for the latch more than [`STARVING_AFTER`]
//!   ago sleeps again as *starving* once it has been woken and beaten, and the unlock that wakes
//!   it next (it is at the back of the FIFO queue) *hands* it the latch (it stays locked, for
//!   that thread), so no thread loses the latch to running ones for ever. `parking_lot`'s own hand-over, every 0.5 ms per
//!   lock whoever is waiting, cost the waiting workloads 30-50% here: each hand-over leaves
//!   the latch locked until the woken thread is scheduled.
//!
//! # State
//!
//! One byte: `LOCKED` (someone holds the latch) and `PARKED` (someone may be asleep in the
//! latch's queue). A thread parks only if the state is `LOCKED | PARKED` when `park`'s
//! `validate` runs under the queue's bucket lock; an unlock that finds `PARKED` goes through
//! `unpark_filter`, whose callback runs under the same bucket lock and sets the new state
//! there. So a wake-up cannot be lost: either the sleeper's `validate` sees the unlock's state
//! and does not sleep, or the unlock sees the sleeper in the queue.

use lock_api::{GuardNoSend, RawMutex};
use parking_lot_core::{FilterOp, ParkResult, ParkToken, UnparkResult, UnparkToken, DEFAULT_PARK_TOKEN};
use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

const LOCKED: u8 = 1;
const PARKED: u8 = 2;

/// Rounds of spinning before yielding and parking, round `i` spinning `2^i` pause
/// instructions (2 to 128, 254 in all). Measured against 4 and 6 rounds: shorter spins made
/// two threads on two cores sleep for latches held by a running thread, and cost uniform8 at 2
/// threads up to half its throughput (a sleep and a wake-up cost far more than the latched
/// section waited for).
const SPIN_ROUNDS: u32 = 7;

/// The unpark token that tells a woken thread the latch was handed to it, still locked.
const HANDED_OVER: UnparkToken = UnparkToken(1);

/// The park token of a sleeper that has waited longer than [`STARVING_AFTER`]: the unlock that
/// wakes it hands the latch over instead of letting running threads race it.
const STARVING: ParkToken = ParkToken(1);

/// How long a thread may lose the latch to running threads before it is handed the latch
/// (Go's `sync.Mutex` starvation mode uses the same bound, for the same reason).
const STARVING_AFTER: Duration = Duration::from_millis(1);

/// The raw latch; the table uses it as [`Latch`] through `lock_api`.
pub(crate) struct RawLatch {
    state: AtomicU8,
}

/// A value guarded by a [`RawLatch`].
pub(crate) type Latch<T> = lock_api::Mutex<RawLatch, T>;
/// The RAII guard of a [`Latch`].
pub(crate) type LatchGuard<'a, T> = lock_api::MutexGuard<'a, RawLatch, T>;

// SAFETY: `lock` and `try_lock` return only once this thread has set `LOCKED` from a state
// without it (by a CAS) or has been handed the latch by the unlocker, which leaves `LOCKED` set
// (`unlock_slow`); `LOCKED` is cleared only by `unlock`, which lock_api calls only for the
// holder. So at most one thread holds the latch. Acquire on the locking CAS and Release on the
// unlocking store order each critical section after the previous one; on a hand-over the
// order comes from the unpark: parking_lot_core's thread parker stores the wake-up with Release
// and the woken thread loads it with Acquire before it reads its token. parking_lot_core does
// not document that ordering; `parking_lot`'s own mutex hands over on the same assumption.
// (See `unlock_slow`.)
unsafe impl RawMutex for RawLatch {
    #[allow(clippy::declare_interior_mutable_const)] // lock_api's pattern for a lock's initial value
    const INIT: Self = Self { state: AtomicU8::new(0) };
    // Conservative, as `parking_lot`'s default: nothing here is per thread (the hand-over goes
    // to a sleeper, not to whoever drops the guard), so `GuardSend` would be sound too, but no
    // caller moves a latch guard between threads.
    type GuardMarker = GuardNoSend;

    #[inline]
    fn lock(&self) {
        // Acquire: the critical section must see everything the previous holder wrote before
        // its Release unlock. Relaxed on failure: nothing is read then.
        if self.state.compare_exchange_weak(0, LOCKED, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_slow();
        }
    }

    #[inline]
    fn try_lock(&self) -> bool {
        // Relaxed load: only a hint of which CAS to try; the CAS itself is the Acquire.
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & LOCKED != 0 && !cfg!(lockcore_mutant = "latch_try_ignores_lock") {
                return false; // (the mutant: deliberately broken, takes a held latch)
            }
            match self.state.compare_exchange_weak(state, state | LOCKED, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
    }

    #[inline]
    unsafe fn unlock(&self) {
        if cfg!(lockcore_mutant = "latch_no_wake") {
            // Deliberately broken: unlocks without waking a sleeper, which then sleeps for ever.
            self.state.fetch_and(!LOCKED, Ordering::Release);
            return;
        }
        // Release: publishes the critical section to the next holder's Acquire. Relaxed on
        // failure: a sleeper is there, and `unlock_slow` takes over.
        if self.state.compare_exchange(LOCKED, 0, Ordering::Release, Ordering::Relaxed).is_err() {
            // SAFETY: lock_api calls `unlock` only for the holder, so this thread holds it.
            unsafe { self.unlock_slow() };
        }
    }

    #[inline]
    fn is_locked(&self) -> bool {
        // Relaxed: a snapshot for diagnostics, already stale when returned.
        self.state.load(Ordering::Relaxed) & LOCKED != 0
    }
}

impl RawLatch {
    /// The latch's key in `parking_lot_core`'s table of queues: its address, which is ours
    /// for as long as anyone can lock or unlock it.
    fn key(&self) -> usize {
        self as *const Self as usize
    }

    #[cold]
    fn lock_slow(&self) {
        let mut rounds = 0;
        // When this thread first went to sleep for the latch: past `STARVING_AFTER` it asks to
        // be handed the latch.
        let mut slept_since: Option<Instant> = None;
        // Relaxed loads throughout: each only decides what to try next; the CAS that takes
        // the latch is the Acquire.
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & LOCKED == 0 {
                match self.state.compare_exchange_weak(state, state | LOCKED, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => return,
                    Err(now) => state = now,
                }
                continue;
            }
            // Nobody asleep yet: spin a little (no yield, see the module docs).
            if state & PARKED == 0 && rounds < SPIN_ROUNDS {
                rounds += 1;
                for _ in 0..1u32 << rounds {
                    std::hint::spin_loop();
                }
                state = self.state.load(Ordering::Relaxed);
                continue;
            }
            // Once, before sleeping, give the core away: if the holder was preempted on this
            // core, it may run now and unlock, and this thread finds the latch free without a
            // sleep and a wake-up. (More than once is `parking_lot`'s yield storm.)
            if state & PARKED == 0 && rounds == SPIN_ROUNDS {
                rounds += 1;
                std::thread::yield_now();
                state = self.state.load(Ordering::Relaxed);
                continue;
            }
            // Announce a sleeper, so the unlock goes through the queue. Relaxed: the flag is
            // rechecked by `validate` under the queue's lock, which orders it with the unlock.
            if state & PARKED == 0 {
                if let Err(now) =
                    self.state.compare_exchange_weak(state, state | PARKED, Ordering::Relaxed, Ordering::Relaxed)
                {
                    state = now;
                    continue;
                }
            }
            let since = *slept_since.get_or_insert_with(Instant::now);
            let token = if since.elapsed() >= STARVING_AFTER { STARVING } else { DEFAULT_PARK_TOKEN };
            // Relaxed in `validate`: it runs under the queue's bucket lock, as does the
            // unlocker's callback, so it sees the state as of the last unlock that went through
            // the queue.
            let validate = || self.state.load(Ordering::Relaxed) == LOCKED | PARKED;
            // SAFETY: the key is this latch's own address (see `key`), used by nobody but this
            // latch; `validate` and the timeout callback neither panic nor call into
            // parking_lot; there is no timeout.
            let woken = unsafe { parking_lot_core::park(self.key(), validate, || {}, |_, _| {}, token, None) };
            if let ParkResult::Unparked(HANDED_OVER) = woken {
                return; // the unlocker left the latch locked for us
            }
            // Woken to race for it, or the state changed before we slept: start again.
            rounds = 0;
            state = self.state.load(Ordering::Relaxed);
        }
    }

    /// Unlocks with sleepers about: wakes the longest sleeper, or hands it the latch.
    ///
    /// # Safety
    /// The calling thread holds the latch (the state is `LOCKED | PARKED`).
    #[cold]
    unsafe fn unlock_slow(&self) {
        // Wake the longest sleeper (the queue is FIFO per key), noting whether it starves.
        let (woken, starving) = (Cell::new(false), Cell::new(false));
        let filter = |token: ParkToken| {
            if woken.replace(true) {
                return FilterOp::Stop;
            }
            starving.set(token == STARVING);
            FilterOp::Unpark
        };
        let callback = |result: UnparkResult| {
            if result.unparked_threads != 0 && starving.get() {
                // Hand over: the latch stays locked, now for the woken thread, so no running
                // thread can take it first. Relaxed: the woken thread is ordered after this one
                // by the unpark itself (parking_lot_core's parker releases, the sleeper acquires).
                if cfg!(lockcore_mutant = "latch_lost_handover") {
                    // Deliberately broken: unlocks while handing over, so a running thread and
                    // the woken one both hold the latch.
                    self.state.store(if result.have_more_threads { PARKED } else { 0 }, Ordering::Release);
                } else if !result.have_more_threads {
                    self.state.store(LOCKED, Ordering::Relaxed);
                }
                #[cfg(test)]
                tests::HAND_OVERS.fetch_add(1, Ordering::Relaxed);
                return HANDED_OVER;
            }
            // Unlock, keeping `PARKED` if anyone still sleeps. Release: publishes the critical
            // section to whoever takes the latch next.
            let state = if result.have_more_threads { PARKED } else { 0 };
            self.state.store(state, Ordering::Release);
            parking_lot_core::DEFAULT_UNPARK_TOKEN
        };
        // SAFETY: the key is this latch's own address; the filter and the callback neither
        // panic nor call into parking_lot.
        unsafe {
            parking_lot_core::unpark_filter(self.key(), filter, callback);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Hand-overs made, so the contention test can check the path ran (test builds only).
    pub(super) static HAND_OVERS: AtomicUsize = AtomicUsize::new(0);

    /// A free latch with a sleeper announced (`PARKED` without `LOCKED`, as after a wake-up
    /// that did not hand over) can be taken, keeps `PARKED`, and unlocks through the queue.
    #[test]
    fn a_free_latch_with_sleepers_announced_can_be_taken() {
        let raw = RawLatch::INIT;
        raw.state.store(PARKED, Ordering::Relaxed);
        assert!(raw.try_lock(), "a free latch was refused because PARKED was set");
        assert_eq!(raw.state.load(Ordering::Relaxed), LOCKED | PARKED);
        assert!(!raw.try_lock());
        // SAFETY: this thread holds the latch (taken just above).
        unsafe { raw.unlock() };
        // Nobody was in the queue: the slow unlock leaves the latch free and unannounced.
        assert_eq!(raw.state.load(Ordering::Relaxed), 0);
        raw.lock();
        assert!(raw.is_locked());
        // SAFETY: held (locked just above).
        unsafe { raw.unlock() };
        assert!(!raw.is_locked());
    }

    #[test]
    fn lock_try_lock_and_unlock() {
        let latch: Latch<u32> = Latch::new(0);
        let mut g = latch.lock();
        *g += 1;
        assert!(latch.try_lock().is_none(), "a held latch was taken twice");
        assert!(latch.is_locked());
        drop(g);
        assert!(!latch.is_locked());
        assert_eq!(*latch.try_lock().expect("a free latch was refused"), 1);
    }

    /// Mutual exclusion and no lost wake-up under contention heavy enough to park and to hand
    /// the latch over: threads update a plain (non-atomic) pair under the latch in two steps and
    /// check it is never seen half updated; a sleeper left asleep by an unlock would stop the
    /// run, which a watchdog reports. (Mutants `latch_no_wake`, `latch_try_ignores_lock` and
    /// `latch_lost_handover` each fail it: `ci/mutants.sh`.)
    #[test]
    fn contended_latch_excludes_and_wakes() {
        let threads: u64 = if cfg!(miri) { 3 } else { 8 };
        let rounds: u64 = if cfg!(miri) { 50 } else { 20_000 };
        let latch = Arc::new(Latch::new((0u64, 0u64)));
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let latch = Arc::clone(&latch);
                std::thread::spawn(move || {
                    for i in 0..rounds {
                        let mut g = if i % 3 == 0 {
                            loop {
                                if let Some(g) = latch.try_lock() {
                                    break g;
                                }
                                std::hint::spin_loop();
                            }
                        } else {
                            latch.lock()
                        };
                        assert_eq!(g.0, g.1, "two threads inside the latch at once");
                        g.0 += 1;
                        // Makes the first write real before the second (no merging them).
                        std::hint::black_box(&mut *g);
                        // Long enough sometimes for the others to give up spinning and park,
                        // and now and then for a sleeper to starve and be handed the latch.
                        // (Under miri, far fewer rounds, so more often.)
                        let (starve_every, park_every) = if cfg!(miri) { (16, 4) } else { (512, 64) };
                        if i % starve_every == 0 {
                            std::thread::sleep(STARVING_AFTER * 2);
                        } else if i % park_every == 0 {
                            std::thread::sleep(Duration::from_micros(50));
                        }
                        g.1 += 1;
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(if cfg!(miri) { 3600 } else { 20 });
        for w in workers {
            while !w.is_finished() {
                assert!(Instant::now() < deadline, "a thread never got the latch: a lost wake-up");
                std::thread::sleep(Duration::from_millis(1));
            }
            w.join().expect("worker panicked");
        }
        let g = latch.lock();
        assert_eq!(*g, (threads * rounds, threads * rounds));
        // Sleeps of 2 ms under the latch make the others starve: the hand-over path ran (6-84
        // times per run when measured). Under miri the run is too short to rely on it.
        if !cfg!(miri) {
            assert!(HAND_OVERS.load(Ordering::Relaxed) > 0, "no sleeper was ever handed the latch");
        }
    }
}
