//! The conformance suite: written once against `LockBackend<String>`, run on the in-memory
//! table and on both databases (tests/conformance.rs). `a` and `b` are two servers on one lock
//! table (for the in-memory table, the same table twice); `qa`/`qb` give the name a conflict
//! shows for an owner of each.

use lockcore::{AcquireError, LockBackend, LockMessage, Mode, Owner, ReleaseError, Request, RequestError, Ticket};
use std::time::{Duration, Instant};

pub struct Side<'a, B> {
    pub locks: &'a B,
    pub qualify: &'a (dyn Fn(&str) -> String + Sync),
}

fn k(s: &str) -> String {
    s.to_string()
}

fn held_by<B: LockBackend<String>>(b: &B, key: &str) -> Vec<String> {
    b.snapshot().unwrap().held.iter().filter(|h| h.key == key).map(|h| h.owner.as_str().to_string()).collect()
}

fn conflict_of(e: AcquireError<String>) -> Box<lockcore::Conflict<String>> {
    match e {
        AcquireError::Conflict(c) | AcquireError::Timeout(c) => c,
        other => panic!("expected a conflict, got {other}"),
    }
}

pub fn all_or_nothing<B: LockBackend<String>>(a: Side<B>, b: Side<B>) {
    let tb = b.locks.try_lock(Request::new("holder").exclusive(k("k2"))).unwrap();
    let err =
        a.locks.try_lock(Request::new("asker").exclusive(k("k1")).exclusive(k("k2")).shared(k("k3"))).unwrap_err();
    let c = conflict_of(err);
    assert_eq!(c.keys.len(), 1);
    assert_eq!(c.keys[0].key, "k2");
    assert_eq!(c.requested, 3);
    // Nothing of the refused request is held.
    let snap = a.locks.snapshot().unwrap();
    assert!(snap.held.iter().all(|h| h.key == "k2"), "a refused request left {:?}", snap.held);
    let t = a.locks.try_lock(Request::new("asker").exclusive(k("k1")).shared(k("k3"))).unwrap();
    a.locks.unlock(&t).unwrap();
    b.locks.unlock(&tb).unwrap();
}

pub fn shared_counts<B: LockBackend<String>>(a: Side<B>, b: Side<B>) {
    let t1 = a.locks.try_lock(Request::new("r1").shared(k("s"))).unwrap();
    let t2 = b.locks.try_lock(Request::new("r2").shared(k("s"))).unwrap();
    let t3 = a.locks.try_lock(Request::new("r3").shared(k("s"))).unwrap();
    assert_eq!(held_by(a.locks, "s").len(), 3);
    let c = conflict_of(b.locks.try_lock(Request::new("w").exclusive(k("s"))).unwrap_err());
    let mut names: Vec<String> = c.keys[0].holders.iter().map(|h| h.owner.as_str().to_string()).collect();
    names.sort();
    let mut want = vec![(a.qualify)("r1"), (b.qualify)("r2"), (a.qualify)("r3")];
    want.sort();
    assert_eq!(names, want);
    assert!(c.keys[0].holders.iter().all(|h| h.blocking && h.mode == Mode::SHARED));
    a.locks.unlock(&t1).unwrap();
    b.locks.unlock(&t2).unwrap();
    // One reader left: still refused; none left: granted.
    assert!(b.locks.try_lock(Request::new("w").exclusive(k("s"))).is_err());
    a.locks.unlock(&t3).unwrap();
    let w = b.locks.try_lock(Request::new("w").exclusive(k("s"))).unwrap();
    b.locks.unlock(&w).unwrap();
}

pub fn exclusive_excludes<B: LockBackend<String>>(a: Side<B>, b: Side<B>) {
    let t = a.locks.try_lock(Request::new("x").exclusive(k("e"))).unwrap();
    assert!(b.locks.try_lock(Request::new("y").exclusive(k("e"))).is_err());
    assert!(b.locks.try_lock(Request::new("y").shared(k("e"))).is_err());
    assert!(a.locks.try_lock(Request::new("x2").shared(k("e"))).is_err());
    a.locks.unlock(&t).unwrap();
    let t = b.locks.try_lock(Request::new("y").shared(k("e"))).unwrap();
    b.locks.unlock(&t).unwrap();
}

pub fn conflict_names_every_key_and_holder<B: LockBackend<String>>(a: Side<B>, b: Side<B>) {
    let msg = LockMessage::new("VM is being created").with("vm", "web-1");
    let t1 = b.locks.try_lock(Request::new("AddVm-7").exclusive_with(k("vm-42"), msg)).unwrap();
    let t2 = b.locks.try_lock(Request::new("Copy-3").shared(k("disk-1"))).unwrap();
    let err = a
        .locks
        .try_lock(Request::new("Remove-9").exclusive(k("vm-42")).exclusive(k("disk-1")).exclusive(k("free")))
        .unwrap_err();
    let text = err.to_string();
    let c = conflict_of(err);
    assert_eq!(c.keys.len(), 2, "{text}");
    assert!(text.starts_with("Remove-9 could not lock 2 of its 3 keys:"), "{text}");
    let want = format!("\"vm-42\" (exclusive asked) is held exclusive by {} for ", (b.qualify)("AddVm-7"));
    assert!(text.contains(&want), "{text}\nwants {want}");
    assert!(text.contains(": VM is being created (vm: web-1)"), "{text}");
    let want = format!("\"disk-1\" (exclusive asked) is held shared by {} for ", (b.qualify)("Copy-3"));
    assert!(text.contains(&want), "{text}\nwants {want}");
    let blockers: Vec<String> = c.blockers().iter().map(|o| o.as_str().to_string()).collect();
    assert!(blockers.contains(&(b.qualify)("AddVm-7")) && blockers.contains(&(b.qualify)("Copy-3")));
    assert!(held_by(a.locks, "free").is_empty());
    b.locks.unlock(&t1).unwrap();
    b.locks.unlock(&t2).unwrap();
}

pub fn release_by_ticket<B: LockBackend<String>>(a: Side<B>, b: Side<B>) {
    let t = a.locks.try_lock(Request::new("c").exclusive(k("r1")).exclusive(k("r2"))).unwrap();
    assert_eq!(t.locks.len(), 2);
    // Another server may release a ticket it was handed.
    b.locks.unlock(&t).unwrap();
    assert!(held_by(a.locks, "r1").is_empty() && held_by(a.locks, "r2").is_empty());
    assert_eq!(a.locks.unlock(&t), Err(ReleaseError::UnknownGrant(t.grant)));
}

pub fn foreign_and_edited_tickets<B: LockBackend<String>>(a: Side<B>, _b: Side<B>) {
    let t = a.locks.try_lock(Request::new("c").exclusive(k("f1")).shared(k("f2"))).unwrap();
    let mut foreign = t.clone();
    foreign.table.0 ^= 0x5a5a;
    assert!(matches!(a.locks.unlock(&foreign), Err(ReleaseError::ForeignTable { .. })));
    let mut unknown = t.clone();
    unknown.grant.0 ^= 0x1234_5678;
    assert_eq!(a.locks.unlock(&unknown), Err(ReleaseError::UnknownGrant(unknown.grant)));
    let mut edited = t.clone();
    // Locks are listed in the backend's own order: find the shared one by its key.
    let shared = edited.locks.iter_mut().find(|l| l.key == k("f2")).expect("f2 is in the ticket");
    shared.mode = Mode::EXCLUSIVE;
    assert_eq!(a.locks.unlock(&edited), Err(ReleaseError::Mismatch(t.grant)));
    let mut wrong_owner = t.clone();
    wrong_owner.owner = Owner::new("someone-else");
    assert_eq!(a.locks.unlock(&wrong_owner), Err(ReleaseError::Mismatch(t.grant)));
    // Nothing was released by the refused tickets.
    assert_eq!(held_by(a.locks, "f1").len(), 1);
    a.locks.unlock(&t).unwrap();
}

pub fn unlock_owner_frees_exactly_that_owner<B: LockBackend<String>>(a: Side<B>, _b: Side<B>) {
    let _t1 = a.locks.try_lock(Request::new("o1").exclusive(k("u1"))).unwrap();
    let _t2 = a.locks.try_lock(Request::new("o1").shared(k("u2")).shared(k("u3"))).unwrap();
    let t3 = a.locks.try_lock(Request::new("o2").shared(k("u2"))).unwrap();
    let mut freed: Vec<Ticket<String>> = a.locks.unlock_owner(&Owner::new("o1")).unwrap();
    freed.sort_by_key(|t| t.locks.len());
    assert_eq!(freed.len(), 2);
    assert_eq!(freed[0].locks[0].key, "u1");
    assert_eq!(freed[1].locks.len(), 2);
    assert!(freed.iter().all(|t| t.owner.as_str() == "o1"));
    let snap = a.locks.snapshot().unwrap();
    let left: Vec<(&str, &str)> =
        snap.held.iter().filter(|h| h.key.starts_with('u')).map(|h| (h.key.as_str(), h.owner.as_str())).collect();
    assert_eq!(left, [("u2", (a.qualify)("o2").as_str())]);
    assert!(a.locks.unlock_owner(&Owner::new("o1")).unwrap().is_empty());
    a.locks.unlock(&t3).unwrap();
}

pub fn snapshot_shows_holders<B: LockBackend<String>>(a: Side<B>, b: Side<B>) {
    let t1 = a.locks.try_lock(Request::new("p").exclusive_with(k("n1"), "being moved")).unwrap();
    let t2 = b.locks.try_lock(Request::new("q").shared(k("n2"))).unwrap();
    let snap = a.locks.snapshot().unwrap();
    let mut held: Vec<_> = snap.held.iter().filter(|h| h.key.starts_with('n')).collect();
    held.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(held.len(), 2);
    assert_eq!(held[0].owner.as_str(), (a.qualify)("p"));
    assert_eq!(held[0].mode, Mode::EXCLUSIVE);
    assert_eq!(held[0].message.as_ref().map(|m| m.to_string()).as_deref(), Some("being moved"));
    assert_eq!(held[0].token, t1.locks[0].token);
    assert!(held[0].token.is_some());
    assert_eq!(held[0].grant, t1.grant);
    assert_eq!(held[1].owner.as_str(), (b.qualify)("q"));
    assert_eq!(held[1].mode, Mode::SHARED);
    assert!(held[1].token.is_none());
    assert!(held[0].since.elapsed() < Duration::from_secs(30));
    a.locks.unlock(&t1).unwrap();
    b.locks.unlock(&t2).unwrap();
    assert!(a.locks.snapshot().unwrap().held.iter().all(|h| !h.key.starts_with('n')));
}

pub fn timeout_leaves_nothing_held<B: LockBackend<String>>(a: Side<B>, b: Side<B>) {
    let tb = b.locks.try_lock(Request::new("holder").exclusive(k("t2"))).unwrap();
    let start = Instant::now();
    let err = a.locks.lock(Request::new("waiter").exclusive(k("t1")).exclusive(k("t2")), Duration::from_millis(150));
    let elapsed = start.elapsed();
    let Err(AcquireError::Timeout(c)) = err else { panic!("expected a timeout, got {err:?}") };
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(c.keys.len(), 1);
    assert!(held_by(a.locks, "t1").is_empty());
    b.locks.unlock(&tb).unwrap();
    let t = a.locks.lock(Request::new("waiter").exclusive(k("t1")).exclusive(k("t2")), Duration::from_secs(1)).unwrap();
    a.locks.unlock(&t).unwrap();
}

pub fn waiter_gets_the_lock_when_released<B: LockBackend<String> + Sync>(a: Side<B>, b: Side<B>) {
    let tb = b.locks.try_lock(Request::new("holder").exclusive(k("w"))).unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let start = Instant::now();
            let t = a.locks.lock(Request::new("waiter").exclusive(k("w")), Duration::from_secs(10)).unwrap();
            (start.elapsed(), t)
        });
        std::thread::sleep(Duration::from_millis(100));
        b.locks.unlock(&tb).unwrap();
        let (waited, t) = waiter.join().unwrap();
        assert!(waited >= Duration::from_millis(90), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "woken late: {waited:?}");
        a.locks.unlock(&t).unwrap();
    });
}

pub fn fencing_tokens_increase_per_key<B: LockBackend<String>>(a: Side<B>, b: Side<B>) {
    let mut last = 0;
    for i in 0..6 {
        let side = if i % 2 == 0 { &a } else { &b };
        let t = side.locks.try_lock(Request::new("f").exclusive(k("tok")).shared(k("other"))).unwrap();
        let tok = t.locks.iter().find(|l| l.key == "tok").and_then(|l| l.token).unwrap().0;
        assert!(tok > last, "token {tok} after {last}");
        last = tok;
        assert!(t.locks.iter().find(|l| l.key == "other").unwrap().token.is_none());
        side.locks.unlock(&t).unwrap();
    }
}

pub fn request_errors_and_duplicates<B: LockBackend<String>>(a: Side<B>, _b: Side<B>) {
    assert!(matches!(a.locks.try_lock(Request::new("e")), Err(AcquireError::Request(RequestError::Empty))));
    let t = a.locks.try_lock(Request::new("d").shared(k("dup")).exclusive(k("dup"))).unwrap();
    assert_eq!(t.locks.len(), 1);
    assert_eq!(t.locks[0].mode, Mode::EXCLUSIVE);
    a.locks.unlock(&t).unwrap();
}
