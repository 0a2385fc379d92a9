//! Buffers for the entries of guards that lock more than one key.
//!
//! A [`LockSet`](crate::LockSet) keeps one key inline and the keys of a larger request in a
//! heap buffer. So that a granted request of up to 16 keys allocates nothing, those buffers
//! are reused: a released guard gives its buffer back to a small pool, and the next request
//! takes it. The pool is striped like the metrics (one stripe per thread, most of the time), so
//! taking and giving a buffer is an uncontended lock on the thread's own cache line; an inline
//! guard of all 16 keys would instead cost a copy of several hundred bytes every time a guard
//! is moved (out of `try_acquire`, out of its `Result`, into the caller's variable).

use crate::grant::Entry;
use crate::metrics::{stripe_index, STRIPES};
use crate::sync::pool::Mutex;

/// Buffers kept per stripe.
const KEPT: usize = 4;
/// Buffers larger than this many entries are freed rather than kept (a rare huge request must
/// not pin its memory).
const MAX_KEPT_CAPACITY: usize = 64;
/// The capacity of a new buffer: every request of up to this many keys fits without growing it.
const NEW_CAPACITY: usize = 16;

#[repr(align(128))]
struct Stripe<K>(Mutex<Vec<Vec<Entry<K>>>>);

pub(crate) struct EntryPool<K> {
    stripes: Box<[Stripe<K>]>,
}

impl<K> EntryPool<K> {
    pub(crate) fn new() -> Self {
        Self { stripes: (0..STRIPES).map(|_| Stripe(Mutex::new(Vec::new()))).collect() }
    }

    /// An empty buffer with room for at least `n` entries.
    pub(crate) fn take(&self, n: usize) -> Vec<Entry<K>> {
        let mut v = self.stripes[stripe_index()].0.lock().pop().unwrap_or_default();
        v.reserve(n.max(NEW_CAPACITY));
        v
    }

    /// Gives a buffer back (its entries, if any, are dropped first).
    pub(crate) fn give(&self, mut v: Vec<Entry<K>>) {
        if v.capacity() > MAX_KEPT_CAPACITY {
            return;
        }
        v.clear();
        let mut kept = self.stripes[stripe_index()].0.lock();
        if kept.len() < KEPT {
            kept.push(v);
        }
    }
}
