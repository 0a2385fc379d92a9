//! Why an acquisition failed: every conflicting key, its holders and the waiters ahead.

use crate::backend::BackendError;
use crate::mode::Mode;
use crate::request::{LockMessage, Owner, RequestError};
use crate::ticket::{GrantId, Token};
use std::fmt;
use std::time::{Duration, Instant};

/// A holder of a key, as seen by a request that conflicts with it.
#[derive(Clone, Debug)]
pub struct Holder {
    /// Who holds it.
    pub owner: Owner,
    /// The grant it belongs to.
    pub grant: GrantId,
    /// The mode held.
    pub mode: Mode,
    /// The mode's name in the table's [`ModeTable`](crate::ModeTable).
    pub mode_name: &'static str,
    /// The holder's message, if it gave one.
    pub message: Option<LockMessage>,
    /// When the grant was made.
    pub since: Instant,
    /// The fencing token of the grant on this key, for fenced modes.
    pub token: Option<Token>,
    /// Whether this holder's mode is incompatible with the mode asked (compatible holders are
    /// listed too, so the report shows everyone on the key).
    pub blocking: bool,
}

/// A request queued on a key ahead of the one that conflicted.
#[derive(Clone, Debug)]
pub struct Waiter {
    /// Who is waiting.
    pub owner: Owner,
    /// The mode it waits for on this key.
    pub mode: Mode,
    /// The mode's name.
    pub mode_name: &'static str,
    /// When it started waiting.
    pub since: Instant,
}

/// One key that could not be granted.
#[derive(Clone, Debug)]
pub struct KeyConflict<K> {
    /// The key.
    pub key: K,
    /// The mode that was asked.
    pub asked: Mode,
    /// Its name.
    pub asked_name: &'static str,
    /// Everyone holding the key (see [`Holder::blocking`]).
    pub holders: Vec<Holder>,
    /// Incompatible requests queued before this one on the key: fairness makes them go first.
    pub waiters_ahead: Vec<Waiter>,
}

/// A failed all-or-nothing acquisition: nothing was taken, and here is every reason.
#[derive(Clone, Debug)]
pub struct Conflict<K> {
    /// The owner that asked.
    pub owner: Owner,
    /// Distinct keys in the request.
    pub requested: usize,
    /// The keys that could not be granted, in the table's internal order.
    pub keys: Vec<KeyConflict<K>>,
}

impl<K> Conflict<K> {
    /// The owners that stand in the way (holders and waiters ahead), without repeats.
    pub fn blockers(&self) -> Vec<Owner> {
        let mut out: Vec<Owner> = Vec::new();
        for k in &self.keys {
            let blocking = k.holders.iter().filter(|h| h.blocking).map(|h| &h.owner);
            for o in blocking.chain(k.waiters_ahead.iter().map(|w| &w.owner)) {
                if !out.contains(o) {
                    out.push(o.clone());
                }
            }
        }
        out
    }
}

fn ago(since: Instant) -> Duration {
    since.elapsed()
}

impl<K: fmt::Debug> fmt::Display for Conflict<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} could not lock {} of its {} key{}:",
            self.owner,
            self.keys.len(),
            self.requested,
            if self.requested == 1 { "" } else { "s" }
        )?;
        for k in &self.keys {
            write!(f, "\n- {:?} ({} asked) ", k.key, k.asked_name)?;
            let blocking: Vec<&Holder> = k.holders.iter().filter(|h| h.blocking).collect();
            if blocking.is_empty() {
                f.write_str("is free of conflicting holders")?;
            }
            for (i, h) in blocking.iter().enumerate() {
                f.write_str(if i == 0 { "is held " } else { "; also held " })?;
                write!(f, "{} by {} for {:.1?}", h.mode_name, h.owner, ago(h.since))?;
                if let Some(m) = &h.message {
                    write!(f, ": {m}")?;
                }
            }
            if !k.waiters_ahead.is_empty() {
                write!(f, "; queued ahead:")?;
                for (i, w) in k.waiters_ahead.iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    write!(f, "{sep}{} ({}, waiting {:.1?})", w.owner, w.mode_name, ago(w.since))?;
                }
            }
        }
        Ok(())
    }
}

impl<K: fmt::Debug> std::error::Error for Conflict<K> {}

/// Why `try_acquire` or `acquire` returned no locks. Nothing is held when it is returned.
#[derive(Debug)]
#[non_exhaustive]
pub enum AcquireError<K> {
    /// The request itself is invalid.
    Request(RequestError),
    /// Some keys are held or owed to earlier waiters (a `try_` call, which does not wait).
    Conflict(Box<Conflict<K>>),
    /// The deadline passed while waiting; the conflict as it stood then.
    Timeout(Box<Conflict<K>>),
    /// A backend other than the in-memory table could not carry out the request (its database
    /// did not answer, say); the in-memory table never returns it.
    Backend(BackendError),
}

impl<K> AcquireError<K> {
    /// The conflict, for [`Conflict`](Self::Conflict) and [`Timeout`](Self::Timeout).
    pub fn conflict(&self) -> Option<&Conflict<K>> {
        match self {
            Self::Conflict(c) | Self::Timeout(c) => Some(c),
            Self::Request(_) | Self::Backend(_) => None,
        }
    }
}

impl<K> From<RequestError> for AcquireError<K> {
    fn from(e: RequestError) -> Self {
        Self::Request(e)
    }
}

impl<K: fmt::Debug> fmt::Display for AcquireError<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Request(e) => e.fmt(f),
            Self::Conflict(c) => c.fmt(f),
            Self::Timeout(c) => write!(f, "timed out waiting: {c}"),
            Self::Backend(e) => e.fmt(f),
        }
    }
}

impl<K: fmt::Debug> std::error::Error for AcquireError<K> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Request(e) => Some(e),
            Self::Backend(e) => Some(e),
            _ => None,
        }
    }
}
