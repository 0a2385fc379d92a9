//! The closed-loop contention harness behind `lockcore bench`: one run of one implementation,
//! and a cell of interleaved runs (A B C .. A B C ..) summarised as medians.
//!
//! Per command a thread draws a batch, reads the clock, asks (`try_acquire`; on a refusal it
//! counts a conflict and either retries the try with [`Backoff`] or, in waiting workloads, calls
//! `acquire`), reads the clock again (the difference is the acquire latency, recorded in an
//! HDR histogram), holds the keys for the workload's busy hold time, and releases. Allocations
//! are counted around acquire + release when the binary installs
//! [`CountingAlloc`](crate::CountingAlloc).

use crate::alloc::thread_allocations;
use crate::baseline::{Backoff, Baseline, Lock};
use crate::workload::{Sampler, SplitMix64, Workload};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

/// How long a waiting workload's `acquire` waits before checking whether the run is over.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// What one run measured.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Commands granted.
    pub commands: u64,
    /// Keys granted (sum of batch sizes).
    pub keys: u64,
    /// Wall-clock length of the measured part, seconds.
    pub elapsed_s: f64,
    /// Commands whose first `try_acquire` was refused.
    pub conflicts: u64,
    /// Refused tries and timed-out waits, all together.
    pub retries: u64,
    /// Commands granted per thread.
    pub per_thread: Vec<u64>,
    /// Acquire latency of every command, nanoseconds.
    pub latency: Histogram<u64>,
    /// Longest acquire of a normal command, nanoseconds.
    pub max_wait_small_ns: u64,
    /// Longest acquire of a big command (starvation mix), nanoseconds.
    pub max_wait_big_ns: u64,
    /// Allocations made inside acquire + release, all threads.
    pub allocations: u64,
    /// Keys the table stored halfway through the run, if it can say.
    pub table_keys_load: Option<usize>,
    /// Keys the table stored after the run, if it can say.
    pub table_keys_idle: Option<usize>,
    /// Resident set of the process halfway through the run, KiB.
    pub rss_load_kib: Option<u64>,
}

impl RunResult {
    /// Commands per second.
    pub fn cmds_per_s(&self) -> f64 {
        self.commands as f64 / self.elapsed_s
    }

    /// Slowest thread's commands over the fastest's (1 = perfectly fair).
    pub fn fairness(&self) -> f64 {
        let lo = self.per_thread.iter().copied().min().unwrap_or(0);
        let hi = self.per_thread.iter().copied().max().unwrap_or(0);
        if hi == 0 {
            0.0
        } else {
            lo as f64 / hi as f64
        }
    }
}

/// An implementation, type-erased for the harness.
pub trait Contender: Sync {
    /// Its short name.
    fn name(&self) -> &'static str;
    /// One closed-loop run of `threads` threads for `dur`.
    fn run(&self, w: &Sampler, threads: usize, dur: Duration, seed: u64) -> RunResult;
    /// One open-loop run: `threads` threads together issue `rate` commands/s on a fixed
    /// schedule for `dur`; latency is from each command's scheduled time to its grant, so a
    /// table that falls behind is charged for the queue it builds (no coordinated omission).
    fn run_open(&self, w: &Sampler, threads: usize, dur: Duration, rate: f64, seed: u64) -> RunResult;
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns .. 100 s at 3 significant digits; values past the top are clamped by
    // `saturating_record`.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// One thread's share of a run.
struct ThreadResult {
    commands: u64,
    keys: u64,
    conflicts: u64,
    retries: u64,
    latency: Histogram<u64>,
    max_small: u64,
    max_big: u64,
    allocations: u64,
}

impl ThreadResult {
    fn new() -> Self {
        Self {
            commands: 0,
            keys: 0,
            conflicts: 0,
            retries: 0,
            latency: new_histogram(),
            max_small: 0,
            max_big: 0,
            allocations: 0,
        }
    }

    /// Counts one command: its acquire latency `ns`, its kind and size.
    fn record(&mut self, ns: u64, big: bool, keys: usize) {
        self.latency.saturating_record(ns);
        if big {
            self.max_big = self.max_big.max(ns);
        } else {
            self.max_small = self.max_small.max(ns);
        }
        self.commands += 1;
        self.keys += keys as u64;
    }
}

/// Takes `batch`, retrying until granted: waiting in slices for waiting workloads, trying again
/// with backoff otherwise; counts the conflict and the retries. `None` once `stop` is raised.
fn acquire_retrying<'b, B: Baseline>(
    imp: &'b B,
    batch: &[Lock],
    wait: bool,
    r: &mut ThreadResult,
    stop: Option<&AtomicBool>,
) -> Option<B::Held<'b>> {
    if let Some(h) = imp.try_acquire(batch) {
        return Some(h);
    }
    r.conflicts += 1;
    r.retries += 1;
    let mut backoff = Backoff::new();
    loop {
        // Relaxed: a flag polled for exit; nothing is published through it.
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            return None;
        }
        let got = if wait {
            imp.acquire(batch, WAIT_SLICE)
        } else {
            backoff.snooze();
            imp.try_acquire(batch)
        };
        match got {
            Some(h) => return Some(h),
            None => r.retries += 1,
        }
    }
}

impl<B: Baseline> Contender for B {
    fn name(&self) -> &'static str {
        Baseline::name(self)
    }

    fn run(&self, w: &Sampler, threads: usize, dur: Duration, seed: u64) -> RunResult {
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
            thread::sleep(dur / 2);
            let table_keys_load = self.table_keys();
            let rss_load_kib = rss_kib();
            thread::sleep(dur.saturating_sub(t0.elapsed()));
            // Relaxed: only asks the workers to stop; `join` orders their results.
            stop.store(true, Ordering::Relaxed);
            let elapsed_s = t0.elapsed().as_secs_f64();
            let mut r = RunResult {
                commands: 0,
                keys: 0,
                elapsed_s,
                conflicts: 0,
                retries: 0,
                per_thread: Vec::with_capacity(threads),
                latency: new_histogram(),
                max_wait_small_ns: 0,
                max_wait_big_ns: 0,
                allocations: 0,
                table_keys_load,
                table_keys_idle: None,
                rss_load_kib,
            };
            for h in workers {
                r.add(h.join().expect("worker panicked"));
            }
            r.table_keys_idle = self.table_keys();
            r
        })
    }

    fn run_open(&self, w: &Sampler, threads: usize, dur: Duration, rate: f64, seed: u64) -> RunResult {
        let start = Barrier::new(threads);
        let t0 = Instant::now() + Duration::from_millis(5);
        let results: Vec<ThreadResult> = thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let start = &start;
                    let seed = seed ^ (t as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
                    s.spawn(move || {
                        start.wait();
                        open_loop(self, w, seed, Schedule { t, n: threads, rate, t0, dur })
                    })
                })
                .collect();
            workers.into_iter().map(|h| h.join().expect("worker panicked")).collect()
        });
        let elapsed_s = t0.elapsed().as_secs_f64();
        let mut r = RunResult {
            commands: 0,
            keys: 0,
            elapsed_s,
            conflicts: 0,
            retries: 0,
            per_thread: Vec::with_capacity(threads),
            latency: new_histogram(),
            max_wait_small_ns: 0,
            max_wait_big_ns: 0,
            allocations: 0,
            table_keys_load: None,
            table_keys_idle: self.table_keys(),
            rss_load_kib: None,
        };
        for t in results {
            r.add(t);
        }
        r
    }
}

impl RunResult {
    /// Folds one thread's figures into the run's.
    fn add(&mut self, t: ThreadResult) {
        self.commands += t.commands;
        self.keys += t.keys;
        self.conflicts += t.conflicts;
        self.retries += t.retries;
        self.per_thread.push(t.commands);
        self.latency.add(&t.latency).expect("same bounds");
        self.max_wait_small_ns = self.max_wait_small_ns.max(t.max_small);
        self.max_wait_big_ns = self.max_wait_big_ns.max(t.max_big);
        self.allocations += t.allocations;
    }
}

/// An open-loop schedule: thread `t` of `n` owns every `n`-th slot of `rate` commands/s from
/// `t0` for `dur`.
#[derive(Clone, Copy)]
struct Schedule {
    t: usize,
    n: usize,
    rate: f64,
    t0: Instant,
    dur: Duration,
}

/// Open loop: one thread's share of a [`Schedule`].
fn open_loop<B: Baseline>(imp: &B, w: &Sampler, seed: u64, sched: Schedule) -> ThreadResult {
    let wl = *w.workload();
    let mut rng = SplitMix64::new(seed);
    let mut batch: SmallVec<[Lock; 8]> = SmallVec::new();
    let mut r = ThreadResult::new();
    let Schedule { t, n, rate, t0, dur } = sched;
    let step = n as f64 / rate;
    let mut slot = t as f64 / rate;
    let end = t0 + dur;
    // A table that falls behind stops at twice the run's length, its backlog unserved.
    let hard_end = end + dur;
    loop {
        let due = t0 + Duration::from_secs_f64(slot);
        if due >= end || Instant::now() >= hard_end {
            break;
        }
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        let big = w.fill(&mut rng, &mut batch);
        let allocs_before = thread_allocations();
        let Some(held) = acquire_retrying(imp, &batch, wl.wait, &mut r, None) else { break };
        let granted = Instant::now();
        if wl.hold_ns > 0 {
            hold(granted, wl.hold_ns);
        }
        imp.release(&batch, held);
        r.allocations += thread_allocations() - allocs_before;
        let ns = u64::try_from(granted.saturating_duration_since(due).as_nanos()).unwrap_or(u64::MAX).max(1);
        r.record(ns, big, batch.len());
        slot += step;
    }
    r
}

/// Waits until `ns` nanoseconds have passed since `from`, busy.
#[inline]
fn hold(from: Instant, ns: u64) {
    let until = Duration::from_nanos(ns);
    while from.elapsed() < until {
        std::hint::spin_loop();
    }
}

/// One thread's commands until `stop`.
fn closed_loop<B: Baseline>(imp: &B, w: &Sampler, seed: u64, stop: &AtomicBool, start: &Barrier) -> ThreadResult {
    let wl = *w.workload();
    let mut rng = SplitMix64::new(seed);
    let mut batch: SmallVec<[Lock; 8]> = SmallVec::new();
    let mut r = ThreadResult::new();
    start.wait();
    // Relaxed: a flag polled for exit; nothing is published through it.
    while !stop.load(Ordering::Relaxed) {
        let big = w.fill(&mut rng, &mut batch);
        let allocs_before = thread_allocations();
        let t0 = Instant::now();
        let Some(held) = acquire_retrying(imp, &batch, wl.wait, &mut r, Some(stop)) else { break };
        let t1 = Instant::now();
        if wl.hold_ns > 0 {
            hold(t1, wl.hold_ns);
        }
        imp.release(&batch, held);
        r.allocations += thread_allocations() - allocs_before;
        let ns = u64::try_from((t1 - t0).as_nanos()).unwrap_or(u64::MAX).max(1);
        r.record(ns, big, batch.len());
    }
    r
}

/// The process's resident set, KiB (Linux; `None` elsewhere).
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The 1-, 5- and 15-minute load averages (Linux; `None` elsewhere).
pub fn loadavg() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// What one `Instant::now()` costs here, nanoseconds (the harness reads it twice per command).
pub fn clock_cost_ns() -> f64 {
    const N: u32 = 1_000_000;
    let t = Instant::now();
    let mut last = t;
    for _ in 0..N {
        last = std::hint::black_box(Instant::now());
    }
    (last - t).as_nanos() as f64 / f64::from(N)
}

/// What moving one cache line from one thread's core to another's costs here, nanoseconds:
/// two threads pass a counter back and forth 100,000 times, and each pass is one transfer.
/// `None` with fewer than two CPUs (each pass would wait for a scheduler slice).
///
/// Every operation that writes a line last written by another thread pays this, so it sets
/// the price of sharded designs, whose commands touch many lines, far more than that of one
/// global lock. On a virtual machine it depends on where the host runs the two virtual CPUs,
/// and can change from one minute to the next; the harness measures it before every cell.
pub fn line_transfer_ns() -> Option<f64> {
    // Passes before the clock starts (both threads running and warm), then timed passes.
    const WARM: u64 = 20_000;
    const PASSES: u64 = 200_000;
    if std::thread::available_parallelism().map_or(1, usize::from) < 2 {
        return None;
    }
    // Acquire/Release: each side reads the other's last write before writing its own (a
    // Relaxed pair would measure the same transfer; the orderings say what is meant). Returns
    // when the timed passes began.
    fn pass(turn: &AtomicU64, parity: u64) -> Instant {
        let mut started = Instant::now();
        for i in 0..WARM + PASSES {
            while turn.load(Ordering::Acquire) != 2 * i + parity {
                std::hint::spin_loop();
            }
            if i == WARM {
                started = Instant::now();
            }
            turn.store(2 * i + parity + 1, Ordering::Release);
        }
        started
    }
    let turn = AtomicU64::new(0);
    let (started, ended) = std::thread::scope(|s| {
        s.spawn(|| pass(&turn, 1));
        let started = pass(&turn, 0);
        (started, Instant::now())
    });
    Some((ended - started).as_nanos() as f64 / (2 * PASSES) as f64)
}

/// Median of `v` (NaN if empty).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// One implementation's figures in one cell: medians over the interleaved runs, latency
/// percentiles over all of them together.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImplSummary {
    /// Implementation name.
    pub name: String,
    /// Commands/s of every measured run, in run order.
    pub runs_cmds_per_s: Vec<f64>,
    /// Median commands/s.
    pub cmds_per_s: f64,
    /// Median keys/s.
    pub keys_per_s: f64,
    /// (max - min) / median of the runs, percent.
    pub spread_pct: f64,
    /// Median conflicts (refused first tries) per command.
    pub conflicts_per_cmd: f64,
    /// Median retries per command.
    pub retries_per_cmd: f64,
    /// Acquire latency percentiles over all runs, nanoseconds.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Longest acquire.
    pub max_ns: u64,
    /// Longest acquire of a big command (starvation mix), nanoseconds; 0 if none ran.
    pub max_wait_big_ns: u64,
    /// Median slowest/fastest thread.
    pub fairness: f64,
    /// Median allocations per command (acquire + release); `None` if not counted.
    pub allocs_per_cmd: Option<f64>,
    /// Keys in the table under load (last run), if it can say.
    pub table_keys_load: Option<usize>,
    /// Keys in the table after the last run.
    pub table_keys_idle: Option<usize>,
    /// Process resident set under load (last run), KiB.
    pub rss_load_kib: Option<u64>,
}

/// One cell: a workload at a thread count, every implementation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellSummary {
    /// Workload name.
    pub workload: String,
    /// Threads.
    pub threads: usize,
    /// Keys per command (normal commands).
    pub batch: usize,
    /// Busy hold time, nanoseconds.
    pub hold_ns: u64,
    /// Whether conflicts wait (`acquire`) rather than retry the try.
    pub wait: bool,
    /// Measured runs per implementation.
    pub reps: usize,
    /// Seconds per run.
    pub seconds: f64,
    /// Load average when the cell finished.
    pub loadavg: Option<[f64; 3]>,
    /// What moving a cache line between two threads cost just before the cell
    /// ([`line_transfer_ns`]), nanoseconds.
    #[serde(default)]
    pub line_transfer_ns: Option<f64>,
    /// Every implementation, lockcore first.
    pub impls: Vec<ImplSummary>,
}

/// The name of the limit proxy, which is not a correct lock table (left out of "best baseline").
pub const LIMIT_PROXY: &str = "atomic-words(limit)";

impl CellSummary {
    /// An implementation's figures.
    pub fn get(&self, name: &str) -> Option<&ImplSummary> {
        self.impls.iter().find(|i| i.name == name)
    }

    /// The fastest correct baseline (median commands/s).
    pub fn best_baseline(&self) -> Option<&ImplSummary> {
        self.impls
            .iter()
            .filter(|i| !i.name.starts_with("lockcore") && i.name != LIMIT_PROXY)
            .max_by(|a, b| a.cmds_per_s.total_cmp(&b.cmds_per_s))
    }
}

/// Settings of a cell.
#[derive(Debug, Clone, Copy)]
pub struct CellConfig {
    /// Threads.
    pub threads: usize,
    /// Measured runs per implementation (at least 5 for the reported ratios).
    pub reps: usize,
    /// Length of each run.
    pub run: Duration,
    /// Uncounted run per implementation before the first (zero: none).
    pub warmup: Duration,
    /// Whether allocations are counted (the binary installed `CountingAlloc`).
    pub count_allocs: bool,
}

/// Runs every implementation of `imps` on `w` interleaved: warm-up each, then `reps` rounds,
/// each round every implementation once, the first rotated by one each round. `progress` is
/// called after every run with (runs done, runs total).
pub fn run_cell(
    imps: &[Box<dyn Contender>],
    w: &Workload,
    c: CellConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> CellSummary {
    let sampler = w.sampler();
    let line_transfer_ns = line_transfer_ns();
    let n = imps.len();
    let total = n * c.reps + if c.warmup.is_zero() { 0 } else { n };
    let mut done = 0;
    if !c.warmup.is_zero() {
        for imp in imps {
            imp.run(&sampler, c.threads, c.warmup, 0x5EED);
            done += 1;
            progress(done, total);
        }
    }
    let mut runs: Vec<Vec<RunResult>> = vec![Vec::new(); n];
    for rep in 0..c.reps {
        for k in 0..n {
            let i = (k + rep) % n;
            runs[i].push(imps[i].run(&sampler, c.threads, c.run, 0xC0FFEE ^ ((rep as u64) << 32)));
            done += 1;
            progress(done, total);
        }
    }
    let impls = imps.iter().zip(&runs).map(|(imp, rs)| summarise(imp.name(), rs, c.count_allocs)).collect();
    CellSummary {
        workload: w.name.to_string(),
        threads: c.threads,
        batch: w.batch,
        hold_ns: w.hold_ns,
        wait: w.wait,
        reps: c.reps,
        seconds: c.run.as_secs_f64(),
        loadavg: loadavg(),
        line_transfer_ns,
        impls,
    }
}

fn summarise(name: &str, rs: &[RunResult], count_allocs: bool) -> ImplSummary {
    let per = |f: &dyn Fn(&RunResult) -> f64| median(&rs.iter().map(f).collect::<Vec<_>>());
    let rates: Vec<f64> = rs.iter().map(RunResult::cmds_per_s).collect();
    let m = median(&rates);
    let (lo, hi) = rates.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let mut lat = new_histogram();
    for r in rs {
        lat.add(&r.latency).expect("same bounds");
    }
    let last = rs.last();
    ImplSummary {
        name: name.to_string(),
        cmds_per_s: m,
        keys_per_s: per(&|r| r.keys as f64 / r.elapsed_s),
        spread_pct: if m > 0.0 { (hi - lo) / m * 100.0 } else { 0.0 },
        conflicts_per_cmd: per(&|r| r.conflicts as f64 / r.commands.max(1) as f64),
        retries_per_cmd: per(&|r| r.retries as f64 / r.commands.max(1) as f64),
        p50_ns: lat.value_at_quantile(0.50),
        p99_ns: lat.value_at_quantile(0.99),
        p999_ns: lat.value_at_quantile(0.999),
        max_ns: lat.max(),
        max_wait_big_ns: rs.iter().map(|r| r.max_wait_big_ns).max().unwrap_or(0),
        fairness: per(&RunResult::fairness),
        allocs_per_cmd: count_allocs.then(|| per(&|r| r.allocations as f64 / r.commands.max(1) as f64)),
        table_keys_load: last.and_then(|r| r.table_keys_load),
        table_keys_idle: last.and_then(|r| r.table_keys_idle),
        rss_load_kib: last.and_then(|r| r.rss_load_kib),
        runs_cmds_per_s: rates,
    }
}

/// One implementation's latency under a set load.
#[derive(Debug, Clone, Serialize)]
pub struct OpenSummary {
    /// Implementation name.
    pub name: &'static str,
    /// Offered load, commands/s.
    pub offered_per_s: f64,
    /// Completed, commands/s (below the offered load when the table fell behind).
    pub achieved_per_s: f64,
    /// Latency from scheduled start to grant, over all runs, nanoseconds.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Longest.
    pub max_ns: u64,
}

/// Open-loop runs of every implementation at `rate` commands/s, interleaved over `reps` rounds.
pub fn run_open_cell(
    imps: &[Box<dyn Contender>],
    w: &Workload,
    threads: usize,
    rate: f64,
    reps: usize,
    run: Duration,
) -> Vec<OpenSummary> {
    let sampler = w.sampler();
    let n = imps.len();
    let mut runs: Vec<Vec<RunResult>> = vec![Vec::new(); n];
    for rep in 0..reps {
        for k in 0..n {
            let i = (k + rep) % n;
            runs[i].push(imps[i].run_open(&sampler, threads, run, rate, 0xFEED ^ ((rep as u64) << 32)));
        }
    }
    imps.iter()
        .zip(&runs)
        .map(|(imp, rs)| {
            let mut lat = new_histogram();
            for r in rs {
                lat.add(&r.latency).expect("same bounds");
            }
            OpenSummary {
                name: imp.name(),
                offered_per_s: rate,
                achieved_per_s: median(&rs.iter().map(RunResult::cmds_per_s).collect::<Vec<_>>()),
                p50_ns: lat.value_at_quantile(0.50),
                p99_ns: lat.value_at_quantile(0.99),
                p999_ns: lat.value_at_quantile(0.999),
                max_ns: lat.max(),
            }
        })
        .collect()
}
