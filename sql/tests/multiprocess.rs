//! Several OS processes contend on the same keys through the database: each increments a
//! counter guarded by the lock (read, pause, write: a lost update shows if two ever hold it at
//! once) and writes through a resource that refuses any token not above the last it accepted
//! (fencing tokens strictly increasing per key). Also the fault tests that need a process:
//! a holder killed with SIGKILL.
//!
//! The test binary re-executes itself as the children (`child` below, with LOCKCORE_SQL_CHILD).

mod common;

use common::{Fenced, Raw};
use lockcore::Request;
use lockcore_sql::{Options, SqlLocks};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILDREN: usize = 4;
const ROUNDS: usize = 20;
const KEYS: usize = 2;

/// The child's side; does nothing in a normal test run.
#[test]
fn child() {
    let Ok(role) = std::env::var("LOCKCORE_SQL_CHILD") else { return };
    let db = std::env::var("LOCKCORE_SQL_DB").unwrap();
    let prefix = std::env::var("LOCKCORE_SQL_PREFIX").unwrap();
    let id = std::env::var("LOCKCORE_SQL_ID").unwrap();
    match role.as_str() {
        "count" => count(&db, &prefix, &id),
        "hold" => hold(&db, &prefix, &id),
        other => panic!("unknown child role {other}"),
    }
}

fn count(db: &str, prefix: &str, id: &str) {
    let locks = SqlLocks::connect(&common::url(db), Options::new(format!("proc-{id}")).prefix(prefix)).unwrap();
    let mut raw = Raw::open(db);
    let res = Fenced { table: format!("{prefix}counter") };
    let mut refused = 0;
    for round in 0..ROUNDS {
        let key = format!("counter-{}", round % KEYS);
        let t = locks
            .acquire(Request::new(format!("inc-{round}")).exclusive(key.clone()), Duration::from_secs(60))
            .unwrap();
        let token = t.locks[0].token.unwrap().0;
        let v = res.read(&mut raw, &key);
        std::thread::sleep(Duration::from_millis(2));
        if !res.write(&mut raw, &key, v + 1, token) {
            refused += 1;
        }
        locks.release(&t).unwrap();
    }
    println!("\nREFUSED {refused}");
}

fn hold(db: &str, prefix: &str, id: &str) {
    let opts = Options::new(format!("proc-{id}")).prefix(prefix).lease(Duration::from_millis(1500));
    let locks = SqlLocks::connect(&common::url(db), opts).unwrap();
    let t = locks.try_acquire(Request::new("victim-cmd").exclusive("victim".to_string())).unwrap();
    println!("\nLOCKED {}", t.locks[0].token.unwrap().0);
    // Waits for its SIGKILL; bounded, so a failed parent leaves no process behind for long.
    std::thread::sleep(Duration::from_secs(30));
    panic!("the holder was never killed");
}

/// Kills the child when the test ends, whichever way it ends.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(db: &str, prefix: &str, role: &str, id: usize) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("LOCKCORE_SQL_CHILD", role)
        .env("LOCKCORE_SQL_DB", db)
        .env("LOCKCORE_SQL_PREFIX", prefix)
        .env("LOCKCORE_SQL_ID", id.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn no_lost_update_and_fencing(db: &str) {
    let prefix = common::fresh(db, "multiproc");
    let mut raw = Raw::open(db);
    let res = Fenced::create(&mut raw, &format!("{prefix}counter"));
    let mut kids: Vec<_> = (0..CHILDREN).map(|i| Reap(spawn(db, &prefix, "count", i))).collect();
    let mut refused = 0;
    for kid in &mut kids {
        let mut stdout = String::new();
        std::io::Read::read_to_string(kid.0.stdout.as_mut().unwrap(), &mut stdout).unwrap();
        let status = kid.0.wait().unwrap();
        let out = std::process::Output { status, stdout: stdout.into_bytes(), stderr: Vec::new() };
        assert!(out.status.success(), "a child failed: {}", String::from_utf8_lossy(&out.stdout));
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.starts_with("REFUSED ")).expect("child reported");
        refused += line[8..].trim().parse::<usize>().unwrap();
    }
    let total = res.sum(&mut raw);
    // A refused write is not an increment: every accepted one must show.
    let accepted = CHILDREN * ROUNDS - refused;
    assert_eq!(
        total as usize, accepted,
        "lost updates: the counters sum to {total}, {accepted} increments were accepted"
    );
    assert_eq!(refused, 0, "{refused} writes were refused: a fencing token did not increase");
    // Every token ever granted per key is above the one before: the counter equals the grants.
    let tokens = raw.ints(&format!("SELECT last_token FROM {prefix}locks ORDER BY name"));
    assert_eq!(tokens, vec![(CHILDREN * ROUNDS / KEYS) as i64; KEYS]);
}

#[test]
fn processes_postgres() {
    no_lost_update_and_fencing("pg");
}

#[test]
fn processes_mariadb() {
    no_lost_update_and_fencing("my");
}

/// A holder killed with SIGKILL keeps its lock while its lease runs (the heartbeat renewed it
/// past the first lease), and loses it once the lease has lapsed, not before.
fn killed_holder(db: &str) {
    let prefix = common::fresh(db, "sigkill");
    let mut kid = Reap(spawn(db, &prefix, "hold", 0));
    let mut lines = BufReader::new(kid.0.stdout.take().unwrap()).lines();
    // Bounded: a child that dies before locking ends the pipe, and the test fails.
    let line = lines.find(|l| l.as_ref().is_ok_and(|l| l.starts_with("LOCKED"))).expect("the child locked").unwrap();
    let first: u64 = line[7..].trim().parse().unwrap();
    let other = common::connect(db, &prefix, "survivor");
    let req = || Request::new("next").exclusive("victim".to_string());
    // Alive: renewed beyond its 1.5 s lease.
    std::thread::sleep(Duration::from_millis(2500));
    let err = other.try_acquire(req()).unwrap_err();
    assert!(err.to_string().contains("held exclusive by proc-0/victim-cmd"), "{err}");
    kid.0.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    kid.0.wait().unwrap();
    // What is left of the dead holder's lease, by the database's clock.
    let left_ms = Raw::open(db).ints(&match db {
        "pg" => {
            format!("SELECT (extract(epoch FROM lease_until - clock_timestamp()) * 1000)::bigint FROM {prefix}holders")
        }
        _ => format!("SELECT TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), lease_until) DIV 1000 FROM {prefix}holders"),
    });
    assert_eq!(left_ms.len(), 1, "the killed holder's row");
    assert!(left_ms[0] > 0, "the lease had lapsed before the kill: the heartbeat did not renew it");
    let left = Duration::from_millis(left_ms[0] as u64);
    let t = loop {
        match other.try_acquire(req()) {
            Ok(t) => break t,
            Err(e) => {
                assert!(e.conflict().is_some(), "{e}");
                assert!(killed.elapsed() < Duration::from_secs(6), "still held 6 s after the kill: stale lock");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let freed_after = killed.elapsed();
    // Not before the lease (less the time it took to read it), and soon after it.
    assert!(
        freed_after + Duration::from_millis(20) >= left,
        "freed {freed_after:?} after the kill, {left:?} before its lease lapsed"
    );
    assert!(
        freed_after < left + Duration::from_secs(2),
        "freed {freed_after:?} after the kill, its lease lapsed after {left:?}"
    );
    assert!(t.locks[0].token.unwrap().0 > first);
    other.release(&t).unwrap();
}

#[test]
fn sigkill_postgres() {
    killed_holder("pg");
}

#[test]
fn sigkill_mariadb() {
    killed_holder("my");
}
