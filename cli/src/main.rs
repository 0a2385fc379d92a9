//! `lockcore`: the command-line tool.
//!
//! - `lockcore demo [--threads N] [--keys K] [--batch B] [--seconds S]`: the table under
//!   contention, printing what it did;
//! - `lockcore footprint [--keys N]`: acquires and releases N distinct keys and shows the table's
//!   size and the process's memory returning to idle;
//! - `lockcore bench [--workload NAME] [--quick] [--json FILE] [--plot DIR]`: lockcore against
//!   the designs users would pick instead, over a named workload matrix;
//! - `lockcore crashtest [--kills N]`: kills a process that keeps durable tickets, recovers
//!   after each kill and checks that nothing is lost or stale.
#![forbid(unsafe_code)]

mod bench;
mod bench_plot;
mod check;
mod crashtest;
mod demo;
mod footprint;
mod rng;

use std::process::ExitCode;

const USAGE: &str = "usage: lockcore <command> [options]

commands:
  check       model-check the command lifecycle (acquire, validate, execute, async tasks,
              end-action, crash and recovery) on the real table and journal
              --commands N (3)  --keys K (3)  --tasks T (2)  --restarts R (1)  --threads J (cores)
              --mutant NAME  --list-mutants  --explore [--port P (3000)]
              --bfs (breadth-first: shorter counterexamples, far more memory)
              --seconds S (stop after S seconds: verdict=incomplete unless a property failed)
              last line: verdict=pass|fail ... states=N unique=M depth=D seconds=S
  demo        run the lock table under contention and print what it did
              --threads N (4)  --keys K (64)  --batch B (4)  --seconds S (3)  --write-pct P (30)
  footprint   acquire and release N distinct keys; show that memory returns to idle
              --keys N (10000000)
  crashtest   SIGKILL a process that keeps and ends durable tickets, recover after each kill,
              and check that nothing acknowledged is lost and nothing ended comes back
              --kills N (200)  --seed S  --dir D (a temporary directory)  --max-delay-ms M (25)
              last line: kills=N lost=L stale=S unreadable=U
  bench       lockcore against the baselines (global mutex, DashMap, per-key RwLock, tokio
              RwLock, atomic-word limit) over a named workload matrix, interleaved runs
              --workload NAME[,NAME]  --threads L  --seconds S (0.3)  --reps N (5, >= 5)
              --warmup S (0.1)  --impls L  --json FILE  --plot DIR  --list  --quick (< 60 s)
              --replot FILE --plot DIR (plots of an earlier --json run)
              last line: ratio_vs_best_baseline=X.XX (uniform8, 2 threads)
  help        print this text";

/// Options that take no value.
const FLAGS: &[&str] = &["list-mutants", "explore", "bfs", "quick", "list"];

/// Parsed `--name value` options.
pub(crate) struct Options(Vec<(String, String)>);

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(name) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument {a:?}"));
            };
            if FLAGS.contains(&name) {
                out.push((name.to_string(), String::new()));
                continue;
            }
            let Some(value) = it.next() else {
                return Err(format!("option --{name} needs a value"));
            };
            out.push((name.to_string(), value.clone()));
        }
        Ok(Self(out))
    }

    /// The value of `--name`, parsed, or `default`; an error names the option.
    pub(crate) fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.0.iter().rev().find(|(n, _)| n == name) {
            None => Ok(default),
            Some((_, v)) => v.parse().map_err(|_| format!("--{name}: cannot read {v:?} as a number")),
        }
    }

    /// Whether `--name` was given.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }

    /// The raw value of `--name`, if given.
    pub(crate) fn value(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Fails on options that no command knows, so a typo is not silently ignored.
    pub(crate) fn only(&self, known: &[&str]) -> Result<(), String> {
        match self.0.iter().find(|(n, _)| !known.contains(&n.as_str())) {
            Some((n, _)) => Err(format!("unknown option --{n} (known: {})", known.join(", "))),
            None => Ok(()),
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => ("help", &[][..]),
    };
    let opts = Options::parse(rest)?;
    match cmd {
        "demo" => demo::run(&opts),
        "bench" => bench::run(&opts),
        "footprint" => footprint::run(&opts),
        "check" => check::run(&opts),
        "crashtest" => crashtest::run(&opts),
        "crash-child" => crashtest::child(&opts),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command {other:?}\n\n{USAGE}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lockcore: {e}");
            ExitCode::FAILURE
        }
    }
}
