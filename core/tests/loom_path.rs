#![cfg(loom)]
//! Loom model checks of path locks on the real table: a subtree lock racing a lock below it, and
//! sibling locks racing on their common ancestor. One invariant per test, two threads.
//!
//! The conventions are those of `tests/loom.rs`: one shard (the shard of a key must not depend
//! on a randomly seeded hasher between replays), blocking `acquire` with a deadline that loom
//! ignores (a lost wake-up or a cycle shows up as a loom deadlock), and each test asserts that
//! some execution reached the case it is about. Run with `ci/loom.sh`, or:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target/loom \
//!     cargo test -p lockcore --release --test loom_path
//! ```

use lockcore::{PathKey, PathLocks, PathRequest};
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::thread;
use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Long enough never to expire; under loom deadlines are ignored anyway.
const FOREVER: Duration = Duration::from_secs(3600);

/// Runs `f` under `loom::model`, prints the number of executions, and fails unless at least one
/// execution returned true (reached the case under test).
fn check(name: &str, f: impl Fn() -> bool + Send + Sync + 'static) {
    let runs = Arc::new(StdAtomicUsize::new(0));
    let reached = Arc::new(StdAtomicUsize::new(0));
    let (runs2, reached2) = (Arc::clone(&runs), Arc::clone(&reached));
    let start = Instant::now();
    loom::model(move || {
        // Relaxed (both): counts read after the model has finished.
        runs2.fetch_add(1, StdOrdering::Relaxed);
        if f() {
            reached2.fetch_add(1, StdOrdering::Relaxed);
        }
    });
    let (n, r) = (runs.load(StdOrdering::Relaxed), reached.load(StdOrdering::Relaxed));
    println!("loom {name}: {n} executions ({r} reach the case) in {:.2?}", start.elapsed());
    assert!(r > 0, "{name}: no execution reached the case under test");
}

fn locks() -> Arc<PathLocks> {
    Arc::new(PathLocks::builder().shards(1).build())
}

fn path(s: &str) -> PathKey {
    PathKey::parse(s).expect("a valid path")
}

/// Writers inside one subtree, counted outside the table: entering asserts that nobody else is
/// in. SeqCst read-modify-writes on one location, so the check is exact.
struct Occupancy(AtomicUsize);

impl Occupancy {
    fn enter(&self, who: &str) {
        let before = self.0.fetch_add(1, SeqCst);
        assert_eq!(before, 0, "{who} was granted while an overlapping subtree was held");
    }

    fn leave(&self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// An exclusive lock on the anchor `/a` and an exclusive lock on `/a/b`, both blocking: they
/// never hold at once (the subtree lock meets the descendant's intention lock on `/a`), and
/// both finish (no lost wake-up between them).
///
/// Catches `no_intention` (with no intention lock on `/a` the two share no key and hold at once).
#[test]
fn subtree_lock_races_descendant_lock() {
    check("subtree_lock_races_descendant_lock", || {
        let l = locks();
        let inside = Arc::new(Occupancy(AtomicUsize::new(0)));
        let spawn = |owner: &'static str, p: &'static str| {
            let (l, inside) = (Arc::clone(&l), Arc::clone(&inside));
            thread::spawn(move || {
                let set = l.acquire(PathRequest::new(owner).exclusive(path(p)), FOREVER).unwrap();
                inside.enter(owner);
                inside.leave();
                drop(set);
            })
        };
        let anchor = spawn("anchor", "/a");
        let fragment = spawn("fragment", "/a/b");
        anchor.join().unwrap();
        fragment.join().unwrap();
        let snap = l.snapshot();
        assert!(snap.held.is_empty() && snap.waiting.is_empty(), "left behind: {snap:?}");
        l.table().metrics().waits > 0 // one of them queued behind the other
    });
}

/// Two exclusive locks on siblings `/a/b` and `/a/c`, taken with `try_acquire` at the same
/// time: both are granted in every interleaving. Their intention locks on `/a` race on one
/// latch, and `try_acquire` must neither refuse because of the other's half-made grant nor
/// take the sibling's IX for a conflict.
#[test]
fn sibling_locks_never_refuse_each_other() {
    check("sibling_locks_never_refuse_each_other", || {
        let l = locks();
        let inside = Arc::new(AtomicUsize::new(0));
        let spawn = |owner: &'static str, p: &'static str| {
            let (l, inside) = (Arc::clone(&l), Arc::clone(&inside));
            thread::spawn(move || {
                let set = l.try_acquire(PathRequest::new(owner).exclusive(path(p)));
                let granted = set.as_ref().map(|s| s.len()).map_err(|e| e.to_string());
                assert_eq!(granted, Ok(2), "{owner}");
                // Whether the sibling held its lock at the same time as this one.
                let together = inside.fetch_add(1, SeqCst) == 1;
                inside.fetch_sub(1, SeqCst);
                together
            })
        };
        let b = spawn("b", "/a/b");
        let c = spawn("c", "/a/c");
        let together = b.join().unwrap() | c.join().unwrap();
        // Reached when both held their locks (and IX on /a) at the same time.
        together
    });
}

/// A shared lock on `/a` held while a writer of `/a/b/c` waits; the reader's release wakes the
/// writer (a lost wake-up is a loom deadlock) and the writer then holds IX on both ancestors.
#[test]
fn subtree_release_wakes_descendant_waiter() {
    check("subtree_release_wakes_descendant_waiter", || {
        let l = locks();
        let reader = l.try_acquire(PathRequest::new("reader").shared(path("/a"))).unwrap();
        let writer = {
            let l = Arc::clone(&l);
            thread::spawn(move || {
                let set = l.acquire(PathRequest::new("writer").exclusive(path("/a/b/c")), FOREVER).unwrap();
                assert_eq!(set.len(), 3);
            })
        };
        drop(reader);
        writer.join().unwrap();
        l.table().metrics().waits > 0
    });
}
