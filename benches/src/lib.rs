//! Benchmark workloads and baselines: lockcore against the designs users would pick instead.
//!
//! Every implementation sits behind one small trait, [`Baseline`]: take a set of `u64` keys,
//! each shared or exclusive, all or nothing, either at once ([`Baseline::try_acquire`]) or
//! waiting up to a timeout ([`Baseline::acquire`]), and give them back
//! ([`Baseline::release`]). The micro-benchmarks (`benches/uncontended.rs`) and the
//! contention harness (`src/bin/contention.rs`, binary `lockcore-contention`) are written
//! once against it.
//!
//! | type | design |
//! | --- | --- |
//! | [`StdGlobal`] | `std::sync::Mutex<HashMap<u64, Entry>>` + `Condvar`, wake everyone on release (oVirt's `InMemoryLockManager`) |
//! | [`ParkingLotGlobal`] | the same on `parking_lot::Mutex` + `parking_lot::Condvar` |
//! | [`DashCounts`] | `DashMap<u64, Entry>`, keys taken one by one in sorted order, rolled back on conflict; waiting = retry |
//! | [`DashRwLocks`] | `DashMap<u64, Arc<parking_lot::RwLock<()>>>`, locked in sorted key order |
//! | [`TokioRwLocks`] | `DashMap<u64, Arc<tokio::sync::RwLock<()>>>`, locked in sorted key order (the async path) |
//! | [`AtomicWords`] | a limit, not a lock table: 4096 atomic words, keys hashed onto them |
//! | [`Lockcore`] | `lockcore::LockTable<u64>` |
//!
//! The [`harness`] runs them in closed loops over the named [`matrix`] of workloads (what
//! `lockcore bench` drives), interleaved, and summarises medians, latency percentiles,
//! conflicts, fairness and allocations per command ([`CountingAlloc`]).
//!
//! All hash maps use `foldhash` (as lockcore does), so the comparison is of designs, not of
//! hash functions.
// Only `alloc` (the counting allocator) has unsafe code, each block with its SAFETY comment.
#![deny(unsafe_code)]

mod adapter;
mod alloc;
mod atomic_words;
mod baseline;
mod dash;
mod global;
pub mod harness;
pub mod matrix;
mod tokio_rw;
pub mod workload;

pub use adapter::Lockcore;
pub use alloc::{counting, thread_allocations, CountingAlloc};
pub use atomic_words::{AtomicWords, WORDS};
pub use baseline::{Access, Backoff, Baseline, Lock};
pub use dash::{DashCounts, DashRwLocks, RwHeld};
pub use global::{ParkingLotGlobal, StdGlobal};
pub use tokio_rw::{block_on_until, TokioHeld, TokioRwLocks};
