//! The clock of grants: when a key was granted, and how long it was held.
//!
//! Every grant reads the clock once (its "held since") and every release once more (the
//! hold-time histogram). `std::time::Instant::now()` costs about 30 ns here (a vDSO
//! `clock_gettime`), which made the two reads a fifth of a whole uncontended acquire and
//! release; the CPU's time-stamp counter, through `quanta`, costs about 11 ns, scaled to
//! nanoseconds against the monotonic clock it calibrates itself on (once per process, well
//! under a millisecond here). Under miri and loom the standard clock is used.
//!
//! The public API speaks `std::time::Instant`: a [`Stamp`] becomes one through the process's
//! [`Anchor`], a pair of readings of both clocks taken once, the first time a stamp is shown.
//! One anchor for the whole process makes the conversion a function (the same stamp always
//! shows as the same instant, so a holder's `since` equals its guard's), at the price of the
//! drift between the two clocks since the anchor was taken (`quanta` scales the counter to the
//! monotonic clock's rate, so this is the monotonic clock's own slewing, parts per million).

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
    /// The process's anchor.
    pub(crate) fn get() -> &'static Self {
        static ANCHOR: std::sync::OnceLock<Anchor> = std::sync::OnceLock::new();
        ANCHOR.get_or_init(|| Self { stamp: Raw::now(), instant: Instant::now() })
    }

    /// The standard-clock instant of `s`.
    pub(crate) fn instant(&self, s: Stamp) -> Instant {
        if s.0 >= self.stamp {
            let after = s.0.saturating_duration_since(self.stamp);
            self.instant.checked_add(after).unwrap_or(self.instant)
        } else {
            let before = self.stamp.saturating_duration_since(s.0);
            self.instant.checked_sub(before).unwrap_or(self.instant)
        }
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
        let anchor = Anchor::get();
        let (ia, ib) = (anchor.instant(a), anchor.instant(b));
        assert!(ia <= ib);
        assert!(ib.duration_since(ia) >= Duration::from_millis(4), "{:?}", ib.duration_since(ia));
        // Within a millisecond of the standard clock's own readings around them.
        let slack = Duration::from_millis(1);
        assert!(ia + slack >= before && ib <= after + slack, "{before:?} {ia:?} {ib:?} {after:?}");
        assert_eq!(anchor.instant(a), Anchor::get().instant(a), "one stamp, one instant");
    }
}
