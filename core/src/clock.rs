//! The clock of grants: when a key was granted, and how long it was held.
//!
//! Every grant reads the clock once (its "held since") and every release once more (the
//! hold-time histogram). `std::time::Instant::now()` costs about 30 ns here (a vDSO
//! `clock_gettime`), which made the two reads a fifth of a whole uncontended acquire and
//! release; the CPU's time-stamp counter, through `quanta`, costs about 11 ns, scaled to
//! nanoseconds against the monotonic clock it calibrates itself on (once per process, well
//! under a millisecond here). Under miri and loom the standard clock is used.
//!
//! The public API speaks `std::time::Instant`: a [`Stamp`] becomes one through an [`Anchor`],
//! a reading of both clocks taken when a report (a conflict, a snapshot, `LockSet::since`) is
//! made. A fresh anchor puts every stamp in the past of the standard clock, and off by at most
//! the two clocks' drift over the time since the stamp (`quanta` scales the counter to the
//! monotonic clock's rate as it measured it at calibration: parts per million, so microseconds
//! for a lock held for seconds). Two reports of one grant may therefore differ by that much.

use std::time::{Duration, Instant};

#[cfg(not(any(miri, loom)))]
type Raw = quanta::Instant;
#[cfg(any(miri, loom))]
type Raw = Instant;

/// A reading of the grant clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp(Raw);

impl Stamp {
    #[inline]
    pub(crate) fn now() -> Self {
        Self(Raw::now())
    }

    /// Time since this stamp (zero if the clock reads earlier).
    #[inline]
    pub(crate) fn elapsed(self) -> Duration {
        Raw::now().saturating_duration_since(self.0)
    }
}

/// Both clocks read at (nearly) one instant, to turn stamps into `std::time::Instant`s.
pub(crate) struct Anchor {
    stamp: Raw,
    instant: Instant,
}

impl Anchor {
    /// Both clocks, now (the standard clock second, so no stamp taken before converts to an
    /// instant after it).
    pub(crate) fn now() -> Self {
        let stamp = Raw::now();
        Self { stamp, instant: Instant::now() }
    }

    /// The standard-clock instant of `s` (a stamp taken before the anchor).
    pub(crate) fn instant(&self, s: Stamp) -> Instant {
        let ago = self.stamp.saturating_duration_since(s.0);
        self.instant.checked_sub(ago).unwrap_or(self.instant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_become_instants_in_order_and_near_the_standard_clock() {
        let before = Instant::now();
        let a = Stamp::now();
        std::thread::sleep(Duration::from_millis(5));
        let b = Stamp::now();
        let after = Instant::now();
        assert!(a <= b);
        assert!(b.elapsed() <= after.elapsed() + Duration::from_millis(50));
        let anchor = Anchor::now();
        let (ia, ib) = (anchor.instant(a), anchor.instant(b));
        assert!(ia <= ib);
        assert!(ib.duration_since(ia) >= Duration::from_millis(4), "{:?}", ib.duration_since(ia));
        // Within a millisecond of the standard clock's own readings around them.
        let slack = Duration::from_millis(1);
        assert!(ia + slack >= before && ib <= after + slack, "{before:?} {ia:?} {ib:?} {after:?}");
        assert!(anchor.instant(b) <= Instant::now(), "a stamp converted into the future");
    }
}
