//! `lockcore footprint`: the table stores only keys in use, and its memory returns to idle
//! after many distinct keys.

use crate::Options;
use lockcore::{LockTable, Request};
use std::time::Instant;

/// Resident set size in KiB, from /proc (Linux); `None` elsewhere.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn show(label: &str, table: &LockTable<u64>) {
    let rss = rss_kib().map_or("unknown".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    println!("{label:<44} keys stored {:>9}   process RSS {rss}", table.key_count());
}

pub(crate) fn run(opts: &Options) -> Result<(), String> {
    opts.only(&["keys"])?;
    let n: u64 = opts.get("keys", 10_000_000)?;
    let table: LockTable<u64> = LockTable::new();
    show("idle", &table);
    let started = Instant::now();
    let mut peak = 0;
    for k in 0..n {
        let set = table.try_acquire(Request::new("footprint").exclusive(k)).map_err(|e| e.to_string())?;
        drop(set);
        if k % 10_000 == 0 {
            peak = peak.max(table.key_count());
        }
    }
    let elapsed = started.elapsed();
    show(&format!("after {n} distinct keys taken and released"), &table);
    if table.key_count() != 0 {
        return Err(format!("{} released keys still stored", table.key_count()));
    }
    let reclaimed = table.reclaim();
    show(&format!("after reclaim() ({reclaimed} freed records dropped)"), &table);
    println!(
        "{n} acquire+release in {elapsed:.2?} ({:.0} ns each); most keys stored at once (sampled): {peak}",
        elapsed.as_nanos() as f64 / n.max(1) as f64
    );
    if table.key_count() != 0 {
        return Err(format!("{} keys still stored after reclaim()", table.key_count()));
    }
    Ok(())
}
