//! MySQL and MariaDB (Galera included): statements and migration.
//!
//! Galera certifies a transaction's write set at commit; a transaction that lost to a
//! concurrent one on another node fails with a deadlock error (1213), classified as contention.

use crate::db::{Conn, DbError, DbResult, GrantRow, HolderRow, NewHolder, Tables, SCHEMA_VERSION};
use mysql::prelude::Queryable;
use mysql::Opts;

struct Sql {
    touch: String,
    delete_expired: String,
    holders: String,
    bump: String,
    insert: String,
    grant_rows: String,
    delete_grant: String,
    renew: String,
    all_holders: String,
    owner_grants: String,
}

const HOLDER_COLS: &str =
    "name, grant_id, owner, server, mode = 'X', message, token, TIMESTAMPDIFF(MICROSECOND, acquired_at, UTC_TIMESTAMP(6))";

impl Sql {
    fn new(t: &Tables) -> Self {
        let (l, h) = (&t.locks, &t.holders);
        Self {
            touch: format!("INSERT INTO {l} (name) VALUES (?) ON DUPLICATE KEY UPDATE version = version + 1"),
            delete_expired: format!("DELETE FROM {h} WHERE name = ? AND lease_until < UTC_TIMESTAMP(6)"),
            holders: format!("SELECT {HOLDER_COLS} FROM {h} WHERE name = ? ORDER BY acquired_at, grant_id"),
            // LAST_INSERT_ID(expr) hands the new value back in the OK packet: no second query.
            bump: format!("UPDATE {l} SET last_token = LAST_INSERT_ID(last_token + 1) WHERE name = ?"),
            insert: format!(
                "INSERT INTO {h} (name, grant_id, owner, server, session, mode, message, token, acquired_at, lease_until) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND)"
            ),
            grant_rows: format!(
                "SELECT name, owner, mode = 'X', message, token, lease_until < UTC_TIMESTAMP(6) FROM {h} WHERE grant_id = ?"
            ),
            delete_grant: format!("DELETE FROM {h} WHERE grant_id = ?"),
            renew: format!(
                "UPDATE {h} SET lease_until = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND \
                 WHERE session = ? AND lease_until >= UTC_TIMESTAMP(6)"
            ),
            all_holders: format!(
                "SELECT {HOLDER_COLS} FROM {h} WHERE lease_until >= UTC_TIMESTAMP(6) ORDER BY name, acquired_at, grant_id"
            ),
            owner_grants: format!("SELECT DISTINCT grant_id FROM {h} WHERE server = ? AND owner = ?"),
        }
    }
}

pub(crate) struct MyConn {
    conn: mysql::Conn,
    tables: Tables,
    sql: Sql,
}

fn classify(e: mysql::Error) -> DbError {
    match e {
        mysql::Error::MySqlError(m) => {
            let msg = format!("{} ({}): {}", m.code, m.state, m.message);
            match m.code {
                // deadlock or Galera certification failure, lock wait timeout, duplicate key,
                // WSREP not ready (a node leaving or joining the cluster)
                1213 | 1205 | 1062 | 1047 => DbError::Contention(msg),
                1146 => DbError::MissingTable(msg),
                // connection killed, server shutdown
                1927 | 1053 | 4031 => DbError::Connection(msg),
                _ => DbError::Other(msg),
            }
        }
        mysql::Error::IoError(_) | mysql::Error::DriverError(_) | mysql::Error::CodecError(_) => {
            DbError::Connection(e.to_string())
        }
        other => DbError::Other(other.to_string()),
    }
}

fn text(b: Vec<u8>) -> DbResult<String> {
    String::from_utf8(b).map_err(|e| {
        DbError::Other(format!("a stored name is not UTF-8 (after {} bytes)", e.utf8_error().valid_up_to()))
    })
}

type RawHolder = (Vec<u8>, i64, Vec<u8>, Vec<u8>, i64, Option<Vec<u8>>, Option<i64>, i64);

fn holder_row(r: RawHolder) -> DbResult<HolderRow> {
    Ok(HolderRow {
        name: text(r.0)?,
        grant: r.1,
        owner: text(r.2)?,
        server: text(r.3)?,
        exclusive: r.4 != 0,
        message: r.5.map(text).transpose()?,
        token: r.6,
        age_secs: r.7 as f64 / 1e6,
    })
}

impl MyConn {
    pub(crate) fn connect(url: &str, tables: &Tables) -> DbResult<Self> {
        let opts = Opts::from_url(url).map_err(|e| DbError::Other(format!("bad MySQL URL: {e}")))?;
        let mut conn = mysql::Conn::new(opts).map_err(classify)?;
        // READ COMMITTED: after `touch` has the key's row lock, reading its holders sees the
        // latest committed rows (REPEATABLE READ would read the transaction's first snapshot).
        if cfg!(not(lockcore_mutant = "sql_repeatable_read")) {
            conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED").map_err(classify)?;
        }
        conn.query_drop("SET SESSION innodb_lock_wait_timeout = 10").map_err(classify)?;
        Ok(Self { conn, tables: tables.clone(), sql: Sql::new(tables) })
    }
}

impl Conn for MyConn {
    fn begin(&mut self) -> DbResult<()> {
        self.conn.query_drop("START TRANSACTION").map_err(classify)
    }

    fn commit(&mut self) -> DbResult<()> {
        self.conn.query_drop("COMMIT").map_err(classify)
    }

    fn rollback(&mut self) -> DbResult<()> {
        self.conn.query_drop("ROLLBACK").map_err(classify)
    }

    fn touch(&mut self, name: &str) -> DbResult<()> {
        self.conn.exec_drop(&self.sql.touch, (name,)).map_err(classify)
    }

    fn delete_expired(&mut self, name: &str) -> DbResult<u64> {
        self.conn.exec_drop(&self.sql.delete_expired, (name,)).map_err(classify)?;
        Ok(self.conn.affected_rows())
    }

    fn holders(&mut self, name: &str) -> DbResult<Vec<HolderRow>> {
        let rows: Vec<RawHolder> = self.conn.exec(&self.sql.holders, (name,)).map_err(classify)?;
        rows.into_iter().map(holder_row).collect()
    }

    fn bump_token(&mut self, name: &str) -> DbResult<i64> {
        self.conn.exec_drop(&self.sql.bump, (name,)).map_err(classify)?;
        if self.conn.affected_rows() != 1 {
            return Err(DbError::Other(format!("the lock row {name:?} vanished")));
        }
        i64::try_from(self.conn.last_insert_id()).map_err(|_| DbError::Other("fencing counter overflow".into()))
    }

    fn insert_holder(&mut self, h: &NewHolder<'_>) -> DbResult<()> {
        let mode = if h.exclusive { "X" } else { "S" };
        let params: Vec<mysql::Value> = vec![
            h.name.into(),
            h.grant.into(),
            h.owner.into(),
            h.server.into(),
            h.session.into(),
            mode.into(),
            h.message.into(),
            h.token.into(),
            (h.lease_ms.saturating_mul(1000)).into(),
        ];
        self.conn.exec_drop(&self.sql.insert, params).map_err(classify)
    }

    fn grant_rows(&mut self, grant: i64) -> DbResult<Vec<GrantRow>> {
        type Raw = (Vec<u8>, Vec<u8>, i64, Option<Vec<u8>>, Option<i64>, i64);
        let rows: Vec<Raw> = self.conn.exec(&self.sql.grant_rows, (grant,)).map_err(classify)?;
        rows.into_iter()
            .map(|r| {
                Ok(GrantRow {
                    name: text(r.0)?,
                    owner: text(r.1)?,
                    exclusive: r.2 != 0,
                    message: r.3.map(text).transpose()?,
                    token: r.4,
                    expired: r.5 != 0,
                })
            })
            .collect()
    }

    fn delete_grant(&mut self, grant: i64) -> DbResult<u64> {
        self.conn.exec_drop(&self.sql.delete_grant, (grant,)).map_err(classify)?;
        Ok(self.conn.affected_rows())
    }

    fn notify(&mut self) -> DbResult<()> {
        Ok(()) // MySQL has no LISTEN/NOTIFY: waiters poll with backoff.
    }

    fn renew(&mut self, session: i64, lease_ms: i64) -> DbResult<u64> {
        self.conn.exec_drop(&self.sql.renew, (lease_ms.saturating_mul(1000), session)).map_err(classify)?;
        Ok(self.conn.affected_rows())
    }

    fn all_holders(&mut self) -> DbResult<Vec<HolderRow>> {
        let rows: Vec<RawHolder> = self.conn.exec(&self.sql.all_holders, ()).map_err(classify)?;
        rows.into_iter().map(holder_row).collect()
    }

    fn owner_grants(&mut self, server: &str, owner: &str) -> DbResult<Vec<i64>> {
        self.conn.exec(&self.sql.owner_grants, (server, owner)).map_err(classify)
    }

    fn schema(&mut self) -> DbResult<(i64, i64)> {
        let sql = format!("SELECT version, table_id FROM {} WHERE id = 1", self.tables.schema);
        let row: Option<(i64, i64)> = self.conn.query_first(sql).map_err(classify)?;
        row.ok_or_else(|| DbError::MissingTable(format!("{} (empty)", self.tables.schema)))
    }

    fn migrate(&mut self, table_id: i64) -> DbResult<()> {
        let Tables { prefix: p, schema: s, locks: l, holders: h } = self.tables.clone();
        let opts = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";
        let ddl = [
            format!(
                "CREATE TABLE IF NOT EXISTS {s} (id INT PRIMARY KEY, version BIGINT NOT NULL, table_id BIGINT NOT NULL) {opts}"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {l} (name VARCHAR(255) NOT NULL PRIMARY KEY, \
                 last_token BIGINT NOT NULL DEFAULT 0, version BIGINT NOT NULL DEFAULT 0) {opts}"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {h} (name VARCHAR(255) NOT NULL, grant_id BIGINT NOT NULL, \
                 owner VARCHAR(255) NOT NULL, server VARCHAR(255) NOT NULL, session BIGINT NOT NULL, \
                 mode CHAR(1) NOT NULL, message TEXT, token BIGINT, acquired_at DATETIME(6) NOT NULL, \
                 lease_until DATETIME(6) NOT NULL, PRIMARY KEY (name, grant_id), \
                 KEY {p}holders_grant (grant_id), KEY {p}holders_session (session), \
                 KEY {p}holders_owner (server, owner)) {opts}"
            ),
            format!("INSERT IGNORE INTO {s} (id, version, table_id) VALUES (1, {SCHEMA_VERSION}, {table_id})"),
        ];
        for q in ddl {
            self.conn.query_drop(q).map_err(classify)?;
        }
        Ok(())
    }

    fn drop_tables(&mut self) -> DbResult<()> {
        let Tables { schema, locks, holders, .. } = &self.tables;
        self.conn.query_drop(format!("DROP TABLE IF EXISTS {holders}, {locks}, {schema}")).map_err(classify)
    }

    fn connection_id(&mut self) -> DbResult<i64> {
        Ok(i64::from(self.conn.connection_id()))
    }
}
