//! Local wake-ups for waiters (from PostgreSQL NOTIFY) and the stop signal of the background
//! threads; jittered backoff.

use parking_lot::{Condvar, Mutex};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    generation: u64,
    stopped: bool,
}

/// A generation counter bumped by every notification, and a stop flag.
#[derive(Default)]
pub(crate) struct Waker {
    state: Mutex<State>,
    cv: Condvar,
}

impl Waker {
    /// The current generation: a waiter reads it before its attempt, so a release that lands
    /// between the attempt and the wait is not missed.
    pub(crate) fn generation(&self) -> u64 {
        self.state.lock().generation
    }

    /// Wakes every waiter.
    pub(crate) fn wake(&self) {
        self.state.lock().generation += 1;
        self.cv.notify_all();
    }

    /// Waits until the generation moves past `seen`, `dur` passes, or stop.
    pub(crate) fn wait(&self, seen: u64, dur: Duration) {
        let deadline = Instant::now() + dur;
        let mut st = self.state.lock();
        while st.generation == seen && !st.stopped {
            if self.cv.wait_until(&mut st, deadline).timed_out() {
                break;
            }
        }
    }

    /// Sleeps `dur`, or less if stopped.
    pub(crate) fn sleep(&self, dur: Duration) {
        let deadline = Instant::now() + dur;
        let mut st = self.state.lock();
        while !st.stopped {
            if self.cv.wait_until(&mut st, deadline).timed_out() {
                break;
            }
        }
    }

    /// Stops the background threads.
    pub(crate) fn stop(&self) {
        self.state.lock().stopped = true;
        self.cv.notify_all();
    }

    pub(crate) fn stopped(&self) -> bool {
        self.state.lock().stopped
    }
}

/// A random 64-bit number (grant ids, sessions, table ids, jitter): std's per-instance random
/// SipHash keys over a counter and the clock. Not cryptographic; collisions of grant ids are
/// refused by the holders table's primary key and retried.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    // Relaxed: only distinctness matters.
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}

/// A positive random `i64` (the columns are signed).
pub(crate) fn random_id() -> i64 {
    (random_u64() >> 1) as i64
}

/// `base` scaled by a random factor in [0.5, 1.5).
pub(crate) fn jitter(base: Duration) -> Duration {
    let f = 0.5 + (random_u64() % 1000) as f64 / 1000.0;
    base.mul_f64(f)
}
