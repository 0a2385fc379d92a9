//! The floor under an uncontended acquire + release: what the primitives a lock table that keeps
//! holder records must use cost on this machine, one thread, each alone.
//!
//! A global `Mutex<HashMap<key, count>>` pays, per 1-key acquire + release, two lock/unlock pairs
//! and two hash probes, and records nothing about the holder. A table that names every holder in
//! a conflict (owner, since) must also clone the owner into the record and read a clock; these
//! benches put a number on each piece, so `docs/benchmarks.md` can say which targets are below
//! the sum of what is required.
//!
//! `cargo bench -p lockcore-benches --bench floor -- --warm-up-time 0.5 --measurement-time 1`

use criterion::{criterion_group, criterion_main, Criterion};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

fn floor(c: &mut Criterion) {
    let mut g = c.benchmark_group("floor");
    let m = parking_lot::Mutex::new(0u64);
    g.bench_function("parking_lot lock+unlock", |b| b.iter(|| *black_box(&m).lock() += 1));
    let owner: Arc<str> = Arc::from("AddVmFromTemplate-7");
    g.bench_function("Arc<str> clone+drop (an owner in a holder record)", |b| {
        b.iter(|| drop(black_box(Arc::clone(black_box(&owner)))))
    });
    g.bench_function("std Instant::now", |b| b.iter(|| black_box(std::time::Instant::now())));
    let clock = quanta::Clock::new();
    g.bench_function("quanta Clock::raw (rdtsc)", |b| b.iter(|| black_box(clock.raw())));
    let mut map: HashMap<u64, u32, foldhash::fast::RandomState> = HashMap::default();
    g.bench_function("HashMap insert+remove of one u64 key", |b| {
        b.iter(|| {
            map.insert(black_box(42), 1);
            black_box(map.remove(&42));
        })
    });
    g.finish();
}

criterion_group!(benches, floor);
criterion_main!(benches);
