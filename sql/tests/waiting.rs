//! Waiting: on PostgreSQL a release's NOTIFY wakes a waiter long before its backoff would; on
//! both databases the backoff alone still grants within its bound.

mod common;

use lockcore::Request;
use lockcore_sql::{Options, SqlLocks};
use std::time::{Duration, Instant};

/// Releases after 300 ms; returns how long after the release the waiter was granted.
fn granted_after_release(db: &str, test: &str, backoff: Duration, listen: bool) -> Duration {
    let prefix = common::fresh(db, test);
    let holder = common::connect(db, &prefix, "holder");
    let opts = Options::new("waiter").prefix(&prefix).backoff(backoff, backoff).listen(listen);
    let waiter = SqlLocks::connect(&common::url(db), opts).unwrap();
    let t = holder.try_acquire(Request::new("h").exclusive("w".to_string())).unwrap();
    std::thread::scope(|s| {
        let w = s.spawn(|| {
            let t = waiter.acquire(Request::new("w").exclusive("w".to_string()), Duration::from_secs(20)).unwrap();
            let at = Instant::now();
            waiter.release(&t).unwrap();
            at
        });
        std::thread::sleep(Duration::from_millis(300));
        let released = Instant::now();
        holder.release(&t).unwrap();
        w.join().unwrap().duration_since(released)
    })
}

#[test]
fn notify_wakes_a_waiter_before_its_backoff_postgres() {
    // Backoff of 4 s (jittered to 2-6 s): only the notification can grant within 1 s.
    let after = granted_after_release("pg", "notify", Duration::from_secs(4), true);
    assert!(after < Duration::from_secs(1), "granted {after:?} after the release: the NOTIFY did not wake it");
}

#[test]
fn backoff_alone_grants_within_its_bound_mariadb() {
    let after = granted_after_release("my", "backoff", Duration::from_millis(100), true);
    assert!(after < Duration::from_millis(1000), "granted {after:?} after the release");
}

#[test]
fn backoff_alone_grants_within_its_bound_postgres() {
    let after = granted_after_release("pg", "backoff", Duration::from_millis(100), false);
    assert!(after < Duration::from_millis(1000), "granted {after:?} after the release");
}
