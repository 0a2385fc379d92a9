//! Fuzz target `table_ops`: a sequence of operations on one thread, run against the real
//! `LockTable<u8>` and against a plain sequential oracle written here; every result must agree.
//!
//! The oracle is deliberately naive: per key, a list of holders `(grant, owner, mode)` and a FIFO
//! queue of waiters `(arrival, owner, mode)`. A request (duplicates joined: shared + exclusive is
//! exclusive) is granted iff on each of its keys its mode is compatible with every holder and with
//! every waiter queued before it; a new request is behind every waiter (no barging). A refusal
//! must name exactly the keys the oracle finds blocked, with their holders and the incompatible
//! waiters ahead.
//!
//! Waiting is driven on this one thread through `acquire_async`, polled with a no-op waker:
//! `Pending` means queued, and polling again must grant exactly when the oracle says the waiter
//! may go (so a lost wake-up shows as a waiter that stays pending). `acquire` is called with
//! `Duration::ZERO`. Releases: guard drop, `into_ticket` + `release` (twice, and edited
//! tickets), `release_owner`, `force_release`. `holders`, `blockers` and `key_count` (exactly
//! the keys held or waited for) are compared too, and `reclaim` must not change what is stored.
//!
//! After every operation the snapshot must equal the oracle: held `(key, grant, owner, mode)` and
//! waiting `(key, arrival, owner, mode)`. Fencing tokens: present exactly for exclusive grants and
//! strictly increasing per key (across reclamation too). At the end everything is dropped or
//! released, the snapshot must be empty and `key_count() == 0`.
//!
//! Deliberately broken cores (`LOCKCORE_MUTANT=grant_all|partial|barging|no_wake`) fail here.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use lockcore::{
    Acquire, AcquireError, Conflict, GrantId, LockSet, LockTable, Mode, Owner, ReleaseError, Request, RequestError,
    TableId, Ticket, TicketLock,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Keys are `0..KEYS`.
const KEYS: u8 = 6;
/// Owners are `OWNERS[0..4]`.
const OWNERS: [&str; 4] = ["o0", "o1", "o2", "o3"];
/// Longest operation sequence run per input.
const MAX_OPS: usize = 64;

const S: Mode = Mode::SHARED;
const X: Mode = Mode::EXCLUSIVE;

/// Shared/exclusive, written out here rather than taken from the core's `ModeTable`.
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

fn mode_name(m: Mode) -> &'static str {
    match m {
        S => "S",
        X => "X",
        _ => "?",
    }
}

// ---------------------------------------------------------------------------------------------
// Input.
// ---------------------------------------------------------------------------------------------

/// One key of a request.
#[derive(Clone, Copy)]
struct Item {
    key: u8,
    mode: Mode,
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.key, mode_name(self.mode))
    }
}

/// The keys of a request: 1 to 4, duplicates allowed.
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

/// How a ticket is edited before it is handed to `release`.
#[derive(Arbitrary, Clone, Copy, Debug)]
enum Tamper {
    /// Another table's id.
    Foreign,
    /// One key fewer (no key left if it had one).
    DropKey,
    /// The first key in the other mode.
    ChangeMode,
    /// One more key (possibly one it already names).
    ExtraKey(u8),
    /// The first key named twice.
    DuplicateKey,
    /// No key at all.
    NoKeys,
    /// Another owner.
    OtherOwner,
}

/// One operation. Indices (`u8`) pick, modulo the length, among the live guards, tickets,
/// waiters, released tickets or grants seen; an operation on an empty list does nothing.
#[derive(Arbitrary, Clone, Debug)]
enum Op {
    /// `try_acquire`; a grant is kept as a guard.
    TryAcquire { owner: u8, items: Items },
    /// `acquire` with `Duration::ZERO`: granted now, or a `Timeout` naming the conflict.
    AcquireNow { owner: u8, items: Items },
    /// `acquire_async` polled once: granted (kept as a guard) or queued (kept as a waiter).
    Wait { owner: u8, items: Items },
    /// Polls a queued waiter again.
    Poll(u8),
    /// Drops a queued waiter (cancellation).
    Cancel(u8),
    /// Drops a guard.
    DropGuard(u8),
    /// Turns a guard into a ticket.
    IntoTicket(u8),
    /// `release` of a ticket.
    Release(u8),
    /// `release` of an already released ticket: `UnknownGrant`.
    ReleaseTwice(u8),
    /// `release` of an edited copy of a ticket (live or released).
    ReleaseTampered(u8, Tamper),
    /// `release_owner`.
    ReleaseOwner(u8),
    /// `force_release` of a grant seen so far (live or not), or of one never granted.
    ForceRelease(u8),
    /// An empty request, through `try_acquire` or `acquire_async`: `RequestError::Empty`.
    EmptyRequest { owner: u8, via_async: bool },
    /// `holders(key)`.
    Holders(u8),
    /// `blockers(owner)`.
    Blockers(u8),
    /// `reclaim()`.
    Reclaim,
}

// ---------------------------------------------------------------------------------------------
// The oracle.
// ---------------------------------------------------------------------------------------------

/// A request's distinct keys, each with its joined mode.
type Want = BTreeMap<u8, Mode>;

fn want_of(items: &Items) -> Want {
    let mut w = Want::new();
    for i in &items.0 {
        let m = w.get(&i.key).map_or(i.mode, |&old| join(old, i.mode));
        w.insert(i.key, m);
    }
    w
}

#[derive(Clone, Copy, Debug)]
struct Held {
    grant: GrantId,
    owner: usize,
    mode: Mode,
}

#[derive(Clone, Copy, Debug)]
struct Queued {
    seq: u64,
    owner: usize,
    mode: Mode,
}

#[derive(Default)]
struct KeyState {
    holders: Vec<Held>,
    queue: VecDeque<Queued>,
}

/// What a refusal must report for one key.
#[derive(Debug, PartialEq, Eq)]
struct KeyReport {
    asked: Mode,
    /// Every holder: (grant, owner, mode, blocking).
    holders: BTreeSet<(GrantId, String, Mode, bool)>,
    /// Incompatible waiters ahead, in queue order: (owner, mode).
    waiters_ahead: Vec<(String, Mode)>,
}

#[derive(Default)]
struct Oracle {
    keys: BTreeMap<u8, KeyState>,
    /// Live grants: owner and keys.
    grants: BTreeMap<GrantId, (usize, Want)>,
    next_seq: u64,
}

impl Oracle {
    /// Whether `key` stops a request in `mode` that arrived at `seq` (`None`: a new arrival).
    fn key_blocks(&self, key: u8, mode: Mode, seq: Option<u64>) -> bool {
        let Some(ks) = self.keys.get(&key) else { return false };
        ks.holders.iter().any(|h| !compatible(mode, h.mode))
            || ks.queue.iter().take_while(|q| seq.is_none_or(|s| q.seq < s)).any(|q| !compatible(mode, q.mode))
    }

    fn grantable(&self, want: &Want, seq: Option<u64>) -> bool {
        want.iter().all(|(&k, &m)| !self.key_blocks(k, m, seq))
    }

    /// The report a refusal of a new request must make.
    fn refusal(&self, want: &Want) -> BTreeMap<u8, KeyReport> {
        let mut out = BTreeMap::new();
        for (&k, &m) in want {
            if !self.key_blocks(k, m, None) {
                continue;
            }
            let ks = &self.keys[&k];
            out.insert(
                k,
                KeyReport {
                    asked: m,
                    holders: ks
                        .holders
                        .iter()
                        .map(|h| (h.grant, OWNERS[h.owner].to_string(), h.mode, !compatible(m, h.mode)))
                        .collect(),
                    waiters_ahead: ks
                        .queue
                        .iter()
                        .filter(|q| !compatible(m, q.mode))
                        .map(|q| (OWNERS[q.owner].to_string(), q.mode))
                        .collect(),
                },
            );
        }
        out
    }

    fn install(&mut self, grant: GrantId, owner: usize, want: &Want) {
        for (&k, &mode) in want {
            self.keys.entry(k).or_default().holders.push(Held { grant, owner, mode });
        }
        self.grants.insert(grant, (owner, want.clone()));
    }

    fn enqueue(&mut self, owner: usize, want: &Want) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        for (&k, &mode) in want {
            self.keys.entry(k).or_default().queue.push_back(Queued { seq, owner, mode });
        }
        seq
    }

    fn dequeue(&mut self, seq: u64, want: &Want) {
        for k in want.keys() {
            if let Some(ks) = self.keys.get_mut(k) {
                ks.queue.retain(|q| q.seq != seq);
            }
        }
    }

    fn remove_grant(&mut self, grant: GrantId) -> Option<(usize, Want)> {
        let g = self.grants.remove(&grant)?;
        for k in g.1.keys() {
            if let Some(ks) = self.keys.get_mut(k) {
                ks.holders.retain(|h| h.grant != grant);
            }
        }
        Some(g)
    }

    fn held(&self) -> Vec<(u8, GrantId, String, Mode)> {
        let mut v: Vec<_> = self
            .keys
            .iter()
            .flat_map(|(&k, ks)| ks.holders.iter().map(move |h| (k, h.grant, OWNERS[h.owner].to_string(), h.mode)))
            .collect();
        v.sort();
        v
    }

    fn waiting(&self) -> Vec<(u8, u64, String, Mode)> {
        let mut v: Vec<_> = self
            .keys
            .iter()
            .flat_map(|(&k, ks)| ks.queue.iter().map(move |q| (k, q.seq, OWNERS[q.owner].to_string(), q.mode)))
            .collect();
        v.sort();
        v
    }

    /// `blockers(owner)`: incompatible holders of, and incompatible waiters ahead on, the keys
    /// `owner` waits for; the owner itself excluded.
    fn blockers(&self, owner: usize) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for ks in self.keys.values() {
            for w in ks.queue.iter().filter(|q| q.owner == owner) {
                for h in ks.holders.iter().filter(|h| !compatible(w.mode, h.mode)) {
                    out.insert(h.owner);
                }
                for q in ks.queue.iter().filter(|q| q.seq < w.seq && !compatible(w.mode, q.mode)) {
                    out.insert(q.owner);
                }
            }
        }
        out.remove(&owner);
        out.into_iter().map(|o| OWNERS[o].to_string()).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The harness.
// ---------------------------------------------------------------------------------------------

struct Waiter<'t> {
    fut: Acquire<'t, u8>,
    seq: u64,
    owner: usize,
    want: Want,
}

struct Harness<'t> {
    table: &'t LockTable<u8>,
    oracle: Oracle,
    /// Guards, live or stale (their grant force-released or released by owner).
    guards: Vec<LockSet<'t, u8>>,
    /// Tickets not yet released through `release`.
    tickets: Vec<Ticket<u8>>,
    /// Tickets already released (or refused as unknown).
    released: Vec<Ticket<u8>>,
    waiters: Vec<Waiter<'t>>,
    /// Every grant made, in order, for `force_release`.
    seen: Vec<GrantId>,
    /// The last fencing token seen per key.
    last_token: BTreeMap<u8, u64>,
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

type Check = Result<(), String>;

fn pick(i: u8, len: usize) -> Option<usize> {
    (len > 0).then(|| usize::from(i) % len)
}

fn request(owner: usize, items: &Items) -> Request<u8> {
    items.0.iter().fold(Request::new(OWNERS[owner]), |r, i| r.lock(i.key, i.mode, None))
}

fn poll_once<'t>(fut: &mut Acquire<'t, u8>) -> Poll<Result<LockSet<'t, u8>, AcquireError<u8>>> {
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(fut).poll(&mut cx)
}

fn describe(r: &Result<LockSet<'_, u8>, AcquireError<u8>>) -> String {
    match r {
        Ok(set) => format!("granted {:?}", set.locks().map(|(k, m, _)| (*k, mode_name(m))).collect::<Vec<_>>()),
        Err(e) => format!("refused: {e}"),
    }
}

fn ticket_locks(t: &Ticket<u8>) -> Want {
    t.locks.iter().map(|l| (l.key, l.mode)).collect()
}

impl<'t> Harness<'t> {
    fn new(table: &'t LockTable<u8>) -> Self {
        Self {
            table,
            oracle: Oracle::default(),
            guards: Vec::new(),
            tickets: Vec::new(),
            released: Vec::new(),
            waiters: Vec::new(),
            seen: Vec::new(),
            last_token: BTreeMap::new(),
        }
    }

    /// Checks a fresh grant against the request and records it.
    fn granted(&mut self, set: LockSet<'t, u8>, owner: usize, want: &Want) -> Check {
        ensure!(set.owner().as_str() == OWNERS[owner], "grant has owner {}, asked by {}", set.owner(), OWNERS[owner]);
        let got: Want = set.locks().map(|(k, m, _)| (*k, m)).collect();
        ensure!(got == *want && set.len() == want.len(), "granted {got:?}, asked {want:?}");
        for (k, m, token) in set.locks() {
            match (m, token) {
                (X, Some(t)) => {
                    let last = self.last_token.entry(*k).or_insert(0);
                    ensure!(t.0 > *last, "token {} on key {k} not above the last one, {}", t.0, *last);
                    *last = t.0;
                }
                (S, None) => {}
                _ => return Err(format!("key {k} granted {m:?} with token {token:?}")),
            }
        }
        let g = set.grant();
        ensure!(!self.seen.contains(&g), "grant id {g:?} reused");
        self.seen.push(g);
        self.oracle.install(g, owner, want);
        self.guards.push(set);
        Ok(())
    }

    /// Checks a refusal of a new request against the oracle's report.
    fn refused(&self, c: &Conflict<u8>, owner: usize, want: &Want) -> Check {
        ensure!(c.owner.as_str() == OWNERS[owner], "conflict names owner {}", c.owner);
        ensure!(c.requested == want.len(), "conflict says {} keys requested, asked {}", c.requested, want.len());
        let mut got = BTreeMap::new();
        for k in &c.keys {
            let report = KeyReport {
                asked: k.asked,
                holders: k.holders.iter().map(|h| (h.grant, h.owner.to_string(), h.mode, h.blocking)).collect(),
                waiters_ahead: k.waiters_ahead.iter().map(|w| (w.owner.to_string(), w.mode)).collect(),
            };
            ensure!(got.insert(k.key, report).is_none(), "key {} reported twice", k.key);
        }
        let expected = self.oracle.refusal(want);
        ensure!(got == expected, "conflict report\n  got      {got:?}\n  expected {expected:?}");
        Ok(())
    }

    /// A new request answered by `try_acquire` or `acquire(.., ZERO)`.
    fn answer_now(
        &mut self,
        owner: usize,
        want: &Want,
        r: Result<LockSet<'t, u8>, AcquireError<u8>>,
        timeout: bool,
    ) -> Check {
        let expect = self.oracle.grantable(want, None);
        match r {
            Ok(set) if expect => self.granted(set, owner, want),
            Err(AcquireError::Conflict(c)) if !expect && !timeout => self.refused(&c, owner, want),
            Err(AcquireError::Timeout(c)) if !expect && timeout => self.refused(&c, owner, want),
            r => {
                Err(format!("oracle says {}, table answered {}", if expect { "grant" } else { "refuse" }, describe(&r)))
            }
        }
    }

    fn check_ticket(&self, t: &Ticket<u8>, grant: GrantId, owner: usize, want: &Want) -> Check {
        ensure!(t.table == self.table.id(), "ticket of table {:?}", t.table);
        ensure!(t.grant == grant, "ticket for {:?}, expected {grant:?}", t.grant);
        ensure!(t.owner.as_str() == OWNERS[owner], "ticket owner {}", t.owner);
        ensure!(
            t.locks.len() == want.len() && ticket_locks(t) == *want,
            "ticket locks {:?}, expected {want:?}",
            t.locks
        );
        for l in &t.locks {
            ensure!(l.token.is_some() == (l.mode == X), "ticket lock {l:?}: token iff exclusive");
        }
        Ok(())
    }

    /// What `release` must answer for `t`.
    fn expected_release(&self, t: &Ticket<u8>) -> Result<(), ReleaseError> {
        if t.table != self.table.id() {
            return Err(ReleaseError::ForeignTable { expected: self.table.id(), found: t.table });
        }
        let Some((owner, want)) = self.oracle.grants.get(&t.grant) else {
            return Err(ReleaseError::UnknownGrant(t.grant));
        };
        let keys: BTreeSet<u8> = t.locks.iter().map(|l| l.key).collect();
        let exact = keys.len() == t.locks.len() && ticket_locks(t) == *want && t.owner.as_str() == OWNERS[*owner];
        if exact {
            Ok(())
        } else {
            Err(ReleaseError::Mismatch(t.grant))
        }
    }

    /// Keys somebody holds or waits for: exactly the keys the table stores.
    fn busy_keys(&self) -> BTreeSet<u8> {
        let mut busy: BTreeSet<u8> = self.oracle.held().iter().map(|h| h.0).collect();
        busy.extend(self.oracle.waiting().iter().map(|w| w.0));
        busy
    }

    fn step(&mut self, op: &Op) -> Check {
        let table = self.table;
        match op {
            Op::TryAcquire { owner, items } => {
                let owner = usize::from(*owner) % OWNERS.len();
                let want = want_of(items);
                let r = table.try_acquire(request(owner, items));
                self.answer_now(owner, &want, r, false)?;
            }
            Op::AcquireNow { owner, items } => {
                let owner = usize::from(*owner) % OWNERS.len();
                let want = want_of(items);
                let r = table.acquire(request(owner, items), Duration::ZERO);
                self.answer_now(owner, &want, r, true)?;
            }
            Op::Wait { owner, items } => {
                let owner = usize::from(*owner) % OWNERS.len();
                let want = want_of(items);
                let mut fut = table.acquire_async(request(owner, items));
                let expect = self.oracle.grantable(&want, None);
                match poll_once(&mut fut) {
                    Poll::Ready(Ok(set)) if expect => self.granted(set, owner, &want)?,
                    Poll::Pending if !expect => {
                        let seq = self.oracle.enqueue(owner, &want);
                        self.waiters.push(Waiter { fut, seq, owner, want });
                    }
                    Poll::Pending => return Err("oracle says grant, acquire_async is pending".into()),
                    Poll::Ready(r) => return Err(format!("oracle says {expect}, acquire_async: {}", describe(&r))),
                }
            }
            Op::Poll(i) => {
                let Some(i) = pick(*i, self.waiters.len()) else { return Ok(()) };
                let w = &mut self.waiters[i];
                let expect = self.oracle.grantable(&w.want, Some(w.seq));
                match poll_once(&mut w.fut) {
                    Poll::Ready(Ok(set)) if expect => {
                        let w = self.waiters.remove(i);
                        self.oracle.dequeue(w.seq, &w.want);
                        self.granted(set, w.owner, &w.want)?;
                    }
                    Poll::Pending if !expect => {}
                    Poll::Pending => {
                        return Err(format!("waiter #{} may go (oracle) but stays pending: lost wake-up", w.seq))
                    }
                    Poll::Ready(r) => return Err(format!("waiter #{} (oracle: {expect}): {}", w.seq, describe(&r))),
                }
            }
            Op::Cancel(i) => {
                let Some(i) = pick(*i, self.waiters.len()) else { return Ok(()) };
                let w = self.waiters.remove(i);
                self.oracle.dequeue(w.seq, &w.want);
                drop(w.fut);
            }
            Op::DropGuard(i) => {
                let Some(i) = pick(*i, self.guards.len()) else { return Ok(()) };
                let g = self.guards.remove(i);
                let grant = g.grant();
                drop(g);
                self.oracle.remove_grant(grant);
            }
            Op::IntoTicket(i) => {
                let Some(i) = pick(*i, self.guards.len()) else { return Ok(()) };
                let g = self.guards.remove(i);
                let grant = g.grant();
                let owner = OWNERS.iter().position(|o| *o == g.owner().as_str()).unwrap_or(usize::MAX);
                let want: Want = g.locks().map(|(k, m, _)| (*k, m)).collect();
                let t = g.into_ticket();
                self.check_ticket(&t, grant, owner, &want)?;
                self.tickets.push(t);
            }
            Op::Release(i) => {
                let Some(i) = pick(*i, self.tickets.len()) else { return Ok(()) };
                let t = self.tickets.remove(i);
                let expect = self.expected_release(&t);
                let got = table.release(&t);
                ensure!(got == expect, "release of {:?}: got {got:?}, expected {expect:?}", t.grant);
                if got.is_ok() {
                    self.oracle.remove_grant(t.grant);
                }
                self.released.push(t);
            }
            Op::ReleaseTwice(i) => {
                let Some(i) = pick(*i, self.released.len()) else { return Ok(()) };
                let t = &self.released[i];
                let got = table.release(t);
                ensure!(got == Err(ReleaseError::UnknownGrant(t.grant)), "second release of {:?}: {got:?}", t.grant);
            }
            Op::ReleaseTampered(i, how) => {
                let n = self.tickets.len();
                let Some(i) = pick(*i, n + self.released.len()) else { return Ok(()) };
                let orig = if i < n { &self.tickets[i] } else { &self.released[i - n] };
                let mut t = orig.clone();
                match *how {
                    Tamper::Foreign => t.table = TableId(t.table.0 ^ 1),
                    Tamper::DropKey => {
                        t.locks.pop();
                    }
                    Tamper::ChangeMode => {
                        if let Some(l) = t.locks.first_mut() {
                            l.mode = if l.mode == X { S } else { X };
                        }
                    }
                    Tamper::ExtraKey(k) => {
                        t.locks.push(TicketLock { key: k % KEYS, mode: S, token: None, message: None });
                    }
                    Tamper::DuplicateKey => {
                        if let Some(l) = t.locks.first().cloned() {
                            t.locks.push(l);
                        }
                    }
                    Tamper::NoKeys => t.locks.clear(),
                    Tamper::OtherOwner => t.owner = Owner::new("intruder"),
                }
                let expect = self.expected_release(&t);
                let got = table.release(&t);
                ensure!(got == expect, "release of edited ({how:?}) {t:?}: got {got:?}, expected {expect:?}");
                if got.is_ok() {
                    self.oracle.remove_grant(t.grant);
                    if i < n {
                        let t = self.tickets.remove(i);
                        self.released.push(t);
                    }
                }
            }
            Op::ReleaseOwner(o) => {
                let owner = usize::from(*o) % OWNERS.len();
                let freed = table.release_owner(&Owner::new(OWNERS[owner]));
                let mut got = BTreeMap::new();
                for t in &freed {
                    self.check_ticket(t, t.grant, owner, &ticket_locks(t))?;
                    ensure!(got.insert(t.grant, ticket_locks(t)).is_none(), "release_owner: {:?} twice", t.grant);
                }
                let expected: BTreeMap<GrantId, Want> = self
                    .oracle
                    .grants
                    .iter()
                    .filter(|(_, (o, _))| *o == owner)
                    .map(|(g, (_, w))| (*g, w.clone()))
                    .collect();
                ensure!(got == expected, "release_owner({}): freed {got:?}, expected {expected:?}", OWNERS[owner]);
                for g in expected.keys() {
                    self.oracle.remove_grant(*g);
                }
            }
            Op::ForceRelease(i) => {
                let grant = match pick(*i, self.seen.len() + 1) {
                    Some(j) if j < self.seen.len() => self.seen[j],
                    _ => GrantId(u64::MAX), // never granted
                };
                let got = table.force_release(grant);
                match self.oracle.remove_grant(grant) {
                    Some((owner, want)) => match got {
                        Ok(t) => self.check_ticket(&t, grant, owner, &want)?,
                        Err(e) => return Err(format!("force_release of live {grant:?}: {e:?}")),
                    },
                    None => ensure!(
                        matches!(got, Err(ReleaseError::UnknownGrant(g)) if g == grant),
                        "force_release of gone {grant:?}: {got:?}"
                    ),
                }
            }
            Op::EmptyRequest { owner, via_async } => {
                let req = Request::<u8>::new(OWNERS[usize::from(*owner) % OWNERS.len()]);
                let ok = if *via_async {
                    let mut fut = table.acquire_async(req);
                    matches!(poll_once(&mut fut), Poll::Ready(Err(AcquireError::Request(RequestError::Empty))))
                } else {
                    matches!(table.try_acquire(req), Err(AcquireError::Request(RequestError::Empty)))
                };
                ensure!(ok, "an empty request was not refused with RequestError::Empty");
            }
            Op::Holders(k) => {
                let key = k % KEYS;
                let mut got: Vec<_> =
                    table.holders(&key).into_iter().map(|h| (key, h.grant, h.owner.to_string(), h.mode)).collect();
                got.sort();
                let expected: Vec<_> = self.oracle.held().into_iter().filter(|h| h.0 == key).collect();
                ensure!(got == expected, "holders({key}): {got:?}, expected {expected:?}");
            }
            Op::Blockers(o) => {
                let owner = usize::from(*o) % OWNERS.len();
                let got: Vec<String> =
                    table.blockers(&Owner::new(OWNERS[owner])).iter().map(|o| o.to_string()).collect();
                let set: BTreeSet<String> = got.iter().cloned().collect();
                ensure!(set.len() == got.len(), "blockers({}) repeats: {got:?}", OWNERS[owner]);
                let expected = self.oracle.blockers(owner);
                ensure!(set == expected, "blockers({}): {got:?}, expected {expected:?}", OWNERS[owner]);
            }
            Op::Reclaim => {
                // Gives back the memory of freed records; what is held or waited for stays.
                let before = table.key_count();
                table.reclaim();
                let after = table.key_count();
                ensure!(after == before, "reclaim() changed key_count() from {before} to {after}");
            }
        }
        Ok(())
    }

    /// The table as a whole must equal the oracle.
    fn compare(&self) -> Check {
        let snap = self.table.snapshot();
        let mut held: Vec<_> = snap.held.iter().map(|h| (h.key, h.grant, h.owner.to_string(), h.mode)).collect();
        held.sort();
        let expected = self.oracle.held();
        ensure!(held == expected, "snapshot held\n  got      {held:?}\n  expected {expected:?}");
        let mut waiting: Vec<_> =
            snap.waiting.iter().map(|w| (w.key, w.arrival, w.owner.to_string(), w.mode)).collect();
        waiting.sort();
        let expected = self.oracle.waiting();
        ensure!(waiting == expected, "snapshot waiting\n  got      {waiting:?}\n  expected {expected:?}");
        let keys = self.table.key_count();
        let busy = self.busy_keys();
        ensure!(keys == busy.len(), "key_count() {keys}, expected {} ({busy:?})", busy.len());
        Ok(())
    }

    /// Drops and releases everything; the table must end empty and reclaim every key.
    fn finish(mut self) -> Check {
        for w in std::mem::take(&mut self.waiters) {
            self.oracle.dequeue(w.seq, &w.want);
            drop(w.fut);
        }
        self.compare()?;
        for g in std::mem::take(&mut self.guards) {
            let grant = g.grant();
            drop(g);
            self.oracle.remove_grant(grant);
        }
        self.compare()?;
        for t in std::mem::take(&mut self.tickets) {
            let expect = self.expected_release(&t);
            let got = self.table.release(&t);
            ensure!(got == expect, "final release of {:?}: got {got:?}, expected {expect:?}", t.grant);
            self.oracle.remove_grant(t.grant);
        }
        self.compare()?;
        let snap = self.table.snapshot();
        ensure!(snap.held.is_empty() && snap.waiting.is_empty(), "table not empty at the end: {snap:?}");
        ensure!(self.table.key_count() == 0, "key_count() {} with nothing held", self.table.key_count());
        self.table.reclaim();
        ensure!(self.table.key_count() == 0, "key_count() {} after reclaim", self.table.key_count());
        Ok(())
    }
}

fn run(ops: &[Op]) -> Check {
    // Half the inputs (by length) read-bias a key after one shared grant, so shared requests
    // go through the reader slots and conflicting ones revoke (core/src/bias.rs); the rest
    // keep the default.
    let reads_to_bias = if ops.len() % 2 == 0 { 1 } else { 8 };
    let table = LockTable::<u8>::builder().read_bias(reads_to_bias).build();
    let mut h = Harness::new(&table);
    for (n, op) in ops.iter().enumerate() {
        h.step(op).and_then(|()| h.compare()).map_err(|e| format!("op #{n} {op:?}: {e}"))?;
    }
    h.finish().map_err(|e| format!("at the end: {e}"))
}

fuzz_target!(|ops: Vec<Op>| {
    let ops = &ops[..ops.len().min(MAX_OPS)];
    if let Err(e) = run(ops) {
        let script: Vec<String> = ops.iter().enumerate().map(|(n, op)| format!("  #{n} {op:?}")).collect();
        panic!("table_ops: {e}\nops:\n{}", script.join("\n"));
    }
});
