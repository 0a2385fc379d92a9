//! Closed-loop workloads: which keys a command asks for, and in which mode.

use crate::baseline::Lock;
use smallvec::SmallVec;

/// SplitMix64 (Steele, Lea, Flood 2014): one add and three xor-shift-multiplies per number,
/// good enough to pick keys and cheap enough not to show in the measurement.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-40 for our `n`).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// A command's keys: `batch` distinct keys drawn uniformly from `0..keys`, each exclusive
/// with probability `exclusive_percent`%, otherwise shared. Hold time is zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// Name for tables.
    pub name: &'static str,
    /// Size of the key space.
    pub keys: u64,
    /// Distinct keys per command.
    pub batch: usize,
    /// Percentage of keys taken exclusive.
    pub exclusive_percent: u64,
}

impl Workload {
    /// Keys uniform over 1,000,000, 20% exclusive.
    pub const fn uniform(batch: usize) -> Self {
        Self { name: "uniform", keys: 1_000_000, batch, exclusive_percent: 20 }
    }

    /// 64 hot keys, 50% exclusive, batches of 4.
    pub const fn hot() -> Self {
        Self { name: "hot", keys: 64, batch: 4, exclusive_percent: 50 }
    }

    /// Replaces `out` with the next command's keys.
    #[inline]
    pub fn fill(&self, rng: &mut SplitMix64, out: &mut SmallVec<[Lock; 8]>) {
        debug_assert!(self.batch as u64 <= self.keys);
        out.clear();
        while out.len() < self.batch {
            let key = rng.below(self.keys);
            if out.iter().any(|l| l.key == key) {
                continue;
            }
            let exclusive = rng.below(100) < self.exclusive_percent;
            out.push(if exclusive { Lock::exclusive(key) } else { Lock::shared(key) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::Access;

    #[test]
    fn batches_are_distinct_and_in_range() {
        let mut rng = SplitMix64::new(1);
        let mut out = SmallVec::new();
        let w = Workload::hot();
        let mut exclusive = 0;
        for _ in 0..10_000 {
            w.fill(&mut rng, &mut out);
            assert_eq!(out.len(), 4);
            assert!(out.iter().all(|l| l.key < 64));
            for (i, a) in out.iter().enumerate() {
                assert!(out[i + 1..].iter().all(|b| b.key != a.key));
            }
            exclusive += out.iter().filter(|l| l.access == Access::Exclusive).count();
        }
        let share = exclusive as f64 / 40_000.0;
        assert!((0.47..0.53).contains(&share), "{share}");
    }
}
