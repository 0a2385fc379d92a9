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
//! | [`AtomicWords`] | a limit, not a lock table: 4096 atomic words, keys hashed onto them |
//! | [`Lockcore`] | `lockcore::LockTable<u64>` |
//!
//! All hash maps use `foldhash` (as lockcore does), so the comparison is of designs, not of
//! hash functions.
#![forbid(unsafe_code)]

mod adapter;
mod atomic_words;
mod baseline;
mod dash;
mod global;
pub mod workload;

pub use adapter::Lockcore;
pub use atomic_words::{AtomicWords, WORDS};
pub use baseline::{Access, Backoff, Baseline, Lock};
pub use dash::{DashCounts, DashRwLocks, RwHeld};
pub use global::{ParkingLotGlobal, StdGlobal};
