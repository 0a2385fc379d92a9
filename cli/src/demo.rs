//! `lockcore demo`: several threads run engine-like commands on a shared table.
//!
//! Each command takes a batch of keys (some shared, some exclusive) all or nothing, by
//! `try_acquire` (failing fast, as a command's validation would) or by `acquire` with a
//! deadline, holds them briefly, and releases them; one in eight keeps its locks as a ticket
//! for a short "async task" and releases it at its end-action. The demo then prints what the
//! table did and checks that it ends empty.

use crate::rng::Rng;
use crate::Options;
use lockcore::{AcquireError, LockMessage, LockTable, Request};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Tally {
    commands: AtomicU64,
    rejected: AtomicU64,
    timed_out: AtomicU64,
    kept: AtomicU64,
}

pub(crate) fn run(opts: &Options) -> Result<(), String> {
    opts.only(&["threads", "keys", "batch", "seconds", "write-pct"])?;
    let threads: usize = opts.get("threads", 4)?;
    let keys: u64 = opts.get("keys", 64)?;
    let batch: u64 = opts.get("batch", 4)?;
    let seconds: f64 = opts.get("seconds", 3.0)?;
    let write_pct: u64 = opts.get("write-pct", 30)?;
    if threads == 0 || keys == 0 || batch == 0 || !(0.0..=3600.0).contains(&seconds) || write_pct > 100 {
        return Err("need --threads >= 1, --keys >= 1, --batch >= 1, 0 <= --seconds <= 3600, --write-pct <= 100".into());
    }
    let table: LockTable<(&'static str, u64)> = LockTable::new();
    let tally = Tally::default();
    let sample = std::sync::Mutex::new(None);
    let stop = Instant::now() + Duration::from_secs_f64(seconds);
    println!(
        "lockcore demo: {threads} threads, {keys} keys, batches of up to {batch}, {write_pct}% exclusive, {seconds} s"
    );
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (table, tally, sample) = (&table, &tally, &sample);
            s.spawn(move || worker(t, table, tally, sample, stop, keys, batch, write_pct));
        }
    });
    let elapsed = started.elapsed();
    let m = table.metrics();
    let n = tally.commands.load(Ordering::Relaxed);
    println!("ran {n} commands in {elapsed:.2?} ({:.0} commands/s)", n as f64 / elapsed.as_secs_f64());
    println!(
        "  granted {}  refused at once {}  waited {}  timed out {}  kept past their scope (tickets) {}",
        m.grants,
        tally.rejected.load(Ordering::Relaxed),
        m.waits,
        tally.timed_out.load(Ordering::Relaxed),
        tally.kept.load(Ordering::Relaxed)
    );
    let q = |h: &lockcore::Histogram, p| h.quantile_upper_bound(p).map_or("-".into(), |d| format!("<= {d:.1?}"));
    println!(
        "  wait time p50 {} p99 {}   hold time p50 {} p99 {}",
        q(&m.wait_time, 0.5),
        q(&m.wait_time, 0.99),
        q(&m.hold_time, 0.5),
        q(&m.hold_time, 0.99)
    );
    if let Some(text) = sample.lock().map_err(|_| "a worker panicked")?.as_ref() {
        println!("a conflict as a command sees it:\n  {}", text.replace('\n', "\n  "));
    }
    let snap = table.snapshot();
    let reclaimed = table.reclaim();
    println!(
        "at the end: {} locks held, {} waiters, {} keys stored, {reclaimed} freed records dropped by reclaim()",
        snap.held.len(),
        snap.waiting.len(),
        table.key_count()
    );
    if table.key_count() != 0 {
        return Err(format!("{} keys still stored with nothing held", table.key_count()));
    }
    if !snap.held.is_empty() || !snap.waiting.is_empty() || m.grants != m.releases {
        return Err(format!("the table did not end empty: {} grants, {} releases", m.grants, m.releases));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn worker(
    t: usize,
    table: &LockTable<(&'static str, u64)>,
    tally: &Tally,
    sample: &std::sync::Mutex<Option<String>>,
    stop: Instant,
    keys: u64,
    batch: u64,
    write_pct: u64,
) {
    let mut rng = Rng(t as u64 + 1);
    let mut i = 0u64;
    while Instant::now() < stop {
        i += 1;
        let owner = format!("cmd-{t}-{i}");
        let mut req = Request::new(owner.as_str());
        for _ in 0..1 + rng.below(batch) {
            let key = ("vm", rng.below(keys));
            req = if rng.below(100) < write_pct {
                req.exclusive_with(key, LockMessage::new("VM is being updated").with("command", owner.as_str()))
            } else {
                req.shared(key)
            };
        }
        tally.commands.fetch_add(1, Ordering::Relaxed);
        let result =
            if rng.below(2) == 0 { table.try_acquire(req) } else { table.acquire(req, Duration::from_millis(20)) };
        match result {
            Ok(set) if rng.below(8) == 0 => {
                tally.kept.fetch_add(1, Ordering::Relaxed);
                let ticket = set.into_ticket();
                std::thread::yield_now(); // the "async task"
                if let Err(e) = table.release(&ticket) {
                    panic!("end-action release failed: {e}");
                }
            }
            Ok(set) => drop(set),
            Err(AcquireError::Conflict(c)) => {
                tally.rejected.fetch_add(1, Ordering::Relaxed);
                if c.keys.len() > 1 {
                    if let Ok(mut s) = sample.try_lock() {
                        s.get_or_insert_with(|| c.to_string());
                    }
                }
            }
            Err(AcquireError::Timeout(_)) => {
                tally.timed_out.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
}
