//! The interface every implementation under benchmark provides, and what they share.

use std::time::Duration;

/// How a key is wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Any number of shared holders at once, no exclusive one.
    Shared,
    /// One holder, nobody else.
    Exclusive,
}

/// One key of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Lock {
    /// The key.
    pub key: u64,
    /// How it is wanted.
    pub access: Access,
}

impl Lock {
    /// `key` shared.
    pub fn shared(key: u64) -> Self {
        Self { key, access: Access::Shared }
    }

    /// `key` exclusive.
    pub fn exclusive(key: u64) -> Self {
        Self { key, access: Access::Exclusive }
    }
}

/// All-or-nothing requests of shared/exclusive `u64` keys: try, wait with a timeout, release.
///
/// Callers pass **distinct** keys (the workloads generate them so); what an implementation
/// does with a repeated key is unspecified. `release` gets the same slice that was granted.
pub trait Baseline: Sync {
    /// What a grant keeps until [`release`](Self::release) (guards, or nothing).
    type Held<'a>
    where
        Self: 'a;

    /// A short name for tables.
    fn name(&self) -> &'static str;

    /// Takes every key of `locks` or none, without waiting for holders.
    fn try_acquire(&self, locks: &[Lock]) -> Option<Self::Held<'_>>;

    /// Takes every key of `locks`, waiting up to `timeout`; `None` at the deadline.
    fn acquire(&self, locks: &[Lock], timeout: Duration) -> Option<Self::Held<'_>>;

    /// Gives back a grant of `locks`.
    fn release(&self, locks: &[Lock], held: Self::Held<'_>);

    /// Keys the table stores now (idle ones included), where it can say cheaply.
    fn table_keys(&self) -> Option<usize> {
        None
    }
}

/// The retry policy every spinning loop here uses: `2^n` spin hints for the first attempts,
/// then `yield_now`.
#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// Attempts that spin before yielding.
    const SPIN_LIMIT: u32 = 6;

    /// A fresh policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits a little before the next attempt.
    #[inline]
    pub fn snooze(&mut self) {
        if self.attempt < Self::SPIN_LIMIT {
            for _ in 0..1u32 << self.attempt {
                std::hint::spin_loop();
            }
            self.attempt += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

/// Sorted by key: the order in which the ordered designs take their keys.
pub(crate) fn sorted(locks: &[Lock]) -> smallvec::SmallVec<[Lock; 8]> {
    let mut v: smallvec::SmallVec<[Lock; 8]> = smallvec::SmallVec::from_slice(locks);
    v.sort_unstable_by_key(|l| l.key);
    debug_assert!(v.windows(2).all(|w| w[0].key != w[1].key), "keys must be distinct");
    v
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Instant;

    /// The contract every implementation must meet (keys 1..=3 land on distinct atomic words).
    pub(crate) fn check_semantics<B: Baseline>(b: &B) {
        let (s1, x1, s2, x2, x3) =
            (Lock::shared(1), Lock::exclusive(1), Lock::shared(2), Lock::exclusive(2), Lock::exclusive(3));
        // Readers share, a writer is refused.
        let a = b.try_acquire(&[s1, s2]).expect("free keys");
        let c = b.try_acquire(&[s1]).expect("readers share");
        assert!(b.try_acquire(&[x1]).is_none());
        // All or nothing: key 3 is free but key 2 is not, so key 3 must stay free.
        assert!(b.try_acquire(&[x3, x2]).is_none());
        let d = b.try_acquire(&[x3]).expect("key 3 left free by the failed request");
        b.release(&[x3], d);
        b.release(&[s1], c);
        assert!(b.try_acquire(&[x1]).is_none(), "one reader still holds key 1");
        assert!(b.acquire(&[x1], Duration::from_millis(5)).is_none(), "times out");
        b.release(&[s1, s2], a);
        let e = b.try_acquire(&[x1, x2]).expect("all released");
        // A waiter gets the keys once they are released.
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let t = Instant::now();
                let h = b.acquire(&[s2, x3], Duration::from_secs(10)).expect("granted after release");
                b.release(&[s2, x3], h);
                t.elapsed()
            });
            std::thread::sleep(Duration::from_millis(20));
            b.release(&[x1, x2], e);
            assert!(waiter.join().expect("waiter") < Duration::from_secs(5));
        });
        let f = b.try_acquire(&[x1, x2, x3]).expect("everything free at the end");
        b.release(&[x1, x2, x3], f);
    }

    /// Under contention on 8 hot keys, no grant ever overlaps an incompatible one: a shadow
    /// count per key (readers, or -1 for a writer) is checked on every grant and release,
    /// with the keys held for a few spins so overlaps have a window to show.
    pub(crate) fn check_exclusion<B: Baseline>(b: &B) {
        use crate::workload::{SplitMix64, Workload};
        use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::SeqCst};
        let shadow: Vec<AtomicI64> = (0..8).map(|_| AtomicI64::new(0)).collect();
        let violations = AtomicU64::new(0);
        let w = Workload { name: "test", keys: 8, batch: 3, exclusive_percent: 50, ..Workload::uniform(3) }.sampler();
        let n = if cfg!(debug_assertions) { 3_000 } else { 30_000 };
        let start = std::sync::Barrier::new(3);
        std::thread::scope(|s| {
            for t in 0..3 {
                let (shadow, violations, start, w) = (&shadow, &violations, &start, &w);
                s.spawn(move || {
                    let mut rng = SplitMix64::new(t);
                    let mut batch = smallvec::SmallVec::new();
                    start.wait();
                    for i in 0..n {
                        w.fill(&mut rng, &mut batch);
                        let held = if i % 2 == 0 {
                            let mut backoff = Backoff::new();
                            loop {
                                match b.try_acquire(&batch) {
                                    Some(h) => break h,
                                    None => backoff.snooze(),
                                }
                            }
                        } else {
                            b.acquire(&batch, Duration::from_secs(30)).expect("no deadlock")
                        };
                        let mut marked: smallvec::SmallVec<[Lock; 8]> = smallvec::SmallVec::new();
                        for l in &batch {
                            let c = &shadow[l.key as usize];
                            let ok = match l.access {
                                Access::Exclusive => c.compare_exchange(0, -1, SeqCst, SeqCst).is_ok(),
                                Access::Shared => c.fetch_update(SeqCst, SeqCst, |v| (v >= 0).then_some(v + 1)).is_ok(),
                            };
                            if ok {
                                marked.push(*l);
                            } else {
                                violations.fetch_add(1, SeqCst);
                            }
                        }
                        for _ in 0..64 {
                            std::hint::spin_loop();
                        }
                        for l in &marked {
                            let c = &shadow[l.key as usize];
                            match l.access {
                                Access::Exclusive => c.store(0, SeqCst),
                                Access::Shared => {
                                    c.fetch_sub(1, SeqCst);
                                }
                            }
                        }
                        b.release(&batch, held);
                    }
                });
            }
        });
        let v = violations.load(SeqCst);
        assert_eq!(v, 0, "{}: {v} keys granted while held incompatibly", b.name());
    }

    /// Grants everything: the checks above must catch it.
    struct NoLock;

    impl Baseline for NoLock {
        type Held<'a> = ();
        fn name(&self) -> &'static str {
            "no-lock"
        }
        fn try_acquire(&self, _: &[Lock]) -> Option<()> {
            Some(())
        }
        fn acquire(&self, _: &[Lock], _: Duration) -> Option<()> {
            Some(())
        }
        fn release(&self, _: &[Lock], _: ()) {}
    }

    #[test]
    #[should_panic(expected = "held incompatibly")]
    fn exclusion_check_catches_a_table_that_grants_everything() {
        check_exclusion(&NoLock);
    }

    #[test]
    #[should_panic]
    fn semantics_check_catches_a_table_that_grants_everything() {
        check_semantics(&NoLock);
    }

    #[test]
    fn backoff_spins_then_yields() {
        let mut b = Backoff::new();
        for _ in 0..10 {
            b.snooze();
        }
        assert_eq!(b.attempt, Backoff::SPIN_LIMIT);
    }
}
