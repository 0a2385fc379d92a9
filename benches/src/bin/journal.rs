//! `lockcore-journal-bench`: how fast kept tickets become durable, and how long recovery takes.
//!
//! Appends: each command keeps a ticket and ends it (two commits, like a command whose async
//! task finishes), in closed loops on 1..N threads, for lockcore's journal with an fsync per
//! commit, with group commit, and without fsync, and for the embedded store we would otherwise
//! use (redb, one write transaction per commit, `Durability::Immediate`), all in this process on
//! the same disk. Recovery: `Durable::open` of a journal holding 100,000 live tickets (read,
//! decode, re-take every lock, rewrite the live set).
//!
//! Usage: lockcore-journal-bench [--seconds S (2)] [--live N (100000)] [--dir D]

use lockcore::{Builder, Request};
use lockcore_journal::{Durability, Durable, FileJournal, Journal, KeepId, OpenOptions, TaskId};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PAYLOAD: &[u8] =
    br#"{"owner":"CopyImage-1042","tasks":["task-77"],"locks":[{"key":"disk-9","mode":1,"token":1099511627777}]}"#;
const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("kept");

trait Store: Sync {
    fn keep(&self, id: u64);
    fn release(&self, id: u64);
}

impl Store for FileJournal {
    fn keep(&self, id: u64) {
        Journal::keep(self, KeepId(id), PAYLOAD).expect("keep");
    }
    fn release(&self, id: u64) {
        Journal::release(self, KeepId(id)).expect("release");
    }
}

impl Store for redb::Database {
    fn keep(&self, id: u64) {
        let txn = self.begin_write().expect("begin");
        txn.open_table(TABLE).expect("table").insert(id, PAYLOAD).expect("insert");
        txn.commit().expect("commit");
    }
    fn release(&self, id: u64) {
        let txn = self.begin_write().expect("begin");
        txn.open_table(TABLE).expect("table").remove(id).expect("remove");
        txn.commit().expect("commit");
    }
}

/// Commits per second over `seconds`, `threads` closed loops of keep+release.
fn run(store: &dyn Store, threads: u64, seconds: f64) -> f64 {
    let stop = AtomicBool::new(false);
    let commits = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (stop, commits) = (&stop, &commits);
            s.spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let id = (t << 40) | i;
                    store.keep(id);
                    store.release(id);
                    commits.fetch_add(2, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
    });
    commits.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: f64 = arg(&args, "--seconds").map_or(2.0, |s| s.parse().expect("--seconds"));
    let live: u64 = arg(&args, "--live").map_or(100_000, |s| s.parse().expect("--live"));
    let dir = arg(&args, "--dir").map_or_else(|| std::env::temp_dir().join("lockcore-journal-bench"), PathBuf::from);
    std::fs::create_dir_all(&dir).expect("bench dir");
    println!("journal appends: keep+end per command, {seconds} s per cell, files in {}", dir.display());
    println!("{:<34} {:>8} {:>14} {:>12}", "store", "threads", "commits/s", "fsyncs/commit");
    let mut results = Vec::new();
    let cells: &[(&str, Durability, u64)] = &[
        ("lockcore journal, fsync each", Durability::SyncEach, 1),
        ("lockcore journal, fsync each", Durability::SyncEach, 4),
        ("lockcore journal, group commit", Durability::Group { window: Duration::ZERO }, 1),
        ("lockcore journal, group commit", Durability::Group { window: Duration::ZERO }, 4),
        ("lockcore journal, group commit", Durability::Group { window: Duration::ZERO }, 16),
        ("lockcore journal, no fsync", Durability::Os, 1),
    ];
    for &(name, durability, threads) in cells {
        let j = FileJournal::open(fresh(&dir, "journal"), OpenOptions::new().durability(durability));
        j.start().expect("start");
        let rate = run(&j, threads, seconds);
        let st = j.stats();
        let per = if st.commits == 0 { 0.0 } else { st.syncs as f64 / st.commits as f64 };
        println!("{name:<34} {threads:>8} {rate:>14.0} {per:>12.2}");
        results.push((name, threads, rate));
    }
    for threads in [1, 4] {
        let db = redb::Database::create(fresh(&dir, "redb")).expect("redb");
        let rate = run(&db, threads, seconds);
        println!("{:<34} {threads:>8} {rate:>14.0} {:>12}", "redb, immediate durability", "-");
        results.push(("redb, immediate durability", threads, rate));
    }
    let best = |prefix: &str, threads: u64| {
        results.iter().filter(|r| r.0.starts_with(prefix) && r.1 == threads).map(|r| r.2).fold(0.0, f64::max)
    };
    for threads in [1, 4] {
        println!(
            "ratio at {threads} thread(s): group commit / redb = {:.2}, fsync each / redb = {:.2}",
            best("lockcore journal, group", threads) / best("redb", threads),
            best("lockcore journal, fsync each", threads) / best("redb", threads)
        );
    }

    // Recovery of `live` kept tickets.
    let path = fresh(&dir, "recovery");
    let all = |_: &TaskId| true;
    {
        let j = FileJournal::open(&path, OpenOptions::new().durability(Durability::Os));
        let (engine, _) = Durable::<u64, _>::open(j, Builder::new(), &all).expect("open");
        for k in 0..live {
            let set = engine.table().try_acquire(Request::new(format!("cmd-{k}")).exclusive(k)).expect("acquire");
            engine.keep(set, [format!("task-{k}")]).expect("keep");
        }
    }
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let t = Instant::now();
    let (engine, report) =
        Durable::<u64, _>::open(FileJournal::open(&path, OpenOptions::new()), Builder::new(), &all).expect("recover");
    let took = t.elapsed();
    assert_eq!(report.retaken.len() as u64, live);
    println!(
        "recovery: {live} live tickets ({:.1} MB journal) re-taken in {:.0} ms ({:.2} us per ticket)",
        bytes as f64 / 1e6,
        took.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e6 / live as f64
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}
