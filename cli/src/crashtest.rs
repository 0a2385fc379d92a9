//! `lockcore crashtest`: kill a process that keeps and ends tickets, at random moments, with
//! SIGKILL, and check after every kill that recovery lost nothing and brought back nothing.
//!
//! The child (`lockcore crash-child`, not for people) opens the journal, recovers, then keeps
//! tickets and ends them as fast as it can, printing a line *after* each keep is acknowledged
//! (`kept ID TOKEN`) and *before* and after each end (`ending ID`, `ended ID`). The parent reads
//! those lines, kills the child, recovers the journal itself with a task registry that has
//! lost some tasks, and checks:
//! - **lost**: a ticket whose keep was acknowledged, and whose end was not begun, is neither
//!   re-taken nor cleaned;
//! - **stale**: a ticket whose end was acknowledged (or that recovery cleaned) comes back;
//! - **unreadable**: the journal does not open, or holds tickets that cannot be re-taken;
//! - **fencing**: a re-taken lock's token is not above every token acknowledged before.

use crate::rng::Rng;
use crate::Options;
use lockcore::{Builder, Request};
use lockcore_journal::{Durability, Durable, FileJournal, KeepId, OpenOptions, TaskId};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEYS: u64 = 256;
const MAX_KEPT: usize = 40;

fn journal_options(durability: &str, compact_at: u64) -> Result<OpenOptions, String> {
    let d = match durability {
        "each" => Durability::SyncEach,
        "group" => Durability::Group { window: Duration::ZERO },
        "os" => Durability::Os,
        other => return Err(format!("--durability: {other:?} is not each, group or os")),
    };
    Ok(OpenOptions::new().durability(d).compact_at(compact_at))
}

/// The child: recover, then keep and end tickets until killed.
pub(crate) fn child(opts: &Options) -> Result<(), String> {
    opts.only(&["journal", "seed", "durability", "compact-at"])?;
    let path: String = opts.get("journal", String::new())?;
    let seed: u64 = opts.get("seed", 1)?;
    let durability: String = opts.get("durability", "group".to_string())?;
    let compact_at: u64 = opts.get("compact-at", 32 << 10)?;
    let journal = FileJournal::open(&path, journal_options(&durability, compact_at)?);
    // The child's own registry knows every task: the parent plays the task system that loses some.
    let all = |_: &TaskId| true;
    let (engine, report) = Durable::<u64, _>::open(journal, Builder::new(), &all).map_err(|e| e.to_string())?;
    let out = std::io::stdout();
    let mut out = out.lock();
    let say = |out: &mut std::io::StdoutLock<'_>, line: String| -> Result<(), String> {
        writeln!(out, "{line}").and_then(|()| out.flush()).map_err(|e| e.to_string())
    };
    say(&mut out, format!("ready {}", report.epoch))?;
    let mut kept: Vec<KeepId> = report.retaken.iter().map(|r| r.kept.id).collect();
    let mut rng = Rng(seed);
    let mut n = 0u64;
    loop {
        if kept.len() < MAX_KEPT && (kept.is_empty() || rng.below(3) != 0) {
            n += 1;
            let owner = format!("cmd-{}-{n}", report.epoch);
            let mut req = Request::new(owner.as_str());
            for _ in 0..1 + rng.below(4) {
                let key = rng.below(KEYS);
                req = if rng.below(2) == 0 { req.shared(key) } else { req.exclusive(key) };
            }
            let Ok(set) = engine.table().try_acquire(req) else { continue };
            let token = set.locks().filter_map(|(_, _, t)| t).max().map_or(0, |t| t.0);
            let id = engine.keep(set, [format!("task-{owner}")]).map_err(|e| e.to_string())?;
            say(&mut out, format!("kept {} {token}", id.0))?;
            kept.push(id);
        } else {
            let id = kept.swap_remove(rng.below(kept.len() as u64) as usize);
            say(&mut out, format!("ending {}", id.0))?;
            engine.end(id).map_err(|e| e.to_string())?;
            say(&mut out, format!("ended {}", id.0))?;
        }
    }
}

/// What the parent knows from the child's acknowledgements.
#[derive(Default)]
struct Ledger {
    /// The last epoch started, by a child or by the parent's recovery.
    epoch: u64,
    /// The highest token acknowledged before the current child started: every token the child
    /// grants must be above it.
    floor: u64,
    /// Acknowledged kept, end not begun: must come back.
    live: BTreeSet<u64>,
    /// End begun but not acknowledged: may come back or not.
    ending: BTreeSet<u64>,
    /// End acknowledged, or cleaned by recovery: must never come back.
    gone: BTreeSet<u64>,
    /// Highest fencing token acknowledged so far.
    max_token: u64,
}

#[derive(Default)]
struct Tally {
    lost: u64,
    stale: u64,
    unreadable: u64,
    fencing: u64,
    keeps: u64,
    ends: u64,
    retaken: u64,
    cleaned: u64,
    torn_bytes: u64,
}

impl Ledger {
    fn read(&mut self, line: &str, tally: &mut Tally) {
        let mut words = line.split_whitespace();
        let (Some(what), Some(id)) = (words.next(), words.next().and_then(|w| w.parse::<u64>().ok())) else {
            return;
        };
        match what {
            "ready" => {
                if id <= self.epoch {
                    println!("the child started epoch {id} after epoch {}", self.epoch);
                    tally.fencing += 1;
                }
                self.epoch = id;
            }
            "kept" => {
                self.live.insert(id);
                let token = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                if token != 0 && token <= self.floor {
                    println!("the child granted token {token}, not above {} from before it started", self.floor);
                    tally.fencing += 1;
                }
                self.max_token = self.max_token.max(token);
                tally.keeps += 1;
            }
            "ending" => {
                self.live.remove(&id);
                self.ending.insert(id);
            }
            "ended" => {
                self.ending.remove(&id);
                self.gone.insert(id);
                tally.ends += 1;
            }
            _ => {}
        }
    }
}

/// The parent: `kills` cycles of spawn, run, SIGKILL, recover and check.
pub(crate) fn run(opts: &Options) -> Result<(), String> {
    opts.only(&["kills", "seed", "dir", "max-delay-ms"])?;
    let kills: u64 = opts.get("kills", 200)?;
    let seed: u64 = opts.get("seed", std::process::id() as u64)?;
    let max_delay: u64 = opts.get("max-delay-ms", 25)?;
    let dir: String = opts.get("dir", String::new())?;
    let dir = if dir.is_empty() {
        std::env::temp_dir().join(format!("lockcore-crashtest-{}", std::process::id()))
    } else {
        PathBuf::from(dir)
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("journal");
    let _ = std::fs::remove_file(&path);
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    println!("crashtest: {kills} kills, seed {seed}, journal {}", path.display());
    let started = Instant::now();
    let mut rng = Rng(seed);
    let mut ledger = Ledger::default();
    let mut tally = Tally::default();
    for kill in 0..kills {
        let durability = ["each", "group", "os"][rng.below(3) as usize];
        let mut child = Command::new(&exe)
            .args(["crash-child", "--journal"])
            .arg(&path)
            .args(["--seed", &rng.next().to_string(), "--durability", durability])
            .args(["--compact-at", &(4096 + rng.below(64 << 10)).to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the child: {e}"))?;
        let stdout = child.stdout.take().ok_or("the child has no stdout")?;
        let stderr = child.stderr.take().ok_or("the child has no stderr")?;
        // Read the child's lines as they come, so it never blocks on a full pipe and the kill
        // lands inside its journal work.
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let errors = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
        ledger.floor = ledger.max_token;
        // One kill in ten lands during the child's own recovery; the rest while it works.
        if rng.below(10) != 0 {
            if let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
                ledger.read(&line, &mut tally);
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(max_delay * 1000 + 1)));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().map_err(|e| e.to_string())?;
        let _ = reader.join();
        for line in rx.try_iter() {
            ledger.read(&line, &mut tally);
        }
        let errors = errors.join().unwrap_or_default();
        if std::os::unix::process::ExitStatusExt::signal(&status) != Some(9) {
            return Err(format!(
                "kill {kill}: the child failed by itself ({status}) before it was killed: {}",
                errors.trim()
            ));
        }
        let before = ledger.epoch;
        ledger.epoch = check(&path, kill, &mut rng, &mut ledger, &mut tally, before)?;
    }
    println!(
        "acknowledged keeps={} ends={}; recovery re-took {} and cleaned {} tickets; {} torn bytes dropped; \
         fencing violations={}; {:.1} s",
        tally.keeps,
        tally.ends,
        tally.retaken,
        tally.cleaned,
        tally.torn_bytes,
        tally.fencing,
        started.elapsed().as_secs_f64()
    );
    println!("kills={kills} lost={} stale={} unreadable={}", tally.lost, tally.stale, tally.unreadable);
    let _ = std::fs::remove_dir_all(&dir);
    if tally.lost + tally.stale + tally.unreadable + tally.fencing > 0 {
        return Err("the crash test found lost, stale or unreadable tickets, or tokens that went backwards".into());
    }
    Ok(())
}

/// Recovers the journal after a kill, with a task system that lost one task in eight, and
/// checks the result against the ledger. Returns the epoch recovery started.
fn check(
    path: &Path,
    kill: u64,
    rng: &mut Rng,
    ledger: &mut Ledger,
    tally: &mut Tally,
    epoch: u64,
) -> Result<u64, String> {
    let lost_salt = rng.next();
    let registry = move |t: &TaskId| {
        let mut h = Rng(lost_salt ^ t.as_str().bytes().fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(b.into())));
        h.below(8) != 0
    };
    let journal = FileJournal::open(path, OpenOptions::new().durability(Durability::SyncEach));
    let (engine, report) = match Durable::<u64, _>::open(journal, Builder::new(), &registry) {
        Ok(r) => r,
        Err(e) => {
            println!("kill {kill}: the journal does not open: {e}");
            tally.unreadable += 1;
            return Ok(epoch);
        }
    };
    if report.epoch <= epoch {
        println!("kill {kill}: recovery started epoch {} after epoch {epoch}", report.epoch);
        tally.fencing += 1;
    }
    tally.torn_bytes += report.tail.torn_bytes;
    for u in &report.unrecovered {
        println!("kill {kill}: {:?} could not be re-taken: {u:?}", u.id());
        tally.unreadable += 1;
    }
    let back: BTreeMap<u64, bool> = report
        .retaken
        .iter()
        .map(|r| (r.kept.id.0, true))
        .chain(report.cleaned.iter().map(|c| (c.0 .0, false)))
        .chain(report.unrecovered.iter().map(|u| (u.id().0, true)))
        .collect();
    for id in &ledger.live {
        if !back.contains_key(id) {
            println!("kill {kill}: {} was acknowledged as kept and is gone", KeepId(*id));
            tally.lost += 1;
        }
    }
    for id in back.keys() {
        if ledger.gone.contains(id) {
            println!("kill {kill}: {} was ended (or cleaned) and came back", KeepId(*id));
            tally.stale += 1;
        }
    }
    let mut max_token = ledger.max_token;
    for r in &report.retaken {
        for l in &r.kept.ticket.locks {
            let Some(t) = l.token else { continue };
            if t.0 <= ledger.max_token {
                println!("kill {kill}: {} re-took {:?} with token {} <= {}", r.kept.id, l.key, t.0, ledger.max_token);
                tally.fencing += 1;
            }
            max_token = max_token.max(t.0);
        }
    }
    // What recovery decided is now the truth: re-taken tickets are live, cleaned ones gone.
    ledger.max_token = max_token;
    ledger.ending.clear();
    ledger.live = report.retaken.iter().map(|r| r.kept.id.0).collect();
    ledger.gone.extend(report.cleaned.iter().map(|c| c.0 .0));
    tally.retaken += report.retaken.len() as u64;
    tally.cleaned += report.cleaned.len() as u64;
    let _ = engine;
    Ok(report.epoch)
}
