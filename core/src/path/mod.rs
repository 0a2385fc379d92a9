//! Hierarchical locks on data-tree paths: lock an anchor or any fragment under it, and let
//! clients lock different fragments at the same time.
//!
//! This is multi-granularity locking (Gray, Lorie, Putzolu and Traiger, 1976) on top of the
//! plain [`LockTable`]: a lock on a path covers its whole subtree, and before taking it a
//! request takes the matching *intention* mode on every ancestor, in the **same** all-or-nothing
//! acquisition. With Gray's matrix ([`ModeTable::multi_granularity`]):
//!
//! - shared (S) on a path takes intention-shared (IS) on each ancestor, exclusive (X) takes
//!   intention-exclusive (IX);
//! - X on `/a` conflicts with the IS/IX that any lock under `/a` holds on `/a`, so locking an
//!   anchor excludes every fragment below it, and the other way round;
//! - X on `/a/b` and X on `/a/c` both take IX on `/a`, and IX is compatible with IX: siblings
//!   are locked in parallel;
//! - a request that names overlapping paths gets the join of its modes on each key (S on `/a` and
//!   X on `/a/b` hold SIX on `/a`), since the table collapses a key named twice into one mode.
//!
//! Because the front end only rewrites requests, everything the table does works for paths as
//! for plain keys: waiting with one deadline, first-come-first-served queues, [`Ticket`]s,
//! fencing tokens, [`snapshot`](PathLocks::snapshot), forced release. A refused request comes
//! back as a [`PathConflict`] that names the path that blocks and how it relates to the path
//! asked for (the same path, an ancestor, a descendant).
//!
//! The CPS watchdog flow (lock a cm handle's fragment, update, unlock) is the example on
//! [`PathLocks`]; `docs/paths.md` has the design and how to bring another mode matrix.

mod conflict;
mod key;

pub use conflict::{PathAcquireError, PathBlock, PathConflict, Relation};
pub use key::{PathError, PathErrorKind, PathKey, MAX_DEPTH, MAX_PATH_LEN};

use crate::conflict::AcquireError;
use crate::guard::LockSet;
use crate::mode::{Mode, ModeTable, MAX_MODES};
use crate::request::{LockMessage, Owner, Request};
use crate::snapshot::{HeldLock, Snapshot};
use crate::table::{Builder, LockTable};
use crate::ticket::{ReleaseError, Ticket};
use crate::wait::Acquire;
use smallvec::SmallVec;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// A mode table plus, for each mode, the intention mode a lock in it takes on every ancestor.
///
/// [`Hierarchy::multi_granularity`] is Gray's: S → IS, X → IX, IS → IS, IX → IX, SIX → IX. Bring
/// another matrix with [`Hierarchy::new`]; `docs/paths.md` states what the map must satisfy for
/// the locks to be correct (in short: whenever a lock in mode `a` on a path must exclude a lock
/// in mode `b` below it, `a` must be incompatible with `b`'s intention mode).
#[derive(Clone, Debug)]
pub struct Hierarchy {
    modes: ModeTable,
    /// `intention[m]` is the mode that a lock in mode `m` takes on each ancestor.
    intention: [Mode; MAX_MODES],
    /// Bit `i` set when mode `i` is the intention of some mode: a holder in such a mode on a
    /// path is (usually) there for a lock below it, which is how conflicts find descendants.
    intention_set: u8,
    /// Bit `i` set when mode `i` is what a path's own lock becomes when joined with an
    /// intention for a lock below it (SIX = S + IX): such a holder may be in the way only
    /// through its lock below, so a conflict report looks there too.
    mixed_set: u8,
}

/// Why [`Hierarchy::new`] refused a map.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HierarchyError {
    /// The map names a mode the table does not have.
    UnknownMode(Mode),
    /// A mode of the table has no intention mode.
    Missing(Mode),
    /// A mode is mapped twice.
    Duplicate(Mode),
}

impl fmt::Display for HierarchyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownMode(m) => write!(f, "the intention map names mode {}, which the table does not have", m.0),
            Self::Missing(m) => write!(f, "mode {} has no intention mode for its ancestors", m.0),
            Self::Duplicate(m) => write!(f, "mode {} is given two intention modes", m.0),
        }
    }
}

impl std::error::Error for HierarchyError {}

impl Default for Hierarchy {
    fn default() -> Self {
        Self::multi_granularity()
    }
}

impl Hierarchy {
    /// Gray's five modes ([`ModeTable::multi_granularity`]) with their intention modes.
    pub fn multi_granularity() -> Self {
        let m = [
            (Mode::SHARED, Mode::INTENTION_SHARED),
            (Mode::EXCLUSIVE, Mode::INTENTION_EXCLUSIVE),
            (Mode::INTENTION_SHARED, Mode::INTENTION_SHARED),
            (Mode::INTENTION_EXCLUSIVE, Mode::INTENTION_EXCLUSIVE),
            (Mode::SHARED_INTENTION_EXCLUSIVE, Mode::INTENTION_EXCLUSIVE),
        ];
        Self::new(ModeTable::multi_granularity(), &m).unwrap_or_else(|_| unreachable!("the built-in map is total"))
    }

    /// A hierarchy from any mode table and a map `(mode, intention mode)` naming every mode once.
    ///
    /// # Errors
    /// [`HierarchyError`] if the map names a mode outside the table, leaves one out, or names
    /// one twice.
    ///
    /// # Examples
    /// Two modes only, where a lock takes the same mode on its ancestors (a coarse tree lock:
    /// correct, but siblings then conflict whenever one of them is exclusive):
    /// ```
    /// use lockcore::{Hierarchy, Mode, ModeTable};
    /// let h = Hierarchy::new(
    ///     ModeTable::shared_exclusive(),
    ///     &[(Mode::SHARED, Mode::SHARED), (Mode::EXCLUSIVE, Mode::EXCLUSIVE)],
    /// )
    /// .unwrap();
    /// assert_eq!(h.intention(Mode::EXCLUSIVE), Some(Mode::EXCLUSIVE));
    /// assert!(Hierarchy::new(ModeTable::shared_exclusive(), &[(Mode::SHARED, Mode::SHARED)]).is_err());
    /// ```
    pub fn new(modes: ModeTable, map: &[(Mode, Mode)]) -> Result<Self, HierarchyError> {
        let mut intention = [Mode(0); MAX_MODES];
        let mut seen = 0u8;
        let mut intention_set = 0u8;
        for &(m, i) in map {
            for x in [m, i] {
                if !modes.contains(x) {
                    return Err(HierarchyError::UnknownMode(x));
                }
            }
            if seen & m.bit() != 0 {
                return Err(HierarchyError::Duplicate(m));
            }
            seen |= m.bit();
            intention[m.index()] = i;
            intention_set |= i.bit();
        }
        let all = || (0..modes.len() as u8).map(Mode);
        if let Some(missing) = all().find(|m| seen & m.bit() == 0) {
            return Err(HierarchyError::Missing(missing));
        }
        let mut mixed_set = 0u8;
        for own in all().filter(|m| intention_set & m.bit() == 0) {
            for i in all().filter(|m| intention_set & m.bit() != 0) {
                let joined = modes.join_known(own, i);
                if joined != own {
                    mixed_set |= joined.bit();
                }
            }
        }
        Ok(Self { modes, intention, intention_set, mixed_set })
    }

    /// The mode table.
    pub fn modes(&self) -> &ModeTable {
        &self.modes
    }

    /// The mode a lock in `mode` takes on each ancestor, or `None` for a mode not in the table.
    pub fn intention(&self, mode: Mode) -> Option<Mode> {
        self.modes.contains(mode).then(|| self.intention[mode.index()])
    }

    /// Whether `mode` is the intention mode of some mode (IS and IX in Gray's table).
    pub fn is_intention(&self, mode: Mode) -> bool {
        self.modes.contains(mode) && self.intention_set & mode.bit() != 0
    }

    /// Whether `mode` is a path's own lock joined with an intention for a lock below it, and
    /// differs from the own lock (SIX in Gray's table).
    pub(crate) fn is_mixed(&self, mode: Mode) -> bool {
        self.modes.contains(mode) && self.mixed_set & mode.bit() != 0
    }

    /// The plain request that `req` stands for under this hierarchy: every named path in its
    /// mode, then every ancestor in the intention mode.
    ///
    /// This is path locking without [`PathLocks`], for a `LockTable<PathKey>` owned by something
    /// else (a durable wrapper that recovers kept tickets, say): build that table with
    /// [`modes`](Self::modes), acquire `request(req)` on it, and turn a refusal into a
    /// [`PathConflict`] with [`explain`](Self::explain).
    ///
    /// ```
    /// use lockcore::{Hierarchy, LockTable, PathKey, PathRequest};
    /// let h = Hierarchy::multi_granularity();
    /// let table = LockTable::<PathKey>::with_modes(h.modes().clone());
    /// let held = table.try_acquire(h.request(PathRequest::new("w").exclusive("/a/b".parse().unwrap()))).unwrap();
    /// let req = PathRequest::new("admin").exclusive("/a".parse().unwrap());
    /// let asked: Vec<_> = req.paths().map(|(p, m)| (p.clone(), m)).collect();
    /// let err = table.try_acquire(h.request(req)).unwrap_err();
    /// let report = h.explain(&table, err.conflict().unwrap().clone(), &asked);
    /// assert_eq!(report.to_string(), "fragment /a is locked: /a/b below it is held exclusively by w");
    /// # drop(held);
    /// ```
    pub fn request(&self, req: PathRequest) -> Request<PathKey> {
        self.expand(req, None)
    }

    /// Expands `req`, noting the named paths in `named` if given. Named paths come first so
    /// that, when a named path is also another's ancestor, its own message is the one kept
    /// (the table keeps the first message given for a key).
    pub(crate) fn expand(&self, req: PathRequest, mut named: Option<&mut Named>) -> Request<PathKey> {
        let PathRequest { owner, items } = req;
        let mut out = Request::new(owner);
        out.items.reserve(items.iter().map(|i| i.path.depth()).sum());
        for i in &items {
            if let Some(n) = named.as_deref_mut() {
                n.push((i.path.clone(), i.mode));
            }
            out = out.lock(i.path.clone(), i.mode, i.message.clone());
        }
        if cfg!(lockcore_mutant = "no_intention") {
            // Deliberately broken: no intention locks on ancestors, so a subtree lock and a
            // lock below it never meet on a common key.
            return out;
        }
        for i in items {
            // A mode outside the table has no intention; the table refuses the named path.
            let Some(intention) = self.intention(i.mode) else { continue };
            for a in i.path.ancestors() {
                out = out.lock(a, intention, i.message.clone());
            }
        }
        out
    }
}

/// One path of a [`PathRequest`].
#[derive(Clone, Debug)]
struct PathItem {
    path: PathKey,
    mode: Mode,
    message: Option<LockMessage>,
}

/// An all-or-nothing request for paths: an owner and the paths it wants, each in a mode.
///
/// The ancestors' intention locks are added when it is acquired; a path named twice, or named
/// and also an ancestor of another path, is taken once in the join of its modes.
///
/// The table's limit of [`MAX_KEYS`](crate::MAX_KEYS) keys counts each path with its ancestors,
/// before paths shared between them are merged.
#[derive(Clone, Debug)]
pub struct PathRequest {
    owner: Owner,
    items: SmallVec<[PathItem; 4]>,
}

impl PathRequest {
    /// An empty request for `owner`.
    pub fn new(owner: impl Into<Owner>) -> Self {
        Self { owner: owner.into(), items: SmallVec::new() }
    }

    /// Adds `path` (and with it, its whole subtree) in `mode`, with an optional message.
    pub fn lock(mut self, path: PathKey, mode: Mode, message: Option<LockMessage>) -> Self {
        self.items.push(PathItem { path, mode, message });
        self
    }

    /// Adds `path` shared: readers of the same subtree may hold it too.
    pub fn shared(self, path: PathKey) -> Self {
        self.lock(path, Mode::SHARED, None)
    }

    /// Adds `path` exclusive: nobody else may hold it, an ancestor or anything below it.
    pub fn exclusive(self, path: PathKey) -> Self {
        self.lock(path, Mode::EXCLUSIVE, None)
    }

    /// Adds `path` shared with the message others see if they conflict with it.
    pub fn shared_with(self, path: PathKey, message: impl Into<LockMessage>) -> Self {
        self.lock(path, Mode::SHARED, Some(message.into()))
    }

    /// Adds `path` exclusive with the message others see if they conflict with it.
    pub fn exclusive_with(self, path: PathKey, message: impl Into<LockMessage>) -> Self {
        self.lock(path, Mode::EXCLUSIVE, Some(message.into()))
    }

    /// The owner.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Number of paths named, counting duplicates (ancestors not included).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no path is named.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The paths and modes named, in the order given.
    pub fn paths(&self) -> impl Iterator<Item = (&PathKey, Mode)> {
        self.items.iter().map(|i| (&i.path, i.mode))
    }
}

/// The paths a request named with their modes, kept to explain a conflict (an inline array: no
/// allocation for requests of up to four paths).
type Named = SmallVec<[(PathKey, Mode); 4]>;

/// Hierarchical locks on paths: a [`LockTable<PathKey>`] with a [`Hierarchy`] of modes.
///
/// A lock on a path covers its subtree; taking it also takes the hierarchy's intention mode on
/// every ancestor, in the same all-or-nothing acquisition, so a lock on an anchor and a lock
/// on a fragment under it always meet on a common key, while siblings only share intention
/// locks, which are compatible. `docs/paths.md` has the design.
///
/// # Example: the CPS watchdog
///
/// A watchdog wakes up, finds a cm handle in state ADVISED, locks that handle's fragment (not the
/// whole registry anchor), updates it and unlocks; another watchdog instance can lock another
/// handle meanwhile, and an administrator locking the whole anchor is refused with a message
/// that names the watchdog.
///
/// ```
/// use lockcore::{LockMessage, PathKey, PathLocks, PathRequest};
/// use std::time::Duration;
///
/// let locks = PathLocks::new();
/// let handle = |id: &str| PathKey::parse(&format!("/dmi-registry/cm-handles[@id='{id}']")).unwrap();
///
/// // Watchdog 1 locks cm handle ch-1's fragment while it updates the timestamp.
/// let w1 = locks
///     .try_acquire(PathRequest::new("sync-watchdog-1").exclusive_with(handle("ch-1"), "model sync"))
///     .unwrap();
/// // Watchdog 2 works on another handle at the same time: siblings do not conflict.
/// let w2 = locks
///     .acquire(PathRequest::new("sync-watchdog-2").exclusive(handle("ch-2")), Duration::from_secs(1))
///     .unwrap();
/// // Locking the whole anchor is refused, and the error says which fragment is in the way.
/// let anchor = PathKey::parse("/dmi-registry").unwrap();
/// let err = locks.try_acquire(PathRequest::new("admin").exclusive(anchor.clone())).unwrap_err();
/// assert!(err.to_string().starts_with(
///     "fragment /dmi-registry is locked: /dmi-registry/cm-handles[@id='ch-1'] below it is held \
///      exclusively by sync-watchdog-1 (model sync)"
/// ));
/// // ... update the state to READY, then unlock.
/// drop((w1, w2));
/// assert!(locks.try_acquire(PathRequest::new("admin").exclusive(anchor)).is_ok());
/// ```
pub struct PathLocks {
    table: LockTable<PathKey>,
    hierarchy: Hierarchy,
}

impl fmt::Debug for PathLocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PathLocks").field("table", &self.table).finish_non_exhaustive()
    }
}

impl Default for PathLocks {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds [`PathLocks`] with non-default settings.
#[derive(Clone, Debug)]
pub struct PathLocksBuilder {
    table: Builder,
    hierarchy: Hierarchy,
}

impl PathLocksBuilder {
    /// The modes and their intention modes (default: [`Hierarchy::multi_granularity`]).
    pub fn hierarchy(mut self, hierarchy: Hierarchy) -> Self {
        self.hierarchy = hierarchy;
        self
    }

    /// Number of index shards of the underlying table (see [`Builder::shards`]).
    pub fn shards(mut self, n: usize) -> Self {
        self.table = self.table.shards(n);
        self
    }

    /// The fencing-token floor of the underlying table (see [`Builder::token_floor`]).
    pub fn token_floor(mut self, floor: u64) -> Self {
        self.table = self.table.token_floor(floor);
        self
    }

    /// Makes the lock table.
    pub fn build(self) -> PathLocks {
        let table = self.table.modes(self.hierarchy.modes.clone()).build();
        PathLocks { table, hierarchy: self.hierarchy }
    }
}

impl PathLocks {
    /// Path locks with Gray's modes and default table settings.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for other settings.
    pub fn builder() -> PathLocksBuilder {
        PathLocksBuilder { table: LockTable::<PathKey>::builder(), hierarchy: Hierarchy::multi_granularity() }
    }

    /// The underlying table: for tickets, `release_owner`, `force_release`, `holders`, metrics.
    pub fn table(&self) -> &LockTable<PathKey> {
        &self.table
    }

    /// The modes and their intention modes.
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// The plain request that `req` stands for: every named path in its mode, then every
    /// ancestor in the intention mode. Useful to go through a [`LockBackend`](crate::LockBackend).
    ///
    /// ```
    /// use lockcore::{Mode, PathKey, PathLocks, PathRequest};
    /// let locks = PathLocks::new();
    /// let req = locks.request(PathRequest::new("o").exclusive(PathKey::parse("/a/b/c").unwrap()));
    /// let keys: Vec<(String, Mode)> = req.keys().map(|(k, m)| (k.to_string(), m)).collect();
    /// assert_eq!(keys, [
    ///     ("/a/b/c".to_string(), Mode::EXCLUSIVE),
    ///     ("/a".to_string(), Mode::INTENTION_EXCLUSIVE),
    ///     ("/a/b".to_string(), Mode::INTENTION_EXCLUSIVE),
    /// ]);
    /// ```
    pub fn request(&self, req: PathRequest) -> Request<PathKey> {
        self.hierarchy.request(req)
    }

    /// Takes every path of `req` (with its ancestors' intention locks) at once, or none.
    ///
    /// Does not wait for holders, like [`LockTable::try_acquire`].
    ///
    /// # Errors
    /// [`PathAcquireError::Request`] for an invalid request, [`PathAcquireError::Conflict`]
    /// naming each path in the way and its relation to the path asked for.
    ///
    /// # Examples
    /// ```
    /// use lockcore::{PathKey, PathLocks, PathRequest};
    /// let locks = PathLocks::new();
    /// let p = |s: &str| PathKey::parse(s).unwrap();
    /// let anchor = locks.try_acquire(PathRequest::new("sync-watchdog-2").exclusive_with(p("/a"), "model sync")).unwrap();
    /// let err = locks.try_acquire(PathRequest::new("ui").shared(p("/a/b"))).unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "fragment /a/b is locked: its anchor /a is held exclusively by sync-watchdog-2 (model sync)"
    /// );
    /// drop(anchor);
    /// ```
    pub fn try_acquire(&self, req: PathRequest) -> Result<LockSet<'_, PathKey>, PathAcquireError> {
        let mut named = Named::new();
        let req = self.hierarchy.expand(req, Some(&mut named));
        self.table.try_acquire(req).map_err(|e| self.explain_error(e, &named))
    }

    /// Takes every path of `req` at once, waiting up to `timeout`, like [`LockTable::acquire`]
    /// (queued first come, first served on each key, holding nothing while it waits).
    ///
    /// # Errors
    /// [`PathAcquireError::Request`] for an invalid request, [`PathAcquireError::Timeout`] with
    /// the conflict as it stood at the deadline.
    pub fn acquire(&self, req: PathRequest, timeout: Duration) -> Result<LockSet<'_, PathKey>, PathAcquireError> {
        let mut named = Named::new();
        let req = self.hierarchy.expand(req, Some(&mut named));
        self.table.acquire(req, timeout).map_err(|e| self.explain_error(e, &named))
    }

    /// Takes every path of `req` at once, as a future for any executor, like
    /// [`LockTable::acquire_async`]. Dropping it cancels the wait.
    ///
    /// # Errors
    /// The future yields [`PathAcquireError::Request`] for an invalid request.
    ///
    /// # Examples
    /// ```
    /// use lockcore::{PathKey, PathLocks, PathRequest};
    /// let locks = PathLocks::new();
    /// let req = PathRequest::new("o").shared(PathKey::parse("/a/b").unwrap());
    /// let set = pollster::block_on(locks.acquire_async(req)).unwrap();
    /// assert_eq!(set.len(), 2); // /a/b shared, /a intention-shared
    /// ```
    pub fn acquire_async(&self, req: PathRequest) -> PathAcquire<'_> {
        let mut named = Named::new();
        let req = self.hierarchy.expand(req, Some(&mut named));
        PathAcquire { locks: self, inner: self.table.acquire_async(req), named }
    }

    /// Releases the grant a ticket stands for (see [`LockTable::release`]).
    ///
    /// # Errors
    /// See [`LockTable::release`].
    pub fn release(&self, ticket: &Ticket<PathKey>) -> Result<(), ReleaseError> {
        self.table.release(ticket)
    }

    /// Every held lock (intention locks included) and every waiter.
    pub fn snapshot(&self) -> Snapshot<PathKey> {
        self.table.snapshot()
    }

    /// The locks held on `path` or below it in a mode that is not an intention mode: what
    /// actually covers that subtree. Takes a [`snapshot`](Self::snapshot).
    pub fn held_under(&self, path: &PathKey) -> Vec<HeldLock<PathKey>> {
        let mut held = self.table.snapshot().held;
        held.retain(|l| (l.key == *path || path.is_ancestor_of(&l.key)) && !self.hierarchy.is_intention(l.mode));
        held
    }

    fn explain_error(&self, e: AcquireError<PathKey>, named: &[(PathKey, Mode)]) -> PathAcquireError {
        match e {
            AcquireError::Request(r) => PathAcquireError::Request(r),
            AcquireError::Conflict(c) => {
                PathAcquireError::Conflict(Box::new(self.hierarchy.explain(&self.table, *c, named)))
            }
            AcquireError::Backend(e) => PathAcquireError::Backend(e),
            AcquireError::Timeout(c) => {
                PathAcquireError::Timeout(Box::new(self.hierarchy.explain(&self.table, *c, named)))
            }
        }
    }
}

/// The future of [`PathLocks::acquire_async`].
#[must_use = "futures do nothing unless polled"]
pub struct PathAcquire<'t> {
    locks: &'t PathLocks,
    inner: Acquire<'t, PathKey>,
    named: Named,
}

impl fmt::Debug for PathAcquire<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PathAcquire").field("paths", &self.named).finish_non_exhaustive()
    }
}

impl<'t> Future for PathAcquire<'t> {
    type Output = Result<LockSet<'t, PathKey>, PathAcquireError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll(cx) {
            Poll::Ready(Ok(set)) => Poll::Ready(Ok(set)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.locks.explain_error(e, &this.named))),
            Poll::Pending => Poll::Pending,
        }
    }
}
