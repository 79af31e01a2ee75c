//! What differs between MariaDB and MySQL 8: statement spellings, variable names, and
//! the columns of the replication status. Everything here is plain data, so it is
//! tested without a server.

use crate::config::MysqlTls;
use multiaz_engine::{Flavour, GtidSet};

/// Seconds a replica's IO thread waits on a silent source (heartbeats every half
/// second) before it drops the connection: a master whose host vanished is failed over
/// only once no replica still counts as receiving from it (`engine/src/detect.rs`), and
/// with MySQL's and MariaDB's default of 60 s that would hold every host loss back a
/// minute. It bounds the IO thread's connection attempt too, which STOP SLAVE waits
/// out: the failover's fence of a replica reconnecting to a vanished host takes that
/// long. Two heartbeats: the least that tolerates one lost.
pub const REPLICA_NET_TIMEOUT_S: u32 = 1;

/// One flavour's spelling of the statements the adapter runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect(pub Flavour);

/// A replication source and the credentials a replica logs in with.
pub struct SourceSpec<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub password: &'a [u8],
    /// The replica connects with TLS, checking the source's certificate against this
    /// CA (a path on the replica's host); `None`: in clear text.
    pub tls: Option<&'a MysqlTls>,
}

/// Quotes a string literal for SQL. Doubling quotes works whatever `sql_mode` says;
/// backslashes are escaped too and the session runs with `NO_BACKSLASH_ESCAPES` off
/// (the adapter sets `sql_mode = ''` before a statement that carries a literal).
pub fn quote(text: &[u8]) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for &b in text {
        match b {
            b'\'' => out.push_str("''"),
            b'\\' => out.push_str("\\\\"),
            0 => out.push_str("\\0"),
            b => out.push(b as char),
        }
    }
    out.push('\'');
    out
}

impl Dialect {
    /// The variables a probe reads, in this order: read_only, executed set.
    /// MariaDB's executed set is `gtid_binlog_state` (every server's last GTID per
    /// domain), not `gtid_current_pos`: the engine compares per-server history.
    pub fn probe_vars(self) -> &'static str {
        match self.0 {
            Flavour::Mariadb => "SELECT @@global.read_only, @@global.gtid_binlog_state",
            Flavour::Mysql => "SELECT @@global.read_only, @@global.gtid_executed",
        }
    }

    /// Every transaction the server has, however it got it: for salvage, which must not
    /// apply one twice. MariaDB adds `gtid_slave_pos` (what replication applied) to its
    /// binlog state.
    pub fn has_transactions(self) -> &'static str {
        match self.0 {
            Flavour::Mariadb => {
                "SELECT CONCAT_WS(',', NULLIF(@@global.gtid_binlog_state, ''), \
                 NULLIF(@@global.gtid_slave_pos, ''))"
            }
            Flavour::Mysql => "SELECT @@global.gtid_executed",
        }
    }

    pub fn replica_status(self) -> &'static str {
        match self.0 {
            Flavour::Mariadb => "SHOW SLAVE STATUS",
            Flavour::Mysql => "SHOW REPLICA STATUS",
        }
    }

    pub fn set_read_only(self) -> &'static [&'static str] {
        match self.0 {
            Flavour::Mariadb => &["SET GLOBAL read_only = ON"],
            // super_read_only implies read_only and also stops SUPER users.
            Flavour::Mysql => &["SET GLOBAL super_read_only = ON"],
        }
    }

    pub fn set_writable(self) -> &'static [&'static str] {
        match self.0 {
            Flavour::Mariadb => &["SET GLOBAL read_only = OFF"],
            Flavour::Mysql => &[
                "SET GLOBAL super_read_only = OFF",
                "SET GLOBAL read_only = OFF",
            ],
        }
    }

    /// Run before a stop of replication: how long MariaDB's semi-sync replica side,
    /// at `STOP SLAVE`, tries to reach the source to kill its own connection there
    /// (`rpl_semi_sync_slave_kill_conn_timeout`, 5 s by default; `semisync_slave.cc`
    /// `kill_connection`). A courtesy to a live source (its count of semi-sync
    /// replicas drops at once); a source whose host vanished holds the stop, and with
    /// it the failover's fence of every replica, until the connection attempt gives
    /// up: about 2 s in the host-kill chaos runs ("cannot connect to master to kill
    /// slave io_thread's connection"). One second, the least that is not "no
    /// timeout". MySQL's replica side does no such thing.
    pub fn quick_stop(self) -> Option<&'static str> {
        match self.0 {
            Flavour::Mariadb => Some("SET GLOBAL rpl_semi_sync_slave_kill_conn_timeout = 1"),
            Flavour::Mysql => None,
        }
    }

    pub fn stop_io_thread(self) -> &'static str {
        match self.0 {
            Flavour::Mariadb => "STOP SLAVE IO_THREAD",
            Flavour::Mysql => "STOP REPLICA IO_THREAD",
        }
    }

    pub fn stop_replication(self) -> &'static str {
        match self.0 {
            Flavour::Mariadb => "STOP SLAVE",
            Flavour::Mysql => "STOP REPLICA",
        }
    }

    pub fn start_replication(self) -> &'static str {
        match self.0 {
            Flavour::Mariadb => "START SLAVE",
            Flavour::Mysql => "START REPLICA",
        }
    }

    /// The statement that points a replica at its source, as an operator types it.
    pub fn change_source(self) -> &'static str {
        match self.0 {
            Flavour::Mariadb => "CHANGE MASTER TO",
            Flavour::Mysql => "CHANGE REPLICATION SOURCE TO",
        }
    }

    /// The connection ids of the replication applier (SQL) threads, when the server
    /// must have them killed to stop with a transaction its relay log has only in
    /// part (see `STOP_WAIT`). MariaDB: none listed; its chaos runs have not met such
    /// a wait (its appliers show in PROCESSLIST, not in a performance_schema that is
    /// off by default, should one be needed).
    pub fn applier_threads(self) -> Option<&'static str> {
        match self.0 {
            Flavour::Mariadb => None,
            Flavour::Mysql => Some(
                "SELECT PROCESSLIST_ID FROM performance_schema.threads \
                 WHERE NAME IN ('thread/sql/replica_sql', 'thread/sql/replica_worker') \
                 AND PROCESSLIST_ID IS NOT NULL",
            ),
        }
    }

    pub fn reset_replication(self) -> &'static str {
        match self.0 {
            Flavour::Mariadb => "RESET SLAVE ALL",
            Flavour::Mysql => "RESET REPLICA ALL",
        }
    }

    /// Semi-sync settings of a master: (replica side off, source side on). Only the
    /// second matters to what the master acknowledges; a server with the source
    /// plugin alone has no replica-side variable.
    pub fn semi_sync_as_source(self) -> (&'static str, &'static str) {
        match self.0 {
            Flavour::Mariadb => (
                "SET GLOBAL rpl_semi_sync_slave_enabled = OFF",
                "SET GLOBAL rpl_semi_sync_master_enabled = ON",
            ),
            Flavour::Mysql => (
                "SET GLOBAL rpl_semi_sync_replica_enabled = OFF",
                "SET GLOBAL rpl_semi_sync_source_enabled = ON",
            ),
        }
    }

    /// How the fence kills a connection in read_only's way: the client's socket is
    /// closed at once, so no answer — above all no OK for a commit — reaches it after
    /// the KILL. On MariaDB a plain (hard) KILL also ends the killed commit's wait for a
    /// semi-sync acknowledgement, and with binlog group commit that wait is the group
    /// leader's, on behalf of every commit in its group (`sql/log.cc`
    /// `trx_group_commit_leader`): killing the leader first let the others commit and
    /// get their OK before their own KILL arrived, acknowledged writes no replica had
    /// (the az-partition chaos run through HAProxy; `testcontainers/tests/fence.rs`
    /// shows it). `KILL SOFT` closes the socket the same way but leaves the wait
    /// alone (MariaDB's semi-sync wait ends only at a hard kill); [`Self::end_ack_waits`]
    /// ends every wait at once, when no client can hear of it any more. MySQL's KILL
    /// does not end the wait in the first place.
    pub fn fence_kill(self) -> &'static str {
        match self.0 {
            Flavour::Mariadb => "KILL SOFT CONNECTION",
            Flavour::Mysql => "KILL CONNECTION",
        }
    }

    /// What ends commits still waiting for a semi-sync acknowledgement once their
    /// connections have been killed ([`Self::fence_kill`]), so that read_only (queued
    /// behind their commit lock) can be set: the source side is switched off. The
    /// commits then finish locally, unacknowledged (their clients lost the connection
    /// at the KILL), and new writes cannot slip in meanwhile: they queue behind the
    /// pending read_only. Every statement that might still commit has been killed
    /// first ([`Self::may_still_write`]). A master made writable again turns it back
    /// on ([`Self::semi_sync_as_source`]).
    pub fn end_ack_waits(self) -> &'static str {
        match self.0 {
            Flavour::Mariadb => "SET GLOBAL rpl_semi_sync_master_enabled = OFF",
            Flavour::Mysql => "SET GLOBAL rpl_semi_sync_source_enabled = OFF",
        }
    }

    /// Besides the writes and the commits waiting for an acknowledgement: every
    /// connection that may still commit, and would commit unacknowledged once
    /// [`Self::end_ack_waits`] has switched semi-sync off (a statement still reading
    /// before it writes, a DDL, LOCK TABLES … WRITE). `own_user` is the sidecar's
    /// login, `fence` the connection whose `SET GLOBAL read_only` is queued.
    ///
    /// MySQL: the holders of a write lock on the server (the global or the commit
    /// lock, intention exclusive, granted), from performance_schema (its metadata lock
    /// instrument is on by default); a statement that began after the fence waits for
    /// its lock, not holding one.
    ///
    /// MariaDB has no such table by default (performance_schema off, no
    /// METADATA_LOCK_INFO plugin): every connection running a statement, whatever the
    /// protocol (`Query`, `Execute` for a prepared statement, …; only idle, killed,
    /// connecting and replication threads are left out), that began before the fence
    /// was queued (a lower `QUERY_ID`: one that began after it waits behind the pending
    /// read_only for its lock, and a client that keeps sending new queries does not
    /// keep the fence from ending), except the sidecar's own (its probes; an account
    /// with its privileges is not held by read_only anyway). A COMMIT that begins
    /// after the fence needs no lock the fence holds back, but its transaction has
    /// written: [`MysqlAdapter::writers`](super::MysqlAdapter) lists it.
    pub fn may_still_write(self, own_user: &str, fence: u32) -> String {
        match self.0 {
            Flavour::Mariadb => format!(
                "SELECT ID FROM information_schema.PROCESSLIST \
                 WHERE COMMAND NOT IN ('Sleep', 'Killed', 'Connect', 'Daemon', 'Binlog Dump', \
                 'Slave_IO', 'Slave_SQL', 'Slave_worker') \
                 AND ID <> CONNECTION_ID() AND ID <> {fence} AND USER <> {} \
                 AND QUERY_ID < (SELECT QUERY_ID FROM information_schema.PROCESSLIST \
                 WHERE ID = {fence})",
                quote(own_user.as_bytes())
            ),
            Flavour::Mysql => {
                "SELECT DISTINCT t.PROCESSLIST_ID FROM performance_schema.metadata_locks m \
                 JOIN performance_schema.threads t ON t.THREAD_ID = m.OWNER_THREAD_ID \
                 WHERE m.OBJECT_TYPE IN ('GLOBAL', 'COMMIT') \
                 AND m.LOCK_TYPE = 'INTENTION_EXCLUSIVE' AND m.LOCK_STATUS = 'GRANTED' \
                 AND t.PROCESSLIST_ID IS NOT NULL AND t.PROCESSLIST_ID <> CONNECTION_ID()"
                    .to_string()
            }
        }
    }

    pub fn semi_sync_as_replica(self) -> &'static [&'static str] {
        match self.0 {
            Flavour::Mariadb => &[
                "SET GLOBAL rpl_semi_sync_master_enabled = OFF",
                "SET GLOBAL rpl_semi_sync_slave_enabled = ON",
            ],
            Flavour::Mysql => &[
                "SET GLOBAL rpl_semi_sync_source_enabled = OFF",
                "SET GLOBAL rpl_semi_sync_replica_enabled = ON",
            ],
        }
    }

    /// Statements run with replication stopped, before it starts from `source`. The
    /// last sets how long the replica waits on a silent source before it drops the
    /// connection ([`REPLICA_NET_TIMEOUT_S`]; it applies from the next start).
    ///
    /// MariaDB: `gtid_slave_pos` is first set to `gtid_current_pos`, so a former master
    /// continues after its own last transaction rather than after the last one it
    /// replicated (for a replica that only ever replicated, the two are the same).
    pub fn point_at(self, source: &SourceSpec) -> Vec<String> {
        let host = quote(source.host.as_bytes());
        let (user, password) = (quote(source.user.as_bytes()), quote(source.password));
        // With TLS required, every TLS option is spelled out (CHANGE MASTER keeps what
        // it is not told). With it off, they are left as they are: a link someone
        // encrypted by hand (or MariaDB 11.4+ by default) stays encrypted.
        let tls = |prefix: &str| match source.tls {
            Some(t) => format!(
                ", {prefix}_SSL = 1, {prefix}_SSL_CA = {}, {prefix}_SSL_VERIFY_SERVER_CERT = 1",
                quote(t.ca_file.as_os_str().as_encoded_bytes())
            ),
            None => String::new(),
        };
        let mut statements = match self.0 {
            Flavour::Mariadb => vec![
                "SET GLOBAL gtid_slave_pos = @@global.gtid_current_pos".to_string(),
                format!(
                    "CHANGE MASTER TO MASTER_HOST = {host}, MASTER_PORT = {}, MASTER_USER = {user}, \
                     MASTER_PASSWORD = {password}, MASTER_USE_GTID = slave_pos, \
                     MASTER_CONNECT_RETRY = 1, MASTER_HEARTBEAT_PERIOD = 0.5{}",
                    source.port,
                    tls("MASTER"),
                ),
            ],
            // Without TLS, a caching_sha2_password login needs the server's public key
            // (asked for); with TLS the password travels inside the encrypted link.
            Flavour::Mysql => vec![format!(
                "CHANGE REPLICATION SOURCE TO SOURCE_HOST = {host}, SOURCE_PORT = {}, \
                 SOURCE_USER = {user}, SOURCE_PASSWORD = {password}, SOURCE_AUTO_POSITION = 1, \
                 SOURCE_CONNECT_RETRY = 1, SOURCE_HEARTBEAT_PERIOD = 0.5{}, GET_SOURCE_PUBLIC_KEY = {}",
                source.port,
                tls("SOURCE"),
                u8::from(source.tls.is_none()),
            )],
        };
        statements.push(format!(
            "SET GLOBAL {} = {REPLICA_NET_TIMEOUT_S}",
            match self.0 {
                Flavour::Mariadb => "slave_net_timeout",
                Flavour::Mysql => "replica_net_timeout",
            }
        ));
        statements
    }

    /// Column names of the replication status row.
    pub fn columns(self) -> StatusColumns {
        match self.0 {
            Flavour::Mariadb => StatusColumns {
                host: "Master_Host",
                port: "Master_Port",
                io_running: "Slave_IO_Running",
                sql_running: "Slave_SQL_Running",
                seconds_behind: "Seconds_Behind_Master",
                received: "Gtid_IO_Pos",
                last_error: "Last_Error",
                last_io_error: "Last_IO_Error",
            },
            Flavour::Mysql => StatusColumns {
                host: "Source_Host",
                port: "Source_Port",
                io_running: "Replica_IO_Running",
                sql_running: "Replica_SQL_Running",
                seconds_behind: "Seconds_Behind_Source",
                received: "Retrieved_Gtid_Set",
                last_error: "Last_Error",
                last_io_error: "Last_IO_Error",
            },
        }
    }

    /// Parses a GTID set as the server prints it (MySQL wraps long sets in newlines).
    pub fn gtids(self, text: &str) -> Result<GtidSet, String> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        GtidSet::parse(self.0, &compact).map_err(|e| format!("bad GTID set {text:?}: {e}"))
    }
}

pub struct StatusColumns {
    pub host: &'static str,
    pub port: &'static str,
    pub io_running: &'static str,
    pub sql_running: &'static str,
    pub seconds_behind: &'static str,
    pub received: &'static str,
    pub last_error: &'static str,
    pub last_io_error: &'static str,
}

/// Server error codes that prove mysqld is up although the query failed: as MHA does,
/// a server that refuses us is alive, and must not be failed over.
pub fn means_alive(code: u16) -> bool {
    matches!(
        code,
        1040 // ER_CON_COUNT_ERROR: too many connections
        | 1044 // ER_DBACCESS_DENIED_ERROR
        | 1045 // ER_ACCESS_DENIED_ERROR
        | 1129 // ER_HOST_IS_BLOCKED
        | 1130 // ER_HOST_NOT_PRIVILEGED
        | 1203 // ER_TOO_MANY_USER_CONNECTIONS
        | 1226 // ER_USER_LIMIT_REACHED
        | 1227 // ER_SPECIFIC_ACCESS_DENIED_ERROR
        | 1142 // ER_TABLEACCESS_DENIED_ERROR
    )
}

/// Codes that say "this server is not a replica": stopping replication that is not
/// configured is already done.
pub fn means_not_a_replica(code: u16) -> bool {
    matches!(code, 1200 | 1617 | 3083)
}

/// `ER_UNKNOWN_SYSTEM_VARIABLE`: the semi-sync plugin is not loaded (MySQL).
pub const UNKNOWN_VARIABLE: u16 = 1193;
/// ER_NO_SUCH_THREAD: a KILL for a connection that has ended.
pub const NO_SUCH_THREAD: u16 = 1094;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes_and_backslashes() {
        assert_eq!(quote(b"a'b\\c"), "'a''b\\\\c'");
        assert_eq!(quote(b""), "''");
    }

    #[test]
    fn mariadb_points_with_gtid_and_a_quoted_password() {
        let s = Dialect(Flavour::Mariadb).point_at(&SourceSpec {
            host: "10.0.0.1",
            port: 3306,
            user: "repl",
            password: b"p'w",
            tls: None,
        });
        assert!(s[0].contains("gtid_current_pos"));
        assert!(s[1].contains("MASTER_USE_GTID = slave_pos"));
        assert!(s[1].contains("'p''w'"));
        assert!(!s[1].contains("MASTER_SSL"), "TLS left as it is: {}", s[1]);
        assert_eq!(s[2], "SET GLOBAL slave_net_timeout = 1");
    }

    #[test]
    fn with_tls_a_replica_verifies_its_source_and_asks_for_no_public_key() {
        let tls = MysqlTls {
            ca_file: "/etc/mysql/ca.pem".into(),
        };
        let spec = |tls| SourceSpec {
            host: "10.0.0.1",
            port: 3306,
            user: "repl",
            password: b"pw",
            tls,
        };
        let m = Dialect(Flavour::Mariadb).point_at(&spec(Some(&tls)));
        assert!(
            m[1].contains("MASTER_SSL = 1, MASTER_SSL_CA = '/etc/mysql/ca.pem', MASTER_SSL_VERIFY_SERVER_CERT = 1"),
            "{}",
            m[1]
        );
        let y = Dialect(Flavour::Mysql).point_at(&spec(Some(&tls)));
        assert!(
            y[0].contains("SOURCE_SSL = 1, SOURCE_SSL_CA = '/etc/mysql/ca.pem'"),
            "{}",
            y[0]
        );
        assert!(
            y[0].contains("SOURCE_SSL_VERIFY_SERVER_CERT = 1"),
            "{}",
            y[0]
        );
        assert!(y[0].contains("GET_SOURCE_PUBLIC_KEY = 0"), "{}", y[0]);
        let clear = Dialect(Flavour::Mysql).point_at(&spec(None));
        assert!(!clear[0].contains("SOURCE_SSL") && clear[0].contains("GET_SOURCE_PUBLIC_KEY = 1"));
        assert_eq!(clear[1], "SET GLOBAL replica_net_timeout = 1");
    }

    #[test]
    fn mysql_sets_are_parsed_across_line_breaks() {
        let d = Dialect(Flavour::Mysql);
        let set = d
            .gtids("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,\n4e11fa47-71ca-11e1-9e33-c80aa9429562:1-2")
            .unwrap();
        assert_eq!(set.count(), 7);
        assert!(d.gtids("nonsense").is_err());
    }
}
