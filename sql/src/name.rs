//! Lock names as the database stores them: text of at most [`MAX_NAME_CHARS`] characters.

use crate::error::SqlError;
use lockcore::Request;

/// The longest lock name, owner or server name, in characters (the columns are `VARCHAR(255)`;
/// on MariaDB `utf8mb4`, whose 1020-byte key fits InnoDB's 3072-byte index limit).
pub const MAX_NAME_CHARS: usize = 255;

/// Checks that `s` fits its column; called before any SQL is sent.
pub(crate) fn check(what: &'static str, s: &str) -> Result<(), SqlError> {
    let len = s.chars().count();
    if len > MAX_NAME_CHARS {
        return Err(SqlError::NameTooLong { what, start: s.chars().take(24).collect(), len, max: MAX_NAME_CHARS });
    }
    if s.contains('\0') {
        return Err(SqlError::InvalidName {
            what,
            reason: "it contains a NUL character, which PostgreSQL text refuses",
        });
    }
    Ok(())
}

/// A key type that has a lock name in the database.
///
/// Implemented for strings, byte strings (which must be UTF-8), integers and `(A, B)` pairs
/// (`"A/B"`, with `/` and `\` in `A` escaped, so distinct pairs get distinct names).
///
/// ```
/// use lockcore_sql::LockName;
/// assert_eq!("vm-42".lock_name().unwrap(), "vm-42");
/// assert_eq!(7u32.lock_name().unwrap(), "7");
/// assert_eq!(("pool", 7).lock_name().unwrap(), "pool/7");
/// assert_eq!(("a/b", "c").lock_name().unwrap(), "a\\/b/c");
/// assert!(b"\xff".as_slice().lock_name().is_err());
/// ```
pub trait LockName {
    /// The name, or [`SqlError::InvalidUtf8`] for bytes that are not UTF-8.
    ///
    /// # Errors
    /// [`SqlError::InvalidUtf8`]; the length is checked later, by the backend.
    fn lock_name(&self) -> Result<String, SqlError>;
}

impl LockName for str {
    fn lock_name(&self) -> Result<String, SqlError> {
        Ok(self.to_owned())
    }
}

impl LockName for String {
    fn lock_name(&self) -> Result<String, SqlError> {
        Ok(self.clone())
    }
}

impl LockName for [u8] {
    fn lock_name(&self) -> Result<String, SqlError> {
        std::str::from_utf8(self).map(str::to_owned).map_err(|e| SqlError::InvalidUtf8 { valid_up_to: e.valid_up_to() })
    }
}

impl LockName for Vec<u8> {
    fn lock_name(&self) -> Result<String, SqlError> {
        self.as_slice().lock_name()
    }
}

impl<T: LockName + ?Sized> LockName for &T {
    fn lock_name(&self) -> Result<String, SqlError> {
        (**self).lock_name()
    }
}

macro_rules! int_names {
    ($($t:ty),*) => {$(
        impl LockName for $t {
            fn lock_name(&self) -> Result<String, SqlError> {
                Ok(self.to_string())
            }
        }
    )*};
}
int_names!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);

impl<A: LockName, B: LockName> LockName for (A, B) {
    fn lock_name(&self) -> Result<String, SqlError> {
        let a = self.0.lock_name()?;
        let b = self.1.lock_name()?;
        let mut out = String::with_capacity(a.len() + b.len() + 1);
        for c in a.chars() {
            if c == '/' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('/');
        out.push_str(&b);
        Ok(out)
    }
}

/// Turns a request on typed keys into one on lock names, for [`SqlLocks`](crate::SqlLocks).
///
/// ```
/// use lockcore::Request;
/// let req = lockcore_sql::named(&Request::new("cmd-1").exclusive(("vm", 42))).unwrap();
/// assert_eq!(req.keys().next().unwrap().0, "vm/42");
/// ```
///
/// # Errors
/// [`SqlError::InvalidUtf8`] for a byte key that is not UTF-8.
pub fn named<K: LockName>(req: &Request<K>) -> Result<Request<String>, SqlError> {
    let mut out = Request::new(req.owner().clone());
    for (k, mode, msg) in req.entries() {
        out = out.lock(k.lock_name()?, mode, msg.cloned());
    }
    Ok(out)
}
