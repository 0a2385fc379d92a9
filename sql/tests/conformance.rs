//! The conformance suite (tests/common/suite.rs) on the in-memory table, PostgreSQL and MariaDB.

mod common;

use common::suite::{self, Side};
use lockcore::LockTable;

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[test]
            fn memory() {
                let t = LockTable::<String>::new();
                let q = |o: &str| o.to_string();
                suite::$name(Side { locks: &t, qualify: &q }, Side { locks: &t, qualify: &q });
            }

            #[test]
            fn postgres() {
                run("pg", stringify!($name));
            }

            #[test]
            fn mariadb() {
                run("my", stringify!($name));
            }

            fn run(db: &str, test: &str) {
                let prefix = common::fresh(db, test);
                let a = common::connect(db, &prefix, "server-a");
                let b = common::connect(db, &prefix, "server-b");
                let qa = |o: &str| a.holder_name(o);
                let qb = |o: &str| b.holder_name(o);
                suite::$name(Side { locks: &a, qualify: &qa }, Side { locks: &b, qualify: &qb });
            }
        }
    )*};
}

conformance!(
    all_or_nothing,
    shared_counts,
    exclusive_excludes,
    conflict_names_every_key_and_holder,
    release_by_ticket,
    foreign_and_edited_tickets,
    unlock_owner_frees_exactly_that_owner,
    snapshot_shows_holders,
    timeout_leaves_nothing_held,
    waiter_gets_the_lock_when_released,
    fencing_tokens_increase_per_key,
    request_errors_and_duplicates,
);
