//! Direct grants (`core/src/direct.rs`): a one-key request of a key nobody holds is granted by
//! an exchange of its word, without the shard latch. Nothing a caller sees may differ from a
//! grant made through the latches: these tests take each way out of a direct grant (a
//! conflicting request, a batch, `holders`, a snapshot, an owner's or forced release, a ticket,
//! another thread's release) and check what the table says and does.

use lockcore::{LockMessage, LockTable, Owner, ReleaseError, Request};
use std::time::Duration;

/// Few shards under miri (each shard has its words), the default otherwise.
fn table() -> LockTable<u64> {
    if cfg!(miri) {
        LockTable::<u64>::builder().shards(4).build()
    } else {
        LockTable::new()
    }
}

/// Takes `key` exclusive for `owner` with a message, and checks that it was a direct grant.
fn direct<'t>(t: &'t LockTable<u64>, owner: &str, key: u64) -> lockcore::LockSet<'t, u64> {
    let before = t.metrics().direct_grants;
    let set =
        t.try_acquire(Request::new(owner).exclusive_with(key, LockMessage::new("editing").with("by", owner))).unwrap();
    assert_eq!(t.metrics().direct_grants, before + 1, "key {key} was not granted directly");
    set
}

#[test]
fn a_conflict_names_the_direct_holder_with_its_message() {
    let t = table();
    let set = direct(&t, "cmd-1", 7);
    let err = t.try_acquire(Request::new("cmd-2").shared(7)).unwrap_err();
    let c = err.conflict().unwrap();
    assert_eq!(c.keys.len(), 1);
    let h = &c.keys[0].holders[0];
    assert_eq!(h.owner.as_str(), "cmd-1");
    assert_eq!(h.grant, set.grant());
    assert_eq!(h.message.as_ref().unwrap().reason(), "editing");
    assert_eq!(h.token, set.token(&7));
    assert!(err.to_string().contains("cmd-1"), "{err}");
    // The holder is now in the key's record: its release goes through it and frees the key.
    drop(set);
    assert_eq!(t.key_count(), 0);
    // The record went with its last holder (a table with direct grants keeps no idle records),
    // so the key's word is free again and the next request of it is direct.
    drop(direct(&t, "cmd-2", 7));
    let m = t.metrics();
    assert_eq!(m.grants, m.releases);
}

#[test]
fn a_batch_waits_for_a_direct_holder_and_is_woken_by_its_release() {
    let t = table();
    let set = direct(&t, "one", 1);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| t.acquire(Request::new("batch").exclusive(1).exclusive(2), Duration::from_secs(10)));
        let start = std::time::Instant::now();
        while t.snapshot().waiting.is_empty() {
            assert!(start.elapsed() < Duration::from_secs(10), "the batch never queued behind the direct holder");
            std::thread::yield_now();
        }
        drop(set);
        let got = waiter.join().unwrap().expect("the batch was granted after the direct release");
        assert_eq!(got.len(), 2);
    });
    assert_eq!(t.key_count(), 0);
}

#[test]
fn tokens_increase_across_direct_and_latched_grants() {
    let t = table();
    let mut last = 0;
    for round in 0..20 {
        // A key taken through the latches keeps its (idle) record for a while, and its word
        // stays LATCHED meanwhile; `reclaim` drops idle records, so the next grant can be direct.
        t.reclaim();
        // Alternately: direct, through the latches (a batch), direct again after a conflict
        // moved the direct grant into a record.
        let set = match round % 3 {
            0 => direct(&t, "a", 5),
            1 => t.try_acquire(Request::new("b").exclusive(5).exclusive(6)).unwrap(),
            _ => {
                let set = direct(&t, "c", 5);
                assert!(t.try_acquire(Request::new("d").exclusive(5)).is_err());
                set
            }
        };
        let token = set.token(&5).unwrap().0;
        assert!(token > last, "round {round}: token {token} after {last}");
        last = token;
    }
}

#[test]
fn snapshots_and_holders_show_direct_grants() {
    let t = table();
    let a = direct(&t, "a", 10);
    let b = direct(&t, "b", 11);
    assert_eq!(t.key_count(), 2);
    let snap = t.snapshot();
    let mut held: Vec<(u64, String)> = snap.held.iter().map(|h| (h.key, h.owner.as_str().to_string())).collect();
    held.sort();
    assert_eq!(held, [(10, "a".to_string()), (11, "b".to_string())]);
    assert!(snap.held.iter().all(|h| h.token.is_some()));
    let holders = t.holders(&11);
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].grant, b.grant());
    assert!(t.holders(&12).is_empty());
    drop((a, b));
    assert_eq!(t.key_count(), 0);
    assert!(t.snapshot().held.is_empty());
    // After a snapshot the words are open again: once the records the snapshot made are gone,
    // the next one-key request goes direct.
    t.reclaim();
    drop(direct(&t, "a", 10));
}

#[test]
fn owner_and_forced_releases_free_direct_grants() {
    let t = table();
    let a = direct(&t, "gone", 20);
    let b = direct(&t, "stuck", 21);
    let freed = t.release_owner(&Owner::new("gone"));
    assert_eq!(freed.len(), 1);
    assert_eq!(freed[0].grant, a.grant());
    assert!(t.try_acquire(Request::new("x").exclusive(20)).is_ok());
    let forced = t.force_release(b.grant()).unwrap();
    assert_eq!(forced.locks[0].key, 21);
    assert!(t.try_acquire(Request::new("x").exclusive(21)).is_ok());
    // The guards now free nothing, and are not counted as releases.
    drop((a, b));
    let m = t.metrics();
    assert_eq!((m.owner_releases, m.forced_releases), (1, 1));
    assert_eq!(m.releases + m.owner_releases + m.forced_releases, m.grants);
    assert_eq!(t.key_count(), 0);
}

#[test]
fn a_direct_grant_becomes_a_ticket() {
    let t = table();
    let ticket = direct(&t, "cmd", 30).into_ticket();
    assert_eq!(ticket.locks.len(), 1);
    assert!(ticket.locks[0].token.is_some());
    assert!(t.try_acquire(Request::new("other").shared(30)).is_err(), "the ticket keeps the lock");
    t.release(&ticket).unwrap();
    assert!(matches!(t.release(&ticket), Err(ReleaseError::UnknownGrant(_))));
    assert_eq!(t.key_count(), 0);
    let m = t.metrics();
    assert_eq!((m.grants, m.releases, m.conflicts), (1, 1, 1));
}

#[test]
fn a_direct_grant_released_on_another_thread() {
    let t = table();
    let set = direct(&t, "cmd", 40);
    std::thread::scope(|s| {
        s.spawn(move || drop(set));
    });
    assert_eq!(t.key_count(), 0);
    // Its cell is free again: this thread can hold as many direct grants at once as before (four
    // cells). Keys whose word another held key shares go through the latches: skip those.
    let before = t.metrics().direct_grants;
    let mut sets = Vec::new();
    for k in 41..100 {
        sets.push(t.try_acquire(Request::new("cmd").exclusive(k)).unwrap());
        if t.metrics().direct_grants - before == 4 {
            break;
        }
    }
    assert_eq!(t.metrics().direct_grants - before, 4, "a cell was not given back");
    drop(sets);
    let m = t.metrics();
    assert_eq!(m.grants, m.releases);
}

#[test]
fn more_direct_grants_than_cells_go_through_the_latches() {
    let t = table();
    let sets: Vec<_> = (0..10u64).map(|k| t.try_acquire(Request::new("many").exclusive(100 + k)).unwrap()).collect();
    let m = t.metrics();
    assert_eq!(m.grants, 10);
    assert!(m.direct_grants < 10, "a thread has a few cells, not ten");
    assert_eq!(t.key_count(), 10);
    drop(sets);
    assert_eq!(t.key_count(), 0);
}

#[test]
fn keys_that_own_memory_and_tables_with_direct_off_never_go_direct() {
    let strings: LockTable<String> = LockTable::new();
    drop(strings.try_acquire(Request::new("s").exclusive("vm-1".to_string())).unwrap());
    assert_eq!(strings.metrics().direct_grants, 0);
    let off: LockTable<u64> = LockTable::<u64>::builder().shards(4).direct(false).build();
    drop(off.try_acquire(Request::new("o").exclusive(1)).unwrap());
    assert_eq!(off.metrics().direct_grants, 0);
    assert_eq!(off.metrics().grants, 1);
}

#[test]
fn a_token_floor_past_what_a_word_carries_turns_direct_grants_off() {
    // Words carry 46-bit tokens; a table recovered with a higher floor takes its locks through
    // the latches, and its tokens still start above the floor.
    let floor = 1u64 << 50;
    let t: LockTable<u64> = LockTable::<u64>::builder().shards(4).token_floor(floor).build();
    let set = t.try_acquire(Request::new("o").exclusive(1)).unwrap();
    assert!(set.token(&1).unwrap().0 > floor);
    assert_eq!(t.metrics().direct_grants, 0);
    // Just below the limit it goes direct, and tokens still increase.
    let t: LockTable<u64> = LockTable::<u64>::builder().shards(4).token_floor(1000).build();
    let first = direct(&t, "o", 1).token(&1).unwrap().0;
    assert!(first > 1000);
}

#[test]
fn a_batch_of_free_keys_is_granted_directly_and_shows_whole() {
    let t = table();
    let before = t.metrics().direct_grants;
    let set = t.try_acquire(Request::new("batch").exclusive(50).shared(51).exclusive(52)).unwrap();
    assert_eq!(t.metrics().direct_grants, before + 1, "the batch was not granted directly");
    assert_eq!(t.key_count(), 3);
    let snap = t.snapshot();
    assert_eq!(snap.held.len(), 3);
    assert!(snap.held.iter().all(|h| h.grant == set.grant()));
    // A conflicting request of one of its keys names it; a compatible one of another is fine.
    let err = t.try_acquire(Request::new("other").exclusive(51)).unwrap_err();
    assert_eq!(err.conflict().unwrap().keys[0].holders[0].grant, set.grant());
    drop(t.try_acquire(Request::new("reader").shared(51)).unwrap());
    let mut tokens: Vec<_> = set.locks().map(|(k, _, t)| (*k, t.is_some())).collect();
    tokens.sort();
    assert_eq!(tokens, [(50, true), (51, false), (52, true)], "exclusive keys carry tokens, the shared one none");
    drop(set);
    assert_eq!(t.key_count(), 0);
    let m = t.metrics();
    assert_eq!(m.grants, m.releases);
}

#[test]
fn a_direct_batch_becomes_a_ticket_whole() {
    let t = table();
    t.reclaim();
    let set = t.try_acquire(Request::new("cmd").exclusive(60).exclusive(61)).unwrap();
    assert_eq!(t.metrics().direct_grants, 1);
    let ticket = set.into_ticket();
    assert_eq!(ticket.locks.len(), 2);
    assert!(t.try_acquire(Request::new("x").exclusive(61)).is_err());
    t.release(&ticket).unwrap();
    assert!(t.try_acquire(Request::new("x").exclusive(60).exclusive(61)).is_ok());
    assert_eq!(t.key_count(), 0);
}
