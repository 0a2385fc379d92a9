//! The backend: all-or-nothing acquisition in one transaction, release, leases and waiting.

use crate::db::{Conn, DbError, GrantRow, HolderRow, NewHolder, Tables, SCHEMA_VERSION};
use crate::error::SqlError;
use crate::name;
use crate::options::Options;
use crate::wake::{jitter, random_id, Waker};
use lockcore::{
    Conflict, GrantId, HeldLock, Holder, KeyConflict, LockMessage, Mode, Owner, ReleaseError, Request, RequestError,
    Snapshot, TableId, Ticket, TicketLock, Token, MAX_KEYS,
};
use parking_lot::Mutex;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Which database a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `mysql://` or `mariadb://` (MySQL, MariaDB, Galera).
    Mysql,
}

impl Dialect {
    /// The dialect of a connection URL.
    ///
    /// # Errors
    /// [`SqlError::Config`] for another scheme, or one whose driver feature is off.
    pub fn of(url: &str) -> Result<Self, SqlError> {
        let scheme = url.split("://").next().unwrap_or("");
        let d = match scheme {
            "postgres" | "postgresql" => Self::Postgres,
            "mysql" | "mariadb" => Self::Mysql,
            _ => {
                return Err(SqlError::Config(format!(
                    "the URL must start with postgres://, postgresql://, mysql:// or mariadb://, not {scheme:?}"
                )))
            }
        };
        if (d == Self::Postgres && !cfg!(feature = "postgres")) || (d == Self::Mysql && !cfg!(feature = "mysql")) {
            return Err(SqlError::Config(format!("lockcore-sql was built without its {d:?} feature")));
        }
        Ok(d)
    }
}

pub(crate) fn open(dialect: Dialect, url: &str, tables: &Tables) -> Result<Box<dyn Conn>, DbError> {
    match dialect {
        #[cfg(feature = "postgres")]
        Dialect::Postgres => Ok(Box::new(crate::pg::PgConn::connect(url, tables)?)),
        #[cfg(feature = "mysql")]
        Dialect::Mysql => {
            // The mysql crate wants mysql://; accept mariadb:// too.
            let url = url.strip_prefix("mariadb://").map_or_else(|| url.to_owned(), |r| format!("mysql://{r}"));
            Ok(Box::new(crate::my::MyConn::connect(&url, tables)?))
        }
        #[allow(unreachable_patterns)]
        _ => Err(DbError::Other("driver not built".into())),
    }
}

pub(crate) struct Inner {
    pub(crate) dialect: Dialect,
    pub(crate) url: String,
    pub(crate) tables: Tables,
    pub(crate) opts: Options,
    pub(crate) table_id: TableId,
    pub(crate) session: i64,
    pool: Mutex<Vec<Box<dyn Conn>>>,
    pub(crate) waker: Arc<Waker>,
    /// Grants whose commit may or may not have happened (the connection died during it):
    /// deleted by the next heartbeat, so they cannot stay held.
    doubtful: Mutex<Vec<i64>>,
}

/// A lock table in PostgreSQL or MySQL/MariaDB, shared by every server that points at it.
///
/// Implements [`LockBackend<String>`](lockcore::LockBackend); its own methods return
/// [`SqlError`], which also reports database failures. Cheap to share between threads (it
/// keeps a small pool of connections); every instance is one *session* whose grants are renewed
/// by its heartbeat thread and lapse after the lease once it stops (a crash, a lost network).
///
/// ```no_run
/// use lockcore::Request;
/// use lockcore_sql::{Options, SqlLocks};
/// use std::time::Duration;
///
/// let url = "postgres://postgres@127.0.0.1/test";
/// SqlLocks::migrate(url, &Options::new("server-a"))?;
/// let locks = SqlLocks::connect(url, Options::new("server-a"))?;
/// let ticket = locks.acquire(Request::new("cmd-7").exclusive("vm-42".to_string()), Duration::from_secs(5))?;
/// let token = ticket.locks[0].token; // pass it to the resource, which refuses older ones
/// locks.release(&ticket)?;
/// # let _ = token;
/// # Ok::<(), lockcore_sql::SqlError>(())
/// ```
pub struct SqlLocks {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
}

/// One distinct key of a request.
struct Item {
    name: String,
    exclusive: bool,
    message: Option<LockMessage>,
    json: Option<String>,
}

enum Attempt {
    Granted(Ticket<String>),
    Refused(Box<Conflict<String>>),
}

impl SqlLocks {
    /// Creates the lock tables if they do not exist (idempotent; safe to run on every start).
    ///
    /// # Errors
    /// [`SqlError::Config`] for a bad URL or prefix, [`SqlError::Database`] if the DDL fails.
    pub fn migrate(url: &str, opts: &Options) -> Result<(), SqlError> {
        let dialect = Dialect::of(url)?;
        let tables = Tables::new(&opts.prefix)?;
        let mut c = open(dialect, url, &tables)?;
        c.migrate(random_id())?;
        Ok(())
    }

    /// Drops the lock tables (every lock and every fencing counter is lost).
    ///
    /// # Errors
    /// As [`migrate`](Self::migrate).
    pub fn uninstall(url: &str, opts: &Options) -> Result<(), SqlError> {
        let dialect = Dialect::of(url)?;
        let tables = Tables::new(&opts.prefix)?;
        open(dialect, url, &tables)?.drop_tables()?;
        Ok(())
    }

    /// Connects to migrated tables and starts the heartbeat (and, on PostgreSQL, the LISTEN
    /// thread).
    ///
    /// # Errors
    /// [`SqlError::MissingMigration`] if the tables do not exist, [`SqlError::SchemaVersion`]
    /// if another version made them, [`SqlError::Config`] for a bad URL, prefix or server name,
    /// [`SqlError::Database`] if the database cannot be reached.
    pub fn connect(url: &str, opts: Options) -> Result<Self, SqlError> {
        let dialect = Dialect::of(url)?;
        let tables = Tables::new(&opts.prefix)?;
        name::check("server", &opts.server)?;
        if opts.lease < Duration::from_millis(10) {
            return Err(SqlError::Config("the lease must be at least 10 ms".into()));
        }
        if opts.heartbeat.is_some_and(|h| h >= opts.lease || h.is_zero()) {
            return Err(SqlError::Config(format!(
                "the heartbeat ({:?}) must be shorter than the lease ({:?}) and not zero",
                opts.heartbeat.unwrap_or_default(),
                opts.lease
            )));
        }
        let mut c = open(dialect, url, &tables)?;
        let (version, table_id) = c.schema().map_err(|e| match e {
            DbError::MissingTable(_) => SqlError::MissingMigration { table: tables.schema.clone() },
            e => e.into(),
        })?;
        if version != SCHEMA_VERSION {
            return Err(SqlError::SchemaVersion { found: version, expected: SCHEMA_VERSION });
        }
        let inner = Arc::new(Inner {
            dialect,
            url: url.to_owned(),
            tables,
            opts,
            table_id: TableId(table_id as u64),
            session: random_id(),
            pool: Mutex::new(vec![c]),
            waker: Arc::new(Waker::default()),
            doubtful: Mutex::new(Vec::new()),
        });
        let mut threads = Vec::new();
        if let Some(every) = inner.opts.heartbeat {
            let i = Arc::clone(&inner);
            threads.push(std::thread::spawn(move || heartbeat(&i, every)));
        }
        #[cfg(feature = "postgres")]
        if dialect == Dialect::Postgres && inner.opts.listen {
            let (url, ch, w) = (inner.url.clone(), inner.tables.channel(), Arc::clone(&inner.waker));
            threads.push(std::thread::spawn(move || crate::pg::listen(url, ch, w)));
        }
        Ok(Self { inner, threads })
    }

    /// The table's identity (stored by the migration): tickets of other tables are refused.
    pub fn table_id(&self) -> TableId {
        self.inner.table_id
    }

    /// The database this backend talks to.
    pub fn dialect(&self) -> Dialect {
        self.inner.dialect
    }

    /// The owner name that conflicts and snapshots show for `owner` of this server:
    /// `server/owner`.
    pub fn holder_name(&self, owner: &str) -> String {
        format!("{}/{owner}", self.inner.opts.server)
    }

    /// Takes every key or none, without waiting for holders.
    ///
    /// # Errors
    /// [`SqlError::Conflict`] naming every conflicting key and holder;
    /// [`SqlError::Request`], [`SqlError::NameTooLong`] or [`SqlError::InvalidName`] before any
    /// SQL is sent; [`SqlError::Database`] if the database failed (nothing is taken).
    pub fn try_acquire(&self, req: Request<String>) -> Result<Ticket<String>, SqlError> {
        let (owner, items) = validate(&req)?;
        let mut last = None;
        let mut stale_retried = false;
        let mut round = 0;
        while round <= self.inner.opts.contention_retries {
            match self.attempt(&owner, &items) {
                Ok(Attempt::Granted(t)) => return Ok(t),
                Ok(Attempt::Refused(c)) => return Err(SqlError::Conflict(c)),
                Err(DbError::Stale(_)) if !stale_retried => {
                    stale_retried = true;
                    continue;
                }
                Err(DbError::Contention(m)) => {
                    last = Some(m);
                    std::thread::sleep(jitter(Duration::from_millis(1 << round.min(4))));
                    round += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Lost every round to concurrent transactions: report who holds the keys now (maybe
        // nobody: the racing transactions may have been compatible, or rolled back).
        let _ = last;
        Err(SqlError::Conflict(Box::new(self.observe(&owner, &items)?)))
    }

    /// Takes every key or none, retrying with jittered exponential backoff (woken early by
    /// releases on PostgreSQL) until `timeout`.
    ///
    /// # Errors
    /// [`SqlError::Timeout`] with the last conflict; the validation errors of
    /// [`try_acquire`](Self::try_acquire); [`SqlError::Database`] if the database kept failing
    /// until the deadline.
    pub fn acquire(&self, req: Request<String>, timeout: Duration) -> Result<Ticket<String>, SqlError> {
        let deadline = Instant::now() + timeout;
        let (owner, items) = validate(&req)?;
        let mut backoff = self.inner.opts.backoff_min;
        let mut conflict: Option<Box<Conflict<String>>> = None;
        loop {
            let seen = self.inner.waker.generation();
            match self.attempt(&owner, &items) {
                Ok(Attempt::Granted(t)) => return Ok(t),
                Ok(Attempt::Refused(c)) => conflict = Some(c),
                Err(e @ (DbError::Contention(_) | DbError::Connection(_) | DbError::Stale(_))) => {
                    if Instant::now() >= deadline {
                        return Err(match conflict {
                            Some(c) => SqlError::Timeout(c),
                            None => e.into(),
                        });
                    }
                }
                Err(e) => return Err(e.into()),
            }
            let now = Instant::now();
            if now >= deadline {
                let c = match conflict {
                    Some(c) => c,
                    None => Box::new(self.observe(&owner, &items)?),
                };
                return Err(SqlError::Timeout(c));
            }
            self.inner.waker.wait(seen, jitter(backoff).min(deadline - now));
            backoff = (backoff * 2).min(self.inner.opts.backoff_max);
        }
    }

    /// Releases exactly the ticket's grant, on every key.
    ///
    /// # Errors
    /// [`SqlError::Release`] with [`ReleaseError::ForeignTable`] for another table's ticket,
    /// [`ReleaseError::UnknownGrant`] if it is not held (released twice, released by owner),
    /// [`ReleaseError::Mismatch`] if the ticket's keys, modes or owner differ from the grant's;
    /// [`SqlError::LeaseExpired`] if its lease had lapsed (what was left of it is removed);
    /// [`SqlError::Database`].
    pub fn release(&self, ticket: &Ticket<String>) -> Result<(), SqlError> {
        if ticket.table != self.inner.table_id {
            return Err(ReleaseError::ForeignTable { expected: self.inner.table_id, found: ticket.table }.into());
        }
        let grant = ticket.grant;
        let id = i64::try_from(grant.0).map_err(|_| ReleaseError::UnknownGrant(grant))?;
        self.with_conn_retry(|c| {
            let rows = stale(c.grant_rows(id))?;
            Ok(check_ticket(ticket, &rows).and_then(|lapsed| {
                let n = c.delete_grant(id)?;
                c.notify()?;
                if n == 0 {
                    Err(ReleaseError::UnknownGrant(grant).into())
                } else if lapsed {
                    Err(SqlError::LeaseExpired(grant))
                } else {
                    Ok(())
                }
            }))
        })
        .map_err(SqlError::from)?
    }

    /// Releases every grant `owner` holds through this server (live or lapsed); returns one
    /// ticket per grant freed.
    ///
    /// # Errors
    /// [`SqlError::Database`]; grants released before the failure stay released.
    pub fn release_owner(&self, owner: &Owner) -> Result<Vec<Ticket<String>>, SqlError> {
        let server = self.inner.opts.server.clone();
        let table = self.inner.table_id;
        self.with_conn_retry(|c| {
            let mut out = Vec::new();
            for g in stale(c.owner_grants(&server, owner.as_str()))? {
                let rows = c.grant_rows(g)?;
                if c.delete_grant(g)? > 0 && !rows.is_empty() {
                    out.push(ticket_of(table, GrantId(g as u64), owner.clone(), rows));
                }
            }
            if !out.is_empty() {
                c.notify()?;
            }
            Ok(out)
        })
        .map_err(SqlError::from)
    }

    /// Every live holder of every key (expired rows are left out). The database backend has
    /// no queue, so `waiting` is always empty.
    ///
    /// # Errors
    /// [`SqlError::Database`].
    pub fn snapshot(&self) -> Result<Snapshot<String>, SqlError> {
        let rows = self.with_conn_retry(|c| stale(c.all_holders()))?;
        let taken_at = Instant::now();
        let held = rows
            .into_iter()
            .map(|h| {
                let since = since(taken_at, h.age_secs);
                HeldLock {
                    owner: Owner::new(format!("{}/{}", h.server, h.owner)),
                    grant: GrantId(h.grant as u64),
                    mode: if h.exclusive { Mode::EXCLUSIVE } else { Mode::SHARED },
                    message: h.message.as_deref().map(parse_message),
                    since,
                    token: h.token.map(|t| Token(t as u64)),
                    key: h.name,
                }
            })
            .collect();
        Ok(Snapshot { held, waiting: Vec::new(), taken_at })
    }

    /// Renews this session's live leases now (the heartbeat does it on its own); returns how
    /// many holder rows were renewed. A lease that has lapsed is not renewed: it is lost.
    ///
    /// # Errors
    /// [`SqlError::Database`].
    pub fn renew(&self) -> Result<u64, SqlError> {
        let (s, ms) = (self.inner.session, lease_ms(&self.inner.opts));
        Ok(self.with_conn_retry(|c| stale(c.renew(s, ms)))?)
    }

    /// The server-side id of a pooled connection (PostgreSQL backend pid, MySQL connection id),
    /// for operators and fault tests.
    ///
    /// # Errors
    /// [`SqlError::Database`].
    pub fn connection_ids(&self) -> Result<Vec<i64>, SqlError> {
        let mut pool = self.inner.pool.lock();
        let mut out = Vec::new();
        for c in pool.iter_mut() {
            out.push(c.connection_id()?);
        }
        Ok(out)
    }

    /// Runs `f` on a pooled connection; a connection that failed is dropped, not pooled.
    fn with_conn<T>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T, DbError>) -> Result<T, DbError> {
        with_conn(&self.inner, f)
    }

    /// As [`with_conn`](Self::with_conn), once more on a new connection if `f` reports the
    /// pooled one dead before it changed anything ([`DbError::Stale`]).
    fn with_conn_retry<T>(&self, mut f: impl FnMut(&mut dyn Conn) -> Result<T, DbError>) -> Result<T, DbError> {
        match with_conn(&self.inner, &mut f) {
            Err(DbError::Stale(_)) => with_conn(&self.inner, f),
            r => r,
        }
    }

    /// One all-or-nothing transaction.
    fn attempt(&self, owner: &Owner, items: &[Item]) -> Result<Attempt, DbError> {
        let inner = &self.inner;
        let grant = random_id();
        let mut committing = false;
        let r = with_conn(inner, |c| {
            let r = (|| {
                c.begin().map_err(|e| match e {
                    DbError::Connection(m) => DbError::Stale(m),
                    e => e,
                })?;
                let mut conflicts = Vec::new();
                for it in items {
                    c.touch(&it.name)?;
                    if cfg!(not(lockcore_mutant = "sql_no_expiry")) {
                        c.delete_expired(&it.name)?;
                    }
                    let holders = c.holders(&it.name)?;
                    let blocked = holders.iter().any(|h| it.exclusive || h.exclusive);
                    if blocked {
                        conflicts.push(key_conflict(it, holders));
                    }
                }
                if !conflicts.is_empty() && !mutant_grant_all() {
                    c.rollback()?;
                    let requested = items.len();
                    return Ok(Attempt::Refused(Box::new(Conflict {
                        owner: owner.clone(),
                        requested,
                        keys: conflicts,
                    })));
                }
                let mut locks = Vec::with_capacity(items.len());
                for it in items {
                    let token = if it.exclusive { Some(bump(c, &it.name)?) } else { None };
                    c.insert_holder(&NewHolder {
                        name: &it.name,
                        grant,
                        owner: owner.as_str(),
                        server: &inner.opts.server,
                        session: inner.session,
                        exclusive: it.exclusive,
                        message: it.json.as_deref(),
                        token,
                        lease_ms: lease_ms(&inner.opts),
                    })?;
                    locks.push(TicketLock {
                        key: it.name.clone(),
                        mode: mode_of(it.exclusive),
                        token: token.map(|t| Token(t as u64)),
                        message: it.message.clone(),
                    });
                }
                committing = true;
                c.commit()?;
                Ok(Attempt::Granted(Ticket {
                    table: inner.table_id,
                    grant: GrantId(grant as u64),
                    owner: owner.clone(),
                    locks,
                }))
            })();
            if r.is_err() {
                let _ = c.rollback();
            }
            r
        });
        if let Err(DbError::Connection(_)) = &r {
            if committing {
                // The commit may have happened: make sure the grant cannot stay held.
                if with_conn(inner, |c| c.delete_grant(grant)).is_err() {
                    inner.doubtful.lock().push(grant);
                }
            }
        }
        r
    }

    /// Who holds the keys now, read without a transaction, as a conflict report.
    fn observe(&self, owner: &Owner, items: &[Item]) -> Result<Conflict<String>, SqlError> {
        let keys = self.with_conn(|c| {
            let mut keys = Vec::new();
            for it in items {
                keys.push(key_conflict(it, c.holders(&it.name)?));
            }
            Ok(keys)
        })?;
        Ok(Conflict { owner: owner.clone(), requested: items.len(), keys })
    }
}

fn with_conn<T>(inner: &Inner, f: impl FnOnce(&mut dyn Conn) -> Result<T, DbError>) -> Result<T, DbError> {
    let pooled = inner.pool.lock().pop();
    let mut c = match pooled {
        Some(c) => c,
        None => open(inner.dialect, &inner.url, &inner.tables)?,
    };
    let r = f(&mut *c);
    match r {
        Err(DbError::Connection(_)) => {}
        // An idle connection died: the database probably restarted, and took the pool's other
        // idle connections with it. The retry opens a new one.
        Err(DbError::Stale(_)) => inner.pool.lock().clear(),
        _ => inner.pool.lock().push(c),
    }
    r
}

/// A lost connection on the first statement of an operation, which changed nothing yet.
fn stale<T>(r: Result<T, DbError>) -> Result<T, DbError> {
    r.map_err(|e| match e {
        DbError::Connection(m) => DbError::Stale(m),
        e => e,
    })
}

fn lease_ms(opts: &Options) -> i64 {
    i64::try_from(opts.lease.as_millis()).unwrap_or(i64::MAX)
}

fn bump(c: &mut dyn Conn, name: &str) -> Result<i64, DbError> {
    if cfg!(lockcore_mutant = "sql_no_token_bump") {
        return Ok(1);
    }
    c.bump_token(name)
}

/// Mutant `sql_grant_all`: grants whatever the holders (mutual exclusion broken).
fn mutant_grant_all() -> bool {
    cfg!(lockcore_mutant = "sql_grant_all")
}

fn mode_of(exclusive: bool) -> Mode {
    if exclusive {
        Mode::EXCLUSIVE
    } else {
        Mode::SHARED
    }
}

fn mode_name(exclusive: bool) -> &'static str {
    if exclusive {
        "exclusive"
    } else {
        "shared"
    }
}

fn since(now: Instant, age_secs: f64) -> Instant {
    let age = Duration::try_from_secs_f64(age_secs.max(0.0)).unwrap_or_default();
    now.checked_sub(age).unwrap_or(now)
}

fn parse_message(s: &str) -> LockMessage {
    serde_json::from_str(s).unwrap_or_else(|_| LockMessage::new(s))
}

fn key_conflict(it: &Item, holders: Vec<HolderRow>) -> KeyConflict<String> {
    let now = Instant::now();
    KeyConflict {
        key: it.name.clone(),
        asked: mode_of(it.exclusive),
        asked_name: mode_name(it.exclusive),
        holders: holders
            .into_iter()
            .map(|h| Holder {
                owner: Owner::new(format!("{}/{}", h.server, h.owner)),
                grant: GrantId(h.grant as u64),
                mode: mode_of(h.exclusive),
                mode_name: mode_name(h.exclusive),
                message: h.message.as_deref().map(parse_message),
                since: since(now, h.age_secs),
                token: h.token.map(|t| Token(t as u64)),
                blocking: it.exclusive || h.exclusive,
            })
            .collect(),
        waiters_ahead: Vec::new(),
    }
}

/// Checks a request before any SQL: not empty, not too large, shared/exclusive only, names
/// and owner within the columns. Collapses duplicate keys into the stronger mode (the first
/// message kept) and sorts by name, the order every transaction takes rows in.
fn validate(req: &Request<String>) -> Result<(Owner, Vec<Item>), SqlError> {
    if req.is_empty() {
        return Err(RequestError::Empty.into());
    }
    if req.len() > MAX_KEYS {
        return Err(RequestError::TooManyKeys { len: req.len(), max: MAX_KEYS }.into());
    }
    name::check("owner", req.owner().as_str())?;
    let mut items: Vec<Item> = Vec::with_capacity(req.len());
    for (key, mode, msg) in req.entries() {
        let exclusive = match mode {
            Mode::SHARED => false,
            Mode::EXCLUSIVE => true,
            other => return Err(RequestError::UnknownMode(other).into()),
        };
        name::check("lock name", key)?;
        match items.iter_mut().find(|i| i.name == *key) {
            Some(i) => {
                i.exclusive |= exclusive;
                if i.message.is_none() {
                    i.message = msg.cloned();
                }
            }
            None => items.push(Item { name: key.clone(), exclusive, message: msg.cloned(), json: None }),
        }
    }
    for i in &mut items {
        i.json = match &i.message {
            Some(m) => Some(serde_json::to_string(m).map_err(|e| SqlError::Config(e.to_string()))?),
            None => None,
        };
    }
    items.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((req.owner().clone(), items))
}

/// Whether the grant's rows match the ticket; `Ok(true)` if its lease lapsed.
fn check_ticket(ticket: &Ticket<String>, rows: &[GrantRow]) -> Result<bool, SqlError> {
    let grant = ticket.grant;
    if rows.is_empty() {
        return Err(ReleaseError::UnknownGrant(grant).into());
    }
    let mut names: Vec<&str> = ticket.locks.iter().map(|l| l.key.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut exact = names.len() == ticket.locks.len();
    for r in rows {
        let l = ticket.locks.iter().find(|l| l.key == r.name);
        exact &= r.owner == ticket.owner.as_str() && l.is_some_and(|l| l.mode == mode_of(r.exclusive));
    }
    let lapsed = rows.iter().any(|r| r.expired) || rows.len() < ticket.locks.len();
    if !exact {
        return Err(ReleaseError::Mismatch(grant).into());
    }
    Ok(lapsed)
}

fn ticket_of(table: TableId, grant: GrantId, owner: Owner, mut rows: Vec<GrantRow>) -> Ticket<String> {
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ticket {
        table,
        grant,
        owner,
        locks: rows
            .into_iter()
            .map(|r| TicketLock {
                mode: mode_of(r.exclusive),
                token: r.token.map(|t| Token(t as u64)),
                message: r.message.as_deref().map(parse_message),
                key: r.name,
            })
            .collect(),
    }
}

/// Renews the session's leases every `every` until stopped, on its own connection (so a busy
/// pool cannot starve it), and removes doubtful grants first.
fn heartbeat(inner: &Inner, every: Duration) {
    let mut conn: Option<Box<dyn Conn>> = None;
    while !inner.waker.stopped() {
        if conn.is_none() {
            conn = open(inner.dialect, &inner.url, &inner.tables).ok();
        }
        if let Some(c) = conn.as_mut() {
            let doubtful: Vec<i64> = std::mem::take(&mut *inner.doubtful.lock());
            let mut failed = false;
            for g in &doubtful {
                failed |= c.delete_grant(*g).is_err();
            }
            if failed {
                inner.doubtful.lock().extend(doubtful);
            }
            if failed || c.renew(inner.session, lease_ms(&inner.opts)).is_err() {
                conn = None;
            }
        }
        inner.waker.sleep(every);
    }
}

impl Drop for SqlLocks {
    fn drop(&mut self) {
        self.inner.waker.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for SqlLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlLocks")
            .field("dialect", &self.inner.dialect)
            .field("prefix", &self.inner.tables.prefix)
            .field("server", &self.inner.opts.server)
            .field("table_id", &self.inner.table_id)
            .finish_non_exhaustive()
    }
}
