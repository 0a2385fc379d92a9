//! Oracle test: random sequences of operations, on one thread, run against the real
//! `LockTable<u8>` and against a plain sequential model written here; every result must agree.
//!
//! The model is deliberately naive: per key, a list of holders and a FIFO queue of waiters, and
//! the compatibility matrices written out by hand (never taken from `lockcore::ModeTable`). A
//! request is granted iff, on each of its distinct keys (duplicates joined into the stronger
//! mode), its mode is compatible with every holder and with every waiter queued before it (a new
//! request is behind every waiter: no barging). A refusal must name exactly the keys the model
//! finds blocked, with their holders and the incompatible waiters ahead.
//!
//! Waiting is driven on this one thread through `acquire_async`: the future is polled with a
//! no-op waker, `Pending` meaning queued. Polling again must grant exactly when the model says
//! the waiter may go, so a lost wake-up shows as a waiter that stays pending. Blocking `acquire`
//! is used with timeouts of 0 and 1 ms (nothing can change meanwhile on one thread).
//!
//! Releases: guard drop, ticket release (twice, and edited tickets), `release_owner`,
//! `force_release`; `holders`, `blockers` and `reclaim` are compared too.
//!
//! After every operation the real table's `snapshot()` is checked on its own (no two
//! incompatible holders of a key, per-key grouping, FIFO arrival numbers) and compared in full
//! with the model: holders with grant, owner, mode, message and fencing token; waiters per key in
//! queue order. Fencing tokens must be present exactly for self-excluding modes, above the
//! table's floor and strictly increasing per key. At the end everything is released and the
//! table must reclaim every key. Each property also counts what it exercised and fails if
//! something it is meant to test never happened (so it cannot pass vacuously).
//!
//! Core bugs this suite found are kept as `regression_*` tests (all fixed in `c70da6b`).
//!
//! Deliberately broken cores must fail here:
//! `LOCKCORE_MUTANT=NAME cargo test -p lockcore --test oracle` (or
//! `RUSTFLAGS='--cfg lockcore_mutant="NAME"' CARGO_TARGET_DIR=target/mutant ...`) for `grant_all`,
//! `partial`, `barging` and `no_wake`.

use lockcore::{
    Acquire, AcquireError, Conflict, GrantId, LockMessage, LockSet, LockTable, Mode, ModeTable, Owner, ReleaseError,
    Request, RequestError, TableId, Ticket, TicketLock, Token,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Keys are `0..KEYS`.
const KEYS: u8 = 6;
/// Owners are `OWNERS[0..4]`.
const OWNERS: [&str; 4] = ["o0", "o1", "o2", "o3"];
/// Longest operation sequence (shorter under miri, which runs it some thousand times slower).
const MAX_OPS: usize = if cfg!(miri) { 12 } else { 64 };

const S: Mode = Mode::SHARED;
const X: Mode = Mode::EXCLUSIVE;
const IS: Mode = Mode::INTENTION_SHARED;
const IX: Mode = Mode::INTENTION_EXCLUSIVE;
const SIX: Mode = Mode::SHARED_INTENTION_EXCLUSIVE;

// ---------------------------------------------------------------------------------------------
// Mode families, written independently of the core's `ModeTable`.
// ---------------------------------------------------------------------------------------------

/// A set of modes as the model sees them, and how to build the matching real table.
struct Family {
    modes: &'static [Mode],
    compatible: fn(Mode, Mode) -> bool,
    join: fn(Mode, Mode) -> Mode,
    table: fn() -> LockTable<u8>,
    /// Every fencing token must be above this (`Builder::token_floor`).
    token_floor: u64,
}

impl Family {
    /// Modes that exclude their own kind take a fencing token.
    fn fenced(&self, m: Mode) -> bool {
        !(self.compatible)(m, m)
    }
}

/// Shared/exclusive: only two shared holders go together.
fn sx_compatible(a: Mode, b: Mode) -> bool {
    a == S && b == S
}

fn sx_join(a: Mode, b: Mode) -> Mode {
    if a == X || b == X {
        X
    } else {
        S
    }
}

/// Gray's multi-granularity matrix: the compatible unordered pairs, written out.
fn gray_compatible(a: Mode, b: Mode) -> bool {
    const PAIRS: [(Mode, Mode); 6] = [(IS, IS), (IS, IX), (IS, S), (IS, SIX), (IX, IX), (S, S)];
    PAIRS.iter().any(|&(p, q)| (a, b) == (p, q) || (a, b) == (q, p))
}

/// Gray's modes as sets of rights: IS = {is}, IX = {is, ix}, S = {is, s}, SIX = {is, ix, s},
/// X = everything. The join is the weakest mode holding the union of the rights.
fn gray_rights(m: Mode) -> u8 {
    match m {
        IS => 0b0001,
        IX => 0b0011,
        S => 0b0101,
        SIX => 0b0111,
        X => 0b1111,
        _ => unreachable!("not a Gray mode: {m:?}"),
    }
}

fn gray_join(a: Mode, b: Mode) -> Mode {
    let need = gray_rights(a) | gray_rights(b);
    [IS, IX, S, SIX, X].into_iter().find(|&m| gray_rights(m) & need == need).unwrap_or(X)
}

/// Under miri, every shard costs a lock per `snapshot()` at a few hundred ms each: use two.
const MIRI_SHARDS: usize = 2;

fn sx_table() -> LockTable<u8> {
    if cfg!(miri) {
        LockTable::<u8>::builder().shards(MIRI_SHARDS).build()
    } else {
        LockTable::new()
    }
}

fn sx_one_shard() -> LockTable<u8> {
    LockTable::<u8>::builder().shards(1).token_floor(1000).build()
}

fn gray_table() -> LockTable<u8> {
    if cfg!(miri) {
        LockTable::<u8>::builder().shards(MIRI_SHARDS).modes(ModeTable::multi_granularity()).build()
    } else {
        LockTable::with_modes(ModeTable::multi_granularity())
    }
}

static SX: Family =
    Family { modes: &[S, X], compatible: sx_compatible, join: sx_join, table: sx_table, token_floor: 0 };
/// Shared/exclusive on a one-shard table, so that new keys make the table sweep idle slots
/// (from 64 slots on) in the middle of the run; and a token floor.
static SX_SWEEPING: Family =
    Family { modes: &[S, X], compatible: sx_compatible, join: sx_join, table: sx_one_shard, token_floor: 1000 };
/// Read bias after a single grant: shared (and IS, IX) requests of a key granted once before
/// go through the reader slots, and every conflicting request revokes a bias first.
fn sx_biased() -> LockTable<u8> {
    LockTable::<u8>::builder().shards(if cfg!(miri) { MIRI_SHARDS } else { 128 }).read_bias(1).build()
}

fn gray_biased() -> LockTable<u8> {
    LockTable::<u8>::builder()
        .shards(if cfg!(miri) { MIRI_SHARDS } else { 128 })
        .modes(ModeTable::multi_granularity())
        .read_bias(1)
        .build()
}

static SX_BIASED: Family =
    Family { modes: &[S, X], compatible: sx_compatible, join: sx_join, table: sx_biased, token_floor: 0 };
static GRAY_BIASED: Family = Family {
    modes: &[S, X, IS, IX, SIX],
    compatible: gray_compatible,
    join: gray_join,
    table: gray_biased,
    token_floor: 0,
};
static GRAY: Family = Family {
    modes: &[S, X, IS, IX, SIX],
    compatible: gray_compatible,
    join: gray_join,
    table: gray_table,
    token_floor: 0,
};

fn mode_name(m: Mode) -> &'static str {
    match m {
        S => "S",
        X => "X",
        IS => "IS",
        IX => "IX",
        SIX => "SIX",
        _ => "?",
    }
}

// ---------------------------------------------------------------------------------------------
// Operations.
// ---------------------------------------------------------------------------------------------

/// One key of a request: key, mode, and an optional message `m<n>`.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Item {
    key: u8,
    mode: Mode,
    msg: Option<u8>,
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.key, mode_name(self.mode))?;
        if let Some(m) = self.msg {
            write!(f, "/m{m}")?;
        }
        Ok(())
    }
}

/// How a ticket is corrupted before it is handed to `release`.
#[derive(Clone, Copy, Debug)]
enum Tamper {
    /// Another table's id.
    Foreign,
    /// One key fewer (a mode change if it has only one).
    DropKey,
    /// The first key in another mode.
    ChangeMode,
    /// One more key the grant does not hold.
    ExtraKey(usize),
    /// The first key named twice.
    DuplicateKey,
    /// No key at all.
    NoKeys,
    /// Only keys the grant does not hold.
    OtherKeys,
}

#[derive(Clone)]
enum Op {
    /// `try_acquire`; a grant is kept as a live guard.
    TryAcquire { owner: usize, items: Vec<Item> },
    /// Blocking `acquire` with a timeout of `wait_ms` (0 or 1): on one thread nothing can change
    /// while it waits, so it is granted at once or times out, leaving the queue as it was.
    Acquire { owner: usize, items: Vec<Item>, wait_ms: u8 },
    /// An invalid request (no key, or a mode the table lacks) through `try_acquire` or
    /// `acquire_async`: refused with `AcquireError::Request`, nothing changes.
    BadRequest { owner: usize, unknown_mode: bool, via_async: bool },
    /// `acquire_async`, polled once: granted (kept as a guard) or queued.
    Wait { owner: usize, items: Vec<Item> },
    /// Polls a queued future again.
    PollWaiter(usize),
    /// Drops a queued future.
    CancelWaiter(usize),
    /// Turns a live guard into a ticket.
    IntoTicket(usize),
    /// Drops a live guard.
    DropGuard(usize),
    /// `release` of a ticket (moved to the released list).
    Release(usize),
    /// `release` of an already released ticket: always `UnknownGrant`.
    ReleaseTwice(usize),
    /// `release` of a corrupted copy of a ticket: refused, nothing released.
    ReleaseTampered(usize, Tamper),
    /// `release_owner`.
    ReleaseOwner(usize),
    /// `force_release` of any grant seen so far, or of one never granted.
    ForceRelease(usize),
    /// `holders(key)`.
    Holders(u8),
    /// `blockers(owner)`.
    Blockers(usize),
    /// `reclaim()`: gives back freed records' memory, changes nothing visible.
    Reclaim,
}

/// One line per operation, so that proptest's minimal failing inputs read as a script.
impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::TryAcquire { owner, items } => write!(f, "TryAcquire({}, {items:?})", OWNERS[*owner]),
            Op::Acquire { owner, items, wait_ms } => write!(f, "Acquire({}, {items:?}, {wait_ms} ms)", OWNERS[*owner]),
            Op::BadRequest { owner, unknown_mode, via_async } => {
                write!(f, "BadRequest({}, unknown_mode: {unknown_mode}, async: {via_async})", OWNERS[*owner])
            }
            Op::Wait { owner, items } => write!(f, "Wait({}, {items:?})", OWNERS[*owner]),
            Op::PollWaiter(i) => write!(f, "PollWaiter({i})"),
            Op::CancelWaiter(i) => write!(f, "CancelWaiter({i})"),
            Op::IntoTicket(i) => write!(f, "IntoTicket({i})"),
            Op::DropGuard(i) => write!(f, "DropGuard({i})"),
            Op::Release(i) => write!(f, "Release({i})"),
            Op::ReleaseTwice(i) => write!(f, "ReleaseTwice({i})"),
            Op::ReleaseTampered(i, how) => write!(f, "ReleaseTampered({i}, {how:?})"),
            Op::ReleaseOwner(o) => write!(f, "ReleaseOwner({})", OWNERS[*o]),
            Op::ForceRelease(i) => write!(f, "ForceRelease({i})"),
            Op::Holders(k) => write!(f, "Holders({k})"),
            Op::Blockers(o) => write!(f, "Blockers({})", OWNERS[*o]),
            Op::Reclaim => f.write_str("Reclaim"),
        }
    }
}

fn item(mode: BoxedStrategy<Mode>) -> impl Strategy<Value = Item> {
    (0..KEYS, mode, proptest::option::weighted(0.25, 0..3u8)).prop_map(|(key, mode, msg)| Item { key, mode, msg })
}

fn items(mode: BoxedStrategy<Mode>) -> impl Strategy<Value = Vec<Item>> {
    proptest::collection::vec(item(mode), 1..=4)
}

fn sx_mode() -> BoxedStrategy<Mode> {
    prop_oneof![3 => Just(S), 2 => Just(X)].boxed()
}

fn gray_mode() -> BoxedStrategy<Mode> {
    proptest::sample::select(GRAY.modes).boxed()
}

/// Which element of a list an operation picks: `pick % len` (shrinks towards the first).
fn pick() -> impl Strategy<Value = usize> {
    0..64usize
}

fn pick_in(pick: usize, len: usize) -> usize {
    pick % len
}

fn owner() -> impl Strategy<Value = usize> {
    0..OWNERS.len()
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        Just(Tamper::Foreign),
        Just(Tamper::DropKey),
        Just(Tamper::ChangeMode),
        pick().prop_map(Tamper::ExtraKey),
        Just(Tamper::DuplicateKey),
        Just(Tamper::NoKeys),
        Just(Tamper::OtherKeys),
    ]
}

/// Every operation.
fn full_op(mode: fn() -> BoxedStrategy<Mode>) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (owner(), items(mode())).prop_map(|(owner, items)| Op::TryAcquire { owner, items }),
        5 => (owner(), items(mode())).prop_map(|(owner, items)| Op::Wait { owner, items }),
        1 => (owner(), items(mode()), 0..=1u8).prop_map(|(owner, items, wait_ms)| Op::Acquire { owner, items, wait_ms }),
        1 => (owner(), any::<bool>(), any::<bool>())
            .prop_map(|(owner, unknown_mode, via_async)| Op::BadRequest { owner, unknown_mode, via_async }),
        5 => pick().prop_map(Op::PollWaiter),
        2 => pick().prop_map(Op::CancelWaiter),
        2 => pick().prop_map(Op::IntoTicket),
        4 => pick().prop_map(Op::DropGuard),
        2 => pick().prop_map(Op::Release),
        1 => pick().prop_map(Op::ReleaseTwice),
        1 => (pick(), tamper()).prop_map(|(i, t)| Op::ReleaseTampered(i, t)),
        1 => owner().prop_map(Op::ReleaseOwner),
        1 => pick().prop_map(Op::ForceRelease),
        1 => (0..KEYS).prop_map(Op::Holders),
        1 => owner().prop_map(Op::Blockers),
        1 => Just(Op::Reclaim),
    ]
}

/// Every operation, plus big requests on keys outside `0..KEYS` that come and go, so that
/// records are freed and reused while guards, tickets and waiters are live.
fn sweeping_op() -> impl Strategy<Value = Op> {
    let noise = (KEYS..=u8::MAX, sx_mode()).prop_map(|(key, mode)| Item { key, mode, msg: None });
    prop_oneof![
        12 => full_op(sx_mode),
        1 => (owner(), proptest::collection::vec(noise, 10..=40)).prop_map(|(owner, items)| Op::TryAcquire { owner, items }),
    ]
}

/// `try_acquire` and drop only.
fn plain_op(mode: fn() -> BoxedStrategy<Mode>) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (owner(), items(mode())).prop_map(|(owner, items)| Op::TryAcquire { owner, items }),
        2 => pick().prop_map(Op::DropGuard),
    ]
}

// ---------------------------------------------------------------------------------------------
// The model.
// ---------------------------------------------------------------------------------------------

/// A request after duplicates are joined: key -> (mode, first message given).
type Want = BTreeMap<u8, (Mode, Option<String>)>;
/// What a grant holds: key -> (mode, fencing token).
type Locks = BTreeMap<u8, (Mode, Option<Token>)>;

/// One holder of one key, as compared between model and snapshot.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    grant: GrantId,
    owner: usize,
    mode: Mode,
    msg: Option<String>,
    token: Option<Token>,
}

/// One waiter on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Queued {
    arrival: u64,
    owner: usize,
    mode: Mode,
}

struct Model {
    fam: &'static Family,
    holders: BTreeMap<u8, Vec<Held>>,
    queues: BTreeMap<u8, VecDeque<Queued>>,
    grants: BTreeMap<GrantId, (usize, Locks)>,
}

impl Model {
    fn new(fam: &'static Family) -> Self {
        Self { fam, holders: BTreeMap::new(), queues: BTreeMap::new(), grants: BTreeMap::new() }
    }

    fn compatible(&self, a: Mode, b: Mode) -> bool {
        (self.fam.compatible)(a, b)
    }

    fn collapse(&self, items: &[Item]) -> Want {
        let mut want = Want::new();
        for it in items {
            let msg = it.msg.map(|m| format!("m{m}"));
            match want.get_mut(&it.key) {
                None => {
                    want.insert(it.key, (it.mode, msg));
                }
                Some((mode, first)) => {
                    *mode = (self.fam.join)(*mode, it.mode);
                    if first.is_none() {
                        *first = msg;
                    }
                }
            }
        }
        want
    }

    fn holders_of(&self, key: u8) -> &[Held] {
        self.holders.get(&key).map_or(&[], |v| v)
    }

    fn queue_of(&self, key: u8) -> impl Iterator<Item = &Queued> {
        self.queues.get(&key).into_iter().flatten()
    }

    /// Keys on which a new request (behind every waiter) cannot be granted now.
    fn blocked_new(&self, want: &Want) -> BTreeSet<u8> {
        want.iter()
            .filter(|(&k, &(m, _))| {
                self.holders_of(k).iter().any(|h| !self.compatible(m, h.mode))
                    || self.queue_of(k).any(|q| !self.compatible(m, q.mode))
            })
            .map(|(&k, _)| k)
            .collect()
    }

    /// Whether some key of `want` is held in a mode it conflicts with (the queue aside).
    fn blocked_by_holders(&self, want: &Want) -> bool {
        want.iter().any(|(&k, &(m, _))| self.holders_of(k).iter().any(|h| !self.compatible(m, h.mode)))
    }

    /// Whether the waiter `arrival` may go now: compatible with the holders and with every
    /// waiter queued before it, on each of its keys.
    fn waiter_grantable(&self, arrival: u64, want: &Want) -> bool {
        want.iter().all(|(&k, &(m, _))| {
            self.holders_of(k).iter().all(|h| self.compatible(m, h.mode))
                && self.queue_of(k).take_while(|q| q.arrival != arrival).all(|q| self.compatible(m, q.mode))
        })
    }

    fn grant(&mut self, grant: GrantId, owner: usize, want: &Want, locks: &Locks) {
        for (&k, (m, msg)) in want {
            let token = locks[&k].1;
            self.holders.entry(k).or_default().push(Held { grant, owner, mode: *m, msg: msg.clone(), token });
        }
        self.grants.insert(grant, (owner, locks.clone()));
    }

    fn remove_grant(&mut self, grant: GrantId) -> Option<(usize, Locks)> {
        let (owner, locks) = self.grants.remove(&grant)?;
        for k in locks.keys() {
            let v = self.holders.get_mut(k).expect("model: a grant's key has holders");
            v.retain(|h| h.grant != grant);
            if v.is_empty() {
                self.holders.remove(k);
            }
        }
        Some((owner, locks))
    }

    fn enqueue(&mut self, arrival: u64, owner: usize, want: &Want) {
        for (&k, &(mode, _)) in want {
            self.queues.entry(k).or_default().push_back(Queued { arrival, owner, mode });
        }
    }

    fn dequeue(&mut self, arrival: u64) {
        for q in self.queues.values_mut() {
            q.retain(|w| w.arrival != arrival);
        }
        self.queues.retain(|_, q| !q.is_empty());
    }

    /// What `blockers(owner)` should say.
    fn blockers(&self, owner: usize) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        for (&k, q) in &self.queues {
            for (i, w) in q.iter().enumerate().filter(|(_, w)| w.owner == owner) {
                let holders = self.holders_of(k).iter().filter(|h| !self.compatible(w.mode, h.mode)).map(|h| h.owner);
                let ahead = q.iter().take(i).filter(|a| !self.compatible(w.mode, a.mode)).map(|a| a.owner);
                out.extend(holders.chain(ahead).filter(|&o| o != owner));
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Coverage: what the runs exercised, so a property cannot pass by testing nothing.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Granted,
    GrantedWithJoin,
    ConflictByHolder,
    /// Refused only because of waiters queued ahead (the no-barging rule at work).
    ConflictByQueueOnly,
    Queued,
    WaiterGrantedOnPoll,
    WaiterStillPending,
    Cancelled,
    GuardDroppedLive,
    GuardDroppedStale,
    Ticket,
    ReleaseOk,
    ReleaseStale,
    ReleaseTwice,
    ReleaseTamperedLive,
    OwnerReleased,
    ForceReleased,
    ForceUnknown,
    TimedOutAtOnce,
    TimedOutAfterWaiting,
    BadRequest,
    /// The table freed a released key's record by itself (not through `reclaim`).
    Swept,
    /// A grant made on a reader slot, without the shard latches (read bias).
    BiasedGrant,
}

thread_local! {
    static SEEN: RefCell<BTreeMap<Event, u64>> = const { RefCell::new(BTreeMap::new()) };
}

fn saw(e: Event) {
    SEEN.with(|s| *s.borrow_mut().entry(e).or_default() += 1);
}

fn take_seen() -> BTreeMap<Event, u64> {
    SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

// ---------------------------------------------------------------------------------------------
// The harness: real table and model side by side.
// ---------------------------------------------------------------------------------------------

fn owner_ix(o: &Owner) -> usize {
    OWNERS.iter().position(|&n| n == o.as_str()).unwrap_or(usize::MAX)
}

fn request(owner: usize, items: &[Item]) -> Request<u8> {
    items.iter().fold(Request::new(OWNERS[owner]), |r, it| {
        r.lock(it.key, it.mode, it.msg.map(|m| LockMessage::new(format!("m{m}"))))
    })
}

fn ticket_locks(t: &Ticket<u8>) -> Result<Locks, TestCaseError> {
    let locks: Locks = t.locks.iter().map(|l| (l.key, (l.mode, l.token))).collect();
    prop_assert_eq!(locks.len(), t.locks.len(), "a ticket names a key twice: {:?}", t);
    Ok(locks)
}

fn poll_once<'t>(fut: Pin<&mut Acquire<'t, u8>>) -> Poll<Result<LockSet<'t, u8>, AcquireError<u8>>> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

struct Guard<'t> {
    set: LockSet<'t, u8>,
    grant: GrantId,
    owner: usize,
    locks: Locks,
}

struct Waiting<'t> {
    fut: Pin<Box<Acquire<'t, u8>>>,
    arrival: u64,
    owner: usize,
    want: Want,
}

/// The table's counters as `MetricsSnapshot` documents them, counted by the harness.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    grants: u64,
    conflicts: u64,
    waits: u64,
    timeouts: u64,
    cancellations: u64,
    /// Grants released by their holder: a live guard dropped, a ticket released.
    releases: u64,
    owner_releases: u64,
    forced_releases: u64,
    /// One hold-time sample "for every released grant".
    hold_samples: u64,
    /// One wait-time sample per request "that waited and got its locks".
    wait_samples: u64,
}

impl Counts {
    fn of(table: &LockTable<u8>) -> Self {
        let m = table.metrics();
        Self {
            grants: m.grants,
            conflicts: m.conflicts,
            waits: m.waits,
            timeouts: m.timeouts,
            cancellations: m.cancellations,
            releases: m.releases,
            owner_releases: m.owner_releases,
            forced_releases: m.forced_releases,
            hold_samples: m.hold_time.count(),
            wait_samples: m.wait_time.count(),
        }
    }
}

struct Harness<'t> {
    table: &'t LockTable<u8>,
    /// What `metrics()` should say.
    counts: Counts,
    /// The table's `biased_grants` when last looked at.
    biased_seen: u64,
    /// Compare `metrics()` with `counts` after every operation.
    check_metrics: bool,
    model: Model,
    guards: Vec<Guard<'t>>,
    tickets: Vec<Ticket<u8>>,
    released: Vec<Ticket<u8>>,
    waiters: Vec<Waiting<'t>>,
    /// Every grant made in this run, for `ForceRelease`.
    known: Vec<GrantId>,
    /// Last fencing token seen per key: tokens must strictly increase.
    last_token: BTreeMap<u8, Token>,
}

/// Runs `ops` on a fresh table of `fam` and on the model; `Err` at the first disagreement.
fn run(fam: &'static Family, ops: &[Op]) -> Result<(), TestCaseError> {
    run_with(fam, ops, false)
}

/// As [`run`]; with `check_metrics`, also compares `metrics()` with the harness's own counts.
fn run_with(fam: &'static Family, ops: &[Op], check_metrics: bool) -> Result<(), TestCaseError> {
    let table = (fam.table)();
    let mut h = Harness {
        table: &table,
        counts: Counts::default(),
        biased_seen: 0,
        check_metrics,
        model: Model::new(fam),
        guards: Vec::new(),
        tickets: Vec::new(),
        released: Vec::new(),
        waiters: Vec::new(),
        known: Vec::new(),
        last_token: BTreeMap::new(),
    };
    // Coverage only (not checked under miri, where `key_count` is slow).
    let count_keys = || if cfg!(miri) { 0 } else { table.key_count() };
    for (step, op) in ops.iter().enumerate() {
        let keys_before = count_keys();
        h.apply(op).map_err(|e| annotate(e, step, op))?;
        h.check().map_err(|e| annotate(e, step, op))?;
        if count_keys() < keys_before && !matches!(op, Op::Reclaim) {
            saw(Event::Swept);
        }
    }
    h.finish()
}

fn annotate(e: TestCaseError, step: usize, op: &Op) -> TestCaseError {
    match e {
        TestCaseError::Fail(why) => TestCaseError::fail(format!("after op #{step} {op:?}: {why}")),
        other => other,
    }
}

impl<'t> Harness<'t> {
    fn fam(&self) -> &'static Family {
        self.model.fam
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::TryAcquire { owner, items } => self.try_acquire(*owner, items),
            Op::Acquire { owner, items, wait_ms } => self.acquire(*owner, items, *wait_ms),
            Op::BadRequest { owner, unknown_mode, via_async } => {
                let (req, expect) = if *unknown_mode {
                    let bad = Mode(self.fam().modes.len() as u8);
                    (Request::new(OWNERS[*owner]).shared(0).lock(1, bad, None), RequestError::UnknownMode(bad))
                } else {
                    (Request::new(OWNERS[*owner]), RequestError::Empty)
                };
                let result = if *via_async {
                    match poll_once(Box::pin(self.table.acquire_async(req)).as_mut()) {
                        Poll::Ready(r) => r,
                        Poll::Pending => return Err(TestCaseError::fail("an invalid request was queued")),
                    }
                } else {
                    self.table.try_acquire(req)
                };
                match result {
                    Err(AcquireError::Request(e)) => prop_assert_eq!(e, expect),
                    Err(e) => return Err(TestCaseError::fail(format!("invalid request: wrong error {e}"))),
                    Ok(_) => return Err(TestCaseError::fail("an invalid request was granted")),
                }
                saw(Event::BadRequest);
                Ok(())
            }
            Op::Wait { owner, items } => self.wait(*owner, items),
            Op::PollWaiter(i) => self.poll_waiter(*i),
            Op::CancelWaiter(i) => {
                if !self.waiters.is_empty() {
                    let w = self.waiters.remove(pick_in(*i, self.waiters.len()));
                    drop(w.fut);
                    self.model.dequeue(w.arrival);
                    self.counts.cancellations += 1;
                    saw(Event::Cancelled);
                }
                Ok(())
            }
            Op::IntoTicket(i) => self.make_ticket(*i),
            Op::DropGuard(i) => {
                if !self.guards.is_empty() {
                    let g = self.guards.remove(pick_in(*i, self.guards.len()));
                    drop(g.set);
                    let live = self.model.remove_grant(g.grant).is_some();
                    if live {
                        self.counts.releases += 1;
                        self.counts.hold_samples += 1;
                    }
                    saw(if live { Event::GuardDroppedLive } else { Event::GuardDroppedStale });
                }
                Ok(())
            }
            Op::Release(i) => self.release(*i),
            Op::ReleaseTwice(i) => {
                if !self.released.is_empty() {
                    let t = &self.released[pick_in(*i, self.released.len())];
                    prop_assert_eq!(self.table.release(t), Err(ReleaseError::UnknownGrant(t.grant)));
                    saw(Event::ReleaseTwice);
                }
                Ok(())
            }
            Op::ReleaseTampered(i, how) => self.release_tampered(*i, *how),
            Op::ReleaseOwner(o) => self.release_owner(*o),
            Op::ForceRelease(i) => self.force_release(*i),
            Op::Holders(k) => {
                let mut real: Vec<Held> = self
                    .table
                    .holders(k)
                    .into_iter()
                    .map(|h| Held {
                        grant: h.grant,
                        owner: owner_ix(&h.owner),
                        mode: h.mode,
                        msg: h.message.map(|m| m.reason().to_owned()),
                        token: h.token,
                    })
                    .collect();
                real.sort();
                let mut expect = self.model.holders_of(*k).to_vec();
                expect.sort();
                prop_assert_eq!(real, expect, "holders({})", k);
                Ok(())
            }
            Op::Blockers(o) => {
                let real = self.table.blockers(&Owner::new(OWNERS[*o]));
                let set: BTreeSet<usize> = real.iter().map(owner_ix).collect();
                prop_assert_eq!(set.len(), real.len(), "blockers() repeats an owner: {:?}", real);
                prop_assert_eq!(set, self.model.blockers(*o), "blockers({})", OWNERS[*o]);
                Ok(())
            }
            Op::Reclaim => {
                self.table.reclaim();
                let busy: BTreeSet<u8> = self.model.holders.keys().chain(self.model.queues.keys()).copied().collect();
                prop_assert_eq!(self.table.key_count(), busy.len(), "reclaim changed the keys stored");
                Ok(())
            }
        }
    }

    /// Checks a fresh grant against what was asked and records it.
    fn granted(&mut self, set: LockSet<'t, u8>, owner: usize, want: &Want) -> Result<(), TestCaseError> {
        let fam = self.fam();
        prop_assert_eq!(set.owner().as_str(), OWNERS[owner]);
        prop_assert_eq!(set.len(), want.len(), "a grant holds one entry per distinct key");
        let locks: Locks = set.locks().map(|(k, m, t)| (*k, (m, t))).collect();
        prop_assert_eq!(locks.len(), want.len());
        for (k, (m, _)) in want {
            let Some(&(mode, token)) = locks.get(k) else {
                return Err(TestCaseError::fail(format!("grant lacks key {k}")));
            };
            prop_assert_eq!(mode, *m, "key {} granted in the wrong mode", k);
            prop_assert_eq!(token.is_some(), fam.fenced(mode), "token presence on key {} in {:?}", k, mode);
            prop_assert_eq!(set.token(k), token);
            if let Some(t) = token {
                prop_assert!(t.0 > fam.token_floor, "token {:?} on key {} is not above the floor", t, k);
                if let Some(&last) = self.last_token.get(k) {
                    prop_assert!(t > last, "fencing token on key {} went from {:?} to {:?}", k, last, t);
                }
                self.last_token.insert(*k, t);
            }
        }
        let grant = set.grant();
        prop_assert!(!self.known.contains(&grant), "grant id {:?} reused", grant);
        self.known.push(grant);
        self.model.grant(grant, owner, want, &locks);
        self.guards.push(Guard { set, grant, owner, locks });
        self.counts.grants += 1;
        saw(Event::Granted);
        if self.table.metrics().biased_grants > self.biased_seen {
            self.biased_seen += 1;
            saw(Event::BiasedGrant);
        }
        Ok(())
    }

    /// Checks a refusal against the model's set of blocked keys.
    fn conflicted(
        &self,
        c: &Conflict<u8>,
        owner: usize,
        want: &Want,
        blocked: &BTreeSet<u8>,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(c.owner.as_str(), OWNERS[owner]);
        prop_assert_eq!(c.requested, want.len());
        let keys: BTreeSet<u8> = c.keys.iter().map(|k| k.key).collect();
        prop_assert_eq!(keys.len(), c.keys.len(), "a conflict names a key twice");
        prop_assert_eq!(&keys, blocked, "conflicting keys");
        for kc in &c.keys {
            let mode = want[&kc.key].0;
            prop_assert_eq!(kc.asked, mode);
            let mut real: Vec<(GrantId, usize, Mode, bool)> =
                kc.holders.iter().map(|h| (h.grant, owner_ix(&h.owner), h.mode, h.blocking)).collect();
            real.sort();
            let mut expect: Vec<(GrantId, usize, Mode, bool)> = self
                .model
                .holders_of(kc.key)
                .iter()
                .map(|h| (h.grant, h.owner, h.mode, !self.model.compatible(mode, h.mode)))
                .collect();
            expect.sort();
            prop_assert_eq!(real, expect, "holders reported on key {}", kc.key);
            let ahead: Vec<(usize, Mode)> = kc.waiters_ahead.iter().map(|w| (owner_ix(&w.owner), w.mode)).collect();
            let expect: Vec<(usize, Mode)> = self
                .model
                .queue_of(kc.key)
                .filter(|q| !self.model.compatible(mode, q.mode))
                .map(|q| (q.owner, q.mode))
                .collect();
            prop_assert_eq!(ahead, expect, "waiters ahead reported on key {}", kc.key);
        }
        saw(if self.model.blocked_by_holders(want) { Event::ConflictByHolder } else { Event::ConflictByQueueOnly });
        Ok(())
    }

    fn try_acquire(&mut self, owner: usize, items: &[Item]) -> Result<(), TestCaseError> {
        let want = self.model.collapse(items);
        let blocked = self.model.blocked_new(&want);
        match self.table.try_acquire(request(owner, items)) {
            Ok(set) => {
                prop_assert!(blocked.is_empty(), "granted, but the model says keys {:?} are blocked", blocked);
                if want.len() < items.len() {
                    saw(Event::GrantedWithJoin);
                }
                self.granted(set, owner, &want)
            }
            Err(AcquireError::Conflict(c)) => {
                prop_assert!(!blocked.is_empty(), "refused, but the model grants it: {}", c);
                self.counts.conflicts += 1;
                self.conflicted(&c, owner, &want, &blocked)
            }
            Err(e) => Err(TestCaseError::fail(format!("unexpected error: {e}"))),
        }
    }

    fn acquire(&mut self, owner: usize, items: &[Item], wait_ms: u8) -> Result<(), TestCaseError> {
        let want = self.model.collapse(items);
        let blocked = self.model.blocked_new(&want);
        let timeout = std::time::Duration::from_millis(wait_ms.into());
        match self.table.acquire(request(owner, items), timeout) {
            Ok(set) => {
                prop_assert!(blocked.is_empty(), "granted, but the model says keys {:?} are blocked", blocked);
                self.granted(set, owner, &want)
            }
            Err(AcquireError::Timeout(c)) => {
                prop_assert!(!blocked.is_empty(), "timed out, but the model grants it: {}", c);
                saw(if wait_ms == 0 { Event::TimedOutAtOnce } else { Event::TimedOutAfterWaiting });
                self.counts.timeouts += 1;
                // A zero timeout gives up without queueing; any other queues first.
                self.counts.waits += u64::from(wait_ms > 0);
                self.conflicted(&c, owner, &want, &blocked)
            }
            Err(e) => Err(TestCaseError::fail(format!("unexpected error: {e}"))),
        }
    }

    fn wait(&mut self, owner: usize, items: &[Item]) -> Result<(), TestCaseError> {
        let want = self.model.collapse(items);
        let blocked = self.model.blocked_new(&want);
        let mut fut = Box::pin(self.table.acquire_async(request(owner, items)));
        match poll_once(fut.as_mut()) {
            Poll::Ready(Ok(set)) => {
                prop_assert!(blocked.is_empty(), "granted at once, but the model says keys {:?} are blocked", blocked);
                self.granted(set, owner, &want)
            }
            Poll::Ready(Err(e)) => Err(TestCaseError::fail(format!("unexpected error: {e}"))),
            Poll::Pending => {
                prop_assert!(!blocked.is_empty(), "queued, but the model grants it at once");
                // Learn the arrival number the table gave it: the one the model does not know.
                let known: BTreeSet<u64> = self.waiters.iter().map(|w| w.arrival).collect();
                let new: BTreeSet<u64> =
                    self.table.snapshot().waiting.iter().map(|w| w.arrival).filter(|a| !known.contains(a)).collect();
                prop_assert_eq!(new.len(), 1, "a new waiter should show with one new arrival number");
                let arrival = *new.first().unwrap_or(&0);
                if let Some(last) = known.last() {
                    prop_assert!(arrival > *last, "arrival numbers must increase");
                }
                self.model.enqueue(arrival, owner, &want);
                self.waiters.push(Waiting { fut, arrival, owner, want });
                self.counts.waits += 1;
                saw(Event::Queued);
                Ok(())
            }
        }
    }

    fn poll_waiter(&mut self, i: usize) -> Result<(), TestCaseError> {
        if self.waiters.is_empty() {
            return Ok(());
        }
        let at = pick_in(i, self.waiters.len());
        let w = &mut self.waiters[at];
        let may_go = self.model.waiter_grantable(w.arrival, &w.want);
        let arrival = w.arrival;
        match poll_once(w.fut.as_mut()) {
            Poll::Ready(Ok(set)) => {
                prop_assert!(may_go, "waiter #{} granted, but the model says it must still wait", arrival);
                let w = self.waiters.remove(at);
                self.model.dequeue(w.arrival);
                self.counts.wait_samples += 1;
                saw(Event::WaiterGrantedOnPoll);
                self.granted(set, w.owner, &w.want)
            }
            Poll::Ready(Err(e)) => Err(TestCaseError::fail(format!("unexpected error: {e}"))),
            Poll::Pending => {
                prop_assert!(!may_go, "waiter #{} may go now (model) but is still pending: lost wake-up?", arrival);
                saw(Event::WaiterStillPending);
                Ok(())
            }
        }
    }

    fn make_ticket(&mut self, i: usize) -> Result<(), TestCaseError> {
        if self.guards.is_empty() {
            return Ok(());
        }
        let g = self.guards.remove(pick_in(i, self.guards.len()));
        let t = g.set.into_ticket();
        prop_assert_eq!(t.table, self.table.id());
        prop_assert_eq!(t.grant, g.grant);
        prop_assert_eq!(t.owner.as_str(), OWNERS[g.owner]);
        prop_assert_eq!(ticket_locks(&t)?, g.locks, "ticket locks");
        self.tickets.push(t);
        saw(Event::Ticket);
        Ok(())
    }

    fn release(&mut self, i: usize) -> Result<(), TestCaseError> {
        if self.tickets.is_empty() {
            return Ok(());
        }
        let t = self.tickets.remove(pick_in(i, self.tickets.len()));
        let result = self.table.release(&t);
        if self.model.remove_grant(t.grant).is_some() {
            prop_assert_eq!(result, Ok(()));
            self.counts.releases += 1;
            self.counts.hold_samples += 1;
            saw(Event::ReleaseOk);
        } else {
            prop_assert_eq!(result, Err(ReleaseError::UnknownGrant(t.grant)), "release of a grant already gone");
            saw(Event::ReleaseStale);
        }
        self.released.push(t);
        Ok(())
    }

    fn release_tampered(&mut self, i: usize, how: Tamper) -> Result<(), TestCaseError> {
        let pool: &[Ticket<u8>] = if self.tickets.is_empty() { &self.released } else { &self.tickets };
        if pool.is_empty() {
            return Ok(());
        }
        let mut t = pool[pick_in(i, pool.len())].clone();
        let modes = self.fam().modes;
        let change_mode = |t: &mut Ticket<u8>| {
            let m = t.locks[0].mode;
            let at = modes.iter().position(|&x| x == m).unwrap_or(0);
            t.locks[0].mode = modes[(at + 1) % modes.len()];
        };
        match how {
            Tamper::Foreign => t.table = TableId(t.table.0 ^ 1),
            Tamper::DropKey if t.locks.len() > 1 => {
                t.locks.pop();
            }
            Tamper::DropKey | Tamper::ChangeMode => change_mode(&mut t),
            Tamper::ExtraKey(k) => {
                let absent: Vec<u8> = (0..KEYS).filter(|k| t.locks.iter().all(|l| l.key != *k)).collect();
                let key = absent[pick_in(k, absent.len())];
                t.locks.push(TicketLock { key, mode: S, token: None, message: None });
            }
            Tamper::DuplicateKey => {
                let first = t.locks[0].clone();
                t.locks.push(first);
            }
            Tamper::NoKeys => t.locks.clear(),
            Tamper::OtherKeys => {
                let n = t.locks.len();
                let absent = (0..KEYS).filter(|k| t.locks.iter().all(|l| l.key != *k));
                t.locks = absent.take(n).map(|key| TicketLock { key, mode: S, token: None, message: None }).collect();
            }
        }
        let live = self.model.grants.contains_key(&t.grant);
        let expect = match how {
            Tamper::Foreign => Err(ReleaseError::ForeignTable { expected: self.table.id(), found: t.table }),
            _ if live => Err(ReleaseError::Mismatch(t.grant)),
            _ => Err(ReleaseError::UnknownGrant(t.grant)),
        };
        prop_assert_eq!(self.table.release(&t), expect, "release of a tampered ticket {:?}", t);
        if live {
            saw(Event::ReleaseTamperedLive);
        }
        Ok(())
    }

    fn release_owner(&mut self, o: usize) -> Result<(), TestCaseError> {
        let freed = self.table.release_owner(&Owner::new(OWNERS[o]));
        let mut real: BTreeMap<GrantId, (usize, Locks)> = BTreeMap::new();
        for t in &freed {
            prop_assert_eq!(t.table, self.table.id());
            let prev = real.insert(t.grant, (owner_ix(&t.owner), ticket_locks(t)?));
            prop_assert!(prev.is_none(), "release_owner returned grant {:?} twice", t.grant);
        }
        let mine: Vec<GrantId> = self.model.grants.iter().filter(|(_, (ow, _))| *ow == o).map(|(g, _)| *g).collect();
        let expect: BTreeMap<GrantId, (usize, Locks)> =
            mine.into_iter().filter_map(|g| Some((g, self.model.remove_grant(g)?))).collect();
        if !expect.is_empty() {
            saw(Event::OwnerReleased);
        }
        self.counts.owner_releases += expect.len() as u64;
        self.counts.hold_samples += expect.len() as u64;
        prop_assert_eq!(real, expect, "release_owner({})", OWNERS[o]);
        Ok(())
    }

    fn force_release(&mut self, i: usize) -> Result<(), TestCaseError> {
        let at = pick_in(i, self.known.len() + 1);
        // One past the end: a grant id never handed out.
        let grant = self.known.get(at).copied().unwrap_or(GrantId(u64::MAX));
        let result = self.table.force_release(grant);
        match self.model.remove_grant(grant) {
            Some(expect) => {
                let t = result.map_err(|e| TestCaseError::fail(format!("force_release of a live grant: {e}")))?;
                prop_assert_eq!(t.grant, grant);
                prop_assert_eq!(t.table, self.table.id());
                prop_assert_eq!((owner_ix(&t.owner), ticket_locks(&t)?), expect, "force_release ticket");
                self.counts.forced_releases += 1;
                self.counts.hold_samples += 1;
                saw(Event::ForceReleased);
            }
            None => {
                prop_assert_eq!(result.map(|t| t.grant), Err(ReleaseError::UnknownGrant(grant)));
                saw(Event::ForceUnknown);
            }
        }
        Ok(())
    }

    /// Checks the real table on its own, then against the model.
    fn check(&self) -> Result<(), TestCaseError> {
        let fam = self.fam();
        let snap = self.table.snapshot();

        // Real invariants, from the snapshot alone.
        let mut held: BTreeMap<u8, Vec<Held>> = BTreeMap::new();
        let mut order: Vec<u8> = Vec::new();
        for h in &snap.held {
            if order.last() != Some(&h.key) {
                prop_assert!(!order.contains(&h.key), "snapshot.held is not grouped by key");
                order.push(h.key);
            }
            held.entry(h.key).or_default().push(Held {
                grant: h.grant,
                owner: owner_ix(&h.owner),
                mode: h.mode,
                msg: h.message.as_ref().map(|m| m.reason().to_owned()),
                token: h.token,
            });
        }
        for (k, hs) in &held {
            for (i, a) in hs.iter().enumerate() {
                for b in &hs[i + 1..] {
                    prop_assert!(a.grant != b.grant, "grant {:?} holds key {} twice", a.grant, k);
                    prop_assert!(
                        (fam.compatible)(a.mode, b.mode),
                        "key {} held by incompatible modes {:?} and {:?}",
                        k,
                        a.mode,
                        b.mode
                    );
                }
            }
        }
        let mut waiting: BTreeMap<u8, Vec<Queued>> = BTreeMap::new();
        let mut order: Vec<u8> = Vec::new();
        for w in &snap.waiting {
            if order.last() != Some(&w.key) {
                prop_assert!(!order.contains(&w.key), "snapshot.waiting is not grouped by key");
                order.push(w.key);
            }
            let q = waiting.entry(w.key).or_default();
            if let Some(prev) = q.last() {
                prop_assert!(prev.arrival < w.arrival, "queue of key {} is not in arrival order", w.key);
            }
            q.push(Queued { arrival: w.arrival, owner: owner_ix(&w.owner), mode: w.mode });
        }

        // Against the model.
        for hs in held.values_mut() {
            hs.sort();
        }
        let mut expect = self.model.holders.clone();
        for hs in expect.values_mut() {
            hs.sort();
        }
        prop_assert_eq!(held, expect, "held locks differ from the model");
        let expect: BTreeMap<u8, Vec<Queued>> =
            self.model.queues.iter().map(|(k, q)| (*k, q.iter().cloned().collect())).collect();
        prop_assert_eq!(waiting, expect, "waiters differ from the model");
        if self.check_metrics {
            prop_assert_eq!(Counts::of(self.table), self.counts, "metrics() (left) differ from the documented counts");
        }
        if !cfg!(miri) {
            // The table stores exactly the keys somebody holds or waits for.
            let busy: BTreeSet<u8> = self.model.holders.keys().chain(self.model.queues.keys()).copied().collect();
            prop_assert_eq!(self.table.key_count(), busy.len(), "key_count() differs from the keys in use {:?}", busy);
        }
        Ok(())
    }

    /// Cancels, drops and releases everything left; the table must end empty and reclaimable.
    fn finish(mut self) -> Result<(), TestCaseError> {
        for w in std::mem::take(&mut self.waiters) {
            drop(w.fut);
            self.model.dequeue(w.arrival);
            self.counts.cancellations += 1;
        }
        self.check()?;
        for g in std::mem::take(&mut self.guards) {
            drop(g.set);
            if self.model.remove_grant(g.grant).is_some() {
                self.counts.releases += 1;
                self.counts.hold_samples += 1;
            }
        }
        self.check()?;
        for t in std::mem::take(&mut self.tickets) {
            let result = self.table.release(&t);
            if self.model.remove_grant(t.grant).is_some() {
                prop_assert_eq!(result, Ok(()));
                self.counts.releases += 1;
                self.counts.hold_samples += 1;
            } else {
                prop_assert_eq!(result, Err(ReleaseError::UnknownGrant(t.grant)));
            }
        }
        self.check()?;
        prop_assert!(self.model.grants.is_empty() && self.model.queues.is_empty());
        self.table.reclaim();
        prop_assert_eq!(self.table.key_count(), 0, "an idle, unreferenced table should reclaim every key");
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------------------------

fn config() -> Config {
    let mutant = cfg!(any(
        lockcore_mutant = "grant_all",
        lockcore_mutant = "partial",
        lockcore_mutant = "barging",
        lockcore_mutant = "no_wake"
    ));
    // ci/mutants.sh sets LOCKCORE_MUTANT for the test process too: it needs the failure, not
    // the smallest failing case, so it skips the shrinking (seconds to minutes in a debug build).
    let shrink = std::env::var_os("LOCKCORE_MUTANT").is_none();
    Config {
        cases: if cfg!(miri) { 2 } else { 256 },
        max_shrink_iters: if shrink { Config::default().max_shrink_iters } else { 0 },
        // Mutant runs would write their (expected) failures next to this file: keep them out.
        failure_persistence: if cfg!(miri) || mutant {
            None
        } else {
            // Integration tests have no `lib.rs` above them, so proptest's default would warn and
            // fall back to this: `tests/oracle.proptest-regressions`.
            Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions")))
        },
        source_file: Some(file!()),
        ..Config::default()
    }
}

/// Runs the property, then checks that every event in `must_see` happened in some case.
fn check_property(fam: &'static Family, ops: impl Strategy<Value = Vec<Op>>, check_metrics: bool, must_see: &[Event]) {
    take_seen();
    let mut runner = TestRunner::new(config());
    if let Err(e) = runner.run(&ops, |ops| run_with(fam, &ops, check_metrics)) {
        panic!("{e}");
    }
    let seen = take_seen();
    eprintln!("exercised: {seen:?}");
    if !cfg!(miri) {
        let missing: Vec<&Event> = must_see.iter().filter(|e| !seen.contains_key(e)).collect();
        assert!(missing.is_empty(), "the property never exercised {missing:?} (seen: {seen:?})");
    }
}

const FULL_EVENTS: &[Event] = &[
    Event::Granted,
    Event::GrantedWithJoin,
    Event::ConflictByHolder,
    Event::ConflictByQueueOnly,
    Event::Queued,
    Event::WaiterGrantedOnPoll,
    Event::WaiterStillPending,
    Event::Cancelled,
    Event::GuardDroppedLive,
    Event::GuardDroppedStale,
    Event::Ticket,
    Event::ReleaseOk,
    Event::ReleaseStale,
    Event::ReleaseTwice,
    Event::ReleaseTamperedLive,
    Event::OwnerReleased,
    Event::ForceReleased,
    Event::ForceUnknown,
    Event::TimedOutAtOnce,
    Event::TimedOutAfterWaiting,
    Event::BadRequest,
];

/// Shared/exclusive table, every operation.
#[test]
fn oracle_shared_exclusive() {
    check_property(&SX, proptest::collection::vec(full_op(sx_mode), 1..=MAX_OPS), false, FULL_EVENTS);
}

/// Shared/exclusive table with one shard, every operation and many keys: records are freed and
/// reused by other keys during the run; nothing visible may change, and fencing tokens must keep
/// increasing per key across a key's record being freed and made again.
#[test]
fn oracle_shared_exclusive_sweeping() {
    let mut must = FULL_EVENTS.to_vec();
    must.push(Event::Swept);
    check_property(&SX_SWEEPING, proptest::collection::vec(sweeping_op(), 1..=MAX_OPS), false, &must);
}

/// `metrics()` counts what its documentation says, operation by operation (shared/exclusive
/// table, every operation).
#[test]
fn oracle_metrics() {
    check_property(&SX, proptest::collection::vec(full_op(sx_mode), 1..=MAX_OPS), true, FULL_EVENTS);
}

/// Multi-granularity table (Gray's five modes), `try_acquire` and drop only.
#[test]
fn oracle_multi_granularity_try_acquire() {
    check_property(
        &GRAY,
        proptest::collection::vec(plain_op(gray_mode), 1..=MAX_OPS),
        false,
        &[Event::Granted, Event::GrantedWithJoin, Event::ConflictByHolder, Event::GuardDroppedLive],
    );
}

/// Multi-granularity table, every operation (waiting, tickets, releases).
#[test]
fn oracle_multi_granularity_full() {
    check_property(&GRAY, proptest::collection::vec(full_op(gray_mode), 1..=MAX_OPS), false, FULL_EVENTS);
}

/// Shared/exclusive table with read bias after one grant, every operation, metrics checked:
/// fast holders must show in conflicts, snapshots, `holders`, tickets and releases exactly as
/// latched ones do.
#[test]
fn oracle_shared_exclusive_read_biased() {
    let mut must = FULL_EVENTS.to_vec();
    must.push(Event::BiasedGrant);
    check_property(&SX_BIASED, proptest::collection::vec(full_op(sx_mode), 1..=MAX_OPS), true, &must);
}

/// Multi-granularity table with read bias after one grant (IS, IX and S are biased), every
/// operation.
#[test]
fn oracle_multi_granularity_read_biased() {
    let mut must = FULL_EVENTS.to_vec();
    must.push(Event::BiasedGrant);
    check_property(&GRAY_BIASED, proptest::collection::vec(full_op(gray_mode), 1..=MAX_OPS), false, &must);
}

// ---------------------------------------------------------------------------------------------
// Hand-written sequences: the model itself, and regressions.
// ---------------------------------------------------------------------------------------------

fn it(key: u8, mode: Mode) -> Item {
    Item { key, mode, msg: None }
}

/// The Gray matrix and join written here agree with the textbook table on a few spot checks.
#[test]
fn gray_model_spot_checks() {
    assert!(gray_compatible(IS, SIX) && gray_compatible(IX, IX) && !gray_compatible(IX, S));
    assert!(!gray_compatible(SIX, SIX) && !gray_compatible(X, IS));
    assert_eq!(gray_join(IX, S), SIX);
    assert_eq!(gray_join(IS, IX), IX);
    assert_eq!(gray_join(SIX, IS), SIX);
    assert_eq!(gray_join(S, X), X);
    for &a in GRAY.modes {
        for &b in GRAY.modes {
            assert_eq!(gray_compatible(a, b), gray_compatible(b, a));
        }
    }
}

/// A reader arriving behind a queued writer is neither granted nor served before it (no
/// barging), and goes once the writer has gone. The harness checks each step against the model.
#[test]
fn queued_reader_waits_for_queued_writer() {
    let ops = vec![
        Op::TryAcquire { owner: 0, items: vec![it(1, S)] },
        Op::Wait { owner: 1, items: vec![it(1, X)] }, // queued behind the reader o0
        Op::TryAcquire { owner: 2, items: vec![it(1, S)] }, // refused: o1 is queued ahead
        Op::Wait { owner: 2, items: vec![it(1, S), it(2, S)] }, // queued behind o1
        Op::Blockers(2),
        Op::DropGuard(0),  // o0 leaves
        Op::PollWaiter(1), // o2 still waits for o1
        Op::PollWaiter(0), // o1 is granted
        Op::PollWaiter(0), // o2 still waits, now for the holder o1
        Op::DropGuard(0),
        Op::PollWaiter(0), // o2 is granted
    ];
    run(&SX, &ops).unwrap_or_else(|e| panic!("{e}"));
}

/// Runs `ops` on a fresh table of `fam` on another thread and fails if the run disagrees with
/// the model or does not finish within `secs` (a hang in the core would otherwise hang the suite).
fn run_within(secs: u64, fam: &'static Family, ops: Vec<Op>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run(fam, &ops).map_err(|e| e.to_string()));
    });
    // Miri runs thousands of times slower than native code: there the watchdog only guards
    // against a real hang, not a slow run.
    let secs = if cfg!(miri) { secs * 120 } else { secs };
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(result) => result.unwrap_or_else(|e| panic!("{e}")),
        Err(_) => panic!("the run did not finish within {secs} s: the table hangs (the thread is left blocked)"),
    }
}

/// Regression (fixed in `c70da6b`): a ticket that names one key twice, for instance a stored
/// ticket that was corrupted or crafted, must be refused with `Mismatch`. `release` used to latch
/// every looked-up slot before checking anything, so it took the same slot latch twice and
/// blocked forever on itself, leaving the key latched for everyone. Run on a detached thread so
/// that a hang fails the test instead of hanging the suite.
#[test]
fn regression_release_of_ticket_naming_a_key_twice() {
    let ops = vec![
        Op::TryAcquire { owner: 0, items: vec![it(1, X)] },
        Op::IntoTicket(0),
        Op::ReleaseTampered(0, Tamper::DuplicateKey),
    ];
    run_within(5, &SX, ops);
}

/// Regression (fixed in `c70da6b`): an edited ticket that names none of its grant's keys (an
/// empty lock list, or other keys only) must be `Mismatch` while the grant is held. It used to be
/// `UnknownGrant` ("already released, force-released or never granted"), so a caller that
/// believed it and forgot the ticket leaked the locks: `release` answered `UnknownGrant` whenever
/// it found no record of the grant among the ticket's keys.
#[test]
fn regression_edited_ticket_without_the_grants_keys() {
    for how in [Tamper::NoKeys, Tamper::OtherKeys] {
        let ops =
            vec![Op::TryAcquire { owner: 0, items: vec![it(1, X)] }, Op::IntoTicket(0), Op::ReleaseTampered(0, how)];
        run(&SX, &ops).unwrap_or_else(|e| panic!("{how:?}: {e}"));
    }
}

/// Regression (fixed in `c70da6b`; metrics only): `MetricsSnapshot::releases` counts "grants
/// released by their holder". A guard dropped after its grant was force-released releases
/// nothing, but `release_entries` used to count it anyway (and record a second hold-time
/// sample), so the grant was counted in both `forced_releases` and `releases`.
#[test]
fn regression_metrics_stale_guard_drop_is_not_a_release() {
    let table: LockTable<u8> = sx_table();
    let set = table.try_acquire(Request::new("o0").shared(0)).unwrap();
    table.force_release(set.grant()).unwrap();
    drop(set);
    let m = table.metrics();
    assert_eq!((m.grants, m.forced_releases), (1, 1));
    assert_eq!(m.releases, 0, "the guard of a force-released grant released nothing");
    assert_eq!(m.hold_time.count(), 1, "one grant was released, so one hold-time sample");
}

/// Regression (fixed in `c70da6b`; metrics only): `hold_time` has one sample "for every released
/// grant"; `release_where` (behind `force_release` and `release_owner`) used to record one per
/// key of the grant.
#[test]
fn regression_metrics_one_hold_sample_per_grant() {
    let table: LockTable<u8> = sx_table();
    let set = table.try_acquire(Request::new("o0").shared(0).exclusive(1)).unwrap();
    let grant = set.grant();
    let _ticket = set.into_ticket();
    table.force_release(grant).unwrap();
    let _ticket = table.try_acquire(Request::new("o1").shared(2).shared(3)).unwrap().into_ticket();
    assert_eq!(table.release_owner(&Owner::new("o1")).len(), 1);
    let m = table.metrics();
    assert_eq!((m.forced_releases, m.owner_releases), (1, 1));
    assert_eq!(m.hold_time.count(), 2, "two grants were released, so two hold-time samples");
}

/// Regression (seen in the working tree before `c70da6b`, fixed there): `reclaim()` drops "the
/// slots of keys that nobody holds or waits for" and brings the footprint "back to idle size at
/// once", so the second-chance sweep (which spares an idle slot granted since the last sweep)
/// must not apply to it: one call right after a release drops the key.
#[test]
fn regression_reclaim_drops_every_idle_key_at_once() {
    // Through the latches (a direct grant makes no record to drop).
    let table: LockTable<u8> = LockTable::<u8>::builder().direct(false).build();
    drop(table.try_acquire(Request::new("o0").shared(0)).unwrap());
    assert_eq!(table.snapshot().held.len(), 0);
    assert_eq!(table.reclaim(), 1, "key 0 is idle and unreferenced");
    assert_eq!(table.key_count(), 0);
}
