//! Acquire+release round trips per second and latency percentiles of the database backend on
//! PostgreSQL and MariaDB at 1 and 8 connections, beside PostgreSQL's own
//! `pg_try_advisory_lock`/`pg_advisory_unlock` as the baseline.
//!
//! ```text
//! lockcore-sql-bench [--quick] [--seconds S] [--pg URL] [--mysql URL] [--only pg|mysql|advisory]
//! lockcore-sql-bench --migrate URL      # create the lock tables (prefix lockcore_) and exit
//! ```
//! Each connection is a thread with its own backend (its own session and connection), taking
//! and releasing one exclusive key of its own (uncontended: the cost of the round trips, not
//! of waiting).
#![forbid(unsafe_code)]

use lockcore::Request;
use lockcore_sql::{Options, SqlLocks};
use std::time::{Duration, Instant};

struct Cell {
    name: &'static str,
    conns: usize,
    ops: u64,
    secs: f64,
    lat_us: Vec<u32>,
}

impl Cell {
    fn pct(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return 0.0;
        }
        let i = ((self.lat_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.lat_us[i])
    }

    fn line(&self) -> String {
        format!(
            "{:<28} conns={} ops/s={:>8.0} p50={:>7.0}us p99={:>7.0}us p999={:>7.0}us",
            self.name,
            self.conns,
            self.ops as f64 / self.secs,
            self.pct(0.5),
            self.pct(0.99),
            self.pct(0.999)
        )
    }
}

fn run(name: &'static str, conns: usize, secs: f64, op: impl Fn(usize) -> Box<dyn FnMut() + Send> + Sync) -> Cell {
    let dur = Duration::from_secs_f64(secs);
    let results: Vec<Vec<u32>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..conns)
            .map(|t| {
                let mut f = op(t);
                s.spawn(move || {
                    f(); // warm: connect, prepare
                    let mut lat = Vec::new();
                    let start = Instant::now();
                    while start.elapsed() < dur {
                        let t0 = Instant::now();
                        f();
                        lat.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
                    }
                    lat
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("bench thread")).collect()
    });
    let mut lat_us: Vec<u32> = results.into_iter().flatten().collect();
    lat_us.sort_unstable();
    Cell { name, conns, ops: lat_us.len() as u64, secs, lat_us }
}

fn backend_op(url: String, prefix: &'static str) -> impl Fn(usize) -> Box<dyn FnMut() + Send> + Sync {
    move |t| {
        let locks = SqlLocks::connect(&url, Options::new(format!("bench-{t}")).prefix(prefix).listen(false))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let key = format!("bench-key-{t}");
        Box::new(move || {
            let ticket = locks.try_acquire(Request::new("bench").exclusive(key.clone())).expect("uncontended");
            locks.release(&ticket).expect("release");
        })
    }
}

fn advisory_op(url: String) -> impl Fn(usize) -> Box<dyn FnMut() + Send> + Sync {
    move |t| {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap_or_else(|e| panic!("{url}: {e}"));
        let lock = c.prepare("SELECT pg_try_advisory_lock($1)").expect("prepare");
        let unlock = c.prepare("SELECT pg_advisory_unlock($1)").expect("prepare");
        let key = 900_000 + t as i64;
        Box::new(move || {
            let got: bool = c.query_one(&lock, &[&key]).expect("lock").get(0);
            assert!(got, "uncontended advisory lock refused");
            let _: bool = c.query_one(&unlock, &[&key]).expect("unlock").get(0);
        })
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    if let Some(url) = arg("--migrate") {
        match SqlLocks::migrate(&url, &Options::new("migrate")) {
            Ok(()) => println!("migrated {url}"),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let secs: f64 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(if quick { 1.0 } else { 5.0 });
    let pg = arg("--pg").unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
    let my = arg("--mysql").unwrap_or_else(|| "mysql://root@127.0.0.1:3306/test".into());
    let only = arg("--only");
    let want = |n: &str| only.as_deref().is_none_or(|o| o == n);
    let prefix = "lockcore_bench_";
    for url in [&pg, &my] {
        let opts = Options::new("bench").prefix(prefix);
        if let Err(e) = SqlLocks::migrate(url, &opts) {
            eprintln!("cannot prepare {url}: {e}");
            std::process::exit(1);
        }
    }
    let uptime = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "# lockcore-sql-bench: {secs} s per cell, load average {}",
        uptime.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let mut cells = Vec::new();
    for conns in [1, 8] {
        if want("pg") {
            cells.push(run("lockcore-sql postgres", conns, secs, backend_op(pg.clone(), prefix)));
            println!("{}", cells[cells.len() - 1].line());
        }
        if want("mysql") {
            cells.push(run("lockcore-sql mariadb", conns, secs, backend_op(my.clone(), prefix)));
            println!("{}", cells[cells.len() - 1].line());
        }
        if want("advisory") {
            cells.push(run("pg_try_advisory_lock", conns, secs, advisory_op(pg.clone())));
            println!("{}", cells[cells.len() - 1].line());
        }
    }
    let failed = cells.iter().any(|c| c.ops == 0);
    println!("cells={} failed={}", cells.len(), u8::from(failed));
    if failed {
        std::process::exit(1);
    }
}
