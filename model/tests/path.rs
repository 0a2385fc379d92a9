//! Runs the path-lock model (`lockcore_model::path`) to completion on the real table and checks
//! its properties, and compares every transition the table makes with one computed from the
//! definition alone (subtrees overlap and one lock is exclusive; first come, first served).

use lockcore_model::path::{Action, PathModel, PathState, Status};
use stateright::{Checker, Model};
use std::collections::HashSet;
use std::time::Instant;

/// The step as the definition says, without any table: a request is granted iff it conflicts
/// with no holder and no queued request (no barging); after a release or a cancel, the queue
/// is scanned in arrival order and a waiter goes iff it conflicts with no holder and with no
/// waiter still ahead of it.
fn by_definition(s: &PathState, a: Action) -> PathState {
    let mut n = s.clone();
    let lock_of = |st: Status| match st {
        Status::Holding(l) | Status::Waiting(l) => Some(l),
        Status::Idle => None,
    };
    match a {
        Action::Request(i, l) => {
            let blocked = s.clients.iter().filter_map(|c| lock_of(c.status)).any(|o| o.conflicts(l));
            let c = &mut n.clients[usize::from(i)];
            c.budget -= 1;
            c.was_queued = false;
            if blocked {
                c.status = Status::Waiting(l);
                n.queue.push(i);
            } else {
                c.status = Status::Holding(l);
            }
            return n;
        }
        Action::Release(i) | Action::Cancel(i) => {
            n.clients[usize::from(i)].status = Status::Idle;
            n.queue.retain(|&c| c != i);
        }
    }
    let mut still = Vec::new();
    for &w in &n.queue.clone() {
        let Status::Waiting(l) = n.clients[usize::from(w)].status else { unreachable!("queued clients wait") };
        let holder_conflict = n.clients.iter().any(|c| matches!(c.status, Status::Holding(h) if h.conflicts(l)));
        let ahead_conflict = still.iter().any(|&o: &u8| match n.clients[usize::from(o)].status {
            Status::Waiting(h) => h.conflicts(l),
            _ => false,
        });
        if holder_conflict || ahead_conflict {
            still.push(w);
        } else {
            n.clients[usize::from(w)].status = Status::Holding(l);
            n.clients[usize::from(w)].was_queued = true;
        }
    }
    n.queue = still;
    n
}

/// Walks every state reachable by the definition, checks that the real table's step agrees on
/// each transition, and returns how many states there are.
fn compare_with_definition(model: &PathModel) -> usize {
    let mut seen = HashSet::new();
    let mut todo = model.init_states();
    while let Some(s) = todo.pop() {
        if !seen.insert(s.clone()) {
            continue;
        }
        let mut acts = Vec::new();
        model.actions(&s, &mut acts);
        for a in acts {
            let expected = by_definition(&s, a);
            let real = model.next_state(&s, a).expect("every action changes the state");
            assert_eq!(real, expected, "the table disagrees with the definition after {a:?} from {s:?}");
            todo.push(expected);
        }
    }
    seen.len()
}

#[test]
fn path_locks_hold_their_properties_on_a_small_tree() {
    let model = PathModel::default();
    let start = Instant::now();
    let checker = model.clone().checker().spawn_bfs().join();
    println!(
        "path model (3 clients, 1 request each, BFS): {} states, {} unique, max depth {}, in {:.2?}",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        start.elapsed()
    );
    // No counterexample for the `always` properties, an example for each `sometimes` one.
    checker.assert_properties();
    let siblings = checker.assert_any_discovery("two sibling locks held at once");
    assert!(siblings.last_state().queue.is_empty(), "both siblings were granted at once, nobody waits");
    checker.assert_any_discovery("a request waits");
    checker.assert_any_discovery("a queued request is granted later");
    // The search is exhaustive and found exactly the states the definition allows.
    assert!(checker.is_done());
    assert_eq!(checker.unique_state_count(), compare_with_definition(&model));
    // One request and one release or cancel per client, after the initial state.
    assert_eq!(checker.max_depth(), 7);
}

#[test]
fn every_transition_of_the_table_matches_the_definition() {
    // Two requests per client: a longer history, with clients coming back after a release.
    let model = PathModel { clients: 3, budget: 2 };
    let states = compare_with_definition(&model);
    println!("path model (3 clients, 2 requests each): {states} states agree with the definition");
    assert!(states > 10_000, "the walk covered too little: {states} states");
}
