//! Lock modes as data: a compatibility matrix, not hard-coded cases.
//!
//! A [`ModeTable`] names up to [`MAX_MODES`] modes and says which pairs may be held on one key
//! at the same time. The table never matches on a particular mode: it asks the matrix. The
//! default is shared/exclusive; [`ModeTable::multi_granularity`] gives Gray's five modes
//! (IS, IX, S, SIX, X) for hierarchical locking, and [`ModeTable::new`] takes any other
//! symmetric matrix.

use std::fmt;

/// The most modes one table can have (a held-mode set is one byte).
pub const MAX_MODES: usize = 8;

/// A lock mode: an index into the table's [`ModeTable`].
///
/// The first two indices are shared and exclusive in both built-in tables, so
/// [`Mode::SHARED`] and [`Mode::EXCLUSIVE`] mean the same on a plain and on a hierarchical table.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Mode(pub u8);

impl Mode {
    /// Shared (read) mode: compatible with other shared holders.
    pub const SHARED: Mode = Mode(0);
    /// Exclusive (write) mode: compatible with nothing.
    pub const EXCLUSIVE: Mode = Mode(1);
    /// Intention-shared (IS) in [`ModeTable::multi_granularity`].
    pub const INTENTION_SHARED: Mode = Mode(2);
    /// Intention-exclusive (IX) in [`ModeTable::multi_granularity`].
    pub const INTENTION_EXCLUSIVE: Mode = Mode(3);
    /// Shared with intention-exclusive (SIX) in [`ModeTable::multi_granularity`].
    pub const SHARED_INTENTION_EXCLUSIVE: Mode = Mode(4);

    pub(crate) const fn bit(self) -> u8 {
        1 << self.0
    }

    pub(crate) const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mode({})", self.0)
    }
}

/// Why a custom [`ModeTable`] was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModeTableError {
    /// No modes, or more than [`MAX_MODES`].
    Count(usize),
    /// The matrix is not `n x n` for `n` names.
    Shape,
    /// `a` compatible with `b` but not `b` with `a`.
    Asymmetric(String, String),
    /// No single mode is at least as strong as both; a request naming a key in both modes
    /// could not be collapsed to one.
    NoJoin(String, String),
}

impl fmt::Display for ModeTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(n) => write!(f, "a mode table needs 1 to {MAX_MODES} modes, got {n}"),
            Self::Shape => f.write_str("the compatibility matrix must have one row and one column per mode"),
            Self::Asymmetric(a, b) => write!(f, "mode {a} is compatible with {b} but not {b} with {a}"),
            Self::NoJoin(a, b) => write!(
                f,
                "no mode is at least as strong as both {a} and {b}, so a key asked in both cannot be collapsed"
            ),
        }
    }
}

impl std::error::Error for ModeTableError {}

/// Names and compatibility of the modes a table uses.
#[derive(Clone, PartialEq, Eq)]
pub struct ModeTable {
    names: Vec<&'static str>,
    /// `compat[m]` has bit `j` set when `m` may be held beside `j`.
    compat: [u8; MAX_MODES],
    /// `join[a][b]`: the weakest mode at least as strong as both.
    join: [[u8; MAX_MODES]; MAX_MODES],
}

impl fmt::Debug for ModeTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModeTable").field("modes", &self.names).finish()
    }
}

impl Default for ModeTable {
    fn default() -> Self {
        Self::shared_exclusive()
    }
}

impl ModeTable {
    /// Shared and exclusive: shared holders count, exclusive excludes everyone else.
    pub fn shared_exclusive() -> Self {
        Self::new(&["shared", "exclusive"], &[&[true, false], &[false, false]])
            .unwrap_or_else(|_| unreachable!("the built-in matrix is valid"))
    }

    /// Gray's multi-granularity modes, indexed S, X, IS, IX, SIX (see the [`Mode`] constants).
    ///
    /// ```
    /// use lockcore::{Mode, ModeTable};
    /// let t = ModeTable::multi_granularity();
    /// assert!(t.compatible(Mode::INTENTION_EXCLUSIVE, Mode::INTENTION_SHARED));
    /// assert!(!t.compatible(Mode::INTENTION_EXCLUSIVE, Mode::SHARED));
    /// assert_eq!(t.join(Mode::INTENTION_EXCLUSIVE, Mode::SHARED), Some(Mode::SHARED_INTENTION_EXCLUSIVE));
    /// assert_eq!(t.join(Mode::SHARED, lockcore::Mode(9)), None);
    /// assert!(!t.compatible(Mode::SHARED, lockcore::Mode(200)));
    /// ```
    pub fn multi_granularity() -> Self {
        const T: bool = true;
        const F: bool = false;
        //            S  X  IS IX SIX
        let m: [&[bool]; 5] = [
            &[T, F, T, F, F], // S
            &[F, F, F, F, F], // X
            &[T, F, T, T, T], // IS
            &[F, F, T, T, F], // IX
            &[F, F, T, F, F], // SIX
        ];
        Self::new(&["shared", "exclusive", "intention-shared", "intention-exclusive", "shared+intention-exclusive"], &m)
            .unwrap_or_else(|_| unreachable!("the built-in matrix is valid"))
    }

    /// A table from mode names and a symmetric compatibility matrix (`matrix[a][b]` is true
    /// when `a` and `b` may be held on one key together).
    ///
    /// # Errors
    /// [`ModeTableError`] when the matrix is not square, not symmetric, has more than
    /// [`MAX_MODES`] modes, or two modes have no single mode at least as strong as both.
    pub fn new(names: &[&'static str], matrix: &[&[bool]]) -> Result<Self, ModeTableError> {
        let n = names.len();
        if n == 0 || n > MAX_MODES {
            return Err(ModeTableError::Count(n));
        }
        if matrix.len() != n || matrix.iter().any(|row| row.len() != n) {
            return Err(ModeTableError::Shape);
        }
        let mut compat = [0u8; MAX_MODES];
        for a in 0..n {
            for b in 0..n {
                if matrix[a][b] != matrix[b][a] {
                    return Err(ModeTableError::Asymmetric(names[a].into(), names[b].into()));
                }
                if matrix[a][b] {
                    compat[a] |= 1 << b;
                }
            }
        }
        // `c` covers `a` when everything compatible with `c` is compatible with `a`.
        let covers = |c: usize, a: usize| compat[c] & compat[a] == compat[c];
        let mut join = [[0u8; MAX_MODES]; MAX_MODES];
        for a in 0..n {
            for b in 0..n {
                let best = (0..n)
                    .filter(|&c| covers(c, a) && covers(c, b))
                    .max_by_key(|&c| (compat[c].count_ones(), c == a || c == b));
                match best {
                    Some(c) => join[a][b] = c as u8,
                    None => return Err(ModeTableError::NoJoin(names[a].into(), names[b].into())),
                }
            }
        }
        Ok(Self { names: names.to_vec(), compat, join })
    }

    /// Number of modes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Always false: a table has at least one mode.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The mode's name, or `"unknown"` for an index outside the table.
    pub fn name(&self, mode: Mode) -> &'static str {
        self.names.get(mode.index()).copied().unwrap_or("unknown")
    }

    /// Whether `mode` is one of this table's modes.
    pub fn contains(&self, mode: Mode) -> bool {
        mode.index() < self.names.len()
    }

    /// Whether `a` and `b` may be held on one key together (false if either is not a mode
    /// of this table).
    pub fn compatible(&self, a: Mode, b: Mode) -> bool {
        self.contains(a) && self.contains(b) && self.compat[a.index()] & b.bit() != 0
    }

    /// Whether `mode` may be held beside every mode in the set `held` (a bit per mode).
    #[inline]
    pub(crate) fn compatible_with_set(&self, mode: Mode, held: u8) -> bool {
        self.compat[mode.index()] & held == held
    }

    /// Whether no mode of the table can be held beside the set `held` (an exclusive holder or
    /// waiter, say): a queue scan can stop there.
    #[inline]
    pub(crate) fn excludes_all(&self, held: u8) -> bool {
        (0..self.names.len()).all(|m| self.compat[m] & held != held)
    }

    /// The weakest mode at least as strong as both (shared + exclusive = exclusive), or `None`
    /// if either is not a mode of this table.
    pub fn join(&self, a: Mode, b: Mode) -> Option<Mode> {
        (self.contains(a) && self.contains(b)).then(|| self.join_known(a, b))
    }

    /// [`join`](Self::join) for modes already checked with [`contains`](Self::contains).
    #[inline]
    pub(crate) fn join_known(&self, a: Mode, b: Mode) -> Mode {
        Mode(self.join[a.index()][b.index()])
    }

    /// Whether a grant in `mode` takes a new fencing token: true for modes that exclude
    /// their own kind (exclusive, SIX), which are the ones that may write.
    pub fn is_fenced(&self, mode: Mode) -> bool {
        !self.compatible(mode, mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_exclusive_matrix() {
        let t = ModeTable::shared_exclusive();
        assert!(t.compatible(Mode::SHARED, Mode::SHARED));
        assert!(!t.compatible(Mode::SHARED, Mode::EXCLUSIVE));
        assert!(!t.compatible(Mode::EXCLUSIVE, Mode::EXCLUSIVE));
        assert_eq!(t.join(Mode::SHARED, Mode::EXCLUSIVE), Some(Mode::EXCLUSIVE));
        assert_eq!(t.join(Mode::SHARED, Mode::SHARED), Some(Mode::SHARED));
        assert!(t.is_fenced(Mode::EXCLUSIVE) && !t.is_fenced(Mode::SHARED));
        assert!(t.compatible_with_set(Mode::SHARED, Mode::SHARED.bit()));
        assert!(!t.compatible_with_set(Mode::SHARED, Mode::SHARED.bit() | Mode::EXCLUSIVE.bit()));
        assert!(t.compatible_with_set(Mode::EXCLUSIVE, 0));
    }

    #[test]
    fn multi_granularity_joins() {
        let t = ModeTable::multi_granularity();
        assert_eq!(t.join(Mode::INTENTION_SHARED, Mode::INTENTION_EXCLUSIVE), Some(Mode::INTENTION_EXCLUSIVE));
        assert_eq!(t.join(Mode::SHARED, Mode::INTENTION_EXCLUSIVE), Some(Mode::SHARED_INTENTION_EXCLUSIVE));
        assert_eq!(t.join(Mode::SHARED_INTENTION_EXCLUSIVE, Mode::EXCLUSIVE), Some(Mode::EXCLUSIVE));
        assert!(t.is_fenced(Mode::SHARED_INTENTION_EXCLUSIVE));
        assert!(!t.is_fenced(Mode::INTENTION_EXCLUSIVE));
    }

    #[test]
    fn invalid_tables_are_refused() {
        assert_eq!(ModeTable::new(&[], &[]), Err(ModeTableError::Count(0)));
        assert_eq!(ModeTable::new(&["a"], &[&[true, true]]), Err(ModeTableError::Shape));
        assert!(matches!(
            ModeTable::new(&["a", "b"], &[&[true, true], &[false, true]]),
            Err(ModeTableError::Asymmetric(..))
        ));
        // Two modes each compatible only with itself: nothing covers both.
        assert!(matches!(
            ModeTable::new(&["a", "b"], &[&[true, false], &[false, true]]),
            Err(ModeTableError::NoJoin(..))
        ));
        let e = ModeTable::new(&["a", "b"], &[&[true, false], &[false, true]]).unwrap_err();
        assert!(e.to_string().contains("at least as strong"));
    }
}
