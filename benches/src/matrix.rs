//! The named workload matrix of `lockcore bench`, and the implementations it runs.

use crate::harness::Contender;
use crate::workload::{Dist, Workload};
use crate::{AtomicWords, DashCounts, DashRwLocks, Lockcore, ParkingLotGlobal, StdGlobal, TokioRwLocks};

/// A workload and the thread counts it runs at.
#[derive(Debug, Clone)]
pub struct Row {
    /// The workload (its `name` is what `--workload` selects).
    pub workload: Workload,
    /// Thread counts (16 on a 2-core machine is oversubscription, on purpose).
    pub threads: &'static [usize],
    /// One line for the help text.
    pub about: &'static str,
}

const ALL_THREADS: &[usize] = &[1, 2, 4, 16];
const CONTENDED_THREADS: &[usize] = &[2, 4, 16];
const HOLD_THREADS: &[usize] = &[2, 16];

/// The full matrix, in the order it runs. Hold times are a parameter of three rows rather than
/// a cross product with every workload.
pub fn matrix() -> Vec<Row> {
    let zipf = Workload { dist: Dist::Zipf { theta_permille: 990 }, ..Workload::uniform(8) };
    let hot_read = Workload { keys: 16, batch: 4, exclusive_percent: 0, ..Workload::hot() };
    let starvation = Workload {
        keys: 1024,
        batch: 1,
        exclusive_percent: 50,
        big_batch: 64,
        big_percent: 1,
        wait: true,
        ..Workload::uniform(1)
    };
    vec![
        Row {
            workload: Workload::uniform(1).named("uniform1"),
            threads: ALL_THREADS,
            about: "1M keys, 1 key per command, 20% exclusive",
        },
        Row {
            workload: Workload::uniform(8).named("uniform8"),
            threads: ALL_THREADS,
            about: "1M keys, 8 keys per command, 20% exclusive",
        },
        Row {
            workload: zipf.named("zipf8"),
            threads: ALL_THREADS,
            about: "1M keys drawn Zipf 0.99, 8 keys per command",
        },
        Row {
            workload: Workload::hot().named("hot4"),
            threads: ALL_THREADS,
            about: "64 hot keys, 4 per command, 50% exclusive",
        },
        Row {
            workload: hot_read.named("hotread4"),
            threads: ALL_THREADS,
            about: "16 hot keys, 4 per command, read-only",
        },
        Row {
            workload: starvation.named("starvation"),
            threads: CONTENDED_THREADS,
            about: "1024 keys, 50% exclusive, 99% 1-key and 1% 64-key commands, waiting",
        },
        Row {
            workload: Workload::uniform(8).holding(1_000).named("uniform8-hold1us"),
            threads: HOLD_THREADS,
            about: "uniform8, keys held 1 us (busy), waiting",
        },
        Row {
            workload: Workload::hot().holding(1_000).named("hot4-hold1us"),
            threads: HOLD_THREADS,
            about: "hot4, keys held 1 us, waiting",
        },
        Row {
            workload: Workload::hot().holding(50_000).named("hot4-hold50us"),
            threads: HOLD_THREADS,
            about: "hot4, keys held 50 us, waiting",
        },
    ]
}

/// Fresh instances of every implementation, lockcore first, the limit proxy last; with
/// `only`, lockcore and the named ones (`lockcore-latched`, lockcore with direct grants off,
/// runs only when named).
pub fn contenders(only: Option<&[String]>) -> Vec<Box<dyn Contender>> {
    let named = |n: &str| only.is_some_and(|o| o.iter().any(|x| x == n));
    let mut all: Vec<Box<dyn Contender>> = vec![Box::new(Lockcore::new())];
    if named(crate::adapter::LATCHED) {
        all.push(Box::new(Lockcore::latched()));
    }
    all.extend::<Vec<Box<dyn Contender>>>(vec![
        Box::new(StdGlobal::new()),
        Box::new(ParkingLotGlobal::new()),
        Box::new(DashCounts::new()),
        Box::new(DashRwLocks::new()),
        Box::new(TokioRwLocks::new()),
        Box::new(AtomicWords::new()),
    ]);
    all.into_iter().filter(|c| c.name() == "lockcore" || only.is_none_or(|o| o.iter().any(|n| n == c.name()))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{run_cell, CellConfig};
    use std::time::Duration;

    #[test]
    fn names_are_unique() {
        let m = matrix();
        for (i, r) in m.iter().enumerate() {
            assert!(m[i + 1..].iter().all(|o| o.workload.name != r.workload.name), "{}", r.workload.name);
        }
    }

    #[test]
    fn a_tiny_cell_runs_every_implementation() {
        let w = Workload::hot().holding(1_000);
        let c = CellConfig {
            threads: 2,
            reps: 2,
            run: Duration::from_millis(20),
            warmup: Duration::ZERO,
            count_allocs: false,
        };
        let mut calls = 0;
        let s = run_cell(&contenders(None), &w, c, &mut |_, _| calls += 1);
        assert_eq!(calls, 2 * 7);
        assert_eq!(s.impls.len(), 7);
        for i in &s.impls {
            assert_eq!(i.runs_cmds_per_s.len(), 2);
            assert!(i.cmds_per_s > 0.0, "{} ran nothing", i.name);
            assert!(i.p50_ns >= 1_000 || i.p50_ns > 0);
        }
        assert!(s.best_baseline().is_some());
    }

    #[test]
    fn an_open_loop_cell_meets_a_low_rate() {
        let only = ["pl-mutex+condvar".to_string()];
        let rows = crate::harness::run_open_cell(
            &contenders(Some(&only)),
            &Workload::uniform(8),
            2,
            20_000.0,
            1,
            Duration::from_millis(50),
        );
        assert_eq!(rows.len(), 2);
        for r in &rows {
            // 1,000 commands scheduled; a loaded debug build may fall a little behind.
            assert!(r.achieved_per_s > 5_000.0, "{}: {}", r.name, r.achieved_per_s);
            assert!(r.p50_ns > 0 && r.p50_ns <= r.max_ns);
        }
    }
}
