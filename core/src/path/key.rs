//! Path keys: an anchor and XPath-like steps, parsed once into a canonical text.
//!
//! # Implementation details
//!
//! A [`PathKey`] is a shared, immutable record of one parsed path (its canonical text and the
//! byte offset where each step ends) plus a depth. An ancestor is the same record with a smaller
//! depth, so enumerating the ancestors of a path allocates nothing: each is one reference-count
//! increment. Equality, hashing and ordering look only at the visible prefix of the text, so an
//! ancestor made this way and the same path parsed from a string are the same key.
//!
//! The text is canonical, which is what makes prefix comparison correct: every step is written
//! as `name[@attr='value']...` with no whitespace, predicates sorted by attribute name, and
//! values in single quotes unless they contain one. Step boundaries come from the parser, never
//! from splitting the text on `/` (a predicate value may contain a slash).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

/// The longest path text [`PathKey::parse`] accepts, in bytes. Bounds parsing time and memory.
pub const MAX_PATH_LEN: usize = 4096;

/// The most steps a path may have. Bounds the number of intention locks one path takes.
pub const MAX_DEPTH: usize = 64;

/// A path in a data tree: an anchor followed by XPath-like steps, in canonical form.
///
/// The syntax is a subset of XPath's abbreviated location paths:
/// `/step/step...`, where a step is a name (`[prefix:]name`, XML name characters) followed by
/// any number of key predicates `[@attr='value']` (or `"value"`, or several joined by `and`).
/// The first step is the *anchor*: the root of one independent tree.
///
/// Parsing normalizes, so paths that name the same node compare equal: whitespace inside
/// predicates is dropped, predicates are sorted by attribute name, and values are written in
/// single quotes (double quotes only for a value that contains a single quote).
///
/// A step with predicates is a different node from the same name without them: `/reg/item[@id='1']`
/// is a child of `/reg`, not of `/reg/item` (as in CPS, where a list entry's parent is the
/// container and the list itself is not a node). Lock the container to cover all entries.
///
/// Cloning is cheap (a reference count), and so are [`parent`](Self::parent) and
/// [`ancestors`](Self::ancestors).
///
/// ```
/// use lockcore::PathKey;
/// let a: PathKey = "/registry/cm-handles[ @id = \"ch-1\" ]/state".parse().unwrap();
/// let b = PathKey::parse("/registry/cm-handles[@id='ch-1']/state").unwrap();
/// assert_eq!(a, b);
/// assert_eq!(a.as_str(), "/registry/cm-handles[@id='ch-1']/state");
/// assert_eq!(a.depth(), 3);
/// let up: Vec<String> = a.ancestors().map(|p| p.to_string()).collect();
/// assert_eq!(up, ["/registry", "/registry/cm-handles[@id='ch-1']"]);
/// assert!(a.anchor().is_ancestor_of(&a));
/// ```
#[derive(Clone)]
pub struct PathKey {
    parsed: Arc<Parsed>,
    /// Steps visible through this key: `1..=parsed.ends.len()`.
    depth: u16,
}

/// One parsed path, shared by the key and all its ancestors.
struct Parsed {
    text: Box<str>,
    /// `ends[i]` is the byte offset in `text` just past step `i`.
    ends: Box<[u32]>,
}

impl PathKey {
    /// Parses and normalizes a path.
    ///
    /// # Errors
    /// [`PathError`] with the byte offset of the fault in `input` and what is wrong there. Any
    /// input is accepted without panicking; longer than [`MAX_PATH_LEN`] bytes or deeper than
    /// [`MAX_DEPTH`] steps is an error.
    pub fn parse(input: &str) -> Result<Self, PathError> {
        Parser::new(input).path()
    }

    /// The canonical text of the path, e.g. `/a/b[@id='1']`.
    pub fn as_str(&self) -> &str {
        &self.parsed.text[..self.end(self.depth)]
    }

    /// Number of steps, at least 1 (the anchor alone has depth 1).
    pub fn depth(&self) -> usize {
        usize::from(self.depth)
    }

    /// Byte offset just past step `depth` (1-based).
    fn end(&self, depth: u16) -> usize {
        self.parsed.ends[usize::from(depth) - 1] as usize
    }

    /// The ancestor of this path at `depth` steps (`1` is the anchor), or `None` unless
    /// `1 <= depth <= self.depth()`. `ancestor(self.depth())` is the path itself.
    pub fn ancestor(&self, depth: usize) -> Option<PathKey> {
        let d = u16::try_from(depth).ok().filter(|&d| d >= 1 && d <= self.depth)?;
        Some(PathKey { parsed: Arc::clone(&self.parsed), depth: d })
    }

    /// The anchor: the first step alone.
    pub fn anchor(&self) -> PathKey {
        PathKey { parsed: Arc::clone(&self.parsed), depth: 1 }
    }

    /// The path one step up, or `None` for an anchor.
    pub fn parent(&self) -> Option<PathKey> {
        self.ancestor(self.depth() - 1)
    }

    /// The strict ancestors, from the anchor down to the parent. Allocates nothing.
    pub fn ancestors(&self) -> impl ExactSizeIterator<Item = PathKey> + '_ {
        (1..self.depth).map(|d| PathKey { parsed: Arc::clone(&self.parsed), depth: d })
    }

    /// The steps in canonical form, from the anchor down (`["a", "b[@id='1']"]`).
    pub fn steps(&self) -> impl Iterator<Item = &str> + '_ {
        let text = &self.parsed.text;
        let ends = &self.parsed.ends[..self.depth()];
        // Each step starts one byte after the previous end (the '/').
        ends.iter().scan(0usize, move |start, &end| {
            let step = &text[*start + 1..end as usize];
            *start = end as usize;
            Some(step)
        })
    }

    /// Whether `self` is a strict ancestor of `other` (`/a` of `/a/b`, not of `/a` or `/ab`).
    pub fn is_ancestor_of(&self, other: &PathKey) -> bool {
        other.depth > self.depth && other.parsed.text[..other.end(self.depth)] == *self.as_str()
    }

    /// Whether the two subtrees overlap: the paths are equal or one is an ancestor of the other.
    pub fn overlaps(&self, other: &PathKey) -> bool {
        self == other || self.is_ancestor_of(other) || other.is_ancestor_of(self)
    }
}

impl PartialEq for PathKey {
    fn eq(&self, other: &Self) -> bool {
        // Same record and depth is the common case for ancestors made from one path.
        (Arc::ptr_eq(&self.parsed, &other.parsed) && self.depth == other.depth) || self.as_str() == other.as_str()
    }
}

impl Eq for PathKey {}

impl Hash for PathKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for PathKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PathKey {
    /// By canonical text (consistent with `Eq`; an ancestor sorts before its descendants).
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Display for PathKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for PathKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathKey({})", self.as_str())
    }
}

impl FromStr for PathKey {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, PathError> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for PathKey {
    type Error = PathError;
    fn try_from(s: &str) -> Result<Self, PathError> {
        Self::parse(s)
    }
}

/// Serialized as its canonical text, so tickets of path locks can be stored and sent.
impl serde::Serialize for PathKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Parsed again on the way in: a malformed path is a deserialization error, not a bad key.
impl<'de> serde::Deserialize<'de> for PathKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PathKey::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A malformed path: where, in bytes from the start of the input, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathError {
    /// Byte offset in the input where the fault was found.
    pub position: usize,
    /// What is wrong there.
    pub kind: PathErrorKind,
}

/// What is wrong with a malformed path.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathErrorKind {
    /// The input is empty (or only `/`: a path names at least an anchor).
    Empty,
    /// A path starts with `/`.
    MissingSlash,
    /// Two slashes in a row or a trailing slash (`//` and descendant axes are not supported).
    EmptyStep,
    /// A name (of a step or an attribute) was expected here.
    ExpectedName,
    /// A character that cannot appear here.
    Unexpected(char),
    /// A predicate must name an attribute: `[@attr='value']`.
    ExpectedAttribute,
    /// `=` was expected after the attribute name.
    ExpectedEquals,
    /// A quoted value was expected after `=`.
    ExpectedValue,
    /// A quoted value is not closed.
    UnterminatedValue,
    /// A predicate is not closed with `]`.
    UnterminatedPredicate,
    /// One step names the same attribute twice.
    DuplicateAttribute(String),
    /// The input is longer than [`MAX_PATH_LEN`] bytes.
    TooLong {
        /// Bytes given.
        len: usize,
    },
    /// The path has more than [`MAX_DEPTH`] steps.
    TooDeep,
}

impl fmt::Display for PathErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("a path names at least an anchor, as in /anchor"),
            Self::MissingSlash => f.write_str("expected '/' (paths are absolute)"),
            Self::EmptyStep => f.write_str("empty step ('//' and a trailing '/' are not supported)"),
            Self::ExpectedName => f.write_str("expected a name"),
            Self::Unexpected(c) => write!(f, "unexpected character {c:?}"),
            Self::ExpectedAttribute => f.write_str("expected '@' (predicates have the form [@attr='value'])"),
            Self::ExpectedEquals => f.write_str("expected '=' after the attribute name"),
            Self::ExpectedValue => f.write_str("expected a value in single or double quotes"),
            Self::UnterminatedValue => f.write_str("the quoted value is not closed"),
            Self::UnterminatedPredicate => f.write_str("expected ']' or 'and' to continue the predicate"),
            Self::DuplicateAttribute(a) => write!(f, "attribute @{a} appears twice in one step"),
            Self::TooLong { len } => write!(f, "the path is {len} bytes long, more than the limit of {MAX_PATH_LEN}"),
            Self::TooDeep => write!(f, "the path has more than {MAX_DEPTH} steps"),
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid path at byte {}: {}", self.position, self.kind)
    }
}

impl std::error::Error for PathError {}

/// A recursive-descent parser over bytes; multi-byte characters are consumed whole so every
/// position it reports is a char boundary of the input.
struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

/// One predicate of a step, before sorting.
struct Predicate<'a> {
    attr: &'a str,
    value: &'a str,
    /// Where the attribute name starts, to report a duplicate.
    at: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Self { input, pos: 0 }
    }

    fn err<T>(&self, kind: PathErrorKind) -> Result<T, PathError> {
        Err(PathError { position: self.pos, kind })
    }

    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.pos += c.len_utf8();
        }
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.bump();
        }
    }

    /// The error for whatever is at the current position, given what was expected.
    fn unexpected<T>(&self, expected: PathErrorKind) -> Result<T, PathError> {
        match self.peek() {
            Some(c) if !matches!(expected, PathErrorKind::ExpectedName) || is_name_char(c) => self.err(expected),
            Some(c) => self.err(PathErrorKind::Unexpected(c)),
            None => self.err(expected),
        }
    }

    fn path(mut self) -> Result<PathKey, PathError> {
        if self.input.len() > MAX_PATH_LEN {
            // Reported at the first char boundary at or below the limit.
            let position = (0..=MAX_PATH_LEN).rev().find(|&p| self.input.is_char_boundary(p)).unwrap_or(0);
            return Err(PathError { position, kind: PathErrorKind::TooLong { len: self.input.len() } });
        }
        if self.input.is_empty() || self.input == "/" {
            return self.err(PathErrorKind::Empty);
        }
        let mut text = String::with_capacity(self.input.len());
        let mut ends = Vec::new();
        while self.pos < self.input.len() {
            if ends.len() == MAX_DEPTH {
                return self.err(PathErrorKind::TooDeep); // at the '/' of the step too many
            }
            if !self.eat('/') {
                return match self.peek() {
                    Some(c) if self.pos > 0 => self.err(PathErrorKind::Unexpected(c)),
                    _ => self.err(PathErrorKind::MissingSlash),
                };
            }
            text.push('/');
            self.step(&mut text)?;
            // In range: the text is never longer than the input, itself at most MAX_PATH_LEN.
            ends.push(text.len() as u32);
        }
        let depth = ends.len() as u16; // at most MAX_DEPTH
        Ok(PathKey { parsed: Arc::new(Parsed { text: text.into(), ends: ends.into() }), depth })
    }

    fn step(&mut self, out: &mut String) -> Result<(), PathError> {
        if matches!(self.peek(), Some('/') | None) {
            return self.err(PathErrorKind::EmptyStep);
        }
        out.push_str(self.qname()?);
        let mut preds: Vec<Predicate<'a>> = Vec::new();
        while self.eat('[') {
            loop {
                self.skip_space();
                preds.push(self.predicate()?);
                self.skip_space();
                if self.eat(']') {
                    break;
                }
                if self.input[self.pos..].starts_with("and") {
                    let after = self.input[self.pos + 3..].chars().next();
                    // `and` must be a word of its own: `[@a='1' andx]` is not a conjunction.
                    if !after.is_some_and(is_name_char) {
                        self.pos += 3;
                        continue;
                    }
                }
                return self.err(PathErrorKind::UnterminatedPredicate);
            }
        }
        preds.sort_by(|a, b| a.attr.cmp(b.attr));
        if let Some(w) = preds.windows(2).find(|w| w[0].attr == w[1].attr) {
            return Err(PathError { position: w[1].at, kind: PathErrorKind::DuplicateAttribute(w[1].attr.into()) });
        }
        for p in &preds {
            // XPath 1.0 has no escapes: a value holds either quote kind, never both.
            let q = if p.value.contains('\'') { '"' } else { '\'' };
            out.push_str("[@");
            out.push_str(p.attr);
            out.push('=');
            out.push(q);
            out.push_str(p.value);
            out.push(q);
            out.push(']');
        }
        match self.peek() {
            None | Some('/') => Ok(()),
            Some(c) => self.err(PathErrorKind::Unexpected(c)),
        }
    }

    fn predicate(&mut self) -> Result<Predicate<'a>, PathError> {
        if !self.eat('@') {
            return self.err(PathErrorKind::ExpectedAttribute);
        }
        let at = self.pos;
        let attr = self.qname()?;
        self.skip_space();
        if !self.eat('=') {
            return self.err(PathErrorKind::ExpectedEquals);
        }
        self.skip_space();
        let quote = match self.peek() {
            Some(q @ ('\'' | '"')) => q,
            _ => return self.err(PathErrorKind::ExpectedValue),
        };
        let open = self.pos;
        self.bump();
        let start = self.pos;
        match self.input[start..].find(quote) {
            Some(len) => {
                self.pos = start + len + 1;
                Ok(Predicate { attr, value: &self.input[start..start + len], at })
            }
            None => Err(PathError { position: open, kind: PathErrorKind::UnterminatedValue }),
        }
    }

    /// `name` or `prefix:name`, XML name characters.
    fn qname(&mut self) -> Result<&'a str, PathError> {
        let start = self.pos;
        self.ncname()?;
        if self.eat(':') {
            self.ncname()?;
        }
        Ok(&self.input[start..self.pos])
    }

    fn ncname(&mut self) -> Result<(), PathError> {
        match self.peek() {
            Some(c) if is_name_start(c) => self.bump(),
            _ => return self.unexpected(PathErrorKind::ExpectedName),
        }
        while self.peek().is_some_and(is_name_char) {
            self.bump();
        }
        Ok(())
    }
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_name_char(c: char) -> bool {
    is_name_start(c) || c.is_numeric() || c == '-' || c == '.'
}
