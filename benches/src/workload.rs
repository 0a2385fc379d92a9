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

/// How keys are drawn from `0..keys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dist {
    /// Every key equally likely.
    Uniform,
    /// Zipf with exponent `theta_permille / 1000`: key rank `r` drawn with probability
    /// proportional to `1 / r^theta`; ranks are scattered over the key space by a bijective
    /// multiply so hot keys do not sit next to each other.
    Zipf {
        /// The exponent, in thousandths (990 = 0.99).
        theta_permille: u32,
    },
}

/// A command's keys: `batch` distinct keys drawn from `0..keys` by `dist`, each exclusive with
/// probability `exclusive_percent`%, otherwise shared; `big_percent`% of commands ask for
/// `big_batch` keys instead (the starvation mix). Each command holds its keys `hold_ns` (busy,
/// as a critical section that computes) and, when `wait` is set, waits with `acquire` after a
/// first refused `try_acquire` instead of retrying `try_acquire`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// Name for tables and `--workload`.
    pub name: &'static str,
    /// Size of the key space.
    pub keys: u64,
    /// Distinct keys per command.
    pub batch: usize,
    /// Percentage of keys taken exclusive.
    pub exclusive_percent: u64,
    /// How keys are drawn.
    pub dist: Dist,
    /// Keys of a big command (0: none).
    pub big_batch: usize,
    /// Percentage of commands that are big.
    pub big_percent: u64,
    /// Busy hold time per command, in nanoseconds.
    pub hold_ns: u64,
    /// Wait (`acquire`) after a refused try, rather than retrying the try.
    pub wait: bool,
}

impl Workload {
    /// Keys uniform over 1,000,000, 20% exclusive, no hold, try-and-retry.
    pub const fn uniform(batch: usize) -> Self {
        Self {
            name: "uniform",
            keys: 1_000_000,
            batch,
            exclusive_percent: 20,
            dist: Dist::Uniform,
            big_batch: 0,
            big_percent: 0,
            hold_ns: 0,
            wait: false,
        }
    }

    /// 64 hot keys, 50% exclusive, batches of 4.
    pub const fn hot() -> Self {
        Self { name: "hot", keys: 64, batch: 4, exclusive_percent: 50, ..Self::uniform(4) }
    }

    /// The same workload under another name.
    pub const fn named(self, name: &'static str) -> Self {
        Self { name, ..self }
    }

    /// The same workload holding its keys `ns` nanoseconds and waiting on conflict.
    pub const fn holding(self, ns: u64) -> Self {
        Self { hold_ns: ns, wait: true, ..self }
    }

    /// A sampler for this workload (the Zipf normalisation is computed once per process and
    /// key space, then cached).
    pub fn sampler(&self) -> Sampler {
        let zipf = match self.dist {
            Dist::Uniform => None,
            Dist::Zipf { theta_permille } => Some(Zipf::new(self.keys, f64::from(theta_permille) / 1000.0)),
        };
        Sampler { w: *self, zipf }
    }
}

/// Draws commands of one [`Workload`]; shared by the threads of a run (each has its own rng).
#[derive(Debug, Clone)]
pub struct Sampler {
    w: Workload,
    zipf: Option<Zipf>,
}

impl Sampler {
    /// The workload it draws.
    pub fn workload(&self) -> &Workload {
        &self.w
    }

    /// Replaces `out` with the next command's keys; true if it is a big command.
    #[inline]
    pub fn fill(&self, rng: &mut SplitMix64, out: &mut SmallVec<[Lock; 8]>) -> bool {
        let w = &self.w;
        let big = w.big_batch > 0 && rng.below(100) < w.big_percent;
        let n = if big { w.big_batch } else { w.batch };
        debug_assert!(n as u64 <= w.keys);
        out.clear();
        while out.len() < n {
            let key = match &self.zipf {
                None => rng.below(w.keys),
                // An odd multiplier is a bijection on u64: ranks stay distinct keys.
                Some(z) => z.rank(rng).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            };
            if out.iter().any(|l| l.key == key) {
                continue;
            }
            let exclusive = rng.below(100) < w.exclusive_percent;
            out.push(if exclusive { Lock::exclusive(key) } else { Lock::shared(key) });
        }
        big
    }
}

/// Zipf ranks by the method of Gray et al., "Quickly generating billion-record synthetic
/// databases" (SIGMOD 1994), as YCSB uses it: one uniform draw and one `powf` per rank.
#[derive(Debug, Clone, Copy)]
struct Zipf {
    n: f64,
    theta: f64,
    zetan: f64,
    alpha: f64,
    eta: f64,
}

impl Zipf {
    fn new(n: u64, theta: f64) -> Self {
        let zetan = zeta_cached(n, theta);
        let zeta2 = 1.0 + 0.5f64.powf(theta);
        let nf = n as f64;
        let eta = (1.0 - (2.0 / nf).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Self { n: nf, theta, zetan, alpha: 1.0 / (1.0 - theta), eta }
    }

    /// A rank in `0..n`, 0 the most likely.
    #[inline]
    fn rank(&self, rng: &mut SplitMix64) -> u64 {
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        let r = (self.n * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(self.n as u64 - 1)
    }
}

/// `sum over i in 1..=n of 1 / i^theta`, computed once per `(n, theta)` in this process.
fn zeta_cached(n: u64, theta: f64) -> f64 {
    use std::sync::Mutex;
    static CACHE: Mutex<Vec<(u64, u64, f64)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&(_, _, z)) = cache.iter().find(|(cn, ct, _)| *cn == n && *ct == theta.to_bits()) {
        return z;
    }
    let z = (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum();
    cache.push((n, theta.to_bits(), z));
    z
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::Access;

    #[test]
    fn batches_are_distinct_and_in_range() {
        let mut rng = SplitMix64::new(1);
        let mut out = SmallVec::new();
        let w = Workload::hot().sampler();
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

#[cfg(test)]
mod zipf_tests {
    use super::*;

    #[test]
    fn zipf_is_skewed_and_in_range() {
        let w = Workload { dist: Dist::Zipf { theta_permille: 990 }, keys: 10_000, ..Workload::uniform(1) };
        let z = Zipf::new(w.keys, 0.99);
        let mut rng = SplitMix64::new(7);
        let mut counts = vec![0u32; 10_000];
        for _ in 0..200_000 {
            counts[z.rank(&mut rng) as usize] += 1;
        }
        // Rank 0 has probability 1 / zeta(10^4, 0.99), about 10%; rank 99 about 100x less.
        assert!((16_000..24_000).contains(&counts[0]), "{}", counts[0]);
        assert!(counts[0] > 20 * counts[99], "{} {}", counts[0], counts[99]);
        let mut out = SmallVec::new();
        w.sampler().fill(&mut rng, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn starvation_mix_draws_big_batches() {
        let w = Workload { big_batch: 64, big_percent: 10, keys: 1024, ..Workload::uniform(1) };
        let s = w.sampler();
        let mut rng = SplitMix64::new(3);
        let mut out = SmallVec::new();
        let mut big = 0;
        for _ in 0..1000 {
            if s.fill(&mut rng, &mut out) {
                big += 1;
                assert_eq!(out.len(), 64);
            } else {
                assert_eq!(out.len(), 1);
            }
        }
        assert!((60..140).contains(&big), "{big}");
    }
}
