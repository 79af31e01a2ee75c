//! The MySQL / MariaDB adapter on mysql_async: probes and the failover's operations.
//!
//! Every call opens its own connection and closes it: a probe must see whether a *new*
//! client can get in (a pool would hide "too many connections"), and nothing is left
//! half-open on a server that is being fenced. Every call is bounded by a timeout and a
//! timeout is a failure, never a hang.

pub mod dialect;
mod in_the_way;

pub use crate::address::Address;
use crate::config::{MysqlTls, Secret};
use dialect::{Dialect, SourceSpec};
use in_the_way::InTheWay;
use multiaz_driver::adapters::MysqlOps;
use multiaz_engine::{
    Flavour, GtidSet, MysqlOp, MysqlReply, MysqlStatus, NodeId, Positions, ProbeResult,
    ReplicationStatus,
};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row, SslOpts};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;
use tokio::time::{timeout, Instant};

/// How often a waiting operation (catch-up, relay-log apply) looks again.
const POLL: Duration = Duration::from_millis(20);
/// How long `SET GLOBAL read_only` may wait for the writes in its way before they are
/// killed. A commit waiting for a semi-sync acknowledgement that no replica can send
/// (the master cut off) waits for ever, and read_only waits behind it.
/// Well inside the writer's `fence_lead` (an eighth of the lease, 250 ms at the
/// shortest lease the configuration allows): the kill that follows must land too
/// before the lease ends.
const FENCE_WAIT: Duration = Duration::from_millis(200);

/// How long stopping replication may wait for the applier before it is killed. MySQL's
/// applier, holding a transaction that its relay log has only in part (the source
/// died, or the IO thread was stopped, in the middle of sending it), waits up to 60 s
/// for the rest before STOP REPLICA returns (seen in the master-ahead chaos run: a
/// promotion ran past its step timeout). The rest never comes; the part is rolled back.
const STOP_WAIT: Duration = Duration::from_millis(500);

/// Login details: the sidecar's own, and those replicas use to reach their source.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: Secret,
    pub replication_user: String,
    pub replication_password: Secret,
    /// TLS on the sidecar's connections and on the replication links it sets up.
    pub tls: Option<MysqlTls>,
}

#[derive(Clone)]
pub struct MysqlAdapter {
    inner: Rc<Inner>,
}

struct Inner {
    dialect: Dialect,
    members: BTreeMap<NodeId, Address>,
    credentials: Credentials,
    probe_timeout: Duration,
    op_timeout: Duration,
    /// `mysql.allow_async`: make a master writable even when semi-sync cannot be
    /// turned on.
    allow_async: bool,
}

/// Why a call failed: the server refused (it is alive) or it could not be reached.
enum Failure {
    Server(u16, String),
    /// It answered, but the TLS handshake failed.
    Tls(String),
    Unreachable(String),
}

impl Failure {
    fn text(&self) -> String {
        match self {
            Failure::Server(code, msg) => format!("server error {code}: {msg}"),
            Failure::Tls(msg) => format!("TLS: {msg}"),
            Failure::Unreachable(msg) => msg.clone(),
        }
    }
}

impl From<mysql_async::Error> for Failure {
    fn from(e: mysql_async::Error) -> Self {
        match e {
            mysql_async::Error::Server(s) => Failure::Server(s.code, s.message),
            // The server answered with its greeting and the TLS handshake (or the
            // server's lack of TLS) failed: it is up. A certificate that expired or
            // does not match must not look like a dead master and fail it over.
            e @ (mysql_async::Error::Io(mysql_async::IoError::Tls(_))
            | mysql_async::Error::Driver(
                mysql_async::DriverError::NoClientSslFlagFromServer,
            )) => Failure::Tls(e.to_string()),
            other => Failure::Unreachable(other.to_string()),
        }
    }
}

impl MysqlAdapter {
    pub fn new(
        flavour: Flavour,
        members: BTreeMap<NodeId, Address>,
        credentials: Credentials,
        probe_timeout: Duration,
        op_timeout: Duration,
        allow_async: bool,
    ) -> Self {
        MysqlAdapter {
            inner: Rc::new(Inner {
                dialect: Dialect(flavour),
                members,
                credentials,
                probe_timeout,
                op_timeout,
                allow_async,
            }),
        }
    }

    fn address(&self, node: NodeId) -> Result<&Address, String> {
        self.inner
            .members
            .get(&node)
            .ok_or_else(|| format!("node {node} has no mysql address"))
    }

    /// Opens a connection as the sidecar's user.
    pub async fn connect(&self, node: NodeId) -> Result<Conn, String> {
        self.connect_raw(node)
            .await
            .map_err(|f| format!("{node}: {}", f.text()))
    }

    async fn connect_raw(&self, node: NodeId) -> Result<Conn, Failure> {
        let addr = self.address(node).map_err(Failure::Unreachable)?;
        let c = &self.inner.credentials;
        let password = String::from_utf8(c.password.expose().to_vec())
            .map_err(|_| Failure::Unreachable("the MySQL password is not UTF-8".into()))?;
        let opts = OptsBuilder::default()
            .ip_or_hostname(addr.host.clone())
            .tcp_port(addr.port)
            .user(Some(c.user.clone()))
            .pass(Some(password))
            .prefer_socket(false)
            .tcp_nodelay(true)
            .ssl_opts(c.tls.as_ref().map(|t| {
                // Only the configured CA: a public CA's certificate for any name
                // would do otherwise.
                SslOpts::default()
                    .with_root_certs(vec![t.ca_file.clone().into()])
                    .with_disable_built_in_roots(true)
            }));
        Ok(Conn::new(opts).await?)
    }

    /// The server's version string (`SELECT VERSION()`), for `multiaz check`.
    pub async fn version(&self, conn: &mut Conn) -> Result<String, String> {
        let v: Option<String> = conn
            .query_first("SELECT VERSION()")
            .await
            .map_err(|e| e.to_string())?;
        Ok(v.unwrap_or_default())
    }

    /// `node`'s mysqld answers within the probe timeout with read_only off: it can take
    /// writes. Unreachable, or read_only, is `false`.
    pub async fn is_writable(&self, node: NodeId) -> bool {
        let probe = tokio::time::timeout(self.inner.probe_timeout, self.probe_inner(node));
        matches!(probe.await, Ok(Ok(s)) if !s.read_only)
    }

    async fn probe_inner(&self, node: NodeId) -> Result<MysqlStatus, Failure> {
        let mut conn = self.connect_raw(node).await?;
        let status = self.status(&mut conn).await;
        let _ = conn.disconnect().await;
        status
    }

    async fn status(&self, conn: &mut Conn) -> Result<MysqlStatus, Failure> {
        let d = self.inner.dialect;
        let row: Option<Row> = conn.query_first(d.probe_vars()).await?;
        let row = row.ok_or_else(|| Failure::Unreachable("no row from probe".into()))?;
        let read_only = column(&row, 0).is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("OFF"));
        let executed = d
            .gtids(&column(&row, 1).unwrap_or_default())
            .map_err(Failure::Unreachable)?;
        let replica: Option<Row> = conn.query_first(d.replica_status()).await?;
        let (received, replication) = match replica {
            None => (executed.clone(), None),
            Some(r) => self.replication(&r, &executed)?,
        };
        Ok(MysqlStatus {
            read_only,
            executed,
            received,
            replication,
        })
    }

    /// Reads a replication status row: the received set (executed plus what the IO
    /// thread fetched) and where it replicates from.
    fn replication(
        &self,
        row: &Row,
        executed: &GtidSet,
    ) -> Result<(GtidSet, Option<ReplicationStatus>), Failure> {
        let d = self.inner.dialect;
        let cols = d.columns();
        let io_pos = d
            .gtids(&column(row, cols.received).unwrap_or_default())
            .map_err(Failure::Unreachable)?;
        let received = executed
            .union(&io_pos)
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
        let host = column(row, cols.host).unwrap_or_default();
        let port: Option<u16> = column(row, cols.port).and_then(|p| p.parse().ok());
        let source = self
            .inner
            .members
            .iter()
            .find(|(_, a)| a.host == host && Some(a.port) == port)
            .map(|(id, _)| *id);
        let io_running = column(row, cols.io_running).as_deref() == Some("Yes");
        let sql_running = column(row, cols.sql_running).as_deref() == Some("Yes");
        Ok((
            received,
            Some(ReplicationStatus {
                source,
                io_running,
                sql_running,
            }),
        ))
    }

    async fn positions(&self, conn: &mut Conn) -> Result<Positions, String> {
        let s = self.status(conn).await.map_err(|f| f.text())?;
        Ok(Positions {
            received: s.received,
            executed: s.executed,
        })
    }

    /// The last replication errors (IO, SQL) of a replica, for error messages.
    async fn replication_errors(&self, conn: &mut Conn) -> String {
        let d = self.inner.dialect;
        let cols = d.columns();
        match conn.query_first::<Row, _>(d.replica_status()).await {
            Ok(Some(r)) => {
                let io = column(&r, cols.last_io_error).unwrap_or_default();
                let sql = column(&r, cols.last_error).unwrap_or_default();
                match (io.is_empty(), sql.is_empty()) {
                    (true, true) => String::new(),
                    _ => format!(" (IO error: {io:?}; SQL error: {sql:?})"),
                }
            }
            _ => String::new(),
        }
    }

    async fn run_all(conn: &mut Conn, statements: &[&str]) -> Result<(), String> {
        for s in statements {
            conn.query_drop(*s).await.map_err(|e| format!("{s}: {e}"))?;
        }
        Ok(())
    }

    /// Semi-sync settings of a replica are best effort: without them its source waits
    /// for an acknowledgement that never comes, which loses nothing.
    async fn semi_sync(conn: &mut Conn, statements: &[&str]) -> Result<(), String> {
        for s in statements {
            match conn.query_drop(*s).await {
                Ok(()) => {}
                Err(mysql_async::Error::Server(e)) if e.code == dialect::UNKNOWN_VARIABLE => {
                    tracing::warn!(statement = *s, "semi-sync is not available: {}", e.message);
                }
                Err(e) => return Err(format!("{s}: {e}")),
            }
        }
        Ok(())
    }

    /// Makes the master writable: semi-sync source on first, then read_only off. Every
    /// path that makes a server writable goes through here (promotion, and the master
    /// of record unfencing itself, e.g. after its mysqld restarted with semi-sync source
    /// off as configured for a replica): a writable master without semi-sync would
    /// acknowledge writes no replica has. When semi-sync cannot be turned on, the
    /// server stays read_only unless `mysql.allow_async` says otherwise.
    async fn make_writable(&self, conn: &mut Conn) -> Result<(), String> {
        let d = self.inner.dialect;
        let (replica_off, source_on) = d.semi_sync_as_source();
        let unknown = |e: &mysql_async::Error| matches!(e, mysql_async::Error::Server(s) if s.code == dialect::UNKNOWN_VARIABLE);
        match conn.query_drop(replica_off).await {
            Err(e) if !unknown(&e) => return Err(format!("{replica_off}: {e}")),
            _ => {}
        }
        match conn.query_drop(source_on).await {
            Ok(()) => {}
            Err(e) if unknown(&e) && self.inner.allow_async => tracing::warn!(
                statement = source_on,
                "semi-sync is not available, writable without it (mysql.allow_async): {e}"
            ),
            Err(e) if unknown(&e) => {
                return Err(format!(
                    "semi-sync is not available ({e}): not made writable without it \
                     (load the semi-sync plugin, or set mysql.allow_async = true to accept \
                     losing acknowledged writes in a failover)"
                ))
            }
            Err(e) => return Err(format!("{source_on}: {e}")),
        }
        Self::run_all(conn, d.set_writable()).await
    }

    /// Runs a stop of replication (after [`Dialect::quick_stop`]); a server that is
    /// no replica is fine.
    async fn stop(conn: &mut Conn, d: Dialect, statement: &str) -> Result<(), String> {
        if let Some(quick) = d.quick_stop() {
            match conn.query_drop(quick).await {
                // Without the semi-sync plugin there is no such wait.
                Err(mysql_async::Error::Server(e)) if e.code == dialect::UNKNOWN_VARIABLE => {}
                r => r.map_err(|e| format!("{quick}: {e}"))?,
            }
        }
        match conn.query_drop(statement).await {
            Ok(()) => Ok(()),
            Err(mysql_async::Error::Server(e)) if dialect::means_not_a_replica(e.code) => Ok(()),
            Err(e) => Err(format!("{statement}: {e}")),
        }
    }

    /// Stops replication; where the server names its appliers, one still holding the
    /// stop up after [`STOP_WAIT`] is killed (see there).
    pub async fn stop_replication(&self, conn: &mut Conn, node: NodeId) -> Result<(), String> {
        let d = self.inner.dialect;
        let statement = d.stop_replication();
        let Some(appliers) = d.applier_threads() else {
            return Self::stop(conn, d, statement).await;
        };
        let stop = Self::stop(conn, d, statement);
        tokio::pin!(stop);
        if let Ok(r) = timeout(STOP_WAIT, &mut stop).await {
            return r;
        }
        let mut other = self.connect(node).await?;
        let ids: Vec<u64> = other
            .query(appliers)
            .await
            .map_err(|e| format!("listing the replication appliers: {e}"))?;
        // One that cannot be killed leaves the stop to MySQL's own wait, which the
        // caller's timeout bounds.
        let _ = Self::kill_each(&mut other, &ids).await;
        tracing::warn!(%node, killed = ids.len(), "{statement} waited {STOP_WAIT:?} for an applier holding a transaction its relay log has only in part: killed it");
        stop.await
    }

    /// KILL CONNECTION for each of `ids`, a connection already gone being fine; the
    /// first refusal, once every one has been tried.
    async fn kill_each(conn: &mut Conn, ids: &[u64]) -> Result<(), String> {
        Self::kill_each_with(conn, "KILL CONNECTION", ids).await
    }

    /// `kill` (a KILL statement without its id) for each of `ids`, as [`Self::kill_each`].
    async fn kill_each_with(conn: &mut Conn, kill: &str, ids: &[u64]) -> Result<(), String> {
        let mut refused = None;
        for id in ids {
            match conn.query_drop(format!("{kill} {id}")).await {
                Ok(()) => {}
                Err(mysql_async::Error::Server(e)) if e.code == dialect::NO_SUCH_THREAD => {}
                Err(e) => {
                    refused.get_or_insert(format!("killing connection {id}: {e}"));
                }
            }
        }
        refused.map_or(Ok(()), Err)
    }

    /// Stops replication and starts it again from `source`.
    async fn replicate_from(
        &self,
        conn: &mut Conn,
        node: NodeId,
        source: NodeId,
    ) -> Result<(), String> {
        let d = self.inner.dialect;
        let addr = self.address(source)?.clone();
        let c = &self.inner.credentials;
        self.stop_replication(conn, node).await?;
        Self::run_all(conn, &["SET SESSION sql_mode = ''"]).await?;
        let spec = SourceSpec {
            host: &addr.host,
            port: addr.port,
            user: &c.replication_user,
            password: c.replication_password.expose(),
            tls: c.tls.as_ref(),
        };
        for s in d.point_at(&spec) {
            // The statement carries the password: never put it in an error.
            conn.query_drop(&s)
                .await
                .map_err(|e| format!("pointing at {source} ({addr}): {}", redact(&e, c)))?;
        }
        Self::run_all(conn, &[d.start_replication()]).await
    }

    /// Waits until the server has applied `until`, polling; bounded by the op timeout.
    async fn wait_applied(&self, conn: &mut Conn, until: &GtidSet) -> Result<Positions, String> {
        let deadline = Instant::now() + self.inner.op_timeout;
        loop {
            let p = self.positions(conn).await?;
            if p.executed.contains(until) {
                return Ok(p);
            }
            if Instant::now() >= deadline {
                let errors = self.replication_errors(conn).await;
                return Err(format!(
                    "not applied within {:?}: missing {}{errors}",
                    self.inner.op_timeout,
                    until.difference(&p.executed)
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Connections in a transaction that has written (or waits for a lock to write),
    /// and connections whose commit waits for a semi-sync acknowledgement (a DDL is in
    /// no InnoDB transaction): the writes a switchover waits for and then kills, and
    /// what stands in the way of a fence. Killed in the semi-sync wait, a commit is
    /// never acknowledged to its client.
    async fn writers(conn: &mut Conn) -> Result<Vec<u64>, String> {
        conn.query(
            "SELECT trx_mysql_thread_id FROM information_schema.innodb_trx \
             WHERE trx_mysql_thread_id <> CONNECTION_ID() \
             AND (trx_rows_modified > 0 OR trx_state = 'LOCK WAIT') \
             UNION SELECT ID FROM information_schema.PROCESSLIST \
             WHERE ID <> CONNECTION_ID() AND STATE LIKE 'Waiting for semi-sync%'",
        )
        .await
        .map_err(|e| format!("listing running writes: {e}"))
    }

    /// read_only (the fence): at once, or — when writes stand in its way for more than
    /// [`FENCE_WAIT`] — after killing them from a second connection.
    async fn set_read_only(&self, conn: &mut Conn, node: NodeId) -> Result<(), String> {
        self.set_read_only_within(conn, node, FENCE_WAIT)
            .await
            .map(|_| ())
    }

    /// read_only, waiting at most `wait` for the writes in its way (`SET GLOBAL
    /// read_only` waits for statements holding write locks, and for commits waiting for
    /// a semi-sync acknowledgement); past it, rounds of killing them from a second
    /// connection, `wait` apart, until the statement gets through (the caller's timeout
    /// bounds it). The statement stays queued all along: its pending global read lock
    /// keeps new writes out. Whether writes had to be killed.
    async fn set_read_only_within(
        &self,
        conn: &mut Conn,
        node: NodeId,
        wait: Duration,
    ) -> Result<bool, String> {
        let d = self.inner.dialect;
        // A short lock_wait_timeout would end the queued statement, and with it what
        // keeps new writes out while the ones in the way are killed.
        Self::run_all(conn, &["SET SESSION lock_wait_timeout = 86400"]).await?;
        let way = InTheWay {
            d,
            own_user: &self.inner.credentials.user,
            fence: conn.id(),
        };
        let fence = Self::run_all(conn, d.set_read_only());
        tokio::pin!(fence);
        if let Ok(r) = timeout(wait, &mut fence).await {
            return r.map(|()| false);
        }
        let mut killer = self.connect(node).await?;
        // Well before the op's own timeout, which would drop this with semi-sync off.
        let deadline = Instant::now() + self.inner.op_timeout / 2;
        let mut waits_ended = false;
        let outcome = loop {
            let killed = match way.kill(&mut killer).await {
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            tracing::warn!(%node, killed, "read_only waited {wait:?} behind running writes: killed them");
            // Only once no killed connection can hear of it, and nothing that might
            // still commit runs unkilled: every wait for an acknowledgement ends.
            if let Err(e) = way.all_killed(&mut killer).await {
                break Err(e);
            }
            let end_waits = d.end_ack_waits();
            match killer.query_drop(end_waits).await {
                // No semi-sync plugin (mysql.allow_async): no wait to end.
                Err(mysql_async::Error::Server(e)) if e.code == dialect::UNKNOWN_VARIABLE => {}
                Err(e) => break Err(format!("{end_waits}: {e}")),
                Ok(()) => waits_ended = true,
            }
            if let Ok(r) = timeout(wait, &mut fence).await {
                break r.map(|()| true);
            }
            if Instant::now() >= deadline {
                break Err(format!(
                    "read_only still queued {:?} after the writes in its way were killed",
                    self.inner.op_timeout / 2
                ));
            }
        };
        if waits_ended {
            // Back on at once: read_only does not hold an account with its privileges
            // (the sidecar's own, a DBA's), whose writes must wait for a replica
            // again. The killed commits have ended (read_only was set behind them), or
            // the fence failed, and a commit is better left waiting.
            let (_, on) = d.semi_sync_as_source();
            if let Err(e) = killer.query_drop(on).await {
                tracing::warn!(%node, "{on} after the fence: {e}");
            }
        }
        outcome
    }

    async fn kill_writers(conn: &mut Conn) -> Result<usize, String> {
        let ids = Self::writers(conn).await?;
        // read_only is set already: one that cannot be killed cannot commit either.
        let _ = Self::kill_each(conn, &ids).await;
        Ok(ids.len())
    }

    /// The switchover's demotion: read_only at once; writes already running get
    /// `grace` to finish (they can no longer commit changes, so they end or roll
    /// back), then their connections are killed. Writes that hold read_only itself up
    /// for longer than `grace` are killed too ([`Self::set_read_only_within`]).
    async fn demote(
        &self,
        conn: &mut Conn,
        node: NodeId,
        grace: Duration,
    ) -> Result<Positions, String> {
        if !self.set_read_only_within(conn, node, grace).await? {
            // Writes already running get the grace to end by themselves (unless they
            // held read_only up for as long, and were killed).
            let deadline = Instant::now() + grace;
            while !Self::writers(conn).await?.is_empty() && Instant::now() < deadline {
                tokio::time::sleep(POLL).await;
            }
        }
        let killed = Self::kill_writers(conn).await?;
        if killed > 0 {
            tracing::warn!(%node, killed, "switchover: killed writes still running after {grace:?}");
        }
        self.positions(conn).await
    }

    async fn run_op(&self, node: NodeId, op: MysqlOp) -> Result<MysqlReply, String> {
        let d = self.inner.dialect;
        let mut conn = self.connect(node).await?;
        let conn = &mut conn;
        let reply = match op {
            MysqlOp::SetReadOnly => {
                self.set_read_only(conn, node).await?;
                MysqlReply::Done
            }
            MysqlOp::SetWritable => {
                self.make_writable(conn).await?;
                MysqlReply::Done
            }
            MysqlOp::FenceReplica => {
                Self::stop(conn, d, d.stop_io_thread()).await?;
                MysqlReply::Positions(self.positions(conn).await?)
            }
            MysqlOp::CatchUp { source, until } => {
                self.set_read_only(conn, node).await?;
                self.replicate_from(conn, node, source).await?;
                let reached = self.wait_applied(conn, &until).await;
                self.stop_replication(conn, node).await?;
                MysqlReply::Positions(
                    reached.map_err(|e| format!("catching up from {source}: {e}"))?,
                )
            }
            MysqlOp::WaitApplied { until } => {
                MysqlReply::Positions(self.wait_applied(conn, &until).await?)
            }
            MysqlOp::Demote { grace_ms } => MysqlReply::Positions(
                self.demote(conn, node, Duration::from_millis(grace_ms))
                    .await?,
            ),
            MysqlOp::Promote => {
                self.stop_replication(conn, node).await?;
                Self::stop(conn, d, d.reset_replication()).await?;
                self.make_writable(conn).await?;
                MysqlReply::Done
            }
            MysqlOp::Repoint { source } => {
                // A replica is never writable, whatever happened before.
                self.set_read_only(conn, node).await?;
                let already = match self.status(conn).await {
                    Ok(MysqlStatus {
                        replication: Some(r),
                        ..
                    }) => r.source == Some(source) && r.io_running && r.sql_running,
                    _ => false,
                };
                if !already {
                    // Takes effect when replicate_from restarts the IO thread.
                    Self::semi_sync(conn, d.semi_sync_as_replica()).await?;
                    self.replicate_from(conn, node, source).await?;
                }
                MysqlReply::Done
            }
        };
        Ok(reply)
    }
}

/// The error text of a statement that carried the replication password, without it.
fn redact(e: &mysql_async::Error, c: &Credentials) -> String {
    let text = e.to_string();
    let password = String::from_utf8_lossy(c.replication_password.expose()).to_string();
    if password.is_empty() {
        text
    } else {
        text.replace(&password, "<redacted>")
    }
}

/// A column as text, by position or name; `None` for NULL, a missing column or a value
/// that is not text (never a panic, unlike `Row::get`).
pub(crate) fn column<I: mysql_async::prelude::ColumnIndex>(row: &Row, index: I) -> Option<String> {
    row.get_opt::<Option<String>, I>(index)
        .and_then(|r| r.ok())
        .flatten()
}

/// `ER_SERVER_SHUTDOWN`: the server is going away; for failure detection, it is down.
const SHUTDOWN_IN_PROGRESS: u16 = 1053;

impl MysqlOps for MysqlAdapter {
    async fn probe(&self, node: NodeId) -> ProbeResult {
        let limit = self.inner.probe_timeout;
        match timeout(limit, self.probe_inner(node)).await {
            Err(_) => ProbeResult::Down(format!("no answer within {limit:?}")),
            Ok(Ok(status)) => ProbeResult::Alive(Some(status)),
            Ok(Err(Failure::Server(code, msg))) if code == SHUTDOWN_IN_PROGRESS => {
                ProbeResult::Down(format!("shutting down: {msg}"))
            }
            // It answered, even if only to refuse us: alive (as MHA counts it).
            Ok(Err(Failure::Server(code, msg))) => {
                tracing::debug!(%node, code, "probe refused: {msg}");
                ProbeResult::Alive(None)
            }
            Ok(Err(Failure::Tls(msg))) => {
                tracing::warn!(%node, "mysqld answers but the TLS handshake fails (certificate, CA file, or TLS off on the server): {msg}");
                ProbeResult::Alive(None)
            }
            Ok(Err(Failure::Unreachable(msg))) => ProbeResult::Down(msg),
        }
    }

    async fn op(&self, node: NodeId, op: MysqlOp) -> Result<MysqlReply, String> {
        // Waiting operations bound themselves; the margin covers connect and stop.
        let limit = self.inner.op_timeout + self.inner.probe_timeout * 2;
        let name = format!("{op:?}");
        let name = name
            .split([' ', '{', '('])
            .next()
            .unwrap_or("op")
            .to_string();
        match timeout(limit, self.run_op(node, op)).await {
            Err(_) => Err(format!("{name} on {node}: no answer within {limit:?}")),
            Ok(r) => r.map_err(|e| format!("{name} on {node}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_tls_handshake_is_an_answer_and_a_refused_connection_is_not() {
        let no_tls =
            mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer);
        assert!(matches!(Failure::from(no_tls), Failure::Tls(_)));
        let refused = mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(matches!(Failure::from(refused), Failure::Unreachable(_)));
    }
}
