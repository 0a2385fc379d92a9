//! lockcore behind the benchmark trait.

use crate::baseline::{Access, Baseline, Lock};
use lockcore::{LockSet, LockTable, Mode, Owner, Request};
use std::time::Duration;

/// The name of lockcore with direct grants off.
pub const LATCHED: &str = "lockcore-latched";

thread_local! {
    /// One owner per thread, made once: requests clone it (an `Arc` increment), as an engine
    /// whose command ids are already `Owner`s would.
    static OWNER: Owner = Owner::new(format!("bench-{:?}", std::thread::current().id()));
}

/// `lockcore::LockTable<u64>` with default settings (or, as `lockcore-latched`, with direct
/// grants off: every one-key request through the shard latches, for an A/B of the direct path
/// in one run; `--impls lockcore-latched`).
pub struct Lockcore {
    table: LockTable<u64>,
    name: &'static str,
}

impl Default for Lockcore {
    fn default() -> Self {
        Self::new()
    }
}

impl Lockcore {
    /// An empty table.
    pub fn new() -> Self {
        Self { table: LockTable::new(), name: "lockcore" }
    }

    /// An empty table with direct grants off (`Builder::direct(false)`).
    pub fn latched() -> Self {
        Self { table: LockTable::<u64>::builder().direct(false).build(), name: LATCHED }
    }

    /// The table itself.
    pub fn table(&self) -> &LockTable<u64> {
        &self.table
    }

    fn request(locks: &[Lock]) -> Request<u64> {
        let mut req = Request::new(OWNER.with(Owner::clone));
        for l in locks {
            let mode = match l.access {
                Access::Shared => Mode::SHARED,
                Access::Exclusive => Mode::EXCLUSIVE,
            };
            req.push(l.key, mode, None);
        }
        req
    }
}

impl Baseline for Lockcore {
    type Held<'a> = LockSet<'a, u64>;

    fn name(&self) -> &'static str {
        self.name
    }

    fn try_acquire(&self, locks: &[Lock]) -> Option<LockSet<'_, u64>> {
        self.table.try_acquire(Self::request(locks)).ok()
    }

    fn acquire(&self, locks: &[Lock], timeout: Duration) -> Option<LockSet<'_, u64>> {
        self.table.acquire(Self::request(locks), timeout).ok()
    }

    fn release(&self, _: &[Lock], held: LockSet<'_, u64>) {
        drop(held);
    }

    fn table_keys(&self) -> Option<usize> {
        Some(self.table.key_count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::tests::{check_exclusion, check_semantics};

    #[test]
    fn lockcore_semantics() {
        check_semantics(&Lockcore::new());
    }

    #[test]
    fn lockcore_exclusion() {
        check_exclusion(&Lockcore::new());
        check_exclusion(&Lockcore::latched());
    }
}
