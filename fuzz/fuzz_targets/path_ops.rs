//! Fuzz target `path_ops`: path locks on one thread against the definition, and the path parser
//! on arbitrary text.
//!
//! Paths are drawn from a small tree (two anchors, list entries told apart by a predicate, up to
//! three steps deep), so that overlaps are frequent; some inputs also carry raw text for
//! `PathKey::parse`. The oracle is the definition of path locking, checked pairwise: two locks
//! conflict iff their paths overlap (equal, or one above the other) and they are not both shared.
//! It knows nothing of intention modes or of how the table stores them. After every operation:
//!
//! - a `try_acquire` is granted iff no held set has a lock that conflicts with one asked for,
//!   and a granted set holds every named path and every ancestor of one, as one key each;
//! - a refusal names exactly the held sets in the way, each block naming a path the blocking
//!   set really holds in a conflicting mode, in the relation (same, above, below) it says;
//! - releases (guard drop, ticket) give everything back: at the end the table is empty.
//!
//! Raw text either parses, and then prints back as itself and parses to the same key with the
//! same ancestors, or gets a typed `PathError`; it never panics.
//!
//! The deliberately broken core `LOCKCORE_MUTANT=no_intention` (no intention locks on
//! ancestors, so a subtree lock misses the locks below it) fails here.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use lockcore::{PathAcquireError, PathKey, PathLocks, PathRequest, Relation};
use lockcore::LockSet;
use std::collections::BTreeSet;

/// Steps a generated path is made of (list entries of `y` are told apart by `@id`).
const STEPS: [&str; 5] = ["a", "b", "x", "y[@id='1']", "y[@id='2']"];
const MAX_OPS: usize = 48;

/// A generated path: 1 to 3 steps, each an index into `STEPS`.
#[derive(Arbitrary, Debug, Clone)]
struct GenPath {
    steps: [u8; 3],
    depth: u8,
}

impl GenPath {
    fn key(&self) -> PathKey {
        let depth = usize::from(self.depth % 3) + 1;
        // The anchor is `a` or `b`; below it any step.
        let mut text = format!("/{}", STEPS[usize::from(self.steps[0] % 2)]);
        for s in &self.steps[1..depth] {
            text.push('/');
            text.push_str(STEPS[usize::from(*s) % STEPS.len()]);
        }
        PathKey::parse(&text).unwrap_or_else(|e| panic!("generated path {text:?} refused: {e}"))
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// `try_acquire` by owner `.0 % 3` of `(path, exclusive?)`, 1 to 4 of them.
    Lock(u8, Vec<(GenPath, bool)>),
    /// Drop the `n % held`-th granted set.
    Drop(u8),
    /// Turn the `n % held`-th granted set into a ticket and release it by ticket.
    Ticket(u8),
    /// Parse arbitrary text as a path.
    Parse(String),
}

/// A granted set and the paths the oracle believes it holds (exclusive?).
type Held<'t> = (LockSet<'t, PathKey>, Vec<(PathKey, bool)>);

fn conflicts(a: &(PathKey, bool), b: &(PathKey, bool)) -> bool {
    a.0.overlaps(&b.0) && (a.1 || b.1)
}

fn parse_round_trip(text: &str) {
    let Ok(key) = PathKey::parse(text) else { return };
    let again = PathKey::parse(key.as_str()).unwrap_or_else(|e| panic!("{key} does not parse again: {e}"));
    assert_eq!(again, key, "{text:?} printed as {key} parses to another key");
    assert_eq!(again.to_string(), key.to_string());
    let ancestors: Vec<PathKey> = key.ancestors().collect();
    assert_eq!(ancestors.len() + 1, key.depth(), "{key}: ancestors against depth");
    for (d, a) in ancestors.iter().enumerate() {
        assert!(a.is_ancestor_of(&key) && a.overlaps(&key) && key.overlaps(a), "{a} is not above {key}");
        assert_eq!(a.depth(), d + 1, "{a}: depth of the ancestor at {d}");
    }
}

fn lock<'t>(locks: &'t PathLocks, held: &mut Vec<Held<'t>>, owner: u8, items: &[(GenPath, bool)]) {
    let want: Vec<(PathKey, bool)> = items.iter().take(4).map(|(p, x)| (p.key(), *x)).collect();
    if want.is_empty() {
        return;
    }
    let req = want.iter().fold(PathRequest::new(format!("o{}", owner % 3)), |r, (k, x)| {
        if *x {
            r.exclusive(k.clone())
        } else {
            r.shared(k.clone())
        }
    });
    let expected: BTreeSet<u64> = held
        .iter()
        .filter(|(_, has)| has.iter().any(|h| want.iter().any(|w| conflicts(h, w))))
        .map(|(s, _)| s.grant().0)
        .collect();
    match locks.try_acquire(req) {
        Ok(set) => {
            assert!(expected.is_empty(), "granted {want:?} over the conflicting grants {expected:?}");
            let keys: BTreeSet<PathKey> = want.iter().flat_map(|(k, _)| k.ancestors().chain([k.clone()])).collect();
            let got: BTreeSet<PathKey> = set.locks().map(|(k, _, _)| k.clone()).collect();
            assert_eq!(got, keys, "a grant of {want:?} holds other keys");
            held.push((set, want));
        }
        Err(PathAcquireError::Conflict(c)) => {
            assert!(!expected.is_empty(), "refused {want:?} with nothing in the way: {c}");
            let named: BTreeSet<u64> = c.blocks.iter().filter_map(|b| b.grant).map(|g| g.0).collect();
            assert_eq!(named, expected, "the blocks name other grants than those in the way: {c}");
            for b in &c.blocks {
                assert!(want.iter().any(|(k, _)| *k == b.fragment), "{b} names a fragment not asked for");
                let relation_holds = match b.relation {
                    Relation::Same => b.path == b.fragment,
                    Relation::Ancestor => b.path.is_ancestor_of(&b.fragment),
                    Relation::Descendant => b.fragment.is_ancestor_of(&b.path),
                    _ => false,
                };
                assert!(relation_holds, "wrong relation: {b}");
                let holder = held.iter().find(|(s, _)| Some(s.grant()) == b.grant).map(|(_, h)| h);
                let real = holder.is_some_and(|h| h.iter().any(|hk| hk.0 == b.path && want.iter().any(|w| conflicts(hk, w))));
                assert!(real, "{b} does not name a conflicting lock of its holder");
            }
        }
        Err(other) => panic!("unexpected error for {want:?}: {other}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let locks = PathLocks::builder().shards(2).build();
    let mut held: Vec<Held<'_>> = Vec::new();
    for _ in 0..MAX_OPS {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        match op {
            Op::Lock(owner, items) => lock(&locks, &mut held, owner, &items),
            Op::Drop(n) if !held.is_empty() => drop(held.swap_remove(usize::from(n) % held.len())),
            Op::Ticket(n) if !held.is_empty() => {
                let (set, _) = held.swap_remove(usize::from(n) % held.len());
                let ticket = set.into_ticket();
                locks.release(&ticket).unwrap_or_else(|e| panic!("releasing a fresh ticket: {e}"));
                assert!(locks.release(&ticket).is_err(), "a ticket released twice");
            }
            Op::Drop(_) | Op::Ticket(_) => {}
            Op::Parse(text) => parse_round_trip(&text),
        }
    }
    drop(held);
    assert_eq!(locks.table().key_count(), 0, "keys left held after every set was released");
});
