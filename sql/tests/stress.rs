//! Threads of several servers race shared and exclusive requests of one or two keys on both
//! databases, with an in-process shadow checker: no exclusive holder ever overlaps another
//! holder of its key, whatever the interleaving of the transactions.

mod common;

use lockcore::{Mode, Request};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;

const THREADS: usize = 6;
const OPS: usize = 30;
const KEYS: [&str; 3] = ["a", "b", "c"];

#[derive(Default)]
struct Shadow {
    readers: HashMap<String, usize>,
    writers: HashMap<String, usize>,
}

fn race(db: &str) {
    let prefix = common::fresh(db, "stress");
    let shadow = Mutex::new(Shadow::default());
    let mut grants = 0;
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                let (prefix, shadow) = (&prefix, &shadow);
                s.spawn(move || {
                    let locks = common::connect(db, prefix, &format!("srv-{t}"));
                    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ (t as u64 + 1);
                    let mut next = move || {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed
                    };
                    let mut granted = 0;
                    for op in 0..OPS {
                        let mut req = Request::new(format!("op-{t}-{op}"));
                        let mut want = Vec::new();
                        for _ in 0..1 + next() % 2 {
                            let key = KEYS[(next() % 3) as usize].to_string();
                            let mode = if next() % 3 == 0 { Mode::EXCLUSIVE } else { Mode::SHARED };
                            want.push((key.clone(), mode));
                            req = req.lock(key, mode, None);
                        }
                        let Ok(ticket) = locks.acquire(req, Duration::from_secs(5)) else { continue };
                        granted += 1;
                        {
                            let mut sh = shadow.lock();
                            for l in &ticket.locks {
                                let w = sh.writers.get(&l.key).copied().unwrap_or(0);
                                let r = sh.readers.get(&l.key).copied().unwrap_or(0);
                                if l.mode == Mode::EXCLUSIVE {
                                    assert!(
                                        w == 0 && r == 0,
                                        "{} granted exclusive beside {w} writers, {r} readers",
                                        l.key
                                    );
                                    *sh.writers.entry(l.key.clone()).or_default() += 1;
                                } else {
                                    assert_eq!(w, 0, "{} granted shared beside a writer", l.key);
                                    *sh.readers.entry(l.key.clone()).or_default() += 1;
                                }
                            }
                        }
                        std::thread::sleep(Duration::from_millis(1));
                        {
                            let mut sh = shadow.lock();
                            for l in &ticket.locks {
                                let map = if l.mode == Mode::EXCLUSIVE { &mut sh.writers } else { &mut sh.readers };
                                *map.get_mut(&l.key).unwrap() -= 1;
                            }
                        }
                        locks.release(&ticket).unwrap();
                    }
                    granted
                })
            })
            .collect();
        grants = hs.into_iter().map(|h| h.join().unwrap()).sum::<usize>();
    });
    assert!(grants > THREADS * OPS / 2, "only {grants} of {} requests granted", THREADS * OPS);
    let locks = common::connect(db, &prefix, "check");
    assert!(locks.snapshot().unwrap().held.is_empty(), "locks left after every release");
}

#[test]
fn shared_and_exclusive_race_postgres() {
    race("pg");
}

#[test]
fn shared_and_exclusive_race_mariadb() {
    race("my");
}
