//! Path locks: acquire + release of a depth-4 path lock (which also takes intention locks on
//! its three ancestors) against a plain one-key lock, parsing cost, and sibling parallelism at
//! two threads.
//!
//! `cargo bench -p lockcore-benches --bench path -- --warm-up-time 1 --measurement-time 2`
//!
//! Results are recorded in `docs/paths.md`.

use criterion::{criterion_group, criterion_main, Criterion};
use lockcore::{LockTable, ModeTable, PathKey, PathLocks, PathRequest, Request};
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

const DEPTH4: &str = "/dataspace/anchor/parent[@id='1']/child";

fn path(s: &str) -> PathKey {
    PathKey::parse(s).expect("a valid path")
}

/// One thread, nothing else holding: the cost of the protocol itself.
fn single(c: &mut Criterion) {
    let mut g = c.benchmark_group("path/uncontended");
    let plain = LockTable::<&'static str>::new();
    g.bench_function("plain_key/exclusive", |b| {
        b.iter(|| drop(plain.try_acquire(Request::new("o").exclusive(black_box(DEPTH4))).expect("free")))
    });
    // The same key type as path locks, but one key and no ancestors: separates the cost of the
    // hierarchy from the cost of hashing a path.
    let pathkey_table = LockTable::<PathKey>::with_modes(ModeTable::multi_granularity());
    let k = path(DEPTH4);
    g.bench_function("pathkey_as_plain_key/exclusive", |b| {
        b.iter(|| drop(pathkey_table.try_acquire(Request::new("o").exclusive(black_box(&k).clone())).expect("free")))
    });
    let locks = PathLocks::new();
    for (name, exclusive) in [("exclusive", true), ("shared", false)] {
        g.bench_function(format!("path_depth4/{name}"), |b| {
            b.iter(|| {
                let p = black_box(&k).clone();
                let req = if exclusive { PathRequest::new("o").exclusive(p) } else { PathRequest::new("o").shared(p) };
                drop(locks.try_acquire(req).expect("free"))
            })
        });
    }
    g.bench_function("parse_depth4", |b| b.iter(|| PathKey::parse(black_box(DEPTH4)).expect("valid")));
    g.finish();
}

/// Runs `per_thread` on each of `paths.len()` threads, `iters` acquire+release each, all
/// started together, and returns the wall time of the slowest.
fn run_threads(locks: &PathLocks, paths: &[PathKey], iters: u64) -> Duration {
    let barrier = Barrier::new(paths.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .iter()
            .map(|p| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        let req = PathRequest::new("w").exclusive(p.clone());
                        drop(locks.acquire(req, Duration::from_secs(10)).expect("granted"));
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("bench thread")).max().unwrap_or_default()
    })
}

/// Two threads in a closed loop, each locking a path exclusively and releasing it. Siblings
/// share their three ancestors (IX, compatible) and should run in parallel; the same path
/// serializes them. One thread doing both threads' work is the baseline: with perfect
/// parallelism, siblings take half its time per iteration.
fn siblings(c: &mut Criterion) {
    let mut g = c.benchmark_group("path/2threads");
    let locks = PathLocks::new();
    let a = path("/dataspace/anchor/parent[@id='1']/child");
    let b = path("/dataspace/anchor/parent[@id='2']/child");
    // Per iteration: two acquire+release, one per thread (or both on one thread).
    g.bench_function("siblings", |bench| {
        bench.iter_custom(|iters| run_threads(&locks, &[a.clone(), b.clone()], iters))
    });
    g.bench_function("same_path", |bench| {
        bench.iter_custom(|iters| run_threads(&locks, &[a.clone(), a.clone()], iters))
    });
    g.bench_function("one_thread_both", |bench| {
        bench.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                for p in [&a, &b] {
                    let req = PathRequest::new("w").exclusive(p.clone());
                    drop(locks.acquire(req, Duration::from_secs(10)).expect("granted"));
                }
            }
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, single, siblings);
criterion_main!(benches);
