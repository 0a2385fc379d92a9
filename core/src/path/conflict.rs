//! Why a path request was refused, told in terms of the tree: which path is in the way, how it
//! relates to the path asked for, who holds it and why.
//!
//! The table reports conflicts per key, and the keys of a path request are the named paths and
//! their ancestors. A holder in a subtree mode (S, X, SIX) on such a key holds that path itself:
//! the same path or an ancestor. A holder in an intention mode holds it *because* it locks
//! something below; that descendant is not a key of the request, so it is looked up in a
//! snapshot by the holder's grant. A grant never changes its keys once made, so if the grant is
//! still in the snapshot its locks below are exactly those it had at the conflict; if it is
//! gone, the report says so rather than guess.

use super::{Hierarchy, PathKey};
use crate::backend::BackendError;
use crate::conflict::Conflict;
use crate::mode::Mode;
use crate::request::{LockMessage, Owner, RequestError};
use crate::snapshot::Snapshot;
use crate::table::LockTable;
use crate::ticket::GrantId;
use std::fmt;

/// How the path in the way relates to the path that was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Relation {
    /// The path asked for is itself held.
    Same,
    /// An ancestor of it is held (by a lock that covers the whole subtree).
    Ancestor,
    /// A path below it is held.
    Descendant,
    /// Something below [`PathBlock::path`] (an ancestor of the fragment, or the fragment
    /// itself) was held, by a grant released before the lock below could be named.
    SomewhereBelow,
}

/// One reason a path could not be locked: a holder, or a request queued ahead.
#[derive(Clone, Debug)]
pub struct PathBlock {
    /// The path of the request that is affected (a path it named).
    pub fragment: PathKey,
    /// The path that is in the way.
    pub path: PathKey,
    /// How `path` relates to `fragment`.
    pub relation: Relation,
    /// Who is in the way.
    pub owner: Owner,
    /// Its grant, for a holder; `None` for a request queued ahead.
    pub grant: Option<GrantId>,
    /// The mode it holds (or waits for) on `path`.
    pub mode: Mode,
    /// The mode's name.
    pub mode_name: &'static str,
    /// Its message for `path`, if it gave one.
    pub message: Option<LockMessage>,
}

impl PathBlock {
    /// Whether this is a request queued ahead (fairness makes it go first) rather than a holder.
    pub fn is_queued(&self) -> bool {
        self.grant.is_none()
    }
}

/// A refused path request: nothing was taken, and here is every path in the way.
#[derive(Clone, Debug)]
pub struct PathConflict {
    /// The owner that asked.
    pub owner: Owner,
    /// The paths in the way, per conflicting key of the request.
    pub blocks: Vec<PathBlock>,
    /// The table's report, per key (named paths and the ancestors' intention locks).
    pub conflict: Conflict<PathKey>,
}

impl PathConflict {
    /// The owners in the way (holders and requests queued ahead), without repeats.
    pub fn blockers(&self) -> Vec<Owner> {
        self.conflict.blockers()
    }
}

/// How a mode reads after "held": "exclusively", "shared", "in intention-shared mode".
fn held_as(name: &str) -> std::borrow::Cow<'_, str> {
    match name {
        "exclusive" => "exclusively".into(),
        "shared" => "shared".into(),
        other => format!("in {other} mode").into(),
    }
}

impl fmt::Display for PathBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (fragment, path) = (&self.fragment, &self.path);
        if self.is_queued() {
            write!(f, "fragment {fragment} must wait: {} is queued ahead for {path} ({})", self.owner, self.mode_name)?;
        } else {
            write!(f, "fragment {fragment} is locked: ")?;
            match self.relation {
                Relation::Same => f.write_str("it is held")?,
                Relation::Ancestor if path.depth() == 1 => write!(f, "its anchor {path} is held")?,
                Relation::Ancestor => write!(f, "its ancestor {path} is held")?,
                Relation::Descendant => write!(f, "{path} below it is held")?,
                Relation::SomewhereBelow if path == fragment => f.write_str("a path below it was held")?,
                Relation::SomewhereBelow => write!(f, "a path below {path} was held")?,
            }
            write!(f, " {} by {}", held_as(self.mode_name), self.owner)?;
        }
        if let Some(m) = &self.message {
            write!(f, " ({m})")?;
        }
        Ok(())
    }
}

impl fmt::Display for PathConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.blocks.is_empty() {
            // Not expected (a conflict has a blocker), but say something true rather than nothing.
            return write!(f, "{} could not lock its paths", self.owner);
        }
        for (i, b) in self.blocks.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            b.fmt(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for PathConflict {}

/// Why a path request returned no locks. Nothing is held when it is returned.
#[derive(Debug)]
#[non_exhaustive]
pub enum PathAcquireError {
    /// The request itself is invalid.
    Request(RequestError),
    /// Some paths are held or owed to earlier waiters (a `try_` call, which does not wait).
    Conflict(Box<PathConflict>),
    /// The deadline passed while waiting; the conflict as it stood then.
    Timeout(Box<PathConflict>),
    /// The table's backend could not carry out the request (never the in-memory table).
    Backend(BackendError),
}

impl PathAcquireError {
    /// The conflict, for [`Conflict`](Self::Conflict) and [`Timeout`](Self::Timeout).
    pub fn conflict(&self) -> Option<&PathConflict> {
        match self {
            Self::Conflict(c) | Self::Timeout(c) => Some(c),
            Self::Request(_) | Self::Backend(_) => None,
        }
    }
}

impl fmt::Display for PathAcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Request(e) => e.fmt(f),
            Self::Conflict(c) => c.fmt(f),
            Self::Timeout(c) => write!(f, "timed out waiting: {c}"),
            Self::Backend(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for PathAcquireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Request(e) => Some(e),
            Self::Backend(e) => Some(e),
            _ => None,
        }
    }
}

impl Hierarchy {
    /// Turns a table's per-key conflict for a path request into per-path blocks: which path is
    /// in the way of which path asked for, and how they relate. `asked` are the paths the
    /// request named, with their modes, in order ([`PathRequest::paths`](crate::PathRequest::paths)); `table` is the table
    /// that refused it, read (with a [`snapshot`](LockTable::snapshot), only if a holder is
    /// there for a lock below) to name descendants.
    ///
    /// [`PathLocks`](crate::PathLocks) does this for its own requests; call it for a table you
    /// hold otherwise (see [`Hierarchy::request`]).
    pub fn explain(
        &self,
        table: &LockTable<PathKey>,
        conflict: Conflict<PathKey>,
        asked: &[(PathKey, Mode)],
    ) -> PathConflict {
        let h = self;
        let named = asked;
        let modes = h.modes();
        // The named path that a lock held on `path` in `mode` conflicts with by itself. A lock
        // held above a named path meets the request's intention mode there, not the named mode
        // (a shared path below a SIX is fine; an exclusive one is not), so that is the mode it
        // is compared with; on the path itself or below it, the named mode.
        let against = |path: &PathKey, mode: Mode| {
            named
                .iter()
                .find(|(n, m)| {
                    if path.is_ancestor_of(n) {
                        !modes.compatible(h.intention(*m).unwrap_or(*m), mode)
                    } else {
                        n.overlaps(path) && !modes.compatible(*m, mode)
                    }
                })
                .map(|(n, _)| n)
        };
        // Taken at most once, and only when a holder may be there for something below: it
        // pauses the whole table while it copies.
        let mut snapshot: Option<Snapshot<PathKey>> = None;
        let mut blocks = Vec::new();
        for k in &conflict.keys {
            let key = &k.key;
            // Every key of a request is a named path or an ancestor of one: the key itself if
            // it was named, else the first named path below it, is what a block here is about
            // when no named path conflicts with it by the matrix alone.
            let mut names = named.iter().map(|(n, _)| n);
            let default = match names.clone().find(|n| *n == key) {
                Some(n) => n,
                None => names.find(|n| key.is_ancestor_of(n)).unwrap_or(key),
            };
            let block = |path: &PathKey, owner: &Owner, grant, mode, message: &Option<LockMessage>| {
                let fragment = against(path, mode).unwrap_or(default).clone();
                let relation = if *path == fragment {
                    Relation::Same
                } else if path.is_ancestor_of(&fragment) {
                    Relation::Ancestor
                } else {
                    Relation::Descendant
                };
                PathBlock {
                    fragment,
                    path: path.clone(),
                    relation,
                    owner: owner.clone(),
                    grant,
                    mode,
                    mode_name: modes.name(mode),
                    message: message.clone(),
                }
            };
            for holder in k.holders.iter().filter(|x| x.blocking) {
                let intention = h.is_intention(holder.mode);
                if !intention && !h.is_mixed(holder.mode) {
                    // A subtree lock on `key` itself: no need to look further (or to pay for a
                    // snapshot).
                    blocks.push(block(key, &holder.owner, Some(holder.grant), holder.mode, &holder.message));
                    continue;
                }
                // A holder in an intention mode is on `key` for locks below it, and one in a
                // joined mode (SIX: S here, X below) may be in the way only through them; its
                // locks below are found by grant. A grant never changes its keys, so if it is
                // still in the snapshot these are exactly the locks it had at the conflict.
                let snap = snapshot.get_or_insert_with(|| table.snapshot());
                let below: Vec<_> = snap
                    .held
                    .iter()
                    .filter(|l| l.grant == holder.grant && key.is_ancestor_of(&l.key) && !h.is_intention(l.mode))
                    .collect();
                // The deepest of the grant's conflicting locks: a joined mode higher up (SIX for
                // S there and X below) conflicts by the matrix only because of the lock below.
                let hits: Vec<_> = below.iter().filter(|l| against(&l.key, l.mode).is_some()).collect();
                let conflicting: Vec<_> =
                    hits.iter().filter(|l| !hits.iter().any(|d| l.key.is_ancestor_of(&d.key))).copied().collect();
                let shown: Vec<_> = match (intention, conflicting.is_empty()) {
                    (_, false) => conflicting,
                    // Named intention modes, say: show what is below rather than nothing.
                    (true, true) => below.iter().collect(),
                    // The lock on `key` itself is what is in the way.
                    (false, true) => Vec::new(),
                };
                if shown.is_empty() {
                    let mut b = block(key, &holder.owner, Some(holder.grant), holder.mode, &holder.message);
                    if intention && !snap.held.iter().any(|l| l.grant == holder.grant) {
                        // Released between the conflict and the snapshot: say so, do not guess.
                        // (A grant still there with nothing below holds `key` itself, as in a
                        // hierarchy whose locks take their own mode on the ancestors.)
                        b.relation = Relation::SomewhereBelow;
                    }
                    blocks.push(b);
                }
                for l in shown {
                    blocks.push(block(&l.key, &l.owner, Some(l.grant), l.mode, &l.message));
                }
            }
            for w in &k.waiters_ahead {
                blocks.push(block(key, &w.owner, None, w.mode, &None));
            }
        }
        PathConflict { owner: conflict.owner.clone(), blocks, conflict }
    }
}
