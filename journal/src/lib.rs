//! # lockcore-journal
//!
//! Durable tickets and restart recovery for the [`lockcore`] lock table: a command that keeps
//! its locks through asynchronous tasks survives an engine restart, and a lock whose tasks no
//! longer exist does not stay forever.
//!
//! - [`Journal`]: what a journal must do; [`LogJournal`] is the embedded default, an
//!   append-only log of checksummed records ([`format`](mod@format)) in a file ([`FileJournal`]) or in
//!   memory, with a [`Durability`] policy chosen by the caller (fsync per commit, group
//!   commit, or none) and compaction to the live set.
//! - [`Durable`]: the lock table plus its journal. [`Durable::open`] recovers: kept tickets
//!   whose tasks exist are taken again with fencing tokens from a new epoch, greater than any
//!   granted before the crash; the others are cleaned; conflicts are reported, never dropped.
//!
//! Bad bytes get a typed [`JournalError`] saying what is wrong and at which offset.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod durable;
mod error;
pub mod format;
mod log;
mod storage;

pub use durable::{
    token_epoch, Durable, EndError, KeepError, KeepFailure, Kept, OpenError, RecoveryReport, Retaken, TaskId,
    TaskRegistry, Unrecovered, MAX_TASKS, TOKEN_EPOCH_SHIFT,
};
pub use error::{Corruption, JournalError};
pub use format::KeepId;
pub use log::{Durability, FileJournal, Journal, JournalStats, LogJournal, OpenOptions, Start, Tail, MAX_EPOCH};
pub use storage::{FileStorage, MemoryStorage, Storage, Syncer};
