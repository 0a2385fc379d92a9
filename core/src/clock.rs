//! The clock of grants: when a key was granted, and how long it was held.
//!
//! Every grant reads the clock once (its "held since") and every release once more (the
//! hold-time histogram). `std::time::Instant::now()` costs about 30 ns here (a vDSO
//! `clock_gettime`), which made the two reads a fifth of a whole uncontended acquire and
//! release. A [`Stamp`] is instead a raw reading of the CPU's time-stamp counter through
//! `quanta` (one `rdtsc`), scaled to nanoseconds only when a duration is needed, with the
//! factor `quanta` calibrated against the monotonic clock once per process (well under a
//! millisecond here). Where there is no usable counter `quanta` reads the monotonic clock
//! instead; under miri and loom the standard clock is used.
//!
//! The public API speaks `std::time::Instant`: a stamp becomes one through an [`Anchor`], a
//! reading of both clocks taken when a report (a conflict, a snapshot, `LockSet::since`) is
//! made. A fresh anchor puts every stamp in the past of the standard clock, off by at most the
//! two clocks' drift since the stamp (parts per million of the time held); two reports of one
//! grant may differ by that much.

use std::time::{Duration, Instant};

/// A raw reading of the grant clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp(u64);

impl Stamp {
    /// A stamp before every reading (for cells not in use).
    pub(crate) const ZERO: Stamp = Stamp(0);

    /// This stamp moved on by `factor` times the time from `start` to it.
    pub(crate) fn later_by(self, start: Stamp, factor: u64) -> Stamp {
        Stamp(self.0.saturating_add(self.0.saturating_sub(start.0).saturating_mul(factor)))
    }
}

/// The grant clock of one table.
#[derive(Clone)]
pub(crate) struct Clock {
    #[cfg(not(any(miri, loom)))]
    counter: quanta::Clock,
    #[cfg(any(miri, loom))]
    origin: Instant,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

impl Clock {
    pub(crate) fn new() -> Self {
        #[cfg(not(any(miri, loom)))]
        return Self { counter: quanta::Clock::new() };
        #[cfg(any(miri, loom))]
        return Self { origin: Instant::now() };
    }

    #[inline]
    pub(crate) fn now(&self) -> Stamp {
        #[cfg(not(any(miri, loom)))]
        return Stamp(self.counter.raw());
        #[cfg(any(miri, loom))]
        return Stamp(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }

    /// The time from `start` to `end` (zero if `end` reads earlier).
    #[inline]
    pub(crate) fn between(&self, start: Stamp, end: Stamp) -> Duration {
        #[cfg(not(any(miri, loom)))]
        return self.counter.delta(start.0, end.0);
        #[cfg(any(miri, loom))]
        return Duration::from_nanos(end.0.saturating_sub(start.0));
    }

    /// Time since `s`.
    #[inline]
    pub(crate) fn since(&self, s: Stamp) -> Duration {
        self.between(s, self.now())
    }

    /// Both clocks, now.
    pub(crate) fn anchor(&self) -> Anchor<'_> {
        // The standard clock second, so no stamp taken before converts to an instant after it.
        let stamp = self.now();
        Anchor { clock: self, stamp, instant: Instant::now() }
    }
}

/// Both clocks read at (nearly) one instant, to turn stamps into `std::time::Instant`s.
pub(crate) struct Anchor<'c> {
    clock: &'c Clock,
    stamp: Stamp,
    instant: Instant,
}

impl Anchor<'_> {
    /// The standard-clock instant of `s` (a stamp taken before the anchor).
    pub(crate) fn instant(&self, s: Stamp) -> Instant {
        let ago = self.clock.between(s, self.stamp);
        self.instant.checked_sub(ago).unwrap_or(self.instant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_become_instants_in_order_and_near_the_standard_clock() {
        let clock = Clock::new();
        let before = Instant::now();
        let a = clock.now();
        std::thread::sleep(Duration::from_millis(5));
        let b = clock.now();
        let after = Instant::now();
        assert!(a <= b);
        assert!(clock.since(b) <= after.elapsed() + Duration::from_millis(50));
        assert!(clock.between(a, b) >= Duration::from_millis(4), "{:?}", clock.between(a, b));
        assert_eq!(clock.between(b, a), Duration::ZERO);
        let anchor = clock.anchor();
        let (ia, ib) = (anchor.instant(a), anchor.instant(b));
        assert!(ia <= ib);
        assert!(ib.duration_since(ia) >= Duration::from_millis(4), "{:?}", ib.duration_since(ia));
        // Within a millisecond of the standard clock's own readings around them.
        let slack = Duration::from_millis(1);
        assert!(ia + slack >= before && ib <= after + slack, "{before:?} {ia:?} {ib:?} {after:?}");
        assert!(anchor.instant(b) <= Instant::now(), "a stamp converted into the future");
    }
}
