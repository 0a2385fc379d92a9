//! `lockcore check`: model-checks the command lifecycle on the real table and recovery.

use crate::Options;
use lockcore_model::lifecycle::{Action, Config, Lifecycle, Mutant, Phase, State};
use stateright::{Checker, Expectation, HasDiscoveries, Model};
use std::time::{Duration, Instant};

/// What one check found.
pub(crate) struct Verdict {
    pub(crate) failed: Vec<&'static str>,
    pub(crate) unreached: Vec<&'static str>,
}

fn describe_action(a: &Action) -> String {
    match *a {
        Action::Start { c, wait: false } => format!("c{c} tries its keys"),
        Action::Start { c, wait: true } => format!("c{c} asks for its keys, waiting"),
        Action::Retry(c) => format!("c{c} is granted its keys"),
        Action::Validate { c, ok: true } => format!("c{c} validates"),
        Action::Validate { c, ok: false } => format!("c{c} fails validation"),
        Action::ExecuteFail(c) => format!("c{c} fails executing"),
        Action::ExecuteDone(c) => format!("c{c} executes and releases"),
        Action::SpawnTasks(c) => format!("c{c} creates its async tasks"),
        Action::Persist(c) => format!("c{c} persists its tasks and keeps its locks"),
        Action::Task { c, t, to } => format!("task {t} of c{c} -> {to:?}"),
        Action::EndAction(c) => format!("c{c} runs its end-action"),
        Action::Restart => "the engine crashes and restarts".to_string(),
    }
}

fn describe_state(s: &State) -> String {
    let phases: Vec<String> = s
        .commands
        .iter()
        .enumerate()
        .map(|(c, cmd)| {
            let tasks: String = cmd.tasks.iter().map(|t| format!("{t:?}").chars().next().unwrap_or('?')).collect();
            let phase = match cmd.phase {
                Phase::Done(end) => format!("{end:?}"),
                p => format!("{p:?}"),
            };
            if tasks.chars().all(|ch| ch == 'N') {
                format!("c{c}:{phase}")
            } else {
                format!("c{c}:{phase}[{tasks}]")
            }
        })
        .collect();
    let held: Vec<String> =
        s.held.iter().map(|(c, k, m)| format!("c{c} {} k{k}", if *m == 1 { "X" } else { "S" })).collect();
    let mut out =
        format!("{} | held: {}", phases.join(" "), if held.is_empty() { "-".into() } else { held.join(", ") });
    if let Some(e) = &s.error {
        out.push_str(&format!(" | real API error: {e}"));
    }
    out
}

/// Runs one exhaustive check and prints its report.
pub(crate) fn check(
    cfg: Config,
    mutant: Option<Mutant>,
    threads: usize,
    bfs: bool,
    limit: Option<Duration>,
    quiet: bool,
) -> Verdict {
    let model = Lifecycle::new(cfg, mutant);
    let properties = model.properties();
    let started = Instant::now();
    let mut builder = model.checker().threads(threads.max(1));
    if let Some(m) = mutant {
        // A mutant run only has to show its property failing: stop at the first counterexample.
        builder = builder.finish_when(HasDiscoveries::AnyOf([m.breaks()].into_iter().collect()));
    }
    // Depth-first needs memory for one path, breadth-first for a whole frontier (gigabytes on
    // large configurations) but finds short counterexamples: mutant runs and --bfs use it.
    if bfs || mutant.is_some() {
        report(builder.spawn_bfs(), &properties, mutant, started, limit, quiet)
    } else {
        report(builder.spawn_dfs(), &properties, mutant, started, limit, quiet)
    }
}

fn report(
    checker: impl Checker<Lifecycle>,
    properties: &[stateright::Property<Lifecycle>],
    mutant: Option<Mutant>,
    started: Instant,
    limit: Option<Duration>,
    quiet: bool,
) -> Verdict {
    // stateright's own timeout is only looked at when a thread runs out of work (never, with one
    // depth-first thread): watch the clock here, and stop the process at the limit.
    while !checker.is_done() {
        if let Some(limit) = limit.filter(|l| started.elapsed() >= *l) {
            let (states, unique, depth) = (checker.state_count(), checker.unique_state_count(), checker.max_depth());
            let found: Vec<&str> = properties
                .iter()
                .filter(|p| p.expectation != Expectation::Sometimes && checker.discovery(p.name).is_some())
                .map(|p| p.name)
                .collect();
            let secs = started.elapsed().as_secs_f64();
            if !quiet {
                println!("states generated {states}, unique {unique}, max depth {depth}, {secs:.1} s (stopped at the {:.0} s limit)", limit.as_secs_f64());
                for name in &found {
                    println!("  FAIL  {name:<55} FAILS (counterexample not printed: rerun without --seconds)");
                }
                match found.first() {
                    Some(p) => println!(
                        "verdict=fail property={p:?} states={states} unique={unique} depth={depth} seconds={secs:.1}"
                    ),
                    None => {
                        println!("verdict=incomplete states={states} unique={unique} depth={depth} seconds={secs:.1}")
                    }
                }
            }
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let checker = checker.join();
    let secs = started.elapsed().as_secs_f64();
    let (states, unique, depth) = (checker.state_count(), checker.unique_state_count(), checker.max_depth());
    let mut verdict = Verdict { failed: Vec::new(), unreached: Vec::new() };
    if !quiet {
        println!(
            "states generated {states}, unique {unique}, max depth {depth}, {secs:.1} s ({:.0} states/s)",
            states as f64 / secs.max(1e-9)
        );
    }
    if let (Some(m), false) = (mutant, quiet) {
        println!(
            "  (a mutant run stops at the first counterexample of {:?}: the other verdicts are partial)",
            m.breaks()
        );
    }
    for p in properties {
        if mutant.is_some_and(|m| m.breaks() != p.name) {
            continue;
        }
        let found = checker.discovery(p.name);
        let (ok, line) = match (&p.expectation, &found) {
            (Expectation::Sometimes, Some(_)) => (true, "reached"),
            (Expectation::Sometimes, None) => (false, "NEVER REACHED (the model is vacuous here)"),
            (_, None) => (true, "holds"),
            (_, Some(_)) => (false, "FAILS"),
        };
        if !quiet {
            println!("  {:<5} {:<55} {line}", if ok { "ok" } else { "FAIL" }, p.name);
        }
        if !ok {
            match p.expectation {
                Expectation::Sometimes => verdict.unreached.push(p.name),
                _ => verdict.failed.push(p.name),
            }
        }
        if let (false, Some(path), false) = (ok, found, quiet) {
            println!("    counterexample for {:?}:", p.name);
            let steps = path.into_vec();
            for (i, (state, action)) in steps.iter().enumerate() {
                let next = match action {
                    Some(a) => format!(" -> {}", describe_action(a)),
                    None => String::new(),
                };
                println!("    {i:>3}. {}{next}", describe_state(state));
            }
        }
    }
    if !quiet {
        match (verdict.failed.first(), verdict.unreached.first()) {
            (Some(p), _) | (None, Some(p)) => println!(
                "verdict=fail property={:?} states={states} unique={unique} depth={depth} seconds={secs:.1}",
                p
            ),
            (None, None) => println!("verdict=pass states={states} unique={unique} depth={depth} seconds={secs:.1}"),
        }
    }
    verdict
}

pub(crate) fn run(opts: &Options) -> Result<(), String> {
    opts.only(&[
        "commands",
        "keys",
        "tasks",
        "restarts",
        "threads",
        "mutant",
        "list-mutants",
        "explore",
        "port",
        "bfs",
        "seconds",
    ])?;
    if opts.has("list-mutants") {
        for m in Mutant::ALL {
            println!("{:<28} {} (must fail: {})", m.name(), m.describe(), m.breaks());
        }
        return Ok(());
    }
    let d = Config::default();
    let cfg = Config {
        commands: opts.get("commands", d.commands)?,
        keys: opts.get("keys", d.keys)?,
        tasks: opts.get("tasks", d.tasks)?,
        restarts: opts.get("restarts", d.restarts)?,
    };
    if cfg.commands == 0 || cfg.commands > 8 || cfg.keys == 0 || cfg.keys > 8 || cfg.tasks > 4 || cfg.restarts > 4 {
        return Err("the model takes 1-8 commands, 1-8 keys, 0-4 tasks and 0-4 restarts".into());
    }
    let mutant = match opts.value("mutant") {
        None => None,
        Some(name) => Some(Mutant::from_name(name).ok_or_else(|| {
            let names: Vec<&str> = Mutant::ALL.iter().map(|m| m.name()).collect();
            format!("no mutant {name:?}; mutants: {}", names.join(", "))
        })?),
    };
    let threads: usize = opts.get("threads", std::thread::available_parallelism().map_or(1, |n| n.get()))?;
    if opts.has("explore") {
        let port: u16 = opts.get("port", 3000)?;
        println!("lockcore check: serving stateright's Explorer on http://127.0.0.1:{port} ({cfg})");
        Lifecycle::new(cfg, mutant).checker().threads(threads).serve(("127.0.0.1", port));
        return Ok(());
    }
    println!(
        "lockcore check: {cfg}, {threads} thread(s), {}",
        mutant.map_or("the real engine".to_string(), |m| format!("mutant {} ({})", m.name(), m.describe()))
    );
    let seconds: f64 = opts.get("seconds", 0.0)?;
    let limit = (seconds > 0.0).then(|| Duration::from_secs_f64(seconds));
    let verdict = check(cfg, mutant, threads, opts.has("bfs"), limit, false);
    if verdict.failed.is_empty() && verdict.unreached.is_empty() {
        Ok(())
    } else {
        Err(format!("the check failed: {}", [verdict.failed, verdict.unreached].concat().join(", ")))
    }
}
