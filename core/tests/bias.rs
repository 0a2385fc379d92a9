//! The read bias (`core/src/bias.rs`): shared grants of hot keys made on the thread's reader
//! slot, without the shard latches. Nothing a caller sees may change: these tests take keys
//! fast (checked through `metrics().biased_grants`) and then look at them through every other
//! door of the table. The multi-thread checks are the stress test's and loom's.

use lockcore::{AcquireError, LockMessage, LockTable, Owner, ReleaseError, Request};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Under miri every shard costs a latch per `snapshot()` and `key_count()`: use a few.
const SHARDS: usize = if cfg!(miri) { 4 } else { 512 };

/// Keys are biased at their second grant in a row; the third goes fast. Direct grants off: a
/// one-key request of a free key would be granted by its word (direct.rs), never biased.
fn table() -> LockTable<&'static str> {
    LockTable::<&'static str>::builder().shards(SHARDS).read_bias(2).direct(false).build()
}

/// Takes `key` shared for `owner` until the grant is a fast one, and returns it.
fn fast_shared<'t>(
    t: &'t LockTable<&'static str>,
    owner: &str,
    key: &'static str,
) -> lockcore::LockSet<'t, &'static str> {
    for _ in 0..4 {
        let before = t.metrics().biased_grants;
        let set =
            t.try_acquire(Request::new(owner).shared_with(key, LockMessage::new("reading").with("by", owner))).unwrap();
        if t.metrics().biased_grants > before {
            return set;
        }
    }
    panic!("{key} was never granted through the read bias");
}

#[test]
fn fast_holders_show_in_holders_snapshots_and_conflicts() {
    let t = table();
    let r = fast_shared(&t, "reader-1", "template");
    let holders = t.holders(&"template");
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].owner.as_str(), "reader-1");
    assert_eq!(holders[0].message.as_ref().map(LockMessage::reason), Some("reading"));
    assert_eq!(holders[0].grant, r.grant());
    let snap = t.snapshot();
    assert_eq!(snap.held.len(), 1);
    assert_eq!((snap.held[0].key, snap.held[0].grant), ("template", r.grant()));
    assert_eq!(t.key_count(), 1);
    // Another reader is fine; a writer is refused and told who reads.
    let r2 = t.try_acquire(Request::new("reader-2").shared("template")).unwrap();
    let err = t.try_acquire(Request::new("writer").exclusive("template")).unwrap_err();
    let AcquireError::Conflict(c) = err else { panic!("not a conflict: {err}") };
    let mut owners: Vec<&str> = c.keys[0].holders.iter().map(|h| h.owner.as_str()).collect();
    owners.sort_unstable();
    assert_eq!(owners, ["reader-1", "reader-2"]);
    assert!(c.to_string().contains("reader-1"), "{c}");
    assert!(t.metrics().revocations >= 1);
    drop((r, r2));
    assert_eq!(t.key_count(), 0);
    assert!(t.snapshot().held.is_empty());
    assert!(t.try_acquire(Request::new("writer").exclusive("template")).is_ok());
}

#[test]
fn a_fast_grant_becomes_a_ticket() {
    let t = table();
    let ticket = fast_shared(&t, "cmd", "disk").into_ticket();
    assert!(t.try_acquire(Request::new("rm").exclusive("disk")).is_err(), "the ticket lost the key");
    assert_eq!(t.key_count(), 1);
    t.release(&ticket).unwrap();
    assert!(matches!(t.release(&ticket), Err(ReleaseError::UnknownGrant(_))));
    assert!(t.try_acquire(Request::new("rm").exclusive("disk")).is_ok());
    assert_eq!(t.metrics().releases, t.metrics().grants, "every grant was released once");
}

#[test]
fn owner_and_forced_releases_free_fast_grants() {
    let t = table();
    let a = fast_shared(&t, "gone", "a");
    let b = fast_shared(&t, "stuck", "b");
    let freed = t.release_owner(&Owner::new("gone"));
    assert_eq!(freed.len(), 1);
    assert_eq!(freed[0].grant, a.grant());
    assert_eq!(freed[0].locks[0].key, "a");
    let forced = t.force_release(b.grant()).unwrap();
    assert_eq!(forced.locks[0].key, "b");
    let releases = t.metrics().releases;
    // The guards release nothing now, and are not counted as releases.
    drop((a, b));
    assert_eq!(t.metrics().releases, releases);
    assert_eq!(t.key_count(), 0);
    assert!(t.try_acquire(Request::new("w").exclusive("a").exclusive("b")).is_ok());
}

#[test]
fn a_queued_writer_stops_new_fast_readers() {
    let t = table();
    let r = fast_shared(&t, "reader", "k");
    // A second reader caches the bias too, before the writer comes.
    let other = fast_shared(&t, "reader-2", "k");
    drop(other);
    let mut writer = pin!(t.acquire_async(Request::new("writer").exclusive("k")));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(writer.as_mut().poll(&mut cx).is_pending(), "the writer should queue behind the reader");
    // No barging: a new reader queues behind the writer instead of taking the key fast.
    let fast_before = t.metrics().biased_grants;
    let err = t.try_acquire(Request::new("reader-3").shared("k")).unwrap_err();
    assert!(err.to_string().contains("writer"), "{err}");
    assert_eq!(t.metrics().biased_grants, fast_before);
    assert_eq!(t.blockers(&Owner::new("writer")), vec![Owner::new("reader")]);
    drop(r);
    let Poll::Ready(Ok(w)) = writer.as_mut().poll(&mut cx) else { panic!("the writer was not granted") };
    assert_eq!(w.owner().as_str(), "writer");
    drop(w);
    assert!(t.acquire(Request::new("reader-3").shared("k"), Duration::from_secs(1)).is_ok());
}

#[test]
fn fast_requests_of_several_keys_and_repeats() {
    let t = table();
    for _ in 0..3 {
        drop(t.try_acquire(Request::new("warm").shared("a").shared("b").shared("c")).unwrap());
    }
    let before = t.metrics().biased_grants;
    let set = t.try_acquire(Request::new("r").shared("a").shared("b").shared("c")).unwrap();
    assert_eq!(t.metrics().biased_grants, before + 1, "three biased keys were not taken fast");
    assert_eq!(set.len(), 3);
    assert_eq!(t.snapshot().held.len(), 3);
    // A key named twice goes through the latches, collapsed.
    let twice = t.try_acquire(Request::new("r2").shared("a").shared("a")).unwrap();
    assert_eq!(twice.len(), 1);
    assert_eq!(t.holders(&"a").len(), 2);
    // A writer of one key revokes only that key's bias; the others stay fast.
    assert!(t.try_acquire(Request::new("w").exclusive("b")).is_err());
    drop((set, twice));
    assert!(t.try_acquire(Request::new("w").exclusive("b")).is_ok());
    let before = t.metrics().biased_grants;
    drop(t.try_acquire(Request::new("r3").shared("a").shared("c")).unwrap());
    assert_eq!(t.metrics().biased_grants, before + 1);
    assert_eq!(t.key_count(), 0);
}

#[test]
fn read_bias_zero_turns_it_off() {
    let t = LockTable::<&'static str>::builder().shards(SHARDS).read_bias(0).build();
    for _ in 0..100 {
        drop(t.try_acquire(Request::new("r").shared("k")).unwrap());
    }
    assert_eq!(t.metrics().biased_grants, 0);
    assert_eq!(t.metrics().grants, 100);
}

#[test]
fn the_default_table_biases_a_hot_read_key() {
    let t: LockTable<u64> = LockTable::new();
    // A key nobody else holds is granted directly (direct.rs), never biased: the read bias is
    // for keys that are in use. A ticket keeps this one in use (in its record).
    let keep = t.try_acquire(Request::new("keeper").shared(7)).unwrap().into_ticket();
    for _ in 0..20 {
        drop(t.try_acquire(Request::new("r").shared(7)).unwrap());
    }
    assert!(t.metrics().biased_grants > 0, "no fast grant after 20 reads in a row");
    t.release(&keep).unwrap();
    // Reclaim settles every bias: nothing stays stored.
    t.reclaim();
    assert_eq!(t.key_count(), 0);
}

/// A fast grant's guard may be dropped on another thread: its cell is freed by that thread,
/// and the grant is counted released once.
#[test]
fn a_fast_grant_released_on_another_thread() {
    let t = table();
    let set = fast_shared(&t, "reader", "k");
    std::thread::scope(|s| {
        s.spawn(move || drop(set));
    });
    assert_eq!(t.key_count(), 0);
    let m = t.metrics();
    assert_eq!(m.grants, m.releases, "{m:?}");
    // The cell is free again: the same thread takes the key fast once more.
    drop(fast_shared(&t, "reader", "k"));
    assert!(t.try_acquire(Request::new("w").exclusive("k")).is_ok());
}
