//! # lockcore
//!
//! An in-memory table of reader/writer locks by key, taken **all or nothing**, for engines
//! whose commands declare what they read and write before they run (oVirt's `EngineLock`).
//!
//! - [`LockTable::try_acquire`] takes every key of a [`Request`] or none, and on failure
//!   returns a [`Conflict`] naming every conflicting key, each holder (owner, mode, message,
//!   held since) and the waiters queued ahead.
//! - [`LockTable::acquire`] waits with one deadline for the whole set;
//!   [`LockTable::acquire_async`] is a future for any executor. Waiting holds no key, and the
//!   queue of each key is first come, first served.
//! - A granted [`LockSet`] releases on drop, or becomes a [`Ticket`] (plain, serializable data)
//!   that keeps the locks until [`LockTable::release`], for commands whose asynchronous tasks
//!   run until their end-action.
//! - Exclusive grants carry [fencing tokens](Token); [`LockTable::snapshot`],
//!   [`LockTable::blockers`] and [`LockTable::metrics`] show what is going on.
//! - Modes are data ([`ModeTable`]): shared/exclusive by default, Gray's five
//!   multi-granularity modes for hierarchical locks.
//!
//! Keys are any `Hash + Eq + Clone` type: strings, integers, or a typed `(group, id)` pair.
//! A key whose `Hash` and `Eq` disagree is a caller bug: such a key may fail to conflict with
//! itself (the table cannot detect it).
//!
//! ```
//! use lockcore::{LockMessage, LockTable, Request};
//!
//! #[derive(Clone, Debug, PartialEq, Eq, Hash)]
//! enum Group { Pool, Domain, Vm }
//!
//! let table = LockTable::new();
//! let activate = table
//!     .try_acquire(
//!         Request::new("ActivateDomain-1")
//!             .shared((Group::Pool, 7))
//!             .exclusive_with((Group::Domain, 3), LockMessage::new("domain is being activated")),
//!     )
//!     .unwrap();
//! // Reconstruct needs the pool exclusively: refused, and told why.
//! let err = table.try_acquire(Request::new("Reconstruct-2").exclusive((Group::Pool, 7))).unwrap_err();
//! let conflict = err.conflict().unwrap();
//! assert_eq!(conflict.keys.len(), 1);
//! assert_eq!(conflict.blockers()[0].as_str(), "ActivateDomain-1");
//! drop(activate);
//! # let _ = Group::Vm;
//! ```
#![deny(missing_docs)]
#![deny(unsafe_code)]
// Mutants: `LOCKCORE_MUTANT=NAME` (see build.rs) builds a deliberately broken table, so CI can
// show that each checker fails on it (`ci/mutants.sh`). Never set in a normal build.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod backend;
#[allow(unsafe_code)]
mod bias;
mod clock;
mod conflict;
#[allow(unsafe_code)]
mod direct;
mod grant;
mod guard;
#[cfg(not(loom))]
#[allow(unsafe_code)]
mod latch;
mod metrics;
mod mode;
mod path;
mod pool;
mod release;
mod request;
mod shard;
mod slot;
mod snapshot;
pub(crate) mod sync;
mod table;
mod ticket;
mod wait;

pub use backend::{BackendError, LockBackend};
pub use conflict::{AcquireError, Conflict, Holder, KeyConflict, Waiter};
pub use guard::LockSet;
pub use metrics::{Histogram, MetricsSnapshot};
pub use mode::{Mode, ModeTable, ModeTableError, MAX_MODES};
pub use path::{
    Hierarchy, HierarchyError, PathAcquire, PathAcquireError, PathBlock, PathConflict, PathError, PathErrorKind,
    PathKey, PathLocks, PathLocksBuilder, PathRequest, Relation, MAX_DEPTH, MAX_PATH_LEN,
};
pub use request::{LockMessage, Owner, Request, RequestError, MAX_KEYS};
pub use snapshot::{HeldLock, Snapshot, WaitingLock};
pub use table::{Builder, LockTable};
pub use ticket::{GrantId, ReleaseError, TableId, Ticket, TicketLock, Token};
pub use wait::Acquire;

#[cfg(loom)]
#[doc(hidden)]
pub use sync::loom_set_reader_slot;
