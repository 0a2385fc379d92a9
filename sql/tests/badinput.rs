//! Bad input: names too long for the column, NUL, invalid UTF-8, modes the database does not
//! store, a missing migration, a wrong schema version, bad URLs and prefixes: typed errors with
//! clear messages, before any SQL where the input alone decides.

mod common;

use common::Raw;
use lockcore::{AcquireError, LockBackend, Mode, Owner, Request, RequestError};
use lockcore_sql::{named, LockName, Options, SqlError, SqlLocks, MAX_NAME_CHARS};
use std::time::Duration;

fn names(db: &str) {
    let prefix = common::fresh(db, "names");
    let locks = common::connect(db, &prefix, "s");
    let long = "x".repeat(MAX_NAME_CHARS + 1);
    let err = locks.try_acquire(Request::new("c").exclusive(long.clone())).unwrap_err();
    assert!(matches!(err, SqlError::NameTooLong { what: "lock name", len: 256, max: 255, .. }), "{err:?}");
    assert!(err.to_string().contains("256 characters long, more than the column's 255"), "{err}");
    // Through the trait: a typed request error, not a panic.
    let err = LockBackend::try_lock(&locks, Request::new("c").exclusive(long)).unwrap_err();
    assert!(matches!(&err, AcquireError::Request(RequestError::Backend { .. })), "{err:?}");
    // 255 four-byte characters fit (utf8mb4 on MariaDB).
    let widest = "\u{1F512}".repeat(MAX_NAME_CHARS);
    let t = locks.try_acquire(Request::new("c").exclusive(widest.clone())).unwrap();
    assert_eq!(locks.snapshot().unwrap().held[0].key, widest);
    locks.release(&t).unwrap();
    let err = locks.try_acquire(Request::new("c").exclusive("a\0b".to_string())).unwrap_err();
    assert!(matches!(err, SqlError::InvalidName { what: "lock name", .. }), "{err:?}");
    let err = locks.try_acquire(Request::new("o".repeat(300)).exclusive("k".to_string())).unwrap_err();
    assert!(matches!(err, SqlError::NameTooLong { what: "owner", .. }), "{err:?}");
    let err = locks.try_acquire(Request::new("c").lock("k".to_string(), Mode::INTENTION_SHARED, None)).unwrap_err();
    assert!(matches!(err, SqlError::Request(RequestError::UnknownMode(_))), "{err:?}");
    // Nothing was stored by any refused request.
    assert!(locks.snapshot().unwrap().held.is_empty());
}

#[test]
fn names_postgres() {
    names("pg");
}

#[test]
fn names_mariadb() {
    names("my");
}

#[test]
fn invalid_utf8_is_typed() {
    let err = named(&Request::new("c").exclusive(b"ok\xff\xfe".to_vec())).unwrap_err();
    assert!(matches!(err, SqlError::InvalidUtf8 { valid_up_to: 2 }), "{err:?}");
    assert!(err.to_string().contains("must be UTF-8"), "{err}");
    assert_eq!(("vm", 42u32).lock_name().unwrap(), "vm/42");
}

fn schema(db: &str) {
    let url = common::url(db);
    let prefix = "t_never_migrated_";
    SqlLocks::uninstall(&url, &Options::new("s").prefix(prefix)).unwrap();
    let err = SqlLocks::connect(&url, Options::new("s").prefix(prefix)).unwrap_err();
    assert!(matches!(&err, SqlError::MissingMigration { table } if table == "t_never_migrated_schema"), "{err:?}");
    assert!(err.to_string().contains("run the migration first"), "{err}");

    // A database failure through the trait (here: the tables dropped under a connected
    // backend) is a typed error naming it, never a panic.
    let prefix = common::fresh(db, "gone");
    let locks = common::connect(db, &prefix, "s");
    SqlLocks::uninstall(&url, &Options::new("s").prefix(&prefix)).unwrap();
    let err = LockBackend::try_lock(&locks, Request::new("c").exclusive("k".to_string())).unwrap_err();
    assert!(matches!(&err, AcquireError::Backend(e) if e.operation() == "lock"), "{err:?}");
    assert!(err.to_string().starts_with("the lock backend could not lock: "), "{err}");
    assert!(LockBackend::snapshot(&locks).is_err());
    assert!(LockBackend::unlock_owner(&locks, &Owner::new("c")).is_err());
    drop(locks);

    let prefix = common::fresh(db, "version");
    Raw::open(db).exec(&format!("UPDATE {prefix}schema SET version = 99"));
    let err = SqlLocks::connect(&url, Options::new("s").prefix(&prefix)).unwrap_err();
    assert!(matches!(err, SqlError::SchemaVersion { found: 99, expected: 1 }), "{err:?}");
    assert!(err.to_string().contains("schema version 99"), "{err}");
    // The migration is idempotent and does not overwrite the version it finds.
    SqlLocks::migrate(&url, &Options::new("s").prefix(&prefix)).unwrap();
    assert!(SqlLocks::connect(&url, Options::new("s").prefix(&prefix)).is_err());
}

#[test]
fn schema_postgres() {
    schema("pg");
}

#[test]
fn schema_mariadb() {
    schema("my");
}

#[test]
fn bad_configuration() {
    let err = SqlLocks::connect("redis://127.0.0.1", Options::new("s")).unwrap_err();
    assert!(matches!(err, SqlError::Config(_)) && err.to_string().contains("postgres://"), "{err}");
    let err = SqlLocks::connect(&common::pg_url(), Options::new("s").prefix("Bad-Prefix")).unwrap_err();
    assert!(matches!(err, SqlError::Config(_)), "{err:?}");
    let slow_heartbeat = Options::new("s").lease(Duration::from_secs(1)).heartbeat(Some(Duration::from_secs(2)));
    let err = SqlLocks::connect(&common::pg_url(), slow_heartbeat).unwrap_err();
    assert!(matches!(err, SqlError::Config(_)) && err.to_string().contains("shorter than the lease"), "{err}");
    let err = SqlLocks::connect(&common::pg_url(), Options::new("s".repeat(300))).unwrap_err();
    assert!(matches!(err, SqlError::NameTooLong { what: "server", .. }), "{err:?}");
}
