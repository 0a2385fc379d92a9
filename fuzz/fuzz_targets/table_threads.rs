//! Fuzz target `table_threads`: operations split across 2 or 3 threads on one shared
//! `LockTable<u8>`, checked by invariants that hold whatever the interleaving.
//!
//! - **Shadow checker**: a `Mutex<HashMap<key, Vec<(grant, mode)>>>` updated right after a grant
//!   returns and right before its release; adding a grant beside an incompatible one fails.
//!   (A release is removed from the shadow before the table frees the key, and a grant is added
//!   after the table made it, so the shadow never holds less than the table.)
//! - **Own holdings**: each thread has its own owners, and only it acquires or releases for them,
//!   so after each of its operations the snapshot's locks of those owners must be exactly the
//!   thread's live grants (all or nothing: a refused request keeps nothing), and their waiting
//!   entries exactly its pending wait, if any.
//! - **No barging**: around each `try_acquire` a snapshot before and after; a waiter present in
//!   both (same arrival number: queue membership is one interval) was queued throughout, so a
//!   grant incompatible with it, or with a holder present in both, is a violation.
//! - **No lost wake-up**: `acquire_async` polled with a waker that sets a flag and unparks the
//!   thread, waited for at once or left pending while the thread goes on (then its own later
//!   `try_acquire`s meet it in the queue). If at the deadline (<= 2 ms) the snapshot shows the
//!   waiter grantable, whatever made it grantable happened before the snapshot and must wake it:
//!   no wake within a grace period is a lost wake-up.
//! - Waits use `acquire` with a timeout <= 2 ms; every result is checked against the thread's own
//!   bookkeeping (`release` of a live ticket is `Ok`, of a force-released one `UnknownGrant`...).
//! - At the end: all released, snapshot empty (no holder, no waiter), shadow empty, and
//!   `reclaim()` leaves `key_count() == 0`.
//!
//! Each input runs in well under 50 ms (at most 12 operations per thread, waits <= 2 ms; the
//! 3 s grace is spent only when a wake-up is actually missing, and is long enough that a releasing
//! thread descheduled on a loaded machine between its release and its wake-up is not mistaken for
//! a lost wake-up).
//! Deliberately broken cores (`LOCKCORE_MUTANT=grant_all|partial|barging|no_wake`) fail here.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use lockcore::{
    Acquire, AcquireError, GrantId, LockSet, LockTable, Mode, Owner, ReleaseError, Request, Snapshot, Ticket,
};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// Keys are `0..KEYS`: few, so threads meet.
const KEYS: u8 = 4;
/// Operations per thread.
const MAX_OPS: usize = 12;
/// The longest wait (`acquire` timeout, `acquire_async` deadline).
const MAX_WAIT: Duration = Duration::from_millis(2);
/// How long a wake-up that is due may take to arrive (the waker runs after the releasing thread
/// drops its latches, and that thread may be descheduled in between).
const WAKE_GRACE: Duration = Duration::from_secs(3);

const S: Mode = Mode::SHARED;
const X: Mode = Mode::EXCLUSIVE;

fn compatible(a: Mode, b: Mode) -> bool {
    a == S && b == S
}

fn join(a: Mode, b: Mode) -> Mode {
    if a == X || b == X {
        X
    } else {
        S
    }
}

// ---------------------------------------------------------------------------------------------
// Input.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Item {
    key: u8,
    mode: Mode,
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.key, if self.mode == X { "X" } else { "S" })
    }
}

/// 1 to 4 keys, duplicates allowed.
#[derive(Clone)]
struct Items(Vec<Item>);

impl<'a> Arbitrary<'a> for Items {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let n = u.int_in_range(1..=4usize)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            let key = u.int_in_range(0..=KEYS - 1)?;
            let mode = if u.arbitrary()? { X } else { S };
            items.push(Item { key, mode });
        }
        Ok(Items(items))
    }
}

impl fmt::Debug for Items {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.0).finish()
    }
}

/// One operation of one thread. `second` picks the thread's second owner; indices pick among
/// the thread's own grants, modulo their number.
#[derive(Arbitrary, Clone, Debug)]
enum Op {
    /// `try_acquire`, with a snapshot before and after (no barging, no incompatible holder).
    TryAcquire { second: bool, items: Items },
    /// `acquire` with a timeout of `wait * 8` us, at most 2 ms.
    Acquire { second: bool, items: Items, wait: u8 },
    /// `acquire_async` waited for up to `wait * 8` us (at most 2 ms), with the lost wake-up
    /// check (if a wait is already pending, that one is waited for instead).
    AsyncWait { second: bool, items: Items, wait: u8 },
    /// `acquire_async` polled once and, if queued, left pending while the thread goes on (one
    /// at a time per thread): its own later `try_acquire`s must not barge past it.
    StartWait { second: bool, items: Items },
    /// Waits up to `wait * 8` us (at most 2 ms) for the pending wait, with the lost wake-up
    /// check; cancels it if not granted by then.
    FinishWait { wait: u8 },
    /// Drops the pending wait (cancellation).
    CancelWait,
    /// Drops a guard.
    DropGuard(u8),
    /// Turns a guard into a ticket.
    IntoTicket(u8),
    /// `release` of a ticket (`Ok` if live, `UnknownGrant` if force-released).
    Release(u8),
    /// `release_owner` of one of the thread's owners.
    ReleaseOwner(bool),
    /// `force_release` of one of the thread's grants, live or not.
    ForceRelease(u8),
    /// Lets another thread run.
    Yield,
    /// Waits (up to 2 ms) until another thread's request is queued: a meeting point that makes
    /// "take a key while someone waits for it" likely rather than a matter of luck.
    AwaitWaiter,
}

#[derive(Arbitrary, Debug)]
struct Input {
    three_threads: bool,
    ops: [Vec<Op>; 3],
}

// ---------------------------------------------------------------------------------------------
// Checks shared by the threads.
// ---------------------------------------------------------------------------------------------

/// Grants as their holders see them, per key.
#[derive(Default)]
struct Shadow(Mutex<HashMap<u8, Vec<(GrantId, Mode)>>>);

impl Shadow {
    /// Right after a grant returns.
    fn add(&self, grant: GrantId, want: &Want) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (&k, &m) in want {
            let held = map.entry(k).or_default();
            if let Some((g, other)) = held.iter().find(|(_, other)| !compatible(m, *other)) {
                panic!("key {k}: {grant:?} granted {m:?} while {g:?} holds it {other:?} (shadow)");
            }
            held.push((grant, m));
        }
    }

    /// Right before a release.
    fn remove(&self, grant: GrantId) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for held in map.values_mut() {
            held.retain(|(g, _)| *g != grant);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).values().all(Vec::is_empty)
    }
}

type Want = BTreeMap<u8, Mode>;

fn want_of(items: &Items) -> Want {
    let mut w = Want::new();
    for i in &items.0 {
        let m = w.get(&i.key).map_or(i.mode, |&old| join(old, i.mode));
        w.insert(i.key, m);
    }
    w
}

/// A waker that records that it was woken and unparks the waiting thread.
struct Flag {
    woken: AtomicBool,
    thread: Thread,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// Whether the snapshot shows the (only) waiting request of `owner` grantable: on each of its
/// keys compatible with every holder and every waiter that arrived before it. `None` if `owner`
/// is not waiting.
fn waiter_grantable(snap: &Snapshot<u8>, owner: &Owner) -> Option<bool> {
    let mine: Vec<_> = snap.waiting.iter().filter(|w| w.owner == *owner).collect();
    if mine.is_empty() {
        return None;
    }
    Some(mine.iter().all(|w| {
        snap.held.iter().filter(|h| h.key == w.key).all(|h| compatible(w.mode, h.mode))
            && snap
                .waiting
                .iter()
                .filter(|q| q.key == w.key && q.arrival < w.arrival)
                .all(|q| compatible(w.mode, q.mode))
    }))
}

// ---------------------------------------------------------------------------------------------
// One thread.
// ---------------------------------------------------------------------------------------------

enum Kind<'t> {
    Guard(Box<LockSet<'t, u8>>),
    Ticket(Ticket<u8>),
    /// Released by guard drop or ticket: kept so that `force_release` can name it.
    Gone,
}

struct Grant<'t> {
    grant: GrantId,
    owner: usize,
    want: Want,
    kind: Kind<'t>,
    /// Still held in the table (not force-released or released by owner).
    live: bool,
}

/// A queued `acquire_async`, with the waker it was polled with.
struct Pending<'t> {
    fut: Acquire<'t, u8>,
    owner: usize,
    want: Want,
    flag: Arc<Flag>,
    waker: Waker,
}

struct Worker<'a, 't> {
    id: usize,
    table: &'t LockTable<u8>,
    shadow: &'a Shadow,
    owners: [Owner; 2],
    grants: Vec<Grant<'t>>,
    pending: Option<Pending<'t>>,
}

/// `wait * 8` us, at most `MAX_WAIT`.
fn wait_time(wait: u8) -> Duration {
    Duration::from_micros(u64::from(wait) * 8).min(MAX_WAIT)
}

fn pick(i: u8, len: usize) -> Option<usize> {
    (len > 0).then(|| usize::from(i) % len)
}

impl<'t> Worker<'_, 't> {
    fn request(&self, owner: usize, items: &Items) -> Request<u8> {
        items.0.iter().fold(Request::new(self.owners[owner].clone()), |r, i| r.lock(i.key, i.mode, None))
    }

    fn granted(&mut self, set: LockSet<'t, u8>, owner: usize, want: Want) {
        self.shadow.add(set.grant(), &want);
        let got: Want = set.locks().map(|(k, m, _)| (*k, m)).collect();
        assert_eq!(got, want, "thread {}: granted keys differ from the request", self.id);
        assert_eq!(set.owner(), &self.owners[owner], "thread {}: grant of another owner", self.id);
        self.grants.push(Grant { grant: set.grant(), owner, want, kind: Kind::Guard(Box::new(set)), live: true });
    }

    /// Indices of grants in a given state.
    fn indices(&self, f: impl Fn(&Grant<'t>) -> bool) -> Vec<usize> {
        (0..self.grants.len()).filter(|&i| f(&self.grants[i])).collect()
    }

    fn step(&mut self, op: &Op) {
        let table = self.table;
        let id = self.id;
        match op {
            Op::TryAcquire { second, items } => {
                let owner = usize::from(*second);
                let want = want_of(items);
                let before = table.snapshot();
                match table.try_acquire(self.request(owner, items)) {
                    Ok(set) => {
                        let grant = set.grant();
                        self.granted(set, owner, want.clone());
                        let after = table.snapshot();
                        for (&k, &m) in &want {
                            for w in before.waiting.iter().filter(|w| w.key == k && !compatible(m, w.mode)) {
                                let stayed = after.waiting.iter().any(|a| a.key == k && a.arrival == w.arrival);
                                assert!(
                                    !stayed,
                                    "thread {id}: {grant:?} took key {k} {m:?} past waiter #{} ({}, {:?}) queued \
                                     before and after it: barging",
                                    w.arrival, w.owner, w.mode
                                );
                            }
                            for h in before.held.iter().filter(|h| h.key == k && !compatible(m, h.mode)) {
                                let stayed = after.held.iter().any(|a| a.key == k && a.grant == h.grant);
                                assert!(
                                    !stayed,
                                    "thread {id}: {grant:?} took key {k} {m:?} while {:?} ({}) held it {:?} \
                                     before and after",
                                    h.grant, h.owner, h.mode
                                );
                            }
                        }
                    }
                    Err(AcquireError::Conflict(c)) => {
                        assert!(!c.keys.is_empty(), "thread {id}: a conflict naming no key");
                        assert!(
                            c.keys.iter().all(|k| want.contains_key(&k.key)),
                            "thread {id}: conflict on a key not asked"
                        );
                    }
                    Err(e) => panic!("thread {id}: try_acquire: {e}"),
                }
            }
            Op::Acquire { second, items, wait } => {
                let owner = usize::from(*second);
                let want = want_of(items);
                match table.acquire(self.request(owner, items), wait_time(*wait)) {
                    Ok(set) => self.granted(set, owner, want),
                    Err(AcquireError::Timeout(c)) => {
                        assert!(!c.keys.is_empty(), "thread {id}: a timeout naming no key");
                        assert!(
                            c.keys.iter().all(|k| want.contains_key(&k.key)),
                            "thread {id}: conflict on a key not asked"
                        );
                    }
                    Err(e) => panic!("thread {id}: acquire: {e}"),
                }
            }
            Op::AsyncWait { second, items, wait } => {
                if self.pending.is_none() {
                    self.start_wait(usize::from(*second), items);
                }
                self.finish_wait(wait_time(*wait));
            }
            Op::StartWait { second, items } => {
                if self.pending.is_none() {
                    self.start_wait(usize::from(*second), items);
                }
            }
            Op::FinishWait { wait } => self.finish_wait(wait_time(*wait)),
            Op::CancelWait => self.pending = None,
            Op::DropGuard(i) => {
                let guards = self.indices(|g| matches!(g.kind, Kind::Guard(_)));
                let Some(j) = pick(*i, guards.len()) else { return };
                let g = &mut self.grants[guards[j]];
                if g.live {
                    self.shadow.remove(g.grant);
                }
                g.kind = Kind::Gone; // drops the guard
                g.live = false;
            }
            Op::IntoTicket(i) => {
                let guards = self.indices(|g| matches!(g.kind, Kind::Guard(_)));
                let Some(j) = pick(*i, guards.len()) else { return };
                let g = &mut self.grants[guards[j]];
                if let Kind::Guard(set) = std::mem::replace(&mut g.kind, Kind::Gone) {
                    let t = (*set).into_ticket();
                    assert_eq!(t.grant, g.grant, "thread {id}: ticket of another grant");
                    let locks: Want = t.locks.iter().map(|l| (l.key, l.mode)).collect();
                    assert_eq!(locks, g.want, "thread {id}: ticket keys differ from the grant");
                    g.kind = Kind::Ticket(t);
                }
            }
            Op::Release(i) => {
                let tickets = self.indices(|g| matches!(g.kind, Kind::Ticket(_)));
                let Some(j) = pick(*i, tickets.len()) else { return };
                let g = &mut self.grants[tickets[j]];
                if let Kind::Ticket(t) = std::mem::replace(&mut g.kind, Kind::Gone) {
                    if g.live {
                        self.shadow.remove(g.grant);
                    }
                    let got = table.release(&t);
                    let expected = if g.live { Ok(()) } else { Err(ReleaseError::UnknownGrant(g.grant)) };
                    assert_eq!(got, expected, "thread {id}: release of {:?} (live: {})", g.grant, g.live);
                    g.live = false;
                }
            }
            Op::ReleaseOwner(second) => {
                let owner = usize::from(*second);
                let mut expected = BTreeMap::new();
                for g in self.grants.iter_mut().filter(|g| g.live && g.owner == owner) {
                    self.shadow.remove(g.grant);
                    expected.insert(g.grant, g.want.clone());
                    g.live = false;
                }
                let freed: BTreeMap<GrantId, Want> = table
                    .release_owner(&self.owners[owner])
                    .into_iter()
                    .map(|t| (t.grant, t.locks.iter().map(|l| (l.key, l.mode)).collect()))
                    .collect();
                assert_eq!(freed, expected, "thread {id}: release_owner({})", self.owners[owner]);
            }
            Op::ForceRelease(i) => {
                let Some(j) = pick(*i, self.grants.len()) else { return };
                let g = &mut self.grants[j];
                if g.live {
                    self.shadow.remove(g.grant);
                }
                let got = table.force_release(g.grant);
                match (&got, g.live) {
                    (Ok(t), true) => {
                        let locks: Want = t.locks.iter().map(|l| (l.key, l.mode)).collect();
                        assert_eq!(
                            (t.grant, &locks),
                            (g.grant, &g.want),
                            "thread {id}: force_release freed other locks"
                        );
                    }
                    (Err(ReleaseError::UnknownGrant(x)), false) if *x == g.grant => {}
                    _ => panic!("thread {id}: force_release of {:?} (live: {}): {got:?}", g.grant, g.live),
                }
                g.live = false;
            }
            Op::Yield => std::thread::yield_now(),
            Op::AwaitWaiter => {
                let deadline = Instant::now() + MAX_WAIT;
                while Instant::now() < deadline
                    && !table.snapshot().waiting.iter().any(|w| !self.owners.contains(&w.owner))
                {
                    std::thread::yield_now();
                }
            }
        }
    }

    /// `acquire_async`, polled once: granted, or left pending.
    fn start_wait(&mut self, owner: usize, items: &Items) {
        let flag = Arc::new(Flag { woken: AtomicBool::new(false), thread: std::thread::current() });
        let waker = Waker::from(Arc::clone(&flag));
        let mut fut = self.table.acquire_async(self.request(owner, items));
        match Pin::new(&mut fut).poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(Ok(set)) => self.granted(set, owner, want_of(items)),
            Poll::Ready(Err(e)) => panic!("thread {}: acquire_async: {e}", self.id),
            Poll::Pending => self.pending = Some(Pending { fut, owner, want: want_of(items), flag, waker }),
        }
    }

    /// Waits up to `wait` for the pending wait, polling it when woken; cancels it if it is
    /// not granted by then. Checks for lost wake-ups.
    fn finish_wait(&mut self, wait: Duration) {
        let Some(mut p) = self.pending.take() else { return };
        let id = self.id;
        let deadline = Instant::now() + wait;
        let mut checked = false;
        loop {
            if !p.flag.woken.swap(false, Ordering::SeqCst) {
                let now = Instant::now();
                if now < deadline {
                    std::thread::park_timeout(deadline - now);
                    continue;
                }
                if checked {
                    return; // gave up: dropping the future cancels the wait
                }
                checked = true;
                let snap = self.table.snapshot();
                match waiter_grantable(&snap, &self.owners[p.owner]) {
                    None => panic!("thread {id}: a pending acquire_async is not in the snapshot's waiters"),
                    Some(false) => return,
                    Some(true) => {
                        // Whatever made it grantable happened before the snapshot, and wakes it.
                        let grace = Instant::now() + WAKE_GRACE;
                        while !p.flag.woken.load(Ordering::SeqCst) && Instant::now() < grace {
                            std::thread::park_timeout(grace.saturating_duration_since(Instant::now()));
                        }
                        assert!(
                            p.flag.woken.load(Ordering::SeqCst),
                            "thread {id}: waiter of {} grantable since the snapshot but not woken within {:?}: \
                             lost wake-up\n{snap:#?}",
                            self.owners[p.owner],
                            WAKE_GRACE
                        );
                        continue;
                    }
                }
            }
            match Pin::new(&mut p.fut).poll(&mut Context::from_waker(&p.waker)) {
                Poll::Ready(Ok(set)) => return self.granted(set, p.owner, p.want),
                Poll::Ready(Err(e)) => panic!("thread {id}: acquire_async: {e}"),
                Poll::Pending => {}
            }
        }
    }

    /// The snapshot's locks of this thread's owners are exactly its live grants, and their
    /// waiting entries exactly its pending wait.
    fn check_own(&self) {
        let snap = self.table.snapshot();
        let mut got: Vec<(u8, GrantId, Mode)> =
            snap.held.iter().filter(|h| self.owners.contains(&h.owner)).map(|h| (h.key, h.grant, h.mode)).collect();
        got.sort();
        let mut expected: Vec<(u8, GrantId, Mode)> = self
            .grants
            .iter()
            .filter(|g| g.live)
            .flat_map(|g| g.want.iter().map(move |(&k, &m)| (k, g.grant, m)))
            .collect();
        expected.sort();
        assert_eq!(got, expected, "thread {}: the table's locks of my owners differ from my grants", self.id);
        let mut waiting: Vec<(u8, Owner, Mode)> = snap
            .waiting
            .iter()
            .filter(|w| self.owners.contains(&w.owner))
            .map(|w| (w.key, w.owner.clone(), w.mode))
            .collect();
        waiting.sort();
        let expected: Vec<(u8, Owner, Mode)> = self
            .pending
            .iter()
            .flat_map(|p| p.want.iter().map(|(&k, &m)| (k, self.owners[p.owner].clone(), m)))
            .collect();
        assert_eq!(
            waiting, expected,
            "thread {}: the table's waiters of my owners differ from my pending wait",
            self.id
        );
    }

    /// Releases everything this thread holds.
    fn finish(&mut self) {
        self.pending = None;
        for g in std::mem::take(&mut self.grants) {
            if g.live {
                self.shadow.remove(g.grant);
            }
            match g.kind {
                Kind::Guard(set) => drop(set),
                Kind::Ticket(t) => {
                    let got = self.table.release(&t);
                    let expected = if g.live { Ok(()) } else { Err(ReleaseError::UnknownGrant(g.grant)) };
                    assert_eq!(got, expected, "thread {}: final release of {:?}", self.id, g.grant);
                }
                Kind::Gone => {}
            }
        }
        self.check_own();
    }
}

fn run(input: &Input) {
    // Half the inputs (by length) read-bias a key after one shared grant (core/src/bias.rs).
    let ops: usize = input.ops.iter().map(Vec::len).sum();
    let table = LockTable::<u8>::builder().read_bias(if ops % 2 == 0 { 1 } else { 8 }).build();
    let shadow = Shadow::default();
    let n = if input.three_threads { 3 } else { 2 };
    let start = Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = input
            .ops
            .iter()
            .take(n)
            .enumerate()
            .map(|(id, ops)| {
                let (table, shadow, start) = (&table, &shadow, &start);
                s.spawn(move || {
                    let owners = [Owner::new(format!("t{id}a")), Owner::new(format!("t{id}b"))];
                    let mut w = Worker { id, table, shadow, owners, grants: Vec::new(), pending: None };
                    start.wait();
                    for op in ops.iter().take(MAX_OPS) {
                        w.step(op);
                        w.check_own();
                    }
                    w.finish();
                })
            })
            .collect();
        // Join each thread explicitly: that waits for the thread to exit, thread-local
        // destructors included. The scope alone returns once the closures are done, while the
        // threads may still be tearing down, and LeakSanitizer (libFuzzer checks for leaks after
        // an input) then reports glibc's in-flight `__cxa_thread_atexit` records as leaks.
        for h in handles {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    let snap = table.snapshot();
    assert!(snap.held.is_empty() && snap.waiting.is_empty(), "table not empty at the end: {snap:#?}");
    assert!(shadow.is_empty(), "shadow not empty at the end");
    table.reclaim();
    assert_eq!(table.key_count(), 0, "keys left after reclaim()");
}

fuzz_target!(|input: Input| {
    run(&input);
});
