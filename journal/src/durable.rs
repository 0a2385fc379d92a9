//! `Durable`: a lock table whose kept tickets survive a restart, and the recovery that
//! re-takes them.
//!
//! The rules (see docs/design.md, "Durable tickets and recovery"):
//! - a ticket is journaled when it is *kept* (its command hands its locks to asynchronous
//!   tasks), before [`Durable::keep`] returns its [`KeepId`];
//! - its release is journaled *before* the locks are released, so a crash in between can
//!   only leave the journal saying "released" about locks that died with the process;
//! - at start, every kept ticket with at least one task the caller's [`TaskRegistry`] still
//!   knows is re-taken, with new fencing tokens; a ticket whose tasks are all gone is released
//!   in the journal (cleaned); a ticket that cannot be re-taken (it conflicts with another one,
//!   or does not decode) is reported and left in the journal for the operator;
//! - the table exists only once recovery is over: [`Durable::open`] builds it, so no command
//!   can take a key that a recovered task still owns.

use crate::error::JournalError;
use crate::format::{KeepId, MAX_RECORD};
use crate::log::{Journal, Tail};
use lockcore::{
    AcquireError, Builder, Conflict, GrantId, LockSet, LockTable, Owner, ReleaseError, Request, Ticket, TicketLock,
    Token,
};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

/// Fencing tokens of epoch `e` are greater than `e << TOKEN_EPOCH_SHIFT`. A run may grant 2^44
/// (1.7e13) fenced locks in all before its tokens could reach the next epoch's (the table folds
/// a reclaimed key's last token into a table-wide floor, so the budget is per run, not per key:
/// 200 days at a million exclusive grants per second); a journal may start
/// [`MAX_EPOCH`](crate::MAX_EPOCH) = 2^20 runs.
pub const TOKEN_EPOCH_SHIFT: u32 = 44;

/// The most tasks one kept ticket may wait for.
pub const MAX_TASKS: usize = 4096;

/// The epoch (engine run) that granted a fencing token.
pub fn token_epoch(token: Token) -> u64 {
    token.0 >> TOKEN_EPOCH_SHIFT
}

/// An asynchronous task a kept ticket waits for, named as the caller's task system names it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct TaskId(Arc<str>);

impl TaskId {
    /// The task's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({:?})", &*self.0)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for TaskId {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

impl From<String> for TaskId {
    fn from(s: String) -> Self {
        Self(s.into())
    }
}

/// The caller's view of which asynchronous tasks still exist (oVirt asks its task manager; a
/// data platform asks its job store). Asked during recovery and by [`Durable::clean_lost`].
pub trait TaskRegistry {
    /// Whether `task` still exists (running, or finished but not yet handled).
    fn exists(&self, task: &TaskId) -> bool;
}

impl TaskRegistry for HashSet<TaskId> {
    fn exists(&self, task: &TaskId) -> bool {
        self.contains(task)
    }
}

impl<F: Fn(&TaskId) -> bool> TaskRegistry for F {
    fn exists(&self, task: &TaskId) -> bool {
        self(task)
    }
}

/// What a kept ticket's journal record holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeptRecord<K> {
    owner: Owner,
    tasks: Vec<TaskId>,
    locks: Vec<TicketLock<K>>,
}

/// A kept ticket: its id, the tasks it waits for and the locks it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept<K> {
    /// Its id in the journal.
    pub id: KeepId,
    /// The tasks it waits for.
    pub tasks: Vec<TaskId>,
    /// The locks held.
    pub ticket: Ticket<K>,
}

/// A kept ticket that recovery took again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retaken<K> {
    /// The ticket, with its new grant and new fencing tokens.
    pub kept: Kept<K>,
    /// The fencing tokens it held before the restart, key by key as in `kept.ticket.locks`:
    /// every new token is greater than the old one.
    pub previous_tokens: Vec<Option<Token>>,
}

/// A kept ticket that recovery did not take again, left in the journal for the operator
/// ([`Durable::discard`] releases it).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Unrecovered<K> {
    /// Its locks conflict with tickets re-taken before it: two persisted tickets cannot both
    /// hold. Never silently dropped.
    Conflict {
        /// The ticket's id.
        id: KeepId,
        /// Its owner.
        owner: Owner,
        /// Its tasks.
        tasks: Vec<TaskId>,
        /// The conflict, naming the holders it met.
        conflict: Box<Conflict<K>>,
    },
    /// Its record does not decode as a ticket of this table's key type, or is not a valid
    /// request (no keys, say).
    Unreadable {
        /// The ticket's id.
        id: KeepId,
        /// What is wrong.
        message: String,
    },
}

impl<K> Unrecovered<K> {
    /// The ticket's id.
    pub fn id(&self) -> KeepId {
        match self {
            Self::Conflict { id, .. } | Self::Unreadable { id, .. } => *id,
        }
    }
}

/// What recovery did.
#[derive(Debug, Clone)]
pub struct RecoveryReport<K> {
    /// This run's epoch.
    pub epoch: u64,
    /// Kept tickets taken again, for tasks that still exist.
    pub retaken: Vec<Retaken<K>>,
    /// Kept tickets whose tasks are all gone: released in the journal, no lock taken.
    pub cleaned: Vec<(KeepId, Owner, Vec<TaskId>)>,
    /// Kept tickets that could not be taken again (conflicting or unreadable).
    pub unrecovered: Vec<Unrecovered<K>>,
    /// What was dropped from the end of the journal.
    pub tail: Tail,
}

impl<K> fmt::Display for RecoveryReport<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "epoch {}: {} kept tickets re-taken, {} cleaned (their tasks are gone), {} not recovered",
            self.epoch,
            self.retaken.len(),
            self.cleaned.len(),
            self.unrecovered.len()
        )?;
        if self.tail.torn_bytes > 0 {
            write!(f, ", {} bytes of a torn last record dropped", self.tail.torn_bytes)?;
        }
        if let Some((offset, reason, dropped)) = &self.tail.salvaged {
            write!(
                f,
                ", {dropped} bytes dropped from byte {offset} on because the record there was damaged ({reason})"
            )?;
        }
        Ok(())
    }
}

/// Why [`Durable::keep`] did not keep a ticket. The ticket is handed back: its locks are
/// still held in the table, to release (`table().release(&ticket)`) or keep again. After a
/// journal failure, whether a restart finds the keep is unknown.
#[derive(Debug)]
pub struct KeepError<K> {
    /// The ticket, still holding its locks.
    pub ticket: Ticket<K>,
    /// Why.
    pub reason: KeepFailure,
}

/// Why a keep failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeepFailure {
    /// A kept ticket must wait for at least one task, or nothing would ever clean it.
    NoTasks,
    /// More than [`MAX_TASKS`] tasks.
    TooManyTasks(usize),
    /// The ticket was granted by another table.
    ForeignTable,
    /// Its record would exceed the journal's record limit.
    TooLarge(usize),
    /// The journal refused it.
    Journal(JournalError),
}

impl fmt::Display for KeepFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoTasks => f.write_str("a kept ticket must name at least one task that it waits for"),
            Self::TooManyTasks(n) => write!(f, "{n} tasks is more than the {MAX_TASKS} a kept ticket may wait for"),
            Self::ForeignTable => f.write_str("the ticket was granted by another lock table"),
            Self::TooLarge(n) => write!(f, "the ticket's record would take {n} bytes, over the journal's limit"),
            Self::Journal(e) => write!(f, "the journal could not record it: {e}"),
        }
    }
}

impl<K: fmt::Debug> fmt::Display for KeepError<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} was not kept: {} (its locks are still held)", self.ticket.grant, self.reason)
    }
}

impl<K: fmt::Debug> std::error::Error for KeepError<K> {}

/// Why [`Durable::end`] or [`Durable::discard`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum EndError {
    /// No such kept ticket (already ended, cleaned, or never kept here).
    NotKept(KeepId),
    /// The journal did not acknowledge the release: the locks stay held and the ticket kept in
    /// this run, but whether a restart finds the release is unknown (after an I/O failure the
    /// journal refuses further writes until it is reopened).
    Journal(JournalError),
    /// The release was journaled, but the table no longer held the grant (it was
    /// force-released meanwhile): nothing is held any more.
    Table(ReleaseError),
}

impl fmt::Display for EndError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotKept(id) => write!(f, "{id} is not kept: already ended, cleaned, or never kept here"),
            Self::Journal(e) => write!(f, "the release was not recorded, so the locks stay held: {e}"),
            Self::Table(e) => write!(f, "the release was recorded, but the table refused it: {e}"),
        }
    }
}

impl std::error::Error for EndError {}

/// Why [`Durable::open`] failed.
pub type OpenError = JournalError;

/// A lock table whose kept tickets are journaled and taken again after a restart.
///
/// ```
/// use lockcore::{Builder, Request};
/// use lockcore_journal::{Durable, Journal, LogJournal, MemoryStorage, OpenOptions, TaskId};
/// use std::collections::HashSet;
///
/// let disk = MemoryStorage::new(); // a FileJournal in production
/// let tasks: HashSet<TaskId> = ["copy-disk-1".into()].into_iter().collect();
///
/// // First run: a command keeps its lock for its asynchronous task, then the engine dies.
/// let (engine, _) = Durable::open(LogJournal::with_storage(disk.clone(), OpenOptions::new()), Builder::new(), &tasks).unwrap();
/// let set = engine.table().try_acquire(Request::new("CopyDisk-7").exclusive("disk-1".to_string())).unwrap();
/// let id = engine.keep(set, ["copy-disk-1"]).unwrap();
/// drop(engine);
///
/// // Second run: the task still exists, so its lock is taken again before anyone can ask.
/// let (engine, report) = Durable::<String, _>::open(LogJournal::with_storage(disk, OpenOptions::new()), Builder::new(), &tasks).unwrap();
/// assert_eq!(report.retaken.len(), 1);
/// assert!(engine.table().try_acquire(Request::new("RemoveDisk-9").exclusive("disk-1".to_string())).is_err());
/// engine.end(id).unwrap(); // the command's end-action
/// assert!(engine.table().try_acquire(Request::new("RemoveDisk-9").exclusive("disk-1".to_string())).is_ok());
/// ```
pub struct Durable<K: Hash + Eq + Clone, J: Journal> {
    table: LockTable<K>,
    journal: J,
    epoch: u64,
    state: Mutex<State<K>>,
}

struct State<K> {
    next: u32,
    kept: HashMap<KeepId, Kept<K>>,
    unrecovered: HashMap<KeepId, Unrecovered<K>>,
}

impl<K, J> Durable<K, J>
where
    K: Hash + Eq + Clone + fmt::Debug + Serialize + DeserializeOwned,
    J: Journal,
{
    /// Starts `journal` (a new epoch, durably), builds the table from `builder` with fencing
    /// tokens above every token of earlier epochs, and recovers the kept tickets: re-taken if
    /// one of their tasks still `exists` in `tasks`, cleaned otherwise. The table is handed
    /// out only now, so no new command can take a recovered ticket's keys first.
    ///
    /// # Errors
    /// A [`JournalError`] when the journal cannot be read (damaged, not a journal, newer
    /// format) or written (the epoch, the release of cleaned tickets).
    pub fn open(
        journal: J,
        builder: Builder,
        tasks: &dyn TaskRegistry,
    ) -> Result<(Self, RecoveryReport<K>), OpenError> {
        let start = journal.start()?;
        // Deliberately broken (ci/mutants.sh): tokens restart from 1 after every restart.
        let floor = if cfg!(lockcore_mutant = "no_epoch_floor") { 0 } else { start.epoch << TOKEN_EPOCH_SHIFT };
        let table = builder.token_floor(floor).build();
        let mut report = RecoveryReport {
            epoch: start.epoch,
            retaken: Vec::new(),
            cleaned: Vec::new(),
            unrecovered: Vec::new(),
            tail: start.tail,
        };
        let mut state = State { next: 0, kept: HashMap::new(), unrecovered: HashMap::new() };
        for (id, payload) in start.kept {
            let record: KeptRecord<K> = match serde_json::from_slice(&payload) {
                Ok(r) => r,
                Err(e) => {
                    let u = Unrecovered::Unreadable { id, message: e.to_string() };
                    state.unrecovered.insert(id, u.clone());
                    report.unrecovered.push(u);
                    continue;
                }
            };
            if !record.tasks.iter().any(|t| tasks.exists(t)) {
                journal.release(id)?;
                report.cleaned.push((id, record.owner, record.tasks));
                continue;
            }
            let mut req = Request::new(record.owner.clone());
            for l in &record.locks {
                req = req.lock(l.key.clone(), l.mode, l.message.clone());
            }
            match table.try_acquire(req) {
                Ok(set) => {
                    let ticket = set.into_ticket();
                    let previous_tokens = ticket
                        .locks
                        .iter()
                        .map(|l| record.locks.iter().find(|o| o.key == l.key).and_then(|o| o.token))
                        .collect();
                    let kept = Kept { id, tasks: record.tasks, ticket };
                    state.kept.insert(id, kept.clone());
                    report.retaken.push(Retaken { kept, previous_tokens });
                }
                Err(AcquireError::Conflict(conflict)) => {
                    let u = Unrecovered::Conflict { id, owner: record.owner, tasks: record.tasks, conflict };
                    state.unrecovered.insert(id, u.clone());
                    report.unrecovered.push(u);
                }
                Err(e) => {
                    let u = Unrecovered::Unreadable { id, message: e.to_string() };
                    state.unrecovered.insert(id, u.clone());
                    report.unrecovered.push(u);
                }
            }
        }
        Ok((Self { table, journal, epoch: start.epoch, state: Mutex::new(state) }, report))
    }

    /// The lock table. Locks taken and released through it directly are not journaled; only
    /// [`Durable::keep`] makes a grant durable, and only [`Durable::end`],
    /// [`Durable::force_release`] and [`Durable::release_owner`] end a kept one for good: a kept
    /// ticket force-released through the table itself comes back at the next restart while its
    /// tasks exist.
    pub fn table(&self) -> &LockTable<K> {
        &self.table
    }

    /// The journal.
    pub fn journal(&self) -> &J {
        &self.journal
    }

    /// This run's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Keeps a granted set past its scope until [`Durable::end`], durably: when this returns,
    /// the journal holds the ticket, and a restart re-takes it while one of `tasks` exists.
    ///
    /// # Errors
    /// [`KeepError`], handing back the ticket with its locks still held.
    pub fn keep<T: Into<TaskId>>(
        &self,
        set: LockSet<'_, K>,
        tasks: impl IntoIterator<Item = T>,
    ) -> Result<KeepId, KeepError<K>> {
        self.keep_ticket(set.into_ticket(), tasks)
    }

    /// [`Durable::keep`] for a set that is already a ticket of this table.
    ///
    /// # Errors
    /// [`KeepError`], handing back the ticket with its locks still held.
    pub fn keep_ticket<T: Into<TaskId>>(
        &self,
        ticket: Ticket<K>,
        tasks: impl IntoIterator<Item = T>,
    ) -> Result<KeepId, KeepError<K>> {
        let mut tasks: Vec<TaskId> = tasks.into_iter().map(Into::into).collect();
        tasks.sort_unstable();
        tasks.dedup();
        let fail = |ticket, reason| Err(KeepError { ticket, reason });
        if ticket.table != self.table.id() {
            return fail(ticket, KeepFailure::ForeignTable);
        }
        if tasks.is_empty() {
            return fail(ticket, KeepFailure::NoTasks);
        }
        if tasks.len() > MAX_TASKS {
            return fail(ticket, KeepFailure::TooManyTasks(tasks.len()));
        }
        let record = KeptRecord { owner: ticket.owner.clone(), tasks, locks: ticket.locks.clone() };
        let payload = match serde_json::to_vec(&record) {
            Ok(p) => p,
            Err(e) => {
                let message = e.to_string();
                return fail(ticket, KeepFailure::Journal(JournalError::Payload { id: KeepId(0), message }));
            }
        };
        if payload.len() > MAX_RECORD as usize - 9 {
            return fail(ticket, KeepFailure::TooLarge(payload.len()));
        }
        let id = {
            let mut st = self.state.lock();
            st.next += 1;
            KeepId((self.epoch << 32) | u64::from(st.next))
        };
        // Deliberately broken (ci/mutants.sh): acknowledges a keep that was never recorded.
        let record_keep = !cfg!(lockcore_mutant = "skip_keep_record");
        if record_keep {
            if let Err(e) = self.journal.keep(id, &payload) {
                return fail(ticket, KeepFailure::Journal(e));
            }
        }
        self.state.lock().kept.insert(id, Kept { id, tasks: record.tasks, ticket });
        Ok(id)
    }

    /// Ends a kept ticket (its command's end-action): the release is journaled first, then
    /// the locks are released. Returns the ticket that was held.
    ///
    /// # Errors
    /// [`EndError::NotKept`] for an unknown id; [`EndError::Journal`] if the journal did not
    /// acknowledge the release (the locks stay held; see its documentation).
    pub fn end(&self, id: KeepId) -> Result<Ticket<K>, EndError> {
        let kept = self.state.lock().kept.remove(&id).ok_or(EndError::NotKept(id))?;
        // Deliberately broken (ci/mutants.sh): releases the locks without recording it.
        let record_release = !cfg!(lockcore_mutant = "skip_release_record");
        if let Err(e) = if record_release { self.journal.release(id) } else { Ok(()) } {
            self.state.lock().kept.insert(id, kept);
            return Err(EndError::Journal(e));
        }
        self.table.release(&kept.ticket).map_err(EndError::Table)?;
        Ok(kept.ticket)
    }

    /// Administrative release of one grant, kept or not (a stuck command): if it is a kept
    /// ticket its release is journaled first, so it does not come back at the next restart, as
    /// it would after `table().force_release`.
    ///
    /// # Errors
    /// [`EndError::Journal`] if the journal did not acknowledge the release (nothing is
    /// released); [`EndError::Table`] if the table does not hold the grant.
    pub fn force_release(&self, grant: GrantId) -> Result<Ticket<K>, EndError> {
        let kept = self.state.lock().kept.values().find(|k| k.ticket.grant == grant).map(|k| k.id);
        if let Some(id) = kept {
            return self.end(id);
        }
        self.table.force_release(grant).map_err(EndError::Table)
    }

    /// Releases everything `owner` holds, kept tickets included (their releases journaled
    /// first), and returns what was freed.
    ///
    /// # Errors
    /// The first journal failure; what was released before it stays released.
    pub fn release_owner(&self, owner: &Owner) -> Result<Vec<Ticket<K>>, EndError> {
        let ids: Vec<KeepId> = {
            let st = self.state.lock();
            st.kept.values().filter(|k| &k.ticket.owner == owner).map(|k| k.id).collect()
        };
        let mut freed = Vec::new();
        for id in ids {
            match self.end(id) {
                Ok(t) => freed.push(t),
                Err(EndError::NotKept(_) | EndError::Table(_)) => {}
                Err(e) => return Err(e),
            }
        }
        freed.extend(self.table.release_owner(owner));
        Ok(freed)
    }

    /// Ends every kept ticket whose tasks are all gone from `tasks` (tasks lost while the
    /// engine runs, the same rule recovery applies at start). Returns what was ended.
    ///
    /// # Errors
    /// The first journal failure; tickets ended before it stay ended.
    pub fn clean_lost(&self, tasks: &dyn TaskRegistry) -> Result<Vec<Kept<K>>, EndError> {
        let lost: Vec<KeepId> = {
            let st = self.state.lock();
            st.kept.values().filter(|k| !k.tasks.iter().any(|t| tasks.exists(t))).map(|k| k.id).collect()
        };
        let mut ended = Vec::new();
        for id in lost {
            let tasks_of = self.state.lock().kept.get(&id).map(|k| k.tasks.clone());
            match self.end(id) {
                Ok(ticket) => ended.push(Kept { id, tasks: tasks_of.unwrap_or_default(), ticket }),
                // Ended concurrently; or journaled as ended while the table had already lost the
                // grant (force-released): either way it is no longer kept.
                Err(EndError::NotKept(_) | EndError::Table(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ended)
    }

    /// Releases, in the journal, a ticket that recovery could not take again.
    ///
    /// # Errors
    /// [`EndError::NotKept`] if `id` is not an unrecovered ticket; [`EndError::Journal`].
    pub fn discard(&self, id: KeepId) -> Result<(), EndError> {
        let u = self.state.lock().unrecovered.remove(&id).ok_or(EndError::NotKept(id))?;
        if let Err(e) = self.journal.release(id) {
            self.state.lock().unrecovered.insert(id, u);
            return Err(EndError::Journal(e));
        }
        Ok(())
    }

    /// The kept tickets, in id order.
    pub fn kept(&self) -> Vec<Kept<K>> {
        let mut out: Vec<Kept<K>> = self.state.lock().kept.values().cloned().collect();
        out.sort_unstable_by_key(|k| k.id);
        out
    }

    /// The tickets recovery could not take again and nobody discarded yet.
    pub fn unrecovered(&self) -> Vec<Unrecovered<K>> {
        let mut out: Vec<Unrecovered<K>> = self.state.lock().unrecovered.values().cloned().collect();
        out.sort_unstable_by_key(Unrecovered::id);
        out
    }
}
