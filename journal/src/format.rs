//! The journal's bytes: a header, then checksummed records appended one after another.
//!
//! ```text
//! header   = magic "LCKJRNL\0" (8 bytes) | format version (u32 LE) | flags (u32 LE, 0)
//! record   = length (u32 LE) | crc32 of the length (u32 LE) | crc32 of the body (u32 LE) | body
//! body     = kind (u8) | fields
//!   kind 1 = epoch    | epoch (u64 LE)
//!   kind 2 = keep     | id (u64 LE) | payload (the rest: the kept ticket, encoded by the caller)
//!   kind 3 = release  | id (u64 LE)
//! ```
//!
//! The length has a checksum of its own, so a damaged length is told apart from a record cut
//! short by a crash: only a record whose *verified* length runs past the end of the file is torn.
//! Records are only ever appended, so a crash can damage only the last one: a record cut short,
//! a head cut short, or a damaged record followed by nothing but zeros (a file extended by the
//! filesystem but never written) is a *torn tail* and is dropped. Damage anywhere else is
//! [`Corruption`], never guessed around.

use crate::error::{Corruption, JournalError};
use std::fmt;

/// The bytes every journal starts with.
pub const MAGIC: [u8; 8] = *b"LCKJRNL\0";
/// The format version this build writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 16;
/// Length field, its checksum, and the body's checksum.
pub const RECORD_HEAD: usize = 12;
/// The largest record body accepted: bounds what a damaged length field can make a reader
/// allocate, and what one kept ticket may weigh (4096 keys of a few hundred bytes fit).
pub const MAX_RECORD: u32 = 16 << 20;

const KIND_EPOCH: u8 = 1;
const KIND_KEEP: u8 = 2;
const KIND_RELEASE: u8 = 3;

/// Identifies one kept ticket in a journal, for good: ids are `(epoch << 32) | n`, so an id is
/// never handed out twice, not even after the record that used it was compacted away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct KeepId(pub u64);

impl KeepId {
    /// The epoch (process run) that kept the ticket.
    pub fn epoch(self) -> u64 {
        self.0 >> 32
    }
}

impl fmt::Display for KeepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kept ticket {}.{}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// A run of the engine started: every run gets a greater epoch.
    Epoch(u64),
    /// A ticket was kept; the payload describes it.
    Keep {
        /// Its id.
        id: KeepId,
        /// The encoded ticket.
        payload: &'a [u8],
    },
    /// A kept ticket was released (its end-action ran, or recovery cleaned it).
    Release(KeepId),
}

/// Appends the file header.
pub fn encode_header(out: &mut Vec<u8>) {
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
}

/// Appends one framed record.
pub fn encode(record: &Record<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEAD]);
    match record {
        Record::Epoch(e) => {
            out.push(KIND_EPOCH);
            out.extend_from_slice(&e.to_le_bytes());
        }
        Record::Keep { id, payload } => {
            out.push(KIND_KEEP);
            out.extend_from_slice(&id.0.to_le_bytes());
            out.extend_from_slice(payload);
        }
        Record::Release(id) => {
            out.push(KIND_RELEASE);
            out.extend_from_slice(&id.0.to_le_bytes());
        }
    }
    // Callers keep bodies under MAX_RECORD; a larger one gets a length that fails to verify.
    let len = u32::try_from(out.len() - start - RECORD_HEAD).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let len_crc = crc32fast::hash(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&len_crc.to_le_bytes());
    let body_crc = crc32fast::hash(&out[start + RECORD_HEAD..]);
    out[start + 8..start + 12].copy_from_slice(&body_crc.to_le_bytes());
}

/// Checks the header of a journal file.
///
/// # Errors
/// [`JournalError::NotAJournal`] if the magic is wrong or the file is shorter than a header,
/// [`JournalError::FutureVersion`] if the version is newer than [`FORMAT_VERSION`].
pub fn check_header(bytes: &[u8]) -> Result<(), JournalError> {
    if bytes.len() < HEADER_LEN || bytes[..8] != MAGIC {
        return Err(JournalError::NotAJournal { found: bytes[..bytes.len().min(8)].to_vec() });
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version > FORMAT_VERSION || version == 0 {
        return Err(JournalError::FutureVersion { found: version, supported: FORMAT_VERSION });
    }
    Ok(())
}

/// How a scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Every byte was a whole, valid record.
    Clean,
    /// The last record was torn by a crash: `dropped` bytes from `offset` on are not records.
    TornTail {
        /// Where the torn record starts.
        offset: u64,
        /// How many bytes it spans, to the end of the file.
        dropped: u64,
    },
    /// A record before the end is damaged.
    Corrupt {
        /// Where it starts.
        offset: u64,
        /// What is wrong.
        reason: Corruption,
    },
}

/// Reads records one by one from the bytes after the header. Never panics and never
/// allocates: records borrow from the input.
pub struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
    end: Option<End>,
}

impl<'a> Scanner<'a> {
    /// Scans `file`, a whole journal file whose header was checked.
    pub fn new(file: &'a [u8]) -> Self {
        Self { bytes: file, pos: HEADER_LEN.min(file.len()), end: None }
    }

    /// How the scan ended (after `next` returned `None`).
    pub fn end(&self) -> Option<&End> {
        self.end.as_ref()
    }

    /// The offset of the next record (after the scan: the end of the valid prefix).
    pub fn offset(&self) -> u64 {
        self.pos as u64
    }

    /// The next record and its offset, or `None` at the end (see [`Scanner::end`]).
    pub fn next_record(&mut self) -> Option<(u64, Record<'a>)> {
        if self.end.is_some() {
            return None;
        }
        let at = self.pos;
        let rest = &self.bytes[at..];
        if rest.is_empty() {
            self.end = Some(End::Clean);
            return None;
        }
        let torn = || End::TornTail { offset: at as u64, dropped: rest.len() as u64 };
        if rest.len() < RECORD_HEAD {
            self.end = Some(torn());
            return None;
        }
        let word = |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
        let (len, len_crc, body_crc) = (word(0), word(4), word(8));
        if all_zero(rest) {
            // Space the filesystem allocated but nobody wrote.
            self.end = Some(torn());
            return None;
        }
        if crc32fast::hash(&rest[..4]) != len_crc {
            // A whole head was written with the record; a head that does not verify is damage.
            self.end = Some(End::Corrupt { offset: at as u64, reason: Corruption::Length(len) });
            return None;
        }
        if len == 0 || len > MAX_RECORD {
            self.end = Some(End::Corrupt { offset: at as u64, reason: Corruption::Length(len) });
            return None;
        }
        let end = RECORD_HEAD + len as usize;
        if end > rest.len() {
            // A verified length that runs past the end: the append was cut short.
            self.end = Some(torn());
            return None;
        }
        let body = &rest[RECORD_HEAD..end];
        if crc32fast::hash(body) != body_crc {
            // A damaged record is a torn write only if nothing written follows it.
            self.end = Some(if all_zero(&rest[end..]) {
                torn()
            } else {
                End::Corrupt { offset: at as u64, reason: Corruption::Checksum }
            });
            return None;
        }
        match decode_body(body) {
            Ok(record) => {
                self.pos = at + end;
                Some((at as u64, record))
            }
            Err(reason) => {
                self.end = Some(End::Corrupt { offset: at as u64, reason });
                None
            }
        }
    }
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

fn u64_at(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
}

fn decode_body(body: &[u8]) -> Result<Record<'_>, Corruption> {
    let (&kind, fields) = body.split_first().ok_or(Corruption::Malformed("empty body"))?;
    match kind {
        KIND_EPOCH if fields.len() == 8 => Ok(Record::Epoch(u64_at(fields).unwrap_or(0))),
        KIND_EPOCH => Err(Corruption::Malformed("an epoch record holds exactly 8 bytes")),
        KIND_KEEP => match u64_at(fields) {
            Some(id) => Ok(Record::Keep { id: KeepId(id), payload: &fields[8..] }),
            None => Err(Corruption::Malformed("a keep record starts with an 8-byte id")),
        },
        KIND_RELEASE if fields.len() == 8 => Ok(Record::Release(KeepId(u64_at(fields).unwrap_or(0)))),
        KIND_RELEASE => Err(Corruption::Malformed("a release record holds exactly 8 bytes")),
        other => Err(Corruption::UnknownKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(records: &[Record<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_header(&mut out);
        for r in records {
            encode(r, &mut out);
        }
        out
    }

    fn scan(bytes: &[u8]) -> (Vec<Record<'_>>, End) {
        let mut s = Scanner::new(bytes);
        let mut out = Vec::new();
        while let Some((_, r)) = s.next_record() {
            out.push(r);
        }
        (out, s.end().cloned().unwrap_or(End::Clean))
    }

    #[test]
    fn records_round_trip() {
        let recs = [
            Record::Epoch(3),
            Record::Keep { id: KeepId(7), payload: b"hello" },
            Record::Keep { id: KeepId(8), payload: b"" },
            Record::Release(KeepId(7)),
        ];
        let bytes = file(&recs);
        check_header(&bytes).unwrap();
        assert_eq!(scan(&bytes), (recs.to_vec(), End::Clean));
    }

    #[test]
    fn every_truncation_is_a_torn_tail_after_a_whole_prefix() {
        let recs = [Record::Epoch(1), Record::Keep { id: KeepId(1), payload: b"abc" }, Record::Release(KeepId(1))];
        let bytes = file(&recs);
        let mut boundaries = vec![HEADER_LEN];
        for r in &recs {
            let mut one = Vec::new();
            encode(r, &mut one);
            boundaries.push(boundaries[boundaries.len() - 1] + one.len());
        }
        for cut in HEADER_LEN..bytes.len() {
            let (got, end) = scan(&bytes[..cut]);
            let whole = boundaries.iter().filter(|&&b| b <= cut).count() - 1;
            assert_eq!(got, recs[..whole].to_vec(), "cut at {cut}");
            let expect = if boundaries.contains(&cut) {
                End::Clean
            } else {
                End::TornTail { offset: boundaries[whole] as u64, dropped: (cut - boundaries[whole]) as u64 }
            };
            assert_eq!(end, expect, "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_bit_before_the_last_record_is_corruption_at_its_offset() {
        let recs = [Record::Epoch(1), Record::Keep { id: KeepId(1), payload: b"abc" }, Record::Epoch(2)];
        let bytes = file(&recs);
        let second = HEADER_LEN + RECORD_HEAD + 9;
        for byte in second..second + RECORD_HEAD + 12 {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[byte] ^= 1 << bit;
                let (got, end) = scan(&b);
                assert_eq!(got, recs[..1].to_vec());
                // Never mistaken for a torn tail, not even a length flipped to run past the end.
                match end {
                    End::Corrupt { offset, .. } => assert_eq!(offset, second as u64),
                    other => panic!("flip at byte {byte} bit {bit}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn zeros_after_the_last_record_are_a_torn_tail() {
        let mut bytes = file(&[Record::Epoch(1)]);
        let at = bytes.len();
        bytes.extend_from_slice(&[0; 100]);
        assert_eq!(scan(&bytes).1, End::TornTail { offset: at as u64, dropped: 100 });
    }

    #[test]
    fn bad_headers_are_typed() {
        assert!(matches!(check_header(b"hello world, not a journal"), Err(JournalError::NotAJournal { .. })));
        assert!(matches!(check_header(b"LCK"), Err(JournalError::NotAJournal { .. })));
        let mut future = file(&[]);
        future[8..12].copy_from_slice(&9u32.to_le_bytes());
        assert!(matches!(check_header(&future), Err(JournalError::FutureVersion { found: 9, supported: 1 })));
    }

    #[test]
    fn unknown_kinds_are_named() {
        let mut bytes = file(&[]);
        let start = bytes.len();
        encode(&Record::Epoch(1), &mut bytes);
        bytes[start + RECORD_HEAD] = 77; // rewrite the kind, then fix the checksum
        let crc = crc32fast::hash(&bytes[start + RECORD_HEAD..]);
        bytes[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
        encode(&Record::Epoch(2), &mut bytes);
        assert_eq!(scan(&bytes).1, End::Corrupt { offset: start as u64, reason: Corruption::UnknownKind(77) });
    }
}
