//! `lockcore-opcount`: a fixed number of warm, uncontended acquire+release operations on one
//! thread, for instruction counting under callgrind (repeatable whatever the machine's load).
//!
//! The request is built by the caller each time, as an engine would: an `Owner` clone and one
//! builder call per key; keys alternate exclusive and shared. Setup (making the table, warming
//! the keys) is the same for any operation count, so the cost of one operation is the
//! difference between two runs divided by the difference in counts:
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/lockcore-opcount try 1 100000
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/lockcore-opcount try 1 200000
//! ```
//!
//! (instructions of the second minus the first, over 100,000). `ci/opcount.sh` does exactly that.
//!
//! Usage: `lockcore-opcount try|acquire|global|uniform KEYS OPS`; `global` runs the parking_lot
//! `Mutex<HashMap>` baseline instead of lockcore; `uniform` runs `try_acquire` on the contention
//! harness's uniform workload (KEYS distinct keys per command out of 1,000,000, 20% exclusive),
//! where most keys are new to the table.

use lockcore::{LockTable, Mode, Owner, Request};
use lockcore_benches::workload::{SplitMix64, Workload};
use lockcore_benches::{Access, Baseline, Lock, ParkingLotGlobal};
use smallvec::SmallVec;
use std::hint::black_box;
use std::process::ExitCode;
use std::time::Duration;

fn key(i: u64) -> u64 {
    // Spread out, so the keys land in different shards.
    1_000 + i * 7_919
}

fn request(owner: &Owner, keys: u64) -> Request<u64> {
    let mut req = Request::new(owner.clone());
    for i in 0..keys {
        req.push(key(i), if i % 2 == 0 { Mode::EXCLUSIVE } else { Mode::SHARED }, None);
    }
    req
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [how, keys, ops] => keys.parse::<u64>().ok().zip(ops.parse::<u64>().ok()).map(|(k, o)| (how.as_str(), k, o)),
        _ => None,
    };
    let Some((how, keys, ops)) =
        parsed.filter(|(h, k, _)| ["try", "acquire", "global", "uniform"].contains(h) && *k >= 1)
    else {
        eprintln!("usage: lockcore-opcount try|acquire|global|uniform KEYS OPS");
        return ExitCode::from(2);
    };
    let mut sum = 0u64;
    if how == "global" {
        let g = ParkingLotGlobal::new();
        let locks: Vec<Lock> =
            (0..keys).map(|i| if i % 2 == 0 { Lock::exclusive(key(i)) } else { Lock::shared(key(i)) }).collect();
        for _ in 0..ops + 10 {
            g.try_acquire(black_box(&locks)).expect("uncontended");
            g.release(&locks, ());
            sum += 1;
        }
    } else if how == "uniform" {
        let table: LockTable<u64> = LockTable::new();
        let owner = Owner::new("opcount");
        let w = Workload::uniform(keys as usize).sampler();
        let mut rng = SplitMix64::new(7);
        let mut batch: SmallVec<[Lock; 8]> = SmallVec::new();
        for _ in 0..ops {
            w.fill(&mut rng, &mut batch);
            let mut req = Request::new(owner.clone());
            for l in &batch {
                req.push(l.key, if l.access == Access::Shared { Mode::SHARED } else { Mode::EXCLUSIVE }, None);
            }
            let set = table.try_acquire(req).expect("uncontended");
            sum += set.len() as u64;
        }
    } else {
        let table: LockTable<u64> = LockTable::new();
        let owner = Owner::new("opcount");
        // Warm: the keys' slots exist and their holder lists have capacity.
        for _ in 0..10 {
            drop(table.try_acquire(request(&owner, keys)).expect("uncontended"));
        }
        for _ in 0..ops {
            let req = black_box(request(&owner, keys));
            let set = if how == "try" { table.try_acquire(req) } else { table.acquire(req, Duration::from_secs(1)) }
                .expect("uncontended");
            sum += set.len() as u64;
            drop(set);
        }
    }
    println!("{sum}");
    ExitCode::SUCCESS
}
