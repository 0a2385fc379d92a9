//! Multi-thread stress tests with invariant checkers.
//!
//! `random_requests_never_overlap_conflicting_holders`: a few threads issue random requests
//! (1-4 keys of 8, shared or exclusive) through every entry point: `try_acquire`, `acquire` with
//! short deadlines, `acquire_async` (given up at a short deadline, which cancels the wait), and
//! release by guard, by ticket, by owner and by force. A shadow table records every hold from the
//! moment an acquisition returns to just before its release and flags any two incompatible holds
//! of one key that overlap, any fencing token that does not increase, and any grant that does
//! not match its request. Threads also take snapshots and check them the same way. At the end
//! everything acquired was released, the table is empty, the metrics agree with what the threads
//! counted, and `reclaim` brings it back to zero keys.
//!
//! `every_waiter_on_a_hot_key_gets_it`: several threads queue on one key again and again with a
//! generous deadline; every acquisition must succeed, long before its deadline (a lost wake-up
//! shows as a waiter that only gets the key when its deadline makes it look again).
//!
//! Both are bounded in time (an operation budget and a wall-clock budget, scaled down under
//! miri), and every wait has a deadline, so a broken build fails instead of hanging.

use lockcore::{AcquireError, LockTable, Mode, ModeTable, ReleaseError, Request, Token};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

const THREADS: usize = 4;
const KEYS: u64 = 8;
/// Operations per thread, at most.
const OPS: usize = if cfg!(miri) { 25 } else { 1_000_000 };
/// Wall-clock budget of the random stress test.
const BUDGET: Duration = if cfg!(miri) { Duration::from_secs(30) } else { Duration::from_millis(1500) };
/// Deadline of waits that are expected to succeed.
const GENEROUS: Duration = if cfg!(miri) { Duration::from_secs(600) } else { Duration::from_secs(10) };

/// The default table; under miri one with few shards (whole-table scans over 64 shards
/// dominate miri's run time, and the shard count changes no code path).
fn new_table() -> LockTable<u64> {
    if cfg!(miri) {
        LockTable::<u64>::builder().shards(2).build()
    } else {
        LockTable::new()
    }
}

/// splitmix64: small, fast, and good enough to pick keys and actions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    match std::env::var("LOCKCORE_STRESS_SEED") {
        Ok(s) => s.parse().expect("LOCKCORE_STRESS_SEED must be a u64"),
        Err(_) => {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            t.as_nanos() as u64
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Drives `fut` on this thread until it completes or `deadline` passes; then drops it (which,
/// for a queued `acquire_async`, cancels the wait). Unlike `pollster::block_on` it cannot hang
/// on a lost wake-up.
fn block_on_until<F: Future>(fut: F, deadline: Instant) -> Option<F::Output> {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::park_timeout(deadline - now);
    }
}

/// What the threads saw, for the end-of-run cross-checks.
#[derive(Default)]
struct Stats {
    acquired: AtomicU64,
    released: AtomicU64,
    try_conflicts: AtomicU64,
    timeouts: AtomicU64,
    zero_timeouts: AtomicU64,
    async_given_up: AtomicU64,
    by_ticket: AtomicU64,
    by_owner: AtomicU64,
    forced: AtomicU64,
    snapshots: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// The shadow table: who holds what, by the threads' own account.
struct Shadow {
    modes: ModeTable,
    /// Per key: the holds (id, mode) currently in force.
    held: Mutex<HashMap<u64, Vec<(u64, Mode)>>>,
    /// Per key: the highest fencing token seen.
    tokens: Mutex<HashMap<u64, Token>>,
    violations: Mutex<Vec<String>>,
    /// Set at the first violation, so the threads stop early.
    stop: AtomicBool,
}

type Locks = Vec<(u64, Mode, Option<Token>)>;

impl Shadow {
    fn new(modes: ModeTable) -> Self {
        Self {
            modes,
            held: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            violations: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        }
    }

    fn violation(&self, what: String) {
        self.stop.store(true, Ordering::Relaxed);
        let mut v = lock(&self.violations);
        if v.len() < 20 {
            v.push(what);
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Records that hold `id` has `locks`, checking them against every hold in force.
    fn enter(&self, id: u64, locks: &Locks) {
        let mut held = lock(&self.held);
        for &(key, mode, _) in locks {
            for &(other, other_mode) in held.get(&key).into_iter().flatten() {
                if !self.modes.compatible(mode, other_mode) {
                    self.violation(format!(
                        "key {key}: hold #{id} in {mode:?} overlaps hold #{other} in {other_mode:?}"
                    ));
                }
            }
        }
        for &(key, mode, _) in locks {
            held.entry(key).or_default().push((id, mode));
        }
        drop(held);
        // Tokens: a fenced grant of a key happens after every earlier fenced hold of it ended,
        // and so after that hold entered here; tokens must increase in this order.
        let mut tokens = lock(&self.tokens);
        for &(key, mode, token) in locks {
            match (self.modes.is_fenced(mode), token) {
                (true, Some(t)) => {
                    if let Some(&last) = tokens.get(&key) {
                        if t <= last {
                            self.violation(format!("key {key}: token {t:?} after {last:?}"));
                        }
                    }
                    tokens.insert(key, t);
                }
                (true, None) => self.violation(format!("key {key}: exclusive grant without a token")),
                (false, Some(t)) => self.violation(format!("key {key}: shared grant with token {t:?}")),
                (false, None) => {}
            }
        }
    }

    /// Records that hold `id` is about to be released.
    fn leave(&self, id: u64, locks: &Locks) {
        let mut held = lock(&self.held);
        for &(key, _, _) in locks {
            let list = held.entry(key).or_default();
            match list.iter().position(|&(h, _)| h == id) {
                Some(i) => {
                    list.swap_remove(i);
                }
                None => self.violation(format!("key {key}: hold #{id} left twice")),
            }
        }
    }

    /// Checks a snapshot taken while threads run: on every key, the held modes are compatible.
    fn check_snapshot(&self, table: &LockTable<u64>) {
        let snap = table.snapshot();
        let mut by_key: BTreeMap<u64, Vec<Mode>> = BTreeMap::new();
        for h in &snap.held {
            if h.key >= KEYS {
                self.violation(format!("snapshot: unknown key {}", h.key));
            }
            by_key.entry(h.key).or_default().push(h.mode);
        }
        for (key, modes) in by_key {
            for (i, &a) in modes.iter().enumerate() {
                for &b in &modes[i + 1..] {
                    if !self.modes.compatible(a, b) {
                        self.violation(format!("snapshot: key {key} held in {a:?} and {b:?} at once"));
                    }
                }
            }
        }
        for w in &snap.waiting {
            if w.key >= KEYS {
                self.violation(format!("snapshot: waiter on unknown key {}", w.key));
            }
        }
    }
}

static NEXT_HOLD: AtomicU64 = AtomicU64::new(1);

/// One thread of random requests.
fn worker(table: &LockTable<u64>, shadow: &Shadow, stats: &Stats, tid: usize, seed: u64, deadline: Instant) {
    let mut rng = Rng(seed);
    let mut op = 0;
    while op < OPS && Instant::now() < deadline && !shadow.stopped() {
        op += 1;
        if op % 97 == 0 {
            shadow.check_snapshot(table);
            bump(&stats.snapshots);
        }
        // 1-4 keys, possibly repeated (the table collapses them: exclusive wins).
        let owner = format!("t{tid}-{op}");
        let mut req = Request::new(owner.as_str());
        let mut want: BTreeMap<u64, Mode> = BTreeMap::new();
        for _ in 0..1 + rng.below(4) {
            let key = rng.below(KEYS);
            let mode = if rng.below(3) == 0 { Mode::EXCLUSIVE } else { Mode::SHARED };
            let slot = want.entry(key).or_insert(mode);
            if mode == Mode::EXCLUSIVE {
                *slot = mode;
            }
            req = req.lock(key, mode, None);
        }
        let how = rng.below(4);
        let result = match how {
            0 => table.try_acquire(req),
            1 => {
                let timeout = Duration::from_micros(rng.below(4) * 700);
                let r = table.acquire(req, timeout);
                if let Err(AcquireError::Timeout(_)) = &r {
                    bump(&stats.timeouts);
                    if timeout.is_zero() {
                        bump(&stats.zero_timeouts);
                    }
                }
                r
            }
            _ => {
                let give_up = Instant::now() + Duration::from_micros(200 + rng.below(2000));
                match block_on_until(table.acquire_async(req), give_up) {
                    Some(r) => r,
                    None => {
                        bump(&stats.async_given_up);
                        continue;
                    }
                }
            }
        };
        let set = match result {
            Ok(set) => set,
            Err(AcquireError::Conflict(c)) if how == 0 => {
                bump(&stats.try_conflicts);
                if c.keys.is_empty() || c.keys.iter().any(|k| !want.contains_key(&k.key)) {
                    shadow.violation(format!("conflict names no key or a key not asked: {c:?}"));
                }
                continue;
            }
            Err(AcquireError::Timeout(c)) if how == 1 => {
                if c.keys.is_empty() || c.keys.iter().any(|k| !want.contains_key(&k.key)) {
                    shadow.violation(format!("timeout names no key or a key not asked: {c:?}"));
                }
                continue;
            }
            Err(e) => {
                shadow.violation(format!("unexpected error from entry point {how}: {e}"));
                continue;
            }
        };
        let mut locks: Locks = set.locks().map(|(k, m, t)| (*k, m, t)).collect();
        locks.sort();
        let got: Vec<(u64, Mode)> = locks.iter().map(|&(k, m, _)| (k, m)).collect();
        let asked: Vec<(u64, Mode)> = want.iter().map(|(&k, &m)| (k, m)).collect();
        if got != asked {
            shadow.violation(format!("granted {got:?} for a request of {asked:?}"));
        }
        let id = NEXT_HOLD.fetch_add(1, Ordering::Relaxed);
        shadow.enter(id, &locks);
        bump(&stats.acquired);
        match rng.below(8) {
            0 => thread::sleep(Duration::from_micros(rng.below(300))),
            1 | 2 => thread::yield_now(),
            _ => {
                for _ in 0..rng.below(64) {
                    std::hint::spin_loop();
                }
            }
        }
        match rng.below(10) {
            0..=5 => {
                shadow.leave(id, &locks);
                drop(set);
            }
            6 | 7 => {
                let ticket = set.into_ticket();
                let mut tl: Locks = ticket.locks.iter().map(|l| (l.key, l.mode, l.token)).collect();
                tl.sort();
                if tl != locks {
                    shadow.violation(format!("ticket {tl:?} differs from its grant {locks:?}"));
                }
                shadow.leave(id, &locks);
                if let Err(e) = table.release(&ticket) {
                    shadow.violation(format!("releasing a valid ticket failed: {e}"));
                }
                bump(&stats.by_ticket);
            }
            8 => {
                // Owners are unique per request here, so this frees exactly this grant.
                shadow.leave(id, &locks);
                let freed = table.release_owner(set.owner());
                if freed.len() != 1 || freed[0].grant != set.grant() || freed[0].locks.len() != locks.len() {
                    shadow.violation(format!("release_owner freed {freed:?} for grant {:?}", set.grant()));
                }
                let stale = set.into_ticket();
                if table.release(&stale) != Err(ReleaseError::UnknownGrant(stale.grant)) {
                    shadow.violation("a ticket released by owner was released again".into());
                }
                bump(&stats.by_owner);
            }
            _ => {
                shadow.leave(id, &locks);
                match table.force_release(set.grant()) {
                    Ok(t) if t.grant == set.grant() && t.locks.len() == locks.len() => {}
                    other => shadow.violation(format!("force_release of {:?} gave {other:?}", set.grant())),
                }
                let stale = set.into_ticket();
                if table.release(&stale) != Err(ReleaseError::UnknownGrant(stale.grant)) {
                    shadow.violation("a force-released ticket was released again".into());
                }
                bump(&stats.forced);
            }
        }
        bump(&stats.released);
    }
}

#[test]
fn random_requests_never_overlap_conflicting_holders() {
    random_stress(new_table());
}

/// The same on a table without direct grants: every request goes through the shard latches
/// (with direct grants most uncontended requests never take one, and a broken latch showed in
/// only some runs).
#[test]
fn random_requests_through_the_latches_never_overlap_conflicting_holders() {
    let shards = if cfg!(miri) { 2 } else { 512 };
    let m = random_stress(LockTable::<u64>::builder().shards(shards).direct(false).build());
    assert_eq!(m.direct_grants, 0);
}

/// The same with read bias after a single grant: shared requests go through the reader slots
/// whenever their keys are biased, and every conflicting request revokes a bias, moving its
/// fast holders into the records while they may be releasing.
#[test]
fn random_requests_with_read_bias_never_overlap_conflicting_holders() {
    let table = LockTable::<u64>::builder().shards(if cfg!(miri) { 2 } else { 128 }).read_bias(1).build();
    let m = random_stress(table);
    if !cfg!(miri) {
        assert!(m.biased_grants > 0 && m.revocations > 0, "the read bias was not exercised: {m:?}");
    }
}

fn random_stress(table: LockTable<u64>) -> lockcore::MetricsSnapshot {
    let seed = seed();
    let shadow = Shadow::new(table.modes().clone());
    let stats = Stats::default();
    let start = Instant::now();
    let deadline = start + BUDGET;
    thread::scope(|s| {
        for tid in 0..THREADS {
            let (table, shadow, stats) = (&table, &shadow, &stats);
            let seed = seed.wrapping_add(tid as u64);
            s.spawn(move || worker(table, shadow, stats, tid, seed, deadline));
        }
    });
    let elapsed = start.elapsed();
    let m = table.metrics();
    eprintln!(
        "stress (seed {seed}): {} grants in {elapsed:.2?}; try conflicts {}, timeouts {} ({} immediate), \
         async given up {}, granted after waiting {}, by ticket {}, by owner {}, forced {}, snapshots {}",
        get(&stats.acquired),
        get(&stats.try_conflicts),
        get(&stats.timeouts),
        get(&stats.zero_timeouts),
        get(&stats.async_given_up),
        m.wait_time.count(),
        get(&stats.by_ticket),
        get(&stats.by_owner),
        get(&stats.forced),
        get(&stats.snapshots),
    );
    let violations = lock(&shadow.violations).clone();
    assert!(violations.is_empty(), "seed {seed}: invariant violations:\n{}", violations.join("\n"));

    // Everything acquired was released, and the table agrees.
    assert_eq!(get(&stats.acquired), get(&stats.released));
    assert!(lock(&shadow.held).values().all(Vec::is_empty));
    let snap = table.snapshot();
    assert!(
        snap.held.is_empty(),
        "seed {seed}: {} locks still held at the end, first: {:?}",
        snap.held.len(),
        &snap.held[..snap.held.len().min(3)]
    );
    assert!(
        snap.waiting.is_empty(),
        "seed {seed}: {} waiters still queued at the end, first: {:?}",
        snap.waiting.len(),
        &snap.waiting[..snap.waiting.len().min(3)]
    );
    for k in 0..KEYS {
        assert!(table.try_acquire(Request::new("end").exclusive(k)).is_ok(), "seed {seed}: key {k} is not free");
    }

    // The table's counters agree with the threads' (the probes above add KEYS grants and releases).
    let acquired = get(&stats.acquired);
    let m = table.metrics();
    assert_eq!(m.grants, acquired + KEYS, "grants");
    assert_eq!(m.releases, acquired - get(&stats.by_owner) - get(&stats.forced) + KEYS, "releases");
    assert_eq!(m.owner_releases, get(&stats.by_owner), "owner releases");
    assert_eq!(m.forced_releases, get(&stats.forced), "forced releases");
    assert_eq!(m.conflicts, get(&stats.try_conflicts), "conflicts");
    assert_eq!(m.timeouts, get(&stats.timeouts), "timeouts");
    assert_eq!(m.cancellations, get(&stats.async_given_up), "cancellations");
    // Every wait ended in exactly one way: granted, timed out (not the immediate ones), cancelled.
    assert_eq!(
        m.waits,
        m.wait_time.count() + get(&stats.timeouts) - get(&stats.zero_timeouts) + m.cancellations,
        "waits"
    );

    // Not vacuous: there was contention, and waiting paid off.
    if !cfg!(miri) {
        assert!(acquired > 1000, "only {acquired} grants");
        assert!(get(&stats.try_conflicts) > 0, "no try_acquire ever conflicted");
        assert!(m.wait_time.count() > 0, "no waiter was ever granted");
    }

    let reclaimed = table.reclaim();
    assert_eq!(table.key_count(), 0, "reclaim() dropped {reclaimed} keys and left {} idle ones", table.key_count());
    eprintln!("read bias: {} fast grants, {} revocations", m.biased_grants, m.revocations);
    m
}

#[test]
fn every_waiter_on_a_hot_key_gets_it() {
    const WAITERS: usize = 4;
    const ROUNDS: usize = if cfg!(miri) { 4 } else { 150 };
    let table = new_table();
    // Who holds the key, by the threads' account: -1 a writer, n > 0 that many readers.
    let state = AtomicI64::new(0);
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let failed = AtomicBool::new(false);
    let granted = AtomicUsize::new(0);
    let fail = |what: String| {
        failed.store(true, Ordering::Relaxed);
        lock(&failures).push(what);
    };
    let seed = seed();
    let gate = table.try_acquire(Request::new("gate").exclusive(0)).unwrap();
    thread::scope(|s| {
        for tid in 0..WAITERS {
            let (table, state, failed, granted, fail) = (&table, &state, &failed, &granted, &fail);
            s.spawn(move || {
                let mut rng = Rng(seed.wrapping_add(tid as u64));
                for round in 0..ROUNDS {
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let exclusive = rng.below(3) != 0;
                    let owner = format!("w{tid}-{round}");
                    let req = if exclusive { Request::new(owner).exclusive(0) } else { Request::new(owner).shared(0) };
                    let start = Instant::now();
                    let r = if rng.below(2) == 0 {
                        table.acquire(req, GENEROUS)
                    } else {
                        match block_on_until(table.acquire_async(req), start + GENEROUS) {
                            Some(r) => r,
                            None => {
                                fail(format!("w{tid}-{round}: an async waiter was never granted in {GENEROUS:?}"));
                                return;
                            }
                        }
                    };
                    let waited = start.elapsed();
                    let set = match r {
                        Ok(set) => set,
                        Err(e) => {
                            fail(format!("w{tid}-{round}: {e}"));
                            return;
                        }
                    };
                    // Under miri time runs ~1000 times slower than the code: no bound there.
                    if !cfg!(miri) && waited > GENEROUS / 2 {
                        fail(format!("w{tid}-{round}: waited {waited:?}: woken by its deadline, not a release"));
                    }
                    // Mutual exclusion, by our own count.
                    let entered = if exclusive {
                        state.compare_exchange(0, -1, Ordering::SeqCst, Ordering::SeqCst).is_ok()
                    } else {
                        state.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n >= 0).then_some(n + 1)).is_ok()
                    };
                    if !entered {
                        fail(format!("w{tid}-{round}: granted while {} held the key", state.load(Ordering::SeqCst)));
                    }
                    granted.fetch_add(1, Ordering::Relaxed);
                    if rng.below(4) == 0 {
                        thread::yield_now();
                    }
                    if entered {
                        if exclusive {
                            state.store(0, Ordering::SeqCst);
                        } else {
                            state.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                    drop(set);
                }
            });
        }
        // Let every thread queue behind the gate, then open it: a burst of wake-ups.
        let queued_by = Instant::now() + if cfg!(miri) { Duration::from_secs(300) } else { Duration::from_secs(5) };
        while table.snapshot().waiting.len() < WAITERS && Instant::now() < queued_by {
            thread::sleep(Duration::from_millis(1));
        }
        if table.snapshot().waiting.len() < WAITERS {
            fail(format!("only {} of {WAITERS} waiters queued behind the gate", table.snapshot().waiting.len()));
        }
        drop(gate);
    });
    let failures = lock(&failures).clone();
    assert!(failures.is_empty(), "seed {seed}:\n{}", failures.join("\n"));
    assert_eq!(granted.load(Ordering::Relaxed), WAITERS * ROUNDS);
    let m = table.metrics();
    assert_eq!((m.timeouts, m.cancellations), (0, 0));
    assert!(m.waits >= WAITERS as u64, "the gate did not make every thread wait");
    let snap = table.snapshot();
    assert!(snap.held.is_empty() && snap.waiting.is_empty());
    let reclaimed = table.reclaim();
    assert_eq!(table.key_count(), 0, "reclaim() dropped {reclaimed} keys and left {} idle ones", table.key_count());
}
