//! PostgreSQL: statements, migration and the LISTEN thread that wakes waiters.

use crate::db::{Conn, DbError, DbResult, GrantRow, HolderRow, NewHolder, Tables, SCHEMA_VERSION};
use crate::wake::Waker;
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Statement};
use std::sync::Arc;
use std::time::Duration;

/// The statements, by index into [`PgConn::stmts`].
const TOUCH: usize = 0;
const DELETE_EXPIRED: usize = 1;
const HOLDERS: usize = 2;
const BUMP: usize = 3;
const INSERT: usize = 4;
const GRANT_ROWS: usize = 5;
const DELETE_GRANT: usize = 6;
const NOTIFY: usize = 7;
const RENEW: usize = 8;
const ALL_HOLDERS: usize = 9;
const OWNER_GRANTS: usize = 10;
const N_STMTS: usize = 11;

const HOLDER_COLS: &str = "name, grant_id, owner, server, mode = 'X', message, token, \
     extract(epoch from clock_timestamp() - acquired_at)::float8";

fn statements(t: &Tables) -> [String; N_STMTS] {
    let (l, h) = (&t.locks, &t.holders);
    [
        format!("INSERT INTO {l} (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET version = {l}.version + 1"),
        format!("DELETE FROM {h} WHERE name = $1 AND lease_until < clock_timestamp()"),
        format!("SELECT {HOLDER_COLS} FROM {h} WHERE name = $1 ORDER BY acquired_at, grant_id"),
        format!("UPDATE {l} SET last_token = last_token + 1 WHERE name = $1 RETURNING last_token"),
        // now(): every row of a grant gets the same lease, and a transaction that waited for a
        // row lock gets a lease shorter than asked (the safe direction), never a longer one.
        format!(
            "INSERT INTO {h} (name, grant_id, owner, server, session, mode, message, token, acquired_at, lease_until) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), now() + $9::bigint * interval '1 millisecond')"
        ),
        format!(
            "SELECT name, owner, mode = 'X', message, token, lease_until < clock_timestamp() FROM {h} WHERE grant_id = $1"
        ),
        format!("DELETE FROM {h} WHERE grant_id = $1"),
        "SELECT pg_notify($1, '')".to_owned(),
        // One statement time for the test and the new value: the rows of one grant stay equal.
        format!(
            "UPDATE {h} SET lease_until = statement_timestamp() + $2::bigint * interval '1 millisecond' \
             WHERE session = $1 AND lease_until >= statement_timestamp()"
        ),
        format!(
            "SELECT {HOLDER_COLS} FROM {h} WHERE lease_until >= clock_timestamp() ORDER BY name, acquired_at, grant_id"
        ),
        format!("SELECT DISTINCT grant_id FROM {h} WHERE server = $1 AND owner = $2"),
    ]
}

pub(crate) struct PgConn {
    client: Client,
    tables: Tables,
    sql: [String; N_STMTS],
    stmts: [Option<Statement>; N_STMTS],
    channel: String,
}

fn classify(e: postgres::Error) -> DbError {
    let msg = e.to_string();
    let msg = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => msg,
    };
    match e.code() {
        None => DbError::Connection(msg),
        Some(c)
            if *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::UNIQUE_VIOLATION
                || *c == SqlState::LOCK_NOT_AVAILABLE =>
        {
            DbError::Contention(msg)
        }
        Some(c) if *c == SqlState::UNDEFINED_TABLE => DbError::MissingTable(msg),
        Some(c) if c.code().starts_with("08") || c.code().starts_with("57P") => DbError::Connection(msg),
        Some(_) => DbError::Other(msg),
    }
}

impl PgConn {
    pub(crate) fn connect(url: &str, tables: &Tables) -> DbResult<Self> {
        let mut client = Client::connect(url, NoTls).map_err(classify)?;
        // A row lock held by a stuck transaction fails the attempt after a while instead of
        // blocking it for ever.
        client.batch_execute("SET lock_timeout = '10s'").map_err(classify)?;
        Ok(Self {
            client,
            tables: tables.clone(),
            sql: statements(tables),
            stmts: Default::default(),
            channel: tables.channel(),
        })
    }

    fn st(&mut self, i: usize) -> DbResult<Statement> {
        if let Some(s) = &self.stmts[i] {
            return Ok(s.clone());
        }
        let s = self.client.prepare(&self.sql[i]).map_err(classify)?;
        self.stmts[i] = Some(s.clone());
        Ok(s)
    }

    fn exec(&mut self, i: usize, params: &[&(dyn ToSql + Sync)]) -> DbResult<u64> {
        let s = self.st(i)?;
        self.client.execute(&s, params).map_err(classify)
    }

    fn query(&mut self, i: usize, params: &[&(dyn ToSql + Sync)]) -> DbResult<Vec<postgres::Row>> {
        let s = self.st(i)?;
        self.client.query(&s, params).map_err(classify)
    }
}

fn holder_row(r: &postgres::Row) -> DbResult<HolderRow> {
    let get = |e: postgres::Error| DbError::Other(format!("unexpected row: {e}"));
    Ok(HolderRow {
        name: r.try_get(0).map_err(get)?,
        grant: r.try_get(1).map_err(get)?,
        owner: r.try_get(2).map_err(get)?,
        server: r.try_get(3).map_err(get)?,
        exclusive: r.try_get(4).map_err(get)?,
        message: r.try_get(5).map_err(get)?,
        token: r.try_get(6).map_err(get)?,
        age_secs: r.try_get(7).map_err(get)?,
    })
}

impl Conn for PgConn {
    fn begin(&mut self) -> DbResult<()> {
        self.client.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED").map_err(classify)
    }

    fn commit(&mut self) -> DbResult<()> {
        self.client.batch_execute("COMMIT").map_err(classify)
    }

    fn rollback(&mut self) -> DbResult<()> {
        self.client.batch_execute("ROLLBACK").map_err(classify)
    }

    fn touch(&mut self, name: &str) -> DbResult<()> {
        self.exec(TOUCH, &[&name]).map(drop)
    }

    fn delete_expired(&mut self, name: &str) -> DbResult<u64> {
        self.exec(DELETE_EXPIRED, &[&name])
    }

    fn holders(&mut self, name: &str) -> DbResult<Vec<HolderRow>> {
        self.query(HOLDERS, &[&name])?.iter().map(holder_row).collect()
    }

    fn bump_token(&mut self, name: &str) -> DbResult<i64> {
        let rows = self.query(BUMP, &[&name])?;
        let row = rows.first().ok_or_else(|| DbError::Other(format!("the lock row {name:?} vanished")))?;
        row.try_get(0).map_err(|e| DbError::Other(e.to_string()))
    }

    fn insert_holder(&mut self, h: &NewHolder<'_>) -> DbResult<()> {
        let mode = if h.exclusive { "X" } else { "S" };
        self.exec(
            INSERT,
            &[&h.name, &h.grant, &h.owner, &h.server, &h.session, &mode, &h.message, &h.token, &h.lease_ms],
        )
        .map(drop)
    }

    fn grant_rows(&mut self, grant: i64) -> DbResult<Vec<GrantRow>> {
        let get = |e: postgres::Error| DbError::Other(format!("unexpected row: {e}"));
        self.query(GRANT_ROWS, &[&grant])?
            .iter()
            .map(|r| {
                Ok(GrantRow {
                    name: r.try_get(0).map_err(get)?,
                    owner: r.try_get(1).map_err(get)?,
                    exclusive: r.try_get(2).map_err(get)?,
                    message: r.try_get(3).map_err(get)?,
                    token: r.try_get(4).map_err(get)?,
                    expired: r.try_get(5).map_err(get)?,
                })
            })
            .collect()
    }

    fn delete_grant(&mut self, grant: i64) -> DbResult<u64> {
        self.exec(DELETE_GRANT, &[&grant])
    }

    fn notify(&mut self) -> DbResult<()> {
        if cfg!(lockcore_mutant = "sql_no_notify") {
            return Ok(());
        }
        let ch = self.channel.clone();
        self.query(NOTIFY, &[&ch]).map(drop)
    }

    fn renew(&mut self, session: i64, lease_ms: i64) -> DbResult<u64> {
        self.exec(RENEW, &[&session, &lease_ms])
    }

    fn all_holders(&mut self) -> DbResult<Vec<HolderRow>> {
        self.query(ALL_HOLDERS, &[])?.iter().map(holder_row).collect()
    }

    fn owner_grants(&mut self, server: &str, owner: &str) -> DbResult<Vec<i64>> {
        self.query(OWNER_GRANTS, &[&server, &owner])?
            .iter()
            .map(|r| r.try_get(0).map_err(|e| DbError::Other(e.to_string())))
            .collect()
    }

    fn schema(&mut self) -> DbResult<(i64, i64)> {
        let sql = format!("SELECT version, table_id FROM {} WHERE id = 1", self.tables.schema);
        let rows = self.client.query(&sql, &[]).map_err(classify)?;
        let row = rows.first().ok_or_else(|| DbError::MissingTable(format!("{} (empty)", self.tables.schema)))?;
        let v: i64 = row.try_get(0).map_err(|e| DbError::Other(e.to_string()))?;
        let id: i64 = row.try_get(1).map_err(|e| DbError::Other(e.to_string()))?;
        Ok((v, id))
    }

    fn migrate(&mut self, table_id: i64) -> DbResult<()> {
        let Tables { prefix: p, schema: s, locks: l, holders: h } = &self.tables;
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {s} (
                 id int PRIMARY KEY CHECK (id = 1),
                 version bigint NOT NULL,
                 table_id bigint NOT NULL);
             CREATE TABLE IF NOT EXISTS {l} (
                 name varchar(255) PRIMARY KEY,
                 last_token bigint NOT NULL DEFAULT 0,
                 version bigint NOT NULL DEFAULT 0);
             CREATE TABLE IF NOT EXISTS {h} (
                 name varchar(255) NOT NULL,
                 grant_id bigint NOT NULL,
                 owner varchar(255) NOT NULL,
                 server varchar(255) NOT NULL,
                 session bigint NOT NULL,
                 mode char(1) NOT NULL CHECK (mode IN ('S', 'X')),
                 message text,
                 token bigint,
                 acquired_at timestamptz NOT NULL,
                 lease_until timestamptz NOT NULL,
                 PRIMARY KEY (name, grant_id));
             CREATE INDEX IF NOT EXISTS {p}holders_grant ON {h} (grant_id);
             CREATE INDEX IF NOT EXISTS {p}holders_session ON {h} (session);
             CREATE INDEX IF NOT EXISTS {p}holders_owner ON {h} (server, owner);"
        );
        self.client.batch_execute(&ddl).map_err(classify)?;
        let ins = format!("INSERT INTO {s} (id, version, table_id) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING");
        self.client.execute(&ins, &[&SCHEMA_VERSION, &table_id]).map_err(classify).map(drop)
    }

    fn drop_tables(&mut self) -> DbResult<()> {
        let Tables { schema, locks, holders, .. } = &self.tables;
        self.client.batch_execute(&format!("DROP TABLE IF EXISTS {holders}, {locks}, {schema}")).map_err(classify)
    }

    fn connection_id(&mut self) -> DbResult<i64> {
        let rows = self.client.query("SELECT pg_backend_pid()", &[]).map_err(classify)?;
        let pid: i32 = rows.first().map(|r| r.get(0)).unwrap_or(0);
        Ok(i64::from(pid))
    }
}

/// Listens for releases on the table's channel and wakes local waiters, until `stop`. Reconnects
/// after a failure; waiters keep polling with backoff meanwhile, so a lost notification costs
/// latency, never a missed grant.
pub(crate) fn listen(url: String, channel: String, waker: Arc<Waker>) {
    while !waker.stopped() {
        let Ok(mut client) = Client::connect(&url, NoTls) else {
            waker.sleep(Duration::from_millis(500));
            continue;
        };
        if client.batch_execute(&format!("LISTEN \"{channel}\"")).is_err() {
            waker.sleep(Duration::from_millis(500));
            continue;
        }
        'conn: while !waker.stopped() {
            let mut n = client.notifications();
            let mut it = n.timeout_iter(Duration::from_millis(200));
            loop {
                match it.next() {
                    Ok(Some(_)) => waker.wake(),
                    Ok(None) => break,
                    Err(_) => break 'conn,
                }
            }
        }
    }
}
