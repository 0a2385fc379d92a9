//! Grants kept past their scope: tickets, grant ids, fencing tokens and release errors.

use crate::backend::BackendError;
use crate::mode::Mode;
use crate::request::{LockMessage, Owner};
use std::fmt;

/// Identifies one granted request in one table. Release is checked against it, never by key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct GrantId(pub u64);

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "grant #{}", self.0)
    }
}

/// Identifies a table instance, so a ticket cannot be released in a table that did not grant it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TableId(pub u64);

/// A fencing token: strictly increasing per key over the fenced (exclusive) grants of that key.
///
/// A resource that remembers the highest token it has seen for a key can refuse a write from a
/// holder that has since been superseded (a lock lost to a forced release, say).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Token(pub u64);

/// One key of a ticket.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TicketLock<K> {
    /// The key.
    pub key: K,
    /// The mode it is held in.
    pub mode: Mode,
    /// Its fencing token, for fenced (exclusive) modes.
    pub token: Option<Token>,
    /// The message others see when they conflict with it, so a kept ticket can be journaled and
    /// re-taken after a restart with the same explanation. Not compared on release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<LockMessage>,
}

/// A grant kept past the scope that took it: plain data that can be stored or sent.
///
/// Made by [`LockSet::into_ticket`](crate::LockSet::into_ticket) for a command whose
/// asynchronous tasks run until its end-action; the locks stay held until
/// [`LockTable::release`](crate::LockTable::release) is called with it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ticket<K> {
    /// The table that granted it.
    pub table: TableId,
    /// The grant.
    pub grant: GrantId,
    /// Who holds it.
    pub owner: Owner,
    /// The keys held, one entry per distinct key.
    pub locks: Vec<TicketLock<K>>,
}

/// Why a release was refused. Nothing is released when one is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReleaseError {
    /// The ticket was issued by another table.
    ForeignTable {
        /// This table.
        expected: TableId,
        /// The ticket's table.
        found: TableId,
    },
    /// The grant is not held here: never granted, already released, or force-released.
    UnknownGrant(GrantId),
    /// The ticket does not describe its grant (keys or modes differ from what is held).
    Mismatch(GrantId),
    /// A backend other than the in-memory table could not carry out the release (its database
    /// did not answer, say); the in-memory table never returns it.
    Backend(BackendError),
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ForeignTable { expected, found } => {
                write!(f, "the ticket was issued by lock table {:#x}, not by this one ({:#x})", found.0, expected.0)
            }
            Self::UnknownGrant(g) => {
                write!(f, "{g} is not held in this table: it was already released, force-released or never granted")
            }
            Self::Mismatch(g) => write!(f, "the ticket for {g} names keys or modes that the grant does not hold"),
            Self::Backend(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ReleaseError {}
