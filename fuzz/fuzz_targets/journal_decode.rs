//! Arbitrary bytes as a journal, and real journals damaged at arbitrary places.
//!
//! Raw mode: the input (optionally behind a valid header, to get past the magic) is the whole
//! file. Recovery must return a typed error or a table, never panic or hang; when it opens,
//! the journal it leaves must open again cleanly with the same tickets.
//!
//! Damage mode: the input drives a real `Durable` (keep and end tickets), then truncates the
//! journal or flips one bit in it. Recovery must never misread: every ticket it re-takes was
//! kept with exactly those keys and owner, a truncation recovers exactly the acknowledged prefix,
//! and nothing ended in a record that survived comes back.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use lockcore::{Builder, Request};
use lockcore_journal::{
    format, Durability, Durable, JournalError, KeepId, LogJournal, MemoryStorage, OpenOptions, TaskId,
};
use std::collections::{BTreeMap, BTreeSet};

type Engine = Durable<u8, LogJournal<MemoryStorage>>;

fn open(
    disk: &MemoryStorage,
    salvage: bool,
) -> std::result::Result<(Engine, lockcore_journal::RecoveryReport<u8>), JournalError> {
    // Tasks whose name ends in an odd digit are gone: some records are cleaned, some re-taken.
    let registry = |t: &TaskId| t.as_str().bytes().last().is_some_and(|b| b % 2 == 0);
    let j = LogJournal::with_storage(disk.clone(), OpenOptions::new().durability(Durability::Os).salvage(salvage));
    Durable::open(j, Builder::new(), &registry)
}

fn ids(report: &lockcore_journal::RecoveryReport<u8>) -> BTreeSet<KeepId> {
    report.retaken.iter().map(|r| r.kept.id).chain(report.unrecovered.iter().map(|u| u.id())).collect()
}

fn raw(mut u: Unstructured<'_>) -> Result<()> {
    let salvage: bool = u.arbitrary()?;
    let with_header: bool = u.arbitrary()?;
    let mut bytes = Vec::new();
    if with_header {
        format::encode_header(&mut bytes);
    }
    bytes.extend_from_slice(u.take_rest());
    let disk = MemoryStorage::from_bytes(bytes);
    let Ok((engine, report)) = open(&disk, salvage) else { return Ok(()) };
    let first = ids(&report);
    assert_eq!(first.len(), report.retaken.len() + report.unrecovered.len(), "an id reported twice");
    drop(engine);
    // What recovery leaves behind is a clean journal holding the same tickets.
    let (_, again) = open(&disk, false).expect("a recovered journal must open again");
    assert_eq!(again.tail, Default::default());
    assert!(again.cleaned.is_empty());
    assert_eq!(ids(&again), first);
    Ok(())
}

fn damage(u: &mut Unstructured<'_>) -> Result<()> {
    let disk = MemoryStorage::new();
    let (engine, _) = open(&disk, false).expect("a new journal opens");
    // Every keep ever acknowledged, with its owner and keys; the journal length after each step.
    let mut kept: BTreeMap<KeepId, (String, Vec<u8>)> = BTreeMap::new();
    let mut live: Vec<KeepId> = Vec::new();
    let mut steps: Vec<(usize, BTreeSet<KeepId>)> = vec![(disk.bytes().len(), BTreeSet::new())];
    let ops = u.int_in_range(0..=24)?;
    for n in 0..ops {
        if !live.is_empty() && u.ratio(1, 3)? {
            let id = live.remove(u.choose_index(live.len())?);
            engine.end(id).expect("end");
        } else {
            let owner = format!("cmd-{n}");
            let mut req = Request::new(owner.as_str());
            for _ in 0..u.int_in_range(1..=3)? {
                req = req.exclusive(u.int_in_range(0..=15)?);
            }
            let Ok(set) = engine.table().try_acquire(req) else { continue };
            let keys: Vec<u8> = set.locks().map(|(k, _, _)| *k).collect();
            let task = format!("task-{}", u.int_in_range(0..=9u8)?);
            let id = engine.keep(set, [task]).expect("keep");
            kept.insert(id, (owner, keys));
            live.push(id);
        }
        steps.push((disk.bytes().len(), live.iter().copied().collect()));
    }
    drop(engine);
    let mut image = disk.bytes();
    let at = u.choose_index(image.len())?;
    let truncate: bool = u.arbitrary()?;
    if truncate {
        image.truncate(at);
    } else {
        image[at] ^= 1 << u.int_in_range(0..=7)?;
    }
    let damaged = MemoryStorage::from_bytes(image);
    let Ok((_, report)) = open(&damaged, false) else {
        assert!(!truncate || at < format::HEADER_LEN, "a truncated journal must open (torn tail), cut at {at}");
        return Ok(());
    };
    for r in &report.retaken {
        let (owner, keys) = kept.get(&r.kept.id).expect("re-took a ticket that was never kept");
        assert_eq!(r.kept.ticket.owner.as_str(), owner);
        // The same keys; their order in a ticket is the table's (by shard, and a new table's
        // hasher is seeded anew), which is not part of the contract.
        let mut got: Vec<u8> = r.kept.ticket.locks.iter().map(|l| l.key).collect();
        let mut want = keys.clone();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "a re-taken ticket holds other keys than were kept");
    }
    assert!(report.unrecovered.is_empty(), "every surviving record decodes: {:?}", report.unrecovered);
    let back: BTreeSet<KeepId> =
        report.retaken.iter().map(|r| r.kept.id).chain(report.cleaned.iter().map(|c| c.0)).collect();
    if !truncate {
        // A flipped bit is found, or it is in the last record, which then reads as torn: the
        // journal opens with exactly the acknowledged set, or the set before the last record.
        let last = &steps[steps.len() - 1];
        let before = steps.len().checked_sub(2).map(|i| &steps[i]);
        let in_last_record = before.is_some_and(|b| at >= b.0);
        let ok = back == last.1 || (in_last_record && before.is_some_and(|b| back == b.1));
        assert!(ok, "a flip at byte {at} of {} was misread: {back:?}", last.0);
    }
    if truncate {
        // A cut inside the first epoch record leaves a journal with nothing kept.
        let expected = steps.iter().rev().find(|(len, _)| *len <= at).map(|s| s.1.clone()).unwrap_or_default();
        assert_eq!(back, expected, "cut at {at}");
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = match u.arbitrary::<bool>() {
        Ok(true) => damage(&mut u),
        _ => raw(u),
    };
});
