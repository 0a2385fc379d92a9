//! How a server identifies itself and how long its leases last.

use std::time::Duration;

/// Settings of one [`SqlLocks`](crate::SqlLocks).
///
/// ```
/// use lockcore_sql::Options;
/// use std::time::Duration;
/// let opts = Options::new("server-a").prefix("app_locks_").lease(Duration::from_secs(30));
/// assert_eq!(opts.lease_duration(), Duration::from_secs(30));
/// assert_eq!(opts.heartbeat_interval(), Some(Duration::from_secs(10)));
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    pub(crate) server: String,
    pub(crate) prefix: String,
    pub(crate) lease: Duration,
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) listen: bool,
    pub(crate) contention_retries: u32,
}

impl Options {
    /// Settings for the server named `server` (shown in conflicts as `server/owner`): tables
    /// `lockcore_*`, a 15 s lease renewed every 5 s, backoff from 2 ms to 200 ms, LISTEN on
    /// PostgreSQL.
    pub fn new(server: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            prefix: "lockcore_".to_owned(),
            lease: Duration::from_secs(15),
            heartbeat: Some(Duration::from_secs(5)),
            backoff_min: Duration::from_millis(2),
            backoff_max: Duration::from_millis(200),
            listen: true,
            contention_retries: 4,
        }
    }

    /// The tables' name prefix (`lockcore_` by default): several independent lock tables can
    /// share one database.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a grant lives without renewal; also sets the heartbeat to a third of it.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        if self.heartbeat.is_some() {
            self.heartbeat = Some(lease / 3);
        }
        self
    }

    /// How often the background thread renews this server's leases; `None` for no renewal
    /// (grants then lapse after the lease unless [`SqlLocks::renew`](crate::SqlLocks::renew) is
    /// called).
    pub fn heartbeat(mut self, every: Option<Duration>) -> Self {
        self.heartbeat = every;
        self
    }

    /// The bounds of the jittered exponential backoff between attempts of a waiting acquisition.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }

    /// Whether a waiter on PostgreSQL is also woken by LISTEN/NOTIFY (default true).
    pub fn listen(mut self, on: bool) -> Self {
        self.listen = on;
        self
    }

    /// How many times `try_acquire` retries a transaction lost to a concurrent one (a deadlock
    /// or a Galera certification failure) before it reports a conflict (default 4).
    pub fn contention_retries(mut self, n: u32) -> Self {
        self.contention_retries = n;
        self
    }

    /// The lease.
    pub fn lease_duration(&self) -> Duration {
        self.lease
    }

    /// The heartbeat interval.
    pub fn heartbeat_interval(&self) -> Option<Duration> {
        self.heartbeat
    }

    /// The server name.
    pub fn server_name(&self) -> &str {
        &self.server
    }
}
