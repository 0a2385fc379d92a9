//! What can go wrong with a journal, said so that an operator can act on it.

use crate::format::KeepId;
use std::fmt;
use std::io;

/// Why a journal could not be read, written or recovered.
///
/// After a failed append, fsync or compaction the outcome of that commit is *unknown*: the record
/// may or may not be found by the next start. The journal then refuses every further write
/// ([`JournalError::Failed`]) until it is reopened, when recovery decides from the file.
#[derive(Debug)]
#[non_exhaustive]
pub enum JournalError {
    /// The operating system refused an operation.
    Io {
        /// What the journal was doing.
        op: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The file does not start with a journal header: it is something else.
    NotAJournal {
        /// The first bytes found (at most 8).
        found: Vec<u8>,
    },
    /// The file was written by a newer format that this build cannot read.
    FutureVersion {
        /// The file's format version.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A record before the end of the file is damaged. Records after it cannot be trusted, so
    /// the journal is not opened unless the caller allows salvaging the prefix before `offset`
    /// (see [`OpenOptions::salvage`](crate::OpenOptions::salvage)).
    Corrupt {
        /// Byte offset of the damaged record in the file.
        offset: u64,
        /// What is wrong with it.
        reason: Corruption,
    },
    /// A kept record's payload could not be encoded or decoded (a key type that does not
    /// round-trip through serde, or a record written for another key type).
    Payload {
        /// The record.
        id: KeepId,
        /// The decoder's message.
        message: String,
    },
    /// There is no journal, and [`OpenOptions::must_exist`](crate::OpenOptions::must_exist) is set.
    Missing,
    /// Another process has the journal open.
    Locked(String),
    /// A kept record larger than [`MAX_RECORD`](crate::format::MAX_RECORD) allows.
    RecordTooLarge(usize),
    /// The journal has started [`MAX_EPOCH`](crate::MAX_EPOCH) epochs: its fencing tokens are
    /// used up. Start a new journal (and a new token space for the resources that check them).
    EpochsExhausted(u64),
    /// A keep for an id that is already kept (a caller bug: ids are never reused).
    AlreadyKept(KeepId),
    /// A release of an id that is not kept (already released, or never kept).
    NotKept(KeepId),
    /// An earlier write failed, so the file may no longer match what the journal believes;
    /// the journal refuses all writes until it is reopened (and recovered) from the file.
    Failed {
        /// The first failure.
        cause: String,
    },
}

/// What is wrong with a damaged record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Corruption {
    /// The stored checksum does not match the record's bytes.
    Checksum,
    /// The length field is impossible (zero, or over [`MAX_RECORD`](crate::format::MAX_RECORD)).
    Length(u32),
    /// A record kind this build does not know, with a valid checksum: most likely written by a
    /// newer lockcore.
    UnknownKind(u8),
    /// A known kind whose body has the wrong size.
    Malformed(&'static str),
    /// A second keep record for an id that is already live.
    DuplicateKeep(KeepId),
    /// A release of an id that is not live.
    UnknownRelease(KeepId),
    /// An epoch record that does not increase.
    EpochNotIncreasing {
        /// The epoch before.
        previous: u64,
        /// The epoch found.
        found: u64,
    },
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Checksum => f.write_str("its checksum does not match its contents"),
            Self::Length(n) => write!(f, "its length field ({n} bytes) is impossible"),
            Self::UnknownKind(k) => {
                write!(f, "it has kind {k}, unknown to this build (written by a newer lockcore?)")
            }
            Self::Malformed(what) => write!(f, "its body is malformed: {what}"),
            Self::DuplicateKeep(id) => write!(f, "it keeps {id} a second time"),
            Self::UnknownRelease(id) => write!(f, "it releases {id}, which is not kept"),
            Self::EpochNotIncreasing { previous, found } => {
                write!(f, "it starts epoch {found} after epoch {previous}")
            }
        }
    }
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { op, source } => write!(f, "journal I/O failed while {op}: {source}"),
            Self::NotAJournal { found } => {
                write!(f, "the file is not a lockcore journal (it starts with {found:02x?})")
            }
            Self::FutureVersion { found, supported } => {
                write!(f, "the journal has format version {found}, but this build reads versions up to {supported}")
            }
            Self::Corrupt { offset, reason } => {
                write!(f, "the journal is damaged at byte {offset}: the record there is unreadable because {reason}")
            }
            Self::Payload { id, message } => write!(f, "the record of {id} does not decode: {message}"),
            Self::Missing => f.write_str("there is no journal (missing or empty), and one was expected to exist"),
            Self::Locked(msg) => write!(f, "the journal is in use: {msg}"),
            Self::RecordTooLarge(n) => write!(f, "a kept record of {n} bytes is over the journal's record limit"),
            Self::EpochsExhausted(e) => {
                write!(f, "the journal has used all its epochs ({e}): fencing tokens would wrap")
            }
            Self::AlreadyKept(id) => write!(f, "{id} is already kept"),
            Self::NotKept(id) => write!(f, "{id} is not kept: it was already released or never kept"),
            Self::Failed { cause } => {
                write!(f, "the journal refuses writes after an earlier failure ({cause}); reopen it to recover")
            }
        }
    }
}

impl std::error::Error for JournalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub(crate) fn io(op: &'static str) -> impl FnOnce(io::Error) -> JournalError {
    move |source| JournalError::Io { op, source }
}
