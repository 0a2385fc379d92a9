//! Uncontended costs: one thread, keys already known to the table (warm), acquire + release
//! of 1 and 8 keys, shared and exclusive, through `try_acquire` and `acquire(timeout)` (the
//! waiting path, which finds the keys free), for lockcore and every baseline; plus lockcore's
//! `acquire_async` and the tokio baseline's async path, each polled once by `pollster`.
//!
//! `cargo bench -p lockcore-benches --bench uncontended -- --warm-up-time 1 --measurement-time 2`

use criterion::{criterion_group, criterion_main, Criterion};
use lockcore::{Mode, Owner, Request};
use lockcore_benches::{Access, AtomicWords, Baseline, DashCounts, DashRwLocks, Lock, Lockcore, ParkingLotGlobal};
use lockcore_benches::{StdGlobal, TokioRwLocks};
use std::hint::black_box;
use std::time::Duration;

/// Never reached: nothing else holds the keys.
const TIMEOUT: Duration = Duration::from_secs(1);

fn keys(n: u64, access: Access) -> Vec<Lock> {
    // Spread out, so the keys land in different shards of either table.
    (0..n).map(|i| Lock { key: 1_000 + i * 7_919, access }).collect()
}

fn paths<B: Baseline>(c: &mut Criterion, b: &B) {
    let mut g = c.benchmark_group(b.name());
    for n in [1, 8] {
        for access in [Access::Shared, Access::Exclusive] {
            let locks = keys(n, access);
            // Warm: the table has seen these keys.
            let held = b.try_acquire(&locks).expect("free keys");
            b.release(&locks, held);
            let mode = if access == Access::Shared { "shared" } else { "exclusive" };
            g.bench_function(format!("try_acquire/{n}key/{mode}"), |bench| {
                bench.iter(|| {
                    let held = b.try_acquire(black_box(&locks)).expect("uncontended");
                    b.release(&locks, held);
                })
            });
            g.bench_function(format!("acquire/{n}key/{mode}"), |bench| {
                bench.iter(|| {
                    let held = b.acquire(black_box(&locks), TIMEOUT).expect("uncontended");
                    b.release(&locks, held);
                })
            });
        }
    }
    g.finish();
}

/// The async paths: lockcore's `acquire_async` and the tokio baseline's `acquire_async`.
fn async_paths(c: &mut Criterion) {
    let mut g = c.benchmark_group("async");
    let lockcore = Lockcore::new();
    let tokio = TokioRwLocks::new();
    let owner = Owner::new("bench");
    for n in [1, 8] {
        for access in [Access::Shared, Access::Exclusive] {
            let locks = keys(n, access);
            let mode = if access == Access::Shared { "shared" } else { "exclusive" };
            let m = if access == Access::Shared { Mode::SHARED } else { Mode::EXCLUSIVE };
            let request = || locks.iter().fold(Request::new(owner.clone()), |r, l| r.lock(l.key, m, None));
            drop(pollster::block_on(lockcore.table().acquire_async(request())).expect("free keys"));
            g.bench_function(format!("lockcore/acquire_async/{n}key/{mode}"), |bench| {
                bench.iter(|| {
                    drop(pollster::block_on(lockcore.table().acquire_async(black_box(request()))).expect("uncontended"))
                })
            });
            drop(pollster::block_on(tokio.acquire_async(&locks)));
            g.bench_function(format!("tokio-rwlock/acquire_async/{n}key/{mode}"), |bench| {
                bench.iter(|| drop(pollster::block_on(tokio.acquire_async(black_box(&locks)))))
            });
        }
    }
    g.finish();
}

fn uncontended(c: &mut Criterion) {
    paths(c, &Lockcore::new());
    paths(c, &StdGlobal::new());
    paths(c, &ParkingLotGlobal::new());
    paths(c, &DashCounts::new());
    paths(c, &DashRwLocks::new());
    paths(c, &TokioRwLocks::new());
    paths(c, &AtomicWords::new());
    async_paths(c);
}

criterion_group!(benches, uncontended);
criterion_main!(benches);
