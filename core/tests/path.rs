//! Path locks through the public API: parsing and normalization, malformed paths, conflicts and
//! their messages, waiting and tickets, and a proptest against a naive oracle that checks every
//! pair of held paths for overlap and mode conflict directly (no intention modes at all).

use lockcore::{
    Hierarchy, LockTable, Mode, ModeTable, PathAcquireError, PathErrorKind, PathKey, PathLocks, PathRequest, Relation,
    Request, Ticket, MAX_DEPTH, MAX_PATH_LEN,
};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::time::Duration;

fn p(s: &str) -> PathKey {
    PathKey::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn err_of(s: &str) -> (usize, PathErrorKind) {
    let e = PathKey::parse(s).expect_err(s);
    (e.position, e.kind)
}

// ---------------------------------------------------------------- parsing and normalization

#[test]
fn equal_paths_compare_equal_after_normalization() {
    let canonical = "/dataspace/anchor/parent[@id='1']/child";
    for spelling in [
        canonical,
        "/dataspace/anchor/parent[@id=\"1\"]/child",
        "/dataspace/anchor/parent[ @id = '1' ]/child",
        "/dataspace/anchor/parent[\t@id=\n'1']/child",
    ] {
        let k = p(spelling);
        assert_eq!(k.as_str(), canonical, "{spelling}");
        assert_eq!(k, p(canonical));
    }
    // Predicates are sorted by attribute, and `and` is the same as two brackets.
    let a = p("/r/item[@b='2'][@a='1']");
    assert_eq!(a.as_str(), "/r/item[@a='1'][@b='2']");
    assert_eq!(a, p("/r/item[@a='1' and @b='2']"));
    assert_eq!(a, p("/r/item[ @b = \"2\"  and  @a='1' ]"));
    // A value holding a single quote keeps double quotes; slashes and brackets inside values
    // are data, not syntax.
    assert_eq!(p("/r/x[@n=\"it's\"]").as_str(), "/r/x[@n=\"it's\"]");
    let tricky = p("/r/x[@url='http://h/a[1]']/y");
    assert_eq!(tricky.depth(), 3);
    assert_eq!(tricky.parent().unwrap().as_str(), "/r/x[@url='http://h/a[1]']");
    // Prefixed names, unicode names, empty values.
    assert_eq!(p("/ns:a/b.c-d_e/ünï[@ns:k='']").steps().collect::<Vec<_>>(), ["ns:a", "b.c-d_e", "ünï[@ns:k='']"]);
    // Different values, names or predicates are different paths.
    assert_ne!(p("/r/item[@id='1']"), p("/r/item[@id='2']"));
    assert_ne!(p("/r/item[@id='1']"), p("/r/item"));
    assert_ne!(p("/r/item"), p("/R/item"));
}

#[test]
fn ancestors_are_cheap_prefixes_and_equal_to_parsed_paths() {
    let k = p("/a/b[@id='1']/c/d");
    assert_eq!(k.depth(), 4);
    let up: Vec<PathKey> = k.ancestors().collect();
    assert_eq!(up, [p("/a"), p("/a/b[@id='1']"), p("/a/b[@id='1']/c")]);
    assert_eq!(k.anchor(), p("/a"));
    assert_eq!(k.ancestor(4), Some(k.clone()));
    assert_eq!(k.ancestor(0), None);
    assert_eq!(k.ancestor(5), None);
    assert_eq!(p("/a").parent(), None);
    assert_eq!(p("/a").ancestors().len(), 0);
    // Hashes agree between an ancestor view and a fresh parse (the table relies on it).
    let t = LockTable::<PathKey>::new();
    let held = t.try_acquire(Request::new("o").exclusive(up[1].clone())).unwrap();
    assert!(t.try_acquire(Request::new("o2").exclusive(p("/a/b[@id='1']"))).is_err());
    drop(held);
    // Relations are by step, not by text prefix.
    assert!(p("/a").is_ancestor_of(&p("/a/b")));
    assert!(!p("/a").is_ancestor_of(&p("/ab")));
    assert!(!p("/a").is_ancestor_of(&p("/a")));
    assert!(!p("/a/b").is_ancestor_of(&p("/a")));
    assert!(!p("/a/b").is_ancestor_of(&p("/a/b[@k='v']/c")));
    assert!(p("/a/b").overlaps(&p("/a")) && p("/a").overlaps(&p("/a/b/c")) && p("/a").overlaps(&p("/a")));
    assert!(!p("/a/b").overlaps(&p("/a/c")));
}

#[test]
fn malformed_paths_name_the_byte_and_the_fault() {
    assert_eq!(err_of(""), (0, PathErrorKind::Empty));
    assert_eq!(err_of("/"), (0, PathErrorKind::Empty));
    assert_eq!(err_of("a/b"), (0, PathErrorKind::MissingSlash));
    assert_eq!(err_of("/a//b"), (3, PathErrorKind::EmptyStep));
    assert_eq!(err_of("/a/"), (3, PathErrorKind::EmptyStep));
    assert_eq!(err_of("/a b"), (2, PathErrorKind::Unexpected(' ')));
    assert_eq!(err_of("/a/1b"), (3, PathErrorKind::ExpectedName));
    assert_eq!(err_of("/a/$"), (3, PathErrorKind::Unexpected('$')));
    assert_eq!(err_of("/a[id='1']"), (3, PathErrorKind::ExpectedAttribute));
    assert_eq!(err_of("/a[1]"), (3, PathErrorKind::ExpectedAttribute));
    assert_eq!(err_of("/a[@id'1']"), (6, PathErrorKind::ExpectedEquals));
    assert_eq!(err_of("/a[@id=1]"), (7, PathErrorKind::ExpectedValue));
    assert_eq!(err_of("/a[@id='1]"), (7, PathErrorKind::UnterminatedValue));
    assert_eq!(err_of("/a[@id='1'"), (10, PathErrorKind::UnterminatedPredicate));
    assert_eq!(err_of("/a[@id='1' or @x='2']"), (11, PathErrorKind::UnterminatedPredicate));
    assert_eq!(err_of("/a[@id='1' andy]"), (11, PathErrorKind::UnterminatedPredicate));
    assert_eq!(err_of("/a[@id='1'][@id='2']"), (13, PathErrorKind::DuplicateAttribute("id".into())));
    assert_eq!(err_of("/a[@id='1']x"), (11, PathErrorKind::Unexpected('x')));
    assert_eq!(err_of("/a:"), (3, PathErrorKind::ExpectedName));
    let deep = "/a".repeat(MAX_DEPTH + 1);
    assert_eq!(err_of(&deep), (2 * MAX_DEPTH, PathErrorKind::TooDeep));
    assert!(PathKey::parse(&"/a".repeat(MAX_DEPTH)).is_ok());
    let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
    assert_eq!(err_of(&long).1, PathErrorKind::TooLong { len: MAX_PATH_LEN + 1 });
    // Readable, and a std error.
    let e = PathKey::parse("/a[@id=1]").unwrap_err();
    assert_eq!(e.to_string(), "invalid path at byte 7: expected a value in single or double quotes");
    let _: &dyn std::error::Error = &e;
}

#[test]
fn paths_roundtrip_through_serde_and_bad_ones_are_refused() {
    let k = p("/a/b[@id=\"x\"]");
    let json = serde_json::to_string(&k).unwrap();
    assert_eq!(json, "\"/a/b[@id='x']\"");
    assert_eq!(serde_json::from_str::<PathKey>(&json).unwrap(), k);
    let e = serde_json::from_str::<PathKey>("\"/a//b\"").unwrap_err();
    assert!(e.to_string().contains("invalid path at byte 3"), "{e}");
}

// ---------------------------------------------------------------- locking

fn held_msg(locks: &PathLocks, req: PathRequest) -> String {
    locks.try_acquire(req).expect_err("should conflict").to_string()
}

#[test]
fn anchor_excludes_fragments_and_siblings_run_in_parallel() {
    let locks = PathLocks::new();
    let b = locks.try_acquire(PathRequest::new("w1").exclusive(p("/a/b"))).unwrap();
    let c = locks.try_acquire(PathRequest::new("w2").exclusive(p("/a/c"))).unwrap();
    // Readers of other branches and of other anchors are fine.
    let d = locks.try_acquire(PathRequest::new("r").shared(p("/a/d/e")).shared(p("/z"))).unwrap();
    // The anchor, in either mode, is not; nor is anything under a held fragment.
    assert!(locks.try_acquire(PathRequest::new("x").exclusive(p("/a"))).is_err());
    assert!(locks.try_acquire(PathRequest::new("x").shared(p("/a"))).is_err());
    assert!(locks.try_acquire(PathRequest::new("x").shared(p("/a/b/deep/er"))).is_err());
    drop((b, c, d));
    let all = locks.try_acquire(PathRequest::new("admin").exclusive(p("/a"))).unwrap();
    assert!(locks.try_acquire(PathRequest::new("x").shared(p("/a/q"))).is_err());
    assert!(locks.try_acquire(PathRequest::new("x").exclusive(p("/b"))).is_ok());
    drop(all);
    assert!(locks.snapshot().held.is_empty());
}

#[test]
fn conflicts_name_the_path_its_relation_holder_and_message() {
    let locks = PathLocks::new();
    let anchor = locks.try_acquire(PathRequest::new("sync-watchdog-2").exclusive_with(p("/a"), "model sync")).unwrap();
    assert_eq!(
        held_msg(&locks, PathRequest::new("x").exclusive(p("/a/b"))),
        "fragment /a/b is locked: its anchor /a is held exclusively by sync-watchdog-2 (model sync)"
    );
    assert_eq!(
        held_msg(&locks, PathRequest::new("x").shared(p("/a"))),
        "fragment /a is locked: it is held exclusively by sync-watchdog-2 (model sync)"
    );
    drop(anchor);

    let mid = locks.try_acquire(PathRequest::new("reader").shared_with(p("/a/b"), "backup")).unwrap();
    assert_eq!(
        held_msg(&locks, PathRequest::new("x").exclusive(p("/a/b/c/d"))),
        "fragment /a/b/c/d is locked: its ancestor /a/b is held shared by reader (backup)"
    );
    // A lock below is found by its grant and named, with its own message.
    let err = locks.try_acquire(PathRequest::new("x").exclusive(p("/a"))).unwrap_err();
    assert_eq!(err.to_string(), "fragment /a is locked: /a/b below it is held shared by reader (backup)");
    let c = err.conflict().unwrap();
    assert_eq!(c.blocks.len(), 1);
    assert_eq!(c.blocks[0].relation, Relation::Descendant);
    assert_eq!(c.blocks[0].fragment, p("/a"));
    assert_eq!(c.blocks[0].path, p("/a/b"));
    assert_eq!(c.blockers()[0].as_str(), "reader");
    assert!(matches!(err, PathAcquireError::Conflict(_)));
    drop(mid);

    // Several holders below: each conflicting one is named, compatible ones are not.
    let w = locks.try_acquire(PathRequest::new("w").exclusive_with(p("/a/x/n"), "edit").shared(p("/a/y"))).unwrap();
    let r = locks.try_acquire(PathRequest::new("r").shared(p("/a/z"))).unwrap();
    let msg = held_msg(&locks, PathRequest::new("s").shared(p("/a")));
    assert_eq!(msg, "fragment /a is locked: /a/x/n below it is held exclusively by w (edit)");
    drop((w, r));
}

#[test]
fn overlapping_paths_in_one_request_join_their_modes() {
    let locks = PathLocks::new();
    let set = locks.try_acquire(PathRequest::new("o").shared(p("/a")).exclusive(p("/a/b"))).unwrap();
    let modes: Vec<(String, Mode)> = set.locks().map(|(k, m, _)| (k.to_string(), m)).collect();
    assert!(modes.contains(&("/a".into(), Mode::SHARED_INTENTION_EXCLUSIVE)), "{modes:?}");
    assert!(modes.contains(&("/a/b".into(), Mode::EXCLUSIVE)), "{modes:?}");
    assert_eq!(modes.len(), 2);
    // SIX lets readers in below, but not writers, and not another reader of the whole anchor.
    assert!(locks.try_acquire(PathRequest::new("r").shared(p("/a/c"))).is_ok());
    assert!(locks.try_acquire(PathRequest::new("w").exclusive(p("/a/c"))).is_err());
    // The holder's SIX on /a is in the way only because of its X below: that is what is named.
    let msg = held_msg(&locks, PathRequest::new("r2").shared(p("/a")));
    assert_eq!(msg, "fragment /a is locked: /a/b below it is held exclusively by o");
    // Its S part is what keeps a writer of a sibling out.
    let msg = held_msg(&locks, PathRequest::new("w2").exclusive(p("/a/d")));
    assert_eq!(msg, "fragment /a/d is locked: its anchor /a is held in shared+intention-exclusive mode by o");
    drop(set);
    // Two paths sharing ancestors take each ancestor once.
    let set = locks.try_acquire(PathRequest::new("o").exclusive(p("/a/b/c")).exclusive(p("/a/b/d"))).unwrap();
    assert_eq!(set.len(), 4);
    assert!(set.token(&p("/a/b/c")).is_some(), "exclusive grants carry fencing tokens");
    assert_eq!(set.token(&p("/a/b")), None, "intention modes are not fenced");
}

#[test]
fn waiting_tickets_async_and_timeouts_work_for_paths() {
    let locks = PathLocks::new();
    let ticket: Ticket<PathKey> =
        locks.try_acquire(PathRequest::new("cmd").exclusive_with(p("/a/b"), "long task")).unwrap().into_ticket();
    let json = serde_json::to_string(&ticket).unwrap();
    let back: Ticket<PathKey> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, ticket);
    let err = locks.acquire(PathRequest::new("admin").exclusive(p("/a")), Duration::from_millis(10)).unwrap_err();
    assert!(matches!(err, PathAcquireError::Timeout(_)));
    assert!(err.to_string().starts_with("timed out waiting: fragment /a is locked: /a/b below it"), "{err}");
    std::thread::scope(|s| {
        let waiter = s.spawn(|| locks.acquire(PathRequest::new("admin").exclusive(p("/a")), Duration::from_secs(30)));
        while locks.snapshot().waiting.is_empty() {
            std::thread::yield_now();
        }
        // A request queued ahead is reported as such.
        let msg = held_msg(&locks, PathRequest::new("late").shared(p("/a/q")));
        assert!(msg.contains("must wait: admin is queued ahead for /a (exclusive)"), "{msg}");
        locks.release(&back).unwrap();
        let set = waiter.join().unwrap().unwrap();
        assert_eq!(set.owner().as_str(), "admin");
    });
    assert!(locks.release(&back).is_err(), "released once only");
    let set = pollster::block_on(locks.acquire_async(PathRequest::new("a").shared(p("/a/b")))).unwrap();
    assert_eq!(locks.held_under(&p("/a")).len(), 1);
    drop(set);
    let bad = pollster::block_on(locks.acquire_async(PathRequest::new("a")));
    assert!(matches!(bad, Err(PathAcquireError::Request(_))));
    assert_eq!(locks.table().release_owner(&"nobody".into()).len(), 0);
}

/// Path locks on a table that `PathLocks` does not own (as a durable wrapper owns its table):
/// a kept ticket survives serialization and is re-taken on a new table after a "restart", where
/// it excludes the anchor again and the report still names the fragment.
#[test]
fn path_tickets_are_retaken_on_a_table_owned_elsewhere() {
    let h = Hierarchy::multi_granularity();
    let before = LockTable::<PathKey>::with_modes(h.modes().clone());
    let req = h.request(PathRequest::new("cmd").exclusive_with(p("/a/b[@id='7']"), "copying"));
    let ticket = before.try_acquire(req).unwrap().into_ticket();
    assert_eq!(ticket.locks.len(), 2, "the fragment and its anchor's intention lock");
    let json = serde_json::to_string(&ticket).unwrap();
    drop(before);

    let back: Ticket<PathKey> = serde_json::from_str(&json).unwrap();
    let after = LockTable::<PathKey>::with_modes(h.modes().clone());
    let again = back.locks.iter().fold(Request::new(back.owner.clone()), |r, l| r.lock(l.key.clone(), l.mode, None));
    let kept = after.try_acquire(again).unwrap();
    let admin = PathRequest::new("admin").exclusive(p("/a"));
    let asked: Vec<(PathKey, Mode)> = admin.paths().map(|(k, m)| (k.clone(), m)).collect();
    let err = after.try_acquire(h.request(admin)).unwrap_err();
    let report = h.explain(&after, err.conflict().unwrap().clone(), &asked);
    assert_eq!(report.to_string(), "fragment /a is locked: /a/b[@id='7'] below it is held exclusively by cmd");
    assert!(after.try_acquire(h.request(PathRequest::new("w2").exclusive(p("/a/c")))).is_ok(), "a sibling is free");
    drop(kept);
}

#[test]
fn a_user_matrix_works_and_bad_maps_are_refused() {
    // Coarse tree locks on the plain shared/exclusive matrix: a writer takes X on each ancestor.
    let h = Hierarchy::new(
        ModeTable::shared_exclusive(),
        &[(Mode::SHARED, Mode::SHARED), (Mode::EXCLUSIVE, Mode::EXCLUSIVE)],
    )
    .unwrap();
    let locks = PathLocks::builder().hierarchy(h).shards(4).build();
    let b = locks.try_acquire(PathRequest::new("w").exclusive(p("/a/b"))).unwrap();
    // Coarse: the anchor itself is held exclusively, and the report says so.
    assert_eq!(
        held_msg(&locks, PathRequest::new("x").shared(p("/a/c"))),
        "fragment /a/c is locked: its anchor /a is held exclusively by w"
    );
    drop(b);
    let r1 = locks.try_acquire(PathRequest::new("r1").shared(p("/a/b"))).unwrap();
    let r2 = locks.try_acquire(PathRequest::new("r2").shared(p("/a/c"))).unwrap();
    drop((r1, r2));
    // Modes unknown to the table are refused by the request, not by a panic.
    let err = locks.try_acquire(PathRequest::new("x").lock(p("/a"), Mode(5), None)).unwrap_err();
    assert!(matches!(err, PathAcquireError::Request(_)), "{err}");
    let se = ModeTable::shared_exclusive();
    assert!(Hierarchy::new(se.clone(), &[(Mode::SHARED, Mode::SHARED)]).is_err());
    assert!(Hierarchy::new(se.clone(), &[(Mode::SHARED, Mode(3)), (Mode::EXCLUSIVE, Mode::SHARED)]).is_err());
    let dup = [(Mode::SHARED, Mode::SHARED), (Mode::SHARED, Mode::SHARED), (Mode::EXCLUSIVE, Mode::EXCLUSIVE)];
    assert!(Hierarchy::new(se, &dup).unwrap_err().to_string().contains("two intention modes"));
    let gray = Hierarchy::multi_granularity();
    assert!(gray.is_intention(Mode::INTENTION_SHARED) && !gray.is_intention(Mode::SHARED));
    assert_eq!(gray.intention(Mode::SHARED_INTENTION_EXCLUSIVE), Some(Mode::INTENTION_EXCLUSIVE));
    assert_eq!(gray.intention(Mode(7)), None);
}

// ---------------------------------------------------------------- proptest: parsing

/// Components of a valid path, rendered with random spacing, quotes and predicate order.
#[derive(Clone, Debug)]
struct Spelled {
    steps: Vec<(String, Vec<(String, String)>)>,
}

fn spelled() -> impl Strategy<Value = Spelled> {
    let name = "[a-z_][a-z0-9_.-]{0,5}";
    let value = "[a-zA-Z0-9 /\\[\\]@=']{0,6}";
    let preds = proptest::collection::btree_map(name, value, 0..3).prop_map(|m| m.into_iter().collect::<Vec<_>>());
    proptest::collection::vec((name.prop_map(String::from), preds), 1..6).prop_map(|steps| Spelled { steps })
}

impl Spelled {
    fn canonical(&self) -> String {
        let mut s = String::new();
        for (name, preds) in &self.steps {
            s.push('/');
            s.push_str(name);
            for (a, v) in preds {
                let q = if v.contains('\'') { '"' } else { '\'' };
                s.push_str(&format!("[@{a}={q}{v}{q}]"));
            }
        }
        s
    }

    /// A different spelling of the same path, chosen by `seed`.
    fn respell(&self, seed: u64) -> String {
        let mut bits = seed;
        let mut next = |n: u64| {
            let r = bits % n;
            bits = bits.rotate_right(7) ^ 0x9e37_79b9_7f4a_7c15;
            r
        };
        let mut s = String::new();
        for (name, preds) in &self.steps {
            s.push('/');
            s.push_str(name);
            let mut preds = preds.clone();
            if next(2) == 0 {
                preds.reverse();
            }
            let sp = |k: u64| [" ", "", "\t", "  "][k as usize];
            let joined = next(2) == 0;
            for (i, (a, v)) in preds.iter().enumerate() {
                let q = if v.contains('\'') || next(2) == 0 && !v.contains('"') { '"' } else { '\'' };
                let open = if !joined || i == 0 { "[" } else { " and " };
                s.push_str(&format!(
                    "{open}{}@{a}{}={}{q}{v}{q}{}",
                    sp(next(4)),
                    sp(next(4)),
                    sp(next(4)),
                    sp(next(4))
                ));
                if !joined || i + 1 == preds.len() {
                    s.push(']');
                }
            }
        }
        s
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 4 } else { 256 }, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any input: an answer, never a panic; an error points inside the input at a char boundary.
    #[test]
    fn parse_never_panics(input in "\\PC{0,40}|[/a-c\\[\\]@='\" and]{0,40}") {
        match PathKey::parse(&input) {
            Ok(k) => prop_assert_eq!(PathKey::parse(k.as_str()).unwrap(), k),
            Err(e) => {
                prop_assert!(e.position <= input.len());
                prop_assert!(input.is_char_boundary(e.position));
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    /// Every spelling of a path parses to its canonical form, and the canonical form is a
    /// fixed point.
    #[test]
    fn spellings_normalize_to_one_key(sp in spelled(), seed in any::<u64>()) {
        let canonical = sp.canonical();
        let k = PathKey::parse(&sp.respell(seed)).map_err(|e| TestCaseError::fail(format!("{}: {e}", sp.respell(seed))))?;
        prop_assert_eq!(k.as_str(), canonical.as_str());
        prop_assert_eq!(PathKey::parse(&canonical).unwrap(), k.clone());
        prop_assert_eq!(k.depth(), sp.steps.len());
        prop_assert_eq!(k.ancestors().count(), sp.steps.len() - 1);
    }
}

// ---------------------------------------------------------------- proptest: the oracle

/// The paths the oracle test draws from: two anchors, three children each (two of them list
/// entries distinguished by a predicate), two grandchildren under each child.
fn universe() -> Vec<PathKey> {
    let mut out = Vec::new();
    for a in ["a", "b"] {
        out.push(p(&format!("/{a}")));
        for c in ["x", "y[@id='1']", "y[@id='2']"] {
            out.push(p(&format!("/{a}/{c}")));
            for g in ["z", "w"] {
                out.push(p(&format!("/{a}/{c}/{g}")));
            }
        }
    }
    out
}

#[derive(Clone, Debug)]
enum Op {
    /// `try_acquire` by owner `.0` of paths (index into the universe, exclusive?).
    Lock(usize, Vec<(usize, bool)>),
    /// Drop the `n % held`-th granted set.
    Drop(usize),
    /// Turn the `n % held`-th granted set into a ticket and release it by ticket.
    Ticket(usize),
}

fn op(n_paths: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, proptest::collection::vec((0..n_paths, any::<bool>()), 1..4)).prop_map(|(o, v)| Op::Lock(o, v)),
        1 => any::<usize>().prop_map(Op::Drop),
        1 => any::<usize>().prop_map(Op::Ticket),
    ]
}

/// The oracle: two locks conflict iff their paths overlap (equal, or one above the other) and
/// they are not both shared. No intention modes, no joins: the definition, checked pairwise.
/// A granted set and the paths the oracle believes it holds (exclusive?).
type Held<'t> = (lockcore::LockSet<'t, PathKey>, Vec<(PathKey, bool)>);

fn conflicts(a: &(PathKey, bool), b: &(PathKey, bool)) -> bool {
    a.0.overlaps(&b.0) && (a.1 || b.1)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 4 } else { 256 }, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn path_locks_agree_with_the_pairwise_oracle(ops in proptest::collection::vec(op(20), 1..40)) {
        let u = universe();
        let locks = PathLocks::builder().shards(2).build();
        // Granted sets with what the oracle believes each holds.
        let mut held: Vec<Held<'_>> = Vec::new();
        for op in ops {
            match op {
                Op::Lock(owner, items) => {
                    let want: Vec<(PathKey, bool)> = items.iter().map(|&(i, x)| (u[i].clone(), x)).collect();
                    let req = want.iter().fold(PathRequest::new(format!("o{owner}")), |r, (k, x)| {
                        if *x { r.exclusive(k.clone()) } else { r.shared(k.clone()) }
                    });
                    let expected: BTreeSet<u64> = held
                        .iter()
                        .filter(|(_, has)| has.iter().any(|h| want.iter().any(|w| conflicts(h, w))))
                        .map(|(s, _)| s.grant().0)
                        .collect();
                    match locks.try_acquire(req) {
                        Ok(set) => {
                            prop_assert!(expected.is_empty(), "granted {:?} over conflicting grants {:?}", want, expected);
                            // Every named path and every ancestor is a key of the grant.
                            let keys: BTreeSet<PathKey> =
                                want.iter().flat_map(|(k, _)| k.ancestors().chain([k.clone()])).collect();
                            prop_assert_eq!(set.len(), keys.len());
                            held.push((set, want));
                        }
                        Err(PathAcquireError::Conflict(c)) => {
                            prop_assert!(!expected.is_empty(), "refused {:?} with nothing in the way: {}", want, c);
                            let named: BTreeSet<u64> = c.blocks.iter().filter_map(|b| b.grant).map(|g| g.0).collect();
                            prop_assert_eq!(&named, &expected, "blocks name other grants: {}", c);
                            for b in &c.blocks {
                                prop_assert!(want.iter().any(|(k, _)| *k == b.fragment), "{}", b);
                                let relation_holds = match b.relation {
                                    Relation::Same => b.path == b.fragment,
                                    Relation::Ancestor => b.path.is_ancestor_of(&b.fragment),
                                    Relation::Descendant => b.fragment.is_ancestor_of(&b.path),
                                    _ => false,
                                };
                                prop_assert!(relation_holds, "wrong relation: {}", b);
                                // The holder really holds that path, in a mode that conflicts.
                                let holder = held.iter().find(|(s, _)| Some(s.grant()) == b.grant).map(|(_, h)| h);
                                let ok = holder.is_some_and(|h| h.iter().any(|hk| hk.0 == b.path && want.iter().any(|w| conflicts(hk, w))));
                                prop_assert!(ok, "{} does not name a conflicting lock", b);
                                prop_assert!(b.to_string().contains(b.path.as_str()));
                            }
                        }
                        Err(other) => prop_assert!(false, "unexpected error {}", other),
                    }
                }
                Op::Drop(n) if !held.is_empty() => {
                    let i = n % held.len();
                    drop(held.swap_remove(i));
                }
                Op::Ticket(n) if !held.is_empty() => {
                    let i = n % held.len();
                    let (set, _) = held.swap_remove(i);
                    let ticket = set.into_ticket();
                    prop_assert!(locks.release(&ticket).is_ok());
                }
                Op::Drop(_) | Op::Ticket(_) => {}
            }
        }
        drop(held);
        prop_assert!(locks.snapshot().held.is_empty());
    }
}

/// A SIX held above (shared there, exclusive below) is in the way of an exclusive path below
/// it, not of a shared one: the block names the exclusive fragment. (Found by the `path_ops`
/// fuzz target: the report named the shared fragment, comparing its own mode with the SIX.)
#[test]
fn a_block_on_an_ancestor_names_the_fragment_its_lock_conflicts_with() {
    let locks = PathLocks::new();
    let _o0 = locks.try_acquire(PathRequest::new("o0").shared(p("/b/x")).exclusive(p("/b/x/y"))).unwrap();
    let err = locks.try_acquire(PathRequest::new("o1").shared(p("/b/x/b")).exclusive(p("/b/x/q"))).unwrap_err();
    let c = err.conflict().expect("a conflict");
    let on_x: Vec<_> = c.blocks.iter().filter(|b| b.path == p("/b/x")).collect();
    assert_eq!(on_x.len(), 1, "{c}");
    assert_eq!(on_x[0].fragment, p("/b/x/q"), "{c}");
    assert_eq!(on_x[0].relation, Relation::Ancestor, "{c}");
    // Shared below the SIX alone is granted.
    assert!(locks.try_acquire(PathRequest::new("o2").shared(p("/b/x/b"))).is_ok());
}
