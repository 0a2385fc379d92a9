//! What a command asks for: owner, keys, modes and the message others see.

use crate::mode::Mode;
use smallvec::SmallVec;
use std::fmt;
use std::sync::Arc;

/// The most keys one request may name. Larger requests get [`RequestError::TooManyKeys`]:
/// an engine command that locks more than this is almost certainly a bug, and the limit
/// bounds the time any one acquisition holds the shard latches.
pub const MAX_KEYS: usize = 4096;

/// Who holds a lock: the command (or task, or server) that asked for it.
///
/// Cheap to clone (a shared string). Owners are labels, not capabilities: release goes by grant,
/// never by owner, except through the explicit [`LockTable::release_owner`](crate::LockTable::release_owner).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner(Arc<str>);

impl Owner {
    /// An owner named `name` (a command id, say).
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    /// The owner's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Owner({:?})", &*self.0)
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Owner {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for Owner {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

impl serde::Serialize for Owner {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Owner {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Owner::from)
    }
}

/// Why a holder holds a key, shown to whoever conflicts with it (oVirt's lock message).
///
/// Structured: a reason plus named details, so a front end can translate or render it
/// (`reason = "VM is being migrated"`, `vm = "web-1"`). Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct LockMessage(Arc<MessageBody>);

#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
struct MessageBody {
    reason: String,
    details: Vec<(String, String)>,
}

impl LockMessage {
    /// A message with a reason and no details.
    pub fn new(reason: impl Into<String>) -> Self {
        Self(Arc::new(MessageBody { reason: reason.into(), details: Vec::new() }))
    }

    /// Adds a named detail.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.0).details.push((name.into(), value.into()));
        self
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        &self.0.reason
    }

    /// The named details, in the order they were added.
    pub fn details(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.details.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl fmt::Debug for LockMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LockMessage({self})")
    }
}

impl fmt::Display for LockMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.reason)?;
        let mut sep = " (";
        for (k, v) in &self.0.details {
            write!(f, "{sep}{k}: {v}")?;
            sep = ", ";
        }
        if !self.0.details.is_empty() {
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl From<&str> for LockMessage {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

/// One key of a request.
#[derive(Clone, Debug)]
pub(crate) struct Item<K> {
    pub(crate) key: K,
    pub(crate) mode: Mode,
    pub(crate) message: Option<LockMessage>,
}

/// An all-or-nothing request: an owner and the keys it wants, each in a mode.
///
/// Naming a key twice collapses the two into the stronger mode (shared + exclusive is taken
/// exclusive); the first message given for the key is kept.
///
/// ```
/// use lockcore::{LockMessage, Request};
/// let req = Request::new("AddVmFromTemplate-7")
///     .shared("template-1")
///     .exclusive_with("vm-42", LockMessage::new("VM is being created").with("vm", "web-1"));
/// assert_eq!(req.len(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct Request<K> {
    pub(crate) owner: Owner,
    pub(crate) items: SmallVec<[Item<K>; 8]>,
}

impl<K> Request<K> {
    /// An empty request for `owner`.
    pub fn new(owner: impl Into<Owner>) -> Self {
        Self { owner: owner.into(), items: SmallVec::new() }
    }

    /// Adds `key` in `mode` with an optional message.
    #[inline]
    pub fn lock(mut self, key: K, mode: Mode, message: Option<LockMessage>) -> Self {
        self.items.push(Item { key, mode, message });
        self
    }

    /// Adds `key` in `mode` with an optional message, in place: for building a request in a
    /// loop, where the by-value builder methods would move the whole request at every step.
    ///
    /// ```
    /// use lockcore::{Mode, Request};
    /// let mut req = Request::new("ImportVms-3");
    /// for vm in ["vm-1", "vm-2", "vm-3"] {
    ///     req.push(vm, Mode::EXCLUSIVE, None);
    /// }
    /// assert_eq!(req.len(), 3);
    /// ```
    #[inline]
    pub fn push(&mut self, key: K, mode: Mode, message: Option<LockMessage>) -> &mut Self {
        self.items.push(Item { key, mode, message });
        self
    }

    /// Adds `key` shared.
    #[inline]
    pub fn shared(self, key: K) -> Self {
        self.lock(key, Mode::SHARED, None)
    }

    /// Adds `key` exclusive.
    #[inline]
    pub fn exclusive(self, key: K) -> Self {
        self.lock(key, Mode::EXCLUSIVE, None)
    }

    /// Adds `key` shared, with the message others see if they conflict with it.
    #[inline]
    pub fn shared_with(self, key: K, message: impl Into<LockMessage>) -> Self {
        self.lock(key, Mode::SHARED, Some(message.into()))
    }

    /// Adds `key` exclusive, with the message others see if they conflict with it.
    #[inline]
    pub fn exclusive_with(self, key: K, message: impl Into<LockMessage>) -> Self {
        self.lock(key, Mode::EXCLUSIVE, Some(message.into()))
    }

    /// The owner.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Number of keys named, counting duplicates.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no key is named (such a request is refused with [`RequestError::Empty`]).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The keys and modes named, in the order given.
    pub fn keys(&self) -> impl Iterator<Item = (&K, Mode)> {
        self.items.iter().map(|i| (&i.key, i.mode))
    }

    /// The keys, modes and messages named, in the order given (duplicates included), for a
    /// backend that stores the request elsewhere (a database table, say).
    ///
    /// ```
    /// use lockcore::{Mode, Request};
    /// let req = Request::new("cmd-1").shared("a").exclusive_with("b", "being copied");
    /// let items: Vec<_> = req.entries().map(|(k, m, msg)| (*k, m, msg.map(|m| m.to_string()))).collect();
    /// assert_eq!(items, [("a", Mode::SHARED, None), ("b", Mode::EXCLUSIVE, Some("being copied".to_string()))]);
    /// ```
    pub fn entries(&self) -> impl Iterator<Item = (&K, Mode, Option<&LockMessage>)> {
        self.items.iter().map(|i| (&i.key, i.mode, i.message.as_ref()))
    }
}

/// A request the table refuses to consider.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// The request names no key.
    Empty,
    /// The request names more than [`MAX_KEYS`] keys.
    TooManyKeys {
        /// Keys named.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A mode that the table's [`ModeTable`](crate::ModeTable) does not have.
    UnknownMode(Mode),
    /// A request that a backend other than the in-memory table cannot store (a lock name longer
    /// than a database column, say); the in-memory table never returns it.
    Backend {
        /// Why, naming the key or owner at fault.
        reason: String,
    },
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("the lock request names no key"),
            Self::TooManyKeys { len, max } => {
                write!(f, "the lock request names {len} keys, more than the limit of {max}")
            }
            Self::UnknownMode(m) => write!(f, "the lock request uses mode {}, which this table does not have", m.0),
            Self::Backend { reason } => write!(f, "the lock backend cannot take this request: {reason}"),
        }
    }
}

impl std::error::Error for RequestError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_renders_details() {
        let m = LockMessage::new("VM is being migrated").with("vm", "web-1").with("host", "h2");
        assert_eq!(m.to_string(), "VM is being migrated (vm: web-1, host: h2)");
        assert_eq!(m.reason(), "VM is being migrated");
        assert_eq!(m.details().count(), 2);
        assert_eq!(LockMessage::from("plain").to_string(), "plain");
    }

    #[test]
    fn owner_and_message_roundtrip_through_serde() {
        let o = Owner::new("cmd-1");
        let s = serde_json::to_string(&o).unwrap();
        assert_eq!(s, "\"cmd-1\"");
        assert_eq!(serde_json::from_str::<Owner>(&s).unwrap(), o);
        let m = LockMessage::new("r").with("a", "b");
        let back: LockMessage = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn request_errors_read_well() {
        assert_eq!(RequestError::Empty.to_string(), "the lock request names no key");
        assert!(RequestError::TooManyKeys { len: 5000, max: MAX_KEYS }.to_string().contains("5000"));
        assert!(RequestError::UnknownMode(Mode(7)).to_string().contains("mode 7"));
    }
}
