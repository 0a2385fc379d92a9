//! A limit, not a lock table: how fast can anything take a batch of reader/writer locks?
//!
//! A fixed array of [`WORDS`] atomic words; a key locks the word its hash lands on, so
//! unrelated keys that share a word conflict (falsely), and neighbouring words share cache
//! lines. Each word holds a reader count or the writer bit, changed by compare-and-swap; a
//! batch takes its words in index order and gives them back on a conflict. No queue, no
//! fairness, no introspection, no per-key state.

use crate::baseline::{Access, Backoff, Baseline, Lock};
use smallvec::SmallVec;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Number of lock words.
pub const WORDS: usize = 4096;
/// Set while a writer holds the word; the readers count is then zero.
const WRITER: u64 = 1 << 63;

/// 4096 reader/writer words, keys hashed onto them.
pub struct AtomicWords {
    words: Box<[AtomicU64]>,
}

impl Default for AtomicWords {
    fn default() -> Self {
        Self::new()
    }
}

/// The words of a grant, each with the strongest access asked of it.
pub type Words = SmallVec<[(u16, Access); 8]>;

impl AtomicWords {
    /// All words free.
    pub fn new() -> Self {
        Self { words: (0..WORDS).map(|_| AtomicU64::new(0)).collect() }
    }

    /// Fibonacci hashing: the top 12 bits of `key * 2^64/phi`.
    #[inline]
    fn word_of(key: u64) -> u16 {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - WORDS.trailing_zeros())) as u16
    }

    /// The distinct words of `locks`, sorted, exclusive if any key on the word is.
    fn words_of(locks: &[Lock]) -> Words {
        let mut w: Words = locks.iter().map(|l| (Self::word_of(l.key), l.access)).collect();
        w.sort_unstable_by_key(|&(i, _)| i);
        w.dedup_by(|later, kept| {
            if later.0 != kept.0 {
                return false;
            }
            if later.1 == Access::Exclusive {
                kept.1 = Access::Exclusive;
            }
            true
        });
        w
    }

    fn take(&self, (i, access): (u16, Access)) -> bool {
        let w = &self.words[usize::from(i)];
        match access {
            // Acquire: pairs with the Release in `give_back`, so what the last holder wrote
            // under the lock is visible to the next one.
            Access::Exclusive => w.compare_exchange(0, WRITER, Ordering::Acquire, Ordering::Relaxed).is_ok(),
            Access::Shared => {
                // Relaxed: only a first guess for the CAS, which checks it.
                let mut cur = w.load(Ordering::Relaxed);
                loop {
                    if cur & WRITER != 0 {
                        return false;
                    }
                    // Acquire: as above; Relaxed on failure, the value is only re-examined.
                    match w.compare_exchange_weak(cur, cur + 1, Ordering::Acquire, Ordering::Relaxed) {
                        Ok(_) => return true,
                        Err(now) => cur = now,
                    }
                }
            }
        }
    }

    fn give_back(&self, (i, access): (u16, Access)) {
        let w = &self.words[usize::from(i)];
        // Release: pairs with the Acquire in `take`.
        match access {
            Access::Exclusive => w.store(0, Ordering::Release),
            Access::Shared => {
                w.fetch_sub(1, Ordering::Release);
            }
        }
    }

    fn try_words(&self, words: &Words) -> bool {
        for (n, &w) in words.iter().enumerate() {
            if !self.take(w) {
                for &taken in &words[..n] {
                    self.give_back(taken);
                }
                return false;
            }
        }
        true
    }
}

impl Baseline for AtomicWords {
    type Held<'a> = Words;

    fn name(&self) -> &'static str {
        "atomic-words(limit)"
    }

    fn try_acquire(&self, locks: &[Lock]) -> Option<Words> {
        let words = Self::words_of(locks);
        self.try_words(&words).then_some(words)
    }

    fn acquire(&self, locks: &[Lock], timeout: Duration) -> Option<Words> {
        let words = Self::words_of(locks);
        if self.try_words(&words) {
            return Some(words);
        }
        let deadline = Instant::now() + timeout;
        let mut backoff = Backoff::new();
        loop {
            backoff.snooze();
            if self.try_words(&words) {
                return Some(words);
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    fn release(&self, _: &[Lock], held: Words) {
        for w in held {
            self.give_back(w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::tests::{check_exclusion, check_semantics};

    #[test]
    fn atomic_words_semantics() {
        let words: Vec<_> = (1..=3).map(AtomicWords::word_of).collect();
        assert!(words[0] != words[1] && words[1] != words[2] && words[0] != words[2]);
        check_semantics(&AtomicWords::new());
    }

    #[test]
    fn keys_on_one_word_merge_to_the_strongest() {
        // Find two keys on the same word.
        let k0 = 7;
        let k1 = (8..).find(|&k| AtomicWords::word_of(k) == AtomicWords::word_of(k0)).unwrap();
        let w = AtomicWords::words_of(&[Lock::shared(k0), Lock::exclusive(k1)]);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].1, Access::Exclusive);
        let t = AtomicWords::new();
        let h = t.try_acquire(&[Lock::shared(k0), Lock::exclusive(k1)]).expect("one word, taken once");
        t.release(&[], h);
        assert!(t.words.iter().all(|w| w.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn atomicwords_exclusion() {
        check_exclusion(&AtomicWords::new());
    }
}
