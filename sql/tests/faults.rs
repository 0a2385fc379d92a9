//! Fault tests: a connection cut in the middle of an acquisition, and a lease that lapses while
//! its holder still works (its fencing token is then refused).

mod common;

use common::{Fenced, Raw};
use lockcore::Request;
use lockcore_sql::{Options, SqlError, SqlLocks};
use std::time::{Duration, Instant};

/// The backend's transaction has taken `cut-a` and waits for `cut-b`'s row, which a plain
/// transaction keeps locked; the backend's connection is then killed by the database. Nothing
/// of the request may stay held, and the backend recovers on a new connection.
fn connection_cut(db: &str) {
    let prefix = common::fresh(db, "cut");
    let locks = common::connect(db, &prefix, "server-a");
    let mut blocker = Raw::open(db);
    blocker.exec(&format!("INSERT INTO {prefix}locks (name) VALUES ('cut-b')"));
    blocker.exec("BEGIN");
    blocker.exec(&format!("UPDATE {prefix}locks SET version = version + 1 WHERE name = 'cut-b'"));
    let req = || Request::new("cmd").exclusive("cut-a".to_string()).exclusive("cut-b".to_string());
    std::thread::scope(|s| {
        let attempt = s.spawn(|| locks.try_acquire(req()));
        // Find the backend's connection, blocked on cut-b's row, and kill it.
        let mut admin = Raw::open(db);
        let find = match db {
            "pg" => format!(
                "SELECT pid::bigint FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%{prefix}locks%'"
            ),
            _ => format!(
                "SELECT id FROM information_schema.processlist WHERE info LIKE 'INSERT INTO {prefix}locks%' AND id <> CONNECTION_ID()"
            ),
        };
        let start = Instant::now();
        let victim = loop {
            if let Some(id) = admin.ints(&find).first() {
                break *id;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "the acquisition never blocked");
            std::thread::sleep(Duration::from_millis(20));
        };
        // The first key's holder row exists, uncommitted, in the backend's transaction.
        match db {
            "pg" => admin.exec(&format!("SELECT pg_terminate_backend({victim})::int")),
            _ => admin.exec(&format!("KILL {victim}")),
        };
        let r = attempt.join().unwrap();
        assert!(matches!(r, Err(SqlError::Database { transient: true, .. })), "{r:?}");
    });
    blocker.exec("ROLLBACK");
    let mut check = Raw::open(db);
    assert_eq!(check.ints(&format!("SELECT COUNT(*) FROM {prefix}holders")), [0], "a half-taken request stayed");
    assert!(locks.snapshot().unwrap().held.is_empty());
    // A new connection replaces the killed one.
    let t = locks.try_acquire(req()).unwrap();
    locks.release(&t).unwrap();
}

#[test]
fn connection_cut_postgres() {
    connection_cut("pg");
}

#[test]
fn connection_cut_mariadb() {
    connection_cut("my");
}

/// A holder without heartbeat keeps working past its lease: another server then takes the key
/// with a larger token, and the resource refuses the old holder's write.
fn lapsed_lease(db: &str) {
    let prefix = common::fresh(db, "lapse");
    let url = common::url(db);
    let lease = Duration::from_millis(600);
    let slow = SqlLocks::connect(&url, Options::new("slow").prefix(&prefix).lease(lease).heartbeat(None)).unwrap();
    let fast = common::connect(db, &prefix, "fast");
    let mut raw = Raw::open(db);
    let res = Fenced::create(&mut raw, &format!("{prefix}res"));
    let req = |o: &str| Request::new(o).exclusive("job".to_string());

    let t1 = slow.try_acquire(req("slow-cmd")).unwrap();
    let tok1 = t1.locks[0].token.unwrap().0;
    assert!(res.write(&mut raw, "job", 1, tok1));
    // Not before the lease: still held.
    assert!(fast.try_acquire(req("fast-cmd")).is_err());
    std::thread::sleep(lease + Duration::from_millis(200));
    // Lapsed: the next acquirer cleans the expired row and gets a larger token.
    let t2 = fast.try_acquire(req("fast-cmd")).unwrap();
    let tok2 = t2.locks[0].token.unwrap().0;
    assert!(tok2 > tok1);
    assert!(res.write(&mut raw, "job", 2, tok2));
    // The slow holder, unaware, writes with its old token: refused.
    assert!(!res.write(&mut raw, "job", 99, tok1), "the resource accepted a lapsed token");
    assert_eq!(res.read(&mut raw, "job"), 2);
    // Its release says what happened, and frees nothing of the new holder's.
    let err = slow.release(&t1).unwrap_err();
    assert!(
        matches!(err, SqlError::Release(lockcore::ReleaseError::UnknownGrant(_)) | SqlError::LeaseExpired(_)),
        "{err:?}"
    );
    assert_eq!(fast.snapshot().unwrap().held.len(), 1);
    fast.release(&t2).unwrap();
}

#[test]
fn lapsed_lease_postgres() {
    lapsed_lease("pg");
}

#[test]
fn lapsed_lease_mariadb() {
    lapsed_lease("my");
}

/// A lapsed lease reported at release when nobody cleaned it yet; and renewal keeps a grant
/// alive past its lease.
fn lease_expired_and_renewal(db: &str) {
    let prefix = common::fresh(db, "renew");
    let url = common::url(db);
    let lease = Duration::from_millis(400);
    let manual = SqlLocks::connect(&url, Options::new("m").prefix(&prefix).lease(lease).heartbeat(None)).unwrap();
    let t = manual.try_acquire(Request::new("c").exclusive("r".to_string())).unwrap();
    std::thread::sleep(lease + Duration::from_millis(150));
    assert!(matches!(manual.release(&t), Err(SqlError::LeaseExpired(g)) if g == t.grant));
    let t = manual.try_acquire(Request::new("c").exclusive("r".to_string())).unwrap();
    for _ in 0..4 {
        std::thread::sleep(lease / 2);
        assert_eq!(manual.renew().unwrap(), 1);
    }
    manual.release(&t).unwrap();
}

#[test]
fn lease_expired_and_renewal_postgres() {
    lease_expired_and_renewal("pg");
}

#[test]
fn lease_expired_and_renewal_mariadb() {
    lease_expired_and_renewal("my");
}

/// A pooled connection killed while idle (a database restart, an idle timeout) is replaced on
/// the next request, which succeeds.
fn idle_connection_killed(db: &str) {
    let prefix = common::fresh(db, "idle");
    let locks = common::connect(db, &prefix, "server-a");
    let t = locks.try_acquire(Request::new("c").exclusive("i".to_string())).unwrap();
    locks.release(&t).unwrap();
    let mut admin = Raw::open(db);
    let ids = locks.connection_ids().unwrap();
    assert!(!ids.is_empty());
    for id in ids {
        match db {
            "pg" => admin.exec(&format!("SELECT pg_terminate_backend({id})::int")),
            _ => admin.exec(&format!("KILL {id}")),
        };
    }
    std::thread::sleep(Duration::from_millis(100));
    let t = locks.try_acquire(Request::new("c").exclusive("i".to_string())).unwrap();
    locks.release(&t).unwrap();
    // The same for a release and a snapshot.
    let t = locks.try_acquire(Request::new("c").exclusive("i".to_string())).unwrap();
    for id in locks.connection_ids().unwrap() {
        match db {
            "pg" => admin.exec(&format!("SELECT pg_terminate_backend({id})::int")),
            _ => admin.exec(&format!("KILL {id}")),
        };
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(locks.snapshot().unwrap().held.len(), 1);
    locks.release(&t).unwrap();
}

#[test]
fn idle_connection_killed_postgres() {
    idle_connection_killed("pg");
}

#[test]
fn idle_connection_killed_mariadb() {
    idle_connection_killed("my");
}

/// A deadlock between the backend's transaction and another one: whichever the database picks
/// as its victim, the request ends granted (the backend retries its lost transaction), never
/// with a database error or a panic.
fn deadlock(db: &str) {
    let prefix = common::fresh(db, "deadlock");
    let locks = common::connect(db, &prefix, "server-a");
    let mut other = Raw::open(db);
    other.exec(&format!("INSERT INTO {prefix}locks (name) VALUES ('dl-a'), ('dl-b')"));
    other.exec("BEGIN");
    other.exec(&format!("UPDATE {prefix}locks SET version = version + 1 WHERE name = 'dl-b'"));
    let r = std::thread::scope(|s| {
        let attempt =
            s.spawn(|| locks.try_acquire(Request::new("cmd").exclusive("dl-a".into()).exclusive("dl-b".into())));
        let mut admin = Raw::open(db);
        let blocked = match db {
            "pg" => format!(
                "SELECT pid::bigint FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%{prefix}locks%'"
            ),
            _ => format!(
                "SELECT id FROM information_schema.processlist WHERE info LIKE 'INSERT INTO {prefix}locks%' AND id <> CONNECTION_ID()"
            ),
        };
        let start = Instant::now();
        while admin.ints(&blocked).is_empty() {
            assert!(start.elapsed() < Duration::from_secs(10), "the acquisition never blocked");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The backend holds dl-a and waits for dl-b; take dl-a: a cycle.
        let mine = other.try_exec(&format!("UPDATE {prefix}locks SET version = version + 1 WHERE name = 'dl-a'"));
        std::thread::sleep(Duration::from_millis(200));
        other.exec("ROLLBACK");
        (attempt.join().unwrap(), mine)
    });
    let (r, mine) = r;
    eprintln!("{db}: the other transaction's statement: {mine:?}; the request: {:?}", r.as_ref().map(|_| "granted"));
    let t = r.unwrap_or_else(|e| panic!("the deadlock ended as {e:?} (the other transaction: {mine:?})"));
    locks.release(&t).unwrap();
}

#[test]
fn deadlock_postgres() {
    deadlock("pg");
}

#[test]
fn deadlock_mariadb() {
    deadlock("my");
}
