//! Integration tests of `lockcore`'s public API: one test per behaviour, each written so that it
//! fails if the behaviour is broken (the deliberately broken builds, `LOCKCORE_MUTANT=NAME`,
//! are each caught by at least one of these or by `tests/stress.rs`).
//!
//! Every wait in this file is bounded: a build that loses wake-ups makes a test fail, not hang.

use lockcore::{
    AcquireError, GrantId, LockBackend, LockMessage, LockTable, Mode, ModeTable, Owner, ReleaseError, Request,
    RequestError, TableId, Ticket, Token, MAX_KEYS,
};
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

type Table = LockTable<&'static str>;

/// The default table; under miri one with few shards, because whole-table scans (`snapshot`,
/// `release_owner`, `force_release`, `blockers`) over 64 shards dominate miri's run time and
/// the shard count changes no code path. `new` and `default` themselves are tested natively.
fn new_table_of<K: std::hash::Hash + Eq + Clone>() -> LockTable<K> {
    if cfg!(miri) {
        LockTable::<K>::builder().shards(2).build()
    } else {
        LockTable::new()
    }
}

fn new_table() -> Table {
    new_table_of()
}

/// The longest any test waits for something that should happen at once.
/// (Under miri the code runs about a thousand times slower against a real clock.)
const PATIENCE: Duration = if cfg!(miri) { Duration::from_secs(120) } else { Duration::from_secs(5) };
/// The timeout of blocking acquisitions that are expected to succeed.
const GENEROUS: Duration = if cfg!(miri) { Duration::from_secs(600) } else { Duration::from_secs(10) };
/// How long a call that should return at once may take before the test calls it a hang.
const HANG: Duration = if cfg!(miri) { Duration::from_secs(30) } else { Duration::from_secs(5) };
/// A timeout that must pass while the test does a few quick steps.
const SHORT: Duration = if cfg!(miri) { Duration::from_secs(20) } else { Duration::from_millis(100) };

/// A waker that records whether it was woken.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Flag {
    fn new() -> (Arc<Flag>, Waker) {
        let f = Arc::new(Flag(AtomicBool::new(false)));
        (Arc::clone(&f), Waker::from(f))
    }
    fn woken(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Polls `fut` once with `waker`.
fn poll_with<F: Future + Unpin>(fut: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(fut).poll(&mut Context::from_waker(waker))
}

/// Polls `fut` once with a waker that does nothing.
fn poll_noop<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    poll_with(fut, Waker::noop())
}

/// Drives `fut` on this thread until it completes or `timeout` passes (then drops it). Unlike
/// `pollster::block_on` it cannot hang on a lost wake-up.
fn block_on_timeout<F: Future>(fut: F, timeout: Duration) -> Option<F::Output> {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    let deadline = Instant::now() + timeout;
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

/// Waits (bounded) until `cond` holds.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

fn owner(name: &str) -> Owner {
    Owner::new(name)
}

/// Owners waiting in `t`, in snapshot order.
fn waiting_owners<K: std::hash::Hash + Eq + Clone>(t: &LockTable<K>) -> Vec<String> {
    t.snapshot().waiting.iter().map(|w| w.owner.as_str().to_owned()).collect()
}

fn is_free(t: &Table, key: &'static str) -> bool {
    t.try_acquire(Request::new("probe").exclusive(key)).is_ok()
}

// ---------------------------------------------------------------------------------------------
// All or nothing, modes, request validation
// ---------------------------------------------------------------------------------------------

#[test]
fn try_acquire_is_all_or_nothing() {
    let t = new_table();
    let x = t.try_acquire(Request::new("X").exclusive("b")).unwrap();
    let err = t.try_acquire(Request::new("Y").exclusive("a").exclusive("b").shared("c")).unwrap_err();
    let c = err.conflict().expect("a conflict");
    assert_eq!(c.keys.len(), 1);
    assert_eq!(c.keys[0].key, "b");
    // Nothing of Y's request was taken: its free keys can be taken exclusively by someone else.
    assert!(is_free(&t, "a"), "a was kept by a refused request");
    assert!(is_free(&t, "c"), "c was kept by a refused request");
    let snap = t.snapshot();
    assert_eq!(snap.held.len(), 1);
    assert_eq!((snap.held[0].key, snap.held[0].owner.as_str()), ("b", "X"));
    assert!(t.holders(&"a").is_empty() && t.holders(&"c").is_empty());
    // And the same through the waiting entry points with a zero or short deadline.
    assert!(t.acquire(Request::new("Y").exclusive("a").exclusive("b"), Duration::ZERO).is_err());
    assert!(t.acquire(Request::new("Y").exclusive("c").exclusive("b"), Duration::from_millis(5)).is_err());
    assert!(is_free(&t, "a") && is_free(&t, "c"));
    drop(x);
    let all = t.try_acquire(Request::new("Y").exclusive("a").exclusive("b").shared("c")).unwrap();
    assert_eq!(all.len(), 3);
}

#[test]
fn shared_holders_are_counted() {
    let t = new_table();
    let r1 = t.try_acquire(Request::new("R1").shared("k")).unwrap();
    let r2 = t.try_acquire(Request::new("R2").shared("k")).unwrap();
    let r3 = t.try_acquire(Request::new("R3").shared("k")).unwrap();
    assert_eq!(t.holders(&"k").len(), 3);
    let err = t.try_acquire(Request::new("W").exclusive("k")).unwrap_err();
    let mut blockers: Vec<_> = err.conflict().unwrap().blockers().iter().map(|o| o.as_str().to_owned()).collect();
    blockers.sort();
    assert_eq!(blockers, ["R1", "R2", "R3"]);
    drop(r2);
    assert!(t.try_acquire(Request::new("W").exclusive("k")).is_err(), "writer let in with two readers left");
    drop(r1);
    assert!(t.try_acquire(Request::new("W").exclusive("k")).is_err(), "writer let in with one reader left");
    // A fourth reader is still fine while readers hold the key.
    let r4 = t.try_acquire(Request::new("R4").shared("k")).unwrap();
    drop(r3);
    assert!(t.try_acquire(Request::new("W").exclusive("k")).is_err(), "writer let in with one reader left");
    drop(r4);
    let w = t.try_acquire(Request::new("W").exclusive("k")).unwrap();
    assert!(t.try_acquire(Request::new("R5").shared("k")).is_err(), "reader let in beside a writer");
    drop(w);
}

#[test]
fn a_key_named_shared_and_exclusive_is_taken_exclusive() {
    let t = new_table();
    for req in [
        Request::new("A").shared_with("k", "first").exclusive_with("k", "second"),
        Request::new("A").exclusive_with("k", "first").shared_with("k", "second"),
    ] {
        let set = t.try_acquire(req).unwrap();
        assert_eq!(set.len(), 1);
        let locks: Vec<_> = set.locks().map(|(k, m, tok)| (*k, m, tok.is_some())).collect();
        assert_eq!(locks, [("k", Mode::EXCLUSIVE, true)]);
        let holders = t.holders(&"k");
        assert_eq!(holders.len(), 1);
        assert_eq!(holders[0].mode, Mode::EXCLUSIVE);
        // The first message given for the key is kept.
        assert_eq!(holders[0].message.as_ref().map(|m| m.reason()), Some("first"));
        assert!(t.try_acquire(Request::new("B").shared("k")).is_err(), "reader let in beside a collapsed writer");
    }
}

#[test]
fn duplicate_keys_collapse() {
    let t = new_table();
    let req = Request::new("A").shared("a").shared("a").shared("b").shared("a");
    assert_eq!(req.len(), 4, "Request::len counts duplicates");
    let set = t.try_acquire(req).unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(t.holders(&"a").len(), 1, "one holder record per distinct key");
    let ticket = set.into_ticket();
    assert_eq!(ticket.locks.len(), 2);
    // A conflict counts distinct keys too.
    let x = t.try_acquire(Request::new("X").exclusive("c")).unwrap();
    let err = t.try_acquire(Request::new("B").exclusive("c").exclusive("c").exclusive("d")).unwrap_err();
    let c = err.conflict().unwrap();
    assert_eq!(c.requested, 2);
    assert_eq!(c.keys.len(), 1);
    assert!(err.to_string().contains("could not lock 1 of its 2 keys"), "{err}");
    drop(x);
    t.release(&ticket).unwrap();
}

#[test]
fn an_empty_request_is_refused() {
    let t = new_table();
    let err = t.try_acquire(Request::new("A")).unwrap_err();
    assert!(matches!(err, AcquireError::Request(RequestError::Empty)), "{err:?}");
    assert!(err.conflict().is_none());
    assert!(std::error::Error::source(&err).is_some());
    assert_eq!(err.to_string(), "the lock request names no key");
    let err = t.acquire(Request::new("A"), GENEROUS).unwrap_err();
    assert!(matches!(err, AcquireError::Request(RequestError::Empty)), "{err:?}");
    let mut fut = t.acquire_async(Request::new("A"));
    match poll_noop(&mut fut) {
        Poll::Ready(Err(AcquireError::Request(RequestError::Empty))) => {}
        other => panic!("expected Request(Empty) at once, got {:?}", other.map(|r| r.map(|s| s.len()))),
    }
    assert!(Request::<&str>::new("A").is_empty());
    assert_eq!(t.key_count(), 0);
}

#[test]
fn too_many_keys_are_refused() {
    let t = new_table_of::<usize>();
    let mut req = Request::new("A");
    for k in 0..=MAX_KEYS {
        req = req.shared(k);
    }
    let err = t.try_acquire(req.clone()).unwrap_err();
    assert!(
        matches!(err, AcquireError::Request(RequestError::TooManyKeys { len, max }) if len == MAX_KEYS + 1 && max == MAX_KEYS),
        "{err:?}"
    );
    assert!(err.to_string().contains(&format!("{}", MAX_KEYS + 1)));
    assert!(matches!(t.acquire(req, GENEROUS), Err(AcquireError::Request(RequestError::TooManyKeys { .. }))));
    // Duplicates count toward the limit: it bounds the work of one request.
    let mut dup = Request::new("A");
    for _ in 0..=MAX_KEYS {
        dup = dup.shared(1);
    }
    assert!(matches!(t.try_acquire(dup), Err(AcquireError::Request(RequestError::TooManyKeys { .. }))));
    assert_eq!(t.key_count(), 0, "a refused request left keys behind");
    if cfg!(miri) {
        return; // 4096 slots take minutes under miri
    }
    // Exactly MAX_KEYS is fine.
    let mut ok = Request::new("A");
    for k in 0..MAX_KEYS {
        ok = ok.exclusive(k);
    }
    assert_eq!(t.try_acquire(ok).unwrap().len(), MAX_KEYS);
}

#[test]
fn an_unknown_mode_is_refused() {
    let t = new_table();
    let err = t.try_acquire(Request::new("A").shared("ok").lock("k", Mode(7), None)).unwrap_err();
    assert!(matches!(err, AcquireError::Request(RequestError::UnknownMode(Mode(7)))), "{err:?}");
    assert!(err.to_string().contains("mode 7"));
    // The built-in intention modes do not exist on a shared/exclusive table.
    let err = t.try_acquire(Request::new("A").lock("k", Mode::INTENTION_SHARED, None)).unwrap_err();
    assert!(matches!(err, AcquireError::Request(RequestError::UnknownMode(Mode::INTENTION_SHARED))));
    assert!(matches!(
        t.acquire(Request::new("A").lock("k", Mode(7), None), GENEROUS),
        Err(AcquireError::Request(RequestError::UnknownMode(_)))
    ));
    assert!(matches!(
        poll_noop(&mut t.acquire_async(Request::new("A").lock("k", Mode(7), None))),
        Poll::Ready(Err(AcquireError::Request(RequestError::UnknownMode(_))))
    ));
    assert!(t.snapshot().held.is_empty());
    // On the five-mode table, mode 4 exists and mode 5 does not.
    let mg = LockTable::<&str>::with_modes(ModeTable::multi_granularity());
    assert!(mg.try_acquire(Request::new("A").lock("k", Mode::SHARED_INTENTION_EXCLUSIVE, None)).is_ok());
    assert!(matches!(
        mg.try_acquire(Request::new("A").lock("k", Mode(5), None)),
        Err(AcquireError::Request(RequestError::UnknownMode(Mode(5))))
    ));
}

// ---------------------------------------------------------------------------------------------
// Conflict reports
// ---------------------------------------------------------------------------------------------

#[test]
fn a_conflict_names_every_conflicting_key_and_every_holder() {
    let t = new_table();
    let moving = LockMessage::new("a is being moved").with("to", "h2");
    let x = t.try_acquire(Request::new("X").exclusive_with("a", moving.clone()).exclusive("d")).unwrap();
    let y = t.try_acquire(Request::new("Y").shared_with("b", "Y reads b")).unwrap();
    let z = t.try_acquire(Request::new("Z").shared("b")).unwrap();
    let err = t.try_acquire(Request::new("W").shared("a").exclusive("b").exclusive("c").shared("d")).unwrap_err();
    assert!(matches!(err, AcquireError::Conflict(_)), "{err:?}");
    let c = err.conflict().unwrap();
    assert_eq!(c.owner, owner("W"));
    assert_eq!(c.requested, 4);
    let mut keys = c.keys.clone();
    keys.sort_by_key(|k| k.key);
    assert_eq!(keys.iter().map(|k| k.key).collect::<Vec<_>>(), ["a", "b", "d"], "c is free and must not be named");

    let a = &keys[0];
    assert_eq!((a.asked, a.asked_name), (Mode::SHARED, "shared"));
    assert!(a.waiters_ahead.is_empty());
    assert_eq!(a.holders.len(), 1);
    let h = &a.holders[0];
    assert_eq!(h.owner, owner("X"));
    assert_eq!(h.grant, x.grant());
    assert_eq!((h.mode, h.mode_name), (Mode::EXCLUSIVE, "exclusive"));
    assert_eq!(h.message.as_ref(), Some(&moving));
    assert_near(h.since, x.since());
    assert_eq!(h.token, x.token(&"a"));
    assert!(h.token.is_some());
    assert!(h.blocking);

    let b = &keys[1];
    assert_eq!(b.asked, Mode::EXCLUSIVE);
    let mut hb: Vec<_> = b.holders.iter().collect();
    hb.sort_by(|p, q| p.owner.cmp(&q.owner));
    assert_eq!(hb.len(), 2);
    assert_eq!((hb[0].owner.as_str(), hb[0].grant), ("Y", y.grant()));
    assert_near(hb[0].since, y.since());
    assert_eq!(hb[0].message.as_ref().map(|m| m.reason()), Some("Y reads b"));
    assert_eq!((hb[1].owner.as_str(), hb[1].grant), ("Z", z.grant()));
    assert_near(hb[1].since, z.since());
    assert!(hb[1].message.is_none());
    assert!(hb.iter().all(|h| h.blocking && h.mode == Mode::SHARED && h.mode_name == "shared" && h.token.is_none()));

    let d = &keys[2];
    assert_eq!(d.holders.len(), 1);
    assert_eq!((d.holders[0].owner.as_str(), d.holders[0].grant), ("X", x.grant()));
    assert!(d.holders[0].message.is_none());

    // Blockers: each owner once, although X blocks two keys.
    let mut blockers: Vec<_> = c.blockers().iter().map(|o| o.as_str().to_owned()).collect();
    blockers.sort();
    assert_eq!(blockers, ["X", "Y", "Z"]);

    let text = err.to_string();
    assert!(text.starts_with("W could not lock 3 of its 4 keys:"), "{text}");
    assert!(text.contains("\n- \"a\" (shared asked) is held exclusive by X for "), "{text}");
    assert!(text.contains(": a is being moved (to: h2)"), "{text}");
    assert!(text.contains("\n- \"b\" (exclusive asked) is held shared by "), "{text}");
    assert!(text.contains("shared by Y for ") && text.contains(": Y reads b"), "{text}");
    assert!(text.contains("; also held shared by "), "{text}");
    assert!(text.contains("shared by Z for "), "{text}");
    assert!(text.contains("\n- \"d\" (shared asked) is held exclusive by X for "), "{text}");
    assert!(!text.contains("\"c\""), "{text}");
    drop((x, y, z));
}

#[test]
fn a_conflict_lists_compatible_holders_as_not_blocking() {
    let t = LockTable::<&str>::with_modes(ModeTable::multi_granularity());
    let is = t.try_acquire(Request::new("IS").lock("db", Mode::INTENTION_SHARED, None)).unwrap();
    let ix = t.try_acquire(Request::new("IX").lock("db", Mode::INTENTION_EXCLUSIVE, None)).unwrap();
    let err = t.try_acquire(Request::new("S").shared("db")).unwrap_err();
    let k = &err.conflict().unwrap().keys[0];
    assert_eq!(k.holders.len(), 2, "every holder of the key is listed");
    for h in &k.holders {
        assert_eq!(h.blocking, h.owner.as_str() == "IX", "{h:?}");
    }
    assert_eq!(err.conflict().unwrap().blockers(), [owner("IX")]);
    let text = err.to_string();
    assert!(text.contains("is held intention-exclusive by IX"), "{text}");
    assert!(!text.contains("by IS"), "a compatible holder is not shown as blocking: {text}");
    drop((is, ix));
}

#[test]
fn try_acquire_reports_the_waiters_ahead() {
    let t = new_table();
    let x = t.try_acquire(Request::new("X").shared("k")).unwrap();
    let mut w = t.acquire_async(Request::new("W").exclusive("k"));
    assert!(poll_noop(&mut w).is_pending());
    assert_eq!(waiting_owners(&t), ["W"]);

    // Only readers hold the key, yet a new reader is refused and told who is queued ahead.
    let err = t.try_acquire(Request::new("Y").shared("k")).unwrap_err();
    let c = err.conflict().unwrap();
    assert_eq!(c.keys.len(), 1);
    let k = &c.keys[0];
    assert_eq!(k.holders.len(), 1);
    assert_eq!(k.holders[0].owner, owner("X"));
    assert!(!k.holders[0].blocking);
    assert_eq!(k.waiters_ahead.len(), 1);
    let wa = &k.waiters_ahead[0];
    assert_eq!((wa.owner.as_str(), wa.mode, wa.mode_name), ("W", Mode::EXCLUSIVE, "exclusive"));
    assert!(wa.since <= Instant::now());
    assert_eq!(c.blockers(), [owner("W")]);
    let text = err.to_string();
    assert!(
        text.contains("(shared asked) is free of conflicting holders; queued ahead: W (exclusive, waiting"),
        "{text}"
    );

    // A writer sees both the holder and the waiter.
    let err = t.try_acquire(Request::new("Y").exclusive("k")).unwrap_err();
    let k = &err.conflict().unwrap().keys[0];
    assert!(k.holders[0].blocking);
    assert_eq!(k.waiters_ahead.len(), 1);
    assert_eq!(err.conflict().unwrap().blockers(), [owner("X"), owner("W")]);

    drop(w);
    assert!(waiting_owners(&t).is_empty());
    assert!(t.try_acquire(Request::new("Y").shared("k")).is_ok());
    drop(x);
}

// ---------------------------------------------------------------------------------------------
// Fairness
// ---------------------------------------------------------------------------------------------

#[test]
fn a_queued_writer_stops_later_readers() {
    let t = new_table();
    let r = t.try_acquire(Request::new("R").shared("k")).unwrap();
    let (wflag, wwaker) = Flag::new();
    let mut w = t.acquire_async(Request::new("W").exclusive("k"));
    assert!(poll_with(&mut w, &wwaker).is_pending());
    // No barging: shared holders only, but a writer is queued first.
    assert!(t.try_acquire(Request::new("Y").shared("k")).is_err(), "a reader barged past a queued writer");
    assert!(matches!(t.acquire(Request::new("Y").shared("k"), Duration::ZERO), Err(AcquireError::Timeout(_))));
    assert!(matches!(
        t.acquire(Request::new("Y").shared("k"), Duration::from_millis(20)),
        Err(AcquireError::Timeout(_))
    ));
    let mut y = t.acquire_async(Request::new("Y").shared("k"));
    assert!(poll_noop(&mut y).is_pending(), "an async reader barged past a queued writer");
    drop(y);
    // Another key is not affected.
    assert!(t.try_acquire(Request::new("Y").shared("other")).is_ok());
    drop(r);
    assert!(wflag.woken(), "the writer was not woken when the last reader left");
    let Poll::Ready(Ok(wset)) = poll_with(&mut w, &wwaker) else { panic!("the writer did not get the key") };
    assert!(t.try_acquire(Request::new("Y").shared("k")).is_err());
    drop(wset);
    assert!(t.try_acquire(Request::new("Y").shared("k")).is_ok());
}

#[test]
fn waiters_are_served_in_arrival_order() {
    let t = new_table();
    let x = t.try_acquire(Request::new("X").exclusive("k")).unwrap();
    let z = t.try_acquire(Request::new("Z").exclusive("j")).unwrap();
    let (f1, k1) = Flag::new();
    let (f2, k2) = Flag::new();
    let mut w1 = t.acquire_async(Request::new("W1").exclusive("k"));
    // W2 also waits for j, so releasing j wakes it and makes it decide on k.
    let mut w2 = t.acquire_async(Request::new("W2").exclusive("k").exclusive("j"));
    assert!(poll_with(&mut w1, &k1).is_pending());
    assert!(poll_with(&mut w2, &k2).is_pending());
    let snap = t.snapshot();
    let on_k: Vec<_> = snap.waiting.iter().filter(|w| w.key == "k").collect();
    assert_eq!(on_k.iter().map(|w| w.owner.as_str()).collect::<Vec<_>>(), ["W1", "W2"]);
    assert!(on_k[0].arrival < on_k[1].arrival);
    drop(x);
    assert!(f1.woken(), "the first waiter was not woken");
    drop(z);
    assert!(f2.woken(), "releasing j did not wake W2");
    // W2 is polled first, with k and j both free: it must still wait for W1, queued before it on k.
    assert!(poll_with(&mut w2, &k2).is_pending(), "the second waiter overtook the first");
    let Poll::Ready(Ok(s1)) = poll_with(&mut w1, &k1) else { panic!("the first waiter did not get the key") };
    assert!(poll_with(&mut w2, &k2).is_pending());
    drop(s1);
    let Poll::Ready(Ok(s2)) = poll_with(&mut w2, &k2) else { panic!("the second waiter did not get the keys") };
    assert_eq!(s2.owner(), &owner("W2"));
    assert_eq!(s2.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------------

#[test]
fn acquire_succeeds_when_released_from_another_thread() {
    let t = new_table();
    let x = t.try_acquire(Request::new("X").exclusive("k").shared("s")).unwrap();
    let x_token = x.token(&"k").unwrap();
    thread::scope(|s| {
        let waiter = s.spawn(|| {
            let start = Instant::now();
            let r = t.acquire(Request::new("W").exclusive("k").exclusive("s"), GENEROUS);
            (r.map(|set| (set.len(), set.token(&"k"), set.into_ticket())), start.elapsed())
        });
        wait_until("W is queued", || waiting_owners(&t) == ["W", "W"]);
        assert_eq!(t.blockers(&owner("W")), [owner("X")]);
        thread::sleep(Duration::from_millis(20));
        drop(x);
        let (r, waited) = waiter.join().unwrap();
        let (len, token, ticket) = r.expect("the waiter did not get the keys");
        assert_eq!(len, 2);
        assert!(token.unwrap() > x_token);
        assert!(cfg!(miri) || waited < GENEROUS / 2, "the waiter was not woken by the release: it waited {waited:?}");
        assert!(t.snapshot().waiting.is_empty());
        t.release(&ticket).unwrap();
    });
    assert_eq!(t.metrics().waits, 1);
    assert_eq!(t.metrics().wait_time.count(), 1);
}

#[test]
fn acquire_times_out_and_leaves_nothing_queued() {
    let t = new_table();
    let x = t.try_acquire(Request::new("X").exclusive_with("k", "busy")).unwrap();
    let timeout = Duration::from_millis(50);
    let start = Instant::now();
    let err = t.acquire(Request::new("W").exclusive("k").shared("free"), timeout).unwrap_err();
    assert!(start.elapsed() >= timeout, "gave up after {:?}", start.elapsed());
    let AcquireError::Timeout(c) = &err else { panic!("expected Timeout, got {err:?}") };
    assert_eq!(c.keys.len(), 1);
    assert_eq!(c.keys[0].holders[0].owner, owner("X"));
    assert!(err.to_string().starts_with("timed out waiting: W could not lock 1 of its 2 keys"), "{err}");
    let snap = t.snapshot();
    assert!(snap.waiting.is_empty(), "a timed-out waiter is still queued: {:?}", snap.waiting);
    assert_eq!(snap.held.len(), 1);
    assert!(is_free(&t, "free"), "a timed-out request kept a key");
    assert_eq!(t.metrics().timeouts, 1);
    drop(x);
    // Nothing left queued holds anyone up.
    assert!(t.try_acquire(Request::new("Y").shared("k")).is_ok());
}

#[test]
fn a_timed_out_waiter_wakes_those_behind_it() {
    let t = new_table();
    let r = t.try_acquire(Request::new("R").shared("k")).unwrap();
    let (flag, waker) = Flag::new();
    thread::scope(|s| {
        let w1 = s.spawn(|| t.acquire(Request::new("W1").exclusive("k"), SHORT).map(|_| ()));
        wait_until("W1 is queued", || waiting_owners(&t) == ["W1"]);
        let mut w2 = t.acquire_async(Request::new("W2").shared("k"));
        assert!(poll_with(&mut w2, &waker).is_pending(), "W2 barged past W1");
        assert_eq!(t.blockers(&owner("W2")), [owner("W1")], "R holds k compatibly and must not be named");
        assert!(matches!(w1.join().unwrap(), Err(AcquireError::Timeout(_))));
        assert!(flag.woken(), "W1 left the queue without waking W2");
        assert!(matches!(poll_with(&mut w2, &waker), Poll::Ready(Ok(_))));
    });
    drop(r);
}

#[test]
fn acquire_with_zero_timeout_never_waits() {
    let t = new_table();
    let a = t.acquire(Request::new("A").exclusive("k"), Duration::ZERO).expect("a free key is granted at once");
    let start = Instant::now();
    let err = t.acquire(Request::new("B").exclusive("k"), Duration::ZERO).unwrap_err();
    assert!(start.elapsed() < PATIENCE);
    assert!(matches!(err, AcquireError::Timeout(_)), "{err:?}");
    assert_eq!(err.conflict().unwrap().keys[0].holders[0].owner, owner("A"));
    assert!(t.snapshot().waiting.is_empty());
    let m = t.metrics();
    assert_eq!((m.waits, m.timeouts, m.conflicts), (0, 1, 0));
    drop(a);
}

#[test]
fn acquire_async_completes_after_release() {
    let t = new_table();
    let x = t.try_acquire(Request::new("X").exclusive("k")).unwrap();
    let (flag, waker) = Flag::new();
    let mut fut = t.acquire_async(Request::new("W").shared("k"));
    assert!(poll_with(&mut fut, &waker).is_pending());
    assert!(poll_with(&mut fut, &waker).is_pending(), "a second poll without a release must stay pending");
    assert_eq!(waiting_owners(&t), ["W"]);
    assert!(!flag.woken());
    drop(x);
    assert!(flag.woken(), "the release did not wake the future");
    let Poll::Ready(Ok(set)) = poll_with(&mut fut, &waker) else { panic!("not granted after the release") };
    assert_eq!(set.owner(), &owner("W"));
    assert!(t.snapshot().waiting.is_empty());
    assert_eq!(t.metrics().wait_time.count(), 1);
    // A free key is granted on the first poll, without queueing.
    let mut free = t.acquire_async(Request::new("V").shared("k"));
    assert!(matches!(poll_noop(&mut free), Poll::Ready(Ok(_))));
    assert_eq!(t.metrics().waits, 1);
}

#[test]
fn acquire_async_with_pollster_completes_after_release_from_another_thread() {
    let t = Arc::new(new_table_of::<&'static str>());
    let held = t.try_acquire(Request::new("X").exclusive("k")).unwrap().into_ticket();
    let (tx, rx) = mpsc::channel();
    let t2 = Arc::clone(&t);
    // Detached, so that a lost wake-up fails this test (recv_timeout) instead of hanging it.
    thread::spawn(move || {
        let r = pollster::block_on(t2.acquire_async(Request::new("W").exclusive("k")));
        let _ = tx.send(r.map(|set| set.into_ticket()).map_err(|e| e.to_string()));
    });
    wait_until("W is queued", || waiting_owners(&*t) == ["W"]);
    t.release(&held).unwrap();
    let ticket = rx.recv_timeout(GENEROUS).expect("the future was not woken by the release").unwrap();
    assert_eq!(ticket.owner, owner("W"));
    assert!(ticket.locks[0].token > held.locks[0].token);
    t.release(&ticket).unwrap();
    // With nothing held it completes at once.
    let set = pollster::block_on(t.acquire_async(Request::new("V").shared("k"))).unwrap();
    assert_eq!(set.len(), 1);
}

#[test]
fn dropping_a_queued_future_gives_up_its_place_and_wakes_those_behind() {
    let t = new_table();
    let r = t.try_acquire(Request::new("R").shared("k")).unwrap();
    let mut a = t.acquire_async(Request::new("A").exclusive("k").exclusive("other"));
    assert!(poll_noop(&mut a).is_pending());
    let (flag, waker) = Flag::new();
    let mut b = t.acquire_async(Request::new("B").shared("k"));
    assert!(poll_with(&mut b, &waker).is_pending(), "B barged past A");
    assert_eq!(waiting_owners(&t).len(), 3, "A on two keys, B on one");
    drop(a);
    assert!(flag.woken(), "cancelling A did not wake B");
    assert_eq!(waiting_owners(&t), ["B"]);
    assert!(is_free(&t, "other"), "a cancelled wait kept a key");
    assert!(matches!(poll_with(&mut b, &waker), Poll::Ready(Ok(_))));
    assert!(t.snapshot().waiting.is_empty());
    assert_eq!(t.metrics().cancellations, 1);
    // A future dropped before its first poll never queued: no cancellation.
    drop(t.acquire_async(Request::new("C").exclusive("k")));
    assert_eq!(t.metrics().cancellations, 1);
    drop(r);
}

#[test]
#[should_panic(expected = "polled after it completed")]
fn polling_a_completed_future_panics() {
    let t = new_table();
    let mut fut = t.acquire_async(Request::new("A").shared("k"));
    let Poll::Ready(Ok(_set)) = poll_noop(&mut fut) else { panic!("a free key was not granted at once") };
    let _ = poll_noop(&mut fut);
}

// ---------------------------------------------------------------------------------------------
// Tickets and release
// ---------------------------------------------------------------------------------------------

#[test]
fn into_ticket_keeps_the_locks() {
    let t = new_table();
    let set = t.try_acquire(Request::new("A").exclusive("x").shared("s")).unwrap();
    let (grant, token) = (set.grant(), set.token(&"x"));
    let ticket = set.into_ticket();
    assert_eq!(ticket.table, t.id());
    assert_eq!(ticket.grant, grant);
    assert_eq!(ticket.owner, owner("A"));
    let mut locks: Vec<_> = ticket.locks.iter().map(|l| (l.key, l.mode, l.token)).collect();
    locks.sort();
    assert_eq!(locks, [("s", Mode::SHARED, None), ("x", Mode::EXCLUSIVE, token)]);
    assert!(token.is_some());
    // The guard is gone; the locks are not.
    assert!(t.try_acquire(Request::new("B").shared("x")).is_err());
    assert!(t.try_acquire(Request::new("B").exclusive("s")).is_err());
    assert_eq!(t.snapshot().held.len(), 2);
    t.release(&ticket).unwrap();
    assert!(t.snapshot().held.is_empty());
    assert!(is_free(&t, "x") && is_free(&t, "s"));
}

#[test]
fn release_frees_exactly_that_grant() {
    let t = new_table();
    let g1 = t.try_acquire(Request::new("O").exclusive("a").shared("b")).unwrap().into_ticket();
    let g2 = t.try_acquire(Request::new("O").exclusive("c")).unwrap().into_ticket();
    let p = t.try_acquire(Request::new("P").shared("b")).unwrap();
    t.release(&g1).unwrap();
    assert!(is_free(&t, "a"));
    let hb = t.holders(&"b");
    assert_eq!(hb.len(), 1, "another grant's shared lock on the same key was released");
    assert_eq!((hb[0].owner.as_str(), hb[0].grant), ("P", p.grant()));
    assert!(!is_free(&t, "c"), "the owner's other grant was released");
    assert_eq!(t.holders(&"a").len(), 0);
    t.release(&g2).unwrap();
    assert!(is_free(&t, "c"));
    drop(p);
}

#[test]
fn releasing_twice_is_an_unknown_grant() {
    let t = new_table();
    let ticket = t.try_acquire(Request::new("A").exclusive("k")).unwrap().into_ticket();
    t.release(&ticket).unwrap();
    let b = t.try_acquire(Request::new("B").exclusive("k")).unwrap();
    let err = t.release(&ticket).unwrap_err();
    assert_eq!(err, ReleaseError::UnknownGrant(ticket.grant));
    assert!(err.to_string().contains("already released"), "{err}");
    assert!(!is_free(&t, "k"), "a stale ticket released someone else's lock");
    assert_eq!(t.holders(&"k")[0].grant, b.grant());
}

#[test]
fn a_ticket_from_another_table_is_refused() {
    let t1 = new_table();
    let t2 = new_table();
    assert_ne!(t1.id(), t2.id());
    let ticket = t1.try_acquire(Request::new("A").exclusive("k")).unwrap().into_ticket();
    let in_t2 = t2.try_acquire(Request::new("B").exclusive("k")).unwrap();
    let err = t2.release(&ticket).unwrap_err();
    assert_eq!(err, ReleaseError::ForeignTable { expected: t2.id(), found: t1.id() });
    assert!(err.to_string().contains("not by this one"), "{err}");
    assert!(!is_free(&t1, "k") && !is_free(&t2, "k"), "a foreign ticket released something");
    t1.release(&ticket).unwrap();
    drop(in_t2);
}

#[test]
fn an_altered_ticket_is_refused_and_releases_nothing() {
    let t = new_table();
    let ticket = t.try_acquire(Request::new("A").exclusive("a").shared("b")).unwrap().into_ticket();
    let all_held =
        |t: &Table| t.holders(&"a").len() == 1 && t.holders(&"b").len() == 1 && !is_free(t, "a") && !is_free(t, "b");
    let mut key_removed = ticket.clone();
    key_removed.locks.pop();
    let mut mode_changed = ticket.clone();
    for l in &mut mode_changed.locks {
        l.mode = if l.mode == Mode::SHARED { Mode::EXCLUSIVE } else { Mode::SHARED };
    }
    let mut one_mode_changed = ticket.clone();
    let i = one_mode_changed.locks.iter().position(|l| l.key == "b").unwrap();
    one_mode_changed.locks[i].mode = Mode::EXCLUSIVE;
    let mut owner_changed = ticket.clone();
    owner_changed.owner = owner("B");
    let mut key_added = ticket.clone();
    key_added.locks.push(lockcore::TicketLock { key: "c", mode: Mode::SHARED, token: None, message: None });
    let mut key_renamed = ticket.clone();
    key_renamed.locks[0].key = "zzz";
    let _other = t.try_acquire(Request::new("O").shared("c")).unwrap();
    for (what, bad) in [
        ("key removed", &key_removed),
        ("modes swapped", &mode_changed),
        ("one mode changed", &one_mode_changed),
        ("owner changed", &owner_changed),
        ("key added", &key_added),
        ("key renamed", &key_renamed),
    ] {
        let err = t.release(bad).unwrap_err();
        assert_eq!(err, ReleaseError::Mismatch(ticket.grant), "{what}");
        assert!(all_held(&t), "{what}: something was released");
    }
    assert!(ReleaseError::Mismatch(ticket.grant).to_string().contains("names keys or modes"));
    let mut grant_changed = ticket.clone();
    grant_changed.grant = GrantId(u64::MAX);
    assert_eq!(t.release(&grant_changed), Err(ReleaseError::UnknownGrant(GrantId(u64::MAX))));
    assert!(all_held(&t));
    assert_eq!(t.metrics().releases, 0);
    t.release(&ticket).unwrap();
    assert!(is_free(&t, "a") && is_free(&t, "b"));
}

/// A ticket is plain data (it may come back from storage or another process), so `release` must
/// refuse one that names a key twice, as it refuses any other ticket that does not describe its
/// grant, and must not hang. Run on a detached thread so a hang fails this test.
#[test]
fn a_ticket_naming_a_key_twice_is_refused_without_hanging() {
    let t = Arc::new(new_table_of::<&'static str>());
    let ticket = t.try_acquire(Request::new("A").exclusive("a").shared("b")).unwrap().into_ticket();
    let mut dup = ticket.clone();
    dup.locks.push(ticket.locks[0].clone());
    let (tx, rx) = mpsc::channel();
    let t2 = Arc::clone(&t);
    thread::spawn(move || {
        let _ = tx.send(t2.release(&dup));
    });
    let r = rx.recv_timeout(HANG).expect("release of a ticket naming a key twice never returned (deadlock)");
    assert_eq!(r, Err(ReleaseError::Mismatch(ticket.grant)));
    assert_eq!(t.holders(&"a").len(), 1, "something was released");
    t.release(&ticket).unwrap();
}

#[test]
fn release_owner_frees_every_grant_of_that_owner_only() {
    let t = new_table();
    let t1 = t.try_acquire(Request::new("O").exclusive("a").shared("b")).unwrap().into_ticket();
    let t2 = t.try_acquire(Request::new("O").shared("c")).unwrap().into_ticket();
    let guard = t.try_acquire(Request::new("O").exclusive("d")).unwrap();
    let p = t.try_acquire(Request::new("P").shared("b").shared("c").exclusive("e")).unwrap();
    let mut freed = t.release_owner(&owner("O"));
    freed.sort_by_key(|tk| tk.grant);
    let mut expected =
        vec![t1.clone(), t2.clone(), Ticket { table: t.id(), grant: guard.grant(), owner: owner("O"), locks: vec![] }];
    expected.sort_by_key(|tk| tk.grant);
    assert_eq!(freed.len(), 3);
    for (got, want) in freed.iter().zip(&expected) {
        assert_eq!((got.table, got.grant, &got.owner), (want.table, want.grant, &want.owner));
        if got.grant == guard.grant() {
            let l: Vec<_> = got.locks.iter().map(|l| (l.key, l.mode, l.token)).collect();
            assert_eq!(l, [("d", Mode::EXCLUSIVE, guard.token(&"d"))]);
        } else {
            let mut a = got.locks.clone();
            let mut b = want.locks.clone();
            a.sort_by_key(|l| l.key);
            b.sort_by_key(|l| l.key);
            assert_eq!(a, b, "a returned ticket does not describe what was freed");
        }
    }
    // O's keys are free of O; P keeps everything.
    assert!(is_free(&t, "a") && is_free(&t, "d"));
    for k in ["b", "c", "e"] {
        let h = t.holders(&k);
        assert_eq!(h.len(), 1, "{k}");
        assert_eq!(h[0].owner, owner("P"), "{k}");
    }
    assert_eq!(t.release(&t1), Err(ReleaseError::UnknownGrant(t1.grant)));
    // The guard's later drop frees nothing of someone who took d since.
    let q = t.try_acquire(Request::new("Q").exclusive("d")).unwrap();
    drop(guard);
    assert_eq!(t.holders(&"d").len(), 1);
    assert_eq!(t.holders(&"d")[0].grant, q.grant());
    assert_eq!(t.metrics().owner_releases, 3);
    assert!(t.release_owner(&owner("nobody")).is_empty());
    assert_eq!(t.metrics().owner_releases, 3);
    drop((p, q));
}

#[test]
fn force_release_frees_one_grant_and_its_stale_guard_frees_nothing() {
    let t = new_table();
    let stuck = t.try_acquire(Request::new("A").exclusive("k").shared("s")).unwrap();
    let other = t.try_acquire(Request::new("A").exclusive("k2")).unwrap();
    let token = stuck.token(&"k");
    let ticket = t.force_release(stuck.grant()).unwrap();
    assert_eq!((ticket.table, ticket.grant, &ticket.owner), (t.id(), stuck.grant(), &owner("A")));
    let mut locks: Vec<_> = ticket.locks.iter().map(|l| (l.key, l.mode, l.token)).collect();
    locks.sort();
    assert_eq!(locks, [("k", Mode::EXCLUSIVE, token), ("s", Mode::SHARED, None)]);
    assert!(!is_free(&t, "k2"), "force_release freed another grant of the same owner");
    let b = t.try_acquire(Request::new("B").exclusive("k")).unwrap();
    assert!(b.token(&"k") > token, "a token was reused after a forced release");
    drop(stuck); // stale: must not release B's lock on k
    let h = t.holders(&"k");
    assert_eq!(h.len(), 1, "the stale guard released another owner's lock");
    assert_eq!(h[0].grant, b.grant());
    assert!(t.try_acquire(Request::new("C").shared("k")).is_err());
    assert_eq!(t.release(&ticket), Err(ReleaseError::UnknownGrant(ticket.grant)));
    assert_eq!(t.metrics().forced_releases, 1);
    drop((b, other));
}

#[test]
fn force_release_of_an_unknown_grant_is_refused() {
    let t = new_table();
    assert_eq!(t.force_release(GrantId(12345)), Err(ReleaseError::UnknownGrant(GrantId(12345))));
    let set = t.try_acquire(Request::new("A").exclusive("k")).unwrap();
    let g = set.grant();
    drop(set);
    assert_eq!(t.force_release(g), Err(ReleaseError::UnknownGrant(g)));
    let ticket = t.try_acquire(Request::new("A").exclusive("k")).unwrap().into_ticket();
    t.force_release(ticket.grant).unwrap();
    assert_eq!(t.force_release(ticket.grant), Err(ReleaseError::UnknownGrant(ticket.grant)));
    assert_eq!(t.metrics().forced_releases, 1);
}

// ---------------------------------------------------------------------------------------------
// Fencing tokens
// ---------------------------------------------------------------------------------------------

fn exclusive_token(t: &LockTable<&'static str>, key: &'static str) -> Token {
    let set = t.try_acquire(Request::new("F").exclusive(key)).unwrap();
    let tok = set.token(&key).expect("an exclusive grant has a token");
    assert_eq!(t.holders(&key)[0].token, Some(tok));
    assert_eq!(t.snapshot().held.iter().find(|h| h.key == key).unwrap().token, Some(tok));
    tok
}

#[test]
fn fencing_tokens_increase_per_key_and_shared_grants_have_none() {
    let t = new_table();
    let mut last = exclusive_token(&t, "k");
    for _ in 0..5 {
        let tok = exclusive_token(&t, "k");
        assert!(tok > last, "{tok:?} after {last:?}");
        last = tok;
    }
    // Shared grants carry none, and do not disturb the sequence.
    let s = t.try_acquire(Request::new("S").shared("k").shared("k2")).unwrap();
    assert_eq!(s.token(&"k"), None);
    assert!(s.locks().all(|(_, _, tok)| tok.is_none()));
    assert!(t.holders(&"k").iter().all(|h| h.token.is_none()));
    assert!(s.into_ticket().locks.iter().all(|l| l.token.is_none()));
    let _ = t.release_owner(&owner("S"));
    // Through tickets, async grants and waits too.
    let ticket = t.try_acquire(Request::new("T").exclusive("k")).unwrap().into_ticket();
    let tok = ticket.locks[0].token.unwrap();
    assert!(tok > last);
    last = tok;
    let mut fut = t.acquire_async(Request::new("U").exclusive("k"));
    assert!(poll_noop(&mut fut).is_pending());
    t.release(&ticket).unwrap();
    let Poll::Ready(Ok(u)) = poll_noop(&mut fut) else { panic!("not granted") };
    assert!(u.token(&"k").unwrap() > last);
    last = u.token(&"k").unwrap();
    drop(u);
    // After the key's record was freed and its memory given back.
    assert_eq!(t.key_count(), 0);
    assert!(t.reclaim() >= 1);
    let tok = exclusive_token(&t, "k");
    assert!(tok > last, "token went back after reclaim: {tok:?} after {last:?}");
    last = tok;
    // After its record was reused by other keys (one shard, so they are sure to reuse it).
    let t1 = LockTable::<u64>::builder().shards(1).build();
    let mut last1 = Token(0);
    for round in 0..if cfg!(miri) { 2 } else { 3 } {
        let set = t1.try_acquire(Request::new("F").exclusive(0)).unwrap();
        let tok = set.token(&0).unwrap();
        assert!(tok > last1, "round {round}: {tok:?} after {last1:?}");
        last1 = tok;
        drop(set);
        let churn = if cfg!(miri) { 150 } else { 1000 };
        for k in 1..=churn {
            drop(t1.try_acquire(Request::new("C").exclusive(round * 10_000 + k)).unwrap());
        }
        assert_eq!(t1.key_count(), 0, "released keys stayed in the table");
    }
    let _ = last;
}

#[test]
fn fencing_tokens_start_above_the_floor() {
    let t = LockTable::<&str>::builder().token_floor(1000).build();
    let set = t.try_acquire(Request::new("A").exclusive("k")).unwrap();
    assert!(set.token(&"k").unwrap() > Token(1000));
}

// ---------------------------------------------------------------------------------------------
// Introspection
// ---------------------------------------------------------------------------------------------

#[test]
fn snapshot_lists_held_and_waiting_locks() {
    let t = new_table();
    assert!(t.snapshot().held.is_empty() && t.snapshot().waiting.is_empty());
    let a = t.try_acquire(Request::new("A").exclusive_with("x", "writing x").shared("y")).unwrap();
    let b = t.try_acquire(Request::new("B").shared("y")).unwrap();
    let mut w1 = t.acquire_async(Request::new("W1").exclusive("x").exclusive("y"));
    assert!(poll_noop(&mut w1).is_pending());
    let mut w2 = t.acquire_async(Request::new("W2").shared("x"));
    assert!(poll_noop(&mut w2).is_pending());
    let before = Instant::now();
    let snap = t.snapshot();
    assert!(before <= snap.taken_at && snap.taken_at <= Instant::now());

    let mut held: Vec<_> = snap.held.iter().map(|h| (h.key, h.owner.as_str(), h.mode, h.grant)).collect();
    held.sort();
    assert_eq!(
        held,
        [
            ("x", "A", Mode::EXCLUSIVE, a.grant()),
            ("y", "A", Mode::SHARED, a.grant()),
            ("y", "B", Mode::SHARED, b.grant())
        ]
    );
    let hx = snap.held.iter().find(|h| h.key == "x").unwrap();
    assert_eq!(hx.message.as_ref().map(|m| m.reason()), Some("writing x"));
    assert_eq!(hx.token, a.token(&"x"));
    assert_near(hx.since, a.since());

    let mut waiting: Vec<_> = snap.waiting.iter().map(|w| (w.key, w.owner.as_str(), w.mode)).collect();
    waiting.sort();
    assert_eq!(waiting, [("x", "W1", Mode::EXCLUSIVE), ("x", "W2", Mode::SHARED), ("y", "W1", Mode::EXCLUSIVE)]);
    // Per key in queue order; one arrival number per request.
    let on_x: Vec<_> = snap.waiting.iter().filter(|w| w.key == "x").collect();
    assert_eq!(on_x.iter().map(|w| w.owner.as_str()).collect::<Vec<_>>(), ["W1", "W2"]);
    assert!(on_x[0].arrival < on_x[1].arrival);
    let w1_arrivals: Vec<_> = snap.waiting.iter().filter(|w| w.owner.as_str() == "W1").map(|w| w.arrival).collect();
    assert_eq!(w1_arrivals[0], w1_arrivals[1]);
    drop((w1, w2));
    assert!(t.snapshot().waiting.is_empty());
    drop((a, b));
    assert!(t.snapshot().held.is_empty());
}

#[test]
fn blockers_names_holders_and_earlier_incompatible_waiters() {
    let t = new_table();
    let x = t.try_acquire(Request::new("X").shared("k")).unwrap();
    let y = t.try_acquire(Request::new("Y").exclusive("m")).unwrap();
    let mut w1 = t.acquire_async(Request::new("W1").exclusive("k"));
    assert!(poll_noop(&mut w1).is_pending());
    let mut w2 = t.acquire_async(Request::new("W2").shared("k").shared("m"));
    assert!(poll_noop(&mut w2).is_pending());
    let mut w3 = t.acquire_async(Request::new("W3").exclusive("k"));
    assert!(poll_noop(&mut w3).is_pending());
    assert_eq!(t.blockers(&owner("W1")), [owner("X")]);
    // X holds k compatibly with W2: not a blocker. W1 is queued ahead incompatibly; Y holds m.
    let mut b2 = t.blockers(&owner("W2"));
    b2.sort();
    assert_eq!(b2, [owner("W1"), owner("Y")]);
    let mut b3 = t.blockers(&owner("W3"));
    b3.sort();
    assert_eq!(b3, [owner("W1"), owner("W2"), owner("X")]);
    assert!(t.blockers(&owner("X")).is_empty(), "a holder that does not wait has no blockers");
    assert!(t.blockers(&owner("nobody")).is_empty());
    drop((w1, w2, w3, x, y));
}

#[test]
fn metrics_counters_and_histograms_move_as_expected() {
    let t = new_table();
    let m = t.metrics();
    assert_eq!(
        (m.grants, m.conflicts, m.waits, m.timeouts, m.cancellations, m.releases, m.owner_releases, m.forced_releases),
        (0, 0, 0, 0, 0, 0, 0, 0)
    );
    assert_eq!((m.wait_time.count(), m.hold_time.count()), (0, 0));
    assert_eq!(m.hold_time.quantile_upper_bound(0.5), None);

    let g = t.try_acquire(Request::new("A").exclusive("k")).unwrap();
    assert_eq!(t.metrics().grants, 1);
    assert!(t.try_acquire(Request::new("B").exclusive("k")).is_err());
    assert_eq!(t.metrics().conflicts, 1);
    assert!(t.acquire(Request::new("B").exclusive("k"), Duration::ZERO).is_err());
    let m = t.metrics();
    assert_eq!((m.timeouts, m.waits, m.conflicts), (1, 0, 1));
    assert!(t.acquire(Request::new("B").exclusive("k"), Duration::from_millis(5)).is_err());
    let m = t.metrics();
    assert_eq!((m.timeouts, m.waits), (2, 1));
    let mut cancelled = t.acquire_async(Request::new("C").exclusive("k"));
    assert!(poll_noop(&mut cancelled).is_pending());
    assert_eq!(t.metrics().waits, 2);
    drop(cancelled);
    assert_eq!(t.metrics().cancellations, 1);
    let mut waited = t.acquire_async(Request::new("D").exclusive("k"));
    assert!(poll_noop(&mut waited).is_pending());
    thread::sleep(Duration::from_millis(2));
    drop(g);
    let m = t.metrics();
    assert_eq!((m.releases, m.hold_time.count(), m.waits), (1, 1, 3));
    assert!(m.hold_time.quantile_upper_bound(1.0).unwrap() >= Duration::from_millis(1));
    let Poll::Ready(Ok(d)) = poll_noop(&mut waited) else { panic!("not granted") };
    let m = t.metrics();
    assert_eq!((m.grants, m.wait_time.count()), (2, 1));
    assert!(m.wait_time.quantile_upper_bound(1.0).unwrap() >= Duration::from_millis(1));
    let ticket = d.into_ticket();
    assert_eq!(t.metrics().releases, 1, "into_ticket is not a release");
    t.release(&ticket).unwrap();
    assert_eq!((t.metrics().releases, t.metrics().hold_time.count()), (2, 2));
    let _o1 = t.try_acquire(Request::new("O").shared("a")).unwrap().into_ticket();
    let _o2 = t.try_acquire(Request::new("O").shared("b")).unwrap().into_ticket();
    assert_eq!(t.release_owner(&owner("O")).len(), 2);
    let m = t.metrics();
    assert_eq!((m.owner_releases, m.releases, m.hold_time.count()), (2, 2, 4));
    let stuck = t.try_acquire(Request::new("S").exclusive("s")).unwrap().into_ticket();
    t.force_release(stuck.grant).unwrap();
    let m = t.metrics();
    assert_eq!((m.forced_releases, m.releases, m.owner_releases, m.hold_time.count()), (1, 2, 2, 5));
    assert_eq!(m.grants, 5);
    assert_eq!((m.conflicts, m.waits, m.timeouts, m.cancellations), (1, 3, 2, 1));
}

/// The metrics docs: `releases` counts "grants released by their holder (guard drop,
/// `release`)", and `force_release` says the grant's guard "then releases nothing". So dropping
/// that stale guard must not count a release (nor a hold-time sample): one grant, one release.
#[test]
fn metrics_a_stale_guard_drop_after_force_release_is_not_a_release() {
    let t = new_table();
    let stuck = t.try_acquire(Request::new("A").exclusive("k")).unwrap();
    t.force_release(stuck.grant()).unwrap();
    let m = t.metrics();
    assert_eq!((m.forced_releases, m.releases, m.hold_time.count()), (1, 0, 1));
    drop(stuck); // releases nothing: the grant is gone
    let m = t.metrics();
    assert_eq!(
        (m.releases, m.hold_time.count()),
        (0, 1),
        "dropping the guard of a force-released grant was counted as a release"
    );
}

/// `hold_time` is documented as "time from grant to release, for every released grant": one
/// sample per grant, however many keys it has and however it was released.
#[test]
fn metrics_hold_time_has_one_sample_per_released_grant() {
    let t = new_table();
    drop(t.try_acquire(Request::new("G").shared("a").shared("b").shared("c")).unwrap());
    assert_eq!(t.metrics().hold_time.count(), 1, "guard drop");
    let tk = t.try_acquire(Request::new("T").shared("a").shared("b").shared("c")).unwrap().into_ticket();
    t.release(&tk).unwrap();
    assert_eq!(t.metrics().hold_time.count(), 2, "ticket release");
    let _o = t.try_acquire(Request::new("O").shared("a").shared("b").shared("c")).unwrap().into_ticket();
    assert_eq!(t.release_owner(&owner("O")).len(), 1);
    assert_eq!(t.metrics().hold_time.count(), 3, "release_owner of one 3-key grant gave several samples");
    let f = t.try_acquire(Request::new("F").shared("a").shared("b").shared("c")).unwrap().into_ticket();
    t.force_release(f.grant).unwrap();
    assert_eq!(t.metrics().hold_time.count(), 4, "force_release of one 3-key grant gave several samples");
}

// ---------------------------------------------------------------------------------------------
// Reclamation
// ---------------------------------------------------------------------------------------------

#[test]
fn released_keys_leave_the_table_at_once_and_reclaim_gives_back_memory() {
    const KEYS: u64 = if cfg!(miri) { 200 } else { 100_000 };
    // With direct grants (no record made at all, but for keys that share a word) and without
    // (a record per key, freed or kept idle).
    for direct in [true, false] {
        let shards = if cfg!(miri) { 2 } else { 512 };
        let t = LockTable::<u64>::builder().shards(shards).direct(direct).build();
        for k in 0..KEYS {
            let mode = if k % 3 == 0 { Mode::SHARED } else { Mode::EXCLUSIVE };
            let set = t.try_acquire(Request::new("A").lock(k, mode, None).shared(k + KEYS)).unwrap();
            // key_count() latches every shard: counted on every 1,000th request (every one of
            // them made the 100,000-key run take minutes in a debug build).
            let counted = k % 1_000 == 0 || k == KEYS - 1;
            if counted {
                assert_eq!(t.key_count(), 2);
            }
            drop(set);
            if counted {
                assert_eq!(t.key_count(), 0, "key {k} stayed in the table after its release");
            }
        }
        assert_eq!(t.key_count(), 0);
        // Every shard that was used keeps its freed records for the next keys, until reclaim().
        let dropped = t.reclaim();
        assert!(direct || dropped >= 1, "no freed record was kept");
        assert_eq!(t.reclaim(), 0);
        assert_eq!(t.key_count(), 0);
        // The table still works after giving its memory back.
        let set = t.try_acquire(Request::new("A").exclusive(7)).unwrap();
        assert!(t.try_acquire(Request::new("B").shared(7)).is_err());
        drop(set);
        assert_eq!(t.key_count(), 0);
    }
}

#[test]
fn reclaim_never_moves_a_held_record() {
    // One shard, so held and freed records share one slab: a freed record before a held one
    // must stay where it is, since the guard names its record by position. (Direct grants
    // off: they make no record.)
    let t = LockTable::<u64>::builder().shards(1).direct(false).build();
    let a = t.try_acquire(Request::new("A").exclusive(1)).unwrap();
    let b = t.try_acquire(Request::new("B").exclusive(2)).unwrap();
    let c = t.try_acquire(Request::new("C").exclusive(3)).unwrap();
    drop(a);
    drop(c);
    assert_eq!(t.reclaim(), 1, "only the freed record at the end of the slab can go");
    assert_eq!(t.holders(&2)[0].grant, b.grant());
    assert!(t.try_acquire(Request::new("D").exclusive(2)).is_err());
    let e = t.try_acquire(Request::new("E").exclusive(4)).unwrap();
    drop(b);
    assert!(t.holders(&2).is_empty());
    assert_eq!(t.holders(&4)[0].grant, e.grant());
    drop(e);
    assert_eq!(t.key_count(), 0);
    assert_eq!(t.reclaim(), 2);
}

#[test]
fn random_keys_from_a_large_key_space_stay_bounded() {
    // Keys drawn at random from a key space much larger than the table: a record is freed as
    // soon as its key is released, so the table never holds more than the keys in use.
    let t = LockTable::<u64>::builder().shards(1).build();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let held = t.try_acquire(Request::new("H").shared(u64::MAX)).unwrap();
    for _ in 0..if cfg!(miri) { 300 } else { 200_000 } {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        drop(t.try_acquire(Request::new("A").exclusive(x % 20_000)).unwrap());
        assert_eq!(t.key_count(), 1);
    }
    drop(held);
    assert_eq!(t.key_count(), 0);
}

#[test]
fn a_reused_slot_starts_clean() {
    // One shard, so new keys reuse the records freed by old ones (the free list).
    let t = LockTable::<u64>::builder().shards(1).build();
    let churn = if cfg!(miri) { 60 } else { 2_000 };
    let mut kept = Vec::new();
    for k in 0..churn {
        let shared = k % 3 == 0;
        let req = if shared { Request::new("A").shared(k) } else { Request::new("A").exclusive_with(k, "busy") };
        let set = t.try_acquire(req).unwrap();
        // A fresh key on a reused slot: held by this grant alone, with its own message.
        let holders = t.holders(&k);
        assert_eq!(holders.len(), 1, "key {k}: {holders:?}");
        assert_eq!(holders[0].grant, set.grant());
        assert_eq!(holders[0].message.is_some(), !shared);
        let refused = t.try_acquire(Request::new("B").exclusive(k)).unwrap_err();
        assert_eq!(refused.conflict().unwrap().keys[0].holders.len(), 1);
        if k % 10 == 0 {
            kept.push(set.into_ticket()); // some keys stay held through the churn
        }
    }
    assert_eq!(t.key_count(), kept.len(), "only the kept keys stay in the table");
    for ticket in &kept {
        let k = ticket.locks[0].key;
        assert_eq!(t.holders(&k).len(), 1, "held key {k} lost its holder to a reuse");
        t.release(ticket).unwrap();
    }
    assert_eq!(t.key_count(), 0);
}

#[test]
fn reclaim_keeps_held_and_waited_for_keys() {
    let t = new_table();
    let ticket = t.try_acquire(Request::new("A").exclusive("held")).unwrap().into_ticket();
    drop(t.try_acquire(Request::new("B").exclusive("idle")).unwrap());
    let mut waiter = t.acquire_async(Request::new("W").exclusive("held").exclusive("waited"));
    assert!(poll_noop(&mut waiter).is_pending());
    let unpolled = t.acquire_async(Request::new("U").exclusive("asked"));
    // The idle key went at its release; an unpolled future has not touched the table yet.
    assert_eq!(t.key_count(), 2);
    t.reclaim();
    assert_eq!(t.key_count(), 2);
    // Everything still works on the kept keys.
    assert!(!is_free(&t, "held"));
    assert_eq!(waiting_owners(&t).len(), 2);
    t.release(&ticket).unwrap();
    let Poll::Ready(Ok(w)) = poll_noop(&mut waiter) else { panic!("the waiter lost its place") };
    drop((w, unpolled));
    assert_eq!(t.key_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Keys, modes, serde, the backend trait, re-entrancy
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
enum Group {
    Pool,
    Domain,
    Vm,
}

#[test]
fn typed_group_id_keys_work() {
    let t = new_table_of::<(Group, u64)>();
    let a = t
        .try_acquire(
            Request::new("Activate").shared((Group::Pool, 7)).exclusive_with((Group::Domain, 3), "being activated"),
        )
        .unwrap();
    let err = t.try_acquire(Request::new("Reconstruct").exclusive((Group::Pool, 7))).unwrap_err();
    let c = err.conflict().unwrap();
    assert_eq!(c.keys[0].key, (Group::Pool, 7));
    assert!(err.to_string().contains("(Pool, 7)"), "{err}");
    // Same id in another group, or another id in the same group, is another key.
    let b = t.try_acquire(Request::new("B").exclusive((Group::Vm, 7)).exclusive((Group::Domain, 4))).unwrap();
    assert!(t.try_acquire(Request::new("C").shared((Group::Domain, 3))).is_err());
    let shared = t.try_acquire(Request::new("C").shared((Group::Pool, 7))).unwrap();
    assert_eq!(t.holders(&(Group::Pool, 7)).len(), 2);
    drop((a, b, shared));
    assert!(t.try_acquire(Request::new("Reconstruct").exclusive((Group::Pool, 7))).is_ok());
}

#[test]
fn multi_granularity_modes_work() {
    let t = LockTable::<&str>::with_modes(ModeTable::multi_granularity());
    assert_eq!(t.modes().len(), 5);
    let ix1 = t.try_acquire(Request::new("IX1").lock("db", Mode::INTENTION_EXCLUSIVE, None)).unwrap();
    let ix2 = t.try_acquire(Request::new("IX2").lock("db", Mode::INTENTION_EXCLUSIVE, None)).unwrap();
    let is = t.try_acquire(Request::new("IS").lock("db", Mode::INTENTION_SHARED, None)).unwrap();
    assert!(ix1.token(&"db").is_none(), "IX is not fenced");
    for (name, mode) in [("S", Mode::SHARED), ("SIX", Mode::SHARED_INTENTION_EXCLUSIVE), ("X", Mode::EXCLUSIVE)] {
        let err = t.try_acquire(Request::new(name).lock("db", mode, None)).unwrap_err();
        let mut blockers: Vec<_> = err.conflict().unwrap().blockers().iter().map(|o| o.as_str().to_owned()).collect();
        blockers.sort();
        let expected: &[&str] = if mode == Mode::EXCLUSIVE { &["IS", "IX1", "IX2"] } else { &["IX1", "IX2"] };
        assert_eq!(blockers, expected, "{name}");
    }
    drop((ix1, ix2));
    // S goes with IS; then IX does not; SIX does not go with S.
    let s = t.try_acquire(Request::new("S").shared("db")).unwrap();
    assert!(t.try_acquire(Request::new("IX").lock("db", Mode::INTENTION_EXCLUSIVE, None)).is_err());
    assert!(t.try_acquire(Request::new("SIX").lock("db", Mode::SHARED_INTENTION_EXCLUSIVE, None)).is_err());
    drop((s, is));
    // IX and S on one key collapse to SIX, which is fenced, and admits only IS beside it.
    let six = t.try_acquire(Request::new("A").lock("tbl", Mode::INTENTION_EXCLUSIVE, None).shared("tbl")).unwrap();
    let locks: Vec<_> = six.locks().map(|(k, m, tok)| (*k, m, tok.is_some())).collect();
    assert_eq!(locks, [("tbl", Mode::SHARED_INTENTION_EXCLUSIVE, true)]);
    assert_eq!(t.holders(&"tbl")[0].mode_name, "shared+intention-exclusive");
    assert!(t.try_acquire(Request::new("B").lock("tbl", Mode::INTENTION_SHARED, None)).is_ok());
    assert!(t.try_acquire(Request::new("B").lock("tbl", Mode::INTENTION_EXCLUSIVE, None)).is_err());
    assert!(t.try_acquire(Request::new("B").shared("tbl")).is_err());
    let first = six.token(&"tbl").unwrap();
    drop(six);
    let six = t.try_acquire(Request::new("C").lock("tbl", Mode::SHARED_INTENTION_EXCLUSIVE, None)).unwrap();
    assert!(six.token(&"tbl").unwrap() > first);
}

#[test]
fn tickets_round_trip_through_serde_json() {
    let t = new_table_of::<(Group, u64)>();
    let ticket =
        t.try_acquire(Request::new("cmd-1").exclusive((Group::Vm, 42)).shared((Group::Pool, 7))).unwrap().into_ticket();
    let json = serde_json::to_string(&ticket).unwrap();
    for field in ["\"table\"", "\"grant\"", "\"owner\":\"cmd-1\"", "\"locks\"", "\"token\""] {
        assert!(json.contains(field), "{field} missing from {json}");
    }
    let back: Ticket<(Group, u64)> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, ticket);
    assert!(back.locks.iter().any(|l| l.token.is_some()));
    // The deserialized ticket releases the grant; the original is then stale.
    t.release(&back).unwrap();
    assert_eq!(t.release(&ticket), Err(ReleaseError::UnknownGrant(ticket.grant)));
    // String keys too, and the ids themselves.
    let t2 = new_table_of::<String>();
    let tk = t2.try_acquire(Request::new("c").exclusive("k".to_owned())).unwrap().into_ticket();
    let back: Ticket<String> = serde_json::from_str(&serde_json::to_string(&tk).unwrap()).unwrap();
    assert_eq!(back, tk);
    let id: TableId = serde_json::from_str(&serde_json::to_string(&t2.id()).unwrap()).unwrap();
    assert_eq!(id, t2.id());
    t2.release(&back).unwrap();
}

fn exercise_backend<B: LockBackend<&'static str> + ?Sized>(b: &B) {
    let t1 = b.try_lock(Request::new("A").exclusive("k").shared("s")).unwrap();
    assert_eq!(t1.locks.len(), 2);
    assert!(matches!(b.try_lock(Request::new("B").exclusive("k")), Err(AcquireError::Conflict(_))));
    assert!(matches!(b.try_lock(Request::new("B")), Err(AcquireError::Request(RequestError::Empty))));
    assert!(matches!(
        b.lock(Request::new("B").exclusive("k"), Duration::from_millis(10)),
        Err(AcquireError::Timeout(_))
    ));
    let t2 = b.lock(Request::new("B").shared("s"), Duration::from_millis(10)).unwrap();
    assert_eq!(b.snapshot().unwrap().held.len(), 3);
    assert!(b.snapshot().unwrap().waiting.is_empty());
    b.unlock(&t1).unwrap();
    assert_eq!(b.unlock(&t1), Err(ReleaseError::UnknownGrant(t1.grant)));
    let t3 = b.lock(Request::new("C").exclusive("k"), Duration::from_millis(10)).unwrap();
    let freed = b.unlock_owner(&owner("B")).unwrap();
    assert_eq!(freed.len(), 1);
    assert_eq!(freed[0].grant, t2.grant);
    assert_eq!(b.snapshot().unwrap().held.len(), 1);
    assert_eq!(b.unlock_owner(&owner("C")).unwrap().iter().map(|t| t.grant).collect::<Vec<_>>(), [t3.grant]);
    assert!(b.snapshot().unwrap().held.is_empty());
}

#[test]
fn lock_table_implements_lock_backend() {
    let t = new_table();
    exercise_backend(&t);
    assert_eq!(t.metrics().grants, 3);
    let boxed: Box<dyn LockBackend<&'static str>> = Box::new(new_table());
    exercise_backend(&*boxed);
    // The backend error reads well and is never produced by the in-memory table.
    let e = lockcore::BackendError::new("lock", "connection refused");
    assert_eq!(
        AcquireError::<u8>::Backend(e.clone()).to_string(),
        "the lock backend could not lock: connection refused"
    );
    assert_eq!(ReleaseError::Backend(e.clone()).to_string(), e.to_string());
    assert!(AcquireError::<u8>::Backend(e).conflict().is_none());
}

#[test]
fn the_table_is_not_reentrant() {
    let t = new_table();
    let g = t.try_acquire(Request::new("X").exclusive("k")).unwrap();
    // The same owner asking again for an exclusive key it holds conflicts with itself.
    let err = t.try_acquire(Request::new("X").exclusive("k")).unwrap_err();
    let c = err.conflict().unwrap();
    assert_eq!(c.keys[0].holders.len(), 1);
    assert_eq!((c.keys[0].holders[0].owner.as_str(), c.keys[0].holders[0].grant), ("X", g.grant()));
    assert_eq!(c.blockers(), [owner("X")]);
    assert!(t.try_acquire(Request::new("X").shared("k")).is_err());
    assert!(matches!(
        t.acquire(Request::new("X").exclusive("k"), Duration::from_millis(10)),
        Err(AcquireError::Timeout(_))
    ));
    drop(g);
    // Shared twice: two holders, two grants, each released on its own.
    let s1 = t.try_acquire(Request::new("X").shared("k")).unwrap();
    let s2 = t.try_acquire(Request::new("X").shared("k")).unwrap();
    assert_ne!(s1.grant(), s2.grant());
    let h = t.holders(&"k");
    assert_eq!(h.len(), 2);
    assert!(h.iter().all(|h| h.owner == owner("X")));
    // No upgrade: the owner's own readers block its writer.
    let err = t.try_acquire(Request::new("X").exclusive("k")).unwrap_err();
    assert_eq!(err.conflict().unwrap().keys[0].holders.iter().filter(|h| h.blocking).count(), 2);
    drop(s1);
    assert_eq!(t.holders(&"k").len(), 1);
    assert!(t.try_acquire(Request::new("X").exclusive("k")).is_err(), "one of the two shared grants is still held");
    drop(s2);
    assert!(t.try_acquire(Request::new("X").exclusive("k")).is_ok());
}

/// Two reports of one grant's time agree to within the drift of the grant clock (the CPU's
/// counter) against the standard clock: microseconds here.
fn assert_near(a: Instant, b: Instant) {
    let gap = if a > b { a - b } else { b - a };
    assert!(gap < Duration::from_millis(5), "{a:?} and {b:?} are {gap:?} apart");
}

#[test]
fn table_accessors_and_builder() {
    let t = LockTable::<&str>::builder().shards(3).modes(ModeTable::multi_granularity()).build();
    assert_eq!(t.modes(), &ModeTable::multi_granularity());
    assert!(format!("{t:?}").contains("LockTable"));
    assert_ne!(t.id(), Table::default().id());
    assert!(t.holders(&"nothing").is_empty());
    let set = t.try_acquire(Request::new("A").exclusive("k")).unwrap();
    assert!(!set.is_empty());
    assert!(set.since() <= Instant::now());
    assert!(format!("{set:?}").contains("\"k\""));
    assert_eq!(t.key_count(), 1);
    set.release();
    assert!(t.try_acquire(Request::new("B").exclusive("k")).is_ok());
}

#[test]
fn a_blocking_waiter_and_an_async_waiter_share_one_queue() {
    // Mixed entry points on one key, under real threads, with every wait bounded.
    let t = new_table();
    let x = t.try_acquire(Request::new("X").exclusive("k")).unwrap();
    thread::scope(|s| {
        let sync = s.spawn(|| t.acquire(Request::new("S").exclusive("k"), GENEROUS).map(|set| set.into_ticket()));
        wait_until("S is queued", || waiting_owners(&t) == ["S"]);
        let asy = s.spawn(|| {
            block_on_timeout(t.acquire_async(Request::new("A").exclusive("k")), GENEROUS)
                .map(|r| r.map(|set| set.into_ticket()))
        });
        wait_until("A is queued", || waiting_owners(&t) == ["S", "A"]);
        drop(x);
        let ts = sync.join().unwrap().expect("S did not get the key");
        // A is behind S: it must not get the key while S holds it.
        thread::sleep(Duration::from_millis(20));
        assert_eq!(waiting_owners(&t), ["A"]);
        t.release(&ts).unwrap();
        let ta = asy.join().unwrap().expect("A was not woken").expect("A did not get the key");
        assert!(ta.locks[0].token > ts.locks[0].token);
        t.release(&ta).unwrap();
    });
    assert!(t.snapshot().held.is_empty() && t.snapshot().waiting.is_empty());
}
