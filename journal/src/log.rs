//! `LogJournal`: the embedded journal, an append-only log of checksummed records with group
//! commit and compaction to the live set.
//!
//! Every keep and release is one record appended under the journal's lock. Making it durable
//! follows the caller's [`Durability`]: an fsync per commit under the lock, group commit (the
//! first committer that finds no fsync running starts one *outside* the lock and every commit
//! appended before it started is covered by it; the others wait for it), or none.
//! The log is compacted (rewritten with only the live records, then atomically renamed over
//! the old file) when it grows past [`OpenOptions::compact_at`] and holds more than half dead
//! records, and at every start (which is how the new epoch is written), so its size stays
//! proportional to the live set. A compaction that fails stops the journal: after the rename
//! nobody knows which file a restart will find, so no further commit may be acknowledged.

use crate::error::{io as io_err, Corruption, JournalError};
use crate::format::{self, End, KeepId, Record, Scanner, HEADER_LEN, MAX_RECORD, RECORD_HEAD};
use crate::storage::{FileStorage, Storage};
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// What a durable journal must do for [`Durable`](crate::Durable): record kept tickets and
/// their release, and at start-up hand back what is still kept under a new, greater epoch.
///
/// Payloads are opaque bytes (the [`Durable`](crate::Durable) layer encodes tickets), so a
/// journal knows nothing about key types; [`LogJournal`] is the embedded implementation.
pub trait Journal: Send + Sync {
    /// Reads the journal, starts a new epoch durably (greater than any before), and returns
    /// the live kept records. Called once, before any other method.
    ///
    /// # Errors
    /// A typed [`JournalError`] when the journal cannot be read or is damaged.
    fn start(&self) -> Result<Start, JournalError>;

    /// Records that ticket `id` is kept; durable (per the journal's policy) when it returns.
    ///
    /// # Errors
    /// I/O errors, or an `id` that is already kept.
    fn keep(&self, id: KeepId, payload: &[u8]) -> Result<(), JournalError>;

    /// Records that ticket `id` was released; durable (per the journal's policy) when it returns.
    ///
    /// # Errors
    /// I/O errors, or an `id` that is not kept.
    fn release(&self, id: KeepId) -> Result<(), JournalError>;
}

/// What [`Journal::start`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The epoch of this run: greater than every epoch recorded before.
    pub epoch: u64,
    /// The kept tickets not released, in the order they were kept.
    pub kept: Vec<(KeepId, Vec<u8>)>,
    /// What was dropped from the end of the file, if anything.
    pub tail: Tail,
}

/// Bytes dropped from the end of the journal at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tail {
    /// Bytes of a torn last record (a crash in the middle of an append): normal after a crash,
    /// and never an acknowledged record, unless the device lost synced data.
    pub torn_bytes: u64,
    /// Damage found before the end of the file and salvaged by dropping everything from it on
    /// (only with [`OpenOptions::salvage`]): its offset, what was wrong and the bytes dropped.
    pub salvaged: Option<(u64, Corruption, u64)>,
    /// Where the damaged file was copied before the salvage rewrote it (file journals).
    pub damaged_copy: Option<std::path::PathBuf>,
}

/// Epochs must stay below this: fencing tokens of epoch `e` start at `e << 44`.
pub const MAX_EPOCH: u64 = 1 << 20;

/// When a commit is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// An fsync (`fdatasync`) of its own before each keep or release returns.
    SyncEach,
    /// Group commit: a keep or release returns once an fsync that started after it was
    /// appended has finished; commits that arrive while an fsync runs share the next one.
    /// `window` is how long the committer that starts an fsync waits first to gather more
    /// commits (zero: start at once; the natural batching is whatever arrives during one fsync).
    Group {
        /// Wait before each fsync.
        window: Duration,
    },
    /// No fsync: a commit is in the operating system's page cache when it returns. Survives
    /// the process being killed, not the machine losing power.
    Os,
}

/// How a [`LogJournal`] is opened.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    durability: Durability,
    salvage: bool,
    compact_at: u64,
    must_exist: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Group { window: Duration::ZERO },
            salvage: false,
            compact_at: 1 << 20,
            must_exist: false,
        }
    }
}

impl OpenOptions {
    /// Group commit with no window, strict reading, compaction from 1 MiB.
    pub fn new() -> Self {
        Self::default()
    }

    /// When commits are durable.
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// Whether damage before the end of the file may be salvaged by keeping the valid prefix
    /// (false by default: the journal is not opened and the error says where the damage is).
    /// Salvaging drops every record after the damage, so locks released after it come back:
    /// a choice for an operator, not a default.
    pub fn salvage(mut self, allow: bool) -> Self {
        self.salvage = allow;
        self
    }

    /// Whether a missing (or empty) journal is an error instead of a new journal at epoch 1
    /// (false by default). An engine that has run before should set it: a journal lost to a
    /// wrong path or a deleted file would otherwise restart epochs, fencing tokens and kept
    /// ticket ids from the beginning.
    pub fn must_exist(mut self, yes: bool) -> Self {
        self.must_exist = yes;
        self
    }

    /// The file size from which the log is compacted when more than half of it is dead records.
    pub fn compact_at(mut self, bytes: u64) -> Self {
        self.compact_at = bytes;
        self
    }
}

/// Counters of a journal, for tests, benchmarks and operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// The current epoch (0 before start).
    pub epoch: u64,
    /// Bytes in the log now.
    pub file_bytes: u64,
    /// Live kept tickets.
    pub live: u64,
    /// Bytes of their records.
    pub live_bytes: u64,
    /// Commits appended since start.
    pub commits: u64,
    /// fsyncs done since start.
    pub syncs: u64,
    /// Compactions done since start.
    pub compactions: u64,
}

/// The embedded journal over a [`Storage`]: a file ([`FileJournal`]) or memory.
pub struct LogJournal<S: Storage> {
    options: OpenOptions,
    state: Mutex<State<S>>,
    synced: Condvar,
}

/// The embedded journal in a file.
pub type FileJournal = LogJournal<FileStorage>;

struct State<S> {
    storage: S,
    started: bool,
    len: u64,
    /// Each live keep record, framed, ready to be rewritten by compaction.
    live: HashMap<KeepId, Box<[u8]>>,
    live_bytes: u64,
    epoch: u64,
    /// Commits appended; commits made durable. `synced <= written`.
    written: u64,
    synced: u64,
    syncing: bool,
    failed: Option<String>,
    scratch: Vec<u8>,
    stats: JournalStats,
}

impl FileJournal {
    /// The journal in the file at `path` (created at start if missing).
    pub fn open(path: impl Into<PathBuf>, options: OpenOptions) -> Self {
        LogJournal::with_storage(FileStorage::new(path), options)
    }
}

impl<S: Storage> LogJournal<S> {
    /// A journal over `storage`. Nothing is read until [`Journal::start`].
    pub fn with_storage(storage: S, options: OpenOptions) -> Self {
        let state = State {
            storage,
            started: false,
            len: 0,
            live: HashMap::new(),
            live_bytes: 0,
            epoch: 0,
            written: 0,
            synced: 0,
            syncing: false,
            failed: None,
            scratch: Vec::new(),
            stats: JournalStats::default(),
        };
        Self { options, state: Mutex::new(state), synced: Condvar::new() }
    }

    /// Counters.
    pub fn stats(&self) -> JournalStats {
        let st = self.state.lock();
        JournalStats {
            epoch: st.epoch,
            file_bytes: st.len,
            live: st.live.len() as u64,
            live_bytes: st.live_bytes,
            commits: st.written,
            ..st.stats
        }
    }

    /// Rewrites the log with only the live records now.
    ///
    /// # Errors
    /// I/O errors; the old log stays in place and valid.
    pub fn compact(&self) -> Result<(), JournalError> {
        let mut st = self.state.lock();
        check_usable(&st)?;
        compact_or_stop(&mut st)
    }

    fn commit(&self, record: Record<'_>) -> Result<(), JournalError> {
        if let Record::Keep { payload, .. } = record {
            if payload.len() > MAX_RECORD as usize - 9 {
                return Err(JournalError::RecordTooLarge(payload.len()));
            }
        }
        let mut st = self.state.lock();
        check_usable(&st)?;
        match record {
            Record::Keep { id, .. } if st.live.contains_key(&id) => return Err(JournalError::AlreadyKept(id)),
            Record::Release(id) if !st.live.contains_key(&id) => return Err(JournalError::NotKept(id)),
            _ => {}
        }
        let mut buf = std::mem::take(&mut st.scratch);
        buf.clear();
        format::encode(&record, &mut buf);
        let appended = st.storage.append(&buf);
        let n = buf.len() as u64;
        if let Err(e) = appended {
            // Part of the record may be in the file: stop writing until a restart drops it.
            st.failed = Some(e.to_string());
            st.scratch = buf;
            return Err(JournalError::Io { op: "appending a record", source: e });
        }
        st.len += n;
        st.written += 1;
        match record {
            Record::Keep { id, .. } => {
                st.live_bytes += n;
                st.live.insert(id, buf.as_slice().into());
            }
            Record::Release(id) => {
                if let Some(rec) = st.live.remove(&id) {
                    st.live_bytes -= rec.len() as u64;
                }
            }
            Record::Epoch(_) => {}
        }
        st.scratch = buf;
        let mine = st.written;
        if st.len >= self.options.compact_at && st.len > 2 * (st.live_bytes + EPOCH_FILE) {
            // Compaction writes and syncs a whole new file, which covers this commit. If it
            // fails, this commit may be in a file that was just renamed away: not acknowledged.
            compact_or_stop(&mut st)?;
        }
        self.make_durable(st, mine)
    }

    fn make_durable(&self, mut st: MutexGuard<'_, State<S>>, mine: u64) -> Result<(), JournalError> {
        if cfg!(lockcore_mutant = "no_sync") {
            return Ok(()); // deliberately broken (ci/mutants.sh): acknowledges before any fsync
        }
        match self.options.durability {
            Durability::Os => Ok(()),
            Durability::SyncEach => {
                if st.synced >= mine {
                    return Ok(());
                }
                let res = st.storage.syncer().sync();
                st.stats.syncs += 1;
                settle(&mut st, res, mine)
            }
            Durability::Group { window } => loop {
                if st.synced >= mine {
                    return Ok(());
                }
                check_usable(&st)?;
                if st.syncing {
                    self.synced.wait(&mut st);
                    continue;
                }
                st.syncing = true;
                if !window.is_zero() {
                    MutexGuard::unlocked(&mut st, || std::thread::sleep(window));
                }
                // Everything appended before the fsync starts is covered by it.
                let target = st.written;
                let syncer = st.storage.syncer();
                let res = MutexGuard::unlocked(&mut st, || syncer.sync());
                st.stats.syncs += 1;
                st.syncing = false;
                let res = settle(&mut st, res, target);
                self.synced.notify_all();
                res?;
            },
        }
    }
}

fn settle<S>(st: &mut State<S>, res: std::io::Result<()>, target: u64) -> Result<(), JournalError> {
    match res {
        Ok(()) => {
            st.synced = st.synced.max(target);
            Ok(())
        }
        Err(e) => {
            // After a failed fsync the kernel may have dropped the dirty pages (the "fsyncgate"
            // lesson): nothing written can be trusted durable, so stop.
            st.failed = Some(e.to_string());
            Err(JournalError::Io { op: "syncing the journal", source: e })
        }
    }
}

fn check_usable<S>(st: &State<S>) -> Result<(), JournalError> {
    if let Some(cause) = &st.failed {
        return Err(JournalError::Failed { cause: cause.clone() });
    }
    if !st.started {
        return Err(JournalError::Failed { cause: "the journal was not started".into() });
    }
    Ok(())
}

/// A file with only a header and an epoch record.
const EPOCH_FILE: u64 = (HEADER_LEN + RECORD_HEAD + 9) as u64;

fn compact_or_stop<S: Storage>(st: &mut State<S>) -> Result<(), JournalError> {
    let res = compact(st);
    if let Err(e) = &res {
        st.failed = Some(format!("compaction failed: {e}"));
    }
    res
}

fn compact<S: Storage>(st: &mut State<S>) -> Result<(), JournalError> {
    let mut ids: Vec<KeepId> = st.live.keys().copied().collect();
    ids.sort_unstable();
    let mut out = Vec::with_capacity(EPOCH_FILE as usize + st.live_bytes as usize);
    format::encode_header(&mut out);
    format::encode(&Record::Epoch(st.epoch), &mut out);
    for id in ids {
        if let Some(rec) = st.live.get(&id) {
            out.extend_from_slice(rec);
        }
    }
    st.storage.replace(&out).map_err(io_err("compacting the journal"))?;
    st.len = out.len() as u64;
    st.synced = st.written;
    st.stats.compactions += 1;
    Ok(())
}

impl<S: Storage> Journal for LogJournal<S> {
    fn start(&self) -> Result<Start, JournalError> {
        let mut st = self.state.lock();
        if st.started {
            return Err(JournalError::Failed { cause: "the journal was already started".into() });
        }
        let bytes = st.storage.read_all().map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => JournalError::Locked(e.to_string()),
            _ => JournalError::Io { op: "reading the journal", source: e },
        })?;
        let mut tail = Tail::default();
        if bytes.is_empty() && self.options.must_exist {
            return Err(JournalError::Missing);
        }
        if bytes.is_empty() {
            // A new journal: header and first epoch land together, atomically.
            let mut out = Vec::new();
            format::encode_header(&mut out);
            format::encode(&Record::Epoch(1), &mut out);
            st.storage.replace(&out).map_err(io_err("creating the journal"))?;
            st.len = out.len() as u64;
            st.epoch = 1;
            st.started = true;
            return Ok(Start { epoch: 1, kept: Vec::new(), tail });
        }
        format::check_header(&bytes)?;
        let mut scanner = Scanner::new(&bytes);
        let mut live: HashMap<KeepId, Box<[u8]>> = HashMap::new();
        let mut order: Vec<KeepId> = Vec::new();
        let mut epoch = 0u64;
        let mut damage = None;
        while let Some((offset, record)) = scanner.next_record() {
            let bad = match record {
                Record::Epoch(e) if e <= epoch => Some(Corruption::EpochNotIncreasing { previous: epoch, found: e }),
                Record::Epoch(e) => {
                    epoch = e;
                    None
                }
                Record::Keep { id, .. } if live.contains_key(&id) => Some(Corruption::DuplicateKeep(id)),
                Record::Keep { id, .. } => {
                    let end = scanner.offset() as usize;
                    live.insert(id, bytes[offset as usize..end].into());
                    order.push(id);
                    None
                }
                Record::Release(id) => live.remove(&id).is_none().then_some(Corruption::UnknownRelease(id)),
            };
            if let Some(reason) = bad {
                damage = Some((offset, reason));
                break;
            }
        }
        // Nothing is cut here: the compaction below rewrites the file from what was read.
        let valid_end = match (damage, scanner.end()) {
            (Some((offset, reason)), _) => Some((offset, reason)),
            (None, Some(End::Corrupt { offset, reason })) => Some((*offset, reason.clone())),
            (None, Some(End::TornTail { dropped, .. })) => {
                tail.torn_bytes = *dropped;
                None
            }
            (None, _) => None,
        };
        if let Some((offset, reason)) = valid_end {
            if !self.options.salvage {
                return Err(JournalError::Corrupt { offset, reason });
            }
            tail.damaged_copy = st.storage.preserve(&bytes).map_err(io_err("copying the damaged journal"))?;
            tail.salvaged = Some((offset, reason, bytes.len() as u64 - offset));
        }
        if epoch + 1 >= MAX_EPOCH {
            return Err(JournalError::EpochsExhausted(epoch));
        }
        let live_bytes: u64 = live.values().map(|r| r.len() as u64).sum();
        let kept =
            order.into_iter().filter_map(|id| live.get(&id).map(|rec| (id, rec[RECORD_HEAD + 9..].to_vec()))).collect();
        st.live = live;
        st.live_bytes = live_bytes;
        st.epoch = epoch + 1;
        st.started = true;
        // The new epoch is written by compaction (always, so the file holds only the live set
        // from here on) and is durable before any lock of this run is granted.
        if let Err(e) = compact(&mut st) {
            st.started = false;
            return Err(e);
        }
        Ok(Start { epoch: st.epoch, kept, tail })
    }

    fn keep(&self, id: KeepId, payload: &[u8]) -> Result<(), JournalError> {
        self.commit(Record::Keep { id, payload })
    }

    fn release(&self, id: KeepId) -> Result<(), JournalError> {
        self.commit(Record::Release(id))
    }
}
