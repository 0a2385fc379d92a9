//! Uncontended costs: one thread, keys already known to the table (warm), acquire + release
//! of 1 and 8 keys, shared and exclusive, through `try_acquire` and `acquire(timeout)`, for
//! lockcore and for the global `parking_lot` mutex + condvar baseline.
//!
//! `cargo bench -p lockcore-benches --bench uncontended -- --warm-up-time 1 --measurement-time 2`

use criterion::{criterion_group, criterion_main, Criterion};
use lockcore_benches::{Access, Baseline, Lock, Lockcore, ParkingLotGlobal};
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

fn uncontended(c: &mut Criterion) {
    paths(c, &Lockcore::new());
    paths(c, &ParkingLotGlobal::new());
}

criterion_group!(benches, uncontended);
criterion_main!(benches);
