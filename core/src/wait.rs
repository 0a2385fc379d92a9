//! Waiting: blocking `acquire` with a deadline, and `acquire_async` for any executor.
//!
//! A request that cannot be granted queues one [`WaitNode`] on every one of its keys, holding
//! no key, and sleeps (its queue entries keep the keys' records alive). Whoever changes a key (a release, a waiter leaving the queue) wakes the
//! waiters that this key no longer stops; a woken waiter latches all its shards and decides
//! again, as a request that arrived at its arrival number.
//!
//! No lost wake-ups: a waiter clears its `notified` flag while holding the latches of all its
//! keys' shards, then decides. Any change it did not see is made under one of those latches after
//! its decision, and the flag is set after that change, so the waiter sees the flag and looks
//! again.

use crate::conflict::AcquireError;
use crate::grant::{notify_all, Latches, Prepared};
use crate::guard::LockSet;
use crate::metrics::Counter;
use crate::request::{Owner, Request, RequestError};
use crate::slot::WakeList;
use crate::sync::{current, park_until, Arc, AtomicBool, Mutex, Ordering, Thread};
use crate::table::LockTable;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Rounds of spinning for a wake-up before a blocking waiter sleeps, round `i` spinning `2^i`
/// pause instructions (126 in all, a few microseconds): a holder that keeps its keys for a
/// microsecond or so releases while the waiter spins, and the waiter goes on without a sleep
/// and a wake-up, which cost far more on this machine (hot4 with 1 us holds at 2 threads: 0.66-0.71
/// M commands/s against 0.22-0.23, p99 5 us against 85 us). Blocking `acquire` only: a future
/// does not spin on its executor's thread. None under loom: the spin changes only timing (the
/// waiter sleeps after it exactly as before), and loom explores the sleep.
const SPIN_ROUNDS: u32 = if cfg!(loom) { 0 } else { 6 };

/// Only requests of at most this many keys spin before sleeping. A request of many keys waits
/// for many holders, and each wake-up makes it latch every one of its shards again: spinning, it
/// looked again at each release instead of once per sleep, and the starvation mix's 64-key
/// batches waited 5.5-8 ms instead of 1.2-4.5 (2 threads).
const SPIN_MAX_KEYS: usize = 8;

/// What to wake.
#[derive(Clone)]
enum Target {
    Thread(Thread),
    Task(Waker),
}

/// One waiting request, queued on each of its keys.
pub(crate) struct WaitNode {
    pub(crate) owner: Owner,
    pub(crate) since: Instant,
    notified: AtomicBool,
    target: Mutex<Target>,
}

impl WaitNode {
    fn new(owner: Owner, target: Target) -> Arc<Self> {
        Arc::new(Self { owner, since: Instant::now(), notified: AtomicBool::new(false), target: Mutex::new(target) })
    }

    /// Called after the change that may let this waiter proceed, with no latch held.
    pub(crate) fn notify(&self) {
        // Release: pairs with the Acquire in `is_notified`. The change itself is published by
        // the shard latches the waiter takes before deciding; this only makes the flag visible.
        self.notified.store(true, Ordering::Release);
        let target = self.target.lock().clone();
        match target {
            Target::Thread(t) => t.unpark(),
            Target::Task(w) => w.wake(),
        }
    }

    fn is_notified(&self) -> bool {
        // Acquire: pairs with the Release in `notify`.
        self.notified.load(Ordering::Acquire)
    }

    /// Spins a few microseconds for a notification (see [`SPIN_ROUNDS`]) if `spin`; whether
    /// one came.
    fn spin_for_notify(&self, spin: bool) -> bool {
        for round in 1..=if spin { SPIN_ROUNDS } else { 0 } {
            if self.is_notified() {
                return true;
            }
            for _ in 0..1u32 << round {
                std::hint::spin_loop();
            }
        }
        self.is_notified()
    }

    /// Called with every latch of the request held, just before deciding.
    pub(crate) fn clear(&self) {
        // Relaxed: the latches order this store before any later `notify` on these keys.
        self.notified.store(false, Ordering::Relaxed);
    }

    fn set_waker(&self, waker: &Waker) {
        let mut t = self.target.lock();
        if !matches!(&*t, Target::Task(w) if w.will_wake(waker)) {
            *t = Target::Task(waker.clone());
        }
    }
}

/// What one look at a queued request's keys decided.
enum Decision<'t, K: Hash + Eq + Clone> {
    Granted(LockSet<'t, K>),
    /// Not yet; the prepared request comes back.
    Wait(Prepared<'t, K>),
    /// Gave up at the deadline; no longer queued.
    TimedOut(AcquireError<K>),
}

impl<K: Hash + Eq + Clone> LockTable<K> {
    /// Latches a queued request's keys and grants it if it may go now. Otherwise, if
    /// `timed_out`, gives up its place and returns the conflict; if not, keeps it queued.
    fn decide_queued<'t>(
        &'t self,
        mut p: Prepared<'t, K>,
        node: &WaitNode,
        seq: u64,
        waker: Option<&Waker>,
        timed_out: bool,
    ) -> Decision<'t, K> {
        let refused = self.decide(&mut p, Some((node, seq)), |latches, p| {
            if timed_out {
                let c = self.conflict(latches, p, Some(seq));
                let mut wake = WakeList::new();
                self.leave_queue(latches, p, seq, &mut wake);
                return Some((c, wake));
            }
            if let Some(w) = waker {
                // Before unlatching, so a notify after our decision finds the current waker.
                node.set_waker(w);
            }
            None
        });
        match refused {
            None => {
                self.metrics.record_wait(node.since.elapsed());
                Decision::Granted(p)
            }
            Some(None) => Decision::Wait(p),
            Some(Some((c, wake))) => {
                notify_all(wake);
                self.metrics.add(Counter::Timeouts, 1);
                Decision::TimedOut(AcquireError::Timeout(Box::new(c)))
            }
        }
    }

    /// Takes a queued request out of every queue, waking whoever it held up.
    fn abandon(&self, p: &mut Prepared<'_, K>, seq: u64) {
        let mut wake = WakeList::new();
        let mut latches = Latches::lock(self, &mut p.entries);
        self.leave_queue(&mut latches, p, seq, &mut wake);
        latches.free_idle(&p.entries);
        drop(latches);
        notify_all(wake);
    }

    /// Takes every key of `req` at once, waiting up to `timeout` for them.
    ///
    /// One deadline covers the whole set. While waiting the request holds no key, so batched
    /// requests cannot deadlock one another; it is queued on each key and granted only when
    /// compatible with the holders and with every request queued before it (first come, first
    /// served per key, no barging), so a writer is not starved by a stream of readers.
    ///
    /// # Errors
    /// [`AcquireError::Request`] for an invalid request; [`AcquireError::Timeout`] with the
    /// conflict as it stood at the deadline. On an error nothing is held and nothing queued.
    ///
    /// # Examples
    /// ```
    /// use lockcore::{LockTable, Request};
    /// use std::time::Duration;
    /// let table = LockTable::new();
    /// let held = table.try_acquire(Request::new("a").exclusive(1)).unwrap();
    /// let err = table.acquire(Request::new("b").exclusive(1), Duration::from_millis(5)).unwrap_err();
    /// assert!(err.to_string().starts_with("timed out waiting"));
    /// drop(held);
    /// assert!(table.acquire(Request::new("b").exclusive(1), Duration::from_millis(5)).is_ok());
    /// ```
    pub fn acquire(&self, mut req: Request<K>, timeout: Duration) -> Result<LockSet<'_, K>, AcquireError<K>> {
        let deadline = Instant::now().checked_add(timeout);
        let expired = || deadline.is_some_and(|d| Instant::now() >= d);
        // `prepare`, inline: the guard is built where it is returned from.
        let mut p = LockSet::unarmed(self, req.owner);
        self.prepare_items(&mut req.items, &mut p.entries)?;
        let queued = self.decide(&mut p, None, |latches, p| {
            if timeout.is_zero() {
                return Err(self.conflict(latches, p, None));
            }
            let node = WaitNode::new(p.owner.clone(), Target::Thread(current()));
            let seq = self.enqueue(latches, p, &node);
            Ok((node, seq))
        });
        let (node, seq) = match queued {
            None => return Ok(p),
            Some(Err(c)) => {
                self.metrics.add(Counter::Timeouts, 1);
                return Err(AcquireError::Timeout(Box::new(c)));
            }
            Some(Ok(q)) => q,
        };
        self.metrics.add(Counter::Waits, 1);
        let spin = p.entries.len() <= SPIN_MAX_KEYS;
        loop {
            let timed_out = loop {
                if node.spin_for_notify(spin) {
                    break false;
                }
                if expired() {
                    break true;
                }
                park_until(deadline);
            };
            // At the deadline we still look once more: if the keys are free we take them,
            // since the grant is made before we return.
            p = match self.decide_queued(p, &node, seq, None, timed_out) {
                Decision::Granted(set) => return Ok(set),
                Decision::TimedOut(e) => return Err(e),
                Decision::Wait(p) => p,
            };
        }
    }

    /// Takes every key of `req` at once, as a future that works on any executor.
    ///
    /// The same queueing and fairness as [`acquire`](Self::acquire). There is no deadline:
    /// wrap it in your executor's timeout. Dropping the future before it completes cancels
    /// the wait: nothing is held and its place in the queues is given up.
    ///
    /// # Errors
    /// The future yields [`AcquireError::Request`] for an invalid request.
    ///
    /// # Examples
    /// ```
    /// use lockcore::{LockTable, Request};
    /// let table = LockTable::new();
    /// let set = pollster::block_on(table.acquire_async(Request::new("a").shared("k"))).unwrap();
    /// assert_eq!(set.len(), 1);
    /// ```
    pub fn acquire_async(&self, req: Request<K>) -> Acquire<'_, K> {
        let state = match self.prepare(req) {
            Ok(p) => State::Start(p),
            Err(e) => State::Invalid(e),
        };
        Acquire { table: self, state }
    }
}

enum State<'t, K: Hash + Eq + Clone> {
    Start(Prepared<'t, K>),
    Invalid(RequestError),
    Queued { p: Prepared<'t, K>, node: Arc<WaitNode>, seq: u64 },
    Done,
}

/// The future of [`LockTable::acquire_async`].
#[must_use = "futures do nothing unless polled"]
pub struct Acquire<'t, K: Hash + Eq + Clone> {
    table: &'t LockTable<K>,
    state: State<'t, K>,
}

// The future never pins its fields in place (it only moves them between states), so it may
// move even when the keys it carries could not.
impl<K: Hash + Eq + Clone> Unpin for Acquire<'_, K> {}

impl<'t, K: Hash + Eq + Clone> Future for Acquire<'t, K> {
    type Output = Result<LockSet<'t, K>, AcquireError<K>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let table = this.table;
        match std::mem::replace(&mut this.state, State::Done) {
            State::Invalid(e) => Poll::Ready(Err(AcquireError::Request(e))),
            State::Start(mut p) => {
                let queued = table.decide(&mut p, None, |latches, p| {
                    let node = WaitNode::new(p.owner.clone(), Target::Task(cx.waker().clone()));
                    let seq = table.enqueue(latches, p, &node);
                    (node, seq)
                });
                let Some((node, seq)) = queued else { return Poll::Ready(Ok(p)) };
                table.metrics.add(Counter::Waits, 1);
                this.state = State::Queued { p, node, seq };
                Poll::Pending
            }
            State::Queued { p, node, seq } => {
                if !node.is_notified() {
                    node.set_waker(cx.waker());
                    if !node.is_notified() {
                        this.state = State::Queued { p, node, seq };
                        return Poll::Pending;
                    }
                }
                match table.decide_queued(p, &node, seq, Some(cx.waker()), false) {
                    Decision::Granted(set) => Poll::Ready(Ok(set)),
                    Decision::TimedOut(e) => Poll::Ready(Err(e)),
                    Decision::Wait(p) => {
                        this.state = State::Queued { p, node, seq };
                        Poll::Pending
                    }
                }
            }
            State::Done => panic!("lockcore::Acquire polled after it completed"),
        }
    }
}

impl<K: Hash + Eq + Clone> Drop for Acquire<'_, K> {
    fn drop(&mut self) {
        if let State::Queued { p, seq, .. } = &mut self.state {
            self.table.abandon(p, *seq);
            self.table.metrics.add(Counter::Cancellations, 1);
        }
    }
}
