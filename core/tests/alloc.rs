//! The acquire path allocates nothing for a granted request of up to 16 keys that are already
//! in the table (docs/design.md, section 9), counted with a counting global allocator.
//!
//! A test binary of its own, so that its allocator counts only this test's threads.

use lockcore::{LockMessage, LockTable, Owner, Request};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees carry over; the counter is a thread-local `Cell`, which does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through `alloc` above) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn request(owner: &Owner, keys: std::ops::Range<u64>, message: &LockMessage) -> Request<u64> {
    keys.fold(
        Request::new(owner.clone()),
        |r, k| {
            if k % 2 == 0 {
                r.exclusive_with(k, message.clone())
            } else {
                r.shared(k)
            }
        },
    )
}

#[test]
fn granted_requests_of_up_to_16_warm_keys_allocate_nothing() {
    let table: LockTable<u64> = LockTable::new();
    let owner = Owner::new("cmd");
    let message = LockMessage::new("busy");
    for n in [1u64, 8, 16] {
        // Warm up: the keys' slots exist and their holder lists have capacity, and the shared
        // keys are read-biased (a key's first bias makes its shard's bias block and the
        // thread's cache of biases, once).
        for _ in 0..10 {
            drop(table.try_acquire(request(&owner, 0..n, &message)).unwrap());
            drop(table.acquire(request(&owner, 0..n, &message), std::time::Duration::from_secs(1)).unwrap());
        }
        for round in 0..100 {
            let (a, b) = (request(&owner, 0..n, &message), request(&owner, 0..n, &message));
            let before = allocations();
            let set = table.try_acquire(a).unwrap();
            drop(set);
            let set = table.acquire(b, std::time::Duration::from_secs(1)).unwrap();
            let tokens: u64 = set.locks().filter_map(|(_, _, t)| t).map(|t| t.0).sum();
            drop(set);
            let after = allocations();
            assert!(tokens > 0);
            assert_eq!(after - before, 0, "{n} keys, round {round}: the acquire path allocated");
        }
    }
}

#[test]
fn read_biased_requests_allocate_nothing() {
    // Shared-only requests of hot keys are granted on the thread's reader slot, without the
    // shard latches (bias.rs): that path allocates nothing either.
    let table: LockTable<u64> = LockTable::new();
    let owner = Owner::new("reader");
    for n in [1u64, 4, 8] {
        let shared = |keys: std::ops::Range<u64>| keys.fold(Request::new(owner.clone()), |r, k| r.shared(100 + k));
        for _ in 0..20 {
            drop(table.try_acquire(shared(0..n)).unwrap());
        }
        let m = table.metrics();
        let (grants_before, fast_before) = (m.grants, m.biased_grants + m.direct_grants);
        for round in 0..100 {
            let req = shared(0..n);
            let before = allocations();
            let set = table.try_acquire(req).unwrap();
            drop(set);
            assert_eq!(allocations() - before, 0, "{n} shared keys, round {round}: the acquire path allocated");
        }
        assert_eq!(table.metrics().grants - grants_before, 100);
        // One key nobody else holds is granted directly (direct.rs), more keys on the slot.
        let m = table.metrics();
        assert_eq!(m.biased_grants + m.direct_grants - fast_before, 100, "{n} shared keys: not granted on a fast path");
    }
}

#[test]
fn direct_grants_of_new_keys_allocate_nothing() {
    // A one-key request of a key nobody holds is granted by its word (direct.rs): no record,
    // so not even a key new to the table allocates.
    let table: LockTable<u64> = LockTable::new();
    let owner = Owner::new("cmd");
    drop(table.try_acquire(Request::new(owner.clone()).exclusive(0)).unwrap());
    let direct_before = table.metrics().direct_grants;
    let before = allocations();
    for k in 1..=1000u64 {
        let set = table.try_acquire(Request::new(owner.clone()).exclusive(k)).unwrap();
        assert!(set.token(&k).is_some());
        drop(set);
    }
    assert_eq!(allocations() - before, 0, "a direct grant allocated");
    assert_eq!(table.metrics().direct_grants - direct_before, 1000);
}

#[test]
fn the_counter_sees_allocations() {
    // The check above would pass vacuously if the allocator counted nothing.
    let before = allocations();
    let v: Vec<u64> = Vec::with_capacity(32);
    assert!(allocations() > before);
    drop(v);
    // And a request for a key new to the table does allocate (its record), where it is
    // granted through the latches.
    let table: LockTable<u64> = LockTable::<u64>::builder().direct(false).build();
    let r = Request::new("cmd").exclusive(12345);
    let before = allocations();
    drop(table.try_acquire(r).unwrap());
    assert!(allocations() > before);
}
