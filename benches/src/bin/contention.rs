//! `lockcore-contention`: a closed-loop contention harness, lockcore against the baselines.
//!
//! Each thread runs commands back to back: draw a batch of keys, `try_acquire` it, retrying
//! on conflict (spin, then yield; retries are counted), release at once (hold time 0). Every
//! implementation does exactly this, so all do the same work. Each cell (workload x thread
//! count) runs every implementation for `--seconds`, interleaved (A B C .. A B C .., the
//! starting implementation rotated each repetition) for `--reps` repetitions, after one
//! uncounted warm-up run each; the table reports the median commands/s, lockcore's ratio to
//! each implementation (ratio of medians) and the spread of every implementation's runs.
//!
//! The last line is `ratio_vs_best_baseline=X.XX`: lockcore's median over the best correct
//! baseline's median (the atomic-words limit proxy is not a correct lock table and is
//! excluded; its ratio is printed on the line before) on uniform batch-8 at 2 threads.
//!
//! `cargo run --release -p lockcore-benches --bin lockcore-contention -- --seconds 1`

use lockcore_benches::workload::{SplitMix64, Workload};
use lockcore_benches::{AtomicWords, Backoff, Baseline, DashCounts, DashRwLocks, Lock, Lockcore};
use lockcore_benches::{ParkingLotGlobal, StdGlobal};
use smallvec::SmallVec;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: lockcore-contention [--seconds S] [--reps N] [--warmup S] [--threads 1,2]
  --seconds S   length of each measured run (default 1)
  --reps N      measured runs per implementation and cell, at least 5 (default 5)
  --warmup S    uncounted run per implementation and cell before the first (default 0.25)
  --threads L   comma-separated thread counts (default 1,2)
  --workloads L comma-separated subset of uniform1,uniform8,hot (default all)
  --impls L     comma-separated implementation names to run besides lockcore (default all)";

struct Args {
    seconds: f64,
    reps: usize,
    warmup: f64,
    threads: Vec<usize>,
    workloads: Vec<String>,
    impls: Option<Vec<String>>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { seconds: 1.0, reps: 5, warmup: 0.25, threads: vec![1, 2], workloads: vec![], impls: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        if !["--seconds", "--reps", "--warmup", "--threads", "--workloads", "--impls"].contains(&flag.as_str()) {
            return Err(format!("unknown argument {flag}"));
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--seconds" => a.seconds = value.parse().map_err(|e| bad(&e))?,
            "--reps" => a.reps = value.parse().map_err(|e| bad(&e))?,
            "--warmup" => a.warmup = value.parse().map_err(|e| bad(&e))?,
            "--threads" => {
                a.threads = value.split(',').map(|t| t.trim().parse()).collect::<Result<_, _>>().map_err(|e| bad(&e))?
            }
            "--workloads" => a.workloads = value.split(',').map(|w| w.trim().to_string()).collect(),
            "--impls" => a.impls = Some(value.split(',').map(|w| w.trim().to_string()).collect()),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if !(a.seconds > 0.0 && a.warmup >= 0.0) || a.reps < 5 || a.threads.contains(&0) || a.threads.is_empty() {
        return Err("need --seconds > 0, --warmup >= 0, --reps >= 5, thread counts >= 1".into());
    }
    Ok(a)
}

/// One measured run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    cmds_per_s: f64,
    retries_per_cmd: f64,
}

/// An implementation, type-erased for the harness.
trait Contender {
    fn name(&self) -> &'static str;
    fn run(&self, w: Workload, threads: usize, dur: Duration, seed: u64) -> Sample;
}

impl<B: Baseline> Contender for B {
    fn name(&self) -> &'static str {
        Baseline::name(self)
    }

    fn run(&self, w: Workload, threads: usize, dur: Duration, seed: u64) -> Sample {
        let stop = AtomicBool::new(false);
        let start = Barrier::new(threads + 1);
        thread::scope(|s| {
            let workers: Vec<_> = (0..threads as u64)
                .map(|t| {
                    let (stop, start) = (&stop, &start);
                    let seed = seed ^ t.wrapping_mul(0xD1B5_4A32_D192_ED03);
                    s.spawn(move || closed_loop(self, w, seed, stop, start))
                })
                .collect();
            start.wait();
            let t0 = Instant::now();
            thread::sleep(dur);
            // Relaxed: only asks the workers to stop; `join` orders their results.
            stop.store(true, Ordering::Relaxed);
            let elapsed = t0.elapsed().as_secs_f64();
            let (cmds, retries) = workers
                .into_iter()
                .map(|h| h.join().expect("worker panicked"))
                .fold((0, 0), |(c, r), (c1, r1)| (c + c1, r + r1));
            Sample { cmds_per_s: cmds as f64 / elapsed, retries_per_cmd: retries as f64 / cmds.max(1) as f64 }
        })
    }
}

/// One thread's commands until `stop`: returns (commands done, retries).
fn closed_loop<B: Baseline>(imp: &B, w: Workload, seed: u64, stop: &AtomicBool, start: &Barrier) -> (u64, u64) {
    let mut rng = SplitMix64::new(seed);
    let w = w.sampler();
    let mut batch: SmallVec<[Lock; 8]> = SmallVec::new();
    let (mut cmds, mut retries) = (0u64, 0u64);
    start.wait();
    // Relaxed: a flag polled for exit; nothing is published through it.
    'run: while !stop.load(Ordering::Relaxed) {
        w.fill(&mut rng, &mut batch);
        let mut backoff = Backoff::new();
        loop {
            if let Some(held) = imp.try_acquire(&batch) {
                imp.release(&batch, held);
                break;
            }
            retries += 1;
            if stop.load(Ordering::Relaxed) {
                break 'run;
            }
            backoff.snooze();
        }
        cmds += 1;
    }
    (cmds, retries)
}

/// Fresh instances of every implementation (or of lockcore and those in `only`), lockcore
/// first. The limit proxy is last.
fn contenders(only: Option<&[String]>) -> Vec<Box<dyn Contender>> {
    let all: Vec<Box<dyn Contender>> = vec![
        Box::new(Lockcore::new()),
        Box::new(StdGlobal::new()),
        Box::new(ParkingLotGlobal::new()),
        Box::new(DashCounts::new()),
        Box::new(DashRwLocks::new()),
        Box::new(AtomicWords::new()),
    ];
    all.into_iter().filter(|c| c.name() == "lockcore" || only.is_none_or(|o| o.iter().any(|n| n == c.name()))).collect()
}

/// Not a correct lock table: left out of "best baseline".
const LIMIT_PROXY: &str = "atomic-words(limit)";

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

/// Two decimals, or "-" when a side was not run.
fn ratio(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}")
    } else {
        "-".into()
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Medians of one cell, by implementation name.
struct CellResult {
    label: String,
    medians: Vec<(&'static str, f64)>,
}

impl CellResult {
    fn median_of(&self, name: &str) -> f64 {
        self.medians.iter().find(|(n, _)| *n == name).map_or(f64::NAN, |m| m.1)
    }

    /// The fastest correct baseline and its median.
    fn best_baseline(&self) -> (&'static str, f64) {
        self.medians
            .iter()
            .filter(|(n, _)| *n != "lockcore" && *n != LIMIT_PROXY)
            .copied()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or(("none", f64::NAN))
    }
}

fn run_cell(a: &Args, w: Workload, threads: usize) -> CellResult {
    let label = format!("{} batch={} threads={}", w.name, w.batch, threads);
    let imps = contenders(a.impls.as_deref());
    let n = imps.len();
    let dur = Duration::from_secs_f64(a.seconds);
    if a.warmup > 0.0 {
        for imp in &imps {
            imp.run(w, threads, Duration::from_secs_f64(a.warmup), 0x5EED);
        }
    }
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); n];
    for rep in 0..a.reps {
        for k in 0..n {
            let i = (k + rep) % n;
            samples[i].push(imps[i].run(w, threads, dur, 0xC0FFEE ^ ((rep as u64) << 32)));
        }
    }
    let rates: Vec<Vec<f64>> = samples.iter().map(|s| s.iter().map(|x| x.cmds_per_s).collect()).collect();
    let medians: Vec<(&'static str, f64)> = imps.iter().zip(&rates).map(|(i, r)| (i.name(), median(r))).collect();
    let lockcore = medians[0].1;
    println!();
    println!("== {label}: {} runs x {:.2} s, interleaved; loadavg after: {} ==", a.reps, a.seconds, loadavg());
    println!(
        "{:<21} {:>12} {:>10} {:>10} {:>8} {:>12} {:>14}",
        "implementation", "median Mc/s", "min", "max", "spread", "retries/cmd", "lockcore/impl"
    );
    for (i, imp) in imps.iter().enumerate() {
        let (lo, hi) = min_max(&rates[i]);
        let m = medians[i].1;
        let retries = median(&samples[i].iter().map(|x| x.retries_per_cmd).collect::<Vec<_>>());
        println!(
            "{:<21} {:>12.3} {:>10.3} {:>10.3} {:>7.1}% {:>12.4} {:>14.2}",
            imp.name(),
            m / 1e6,
            lo / 1e6,
            hi / 1e6,
            (hi - lo) / m * 100.0,
            retries,
            lockcore / m
        );
    }
    CellResult { label, medians }
}

fn main() -> ExitCode {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let cpus = thread::available_parallelism().map_or(0, usize::from);
    println!(
        "lockcore-contention: {} s per run, {} reps, warm-up {} s, threads {:?}, {cpus} CPUs, loadavg at start: {}",
        a.seconds,
        a.reps,
        a.warmup,
        a.threads,
        loadavg()
    );
    println!("closed loop: try_acquire, retry on conflict (spin then yield), release at once (hold 0)");
    let workloads = [("uniform1", Workload::uniform(1)), ("uniform8", Workload::uniform(8)), ("hot", Workload::hot())];
    let mut cells = Vec::new();
    for (name, w) in workloads {
        if !a.workloads.is_empty() && !a.workloads.iter().any(|x| x == name) {
            continue;
        }
        for &t in &a.threads {
            cells.push((w, t, run_cell(&a, w, t)));
        }
    }
    println!();
    println!("== summary: lockcore median / best correct baseline median ==");
    for (_, _, c) in &cells {
        let (best, m) = c.best_baseline();
        let l = c.median_of("lockcore");
        println!(
            "{:<28} lockcore {:>8.3} Mc/s  best {:<18} {:>8.3} Mc/s  ratio {}  vs limit {}",
            c.label,
            l / 1e6,
            best,
            m / 1e6,
            ratio(l / m),
            ratio(l / c.median_of(LIMIT_PROXY))
        );
    }
    let headline = cells.iter().find(|(w, t, _)| *w == Workload::uniform(8) && *t == 2);
    let Some((_, _, c)) = headline else {
        eprintln!("note: uniform batch=8 at 2 threads was not run; no headline ratio");
        return ExitCode::SUCCESS;
    };
    let l = c.median_of("lockcore");
    let limit = l / c.median_of(LIMIT_PROXY);
    if limit.is_finite() {
        println!("ratio_vs_limit_proxy={limit:.2}");
    }
    println!("ratio_vs_best_baseline={:.2}", l / c.best_baseline().1);
    ExitCode::SUCCESS
}
