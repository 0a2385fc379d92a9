//! Counters and latency histograms, cheap enough to keep on.
//!
//! Each thread bumps its own cache-line-sized stripe, so counting never bounces a shared line
//! between cores; reading sums the stripes. Histograms have one bucket per power of two of
//! nanoseconds. All atomics here are `Relaxed`: they are statistics, read for reporting, and
//! no other memory is published through them.

use crate::sync::stat::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

pub(crate) const STRIPES: usize = 8;
/// Buckets: `[0, 1)`, `[1, 2)`, `[2, 4)`, ... nanoseconds, the last one open-ended (~ 2^46 ns = 19.5 h).
pub const BUCKETS: usize = 48;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum Counter {
    Conflicts,
    Waits,
    Timeouts,
    Cancellations,
    OwnerReleases,
    ForcedReleases,
    Revocations,
}
const COUNTERS: usize = 7;

#[repr(align(128))]
struct Stripe {
    counters: [AtomicU64; COUNTERS],
    wait_ns: [AtomicU64; BUCKETS],
    hold_ns: [AtomicU64; BUCKETS],
}

impl Stripe {
    fn new() -> Self {
        Self {
            counters: std::array::from_fn(|_| AtomicU64::new(0)),
            wait_ns: std::array::from_fn(|_| AtomicU64::new(0)),
            hold_ns: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

pub(crate) struct Metrics {
    stripes: Box<[Stripe]>,
}

pub(crate) fn stripe_index() -> usize {
    use std::cell::Cell;
    // Relaxed: only spreads threads over stripes; any interleaving gives a valid index.
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    INDEX.with(|i| {
        if i.get() == usize::MAX {
            i.set(NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES);
        }
        i.get()
    })
}

fn bucket(d: Duration) -> usize {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    ((u64::BITS - ns.leading_zeros()) as usize).min(BUCKETS - 1)
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Self { stripes: (0..STRIPES).map(|_| Stripe::new()).collect() }
    }

    #[inline]
    fn stripe(&self) -> &Stripe {
        &self.stripes[stripe_index()]
    }

    #[inline]
    pub(crate) fn add(&self, c: Counter, n: u64) {
        self.stripe().counters[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn record_wait(&self, d: Duration) {
        self.stripe().wait_ns[bucket(d)].fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn record_hold(&self, d: Duration) {
        self.stripe().hold_ns[bucket(d)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let sum = |c: Counter| self.stripes.iter().map(|s| s.counters[c as usize].load(Ordering::Relaxed)).sum();
        let hist = |pick: fn(&Stripe) -> &[AtomicU64; BUCKETS]| Histogram {
            buckets: std::array::from_fn(|b| self.stripes.iter().map(|s| pick(s)[b].load(Ordering::Relaxed)).sum()),
        };
        MetricsSnapshot {
            // Grants and releases are counted in the shards, under their latches
            // (`LockTable::metrics` adds them): no atomic for them on the hot path.
            grants: 0,
            conflicts: sum(Counter::Conflicts),
            waits: sum(Counter::Waits),
            timeouts: sum(Counter::Timeouts),
            cancellations: sum(Counter::Cancellations),
            releases: 0,
            owner_releases: sum(Counter::OwnerReleases),
            forced_releases: sum(Counter::ForcedReleases),
            biased_grants: 0,
            direct_grants: 0,
            revocations: sum(Counter::Revocations),
            wait_time: hist(|s| &s.wait_ns),
            hold_time: hist(|s| &s.hold_ns),
        }
    }
}

/// A latency histogram with one bucket per power of two of nanoseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    /// `buckets[0]` counts zero durations; `buckets[i]` counts durations in `[2^(i-1), 2^i)` ns.
    pub buckets: [u64; BUCKETS],
}

impl Histogram {
    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// An upper bound of the `q` quantile (`0.0..=1.0`): the top of the bucket it falls in,
    /// so within a factor of two. `None` without samples.
    pub fn quantile_upper_bound(&self, q: f64) -> Option<Duration> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_nanos(if i == 0 { 0 } else { 1u64 << i }));
            }
        }
        Some(Duration::MAX)
    }
}

/// Counters and histograms of one table since it was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Requests granted (by `try_acquire` or after waiting).
    pub grants: u64,
    /// `try_acquire` calls refused with a conflict.
    pub conflicts: u64,
    /// Requests that had to queue.
    pub waits: u64,
    /// Waits that ended at their deadline without the locks.
    pub timeouts: u64,
    /// Waits abandoned by dropping an `acquire_async` future.
    pub cancellations: u64,
    /// Grants released by their holder (guard drop, `release`).
    pub releases: u64,
    /// Grants released by `release_owner`.
    pub owner_releases: u64,
    /// Grants released by `force_release`.
    pub forced_releases: u64,
    /// Of `grants`, those made without the shard latches, on read-biased keys
    /// ([`Builder::read_bias`](crate::Builder::read_bias)).
    pub biased_grants: u64,
    /// Of `grants`, grants of up to 8 free keys made without the shard latches, by
    /// compare-exchanges of the keys' words ([`Builder::direct`](crate::Builder::direct)).
    pub direct_grants: u64,
    /// Read biases revoked (by a conflicting request, or to show every holder).
    pub revocations: u64,
    /// Time from queueing to the grant, for requests that waited and got their locks.
    pub wait_time: Histogram,
    /// Time from grant to release, for every released grant.
    pub hold_time: Histogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_quantiles() {
        assert_eq!(bucket(Duration::ZERO), 0);
        assert_eq!(bucket(Duration::from_nanos(1)), 1);
        assert_eq!(bucket(Duration::from_nanos(1000)), 10);
        assert_eq!(bucket(Duration::from_secs(1_000_000)), BUCKETS - 1);
        let m = Metrics::new();
        for _ in 0..99 {
            m.record_hold(Duration::from_nanos(100));
        }
        m.record_hold(Duration::from_millis(1));
        let s = m.snapshot();
        assert_eq!(s.hold_time.count(), 100);
        assert_eq!(s.hold_time.quantile_upper_bound(0.5), Some(Duration::from_nanos(128)));
        assert_eq!(s.hold_time.quantile_upper_bound(1.0), Some(Duration::from_nanos(1 << 20)));
        assert_eq!(s.wait_time.quantile_upper_bound(0.5), None);
    }
}
