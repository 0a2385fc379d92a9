//! A stateright model of hierarchical path locks, run on the real `lockcore` path-lock API.
//!
//! The tree is a root with two children, one of which has a child:
//!
//! ```text
//! /root
//! ├── /root/left
//! │   └── /root/left/leaf
//! └── /root/right
//! ```
//!
//! Each of a few clients may, a bounded number of times, ask for one node shared or exclusive
//! (`acquire_async`, polled once: granted at once or queued), release what it holds, or give up
//! a queued request (drop the future). Every transition runs on a real [`PathLocks`].
//!
//! # Why the state is a description that is replayed
//!
//! A checker state must be `Clone + Hash + Eq`, and branching needs an independent copy per
//! successor. The table is neither `Clone` nor hashable (it holds latches, wakers and grant
//! ids), so sharing one behind an `Arc` would let branches corrupt each other. Instead the
//! state is the abstract description — who holds which lock, who waits for which, and the
//! queue's arrival order — and each transition *replays* it onto a fresh table: holders with
//! `try_acquire` (they are compatible, or the table has already failed), then waiters with
//! `acquire_async` polled once, in arrival order. The action is then applied with the real
//! API, and the outcome (granted, queued, woken) read back into the description. Two histories
//! that reach the same holders and queue meet in one state, so the graph stays small and
//! acyclic (each client has a budget of requests).
//!
//! Replay re-decides every waiter from scratch, so it cannot see a wake-up that the table
//! forgot between two steps; each transition instead checks that every waiter it grants was
//! woken by the table (its waker was called). Memory ordering is loom's job
//! (`core/tests/loom_path.rs`), not this model's.
//!
//! Anything unexpected (a replayed holder refused, a waiter grantable on replay, a grant
//! without a wake-up, an error) is recorded in the state rather than panicking: a panic in
//! `next_state` would stop the checker without a trace.

use lockcore::{LockSet, PathAcquire, PathKey, PathLocks, PathRequest};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use stateright::{Model, Property};

/// A node of the model's tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    /// `/root`.
    Root,
    /// `/root/left`.
    Left,
    /// `/root/right`.
    Right,
    /// `/root/left/leaf`.
    Leaf,
}

impl Node {
    /// Every node.
    pub const ALL: [Node; 4] = [Node::Root, Node::Left, Node::Right, Node::Leaf];

    /// The node's path.
    pub fn path(self) -> &'static str {
        match self {
            Node::Root => "/root",
            Node::Left => "/root/left",
            Node::Right => "/root/right",
            Node::Leaf => "/root/left/leaf",
        }
    }

    /// The parent, `None` for the root. Written out, not derived from the paths, so the
    /// model's notion of the tree is independent of the code under test.
    fn parent(self) -> Option<Node> {
        match self {
            Node::Root => None,
            Node::Left | Node::Right => Some(Node::Root),
            Node::Leaf => Some(Node::Left),
        }
    }

    fn is_ancestor_of(self, other: Node) -> bool {
        let mut up = other.parent();
        while let Some(n) = up {
            if n == self {
                return true;
            }
            up = n.parent();
        }
        false
    }

    /// Whether the subtrees of the two nodes overlap (one contains the other).
    pub fn overlaps(self, other: Node) -> bool {
        self == other || self.is_ancestor_of(other) || other.is_ancestor_of(self)
    }
}

/// One lock a client asks for: a node, shared or exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Lock {
    /// The node (and with it, its subtree).
    pub node: Node,
    /// Exclusive, or shared.
    pub exclusive: bool,
}

impl Lock {
    /// The definition: two locks conflict iff their subtrees overlap and one is exclusive.
    pub fn conflicts(self, other: Lock) -> bool {
        self.node.overlaps(other.node) && (self.exclusive || other.exclusive)
    }
}

/// What a client is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Holds nothing and waits for nothing.
    Idle,
    /// Holds a granted lock.
    Holding(Lock),
    /// Is queued for a lock.
    Waiting(Lock),
}

/// A client: what it does, and how many more requests it may make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Client {
    /// Current status.
    pub status: Status,
    /// Requests left.
    pub budget: u8,
    /// Whether its current or last lock was granted out of the queue (after a wake-up).
    pub was_queued: bool,
}

/// A state of the model: the description that is replayed onto a fresh table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PathState {
    /// The clients, by index.
    pub clients: Vec<Client>,
    /// Waiting clients in arrival order (the table's queue order).
    pub queue: Vec<u8>,
    /// What went wrong, if the table did something the protocol does not allow. A state with
    /// an error is terminal.
    pub error: Option<String>,
}

/// A step of one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// The client asks for a lock.
    Request(u8, Lock),
    /// The client releases what it holds.
    Release(u8),
    /// The client gives up its queued request.
    Cancel(u8),
}

/// The model: how many clients, and how many requests each may make.
#[derive(Clone, Debug)]
pub struct PathModel {
    /// Number of clients (at most 255).
    pub clients: u8,
    /// Requests per client.
    pub budget: u8,
}

impl Default for PathModel {
    /// Three clients, one request each.
    fn default() -> Self {
        Self { clients: 3, budget: 1 }
    }
}

/// A waker that records whether it was called.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Relaxed: read on this same thread after the table returns (the model is sequential).
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A queued request on the replayed table.
struct Pending<'t> {
    client: u8,
    lock: Lock,
    fut: PathAcquire<'t>,
    woken: Arc<Flag>,
}

impl<'t> Pending<'t> {
    /// Polls once: the set if granted, `Err` with a message on an error, `Ok(None)` if queued.
    fn poll(&mut self) -> Result<Option<LockSet<'t, PathKey>>, String> {
        let waker = Waker::from(Arc::clone(&self.woken));
        match Pin::new(&mut self.fut).poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(Ok(set)) => Ok(Some(set)),
            Poll::Ready(Err(e)) => Err(format!("client {} got an error: {e}", self.client)),
            Poll::Pending => Ok(None),
        }
    }
}

fn request(client: u8, lock: Lock) -> Result<PathRequest, String> {
    let path = PathKey::parse(lock.node.path()).map_err(|e| e.to_string())?;
    let req = PathRequest::new(format!("client-{client}"));
    Ok(if lock.exclusive { req.exclusive(path) } else { req.shared(path) })
}

impl PathModel {
    /// Replays `state` onto a fresh table, applies `action` with the real API and describes
    /// the result. Errors are returned as text, to be stored in the state.
    fn step(&self, state: &PathState, action: Action) -> Result<PathState, String> {
        // One shard: the model is sequential, and a small table is cheap to build per step.
        let locks = PathLocks::builder().shards(1).build();
        let mut next = state.clone();
        let mut held: Vec<(u8, LockSet<'_, PathKey>)> = Vec::new();
        for (i, c) in state.clients.iter().enumerate() {
            if let Status::Holding(lock) = c.status {
                let set = locks
                    .try_acquire(request(i as u8, lock)?)
                    .map_err(|e| format!("replaying client {i}'s grant was refused: {e}"))?;
                held.push((i as u8, set));
            }
        }
        let mut queue: Vec<Pending<'_>> = Vec::new();
        for &i in &state.queue {
            let Status::Waiting(lock) = state.clients[usize::from(i)].status else {
                return Err(format!("client {i} is queued but not waiting"));
            };
            let mut p = Pending {
                client: i,
                lock,
                fut: locks.acquire_async(request(i, lock)?),
                woken: Arc::new(Flag(AtomicBool::new(false))),
            };
            if p.poll()?.is_some() {
                return Err(format!("client {i} waits although it could be granted at once"));
            }
            queue.push(p);
        }
        match action {
            Action::Request(i, lock) => {
                let c = &mut next.clients[usize::from(i)];
                c.budget = c.budget.saturating_sub(1);
                c.was_queued = false;
                let mut p = Pending {
                    client: i,
                    lock,
                    fut: locks.acquire_async(request(i, lock)?),
                    woken: Arc::new(Flag(AtomicBool::new(false))),
                };
                match p.poll()? {
                    Some(_granted) => c.status = Status::Holding(lock),
                    None => {
                        c.status = Status::Waiting(lock);
                        next.queue.push(i);
                    }
                }
                // Dropping the guards and futures now is fine: the next step replays.
                return Ok(next);
            }
            Action::Release(i) => {
                let at = held.iter().position(|(c, _)| *c == i).ok_or("release by a client that holds nothing")?;
                drop(held.swap_remove(at));
                next.clients[usize::from(i)].status = Status::Idle;
            }
            Action::Cancel(i) => {
                let at = queue.iter().position(|p| p.client == i).ok_or("cancel by a client that does not wait")?;
                drop(queue.remove(at));
                next.queue.retain(|&c| c != i);
                next.clients[usize::from(i)].status = Status::Idle;
            }
        }
        // A release or a cancel may let waiters go: poll each, as an executor would after a
        // wake-up, and require that every waiter now granted was woken by the table.
        for p in &mut queue {
            let (client, lock) = (p.client, p.lock);
            if let Some(set) = p.poll()? {
                // Kept until the end of the step: the waiters after it must see it held.
                held.push((client, set));
                if !p.woken.0.load(Ordering::Relaxed) {
                    return Err(format!("client {client} could go but was never woken"));
                }
                next.clients[usize::from(client)].status = Status::Holding(lock);
                next.clients[usize::from(client)].was_queued = true;
                next.queue.retain(|&c| c != client);
            }
        }
        Ok(next)
    }
}

/// Holders whose subtrees overlap in incompatible modes, if any.
pub fn incompatible_holders(state: &PathState) -> Option<(usize, usize)> {
    let held: Vec<(usize, Lock)> = state
        .clients
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c.status {
            Status::Holding(l) => Some((i, l)),
            _ => None,
        })
        .collect();
    held.iter()
        .enumerate()
        .find_map(|(n, &(i, a))| held[n + 1..].iter().find(|(_, b)| a.conflicts(*b)).map(|&(j, _)| (i, j)))
}

fn holds(state: &PathState, node: Node, exclusive: bool) -> bool {
    state.clients.iter().any(|c| c.status == Status::Holding(Lock { node, exclusive }))
}

impl Model for PathModel {
    type State = PathState;
    type Action = Action;

    fn init_states(&self) -> Vec<PathState> {
        let idle = Client { status: Status::Idle, budget: self.budget, was_queued: false };
        vec![PathState { clients: vec![idle; usize::from(self.clients)], queue: Vec::new(), error: None }]
    }

    fn actions(&self, state: &PathState, actions: &mut Vec<Action>) {
        // A broken state is terminal, which keeps its counterexample short.
        if state.error.is_some() || incompatible_holders(state).is_some() {
            return;
        }
        for (i, c) in state.clients.iter().enumerate() {
            let i = i as u8; // at most 255 clients
            match c.status {
                Status::Idle if c.budget > 0 => {
                    for node in Node::ALL {
                        for exclusive in [false, true] {
                            actions.push(Action::Request(i, Lock { node, exclusive }));
                        }
                    }
                }
                Status::Idle => {}
                Status::Holding(_) => actions.push(Action::Release(i)),
                Status::Waiting(_) => actions.push(Action::Cancel(i)),
            }
        }
    }

    fn next_state(&self, state: &PathState, action: Action) -> Option<PathState> {
        Some(self.step(state, action).unwrap_or_else(|e| PathState { error: Some(e), ..state.clone() }))
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("no incompatible holders on overlapping subtrees", |_, s: &PathState| {
                incompatible_holders(s).is_none()
            }),
            // Stated as `always` (a queued request always has a holder it waits for) rather
            // than `eventually`, which is unreliable on graphs with cycles; with every client's
            // requests bounded, a waiter with no holder ahead of it could only wait forever.
            Property::always("no deadlock: whoever waits, waits for a holder", |_, s: &PathState| {
                s.queue.is_empty() || s.clients.iter().any(|c| matches!(c.status, Status::Holding(_)))
            }),
            Property::always("the table behaves as the protocol says", |_, s: &PathState| s.error.is_none()),
            Property::sometimes("two sibling locks held at once", |_, s: &PathState| {
                holds(s, Node::Left, true) && holds(s, Node::Right, true)
            }),
            Property::sometimes("a request waits", |_, s: &PathState| !s.queue.is_empty()),
            Property::sometimes("a queued request is granted later", |_, s: &PathState| {
                s.clients.iter().any(|c| c.was_queued && matches!(c.status, Status::Holding(_)))
            }),
        ]
    }
}
