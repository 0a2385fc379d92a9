//! The command lifecycle of an engine (seeds 000 and 001), as a stateright model whose every
//! step runs the real `lockcore` table and the real `lockcore-journal` recovery.
//!
//! N commands over K keys. Command `i` writes key `i % K` and reads key `(i + 1) % K`, so
//! neighbours conflict in a ring (the shape that deadlocks when keys are taken one at a time).
//! Each command goes: start (try: a conflict rejects it; or wait: it waits until its keys are
//! free) -> validate (failure releases at once) -> execute (failure releases) -> either release
//! at the end of execute, or spawn T asynchronous tasks, persist them (the kept ticket is
//! journaled), let them finish, fail or be lost, and release at the end-action. The engine may
//! crash and restart up to R times: in-memory locks are lost, commands whose tasks were persisted
//! are recovered by the real `Durable::open` (re-taken if a task still exists, cleaned if all are
//! gone), everything else in flight is aborted, and tasks that were created but never persisted
//! keep running without locks.
//!
//! The state has two halves: the *specification* (each command's phase and tasks, advanced by
//! the rules above) and the *real engine* (what the real table holds and what the real journal
//! keeps, read back after every step). Properties compare them.

mod world;

use lockcore::Mode;
use stateright::{Model, Property};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use world::{Outcome, World};

/// What a table holds: (command, key, mode number) triples.
pub type Held = BTreeSet<(u8, u8, u8)>;

/// The size of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Commands.
    pub commands: usize,
    /// Keys.
    pub keys: usize,
    /// Asynchronous tasks per command that keeps its locks.
    pub tasks: usize,
    /// Engine crashes and restarts.
    pub restarts: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self { commands: 3, keys: 3, tasks: 2, restarts: 1 }
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "commands={} keys={} tasks={} restarts={}", self.commands, self.keys, self.tasks, self.restarts)
    }
}

/// A deliberately broken way of using the table or of recovering, and the property that must
/// catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mutant {
    /// A failed validation keeps the command's locks.
    NoReleaseOnValidateFail,
    /// The end-action may run (and release) while tasks are still running.
    EndBeforeTasks,
    /// Recovery re-takes tickets whose tasks are all gone.
    NoClean,
    /// Recovery forgets to re-take the locks of kept tickets.
    NoRetake,
    /// Keys are taken one at a time, holding the others while waiting.
    OneAtATime,
}

impl Mutant {
    /// Every mutant.
    pub const ALL: [Mutant; 5] =
        [Self::NoReleaseOnValidateFail, Self::EndBeforeTasks, Self::NoClean, Self::NoRetake, Self::OneAtATime];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::NoReleaseOnValidateFail => "no_release_on_validate_fail",
            Self::EndBeforeTasks => "end_before_tasks",
            Self::NoClean => "no_clean",
            Self::NoRetake => "no_retake",
            Self::OneAtATime => "one_at_a_time",
        }
    }

    /// The mutant called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// What it breaks.
    pub fn describe(self) -> &'static str {
        match self {
            Self::NoReleaseOnValidateFail => "a failed validation keeps the command's locks",
            Self::EndBeforeTasks => "the end-action releases while tasks still run",
            Self::NoClean => "recovery re-takes the locks of tickets whose tasks are all gone",
            Self::NoRetake => "recovery forgets to re-take the locks of kept tickets",
            Self::OneAtATime => "keys are taken one at a time while holding the others",
        }
    }

    /// The property that must fail.
    pub fn breaks(self) -> &'static str {
        match self {
            Self::NoReleaseOnValidateFail => STALE,
            Self::EndBeforeTasks => LOST,
            Self::NoClean => STALE,
            Self::NoRetake => LOST,
            Self::OneAtATime => DEADLOCK,
        }
    }
}

/// Property names.
pub const MUTEX: &str = "mutual exclusion";
/// No lock held by a command outside acquire..end-action.
pub const STALE: &str = "no stale lock";
/// Every command between acquire and end-action holds all its keys.
pub const LOST: &str = "no lost lock";
/// Some command can always move while one is unfinished.
pub const DEADLOCK: &str = "no deadlock";
/// The real table holds what the specification says.
pub const REFINES: &str = "refinement: table";
/// The real journal keeps what the specification says.
pub const JOURNAL: &str = "refinement: journal";
/// Tokens after a restart are above all tokens before it.
pub const FENCING: &str = "fencing across restarts";
/// No real API call failed.
pub const API_OK: &str = "real API calls succeed";
/// Every command finishes.
pub const FINISHES: &str = "every command finishes";

/// Where a command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Not started.
    Idle,
    /// Waiting for its keys (holding none, or, for the one-at-a-time mutant, some).
    Waiting,
    /// Holding its keys, validating.
    Validating,
    /// Holding its keys, executing.
    Executing,
    /// Its tasks exist in the task system, not yet persisted with the kept ticket.
    TasksCreated,
    /// Its ticket is kept (journaled); tasks run until the end-action.
    Tasks,
    /// Finished.
    Done(End),
}

/// How a command finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum End {
    /// Released at the end of execute.
    Released,
    /// Released by the end-action after its tasks.
    EndAction,
    /// Its try found a conflict.
    Rejected,
    /// Validation failed.
    ValidationFailed,
    /// Execution failed.
    ExecutionFailed,
    /// In flight (not persisted) when the engine crashed.
    Aborted,
    /// Recovered from the journal with all its tasks gone: cleaned.
    Cleaned,
}

/// An asynchronous task, as the external task system sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskState {
    /// Not created.
    None,
    /// Running.
    Running,
    /// Finished (still known to the task system).
    Finished,
    /// Failed (still known to the task system).
    Failed,
    /// The task system no longer knows it.
    Lost,
}

impl TaskState {
    fn exists(self) -> bool {
        matches!(self, Self::Running | Self::Finished | Self::Failed)
    }
}

/// One command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Command {
    /// Its phase.
    pub phase: Phase,
    /// Its tasks.
    pub tasks: Vec<TaskState>,
    /// Keys taken so far (one-at-a-time mutant; otherwise 0 or all).
    pub taken: u8,
    /// Re-taken by a recovery.
    pub recovered: bool,
    /// Was granted its keys after waiting for them.
    pub waited: bool,
}

/// A step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Command `c` asks for its keys: try (`wait: false`) or wait.
    Start {
        /// The command.
        c: u8,
        /// Wait instead of failing on a conflict.
        wait: bool,
    },
    /// A waiting command is granted its keys.
    Retry(u8),
    /// Validation succeeds or fails.
    Validate {
        /// The command.
        c: u8,
        /// Whether it succeeds.
        ok: bool,
    },
    /// Execution fails (locks released).
    ExecuteFail(u8),
    /// Execution ends and releases (no async tasks).
    ExecuteDone(u8),
    /// Execution creates its async tasks in the task system.
    SpawnTasks(u8),
    /// The kept ticket and its tasks are persisted (journaled).
    Persist(u8),
    /// Task `t` of command `c` moves to `to` (finished, failed, or lost by the task system).
    Task {
        /// The command.
        c: u8,
        /// The task.
        t: u8,
        /// Its new state.
        to: TaskState,
    },
    /// The end-action: the kept locks are released.
    EndAction(u8),
    /// The engine crashes and restarts.
    Restart,
}

/// How to rebuild the real engine of a state (see `world`). Not part of the state's identity.
#[derive(Debug, Clone)]
pub struct Replay {
    image: Arc<Vec<u8>>,
    known: Arc<BTreeSet<String>>,
    log: Arc<Vec<Action>>,
    /// Highest fencing token per key granted in earlier runs, and in this run so far.
    floor: Arc<BTreeMap<u8, u64>>,
    seen: Arc<BTreeMap<u8, u64>>,
}

/// A model state: the specification's commands, and what the real engine holds and keeps.
#[derive(Debug, Clone)]
pub struct State {
    /// The commands.
    pub commands: Vec<Command>,
    /// Restarts so far.
    pub restarts: u8,
    /// What the real table holds: (command, key, mode).
    pub held: Held,
    /// What the real journal keeps: (command, task numbers).
    pub journaled: BTreeSet<(u8, Vec<u8>)>,
    /// Unfinished commands, none of which can move.
    pub stuck: bool,
    /// A token granted after a restart was not above every token before it.
    pub fence_violation: bool,
    /// A real API call failed.
    pub error: Option<String>,
    replay: Replay,
}

impl State {
    fn identity(&self) -> impl Hash + PartialEq + '_ {
        (&self.commands, self.restarts, &self.held, &self.journaled, self.stuck, self.fence_violation, &self.error)
    }
}

impl Hash for State {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.identity().hash(h);
    }
}

impl PartialEq for State {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity()
    }
}

impl Eq for State {}

/// The lifecycle model.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    /// Its size.
    pub cfg: Config,
    /// The deliberately broken variant checked, if any.
    pub mutant: Option<Mutant>,
}

impl Lifecycle {
    /// The model of `cfg`, correct or broken by `mutant`.
    pub fn new(cfg: Config, mutant: Option<Mutant>) -> Self {
        Self { cfg, mutant }
    }

    /// The keys command `c` declares, with their modes, in the order it takes them one at a
    /// time: it writes `c % K` and reads `(c + 1) % K`.
    pub fn declared(&self, c: usize) -> Vec<(u8, Mode)> {
        let k = self.cfg.keys.max(1);
        let mut out = vec![((c % k) as u8, Mode::EXCLUSIVE)];
        if k > 1 {
            out.push((((c + 1) % k) as u8, Mode::SHARED));
        }
        out
    }

    /// What the specification says the table holds in `s`.
    pub fn spec_held(&self, s: &State) -> Held {
        let mut out = BTreeSet::new();
        for (c, cmd) in s.commands.iter().enumerate() {
            let n = match cmd.phase {
                Phase::Validating | Phase::Executing | Phase::TasksCreated | Phase::Tasks => usize::MAX,
                Phase::Waiting => cmd.taken as usize,
                _ => 0,
            };
            for (key, mode) in self.declared(c).into_iter().take(n) {
                out.insert((c as u8, key, world::mode_number(mode)));
            }
        }
        out
    }

    /// What the specification says the journal keeps in `s`.
    pub fn spec_journaled(&self, s: &State) -> BTreeSet<(u8, Vec<u8>)> {
        s.commands
            .iter()
            .enumerate()
            .filter(|(_, cmd)| cmd.phase == Phase::Tasks)
            .map(|(c, _)| (c as u8, (0..self.cfg.tasks as u8).collect()))
            .collect()
    }

    fn initial(&self) -> State {
        let n = self.cfg.commands;
        let mut s = State {
            commands: vec![
                Command {
                    phase: Phase::Idle,
                    tasks: vec![TaskState::None; self.cfg.tasks],
                    taken: 0,
                    recovered: false,
                    waited: false
                };
                n
            ],
            restarts: 0,
            held: BTreeSet::new(),
            journaled: BTreeSet::new(),
            stuck: false,
            fence_violation: false,
            error: None,
            replay: Replay {
                image: Arc::new(Vec::new()),
                known: Arc::new(BTreeSet::new()),
                log: Arc::new(Vec::new()),
                floor: Arc::new(BTreeMap::new()),
                seen: Arc::new(BTreeMap::new()),
            },
        };
        match World::rebuild(self, &s.replay) {
            Ok(w) => self.observe(&mut s, &w),
            Err(e) => s.error = Some(e),
        }
        s
    }

    /// Reads the real engine back into the state, and checks fencing and deadlock on it.
    fn observe(&self, s: &mut State, w: &World) {
        let (held, tokens) = w.held();
        s.held = held;
        s.journaled = w.journaled();
        let mut seen = (*s.replay.seen).clone();
        for (key, token) in tokens {
            if s.replay.floor.get(&key).is_some_and(|&f| token <= f) {
                s.fence_violation = true;
            }
            let e = seen.entry(key).or_insert(0);
            *e = token.max(*e);
        }
        s.replay.seen = Arc::new(seen);
        let idle = s.commands.iter().any(|c| c.phase == Phase::Idle);
        let moving = s.commands.iter().any(|c| !matches!(c.phase, Phase::Idle | Phase::Waiting | Phase::Done(_)));
        let waiting: Vec<usize> =
            s.commands.iter().enumerate().filter(|(_, c)| c.phase == Phase::Waiting).map(|(i, _)| i).collect();
        s.stuck = !idle && !moving && !waiting.is_empty() && !waiting.iter().any(|&c| w.could_take(self, c));
    }

    fn crash(&self, last: &State) -> State {
        let mut s = last.clone();
        s.restarts += 1;
        let w = match World::rebuild(self, &last.replay) {
            Ok(w) => w,
            Err(e) => {
                s.error = Some(e);
                return s;
            }
        };
        let mut known = BTreeSet::new();
        for (c, cmd) in s.commands.iter_mut().enumerate() {
            for (t, task) in cmd.tasks.iter().enumerate() {
                if task.exists() {
                    known.insert(world::task(c, t));
                }
            }
            cmd.phase = match cmd.phase {
                Phase::Idle => Phase::Idle,
                Phase::Done(end) => Phase::Done(end),
                Phase::Tasks if cmd.tasks.iter().any(|t| t.exists()) => {
                    cmd.recovered = true;
                    Phase::Tasks
                }
                Phase::Tasks => Phase::Done(End::Cleaned),
                _ => Phase::Done(End::Aborted),
            };
            cmd.taken = 0;
        }
        let mut floor = (*last.replay.floor).clone();
        for (&k, &t) in last.replay.seen.iter() {
            let e = floor.entry(k).or_insert(0);
            *e = t.max(*e);
        }
        s.replay = Replay {
            image: Arc::new(w.image()),
            known: Arc::new(known),
            log: Arc::new(Vec::new()),
            floor: Arc::new(floor),
            seen: Arc::new(BTreeMap::new()),
        };
        match World::rebuild(self, &s.replay) {
            Ok(w) => self.observe(&mut s, &w),
            Err(e) => s.error = Some(e),
        }
        s
    }
}

impl Model for Lifecycle {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![self.initial()]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        if s.error.is_some() {
            return; // a failed real call ends the path: the property names it
        }
        for (i, cmd) in s.commands.iter().enumerate() {
            let c = i as u8;
            match cmd.phase {
                Phase::Idle => {
                    actions.push(Action::Start { c, wait: false });
                    actions.push(Action::Start { c, wait: true });
                }
                Phase::Waiting => actions.push(Action::Retry(c)),
                Phase::Validating => {
                    actions.push(Action::Validate { c, ok: true });
                    actions.push(Action::Validate { c, ok: false });
                }
                Phase::Executing => {
                    actions.push(Action::ExecuteFail(c));
                    actions.push(Action::ExecuteDone(c));
                    if self.cfg.tasks > 0 {
                        actions.push(Action::SpawnTasks(c));
                    }
                }
                Phase::TasksCreated => actions.push(Action::Persist(c)),
                Phase::Tasks => {
                    let all_done = cmd.tasks.iter().all(|t| *t != TaskState::Running);
                    if all_done || self.mutant == Some(Mutant::EndBeforeTasks) {
                        actions.push(Action::EndAction(c));
                    }
                }
                Phase::Done(_) => {}
            }
            for (t, task) in cmd.tasks.iter().enumerate() {
                if *task == TaskState::Running {
                    for to in [TaskState::Finished, TaskState::Failed, TaskState::Lost] {
                        actions.push(Action::Task { c, t: t as u8, to });
                    }
                }
            }
        }
        if (s.restarts as usize) < self.cfg.restarts && s.commands.iter().any(|c| !matches!(c.phase, Phase::Done(_))) {
            actions.push(Action::Restart);
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        if action == Action::Restart {
            return Some(self.crash(last));
        }
        let mut world = match World::rebuild(self, &last.replay) {
            Ok(w) => w,
            Err(e) => {
                let mut s = last.clone();
                s.error = Some(e);
                return Some(s);
            }
        };
        let outcome = match world.apply(self, action) {
            Ok(o) => o,
            Err(e) => {
                let mut s = last.clone();
                s.error = Some(e);
                return Some(s);
            }
        };
        let mut s = last.clone();
        let keys = self.declared(0).len() as u8;
        let one_by_one = self.mutant == Some(Mutant::OneAtATime);
        match action {
            Action::Start { c, .. } | Action::Retry(c) => {
                let retry = matches!(action, Action::Retry(_));
                let wait = retry || matches!(action, Action::Start { wait: true, .. });
                let cmd = &mut s.commands[c as usize];
                match outcome {
                    Outcome::Granted => {
                        cmd.taken = if one_by_one { cmd.taken + 1 } else { keys };
                        cmd.phase = if cmd.taken >= keys { Phase::Validating } else { Phase::Waiting };
                        cmd.waited |= retry && cmd.phase == Phase::Validating;
                    }
                    Outcome::Conflict if retry => return None, // not yet: the keys are still taken
                    Outcome::Conflict if wait => cmd.phase = Phase::Waiting,
                    Outcome::Conflict | Outcome::Done => cmd.phase = Phase::Done(End::Rejected),
                }
            }
            Action::Validate { c, ok } => {
                s.commands[c as usize].phase = if ok { Phase::Executing } else { Phase::Done(End::ValidationFailed) };
            }
            Action::ExecuteFail(c) => s.commands[c as usize].phase = Phase::Done(End::ExecutionFailed),
            Action::ExecuteDone(c) => s.commands[c as usize].phase = Phase::Done(End::Released),
            Action::SpawnTasks(c) => {
                let cmd = &mut s.commands[c as usize];
                cmd.phase = Phase::TasksCreated;
                cmd.tasks.iter_mut().for_each(|t| *t = TaskState::Running);
            }
            Action::Persist(c) => s.commands[c as usize].phase = Phase::Tasks,
            Action::Task { c, t, to } => s.commands[c as usize].tasks[t as usize] = to,
            Action::EndAction(c) => s.commands[c as usize].phase = Phase::Done(End::EndAction),
            _ => {}
        }
        let mut log = (*last.replay.log).clone();
        log.push(action);
        s.replay.log = Arc::new(log);
        self.observe(&mut s, &world);
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(MUTEX, |_, s: &State| {
                s.held.iter().all(|&(c, k, m)| m != 1 || s.held.iter().all(|&(c2, k2, _)| k2 != k || c2 == c))
            }),
            Property::always(STALE, |_, s: &State| {
                s.held.iter().all(|&(c, _, _)| {
                    s.commands.get(c as usize).is_some_and(|cmd| {
                        matches!(
                            cmd.phase,
                            Phase::Waiting | Phase::Validating | Phase::Executing | Phase::TasksCreated | Phase::Tasks
                        )
                    })
                })
            }),
            Property::always(LOST, |m: &Lifecycle, s: &State| {
                s.commands.iter().enumerate().all(|(c, cmd)| {
                    let active =
                        matches!(cmd.phase, Phase::Validating | Phase::Executing | Phase::TasksCreated | Phase::Tasks)
                            || (cmd.phase == Phase::Done(End::EndAction) && cmd.tasks.contains(&TaskState::Running));
                    !active
                        || m.declared(c)
                            .iter()
                            .all(|&(k, mode)| s.held.contains(&(c as u8, k, world::mode_number(mode))))
                })
            }),
            Property::always(DEADLOCK, |_, s: &State| !s.stuck),
            Property::always(REFINES, |m: &Lifecycle, s: &State| s.held == m.spec_held(s)),
            Property::always(JOURNAL, |m: &Lifecycle, s: &State| s.journaled == m.spec_journaled(s)),
            Property::always(FENCING, |_, s: &State| !s.fence_violation),
            Property::always(API_OK, |_, s: &State| s.error.is_none()),
            Property::eventually(FINISHES, |_, s: &State| s.commands.iter().all(|c| matches!(c.phase, Phase::Done(_)))),
            Property::sometimes("a conflict rejects a command", |_, s: &State| {
                s.commands.iter().any(|c| c.phase == Phase::Done(End::Rejected))
            }),
            Property::sometimes("a command waits", |_, s: &State| s.commands.iter().any(|c| c.phase == Phase::Waiting)),
            Property::sometimes("a waiting command gets its keys", |_, s: &State| s.commands.iter().any(|c| c.waited)),
            Property::sometimes("validation fails", |_, s: &State| {
                s.commands.iter().any(|c| c.phase == Phase::Done(End::ValidationFailed))
            }),
            Property::sometimes("tasks run on kept locks", |_, s: &State| {
                s.commands.iter().any(|c| c.phase == Phase::Tasks && c.tasks.contains(&TaskState::Running))
            }),
            Property::sometimes("an end-action releases", |_, s: &State| {
                s.commands.iter().any(|c| c.phase == Phase::Done(End::EndAction))
            }),
            Property::sometimes("a restart re-takes kept locks", |_, s: &State| {
                s.commands.iter().any(|c| c.recovered && c.phase == Phase::Tasks)
            }),
            Property::sometimes("recovery cleans a command whose tasks are gone", |_, s: &State| {
                s.commands.iter().any(|c| c.phase == Phase::Done(End::Cleaned))
            }),
            Property::sometimes("an unpersisted task outlives a restart without locks", |_, s: &State| {
                s.commands.iter().any(|c| c.phase == Phase::Done(End::Aborted) && c.tasks.contains(&TaskState::Running))
            }),
        ]
    }
}
