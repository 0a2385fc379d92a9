//! What the test files share: database URLs, fresh tables per test, the conformance suite.
#![allow(dead_code)]

pub mod suite;

use lockcore_sql::{Options, SqlLocks};
use std::time::Duration;

/// PostgreSQL's URL: `LOCKCORE_PG_URL`, or the development and CI default.
pub fn pg_url() -> String {
    std::env::var("LOCKCORE_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// MariaDB's URL: `LOCKCORE_MYSQL_URL`, or the development and CI default.
pub fn my_url() -> String {
    std::env::var("LOCKCORE_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

pub fn url(db: &str) -> String {
    match db {
        "pg" => pg_url(),
        _ => my_url(),
    }
}

/// Fresh tables named after the test, so tests run in parallel on one database.
pub fn fresh(db: &str, test: &str) -> String {
    let short: String = test.chars().take(28).collect();
    let prefix = format!("t_{short}_{db}_");
    let url = url(db);
    let opts = Options::new("setup").prefix(prefix.clone());
    SqlLocks::uninstall(&url, &opts).unwrap_or_else(|e| panic!("{db} at {url} must answer (ci/sql.sh starts it): {e}"));
    SqlLocks::migrate(&url, &opts).unwrap();
    prefix
}

pub fn connect(db: &str, prefix: &str, server: &str) -> SqlLocks {
    SqlLocks::connect(&url(db), Options::new(server).prefix(prefix).lease(Duration::from_secs(30))).unwrap()
}

/// A plain connection for what the tests do beside the backend: a fenced resource, blocking a
/// row, killing a connection.
#[allow(clippy::large_enum_variant)]
pub enum Raw {
    Pg(postgres::Client),
    My(mysql::Conn),
}

impl Raw {
    pub fn open(db: &str) -> Self {
        match db {
            "pg" => Raw::Pg(postgres::Client::connect(&pg_url(), postgres::NoTls).unwrap()),
            _ => Raw::My(mysql::Conn::new(mysql::Opts::from_url(&my_url()).unwrap()).unwrap()),
        }
    }

    pub fn exec(&mut self, sql: &str) -> u64 {
        match self {
            Raw::Pg(c) => c.execute(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")),
            Raw::My(c) => {
                use mysql::prelude::Queryable;
                c.query_drop(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                c.affected_rows()
            }
        }
    }

    /// Runs a statement; the database's error as text if it fails.
    pub fn try_exec(&mut self, sql: &str) -> Result<(), String> {
        match self {
            Raw::Pg(c) => c.batch_execute(sql).map_err(|e| e.to_string()),
            Raw::My(c) => {
                use mysql::prelude::Queryable;
                c.query_drop(sql).map_err(|e| e.to_string())
            }
        }
    }

    /// The first column of every row, as integers.
    pub fn ints(&mut self, sql: &str) -> Vec<i64> {
        match self {
            Raw::Pg(c) => c.query(sql, &[]).unwrap().iter().map(|r| r.get::<_, i64>(0)).collect(),
            Raw::My(c) => {
                use mysql::prelude::Queryable;
                c.query(sql).unwrap()
            }
        }
    }
}

/// A resource guarded by fencing tokens: a counter per name that accepts a write only with a
/// token above the last one it accepted (what a storage service would check).
pub struct Fenced {
    pub table: String,
}

impl Fenced {
    pub fn create(raw: &mut Raw, table: &str) -> Self {
        raw.exec(&format!("DROP TABLE IF EXISTS {table}"));
        raw.exec(&format!(
            "CREATE TABLE {table} (name VARCHAR(100) PRIMARY KEY, value BIGINT NOT NULL, last_token BIGINT NOT NULL)"
        ));
        Self { table: table.to_owned() }
    }

    pub fn read(&self, raw: &mut Raw, name: &str) -> i64 {
        raw.ints(&format!("SELECT value FROM {} WHERE name = '{name}'", self.table)).first().copied().unwrap_or(0)
    }

    /// Writes `value` if `token` is above every token seen for `name`; false if refused.
    pub fn write(&self, raw: &mut Raw, name: &str, value: i64, token: u64) -> bool {
        let t = &self.table;
        let n = raw.exec(&format!(
            "UPDATE {t} SET value = {value}, last_token = {token} WHERE name = '{name}' AND last_token < {token}"
        ));
        if n == 1 {
            return true;
        }
        let exists = !raw.ints(&format!("SELECT value FROM {t} WHERE name = '{name}'")).is_empty();
        if exists {
            return false;
        }
        raw.exec(&format!("INSERT INTO {t} (name, value, last_token) VALUES ('{name}', {value}, {token})"));
        true
    }

    pub fn sum(&self, raw: &mut Raw) -> i64 {
        raw.ints(&format!("SELECT value FROM {}", self.table)).iter().sum()
    }
}
