//! `lockcore bench`: lockcore against the designs users would pick instead, over the named
//! workload matrix of `lockcore-benches`, with interleaved runs, a table, JSON and SVG plots.

use crate::Options;
use lockcore_benches::harness::{
    clock_cost_ns, loadavg, run_cell, run_open_cell, CellConfig, CellSummary, ImplSummary, OpenSummary,
};
use lockcore_benches::matrix::{contenders, matrix, Row};
use lockcore_benches::CountingAlloc;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Allocations per command are counted in this binary (a thread-local increment per
/// allocation, nothing per free; the other commands pay that too, and do not allocate on hot
/// paths).
#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

const KNOWN: &[&str] =
    &["workload", "threads", "seconds", "reps", "warmup", "impls", "quick", "json", "plot", "list", "replot"];

/// The headline cell: uniform batch 8 at 2 threads.
const HEADLINE: (&str, usize) = ("uniform8", 2);

struct Settings {
    rows: Vec<Row>,
    threads: Option<Vec<usize>>,
    cell: CellConfig,
    impls: Option<Vec<String>>,
}

fn list(v: &str) -> Vec<String> {
    v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

fn settings(opts: &Options) -> Result<Settings, String> {
    let quick = opts.has("quick");
    let all = matrix();
    let names = opts.value("workload").map(list).unwrap_or_else(|| {
        if quick {
            vec![HEADLINE.0.to_string()]
        } else {
            all.iter().map(|r| r.workload.name.to_string()).collect()
        }
    });
    let mut rows = Vec::new();
    for n in &names {
        let Some(r) = all.iter().find(|r| r.workload.name == n) else {
            let known: Vec<_> = all.iter().map(|r| r.workload.name).collect();
            return Err(format!("unknown workload {n:?} (known: {})", known.join(", ")));
        };
        rows.push(r.clone());
    }
    let threads = match opts.value("threads") {
        Some(v) => Some(
            list(v)
                .iter()
                .map(|t| t.parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| format!("--threads: cannot read {v:?}"))?,
        ),
        None if quick => Some(vec![HEADLINE.1]),
        None => None,
    };
    let seconds: f64 = opts.get("seconds", if quick { 0.5 } else { 0.3 })?;
    let warmup: f64 = opts.get("warmup", if quick { 0.2 } else { 0.1 })?;
    let reps: usize = opts.get("reps", 5)?;
    if !(seconds > 0.0 && seconds < 3600.0 && (0.0..3600.0).contains(&warmup)) {
        return Err("need 0 < --seconds < 3600 and 0 <= --warmup < 3600".into());
    }
    if reps < 5 {
        return Err("--reps must be at least 5: every ratio is a ratio of medians of >= 5 interleaved runs".into());
    }
    if threads.as_ref().is_some_and(|t| t.is_empty() || t.contains(&0)) {
        return Err("--threads: thread counts must be >= 1".into());
    }
    let cell = CellConfig {
        threads: 0,
        reps,
        run: Duration::from_secs_f64(seconds),
        warmup: Duration::from_secs_f64(warmup),
        count_allocs: lockcore_benches::counting(),
    };
    Ok(Settings { rows, threads, cell, impls: opts.value("impls").map(list) })
}

fn fmt_load(l: Option<[f64; 3]>) -> String {
    l.map_or_else(|| "?".into(), |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"))
}

fn ns(v: u64) -> String {
    match v {
        0..10_000 => format!("{v}ns"),
        10_000..10_000_000 => format!("{:.1}us", v as f64 / 1e3),
        _ => format!("{:.1}ms", v as f64 / 1e6),
    }
}

fn print_cell(c: &CellSummary) {
    println!();
    println!(
        "== {} threads={} (batch {}, hold {}, {}): {} runs x {:.2} s interleaved; load {}; line transfer {} ==",
        c.workload,
        c.threads,
        c.batch,
        ns(c.hold_ns),
        if c.wait { "wait on conflict" } else { "retry try on conflict" },
        c.reps,
        c.seconds,
        fmt_load(c.loadavg),
        c.line_transfer_ns.map_or_else(|| "-".into(), |t| format!("{t:.0} ns"))
    );
    println!(
        "{:<20} {:>8} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>5} {:>6} {:>9} {:>7}",
        "implementation",
        "Mcmd/s",
        "Mkey/s",
        "spread",
        "conf/cmd",
        "p50",
        "p99",
        "p999",
        "max",
        "max64",
        "fair",
        "alloc",
        "keys@load",
        "lc/x"
    );
    let lc = c.get("lockcore").map_or(f64::NAN, |l| l.cmds_per_s);
    for i in &c.impls {
        let alloc = i.allocs_per_cmd.map_or_else(|| "-".into(), |a| format!("{a:.2}"));
        let keys = i.table_keys_load.map_or_else(|| "-".into(), |k| k.to_string());
        let big = if i.max_wait_big_ns > 0 { ns(i.max_wait_big_ns) } else { "-".into() };
        println!(
            "{:<20} {:>8.3} {:>8.3} {:>6.0}% {:>8.3} {:>8} {:>8} {:>8} {:>8} {:>8} {:>5.2} {:>6} {:>9} {:>7.2}",
            i.name,
            i.cmds_per_s / 1e6,
            i.keys_per_s / 1e6,
            i.spread_pct,
            i.conflicts_per_cmd,
            ns(i.p50_ns),
            ns(i.p99_ns),
            ns(i.p999_ns),
            ns(i.max_ns),
            big,
            i.fairness,
            alloc,
            keys,
            lc / i.cmds_per_s
        );
    }
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
struct Progress {
    tty: bool,
    cells: usize,
    started: Instant,
}

impl Progress {
    fn show(&self, cell: usize, label: &str, done: usize, total: usize) {
        if !self.tty {
            return;
        }
        let frac = (cell as f64 + done as f64 / total.max(1) as f64) / self.cells.max(1) as f64;
        let filled = (frac * 30.0) as usize;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r[{}{}] {:>3.0}%  cell {}/{} {:<24} run {done}/{total}  {:.0} s ",
            "#".repeat(filled),
            "-".repeat(30 - filled.min(30)),
            frac * 100.0,
            cell + 1,
            self.cells,
            label,
            self.started.elapsed().as_secs_f64()
        );
        let _ = err.flush();
    }

    fn clear(&self) {
        if self.tty {
            let _ = write!(std::io::stderr().lock(), "\r{:100}\r", "");
        }
    }
}

fn ratio(a: f64, b: f64) -> String {
    let r = a / b;
    if r.is_finite() {
        format!("{r:.2}")
    } else {
        "-".into()
    }
}

pub(crate) fn run(opts: &Options) -> Result<(), String> {
    opts.only(KNOWN)?;
    if opts.has("list") {
        for r in matrix() {
            println!("{:<18} threads {:?}: {}", r.workload.name, r.threads, r.about);
        }
        return Ok(());
    }
    if let Some(json) = opts.value("replot") {
        return replot(json, opts.value("plot").ok_or("--replot FILE needs --plot DIR")?);
    }
    let s = settings(opts)?;
    let plan: Vec<(&Row, usize)> = s
        .rows
        .iter()
        .flat_map(|r| s.threads.clone().unwrap_or_else(|| r.threads.to_vec()).into_iter().map(move |t| (r, t)))
        .collect();
    let clock = clock_cost_ns();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let load_start = loadavg();
    println!(
        "lockcore bench: {} cells, {} runs x {:.2} s per implementation and cell (+{:.2} s warm-up), interleaved; \
         {cpus} CPUs; load {}; clock read {clock:.1} ns (2 per command); allocations {}",
        plan.len(),
        s.cell.reps,
        s.cell.run.as_secs_f64(),
        s.cell.warmup.as_secs_f64(),
        fmt_load(load_start),
        if s.cell.count_allocs { "counted" } else { "not counted" }
    );
    let progress = Progress { tty: std::io::stderr().is_terminal(), cells: plan.len(), started: Instant::now() };
    let mut cells = Vec::new();
    for (k, (row, threads)) in plan.iter().enumerate() {
        let label = format!("{} t={threads}", row.workload.name);
        let imps = contenders(s.impls.as_deref());
        let cfg = CellConfig { threads: *threads, ..s.cell };
        let c = run_cell(&imps, &row.workload, cfg, &mut |d, t| progress.show(k, &label, d, t));
        progress.clear();
        print_cell(&c);
        cells.push(c);
    }
    println!();
    println!("== summary: lockcore median / best correct baseline median (ratio of medians) ==");
    for c in &cells {
        let (Some(l), Some(b)) = (c.get("lockcore"), c.best_baseline()) else { continue };
        let limit = c.get(lockcore_benches::harness::LIMIT_PROXY).map_or(f64::NAN, |x| x.cmds_per_s);
        println!(
            "{:<18} t={:<3} lockcore {:>8.3} Mcmd/s  best {:<18} {:>8.3}  ratio {:>5}  vs limit {:>5}",
            c.workload,
            c.threads,
            l.cmds_per_s / 1e6,
            b.name,
            b.cmds_per_s / 1e6,
            ratio(l.cmds_per_s, b.cmds_per_s),
            ratio(l.cmds_per_s, limit)
        );
    }
    let headline = cells.iter().find(|c| c.workload == HEADLINE.0 && c.threads == HEADLINE.1);
    let headline_ratio = headline.and_then(|c| Some(c.get("lockcore")?.cmds_per_s / c.best_baseline()?.cmds_per_s));
    let open = match headline {
        Some(c) if !opts.has("quick") => open_loop(&s, c),
        _ => Vec::new(),
    };
    let load_end = loadavg();
    if let Some(path) = opts.value("json") {
        write_json(path, &cells, &open, clock, cpus, load_start, load_end, headline_ratio)?;
        println!("wrote {path}");
    }
    if let Some(dir) = opts.value("plot") {
        let files = crate::bench_plot::write(std::path::Path::new(dir), &cells)?;
        println!("wrote {} plots to {dir}", files);
    }
    println!("load at end {}; {:.0} s", fmt_load(load_end), progress.started.elapsed().as_secs_f64());
    match headline_ratio {
        Some(r) => println!("ratio_vs_best_baseline={r:.2}"),
        None => println!("note: {} at {} threads was not run; no headline ratio", HEADLINE.0, HEADLINE.1),
    }
    Ok(())
}

/// Latency under a set load: the headline workload at 50% and 80% of the best correct
/// baseline's closed-loop capacity, every implementation, interleaved.
fn open_loop(s: &Settings, headline: &CellSummary) -> Vec<OpenSummary> {
    let Some(best) = headline.best_baseline() else { return Vec::new() };
    let row = matrix().into_iter().find(|r| r.workload.name == HEADLINE.0).expect("headline workload in the matrix");
    let mut out = Vec::new();
    for pct in [50.0, 80.0] {
        let rate = best.cmds_per_s * pct / 100.0;
        let imps = contenders(s.impls.as_deref());
        let rows = run_open_cell(&imps, &row.workload, HEADLINE.1, rate, s.cell.reps, s.cell.run);
        println!();
        println!(
            "== open loop: {} at {} threads, {pct:.0}% of {}'s capacity = {:.3} Mcmd/s offered; {} runs x {:.2} s; load {} ==",
            HEADLINE.0,
            HEADLINE.1,
            best.name,
            rate / 1e6,
            s.cell.reps,
            s.cell.run.as_secs_f64(),
            fmt_load(loadavg())
        );
        println!("{:<20} {:>10} {:>8} {:>8} {:>8} {:>8}", "implementation", "achieved", "p50", "p99", "p999", "max");
        for o in &rows {
            println!(
                "{:<20} {:>9.0}% {:>8} {:>8} {:>8} {:>8}",
                o.name,
                o.achieved_per_s / rate * 100.0,
                ns(o.p50_ns),
                ns(o.p99_ns),
                ns(o.p999_ns),
                ns(o.max_ns)
            );
        }
        out.extend(rows);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn write_json(
    path: &str,
    cells: &[CellSummary],
    open: &[OpenSummary],
    clock: f64,
    cpus: usize,
    load_start: Option<[f64; 3]>,
    load_end: Option<[f64; 3]>,
    headline: Option<f64>,
) -> Result<(), String> {
    let v = serde_json::json!({
        "tool": "lockcore bench",
        "version": env!("CARGO_PKG_VERSION"),
        "cpus": cpus,
        "clock_read_ns": clock,
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "ratio_vs_best_baseline": headline,
        "method": "closed loop per thread; every implementation run interleaved (rotated start) \
                   for `reps` runs per cell after one warm-up run; throughput figures are medians \
                   of the runs; latency percentiles over all runs of a cell; acquire latency is \
                   from the first try to the grant, two clock reads per command",
        "cells": cells,
        "open_loop": open,
    });
    let text = serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("{path}: {e}"))
}

/// Draws the plots of an earlier run from its `--json` file.
fn replot(json: &str, dir: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(json).map_err(|e| format!("{json}: {e}"))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{json}: {e}"))?;
    let cells: Vec<CellSummary> = serde_json::from_value(v.get("cells").cloned().unwrap_or_default())
        .map_err(|e| format!("{json}: cells: {e}"))?;
    let files = crate::bench_plot::write(std::path::Path::new(dir), &cells)?;
    println!("wrote {files} plots to {dir} from {json}");
    Ok(())
}

/// Used by the plots: an implementation's figure in a cell.
pub(crate) fn find<'a>(
    cells: &'a [CellSummary],
    workload: &str,
    threads: usize,
    name: &str,
) -> Option<&'a ImplSummary> {
    cells.iter().find(|c| c.workload == workload && c.threads == threads)?.get(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> Options {
        Options::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("parses")
    }

    #[test]
    fn quick_is_the_headline_cell_only() {
        let s = settings(&opts(&["--quick"])).expect("valid");
        assert_eq!(s.rows.len(), 1);
        assert_eq!(s.rows[0].workload.name, HEADLINE.0);
        assert_eq!(s.threads, Some(vec![HEADLINE.1]));
        assert!(s.cell.reps >= 5);
    }

    #[test]
    fn fewer_than_five_reps_and_unknown_workloads_are_refused() {
        assert!(settings(&opts(&["--reps", "4"])).is_err());
        assert!(settings(&opts(&["--workload", "nope"])).is_err());
        assert!(settings(&opts(&["--threads", "0"])).is_err());
        let s = settings(&opts(&["--workload", "hot4,zipf8", "--threads", "1,16"])).expect("valid");
        assert_eq!(s.rows.len(), 2);
        assert_eq!(s.threads, Some(vec![1, 16]));
    }
}
