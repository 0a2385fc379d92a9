//! The real engine a model state stands for: a `lockcore` table and journal, rebuilt by replay.
//!
//! A model state cannot hold a live table (states are cloned, hashed and compared by the
//! million), so it holds a *recipe*: the journal image at the last restart, which tasks the task
//! system knew then, and the actions since. [`World::rebuild`] replays that recipe through the
//! real API: `Durable::open` (the real recovery) on the image, then every action since, each
//! doing exactly what the engine does (`try_acquire`, `LockTable::release`, `Durable::keep_ticket`,
//! `Durable::end`). Replay is deterministic, so a recipe always rebuilds the same table.

use super::{Action, Held, Lifecycle, Mutant, Replay};
use lockcore::{AcquireError, Builder, Mode, Request, Ticket};
use lockcore_journal::format::{Record, Scanner};
use lockcore_journal::{Durability, Durable, KeepId, LogJournal, MemoryStorage, OpenOptions, TaskId};
use std::collections::{BTreeMap, BTreeSet};

type Engine = Durable<u8, LogJournal<MemoryStorage>>;

/// What a real acquisition attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Granted,
    Conflict,
    Done,
}

pub(crate) struct World {
    engine: Engine,
    disk: MemoryStorage,
    /// Scoped grants per command (several for the one-key-at-a-time mutant).
    tickets: Vec<Vec<Ticket<u8>>>,
    /// Kept tickets per command.
    kept: Vec<Vec<KeepId>>,
    /// Keys taken so far per command, for the one-key-at-a-time mutant.
    steps: Vec<usize>,
}

pub(crate) fn owner(c: usize) -> String {
    format!("c{c}")
}

pub(crate) fn task(c: usize, t: usize) -> String {
    format!("c{c}t{t}")
}

fn task_number(task: &str) -> Option<u8> {
    task.strip_prefix('c')?.split_once('t')?.1.parse().ok()
}

fn command_of(owner: &str) -> Option<usize> {
    owner.strip_prefix('c')?.split('t').next()?.parse().ok()
}

impl World {
    /// Recovers the image at the last restart with the real `Durable::open`, then replays the
    /// actions since.
    pub(crate) fn rebuild(model: &Lifecycle, replay: &Replay) -> Result<World, String> {
        let disk = MemoryStorage::from_bytes(replay.image.to_vec());
        let mut world = Self::recover(model, disk, &replay.known)?;
        for action in replay.log.iter() {
            world.apply(model, *action)?;
        }
        Ok(world)
    }

    /// The real recovery of a journal image, given the tasks the task system knows.
    pub(crate) fn recover(model: &Lifecycle, disk: MemoryStorage, known: &BTreeSet<String>) -> Result<World, String> {
        let journal = LogJournal::with_storage(disk.clone(), OpenOptions::new().durability(Durability::Os));
        let all = |_: &TaskId| true;
        let exists = |t: &TaskId| known.contains(t.as_str());
        // Deliberately broken: recovery asks nobody, so tickets of vanished tasks come back.
        let registry: &dyn lockcore_journal::TaskRegistry =
            if model.mutant == Some(Mutant::NoClean) { &all } else { &exists };
        let (engine, report) =
            Durable::open(journal, Builder::new().shards(1), registry).map_err(|e| format!("recovery failed: {e}"))?;
        if let Some(u) = report.unrecovered.first() {
            return Err(format!("recovery could not re-take {:?}", u.id()));
        }
        let n = model.cfg.commands;
        let mut world =
            World { engine, disk, tickets: vec![Vec::new(); n], kept: vec![Vec::new(); n], steps: vec![0; n] };
        for k in world.engine.kept() {
            let c = command_of(k.ticket.owner.as_str()).filter(|&c| c < n).ok_or("a kept ticket of nobody")?;
            world.kept[c].push(k.id);
        }
        if model.mutant == Some(Mutant::NoRetake) {
            // Deliberately broken: the re-taken locks are dropped again (the journal still
            // believes they are kept).
            for k in world.engine.kept() {
                world.engine.table().release(&k.ticket).map_err(|e| e.to_string())?;
            }
        }
        Ok(world)
    }

    fn request(model: &Lifecycle, c: usize, only: Option<usize>) -> Request<u8> {
        let mut req = Request::new(owner(c));
        for (i, (key, mode)) in model.declared(c).into_iter().enumerate() {
            if only.is_none_or(|o| o == i) {
                req = req.lock(key, mode, None);
            }
        }
        req
    }

    fn try_take(&mut self, model: &Lifecycle, c: usize) -> Result<Outcome, String> {
        let one_by_one = model.mutant == Some(Mutant::OneAtATime);
        let req = Self::request(model, c, one_by_one.then_some(self.steps[c]));
        match self.engine.table().try_acquire(req) {
            Ok(set) => {
                self.tickets[c].push(set.into_ticket());
                self.steps[c] += 1;
                Ok(Outcome::Granted)
            }
            Err(AcquireError::Conflict(_)) => Ok(Outcome::Conflict),
            Err(e) => Err(format!("try_acquire failed: {e}")),
        }
    }

    /// Whether `c`'s next acquisition would be granted now (used to detect deadlock; the
    /// grant is undone at once).
    pub(crate) fn could_take(&self, model: &Lifecycle, c: usize) -> bool {
        let one_by_one = model.mutant == Some(Mutant::OneAtATime);
        self.engine.table().try_acquire(Self::request(model, c, one_by_one.then_some(self.steps[c]))).is_ok()
    }

    fn release_scoped(&mut self, c: usize) -> Result<(), String> {
        for t in self.tickets[c].drain(..) {
            self.engine.table().release(&t).map_err(|e| format!("release failed: {e}"))?;
        }
        self.steps[c] = 0;
        Ok(())
    }

    /// Does what the engine does for `action`, through the real API.
    pub(crate) fn apply(&mut self, model: &Lifecycle, action: Action) -> Result<Outcome, String> {
        match action {
            Action::Start { c, .. } | Action::Retry(c) => self.try_take(model, c as usize),
            Action::Validate { c, ok: false } => {
                if model.mutant != Some(Mutant::NoReleaseOnValidateFail) {
                    self.release_scoped(c as usize)?;
                }
                Ok(Outcome::Done)
            }
            Action::ExecuteFail(c) | Action::ExecuteDone(c) => self.release_scoped(c as usize).map(|()| Outcome::Done),
            Action::Persist(c) => {
                let c = c as usize;
                let tasks: Vec<String> = (0..model.cfg.tasks).map(|t| task(c, t)).collect();
                for ticket in std::mem::take(&mut self.tickets[c]) {
                    let id = self.engine.keep_ticket(ticket, tasks.clone()).map_err(|e| format!("keep failed: {e}"))?;
                    self.kept[c].push(id);
                }
                self.steps[c] = 0;
                Ok(Outcome::Done)
            }
            Action::EndAction(c) => {
                for id in std::mem::take(&mut self.kept[c as usize]) {
                    self.engine.end(id).map_err(|e| format!("end-action failed: {e}"))?;
                }
                Ok(Outcome::Done)
            }
            Action::Validate { ok: true, .. } | Action::SpawnTasks(_) | Action::Task { .. } | Action::Restart => {
                Ok(Outcome::Done)
            }
        }
    }

    /// The journal's bytes now (what survives a crash).
    pub(crate) fn image(&self) -> Vec<u8> {
        self.disk.bytes()
    }

    /// What the real table holds: (command, key, mode) and the highest token per key.
    pub(crate) fn held(&self) -> (Held, BTreeMap<u8, u64>) {
        let snap = self.engine.table().snapshot();
        let mut held = BTreeSet::new();
        let mut tokens = BTreeMap::new();
        for h in snap.held {
            let c = command_of(h.owner.as_str()).unwrap_or(usize::MAX) as u8;
            held.insert((c, h.key, h.mode.0));
            if let Some(t) = h.token {
                let e = tokens.entry(h.key).or_insert(0);
                *e = t.0.max(*e);
            }
        }
        (held, tokens)
    }

    /// What the real journal keeps, read from its bytes: (command, task numbers) per live record
    /// (a task name that is not one of the model's shows up as 255).
    pub(crate) fn journaled(&self) -> BTreeSet<(u8, Vec<u8>)> {
        #[derive(serde::Deserialize)]
        struct Head {
            owner: String,
            tasks: Vec<String>,
        }
        let bytes = self.disk.bytes();
        let mut live: BTreeMap<KeepId, (u8, Vec<u8>)> = BTreeMap::new();
        let mut scan = Scanner::new(&bytes);
        while let Some((_, record)) = scan.next_record() {
            match record {
                Record::Keep { id, payload } => {
                    if let Ok(h) = serde_json::from_slice::<Head>(payload) {
                        let c = command_of(&h.owner).unwrap_or(usize::MAX) as u8;
                        let tasks = h.tasks.iter().map(|t| task_number(t).unwrap_or(255)).collect();
                        live.insert(id, (c, tasks));
                    }
                }
                Record::Release(id) => {
                    live.remove(&id);
                }
                Record::Epoch(_) => {}
            }
        }
        live.into_values().collect()
    }
}

/// The declared modes as their numbers, for comparing with the table.
pub(crate) fn mode_number(m: Mode) -> u8 {
    m.0
}
