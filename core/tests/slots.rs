//! More threads at once than a table has reader slots (`core/src/bias.rs`): the threads that
//! get no slot take every request through the latches, and every grant, release and hold time
//! stays counted, also for a release on a thread without a slot. A test
//! binary of its own, since the slots are leased per process and this test holds all of them.

use lockcore::{LockTable, Request};

/// More threads at once than there are reader slots: the ones without a slot go through the
/// latches, and every grant is exact (held by all, conflicting with a writer, released).
#[test]
fn more_threads_than_reader_slots() {
    const THREADS: usize = if cfg!(miri) { 3 } else { 80 };
    let t = LockTable::<&'static str>::builder().read_bias(2).build();
    let u = LockTable::<u64>::new();
    let barrier = std::sync::Barrier::new(THREADS + 1);
    std::thread::scope(|s| {
        // A direct grant made on a thread that then exits (giving its slot back), to be
        // released below by this thread, which holds no slot while every slot is taken.
        let direct = s.spawn(|| u.try_acquire(Request::new("d").exclusive(1)).unwrap()).join().unwrap();
        assert_eq!(u.metrics().direct_grants, 1);
        for i in 0..THREADS {
            let (t, barrier) = (&t, &barrier);
            s.spawn(move || {
                let owner = format!("reader-{i}");
                let sets: Vec<_> =
                    (0..4).map(|_| t.try_acquire(Request::new(owner.as_str()).shared("hot")).unwrap()).collect();
                barrier.wait(); // every thread holds its grants (and its slot, if it has one)
                barrier.wait(); // the main thread has looked
                drop(sets);
            });
        }
        barrier.wait();
        assert_eq!(t.holders(&"hot").len(), THREADS * 4);
        assert!(t.try_acquire(Request::new("w").exclusive("hot")).is_err());
        drop(direct);
        barrier.wait();
    });
    assert_eq!(t.key_count(), 0);
    // Every release counted, and every hold time, whether the releasing thread had a slot (its
    // own counters) or not (the shared ones).
    for m in [t.metrics(), u.metrics()] {
        assert_eq!(m.grants, m.releases, "{m:?}");
        assert_eq!(m.hold_time.count(), m.releases, "{m:?}");
    }
    assert!(t.metrics().biased_grants > 0);
    assert_eq!(u.key_count(), 0);
}
